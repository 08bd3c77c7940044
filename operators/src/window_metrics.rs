//! `window_metrics`: one JSON record per event-time window with what the pipeline did in it, merged across
//! workers. Fidelity and drift figures plug in through [`WindowObserver`].
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

use crate::pair_history::HistoryStats;
use crate::plugs::WindowObserver;
use crate::{EpochClock, SourceStats};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

/// What `window_metrics` aggregates.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum WindowInput {
    Source(SourceStats),
    History(HistoryStats),
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
                    let w = *cap.least().expect("a time") / window_epochs;
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
