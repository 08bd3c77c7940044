//! Side-by-side evaluation of several synthetic sets against one real test set: [`compare`] is what
//! `temponet eval` runs (one synthetic set) and what `temponet compare` runs after training the models (one set
//! per model). [`evaluate`] is the single-set form.
//!
//! Roles of the inputs:
//! - `real_test`: the real flows the synthetic sets are compared with (and the held-out set of utility and
//!   privacy).
//! - `train`: the real flows the generators learnt from (may be empty). With it, utility trains TRTR on it and
//!   privacy is computed; without it, utility splits `real_test` in time (first half TRTR training, second half
//!   test) and privacy is skipped (nothing to leak from). It must be disjoint from `real_test`: more than half
//!   of the test flows also being training flows is refused as a mismatch.
//! - `EvalOptions::attacks`: labelled flows (e.g. CIC-IDS2017) for the intrusion-detection utility task.

use super::report::{ComparisonReport, EvalReport, SetInfo};
use super::{
    MetricsError, coverage, distances, dkc, hosts, plots, privacy, split_by_time, temporal, utility,
};
use crate::record::FlowRecord;
use std::collections::HashSet;
use std::path::PathBuf;

/// Options of an evaluation.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Busiest real host pairs for the per-pair inter-arrival EMD.
    pub top_pairs: usize,
    /// Labelled attack flows for the intrusion-detection task (empty: task skipped).
    pub attacks: Vec<FlowRecord>,
    /// Where to write the PNG plots (None: no plots).
    pub plot_dir: Option<PathBuf>,
    /// Run the utility tasks (random forests; the slowest part).
    pub utility: bool,
    /// Run the privacy metrics (needs a training set).
    pub privacy: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            top_pairs: 10,
            attacks: Vec::new(),
            plot_dir: None,
            utility: true,
            privacy: true,
        }
    }
}

/// Minimum flows of the real and each synthetic set (inter-arrival needs two).
pub const MIN_FLOWS: usize = 2;

fn check_inputs(
    real_test: &[FlowRecord],
    train: &[FlowRecord],
    synthetic: &[(&str, &[FlowRecord])],
    opts: &EvalOptions,
) -> Result<(), MetricsError> {
    if real_test.len() < MIN_FLOWS {
        return Err(MetricsError::TooFew {
            what: format!("real test (it has {})", real_test.len()),
            min: MIN_FLOWS,
        });
    }
    if synthetic.is_empty() {
        return Err(MetricsError::Mismatch(
            "no synthetic set to evaluate".into(),
        ));
    }
    let mut names = HashSet::new();
    for (name, s) in synthetic {
        if s.len() < MIN_FLOWS {
            return Err(MetricsError::TooFew {
                what: format!("synthetic `{name}` (it has {})", s.len()),
                min: MIN_FLOWS,
            });
        }
        if !names.insert(*name) {
            return Err(MetricsError::Mismatch(format!(
                "two synthetic sets are named `{name}`"
            )));
        }
    }
    if !train.is_empty() {
        let t: HashSet<&FlowRecord> = train.iter().collect();
        let shared = real_test.iter().filter(|r| t.contains(r)).count();
        if shared * 2 > real_test.len() {
            return Err(MetricsError::Mismatch(format!(
                "{shared} of the {} real test flows are also training flows: pass disjoint parts (e.g. the first 80 % of a capture as --train, the rest as --real)",
                real_test.len()
            )));
        }
    }
    if !opts.attacks.is_empty() {
        let n = opts
            .attacks
            .iter()
            .filter(|r| !utility::is_benign_label(r.label.as_deref()))
            .count();
        if n < 2 {
            return Err(MetricsError::Mismatch(format!(
                "the attack set holds {} flows, {n} of them labelled as an attack (not benign/background): at least 2 are needed",
                opts.attacks.len()
            )));
        }
    }
    Ok(())
}

/// Every metric of one synthetic set (`name`) against `real_test` (see the module docs for the roles).
pub fn evaluate(
    real_test: &[FlowRecord],
    train: &[FlowRecord],
    name: &str,
    synthetic: &[FlowRecord],
    opts: &EvalOptions,
) -> Result<EvalReport, MetricsError> {
    check_inputs(real_test, train, &[(name, synthetic)], opts)?;
    Ok(evaluate_checked(real_test, train, name, synthetic, opts))
}

fn evaluate_checked(
    real_test: &[FlowRecord],
    train: &[FlowRecord],
    name: &str,
    synthetic: &[FlowRecord],
    opts: &EvalOptions,
) -> EvalReport {
    tracing::info!(
        model = name,
        "distances, DKC, coverage, temporal and host structure"
    );
    let (utility, utility_note) = if !opts.utility {
        (None, "not computed (disabled)".to_string())
    } else {
        tracing::info!(model = name, "utility (random forests)");
        let (tr, te, how) = if train.is_empty() {
            let (a, b) = split_by_time(real_test, 0.5);
            (
                a,
                b,
                "no training set given: TRTR trained on the first half of the real set (time order), both tested on the second half",
            )
        } else {
            (
                train.to_vec(),
                real_test.to_vec(),
                "TRTR trained on the real training set, both tested on the real test set",
            )
        };
        match utility::utility(&tr, synthetic, &te, &opts.attacks) {
            Ok(u) => (Some(u), how.to_string()),
            Err(e) => (None, format!("not computed: {e}")),
        }
    };
    let (privacy, privacy_note) = if !opts.privacy {
        (None, "not computed (disabled)".to_string())
    } else if train.is_empty() {
        (
            None,
            "not computed: needs the training set (--train)".to_string(),
        )
    } else {
        tracing::info!(model = name, "privacy");
        match privacy::privacy(train, real_test, synthetic) {
            Ok(p) => (Some(p), "holdout = the real test set".to_string()),
            Err(e) => (None, format!("not computed: {e}")),
        }
    };
    EvalReport {
        model: name.to_string(),
        synthetic: SetInfo::of(name, synthetic),
        distances: distances::distances(real_test, synthetic, opts.top_pairs),
        dkc: dkc::check(real_test, synthetic),
        coverage: coverage::coverage(real_test, synthetic),
        temporal: temporal::temporal(real_test, synthetic),
        hosts: hosts::hosts(real_test, synthetic),
        utility,
        utility_note,
        privacy,
        privacy_note,
    }
}

/// Evaluates every `(model name, synthetic flows)` against `real_test` and gathers them in one report, with
/// plots in `opts.plot_dir` when set. `train` may be empty (see the module docs).
pub fn compare(
    real_test: &[FlowRecord],
    train: &[FlowRecord],
    synthetic: &[(&str, &[FlowRecord])],
    opts: &EvalOptions,
) -> Result<ComparisonReport, MetricsError> {
    check_inputs(real_test, train, synthetic, opts)?;
    let models = synthetic
        .iter()
        .map(|(n, s)| evaluate_checked(real_test, train, n, s, opts))
        .collect();
    let plots = match &opts.plot_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| MetricsError::Io {
                file: dir.display().to_string(),
                source,
            })?;
            let mut sets: Vec<plots::Series> = vec![("real", real_test)];
            sets.extend(synthetic.iter().copied());
            plots::write_all(dir, &sets)?
        }
        None => Vec::new(),
    };
    Ok(ComparisonReport {
        real: SetInfo::of("real", real_test),
        train: (!train.is_empty()).then(|| SetInfo::of("train", train)),
        attacks: (!opts.attacks.is_empty()).then(|| SetInfo::of("attacks", &opts.attacks)),
        models,
        plots,
    })
}
