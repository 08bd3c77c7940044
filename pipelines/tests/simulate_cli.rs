//! `temponet simulate` end to end: the files it writes are read by `temponet inspect` in every output format,
//! the same options give the same bytes, and bad options fail with a message.

use std::path::Path;
use std::process::{Command, Output};

fn temponet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_temponet"))
        .args(args)
        .output()
        .expect("runs temponet")
}

fn simulate(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "simulate",
        "--hosts",
        "30",
        "--span",
        "2h",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = temponet(&args);
    assert!(
        o.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn inspect_json(path: &Path) -> serde_json::Value {
    let o = temponet(&["inspect", "--json", path.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("inspect --json prints JSON")
}

/// The flow count `simulate` reports on stderr.
fn reported_flows(o: &Output) -> u64 {
    let err = String::from_utf8_lossy(&o.stderr);
    let rest = err
        .split("simulated ")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary in {err:?}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn simulate_writes_files_inspect_reads() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("sim.jsonl");
    let o = simulate(&jsonl, &["--attacks", "portscan,ssh-brute,beacon"]);
    let n = reported_flows(&o);
    assert!(n > 1_000, "{n} flows");
    let s = inspect_json(&jsonl);
    assert_eq!(s["rows"].as_u64(), Some(n));
    let labels: Vec<&str> = s["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["value"].as_str().unwrap())
        .collect();
    for l in ["benign", "portscan", "ssh-brute", "beacon"] {
        assert!(labels.contains(&l), "label {l} missing from {labels:?}");
    }
    assert!(!labels.contains(&"ddos"));
    // Window: Monday 2026-01-05 00:00 UTC for two hours.
    let first = s["first_start_us"].as_i64().unwrap();
    assert!((1_767_571_200_000_000..1_767_571_200_000_000 + 7_200_000_000).contains(&first));

    // Same options, same bytes.
    let again = dir.path().join("again.jsonl");
    simulate(&again, &["--attacks", "portscan,ssh-brute,beacon"]);
    assert!(
        std::fs::read(&jsonl).unwrap() == std::fs::read(&again).unwrap(),
        "same seed must write the same file"
    );

    // CSV and Zeek (by extension and by --format) read back with the same row count.
    for (name, extra) in [
        ("sim.csv", vec![]),
        ("sim.log", vec![]),
        ("sim.out", vec!["--format", "zeek"]),
    ] {
        let p = dir.path().join(name);
        let mut args = vec!["--attacks", "portscan,ssh-brute,beacon"];
        args.extend(extra);
        simulate(&p, &args);
        assert_eq!(inspect_json(&p)["rows"].as_u64(), Some(n), "{name}");
    }
}

#[test]
fn scenario_path_limit_and_regime_change() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("quiet.toml");
    let text = include_str!("../../scenarios/enterprise.toml")
        .replace("sessions_per_hour = 30.0", "sessions_per_hour = 3.0");
    std::fs::write(&scenario, text).unwrap();
    let busy = dir.path().join("busy.jsonl");
    let quiet = dir.path().join("quiet.jsonl");
    let n_busy = reported_flows(&simulate(&busy, &["--start", "2026-01-05T09:00:00Z"]));
    let n_quiet = reported_flows(&simulate(
        &quiet,
        &[
            "--start",
            "2026-01-05T09:00:00Z",
            "--scenario",
            scenario.to_str().unwrap(),
        ],
    ));
    assert!(
        n_quiet * 2 < n_busy,
        "a scenario file with 10x fewer workstation sessions: {n_quiet} vs {n_busy}"
    );

    let limited = dir.path().join("limited.jsonl");
    assert_eq!(
        reported_flows(&simulate(&limited, &["--limit", "500"])),
        500
    );
    assert_eq!(inspect_json(&limited)["rows"].as_u64(), Some(500));

    let drift = dir.path().join("drift.jsonl");
    let n = reported_flows(&simulate(
        &drift,
        &[
            "--regime-change-at",
            "1h",
            "--second-scenario",
            "enterprise-night-shift",
        ],
    ));
    assert_eq!(inspect_json(&drift)["rows"].as_u64(), Some(n));
}

#[test]
fn bad_options_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.jsonl");
    let out = out.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["simulate", "--out", out, "--scenario", "nope"],
            "neither an embedded scenario",
        ),
        (
            vec![
                "simulate",
                "--out",
                out,
                "--span",
                "1h",
                "--regime-change-at",
                "2h",
                "--second-scenario",
                "enterprise",
            ],
            "inside the span",
        ),
        (
            vec!["simulate", "--out", out, "--span", "3 parsecs"],
            "--span",
        ),
        (
            vec!["simulate", "--out", out, "--attacks", "phishing"],
            "unknown attack",
        ),
        (
            vec!["simulate", "--out", out, "--regime-change-at", "2h"],
            "--second-scenario",
        ),
        (
            vec!["simulate", "--out", out, "--start", "yesterday"],
            "RFC 3339",
        ),
    ] {
        let o = temponet(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}
