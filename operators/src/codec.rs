//! Wire codecs for flows on Kafka topics and the dead-letter record. Decoding never panics: anything that is not
//! a valid flow becomes a [`DeadLetter`] naming the reason.

use serde::{Deserialize, Serialize};
use temponet::FlowRecord;

/// How flows are encoded on a topic: JSON objects (the project's JSON lines form, see `temponet::format::jsonl`)
/// or bincode 1.3 (fixint little-endian, every field present: `FlowRecord::to_bincode`).
///
/// A message holds one flow or several: JSON lines separated by newlines (what exporters that batch records into
/// one message write, e.g. pmacct's `kafka_multi_values`), or bincode records back to back. Batching amortises
/// the broker's and librdkafka's per-message cost, which bounds one consumer's rate at one flow per message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum WireFormat {
    #[default]
    Json,
    Bincode,
}

impl std::str::FromStr for WireFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" | "jsonl" => Ok(WireFormat::Json),
            "bincode" => Ok(WireFormat::Bincode),
            other => Err(format!(
                "unknown wire format {other:?} (expected json or bincode)"
            )),
        }
    }
}

impl WireFormat {
    pub fn encode(&self, r: &FlowRecord) -> Vec<u8> {
        match self {
            WireFormat::Json => r.to_json().into_bytes(),
            WireFormat::Bincode => r.to_bincode(),
        }
    }

    /// Encodes several flows as one message (see the type's documentation).
    pub fn encode_batch(&self, rs: &[FlowRecord]) -> Vec<u8> {
        match self {
            WireFormat::Json => rs
                .iter()
                .map(|r| r.to_json())
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes(),
            WireFormat::Bincode => rs.iter().flat_map(|r| r.to_bincode()).collect(),
        }
    }

    /// Decodes every flow of a message (one or several, see the type's documentation), calling `f` for each
    /// record in order with the flow or the reason it is invalid. A bad JSON line costs only itself (each line
    /// is self-delimiting and checked field by field). Bincode records carry no framing, so a message whose bytes
    /// do not split exactly into valid records is one error and gives no flow: random bytes must not pass as a
    /// flow or two followed by an error. An empty message (or one of blank lines) is one error.
    pub fn decode_each(&self, bytes: &[u8], mut f: impl FnMut(Result<FlowRecord, String>)) {
        match self {
            WireFormat::Json => {
                let text = match std::str::from_utf8(bytes) {
                    Ok(t) => t,
                    Err(e) => return f(Err(format!("not UTF-8 text: {e}"))),
                };
                let several = text.trim_end().contains('\n');
                let mut any = false;
                for (i, l) in text.split('\n').enumerate() {
                    if l.trim().is_empty() {
                        continue;
                    }
                    any = true;
                    let r = json_line(l);
                    f(if several {
                        r.map_err(|e| format!("line {}: {e}", i + 1))
                    } else {
                        r
                    });
                }
                if !any {
                    f(Err("empty message".into()));
                }
            }
            WireFormat::Bincode => {
                if bytes.is_empty() {
                    return f(Err("empty message".into()));
                }
                let mut rest = bytes;
                let mut flows = Vec::new();
                while !rest.is_empty() {
                    match bincode_record(rest) {
                        Ok((r, used)) => {
                            rest = &rest[used..];
                            flows.push(r);
                        }
                        Err(e) => {
                            return f(Err(if flows.is_empty() {
                                e
                            } else {
                                format!("record {}: {e}", flows.len() + 1)
                            }));
                        }
                    }
                }
                flows.into_iter().for_each(|r| f(Ok(r)));
            }
        }
    }

    /// Decodes a message that must hold exactly one flow. The error is a human-readable reason (which field,
    /// what was wrong).
    pub fn decode(&self, bytes: &[u8]) -> Result<FlowRecord, String> {
        match self {
            WireFormat::Json => {
                let text =
                    std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
                json_line(text.trim_end_matches(['\n', '\r']))
            }
            WireFormat::Bincode => {
                // Strict: trailing bytes are an error, so random bytes are rejected instead of decoding into
                // nonsense.
                let (r, used) = bincode_record(bytes)?;
                if used != bytes.len() {
                    return Err(format!(
                        "invalid bincode flow: {} trailing bytes",
                        bytes.len() - used
                    ));
                }
                Ok(r)
            }
        }
    }
}

/// One JSON line (a trailing carriage return allowed).
fn json_line(line: &str) -> Result<FlowRecord, String> {
    temponet::format::jsonl::parse(line.trim_end_matches('\r')).map_err(|e| match e.field {
        Some(f) => format!("field {f}: {}", e.message),
        None => e.message,
    })
}

/// The bincode record at the start of `bytes` and its length, validated (the layout of `FlowRecord::to_bincode`:
/// fixint, little-endian; lengths above 64 KiB are errors).
fn bincode_record(bytes: &[u8]) -> Result<(FlowRecord, usize), String> {
    use bincode::Options;
    let r: FlowRecord = bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(64 * 1024)
        .deserialize(bytes)
        .map_err(|e| format!("invalid bincode flow: {e}"))?;
    let used =
        bincode::serialized_size(&r).map_err(|e| format!("invalid bincode flow: {e}"))? as usize;
    validate(&r)?;
    Ok((r, used))
}

/// Checks a binary-decoded record for values no real flow has (JSON is checked field by field by its parser).
fn validate(r: &FlowRecord) -> Result<(), String> {
    if r.start_us < 0 {
        return Err(format!("field ts: negative start time {}", r.start_us));
    }
    if let Some(l) = &r.label
        && l.chars().any(|c| c.is_control())
    {
        return Err("field label: control characters".into());
    }
    Ok(())
}

/// A message that could not be decoded, as written to the dead-letter topic (one JSON object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    /// The original payload, as (lossy) UTF-8 text, at most 4 KiB.
    pub payload: String,
    pub payload_len: usize,
}

impl DeadLetter {
    pub fn new(topic: &str, partition: i32, offset: i64, reason: String, payload: &[u8]) -> Self {
        let cut = &payload[..payload.len().min(4096)];
        DeadLetter {
            topic: topic.to_string(),
            partition,
            offset,
            reason,
            payload: String::from_utf8_lossy(cut).into_owned(),
            payload_len: payload.len(),
        }
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a dead letter always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> FlowRecord {
        FlowRecord {
            start_us: 1_545_403_816_962_094,
            duration_us: 10,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            src_port: 1234,
            dst_port: 80,
            proto: 6,
            flags: temponet::TcpFlags(2),
            packets: 1,
            bytes: 60,
            label: None,
        }
    }

    #[test]
    fn round_trips_and_rejects() {
        for f in [WireFormat::Json, WireFormat::Bincode] {
            assert_eq!(f.decode(&f.encode(&rec())).unwrap(), rec());
            assert!(f.decode(b"\x00\xff garbage \x13\x37").is_err());
            assert!(f.decode(b"").is_err());
        }
        let bad = rec().to_json().replace("\"dport\":80", "\"dport\":70000");
        let e = WireFormat::Json.decode(bad.as_bytes()).unwrap_err();
        assert!(e.contains("dport"), "{e}");
        let mut b = WireFormat::Bincode.encode(&rec());
        b.push(0);
        assert!(WireFormat::Bincode.decode(&b).is_err());
    }

    fn each(f: WireFormat, bytes: &[u8]) -> Vec<Result<FlowRecord, String>> {
        let mut out = Vec::new();
        f.decode_each(bytes, |r| out.push(r));
        out
    }

    #[test]
    fn several_flows_per_message() {
        let mut second = rec();
        second.dst_port = 443;
        second.label = Some("benign".into());
        let both = [rec(), second.clone()];
        for f in [WireFormat::Json, WireFormat::Bincode] {
            let got: Vec<FlowRecord> = each(f, &f.encode_batch(&both))
                .into_iter()
                .map(|r| r.unwrap())
                .collect();
            assert_eq!(got, both, "{f:?}");
            // One flow per message reads the same through both entry points.
            assert_eq!(each(f, &f.encode(&rec())), vec![Ok(rec())]);
            assert_eq!(each(f, b"").len(), 1);
            assert!(each(f, b"")[0].is_err());
        }
        // JSON: a bad line costs itself, named by its line number; blank lines and CRLF are fine.
        let text = format!(
            "{}\r\n\n{}\n{}\n",
            rec().to_json(),
            rec().to_json().replace("\"dport\":80", "\"dport\":70000"),
            second.to_json()
        );
        let got = each(WireFormat::Json, text.as_bytes());
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], Ok(rec()));
        let e = got[1].clone().unwrap_err();
        assert!(e.starts_with("line 3: field dport"), "{e}");
        assert_eq!(got[2], Ok(second.clone()));
        // Bincode: no framing, so a broken tail spoils the whole message.
        let mut b = WireFormat::Bincode.encode_batch(&both);
        b.extend_from_slice(b"\x01\x02\x03");
        let got = each(WireFormat::Bincode, &b);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].clone().unwrap_err().starts_with("record 3"),
            "{got:?}"
        );
        let got = each(WireFormat::Bincode, b"\x00\xff garbage \x13\x37");
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }
}
