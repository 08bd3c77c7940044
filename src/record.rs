//! The one flow record used everywhere: parsers produce it, the dataflow ships it, the model learns from it and
//! generates it, the metrics compare it, the writers print it.
//!
//! # Fields (the single place they are documented)
//!
//! | field         | type            | meaning |
//! |---------------|-----------------|---------|
//! | `start_us`    | `i64`           | flow start, microseconds since the Unix epoch (UTC). Sources that give the *end* time (nfdump `te`) are converted: start = end - duration. This is the event time of the dataflow. |
//! | `duration_us` | `u64`           | flow duration in microseconds; 0 for single-packet flows. |
//! | `src`, `dst`  | `IpAddr`        | source (initiator, Zeek `orig_h`, CIC `Src IP`) and destination address; IPv4 or IPv6. A **host pair** is the ordered `(src, dst)`. |
//! | `src_port`, `dst_port` | `u16`  | transport ports; 0 for protocols without ports (ICMP carries type/code elsewhere, not here). |
//! | `proto`       | `u8`            | IANA protocol number (6 TCP, 17 UDP, 1 ICMP, 47 GRE, 50 ESP, 58 ICMPv6, ...). |
//! | `flags`       | [`TcpFlags`]    | union of TCP flags seen in the flow (CWR ECE URG ACK PSH RST SYN FIN as the TCP header's flag byte). Kept as the source gave it, even on non-TCP flows (NetFlow exporters do that; the DKC metrics count it). |
//! | `packets`     | `u64`           | packets in both directions (>= 1 for a real flow). |
//! | `bytes`       | `u64`           | bytes at IP level (headers included) in both directions. |
//! | `label`       | `Option<String>`| ground-truth label when the source has one (`background`, `BENIGN`, `Malicious/C&C`, ...). |
//!
//! On the wire (bincode) the record is compact: addresses as tagged 4/16 bytes, flags as one byte. For people
//! (JSON lines) addresses are strings and flags a string like `..A..S.F` (see [`TcpFlags`]).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;

/// IANA protocol numbers the project gives names to.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6: u8 = 41;
    pub const GRE: u8 = 47;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;

    const NAMES: &[(u8, &str)] = &[
        (ICMP, "ICMP"),
        (2, "IGMP"),
        (IPIP, "IPIP"),
        (TCP, "TCP"),
        (UDP, "UDP"),
        (IPV6, "IPv6"),
        (GRE, "GRE"),
        (ESP, "ESP"),
        (AH, "AH"),
        (ICMPV6, "ICMPv6"),
        (SCTP, "SCTP"),
    ];

    /// Name of a protocol number (`"TCP"`), or its number as text when it has no common name.
    pub fn name(p: u8) -> String {
        NAMES
            .iter()
            .find(|(n, _)| *n == p)
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| p.to_string())
    }

    /// Protocol number from a name (`tcp`, `TCP`, `ipv6-icmp`) or a decimal number.
    pub fn parse(s: &str) -> Option<u8> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u8>() {
            return Some(n);
        }
        let lower = s.to_ascii_lowercase();
        if lower == "ipv6-icmp" || lower == "icmp6" {
            return Some(ICMPV6);
        }
        NAMES.iter().find(|(_, n)| n.eq_ignore_ascii_case(&lower)).map(|(p, _)| *p)
    }

    /// Whether flows of this protocol carry port numbers.
    pub fn has_ports(p: u8) -> bool {
        matches!(p, TCP | UDP | SCTP | 33 | 136)
    }

    /// Smallest IP packet of this protocol, in bytes (IPv4 header + minimal transport header).
    /// The compliance rules bound `bytes` below by this times `packets`.
    pub fn min_packet_bytes(p: u8) -> u64 {
        match p {
            TCP => 40,
            UDP | ICMP | ICMPV6 => 28,
            _ => 20,
        }
    }
}

/// The TCP flags seen in a flow, as the bits of the TCP header's flag byte:
/// CWR 0x80, ECE 0x40, URG 0x20, ACK 0x10, PSH 0x08, RST 0x04, SYN 0x02, FIN 0x01.
///
/// Text form: eight characters `CEUAPRSF`, a `.` where the flag is absent (`..A..S.F`). The nfdump six-character
/// form `UAPRSF` (`.AP.SF`) is also accepted when parsing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
    const LETTERS: [(u8, char); 8] = [
        (Self::CWR, 'C'),
        (Self::ECE, 'E'),
        (Self::URG, 'U'),
        (Self::ACK, 'A'),
        (Self::PSH, 'P'),
        (Self::RST, 'R'),
        (Self::SYN, 'S'),
        (Self::FIN, 'F'),
    ];

    pub fn bits(self) -> u8 {
        self.0
    }
    pub fn contains(self, bit: u8) -> bool {
        self.0 & bit == bit
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Parses the 8-character `CEUAPRSF` form, the nfdump 6-character `UAPRSF` form, or a decimal/`0x` number.
    /// Letters are matched by position *and* identity, so `.A..S.` and `......S.`-style strings both work;
    /// an empty string or `-` means no flags.
    pub fn parse(s: &str) -> Option<TcpFlags> {
        let s = s.trim();
        if s.is_empty() || s == "-" {
            return Some(TcpFlags(0));
        }
        if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            return u8::from_str_radix(hex, 16).ok().map(TcpFlags);
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse::<u8>().ok().map(TcpFlags);
        }
        let letters: &[(u8, char)] = match s.len() {
            8 => &Self::LETTERS,
            6 => &Self::LETTERS[2..],
            _ => return None,
        };
        let mut bits = 0u8;
        for (c, (bit, letter)) in s.chars().zip(letters) {
            if c == *letter {
                bits |= bit;
            } else if c != '.' {
                return None;
            }
        }
        Some(TcpFlags(bits))
    }

    /// nfdump's 6-character form (`UAPRSF`), which drops ECE and CWR.
    pub fn to_nfdump(self) -> String {
        Self::LETTERS[2..]
            .iter()
            .map(|(bit, c)| if self.contains(*bit) { *c } else { '.' })
            .collect()
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in Self::LETTERS {
            let mut buf = [0; 4];
            f.write_str(if self.contains(bit) { c.encode_utf8(&mut buf) } else { "." })?;
        }
        Ok(())
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TcpFlags({self})")
    }
}

impl Serialize for TcpFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u8(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for TcpFlags {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Text {
                S(String),
                N(u8),
            }
            match Text::deserialize(d)? {
                Text::N(n) => Ok(TcpFlags(n)),
                Text::S(s) => TcpFlags::parse(&s)
                    .ok_or_else(|| serde::de::Error::custom(format!("invalid TCP flags {s:?} (expected e.g. \"..A..S.F\")"))),
            }
        } else {
            u8::deserialize(d).map(TcpFlags)
        }
    }
}

/// One network flow. See the module documentation for the meaning of every field.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FlowRecord {
    #[serde(rename = "ts")]
    pub start_us: i64,
    #[serde(rename = "dur")]
    pub duration_us: u64,
    pub src: IpAddr,
    pub dst: IpAddr,
    #[serde(rename = "sport")]
    pub src_port: u16,
    #[serde(rename = "dport")]
    pub dst_port: u16,
    pub proto: u8,
    #[serde(default)]
    pub flags: TcpFlags,
    #[serde(rename = "pkts")]
    pub packets: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A host pair: the ordered (source, destination) addresses. Histories, embeddings and sharding are per pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostPair {
    pub src: IpAddr,
    pub dst: IpAddr,
}

impl HostPair {
    /// A hash that is the same on every process, platform and run (FNV-1a over the address bytes).
    /// Used to route a pair to its owning worker: never use `RandomState` for that.
    pub fn stable_hash(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes {
                h ^= *b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        eat(&ip_bytes(self.src));
        eat(&[0xff]);
        eat(&ip_bytes(self.dst));
        // FNV's low bits are weak and timely routes on `hash & (peers - 1)`: finish with a mixer.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl FlowRecord {
    pub fn pair(&self) -> HostPair {
        HostPair { src: self.src, dst: self.dst }
    }
    /// End of the flow, microseconds since the epoch.
    pub fn end_us(&self) -> i64 {
        self.start_us.saturating_add(self.duration_us as i64)
    }
    pub fn is_tcp(&self) -> bool {
        self.proto == proto::TCP
    }

    /// Compact binary form for the wire (bincode 1.3, fixed-int little-endian).
    pub fn to_bincode(&self) -> Vec<u8> {
        bincode::serialize(self).expect("a FlowRecord always serialises")
    }
    pub fn from_bincode(bytes: &[u8]) -> Result<FlowRecord, bincode::Error> {
        bincode::deserialize(bytes)
    }
    /// One JSON object, no trailing newline (the project's JSON lines format).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a FlowRecord always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> FlowRecord {
        FlowRecord {
            start_us: 1_545_403_816_962_094,
            duration_us: 3_139_211,
            src: "192.168.1.195".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
            src_port: 41040,
            dst_port: 80,
            proto: proto::TCP,
            flags: TcpFlags(TcpFlags::SYN | TcpFlags::ACK | TcpFlags::CWR),
            packets: 3,
            bytes: 180,
            label: Some("Benign".into()),
        }
    }

    #[test]
    fn flags_text_forms() {
        let f = TcpFlags(TcpFlags::ACK | TcpFlags::PSH | TcpFlags::SYN | TcpFlags::FIN);
        assert_eq!(f.to_string(), "...AP.SF");
        assert_eq!(f.to_nfdump(), ".AP.SF");
        assert_eq!(TcpFlags::parse(".AP.SF"), Some(f));
        assert_eq!(TcpFlags::parse("...AP.SF"), Some(f));
        assert_eq!(TcpFlags::parse("CE......"), Some(TcpFlags(0xc0)));
        assert_eq!(TcpFlags::parse("0x12"), Some(TcpFlags(0x12)));
        assert_eq!(TcpFlags::parse("18"), Some(TcpFlags(0x12)));
        assert_eq!(TcpFlags::parse(".X...."), None);
        assert_eq!(TcpFlags::parse("SA"), None);
    }

    #[test]
    fn json_and_bincode_round_trip() {
        let r = sample();
        let j = r.to_json();
        assert!(j.contains("\"flags\":\"C..A..S.\""), "{j}");
        assert_eq!(serde_json::from_str::<FlowRecord>(&j).unwrap(), r);
        let b = r.to_bincode();
        assert_eq!(FlowRecord::from_bincode(&b).unwrap(), r);
        assert!(b.len() < j.len());
    }

    #[test]
    fn stable_hash_is_fixed() {
        // The value is part of the routing contract between processes: it must never change.
        let p = sample().pair();
        assert_eq!(p.stable_hash(), p.stable_hash());
        let q = HostPair { src: p.dst, dst: p.src };
        assert_ne!(p.stable_hash(), q.stable_hash());
        assert_eq!(p.stable_hash(), 1_099_417_180_116_825_202);
    }

    #[test]
    fn protocol_names() {
        assert_eq!(proto::parse("tcp"), Some(6));
        assert_eq!(proto::parse("ICMP"), Some(1));
        assert_eq!(proto::parse("IPv6"), Some(41));
        assert_eq!(proto::parse("47"), Some(47));
        assert_eq!(proto::parse("bogus"), None);
        assert_eq!(proto::name(17), "UDP");
        assert_eq!(proto::name(200), "200");
    }
}
