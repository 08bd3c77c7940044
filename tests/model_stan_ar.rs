//! STAN's own known-truth check (its own process: libtorch's global RNG seeds the weights, so each
//! known-truth test runs alone and is reproducible).

mod model_support;

use model_support::*;
use temponet::model::{
    FitOptions, GenLimit, GenerateRequest, Model, ModelConfig, ModelKind, PairSource,
};

/// STAN's own check: corr(x_t, x_{t-1}) and corr(x_t, y_t) of STAN's samples within 0.05 of 0.9; the
/// independent baseline shows about 0.
#[test]
fn stan_keeps_autoregressive_and_cross_field_correlation() {
    let data = ar_stream(2000, 3);
    let truth = ar_decode(&data);
    let tx: Vec<f64> = truth.iter().map(|p| p.0).collect();
    let ty: Vec<f64> = truth.iter().map(|p| p.1).collect();
    eprintln!(
        "data: lag corr {:.3}, cross corr {:.3}",
        corr(&tx[1..], &tx[..tx.len() - 1]),
        corr(&tx, &ty)
    );
    let mut cfg = ModelConfig::default();
    cfg.stan.batch = 64;
    cfg.stan.lr = 1e-2;
    let check = |m: &Model| {
        let req = GenerateRequest::new(
            T0 + 10_000_000_000,
            GenLimit::Count(2000),
            5,
            PairSource::Observed,
        );
        let g = m.generate(&req, &mut |_| {}).unwrap();
        let zeros = g.flows.iter().filter(|r| r.duration_us == 0).count();
        let xy = ar_decode(&g.flows);
        eprintln!(
            "zero durations {zeros}, x range {:?}",
            xy.iter()
                .map(|p| p.0)
                .fold((f64::MAX, f64::MIN), |a, v| (a.0.min(v), a.1.max(v)))
        );
        let x: Vec<f64> = xy.iter().map(|p| p.0).collect();
        let y: Vec<f64> = xy.iter().map(|p| p.1).collect();
        (corr(&x[1..], &x[..x.len() - 1]), corr(&x, &y))
    };
    let stan = Model::fit_new(
        ModelKind::Stan,
        &cfg,
        &data,
        &FitOptions {
            epochs: 12,
            seed: 7,
            ..Default::default()
        },
        &mut |p| {
            if p.batch == p.batches {
                eprintln!("epoch {} nll {:.3}", p.epoch, p.batch_nll.flow_total());
            }
        },
    )
    .unwrap();
    let (lag, cross) = check(&stan);
    eprintln!("stan: lag corr {lag:.3}, cross corr {cross:.3}");
    assert!((lag - 0.9).abs() <= 0.05, "stan lag corr {lag:.3}");
    assert!((cross - 0.9).abs() <= 0.05, "stan cross corr {cross:.3}");
    let ind = fit(ModelKind::Independent, &cfg, &data, 1);
    let (lag, cross) = check(&ind);
    eprintln!("independent: lag corr {lag:.3}, cross corr {cross:.3}");
    assert!(
        lag.abs() < 0.1 && cross.abs() < 0.1,
        "independent lag {lag:.3} cross {cross:.3}"
    );
}
