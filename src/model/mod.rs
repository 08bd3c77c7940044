//! Generative flow models behind one interface: [`ModelKind::TempoNet`] (multi-mark temporal point process per
//! host pair, [`temponet`]), [`ModelKind::Stan`] (autoregressive window CNN, [`stan`]) and
//! [`ModelKind::Independent`] (every field from its own marginal, Poisson arrivals, [`independent`]).
//!
//! Callers (the `train`/`generate` commands, the evaluation `compare` command, the streaming operators) use only
//! [`Model`]: [`Model::fit`], [`Model::heldout_nll`], [`Model::generate`], [`Model::save`]/[`Model::load`], and for
//! streaming [`Model::train_batch`], [`Model::event_losses`], [`Model::params`]/[`Model::set_params`] with
//! [`Model::version`].
//!
//! Every model reports the same per-task negative log-likelihoods ([`TaskNll`], tasks in [`features::TASKS`]):
//! continuous fields as densities of their natural-log value (inter-arrival in seconds, dequantised packets,
//! bytes per packet, duration in seconds with a point mass at zero), discrete fields in nats over the same class
//! sets (256 protocols, 1,670 STAN port classes, 256 flag bytes). So numbers are comparable across models.

mod adam;
pub mod anonymise;
pub mod compliance;
mod cpu_tensor;
pub mod features;
pub mod file;
pub mod independent;
pub mod mixture;
pub mod pair_arrival;
pub mod session;
pub mod stan;
pub mod support;
pub mod temponet;

use crate::record::{FlowRecord, HostPair};
use compliance::RepairCounts;
use features::{FeatureSpace, N_TASKS, TASKS};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

pub use session::GenSession;
pub use session::{LaneStart, Lanes, LastFlow, ObservedLane};

/// Which model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelKind {
    TempoNet,
    Stan,
    Independent,
}

impl ModelKind {
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::TempoNet => "temponet",
            ModelKind::Stan => "stan",
            ModelKind::Independent => "independent",
        }
    }
    pub fn code(self) -> u8 {
        match self {
            ModelKind::TempoNet => 1,
            ModelKind::Stan => 2,
            ModelKind::Independent => 3,
        }
    }
    pub fn from_code(c: u8) -> Option<ModelKind> {
        match c {
            1 => Some(ModelKind::TempoNet),
            2 => Some(ModelKind::Stan),
            3 => Some(ModelKind::Independent),
            _ => None,
        }
    }
}

impl std::str::FromStr for ModelKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "temponet" => Ok(ModelKind::TempoNet),
            "stan" => Ok(ModelKind::Stan),
            "independent" => Ok(ModelKind::Independent),
            _ => Err(format!(
                "unknown model {s:?} (temponet, stan or independent)"
            )),
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of the model layer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "CUDA was asked for but tch sees no CUDA device (build with `--features cuda` on a GPU machine)"
    )]
    NoCuda,
}

/// Where the networks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            _ => Err(format!("unknown device {s:?} (cpu or cuda)")),
        }
    }
}

impl DeviceChoice {
    /// The tch device; a clear error when CUDA is asked for and absent. CPU runs use one intra-op thread (the
    /// guide measured 5-15x slowdowns from OpenMP spin-waiting on the shared cores), and keep freed tensor memory
    /// in the heap ([`keep_freed_tensor_memory`]).
    pub fn device(self) -> Result<tch::Device, ModelError> {
        match self {
            DeviceChoice::Cpu => {
                tch::set_num_threads(1);
                keep_freed_tensor_memory();
                Ok(tch::Device::Cpu)
            }
            DeviceChoice::Cuda => {
                if tch::Cuda::is_available() {
                    Ok(tch::Device::Cuda(0))
                } else {
                    Err(ModelError::NoCuda)
                }
            }
        }
    }
}

/// Makes glibc's malloc keep the memory of freed tensors for reuse (once per process; a CPU model does it).
///
/// libtorch allocates a training step's activations and gradients, hundreds of KB each, with malloc. glibc serves a
/// block above its mmap threshold with a fresh mapping and unmaps it on free; the threshold rises only when such a
/// block is freed, and a step whose big blocks come and go in another order keeps some of them on mmap. Each such
/// block costs a page fault and a zeroed page per 4 KB, every step: 1,000 to 2,000 faults per TempoNet training
/// step on a batch of 64 windows, and 16 % of its throughput. A fixed threshold at glibc's ceiling (32 MB) and a
/// trim threshold of 128 MB keep them in the heap; a process holds at most that much freed memory back.
pub fn keep_freed_tensor_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: mallopt only sets allocator parameters; it is called once, before this process's models
            // allocate, and glibc serialises it against allocation.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
                libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
            }
        });
    }
}

/// Summed per-task negative log-likelihoods (nats) and how many events each sum covers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskNll {
    pub sum: [f64; N_TASKS],
    pub count: [u64; N_TASKS],
}

impl TaskNll {
    pub fn add_task(&mut self, task: usize, nll: f64) {
        self.sum[task] += nll;
        self.count[task] += 1;
    }
    pub fn merge(&mut self, o: &TaskNll) {
        for i in 0..N_TASKS {
            self.sum[i] += o.sum[i];
            self.count[i] += o.count[i];
        }
    }
    /// Mean NLL per event of a task; `None` where the task had no event.
    pub fn mean(&self, task: usize) -> Option<f64> {
        (self.count[task] > 0).then(|| self.sum[task] / self.count[task] as f64)
    }
    /// Sum of the eight per-flow tasks' means (the address task is left out: it is scored on different events
    /// by different models).
    pub fn flow_total(&self) -> f64 {
        (0..features::task::ADDRESS)
            .filter_map(|t| self.mean(t))
            .sum()
    }
}

impl fmt::Display for TaskNll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in TASKS.iter().enumerate() {
            match self.mean(i) {
                Some(m) => writeln!(f, "  {name:<17} {m:>9.4}  ({} events)", self.count[i])?,
                None => writeln!(f, "  {name:<17} {:>9}", "-")?,
            }
        }
        write!(
            f,
            "  {:<17} {:>9.4}",
            "total (flow tasks)",
            self.flow_total()
        )
    }
}

/// A run of consecutive flows of one host pair: the unit of training, scoring and streaming.
///
/// `events` are in time order. If `starts_pair`, `events[0]` is the pair's first flow ever and is predicted from
/// the start token (its inter-arrival is not scored); otherwise `events[0]` is context only, and `prev_start_us`
/// is the start of the flow before it (if known), used for its inter-arrival input feature. `score[i]` says
/// whether event `i` counts in losses (context events have `false`); it has the length of `events`.
///
/// `quiet_until_us` is set on a pair's last window when the data is known to hold no later flow of the pair up to
/// that time (the end of the data the window was cut from): if that is more than the silence threshold after the
/// last event, the pair went silent after it (a labelled silence mark); otherwise, and when `None`, the mark of the
/// last event is unknown. Marks of the other events follow from the next event's time.
///
/// `session_pos` is the position of `events[0]` in its session (flows of the pair's session before it; 0 when it
/// starts one, as a pair's first flow does). Whoever cuts windows from a longer history knows it; 0 when unknown.
#[derive(Clone, Debug, PartialEq)]
pub struct PairWindow {
    pub pair: HostPair,
    pub starts_pair: bool,
    pub prev_start_us: Option<i64>,
    pub events: Vec<FlowRecord>,
    pub score: Vec<bool>,
    pub quiet_until_us: Option<i64>,
    pub session_pos: u32,
}

impl PairWindow {
    /// The silence mark after event `i` (see [`features::sessions::ended_after`]): known within the window from
    /// the next event, and for the last event only through `quiet_until_us`.
    pub fn ended_after(&self, i: usize, silence_us: i64) -> Option<bool> {
        match self.events.get(i + 1) {
            Some(n) => Some(n.start_us - self.events[i].start_us > silence_us),
            None => self
                .quiet_until_us
                .filter(|q| q - self.events[i].start_us > silence_us)
                .map(|_| true),
        }
    }
}

/// Cuts records into [`PairWindow`]s of at most `len` predicted events per pair. Consecutive windows of a pair
/// overlap by one event (the last target of one window is the first, context-only input of the next), which is
/// exactly how generation restarts its bounded history. `scored(i)` says whether record `i` (its index in
/// `records`) is scored. A pair's last window gets `quiet_until_us`: the latest start in `records`.
pub fn pair_windows(
    records: &[FlowRecord],
    len: usize,
    scored: impl Fn(usize) -> bool,
) -> Vec<PairWindow> {
    pair_windows_with(records, len, scored, None)
}

/// [`pair_windows`] that also sets each window's `session_pos` under the silence threshold `silence_us` (0
/// everywhere when `None`).
pub fn pair_windows_with(
    records: &[FlowRecord],
    len: usize,
    scored: impl Fn(usize) -> bool,
    silence_us: Option<i64>,
) -> Vec<PairWindow> {
    let len = len.max(1);
    let mut index: std::collections::HashMap<HostPair, usize> = std::collections::HashMap::new();
    let mut seqs: Vec<Vec<usize>> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let k = *index.entry(r.pair()).or_insert_with(|| {
            seqs.push(Vec::new());
            seqs.len() - 1
        });
        seqs[k].push(i);
    }
    let data_end = records.iter().map(|r| r.start_us).max().unwrap_or(0);
    let mut out = Vec::new();
    for mut s in seqs {
        s.sort_by_key(|&i| records[i].start_us);
        let pair = records[s[0]].pair();
        let session_pos = match silence_us {
            Some(si) => features::sessions::positions(
                &s.iter().map(|&i| records[i].start_us).collect::<Vec<_>>(),
                0,
                si,
            ),
            None => vec![0; s.len()],
        };
        let mut first = true;
        let mut pos = 0usize; // index in s of the window's first event
        while pos < s.len() {
            let (lo, hi) = if first {
                (0, len.min(s.len()))
            } else {
                (pos, (pos + len + 1).min(s.len()))
            };
            if hi - lo < if first { 1 } else { 2 } {
                break;
            }
            let idx = &s[lo..hi];
            let w = PairWindow {
                pair,
                starts_pair: first,
                prev_start_us: (!first && lo > 0).then(|| records[s[lo - 1]].start_us),
                events: idx.iter().map(|&i| records[i].clone()).collect(),
                score: idx
                    .iter()
                    .enumerate()
                    .map(|(j, &i)| (first || j > 0) && scored(i))
                    .collect(),
                quiet_until_us: (hi == s.len()).then_some(data_end),
                session_pos: session_pos[lo],
            };
            out.push(w);
            pos = hi - 1;
            first = false;
            if hi == s.len() {
                break;
            }
        }
    }
    out
}

/// Options of [`Model::fit`].
#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Passes over the training windows (the most, with `validation`).
    pub epochs: usize,
    pub device: DeviceChoice,
    pub seed: u64,
    /// Early stopping for the gradient-trained models: after every epoch the validation flows are scored; an
    /// epoch that does not improve the best flow-task NLL puts the best parameters back and halves the learning
    /// rate, and the fit stops after `patience` such epochs in a row, keeping the best epoch's parameters. The
    /// learning rate then follows the validation NLL instead of a linear decay over `epochs` (which, with a generous
    /// epoch limit, hardly decays before the stop). Without it every epoch runs and the last parameters stay.
    pub validation: Option<std::sync::Arc<Validation>>,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            epochs: 5,
            device: DeviceChoice::Cpu,
            seed: 0,
            validation: None,
        }
    }
}

/// Flows held out of the fit to choose its length: `records`, scored with `context` (the flows before them) as
/// history. See [`FitOptions::validation`].
#[derive(Clone, Debug)]
pub struct Validation {
    pub context: Vec<FlowRecord>,
    pub records: Vec<FlowRecord>,
    pub patience: usize,
}

impl Validation {
    /// A validation share must be in `[0, 1)` (0: no early stopping). Callers may check it before reading data.
    pub fn check_share(share: f64) -> Result<(), ModelError> {
        if (0.0..1.0).contains(&share) {
            Ok(())
        } else {
            Err(ModelError::Invalid(format!(
                "the validation share must be in [0, 1), got {share}"
            )))
        }
    }

    /// Splits training flows for early stopping: the last `share` of them (in file order) become the validation
    /// flows of a gradient-trained model, the rest the flows it fits. The independent baseline, a share of 0, or
    /// too few flows give no validation, and every flow is fitted. A share outside `[0, 1)` is an error.
    #[allow(clippy::type_complexity)]
    pub fn split(
        kind: ModelKind,
        train: &[FlowRecord],
        share: f64,
        patience: usize,
    ) -> Result<(&[FlowRecord], Option<std::sync::Arc<Validation>>), ModelError> {
        Self::check_share(share)?;
        if kind == ModelKind::Independent {
            return Ok((train, None));
        }
        let (fit, val) = split_holdout(train, share);
        if val.is_empty() || fit.len() < 2 {
            return Ok((train, None));
        }
        let v = Validation {
            context: fit.to_vec(),
            records: val.to_vec(),
            patience: patience.max(1),
        };
        Ok((fit, Some(std::sync::Arc::new(v))))
    }
}

/// Early stopping's bookkeeping inside a fit (see [`FitOptions::validation`]).
pub(crate) struct EarlyStop {
    best: f64,
    best_params: Option<Vec<f32>>,
    stale: usize,
    /// Factor on the configured learning rate (halved at every epoch without improvement).
    lr_scale: f64,
    /// Flow-task NLL on the validation flows after each epoch so far.
    pub history: Vec<f64>,
}

impl EarlyStop {
    pub(crate) fn new() -> EarlyStop {
        EarlyStop {
            best: f64::INFINITY,
            best_params: None,
            stale: 0,
            lr_scale: 1.0,
            history: Vec::new(),
        }
    }

    /// Scores the validation flows after an epoch, keeps the parameters if they are the best so far; true when
    /// the fit should stop.
    pub(crate) fn after_epoch<M: FlowModel + ?Sized>(
        &mut self,
        m: &mut M,
        v: &Validation,
    ) -> Result<bool, ModelError> {
        let nll = m.heldout_nll(&v.context, &v.records)?.flow_total();
        self.history.push(nll);
        if nll < self.best - 1e-4 {
            self.best = nll;
            self.best_params = Some(m.params());
            self.stale = 0;
        } else {
            self.stale += 1;
            self.lr_scale *= 0.5;
            if let Some(p) = &self.best_params {
                m.set_params(p)?;
            }
        }
        Ok(self.stale >= v.patience.max(1))
    }

    /// The factor on the configured learning rate for batch `batch` of `batches` in epoch `epoch` (from 0): a
    /// linear decay to a tenth over the fit (the last iterates settle instead of jittering), or, with early
    /// stopping, halved at every epoch that did not improve the validation NLL.
    pub(crate) fn lr_factor(
        &self,
        opts: &FitOptions,
        epoch: usize,
        batch: usize,
        batches: usize,
    ) -> f64 {
        if opts.validation.is_some() {
            return self.lr_scale;
        }
        let done = (epoch * batches + batch) as f64 / (opts.epochs * batches).max(1) as f64;
        1.0 - 0.9 * done
    }

    /// The end of an epoch of a fit with `opts`: with validation flows, scores them (see
    /// [`EarlyStop::after_epoch`]) and reports the figure; true when the fit should stop.
    pub(crate) fn end_epoch<M: FlowModel + ?Sized>(
        &mut self,
        m: &mut M,
        opts: &FitOptions,
        epoch: usize,
        batches: usize,
        progress: &mut dyn FnMut(&FitProgress),
    ) -> Result<bool, ModelError> {
        let Some(v) = &opts.validation else {
            return Ok(false);
        };
        let stop = self.after_epoch(m, v)?;
        progress(&FitProgress {
            epoch,
            epochs: opts.epochs,
            batch: batches,
            batches,
            batch_nll: TaskNll::default(),
            validation_nll: self.last(),
        });
        Ok(stop)
    }

    /// Puts the best epoch's parameters back (the version counter keeps counting steps).
    pub(crate) fn restore<M: FlowModel + ?Sized>(self, m: &mut M) -> Result<(), ModelError> {
        match self.best_params {
            Some(p) => m.set_params(&p),
            None => Ok(()),
        }
    }

    /// The latest epoch's validation NLL and the epoch's number, for progress reports.
    pub(crate) fn last(&self) -> Option<(usize, f64)> {
        self.history.last().map(|v| (self.history.len(), *v))
    }
}

/// Progress of a fit: reported after every batch.
#[derive(Clone, Debug)]
pub struct FitProgress {
    pub epoch: usize,
    pub epochs: usize,
    pub batch: usize,
    pub batches: usize,
    /// Mean per-task NLL of the last batch.
    pub batch_nll: TaskNll,
    /// With early stopping: the flow-task NLL on the validation flows after the latest scored epoch, and that
    /// epoch's number (a fit reports once more after each epoch's scoring).
    pub validation_nll: Option<(usize, f64)>,
}

/// How many flows to generate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GenLimit {
    /// Exactly this many flows (the earliest ones of the generated process).
    Count(u64),
    /// Every flow starting within this many microseconds of the start.
    SpanUs(i64),
}

/// Which host pairs generated flows use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairSource {
    /// Pairs seen in training, each continuing from its last seen flow.
    Observed,
    /// Pairs drawn by the pair-arrival part (new addresses, never copied from training).
    Synthetic,
}

impl std::str::FromStr for PairSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "observed" => Ok(PairSource::Observed),
            "synthetic" => Ok(PairSource::Synthetic),
            _ => Err(format!("unknown pair source {s:?} (observed or synthetic)")),
        }
    }
}

/// A generation request.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub start_us: i64,
    pub limit: GenLimit,
    pub seed: u64,
    pub pairs: PairSource,
    /// Safety cap: generation stops with an error once this many flows exist (a model whose pairs burst without
    /// end would otherwise run for ever on a long span).
    pub max_flows: u64,
}

impl GenerateRequest {
    pub const DEFAULT_MAX_FLOWS: u64 = 20_000_000;
    pub fn new(start_us: i64, limit: GenLimit, seed: u64, pairs: PairSource) -> GenerateRequest {
        GenerateRequest {
            start_us,
            limit,
            seed,
            pairs,
            max_flows: Self::DEFAULT_MAX_FLOWS,
        }
    }
}

/// Generated flows (sorted by start time) and the repairs sampling needed.
#[derive(Clone, Debug, Default)]
pub struct Generated {
    pub flows: Vec<FlowRecord>,
    pub repairs: RepairCounts,
    /// Lane sessions started (pairs, or hosts for STAN, counted once per session).
    pub lane_sessions: u64,
    /// Sessions ended by the session-length guard rather than by the model ([`session::SESSION_GUARD`]).
    pub sessions_guarded: u64,
}

/// What each model implements. Use it through [`Model`].
pub trait FlowModel: Send {
    fn kind(&self) -> ModelKind;
    fn space(&self) -> &FeatureSpace;
    /// Fits on training records (already read, any order).
    fn fit(
        &mut self,
        records: &[FlowRecord],
        opts: &FitOptions,
        progress: &mut dyn FnMut(&FitProgress),
    ) -> Result<(), ModelError>;
    /// One optimisation step (or sufficient-statistics update) on a batch of windows; returns the batch's NLL.
    /// Borrowed windows: the streaming trainer mixes fresh windows with replayed ones it keeps, and copying each
    /// into a batch cost more than some models' whole step.
    fn train_batch(&mut self, windows: &[&PairWindow]) -> Result<TaskNll, ModelError>;
    /// Summed per-task NLL of the scored events of the windows (no parameter change).
    fn windows_nll(&self, windows: &[PairWindow]) -> Result<TaskNll, ModelError>;
    /// Per scored event, the sum of its task NLLs (windows in order, events in order).
    fn event_losses(&self, windows: &[PairWindow]) -> Result<Vec<f32>, ModelError>;
    /// Per-task NLL of `heldout` given `context` (earlier flows, typically the training part).
    fn heldout_nll(
        &self,
        context: &[FlowRecord],
        heldout: &[FlowRecord],
    ) -> Result<TaskNll, ModelError>;
    /// No lanes yet, with this model's kind of lane state (a new [`GenSession`]).
    fn new_lanes(&self) -> Lanes;
    /// The lanes seen in training (STAN: one per source host), in the order of the model's table that
    /// [`LaneStart::Observed`] and [`LaneStart::Reactivate`] index.
    fn observed_lanes(&self) -> Vec<ObservedLane>;
    /// Sets lane `i`'s state (pushing a new state when `i` is the number of states) to continue from `from`. The
    /// lane's head (pair, random stream, `not_before`) is already set.
    fn start_lane(&self, lanes: &mut Lanes, i: usize, from: &LaneStart) -> Result<(), ModelError>;
    /// Draws the next flow of each lane in `active` (all live, none holding a flow) into its head.
    fn step_lanes(&self, lanes: &mut Lanes, active: &[usize]) -> Result<(), ModelError>;
    /// The new-pair part (arrival rate and address model).
    fn pair_arrivals(&self) -> &pair_arrival::PairArrivals;
    fn params(&self) -> Vec<f32>;
    fn set_params(&mut self, flat: &[f32]) -> Result<(), ModelError>;
    /// The configured learning rate of online training (0 for models fitted by counting).
    fn base_learning_rate(&self) -> f64 {
        0.0
    }
    /// Sets the learning rate of the next [`FlowModel::train_batch`] steps (streaming: raised after a drift).
    fn set_learning_rate(&mut self, _lr: f64) -> Result<(), ModelError> {
        Ok(())
    }
    fn version(&self) -> u64;
    fn set_version(&mut self, v: u64);
    /// Config, vocabularies and statistics as JSON (the model file header).
    fn header(&self) -> serde_json::Value;
    /// Weights as bytes (empty for models without a network).
    fn weights(&self) -> Result<Vec<u8>, ModelError>;
    /// Chooses how generation steps run on the CPU; models without a network have one way only.
    fn set_step_engine(&mut self, _engine: StepEngine) {}
    /// Streaming: what the model keeps of each pair (its longest session, its habits) follows the fresh windows,
    /// trained on or not. Built from a warm-up hour, those tables went stale: a day's sessions are longer than a
    /// night's, and twins held to them fell short (see `session::SESSION_GUARD`). STAN's lanes are per source
    /// host and keep their training tables.
    fn observe_windows(&mut self, _windows: &[PairWindow]) {}
}

/// How a network's generation steps run on the CPU (a CUDA model always steps on libtorch). Both give the same
/// distributions (the same numbers up to float rounding); `Native` is faster, `Libtorch` is the reference.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StepEngine {
    /// Plain Rust over the parameters' memory (`temponet::native`).
    #[default]
    Native,
    /// libtorch operations, as on CUDA.
    Libtorch,
}

impl std::str::FromStr for StepEngine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "native" => Ok(StepEngine::Native),
            "libtorch" => Ok(StepEngine::Libtorch),
            _ => Err(format!("unknown step engine {s:?} (native or libtorch)")),
        }
    }
}

/// A trained or trainable model of any kind.
pub struct Model(pub Box<dyn FlowModel>);

/// Sizes of every model, one place (each model has its own section, with defaults).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelConfig {
    pub temponet: temponet::TempoNetConfig,
    pub stan: stan::StanConfig,
    pub independent: independent::IndependentConfig,
}

impl Model {
    /// A new, untrained model whose feature space is fitted on `records`.
    pub fn new(
        kind: ModelKind,
        config: &ModelConfig,
        records: &[FlowRecord],
        device: DeviceChoice,
    ) -> Result<Model, ModelError> {
        Ok(Model(match kind {
            ModelKind::TempoNet => Box::new(temponet::TempoNet::new(
                config.temponet.clone(),
                records,
                device.device()?,
            )?),
            ModelKind::Stan => Box::new(stan::Stan::new(
                config.stan.clone(),
                records,
                device.device()?,
            )?),
            ModelKind::Independent => Box::new(independent::Independent::new(
                config.independent.clone(),
                records,
            )),
        }))
    }
    /// Builds and fits in one call.
    pub fn fit_new(
        kind: ModelKind,
        config: &ModelConfig,
        records: &[FlowRecord],
        opts: &FitOptions,
        progress: &mut dyn FnMut(&FitProgress),
    ) -> Result<Model, ModelError> {
        let mut m = Model::new(kind, config, records, opts.device)?;
        m.0.fit(records, opts, progress)?;
        Ok(m)
    }
    pub fn kind(&self) -> ModelKind {
        self.0.kind()
    }
    /// See [`StepEngine`].
    pub fn set_step_engine(&mut self, engine: StepEngine) {
        self.0.set_step_engine(engine)
    }
    pub fn space(&self) -> &FeatureSpace {
        self.0.space()
    }
    pub fn fit(
        &mut self,
        records: &[FlowRecord],
        opts: &FitOptions,
        progress: &mut dyn FnMut(&FitProgress),
    ) -> Result<(), ModelError> {
        self.0.fit(records, opts, progress)
    }
    pub fn heldout_nll(
        &self,
        context: &[FlowRecord],
        heldout: &[FlowRecord],
    ) -> Result<TaskNll, ModelError> {
        self.0.heldout_nll(context, heldout)
    }
    /// Generates flows for a span or a count from `req.start_us` (deterministic given `req.seed`), sorted by
    /// start time, every flow passing [`compliance::check`]; `progress` gets the number of flows so far. This is a
    /// [`GenSession`] advanced to the end of the span (see [`drive_generation`]).
    pub fn generate(
        &self,
        req: &GenerateRequest,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Generated, ModelError> {
        let mut s = self.open_session(req.seed, req.pairs);
        s.begin(req.start_us);
        if req.pairs == PairSource::Observed {
            s.join_observed(self, req.start_us);
        }
        let flows = drive_generation(
            req,
            self.space(),
            |until, out| s.advance(self, until, out),
            progress,
        )?;
        let mut g = Generated {
            flows,
            repairs: s.repairs().clone(),
            lane_sessions: s.lanes_created(),
            sessions_guarded: s.guarded(),
        };
        audit(
            &mut g.flows,
            self.space().single_packet_duration,
            &mut g.repairs,
        );
        Ok(g)
    }
    /// A generation session: no lanes yet; see [`GenSession::join`], [`GenSession::join_observed`] and
    /// [`GenSession::advance`]. With `PairSource::Synthetic`, advancing also draws new pairs.
    pub fn open_session(&self, seed: u64, pairs: PairSource) -> GenSession {
        GenSession::new(self, seed, pairs)
    }
    /// See [`FlowModel::observe_windows`].
    pub fn observe_windows(&mut self, windows: &[PairWindow]) {
        self.0.observe_windows(windows)
    }
    pub fn train_batch(&mut self, windows: &[&PairWindow]) -> Result<TaskNll, ModelError> {
        let r = self.0.train_batch(windows)?;
        let v = self.0.version();
        self.0.set_version(v + 1);
        Ok(r)
    }
    pub fn windows_nll(&self, windows: &[PairWindow]) -> Result<TaskNll, ModelError> {
        self.0.windows_nll(windows)
    }
    pub fn event_losses(&self, windows: &[PairWindow]) -> Result<Vec<f32>, ModelError> {
        self.0.event_losses(windows)
    }
    /// All parameters as one flat vector (a fixed order per model and config), for averaging across workers.
    pub fn params(&self) -> Vec<f32> {
        self.0.params()
    }
    /// Replaces all parameters; `flat` must come from [`Model::params`] of a model of the same kind and config.
    pub fn set_params(&mut self, flat: &[f32], version: u64) -> Result<(), ModelError> {
        self.0.set_params(flat)?;
        self.0.set_version(version);
        Ok(())
    }
    /// The configured learning rate of online training (0 for models fitted by counting).
    pub fn base_learning_rate(&self) -> f64 {
        self.0.base_learning_rate()
    }
    /// Sets the learning rate of the next [`Model::train_batch`] steps.
    pub fn set_learning_rate(&mut self, lr: f64) -> Result<(), ModelError> {
        self.0.set_learning_rate(lr)
    }
    /// Counts parameter updates (training steps and parameter replacements); travels with parameters.
    pub fn version(&self) -> u64 {
        self.0.version()
    }
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        file::save(path, self)
    }
    pub fn load(path: &Path, device: DeviceChoice) -> Result<Model, ModelError> {
        file::load(path, device)
    }
}

/// A network's Adam optimiser, built at its first use with learning rate `lr` (shared by the networks' training
/// steps and [`set_adam_lr`]; `table` marks the parameters updated by rows, see [`adam`]).
pub(crate) fn adam_of<'o>(
    opt: &'o mut Option<adam::Adam>,
    vs: &tch::nn::VarStore,
    table: fn(&str) -> bool,
    lr: f64,
) -> &'o mut adam::Adam {
    opt.get_or_insert_with(|| adam::Adam::new(vs, lr, table))
}

/// Sets a network's Adam learning rate, building the optimiser first if no step has run yet (the networks'
/// [`FlowModel::set_learning_rate`]).
pub(crate) fn set_adam_lr(
    opt: &mut Option<adam::Adam>,
    vs: &tch::nn::VarStore,
    table: fn(&str) -> bool,
    lr: f64,
) -> Result<(), ModelError> {
    adam_of(opt, vs, table, lr).set_lr(lr);
    Ok(())
}

/// Splits records (in file order) into the first `1 - holdout` and the last `holdout` fraction.
pub fn split_holdout(records: &[FlowRecord], holdout: f64) -> (&[FlowRecord], &[FlowRecord]) {
    let n = records.len();
    let cut = n - ((n as f64 * holdout.clamp(0.0, 1.0)).round() as usize).min(n);
    records.split_at(cut)
}

/// Shared by the models: the context+held-out records and which of them are scored.
pub(crate) fn heldout_windows(
    context: &[FlowRecord],
    heldout: &[FlowRecord],
    len: usize,
    silence_us: i64,
) -> Vec<PairWindow> {
    let mut all = Vec::with_capacity(context.len() + heldout.len());
    all.extend_from_slice(context);
    all.extend_from_slice(heldout);
    let n = context.len();
    pair_windows_with(&all, len, |i| i >= n, Some(silence_us))
        .into_iter()
        .filter(|w| w.score.iter().any(|s| *s))
        .collect()
}

/// Generation driver of [`Model::generate`]: advances a session over geometrically growing horizons (for a span up
/// to its end; for a count, using the training event rate as the first guess, until enough flows exist, then keeps
/// the earliest `n`). A session advanced in pieces gives exactly the flows of one call, so the horizons change only
/// when the runaway cap and the progress reports are checked.
pub(crate) fn drive_generation(
    req: &GenerateRequest,
    space: &FeatureSpace,
    mut run_until: impl FnMut(i64, &mut Vec<FlowRecord>) -> Result<(), ModelError>,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<FlowRecord>, ModelError> {
    let mut out = Vec::new();
    // Horizons grow geometrically from a small first guess, so a count is reached without running every lane
    // over a long span, and a runaway (a pair that keeps bursting) is caught by the cap between rounds.
    let rate = space.events.max(1) as f64 / space.span_us() as f64;
    let (mut horizon, target) = match req.limit {
        GenLimit::SpanUs(span) => {
            let span = span.max(0) as f64;
            ((span / 64.0).max(1e6).min(span), Some(span))
        }
        GenLimit::Count(n) => (((n as f64 / rate) / 64.0).max(1e6), None),
    };
    let mut rounds = 0;
    loop {
        run_until(req.start_us.saturating_add(horizon as i64), &mut out)?;
        let done = match (req.limit, target) {
            (GenLimit::Count(n), _) => {
                progress(out.len().min(n as usize) as u64);
                out.len() as u64 >= n
            }
            (_, Some(span)) => {
                progress(out.len() as u64);
                horizon >= span
            }
            _ => true,
        };
        if done {
            break;
        }
        if out.len() as u64 > req.max_flows {
            return Err(ModelError::Invalid(format!(
                "more than {} flows within the first {:.0} s: the model's pairs burst without end (raise the cap or train longer)",
                req.max_flows,
                horizon / 1e6
            )));
        }
        rounds += 1;
        if rounds > 80 {
            return Err(ModelError::Invalid(format!(
                "generated only {} flows within {:.0} s: the model's pairs fell silent",
                out.len(),
                horizon / 1e6
            )));
        }
        horizon *= match req.limit {
            // A count: aim a quarter past where the rate so far reaches it, at most doubling. Flows past the
            // count are drawn and dropped, and always doubling drew up to twice the count (about 1.9 times on the
            // model benchmark). The flows kept do not depend on the horizons (a session advanced in pieces gives
            // the flows of one call).
            GenLimit::Count(n) if !out.is_empty() => {
                (1.25 * n as f64 / out.len() as f64).clamp(1.25, 2.0)
            }
            _ => 2.0,
        };
        if let Some(span) = target {
            horizon = horizon.min(span);
        }
    }
    if let GenLimit::Count(n) = req.limit {
        out.truncate(n as usize);
    }
    Ok(out)
}

/// Final compliance pass over generated flows: counts (and, being a bug, repairs) any flow that breaks a rule.
pub(crate) fn audit(
    flows: &mut [FlowRecord],
    single_packet_duration: bool,
    repairs: &mut RepairCounts,
) {
    for r in flows.iter_mut() {
        if compliance::check(r, single_packet_duration).is_err() {
            repairs.sample_violations += 1;
            r.packets = r.packets.max(1);
            let lo = crate::record::proto::min_packet_bytes(r.proto) * r.packets;
            r.bytes = r.bytes.clamp(lo, 65535 * r.packets);
            if r.proto != crate::record::proto::TCP {
                r.flags.0 = 0;
            }
            if !crate::record::proto::has_ports(r.proto) {
                r.src_port = 0;
                r.dst_port = 0;
            }
            if r.packets == 1 && !single_packet_duration {
                r.duration_us = 0;
            }
        }
    }
}
