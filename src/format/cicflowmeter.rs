//! CICFlowMeter CSV (CIC-IDS2017 and its successors): ~80 feature columns; we read the 5-tuple, `Timestamp`,
//! `Flow Duration` (microseconds), packet and byte totals per direction, the flag counts and `Label`.
//! Column names vary across releases (`Src IP` / `Source IP`, `Total Fwd Packet` / `Total Fwd Packets`,
//! `CWR Flag Count` / `CWE Flag Count`, leading spaces): they are matched after normalisation.
//!
//! Bytes: CICFlowMeter counts payload (`Total Length of ... Packet`) and transport headers (`... Header Length`)
//! but not the IP header, so bytes = payload + transport headers + 20 per packet (40 on IPv6), making it comparable
//! to NetFlow and Zeek IP bytes. A negative header length (a known CICFlowMeter overflow) is replaced by the
//! protocol's minimal transport header per packet (TCP 20, UDP 8). A flag is set when its count is positive.

use super::values::{self, Columns};
use super::FieldError;
use crate::record::{FlowRecord, TcpFlags, proto};

#[derive(Clone, Debug)]
pub struct CicColumns {
    src: usize,
    sport: usize,
    dst: usize,
    dport: usize,
    proto: usize,
    ts: usize,
    dur: usize,
    fwd_pkts: usize,
    bwd_pkts: usize,
    fwd_len: usize,
    bwd_len: usize,
    fwd_hdr: Option<usize>,
    bwd_hdr: Option<usize>,
    flags: Vec<(usize, u8)>,
    label: Option<usize>,
}

impl CicColumns {
    pub fn from_header(c: &Columns) -> Result<Self, String> {
        let mut flags = Vec::new();
        for (names, bit) in [
            (&["FIN Flag Count"][..], TcpFlags::FIN),
            (&["SYN Flag Count"][..], TcpFlags::SYN),
            (&["RST Flag Count"][..], TcpFlags::RST),
            (&["PSH Flag Count"][..], TcpFlags::PSH),
            (&["ACK Flag Count"][..], TcpFlags::ACK),
            (&["URG Flag Count"][..], TcpFlags::URG),
            (&["ECE Flag Count"][..], TcpFlags::ECE),
            (&["CWR Flag Count", "CWE Flag Count"][..], TcpFlags::CWR),
        ] {
            if let Some(i) = c.find(names) {
                flags.push((i, bit));
            }
        }
        Ok(CicColumns {
            src: c.require("Src IP", &["Src IP", "Source IP"])?,
            sport: c.require("Src Port", &["Src Port", "Source Port"])?,
            dst: c.require("Dst IP", &["Dst IP", "Destination IP"])?,
            dport: c.require("Dst Port", &["Dst Port", "Destination Port"])?,
            proto: c.require("Protocol", &["Protocol"])?,
            ts: c.require("Timestamp", &["Timestamp"])?,
            dur: c.require("Flow Duration", &["Flow Duration"])?,
            fwd_pkts: c.require("Total Fwd Packet", &["Total Fwd Packet", "Total Fwd Packets"])?,
            bwd_pkts: c.require("Total Bwd packets", &["Total Bwd packets", "Total Backward Packets"])?,
            fwd_len: c.require("Total Length of Fwd Packet", &["Total Length of Fwd Packet", "Total Length of Fwd Packets"])?,
            bwd_len: c.require("Total Length of Bwd Packet", &["Total Length of Bwd Packet", "Total Length of Bwd Packets"])?,
            fwd_hdr: c.find(&["Fwd Header Length"]),
            bwd_hdr: c.find(&["Bwd Header Length"]),
            flags,
            label: c.find(&["Label"]),
        })
    }

    pub fn parse(&self, row: &[&str]) -> Result<FlowRecord, FieldError> {
        let get = |i: usize, name: &str| row.get(i).copied().ok_or_else(|| FieldError::new(name, format!("missing (row has {} columns)", row.len())));
        let ts = get(self.ts, "Timestamp")?;
        let start_us = values::parse_datetime_us(ts).ok_or_else(|| FieldError::new("Timestamp", format!("invalid date {:?}", ts.trim())))?;
        let dur = values::int("Flow Duration", get(self.dur, "Flow Duration")?)?;
        if dur < 0 {
            return Err(FieldError::new("Flow Duration", format!("negative duration {dur}")));
        }
        let proto = values::protocol("Protocol", get(self.proto, "Protocol")?)?;
        let src = values::ip("Src IP", get(self.src, "Src IP")?)?;
        let fwd_pkts = values::count("Total Fwd Packet", get(self.fwd_pkts, "Total Fwd Packet")?)?;
        let bwd_pkts = values::count("Total Bwd packets", get(self.bwd_pkts, "Total Bwd packets")?)?;
        let payload = values::count("Total Length of Fwd Packet", get(self.fwd_len, "Total Length of Fwd Packet")?)?
            + values::count("Total Length of Bwd Packet", get(self.bwd_len, "Total Length of Bwd Packet")?)?;
        let min_transport = match proto {
            proto::TCP => 20,
            proto::UDP => 8,
            _ => 0,
        };
        let mut headers = 0u64;
        for (col, pkts, name) in [(self.fwd_hdr, fwd_pkts, "Fwd Header Length"), (self.bwd_hdr, bwd_pkts, "Bwd Header Length")] {
            let h = match col {
                Some(i) => values::int(name, get(i, name)?)?,
                None => -1,
            };
            headers += if h >= 0 { h as u64 } else { min_transport * pkts };
        }
        let packets = fwd_pkts + bwd_pkts;
        let ip_header = if src.is_ipv6() { 40 } else { 20 };
        let mut flags = 0u8;
        for &(i, bit) in &self.flags {
            if values::count("flag count", get(i, "flag count")?)? > 0 {
                flags |= bit;
            }
        }
        Ok(FlowRecord {
            start_us,
            duration_us: dur as u64,
            src,
            dst: values::ip("Dst IP", get(self.dst, "Dst IP")?)?,
            src_port: values::port("Src Port", get(self.sport, "Src Port")?)?,
            dst_port: values::port("Dst Port", get(self.dport, "Dst Port")?)?,
            proto,
            flags: TcpFlags(flags),
            packets,
            bytes: payload + headers + ip_header * packets,
            label: self.label.and_then(|i| row.get(i)).map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_string),
        })
    }
}
