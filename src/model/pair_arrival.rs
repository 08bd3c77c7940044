//! The pair-arrival part: when a new host pair appears, and what its addresses are, so generation is not limited
//! to pairs seen in training (`--pairs synthetic`).
//!
//! Arrivals are a Poisson process with the training data's rate of new pairs, plus the number of pairs that were
//! already active in the first minute of the training data placed in the first minute of the generated span.
//! Addresses are eight 256-way categoricals (source octets then destination octets, STAN style), each conditioned
//! on up to `context` previous octets with back-off to the octet's own marginal:
//! `P(o_k | prefix) = (c(prefix, o_k) + a P(o_k)) / (c(prefix) + a)`. With `context = 7` subnets and host roles
//! (one inside host talking to many outside hosts) are kept; with `context = 0` every octet is independent (the
//! `independent` baseline). IPv4 only: IPv6 pairs are counted in `skipped_v6` and not generated.

use crate::record::HostPair;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

const BACKOFF: f64 = 1.0;
/// Pairs active within this long of the training data's start are placed within this long of a session's start.
pub const FIRST_WINDOW_US: i64 = 60_000_000;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PairArrivals {
    pub context: usize,
    /// New pairs per second of training data.
    pub rate_per_s: f64,
    /// Pairs active within the first minute of the training data.
    pub initial_pairs: u64,
    /// Octet counts per position (8 x 256).
    pub marginal: Vec<Vec<u32>>,
    /// Counts of the next octet after a prefix (keyed by the prefix bytes as hex, at most `context` long).
    pub next: HashMap<String, Vec<(u8, u32)>>,
    pub pairs_seen: u64,
    pub skipped_v6: u64,
}

fn octets(p: &HostPair) -> Option<[u8; 8]> {
    match (p.src, p.dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mut o = [0u8; 8];
            o[..4].copy_from_slice(&a.octets());
            o[4..].copy_from_slice(&b.octets());
            Some(o)
        }
        _ => None,
    }
}

fn key(prefix: &[u8]) -> String {
    prefix.iter().map(|b| format!("{b:02x}")).collect()
}

impl PairArrivals {
    pub fn new(context: usize) -> PairArrivals {
        PairArrivals {
            context: context.min(7),
            rate_per_s: 0.0,
            initial_pairs: 0,
            marginal: vec![vec![0; 256]; 8],
            next: HashMap::new(),
            pairs_seen: 0,
            skipped_v6: 0,
        }
    }

    /// Fits arrival rate and address model on the distinct pairs of `records`.
    pub fn fit(&mut self, records: &[crate::FlowRecord], span_us: i64) {
        let first = records.iter().map(|r| r.start_us).min().unwrap_or(0);
        let mut seen = std::collections::HashSet::new();
        let mut initial = 0;
        for r in records {
            if seen.insert(r.pair()) {
                self.observe(&r.pair());
                if r.start_us - first < FIRST_WINDOW_US {
                    initial += 1;
                }
            }
        }
        self.initial_pairs = initial;
        self.rate_per_s = seen.len() as f64 / (span_us.max(1_000_000) as f64 * 1e-6);
    }

    /// Adds one new pair to the address counts (online: the streaming operators call this for unseen pairs).
    pub fn observe(&mut self, pair: &HostPair) {
        let Some(o) = octets(pair) else {
            self.skipped_v6 += 1;
            return;
        };
        self.pairs_seen += 1;
        for k in 0..8 {
            self.marginal[k][o[k] as usize] += 1;
            if self.context > 0 && k > 0 {
                let ctx = &o[k.saturating_sub(self.context)..k];
                let e = self
                    .next
                    .entry(key(&[&[k as u8][..], ctx].concat()))
                    .or_default();
                match e.iter_mut().find(|(b, _)| *b == o[k]) {
                    Some((_, c)) => *c += 1,
                    None => e.push((o[k], 1)),
                }
            }
        }
    }

    fn marginal_p(&self, k: usize, b: u8) -> f64 {
        let tot: u64 = self.marginal[k].iter().map(|c| *c as u64).sum();
        (self.marginal[k][b as usize] as f64 + 0.5) / (tot as f64 + 128.0)
    }

    fn cond(&self, k: usize, o: &[u8]) -> Option<&Vec<(u8, u32)>> {
        if self.context == 0 || k == 0 {
            return None;
        }
        self.next.get(&key(&[
            &[k as u8][..],
            &o[k.saturating_sub(self.context)..k],
        ]
        .concat()))
    }

    fn p(&self, k: usize, o: &[u8], b: u8) -> f64 {
        let m = self.marginal_p(k, b);
        match self.cond(k, o) {
            None => m,
            Some(c) => {
                let tot: u64 = c.iter().map(|x| x.1 as u64).sum();
                let hit = c.iter().find(|x| x.0 == b).map(|x| x.1).unwrap_or(0);
                (hit as f64 + BACKOFF * m) / (tot as f64 + BACKOFF)
            }
        }
    }

    /// Negative log-probability of a pair's addresses (nats); `None` for IPv6 pairs.
    pub fn nll(&self, pair: &HostPair) -> Option<f64> {
        let o = octets(pair)?;
        Some((0..8).map(|k| -self.p(k, &o, o[k]).ln()).sum())
    }

    /// Draws a pair's addresses octet by octet.
    pub fn sample_pair<R: Rng>(&self, rng: &mut R) -> HostPair {
        let mut o = [0u8; 8];
        for k in 0..8 {
            let u: f64 = rng.r#gen();
            let mut acc = 0.0;
            let mut pick = 255u8;
            for b in 0..=255u8 {
                acc += self.p(k, &o, b);
                if u < acc {
                    pick = b;
                    break;
                }
            }
            o[k] = pick;
        }
        HostPair {
            src: IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])),
            dst: IpAddr::V4(Ipv4Addr::new(o[4], o[5], o[6], o[7])),
        }
    }
}
