//! `temponet inspect`: the summary a user reads to check that a file was read right — rows, time span, hosts,
//! pairs, protocol mix, top destination ports, TCP flag mix, labels and inter-arrival quantiles.

use crate::record::{FlowRecord, HostPair, proto};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

/// Accumulates a summary one record at a time (memory: the distinct hosts and pairs, plus 8 bytes per flow for
/// the start times that inter-arrival quantiles need).
#[derive(Default)]
pub struct SummaryBuilder {
    starts: Vec<i64>,
    last_end: i64,
    hosts: HashSet<IpAddr>,
    pairs: HashSet<HostPair>,
    protos: HashMap<u8, u64>,
    dports: HashMap<(u8, u16), u64>,
    flags: HashMap<u8, u64>,
    labels: HashMap<String, u64>,
    packets: u64,
    bytes: u64,
    ipv6: u64,
}

/// Share of the flows that take one value.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Share {
    pub value: String,
    pub flows: u64,
    pub percent: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    pub rows: u64,
    pub first_start_us: i64,
    pub last_end_us: i64,
    pub span_seconds: f64,
    pub hosts: usize,
    pub host_pairs: usize,
    pub ipv6_flows: u64,
    pub packets: u64,
    pub bytes: u64,
    pub protocols: Vec<Share>,
    pub top_dst_ports: Vec<Share>,
    pub tcp_flags: Vec<Share>,
    pub labels: Vec<Share>,
    /// Inter-arrival of consecutive flow starts (all flows, in time order), seconds: (quantile, value).
    pub inter_arrival_quantiles: Vec<(f64, f64)>,
    pub inter_arrival_mean: f64,
    /// Coefficient of variation of the inter-arrivals: 1 for Poisson, above 1 for bursty traffic.
    pub inter_arrival_cv: f64,
}

const QUANTILES: [f64; 7] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0];

fn top(map: HashMap<String, u64>, total: u64, n: usize) -> Vec<Share> {
    let mut v: Vec<(String, u64)> = map.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v.into_iter().map(|(value, flows)| Share { value, flows, percent: 100.0 * flows as f64 / total.max(1) as f64 }).collect()
}

/// Value at quantile `q` of sorted data (nearest rank, linear interpolation between neighbours).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl SummaryBuilder {
    pub fn add(&mut self, r: &FlowRecord) {
        self.starts.push(r.start_us);
        self.last_end = if self.starts.len() == 1 { r.end_us() } else { self.last_end.max(r.end_us()) };
        self.hosts.insert(r.src);
        self.hosts.insert(r.dst);
        self.pairs.insert(r.pair());
        *self.protos.entry(r.proto).or_default() += 1;
        *self.dports.entry((r.proto, r.dst_port)).or_default() += 1;
        if r.is_tcp() {
            *self.flags.entry(r.flags.bits()).or_default() += 1;
        }
        if let Some(l) = &r.label {
            *self.labels.entry(l.clone()).or_default() += 1;
        }
        self.packets += r.packets;
        self.bytes += r.bytes;
        self.ipv6 += r.src.is_ipv6() as u64;
    }

    pub fn finish(mut self) -> Summary {
        let rows = self.starts.len() as u64;
        self.starts.sort_unstable();
        let gaps: Vec<f64> = self.starts.windows(2).map(|w| (w[1] - w[0]) as f64 / 1e6).collect();
        let mean = if gaps.is_empty() { f64::NAN } else { gaps.iter().sum::<f64>() / gaps.len() as f64 };
        let var = if gaps.len() < 2 { f64::NAN } else { gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (gaps.len() - 1) as f64 };
        let mut sorted = gaps;
        sorted.sort_by(f64::total_cmp);
        let first = self.starts.first().copied().unwrap_or(0);
        let tcp_flows: u64 = self.flags.values().sum();
        Summary {
            rows,
            first_start_us: first,
            last_end_us: self.last_end,
            span_seconds: (self.last_end - first) as f64 / 1e6,
            hosts: self.hosts.len(),
            host_pairs: self.pairs.len(),
            ipv6_flows: self.ipv6,
            packets: self.packets,
            bytes: self.bytes,
            protocols: top(self.protos.into_iter().map(|(p, n)| (proto::name(p), n)).collect(), rows, 10),
            top_dst_ports: top(self.dports.into_iter().map(|((p, port), n)| (format!("{}/{}", proto::name(p), port), n)).collect(), rows, 10),
            tcp_flags: top(self.flags.into_iter().map(|(f, n)| (crate::record::TcpFlags(f).to_string(), n)).collect(), tcp_flows, 8),
            labels: top(self.labels, rows, 10),
            inter_arrival_quantiles: QUANTILES.iter().map(|&q| (q, quantile_sorted(&sorted, q))).collect(),
            inter_arrival_mean: mean,
            inter_arrival_cv: var.sqrt() / mean,
        }
    }
}

impl Summary {
    pub fn of<'a>(records: impl IntoIterator<Item = &'a FlowRecord>) -> Summary {
        let mut b = SummaryBuilder::default();
        records.into_iter().for_each(|r| b.add(r));
        b.finish()
    }
}

fn shares(f: &mut fmt::Formatter<'_>, title: &str, v: &[Share]) -> fmt::Result {
    write!(f, "{title:<16}")?;
    if v.is_empty() {
        write!(f, "-")?;
    }
    for (i, s) in v.iter().enumerate() {
        write!(f, "{}{} {:.1}%", if i > 0 { ", " } else { "" }, s.value, s.percent)?;
    }
    writeln!(f)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = |us: i64| crate::format::values::format_datetime_us(us);
        writeln!(f, "rows            {}", self.rows)?;
        if self.rows == 0 {
            return Ok(());
        }
        writeln!(f, "time span       {} .. {} UTC ({:.3} s)", t(self.first_start_us), t(self.last_end_us), self.span_seconds)?;
        writeln!(f, "hosts           {}", self.hosts)?;
        writeln!(f, "host pairs      {}", self.host_pairs)?;
        writeln!(f, "IPv6 flows      {}", self.ipv6_flows)?;
        writeln!(f, "packets         {}", self.packets)?;
        writeln!(f, "bytes           {}", self.bytes)?;
        shares(f, "protocols", &self.protocols)?;
        shares(f, "top dst ports", &self.top_dst_ports)?;
        shares(f, "TCP flags", &self.tcp_flags)?;
        shares(f, "labels", &self.labels)?;
        write!(f, "inter-arrival s ")?;
        for (i, (q, v)) in self.inter_arrival_quantiles.iter().enumerate() {
            let name = match *q {
                0.0 => "min".to_string(),
                1.0 => "max".to_string(),
                q => format!("p{}", (q * 100.0).round()),
            };
            write!(f, "{}{name} {v:.6}", if i > 0 { ", " } else { "" })?;
        }
        writeln!(f)?;
        writeln!(f, "                mean {:.6}, CV {:.3}", self.inter_arrival_mean, self.inter_arrival_cv)
    }
}
