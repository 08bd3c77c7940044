//! Timely-dataflow operators of temponet, one operator per file.
//!
//! # Time
//! Every dataflow here runs on `u64` timestamps that are **event-time epochs**: epoch `e` holds the flows whose
//! `start_us` lies in `[e * epoch_us, (e + 1) * epoch_us)` (see [`EpochClock`]). Sources hold a capability at their
//! *watermark*; a flow that arrives after the watermark passed its epoch is *late*: it is emitted at the watermark
//! epoch instead (never dropped) and counted. Completing epoch `e` downstream (a probe past `e`) therefore means:
//! every flow emitted so far whose timely time is `<= e` has been processed by every operator before the probe.
//!
//! # Who owns what
//! - A Kafka partition belongs to exactly one worker: `partition % peers == worker index` ([`kafka_source`]).
//! - A host pair belongs to exactly one worker: `HostPair::stable_hash() & (peers - 1)` on a power-of-two peer
//!   count, `% peers` otherwise (timely's exchange routing), the same on every process ([`pair_history`], and
//!   [`fidelity`] for its sketches).
//! - Per-window aggregates ([`window_metrics`], the merge stage of [`fidelity`]) live on worker 0.
//!
//! - A model replica per worker, shared by its [`trainer`] and [`generator`] ([`trainer::SharedModel`]); replicas
//!   are kept in step by [`param_average`] rounds. Each worker generates the synthetic twins of the pairs it owns.
//!
//! # The model stages
//! [`pair_history`] runs the [`fresh_windows::FreshWindows`] hook ([`plugs::PairHook`]) on every owned pair after
//! each closed epoch; its windows feed the [`trainer`] (online training, drift detection) and the [`generator`]
//! (synthetic flows); [`fidelity`] sketches real against synthetic; [`window_metrics`] merges everything into one
//! record per window. A [`clock_source`] drives the generator when there is no real input (pure generation).

pub mod admin;
pub mod clock_source;
pub mod codec;
pub mod epoch_stash;
pub mod fidelity;
pub mod file_sink;
pub mod file_source;
pub mod fresh_windows;
pub mod generator;
pub mod kafka_sink;
pub mod kafka_source;
pub mod message_batches;
pub mod pair_history;
pub mod param_average;
pub mod plugs;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod trainer;
pub mod window_metrics;

/// Maps event time (microseconds since the Unix epoch) to timely epochs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochClock {
    /// Length of one epoch in microseconds (default one second).
    pub epoch_us: u64,
}

impl Default for EpochClock {
    fn default() -> Self {
        EpochClock {
            epoch_us: 1_000_000,
        }
    }
}

impl EpochClock {
    pub fn new(epoch_us: u64) -> Self {
        assert!(epoch_us > 0, "an epoch must last at least one microsecond");
        EpochClock { epoch_us }
    }
    /// The epoch of an event time; times before 1970 map to epoch 0.
    pub fn epoch_of(&self, start_us: i64) -> u64 {
        if start_us <= 0 {
            0
        } else {
            start_us as u64 / self.epoch_us
        }
    }
    /// First microsecond of an epoch.
    pub fn start_of(&self, epoch: u64) -> i64 {
        epoch.saturating_mul(self.epoch_us).min(i64::MAX as u64) as i64
    }
}

/// What a source emits: a decoded flow, a message that could not be decoded, or a progress report of the source.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum SourceEvent {
    Flow(temponet::FlowRecord),
    Dead(codec::DeadLetter),
    Stats(SourceStats),
}

/// Per-worker source progress, emitted once per epoch the source's watermark leaves behind.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SourceStats {
    pub worker: usize,
    /// Flows emitted in this epoch.
    pub flows: u64,
    /// Messages routed to the dead-letter output in this epoch.
    pub dead: u64,
    /// Flows whose epoch was already behind the watermark (emitted at the watermark instead).
    pub late: u64,
    /// Next offset to consume per owned partition after this epoch (`(partition, offset)`); -1 when nothing read.
    pub consumed: Vec<(i32, i64)>,
    /// Consumed but not yet committed messages of this worker (in flight through the dataflow).
    pub in_flight: u64,
}
