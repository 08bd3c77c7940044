//! Utility: is the synthetic set as good as real data for training models? Each task is trained twice — on real
//! training flows (TRTR, train-real-test-real) and on the synthetic set (TSTR, train-synthetic-test-real) — with
//! the same random forest (smartcore, fixed seed), and both are scored on the same held-out real flows. The
//! report gives both scores and `ratio = TSTR / TRTR` (near 1 is good; for MSE, lower is better, so a ratio
//! above 1 means the synthetic data is worse).
//!
//! Features of a flow (all numeric): log10 duration (s, floor 1 µs), log10 packets, log10 bytes, log10
//! bytes-per-packet, destination port, source port, and — where the task allows it — protocol and flag byte.
//!
//! Tasks:
//! - **Protocol classification**: predict the protocol number from the features *without* protocol and flags;
//!   scored by macro-F1 (unweighted mean of per-class F1 over every class in the truth or the predictions).
//! - **Next-flow bytes regression**: within each host pair, in time order, predict log10 bytes of flow i+1 from
//!   flow i's features (with protocol) plus log10 of the gap from flow i-1 to flow i (-7 when i is the pair's
//!   first flow); scored by mean squared error in log10 units (decades²).
//! - **Intrusion detection**: benign vs attack. Training = a benign part (the benign-labelled or unlabelled
//!   flows of the real training set for TRTR, of the synthetic set for TSTR) + the even-indexed real attack flows; test = the benign-labelled (or unlabelled) real test flows + the
//!   odd-indexed attack flows; scored by F1 of the attack class. Attacks are the flows of the attack files whose
//!   label is not benign ([`is_benign_label`]).
//!
//! Sets are subsampled deterministically (every k-th flow) to [`MAX_ROWS`] rows per part to bound the time.

use super::{MetricsError, log10_count, log10_time, time_sorted};
use crate::record::{FlowRecord, HostPair};
use serde::{Deserialize, Serialize};
use smartcore::ensemble::random_forest_classifier::{
    RandomForestClassifier, RandomForestClassifierParameters,
};
use smartcore::ensemble::random_forest_regressor::{
    RandomForestRegressor, RandomForestRegressorParameters,
};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::tree::decision_tree_classifier::SplitCriterion;
use std::collections::{HashMap, HashSet};

/// Most rows used per part (training benign, training attacks, test) of a task.
pub const MAX_ROWS: usize = 3000;
/// Trees per forest.
pub const TREES: u16 = 30;
/// Depth limit of each tree.
pub const MAX_DEPTH: u16 = 14;
/// Seed of every forest (bootstrap and feature sampling), so reports are reproducible.
pub const SEED: u64 = 20_170_707;

/// One task's scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskScore {
    pub task: String,
    /// What the scores are: `macro-F1`, `MSE (log10 bytes)^2`, `F1 (attack)`.
    pub metric: String,
    pub trtr: f64,
    pub tstr: f64,
    /// `tstr / trtr`.
    pub ratio: f64,
    pub train_rows_real: usize,
    pub train_rows_synthetic: usize,
    pub test_rows: usize,
}

/// All utility scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Utility {
    pub protocol_classification: TaskScore,
    pub next_flow_bytes: TaskScore,
    /// Present when attack flows were given.
    pub intrusion_detection: Option<TaskScore>,
}

/// Whether a label means benign traffic: `benign`, `background` or `normal` (any case, surrounding text
/// allowed, e.g. IoT-23's `Benign`), or no label at all.
pub fn is_benign_label(label: Option<&str>) -> bool {
    match label {
        None => true,
        Some(l) => {
            let l = l.to_ascii_lowercase();
            l.contains("benign")
                || l.contains("background")
                || l.trim() == "normal"
                || l.trim().is_empty()
        }
    }
}

fn base_features(r: &FlowRecord) -> [f64; 6] {
    let lb = log10_count(r.bytes as f64);
    let lp = log10_count(r.packets as f64);
    [
        log10_time(r.duration_us as f64 / 1e6),
        lp,
        lb,
        lb - lp,
        r.dst_port as f64,
        r.src_port as f64,
    ]
}

fn full_features(r: &FlowRecord) -> Vec<f64> {
    let mut v = base_features(r).to_vec();
    v.push(r.proto as f64);
    v.push(r.flags.bits() as f64);
    v
}

/// Every k-th element so that at most `n` remain (deterministic, spread over the whole input).
pub fn subsample<T: Clone>(v: &[T], n: usize) -> Vec<T> {
    if v.len() <= n {
        return v.to_vec();
    }
    let step = v.len() as f64 / n as f64;
    (0..n)
        .map(|i| v[(i as f64 * step) as usize].clone())
        .collect()
}

fn matrix(rows: &[Vec<f64>], task: &str) -> Result<DenseMatrix<f64>, MetricsError> {
    DenseMatrix::from_2d_vec(&rows.to_vec()).map_err(|e| MetricsError::Ml {
        task: task.into(),
        message: e.to_string(),
    })
}

fn ml_err(task: &str) -> impl Fn(smartcore::error::Failed) -> MetricsError + '_ {
    move |e| MetricsError::Ml {
        task: task.into(),
        message: e.to_string(),
    }
}

/// Fits a random forest classifier on (x, y) and predicts `test`. A training set with a single class (say a
/// synthetic set that is all TCP) cannot be fitted by smartcore: the only model it supports predicts that
/// class everywhere, which is what is returned.
pub fn forest_classify(
    x: &[Vec<f64>],
    y: &[u32],
    test: &[Vec<f64>],
    task: &str,
) -> Result<Vec<u32>, MetricsError> {
    if let Some(&first) = y.first()
        && y.iter().all(|&c| c == first)
    {
        return Ok(vec![first; test.len()]);
    }
    let params = RandomForestClassifierParameters {
        criterion: SplitCriterion::Gini,
        max_depth: Some(MAX_DEPTH),
        min_samples_leaf: 1,
        min_samples_split: 2,
        n_trees: TREES,
        m: None,
        keep_samples: false,
        seed: SEED,
    };
    let model = RandomForestClassifier::fit(&matrix(x, task)?, &y.to_vec(), params)
        .map_err(ml_err(task))?;
    model.predict(&matrix(test, task)?).map_err(ml_err(task))
}

/// Fits a random forest regressor on (x, y) and predicts `test`.
pub fn forest_regress(
    x: &[Vec<f64>],
    y: &[f64],
    test: &[Vec<f64>],
    task: &str,
) -> Result<Vec<f64>, MetricsError> {
    let params = RandomForestRegressorParameters {
        max_depth: Some(MAX_DEPTH),
        min_samples_leaf: 1,
        min_samples_split: 2,
        n_trees: TREES as usize,
        m: None,
        keep_samples: false,
        seed: SEED,
    };
    let model =
        RandomForestRegressor::fit(&matrix(x, task)?, &y.to_vec(), params).map_err(ml_err(task))?;
    model.predict(&matrix(test, task)?).map_err(ml_err(task))
}

/// Macro-F1: the unweighted mean over every class present in `truth` or `pred` of
/// `F1 = 2·TP / (2·TP + FP + FN)`. NaN for empty input.
pub fn macro_f1(truth: &[u32], pred: &[u32]) -> f64 {
    let classes: HashSet<u32> = truth.iter().chain(pred).copied().collect();
    if classes.is_empty() {
        return f64::NAN;
    }
    classes.iter().map(|&c| f1_of(truth, pred, c)).sum::<f64>() / classes.len() as f64
}

/// F1 of one class: `2·TP / (2·TP + FP + FN)`; 1 when the class appears in neither truth nor predictions
/// (there was nothing to get wrong).
pub fn f1_of(truth: &[u32], pred: &[u32], class: u32) -> f64 {
    let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
    for (&t, &p) in truth.iter().zip(pred) {
        match (t == class, p == class) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fneg += 1,
            _ => {}
        }
    }
    if tp + fp + fneg == 0 {
        1.0
    } else {
        2.0 * tp as f64 / (2 * tp + fp + fneg) as f64
    }
}

/// Mean squared error; NaN for empty input.
pub fn mse(truth: &[f64], pred: &[f64]) -> f64 {
    if truth.is_empty() {
        return f64::NAN;
    }
    truth
        .iter()
        .zip(pred)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / truth.len() as f64
}

fn score(
    task: &str,
    metric: &str,
    trtr: f64,
    tstr: f64,
    nr: usize,
    ns: usize,
    nt: usize,
) -> TaskScore {
    TaskScore {
        task: task.into(),
        metric: metric.into(),
        trtr,
        tstr,
        ratio: tstr / trtr,
        train_rows_real: nr,
        train_rows_synthetic: ns,
        test_rows: nt,
    }
}

/// Protocol classification, TRTR and TSTR (see the module docs).
pub fn protocol_classification(
    train: &[FlowRecord],
    synthetic: &[FlowRecord],
    test: &[FlowRecord],
) -> Result<TaskScore, MetricsError> {
    const TASK: &str = "protocol classification";
    let xy = |v: &[FlowRecord]| -> (Vec<Vec<f64>>, Vec<u32>) {
        let s = subsample(v, MAX_ROWS);
        (
            s.iter().map(|r| base_features(r).to_vec()).collect(),
            s.iter().map(|r| r.proto as u32).collect(),
        )
    };
    let (xr, yr) = xy(train);
    let (xs, ys) = xy(synthetic);
    let (xt, yt) = xy(test);
    let trtr = macro_f1(&yt, &forest_classify(&xr, &yr, &xt, TASK)?);
    let tstr = macro_f1(&yt, &forest_classify(&xs, &ys, &xt, TASK)?);
    Ok(score(
        TASK,
        "macro-F1",
        trtr,
        tstr,
        xr.len(),
        xs.len(),
        xt.len(),
    ))
}

/// (features, target) pairs of the next-flow bytes task (see the module docs).
pub fn next_flow_rows(flows: &[FlowRecord]) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut by_pair: HashMap<HostPair, Vec<&FlowRecord>> = HashMap::new();
    let sorted = time_sorted(flows);
    for r in &sorted {
        by_pair.entry(r.pair()).or_default().push(r);
    }
    let mut pairs: Vec<_> = by_pair.into_iter().collect();
    pairs.sort_by_key(|(p, _)| *p);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (_, v) in pairs {
        for i in 0..v.len().saturating_sub(1) {
            let mut f = full_features(v[i]);
            let gap = if i == 0 {
                -7.0
            } else {
                log10_time((v[i].start_us - v[i - 1].start_us) as f64 / 1e6)
            };
            f.push(gap);
            x.push(f);
            y.push(log10_count(v[i + 1].bytes as f64));
        }
    }
    (x, y)
}

/// Next-flow bytes regression, TRTR and TSTR (see the module docs).
pub fn next_flow_bytes(
    train: &[FlowRecord],
    synthetic: &[FlowRecord],
    test: &[FlowRecord],
) -> Result<TaskScore, MetricsError> {
    const TASK: &str = "next-flow bytes";
    let rows = |v: &[FlowRecord]| -> Result<(Vec<Vec<f64>>, Vec<f64>), MetricsError> {
        let (x, y) = next_flow_rows(v);
        if x.is_empty() {
            return Err(MetricsError::TooFew {
                what: format!("{TASK} (no host pair with 2 flows)"),
                min: 2,
            });
        }
        Ok((subsample(&x, MAX_ROWS), subsample(&y, MAX_ROWS)))
    };
    let (xr, yr) = rows(train)?;
    let (xs, ys) = rows(synthetic)?;
    let (xt, yt) = rows(test)?;
    let trtr = mse(&yt, &forest_regress(&xr, &yr, &xt, TASK)?);
    let tstr = mse(&yt, &forest_regress(&xs, &ys, &xt, TASK)?);
    Ok(score(
        TASK,
        "MSE (log10 bytes)^2",
        trtr,
        tstr,
        xr.len(),
        xs.len(),
        xt.len(),
    ))
}

/// Intrusion detection, TRTR and TSTR (see the module docs). `attacks` may hold benign-labelled flows too (a
/// whole CIC-IDS2017 folder): only the non-benign ones are used. Errors when none is an attack.
pub fn intrusion_detection(
    train: &[FlowRecord],
    synthetic: &[FlowRecord],
    test: &[FlowRecord],
    attacks: &[FlowRecord],
) -> Result<TaskScore, MetricsError> {
    const TASK: &str = "intrusion detection";
    let attacks: Vec<&FlowRecord> = attacks
        .iter()
        .filter(|r| !is_benign_label(r.label.as_deref()))
        .collect();
    if attacks.len() < 2 {
        return Err(MetricsError::Mismatch(format!(
            "the attack flows hold {} flows labelled as an attack (labels other than benign/background); at least 2 are needed",
            attacks.len()
        )));
    }
    let atk_train: Vec<Vec<f64>> = attacks
        .iter()
        .step_by(2)
        .map(|r| full_features(r))
        .collect();
    let atk_test: Vec<Vec<f64>> = attacks
        .iter()
        .skip(1)
        .step_by(2)
        .map(|r| full_features(r))
        .collect();
    let atk_train = subsample(&atk_train, MAX_ROWS);
    let atk_test = subsample(&atk_test, MAX_ROWS);
    let benign = |v: &[FlowRecord]| -> Vec<Vec<f64>> {
        let b: Vec<FlowRecord> = v
            .iter()
            .filter(|r| is_benign_label(r.label.as_deref()))
            .cloned()
            .collect();
        subsample(&b, MAX_ROWS).iter().map(full_features).collect()
    };
    for (what, v) in [
        ("real training", train),
        ("synthetic", synthetic),
        ("real test", test),
    ] {
        if !v.iter().any(|r| is_benign_label(r.label.as_deref())) {
            return Err(MetricsError::Mismatch(format!(
                "{TASK}: the {what} set has no benign-labelled (or unlabelled) flow"
            )));
        }
    }
    let training = |b: Vec<Vec<f64>>| -> (Vec<Vec<f64>>, Vec<u32>) {
        let y: Vec<u32> = std::iter::repeat_n(0, b.len())
            .chain(std::iter::repeat_n(1, atk_train.len()))
            .collect();
        (b.into_iter().chain(atk_train.iter().cloned()).collect(), y)
    };
    let (xr, yr) = training(benign(train));
    let (xs, ys) = training(benign(synthetic));
    let test_benign = benign(test);
    let yt: Vec<u32> = std::iter::repeat_n(0, test_benign.len())
        .chain(std::iter::repeat_n(1, atk_test.len()))
        .collect();
    let xt: Vec<Vec<f64>> = test_benign.into_iter().chain(atk_test).collect();
    let trtr = f1_of(&yt, &forest_classify(&xr, &yr, &xt, TASK)?, 1);
    let tstr = f1_of(&yt, &forest_classify(&xs, &ys, &xt, TASK)?, 1);
    Ok(score(
        TASK,
        "F1 (attack)",
        trtr,
        tstr,
        xr.len(),
        xs.len(),
        xt.len(),
    ))
}

/// Every utility task; intrusion detection only when `attacks` is non-empty.
pub fn utility(
    train: &[FlowRecord],
    synthetic: &[FlowRecord],
    test: &[FlowRecord],
    attacks: &[FlowRecord],
) -> Result<Utility, MetricsError> {
    Ok(Utility {
        protocol_classification: protocol_classification(train, synthetic, test)?,
        next_flow_bytes: next_flow_bytes(train, synthetic, test)?,
        intrusion_detection: if attacks.is_empty() {
            None
        } else {
            Some(intrusion_detection(train, synthetic, test, attacks)?)
        },
    })
}
