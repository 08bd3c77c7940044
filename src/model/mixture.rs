//! Mixture-density heads in tensors: a head's raw output `[N, 3K]` is read as K logits, K means and K log standard
//! deviations of a Gaussian mixture on a standardised log value (a log-normal mixture on the value itself).
//! Log standard deviations are clamped to `[LOG_SIGMA_MIN, LOG_SIGMA_MAX]` so the likelihood stays bounded on
//! data with repeated identical values (periodic beacons), and sampling reads the same clamped values.

use tch::{Kind, Tensor};

pub const LOG_SIGMA_MIN: f64 = -3.0;
pub const LOG_SIGMA_MAX: f64 = 1.0;
const HALF_LOG_TAU: f64 = 0.918_938_533_204_672_7;

/// Splits a `[N, 3K]` head output into (log weights, means, sigmas).
pub fn split(out: &Tensor, k: i64) -> (Tensor, Tensor, Tensor) {
    let logits = out.narrow(1, 0, k).log_softmax(1, Kind::Float);
    let mu = out.narrow(1, k, k);
    let log_sigma = out.narrow(1, 2 * k, k).clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX);
    (logits, mu, log_sigma)
}

/// Per-row negative log density of `z` (`[N]`) under the mixture in `out` (`[N, 3K]`).
pub fn nll(out: &Tensor, z: &Tensor, k: i64) -> Tensor {
    let (lw, mu, ls) = split(out, k);
    let d = (z.unsqueeze(1) - mu) * (-&ls).exp();
    let comp = lw - d.square() * 0.5 - ls - HALF_LOG_TAU;
    -comp.logsumexp([1i64].as_slice(), false)
}

/// Per-row mixture CDF at `z` (a constant): `sum_j w_j Phi((z - mu_j) / sigma_j)`.
pub fn cdf(out: &Tensor, z: f64, k: i64) -> Tensor {
    let (lw, mu, ls) = split(out, k);
    let x = (-mu + z) * (-&ls).exp() * std::f64::consts::FRAC_1_SQRT_2;
    (lw.exp() * (x.erf() + 1.0) * 0.5).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
}

/// Mixture parameters of every row copied to the CPU: `(weights as logits, means, sigmas)`, each `N x K` row-major.
pub fn to_cpu(out: &Tensor, k: i64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (lw, mu, ls) = split(out, k);
    let v = |t: Tensor| {
        Vec::<f32>::try_from(t.to_device(tch::Device::Cpu).contiguous().view([-1]))
            .unwrap_or_default()
    };
    (v(lw), v(mu), v(ls.exp()))
}
