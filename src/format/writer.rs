//! Writers: temponet JSON lines (lossless), nfdump-style CSV (lossless: microsecond times, 8-letter flags) and
//! Zeek conn.log TSV (what Zeek tools read; lossy: all packets/bytes on the originator side, flags as `history`).

use super::values::{format_datetime_us, format_seconds};
use super::zeek::flags_history;
use crate::record::{FlowRecord, proto};
use std::io::{self, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Jsonl,
    Csv,
    Zeek,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jsonl" | "json" => Ok(OutputFormat::Jsonl),
            "csv" | "nfdump" => Ok(OutputFormat::Csv),
            "zeek" | "tsv" => Ok(OutputFormat::Zeek),
            _ => Err(format!("unknown output format {s:?} (jsonl, csv or zeek)")),
        }
    }
}

impl OutputFormat {
    /// The format a file name asks for by its extension (`.jsonl`, `.csv`, `.log`/`.tsv`), if any.
    pub fn from_extension(path: &std::path::Path) -> Option<OutputFormat> {
        match path.extension()?.to_str()? {
            "jsonl" | "json" => Some(OutputFormat::Jsonl),
            "csv" => Some(OutputFormat::Csv),
            "log" | "tsv" => Some(OutputFormat::Zeek),
            _ => None,
        }
    }
}

const ZEEK_FIELDS: &str = "ts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\tlabel";
const ZEEK_TYPES: &str = "time\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\tstring";

/// Writes records one at a time in a chosen format; call [`FlowWriter::finish`] to write trailers and flush.
pub struct FlowWriter<W: Write> {
    out: W,
    format: OutputFormat,
    written: u64,
}

impl<W: Write> FlowWriter<W> {
    pub fn new(mut out: W, format: OutputFormat) -> io::Result<Self> {
        match format {
            OutputFormat::Jsonl => {}
            OutputFormat::Csv => writeln!(out, "te,td,sa,da,sp,dp,pr,flg,fwd,stos,pkt,byt,label")?,
            OutputFormat::Zeek => {
                writeln!(out, "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn")?;
                writeln!(out, "#fields\t{ZEEK_FIELDS}\n#types\t{ZEEK_TYPES}")?;
            }
        }
        Ok(FlowWriter { out, format, written: 0 })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write(&mut self, r: &FlowRecord) -> io::Result<()> {
        let out = &mut self.out;
        match self.format {
            OutputFormat::Jsonl => {
                serde_json::to_writer(&mut *out, r)?;
                out.write_all(b"\n")?;
            }
            OutputFormat::Csv => {
                let label = r.label.as_deref().map(csv_field).unwrap_or_default();
                writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},0,0,{},{},{}",
                    format_datetime_us(r.end_us()),
                    format_seconds(r.duration_us as i64),
                    r.src,
                    r.dst,
                    r.src_port,
                    r.dst_port,
                    proto::name(r.proto),
                    r.flags,
                    r.packets,
                    r.bytes,
                    label
                )?;
            }
            OutputFormat::Zeek => {
                let history = if r.is_tcp() { flags_history(r.flags) } else { String::new() };
                let label = r.label.as_deref().map(|l| l.replace(['\t', '\n'], " ")).unwrap_or_else(|| "-".into());
                writeln!(
                    out,
                    "{}\tC{:016x}\t{}\t{}\t{}\t{}\t{}\t-\t{}\t-\t-\t-\t-\t-\t0\t{}\t{}\t{}\t0\t0\t(empty)\t{}",
                    format_seconds(r.start_us),
                    self.written,
                    r.src,
                    r.src_port,
                    r.dst,
                    r.dst_port,
                    proto::name(r.proto).to_ascii_lowercase(),
                    format_seconds(r.duration_us as i64),
                    if history.is_empty() { "-".into() } else { history },
                    r.packets,
                    r.bytes,
                    label
                )?;
            }
        }
        self.written += 1;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        if self.format == OutputFormat::Zeek {
            writeln!(self.out, "#close\t{}", chrono::Utc::now().format("%Y-%m-%d-%H-%M-%S"))?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}
