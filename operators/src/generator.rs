//! `generator`: synthetic flows for the host pairs a worker owns, generated epoch by epoch by its model replica.
//!
//! # Twins
//! When a real pair this worker owns begins a session (its first flow, or a flow after a gap above the model's
//! silence threshold, seen in a [`FreshWindow`] from `pair_history`), its synthetic *twin* begins one too, with the
//! real flow before the session as history (a twin still live in an earlier session queues it). The twin's session
//! is the model's own: never fed the real pair's later flows, it ends when the model's "pair goes silent" mark says
//! so. One twin session per real session keeps the synthetic rate at the real one's while the model decides how
//! long and how dense each session is. Pairs already in a session when generation opens continue from their newest
//! real flow. With [`PairSource::Synthetic`] the session also draws brand-new pairs from the
//! model's pair-arrival part (no real address is needed). In pure generation mode (no real input) the ticks of a
//! clock source drive the epochs and, with [`PairSource::Observed`], the twins of the pairs seen in training that
//! this worker owns (`stable_hash % peers`) start at the first epoch.
//!
//! # Time
//! When the input frontier passes epoch `t` (and the trainer is done with `t`: its stats are an input too), the
//! session advances to the end of `t` and every synthetic flow starting before it is emitted at `t`, so output
//! event times agree with timely times (a flow earlier than `t`'s start, possible only right after a twin joins
//! from a late real flow, is emitted at `t` and counted as late). No flow is generated before the epoch after the
//! model was built: the replicas are not in step before. Closed epochs are generated `batch_epochs` at a time
//! (when an epoch `t` with `(t + 1) % batch_epochs == 0` closes, or that many are waiting, or the input ends): one
//! advance over them, then each flow leaves at its own epoch. Once the input has ended, generation stops at the end
//! of the last epoch that had input (a window here, or a tick: every epoch with real flows on any worker ticks
//! every generator), so a finite input's synthetic twin spans the same epochs.

use crate::EpochClock;
use crate::fresh_windows::FreshWindow;
use crate::trainer::{SharedModel, TrainerStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
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
    /// Closed epochs generated together (one session advance over all of them; each flow still leaves at its own
    /// epoch): fewer, larger batched steps, at the price of up to this many epochs of latency.
    pub batch_epochs: u64,
}

/// What the generator reads (all on this worker).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GeneratorInput {
    /// Shared with the trainer (see [`crate::trainer::TrainerInput::Window`]).
    Window(Arc<FreshWindow>),
    /// The trainer is done with this epoch (its stats travel on with the generator's, one record per epoch).
    Trainer(TrainerStats),
    /// An epoch to generate even if no window came on this worker: clock ticks of pure generation, and every
    /// epoch with real input on any worker (so that at the input's end every worker stops at the same epoch).
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
    /// Sessions the length guard ended so far on this worker (see `temponet::model::session::SESSION_GUARD`): a
    /// model whose twins keep running into it floods.
    pub sessions_guarded: u64,
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
        type Pending = (Capability<u64>, Vec<Arc<FreshWindow>>, Option<TrainerStats>);
        let mut stash: BTreeMap<u64, Pending> = BTreeMap::new();
        let mut session: Option<GenSession> = None;
        // The latest epoch that had input (a window or a tick), processed or not.
        let mut last_input: Option<u64> = None;
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a time");
                let e = stash.entry(t).or_insert_with(|| {
                    (cap.retain_least(0).expect("a capability"), Vec::new(), None)
                });
                for batch in data {
                    for item in batch.drain(..) {
                        match item {
                            GeneratorInput::Window(w) => {
                                e.1.push(w);
                                last_input = last_input.max(Some(t));
                            }
                            GeneratorInput::Trainer(s) => e.2 = Some(s),
                            GeneratorInput::Tick => last_input = last_input.max(Some(t)),
                        }
                    }
                }
            });
            // The closed epochs, processed together once `batch_epochs` of them are ready or the input ended.
            let closed = stash
                .range(..)
                .take_while(|(t, _)| !frontier.less_equal(t))
                .count();
            let ended = frontier.is_empty();
            let due = stash
                .keys()
                .take(closed)
                .any(|t| (t + 1).is_multiple_of(cfg.batch_epochs.max(1)));
            if closed == 0 || !(due || ended || closed as u64 >= cfg.batch_epochs.max(1)) {
                return;
            }
            let batch: Vec<(u64, Pending)> = (0..closed)
                .map(|_| stash.pop_first().expect("counted"))
                .collect();
            let slot = slot.borrow();
            let mut per_epoch: Vec<(u64, Capability<u64>, GeneratorStats)> = Vec::new();
            let mut joins: Vec<Arc<FreshWindow>> = Vec::new();
            for (t, (cap, windows, trainer)) in batch {
                let ready = slot.ready && !slot.built_at.is_some_and(|b| t <= b && b > 0);
                if ready {
                    joins.extend(windows);
                }
                per_epoch.push((
                    t,
                    cap,
                    GeneratorStats {
                        worker,
                        epoch: t,
                        trainer,
                        ..Default::default()
                    },
                ));
            }
            let model = slot.model.as_ref().filter(|_| slot.ready);
            let first_ready = per_epoch
                .iter()
                .position(|(t, _, _)| !slot.built_at.is_some_and(|b| *t <= b && b > 0));
            let mut flows = Vec::new();
            if let (Some(model), Some(i0)) = (model, first_ready) {
                let start = cfg.clock.start_of(per_epoch[i0].0);
                let opening = session.is_none();
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
                    // A twin session per real session: real session starts start (or queue) one. Pairs already in
                    // a session when generation opens join mid-session instead, continuing from their newest flow.
                    let silence = model.space().silence_us;
                    for w in &joins {
                        let starts = w.session_starts(silence);
                        if starts.is_empty() {
                            if opening && let Some((last, prev)) = w.last() {
                                s.join(model, &last, prev);
                            }
                            continue;
                        }
                        for (i, before) in &starts {
                            let before = before.as_ref().map(|(r, p)| (r, *p));
                            s.join_session(model, w.pair, before, w.events[*i].start_us);
                        }
                    }
                }
                // Once the input has ended, no flow past its last epoch: later epochs exist only because the
                // trainer's last parameter average comes back one epoch on (the feedback edge), and the
                // synthetic stream should span what the real one did.
                let mut last = per_epoch.last().expect("closed > 0").0;
                if ended && let Some(l) = last_input {
                    last = last.min(l.max(per_epoch[i0].0));
                }
                let until = cfg.clock.start_of(last + 1);
                if let Err(e) = s.advance(model, until, &mut flows) {
                    // A torch failure is a bug or an exhausted machine: stop loudly.
                    panic!("generator on worker {worker}: epochs up to {until} us: {e}");
                }
                for (_, _, st) in per_epoch.iter_mut().skip(i0) {
                    st.live_lanes = s.live() as u64;
                    st.ended_lanes = s.ended();
                    st.lanes_created = s.lanes_created();
                    st.sessions_guarded = s.guarded();
                    st.repairs = s.repairs().sample_total();
                    st.model_version = model.version();
                }
            }
            // Each flow leaves at the epoch of its start (one earlier than the batch's first ready epoch, possible
            // only right after a twin joined from a late real flow, leaves at that epoch and counts as late).
            let mut flows = flows.into_iter().peekable();
            let n = per_epoch.len();
            for (k, (t, cap, mut st)) in per_epoch.into_iter().enumerate() {
                let end = cfg.clock.start_of(t + 1);
                let start = cfg.clock.start_of(t);
                let mut session = output.session(&cap);
                while let Some(r) = flows.next_if(|r| r.start_us < end || k + 1 == n) {
                    st.synthetic_flows += 1;
                    st.late += (r.start_us < start) as u64;
                    session.give(GeneratorOut::Flow(r));
                }
                session.give(GeneratorOut::Stats(Box::new(st)));
            }
        }
    })
}
