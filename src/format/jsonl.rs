//! The project's own JSON lines: one [`FlowRecord`] per line as serde writes it
//! (`{"ts":..,"dur":..,"src":"..","dst":"..","sport":..,"dport":..,"proto":6,"flags":"...A..S.","pkts":..,"bytes":..,"label":".."}`).
//! On a bad line the failing field is found and named (serde alone reports only a column).

use super::FieldError;
use crate::record::{FlowRecord, TcpFlags};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::net::IpAddr;

pub fn parse(line: &str) -> Result<FlowRecord, FieldError> {
    serde_json::from_str::<FlowRecord>(line).map_err(|e| diagnose(line, e))
}

fn check<T: DeserializeOwned>(o: &serde_json::Map<String, Value>, key: &str, required: bool) -> Option<FieldError> {
    match o.get(key) {
        None if required => Some(FieldError::new(key, "missing")),
        None => None,
        Some(v) => serde_json::from_value::<T>(v.clone()).err().map(|e| FieldError::new(key, format!("invalid value {v}: {e}"))),
    }
}

fn diagnose(line: &str, err: serde_json::Error) -> FieldError {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return FieldError::row(format!("invalid JSON: {e}")),
    };
    let Some(o) = v.as_object() else {
        return FieldError::row("JSON line is not an object");
    };
    check::<i64>(o, "ts", true)
        .or_else(|| check::<u64>(o, "dur", true))
        .or_else(|| check::<IpAddr>(o, "src", true))
        .or_else(|| check::<IpAddr>(o, "dst", true))
        .or_else(|| check::<u16>(o, "sport", true))
        .or_else(|| check::<u16>(o, "dport", true))
        .or_else(|| check::<u8>(o, "proto", true))
        .or_else(|| check::<TcpFlags>(o, "flags", false))
        .or_else(|| check::<u64>(o, "pkts", true))
        .or_else(|| check::<u64>(o, "bytes", true))
        .or_else(|| check::<Option<String>>(o, "label", false))
        .unwrap_or_else(|| FieldError::row(format!("invalid record: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_bad_field() {
        let ok = r#"{"ts":1,"dur":0,"src":"10.0.0.1","dst":"10.0.0.2","sport":1,"dport":80,"proto":6,"flags":"......S.","pkts":1,"bytes":40}"#;
        assert!(parse(ok).is_ok());
        let e = parse(&ok.replace("\"dport\":80", "\"dport\":70000")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("dport"));
        let e = parse(&ok.replace("\"10.0.0.2\"", "\"10.0.0.256\"")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("dst"));
        let e = parse(&ok.replace("\"pkts\":1,", "")).unwrap_err();
        assert_eq!((e.field.as_deref(), e.message.as_str()), (Some("pkts"), "missing"));
        let e = parse(&ok.replace("......S.", "SYN")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("flags"));
        assert!(parse("{\"ts\":").unwrap_err().message.starts_with("invalid JSON"));
    }
}
