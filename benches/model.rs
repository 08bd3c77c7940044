//! Model throughput on one thread: training events/s (one optimiser step on a batch of pair windows) and generated
//! flows/s (lanes batched across pairs). Targets from issue 3: >= 100k training events/s, >= 500k generated
//! flows/s per thread on CPU. Run with `OMP_NUM_THREADS=1 cargo bench --bench model`. TempoNet generation runs
//! twice, with its native CPU step (the default) and with its libtorch step, side by side.

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use std::net::{IpAddr, Ipv4Addr};
use temponet::model::{
    DeviceChoice, GenLimit, GenerateRequest, Model, ModelConfig, ModelKind, PairSource, StepEngine,
    pair_windows,
};
use temponet::record::{FlowRecord, TcpFlags, proto};

/// `pairs` host pairs with `per_pair` flows each: web-like TCP and DNS-like UDP, log-normal gaps.
fn records(pairs: usize, per_pair: usize) -> Vec<FlowRecord> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut out = Vec::with_capacity(pairs * per_pair);
    for p in 0..pairs {
        let src = IpAddr::V4(Ipv4Addr::new(
            192,
            168,
            (p / 250) as u8,
            (p % 250) as u8 + 1,
        ));
        let dst = IpAddr::V4(Ipv4Addr::new(10, rng.r#gen(), rng.r#gen(), rng.r#gen()));
        let mut t = 1_545_403_816_000_000i64 + rng.gen_range(0..10_000_000);
        let tcp = p % 3 != 0;
        for _ in 0..per_pair {
            t += (rng.gen_range(-3.0f64..4.0).exp() * 1e6) as i64;
            let pk = rng.gen_range(1..30u64);
            out.push(FlowRecord {
                start_us: t,
                duration_us: if pk == 1 {
                    0
                } else {
                    rng.gen_range(1000..5_000_000)
                },
                src,
                dst,
                src_port: rng.gen_range(1024..65535),
                dst_port: if tcp { 443 } else { 53 },
                proto: if tcp { proto::TCP } else { proto::UDP },
                flags: TcpFlags(if tcp { 0x1b } else { 0 }),
                packets: pk,
                bytes: pk * rng.gen_range(60..1400),
                label: None,
            });
        }
    }
    out.sort_by_key(|r| r.start_us);
    out
}

fn train(c: &mut Criterion) {
    tch::set_num_threads(1);
    let data = records(256, 64);
    let cfg = ModelConfig::default();
    let mut g = c.benchmark_group("train");
    g.sample_size(10);
    for kind in [ModelKind::TempoNet, ModelKind::Stan] {
        let mut m = Model::new(kind, &cfg, &data, DeviceChoice::Cpu).unwrap();
        let windows = pair_windows(&data, cfg.temponet.window, |_| true);
        let batch: Vec<_> = windows.iter().take(cfg.temponet.batch_windows).collect();
        let events: usize = batch
            .iter()
            .map(|w| w.score.iter().filter(|s| **s).count())
            .sum();
        g.throughput(Throughput::Elements(events as u64));
        g.bench_function(
            format!("{kind}_batch_{}x{}", batch.len(), cfg.temponet.window),
            |b| b.iter(|| m.train_batch(&batch).unwrap()),
        );
    }
    g.finish();
}

fn generate(c: &mut Criterion) {
    tch::set_num_threads(1);
    let data = records(1024, 16);
    let cfg = ModelConfig::default();
    let mut g = c.benchmark_group("generate");
    g.sample_size(10);
    for kind in [ModelKind::TempoNet, ModelKind::Stan, ModelKind::Independent] {
        // One epoch of fitting: the count tables of `independent` and the observed-pair tables need data.
        let opts = temponet::model::FitOptions {
            epochs: 1,
            ..Default::default()
        };
        let mut m = Model::fit_new(kind, &cfg, &data, &opts, &mut |_| {}).unwrap();
        bench_observed(&mut g, &format!("{kind}_1024_pairs"), &m);
        if kind == ModelKind::TempoNet {
            m.set_step_engine(StepEngine::Libtorch);
            bench_observed(&mut g, &format!("{kind}_libtorch_step_1024_pairs"), &m);
        }
    }
    g.finish();
}

/// Flows drawn per iteration of a generation bench.
const GEN_FLOWS: u64 = 20_000;

/// Benches `m` drawing [`GEN_FLOWS`] flows of its observed pairs from the end of its training data.
fn bench_observed(g: &mut BenchmarkGroup<WallTime>, name: &str, m: &Model) {
    let req = GenerateRequest::new(
        m.space().last_us,
        GenLimit::Count(GEN_FLOWS),
        1,
        PairSource::Observed,
    );
    g.throughput(Throughput::Elements(GEN_FLOWS));
    g.bench_function(name, |b| b.iter(|| m.generate(&req, &mut |_| {}).unwrap()));
}

/// TempoNet generation on a real capture (IoT-23 34-1, fitted for two epochs): what a user's observed pairs cost,
/// with their habits and the network's own support, where the synthetic pairs above each use one service.
fn generate_real(c: &mut Criterion) {
    tch::set_num_threads(1);
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/iot23/CTU-Malware-Capture-34-1-labeled.csv");
    let data = temponet::metrics::time_sorted(
        &temponet::format::reader::read_all(&[path]).expect("shared IoT-23 data"),
    );
    let cfg = ModelConfig::default();
    let opts = temponet::model::FitOptions {
        epochs: 2,
        ..Default::default()
    };
    let m = Model::fit_new(ModelKind::TempoNet, &cfg, &data, &opts, &mut |_| {}).unwrap();
    let mut g = c.benchmark_group("generate");
    g.sample_size(10);
    bench_observed(&mut g, "temponet_iot23_34_1", &m);
    g.finish();
}

criterion_group!(benches, train, generate, generate_real);
criterion_main!(benches);
