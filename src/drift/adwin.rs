//! ADWIN (adaptive windowing, Bifet & Gavaldà 2007, the ADWIN2 variant), as River's `river.drift.ADWIN`.
//!
//! # What is kept
//! The window is an exponential histogram: row `i` holds up to `max_buckets` buckets of `2^i` consecutive values
//! each, every bucket keeping its total and its variance sum (sum of squared deviations from the bucket mean).
//! When row `i` holds `max_buckets + 1` buckets its two oldest are merged into one bucket of row `i + 1`
//! (variances combined exactly, Babcock et al. 2003), so a window of `W` values takes `O(max_buckets * log W)`
//! buckets. Rows grow older with `i`; within a row buckets are oldest first.
//!
//! # The cut test
//! Every `clock` values, once the window holds more than `grace_period` values, each boundary between buckets
//! splits the window into an older part `W0` (`n0` values) and a newer part `W1` (`n1`). With both parts at
//! least `min_window_length` long, the cut is significant when
//!
//! ```text
//! |mean(W0) - mean(W1)| > eps,   eps = sqrt(2 m v d) + 2/3 d m,
//! m = 1/(n0 - min_window_length + 1) + 1/(n1 - min_window_length + 1),
//! v = variance of the whole window (per value),   d = ln(2 ln(W) / delta)
//! ```
//!
//! (the Bernstein-style bound of ADWIN2 as River computes it). On a significant cut the oldest bucket is dropped
//! and all boundaries are tested again, until no cut is significant: the window shrinks to the values after the
//! change. A drift is reported by the `update` whose test dropped something; unlike Page-Hinkley nothing is
//! reset afterwards (the shrunk window *is* the new reference), so a large change is typically reported a few
//! times, one `clock` apart, while the last pre-change buckets are dropped.
//!
//! # Differences from River
//! River's scan (`for k in range(bucket.current_idx - 1)`) never moves the newest bucket of a row into `W0`, so
//! some boundaries are skipped and the two parts are not contiguous; here every boundary between consecutive
//! buckets is tested, as in the paper. `variance()` is per value (River's `variance` property is the sum).

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Parameters of [`Adwin`]; the defaults are River's.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdwinConfig {
    /// Confidence: the probability of a false cut per test is bounded through it (0.002).
    pub delta: f64,
    /// Test for a cut every `clock` values (32).
    pub clock: u64,
    /// Buckets kept per row before the two oldest are merged (5).
    pub max_buckets: usize,
    /// Shortest sub-window a cut may leave on either side (5).
    pub min_window_length: u64,
    /// No test before the window holds more than this many values (10).
    pub grace_period: u64,
}

impl Default for AdwinConfig {
    fn default() -> Self {
        AdwinConfig {
            delta: 0.002,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5,
            grace_period: 10,
        }
    }
}

/// One bucket: `2^row` values summarised by their total and variance sum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
struct Bucket {
    total: f64,
    variance: f64,
}

/// The cut that triggered a detection: the first significant boundary the detecting `update` found, before it
/// dropped anything.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdwinCut {
    /// `|mean(W0) - mean(W1)|` at the cut.
    pub delta_mean: f64,
    /// Means of the older part `W0` and the newer part `W1`.
    pub mean_old: f64,
    pub mean_new: f64,
    /// The bound it exceeded.
    pub epsilon: f64,
    /// Lengths of the older and newer part.
    pub n0: u64,
    pub n1: u64,
}

/// The ADWIN detector (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Adwin {
    cfg: AdwinConfig,
    /// `rows[i]`: buckets of `2^i` values, oldest first; higher rows are older.
    rows: Vec<VecDeque<Bucket>>,
    width: u64,
    total: f64,
    /// Sum of squared deviations from the window mean.
    variance: f64,
    tick: u64,
    detections: u64,
    drift: bool,
    last_cut: Option<AdwinCut>,
}

impl Default for Adwin {
    fn default() -> Self {
        Adwin::new(AdwinConfig::default())
    }
}

impl Adwin {
    pub fn new(cfg: AdwinConfig) -> Self {
        assert!(
            cfg.delta > 0.0 && cfg.delta < 1.0,
            "delta must lie in (0, 1)"
        );
        assert!(cfg.clock > 0, "clock must be positive");
        assert!(cfg.max_buckets > 0, "max_buckets must be positive");
        Adwin {
            cfg,
            rows: vec![VecDeque::new()],
            width: 0,
            total: 0.0,
            variance: 0.0,
            tick: 0,
            detections: 0,
            drift: false,
            last_cut: None,
        }
    }

    /// Adds one value; true when the window was cut (a drift detected) at this value.
    pub fn update(&mut self, x: f64) -> bool {
        self.insert(x);
        self.drift = self.detect();
        self.drift
    }

    fn insert(&mut self, x: f64) {
        self.rows[0].push_back(Bucket {
            total: x,
            variance: 0.0,
        });
        self.width += 1;
        if self.width > 1 {
            let w = self.width as f64;
            let d = x - self.total / (w - 1.0);
            self.variance += (w - 1.0) * d * d / w;
        }
        self.total += x;
        self.compress();
    }

    /// Merges the two oldest buckets of every row that overflowed, carrying into the next row.
    fn compress(&mut self) {
        let mut i = 0;
        while self.rows[i].len() > self.cfg.max_buckets {
            let a = self.rows[i].pop_front().expect("an overflowing row");
            let b = self.rows[i].pop_front().expect("an overflowing row");
            let n = (1u64 << i) as f64;
            let (ma, mb) = (a.total / n, b.total / n);
            let merged = Bucket {
                total: a.total + b.total,
                variance: a.variance + b.variance + n * n * (ma - mb) * (ma - mb) / (2.0 * n),
            };
            if self.rows.len() == i + 1 {
                self.rows.push(VecDeque::new());
            }
            self.rows[i + 1].push_back(merged);
            i += 1;
        }
    }

    /// Drops the oldest bucket; returns its length.
    fn delete_oldest(&mut self) -> u64 {
        let row = self.rows.len() - 1;
        let b = self.rows[row]
            .pop_front()
            .expect("the last row is never empty");
        // Keep the last row non-empty (with max_buckets = 1 middle rows can be empty).
        while self.rows.len() > 1 && self.rows.last().is_some_and(VecDeque::is_empty) {
            self.rows.pop();
        }
        let n = 1u64 << row;
        self.width -= n;
        self.total -= b.total;
        if self.width == 0 {
            self.total = 0.0;
            self.variance = 0.0;
        } else {
            let (nf, wf) = (n as f64, self.width as f64);
            let d = b.total / nf - self.total / wf;
            self.variance -= b.variance + nf * wf * d * d / (nf + wf);
            self.variance = self.variance.max(0.0);
        }
        n
    }

    fn detect(&mut self) -> bool {
        self.tick += 1;
        if !self.tick.is_multiple_of(self.cfg.clock) || self.width <= self.cfg.grace_period {
            return false;
        }
        let mut changed = false;
        while let Some(cut) = self.find_cut() {
            if !changed {
                self.last_cut = Some(cut);
            }
            changed = true;
            self.delete_oldest();
        }
        if changed {
            self.detections += 1;
        }
        changed
    }

    /// The first significant boundary scanning from the oldest bucket, if any.
    fn find_cut(&self) -> Option<AdwinCut> {
        let min = self.cfg.min_window_length;
        let (mut n0, mut u0) = (0u64, 0.0f64);
        let (mut n1, mut u1) = (self.width, self.total);
        for (i, row) in self.rows.iter().enumerate().rev() {
            let size = 1u64 << i;
            for (k, b) in row.iter().enumerate() {
                n0 += size;
                n1 -= size;
                u0 += b.total;
                u1 -= b.total;
                if i == 0 && k + 1 == row.len() {
                    return None; // W1 would be empty
                }
                if n0 >= min && n1 >= min {
                    let (mean_old, mean_new) = (u0 / n0 as f64, u1 / n1 as f64);
                    let delta_mean = (mean_old - mean_new).abs();
                    let epsilon = self.epsilon(n0, n1);
                    if delta_mean > epsilon {
                        return Some(AdwinCut {
                            delta_mean,
                            mean_old,
                            mean_new,
                            epsilon,
                            n0,
                            n1,
                        });
                    }
                }
            }
        }
        None
    }

    fn epsilon(&self, n0: u64, n1: u64) -> f64 {
        let min = self.cfg.min_window_length as f64;
        let d = (2.0 * (self.width as f64).ln() / self.cfg.delta).ln();
        let m = 1.0 / (n0 as f64 - min + 1.0) + 1.0 / (n1 as f64 - min + 1.0);
        (2.0 * m * self.variance() * d).sqrt() + 2.0 / 3.0 * d * m
    }

    /// Whether the last `update` cut the window.
    pub fn drift_detected(&self) -> bool {
        self.drift
    }

    /// Values in the window.
    pub fn width(&self) -> u64 {
        self.width
    }

    /// Mean of the window (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.width == 0 {
            0.0
        } else {
            self.total / self.width as f64
        }
    }

    /// Variance of the window's values (population form, per value; 0 when empty).
    pub fn variance(&self) -> f64 {
        if self.width == 0 {
            0.0
        } else {
            self.variance / self.width as f64
        }
    }

    /// Updates that cut the window so far.
    pub fn n_detections(&self) -> u64 {
        self.detections
    }

    /// The cut that triggered the latest detection (kept after later updates).
    pub fn last_cut(&self) -> Option<AdwinCut> {
        self.last_cut
    }

    /// Buckets held (bounded by `max_buckets` per row, one row per doubling of the width).
    pub fn buckets(&self) -> usize {
        self.rows.iter().map(VecDeque::len).sum()
    }

    pub fn config(&self) -> &AdwinConfig {
        &self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket summaries reproduce the exact window mean and variance, and the bucket count stays
    /// logarithmic.
    #[test]
    fn buckets_keep_exact_moments() {
        let mut a = Adwin::new(AdwinConfig {
            clock: u64::MAX,
            ..Default::default()
        });
        let xs: Vec<f64> = (0..1000).map(|i| ((i * 37) % 101) as f64 / 10.0).collect();
        for &x in &xs {
            a.update(x);
        }
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert_eq!(a.width(), 1000);
        assert!((a.mean() - mean).abs() < 1e-9);
        assert!(
            (a.variance() - var).abs() < 1e-6,
            "{} vs {var}",
            a.variance()
        );
        assert!(a.buckets() <= 5 * 10, "{} buckets", a.buckets());
        // Every row but the newest holds buckets of a doubled size: the widths add up.
        let w: u64 = a
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.len() as u64) << i)
            .sum();
        assert_eq!(w, 1000);
    }

    /// Dropping the oldest bucket keeps the moments of what is left exact.
    #[test]
    fn delete_keeps_moments() {
        let mut a = Adwin::new(AdwinConfig {
            clock: u64::MAX,
            ..Default::default()
        });
        let xs: Vec<f64> = (0..300)
            .map(|i| (i % 7) as f64 + (i / 100) as f64)
            .collect();
        for &x in &xs {
            a.update(x);
        }
        let n = a.delete_oldest() as usize;
        let rest = &xs[n..];
        let mean = rest.iter().sum::<f64>() / rest.len() as f64;
        let var = rest.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / rest.len() as f64;
        assert_eq!(a.width() as usize, rest.len());
        assert!((a.mean() - mean).abs() < 1e-9);
        assert!((a.variance() - var).abs() < 1e-6);
    }
}
