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
//! - session starts (new pairs, observed pairs coming back) come from an arrival process drawn ahead from its own
//!   random stream, so splitting the interval does not change them; each start carries its own random-stream number;
//! - a pair never has two live lanes: a start for a pair whose lane is live is queued on that lane, and the lane
//!   decides it when it goes silent (a start before its last flow was absorbed by the session it was in; a later
//!   one restarts the lane). That decision depends only on the lane's own flows, not on when the start was seen;
//! - every (re)start of a lane takes a fresh random stream and state (from the request, the observed table, the
//!   joined flow or the pair's [`LastFlow`], never from the lane's previous session's state), so removing a silent
//!   lane is unobservable: what a later session of the pair needs of this one (its last flow, the history a
//!   returning pair continues from) is kept apart from the lane when the lane goes silent;
//! - flows of one call are ordered by (start, lane stream), a key that does not depend on the order lanes stepped in.

use super::compliance::RepairCounts;
use super::pair_arrival::{FIRST_WINDOW_US, PairArrivals};
use super::{Model, ModelError, ModelKind, PairSource, independent, stan, temponet};
use crate::record::{FlowRecord, HostPair};
use foldhash::{HashMap, HashMapExt};
use rand::Rng;
use std::collections::{BTreeMap, VecDeque};
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
    /// Random-stream number of the lane's current session: seeds `rng` and breaks ties between equal start times.
    pub serial: u64,
    pub rng: LaneRng,
    /// The lane's next flow, already drawn (`None` while it has to be drawn).
    pub next: Option<FlowRecord>,
    pub ended: bool,
    /// The lane's first generated flow starts at or after this time (the session clock when the lane started).
    pub not_before: i64,
    /// Start of the lane's latest drawn flow (`i64::MIN` before its first).
    pub last_us: i64,
    /// Flows drawn in the lane's current session.
    pub session_flows: u64,
    /// For a new pair standing in for an observed lane, that lane (its session length bounds this one's). Looked
    /// up in the model of each step: a streaming model may be replaced while a lane lives.
    like: Option<HostPair>,
    /// The lane's latest drawn flow and the start of the one before it in this session (see [`LastFlow`]); kept
    /// only in sessions whose observed pairs come back.
    last_flow: Option<FlowRecord>,
    prev_us: Option<i64>,
    /// Session starts for this lane's pair that came while it was live, in time order.
    requests: VecDeque<Request>,
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
///
/// A lane that continues from a real flow before its `not_before` (an observed pair at the start of generation, a
/// twin joined late) has been quiet since that flow: its first step conditions on it. It goes silent with the
/// posterior `p / (p + (1 - p) P(gap > tau | gap <= S))` of its silence probability `p` given the quiet time `tau`
/// (`S` the silence threshold; `tau >= S` means it is silent), and otherwise draws its gap from `(tau, S]`.
pub enum LaneStart<'a> {
    /// Continue from a real flow of the pair (`prev_start_us`: the start of the flow before it, if known).
    Continue {
        last: &'a FlowRecord,
        prev_start_us: Option<i64>,
    },
    /// Entry `i` of the model's own table of observed pairs (hosts for STAN): continue from its last flow.
    Observed(usize),
    /// Entry `i` of the model's table of observed pairs coming back after a silence: its first flow starts at
    /// `at`. `since` is the pair's last flow in this generation when it had a session here already; otherwise its
    /// last training flow is the history.
    Reactivate {
        i: usize,
        at: i64,
        since: Option<&'a LastFlow>,
    },
    /// A pair starting a new session at `at` (its first flow then) after the real flow `last` (and the start of
    /// the one before it, if known) as history: a twin following its real pair into a new session.
    Resume {
        last: &'a FlowRecord,
        prev_start_us: Option<i64>,
        at: i64,
    },
    /// A new pair whose first flow starts at `at`; `like`: entry of the model's table of observed lanes whose place
    /// it takes in a replayed session-start group (its habits and session length are the new pair's).
    New { at: i64, like: Option<usize> },
}

/// The last flow of a pair's latest generated session: a pair coming back continues from it, so the gap it
/// comes back after is the one since its own last flow (from its last training flow instead, a pair back for its
/// third session six hours into a span looked like one silent for six hours, longer than any of its real pauses,
/// and its sessions ended after one flow: 82-95 % of them on IoT-23 34-1's IRC pair, 29 % in its training data).
#[derive(Clone, Debug)]
pub struct LastFlow {
    pub last: FlowRecord,
    /// Start of the flow before it in the same session, if any.
    pub prev_start_us: Option<i64>,
    /// Its position in its session (0 for a session's first flow).
    pub session_pos: u32,
}

/// Session position of a twin's history flow `last` (for [`LaneStart::Continue`] and [`LaneStart::Resume`]): a twin
/// knows one earlier flow at most (`prev_start_us`), so within a session (1) or at its start (0) is all it can tell.
pub(crate) fn twin_history_pos(
    last: &FlowRecord,
    prev_start_us: Option<i64>,
    silence_us: i64,
) -> u32 {
    prev_start_us.is_some_and(|p| last.start_us - p <= silence_us) as u32
}

/// A lane the model saw in training: what [`GenSession::join_observed`] and re-activations start from.
#[derive(Clone, Debug)]
pub struct ObservedLane {
    /// The pair (STAN: the source host, destination unspecified).
    pub pair: HostPair,
    /// Start of its last training flow.
    pub last_us: i64,
    /// Its sessions in training (see [`super::features::sessions`]).
    pub sessions: u32,
}

/// A session start waiting for its time.
#[derive(Clone, Copy, Debug)]
enum Start {
    /// A new pair (synthetic), and the observed lane it stands in for (see [`LaneStart::New`]).
    Pair(HostPair, Option<usize>),
    /// Entry `i` of the model's observed table, back after a silence.
    Observed(usize),
}

/// A session start for a pair: when, with which random stream, from what.
#[derive(Clone, Copy, Debug)]
struct Request {
    at: i64,
    stream: u64,
    start: Start,
}

/// Random streams of arrivals have the top bit set; those of joins count up from 0.
const ARRIVAL_STREAMS: u64 = 1 << 63;

/// The group process a session draws, its rate and groups: every group for new pairs; for observed pairs the
/// groups without the lanes that keep their own rhythm (see `pair_arrival`).
fn group_process(
    arr: &PairArrivals,
    pairs: PairSource,
) -> (&super::pair_arrival::ArrivalRate, &[Vec<(HostPair, i64)>]) {
    match pairs {
        PairSource::Synthetic => (&arr.rate, &arr.groups),
        PairSource::Observed => (&arr.rest_rate, &arr.rest_groups),
    }
}

/// One of a rhythm lane's `pauses` (sorted) longer than `quiet` µs, picked by `u` in `[0, 1)`; `None` when none is.
fn pause_longer_than(pauses: &[i64], quiet: i64, u: f64) -> Option<i64> {
    let longer = &pauses[pauses.partition_point(|p| *p <= quiet)..];
    (!longer.is_empty()).then(|| longer[((u * longer.len() as f64) as usize).min(longer.len() - 1)])
}

/// A lane's session ends at this many times the longest session of the training data (in flows), whatever its
/// silence mark says: a guard, not the model. The silence mark cannot know when a session that was still under way
/// at the end of the training data stops (a flood 25 s old at the split of IoT-23 34-1, every one of its 12,000
/// flows labelled "goes on"), and without a bound such a lane floods for ever.
///
/// An observed pair's sessions are held to this many times its own longest session in training, a pair the model
/// never saw to this many times the longest session of 9 in 10 training pairs
/// ([`PairArrivals::typical_longest`]), a streaming twin to the larger of the two. A silence mark
/// of 96 % for a pair whose every session was one flow (an NTP client polling every 9 to 17 minutes) leaves 4 % of
/// its sessions going on; the flows after the first were then ones the pair never had, drawn where the training
/// data had most sessions going on (the flood's), and hundreds of them came in a few milliseconds.
pub const SESSION_GUARD: u64 = 2;

/// Session starts, drawn ahead: group starts at the pair-arrival part's rate, each queueing its members at their
/// offsets (see `pair_arrival`); for `Synthetic` sessions also the initial lanes of the first minute. Queued starts
/// are keyed by (time, order of queueing), so pieces see them in the same order.
struct ArrivalClock {
    rng: LaneRng,
    queued: BTreeMap<(i64, u64), Start>,
    /// Starts queued so far: orders equal times and numbers the starts' random streams.
    seq: u64,
    next_us: f64,
    /// Observed sessions: the observed table's pairs and the index of each, and the start of each one's last
    /// training flow.
    pairs: Vec<HostPair>,
    observed: HashMap<HostPair, usize>,
    observed_last: Vec<i64>,
}

impl ArrivalClock {
    fn queue(&mut self, at: i64, s: Start) {
        self.queued.insert((at, self.seq), s);
        self.seq += 1;
    }
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
    /// Observed pairs come back after silences (set by `join_observed`; a session of twins only has none).
    reactivate: bool,
    /// Joins so far (the random streams of joined lanes).
    serial: u64,
    /// Lane (re)starts so far.
    starts: u64,
    index: HashMap<HostPair, usize>,
    lanes: Lanes,
    /// The last flow of every observed pair's latest ended session (by lane key), for its next
    /// [`LaneStart::Reactivate`]: bounded by the observed table.
    returns: HashMap<HostPair, LastFlow>,
    ended: u64,
    /// Sessions the guard ended (see [`SESSION_GUARD`]).
    guarded: u64,
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
            reactivate: false,
            serial: 0,
            starts: 0,
            index: HashMap::new(),
            lanes: model.0.new_lanes(),
            returns: HashMap::new(),
            ended: 0,
            guarded: 0,
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

    /// (Re)starts the lane of `pair` from `from` with random stream `stream` (a new lane when the pair has none);
    /// its flows start at or after `not_before`. Returns the lane's index.
    fn start_lane(
        &mut self,
        model: &Model,
        pair: HostPair,
        not_before: i64,
        from: &LaneStart,
        stream: u64,
    ) -> Result<usize, ModelError> {
        let key = lane_key(self.kind, &pair);
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.lanes.heads.push(LaneHead {
                    pair,
                    serial: stream,
                    rng: LaneRng::new(self.lane_seed(), stream),
                    next: None,
                    ended: false,
                    not_before,
                    last_us: i64::MIN,
                    session_flows: 0,
                    like: None,
                    last_flow: None,
                    prev_us: None,
                    requests: VecDeque::new(),
                });
                self.index.insert(key, self.lanes.heads.len() - 1);
                self.lanes.heads.len() - 1
            }
        };
        let seed = self.lane_seed();
        let h = &mut self.lanes.heads[i];
        h.pair = pair;
        h.serial = stream;
        h.rng = LaneRng::new(seed, stream);
        h.next = None;
        h.ended = false;
        h.not_before = not_before;
        h.last_us = i64::MIN;
        h.session_flows = 0;
        h.like = None;
        h.last_flow = None;
        h.prev_us = None;
        self.starts += 1;
        model.0.start_lane(&mut self.lanes, i, from)?;
        Ok(i)
    }

    /// Whether the lane of `pair` exists and is live.
    fn is_live(&self, pair: &HostPair) -> bool {
        self.index
            .get(&lane_key(self.kind, pair))
            .is_some_and(|&i| !self.lanes.heads[i].ended)
    }

    /// (Re)starts a lane for a session-start request.
    fn start_request(
        &mut self,
        model: &Model,
        observed: &[HostPair],
        r: Request,
    ) -> Result<usize, ModelError> {
        match r.start {
            Start::Pair(pair, like) => {
                let i = self.start_lane(
                    model,
                    pair,
                    r.at,
                    &LaneStart::New { at: r.at, like },
                    r.stream,
                )?;
                self.lanes.heads[i].like = like.map(|k| observed[k]);
                Ok(i)
            }
            Start::Observed(i) => {
                let since = self
                    .returns
                    .get(&lane_key(self.kind, &observed[i]))
                    .cloned();
                self.start_lane(
                    model,
                    observed[i],
                    r.at,
                    &LaneStart::Reactivate {
                        i,
                        at: r.at,
                        since: since.as_ref(),
                    },
                    r.stream,
                )
            }
        }
    }

    /// Start (or, if its twin ended, restart) the synthetic twin of a real pair, continuing from the real flow
    /// `last` (and the start of the flow before it, if known). No-op while the pair's twin is live. A twin joined
    /// after the session has advanced past `last` draws its first gap conditioned on reaching the session clock.
    pub fn join(&mut self, model: &Model, last: &FlowRecord, prev_start_us: Option<i64>) {
        if self.check(model).is_err() {
            return;
        }
        if self.is_live(&last.pair()) {
            return;
        }
        let not_before = self.clock_us.unwrap_or(i64::MIN).max(last.start_us);
        self.serial += 1;
        // start_lane fails only for a model of another kind, checked above.
        let _ = self.start_lane(
            model,
            last.pair(),
            not_before,
            &LaneStart::Continue {
                last,
                prev_start_us,
            },
            self.serial - 1,
        );
    }

    /// A real pair began a session at `at` (its first flow, or its first after a gap above the silence threshold):
    /// its twin begins one too, at `at` or at the session clock if that is later, its first flow conditioned on
    /// `before` (the pair's real flow before the session and the start of the one before that) when known. A twin
    /// still live in an earlier session queues the start: it begins when that session ends (as a new pair's then,
    /// the real history being older than the twin's own). So a twin has one session per real session of its pair,
    /// each as long as the model's silence mark makes it; [`GenSession::join`] is for pairs met mid-session.
    pub fn join_session(
        &mut self,
        model: &Model,
        pair: HostPair,
        before: Option<(&FlowRecord, Option<i64>)>,
        at: i64,
    ) {
        if self.check(model).is_err() {
            return;
        }
        let at = self.clock_us.unwrap_or(i64::MIN).max(at);
        self.serial += 1;
        let stream = self.serial - 1;
        if let Some(&i) = self.index.get(&lane_key(self.kind, &pair))
            && !self.lanes.heads[i].ended
        {
            self.lanes.heads[i].requests.push_back(Request {
                at,
                stream,
                start: Start::Pair(pair, None),
            });
            return;
        }
        let from = match before {
            Some((last, prev_start_us)) => LaneStart::Resume {
                last,
                prev_start_us,
                at,
            },
            None => LaneStart::New { at, like: None },
        };
        // start_lane fails only for a model of another kind, checked above.
        let _ = self.start_lane(model, pair, at, &from, stream);
    }

    /// Lanes for every pair the model saw in training (what `PairSource::Observed` generation does), starting at
    /// `start_us`: each continues from its last training flow, conditioned on having been quiet since (see
    /// [`LaneStart`]).
    ///
    /// Only pairs in a session at `start_us` get a lane: those whose last training flow is within the silence
    /// threshold of it. The others went silent; with `PairSource::Observed` they come back through the session
    /// arrivals of [`GenSession::advance`] (re-activations), which this call switches on.
    pub fn join_observed(&mut self, model: &Model, start_us: i64) {
        if self.check(model).is_err() {
            return;
        }
        self.reactivate = true;
        let not_before = self.clock_us.unwrap_or(i64::MIN).max(start_us);
        let silence = model.space().silence_us;
        for (i, o) in model.0.observed_lanes().into_iter().enumerate() {
            if not_before - o.last_us <= silence && !self.is_live(&o.pair) && self.owns(&o.pair) {
                self.serial += 1;
                let _ = self.start_lane(
                    model,
                    o.pair,
                    not_before,
                    &LaneStart::Observed(i),
                    self.serial - 1,
                );
            }
        }
    }

    /// Session starts before `until_us`, drawn ahead so pieces do not matter: new pairs (`Synthetic`) or observed
    /// pairs coming back (`Observed`). A pair without a live lane (re)starts it; a live lane queues the start.
    fn arrive(&mut self, model: &Model, from_us: i64, until_us: i64) -> Result<(), ModelError> {
        let arr: &PairArrivals = model.0.pair_arrivals();
        if self.arrivals.is_none() {
            let mut a = ArrivalClock {
                rng: LaneRng::new(self.seed, u64::MAX),
                queued: BTreeMap::new(),
                seq: 0,
                next_us: 0.0,
                pairs: Vec::new(),
                observed: HashMap::new(),
                observed_last: Vec::new(),
            };
            for (i, o) in model.0.observed_lanes().into_iter().enumerate() {
                a.observed.insert(o.pair, i);
                a.pairs.push(o.pair);
                a.observed_last.push(o.last_us);
            }
            match self.pairs {
                PairSource::Synthetic => {
                    // Lanes in a session at the start: their next flows fall within the first minute (at most the
                    // silence threshold), each standing in for one of the lanes in a session at the end of the
                    // training data.
                    let window = FIRST_WINDOW_US.min(model.space().silence_us).max(1);
                    let (end, silence) = (model.space().last_us, model.space().silence_us);
                    let live: Vec<usize> = (0..a.observed_last.len())
                        .filter(|&i| end - a.observed_last[i] <= silence)
                        .collect();
                    let mut live = live.into_iter();
                    for _ in 0..arr.initial_pairs.max(1) {
                        let t = from_us + a.rng.gen_range(0..window);
                        let p = arr.sample_pair(&mut a.rng);
                        a.queue(t, Start::Pair(p, live.next()));
                    }
                }
                PairSource::Observed => {
                    // Lanes with a rhythm that are silent at the start come back a pause of their own after their
                    // last training flow: one longer than they have been quiet (none if no pause was that long).
                    // Every worker makes the same draws (a draw per rhythm lane, live or not).
                    for (lane, pauses) in &arr.rhythms {
                        let u = a.rng.r#gen::<f64>();
                        let Some(&i) = a.observed.get(lane) else {
                            continue;
                        };
                        if self.is_live(lane) {
                            continue;
                        }
                        let last = a.observed_last[i];
                        if let Some(p) = pause_longer_than(pauses, from_us - last, u) {
                            a.queue(last + p, Start::Observed(i));
                        }
                    }
                }
            }
            a.next_us = group_process(arr, self.pairs)
                .0
                .next_after(from_us as f64, &mut a.rng);
            self.arrivals = Some(a);
        }
        loop {
            let a = self.arrivals.as_mut().expect("set above");
            let first = a.queued.first_key_value().map(|(k, _)| k.0);
            if first.is_some_and(|t| t < until_us && t as f64 <= a.next_us) {
                let ((at, seq), start) = a.queued.pop_first().expect("checked");
                let r = Request {
                    at,
                    stream: ARRIVAL_STREAMS | seq,
                    start,
                };
                let pair = match start {
                    Start::Pair(p, _) => p,
                    Start::Observed(i) => a.pairs[i],
                };
                // Every worker draws the same starts; each keeps those of the pairs it owns.
                if self.shard.is_some_and(|(w, n)| pair.stable_hash() % n != w) {
                    continue;
                }
                // A live lane decides the start when it goes silent (see the module doc).
                match self.index.get(&lane_key(self.kind, &pair)) {
                    Some(&i) if !self.lanes.heads[i].ended => {
                        self.lanes.heads[i].requests.push_back(r)
                    }
                    _ => {
                        let observed = std::mem::take(&mut a.pairs);
                        let res = self.start_request(model, &observed, r);
                        self.arrivals.as_mut().expect("set above").pairs = observed;
                        res?;
                    }
                }
                continue;
            }
            if a.next_us >= until_us as f64 {
                return Ok(());
            }
            // A group starts: its members are queued at their offsets.
            let at = a.next_us as i64;
            let (rate, groups) = group_process(arr, self.pairs);
            a.next_us = rate.next_after(a.next_us, &mut a.rng);
            if groups.is_empty() {
                if self.pairs == PairSource::Synthetic {
                    let p = arr.sample_pair(&mut a.rng);
                    a.queue(at, Start::Pair(p, None));
                }
                continue;
            }
            let g = &groups[a.rng.gen_range(0..groups.len())];
            match self.pairs {
                PairSource::Synthetic => {
                    let first = arr.sample_pair(&mut a.rng);
                    for (k, (like, off)) in g.iter().enumerate() {
                        let p = if k == 0 {
                            first
                        } else {
                            arr.sample_dst(first.src, &mut a.rng)
                        };
                        a.queue(at + off, Start::Pair(p, a.observed.get(like).copied()));
                    }
                }
                PairSource::Observed => {
                    for (p, off) in g {
                        // Pairs the model's table lacks (none, for a model fitted on the same data) are skipped.
                        if let Some(&i) = a.observed.get(p) {
                            a.queue(at + off, Start::Observed(i));
                        }
                    }
                }
            }
        }
    }

    /// Generate every flow with start < `until_us` (flows sorted by start time appended to `out`); with
    /// `PairSource::Synthetic` also draws new pairs from the pair-arrival part for the advanced interval, and after
    /// [`GenSession::join_observed`] observed pairs coming back after a silence. Lanes carry
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
        if self.pairs == PairSource::Synthetic || self.reactivate {
            self.arrive(model, from, until_us)?;
        }
        let mut batch: Vec<(i64, u64, FlowRecord)> = Vec::new();
        let cap = SESSION_GUARD * model.0.pair_arrivals().typical_longest().max(1);
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
            // A lane the model ended (its silence mark) draws no next flow; starts it queued meanwhile are absorbed
            // (before its last flow) or restart it.
            let mut restart = Vec::new();
            let arr = model.0.pair_arrivals();
            active.retain(|&i| {
                let h = &mut self.lanes.heads[i];
                // Observed pairs (and new pairs standing in for one) are held to their own longest training
                // session. So are twins, but never below the typical cap: a twin's pair may have been seen for a
                // few epochs only (streaming keeps its longest session up to date, see `observe_windows`), and
                // its first twin session was cut after two flows (a scanner's new target, 133 SYNs in real).
                let twin = h.like.is_none() && !self.reactivate;
                let own = arr.longest_of(&h.like.unwrap_or_else(|| lane_key(self.kind, &h.pair)));
                let cap = match own {
                    Some(l) if twin => (SESSION_GUARD * (l as u64).max(1)).max(cap),
                    Some(l) => SESSION_GUARD * (l as u64).max(1),
                    None => cap,
                };
                if let Some(n) = &h.next {
                    if h.session_flows >= cap {
                        // The guard: a session this long never happened in training.
                        h.next = None;
                        h.ended = true;
                        self.guarded += 1;
                    } else {
                        // Kept for the pair's return (`returns`): only observed pairs come back.
                        if self.reactivate {
                            h.prev_us = (h.last_us != i64::MIN).then_some(h.last_us);
                            h.last_flow = Some(n.clone());
                        }
                        h.last_us = n.start_us;
                        h.session_flows += 1;
                    }
                }
                if !h.ended {
                    return true;
                }
                self.ended += 1;
                // A lane with a rhythm comes back a pause of its own after its last flow (see `pair_arrival`),
                // drawn from its own random stream; one that ended at its first step (a lane continuing a
                // training session) has been quiet since its last training flow.
                if let Some(a) = self.arrivals.as_ref()
                    && self.reactivate
                    && h.requests.is_empty()
                    && let Some(pauses) = arr.rhythm(&lane_key(self.kind, &h.pair))
                    && let Some(&k) = a.observed.get(&lane_key(self.kind, &h.pair))
                {
                    let last = if h.last_us == i64::MIN {
                        a.observed_last[k]
                    } else {
                        h.last_us
                    };
                    let u = h.rng.r#gen::<f64>();
                    if let Some(p) = pause_longer_than(pauses, h.not_before - last, u) {
                        h.requests.push_back(Request {
                            at: last + p,
                            stream: h.rng.r#gen::<u64>(),
                            start: Start::Observed(k),
                        });
                    }
                }
                if let Some(last) = h.last_flow.take() {
                    self.returns.insert(
                        lane_key(self.kind, &h.pair),
                        LastFlow {
                            last,
                            prev_start_us: h.prev_us,
                            session_pos: h.session_flows.saturating_sub(1).min(u32::MAX as u64)
                                as u32,
                        },
                    );
                }
                while h.requests.front().is_some_and(|r| r.at <= h.last_us) {
                    h.requests.pop_front();
                }
                if let Some(r) = h.requests.pop_front() {
                    restart.push(r);
                }
                false
            });
            if !restart.is_empty() {
                let observed = self
                    .arrivals
                    .as_mut()
                    .map(|a| std::mem::take(&mut a.pairs))
                    .unwrap_or_default();
                for r in restart {
                    let requests = {
                        let pair = match r.start {
                            Start::Pair(p, _) => p,
                            Start::Observed(i) => observed[i],
                        };
                        let i = self.index[&lane_key(self.kind, &pair)];
                        std::mem::take(&mut self.lanes.heads[i].requests)
                    };
                    let i = self.start_request(model, &observed, r)?;
                    self.lanes.heads[i].requests = requests;
                    active.push(i);
                }
                if let Some(a) = self.arrivals.as_mut() {
                    a.pairs = observed;
                }
            }
            candidates = active;
        }
        batch.sort_by_key(|x| (x.0, x.1));
        out.extend(batch.into_iter().map(|x| x.2));
        self.clock_us = Some(until_us);
        self.collect_ended();
        Ok(())
    }

    /// Removes silent lanes with no queued start: a later start or join restarts a pair afresh whether its lane
    /// is kept or not, so removing them is unobservable (and bounds memory).
    fn collect_ended(&mut self) {
        let mut i = 0;
        while i < self.lanes.heads.len() {
            let h = &self.lanes.heads[i];
            if h.ended && h.requests.is_empty() {
                let key = lane_key(self.kind, &h.pair);
                if self.index.get(&key) == Some(&i) {
                    self.index.remove(&key);
                }
                self.remove_lane(i);
            } else {
                i += 1;
            }
        }
    }

    /// Lanes not ended.
    pub fn live(&self) -> usize {
        self.lanes.heads.iter().filter(|h| !h.ended).count()
    }

    /// Lane sessions ended so far (a lane restarted and ended again counts twice).
    pub fn ended(&self) -> u64 {
        self.ended
    }

    /// Sessions the guard ended (counted in [`GenSession::ended`] too; see [`SESSION_GUARD`]).
    pub fn guarded(&self) -> u64 {
        self.guarded
    }

    /// Lane sessions started so far (joins, observed lanes, new and returning pairs).
    pub fn lanes_created(&self) -> u64 {
        self.starts
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
