//! Wire codecs for flows on Kafka topics and the dead-letter record. Decoding never panics: anything that is not
//! a valid flow becomes a [`DeadLetter`] naming the reason.

use serde::{Deserialize, Serialize};
use temponet::FlowRecord;

/// How flows are encoded on a topic: one JSON object per message (the project's JSON lines form, see
/// `temponet::format::jsonl`) or bincode 1.3 (fixint little-endian, every field present: `FlowRecord::to_bincode`).
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

    /// Decodes one message. The error is a human-readable reason (which field, what was wrong).
    pub fn decode(&self, bytes: &[u8]) -> Result<FlowRecord, String> {
        match self {
            WireFormat::Json => {
                let text =
                    std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
                let line = text.trim_end_matches(['\n', '\r']);
                temponet::format::jsonl::parse(line).map_err(|e| match e.field {
                    Some(f) => format!("field {f}: {}", e.message),
                    None => e.message,
                })
            }
            WireFormat::Bincode => {
                use bincode::Options;
                // Same layout as `FlowRecord::to_bincode` (fixint, little-endian) but strict: trailing bytes and
                // absurd lengths are errors, so random bytes are rejected instead of decoding into nonsense.
                let r: FlowRecord = bincode::DefaultOptions::new()
                    .with_fixint_encoding()
                    .reject_trailing_bytes()
                    .with_limit(64 * 1024)
                    .deserialize(bytes)
                    .map_err(|e| format!("invalid bincode flow: {e}"))?;
                // (bincode 1.3's reject_trailing_bytes does not check slices: compare the encoded size.)
                let used = bincode::serialized_size(&r).unwrap_or(0) as usize;
                if used != bytes.len() {
                    return Err(format!(
                        "invalid bincode flow: {} trailing bytes",
                        bytes.len().saturating_sub(used)
                    ));
                }
                validate(&r)?;
                Ok(r)
            }
        }
    }
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
}
