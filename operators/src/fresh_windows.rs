//! `fresh_windows`: the [`PairHook`] that turns each pair's new events into training/generation windows.
//!
//! After an epoch closes, [`crate::pair_history::pair_history`] calls the hook on the worker that owns each pair
//! that received flows; the hook emits one or more [`FreshWindow`]s holding the pair's fresh events plus up to
//! `context` older events from the ring (so the recurrent encoder sees history before the first fresh event). The
//! windows leave `pair_history` on the owning worker at the epoch's time, so the trainer and the generator that
//! consume them with a pipeline pact see exactly the pairs their worker owns.

use crate::pair_history::{PairEvent, PairState};
use crate::plugs::PairHook;
use serde::{Deserialize, Serialize};
use temponet::model::PairWindow;
use temponet::{FlowRecord, HostPair, TcpFlags};

/// A pair's fresh events of one epoch with some context before them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FreshWindow {
    pub pair: HostPair,
    /// `events[0]` is the pair's first flow ever (the ring held every flow of the pair).
    pub starts_pair: bool,
    /// Start of the flow before `events[0]`, when the ring still had it.
    pub prev_start_us: Option<i64>,
    /// How far `events[0]`'s session reaches back under any silence threshold (the model's is not known when the
    /// window is cut; see [`FreshWindow::session_pos`]).
    pub reach: SessionReach,
    /// Oldest first; the last `fresh` are the new ones.
    pub events: Vec<PairEvent>,
    pub fresh: usize,
}

impl FreshWindow {
    /// The flow of one of the window's events (no label: labels are not learned).
    pub fn record(&self, e: &PairEvent) -> FlowRecord {
        FlowRecord {
            start_us: e.start_us,
            duration_us: e.duration_us,
            src: self.pair.src,
            dst: self.pair.dst,
            src_port: e.src_port,
            dst_port: e.dst_port,
            proto: e.proto,
            flags: TcpFlags(e.flags),
            packets: e.packets,
            bytes: e.bytes,
            label: None,
        }
    }

    /// Position of `events[0]` in its session under the silence threshold `silence_us`: flows of the pair before
    /// it with no gap above the threshold in between (counted as far back as [`FreshWindow::reach`] knows).
    pub fn session_pos(&self, silence_us: i64) -> u32 {
        self.reach.position(silence_us)
    }

    /// The model's view: context events unscored, fresh events scored. `silence_us` (the model's silence
    /// threshold) places the window in its session; `None` leaves the position at 0. The pair may still be in a
    /// session at the window's end, so its last event's silence mark is left unknown (`quiet_until_us: None`): the
    /// mark is learned when the pair's next flow comes, as that flow's inter-arrival.
    pub fn to_pair_window(&self, silence_us: Option<i64>) -> PairWindow {
        let n = self.events.len();
        PairWindow {
            pair: self.pair,
            starts_pair: self.starts_pair,
            prev_start_us: self.prev_start_us,
            events: self.events.iter().map(|e| self.record(e)).collect(),
            score: (0..n).map(|i| i >= n - self.fresh).collect(),
            quiet_until_us: None,
            session_pos: silence_us.map_or(0, |s| self.session_pos(s)),
        }
    }

    /// Fresh events that begin a session of the pair under the silence threshold `silence_us`: the pair's first
    /// flow, or one more than `silence_us` after the flow before it. Index into `events`, with the real flow
    /// before it and that flow's predecessor's start when the window (or `prev_start_us`) holds them.
    pub fn session_starts(&self, silence_us: i64) -> Vec<(usize, Option<RealBefore>)> {
        let n = self.events.len();
        (n - self.fresh.min(n)..n)
            .filter(|&i| match self.start_before(i) {
                _ if i == 0 && self.starts_pair => true,
                Some(p) => self.events[i].start_us - p > silence_us,
                None => false,
            })
            .map(|i| {
                let before =
                    (i > 0).then(|| (self.record(&self.events[i - 1]), self.start_before(i - 1)));
                (i, before)
            })
            .collect()
    }

    /// Start of the flow before `events[i]`, when known.
    fn start_before(&self, i: usize) -> Option<i64> {
        match i {
            0 => self.prev_start_us,
            _ => Some(self.events[i - 1].start_us),
        }
    }

    /// The newest event and the start of the one before it (what a synthetic twin continues from).
    pub fn last(&self) -> Option<(FlowRecord, Option<i64>)> {
        let last = self.events.last()?;
        Some((self.record(last), self.start_before(self.events.len() - 1)))
    }
}

/// Where a window's first flow stands in its session, for any silence threshold, in a few numbers.
///
/// Going back from the flow over the earlier flows of the pair, the session position under threshold `s` is the
/// number of flows passed before the first gap above `s`. That gap is always one where the running maximum of the
/// gaps rises (a record), and records are few (about `ln n` of `n` irregular gaps, one for regular ones), so the
/// records alone give every position exactly. Windows carried the starts of up to [`EARLIER_STARTS`] earlier
/// flows instead: a heap vector of 384 bytes per window, a fifth of `pair_history`'s time in allocation and fresh
/// pages in the end-to-end benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionReach {
    /// `(flows back, running maximum gap)` at each record, in order; the first `records` are used.
    steps: [(u8, i64); SESSION_RECORDS],
    records: u8,
    /// Flows back that are known: the earlier flows in the ring (at most [`EARLIER_STARTS`]), or up to the flow
    /// before the record that did not fit.
    known: u8,
}

/// Records a [`SessionReach`] keeps; past them the position is counted only up to the next record (as it is past
/// [`EARLIER_STARTS`] flows).
pub const SESSION_RECORDS: usize = 12;

impl SessionReach {
    /// From the starts of the earlier flows, newest first, and the first flow's start `first_us`.
    pub fn new(first_us: i64, earlier_newest_first: impl Iterator<Item = i64>) -> SessionReach {
        let mut r = SessionReach::default();
        let mut next = first_us;
        let mut max = i64::MIN;
        for (k, t) in earlier_newest_first.take(EARLIER_STARTS).enumerate() {
            let gap = next - t;
            if gap > max {
                if r.records as usize == SESSION_RECORDS {
                    return r;
                }
                r.steps[r.records as usize] = (k as u8 + 1, gap);
                r.records += 1;
                max = gap;
            }
            r.known = k as u8 + 1;
            next = t;
        }
        r
    }

    /// Earlier flows with no gap above `silence_us` between them and the first flow.
    pub fn position(&self, silence_us: i64) -> u32 {
        self.steps[..self.records as usize]
            .iter()
            .find(|(_, gap)| *gap > silence_us)
            .map_or(self.known, |(back, _)| back - 1) as u32
    }
}

/// The real flow before a session start and the start of the flow before that one, if known.
pub type RealBefore = (FlowRecord, Option<i64>);

/// Most flows before a window's first event that its [`SessionReach`] looks back over; positions past it are cut
/// there (the model's session-position input saturates well below).
pub const EARLIER_STARTS: usize = 48;

/// Emits [`FreshWindow`]s of at most `max_fresh` fresh events each (longer runs are cut, each piece keeping up to
/// `context` events before it), so a training batch stays bounded however bursty a pair is.
#[derive(Clone, Copy, Debug)]
pub struct FreshWindows {
    pub context: usize,
    pub max_fresh: usize,
}

impl Default for FreshWindows {
    fn default() -> Self {
        FreshWindows {
            context: 8,
            max_fresh: 32,
        }
    }
}

impl PairHook for FreshWindows {
    type Output = FreshWindow;

    fn on_pair(
        &mut self,
        _epoch: u64,
        pair: &HostPair,
        state: &PairState,
        fresh: &[PairEvent],
        out: &mut Vec<FreshWindow>,
    ) {
        let ring_len = state.ring.len();
        // The fresh events are the ring's last `fresh.len()` (or all of the ring, if the epoch overflowed it).
        let fresh_in_ring = fresh.len().min(ring_len);
        let first_fresh = ring_len - fresh_in_ring;
        let max_fresh = self.max_fresh.max(1);
        let mut lo = first_fresh;
        while lo < ring_len {
            let hi = (lo + max_fresh).min(ring_len);
            let from = lo.saturating_sub(self.context);
            // The ring holds the pair's whole history only while nothing was ever pushed out of it.
            let whole = state.total as usize == ring_len;
            out.push(FreshWindow {
                pair: *pair,
                starts_pair: whole && from == 0,
                prev_start_us: (from > 0).then(|| state.ring[from - 1].start_us),
                reach: SessionReach::new(
                    state.ring[from].start_us,
                    state.ring.range(..from).rev().map(|e| e.start_us),
                ),
                events: state.ring.range(from..hi).copied().collect(),
                fresh: hi - lo,
            });
            lo = hi;
        }
    }
}

/// [`FreshWindows`] when a model consumes them, nothing otherwise (pair state only: the ingest benchmark).
#[derive(Clone, Copy, Debug, Default)]
pub struct MaybeWindows(pub Option<FreshWindows>);

impl PairHook for MaybeWindows {
    type Output = FreshWindow;

    fn on_pair(
        &mut self,
        epoch: u64,
        pair: &HostPair,
        state: &PairState,
        fresh: &[PairEvent],
        out: &mut Vec<FreshWindow>,
    ) {
        if let Some(w) = self.0.as_mut() {
            w.on_pair(epoch, pair, state, fresh, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn ev(t: i64) -> PairEvent {
        PairEvent {
            start_us: t,
            duration_us: 0,
            src_port: 1,
            dst_port: 2,
            proto: 6,
            flags: 2,
            packets: 1,
            bytes: 40,
        }
    }

    fn state(ts: &[i64], total: u64) -> PairState {
        PairState {
            ring: ts.iter().map(|&t| ev(t)).collect::<VecDeque<_>>(),
            total,
            last_us: *ts.last().unwrap(),
        }
    }

    fn pair() -> HostPair {
        HostPair {
            src: "10.0.0.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
        }
    }

    #[test]
    fn session_starts_are_the_fresh_flows_after_a_silence() {
        // Ring: 0, 1, 2, then silence, 100, 101, then silence, 300; fresh: the last four.
        let ts = [0, 1, 2, 100, 101, 300];
        let st = state(&ts, 6);
        let fresh: Vec<PairEvent> = ts[2..].iter().map(|&t| ev(t)).collect();
        let mut out = Vec::new();
        FreshWindows::default().on_pair(0, &pair(), &st, &fresh, &mut out);
        let starts = out[0].session_starts(50);
        let at: Vec<i64> = starts
            .iter()
            .map(|(i, _)| out[0].events[*i].start_us)
            .collect();
        assert_eq!(at, vec![100, 300]);
        // Each start carries the real flow before it and that flow's predecessor.
        let before: Vec<(i64, Option<i64>)> = starts
            .iter()
            .map(|(_, b)| {
                let (r, p) = b.as_ref().unwrap();
                (r.start_us, *p)
            })
            .collect();
        assert_eq!(before, vec![(2, Some(1)), (101, Some(100))]);
        // A new pair's first flow starts a session with no history.
        let mut out = Vec::new();
        FreshWindows::default().on_pair(0, &pair(), &state(&[5], 1), &[ev(5)], &mut out);
        let s = out[0].session_starts(50);
        assert_eq!(s.len(), 1);
        assert!(s[0].1.is_none());
    }

    #[test]
    fn new_pair_starts_and_scores_all() {
        let st = state(&[1, 2, 3], 3);
        let mut out = Vec::new();
        FreshWindows::default().on_pair(0, &pair(), &st, &[ev(1), ev(2), ev(3)], &mut out);
        assert_eq!(out.len(), 1);
        let w = out[0].to_pair_window(None);
        assert!(w.starts_pair);
        assert_eq!(w.score, vec![true, true, true]);
        assert_eq!(out[0].last().unwrap().1, Some(2));
    }

    /// The records give the position a walk back over every earlier start gives, for every threshold.
    #[test]
    fn session_reach_matches_walking_back() {
        let walk = |first: i64, earlier: &[i64], s: i64| {
            let mut pos = 0u32;
            let mut next = first;
            for &t in earlier.iter().rev().take(EARLIER_STARTS) {
                if next - t > s {
                    break;
                }
                pos += 1;
                next = t;
            }
            pos
        };
        let mut x = 12345u64;
        let mut rnd = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let (mut capped, mut irregular_capped, mut checks) = (0, 0, 0);
        for case in 0..2000 {
            let n = rnd(70) as usize;
            // Irregular gaps, regular ones, and (case % 3 == 2) ones growing going back (every gap a record).
            let mut t = 0i64;
            let mut starts: Vec<i64> = (0..=n)
                .map(|i| {
                    t += match case % 3 {
                        0 => 1 + rnd(1000) as i64,
                        1 => 50,
                        _ => 1 + (n - i) as i64 * 3,
                    };
                    t
                })
                .collect();
            let first = starts.pop().unwrap();
            let reach = SessionReach::new(first, starts.iter().rev().copied());
            for s in [0, 1, 49, 50, 51, 200, 500, 999, 5000, i64::MAX] {
                let want = walk(first, &starts, s);
                let got = reach.position(s);
                checks += 1;
                if got < want && got as usize >= SESSION_RECORDS {
                    // More records than kept: counted up to the first one left out.
                    capped += 1;
                    irregular_capped += (case % 3 == 0) as u32;
                    continue;
                }
                assert_eq!(got, want, "case {case} threshold {s}");
            }
        }
        assert!(
            capped > 0,
            "the growing gaps should exceed the kept records"
        );
        assert!(
            irregular_capped * 1000 < checks,
            "irregular gaps rarely exceed the kept records: {irregular_capped} of {checks}"
        );
    }

    #[test]
    fn context_is_unscored_and_long_runs_are_cut() {
        let ts: Vec<i64> = (0..20).collect();
        let st = state(&ts, 100);
        let fresh: Vec<PairEvent> = (10..20).map(ev).collect();
        let mut out = Vec::new();
        let hook = &mut FreshWindows {
            context: 3,
            max_fresh: 4,
        };
        hook.on_pair(0, &pair(), &st, &fresh, &mut out);
        let fresh_total: usize = out.iter().map(|w| w.fresh).sum();
        assert_eq!(fresh_total, 10);
        assert_eq!(out.len(), 3);
        let w = &out[0];
        assert!(!w.starts_pair);
        assert_eq!(w.prev_start_us, Some(6));
        assert_eq!(
            w.events.iter().map(|e| e.start_us).collect::<Vec<_>>(),
            vec![7, 8, 9, 10, 11, 12, 13]
        );
        let pw = w.to_pair_window(Some(100));
        assert_eq!(pw.session_pos, 7);
        assert_eq!(w.to_pair_window(Some(0)).session_pos, 0);
        assert_eq!(pw.score.iter().filter(|s| **s).count(), 4);
        assert!(!pw.score[2] && pw.score[3]);
        // The second piece's context overlaps the first piece's fresh events.
        assert_eq!(out[1].events[0].start_us, 11);
    }
}
