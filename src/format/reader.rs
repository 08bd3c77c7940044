//! The streaming reader: detects the family from the first non-blank line, then yields one
//! `Result<FlowRecord, ParseError>` per data row without holding the file in memory.
//! [`read_files`] adds the error policy: `fail` stops at the first bad row, `skip` writes it to a reject file
//! and counts it; nothing is dropped silently.

use super::cicflowmeter::CicColumns;
use super::netshare::NetShareColumns;
use super::nfdump::NfdumpColumns;
use super::values::Columns;
use super::zeek::{self, ZeekColumns};
use super::{FieldError, Format, FormatError, ParseError, detect, jsonl};
use crate::record::FlowRecord;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

enum CsvKind {
    Nfdump(NfdumpColumns),
    NetShare(NetShareColumns),
    Zeek(ZeekColumns),
    Cic(CicColumns),
}

enum LineKind {
    ZeekTsv {
        sep: char,
        cols: Option<Box<ZeekColumns>>,
    },
    ZeekJson,
    Jsonl,
}

/// Wraps the CSV input to note where every newline is, because the csv crate's own line numbers skip blank lines
/// inconsistently; the reader turns a record's byte offset into its true physical line.
struct NewlineTracker<R> {
    inner: R,
    offset: u64,
    newlines: Arc<Mutex<VecDeque<u64>>>,
}

impl<R: Read> Read for NewlineTracker<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut q = self
            .newlines
            .lock()
            .expect("never poisoned: no panics while held");
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                q.push_back(self.offset + i as u64);
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// Physical line of a byte offset, consuming the newline positions before it (offsets only grow).
struct LineCounter {
    newlines: Arc<Mutex<VecDeque<u64>>>,
    passed: u64,
}

impl LineCounter {
    fn line_of(&mut self, byte: u64) -> u64 {
        let mut q = self
            .newlines
            .lock()
            .expect("never poisoned: no panics while held");
        while q.front().is_some_and(|&nl| nl < byte) {
            q.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

#[allow(clippy::large_enum_variant)] // one value per open file: size does not matter
enum Rows {
    Csv {
        rdr: csv::Reader<Box<dyn Read + Send>>,
        rec: csv::StringRecord,
        kind: CsvKind,
        lines: LineCounter,
    },
    Lines {
        lines: io::Lines<Box<dyn BufRead + Send>>,
        line_no: u64,
        kind: LineKind,
    },
}

/// Reads one flow file of any supported family. Iterate it for records.
pub struct FlowReader {
    file: String,
    format: Format,
    rows: Rows,
    done: bool,
}

impl FlowReader {
    /// Opens a file and recognises its family. Errors name the file.
    pub fn open(path: impl AsRef<Path>) -> Result<FlowReader, FormatError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let f = File::open(path).map_err(|cause| FormatError::Io {
            file: name.clone(),
            cause,
        })?;
        FlowReader::from_reader(name, BufReader::with_capacity(1 << 16, f))
    }

    /// Reads from any buffered source; `name` is used in error messages.
    pub fn from_reader(
        name: impl Into<String>,
        mut input: impl BufRead + Send + 'static,
    ) -> Result<FlowReader, FormatError> {
        let file = name.into();
        let io_err = |cause| FormatError::Io {
            file: file.clone(),
            cause,
        };
        // Consume up to the first non-blank line, keep every byte so line numbers stay true, then re-chain.
        let mut prefix = Vec::new();
        let mut first_line_no = 0u64;
        let first = loop {
            let mut line = Vec::new();
            let n = input.read_until(b'\n', &mut line).map_err(io_err)?;
            if n == 0 {
                return Err(FormatError::Header {
                    file,
                    message: "empty file: no flow records".into(),
                });
            }
            first_line_no += 1;
            prefix.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_start_matches('\u{feff}').trim();
            if !text.is_empty() {
                break text.to_string();
            }
        };
        if prefix.starts_with(b"\xef\xbb\xbf") {
            prefix.drain(..3);
        }
        let format = detect(&first).ok_or_else(|| FormatError::Unknown {
            file: file.clone(),
            first_line: first.chars().take(200).collect(),
        })?;
        let body: Box<dyn Read + Send> = Box::new(Cursor::new(prefix).chain(input));
        let header_err = |message: String| FormatError::Header {
            file: file.clone(),
            message,
        };
        let rows = match format {
            Format::ZeekTsv | Format::ZeekJson | Format::Jsonl => {
                let kind = match format {
                    Format::ZeekTsv => LineKind::ZeekTsv {
                        sep: '\t',
                        cols: None,
                    },
                    Format::ZeekJson => LineKind::ZeekJson,
                    _ => LineKind::Jsonl,
                };
                let lines = (Box::new(BufReader::new(body)) as Box<dyn BufRead + Send>).lines();
                Rows::Lines {
                    lines,
                    line_no: 0,
                    kind,
                }
            }
            _ => {
                let newlines = Arc::new(Mutex::new(VecDeque::new()));
                let tracked: Box<dyn Read + Send> = Box::new(NewlineTracker {
                    inner: body,
                    offset: 0,
                    newlines: newlines.clone(),
                });
                let mut rdr = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(tracked);
                let lines = LineCounter {
                    newlines,
                    passed: 0,
                };
                let headerless = format == Format::Nfdump
                    && !first
                        .split(',')
                        .any(|c| matches!(c.trim(), "te" | "ts" | "sa"));
                let kind = if headerless {
                    CsvKind::Nfdump(NfdumpColumns::headerless())
                } else {
                    let mut header = csv::StringRecord::new();
                    rdr.read_record(&mut header)
                        .map_err(|e| header_err(format!("line {first_line_no}: {e}")))?;
                    let cols = Columns::new(header.iter());
                    match format {
                        Format::Nfdump => {
                            CsvKind::Nfdump(NfdumpColumns::from_header(&cols).map_err(header_err)?)
                        }
                        Format::NetShare => CsvKind::NetShare(
                            NetShareColumns::from_header(&cols).map_err(header_err)?,
                        ),
                        Format::ZeekCsv => CsvKind::Zeek(
                            ZeekColumns::from_names(header.iter()).map_err(header_err)?,
                        ),
                        Format::CicFlowMeter => {
                            CsvKind::Cic(CicColumns::from_header(&cols).map_err(header_err)?)
                        }
                        _ => unreachable!(),
                    }
                };
                Rows::Csv {
                    rdr,
                    rec: csv::StringRecord::new(),
                    kind,
                    lines,
                }
            }
        };
        Ok(FlowReader {
            file,
            format,
            rows,
            done: false,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }
    pub fn file(&self) -> &str {
        &self.file
    }
}

impl Iterator for FlowReader {
    type Item = Result<FlowRecord, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        let FlowReader {
            file, rows, done, ..
        } = self;
        if *done {
            return None;
        }
        let error = |line: u64, e: FieldError, raw: String| ParseError {
            file: file.clone(),
            line,
            field: e.field,
            message: e.message,
            raw,
        };
        loop {
            match rows {
                Rows::Csv {
                    rdr,
                    rec,
                    kind,
                    lines,
                } => {
                    match rdr.read_record(rec) {
                        Ok(false) => {
                            *done = true;
                            return None;
                        }
                        Ok(true) => {}
                        Err(e) => {
                            let line = lines.line_of(rdr.position().byte().saturating_sub(1));
                            // A CSV syntax error (bad UTF-8, unbalanced quote) stops the file: the parser cannot resync.
                            *done = !matches!(e.kind(), csv::ErrorKind::Utf8 { .. });
                            return Some(Err(error(
                                line,
                                FieldError::row(format!("CSV: {e}")),
                                String::new(),
                            )));
                        }
                    }
                    // The reader stops just past the record (at the `\n` of a CRLF, after a lone `\n`): the line of
                    // the byte before is the record's last line; quoted newlines inside fields move the start up.
                    let embedded = rec
                        .iter()
                        .map(|f| f.bytes().filter(|b| *b == b'\n').count() as u64)
                        .sum::<u64>();
                    let line = lines.line_of(rdr.position().byte().saturating_sub(1)) - embedded;
                    let fields: Vec<&str> = rec.iter().collect();
                    if fields.iter().all(|f| f.trim().is_empty()) {
                        continue;
                    }
                    let parsed = match kind {
                        CsvKind::Nfdump(c) => {
                            if NfdumpColumns::is_summary(&fields) {
                                *done = true;
                                return None;
                            }
                            c.parse(&fields)
                        }
                        CsvKind::NetShare(c) => c.parse(&fields),
                        CsvKind::Zeek(c) => c.parse(&fields),
                        CsvKind::Cic(c) => c.parse(&fields),
                    };
                    return Some(parsed.map_err(|e| {
                        let raw = fields.join(",");
                        error(line, e, raw)
                    }));
                }
                Rows::Lines {
                    lines,
                    line_no,
                    kind,
                } => {
                    let text = match lines.next() {
                        None => {
                            *done = true;
                            return None;
                        }
                        Some(Err(e)) => {
                            *line_no += 1;
                            let line = *line_no;
                            *done = e.kind() != io::ErrorKind::InvalidData;
                            return Some(Err(error(
                                line,
                                FieldError::row(format!("read error: {e}")),
                                String::new(),
                            )));
                        }
                        Some(Ok(t)) => t,
                    };
                    *line_no += 1;
                    let line = *line_no;
                    let t = text.trim_end_matches('\r');
                    if t.trim().is_empty() {
                        continue;
                    }
                    let parsed = match kind {
                        LineKind::ZeekTsv { sep, cols } => {
                            if let Some(meta) = t.strip_prefix('#') {
                                if meta.starts_with("separator") {
                                    *sep = zeek::parse_separator(t).unwrap_or('\t');
                                } else if let Some(names) = meta.strip_prefix("fields") {
                                    let names: Vec<&str> =
                                        names.split(*sep).filter(|s| !s.is_empty()).collect();
                                    match ZeekColumns::from_names(names) {
                                        Ok(c) => *cols = Some(Box::new(c)),
                                        Err(m) => {
                                            *done = true;
                                            return Some(Err(error(
                                                line,
                                                FieldError::row(m),
                                                t.to_string(),
                                            )));
                                        }
                                    }
                                }
                                continue;
                            }
                            match cols {
                                None => {
                                    Err(FieldError::row("data line before the `#fields` header"))
                                }
                                Some(c) => {
                                    let fields: Vec<&str> = t.split(*sep).collect();
                                    c.parse(&fields)
                                }
                            }
                        }
                        LineKind::ZeekJson => zeek::parse_json(t),
                        LineKind::Jsonl => jsonl::parse(t),
                    };
                    return Some(parsed.map_err(|e| error(line, e, t.to_string())));
                }
            }
        }
    }
}

/// What to do with a row that does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with the row's error (the default for files: a user should see bad data at once).
    #[default]
    Fail,
    /// Write the row and its reason to the reject file, count it, go on.
    Skip,
}

impl std::str::FromStr for OnError {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail" => Ok(OnError::Fail),
            "skip" => Ok(OnError::Skip),
            _ => Err(format!("--on-error must be fail or skip, not {s:?}")),
        }
    }
}

/// Rejected rows as JSON lines: `{"file","line","field","error","raw"}`.
pub struct RejectSink {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    count: u64,
}

impl RejectSink {
    /// The file is created only when the first row is rejected.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RejectSink {
            path: path.into(),
            out: None,
            count: 0,
        }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn write(&mut self, e: &ParseError) -> io::Result<()> {
        if self.out.is_none() {
            self.out = Some(BufWriter::new(File::create(&self.path)?));
        }
        let line = serde_json::json!({"file": e.file, "line": e.line, "field": e.field, "error": e.message, "raw": e.raw});
        let out = self.out.as_mut().expect("opened above");
        writeln!(out, "{line}")?;
        self.count += 1;
        Ok(())
    }
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

/// Per-file outcome of [`read_files`].
#[derive(Clone, Debug, PartialEq)]
pub struct FileStats {
    pub file: String,
    pub format: Format,
    pub rows: u64,
    pub rejected: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadStats {
    pub files: Vec<FileStats>,
}

impl ReadStats {
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
    pub fn rejected(&self) -> u64 {
        self.files.iter().map(|f| f.rejected).sum()
    }
}

/// Reads every file in turn and hands each record to `each`. With [`OnError::Skip`] bad rows go to `rejects`
/// (required then) and are counted; a file where every row is bad is still an error (it is the wrong file).
pub fn read_files<P: AsRef<Path>>(
    paths: &[P],
    on_error: OnError,
    mut rejects: Option<&mut RejectSink>,
    mut each: impl FnMut(FlowRecord),
) -> Result<ReadStats, FormatError> {
    let mut stats = ReadStats::default();
    for p in paths {
        let reader = FlowReader::open(p)?;
        let mut fs = FileStats {
            file: reader.file().to_string(),
            format: reader.format(),
            rows: 0,
            rejected: 0,
        };
        let mut first_err = None;
        for item in reader {
            match item {
                Ok(r) => {
                    fs.rows += 1;
                    each(r);
                }
                Err(e) => match (on_error, rejects.as_deref_mut()) {
                    (OnError::Skip, Some(sink)) => {
                        sink.write(&e).map_err(|cause| FormatError::Io {
                            file: sink.path().display().to_string(),
                            cause,
                        })?;
                        fs.rejected += 1;
                        first_err.get_or_insert(e);
                    }
                    _ => return Err(e.into()),
                },
            }
        }
        if fs.rows == 0 && fs.rejected > 0 {
            let first = Box::new(first_err.expect("rejected > 0"));
            return Err(FormatError::TooManyRejected {
                file: fs.file,
                rejected: fs.rejected,
                total: fs.rejected,
                first,
            });
        }
        stats.files.push(fs);
    }
    if let Some(sink) = rejects {
        sink.flush().map_err(|cause| FormatError::Io {
            file: sink.path().display().to_string(),
            cause,
        })?;
    }
    Ok(stats)
}

/// Reads every record of the files into memory (for commands that need the whole trace), failing on a bad row.
pub fn read_all<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<FlowRecord>, FormatError> {
    let mut out = Vec::new();
    read_files(paths, OnError::Fail, None, |r| out.push(r))?;
    Ok(out)
}
