//! The few random distributions the simulator draws from, written against any `rand::Rng` so a seeded
//! `ChaCha8Rng` makes them reproducible. Kept here (not scattered) so every draw's definition is in one place.

use super::scenario::LogNormalSpec;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// A discrete distribution over `0..n` given by non-negative weights, sampled by binary search on the
/// cumulative sums (exact, O(log n), no rejection loop).
#[derive(Clone, Debug)]
pub struct Cdf {
    cum: Vec<f64>,
}

impl Cdf {
    /// `None` when there is nothing to choose (no positive weight).
    pub fn new(weights: impl IntoIterator<Item = f64>) -> Option<Cdf> {
        let mut total = 0.0;
        let cum: Vec<f64> = weights
            .into_iter()
            .map(|w| {
                total += w.max(0.0);
                total
            })
            .collect();
        (total > 0.0).then_some(Cdf { cum })
    }

    /// Zipf weights 1/k^s over ranks k = 1..=n: rank 1 is the most popular.
    pub fn zipf(n: usize, s: f64) -> Option<Cdf> {
        Cdf::new((1..=n).map(|k| (k as f64).powf(-s)))
    }

    pub fn len(&self) -> usize {
        self.cum.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cum.is_empty()
    }

    /// An index with probability proportional to its weight (zero-weight indices are never returned).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let u = rng.r#gen::<f64>() * self.cum[self.cum.len() - 1];
        self.cum
            .partition_point(|c| *c <= u)
            .min(self.cum.len() - 1)
    }
}

/// Log-normal `median * exp(sigma * Z)`, clamped to `[min, max]`.
#[derive(Clone, Copy, Debug)]
pub struct LogNormal {
    median: f64,
    sigma: f64,
    min: f64,
    max: f64,
}

impl LogNormal {
    pub fn new(spec: &LogNormalSpec) -> LogNormal {
        LogNormal {
            median: spec.median,
            sigma: spec.sigma,
            min: spec.min.unwrap_or(0.0),
            max: spec.max.unwrap_or(f64::INFINITY),
        }
    }

    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let v = if self.sigma == 0.0 {
            self.median
        } else {
            let z: f64 = StandardNormal.sample(rng);
            self.median * (self.sigma * z).exp()
        };
        v.clamp(self.min, self.max)
    }
}

/// Uniform in (0, 1]: safe to take the logarithm or a negative power of.
pub fn open_unit<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    1.0 - rng.r#gen::<f64>()
}

/// Exponential with mean 1.
pub fn exp_unit<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    -open_unit(rng).ln()
}

/// Lomax (Pareto type II) with tail shape `alpha > 1`, scaled to mean 1: `(alpha - 1) * (U^(-1/alpha) - 1)`.
/// Its survival function decays like x^-alpha, so gaps are heavy-tailed (coefficient of variation > 1, infinite
/// variance when alpha <= 2).
pub fn lomax_unit<R: Rng + ?Sized>(rng: &mut R, alpha: f64) -> f64 {
    (alpha - 1.0) * (open_unit(rng).powf(-1.0 / alpha) - 1.0)
}

/// Poisson count with mean `lambda` (Knuth's product method below 30, else rounded normal approximation;
/// the simulator's means are small).
pub fn poisson<R: Rng + ?Sized>(rng: &mut R, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda < 30.0 {
        let limit = (-lambda).exp();
        let mut k = 0u32;
        let mut p = rng.r#gen::<f64>();
        while p > limit {
            k += 1;
            p *= rng.r#gen::<f64>();
        }
        k
    } else {
        let z: f64 = StandardNormal.sample(rng);
        (lambda + lambda.sqrt() * z).round().max(0.0) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn cdf_follows_weights_and_skips_zero() {
        let c = Cdf::new([1.0, 0.0, 3.0]).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut n = [0usize; 3];
        for _ in 0..40_000 {
            n[c.sample(&mut rng)] += 1;
        }
        assert_eq!(n[1], 0);
        let ratio = n[2] as f64 / n[0] as f64;
        assert!((ratio - 3.0).abs() < 0.2, "{ratio}");
        assert!(Cdf::new([0.0, 0.0]).is_none());
    }

    #[test]
    fn unit_means_and_poisson() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let n = 200_000;
        let e: f64 = (0..n).map(|_| exp_unit(&mut rng)).sum::<f64>() / n as f64;
        assert!((e - 1.0).abs() < 0.02, "{e}");
        let l: f64 = (0..n).map(|_| lomax_unit(&mut rng, 3.0)).sum::<f64>() / n as f64;
        assert!((l - 1.0).abs() < 0.05, "{l}");
        let p: f64 = (0..n).map(|_| poisson(&mut rng, 2.5) as f64).sum::<f64>() / n as f64;
        assert!((p - 2.5).abs() < 0.03, "{p}");
    }
}
