//! `temponet inspect FILE...`: how a user checks that their data was read right.

use super::InputOpts;
use std::path::PathBuf;
use temponet::inspect::SummaryBuilder;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Flow files of any supported family (chosen from each file's header).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub input: InputOpts,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut b = SummaryBuilder::default();
    let stats = args.input.read(&args.files, |r| b.add(&r))?;
    let summary = b.finish();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    for f in &stats.files {
        println!(
            "file            {} ({}, {} rows{})",
            f.file,
            f.format,
            f.rows,
            if f.rejected > 0 {
                format!(", {} rejected", f.rejected)
            } else {
                String::new()
            }
        );
    }
    print!("{summary}");
    if stats.rejected() > 0 {
        println!("rejected        {}", stats.rejected());
    }
    Ok(())
}
