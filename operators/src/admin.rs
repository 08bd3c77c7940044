//! Small Kafka administration helpers shared by the operators, the CLI and the tests: topic creation with an
//! explicit partition count, partition discovery, committed offsets of a group.
//!
//! rdkafka's admin calls return futures driven by librdkafka's own threads; [`block_on`] waits for one without
//! an async runtime.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// Errors of the admin helpers, naming the broker, topic or group involved.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("kafka at {brokers}: {what}: {source}")]
    Kafka {
        brokers: String,
        what: String,
        source: Box<rdkafka::error::KafkaError>,
    },
    #[error("kafka at {brokers}: creating topic {topic}: {code}")]
    CreateTopic {
        brokers: String,
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("kafka at {brokers}: topic {topic} does not exist or has no partitions")]
    NoTopic { brokers: String, topic: String },
}

struct ThreadWaker(std::thread::Thread);
impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to completion on the current thread (parks between polls).
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// A client configuration with the settings every temponet client shares.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "10000")
        .set("log_level", "3");
    c
}

/// Creates topics with an explicit partition count (replication 1). A topic that already exists is not an error
/// when `exists_ok`.
pub fn create_topics(
    brokers: &str,
    topics: &[(&str, i32)],
    exists_ok: bool,
) -> Result<(), AdminError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(brokers)
            .create()
            .map_err(|source| AdminError::Kafka {
                brokers: brokers.into(),
                what: "creating admin client".into(),
                source: Box::new(source),
            })?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(t, p)| NewTopic::new(t, *p, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results =
        block_on(admin.create_topics(new.iter(), &opts)).map_err(|source| AdminError::Kafka {
            brokers: brokers.into(),
            what: "create topics".into(),
            source: Box::new(source),
        })?;
    for r in results {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if exists_ok => {}
            Err((topic, code)) => {
                return Err(AdminError::CreateTopic {
                    brokers: brokers.into(),
                    topic,
                    code,
                });
            }
        }
    }
    Ok(())
}

/// Number of partitions of a topic (from metadata; waits up to `timeout`).
pub fn partition_count<X: rdkafka::consumer::ConsumerContext, C: Consumer<X>>(
    consumer: &C,
    brokers: &str,
    topic: &str,
    timeout: Duration,
) -> Result<i32, AdminError> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|source| AdminError::Kafka {
            brokers: brokers.into(),
            what: format!("metadata of {topic}"),
            source: Box::new(source),
        })?;
    let n = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .unwrap_or(0);
    if n == 0 {
        return Err(AdminError::NoTopic {
            brokers: brokers.into(),
            topic: topic.into(),
        });
    }
    Ok(n as i32)
}

/// Committed offsets of `group` on every partition of `topic`, in partition order; `None` where nothing is committed.
pub fn committed_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
) -> Result<Vec<Option<i64>>, AdminError> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|source| AdminError::Kafka {
            brokers: brokers.into(),
            what: "creating consumer".into(),
            source: Box::new(source),
        })?;
    let n = partition_count(&consumer, brokers, topic, Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_range(topic, 0, n - 1);
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|source| AdminError::Kafka {
            brokers: brokers.into(),
            what: format!("committed offsets of {group}"),
            source: Box::new(source),
        })?;
    let mut out = vec![None; n as usize];
    for e in got.elements_for_topic(topic) {
        if let Offset::Offset(o) = e.offset() {
            out[e.partition() as usize] = Some(o);
        }
    }
    Ok(out)
}

/// Drops a Kafka client on a helper thread and waits at most `timeout` for it: librdkafka's destroy has been seen to
/// hang against the test broker. Returns false (and leaves the thread behind) when it did not finish in time.
pub fn drop_with_timeout<T: Send + 'static>(client: T, timeout: Duration) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(client);
        let _ = tx.send(());
    });
    let done = rx.recv_timeout(timeout).is_ok();
    if !done {
        tracing::warn!("a Kafka client did not shut down within {timeout:?}; left behind");
    }
    done
}
