//! `trainer`: incremental training of each worker's model replica on the pairs the worker owns.
//!
//! # Inputs (one stream, pipeline pact, all on this worker)
//! - [`TrainerInput::Window`]: [`FreshWindow`]s of the pairs this worker owns (from `pair_history`).
//! - [`TrainerInput::Warmup`]: while no model exists, every flow of every worker (broadcast), to build the model
//!   from the same data on every worker.
//! - [`TrainerInput::Averaged`]: averaged parameters from [`crate::param_average`], arriving through a feedback
//!   edge one epoch after the shares they average.
//!
//! # Epochs
//! Work happens when the input frontier passes epoch `t` (all of `t`'s windows, warm-up flows and averaged
//! parameters are in), in this order: apply averaged parameters; build the model if the warm-up is complete;
//! score the fresh windows with the current model (prequential loss: each event is scored before the model
//! trains on it, the honest live loss and what drift detection watches); train; every `average_every` epochs
//! emit this worker's parameters as a [`ParamShare`] at `t`.
//!
//! # Model replicas stay in step
//! The model is built at the first epoch `t` at which the warm-up (flows of epochs `<= t`, identical on every
//! worker because they are broadcast and `t` is closed) holds at least `warmup_flows` flows over at least
//! `warmup_epochs` epochs. Worker 0 builds *and fits* it; the others build the same structure (same feature
//! space, vocabularies and statistics: they are functions of the same warm-up flows) without training, and every
//! worker shares its parameters at `t`, worker 0 with all the weight. Until a worker has received that first
//! average (at `t + 1`) it neither trains nor generates ([`ModelSlot::ready`]). From then on every averaging round
//! replaces every replica's parameters by the event-weighted mean (local SGD / federated averaging); the model
//! version travels with the parameters (the average's version is the largest version shared, plus one).
//!
//! # Not forgetting
//! Training batches mix the epoch's fresh windows with windows drawn from a reservoir (uniform sample of every
//! window seen, Vitter's algorithm R), `replay_fraction` of each batch.
//!
//! # Drift
//! Each trainer runs a [`DriftMonitor`] on its own shard: Page-Hinkley and ADWIN on the prequential per-event loss,
//! PSI on the real marginals of its pairs' fresh events every `psi_epochs` epochs. On a detection that says the
//! world changed (a loss *increase*, or a PSI above threshold) it multiplies the learning rate by `drift_lr_boost`
//! for `drift_boost_epochs` epochs (the boost then decays geometrically back to 1) and replaces
//! `drift_refresh` of the reservoir with the most recent windows, so replay stops pulling the model back to the old
//! regime. Every detection travels in [`TrainerStats::drift`] to the metrics topic.

use crate::epoch_stash::EpochStash;
use crate::fresh_windows::FreshWindow;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use temponet::FlowRecord;
use temponet::drift::{DriftEvent, DriftMonitor, DriftMonitorConfig, WindowMarginals};
use temponet::model::{
    DeviceChoice, FitOptions, Model, ModelConfig, ModelError, ModelKind, PairWindow,
};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

/// The model replica of one worker, shared by its trainer and generator (same thread: `Rc`).
#[derive(Default)]
pub struct ModelSlot {
    pub model: Option<Model>,
    /// The replica holds the common parameters (built from a file, or received the first average).
    pub ready: bool,
    /// The epoch at which the model was built (no synthetic flow is generated for earlier epochs).
    pub built_at: Option<u64>,
}

pub type SharedModel = Rc<RefCell<ModelSlot>>;

/// Where the model comes from.
#[derive(Clone, Debug)]
pub enum ModelStart {
    /// A trained model file, loaded on every worker.
    File(PathBuf),
    /// Built from the first flows of the stream.
    Warmup {
        kind: ModelKind,
        config: ModelConfig,
        /// At least this many flows...
        min_flows: usize,
        /// ...over at least this many epochs (counted from the first epoch with a flow).
        min_epochs: u64,
        /// Passes of worker 0's initial fit over the warm-up flows.
        fit_epochs: usize,
    },
}

/// Configuration of [`trainer`].
#[derive(Clone, Debug)]
pub struct TrainerConfig {
    pub start: ModelStart,
    pub device: DeviceChoice,
    pub seed: u64,
    /// Learn online (off: the model only scores and generates).
    pub train: bool,
    /// Windows per training step.
    pub batch_windows: usize,
    /// Most steps per epoch (fresh windows beyond them are not trained on; they still enter the reservoir).
    pub max_steps_per_epoch: usize,
    /// Fraction of each batch drawn from the reservoir.
    pub replay_fraction: f64,
    /// Windows kept in the reservoir.
    pub reservoir: usize,
    /// Epochs between parameter averaging rounds.
    pub average_every: u64,
    /// Fresh windows are scored and trained on once this many are pending...
    pub min_pending_windows: usize,
    /// ...or the oldest has waited this many epochs (small steps cost nearly as much as full ones).
    pub max_wait_epochs: u64,
    pub drift: DriftMonitorConfig,
    /// Epochs of real marginals per PSI comparison.
    pub psi_epochs: u64,
    /// Learning-rate multiplier right after a drift.
    pub drift_lr_boost: f64,
    /// Epochs over which the boost decays back to 1.
    pub drift_boost_epochs: u64,
    /// Fraction of the reservoir replaced by recent windows on a drift.
    pub drift_refresh: f64,
}

impl TrainerConfig {
    pub fn new(start: ModelStart) -> Self {
        TrainerConfig {
            start,
            device: DeviceChoice::Cpu,
            seed: 0,
            train: true,
            batch_windows: 64,
            max_steps_per_epoch: 8,
            replay_fraction: 0.25,
            reservoir: 4096,
            average_every: 10,
            min_pending_windows: 48,
            max_wait_epochs: 10,
            drift: DriftMonitorConfig::default(),
            psi_epochs: 60,
            drift_lr_boost: 3.0,
            drift_boost_epochs: 30,
            drift_refresh: 0.5,
        }
    }
}

/// Parameters averaged over workers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AveragedParams {
    pub version: u64,
    pub params: Vec<f32>,
    /// Workers whose shares went into it.
    pub workers: usize,
}

/// One worker's parameters for an averaging round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParamShare {
    pub worker: usize,
    pub version: u64,
    /// Events trained on since the previous round (the share's weight in the mean).
    pub weight: f64,
    pub params: Vec<f32>,
}

/// What the trainer reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TrainerInput {
    /// Shared with the generator, which reads the same windows (an `Arc`, so the stream's two readers do not
    /// each get a deep copy of every window).
    Window(std::sync::Arc<FreshWindow>),
    Warmup(FlowRecord),
    Averaged(AveragedParams),
}

/// What the trainer did in one epoch on one worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerStats {
    pub worker: usize,
    pub epoch: u64,
    pub model_version: u64,
    /// Fresh events scored before training (prequential).
    pub events_scored: u64,
    /// Sum of their losses (nats; the sum of the model's per-task NLLs).
    pub loss_sum: f64,
    pub train_steps: u64,
    /// Fresh events the steps trained on (replayed events not counted).
    pub events_trained: u64,
    /// Fresh windows left untrained by the step cap.
    pub windows_skipped: u64,
    /// Averaged parameters applied in this epoch.
    pub averages_applied: u64,
    /// Drift detections of this epoch.
    pub drift: Vec<DriftEvent>,
    /// The learning rate in force (the configured rate, times the boost after a drift).
    pub learning_rate: f64,
}

/// What the trainer emits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum TrainerOut {
    Stats(TrainerStats),
    Share(ParamShare),
}

struct State {
    cfg: TrainerConfig,
    worker: usize,
    slot: SharedModel,
    rng: StdRng,
    warmup: Vec<FlowRecord>,
    first_epoch: Option<u64>,
    reservoir: Vec<PairWindow>,
    seen_windows: u64,
    trained_since_share: f64,
    /// Fresh windows not yet scored nor trained on, and the epoch the oldest arrived.
    pending: Vec<PairWindow>,
    pending_since: Option<u64>,
    monitor: DriftMonitor,
    marginals: WindowMarginals,
    marginals_from: Option<u64>,
    /// Epochs left of a drift's learning-rate boost.
    boost_left: u64,
}

/// Builds the operator; `slot` is this worker's model replica, shared with the generator.
pub fn trainer<'s>(
    input: Stream<'s, u64, Vec<TrainerInput>>,
    cfg: TrainerConfig,
    slot: SharedModel,
) -> Result<Stream<'s, u64, Vec<TrainerOut>>, ModelError> {
    let worker = input.scope().index();
    if let ModelStart::File(path) = &cfg.start {
        let model = Model::load(path, cfg.device)?;
        let mut s = slot.borrow_mut();
        s.model = Some(model);
        s.ready = true;
        s.built_at = Some(0);
    }
    let cfg_drift = cfg.drift;
    let mut st = State {
        rng: StdRng::seed_from_u64(cfg.seed ^ (worker as u64).wrapping_mul(0x9e37_79b9)),
        cfg,
        worker,
        slot,
        warmup: Vec::new(),
        first_epoch: None,
        reservoir: Vec::new(),
        seen_windows: 0,
        trained_since_share: 0.0,
        pending: Vec::new(),
        pending_since: None,
        monitor: DriftMonitor::new(cfg_drift),
        marginals: WindowMarginals::new(),
        marginals_from: None,
        boost_left: 0,
    };
    Ok(
        input.unary_frontier(Pipeline, "Trainer", move |_cap, _info| {
            let mut stash = EpochStash::<TrainerInput>::default();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a time");
                    stash.add(t, || cap.retain_least(0).expect("a capability"), data);
                });
                while let Some((t, cap, items)) = stash.pop_closed(frontier) {
                    let last = stash.is_empty() && frontier.is_empty();
                    let mut out = Vec::new();
                    if let Err(e) = st.epoch(t, items, last, &mut out) {
                        // A torch failure is a bug or an exhausted machine: stop loudly, never train on silently.
                        panic!("trainer on worker {}: epoch {t}: {e}", st.worker);
                    }
                    output.session(&cap).give_iterator(out.into_iter());
                }
            }
        }),
    )
}

impl State {
    /// One closed epoch; `last`: the input has ended (flush what is pending).
    fn epoch(
        &mut self,
        t: u64,
        items: impl IntoIterator<Item = TrainerInput>,
        last: bool,
        out: &mut Vec<TrainerOut>,
    ) -> Result<(), ModelError> {
        let mut windows = Vec::new();
        let mut stats = TrainerStats {
            worker: self.worker,
            epoch: t,
            ..Default::default()
        };
        for item in items {
            match item {
                TrainerInput::Window(w) => {
                    let silence = self
                        .slot
                        .borrow()
                        .model
                        .as_ref()
                        .map(|m| m.space().silence_us);
                    windows.push(w.to_pair_window(silence))
                }
                TrainerInput::Warmup(r) => {
                    if self.slot.borrow().model.is_none() {
                        self.warmup.push(r);
                    }
                }
                TrainerInput::Averaged(a) => {
                    let mut s = self.slot.borrow_mut();
                    if let Some(m) = s.model.as_mut() {
                        m.set_params(&a.params, a.version)?;
                        s.ready = true;
                        stats.averages_applied += 1;
                    }
                }
            }
        }
        let just_built = self.maybe_build(t)?;
        let slot = self.slot.clone();
        let mut s = slot.borrow_mut();
        let ready = s.ready;
        let Some(model) = s.model.as_mut() else {
            return Ok(());
        };
        if ready && !just_built && !windows.is_empty() {
            // What the model keeps of each pair follows the stream as windows arrive (training may wait, and
            // may skip windows): the generator of the same epoch runs after this.
            model.observe_windows(&windows);
            self.pending_since.get_or_insert(t);
            self.pending.append(&mut windows);
        }
        let flush = self.pending_since.is_some_and(|since| {
            last || self.pending.len() >= self.cfg.min_pending_windows
                || t + 1 - since >= self.cfg.max_wait_epochs.max(1)
        });
        if flush {
            self.pending_since = None;
            let windows = std::mem::take(&mut self.pending);
            let losses = model.event_losses(&windows)?;
            stats.events_scored = losses.len() as u64;
            stats.loss_sum = losses.iter().map(|&x| x as f64).sum();
            stats.drift = self.monitor.observe_losses(&losses);
            self.observe_marginals(t, &windows, &mut stats.drift);
            let changed = stats.drift.iter().any(|e| e.increase != Some(false));
            if changed && self.cfg.train {
                self.boost_left = self.cfg.drift_boost_epochs.max(1);
                self.refresh_reservoir(&windows, self.cfg.drift_refresh);
            }
            model.set_learning_rate(model.base_learning_rate() * self.lr_scale())?;
            if self.cfg.train {
                self.train(model, &windows, &mut stats)?;
            }
        }
        self.boost_left = self.boost_left.saturating_sub(1);
        stats.model_version = model.version();
        stats.learning_rate = model.base_learning_rate() * self.lr_scale();
        let share_now = just_built
            || (self.cfg.train && ready && t.is_multiple_of(self.cfg.average_every.max(1)));
        if share_now {
            let weight = if just_built {
                if self.worker == 0 { 1.0 } else { 0.0 }
            } else {
                std::mem::take(&mut self.trained_since_share)
            };
            out.push(TrainerOut::Share(ParamShare {
                worker: self.worker,
                version: model.version(),
                weight,
                params: model.params(),
            }));
        }
        drop(s);
        out.push(TrainerOut::Stats(stats));
        Ok(())
    }

    /// Builds the model once the warm-up is complete; true in the epoch it happens.
    fn maybe_build(&mut self, t: u64) -> Result<bool, ModelError> {
        let ModelStart::Warmup {
            kind,
            config,
            min_flows,
            min_epochs,
            fit_epochs,
        } = &self.cfg.start
        else {
            return Ok(false);
        };
        if self.slot.borrow().model.is_some() {
            return Ok(false);
        }
        if !self.warmup.is_empty() && self.first_epoch.is_none() {
            self.first_epoch = Some(t);
        }
        let Some(first) = self.first_epoch else {
            return Ok(false);
        };
        if self.warmup.len() < *min_flows || t + 1 - first < *min_epochs {
            return Ok(false);
        }
        // The same order on every worker, whatever order the broadcast delivered in.
        self.warmup.sort_by(|a, b| {
            (a.start_us, a.src, a.dst, a.src_port, a.dst_port, a.proto)
                .cmp(&(b.start_us, b.src, b.dst, b.src_port, b.dst_port, b.proto))
        });
        let flows = std::mem::take(&mut self.warmup);
        let opts = FitOptions {
            epochs: if self.worker == 0 { *fit_epochs } else { 0 },
            device: self.cfg.device,
            seed: self.cfg.seed,
            validation: None,
        };
        let model = Model::fit_new(*kind, config, &flows, &opts, &mut |_| {})?;
        let mut s = self.slot.borrow_mut();
        s.model = Some(model);
        s.built_at = Some(t);
        s.ready = self.worker == 0;
        Ok(true)
    }

    fn train(
        &mut self,
        model: &mut Model,
        windows: &[PairWindow],
        stats: &mut TrainerStats,
    ) -> Result<(), ModelError> {
        let bw = self.cfg.batch_windows.max(1);
        let replay = ((bw as f64) * self.cfg.replay_fraction.clamp(0.0, 0.9)).round() as usize;
        let fresh_per_step = (bw - replay).max(1);
        let mut batch: Vec<&PairWindow> = Vec::with_capacity(bw);
        for (i, chunk) in windows.chunks(fresh_per_step).enumerate() {
            if i >= self.cfg.max_steps_per_epoch {
                stats.windows_skipped += chunk.len() as u64;
                continue;
            }
            batch.clear();
            batch.extend(chunk);
            for _ in 0..replay.min(self.reservoir.len()) {
                let j = self.rng.gen_range(0..self.reservoir.len());
                batch.push(&self.reservoir[j]);
            }
            model.train_batch(&batch)?;
            stats.train_steps += 1;
            let fresh: u64 = chunk
                .iter()
                .map(|w| w.score.iter().filter(|s| **s).count() as u64)
                .sum();
            stats.events_trained += fresh;
            self.trained_since_share += fresh as f64;
        }
        for w in windows {
            self.seen_windows += 1;
            if self.reservoir.len() < self.cfg.reservoir {
                self.reservoir.push(w.clone());
            } else {
                let j = self.rng.gen_range(0..self.seen_windows);
                if (j as usize) < self.cfg.reservoir {
                    self.reservoir[j as usize] = w.clone();
                }
            }
        }
        Ok(())
    }

    /// The learning-rate multiplier: `drift_lr_boost` right after a drift, decaying geometrically to 1 over
    /// `drift_boost_epochs`.
    fn lr_scale(&self) -> f64 {
        if self.boost_left == 0 {
            return 1.0;
        }
        let n = self.cfg.drift_boost_epochs.max(1) as f64;
        self.cfg
            .drift_lr_boost
            .max(1.0)
            .powf(self.boost_left as f64 / n)
    }

    /// Accumulates the real marginals of the fresh events; every `psi_epochs` epochs compares them with the
    /// reference (PSI).
    fn observe_marginals(&mut self, t: u64, windows: &[PairWindow], out: &mut Vec<DriftEvent>) {
        let from = *self.marginals_from.get_or_insert(t);
        // In start order across pairs: the marginal inter-arrival is between consecutive flows of the shard.
        let mut fresh: Vec<&FlowRecord> = windows
            .iter()
            .flat_map(|w| {
                w.events
                    .iter()
                    .zip(&w.score)
                    .filter(|(_, s)| **s)
                    .map(|(r, _)| r)
            })
            .collect();
        fresh.sort_by_key(|r| r.start_us);
        for r in fresh {
            self.marginals.add(r);
        }
        if t + 1 - from >= self.cfg.psi_epochs.max(1) {
            let m = std::mem::replace(&mut self.marginals, WindowMarginals::new());
            out.extend(self.monitor.observe_window(from as i64, &m));
            self.marginals_from = None;
        }
    }

    /// Replaces a share of the reservoir with recent windows (after a drift: the old regime is less relevant).
    fn refresh_reservoir(&mut self, recent: &[PairWindow], fraction: f64) {
        let n = ((self.reservoir.len() as f64) * fraction.clamp(0.0, 1.0)) as usize;
        for w in recent.iter().rev().take(n) {
            if self.reservoir.is_empty() {
                break;
            }
            let j = self.rng.gen_range(0..self.reservoir.len());
            self.reservoir[j] = w.clone();
        }
    }
}
