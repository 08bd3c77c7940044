//! TempoNet samples inside the support of its data (`temponet::model::support`): every generated flow is a kind of
//! flow (protocol and flags) the data had, with a port class the data had for its protocol, and packets, bytes per
//! packet and duration within the range of its kind. The data has sharp edges a log-normal mixture and a softmax
//! cannot reproduce on their own (SYN-only flows of exactly two packets, DNS of at most two packets and 300 bytes
//! each, never a zero-duration web flow), and the model is trained briefly, so its distributions are wide: without
//! the truncation a good share of 3,000 flows falls outside. The support also grows with streaming training and
//! survives the model file.

mod model_support;

use model_support::*;
use std::collections::{HashMap, HashSet};
use temponet::FlowRecord;
use temponet::model::features::port_class;
use temponet::model::{
    DeviceChoice, GenLimit, GenerateRequest, Model, ModelConfig, ModelKind, PairSource,
    pair_windows,
};
use temponet::record::{HostPair, TcpFlags, proto};

/// Per kind (protocol, flags): packets, bytes-per-packet and duration ranges; per protocol: destination and source
/// port classes. Computed here from the records, independently of the library's `Support`.
type Ranges = ((u64, u64), (f64, f64), (u64, u64));

#[derive(Default)]
struct Seen {
    kinds: HashMap<(u8, u8), Ranges>,
    ports: HashSet<(u8, u16, u16)>,
}

fn seen(data: &[FlowRecord]) -> Seen {
    let mut s = Seen::default();
    for r in data {
        let e = s.kinds.entry((r.proto, r.flags.0)).or_insert((
            (u64::MAX, 0),
            (f64::MAX, 0.0),
            (u64::MAX, 0),
        ));
        let bpp = r.bytes as f64 / r.packets as f64;
        e.0 = (e.0.0.min(r.packets), e.0.1.max(r.packets));
        e.1 = (e.1.0.min(bpp), e.1.1.max(bpp));
        e.2 = (e.2.0.min(r.duration_us), e.2.1.max(r.duration_us));
        s.ports
            .insert((r.proto, port_class(r.dst_port), port_class(r.src_port)));
    }
    s
}

fn edged_stream(n: usize) -> Vec<FlowRecord> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let hosts = ["192.168.1.10", "192.168.1.11", "10.1.2.3", "172.16.0.5"];
    let dsts = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "192.168.1.1"];
    let mut t = T0;
    (0..n)
        .map(|i| {
            t += rng.gen_range(1_000..3_000_000);
            let (s, d) = (hosts[i % 4], dsts[(i / 4) % 4]);
            let sport = rng.gen_range(49152..65535);
            match i % 4 {
                // A connection attempt: SYN, one retransmission, 60-byte packets.
                0 => flow(
                    t,
                    s,
                    d,
                    proto::TCP,
                    sport,
                    443,
                    TcpFlags::SYN,
                    2,
                    120,
                    1_000_000,
                ),
                // DNS: one or two packets, small, no duration.
                1 => {
                    let pk = rng.gen_range(1..=2);
                    let b = pk * rng.gen_range(60..300);
                    flow(t, s, d, proto::UDP, sport, 53, 0, pk, b, 0)
                }
                // Web: full-size packets at most, never zero duration.
                _ => {
                    let pk = rng.gen_range(4..60);
                    let b = pk * rng.gen_range(200..1500);
                    let dur = rng.gen_range(10_000..8_000_000);
                    flow(
                        t,
                        s,
                        d,
                        proto::TCP,
                        sport,
                        [80, 443][i % 2],
                        0x1b,
                        pk,
                        b,
                        dur,
                    )
                }
            }
        })
        .collect()
}

#[test]
fn generated_flows_stay_inside_the_data() {
    let data = edged_stream(2000);
    let truth = seen(&data);
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 32;
    let m = fit(ModelKind::TempoNet, &cfg, &data, 1);
    for pairs in [PairSource::Observed, PairSource::Synthetic] {
        let req = GenerateRequest::new(T0, GenLimit::Count(3000), 3, pairs);
        let g = m.generate(&req, &mut |_| {}).unwrap();
        assert_eq!(g.flows.len(), 3000);
        for r in &g.flows {
            let kind = (r.proto, r.flags.0);
            let Some(&(pk, bpp, dur)) = truth.kinds.get(&kind) else {
                panic!("{pairs:?}: a kind of flow the data never had: {r:?}");
            };
            assert!(
                (pk.0..=pk.1).contains(&r.packets),
                "{pairs:?}: packets outside {pk:?}: {r:?}"
            );
            // Bytes are rounded from bytes-per-packet x packets: half a byte of slack per flow.
            let b = r.bytes as f64;
            assert!(
                b >= bpp.0 * r.packets as f64 - 0.5 && b <= bpp.1 * r.packets as f64 + 0.5,
                "{pairs:?}: bytes per packet outside {bpp:?}: {r:?}"
            );
            assert!(
                (dur.0..=dur.1).contains(&r.duration_us),
                "{pairs:?}: duration outside {dur:?}: {r:?}"
            );
            assert!(
                truth
                    .ports
                    .iter()
                    .any(|&(p, d, _)| p == r.proto && d == port_class(r.dst_port))
                    && truth
                        .ports
                        .iter()
                        .any(|&(p, _, s)| p == r.proto && s == port_class(r.src_port)),
                "{pairs:?}: a port class the data never had for its protocol: {r:?}"
            );
        }
    }
}

#[test]
fn support_grows_with_streaming_training_and_survives_the_file() {
    let data = edged_stream(400);
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 16;
    let mut m = fit(ModelKind::TempoNet, &cfg, &data, 1);
    assert!(m.space().support.proto(proto::ICMP).is_none());
    // Later traffic brings ICMP echo: training on it admits it.
    let later: Vec<FlowRecord> = (0..64)
        .map(|i| {
            let t = T0 + 3_000_000_000_000 + i * 1_000_000;
            flow(
                t,
                "10.1.2.3",
                "8.8.8.8",
                proto::ICMP,
                0,
                0,
                0,
                2,
                168,
                5_000,
            )
        })
        .collect();
    let windows = pair_windows(&later, 16, |_| true);
    let refs: Vec<_> = windows.iter().collect();
    m.train_batch(&refs).unwrap();
    let s = &m.space().support;
    assert!(s.protos().unwrap().contains(proto::ICMP as usize));
    assert_eq!(s.kind(proto::ICMP, 0).unwrap().packets, (2, 2));
    // Earlier kinds are untouched.
    assert_eq!(
        s.kind(proto::TCP, TcpFlags::SYN).unwrap().bytes_per_packet,
        (60.0, 60.0)
    );
    let dir = std::env::temp_dir().join(format!("temponet-support-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.tpn");
    m.save(&path).unwrap();
    let back = Model::load(&path, DeviceChoice::Cpu).unwrap();
    assert_eq!(back.space(), m.space());
    std::fs::remove_dir_all(&dir).ok();
}

/// Services above port 1023 keep their exact port: an IRC server on 6667 and a web proxy on 8080 (port classes
/// are bins of 100, so decoding a bin uniformly gives the 6667 service any of 6624-6723), while ephemeral source
/// ports, each seen about once, stay spread over their bins. With `port_decoding: uniform` (STAN's decoding) the
/// same model gives 6667 about one flow in a hundred of its class.
#[test]
fn service_ports_above_1023_come_back_exactly() {
    use rand::{Rng, SeedableRng};
    use temponet::model::temponet::PortDecoding;
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut t = T0;
    let data: Vec<FlowRecord> = (0..1500)
        .map(|i| {
            t += rng.gen_range(100_000..5_000_000);
            let (dst, dport) = [("185.244.25.235", 6667), ("10.0.0.8", 8080)][i % 2];
            let sport = rng.gen_range(32768..61000);
            flow(
                t,
                "192.168.1.195",
                dst,
                proto::TCP,
                sport,
                dport,
                0x1b,
                12,
                9_000,
                800_000,
            )
        })
        .collect();
    let train_sports: HashSet<u16> = data.iter().map(|r| r.src_port).collect();
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 16;
    let share = |m: &Model| {
        let req = GenerateRequest::new(T0, GenLimit::Count(2000), 3, PairSource::Observed);
        let g = m.generate(&req, &mut |_| {}).unwrap();
        let (mut exact, mut in_class, mut reused) = (0usize, 0usize, 0usize);
        for r in &g.flows {
            for service in [6667, 8080] {
                if port_class(r.dst_port) == port_class(service) {
                    in_class += 1;
                    exact += (r.dst_port == service) as usize;
                }
            }
            reused += train_sports.contains(&r.src_port) as usize;
        }
        (
            exact as f64 / in_class.max(1) as f64,
            in_class,
            reused as f64 / g.flows.len() as f64,
        )
    };
    let m = fit(ModelKind::TempoNet, &cfg, &data, 1);
    let (exact, in_class, reused) = share(&m);
    eprintln!("as seen: exact service ports {exact:.4}, source ports reused {reused:.4}");
    // Truncated to the classes seen, every flow is in one of the two classes.
    assert_eq!(in_class, 2000);
    // Each service was seen 750 times: the unseen share is 1/751.
    assert!(exact > 0.99, "exact service ports: {exact}");
    // About 1,500 source ports over 28,232, each seen about once, about five per class of 100: a port drawn in
    // its class is one of them 2 % of the time from the counts and 5 % of the time uniformly (drawing only seen
    // ports would reuse them every time).
    assert!(reused < 0.15, "source ports reused from the data: {reused}");
    cfg.temponet.port_decoding = PortDecoding::Uniform;
    let m = fit(ModelKind::TempoNet, &cfg, &data, 1);
    let (exact, _, _) = share(&m);
    assert!(
        exact < 0.05,
        "uniform decoding, exact service ports: {exact}"
    );
}

/// (protocol, flags, destination port class, source port class) of a pair's flows.
type Habits = HashSet<(u8, u8, u16, u16)>;

/// What the data shows of one pair: its flows and its habits.
#[derive(Default)]
struct PairSeen {
    flows: usize,
    habits: Habits,
}

fn pairs_seen(data: &[FlowRecord]) -> HashMap<HostPair, PairSeen> {
    let mut pairs: HashMap<HostPair, PairSeen> = HashMap::new();
    for r in data {
        let p = pairs.entry(r.pair()).or_default();
        p.flows += 1;
        p.habits.insert((
            r.proto,
            r.flags.0,
            port_class(r.dst_port),
            port_class(r.src_port),
        ));
    }
    pairs
}

/// `r` is a kind of flow (protocol, flags) its pair had, with a destination port class (and, if `source_ports`,
/// a source port class) the pair had for that protocol.
fn assert_keeps_habits(h: &Habits, r: &FlowRecord, source_ports: bool) {
    let pair = (r.src, r.dst);
    assert!(
        h.iter().any(|x| (x.0, x.1) == (r.proto, r.flags.0)),
        "a kind of flow {pair:?} never had: {r:?}"
    );
    assert!(
        h.iter()
            .any(|x| (x.0, x.2) == (r.proto, port_class(r.dst_port))),
        "a destination port class {pair:?} never had: {r:?}"
    );
    assert!(
        !source_ports
            || h.iter()
                .any(|x| (x.0, x.3) == (r.proto, port_class(r.src_port))),
        "a source port class {pair:?} never had: {r:?}"
    );
}

/// Observed pairs keep their habits: trained on a bot, a poll and background pairs with a flood at the end (4,000
/// flows a millisecond apart from one source port, no flags), every generated flow of a pair with 20 or more
/// training flows is a kind of flow (protocol, flags) and has port classes that pair had. The network alone lets
/// the flood's flows into other pairs' lanes.
#[test]
fn observed_pairs_keep_their_habits() {
    let mut data = rhythm_stream(8);
    let end = data.last().unwrap().start_us;
    add_flood(&mut data, end - 4_000_000);
    let pairs = pairs_seen(&data);
    let g = three_hours_after(&data, end, PairSource::Observed);
    let mut checked = 0;
    for r in &g.flows {
        let Some(p) = pairs.get(&r.pair()).filter(|p| p.flows >= 20) else {
            continue;
        };
        checked += 1;
        assert_keeps_habits(&p.habits, r, true);
    }
    assert!(checked > 300, "{checked} flows of pairs with habits");
}

/// Streaming twins (`GenSession::join_session`, what the pipeline's generator starts for each real session) of
/// observed pairs keep the pairs' habits. Trained on the bot, the poll and background pairs with a flood at the
/// end, twins of the pairs with habits join every ten minutes for three hours, half after a real flow (`before`),
/// half without one (a pair's first session in a stream): every flow is a kind of flow and has a destination port
/// class its pair had. Before, twins had no habits: on IoT-23 34-1 a streaming run from a trained model wrote
/// 13,000-72,000 flows for 4,500 real, the bot's twin mostly the flood's flag-less TCP/80 flows.
#[test]
fn twins_keep_the_habits_of_their_pairs() {
    let mut data = rhythm_stream(8);
    let end = data.last().unwrap().start_us;
    add_flood(&mut data, end - 4_000_000);
    let end = end + 1;
    let pairs = pairs_seen(&data);
    let last: HashMap<HostPair, &FlowRecord> = data.iter().map(|r| (r.pair(), r)).collect();
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 16;
    let m = fit(ModelKind::TempoNet, &cfg, &data, 1);
    let mut s = m.open_session(3, PairSource::Observed);
    s.begin(end);
    let flood_dst: std::net::IpAddr = FLOOD_DST.parse().unwrap();
    let regular: Vec<&FlowRecord> = pairs
        .iter()
        .filter(|(k, p)| p.flows >= 20 && p.habits.len() < 64 && k.dst != flood_dst)
        .map(|(k, _)| last[k])
        .collect();
    assert!(regular.len() >= 2, "{} regular pairs", regular.len());
    let mut flows = Vec::new();
    for k in 0..18i64 {
        let at = end + k * 600_000_000;
        for (j, r) in regular.iter().enumerate() {
            let before = ((j as i64 + k) % 2 == 0).then_some((*r, None));
            s.join_session(&m, r.pair(), before, at);
        }
        s.advance(&m, at + 600_000_000, &mut flows).unwrap();
    }
    for r in &flows {
        assert_keeps_habits(&pairs[&r.pair()].habits, r, false);
    }
    assert!(
        flows.len() > 300,
        "{} flows of twins with habits",
        flows.len()
    );
}

/// New pairs stand in for the observed lanes whose places they take in a replayed group of session starts, and
/// keep those lanes' habits and session lengths: trained on the bot, the poll and background pairs with a flood in
/// the middle, three synthetic hours hold about what three real hours held. Without that, new pairs' lanes fell
/// into the flood and ran it up to the global session guard (on IoT-23 34-1: 68,000 flows for 4,629 real).
#[test]
fn new_pairs_keep_the_habits_of_the_lanes_they_stand_in_for() {
    let mut data = rhythm_stream(8);
    add_flood(&mut data, T0 + 3 * 3_600_000_000);
    let end = data.last().unwrap().start_us;
    // Flows of three real hours, the flood left out.
    let per_3h = (data.len() - FLOOD_FLOWS) / 2;
    let g = three_hours_after(&data, end, PairSource::Synthetic);
    let flood = g
        .flows
        .iter()
        .filter(|r| r.proto == proto::TCP && r.flags.0 == 0 && r.src_port == 65279)
        .count();
    eprintln!(
        "{} synthetic flows in three hours ({per_3h} real without the flood), {flood} flood flows, {} sessions guarded",
        g.flows.len(),
        g.sessions_guarded
    );
    assert!(g.flows.len() > per_3h / 3, "{} flows", g.flows.len());
    // Without stand-ins: 4,857 flows, 579 of them the flood's, no session guarded. With them 2,010-3,037 and 2-9
    // over four runs (training on parallel test threads is not bit-reproducible; a few lanes draw a flood flow or
    // two before their guard ends them). Which groups are replayed depends on
    // the seed and the data only; this span replays none of the flood's own (a lane standing in for the flood may
    // run it), so the flood flows here are all strays.
    assert!(g.flows.len() < 3 * per_3h, "{} flows", g.flows.len());
    assert!(flood < 200, "{flood} flood flows");
}

/// Three hours generated right after `end` by a small TempoNet fitted briefly on `data` (seed 5).
fn three_hours_after(
    data: &[FlowRecord],
    end: i64,
    pairs: PairSource,
) -> temponet::model::Generated {
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 16;
    let m = fit(ModelKind::TempoNet, &cfg, data, 1);
    let req = GenerateRequest::new(
        end + 1,
        temponet::model::GenLimit::SpanUs(3 * 3_600_000_000),
        5,
        pairs,
    );
    m.generate(&req, &mut |_| {}).unwrap()
}
