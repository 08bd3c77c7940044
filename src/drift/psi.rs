//! Population stability index (PSI) between a reference and a current distribution.
//!
//! ```text
//! PSI = sum_i (c_i - r_i) * ln(c_i / r_i)
//! ```
//!
//! over aligned bins, `r_i` and `c_i` the reference and current proportions. It is the symmetrised
//! Kullback-Leibler divergence, so it is 0 for identical distributions and grows without bound. An empty bin
//! would make it infinite, so a proportion of 0 is replaced by `epsilon` (default 1e-4) on that side only.
//!
//! Conventional reading (credit-scoring practice):
//! - below [`PSI_MODERATE`] (0.1): stable;
//! - from 0.1 to [`PSI_SIGNIFICANT`] (0.25): moderate shift, worth watching;
//! - above 0.25: significant shift.
//!
//! Sampling noise alone gives a PSI of about `(bins - 1) * (1/n_ref + 1/n_cur)` (its expectation under equal
//! distributions), e.g. 0.004 for 10 bins and 5,000 values on each side: windows should hold a few hundred values
//! at least before the thresholds mean anything.
//!
//! Continuous values are binned by the *reference's* quantiles ([`QuantileBins`], 10 bins by default), so every
//! reference bin holds about the same mass and the index does not depend on the unit of the values.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::Hash;

/// PSI below which a distribution is conventionally stable.
pub const PSI_MODERATE: f64 = 0.1;
/// PSI above which a shift is conventionally significant.
pub const PSI_SIGNIFICANT: f64 = 0.25;
/// Proportion used for an empty bin.
pub const PSI_EPSILON: f64 = 1e-4;
/// Quantile bins of a continuous value.
pub const PSI_BINS: usize = 10;

/// The conventional reading of a PSI value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PsiLevel {
    Stable,
    Moderate,
    Significant,
}

impl PsiLevel {
    pub fn of(psi: f64) -> PsiLevel {
        if psi > PSI_SIGNIFICANT {
            PsiLevel::Significant
        } else if psi >= PSI_MODERATE {
            PsiLevel::Moderate
        } else {
            PsiLevel::Stable
        }
    }
}

/// PSI computations with a given empty-bin `epsilon`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Psi {
    pub epsilon: f64,
}

impl Default for Psi {
    fn default() -> Self {
        Psi {
            epsilon: PSI_EPSILON,
        }
    }
}

impl Psi {
    /// PSI between two count vectors over the same bins (bin `i` of both). NaN when either side is empty.
    pub fn between_counts(&self, reference: &[u64], current: &[u64]) -> f64 {
        assert_eq!(
            reference.len(),
            current.len(),
            "PSI needs the same bins on both sides"
        );
        self.between_pairs(reference.iter().copied().zip(current.iter().copied()))
    }

    /// PSI between two categorical distributions given as value counts; a value missing on one side counts 0
    /// there.
    pub fn between_categorical<K: Eq + Hash, S: std::hash::BuildHasher>(
        &self,
        reference: &HashMap<K, u64, S>,
        current: &HashMap<K, u64, S>,
    ) -> f64 {
        let pairs = reference
            .iter()
            .map(|(k, &r)| (r, current.get(k).copied().unwrap_or(0)))
            .chain(
                current
                    .iter()
                    .filter(|(k, _)| !reference.contains_key(*k))
                    .map(|(_, &c)| (0, c)),
            );
        self.between_pairs(pairs)
    }

    /// PSI between two samples of a continuous value, binned by `bins` quantiles of the reference.
    pub fn between_continuous(&self, reference: &[f64], current: &[f64], bins: usize) -> f64 {
        let q = QuantileBins::from_values(reference, bins);
        self.between_counts(&q.counts(reference), &q.counts(current))
    }

    /// PSI over `(reference count, current count)` per bin.
    pub fn between_pairs(&self, pairs: impl Iterator<Item = (u64, u64)> + Clone) -> f64 {
        let (tr, tc) = pairs
            .clone()
            .fold((0u64, 0u64), |(a, b), (r, c)| (a + r, b + c));
        if tr == 0 || tc == 0 {
            return f64::NAN;
        }
        let eps = self.epsilon;
        pairs
            .map(|(r, c)| {
                let p = if r == 0 { eps } else { r as f64 / tr as f64 };
                let q = if c == 0 { eps } else { c as f64 / tc as f64 };
                (q - p) * (q / p).ln()
            })
            .sum()
    }
}

/// Bins of a continuous value at quantiles of a reference sample: edges `e_1 < ... < e_k`, bin `j` holds the
/// values in `(e_j, e_{j+1}]` (bin 0 everything up to `e_1`, the last bin everything above `e_k`). The edges are
/// the reference's `j / bins` quantiles (lower inverse CDF), with duplicates removed: a value that holds more
/// than a bin's share of the reference (e.g. zero gaps) gets one bin of its own instead of several empty ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantileBins {
    edges: Vec<f64>,
}

impl QuantileBins {
    /// Edges from a raw sample (NaNs ignored).
    pub fn from_values(values: &[f64], bins: usize) -> QuantileBins {
        let mut v: Vec<(f64, u64)> = values
            .iter()
            .filter(|x| !x.is_nan())
            .map(|&x| (x, 1))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        QuantileBins::from_sorted_weighted(&v, bins)
    }

    /// Edges from `(value, count)` pairs sorted by value (e.g. a fine histogram).
    pub fn from_sorted_weighted(values: &[(f64, u64)], bins: usize) -> QuantileBins {
        assert!(bins > 0, "at least one bin");
        debug_assert!(values.windows(2).all(|w| w[0].0 <= w[1].0));
        let total: u64 = values.iter().map(|v| v.1).sum();
        let mut edges: Vec<f64> = Vec::with_capacity(bins - 1);
        if total > 0 {
            let mut it = values.iter().filter(|v| v.1 > 0);
            let mut cur = it.next().copied();
            let mut cum = cur.map_or(0, |v| v.1);
            for j in 1..bins {
                // The smallest value whose cumulative count reaches j/bins of the total.
                let want = (j as u128 * total as u128).div_ceil(bins as u128) as u64;
                while cum < want {
                    cur = it.next().copied();
                    cum += cur.map_or(0, |v| v.1);
                }
                if let Some((x, _)) = cur
                    && edges.last().is_none_or(|&e| e < x)
                {
                    edges.push(x);
                }
            }
        }
        QuantileBins { edges }
    }

    /// Number of bins (`edges + 1`).
    pub fn len(&self) -> usize {
        self.edges.len() + 1
    }

    /// Always false: there is at least one bin.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn edges(&self) -> &[f64] {
        &self.edges
    }

    /// The bin of a value (NaN goes to the last bin).
    pub fn bin(&self, x: f64) -> usize {
        self.edges.partition_point(|&e| e < x || x.is_nan())
    }

    /// Counts of a sample per bin.
    pub fn counts(&self, values: &[f64]) -> Vec<u64> {
        let mut c = vec![0u64; self.len()];
        for &x in values {
            c[self.bin(x)] += 1;
        }
        c
    }

    /// Counts per bin of `(value, count)` pairs.
    pub fn counts_weighted<'a>(
        &self,
        values: impl IntoIterator<Item = &'a (f64, u64)>,
    ) -> Vec<u64> {
        let mut c = vec![0u64; self.len()];
        for &(x, n) in values {
            c[self.bin(x)] += n;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_edges_split_mass_evenly_and_merge_ties() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let q = QuantileBins::from_values(&v, 10);
        assert_eq!(
            q.edges(),
            &[10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]
        );
        assert_eq!(q.counts(&v), vec![10; 10]);
        // Half the mass on one value: its quantiles collapse into one edge.
        let mut t = vec![0.0; 50];
        t.extend((1..=50).map(f64::from));
        let q = QuantileBins::from_values(&t, 10);
        assert_eq!(q.edges()[0], 0.0);
        assert_eq!(q.counts(&t)[0], 50);
        assert_eq!(q.len(), 6);
    }

    /// Hand-computed: reference (0.5, 0.5), current (0.25, 0.75):
    /// (0.25-0.5) ln(0.5) + (0.75-0.5) ln(1.5) = 0.1733 + 0.1014 = 0.2747.
    #[test]
    fn psi_matches_hand_computation() {
        let psi = Psi::default().between_counts(&[50, 50], &[25, 75]);
        let want = -0.25 * 0.5f64.ln() + 0.25 * 1.5f64.ln();
        assert!((psi - want).abs() < 1e-12, "{psi} vs {want}");
        assert_eq!(PsiLevel::of(psi), PsiLevel::Significant);
        // A category only the current side has is charged through epsilon.
        let r: HashMap<u8, u64> = [(6, 100)].into();
        let c: HashMap<u8, u64> = [(6, 90), (17, 10)].into();
        let psi = Psi::default().between_categorical(&r, &c);
        let want = (0.9 - 1.0) * 0.9f64.ln() + (0.1 - 1e-4) * (0.1f64 / 1e-4).ln();
        assert!((psi - want).abs() < 1e-12);
        assert!(Psi::default().between_counts(&[0, 0], &[1, 2]).is_nan());
    }
}
