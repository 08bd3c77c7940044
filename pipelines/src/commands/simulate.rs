//! `temponet simulate --hosts N --span 24h --seed S --out FILE`: writes traffic of the built-in network
//! simulator (known truth: roles, services, seasonality, bursts, optional labelled attacks and a regime change).
//! The work is in `temponet::sim`; this file maps options onto a `SimConfig` and streams the flows to a writer.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use temponet::format::{FlowWriter, OutputFormat};
use temponet::sim::{AttackKind, RegimeChange, Scenario, SimConfig, Simulator};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub sim: SimOpts,
    /// Output file (`-` for standard output).
    #[arg(long)]
    pub out: PathBuf,
    /// Output format; defaults to what the output file's extension says, else jsonl.
    #[arg(long)]
    pub format: Option<OutputFormat>,
    /// Stop after this many flows (the span is an upper bound then).
    #[arg(long)]
    pub limit: Option<u64>,
}

/// The simulator's settings, shared by `simulate` and the embedded default of `run`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimOpts {
    /// Network size: each role of the scenario gets max(min_count, round(share x N)) hosts.
    #[arg(long, default_value_t = 100)]
    pub hosts: usize,
    /// Simulated time span, e.g. 90s, 15m, 24h, 7d.
    #[arg(long, default_value = "24h", value_parser = parse_span)]
    pub span: Duration,
    /// Random seed: the same seed (and options) gives the same flows.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Embedded scenario name (`enterprise`, `enterprise-night-shift`) or path to a scenario TOML file.
    #[arg(long, default_value = "enterprise")]
    pub scenario: String,
    /// Start of the simulated window (RFC 3339, UTC). The default is a Monday midnight.
    #[arg(long, default_value = "2026-01-05T00:00:00Z", value_parser = parse_start)]
    pub start: i64,
    /// Labelled attacks to inject, comma-separated: portscan, ssh-brute, ddos, beacon.
    #[arg(long, value_delimiter = ',')]
    pub attacks: Vec<AttackKind>,
    /// Switch to `--second-scenario` this long after the start (drift tests), e.g. 12h.
    #[arg(long, value_parser = parse_span, requires = "second_scenario")]
    pub regime_change_at: Option<Duration>,
    /// The scenario (name or path) in force after `--regime-change-at`.
    #[arg(long, requires = "regime_change_at")]
    pub second_scenario: Option<String>,
}

impl SimOpts {
    /// The simulator configuration these options describe (scenarios resolved and validated by name or path).
    pub fn config(&self) -> anyhow::Result<SimConfig> {
        let regime_change = match (&self.regime_change_at, &self.second_scenario) {
            (Some(at), Some(name)) => Some(RegimeChange {
                after_us: micros(*at)?,
                scenario: Scenario::resolve(name)?,
            }),
            _ => None,
        };
        Ok(SimConfig {
            scenario: Scenario::resolve(&self.scenario)?,
            hosts: self.hosts,
            start_us: self.start,
            span_us: micros(self.span)?,
            seed: self.seed,
            attacks: self.attacks.clone(),
            regime_change,
        })
    }
}

pub fn parse_span(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 90s, 15m, 24h, 7d)"))?;
    if d.is_zero() {
        Err("the span must be positive".into())
    } else {
        Ok(d)
    }
}

pub fn parse_start(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2026-01-05T00:00:00Z)"))
}

fn micros(d: Duration) -> anyhow::Result<i64> {
    i64::try_from(d.as_micros()).context("span too long")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.sim.config()?;
    let sim = Simulator::new(cfg)?;
    let format = args
        .format
        .or_else(|| OutputFormat::from_extension(&args.out))
        .unwrap_or(OutputFormat::Jsonl);
    let to_stdout = args.out.as_os_str() == "-";
    let sink: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            File::create(&args.out)
                .with_context(|| format!("cannot create {}", args.out.display()))?,
        )
    };
    let mut w = FlowWriter::new(BufWriter::with_capacity(1 << 20, sink), format)?;

    // Progress in simulated seconds (the flow count is not known ahead); drawn only on a terminal.
    let bar = ProgressBar::new(args.sim.span.as_secs().max(1));
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} s simulated, {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut attacks = 0u64;
    for r in sim.take(usize::try_from(limit).unwrap_or(usize::MAX)) {
        if r.label.as_deref() != Some("benign") {
            attacks += 1;
        }
        w.write(&r)
            .with_context(|| format!("writing {}", args.out.display()))?;
        if w.written() % 65_536 == 0 {
            bar.set_position(((r.start_us - args.sim.start) / 1_000_000) as u64);
            bar.set_message(format!("{} flows", w.written()));
        }
    }
    let written = w.written();
    w.finish()
        .with_context(|| format!("writing {}", args.out.display()))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "simulated {written} flows ({attacks} attack flows) in {secs:.1} s ({:.0} flows/s){}",
        written as f64 / secs.max(1e-9),
        if to_stdout {
            String::new()
        } else {
            format!(", written to {}", args.out.display())
        }
    );
    Ok(())
}
