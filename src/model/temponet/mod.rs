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

use super::compliance::{
    RepairCounts, mixture_mass, sample_masked, sample_truncated_mixture, silence_posterior,
};
use super::features::{
    self, EncodedEvent, FeatureSpace, N_BYTE_CLASSES, N_CONT_INPUTS, N_PORT_CLASSES, cont, decode,
    task,
};
use super::pair_arrival::PairArrivals;
use super::session::{
    LaneRng, LaneStart, LaneStates, Lanes, MIN_GEN_ROWS, ObservedLane, twin_history_pos,
};
use super::{
    FitOptions, FitProgress, FlowModel, ModelError, ModelKind, PairWindow, StepEngine, TaskNll,
    mixture,
};
use crate::record::{FlowRecord, HostPair, TcpFlags, proto};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, RNN};
use tch::{Device, Kind, Tensor};

mod kernels;
mod native;
mod step;

use super::support::{ClassSet, HabitMasks, PairHabits, PortCounts};
use step::{Cond, StepInputs, StepNet};

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
    /// How a port above 1023 is drawn inside its class (a bin of 100 ports).
    pub port_decoding: PortDecoding,
}

/// How a generated port is drawn inside its class (see `support`: exact ports).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PortDecoding {
    /// From the ports the data showed in the class, with the Good-Turing share of unseen ones uniform.
    #[default]
    AsSeen,
    /// Uniformly in the class, as STAN decodes (a service on 6667 comes out anywhere in 6624-6723).
    Uniform,
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
            port_decoding: PortDecoding::AsSeen,
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
    /// The GRU's parameters (input and hidden weights, input and hidden biases) for [`native::NativeStep`]: the
    /// same tensors as the GRU's.
    gru_weights: [Tensor; 4],
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
    /// Within-group weights, biases and padding masks of the four categorical heads (protocol, destination and
    /// source port class, flags; heads 1 to 4), see [`TwoLevel`].
    within: Vec<(Tensor, Tensor, Tensor)>,
    /// Input layer of the silence head: pair embedding and the input event's session inputs ([`SILENCE_INPUTS`]).
    silence_in: nn::Linear,
    log_vars: Tensor,
}

/// The input event's continuous inputs the silence head reads (besides the pair embedding and the position flags of
/// [`POSITION_BUCKETS`]): its gap and whether it has one, the seasonality, the start-token flag, and whether it
/// starts a session.
///
/// The silence head deliberately does not read the GRU state. Trained on real histories (teacher forcing) a GRU-fed
/// head was calibrated (on the simulator: predicted 9.8 % silences, 9.8 % real), yet in generation the histories it
/// produced itself drifted into states it read as mid-burst, and sessions ran several times too long (a generated
/// session's first flow got a silence probability near 7 % where real ones end 35 % of the time). Position in the
/// session, the last gap and the pair are what the silence mostly depends on, and they do not drift that way.
const SILENCE_INPUTS: [usize; 8] = [0, 1, 6, 7, 8, 9, 10, 11];

/// Session-position thresholds the silence head also reads, as "position >= threshold" flags (a thermometer code):
/// a hazard that changes sharply with the count (a burst of exactly six flows) is a step on them, while on the log
/// position alone a small head learned it slowly; and a position beyond any seen in training keeps the hazard of
/// the last position seen (the flags' input weights start at zero, and a flag never set in training keeps them),
/// where a one-hot code (or randomly initialised flags) left such positions with an arbitrary, often tiny hazard and
/// sessions ran on.
const POSITION_BUCKETS: [u32; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 32, 64];

impl Net {
    fn new(p: &nn::Path, c: &TempoNetConfig) -> Net {
        let net = Self::build(p, c);
        // Position flags start with zero weights (see `POSITION_BUCKETS`).
        tch::no_grad(|| {
            let _ = net
                .silence_in
                .ws
                .narrow(
                    1,
                    c.pair_dim + SILENCE_INPUTS.len() as i64,
                    POSITION_BUCKETS.len() as i64,
                )
                .zero_();
        });
        net
    }

    fn build(p: &nn::Path, c: &TempoNetConfig) -> Net {
        let ec = Default::default;
        let k = c.mixtures;
        let h = c.hidden;
        let in_dim = N_CONT_INPUTS as i64 + c.proto_dim + 2 * c.port_dim + c.flags_dim;
        // Categorical heads output their group logits (see `TwoLevel`).
        let outs = [
            3 * k,
            CATEGORICAL[0].groups(),
            CATEGORICAL[1].groups(),
            CATEGORICAL[2].groups(),
            CATEGORICAL[3].groups(),
            PK_CLASSES as i64 + 3 * k,
            3 * k,
            1 + 3 * k,
            1,
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
            gru_weights: ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"].map(|w| {
                (p / "gru")
                    .get(w)
                    .expect("the GRU just created has this parameter")
            }),
            // Pair buckets start small (standard deviation 0.1, not 1): a bucket no training pair hashed to (an
            // unseen host in generation) stays close to the neutral, average pair. With unit-variance rows such
            // pairs got arbitrary silence probabilities and some never went silent; with zero rows training took
            // long to tell pairs apart.
            pair: (0..4)
                .map(|i| {
                    nn::embedding(
                        p / format!("pair{i}"),
                        c.buckets as i64,
                        c.pair_dim,
                        nn::EmbeddingConfig {
                            ws_init: nn::Init::Randn {
                                mean: 0.0,
                                stdev: 0.1,
                            },
                            ..Default::default()
                        },
                    )
                })
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
            within: CATEGORICAL
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let rows = t.groups() * t.size;
                    let bound = 1.0 / (h as f64).sqrt();
                    let w = p.var(
                        &format!("head{}_within_w", i + 1),
                        &[rows, h],
                        nn::Init::Uniform {
                            lo: -bound,
                            up: bound,
                        },
                    );
                    let b = p.zeros(&format!("head{}_within_b", i + 1), &[rows]);
                    // Padding classes of the last group: never drawn, no probability.
                    let pad: Vec<f32> = (0..rows)
                        .map(|r| if r < t.n { 0.0 } else { -1e9 })
                        .collect();
                    (w, b, Tensor::from_slice(&pad).to_device(p.device()))
                })
                .collect(),
            silence_in: nn::linear(
                p / "silence_in",
                c.pair_dim + (SILENCE_INPUTS.len() + POSITION_BUCKETS.len()) as i64,
                h,
                Default::default(),
            ),
            log_vars: p.zeros("log_vars", &[9]),
        }
    }

    fn head(&self, i: usize, c: &Tensor) -> Tensor {
        self.heads[i]
            .1
            .forward(&self.heads[i].0.forward(&c.relu()).relu())
    }

    /// Hidden features of head `i` and its output (for a categorical head, the group logits).
    fn head_hid(&self, i: usize, c: &Tensor) -> (Tensor, Tensor) {
        let hid = self.heads[i].0.forward(&c.relu()).relu();
        let out = self.heads[i].1.forward(&hid);
        (hid, out)
    }

    /// Starts categorical head `i` (1..=4) at the marginal log frequencies `log_p` of its classes: the group biases
    /// at the groups' log masses, the within-group biases at the classes' log shares of their group.
    fn set_categorical_bias(&self, i: usize, log_p: &[f32]) {
        let t = &CATEGORICAL[i - 1];
        let g: Vec<f32> = log_p
            .chunks(t.size as usize)
            .map(|c| c.iter().map(|v| v.exp()).sum::<f32>().ln())
            .collect();
        features::set_bias(&self.heads[i].1, &g);
        let within: Vec<f32> = log_p
            .iter()
            .enumerate()
            .map(|(c, v)| v - g[c / t.size as usize])
            .collect();
        tch::no_grad(|| {
            let mut b = self.within[i - 1].1.narrow(0, 0, t.n);
            b.copy_(&Tensor::from_slice(&within).to_device(b.device()));
        });
    }

    /// Within-group logits `[N, size]` of categorical head `i` (1..=4) for rows' groups `group` (`N` of them, on
    /// the CPU: training knows its targets and generation draws the groups there).
    ///
    /// Rows are sorted by group and each group present is one `[n_g, hidden] x [hidden, size]` product with its
    /// own weight block. Gathering every row's weight block instead (`[N, size, hidden]`, then a batched product of
    /// `N` matrix-vector products) wrote and read back, in the backward pass too, 21 MB per port head on a batch
    /// of 2,048 rows: more than half of a training step. A group with fewer than `min_rows` rows is padded with
    /// copies of its first row (generation's `MIN_GEN_ROWS`: a lane's numbers must not depend on its batch).
    fn within_logits(&self, i: usize, hid: &Tensor, group: &[i64], min_rows: usize) -> Tensor {
        let t = &CATEGORICAL[i - 1];
        let (w, b, pad) = &self.within[i - 1];
        let d = hid.device();
        let n_groups = t.groups() as usize;
        let mut rows_of: Vec<Vec<i64>> = vec![Vec::new(); n_groups];
        for (r, &g) in group.iter().enumerate() {
            rows_of[g as usize].push(r as i64);
        }
        // Sorted (and padded) row order, each original row's place in it, and the groups present with their sizes.
        let mut order: Vec<i64> = Vec::with_capacity(group.len() + n_groups * min_rows);
        let mut place = vec![0i64; group.len()];
        let mut present: Vec<(usize, i64)> = Vec::new();
        for (g, rows) in rows_of.iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            for &r in rows {
                place[r as usize] = order.len() as i64;
                order.push(r);
            }
            for _ in rows.len()..min_rows {
                order.push(rows[0]);
            }
            present.push((g, rows.len().max(min_rows) as i64));
        }
        let sorted = hid.index_select(0, &Tensor::from_slice(&order).to_device(d));
        let sizes: Vec<i64> = present.iter().map(|p| p.1).collect();
        let parts = sorted.split_with_sizes(&sizes, 0);
        let ws = w.view([t.groups(), t.size, -1]);
        let bs = (b + pad).view([t.groups(), t.size]);
        // Training: every block from one unbind. A `select` per group gave each group's weight gradient the full
        // table's size (zeros but for its block), and the backward pass filled and summed one such 430 KB tensor
        // per group present in a port head (17 on a batch of random client ports). Scoring and generation: only
        // the present groups' blocks (unbinding all of them cost a tenth of a generation step).
        let unbound = hid.requires_grad().then(|| (ws.unbind(0), bs.unbind(0)));
        let outs: Vec<Tensor> = present
            .iter()
            .zip(&parts)
            .map(|(&(g, _), x)| match &unbound {
                Some((wb, bb)) => x.linear(&wb[g], Some(&bb[g])),
                None => x.linear(&ws.select(0, g as i64), Some(&bs.select(0, g as i64))),
            })
            .collect();
        Tensor::cat(&outs, 0).index_select(0, &Tensor::from_slice(&place).to_device(d))
    }

    /// Per-row NLL of classes `y` (`N`, on the CPU) under categorical head `i` (1..=4) from its context `c`.
    fn categorical_nll(&self, i: usize, c: &Tensor, y: &[i64]) -> Tensor {
        let t = &CATEGORICAL[i - 1];
        let d = c.device();
        let (hid, gl) = self.head_hid(i, c);
        let group: Vec<i64> = y.iter().map(|v| v / t.size).collect();
        let member: Vec<i64> = y.iter().map(|v| v % t.size).collect();
        let pick = |logits: Tensor, at: &[i64]| {
            logits
                .log_softmax(1, Kind::Float)
                .gather(1, &Tensor::from_slice(at).to_device(d).unsqueeze(1), false)
                .squeeze_dims([1])
        };
        -(pick(gl, &group) + pick(self.within_logits(i, &hid, &group, 1), &member))
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

    /// Silence logits `[N]` from pair embeddings `[N, pair_dim]`, input events' continuous vectors (row-major,
    /// [`N_CONT_INPUTS`] wide) and their session positions.
    fn silence(&self, pe: &Tensor, cont: &[f32], pos: &[u32]) -> Tensor {
        let x = step::silence_inputs(cont, pos);
        let w = (SILENCE_INPUTS.len() + POSITION_BUCKETS.len()) as i64;
        let x = Tensor::from_slice(&x)
            .view([pos.len() as i64, w])
            .to_device(pe.device());
        self.silence_from(pe, x)
    }

    /// Silence logits `[N]` from pair embeddings and the rows of [`step::silence_inputs`].
    fn silence_from(&self, pe: &Tensor, x: Tensor) -> Tensor {
        let s = self
            .silence_in
            .forward(&Tensor::cat(&[pe.shallow_clone(), x], 1));
        self.head(SILENCE_HEAD, &s).squeeze_dims([1])
    }

    fn pair_embed(&self, ids: &Tensor) -> Tensor {
        let mut e = self.pair[0].forward(&ids.select(1, 0));
        for i in 1..4 {
            e += self.pair[i].forward(&ids.select(1, i as i64));
        }
        e
    }
}

/// Whether parameter `name` is a table of rows that a batch uses a few of (updated by rows, see `adam`): the
/// embeddings (input events' fields, pair buckets, the heads' conditioning on earlier fields) and the within-group
/// class blocks of the categorical heads (a batch uses the blocks of its targets' groups).
fn is_table(name: &str) -> bool {
    let layer = name.split('.').next().unwrap_or_default();
    let embedding = layer.starts_with("e_")
        || layer.starts_with("pair")
        || ["c_proto", "c_dport", "c_sport", "c_flags"].contains(&layer);
    (embedding && name.ends_with(".weight")) || name.ends_with("_within_w")
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
    /// The row's next event (a copy of the last event on rows that only carry a silence mark).
    y: Vec<EncodedEvent>,
    /// The row predicts a scored next event (the 8 flow tasks); otherwise it carries only a silence mark.
    is_target: Vec<bool>,
    /// The silence mark of the row's input event, when known and scored, and the event's session position.
    silence: Vec<Option<bool>>,
    in_pos: Vec<u32>,
    /// Target is a pair's first flow (address scored, inter-arrival not).
    new_pair: Vec<Option<HostPair>>,
}

/// Per-row NLL tensors `[N]` for the 8 flow tasks and the silence mark, and which rows each task covers (masked
/// rows have NLL 0).
struct Losses {
    per_task: Vec<Tensor>,
    masks: Vec<Tensor>,
    /// The inter-arrival NLL without its silence part (the gap's density on its side of the threshold): what the
    /// inter-arrival head trains on, the silence part being the silence task's.
    iat_shape: Tensor,
}

/// A categorical over `n` classes as two levels: `groups()` groups of `size` consecutive classes (the last one padded),
/// `P(class) = P(group) P(class | group)`. The group logits are the head's output layer; the within-group logits of a
/// group are `w[c] . hid + b[c]` for its classes `c` only. The likelihood stays exact over all `n` classes, while a
/// row costs `groups + size` logits instead of `n`: for the 1,670 port classes 82 instead of 1,670, which were the
/// largest layers of training and, drawn on the CPU, most of generation.
struct TwoLevel {
    n: i64,
    size: i64,
}

impl TwoLevel {
    const fn groups(&self) -> i64 {
        (self.n + self.size - 1) / self.size
    }
}

/// The categorical heads 1 to 4: protocol, destination and source port class, flags.
const CATEGORICAL: [TwoLevel; 4] = [
    TwoLevel {
        n: N_BYTE_CLASSES as i64,
        size: 16,
    },
    TwoLevel {
        n: N_PORT_CLASSES as i64,
        size: 41,
    },
    TwoLevel {
        n: N_PORT_CLASSES as i64,
        size: 41,
    },
    TwoLevel {
        n: N_BYTE_CLASSES as i64,
        size: 16,
    },
];

/// Packet counts below this are classes of their own in the packets head; larger ones share its last class and
/// take their value from a log-normal mixture truncated to `>= PK_CLASSES` (the head's other outputs). Small counts
/// are spikes (DNS: 93 % two packets) that a log-normal mixture smooths into its neighbours: on the simulator a
/// quarter of generated DNS flows had one packet (2 % of real ones), and zero durations with them.
const PK_CLASSES: usize = 16;

/// Packets head class of a count.
fn pk_class(p: u64) -> usize {
    (p.max(1) as usize - 1).min(PK_CLASSES - 1)
}

/// Index of the silence head (after the 8 flow heads) and of its entry in [`Losses`].
const SILENCE_HEAD: usize = 8;

pub struct TempoNet {
    pub config: TempoNetConfig,
    pub space: FeatureSpace,
    pub arrivals: PairArrivals,
    /// Each observed pair's last flow, the start of the flow before it and its sessions: where generation continues
    /// from, and how often the pair comes back.
    pub observed: Vec<ObservedTail>,
    /// `observed` by pair (sorted): a twin of an observed pair keeps its habits.
    observed_index: Vec<(HostPair, usize)>,
    pub version: u64,
    device: Device,
    vs: nn::VarStore,
    net: Net,
    step_engine: StepEngine,
    /// The dense layers packed for the native step, built at the first step after the parameters last changed:
    /// every `&mut self` path that can change a parameter clears it ([`TempoNet::params_changed`]).
    packed: std::cell::RefCell<Option<native::PackedNet>>,
    opt: Option<super::adam::Adam>,
    rng: rand::rngs::StdRng,
}

/// The JSON header of a TempoNet model file.
#[derive(Serialize, Deserialize)]
pub(crate) struct Header {
    pub config: TempoNetConfig,
    pub space: FeatureSpace,
    pub arrivals: PairArrivals,
    pub observed: Vec<ObservedTail>,
    pub version: u64,
}

impl TempoNet {
    /// Where `pair` is in `observed`, when it is an observed pair.
    fn observed_position(&self, pair: &HostPair) -> Option<usize> {
        self.observed_index
            .binary_search_by_key(pair, |x| x.0)
            .ok()
            .map(|j| self.observed_index[j].1)
    }

    /// The habits of `pair` when it is an observed pair.
    fn habits_of(&self, pair: &HostPair) -> Option<&PairHabits> {
        self.observed_position(pair)
            .map(|k| &self.observed[k].habits)
    }

    pub fn new(
        config: TempoNetConfig,
        records: &[FlowRecord],
        device: Device,
    ) -> Result<TempoNet, ModelError> {
        let space = FeatureSpace::fit(records, config.buckets);
        let mut arrivals = PairArrivals::new(config.address_context);
        arrivals.fit(records, space.silence_us);
        Ok(Self::from_parts(
            Header {
                config,
                observed: observed_tails(records, space.silence_us),
                space,
                arrivals,
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
            observed_index: observed_index(&h.observed),
            observed: h.observed,
            version: h.version,
            device,
            vs,
            net,
            step_engine: StepEngine::default(),
            packed: Default::default(),
            opt: None,
            rng: rand::rngs::StdRng::seed_from_u64(0),
        }
    }

    pub(crate) fn load_weights(&mut self, bytes: &[u8]) -> Result<(), ModelError> {
        self.params_changed();
        self.vs.load_from_stream(std::io::Cursor::new(bytes))?;
        Ok(())
    }

    /// Drops what was derived from the parameters (the packed layers of the native step).
    fn params_changed(&mut self) {
        *self.packed.get_mut() = None;
    }

    /// Batches of at most 256 windows for scoring (no training), those with nothing predicted left out.
    fn scoring_batches<'w>(
        &'w self,
        windows: &'w [PairWindow],
    ) -> impl Iterator<Item = Batch> + 'w {
        windows
            .chunks(256)
            .map(|chunk| self.build_batch(&chunk.iter().collect::<Vec<_>>()))
            .filter(|bt| !bt.y.is_empty())
    }

    fn build_batch(&self, windows: &[&PairWindow]) -> Batch {
        let mut rep = RepairCounts::default();
        let silence = self.space.silence_us;
        // A pair's last event is an input too when its silence mark is known (a row with only that mark).
        let extra = |w: &PairWindow| {
            let l = w.events.len();
            l > 0 && w.score[l - 1] && w.ended_after(l - 1, silence).is_some()
        };
        let inputs_of = |w: &PairWindow| {
            w.starts_pair as usize + w.events.len().saturating_sub(1) + extra(w) as usize
        };
        let t = windows
            .iter()
            .map(|w| inputs_of(w))
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
            is_target: Vec::new(),
            silence: Vec::new(),
            in_pos: Vec::new(),
            new_pair: Vec::new(),
        };
        for (bi, w) in windows.iter().enumerate() {
            bt.pairs
                .extend_from_slice(&self.space.pair_buckets(&w.pair));
            let pos = features::sessions::positions(
                &w.events.iter().map(|r| r.start_us).collect::<Vec<_>>(),
                w.session_pos,
                silence,
            );
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
                    let mut e = self.space.encode(r, prev, &mut rep);
                    e.session_pos = pos[i];
                    e
                })
                .collect();
            // Input position p holds the start token (p = 0 when the window starts its pair) or event `ev(p)`.
            let shift = w.starts_pair as usize;
            let n_in = inputs_of(w);
            for p in 0..n_in {
                let at = bi * t + p;
                let inp = (p >= shift).then(|| &enc[p - shift]);
                let c = inp.map(|e| self.input(e)).unwrap_or(EncodedEvent::START);
                bt.cont[at * N_CONT_INPUTS..(at + 1) * N_CONT_INPUTS].copy_from_slice(&c);
                if let Some(e) = inp {
                    bt.x_proto[at] = e.proto as i64;
                    bt.x_dport[at] = e.dport as i64;
                    bt.x_sport[at] = e.sport as i64;
                    bt.x_flags[at] = e.flags as i64;
                }
                // The GRU output after input p predicts the silence mark of the input event and, when the pair
                // goes on, the next event (index `p + 1 - shift`).
                let next = p + 1 - shift;
                let target = next < enc.len() && w.score[next];
                let mark = (p >= shift)
                    .then(|| {
                        let j = p - shift;
                        let scored = if next < enc.len() {
                            w.score[next]
                        } else {
                            w.score[j]
                        };
                        w.ended_after(j, silence).filter(|_| scored)
                    })
                    .flatten();
                if !target && mark.is_none() {
                    continue;
                }
                bt.pos.push(at as i64);
                bt.row.push(bi as i64);
                bt.y.push(enc[next.min(enc.len() - 1)]);
                bt.is_target.push(target);
                bt.silence.push(mark);
                bt.in_pos.push(if p >= shift { pos[p - shift] } else { 0 });
                bt.new_pair
                    .push((target && w.starts_pair && next == 0).then_some(w.pair));
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
        let row_cont: Vec<f32> = bt
            .pos
            .iter()
            .flat_map(|&p| {
                let p = p as usize;
                bt.cont[p * N_CONT_INPUTS..(p + 1) * N_CONT_INPUTS]
                    .iter()
                    .copied()
            })
            .collect();
        let ls = n.silence(&pe, &row_cont, &bt.in_pos);
        let y = &bt.y;
        let yf = |f: &dyn Fn(&EncodedEvent) -> f32| lf(&y.iter().map(f).collect::<Vec<_>>());
        let yv = |f: &dyn Fn(&EncodedEvent) -> i64| y.iter().map(f).collect::<Vec<_>>();
        let tgt = lf(&bt
            .is_target
            .iter()
            .map(|t| *t as u8 as f32)
            .collect::<Vec<_>>());
        let iat = yf(&|e| e.iat.unwrap_or(0.0));
        let has_iat = yf(&|e| e.iat.is_some() as u8 as f32) * &tgt;
        let (pr_v, dp_v, sp_v, fl_v) = (
            yv(&|e| e.proto as i64),
            yv(&|e| e.dport as i64),
            yv(&|e| e.sport as i64),
            yv(&|e| e.flags as i64),
        );
        let (pr, dp, sp, fl) = (
            li(&pr_v, &[-1]),
            li(&dp_v, &[-1]),
            li(&sp_v, &[-1]),
            li(&fl_v, &[-1]),
        );
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
        // Inter-arrival: the silence mark splits the gap's density at the threshold S. Below it,
        // `(1 - p) q(z) / Q(z_S)`; above it, `p q(z) / (1 - Q(z_S))`, with `q` the mixture head, `Q` its CDF and `p`
        // the silence probability: an exact density of every gap, whose in-session part is the mixture truncated
        // at S, exactly what generation draws from when a lane goes on.
        let oi = n.head(0, &c1);
        let zs = self
            .space
            .norm
            .z(cont::IAT, features::log_iat(self.space.silence_us)) as f64;
        // Clamped where f32 still tells Q from 0 and 1.
        let cdf = mixture::cdf(&oi, zs, k).clamp(1e-6, 1.0 - 1e-6);
        let out = bt_marks(&bt.silence, true, d);
        let shape = (mixture::nll(&oi, &iat, k)
            + ln_std(cont::IAT)
            + cdf.log() * (1.0 - &out)
            + (-&cdf + 1.0).log() * &out)
            * &has_iat;
        let stay: Tensor = (-&ls).log_sigmoid() * (1.0 - &out);
        let bern = (stay + ls.log_sigmoid() * &out) * &has_iat * -1.0;
        let nll_iat = &shape + bern;
        let nll_pr = n.categorical_nll(1, &c2, &pr_v) * &tgt;
        let nll_dp = n.categorical_nll(2, &c3, &dp_v) * &tgt;
        let nll_sp = n.categorical_nll(3, &c4, &sp_v) * &tgt;
        let nll_fl = n.categorical_nll(4, &c5, &fl_v) * &tgt;
        // Packets are counts. Small counts are classes; the last class's counts have the probability of their bin in the mixture
        // truncated to the class (see `PK_CLASSES`).
        let oq = n.head(5, &c6);
        let counts: Vec<u64> = y
            .iter()
            .map(|e| self.space.norm.packets_of(e.packets))
            .collect();
        let zp = |v: f64| self.space.norm.z(cont::PACKETS, v);
        let (pk_lo, pk_hi): (Vec<f32>, Vec<f32>) = counts
            .iter()
            .map(|&p| self.space.norm.packets_bin(p.max(PK_CLASSES as u64)))
            .unzip();
        let tail = lf(&counts
            .iter()
            .map(|&p| (pk_class(p) == PK_CLASSES - 1) as u8 as f32)
            .collect::<Vec<_>>());
        let cls = li(
            &counts
                .iter()
                .map(|&p| pk_class(p) as i64)
                .collect::<Vec<_>>(),
            &[-1, 1],
        );
        let om = oq.narrow(1, PK_CLASSES as i64, 3 * k);
        let tail_from = lf(&vec![zp((PK_CLASSES as f64).ln()); y.len()]);
        let inf = lf(&vec![f32::INFINITY; y.len()]);
        let nll_class = -oq
            .narrow(1, 0, PK_CLASSES as i64)
            .log_softmax(1, Kind::Float)
            .gather(1, &cls, false)
            .squeeze_dims([1]);
        let nll_tail = mixture::interval_nll(&om, &lf(&pk_lo), &lf(&pk_hi), k)
            - mixture::interval_nll(&om, &tail_from, &inf, k);
        let nll_pk = (nll_class + nll_tail * &tail) * &tgt;
        let nll_bp = (mixture::nll(&n.head(6, &c7), &bp, k) + ln_std(cont::BPP)) * &tgt;
        let od = n.head(7, &c8);
        let l0 = od.select(1, 0);
        let nz = -(-&l0).log_sigmoid()
            + mixture::nll(&od.narrow(1, 1, 3 * k), &du, k)
            + ln_std(cont::DURATION);
        let nll_du = (-l0.log_sigmoid() * &dz + nz * (1.0 - &dz)) * &tgt;
        // Silence mark: a Bernoulli on the same context as the inter-arrival (the GRU state after the input event).
        let has_mark = bt_marks(&bt.silence, false, d);
        let ended = bt_marks(&bt.silence, true, d);
        let nll_si =
            (-ls.log_sigmoid() * &ended - (-&ls).log_sigmoid() * (1.0 - &ended)) * &has_mark;
        Losses {
            iat_shape: shape,
            per_task: vec![
                nll_iat, nll_pr, nll_dp, nll_sp, nll_fl, nll_pk, nll_bp, nll_du, nll_si,
            ],
            masks: vec![
                has_iat,
                tgt.shallow_clone(),
                tgt.shallow_clone(),
                tgt.shallow_clone(),
                tgt.shallow_clone(),
                tgt.shallow_clone(),
                tgt.shallow_clone(),
                tgt,
                has_mark,
            ],
        }
    }

    /// Task NLL sums from losses (plus the address task of new pairs).
    fn summarise(&self, l: &Losses, bt: &Batch) -> TaskNll {
        let mut out = TaskNll::default();
        for (i, t) in (0..8).chain([task::SILENCE]).enumerate() {
            out.sum[t] = l.per_task[i].sum(Kind::Double).double_value(&[]);
            out.count[t] = l.masks[i].sum(Kind::Double).double_value(&[]).round() as u64;
        }
        for p in bt.new_pair.iter().flatten() {
            if let Some(a) = self.arrivals.nll(p) {
                out.add_task(task::ADDRESS, a);
            }
        }
        out
    }

    fn step(&mut self, windows: &[&PairWindow]) -> Result<TaskNll, ModelError> {
        let bt = self.build_batch(windows);
        if bt.y.is_empty() {
            return Ok(TaskNll::default());
        }
        let l = self.losses(&bt);
        // The inter-arrival density is its shape times the silence Bernoulli: the head trains on the shape, the
        // silence task (every known mark) on the Bernoulli, each with its own weight. Their sum is the joint NLL.
        // Each task's mean NLL is weighted by its learned log-variance `s` as `exp(-s) mean + s`, all nine in one
        // vector (a loop of scalar operations per task was 90 autograd nodes).
        let nll = |i: usize| if i == 0 { &l.iat_shape } else { &l.per_task[i] };
        let sums = Tensor::stack(
            &(0..l.per_task.len())
                .map(|i| nll(i).sum(Kind::Float))
                .collect::<Vec<_>>(),
            0,
        );
        let counts = Tensor::stack(
            &l.masks
                .iter()
                .map(|m| m.sum(Kind::Float))
                .collect::<Vec<_>>(),
            0,
        )
        .clamp_min(1.0);
        let s = &self.net.log_vars;
        let loss = ((-s).exp() * sums / counts + s).sum(Kind::Float);
        super::adam_of(&mut self.opt, &self.vs, is_table, self.config.lr)
            .backward_step_clip_norm(&loss, 1.0);
        self.params_changed();
        Ok(tch::no_grad(|| self.summarise(&l, &bt)))
    }

    /// Largest inter-arrival fed to the network: the longest gap of the training data. A longer one (a pair back
    /// after a silence longer than any in training) is fed as that, rather than as a value far outside anything
    /// the network saw. Targets are never clamped (their likelihood is of the true gap).
    fn iat_in_max(&self) -> f32 {
        let n = &self.space.norm;
        n.z(cont::IAT, n.max[cont::IAT])
    }

    /// The network input of an event: [`EncodedEvent::continuous`] with the gap clamped (see [`Self::iat_in_max`]).
    fn input(&self, e: &EncodedEvent) -> [f32; N_CONT_INPUTS] {
        let mut c = e.continuous();
        c[0] = c[0].min(self.iat_in_max());
        c
    }
}

/// A pair seen in training: where generation continues it from, and how often it starts sessions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ObservedTail {
    pub pair: HostPair,
    /// Its last flow and the start of the flow before it.
    pub last: FlowRecord,
    pub prev_start_us: Option<i64>,
    /// Its sessions under the silence threshold, and the last flow's position in its session.
    pub sessions: u32,
    pub session_pos: u32,
    /// Its kinds of flow and port classes (generation keeps to them, see `support`: pair habits).
    pub habits: PairHabits,
}

/// The last flow of every pair, the start of the flow before it, and its session count.
fn observed_tails(records: &[FlowRecord], silence_us: i64) -> Vec<ObservedTail> {
    features::pair_sequences(records)
        .into_iter()
        .map(|(pair, s)| {
            let n = s.len();
            let starts: Vec<i64> = s.iter().map(|r| r.start_us).collect();
            ObservedTail {
                pair,
                last: s[n - 1].clone(),
                prev_start_us: (n >= 2).then(|| s[n - 2].start_us),
                sessions: features::sessions::starts(&starts, silence_us).count() as u32,
                session_pos: features::sessions::positions(&starts, 0, silence_us)[n - 1],
                habits: PairHabits::fit(s.iter().copied()),
            }
        })
        .collect()
}

/// Positions of the observed pairs, sorted by pair.
fn observed_index(observed: &[ObservedTail]) -> Vec<(HostPair, usize)> {
    let mut v: Vec<(HostPair, usize)> = observed
        .iter()
        .enumerate()
        .map(|(i, o)| (o.pair, i))
        .collect();
    v.sort_unstable();
    v
}

/// One generated pair's state (its head, with the pair and random stream, is in [`Lanes::heads`]).
pub(crate) struct LaneState {
    buckets: [i64; 4],
    /// The last flow (the next GRU input) and its start; `None` before the pair's first flow (start token).
    last: Option<(EncodedEvent, i64)>,
    /// First flow of a session (a new pair, or one back after a silence): its time (no inter-arrival sampled).
    arrival: Option<i64>,
    /// Flows predicted since the history restarted (see the module doc: bounded history).
    steps: usize,
    /// GRU state after the last input; empty for a zero state.
    hidden: Vec<f32>,
    /// The pair's habits when it is an observed pair with enough training flows (see `support`).
    habits: Option<Box<HabitMasks>>,
}

fn states(lanes: &mut Lanes) -> &mut Vec<LaneState> {
    match &mut lanes.states {
        LaneStates::TempoNet(v) => v,
        _ => unreachable!("a session checks its model kind before every call"),
    }
}

impl TempoNet {
    /// One categorical field (head `i`, 1..=4) for the first `a` rows of context `c`: each lane draws a group, then
    /// a class in it, with its own random stream, when `applies(j)`; class 0 (no ports, no flags) otherwise.
    ///
    /// The head runs only for the rows that draw: a lane the field does not apply to, or whose support holds one
    /// class (an observed pair's one service, say), takes its class without it and without a random number (the
    /// truncated distribution is certain of it).
    #[allow(clippy::too_many_arguments)]
    fn draw_categorical<'s, S: StepNet, T: TryFrom<usize>>(
        net: &S,
        i: usize,
        c: &S::Rows,
        a: usize,
        applies: impl Fn(usize) -> bool,
        support: impl Fn(usize) -> Option<&'s ClassSet>,
        rngs: &mut [LaneRng],
        rep: &mut RepairCounts,
    ) -> Vec<T> {
        let t = &CATEGORICAL[i - 1];
        let (g, s) = (t.groups() as usize, t.size as usize);
        let sets: Vec<Option<&ClassSet>> = (0..a).map(support).collect();
        let mut class = vec![0usize; a];
        let mut draw: Vec<usize> = Vec::with_capacity(a);
        for j in 0..a {
            if !applies(j) {
                continue;
            }
            match sets[j].and_then(ClassSet::only) {
                Some(only) => class[j] = only,
                None => draw.push(j),
            }
        }
        if !draw.is_empty() {
            // `c` has the rows of the caller's batch: `a`, padded to the implementation's smallest.
            let (rows, picked) = pick_rows(net, c, a.max(net.min_rows()), &draw);
            let c = picked.as_ref().unwrap_or(c);
            let d = draw.len();
            let (hid, gl) = net.head(i, c);
            // Truncated to the support at both levels: groups holding a class seen, then the classes seen in the
            // drawn group (see `support`).
            let gp = step::softmax_rows(&gl, g, 0, g, d);
            let group_seen =
                |r: usize, x: usize| sets[draw[r]].is_none_or(|set| set.any_in(x * s, (x + 1) * s));
            let groups = draw_classes(&gp, g, &draw, group_seen, rngs, rep);
            let mut all = groups.iter().map(|&x| x as i64).collect::<Vec<_>>();
            all.resize(rows.len(), all[0]);
            let wl = net.within(i, &hid, &all);
            let wp = step::softmax_rows(&wl, s, 0, s, d);
            let member_seen = |r: usize, x: usize| {
                sets[draw[r]].is_none_or(|set| set.contains(groups[r] * s + x))
            };
            let members = draw_classes(&wp, s, &draw, member_seen, rngs, rep);
            for (r, &j) in draw.iter().enumerate() {
                class[j] = groups[r] * s + members[r];
            }
        }
        class
            .into_iter()
            .map(|c| {
                T::try_from(c)
                    .unwrap_or_else(|_| unreachable!("class {c} of head {i} fits its type"))
            })
            .collect()
    }

    /// Draws one flow for each lane of `idx` (one GRU step, all heads), leaving it in the lane's head: on the CPU
    /// with [`native::NativeStep`], elsewhere with libtorch (see [`step`]).
    fn gen_step(&self, lanes: &mut Lanes, idx: &[usize]) {
        if self.device == Device::Cpu && self.step_engine == StepEngine::Native {
            let mut packed = self.packed.borrow_mut();
            if packed.is_none() {
                *packed = native::PackedNet::new(&self.net);
            }
            if let Some(p) = packed.as_ref() {
                let net = native::NativeStep::new(p, self.config.hidden as usize);
                return self.gen_step_with(&net, lanes, idx);
            }
        }
        let net = step::TorchStep {
            net: &self.net,
            device: self.device,
        };
        self.gen_step_with(&net, lanes, idx)
    }

    fn gen_step_with<S: StepNet>(&self, n: &S, lanes: &mut Lanes, idx: &[usize]) {
        let a = idx.len();
        // Padded batch (see `MIN_GEN_ROWS`): rows `a..m` repeat row 0 and are ignored.
        let m = a.max(n.min_rows());
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
        let mut x = StepInputs {
            m,
            cont: Vec::with_capacity(m * N_CONT_INPUTS),
            proto: Vec::with_capacity(m),
            dport: Vec::with_capacity(m),
            sport: Vec::with_capacity(m),
            flags: Vec::with_capacity(m),
            buckets: Vec::with_capacity(4 * m),
            h0: vec![0f32; m * hs],
        };
        for j in 0..m {
            let l = &st[idx[row(j)]];
            match &l.last {
                Some((e, _)) => {
                    x.cont.extend_from_slice(&self.input(e));
                    x.proto.push(e.proto as i64);
                    x.dport.push(e.dport as i64);
                    x.sport.push(e.sport as i64);
                    x.flags.push(e.flags as i64);
                }
                None => {
                    x.cont.extend_from_slice(&EncodedEvent::START);
                    x.proto.push(0);
                    x.dport.push(0);
                    x.sport.push(0);
                    x.flags.push(0);
                }
            }
            x.buckets.extend_from_slice(&l.buckets);
            // A state of another size (the session outlived a model change) restarts from zero.
            if l.hidden.len() == hs {
                x.h0[j * hs..(j + 1) * hs].copy_from_slice(&l.hidden);
            }
        }
        let (h_cpu, c1, pe) = n.encode(&x);

        // Silence mark, then inter-arrival. A lane that has a flow and no given next one may end here (it draws
        // nothing more); one that goes on has its next flow within the silence threshold. A lane quiet since its
        // last flow until `not_before` conditions both on that (see `LaneStart`).
        let in_pos: Vec<u32> = (0..m)
            .map(|j| {
                st[idx[row(j)]]
                    .last
                    .as_ref()
                    .map_or(0, |(e, _)| e.session_pos)
            })
            .collect();
        let p_end: Vec<f32> = n
            .silence(&pe, &step::silence_inputs(&x.cont, &in_pos))
            .into_iter()
            .map(logistic)
            .collect();
        let (_, o_iat) = n.head(0, &c1);
        let (w, mu, sg) = step::mixture_rows(&o_iat, 3 * k, 0, k, a);
        let zmax = ((norm.upper(cont::IAT) - norm.mean[cont::IAT]) / norm.std[cont::IAT])
            .min(norm.z(cont::IAT, features::log_iat(self.space.silence_us)) as f64);
        let mut ends = vec![false; a];
        let mut times = vec![0i64; a];
        let mut iat_in = vec![0f32; 2 * m];
        for (j, &i) in idx.iter().enumerate() {
            let l = &st[i];
            let rng = &mut rngs[j];
            let (wj, mj, sj) = (
                &w[j * k..(j + 1) * k],
                &mu[j * k..(j + 1) * k],
                &sg[j * k..(j + 1) * k],
            );
            let last_us = l.last.as_ref().map(|x| x.1).unwrap_or(0);
            let quiet = heads[i].not_before - last_us;
            let zmin = if quiet > 0 {
                norm.z(cont::IAT, features::log_iat(quiet)) as f64
            } else {
                f64::NEG_INFINITY
            };
            if l.last.is_some() && l.arrival.is_none() {
                let q = if quiet > 0 {
                    let all = mixture_mass(wj, mj, sj, f64::NEG_INFINITY, zmax);
                    if all > 0.0 {
                        mixture_mass(wj, mj, sj, zmin, zmax) / all
                    } else {
                        0.0
                    }
                } else {
                    1.0
                };
                let p = silence_posterior(p_end[j] as f64, q);
                ends[j] = rng.r#gen::<f64>() < p;
            }
            if ends[j] {
                continue;
            }
            if let Some(t0) = l.arrival {
                times[j] = t0;
                // Back after a silence: the gap since the pair's last flow conditions the flow, as in training.
                if let Some((_, lt)) = l.last {
                    iat_in[2 * j] = norm
                        .z(cont::IAT, features::log_iat(t0 - lt))
                        .min(self.iat_in_max());
                    iat_in[2 * j + 1] = 1.0;
                }
            } else {
                let z = sample_truncated_mixture(wj, mj, sj, zmin.min(zmax), zmax, rng, rep);
                let dt = decode::iat_us(norm.unz(cont::IAT, z));
                times[j] = last_us.saturating_add(dt).max(heads[i].not_before);
                iat_in[2 * j] = z as f32;
                iat_in[2 * j + 1] = 1.0;
            }
        }
        // Lanes that ended here are done: the heads after the inter-arrival run for the others only.
        let mut live = Vec::with_capacity(a);
        for (j, &i) in idx.iter().enumerate() {
            if ends[j] {
                heads[i].ended = true;
                heads[i].rng = rngs[j].clone();
            } else {
                live.push(j);
            }
        }
        if live.is_empty() {
            return;
        }
        // Row `j` of what follows is row `at[j]` of the step so far (rows `a..m` repeat the first live row).
        let (at, picked) = pick_rows(n, &c1, m, &live);
        let c1 = picked.unwrap_or(c1);
        let (a, m) = (live.len(), at.len());
        let idx: Vec<usize> = live.iter().map(|&j| idx[j]).collect();
        let mut rngs: Vec<LaneRng> = live.iter().map(|&j| rngs[j].clone()).collect();
        let times: Vec<i64> = live.iter().map(|&j| times[j]).collect();
        let iat_in: Vec<f32> = at
            .iter()
            .flat_map(|&r| [iat_in[2 * r], iat_in[2 * r + 1]])
            .collect();
        let c2 = n.add_linear(&c1, Cond::Iat, &iat_in);
        // Protocol: any of the 256 values the data showed.
        let support = &self.space.support;
        let protos_seen = support.protos();
        // An observed pair keeps to its habits where it has them, the network's support elsewhere.
        let habits: Vec<Option<&HabitMasks>> =
            idx.iter().map(|&i| st[i].habits.as_deref()).collect();
        let protos: Vec<u8> = Self::draw_categorical(
            n,
            1,
            &c2,
            a,
            |_| true,
            |j| {
                habits[j]
                    .and_then(|h| h.protos.as_ref())
                    .or(protos_seen.as_ref())
            },
            &mut rngs,
            rep,
        );
        let seen_of: Vec<_> = protos.iter().map(|&p| support.proto(p)).collect();
        let seen = |j: usize| seen_of[j];
        let habit = |j: usize| habits[j].and_then(|h| h.proto(protos[j]));
        let c3 = n.add_embedding(&c2, Cond::Proto, &padded(&protos, m));
        // Ports: class 0 for protocols without ports.
        let has_ports = |j: usize| proto::has_ports(protos[j]);
        let dst_seen = |j: usize| {
            habit(j)
                .and_then(|h| h.dst_classes.as_ref())
                .or(seen(j).map(|p| &p.dst_classes))
        };
        let dcls: Vec<u16> =
            Self::draw_categorical(n, 2, &c3, a, has_ports, dst_seen, &mut rngs, rep);
        let c4 = n.add_embedding(&c3, Cond::DstPort, &padded(&dcls, m));
        let src_seen = |j: usize| {
            habit(j)
                .and_then(|h| h.src_classes.as_ref())
                .or(seen(j).map(|p| &p.src_classes))
        };
        let scls: Vec<u16> =
            Self::draw_categorical(n, 3, &c4, a, has_ports, src_seen, &mut rngs, rep);
        let c5 = n.add_embedding(&c4, Cond::SrcPort, &padded(&scls, m));
        // Flags: only on TCP.
        let is_tcp = |j: usize| protos[j] == proto::TCP;
        let flags_seen = |j: usize| {
            habit(j)
                .and_then(|h| h.flags.as_ref())
                .or(seen(j).map(|p| &p.flags))
        };
        let flags: Vec<u8> =
            Self::draw_categorical(n, 4, &c5, a, is_tcp, flags_seen, &mut rngs, rep);
        let c6 = n.add_embedding(&c5, Cond::Flags, &padded(&flags, m));
        // Packets: a class (counts below PK_CLASSES), the last class's count from the mixture truncated to it.
        let (_, oq) = n.head(5, &c6);
        let pk_w = PK_CLASSES + 3 * k;
        let pk_probs = step::softmax_rows(&oq, pk_w, 0, PK_CLASSES, a);
        // Each count within the range of its kind of flow (protocol and flags) in the data.
        let kinds: Vec<_> = (0..a).map(|j| support.kind(protos[j], flags[j])).collect();
        let pk_seen = |j: usize, c: usize| {
            kinds[j].is_none_or(|kd| {
                if c + 1 < PK_CLASSES {
                    (kd.packets.0..=kd.packets.1).contains(&(c as u64 + 1))
                } else {
                    kd.packets.1 >= PK_CLASSES as u64
                }
            })
        };
        let every: Vec<usize> = (0..a).collect();
        let pk_cls = draw_classes(&pk_probs, PK_CLASSES, &every, pk_seen, &mut rngs, rep);
        let (w, mu, sg) = step::mixture_rows(&oq, pk_w, PK_CLASSES, k, a);
        let zl = |i: usize, v: f64| (v - norm.mean[i]) / norm.std[i];
        let mut packets = vec![0u64; a];
        let mut pk_in = vec![0f32; m];
        for j in 0..a {
            packets[j] = if pk_cls[j] + 1 < PK_CLASSES {
                pk_cls[j] as u64 + 1
            } else {
                // A count decodes from [ln p, ln(p + 1)).
                let (lo, hi) = kinds[j].map_or((PK_CLASSES as u64, u64::MAX), |kd| {
                    (kd.packets.0.max(PK_CLASSES as u64), kd.packets.1)
                });
                let z = sample_truncated_mixture(
                    &w[j * k..(j + 1) * k],
                    &mu[j * k..(j + 1) * k],
                    &sg[j * k..(j + 1) * k],
                    zl(cont::PACKETS, (lo as f64).ln()),
                    zl(
                        cont::PACKETS,
                        (hi as f64 + 1.0).ln().min(decode::PACKETS_LOG.1),
                    ),
                    &mut rngs[j],
                    rep,
                );
                decode::packets(norm.unz(cont::PACKETS, z)).clamp(lo, hi)
            };
            pk_in[j] = norm.z(cont::PACKETS, features::log_packets(packets[j]));
        }
        let c7 = n.add_linear(&c6, Cond::Packets, &pk_in);
        // Bytes per packet: truncated to the protocol's bounds.
        let (w, mu, sg) = step::mixture_rows(&n.head(6, &c7).1, 3 * k, 0, k, a);
        let mut bytes = vec![0u64; a];
        let mut bp_in = vec![0f32; m];
        for j in 0..a {
            let (mut lo, mut hi) = decode::bpp_log(protos[j]);
            if let Some(kd) = kinds[j] {
                lo = lo.max(kd.bytes_per_packet.0.ln());
                hi = hi.min(kd.bytes_per_packet.1.ln());
            }
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
        let c8 = n.add_linear(&c7, Cond::Bpp, &bp_in);
        // Duration: point mass at zero, forced for single-packet flows unless the data had such flows.
        let (_, od) = n.head(7, &c8);
        let p0: Vec<f32> = od.chunks(1 + 3 * k).map(|r| logistic(r[0])).collect();
        let (w, mu, sg) = step::mixture_rows(&od, 1 + 3 * k, 1, k, a);
        let zmax_d = zl(cont::DURATION, norm.upper(cont::DURATION));
        // A port inside its class (see `PortDecoding`).
        let as_seen = self.config.port_decoding == PortDecoding::AsSeen;
        let port_of = |seen: Option<&PortCounts>, class: u16, rng: &mut LaneRng| match seen {
            Some(ports) if as_seen => ports.draw(class, rng),
            _ => features::port_from_class(class, rng),
        };
        for (j, &i) in idx.iter().enumerate() {
            let rng = &mut rngs[j];
            let forced = packets[j] == 1 && !self.space.single_packet_duration;
            // Zero, or not, and at most as long, as the data's flows of this kind.
            let (zero, range) = kinds[j].map_or((true, Some((0, u64::MAX))), |kd| {
                (kd.zero_duration, kd.nonzero_duration_us)
            });
            let drawn_zero = forced || (zero && rng.r#gen::<f32>() < p0[j]);
            let duration_us = match range {
                Some((lo, hi)) if !drawn_zero => {
                    let zd = |us: u64| zl(cont::DURATION, (us as f64 * 1e-6).ln());
                    let z = sample_truncated_mixture(
                        &w[j * k..(j + 1) * k],
                        &mu[j * k..(j + 1) * k],
                        &sg[j * k..(j + 1) * k],
                        if lo > 0 { zd(lo) } else { f64::NEG_INFINITY },
                        if hi < u64::MAX {
                            zd(hi).min(zmax_d)
                        } else {
                            zmax_d
                        },
                        rng,
                        rep,
                    );
                    decode::duration_us(norm.unz(cont::DURATION, z)).clamp(lo, hi)
                }
                _ => 0,
            };
            let ports = proto::has_ports(protos[j]);
            let head = &mut heads[i];
            let r = FlowRecord {
                start_us: times[j],
                duration_us,
                src: head.pair.src,
                dst: head.pair.dst,
                src_port: if ports {
                    port_of(seen_of[j].map(|p| &p.src_ports), scls[j], rng)
                } else {
                    0
                },
                dst_port: if ports {
                    port_of(seen_of[j].map(|p| &p.dst_ports), dcls[j], rng)
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
            if prev.is_none() {
                e.iat = None;
            }
            e.session_pos = match (&lane.last, lane.arrival) {
                (Some((l, _)), None) => l.session_pos + 1,
                _ => 0,
            };
            lane.last = Some((e, r.start_us));
            lane.arrival = None;
            lane.steps += 1;
            // Bounded history: after `window` predicted flows, restart from a zero state with the last flow as input.
            if lane.steps >= self.config.window {
                lane.steps = 0;
                lane.hidden.clear();
            } else {
                lane.hidden.clear();
                lane.hidden
                    .extend_from_slice(&h_cpu[at[j] * hs..(at[j] + 1) * hs]);
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
        // The categorical heads' biases are set from the data below, before any training step.
        self.params_changed();
        self.arrivals = PairArrivals::new(self.config.address_context);
        self.arrivals.fit(records, self.space.silence_us);
        self.observed = observed_tails(records, self.space.silence_us);
        self.observed_index = observed_index(&self.observed);
        self.rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
        tch::manual_seed(opts.seed as i64);
        let m = features::Marginals::fit(&self.space, records);
        let h = &self.net.heads;
        for (i, counts) in [&m.proto, &m.dport, &m.sport, &m.flags].iter().enumerate() {
            self.net
                .set_categorical_bias(i + 1, &features::Marginals::log_freq(counts));
        }
        features::set_bias(&h[7].1, &[m.zero_logit()]);
        // Mixture heads of packets, bytes per packet and (non-zero) duration start at their marginals.
        let k = self.config.mixtures as usize;
        let norm = &self.space.norm;
        let marginal = |i: usize, v: &dyn Fn(&FlowRecord) -> Option<f64>| {
            let mut z: Vec<f32> = records.iter().filter_map(v).map(|x| norm.z(i, x)).collect();
            mixture::start(&mut z, k)
        };
        let mut pk_counts = vec![0f64; PK_CLASSES];
        for r in records {
            pk_counts[pk_class(r.packets)] += 1.0;
        }
        features::set_bias(&h[5].1, &features::Marginals::log_freq(&pk_counts));
        let starts = [
            (
                5,
                PK_CLASSES,
                marginal(cont::PACKETS, &|r| {
                    (r.packets >= PK_CLASSES as u64).then(|| features::log_packets(r.packets))
                }),
            ),
            (
                6,
                0,
                marginal(cont::BPP, &|r| {
                    Some(features::log_bpp(r.bytes, r.packets, r.proto))
                }),
            ),
            (
                7,
                1,
                marginal(cont::DURATION, &|r| features::log_duration(r.duration_us)),
            ),
        ];
        for (head, offset, b) in starts {
            if let Some(b) = b {
                features::set_bias_at(&h[head].1, offset, &b);
            }
        }
        let seqs: Vec<Vec<i64>> = features::pair_sequences(records)
            .into_iter()
            .map(|(_, s)| s.iter().map(|r| r.start_us).collect())
            .collect();
        features::set_bias(
            &h[SILENCE_HEAD].1,
            &[features::sessions::silence_logit(
                &seqs,
                self.space.silence_us,
                self.space.last_us,
            )],
        );
        let windows = super::pair_windows_with(
            records,
            self.config.window,
            |_| true,
            Some(self.space.silence_us),
        );
        let bw = self.config.batch_windows.max(1);
        let batches = windows.len().div_ceil(bw);
        let mut order: Vec<usize> = (0..windows.len()).collect();
        let mut early = super::EarlyStop::new();
        for epoch in 0..opts.epochs {
            order.shuffle(&mut self.rng);
            for (bi, chunk) in order.chunks(bw).enumerate() {
                let scale = early.lr_factor(opts, epoch, bi, batches);
                if let Some(o) = self.opt.as_mut() {
                    o.set_lr(self.config.lr * scale);
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
                    validation_nll: early.last(),
                });
            }
            if early.end_epoch(self, opts, epoch + 1, batches, progress)? {
                break;
            }
        }
        early.restore(self)
    }
    fn observe_windows(&mut self, windows: &[PairWindow]) {
        for w in windows {
            self.arrivals.observe_window(w, self.space.silence_us);
            if let Some(k) = self.observed_position(&w.pair) {
                let habits = &mut self.observed[k].habits;
                for (r, _) in w.events.iter().zip(&w.score).filter(|(_, s)| **s) {
                    habits.observe(r);
                }
            }
        }
    }
    fn train_batch(&mut self, windows: &[&PairWindow]) -> Result<TaskNll, ModelError> {
        // Streaming training: flows after the warm-up widen what sampling may draw (see `support`).
        for w in windows {
            w.events.iter().for_each(|e| self.space.support.observe(e));
        }
        self.step(windows)
    }
    fn windows_nll(&self, windows: &[PairWindow]) -> Result<TaskNll, ModelError> {
        let mut out = TaskNll::default();
        for bt in self.scoring_batches(windows) {
            out.merge(&tch::no_grad(|| {
                let l = self.losses(&bt);
                self.summarise(&l, &bt)
            }));
        }
        Ok(out)
    }
    fn event_losses(&self, windows: &[PairWindow]) -> Result<Vec<f32>, ModelError> {
        let mut v = Vec::new();
        for bt in self.scoring_batches(windows) {
            let ev = tch::no_grad(|| {
                // The 8 flow tasks of each predicted event (silence marks are not events).
                let l = self.losses(&bt);
                let mut s = l.per_task[0].shallow_clone();
                for t in &l.per_task[1..SILENCE_HEAD] {
                    s += t;
                }
                Vec::<f32>::try_from(s.to_device(Device::Cpu)).unwrap_or_default()
            });
            for (j, e) in ev.into_iter().enumerate() {
                if !bt.is_target[j] {
                    continue;
                }
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
            self.space.silence_us,
        ))
    }
    fn new_lanes(&self) -> Lanes {
        Lanes::new(LaneStates::TempoNet(Vec::new()))
    }
    fn observed_lanes(&self) -> Vec<ObservedLane> {
        self.observed
            .iter()
            .map(|o| ObservedLane {
                pair: o.pair,
                last_us: o.last.start_us,
                sessions: o.sessions,
            })
            .collect()
    }
    fn start_lane(&self, lanes: &mut Lanes, i: usize, from: &LaneStart) -> Result<(), ModelError> {
        let head = &lanes.heads[i];
        let mut scratch = RepairCounts::default();
        let silence = self.space.silence_us;
        let mut cont = |last: &FlowRecord, prev: Option<i64>, pos: u32| {
            let mut e = self.space.encode(last, prev, &mut scratch);
            if prev.is_none() {
                e.iat = None;
            }
            e.session_pos = pos;
            Some((e, last.start_us))
        };
        let habits = match from {
            LaneStart::Observed(k)
            | LaneStart::Reactivate { i: k, .. }
            | LaneStart::New { like: Some(k), .. } => Some(&self.observed[*k].habits),
            // A twin of an observed pair keeps the pair's habits while its real flows do: the real flow it
            // follows uses one of the pair's services. A pair whose traffic changed since training is left free;
            // in a stream its habits widen with its flows first (`observe_windows`), so they follow the change.
            // A twin with no real flow before its session (the pair's first in the stream) keeps them as an
            // observed pair does.
            LaneStart::Continue { last, .. } | LaneStart::Resume { last, .. } => {
                self.habits_of(&head.pair).filter(|h| h.admits(last))
            }
            LaneStart::New { like: None, .. } => self.habits_of(&head.pair),
        }
        .and_then(PairHabits::masks)
        .map(Box::new);
        let (last, arrival) = match from {
            // A twin knows one earlier flow at most: within a session or not is all it can tell.
            LaneStart::Continue {
                last,
                prev_start_us,
            } => {
                let pos = twin_history_pos(last, *prev_start_us, silence);
                (cont(last, *prev_start_us, pos), None)
            }
            LaneStart::Observed(k) => {
                let o = &self.observed[*k];
                (cont(&o.last, o.prev_start_us, o.session_pos), None)
            }
            // Back after a silence, the first flow at `at`: the pair's last flow is the history (generated, or its
            // last training flow before its first session here).
            LaneStart::Reactivate { i: k, at, since } => {
                let o = &self.observed[*k];
                let h = match since {
                    Some(s) => cont(&s.last, s.prev_start_us, s.session_pos),
                    None => cont(&o.last, o.prev_start_us, o.session_pos),
                };
                (h, Some(*at))
            }
            LaneStart::Resume {
                last,
                prev_start_us,
                at,
            } => {
                let pos = twin_history_pos(last, *prev_start_us, silence);
                (cont(last, *prev_start_us, pos), Some(*at))
            }
            LaneStart::New { at, .. } => (None, Some(*at)),
        };
        let s = LaneState {
            buckets: self.space.pair_buckets(&head.pair),
            last,
            arrival,
            steps: 0,
            hidden: Vec::new(),
            habits,
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
        self.params_changed();
        set_flat_params(&self.vs, flat)
    }
    fn base_learning_rate(&self) -> f64 {
        self.config.lr
    }
    fn set_learning_rate(&mut self, lr: f64) -> Result<(), ModelError> {
        super::set_adam_lr(&mut self.opt, &self.vs, is_table, lr)
    }
    fn set_step_engine(&mut self, engine: StepEngine) {
        self.step_engine = engine;
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

/// Rows' silence marks as a float tensor: whether a mark is known (`ended == false`), or whether it is a silence.
fn bt_marks(marks: &[Option<bool>], ended: bool, d: Device) -> Tensor {
    let v: Vec<f32> = marks
        .iter()
        .map(|m| if ended { *m == Some(true) } else { m.is_some() } as u8 as f32)
        .collect();
    Tensor::from_slice(&v).to_device(d)
}

/// Copies a tensor to a flat CPU vector.
fn cpu(t: Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).contiguous().view([-1])).unwrap_or_default()
}

/// One categorical field: row `r` of `probs` (`classes` wide) is drawn for lane `lanes[r]`, with that lane's random
/// stream, among the classes `allowed(r, class)`.
fn draw_classes(
    probs: &[f32],
    classes: usize,
    lanes: &[usize],
    allowed: impl Fn(usize, usize) -> bool,
    rngs: &mut [LaneRng],
    rep: &mut RepairCounts,
) -> Vec<usize> {
    lanes
        .iter()
        .enumerate()
        .map(|(r, &j)| {
            sample_masked(
                &probs[r * classes..(r + 1) * classes],
                |c| allowed(r, c),
                &mut rngs[j],
                rep,
            )
        })
        .collect()
}

/// Rows `keep` of `c` (a batch of `rows` rows), padded with copies of the first to the implementation's smallest
/// batch (a head then runs for those lanes only): the rows taken, and the new batch unless it is `c` itself.
fn pick_rows<S: StepNet>(
    net: &S,
    c: &S::Rows,
    rows: usize,
    keep: &[usize],
) -> (Vec<usize>, Option<S::Rows>) {
    let at: Vec<usize> = (0..keep.len().max(net.min_rows()))
        .map(|r| keep[if r < keep.len() { r } else { 0 }])
        .collect();
    let same = at.len() == rows && at.iter().enumerate().all(|(r, &j)| r == j);
    let picked = (!same).then(|| net.select(c, &at));
    (at, picked)
}

/// The probability of a logit (what libtorch's `sigmoid` gives).
fn logistic(l: f32) -> f32 {
    1.0 / (1.0 + (-l).exp())
}

/// Sampled classes as the indices their embedding layer takes, padded with class 0 to `m` rows.
fn padded<T: Copy + Into<i64>>(classes: &[T], m: usize) -> Vec<i64> {
    let mut v: Vec<i64> = classes.iter().map(|&c| c.into()).collect();
    v.resize(m, 0);
    v
}
