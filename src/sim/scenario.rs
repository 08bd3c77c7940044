//! The scenario: every parameter of the simulated network, as a serde structure read from TOML.
//!
//! A scenario says *what* the network is (roles, address plans, services, timing, attacks); the engine in
//! [`super::background`] and [`super::attacks`] says *how* flows are drawn from it. Nothing about the simulated
//! traffic is hard-coded in the engine: a scenario file that validates is a network the simulator can run.
//!
//! Two scenarios ship embedded (see [`Scenario::named`]): `enterprise` (the documented reference, file
//! `scenarios/enterprise.toml`) and `enterprise-night-shift` (the same address plan with a different regime:
//! night-time peak, backup and admin traffic), which makes a visible drift when used as the second scenario of a
//! regime change. Any other scenario is loaded from a path ([`Scenario::load`]).
//!
//! Maps are `BTreeMap` so iteration order, and hence the random draws made while building the network, do not
//! depend on hashing: the same file and seed always give the same trace.

use crate::record::{TcpFlags, proto};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use super::SimError;

/// Embedded scenario files: (name, TOML text).
const EMBEDDED: &[(&str, &str)] = &[
    (
        "enterprise",
        include_str!("../../scenarios/enterprise.toml"),
    ),
    (
        "enterprise-night-shift",
        include_str!("../../scenarios/enterprise-night-shift.toml"),
    ),
];

/// A complete simulated network. See `scenarios/enterprise.toml` for every field documented in place.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, shown in logs and progress.
    pub name: String,
    /// Free text: what the scenario models.
    #[serde(default)]
    pub description: String,
    /// Hours added to UTC to get the network's local time, which the diurnal and weekly profiles are written in.
    #[serde(default)]
    pub utc_offset_hours: i32,
    /// Probability that a flow between two hosts that both have an IPv6 address uses IPv6.
    #[serde(default)]
    pub ipv6_preference: f64,
    /// Host roles by name (`workstation`, `server`, `printer`, `iot`, `external`, or any other name).
    pub roles: BTreeMap<String, RoleSpec>,
    /// Services by name (`https`, `dns`, ...), referenced by the roles' `services` mixes.
    pub services: BTreeMap<String, ServiceSpec>,
    /// Labelled attacks this scenario can inject when asked (by kind).
    #[serde(default)]
    pub attacks: AttackSpecs,
}

/// One host role: how many hosts, where their addresses come from, when and what they talk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Hosts of this role = max(`min_count`, round(`share` x --hosts)). Internal roles' shares usually sum to 1;
    /// the external role's share is how many outside peers per internal host.
    pub share: f64,
    #[serde(default)]
    pub min_count: usize,
    /// Whether hosts of this role are outside the organisation (public addresses, drawn at random from the
    /// prefixes) rather than inside (private addresses, numbered in order from the start of the prefixes).
    #[serde(default)]
    pub external: bool,
    /// IPv4 prefixes (`10.20.0.0/16`). Internal hosts fill them in order, round robin; external hosts are drawn
    /// uniformly from them.
    pub ipv4_prefixes: Vec<String>,
    /// IPv6 prefixes; a host gets an IPv6 address too with probability `ipv6_fraction`.
    #[serde(default)]
    pub ipv6_prefixes: Vec<String>,
    #[serde(default)]
    pub ipv6_fraction: f64,
    /// Mean sessions a host of this role starts per hour when both seasonal multipliers are 1. A session is one
    /// flow plus its Hawkes offspring (see [`BurstSpec`]), so the flow rate is higher.
    pub sessions_per_hour: f64,
    /// Tail shape alpha of the Lomax (Pareto II) distribution of gaps between a host's sessions, in operational
    /// (seasonally rescaled) time; mean is kept at 1/rate. Smaller = heavier tail (needs > 1). Absent: exponential
    /// gaps (a Poisson process, for control experiments).
    #[serde(default)]
    pub interarrival_tail: Option<f64>,
    /// 24 multipliers of the session rate, one per local hour 0..23.
    pub diurnal: Vec<f64>,
    /// 7 multipliers of the session rate, Monday..Sunday (local).
    pub weekly: Vec<f64>,
    /// Which services this role's sessions use, with relative weights.
    #[serde(default)]
    pub services: BTreeMap<String, f64>,
}

/// Transport protocol of a service.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
    Icmp,
}

impl Transport {
    /// IANA number; ICMP over IPv6 is ICMPv6 (58).
    pub fn proto(self, ipv6: bool) -> u8 {
        match (self, ipv6) {
            (Transport::Tcp, _) => proto::TCP,
            (Transport::Udp, _) => proto::UDP,
            (Transport::Icmp, false) => proto::ICMP,
            (Transport::Icmp, true) => proto::ICMPV6,
        }
    }
}

/// A log-normal distribution given by its median and the standard deviation of its logarithm, optionally
/// clamped. Log-normal because flow sizes and durations are multiplicative (a few huge transfers, many tiny).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogNormalSpec {
    pub median: f64,
    #[serde(default)]
    pub sigma: f64,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// One TCP outcome (e.g. normal close, reset, unanswered SYN) with its weight. `max_packets` caps the flow's
/// packets (an unanswered SYN is 1-2 packets).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlagOutcome {
    /// Flags in the 8-letter form `CEUAPRSF` (`...AP.SF`).
    pub flags: String,
    pub weight: f64,
    #[serde(default)]
    pub max_packets: Option<u64>,
}

/// Self-exciting bursts (a Hawkes process in its cluster form): each session flow spawns Poisson(`first`)
/// children, each child Poisson(`branching`) grandchildren and so on, every offspring Exp(`decay_s`) seconds
/// after its parent. Expected flows per session: 1 + first / (1 - branching).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct BurstSpec {
    pub first: f64,
    #[serde(default)]
    pub branching: f64,
    pub decay_s: f64,
    /// Probability that an offspring goes to its parent's peer (else to another of the host's usual peers).
    #[serde(default)]
    pub same_peer: f64,
}

/// A service: its protocol, ports, who answers it, and the distributions of its flows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub transport: Transport,
    /// Destination port (ignored, and 0 in records, for ICMP).
    #[serde(default)]
    pub dst_port: u16,
    /// Inclusive source port range; `[49152, 65535]` for ephemeral ports, `[123, 123]` for NTP.
    #[serde(default = "default_src_ports")]
    pub src_ports: [u16; 2],
    /// Roles whose hosts answer this service, with weights for choosing among them.
    pub providers: BTreeMap<String, f64>,
    /// Fraction of the internal hosts of a provider role that run this service (external providers: all).
    #[serde(default = "one")]
    pub provider_fraction: f64,
    /// Size of each client's persistent set of peers for this service (host-pair persistence).
    pub favourites: usize,
    /// Zipf exponent of how often a client uses each of its favourites (and how popular providers are).
    #[serde(default = "one")]
    pub zipf: f64,
    /// Probability that a session goes to a random provider outside the client's favourites.
    #[serde(default)]
    pub explore: f64,
    /// Packets per flow (both directions); rounded, at least 1.
    pub packets: LogNormalSpec,
    /// Bytes per packet at IP level; clamped to [protocol minimum, 1500].
    pub bytes_per_packet: LogNormalSpec,
    /// Duration of a multi-packet flow, seconds (single-packet flows have duration 0).
    pub duration_s: LogNormalSpec,
    /// TCP outcomes (required for TCP services, forbidden for others).
    #[serde(default)]
    pub flags: Vec<FlagOutcome>,
    #[serde(default)]
    pub burst: BurstSpec,
}

fn default_src_ports() -> [u16; 2] {
    [49152, 65535]
}
fn one() -> f64 {
    1.0
}

/// The attack kinds the simulator can inject; the kebab-case name is both the CLI name and the flows' label.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum AttackKind {
    Portscan,
    SshBrute,
    Ddos,
    Beacon,
}

impl AttackKind {
    pub const ALL: [AttackKind; 4] = [
        AttackKind::Portscan,
        AttackKind::SshBrute,
        AttackKind::Ddos,
        AttackKind::Beacon,
    ];

    /// The label of this attack's flows and its CLI name.
    pub fn label(self) -> &'static str {
        match self {
            AttackKind::Portscan => "portscan",
            AttackKind::SshBrute => "ssh-brute",
            AttackKind::Ddos => "ddos",
            AttackKind::Beacon => "beacon",
        }
    }
}

impl std::str::FromStr for AttackKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AttackKind::ALL
            .into_iter()
            .find(|k| k.label() == s.trim())
            .ok_or_else(|| format!("unknown attack {s:?} (portscan, ssh-brute, ddos or beacon)"))
    }
}

/// When an attack runs: from `start_frac` of the simulated span, for `duration_s` seconds (cut at the span's end).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AttackWindow {
    pub start_frac: f64,
    pub duration_s: f64,
}

/// Port scan: one outside host probes one internal host's ports in order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortscanSpec {
    #[serde(flatten)]
    pub window: AttackWindow,
    pub probes_per_s: f64,
    /// Inclusive port range probed, in order (wrapping).
    pub ports: [u16; 2],
    /// Fraction of probes a firewall drops (1 packet SYN, no answer); the rest are refused (SYN, RST-ACK).
    pub filtered_fraction: f64,
    pub attacker_prefixes: Vec<String>,
}

/// SSH brute force: one outside host tries passwords on one internal SSH server.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SshBruteSpec {
    #[serde(flatten)]
    pub window: AttackWindow,
    /// Mean seconds between attempts (exponential gaps).
    pub mean_interval_s: f64,
    pub packets: LogNormalSpec,
    pub bytes_per_packet: LogNormalSpec,
    /// Duration of each attempt's flow, seconds (`duration_s` is the attack's).
    pub flow_duration_s: LogNormalSpec,
    pub attacker_prefixes: Vec<String>,
}

/// DDoS burst: a botnet SYN-floods one internal server's port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DdosSpec {
    #[serde(flatten)]
    pub window: AttackWindow,
    pub flows_per_s: f64,
    pub bots: usize,
    pub dst_port: u16,
    pub attacker_prefixes: Vec<String>,
}

/// Beaconing C&C: one infected internal host calls its controller every `period_s` seconds, +- `jitter`
/// (a fraction of the period), from its start to the end of the span (or of its duration).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BeaconSpec {
    #[serde(flatten)]
    pub window: AttackWindow,
    pub period_s: f64,
    pub jitter: f64,
    pub dst_port: u16,
    /// Role the infected host is drawn from.
    pub victim_role: String,
    pub packets: LogNormalSpec,
    pub bytes_per_packet: LogNormalSpec,
    /// Duration of each call's flow, seconds (`duration_s` is the attack's).
    pub flow_duration_s: LogNormalSpec,
    pub controller_prefixes: Vec<String>,
}

/// Parameters of each attack kind; an attack runs only when asked for (CLI `--attacks`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct AttackSpecs {
    pub portscan: Option<PortscanSpec>,
    #[serde(rename = "ssh-brute")]
    pub ssh_brute: Option<SshBruteSpec>,
    pub ddos: Option<DdosSpec>,
    pub beacon: Option<BeaconSpec>,
}

impl Scenario {
    /// Names of the embedded scenarios.
    pub fn names() -> impl Iterator<Item = &'static str> {
        EMBEDDED.iter().map(|(n, _)| *n)
    }

    /// An embedded scenario by name.
    pub fn named(name: &str) -> Result<Scenario, SimError> {
        let (_, text) = EMBEDDED.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            SimError::Scenario(format!(
                "no embedded scenario {name:?} (known: {})",
                Scenario::names().collect::<Vec<_>>().join(", ")
            ))
        })?;
        Scenario::from_toml(text, &format!("embedded scenario {name}"))
    }

    /// Parses and validates scenario TOML; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Scenario, SimError> {
        let s: Scenario =
            toml::from_str(text).map_err(|e| SimError::Scenario(format!("{origin}: {e}")))?;
        s.validate()
            .map_err(|e| SimError::Scenario(format!("{origin}: {e}")))?;
        Ok(s)
    }

    /// Loads a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, SimError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Scenario(format!("cannot read {}: {e}", path.display())))?;
        Scenario::from_toml(&text, &path.display().to_string())
    }

    /// An embedded name, else a path to a scenario file.
    pub fn resolve(name_or_path: &str) -> Result<Scenario, SimError> {
        if EMBEDDED.iter().any(|(n, _)| *n == name_or_path) {
            return Scenario::named(name_or_path);
        }
        let p = Path::new(name_or_path);
        if p.exists() {
            return Scenario::load(p);
        }
        Err(SimError::Scenario(format!(
            "{name_or_path:?} is neither an embedded scenario ({}) nor a file",
            Scenario::names().collect::<Vec<_>>().join(", ")
        )))
    }

    /// Expected flows per session of a service (1 + first / (1 - branching)): what the Hawkes bursts multiply
    /// the session mix by. Panics if the scenario has no such service.
    pub fn flows_per_session(&self, service: &str) -> f64 {
        let b = self.services[service].burst;
        1.0 + b.first / (1.0 - b.branching)
    }

    /// Checks everything the engine relies on, with a message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        let fin = |v: f64| v.is_finite();
        if !(0.0..=1.0).contains(&self.ipv6_preference) {
            return Err("ipv6_preference must be in [0, 1]".into());
        }
        if !(-14..=14).contains(&self.utc_offset_hours) {
            return Err("utc_offset_hours must be in [-14, 14]".into());
        }
        if self.roles.is_empty() {
            return Err("no roles".into());
        }
        for (name, r) in &self.roles {
            let at = |m: &str| format!("roles.{name}: {m}");
            if !fin(r.share) || r.share < 0.0 {
                return Err(at("share must be >= 0"));
            }
            if r.ipv4_prefixes.is_empty() {
                return Err(at("needs at least one ipv4 prefix"));
            }
            for p in &r.ipv4_prefixes {
                super::network::Prefix::parse(p).map_err(|e| at(&e))?;
            }
            for p in &r.ipv6_prefixes {
                super::network::Prefix::parse(p).map_err(|e| at(&e))?;
            }
            if !(0.0..=1.0).contains(&r.ipv6_fraction)
                || (r.ipv6_fraction > 0.0 && r.ipv6_prefixes.is_empty())
            {
                return Err(at(
                    "ipv6_fraction must be in [0, 1] and needs ipv6_prefixes",
                ));
            }
            if !fin(r.sessions_per_hour) || r.sessions_per_hour < 0.0 {
                return Err(at("sessions_per_hour must be >= 0"));
            }
            if let Some(a) = r.interarrival_tail
                && !(a > 1.0 && fin(a))
            {
                return Err(at("interarrival_tail must be > 1 (finite mean)"));
            }
            if r.diurnal.len() != 24 || r.diurnal.iter().any(|v| !fin(*v) || *v < 0.0) {
                return Err(at("diurnal needs 24 multipliers >= 0"));
            }
            if r.weekly.len() != 7 || r.weekly.iter().any(|v| !fin(*v) || *v < 0.0) {
                return Err(at("weekly needs 7 multipliers >= 0"));
            }
            if r.sessions_per_hour > 0.0 && r.diurnal.iter().all(|v| *v == 0.0) {
                return Err(at(
                    "diurnal multipliers are all 0 but sessions_per_hour > 0",
                ));
            }
            if r.sessions_per_hour > 0.0 && r.weekly.iter().all(|v| *v == 0.0) {
                return Err(at("weekly multipliers are all 0 but sessions_per_hour > 0"));
            }
            if r.sessions_per_hour > 0.0 && r.services.values().all(|w| *w <= 0.0) {
                return Err(at(
                    "starts sessions but has no service with a positive weight",
                ));
            }
            for (s, w) in &r.services {
                let Some(spec) = self.services.get(s) else {
                    return Err(at(&format!("unknown service {s:?}")));
                };
                // Outside hosts only talk to inside providers (the monitor's point of view).
                let internal_provider = spec
                    .providers
                    .iter()
                    .any(|(p, pw)| *pw > 0.0 && self.roles.get(p).is_some_and(|pr| !pr.external));
                if r.external && *w > 0.0 && !internal_provider {
                    return Err(at(&format!(
                        "an external role uses {s:?}, which no internal role provides"
                    )));
                }
                if !fin(*w) || *w < 0.0 {
                    return Err(at(&format!("weight of {s} must be >= 0")));
                }
            }
        }
        for (name, s) in &self.services {
            let at = |m: &str| format!("services.{name}: {m}");
            if s.src_ports[0] > s.src_ports[1] {
                return Err(at("src_ports must be [low, high]"));
            }
            if s.providers.is_empty() {
                return Err(at("no providers"));
            }
            for (role, w) in &s.providers {
                if !self.roles.contains_key(role) {
                    return Err(at(&format!("unknown provider role {role:?}")));
                }
                if !fin(*w) || *w < 0.0 {
                    return Err(at("provider weights must be >= 0"));
                }
            }
            if !(s.provider_fraction > 0.0 && s.provider_fraction <= 1.0) {
                return Err(at("provider_fraction must be in (0, 1]"));
            }
            if s.favourites == 0 {
                return Err(at("favourites must be >= 1"));
            }
            if !(positive(s.zipf) && (0.0..=1.0).contains(&s.explore)) {
                return Err(at("zipf must be > 0 and explore in [0, 1]"));
            }
            for (field, d) in [
                ("packets", &s.packets),
                ("bytes_per_packet", &s.bytes_per_packet),
                ("duration_s", &s.duration_s),
            ] {
                check_lognormal(d).map_err(|e| at(&format!("{field}: {e}")))?;
            }
            match s.transport {
                Transport::Tcp => {
                    if s.flags.is_empty() {
                        return Err(at("a TCP service needs flag outcomes"));
                    }
                }
                _ => {
                    if !s.flags.is_empty() {
                        return Err(at("TCP flags on a non-TCP service"));
                    }
                }
            }
            if s.transport != Transport::Icmp && s.dst_port == 0 {
                return Err(at("dst_port must be set for TCP/UDP"));
            }
            for f in &s.flags {
                TcpFlags::parse(&f.flags).ok_or_else(|| at(&format!("bad flags {:?}", f.flags)))?;
                if !fin(f.weight) || f.weight < 0.0 || f.max_packets == Some(0) {
                    return Err(at("flag weights must be >= 0 and max_packets >= 1"));
                }
            }
            if !s.flags.is_empty() && s.flags.iter().all(|f| f.weight == 0.0) {
                return Err(at("all flag weights are 0"));
            }
            let b = s.burst;
            if !(fin(b.first)
                && b.first >= 0.0
                && (0.0..1.0).contains(&b.branching)
                && (0.0..=1.0).contains(&b.same_peer))
            {
                return Err(at(
                    "burst: first >= 0, branching in [0, 1), same_peer in [0, 1]",
                ));
            }
            if (b.first > 0.0) && !(fin(b.decay_s) && b.decay_s > 0.0) {
                return Err(at("burst.decay_s must be > 0"));
            }
        }
        let a = &self.attacks;
        let windows = [
            a.portscan.as_ref().map(|x| ("portscan", x.window)),
            a.ssh_brute.as_ref().map(|x| ("ssh-brute", x.window)),
            a.ddos.as_ref().map(|x| ("ddos", x.window)),
            a.beacon.as_ref().map(|x| ("beacon", x.window)),
        ];
        for (name, w) in windows.into_iter().flatten() {
            if !((0.0..1.0).contains(&w.start_frac) && positive(w.duration_s)) {
                return Err(format!(
                    "attacks.{name}: start_frac in [0, 1) and duration_s > 0"
                ));
            }
        }
        let prefixes = [
            a.portscan.as_ref().map(|x| &x.attacker_prefixes),
            a.ssh_brute.as_ref().map(|x| &x.attacker_prefixes),
            a.ddos.as_ref().map(|x| &x.attacker_prefixes),
            a.beacon.as_ref().map(|x| &x.controller_prefixes),
        ];
        for ps in prefixes.into_iter().flatten() {
            if ps.is_empty() {
                return Err(
                    "attacks: every attack needs at least one attacker/controller prefix".into(),
                );
            }
            for p in ps {
                super::network::Prefix::parse(p).map_err(|e| format!("attacks: {e}"))?;
            }
        }
        if let Some(p) = &a.portscan
            && !(positive(p.probes_per_s)
                && p.ports[0] <= p.ports[1]
                && p.ports[0] > 0
                && (0.0..=1.0).contains(&p.filtered_fraction))
        {
            return Err(
                "attacks.portscan: probes_per_s > 0, ports [low, high] from 1, filtered_fraction in [0, 1]".into()
            );
        }
        if let Some(s) = &a.ssh_brute {
            if !positive(s.mean_interval_s) {
                return Err("attacks.ssh-brute: mean_interval_s > 0".into());
            }
            for d in [&s.packets, &s.bytes_per_packet, &s.flow_duration_s] {
                check_lognormal(d).map_err(|e| format!("attacks.ssh-brute: {e}"))?;
            }
        }
        if let Some(d) = &a.ddos
            && !(positive(d.flows_per_s) && d.bots > 0 && d.dst_port > 0)
        {
            return Err("attacks.ddos: flows_per_s > 0, bots >= 1, dst_port set".into());
        }
        if let Some(b) = &a.beacon {
            if !(positive(b.period_s) && (0.0..1.0).contains(&b.jitter) && b.dst_port > 0) {
                return Err("attacks.beacon: period_s > 0, jitter in [0, 1), dst_port set".into());
            }
            if !self.roles.contains_key(&b.victim_role) {
                return Err(format!(
                    "attacks.beacon: unknown victim_role {:?}",
                    b.victim_role
                ));
            }
            for d in [&b.packets, &b.bytes_per_packet, &b.flow_duration_s] {
                check_lognormal(d).map_err(|e| format!("attacks.beacon: {e}"))?;
            }
        }
        Ok(())
    }
}

/// Finite and > 0 (NaN is not).
fn positive(v: f64) -> bool {
    v.is_finite() && v > 0.0
}

fn check_lognormal(d: &LogNormalSpec) -> Result<(), String> {
    if !(positive(d.median) && d.sigma >= 0.0 && d.sigma.is_finite()) {
        return Err("median must be > 0 and sigma >= 0".into());
    }
    if let (Some(lo), Some(hi)) = (d.min, d.max)
        && lo > hi
    {
        return Err("min > max".into());
    }
    Ok(())
}
