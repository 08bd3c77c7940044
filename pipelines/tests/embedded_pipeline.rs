//! The embedded default of `temponet run` (no Kafka): simulator or file in, model trained online, synthetic flows,
//! metrics and dead letters out to files.

use serde_json::Value;
use std::path::Path;
use temponet::FlowRecord;
use temponet::model::compliance;
use temponet::model::{FitOptions, Model, ModelConfig, ModelKind, PairSource};
use temponet::sim::{SimConfig, Simulator};
use temponet_operators::EpochClock;
use temponet_operators::file_source::Pace;
use temponet_operators::fresh_windows::FreshWindows;
use temponet_operators::generator::GeneratorConfig;
use temponet_operators::pair_history::HistoryConfig;
use temponet_operators::trainer::{ModelStart, TrainerConfig};
use temponet_pipelines::embedded::{self, EmbeddedConfig, EmbeddedInput, EmbeddedReport};
use temponet_pipelines::model_stages::ModelStagesConfig;

const START_US: i64 = 1_767_571_200_000_000; // 2026-01-05T00:00:00Z, a Monday

fn sim(hosts: usize, hours: i64, seed: u64) -> SimConfig {
    SimConfig::enterprise(hosts, START_US, hours * 3_600_000_000, seed)
}

fn small_temponet() -> ModelConfig {
    let mut c = ModelConfig::default();
    c.temponet.hidden = 32;
    c.temponet.embed = 24;
    c
}

fn config(
    input: EmbeddedInput,
    out: &Path,
    start: ModelStart,
    clock: EpochClock,
) -> EmbeddedConfig {
    let mut trainer = TrainerConfig::new(start);
    trainer.average_every = 5;
    EmbeddedConfig {
        input,
        pace: Pace::Max,
        clock,
        window_epochs: 10,
        lateness_epochs: 1,
        history: HistoryConfig::default(),
        windows: FreshWindows::default(),
        model: ModelStagesConfig {
            trainer,
            generator: GeneratorConfig {
                clock,
                seed: 1,
                pairs: PairSource::Observed,
                twins: true,
                observed_at_start: false,
                batch_epochs: 10,
            },
        },
        out_dir: out.to_path_buf(),
        save_input: true,
        status: false,
    }
}

fn warmup(kind: ModelKind) -> ModelStart {
    ModelStart::Warmup {
        kind,
        config: small_temponet(),
        min_flows: 1500,
        min_epochs: 10,
        fit_epochs: 2,
    }
}

fn read_flows(p: &Path) -> Vec<FlowRecord> {
    temponet::format::reader::read_all(&[p]).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn metrics(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a metrics line is JSON"))
        .collect()
}

fn run(cfg: EmbeddedConfig, workers: usize) -> EmbeddedReport {
    let timely = if workers == 1 {
        timely::Config::thread()
    } else {
        timely::Config::process(workers)
    };
    embedded::run(timely, cfg).expect("embedded run")
}

/// Simulated traffic through two workers: every real flow is read and saved, the model is built from the warm-up
/// and trained online (its version grows through averaging rounds), synthetic flows come out compliant, in time
/// order, after the warm-up, in a number of the same order as the real ones; metrics windows add up.
#[test]
fn simulator_through_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let sim_cfg = sim(12, 6, 3);
    let expected = Simulator::new(sim_cfg.clone()).unwrap().count() as u64;
    let clock = EpochClock::new(60_000_000);
    let cfg = config(
        EmbeddedInput::Simulator(Box::new(sim_cfg)),
        dir.path(),
        warmup(ModelKind::TempoNet),
        clock,
    );
    let rep = run(cfg, 2);
    assert_eq!(rep.flows_in, expected);
    assert_eq!(rep.dead_letters, 0);
    let real = read_flows(&dir.path().join("input.jsonl"));
    assert_eq!(real.len() as u64, expected);
    let synthetic = read_flows(&rep.synthetic_path);
    assert_eq!(synthetic.len() as u64, rep.synthetic_flows);
    assert!(!synthetic.is_empty(), "no synthetic flow");
    for r in &synthetic {
        compliance::check(r, true).unwrap_or_else(|e| panic!("non-compliant {r:?}: {e}"));
    }
    assert!(synthetic.windows(2).all(|w| w[0].start_us <= w[1].start_us));
    let first_real = real.iter().map(|r| r.start_us).min().unwrap();
    let last_real = real.iter().map(|r| r.start_us).max().unwrap();
    assert!(synthetic[0].start_us >= first_real + 10 * 60_000_000);
    assert!(synthetic.last().unwrap().start_us < clock.start_of(clock.epoch_of(last_real) + 1));
    let ms = metrics(&rep.metrics_path);
    assert!(!ms.is_empty());
    let flows_in: u64 = ms.iter().map(|m| m["flows_in"].as_u64().unwrap()).sum();
    assert_eq!(flows_in, expected);
    let synth: u64 = ms
        .iter()
        .map(|m| m["synthetic_flows"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(synth, rep.synthetic_flows);
    assert!(
        rep.model_version > 10,
        "model version {}",
        rep.model_version
    );
    // Generation sessions are reported (levels: the last record's sum over workers), and the length guard ends only
    // some of them.
    let last = ms.last().unwrap();
    assert_eq!(last["lane_sessions_total"], rep.lane_sessions);
    assert_eq!(last["sessions_guarded_total"], rep.sessions_guarded);
    assert!(rep.lane_sessions > 0);
    assert!(
        rep.sessions_guarded < rep.lane_sessions,
        "{} of {} sessions guarded",
        rep.sessions_guarded,
        rep.lane_sessions
    );
    // Real flows after the warm-up vs synthetic: the same order of magnitude (twins end by the model's silence mark).
    let real_after = real
        .iter()
        .filter(|r| r.start_us >= synthetic[0].start_us)
        .count() as f64;
    let ratio = synthetic.len() as f64 / real_after;
    assert!((0.2..5.0).contains(&ratio), "synthetic/real = {ratio:.2}");
}

/// One and two workers see the same real flows and both generate.
#[test]
fn one_and_two_workers_agree_on_input() {
    let mut counts = Vec::new();
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(
            EmbeddedInput::Simulator(Box::new(sim(8, 3, 5))),
            dir.path(),
            warmup(ModelKind::Independent),
            EpochClock::new(60_000_000),
        );
        let rep = run(cfg, workers);
        assert!(rep.synthetic_flows > 0);
        counts.push(rep.flows_in);
    }
    assert_eq!(counts[0], counts[1]);
}

/// A file with a bad row: the row is a dead letter with its line, the rest flows through.
#[test]
fn bad_rows_become_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let flows: Vec<FlowRecord> = Simulator::new(sim(8, 2, 9)).unwrap().collect();
    let path = dir.path().join("in.jsonl");
    let mut text = String::new();
    for (i, r) in flows.iter().enumerate() {
        text.push_str(&serde_json::to_string(r).unwrap());
        text.push('\n');
        if i == 100 {
            text.push_str("{\"start_us\": \"yesterday\"}\n");
        }
    }
    std::fs::write(&path, text).unwrap();
    let out = dir.path().join("out");
    let cfg = config(
        EmbeddedInput::Files(vec![path]),
        &out,
        warmup(ModelKind::Independent),
        EpochClock::new(60_000_000),
    );
    let rep = run(cfg, 1);
    assert_eq!(rep.flows_in, flows.len() as u64);
    assert_eq!(rep.dead_letters, 1);
    let dead = std::fs::read_to_string(&rep.dead_letters_path).unwrap();
    assert!(dead.contains("102"), "dead letter names its line: {dead}");
}

/// Pure generation from a trained model file: no real input, flows over the requested span only.
#[test]
fn pure_generation_from_a_model_file() {
    let dir = tempfile::tempdir().unwrap();
    let flows: Vec<FlowRecord> = Simulator::new(sim(10, 4, 11)).unwrap().collect();
    let model = Model::fit_new(
        ModelKind::TempoNet,
        &small_temponet(),
        &flows,
        &FitOptions {
            epochs: 1,
            ..FitOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let path = dir.path().join("model.tpn");
    model.save(&path).unwrap();
    let clock = EpochClock::new(10_000_000);
    let span_us = 1_800_000_000;
    let start_us = START_US + 4 * 3_600_000_000;
    let mut cfg = config(
        EmbeddedInput::Generate { start_us, span_us },
        dir.path(),
        ModelStart::File(path),
        clock,
    );
    cfg.model.trainer.train = false;
    cfg.model.generator.twins = false;
    cfg.model.generator.observed_at_start = true;
    cfg.save_input = false;
    let rep = run(cfg, 2);
    assert_eq!(rep.flows_in, 0);
    let synthetic = read_flows(&rep.synthetic_path);
    assert!(!synthetic.is_empty());
    assert!(
        synthetic
            .iter()
            .all(|r| r.start_us >= start_us && r.start_us < start_us + span_us)
    );
}

/// A regime change halfway (the simulator's enterprise network taken over by a night shift: SSH and SMB instead
/// of browsing): drift is reported soon after the change (a loss increase or a PSI shift within the first hour of
/// event time), the trainer raises its learning rate in response, and the live fidelity recovers: the service-mix
/// JSD of the last two hours is below its worst in the two hours after the change, and the inter-arrival EMD stays
/// low through it.
#[test]
fn regime_change_is_detected_and_fidelity_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim_cfg = sim(16, 12, 4);
    sim_cfg.regime_change = Some(temponet::sim::RegimeChange {
        after_us: 6 * 3_600_000_000,
        scenario: temponet::sim::Scenario::resolve("enterprise-night-shift").unwrap(),
    });
    let clock = EpochClock::new(60_000_000);
    let mut cfg = config(
        EmbeddedInput::Simulator(Box::new(sim_cfg)),
        dir.path(),
        warmup(ModelKind::TempoNet),
        clock,
    );
    cfg.window_epochs = 20;
    cfg.save_input = false;
    let rep = run(cfg, 2);
    let ms = metrics(&rep.metrics_path);
    let change = START_US + 6 * 3_600_000_000;
    let hour = 3_600_000_000i64;
    let start = |m: &Value| m["window_start_us"].as_i64().unwrap();
    let responds = |e: &Value| e["increase"].as_bool() != Some(false);
    let first_after = ms
        .iter()
        .filter(|m| start(m) >= change - 20 * 60_000_000)
        .find(|m| {
            m["drift"]
                .as_array()
                .is_some_and(|d| d.iter().any(responds))
        })
        .expect("no drift reported after the regime change");
    assert!(
        start(first_after) < change + hour,
        "drift first reported at +{:.2} h",
        (start(first_after) - change) as f64 / hour as f64
    );
    assert!(first_after["learning_rate"].as_f64().unwrap() > 0.003 * 1.5);
    let fig = |m: &Value, k: &str| m["fidelity"][k].as_f64();
    let worst_after = |k: &str| {
        ms.iter()
            .filter(|m| start(m) >= change && start(m) < change + 2 * hour)
            .filter_map(|m| fig(m, k))
            .fold(0.0, f64::max)
    };
    let mean_from = |k: &str, from: i64| {
        let v: Vec<f64> = ms
            .iter()
            .filter(|m| start(m) >= from)
            .filter_map(|m| fig(m, k))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    // The service mix is what the new regime changes (SSH and SMB instead of the web): its JSD must come back
    // below its worst right after the change.
    let (worst, late) = (
        worst_after("jsd_dst_port"),
        mean_from("jsd_dst_port", START_US + 10 * hour),
    );
    eprintln!("jsd_dst_port: worst after the change {worst:.3}, last two hours {late:.3}");
    // Failed once in a full suite (worst 0.394, late 0.399; 16 reruns gave 0.06-0.10 and 0.03-0.07): the windows
    // from an hour before the change tell whether the model stopped training, generating or learning.
    assert!(
        late < worst,
        "jsd_dst_port did not recover; windows (h from the change, real, synthetic, jsd dst port, loss, version, \
         lr):\n{}",
        ms.iter()
            .filter(|m| start(m) >= change - hour)
            .map(|m| format!(
                "{:+.2} {} {} {:?} {:?} {} {:?}",
                (start(m) - change) as f64 / hour as f64,
                m["fidelity"]["real_flows"],
                m["fidelity"]["synthetic_flows"],
                fig(m, "jsd_dst_port"),
                m["mean_loss"].as_f64(),
                m["model_version"],
                m["learning_rate"].as_f64()
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Timing barely changes with the regime (the same session processes, other services), so inter-arrivals
    // have little to recover from; what must hold is that online training through the change does not wreck
    // them: over the last four hours their EMD stays well below the untrained model's first windows (0.3-0.6
    // in log10 seconds). Online training makes it wander: in 33 runs the four-hour mean ranged 0.040-0.150
    // (mean 0.08), single windows reached 0.24 for an hour at a time, and a window holds only a few hundred
    // synthetic flows. The bound sits above that spread and below a model that lost its timing.
    let first = ms
        .iter()
        .find_map(|m| fig(m, "emd_log10_inter_arrival"))
        .expect("no inter-arrival figure");
    let late_iat = mean_from("emd_log10_inter_arrival", START_US + 8 * hour);
    eprintln!(
        "emd_log10_inter_arrival: first window {first:.3}, worst after the change {:.3}, last four hours {late_iat:.3}",
        worst_after("emd_log10_inter_arrival")
    );
    assert!(
        late_iat < 0.2 && late_iat < first,
        "inter-arrival EMD {late_iat:.3} over the last four hours (first window {first:.3})"
    );
}
