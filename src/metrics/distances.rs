//! Distances between the marginal distributions of a real and a synthetic flow set.
//!
//! - **EMD** (1-D Wasserstein-1, earth mover's distance) between two empirical distributions A and B:
//!   `EMD = ∫ |F_A(x) - F_B(x)| dx`, the area between the two CDFs, in the unit of the value. It is the average
//!   distance a unit of probability mass must move to turn A into B. See [`emd`].
//! - **KS** (two-sample Kolmogorov-Smirnov statistic): `sup_x |F_A(x) - F_B(x)|`, in [0, 1]. See [`ks`].
//! - **JSD** (Jensen-Shannon divergence, base 2) between two categorical distributions P and Q:
//!   `JSD = ½ KL(P‖M) + ½ KL(Q‖M)` with `M = ½(P + Q)` and `KL(P‖M) = Σ p log2(p/m)`; 0 for identical
//!   distributions, 1 for disjoint supports. See [`jsd`].
//!
//! Continuous fields ([`Continuous`]) are compared both on log10 (with the floors of the module conventions of
//! [`crate::metrics`]) and in raw units; categorical fields ([`Categorical`]) by JSD of their value counts.

use super::{inter_arrivals, log10_count, log10_time, mean, port_class};
use crate::record::{FlowRecord, HostPair};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::hash::Hash;

/// EMD between two samples with unit weights (see the module docs); NaN when either sample is empty (the
/// distance is undefined).
pub fn emd(a: &[f64], b: &[f64]) -> f64 {
    let wa: Vec<(f64, f64)> = a.iter().map(|&x| (x, 1.0)).collect();
    let wb: Vec<(f64, f64)> = b.iter().map(|&x| (x, 1.0)).collect();
    emd_weighted(&wa, &wb)
}

/// KS statistic between two samples with unit weights (see the module docs); NaN when either is empty.
pub fn ks(a: &[f64], b: &[f64]) -> f64 {
    let wa: Vec<(f64, f64)> = a.iter().map(|&x| (x, 1.0)).collect();
    let wb: Vec<(f64, f64)> = b.iter().map(|&x| (x, 1.0)).collect();
    ks_weighted(&wa, &wb)
}

/// Walks the merged support of two weighted samples `(value, weight)` and calls `f(x, next_x, F_A, F_B)` for
/// every step of the two CDFs. Weights are normalised so each sample has total mass 1.
fn walk_cdfs(a: &[(f64, f64)], b: &[(f64, f64)], mut f: impl FnMut(f64, f64, f64, f64)) -> bool {
    let ta: f64 = a.iter().map(|p| p.1).sum();
    let tb: f64 = b.iter().map(|p| p.1).sum();
    if a.is_empty() || b.is_empty() || ta <= 0.0 || tb <= 0.0 {
        return false;
    }
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(|x, y| x.0.total_cmp(&y.0));
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (mut i, mut j) = (0, 0);
    let (mut fa, mut fb) = (0.0, 0.0);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(p), Some(q)) => p.0.min(q.0),
            (Some(p), None) => p.0,
            (None, Some(q)) => q.0,
            (None, None) => unreachable!(),
        };
        while i < a.len() && a[i].0 == x {
            fa += a[i].1 / ta;
            i += 1;
        }
        while j < b.len() && b[j].0 == x {
            fb += b[j].1 / tb;
            j += 1;
        }
        let next = match (a.get(i), b.get(j)) {
            (Some(p), Some(q)) => p.0.min(q.0),
            (Some(p), None) => p.0,
            (None, Some(q)) => q.0,
            (None, None) => x,
        };
        f(x, next, fa.min(1.0), fb.min(1.0));
    }
    true
}

/// EMD between two weighted samples `(value, weight)`: the area between their normalised CDFs. Used by the
/// exact metrics (unit weights) and by the sketches (histogram buckets as weights). NaN when either is empty.
pub fn emd_weighted(a: &[(f64, f64)], b: &[(f64, f64)]) -> f64 {
    let mut area = 0.0;
    if !walk_cdfs(a, b, |x, next, fa, fb| area += (fa - fb).abs() * (next - x)) {
        return f64::NAN;
    }
    area
}

/// KS statistic between two weighted samples `(value, weight)`. NaN when either is empty.
pub fn ks_weighted(a: &[(f64, f64)], b: &[(f64, f64)]) -> f64 {
    let mut d: f64 = 0.0;
    if !walk_cdfs(a, b, |_, _, fa, fb| d = d.max((fa - fb).abs())) {
        return f64::NAN;
    }
    d
}

/// JSD, base 2, between two count maps (see the module docs). Counts are normalised to probabilities; a key
/// missing from one map has probability 0 there. NaN when either map has no mass.
pub fn jsd<K: Eq + Hash>(p: &HashMap<K, u64>, q: &HashMap<K, u64>) -> f64 {
    let tp: u64 = p.values().sum();
    let tq: u64 = q.values().sum();
    if tp == 0 || tq == 0 {
        return f64::NAN;
    }
    let pairs = p
        .iter()
        .map(|(k, &c)| {
            (
                c as f64 / tp as f64,
                q.get(k).copied().unwrap_or(0) as f64 / tq as f64,
            )
        })
        .chain(
            q.iter()
                .filter(|(k, _)| !p.contains_key(*k))
                .map(|(_, &c)| (0.0, c as f64 / tq as f64)),
        );
    jsd_probabilities(pairs)
}

/// JSD, base 2, from aligned probability pairs `(p_i, q_i)` over the union of the supports.
pub fn jsd_probabilities(pairs: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    let mut d = 0.0;
    for (p, q) in pairs {
        let m = 0.5 * (p + q);
        if p > 0.0 {
            d += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            d += 0.5 * q * (q / m).log2();
        }
    }
    d.clamp(0.0, 1.0)
}

/// A continuous flow field compared by EMD and KS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Continuous {
    /// Gap between consecutive flow starts over the whole set, seconds.
    InterArrival,
    /// Flow duration, seconds.
    Duration,
    /// Bytes of the flow.
    Bytes,
    /// Packets of the flow.
    Packets,
}

impl Continuous {
    pub const ALL: [Continuous; 4] = [
        Continuous::InterArrival,
        Continuous::Duration,
        Continuous::Bytes,
        Continuous::Packets,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Continuous::InterArrival => "inter-arrival",
            Continuous::Duration => "duration",
            Continuous::Bytes => "bytes",
            Continuous::Packets => "packets",
        }
    }

    /// Whether the field is a time (log floor 1 µs) or a count (log floor 1).
    pub fn is_time(self) -> bool {
        matches!(self, Continuous::InterArrival | Continuous::Duration)
    }

    /// The field's values in raw units (seconds, bytes, packets).
    pub fn values(self, flows: &[FlowRecord]) -> Vec<f64> {
        match self {
            Continuous::InterArrival => inter_arrivals(flows),
            Continuous::Duration => flows.iter().map(|r| r.duration_us as f64 / 1e6).collect(),
            Continuous::Bytes => flows.iter().map(|r| r.bytes as f64).collect(),
            Continuous::Packets => flows.iter().map(|r| r.packets as f64).collect(),
        }
    }

    /// The log10 view of a raw value (floors of the module conventions).
    pub fn log10(self, raw: f64) -> f64 {
        if self.is_time() {
            log10_time(raw)
        } else {
            log10_count(raw)
        }
    }
}

/// A categorical flow field compared by JSD.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Categorical {
    SrcAddr,
    DstAddr,
    DstPort,
    /// STAN's source-port class ([`super::port_class`]).
    SrcPortClass,
    Proto,
    /// The TCP flag byte as given (all protocols).
    Flags,
}

impl Categorical {
    pub const ALL: [Categorical; 6] = [
        Categorical::SrcAddr,
        Categorical::DstAddr,
        Categorical::DstPort,
        Categorical::SrcPortClass,
        Categorical::Proto,
        Categorical::Flags,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Categorical::SrcAddr => "source address",
            Categorical::DstAddr => "destination address",
            Categorical::DstPort => "destination port",
            Categorical::SrcPortClass => "source port class",
            Categorical::Proto => "protocol",
            Categorical::Flags => "TCP flags",
        }
    }

    /// A compact key of the field's value: addresses as their 128-bit form (IPv4 mapped), ports, classes,
    /// protocol numbers and flag bytes as numbers.
    pub fn key(self, r: &FlowRecord) -> u128 {
        let ip = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(v) => u32::from(v) as u128 | (0xffffu128 << 32),
            std::net::IpAddr::V6(v) => u128::from(v),
        };
        match self {
            Categorical::SrcAddr => ip(r.src),
            Categorical::DstAddr => ip(r.dst),
            Categorical::DstPort => r.dst_port as u128,
            Categorical::SrcPortClass => port_class(r.src_port) as u128,
            Categorical::Proto => r.proto as u128,
            Categorical::Flags => r.flags.bits() as u128,
        }
    }

    /// Value counts of the field.
    pub fn counts(self, flows: &[FlowRecord]) -> HashMap<u128, u64> {
        let mut m = HashMap::new();
        for r in flows {
            *m.entry(self.key(r)).or_default() += 1;
        }
        m
    }
}

/// EMD and KS of one continuous field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContinuousDistance {
    pub field: Continuous,
    /// EMD on log10 values (decades).
    pub emd_log10: f64,
    /// EMD in raw units (seconds, bytes or packets).
    pub emd_raw: f64,
    /// KS statistic (the same on log10 and raw: KS is invariant under monotone maps).
    pub ks: f64,
    pub n_real: usize,
    pub n_synthetic: usize,
}

/// JSD of one categorical field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CategoricalDistance {
    pub field: Categorical,
    pub jsd: f64,
    pub distinct_real: usize,
    pub distinct_synthetic: usize,
}

/// Inter-arrival distances within host pairs: for each of the `pairs_wanted` busiest real host pairs (by flow
/// count, at least 3 flows), the EMD/KS between that pair's real inter-arrivals and the same pair's synthetic
/// inter-arrivals; averaged (unweighted mean) over the pairs where the synthetic set has at least 2 flows of the
/// pair. `pairs_missing` counts busy pairs the synthetic set lacks (or has one flow of): they are not averaged
/// but reported, since a generator that drops pairs must not look better for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairInterArrival {
    pub pairs_wanted: usize,
    pub pairs_used: usize,
    pub pairs_missing: usize,
    pub emd_log10_mean: f64,
    pub emd_raw_mean: f64,
    pub ks_mean: f64,
}

/// All distances between a real and a synthetic set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distances {
    pub continuous: Vec<ContinuousDistance>,
    pub inter_arrival_per_pair: PairInterArrival,
    pub categorical: Vec<CategoricalDistance>,
}

impl Distances {
    pub fn continuous(&self, f: Continuous) -> Option<&ContinuousDistance> {
        self.continuous.iter().find(|d| d.field == f)
    }
    pub fn categorical(&self, f: Categorical) -> Option<&CategoricalDistance> {
        self.categorical.iter().find(|d| d.field == f)
    }
}

/// EMD (log10 and raw) and KS of one continuous field.
pub fn continuous_distance(
    field: Continuous,
    real: &[FlowRecord],
    synthetic: &[FlowRecord],
) -> ContinuousDistance {
    let a = field.values(real);
    let b = field.values(synthetic);
    let la: Vec<f64> = a.iter().map(|&x| field.log10(x)).collect();
    let lb: Vec<f64> = b.iter().map(|&x| field.log10(x)).collect();
    ContinuousDistance {
        field,
        emd_log10: emd(&la, &lb),
        emd_raw: emd(&a, &b),
        ks: ks(&a, &b),
        n_real: a.len(),
        n_synthetic: b.len(),
    }
}

/// JSD of one categorical field.
pub fn categorical_distance(
    field: Categorical,
    real: &[FlowRecord],
    synthetic: &[FlowRecord],
) -> CategoricalDistance {
    let p = field.counts(real);
    let q = field.counts(synthetic);
    CategoricalDistance {
        field,
        jsd: jsd(&p, &q),
        distinct_real: p.len(),
        distinct_synthetic: q.len(),
    }
}

fn pair_gaps(flows: &[FlowRecord]) -> HashMap<HostPair, Vec<i64>> {
    let mut m: HashMap<HostPair, Vec<i64>> = HashMap::new();
    for r in flows {
        m.entry(r.pair()).or_default().push(r.start_us);
    }
    for v in m.values_mut() {
        v.sort_unstable();
    }
    m
}

/// Per-pair inter-arrival distances over the `top` busiest real pairs (see [`PairInterArrival`]).
pub fn pair_inter_arrival(
    real: &[FlowRecord],
    synthetic: &[FlowRecord],
    top: usize,
) -> PairInterArrival {
    let r = pair_gaps(real);
    let s = pair_gaps(synthetic);
    let mut busy: Vec<(&HostPair, &Vec<i64>)> = r.iter().filter(|(_, v)| v.len() >= 3).collect();
    busy.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(b.0)));
    busy.truncate(top);
    let gaps =
        |v: &[i64]| -> Vec<f64> { v.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e6).collect() };
    let (mut el, mut er, mut k) = (Vec::new(), Vec::new(), Vec::new());
    let mut missing = 0;
    for (pair, starts) in &busy {
        match s.get(pair) {
            Some(sv) if sv.len() >= 2 => {
                let a = gaps(starts);
                let b = gaps(sv);
                let la: Vec<f64> = a.iter().map(|&x| log10_time(x)).collect();
                let lb: Vec<f64> = b.iter().map(|&x| log10_time(x)).collect();
                el.push(emd(&la, &lb));
                er.push(emd(&a, &b));
                k.push(ks(&a, &b));
            }
            _ => missing += 1,
        }
    }
    PairInterArrival {
        pairs_wanted: busy.len(),
        pairs_used: el.len(),
        pairs_missing: missing,
        emd_log10_mean: mean(&el),
        emd_raw_mean: mean(&er),
        ks_mean: mean(&k),
    }
}

/// Every distance of this module between `real` and `synthetic`; `top_pairs` busiest pairs for the per-pair
/// inter-arrival figure.
pub fn distances(real: &[FlowRecord], synthetic: &[FlowRecord], top_pairs: usize) -> Distances {
    Distances {
        continuous: Continuous::ALL
            .iter()
            .map(|&f| continuous_distance(f, real, synthetic))
            .collect(),
        inter_arrival_per_pair: pair_inter_arrival(real, synthetic, top_pairs),
        categorical: Categorical::ALL
            .iter()
            .map(|&f| categorical_distance(f, real, synthetic))
            .collect(),
    }
}
