//! Reading and writing flow files. Every input family is recognised from its first non-blank line, so users never
//! name the format; each row becomes a [`FlowRecord`] or a [`ParseError`] naming file, line and field.
//!
//! | family | recognised by | module |
//! |---|---|---|
//! | nfdump / UGR'16 CSV `te,td,sa,da,sp,dp,pr,flg,fwd,stos,pkt,byt,label` | header with `te`/`ts`,`sa`,`da`, or a headerless row starting with a date | [`nfdump`] |
//! | NetShare CSV `srcip,dstip,srcport,dstport,proto,ts,td,pkt,byt,type` | header with `srcip`,`dstip` | [`netshare`] |
//! | Zeek conn.log TSV | `#separator` / `#fields` lines | [`zeek`] |
//! | Zeek conn.log JSON lines | `{` with `id.orig_h` | [`zeek`] |
//! | Zeek conn.log as CSV (IoT-23) | header with `id.orig_h` | [`zeek`] |
//! | CICFlowMeter CSV (CIC-IDS2017) | header with `Flow ID` / `Src IP` / `Source IP` | [`cicflowmeter`] |
//! | temponet JSON lines | `{` with `src` and `ts` | [`jsonl`] |
//!
//! Writers ([`writer`]) produce temponet JSON lines, nfdump-style CSV and Zeek conn.log TSV; all three read back.

pub mod cicflowmeter;
pub mod jsonl;
pub mod netshare;
pub mod nfdump;
pub mod reader;
pub mod values;
pub mod writer;
pub mod zeek;

pub use reader::{FileStats, FlowReader, OnError, ReadStats, RejectSink, read_all, read_files};
pub use writer::{FlowWriter, OutputFormat};

use std::fmt;

/// An input file family (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Nfdump,
    NetShare,
    ZeekTsv,
    ZeekJson,
    ZeekCsv,
    CicFlowMeter,
    Jsonl,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Nfdump => "nfdump CSV",
            Format::NetShare => "NetShare CSV",
            Format::ZeekTsv => "Zeek conn.log TSV",
            Format::ZeekJson => "Zeek conn.log JSON",
            Format::ZeekCsv => "Zeek conn.log CSV",
            Format::CicFlowMeter => "CICFlowMeter CSV",
            Format::Jsonl => "temponet JSON lines",
        })
    }
}

/// One row that could not become a flow record: where it is, which field, what is wrong, and the row's text
/// (kept so a `--on-error skip` run can write it to the reject file).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{file}:{line}: {}{message}", field.as_deref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct ParseError {
    pub file: String,
    pub line: u64,
    pub field: Option<String>,
    pub message: String,
    pub raw: String,
}

/// A field-level failure inside one row, before the reader adds file, line and raw text.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub field: Option<String>,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
    pub fn row(message: impl Into<String>) -> Self {
        FieldError {
            field: None,
            message: message.into(),
        }
    }
}

/// Errors that stop reading a file as a whole.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The I/O error is part of the message (not the error chain), so `{:#}` does not print it twice.
    #[error("{file}: {cause}")]
    Io { file: String, cause: std::io::Error },
    #[error(
        "{file}: unrecognised flow format; first line: {first_line:?}\n  (readable: nfdump/UGR'16 CSV, NetShare CSV, Zeek conn.log TSV/JSON/CSV, CICFlowMeter CSV, temponet JSON lines)"
    )]
    Unknown { file: String, first_line: String },
    #[error("{file}: {message}")]
    Header { file: String, message: String },
    #[error(transparent)]
    Row(Box<ParseError>),
    #[error("{file}: {rejected} of {total} rows rejected; first: {first}")]
    TooManyRejected {
        file: String,
        rejected: u64,
        total: u64,
        first: Box<ParseError>,
    },
}

impl From<ParseError> for FormatError {
    fn from(e: ParseError) -> Self {
        FormatError::Row(Box::new(e))
    }
}

/// Recognises the family of a file from its first non-blank line (already stripped of BOM and line ending).
pub fn detect(first_line: &str) -> Option<Format> {
    let line = first_line.trim();
    if line.starts_with("#separator")
        || line.starts_with("#fields")
        || line.starts_with("#set_separator")
    {
        return Some(Format::ZeekTsv);
    }
    if line.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let o = v.as_object()?;
        if o.contains_key("id.orig_h") {
            return Some(Format::ZeekJson);
        }
        if o.contains_key("src") && o.contains_key("ts") {
            return Some(Format::Jsonl);
        }
        return None;
    }
    let cols: Vec<String> = line.split(',').map(values::normalise_name).collect();
    let has = |n: &str| cols.iter().any(|c| c == n);
    if has("idorigh") {
        return Some(Format::ZeekCsv);
    }
    if has("srcip") && has("dstip") && has("ts") && !has("flowid") {
        return Some(Format::NetShare);
    }
    if has("sa") && has("da") && (has("te") || has("ts")) {
        return Some(Format::Nfdump);
    }
    if has("flowid") || has("srcip") || has("sourceip") {
        return Some(Format::CicFlowMeter);
    }
    // nfdump without header: the first column is a date `YYYY-MM-DD HH:MM:SS`.
    let first = line.split(',').next().unwrap_or("");
    if cols.len() >= 12 && values::parse_datetime_us(first).is_some() {
        return Some(Format::Nfdump);
    }
    None
}
