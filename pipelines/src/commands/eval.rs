//! `temponet eval --real FILE... --synthetic FILE... [--train FILE...] [--attacks FILE...] --out DIR`:
//! fidelity, utility and privacy of one synthetic set against real flows. Writes `DIR/report.json`,
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

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let real = read_set(&args.input, "--real", &args.real)?;
    let synthetic = read_set(&args.input, "--synthetic", &args.synthetic)?;
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
        synthetic.len(),
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
    let result = compare(&real, &train, &[(args.name.as_str(), &synthetic)], &opts);
    bar.finish_and_clear();
    let mut report = result.context("evaluation failed")?;
    report.real.files = names(&args.real);
    if let Some(t) = report.train.as_mut() {
        t.files = names(&args.train);
    }
    if let Some(a) = report.attacks.as_mut() {
        a.files = names(&args.attacks);
    }
    if let Some(m) = report.models.first_mut() {
        m.synthetic.files = names(&args.synthetic);
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
