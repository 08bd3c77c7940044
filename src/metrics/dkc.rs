//! Domain-knowledge checks (DKC): rules every genuine flow obeys, applied to each flow of a set. A rule may not
//! apply to a flow (e.g. a TCP rule on a UDP flow); its **pass %** is `100 * passed / applicable` over the flows
//! it applies to (NaN when it applies to none). Real and synthetic pass % are reported side by side: real data
//! is not perfect (exporters emit odd flows), so the target is the real figure, not 100 %.
//!
//! STAN's five (Xu et al., 2021), numbered as in the paper's table, then the extra ones:
//! 1. [`valid_addresses`] 2. [`min_bytes_packets`] 3. [`bytes_per_packet`] 4. [`flags_only_tcp`]
//! 5. [`web_ports_tcp`] 6. [`portless_zero_ports`] 7. [`nonnegative_duration`] 8. [`single_packet`]
//! 9. [`syn_only_few_packets`].

use crate::record::{FlowRecord, TcpFlags, proto};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What a rule needs to know about the real data besides the flow itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleContext {
    /// The real data holds QUIC (UDP to or from port 443), so UDP on 443 is legitimate.
    pub quic_in_real: bool,
}

impl RuleContext {
    /// Derives the context from the real data.
    pub fn from_real(real: &[FlowRecord]) -> RuleContext {
        RuleContext {
            quic_in_real: real.iter().any(is_quic),
        }
    }
}

fn is_quic(r: &FlowRecord) -> bool {
    r.proto == proto::UDP && (r.dst_port == 443 || r.src_port == 443)
}

/// Outcome of a rule on one flow: `None` when the rule does not apply, else whether it passed.
pub type RuleFn = fn(&FlowRecord, &RuleContext) -> Option<bool>;

/// DKC 1 (STAN): valid addresses. The source is not multicast (IPv4 224.0.0.0/4, IPv6 ff00::/8) nor the IPv4
/// limited broadcast 255.255.255.255; the destination is not in 0.0.0.0/8 ("this network") nor the IPv6
/// unspecified address `::`. Applies to every flow.
pub fn valid_addresses(r: &FlowRecord, _: &RuleContext) -> Option<bool> {
    let src_ok = match r.src {
        IpAddr::V4(a) => !a.is_multicast() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_multicast(),
    };
    let dst_ok = match r.dst {
        IpAddr::V4(a) => a.octets()[0] != 0,
        IpAddr::V6(a) => !a.is_unspecified(),
    };
    Some(src_ok && dst_ok)
}

/// DKC 2 (STAN): per-protocol minimums. A flow has at least one packet, and at least as many bytes as one
/// smallest packet of its protocol ([`proto::min_packet_bytes`]: 40 TCP, 28 UDP/ICMP, 20 otherwise). Applies
/// to every flow.
pub fn min_bytes_packets(r: &FlowRecord, _: &RuleContext) -> Option<bool> {
    Some(r.packets >= 1 && r.bytes >= proto::min_packet_bytes(r.proto))
}

/// DKC 3 (STAN): bytes per packet within IP limits: `40 * pkt <= byt <= 65535 * pkt` for TCP and
/// `28 * pkt <= byt <= 65535 * pkt` for UDP. Applies to TCP and UDP flows with at least one packet (a flow
/// with none fails rule 2; counting it here too, where `0 <= 0 <= 0` holds, would hide it).
pub fn bytes_per_packet(r: &FlowRecord, _: &RuleContext) -> Option<bool> {
    if r.packets == 0 {
        return None;
    }
    let min = match r.proto {
        proto::TCP => 40u128,
        proto::UDP => 28u128,
        _ => return None,
    };
    let (p, b) = (r.packets as u128, r.bytes as u128);
    Some(min * p <= b && b <= 65_535 * p)
}

/// DKC 4 (STAN): no TCP flags unless the protocol is TCP. Applies to non-TCP flows (a TCP flow passes
/// trivially, so it is not counted).
pub fn flags_only_tcp(r: &FlowRecord, _: &RuleContext) -> Option<bool> {
    if r.proto == proto::TCP {
        None
    } else {
        Some(r.flags.is_empty())
    }
}

/// DKC 5 (STAN): a flow to or from port 80 or 443 is TCP — except UDP on 443 when the real data holds QUIC
/// ([`RuleContext::quic_in_real`]). Applies to flows with 80 or 443 as either port.
pub fn web_ports_tcp(r: &FlowRecord, ctx: &RuleContext) -> Option<bool> {
    let ports = [r.src_port, r.dst_port];
    if !ports.contains(&80) && !ports.contains(&443) {
        return None;
    }
    Some(r.proto == proto::TCP || (ctx.quic_in_real && is_quic(r)))
}

/// DKC 6: protocols without ports (ICMP, GRE, ESP, ...; see [`proto::has_ports`]) have both ports 0. Applies to
/// portless protocols.
pub fn portless_zero_ports(r: &FlowRecord, _: &RuleContext) -> Option<bool> {
    if proto::has_ports(r.proto) {
        None
    } else {
        Some(r.src_port == 0 && r.dst_port == 0)
    }
}

/// DKC 7: duration >= 0. `duration_us` is unsigned, so a negative duration shows up as a value with the sign
/// bit set (an `i64 -> u64` cast of a negative number, above `i64::MAX`); the flow must also end at a
/// representable time (`start + duration` does not overflow `i64`). Applies to every flow.
pub fn nonnegative_duration(r: &FlowRecord, _: &RuleContext) -> Option<bool> {
    Some(i64::try_from(r.duration_us).is_ok_and(|d| r.start_us.checked_add(d).is_some()))
}

/// DKC 8: a single-packet flow has zero duration and at most 65535 bytes (one IP packet). Applies to flows
/// with exactly one packet.
pub fn single_packet(r: &FlowRecord, _: &RuleContext) -> Option<bool> {
    if r.packets != 1 {
        None
    } else {
        Some(r.duration_us == 0 && r.bytes <= 65_535)
    }
}

/// Most packets a SYN-only TCP flow may have: the first SYN plus Linux's default 6 retransmissions
/// (`net.ipv4.tcp_syn_retries = 6`).
pub const SYN_ONLY_MAX_PACKETS: u64 = 7;

/// DKC 9: a TCP flow whose only flag is SYN (an unanswered connection attempt) has at most
/// [`SYN_ONLY_MAX_PACKETS`] packets. Applies to TCP flows whose flags are exactly SYN.
pub fn syn_only_few_packets(r: &FlowRecord, _: &RuleContext) -> Option<bool> {
    if r.proto != proto::TCP || r.flags.bits() != TcpFlags::SYN {
        None
    } else {
        Some(r.packets <= SYN_ONLY_MAX_PACKETS)
    }
}

/// One rule: its stable name (used in reports and sketches), a one-line description and the check.
#[derive(Clone, Copy)]
pub struct Rule {
    pub name: &'static str,
    pub description: &'static str,
    pub check: RuleFn,
}

/// Every rule, in report order (STAN's five first).
pub const RULES: [Rule; 9] = [
    Rule {
        name: "valid_addresses",
        description: "src not multicast/broadcast, dst not 0.x",
        check: valid_addresses,
    },
    Rule {
        name: "min_bytes_packets",
        description: ">= 1 packet and >= one minimal packet of bytes",
        check: min_bytes_packets,
    },
    Rule {
        name: "bytes_per_packet",
        description: "40*pkt <= byt <= 65535*pkt (TCP), 28*pkt (UDP)",
        check: bytes_per_packet,
    },
    Rule {
        name: "flags_only_tcp",
        description: "no TCP flags on non-TCP flows",
        check: flags_only_tcp,
    },
    Rule {
        name: "web_ports_tcp",
        description: "ports 80/443 are TCP (UDP/443 ok if QUIC in real)",
        check: web_ports_tcp,
    },
    Rule {
        name: "portless_zero_ports",
        description: "ports 0 for protocols without ports",
        check: portless_zero_ports,
    },
    Rule {
        name: "nonnegative_duration",
        description: "duration >= 0 and end representable",
        check: nonnegative_duration,
    },
    Rule {
        name: "single_packet",
        description: "1-packet flows: duration 0, <= 65535 bytes",
        check: single_packet,
    },
    Rule {
        name: "syn_only_few_packets",
        description: "SYN-only TCP flows have <= 7 packets",
        check: syn_only_few_packets,
    },
];

/// Applicable and passed counts of one rule on one set: the mergeable state behind a pass %.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCount {
    pub applicable: u64,
    pub passed: u64,
}

impl RuleCount {
    /// `100 * passed / applicable`, NaN when the rule applied to no flow.
    pub fn pass_percent(&self) -> f64 {
        if self.applicable == 0 {
            f64::NAN
        } else {
            100.0 * self.passed as f64 / self.applicable as f64
        }
    }
    pub fn add(&mut self, outcome: Option<bool>) {
        if let Some(ok) = outcome {
            self.applicable += 1;
            self.passed += ok as u64;
        }
    }
    pub fn merge(&mut self, other: &RuleCount) {
        self.applicable += other.applicable;
        self.passed += other.passed;
    }
}

/// Counts of every rule of [`RULES`] (same order) over a set.
pub fn count_rules(flows: &[FlowRecord], ctx: &RuleContext) -> Vec<RuleCount> {
    let mut counts = vec![RuleCount::default(); RULES.len()];
    for r in flows {
        for (c, rule) in counts.iter_mut().zip(RULES.iter()) {
            c.add((rule.check)(r, ctx));
        }
    }
    counts
}

/// One rule's figures, real and synthetic side by side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleResult {
    pub rule: String,
    pub description: String,
    pub real: RuleCount,
    pub synthetic: RuleCount,
    pub real_pass_percent: f64,
    pub synthetic_pass_percent: f64,
}

/// Builds the side-by-side results from two count vectors in [`RULES`] order.
pub fn results_from_counts(real: &[RuleCount], synthetic: &[RuleCount]) -> Vec<RuleResult> {
    RULES
        .iter()
        .zip(real.iter().zip(synthetic))
        .map(|(rule, (r, s))| RuleResult {
            rule: rule.name.to_string(),
            description: rule.description.to_string(),
            real: *r,
            synthetic: *s,
            real_pass_percent: r.pass_percent(),
            synthetic_pass_percent: s.pass_percent(),
        })
        .collect()
}

/// Every DKC rule on the real and the synthetic set; the context (QUIC) comes from the real set.
pub fn check(real: &[FlowRecord], synthetic: &[FlowRecord]) -> Vec<RuleResult> {
    let ctx = RuleContext::from_real(real);
    results_from_counts(&count_rules(real, &ctx), &count_rules(synthetic, &ctx))
}
