//! `file_source`: flows from a caller-supplied record iterator (in practice `temponet::format::FlowReader`, which
//! knows every file format; this operator knows none), replayed as fast as possible or paced to event time.
//!
//! # Invariants
//! - Only the worker given an iterator reads; the others drop their capability at once.
//! - Time is the event-time epoch of `start_us` ([`EpochClock`]); the watermark trails the largest epoch read by
//!   `lateness_epochs`; a flow behind it is emitted at the watermark and counted late, never dropped.
//! - With [`Pace::Speed`]`(s)`, a flow is released once `(start_us - first start_us) / s` of wall time has passed
//!   since the first flow: `s = 1` replays in real time, `s = 10` ten times faster.
//! - A row the iterator reports as an error becomes a [`SourceEvent::Dead`] (partition 0, offset = its index in the
//!   iterator, reason = the error's text): counted, kept, never stopping the replay.
//! - Progress: with the flows of epoch `t` goes a [`SourceEvent::Stats`] at `t` counting them (and the dead letters
//!   and late flows emitted at `t`), so per-window metrics count each flow in its own window; each watermark advance
//!   adds a zero-count report with the records consumed so far.

use crate::codec::DeadLetter;
use crate::{EpochClock, SourceEvent, SourceStats};
use std::collections::BTreeMap;
use std::fmt::Display;
use std::iter::Peekable;
use std::time::{Duration, Instant};
use temponet::FlowRecord;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};

/// Replay speed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as possible.
    Max,
    /// A multiple of real time (1.0 = real time).
    Speed(f64),
}

impl std::str::FromStr for Pace {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(Pace::Max);
        }
        let x = s.strip_prefix('x').unwrap_or(s);
        match x.parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() => Ok(Pace::Speed(v)),
            _ => Err(format!(
                "invalid pace {s:?} (expected max, x1, x10, 2.5...)"
            )),
        }
    }
}

/// Configuration of [`file_source`].
#[derive(Clone, Copy, Debug)]
pub struct FileSourceConfig {
    pub clock: EpochClock,
    pub lateness_epochs: u64,
    pub pace: Pace,
    /// Most records per activation.
    pub batch: usize,
    /// Name used as the dead letters' topic.
    pub name: &'static str,
}

impl Default for FileSourceConfig {
    fn default() -> Self {
        FileSourceConfig {
            clock: EpochClock::default(),
            lateness_epochs: 2,
            pace: Pace::Max,
            batch: 8192,
            name: "file",
        }
    }
}

/// Builds the source. Give `Some(records)` on exactly the workers that should read.
pub fn file_source<'s, I, E>(
    scope: Scope<'s, u64>,
    records: Option<I>,
    cfg: FileSourceConfig,
) -> Stream<'s, u64, Vec<SourceEvent>>
where
    I: Iterator<Item = Result<FlowRecord, E>> + 'static,
    E: Display,
{
    let worker = scope.index();
    source(scope, "FileSource", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap: Option<Capability<u64>> = records.as_ref().map(|_| cap);
        let mut records: Option<Peekable<I>> = records.map(|r| r.peekable());
        let mut index: i64 = 0;
        let mut max_epoch: Option<u64> = None;
        let mut start: Option<(i64, Instant)> = None;
        let mut out: BTreeMap<u64, Vec<SourceEvent>> = BTreeMap::new();
        // Per epoch of the batch: its flows, dead letters and late flows (reported at that epoch).
        let mut counts: BTreeMap<u64, SourceStats> = BTreeMap::new();
        move |output| {
            let (Some(c), Some(it)) = (cap.as_mut(), records.as_mut()) else {
                return;
            };
            let wm = *c.time();
            let mut wait: Option<Duration> = None;
            let mut n = 0;
            while n < cfg.batch {
                if let (Pace::Speed(s), Some(Ok(r))) = (cfg.pace, it.peek()) {
                    let (t0, w0) = *start.get_or_insert((r.start_us, Instant::now()));
                    let due = Duration::from_secs_f64(((r.start_us - t0).max(0) as f64 / 1e6) / s);
                    let now = w0.elapsed();
                    if due > now {
                        wait = Some(due - now);
                        break;
                    }
                }
                let Some(item) = it.next() else { break };
                n += 1;
                index += 1;
                match item {
                    Ok(r) => {
                        let e = cfg.clock.epoch_of(r.start_us);
                        max_epoch = Some(max_epoch.map_or(e, |m| m.max(e)));
                        let st = counts.entry(e.max(wm)).or_default();
                        st.flows += 1;
                        st.late += (e < wm) as u64;
                        out.entry(e.max(wm)).or_default().push(SourceEvent::Flow(r));
                    }
                    Err(err) => {
                        counts.entry(wm).or_default().dead += 1;
                        let d = DeadLetter::new(cfg.name, 0, index - 1, err.to_string(), b"");
                        out.entry(wm).or_default().push(SourceEvent::Dead(d));
                    }
                }
            }
            // The capability starts at epoch 0: move it to the first data's epoch before anything is emitted, so the
            // first progress report belongs to the stream's own time, not to 1970.
            if index == n as i64
                && let Some(&first) = out.keys().next()
                && first > wm
            {
                c.downgrade(&first);
            }
            let wm = *c.time();
            for (t, evs) in std::mem::take(&mut out) {
                let mut st = counts.remove(&t).unwrap_or_default();
                st.worker = worker;
                let at = c.delayed(&t);
                let mut session = output.session(&at);
                session.give_iterator(evs.into_iter());
                session.give(SourceEvent::Stats(st));
            }
            let done = n < cfg.batch && wait.is_none();
            let new_wm = if done {
                u64::MAX
            } else {
                max_epoch
                    .map_or(wm, |m| m.saturating_sub(cfg.lateness_epochs))
                    .max(wm)
            };
            if new_wm > wm {
                output.session(&*c).give(SourceEvent::Stats(SourceStats {
                    worker,
                    consumed: vec![(0, index)],
                    ..Default::default()
                }));
            }
            if done {
                cap = None;
                return;
            }
            if new_wm > wm {
                c.downgrade(&new_wm);
            }
            match wait {
                Some(d) => activator.activate_after(d.min(Duration::from_millis(50))),
                None => activator.activate(),
            }
        }
    })
}
