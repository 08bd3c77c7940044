//! The streaming dataflow of `temponet run` with Kafka:
//!
//! ```text
//! kafka_source ─┬─ flows ─> pair_history ─┬─ fresh windows ─> model stages ─ synthetic flows ─> message_batches ─> kafka_sink(output topic)
//!               │                         └─ stats ─┐        (trainer, averaging, generator; see model_stages)
//!               ├─ stats ──────────────────────────┴─> window_metrics ─> kafka_sink(metrics topic)
//!               └─ dead letters ─> kafka_sink(dead-letter topic)
//! clock_source (pure generation, no input topic) ─> generator ticks
//! ```
//!
//! Probes: `absorbed` after `pair_history` (the source's backpressure), `written` after the three sinks and the
//! model stages (the source commits a partition's offsets only for epochs that probe has passed: at-least-once; an
//! epoch's offsets are therefore committed only after its synthetic flows and its metrics record were written).
//!
//! Without a model ([`RunConfig::model`] `None`) the pipeline only keeps pair state and metrics (the ingest
//! benchmark's configuration) and the output topic stays empty.

use crate::model_stages::{ModelStagesConfig, model_stages};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use temponet::{FlowRecord, HostPair};
use temponet_operators::clock_source::{ClockConfig, clock_source};
use temponet_operators::codec::WireFormat;
use temponet_operators::fidelity::{FidelityConfig, fidelity};
use temponet_operators::fresh_windows::MaybeWindows;
use temponet_operators::kafka_sink::{Encoded, KafkaSinkConfig, SinkReport, kafka_sink};
use temponet_operators::kafka_source::{KafkaSourceConfig, SourceReport, kafka_source, split};
use temponet_operators::message_batches::message_batches;
use temponet_operators::pair_history::{HistoryConfig, HistoryOut, pair_history};
use temponet_operators::plugs::NoObserver;
use temponet_operators::window_metrics::{WindowInput, window_metrics};
use temponet_operators::{EpochClock, admin};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Probe, ToStream};
use timely::dataflow::{ProbeHandle, Stream};

/// Everything `temponet run` needs besides timely's own configuration.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub brokers: String,
    pub input_topic: String,
    pub output_topic: String,
    pub metrics_topic: String,
    pub dead_letter_topic: String,
    pub group: String,
    pub format: WireFormat,
    /// Synthetic flows per output message (1: one flow per message; more: JSON lines or bincode records back to
    /// back, as the source reads them).
    pub output_batch: usize,
    pub clock: EpochClock,
    /// Epochs per metrics window.
    pub window_epochs: u64,
    pub lateness_epochs: u64,
    pub idle_timeout: Duration,
    /// How long a partition not heard from since assignment holds the watermark back, however quiet.
    pub start_timeout: Duration,
    pub max_in_flight: u64,
    pub history: HistoryConfig,
    /// Finish once every partition is read to its end (batch mode) instead of running forever.
    pub until_end: bool,
    /// In batch mode, how long every partition must stay at its end before the source finishes.
    pub end_quiet: Duration,
    /// Keep each worker's per-pair counts in its report (tests).
    pub collect_pairs: bool,
    /// Train and generate (None: pair state and metrics only).
    pub model: Option<ModelStagesConfig>,
    /// How pair histories become model windows.
    pub windows: temponet_operators::fresh_windows::FreshWindows,
    /// Pure generation: no input topic, epochs from this clock.
    pub generate: Option<ClockConfig>,
}

impl RunConfig {
    pub fn new(brokers: &str, input_topic: &str, output_topic: &str, metrics_topic: &str) -> Self {
        RunConfig {
            brokers: brokers.into(),
            input_topic: input_topic.into(),
            output_topic: output_topic.into(),
            metrics_topic: metrics_topic.into(),
            dead_letter_topic: format!("{input_topic}-dead-letters"),
            group: "temponet".into(),
            format: WireFormat::Json,
            output_batch: 1,
            clock: EpochClock::default(),
            window_epochs: 60,
            lateness_epochs: 2,
            idle_timeout: Duration::from_millis(500),
            start_timeout: Duration::from_secs(10),
            max_in_flight: 500_000,
            history: HistoryConfig::default(),
            until_end: false,
            end_quiet: Duration::from_millis(300),
            collect_pairs: false,
            model: None,
            windows: Default::default(),
            generate: None,
        }
    }
}

/// What one worker did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerReport {
    pub worker: usize,
    pub source: SourceReport,
    pub sinks: Vec<SinkReport>,
    /// Pairs held at the end, and the flows they account for.
    pub pairs: u64,
    pub pair_flows: u64,
    /// Flows absorbed into pair state (= `pair_flows + evicted_flows`).
    pub flows_absorbed: u64,
    pub evictions: u64,
    pub evicted_flows: u64,
    pub peak_pair_bytes: u64,
    /// Order-independent digest of (pair, flow count) over the pairs held: equal across any worker/process layout
    /// that saw the same flows (summed with wrapping addition).
    pub pair_digest: u64,
    /// Per-pair flow counts (only with `collect_pairs`).
    pub pair_counts: Vec<(HostPair, u64)>,
    pub elapsed_s: f64,
    /// Read-to-pair-state latency, V2-deflate serialised hdrhistogram (microseconds).
    #[serde(with = "hist_bytes")]
    pub latency: Histogram<u64>,
}

mod hist_bytes {
    use hdrhistogram::Histogram;
    use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
    pub fn serialize<S: serde::Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = Vec::new();
        V2DeflateSerializer::new()
            .serialize(h, &mut buf)
            .map_err(serde::ser::Error::custom)?;
        s.serialize_bytes(&buf)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let buf: Vec<u8> = serde::Deserialize::deserialize(d)?;
        Deserializer::new()
            .deserialize(&mut &buf[..])
            .map_err(serde::de::Error::custom)
    }
}

/// The merged account of a process's workers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunReport {
    pub workers: Vec<WorkerReport>,
    pub flows: u64,
    pub dead: u64,
    pub late: u64,
    pub pairs: u64,
    pub pair_flows: u64,
    pub flows_absorbed: u64,
    pub evictions: u64,
    pub pair_digest: u64,
    pub elapsed_s: f64,
    pub flows_per_s: f64,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub latency_max_us: u64,
}

impl RunReport {
    pub fn merge(workers: Vec<WorkerReport>) -> RunReport {
        let mut lat = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        for w in &workers {
            lat.add(&w.latency).expect("same bounds");
        }
        let sum = |f: fn(&WorkerReport) -> u64| workers.iter().map(f).sum::<u64>();
        let elapsed_s = workers.iter().map(|w| w.elapsed_s).fold(0.0, f64::max);
        let flows = sum(|w| w.source.flows);
        RunReport {
            flows,
            dead: sum(|w| w.source.dead),
            late: sum(|w| w.source.late),
            pairs: sum(|w| w.pairs),
            pair_flows: sum(|w| w.pair_flows),
            flows_absorbed: sum(|w| w.flows_absorbed),
            evictions: sum(|w| w.evictions),
            pair_digest: workers
                .iter()
                .fold(0u64, |a, w| a.wrapping_add(w.pair_digest)),
            elapsed_s,
            flows_per_s: flows as f64 / elapsed_s.max(1e-9),
            latency_p50_us: lat.value_at_quantile(0.5),
            latency_p99_us: lat.value_at_quantile(0.99),
            latency_max_us: lat.max(),
            workers,
        }
    }
}

fn pair_digest(pair: &HostPair, count: u64) -> u64 {
    let mut h = pair.stable_hash() ^ count.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 31;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 29)
}

/// Creates the topics the pipeline writes to, when missing (metrics and dead letters: 1 partition; output: as many
/// as the input has, at least 1).
pub fn ensure_sink_topics(cfg: &RunConfig, output_partitions: i32) -> anyhow::Result<()> {
    admin::create_topics(
        &cfg.brokers,
        &[
            (&cfg.output_topic, output_partitions.max(1)),
            (&cfg.metrics_topic, 1),
            (&cfg.dead_letter_topic, 1),
        ],
        true,
    )
    .context("creating the output, metrics and dead-letter topics")
}

/// Builds and runs the dataflow on one worker, until the input is exhausted (`until_end`), the generation span is
/// done, or forever.
pub fn run_worker(
    worker: &mut timely::worker::Worker,
    cfg: &RunConfig,
) -> anyhow::Result<WorkerReport> {
    let t0 = Instant::now();
    let index = worker.index();
    let absorbed = ProbeHandle::<u64>::new();
    let written = ProbeHandle::<u64>::new();
    // Backpressure of pure generation: the synthetic sink (the metrics hold epochs back for their window).
    let generated = ProbeHandle::<u64>::new();
    // Backpressure of the Kafka source: the stateful stage and, when on, the model stages (see `kafka_source`).
    let released = ProbeHandle::<u64>::new();
    let mut src_cfg = KafkaSourceConfig::new(&cfg.brokers, &cfg.input_topic, &cfg.group);
    src_cfg.format = cfg.format;
    src_cfg.clock = cfg.clock;
    src_cfg.lateness_epochs = cfg.lateness_epochs;
    src_cfg.idle_timeout = cfg.idle_timeout;
    src_cfg.start_timeout = cfg.start_timeout;
    src_cfg.max_in_flight = cfg.max_in_flight;
    src_cfg.stop_at_end = cfg.until_end;
    src_cfg.end_quiet = cfg.end_quiet;
    let hook = MaybeWindows(cfg.model.as_ref().map(|_| cfg.windows));
    let built = worker.dataflow::<u64, _, _>(|scope| -> anyhow::Result<_> {
        let (events, control, ticks) = match cfg.generate {
            None => {
                let (events, control) =
                    kafka_source(scope, src_cfg, absorbed.clone(), released.clone())
                        .context("starting the Kafka source")?;
                (events, Some(control), Vec::<()>::new().to_stream(scope))
            }
            Some(clock) => (
                Vec::<temponet_operators::SourceEvent>::new().to_stream(scope),
                None,
                clock_source(scope, clock, generated.clone()),
            ),
        };
        let (flows, dead, src_stats) = split(events);
        let (hist_out, shard) = pair_history(flows.clone(), cfg.history, hook);
        // The probe reads the small stats stream (same frontier as the pair_history output): a probe on the output
        // itself would be a second reader of the windows, which timely serves with a copy of each.
        let (windows, hist_stats) = split_history(hist_out);
        let hist_stats = hist_stats.probe_with(&absorbed).probe_with(&released);
        let stats = src_stats
            .map(WindowInput::Source)
            .concat(hist_stats.map(WindowInput::History));
        let (synthetic, stats) = match &cfg.model {
            Some(m) => {
                let mut s = model_stages(flows.clone(), windows, ticks, m)?;
                // Backpressure waits for the model stages too (the trainer's and the generator's progress).
                s.synthetic = s.synthetic.probe_with(&released);
                s.stats = s.stats.probe_with(&released);
                let figures = fidelity(
                    flows,
                    s.synthetic.clone(),
                    cfg.clock,
                    FidelityConfig {
                        window_epochs: cfg.window_epochs,
                        ..FidelityConfig::default()
                    },
                );
                let stats = stats
                    .concat(s.stats.map(WindowInput::Model))
                    .concat(figures.map(WindowInput::Fidelity));
                (s.synthetic, stats)
            }
            None => {
                drop(windows);
                (Vec::<FlowRecord>::new().to_stream(scope), stats)
            }
        };
        let metrics = window_metrics(stats, cfg.clock, cfg.window_epochs, NoObserver);
        let format = cfg.format;
        let (m_done, m_sink) = kafka_sink(
            metrics,
            KafkaSinkConfig::new(&cfg.brokers, &cfg.metrics_topic),
            |s: &String| Encoded::one(s.clone().into_bytes()),
        )?;
        let (d_done, d_sink) = kafka_sink(
            dead,
            KafkaSinkConfig::new(&cfg.brokers, &cfg.dead_letter_topic),
            |d| Encoded {
                key: Some(format!("{}/{}", d.partition, d.offset).into_bytes()),
                payload: d.to_json().into_bytes(),
                records: 1,
            },
        )?;
        let (o_done, o_sink) = kafka_sink(
            message_batches(synthetic, cfg.output_batch),
            KafkaSinkConfig::new(&cfg.brokers, &cfg.output_topic),
            move |rs: &Vec<FlowRecord>| Encoded {
                key: None,
                payload: format.encode_batch(rs),
                records: rs.len() as u64,
            },
        )?;
        let o_done = o_done.probe_with(&generated);
        m_done.concat(d_done).concat(o_done).probe_with(&written);
        Ok((control, shard, vec![m_sink, d_sink, o_sink]))
    });
    let (control, shard, sinks) = built?;
    let mut result = Ok(());
    // A run that makes no progress for a while with flows in flight says what it waits on: it should never
    // happen, and this is how one would find out why. A quiet input is not a stall, and neither is a live epoch
    // still open: the wait is at least a few epochs of wall time (live event time runs at wall-clock pace).
    let stall_after =
        STALL_WARNING.max(3 * Duration::from_micros(cfg.clock.epoch_us) + cfg.idle_timeout);
    let frontiers = || {
        let f = |p: &ProbeHandle<u64>| p.with_frontier(|f| f.first().copied());
        (f(&absorbed), f(&generated), f(&written))
    };
    let (mut last_frontiers, mut last_change) = (frontiers(), Instant::now());
    while !written.done() {
        worker.step_or_park(Some(Duration::from_millis(1)));
        let now = frontiers();
        if now != last_frontiers {
            (last_frontiers, last_change) = (now, Instant::now());
        } else if last_change.elapsed() >= stall_after
            && let Some(c) = control.as_ref().filter(|c| c.in_flight() > 0)
        {
            last_change = Instant::now();
            tracing::warn!(
                worker = index,
                "no progress for {stall_after:?} with flows in flight: frontiers absorbed/generated/written {now:?}; source: {}; sinks: {:?}",
                c.status(),
                sinks.iter().map(|s| s.report()).collect::<Vec<_>>()
            );
        }
        if let Some(c) = &control
            && let Err(e) = c.commit_completed(&written, false)
        {
            result = Err(e);
        }
    }
    if let Some(c) = &control {
        c.commit_completed(&written, true)
            .context("final offset commit")?;
    }
    result.context("offset commit")?;
    for s in &sinks {
        s.shutdown(Duration::from_secs(10));
    }
    if let Some(c) = &control {
        c.shutdown(Duration::from_secs(10));
    }
    let s = shard.borrow();
    let pair_counts: Vec<(HostPair, u64)> = if cfg.collect_pairs {
        s.pairs.iter().map(|(p, st)| (*p, st.total)).collect()
    } else {
        Vec::new()
    };
    Ok(WorkerReport {
        worker: index,
        source: control.as_ref().map(|c| c.report()).unwrap_or_default(),
        sinks: sinks.iter().map(|s| s.report()).collect(),
        pairs: s.pairs.len() as u64,
        pair_flows: s.pairs.values().map(|p| p.total).sum(),
        flows_absorbed: s.flows_total,
        evictions: s.evictions_total,
        evicted_flows: s.evicted_flows_total,
        peak_pair_bytes: s.peak_bytes as u64,
        pair_digest: s
            .pairs
            .iter()
            .fold(0u64, |a, (p, st)| a.wrapping_add(pair_digest(p, st.total))),
        pair_counts,
        elapsed_s: t0.elapsed().as_secs_f64(),
        latency: control.as_ref().map(|c| c.latency()).unwrap_or_else(|| {
            Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
        }),
    })
}

/// How long a run may go without any probe moving, flows in flight, before it logs what it waits on (at least;
/// longer with long epochs).
const STALL_WARNING: Duration = Duration::from_secs(10);

#[allow(clippy::type_complexity)]
fn split_history<'s, O: timely::ExchangeData + Clone>(
    s: Stream<'s, u64, Vec<HistoryOut<O>>>,
) -> (
    Stream<'s, u64, Vec<O>>,
    Stream<'s, u64, Vec<temponet_operators::pair_history::HistoryStats>>,
) {
    use timely::dataflow::operators::OkErr;
    s.ok_err(|o| match o {
        HistoryOut::Hook(x) => Ok(x),
        HistoryOut::Stats(st) => Err(st),
    })
}

/// Runs the pipeline on `timely` (workers, processes) and returns this process's merged report.
pub fn run(timely: timely::Config, cfg: RunConfig) -> anyhow::Result<RunReport> {
    crate::allocator::keep_freed_memory();
    let cfg = Arc::new(cfg);
    let guards = timely::execute(timely, move |worker| {
        run_worker(worker, &cfg).map_err(|e| format!("{e:#}"))
    })
    .map_err(|e| anyhow::anyhow!("starting timely: {e}"))?;
    let mut reports = Vec::new();
    for r in guards.join() {
        let r = r.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?;
        reports.push(r.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))?);
    }
    Ok(RunReport::merge(reports))
}
