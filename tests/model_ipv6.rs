//! IPv6 in synthetic pairs: trained on data where a third of the pairs are IPv6, every model's new pairs include
//! IPv6 pairs (both ends IPv6, on the training prefixes mostly), and every flow passes the compliance rules.

mod model_support;

use model_support::*;
use rand::{Rng, SeedableRng};
use std::net::IpAddr;
use temponet::model::compliance::check;
use temponet::model::{ModelConfig, ModelKind, PairSource};
use temponet::record::{FlowRecord, proto};

/// 60 pairs, every third IPv6 (2001:db8:1::/64 to 2001:db8:2::/64), bursts of TCP 443 flows over six hours.
fn mixed_family(seed: u64) -> Vec<FlowRecord> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for p in 0..60u32 {
        let (src, dst) = if p % 3 == 0 {
            (
                format!("2001:db8:1::{:x}", p + 1),
                format!("2001:db8:2::{:x}", p % 7 + 1),
            )
        } else {
            (
                format!("10.0.0.{}", p + 1),
                format!("93.184.0.{}", p % 7 + 1),
            )
        };
        let mut t = T0 + rng.gen_range(0..6 * 3_600_000_000i64);
        for _ in 0..rng.gen_range(3..12) {
            let pk = rng.gen_range(2..20);
            out.push(flow(
                t,
                &src,
                &dst,
                proto::TCP,
                rng.gen_range(40000..60000),
                443,
                0x1b,
                pk,
                pk * rng.gen_range(100..1400),
                rng.gen_range(1_000..500_000),
            ));
            t += rng.gen_range(100_000..4_000_000);
        }
    }
    out.sort_by_key(|r| r.start_us);
    out
}

#[test]
fn synthetic_pairs_include_ipv6() {
    let data = mixed_family(2);
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 16;
    cfg.stan.hidden = 16;
    for kind in [ModelKind::TempoNet, ModelKind::Stan, ModelKind::Independent] {
        let m = fit(kind, &cfg, &data, 1);
        let flows = span(&m, 12, PairSource::Synthetic);
        let v6: Vec<&FlowRecord> = flows.iter().filter(|r| r.src.is_ipv6()).collect();
        eprintln!("{kind}: {} flows, {} IPv6", flows.len(), v6.len());
        assert!(flows.len() > 50, "{kind}: {} flows", flows.len());
        assert!(!v6.is_empty(), "{kind}: no IPv6 flow");
        for r in &flows {
            assert_eq!(
                r.src.is_ipv6(),
                r.dst.is_ipv6(),
                "{kind}: mixed family {r:?}"
            );
            check(r, m.space().single_packet_duration).unwrap();
        }
        let on_prefix = v6
            .iter()
            .filter(|r| match r.src {
                IpAddr::V6(a) => a.segments()[..3] == [0x2001, 0xdb8, 1],
                _ => false,
            })
            .count();
        // The address model's first octet backs off to a smoothed marginal: a few draws may leave the prefix.
        assert!(
            on_prefix * 10 > v6.len() * 9,
            "{kind}: {on_prefix} of {} IPv6 flows on the training source prefix",
            v6.len()
        );
    }
}
