//! Streaming sketches agree with the exact offline metrics on the shared data, within the tolerance stated in
//! `temponet::metrics::sketch`: EMD log10 within 0.002 decades, raw EMD and KS within 1 % relative or 0.01
//! absolute, JSD within 0.005 (summaries exact), DKC counts and coverage identical. Merging and bincode keep
//! the figures.

use std::path::PathBuf;
use temponet::FlowRecord;
use temponet::format::reader::read_all;
use temponet::metrics::distances::{Continuous, distances};
use temponet::metrics::sketch::{DEFAULT_CAPACITY, FlowSketch, SketchFigures};
use temponet::metrics::{coverage, dkc, split_by_time, time_sorted};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel)
}

fn close(sketch: f64, exact: f64, rel: f64, abs: f64) -> bool {
    (sketch - exact).abs() <= abs.max(rel * exact.abs())
}

/// Rule name and counts (pass % may be NaN, which never compares equal).
fn counts(v: &[dkc::RuleResult]) -> Vec<(String, dkc::RuleCount, dkc::RuleCount)> {
    v.iter()
        .map(|r| (r.rule.clone(), r.real, r.synthetic))
        .collect()
}

fn assert_agree(real: &[FlowRecord], synth: &[FlowRecord], what: &str) {
    let f = SketchFigures::between(
        &FlowSketch::of(real, DEFAULT_CAPACITY),
        &FlowSketch::of(synth, DEFAULT_CAPACITY),
    );
    let d = distances(real, synth, 10);
    for field in Continuous::ALL {
        let e = d.continuous(field).unwrap();
        let s = f.continuous.iter().find(|c| c.field == field).unwrap();
        assert_eq!(
            (s.n_real, s.n_synthetic),
            (e.n_real, e.n_synthetic),
            "{what} {field:?}"
        );
        eprintln!(
            "{what} {field:?}: log EMD {:.5} vs {:.5}, raw EMD {:.5} vs {:.5}, KS {:.5} vs {:.5} (sketch vs exact)",
            s.emd_log10, e.emd_log10, s.emd_raw, e.emd_raw, s.ks, e.ks
        );
        assert!(
            close(s.emd_log10, e.emd_log10, 0.0, 0.002),
            "{what} {field:?} log EMD sketch {} exact {}",
            s.emd_log10,
            e.emd_log10
        );
        assert!(
            close(s.emd_raw, e.emd_raw, 0.01, 0.01),
            "{what} {field:?} raw EMD sketch {} exact {}",
            s.emd_raw,
            e.emd_raw
        );
        assert!(
            close(s.ks, e.ks, 0.01, 0.01),
            "{what} {field:?} KS sketch {} exact {}",
            s.ks,
            e.ks
        );
    }
    assert!(
        f.categorical_exact,
        "{what}: the shared sets fit the default capacity"
    );
    for e in &d.categorical {
        let s = f.categorical.iter().find(|c| c.field == e.field).unwrap();
        eprintln!("{what} {:?}: JSD {:.6} vs {:.6}", e.field, s.jsd, e.jsd);
        assert!(
            (s.jsd - e.jsd).abs() <= 0.005,
            "{what} {:?} JSD sketch {} exact {}",
            e.field,
            s.jsd,
            e.jsd
        );
    }
    assert_eq!(
        counts(&f.dkc),
        counts(&dkc::check(real, synth)),
        "{what}: DKC counts"
    );
    assert!(f.pairs_exact);
    assert_eq!(
        f.coverage,
        coverage::coverage(real, synth),
        "{what}: coverage"
    );
}

#[test]
fn sketches_agree_with_exact_metrics_on_shared_data() {
    let iot = read_all(&[data("iot23/CTU-Malware-Capture-34-1-labeled.csv")]).unwrap();
    let (train, test) = split_by_time(&iot, 0.8);
    assert_agree(&test, &train, "IoT-23 34-1 last 20 % vs first 80 %");
    let ugr = read_all(&[data("ugr16/july-week5-first5k.csv")]).unwrap();
    let (a, b) = split_by_time(&ugr, 0.5);
    assert_agree(&b, &a, "UGR'16 5k halves");
    let net = read_all(&[data("ugr16/netshare-ugr16-small.csv")]).unwrap();
    assert_agree(&net, &b, "NetShare UGR'16 vs UGR'16 5k");
}

#[test]
fn merged_and_shipped_sketches_keep_their_figures() {
    let ugr = time_sorted(&read_all(&[data("ugr16/july-week5-first5k.csv")]).unwrap());
    let iot = read_all(&[data("iot23/CTU-Malware-Capture-34-1-labeled.csv")]).unwrap();
    let whole = FlowSketch::of(&ugr, DEFAULT_CAPACITY);
    // Two workers sharded by host pair, as the dataflow routes them.
    let (w0, w1): (Vec<FlowRecord>, Vec<FlowRecord>) = ugr
        .iter()
        .cloned()
        .partition(|r| r.pair().stable_hash() & 1 == 0);
    let mut merged = FlowSketch::of(&w0, DEFAULT_CAPACITY);
    let shipped =
        FlowSketch::from_bytes(&FlowSketch::of(&w1, DEFAULT_CAPACITY).to_bytes()).unwrap();
    merged.merge(&shipped).unwrap();
    assert_eq!(merged.flows(), whole.flows());
    let other = FlowSketch::of(&iot, DEFAULT_CAPACITY);
    let a = SketchFigures::between(&whole, &other);
    let b = SketchFigures::between(&merged, &other);
    // Everything but the global inter-arrival (pooled per-worker gaps, see the docs) merges exactly.
    for (x, y) in a.categorical.iter().zip(&b.categorical) {
        // Equal up to summation order (hash maps iterate in different orders).
        assert!(
            (x.jsd - y.jsd).abs() < 1e-12
                && (x.distinct_real, x.distinct_synthetic)
                    == (y.distinct_real, y.distinct_synthetic),
            "{x:?} {y:?}"
        );
    }
    assert_eq!(counts(&a.dkc), counts(&b.dkc));
    assert_eq!(a.coverage, b.coverage);
    assert_eq!(
        a.pair_inter_arrival, b.pair_inter_arrival,
        "pairs are sharded, so per-pair gaps merge exactly"
    );
    for (x, y) in a
        .continuous
        .iter()
        .zip(&b.continuous)
        .filter(|(x, _)| x.field != Continuous::InterArrival)
    {
        assert_eq!(x, y);
    }
    // A sketch survives bincode unchanged.
    let round = FlowSketch::from_bytes(&whole.to_bytes()).unwrap();
    let c = SketchFigures::between(&round, &other);
    assert_eq!(
        (&c.continuous, counts(&c.dkc), &c.coverage),
        (&a.continuous, counts(&a.dkc), &a.coverage)
    );
    assert!(FlowSketch::from_bytes(&[1, 2, 3]).is_err());
}

#[test]
fn bounded_counts_stay_bounded_and_say_so() {
    use temponet::metrics::sketch::BoundedCounts;
    let mut c = BoundedCounts::new(4);
    for k in 0..4u128 {
        c.add(k, 40);
    }
    assert!(c.is_exact());
    for k in 100..200u128 {
        c.add(k, 1);
    }
    assert!(c.counts().len() <= 8, "{}", c.counts().len());
    assert!(!c.is_exact());
    assert_eq!(c.total(), 260);
    assert_eq!(c.other(), 260 - c.counts().values().sum::<u64>());
    // The heavy hitters survive, under-estimated by at most N / (capacity + 1).
    for k in 0..4u128 {
        let v = c.counts().get(&k).copied().unwrap_or(0);
        assert!(
            v <= 40 && v as f64 >= 40.0 - 260.0 / 5.0 && v > 0,
            "{k}: {v}"
        );
    }
}
