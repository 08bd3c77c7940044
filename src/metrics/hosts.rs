//! Host structure (STAN figures 8-9): who talks to how many, who moves the bytes, which services.
//!
//! - **Destinations per source**: for every source address, the number of distinct destination addresses it
//!   contacts. The two distributions (one value per source host) are compared by EMD on log10 (floor 1).
//! - **Bytes per host**: for every source address, the total bytes of the flows it starts; compared by EMD on
//!   log10 (floor 1).
//! - **Top ports**: the 10 most frequent destination ports of TCP flows and of UDP flows, with their share of
//!   that protocol's flows; `top_*_overlap` is the number of ports the real and synthetic top-10 lists share,
//!   divided by the real list's length.

use super::distances::emd;
use super::log10_count;
use crate::inspect::quantile_sorted;
use crate::record::{FlowRecord, proto};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

/// Ports listed in the top-port tables.
pub const TOP_PORTS: usize = 10;

/// One port and its share of the protocol's flows (percent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortShare {
    pub port: u16,
    pub flows: u64,
    pub percent: f64,
}

/// Quantiles (p50, p90, p99, max) of a per-host distribution, and its host count.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostDistribution {
    pub hosts: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Host-structure figures of one set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostStats {
    pub destinations_per_source: HostDistribution,
    pub bytes_per_source: HostDistribution,
    pub top_tcp_ports: Vec<PortShare>,
    pub top_udp_ports: Vec<PortShare>,
}

/// Host structure of both sets and their comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hosts {
    pub real: HostStats,
    pub synthetic: HostStats,
    pub destinations_per_source_emd_log10: f64,
    pub bytes_per_source_emd_log10: f64,
    pub top_tcp_overlap: f64,
    pub top_udp_overlap: f64,
}

/// Distinct destinations of every source (one value per source host).
pub fn destinations_per_source(flows: &[FlowRecord]) -> Vec<f64> {
    let mut m: HashMap<IpAddr, HashSet<IpAddr>> = HashMap::new();
    for r in flows {
        m.entry(r.src).or_default().insert(r.dst);
    }
    m.values().map(|s| s.len() as f64).collect()
}

/// Total bytes of the flows each source starts (one value per source host).
pub fn bytes_per_source(flows: &[FlowRecord]) -> Vec<f64> {
    let mut m: HashMap<IpAddr, u64> = HashMap::new();
    for r in flows {
        *m.entry(r.src).or_default() += r.bytes;
    }
    m.values().map(|&b| b as f64).collect()
}

/// The [`TOP_PORTS`] most frequent destination ports of one protocol (ties broken by lower port).
pub fn top_ports(flows: &[FlowRecord], protocol: u8) -> Vec<PortShare> {
    let mut m: HashMap<u16, u64> = HashMap::new();
    for r in flows.iter().filter(|r| r.proto == protocol) {
        *m.entry(r.dst_port).or_default() += 1;
    }
    let total: u64 = m.values().sum();
    let mut v: Vec<(u16, u64)> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(TOP_PORTS);
    v.into_iter()
        .map(|(port, flows)| PortShare {
            port,
            flows,
            percent: 100.0 * flows as f64 / total as f64,
        })
        .collect()
}

fn distribution(mut v: Vec<f64>) -> HostDistribution {
    v.sort_by(f64::total_cmp);
    HostDistribution {
        hosts: v.len(),
        p50: quantile_sorted(&v, 0.5),
        p90: quantile_sorted(&v, 0.9),
        p99: quantile_sorted(&v, 0.99),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// Host-structure figures of one set.
pub fn stats(flows: &[FlowRecord]) -> HostStats {
    HostStats {
        destinations_per_source: distribution(destinations_per_source(flows)),
        bytes_per_source: distribution(bytes_per_source(flows)),
        top_tcp_ports: top_ports(flows, proto::TCP),
        top_udp_ports: top_ports(flows, proto::UDP),
    }
}

fn overlap(a: &[PortShare], b: &[PortShare]) -> f64 {
    if a.is_empty() {
        return f64::NAN;
    }
    let bs: HashSet<u16> = b.iter().map(|p| p.port).collect();
    a.iter().filter(|p| bs.contains(&p.port)).count() as f64 / a.len() as f64
}

/// Host structure of both sets and their comparison (see the module docs).
pub fn hosts(real: &[FlowRecord], synthetic: &[FlowRecord]) -> Hosts {
    let log = |v: Vec<f64>| v.into_iter().map(log10_count).collect::<Vec<_>>();
    let r = stats(real);
    let s = stats(synthetic);
    Hosts {
        destinations_per_source_emd_log10: emd(
            &log(destinations_per_source(real)),
            &log(destinations_per_source(synthetic)),
        ),
        bytes_per_source_emd_log10: emd(
            &log(bytes_per_source(real)),
            &log(bytes_per_source(synthetic)),
        ),
        top_tcp_overlap: overlap(&r.top_tcp_ports, &s.top_tcp_ports),
        top_udp_overlap: overlap(&r.top_udp_ports, &s.top_udp_ports),
        real: r,
        synthetic: s,
    }
}
