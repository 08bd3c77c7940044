//! `temponet eval --real FILE... --synthetic FILE... [--train FILE...] [--attacks FILE...] --out DIR`:
//! fidelity, utility and privacy of synthetic sets (one, or more side by side with `--also NAME=FILE`) against
//! real flows. Writes `DIR/report.json`,
//! `DIR/report.md` and PNG plots, and prints the summary table. The metrics are defined in
//! `temponet::metrics` (see its docs).

use super::InputOpts;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Duration;
use temponet::FlowRecord;
use temponet::metrics::{EvalOptions, compare};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Real flows to compare with (the test part when --train is given).
    #[arg(long, required = true, num_args = 1..)]
    pub real: Vec<PathBuf>,
    /// Synthetic flows (all files form one synthetic set).
    #[arg(long, required = true, num_args = 1..)]
    pub synthetic: Vec<PathBuf>,
    /// Real flows the generator was trained on (enables privacy metrics and TRTR on them). Must be disjoint
    /// from --real.
    #[arg(long, num_args = 1..)]
    pub train: Vec<PathBuf>,
    /// Labelled flows whose non-benign rows are attacks, for the intrusion-detection utility task (e.g.
    /// ../shared/data/cicids2017/*.csv).
    #[arg(long, num_args = 1..)]
    pub attacks: Vec<PathBuf>,
    /// Name of the synthetic set in the tables.
    #[arg(long, default_value = "synthetic")]
    pub name: String,
    /// Further synthetic sets to compare side by side, each `NAME=FILE` (repeat the option).
    #[arg(long = "also", value_parser = parse_named)]
    pub also: Vec<(String, PathBuf)>,
    /// Compare only the real flows within the time span of the (first) synthetic set: for streaming runs, whose
    /// synthetic flows start once the model is built.
    #[arg(long)]
    pub clip_to_synthetic: bool,
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Busiest real host pairs for the per-pair inter-arrival EMD.
    #[arg(long, default_value_t = 10)]
    pub top_pairs: usize,
    /// Skip the utility tasks (random forests).
    #[arg(long)]
    pub no_utility: bool,
    #[command(flatten)]
    pub input: InputOpts,
}

fn read_set(input: &InputOpts, what: &str, paths: &[PathBuf]) -> anyhow::Result<Vec<FlowRecord>> {
    let v = input.read_vec(what, paths)?;
    if v.is_empty() && !paths.is_empty() {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        bail!("the {what} files hold no flows: {}", names.join(", "));
    }
    Ok(v)
}

fn parse_named(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), PathBuf::from(p))),
        _ => Err(format!("expected NAME=FILE, got {s:?}")),
    }
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut real = read_set(&args.input, "--real", &args.real)?;
    let synthetic = read_set(&args.input, "--synthetic", &args.synthetic)?;
    let mut sets = vec![(args.name.clone(), synthetic)];
    for (name, path) in &args.also {
        let what = format!("--also {name}");
        sets.push((
            name.clone(),
            read_set(&args.input, &what, std::slice::from_ref(path))?,
        ));
    }
    if args.clip_to_synthetic {
        let starts = sets[0].1.iter().map(|r| r.start_us);
        let (lo, hi) = (starts.clone().min(), starts.max());
        if let (Some(lo), Some(hi)) = (lo, hi) {
            let before = real.len();
            real.retain(|r| r.start_us >= lo && r.start_us <= hi);
            eprintln!(
                "--clip-to-synthetic: {} of {before} real flows lie within the synthetic span",
                real.len()
            );
            if real.is_empty() {
                bail!("no real flow lies within the synthetic flows' time span");
            }
        }
    }
    let train = read_set(&args.input, "--train", &args.train)?;
    let attacks = read_set(&args.input, "--attacks", &args.attacks)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let opts = EvalOptions {
        top_pairs: args.top_pairs,
        attacks,
        plot_dir: Some(args.out.clone()),
        utility: !args.no_utility,
        privacy: true,
    };
    let bar = ProgressBar::new_spinner().with_message(format!(
        "evaluating {} synthetic flows against {} real flows{}",
        sets.iter().map(|s| s.1.len()).sum::<usize>(),
        real.len(),
        if args.no_utility {
            ""
        } else {
            " (utility trains random forests)"
        }
    ));
    bar.set_style(
        ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let named: Vec<(&str, &[FlowRecord])> = sets
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let result = compare(&real, &train, &named, &opts);
    bar.finish_and_clear();
    let mut report = result.context("evaluation failed")?;
    report.real.files = names(&args.real);
    if let Some(t) = report.train.as_mut() {
        t.files = names(&args.train);
    }
    if let Some(a) = report.attacks.as_mut() {
        a.files = names(&args.attacks);
    }
    for (i, m) in report.models.iter_mut().enumerate() {
        m.synthetic.files = match i {
            0 => names(&args.synthetic),
            _ => names(std::slice::from_ref(&args.also[i - 1].1)),
        };
    }
    write(
        &args.out.join("report.json"),
        &serde_json::to_string_pretty(&report)?,
    )?;
    write(&args.out.join("report.md"), &report.to_markdown())?;
    print!("{}", report.summary_table());
    println!(
        "\nwrote {} (report.json, report.md, {})",
        args.out.display(),
        report.plots.join(", ")
    );
    Ok(())
}
