//! Throughput and latency from Kafka into pair state, training off (no hook), on a real Tansu broker.
//!
//! - `kafka_to_pair_state/{bincode,json}[x64]/w{1,2}`: one iteration = a whole pipeline run (fresh consumer group)
//!   over a pre-produced 2-partition topic of 400 k flows one per message, or 2 M flows 64 per message (`x64`:
//!   JSON lines or back-to-back bincode in one message), until the end, with 1 or 2 workers. Includes consumer
//!   start-up and the end-of-input quiet period (50 ms), so it slightly understates steady-state throughput.
//! - `pair_history_only/w{1,2}`: the same flows fed from memory into `pair_history` (no Kafka, no decoding): the
//!   operator's own ceiling.
//! - `raw_consumer/t{1,2}`: bare rdkafka consumers reading the same topic, nothing else: the broker's and
//!   librdkafka's ceiling on this machine.
//!
//! - `kafka_end_to_end/[x64/]w{1,2}`: Kafka in, model stages on (an independent-marginals model built from the
//!   first flows and trained online, parameter averaging, a synthetic twin per pair, fidelity sketches), synthetic
//!   flows and metrics out to Kafka, until the end of the topic; one flow per message in and out, or 64 (`x64`).
//!
//! After each Kafka group, the last run's flows/s and read-to-pair-state latency (p50/p99, hdrhistogram) are
//! printed. Event-time epochs are 1 s and the flows are 10 k/s of event time, so a flow waits for its epoch to
//! close (the watermark) before it is absorbed: latency is dominated by that batching, not by the operators.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use temponet::{FlowRecord, TcpFlags};
use temponet_operators::codec::WireFormat;
use temponet_operators::pair_history::{HistoryConfig, pair_history};
use temponet_operators::plugs::NoHook;
use temponet_operators::testkit::Broker;
use temponet_pipelines::dataflow::{self, RunConfig, RunReport};
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandle, ProbeHandle};

const FLOWS: usize = 400_000;
/// Flows per message in the batched variants.
const BATCH: usize = 64;

/// Flows of the batched (`x64`) variants: 2 M under `cargo bench`, so that a run's fixed costs (consumer group
/// join, model warm-up, the last window's flush, consumer and producer shutdown: about 0.15-0.3 s) weigh little
/// beside a steady stream of over 1 M flows/s; [`FLOWS`] when `cargo test` runs the benches once as tests.
fn batched_flows() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        2_000_000
    } else {
        FLOWS
    }
}

/// The flows of a variant: all of `data` when batched, the first [`FLOWS`] at one flow per message (at ~250 k
/// messages/s the fixed costs are small already).
fn variant_flows(data: &[FlowRecord], per_message: usize) -> &[FlowRecord] {
    &data[..if per_message == 1 { FLOWS } else { data.len() }]
}

fn flows(n: usize) -> Vec<FlowRecord> {
    (0..n)
        .map(|i| {
            let i = i as u32;
            FlowRecord {
                start_us: 1_600_000_000_000_000 + i as i64 * 100,
                duration_us: 1_000 + (i % 5000) as u64,
                src: IpAddr::V4(Ipv4Addr::from(
                    0x0a00_0000 + (i.wrapping_mul(2_654_435_761) % 5_000),
                )),
                dst: IpAddr::V4(Ipv4Addr::new(192, 168, 1, (i % 16) as u8)),
                src_port: 32_768 + (i % 20_000) as u16,
                dst_port: [53, 80, 443, 8080][(i % 4) as usize],
                proto: 6,
                flags: TcpFlags(0x1b),
                packets: 1 + (i % 40) as u64,
                bytes: 60 + (i % 4000) as u64,
                label: None,
            }
        })
        .collect()
}

/// Batch-mode settings shared by the Kafka benches: read the topic to its end with a fresh group, short end
/// and idle waits.
fn batch_config(broker: &Broker, topic: &str, out: &str, metrics: &str, group: &str) -> RunConfig {
    let mut cfg = RunConfig::new(&broker.brokers(), topic, out, metrics);
    cfg.group = group.into();
    cfg.until_end = true;
    cfg.end_quiet = Duration::from_millis(50);
    cfg.idle_timeout = Duration::from_millis(200);
    cfg.window_epochs = 10;
    cfg
}

/// `iters` whole pipeline runs with `workers` workers, each on a fresh config from `next`; their summed wall
/// time. Every run must absorb all `flows` flows; the last run's report is kept for printing.
fn timed_runs(
    iters: u64,
    workers: usize,
    flows: usize,
    last: &mut Option<RunReport>,
    mut next: impl FnMut() -> RunConfig,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let cfg = next();
        let timely = if workers == 1 {
            timely::Config::thread()
        } else {
            timely::Config::process(workers)
        };
        let t = Instant::now();
        let rep = dataflow::run(timely, cfg).expect("pipeline run");
        total += t.elapsed();
        assert_eq!(rep.flows_absorbed, flows as u64);
        *last = Some(rep);
    }
    total
}

/// Benchmarks `{prefix}w1` and `{prefix}w2`: whole runs over a topic of `flows` flows on configs from
/// `make(run number)` (each run a fresh consumer group), then `report(workers, last run)`.
fn bench_worker_counts(
    g: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    prefix: &str,
    flows: usize,
    mut make: impl FnMut(u64) -> RunConfig,
    report: impl Fn(usize, &RunReport),
) {
    let mut runs = 0u64;
    g.throughput(Throughput::Elements(flows as u64));
    for workers in [1usize, 2] {
        let mut last = None;
        g.bench_function(format!("{prefix}w{workers}"), |b| {
            b.iter_custom(|iters| {
                timed_runs(iters, workers, flows, &mut last, || {
                    runs += 1;
                    make(runs)
                })
            })
        });
        if let Some(r) = &last {
            report(workers, r);
        }
    }
}

/// Creates a 2-partition topic and writes the flows to it: flow i to partition i % 2, each partition's flows in
/// order, `per_message` to a message.
fn produce_topic(
    broker: &Broker,
    topic: &str,
    format: WireFormat,
    per_message: usize,
    data: &[FlowRecord],
) {
    broker.create_topic(topic, 2);
    let t0 = Instant::now();
    let n_messages: u64 = broker
        .produce_flows(topic, data, 2, per_message, format)
        .iter()
        .sum();
    eprintln!(
        "produced {} {format:?} flows in {n_messages} messages in {:.1} s",
        data.len(),
        t0.elapsed().as_secs_f64()
    );
}

fn kafka(c: &mut Criterion) {
    let broker = Broker::start();
    let data = flows(batched_flows());
    let mut g = c.benchmark_group("kafka_to_pair_state");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(20));
    // One flow per message, and 64 per message (JSON lines / back-to-back bincode, as batching exporters write).
    for (format, per_message) in [
        (WireFormat::Bincode, 1usize),
        (WireFormat::Json, 1),
        (WireFormat::Bincode, BATCH),
        (WireFormat::Json, BATCH),
    ] {
        let name = if per_message == 1 {
            format!("{format:?}").to_lowercase()
        } else {
            format!("{format:?}x{per_message}").to_lowercase()
        };
        let topic = format!("bench-{name}");
        let data = variant_flows(&data, per_message);
        produce_topic(&broker, &topic, format, per_message, data);
        bench_worker_counts(
            &mut g,
            &format!("{name}/"),
            data.len(),
            |run| {
                let mut cfg = batch_config(
                    &broker,
                    &topic,
                    "bench-out",
                    "bench-metrics",
                    &format!("{topic}-{run}"),
                );
                cfg.dead_letter_topic = "bench-dead".into();
                cfg.format = format;
                dataflow::ensure_sink_topics(&cfg, 1).unwrap();
                cfg
            },
            |workers, r| {
                eprintln!(
                    "kafka->pair state {name} w{workers}: {:.0} flows/s ({:.0} per worker), latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
                    r.flows_per_s,
                    r.flows_per_s / workers as f64,
                    r.latency_p50_us as f64 / 1e3,
                    r.latency_p99_us as f64 / 1e3,
                    r.latency_max_us as f64 / 1e3
                )
            },
        );
    }
    g.finish();
}

fn in_memory(c: &mut Criterion) {
    let data = std::sync::Arc::new(flows(FLOWS));
    let mut g = c.benchmark_group("pair_history_only");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(FLOWS as u64));
    for workers in [1usize, 2] {
        g.bench_function(format!("w{workers}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let data = data.clone();
                    let timely = if workers == 1 {
                        timely::Config::thread()
                    } else {
                        timely::Config::process(workers)
                    };
                    let t = Instant::now();
                    timely::execute(timely, move |worker| {
                        let mut input = InputHandle::new();
                        let probe = ProbeHandle::new();
                        worker.dataflow::<u64, _, _>(|scope| {
                            pair_history(input.to_stream(scope), HistoryConfig::default(), NoHook)
                                .0
                                .probe_with(&probe);
                        });
                        // Each worker feeds its share, epoch by epoch (1 s of event time).
                        let (i, n) = (worker.index(), worker.peers());
                        let mut epoch = 0u64;
                        for r in data.iter().skip(i).step_by(n) {
                            let e = (r.start_us / 1_000_000) as u64;
                            if e > epoch {
                                input.advance_to(e);
                                epoch = e;
                            }
                            input.send(r.clone());
                        }
                        input.close();
                        worker.step_while(|| !probe.done());
                    })
                    .unwrap()
                    .join();
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

/// The ceiling set by the broker and librdkafka alone: one bare consumer per partition thread reading the topic
/// (no decoding, no dataflow), 1 and 2 threads.
fn raw_consumer(c: &mut Criterion) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let broker = Broker::start();
    broker.create_topic("raw", 2);
    let data = flows(FLOWS);
    broker.produce(
        "raw",
        data.iter()
            .enumerate()
            .map(|(i, r)| ((i % 2) as i32, WireFormat::Bincode.encode(r))),
    );
    let mut g = c.benchmark_group("raw_consumer");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(FLOWS as u64));
    let brokers = broker.brokers();
    for threads in [1usize, 2] {
        g.bench_function(format!("t{threads}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let handles: Vec<_> = (0..threads)
                        .map(|k| {
                            let brokers = brokers.clone();
                            std::thread::spawn(move || {
                                let consumer: BaseConsumer =
                                    temponet_operators::admin::client_config(&brokers)
                                        .set("group.id", "raw")
                                        .set("enable.auto.commit", "false")
                                        .set("fetch.wait.max.ms", "50")
                                        .create()
                                        .unwrap();
                                let mut tpl = TopicPartitionList::new();
                                for p in (0..2).filter(|p| p % threads == k) {
                                    tpl.add_partition_offset("raw", p as i32, Offset::Beginning)
                                        .unwrap();
                                }
                                consumer.assign(&tpl).unwrap();
                                let want = FLOWS / threads;
                                let mut n = 0;
                                let mut bytes = 0usize;
                                while n < want {
                                    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                                        use rdkafka::message::Message;
                                        bytes += m.payload().map_or(0, |p| p.len());
                                        n += 1;
                                    }
                                }
                                temponet_operators::admin::drop_with_timeout(
                                    consumer,
                                    Duration::from_secs(5),
                                );
                                bytes
                            })
                        })
                        .collect();
                    for h in handles {
                        h.join().unwrap();
                    }
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

/// Kafka to Kafka with training and generation on: one flow per message in and out, and 64 per message in and
/// out (`x64`: the input as batching exporters write it, `--output-batch 64` on the output).
fn end_to_end(c: &mut Criterion) {
    use temponet::model::{ModelConfig, ModelKind};
    // The pipeline's warnings (a stalled run says what it waits on).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let broker = Broker::start();
    let data = flows(batched_flows());
    let mut g = c.benchmark_group("kafka_end_to_end");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(30));
    for per_message in [1usize, BATCH] {
        let topic = format!("e2e-{per_message}");
        let data = variant_flows(&data, per_message);
        produce_topic(&broker, &topic, WireFormat::Bincode, per_message, data);
        let name = if per_message == 1 {
            String::new()
        } else {
            format!("x{per_message}/")
        };
        bench_worker_counts(
            &mut g,
            &name,
            data.len(),
            |run| {
                let mut cfg = batch_config(
                    &broker,
                    &topic,
                    &format!("{topic}-out-{run}"),
                    "e2e-metrics",
                    &format!("{topic}-{run}"),
                );
                cfg.dead_letter_topic = "e2e-dead".into();
                cfg.format = WireFormat::Bincode;
                cfg.output_batch = per_message;
                let mut m = temponet_pipelines::model_stages::ModelStagesConfig::from_warmup(
                    ModelKind::Independent,
                    ModelConfig::default(),
                    10_000,
                    1,
                    cfg.clock,
                );
                m.trainer.average_every = 5;
                cfg.model = Some(m);
                dataflow::ensure_sink_topics(&cfg, 2).unwrap();
                cfg
            },
            |workers, r| {
                let (messages, records) = r
                    .workers
                    .iter()
                    .flat_map(|w| w.sinks.iter())
                    .fold((0, 0), |a, s| {
                        (a.0 + s.delivered, a.1 + s.delivered_records)
                    });
                eprintln!(
                    "kafka end to end {name}w{workers}: {:.0} flows/s in ({:.0} per worker), {records} records out in {messages} messages, latency p50 {:.1} ms p99 {:.1} ms",
                    r.flows_per_s,
                    r.flows_per_s / workers as f64,
                    r.latency_p50_us as f64 / 1e3,
                    r.latency_p99_us as f64 / 1e3,
                )
            },
        );
    }
    g.finish();
}

criterion_group!(benches, in_memory, raw_consumer, kafka, end_to_end);
criterion_main!(benches);
