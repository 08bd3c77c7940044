//! [`DriftMonitor`]: the detectors combined the way the pipeline uses them.
//!
//! A trainer owns one monitor (per worker) and feeds it two things:
//! - **every training loss** ([`DriftMonitor::observe_loss`]), in the order the events were trained. The loss
//!   stream goes to [`Adwin`] as is and to [`PageHinkley`] *standardised*: the mean and standard deviation of the
//!   first `warmup` losses (after start, and again after each Page-Hinkley detection) turn the loss into
//!   `z = (loss - mean) / sd`, so the Page-Hinkley parameters are in standard deviations whatever the scale of
//!   the model's loss. Non-finite losses are skipped (counted, never fed).
//! - **once per window, the marginals of the real flows** ([`DriftMonitor::observe_window`] with a
//!   [`WindowMarginals`]): protocol, destination-port class, log10 bytes and log10 inter-arrival. Each window with
//!   at least `psi_min_flows` flows is compared by [`Psi`] with the *reference window* (the first such window,
//!   replaced by the current one after any PSI detection, so a new regime becomes the reference).
//!
//! Both return [`DriftEvent`]s: which detector fired on which feature, at which loss index, with its statistic
//! and the threshold it crossed.
//!
//! # Defaults
//! ADWIN keeps River's defaults (its bound adapts to the variance). Page-Hinkley watches increases only (a loss
//! that falls is the model learning, not drift) with `delta` 0.1 and `threshold` 50 standard deviations, and
//! no forgetting (`alpha` 1): on a stationary loss its average run length to a false alarm is then about
//! 1.1 million events (Siegmund's approximation, see [`super::page_hinkley`]), and a rise of one standard
//! deviation is detected after about 50 / 0.9 ≈ 56 events. River's `alpha` < 1 is not used here because it
//! pulls the increase sum back towards `-delta / (1 - alpha)`: after some `1 / (1 - alpha)` events on a stationary
//! stream the sum stops drifting down and its fluctuations (standard deviation `1 / sqrt(2 (1 - alpha))`, 70 for
//! River's value) cross any threshold of that order again and again. PSI uses 10 quantile bins and the
//! conventional "significant" threshold 0.25.
//!
//! # Index
//! `index` counts the finite losses the monitor was fed, from 0: a loss event's index is that of the loss at
//! which its detector fired; a PSI event's index is the number of losses fed before the window was observed
//! (so events of both kinds order on one axis).

use super::adwin::{Adwin, AdwinConfig};
use super::page_hinkley::{PageHinkley, PageHinkleyConfig, PhDirection, PhMode};
use super::psi::{PSI_BINS, PSI_EPSILON, PSI_SIGNIFICANT, Psi, QuantileBins};
use crate::metrics::{log10_count, log10_time, port_class};
use crate::record::FlowRecord;
use foldhash::HashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which detector fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    PageHinkley,
    Adwin,
    Psi,
}

/// What the detector watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftFeature {
    /// The per-event training loss.
    Loss,
    /// IANA protocol of the real flows.
    Proto,
    /// [`port_class`] of the real flows' destination port (the service mix).
    DstPortClass,
    /// log10 of the real flows' bytes.
    Log10Bytes,
    /// log10 of the gaps between consecutive real flow starts, in seconds (1 µs floor).
    Log10InterArrival,
}

impl DriftFeature {
    /// The four marginals PSI compares, in the order they are reported.
    pub const MARGINALS: [DriftFeature; 4] = [
        DriftFeature::Proto,
        DriftFeature::DstPortClass,
        DriftFeature::Log10Bytes,
        DriftFeature::Log10InterArrival,
    ];
}

/// One detection. Serialises to JSON as a flat object (absent details are `null`); travels through the dataflow
/// with bincode, so no field is ever skipped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftEvent {
    pub detector: DetectorKind,
    pub feature: DriftFeature,
    /// See the module docs ("Index").
    pub index: u64,
    /// Page-Hinkley: its test statistic (standardised units); ADWIN: `|mean(W0) - mean(W1)|` at the cut
    /// (loss units); PSI: the index.
    pub statistic: f64,
    /// What the statistic exceeded: lambda, ADWIN's `eps_cut`, the PSI threshold.
    pub threshold: f64,
    /// Whether the change is an increase (loss detectors); `None` for PSI.
    pub increase: Option<bool>,
    /// ADWIN: window width after the cut; Page-Hinkley: values it had seen since its last reset.
    pub width: Option<u64>,
    /// PSI: first microsecond of the window compared, and of the reference window.
    pub window_start_us: Option<i64>,
    pub reference_start_us: Option<i64>,
}

/// Parameters of [`DriftMonitor`] (defaults justified in the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftMonitorConfig {
    /// Page-Hinkley on standardised losses.
    pub page_hinkley: PageHinkleyConfig,
    /// ADWIN on raw losses.
    pub adwin: AdwinConfig,
    /// Losses used to estimate the standardisation (at start and after each Page-Hinkley detection).
    pub warmup: u64,
    /// Quantile bins of the continuous marginals.
    pub psi_bins: usize,
    /// PSI above which a marginal has drifted.
    pub psi_threshold: f64,
    /// Windows with fewer real flows are not compared (nor taken as reference).
    pub psi_min_flows: u64,
    pub psi_epsilon: f64,
}

impl Default for DriftMonitorConfig {
    fn default() -> Self {
        DriftMonitorConfig {
            page_hinkley: PageHinkleyConfig {
                min_instances: 30,
                delta: 0.1,
                threshold: 50.0,
                alpha: 1.0,
                mode: PhMode::Up,
            },
            adwin: AdwinConfig::default(),
            warmup: 100,
            psi_bins: PSI_BINS,
            psi_threshold: PSI_SIGNIFICANT,
            psi_min_flows: 200,
            psi_epsilon: PSI_EPSILON,
        }
    }
}

/// Decades per fine bin of the continuous marginals (their PSI quantiles are exact to this resolution).
pub const MARGINAL_RESOLUTION: f64 = 0.01;

fn fine_bin(x: f64) -> i64 {
    (x / MARGINAL_RESOLUTION).round() as i64
}

/// The real flows' marginals over one window, mergeable (e.g. across workers). Continuous values are kept as
/// counts per [`MARGINAL_RESOLUTION`] bin of their log10, so memory depends on the spread, not the flow count.
///
/// Inter-arrival gaps are taken between consecutive flows *added to this value* (add them in start order; an
/// earlier start than the previous one counts as a gap of 0); merged marginals pool their gaps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowMarginals {
    flows: u64,
    proto: HashMap<u64, u64>,
    dst_port_class: HashMap<u64, u64>,
    log10_bytes: BTreeMap<i64, u64>,
    log10_inter_arrival: BTreeMap<i64, u64>,
    last_start: Option<i64>,
}

impl WindowMarginals {
    pub fn new() -> Self {
        Self::default()
    }

    /// The marginals of a set of flows (sorted by start first).
    pub fn of(flows: &[FlowRecord]) -> Self {
        let mut m = Self::new();
        for r in crate::metrics::time_sorted(flows) {
            m.add(&r);
        }
        m
    }

    pub fn add(&mut self, r: &FlowRecord) {
        self.flows += 1;
        *self.proto.entry(r.proto as u64).or_default() += 1;
        *self
            .dst_port_class
            .entry(port_class(r.dst_port) as u64)
            .or_default() += 1;
        *self
            .log10_bytes
            .entry(fine_bin(log10_count(r.bytes as f64)))
            .or_default() += 1;
        if let Some(prev) = self.last_start {
            let gap_s = (r.start_us - prev).max(0) as f64 / 1e6;
            *self
                .log10_inter_arrival
                .entry(fine_bin(log10_time(gap_s)))
                .or_default() += 1;
        }
        self.last_start = Some(self.last_start.map_or(r.start_us, |p| p.max(r.start_us)));
    }

    /// Adds another window's (or worker's) marginals.
    pub fn merge(&mut self, o: &WindowMarginals) {
        self.flows += o.flows;
        for (a, b) in [
            (&mut self.proto, &o.proto),
            (&mut self.dst_port_class, &o.dst_port_class),
        ] {
            for (k, v) in b {
                *a.entry(*k).or_default() += v;
            }
        }
        for (a, b) in [
            (&mut self.log10_bytes, &o.log10_bytes),
            (&mut self.log10_inter_arrival, &o.log10_inter_arrival),
        ] {
            for (k, v) in b {
                *a.entry(*k).or_default() += v;
            }
        }
        self.last_start = self.last_start.max(o.last_start);
    }

    /// Flows added.
    pub fn flows(&self) -> u64 {
        self.flows
    }

    fn continuous(&self, f: DriftFeature) -> Vec<(f64, u64)> {
        let m = match f {
            DriftFeature::Log10Bytes => &self.log10_bytes,
            DriftFeature::Log10InterArrival => &self.log10_inter_arrival,
            _ => unreachable!("categorical feature"),
        };
        m.iter()
            .map(|(&k, &n)| (k as f64 * MARGINAL_RESOLUTION, n))
            .collect()
    }

    /// PSI of one marginal between a reference (`self`) and a current window.
    pub fn psi(&self, current: &WindowMarginals, f: DriftFeature, bins: usize, psi: &Psi) -> f64 {
        match f {
            DriftFeature::Proto => psi.between_categorical(&self.proto, &current.proto),
            DriftFeature::DstPortClass => {
                psi.between_categorical(&self.dst_port_class, &current.dst_port_class)
            }
            DriftFeature::Log10Bytes | DriftFeature::Log10InterArrival => {
                let r = self.continuous(f);
                let q = QuantileBins::from_sorted_weighted(&r, bins);
                psi.between_counts(
                    &q.counts_weighted(&r),
                    &q.counts_weighted(&current.continuous(f)),
                )
            }
            DriftFeature::Loss => panic!("the loss is not a flow marginal"),
        }
    }
}

/// Running mean and variance (Welford) of the warm-up losses.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }
    fn sd(&self) -> f64 {
        if self.n < 2 {
            0.0
        } else {
            (self.m2 / (self.n - 1) as f64).sqrt()
        }
    }
}

/// Loss and marginal drift detection for one trainer (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DriftMonitor {
    cfg: DriftMonitorConfig,
    adwin: Adwin,
    ph: PageHinkley,
    warm: Welford,
    /// `(mean, sd)` standardising Page-Hinkley's input once the warm-up is complete.
    scale: Option<(f64, f64)>,
    seen: u64,
    skipped: u64,
    reference: Option<(i64, WindowMarginals)>,
    last_psi: Vec<(DriftFeature, f64)>,
}

impl Default for DriftMonitor {
    fn default() -> Self {
        DriftMonitor::new(DriftMonitorConfig::default())
    }
}

impl DriftMonitor {
    pub fn new(cfg: DriftMonitorConfig) -> Self {
        assert!(cfg.warmup >= 2, "the warm-up needs two losses for a spread");
        DriftMonitor {
            cfg,
            adwin: Adwin::new(cfg.adwin),
            ph: PageHinkley::new(cfg.page_hinkley),
            warm: Welford::default(),
            scale: None,
            seen: 0,
            skipped: 0,
            reference: None,
            last_psi: Vec::new(),
        }
    }

    /// Feeds one training loss; detections are appended to `events`.
    pub fn observe_loss(&mut self, loss: f32, events: &mut Vec<DriftEvent>) {
        if !loss.is_finite() {
            self.skipped += 1;
            return;
        }
        let x = loss as f64;
        let index = self.seen;
        self.seen += 1;
        if self.adwin.update(x) {
            let cut = self.adwin.last_cut().expect("a detection has a cut");
            events.push(DriftEvent {
                detector: DetectorKind::Adwin,
                feature: DriftFeature::Loss,
                index,
                statistic: cut.delta_mean,
                threshold: cut.epsilon,
                increase: Some(cut.mean_new > cut.mean_old),
                width: Some(self.adwin.width()),
                window_start_us: None,
                reference_start_us: None,
            });
        }
        match self.scale {
            None => {
                self.warm.add(x);
                if self.warm.n >= self.cfg.warmup {
                    // A constant warm-up has no spread: any later change is then "infinitely" significant,
                    // so the spread is floored at a tiny fraction of the level instead.
                    let floor = (self.warm.mean.abs() * 1e-6).max(1e-12);
                    self.scale = Some((self.warm.mean, self.warm.sd().max(floor)));
                }
            }
            Some((mean, sd)) => {
                if self.ph.update((x - mean) / sd) {
                    events.push(DriftEvent {
                        detector: DetectorKind::PageHinkley,
                        feature: DriftFeature::Loss,
                        index,
                        statistic: self.ph.statistic(),
                        threshold: self.cfg.page_hinkley.threshold,
                        increase: Some(self.ph.direction() == Some(PhDirection::Up)),
                        width: Some(self.ph.n()),
                        window_start_us: None,
                        reference_start_us: None,
                    });
                    // The loss moved to a new level: learn its scale again before testing it.
                    self.ph.reset();
                    self.warm = Welford::default();
                    self.scale = None;
                }
            }
        }
    }

    /// Feeds a batch of losses in order; returns the detections.
    pub fn observe_losses(&mut self, losses: &[f32]) -> Vec<DriftEvent> {
        let mut events = Vec::new();
        for &l in losses {
            self.observe_loss(l, &mut events);
        }
        events
    }

    /// Compares one window's real-flow marginals with the reference window; returns the PSI detections.
    pub fn observe_window(
        &mut self,
        window_start_us: i64,
        marginals: &WindowMarginals,
    ) -> Vec<DriftEvent> {
        let mut events = Vec::new();
        if marginals.flows() < self.cfg.psi_min_flows {
            return events;
        }
        let Some((ref_start, reference)) = &self.reference else {
            self.reference = Some((window_start_us, marginals.clone()));
            return events;
        };
        let psi = Psi {
            epsilon: self.cfg.psi_epsilon,
        };
        self.last_psi.clear();
        for f in DriftFeature::MARGINALS {
            let v = reference.psi(marginals, f, self.cfg.psi_bins, &psi);
            self.last_psi.push((f, v));
            if v > self.cfg.psi_threshold {
                events.push(DriftEvent {
                    detector: DetectorKind::Psi,
                    feature: f,
                    index: self.seen,
                    statistic: v,
                    threshold: self.cfg.psi_threshold,
                    increase: None,
                    width: None,
                    window_start_us: Some(window_start_us),
                    reference_start_us: Some(*ref_start),
                });
            }
        }
        if !events.is_empty() {
            self.reference = Some((window_start_us, marginals.clone()));
        }
        events
    }

    /// Finite losses fed so far (the next loss's index).
    pub fn losses_seen(&self) -> u64 {
        self.seen
    }

    /// Non-finite losses skipped.
    pub fn losses_skipped(&self) -> u64 {
        self.skipped
    }

    /// PSI per marginal of the last compared window (empty before the second eligible window).
    pub fn last_psi(&self) -> &[(DriftFeature, f64)] {
        &self.last_psi
    }

    /// The loss ADWIN (its window shows how much recent loss history is consistent).
    pub fn adwin(&self) -> &Adwin {
        &self.adwin
    }

    pub fn config(&self) -> &DriftMonitorConfig {
        &self.cfg
    }
}
