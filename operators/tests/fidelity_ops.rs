//! The `fidelity` operator on flows whose distances are known, on one and two workers, and its figures and the
//! trainers' stats merged into `window_metrics`' JSON records.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use temponet::drift::{DetectorKind, DriftEvent, DriftFeature};
use temponet::{FlowRecord, TcpFlags};
use temponet_operators::EpochClock;
use temponet_operators::fidelity::{FidelityConfig, FidelityFigures, fidelity};
use temponet_operators::plugs::NoObserver;
use temponet_operators::window_metrics::{ModelWindowStats, WindowInput, window_metrics};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Inspect, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};

/// Event time of epoch 1000 (the clock's default epoch is one second).
const T0: i64 = 1_000_000_000;
const PAIRS: u32 = 8;

/// Flow `k` of pair `k % PAIRS` at `start_us`: pair-dependent ports, protocol, size and duration, so every
/// field's distribution is the same whenever the pairs are equally represented.
fn flow(k: u64, start_us: i64) -> FlowRecord {
    let p = (k % PAIRS as u64) as u32;
    let (proto, dst_port) = match p % 3 {
        0 => (6, 443),
        1 => (6, 80),
        _ => (17, 53),
    };
    FlowRecord {
        start_us,
        duration_us: 1000 * (1 + p as u64),
        src: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + p)),
        dst: IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + p % 2)),
        src_port: 40_000 + p as u16,
        dst_port,
        proto,
        flags: TcpFlags(if proto == 6 { 0x1b } else { 0 }),
        packets: 2 + p as u64,
        bytes: 100 * (2 + p as u64),
        label: None,
    }
}

/// `n` flows, one every `gap_us` from `from_us`.
fn regular(n: u64, from_us: i64, gap_us: i64) -> Vec<FlowRecord> {
    (0..n)
        .map(|k| flow(k, from_us + k as i64 * gap_us))
        .collect()
}

/// Runs `fidelity` on `workers` workers; worker `i` feeds the flows whose position is `i` modulo `workers` (as
/// sources spread over partitions would). With `lag`, every real flow is sent (and its input closed) before any
/// synthetic one. Returns the figures with the time they were emitted at.
fn run(
    workers: usize,
    lag: bool,
    real: Vec<FlowRecord>,
    synthetic: Vec<FlowRecord>,
    cfg: FidelityConfig,
) -> Vec<(u64, FidelityFigures)> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let out2 = out.clone();
    let clock = EpochClock::default();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let mut in_real = InputHandle::new();
        let mut in_syn = InputHandle::new();
        let probe = ProbeHandle::new();
        let out = out2.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            fidelity(
                in_real.to_stream(scope),
                in_syn.to_stream(scope),
                clock,
                cfg,
            )
            .inspect_core(move |ev| {
                if let Ok((stamp, data)) = ev {
                    let t = *stamp.least().expect("a time");
                    let mut o = out.lock().unwrap();
                    o.extend(data.iter().map(|f: &FidelityFigures| (t, f.clone())));
                }
            })
            .probe_with(&probe);
        });
        let mine = |v: &[FlowRecord]| {
            let mut m = std::collections::BTreeMap::<u64, Vec<FlowRecord>>::new();
            for (_, r) in v.iter().enumerate().filter(|(i, _)| i % peers == index) {
                m.entry(clock.epoch_of(r.start_us))
                    .or_default()
                    .push(r.clone());
            }
            m
        };
        let (mut real, mut syn) = (mine(&real), mine(&synthetic));
        if lag {
            // All real flows first (their input then past every epoch), with the synthetic input still at
            // epoch 0; then the synthetic flows.
            for (e, r) in std::mem::take(&mut real) {
                in_real.advance_to(e);
                r.into_iter().for_each(|f| in_real.send(f));
                worker.step();
            }
            in_real.advance_to(u64::MAX);
            (0..100).for_each(|_| {
                worker.step();
            });
        }
        let epochs: std::collections::BTreeSet<u64> =
            real.keys().chain(syn.keys()).copied().collect();
        for e in epochs {
            if !lag {
                in_real.advance_to(e);
                real.remove(&e)
                    .unwrap_or_default()
                    .into_iter()
                    .for_each(|f| in_real.send(f));
            }
            in_syn.advance_to(e);
            syn.remove(&e)
                .unwrap_or_default()
                .into_iter()
                .for_each(|f| in_syn.send(f));
            worker.step();
        }
        in_real.close();
        in_syn.close();
        worker.step_while(|| !probe.done());
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let mut v = out.lock().unwrap().clone();
    v.sort_by_key(|(_, f)| f.window);
    v
}

fn jsds(f: &FidelityFigures) -> [f64; 4] {
    [f.jsd_dst_port, f.jsd_proto, f.jsd_src_addr, f.jsd_dst_addr]
}

/// The same flows as real and synthetic, on two workers: every distance is 0, DKC rates agree, counts are the
/// window's and the slide's, and the empty windows between two bursts emit nothing. With a slide of two windows
/// the third window's figures cover the second and third only. Sending every real flow before any synthetic
/// one gives the same figures at the same times.
#[test]
fn same_flows_give_zero_distances() {
    // Six epochs of one flow per millisecond (three windows of two epochs), a gap of four epochs, then one
    // more window.
    let mut flows = regular(6000, T0, 1000);
    let later: Vec<FlowRecord> = regular(2000, T0 + 10_000_000, 1000);
    flows.extend(later);
    let cfg = FidelityConfig {
        window_epochs: 2,
        slide_windows: 2,
        ..Default::default()
    };
    let figs = run(2, false, flows.clone(), flows.clone(), cfg);
    // The synthetic side lagging behind changes nothing: windows wait for both frontiers.
    let lagged = run(2, true, flows.clone(), flows, cfg);
    let json = |v: &[(u64, FidelityFigures)]| serde_json::to_string(v).unwrap(); // NaN-safe comparison
    assert_eq!(json(&figs), json(&lagged));
    let windows: Vec<u64> = figs.iter().map(|(_, f)| f.window).collect();
    assert_eq!(
        windows,
        vec![500, 501, 502, 505],
        "no figures for empty windows"
    );
    let times: Vec<u64> = figs.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        times,
        vec![1000, 1002, 1004, 1010],
        "emitted at each window's earliest epoch"
    );
    let spans: Vec<(u64, u64, u64)> = figs
        .iter()
        .map(|(_, f)| (f.span_windows, f.span_real_flows, f.span_synthetic_flows))
        .collect();
    assert_eq!(
        spans,
        vec![
            (1, 2000, 2000),
            (2, 4000, 4000),
            (2, 4000, 4000),
            (1, 2000, 2000)
        ]
    );
    for (_, f) in &figs {
        assert_eq!((f.real_flows, f.synthetic_flows), (2000, 2000));
        assert_eq!(f.window_start_us, f.window as i64 * 2_000_000);
        assert_eq!(f.window_end_us, f.window_start_us + 2_000_000);
        assert_eq!(f.span_start_us, (f.window as i64 - 1) * 2_000_000);
        for d in [
            f.emd_log10_inter_arrival,
            f.emd_log10_pair_inter_arrival,
            f.emd_log10_duration,
            f.emd_log10_bytes,
        ] {
            assert_eq!(d, 0.0, "{f:?}");
        }
        assert_eq!(jsds(f), [0.0; 4]);
        assert!(f.categorical_exact && f.pairs_exact);
        assert!(!f.dkc.is_empty());
        for r in &f.dkc {
            assert!(
                r.real_pass_percent == r.synthetic_pass_percent
                    || (r.real_pass_percent.is_nan() && r.synthetic_pass_percent.is_nan()),
                "{r:?}"
            );
        }
        assert_eq!(f.coverage.host_pair_coverage, 1.0);
        assert_eq!(f.coverage.real_host_pairs, PAIRS as usize);
    }
}

/// Synthetic flows ten times sparser (one every 10 ms instead of 1 ms, same pairs in the same rotation): the
/// inter-arrival EMD is one decade, overall and within pairs, on two workers (each worker's gaps are scaled by
/// the same factor); every other field keeps its distribution.
#[test]
fn tenfold_inter_arrivals_give_one_decade() {
    let real = regular(6000, T0, 1000);
    let synthetic = regular(600, T0, 10_000);
    let figs = run(
        2,
        false,
        real,
        synthetic,
        FidelityConfig {
            window_epochs: 2,
            ..Default::default()
        },
    );
    assert_eq!(figs.len(), 3);
    for (_, f) in &figs {
        eprintln!(
            "window {}: EMD log10 inter-arrival {:.5}, per pair {:.5}",
            f.window, f.emd_log10_inter_arrival, f.emd_log10_pair_inter_arrival
        );
        assert_eq!((f.real_flows, f.synthetic_flows), (2000, 200));
        assert!((f.emd_log10_inter_arrival - 1.0).abs() < 0.01, "{f:?}");
        assert!((f.emd_log10_pair_inter_arrival - 1.0).abs() < 0.01, "{f:?}");
        assert_eq!(f.emd_log10_duration, 0.0);
        assert_eq!(f.emd_log10_bytes, 0.0);
        assert_eq!(jsds(f), [0.0; 4]);
    }
}

/// A deterministic irregular stream (gaps and pair choice from an LCG), synthetic differing from real: the
/// per-pair inter-arrival, duration, bytes, JSD, DKC and coverage figures and the counts are the same on one
/// and on two workers (pairs are routed whole, summaries merge exactly); only the global inter-arrival may
/// differ (per-worker gaps pooled).
#[test]
fn one_and_two_workers_agree() {
    let lcg = |seed: u64| {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            s >> 33
        }
    };
    let stream = |seed: u64, n: u64, mean_gap: u64| {
        let mut next = lcg(seed);
        let mut t = T0;
        (0..n)
            .map(|_| {
                t += (next() % (2 * mean_gap)) as i64;
                flow(next() % 37, t)
            })
            .collect::<Vec<_>>()
    };
    let real = stream(1, 5000, 1500);
    let synthetic = stream(2, 4000, 2000);
    let cfg = FidelityConfig {
        window_epochs: 3,
        slide_windows: 2,
        ..Default::default()
    };
    let one = run(1, false, real.clone(), synthetic.clone(), cfg);
    let two = run(2, true, real, synthetic, cfg);
    assert_eq!(one.len(), two.len());
    assert!(one.len() >= 3);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12 || (a.is_nan() && b.is_nan());
    for ((t1, a), (t2, b)) in one.iter().zip(&two) {
        eprintln!(
            "window {}: pair EMD {:.4} / {:.4}, global EMD {:.4} / {:.4}, JSD dst port {:.4}",
            a.window,
            a.emd_log10_pair_inter_arrival,
            b.emd_log10_pair_inter_arrival,
            a.emd_log10_inter_arrival,
            b.emd_log10_inter_arrival,
            a.jsd_dst_port
        );
        assert_eq!(t1, t2);
        assert_eq!(
            (
                a.window,
                a.real_flows,
                a.synthetic_flows,
                a.span_real_flows,
                a.span_synthetic_flows
            ),
            (
                b.window,
                b.real_flows,
                b.synthetic_flows,
                b.span_real_flows,
                b.span_synthetic_flows
            )
        );
        assert!(a.emd_log10_pair_inter_arrival > 0.01, "the streams differ");
        assert!(close(
            a.emd_log10_pair_inter_arrival,
            b.emd_log10_pair_inter_arrival
        ));
        assert!(close(a.emd_log10_duration, b.emd_log10_duration));
        assert!(close(a.emd_log10_bytes, b.emd_log10_bytes));
        for (x, y) in jsds(a).into_iter().zip(jsds(b)) {
            assert!(close(x, y), "{x} vs {y}");
        }
        assert!(a.jsd_src_addr > 0.0);
        assert_eq!(a.coverage, b.coverage);
        assert_eq!(a.dkc.len(), b.dkc.len());
        for (x, y) in a.dkc.iter().zip(&b.dkc) {
            assert!(close(x.real_pass_percent, y.real_pass_percent));
            assert!(close(x.synthetic_pass_percent, y.synthetic_pass_percent));
        }
    }
}

fn drift_event(index: u64) -> DriftEvent {
    DriftEvent {
        detector: DetectorKind::Adwin,
        feature: DriftFeature::Loss,
        index,
        statistic: 1.5,
        threshold: 1.2,
        increase: Some(true),
        width: Some(40),
        window_start_us: None,
        reference_start_us: None,
    }
}

/// `fidelity` and per-epoch trainer stats of two workers feed `window_metrics`: each window's JSON record holds
/// the fidelity object (absent in a window without flows), the largest model version and learning rate, summed
/// steps, events and synthetic flows, the event-weighted mean loss, each worker's latest live lanes summed, and
/// the drift events tagged with their worker; a window with neither has no model fields.
#[test]
fn window_metrics_merges_fidelity_and_model_stats() {
    let records = Arc::new(Mutex::new(Vec::<String>::new()));
    let rec2 = records.clone();
    let clock = EpochClock::default();
    timely::execute(timely::Config::process(2), move |worker| {
        let index = worker.index();
        let mut flows = InputHandle::new();
        let mut model = InputHandle::new();
        let probe = ProbeHandle::new();
        let rec = rec2.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let f = flows.to_stream(scope);
            let figs = fidelity(
                f.clone(),
                f,
                clock,
                FidelityConfig {
                    window_epochs: 2,
                    ..Default::default()
                },
            );
            let stats = figs
                .map(WindowInput::Fidelity)
                .concat(model.to_stream(scope).map(WindowInput::Model));
            window_metrics(stats, clock, 2, NoObserver)
                .inspect(move |s: &String| rec.lock().unwrap().push(s.clone()))
                .probe_with(&probe);
        });
        // Epochs 1000-1001 (window 500): flows and model stats. Epochs 1002-1003 (window 501): model stats only.
        // Epoch 1004 (window 502): flows only.
        for e in 1000..1005u64 {
            flows.advance_to(e);
            model.advance_to(e);
            if e != 1002 && e != 1003 && index == 0 {
                for f in regular(100, e as i64 * 1_000_000, 5000) {
                    flows.send(f);
                }
            }
            if e < 1004 {
                let w = index as u64;
                model.send(ModelWindowStats {
                    worker: index,
                    model_version: e - 1000 + w,
                    train_steps: 2,
                    events_trained: 10 * (w + 1),
                    events_scored: 10 * (w + 1),
                    mean_loss: 1.0 + w as f64,
                    synthetic_flows: 5,
                    live_lanes: e - 990 + 100 * w,
                    lane_sessions_total: e - 1000 + 10 * w,
                    sessions_guarded_total: w,
                    drift: if e == 1001 {
                        vec![drift_event(e)]
                    } else {
                        vec![]
                    },
                    learning_rate: 0.001 * (1 + w) as f64,
                });
            }
            worker.step();
        }
        flows.close();
        model.close();
        worker.step_while(|| !probe.done());
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let recs: Vec<serde_json::Value> = records
        .lock()
        .unwrap()
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    assert_eq!(recs.len(), 3, "{recs:?}");
    let (w0, w1, w2) = (&recs[0], &recs[1], &recs[2]);
    assert_eq!(w0["window_start_us"], 1_000_000_000i64);
    let f = &w0["fidelity"];
    assert_eq!(f["real_flows"], 200);
    assert_eq!(f["synthetic_flows"], 200);
    assert_eq!(f["emd_log10_inter_arrival"], 0.0);
    assert_eq!(f["jsd_dst_port"], 0.0);
    assert!(f["dkc"].is_array() && f["coverage"].is_object());
    assert!(w1.get("fidelity").is_none(), "no flows in window 501");
    assert_eq!(w2["fidelity"]["real_flows"], 100);
    // Window 500: epochs 1000 and 1001 of workers 0 and 1.
    assert_eq!(w0["model_version"], 2); // worker 1 at epoch 1001: 1 + 1
    assert_eq!(w0["train_steps"], 8);
    assert_eq!(w0["events_trained"], 60);
    // (2 * 10 * 1.0 + 2 * 20 * 2.0) / 60
    let mean_loss = w0["mean_loss"].as_f64().unwrap();
    assert!((mean_loss - 100.0 / 60.0).abs() < 1e-12, "{mean_loss}");
    assert_eq!(w0["synthetic_flows"], 20);
    // Latest (epoch 1001) lanes: 11 on worker 0, 111 on worker 1.
    assert_eq!(w0["live_lanes"], 122);
    assert_eq!(w0["lane_sessions_total"], 1 + 11);
    assert_eq!(w0["sessions_guarded_total"], 1);
    assert_eq!(w0["learning_rate"], 0.002);
    let drift = w0["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 2);
    let mut workers: Vec<u64> = drift
        .iter()
        .map(|d| d["worker"].as_u64().unwrap())
        .collect();
    workers.sort();
    assert_eq!(workers, vec![0, 1]);
    assert_eq!(drift[0]["detector"], "adwin");
    assert_eq!(drift[0]["index"], 1001);
    // Window 501: model stats only, no drift.
    assert_eq!(w1["model_version"], 4);
    assert_eq!(w1["live_lanes"], 13 + 113);
    assert_eq!(w1["drift"].as_array().unwrap().len(), 0);
    // Window 502: fidelity only, so no model fields; the pipeline fields are still there.
    assert!(w2.get("model_version").is_none() && w2.get("drift").is_none());
    assert!(w2.get("flows_in").is_some());
}
