//! Generation sessions: advancing in pieces gives exactly the flows of one call (flow for flow, for every model and
//! both pair sources), every flow passes the compliance rules, and twins join, stay unique and can be dropped.

mod model_support;

use model_support::*;
use temponet::model::compliance::check;
use temponet::model::{ModelConfig, ModelKind, PairSource};

#[test]
fn advancing_in_pieces_equals_one_call() {
    let data = mixed_stream(600, 9);
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 32;
    cfg.stan.hidden = 32;
    let start = data.iter().map(|r| r.start_us).max().unwrap() + 1;
    let span = 1_200_000_000i64;
    for kind in [ModelKind::TempoNet, ModelKind::Stan, ModelKind::Independent] {
        let m = fit(kind, &cfg, &data, 1);
        for pairs in [PairSource::Observed, PairSource::Synthetic] {
            let run = |pieces: i64| {
                let mut s = m.open_session(5, pairs);
                s.begin(start);
                if pairs == PairSource::Observed {
                    s.join_observed(&m, start);
                }
                let mut out = Vec::new();
                for p in 1..=pieces {
                    let before = out.len();
                    let until = start + span * p / pieces;
                    s.advance(&m, until, &mut out).unwrap();
                    assert!(out[before..].iter().all(|r| r.start_us < until));
                }
                assert_eq!(s.repairs().sample_violations, 0);
                out
            };
            let one = run(1);
            let ten = run(10);
            assert!(one.len() > 50, "{kind} {pairs:?}: {} flows", one.len());
            assert_eq!(one.len(), ten.len(), "{kind} {pairs:?}");
            for (i, (a, b)) in one.iter().zip(&ten).enumerate() {
                assert_eq!(a, b, "{kind} {pairs:?}: flow {i} differs");
            }
            assert!(one.windows(2).all(|w| w[0].start_us <= w[1].start_us));
            assert!(one.iter().all(|r| r.start_us >= start));
            for r in &one {
                check(r, m.space().single_packet_duration)
                    .unwrap_or_else(|v| panic!("{kind} {pairs:?}: invalid flow {r:?}: {v}"));
            }
        }
    }
}

#[test]
fn twins_join_once_and_can_be_dropped() {
    let data = mixed_stream(300, 4);
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 16;
    let m = fit(ModelKind::TempoNet, &cfg, &data, 1);
    let mut s = m.open_session(1, PairSource::Observed);
    let last = data.last().unwrap();
    s.join(&m, last, None);
    s.join(&m, last, None);
    assert_eq!(s.live(), 1);
    let mut out = Vec::new();
    // Joined after the clock passed the real flow: the twin's first flow still starts at or after the clock.
    s.advance(&m, last.start_us + 60_000_000, &mut out).unwrap();
    let clock = last.start_us + 60_000_000;
    let other = data.iter().find(|r| r.pair() != last.pair()).unwrap();
    s.join(&m, other, None);
    let before = out.len();
    s.advance(&m, clock + 3_600_000_000, &mut out).unwrap();
    assert!(out[before..].iter().all(|r| r.start_us >= clock));
    assert!(out.iter().any(|r| r.pair() == other.pair()));
    assert!(
        out.iter()
            .all(|r| r.pair() == last.pair() || r.pair() == other.pair())
    );
    assert_eq!(s.live(), 2);
    s.drop_pair(&last.pair());
    assert_eq!(s.live(), 1);
    let before = out.len();
    s.advance(&m, clock + 7_200_000_000, &mut out).unwrap();
    assert!(out[before..].iter().all(|r| r.pair() == other.pair()));
}
