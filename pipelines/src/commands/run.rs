//! `temponet run`: the streaming pipeline from Kafka to Kafka (see `dataflow`). Parses its own timely options
//! (`-w -n -p -h -z`, the same letters as timely's) and builds `timely::Config` itself: timely's
//! `execute_from_args` rejects every flag it does not know.

use crate::dataflow::{self, NoGenerator, RunConfig};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::time::Duration;
use temponet_operators::EpochClock;
use temponet_operators::codec::WireFormat;
use temponet_operators::pair_history::HistoryConfig;

#[derive(clap::Args, Debug, Clone)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT...].
    #[arg(long)]
    pub brokers: String,
    /// Topic with the real flows.
    #[arg(long, default_value = "flows")]
    pub input_topic: String,
    /// Topic for synthetic flows (written by the generator once it is plugged in).
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
    /// Encoding of flows on the input and output topics: json or bincode.
    #[arg(long, default_value = "json")]
    pub format: WireFormat,
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
    /// Flows per worker read but not yet in pair state before the source pauses.
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

pub fn run_config(a: &Args) -> RunConfig {
    let mut cfg = RunConfig::new(
        &a.brokers,
        &a.input_topic,
        &a.output_topic,
        &a.metrics_topic,
    );
    if let Some(d) = &a.dead_letter_topic {
        cfg.dead_letter_topic = d.clone();
    }
    cfg.group = a.group.clone();
    cfg.format = a.format;
    cfg.clock = EpochClock::new(a.epoch_ms.max(1) * 1000);
    cfg.window_epochs = a.window_epochs.max(1);
    cfg.lateness_epochs = a.lateness_epochs;
    cfg.idle_timeout = Duration::from_millis(a.idle_timeout_ms);
    cfg.max_in_flight = a.max_in_flight.max(1);
    cfg.history = HistoryConfig {
        ring_len: a.ring_len.max(1),
        budget_bytes: a.pair_budget_bytes,
        ..HistoryConfig::default()
    };
    cfg.until_end = a.until_end;
    cfg
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let timely = timely_config(&a)?;
    let cfg = run_config(&a);
    dataflow::ensure_sink_topics(&cfg, 1)?;
    let report = dataflow::run(timely, cfg, |_| NoGenerator)?;
    let text = serde_json::to_string(&report)?;
    if let Some(path) = &a.report {
        std::fs::write(path, &text)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
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
