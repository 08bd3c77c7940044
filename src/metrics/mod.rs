//! Fidelity, utility and privacy metrics: how close a synthetic flow set is to a real one, what it is good for,
//! and what it leaks. The doc comment of each function is the definition of its metric.
//!
//! | job | module |
//! |---|---|
//! | EMD, KS and JSD between marginals | [`distances`] |
//! | domain-knowledge checks (STAN's five and more) | [`dkc`] |
//! | coverage of real patterns and host pairs | [`coverage`] |
//! | autocorrelation, Hurst exponent, burstiness, diurnal profile | [`temporal`] |
//! | destinations per source, bytes per host, top ports | [`hosts`] |
//! | train-on-synthetic / test-on-real with random forests | [`utility`] |
//! | exact matches, distance to closest record, membership inference | [`privacy`] |
//! | the report struct and its Markdown | [`report`] |
//! | PNG plots | [`plots`] |
//! | mergeable streaming summaries of the same metrics | [`sketch`] |
//! | one real set against several synthetic sets | [`compare()`] |
//!
//! # Conventions shared by every metric
//! - **Units.** Times (inter-arrival, duration) are in seconds, bytes in bytes, packets in packets.
//! - **log10 view.** A continuous value `x` is compared on `log10(max(x, floor))` where the floor is the data's
//!   resolution: 1 µs (1e-6 s) for times, 1 for bytes and packets. Zero durations and simultaneous starts are
//!   therefore at -6. The log view is scale-free: an EMD of 0.3 means "typically off by a factor of 2".
//! - **Inter-arrival.** The gaps between consecutive flow *starts* once the set is sorted by start time.
//! - **Source port class** (STAN): ports below 1024 are their own class, ports from 1024 up fall into bins of
//!   100 (`1024-1099`, `1100-1199`, ...), see [`port_class`].

pub mod compare;
pub mod coverage;
pub mod distances;
pub mod dkc;
pub mod hosts;
pub mod plots;
pub mod privacy;
pub mod report;
pub mod sketch;
pub mod temporal;
pub mod utility;

pub use compare::{EvalOptions, compare, evaluate};
pub use report::{ComparisonReport, EvalReport};
pub use sketch::{FlowSketch, SketchFigures};

use crate::record::FlowRecord;

/// Floor of the log10 view for times, in seconds (the microsecond resolution of [`FlowRecord`]).
pub const TIME_FLOOR_S: f64 = 1e-6;
/// Floor of the log10 view for counts (bytes, packets).
pub const COUNT_FLOOR: f64 = 1.0;

/// Everything that can stop an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A flow set that must hold flows is empty.
    #[error("the {what} set is empty: it must hold at least {min} flows")]
    TooFew { what: String, min: usize },
    /// Two inputs that must be disjoint or compatible are not.
    #[error("mismatched inputs: {0}")]
    Mismatch(String),
    /// The ML crate refused a fit or a prediction.
    #[error("model fitting failed in {task}: {message}")]
    Ml { task: String, message: String },
    /// Drawing or writing a plot failed.
    #[error("plot {file}: {message}")]
    Plot { file: String, message: String },
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A sketch could not be decoded.
    #[error("sketch decoding failed: {0}")]
    Decode(String),
}

/// STAN's source-port class: ports below 1024 are their own class (`"443"`), higher ports fall into bins of
/// 100 whose label is the bin's range, the first bin starting at 1024 (`"1024-1099"`, `"49100-49199"`,
/// `"65500-65535"`). Returned as a number (port itself below 1024, `65536 + port / 100` above) so it can be
/// counted cheaply; [`port_class_label`] gives the text.
pub fn port_class(port: u16) -> u32 {
    if port < 1024 {
        port as u32
    } else {
        65_536 + port as u32 / 100
    }
}

/// Text of a [`port_class`] value.
pub fn port_class_label(class: u32) -> String {
    if class < 1024 {
        class.to_string()
    } else {
        let bin = class - 65_536;
        let lo = (bin * 100).max(1024);
        let hi = (bin * 100 + 99).min(65_535);
        format!("{lo}-{hi}")
    }
}

/// log10 of a time in seconds with the 1 µs floor (see the module conventions).
pub fn log10_time(seconds: f64) -> f64 {
    seconds.max(TIME_FLOOR_S).log10()
}

/// log10 of a count with the floor of 1 (see the module conventions).
pub fn log10_count(n: f64) -> f64 {
    n.max(COUNT_FLOOR).log10()
}

/// Start times sorted, in microseconds.
pub(crate) fn sorted_starts(flows: &[FlowRecord]) -> Vec<i64> {
    let mut s: Vec<i64> = flows.iter().map(|r| r.start_us).collect();
    s.sort_unstable();
    s
}

/// Inter-arrival times of a flow set in seconds (gaps between consecutive starts in time order).
pub fn inter_arrivals(flows: &[FlowRecord]) -> Vec<f64> {
    sorted_starts(flows)
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e6)
        .collect()
}

/// The flows sorted by start time (stable: ties keep their input order).
pub fn time_sorted(flows: &[FlowRecord]) -> Vec<FlowRecord> {
    let mut v = flows.to_vec();
    v.sort_by_key(|r| r.start_us);
    v
}

/// Splits a flow set in time order: the first `fraction` of the flows (by count, after sorting by start) and the
/// rest. Used to make train/test parts of one capture (e.g. 80 % / 20 %).
pub fn split_by_time(flows: &[FlowRecord], fraction: f64) -> (Vec<FlowRecord>, Vec<FlowRecord>) {
    let mut v = time_sorted(flows);
    let k = ((v.len() as f64) * fraction.clamp(0.0, 1.0)).round() as usize;
    let rest = v.split_off(k.min(v.len()));
    (v, rest)
}

pub(crate) fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}
