//! `kafka_source`: flows from a Kafka topic into the dataflow.
//!
//! # Partitions
//! One rdkafka consumer per worker, with an explicit assignment (no group rebalancing): worker `i` of `peers` owns
//! the partitions `p` with `p % peers == i`. A worker that owns none drops its capability at once. Consumption
//! starts at the group's committed offset (`auto.offset.reset=earliest` when there is none).
//!
//! Each owned partition has its own queue (`split_partition_queue`), and the source reads, chunk by chunk, from the
//! partition furthest behind in event time. Through the consumer's single queue librdkafka hands over whatever it
//! fetched first: on a backlog, one partition's whole backlog before a message of the other (seconds), long enough
//! for the idle rule below to drop the silent partition from the watermark, which then ran ahead on the first
//! partition alone and made every flow of the second late (with 1 worker and 2 partitions, 40% of the benchmark's
//! flows, crammed into its last epochs). Reading the partitions in step keeps a worker's partitions within a chunk
//! of each other in event time, so no layout of partitions on workers makes flows late that another does not.
//!
//! # Time and watermark
//! A flow's epoch is [`EpochClock::epoch_of`] its `start_us`. The source holds one capability at its *watermark*:
//! the minimum over its non-idle partitions of (largest epoch seen - `lateness_epochs`). A partition is idle when
//! its queue has been found empty at every look for `idle_timeout` (or the source was paused that long); idle
//! partitions cannot stall the watermark. When every partition is idle the watermark moves past every epoch seen
//! (they are declared complete). A flow whose epoch is behind the watermark is emitted at the watermark (counted as
//! late), never dropped.
//!
//! Idleness is measured from the first empty look, not from the last message: a worker kept busy elsewhere (a
//! model's warm-up fit, a long generation batch) does not look at its queues, and a partition whose messages wait
//! in librdkafka's queue meanwhile is not idle. Counting from the last message declared both partitions of a
//! worker idle after such a pause, moved the watermark to the partition furthest ahead, and made the other's next
//! flows late. Partition EOF does not make a partition idle either: it only ends batch mode. Tansu reports wrong
//! high watermarks for batches of several records, so its EOF signals come early, between fetches.
//!
//! A partition not heard from yet (neither a message nor its end since assignment) is not idle, however long its
//! queue has been empty, until `start_timeout` has passed: its first fetch (the committed-offset lookup, then the
//! fetch itself) can take longer than `idle_timeout` on a loaded machine. A streaming run's partition 0 once took
//! that long while its worker's other partition delivered its whole backlog: the watermark ran to the end of the
//! other partition, every flow of partition 0 came in late, stamped into the last window, and since a streaming run
//! never closes its last window, partition 0's commit stayed at offset 0. An empty partition reports its end at its
//! first fetch, so it goes idle as before.
//!
//! # Backpressure
//! While more than `max_in_flight` of its flows are not yet released downstream (the `released` probe, placed
//! after the slowest stage whose input could pile up, has not passed their time: the model stages when they are
//! on, else the stateful stage), the source stops reading the partitions that are ahead and keeps reading those
//! that hold the watermark back (newest epoch, less the lateness, not past it). Flows waiting downstream sit at
//! times the watermark has not passed, so only those partitions can release them; they are read, the watermark
//! moves, the waiting flows go through. Without the model stages in the bound, a model slower than the input
//! let windows pile up in front of it without limit. librdkafka's own prefetch queue is bounded by
//! `queued.max.messages.kbytes`.
//!
//! Pausing must not make a partition idle either. An earlier version counted a paused source as quiet: every
//! partition went idle, the watermark jumped to the partition furthest ahead, and the other partition's next
//! flows were all late, stamped at that watermark. Once `max_in_flight` of them waited there, the source paused
//! again, and with nothing newer read the watermark could not pass them: the run stalled for good (2 M flows of
//! 64-flow messages on one worker, 500 k in flight).
//!
//! # Offsets (at-least-once)
//! The source records, per timely time and partition, the least and the largest offset emitted at that time. The
//! `written` probe (placed after every sink) passing time `t` means every message emitted at `t` is fully written.
//! [`SourceControl::commit_completed`] commits, per partition, the least offset still emitted at a time the probe
//! has not passed (or, with none, the offset after the last one written). Event times within a partition may be out
//! of order, so offsets are *not* emitted in time order: committing "the largest offset of a passed time" would be
//! wrong, this rule is not. Nothing is committed before it is written, so a crash replays from there
//! (at-least-once; what was written after the commit point is written again).
//!
//! # Messages of several flows, bad messages
//! A message may hold several flows (see [`WireFormat`]); each is emitted at its own epoch, and the message's
//! offset is recorded at every time one of its records went out, so it is committed only once all are written.
//! A message or JSON line that does not decode (garbage bytes, wrong JSON, out-of-range values, empty) becomes a
//! [`SourceEvent::Dead`] with the reason, at the watermark time; its offset is committed like any other once the
//! dead-letter sink has written it. The pipeline never stops for one.

use crate::codec::{DeadLetter, WireFormat};
use crate::{EpochClock, SourceEvent, SourceStats, admin};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, base_consumer::PartitionQueue,
};
use rdkafka::error::KafkaError;
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, Stream};

/// Configuration of [`kafka_source`].
#[derive(Clone, Debug)]
pub struct KafkaSourceConfig {
    pub brokers: String,
    pub topic: String,
    pub group: String,
    pub format: WireFormat,
    pub clock: EpochClock,
    /// Epochs a partition's watermark trails its largest epoch seen (tolerated disorder).
    pub lateness_epochs: u64,
    /// A partition that delivered nothing for this long no longer holds the watermark back.
    pub idle_timeout: Duration,
    /// A partition that has delivered neither a message nor its end since assignment holds the watermark back for
    /// this long, however quiet (see "A partition not heard from yet").
    pub start_timeout: Duration,
    /// Most flows of this worker not yet released downstream (see the backpressure section) before the source
    /// pauses.
    pub max_in_flight: u64,
    /// Most messages read per activation (keeps the worker responsive).
    pub batch: usize,
    /// Batch mode: finish once every owned partition reported its end and nothing arrived for `end_quiet`.
    pub stop_at_end: bool,
    pub end_quiet: Duration,
    /// Least time between two asynchronous offset commits.
    pub commit_interval: Duration,
    /// Extra librdkafka consumer settings.
    pub consumer_overrides: Vec<(String, String)>,
}

impl KafkaSourceConfig {
    pub fn new(brokers: &str, topic: &str, group: &str) -> Self {
        KafkaSourceConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            group: group.into(),
            format: WireFormat::Json,
            clock: EpochClock::default(),
            lateness_epochs: 2,
            idle_timeout: Duration::from_millis(500),
            start_timeout: Duration::from_secs(10),
            max_in_flight: 500_000,
            batch: 8192,
            stop_at_end: false,
            end_quiet: Duration::from_millis(300),
            commit_interval: Duration::from_millis(200),
            consumer_overrides: Vec::new(),
        }
    }
}

/// Errors of the Kafka source (setup only: once running, problems are counted and logged, not fatal).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Admin(#[from] Box<admin::AdminError>),
    #[error("kafka at {brokers}: {what}: {source}")]
    Kafka {
        brokers: String,
        what: String,
        source: Box<KafkaError>,
    },
}

#[derive(Debug, Clone)]
struct PartState {
    partition: i32,
    max_epoch: Option<u64>,
    /// Since when every look at the partition's queue found it empty (None: it delivered at the last look).
    quiet_since: Option<Instant>,
    /// The partition delivered a message or its end since assignment: its fetching has started.
    heard: bool,
    eof: bool,
    /// Offset of the first message consumed in this run (-1: none yet).
    first_offset: i64,
    /// Next offset after the last consumed message (-1: none yet).
    next_offset: i64,
}

/// Per-partition account of one run, for reports and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartitionReport {
    pub partition: i32,
    /// First offset consumed in this run (-1: nothing consumed).
    pub first_offset: i64,
    /// Next offset after the last one consumed (-1: nothing consumed).
    pub next_offset: i64,
    /// Messages consumed in this run (flows and dead letters).
    pub consumed: u64,
    /// Offset committed by this run (-1: none).
    pub committed: i64,
}

/// What one worker's source did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SourceReport {
    pub worker: usize,
    pub partitions: Vec<PartitionReport>,
    pub flows: u64,
    pub dead: u64,
    pub late: u64,
    pub errors: u64,
    pub commits: u64,
    pub paused_activations: u64,
}

struct Inner {
    cfg: KafkaSourceConfig,
    worker: usize,
    consumer: Option<Arc<BaseConsumer<SourceContext>>>,
    /// Per partition index: the partition's own message queue (see the module documentation). Dropped before the
    /// consumer.
    queues: Vec<PartitionQueue<SourceContext>>,
    parts: Vec<PartState>,
    consumed: Vec<u64>,
    /// time -> per partition index (least offset, next offset after the largest) of messages emitted at that time,
    /// until the `written` probe passes the time. (-1, -1) where none.
    pending: BTreeMap<u64, Vec<(i64, i64)>>,
    /// Per partition index: next offset after the largest offset whose time the `written` probe has passed.
    done_next: Vec<i64>,
    /// time -> flows emitted at that time and not yet released by the `released` probe (backpressure).
    in_flight: BTreeMap<u64, u64>,
    in_flight_total: u64,
    uncommitted_total: u64,
    pending_counts: BTreeMap<u64, u64>,
    commit_pos: Vec<i64>,
    committed: Vec<i64>,
    dirty: bool,
    /// The next commit sends every partition's position (an asynchronous commit was lost).
    resend: bool,
    absorbed: ProbeHandle<u64>,
    released: ProbeHandle<u64>,
    /// time -> (wall time read, flows) per batch, until absorbed: feeds `latency`.
    read_at: BTreeMap<u64, Vec<(Instant, u64)>>,
    /// Microseconds from a flow's read off Kafka to its absorption by the stage the `absorbed` probe watches.
    latency: hdrhistogram::Histogram<u64>,
    last_commit: Instant,
    /// When the partitions were assigned (see [`KafkaSourceConfig::start_timeout`]).
    assigned_at: Instant,
    /// The start-timeout warning went out.
    unheard_warned: bool,
    report: SourceReport,
}

impl Inner {
    /// Records the latency of what the stateful stage has absorbed, and forgets what the slowest stage has
    /// released (backpressure).
    fn prune(&mut self) {
        let now = Instant::now();
        while let Some((&t, _)) = self.read_at.first_key_value() {
            if self.absorbed.less_equal(&t) {
                break;
            }
            for (at, n) in self.read_at.pop_first().expect("present").1 {
                let us = now
                    .saturating_duration_since(at)
                    .as_micros()
                    .min(u64::MAX as u128) as u64;
                self.latency.saturating_record_n(us.max(1), n);
            }
        }
        while let Some((&t, &k)) = self.in_flight.first_key_value() {
            if self.released.less_equal(&t) {
                break;
            }
            self.in_flight.pop_first();
            self.in_flight_total -= k;
        }
    }
}

/// The driver's side of a Kafka source: offset commits and the run's account. Lives on the worker thread.
#[derive(Clone)]
pub struct SourceControl {
    inner: Rc<RefCell<Inner>>,
}

impl SourceControl {
    /// Commits the offsets of every time the `written` probe has passed. Asynchronous and rate-limited to
    /// `commit_interval` unless `force` (then synchronous). Returns an error only for a failed synchronous commit.
    pub fn commit_completed(
        &self,
        written: &ProbeHandle<u64>,
        force: bool,
    ) -> Result<(), KafkaError> {
        let mut s = self.inner.borrow_mut();
        let s = &mut *s;
        s.prune();
        // An asynchronous commit that failed after it was queued (see `SourceContext`): resend every position.
        let lost = s.consumer.as_ref().is_some_and(|c| {
            c.context()
                .commit_failed
                .swap(false, std::sync::atomic::Ordering::Relaxed)
        });
        if lost {
            s.resend = true;
            s.dirty = true;
            s.report.errors += 1;
        }
        while let Some((&t, _)) = s.pending.first_key_value() {
            if written.less_equal(&t) {
                break;
            }
            let (_, offs) = s.pending.pop_first().expect("present");
            for (i, (_, next)) in offs.into_iter().enumerate() {
                s.done_next[i] = s.done_next[i].max(next);
            }
            s.uncommitted_total -= s.pending_counts.remove(&t).unwrap_or(0);
        }
        // A partition's flows are not emitted in offset order when their event times are out of order (a later
        // offset can carry an earlier epoch), so the commit point is the least offset still waiting at any time,
        // or, with none waiting, the next offset after everything written.
        for i in 0..s.parts.len() {
            let waiting = s
                .pending
                .values()
                .filter_map(|v| (v[i].0 >= 0).then_some(v[i].0))
                .min();
            let pos = waiting.unwrap_or(s.done_next[i]);
            if pos > s.commit_pos[i] {
                s.commit_pos[i] = pos;
                s.dirty = true;
            }
        }
        if !s.dirty || (!force && s.last_commit.elapsed() < s.cfg.commit_interval) {
            return Ok(());
        }
        let Some(consumer) = s.consumer.as_ref() else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        for (i, p) in s.parts.iter().enumerate() {
            if s.commit_pos[i] >= 0 && (s.resend || s.commit_pos[i] != s.committed[i]) {
                tpl.add_partition_offset(
                    &s.cfg.topic,
                    p.partition,
                    Offset::Offset(s.commit_pos[i]),
                )
                .expect("valid offset");
            }
        }
        s.dirty = false;
        s.last_commit = Instant::now();
        if tpl.count() == 0 {
            return Ok(());
        }
        let mode = if force {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        match consumer.commit(&tpl, mode) {
            Ok(()) => {
                s.resend = false;
                s.committed.clone_from(&s.commit_pos);
                s.report.commits += 1;
                Ok(())
            }
            Err(e) => {
                s.dirty = true;
                s.report.errors += 1;
                tracing::warn!(worker = s.worker, "offset commit failed (will retry): {e}");
                if force { Err(e) } else { Ok(()) }
            }
        }
    }

    /// The account of this run so far.
    pub fn report(&self) -> SourceReport {
        let s = self.inner.borrow();
        let mut r = s.report.clone();
        r.worker = s.worker;
        r.partitions = s
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| PartitionReport {
                partition: p.partition,
                first_offset: p.first_offset,
                next_offset: p.next_offset,
                consumed: s.consumed[i],
                committed: s.committed[i],
            })
            .collect();
        r
    }

    /// A one-line account of what the source waits on (for a stall warning): its watermark-relevant state per
    /// partition, flows read and not yet released against the pause threshold, and messages not yet committed.
    pub fn status(&self) -> String {
        let s = self.inner.borrow();
        let parts: Vec<String> = s
            .parts
            .iter()
            .map(|p| {
                format!(
                    "p{} next {} max_epoch {:?} heard {} eof {} quiet {:?}",
                    p.partition,
                    p.next_offset,
                    p.max_epoch,
                    p.heard,
                    p.eof,
                    p.quiet_since.map(|q| q.elapsed())
                )
            })
            .collect();
        format!(
            "in flight {} (pause at {}), uncommitted {}, partitions [{}]",
            s.in_flight_total,
            s.cfg.max_in_flight,
            s.uncommitted_total,
            parts.join("; ")
        )
    }

    /// Read-to-absorbed latency of this worker's flows so far (microseconds).
    pub fn latency(&self) -> hdrhistogram::Histogram<u64> {
        self.inner.borrow().latency.clone()
    }

    /// Flows read and not yet released downstream (what backpressure counts).
    pub fn in_flight(&self) -> u64 {
        self.inner.borrow().in_flight_total
    }

    /// Messages consumed and not yet committed.
    pub fn uncommitted(&self) -> u64 {
        self.inner.borrow().uncommitted_total
    }

    /// Closes the consumer, waiting at most `timeout` (librdkafka's destroy can hang; see `admin::drop_with_timeout`).
    pub fn shutdown(&self, timeout: Duration) {
        let mut s = self.inner.borrow_mut();
        s.queues.clear();
        if let Some(c) = s.consumer.take() {
            admin::drop_with_timeout(c, timeout);
        }
    }
}

/// The source consumer's context. The source asks for partition-end events (`enable.partition.eof`: it is how a
/// drained partition is told from a slow one), and librdkafka also reports each of them as an error event, which
/// the default context logs at ERROR level on every run. Those are routine and go to debug; every other error is
/// logged as before.
/// Logs librdkafka's errors, and notes a failed asynchronous offset commit so the next commit sends every
/// partition's position again: `commit` in async mode returns `Ok` once the request is queued, and without this a
/// partition whose position stopped moving (its last window still open) would keep a lost commit lost.
#[derive(Default)]
pub struct SourceContext {
    commit_failed: std::sync::atomic::AtomicBool,
}

impl rdkafka::ClientContext for SourceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!("librdkafka: {error}: {reason}");
        } else {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for SourceContext {
    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!("offset commit failed (will resend): {e}");
            self.commit_failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Builds the source on this worker. `absorbed` must probe the stateful stage (read-to-absorbed latency),
/// `released` the slowest stage whose input may pile up (backpressure: the model stages when on, else the stateful
/// stage), `written` every sink (commits, through the returned [`SourceControl`]).
pub fn kafka_source<'s>(
    scope: Scope<'s, u64>,
    cfg: KafkaSourceConfig,
    absorbed: ProbeHandle<u64>,
    released: ProbeHandle<u64>,
) -> Result<(Stream<'s, u64, Vec<SourceEvent>>, SourceControl), SourceError> {
    let worker = scope.index();
    let peers = scope.peers();
    let kafka = |what: &str| {
        let brokers = cfg.brokers.clone();
        let what = what.to_string();
        move |source| SourceError::Kafka {
            brokers,
            what,
            source: Box::new(source),
        }
    };
    let mut cc = admin::client_config(&cfg.brokers);
    cc.set("group.id", &cfg.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .set("queued.max.messages.kbytes", "65536");
    for (k, v) in &cfg.consumer_overrides {
        cc.set(k, v);
    }
    let consumer: BaseConsumer<SourceContext> = cc
        .create_with_context(SourceContext::default())
        .map_err(kafka("creating consumer"))?;
    let n = admin::partition_count(&consumer, &cfg.brokers, &cfg.topic, Duration::from_secs(10))
        .map_err(Box::new)?;
    let owned: Vec<i32> = (0..n).filter(|p| *p as usize % peers == worker).collect();
    let now = Instant::now();
    let parts: Vec<PartState> = owned
        .iter()
        .map(|&partition| PartState {
            partition,
            max_epoch: None,
            quiet_since: None,
            heard: false,
            eof: false,
            first_offset: -1,
            next_offset: -1,
        })
        .collect();
    let mut queues = Vec::new();
    let consumer = if owned.is_empty() {
        admin::drop_with_timeout(consumer, Duration::from_secs(5));
        None
    } else {
        let mut tpl = TopicPartitionList::new();
        for p in &owned {
            tpl.add_partition_offset(&cfg.topic, *p, Offset::Stored)
                .expect("valid offset");
        }
        consumer
            .assign(&tpl)
            .map_err(kafka("assigning partitions"))?;
        // Split after `assign` (which resets partition queues) and before the first poll.
        let consumer = Arc::new(consumer);
        for p in &owned {
            let q = consumer
                .split_partition_queue(&cfg.topic, *p)
                .ok_or_else(|| SourceError::Kafka {
                    brokers: cfg.brokers.clone(),
                    what: format!("splitting the queue of partition {p}"),
                    source: Box::new(KafkaError::Subscription(format!(
                        "no queue for {}/{p}",
                        cfg.topic
                    ))),
                })?;
            queues.push(q);
        }
        Some(consumer)
    };
    let np = parts.len();
    let inner = Rc::new(RefCell::new(Inner {
        cfg,
        worker,
        consumer,
        queues,
        parts,
        consumed: vec![0; np],
        pending: BTreeMap::new(),
        in_flight: BTreeMap::new(),
        in_flight_total: 0,
        uncommitted_total: 0,
        pending_counts: BTreeMap::new(),
        commit_pos: vec![-1; np],
        done_next: vec![-1; np],
        committed: vec![-1; np],
        dirty: false,
        resend: false,
        absorbed,
        released,
        read_at: BTreeMap::new(),
        latency: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
            .expect("valid histogram bounds"),
        last_commit: now,
        assigned_at: now,
        unheard_warned: false,
        report: SourceReport {
            worker,
            ..Default::default()
        },
    }));
    let control = SourceControl {
        inner: inner.clone(),
    };
    let stream = source(scope, "KafkaSource", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap: Option<Capability<u64>> = if np == 0 { None } else { Some(cap) };
        let mut out: BTreeMap<u64, Vec<SourceEvent>> = BTreeMap::new();
        let mut since = SourceStats {
            worker,
            ..Default::default()
        };
        let mut last_data = Instant::now();
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let mut s = inner.borrow_mut();
            let s = &mut *s;
            // Backpressure: forget what the slowest stage has released, pause while too much is outstanding.
            s.prune();
            let paused = s.in_flight_total >= s.cfg.max_in_flight;
            let wm = *c.time();
            let lateness = s.cfg.lateness_epochs;
            let mut read = 0usize;
            if paused {
                s.report.paused_activations += 1;
            }
            if let Some(consumer) = s.consumer.clone() {
                // Events (and messages fetched before the split) on the consumer's own queue.
                while !paused && read < s.cfg.batch {
                    let Some(m) = consumer.poll(Duration::ZERO) else {
                        break;
                    };
                    if !take(s, m, wm, &mut since, &mut out, &mut read) {
                        break;
                    }
                }
                // Then the partitions, furthest behind in event time first, a chunk at a time. A paused source
                // reads only the partitions that hold the watermark back (see the module documentation).
                let queues = std::mem::take(&mut s.queues);
                let mut drained: Vec<bool> = s
                    .parts
                    .iter()
                    .map(|p| paused && !holds_watermark(p, wm, lateness))
                    .collect();
                while read < s.cfg.batch {
                    let Some(pi) = (0..queues.len())
                        .filter(|&i| !drained[i])
                        .min_by_key(|&i| s.parts[i].max_epoch.map_or(-1, |e| e as i128))
                    else {
                        break;
                    };
                    let stop = read + CHUNK.min(s.cfg.batch - read);
                    while read < stop {
                        let Some(m) = queues[pi].poll(Duration::ZERO) else {
                            drained[pi] = true;
                            s.parts[pi].quiet_since.get_or_insert_with(Instant::now);
                            break;
                        };
                        if !take(s, m, wm, &mut since, &mut out, &mut read) {
                            drained[pi] = true;
                            break;
                        }
                    }
                }
                s.queues = queues;
            }
            if read > 0 {
                last_data = Instant::now();
            }
            let read_now = Instant::now();
            for (t, evs) in std::mem::take(&mut out) {
                s.read_at
                    .entry(t)
                    .or_default()
                    .push((read_now, evs.len() as u64));
                let tc = c.delayed(&t);
                output.session(&tc).give_iterator(evs.into_iter());
            }
            // Watermark: see the module documentation.
            let now = Instant::now();
            let (idle_timeout, start_timeout) = (s.cfg.idle_timeout, s.cfg.start_timeout);
            let started = s.assigned_at.elapsed() >= start_timeout;
            if started && !s.unheard_warned {
                let unheard: Vec<i32> = s
                    .parts
                    .iter()
                    .filter(|p| !p.heard)
                    .map(|p| p.partition)
                    .collect();
                if !unheard.is_empty() {
                    s.unheard_warned = true;
                    tracing::warn!(
                        worker = s.worker,
                        "partitions {unheard:?} delivered nothing in the {start_timeout:?} since assignment: they no \
                         longer hold the watermark back, and their flows are late if they deliver after all"
                    );
                }
            }
            let held = s
                .parts
                .iter()
                .filter(|p| !is_idle(p, now, idle_timeout, started))
                .map(|p| hold_point(p, wm, lateness))
                .min();
            let all_done = s
                .parts
                .iter()
                .filter_map(|p| p.max_epoch)
                .max()
                .map_or(wm, |e| (e + 1).max(wm));
            let new_wm = held.map_or(all_done, |h| h.max(wm));
            let finished = s.cfg.stop_at_end
                && s.parts.iter().all(|p| p.eof)
                && last_data.elapsed() >= s.cfg.end_quiet;
            if finished {
                // Batch mode's end declares every epoch seen complete (EOF alone does not make a partition
                // idle): the last account goes out after every flow's time, as an all-idle watermark would.
                c.downgrade(&all_done);
            }
            if new_wm > wm || finished {
                s.report.flows += since.flows;
                s.report.dead += since.dead;
                s.report.late += since.late;
                since.consumed = s
                    .parts
                    .iter()
                    .map(|p| (p.partition, p.next_offset))
                    .collect();
                since.in_flight = s.uncommitted_total;
                output
                    .session(&*c)
                    .give(SourceEvent::Stats(std::mem::replace(
                        &mut since,
                        SourceStats {
                            worker,
                            ..Default::default()
                        },
                    )));
            }
            if finished {
                cap = None;
                return;
            }
            if new_wm > wm {
                c.downgrade(&new_wm);
            }
            if read > 0 {
                activator.activate();
            } else {
                activator.activate_after(Duration::from_millis(if paused { 2 } else { 5 }));
            }
        }
    });
    Ok((stream, control))
}

/// The partition no longer holds the watermark back: every look at its queue found it empty for `idle_timeout`,
/// and it has been heard from since assignment or the start timeout has passed (`started`).
fn is_idle(p: &PartState, now: Instant, idle_timeout: Duration, started: bool) -> bool {
    (p.heard || started)
        && p.quiet_since
            .is_some_and(|q| now.saturating_duration_since(q) >= idle_timeout)
}

/// How far a (non-idle) partition lets the watermark go: its newest epoch less the allowed lateness, or the
/// watermark `wm` itself while it has had no flow.
fn hold_point(p: &PartState, wm: u64, lateness: u64) -> u64 {
    p.max_epoch.map_or(wm, |e| e.saturating_sub(lateness))
}

/// The partition holds the watermark at `wm` back (see [`hold_point`]): reading it is what lets the watermark
/// move.
fn holds_watermark(p: &PartState, wm: u64, lateness: u64) -> bool {
    hold_point(p, wm, lateness) <= wm
}

/// Messages read from one partition before the source looks again for the partition furthest behind.
const CHUNK: usize = 256;

/// Handles one poll result: a flow or a dead letter into `out` at its time, or a partition's end. Returns false on
/// a consumer error (stop reading this queue for this activation).
fn take(
    s: &mut Inner,
    m: KafkaResult<BorrowedMessage<'_>>,
    wm: u64,
    since: &mut SourceStats,
    out: &mut BTreeMap<u64, Vec<SourceEvent>>,
    read: &mut usize,
) -> bool {
    let np = s.parts.len();
    match m {
        Err(KafkaError::PartitionEOF(p)) => {
            if let Some(ps) = s.parts.iter_mut().find(|x| x.partition == p) {
                ps.eof = true;
                ps.heard = true;
            }
            true
        }
        Err(e) => {
            s.report.errors += 1;
            tracing::warn!(worker = s.worker, "kafka consumer error (continuing): {e}");
            false
        }
        Ok(m) => {
            *read += 1;
            let pi = s
                .parts
                .iter()
                .position(|x| x.partition == m.partition())
                .expect("an owned partition");
            let ps = &mut s.parts[pi];
            ps.eof = false;
            ps.heard = true;
            ps.quiet_since = None;
            if ps.first_offset < 0 {
                ps.first_offset = m.offset();
            }
            ps.next_offset = m.offset() + 1;
            s.consumed[pi] += 1;
            let payload = m.payload().unwrap_or_default();
            let (partition, offset) = (m.partition(), m.offset());
            let clock = s.cfg.clock;
            let topic = &s.cfg.topic;
            let (pending, pending_counts, in_flight) =
                (&mut s.pending, &mut s.pending_counts, &mut s.in_flight);
            let mut records = 0u64;
            // Every record of the message holds the message's offset at its time: the offset is committed only
            // once all of them are written.
            let mut keep = |t: u64, ev: SourceEvent| {
                let offs = pending.entry(t).or_insert_with(|| vec![(-1, -1); np]);
                offs[pi] = if offs[pi].0 < 0 {
                    (offset, offset + 1)
                } else {
                    (offs[pi].0.min(offset), offs[pi].1.max(offset + 1))
                };
                *pending_counts.entry(t).or_insert(0) += 1;
                *in_flight.entry(t).or_insert(0) += 1;
                records += 1;
                out.entry(t).or_default().push(ev);
            };
            s.cfg.format.decode_each(payload, |r| match r {
                Ok(r) => {
                    let e = clock.epoch_of(r.start_us);
                    ps.max_epoch = Some(ps.max_epoch.map_or(e, |x| x.max(e)));
                    since.flows += 1;
                    if e < wm {
                        since.late += 1;
                    }
                    keep(e.max(wm), SourceEvent::Flow(r));
                }
                Err(reason) => {
                    since.dead += 1;
                    keep(
                        wm,
                        SourceEvent::Dead(DeadLetter::new(
                            topic, partition, offset, reason, payload,
                        )),
                    );
                }
            });
            s.uncommitted_total += records;
            s.in_flight_total += records;
            true
        }
    }
}

/// Splits a source's events into flows, dead letters and stats.
#[allow(clippy::type_complexity)]
pub fn split<'s>(
    events: Stream<'s, u64, Vec<SourceEvent>>,
) -> (
    Stream<'s, u64, Vec<temponet::FlowRecord>>,
    Stream<'s, u64, Vec<DeadLetter>>,
    Stream<'s, u64, Vec<SourceStats>>,
) {
    use timely::dataflow::operators::OkErr;
    let (flows, rest): (Stream<_, Vec<_>>, Stream<_, Vec<_>>) = events.ok_err(|e| match e {
        SourceEvent::Flow(r) => Ok(r),
        other => Err(other),
    });
    let (dead, stats): (Stream<_, Vec<_>>, Stream<_, Vec<_>>) = rest.ok_err(|e| match e {
        SourceEvent::Dead(d) => Ok(d),
        SourceEvent::Stats(s) => Err(s),
        SourceEvent::Flow(_) => unreachable!("flows were split off first"),
    });
    (flows, dead, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::RDKafkaErrorCode;
    use std::sync::atomic::Ordering;

    /// A commit that librdkafka reports failed after `commit` returned (asynchronous mode) is remembered until the
    /// source's next commit takes it; a successful one leaves nothing to resend.
    #[test]
    fn lost_async_commit_is_remembered() {
        let ctx = SourceContext::default();
        let tpl = TopicPartitionList::new();
        ctx.commit_callback(Ok(()), &tpl);
        assert!(!ctx.commit_failed.load(Ordering::Relaxed));
        ctx.commit_callback(
            Err(KafkaError::ConsumerCommit(
                RDKafkaErrorCode::RebalanceInProgress,
            )),
            &tpl,
        );
        assert!(ctx.commit_failed.swap(false, Ordering::Relaxed));
        assert!(!ctx.commit_failed.load(Ordering::Relaxed));
    }

    fn part(heard: bool, quiet_for: Option<Duration>, now: Instant) -> PartState {
        PartState {
            partition: 0,
            max_epoch: None,
            quiet_since: quiet_for.map(|d| now - d),
            heard,
            eof: false,
            first_offset: -1,
            next_offset: -1,
        }
    }

    /// A partition whose first fetch is slow is not idle, however long its queue has been empty, until the start
    /// timeout: otherwise the watermark runs ahead on its worker's other partitions and all its flows come in late.
    /// Once heard from (a message or its end), the idle timeout alone decides.
    #[test]
    fn a_partition_not_heard_from_holds_the_watermark_until_the_start_timeout() {
        let now = Instant::now();
        let idle = Duration::from_millis(500);
        let long = Some(Duration::from_secs(5));
        assert!(!is_idle(&part(false, long, now), now, idle, false));
        assert!(is_idle(&part(false, long, now), now, idle, true));
        assert!(is_idle(&part(true, long, now), now, idle, false));
        assert!(!is_idle(
            &part(true, Some(Duration::from_millis(100)), now),
            now,
            idle,
            false
        ));
        assert!(!is_idle(&part(true, None, now), now, idle, true));
    }
}
