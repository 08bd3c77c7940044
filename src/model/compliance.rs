//! Compliance by construction: the rules every generated flow obeys, and the truncated samplers that obey them.
//!
//! Rules (checked by [`check`]): packets >= 1; bytes within `[min_packet_bytes(proto) x packets, 65535 x packets]`;
//! TCP flags only on TCP; ports 0 for protocols without ports; duration >= 0 (by type); duration 0 when packets = 1
//! unless the training data had such flows (`FeatureSpace::single_packet_duration`).
//!
//! Models never sample a value and then throw it away: continuous fields are drawn from the mixture *truncated* to
//! the allowed interval (component weights renormalised by their mass inside it, then an inverse-CDF draw inside
//! it), discrete fields from logits masked to the allowed classes. A repair (a clamp) happens only when the allowed
//! interval has no numerical mass under every component; it is counted in [`RepairCounts`] and reported.

use crate::record::{FlowRecord, proto};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Largest IP packet (bytes).
pub const MAX_PACKET_BYTES: f64 = 65535.0;

/// Allowed bytes-per-packet interval of a protocol.
pub fn bpp_bounds(p: u8) -> (f64, f64) {
    (proto::min_packet_bytes(p) as f64, MAX_PACKET_BYTES)
}

/// A broken rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("packets is 0")]
    ZeroPackets,
    #[error("{bytes} bytes outside [{lo}, {hi}] for {packets} packets of protocol {proto}")]
    Bytes {
        bytes: u64,
        packets: u64,
        proto: u8,
        lo: u64,
        hi: u64,
    },
    #[error("TCP flags {0} on a non-TCP flow")]
    FlagsOnNonTcp(String),
    #[error("ports {0}/{1} on a protocol without ports")]
    PortsOnPortless(u16, u16),
    #[error("single-packet flow with duration {0} us")]
    SinglePacketDuration(u64),
}

/// Checks one flow against the rules. `single_packet_duration` relaxes the last rule when the data allows it.
pub fn check(r: &FlowRecord, single_packet_duration: bool) -> Result<(), Violation> {
    if r.packets == 0 {
        return Err(Violation::ZeroPackets);
    }
    let lo = proto::min_packet_bytes(r.proto).saturating_mul(r.packets);
    let hi = 65535u64.saturating_mul(r.packets);
    if r.bytes < lo || r.bytes > hi {
        return Err(Violation::Bytes {
            bytes: r.bytes,
            packets: r.packets,
            proto: r.proto,
            lo,
            hi,
        });
    }
    if r.proto != proto::TCP && r.flags.0 != 0 {
        return Err(Violation::FlagsOnNonTcp(r.flags.to_string()));
    }
    if !proto::has_ports(r.proto) && (r.src_port != 0 || r.dst_port != 0) {
        return Err(Violation::PortsOnPortless(r.src_port, r.dst_port));
    }
    if r.packets == 1 && r.duration_us != 0 && !single_packet_duration {
        return Err(Violation::SinglePacketDuration(r.duration_us));
    }
    Ok(())
}

/// Counts of everything that had to be mapped onto a valid value: in the training data (`data_*`, the data broke
/// a rule) and while sampling (`sample_*`, a truncated interval had no numerical mass and the value was clamped).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairCounts {
    pub data_ports_on_portless: u64,
    pub data_flags_on_non_tcp: u64,
    pub data_zero_packets: u64,
    pub data_bytes_out_of_range: u64,
    pub sample_clamped: u64,
    pub sample_empty_mask: u64,
    /// Generated flows that failed [`check`] after sampling (must stay 0: a bug if not).
    pub sample_violations: u64,
}

impl RepairCounts {
    pub fn add(&mut self, o: &RepairCounts) {
        self.data_ports_on_portless += o.data_ports_on_portless;
        self.data_flags_on_non_tcp += o.data_flags_on_non_tcp;
        self.data_zero_packets += o.data_zero_packets;
        self.data_bytes_out_of_range += o.data_bytes_out_of_range;
        self.sample_clamped += o.sample_clamped;
        self.sample_empty_mask += o.sample_empty_mask;
        self.sample_violations += o.sample_violations;
    }
    pub fn data_total(&self) -> u64 {
        self.data_ports_on_portless
            + self.data_flags_on_non_tcp
            + self.data_zero_packets
            + self.data_bytes_out_of_range
    }
    pub fn sample_total(&self) -> u64 {
        self.sample_clamped + self.sample_empty_mask + self.sample_violations
    }
}

/// Standard normal CDF (via `erfc`, accurate to ~1e-7).
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    // Numerical Recipes' erfcc (Chebyshev), relative error < 1.2e-7 everywhere.
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9), clamped to (0, 1).
pub fn norm_ppf(p: f64) -> f64 {
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.38357751867269e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e1,
        1.615858368580409e2,
        -1.556989798598866e2,
        6.680131188771972e1,
        -1.328068155288572e1,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-3,
        3.224671290700398e-1,
        2.445134137142996,
        3.754408661907416,
    ];
    let pl = 0.02425;
    if p < pl {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - pl {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// Draws from a Gaussian mixture (weights from `logits`, means `mu`, standard deviations `sigma`) truncated to
/// `[lo, hi]` (either may be infinite). Component weights are renormalised by their mass inside the interval; the
/// draw inside a component is an inverse-CDF draw between the interval's CDF values, so the result is inside by
/// construction. Only when no component has numerical mass inside (or the bounds cross) is the first component's
/// mean, moved into the interval, returned (`hi` when the bounds cross), and `repairs.sample_clamped` counted. A
/// point interval (`lo == hi`: the data showed one value, see `support`) is that value, drawn from nothing and
/// repairing nothing.
pub fn sample_truncated_mixture<R: Rng>(
    logits: &[f32],
    mu: &[f32],
    sigma: &[f32],
    lo: f64,
    hi: f64,
    rng: &mut R,
    repairs: &mut RepairCounts,
) -> f64 {
    if lo == hi {
        return lo;
    }
    let k = logits.len();
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut w = [0.0f64; 16];
    let mut cdf_lo = [0.0f64; 16];
    let mut cdf_hi = [0.0f64; 16];
    let mut total = 0.0;
    for j in 0..k.min(16) {
        let s = (sigma[j] as f64).max(1e-6);
        let a = if lo.is_finite() {
            norm_cdf((lo - mu[j] as f64) / s)
        } else {
            0.0
        };
        let b = if hi.is_finite() {
            norm_cdf((hi - mu[j] as f64) / s)
        } else {
            1.0
        };
        cdf_lo[j] = a;
        cdf_hi[j] = b;
        w[j] = ((logits[j] - max) as f64).exp() * (b - a).max(0.0);
        total += w[j];
    }
    if total.is_nan() || total <= 1e-300 {
        repairs.sample_clamped += 1;
        // `max` then `min`: bounds that cross (a support wider than the normaliser's cap) give the cap.
        return (mu[0] as f64).max(lo).min(hi);
    }
    let mut u = rng.r#gen::<f64>() * total;
    let mut j = 0;
    while j + 1 < k && u >= w[j] {
        u -= w[j];
        j += 1;
    }
    let p = cdf_lo[j] + rng.r#gen::<f64>() * (cdf_hi[j] - cdf_lo[j]);
    let x = mu[j] as f64 + sigma[j].max(1e-6) as f64 * norm_ppf(p);
    if x < lo || x > hi {
        // Only the ppf's last-ulp error can land here.
        repairs.sample_clamped += 1;
    }
    x.clamp(lo, hi)
}

/// Probability mass in `[lo, hi]` of a Gaussian mixture (weights from `logits`, means `mu`, standard deviations
/// `sigma`; either bound may be infinite): what truncating it keeps.
pub fn mixture_mass(logits: &[f32], mu: &[f32], sigma: &[f32], lo: f64, hi: f64) -> f64 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let (mut num, mut den) = (0.0, 0.0);
    for j in 0..logits.len() {
        let w = ((logits[j] - max) as f64).exp();
        let s = (sigma[j] as f64).max(1e-6);
        // Phi at a bound, infinite bounds included.
        let at = |x: f64| match x {
            x if x.is_finite() => norm_cdf((x - mu[j] as f64) / s),
            x if x > 0.0 => 1.0,
            _ => 0.0,
        };
        num += w * (at(hi) - at(lo)).max(0.0);
        den += w;
    }
    if den > 0.0 { num / den } else { 0.0 }
}

/// Silence probability after a quiet time: `p / (p + (1 - p) q)` where `q` is the probability that a gap of a lane
/// that goes on exceeds the quiet time (1 when it has not been quiet at all, 0 past the silence threshold).
pub fn silence_posterior(p: f64, q: f64) -> f64 {
    let d = p + (1.0 - p) * q.clamp(0.0, 1.0);
    if d > 0.0 {
        (p / d).clamp(0.0, 1.0)
    } else {
        1.0
    }
}

/// Draws a class from probabilities `probs` restricted to the classes `allowed` says yes to (the masked,
/// renormalised categorical). With no mass on any allowed class, the first allowed class is returned and counted.
pub fn sample_masked<R: Rng>(
    probs: &[f32],
    allowed: impl Fn(usize) -> bool,
    rng: &mut R,
    repairs: &mut RepairCounts,
) -> usize {
    let total: f64 = probs
        .iter()
        .enumerate()
        .filter(|(i, _)| allowed(*i))
        .map(|(_, p)| *p as f64)
        .sum();
    if total.is_nan() || total <= 0.0 {
        repairs.sample_empty_mask += 1;
        return (0..probs.len()).find(|i| allowed(*i)).unwrap_or(0);
    }
    let mut u = rng.r#gen::<f64>() * total;
    let mut last = 0;
    for (i, p) in probs.iter().enumerate() {
        if !allowed(i) {
            continue;
        }
        last = i;
        u -= *p as f64;
        if u < 0.0 {
            return i;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    #[test]
    fn normal_functions_agree() {
        for x in [-5.0, -1.0, 0.0, 0.3, 2.5] {
            assert!((norm_ppf(norm_cdf(x)) - x).abs() < 1e-5, "{x}");
        }
    }
    #[test]
    fn truncated_draws_stay_inside() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut rep = RepairCounts::default();
        for _ in 0..2000 {
            let x = sample_truncated_mixture(
                &[0.0, 1.0],
                &[-3.0, 5.0],
                &[1.0, 0.5],
                4.0,
                4.5,
                &mut rng,
                &mut rep,
            );
            assert!((4.0..=4.5).contains(&x));
        }
        assert_eq!(rep.sample_total(), 0);
        // A point interval far from every component is its value, not a repair; an empty one far away is.
        let point = sample_truncated_mixture(&[0.0], &[0.0], &[0.1], 9.0, 9.0, &mut rng, &mut rep);
        assert_eq!((point, rep.sample_total()), (9.0, 0));
        let empty = sample_truncated_mixture(&[0.0], &[0.0], &[0.1], 9.0, 8.0, &mut rng, &mut rep);
        assert_eq!((empty, rep.sample_clamped), (8.0, 1));
    }
}
