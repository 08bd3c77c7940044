//! Every generated flow of every model passes the compliance rules, for observed and synthetic pairs, on data
//! that itself breaks them (ICMP with ports and flags, too few bytes), and after anonymisation.

mod model_support;

use model_support::*;
use temponet::model::anonymise::Anonymiser;
use temponet::model::compliance::check;
use temponet::model::{
    FitOptions, GenLimit, GenerateRequest, Model, ModelConfig, ModelKind, PairSource,
};

#[test]
fn every_generated_flow_is_valid() {
    let data = mixed_stream(600, 9);
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 32;
    cfg.stan.hidden = 32;
    for kind in [ModelKind::TempoNet, ModelKind::Stan, ModelKind::Independent] {
        let m = Model::fit_new(
            kind,
            &cfg,
            &data,
            &FitOptions {
                epochs: 2,
                ..Default::default()
            },
            &mut |_| {},
        )
        .unwrap();
        assert!(!m.space().single_packet_duration);
        for pairs in [PairSource::Observed, PairSource::Synthetic] {
            let req = GenerateRequest::new(T0, GenLimit::Count(1500), 3, pairs);
            let g = m.generate(&req, &mut |_| {}).unwrap();
            assert_eq!(g.flows.len(), 1500, "{kind} {pairs:?}");
            assert_eq!(
                g.repairs.sample_violations, 0,
                "{kind} {pairs:?}: {:?}",
                g.repairs
            );
            assert!(g.flows.windows(2).all(|w| w[0].start_us <= w[1].start_us));
            assert!(g.flows[0].start_us >= T0);
            // Durations are truncated at twice the longest training flow (no nine-year flows from a short capture).
            let longest = data.iter().map(|r| r.duration_us).max().unwrap();
            let max_generated = g.flows.iter().map(|r| r.duration_us).max().unwrap();
            assert!(
                max_generated <= 2 * longest + 1,
                "{kind} {pairs:?}: {max_generated} us > 2 x {longest} us"
            );
            let anon = Anonymiser::new("secret");
            let real_hosts: std::collections::HashSet<_> =
                data.iter().flat_map(|r| [r.src, r.dst]).collect();
            for mut r in g.flows {
                if let Err(v) = check(&r, false) {
                    panic!("{kind} {pairs:?}: invalid flow {r:?}: {v}");
                }
                anon.map_record(&mut r);
                check(&r, false).unwrap();
                assert!(
                    !real_hosts.contains(&r.src)
                        || !real_hosts.contains(&r.dst)
                        || pairs == PairSource::Synthetic
                );
            }
        }
    }
}
