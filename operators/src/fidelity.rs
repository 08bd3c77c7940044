//! `fidelity`: live fidelity figures of the synthetic flows against the real ones, one [`FidelityFigures`] per
//! event-time window, from mergeable sketches ([`temponet::metrics::sketch`]).
//!
//! # Pipeline
//! 1. **Sketch** (every worker). Both inputs are exchanged by [`HostPair::stable_hash`](temponet::HostPair),
//!    the routing of `pair_history`, so a host pair's real and synthetic flows are sketched on one worker and
//!    per-pair inter-arrival gaps merge exactly. Flows are stashed by timely time (epoch); once *both* input
//!    frontiers have passed an epoch, its real and synthetic flows are added, each sorted by start time, to the
//!    worker's two [`FlowSketch`]es of the epoch's window. Once both frontiers passed the window's last epoch,
//!    the two sketches leave as bincode bytes ([`SketchPart`]) for worker 0, at the window's earliest time.
//! 2. **Merge** (worker 0, every part exchanged on a constant). Parts of a window are merged across workers.
//!    When the frontier passes the window's last epoch, the window joins a sliding set of the last
//!    `slide_windows` windows (by index), the sketches of that set are merged, and one [`FidelityFigures`] is
//!    emitted at the window's earliest time. A window alone may hold too few flows for stable distances, hence
//!    the slide.
//!
//! # Invariants
//! - Window `w` covers epochs `[w * window_epochs, (w + 1) * window_epochs)`: real and synthetic flows of the same
//!   epoch fall into the same window whatever their `start_us` (a late flow counts in the epoch it was emitted).
//! - A window where neither input had a flow emits nothing and adds nothing to the slide.
//! - Figures leave in window order, on worker 0 only, at the earliest time any worker saw a flow of the window.
//! - `real_flows` / `synthetic_flows` count the window; `span_*` count the merged slide the distances are on.
//! - Inter-arrival gaps are taken within each worker's window sketch: the global inter-arrival figure pools
//!   per-worker gaps (exact for one worker only), the per-pair figure is exact for any number of workers, and a
//!   window's first flow (of a worker, or of a pair) contributes no gap.

use crate::EpochClock;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use temponet::FlowRecord;
use temponet::metrics::coverage::Coverage;
use temponet::metrics::distances::{Categorical, Continuous};
use temponet::metrics::sketch::{DEFAULT_CAPACITY, FlowSketch, SketchFigures};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

/// Configuration of [`fidelity`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FidelityConfig {
    /// Epochs per window (as `window_metrics`'s, so the records line up).
    pub window_epochs: u64,
    /// Windows the figures cover: the closing one and the `slide_windows - 1` before it (at least 1).
    pub slide_windows: u64,
    /// Capacity of the sketches' categorical summaries ([`FlowSketch::new`]).
    pub capacity: usize,
}

impl Default for FidelityConfig {
    fn default() -> Self {
        FidelityConfig {
            window_epochs: 10,
            slide_windows: 5,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

/// One worker's sketches of one window, as they travel to worker 0.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SketchPart {
    pub window: u64,
    /// [`FlowSketch::to_bytes`] of the real flows.
    pub real: Vec<u8>,
    /// [`FlowSketch::to_bytes`] of the synthetic flows.
    pub synthetic: Vec<u8>,
}

/// Pass rates of one domain-knowledge rule (percent of the flows it applies to; NaN, `null` in JSON, when it
/// applies to none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DkcRate {
    pub rule: String,
    pub real_pass_percent: f64,
    pub synthetic_pass_percent: f64,
}

/// The figures of one window (see the module docs for what is counted where). Distances are NaN (`null` in
/// JSON) when a side of the slide has no value of the field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FidelityFigures {
    /// Window index (`epoch / window_epochs`).
    pub window: u64,
    pub window_start_us: i64,
    pub window_end_us: i64,
    /// Start of the oldest window the slide may cover (`window - slide_windows + 1`, floored at 0).
    pub span_start_us: i64,
    /// Windows with flows merged into the figures.
    pub span_windows: u64,
    pub real_flows: u64,
    pub synthetic_flows: u64,
    pub span_real_flows: u64,
    pub span_synthetic_flows: u64,
    /// EMD (decades) of log10 inter-arrival over all flows (per-worker gaps pooled).
    pub emd_log10_inter_arrival: f64,
    /// EMD (decades) of log10 inter-arrival within host pairs (all pairs' gaps pooled).
    pub emd_log10_pair_inter_arrival: f64,
    pub emd_log10_duration: f64,
    pub emd_log10_bytes: f64,
    pub jsd_dst_port: f64,
    pub jsd_proto: f64,
    pub jsd_src_addr: f64,
    pub jsd_dst_addr: f64,
    /// Whether every categorical summary was exact (JSD then exact too).
    pub categorical_exact: bool,
    pub dkc: Vec<DkcRate>,
    pub coverage: Coverage,
    /// Whether the host-pair sets were complete (pair coverage is a lower bound otherwise).
    pub pairs_exact: bool,
}

impl FidelityFigures {
    /// Picks the window's figures out of the sketch comparison of its slide.
    pub fn from_sketches(
        window: u64,
        (window_start_us, window_end_us, span_start_us): (i64, i64, i64),
        span_windows: u64,
        (real_flows, synthetic_flows): (u64, u64),
        f: &SketchFigures,
    ) -> FidelityFigures {
        let emd = |field: Continuous| {
            f.continuous
                .iter()
                .find(|c| c.field == field)
                .map_or(f64::NAN, |c| c.emd_log10)
        };
        let jsd = |field: Categorical| {
            f.categorical
                .iter()
                .find(|c| c.field == field)
                .map_or(f64::NAN, |c| c.jsd)
        };
        FidelityFigures {
            window,
            window_start_us,
            window_end_us,
            span_start_us,
            span_windows,
            real_flows,
            synthetic_flows,
            span_real_flows: f.real_flows,
            span_synthetic_flows: f.synthetic_flows,
            emd_log10_inter_arrival: emd(Continuous::InterArrival),
            emd_log10_pair_inter_arrival: f.pair_inter_arrival.emd_log10,
            emd_log10_duration: emd(Continuous::Duration),
            emd_log10_bytes: emd(Continuous::Bytes),
            jsd_dst_port: jsd(Categorical::DstPort),
            jsd_proto: jsd(Categorical::Proto),
            jsd_src_addr: jsd(Categorical::SrcAddr),
            jsd_dst_addr: jsd(Categorical::DstAddr),
            categorical_exact: f.categorical_exact,
            dkc: f
                .dkc
                .iter()
                .map(|r| DkcRate {
                    rule: r.rule.clone(),
                    real_pass_percent: r.real_pass_percent,
                    synthetic_pass_percent: r.synthetic_pass_percent,
                })
                .collect(),
            coverage: f.coverage.clone(),
            pairs_exact: f.pairs_exact,
        }
    }
}

/// A window being sketched: its earliest capability and the (real, synthetic) sketches so far.
type OpenWindow = (Capability<u64>, FlowSketch, FlowSketch);
/// An epoch not yet complete on both inputs: its capability and its (real, synthetic) flows.
type Stashed = (Capability<u64>, Vec<FlowRecord>, Vec<FlowRecord>);

/// Builds the operator (see the module docs). The output carries figures on worker 0 only.
pub fn fidelity<'s>(
    real: Stream<'s, u64, Vec<FlowRecord>>,
    synthetic: Stream<'s, u64, Vec<FlowRecord>>,
    clock: EpochClock,
    cfg: FidelityConfig,
) -> Stream<'s, u64, Vec<FidelityFigures>> {
    assert!(
        cfg.window_epochs > 0,
        "a window must span at least one epoch"
    );
    assert!(
        cfg.slide_windows > 0,
        "the slide must hold at least one window"
    );
    let we = cfg.window_epochs;
    let by_pair = || Exchange::new(|r: &FlowRecord| r.pair().stable_hash());
    let parts = real.binary_frontier(
        synthetic,
        by_pair(),
        by_pair(),
        "FidelitySketch",
        move |_cap, _info| {
            let mut stash: BTreeMap<u64, Stashed> = BTreeMap::new();
            let mut open: BTreeMap<u64, OpenWindow> = BTreeMap::new();
            move |(in_real, f_real), (in_syn, f_syn), output| {
                for (input, is_real) in [(in_real, true), (in_syn, false)] {
                    input.for_each_stamp(|cap, data| {
                        let t = *cap.least().expect("a time");
                        let e = stash.entry(t).or_insert_with(|| {
                            (
                                cap.retain_least(0).expect("a capability"),
                                Vec::new(),
                                Vec::new(),
                            )
                        });
                        let dst = if is_real { &mut e.1 } else { &mut e.2 };
                        for batch in data {
                            dst.append(batch);
                        }
                    });
                }
                let done = |t: &u64| !f_real.less_equal(t) && !f_syn.less_equal(t);
                while let Some((&t, _)) = stash.first_key_value() {
                    if !done(&t) {
                        break;
                    }
                    let (cap, mut r, mut s) = stash.pop_first().expect("present").1;
                    let (_, real_sk, syn_sk) = open.entry(t / we).or_insert_with(|| {
                        (
                            cap.clone(),
                            FlowSketch::new(cfg.capacity),
                            FlowSketch::new(cfg.capacity),
                        )
                    });
                    r.sort_by_key(|f| f.start_us);
                    s.sort_by_key(|f| f.start_us);
                    r.iter().for_each(|f| real_sk.add(f));
                    s.iter().for_each(|f| syn_sk.add(f));
                }
                while let Some((&w, _)) = open.first_key_value() {
                    let end = (w + 1) * we;
                    if f_real.frontier().less_than(&end) || f_syn.frontier().less_than(&end) {
                        break;
                    }
                    let (cap, r, s) = open.pop_first().expect("present").1;
                    output.session(&cap).give(SketchPart {
                        window: w,
                        real: r.to_bytes(),
                        synthetic: s.to_bytes(),
                    });
                }
            }
        },
    );
    parts.unary_frontier(
        Exchange::new(|_: &SketchPart| 0u64),
        "FidelityMerge",
        move |_cap, _info| {
            let mut open: BTreeMap<u64, OpenWindow> = BTreeMap::new();
            // The last windows closed (index, real, synthetic), oldest first, at most `slide_windows`.
            let mut recent: VecDeque<(u64, FlowSketch, FlowSketch)> = VecDeque::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let t = *cap.least().expect("a time");
                    for batch in data {
                        for part in batch.drain(..) {
                            let real = FlowSketch::from_bytes(&part.real)
                                .expect("a sketch this operator encoded decodes");
                            let syn = FlowSketch::from_bytes(&part.synthetic)
                                .expect("a sketch this operator encoded decodes");
                            match open.get_mut(&part.window) {
                                Some((c, r, s)) => {
                                    if t < *c.time() {
                                        *c = cap.retain_least(0).expect("a capability");
                                    }
                                    r.merge(&real).expect("sketches of one config merge");
                                    s.merge(&syn).expect("sketches of one config merge");
                                }
                                None => {
                                    let c = cap.retain_least(0).expect("a capability");
                                    open.insert(part.window, (c, real, syn));
                                }
                            }
                        }
                    }
                });
                while let Some((&w, _)) = open.first_key_value() {
                    let end = (w + 1) * we;
                    if frontier.frontier().less_than(&end) {
                        break;
                    }
                    let (cap, r, s) = open.pop_first().expect("present").1;
                    let counts = (r.flows(), s.flows());
                    recent.push_back((w, r, s));
                    let oldest = (w + 1).saturating_sub(cfg.slide_windows);
                    while recent.front().is_some_and(|(i, _, _)| *i < oldest) {
                        recent.pop_front();
                    }
                    let mut span_r = FlowSketch::new(cfg.capacity);
                    let mut span_s = FlowSketch::new(cfg.capacity);
                    for (_, r, s) in &recent {
                        span_r.merge(r).expect("sketches of one config merge");
                        span_s.merge(s).expect("sketches of one config merge");
                    }
                    let figures = FidelityFigures::from_sketches(
                        w,
                        (
                            clock.start_of(w * we),
                            clock.start_of(end),
                            clock.start_of(oldest * we),
                        ),
                        recent.len() as u64,
                        counts,
                        &SketchFigures::between(&span_r, &span_s),
                    );
                    output.session(&cap).give(figures);
                }
            }
        },
    )
}
