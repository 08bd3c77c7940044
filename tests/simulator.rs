//! The simulator's outputs have the properties its scenario configures (issue 6): seasonality, bursts, the role
//! and service mix, host-pair persistence, labelled attacks, determinism, validity, regime change, and a lossless
//! JSON lines round trip. Each test runs a small network for seconds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use temponet::FlowRecord;
use temponet::format::{FlowReader, FlowWriter, OutputFormat};
use temponet::record::proto;
use temponet::sim::network::Network;
use temponet::sim::scenario::Transport;
use temponet::sim::{AttackKind, RegimeChange, Scenario, SimConfig, Simulator};

const HOUR: i64 = 3_600_000_000;
/// Monday 2026-01-05 00:00:00 UTC.
const MONDAY: i64 = 1_767_571_200_000_000;

fn run(cfg: SimConfig) -> (Vec<FlowRecord>, HashMap<IpAddr, String>) {
    let sim = Simulator::new(cfg).expect("valid config");
    let roles = roles_by_addr(sim.network());
    (sim.collect(), roles)
}

fn roles_by_addr(net: &Network) -> HashMap<IpAddr, String> {
    let mut m = HashMap::new();
    for (i, h) in net.hosts().iter().enumerate() {
        let role = net.role_name(i as u32).to_string();
        m.insert(IpAddr::V4(h.v4), role.clone());
        if let Some(v6) = h.v6 {
            m.insert(IpAddr::V6(v6), role);
        }
    }
    m
}

/// What a monitor can tell a service by: transport and destination port (services sharing both, like `dns`
/// and `dns-recursive`, are one class).
fn class_of_spec(s: &temponet::sim::scenario::ServiceSpec) -> (Transport, u16) {
    (
        s.transport,
        if s.transport == Transport::Icmp {
            0
        } else {
            s.dst_port
        },
    )
}

fn class_of(r: &FlowRecord) -> (Transport, u16) {
    match r.proto {
        proto::TCP => (Transport::Tcp, r.dst_port),
        proto::UDP => (Transport::Udp, r.dst_port),
        proto::ICMP | proto::ICMPV6 => (Transport::Icmp, 0),
        p => panic!("unexpected protocol {p}: {r:?}"),
    }
}

fn is_benign(r: &FlowRecord) -> bool {
    r.label.as_deref() == Some("benign")
}

#[test]
fn seasonality_visible_in_hourly_counts() {
    // One week of a small office: workstation flows by hour of day and by weekday.
    let (flows, roles) = run(SimConfig::enterprise(20, MONDAY, 7 * 24 * HOUR, 11));
    let mut by_hour = [0u64; 24];
    let mut by_day = [0u64; 7];
    for r in flows
        .iter()
        .filter(|r| roles.get(&r.src).map(String::as_str) == Some("workstation"))
    {
        let h = (r.start_us - MONDAY) / HOUR;
        by_hour[(h % 24) as usize] += 1;
        by_day[(h / 24) as usize] += 1;
    }
    let office = by_hour[9..17].iter().sum::<u64>() as f64 / 8.0;
    let night = by_hour[0..6].iter().sum::<u64>() as f64 / 6.0;
    eprintln!("workstation flows per hour: office {office:.0}, night {night:.0}");
    // Configured multipliers: ~0.94 in office hours vs ~0.035 at night.
    assert!(
        office > 8.0 * night.max(1.0),
        "office hours {office:.0}/h vs night {night:.0}/h: {by_hour:?}"
    );
    let weekday = by_day[0..5].iter().sum::<u64>() as f64 / 5.0;
    let weekend = by_day[5..7].iter().sum::<u64>() as f64 / 2.0;
    eprintln!("workstation flows per day: weekday {weekday:.0}, weekend {weekend:.0}");
    // Configured 0.98 vs 0.125.
    assert!(
        weekday > 3.0 * weekend.max(1.0),
        "weekday {weekday:.0}/day vs weekend {weekend:.0}/day: {by_day:?}"
    );
}

/// Median over hosts with enough flows of the coefficient of variation of each host's inter-arrival gaps.
fn median_host_cv(flows: &[FlowRecord], roles: &HashMap<IpAddr, String>, role: &str) -> f64 {
    let mut times: HashMap<IpAddr, Vec<i64>> = HashMap::new();
    for r in flows
        .iter()
        .filter(|r| roles.get(&r.src).map(String::as_str) == Some(role))
    {
        // A dual-stack host sends from two addresses: key on its IPv4 address via the role table's host.
        times.entry(r.src).or_default().push(r.start_us);
    }
    let mut cvs: Vec<f64> = times
        .values()
        .filter(|t| t.len() > 50)
        .map(|t| {
            let gaps: Vec<f64> = t.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
            let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
            let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
            var.sqrt() / mean
        })
        .collect();
    assert!(cvs.len() >= 5, "too few busy hosts");
    cvs.sort_by(f64::total_cmp);
    cvs[cvs.len() / 2]
}

#[test]
fn bursts_make_inter_arrivals_clustered() {
    // Office hours only, IPv4 only (so a host is one address).
    let mut cfg = SimConfig::enterprise(40, MONDAY + 9 * HOUR, 6 * HOUR, 12);
    cfg.scenario.ipv6_preference = 0.0;
    let (flows, roles) = run(cfg.clone());
    let cv = median_host_cv(&flows, &roles, "workstation");
    eprintln!("median per-host CV: {cv:.2}");
    assert!(
        cv > 1.5,
        "median per-host inter-arrival CV {cv:.2}, expected clustered (> 1.5)"
    );

    // Control: no bursts, exponential gaps, flat seasonality = a Poisson process per host, CV ~ 1. Shows the
    // statistic tells the two apart.
    for role in cfg.scenario.roles.values_mut() {
        role.diurnal = vec![1.0; 24];
        role.weekly = vec![1.0; 7];
        role.interarrival_tail = None;
    }
    for s in cfg.scenario.services.values_mut() {
        s.burst.first = 0.0;
        s.burst.branching = 0.0;
    }
    let (flows, roles) = run(cfg);
    let cv = median_host_cv(&flows, &roles, "workstation");
    eprintln!("median per-host CV, Poisson control: {cv:.2}");
    assert!(
        (0.85..1.15).contains(&cv),
        "Poisson control CV {cv:.2}, expected ~1"
    );
}

#[test]
fn role_and_service_mix_match_the_scenario() {
    let cfg = SimConfig::enterprise(100, MONDAY, 24 * HOUR, 13);
    let scenario = cfg.scenario.clone();
    let sim = Simulator::new(cfg).unwrap();
    let net = sim.network();
    // Host counts: max(min_count, round(share * 100)).
    let count = |role: &str| net.hosts_of_role(role).len();
    assert_eq!(
        (
            count("workstation"),
            count("server"),
            count("printer"),
            count("iot"),
            count("external")
        ),
        (70, 8, 4, 18, 300)
    );
    // Address plan: private ranges inside, public outside.
    for (i, h) in net.hosts().iter().enumerate() {
        let o = h.v4.octets();
        match net.role_name(i as u32) {
            "workstation" => assert!(o[0] == 10 && (o[1] == 20 || o[1] == 21), "{h:?}"),
            "server" => assert!(o[0] == 172 && o[1] == 16, "{h:?}"),
            "printer" | "iot" => assert!(o[0] == 192 && o[1] == 168, "{h:?}"),
            "external" => assert!(
                !h.v4.is_private() && !h.v4.is_loopback() && !h.v4.is_unspecified(),
                "{h:?}"
            ),
            other => panic!("unexpected role {other}"),
        }
        if let Some(v6) = h.v6 {
            let public = v6.segments()[0] & 0xfe00 != 0xfc00;
            assert_eq!(public, net.role_name(i as u32) == "external", "{v6}");
        }
    }
    let roles = roles_by_addr(net);
    let flows: Vec<FlowRecord> = sim.collect();
    assert!(
        flows.iter().any(|r| r.src.is_ipv6()) && flows.iter().any(|r| r.src.is_ipv4()),
        "IPv4 and IPv6 both present"
    );

    // Service mix of the flows each role starts: session weight x expected flows per session (Hawkes cluster size).
    for role in ["workstation", "server", "iot"] {
        let mix = &scenario.roles[role].services;
        let expected_total: f64 = mix
            .iter()
            .map(|(s, w)| w * scenario.flows_per_session(s))
            .sum();
        let mut expected: BTreeMap<(Transport, u16), f64> = BTreeMap::new();
        for (s, w) in mix {
            *expected
                .entry(class_of_spec(&scenario.services[s]))
                .or_default() += w * scenario.flows_per_session(s) / expected_total;
        }
        let mut seen: BTreeMap<(Transport, u16), u64> = BTreeMap::new();
        let mut n = 0u64;
        for r in flows
            .iter()
            .filter(|r| roles.get(&r.src).map(String::as_str) == Some(role))
        {
            *seen.entry(class_of(r)).or_default() += 1;
            n += 1;
        }
        assert!(n > 5_000, "{role}: only {n} flows");
        for (class, expected) in &expected {
            let observed = *seen.get(class).unwrap_or(&0) as f64 / n as f64;
            eprintln!("{role}/{class:?}: observed {observed:.3}, scenario {expected:.3}");
            assert!(
                (observed - expected).abs() <= 0.15 * expected + 0.005,
                "{role}/{class:?}: observed share {observed:.3}, scenario says {expected:.3}"
            );
        }
        for class in seen.keys() {
            assert!(
                expected.contains_key(class),
                "{role} used {class:?}, not in its mix"
            );
        }
    }

    // Host-pair persistence: a workstation's DNS goes to at most 2 resolvers (favourites = 2, no explore), and
    // its 20 favourite HTTPS peers carry nearly all its HTTPS flows (explore = 5%).
    let mut dns_peers: HashMap<IpAddr, HashSet<IpAddr>> = HashMap::new();
    let mut https_peers: HashMap<IpAddr, HashMap<IpAddr, u64>> = HashMap::new();
    for r in flows
        .iter()
        .filter(|r| r.src.is_ipv4() && roles.get(&r.src).map(String::as_str) == Some("workstation"))
    {
        match class_of(r) {
            (Transport::Udp, 53) => {
                dns_peers.entry(r.src).or_default().insert(r.dst);
            }
            (Transport::Tcp, 443) => {
                *https_peers
                    .entry(r.src)
                    .or_default()
                    .entry(r.dst)
                    .or_default() += 1
            }
            _ => {}
        }
    }
    assert!(
        dns_peers.values().all(|p| p.len() <= 2),
        "DNS peers per workstation must stay within its 2 favourites"
    );
    let (mut top, mut all) = (0u64, 0u64);
    for peers in https_peers.values() {
        let mut counts: Vec<u64> = peers.values().copied().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        top += counts.iter().take(20).sum::<u64>();
        all += counts.iter().sum::<u64>();
    }
    eprintln!("top-20 HTTPS peers carry {top} of {all}");
    assert!(
        top as f64 > 0.85 * all as f64,
        "top-20 HTTPS peers carry {top} of {all} flows"
    );
}

#[test]
fn attacks_are_present_and_labelled_only_when_asked() {
    let span = 2 * HOUR;
    let mut cfg = SimConfig::enterprise(30, MONDAY + 9 * HOUR, span, 4);
    let (quiet, _) = run(cfg.clone());
    assert!(
        !quiet.is_empty() && quiet.iter().all(is_benign),
        "no attacks asked: every flow benign"
    );

    cfg.attacks = AttackKind::ALL.to_vec();
    let scenario = cfg.scenario.clone();
    let sim = Simulator::new(cfg).unwrap();
    let net = sim.network();
    let ssh_servers: HashSet<IpAddr> = net
        .internal_providers_of(Transport::Tcp, 22)
        .into_iter()
        .map(|h| IpAddr::V4(net.host(h).v4))
        .collect();
    let roles = roles_by_addr(net);
    let flows: Vec<FlowRecord> = sim.collect();
    let mut by_label: BTreeMap<&str, Vec<&FlowRecord>> = BTreeMap::new();
    for r in &flows {
        by_label
            .entry(r.label.as_deref().expect("every flow labelled"))
            .or_default()
            .push(r);
    }
    assert_eq!(
        by_label.keys().copied().collect::<Vec<_>>(),
        ["beacon", "benign", "ddos", "portscan", "ssh-brute"]
    );
    let benign = by_label["benign"].len();
    assert!(
        benign.abs_diff(quiet.len()) < quiet.len() / 5,
        "background unchanged in size by attacks"
    );

    // Port scan: constant rate, one attacker, one victim, ports in order.
    let a = &scenario.attacks;
    let ps = a.portscan.as_ref().unwrap();
    let scan = &by_label["portscan"];
    let want = (ps.probes_per_s * ps.window.duration_s) as usize;
    assert!(
        scan.len().abs_diff(want) <= 1,
        "{} probes, expected {want}",
        scan.len()
    );
    assert_eq!(
        scan.iter()
            .map(|r| (r.src, r.dst))
            .collect::<HashSet<_>>()
            .len(),
        1
    );
    assert!(
        scan.windows(2)
            .all(|w| w[1].dst_port == w[0].dst_port + 1 || w[1].dst_port == ps.ports[0])
    );
    assert!(
        !roles.contains_key(&scan[0].src) && roles.contains_key(&scan[0].dst),
        "outside attacker, inside victim"
    );

    // SSH brute force: against a real SSH server, Poisson attempts.
    let ssh = &by_label["ssh-brute"];
    let sb = a.ssh_brute.as_ref().unwrap();
    let want = sb.window.duration_s / sb.mean_interval_s;
    assert!(
        (ssh.len() as f64 - want).abs() < 5.0 * want.sqrt(),
        "{} attempts, expected ~{want}",
        ssh.len()
    );
    assert!(
        ssh.iter()
            .all(|r| r.dst_port == 22 && r.is_tcp() && ssh_servers.contains(&r.dst))
    );

    // DDoS: many bots, one target, single SYN packets.
    let dd = &by_label["ddos"];
    let d = a.ddos.as_ref().unwrap();
    let want = d.flows_per_s * d.window.duration_s;
    assert!(
        (dd.len() as f64 - want).abs() < 5.0 * want.sqrt(),
        "{} ddos flows, expected ~{want}",
        dd.len()
    );
    assert_eq!(dd.iter().map(|r| r.dst).collect::<HashSet<_>>().len(), 1);
    assert!(dd.iter().map(|r| r.src).collect::<HashSet<_>>().len() > d.bots / 2);
    assert!(
        dd.iter()
            .all(|r| r.packets == 1 && r.flags.bits() == 0x02 && r.dst_port == d.dst_port)
    );

    // Beacon: one infected workstation, period +- jitter.
    let bc = &by_label["beacon"];
    let b = a.beacon.as_ref().unwrap();
    assert_eq!(
        roles.get(&bc[0].src).map(String::as_str),
        Some("workstation")
    );
    assert!(bc.len() > 100, "{} beacons", bc.len());
    for w in bc.windows(2) {
        let gap = (w[1].start_us - w[0].start_us) as f64 / 1e6;
        assert!(
            gap >= b.period_s * (1.0 - b.jitter) - 1e-3
                && gap <= b.period_s * (1.0 + b.jitter) + 1e-3,
            "gap {gap}"
        );
    }
}

fn all_features(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::enterprise(40, MONDAY + 6 * HOUR, 8 * HOUR, seed);
    cfg.attacks = AttackKind::ALL.to_vec();
    cfg.regime_change = Some(RegimeChange {
        after_us: 4 * HOUR,
        scenario: Scenario::named("enterprise-night-shift").unwrap(),
    });
    cfg
}

#[test]
fn same_seed_same_flows_other_seed_different() {
    let a: Vec<FlowRecord> = Simulator::new(all_features(9)).unwrap().collect();
    let b: Vec<FlowRecord> = Simulator::new(all_features(9)).unwrap().collect();
    let c: Vec<FlowRecord> = Simulator::new(all_features(10)).unwrap().collect();
    assert!(a.len() > 10_000);
    assert!(a == b, "same seed must give the same trace");
    assert!(
        a.len() != c.len() || a != c,
        "another seed must give another trace"
    );
    let overlap = a.iter().zip(&c).filter(|(x, y)| x == y).count();
    assert!(
        overlap < a.len() / 100,
        "{overlap} identical flows at the same positions"
    );
}

#[test]
fn every_flow_is_valid_and_in_time_order() {
    let cfg = all_features(5);
    let (from, until) = (cfg.start_us, cfg.start_us + cfg.span_us);
    let flows: Vec<FlowRecord> = Simulator::new(cfg).unwrap().collect();
    assert!(flows.len() > 10_000);
    let mut last = i64::MIN;
    for r in &flows {
        assert!(r.start_us >= last, "out of order: {r:?}");
        last = r.start_us;
        assert!(
            (from..until).contains(&r.start_us),
            "outside the window: {r:?}"
        );
        assert_valid(r);
        assert_ne!(r.src, r.dst, "self-talk: {r:?}");
        assert!(
            matches!(
                r.proto,
                proto::TCP | proto::UDP | proto::ICMP | proto::ICMPV6
            ),
            "{r:?}"
        );
        assert!(r.label.is_some());
    }
}

#[test]
fn regime_change_changes_the_mix_after_the_switch() {
    // Monday 06:00 to 22:00, switching to the night shift at 14:00.
    let mut cfg = SimConfig::enterprise(60, MONDAY + 6 * HOUR, 16 * HOUR, 16);
    let base = cfg.clone();
    let switch = cfg.start_us + 8 * HOUR;
    let night = Scenario::named("enterprise-night-shift").unwrap();
    cfg.regime_change = Some(RegimeChange {
        after_us: 8 * HOUR,
        scenario: night,
    });
    let sim = Simulator::new(cfg).unwrap();
    // Same address plan: the hosts keep their addresses.
    assert_eq!(
        sim.network()
            .hosts()
            .iter()
            .map(|h| h.v4)
            .collect::<Vec<_>>(),
        sim.second_network()
            .unwrap()
            .hosts()
            .iter()
            .map(|h| h.v4)
            .collect::<Vec<_>>()
    );
    let roles = roles_by_addr(sim.network());
    let flows: Vec<FlowRecord> = sim.collect();
    let admin_share = |flows: &[FlowRecord], before: bool| {
        let ws: Vec<&FlowRecord> = flows
            .iter()
            .filter(|r| {
                (r.start_us < switch) == before
                    && roles.get(&r.src).map(String::as_str) == Some("workstation")
            })
            .collect();
        let admin = ws
            .iter()
            .filter(|r| r.is_tcp() && (r.dst_port == 22 || r.dst_port == 445))
            .count();
        (admin as f64 / ws.len() as f64, ws.len())
    };
    let (before, n_before) = admin_share(&flows, true);
    let (after, n_after) = admin_share(&flows, false);
    assert!(n_before > 1_000 && n_after > 1_000);
    eprintln!("SSH+SMB share of workstation flows: {before:.3} before, {after:.3} after");
    assert!(
        after > 3.0 * before,
        "SSH+SMB share of workstation flows {before:.3} before vs {after:.3} after the switch"
    );

    // Timing drifts too: evening hours (19-22) are busy under the night shift, quiet in the office regime.
    let evening = |flows: &[FlowRecord]| {
        flows
            .iter()
            .filter(|r| {
                r.start_us >= MONDAY + 19 * HOUR
                    && roles.get(&r.src).map(String::as_str) == Some("workstation")
            })
            .count()
    };
    let (unchanged, _) = run(base);
    eprintln!(
        "evening workstation flows: {} with drift, {} without",
        evening(&flows),
        evening(&unchanged)
    );
    assert!(
        evening(&flows) > 2 * evening(&unchanged),
        "evening flows {} with drift vs {} without",
        evening(&flows),
        evening(&unchanged)
    );
    // And before the switch the two runs are the same traffic.
    let prefix = |f: &[FlowRecord]| {
        f.iter()
            .filter(|r| r.start_us < switch)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        prefix(&flows) == prefix(&unchanged),
        "before the switch the regime change must not alter anything"
    );
}

#[test]
fn jsonl_round_trip_is_lossless() {
    let flows: Vec<FlowRecord> = Simulator::new(all_features(8))
        .unwrap()
        .take(20_000)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.jsonl");
    let mut w = FlowWriter::new(
        std::io::BufWriter::new(std::fs::File::create(&path).unwrap()),
        OutputFormat::Jsonl,
    )
    .unwrap();
    for r in &flows {
        w.write(r).unwrap();
    }
    w.finish().unwrap();
    let back: Vec<FlowRecord> = FlowReader::open(&path)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(back.len(), flows.len());
    assert!(back == flows, "records read back differ from those written");
}

#[test]
fn scenarios_load_by_name_and_path_and_bad_ones_are_explained() {
    for name in Scenario::names() {
        let s = Scenario::named(name).unwrap();
        assert_eq!(s.name, name);
    }
    assert!(
        Scenario::named("nope")
            .unwrap_err()
            .to_string()
            .contains("enterprise")
    );
    let dir = tempfile::tempdir().unwrap();
    let text = include_str!("../scenarios/enterprise.toml");
    let good = dir.path().join("mine.toml");
    std::fs::write(
        &good,
        text.replace("sessions_per_hour = 30.0", "sessions_per_hour = 5.0"),
    )
    .unwrap();
    let s = Scenario::resolve(good.to_str().unwrap()).unwrap();
    assert_eq!(s.roles["workstation"].sessions_per_hour, 5.0);
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        text.replace(
            "weekly = [1.0, 1.0, 1.0, 1.0, 0.9, 0.15, 0.1]",
            "weekly = [1.0]",
        ),
    )
    .unwrap();
    let e = Scenario::load(&bad).unwrap_err().to_string();
    assert!(
        e.contains("roles.workstation") && e.contains("weekly"),
        "{e}"
    );
    let bad = dir.path().join("bad2.toml");
    std::fs::write(
        &bad,
        text.replace(
            "transport = \"icmp\"",
            "transport = \"udp\"\ndst_port = 7\nflags = [{ flags = \"......S.\", weight = 1.0 }]",
        ),
    )
    .unwrap();
    let e = Scenario::load(&bad).unwrap_err().to_string();
    assert!(e.contains("services.icmp") && e.contains("non-TCP"), "{e}");
}

#[test]
fn simulator_is_a_send_stream() {
    fn assert_send<T: Send + Iterator<Item = FlowRecord>>(_: &T) {}
    let sim = Simulator::new(SimConfig::enterprise(5, MONDAY, HOUR, 1)).unwrap();
    assert_send(&sim);
    // Streaming: the first flows of a month of a 2000-host network come without generating the month.
    let first: Vec<FlowRecord> =
        Simulator::new(SimConfig::enterprise(2_000, MONDAY, 30 * 24 * HOUR, 1))
            .unwrap()
            .take(1000)
            .collect();
    assert_eq!(first.len(), 1000);
    assert!(first.last().unwrap().start_us < MONDAY + HOUR);
}

/// The validity rules, for any flow the simulator emits.
fn assert_valid(r: &FlowRecord) {
    assert!(r.packets >= 1, "{r:?}");
    let min = proto::min_packet_bytes(r.proto);
    assert!(
        r.bytes >= min * r.packets && r.bytes <= 65_535 * r.packets,
        "bytes out of bounds: {r:?}"
    );
    assert!(
        r.proto == proto::TCP || r.flags.is_empty(),
        "flags on non-TCP: {r:?}"
    );
    assert!(
        proto::has_ports(r.proto) || (r.src_port == 0 && r.dst_port == 0),
        "ports on ICMP: {r:?}"
    );
    assert_eq!(
        r.packets == 1,
        r.duration_us == 0,
        "duration 0 iff single packet: {r:?}"
    );
    assert_eq!(r.src.is_ipv4(), r.dst.is_ipv4(), "mixed IP versions: {r:?}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Any size, window, time zone, seed, attack set and switch time: valid flows, in order, inside the window.
    #[test]
    fn any_settings_give_valid_ordered_flows(
        hosts in 1usize..40,
        start_h in 0i64..(24 * 7),
        span_min in 10i64..360,
        seed in proptest::prelude::any::<u64>(),
        offset in -12i32..=12,
        attacks in proptest::collection::vec(0usize..4, 0..4),
        switch in proptest::option::of(1u32..100),
    ) {
        let span = span_min * 60_000_000;
        let mut cfg = SimConfig::enterprise(hosts, MONDAY + start_h * HOUR, span, seed);
        cfg.scenario.utc_offset_hours = offset;
        cfg.attacks = attacks.into_iter().map(|i| AttackKind::ALL[i]).collect();
        cfg.regime_change = switch.map(|pct| RegimeChange {
            after_us: span * pct as i64 / 100,
            scenario: Scenario::named("enterprise-night-shift").unwrap(),
        });
        let (from, until) = (cfg.start_us, cfg.start_us + span);
        let mut last = i64::MIN;
        for r in Simulator::new(cfg).unwrap() {
            assert!(r.start_us >= last && (from..until).contains(&r.start_us), "order/window: {r:?}");
            last = r.start_us;
            assert_valid(&r);
        }
    }
}
