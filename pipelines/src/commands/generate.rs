//! `temponet generate --model MODEL (--count N | --span 1h) --out FILE --format csv|jsonl|zeek`: synthetic flows
//! from a trained model, optionally with every address mapped through a keyed prefix-preserving permutation.

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use temponet::format::{FlowWriter, OutputFormat};
use temponet::model::anonymise::Anonymiser;
use temponet::model::{DeviceChoice, GenLimit, GenerateRequest, Model, PairSource, StepEngine};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file written by `temponet train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Exactly this many flows.
    #[arg(long, conflicts_with = "span", required_unless_present = "span")]
    pub count: Option<u64>,
    /// Every flow within this span: `90s`, `30m`, `1h`, `2d`.
    #[arg(long)]
    pub span: Option<String>,
    /// Start time: RFC 3339 (`2018-12-21T15:00:00Z`) or Unix seconds; default: the end of the training data.
    #[arg(long)]
    pub start: Option<String>,
    /// observed (pairs seen in training) or synthetic (new pairs from the pair-arrival part).
    #[arg(long, default_value = "observed")]
    pub pairs: PairSource,
    /// Map every address through a prefix-preserving permutation keyed by this passphrase.
    #[arg(long)]
    pub anonymise: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop with an error beyond this many flows (guards against a model whose pairs burst without end).
    #[arg(long, default_value_t = GenerateRequest::DEFAULT_MAX_FLOWS)]
    pub max_flows: u64,
    #[arg(long)]
    pub out: PathBuf,
    /// jsonl, csv or zeek; defaults to what OUT's extension says.
    #[arg(long)]
    pub format: Option<OutputFormat>,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// How a network's generation steps run on the CPU: native (plain Rust, faster) or libtorch (the reference;
    /// both give the same flows up to float rounding). CUDA always steps on libtorch.
    #[arg(long, default_value = "native")]
    pub cpu_step: StepEngine,
}

/// `90s`, `30m`, `1h`, `2d`, or plain seconds, to microseconds.
pub fn parse_span(s: &str) -> anyhow::Result<i64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let v: f64 = num
        .parse()
        .with_context(|| format!("bad span {s:?} (e.g. 90s, 30m, 1h, 2d)"))?;
    let mult = match unit {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => anyhow::bail!("bad span unit {unit:?} in {s:?} (s, m, h, d)"),
    };
    if v.is_nan() || v <= 0.0 {
        anyhow::bail!("span must be positive, got {s:?}");
    }
    Ok((v * mult * 1e6) as i64)
}

fn parse_start(s: &str) -> anyhow::Result<i64> {
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1e6) as i64);
    }
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .with_context(|| format!("bad --start {s:?} (RFC 3339 or Unix seconds)"))?;
    Ok(t.timestamp_micros())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let format = match args
        .format
        .or_else(|| OutputFormat::from_extension(&args.out))
    {
        Some(f) => f,
        None => anyhow::bail!(
            "say the output format with --format jsonl|csv|zeek ({} has no known extension)",
            args.out.display()
        ),
    };
    let mut model = Model::load(&args.model, args.device)?;
    model.set_step_engine(args.cpu_step);
    let limit = match (args.count, &args.span) {
        (Some(n), _) => GenLimit::Count(n),
        (None, Some(s)) => GenLimit::SpanUs(parse_span(s)?),
        (None, None) => anyhow::bail!("give --count N or --span DURATION"),
    };
    let start_us = match &args.start {
        Some(s) => parse_start(s)?,
        None => model.space().last_us,
    };
    let req = GenerateRequest {
        start_us,
        limit,
        seed: args.seed,
        pairs: args.pairs,
        max_flows: args.max_flows,
    };
    let bar = match limit {
        GenLimit::Count(n) => ProgressBar::new(n),
        GenLimit::SpanUs(_) => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} {spinner} [{bar:30}] {pos} flows {msg}")?
            .progress_chars("=> "),
    );
    bar.set_message(format!("{} generating", model.kind()));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut g = model.generate(&req, &mut |n| bar.set_position(n))?;
    bar.set_message("writing");
    if let Some(key) = &args.anonymise {
        let a = Anonymiser::new(key);
        for r in &mut g.flows {
            a.map_record(r);
        }
    }
    let file =
        File::create(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut w = FlowWriter::new(BufWriter::new(file), format)?;
    for r in &g.flows {
        w.write(r)
            .with_context(|| format!("writing {}", args.out.display()))?;
        bar.set_position(w.written());
    }
    let written = w.written();
    w.finish()?;
    bar.finish_and_clear();
    let pairs = g
        .flows
        .iter()
        .map(|r| r.pair())
        .collect::<std::collections::HashSet<_>>()
        .len();
    eprintln!(
        "wrote {written} flows of {pairs} host pairs ({} lane sessions, {} ended by the length guard) to {} ({} model); \
         sampling repairs: {} clamped, {} empty masks, {} rule violations",
        g.lane_sessions,
        g.sessions_guarded,
        args.out.display(),
        model.kind(),
        g.repairs.sample_clamped,
        g.repairs.sample_empty_mask,
        g.repairs.sample_violations
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans() {
        assert_eq!(super::parse_span("1h").unwrap(), 3_600_000_000);
        assert_eq!(super::parse_span("90s").unwrap(), 90_000_000);
        assert_eq!(super::parse_span("2d").unwrap(), 172_800_000_000);
        assert!(super::parse_span("1y").is_err());
        assert!(super::parse_span("-1h").is_err());
    }
}
