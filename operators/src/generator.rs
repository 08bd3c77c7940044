//! `generator`: synthetic flows for the host pairs a worker owns, generated epoch by epoch by its model replica.
//!
//! # Twins
//! When a real pair this worker owns shows up (a [`FreshWindow`] from `pair_history`), its synthetic *twin*
//! starts from the pair's newest real flow (a twin already live is left alone): from then on the twin is the
//! model's own continuation of the pair, never fed the real pair's later flows, and it ends when the model's
//! "pair goes silent" mark says so. With [`PairSource::Synthetic`] the session also draws brand-new pairs from the
//! model's pair-arrival part (no real address is needed). In pure generation mode (no real input) the ticks of a
//! clock source drive the epochs and, with [`PairSource::Observed`], the twins of the pairs seen in training that
//! this worker owns (`stable_hash % peers`) start at the first epoch.
//!
//! # Time
//! When the input frontier passes epoch `t` (and the trainer is done with `t`: its stats are an input too), the
//! session advances to the end of `t` and every synthetic flow starting before it is emitted at `t`, so output
//! event times agree with timely times (a flow earlier than `t`'s start, possible only right after a twin joins
//! from a late real flow, is emitted at `t` and counted as late). No flow is generated before the epoch after the
//! model was built: the replicas are not in step before.

use crate::EpochClock;
use crate::fresh_windows::FreshWindow;
use crate::trainer::{SharedModel, TrainerStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use temponet::FlowRecord;
use temponet::model::{GenSession, PairSource};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

/// Configuration of [`generator`].
#[derive(Clone, Copy, Debug)]
pub struct GeneratorConfig {
    pub clock: EpochClock,
    pub seed: u64,
    pub pairs: PairSource,
    /// Start twins of the real pairs seen in the input.
    pub twins: bool,
    /// Pure generation: start twins of the training pairs this worker owns at the first epoch.
    pub observed_at_start: bool,
}

/// What the generator reads (all on this worker).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GeneratorInput {
    Window(FreshWindow),
    /// The trainer is done with this epoch (its stats travel on with the generator's, one record per epoch).
    Trainer(TrainerStats),
    /// An epoch to generate even if no window came (clock ticks of pure generation).
    Tick,
}

/// What the generator did in one epoch on one worker.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorStats {
    pub worker: usize,
    pub epoch: u64,
    pub synthetic_flows: u64,
    /// Flows earlier than the epoch they were emitted at.
    pub late: u64,
    pub live_lanes: u64,
    pub ended_lanes: u64,
    /// Lanes (synthetic pairs) started so far on this worker.
    pub lanes_created: u64,
    /// Compliance repairs of sampling so far (should stay 0).
    pub repairs: u64,
    pub model_version: u64,
    /// The trainer's stats of the same epoch on this worker (none in pure generation without training input).
    pub trainer: Option<TrainerStats>,
}

/// What the generator emits.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GeneratorOut {
    Flow(FlowRecord),
    Stats(Box<GeneratorStats>),
}

/// Builds the operator over this worker's model replica.
pub fn generator<'s>(
    input: Stream<'s, u64, Vec<GeneratorInput>>,
    cfg: GeneratorConfig,
    slot: SharedModel,
) -> Stream<'s, u64, Vec<GeneratorOut>> {
    let worker = input.scope().index();
    let peers = input.scope().peers();
    input.unary_frontier(Pipeline, "Generator", move |_cap, _info| {
        type Pending = (Capability<u64>, Vec<FreshWindow>, Option<TrainerStats>);
        let mut stash: BTreeMap<u64, Pending> = BTreeMap::new();
        let mut session: Option<GenSession> = None;
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a time");
                let e = stash.entry(t).or_insert_with(|| {
                    (cap.retain_least(0).expect("a capability"), Vec::new(), None)
                });
                for batch in data {
                    for item in batch.drain(..) {
                        match item {
                            GeneratorInput::Window(w) => e.1.push(w),
                            GeneratorInput::Trainer(s) => e.2 = Some(s),
                            GeneratorInput::Tick => {}
                        }
                    }
                }
            });
            while let Some((&t, _)) = stash.first_key_value() {
                if frontier.less_equal(&t) {
                    break;
                }
                let (cap, windows, trainer) = stash.pop_first().expect("present").1;
                let slot = slot.borrow();
                let mut stats = GeneratorStats {
                    worker,
                    epoch: t,
                    trainer,
                    ..Default::default()
                };
                let model = match (slot.model.as_ref(), slot.ready) {
                    (Some(m), true) if !slot.built_at.is_some_and(|b| t <= b && b > 0) => m,
                    _ => {
                        output
                            .session(&cap)
                            .give(GeneratorOut::Stats(Box::new(stats)));
                        continue;
                    }
                };
                let start = cfg.clock.start_of(t);
                let s = session.get_or_insert_with(|| {
                    let mut s = model.open_session(cfg.seed, cfg.pairs);
                    s.set_shard(worker, peers);
                    s.begin(start);
                    if cfg.observed_at_start {
                        s.join_observed(model, start);
                    }
                    s
                });
                if cfg.twins {
                    for w in &windows {
                        if let Some((last, prev)) = w.last() {
                            s.join(model, &last, prev);
                        }
                    }
                }
                let mut flows = Vec::new();
                if let Err(e) = s.advance(model, cfg.clock.start_of(t + 1), &mut flows) {
                    // A torch failure is a bug or an exhausted machine: stop loudly.
                    panic!("generator on worker {worker}: epoch {t}: {e}");
                }
                stats.synthetic_flows = flows.len() as u64;
                stats.late = flows.iter().filter(|r| r.start_us < start).count() as u64;
                stats.live_lanes = s.live() as u64;
                stats.ended_lanes = s.ended();
                stats.lanes_created = s.lanes_created();
                stats.repairs = s.repairs().sample_total();
                stats.model_version = model.version();
                let mut session = output.session(&cap);
                session.give_iterator(flows.into_iter().map(GeneratorOut::Flow));
                session.give(GeneratorOut::Stats(Box::new(stats)));
            }
        }
    })
}
