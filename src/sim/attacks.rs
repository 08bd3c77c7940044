//! Labelled attacks injected on top of the background, each a small generator with its own clock.
//!
//! | kind        | who                                    | flows |
//! |-------------|----------------------------------------|-------|
//! | `portscan`  | one outside host -> one internal host  | one TCP probe per port, in order, at a constant rate: filtered (1 SYN), refused (SYN + RST-ACK), or open (SYN, SYN-ACK, RST) where the victim runs a service |
//! | `ssh-brute` | one outside host -> an internal SSH server (TCP 22) | a short login attempt every Exp(mean) seconds |
//! | `ddos`      | a botnet of outside hosts -> one internal server's port | single-packet SYNs at a high Poisson rate |
//! | `beacon`    | an infected internal host -> its controller | a small HTTPS-like call every period +- jitter |
//!
//! Victims come from the scenario's network (the SSH server is a real provider of TCP 22, the DDoS target a
//! provider of the attacked port); attackers come from the scenario's attacker prefixes. Every flow carries its
//! attack's label ([`AttackKind::label`]). Output is in non-decreasing start time.

use super::SimError;
use super::dist::{LogNormal, exp_unit};
use super::flowgen::make_flow;
use super::network::{Network, parse_all, random_in};
use super::scenario::{AttackKind, AttackSpecs, AttackWindow, Transport};
use super::timing::SECOND_US;
use crate::record::{FlowRecord, TcpFlags, proto};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::net::IpAddr;

const SYN: TcpFlags = TcpFlags(TcpFlags::SYN);
const RST_ACK_SYN: TcpFlags = TcpFlags(TcpFlags::SYN | TcpFlags::RST | TcpFlags::ACK);
const SESSION: TcpFlags = TcpFlags(TcpFlags::SYN | TcpFlags::ACK | TcpFlags::PSH | TcpFlags::FIN);

/// What a generator emits, with its state.
enum Gen {
    Portscan {
        attacker: IpAddr,
        victim: IpAddr,
        src_port: u16,
        ports: [u16; 2],
        next_port: u16,
        open: Vec<u16>,
        filtered: f64,
        gap_us: f64,
    },
    SshBrute {
        attacker: IpAddr,
        server: IpAddr,
        mean_gap_us: f64,
        packets: LogNormal,
        bpp: LogNormal,
        dur: LogNormal,
    },
    Ddos {
        bots: Vec<IpAddr>,
        victim: IpAddr,
        port: u16,
        mean_gap_us: f64,
    },
    Beacon {
        infected: IpAddr,
        controller: IpAddr,
        port: u16,
        period_us: f64,
        jitter: f64,
        packets: LogNormal,
        bpp: LogNormal,
        dur: LogNormal,
    },
}

struct Active {
    kind: AttackKind,
    /// Next flow's start, exact (fractional microseconds accumulate without drift at constant rates).
    next: f64,
    end_us: i64,
    generator: Gen,
}

/// The attacks asked for, as one time-ordered stream.
pub struct Attacks {
    active: Vec<Active>,
    rng: ChaCha8Rng,
}

fn window(w: &AttackWindow, start_us: i64, end_us: i64) -> (i64, i64) {
    let from = start_us + ((end_us - start_us) as f64 * w.start_frac) as i64;
    (
        from,
        (from + (w.duration_s * SECOND_US as f64) as i64).min(end_us),
    )
}

fn ephemeral(rng: &mut ChaCha8Rng) -> u16 {
    rng.gen_range(49152..=65535)
}

impl Attacks {
    /// Sets up the asked-for attacks of `specs` over `[start_us, end_us)` against `net`. Errors when an asked
    /// attack has no parameters in the scenario or no possible victim.
    pub fn new(
        kinds: &[AttackKind],
        specs: &AttackSpecs,
        net: &Network,
        start_us: i64,
        end_us: i64,
        mut rng: ChaCha8Rng,
    ) -> Result<Attacks, SimError> {
        let mut kinds = kinds.to_vec();
        kinds.sort();
        kinds.dedup();
        let missing = |k: AttackKind| {
            SimError::Scenario(format!(
                "the scenario has no [attacks.{}] parameters",
                k.label()
            ))
        };
        let internal = net.internal_hosts();
        if internal.is_empty() && !kinds.is_empty() {
            return Err(SimError::Scenario("attacks need internal hosts".into()));
        }
        let v4 = |h: u32| IpAddr::V4(net.host(h).v4);
        let mut active = Vec::new();
        for kind in kinds {
            let (w, generator) = match kind {
                AttackKind::Portscan => {
                    let s = specs.portscan.as_ref().ok_or_else(|| missing(kind))?;
                    let victim = internal[rng.gen_range(0..internal.len())];
                    let attacker = random_in(&parse_all(&s.attacker_prefixes)?, &mut rng);
                    let src_port = ephemeral(&mut rng);
                    let generator = Gen::Portscan {
                        attacker,
                        victim: v4(victim),
                        src_port,
                        ports: s.ports,
                        next_port: s.ports[0],
                        open: net.open_tcp_ports(victim),
                        filtered: s.filtered_fraction,
                        gap_us: SECOND_US as f64 / s.probes_per_s,
                    };
                    (s.window, generator)
                }
                AttackKind::SshBrute => {
                    let s = specs.ssh_brute.as_ref().ok_or_else(|| missing(kind))?;
                    let servers = net.internal_providers_of(Transport::Tcp, 22);
                    let pool = if servers.is_empty() {
                        &internal
                    } else {
                        &servers
                    };
                    let server = pool[rng.gen_range(0..pool.len())];
                    let generator = Gen::SshBrute {
                        attacker: random_in(&parse_all(&s.attacker_prefixes)?, &mut rng),
                        server: v4(server),
                        mean_gap_us: s.mean_interval_s * SECOND_US as f64,
                        packets: LogNormal::new(&s.packets),
                        bpp: LogNormal::new(&s.bytes_per_packet),
                        dur: LogNormal::new(&s.flow_duration_s),
                    };
                    (s.window, generator)
                }
                AttackKind::Ddos => {
                    let s = specs.ddos.as_ref().ok_or_else(|| missing(kind))?;
                    let targets = net.internal_providers_of(Transport::Tcp, s.dst_port);
                    let pool = if targets.is_empty() {
                        &internal
                    } else {
                        &targets
                    };
                    let victim = pool[rng.gen_range(0..pool.len())];
                    let prefixes = parse_all(&s.attacker_prefixes)?;
                    let bots = (0..s.bots)
                        .map(|_| random_in(&prefixes, &mut rng))
                        .collect();
                    let generator = Gen::Ddos {
                        bots,
                        victim: v4(victim),
                        port: s.dst_port,
                        mean_gap_us: SECOND_US as f64 / s.flows_per_s,
                    };
                    (s.window, generator)
                }
                AttackKind::Beacon => {
                    let s = specs.beacon.as_ref().ok_or_else(|| missing(kind))?;
                    let hosts = net.hosts_of_role(&s.victim_role);
                    if hosts.is_empty() {
                        return Err(SimError::Scenario(format!(
                            "attacks.beacon: role {} has no hosts",
                            s.victim_role
                        )));
                    }
                    let infected = rng.gen_range(hosts);
                    let generator = Gen::Beacon {
                        infected: v4(infected),
                        controller: random_in(&parse_all(&s.controller_prefixes)?, &mut rng),
                        port: s.dst_port,
                        period_us: s.period_s * SECOND_US as f64,
                        jitter: s.jitter,
                        packets: LogNormal::new(&s.packets),
                        bpp: LogNormal::new(&s.bytes_per_packet),
                        dur: LogNormal::new(&s.flow_duration_s),
                    };
                    (s.window, generator)
                }
            };
            let (from, until) = window(&w, start_us, end_us);
            if from < until {
                active.push(Active {
                    kind,
                    next: from as f64,
                    end_us: until,
                    generator,
                });
            }
        }
        Ok(Attacks { active, rng })
    }

    /// One flow of attack `a` at its current time, and its clock moved to the next flow.
    fn step(a: &mut Active, rng: &mut ChaCha8Rng) -> FlowRecord {
        let t = a.next.floor() as i64;
        let label = a.kind.label();
        match &mut a.generator {
            Gen::Portscan {
                attacker,
                victim,
                src_port,
                ports,
                next_port,
                open,
                filtered,
                gap_us,
            } => {
                let port = *next_port;
                *next_port = if port >= ports[1] { ports[0] } else { port + 1 };
                a.next += *gap_us;
                let rtt = rng.gen_range(0.0002..0.02);
                let (flags, packets, bpp, dur) = if open.contains(&port) {
                    (RST_ACK_SYN, 3, 42.7, rtt)
                } else if rng.r#gen::<f64>() < *filtered {
                    (SYN, 1, 44.0, 0.0)
                } else {
                    (RST_ACK_SYN, 2, 42.0, rtt)
                };
                make_flow(
                    t,
                    *attacker,
                    *victim,
                    *src_port,
                    port,
                    proto::TCP,
                    flags,
                    packets,
                    bpp,
                    dur,
                    label,
                )
            }
            Gen::SshBrute {
                attacker,
                server,
                mean_gap_us,
                packets,
                bpp,
                dur,
            } => {
                a.next += exp_unit(rng) * *mean_gap_us;
                let p = packets.sample(rng).round() as u64;
                let (b, d, sp) = (bpp.sample(rng), dur.sample(rng), ephemeral(rng));
                make_flow(
                    t,
                    *attacker,
                    *server,
                    sp,
                    22,
                    proto::TCP,
                    SESSION,
                    p,
                    b,
                    d,
                    label,
                )
            }
            Gen::Ddos {
                bots,
                victim,
                port,
                mean_gap_us,
            } => {
                a.next += exp_unit(rng) * *mean_gap_us;
                let bot = bots[rng.gen_range(0..bots.len())];
                // Spoofed-looking SYNs: 40-60 byte packets (0-5 option words).
                let size = 40.0 + 4.0 * rng.gen_range(0..=5) as f64;
                let sp = rng.gen_range(1024..=65535);
                make_flow(
                    t,
                    bot,
                    *victim,
                    sp,
                    *port,
                    proto::TCP,
                    SYN,
                    1,
                    size,
                    0.0,
                    label,
                )
            }
            Gen::Beacon {
                infected,
                controller,
                port,
                period_us,
                jitter,
                packets,
                bpp,
                dur,
            } => {
                a.next += *period_us * (1.0 + *jitter * rng.gen_range(-1.0..=1.0));
                let p = packets.sample(rng).round() as u64;
                let (b, d, sp) = (bpp.sample(rng), dur.sample(rng), ephemeral(rng));
                make_flow(
                    t,
                    *infected,
                    *controller,
                    sp,
                    *port,
                    proto::TCP,
                    SESSION,
                    p,
                    b,
                    d,
                    label,
                )
            }
        }
    }
}

impl Iterator for Attacks {
    type Item = FlowRecord;

    fn next(&mut self) -> Option<FlowRecord> {
        // A handful of generators: a linear scan for the earliest beats a heap. Ties go to the first (sorted kinds).
        let (i, _) = self
            .active
            .iter()
            .enumerate()
            .min_by(|x, y| x.1.next.total_cmp(&y.1.next))?;
        let a = &mut self.active[i];
        let flow = Attacks::step(a, &mut self.rng);
        if a.next.floor() as i64 >= a.end_us {
            self.active.remove(i);
        }
        Some(flow)
    }
}
