//! `temponet compare --train FILE... --test FILE... --models temponet,stan,independent --out DIR`: trains every
//! model on the same training part, generates the test part's span from each, and evaluates each against the test
//! part side by side (the table users quote). `--input FILE... --split 0.8` splits one capture by time instead.
//! Writes `DIR/report.json`, `DIR/report.md`, PNG plots, `DIR/<model>.jsonl` (the synthetic flows) and
//! `DIR/nll.md` (held-out per-task NLL of every model).

use super::InputOpts;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use temponet::FlowRecord;
use temponet::format::{FlowWriter, OutputFormat};
use temponet::metrics::{EvalOptions, compare, split_by_time};
use temponet::model::{
    DeviceChoice, FitOptions, GenLimit, GenerateRequest, Model, ModelConfig, ModelKind, PairSource,
    TaskNll,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training flows (the models learn from these).
    #[arg(long, num_args = 1..)]
    pub train: Vec<PathBuf>,
    /// Test flows (the models generate this span; the metrics compare against these).
    #[arg(long, num_args = 1..)]
    pub test: Vec<PathBuf>,
    /// Instead of --train/--test: one capture, split by time at --split.
    #[arg(long, num_args = 1.., conflicts_with_all = ["train", "test"])]
    pub input: Vec<PathBuf>,
    /// Fraction of --input (by time) used for training.
    #[arg(long, default_value_t = 0.8)]
    pub split: f64,
    /// Models to compare, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "temponet,stan,independent"
    )]
    pub models: Vec<ModelKind>,
    /// Most epochs per model (early stopping on `--validation` usually ends the fit sooner).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// Fraction of the training flows (their last rows) scored after every epoch to stop the fit (see `train`);
    /// 0 runs every epoch on all of them.
    #[arg(long, default_value_t = 0.1)]
    pub validation: f64,
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    #[arg(long, default_value = "cpu")]
    pub device: DeviceChoice,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Host pairs of the generated flows: `observed` (continue the training pairs) or `synthetic` (new pairs).
    #[arg(long, default_value = "observed")]
    pub pairs: PairSource,
    /// Labelled attack flows for the intrusion-detection utility task (e.g. ../shared/data/cicids2017/*.csv).
    #[arg(long, num_args = 1..)]
    pub attacks: Vec<PathBuf>,
    /// Skip the utility tasks (random forests).
    #[arg(long)]
    pub no_utility: bool,
    /// A model generating more than this many times the test part's flow count is stopped and left out.
    #[arg(long, default_value_t = 20)]
    pub max_flows_factor: u64,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub read: InputOpts,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    temponet::model::Validation::check_share(args.validation).context("--validation")?;
    let (train, test) = if !args.input.is_empty() {
        if !(0.0..1.0).contains(&args.split) || args.split == 0.0 {
            bail!("--split must be in (0, 1), got {}", args.split);
        }
        split_by_time(&args.read.read_vec("--input", &args.input)?, args.split)
    } else if args.train.is_empty() || args.test.is_empty() {
        bail!("give --train and --test files, or --input with --split");
    } else {
        (
            args.read.read_vec("--train", &args.train)?,
            args.read.read_vec("--test", &args.test)?,
        )
    };
    if train.len() < 2 || test.is_empty() {
        bail!(
            "need at least 2 training flows and 1 test flow (have {} and {})",
            train.len(),
            test.len()
        );
    }
    let attacks = args.read.read_vec("--attacks", &args.attacks)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let t0 = test
        .iter()
        .map(|r| r.start_us)
        .min()
        .expect("test is not empty");
    let t1 = test
        .iter()
        .map(|r| r.start_us)
        .max()
        .expect("test is not empty");
    eprintln!(
        "{} training flows, {} test flows over {:.1} s",
        train.len(),
        test.len(),
        (t1 - t0) as f64 / 1e6
    );

    let mut synthetic: Vec<(String, Vec<FlowRecord>)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut nll_table =
        String::from("| model | held-out per-task NLL (nats per flow) |\n|---|---|\n");
    for &kind in &args.models {
        let bar = ProgressBar::new(1);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}",
            )?
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("train {kind}"));
        let (fit_part, validation) =
            temponet::model::Validation::split(kind, &train, args.validation, args.patience)
                .context("--validation")?;
        let opts = FitOptions {
            epochs: args.epochs.max(1),
            device: args.device,
            seed: args.seed,
            validation,
        };
        let model = Model::fit_new(kind, &ModelConfig::default(), fit_part, &opts, &mut |p| {
            bar.set_length((p.epochs * p.batches) as u64);
            bar.set_position(((p.epoch - 1) * p.batches + p.batch) as u64);
            bar.set_message(format!(
                "epoch {}/{} nll {:.3}",
                p.epoch,
                p.epochs,
                p.batch_nll.flow_total()
            ));
        })?;
        bar.finish_and_clear();
        let nll: TaskNll = model.heldout_nll(&train, &test)?;
        println!(
            "held-out per-task NLL of {kind} ({} test flows):\n{nll}",
            test.len()
        );
        nll_table.push_str(&format!(
            "| {kind} | {} |\n",
            nll.to_string().replace('\n', "; ")
        ));
        let gbar = ProgressBar::new_spinner();
        gbar.set_prefix(format!("generate {kind}"));
        let mut req =
            GenerateRequest::new(t0, GenLimit::SpanUs(t1 - t0 + 1), args.seed, args.pairs);
        // A model whose pairs keep bursting would generate without end: stop it at a multiple of the real count.
        req.max_flows = (test.len() as u64)
            .saturating_mul(args.max_flows_factor)
            .max(10_000);
        let generated = match model.generate(&req, &mut |n| gbar.set_message(format!("{n} flows")))
        {
            Ok(g) => g,
            Err(e) => {
                gbar.finish_and_clear();
                eprintln!("{kind}: generation failed, left out of the comparison: {e}");
                failures.push(format!("{kind}: {e}"));
                continue;
            }
        };
        gbar.finish_and_clear();
        eprintln!(
            "{kind}: generated {} flows ({} lane sessions, {} ended by the length guard), repairs: {:?}",
            generated.flows.len(),
            generated.lane_sessions,
            generated.sessions_guarded,
            generated.repairs
        );
        let path = args.out.join(format!("{kind}.jsonl"));
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = FlowWriter::new(std::io::BufWriter::new(file), OutputFormat::Jsonl)?;
        for r in &generated.flows {
            w.write(r)?;
        }
        w.finish()?;
        synthetic.push((kind.to_string(), generated.flows));
    }
    if synthetic.is_empty() {
        bail!("no model generated the test span: {}", failures.join("; "));
    }
    let sets: Vec<(&str, &[FlowRecord])> = synthetic
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let opts = EvalOptions {
        attacks,
        plot_dir: Some(args.out.clone()),
        utility: !args.no_utility,
        ..EvalOptions::default()
    };
    let report = compare(&test, &train, &sets, &opts)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out.join("report.md"), report.to_markdown())?;
    for f in &failures {
        nll_table.push_str(&format!(
            "\nGeneration failed, not in the comparison: {f}\n"
        ));
    }
    std::fs::write(args.out.join("nll.md"), &nll_table)?;
    println!("{}", report.summary_table());
    for f in &failures {
        println!("not compared (generation failed): {f}");
    }
    println!("report: {}", args.out.join("report.md").display());
    Ok(())
}
