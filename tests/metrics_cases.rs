//! Every metric on small cases computed by hand.

use std::collections::HashMap;
use temponet::metrics::distances::{emd, jsd, ks};
use temponet::metrics::dkc::{self, RuleContext};
use temponet::metrics::{coverage, port_class, port_class_label, privacy, temporal, utility};
use temponet::record::{FlowRecord, TcpFlags, proto};

#[allow(clippy::too_many_arguments)] // a flow literal: every field named at the call site's position
fn flow(
    start_s: f64,
    src: &str,
    dst: &str,
    sport: u16,
    dport: u16,
    p: u8,
    flags: u8,
    packets: u64,
    bytes: u64,
) -> FlowRecord {
    FlowRecord {
        start_us: (start_s * 1e6) as i64,
        duration_us: 1000,
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

fn tcp(packets: u64, bytes: u64) -> FlowRecord {
    flow(
        0.0,
        "10.0.0.1",
        "10.0.0.2",
        40000,
        80,
        proto::TCP,
        TcpFlags::SYN | TcpFlags::ACK,
        packets,
        bytes,
    )
}

const ACK: u8 = TcpFlags::ACK;

#[test]
fn emd_of_known_samples() {
    // A shift of every point by 5 moves all mass 5.
    assert!((emd(&[0.0, 1.0, 3.0], &[5.0, 6.0, 8.0]) - 5.0).abs() < 1e-12);
    // {0} against {1, 3}: half the mass moves 1, half moves 3.
    assert!((emd(&[0.0], &[1.0, 3.0]) - 2.0).abs() < 1e-12);
    // Order does not matter, symmetry holds.
    assert!(
        (emd(&[3.0, 1.0, 0.0], &[8.0, 5.0, 6.0]) - emd(&[5.0, 6.0, 8.0], &[0.0, 1.0, 3.0])).abs()
            < 1e-12
    );
    assert!(emd(&[], &[1.0]).is_nan());
}

#[test]
fn ks_of_known_samples() {
    // F_a - F_b is largest on [2, 3): 0.5 - 0.
    assert!((ks(&[1.0, 2.0, 3.0, 4.0], &[3.0, 4.0, 5.0, 6.0]) - 0.5).abs() < 1e-12);
    assert!((ks(&[1.0], &[2.0]) - 1.0).abs() < 1e-12);
    assert_eq!(ks(&[1.0, 2.0], &[2.0, 1.0]), 0.0);
}

#[test]
fn jsd_of_known_distributions() {
    let m = |v: &[(&str, u64)]| {
        v.iter()
            .map(|(k, c)| (k.to_string(), *c))
            .collect::<HashMap<String, u64>>()
    };
    assert!(
        (jsd(&m(&[("a", 3)]), &m(&[("b", 7)])) - 1.0).abs() < 1e-12,
        "disjoint supports give 1"
    );
    assert!(
        jsd(&m(&[("a", 1), ("b", 3)]), &m(&[("a", 2), ("b", 6)])).abs() < 1e-12,
        "same proportions give 0"
    );
    // P = (1/2, 1/2), Q = (1, 0), M = (3/4, 1/4):
    // JSD = 1/2 [1/2 log2(2/3) + 1/2 log2 2] + 1/2 log2(4/3) = 0.311278...
    let expected = 0.5 * (0.5 * (2.0f64 / 3.0).log2() + 0.5) + 0.5 * (4.0f64 / 3.0).log2();
    let got = jsd(&m(&[("a", 5), ("b", 5)]), &m(&[("a", 9)]));
    assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    assert!((expected - 0.311278).abs() < 1e-6);
}

#[test]
fn stan_port_classes() {
    assert_eq!(port_class(80), 80);
    assert_eq!(port_class(1023), 1023);
    assert_eq!(port_class(1024), port_class(1099));
    assert_ne!(port_class(1099), port_class(1100));
    assert_ne!(
        port_class(1000),
        port_class(1050),
        "exact port 1000 and bin 1024-1099 are distinct classes"
    );
    assert_eq!(port_class_label(port_class(1050)), "1024-1099");
    assert_eq!(port_class_label(port_class(49152)), "49100-49199");
    assert_eq!(port_class_label(port_class(65535)), "65500-65535");
    assert_eq!(port_class_label(port_class(22)), "22");
}

#[test]
fn each_dkc_rule_true_false_and_not_applicable() {
    let c = RuleContext::default();
    let quic = RuleContext { quic_in_real: true };
    let mut f = tcp(3, 180);
    assert_eq!(dkc::valid_addresses(&f, &c), Some(true));
    f.src = "224.0.0.5".parse().unwrap();
    assert_eq!(
        dkc::valid_addresses(&f, &c),
        Some(false),
        "multicast source"
    );
    f.src = "255.255.255.255".parse().unwrap();
    assert_eq!(
        dkc::valid_addresses(&f, &c),
        Some(false),
        "broadcast source"
    );
    let mut f = tcp(3, 180);
    f.dst = "0.1.2.3".parse().unwrap();
    assert_eq!(dkc::valid_addresses(&f, &c), Some(false), "destination 0.x");

    assert_eq!(dkc::min_bytes_packets(&tcp(1, 40), &c), Some(true));
    assert_eq!(dkc::min_bytes_packets(&tcp(1, 39), &c), Some(false));
    assert_eq!(
        dkc::min_bytes_packets(&tcp(0, 0), &c),
        Some(false),
        "a flow has a packet"
    );

    assert_eq!(dkc::bytes_per_packet(&tcp(3, 120), &c), Some(true));
    assert_eq!(dkc::bytes_per_packet(&tcp(3, 119), &c), Some(false));
    assert_eq!(dkc::bytes_per_packet(&tcp(1, 65_536), &c), Some(false));
    let udp = flow(0.0, "10.0.0.1", "10.0.0.2", 5000, 53, proto::UDP, 0, 2, 56);
    assert_eq!(dkc::bytes_per_packet(&udp, &c), Some(true));
    let udp_small = flow(0.0, "10.0.0.1", "10.0.0.2", 5000, 53, proto::UDP, 0, 2, 55);
    assert_eq!(dkc::bytes_per_packet(&udp_small, &c), Some(false));
    let icmp = flow(0.0, "10.0.0.1", "10.0.0.2", 0, 0, proto::ICMP, 0, 1, 84);
    assert_eq!(dkc::bytes_per_packet(&icmp, &c), None);
    assert_eq!(
        dkc::bytes_per_packet(&tcp(0, 0), &c),
        None,
        "zero-packet flows are rule 2's"
    );

    assert_eq!(dkc::flags_only_tcp(&tcp(3, 180), &c), None);
    assert_eq!(dkc::flags_only_tcp(&udp, &c), Some(true));
    let udp_ack = flow(
        0.0,
        "10.0.0.1",
        "10.0.0.2",
        5000,
        53,
        proto::UDP,
        ACK,
        2,
        56,
    );
    assert_eq!(dkc::flags_only_tcp(&udp_ack, &c), Some(false));

    assert_eq!(dkc::web_ports_tcp(&tcp(3, 180), &c), Some(true));
    assert_eq!(dkc::web_ports_tcp(&udp, &c), None);
    let udp443 = flow(
        0.0,
        "10.0.0.1",
        "10.0.0.2",
        5000,
        443,
        proto::UDP,
        0,
        2,
        2400,
    );
    assert_eq!(dkc::web_ports_tcp(&udp443, &c), Some(false));
    assert_eq!(
        dkc::web_ports_tcp(&udp443, &quic),
        Some(true),
        "QUIC in the real data"
    );
    let udp80 = flow(
        0.0,
        "10.0.0.1",
        "10.0.0.2",
        5000,
        80,
        proto::UDP,
        0,
        2,
        2400,
    );
    assert_eq!(
        dkc::web_ports_tcp(&udp80, &quic),
        Some(false),
        "QUIC is 443 only"
    );
    assert_eq!(RuleContext::from_real(std::slice::from_ref(&udp443)), quic);
    assert_eq!(RuleContext::from_real(std::slice::from_ref(&udp)), c);

    assert_eq!(dkc::portless_zero_ports(&icmp, &c), Some(true));
    let icmp_port = flow(0.0, "10.0.0.1", "10.0.0.2", 0, 771, proto::ICMP, 0, 1, 84);
    assert_eq!(dkc::portless_zero_ports(&icmp_port, &c), Some(false));
    assert_eq!(dkc::portless_zero_ports(&udp, &c), None);

    assert_eq!(dkc::nonnegative_duration(&tcp(3, 180), &c), Some(true));
    let mut neg = tcp(3, 180);
    neg.duration_us = (-5i64) as u64;
    assert_eq!(dkc::nonnegative_duration(&neg, &c), Some(false));
    let mut overflow = tcp(3, 180);
    overflow.start_us = i64::MAX - 10;
    overflow.duration_us = 11;
    assert_eq!(dkc::nonnegative_duration(&overflow, &c), Some(false));

    let mut one = tcp(1, 60);
    one.duration_us = 0;
    assert_eq!(dkc::single_packet(&one, &c), Some(true));
    one.duration_us = 5;
    assert_eq!(
        dkc::single_packet(&one, &c),
        Some(false),
        "one packet has no duration"
    );
    assert_eq!(dkc::single_packet(&tcp(2, 120), &c), None);

    let syn = |p| {
        flow(
            0.0,
            "10.0.0.1",
            "10.0.0.2",
            40000,
            23,
            proto::TCP,
            TcpFlags::SYN,
            p,
            40 * p,
        )
    };
    assert_eq!(dkc::syn_only_few_packets(&syn(3), &c), Some(true));
    assert_eq!(dkc::syn_only_few_packets(&syn(8), &c), Some(false));
    assert_eq!(
        dkc::syn_only_few_packets(&tcp(50, 5000), &c),
        None,
        "SYN+ACK is not SYN-only"
    );
}

#[test]
fn dkc_pass_percent_side_by_side() {
    let real = vec![tcp(3, 180), tcp(0, 0), tcp(2, 100), tcp(1, 40)];
    let synth = vec![tcp(3, 180), tcp(3, 10)];
    let res = dkc::check(&real, &synth);
    let r2 = res.iter().find(|r| r.rule == "min_bytes_packets").unwrap();
    assert_eq!((r2.real.applicable, r2.real.passed), (4, 3));
    assert!((r2.real_pass_percent - 75.0).abs() < 1e-12);
    assert!((r2.synthetic_pass_percent - 50.0).abs() < 1e-12);
    let r6 = res
        .iter()
        .find(|r| r.rule == "portless_zero_ports")
        .unwrap();
    assert!(
        r6.real_pass_percent.is_nan(),
        "no portless flow: undefined, not 100 %"
    );
}

#[test]
fn coverage_of_known_sets() {
    let a = flow(
        0.0,
        "10.0.0.1",
        "10.0.0.2",
        40000,
        80,
        proto::TCP,
        ACK,
        3,
        180,
    );
    let b = flow(
        1.0,
        "10.0.0.1",
        "10.0.0.3",
        40000,
        443,
        proto::TCP,
        ACK,
        3,
        180,
    );
    let c = flow(2.0, "10.0.0.4", "10.0.0.2", 5353, 53, proto::UDP, 0, 1, 60);
    let d = flow(3.0, "10.0.0.4", "10.0.0.5", 0, 0, proto::ICMP, 0, 1, 60);
    // Same pattern as a (port 8080 is not 80, but 40001 vs 40000 source port does not matter).
    let a2 = flow(
        4.0,
        "10.0.0.1",
        "10.0.0.2",
        40001,
        80,
        proto::TCP,
        ACK,
        9,
        900,
    );
    let e = flow(
        5.0,
        "10.0.0.9",
        "10.0.0.2",
        40000,
        22,
        proto::TCP,
        ACK,
        3,
        180,
    );
    let cov = coverage::coverage(&[a, b.clone(), c, d], &[a2, b, e.clone(), e]);
    assert_eq!((cov.real_patterns, cov.synthetic_patterns), (4, 3));
    assert!(
        (cov.pattern_coverage - 0.5).abs() < 1e-12,
        "a and b of a, b, c, d"
    );
    assert!(
        (cov.novel_pattern_share - 1.0 / 3.0).abs() < 1e-12,
        "e of a, b, e"
    );
    assert!(
        (cov.novel_flow_share - 0.5).abs() < 1e-12,
        "two e flows of four"
    );
    assert_eq!((cov.real_host_pairs, cov.synthetic_host_pairs), (4, 3));
    assert!(
        (cov.host_pair_coverage - 0.5).abs() < 1e-12,
        "1->2 and 1->3 of four pairs"
    );
}

#[test]
fn temporal_on_known_series() {
    let alt: Vec<f64> = (0..100).map(|i| (i % 2) as f64).collect();
    let acf = temporal::autocorrelation(&alt, 3);
    assert!(
        (acf[0] + 0.99).abs() < 1e-12,
        "lag 1 of 0,1,0,1.. is -(n-1)/n: {}",
        acf[0]
    );
    assert!((acf[1] - 0.98).abs() < 1e-12);
    assert!(
        temporal::autocorrelation(&[1.0; 10], 1)[0].is_nan(),
        "constant series"
    );
    // Evenly spaced flows: CV 0; Hurst of white noise near 0.5, of a trend near 1.
    let even: Vec<FlowRecord> = (0..50)
        .map(|i| {
            flow(
                i as f64,
                "10.0.0.1",
                "10.0.0.2",
                1,
                80,
                proto::TCP,
                ACK,
                3,
                180,
            )
        })
        .collect();
    assert!(temporal::burstiness_cv(&even).abs() < 1e-9);
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let noise: Vec<f64> = (0..20_000).map(|_| rng.gen_range(0.0..1.0)).collect();
    let h = temporal::hurst_aggregated_variance(&noise);
    assert!((h - 0.5).abs() < 0.08, "white noise H = {h}");
    let walk: Vec<f64> = noise
        .iter()
        .scan(0.0, |s, x| {
            *s += x - 0.5;
            Some(*s)
        })
        .collect();
    let hw = temporal::hurst_aggregated_variance(&walk);
    assert!(hw > 0.9, "a random walk is strongly persistent: H = {hw}");
    assert!(
        temporal::diurnal_profile(&even).is_none(),
        "50 s is not a day"
    );
    let days: Vec<FlowRecord> = (0..48 * 6)
        .map(|i| {
            flow(
                i as f64 * 600.0,
                "10.0.0.1",
                "10.0.0.2",
                1,
                80,
                proto::TCP,
                ACK,
                3,
                180,
            )
        })
        .collect();
    let prof = temporal::diurnal_profile(&days).unwrap();
    assert!(
        prof.iter().all(|&v| (v - 6.0).abs() < 1e-9),
        "6 flows in every hour: {prof:?}"
    );
}

#[test]
fn utility_scores_and_forests() {
    assert!((utility::macro_f1(&[0, 0, 1, 1], &[0, 0, 1, 1]) - 1.0).abs() < 1e-12);
    // Class 0: TP 1, FP 0, FN 1 -> 2/3; class 1: TP 2, FP 1, FN 0 -> 4/5.
    let f = utility::macro_f1(&[0, 0, 1, 1], &[0, 1, 1, 1]);
    assert!((f - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12, "{f}");
    assert!((utility::mse(&[1.0, 2.0], &[2.0, 4.0]) - 2.5).abs() < 1e-12);
    // A forest separates web (big TCP/80) from DNS (small UDP/53) flows perfectly.
    let web = |i: u64| {
        flow(
            i as f64,
            "10.0.0.1",
            "10.0.0.2",
            40000 + i as u16,
            80,
            proto::TCP,
            ACK,
            20 + i % 7,
            20_000 + 97 * i,
        )
    };
    let dns = |i: u64| {
        flow(
            i as f64 + 0.5,
            "10.0.0.1",
            "10.0.0.3",
            30000 + i as u16,
            53,
            proto::UDP,
            0,
            2,
            120 + i % 30,
        )
    };
    let set: Vec<FlowRecord> = (0..60).flat_map(|i| [web(i), dns(i)]).collect();
    let test: Vec<FlowRecord> = (100..130).flat_map(|i| [web(i), dns(i)]).collect();
    let s = utility::protocol_classification(&set, &set, &test).unwrap();
    assert!(
        (s.trtr - 1.0).abs() < 1e-12 && (s.ratio - 1.0).abs() < 1e-12,
        "{s:?}"
    );
    // Training on DNS only cannot recognise web traffic: TSTR falls.
    let only_dns: Vec<FlowRecord> = (0..60).map(dns).collect();
    let s2 = utility::protocol_classification(&set, &only_dns, &test).unwrap();
    assert!(s2.tstr < 0.5 && s2.ratio < 0.5, "{s2:?}");
    assert!(
        utility::is_benign_label(Some("BENIGN"))
            && utility::is_benign_label(None)
            && !utility::is_benign_label(Some("DDoS"))
    );
}

#[test]
fn privacy_on_known_sets() {
    let a = tcp(3, 180);
    let mut b = tcp(3, 180);
    b.dst_port = 443;
    let mut c = tcp(3, 180);
    c.bytes = 181;
    assert!(
        (privacy::exact_match_rate(&[a.clone(), b.clone()], std::slice::from_ref(&a)) - 0.5).abs()
            < 1e-12
    );
    assert_eq!(
        privacy::exact_match_rate(std::slice::from_ref(&c), std::slice::from_ref(&a)),
        0.0,
        "bytes differ"
    );
    assert!((privacy::auc_smaller_is_positive(&[1.0, 2.0], &[3.0, 4.0]) - 1.0).abs() < 1e-12);
    assert!((privacy::auc_smaller_is_positive(&[1.0, 3.0], &[2.0, 4.0]) - 0.75).abs() < 1e-12);
    assert!((privacy::auc_smaller_is_positive(&[1.0], &[1.0]) - 0.5).abs() < 1e-12);
    assert!((privacy::auc_smaller_is_positive(&[4.0, 5.0], &[1.0, 2.0])).abs() < 1e-12);
    // A copy of the training set is caught: every record matches, DCR 0.
    let train: Vec<FlowRecord> = (0..40u64)
        .map(|i| {
            flow(
                i as f64,
                "10.0.0.1",
                "10.0.0.2",
                40000 + i as u16,
                80,
                proto::TCP,
                ACK,
                3 + i,
                200 + 50 * i,
            )
        })
        .collect();
    let holdout: Vec<FlowRecord> = (0..40u64)
        .map(|i| {
            flow(
                i as f64,
                "10.0.0.7",
                "10.0.0.8",
                50000 + i as u16,
                80,
                proto::TCP,
                ACK,
                3 + i,
                210 + 50 * i,
            )
        })
        .collect();
    let p = privacy::privacy(&train, &holdout, &train).unwrap();
    assert_eq!(p.exact_match_rate, 1.0);
    assert_eq!(p.holdout_exact_match_rate, 0.0);
    assert_eq!(p.dcr_synthetic_median, 0.0);
    assert!(
        p.dcr_holdout_median > 2.0,
        "holdout differs in addresses and ports: {p:?}"
    );
    assert!(p.membership_auc > 0.99, "{p:?}");
    // The holdout as the "synthetic" set leaks nothing about membership of... itself is not training: AUC < 0.5.
    let q = privacy::privacy(&train, &holdout, &holdout).unwrap();
    assert_eq!(q.exact_match_rate, 0.0);
    assert!(q.membership_auc < 0.01, "{q:?}");
}
