//! `temponet eval` end to end: outputs on real data, and clear errors on empty or mismatched input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel)
}

fn eval(args: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_temponet"))
        .arg("eval")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn eval_writes_reports_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let ugr = data("ugr16/july-week5-first5k.csv");
    let net = data("ugr16/netshare-ugr16-small.csv");
    let o = eval(&[
        Path::new("--real"),
        &ugr,
        Path::new("--synthetic"),
        &net,
        Path::new("--no-utility"),
        Path::new("--out"),
        &out,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("| EMD log10 inter-arrival |"), "{stdout}");
    for f in [
        "report.json",
        "report.md",
        "inter_arrival_cdf.png",
        "port_bars.png",
        "flows_per_second.png",
    ] {
        assert!(
            out.join(f)
                .metadata()
                .map(|m| m.len() > 100)
                .unwrap_or(false),
            "{f} missing"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["real"]["flows"], 5000);
    assert_eq!(json["models"][0]["synthetic"]["flows"], 1000);
}

#[test]
fn empty_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let ugr = data("ugr16/july-week5-first5k.csv");
    let o = eval(&[
        Path::new("--real"),
        &ugr,
        Path::new("--synthetic"),
        &empty,
        Path::new("--out"),
        dir.path(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--synthetic") && e.contains("empty.jsonl"),
        "{e}"
    );
}

#[test]
fn unreadable_and_mismatched_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ugr = data("ugr16/july-week5-first5k.csv");
    // Not a flow file.
    let junk = dir.path().join("junk.csv");
    std::fs::write(&junk, "name,age\nalice,3\n").unwrap();
    let o = eval(&[
        Path::new("--real"),
        &ugr,
        Path::new("--synthetic"),
        &junk,
        Path::new("--out"),
        dir.path(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("junk.csv") && e.contains("unrecognised flow format"),
        "{e}"
    );
    // Training part equal to the test part.
    let o = eval(&[
        Path::new("--real"),
        &ugr,
        Path::new("--synthetic"),
        &ugr,
        Path::new("--train"),
        &ugr,
        Path::new("--out"),
        dir.path(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("mismatched inputs") && e.contains("also training flows"),
        "{e}"
    );
    // Attack files without any attack.
    let benign = data("cicids2017/BENIGN_5000.csv");
    let o = eval(&[
        Path::new("--real"),
        &ugr,
        Path::new("--synthetic"),
        &ugr,
        Path::new("--attacks"),
        &benign,
        Path::new("--out"),
        dir.path(),
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("0 of them labelled as an attack"), "{e}");
    // A missing --synthetic is refused by the parser.
    let o = eval(&[Path::new("--real"), &ugr, Path::new("--out"), dir.path()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--synthetic"), "{}", stderr(&o));
}
