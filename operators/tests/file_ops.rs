//! `file_source` -> `pair_history` -> `file_sink` over a real capture, with the reader and writer of
//! `temponet::format` (the operators themselves know no format).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use temponet::FlowRecord;
use temponet::format::{FlowReader, FlowWriter, OutputFormat};
use temponet_operators::file_sink::{FlowWriterSink, file_sink};
use temponet_operators::file_source::{FileSourceConfig, Pace, file_source};
use temponet_operators::kafka_source::split;
use temponet_operators::pair_history::{HistoryConfig, pair_history};
use temponet_operators::plugs::NoHook;
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::{Concat, Probe};

fn capture() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/iot23/CTU-Malware-Capture-34-1-labeled.csv");
    if p.exists() {
        p
    } else {
        PathBuf::from("/work/shared/data/iot23/CTU-Malware-Capture-34-1-labeled.csv")
    }
}

/// Replays the capture as fast as possible through two workers; the JSONL written by the file sinks holds every
/// flow once, each worker's file in epoch order; pair state absorbed them all.
#[test]
fn replay_capture_to_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_path_buf();
    let absorbed = Arc::new(Mutex::new(0u64));
    let absorbed2 = absorbed.clone();
    timely::execute(timely::Config::process(2), move |worker| {
        let probe = ProbeHandle::new();
        let index = worker.index();
        let path = out.join(format!("w{index}.jsonl"));
        let handle = worker.dataflow::<u64, _, _>(|scope| {
            let reader = (index == 0).then(|| FlowReader::open(capture()).unwrap());
            let events = file_source(scope, reader, FileSourceConfig::default());
            let (flows, dead, _stats) = split(events);
            let (hist, handle) = pair_history(flows.clone(), HistoryConfig::default(), NoHook);
            let writer =
                FlowWriter::new(std::fs::File::create(&path).unwrap(), OutputFormat::Jsonl)
                    .unwrap();
            let written = file_sink(flows, FlowWriterSink::new(writer));
            use timely::dataflow::operators::vec::Map;
            written
                .concat(dead.map(|_| 0u64))
                .concat(hist.map(|_| 0u64))
                .probe_with(&probe);
            handle
        });
        worker.step_while(|| !probe.done());
        *absorbed2.lock().unwrap() += handle.borrow().flows_total;
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());

    let original = temponet::format::reader::read_all(&[capture()]).unwrap();
    let mut written: Vec<FlowRecord> = Vec::new();
    for w in 0..2 {
        let part = temponet::format::reader::read_all(&[dir.path().join(format!("w{w}.jsonl"))])
            .unwrap_or_default();
        // Within one file, epochs never go backwards (late flows are written in their emission epoch).
        let epochs: Vec<i64> = part.iter().map(|r| r.start_us / 1_000_000).collect();
        let backwards = epochs.windows(2).filter(|e| e[1] < e[0]).count();
        assert!(
            backwards <= part.len() / 100,
            "worker {w}: {backwards} epoch regressions"
        );
        written.extend(part);
    }
    let key = |r: &FlowRecord| {
        (
            r.start_us, r.src, r.dst, r.src_port, r.dst_port, r.packets, r.bytes,
        )
    };
    let mut a = original.clone();
    let mut b = written;
    a.sort_by_key(key);
    b.sort_by_key(key);
    assert_eq!(a.len(), b.len());
    assert!(a == b, "written flows differ from the capture");
    assert_eq!(*absorbed.lock().unwrap(), original.len() as u64);
}

/// Paced replay never runs ahead of the requested speed: 300 flows spanning S seconds of event time replayed at
/// speed S / 0.6 take at least ~0.6 s of wall time.
#[test]
fn paced_replay_follows_event_time() {
    let flows: Vec<FlowRecord> = temponet::format::reader::read_all(&[capture()])
        .unwrap()
        .into_iter()
        .take(300)
        .collect();
    let span_s = (flows.iter().map(|r| r.start_us).max().unwrap() - flows[0].start_us) as f64 / 1e6;
    assert!(span_s > 1.0);
    let speed = span_s / 0.6;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let t0 = Instant::now();
    timely::execute(timely::Config::thread(), move |worker| {
        let probe = ProbeHandle::new();
        let flows = flows.clone();
        let seen = seen2.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let cfg = FileSourceConfig {
                pace: Pace::Speed(speed),
                ..Default::default()
            };
            let events = file_source(scope, Some(flows.into_iter().map(Ok::<_, String>)), cfg);
            let (flows, _, _) = split(events);
            file_sink(flows, move |r: &FlowRecord| {
                seen.lock().unwrap().push((t0.elapsed(), r.start_us));
                Ok(())
            })
            .probe_with(&probe);
        });
        worker.step_while(|| !probe.done());
    })
    .unwrap()
    .join()
    .into_iter()
    .for_each(|r| r.unwrap());
    let elapsed = t0.elapsed();
    assert_eq!(seen.lock().unwrap().len(), 300);
    assert!(
        elapsed >= Duration::from_millis(540),
        "replay at x{speed:.0} took only {elapsed:?} for {span_s:.1} s of event time"
    );
    assert!(
        "x10".parse::<Pace>().unwrap() == Pace::Speed(10.0)
            && "max".parse::<Pace>().unwrap() == Pace::Max
    );
}
