//! The `temponet` command line. Thin by design: argument parsing here, the work in `temponet_pipelines::commands`.

use clap::{Parser, Subcommand};
use temponet_pipelines::commands;

#[derive(Parser)]
#[command(
    name = "temponet",
    version,
    about = "Learn how network traffic behaves in time and generate realistic synthetic flows"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarise flow files: rows, span, hosts, pairs, protocol/port/flag mix, inter-arrival quantiles.
    Inspect(commands::inspect::Args),
    /// Convert flow files of any readable family to JSON lines, nfdump CSV or Zeek TSV.
    Convert(commands::convert::Args),
    /// Fidelity, utility and privacy of synthetic flows against real ones: report.json, report.md, PNG plots.
    Eval(commands::eval::Args),
    /// Generate traffic of the built-in network simulator (known truth, optional labelled attacks and drift).
    Simulate(commands::simulate::Args),
    /// Run the streaming pipeline: flows from Kafka into sharded host-pair state, metrics (and, once the generator
    /// is plugged in, synthetic flows) back to Kafka.
    Run(Box<commands::run::Args>),
    /// Fit a model (temponet, stan or independent) on flow files; print the held-out per-task NLL.
    Train(commands::train::Args),
    /// Train several models on the same part, generate the test span from each, and evaluate them side by side.
    Compare(commands::compare::Args),
    /// Generate synthetic flows from a trained model.
    Generate(commands::generate::Args),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Eval(a) => commands::eval::run(a),
        Command::Simulate(a) => commands::simulate::run(a),
        Command::Run(a) => commands::run::run(*a),
        Command::Train(a) => commands::train::run(a),
        Command::Compare(a) => commands::compare::run(a),
        Command::Generate(a) => commands::generate::run(a),
    };
    if let Err(e) = result {
        eprintln!("temponet: error: {e:#}");
        std::process::exit(1);
    }
}
