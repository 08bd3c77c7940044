//! `file_sink`: writes flows through a caller-supplied writer (in practice `temponet::format::FlowWriter`, which
//! knows the output formats; this operator knows none).
//!
//! # Invariants
//! - Flows of epoch `t` are written once the input frontier has passed `t`, sorted by start time, epochs in order;
//!   [`RecordSink::flush_records`] runs after each epoch and [`RecordSink::finish_records`] once the input ends.
//! - The output carries, at `t`, the number of flows written for `t`; its frontier passes `t` only after they were
//!   handed to the sink and flushed (probe it like a Kafka sink's output).
//! - A write error panics the worker with the error: nothing is dropped silently.

use std::collections::BTreeMap;
use std::io;
use temponet::FlowRecord;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

/// Where a file sink writes.
pub trait RecordSink: 'static {
    fn write_record(&mut self, r: &FlowRecord) -> io::Result<()>;
    /// After each epoch.
    fn flush_records(&mut self) -> io::Result<()>;
    /// Once, when the input has ended (trailers, final flush).
    fn finish_records(&mut self) -> io::Result<()>;
}

/// Adapts a `temponet::format::FlowWriter` (which has no flush of its own: its buffer is flushed by `finish`).
pub struct FlowWriterSink<W: io::Write> {
    writer: Option<temponet::format::FlowWriter<W>>,
}

impl<W: io::Write> FlowWriterSink<W> {
    pub fn new(writer: temponet::format::FlowWriter<W>) -> Self {
        FlowWriterSink {
            writer: Some(writer),
        }
    }
}

impl<W: io::Write + 'static> RecordSink for FlowWriterSink<W> {
    fn write_record(&mut self, r: &FlowRecord) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.write(r),
            None => Err(io::Error::other("write after finish")),
        }
    }
    fn flush_records(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn finish_records(&mut self) -> io::Result<()> {
        match self.writer.take() {
            Some(w) => w.finish().map(|_| ()),
            None => Ok(()),
        }
    }
}

/// Any closure `FnMut(&FlowRecord) -> io::Result<()>` is a sink without flushing.
impl<F: FnMut(&FlowRecord) -> io::Result<()> + 'static> RecordSink for F {
    fn write_record(&mut self, r: &FlowRecord) -> io::Result<()> {
        self(r)
    }
    fn flush_records(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn finish_records(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Builds the sink (use `Pipeline` placement: each worker writes its own flows to its own writer).
pub fn file_sink<'s, S: RecordSink>(
    flows: Stream<'s, u64, Vec<FlowRecord>>,
    mut sink: S,
) -> Stream<'s, u64, Vec<u64>> {
    flows.unary_frontier(Pipeline, "FileSink", move |_cap, _info| {
        let mut stash: BTreeMap<u64, (Capability<u64>, Vec<FlowRecord>)> = BTreeMap::new();
        let mut finished = false;
        move |(input, frontier), output| {
            input.for_each_stamp(|cap, data| {
                let e = stash
                    .entry(*cap.least().expect("a time"))
                    .or_insert_with(|| (cap.retain_least(0).expect("a capability"), Vec::new()));
                for b in data {
                    e.1.append(b);
                }
            });
            while let Some((&t, _)) = stash.first_key_value() {
                if frontier.less_equal(&t) {
                    break;
                }
                let (cap, mut batch) = stash.pop_first().expect("present").1;
                batch.sort_by_key(|r| r.start_us);
                for r in &batch {
                    sink.write_record(r)
                        .unwrap_or_else(|e| panic!("file sink: writing a flow: {e}"));
                }
                sink.flush_records()
                    .unwrap_or_else(|e| panic!("file sink: flushing: {e}"));
                output.session(&cap).give(batch.len() as u64);
            }
            if frontier.is_empty() && stash.is_empty() && !finished {
                finished = true;
                sink.finish_records()
                    .unwrap_or_else(|e| panic!("file sink: finishing: {e}"));
            }
        }
    })
}
