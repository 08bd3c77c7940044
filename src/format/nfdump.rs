//! nfdump / UGR'16 CSV. UGR'16 ships it headerless with columns `te,td,sa,da,sp,dp,pr,flg,fwd,stos,pkt,byt,label`
//! (a blank first line, CRLF); `nfdump -o csv` writes a header and may give `ts` (start) and split directions
//! (`ipkt`,`opkt`,`ibyt`,`obyt`). Times are taken as UTC; start = `ts` when present, else `te` - `td`.

use super::values::{self, Columns};
use super::FieldError;
use crate::record::{FlowRecord, TcpFlags};

/// Column positions of one nfdump file.
#[derive(Clone, Debug)]
pub struct NfdumpColumns {
    ts: Option<usize>,
    te: Option<usize>,
    td: usize,
    sa: usize,
    da: usize,
    sp: usize,
    dp: usize,
    pr: usize,
    flg: Option<usize>,
    pkt: Vec<usize>,
    byt: Vec<usize>,
    label: Option<usize>,
}

impl NfdumpColumns {
    /// The UGR'16 column order, for headerless files.
    pub fn headerless() -> Self {
        NfdumpColumns {
            ts: None,
            te: Some(0),
            td: 1,
            sa: 2,
            da: 3,
            sp: 4,
            dp: 5,
            pr: 6,
            flg: Some(7),
            pkt: vec![10],
            byt: vec![11],
            label: Some(12),
        }
    }

    pub fn from_header(c: &Columns) -> Result<Self, String> {
        let ts = c.find(&["ts"]);
        let te = c.find(&["te"]);
        if ts.is_none() && te.is_none() {
            return Err("header has neither `ts` nor `te`".into());
        }
        let pkt = match c.find(&["pkt", "packets"]) {
            Some(i) => vec![i],
            None => [c.find(&["ipkt"]), c.find(&["opkt"])].into_iter().flatten().collect(),
        };
        let byt = match c.find(&["byt", "bytes"]) {
            Some(i) => vec![i],
            None => [c.find(&["ibyt"]), c.find(&["obyt"])].into_iter().flatten().collect(),
        };
        if pkt.is_empty() || byt.is_empty() {
            return Err("header has no packet (`pkt`/`ipkt`) or byte (`byt`/`ibyt`) column".into());
        }
        Ok(NfdumpColumns {
            ts,
            te,
            td: c.require("td", &["td"])?,
            sa: c.require("sa", &["sa"])?,
            da: c.require("da", &["da"])?,
            sp: c.require("sp", &["sp"])?,
            dp: c.require("dp", &["dp"])?,
            pr: c.require("pr", &["pr"])?,
            flg: c.find(&["flg"]),
            pkt,
            byt,
            label: c.find(&["label", "type"]),
        })
    }

    /// Whether the row is nfdump's trailing summary block (`Summary`, totals), which ends the flow rows.
    pub fn is_summary(row: &[&str]) -> bool {
        row.first().is_some_and(|f| f.trim() == "Summary")
    }

    pub fn parse(&self, row: &[&str]) -> Result<FlowRecord, FieldError> {
        let get = |i: usize, name: &str| row.get(i).copied().ok_or_else(|| FieldError::new(name, format!("missing (row has {} columns)", row.len())));
        let duration_us = values::duration_seconds("td", get(self.td, "td")?)?;
        let start_us = match (self.ts, self.te) {
            (Some(i), _) => values::parse_datetime_us(get(i, "ts")?).ok_or_else(|| FieldError::new("ts", format!("invalid date {:?}", row[i].trim())))?,
            (None, Some(i)) => {
                let te = values::parse_datetime_us(get(i, "te")?).ok_or_else(|| FieldError::new("te", format!("invalid date {:?}", row[i].trim())))?;
                te - duration_us as i64
            }
            (None, None) => unreachable!("checked in from_header"),
        };
        let proto = values::protocol("pr", get(self.pr, "pr")?)?;
        let flags = match self.flg {
            Some(i) => {
                let s = get(i, "flg")?;
                TcpFlags::parse(s).ok_or_else(|| FieldError::new("flg", format!("invalid TCP flags {:?}", s.trim())))?
            }
            None => TcpFlags(0),
        };
        let mut packets = 0u64;
        for &i in &self.pkt {
            packets += values::count("pkt", get(i, "pkt")?)?;
        }
        let mut bytes = 0u64;
        for &i in &self.byt {
            bytes += values::count("byt", get(i, "byt")?)?;
        }
        let label = self.label.and_then(|i| row.get(i)).map(|s| s.trim()).filter(|s| !s.is_empty()).map(str::to_string);
        Ok(FlowRecord {
            start_us,
            duration_us,
            src: values::ip("sa", get(self.sa, "sa")?)?,
            dst: values::ip("da", get(self.da, "da")?)?,
            src_port: values::port("sp", get(self.sp, "sp")?)?,
            dst_port: values::port("dp", get(self.dp, "dp")?)?,
            proto,
            flags,
            packets,
            bytes,
            label,
        })
    }
}
