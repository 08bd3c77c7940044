//! Early stopping: with validation flows the fit scores them after every epoch, goes back to the best parameters
//! at a halved learning rate after an epoch without improvement, stops after `patience` such epochs in a row, and
//! keeps the best epoch's parameters.

mod model_support;

use model_support::*;
use std::sync::Arc;
use temponet::model::{FitOptions, Model, ModelConfig, ModelKind, Validation, split_holdout};

#[test]
fn fit_stops_on_validation_and_keeps_the_best_epoch() {
    let mut cfg = ModelConfig::default();
    cfg.temponet.hidden = 16;
    cfg.temponet.embed = 16;
    cfg.stan.hidden = 16;
    // Few flows and a high rate: the validation NLL stops improving long before 60 epochs.
    cfg.temponet.lr = 0.02;
    cfg.stan.lr = 0.02;
    let data = mixed_stream(300, 11);
    let (fit_part, val) = split_holdout(&data, 0.25);
    for kind in [ModelKind::TempoNet, ModelKind::Stan] {
        let v = Arc::new(Validation {
            context: fit_part.to_vec(),
            records: val.to_vec(),
            patience: 2,
        });
        let max_epochs = 60;
        let mut history: Vec<f64> = Vec::new();
        let m = Model::fit_new(
            kind,
            &cfg,
            fit_part,
            &FitOptions {
                epochs: max_epochs,
                seed: 3,
                validation: Some(v.clone()),
                ..Default::default()
            },
            &mut |p| {
                if let Some((e, nll)) = p.validation_nll
                    && history.len() < e
                {
                    history.push(nll);
                }
            },
        )
        .unwrap();
        eprintln!("{kind}: validation NLL by epoch {history:?}");
        assert!(history.len() >= 3, "{kind}: {history:?}");
        assert!(
            history.len() < max_epochs,
            "{kind}: never stopped: {history:?}"
        );
        let (best_epoch, best) = history
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, v)| (i + 1, *v))
            .unwrap();
        // Stopped exactly `patience` epochs after the best one, with the best epoch's parameters back.
        assert_eq!(history.len(), best_epoch + 2, "{kind}: {history:?}");
        let kept = m.heldout_nll(&v.context, &v.records).unwrap().flow_total();
        assert!(
            (kept - best).abs() < 1e-6 * best.abs().max(1.0),
            "{kind}: kept model scores {kept}, best epoch {best_epoch} scored {best}"
        );
        assert!(kept < history[0] || best_epoch == 1);
    }
}
