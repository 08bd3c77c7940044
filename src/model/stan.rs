//! STAN (Xu et al., "STAN: Synthetic Network Traffic Generation with Generative Neural Models", 2021) as published:
//! a flow row is predicted from a window of the previous `k` rows of the same source host by a masked
//! convolutional network (PixelCNN style), autoregressive over the columns of the current row; mixture-density
//! heads for continuous columns, softmax heads for discrete ones; the destination address as four 256-way octets.
//!
//! The window is an image `[2 channels (value, row present), k + 1 rows, C columns]`, the current row last. The
//! first convolution spans the whole window with mask A on the current row (column `c` sees only columns `< c`),
//! the second spans the row with mask B (column `c` also sees its own hidden features, which depend only on
//! columns `< c`); previous rows are fully visible. So column `c` of the current row depends on all previous rows
//! and on the current row's earlier columns, never on itself or later columns.
//!
//! Columns: 0 inter-arrival within the host (continuous), 1-4 destination octets, 5 protocol, 6 destination port
//! class, 7 source port class, 8 flag byte, 9 packets, 10 bytes per packet (continuous), 11 zero duration
//! (binary), 12 duration (continuous). Discrete inputs are scaled indices in `[-1, 1]`.

use super::compliance::{RepairCounts, sample_masked, sample_truncated_mixture};
use super::features::{self, FeatureSpace, N_PORT_CLASSES, cont, decode, task};
use super::pair_arrival::PairArrivals;
use super::session::{LaneRng, LaneStart, LaneStates, Lanes, MIN_GEN_ROWS};
use super::{
    FitOptions, FitProgress, FlowModel, ModelError, ModelKind, PairWindow, TaskNll, mixture,
};
use crate::record::{FlowRecord, HostPair, TcpFlags, proto};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

const C: usize = 13;
const DISCRETE: [(usize, usize); 8] = [
    (1, 256),
    (2, 256),
    (3, 256),
    (4, 256),
    (5, 256),
    (6, N_PORT_CLASSES),
    (7, N_PORT_CLASSES),
    (8, 256),
];

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StanConfig {
    /// Previous rows of the same host in the window.
    pub k: usize,
    pub hidden: i64,
    pub mixtures: i64,
    pub batch: usize,
    pub lr: f64,
    pub gen_batch: usize,
}

impl Default for StanConfig {
    fn default() -> Self {
        StanConfig {
            k: 5,
            hidden: 64,
            mixtures: 4,
            batch: 256,
            lr: 2e-3,
            gen_batch: 2048,
        }
    }
}

/// One encoded row.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub x: Vec<f32>,
    pub cls: [i64; 8],
    pub iat: Option<f32>,
    pub pk: f32,
    pub bp: f32,
    pub dur: Option<f32>,
}

fn scale(i: i64, n: usize) -> f32 {
    i as f32 / (n - 1) as f32 * 2.0 - 1.0
}

fn dst_octets(a: IpAddr) -> [u8; 4] {
    match a {
        IpAddr::V4(v) => v.octets(),
        // IPv6 destinations are folded onto their last four bytes (STAN models IPv4 octets).
        IpAddr::V6(v) => {
            let o = v.octets();
            [o[12], o[13], o[14], o[15]]
        }
    }
}

struct Net {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
    w3: nn::Linear,
    mask1: Tensor,
    mask2: Tensor,
    heads: Vec<nn::Linear>,
}

impl Net {
    fn new(p: &nn::Path, c: &StanConfig, device: Device) -> Net {
        let h = c.hidden;
        let kh = c.k as i64 + 1;
        let kw = 2 * C as i64 - 1;
        let std1 = (1.0 / (2 * kh * C as i64) as f64).sqrt();
        let std2 = (1.0 / (h * C as i64) as f64).sqrt();
        let w1 = p.var(
            "w1",
            &[h, 2, kh, kw],
            nn::Init::Randn {
                mean: 0.0,
                stdev: std1,
            },
        );
        let b1 = p.zeros("b1", &[h]);
        let w2 = p.var(
            "w2",
            &[h, h, 1, kw],
            nn::Init::Randn {
                mean: 0.0,
                stdev: std2,
            },
        );
        let b2 = p.zeros("b2", &[h]);
        // Kernel column j covers input column c + j - (C - 1).
        let mut m1 = vec![1f32; (kh * kw) as usize];
        for j in 0..kw as usize {
            if j >= C - 1 {
                m1[(kh as usize - 1) * kw as usize + j] = 0.0; // mask A: the current row's own and later columns
            }
        }
        let mut m2 = vec![1f32; kw as usize];
        for (j, m) in m2.iter_mut().enumerate() {
            if j > C - 1 {
                *m = 0.0; // mask B: later columns hidden, own column visible
            }
        }
        let k = c.mixtures;
        let outs: [i64; C] = [
            3 * k,
            256,
            256,
            256,
            256,
            256,
            N_PORT_CLASSES as i64,
            N_PORT_CLASSES as i64,
            256,
            3 * k,
            3 * k,
            1,
            3 * k,
        ];
        Net {
            w1,
            b1,
            w2,
            b2,
            w3: nn::linear(p / "w3", h, h, Default::default()),
            mask1: Tensor::from_slice(&m1)
                .view([1, 1, kh, kw])
                .to_device(device),
            mask2: Tensor::from_slice(&m2)
                .view([1, 1, 1, kw])
                .to_device(device),
            heads: outs
                .iter()
                .enumerate()
                .map(|(i, o)| nn::linear(p / format!("head{i}"), h, *o, Default::default()))
                .collect(),
        }
    }

    /// Hidden features of the current row's columns: `[B, C, H]` from a window `[B, 2, k+1, C]`.
    fn features(&self, x: &Tensor) -> Tensor {
        let pad = C as i64 - 1;
        let h1 = x
            .conv2d(
                &(&self.w1 * &self.mask1),
                Some(&self.b1),
                [1, 1],
                [0, pad],
                [1, 1],
                1,
            )
            .relu();
        let h2 = h1
            .conv2d(
                &(&self.w2 * &self.mask2),
                Some(&self.b2),
                [1, 1],
                [0, pad],
                [1, 1],
                1,
            )
            .relu();
        let h = h2.squeeze_dims([2]).transpose(1, 2); // [B, C, H]
        (&h + self.w3.forward(&h).relu()).relu()
    }
}

pub struct Stan {
    pub config: StanConfig,
    pub space: FeatureSpace,
    /// Mean and std of the log inter-arrival within a host.
    pub host_iat: (f64, f64),
    pub arrivals: PairArrivals,
    /// Each observed host's last `k` rows and last flow time.
    pub observed: Vec<(IpAddr, Vec<Row>, i64)>,
    pub version: u64,
    device: Device,
    vs: nn::VarStore,
    net: Net,
    opt: Option<nn::Optimizer>,
    rng: rand::rngs::StdRng,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    pub config: StanConfig,
    pub space: FeatureSpace,
    pub host_iat: (f64, f64),
    pub arrivals: PairArrivals,
    pub observed: Vec<(IpAddr, Vec<Row>, i64)>,
    pub version: u64,
}

/// Records grouped by source host, each in time order (hosts in order of first appearance).
fn host_sequences(records: &[FlowRecord]) -> Vec<(IpAddr, Vec<&FlowRecord>)> {
    let mut idx: HashMap<IpAddr, usize> = HashMap::new();
    let mut out: Vec<(IpAddr, Vec<&FlowRecord>)> = Vec::new();
    for r in records {
        let i = *idx.entry(r.src).or_insert_with(|| {
            out.push((r.src, Vec::new()));
            out.len() - 1
        });
        out[i].1.push(r);
    }
    for (_, s) in &mut out {
        s.sort_by_key(|r| r.start_us);
    }
    out
}

impl Stan {
    pub fn new(
        config: StanConfig,
        records: &[FlowRecord],
        device: Device,
    ) -> Result<Stan, ModelError> {
        let space = FeatureSpace::fit(records, 1);
        let (mut s, mut ss, mut n) = (0.0, 0.0, 0.0);
        for (_, seq) in host_sequences(records) {
            for w in seq.windows(2) {
                let v = features::log_iat(w[1].start_us - w[0].start_us);
                s += v;
                ss += v * v;
                n += 1.0;
            }
        }
        let mean = if n > 0.0 { s / n } else { 0.0 };
        let std = if n > 0.0 {
            (ss / n - mean * mean).max(0.0).sqrt().max(0.05)
        } else {
            1.0
        };
        let mut arrivals = PairArrivals::new(7);
        arrivals.fit(records, space.span_us());
        let mut m = Self::from_parts(
            Header {
                config,
                space,
                host_iat: (mean, std),
                arrivals,
                observed: Vec::new(),
                version: 0,
            },
            device,
        );
        m.observed = m.observed_tails(records);
        Ok(m)
    }

    pub(crate) fn from_parts(h: Header, device: Device) -> Stan {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(device);
        let net = Net::new(&vs.root(), &h.config, device);
        Stan {
            config: h.config,
            space: h.space,
            host_iat: h.host_iat,
            arrivals: h.arrivals,
            observed: h.observed,
            version: h.version,
            device,
            vs,
            net,
            opt: None,
            rng: rand::rngs::StdRng::seed_from_u64(0),
        }
    }

    pub(crate) fn load_weights(&mut self, bytes: &[u8]) -> Result<(), ModelError> {
        self.vs.load_from_stream(std::io::Cursor::new(bytes))?;
        Ok(())
    }

    fn iat_z(&self, dt_us: i64) -> f32 {
        ((features::log_iat(dt_us) - self.host_iat.0) / self.host_iat.1) as f32
    }

    fn row(&self, r: &FlowRecord, prev: Option<i64>, rep: &mut RepairCounts) -> Row {
        let e = self.space.encode(r, None, rep);
        let o = dst_octets(r.dst);
        let cls = [
            o[0] as i64,
            o[1] as i64,
            o[2] as i64,
            o[3] as i64,
            e.proto as i64,
            e.dport as i64,
            e.sport as i64,
            e.flags as i64,
        ];
        let iat = prev.map(|p| self.iat_z(r.start_us - p));
        let mut x = vec![0f32; C];
        x[0] = iat.unwrap_or(0.0);
        for (j, (col, n)) in DISCRETE.iter().enumerate() {
            x[*col] = scale(cls[j], *n);
        }
        x[9] = e.packets;
        x[10] = e.bpp;
        x[11] = e.duration.is_none() as u8 as f32;
        x[12] = e.duration.unwrap_or(0.0);
        Row {
            x,
            cls,
            iat,
            pk: e.packets,
            bp: e.bpp,
            dur: e.duration,
        }
    }

    fn observed_tails(&self, records: &[FlowRecord]) -> Vec<(IpAddr, Vec<Row>, i64)> {
        let mut rep = RepairCounts::default();
        host_sequences(records)
            .into_iter()
            .map(|(h, s)| {
                let rows: Vec<Row> = (0..s.len())
                    .map(|i| self.row(s[i], i.checked_sub(1).map(|j| s[j].start_us), &mut rep))
                    .collect();
                let keep = rows.len().saturating_sub(self.config.k);
                (h, rows[keep..].to_vec(), s[s.len() - 1].start_us)
            })
            .collect()
    }

    /// Window tensor `[B, 2, k+1, C]` from (previous rows, current row) pairs.
    fn window_tensor(&self, items: &[(Vec<&Row>, &[f32])]) -> Tensor {
        let k = self.config.k;
        let mut v = vec![0f32; items.len() * 2 * (k + 1) * C];
        for (b, (prev, cur)) in items.iter().enumerate() {
            let base = b * 2 * (k + 1) * C;
            let off = k - prev.len().min(k);
            for (i, r) in prev.iter().rev().take(k).rev().enumerate() {
                let row = off + i;
                v[base + row * C..base + (row + 1) * C].copy_from_slice(&r.x);
                for c in 0..C {
                    v[base + (k + 1) * C + row * C + c] = 1.0;
                }
            }
            v[base + k * C..base + (k + 1) * C].copy_from_slice(cur);
            for c in 0..C {
                v[base + (k + 1) * C + k * C + c] = 1.0;
            }
        }
        Tensor::from_slice(&v)
            .view([items.len() as i64, 2, k as i64 + 1, C as i64])
            .to_device(self.device)
    }

    /// Per-event NLL tensors for the 8 flow tasks plus the address (octets), and the inter-arrival mask.
    fn losses(&self, items: &[(Vec<&Row>, &Row)]) -> (Vec<Tensor>, Tensor) {
        let d = self.device;
        let x = self.window_tensor(
            &items
                .iter()
                .map(|(p, r)| (p.clone(), r.x.as_slice()))
                .collect::<Vec<_>>(),
        );
        let h = self.net.features(&x);
        let col = |c: usize| self.net.heads[c].forward(&h.select(1, c as i64));
        let k = self.config.mixtures;
        let lf = |f: &dyn Fn(&Row) -> f32| {
            Tensor::from_slice(&items.iter().map(|(_, r)| f(r)).collect::<Vec<_>>()).to_device(d)
        };
        let ce = |c: usize, j: usize| {
            let y = Tensor::from_slice(&items.iter().map(|(_, r)| r.cls[j]).collect::<Vec<_>>())
                .to_device(d);
            -col(c)
                .log_softmax(1, Kind::Float)
                .gather(1, &y.unsqueeze(1), false)
                .squeeze_dims([1])
        };
        let has = lf(&|r| r.iat.is_some() as u8 as f32);
        let iat = (mixture::nll(&col(0), &lf(&|r| r.iat.unwrap_or(0.0)), k) + self.host_iat.1.ln())
            * &has;
        let addr = ce(1, 0) + ce(2, 1) + ce(3, 2) + ce(4, 3);
        let pk = mixture::nll(&col(9), &lf(&|r| r.pk), k) + self.space.norm.std[cont::PACKETS].ln();
        let bp = mixture::nll(&col(10), &lf(&|r| r.bp), k) + self.space.norm.std[cont::BPP].ln();
        let dz = lf(&|r| r.dur.is_none() as u8 as f32);
        let l0 = col(11).squeeze_dims([1]);
        let nz = -(-&l0).log_sigmoid()
            + mixture::nll(&col(12), &lf(&|r| r.dur.unwrap_or(0.0)), k)
            + self.space.norm.std[cont::DURATION].ln();
        let du = -l0.log_sigmoid() * &dz + nz * (1.0 - &dz);
        (
            vec![
                iat,
                ce(5, 4),
                ce(6, 5),
                ce(7, 6),
                ce(8, 7),
                pk,
                bp,
                du,
                addr,
            ],
            has,
        )
    }

    fn summarise(ls: &[Tensor], has: &Tensor) -> TaskNll {
        let mut out = TaskNll::default();
        let n = has.size()[0] as u64;
        for (i, l) in ls.iter().enumerate() {
            out.sum[i] = l.sum(Kind::Double).double_value(&[]);
            out.count[i] = if i == task::IAT {
                has.sum(Kind::Double).double_value(&[]).round() as u64
            } else {
                n
            };
        }
        out
    }

    fn step(&mut self, items: &[(Vec<&Row>, &Row)]) -> Result<TaskNll, ModelError> {
        if items.is_empty() {
            return Ok(TaskNll::default());
        }
        let targets: Vec<Row> = items
            .iter()
            .map(|(_, r)| {
                let mut r = (*r).clone();
                r.pk = self.space.norm.dequantise_packets(r.pk, self.rng.r#gen());
                r
            })
            .collect();
        let items: Vec<(Vec<&Row>, &Row)> = items
            .iter()
            .zip(&targets)
            .map(|((p, _), t)| (p.clone(), t))
            .collect();
        let (ls, has) = self.losses(&items);
        let mut loss = Tensor::zeros([], (Kind::Float, self.device));
        for (i, l) in ls.iter().enumerate() {
            let cnt = if i == task::IAT {
                has.sum(Kind::Float).clamp_min(1.0)
            } else {
                Tensor::from(items.len() as f32).to_device(self.device)
            };
            loss += l.sum(Kind::Float) / cnt;
        }
        if self.opt.is_none() {
            self.opt = Some(nn::Adam::default().build(&self.vs, self.config.lr)?);
        }
        self.opt
            .as_mut()
            .expect("built")
            .backward_step_clip_norm(&loss, 1.0);
        Ok(tch::no_grad(|| Self::summarise(&ls, &has)))
    }

    /// Rows of windows: each window's events are rows of its source host.
    fn window_rows(&self, windows: &[PairWindow]) -> Vec<(Vec<Row>, Vec<bool>)> {
        let mut rep = RepairCounts::default();
        windows
            .iter()
            .map(|w| {
                let rows = (0..w.events.len())
                    .map(|i| {
                        let prev = if i > 0 {
                            Some(w.events[i - 1].start_us)
                        } else if w.starts_pair {
                            None
                        } else {
                            w.prev_start_us
                        };
                        self.row(&w.events[i], prev, &mut rep)
                    })
                    .collect();
                (rows, w.score.clone())
            })
            .collect()
    }

    fn items<'a>(&self, seqs: &'a [(Vec<Row>, Vec<bool>)]) -> Vec<(Vec<&'a Row>, &'a Row)> {
        let k = self.config.k;
        let mut out = Vec::new();
        for (rows, score) in seqs {
            for i in 0..rows.len() {
                if score[i] {
                    out.push((rows[i.saturating_sub(k)..i].iter().collect(), &rows[i]));
                }
            }
        }
        out
    }

    fn nll_seqs(&self, seqs: &[(Vec<Row>, Vec<bool>)]) -> TaskNll {
        let items = self.items(seqs);
        let mut out = TaskNll::default();
        for chunk in items.chunks(1024) {
            out.merge(&tch::no_grad(|| {
                let (ls, has) = self.losses(chunk);
                Self::summarise(&ls, &has)
            }));
        }
        out
    }
}

/// A host's rows, which of them are scored, and its last flow time.
type HostRows = (Vec<Row>, Vec<bool>, Option<i64>);

/// One generated host's state (its head, with the host and random stream, is in [`Lanes::heads`]).
pub(crate) struct LaneState {
    rows: Vec<Row>,
    last_us: Option<i64>,
    arrival: Option<i64>,
    phase_from: Option<i64>,
}

impl Stan {
    /// Draws one row (flow) for each lane of `idx`, column by column, leaving it in the lane's head.
    fn gen_rows(&self, lanes: &mut Lanes, idx: &[usize]) {
        let a = idx.len();
        // Padded batch (see `MIN_GEN_ROWS`): rows `a..m` repeat row 0 and are ignored.
        let m = a.max(MIN_GEN_ROWS);
        let k = self.config.mixtures as usize;
        let norm = &self.space.norm;
        let Lanes {
            heads,
            states,
            repairs: rep,
        } = lanes;
        let st = match states {
            LaneStates::Stan(v) => v,
            _ => unreachable!("a session checks its model kind before every call"),
        };
        let mut rngs: Vec<LaneRng> = idx.iter().map(|&i| heads[i].rng.clone()).collect();
        let mut cur = vec![vec![0f32; C]; a];
        let mut cls = vec![[0i64; 8]; a];
        let mut vals = vec![[0f64; C]; a];
        let mut times = vec![0i64; a];
        let mut packets = vec![1u64; a];
        let mut bytes = vec![0u64; a];
        let zl = |i: usize, v: f64| (v - norm.mean[i]) / norm.std[i];
        for c in 0..C {
            let items: Vec<(Vec<&Row>, &[f32])> = (0..m)
                .map(|j| {
                    let j = if j < a { j } else { 0 };
                    (st[idx[j]].rows.iter().collect(), cur[j].as_slice())
                })
                .collect();
            let o = self.net.heads[c].forward(
                &self
                    .net
                    .features(&self.window_tensor(&items))
                    .select(1, c as i64),
            );
            match c {
                0 | 9 | 10 | 12 => {
                    let (w, mu, sg) = mixture::to_cpu(&o, k as i64);
                    for (j, &i) in idx.iter().enumerate() {
                        let l = &st[i];
                        let rng = &mut rngs[j];
                        let (lo, hi) = match c {
                            0 => {
                                let hi = (decode::TIME_LOG_MAX - self.host_iat.0) / self.host_iat.1;
                                // A twin joined after its host's last flow: the gap must reach the clock.
                                let last = l.last_us.unwrap_or(0);
                                let nb = heads[i].not_before;
                                let lo = if l.phase_from.is_none() && nb > last {
                                    self.iat_z(nb - last) as f64
                                } else {
                                    f64::NEG_INFINITY
                                };
                                (lo.min(hi), hi)
                            }
                            9 => (
                                zl(cont::PACKETS, decode::PACKETS_LOG.0),
                                zl(cont::PACKETS, decode::PACKETS_LOG.1),
                            ),
                            10 => {
                                let (l, h) = decode::bpp_log(cls[j][4] as u8);
                                (zl(cont::BPP, l), zl(cont::BPP, h))
                            }
                            _ => (
                                f64::NEG_INFINITY,
                                zl(cont::DURATION, norm.upper(cont::DURATION)),
                            ),
                        };
                        let skip = (c == 0 && l.arrival.is_some()) || (c == 12 && cur[j][11] > 0.5);
                        let z = if skip {
                            0.0
                        } else {
                            sample_truncated_mixture(
                                &w[j * k..(j + 1) * k],
                                &mu[j * k..(j + 1) * k],
                                &sg[j * k..(j + 1) * k],
                                lo,
                                hi,
                                rng,
                                rep,
                            )
                        };
                        vals[j][c] = z;
                        cur[j][c] = z as f32;
                        match c {
                            0 => {
                                let dt = || decode::iat_us(z * self.host_iat.1 + self.host_iat.0);
                                times[j] = match (l.arrival, l.phase_from) {
                                    (Some(t), _) => t,
                                    (None, Some(s)) => {
                                        s + (dt() as f64 * rng.r#gen::<f64>()) as i64
                                    }
                                    (None, None) => {
                                        (l.last_us.unwrap_or(0) + dt()).max(heads[i].not_before)
                                    }
                                };
                            }
                            9 => {
                                packets[j] = decode::packets(norm.unz(cont::PACKETS, z));
                                cur[j][9] =
                                    norm.z(cont::PACKETS, features::log_packets(packets[j]));
                            }
                            10 => {
                                let (b, cl) = decode::bytes(
                                    norm.unz(cont::BPP, z),
                                    packets[j],
                                    cls[j][4] as u8,
                                );
                                rep.sample_clamped += cl as u64;
                                bytes[j] = b;
                                cur[j][10] = norm.z(
                                    cont::BPP,
                                    features::log_bpp(b, packets[j], cls[j][4] as u8),
                                );
                            }
                            _ => {}
                        }
                    }
                }
                11 => {
                    let p0 =
                        Vec::<f32>::try_from(o.squeeze_dims([1]).sigmoid().to_device(Device::Cpu))
                            .unwrap_or_default();
                    for j in 0..a {
                        let forced = packets[j] == 1 && !self.space.single_packet_duration;
                        let zero = forced || rngs[j].r#gen::<f32>() < p0[j];
                        cur[j][11] = zero as u8 as f32;
                    }
                }
                _ => {
                    let (slot, n) = DISCRETE
                        .iter()
                        .enumerate()
                        .find(|(_, (col, _))| *col == c)
                        .map(|(s, (_, n))| (s, *n))
                        .expect("discrete column");
                    let pr = Vec::<f32>::try_from(
                        o.softmax(1, Kind::Float)
                            .to_device(Device::Cpu)
                            .contiguous()
                            .view([-1]),
                    )
                    .unwrap_or_default();
                    for j in 0..a {
                        let p = cls[j][4] as u8;
                        let forced = match c {
                            6 | 7 => !proto::has_ports(p),
                            8 => p != proto::TCP,
                            _ => false,
                        };
                        let v = if forced {
                            0
                        } else {
                            sample_masked(&pr[j * n..(j + 1) * n], |_| true, &mut rngs[j], rep)
                                as i64
                        };
                        cls[j][slot] = v;
                        cur[j][c] = scale(v, n);
                    }
                }
            }
        }
        for (j, &i) in idx.iter().enumerate() {
            let rng = &mut rngs[j];
            let c = &cls[j];
            let p = c[4] as u8;
            let ports = proto::has_ports(p);
            let duration_us = if cur[j][11] > 0.5 {
                0
            } else {
                decode::duration_us(norm.unz(cont::DURATION, vals[j][12]))
            };
            let head = &mut heads[i];
            let r = FlowRecord {
                start_us: times[j],
                duration_us,
                src: head.pair.src,
                dst: IpAddr::V4(Ipv4Addr::new(
                    c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8,
                )),
                src_port: if ports {
                    features::port_from_class(c[6] as u16, rng)
                } else {
                    0
                },
                dst_port: if ports {
                    features::port_from_class(c[5] as u16, rng)
                } else {
                    0
                },
                proto: p,
                flags: TcpFlags(c[7] as u8),
                packets: packets[j],
                bytes: bytes[j],
                label: None,
            };
            let lane = &mut st[i];
            let row = self.row(&r, lane.last_us.filter(|_| lane.arrival.is_none()), rep);
            lane.rows.push(row);
            if lane.rows.len() > self.config.k {
                lane.rows.remove(0);
            }
            lane.last_us = Some(r.start_us);
            lane.arrival = None;
            lane.phase_from = None;
            head.rng = rng.clone();
            head.next = Some(r);
        }
    }
}

impl FlowModel for Stan {
    fn kind(&self) -> ModelKind {
        ModelKind::Stan
    }
    fn space(&self) -> &FeatureSpace {
        &self.space
    }
    fn fit(
        &mut self,
        records: &[FlowRecord],
        opts: &FitOptions,
        progress: &mut dyn FnMut(&FitProgress),
    ) -> Result<(), ModelError> {
        self.observed = self.observed_tails(records);
        self.rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
        tch::manual_seed(opts.seed as i64);
        let m = features::Marginals::fit(&self.space, records);
        let h = &self.net.heads;
        for k in 0..4 {
            features::set_bias(&h[1 + k], &features::Marginals::log_freq(&m.octets[k]));
        }
        features::set_bias(&h[5], &features::Marginals::log_freq(&m.proto));
        features::set_bias(&h[6], &features::Marginals::log_freq(&m.dport));
        features::set_bias(&h[7], &features::Marginals::log_freq(&m.sport));
        features::set_bias(&h[8], &features::Marginals::log_freq(&m.flags));
        features::set_bias(&h[11], &[m.zero_logit()]);
        let mut rep = RepairCounts::default();
        let seqs: Vec<(Vec<Row>, Vec<bool>)> = host_sequences(records)
            .into_iter()
            .map(|(_, s)| {
                let rows: Vec<Row> = (0..s.len())
                    .map(|i| self.row(s[i], i.checked_sub(1).map(|j| s[j].start_us), &mut rep))
                    .collect();
                let n = rows.len();
                (rows, vec![true; n])
            })
            .collect();
        let items = self.items(&seqs);
        let mut order: Vec<usize> = (0..items.len()).collect();
        let bs = self.config.batch.max(1);
        let batches = items.len().div_ceil(bs);
        for epoch in 0..opts.epochs {
            order.shuffle(&mut self.rng);
            for (bi, chunk) in order.chunks(bs).enumerate() {
                // Linear decay to a tenth of the rate over the fit: the last iterates settle instead of jittering.
                let done = (epoch * batches + bi) as f64 / (opts.epochs * batches).max(1) as f64;
                if let Some(o) = self.opt.as_mut() {
                    o.set_lr(self.config.lr * (1.0 - 0.9 * done));
                }
                let batch: Vec<(Vec<&Row>, &Row)> =
                    chunk.iter().map(|&i| items[i].clone()).collect();
                let nll = self.step(&batch)?;
                self.version += 1;
                progress(&FitProgress {
                    epoch: epoch + 1,
                    epochs: opts.epochs,
                    batch: bi + 1,
                    batches,
                    batch_nll: nll,
                });
            }
        }
        Ok(())
    }
    fn train_batch(&mut self, windows: &[PairWindow]) -> Result<TaskNll, ModelError> {
        let seqs = self.window_rows(windows);
        let items = self.items(&seqs);
        self.step(&items)
    }
    fn windows_nll(&self, windows: &[PairWindow]) -> Result<TaskNll, ModelError> {
        Ok(self.nll_seqs(&self.window_rows(windows)))
    }
    fn event_losses(&self, windows: &[PairWindow]) -> Result<Vec<f32>, ModelError> {
        let seqs = self.window_rows(windows);
        let items = self.items(&seqs);
        let mut v = Vec::new();
        for chunk in items.chunks(1024) {
            tch::no_grad(|| {
                let (ls, _) = self.losses(chunk);
                let mut s = ls[0].shallow_clone();
                for t in &ls[1..] {
                    s += t;
                }
                v.extend(Vec::<f32>::try_from(s.to_device(Device::Cpu)).unwrap_or_default());
            });
        }
        Ok(v)
    }
    fn heldout_nll(
        &self,
        context: &[FlowRecord],
        heldout: &[FlowRecord],
    ) -> Result<TaskNll, ModelError> {
        let mut all: Vec<(usize, &FlowRecord)> =
            context.iter().chain(heldout).enumerate().collect();
        all.sort_by_key(|(_, r)| r.start_us);
        let mut rep = RepairCounts::default();
        let mut by_host: HashMap<IpAddr, HostRows> = HashMap::new();
        for (i, r) in all {
            let e = by_host.entry(r.src).or_default();
            let row = self.row(r, e.2, &mut rep);
            e.0.push(row);
            e.1.push(i >= context.len());
            e.2 = Some(r.start_us);
        }
        let seqs: Vec<(Vec<Row>, Vec<bool>)> =
            by_host.into_values().map(|(r, s, _)| (r, s)).collect();
        Ok(self.nll_seqs(&seqs))
    }
    fn new_lanes(&self) -> Lanes {
        Lanes::new(LaneStates::Stan(Vec::new()))
    }
    /// One lane per observed source host (the destination is left unspecified: STAN draws it per flow).
    fn observed_pairs(&self) -> Vec<HostPair> {
        self.observed
            .iter()
            .map(|o| HostPair {
                src: o.0,
                dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            })
            .collect()
    }
    fn start_lane(&self, lanes: &mut Lanes, i: usize, from: &LaneStart) -> Result<(), ModelError> {
        let nb = lanes.heads[i].not_before;
        let mut scratch = RepairCounts::default();
        let s = match from {
            LaneStart::Continue {
                last,
                prev_start_us,
                phase,
            } => LaneState {
                rows: vec![self.row(last, *prev_start_us, &mut scratch)],
                last_us: Some(if *phase { nb } else { last.start_us }),
                arrival: None,
                phase_from: phase.then_some(nb),
            },
            LaneStart::Observed(k) => LaneState {
                rows: self.observed[*k].1.clone(),
                last_us: Some(nb),
                arrival: None,
                phase_from: Some(nb),
            },
            LaneStart::New { at } => LaneState {
                rows: Vec::new(),
                last_us: None,
                arrival: Some(*at),
                phase_from: None,
            },
        };
        let v = match &mut lanes.states {
            LaneStates::Stan(v) => v,
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
        for chunk in active.chunks(self.config.gen_batch.max(1)) {
            tch::no_grad(|| self.gen_rows(lanes, chunk));
        }
        Ok(())
    }
    fn pair_arrivals(&self) -> &PairArrivals {
        &self.arrivals
    }
    fn params(&self) -> Vec<f32> {
        super::temponet::flat_params(&self.vs)
    }
    fn set_params(&mut self, flat: &[f32]) -> Result<(), ModelError> {
        super::temponet::set_flat_params(&self.vs, flat)
    }
    fn base_learning_rate(&self) -> f64 {
        self.config.lr
    }
    fn set_learning_rate(&mut self, lr: f64) -> Result<(), ModelError> {
        super::set_adam_lr(&mut self.opt, &self.vs, lr)
    }
    fn version(&self) -> u64 {
        self.version
    }
    fn set_version(&mut self, v: u64) {
        self.version = v;
    }
    fn header(&self) -> serde_json::Value {
        serde_json::json!({
            "config": self.config,
            "space": self.space,
            "host_iat": self.host_iat,
            "arrivals": self.arrivals,
            "observed": self.observed,
            "version": self.version,
        })
    }
    fn weights(&self) -> Result<Vec<u8>, ModelError> {
        let mut v = Vec::new();
        self.vs.save_to_stream(&mut v)?;
        Ok(v)
    }
}
