//! The model part of the streaming dataflow, the same behind a Kafka source and behind the embedded one:
//!
//! ```text
//! flows (from the source, before the pair exchange) ─ while no model: broadcast ─┐
//! pair_history ─ FreshWindows ─┬──────────────────────────────────────────────────┴─> trainer ─┬─ stats ─┬─> metrics
//!                              │               ┌── broadcast <─ param_average <─ shares ───────┘        │
//!                              │               └─(feedback, +1 epoch)─> trainer                          │
//!                              └─────────────────────────────────────────> generator <─ ticks ──────────┘
//!                                                                               └─> synthetic flows, stats ─> metrics
//! ```
//!
//! One model replica per worker ([`SharedModel`]), built inside the worker (tensors are not `Sync`) and shared
//! by its trainer and generator. See `temponet_operators::trainer` for how replicas are kept in step.

use std::cell::RefCell;
use std::rc::Rc;
use temponet::FlowRecord;
use temponet_operators::fresh_windows::FreshWindow;
use temponet_operators::generator::{
    GeneratorConfig, GeneratorInput, GeneratorOut, GeneratorStats, generator,
};
use temponet_operators::param_average::param_average;
use temponet_operators::trainer::{
    AveragedParams, ModelSlot, ModelStart, SharedModel, TrainerConfig, TrainerInput, TrainerOut,
    trainer,
};
use temponet_operators::window_metrics::ModelWindowStats;
use timely::dataflow::Stream;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{Concat, ConnectLoop, Feedback, OkErr};

/// Configuration of the model stages.
#[derive(Clone, Debug)]
pub struct ModelStagesConfig {
    pub trainer: TrainerConfig,
    pub generator: GeneratorConfig,
}

impl ModelStagesConfig {
    /// A model of `kind` built from the first `min_flows` flows (over at least `min_epochs` epochs, one fitting pass)
    /// and trained online, generating twins of the observed pairs; the other settings at their defaults.
    pub fn from_warmup(
        kind: temponet::model::ModelKind,
        config: temponet::model::ModelConfig,
        min_flows: usize,
        min_epochs: u64,
        clock: temponet_operators::EpochClock,
    ) -> Self {
        ModelStagesConfig {
            trainer: TrainerConfig::new(ModelStart::Warmup {
                kind,
                config,
                min_flows,
                min_epochs,
                fit_epochs: 1,
            }),
            generator: GeneratorConfig {
                clock,
                seed: 1,
                pairs: temponet::model::PairSource::Observed,
                twins: true,
                observed_at_start: false,
                batch_epochs: 10,
            },
        }
    }
}

/// What the model stages produce on one worker.
pub struct ModelStreams<'s> {
    pub synthetic: Stream<'s, u64, Vec<FlowRecord>>,
    /// One record per epoch and worker: the trainer's and the generator's figures together.
    pub stats: Stream<'s, u64, Vec<ModelWindowStats>>,
    pub slot: SharedModel,
}

/// The metrics record of one worker's epoch.
pub fn window_stats(g: GeneratorStats) -> ModelWindowStats {
    let t = g.trainer.unwrap_or_default();
    ModelWindowStats {
        worker: g.worker,
        model_version: g.model_version.max(t.model_version),
        train_steps: t.train_steps,
        events_trained: t.events_trained,
        events_scored: t.events_scored,
        mean_loss: if t.events_scored > 0 {
            t.loss_sum / t.events_scored as f64
        } else {
            f64::NAN
        },
        synthetic_flows: g.synthetic_flows,
        live_lanes: g.live_lanes,
        lane_sessions_total: g.lanes_created,
        sessions_guarded_total: g.sessions_guarded,
        drift: t.drift,
        learning_rate: t.learning_rate,
    }
}

/// Assembles trainer, parameter averaging and generator. `flows` is the source's flow stream (any worker),
/// `windows` the `FreshWindows` output of `pair_history` (owning worker), `ticks` extra epochs to generate at
/// (a clock source in pure generation mode; may be empty).
pub fn model_stages<'s>(
    flows: Stream<'s, u64, Vec<FlowRecord>>,
    windows: Stream<'s, u64, Vec<FreshWindow>>,
    ticks: Stream<'s, u64, Vec<()>>,
    cfg: &ModelStagesConfig,
) -> anyhow::Result<ModelStreams<'s>> {
    let scope = flows.scope();
    let slot: SharedModel = Rc::new(RefCell::new(ModelSlot::default()));
    // Until the model is built every flow is broadcast, so all replicas are built from the same warm-up flows.
    let building = matches!(cfg.trainer.start, ModelStart::Warmup { .. }).then(|| slot.clone());
    let (input_epochs, warmup) = model_input(flows, building);
    let input_epochs = input_epochs.broadcast();
    let warmup = warmup.broadcast().map(TrainerInput::Warmup);
    let (averaged_handle, averaged) = scope.feedback::<Vec<AveragedParams>>(1);
    // One Arc per window: the trainer and the generator both read them, and a stream with two readers copies
    // its data for one of them (a deep copy of every window cost a tenth of the pipeline's time).
    let windows = windows.map(std::sync::Arc::new);
    let trainer_in = windows
        .clone()
        .map(TrainerInput::Window)
        .concat(warmup)
        .concat(averaged.map(TrainerInput::Averaged));
    let out = trainer(trainer_in, cfg.trainer.clone(), slot.clone())
        .map_err(|e| anyhow::anyhow!("loading the model: {e}"))?;
    let (trainer_stats, shares) = out.ok_err(|o| match o {
        TrainerOut::Stats(s) => Ok(s),
        TrainerOut::Share(p) => Err(p),
    });
    param_average(shares)
        .broadcast()
        .connect_loop(averaged_handle);
    // Every epoch with real flows on any worker ticks every generator (`input_epochs`, see `generator`: where a
    // finite input ends, every worker's generation stops at the same epoch).
    let gen_in = windows
        .map(GeneratorInput::Window)
        .concat(trainer_stats.map(GeneratorInput::Trainer))
        .concat(ticks.concat(input_epochs).map(|_| GeneratorInput::Tick));
    let (synthetic, generator_stats) =
        generator(gen_in, cfg.generator, slot.clone()).ok_err(|o| match o {
            GeneratorOut::Flow(r) => Ok(r),
            GeneratorOut::Stats(s) => Err(s),
        });
    Ok(ModelStreams {
        synthetic,
        stats: generator_stats.map(|g| window_stats(*g)),
        slot,
    })
}

/// The model stages' one reader of the source's flows (each extra reader of a stream gets its own copy of every
/// flow): one `()` per epoch (and activation) in which this worker's source emitted flows, and, while `building`
/// says no model exists yet, the flows themselves for the warm-up (`None`: the model comes from a file).
#[allow(clippy::type_complexity)]
fn model_input<'s>(
    flows: Stream<'s, u64, Vec<FlowRecord>>,
    building: Option<SharedModel>,
) -> (Stream<'s, u64, Vec<()>>, Stream<'s, u64, Vec<FlowRecord>>) {
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::generic::Operator;
    let both: Stream<'s, u64, Vec<Result<(), FlowRecord>>> =
        flows.unary(Pipeline, "ModelInput", move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let mut batches = data.filter(|b| !b.is_empty()).peekable();
                    if batches.peek().is_none() {
                        return;
                    }
                    let mut session = output.session(&cap);
                    session.give(Ok(()));
                    if building
                        .as_ref()
                        .is_some_and(|s| s.borrow().model.is_none())
                    {
                        for batch in batches {
                            session.give_iterator(batch.drain(..).map(Err));
                        }
                    }
                });
            }
        });
    both.ok_err(|x: Result<(), FlowRecord>| x)
}
