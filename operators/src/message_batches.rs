//! `message_batches`: groups the records of one timestamp into batches of at most `n`, so that a sink can write
//! each batch as one message (JSON lines, or bincode records back to back, see [`crate::codec::WireFormat`]).
//!
//! One message per flow costs the producer, the broker and every consumer a fixed overhead per flow; at hundreds of
//! thousands of synthetic flows per second that overhead, not the flows, is what limits the pipeline.
//!
//! # Invariants
//! - Nothing is held back: each activation batches what it received and emits it at once, so batching adds no
//!   latency and never delays a frontier. Batches of a time are full except the last one of each activation.
//! - Order within a time is kept; records of different times never share a batch (a batch inherits its time, and
//!   with it the sink's per-time acknowledgement and the source's offset commits).

use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

/// Batches of at most `n` (at least 1) records of one time.
pub fn message_batches<'s, D>(
    stream: Stream<'s, u64, Vec<D>>,
    n: usize,
) -> Stream<'s, u64, Vec<Vec<D>>>
where
    D: timely::ExchangeData,
{
    let n = n.max(1);
    stream.unary(Pipeline, "MessageBatches", move |_, _| {
        let mut pending: Vec<D> = Vec::new();
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                for batch in data {
                    pending.append(batch);
                }
                let mut session = output.session(&cap);
                let mut records = pending.drain(..);
                loop {
                    // Each batch allocated at its own size (splitting off the rest would hand every batch the
                    // capacity of all that followed it).
                    let batch: Vec<D> = records.by_ref().take(n).collect();
                    if batch.is_empty() {
                        break;
                    }
                    session.give(batch);
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::dataflow::InputHandle;
    use timely::dataflow::operators::capture::{Capture, Extract};

    /// Every record comes out once, in order, in batches of at most `n`, at its own time.
    #[test]
    fn batches_keep_records_times_and_order() {
        let got = timely::execute_directly(|worker| {
            let mut input = InputHandle::new();
            let rx = worker.dataflow::<u64, _, _>(|scope| {
                message_batches(input.to_stream(scope), 4).capture()
            });
            for t in 0..3u64 {
                for i in 0..(10 * t + 3) {
                    input.send((t, i));
                }
                input.advance_to(t + 1);
                worker.step();
            }
            input.close();
            while worker.step() {}
            rx
        })
        .extract();
        assert_eq!(got.len(), 3, "{got:?}");
        for (t, batches) in got {
            let flat: Vec<(u64, u64)> = batches.iter().flatten().copied().collect();
            assert_eq!(
                flat,
                (0..(10 * t + 3)).map(|i| (t, i)).collect::<Vec<_>>(),
                "time {t}"
            );
            // Capacity too: a batch must not carry the allocation of the records after it.
            assert!(
                batches
                    .iter()
                    .all(|b| !b.is_empty() && b.len() <= 4 && b.capacity() <= 4),
                "time {t}: {batches:?}"
            );
        }
    }
}
