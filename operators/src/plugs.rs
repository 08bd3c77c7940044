//! Plug points of the pair state and the metrics.
//!
//! - **Per-pair work**: implement [`PairHook`] and pass it to [`crate::pair_history::pair_history`]. The hook
//!   runs on the worker that owns the pair, after each closed epoch, with the pair's updated history; whatever it
//!   pushes to `out` leaves the operator at that epoch on the hook stream. The model stages use
//!   [`crate::fresh_windows::FreshWindows`], whose windows feed [`crate::trainer`] and [`crate::generator`].
//! - **Fidelity / drift**: the [`crate::fidelity::fidelity`] operator's figures and the trainers'
//!   [`crate::window_metrics::ModelWindowStats`] (which carry the drift detections) enter
//!   [`crate::window_metrics::window_metrics`] as `WindowInput::Fidelity` / `WindowInput::Model`. Other per-window
//!   figures implement [`WindowObserver`]: `window_metrics` calls it on the window-closing worker and it adds its
//!   fields to the window's JSON record.
//!
//! Both are plain traits so that a closure-free, stateful, testable object can be plugged in; [`NoHook`] and
//! [`NoObserver`] are the do-nothing defaults (pair state or metrics alone, as the ingest benchmark runs them).

use crate::pair_history::{PairEvent, PairState};
use temponet::HostPair;

/// Called by `pair_history` for the pairs a worker owns.
pub trait PairHook: 'static {
    /// What the hook emits (e.g. synthetic `FlowRecord`s, or losses for the drift detector).
    type Output: timely::ExchangeData + Clone;

    /// After the events of `epoch` were appended to `pair`'s ring: `fresh` are those events (sorted by start time),
    /// `state` the pair's whole retained history including them.
    fn on_pair(
        &mut self,
        epoch: u64,
        pair: &HostPair,
        state: &PairState,
        fresh: &[PairEvent],
        out: &mut Vec<Self::Output>,
    );

    /// When `pair` is evicted for the memory budget (its state is dropped right after).
    fn on_evict(&mut self, _pair: &HostPair, _state: &PairState) {}

    /// Once per closed epoch on every worker, after all its pairs were handled (e.g. to pace generation).
    fn on_epoch(&mut self, _epoch: u64, _out: &mut Vec<Self::Output>) {}
}

/// The default hook: keeps histories, emits nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHook;

impl PairHook for NoHook {
    type Output = ();
    fn on_pair(&mut self, _: u64, _: &HostPair, _: &PairState, _: &[PairEvent], _: &mut Vec<()>) {}
}

/// Adds figures to each window's metrics record (fidelity sketches, drift detectors).
pub trait WindowObserver: 'static {
    /// `record` already holds the pipeline figures of the window; add fields to it.
    fn on_window(
        &mut self,
        window_start_us: i64,
        window_end_us: i64,
        record: &mut serde_json::Map<String, serde_json::Value>,
    );
}

/// The default observer: adds nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl WindowObserver for NoObserver {
    fn on_window(&mut self, _: i64, _: i64, _: &mut serde_json::Map<String, serde_json::Value>) {}
}
