//! The embedded default of `temponet run` (no Kafka): an in-process source, files and the console for output.
//!
//! ```text
//! file_source(files | simulator) ─┬─ flows ─> pair_history ─ FreshWindows ─> model stages ─ synthetic ─┬─> synthetic.jsonl
//!  (worker 0 reads)               │                                            (trainer, averaging,      └─> fidelity
//!                                 ├─ flows ─> input.jsonl (optional)            generator)
//!                                 ├─ flows ──────────────────────────────────────────────────────────────> fidelity
//!                                 ├─ dead ─> dead-letters.jsonl
//!                                 └─ stats, history stats, model stats, fidelity ─> window_metrics ─> metrics.jsonl
//! clock_source (pure generation) ──────────────────────────────> generator ticks
//! ```
//!
//! Every file is written by worker 0 (flows are exchanged there, sorted by start time within an epoch, epochs in
//! order). The run ends when the input is exhausted (or, in pure generation, when the span is generated) and every
//! sink has written everything: the probe after the sinks is the end condition.

use crate::model_stages::{ModelStagesConfig, model_stages};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use temponet::FlowRecord;
use temponet::format::{FlowReader, FlowWriter, OutputFormat};
use temponet::sim::{SimConfig, Simulator};
use temponet_operators::clock_source::{ClockConfig, clock_source};
use temponet_operators::fidelity::{FidelityConfig, fidelity};
use temponet_operators::file_sink::{FlowWriterSink, file_sink};
use temponet_operators::file_source::{FileSourceConfig, Pace, file_source};
use temponet_operators::fresh_windows::{FreshWindow, FreshWindows};
use temponet_operators::kafka_source::split;
use temponet_operators::pair_history::{HistoryConfig, HistoryOut, pair_history};
use temponet_operators::plugs::NoObserver;
use temponet_operators::window_metrics::{WindowInput, window_metrics};
use temponet_operators::{EpochClock, SourceEvent};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Exchange, Inspect, OkErr, Probe, ToStream};
use timely::dataflow::{ProbeHandle, Stream};

/// Where the real flows come from.
#[derive(Clone, Debug)]
pub enum EmbeddedInput {
    /// Files in any format the project reads, replayed in order.
    Files(Vec<PathBuf>),
    /// The built-in network simulator.
    Simulator(Box<SimConfig>),
    /// No real input: pure generation by a trained model over `[start_us, start_us + span_us)`.
    Generate { start_us: i64, span_us: i64 },
}

/// Everything the embedded run needs besides timely's configuration.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    pub input: EmbeddedInput,
    pub pace: Pace,
    pub clock: EpochClock,
    pub window_epochs: u64,
    pub lateness_epochs: u64,
    pub history: HistoryConfig,
    pub windows: FreshWindows,
    pub model: ModelStagesConfig,
    pub out_dir: PathBuf,
    /// Also write the real flows (useful with the simulator, to evaluate against them afterwards).
    pub save_input: bool,
    /// Live one-line status on the console.
    pub status: bool,
}

/// What an embedded run did (this process).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EmbeddedReport {
    pub flows_in: u64,
    pub dead_letters: u64,
    pub late: u64,
    pub synthetic_flows: u64,
    /// Generation sessions started (one per twin session) and those the session-length guard ended.
    pub lane_sessions: u64,
    pub sessions_guarded: u64,
    pub windows: u64,
    pub model_version: u64,
    pub elapsed_s: f64,
    /// The last metrics record.
    pub last_metrics: Option<serde_json::Value>,
    pub synthetic_path: PathBuf,
    pub input_path: Option<PathBuf>,
    pub metrics_path: PathBuf,
    pub dead_letters_path: PathBuf,
}

/// The figures the console shows, accumulated from the metrics records (worker 0).
#[derive(Clone, Debug, Default)]
struct Board {
    flows_in: u64,
    synthetic: u64,
    lane_sessions: u64,
    guarded: u64,
    dead: u64,
    late: u64,
    windows: u64,
    version: u64,
    event_time_us: i64,
    emd_iat: Option<f64>,
    jsd_port: Option<f64>,
    loss: Option<f64>,
    drifts: u64,
    last: Option<serde_json::Value>,
}

impl Board {
    fn absorb(&mut self, rec: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(rec) else {
            return;
        };
        let u = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        self.flows_in += u("flows_in");
        self.synthetic += u("synthetic_flows");
        self.lane_sessions = self.lane_sessions.max(u("lane_sessions_total"));
        self.guarded = self.guarded.max(u("sessions_guarded_total"));
        self.dead += u("dead_letters");
        self.late += u("late_flows");
        self.windows += 1;
        self.version = self.version.max(u("model_version"));
        self.event_time_us = v.get("window_end_us").and_then(|x| x.as_i64()).unwrap_or(0);
        if let Some(f) = v.get("fidelity").filter(|f| f.is_object()) {
            self.emd_iat = f.get("emd_log10_inter_arrival").and_then(|x| x.as_f64());
            self.jsd_port = f.get("jsd_dst_port").and_then(|x| x.as_f64());
        }
        if let Some(l) = v.get("mean_loss").and_then(|x| x.as_f64()) {
            self.loss = Some(l);
        }
        // Changes the trainer responds to: loss increases and PSI shifts (not the loss falling as it learns).
        self.drifts += v.get("drift").and_then(|d| d.as_array()).map_or(0, |a| {
            a.iter()
                .filter(|e| e.get("increase").and_then(|x| x.as_bool()) != Some(false))
                .count() as u64
        });
        self.last = Some(v);
    }

    fn line(&self, started: Instant) -> String {
        let opt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
        let t = chrono::DateTime::from_timestamp_micros(self.event_time_us)
            .map(|d| d.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_else(|| "-".into());
        format!(
            "{:>6.1}s | event time {t} | in {} flows | out {} synthetic | model v{} | loss {} | EMD log-iat {} | JSD dport {} | drift {} | dead {}",
            started.elapsed().as_secs_f64(),
            self.flows_in,
            self.synthetic,
            self.version,
            opt(self.loss),
            opt(self.emd_iat),
            opt(self.jsd_port),
            self.drifts,
            self.dead,
        )
    }
}

fn jsonl_writer(path: &Path) -> anyhow::Result<FlowWriterSink<BufWriter<File>>> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(FlowWriterSink::new(FlowWriter::new(
        BufWriter::new(f),
        OutputFormat::Jsonl,
    )?))
}

type Reader = Box<dyn Iterator<Item = Result<FlowRecord, String>>>;

fn open_input(input: &EmbeddedInput) -> anyhow::Result<Option<Reader>> {
    Ok(match input {
        EmbeddedInput::Files(paths) => {
            let mut readers = Vec::new();
            for p in paths {
                readers
                    .push(FlowReader::open(p).with_context(|| format!("opening {}", p.display()))?);
            }
            Some(Box::new(
                readers
                    .into_iter()
                    .flatten()
                    .map(|r| r.map_err(|e| e.to_string())),
            ))
        }
        EmbeddedInput::Simulator(cfg) => Some(Box::new(
            Simulator::new((**cfg).clone())
                .context("starting the simulator")?
                .map(Ok),
        )),
        EmbeddedInput::Generate { .. } => None,
    })
}

/// Runs the embedded pipeline on `timely` and returns worker 0's report.
pub fn run(timely: timely::Config, cfg: EmbeddedConfig) -> anyhow::Result<EmbeddedReport> {
    crate::allocator::keep_freed_memory();
    std::fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("creating {}", cfg.out_dir.display()))?;
    let cfg = Arc::new(cfg);
    let guards = timely::execute(timely, move |worker| {
        run_worker(worker, &cfg).map_err(|e| format!("{e:#}"))
    })
    .map_err(|e| anyhow::anyhow!("starting timely: {e}"))?;
    let mut report = None;
    for r in guards.join() {
        let r = r.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?;
        let r = r.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?;
        if r.is_some() {
            report = r;
        }
    }
    report.ok_or_else(|| anyhow::anyhow!("no worker 0 in this process (run it on process 0)"))
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    cfg: &EmbeddedConfig,
) -> anyhow::Result<Option<EmbeddedReport>> {
    let started = Instant::now();
    let index = worker.index();
    let lead = index == 0;
    let paths = (
        cfg.out_dir.join("synthetic.jsonl"),
        cfg.out_dir.join("input.jsonl"),
        cfg.out_dir.join("metrics.jsonl"),
        cfg.out_dir.join("dead-letters.jsonl"),
    );
    let reader = if lead { open_input(&cfg.input)? } else { None };
    let board = Rc::new(RefCell::new(Board::default()));
    let done = ProbeHandle::<u64>::new();
    // Backpressure of pure generation: the synthetic file sink (the metrics hold epochs back for their window).
    let generated = ProbeHandle::<u64>::new();
    let mut metrics_file = if lead {
        Some(BufWriter::new(File::create(&paths.2).with_context(
            || format!("creating {}", paths.2.display()),
        )?))
    } else {
        None
    };
    let mut dead_file = if lead {
        Some(BufWriter::new(File::create(&paths.3).with_context(
            || format!("creating {}", paths.3.display()),
        )?))
    } else {
        None
    };
    let synthetic_sink = if lead {
        Some(jsonl_writer(&paths.0)?)
    } else {
        None
    };
    let input_sink = if lead && cfg.save_input {
        Some(jsonl_writer(&paths.1)?)
    } else {
        None
    };
    worker.dataflow::<u64, _, _>(|scope| -> anyhow::Result<()> {
        let (flows, dead, src_stats, ticks) = match &cfg.input {
            EmbeddedInput::Generate { start_us, span_us } => {
                let ticks = clock_source(
                    scope,
                    ClockConfig {
                        clock: cfg.clock,
                        start_us: *start_us,
                        end_us: Some(start_us.saturating_add(*span_us)),
                        pace: cfg.pace,
                        // The generator holds closed epochs until a batch is complete: let it fill two.
                        max_ahead: 2 * cfg.model.generator.batch_epochs.max(1) + 2,
                    },
                    generated.clone(),
                );
                let none: Stream<u64, Vec<SourceEvent>> =
                    Vec::<SourceEvent>::new().to_stream(scope);
                let (f, d, s) = split(none);
                (f, d, s, ticks)
            }
            _ => {
                let src_cfg = FileSourceConfig {
                    clock: cfg.clock,
                    lateness_epochs: cfg.lateness_epochs,
                    pace: cfg.pace,
                    name: "input",
                    ..FileSourceConfig::default()
                };
                let (f, d, s) = split(file_source(scope, reader, src_cfg));
                (f, d, s, Vec::<()>::new().to_stream(scope))
            }
        };
        let (hist, _shard) = pair_history(flows.clone(), cfg.history, cfg.windows);
        let (windows, hist_stats): (Stream<u64, Vec<FreshWindow>>, _) = hist.ok_err(|o| match o {
            HistoryOut::Hook(w) => Ok(w),
            HistoryOut::Stats(s) => Err(s),
        });
        let m = model_stages(flows.clone(), windows, ticks, &cfg.model)?;
        let figures = fidelity(
            flows.clone(),
            m.synthetic.clone(),
            cfg.clock,
            FidelityConfig {
                window_epochs: cfg.window_epochs,
                ..FidelityConfig::default()
            },
        );
        let synthetic_to_0 = m.synthetic.exchange(|_| 0);
        let written =
            file_sink(synthetic_to_0, OptionalSink(synthetic_sink)).probe_with(&generated);
        // The same graph on every worker (timely needs it): only the sink's presence differs.
        let saved = if cfg.save_input {
            file_sink(flows.exchange(|_| 0), OptionalSink(input_sink))
        } else {
            Vec::<u64>::new().to_stream(scope)
        };
        let stats = src_stats
            .map(WindowInput::Source)
            .concat(hist_stats.map(WindowInput::History))
            .concat(m.stats.map(WindowInput::Model))
            .concat(figures.map(WindowInput::Fidelity));
        let metrics = window_metrics(stats, cfg.clock, cfg.window_epochs, NoObserver);
        let b = board.clone();
        let metrics_done = metrics
            .inspect(move |rec: &String| {
                b.borrow_mut().absorb(rec);
                if let Some(f) = metrics_file.as_mut() {
                    writeln!(f, "{rec}")
                        .and_then(|_| f.flush())
                        .unwrap_or_else(|e| {
                            panic!("writing the metrics file: {e}");
                        });
                }
            })
            .map(|_| 0u64);
        let dead_done = dead
            .exchange(|_| 0)
            .inspect(move |d| {
                if let Some(f) = dead_file.as_mut() {
                    writeln!(f, "{}", d.to_json())
                        .and_then(|_| f.flush())
                        .unwrap_or_else(|e| panic!("writing the dead-letter file: {e}"));
                }
            })
            .map(|_| 0u64);
        written
            .concat(saved)
            .concat(metrics_done)
            .concat(dead_done)
            .probe_with(&done);
        Ok(())
    })?;
    let show = lead && cfg.status;
    let tty = std::io::stderr().is_terminal();
    let bar = (show && tty).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    let mut last_print = Instant::now();
    while !done.done() {
        worker.step_or_park(Some(Duration::from_millis(5)));
        if show {
            let line = board.borrow().line(started);
            match &bar {
                Some(b) => b.set_message(line),
                None if last_print.elapsed() >= Duration::from_secs(5) => {
                    eprintln!("{line}");
                    last_print = Instant::now();
                }
                None => {}
            }
        }
    }
    if let Some(b) = bar {
        b.finish_with_message(board.borrow().line(started));
    } else if show {
        eprintln!("{}", board.borrow().line(started));
    }
    if !lead {
        return Ok(None);
    }
    let b = board.borrow();
    Ok(Some(EmbeddedReport {
        flows_in: b.flows_in,
        dead_letters: b.dead,
        late: b.late,
        synthetic_flows: b.synthetic,
        lane_sessions: b.lane_sessions,
        sessions_guarded: b.guarded,
        windows: b.windows,
        model_version: b.version,
        elapsed_s: started.elapsed().as_secs_f64(),
        last_metrics: b.last.clone(),
        synthetic_path: paths.0,
        input_path: cfg.save_input.then_some(paths.1),
        metrics_path: paths.2,
        dead_letters_path: paths.3,
    }))
}

/// A file sink on worker 0 and nothing elsewhere (every flow is exchanged to worker 0 before it).
struct OptionalSink<S>(Option<S>);

impl<S: temponet_operators::file_sink::RecordSink> temponet_operators::file_sink::RecordSink
    for OptionalSink<S>
{
    fn write_record(&mut self, r: &FlowRecord) -> std::io::Result<()> {
        match self.0.as_mut() {
            Some(s) => s.write_record(r),
            None => Ok(()),
        }
    }
    fn flush_records(&mut self) -> std::io::Result<()> {
        self.0.as_mut().map_or(Ok(()), |s| s.flush_records())
    }
    fn finish_records(&mut self) -> std::io::Result<()> {
        self.0.as_mut().map_or(Ok(()), |s| s.finish_records())
    }
}
