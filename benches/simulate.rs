//! Simulator throughput: flows per second from the iterator alone, and with JSON lines / CSV writing to a sink.
//! The issue asks for 10 M flows "well under a minute" (> ~200 k flows/s end to end).
//!
//! Building the network (addresses, providers, favourites) is setup, measured on its own in `build-network`;
//! the flow benchmarks time iteration (and writing) only.
//!
//! `cargo bench -p temponet --bench simulate`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use temponet::format::{FlowWriter, OutputFormat};
use temponet::sim::{AttackKind, SimConfig, Simulator};

/// Monday 2026-01-05 09:00 UTC: office hours, so the short window is busy.
const START_US: i64 = 1_767_603_600_000_000;
const FLOWS: u64 = 200_000;

fn config() -> SimConfig {
    let mut c = SimConfig::enterprise(2_000, START_US, 24 * 3_600_000_000, 7);
    c.attacks = AttackKind::ALL.to_vec();
    c
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("simulate");
    g.sample_size(10);
    g.throughput(Throughput::Elements(FLOWS));
    g.bench_function("iterator", |b| {
        b.iter_batched(
            || Simulator::new(config()).unwrap(),
            |sim| {
                let mut bytes = 0u64;
                for r in sim.take(FLOWS as usize) {
                    bytes += r.bytes;
                }
                black_box(bytes)
            },
            BatchSize::PerIteration,
        )
    });
    for (name, format) in [("jsonl", OutputFormat::Jsonl), ("csv", OutputFormat::Csv)] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || Simulator::new(config()).unwrap(),
                |sim| {
                    let mut w =
                        FlowWriter::new(std::io::BufWriter::new(std::io::sink()), format).unwrap();
                    for r in sim.take(FLOWS as usize) {
                        w.write(&r).unwrap();
                    }
                    black_box(w.written())
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
    let mut g = c.benchmark_group("build-network");
    g.sample_size(10);
    g.bench_function("10k-hosts", |b| {
        b.iter(|| {
            black_box(
                Simulator::new(SimConfig::enterprise(10_000, START_US, 3_600_000_000, 7))
                    .unwrap()
                    .network()
                    .hosts()
                    .len(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
