//! Zeek conn.log in its three shapes: native TSV (`#separator`, `#fields`, `#types` lines, `-` unset, `(empty)`),
//! JSON lines (`{"ts":...,"id.orig_h":...}`), and CSV with Zeek field names as header (IoT-23's `-` became empty).
//!
//! Mapping: start = `ts`; duration = `duration` (unset: 0); packets = `orig_pkts + resp_pkts`; bytes =
//! `orig_ip_bytes + resp_ip_bytes` (IP level, both directions); `history` letters become TCP flags on TCP flows
//! (`S` SYN, `H` SYN+ACK, `A` ACK, `D` ACK+PSH, `F` FIN, `R` RST, either case; other letters carry no flag);
//! ICMP's type/code (which Zeek puts in the port fields) become ports 0, as for every portless protocol;
//! label = `label`, plus `/detailed-label` when that is set (IoT-23: `Malicious/C&C`).

use super::values::{self, Columns};
use super::FieldError;
use crate::record::{FlowRecord, TcpFlags, proto};
use std::borrow::Cow;

/// The Zeek field names this reader uses, in the order of [`ZeekColumns::idx`].
const FIELDS: [&str; 14] = [
    "ts",
    "id.orig_h",
    "id.orig_p",
    "id.resp_h",
    "id.resp_p",
    "proto",
    "duration",
    "orig_pkts",
    "resp_pkts",
    "orig_ip_bytes",
    "resp_ip_bytes",
    "history",
    "label",
    "detailed-label",
];
const REQUIRED: usize = 6; // ts .. proto

/// TCP flags from a Zeek `history` string.
pub fn history_flags(history: &str) -> TcpFlags {
    let mut bits = 0u8;
    for c in history.chars() {
        bits |= match c.to_ascii_uppercase() {
            'S' => TcpFlags::SYN,
            'H' => TcpFlags::SYN | TcpFlags::ACK,
            'A' => TcpFlags::ACK,
            'D' => TcpFlags::ACK | TcpFlags::PSH,
            'F' => TcpFlags::FIN,
            'R' => TcpFlags::RST,
            _ => 0,
        };
    }
    TcpFlags(bits)
}

/// A Zeek `history` string that stands for a flag set (used by the Zeek writer; lossy by nature).
pub fn flags_history(flags: TcpFlags) -> String {
    let mut h = String::new();
    for (bit, c) in [(TcpFlags::SYN, 'S'), (TcpFlags::ACK, 'A'), (TcpFlags::PSH, 'D'), (TcpFlags::FIN, 'F'), (TcpFlags::RST, 'R')] {
        if flags.contains(bit) {
            h.push(c);
        }
    }
    h
}

/// Column positions for the TSV and CSV shapes.
#[derive(Clone, Debug)]
pub struct ZeekColumns {
    idx: [Option<usize>; 14],
}

impl ZeekColumns {
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let c = Columns::new(names);
        let mut idx = [None; 14];
        for (i, f) in FIELDS.iter().enumerate() {
            idx[i] = c.find(&[f]);
            if i < REQUIRED && idx[i].is_none() {
                return Err(format!("Zeek header has no `{f}` field"));
            }
        }
        Ok(ZeekColumns { idx })
    }

    pub fn parse(&self, row: &[&str]) -> Result<FlowRecord, FieldError> {
        if row.len() < self.idx.iter().flatten().max().map_or(0, |m| m + 1).min(REQUIRED) {
            return Err(FieldError::row(format!("row has {} fields", row.len())));
        }
        parse_fields(|k| self.idx[k].and_then(|i| row.get(i)).map(|s| Cow::Borrowed(*s)))
    }
}

/// Parses one Zeek JSON log line.
pub fn parse_json(line: &str) -> Result<FlowRecord, FieldError> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| FieldError::row(format!("invalid JSON: {e}")))?;
    let o = v.as_object().ok_or_else(|| FieldError::row("JSON line is not an object"))?;
    parse_fields(|k| {
        o.get(FIELDS[k]).map(|v| match v {
            serde_json::Value::String(s) => Cow::Borrowed(s.as_str()),
            serde_json::Value::Null => Cow::Borrowed("-"),
            other => Cow::Owned(other.to_string()),
        })
    })
}

fn parse_fields<'a>(get: impl Fn(usize) -> Option<Cow<'a, str>>) -> Result<FlowRecord, FieldError> {
    let field = |k: usize| get(k).unwrap_or(Cow::Borrowed(""));
    let ts = field(0);
    let start_us = values::seconds_to_us(&ts)
        .or_else(|| values::parse_datetime_us(&ts))
        .ok_or_else(|| FieldError::new("ts", format!("invalid timestamp {:?}", ts.trim())))?;
    let p = field(5);
    let proto = values::protocol("proto", &p)?;
    let (src_port, dst_port) = if proto::has_ports(proto) {
        (values::port("id.orig_p", &field(2))?, values::port("id.resp_p", &field(4))?)
    } else {
        // Validate even what is dropped: garbage must not pass silently.
        values::port("id.orig_p", &field(2))?;
        values::port("id.resp_p", &field(4))?;
        (0, 0)
    };
    let history = field(11);
    let flags = if proto == proto::TCP && !values::is_unset(&history) { history_flags(&history) } else { TcpFlags(0) };
    let label = {
        let l = field(12);
        let d = field(13);
        match (values::is_unset(&l), values::is_unset(&d)) {
            (true, true) => None,
            (false, true) => Some(l.trim().to_string()),
            (true, false) => Some(d.trim().to_string()),
            (false, false) => Some(format!("{}/{}", l.trim(), d.trim())),
        }
    };
    Ok(FlowRecord {
        start_us,
        duration_us: values::duration_seconds("duration", &field(6))?,
        src: values::ip("id.orig_h", &field(1))?,
        dst: values::ip("id.resp_h", &field(3))?,
        src_port,
        dst_port,
        proto,
        flags,
        packets: values::count("orig_pkts", &field(7))? + values::count("resp_pkts", &field(8))?,
        bytes: values::count("orig_ip_bytes", &field(9))? + values::count("resp_ip_bytes", &field(10))?,
        label,
    })
}

/// Parses the `#separator` line's value (`\x09`) into the separator character.
pub fn parse_separator(line: &str) -> Option<char> {
    let v = line.strip_prefix("#separator")?.trim();
    if let Some(hex) = v.strip_prefix("\\x") {
        return u8::from_str_radix(hex, 16).ok().map(|b| b as char);
    }
    v.chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_letters() {
        assert_eq!(history_flags("ShAdDaFf").to_string(), "...AP.SF");
        assert_eq!(history_flags("S").to_string(), "......S.");
        assert_eq!(history_flags("Sr").to_string(), ".....RS.");
        assert_eq!(history_flags("").0, 0);
    }
}
