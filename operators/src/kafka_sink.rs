//! `kafka_sink`: writes a stream to a Kafka topic and reports, per timely time, when everything of that time has
//! been acknowledged by the broker.
//!
//! # Invariants
//! - Every datum is sent; a failed delivery (after librdkafka's own retries) is sent again, up to `max_retries`
//!   times, with each failure counted and logged. When a message still cannot be delivered the worker panics with
//!   the topic and the error: nothing is ever dropped silently, and since its time never completes, the source never
//!   commits the offsets behind it (they are replayed on restart).
//! - A datum is one message; [`Encoded::records`] says how many records it carries (a batch of flows), so the
//!   report counts both messages and records.
//! - The output stream carries, at time `t`, the number of messages of time `t` written; its frontier passes `t`
//!   only once the input frontier has passed `t` **and** every message of `t` is acknowledged. Put the `written`
//!   probe of the Kafka source after this output.

use crate::admin;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

/// Configuration of [`kafka_sink`].
#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    pub brokers: String,
    pub topic: String,
    /// Deliveries of one message retried after a failure before the worker gives up (panics).
    pub max_retries: u32,
    /// Extra librdkafka producer settings.
    pub producer_overrides: Vec<(String, String)>,
}

impl KafkaSinkConfig {
    pub fn new(brokers: &str, topic: &str) -> Self {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            max_retries: 10,
            producer_overrides: Vec::new(),
        }
    }
}

/// Counts of one worker's sink.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SinkReport {
    pub topic: String,
    pub sent: u64,
    pub delivered: u64,
    /// Records in the delivered messages (more than `delivered` when messages carry batches).
    #[serde(default)]
    pub delivered_records: u64,
    /// Deliveries that failed and were sent again.
    pub retried: u64,
}

/// One message to write: its key, its payload and the number of records in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub records: u64,
}

impl Encoded {
    /// A message of one record without a key.
    pub fn one(payload: Vec<u8>) -> Encoded {
        Encoded {
            key: None,
            payload,
            records: 1,
        }
    }
}

/// What rides with a message through librdkafka: its time, the attempts so far, and its record count.
type Opaque = Box<(u64, u32, u64)>;

enum Ack {
    Ok {
        time: u64,
        records: u64,
    },
    Failed {
        time: u64,
        attempts: u32,
        message: Encoded,
        error: KafkaError,
    },
}

#[derive(Default)]
struct SinkContext {
    acks: Mutex<Vec<Ack>>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = Opaque;
    fn delivery(&self, r: &DeliveryResult<'_>, opaque: Opaque) {
        let (time, attempts, records) = *opaque;
        let ack = match r {
            Ok(_) => Ack::Ok { time, records },
            Err((error, m)) => Ack::Failed {
                time,
                attempts,
                message: Encoded {
                    key: m.key().map(|k| k.to_vec()),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    records,
                },
                error: error.clone(),
            },
        };
        self.acks.lock().expect("ack lock").push(ack);
    }
}

/// The driver's side of a sink: its counts, and shutdown with a timeout.
#[derive(Clone)]
pub struct SinkHandle {
    producer: Rc<RefCell<Option<BaseProducer<SinkContext>>>>,
    report: Rc<RefCell<SinkReport>>,
}

impl SinkHandle {
    pub fn report(&self) -> SinkReport {
        self.report.borrow().clone()
    }
    /// Flushes and closes the producer, waiting at most `timeout` in all.
    pub fn shutdown(&self, timeout: Duration) {
        if let Some(p) = self.producer.borrow_mut().take() {
            if let Err(e) = p.flush(timeout) {
                tracing::warn!("flushing the producer: {e}");
            }
            admin::drop_with_timeout(p, timeout);
        }
    }
}

fn send(
    producer: &BaseProducer<SinkContext>,
    topic: &str,
    time: u64,
    attempts: u32,
    message: &Encoded,
    on_full: &mut dyn FnMut(),
) {
    let mut rec = BaseRecord::with_opaque_to(topic, Box::new((time, attempts, message.records)))
        .payload(&message.payload);
    if let Some(k) = &message.key {
        rec = rec.key(k);
    }
    loop {
        match producer.send(rec) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                rec = back;
                producer.poll(Duration::from_millis(1));
                on_full();
            }
            Err((e, _)) => panic!("kafka sink: cannot enqueue a message for topic {topic}: {e}"),
        }
    }
}

/// Builds the sink. `encode` turns a datum into one message.
pub fn kafka_sink<'s, D, F>(
    stream: Stream<'s, u64, Vec<D>>,
    cfg: KafkaSinkConfig,
    mut encode: F,
) -> Result<(Stream<'s, u64, Vec<u64>>, SinkHandle), KafkaError>
where
    D: timely::ExchangeData + Clone,
    F: FnMut(&D) -> Encoded + 'static,
{
    let mut pc = admin::client_config(&cfg.brokers);
    pc.set("linger.ms", "5")
        .set("queue.buffering.max.messages", "500000")
        .set("message.timeout.ms", "30000");
    for (k, v) in &cfg.producer_overrides {
        pc.set(k, v);
    }
    let producer: BaseProducer<SinkContext> = pc.create_with_context(SinkContext::default())?;
    let producer = Rc::new(RefCell::new(Some(producer)));
    let report = Rc::new(RefCell::new(SinkReport {
        topic: cfg.topic.clone(),
        ..Default::default()
    }));
    let handle = SinkHandle {
        producer: producer.clone(),
        report: report.clone(),
    };
    let scope = stream.scope();
    let out = stream.unary_frontier(Pipeline, "KafkaSink", move |_cap, info| {
        let activator = scope.activator_for(info.address);
        // time -> (capability, messages outstanding, messages of this time)
        let mut open: BTreeMap<u64, (Capability<u64>, u64, u64)> = BTreeMap::new();
        let mut acks = Vec::new();
        move |(input, frontier), output| {
            let guard = producer.borrow();
            let Some(p) = guard.as_ref() else { return };
            let mut rep = report.borrow_mut();
            input.for_each_stamp(|cap, data| {
                let t = *cap.least().expect("a time");
                let entry = open.entry(t).or_insert_with(|| (cap.retain_least(0).expect("a capability"), 0, 0));
                for batch in data {
                    for d in batch.iter() {
                        send(p, &cfg.topic, t, 0, &encode(d), &mut || {});
                        entry.1 += 1;
                        entry.2 += 1;
                        rep.sent += 1;
                    }
                }
            });
            p.poll(Duration::ZERO);
            std::mem::swap(&mut acks, &mut *p.context().acks.lock().expect("ack lock"));
            for a in acks.drain(..) {
                match a {
                    Ack::Ok { time: t, records } => {
                        rep.delivered += 1;
                        rep.delivered_records += records;
                        if let Some(e) = open.get_mut(&t) {
                            e.1 -= 1;
                        }
                    }
                    Ack::Failed { time, attempts, message, error } => {
                        if attempts >= cfg.max_retries {
                            panic!(
                                "kafka sink: giving up on a message for topic {} after {} attempts: {error} (its epoch {time} stays uncommitted)",
                                cfg.topic,
                                attempts + 1
                            );
                        }
                        tracing::warn!(topic = %cfg.topic, attempt = attempts + 1, "delivery failed, sending again: {error}");
                        rep.retried += 1;
                        std::thread::sleep(Duration::from_millis(10 << attempts.min(6)));
                        send(p, &cfg.topic, time, attempts + 1, &message, &mut || {});
                    }
                }
            }
            while let Some((&t, e)) = open.first_key_value() {
                if frontier.less_equal(&t) || e.1 > 0 {
                    break;
                }
                let (cap, _, n) = open.pop_first().expect("present").1;
                output.session(&cap).give(n);
            }
            if !open.is_empty() {
                activator.activate_after(Duration::from_millis(1));
            }
        }
    });
    Ok((out, handle))
}
