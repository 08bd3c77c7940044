//! Persistent generation state: [`GenSession`] holds one lane per synthetic host pair (per source host for STAN)
//! and advances all of them in steps of event time. [`super::Model::generate`] is a session advanced to the end of
//! the requested span, so batch generation and the streaming operators share one code path.
//!
//! Invariants that make advancing in pieces give exactly the flows of one call:
//! - every lane draws from its own random stream ([`LaneRng`], seeded from the session seed and the lane's serial
//!   number), so a lane's draws do not depend on which other lanes step in the same batch;
//! - the networks compute each lane's row independently of the batch it is in (TempoNet and STAN pad small batches,
//!   see `MIN_GEN_ROWS`, because libtorch takes another, differently rounding, kernel for 1-3 rows);
//! - a lane always holds its next flow already drawn (`LaneHead::next`); `advance(until)` emits every held flow
//!   starting before `until` and draws the lane's following one, so after a call every held flow starts at or after
//!   `until`, and the next call continues exactly where this one stopped;
//! - new pairs (`PairSource::Synthetic`) come from an arrival process whose next arrival is drawn ahead from its own
//!   random stream, so splitting the interval does not change the arrivals;
//! - flows of one call are ordered by (start, lane serial), a key that does not depend on the order lanes stepped in.

use super::compliance::RepairCounts;
use super::pair_arrival::{FIRST_WINDOW_US, PairArrivals};
use super::{Model, ModelError, ModelKind, PairSource, independent, stan, temponet};
use crate::record::{FlowRecord, HostPair};
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};

/// Smallest batch the networks run during generation: libtorch computes 1-3 row matrix products with a kernel
/// that rounds differently from the one it uses for larger batches, so smaller batches are padded (with copies of
/// their first row) to keep every lane's numbers independent of how many lanes step with it.
pub(crate) const MIN_GEN_ROWS: usize = 4;

/// A small random number generator per lane (xoshiro256++, 32 bytes of state: sessions hold one per lane, so the
/// 300-byte ChaCha state of `StdRng` would dominate their memory). Seeded through SplitMix64 from the session seed
/// and a stream number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LaneRng {
    s: [u64; 4],
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl LaneRng {
    pub(crate) fn new(seed: u64, stream: u64) -> LaneRng {
        let mut a = seed;
        let mut b = stream ^ 0xD1B5_4A32_D192_ED03;
        let mut x = splitmix(&mut a) ^ splitmix(&mut b).rotate_left(17);
        let s = [
            splitmix(&mut x),
            splitmix(&mut x),
            splitmix(&mut x),
            splitmix(&mut x),
        ];
        LaneRng { s }
    }
}

impl rand::RngCore for LaneRng {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let r = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// What every lane has, whatever the model.
#[derive(Clone, Debug)]
pub(crate) struct LaneHead {
    pub pair: HostPair,
    /// Order of creation in the session: seeds the lane's random stream and breaks ties between equal start times.
    pub serial: u64,
    pub rng: LaneRng,
    /// The lane's next flow, already drawn (`None` while it has to be drawn).
    pub next: Option<FlowRecord>,
    pub ended: bool,
    /// The lane's first generated flow starts at or after this time (the session clock when the lane started).
    pub not_before: i64,
}

/// Per-model lane states, index for index with [`Lanes::heads`].
pub(crate) enum LaneStates {
    TempoNet(Vec<temponet::LaneState>),
    Stan(Vec<stan::LaneState>),
    Independent(Vec<independent::LaneState>),
}

impl LaneStates {
    fn swap_remove(&mut self, i: usize) {
        match self {
            LaneStates::TempoNet(v) => drop(v.swap_remove(i)),
            LaneStates::Stan(v) => drop(v.swap_remove(i)),
            LaneStates::Independent(v) => drop(v.swap_remove(i)),
        }
    }
}

/// The lanes of a session as the models see them (opaque outside this crate: [`super::FlowModel`] implementations
/// live here).
pub struct Lanes {
    pub(crate) heads: Vec<LaneHead>,
    pub(crate) states: LaneStates,
    pub(crate) repairs: RepairCounts,
}

impl Lanes {
    pub(crate) fn new(states: LaneStates) -> Lanes {
        Lanes {
            heads: Vec::new(),
            states,
            repairs: RepairCounts::default(),
        }
    }
}

/// Where a lane (re)starts.
pub enum LaneStart<'a> {
    /// Continue from a real flow of the pair (`prev_start_us`: the start of the flow before it, if known). With
    /// `phase`, the first gap is scaled by a uniform phase from the lane's `not_before` (an observed pair at the
    /// start of generation: how far into its current gap the start falls is unknown); otherwise the first gap is
    /// drawn conditioned on reaching `not_before`.
    Continue {
        last: &'a FlowRecord,
        prev_start_us: Option<i64>,
        phase: bool,
    },
    /// Entry `i` of the model's own table of observed pairs (hosts for STAN), with the uniform phase.
    Observed(usize),
    /// A new pair whose first flow starts at `at`.
    New { at: i64 },
}

/// New pairs of a `Synthetic` session: the initial pairs of the first minute, then Poisson arrivals, each drawn ahead.
struct ArrivalClock {
    rng: LaneRng,
    queued: VecDeque<(i64, HostPair)>,
    next_us: f64,
}

/// Persistent generation state: lanes (one per synthetic host pair) advanced in steps of event time.
///
/// Lanes carry their state (recent history, hidden state, random stream) across [`GenSession::advance`] calls, so
/// advancing in pieces gives exactly the flows of one call to the same end (same seed, same model parameters). The
/// model's parameters may change between calls (the session holds no tensor: a lane's hidden state is plain numbers
/// of the configured size). STAN's lanes are per source host: [`GenSession::join`] and [`GenSession::drop_pair`] act
/// on the lane of the pair's source.
pub struct GenSession {
    kind: ModelKind,
    seed: u64,
    pairs: PairSource,
    /// Every flow starting before this has been emitted; `None` before the first advance (and before any lane).
    clock_us: Option<i64>,
    arrivals: Option<ArrivalClock>,
    serial: u64,
    index: HashMap<HostPair, usize>,
    lanes: Lanes,
    ended: u64,
    /// Streaming shard `(worker, peers)`: only pairs with `stable_hash % peers == worker` get lanes (see
    /// [`GenSession::set_shard`]).
    shard: Option<(u64, u64)>,
}

/// Models move between threads (the streaming workers own their sessions): sessions must stay `Send`.
const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<GenSession>()
};

/// The key of a pair's lane: the pair, or for STAN (which generates per source host) the source alone.
fn lane_key(kind: ModelKind, pair: &HostPair) -> HostPair {
    match kind {
        ModelKind::Stan => HostPair {
            src: pair.src,
            dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        },
        _ => *pair,
    }
}

impl GenSession {
    pub(crate) fn new(model: &Model, seed: u64, pairs: PairSource) -> GenSession {
        GenSession {
            kind: model.kind(),
            seed,
            pairs,
            clock_us: None,
            arrivals: None,
            serial: 0,
            index: HashMap::new(),
            lanes: model.0.new_lanes(),
            ended: 0,
            shard: None,
        }
    }

    fn check(&self, model: &Model) -> Result<(), ModelError> {
        if model.kind() != self.kind {
            return Err(ModelError::Invalid(format!(
                "generation session of a {} model used with a {} model",
                self.kind,
                model.kind()
            )));
        }
        Ok(())
    }

    /// Makes this session worker `worker`'s part of a generation spread over `peers` workers (each with a session
    /// of the same seed): the observed pairs and the arrivals of new pairs are the same draws on every worker, and
    /// each worker keeps the pairs it owns (`HostPair::stable_hash() % peers == worker`, the dataflow's routing for
    /// any peer count that is a power of two, and its `%` rule otherwise), so together they generate what one session
    /// would, not `peers` times as much. Lanes draw from per-worker random streams. Set it before the first lane.
    pub fn set_shard(&mut self, worker: usize, peers: usize) {
        if peers > 1 {
            self.shard = Some((worker as u64, peers as u64));
        }
    }

    fn owns(&self, pair: &HostPair) -> bool {
        self.shard.is_none_or(|(w, n)| pair.stable_hash() % n == w)
    }

    /// Seed of the lanes' random streams (per worker when sharded, so workers' lanes are independent).
    fn lane_seed(&self) -> u64 {
        match self.shard {
            Some((w, _)) => self.seed ^ (w + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            None => self.seed,
        }
    }

    /// Sets where generation starts when no lane says so (a `Synthetic` session before its first advance: the
    /// initial pairs are placed in the first minute after it). No effect once the session has advanced.
    pub fn begin(&mut self, start_us: i64) {
        if self.clock_us.is_none() {
            self.clock_us = Some(start_us);
        }
    }

    /// Adds a lane for `pair` from `from`; the lane's flows start at or after `not_before`. With `twin`, the lane
    /// is the pair's twin: nothing happens while the pair's lane is live, and an ended one is restarted. Otherwise
    /// (a new pair from the arrival process) the lane is always new and becomes the one the pair's key refers to; an
    /// earlier lane of the same pair runs on unreferenced. Arrivals of a pair that already has a lane are sessions
    /// of that pair (its flows then interleave), and treating them so keeps arrivals independent of when lanes end,
    /// which is what makes pieces exact.
    fn start_lane(
        &mut self,
        model: &Model,
        pair: HostPair,
        not_before: i64,
        from: &LaneStart,
        twin: bool,
    ) -> Result<(), ModelError> {
        let key = lane_key(self.kind, &pair);
        let i = match self.index.get(&key) {
            Some(&i) if twin && !self.lanes.heads[i].ended => return Ok(()),
            Some(&i) if twin => i,
            _ => {
                self.lanes.heads.push(LaneHead {
                    pair,
                    serial: self.serial,
                    rng: LaneRng::new(self.lane_seed(), self.serial),
                    next: None,
                    ended: false,
                    not_before,
                });
                self.serial += 1;
                self.index.insert(key, self.lanes.heads.len() - 1);
                self.lanes.heads.len() - 1
            }
        };
        let h = &mut self.lanes.heads[i];
        h.pair = pair;
        h.next = None;
        h.ended = false;
        h.not_before = not_before;
        model.0.start_lane(&mut self.lanes, i, from)
    }

    /// Start (or, if its twin ended, restart) the synthetic twin of a real pair, continuing from the real flow
    /// `last` (and the start of the flow before it, if known). No-op while the pair's twin is live. A twin joined
    /// after the session has advanced past `last` draws its first gap conditioned on reaching the session clock.
    pub fn join(&mut self, model: &Model, last: &FlowRecord, prev_start_us: Option<i64>) {
        if self.check(model).is_err() {
            return;
        }
        let not_before = self.clock_us.unwrap_or(i64::MIN).max(last.start_us);
        // start_lane fails only for a model of another kind, checked above.
        let _ = self.start_lane(
            model,
            last.pair(),
            not_before,
            &LaneStart::Continue {
                last,
                prev_start_us,
                phase: false,
            },
            true,
        );
    }

    /// Lanes for every pair the model saw in training (what `PairSource::Observed` generation does), starting at
    /// `start_us`: each continues from its last training flow, its first gap scaled by a uniform phase.
    pub fn join_observed(&mut self, model: &Model, start_us: i64) {
        if self.check(model).is_err() {
            return;
        }
        let not_before = self.clock_us.unwrap_or(i64::MIN).max(start_us);
        for (i, pair) in model.0.observed_pairs().into_iter().enumerate() {
            if !self.owns(&pair) {
                continue;
            }
            let _ = self.start_lane(model, pair, not_before, &LaneStart::Observed(i), true);
        }
    }

    /// New pairs with first flows before `until_us` (`Synthetic` sessions), drawn ahead so pieces do not matter.
    fn arrive(&mut self, model: &Model, from_us: i64, until_us: i64) -> Result<(), ModelError> {
        let arr: &PairArrivals = model.0.pair_arrivals();
        if self.arrivals.is_none() {
            let mut rng = LaneRng::new(self.seed, u64::MAX);
            let mut queued: Vec<(i64, HostPair)> = (0..arr.initial_pairs.max(1))
                .map(|_| {
                    let t = from_us + rng.gen_range(0..FIRST_WINDOW_US);
                    (t, arr.sample_pair(&mut rng))
                })
                .collect();
            queued.sort_by_key(|x| x.0);
            let next_us = from_us as f64 + exp_gap(&mut rng, arr.rate_per_s);
            self.arrivals = Some(ArrivalClock {
                rng,
                queued: queued.into(),
                next_us,
            });
        }
        loop {
            let a = self.arrivals.as_mut().expect("set above");
            let (at, pair) = match a.queued.front() {
                Some(&(t, p)) if t < until_us => {
                    a.queued.pop_front();
                    (t, p)
                }
                _ if a.next_us < until_us as f64 => {
                    let at = a.next_us as i64;
                    let pair = arr.sample_pair(&mut a.rng);
                    a.next_us += exp_gap(&mut a.rng, arr.rate_per_s);
                    (at, pair)
                }
                _ => return Ok(()),
            };
            if self.owns(&pair) {
                self.start_lane(model, pair, at, &LaneStart::New { at }, false)?;
            }
        }
    }

    /// Generate every flow with start < `until_us` (flows sorted by start time appended to `out`); with
    /// `PairSource::Synthetic` also draws new pairs from the pair-arrival part for the advanced interval. Lanes carry
    /// their hidden state across calls, so advancing in pieces gives exactly the flows of one call to the same end
    /// (same seed, same model params). Advancing to a time at or before the session clock does nothing.
    pub fn advance(
        &mut self,
        model: &Model,
        until_us: i64,
        out: &mut Vec<FlowRecord>,
    ) -> Result<(), ModelError> {
        self.check(model)?;
        let from = match self.clock_us {
            Some(c) => c,
            None => self
                .lanes
                .heads
                .iter()
                .map(|h| h.not_before)
                .min()
                .unwrap_or(until_us),
        };
        if until_us <= from {
            self.clock_us = Some(from);
            return Ok(());
        }
        if self.pairs == PairSource::Synthetic {
            self.arrive(model, from, until_us)?;
        }
        let mut batch: Vec<(i64, u64, FlowRecord)> = Vec::new();
        let mut candidates: Vec<usize> = (0..self.lanes.heads.len())
            .filter(|&i| !self.lanes.heads[i].ended)
            .collect();
        loop {
            let mut active = Vec::new();
            for &i in &candidates {
                let h = &mut self.lanes.heads[i];
                match &h.next {
                    Some(f) if f.start_us < until_us => {
                        let f = h.next.take().expect("matched Some");
                        batch.push((f.start_us, h.serial, f));
                        active.push(i);
                    }
                    Some(_) => {}
                    None => active.push(i),
                }
            }
            if active.is_empty() {
                break;
            }
            model.0.step_lanes(&mut self.lanes, &active)?;
            candidates = active;
        }
        batch.sort_by_key(|x| (x.0, x.1));
        out.extend(batch.into_iter().map(|x| x.2));
        self.clock_us = Some(until_us);
        Ok(())
    }

    /// Lanes not ended.
    pub fn live(&self) -> usize {
        self.lanes.heads.iter().filter(|h| !h.ended).count()
    }

    /// Lanes ended so far (a lane restarted by [`GenSession::join`] and ended again counts twice).
    pub fn ended(&self) -> u64 {
        self.ended
    }

    /// Lanes created so far (restarts not counted).
    pub fn lanes_created(&self) -> u64 {
        self.serial
    }

    /// Repairs sampling needed so far.
    pub fn repairs(&self) -> &RepairCounts {
        &self.lanes.repairs
    }

    /// Forget a lane (memory bound): its pair's next [`GenSession::join`] starts a new lane.
    pub fn drop_pair(&mut self, pair: &HostPair) {
        let key = lane_key(self.kind, pair);
        let Some(i) = self.index.remove(&key) else {
            return;
        };
        self.remove_lane(i);
    }

    /// Removes lane `i` (the last lane takes its place; its key, if it refers to it, is updated).
    fn remove_lane(&mut self, i: usize) {
        let last = self.lanes.heads.len() - 1;
        self.lanes.heads.swap_remove(i);
        self.lanes.states.swap_remove(i);
        if i < last {
            let moved = lane_key(self.kind, &self.lanes.heads[i].pair);
            if self.index.get(&moved) == Some(&last) {
                self.index.insert(moved, i);
            }
        }
    }
}

/// Exponential gap in µs of a Poisson process with `rate_per_s` (infinite for a zero rate).
fn exp_gap<R: Rng>(rng: &mut R, rate_per_s: f64) -> f64 {
    if rate_per_s <= 0.0 {
        return f64::INFINITY;
    }
    -(1.0 - rng.r#gen::<f64>()).ln() / rate_per_s * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;
    #[test]
    fn lane_streams_differ_and_repeat() {
        let a: Vec<u64> = (0..4).map(|_| LaneRng::new(1, 0).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut x = LaneRng::new(1, 0);
        let mut y = LaneRng::new(1, 1);
        let mut z = LaneRng::new(2, 0);
        let (vx, vy, vz) = (x.next_u64(), y.next_u64(), z.next_u64());
        assert!(vx != vy && vx != vz && vy != vz);
        // Roughly uniform: the mean of many unit draws is near 1/2.
        let m: f64 = (0..10_000).map(|_| x.r#gen::<f64>()).sum::<f64>() / 1e4;
        assert!((m - 0.5).abs() < 0.02, "{m}");
    }
}
