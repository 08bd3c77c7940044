//! `temponet train --input FILE... --model temponet|stan|independent --out MODEL`: fits a model on flow files
//! (file order; the last `--holdout` fraction held back), shows per-task loss while training, prints the held-out
//! per-task NLL, and writes the versioned model file.
//!
//! The fit's length is chosen on data it does not train on: the last `--validation` fraction of the training part
//! is scored after every epoch, training stops after `--patience` epochs without improvement (at most `--epochs`),
//! and the best epoch's parameters are kept. A fixed epoch count either undertrains (TempoNet on the IoT-23 34-1
//! capture: 50 steps at 5 epochs) or overfits (its source-port and duration NLL rose by 1-2 nats at 60 epochs).

use super::InputOpts;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use temponet::model::{
    DeviceChoice, FitOptions, Model, ModelConfig, ModelKind, Validation, split_holdout,
};

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
    /// Most passes over the training windows (early stopping usually ends the fit sooner).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Fraction of the training part (its last rows) scored after every epoch to stop the fit; 0 runs every
    /// epoch on all of it.
    #[arg(long, default_value_t = 0.1)]
    pub validation: f64,
    /// Epochs without a better validation NLL before the fit stops.
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
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
    Validation::check_share(args.validation).context("--validation")?;
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
    let (fit_part, validation) =
        Validation::split(args.model, train, args.validation, args.patience)
            .context("--validation")?;
    eprintln!(
        "training {} on {} flows ({} for early stopping, {} held back)",
        args.model,
        fit_part.len(),
        train.len() - fit_part.len(),
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
        validation,
    };
    let mut history: Vec<f64> = Vec::new();
    let model = Model::fit_new(args.model, &config, fit_part, &opts, &mut |p| {
        if let Some((e, v)) = p.validation_nll
            && history.len() < e
        {
            history.push(v);
        }
        bar.set_length((p.epochs * p.batches) as u64);
        bar.set_position(((p.epoch - 1) * p.batches + p.batch) as u64);
        bar.set_prefix(format!("{}/{}", p.epoch, p.epochs));
        let mut parts: Vec<String> = SHORT
            .iter()
            .enumerate()
            .filter_map(|(i, n)| p.batch_nll.mean(i).map(|m| format!("{n} {m:.2}")))
            .collect();
        if let Some((e, v)) = p.validation_nll {
            parts.push(format!("| validation {v:.3} after epoch {e}"));
        }
        bar.set_message(parts.join(" "));
    })?;
    bar.finish();
    if !history.is_empty() {
        let best = history
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i + 1)
            .unwrap_or(0);
        eprintln!(
            "validation NLL by epoch (flow tasks): {} -> kept epoch {best}",
            history
                .iter()
                .map(|v| format!("{v:.3}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
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
