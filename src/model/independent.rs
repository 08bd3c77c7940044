//! The `independent` baseline: what simple generators do. Every field is drawn from its own marginal, with
//! Poisson arrivals per host pair. Discrete fields are count tables, continuous fields histograms of the log value
//! (so the marginals themselves are as faithful as possible: this baseline loses only the dependencies).
//!
//! Compliance masks still apply (ports 0 without ports, flags only on TCP, bytes-per-packet truncated to the
//! protocol's bounds): masking depends on the protocol, which is the one exception to independence, since
//! without it the baseline would emit impossible flows.

use super::compliance::{RepairCounts, sample_masked};
use super::features::{self, FeatureSpace, N_BYTE_CLASSES, N_PORT_CLASSES, cont, decode, task};
use super::pair_arrival::PairArrivals;
use super::session::{LaneStart, LaneStates, Lanes};
use super::{FitOptions, FitProgress, FlowModel, ModelError, ModelKind, PairWindow, TaskNll};
use crate::record::{FlowRecord, HostPair, TcpFlags, proto};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct IndependentConfig {
    /// Histogram bins over `[lo, hi]` of every log value.
    pub bins: usize,
    pub lo: f64,
    pub hi: f64,
}

impl Default for IndependentConfig {
    fn default() -> Self {
        IndependentConfig {
            bins: 320,
            lo: -16.0,
            hi: 24.0,
        }
    }
}

/// Pseudo-count added to every class and bin: every NLL stays finite, yet unseen values keep a negligible share
/// of samples (add-0.5 over 1,670 port classes would hand unseen classes a visible share on small data).
const SMOOTH: f64 = 0.01;

/// A histogram density of a log value with add-`SMOOTH` smoothing (every bin has mass, so every NLL is finite).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Hist {
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<f64>,
}

impl Hist {
    fn new(c: &IndependentConfig) -> Hist {
        Hist {
            lo: c.lo,
            hi: c.hi,
            counts: vec![0.0; c.bins],
        }
    }
    fn width(&self) -> f64 {
        (self.hi - self.lo) / self.counts.len() as f64
    }
    fn bin(&self, x: f64) -> usize {
        (((x - self.lo) / self.width()).floor().max(0.0) as usize).min(self.counts.len() - 1)
    }
    fn add(&mut self, x: f64) {
        let b = self.bin(x);
        self.counts[b] += 1.0;
    }
    fn total(&self) -> f64 {
        self.counts.iter().sum::<f64>() + SMOOTH * self.counts.len() as f64
    }
    pub fn nll(&self, x: f64) -> f64 {
        -(((self.counts[self.bin(x)] + SMOOTH) / self.total()).ln() - self.width().ln())
    }
    /// A draw truncated to `[a, b]`: bins weighted by their overlap with the interval, uniform inside.
    fn sample<R: Rng>(&self, a: f64, b: f64, rng: &mut R) -> f64 {
        let w = self.width();
        let weights: Vec<f64> = (0..self.counts.len())
            .map(|i| {
                let (l, h) = (self.lo + i as f64 * w, self.lo + (i + 1) as f64 * w);
                let ov = (h.min(b) - l.max(a)).max(0.0) / w;
                (self.counts[i] + SMOOTH) * ov
            })
            .collect();
        let tot: f64 = weights.iter().sum();
        if tot.is_nan() || tot <= 0.0 {
            return a.max(self.lo).min(b);
        }
        let mut u = rng.r#gen::<f64>() * tot;
        for (i, wt) in weights.iter().enumerate() {
            if u < *wt || i + 1 == weights.len() {
                let (l, h) = (
                    (self.lo + i as f64 * w).max(a),
                    (self.lo + (i + 1) as f64 * w).min(b),
                );
                return if h > l { rng.gen_range(l..h) } else { l };
            }
            u -= wt;
        }
        a
    }
}

fn cat_nll(counts: &[f64], i: usize) -> f64 {
    let tot: f64 = counts.iter().sum::<f64>() + SMOOTH * counts.len() as f64;
    -((counts[i] + SMOOTH) / tot).ln()
}

fn cat_probs(counts: &[f64]) -> Vec<f32> {
    counts.iter().map(|c| (*c + SMOOTH) as f32).collect()
}

/// A generated pair: Poisson flows at `rate` per µs, the next at `next_us`.
pub(crate) struct LaneState {
    next_us: f64,
    rate: f64,
}

/// Exponential gap (µs) at `rate` flows per µs.
fn exp_gap<R: Rng>(rng: &mut R, rate: f64) -> f64 {
    -(1.0 - rng.r#gen::<f64>()).ln() / rate
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Independent {
    pub config: IndependentConfig,
    pub space: FeatureSpace,
    pub proto: Vec<f64>,
    pub dport: Vec<f64>,
    pub sport: Vec<f64>,
    pub flags: Vec<f64>,
    pub packets: Hist,
    pub bpp: Hist,
    pub duration: Hist,
    pub zero_duration: f64,
    pub events: f64,
    /// Flows per pair and the span they were counted over: Poisson rate = count / span.
    pub pair_counts: Vec<(HostPair, f64, i64)>,
    pub span_us: i64,
    pub arrivals: PairArrivals,
    pub version: u64,
    #[serde(skip)]
    index: HashMap<HostPair, usize>,
}

impl Independent {
    pub fn new(config: IndependentConfig, records: &[FlowRecord]) -> Independent {
        let space = FeatureSpace::fit(records, 1);
        let mut m = Independent {
            packets: Hist::new(&config),
            bpp: Hist::new(&config),
            duration: Hist::new(&config),
            config,
            span_us: space.span_us(),
            space,
            proto: vec![0.0; N_BYTE_CLASSES],
            dport: vec![0.0; N_PORT_CLASSES],
            sport: vec![0.0; N_PORT_CLASSES],
            flags: vec![0.0; N_BYTE_CLASSES],
            zero_duration: 0.0,
            events: 0.0,
            pair_counts: Vec::new(),
            arrivals: PairArrivals::new(0),
            version: 0,
            index: HashMap::new(),
        };
        m.arrivals.fit(records, m.span_us);
        m
    }

    pub(crate) fn rebuild_index(&mut self) {
        self.index = self
            .pair_counts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.0, i))
            .collect();
    }

    fn mean_rate(&self) -> f64 {
        let n = self.pair_counts.len().max(1) as f64;
        self.pair_counts.iter().map(|p| p.1).sum::<f64>() / n / (self.span_us as f64 * 1e-6)
    }

    /// Poisson rate (flows per second) of a pair; unseen pairs get the mean rate.
    pub fn rate(&self, pair: &HostPair) -> f64 {
        match self.index.get(pair) {
            Some(&i) => {
                (self.pair_counts[i].1 + 0.5) / (self.pair_counts[i].2.max(1_000_000) as f64 * 1e-6)
            }
            None => self.mean_rate().max(1e-9),
        }
    }

    fn observe(&mut self, r: &FlowRecord, repairs: &mut RepairCounts) {
        let e = self.space.encode(r, None, repairs);
        self.proto[e.proto as usize] += 1.0;
        self.dport[e.dport as usize] += 1.0;
        self.sport[e.sport as usize] += 1.0;
        self.flags[e.flags as usize] += 1.0;
        self.packets.add(features::log_packets(r.packets));
        self.bpp.add(features::log_bpp(r.bytes, r.packets, r.proto));
        match features::log_duration(r.duration_us) {
            Some(d) => self.duration.add(d),
            None => self.zero_duration += 1.0,
        }
        self.events += 1.0;
        let span = self.span_us;
        let i = match self.index.get(&r.pair()) {
            Some(&i) => i,
            None => {
                self.pair_counts.push((r.pair(), 0.0, span));
                self.index.insert(r.pair(), self.pair_counts.len() - 1);
                self.pair_counts.len() - 1
            }
        };
        self.pair_counts[i].1 += 1.0;
    }

    /// Per-task NLL of one event (address scored when `new_pair`).
    fn event_nll(&self, r: &FlowRecord, prev: Option<i64>, new_pair: bool, out: &mut TaskNll) {
        let mut rep = RepairCounts::default();
        let e = self.space.encode(r, None, &mut rep);
        if let Some(p) = prev {
            let y = features::log_iat(r.start_us - p);
            let lam = self.rate(&r.pair());
            // Exponential inter-arrival, as a density of y = ln(dt): lam * e^y * exp(-lam e^y).
            out.add_task(task::IAT, -(lam.ln() + y - lam * y.exp()));
        }
        if new_pair && let Some(a) = self.arrivals.nll(&r.pair()) {
            out.add_task(task::ADDRESS, a);
        }
        out.add_task(task::PROTO, cat_nll(&self.proto, e.proto as usize));
        out.add_task(
            task::DPORT,
            if proto::has_ports(r.proto) {
                cat_nll(&self.dport, e.dport as usize)
            } else {
                0.0
            },
        );
        out.add_task(
            task::SPORT,
            if proto::has_ports(r.proto) {
                cat_nll(&self.sport, e.sport as usize)
            } else {
                0.0
            },
        );
        out.add_task(
            task::FLAGS,
            if r.proto == proto::TCP {
                cat_nll(&self.flags, e.flags as usize)
            } else {
                0.0
            },
        );
        out.add_task(
            task::PACKETS,
            self.packets.nll(features::log_packets(r.packets)),
        );
        out.add_task(
            task::BPP,
            self.bpp.nll(features::log_bpp(r.bytes, r.packets, r.proto)),
        );
        let nz = self.duration.counts.iter().sum::<f64>();
        let p0 = (self.zero_duration + 0.5) / (nz + self.zero_duration + 1.0);
        out.add_task(
            task::DURATION,
            match features::log_duration(r.duration_us) {
                None => -p0.ln(),
                Some(d) => -(1.0 - p0).ln() + self.duration.nll(d),
            },
        );
    }

    fn each_scored(
        &self,
        windows: &[PairWindow],
        mut f: impl FnMut(&FlowRecord, Option<i64>, bool),
    ) {
        for w in windows {
            for (i, r) in w.events.iter().enumerate() {
                if !w.score[i] {
                    continue;
                }
                let prev = if i > 0 {
                    Some(w.events[i - 1].start_us)
                } else {
                    w.prev_start_us
                };
                f(r, prev, w.starts_pair && i == 0);
            }
        }
    }

    fn sample_flow<R: Rng>(
        &self,
        pair: HostPair,
        t: i64,
        rng: &mut R,
        rep: &mut RepairCounts,
    ) -> FlowRecord {
        let p = sample_masked(&cat_probs(&self.proto), |_| true, rng, rep) as u8;
        let ports = proto::has_ports(p);
        let dc = if ports {
            sample_masked(&cat_probs(&self.dport), |_| true, rng, rep) as u16
        } else {
            0
        };
        let sc = if ports {
            sample_masked(&cat_probs(&self.sport), |_| true, rng, rep) as u16
        } else {
            0
        };
        let flags = if p == proto::TCP {
            sample_masked(&cat_probs(&self.flags), |_| true, rng, rep) as u8
        } else {
            0
        };
        let packets = decode::packets(self.packets.sample(
            decode::PACKETS_LOG.0,
            decode::PACKETS_LOG.1,
            rng,
        ));
        let (blo, bhi) = decode::bpp_log(p);
        let (bytes, clamped) = decode::bytes(self.bpp.sample(blo, bhi, rng), packets, p);
        rep.sample_clamped += clamped as u64;
        let nz = self.duration.counts.iter().sum::<f64>();
        let p0 = (self.zero_duration + 0.5) / (nz + self.zero_duration + 1.0);
        let forced_zero = packets == 1 && !self.space.single_packet_duration;
        let duration_us = if forced_zero || rng.r#gen::<f64>() < p0 {
            0
        } else {
            decode::duration_us(self.duration.sample(
                self.duration.lo,
                self.space.norm.upper(cont::DURATION),
                rng,
            ))
        };
        FlowRecord {
            start_us: t,
            duration_us,
            src: pair.src,
            dst: pair.dst,
            src_port: if ports {
                features::port_from_class(sc, rng)
            } else {
                0
            },
            dst_port: if ports {
                features::port_from_class(dc, rng)
            } else {
                0
            },
            proto: p,
            flags: TcpFlags(flags),
            packets,
            bytes,
            label: None,
        }
    }
}

impl FlowModel for Independent {
    fn kind(&self) -> ModelKind {
        ModelKind::Independent
    }
    fn space(&self) -> &FeatureSpace {
        &self.space
    }
    fn fit(
        &mut self,
        records: &[FlowRecord],
        _opts: &FitOptions,
        progress: &mut dyn FnMut(&FitProgress),
    ) -> Result<(), ModelError> {
        let mut rep = RepairCounts::default();
        for r in records {
            self.observe(r, &mut rep);
        }
        let w = super::pair_windows(records, 64, |_| true);
        let nll = self.windows_nll(&w)?;
        progress(&FitProgress {
            epoch: 1,
            epochs: 1,
            batch: 1,
            batches: 1,
            batch_nll: nll,
        });
        self.version += 1;
        Ok(())
    }
    fn train_batch(&mut self, windows: &[PairWindow]) -> Result<TaskNll, ModelError> {
        let nll = self.windows_nll(windows)?;
        let mut rep = RepairCounts::default();
        for w in windows {
            for (i, r) in w.events.iter().enumerate() {
                if w.score[i] {
                    self.observe(r, &mut rep);
                }
            }
        }
        Ok(nll)
    }
    fn windows_nll(&self, windows: &[PairWindow]) -> Result<TaskNll, ModelError> {
        let mut out = TaskNll::default();
        self.each_scored(windows, |r, prev, new| {
            self.event_nll(r, prev, new, &mut out)
        });
        Ok(out)
    }
    fn event_losses(&self, windows: &[PairWindow]) -> Result<Vec<f32>, ModelError> {
        let mut v = Vec::new();
        self.each_scored(windows, |r, prev, new| {
            let mut t = TaskNll::default();
            self.event_nll(r, prev, new, &mut t);
            v.push(t.sum.iter().sum::<f64>() as f32);
        });
        Ok(v)
    }
    fn heldout_nll(
        &self,
        context: &[FlowRecord],
        heldout: &[FlowRecord],
    ) -> Result<TaskNll, ModelError> {
        self.windows_nll(&super::heldout_windows(context, heldout, 64))
    }
    fn new_lanes(&self) -> Lanes {
        Lanes::new(LaneStates::Independent(Vec::new()))
    }
    fn observed_pairs(&self) -> Vec<HostPair> {
        self.pair_counts.iter().map(|p| p.0).collect()
    }
    /// Observed pairs and twins run at their pair's Poisson rate from the lane's start (memoryless: no phase is
    /// needed); a new pair gets the rate of a random observed pair (the mean rate when none was observed).
    fn start_lane(&self, lanes: &mut Lanes, i: usize, from: &LaneStart) -> Result<(), ModelError> {
        let head = &mut lanes.heads[i];
        let nb = head.not_before as f64;
        let rng = &mut head.rng;
        let s = match from {
            LaneStart::Continue { last, .. } => {
                let rate = self.rate(&last.pair()) * 1e-6;
                LaneState {
                    next_us: nb + exp_gap(rng, rate),
                    rate,
                }
            }
            LaneStart::Observed(k) => {
                let rate = self.rate(&self.pair_counts[*k].0) * 1e-6;
                LaneState {
                    next_us: nb + exp_gap(rng, rate),
                    rate,
                }
            }
            LaneStart::New { at } => {
                let rate = if self.pair_counts.is_empty() {
                    self.mean_rate()
                } else {
                    self.rate(&self.pair_counts[rng.gen_range(0..self.pair_counts.len())].0)
                };
                LaneState {
                    next_us: *at as f64,
                    rate: rate * 1e-6,
                }
            }
        };
        let v = match &mut lanes.states {
            LaneStates::Independent(v) => v,
            _ => unreachable!("a session checks its model kind before every call"),
        };
        if i == v.len() {
            v.push(s);
        } else {
            v[i] = s;
        }
        Ok(())
    }
    fn step_lanes(&self, lanes: &mut Lanes, active: &[usize]) -> Result<(), ModelError> {
        let Lanes {
            heads,
            states,
            repairs,
        } = lanes;
        let st = match states {
            LaneStates::Independent(v) => v,
            _ => unreachable!("a session checks its model kind before every call"),
        };
        for &i in active {
            let h = &mut heads[i];
            let l = &mut st[i];
            h.next = Some(self.sample_flow(h.pair, l.next_us as i64, &mut h.rng, repairs));
            l.next_us += exp_gap(&mut h.rng, l.rate);
        }
        Ok(())
    }
    fn pair_arrivals(&self) -> &PairArrivals {
        &self.arrivals
    }
    /// The shared marginals (count tables and histograms). Per-pair Poisson counts are per-pair state, kept by
    /// whoever owns the pair, and are not part of the flat parameters.
    fn params(&self) -> Vec<f32> {
        let mut v: Vec<f32> = Vec::new();
        for c in [
            &self.proto,
            &self.dport,
            &self.sport,
            &self.flags,
            &self.packets.counts,
            &self.bpp.counts,
            &self.duration.counts,
        ] {
            v.extend(c.iter().map(|x| *x as f32));
        }
        v.push(self.zero_duration as f32);
        v.push(self.events as f32);
        v
    }
    fn set_params(&mut self, flat: &[f32]) -> Result<(), ModelError> {
        let n = self.params().len();
        if flat.len() != n {
            return Err(ModelError::Invalid(format!(
                "independent: {} parameters given, {n} expected",
                flat.len()
            )));
        }
        let mut it = flat.iter().map(|x| *x as f64);
        for c in [
            &mut self.proto,
            &mut self.dport,
            &mut self.sport,
            &mut self.flags,
            &mut self.packets.counts,
            &mut self.bpp.counts,
            &mut self.duration.counts,
        ] {
            for x in c.iter_mut() {
                *x = it.next().unwrap_or(0.0);
            }
        }
        self.zero_duration = it.next().unwrap_or(0.0);
        self.events = it.next().unwrap_or(0.0);
        Ok(())
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, v: u64) {
        self.version = v;
    }
    fn header(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("independent model serialises")
    }
    fn weights(&self) -> Result<Vec<u8>, ModelError> {
        Ok(Vec::new())
    }
}
