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
    /// Fit a model (temponet, stan or independent) on flow files; print the held-out per-task NLL.
    Train(commands::train::Args),
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
        Command::Train(a) => commands::train::run(a),
        Command::Generate(a) => commands::generate::run(a),
    };
    if let Err(e) = result {
        eprintln!("temponet: error: {e:#}");
        std::process::exit(1);
    }
}
