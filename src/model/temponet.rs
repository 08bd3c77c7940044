//! TempoNet: a multi-mark temporal point process per host pair.
//!
//! Each past flow of a pair is embedded (standardised log inter-arrival, protocol, port classes, flag byte, log
//! packets, log bytes per packet, log duration, hour/day seasonality); a GRU reads the pair's recent history;
//! its state joined with a hashed host-pair embedding is the context of chained heads that give the next flow,
//! each conditioned on the fields sampled before it in the same flow:
//! inter-arrival -> protocol -> dst port class -> src port class -> flags -> packets -> bytes/packet -> duration.
//! Conditioning is additive: `c_{k+1} = c_k + embed(field_k)`, each head a two-layer MLP of its `c_k`.
//!
//! History is bounded: training, scoring and generation all run the GRU from a zero state over at most `window`
//! flows, restarting every `window` predicted flows with the last flow as the first input (see
//! [`super::pair_windows`]), so the model always sees the same kind of history it was trained on.
//!
//! Loss: the sum over tasks of `exp(-s_k) NLL_k + s_k` with one learned log-variance `s_k` per task (Kendall et
//! al. 2018); each task's NLL is reported unweighted. New pairs come from [`PairArrivals`] with a full-prefix
//! octet model.

use super::compliance::{RepairCounts, sample_masked, sample_truncated_mixture};
use super::features::{
    self, EncodedEvent, FeatureSpace, N_BYTE_CLASSES, N_CONT_INPUTS, N_PORT_CLASSES, cont, decode,
    task,
};
use super::pair_arrival::PairArrivals;
use super::session::{LaneRng, LaneStart, LaneStates, Lanes, MIN_GEN_ROWS};
use super::{
    FitOptions, FitProgress, FlowModel, ModelError, ModelKind, PairWindow, TaskNll, mixture,
};
use crate::record::{FlowRecord, HostPair, TcpFlags, proto};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig, RNN};
use tch::{Device, Kind, Tensor};

/// Every size of the network and of its training.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TempoNetConfig {
    pub hidden: i64,
    pub embed: i64,
    pub pair_dim: i64,
    pub buckets: u32,
    pub mixtures: i64,
    pub proto_dim: i64,
    pub port_dim: i64,
    pub flags_dim: i64,
    /// Flows of history (and predicted flows per training window).
    pub window: usize,
    pub batch_windows: usize,
    pub lr: f64,
    /// Lanes (pairs) per generation step.
    pub gen_batch: usize,
    /// Octets of prefix the new-pair address model conditions on (0..=7).
    pub address_context: usize,
}

impl Default for TempoNetConfig {
    fn default() -> Self {
        TempoNetConfig {
            hidden: 64,
            embed: 48,
            pair_dim: 16,
            buckets: 4096,
            mixtures: 4,
            proto_dim: 8,
            port_dim: 16,
            flags_dim: 8,
            window: 32,
            batch_windows: 64,
            lr: 3e-3,
            gen_batch: 4096,
            address_context: 7,
        }
    }
}

struct Net {
    e_proto: nn::Embedding,
    e_dport: nn::Embedding,
    e_sport: nn::Embedding,
    e_flags: nn::Embedding,
    in_proj: nn::Linear,
    gru: nn::GRU,
    pair: Vec<nn::Embedding>,
    ctx: nn::Linear,
    c_iat: nn::Linear,
    c_proto: nn::Embedding,
    c_dport: nn::Embedding,
    c_sport: nn::Embedding,
    c_flags: nn::Embedding,
    c_pkts: nn::Linear,
    c_bpp: nn::Linear,
    heads: Vec<(nn::Linear, nn::Linear)>,
    log_vars: Tensor,
}

impl Net {
    fn new(p: &nn::Path, c: &TempoNetConfig) -> Net {
        let ec = Default::default;
        let k = c.mixtures;
        let h = c.hidden;
        let in_dim = N_CONT_INPUTS as i64 + c.proto_dim + 2 * c.port_dim + c.flags_dim;
        let outs = [
            3 * k,
            N_BYTE_CLASSES as i64,
            N_PORT_CLASSES as i64,
            N_PORT_CLASSES as i64,
            N_BYTE_CLASSES as i64,
            3 * k,
            3 * k,
            1 + 3 * k,
        ];
        Net {
            e_proto: nn::embedding(p / "e_proto", 256, c.proto_dim, ec()),
            e_dport: nn::embedding(p / "e_dport", N_PORT_CLASSES as i64, c.port_dim, ec()),
            e_sport: nn::embedding(p / "e_sport", N_PORT_CLASSES as i64, c.port_dim, ec()),
            e_flags: nn::embedding(p / "e_flags", 256, c.flags_dim, ec()),
            in_proj: nn::linear(p / "in_proj", in_dim, c.embed, Default::default()),
            gru: nn::gru(
                p / "gru",
                c.embed,
                h,
                nn::RNNConfig {
                    batch_first: true,
                    ..Default::default()
                },
            ),
            pair: (0..4)
                .map(|i| nn::embedding(p / format!("pair{i}"), c.buckets as i64, c.pair_dim, ec()))
                .collect(),
            ctx: nn::linear(p / "ctx", h + c.pair_dim, h, Default::default()),
            c_iat: nn::linear(p / "c_iat", 2, h, Default::default()),
            c_proto: nn::embedding(p / "c_proto", 256, h, ec()),
            c_dport: nn::embedding(p / "c_dport", N_PORT_CLASSES as i64, h, ec()),
            c_sport: nn::embedding(p / "c_sport", N_PORT_CLASSES as i64, h, ec()),
            c_flags: nn::embedding(p / "c_flags", 256, h, ec()),
            c_pkts: nn::linear(p / "c_pkts", 1, h, Default::default()),
            c_bpp: nn::linear(p / "c_bpp", 1, h, Default::default()),
            heads: outs
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    (
                        nn::linear(p / format!("head{i}_hid"), h, h, Default::default()),
                        nn::linear(p / format!("head{i}_out"), h, *o, Default::default()),
                    )
                })
                .collect(),
            log_vars: p.zeros("log_vars", &[8]),
        }
    }

    fn head(&self, i: usize, c: &Tensor) -> Tensor {
        self.heads[i]
            .1
            .forward(&self.heads[i].0.forward(&c.relu()).relu())
    }

    /// Event embeddings of inputs `[B, T]`.
    fn embed(&self, cont: &Tensor, pr: &Tensor, dp: &Tensor, sp: &Tensor, fl: &Tensor) -> Tensor {
        let x = Tensor::cat(
            &[
                cont.shallow_clone(),
                self.e_proto.forward(pr),
                self.e_dport.forward(dp),
                self.e_sport.forward(sp),
                self.e_flags.forward(fl),
            ],
            -1,
        );
        self.in_proj.forward(&x).relu()
    }

    fn pair_embed(&self, ids: &Tensor) -> Tensor {
        let mut e = self.pair[0].forward(&ids.select(1, 0));
        for i in 1..4 {
            e += self.pair[i].forward(&ids.select(1, i as i64));
        }
        e
    }
}

/// Encoded inputs and targets of a batch of windows.
struct Batch {
    b: i64,
    t: i64,
    cont: Vec<f32>,
    x_proto: Vec<i64>,
    x_dport: Vec<i64>,
    x_sport: Vec<i64>,
    x_flags: Vec<i64>,
    pairs: Vec<i64>,
    pos: Vec<i64>,
    row: Vec<i64>,
    y: Vec<EncodedEvent>,
    /// Target is a pair's first flow (address scored, inter-arrival not).
    new_pair: Vec<Option<HostPair>>,
}

/// Per-event NLL tensors `[N]` for the 8 flow tasks, and which events each task covers.
struct Losses {
    per_task: Vec<Tensor>,
    masks: Vec<Tensor>,
}

pub struct TempoNet {
    pub config: TempoNetConfig,
    pub space: FeatureSpace,
    pub arrivals: PairArrivals,
    /// Each observed pair's last flow and the start of the flow before it: where generation continues from.
    pub observed: Vec<(HostPair, FlowRecord, Option<i64>)>,
    pub version: u64,
    device: Device,
    vs: nn::VarStore,
    net: Net,
    opt: Option<nn::Optimizer>,
    rng: rand::rngs::StdRng,
}

/// The JSON header of a TempoNet model file.
#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    pub config: TempoNetConfig,
    pub space: FeatureSpace,
    pub arrivals: PairArrivals,
    pub observed: Vec<(HostPair, FlowRecord, Option<i64>)>,
    pub version: u64,
}

impl TempoNet {
    pub fn new(
        config: TempoNetConfig,
        records: &[FlowRecord],
        device: Device,
    ) -> Result<TempoNet, ModelError> {
        let space = FeatureSpace::fit(records, config.buckets);
        let mut arrivals = PairArrivals::new(config.address_context);
        arrivals.fit(records, space.span_us());
        Ok(Self::from_parts(
            Header {
                config,
                space,
                arrivals,
                observed: observed_tails(records),
                version: 0,
            },
            device,
        ))
    }

    pub(crate) fn from_parts(h: Header, device: Device) -> TempoNet {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(device);
        let net = Net::new(&vs.root(), &h.config);
        TempoNet {
            config: h.config,
            space: h.space,
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

    fn build_batch(&self, windows: &[&PairWindow]) -> Batch {
        let mut rep = RepairCounts::default();
        let t = windows
            .iter()
            .map(|w| {
                if w.starts_pair {
                    w.events.len()
                } else {
                    w.events.len().saturating_sub(1)
                }
            })
            .max()
            .unwrap_or(1)
            .max(1);
        let b = windows.len();
        let mut bt = Batch {
            b: b as i64,
            t: t as i64,
            cont: vec![0.0; b * t * N_CONT_INPUTS],
            x_proto: vec![0; b * t],
            x_dport: vec![0; b * t],
            x_sport: vec![0; b * t],
            x_flags: vec![0; b * t],
            pairs: Vec::with_capacity(b * 4),
            pos: Vec::new(),
            row: Vec::new(),
            y: Vec::new(),
            new_pair: Vec::new(),
        };
        for (bi, w) in windows.iter().enumerate() {
            bt.pairs
                .extend_from_slice(&self.space.pair_buckets(&w.pair));
            let enc: Vec<EncodedEvent> = w
                .events
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let prev = if i > 0 {
                        Some(w.events[i - 1].start_us)
                    } else if w.starts_pair {
                        None
                    } else {
                        w.prev_start_us
                    };
                    self.space.encode(r, prev, &mut rep)
                })
                .collect();
            let mut inputs: Vec<Option<&EncodedEvent>> = Vec::new();
            let first_target = if w.starts_pair {
                inputs.push(None);
                0
            } else {
                1
            };
            for e in enc.iter().take(enc.len().saturating_sub(1)) {
                inputs.push(Some(e));
            }
            for (ti, inp) in inputs.iter().enumerate().take(t) {
                let at = bi * t + ti;
                let c = inp.map(|e| e.continuous()).unwrap_or(EncodedEvent::START);
                bt.cont[at * N_CONT_INPUTS..(at + 1) * N_CONT_INPUTS].copy_from_slice(&c);
                if let Some(e) = inp {
                    bt.x_proto[at] = e.proto as i64;
                    bt.x_dport[at] = e.dport as i64;
                    bt.x_sport[at] = e.sport as i64;
                    bt.x_flags[at] = e.flags as i64;
                }
            }
            for (j, e) in enc.iter().enumerate().skip(first_target) {
                if !w.score[j] {
                    continue;
                }
                // Target j is predicted from the GRU output after input position j (start token first) or j - 1.
                let p = if w.starts_pair { j } else { j - 1 };
                bt.pos.push((bi * t + p) as i64);
                bt.row.push(bi as i64);
                bt.y.push(*e);
                bt.new_pair
                    .push((w.starts_pair && j == 0).then_some(w.pair));
            }
        }
        bt
    }

    fn losses(&self, bt: &Batch) -> Losses {
        let d = self.device;
        let n = &self.net;
        let (b, t) = (bt.b, bt.t);
        let li = |v: &[i64], shape: &[i64]| Tensor::from_slice(v).view(shape).to_device(d);
        let lf = |v: &[f32]| Tensor::from_slice(v).to_device(d);
        let cont = Tensor::from_slice(&bt.cont)
            .view([b, t, N_CONT_INPUTS as i64])
            .to_device(d);
        let x = n.embed(
            &cont,
            &li(&bt.x_proto, &[b, t]),
            &li(&bt.x_dport, &[b, t]),
            &li(&bt.x_sport, &[b, t]),
            &li(&bt.x_flags, &[b, t]),
        );
        let (out, _) = n.gru.seq(&x);
        let hcfg = self.config.hidden;
        let pos = li(&bt.pos, &[-1]);
        let row = li(&bt.row, &[-1]);
        let h = out.reshape([b * t, hcfg]).index_select(0, &pos);
        let pe = n.pair_embed(&li(&bt.pairs, &[b, 4])).index_select(0, &row);
        let y = &bt.y;
        let yf = |f: &dyn Fn(&EncodedEvent) -> f32| lf(&y.iter().map(f).collect::<Vec<_>>());
        let yi = |f: &dyn Fn(&EncodedEvent) -> i64| li(&y.iter().map(f).collect::<Vec<_>>(), &[-1]);
        let iat = yf(&|e| e.iat.unwrap_or(0.0));
        let has_iat = yf(&|e| e.iat.is_some() as u8 as f32);
        let pr = yi(&|e| e.proto as i64);
        let dp = yi(&|e| e.dport as i64);
        let sp = yi(&|e| e.sport as i64);
        let fl = yi(&|e| e.flags as i64);
        let pk = yf(&|e| e.packets);
        let bp = yf(&|e| e.bpp);
        let dz = yf(&|e| e.duration.is_none() as u8 as f32);
        let du = yf(&|e| e.duration.unwrap_or(0.0));
        let k = self.config.mixtures;
        let ln_std = |i: usize| self.space.norm.std[i].ln();
        let c1 = n.ctx.forward(&Tensor::cat(&[h, pe], 1));
        let c2 = &c1
            + n.c_iat.forward(&Tensor::stack(
                &[iat.shallow_clone(), has_iat.shallow_clone()],
                1,
            ));
        let c3 = &c2 + n.c_proto.forward(&pr);
        let c4 = &c3 + n.c_dport.forward(&dp);
        let c5 = &c4 + n.c_sport.forward(&sp);
        let c6 = &c5 + n.c_flags.forward(&fl);
        let c7 = &c6 + n.c_pkts.forward(&pk.unsqueeze(1));
        let c8 = &c7 + n.c_bpp.forward(&bp.unsqueeze(1));
        let ce = |logits: Tensor, y: &Tensor| {
            -logits
                .log_softmax(1, Kind::Float)
                .gather(1, &y.unsqueeze(1), false)
                .squeeze_dims([1])
        };
        let nll_iat = (mixture::nll(&n.head(0, &c1), &iat, k) + ln_std(cont::IAT)) * &has_iat;
        let nll_pr = ce(n.head(1, &c2), &pr);
        let nll_dp = ce(n.head(2, &c3), &dp);
        let nll_sp = ce(n.head(3, &c4), &sp);
        let nll_fl = ce(n.head(4, &c5), &fl);
        let nll_pk = mixture::nll(&n.head(5, &c6), &pk, k) + ln_std(cont::PACKETS);
        let nll_bp = mixture::nll(&n.head(6, &c7), &bp, k) + ln_std(cont::BPP);
        let od = n.head(7, &c8);
        let l0 = od.select(1, 0);
        let nz = -(-&l0).log_sigmoid()
            + mixture::nll(&od.narrow(1, 1, 3 * k), &du, k)
            + ln_std(cont::DURATION);
        let nll_du = -l0.log_sigmoid() * &dz + nz * (1.0 - &dz);
        let ones = Tensor::ones_like(&pk);
        Losses {
            per_task: vec![
                nll_iat, nll_pr, nll_dp, nll_sp, nll_fl, nll_pk, nll_bp, nll_du,
            ],
            masks: vec![
                has_iat,
                ones.shallow_clone(),
                ones.shallow_clone(),
                ones.shallow_clone(),
                ones.shallow_clone(),
                ones.shallow_clone(),
                ones.shallow_clone(),
                ones,
            ],
        }
    }

    /// Task NLL sums from losses (plus the address task of new pairs).
    fn summarise(&self, l: &Losses, bt: &Batch) -> TaskNll {
        let mut out = TaskNll::default();
        for i in 0..8 {
            out.sum[i] = l.per_task[i].sum(Kind::Double).double_value(&[]);
            out.count[i] = l.masks[i].sum(Kind::Double).double_value(&[]).round() as u64;
        }
        for p in bt.new_pair.iter().flatten() {
            if let Some(a) = self.arrivals.nll(p) {
                out.add_task(task::ADDRESS, a);
            }
        }
        out
    }

    fn step(&mut self, windows: &[&PairWindow]) -> Result<TaskNll, ModelError> {
        let mut bt = self.build_batch(windows);
        if bt.y.is_empty() {
            return Ok(TaskNll::default());
        }
        for e in bt.y.iter_mut() {
            e.packets = self
                .space
                .norm
                .dequantise_packets(e.packets, self.rng.r#gen());
        }
        let l = self.losses(&bt);
        let mut loss = Tensor::zeros([], (Kind::Float, self.device));
        for i in 0..8 {
            let cnt = l.masks[i].sum(Kind::Float).clamp_min(1.0);
            let mean = l.per_task[i].sum(Kind::Float) / cnt;
            let s = self.net.log_vars.get(i as i64);
            loss = loss + (-&s).exp() * mean + s;
        }
        if self.opt.is_none() {
            self.opt = Some(nn::Adam::default().build(&self.vs, self.config.lr)?);
        }
        let opt = self.opt.as_mut().expect("just built");
        opt.backward_step_clip_norm(&loss, 1.0);
        Ok(tch::no_grad(|| self.summarise(&l, &bt)))
    }

    fn all_windows<'a>(&self, windows: &'a [PairWindow]) -> Vec<&'a PairWindow> {
        windows.iter().collect()
    }
}

/// The last flow of every pair and the start of the flow before it.
fn observed_tails(records: &[FlowRecord]) -> Vec<(HostPair, FlowRecord, Option<i64>)> {
    features::pair_sequences(records)
        .into_iter()
        .map(|(p, s)| {
            let n = s.len();
            (p, s[n - 1].clone(), (n >= 2).then(|| s[n - 2].start_us))
        })
        .collect()
}

/// One generated pair's state (its head, with the pair and random stream, is in [`Lanes::heads`]).
pub(crate) struct LaneState {
    buckets: [i64; 4],
    /// The last flow (the next GRU input) and its start; `None` before the pair's first flow (start token).
    last: Option<(EncodedEvent, i64)>,
    /// First flow of a new pair: its time (no inter-arrival sampled).
    arrival: Option<i64>,
    /// Observed pair's first generated flow: the inter-arrival is scaled by a uniform phase from this time.
    phase_from: Option<i64>,
    /// Flows predicted since the history restarted (see the module doc: bounded history).
    steps: usize,
    /// GRU state after the last input; empty for a zero state.
    hidden: Vec<f32>,
}

fn states(lanes: &mut Lanes) -> &mut Vec<LaneState> {
    match &mut lanes.states {
        LaneStates::TempoNet(v) => v,
        _ => unreachable!("a session checks its model kind before every call"),
    }
}

impl TempoNet {
    /// Draws one flow for each lane of `idx` (one GRU step, all heads), leaving it in the lane's head.
    fn gen_step(&self, lanes: &mut Lanes, idx: &[usize]) {
        let n = &self.net;
        let d = self.device;
        let a = idx.len();
        // Padded batch (see `MIN_GEN_ROWS`): rows `a..m` repeat row 0 and are ignored.
        let m = a.max(MIN_GEN_ROWS);
        let row = |j: usize| if j < a { j } else { 0 };
        let hs = self.config.hidden as usize;
        let k = self.config.mixtures as usize;
        let norm = &self.space.norm;
        let Lanes {
            heads,
            states,
            repairs: rep,
        } = lanes;
        let mut rngs: Vec<LaneRng> = idx.iter().map(|&i| heads[i].rng.clone()).collect();
        let st = match states {
            LaneStates::TempoNet(v) => v,
            _ => unreachable!("a session checks its model kind before every call"),
        };
        let mut cont = Vec::with_capacity(m * N_CONT_INPUTS);
        let (mut xp, mut xd, mut xs, mut xf, mut pb) = (vec![], vec![], vec![], vec![], vec![]);
        let mut h0 = vec![0f32; m * hs];
        for j in 0..m {
            let l = &st[idx[row(j)]];
            match &l.last {
                Some((e, _)) => {
                    cont.extend_from_slice(&e.continuous());
                    xp.push(e.proto as i64);
                    xd.push(e.dport as i64);
                    xs.push(e.sport as i64);
                    xf.push(e.flags as i64);
                }
                None => {
                    cont.extend_from_slice(&EncodedEvent::START);
                    xp.push(0);
                    xd.push(0);
                    xs.push(0);
                    xf.push(0);
                }
            }
            pb.extend_from_slice(&l.buckets);
            // A state of another size (the session outlived a model change) restarts from zero.
            if l.hidden.len() == hs {
                h0[j * hs..(j + 1) * hs].copy_from_slice(&l.hidden);
            }
        }
        let mi = m as i64;
        let ti = |v: &[i64]| Tensor::from_slice(v).view([mi, 1]).to_device(d);
        let x = n.embed(
            &Tensor::from_slice(&cont)
                .view([mi, 1, N_CONT_INPUTS as i64])
                .to_device(d),
            &ti(&xp),
            &ti(&xd),
            &ti(&xs),
            &ti(&xf),
        );
        let h0 = Tensor::from_slice(&h0)
            .view([1, mi, hs as i64])
            .to_device(d);
        let (o, _) = n.gru.seq_init(&x, &nn::GRUState(h0));
        let h = o.squeeze_dims([1]);
        let h_cpu = cpu(h.shallow_clone());
        let pe = n.pair_embed(&Tensor::from_slice(&pb).view([mi, 4]).to_device(d));
        let c1 = n.ctx.forward(&Tensor::cat(&[h, pe], 1));
        let probs = |t: Tensor| cpu(t.softmax(1, Kind::Float));

        // Inter-arrival.
        let (w, mu, sg) = mixture::to_cpu(&n.head(0, &c1), k as i64);
        let zmax = (norm.upper(cont::IAT) - norm.mean[cont::IAT]) / norm.std[cont::IAT];
        let mut times = vec![0i64; a];
        let mut iat_in = vec![0f32; 2 * m];
        for (j, &i) in idx.iter().enumerate() {
            let l = &st[i];
            let rng = &mut rngs[j];
            if let Some(t0) = l.arrival {
                times[j] = t0;
            } else {
                let last_us = l.last.as_ref().map(|x| x.1).unwrap_or(0);
                let not_before = heads[i].not_before;
                // A twin joined after its pair's last flow: the gap is conditioned on reaching the clock.
                let zmin = if l.phase_from.is_none() && not_before > last_us {
                    norm.z(cont::IAT, features::log_iat(not_before - last_us)) as f64
                } else {
                    f64::NEG_INFINITY
                };
                let z = sample_truncated_mixture(
                    &w[j * k..(j + 1) * k],
                    &mu[j * k..(j + 1) * k],
                    &sg[j * k..(j + 1) * k],
                    zmin.min(zmax),
                    zmax,
                    rng,
                    rep,
                );
                let dt = decode::iat_us(norm.unz(cont::IAT, z));
                times[j] = match l.phase_from {
                    Some(s) => s + (dt as f64 * rng.r#gen::<f64>()) as i64,
                    None => last_us.saturating_add(dt).max(not_before),
                };
                iat_in[2 * j] = z as f32;
                iat_in[2 * j + 1] = 1.0;
            }
        }
        for j in a..m {
            iat_in[2 * j] = iat_in[0];
            iat_in[2 * j + 1] = iat_in[1];
        }
        let c2 = &c1
            + n.c_iat
                .forward(&Tensor::from_slice(&iat_in).view([mi, 2]).to_device(d));
        // Protocol: any of the 256 values.
        let protos: Vec<u8> =
            draw_classes(&probs(n.head(1, &c2)), 256, a, |_| true, &mut rngs, rep)
                .into_iter()
                .map(|c| c as u8)
                .collect();
        let c3 = &c2 + n.c_proto.forward(&class_tensor(&protos, m, d));
        // Ports: class 0 for protocols without ports.
        let np = N_PORT_CLASSES;
        let has_ports = |j: usize| proto::has_ports(protos[j]);
        let dcls: Vec<u16> = draw_classes(&probs(n.head(2, &c3)), np, a, has_ports, &mut rngs, rep)
            .into_iter()
            .map(|c| c as u16)
            .collect();
        let c4 = &c3 + n.c_dport.forward(&class_tensor(&dcls, m, d));
        let scls: Vec<u16> = draw_classes(&probs(n.head(3, &c4)), np, a, has_ports, &mut rngs, rep)
            .into_iter()
            .map(|c| c as u16)
            .collect();
        let c5 = &c4 + n.c_sport.forward(&class_tensor(&scls, m, d));
        // Flags: only on TCP.
        let is_tcp = |j: usize| protos[j] == proto::TCP;
        let flags: Vec<u8> = draw_classes(&probs(n.head(4, &c5)), 256, a, is_tcp, &mut rngs, rep)
            .into_iter()
            .map(|c| c as u8)
            .collect();
        let c6 = &c5 + n.c_flags.forward(&class_tensor(&flags, m, d));
        // Packets: truncated to at least one.
        let (w, mu, sg) = mixture::to_cpu(&n.head(5, &c6), k as i64);
        let zl = |i: usize, v: f64| (v - norm.mean[i]) / norm.std[i];
        let mut packets = vec![0u64; a];
        let mut pk_in = vec![0f32; m];
        for j in 0..a {
            let z = sample_truncated_mixture(
                &w[j * k..(j + 1) * k],
                &mu[j * k..(j + 1) * k],
                &sg[j * k..(j + 1) * k],
                zl(cont::PACKETS, decode::PACKETS_LOG.0),
                zl(cont::PACKETS, decode::PACKETS_LOG.1),
                &mut rngs[j],
                rep,
            );
            packets[j] = decode::packets(norm.unz(cont::PACKETS, z));
            pk_in[j] = norm.z(cont::PACKETS, features::log_packets(packets[j]));
        }
        let c7 = &c6
            + n.c_pkts
                .forward(&Tensor::from_slice(&pk_in).view([mi, 1]).to_device(d));
        // Bytes per packet: truncated to the protocol's bounds.
        let (w, mu, sg) = mixture::to_cpu(&n.head(6, &c7), k as i64);
        let mut bytes = vec![0u64; a];
        let mut bp_in = vec![0f32; m];
        for j in 0..a {
            let (lo, hi) = decode::bpp_log(protos[j]);
            let z = sample_truncated_mixture(
                &w[j * k..(j + 1) * k],
                &mu[j * k..(j + 1) * k],
                &sg[j * k..(j + 1) * k],
                zl(cont::BPP, lo),
                zl(cont::BPP, hi),
                &mut rngs[j],
                rep,
            );
            let (b, clamped) = decode::bytes(norm.unz(cont::BPP, z), packets[j], protos[j]);
            rep.sample_clamped += clamped as u64;
            bytes[j] = b;
            bp_in[j] = norm.z(cont::BPP, features::log_bpp(b, packets[j], protos[j]));
        }
        let c8 = &c7
            + n.c_bpp
                .forward(&Tensor::from_slice(&bp_in).view([mi, 1]).to_device(d));
        // Duration: point mass at zero, forced for single-packet flows unless the data had such flows.
        let od = n.head(7, &c8);
        let p0 = cpu(od.select(1, 0).sigmoid());
        let (w, mu, sg) = mixture::to_cpu(&od.narrow(1, 1, 3 * k as i64), k as i64);
        let zmax_d = zl(cont::DURATION, norm.upper(cont::DURATION));
        for (j, &i) in idx.iter().enumerate() {
            let rng = &mut rngs[j];
            let forced = packets[j] == 1 && !self.space.single_packet_duration;
            let duration_us = if forced || rng.r#gen::<f32>() < p0[j] {
                0
            } else {
                let z = sample_truncated_mixture(
                    &w[j * k..(j + 1) * k],
                    &mu[j * k..(j + 1) * k],
                    &sg[j * k..(j + 1) * k],
                    f64::NEG_INFINITY,
                    zmax_d,
                    rng,
                    rep,
                );
                decode::duration_us(norm.unz(cont::DURATION, z))
            };
            let ports = proto::has_ports(protos[j]);
            let head = &mut heads[i];
            let r = FlowRecord {
                start_us: times[j],
                duration_us,
                src: head.pair.src,
                dst: head.pair.dst,
                src_port: if ports {
                    features::port_from_class(scls[j], rng)
                } else {
                    0
                },
                dst_port: if ports {
                    features::port_from_class(dcls[j], rng)
                } else {
                    0
                },
                proto: protos[j],
                flags: TcpFlags(flags[j]),
                packets: packets[j],
                bytes: bytes[j],
                label: None,
            };
            let lane = &mut st[i];
            let prev = lane.last.as_ref().map(|x| x.1);
            let mut e = self.space.encode(&r, prev, rep);
            if lane.arrival.is_some() {
                e.iat = None;
            }
            lane.last = Some((e, r.start_us));
            lane.arrival = None;
            lane.phase_from = None;
            lane.steps += 1;
            // Bounded history: after `window` predicted flows, restart from a zero state with the last flow as input.
            if lane.steps >= self.config.window {
                lane.steps = 0;
                lane.hidden.clear();
            } else {
                lane.hidden.clear();
                lane.hidden.extend_from_slice(&h_cpu[j * hs..(j + 1) * hs]);
            }
            head.rng = rng.clone();
            head.next = Some(r);
        }
    }
}

impl FlowModel for TempoNet {
    fn kind(&self) -> ModelKind {
        ModelKind::TempoNet
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
        self.arrivals = PairArrivals::new(self.config.address_context);
        self.arrivals.fit(records, self.space.span_us());
        self.observed = observed_tails(records);
        self.rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
        tch::manual_seed(opts.seed as i64);
        let m = features::Marginals::fit(&self.space, records);
        let h = &self.net.heads;
        features::set_bias(&h[1].1, &features::Marginals::log_freq(&m.proto));
        features::set_bias(&h[2].1, &features::Marginals::log_freq(&m.dport));
        features::set_bias(&h[3].1, &features::Marginals::log_freq(&m.sport));
        features::set_bias(&h[4].1, &features::Marginals::log_freq(&m.flags));
        features::set_bias(&h[7].1, &[m.zero_logit()]);
        let windows = super::pair_windows(records, self.config.window, |_| true);
        let bw = self.config.batch_windows.max(1);
        let batches = windows.len().div_ceil(bw);
        let mut order: Vec<usize> = (0..windows.len()).collect();
        for epoch in 0..opts.epochs {
            order.shuffle(&mut self.rng);
            for (bi, chunk) in order.chunks(bw).enumerate() {
                // Linear decay to a tenth of the rate over the fit: the last iterates settle instead of jittering.
                let done = (epoch * batches + bi) as f64 / (opts.epochs * batches).max(1) as f64;
                if let Some(o) = self.opt.as_mut() {
                    o.set_lr(self.config.lr * (1.0 - 0.9 * done));
                }
                let ws: Vec<&PairWindow> = chunk.iter().map(|&i| &windows[i]).collect();
                let nll = self.step(&ws)?;
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
        let ws = self.all_windows(windows);
        self.step(&ws)
    }
    fn windows_nll(&self, windows: &[PairWindow]) -> Result<TaskNll, ModelError> {
        let mut out = TaskNll::default();
        for chunk in windows.chunks(256) {
            let ws: Vec<&PairWindow> = chunk.iter().collect();
            let bt = self.build_batch(&ws);
            if bt.y.is_empty() {
                continue;
            }
            out.merge(&tch::no_grad(|| {
                let l = self.losses(&bt);
                self.summarise(&l, &bt)
            }));
        }
        Ok(out)
    }
    fn event_losses(&self, windows: &[PairWindow]) -> Result<Vec<f32>, ModelError> {
        let mut v = Vec::new();
        for chunk in windows.chunks(256) {
            let ws: Vec<&PairWindow> = chunk.iter().collect();
            let bt = self.build_batch(&ws);
            if bt.y.is_empty() {
                continue;
            }
            let ev = tch::no_grad(|| {
                let l = self.losses(&bt);
                let mut s = l.per_task[0].shallow_clone();
                for t in &l.per_task[1..] {
                    s += t;
                }
                Vec::<f32>::try_from(s.to_device(Device::Cpu)).unwrap_or_default()
            });
            for (j, e) in ev.into_iter().enumerate() {
                let a = bt.new_pair[j]
                    .and_then(|p| self.arrivals.nll(&p))
                    .unwrap_or(0.0);
                v.push(e + a as f32);
            }
        }
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
            self.config.window,
        ))
    }
    fn new_lanes(&self) -> Lanes {
        Lanes::new(LaneStates::TempoNet(Vec::new()))
    }
    fn observed_pairs(&self) -> Vec<HostPair> {
        self.observed.iter().map(|o| o.0).collect()
    }
    fn start_lane(&self, lanes: &mut Lanes, i: usize, from: &LaneStart) -> Result<(), ModelError> {
        let head = &lanes.heads[i];
        let not_before = head.not_before;
        let mut scratch = RepairCounts::default();
        let mut cont = |last: &FlowRecord, prev: Option<i64>, phase: bool| {
            let mut e = self.space.encode(last, prev, &mut scratch);
            if prev.is_none() {
                e.iat = None;
            }
            // With a phase, the first gap counts from `not_before` (the flows between are unknown).
            let t = if phase { not_before } else { last.start_us };
            (Some((e, t)), None, phase.then_some(not_before))
        };
        let (last, arrival, phase_from) = match from {
            LaneStart::Continue {
                last,
                prev_start_us,
                phase,
            } => cont(last, *prev_start_us, *phase),
            LaneStart::Observed(k) => {
                let (_, last, prev) = &self.observed[*k];
                cont(last, *prev, true)
            }
            LaneStart::New { at } => (None, Some(*at), None),
        };
        let s = LaneState {
            buckets: self.space.pair_buckets(&head.pair),
            last,
            arrival,
            phase_from,
            steps: 0,
            hidden: Vec::new(),
        };
        let v = states(lanes);
        if i == v.len() {
            v.push(s);
        } else {
            v[i] = s;
        }
        Ok(())
    }
    fn step_lanes(&self, lanes: &mut Lanes, active: &[usize]) -> Result<(), ModelError> {
        for chunk in active.chunks(self.config.gen_batch.max(1)) {
            tch::no_grad(|| self.gen_step(lanes, chunk));
        }
        Ok(())
    }
    fn pair_arrivals(&self) -> &PairArrivals {
        &self.arrivals
    }
    fn params(&self) -> Vec<f32> {
        flat_params(&self.vs)
    }
    fn set_params(&mut self, flat: &[f32]) -> Result<(), ModelError> {
        set_flat_params(&self.vs, flat)
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

/// All variables of a store, sorted by name, as one flat vector.
pub(crate) fn flat_params(vs: &nn::VarStore) -> Vec<f32> {
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let t = vars[n]
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view([-1]);
        out.extend(Vec::<f32>::try_from(t).unwrap_or_default());
    }
    out
}

/// Inverse of [`flat_params`]; the length must match exactly.
pub(crate) fn set_flat_params(vs: &nn::VarStore, flat: &[f32]) -> Result<(), ModelError> {
    let mut vars = vs.variables();
    let mut names: Vec<String> = vars.keys().cloned().collect();
    names.sort();
    let total: i64 = names.iter().map(|n| vars[n].numel() as i64).sum();
    if total as usize != flat.len() {
        return Err(ModelError::Invalid(format!(
            "{} parameters given, the model has {total}",
            flat.len()
        )));
    }
    let mut off = 0usize;
    tch::no_grad(|| {
        for n in &names {
            let t = vars.get_mut(n).expect("name from keys");
            let len = t.numel();
            let src = Tensor::from_slice(&flat[off..off + len])
                .view(t.size().as_slice())
                .to_device(t.device())
                .to_kind(t.kind());
            t.copy_(&src);
            off += len;
        }
    });
    Ok(())
}

/// Models move between threads (the streaming workers own one each): TempoNet must stay `Send`.
const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<TempoNet>()
};

/// Copies a tensor to a flat CPU vector.
fn cpu(t: Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).contiguous().view([-1])).unwrap_or_default()
}

/// One categorical field for the first `a` lanes: lane `j` draws from its row of `probs` (`classes` wide) with its
/// own random stream when `applies(j)`, and gets class 0 (no ports, no flags) otherwise.
fn draw_classes(
    probs: &[f32],
    classes: usize,
    a: usize,
    applies: impl Fn(usize) -> bool,
    rngs: &mut [LaneRng],
    rep: &mut RepairCounts,
) -> Vec<usize> {
    (0..a)
        .map(|j| {
            if applies(j) {
                sample_masked(
                    &probs[j * classes..(j + 1) * classes],
                    |_| true,
                    &mut rngs[j],
                    rep,
                )
            } else {
                0
            }
        })
        .collect()
}

/// Sampled classes as the index tensor their embedding layer takes, padded with class 0 to `m` rows.
fn class_tensor<T: Copy + Into<i64>>(classes: &[T], m: usize, d: Device) -> Tensor {
    let mut v: Vec<i64> = classes.iter().map(|&c| c.into()).collect();
    v.resize(m, 0);
    Tensor::from_slice(&v).to_device(d)
}
