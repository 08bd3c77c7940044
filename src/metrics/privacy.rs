//! Privacy: does the synthetic set copy its training flows?
//!
//! - **Exact-match rate**: share of synthetic flows identical to some training flow on the 5-tuple (source,
//!   destination, ports, protocol) plus packets and bytes. Reported next to the same rate for the real
//!   holdout (real flows not used in training): real traffic repeats itself (periodic beacons, DNS), so the
//!   holdout rate is the baseline, not 0.
//! - **Record distance** between flows a and b: `Σ |Δ log10 x| / s_x` over x in (bytes, packets, duration), s_x
//!   being the training set's standard deviation of that log value (1 if 0), plus 1 for each of source address,
//!   destination address, source port, destination port and protocol that differ.
//! - **DCR** (distance to closest record): for each synthetic flow, the distance to its nearest training flow;
//!   the same for each holdout flow. Memorisation shows as synthetic flows closer to training than real unseen
//!   flows are: `dcr_ratio = median DCR(synthetic) / median DCR(holdout)` below 1, and
//!   `share_within_holdout_p5` (synthetic flows at most as far as the holdout's 5th percentile DCR) above the
//!   holdout's own share `holdout_share_within_p5` (5 %, or more when many holdout DCRs tie at the percentile,
//!   e.g. all at 0 for traffic that repeats itself).
//! - **Membership inference AUC**: an attacker who holds the synthetic set guesses "member of the training set"
//!   for a flow when its distance to the nearest synthetic flow is below a threshold. Over all thresholds,
//!   with training flows as members and holdout flows as non-members, the AUC is
//!   `P(d(member) < d(non-member)) + ½ P(equal)`. 0.5 means the synthetic set tells nothing about membership.
//!   The holdout is usually a later part of the capture, so drift alone can move the AUC a little off 0.5.
//!
//! Queries and references are subsampled deterministically to [`MAX_QUERIES`] and [`MAX_REFERENCE`] flows.

use super::utility::subsample;
use super::{MetricsError, log10_count, log10_time};
use crate::inspect::quantile_sorted;
use crate::record::FlowRecord;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::IpAddr;

/// Most query flows per distance computation.
pub const MAX_QUERIES: usize = 1000;
/// Most reference flows searched for the nearest one.
pub const MAX_REFERENCE: usize = 10_000;

/// Privacy figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Privacy {
    pub exact_match_rate: f64,
    pub holdout_exact_match_rate: f64,
    pub dcr_synthetic_median: f64,
    pub dcr_holdout_median: f64,
    pub dcr_ratio: f64,
    pub share_within_holdout_p5: f64,
    pub holdout_share_within_p5: f64,
    pub membership_auc: f64,
}

type ExactKey = (IpAddr, IpAddr, u16, u16, u8, u64, u64);

fn exact_key(r: &FlowRecord) -> ExactKey {
    (
        r.src, r.dst, r.src_port, r.dst_port, r.proto, r.packets, r.bytes,
    )
}

/// Share of `flows` identical to a flow of `train` on 5-tuple + packets + bytes; NaN when `flows` is empty.
pub fn exact_match_rate(flows: &[FlowRecord], train: &[FlowRecord]) -> f64 {
    if flows.is_empty() {
        return f64::NAN;
    }
    let keys: HashSet<ExactKey> = train.iter().map(exact_key).collect();
    flows
        .iter()
        .filter(|r| keys.contains(&exact_key(r)))
        .count() as f64
        / flows.len() as f64
}

/// A flow prepared for the record distance.
#[derive(Clone, Debug)]
pub struct Point {
    cont: [f64; 3],
    cat: (IpAddr, IpAddr, u16, u16, u8),
}

/// Scales of the continuous part of the record distance (training std of each log value).
#[derive(Clone, Copy, Debug)]
pub struct Scales([f64; 3]);

fn raw_cont(r: &FlowRecord) -> [f64; 3] {
    [
        log10_count(r.bytes as f64),
        log10_count(r.packets as f64),
        log10_time(r.duration_us as f64 / 1e6),
    ]
}

impl Scales {
    /// Standard deviations of the log values over `train` (1 where a std is 0 or undefined).
    pub fn from_train(train: &[FlowRecord]) -> Scales {
        let mut s = [1.0; 3];
        let n = train.len() as f64;
        for (k, sk) in s.iter_mut().enumerate() {
            let m = train.iter().map(|r| raw_cont(r)[k]).sum::<f64>() / n;
            let v = train
                .iter()
                .map(|r| (raw_cont(r)[k] - m).powi(2))
                .sum::<f64>()
                / n;
            if v.is_finite() && v > 0.0 {
                *sk = v.sqrt();
            }
        }
        Scales(s)
    }

    pub fn point(&self, r: &FlowRecord) -> Point {
        let c = raw_cont(r);
        Point {
            cont: [c[0] / self.0[0], c[1] / self.0[1], c[2] / self.0[2]],
            cat: (r.src, r.dst, r.src_port, r.dst_port, r.proto),
        }
    }
}

/// The record distance (see the module docs) between two prepared flows.
pub fn distance(a: &Point, b: &Point) -> f64 {
    let c: f64 = a.cont.iter().zip(&b.cont).map(|(x, y)| (x - y).abs()).sum();
    let m = (a.cat.0 != b.cat.0) as u8
        + (a.cat.1 != b.cat.1) as u8
        + (a.cat.2 != b.cat.2) as u8
        + (a.cat.3 != b.cat.3) as u8
        + (a.cat.4 != b.cat.4) as u8;
    c + m as f64
}

/// Distance from each query to its nearest reference (brute force).
pub fn nearest_distances(queries: &[Point], reference: &[Point]) -> Vec<f64> {
    queries
        .iter()
        .map(|q| {
            reference
                .iter()
                .map(|r| distance(q, r))
                .fold(f64::INFINITY, f64::min)
        })
        .collect()
}

/// `P(a < b) + ½ P(a = b)` for a drawn from `members` and b from `non_members` (the Mann-Whitney AUC of
/// "smaller distance means member"); NaN when either is empty.
pub fn auc_smaller_is_positive(members: &[f64], non_members: &[f64]) -> f64 {
    if members.is_empty() || non_members.is_empty() {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> = members
        .iter()
        .map(|&d| (d, true))
        .chain(non_members.iter().map(|&d| (d, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Count, for every member, the non-members strictly above it plus half the ties.
    let (mut wins, mut i) = (0.0, 0);
    let nn = non_members.len() as f64;
    let mut non_below = 0.0;
    while i < all.len() {
        let mut j = i;
        let (mut m_eq, mut n_eq) = (0.0, 0.0);
        while j < all.len() && all[j].0 == all[i].0 {
            if all[j].1 {
                m_eq += 1.0
            } else {
                n_eq += 1.0
            }
            j += 1;
        }
        wins += m_eq * ((nn - non_below - n_eq) + 0.5 * n_eq);
        non_below += n_eq;
        i = j;
    }
    wins / (members.len() as f64 * nn)
}

/// Every privacy figure. `holdout` is real data the generator never saw (the real test set).
pub fn privacy(
    train: &[FlowRecord],
    holdout: &[FlowRecord],
    synthetic: &[FlowRecord],
) -> Result<Privacy, MetricsError> {
    for (what, v) in [
        ("training", train),
        ("holdout", holdout),
        ("synthetic", synthetic),
    ] {
        if v.is_empty() {
            return Err(MetricsError::TooFew {
                what: format!("{what} (privacy metrics)"),
                min: 1,
            });
        }
    }
    let scales = Scales::from_train(train);
    let pts = |v: &[FlowRecord], n: usize| -> Vec<Point> {
        subsample(v, n).iter().map(|r| scales.point(r)).collect()
    };
    let train_ref = pts(train, MAX_REFERENCE);
    let synth_ref = pts(synthetic, MAX_REFERENCE);
    let d_syn = nearest_distances(&pts(synthetic, MAX_QUERIES), &train_ref);
    let mut d_hold = nearest_distances(&pts(holdout, MAX_QUERIES), &train_ref);
    d_hold.sort_by(f64::total_cmp);
    let mut d_syn_sorted = d_syn.clone();
    d_syn_sorted.sort_by(f64::total_cmp);
    let p5 = quantile_sorted(&d_hold, 0.05);
    let med_s = quantile_sorted(&d_syn_sorted, 0.5);
    let med_h = quantile_sorted(&d_hold, 0.5);
    let members = nearest_distances(&pts(train, MAX_QUERIES), &synth_ref);
    let non_members = nearest_distances(&pts(holdout, MAX_QUERIES), &synth_ref);
    Ok(Privacy {
        exact_match_rate: exact_match_rate(synthetic, train),
        holdout_exact_match_rate: exact_match_rate(holdout, train),
        dcr_synthetic_median: med_s,
        dcr_holdout_median: med_h,
        dcr_ratio: med_s / med_h,
        share_within_holdout_p5: d_syn.iter().filter(|&&d| d <= p5).count() as f64
            / d_syn.len() as f64,
        holdout_share_within_p5: d_hold.iter().filter(|&&d| d <= p5).count() as f64
            / d_hold.len() as f64,
        membership_auc: auc_smaller_is_positive(&members, &non_members),
    })
}
