//! Coverage: how much of the real data's variety the synthetic set reproduces, and how much it invents.
//!
//! A **pattern** is the triple (protocol, destination-port class, TCP flag byte), the destination port class
//! being [`super::port_class`] of the destination port. With R the distinct real patterns and S the distinct
//! synthetic ones:
//! - `pattern_coverage = |R ∩ S| / |R|` — share of real patterns the synthetic set shows at least once;
//! - `host_pair_coverage = |Rp ∩ Sp| / |Rp|` — the same for distinct (src, dst) host pairs;
//! - `novel_pattern_share = |S \ R| / |S|` — share of synthetic patterns never seen in the real data;
//! - `novel_flow_share` — share of synthetic *flows* whose pattern is not in R (the flow-weighted view).

use super::port_class;
use crate::record::{FlowRecord, HostPair};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::hash::Hash;

/// A flow's coverage pattern: (protocol, destination port class, flag byte).
pub type Pattern = (u8, u32, u8);

/// The coverage pattern of one flow.
pub fn pattern(r: &FlowRecord) -> Pattern {
    (r.proto, port_class(r.dst_port), r.flags.bits())
}

/// Coverage figures (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub real_patterns: usize,
    pub synthetic_patterns: usize,
    pub pattern_coverage: f64,
    pub real_host_pairs: usize,
    pub synthetic_host_pairs: usize,
    pub host_pair_coverage: f64,
    pub novel_pattern_share: f64,
    pub novel_flow_share: f64,
}

/// Coverage figures from the distinct sets and the synthetic flows' novel count (any pattern and pair
/// representation: tuples offline, compact keys in the sketches).
pub fn from_sets<
    P: Eq + Hash,
    H: Eq + Hash,
    S: std::hash::BuildHasher,
    T: std::hash::BuildHasher,
>(
    real_patterns: &HashSet<P, S>,
    synthetic_patterns: &HashSet<P, S>,
    real_pairs: &HashSet<H, T>,
    synthetic_pairs: &HashSet<H, T>,
    synthetic_flows: u64,
    synthetic_novel_flows: u64,
) -> Coverage {
    let ratio = |a: usize, b: usize| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    Coverage {
        real_patterns: real_patterns.len(),
        synthetic_patterns: synthetic_patterns.len(),
        pattern_coverage: ratio(
            real_patterns.intersection(synthetic_patterns).count(),
            real_patterns.len(),
        ),
        real_host_pairs: real_pairs.len(),
        synthetic_host_pairs: synthetic_pairs.len(),
        host_pair_coverage: ratio(
            real_pairs.intersection(synthetic_pairs).count(),
            real_pairs.len(),
        ),
        novel_pattern_share: ratio(
            synthetic_patterns.difference(real_patterns).count(),
            synthetic_patterns.len(),
        ),
        novel_flow_share: ratio(synthetic_novel_flows as usize, synthetic_flows as usize),
    }
}

/// Coverage of `real` by `synthetic` (see the module docs).
pub fn coverage(real: &[FlowRecord], synthetic: &[FlowRecord]) -> Coverage {
    let rp: HashSet<Pattern> = real.iter().map(pattern).collect();
    let sp: HashSet<Pattern> = synthetic.iter().map(pattern).collect();
    let rh: HashSet<HostPair> = real.iter().map(|r| r.pair()).collect();
    let sh: HashSet<HostPair> = synthetic.iter().map(|r| r.pair()).collect();
    let novel = synthetic
        .iter()
        .filter(|r| !rp.contains(&pattern(r)))
        .count() as u64;
    from_sets(&rp, &sp, &rh, &sh, synthetic.len() as u64, novel)
}
