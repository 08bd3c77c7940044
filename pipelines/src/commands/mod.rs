//! One file per `temponet` subcommand. Each takes its parsed arguments and returns `anyhow::Result`.

pub mod compare;
pub mod convert;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod run;
pub mod simulate;
pub mod train;

use std::path::PathBuf;

/// Options shared by every command that reads flow files.
#[derive(clap::Args, Debug, Clone)]
pub struct InputOpts {
    /// What to do with a row that does not parse: `fail` (stop with its error) or `skip` (write it to the reject
    /// file, count it, go on).
    #[arg(long, default_value = "fail")]
    pub on_error: temponet::format::OnError,
    /// Where `--on-error skip` writes rejected rows (JSON lines with file, line, field, reason and the raw row).
    #[arg(long, default_value = "temponet-rejects.jsonl")]
    pub rejects: PathBuf,
}

impl InputOpts {
    /// Reads the files with this policy, then reports what was rejected and where it went.
    pub fn read(
        &self,
        paths: &[PathBuf],
        each: impl FnMut(temponet::FlowRecord),
    ) -> anyhow::Result<temponet::format::ReadStats> {
        let mut sink = temponet::format::RejectSink::new(&self.rejects);
        let stats = temponet::format::read_files(paths, self.on_error, Some(&mut sink), each)?;
        if stats.rejected() > 0 {
            eprintln!(
                "rejected {} rows (written to {})",
                stats.rejected(),
                sink.path().display()
            );
        }
        Ok(stats)
    }

    /// Reads the files of one command-line option (`what`, e.g. `--train`) into memory; errors say which option.
    pub fn read_vec(
        &self,
        what: &str,
        paths: &[PathBuf],
    ) -> anyhow::Result<Vec<temponet::FlowRecord>> {
        use anyhow::Context;
        let mut v = Vec::new();
        self.read(paths, |r| v.push(r))
            .with_context(|| format!("reading the {what} files"))?;
        Ok(v)
    }
}
