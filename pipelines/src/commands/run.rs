//! `temponet run`: the streaming pipeline. With `--brokers`, from Kafka to Kafka (see `dataflow`); without, on the
//! embedded default (see `embedded`): real flows from `--input` files or the built-in simulator, synthetic flows,
//! metrics and dead letters to files under `--out`, and a live status line on the console. With `--model` and no
//! input (no `--input-topic` with Kafka, no `--input` without) it is a pure generator.
//!
//! Parses its own timely options (`-w -n -p -h -z`, the same letters as timely's) and builds `timely::Config`
//! itself: timely's `execute_from_args` rejects every flag it does not know.

use super::simulate::{SimOpts, parse_span};
use crate::dataflow::{self, RunConfig};
use crate::embedded::{self, EmbeddedConfig, EmbeddedInput};
use crate::model_stages::ModelStagesConfig;
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::time::Duration;
use temponet::model::{DeviceChoice, ModelConfig, ModelKind, PairSource};
use temponet_operators::EpochClock;
use temponet_operators::clock_source::ClockConfig;
use temponet_operators::codec::WireFormat;
use temponet_operators::file_source::Pace;
use temponet_operators::fresh_windows::FreshWindows;
use temponet_operators::generator::GeneratorConfig;
use temponet_operators::pair_history::HistoryConfig;
use temponet_operators::trainer::{ModelStart, TrainerConfig};

#[derive(clap::Args, Debug, Clone)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...]; without it the embedded default runs.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Topic with the real flows [default: flows; none with --model means pure generation].
    #[arg(long)]
    pub input_topic: Option<String>,
    /// Embedded mode: real flows from these files (any format the project reads) instead of the simulator.
    #[arg(long, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Embedded mode: directory for synthetic.jsonl, metrics.jsonl, dead-letters.jsonl (and input.jsonl).
    #[arg(long, default_value = "out/stream")]
    pub out: PathBuf,
    /// Embedded mode: also write the real flows to OUT/input.jsonl (to evaluate against them afterwards).
    #[arg(long)]
    pub save_input: bool,
    /// No live status line.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub sim: SimOpts,
    /// A trained model file (`temponet train`) to start from; without it the model is built from the first flows.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The kind of model built from the first flows: temponet, stan or independent.
    #[arg(long, default_value = "temponet")]
    pub model_kind: ModelKind,
    /// Flows the model is first built from (at least).
    #[arg(long, default_value_t = 5000)]
    pub warmup_flows: usize,
    /// Epochs the model is first built from (at least).
    #[arg(long, default_value_t = 60)]
    pub warmup_epochs: u64,
    /// Passes of the first fit over the warm-up flows.
    #[arg(long, default_value_t = 3)]
    pub fit_epochs: usize,
    /// Do not learn online (score and generate only).
    #[arg(long)]
    pub no_train: bool,
    /// Epochs between parameter averaging rounds across workers.
    #[arg(long, default_value_t = 10)]
    pub average_every: u64,
    /// Most training steps per epoch and worker.
    #[arg(long, default_value_t = 8)]
    pub max_steps_per_epoch: usize,
    /// Host pairs of the synthetic flows: observed (twins of the real pairs) or synthetic (new addresses from the
    /// pair-arrival part).
    #[arg(long, default_value = "observed")]
    pub pairs: PairSource,
    /// Pace: x1 (real time), x10, 2.5, or max (as fast as possible) [default: max when replaying files or the
    /// simulator, x1 for pure generation].
    #[arg(long)]
    pub rate: Option<Pace>,
    /// Pure generation: start of the generated time (RFC 3339) [default: now].
    #[arg(long, value_parser = super::simulate::parse_start)]
    pub generate_from: Option<i64>,
    /// Pure generation: how much event time to generate [default: forever with Kafka, 1h embedded].
    #[arg(long, value_parser = parse_span)]
    pub generate_span: Option<Duration>,
    /// Closed epochs generated together (larger batched steps; up to this many epochs of added latency).
    #[arg(long, default_value_t = 10)]
    pub gen_batch_epochs: u64,
    /// Fresh windows scored and trained together (the trainer waits for this many, or --train-wait-epochs).
    #[arg(long, default_value_t = 48)]
    pub train_batch_windows: usize,
    /// Most epochs fresh windows wait before they are scored and trained on.
    #[arg(long, default_value_t = 10)]
    pub train_wait_epochs: u64,
    /// Random seed of the model and generation.
    #[arg(long, default_value_t = 0)]
    pub model_seed: u64,
    /// Topic for synthetic flows.
    #[arg(long, default_value = "synthetic-flows")]
    pub output_topic: String,
    /// Topic for one JSON metrics record per window.
    #[arg(long, default_value = "fidelity")]
    pub metrics_topic: String,
    /// Consumer group whose committed offsets say where to resume.
    #[arg(long, default_value = "temponet")]
    pub group: String,
    /// Topic for messages that do not decode [default: INPUT-TOPIC-dead-letters].
    #[arg(long)]
    pub dead_letter_topic: Option<String>,
    /// Encoding of flows on the input and output topics: json or bincode. An input message may hold several flows
    /// (JSON lines separated by newlines, or bincode records back to back); output messages hold `--output-batch`.
    #[arg(long, default_value = "json")]
    pub format: WireFormat,
    /// Synthetic flows per output message, in the same multi-flow form the input accepts. Above 1 it cuts the
    /// per-message cost of producer, broker and consumers (at high rates that cost, not the flows, is the limit).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub output_batch: u64,
    /// Length of an event-time epoch (the timely timestamp), milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub epoch_ms: u64,
    /// Epochs per metrics window.
    #[arg(long, default_value_t = 60)]
    pub window_epochs: u64,
    /// Epochs of disorder tolerated before a flow counts as late.
    #[arg(long, default_value_t = 2)]
    pub lateness_epochs: u64,
    /// A partition silent this long stops holding the watermark back, milliseconds.
    #[arg(long, default_value_t = 500)]
    pub idle_timeout_ms: u64,
    /// A partition that delivered neither a message nor its end since assignment holds the watermark back this
    /// long however quiet (a slow first fetch must not make its whole backlog late), milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub start_timeout_ms: u64,
    /// Flows per worker read but not yet through pair state and, when on, the model stages, before the source
    /// pauses (it then reads only the partitions that hold the watermark back).
    #[arg(long, default_value_t = 500_000)]
    pub max_in_flight: u64,
    /// Recent events kept per host pair.
    #[arg(long, default_value_t = 64)]
    pub ring_len: usize,
    /// Memory budget of pair state per worker, bytes (idle pairs are evicted beyond it).
    #[arg(long, default_value_t = 256 << 20)]
    pub pair_budget_bytes: usize,
    /// Stop once every input partition has been read to its end (batch mode).
    #[arg(long)]
    pub until_end: bool,
    /// Also write the final report (JSON) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// Index of this process.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: usize,
    /// File with one HOST:PORT line per process.
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
    /// Serialise exchanged data even between threads of one process (zero-copy allocator).
    #[arg(short = 'z', long = "zerocopy")]
    pub zerocopy: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// timely's configuration from our flags (mirrors timely's own `-w -n -p -h -z` semantics).
pub fn timely_config(a: &Args) -> anyhow::Result<timely::Config> {
    use timely::CommunicationConfig as C;
    if a.workers == 0 || a.processes == 0 {
        bail!("-w and -n must be at least 1");
    }
    if a.process >= a.processes {
        bail!("-p {} is not below -n {}", a.process, a.processes);
    }
    let communication = if a.processes > 1 {
        let addresses: Vec<String> = match &a.hostfile {
            Some(h) => {
                let text = std::fs::read_to_string(h)
                    .with_context(|| format!("reading host file {}", h.display()))?;
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .take(a.processes)
                    .map(String::from)
                    .collect()
            }
            None => (0..a.processes)
                .map(|i| format!("localhost:{}", 2101 + i))
                .collect(),
        };
        if addresses.len() < a.processes {
            bail!(
                "the host file lists {} addresses, -n needs {}",
                addresses.len(),
                a.processes
            );
        }
        C::Cluster {
            threads: a.workers,
            process: a.process,
            addresses,
            report: false,
            zerocopy: a.zerocopy,
        }
    } else if a.workers > 1 {
        if a.zerocopy {
            C::ProcessBinary(a.workers)
        } else {
            C::Process(a.workers)
        }
    } else {
        C::Thread
    };
    Ok(timely::Config {
        communication,
        worker: timely::WorkerConfig::default(),
    })
}

/// The model stages these options describe (none for a Kafka run without model options is not offered: every run
/// trains and generates).
pub fn model_config(a: &Args, clock: EpochClock, pure_generation: bool) -> ModelStagesConfig {
    let start = match &a.model {
        Some(p) => ModelStart::File(p.clone()),
        None => ModelStart::Warmup {
            kind: a.model_kind,
            config: ModelConfig::default(),
            min_flows: a.warmup_flows.max(1),
            min_epochs: a.warmup_epochs.max(1),
            fit_epochs: a.fit_epochs,
        },
    };
    let mut trainer = TrainerConfig::new(start);
    trainer.device = DeviceChoice::Cpu;
    trainer.seed = a.model_seed;
    trainer.train = !a.no_train && !pure_generation;
    trainer.average_every = a.average_every.max(1);
    trainer.max_steps_per_epoch = a.max_steps_per_epoch;
    trainer.min_pending_windows = a.train_batch_windows.max(1);
    trainer.max_wait_epochs = a.train_wait_epochs.max(1);
    ModelStagesConfig {
        trainer,
        generator: GeneratorConfig {
            clock,
            seed: a.model_seed,
            pairs: a.pairs,
            twins: !pure_generation,
            observed_at_start: pure_generation && a.pairs == PairSource::Observed,
            batch_epochs: a.gen_batch_epochs.max(1),
        },
    }
}

fn history(a: &Args) -> HistoryConfig {
    HistoryConfig {
        ring_len: a.ring_len.max(1),
        budget_bytes: a.pair_budget_bytes,
        ..HistoryConfig::default()
    }
}

fn generation_start(a: &Args) -> i64 {
    a.generate_from
        .unwrap_or_else(|| chrono::Utc::now().timestamp_micros())
}

pub fn run_config(a: &Args) -> anyhow::Result<RunConfig> {
    let Some(brokers) = &a.brokers else {
        bail!("--brokers is needed for a Kafka run");
    };
    let pure_generation = a.input_topic.is_none() && a.model.is_some();
    let mut cfg = RunConfig::new(
        brokers,
        a.input_topic.as_deref().unwrap_or("flows"),
        &a.output_topic,
        &a.metrics_topic,
    );
    if let Some(d) = &a.dead_letter_topic {
        cfg.dead_letter_topic = d.clone();
    }
    cfg.group = a.group.clone();
    cfg.format = a.format;
    cfg.output_batch = a.output_batch as usize;
    cfg.clock = EpochClock::new(a.epoch_ms.max(1) * 1000);
    cfg.window_epochs = a.window_epochs.max(1);
    cfg.lateness_epochs = a.lateness_epochs;
    cfg.idle_timeout = Duration::from_millis(a.idle_timeout_ms);
    cfg.start_timeout = Duration::from_millis(a.start_timeout_ms);
    cfg.max_in_flight = a.max_in_flight.max(1);
    cfg.history = history(a);
    cfg.until_end = a.until_end;
    cfg.model = Some(model_config(a, cfg.clock, pure_generation));
    if pure_generation {
        let start_us = generation_start(a);
        cfg.generate = Some(ClockConfig {
            clock: cfg.clock,
            start_us,
            end_us: a
                .generate_span
                .map(|d| start_us.saturating_add(d.as_micros() as i64)),
            pace: a.rate.unwrap_or(Pace::Speed(1.0)),
            // The generator holds closed epochs until a batch is complete: let it fill two.
            max_ahead: 2 * a.gen_batch_epochs.max(1) + 2,
        });
    }
    Ok(cfg)
}

/// The embedded run these options describe.
pub fn embedded_config(a: &Args) -> anyhow::Result<EmbeddedConfig> {
    let clock = EpochClock::new(a.epoch_ms.max(1) * 1000);
    let pure_generation = a.input.is_empty() && a.model.is_some();
    let input = if pure_generation {
        EmbeddedInput::Generate {
            start_us: generation_start(a),
            span_us: a
                .generate_span
                .unwrap_or(Duration::from_secs(3600))
                .as_micros() as i64,
        }
    } else if a.input.is_empty() {
        EmbeddedInput::Simulator(Box::new(a.sim.config()?))
    } else {
        EmbeddedInput::Files(a.input.clone())
    };
    let default_pace = if pure_generation {
        Pace::Speed(1.0)
    } else {
        Pace::Max
    };
    Ok(EmbeddedConfig {
        input,
        pace: a.rate.unwrap_or(default_pace),
        clock,
        window_epochs: a.window_epochs.max(1),
        lateness_epochs: a.lateness_epochs,
        history: history(a),
        windows: FreshWindows::default(),
        model: model_config(a, clock, pure_generation),
        out_dir: a.out.clone(),
        save_input: a.save_input,
        status: !a.quiet,
    })
}

/// The report as JSON, also written to `--report` when given.
fn report_text(a: &Args, report: &impl serde::Serialize) -> anyhow::Result<String> {
    let text = serde_json::to_string(report)?;
    if let Some(path) = &a.report {
        std::fs::write(path, &text)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    Ok(text)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let timely = timely_config(&a)?;
    if a.brokers.is_none() {
        let cfg = embedded_config(&a)?;
        let report = embedded::run(timely, cfg)?;
        let text = report_text(&a, &report)?;
        eprintln!(
            "temponet run: {} real flows in, {} synthetic flows out ({} generation sessions, {} ended by the length guard; {} dead letters), model version {}, {:.1} s; synthetic flows in {}, metrics in {}",
            report.flows_in,
            report.synthetic_flows,
            report.lane_sessions,
            report.sessions_guarded,
            report.dead_letters,
            report.model_version,
            report.elapsed_s,
            report.synthetic_path.display(),
            report.metrics_path.display()
        );
        println!("{text}");
        return Ok(());
    }
    let cfg = run_config(&a)?;
    dataflow::ensure_sink_topics(&cfg, 1)?;
    let report = dataflow::run(timely, cfg)?;
    let text = report_text(&a, &report)?;
    eprintln!(
        "temponet run: {} flows ({} dead letters, {} late) into {} pairs in {:.2} s ({:.0} flows/s; latency p50 {} us, p99 {} us)",
        report.flows,
        report.dead,
        report.late,
        report.pairs,
        report.elapsed_s,
        report.flows_per_s,
        report.latency_p50_us,
        report.latency_p99_us
    );
    println!("{text}");
    Ok(())
}
