//! Streaming sketches: the fidelity metrics as mergeable summaries, for the dataflow's live `fidelity`
//! operator. Each worker keeps one [`FlowSketch`] of the real stream and one of the synthetic stream per window,
//! ships them with bincode (`to_bytes` / `from_bytes`, or serde directly), and one place [`FlowSketch::merge`]s
//! them and computes [`SketchFigures`] (EMD, KS, JSD, DKC, coverage).
//!
//! # What is kept
//! - **Continuous fields** in [`hdrhistogram`] histograms with 3 significant digits (values within 0.1 % of
//!   the truth): inter-arrival and duration in µs, bytes, packets. hdrhistogram has no serde, so histograms
//!   travel as their V2 deflate encoding (a byte string inside the bincode).
//! - **Categorical fields** in [`BoundedCounts`]: a Misra-Gries summary of at most `capacity` values, exact
//!   while the field has at most `capacity` distinct values; beyond that each kept count is an underestimate by
//!   at most `N / (capacity + 1)` and the lost mass is pooled in one "other" bucket for the JSD.
//! - **DKC** as per-rule (applicable, passed) counters, plus the count of UDP/443 flows so the QUIC exception
//!   of rule 5 is decided when figures are computed (from the *real* sketch), exactly as offline.
//! - **Coverage**: pattern counts (a [`BoundedCounts`]) and a set of host-pair hashes
//!   ([`crate::HostPair::stable_hash`]) holding up to `capacity * 16` pairs (`pairs_saturated` tells when it
//!   stopped growing).
//!
//! # Inter-arrival in a stream
//! A sketch records the gap from the previous flow *it* saw (flows must come in start order; a flow earlier
//! than the previous one records a gap of 0 and counts in `out_of_order`). Per-pair gaps use the last start of
//! the same host pair (a map of up to `capacity * 16` pairs). Because the dataflow shards by host pair, per-pair
//! gaps merge exactly across workers; the global gaps of a merged sketch are the pooled per-worker gaps, which
//! is exact only for a single worker. The per-pair figure here pools every pair's gaps (one histogram), unlike
//! the offline per-busy-pair average.
//!
//! # Agreement with the exact metrics
//! On the same flows, in time order, one sketch per set: EMD on log10 within 0.002 decades, raw EMD and KS
//! within 1 % (relative) and 0.01 (absolute), JSD within 0.005 when no field exceeds the capacity, DKC counts
//! and coverage identical (`tests/metrics_sketch.rs` checks this on IoT-23 and UGR'16).

use super::MetricsError;
use super::coverage::{self, Coverage, pattern};
use super::distances::{
    Categorical, CategoricalDistance, Continuous, ContinuousDistance, emd_weighted,
    jsd_probabilities, ks_weighted,
};
use super::dkc::{self, RULES, RuleContext, RuleCount, RuleResult};
use crate::record::{FlowRecord, proto};
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant digits of every histogram.
pub const SIGFIG: u8 = 3;
/// Default capacity of the categorical summaries.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Serde for a histogram as its V2 deflate bytes.
mod hist_v2 {
    use hdrhistogram::Histogram;
    use hdrhistogram::serialization::{
        Deserializer as HDeser, Serializer as _, V2DeflateSerializer,
    };
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::new();
        V2DeflateSerializer::new()
            .serialize(h, &mut buf)
            .map_err(|e| serde::ser::Error::custom(format!("{e:?}")))?;
        s.serialize_bytes(&buf)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let buf = Vec::<u8>::deserialize(d)?;
        let mut h: Histogram<u64> = HDeser::new()
            .deserialize(&mut std::io::Cursor::new(buf))
            .map_err(|e| serde::de::Error::custom(format!("{e:?}")))?;
        h.auto(true);
        Ok(h)
    }
}

/// Records a value, growing the histogram as needed (`saturating_record` alone would clamp to the current
/// range instead of growing it); only a value beyond what any histogram can hold is clamped.
fn record(h: &mut Histogram<u64>, v: u64) {
    if h.record(v).is_err() {
        h.saturating_record(v);
    }
}

fn new_hist() -> Histogram<u64> {
    let mut h = Histogram::new(SIGFIG).expect("3 significant digits is a valid histogram");
    h.auto(true);
    h
}

/// A bounded count map (Misra-Gries summary; see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BoundedCounts {
    capacity: usize,
    total: u64,
    counts: HashMap<u128, u64>,
}

impl BoundedCounts {
    pub fn new(capacity: usize) -> Self {
        BoundedCounts {
            capacity: capacity.max(1),
            total: 0,
            counts: HashMap::new(),
        }
    }

    pub fn add(&mut self, key: u128, n: u64) {
        self.total += n;
        *self.counts.entry(key).or_default() += n;
        if self.counts.len() > 2 * self.capacity {
            self.compact();
        }
    }

    /// Misra-Gries compaction: subtract the (capacity+1)-th largest count from every count, drop those <= 0.
    fn compact(&mut self) {
        if self.counts.len() <= self.capacity {
            return;
        }
        let mut c: Vec<u64> = self.counts.values().copied().collect();
        c.sort_unstable_by(|a, b| b.cmp(a));
        let cut = c[self.capacity];
        self.counts.retain(|_, v| {
            *v = v.saturating_sub(cut);
            *v > 0
        });
    }

    /// Adds another summary's counts (the sum of two Misra-Gries summaries, compacted, is one again).
    pub fn merge(&mut self, other: &BoundedCounts) {
        self.total += other.total;
        for (k, v) in &other.counts {
            *self.counts.entry(*k).or_default() += v;
        }
        self.compact();
    }

    /// Flows counted (exact, whatever the capacity).
    pub fn total(&self) -> u64 {
        self.total
    }
    /// Kept values and their (possibly under-estimated) counts.
    pub fn counts(&self) -> &HashMap<u128, u64> {
        &self.counts
    }
    /// Whether every count is exact (nothing was ever dropped).
    pub fn is_exact(&self) -> bool {
        self.counts.values().sum::<u64>() == self.total
    }
    /// Mass not attributed to a kept value.
    pub fn other(&self) -> u64 {
        self.total - self.counts.values().sum::<u64>()
    }
}

/// JSD (base 2) between two bounded summaries: kept values plus one shared "other" bucket for the lost mass.
pub fn jsd_bounded(p: &BoundedCounts, q: &BoundedCounts) -> f64 {
    if p.total == 0 || q.total == 0 {
        return f64::NAN;
    }
    let (tp, tq) = (p.total as f64, q.total as f64);
    let pairs = p
        .counts
        .iter()
        .map(|(k, &c)| {
            (
                c as f64 / tp,
                q.counts.get(k).copied().unwrap_or(0) as f64 / tq,
            )
        })
        .chain(
            q.counts
                .iter()
                .filter(|(k, _)| !p.counts.contains_key(*k))
                .map(|(_, &c)| (0.0, c as f64 / tq)),
        )
        .chain(std::iter::once((
            p.other() as f64 / tp,
            q.other() as f64 / tq,
        )));
    jsd_probabilities(pairs)
}

/// Mergeable streaming summary of one flow stream (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowSketch {
    capacity: usize,
    flows: u64,
    out_of_order: u64,
    last_start: Option<i64>,
    #[serde(with = "hist_v2")]
    inter_arrival_us: Histogram<u64>,
    #[serde(with = "hist_v2")]
    pair_inter_arrival_us: Histogram<u64>,
    #[serde(with = "hist_v2")]
    duration_us: Histogram<u64>,
    #[serde(with = "hist_v2")]
    bytes: Histogram<u64>,
    #[serde(with = "hist_v2")]
    packets: Histogram<u64>,
    /// One summary per [`Categorical::ALL`] field, same order.
    categorical: Vec<BoundedCounts>,
    /// Rule counters in [`RULES`] order, counted without the QUIC exception.
    rules: Vec<RuleCount>,
    udp_443: u64,
    patterns: BoundedCounts,
    pairs: HashSet<u64>,
    pairs_saturated: bool,
    pair_last: HashMap<u64, i64>,
    pairs_untracked: u64,
}

impl Default for FlowSketch {
    fn default() -> Self {
        FlowSketch::new(DEFAULT_CAPACITY)
    }
}

fn pattern_key(r: &FlowRecord) -> u128 {
    let (p, c, f) = pattern(r);
    ((p as u128) << 40) | ((c as u128) << 8) | f as u128
}

impl FlowSketch {
    /// An empty sketch whose categorical summaries keep `capacity` values (host pairs: `16 * capacity`).
    pub fn new(capacity: usize) -> Self {
        FlowSketch {
            capacity,
            flows: 0,
            out_of_order: 0,
            last_start: None,
            inter_arrival_us: new_hist(),
            pair_inter_arrival_us: new_hist(),
            duration_us: new_hist(),
            bytes: new_hist(),
            packets: new_hist(),
            categorical: Categorical::ALL
                .iter()
                .map(|_| BoundedCounts::new(capacity))
                .collect(),
            rules: vec![RuleCount::default(); RULES.len()],
            udp_443: 0,
            patterns: BoundedCounts::new(capacity),
            pairs: HashSet::new(),
            pairs_saturated: false,
            pair_last: HashMap::new(),
            pairs_untracked: 0,
        }
    }

    /// A sketch of a whole set, added in start-time order.
    pub fn of(flows: &[FlowRecord], capacity: usize) -> Self {
        let mut s = FlowSketch::new(capacity);
        for r in super::time_sorted(flows) {
            s.add(&r);
        }
        s
    }

    fn pair_cap(&self) -> usize {
        self.capacity * 16
    }

    /// Adds one flow (flows should come in start order; see the module docs).
    pub fn add(&mut self, r: &FlowRecord) {
        self.flows += 1;
        if let Some(prev) = self.last_start {
            let gap = r.start_us - prev;
            if gap < 0 {
                self.out_of_order += 1;
            }
            record(&mut self.inter_arrival_us, gap.max(0) as u64);
        }
        self.last_start = Some(self.last_start.map_or(r.start_us, |p| p.max(r.start_us)));
        let h = r.pair().stable_hash();
        let cap = self.pair_cap();
        let full = self.pair_last.len() >= cap;
        match self.pair_last.get_mut(&h) {
            Some(prev) => {
                record(
                    &mut self.pair_inter_arrival_us,
                    (r.start_us - *prev).max(0) as u64,
                );
                *prev = (*prev).max(r.start_us);
            }
            None if !full => {
                self.pair_last.insert(h, r.start_us);
            }
            None => self.pairs_untracked += 1,
        }
        record(&mut self.duration_us, r.duration_us);
        record(&mut self.bytes, r.bytes);
        record(&mut self.packets, r.packets);
        for (c, f) in self.categorical.iter_mut().zip(Categorical::ALL) {
            c.add(f.key(r), 1);
        }
        let ctx = RuleContext {
            quic_in_real: false,
        };
        for (c, rule) in self.rules.iter_mut().zip(RULES.iter()) {
            c.add((rule.check)(r, &ctx));
        }
        if r.proto == proto::UDP && (r.src_port == 443 || r.dst_port == 443) {
            self.udp_443 += 1;
        }
        self.patterns.add(pattern_key(r), 1);
        if self.pairs.len() < self.pair_cap() {
            self.pairs.insert(h);
        } else if !self.pairs.contains(&h) {
            self.pairs_saturated = true;
        }
    }

    /// Folds another sketch (of another worker or window) into this one.
    pub fn merge(&mut self, o: &FlowSketch) -> Result<(), MetricsError> {
        let hist = |a: &mut Histogram<u64>, b: &Histogram<u64>| {
            a.add(b)
                .map_err(|e| MetricsError::Decode(format!("histogram merge: {e:?}")))
        };
        hist(&mut self.inter_arrival_us, &o.inter_arrival_us)?;
        hist(&mut self.pair_inter_arrival_us, &o.pair_inter_arrival_us)?;
        hist(&mut self.duration_us, &o.duration_us)?;
        hist(&mut self.bytes, &o.bytes)?;
        hist(&mut self.packets, &o.packets)?;
        self.flows += o.flows;
        self.out_of_order += o.out_of_order;
        self.last_start = match (self.last_start, o.last_start) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (a, b) in self.categorical.iter_mut().zip(&o.categorical) {
            a.merge(b);
        }
        for (a, b) in self.rules.iter_mut().zip(&o.rules) {
            a.merge(b);
        }
        self.udp_443 += o.udp_443;
        self.patterns.merge(&o.patterns);
        for h in &o.pairs {
            if self.pairs.len() < self.pair_cap() {
                self.pairs.insert(*h);
            } else if !self.pairs.contains(h) {
                self.pairs_saturated = true;
            }
        }
        self.pairs_saturated |= o.pairs_saturated;
        let cap = self.pair_cap();
        for (h, t) in &o.pair_last {
            if let Some(v) = self.pair_last.get_mut(h) {
                *v = (*v).max(*t);
            } else if self.pair_last.len() < cap {
                self.pair_last.insert(*h, *t);
            }
        }
        self.pairs_untracked += o.pairs_untracked;
        Ok(())
    }

    /// bincode bytes of the sketch (histograms inside as V2 deflate).
    pub fn to_bytes(&self) -> Vec<u8> {
        bincode::serialize(self).expect("a FlowSketch always serialises")
    }

    pub fn from_bytes(b: &[u8]) -> Result<FlowSketch, MetricsError> {
        bincode::deserialize(b).map_err(|e| MetricsError::Decode(e.to_string()))
    }

    pub fn flows(&self) -> u64 {
        self.flows
    }
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }
    pub fn pairs_saturated(&self) -> bool {
        self.pairs_saturated
    }

    fn hist(&self, f: Continuous) -> &Histogram<u64> {
        match f {
            Continuous::InterArrival => &self.inter_arrival_us,
            Continuous::Duration => &self.duration_us,
            Continuous::Bytes => &self.bytes,
            Continuous::Packets => &self.packets,
        }
    }

    /// Rule counts with the QUIC exception of rule 5 decided by `ctx`.
    pub fn rule_counts(&self, ctx: &RuleContext) -> Vec<RuleCount> {
        let mut v = self.rules.clone();
        if ctx.quic_in_real
            && let Some(i) = RULES.iter().position(|r| r.name == "web_ports_tcp")
        {
            v[i].passed += self.udp_443;
        }
        v
    }
}

/// A histogram as weighted samples `(value, count)` in raw units (each bucket at its median equivalent value;
/// µs turned into seconds for time fields), and the same on log10.
/// Weighted samples `(value, weight)`.
type Weighted = Vec<(f64, f64)>;

fn weighted(h: &Histogram<u64>, field: Continuous) -> (Weighted, Weighted) {
    let scale = if field.is_time() { 1e-6 } else { 1.0 };
    let raw: Weighted = h
        .iter_recorded()
        .map(|v| {
            (
                h.median_equivalent(v.value_iterated_to()) as f64 * scale,
                v.count_at_value() as f64,
            )
        })
        .collect();
    let log = raw.iter().map(|&(x, w)| (field.log10(x), w)).collect();
    (raw, log)
}

fn hist_distance(field: Continuous, a: &Histogram<u64>, b: &Histogram<u64>) -> ContinuousDistance {
    let (ra, la) = weighted(a, field);
    let (rb, lb) = weighted(b, field);
    ContinuousDistance {
        field,
        emd_log10: emd_weighted(&la, &lb),
        emd_raw: emd_weighted(&ra, &rb),
        ks: ks_weighted(&ra, &rb),
        n_real: a.len() as usize,
        n_synthetic: b.len() as usize,
    }
}

/// The figures a window emits, computed from a real and a synthetic sketch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SketchFigures {
    pub real_flows: u64,
    pub synthetic_flows: u64,
    pub continuous: Vec<ContinuousDistance>,
    /// Pooled within-pair inter-arrival gaps (see the module docs).
    pub pair_inter_arrival: ContinuousDistance,
    pub categorical: Vec<CategoricalDistance>,
    /// Whether every categorical summary of both sketches is exact.
    pub categorical_exact: bool,
    pub dkc: Vec<RuleResult>,
    pub coverage: Coverage,
    /// Whether the host-pair sets are complete (coverage of pairs is a lower bound otherwise).
    pub pairs_exact: bool,
}

impl SketchFigures {
    /// Compares a real and a synthetic sketch.
    pub fn between(real: &FlowSketch, synthetic: &FlowSketch) -> SketchFigures {
        let ctx = RuleContext {
            quic_in_real: real.udp_443 > 0,
        };
        let rp: HashSet<u128> = real.patterns.counts().keys().copied().collect();
        let sp: HashSet<u128> = synthetic.patterns.counts().keys().copied().collect();
        let novel: u64 = synthetic
            .patterns
            .counts()
            .iter()
            .filter(|(k, _)| !rp.contains(k))
            .map(|(_, c)| *c)
            .sum::<u64>()
            + synthetic.patterns.other();
        SketchFigures {
            real_flows: real.flows,
            synthetic_flows: synthetic.flows,
            continuous: Continuous::ALL
                .iter()
                .map(|&f| hist_distance(f, real.hist(f), synthetic.hist(f)))
                .collect(),
            pair_inter_arrival: hist_distance(
                Continuous::InterArrival,
                &real.pair_inter_arrival_us,
                &synthetic.pair_inter_arrival_us,
            ),
            categorical: Categorical::ALL
                .iter()
                .zip(real.categorical.iter().zip(&synthetic.categorical))
                .map(|(&field, (p, q))| CategoricalDistance {
                    field,
                    jsd: jsd_bounded(p, q),
                    distinct_real: p.counts().len(),
                    distinct_synthetic: q.counts().len(),
                })
                .collect(),
            categorical_exact: real
                .categorical
                .iter()
                .chain(&synthetic.categorical)
                .all(BoundedCounts::is_exact),
            dkc: dkc::results_from_counts(&real.rule_counts(&ctx), &synthetic.rule_counts(&ctx)),
            coverage: coverage::from_sets(
                &rp,
                &sp,
                &real.pairs,
                &synthetic.pairs,
                synthetic.flows,
                novel,
            ),
            pairs_exact: !real.pairs_saturated && !synthetic.pairs_saturated,
        }
    }
}
