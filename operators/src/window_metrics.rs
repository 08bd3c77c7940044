//! `window_metrics`: one JSON record per event-time window with what the pipeline did in it, merged across
//! workers. Fidelity figures and the trainers' stats (drift detections included) arrive as [`WindowInput`]s
//! like the source and history stats; anything else can add fields through a [`WindowObserver`].
//!
//! # Invariants
//! - Window `w` covers epochs `[w * window_epochs, (w + 1) * window_epochs)`. Its record is emitted once, on worker
//!   0 (every stats item is exchanged there), when the input frontier has passed the window's last epoch, at the
//!   time of the window's earliest stats item. Hence a window's offsets are committed only after its record is
//!   written, and records leave in window order.
//! - Windows in which no stats item arrived emit nothing.
//! - `pairs_held`, `pair_bytes`, `in_flight` and the `*_total` fields are each worker's latest value as of the
//!   window (its last stats in this or an earlier window), summed over workers; the other counts are sums over the window.
//! - `throughput_flows_per_s` is processing throughput (wall clock): flows absorbed into pair state per second over
//!   the last second or more of emissions (event-time windows close in bursts when catching up, so a per-window
//!   wall-clock rate would be meaningless).
//!
//! # Model and fidelity fields
//! - `fidelity`: the window's [`FidelityFigures`] as an object (from [`crate::fidelity::fidelity`], run with the
//!   same `window_epochs`); absent when no figures arrived for the window (no flow on either side). When several
//!   arrive, the one of the latest window index is kept.
//! - From the trainers' [`ModelWindowStats`] (one per epoch per worker), present only when at least one arrived
//!   in the window:
//!   - `model_version`: the largest version reported in the window;
//!   - `train_steps`, `events_trained`, `synthetic_flows`: sums over the window's epochs and the workers;
//!   - `mean_loss`: mean prequential loss per scored event, each report weighted by its `events_scored` (reports
//!     with no event or a non-finite loss are left out; `null` when none is left);
//!   - `live_lanes`, `lane_sessions_total` (generation sessions started so far) and `sessions_guarded_total` (those
//!     the session-length guard ended): each worker's value at its latest epoch in the window, summed over
//!     workers;
//!   - `drift`: every [`DriftEvent`] reported, in arrival order, each as the event's fields plus `worker`;
//!   - `learning_rate`: the largest reported.

use crate::fidelity::FidelityFigures;
use crate::pair_history::HistoryStats;
use crate::plugs::WindowObserver;
use crate::{EpochClock, SourceStats};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};
use temponet::drift::DriftEvent;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

/// What `window_metrics` aggregates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WindowInput {
    Source(SourceStats),
    History(HistoryStats),
    /// The window's fidelity figures (one per window, from worker 0 of [`crate::fidelity::fidelity`]).
    Fidelity(FidelityFigures),
    /// A trainer's report for one epoch on one worker, sent at that epoch.
    Model(ModelWindowStats),
}

/// What a worker's trainer reports once per epoch (the timely time it is sent at). Counts are for that epoch;
/// `live_lanes` and `model_version` are levels at its end. See the module docs for how a window merges them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelWindowStats {
    pub worker: usize,
    /// Version of the parameters the worker trains and generates with (bumped by each averaging round).
    pub model_version: u64,
    /// Optimiser steps taken in the epoch.
    pub train_steps: u64,
    /// Events (flows) the steps were computed on.
    pub events_trained: u64,
    /// Events scored by the model before it trained on them (prequential: the honest live loss).
    pub events_scored: u64,
    /// Mean loss over the scored events (NaN when none).
    pub mean_loss: f64,
    /// Synthetic flows generated in the epoch.
    pub synthetic_flows: u64,
    /// Generation lanes alive at the end of the epoch.
    pub live_lanes: u64,
    /// Lane sessions started so far on the worker (one per twin session), and those the length guard ended.
    #[serde(default)]
    pub lane_sessions_total: u64,
    #[serde(default)]
    pub sessions_guarded_total: u64,
    /// Drift detections of the worker's [`temponet::drift::DriftMonitor`] in the epoch.
    pub drift: Vec<DriftEvent>,
    pub learning_rate: f64,
}

/// The window's merge of [`ModelWindowStats`].
#[derive(Default)]
struct ModelAgg {
    reports: u64,
    model_version: u64,
    train_steps: u64,
    events_trained: u64,
    loss_sum: f64,
    loss_events: u64,
    synthetic_flows: u64,
    /// Per worker: (epoch of its latest report, [live lanes, lane sessions so far, guarded sessions so far] then).
    levels: HashMap<usize, (u64, [u64; 3])>,
    drift: Vec<(usize, DriftEvent)>,
    learning_rate: f64,
}

impl ModelAgg {
    fn add(&mut self, epoch: u64, m: ModelWindowStats) {
        self.reports += 1;
        self.model_version = self.model_version.max(m.model_version);
        self.train_steps += m.train_steps;
        self.events_trained += m.events_trained;
        if m.events_scored > 0 && m.mean_loss.is_finite() {
            self.loss_sum += m.mean_loss * m.events_scored as f64;
            self.loss_events += m.events_scored;
        }
        self.synthetic_flows += m.synthetic_flows;
        let now = [
            m.live_lanes,
            m.lane_sessions_total,
            m.sessions_guarded_total,
        ];
        let e = self.levels.entry(m.worker).or_insert((epoch, now));
        if epoch >= e.0 {
            *e = (epoch, now);
        }
        self.drift
            .extend(m.drift.into_iter().map(|d| (m.worker, d)));
        self.learning_rate = self.learning_rate.max(m.learning_rate);
    }

    fn write(self, rec: &mut Map<String, Value>) {
        if self.reports == 0 {
            return;
        }
        rec.insert("model_version".into(), json!(self.model_version));
        rec.insert("train_steps".into(), json!(self.train_steps));
        rec.insert("events_trained".into(), json!(self.events_trained));
        let mean = (self.loss_events > 0).then(|| self.loss_sum / self.loss_events as f64);
        rec.insert("mean_loss".into(), json!(mean));
        rec.insert("synthetic_flows".into(), json!(self.synthetic_flows));
        let level = |k: usize| self.levels.values().map(|v| v.1[k]).sum::<u64>();
        rec.insert("live_lanes".into(), json!(level(0)));
        rec.insert("lane_sessions_total".into(), json!(level(1)));
        rec.insert("sessions_guarded_total".into(), json!(level(2)));
        let drift: Vec<Value> = self
            .drift
            .into_iter()
            .map(|(worker, d)| {
                let mut v = serde_json::to_value(d).expect("a drift event serialises");
                if let Value::Object(o) = &mut v {
                    o.insert("worker".into(), json!(worker));
                }
                v
            })
            .collect();
        rec.insert("drift".into(), Value::Array(drift));
        rec.insert("learning_rate".into(), json!(self.learning_rate));
    }
}

#[derive(Default)]
struct Agg {
    flows_consumed: u64,
    flows_absorbed: u64,
    dead: u64,
    late: u64,
    evictions: u64,
    consumed: BTreeMap<i32, i64>,
    /// Each worker's latest stats within this window.
    hist: HashMap<usize, HistoryStats>,
    in_flight: HashMap<usize, u64>,
    fidelity: Option<FidelityFigures>,
    model: ModelAgg,
}

/// Builds the operator. `clock` and `window_epochs` give the window's event-time bounds.
pub fn window_metrics<'s, O: WindowObserver>(
    stats: Stream<'s, u64, Vec<WindowInput>>,
    clock: EpochClock,
    window_epochs: u64,
    mut observer: O,
) -> Stream<'s, u64, Vec<String>> {
    assert!(window_epochs > 0, "a window must span at least one epoch");
    let peers = stats.scope().peers();
    stats.unary_frontier(
        Exchange::new(|_: &WindowInput| 0u64),
        "WindowMetrics",
        move |_cap, _info| {
            let mut open: BTreeMap<u64, (Capability<u64>, Agg)> = BTreeMap::new();
            let mut last_hist: HashMap<usize, HistoryStats> = HashMap::new();
            let mut last_in_flight: HashMap<usize, u64> = HashMap::new();
            // (wall time, flows absorbed in total) at past emissions, covering at least the last second.
            let mut history: VecDeque<(Instant, u64)> = VecDeque::from([(Instant::now(), 0)]);
            let mut windows = 0u64;
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a time");
                    let w = t / window_epochs;
                    let (ocap, agg) = open.entry(w).or_insert_with(|| {
                        (cap.retain_least(0).expect("a capability"), Agg::default())
                    });
                    if cap.least().expect("a time") < ocap.time() {
                        *ocap = cap.retain_least(0).expect("a capability");
                    }
                    for batch in data {
                        for item in batch.drain(..) {
                            match item {
                                WindowInput::Source(s) => {
                                    agg.flows_consumed += s.flows;
                                    agg.dead += s.dead;
                                    agg.late += s.late;
                                    for (p, o) in &s.consumed {
                                        let e = agg.consumed.entry(*p).or_insert(*o);
                                        *e = (*e).max(*o);
                                    }
                                    agg.in_flight.insert(s.worker, s.in_flight);
                                }
                                WindowInput::History(h) => {
                                    agg.flows_absorbed += h.flows;
                                    agg.evictions += h.evictions;
                                    let keep = agg
                                        .hist
                                        .get(&h.worker)
                                        .is_none_or(|old| old.epoch <= h.epoch);
                                    if keep {
                                        agg.hist.insert(h.worker, h);
                                    }
                                }
                                WindowInput::Fidelity(f) => {
                                    if agg.fidelity.as_ref().is_none_or(|o| o.window <= f.window) {
                                        agg.fidelity = Some(f);
                                    }
                                }
                                WindowInput::Model(m) => agg.model.add(t, m),
                            }
                        }
                    }
                });
                while let Some((&w, _)) = open.first_key_value() {
                    let end = (w + 1) * window_epochs;
                    if frontier.frontier().less_than(&end) {
                        break;
                    }
                    let (cap, agg) = open.pop_first().expect("present").1;
                    last_hist.extend(agg.hist);
                    last_in_flight.extend(agg.in_flight);
                    windows += 1;
                    let sum = |f: fn(&HistoryStats) -> u64| last_hist.values().map(f).sum::<u64>();
                    let now = Instant::now();
                    let total = sum(|h| h.flows_total);
                    while history.len() > 1
                        && now.duration_since(history[1].0) >= Duration::from_secs(1)
                    {
                        history.pop_front();
                    }
                    let (t_then, f_then) = history[0];
                    let rate = total.saturating_sub(f_then) as f64
                        / now.duration_since(t_then).as_secs_f64().max(1e-3);
                    history.push_back((now, total));
                    let start_us = clock.start_of(w * window_epochs);
                    let end_us = clock.start_of(end);
                    let mut rec = Map::new();
                    rec.insert("window".into(), json!(windows));
                    rec.insert("window_start_us".into(), json!(start_us));
                    rec.insert("window_end_us".into(), json!(end_us));
                    rec.insert("workers".into(), json!(peers));
                    rec.insert("flows_in".into(), json!(agg.flows_consumed));
                    rec.insert("flows_absorbed".into(), json!(agg.flows_absorbed));
                    rec.insert("pairs_held".into(), json!(sum(|h| h.pairs_held)));
                    rec.insert("pair_bytes".into(), json!(sum(|h| h.bytes_held)));
                    rec.insert("evictions".into(), json!(agg.evictions));
                    rec.insert("evictions_total".into(), json!(sum(|h| h.evictions_total)));
                    rec.insert("flows_total".into(), json!(sum(|h| h.flows_total)));
                    rec.insert("dead_letters".into(), json!(agg.dead));
                    rec.insert("late_flows".into(), json!(agg.late));
                    rec.insert(
                        "in_flight".into(),
                        json!(last_in_flight.values().sum::<u64>()),
                    );
                    let consumed: Map<String, Value> = agg
                        .consumed
                        .iter()
                        .map(|(p, o)| (p.to_string(), json!(o)))
                        .collect();
                    rec.insert("consumed_offsets".into(), Value::Object(consumed));
                    rec.insert("throughput_flows_per_s".into(), json!(rate));
                    if let Some(f) = &agg.fidelity {
                        rec.insert(
                            "fidelity".into(),
                            serde_json::to_value(f).expect("fidelity figures serialise"),
                        );
                    }
                    agg.model.write(&mut rec);
                    rec.insert(
                        "emitted_at_us".into(),
                        json!(chrono::Utc::now().timestamp_micros()),
                    );
                    observer.on_window(start_us, end_us, &mut rec);
                    output.session(&cap).give(Value::Object(rec).to_string());
                }
            }
        },
    )
}
