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
//! (binary), 12 duration (continuous), 13 session position (input only: `ln(1 + min(pos, 63)) / ln 64` of the
//! flows of the host's session before this one, a function of column 0 and the earlier rows), 14 silence mark
//! (binary: the host's next flow is more than the silence threshold away; last, so it sees the whole row).
//! Discrete inputs are scaled indices in `[-1, 1]`. The position gives the silence mark its main covariate
//! directly (see the TempoNet silence head).
//!
//! STAN's lanes are source hosts, so its silence mark is the host's (a host goes silent when none of its pairs
//! sends): its `silence` NLL is not comparable with the per-pair mark of the other models.

use super::compliance::{
    RepairCounts, mixture_mass, sample_masked, sample_truncated_mixture, silence_posterior,
};
use super::features::{self, FeatureSpace, N_PORT_CLASSES, cont, decode, task};
use super::pair_arrival::PairArrivals;
use super::session::{LaneRng, LaneStart, LaneStates, Lanes, MIN_GEN_ROWS, ObservedLane};
use super::{
    FitOptions, FitProgress, FlowModel, ModelError, ModelKind, PairWindow, TaskNll, mixture,
};
use crate::record::{FlowRecord, HostPair, TcpFlags, proto};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// STAN's parameters that are tables of rows updated by rows (see `adam`): none, the convolution and the heads are
/// dense.
fn is_table(_name: &str) -> bool {
    false
}

const C: usize = 15;
/// The session position's column (input only: no head is trained or sampled for it).
const POS_COL: usize = 13;
/// The silence mark's column.
const SILENCE_COL: usize = 14;
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
    /// The silence mark after this row, when known.
    pub silence: Option<bool>,
    /// Flows of the host's session before this row.
    pub session_pos: u32,
}

/// Input value of a session position (see the module doc).
fn position_value(pos: u32) -> f32 {
    (1.0 + pos.min(63) as f32).ln() / 64f32.ln()
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
            1,
            1,
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

/// [`Net::features`] evaluated one current-row column at a time, for sampling: column `c` of the output depends
/// only on the previous rows and on the current row's columns `< c` (the masks), so the first layer's part from
/// the previous rows (and the current row's presence flags) is one convolution per drawn row, and each column
/// then adds what the drawn values before it contribute and runs the second layer for that column alone.
///
/// Running the full network for every column instead (15 columns, each a convolution over the whole window
/// that computed all 15 output columns to keep one) made STAN generation a few hundred flows per second. The
/// result is the same function (sums in another order: the last bits may differ from [`Net::features`]).
struct ColumnFeatures {
    /// First-layer pre-activations `[B, H, C]` without the current row's values.
    base: Tensor,
    /// First-layer activations of the columns done so far, `[B, C, H]` (the rest not yet written).
    h1: Tensor,
    /// First-layer weights on the current row's values, `[H, 2C - 1]` (kernel columns).
    w1_cur: Tensor,
    /// Second-layer weights as `[H_out, 2C - 1, H_in]`.
    w2: Tensor,
}

impl Net {
    /// Starts [`ColumnFeatures`] from windows `[B, 2, k+1, C]` whose current row has its presence flags set and
    /// its values zero.
    fn column_features(&self, x: &Tensor) -> ColumnFeatures {
        let pad = C as i64 - 1;
        let w1 = &self.w1 * &self.mask1;
        let base = x
            .conv2d(&w1, Some(&self.b1), [1, 1], [0, pad], [1, 1], 1)
            .squeeze_dims([2]);
        let (b, h) = (base.size()[0], base.size()[1]);
        let k = w1.size()[2] - 1;
        ColumnFeatures {
            h1: Tensor::zeros([b, C as i64, h], (Kind::Float, x.device())),
            base,
            w1_cur: w1.select(1, 0).select(1, k),
            w2: (&self.w2 * &self.mask2)
                .squeeze_dims([2])
                .permute([0, 2, 1])
                .contiguous(),
        }
    }

    /// Adds column `c` to the first layer; `cur` `[B, C]` holds the current row's values of columns `< c` (later
    /// ones are not read). Columns must come in order.
    fn column_first_layer(&self, f: &mut ColumnFeatures, cur: &Tensor, c: usize) {
        let base = f.base.select(2, c as i64);
        let pre = if c > 0 {
            // Kernel column `j` covers input column `c + j - (C - 1)`: columns `0..c` are kernel columns
            // `C - 1 - c .. C - 1`.
            let w = f.w1_cur.narrow(1, (C - 1 - c) as i64, c as i64);
            base + cur.narrow(1, 0, c as i64).matmul(&w.tr())
        } else {
            base
        };
        f.h1.select(1, c as i64).copy_(&pre.relu());
    }

    /// Hidden features `[B, H]` of column `c` (its first layer and all before it added).
    fn column_output(&self, f: &ColumnFeatures, c: usize) -> Tensor {
        let (b, h) = (f.h1.size()[0], f.h1.size()[2]);
        // Columns `0..=c` (mask B) are kernel columns `C - 1 - c ..= C - 1`.
        let x =
            f.h1.narrow(1, 0, c as i64 + 1)
                .reshape([b, (c as i64 + 1) * h]);
        let w =
            f.w2.narrow(1, (C - 1 - c) as i64, c as i64 + 1)
                .reshape([h, (c as i64 + 1) * h]);
        let h2 = x.linear(&w, Some(&self.b2)).relu();
        (&h2 + self.w3.forward(&h2).relu()).relu()
    }
}

pub struct Stan {
    pub config: StanConfig,
    pub space: FeatureSpace,
    /// Mean and std of the log inter-arrival within a host.
    pub host_iat: (f64, f64),
    pub arrivals: PairArrivals,
    /// Each observed host's last `k` rows, last flow time and sessions.
    pub observed: Vec<ObservedHost>,
    pub version: u64,
    device: Device,
    vs: nn::VarStore,
    net: Net,
    opt: Option<super::adam::Adam>,
    rng: rand::rngs::StdRng,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    pub config: StanConfig,
    pub space: FeatureSpace,
    pub host_iat: (f64, f64),
    pub arrivals: PairArrivals,
    pub observed: Vec<ObservedHost>,
    pub version: u64,
}

/// A source host seen in training: where generation continues it from, and how often it starts sessions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ObservedHost {
    pub host: IpAddr,
    /// Its last `k` rows.
    pub rows: Vec<Row>,
    pub last_us: i64,
    pub sessions: u32,
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
        arrivals.fit(records, space.silence_us);
        // STAN's lanes are hosts: sessions and their rate are the hosts'.
        arrivals.fit_sessions(
            &Self::host_starts(records),
            space.silence_us,
            space.first_us,
            space.last_us,
            false,
        );
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

    /// Largest inter-arrival input: the longest gap of the training data. A longer one (a host back after a silence
    /// longer than any it had) is fed as that: the network has seen nothing like it, and on regular data, whose
    /// gaps have a tiny spread, a day-long gap was hundreds of standard deviations out and derailed the row.
    fn iat_z_max(&self) -> f32 {
        ((self.space.norm.max[cont::IAT] - self.host_iat.0) / self.host_iat.1) as f32
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
        x[0] = iat.map_or(0.0, |z| z.min(self.iat_z_max()));
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
            silence: None,
            session_pos: 0,
        }
    }

    /// Sets a row's session position.
    /// A twin's history: the row of its real flow `last`, placed in its session as far as one earlier flow tells.
    fn twin_rows(
        &self,
        last: &FlowRecord,
        prev_start_us: Option<i64>,
        rep: &mut RepairCounts,
    ) -> Vec<Row> {
        let mut r = self.row(last, prev_start_us, rep);
        Self::place(
            &mut r,
            super::session::twin_history_pos(last, prev_start_us, self.space.silence_us),
        );
        vec![r]
    }

    fn place(row: &mut Row, pos: u32) {
        row.session_pos = pos;
        row.x[POS_COL] = position_value(pos);
    }

    /// Sets a row's silence mark (its input value is 1 only for a known silence).
    fn mark(row: &mut Row, silence: Option<bool>) {
        row.silence = silence;
        row.x[SILENCE_COL] = (silence == Some(true)) as u8 as f32;
    }

    /// Rows of one host's time-sorted flows, with their silence marks in data ending at `data_end_us`.
    fn host_rows(&self, seq: &[&FlowRecord], data_end_us: i64, rep: &mut RepairCounts) -> Vec<Row> {
        let starts: Vec<i64> = seq.iter().map(|r| r.start_us).collect();
        let pos = features::sessions::positions(&starts, 0, self.space.silence_us);
        (0..seq.len())
            .map(|i| {
                let mut row = self.row(seq[i], i.checked_sub(1).map(|j| starts[j]), rep);
                let m =
                    features::sessions::ended_after(&starts, i, self.space.silence_us, data_end_us);
                Self::mark(&mut row, m);
                Self::place(&mut row, pos[i]);
                row
            })
            .collect()
    }

    fn observed_tails(&self, records: &[FlowRecord]) -> Vec<ObservedHost> {
        let mut rep = RepairCounts::default();
        let end = records.iter().map(|r| r.start_us).max().unwrap_or(0);
        host_sequences(records)
            .into_iter()
            .map(|(host, s)| {
                let mut rows = self.host_rows(&s, end, &mut rep);
                let keep = rows.len().saturating_sub(self.config.k);
                // The last row's mark is what generation decides: it goes in as "not silent".
                if let Some(r) = rows.last_mut() {
                    Self::mark(r, None);
                }
                let starts: Vec<i64> = s.iter().map(|r| r.start_us).collect();
                ObservedHost {
                    host,
                    rows: rows[keep..].to_vec(),
                    last_us: s[s.len() - 1].start_us,
                    sessions: features::sessions::starts(&starts, self.space.silence_us).count()
                        as u32,
                }
            })
            .collect()
    }

    /// Time-sorted flow starts of every source host, keyed as its lane (the lanes' session statistics).
    fn host_starts(records: &[FlowRecord]) -> Vec<(HostPair, Vec<i64>)> {
        host_sequences(records)
            .into_iter()
            .map(|(h, s)| {
                (
                    HostPair {
                        src: h,
                        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    },
                    s.iter().map(|r| r.start_us).collect(),
                )
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

    /// Per-event NLL tensors for the 8 flow tasks, the address (octets) and the silence mark (task order), and the
    /// masks of the inter-arrival and the silence mark (`[2, N]`).
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
        // Packets are counts: each has the probability of its bin (exact, and comparable with TempoNet's count
        // head; a density at one point of the bin is not a probability).
        let norm = &self.space.norm;
        let (pk_lo, pk_hi): (Vec<f32>, Vec<f32>) = items
            .iter()
            .map(|(_, r)| norm.packets_bin(norm.packets_of(r.pk)))
            .unzip();
        let pk = mixture::interval_nll(
            &col(9),
            &Tensor::from_slice(&pk_lo).to_device(d),
            &Tensor::from_slice(&pk_hi).to_device(d),
            k,
        );
        let bp = mixture::nll(&col(10), &lf(&|r| r.bp), k) + self.space.norm.std[cont::BPP].ln();
        let dz = lf(&|r| r.dur.is_none() as u8 as f32);
        let l0 = col(11).squeeze_dims([1]);
        let nz = -(-&l0).log_sigmoid()
            + mixture::nll(&col(12), &lf(&|r| r.dur.unwrap_or(0.0)), k)
            + self.space.norm.std[cont::DURATION].ln();
        let du = -l0.log_sigmoid() * &dz + nz * (1.0 - &dz);
        let has_mark = lf(&|r| r.silence.is_some() as u8 as f32);
        let ended = lf(&|r| (r.silence == Some(true)) as u8 as f32);
        let ls = col(SILENCE_COL).squeeze_dims([1]);
        let si = (-ls.log_sigmoid() * &ended - (-&ls).log_sigmoid() * (1.0 - &ended)) * &has_mark;
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
                si,
            ],
            Tensor::stack(&[has, has_mark], 0),
        )
    }

    /// Task sums; `masks` is `[2, N]`: which rows have an inter-arrival, which a silence mark.
    fn summarise(ls: &[Tensor], masks: &Tensor) -> TaskNll {
        let mut out = TaskNll::default();
        let n = masks.size()[1] as u64;
        for (i, l) in ls.iter().enumerate() {
            out.sum[i] = l.sum(Kind::Double).double_value(&[]);
            out.count[i] = match i {
                task::IAT => masks.get(0).sum(Kind::Double).double_value(&[]).round() as u64,
                task::SILENCE => masks.get(1).sum(Kind::Double).double_value(&[]).round() as u64,
                _ => n,
            };
        }
        out
    }

    fn step(&mut self, items: &[(Vec<&Row>, &Row)]) -> Result<TaskNll, ModelError> {
        if items.is_empty() {
            return Ok(TaskNll::default());
        }
        let (ls, has) = self.losses(items);
        let mut loss = Tensor::zeros([], (Kind::Float, self.device));
        for (i, l) in ls.iter().enumerate() {
            let cnt = match i {
                task::IAT => has.get(0).sum(Kind::Float).clamp_min(1.0),
                task::SILENCE => has.get(1).sum(Kind::Float).clamp_min(1.0),
                _ => Tensor::from(items.len() as f32).to_device(self.device),
            };
            loss += l.sum(Kind::Float) / cnt;
        }
        super::adam_of(&mut self.opt, &self.vs, is_table, self.config.lr)
            .backward_step_clip_norm(&loss, 1.0);
        Ok(tch::no_grad(|| Self::summarise(&ls, &has)))
    }

    /// Rows of windows: each window's events are rows of its source host.
    fn window_rows<'w>(
        &self,
        windows: impl IntoIterator<Item = &'w PairWindow>,
    ) -> Vec<(Vec<Row>, Vec<bool>)> {
        let mut rep = RepairCounts::default();
        windows
            .into_iter()
            .map(|w| {
                // A window is one pair's: its marks and positions are the pair's (STAN's own training uses the
                // host's).
                let pos = features::sessions::positions(
                    &w.events.iter().map(|r| r.start_us).collect::<Vec<_>>(),
                    w.session_pos,
                    self.space.silence_us,
                );
                let rows = (0..w.events.len())
                    .map(|i| {
                        let prev = if i > 0 {
                            Some(w.events[i - 1].start_us)
                        } else if w.starts_pair {
                            None
                        } else {
                            w.prev_start_us
                        };
                        let mut row = self.row(&w.events[i], prev, &mut rep);
                        Self::mark(&mut row, w.ended_after(i, self.space.silence_us));
                        Self::place(&mut row, pos[i]);
                        row
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

/// A host's rows, which of them are scored, and their start times.
type HostRows = (Vec<Row>, Vec<bool>, Vec<i64>);

/// One generated host's state (its head, with the host and random stream, is in [`Lanes::heads`]).
pub(crate) struct LaneState {
    rows: Vec<Row>,
    last_us: Option<i64>,
    arrival: Option<i64>,
    /// The last row's silence mark fired: the lane ends instead of drawing another row.
    stop: bool,
    /// The last row came from real data and its silence mark is still to be decided (with the quiet time since,
    /// see `LaneStart`): the mark's probability, filled in by `step_lanes` before the row is drawn.
    unresolved: bool,
    p_last: Option<f64>,
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
        let mut ends = vec![false; a];
        let zl = |i: usize, v: f64| (v - norm.mean[i]) / norm.std[i];
        // The windows once per row, current values zero (see `ColumnFeatures`); padding rows repeat row 0.
        let empty = [0f32; C];
        let items: Vec<(Vec<&Row>, &[f32])> = (0..m)
            .map(|j| {
                let j = if j < a { j } else { 0 };
                (st[idx[j]].rows.iter().collect(), empty.as_slice())
            })
            .collect();
        let mut feats = self.net.column_features(&self.window_tensor(&items));
        for c in 0..C {
            let mut v = Vec::with_capacity(m * C);
            for j in 0..m {
                v.extend_from_slice(&cur[if j < a { j } else { 0 }]);
            }
            let cur_t = Tensor::from_slice(&v)
                .view([m as i64, C as i64])
                .to_device(self.device);
            self.net.column_first_layer(&mut feats, &cur_t, c);
            if c == POS_COL {
                // A new session starts at 0; going on is one more flow of the last row's session.
                for (j, &i) in idx.iter().enumerate() {
                    let l = &st[i];
                    let pos = match (l.arrival, l.rows.last()) {
                        (None, Some(r)) => r.session_pos + 1,
                        _ => 0,
                    };
                    cur[j][c] = position_value(pos);
                }
                continue;
            }
            let o = self.net.heads[c].forward(&self.net.column_output(&feats, c));
            match c {
                0 | 9 | 10 | 12 => {
                    let (w, mu, sg) = mixture::to_cpu(&o, k as i64);
                    for (j, &i) in idx.iter().enumerate() {
                        let l = &st[i];
                        let rng = &mut rngs[j];
                        let (lo, hi) = match c {
                            0 => {
                                // Going on means the next flow comes within the silence threshold; a host
                                // quiet since its last real flow draws a gap reaching `not_before`.
                                let hi = ((decode::TIME_LOG_MAX - self.host_iat.0)
                                    / self.host_iat.1)
                                    .min(self.iat_z(self.space.silence_us) as f64);
                                let quiet = heads[i].not_before - l.last_us.unwrap_or(0);
                                let lo = if quiet > 0 && l.arrival.is_none() {
                                    self.iat_z(quiet) as f64
                                } else {
                                    f64::NEG_INFINITY
                                };
                                if let Some(p) = l.p_last {
                                    let (wj, mj, sj) = (
                                        &w[j * k..(j + 1) * k],
                                        &mu[j * k..(j + 1) * k],
                                        &sg[j * k..(j + 1) * k],
                                    );
                                    let all = mixture_mass(wj, mj, sj, f64::NEG_INFINITY, hi);
                                    let q = if all > 0.0 {
                                        mixture_mass(wj, mj, sj, lo.min(hi), hi) / all
                                    } else {
                                        0.0
                                    };
                                    ends[j] = rng.r#gen::<f64>() < silence_posterior(p, q);
                                }
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
                            // A host back after a silence: the gap since its last flow, as in training.
                            match (c, l.arrival, l.last_us) {
                                (0, Some(t), Some(lt)) => {
                                    self.iat_z(t - lt).min(self.iat_z_max()) as f64
                                }
                                _ => 0.0,
                            }
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
                                let dt = decode::iat_us(z * self.host_iat.1 + self.host_iat.0);
                                times[j] = match l.arrival {
                                    Some(t) => t,
                                    None => (l.last_us.unwrap_or(0) + dt).max(heads[i].not_before),
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
                SILENCE_COL => {
                    let p =
                        Vec::<f32>::try_from(o.squeeze_dims([1]).sigmoid().to_device(Device::Cpu))
                            .unwrap_or_default();
                    for j in 0..a {
                        cur[j][c] = (rngs[j].r#gen::<f32>() < p[j]) as u8 as f32;
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
            if ends[j] {
                // Silent since its last real flow: the row drawn alongside is dropped.
                heads[i].ended = true;
                heads[i].rng = rng.clone();
                continue;
            }
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
                // STAN's octet columns are IPv4 (as published); an IPv6 host's destination comes from the
                // pair-arrival address model, so both ends keep one family.
                dst: match head.pair.src {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(
                        c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8,
                    )),
                    src @ IpAddr::V6(_) => self.arrivals.sample_dst(src, rng).dst,
                },
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
            let prev = lane
                .last_us
                .filter(|_| lane.arrival.is_none() || !lane.rows.is_empty());
            let pos = match (lane.arrival, lane.rows.last()) {
                (None, Some(r)) => r.session_pos + 1,
                _ => 0,
            };
            let mut row = self.row(&r, prev, rep);
            lane.stop = cur[j][SILENCE_COL] > 0.5;
            Self::mark(&mut row, Some(lane.stop));
            Self::place(&mut row, pos);
            lane.rows.push(row);
            if lane.rows.len() > self.config.k {
                lane.rows.remove(0);
            }
            lane.last_us = Some(r.start_us);
            lane.arrival = None;
            lane.p_last = None;
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
        self.arrivals.fit_sessions(
            &Self::host_starts(records),
            self.space.silence_us,
            self.space.first_us,
            self.space.last_us,
            false,
        );
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
        features::set_bias(
            &h[SILENCE_COL],
            &[features::sessions::silence_logit(
                &Self::host_starts(records)
                    .into_iter()
                    .map(|x| x.1)
                    .collect::<Vec<_>>(),
                self.space.silence_us,
                self.space.last_us,
            )],
        );
        let mut rep = RepairCounts::default();
        let end = self
            .space
            .last_us
            .max(records.iter().map(|r| r.start_us).max().unwrap_or(0));
        let seqs: Vec<(Vec<Row>, Vec<bool>)> = host_sequences(records)
            .into_iter()
            .map(|(_, s)| {
                let rows = self.host_rows(&s, end, &mut rep);
                let n = rows.len();
                (rows, vec![true; n])
            })
            .collect();
        let items = self.items(&seqs);
        let mut order: Vec<usize> = (0..items.len()).collect();
        let bs = self.config.batch.max(1);
        let batches = items.len().div_ceil(bs);
        let mut early = super::EarlyStop::new();
        for epoch in 0..opts.epochs {
            order.shuffle(&mut self.rng);
            for (bi, chunk) in order.chunks(bs).enumerate() {
                let scale = early.lr_factor(opts, epoch, bi, batches);
                if let Some(o) = self.opt.as_mut() {
                    o.set_lr(self.config.lr * scale);
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
                    validation_nll: early.last(),
                });
            }
            if early.end_epoch(self, opts, epoch + 1, batches, progress)? {
                break;
            }
        }
        early.restore(self)
    }
    fn train_batch(&mut self, windows: &[&PairWindow]) -> Result<TaskNll, ModelError> {
        let seqs = self.window_rows(windows.iter().copied());
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
                // Flow tasks and the address (the silence mark is not part of the event).
                let (ls, _) = self.losses(chunk);
                let mut s = ls[0].shallow_clone();
                for t in &ls[1..task::SILENCE] {
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
        let end = all.iter().map(|(_, r)| r.start_us).max().unwrap_or(0);
        let mut by_host: HashMap<IpAddr, HostRows> = HashMap::new();
        for (i, r) in all {
            let e = by_host.entry(r.src).or_default();
            let row = self.row(r, e.2.last().copied(), &mut rep);
            e.0.push(row);
            e.1.push(i >= context.len());
            e.2.push(r.start_us);
        }
        let seqs: Vec<(Vec<Row>, Vec<bool>)> = by_host
            .into_values()
            .map(|(mut rows, s, t)| {
                let pos = features::sessions::positions(&t, 0, self.space.silence_us);
                for (i, row) in rows.iter_mut().enumerate() {
                    let m = features::sessions::ended_after(&t, i, self.space.silence_us, end);
                    Self::mark(row, m);
                    Self::place(row, pos[i]);
                }
                (rows, s)
            })
            .collect();
        Ok(self.nll_seqs(&seqs))
    }
    fn new_lanes(&self) -> Lanes {
        Lanes::new(LaneStates::Stan(Vec::new()))
    }
    /// One lane per observed source host (the destination is left unspecified: STAN draws it per flow).
    fn observed_lanes(&self) -> Vec<ObservedLane> {
        self.observed
            .iter()
            .map(|o| ObservedLane {
                pair: HostPair {
                    src: o.host,
                    dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                },
                last_us: o.last_us,
                sessions: o.sessions,
            })
            .collect()
    }
    fn start_lane(&self, lanes: &mut Lanes, i: usize, from: &LaneStart) -> Result<(), ModelError> {
        let mut scratch = RepairCounts::default();
        let s = match from {
            LaneStart::Continue {
                last,
                prev_start_us,
            } => LaneState {
                rows: self.twin_rows(last, *prev_start_us, &mut scratch),
                last_us: Some(last.start_us),
                arrival: None,
                stop: false,
                unresolved: true,
                p_last: None,
            },
            LaneStart::Observed(k) => LaneState {
                rows: self.observed[*k].rows.clone(),
                last_us: Some(self.observed[*k].last_us),
                arrival: None,
                stop: false,
                unresolved: true,
                p_last: None,
            },
            // The window is the host's training rows (the published model conditions on rows only); the first
            // gap is from its last flow, generated or in training.
            LaneStart::Reactivate { i: k, at, since } => LaneState {
                rows: self.observed[*k].rows.clone(),
                last_us: Some(since.map_or(self.observed[*k].last_us, |s| s.last.start_us)),
                arrival: Some(*at),
                stop: false,
                unresolved: false,
                p_last: None,
            },
            LaneStart::Resume {
                last,
                prev_start_us,
                at,
            } => LaneState {
                rows: self.twin_rows(last, *prev_start_us, &mut scratch),
                last_us: Some(last.start_us),
                arrival: Some(*at),
                stop: false,
                unresolved: false,
                p_last: None,
            },
            LaneStart::New { at, .. } => LaneState {
                rows: Vec::new(),
                last_us: None,
                arrival: Some(*at),
                stop: false,
                unresolved: false,
                p_last: None,
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
        let v = match &mut lanes.states {
            LaneStates::Stan(v) => v,
            _ => unreachable!("a session checks its model kind before every call"),
        };
        // The silence probability of real last rows (its mark is decided with the next row's gap).
        let pending: Vec<usize> = active
            .iter()
            .copied()
            .filter(|&i| v[i].unresolved)
            .collect();
        for chunk in pending.chunks(self.config.gen_batch.max(1)) {
            let items: Vec<(Vec<&Row>, &[f32])> = (0..chunk.len().max(MIN_GEN_ROWS))
                .map(|j| {
                    let rows = &v[chunk[j.min(chunk.len() - 1)]].rows;
                    let n = rows.len();
                    (rows[..n - 1].iter().collect(), rows[n - 1].x.as_slice())
                })
                .collect();
            let p = tch::no_grad(|| {
                let o = self.net.heads[SILENCE_COL].forward(
                    &self
                        .net
                        .features(&self.window_tensor(&items))
                        .select(1, SILENCE_COL as i64),
                );
                Vec::<f32>::try_from(o.squeeze_dims([1]).sigmoid().to_device(Device::Cpu))
                    .unwrap_or_default()
            });
            for (j, &i) in chunk.iter().enumerate() {
                v[i].p_last = Some(p[j] as f64);
                v[i].unresolved = false;
            }
        }
        // Lanes whose last row carried the silence mark end here.
        let mut go = Vec::with_capacity(active.len());
        for &i in active {
            if v[i].stop {
                lanes.heads[i].ended = true;
            } else {
                go.push(i);
            }
        }
        for chunk in go.chunks(self.config.gen_batch.max(1)) {
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
        super::set_adam_lr(&mut self.opt, &self.vs, is_table, lr)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The column-at-a-time evaluation of generation is the network of training: every column's features agree
    /// with [`Net::features`] on the same window (up to the order of the sums).
    #[test]
    fn column_features_match_full_features() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = StanConfig::default();
        let net = Net::new(&vs.root(), &cfg, Device::Cpu);
        tch::no_grad(|| {
            let _ = net.b1.shallow_clone().normal_(0.0, 0.5);
            let _ = net.b2.shallow_clone().normal_(0.0, 0.5);
        });
        let b = 6;
        let kh = cfg.k as i64 + 1;
        let x = Tensor::randn([b, 2, kh, C as i64], (Kind::Float, Device::Cpu));
        // Presence flags are 0 or 1, and the current row is present.
        x.select(1, 1)
            .copy_(&x.select(1, 1).gt(0.0).to_kind(Kind::Float));
        let _ = x.select(1, 1).select(1, kh - 1).fill_(1.0);
        tch::no_grad(|| {
            let full = net.features(&x);
            let start = x.copy();
            let _ = start.select(1, 0).select(1, kh - 1).zero_();
            let mut f = net.column_features(&start);
            let cur = x.select(1, 0).select(1, kh - 1).contiguous();
            for c in 0..C {
                net.column_first_layer(&mut f, &cur, c);
                let got = net.column_output(&f, c);
                let want = full.select(1, c as i64);
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(diff < 1e-4, "column {c}: {diff}");
            }
        });
    }
}
