//! The support of the training data: which protocols, flag bytes and port classes occurred (per protocol), and
//! the range of packets, bytes per packet and duration of each kind of flow (protocol and flag byte).
//!
//! # Why
//! A mixture of log-normals cannot put a sharp edge where the data has one, and a softmax never gives a class
//! exactly zero. Trained on a network whose packets never exceed 1,500 bytes, TempoNet sent 3-6 % of its flows
//! above that; trained on SYN-only flows that always had two packets, it gave 3-15 % of its SYN-only flows more
//! than seven (a connection attempt with more packets than a kernel retries), and a few TCP flows no flags or
//! port 0. Each is a flow the network it learned from never carried. Sampling therefore truncates every field to
//! what the data showed for that kind of flow (see `TempoNet`'s generation step): categorical draws to the classes
//! seen, continuous draws to the range seen. It is a truncation (the rest of the distribution keeps its shape),
//! not a resampling.
//!
//! # Growth
//! A model's support is fitted with its feature space and grows with every record of the windows it trains on
//! afterwards (`train_batch`: streaming training sees new services after the warm-up), so it does not block what
//! the data later shows. Parameter averaging leaves it alone: each streaming replica grows its own from the pairs
//! its worker owns, and those are the pairs it generates for. An empty support (no records) restricts nothing.
//!
//! # Exact ports
//! Above 1023 a port class is a bin of 100 ports, and decoding a bin uniformly turned an IRC server on 6667
//! into connections to any of 6624-6723 (on IoT-23 capture 34-1, a third of the test flows). So the support also
//! counts the exact ports above 1023 it saw, per protocol and direction ([`PortCounts`]), and a port is drawn
//! inside its bin from those counts, with the Good-Turing share of unseen ports drawn uniformly: a service port
//! seen thousands of times comes back exactly, ephemeral source ports (each seen about once) stay uniform.
//!
//! # Pair habits
//! The support is the whole network's; an observed pair also keeps its own categorical habits ([`PairHabits`]):
//! the kinds of flow (protocol and flag byte) and the port classes it used. A network that learned a flood (12,000
//! flows of one pair a millisecond apart, no flags, one source port) lets other pairs' lanes fall into it: on
//! IoT-23 34-1 an IRC bot's lane drew a flood flow, and the next flows continued the flood, 13,000 of them over
//! six hours (real: none). Generation for an observed pair with at least [`MIN_HABIT_FLOWS`] training flows
//! therefore keeps to its habits; a field with more than its cap of distinct values is left to the network's
//! support (a scanner's destination ports are not a habit).

use crate::record::{FlowRecord, proto};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::features::{N_BYTE_CLASSES, N_PORT_CLASSES, flags_of, port_class, port_class_range};

/// Training flows a pair needs for its habits to restrict its generated flows.
pub const MIN_HABIT_FLOWS: usize = 20;
/// Most distinct values a habit keeps (beyond: no restriction on that field): kinds of flow, destination and
/// source port classes.
pub const MAX_HABIT_KINDS: usize = 64;
pub const MAX_HABIT_PORTS: usize = 512;

/// A set of classes `0..n` as bits.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClassSet(Vec<u64>);

impl ClassSet {
    pub fn new(n: usize) -> ClassSet {
        ClassSet(vec![0; n.div_ceil(64)])
    }
    /// The set of `0..n` holding `members`.
    pub fn of(n: usize, members: impl IntoIterator<Item = usize>) -> ClassSet {
        let mut set = ClassSet::new(n);
        members.into_iter().for_each(|i| set.insert(i));
        set
    }
    pub fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    pub fn contains(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
    }
    /// The set's one class, when it holds exactly one.
    pub fn only(&self) -> Option<usize> {
        let mut found = None;
        for (w, &word) in self.0.iter().enumerate() {
            if word == 0 {
                continue;
            }
            if found.is_some() || word.count_ones() > 1 {
                return None;
            }
            found = Some(w * 64 + word.trailing_zeros() as usize);
        }
        found
    }
    /// Whether any class in `lo..hi` is in the set (a word at a time).
    pub fn any_in(&self, lo: usize, hi: usize) -> bool {
        let mut i = lo;
        while i < hi {
            let (w, b) = (i / 64, i % 64);
            let Some(word) = self.0.get(w) else {
                return false;
            };
            let n = (64 - b).min(hi - i);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << b
            };
            if word & mask != 0 {
                return true;
            }
            i += n;
        }
        false
    }
}

/// How often each port above 1023 occurred (below that a class is its port, so there is nothing to count).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortCounts(BTreeMap<u16, u32>);

impl PortCounts {
    pub fn add(&mut self, port: u16) {
        if port >= 1024 {
            let c = self.0.entry(port).or_default();
            *c = c.saturating_add(1);
        }
    }

    /// How often `port` occurred (0 below 1024: not counted).
    pub fn count(&self, port: u16) -> u32 {
        self.0.get(&port).copied().unwrap_or(0)
    }

    /// The chance that a flow of port class `class` has a port not among those seen in it: the Good-Turing
    /// estimate (ports seen once over flows), with one more of each so that a class seen once is not certain of
    /// its port: `(n1 + 1) / (n + 1)`, at most 1. A service port seen `n` times and no other gives `1 / (n + 1)`;
    /// ephemeral ports, nearly all seen once, give about 1. Classes below 1024 are exact: 0.
    pub fn unseen_share(&self, class: u16) -> f64 {
        let (lo, hi) = Self::range(class);
        if lo == hi {
            return 0.0;
        }
        Self::share(self.tally(lo, hi))
    }

    /// Inclusive port range of a class (out-of-range classes as the last one).
    fn range(class: u16) -> (u16, u16) {
        port_class_range(class.min(N_PORT_CLASSES as u16 - 1))
    }

    /// Flows counted in `lo..=hi`, and ports among them seen once.
    fn tally(&self, lo: u16, hi: u16) -> (u64, u64) {
        self.0.range(lo..=hi).fold((0, 0), |(n, n1), (_, &c)| {
            (n + c as u64, n1 + (c == 1) as u64)
        })
    }

    /// `(n1 + 1) / (n + 1)`, at most 1 (see [`Self::unseen_share`]).
    fn share((n, n1): (u64, u64)) -> f64 {
        ((n1 + 1) as f64 / (n + 1) as f64).min(1.0)
    }

    /// A port of class `class`: one of the ports seen in it, in proportion to its count, or with the
    /// [`Self::unseen_share`] a port drawn uniformly in the class (as STAN decodes).
    pub fn draw<R: Rng>(&self, class: u16, rng: &mut R) -> u16 {
        let (lo, hi) = Self::range(class);
        if lo == hi {
            return lo;
        }
        let (n, n1) = self.tally(lo, hi);
        if rng.r#gen::<f64>() < Self::share((n, n1)) {
            return rng.gen_range(lo..=hi);
        }
        let mut x = rng.gen_range(0..n);
        for (&p, &c) in self.0.range(lo..=hi) {
            if x < c as u64 {
                return p;
            }
            x -= c as u64;
        }
        unreachable!("x < n, the sum of the counts")
    }
}

/// What the data showed for one protocol.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProtoSupport {
    pub proto: u8,
    pub flags: ClassSet,
    pub dst_classes: ClassSet,
    pub src_classes: ClassSet,
    /// Exact ports above 1023 (see the module documentation: exact ports).
    pub dst_ports: PortCounts,
    pub src_ports: PortCounts,
}

/// The categorical habits of one pair (see the module documentation): sorted values, `None` for a field with
/// more distinct values than its cap.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PairHabits {
    /// Training flows the habits come from.
    pub flows: u64,
    /// (protocol, flag byte) as the features see them (flags only on TCP).
    pub kinds: Option<Vec<(u8, u8)>>,
    /// (protocol, port class), protocols with ports only.
    pub dst: Option<Vec<(u8, u16)>>,
    pub src: Option<Vec<(u8, u16)>>,
}

/// The classes of `values` whose protocol is `p`, as a set of `n`.
fn classes_of<T: Copy + Into<usize>>(values: &[(u8, T)], p: u8, n: usize) -> ClassSet {
    ClassSet::of(n, values.iter().filter(|x| x.0 == p).map(|x| x.1.into()))
}

impl PairHabits {
    /// The habits of a pair's training flows: no habit yet, widened by each flow (see [`PairHabits::observe`]).
    pub fn fit<'r>(records: impl IntoIterator<Item = &'r FlowRecord>) -> PairHabits {
        let mut h = PairHabits {
            flows: 0,
            kinds: Some(Vec::new()),
            dst: Some(Vec::new()),
            src: Some(Vec::new()),
        };
        records.into_iter().for_each(|r| h.observe(r));
        h
    }

    /// A flow of the pair widens its habits (a field that passes its cap is left free from then on): training
    /// flows through [`PairHabits::fit`], streaming ones as they come.
    pub fn observe(&mut self, r: &FlowRecord) {
        fn add<T: Ord>(v: &mut Option<Vec<T>>, x: T, cap: usize) {
            if let Some(s) = v
                && let Err(i) = s.binary_search(&x)
            {
                s.insert(i, x);
                if s.len() > cap {
                    *v = None;
                }
            }
        }
        self.flows += 1;
        add(&mut self.kinds, (r.proto, flags_of(r)), MAX_HABIT_KINDS);
        if proto::has_ports(r.proto) {
            add(
                &mut self.dst,
                (r.proto, port_class(r.dst_port)),
                MAX_HABIT_PORTS,
            );
            add(
                &mut self.src,
                (r.proto, port_class(r.src_port)),
                MAX_HABIT_PORTS,
            );
        }
    }

    /// `r`'s service is one of the pair's habits: its protocol is among the pair's kinds and its destination port
    /// class among its destination classes (fields over their cap admit anything). A twin's real pair using a
    /// service it never used in training has changed, and its twin is left free. Flags and source ports are not
    /// checked: a connection's outcome and a client's ephemeral port vary without any change of habit (on IoT-23
    /// 34-1 the IRC bot's real flows in the held-out part had source port classes and flag bytes its training
    /// flows never had, and a check of them left most of its twin's sessions free to drift into the flood).
    pub fn admits(&self, r: &FlowRecord) -> bool {
        let proto_ok = self
            .kinds
            .as_ref()
            .is_none_or(|k| k.iter().any(|x| x.0 == r.proto));
        let dst_ok = !proto::has_ports(r.proto)
            || self
                .dst
                .as_ref()
                .is_none_or(|v| v.binary_search(&(r.proto, port_class(r.dst_port))).is_ok());
        proto_ok && dst_ok
    }

    /// The habits as generation masks; `None` when the pair had fewer than [`MIN_HABIT_FLOWS`] flows.
    pub fn masks(&self) -> Option<HabitMasks> {
        if self.flows < MIN_HABIT_FLOWS as u64 {
            return None;
        }
        let mut protos: Vec<u8> = self.kinds.iter().flatten().map(|k| k.0).collect();
        protos.extend(self.dst.iter().flatten().map(|d| d.0));
        protos.extend(self.src.iter().flatten().map(|d| d.0));
        protos.sort_unstable();
        protos.dedup();
        let by_proto = protos
            .iter()
            .map(|&p| HabitMask {
                proto: p,
                flags: self
                    .kinds
                    .as_ref()
                    .map(|k| classes_of(k, p, N_BYTE_CLASSES)),
                dst_classes: self.dst.as_ref().map(|v| classes_of(v, p, N_PORT_CLASSES)),
                src_classes: self.src.as_ref().map(|v| classes_of(v, p, N_PORT_CLASSES)),
            })
            .collect();
        let protos = self
            .kinds
            .as_ref()
            .map(|k| ClassSet::of(N_BYTE_CLASSES, k.iter().map(|x| x.0 as usize)));
        Some(HabitMasks { protos, by_proto })
    }
}

/// A pair's habits as the sets a generation step truncates to (`None`: the network's support decides).
#[derive(Clone, Debug, PartialEq)]
pub struct HabitMasks {
    pub protos: Option<ClassSet>,
    by_proto: Vec<HabitMask>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HabitMask {
    pub proto: u8,
    pub flags: Option<ClassSet>,
    pub dst_classes: Option<ClassSet>,
    pub src_classes: Option<ClassSet>,
}

impl HabitMasks {
    /// The masks of protocol `p` (`None` for a protocol the pair never used: with its kinds capped it may be
    /// drawn, and then the network's support decides).
    pub fn proto(&self, p: u8) -> Option<&HabitMask> {
        self.by_proto.iter().find(|m| m.proto == p)
    }
}

/// Ranges of the counts of one kind of flow (protocol and flag byte).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KindSupport {
    pub proto: u8,
    pub flags: u8,
    pub packets: (u64, u64),
    /// Bytes per packet (as the features see it: within the protocol's bounds).
    pub bytes_per_packet: (f64, f64),
    /// Whether zero durations occurred, and the range of the non-zero ones (µs) if any did.
    pub zero_duration: bool,
    pub nonzero_duration_us: Option<(u64, u64)>,
}

/// See the module documentation.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Support {
    by_proto: Vec<ProtoSupport>,
    kinds: Vec<KindSupport>,
}

impl Support {
    pub fn fit(records: &[FlowRecord]) -> Support {
        let mut s = Support::default();
        records.iter().for_each(|r| s.observe(r));
        s
    }

    /// Adds one record, as the features see it (flags only on TCP, ports only on protocols with ports).
    pub fn observe(&mut self, r: &FlowRecord) {
        let ports = proto::has_ports(r.proto);
        let flags = flags_of(r);
        let i = match self.by_proto.binary_search_by_key(&r.proto, |p| p.proto) {
            Ok(i) => i,
            Err(i) => {
                self.by_proto.insert(
                    i,
                    ProtoSupport {
                        proto: r.proto,
                        flags: ClassSet::new(N_BYTE_CLASSES),
                        dst_classes: ClassSet::new(N_PORT_CLASSES),
                        src_classes: ClassSet::new(N_PORT_CLASSES),
                        dst_ports: PortCounts::default(),
                        src_ports: PortCounts::default(),
                    },
                );
                i
            }
        };
        let p = &mut self.by_proto[i];
        p.flags.insert(flags as usize);
        p.dst_classes
            .insert(if ports { port_class(r.dst_port) } else { 0 } as usize);
        p.src_classes
            .insert(if ports { port_class(r.src_port) } else { 0 } as usize);
        if ports {
            p.dst_ports.add(r.dst_port);
            p.src_ports.add(r.src_port);
        }
        let packets = r.packets.max(1);
        let (lo, hi) = super::compliance::bpp_bounds(r.proto);
        let bpp = (r.bytes as f64 / packets as f64).clamp(lo, hi);
        let key = (r.proto, flags);
        match self
            .kinds
            .binary_search_by_key(&key, |k| (k.proto, k.flags))
        {
            Ok(i) => {
                let k = &mut self.kinds[i];
                k.packets = (k.packets.0.min(packets), k.packets.1.max(packets));
                k.bytes_per_packet = (k.bytes_per_packet.0.min(bpp), k.bytes_per_packet.1.max(bpp));
                k.zero_duration |= r.duration_us == 0;
                if r.duration_us > 0 {
                    let d = r.duration_us;
                    k.nonzero_duration_us = Some(
                        k.nonzero_duration_us
                            .map_or((d, d), |(lo, hi)| (lo.min(d), hi.max(d))),
                    );
                }
            }
            Err(i) => self.kinds.insert(
                i,
                KindSupport {
                    proto: r.proto,
                    flags,
                    packets: (packets, packets),
                    bytes_per_packet: (bpp, bpp),
                    zero_duration: r.duration_us == 0,
                    nonzero_duration_us: (r.duration_us > 0)
                        .then_some((r.duration_us, r.duration_us)),
                },
            ),
        }
    }

    /// Protocols seen, as the protocol head's mask (built on each call: a handful of entries); `None` (no
    /// restriction) when nothing was.
    pub fn protos(&self) -> Option<ClassSet> {
        (!self.by_proto.is_empty()).then(|| {
            ClassSet::of(
                N_BYTE_CLASSES,
                self.by_proto.iter().map(|p| p.proto as usize),
            )
        })
    }
    /// What was seen of protocol `p`; `None` when it never was (then nothing about it is restricted).
    pub fn proto(&self, p: u8) -> Option<&ProtoSupport> {
        self.by_proto
            .binary_search_by_key(&p, |s| s.proto)
            .ok()
            .map(|i| &self.by_proto[i])
    }
    /// Ranges of flows of protocol `p` with flag byte `flags` (0 for protocols other than TCP); `None` when the
    /// kind was never seen.
    pub fn kind(&self, p: u8, flags: u8) -> Option<&KindSupport> {
        self.kinds
            .binary_search_by_key(&(p, flags), |k| (k.proto, k.flags))
            .ok()
            .map(|i| &self.kinds[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TcpFlags;

    #[test]
    fn a_class_set_knows_its_only_class() {
        assert_eq!(ClassSet::new(1670).only(), None);
        for c in [0, 63, 64, 443, 1669] {
            assert_eq!(ClassSet::of(1670, [c]).only(), Some(c), "{c}");
        }
        // Two classes, in one word or in two.
        assert_eq!(ClassSet::of(1670, [3, 5]).only(), None);
        assert_eq!(ClassSet::of(1670, [3, 700]).only(), None);
    }

    fn flow(proto: u8, flags: u8, dport: u16, packets: u64, bytes: u64, dur: u64) -> FlowRecord {
        FlowRecord {
            start_us: 0,
            duration_us: dur,
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            src_port: 50_000,
            dst_port: dport,
            proto,
            flags: TcpFlags(flags),
            packets,
            bytes,
            label: None,
        }
    }

    #[test]
    fn class_set_ranges() {
        let mut s = ClassSet::new(1670);
        for i in [0, 63, 64, 700, 1669] {
            s.insert(i);
        }
        for i in 0..1670 {
            assert_eq!(s.contains(i), [0, 63, 64, 700, 1669].contains(&i), "{i}");
        }
        // Every range against a direct count.
        for lo in (0..1670).step_by(37) {
            for hi in (lo..=1670).step_by(41) {
                let direct = (lo..hi).any(|i| s.contains(i));
                assert_eq!(s.any_in(lo, hi), direct, "{lo}..{hi}");
            }
        }
        assert!(!s.any_in(1, 63));
        assert!(s.any_in(1, 64));
        assert!(!s.contains(5000));
    }

    #[test]
    fn kinds_and_protocols() {
        let s = Support::fit(&[
            flow(proto::TCP, TcpFlags::SYN, 443, 2, 120, 0),
            flow(proto::TCP, TcpFlags::SYN, 80, 1, 60, 0),
            flow(proto::TCP, 0x1b, 443, 12, 9_000, 40_000),
            // Flags on UDP are not a UDP kind with flags: the features drop them.
            flow(proto::UDP, 0x02, 53, 2, 180, 900),
        ]);
        let p = s.protos().unwrap();
        assert!(p.contains(6) && p.contains(17) && !p.contains(1));
        let tcp = s.proto(proto::TCP).unwrap();
        assert!(tcp.flags.contains(TcpFlags::SYN as usize) && tcp.flags.contains(0x1b));
        assert!(!tcp.flags.contains(0));
        assert!(tcp.dst_classes.contains(443) && tcp.dst_classes.contains(80));
        assert!(!tcp.dst_classes.contains(53) && !tcp.dst_classes.contains(0));
        assert!(tcp.src_classes.contains(port_class(50_000) as usize));
        let syn = s.kind(proto::TCP, TcpFlags::SYN).unwrap();
        assert_eq!(syn.packets, (1, 2));
        assert_eq!(syn.bytes_per_packet, (60.0, 60.0));
        assert!(syn.zero_duration && syn.nonzero_duration_us.is_none());
        let udp = s.kind(proto::UDP, 0).unwrap();
        assert_eq!(
            (udp.nonzero_duration_us, udp.packets),
            (Some((900, 900)), (2, 2))
        );
        assert!(!udp.zero_duration);
        assert!(s.kind(proto::UDP, 0x02).is_none());
        assert!(s.proto(proto::ICMP).is_none());
        assert!(Support::default().protos().is_none());
    }

    #[test]
    fn exact_ports_inside_their_class() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut c = PortCounts::default();
        // A service seen 99 times and a neighbour once in the same class; ephemeral ports once each elsewhere.
        (0..99).for_each(|_| c.add(6667));
        c.add(6700);
        for p in (50_024..50_124).step_by(3) {
            c.add(p);
        }
        // Below 1024 nothing is counted: a class is its port.
        c.add(443);
        assert_eq!((c.count(443), c.count(6667), c.count(6700)), (0, 99, 1));
        let irc = port_class(6667);
        // (1 singleton + 1) / (100 flows + 1).
        assert!((c.unseen_share(irc) - 2.0 / 101.0).abs() < 1e-12);
        assert_eq!(c.unseen_share(port_class(443)), 0.0);
        // A class never seen: uniform.
        assert_eq!(c.unseen_share(port_class(20_000)), 1.0);
        // 34 singletons over 34 flows: uniform.
        assert_eq!(c.unseen_share(port_class(50_050)), 1.0);
        let (lo, hi) = port_class_range(irc);
        let draws: Vec<u16> = (0..10_000).map(|_| c.draw(irc, &mut rng)).collect();
        assert!(draws.iter().all(|p| (lo..=hi).contains(p)));
        let exact = draws.iter().filter(|&&p| p == 6667).count() as f64 / 1e4;
        // 99/101 from the counts, plus 1/100 of the uniform share.
        assert!(
            (exact - (99.0 / 101.0 + 2.0 / 101.0 / 100.0)).abs() < 0.01,
            "{exact}"
        );
        assert_eq!(c.draw(port_class(443), &mut rng), 443);
        let spread: std::collections::HashSet<u16> = (0..2_000)
            .map(|_| c.draw(port_class(50_050), &mut rng))
            .collect();
        assert!(
            spread.len() > 90,
            "ephemeral class drawn over {} ports",
            spread.len()
        );
    }

    /// The destination port classes a pair's habits allow for protocol `p` (it must have them).
    fn dst_classes(m: &HabitMasks, p: u8) -> &ClassSet {
        m.proto(p).unwrap().dst_classes.as_ref().unwrap()
    }

    #[test]
    fn pair_habits_and_their_caps() {
        let mut v: Vec<FlowRecord> = (0..30)
            .map(|i| flow(proto::TCP, [TcpFlags::SYN, 0x1b][i % 2], 6667, 3, 180, 0))
            .collect();
        v.push(flow(proto::UDP, 0x02, 123, 1, 76, 0));
        let h = PairHabits::fit(&v);
        assert_eq!(h.flows, 31);
        assert_eq!(
            h.kinds.as_deref(),
            Some(
                &[
                    (proto::TCP, TcpFlags::SYN),
                    (proto::TCP, 0x1b),
                    (proto::UDP, 0)
                ][..]
            )
        );
        let m = h.masks().unwrap();
        let p = m.protos.as_ref().unwrap();
        assert!(p.contains(6) && p.contains(17) && !p.contains(1));
        let tcp = m.proto(proto::TCP).unwrap();
        let flags = tcp.flags.as_ref().unwrap();
        assert!(
            flags.contains(TcpFlags::SYN as usize) && flags.contains(0x1b) && !flags.contains(0)
        );
        let dst = dst_classes(&m, proto::TCP);
        assert!(dst.contains(port_class(6667) as usize) && !dst.contains(80));
        assert!(dst_classes(&m, proto::UDP).contains(123));
        assert!(m.proto(proto::ICMP).is_none());
        // Too few flows: no restriction.
        assert!(PairHabits::fit(&v[..MIN_HABIT_FLOWS - 1]).masks().is_none());
        // A scanner's destination ports are not a habit: that field is left free, the others still hold.
        let scan: Vec<FlowRecord> = (0..600)
            .map(|i| flow(proto::TCP, TcpFlags::SYN, i as u16, 1, 60, 0))
            .collect();
        let h = PairHabits::fit(&scan);
        assert!(h.dst.is_none() && h.kinds.is_some());
        let m = h.masks().unwrap();
        assert!(m.proto(proto::TCP).unwrap().dst_classes.is_none());
        assert!(m.proto(proto::TCP).unwrap().flags.is_some());
    }

    /// A twin keeps its pair's habits while the real flow it follows uses one of the pair's services (protocol and
    /// destination port class; a new flag byte or source port is no change of habit), and streaming flows widen
    /// the habits up to their caps.
    #[test]
    fn pair_habits_admit_the_pairs_services_and_widen_with_the_stream() {
        let v: Vec<FlowRecord> = (0..30)
            .map(|_| flow(proto::TCP, TcpFlags::SYN, 6667, 3, 180, 0))
            .collect();
        let mut h = PairHabits::fit(&v);
        let mut other_flags = flow(proto::TCP, 0x1b, 6667, 3, 180, 0);
        other_flags.src_port = 1234;
        assert!(h.admits(&other_flags));
        let web = flow(proto::TCP, TcpFlags::SYN, 80, 1, 60, 0);
        let dns = flow(proto::UDP, 0, 53, 1, 60, 0);
        assert!(!h.admits(&web) && !h.admits(&dns));
        h.observe(&web);
        assert_eq!(h.flows, 31);
        assert!(h.admits(&web) && !h.admits(&dns));
        let m = h.masks().unwrap();
        assert!(dst_classes(&m, proto::TCP).contains(80));
        // Past its cap a field is left free.
        for p in 0..MAX_HABIT_PORTS as u16 {
            h.observe(&flow(proto::TCP, TcpFlags::SYN, p, 1, 60, 0));
        }
        assert!(h.dst.is_none() && h.kinds.is_some());
        assert!(h.admits(&flow(proto::TCP, TcpFlags::SYN, 9999, 1, 60, 0)));
    }
}
