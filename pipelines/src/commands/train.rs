//! `temponet train --input FILE... --model temponet|stan|independent --out MODEL`: fits a model on flow files
//! (file order; the last `--holdout` fraction held back), shows per-task loss while training, prints the held-out
//! per-task NLL, and writes the versioned model file.

use super::InputOpts;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use temponet::model::{DeviceChoice, FitOptions, Model, ModelConfig, ModelKind, split_holdout};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Flow files to learn from (any readable format), in time order.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// temponet, stan or independent.
    #[arg(long, default_value = "temponet")]
    pub model: ModelKind,
    /// Where to write the model file.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    /// Fraction of the input (its last rows) held back for the per-task NLL report; 0 trains on everything.
    #[arg(long, default_value_t = 0.2)]
    pub holdout: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Model sizes as JSON (a `ModelConfig`; missing sections keep their defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub read: InputOpts,
}

const SHORT: [&str; 8] = [
    "iat", "proto", "dport", "sport", "flags", "pkts", "bpp", "dur",
];

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&args.holdout) {
        anyhow::bail!("--holdout must be in [0, 1), got {}", args.holdout);
    }
    let config: ModelConfig = match &args.config {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{}: not a model config", p.display()))?,
        None => ModelConfig::default(),
    };
    let mut records = Vec::new();
    args.read.read(&args.input, |r| records.push(r))?;
    if records.len() < 2 {
        anyhow::bail!("need at least 2 flows to train, read {}", records.len());
    }
    let (train, held) = split_holdout(&records, args.holdout);
    eprintln!(
        "training {} on {} flows ({} held back)",
        args.model,
        train.len(),
        held.len()
    );
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} epoch {prefix} {msg}",
        )?
        .progress_chars("=> "),
    );
    let opts = FitOptions {
        epochs: args.epochs.max(1),
        device: args.device,
        seed: args.seed,
    };
    let model = Model::fit_new(args.model, &config, train, &opts, &mut |p| {
        bar.set_length((p.epochs * p.batches) as u64);
        bar.set_position(((p.epoch - 1) * p.batches + p.batch) as u64);
        bar.set_prefix(format!("{}/{}", p.epoch, p.epochs));
        let parts: Vec<String> = SHORT
            .iter()
            .enumerate()
            .filter_map(|(i, n)| p.batch_nll.mean(i).map(|m| format!("{n} {m:.2}")))
            .collect();
        bar.set_message(parts.join(" "));
    })?;
    bar.finish();
    if !held.is_empty() {
        let nll = model.heldout_nll(train, held)?;
        println!(
            "held-out per-task NLL (nats per flow, {} flows, {}):\n{nll}",
            held.len(),
            args.model
        );
    }
    model.save(&args.out)?;
    eprintln!("wrote {} (version {})", args.out.display(), model.version());
    Ok(())
}
