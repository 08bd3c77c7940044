//! Temporal structure of a flow set, from its series of **per-second flow counts** `x_t` (flows starting in
//! second t, from the second of the first start to the second of the last, empty seconds included).
//!
//! - **Autocorrelation** at lag k (k = 1..=60): `r_k = Σ_t (x_t - x̄)(x_{t+k} - x̄) / Σ_t (x_t - x̄)²` (the
//!   usual biased sample ACF). NaN when the series is constant or shorter than k+1. Real and synthetic ACFs
//!   are compared by the mean absolute difference over the lags both define.
//! - **Hurst exponent** by aggregated variance: for block sizes m (geometric from 1 up to n/10, so at least 10
//!   blocks), the variance of the block means `Var(X^(m)) ∝ m^(2H-2)`; H = 1 + β/2 where β is the
//!   least-squares slope of log10 Var against log10 m. 0.5 for short-range dependence (Poisson), towards 1 for
//!   long-range dependent (self-similar) traffic.
//! - **Burstiness**: the coefficient of variation of the inter-arrival times, `CV = std / mean` (sample std);
//!   1 for a Poisson process, above 1 for bursty traffic.
//! - **Diurnal profile correlation**: each set's mean flows per hour-of-day (UTC, 24 bins, count divided by the
//!   hours of that hour-of-day the set spans), correlated (Pearson) between real and synthetic. Only defined when
//!   both sets span at least 24 hours; otherwise `None` with a note.

use super::{inter_arrivals, mean, sorted_starts};
use crate::record::FlowRecord;
use serde::{Deserialize, Serialize};

/// Lags of the autocorrelation.
pub const MAX_LAG: usize = 60;
/// The longest count series built (seconds); longer spans are cut at this length (about 116 days).
pub const MAX_SECONDS: usize = 10_000_000;

/// Temporal statistics of one set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TemporalStats {
    /// Length of the per-second count series.
    pub seconds: usize,
    /// Mean flows per second over the series.
    pub mean_rate: f64,
    /// `acf[k-1]` is the autocorrelation at lag k.
    pub acf: Vec<f64>,
    pub hurst: f64,
    pub burstiness_cv: f64,
    /// Mean flows per hour of day (UTC), when the set spans at least 24 h.
    pub diurnal: Option<Vec<f64>>,
}

/// Temporal statistics of both sets and their comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Temporal {
    pub real: TemporalStats,
    pub synthetic: TemporalStats,
    /// Mean |ACF_real(k) - ACF_synth(k)| over the lags both define (NaN if none).
    pub acf_mean_abs_diff: f64,
    /// Pearson correlation of the diurnal profiles, when both span 24 h.
    pub diurnal_correlation: Option<f64>,
    pub diurnal_note: String,
}

/// Per-second flow counts (see the module docs).
pub fn per_second_counts(flows: &[FlowRecord]) -> Vec<f64> {
    let s = sorted_starts(flows);
    let (Some(&first), Some(&last)) = (s.first(), s.last()) else {
        return Vec::new();
    };
    let t0 = first.div_euclid(1_000_000);
    let n = ((last.div_euclid(1_000_000) - t0 + 1) as usize).min(MAX_SECONDS);
    let mut x = vec![0.0; n];
    for t in s {
        let i = (t.div_euclid(1_000_000) - t0) as usize;
        if i < n {
            x[i] += 1.0;
        }
    }
    x
}

/// Sample autocorrelation at lags 1..=max_lag (see the module docs).
pub fn autocorrelation(x: &[f64], max_lag: usize) -> Vec<f64> {
    let m = mean(x);
    let denom: f64 = x.iter().map(|v| (v - m).powi(2)).sum();
    (1..=max_lag)
        .map(|k| {
            if k >= x.len() || denom <= 0.0 {
                return f64::NAN;
            }
            x.iter()
                .zip(&x[k..])
                .map(|(a, b)| (a - m) * (b - m))
                .sum::<f64>()
                / denom
        })
        .collect()
}

/// Hurst exponent by aggregated variance (see the module docs); NaN when fewer than 3 block sizes have a
/// nonzero variance.
pub fn hurst_aggregated_variance(x: &[f64]) -> f64 {
    let n = x.len();
    let mut pts = Vec::new();
    let mut m = 1usize;
    while m <= n / 10 {
        let blocks = n / m;
        let means: Vec<f64> = (0..blocks)
            .map(|b| x[b * m..(b + 1) * m].iter().sum::<f64>() / m as f64)
            .collect();
        let mu = mean(&means);
        let var = means.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / (blocks as f64 - 1.0);
        if var > 0.0 {
            pts.push(((m as f64).log10(), var.log10()));
        }
        let next = ((m as f64) * 1.6).ceil() as usize;
        m = next.max(m + 1);
    }
    if pts.len() < 3 {
        return f64::NAN;
    }
    let mx = mean(&pts.iter().map(|p| p.0).collect::<Vec<_>>());
    let my = mean(&pts.iter().map(|p| p.1).collect::<Vec<_>>());
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    1.0 + (sxy / sxx) / 2.0
}

/// Coefficient of variation (sample std / mean) of the inter-arrival times; NaN with fewer than 3 flows or a
/// zero mean.
pub fn burstiness_cv(flows: &[FlowRecord]) -> f64 {
    let g = inter_arrivals(flows);
    if g.len() < 2 {
        return f64::NAN;
    }
    let m = mean(&g);
    let var = g.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (g.len() - 1) as f64;
    if m > 0.0 { var.sqrt() / m } else { f64::NAN }
}

const DAY_US: i64 = 86_400_000_000;
const HOUR_US: i64 = 3_600_000_000;

/// Mean flows per hour of day (UTC) when the set spans at least 24 hours (see the module docs).
pub fn diurnal_profile(flows: &[FlowRecord]) -> Option<Vec<f64>> {
    let s = sorted_starts(flows);
    let (first, last) = (*s.first()?, *s.last()?);
    if last - first < DAY_US {
        return None;
    }
    let mut counts = [0.0f64; 24];
    for t in &s {
        counts[(t.rem_euclid(DAY_US) / HOUR_US) as usize] += 1.0;
    }
    let mut hours = [0.0f64; 24];
    let mut h = first.div_euclid(HOUR_US);
    while h <= last.div_euclid(HOUR_US) {
        hours[(h.rem_euclid(24)) as usize] += 1.0;
        h += 1;
    }
    Some(
        counts
            .iter()
            .zip(hours)
            .map(|(c, n)| if n > 0.0 { c / n } else { 0.0 })
            .collect(),
    )
}

/// Pearson correlation of two equal-length vectors; NaN if either is constant.
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let (ma, mb) = (mean(a), mean(b));
    let sab: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let saa: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let sbb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if saa <= 0.0 || sbb <= 0.0 {
        f64::NAN
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// Temporal statistics of one set.
pub fn stats(flows: &[FlowRecord]) -> TemporalStats {
    let x = per_second_counts(flows);
    TemporalStats {
        seconds: x.len(),
        mean_rate: mean(&x),
        acf: autocorrelation(&x, MAX_LAG),
        hurst: hurst_aggregated_variance(&x),
        burstiness_cv: burstiness_cv(flows),
        diurnal: diurnal_profile(flows),
    }
}

/// Temporal statistics of both sets and their comparison (see the module docs).
pub fn temporal(real: &[FlowRecord], synthetic: &[FlowRecord]) -> Temporal {
    let r = stats(real);
    let s = stats(synthetic);
    let diffs: Vec<f64> = r
        .acf
        .iter()
        .zip(&s.acf)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(a, b)| (a - b).abs())
        .collect();
    let (corr, note) = match (&r.diurnal, &s.diurnal) {
        (Some(a), Some(b)) => (
            Some(pearson(a, b)),
            "both sets span at least 24 h".to_string(),
        ),
        _ => (
            None,
            format!(
                "not computed: needs 24 h in both sets (real spans {} s, synthetic {} s)",
                r.seconds, s.seconds
            ),
        ),
    };
    Temporal {
        acf_mean_abs_diff: mean(&diffs),
        real: r,
        synthetic: s,
        diurnal_correlation: corr,
        diurnal_note: note,
    }
}
