//! Synthetic streams with known structure for the model tests.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use temponet::model::{
    FitOptions, GenLimit, GenerateRequest, Model, ModelConfig, ModelKind, PairSource,
};
use temponet::record::{FlowRecord, TcpFlags, proto};

pub const T0: i64 = 1_545_403_816_000_000;

#[allow(clippy::too_many_arguments)]
pub fn flow(
    t: i64,
    src: &str,
    dst: &str,
    p: u8,
    sport: u16,
    dport: u16,
    flags: u8,
    packets: u64,
    bytes: u64,
    dur: u64,
) -> FlowRecord {
    FlowRecord {
        start_us: t,
        duration_us: dur,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port: sport,
        dst_port: dport,
        proto: p,
        flags: TcpFlags(flags),
        packets,
        bytes,
        label: None,
    }
}

/// Bimodal log-normal inter-arrivals (half near 0.05 s, half near 30 s, sigma 0.3 in log space) for two pairs:
/// A always TCP 443, B always UDP 53. Returned in time order.
pub fn bimodal_two_services(n_per_pair: usize, seed: u64) -> Vec<FlowRecord> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 0.3).unwrap();
    let mut out = Vec::new();
    for pair in 0..2 {
        let mut t = T0 + pair * 7_000_000;
        for _ in 0..n_per_pair {
            let mode: f64 = if rng.r#gen::<bool>() {
                (0.05f64).ln()
            } else {
                (30.0f64).ln()
            };
            let dt = (mode + noise.sample(&mut rng)).exp();
            t += (dt * 1e6) as i64;
            let r = if pair == 0 {
                let pk = rng.gen_range(8..14);
                flow(
                    t,
                    "10.0.0.1",
                    "10.0.0.2",
                    proto::TCP,
                    rng.gen_range(40000..60000),
                    443,
                    0x1b,
                    pk,
                    pk * rng.gen_range(300..700),
                    rng.gen_range(50_000..400_000),
                )
            } else {
                flow(
                    t,
                    "10.0.0.3",
                    "8.8.8.8",
                    proto::UDP,
                    rng.gen_range(30000..60000),
                    53,
                    0,
                    2,
                    rng.gen_range(120..200),
                    rng.gen_range(5_000..20_000),
                )
            };
            out.push(r);
        }
    }
    out.sort_by_key(|r| r.start_us);
    out
}

/// STAN's check: x_t = 0.9 x_{t-1} + 0.1 N, y_t = 0.9 x_t + 0.1 N, one host to one destination, encoded as
/// log bytes-per-packet = 6 + x (10 packets) and log duration in seconds = y.
pub fn ar_stream(n: usize, seed: u64) -> Vec<FlowRecord> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let e = Normal::new(0.0, 0.1).unwrap();
    let mut x = 0.0f64;
    let mut t = T0;
    let mut out = Vec::new();
    for _ in 0..n {
        x = 0.9 * x + e.sample(&mut rng);
        let y = 0.9 * x + e.sample(&mut rng);
        t += 1_000_000 + rng.gen_range(0..1000);
        let bytes = (10.0 * (6.0 + x).exp()).round() as u64;
        out.push(flow(
            t,
            "10.0.0.1",
            "10.0.0.9",
            proto::TCP,
            50000,
            80,
            0x1b,
            10,
            bytes,
            (y.exp() * 1e6).round() as u64,
        ));
    }
    out
}

/// (x_t, y_t) read back from flows of [`ar_stream`]'s encoding, in time order.
pub fn ar_decode(flows: &[FlowRecord]) -> Vec<(f64, f64)> {
    let mut f: Vec<&FlowRecord> = flows.iter().collect();
    f.sort_by_key(|r| r.start_us);
    f.iter()
        .map(|r| {
            (
                (r.bytes as f64 / r.packets as f64).ln() - 6.0,
                (r.duration_us.max(1) as f64 * 1e-6).ln(),
            )
        })
        .collect()
}

pub fn corr(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// 1-D Wasserstein-1 distance between two samples (average gap between their quantile functions).
pub fn wasserstein1(a: &[f64], b: &[f64]) -> f64 {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort_by(|x, y| x.partial_cmp(y).unwrap());
    b.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let n = 1000;
    (0..n)
        .map(|i| {
            let u = (i as f64 + 0.5) / n as f64;
            let q = |v: &[f64]| v[((u * v.len() as f64) as usize).min(v.len() - 1)];
            (q(&a) - q(&b)).abs()
        })
        .sum::<f64>()
        / n as f64
}

/// Log inter-arrivals (seconds) within each host pair.
pub fn log_iats(flows: &[FlowRecord]) -> Vec<f64> {
    let mut by: std::collections::HashMap<_, Vec<i64>> = Default::default();
    for r in flows {
        by.entry(r.pair()).or_default().push(r.start_us);
    }
    let mut out = Vec::new();
    for (_, mut t) in by {
        t.sort();
        out.extend(
            t.windows(2)
                .map(|w| ((w[1] - w[0]).max(1) as f64 * 1e-6).ln()),
        );
    }
    out
}

/// A mixed stream to exercise the compliance rules: TCP, UDP, ICMP with (invalid) ports and flags in the data,
/// single-packet flows, and some rows whose bytes break the bounds.
pub fn mixed_stream(n: usize, seed: u64) -> Vec<FlowRecord> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let hosts = ["192.168.1.10", "192.168.1.11", "10.1.2.3", "172.16.0.5"];
    let dsts = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "192.168.1.1"];
    let mut t = T0;
    (0..n)
        .map(|i| {
            t += rng.gen_range(1_000..5_000_000);
            let s = hosts[rng.gen_range(0..hosts.len())];
            let d = dsts[rng.gen_range(0..dsts.len())];
            match i % 5 {
                0 | 1 => {
                    let pk = rng.gen_range(1..40);
                    flow(
                        t,
                        s,
                        d,
                        proto::TCP,
                        rng.gen_range(1024..65535),
                        [80, 443, 22][i % 3],
                        rng.r#gen(),
                        pk,
                        pk * rng.gen_range(40..1500),
                        if pk == 1 {
                            0
                        } else {
                            rng.gen_range(0..5_000_000)
                        },
                    )
                }
                2 => flow(
                    t,
                    s,
                    d,
                    proto::UDP,
                    rng.gen_range(1024..65535),
                    53,
                    0,
                    1,
                    rng.gen_range(60..300),
                    0,
                ),
                // ICMP with ports and flags as some exporters write them: the models must not copy them.
                3 => flow(t, s, d, proto::ICMP, 8, 3, 0x10, rng.gen_range(1..4), 84, 0),
                // Too few bytes for the packets (broken row).
                _ => flow(t, s, d, proto::TCP, 40000, 443, 0x12, 3, 50, 1000),
            }
        })
        .collect()
}

/// Fits a model with the tests' fixed seed.
pub fn fit(kind: ModelKind, cfg: &ModelConfig, records: &[FlowRecord], epochs: usize) -> Model {
    let opts = FitOptions {
        epochs,
        seed: 7,
        ..Default::default()
    };
    Model::fit_new(kind, cfg, records, &opts, &mut |_| {}).unwrap()
}

/// Generates `hours` of flows right after the training data, checking no sample broke a rule.
pub fn span(model: &Model, hours: i64, pairs: PairSource) -> Vec<FlowRecord> {
    let req = GenerateRequest::new(
        model.space().last_us + 1,
        GenLimit::SpanUs(hours * 3_600_000_000),
        11,
        pairs,
    );
    let g = model.generate(&req, &mut |_| {}).unwrap();
    assert_eq!(g.repairs.sample_violations, 0);
    g.flows
}

/// Six hours of one host's habits beside irregular background traffic:
/// - `RHYTHM_DST`: an IRC-like bot on TCP 6667, sessions of three flows 1.5-2.5 s apart, each the next 30-36 s after
///   the last (a reconnect timer);
/// - `POLL_DST`: an NTP-like poll on UDP 123, every session one flow, 500-1,000 s apart;
/// - 20 background pairs (other hosts) with sessions of 1-5 flows and pauses log-uniform over 1 minute to 1 hour.
///
/// Gaps inside sessions stay under 3 s and every pause is above 30 s, so the silence threshold falls in between
/// (near 5.6 s, see `silence_threshold`).
pub fn rhythm_stream(seed: u64) -> Vec<FlowRecord> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let end = T0 + 6 * 3_600_000_000;
    let mut out = Vec::new();
    let mut t = T0 + rng.gen_range(0..30_000_000);
    while t < end {
        for k in 0..3 {
            if k > 0 {
                t += rng.gen_range(1_500_000..2_500_000);
            }
            let sport = rng.gen_range(32768..61000);
            out.push(flow(
                t,
                RHYTHM_SRC,
                RHYTHM_DST,
                proto::TCP,
                sport,
                6667,
                TcpFlags::SYN,
                3,
                180,
                2_000_000,
            ));
        }
        t += rng.gen_range(30_000_000..36_000_000);
    }
    let mut t = T0 + rng.gen_range(0..500_000_000);
    while t < end {
        out.push(flow(
            t,
            RHYTHM_SRC,
            POLL_DST,
            proto::UDP,
            123,
            123,
            0,
            1,
            76,
            0,
        ));
        t += rng.gen_range(500_000_000..1_000_000_000);
    }
    for b in 0..20u8 {
        let (src, dst) = (format!("10.0.{b}.2"), format!("172.16.{b}.9"));
        let mut t = T0 + rng.gen_range(0..600_000_000);
        while t < end {
            for k in 0..rng.gen_range(1..=5) {
                if k > 0 {
                    t += rng.gen_range(200_000..3_000_000);
                }
                let pk = rng.gen_range(4..30);
                let sport = rng.gen_range(32768..61000);
                out.push(flow(
                    t,
                    &src,
                    &dst,
                    proto::TCP,
                    sport,
                    443,
                    0x1b,
                    pk,
                    pk * 700,
                    900_000,
                ));
            }
            t += (rng.gen_range(60f64.ln()..3600f64.ln()).exp() * 1e6) as i64;
        }
    }
    out.sort_by_key(|r| r.start_us);
    out
}

pub const RHYTHM_SRC: &str = "192.168.1.195";
pub const RHYTHM_DST: &str = "185.244.25.235";
pub const POLL_DST: &str = "89.221.210.188";
/// Destination of [`add_flood`]'s flood.
pub const FLOOD_DST: &str = "123.59.209.185";

/// Flows in [`add_flood`]'s flood.
pub const FLOOD_FLOWS: usize = 4000;

/// Adds a flood from `RHYTHM_SRC` starting at `from_us` (one flow a millisecond for 4 s: TCP to port 80 from port
/// 65279, no flags, one 40-byte packet, as IoT-23 34-1's) and sorts `data` by start.
pub fn add_flood(data: &mut Vec<FlowRecord>, from_us: i64) {
    for k in 0..FLOOD_FLOWS as i64 {
        data.push(flow(
            from_us + k * 1_000,
            RHYTHM_SRC,
            FLOOD_DST,
            proto::TCP,
            65279,
            80,
            0,
            1,
            40,
            0,
        ));
    }
    data.sort_by_key(|r| r.start_us);
}
