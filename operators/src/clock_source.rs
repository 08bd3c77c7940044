//! `clock_source`: epochs without data, for pure generation (a trained model and no real input).
//!
//! Every worker emits one `()` at each epoch of `[start_us, end_us)` (to the end of time when `end_us` is `None`)
//! and holds its capability at the next epoch, so the generator downstream closes the epochs one by one. With
//! [`Pace::Speed`]`(s)` epoch `e` is released once `(end of e - start_us) / s` of wall time has passed since the
//! source started: synthetic time runs `s` times faster than real time (`x1` = real time). With [`Pace::Max`] it
//! runs as fast as the dataflow absorbs: at most `max_ahead` epochs are released beyond what the probe given to it
//! has completed (backpressure).

use crate::EpochClock;
use crate::file_source::Pace;
use std::time::{Duration, Instant};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, Stream};

/// Configuration of [`clock_source`].
#[derive(Clone, Copy, Debug)]
pub struct ClockConfig {
    pub clock: EpochClock,
    pub start_us: i64,
    pub end_us: Option<i64>,
    pub pace: Pace,
    /// Epochs released beyond the probe's frontier.
    pub max_ahead: u64,
}

/// Builds the source; `done` is a probe on the generated flows' sink (backpressure). It must not sit behind an
/// operator that holds epochs back for a window (metrics, fidelity): the source would wait for a window that
/// cannot close before the source releases its later epochs. For the same reason `max_ahead` must exceed the
/// generator's `batch_epochs`.
pub fn clock_source<'s>(
    scope: Scope<'s, u64>,
    cfg: ClockConfig,
    done: ProbeHandle<u64>,
) -> Stream<'s, u64, Vec<()>> {
    source(scope, "ClockSource", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let first = cfg.clock.epoch_of(cfg.start_us);
        let last = cfg.end_us.map(|e| cfg.clock.epoch_of(e.saturating_sub(1)));
        let mut cap = Some(cap);
        let mut next = first;
        let began = Instant::now();
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            if next == first && *c.time() < first {
                c.downgrade(&first);
            }
            let mut released = 0;
            loop {
                if last.is_some_and(|l| next > l) {
                    cap = None;
                    return;
                }
                if done.less_than(&next.saturating_sub(cfg.max_ahead.max(1))) || released >= 64 {
                    activator.activate_after(Duration::from_millis(1));
                    return;
                }
                if let Pace::Speed(s) = cfg.pace {
                    let due = Duration::from_secs_f64(
                        (cfg.clock.start_of(next + 1) - cfg.start_us).max(0) as f64 / 1e6 / s,
                    );
                    let now = began.elapsed();
                    if due > now {
                        activator.activate_after((due - now).min(Duration::from_millis(50)));
                        return;
                    }
                }
                output.session(&*c).give(());
                next += 1;
                released += 1;
                c.downgrade(&next);
            }
        }
    })
}
