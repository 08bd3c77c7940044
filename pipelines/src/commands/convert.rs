//! `temponet convert --to jsonl|csv|zeek IN... OUT`: any readable file into another format (to feed Kafka topics,
//! or hand a capture to Zeek-based tools).

use super::InputOpts;
use anyhow::Context;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use temponet::format::{FlowWriter, OutputFormat};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format; defaults to what OUT's extension says (.jsonl, .csv, .log/.tsv).
    #[arg(long)]
    pub to: Option<OutputFormat>,
    /// Input files, then the output file (`-` for standard output).
    #[arg(required = true, num_args = 2..)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub input: InputOpts,
}

pub fn run(mut args: Args) -> anyhow::Result<()> {
    let out = args.paths.pop().expect("clap requires two paths");
    let format = match args.to.or_else(|| OutputFormat::from_extension(&out)) {
        Some(f) => f,
        None => anyhow::bail!(
            "say the output format with --to jsonl|csv|zeek ({} has no known extension)",
            out.display()
        ),
    };
    let sink: Box<dyn std::io::Write> = if out.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(File::create(&out).with_context(|| format!("cannot create {}", out.display()))?)
    };
    let mut w = FlowWriter::new(BufWriter::new(sink), format)?;
    let mut write_err = None;
    let stats = args.input.read(&args.paths, |r| {
        if write_err.is_none() {
            write_err = w.write(&r).err();
        }
    })?;
    if let Some(e) = write_err {
        // A reader that went away (`| head`) is not a failure of ours.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        return Err(e).with_context(|| format!("writing {}", out.display()));
    }
    let written = w.written();
    w.finish()?;
    if out.as_os_str() != "-" {
        eprintln!(
            "wrote {written} flows to {} ({} read, {} rejected)",
            out.display(),
            stats.rows(),
            stats.rejected()
        );
    }
    Ok(())
}
