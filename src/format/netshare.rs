//! NetShare CSV `srcip,dstip,srcport,dstport,proto,ts,td,pkt,byt,type`: addresses as unsigned 32-bit integers,
//! `ts` in epoch microseconds (often written as a float, `1458298072364000.0`), `td` in seconds, no TCP flags,
//! `type` the label.

use super::values::{self, Columns};
use super::FieldError;
use crate::record::{FlowRecord, TcpFlags};

#[derive(Clone, Debug)]
pub struct NetShareColumns {
    srcip: usize,
    dstip: usize,
    srcport: usize,
    dstport: usize,
    proto: usize,
    ts: usize,
    td: usize,
    pkt: usize,
    byt: usize,
    label: Option<usize>,
}

impl NetShareColumns {
    pub fn from_header(c: &Columns) -> Result<Self, String> {
        Ok(NetShareColumns {
            srcip: c.require("srcip", &["srcip"])?,
            dstip: c.require("dstip", &["dstip"])?,
            srcport: c.require("srcport", &["srcport"])?,
            dstport: c.require("dstport", &["dstport"])?,
            proto: c.require("proto", &["proto"])?,
            ts: c.require("ts", &["ts"])?,
            td: c.require("td", &["td"])?,
            pkt: c.require("pkt", &["pkt"])?,
            byt: c.require("byt", &["byt"])?,
            label: c.find(&["type", "label"]),
        })
    }

    pub fn parse(&self, row: &[&str]) -> Result<FlowRecord, FieldError> {
        let get = |i: usize, name: &str| row.get(i).copied().ok_or_else(|| FieldError::new(name, format!("missing (row has {} columns)", row.len())));
        let ts = get(self.ts, "ts")?;
        let start_us = values::decimal_scaled(ts, 0).ok_or_else(|| FieldError::new("ts", format!("invalid epoch microseconds {:?}", ts.trim())))?;
        Ok(FlowRecord {
            start_us,
            duration_us: values::duration_seconds("td", get(self.td, "td")?)?,
            src: values::ip_u32("srcip", get(self.srcip, "srcip")?)?,
            dst: values::ip_u32("dstip", get(self.dstip, "dstip")?)?,
            src_port: values::port("srcport", get(self.srcport, "srcport")?)?,
            dst_port: values::port("dstport", get(self.dstport, "dstport")?)?,
            proto: values::protocol("proto", get(self.proto, "proto")?)?,
            flags: TcpFlags(0),
            packets: values::count("pkt", get(self.pkt, "pkt")?)?,
            bytes: values::count("byt", get(self.byt, "byt")?)?,
            label: self.label.and_then(|i| row.get(i)).map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_string),
        })
    }
}
