//! The simulated hosts: their roles and addresses, who provides which service, and each client's persistent
//! set of peers per service (host-pair persistence: a workstation keeps talking to the same few servers).
//!
//! Built once per scenario from its own random stream, so two scenarios with the same address plan give the
//! same hosts the same addresses (a regime change keeps the network, changes the behaviour).
//!
//! Invariants: hosts of a role are contiguous (`Role::first .. first + count`); internal IPv4 addresses are
//! unique (numbered in order, skipping `.0` and `.255`); external addresses are drawn at random without
//! repetition; favourites never contain the client itself.

use super::SimError;
use super::dist::Cdf;
use super::scenario::{Scenario, Transport};
use rand::Rng;
use std::collections::{BTreeSet, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address prefix `addr/len`, IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    v6: bool,
    base: u128,
    host_bits: u32,
}

impl Prefix {
    pub fn parse(s: &str) -> Result<Prefix, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("prefix {s:?} needs /length"))?;
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("prefix {s:?}: bad address"))?;
        let len: u32 = l
            .trim()
            .parse()
            .map_err(|_| format!("prefix {s:?}: bad length"))?;
        let (v6, bits, base) = match addr {
            IpAddr::V4(a) => (false, 32, u32::from(a) as u128),
            IpAddr::V6(a) => (true, 128, u128::from(a)),
        };
        if len > bits || len < 8 || len + 2 > bits {
            return Err(format!("prefix {s:?}: length must be 8..={}", bits - 2));
        }
        let host_bits = bits - len;
        let mask = (1u128 << host_bits) - 1;
        Ok(Prefix {
            v6,
            base: base & !mask,
            host_bits,
        })
    }

    pub fn is_v6(&self) -> bool {
        self.v6
    }

    fn mask(&self) -> u128 {
        (1u128 << self.host_bits) - 1
    }

    fn addr(&self, offset: u128) -> IpAddr {
        let v = self.base | (offset & self.mask());
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(v))
        } else {
            IpAddr::V4(Ipv4Addr::from(v as u32))
        }
    }

    /// How many hosts [`Prefix::nth_host`] can number.
    pub fn capacity(&self) -> u128 {
        if self.host_bits >= 8 {
            (1u128 << (self.host_bits - 8)) * 254
        } else {
            (1u128 << self.host_bits) - 2
        }
    }

    /// The n-th host address, counting from the start of the prefix and skipping addresses ending in .0 / .255
    /// (network and broadcast of every /24), as DHCP pools hand them out.
    pub fn nth_host(&self, n: u128) -> Option<IpAddr> {
        if n >= self.capacity() {
            return None;
        }
        let off = if self.host_bits >= 8 {
            (n / 254) * 256 + n % 254 + 1
        } else {
            n + 1
        };
        Some(self.addr(off))
    }

    /// A uniformly random address in the prefix, never its first or last one.
    pub fn random<R: Rng + ?Sized>(&self, rng: &mut R) -> IpAddr {
        loop {
            let off = rng.r#gen::<u128>() & self.mask();
            if off != 0 && off != self.mask() {
                return self.addr(off);
            }
        }
    }
}

/// A random address from a list of prefixes (each chosen with equal probability).
pub fn random_in<R: Rng + ?Sized>(prefixes: &[Prefix], rng: &mut R) -> IpAddr {
    prefixes[rng.gen_range(0..prefixes.len())].random(rng)
}

/// Parses a list of prefixes (validated by the scenario already).
pub fn parse_all(list: &[String]) -> Result<Vec<Prefix>, SimError> {
    list.iter()
        .map(|p| Prefix::parse(p).map_err(SimError::Scenario))
        .collect()
}

/// One simulated host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    pub v4: Ipv4Addr,
    /// Set for dual-stack hosts.
    pub v6: Option<Ipv6Addr>,
    /// Index into [`Network::roles`].
    pub role: u16,
}

/// A role's hosts: `first .. first + count` in [`Network::hosts`].
#[derive(Clone, Debug)]
pub struct Role {
    pub name: String,
    pub external: bool,
    pub first: u32,
    pub count: u32,
}

/// Who answers one service: per provider role, the hosts that run it and how popular each is.
#[derive(Clone, Debug)]
struct Providers {
    /// (role index, providing hosts, popularity over them).
    pools: Vec<(u16, Vec<u32>, Cdf)>,
    /// Choice of pool for an internal client / an external one (internal pools only).
    for_internal: Option<Cdf>,
    for_external: Option<Cdf>,
}

/// Service identifiers are indices into the scenario's `services` map in key order.
pub type ServiceId = u16;

/// All hosts, who provides what, and every client's favourite peers.
#[derive(Clone, Debug)]
pub struct Network {
    hosts: Vec<Host>,
    roles: Vec<Role>,
    services: Vec<(String, Transport, u16)>,
    providers: Vec<Providers>,
    /// Favourite peers: for host h and service s, `favs[fav_start[h * S + s] ..][.. fav_len[s]]`;
    /// `u32::MAX` where h does not use s.
    fav_start: Vec<u32>,
    fav_len: Vec<u32>,
    favs: Vec<u32>,
    fav_cdf: Vec<Option<Cdf>>,
    explore: Vec<f64>,
}

const NONE: u32 = u32::MAX;

impl Network {
    /// Builds the hosts of `scenario` for `n` (the `--hosts` number), drawing from `rng`.
    pub fn build<R: Rng + ?Sized>(
        scenario: &Scenario,
        n: usize,
        rng: &mut R,
    ) -> Result<Network, SimError> {
        // 1. Addresses, role by role (BTreeMap order), all before any other draw so they depend on the address
        //    plan only.
        let mut hosts = Vec::new();
        let mut roles = Vec::new();
        let mut taken: HashSet<Ipv4Addr> = HashSet::new();
        for (ri, (name, spec)) in scenario.roles.iter().enumerate() {
            let count = ((spec.share * n as f64).round() as usize).max(spec.min_count);
            let v4 = parse_all(&spec.ipv4_prefixes)?;
            let v6 = parse_all(&spec.ipv6_prefixes)?;
            if v4.iter().any(|p| p.is_v6()) || v6.iter().any(|p| !p.is_v6()) {
                return Err(SimError::Scenario(format!(
                    "roles.{name}: IPv4 and IPv6 prefixes swapped"
                )));
            }
            let first = hosts.len() as u32;
            if hosts.len() + count >= u32::MAX as usize {
                return Err(SimError::Scenario("too many hosts".into()));
            }
            let capacity: u128 = v4.iter().map(|p| p.capacity()).sum();
            if !spec.external && count as u128 > capacity {
                return Err(SimError::Scenario(format!(
                    "roles.{name}: {count} hosts do not fit in its prefixes ({capacity} addresses)"
                )));
            }
            let mut next_in = vec![0u128; v4.len()];
            let mut k = 0usize;
            for i in 0..count {
                let addr = if spec.external {
                    // Random public addresses, without repeats (bounded tries: a tiny prefix list errors out).
                    let mut tries = 0;
                    loop {
                        let IpAddr::V4(a) = random_in(&v4, rng) else {
                            unreachable!("checked IPv4")
                        };
                        if taken.insert(a) {
                            break a;
                        }
                        tries += 1;
                        if tries > 1000 {
                            return Err(SimError::Scenario(format!(
                                "roles.{name}: prefixes too small for {count} hosts"
                            )));
                        }
                    }
                } else {
                    // Round robin over prefixes with room left.
                    loop {
                        let p = k % v4.len();
                        k += 1;
                        if let Some(IpAddr::V4(a)) = v4[p].nth_host(next_in[p]) {
                            next_in[p] += 1;
                            if taken.insert(a) {
                                break a;
                            }
                        }
                        if k > 4 * (count + v4.len()) + i {
                            return Err(SimError::Scenario(format!(
                                "roles.{name}: addresses overlap another role's"
                            )));
                        }
                    }
                };
                let v6addr = if !v6.is_empty() && rng.r#gen::<f64>() < spec.ipv6_fraction {
                    match random_in(&v6, rng) {
                        IpAddr::V6(a) => Some(a),
                        IpAddr::V4(_) => unreachable!("checked IPv6"),
                    }
                } else {
                    None
                };
                hosts.push(Host {
                    v4: addr,
                    v6: v6addr,
                    role: ri as u16,
                });
            }
            roles.push(Role {
                name: name.clone(),
                external: spec.external,
                first,
                count: count as u32,
            });
        }

        // 2. Providers of each service.
        let role_index = |name: &str| {
            roles
                .iter()
                .position(|r| r.name == name)
                .expect("validated role") as u16
        };
        let mut services = Vec::new();
        let mut providers = Vec::new();
        for (sname, spec) in &scenario.services {
            services.push((sname.clone(), spec.transport, spec.dst_port));
            let mut pools = Vec::new();
            let mut w_int = Vec::new();
            let mut w_ext = Vec::new();
            for (rname, w) in &spec.providers {
                let r = &roles[role_index(rname) as usize];
                if r.count == 0 || *w <= 0.0 {
                    continue;
                }
                let members: Vec<u32> = if r.external {
                    (r.first..r.first + r.count).collect()
                } else {
                    let k = ((spec.provider_fraction * r.count as f64).ceil() as usize)
                        .clamp(1, r.count as usize);
                    let mut chosen = BTreeSet::new();
                    while chosen.len() < k {
                        chosen.insert(r.first + rng.gen_range(0..r.count));
                    }
                    chosen.into_iter().collect()
                };
                let pop = Cdf::zipf(members.len(), spec.zipf).expect("non-empty pool");
                w_int.push(*w);
                w_ext.push(if r.external { 0.0 } else { *w });
                pools.push((role_index(rname), members, pop));
            }
            providers.push(Providers {
                pools,
                for_internal: Cdf::new(w_int),
                for_external: Cdf::new(w_ext),
            });
        }

        let s = services.len();
        let mut net = Network {
            hosts,
            roles,
            services,
            providers,
            fav_start: Vec::new(),
            fav_len: scenario
                .services
                .values()
                .map(|sp| sp.favourites as u32)
                .collect(),
            favs: Vec::new(),
            fav_cdf: scenario
                .services
                .values()
                .map(|sp| Cdf::zipf(sp.favourites, sp.zipf))
                .collect(),
            explore: scenario.services.values().map(|sp| sp.explore).collect(),
        };

        // 3. Favourites of every host for every service its role uses.
        let service_ids: Vec<&String> = scenario.services.keys().collect();
        let mut fav_start = vec![NONE; net.hosts.len() * s];
        let mut favs = Vec::new();
        for h in 0..net.hosts.len() as u32 {
            let role_spec = &scenario.roles[&net.roles[net.hosts[h as usize].role as usize].name];
            for (sname, w) in &role_spec.services {
                if *w <= 0.0 {
                    continue;
                }
                let sid = service_ids
                    .iter()
                    .position(|x| *x == sname)
                    .expect("validated service");
                let want = net.fav_len[sid] as usize;
                let mut list: Vec<u32> = Vec::with_capacity(want);
                for _ in 0..want {
                    for _ in 0..8 {
                        match net.pick_provider(sid as ServiceId, h, true, rng) {
                            Some(p) if !list.contains(&p) => {
                                list.push(p);
                                break;
                            }
                            _ => {}
                        }
                    }
                }
                if list.is_empty() {
                    continue; // no other host provides it: this host never uses the service
                }
                // Fewer distinct providers than slots: repeat them so every list has `want` entries.
                let distinct = list.len();
                for i in distinct..want {
                    list.push(list[i % distinct]);
                }
                fav_start[h as usize * s + sid] = favs.len() as u32;
                favs.extend(list);
            }
        }
        net.fav_start = fav_start;
        net.favs = favs;
        Ok(net)
    }

    /// A provider of `service` for client `host` other than itself: the pool by weight (internal pools only for
    /// an external client), then a host by popularity (`popular`) or uniformly. `None` if the draw hit the client
    /// or no pool is open to it.
    fn pick_provider<R: Rng + ?Sized>(
        &self,
        service: ServiceId,
        host: u32,
        popular: bool,
        rng: &mut R,
    ) -> Option<u32> {
        let pr = &self.providers[service as usize];
        let external = self.roles[self.hosts[host as usize].role as usize].external;
        let pools = if external {
            pr.for_external.as_ref()?
        } else {
            pr.for_internal.as_ref()?
        };
        let (_, members, pop) = &pr.pools[pools.sample(rng)];
        let p = if popular {
            members[pop.sample(rng)]
        } else {
            members[rng.gen_range(0..members.len())]
        };
        (p != host).then_some(p)
    }

    /// Whether `host` uses `service` (its role does and someone else provides it).
    pub fn uses(&self, host: u32, service: ServiceId) -> bool {
        self.fav_start[host as usize * self.services.len() + service as usize] != NONE
    }

    /// The peer of a new session of `host` on `service`: usually one of its favourites (Zipf over them), with
    /// probability `explore` a random provider. `None` if the host does not use the service.
    pub fn pick_peer<R: Rng + ?Sized>(
        &self,
        host: u32,
        service: ServiceId,
        rng: &mut R,
    ) -> Option<u32> {
        let start = self.fav_start[host as usize * self.services.len() + service as usize];
        if start == NONE {
            return None;
        }
        let s = service as usize;
        if self.explore[s] > 0.0
            && rng.r#gen::<f64>() < self.explore[s]
            && let Some(p) = self.pick_provider(service, host, false, rng)
        {
            return Some(p);
        }
        let i = self.fav_cdf[s].as_ref().map(|c| c.sample(rng)).unwrap_or(0);
        Some(self.favs[start as usize + i])
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn roles(&self) -> &[Role] {
        &self.roles
    }

    pub fn host(&self, i: u32) -> &Host {
        &self.hosts[i as usize]
    }

    /// The role name of host `i`.
    pub fn role_name(&self, i: u32) -> &str {
        &self.roles[self.hosts[i as usize].role as usize].name
    }

    /// Indices of the hosts of a role (empty if no such role).
    pub fn hosts_of_role(&self, name: &str) -> std::ops::Range<u32> {
        self.roles
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.first..r.first + r.count)
            .unwrap_or(0..0)
    }

    /// Internal hosts (those of roles not marked external).
    pub fn internal_hosts(&self) -> Vec<u32> {
        self.roles
            .iter()
            .filter(|r| !r.external)
            .flat_map(|r| r.first..r.first + r.count)
            .collect()
    }

    /// Internal hosts that answer some service on `transport`/`port`, in index order.
    pub fn internal_providers_of(&self, transport: Transport, port: u16) -> Vec<u32> {
        let mut out = BTreeSet::new();
        for (i, (_, t, p)) in self.services.iter().enumerate() {
            if *t == transport && *p == port {
                for (role, members, _) in &self.providers[i].pools {
                    if !self.roles[*role as usize].external {
                        out.extend(members.iter().copied());
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// TCP ports `host` answers on.
    pub fn open_tcp_ports(&self, host: u32) -> Vec<u16> {
        let mut out: Vec<u16> = self
            .services
            .iter()
            .enumerate()
            .filter(|(i, (_, t, _))| {
                *t == Transport::Tcp
                    && self.providers[*i]
                        .pools
                        .iter()
                        .any(|(_, m, _)| m.binary_search(&host).is_ok())
            })
            .map(|(_, (_, _, p))| *p)
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p = Prefix::parse("10.20.0.0/16").unwrap();
        assert_eq!(p.nth_host(0), Some("10.20.0.1".parse().unwrap()));
        assert_eq!(p.nth_host(253), Some("10.20.0.254".parse().unwrap()));
        assert_eq!(p.nth_host(254), Some("10.20.1.1".parse().unwrap()));
        assert_eq!(p.capacity(), 256 * 254);
        assert_eq!(p.nth_host(256 * 254), None);
        assert!(Prefix::parse("10.0.0.0").is_err());
        assert!(Prefix::parse("10.0.0.0/33").is_err());
        let q = Prefix::parse("fd00:20::/64").unwrap();
        assert!(q.is_v6());
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        let IpAddr::V6(a) = q.random(&mut rng) else {
            panic!()
        };
        assert_eq!(a.segments()[..4], [0xfd00, 0x20, 0, 0]);
    }
}
