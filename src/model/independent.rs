//! The `independent` baseline: what simple generators do. Every field is drawn from its own marginal, with
//! Poisson arrivals per host pair. Discrete fields are count tables, continuous fields histograms of the log value
//! (so the marginals themselves are as faithful as possible: this baseline loses only the dependencies).
//!
//! Timing is per pair and empirical ([`PairStats`]): after each flow the pair goes silent with its own frequency of
//! silences per labelled flow; otherwise its next flow follows after an exponential gap (truncated at the silence
//! threshold `S`) at its within-session rate. The inter-arrival density is the matching two-part mixture:
//! `(1 - p) Exp_in(dt | dt <= S)` and `p (S + Exp_out)` beyond, so `P(dt > S) = p` is exactly the silence mark.
//! Pair statistics are smoothed towards the means over all pairs with one pseudo-observation.
//!
//! Compliance masks still apply (ports 0 without ports, flags only on TCP, bytes-per-packet truncated to the
//! protocol's bounds): masking depends on the protocol, which is the one exception to independence, since
//! without it the baseline would emit impossible flows.

use super::compliance::RepairCounts;
use super::features::{self, FeatureSpace, N_BYTE_CLASSES, N_PORT_CLASSES, cont, decode, task};
use super::pair_arrival::PairArrivals;
use super::session::{LaneStart, LaneStates, Lanes, ObservedLane};
use super::{FitOptions, FitProgress, FlowModel, ModelError, ModelKind, PairWindow, TaskNll};
use crate::record::{FlowRecord, HostPair, TcpFlags, proto};
use foldhash::{HashMap, HashMapExt};
use rand::Rng;
use serde::{Deserialize, Serialize};

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
    /// Minus the log density at `x`, given the smoothed total (summed once per scoring call, not per event).
    fn nll_with(&self, x: f64, total: f64) -> f64 {
        -(((self.counts[self.bin(x)] + SMOOTH) / total).ln() - self.width().ln())
    }
    /// Minus the log of the mass in `[a, b)` (the range below `lo` and above `hi` belongs to the end bins, as
    /// in [`Hist::bin`]): the probability of a count whose draws fall in that interval.
    fn interval_nll_with(&self, a: f64, b: f64, total: f64) -> f64 {
        let w = self.width();
        let n = self.counts.len();
        let mut mass = 0.0;
        for i in self.bin(a)..=self.bin(b) {
            let l = if i == 0 {
                f64::NEG_INFINITY
            } else {
                self.lo + i as f64 * w
            };
            let h = if i + 1 == n {
                f64::INFINITY
            } else {
                self.lo + (i + 1) as f64 * w
            };
            let ov = h.min(b) - l.max(a);
            if ov > 0.0 {
                let frac = if ov.is_finite() {
                    (ov / w).min(1.0)
                } else {
                    1.0
                };
                mass += (self.counts[i] + SMOOTH) * frac;
            }
        }
        -(mass / total).max(1e-300).ln()
    }
    fn edge(&self, i: usize) -> f64 {
        self.lo + i as f64 * self.width()
    }
    /// A draw truncated to `[a, b]`: bins weighted by their overlap with the interval, uniform inside. `cum` is
    /// this histogram's [`Cumulative`]: only the two end bins are weighed here, the bins between them are found by
    /// binary search (generation draws three of these per flow; summing 320 bins each time was most of its cost).
    fn sample<R: Rng>(&self, cum: &Cumulative, a: f64, b: f64, rng: &mut R) -> f64 {
        let w = self.width();
        let weight = |i: usize| {
            let ov = (self.edge(i + 1).min(b) - self.edge(i).max(a)).max(0.0) / w;
            (self.counts[i] + SMOOTH) * ov
        };
        let (ia, ib) = (self.bin(a), self.bin(b));
        let wa = weight(ia);
        let wb = if ib > ia { weight(ib) } else { 0.0 };
        let mid = if ib > ia + 1 {
            cum.mass(ia + 1, ib)
        } else {
            0.0
        };
        let tot = wa + mid + wb;
        if tot.is_nan() || tot <= 0.0 {
            return a.max(self.lo).min(b);
        }
        let u = rng.r#gen::<f64>() * tot;
        let i = if u < wa {
            ia
        } else if u - wa < mid {
            cum.find(ia + 1, u - wa).min(ib - 1)
        } else {
            ib
        };
        let (l, h) = (self.edge(i).max(a), self.edge(i + 1).min(b));
        if h > l { rng.gen_range(l..h) } else { l }
    }
}

/// Running sums of smoothed counts (`c[0] = 0`, `c[i + 1] = c[i] + counts[i] + SMOOTH`): a draw from a table is
/// one binary search instead of a pass over all its classes.
#[derive(Debug)]
struct Cumulative(Vec<f64>);

impl Cumulative {
    fn new(counts: &[f64]) -> Cumulative {
        let mut c = Vec::with_capacity(counts.len() + 1);
        let mut s = 0.0;
        c.push(s);
        for x in counts {
            s += x + SMOOTH;
            c.push(s);
        }
        Cumulative(c)
    }
    /// Smoothed mass of all classes: a table's normaliser.
    fn total(&self) -> f64 {
        self.0[self.0.len() - 1]
    }
    /// Smoothed mass of classes `i..j`.
    fn mass(&self, i: usize, j: usize) -> f64 {
        self.0[j] - self.0[i]
    }
    /// The class at which the mass counted from class `from` first exceeds `u`.
    fn find(&self, from: usize, u: f64) -> usize {
        let target = self.0[from] + u;
        let n = self.0.len() - 1;
        (self.0.partition_point(|c| *c <= target).max(1) - 1).clamp(from, n - 1)
    }
    /// A class drawn with probability proportional to its smoothed count.
    fn draw<R: Rng>(&self, rng: &mut R) -> usize {
        self.find(0, rng.r#gen::<f64>() * self.total())
    }
}

/// Everything a draw or a score needs that depends only on the tables (their running sums, whose last entries are
/// the normalisers): built on first use after the tables last changed (training, new parameters), shared by every
/// lane and every scored event until they change again. Summing the 1,670-entry port tables per event was once
/// half of the streaming pipeline's time with this model.
#[derive(Debug)]
struct Samplers {
    proto: Cumulative,
    dport: Cumulative,
    sport: Cumulative,
    flags: Cumulative,
    packets: Cumulative,
    bpp: Cumulative,
    duration: Cumulative,
    /// Probability of a zero duration (add-0.5 smoothed).
    p_zero_duration: f64,
}

/// The lazily built [`Samplers`]; a clone starts empty and caches compare equal (a cache is not model state).
#[derive(Debug, Default)]
struct SamplerCache(std::sync::OnceLock<Samplers>);

impl Clone for SamplerCache {
    fn clone(&self) -> Self {
        SamplerCache::default()
    }
}

impl PartialEq for SamplerCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

fn cat_nll(counts: &[f64], tot: f64, i: usize) -> f64 {
    -((counts[i] + SMOOTH) / tot).ln()
}

/// A generated pair: its next (or, with `first`, its first) flow at `next_us`, its silence probability per flow and
/// its within-session rate per µs.
pub(crate) struct LaneState {
    next_us: f64,
    first: bool,
    p_end: f64,
    r_in: f64,
}

/// An exponential gap (µs) at `rate` per µs truncated to `[lo, hi]` (inverse CDF; `lo` itself when the interval
/// has no numerical mass).
fn truncated_exp<R: Rng>(rng: &mut R, rate: f64, lo: f64, hi: f64) -> f64 {
    let (a, b) = ((-rate * lo).exp(), (-rate * hi).exp());
    let u = rng.r#gen::<f64>();
    let x = -(a - u * (a - b)).ln() / rate;
    if x.is_finite() { x.clamp(lo, hi) } else { lo }
}

/// Timing counts of one pair (gaps in seconds; gaps beyond the silence threshold counted from it).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PairStats {
    pub pair: HostPair,
    pub flows: f64,
    pub sessions: f64,
    /// Labelled silence marks and how many of them were silences.
    pub marks: f64,
    pub silences: f64,
    pub gaps_in: f64,
    pub sum_in_s: f64,
    pub gaps_out: f64,
    pub sum_out_s: f64,
    /// Start of the pair's latest flow seen.
    pub last_us: i64,
}

/// Where a scored event stands in its window: the previous flow's start, whether it is its pair's first flow, the
/// silence mark after it (given only for a window's last event: the others' marks follow from the next event's
/// time), and its pair's timing (looked up once per window).
#[derive(Clone, Copy, Debug)]
struct Scored {
    prev: Option<i64>,
    new_pair: bool,
    last_mark: Option<bool>,
    timing: Timing,
}

/// A pair's timing parameters: silence probability per flow, within-session and beyond-silence rates (per second).
#[derive(Clone, Copy, Debug)]
struct Timing {
    p_end: f64,
    r_in: f64,
    r_out: f64,
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
    /// Per-pair timing statistics (in order of first appearance).
    pub pairs: Vec<PairStats>,
    /// Sums of the pairs' timing counts: `[marks, silences, gaps_in, sum_in_s, gaps_out, sum_out_s]`.
    pub totals: [f64; 6],
    pub arrivals: PairArrivals,
    pub version: u64,
    #[serde(skip)]
    index: HashMap<HostPair, usize>,
    #[serde(skip)]
    samplers: SamplerCache,
}

impl Independent {
    pub fn new(config: IndependentConfig, records: &[FlowRecord]) -> Independent {
        let space = FeatureSpace::fit(records, 1);
        let mut m = Independent {
            packets: Hist::new(&config),
            bpp: Hist::new(&config),
            duration: Hist::new(&config),
            config,
            space,
            proto: vec![0.0; N_BYTE_CLASSES],
            dport: vec![0.0; N_PORT_CLASSES],
            sport: vec![0.0; N_PORT_CLASSES],
            flags: vec![0.0; N_BYTE_CLASSES],
            zero_duration: 0.0,
            events: 0.0,
            pairs: Vec::new(),
            totals: [0.0; 6],
            arrivals: PairArrivals::new(0),
            version: 0,
            index: HashMap::new(),
            samplers: SamplerCache::default(),
        };
        m.arrivals.fit(records, m.space.silence_us);
        m
    }

    pub(crate) fn rebuild_index(&mut self) {
        self.index = self
            .pairs
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pair, i))
            .collect();
    }

    /// The timing of a pair; unseen pairs get the means over all pairs.
    fn timing(&self, pair: &HostPair) -> Timing {
        let [m, s, gi, si, go, so] = self.totals;
        let span_s = self.space.span_us() as f64 * 1e-6;
        let prior = Timing {
            p_end: ((s + 0.5) / (m + 1.0)).clamp(1e-6, 1.0 - 1e-6),
            r_in: (gi + 1.0) / (si + self.space.silence_us as f64 * 1e-6),
            r_out: (go + 1.0) / (so + span_s),
        };
        match self.index.get(pair) {
            None => prior,
            Some(&i) => {
                let p = &self.pairs[i];
                Timing {
                    p_end: ((p.silences + prior.p_end) / (p.marks + 1.0)).clamp(1e-6, 1.0 - 1e-6),
                    r_in: (p.gaps_in + 1.0) / (p.sum_in_s + 1.0 / prior.r_in),
                    r_out: (p.gaps_out + 1.0) / (p.sum_out_s + 1.0 / prior.r_out),
                }
            }
        }
    }

    /// Adds a flow to the tables (flows of a pair must come in time order for its timing counts).
    fn observe(&mut self, r: &FlowRecord, repairs: &mut RepairCounts) {
        self.samplers.0.take();
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
        let silence = self.space.silence_us;
        let i = match self.index.get(&r.pair()) {
            Some(&i) => i,
            None => {
                self.pairs.push(PairStats {
                    pair: r.pair(),
                    flows: 0.0,
                    sessions: 1.0,
                    marks: 0.0,
                    silences: 0.0,
                    gaps_in: 0.0,
                    sum_in_s: 0.0,
                    gaps_out: 0.0,
                    sum_out_s: 0.0,
                    last_us: r.start_us,
                });
                self.index.insert(r.pair(), self.pairs.len() - 1);
                self.pairs.len() - 1
            }
        };
        let p = &mut self.pairs[i];
        let t = &mut self.totals;
        if p.flows > 0.0 {
            let gap = (r.start_us - p.last_us).max(0);
            p.marks += 1.0;
            t[0] += 1.0;
            if gap > silence {
                let out = (gap - silence) as f64 * 1e-6;
                p.silences += 1.0;
                p.sessions += 1.0;
                p.gaps_out += 1.0;
                p.sum_out_s += out;
                t[1] += 1.0;
                t[4] += 1.0;
                t[5] += out;
            } else {
                p.gaps_in += 1.0;
                p.sum_in_s += gap as f64 * 1e-6;
                t[2] += 1.0;
                t[3] += gap as f64 * 1e-6;
            }
        }
        p.flows += 1.0;
        p.last_us = p.last_us.max(r.start_us);
    }

    /// The shared count tables, in the order of the flat parameters.
    fn tables(&self) -> [&[f64]; 7] {
        [
            &self.proto,
            &self.dport,
            &self.sport,
            &self.flags,
            &self.packets.counts,
            &self.bpp.counts,
            &self.duration.counts,
        ]
    }

    /// Per-task NLL of one event (address scored when `new_pair`); `silence` is a scored silence mark: the one
    /// before this event (from `prev`) and, for a pair's last event, the one after it.
    fn event_nll(&self, r: &FlowRecord, at: &Scored, sm: &Samplers, out: &mut TaskNll) {
        let Scored {
            prev,
            new_pair,
            last_mark,
            timing: t,
        } = *at;
        let mut rep = RepairCounts::default();
        let e = self.space.encode(r, None, &mut rep);
        let silence = self.space.silence_us;
        let mark = |ended: bool| -(if ended { t.p_end } else { 1.0 - t.p_end }).ln();
        if let Some(p) = prev {
            let dt_us = (r.start_us - p).max(0);
            // Density of y = ln(dt) (dt in seconds, floored at 1 µs like every model): dt f(dt), with f the
            // truncated within-session exponential below S and the shifted one beyond.
            let y = features::log_iat(dt_us);
            let dt = y.exp();
            let s = silence as f64 * 1e-6;
            let f = if dt_us <= silence {
                (1.0 - t.p_end) * t.r_in * (-t.r_in * dt).exp() / (1.0 - (-t.r_in * s).exp())
            } else {
                t.p_end * t.r_out * (-t.r_out * (dt - s)).exp()
            };
            out.add_task(task::IAT, -(f.max(1e-300).ln() + y));
            out.add_task(task::SILENCE, mark(dt_us > silence));
        }
        if let Some(m) = last_mark {
            out.add_task(task::SILENCE, mark(m));
        }
        if new_pair && let Some(a) = self.arrivals.nll(&r.pair()) {
            out.add_task(task::ADDRESS, a);
        }
        out.add_task(
            task::PROTO,
            cat_nll(&self.proto, sm.proto.total(), e.proto as usize),
        );
        out.add_task(
            task::DPORT,
            if proto::has_ports(r.proto) {
                cat_nll(&self.dport, sm.dport.total(), e.dport as usize)
            } else {
                0.0
            },
        );
        out.add_task(
            task::SPORT,
            if proto::has_ports(r.proto) {
                cat_nll(&self.sport, sm.sport.total(), e.sport as usize)
            } else {
                0.0
            },
        );
        out.add_task(
            task::FLAGS,
            if r.proto == proto::TCP {
                cat_nll(&self.flags, sm.flags.total(), e.flags as usize)
            } else {
                0.0
            },
        );
        // Packets are counts: the probability of the count's bin (draws decode by `decode::packets`), comparable
        // with TempoNet's count head.
        let (lo, hi) = features::packets_log_bin(r.packets);
        out.add_task(
            task::PACKETS,
            self.packets.interval_nll_with(lo, hi, sm.packets.total()),
        );
        out.add_task(
            task::BPP,
            self.bpp.nll_with(
                features::log_bpp(r.bytes, r.packets, r.proto),
                sm.bpp.total(),
            ),
        );
        let p0 = sm.p_zero_duration;
        out.add_task(
            task::DURATION,
            match features::log_duration(r.duration_us) {
                None => -p0.ln(),
                Some(d) => -(1.0 - p0).ln() + self.duration.nll_with(d, sm.duration.total()),
            },
        );
    }

    /// Summed per-task NLL of the windows' scored events (owned or borrowed windows alike).
    fn scored_nll<'w>(&self, windows: impl IntoIterator<Item = &'w PairWindow>) -> TaskNll {
        let mut out = TaskNll::default();
        let sm = self.samplers();
        self.each_scored(windows, |r, at| self.event_nll(r, &at, sm, &mut out));
        out
    }

    /// Calls `f(event, where it stands)` for every scored event (see [`Scored`]).
    fn each_scored<'w>(
        &self,
        windows: impl IntoIterator<Item = &'w PairWindow>,
        mut f: impl FnMut(&FlowRecord, Scored),
    ) {
        for w in windows {
            let n = w.events.len();
            // A window is one pair's flows: its timing is looked up once.
            let timing = self.timing(&w.pair);
            for (i, r) in w.events.iter().enumerate() {
                if !w.score[i] {
                    continue;
                }
                let prev = if i > 0 {
                    Some(w.events[i - 1].start_us)
                } else {
                    w.prev_start_us
                };
                let last = if i + 1 == n {
                    w.ended_after(i, self.space.silence_us)
                } else {
                    None
                };
                let at = Scored {
                    prev,
                    new_pair: w.starts_pair && i == 0,
                    last_mark: last,
                    timing,
                };
                f(r, at);
            }
        }
    }

    /// The draw tables of the current counts (built here on the first draw after a change).
    fn samplers(&self) -> &Samplers {
        self.samplers.0.get_or_init(|| {
            let nz = self.duration.counts.iter().sum::<f64>();
            Samplers {
                proto: Cumulative::new(&self.proto),
                dport: Cumulative::new(&self.dport),
                sport: Cumulative::new(&self.sport),
                flags: Cumulative::new(&self.flags),
                packets: Cumulative::new(&self.packets.counts),
                bpp: Cumulative::new(&self.bpp.counts),
                duration: Cumulative::new(&self.duration.counts),
                p_zero_duration: (self.zero_duration + 0.5) / (nz + self.zero_duration + 1.0),
            }
        })
    }

    fn sample_flow<R: Rng>(
        &self,
        pair: HostPair,
        t: i64,
        rng: &mut R,
        rep: &mut RepairCounts,
    ) -> FlowRecord {
        let sm = self.samplers();
        let p = sm.proto.draw(rng) as u8;
        let ports = proto::has_ports(p);
        let dc = if ports { sm.dport.draw(rng) as u16 } else { 0 };
        let sc = if ports { sm.sport.draw(rng) as u16 } else { 0 };
        let flags = if p == proto::TCP {
            sm.flags.draw(rng) as u8
        } else {
            0
        };
        let packets = decode::packets(self.packets.sample(
            &sm.packets,
            decode::PACKETS_LOG.0,
            decode::PACKETS_LOG.1,
            rng,
        ));
        let (blo, bhi) = decode::bpp_log(p);
        let (bytes, clamped) = decode::bytes(self.bpp.sample(&sm.bpp, blo, bhi, rng), packets, p);
        rep.sample_clamped += clamped as u64;
        let forced_zero = packets == 1 && !self.space.single_packet_duration;
        let duration_us = if forced_zero || rng.r#gen::<f64>() < sm.p_zero_duration {
            0
        } else {
            decode::duration_us(self.duration.sample(
                &sm.duration,
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
        let mut order: Vec<&FlowRecord> = records.iter().collect();
        order.sort_by_key(|r| r.start_us);
        for r in order {
            self.observe(r, &mut rep);
        }
        // A pair's last flow: silent after it when the data went on long enough.
        let end = records.iter().map(|r| r.start_us).max().unwrap_or(0);
        for p in &mut self.pairs {
            if end - p.last_us > self.space.silence_us {
                p.marks += 1.0;
                p.silences += 1.0;
                self.totals[0] += 1.0;
                self.totals[1] += 1.0;
            }
        }
        self.arrivals.fit(records, self.space.silence_us);
        let w = super::pair_windows(records, 64, |_| true);
        let nll = self.windows_nll(&w)?;
        progress(&FitProgress {
            epoch: 1,
            epochs: 1,
            batch: 1,
            batches: 1,
            batch_nll: nll,
            validation_nll: None,
        });
        self.version += 1;
        Ok(())
    }
    fn observe_windows(&mut self, windows: &[PairWindow]) {
        for w in windows {
            self.arrivals.observe_window(w, self.space.silence_us);
        }
    }
    fn train_batch(&mut self, windows: &[&PairWindow]) -> Result<TaskNll, ModelError> {
        let nll = self.scored_nll(windows.iter().copied());
        let mut rep = RepairCounts::default();
        let mut scored: Vec<&FlowRecord> = windows
            .iter()
            .flat_map(|w| w.events.iter().zip(&w.score).filter(|x| *x.1).map(|x| x.0))
            .collect();
        scored.sort_by_key(|r| r.start_us);
        for r in scored {
            self.observe(r, &mut rep);
        }
        Ok(nll)
    }
    fn windows_nll(&self, windows: &[PairWindow]) -> Result<TaskNll, ModelError> {
        Ok(self.scored_nll(windows))
    }
    fn event_losses(&self, windows: &[PairWindow]) -> Result<Vec<f32>, ModelError> {
        let mut v = Vec::new();
        let sm = self.samplers();
        self.each_scored(windows, |r, at| {
            // Flow tasks and the address (the silence mark is not part of the event).
            let mut t = TaskNll::default();
            let at = Scored {
                last_mark: None,
                ..at
            };
            self.event_nll(r, &at, sm, &mut t);
            v.push(t.sum[..task::SILENCE].iter().sum::<f64>() as f32);
        });
        Ok(v)
    }
    fn heldout_nll(
        &self,
        context: &[FlowRecord],
        heldout: &[FlowRecord],
    ) -> Result<TaskNll, ModelError> {
        self.windows_nll(&super::heldout_windows(
            context,
            heldout,
            64,
            self.space.silence_us,
        ))
    }
    fn new_lanes(&self) -> Lanes {
        Lanes::new(LaneStates::Independent(Vec::new()))
    }
    fn observed_lanes(&self) -> Vec<ObservedLane> {
        self.pairs
            .iter()
            .map(|p| ObservedLane {
                pair: p.pair,
                last_us: p.last_us,
                sessions: p.sessions as u32,
            })
            .collect()
    }
    /// Observed pairs and twins continue from their last real flow with their own timing, going silent or drawing
    /// their first gap at the first step, conditioned on the quiet time until `not_before` (see `LaneStart`); new
    /// pairs take the timing of a random observed pair (the means when none was observed), re-activated ones their
    /// own, both with their first flow at `at`.
    fn start_lane(&self, lanes: &mut Lanes, i: usize, from: &LaneStart) -> Result<(), ModelError> {
        let head = &mut lanes.heads[i];
        let (timing, next_us, first) = match from {
            LaneStart::Continue { last, .. } => {
                (self.timing(&last.pair()), last.start_us as f64, false)
            }
            LaneStart::Observed(k) => (
                self.timing(&self.pairs[*k].pair),
                self.pairs[*k].last_us as f64,
                false,
            ),
            LaneStart::Resume { last, at, .. } => (self.timing(&last.pair()), *at as f64, true),
            LaneStart::Reactivate { i: k, at, .. } => {
                (self.timing(&self.pairs[*k].pair), *at as f64, true)
            }
            LaneStart::New { at, .. } => {
                let t = if self.pairs.is_empty() {
                    self.timing(&head.pair)
                } else {
                    self.timing(&self.pairs[head.rng.gen_range(0..self.pairs.len())].pair)
                };
                (t, *at as f64, true)
            }
        };
        let s = LaneState {
            next_us,
            first,
            p_end: timing.p_end,
            r_in: timing.r_in * 1e-6,
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
        let silence = self.space.silence_us as f64;
        for &i in active {
            let h = &mut heads[i];
            let l = &mut st[i];
            if !l.first {
                // Quiet since the last flow until `not_before` (only before a lane's first generated flow).
                let quiet = (h.not_before as f64 - l.next_us).clamp(0.0, silence);
                let keep = |x: f64| (-l.r_in * x).exp() - (-l.r_in * silence).exp();
                let q = keep(quiet) / keep(0.0).max(1e-300);
                if h.rng.r#gen::<f64>() < super::compliance::silence_posterior(l.p_end, q) {
                    h.ended = true;
                    continue;
                }
                l.next_us += truncated_exp(&mut h.rng, l.r_in, quiet, silence);
            }
            l.first = false;
            h.next = Some(self.sample_flow(h.pair, l.next_us as i64, &mut h.rng, repairs));
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
        for c in self.tables() {
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
        self.samplers.0.take();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bins of the counts 1, 2, 3, ... tile the line, so their masses add up to one; a count seen often
    /// gets its histogram bin's share (a bin of 0.125 in log spans about five counts near 40).
    #[test]
    fn packet_count_masses_add_up_to_one() {
        let mut h = Hist::new(&IndependentConfig::default());
        for p in [1u64, 2, 2, 3, 40, 40, 40, 40, 1500] {
            h.add(features::log_packets(p));
        }
        let t = h.counts.iter().sum::<f64>() + SMOOTH * h.counts.len() as f64;
        let mass = |p: u64| {
            let (lo, hi) = features::packets_log_bin(p);
            (-h.interval_nll_with(lo, hi, t)).exp()
        };
        let hi = (IndependentConfig::default().hi.exp()) as u64;
        let upto = 200_000u64;
        let sum: f64 = (1..upto).map(mass).sum::<f64>()
            + (-h.interval_nll_with((upto as f64).ln(), f64::INFINITY, t)).exp();
        assert!(
            (sum - 1.0).abs() < 1e-9,
            "masses add up to {sum} (hist ends at {hi})"
        );
        assert!(mass(40) > 0.05, "count 40: {}", mass(40));
        assert!(mass(400) < 1e-3, "count 400: {}", mass(400));
    }

    /// A truncated draw (end bins weighed, the bins between found by binary search) has the histogram's mass on
    /// every sub-interval, and never leaves `[a, b]`; table draws have the smoothed counts' shares.
    #[test]
    fn draws_follow_the_tables() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut h = Hist::new(&IndependentConfig::default());
        for i in 0..400 {
            h.add(0.3 + (i % 37) as f64 * 0.11 + (i % 5) as f64 * 0.9);
        }
        let cum = Cumulative::new(&h.counts);
        let t = cum.total();
        let mass = |a: f64, b: f64| (-h.interval_nll_with(a, b, t)).exp();
        let (a, b) = (0.517, 6.203);
        let n = 200_000;
        let draws: Vec<f64> = (0..n).map(|_| h.sample(&cum, a, b, &mut rng)).collect();
        assert!(draws.iter().all(|x| (a..=b).contains(x)));
        for (x, y) in [(a, 1.0), (1.0, 2.37), (2.37, 4.0), (4.0, 5.91), (5.91, b)] {
            let seen = draws.iter().filter(|d| (x..y).contains(*d)).count() as f64 / n as f64;
            let want = mass(x, y) / mass(a, b);
            assert!(
                (seen - want).abs() < 0.01,
                "[{x}, {y}): {seen} drawn, {want} expected"
            );
        }
        // Inside one bin, and outside the histogram's range: the clamp.
        let x = h.sample(&cum, 2.01, 2.02, &mut rng);
        assert!((2.01..=2.02).contains(&x));
        assert_eq!(
            h.sample(&cum, 30.0, 31.0, &mut rng),
            30.0_f64.max(h.lo).min(31.0)
        );

        let counts = [5.0, 0.0, 20.0, 75.0];
        let cum = Cumulative::new(&counts);
        let mut seen = [0usize; 4];
        for _ in 0..n {
            seen[cum.draw(&mut rng)] += 1;
        }
        for (c, s) in counts.iter().zip(seen) {
            let want = (c + SMOOTH) / (100.0 + 4.0 * SMOOTH);
            assert!(
                (s as f64 / n as f64 - want).abs() < 0.005,
                "{s} of {n} for count {c}"
            );
        }
    }
}
