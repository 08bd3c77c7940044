//! Turning "host A uses service S on host B at time t" into a [`FlowRecord`], valid by construction.
//!
//! Validity rules every simulated flow obeys (checked by the tests):
//! - `packets >= 1`;
//! - `min_packet_bytes(proto) * packets <= bytes <= 65535 * packets`;
//! - TCP flags only on TCP flows (0 otherwise); ports 0 for protocols without ports (ICMP);
//! - `duration_us == 0` exactly when the flow has a single packet;
//! - both addresses of the same IP version.

use super::dist::{Cdf, LogNormal};
use super::scenario::{BurstSpec, ServiceSpec, Transport};
use crate::record::{FlowRecord, TcpFlags, proto};
use rand::Rng;
use std::net::IpAddr;

/// Largest bytes per packet the simulator draws (Ethernet MTU); the validity bound is 65535.
const MTU: f64 = 1500.0;

/// Builds a flow and enforces the validity rules whatever the inputs: packet count at least 1, bytes per
/// packet clamped to [protocol minimum, MTU], duration 0 for one packet and at least 1 us otherwise, flags and
/// ports cleared where the protocol has none.
#[allow(clippy::too_many_arguments)]
pub fn make_flow(
    start_us: i64,
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    proto: u8,
    flags: TcpFlags,
    packets: u64,
    bytes_per_packet: f64,
    duration_s: f64,
    label: &str,
) -> FlowRecord {
    debug_assert_eq!(src.is_ipv4(), dst.is_ipv4(), "mixed IP versions");
    let packets = packets.max(1);
    let min = proto::min_packet_bytes(proto);
    let bpp = bytes_per_packet.clamp(min as f64, MTU);
    let bytes = ((bpp * packets as f64).round() as u64).clamp(min * packets, 65_535 * packets);
    let duration_us = if packets == 1 {
        0
    } else {
        ((duration_s * 1e6).round() as u64).max(1)
    };
    let ports = proto::has_ports(proto);
    FlowRecord {
        start_us,
        duration_us,
        src,
        dst,
        src_port: if ports { src_port } else { 0 },
        dst_port: if ports { dst_port } else { 0 },
        proto,
        flags: if proto == proto::TCP {
            flags
        } else {
            TcpFlags(0)
        },
        packets,
        bytes,
        label: Some(label.to_string()),
    }
}

/// A service's flow distributions, ready to sample.
#[derive(Clone, Debug)]
pub struct ServiceModel {
    pub name: String,
    pub transport: Transport,
    pub dst_port: u16,
    src_ports: [u16; 2],
    packets: LogNormal,
    bytes_per_packet: LogNormal,
    duration_s: LogNormal,
    flags: Vec<(TcpFlags, Option<u64>)>,
    flag_cdf: Option<Cdf>,
    pub burst: BurstSpec,
}

impl ServiceModel {
    pub fn new(name: &str, spec: &ServiceSpec) -> ServiceModel {
        ServiceModel {
            name: name.to_string(),
            transport: spec.transport,
            dst_port: spec.dst_port,
            src_ports: spec.src_ports,
            packets: LogNormal::new(&spec.packets),
            bytes_per_packet: LogNormal::new(&spec.bytes_per_packet),
            duration_s: LogNormal::new(&spec.duration_s),
            flags: spec
                .flags
                .iter()
                .map(|f| {
                    (
                        TcpFlags::parse(&f.flags).expect("validated flags"),
                        f.max_packets,
                    )
                })
                .collect(),
            flag_cdf: Cdf::new(spec.flags.iter().map(|f| f.weight)),
            burst: spec.burst,
        }
    }

    /// One flow of this service from `src` to `dst` (same IP version) starting at `start_us`.
    pub fn flow<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        start_us: i64,
        src: IpAddr,
        dst: IpAddr,
        label: &str,
    ) -> FlowRecord {
        let mut packets = self.packets.sample(rng).round().max(1.0) as u64;
        let mut flags = TcpFlags(0);
        if let Some(cdf) = &self.flag_cdf {
            let (f, cap) = self.flags[cdf.sample(rng)];
            flags = f;
            if let Some(cap) = cap {
                packets = packets.min(cap);
            }
        }
        let src_port = rng.gen_range(self.src_ports[0]..=self.src_ports[1]);
        let bpp = self.bytes_per_packet.sample(rng);
        let dur = self.duration_s.sample(rng);
        let proto = self.transport.proto(src.is_ipv6());
        make_flow(
            start_us,
            src,
            dst,
            src_port,
            self.dst_port,
            proto,
            flags,
            packets,
            bpp,
            dur,
            label,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_flow_enforces_rules() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let f = make_flow(5, a, b, 1, 2, proto::ICMP, TcpFlags(0x12), 0, 1.0, 3.0, "x");
        assert_eq!(
            (
                f.packets,
                f.bytes,
                f.duration_us,
                f.src_port,
                f.dst_port,
                f.flags
            ),
            (1, 28, 0, 0, 0, TcpFlags(0))
        );
        let g = make_flow(5, a, b, 1, 2, proto::TCP, TcpFlags(0x12), 3, 1e9, 0.0, "x");
        assert_eq!((g.bytes, g.duration_us, g.flags), (4500, 1, TcpFlags(0x12)));
    }
}
