//! Generation sessions: advancing in pieces gives exactly the flows of one call (flow for flow, for every model and
//! both pair sources), every flow passes the compliance rules, and twins join, stay unique and can be dropped.

mod model_support;

use model_support::*;
use temponet::model::compliance::check;
use temponet::model::{ModelConfig, ModelKind, PairSource, StepEngine};
use temponet::record::FlowRecord;

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
fn twins_join_once_restart_after_silence_and_can_be_dropped() {
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
    let clock = last.start_us + 60_000_000;
    s.advance(&m, clock, &mut out).unwrap();
    // Joined after the clock passed the real flow: the twin's flows still start at or after the clock.
    let other = data.iter().find(|r| r.pair() != last.pair()).unwrap();
    let live_before = s.live();
    s.join(&m, other, None);
    assert_eq!(s.live(), live_before + 1);
    let before = out.len();
    let mut until = clock;
    // Twins end by their silence mark; a join restarts an ended twin.
    while s.ended() == 0 && until < clock + 200 * 3_600_000_000 {
        until += 3_600_000_000;
        s.advance(&m, until, &mut out).unwrap();
    }
    assert!(s.ended() > 0, "no twin went silent in 200 hours");
    assert!(out[before..].iter().all(|r| r.start_us >= clock));
    assert!(
        out.iter()
            .all(|r| r.pair() == last.pair() || r.pair() == other.pair())
    );
    let live = s.live();
    s.join(&m, last, None);
    s.join(&m, other, None);
    assert_eq!(s.live(), 2, "{live} live before the joins");
    s.drop_pair(&last.pair());
    assert_eq!(s.live(), 1);
    let before = out.len();
    s.advance(&m, until + 3_600_000_000, &mut out).unwrap();
    assert!(out[before..].iter().all(|r| r.pair() == other.pair()));
}

/// TempoNet's native CPU step and its libtorch step generate the same flows from the same seed. They differ in
/// float rounding only: continuous fields (times, durations, bytes) differ in their last digits, and a discrete
/// draw moves only when its uniform lands within rounding of a boundary (a lane that moves then goes its own
/// way). Nearly every flow must match, fields equal and continuous ones within 0.1 %; the native engine must repeat
/// itself exactly.
#[test]
fn native_and_libtorch_steps_generate_the_same_flows() {
    let data = mixed_stream(600, 9);
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 32;
    let mut m = fit(ModelKind::TempoNet, &cfg, &data, 1);
    let start = data.iter().map(|r| r.start_us).max().unwrap() + 1;
    let mut run = |engine: StepEngine| {
        m.set_step_engine(engine);
        let mut s = m.open_session(11, PairSource::Synthetic);
        s.begin(start);
        let mut out = Vec::new();
        s.advance(&m, start + 1_200_000_000, &mut out).unwrap();
        out
    };
    let native = run(StepEngine::Native);
    let torch = run(StepEngine::Libtorch);
    assert_eq!(
        native,
        run(StepEngine::Native),
        "native generation repeats itself"
    );
    assert!(native.len() > 200, "{} flows", native.len());
    let near = |a: i64, b: i64, scale: i64| (a - b).abs() as f64 <= 1e-3 * scale.abs() as f64 + 2.0;
    let same = |a: &FlowRecord, b: &FlowRecord| {
        (a.src, a.dst, a.proto, a.flags, a.packets) == (b.src, b.dst, b.proto, b.flags, b.packets)
            && (a.src_port == 0) == (b.src_port == 0)
            && near(a.start_us, b.start_us, a.start_us - start)
            && near(
                a.duration_us as i64,
                b.duration_us as i64,
                a.duration_us as i64,
            )
            && near(a.bytes as i64, b.bytes as i64, a.bytes as i64)
    };
    // Flows of each pair in order (a moved time can reorder flows of different pairs).
    let by_pair = |v: &[FlowRecord]| {
        let mut g: std::collections::BTreeMap<String, Vec<FlowRecord>> = Default::default();
        for r in v {
            g.entry(format!("{}>{}", r.src, r.dst))
                .or_default()
                .push(r.clone());
        }
        g
    };
    let (gn, gt) = (by_pair(&native), by_pair(&torch));
    let matched: usize = gn
        .iter()
        .map(|(k, a)| {
            gt.get(k).map_or(0, |b| {
                a.iter().zip(b).take_while(|(x, y)| same(x, y)).count()
            })
        })
        .sum();
    let share = matched as f64 / native.len().max(torch.len()) as f64;
    println!(
        "{} native flows, {} libtorch flows, {matched} matching ({:.2} %)",
        native.len(),
        torch.len(),
        100.0 * share
    );
    assert!(share > 0.95, "only {:.1} % match", 100.0 * share);
}

/// Observed pairs keep their own rhythm of sessions: a bot reconnecting 30-36 s after each session comes back
/// 30-36 s after each generated session (through the group process, a Poisson stream of starts, barely one pause in
/// seven would fall there), and a poll whose every session was one flow never runs a session past two flows
/// (its own longest, twice) even where the silence mark lets it go on. Advancing in pieces still gives the flows
/// of one call.
#[test]
fn observed_pairs_keep_their_rhythm() {
    use std::collections::HashMap;
    let data = rhythm_stream(4);
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 16;
    let start = data.iter().map(|r| r.start_us).max().unwrap() + 1;
    for kind in [ModelKind::TempoNet, ModelKind::Independent] {
        let m = fit(kind, &cfg, &data, 1);
        let silence = m.space().silence_us;
        assert!(
            (3_000_000..30_000_000).contains(&silence),
            "silence threshold {silence} µs: not between the stream's gaps and pauses"
        );
        let run = |pieces: i64| {
            let mut s = m.open_session(3, PairSource::Observed);
            s.begin(start);
            s.join_observed(&m, start);
            let mut out = Vec::new();
            for p in 1..=pieces {
                s.advance(&m, start + 6 * 3_600_000_000 * p / pieces, &mut out)
                    .unwrap();
            }
            out
        };
        let flows = run(1);
        assert_eq!(flows, run(7), "{kind}: advancing in pieces");
        let mut by_dst: HashMap<String, Vec<i64>> = HashMap::new();
        for r in flows.iter().filter(|r| r.src.to_string() == RHYTHM_SRC) {
            by_dst
                .entry(r.dst.to_string())
                .or_default()
                .push(r.start_us);
        }
        let gaps = |dst: &str| -> Vec<i64> {
            let t = &by_dst[dst];
            t.windows(2).map(|w| w[1] - w[0]).collect()
        };
        let pauses: Vec<i64> = gaps(RHYTHM_DST)
            .into_iter()
            .filter(|g| *g > silence)
            .collect();
        let kept = pauses
            .iter()
            .filter(|p| (29_000_000..=37_000_000).contains(*p))
            .count() as f64
            / pauses.len().max(1) as f64;
        eprintln!(
            "{kind}: {} bot pauses, {kept:.3} of them 29-37 s",
            pauses.len()
        );
        assert!(pauses.len() > 100, "{kind}: {} bot pauses", pauses.len());
        assert!(kept > 0.9, "{kind}: {kept:.3} of the bot's pauses 29-37 s");
        // Sessions of the poll: runs of flows within the silence threshold.
        let mut longest = 1;
        let mut run_len = 1;
        for g in gaps(POLL_DST) {
            run_len = if g <= silence { run_len + 1 } else { 1 };
            longest = longest.max(run_len);
        }
        assert!(
            by_dst[POLL_DST].len() >= 10,
            "{kind}: the poll came back {} times",
            by_dst[POLL_DST].len()
        );
        assert!(longest <= 2, "{kind}: a poll session of {longest} flows");
    }
}
