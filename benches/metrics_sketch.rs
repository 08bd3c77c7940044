//! Throughput of the streaming sketches (what the live `fidelity` operator pays per flow) and of the figures a
//! window emits, on the IoT-23 capture 34-1 (23,145 real flows, cycled).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::path::PathBuf;
use temponet::format::reader::read_all;
use temponet::metrics::sketch::{DEFAULT_CAPACITY, FlowSketch, SketchFigures};
use temponet::metrics::{split_by_time, time_sorted};

fn flows() -> Vec<temponet::FlowRecord> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/iot23/CTU-Malware-Capture-34-1-labeled.csv");
    time_sorted(&read_all(&[p]).expect("shared IoT-23 data"))
}

fn sketch(c: &mut Criterion) {
    let v = flows();
    let mut g = c.benchmark_group("sketch");
    g.throughput(Throughput::Elements(v.len() as u64));
    g.bench_function("add (flows/s)", |b| {
        b.iter_batched(
            || FlowSketch::new(DEFAULT_CAPACITY),
            |mut s| {
                for r in &v {
                    s.add(r);
                }
                black_box(s)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
    let (a, t) = split_by_time(&v, 0.8);
    let (sa, st) = (
        FlowSketch::of(&a, DEFAULT_CAPACITY),
        FlowSketch::of(&t, DEFAULT_CAPACITY),
    );
    c.bench_function("sketch/merge", |b| {
        b.iter_batched(
            || sa.clone(),
            |mut m| m.merge(black_box(&st)).map(|_| m),
            BatchSize::LargeInput,
        )
    });
    c.bench_function("sketch/bincode round trip", |b| {
        b.iter(|| FlowSketch::from_bytes(&black_box(&sa).to_bytes()))
    });
    c.bench_function("sketch/figures", |b| {
        b.iter(|| SketchFigures::between(black_box(&st), black_box(&sa)))
    });
}

criterion_group!(benches, sketch);
criterion_main!(benches);
