//! `pair_history`: the sharded per-host-pair state.
//!
//! # Ownership
//! Flows are exchanged by [`HostPair::stable_hash`], so a pair is owned by exactly one worker, and by the same
//! worker index on every process and every run (timely routes on `hash & (peers - 1)` for a power-of-two number of
//! workers, `hash % peers` otherwise). Nothing here uses a per-process random hasher for routing.
//!
//! # Time
//! Flows are stashed by timely time (epoch) and applied only when the input frontier has passed their epoch, in
//! start-time order within the epoch, so each pair's ring is ordered by epoch. A late flow (emitted by the source at
//! its watermark rather than its own epoch) is appended when its timely epoch closes.
//!
//! # Memory
//! Each pair keeps a ring of at most `ring_len` recent [`PairEvent`]s. The bytes held (ring capacities plus a fixed
//! per-pair overhead, see [`PairState::bytes`]) never exceed `budget_bytes` after an epoch is applied: when they
//! would, the pairs idle longest (oldest `last_us`) are evicted until usage is at most `evict_to` of the budget.
//! Evictions are counted; an evicted pair's flow count moves to `evicted_flows`, so
//! `sum(pair totals) + evicted_flows == flows absorbed` always holds.

use crate::plugs::PairHook;
use foldhash::{HashMap, HashMapExt};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use temponet::{FlowRecord, HostPair};
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

/// One event in a pair's history: a flow without its addresses and label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairEvent {
    pub start_us: i64,
    pub duration_us: u64,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub flags: u8,
    pub packets: u64,
    pub bytes: u64,
}

impl From<&FlowRecord> for PairEvent {
    fn from(r: &FlowRecord) -> Self {
        PairEvent {
            start_us: r.start_us,
            duration_us: r.duration_us,
            src_port: r.src_port,
            dst_port: r.dst_port,
            proto: r.proto,
            flags: r.flags.0,
            packets: r.packets,
            bytes: r.bytes,
        }
    }
}

/// A pair's retained state.
#[derive(Clone, Debug)]
pub struct PairState {
    /// The most recent events, oldest first, at most `ring_len`.
    pub ring: VecDeque<PairEvent>,
    /// Flows of this pair absorbed since it was (re)created.
    pub total: u64,
    /// Start time of the latest event (event time, microseconds): what "idle" is measured by.
    pub last_us: i64,
}

/// Fixed cost charged per pair besides its ring: key, state, hash-map slot and control bytes.
pub const PAIR_OVERHEAD_BYTES: usize =
    std::mem::size_of::<HostPair>() + std::mem::size_of::<PairState>() + 16;

impl PairState {
    /// Bytes charged to the budget for this pair.
    pub fn bytes(&self) -> usize {
        PAIR_OVERHEAD_BYTES + self.ring.capacity() * std::mem::size_of::<PairEvent>()
    }
}

/// Configuration of [`pair_history`].
#[derive(Clone, Copy, Debug)]
pub struct HistoryConfig {
    /// Events kept per pair.
    pub ring_len: usize,
    /// Upper bound on the bytes of pair state per worker.
    pub budget_bytes: usize,
    /// Fraction of the budget to evict down to when it is exceeded (hysteresis: fewer, larger eviction rounds).
    pub evict_to: f64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            ring_len: 64,
            budget_bytes: 256 << 20,
            evict_to: 0.9,
        }
    }
}

/// What a worker's pair state looked like after an epoch was applied. Emitted once per closed epoch that held flows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryStats {
    pub worker: usize,
    pub epoch: u64,
    /// Flows absorbed in this epoch.
    pub flows: u64,
    pub pairs_held: u64,
    pub bytes_held: u64,
    /// Pairs evicted in this epoch.
    pub evictions: u64,
    /// Since start, on this worker.
    pub evictions_total: u64,
    pub evicted_flows_total: u64,
    pub flows_total: u64,
}

/// The state of one worker's shard, readable by the driver (for reports) through [`HistoryHandle`].
#[derive(Debug, Default)]
pub struct Shard {
    pub pairs: HashMap<HostPair, PairState>,
    pub bytes: usize,
    pub flows_total: u64,
    pub evictions_total: u64,
    pub evicted_flows_total: u64,
    /// Largest `bytes` seen right after an epoch was applied (must stay <= the budget).
    pub peak_bytes: usize,
}

/// Shared read access to a worker's shard (the operator and the driver live on the same worker thread).
pub type HistoryHandle = Rc<RefCell<Shard>>;

/// What `pair_history` emits: the hook's output, or the shard's stats after an epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum HistoryOut<O> {
    Hook(O),
    Stats(HistoryStats),
}

/// The output stream of [`pair_history`].
pub type HistoryStream<'s, O> = Stream<'s, u64, Vec<HistoryOut<O>>>;

/// Builds the operator. See the module documentation for ownership, time and memory invariants.
pub fn pair_history<'s, H: PairHook>(
    flows: Stream<'s, u64, Vec<FlowRecord>>,
    config: HistoryConfig,
    mut hook: H,
) -> (HistoryStream<'s, H::Output>, HistoryHandle) {
    assert!(config.ring_len > 0, "ring_len must be positive");
    let shard: HistoryHandle = Rc::new(RefCell::new(Shard::default()));
    let handle = shard.clone();
    let worker = flows.scope().index();
    // Every pair goes to the worker `stable_hash & (peers - 1)` (timely's routing), the same on every process.
    let pact = Exchange::new(|r: &FlowRecord| r.pair().stable_hash());
    let stream = flows.unary_frontier(pact, "PairHistory", move |_cap, _info| {
        let mut stash: BTreeMap<u64, (Capability<u64>, Vec<FlowRecord>)> = BTreeMap::new();
        let mut touched: HashMap<HostPair, Vec<PairEvent>> = HashMap::new();
        let mut hook_out: Vec<H::Output> = Vec::new();
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a time");
                let entry = stash
                    .entry(t)
                    .or_insert_with(|| (cap.retain_least(0).expect("a capability"), Vec::new()));
                for batch in data {
                    entry.1.append(batch);
                }
            });
            while let Some((&t, _)) = stash.first_key_value() {
                if frontier.less_equal(&t) {
                    break;
                }
                let (cap, mut batch) = stash.pop_first().expect("present").1;
                batch.sort_by_key(|r| r.start_us);
                let mut s = shard.borrow_mut();
                let stats = apply(
                    &mut s,
                    worker,
                    t,
                    &config,
                    &batch,
                    &mut touched,
                    &mut hook,
                    &mut hook_out,
                );
                drop(s);
                let mut session = output.session(&cap);
                for o in hook_out.drain(..) {
                    session.give(HistoryOut::Hook(o));
                }
                session.give(HistoryOut::Stats(stats));
            }
        }
    });
    (stream, handle)
}

#[allow(clippy::too_many_arguments)]
fn apply<H: PairHook>(
    s: &mut Shard,
    worker: usize,
    epoch: u64,
    config: &HistoryConfig,
    batch: &[FlowRecord],
    touched: &mut HashMap<HostPair, Vec<PairEvent>>,
    hook: &mut H,
    out: &mut Vec<H::Output>,
) -> HistoryStats {
    touched.clear();
    for r in batch {
        touched
            .entry(r.pair())
            .or_default()
            .push(PairEvent::from(r));
    }
    for (pair, fresh) in touched.iter() {
        let st = match s.pairs.entry(*pair) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => {
                s.bytes += PAIR_OVERHEAD_BYTES;
                v.insert(PairState {
                    ring: VecDeque::new(),
                    total: 0,
                    last_us: i64::MIN,
                })
            }
        };
        let before = st.ring.capacity();
        for ev in fresh {
            if st.ring.len() == config.ring_len {
                st.ring.pop_front();
            }
            if st.ring.len() == st.ring.capacity() {
                // Grow by doubling but never past ring_len, so capacity (and the budget charge) stays bounded.
                let want = (st.ring.capacity().max(2) * 2).min(config.ring_len);
                st.ring.reserve_exact(want - st.ring.len());
            }
            st.ring.push_back(*ev);
            st.last_us = st.last_us.max(ev.start_us);
        }
        st.total += fresh.len() as u64;
        s.bytes = s.bytes + st.ring.capacity() * std::mem::size_of::<PairEvent>()
            - before * std::mem::size_of::<PairEvent>();
        hook.on_pair(epoch, pair, st, fresh, out);
    }
    s.flows_total += batch.len() as u64;
    let evictions = if s.bytes > config.budget_bytes {
        evict(s, config, hook)
    } else {
        0
    };
    hook.on_epoch(epoch, out);
    s.peak_bytes = s.peak_bytes.max(s.bytes);
    HistoryStats {
        worker,
        epoch,
        flows: batch.len() as u64,
        pairs_held: s.pairs.len() as u64,
        bytes_held: s.bytes as u64,
        evictions,
        evictions_total: s.evictions_total,
        evicted_flows_total: s.evicted_flows_total,
        flows_total: s.flows_total,
    }
}

/// Evicts the pairs idle longest until usage is at most `evict_to * budget`. Returns how many were evicted.
fn evict<H: PairHook>(s: &mut Shard, config: &HistoryConfig, hook: &mut H) -> u64 {
    let target = ((config.budget_bytes as f64) * config.evict_to.clamp(0.0, 1.0)) as usize;
    let mut by_age: Vec<(i64, HostPair, usize)> = s
        .pairs
        .iter()
        .map(|(p, st)| (st.last_us, *p, st.bytes()))
        .collect();
    by_age.sort_unstable_by_key(|(t, p, _)| (*t, *p));
    let mut n = 0;
    for (_, pair, bytes) in by_age {
        if s.bytes <= target {
            break;
        }
        let st = s.pairs.remove(&pair).expect("listed pair present");
        hook.on_evict(&pair, &st);
        s.bytes -= bytes;
        s.evicted_flows_total += st.total;
        n += 1;
    }
    s.evictions_total += n;
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugs::NoHook;
    use timely::dataflow::InputHandle;
    use timely::dataflow::operators::Probe;

    fn flow(i: u32, t: i64) -> FlowRecord {
        FlowRecord {
            start_us: t,
            duration_us: 1,
            src: std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
            dst: "10.255.0.1".parse().unwrap(),
            src_port: 1,
            dst_port: 2,
            proto: 6,
            flags: temponet::TcpFlags(0),
            packets: 1,
            bytes: 40,
            label: None,
        }
    }

    /// Many pairs through two workers with a small budget: usage stays under it, evictions are counted, and
    /// totals plus evicted flows account for every flow.
    #[test]
    fn budget_holds_and_counts() {
        let budget = 64 * 1024;
        let results = timely::execute(timely::Config::process(2), move |worker| {
            let mut input = InputHandle::new();
            let probe = timely::dataflow::ProbeHandle::new();
            let cfg = HistoryConfig {
                ring_len: 8,
                budget_bytes: budget,
                evict_to: 0.8,
            };
            let handle = worker.dataflow::<u64, _, _>(|scope| {
                let (out, h) = pair_history(input.to_stream(scope), cfg, NoHook);
                out.probe_with(&probe);
                h
            });
            if worker.index() == 0 {
                for e in 0..20u64 {
                    for i in 0..1000u32 {
                        input.send(flow(
                            i + (e as u32 % 4) * 1000,
                            (e * 1_000_000) as i64 + i as i64,
                        ));
                    }
                    input.advance_to(e + 1);
                }
            }
            input.close();
            worker.step_while(|| !probe.done());
            let s = handle.borrow();
            let held: u64 = s.pairs.values().map(|p| p.total).sum();
            (
                s.peak_bytes,
                s.evictions_total,
                held + s.evicted_flows_total,
                s.flows_total,
            )
        })
        .unwrap()
        .join();
        let mut flows = 0;
        let mut evictions = 0;
        for r in results {
            let (peak, ev, accounted, total) = r.unwrap();
            assert!(peak <= budget, "peak {peak} over budget {budget}");
            assert_eq!(accounted, total);
            flows += total;
            evictions += ev;
        }
        assert_eq!(flows, 20_000);
        assert!(evictions > 0);
    }
}
