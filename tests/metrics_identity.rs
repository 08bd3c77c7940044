//! Identity cases on the shared real data: a set against itself has EMD 0, JSD 0, equal DKC figures, full
//! coverage; and the whole comparison (with plots) runs on real captures.

use std::path::PathBuf;
use temponet::FlowRecord;
use temponet::format::reader::read_all;
use temponet::metrics::distances::distances;
use temponet::metrics::{EvalOptions, compare, coverage, dkc, split_by_time};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel)
}

fn iot34() -> Vec<FlowRecord> {
    read_all(&[data("iot23/CTU-Malware-Capture-34-1-labeled.csv")]).unwrap()
}

#[test]
fn real_against_itself_is_identical() {
    for set in [
        iot34(),
        read_all(&[data("ugr16/july-week5-first5k.csv")]).unwrap(),
    ] {
        let d = distances(&set, &set, 10);
        for c in &d.continuous {
            assert_eq!(c.emd_log10, 0.0, "{c:?}");
            assert_eq!(c.emd_raw, 0.0, "{c:?}");
            assert_eq!(c.ks, 0.0, "{c:?}");
        }
        for c in &d.categorical {
            assert!(c.jsd.abs() < 1e-12, "{c:?}");
        }
        assert_eq!(
            d.inter_arrival_per_pair.pairs_used,
            d.inter_arrival_per_pair.pairs_wanted
        );
        assert_eq!(d.inter_arrival_per_pair.emd_log10_mean, 0.0);
        for r in dkc::check(&set, &set) {
            assert_eq!(r.real, r.synthetic, "{}", r.rule);
        }
        let cov = coverage::coverage(&set, &set);
        assert_eq!(
            (
                cov.pattern_coverage,
                cov.host_pair_coverage,
                cov.novel_pattern_share
            ),
            (1.0, 1.0, 0.0)
        );
    }
}

#[test]
fn different_parts_of_a_capture_are_not_identical() {
    let (train, test) = split_by_time(&iot34(), 0.8);
    let d = distances(&test, &train, 10);
    assert!(
        d.continuous.iter().all(|c| c.emd_log10 > 0.0 && c.ks > 0.0),
        "{d:?}"
    );
    assert!(d.categorical.iter().any(|c| c.jsd > 0.01), "{d:?}");
}

#[test]
fn compare_writes_plots_and_a_table() {
    // Every 5th flow of UGR'16 keeps the test to a few seconds (privacy is a nearest-neighbour search).
    let ugr: Vec<FlowRecord> = read_all(&[data("ugr16/july-week5-first5k.csv")])
        .unwrap()
        .into_iter()
        .step_by(5)
        .collect();
    let (train, test) = split_by_time(&ugr, 0.8);
    let dir = tempfile::tempdir().unwrap();
    let opts = EvalOptions {
        plot_dir: Some(dir.path().to_path_buf()),
        utility: false,
        ..Default::default()
    };
    let report = compare(
        &test,
        &train,
        &[("copy-of-train", &train), ("test-itself", &test)],
        &opts,
    )
    .unwrap();
    assert_eq!(report.models.len(), 2);
    for p in &report.plots {
        let meta = std::fs::metadata(dir.path().join(p)).unwrap();
        assert!(meta.len() > 10_000, "{p} is {} bytes", meta.len());
    }
    let copy = report.models[0].privacy.as_ref().unwrap();
    assert_eq!(
        copy.exact_match_rate, 1.0,
        "a copy of the training set is caught"
    );
    let itself = &report.models[1];
    assert_eq!(itself.distances.continuous[0].emd_log10, 0.0);
    let table = report.summary_table();
    assert!(
        table.starts_with("| metric | real (real) | copy-of-train | test-itself |"),
        "{table}"
    );
    assert!(
        report
            .to_markdown()
            .contains("![inter_arrival_cdf.png](inter_arrival_cdf.png)")
    );
    // The JSON report serialises (NaN as null).
    let j = serde_json::to_string(&report).unwrap();
    assert!(j.contains("\"emd_log10\""));
    // Training flows passed as the test set are a mismatch.
    let err = compare(&train, &train, &[("x", &test)], &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("also training flows"), "{err}");
    let err = compare(&test, &[], &[("empty", &[])], &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("synthetic `empty`"), "{err}");
}
