//! The first commands a newcomer runs, end to end through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn temponet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_temponet"))
}
fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(rel)
}
fn run(cmd: &mut Command) -> (bool, String, String) {
    let o = cmd.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(name).map(str::trim))
        .unwrap_or_else(|| panic!("no `{name}` in:\n{out}"))
}

#[test]
fn inspect_prints_plain_row_counts_and_a_summary() {
    for (file, rows, pairs) in [
        ("iot23/CTU-Malware-Capture-34-1-labeled.csv", "23145", "49"),
        ("ugr16/july-week5-first5k.csv", "5000", ""),
        ("ugr16/netshare-ugr16-small.csv", "1000", ""),
        ("cicids2017/BENIGN_5000.csv", "5000", ""),
    ] {
        let (ok, out, err) = run(temponet().arg("inspect").arg(shared(file)));
        assert!(ok, "{err}");
        assert_eq!(field(&out, "rows"), rows, "{out}");
        if !pairs.is_empty() {
            assert_eq!(field(&out, "host pairs"), pairs);
        }
        for line in [
            "time span",
            "hosts",
            "protocols",
            "top dst ports",
            "TCP flags",
            "inter-arrival s",
        ] {
            field(&out, line);
        }
    }
    let (_, out, _) = run(temponet()
        .arg("inspect")
        .arg(shared("iot23/CTU-Malware-Capture-34-1-labeled.csv")));
    assert!(
        field(&out, "protocols").starts_with("TCP 92.2%, UDP 7.8%"),
        "{out}"
    );
    assert!(
        field(&out, "top dst ports").starts_with("TCP/80 62.5%"),
        "{out}"
    );
}

#[test]
fn inspect_json_and_several_files() {
    let dir = shared("iot23");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (ok, out, err) = run(temponet().arg("inspect").arg("--json").args(&files));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"], 46_662);
}

#[test]
fn convert_every_family_to_json_lines_and_back() {
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "iot23/CTU-Malware-Capture-34-1-labeled.csv",
        "ugr16/july-week5-first5k.csv",
        "ugr16/netshare-ugr16-small.csv",
        "cicids2017/Botnet_736.csv",
    ] {
        let jsonl = dir.path().join("out.jsonl");
        let (ok, _, err) = run(temponet().arg("convert").arg(shared(file)).arg(&jsonl));
        assert!(ok, "{err}");
        let back = dir.path().join("back.csv");
        let (ok, _, err) = run(temponet()
            .args(["convert", "--to", "csv"])
            .arg(&jsonl)
            .arg(&back));
        assert!(ok, "{err}");
        let zeek = dir.path().join("back.log");
        let (ok, _, err) = run(temponet().arg("convert").arg(&jsonl).arg(&zeek));
        assert!(ok, "{err}");
        let original = temponet::format::read_all(&[shared(file)]).unwrap();
        assert_eq!(
            temponet::format::read_all(&[&jsonl]).unwrap(),
            original,
            "{file} via JSON lines"
        );
        assert_eq!(
            temponet::format::read_all(&[&back]).unwrap(),
            original,
            "{file} via JSON lines then CSV"
        );
        assert_eq!(
            temponet::format::read_all(&[&zeek]).unwrap().len(),
            original.len()
        );
    }
}

#[test]
fn bad_input_is_a_clear_error_or_counted_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "\r\n2016-07-27 13:43:21,1.0,1.2.3.4,5.6.7.8,53,53,UDP,.A....,0,0,2,209,x\r\n2016-07-27 13:43:21,1.0,1.2.3.4,5.6.7.8,53,53,UDP,.A....,0,0,two,209,x\r\n").unwrap();
    let (ok, _, err) = run(temponet().arg("inspect").arg(&bad));
    assert!(!ok);
    assert!(
        err.contains("bad.csv:3: field `pkt`: invalid number \"two\""),
        "{err}"
    );
    let rejects = dir.path().join("rej.jsonl");
    let (ok, out, err) = run(temponet()
        .args(["inspect", "--on-error", "skip", "--rejects"])
        .arg(&rejects)
        .arg(&bad));
    assert!(ok, "{err}");
    assert_eq!(field(&out, "rows"), "1");
    assert_eq!(field(&out, "rejected"), "1");
    assert!(err.contains("rejected 1 rows"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&rejects).unwrap().lines().count(),
        1
    );
    let (ok, _, err) = run(temponet()
        .arg("inspect")
        .arg(dir.path().join("missing.csv")));
    assert!(!ok && err.contains("missing.csv: No such file"), "{err}");
    let (ok, _, err) = run(temponet()
        .arg("convert")
        .arg(&bad)
        .arg(dir.path().join("x.unknown")));
    assert!(!ok && err.contains("--to jsonl|csv|zeek"), "{err}");
}
