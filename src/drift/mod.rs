//! Drift detectors: is the stream the model learns from still the stream it learned?
//!
//! | detector | input | fires when | module |
//! |---|---|---|---|
//! | [`PageHinkley`] | one number per event (a loss) | the cumulative deviation from the running mean exceeds a threshold | [`page_hinkley`] |
//! | [`Adwin`] | one number per event | two sub-windows of an adaptive window have significantly different means | [`adwin`] |
//! | [`Psi`] | two distributions (binned or categorical) | the population stability index exceeds a threshold | [`psi`] |
//! | [`DriftMonitor`] | per-event losses and per-window flow marginals | any of the above | [`monitor`] |
//!
//! The two sequential detectors behave as River's `river.drift.PageHinkley` and `river.drift.ADWIN` (same
//! parameters, defaults and reset semantics; the differences are listed in each module). Like River, a
//! detector's `update` says whether a drift was detected *at this point*; Page-Hinkley then starts afresh on
//! the next value, ADWIN keeps its (already shrunk) window.
//!
//! This module is part of the core library: it knows nothing of timely or Kafka. The dataflow's trainer owns
//! one [`DriftMonitor`] per worker and reports its [`DriftEvent`]s in the window metrics.

pub mod adwin;
pub mod monitor;
pub mod page_hinkley;
pub mod psi;

pub use adwin::{Adwin, AdwinConfig, AdwinCut};
pub use monitor::{
    DetectorKind, DriftEvent, DriftFeature, DriftMonitor, DriftMonitorConfig, WindowMarginals,
};
pub use page_hinkley::{PageHinkley, PageHinkleyConfig, PhDirection, PhMode};
pub use psi::{Psi, PsiLevel, QuantileBins};
