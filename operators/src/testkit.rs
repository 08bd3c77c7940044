//! Test support (feature `testkit`): a real Tansu Kafka broker on a free loopback port, killed on drop, plus
//! helpers to create topics, produce and read back messages and committed offsets.
//!
//! The broker binary is found through `TEMPONET_TANSU` (the Makefile exports it), else `.tools/tansu` at the
//! workspace root (installed by `scripts/setup.sh`).

use crate::admin::{self, drop_with_timeout};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running Tansu broker (in-memory storage). Killed when dropped.
pub struct Broker {
    child: Child,
    port: u16,
}

/// Where the Tansu binary is.
pub fn tansu_path() -> PathBuf {
    if let Some(p) = std::env::var_os("TEMPONET_TANSU") {
        return PathBuf::from(p);
    }
    // operators/ -> workspace root
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    root.join(".tools/tansu")
}

/// A free TCP port on 127.0.0.1 (bound then released; the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Broker {
    /// Starts Tansu on a free loopback port and waits (up to 20 s) until it answers a metadata request.
    pub fn start() -> Broker {
        let bin = tansu_path();
        assert!(
            bin.exists(),
            "Tansu broker not found at {} (run scripts/setup.sh or set TEMPONET_TANSU)",
            bin.display()
        );
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let child = Command::new(&bin)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                    "--storage-engine",
                    "memory://tansu/",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let mut b = Broker { child, port };
            match b.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return b,
                Err(e) => last_err = e, // dropped: killed; try another port
            }
        }
        panic!("Tansu did not become ready: {last_err}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("broker exited early: {st}"));
            }
            if t0.elapsed() > timeout {
                return Err(format!("port {} not open after {timeout:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The port opens a little before the broker serves requests: ask for metadata until it answers.
        let consumer: BaseConsumer = admin::client_config(&self.brokers())
            .create()
            .map_err(|e| e.to_string())?;
        let mut ok = false;
        while t0.elapsed() < timeout {
            if consumer
                .fetch_metadata(None, Duration::from_millis(500))
                .is_ok()
            {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop_with_timeout(consumer, Duration::from_secs(5));
        if ok {
            Ok(())
        } else {
            Err("no metadata answer".into())
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic with `partitions` partitions (panics on failure: tests want it to exist).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        admin::create_topics(&self.brokers(), &[(topic, partitions)], false)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Produces `(partition, payload)` messages and waits for every acknowledgement (panics on any failure).
    /// Returns the number of messages per partition.
    pub fn produce(
        &self,
        topic: &str,
        messages: impl IntoIterator<Item = (i32, Vec<u8>)>,
    ) -> Vec<u64> {
        let ctx = CountingContext::default();
        let producer: ThreadedProducer<CountingContext> = admin::client_config(&self.brokers())
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(ctx)
            .expect("producer");
        let mut counts: Vec<u64> = Vec::new();
        let mut sent = 0u64;
        for (p, payload) in messages {
            if counts.len() <= p as usize {
                counts.resize(p as usize + 1, 0);
            }
            counts[p as usize] += 1;
            sent += 1;
            let mut rec = BaseRecord::<(), Vec<u8>>::to(topic)
                .partition(p)
                .payload(&payload);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err((e, _)) => panic!("producing to {topic}: {e}"),
                }
            }
        }
        producer
            .flush(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("flushing to {topic}: {e}"));
        let ctx = producer.context().clone();
        assert_eq!(
            ctx.failed.load(Ordering::SeqCst),
            0,
            "deliveries to {topic} failed"
        );
        assert_eq!(
            ctx.delivered.load(Ordering::SeqCst),
            sent,
            "not every message to {topic} was acknowledged"
        );
        drop_with_timeout(producer, Duration::from_secs(10));
        counts
    }

    /// Produces `flows` spread over `partitions` (flow `i` to partition `i % partitions`, each partition's flows in
    /// order), `per_message` to a message in `format`'s multi-flow form. Returns the messages per partition.
    pub fn produce_flows(
        &self,
        topic: &str,
        flows: &[temponet::FlowRecord],
        partitions: usize,
        per_message: usize,
        format: crate::codec::WireFormat,
    ) -> Vec<u64> {
        let mut messages = Vec::new();
        for p in 0..partitions {
            let part: Vec<temponet::FlowRecord> =
                flows.iter().skip(p).step_by(partitions).cloned().collect();
            for chunk in part.chunks(per_message.max(1)) {
                messages.push((p as i32, format.encode_batch(chunk)));
            }
        }
        self.produce(topic, messages)
    }

    /// Reads every message of a topic from the beginning: `(partition, offset, payload)`, stopping once no message
    /// arrived for `quiet` (and each partition reported its end at least once) or after `timeout`.
    pub fn read_all(
        &self,
        topic: &str,
        quiet: Duration,
        timeout: Duration,
    ) -> Vec<(i32, i64, Vec<u8>)> {
        self.read_from_beginning(topic, 0, quiet, timeout)
    }

    /// Reads a topic from the beginning when the caller knows how many messages it holds: waits (up to
    /// `timeout`) for `expected` of them, then `quiet` more to catch any extra (a duplicate would show as more
    /// than `expected`). A quiet spell alone is no proof of the end on a loaded machine, and tansu's end-of-
    /// partition signals follow its high watermarks, which are wrong for batches of several records, so a
    /// known count is the only safe stopping rule. Panics, naming the counts, when `expected` never arrive.
    pub fn read_expecting(
        &self,
        topic: &str,
        expected: usize,
        timeout: Duration,
    ) -> Vec<(i32, i64, Vec<u8>)> {
        let out = self.read_from_beginning(topic, expected, Duration::from_millis(500), timeout);
        assert!(
            out.len() >= expected,
            "{topic}: read {} of {expected} messages in {timeout:?}",
            out.len()
        );
        out
    }

    fn read_from_beginning(
        &self,
        topic: &str,
        at_least: usize,
        quiet: Duration,
        timeout: Duration,
    ) -> Vec<(i32, i64, Vec<u8>)> {
        let consumer: BaseConsumer = admin::client_config(&self.brokers())
            .set("group.id", format!("testkit-reader-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .expect("consumer");
        let n = admin::partition_count(&consumer, &self.brokers(), topic, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut tpl = TopicPartitionList::new();
        for p in 0..n {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let mut eof = vec![false; n as usize];
        let t0 = Instant::now();
        let mut last = Instant::now();
        while t0.elapsed() < timeout {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    eof[m.partition() as usize] = false;
                    out.push((
                        m.partition(),
                        m.offset(),
                        m.payload().unwrap_or_default().to_vec(),
                    ));
                    last = Instant::now();
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => eof[p as usize] = true,
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {
                    if out.len() >= at_least && eof.iter().all(|e| *e) && last.elapsed() >= quiet {
                        break;
                    }
                }
            }
        }
        drop_with_timeout(consumer, Duration::from_secs(10));
        out
    }

    /// Committed offsets of a group on each partition of a topic.
    pub fn committed(&self, group: &str, topic: &str) -> Vec<Option<i64>> {
        admin::committed_offsets(&self.brokers(), group, topic).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Counts acknowledged and failed deliveries of the test producer.
#[derive(Clone, Default)]
struct CountingContext {
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}
impl ClientContext for CountingContext {}
impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.delivered.fetch_add(1, Ordering::SeqCst),
            Err(_) => self.failed.fetch_add(1, Ordering::SeqCst),
        };
    }
}
