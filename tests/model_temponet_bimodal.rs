//! Known-truth check of TempoNet's timing and per-pair services (its own process: libtorch's global RNG
//! seeds the weights, so each known-truth test runs alone and is reproducible).

mod model_support;

use model_support::*;
use temponet::model::{ModelConfig, ModelKind, PairSource};
use temponet::record::proto;

/// Bimodal log-normal inter-arrivals, pair A always TCP 443, pair B always UDP 53: TempoNet keeps both modes
/// (Wasserstein-1 on log inter-arrival at least 3x smaller than the independent baseline's) and each pair's service.
#[test]
fn temponet_keeps_bimodal_timing_and_services() {
    let data = bimodal_two_services(400, 1);
    let real = log_iats(&data);
    let mut cfg = ModelConfig::default();
    cfg.temponet.batch_windows = 4;
    cfg.temponet.window = 16;
    let tn = fit(ModelKind::TempoNet, &cfg, &data, 20);
    let ind = fit(ModelKind::Independent, &cfg, &data, 1);
    let gen_t = span(&tn, 6, PairSource::Observed);
    let gen_i = span(&ind, 6, PairSource::Observed);
    assert!(
        gen_t.len() > 500,
        "temponet generated only {} flows",
        gen_t.len()
    );
    let w_t = wasserstein1(&real, &log_iats(&gen_t));
    let w_i = wasserstein1(&real, &log_iats(&gen_i));
    eprintln!("W1 log inter-arrival: temponet {w_t:.3}, independent {w_i:.3}");
    assert!(
        w_t * 3.0 <= w_i,
        "temponet W1 {w_t:.3} not 3x below independent {w_i:.3}"
    );
    // Both modes present: a real share of gaps below 1 s and above 5 s.
    let iats = log_iats(&gen_t);
    let short = iats.iter().filter(|v| **v < 0.0).count() as f64 / iats.len() as f64;
    let long = iats.iter().filter(|v| **v > 5f64.ln()).count() as f64 / iats.len() as f64;
    assert!(
        short > 0.3 && long > 0.3,
        "modes: short {short:.2} long {long:.2}"
    );
    let a: Vec<_> = gen_t
        .iter()
        .filter(|r| r.dst.to_string() == "10.0.0.2")
        .collect();
    let b: Vec<_> = gen_t
        .iter()
        .filter(|r| r.dst.to_string() == "8.8.8.8")
        .collect();
    assert!(!a.is_empty() && !b.is_empty());
    let a_ok = a
        .iter()
        .filter(|r| r.proto == proto::TCP && r.dst_port == 443)
        .count() as f64
        / a.len() as f64;
    let b_ok = b
        .iter()
        .filter(|r| r.proto == proto::UDP && r.dst_port == 53)
        .count() as f64
        / b.len() as f64;
    eprintln!("service kept: A {a_ok:.3}, B {b_ok:.3}");
    assert!(
        a_ok > 0.95 && b_ok > 0.95,
        "services: A {a_ok:.3} B {b_ok:.3}"
    );
}
