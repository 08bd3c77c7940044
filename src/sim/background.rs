//! Benign background traffic of one scenario over a time window, as a stream in start-time order.
//!
//! Every pending event lives in one binary heap keyed by (time, sequence number): a host's next session start
//! (one per active host) and the Hawkes offspring of recent flows. Popping the earliest event emits exactly one
//! flow at its time and pushes later events only, so the output is in non-decreasing `start_us` order and memory
//! is bounded by hosts + pending offspring, never by the trace length.
//!
//! Determinism: one `ChaCha8Rng` consumed in event order; ties in time are broken by the sequence number
//! (push order), so the same scenario, host count, window and seed give the same flows on every platform.

use super::dist::{Cdf, exp_unit, lomax_unit, open_unit, poisson};
use super::flowgen::ServiceModel;
use super::network::{Network, ServiceId};
use super::scenario::Scenario;
use super::timing::{SECOND_US, Seasonal};
use crate::record::FlowRecord;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use std::sync::Arc;

/// What a pending event does when its time comes.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// The host starts a new session (and schedules its next one).
    Session,
    /// A Hawkes offspring of an earlier flow of this host: same service, parent's peer.
    Child { service: ServiceId, peer: u32 },
}

#[derive(Clone, Copy, Debug)]
struct Event {
    time: i64,
    seq: u64,
    host: u32,
    kind: Kind,
}

// Min-heap order on (time, seq): `BinaryHeap` is a max-heap, so compare reversed.
impl Ord for Event {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Event {}

/// A role's timing and service mix, ready to sample.
struct RoleModel {
    seasonal: Seasonal,
    tail: Option<f64>,
    /// Mix over `mix_services`.
    mix: Option<Cdf>,
    mix_services: Vec<ServiceId>,
}

impl RoleModel {
    /// One gap in operational time (mean 1): Lomax when a tail shape is set, else exponential.
    fn gap(&self, rng: &mut ChaCha8Rng) -> f64 {
        match self.tail {
            Some(a) => lomax_unit(rng, a),
            None => exp_unit(rng),
        }
    }
}

/// The background stream of one scenario in `[from_us, until_us)`.
pub struct Background {
    net: Arc<Network>,
    services: Vec<ServiceModel>,
    roles: Vec<RoleModel>,
    heap: BinaryHeap<Event>,
    rng: ChaCha8Rng,
    seq: u64,
    until_us: i64,
    ipv6_preference: f64,
}

impl Background {
    /// Schedules every active host's first session in `[from_us, until_us)`. The first gap is a full gap times
    /// a uniform (roughly the residual of a gap already under way), so hosts do not all start at `from_us`.
    pub fn new(
        scenario: &Scenario,
        net: Arc<Network>,
        from_us: i64,
        until_us: i64,
        mut rng: ChaCha8Rng,
    ) -> Background {
        let service_names: Vec<&String> = scenario.services.keys().collect();
        let services = scenario
            .services
            .iter()
            .map(|(n, s)| ServiceModel::new(n, s))
            .collect();
        let roles: Vec<RoleModel> = net
            .roles()
            .iter()
            .map(|r| {
                let spec = &scenario.roles[&r.name];
                let used: Vec<(ServiceId, f64)> = spec
                    .services
                    .iter()
                    .filter(|(_, w)| **w > 0.0)
                    .map(|(n, w)| {
                        (
                            service_names
                                .iter()
                                .position(|x| *x == n)
                                .expect("validated") as ServiceId,
                            *w,
                        )
                    })
                    .collect();
                RoleModel {
                    seasonal: Seasonal::new(spec, scenario.utc_offset_hours),
                    tail: spec.interarrival_tail,
                    mix: Cdf::new(used.iter().map(|(_, w)| *w)),
                    mix_services: used.iter().map(|(s, _)| *s).collect(),
                }
            })
            .collect();
        let mut bg = Background {
            net,
            services,
            roles,
            heap: BinaryHeap::new(),
            rng: rng.clone(),
            seq: 0,
            until_us,
            ipv6_preference: scenario.ipv6_preference,
        };
        for h in 0..bg.net.hosts().len() as u32 {
            let role = &bg.roles[bg.net.host(h).role as usize];
            if role.mix.is_none() || !role.seasonal.is_active() {
                continue;
            }
            let tau = role.gap(&mut rng) * open_unit(&mut rng);
            if let Some(t) = role.seasonal.advance(from_us, tau, until_us) {
                bg.push(t, h, Kind::Session);
            }
        }
        bg.rng = rng;
        bg
    }

    fn push(&mut self, time: i64, host: u32, kind: Kind) {
        self.heap.push(Event {
            time,
            seq: self.seq,
            host,
            kind,
        });
        self.seq += 1;
    }

    /// Pending events (hosts with a next session plus offspring not yet due): the engine's memory.
    pub fn pending(&self) -> usize {
        self.heap.len()
    }

    /// Spawns Poisson(`mean`) offspring of a flow at `t`, each Exp(decay) later.
    fn spawn(&mut self, t: i64, host: u32, service: ServiceId, peer: u32, mean: f64) {
        let decay_us = self.services[service as usize].burst.decay_s * SECOND_US as f64;
        for _ in 0..poisson(&mut self.rng, mean) {
            let at = t + (exp_unit(&mut self.rng) * decay_us).round() as i64;
            if at < self.until_us {
                self.push(at, host, Kind::Child { service, peer });
            }
        }
    }

    /// The addresses of a flow between two hosts: IPv6 when both have one and the preference draw says so.
    fn addresses(&mut self, a: u32, b: u32) -> (IpAddr, IpAddr) {
        let (ha, hb) = (self.net.host(a), self.net.host(b));
        if let (Some(x), Some(y)) = (ha.v6, hb.v6)
            && self.rng.r#gen::<f64>() < self.ipv6_preference
        {
            return (IpAddr::V6(x), IpAddr::V6(y));
        }
        (IpAddr::V4(ha.v4), IpAddr::V4(hb.v4))
    }

    fn emit(&mut self, t: i64, host: u32, service: ServiceId, peer: u32) -> FlowRecord {
        let (src, dst) = self.addresses(host, peer);
        self.services[service as usize].flow(&mut self.rng, t, src, dst, "benign")
    }
}

impl Iterator for Background {
    type Item = FlowRecord;

    fn next(&mut self) -> Option<FlowRecord> {
        while let Some(ev) = self.heap.pop() {
            match ev.kind {
                Kind::Session => {
                    let role = &self.roles[self.net.host(ev.host).role as usize];
                    let tau = role.gap(&mut self.rng);
                    let next = role.seasonal.advance(ev.time, tau, self.until_us);
                    let service = role.mix_services[role
                        .mix
                        .as_ref()
                        .expect("active role has a mix")
                        .sample(&mut self.rng)];
                    if let Some(t) = next {
                        self.push(t, ev.host, Kind::Session);
                    }
                    // A host whose role lists a service nobody else provides skips that session.
                    let Some(peer) = self.net.pick_peer(ev.host, service, &mut self.rng) else {
                        continue;
                    };
                    let flow = self.emit(ev.time, ev.host, service, peer);
                    let first = self.services[service as usize].burst.first;
                    self.spawn(ev.time, ev.host, service, peer, first);
                    return Some(flow);
                }
                Kind::Child { service, peer } => {
                    let burst = self.services[service as usize].burst;
                    let peer = if self.rng.r#gen::<f64>() < burst.same_peer {
                        peer
                    } else {
                        self.net
                            .pick_peer(ev.host, service, &mut self.rng)
                            .unwrap_or(peer)
                    };
                    let flow = self.emit(ev.time, ev.host, service, peer);
                    self.spawn(ev.time, ev.host, service, peer, burst.branching);
                    return Some(flow);
                }
            }
        }
        None
    }
}
