//! Per-event features shared by every model: log-scale transforms, their normalisation statistics, STAN's port
//! classes, seasonality, and the hashed host-pair bucket ids.
//!
//! Invariants: every transform is total (no NaN for any `FlowRecord`: zero or absurd values are floored or clamped,
//! and the clamps are counted in [`super::compliance::RepairCounts`] by the caller); the standardised values are
//! what the networks see, while reported likelihoods are always densities of the *natural-log* value, so models
//! with different normalisations stay comparable.

use crate::record::{FlowRecord, HostPair, proto};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Number of STAN port classes: every port below 1024 is its own class, then bins of 100 up to 65535.
pub const N_PORT_CLASSES: usize = 1670;
/// Protocols and flag bytes are 256-way categoricals (the full `u8` range: no vocabulary can miss a value).
pub const N_BYTE_CLASSES: usize = 256;

/// The tasks (fields) every model reports a negative log-likelihood for, in the order TempoNet samples them.
///
/// `silence` is the pair-goes-silent mark: after a flow, whether the lane's next flow is more than
/// [`FeatureSpace::silence_us`] away (a Bernoulli, in nats per labelled flow). It is a function of the next gap
/// (which `inter_arrival` already scores) plus what censoring allows to know about a pair's last flow, so it is
/// reported beside the flow tasks and, like `address`, left out of [`super::TaskNll::flow_total`].
pub const TASKS: [&str; 10] = [
    "inter_arrival",
    "protocol",
    "dst_port",
    "src_port",
    "flags",
    "packets",
    "bytes_per_packet",
    "duration",
    "address",
    "silence",
];
pub const N_TASKS: usize = TASKS.len();
pub mod task {
    pub const IAT: usize = 0;
    pub const PROTO: usize = 1;
    pub const DPORT: usize = 2;
    pub const SPORT: usize = 3;
    pub const FLAGS: usize = 4;
    pub const PACKETS: usize = 5;
    pub const BPP: usize = 6;
    pub const DURATION: usize = 7;
    pub const ADDRESS: usize = 8;
    pub const SILENCE: usize = 9;
}

/// The flag byte of a flow as the models see it: flags only on TCP (some exporters write them on other
/// protocols).
pub fn flags_of(r: &FlowRecord) -> u8 {
    if r.proto == proto::TCP { r.flags.0 } else { 0 }
}

/// STAN port class of a port.
pub fn port_class(port: u16) -> u16 {
    if port < 1024 {
        port
    } else {
        1024 + (port - 1024) / 100
    }
}

/// Inclusive port range of a class.
pub fn port_class_range(class: u16) -> (u16, u16) {
    if class < 1024 {
        (class, class)
    } else {
        let lo = 1024 + (class as u32 - 1024) * 100;
        (lo as u16, (lo + 99).min(65535) as u16)
    }
}

/// A port drawn uniformly inside its class (STAN's decoding).
pub fn port_from_class<R: Rng>(class: u16, rng: &mut R) -> u16 {
    let (lo, hi) = port_class_range(class.min(N_PORT_CLASSES as u16 - 1));
    rng.gen_range(lo..=hi)
}

/// Smallest inter-arrival the log transform distinguishes (1 µs): equal timestamps map here.
pub const MIN_IAT_US: f64 = 1.0;

/// Natural log of an inter-arrival in seconds (floored at 1 µs).
pub fn log_iat(dt_us: i64) -> f64 {
    ((dt_us.max(0) as f64).max(MIN_IAT_US) * 1e-6).ln()
}
/// Natural log of the dequantised packet count `packets + 0.5` (the midpoint of `[packets, packets + 1)`):
/// the continuous density on `log(packets + u)` then bounds the discrete likelihood and sampling floors it.
pub fn log_packets(packets: u64) -> f64 {
    (packets.max(1) as f64 + 0.5).ln()
}
/// The log-packets values whose draws decode to the count `p` (see [`decode::packets`]): `[ln p, ln(p + 1))`,
/// and everything below `ln 2` for one packet. A continuous packets density gives the count its exact
/// probability over this bin, comparable with a count head's.
pub fn packets_log_bin(p: u64) -> (f64, f64) {
    let p = p.max(1) as f64;
    let lo = if p == 1.0 { f64::NEG_INFINITY } else { p.ln() };
    (lo, (p + 1.0).ln())
}
/// Natural log of bytes per packet, clamped into the range the compliance rules allow for `proto`.
pub fn log_bpp(bytes: u64, packets: u64, p: u8) -> f64 {
    let (lo, hi) = super::compliance::bpp_bounds(p);
    (bytes as f64 / packets.max(1) as f64).clamp(lo, hi).ln()
}
/// Natural log of a non-zero duration in seconds; `None` for zero (the point mass).
pub fn log_duration(duration_us: u64) -> Option<f64> {
    (duration_us > 0).then(|| (duration_us as f64 * 1e-6).ln())
}

/// Hour-of-day and day-of-week of a time (UTC) as `[sin h, cos h, sin d, cos d]`.
pub fn seasonality(start_us: i64) -> [f32; 4] {
    let secs = start_us.div_euclid(1_000_000);
    let day = secs.div_euclid(86_400);
    let h = (secs.rem_euclid(86_400)) as f64 / 86_400.0 * std::f64::consts::TAU;
    // 1970-01-01 was a Thursday; the phase does not matter, only that it is fixed.
    let d = ((day.rem_euclid(7)) as f64 + h / std::f64::consts::TAU) / 7.0 * std::f64::consts::TAU;
    [
        h.sin() as f32,
        h.cos() as f32,
        d.sin() as f32,
        d.cos() as f32,
    ]
}

/// Index of the continuous features in [`Normaliser`].
pub mod cont {
    pub const IAT: usize = 0;
    pub const PACKETS: usize = 1;
    pub const BPP: usize = 2;
    pub const DURATION: usize = 3;
}

/// Mean and standard deviation of the four log-scale continuous fields (inter-arrival, packets, bytes per packet,
/// non-zero duration), fitted on training data. Standard deviations are floored at 0.05 so a constant field does
/// not blow up the standardised scale. `max` is the largest log value seen: sampling is truncated at twice it
/// ([`Normaliser::upper`]), so a model cannot emit a nine-year flow from a capture whose longest flow lasted minutes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Normaliser {
    pub mean: [f64; 4],
    pub std: [f64; 4],
    /// Model files written before this field existed load with no data bound (only the 31-year cap).
    #[serde(default = "no_data_bound")]
    pub max: [f64; 4],
}

fn no_data_bound() -> [f64; 4] {
    [decode::TIME_LOG_MAX; 4]
}

impl Normaliser {
    pub fn fit(records: &[FlowRecord]) -> Normaliser {
        let mut acc = [(0.0f64, 0.0f64, 0u64); 4];
        let mut max = [f64::NEG_INFINITY; 4];
        let mut add = |i: usize, v: f64| {
            acc[i].0 += v;
            acc[i].1 += v * v;
            acc[i].2 += 1;
            max[i] = max[i].max(v);
        };
        for (prev, r) in pair_sequences(records)
            .into_iter()
            .flat_map(|(_, s)| pairs_with_prev(s))
        {
            if let Some(p) = prev {
                add(cont::IAT, log_iat(r.start_us - p.start_us));
            }
            add(cont::PACKETS, log_packets(r.packets));
            add(cont::BPP, log_bpp(r.bytes, r.packets, r.proto));
            if let Some(d) = log_duration(r.duration_us) {
                add(cont::DURATION, d);
            }
        }
        let mut mean = [0.0; 4];
        let mut std = [1.0; 4];
        for i in 0..4 {
            let (s, ss, n) = acc[i];
            if n > 0 {
                mean[i] = s / n as f64;
                std[i] = (ss / n as f64 - mean[i] * mean[i])
                    .max(0.0)
                    .sqrt()
                    .max(0.05);
            }
        }
        let max = max.map(|m| {
            if m.is_finite() {
                m
            } else {
                decode::TIME_LOG_MAX
            }
        });
        Normaliser { mean, std, max }
    }
    /// Upper truncation bound (log scale) of sampled inter-arrivals and durations: twice the largest value seen
    /// in training, never above the 31-year cap.
    pub fn upper(&self, i: usize) -> f64 {
        (self.max[i] + std::f64::consts::LN_2).min(decode::TIME_LOG_MAX)
    }
    pub fn z(&self, i: usize, v: f64) -> f32 {
        ((v - self.mean[i]) / self.std[i]) as f32
    }
    pub fn unz(&self, i: usize, z: f64) -> f64 {
        z * self.std[i] + self.mean[i]
    }
    /// Training-time dequantisation of packets: the standardised `log(packets + 0.5)` becomes
    /// `log(packets + u)` with `u` uniform in `[0, 1)`, so the continuous density cannot collapse onto the
    /// integers (which made training unstable); scoring keeps the midpoint.
    /// The packet count of an encoded packets value (`z` of `ln(p + 0.5)`, see [`log_packets`]).
    pub fn packets_of(&self, z: f32) -> u64 {
        (self.unz(cont::PACKETS, z as f64).exp() - 0.5)
            .round()
            .max(1.0) as u64
    }

    /// [`packets_log_bin`] encoded: the `z` values whose draws decode to the count `p`.
    pub fn packets_bin(&self, p: u64) -> (f32, f32) {
        let (lo, hi) = packets_log_bin(p);
        let lo = if lo.is_finite() {
            self.z(cont::PACKETS, lo)
        } else {
            f32::NEG_INFINITY
        };
        (lo, self.z(cont::PACKETS, hi))
    }
}

/// Groups records by host pair, each group sorted by start time (stable: ties keep input order).
/// Pairs come out in order of first appearance, so results are deterministic.
pub fn pair_sequences(records: &[FlowRecord]) -> Vec<(HostPair, Vec<&FlowRecord>)> {
    let mut index: std::collections::HashMap<HostPair, usize> = std::collections::HashMap::new();
    let mut out: Vec<(HostPair, Vec<&FlowRecord>)> = Vec::new();
    for r in records {
        let i = *index.entry(r.pair()).or_insert_with(|| {
            out.push((r.pair(), Vec::new()));
            out.len() - 1
        });
        out[i].1.push(r);
    }
    for (_, s) in &mut out {
        s.sort_by_key(|r| r.start_us);
    }
    out
}

fn pairs_with_prev(s: Vec<&FlowRecord>) -> Vec<(Option<&FlowRecord>, &FlowRecord)> {
    (0..s.len())
        .map(|i| (i.checked_sub(1).map(|j| s[j]), s[i]))
        .collect()
}

/// One flow as the models see it. Continuous fields are standardised log values (see [`Normaliser`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EncodedEvent {
    /// Standardised log inter-arrival since the pair's previous flow; `None` for the pair's first flow.
    pub iat: Option<f32>,
    pub proto: u8,
    pub dport: u16,
    pub sport: u16,
    pub flags: u8,
    pub packets: f32,
    pub bpp: f32,
    /// Standardised log duration; `None` for a zero duration.
    pub duration: Option<f32>,
    pub season: [f32; 4],
    /// Flows of the pair's session before this one (0: it starts a session; see [`sessions`]). Set by whoever
    /// knows the pair's history ([`FeatureSpace::encode`] leaves it 0).
    pub session_pos: u32,
}

/// Width of [`EncodedEvent::continuous`].
pub const N_CONT_INPUTS: usize = 13;

impl EncodedEvent {
    /// Continuous input vector: iat, has-iat, packets, bpp, duration, zero-duration, 4 x season, start-token flag,
    /// starts-a-session flag, log session position (`ln(1 + pos) / ln 33`, at most 2).
    ///
    /// The session inputs give the silence mark its strongest covariate directly: whether a session just began
    /// comes from a threshold on the gap, and its length in flows is a count, both slow for a GRU to learn from the
    /// raw gaps (on the simulator the hazard falls from 35 % after a session's first flow to 3 % after its tenth).
    pub fn continuous(&self) -> [f32; N_CONT_INPUTS] {
        let s = self.season;
        [
            self.iat.unwrap_or(0.0),
            self.iat.is_some() as u8 as f32,
            self.packets,
            self.bpp,
            self.duration.unwrap_or(0.0),
            self.duration.is_none() as u8 as f32,
            s[0],
            s[1],
            s[2],
            s[3],
            0.0,
            (self.session_pos == 0) as u8 as f32,
            ((1.0 + self.session_pos as f32).ln() / 33f32.ln()).min(2.0),
        ]
    }
    /// The input that stands for "no previous event" at the start of a pair's history.
    pub const START: [f32; N_CONT_INPUTS] = [0., 0., 0., 0., 0., 0., 0., 0., 0., 0., 1., 0., 0.];
}

/// What a model needs to turn records into features and back: normalisation, pair hashing, and the facts of the
/// training data the compliance rules depend on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FeatureSpace {
    pub norm: Normaliser,
    /// Hashed buckets per host-pair component (source, destination, source prefix, destination prefix).
    pub buckets: u32,
    /// Whether the training data had single-packet flows with a non-zero duration. When it had none, sampling gives
    /// single-packet flows duration 0 (the compliance rule "duration 0 when packets = 1 unless the data says otherwise").
    pub single_packet_duration: bool,
    /// Training data span, events and pairs: used for arrival rates and `--count` planning.
    pub first_us: i64,
    pub last_us: i64,
    pub events: u64,
    pub pairs: u64,
    /// The silence threshold (see [`silence_threshold`]): a gap longer than this ends a lane's session.
    pub silence_us: i64,
    /// Which seasonality inputs the models see: hour of day when the training data covers a whole day, day of week
    /// when it covers two weeks. Data that covers part of a cycle leaves the rest of it unseen, and a network fed
    /// an hour it never saw extrapolates freely (on the simulator's 17-hour training part that made generated
    /// evening sessions several times too long); a cycle not covered is left out (its inputs are 0).
    pub season: [bool; 2],
    /// Which values and ranges the data showed (sampling keeps to them; grows as the model trains).
    pub support: super::support::Support,
}

/// Training spans from which hour-of-day and day-of-week inputs are used.
pub const SEASON_MIN_SPAN_US: [i64; 2] = [86_400_000_000, 14 * 86_400_000_000];

/// Quantile of within-pair gaps that sets the silence threshold when the gaps show no valley.
pub const SILENCE_QUANTILE: f64 = 0.95;

/// The silence threshold of training data: a gap between consecutive flows of a pair longer than this means the
/// pair went silent (its session ended; a later flow starts a new session).
///
/// Within-pair gaps are usually bimodal on a log scale: gaps inside a burst and pauses between bursts. The
/// threshold sits in the valley between them: on a histogram of gaps of at least one second in half-decade bins,
/// the first bin that holds less than a third of the largest bin before it (gaps under a second count as one bin)
/// and of the largest bin after it, where that later bin holds at least 2 % of all gaps; the threshold is the bin's
/// log centre. Sessions are then bursts, so session starts carry the traffic's changes in level (their rate has a
/// daily cycle, see `pair_arrival`) and sessions keep a stable length: with a high quantile instead (80 minutes on
/// the simulator), sessions merged a day's bursts and their length followed the time of day, which nothing in a
/// model's history could tell. The gaps above the valley must be irregular (an interquartile range of at least half a
/// decade): a pair that pauses for about the same time again and again (a burst every 30 s) is keeping a rhythm,
/// not going silent, and its pauses are better kept inside its sessions. Without such a valley, twice the
/// [`SILENCE_QUANTILE`] quantile of the gaps: regular traffic (a beacon every second, with microseconds of jitter)
/// has no silence, and a quantile alone would call one gap in twenty of it one.
///
/// Kept within one second and a twentieth of the data span: a pair's last flow within the threshold of the data's
/// end has an unknown label (censored, left out of training), and the cap keeps that blind strip at 5 % of the
/// data (floored at 1 ms for data shorter than 20 seconds).
pub fn silence_threshold(records: &[FlowRecord]) -> i64 {
    let mut gaps: Vec<i64> = pair_sequences(records)
        .into_iter()
        .flat_map(|(_, s)| {
            s.windows(2)
                .map(|w| w[1].start_us - w[0].start_us)
                .collect::<Vec<_>>()
        })
        .collect();
    let first = records.iter().map(|r| r.start_us).min().unwrap_or(0);
    let last = records.iter().map(|r| r.start_us).max().unwrap_or(0);
    let cap = ((last - first) / 20).max(1_000);
    if gaps.is_empty() {
        return cap;
    }
    gaps.sort_unstable();
    let s = gap_valley_us(&gaps).unwrap_or_else(|| {
        gaps[((gaps.len() - 1) as f64 * SILENCE_QUANTILE).round() as usize].saturating_mul(2)
    });
    s.max(1_000_000).min(cap)
}

/// The valley of [`silence_threshold`] in sorted gaps (µs), if any.
fn gap_valley_us(sorted: &[i64]) -> Option<i64> {
    let n = sorted.len();
    let below = sorted.partition_point(|g| *g < 1_000_000);
    // Bin 0 holds gaps under a second; bin k >= 1 holds [10^((k-1)/2), 10^(k/2)) seconds.
    let mut bins = vec![below as f64];
    for g in &sorted[below..] {
        let k = 1 + ((*g as f64 * 1e-6).log10() * 2.0).floor().max(0.0) as usize;
        if bins.len() <= k {
            bins.resize(k + 1, 0.0);
        }
        bins[k] += 1.0;
    }
    let valley = (1..bins.len().saturating_sub(1)).find(|&k| {
        let before = bins[..k].iter().cloned().fold(0.0, f64::max);
        let after = bins[k + 1..].iter().cloned().fold(0.0, f64::max);
        before >= 3.0 * bins[k] && after >= 3.0 * bins[k] && after >= 0.02 * n as f64
    })?;
    let s = (10f64.powf((valley as f64 - 0.5) / 2.0) * 1e6) as i64;
    let above = &sorted[sorted.partition_point(|g| *g <= s)..];
    let lq = |f: f64| (above[((above.len() - 1) as f64 * f) as usize] as f64).log10();
    (above.len() >= 4 && lq(0.75) - lq(0.25) >= 0.5).then_some(s)
}

/// Session structure of time-sorted flow starts of one lane (a pair, or a host for STAN) under a silence threshold.
pub mod sessions {
    /// Whether the lane went silent after flow `i` of `starts`: `Some(true)` when the next flow is more than
    /// `silence_us` later, or there is none and the data (which ends at `data_end_us`) stayed silent that long;
    /// `Some(false)` when the next flow comes within it; `None` when unknown (no next flow, and the data ends within
    /// `silence_us`: censored).
    pub fn ended_after(
        starts: &[i64],
        i: usize,
        silence_us: i64,
        data_end_us: i64,
    ) -> Option<bool> {
        match starts.get(i + 1) {
            Some(&n) => Some(n - starts[i] > silence_us),
            None => (data_end_us - starts[i] > silence_us).then_some(true),
        }
    }
    /// Log-odds of a labelled flow being followed by silence, over lanes' time-sorted starts (clamped to
    /// `[1e-4, 1 - 1e-4]`): the initial bias of a silence head, for the same reason as [`super::Marginals`].
    pub fn silence_logit(seqs: &[Vec<i64>], silence_us: i64, data_end_us: i64) -> f32 {
        let (mut ended, mut labelled) = (0u64, 0u64);
        for s in seqs {
            for i in 0..s.len() {
                if let Some(e) = ended_after(s, i, silence_us, data_end_us) {
                    labelled += 1;
                    ended += e as u64;
                }
            }
        }
        let p = (ended as f64 / labelled.max(1) as f64).clamp(1e-4, 1.0 - 1e-4);
        (p / (1.0 - p)).ln() as f32
    }
    /// Position of every flow in its session (flows of the session before it) given the first flow's.
    pub fn positions(starts: &[i64], first: u32, silence_us: i64) -> Vec<u32> {
        let mut out = Vec::with_capacity(starts.len());
        for (i, t) in starts.iter().enumerate() {
            out.push(match i {
                0 => first,
                _ if t - starts[i - 1] > silence_us => 0,
                _ => out[i - 1] + 1,
            });
        }
        out
    }
    /// Session starts: the first flow and every flow after a gap longer than `silence_us`.
    pub fn starts(starts: &[i64], silence_us: i64) -> impl Iterator<Item = i64> + '_ {
        starts
            .iter()
            .enumerate()
            .filter(move |(i, t)| *i == 0 || **t - starts[i - 1] > silence_us)
            .map(|(_, t)| *t)
    }
}

impl FeatureSpace {
    pub fn fit(records: &[FlowRecord], buckets: u32) -> FeatureSpace {
        let first_us = records.iter().map(|r| r.start_us).min().unwrap_or(0);
        let last_us = records.iter().map(|r| r.start_us).max().unwrap_or(0);
        let pairs = records
            .iter()
            .map(|r| r.pair())
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        FeatureSpace {
            norm: Normaliser::fit(records),
            buckets: buckets.max(1),
            single_packet_duration: records.iter().any(|r| r.packets <= 1 && r.duration_us > 0),
            first_us,
            last_us,
            events: records.len() as u64,
            pairs,
            silence_us: silence_threshold(records),
            season: [0, 1].map(|i| last_us - first_us >= SEASON_MIN_SPAN_US[i]),
            support: super::support::Support::fit(records),
        }
    }

    /// Training span in microseconds (at least one second, so rates stay finite).
    pub fn span_us(&self) -> i64 {
        (self.last_us - self.first_us).max(1_000_000)
    }

    /// Encodes one record. Values no valid flow can have (flags on non-TCP, ports on a protocol without ports, zero
    /// packets, bytes outside the protocol's bounds) are mapped to the nearest valid value and counted in `repairs`.
    pub fn encode(
        &self,
        r: &FlowRecord,
        prev_start_us: Option<i64>,
        repairs: &mut super::compliance::RepairCounts,
    ) -> EncodedEvent {
        let n = &self.norm;
        let has_ports = proto::has_ports(r.proto);
        if !has_ports && (r.src_port != 0 || r.dst_port != 0) {
            repairs.data_ports_on_portless += 1;
        }
        if r.proto != proto::TCP && r.flags.0 != 0 {
            repairs.data_flags_on_non_tcp += 1;
        }
        if r.packets == 0 {
            repairs.data_zero_packets += 1;
        }
        let (lo, hi) = super::compliance::bpp_bounds(r.proto);
        let bpp = r.bytes as f64 / r.packets.max(1) as f64;
        if bpp < lo || bpp > hi {
            repairs.data_bytes_out_of_range += 1;
        }
        EncodedEvent {
            iat: prev_start_us.map(|p| n.z(cont::IAT, log_iat(r.start_us - p))),
            proto: r.proto,
            dport: if has_ports { port_class(r.dst_port) } else { 0 },
            sport: if has_ports { port_class(r.src_port) } else { 0 },
            flags: flags_of(r),
            packets: n.z(cont::PACKETS, log_packets(r.packets)),
            bpp: n.z(cont::BPP, log_bpp(r.bytes, r.packets, r.proto)),
            duration: log_duration(r.duration_us).map(|d| n.z(cont::DURATION, d)),
            session_pos: 0,
            season: {
                let mut s = seasonality(r.start_us);
                for (c, on) in self.season.iter().enumerate() {
                    if !on {
                        s[2 * c] = 0.0;
                        s[2 * c + 1] = 0.0;
                    }
                }
                s
            },
        }
    }

    /// Hashed bucket ids of a host pair: source, destination, source prefix, destination prefix (/24 for IPv4,
    /// /64 for IPv6). Pairs sharing a host or a subnet share embedding rows, which is how unseen pairs generalise.
    pub fn pair_buckets(&self, pair: &HostPair) -> [i64; 4] {
        let b = self.buckets as u64;
        [
            (fnv(0, &addr_bytes(pair.src, false)) % b) as i64,
            (fnv(1, &addr_bytes(pair.dst, false)) % b) as i64,
            (fnv(2, &addr_bytes(pair.src, true)) % b) as i64,
            (fnv(3, &addr_bytes(pair.dst, true)) % b) as i64,
        ]
    }
}

fn addr_bytes(a: IpAddr, prefix: bool) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets()[..if prefix { 3 } else { 4 }].to_vec(),
        IpAddr::V6(v) => v.octets()[..if prefix { 8 } else { 16 }].to_vec(),
    }
}

fn fnv(tag: u8, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ tag as u64;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    /// Packet-count bins tile the line: one packet takes everything below ln 2, and each count's bin ends
    /// where the next one's begins.
    #[test]
    fn packet_bins_tile_the_line() {
        let n = Normaliser {
            mean: [0.0, 1.3, 0.0, 0.0],
            std: [1.0, 0.7, 1.0, 1.0],
            max: [f64::INFINITY; 4],
        };
        assert_eq!(n.packets_bin(1).0, f32::NEG_INFINITY);
        for p in 1..100u64 {
            let (lo, hi) = n.packets_bin(p);
            assert!(lo < hi);
            assert_eq!(hi, n.packets_bin(p + 1).0);
            let mid = n.unz(cont::PACKETS, ((lo.max(-10.0) + hi) * 0.5) as f64);
            assert_eq!(decode::packets(mid), p);
        }
    }

    use super::*;
    use crate::record::TcpFlags;

    fn at(t_us: i64, pair: u8) -> FlowRecord {
        FlowRecord {
            start_us: t_us,
            duration_us: 0,
            src: IpAddr::from([10, 0, 0, pair]),
            dst: IpAddr::from([10, 0, 1, pair]),
            src_port: 1000,
            dst_port: 80,
            proto: proto::TCP,
            flags: TcpFlags(0x02),
            packets: 1,
            bytes: 60,
            label: None,
        }
    }

    /// Bursts (gaps ~0.1 s) separated by irregular pauses (10 s to 3 h): the threshold falls in the valley between.
    /// A rhythm (a burst every 30 s, always) has no silence inside it. Regular traffic gets twice its long gaps.
    #[test]
    fn silence_threshold_finds_the_pause_between_bursts() {
        let mut recs = Vec::new();
        let mut t = 0i64;
        for b in 0..300 {
            for _ in 0..5 {
                recs.push(at(t, 1));
                t += 100_000;
            }
            t += (10f64 * 1000f64.powf((b % 7) as f64 / 6.0) * 1e6) as i64;
        }
        let s = silence_threshold(&recs);
        assert!((1_000_000..=10_000_000).contains(&s), "{s}");
        let rhythm: Vec<FlowRecord> = (0..600)
            .map(|i| at(i / 2 * 30_000_000 + (i % 2) * 50_000, 2))
            .collect();
        let s = silence_threshold(&rhythm);
        assert!(s > 30_000_000, "{s}");
        let regular: Vec<FlowRecord> = (0..600).map(|i| at(i * 1_000_000 + i % 3, 3)).collect();
        let s = silence_threshold(&regular);
        assert!(s >= 2_000_000, "{s}");
    }

    #[test]
    fn session_positions_restart_after_silence() {
        let t = [0, 1, 2, 100, 101, 300];
        assert_eq!(sessions::positions(&t, 0, 50), vec![0, 1, 2, 0, 1, 0]);
        assert_eq!(sessions::positions(&t, 4, 50), vec![4, 5, 6, 0, 1, 0]);
        assert_eq!(
            sessions::starts(&t, 50).collect::<Vec<_>>(),
            vec![0, 100, 300]
        );
        assert_eq!(sessions::ended_after(&t, 2, 50, 1000), Some(true));
        assert_eq!(sessions::ended_after(&t, 3, 50, 1000), Some(false));
        assert_eq!(sessions::ended_after(&t, 5, 50, 1000), Some(true));
        assert_eq!(sessions::ended_after(&t, 5, 50, 320), None);
    }

    #[test]
    fn port_classes_cover_all_ports() {
        assert_eq!(port_class(0), 0);
        assert_eq!(port_class(1023), 1023);
        assert_eq!(port_class(1024), 1024);
        assert_eq!(port_class(65535) as usize, N_PORT_CLASSES - 1);
        for p in [0u16, 80, 1023, 1024, 1123, 1124, 50000, 65535] {
            let (lo, hi) = port_class_range(port_class(p));
            assert!(lo <= p && p <= hi, "{p}");
        }
    }
}

/// Decoding of sampled log values into record fields. Each is total and monotone, and keeps the compliance
/// bounds when its input lies inside the truncation interval the samplers use.
pub mod decode {
    /// Inter-arrival in µs from a natural-log value in seconds (>= 0 by construction).
    pub fn iat_us(log_s: f64) -> i64 {
        (log_s.exp() * 1e6).round().clamp(0.0, 1e15) as i64
    }
    /// Packets from a log value of the dequantised count (`floor`, at least 1).
    pub fn packets(log_x: f64) -> u64 {
        (log_x.exp().floor()).clamp(1.0, 1e12) as u64
    }
    /// Bytes from a log bytes-per-packet value: `round(bpp x packets)` kept in the protocol's bounds. Returns the
    /// bytes and whether the bound had to be applied (only possible when `log_bpp` was outside the interval).
    pub fn bytes(log_bpp: f64, packets: u64, proto: u8) -> (u64, bool) {
        let lo = crate::record::proto::min_packet_bytes(proto) * packets;
        let hi = 65535 * packets;
        let b = (log_bpp.exp() * packets as f64).round();
        let c = b.clamp(lo as f64, hi as f64) as u64;
        (c, c as f64 != b)
    }
    /// Duration in µs from a log value in seconds.
    pub fn duration_us(log_s: f64) -> u64 {
        (log_s.exp() * 1e6).round().clamp(0.0, 1e15) as u64
    }
    /// Log truncation interval of the dequantised packet count: at least one packet, at most 1e12.
    pub const PACKETS_LOG: (f64, f64) = (0.0, 27.6);
    /// Log truncation interval of bytes per packet for a protocol.
    pub fn bpp_log(proto: u8) -> (f64, f64) {
        let (lo, hi) = super::super::compliance::bpp_bounds(proto);
        (lo.ln(), hi.ln())
    }
    /// Inter-arrivals and durations are bounded at about 31 years so times cannot overflow.
    pub const TIME_LOG_MAX: f64 = 20.7;
}

/// Marginal frequencies of the discrete fields and of zero durations in training data. Used to initialise the
/// output biases of softmax heads to the log marginal and the zero-duration logit to the data's log-odds: with
/// Adam a logit moves about `lr` per step, so starting from 0 a rare class (or an almost-never zero duration) would
/// keep a visible probability for thousands of steps.
#[derive(Clone, Debug)]
pub struct Marginals {
    pub proto: Vec<f64>,
    pub dport: Vec<f64>,
    pub sport: Vec<f64>,
    pub flags: Vec<f64>,
    pub octets: Vec<Vec<f64>>,
    pub zero_duration: f64,
}

impl Marginals {
    pub fn fit(space: &FeatureSpace, records: &[FlowRecord]) -> Marginals {
        let mut rep = super::compliance::RepairCounts::default();
        let mut m = Marginals {
            proto: vec![0.0; N_BYTE_CLASSES],
            dport: vec![0.0; N_PORT_CLASSES],
            sport: vec![0.0; N_PORT_CLASSES],
            flags: vec![0.0; N_BYTE_CLASSES],
            octets: vec![vec![0.0; 256]; 4],
            zero_duration: 0.0,
        };
        for r in records {
            let e = space.encode(r, None, &mut rep);
            m.proto[e.proto as usize] += 1.0;
            m.dport[e.dport as usize] += 1.0;
            m.sport[e.sport as usize] += 1.0;
            m.flags[e.flags as usize] += 1.0;
            if let IpAddr::V4(d) = r.dst {
                for (k, o) in d.octets().iter().enumerate() {
                    m.octets[k][*o as usize] += 1.0;
                }
            }
            m.zero_duration += e.duration.is_none() as u8 as f64;
        }
        m.zero_duration /= records.len().max(1) as f64;
        m
    }
    /// Log frequencies with add-0.01 smoothing.
    pub fn log_freq(counts: &[f64]) -> Vec<f32> {
        let tot: f64 = counts.iter().sum::<f64>() + 0.01 * counts.len() as f64;
        counts
            .iter()
            .map(|c| ((c + 0.01) / tot).ln() as f32)
            .collect()
    }
    pub fn zero_logit(&self) -> f32 {
        let p = self.zero_duration.clamp(1e-4, 1.0 - 1e-4);
        (p / (1.0 - p)).ln() as f32
    }
}

/// Sets the first `values.len()` entries of a linear layer's bias (weights untouched).
pub fn set_bias(l: &tch::nn::Linear, values: &[f32]) {
    set_bias_at(l, 0, values)
}

/// [`set_bias`] from output `offset` on.
pub fn set_bias_at(l: &tch::nn::Linear, offset: usize, values: &[f32]) {
    if let Some(b) = &l.bs {
        tch::no_grad(|| {
            let mut head = b.narrow(0, offset as i64, values.len() as i64);
            head.copy_(&tch::Tensor::from_slice(values).to_device(b.device()));
        });
    }
}
