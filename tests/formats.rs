//! Every input family against real files: exact row counts, chosen rows field by field, round trips through every
//! writer, and clear errors for malformed rows. Real samples live in `../shared/data` (see its README).

use std::io::Cursor;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use temponet::format::{
    FlowReader, FlowWriter, Format, FormatError, OnError, OutputFormat, RejectSink, read_all,
    read_files,
};
use temponet::record::{FlowRecord, TcpFlags, proto};

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel)
}
fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}
fn glob(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(shared(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    v.sort();
    v
}
fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
fn read_str(name: &str, text: &str) -> Result<Vec<FlowRecord>, temponet::format::ParseError> {
    FlowReader::from_reader(name, Cursor::new(text.as_bytes().to_vec()))
        .unwrap()
        .collect()
}
fn read_err(name: &str, text: &str) -> String {
    read_str(name, text).unwrap_err().to_string()
}

#[test]
fn ugr16_nfdump_rows_and_values() {
    let path = shared("ugr16/july-week5-first5k.csv");
    assert_eq!(FlowReader::open(&path).unwrap().format(), Format::Nfdump);
    let recs = read_all(&[&path]).unwrap();
    assert_eq!(recs.len(), 5_000);
    // 2016-07-27 13:43:21,48.380,187.96.221.207,42.219.153.7,53,53,UDP,.A....,0,0,2,209,background
    let r = &recs[0];
    assert_eq!(
        r.start_us,
        1_469_627_001_000_000 - 48_380_000,
        "start = te - td"
    );
    assert_eq!(r.duration_us, 48_380_000);
    assert_eq!((r.src, r.dst), (ip("187.96.221.207"), ip("42.219.153.7")));
    assert_eq!((r.src_port, r.dst_port, r.proto), (53, 53, proto::UDP));
    assert_eq!(r.flags, TcpFlags(TcpFlags::ACK));
    assert_eq!((r.packets, r.bytes), (2, 209));
    assert_eq!(r.label.as_deref(), Some("background"));
    // last line: 2016-07-27 13:43:35,0.000,143.72.8.137,42.219.154.98,53,58331,UDP,.A....,0,0,1,101,background
    let last = recs.last().unwrap();
    assert_eq!(
        (
            last.start_us,
            last.duration_us,
            last.dst_port,
            last.packets,
            last.bytes
        ),
        (1_469_627_015_000_000, 0, 58331, 1, 101)
    );
}

#[test]
fn netshare_rows_and_values() {
    let path = shared("ugr16/netshare-ugr16-small.csv");
    assert_eq!(FlowReader::open(&path).unwrap().format(), Format::NetShare);
    let recs = read_all(&[&path]).unwrap();
    assert_eq!(recs.len(), 1_000);
    // 1730436467,719036359,0,0,ICMP,1458298072364000.0,305.63599999999997,62,1736,background
    let r = &recs[0];
    assert_eq!((r.src, r.dst), (ip("103.36.93.115"), ip("42.219.159.199")));
    assert_eq!(
        (r.start_us, r.duration_us, r.proto, r.packets, r.bytes),
        (1_458_298_072_364_000, 305_636_000, proto::ICMP, 62, 1736)
    );
    // line 10: 2968793991,719036242,46556,21,TCP,1458298073336000.0,305.664,204,12060,background
    let r = &recs[8];
    assert_eq!(
        (r.src, r.src_port, r.dst_port, r.proto, r.duration_us),
        (ip("176.244.51.135"), 46556, 21, proto::TCP, 305_664_000)
    );
    let protos: std::collections::BTreeSet<u8> = recs.iter().map(|r| r.proto).collect();
    assert_eq!(
        protos,
        [
            proto::ICMP,
            proto::IPIP,
            proto::TCP,
            proto::UDP,
            proto::IPV6,
            proto::GRE,
            proto::ESP
        ]
        .into_iter()
        .collect()
    );
}

#[test]
fn iot23_zeek_csv_rows_and_values() {
    let files = glob("iot23");
    assert_eq!(files.len(), 9);
    let mut n = 0;
    let stats = read_files(&files, OnError::Fail, None, |_| n += 1).unwrap();
    assert_eq!(n, 46_662);
    assert!(stats.files.iter().all(|f| f.format == Format::ZeekCsv));
    let recs = read_all(&[shared("iot23/CTU-Malware-Capture-34-1-labeled.csv")]).unwrap();
    assert_eq!(recs.len(), 23_145);
    // 1545403816.962094,CrDn63WjJEmrWGjqf,192.168.1.195,41040,185.244.25.235,80,tcp,,3.139211,0,0,S0,,,0,S,3,180,0,0,,Benign,-
    let r = &recs[0];
    assert_eq!(r.start_us, 1_545_403_816_962_094);
    assert_eq!(
        (r.src, r.src_port, r.dst, r.dst_port),
        (ip("192.168.1.195"), 41040, ip("185.244.25.235"), 80)
    );
    assert_eq!(
        (r.duration_us, r.packets, r.bytes, r.flags),
        (3_139_211, 3, 180, TcpFlags(TcpFlags::SYN))
    );
    assert_eq!(r.label.as_deref(), Some("Benign"));
    // line 3: duration unset -> 0
    assert_eq!(
        (recs[1].duration_us, recs[1].packets, recs[1].bytes),
        (0, 1, 60)
    );
    // line 124: ...,tcp,irc,1.128098,75,243,S3,,,0,ShAdDaf,7,447,6,563,,Malicious,C&C
    let r = &recs[122];
    assert_eq!((r.dst_port, r.packets, r.bytes), (6667, 13, 1010));
    assert_eq!(r.flags.to_string(), "...AP.SF");
    assert_eq!(r.label.as_deref(), Some("Malicious/C&C"));
}

#[test]
fn cicids2017_rows_and_values() {
    let files = glob("cicids2017");
    assert_eq!(files.len(), 16);
    let mut labels = std::collections::BTreeMap::<String, u64>::new();
    let stats = read_files(&files, OnError::Fail, None, |r| {
        *labels.entry(r.label.unwrap()).or_default() += 1
    })
    .unwrap();
    assert_eq!(stats.rows(), 43_419);
    assert!(stats.files.iter().all(|f| f.format == Format::CicFlowMeter));
    assert_eq!(labels["BENIGN"], 5_000);
    assert_eq!(labels["Heartbleed"], 11);
    assert_eq!(labels.len(), 16);
    // Portscan first row: 172.16.0.1:55191 -> 192.168.10.50:4005 TCP, 2017-07-07 17:51:49.618008, 49 us,
    // 1+1 packets, 0 payload, headers 24+20, SYN RST ACK counts 1.
    let r = &read_all(&[shared("cicids2017/Portscan_5000.csv")]).unwrap()[0];
    assert_eq!(
        (r.src, r.src_port, r.dst, r.dst_port, r.proto),
        (
            ip("172.16.0.1"),
            55191,
            ip("192.168.10.50"),
            4005,
            proto::TCP
        )
    );
    assert_eq!((r.start_us, r.duration_us), (1_499_449_909_618_008, 49));
    assert_eq!(
        (r.packets, r.bytes),
        (2, 24 + 20 + 2 * 20),
        "payload + transport headers + IPv4 header per packet"
    );
    assert_eq!(
        r.flags,
        TcpFlags(TcpFlags::SYN | TcpFlags::RST | TcpFlags::ACK)
    );
    assert_eq!(r.label.as_deref(), Some("Portscan"));
}

#[test]
fn cic_original_headers_and_dates() {
    let recs = read_all(&[fixture("cic-original.csv")]).unwrap();
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        r.start_us, 1_499_072_158_000_000,
        "3/7/2017 8:55:58 is 3 July (day first)"
    );
    assert_eq!((r.dst_port, r.packets, r.bytes), (443, 2, 12 + 40 + 2 * 20));
    assert_eq!(r.flags, TcpFlags(TcpFlags::ACK));
}

#[test]
fn zeek_native_tsv_and_json() {
    let tsv = read_all(&[fixture("zeek-conn.log")]).unwrap();
    assert_eq!(
        FlowReader::open(fixture("zeek-conn.log")).unwrap().format(),
        Format::ZeekTsv
    );
    assert_eq!(tsv.len(), 3);
    assert_eq!(tsv[0].start_us, 1_547_127_327_187_656);
    assert_eq!(
        (
            tsv[0].packets,
            tsv[0].bytes,
            tsv[0].flags.to_string().as_str()
        ),
        (16, 1139, "...AP.SF")
    );
    assert_eq!(
        (tsv[1].proto, tsv[1].src_port, tsv[1].dst_port),
        (proto::ICMP, 0, 0),
        "ICMP type/code are not ports"
    );
    assert_eq!(
        (tsv[2].src, tsv[2].duration_us, tsv[2].flags),
        (ip("fe80::1"), 0, TcpFlags(0)),
        "`-` unset; no flags on UDP"
    );
    let json = read_all(&[fixture("zeek-conn.json")]).unwrap();
    assert_eq!(
        FlowReader::open(fixture("zeek-conn.json"))
            .unwrap()
            .format(),
        Format::ZeekJson
    );
    assert_eq!(json[0], tsv[0]);
    assert_eq!(json[1], tsv[2]);
}

#[test]
fn nfdump_with_header_split_directions_and_summary() {
    let recs = read_all(&[fixture("nfdump-header.csv")]).unwrap();
    assert_eq!(recs.len(), 1, "the Summary block is not flows");
    let r = &recs[0];
    assert_eq!(
        (r.start_us, r.duration_us),
        (1_469_627_000_500_000, 1_250_000),
        "start from `ts`"
    );
    assert_eq!(
        (r.packets, r.bytes, r.flags.to_nfdump().as_str()),
        (12, 5120, ".AP.SF")
    );
}

fn round_trip(records: &[FlowRecord], format: OutputFormat) -> Vec<FlowRecord> {
    let mut w = FlowWriter::new(Vec::new(), format).unwrap();
    for r in records {
        w.write(r).unwrap();
    }
    let bytes = w.finish().unwrap();
    FlowReader::from_reader("round-trip", Cursor::new(bytes))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn every_family_round_trips_through_json_lines_and_csv() {
    let inputs = [
        shared("ugr16/july-week5-first5k.csv"),
        shared("ugr16/netshare-ugr16-small.csv"),
        shared("iot23/CTU-Malware-Capture-34-1-labeled.csv"),
        shared("cicids2017/DDoS_5000.csv"),
        fixture("zeek-conn.log"),
        fixture("zeek-conn.json"),
        fixture("cic-original.csv"),
    ];
    for path in inputs {
        let recs = read_all(&[&path]).unwrap();
        assert!(!recs.is_empty());
        assert_eq!(
            round_trip(&recs, OutputFormat::Jsonl),
            recs,
            "JSON lines round trip of {}",
            path.display()
        );
        assert_eq!(
            round_trip(&recs, OutputFormat::Csv),
            recs,
            "nfdump CSV round trip of {}",
            path.display()
        );
    }
}

#[test]
fn zeek_writer_reads_back_with_its_documented_losses() {
    let recs = read_all(&[shared("iot23/CTU-Malware-Capture-34-1-labeled.csv")]).unwrap();
    let back = round_trip(&recs, OutputFormat::Zeek);
    assert_eq!(back.len(), recs.len());
    for (a, b) in recs.iter().zip(&back) {
        // Zeek `history` cannot say URG/ECE/CWR; every other field survives.
        assert_eq!(
            FlowRecord {
                flags: TcpFlags(a.flags.0 & 0x1f),
                ..a.clone()
            },
            *b
        );
    }
}

#[test]
fn malformed_rows_name_file_line_and_field() {
    let ugr = "\r\n2016-07-27 13:43:21,48.380,187.96.221.207,42.219.153.7,53,53,UDP,.A....,0,0,2,209,background\r\n";
    assert_eq!(
        read_err(
            "ugr.csv",
            &format!(
                "{ugr}2016-07-27 13:43:22,1.0,187.96.221.300,42.219.153.7,53,53,UDP,.A....,0,0,2,209,x\r\n"
            )
        ),
        "ugr.csv:3: field `sa`: invalid IP address \"187.96.221.300\""
    );
    assert_eq!(
        read_err(
            "ugr.csv",
            &format!(
                "{ugr}2016-07-27 13:43:22,1.0,1.2.3.4,5.6.7.8,53,99999,UDP,.A....,0,0,2,209,x\r\n"
            )
        ),
        "ugr.csv:3: field `dp`: port 99999 out of range 0..=65535"
    );
    assert_eq!(
        read_err(
            "ugr.csv",
            &format!(
                "{ugr}2016-07-27 13:43:22,1.0,1.2.3.4,5.6.7.8,53,53,UDP,.A.X..,0,0,2,209,x\r\n"
            )
        ),
        "ugr.csv:3: field `flg`: invalid TCP flags \".A.X..\""
    );
    assert_eq!(
        read_err(
            "ugr.csv",
            &format!("{ugr}2016-07-27 13:43:22,1.0,1.2.3.4,5.6.7.8,53,53,UDP\r\n")
        ),
        "ugr.csv:3: field `flg`: missing (row has 7 columns)"
    );
    assert_eq!(
        read_err(
            "ns.csv",
            "srcip,dstip,srcport,dstport,proto,ts,td,pkt,byt,type\n1,2,0,0,ICMP,14582980.0,abc,62,1736,x\n"
        ),
        "ns.csv:2: field `td`: invalid duration \"abc\""
    );
    assert_eq!(
        read_err(
            "ns.csv",
            "srcip,dstip,srcport,dstport,proto,ts,td,pkt,byt,type\n1,2,0,0,FOO,14582980.0,1,62,1736,x\n"
        ),
        "ns.csv:2: field `proto`: unknown protocol \"FOO\""
    );
    let zeek_head = "ts,uid,id.orig_h,id.orig_p,id.resp_h,id.resp_p,proto,service,duration,orig_bytes,resp_bytes,conn_state,local_orig,local_resp,missed_bytes,history,orig_pkts,orig_ip_bytes,resp_pkts,resp_ip_bytes,tunnel_parents,label,detailed-label\n";
    assert_eq!(
        read_err(
            "iot.csv",
            &format!(
                "{zeek_head}1545403816.962094,C,192.168.1.195,41040,185.244.25.235,80,tcp,,3.1,0,0,S0,,,0,S,-3,180,0,0,,Benign,-\n"
            )
        ),
        "iot.csv:2: field `orig_pkts`: negative count \"-3\""
    );
    assert_eq!(
        read_err(
            "iot.csv",
            &format!(
                "{zeek_head}yesterday,C,192.168.1.195,41040,185.244.25.235,80,tcp,,3.1,0,0,S0,,,0,S,3,180,0,0,,Benign,-\n"
            )
        ),
        "iot.csv:2: field `ts`: invalid timestamp \"yesterday\""
    );
    assert_eq!(
        read_err(
            "conn.log",
            "#separator \\x09\n#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\n1.5\t10.0.0.1\t1\t10.0.0.2\t80\tudp\n2.5\t10.0.0.1\t1\t10.0.0.2\t80\tbogus\n"
        ),
        "conn.log:4: field `proto`: unknown protocol \"bogus\""
    );
    assert_eq!(
        read_err(
            "conn.log",
            "#separator \\x09\n1.5\t10.0.0.1\t1\t10.0.0.2\t80\tudp\n"
        ),
        "conn.log:2: data line before the `#fields` header"
    );
    let ok = r#"{"ts":1,"dur":0,"src":"10.0.0.1","dst":"10.0.0.2","sport":1,"dport":80,"proto":6,"pkts":1,"bytes":40}"#;
    assert_eq!(
        read_err(
            "f.jsonl",
            &format!("{ok}\n{}\n", ok.replace("\"sport\":1", "\"sport\":-1"))
        )
        .split(": invalid value")
        .next()
        .unwrap(),
        "f.jsonl:2: field `sport`"
    );
    assert!(
        read_err("f.jsonl", &format!("{ok}\nnot json\n")).starts_with("f.jsonl:2: invalid JSON")
    );
    let cic = std::fs::read_to_string(fixture("cic-original.csv")).unwrap();
    assert_eq!(
        read_err("cic.csv", &cic.replace("3/7/2017 8:55:58", "someday")),
        "cic.csv:2: field `Timestamp`: invalid date \"someday\""
    );
}

#[test]
fn whole_file_errors() {
    let e = FlowReader::from_reader("empty.csv", Cursor::new(b"\r\n\r\n".to_vec()))
        .err()
        .unwrap();
    assert_eq!(e.to_string(), "empty.csv: empty file: no flow records");
    let e = FlowReader::from_reader("odd.csv", Cursor::new(b"name,age\nbob,3\n".to_vec()))
        .err()
        .unwrap();
    assert!(matches!(e, FormatError::Unknown { .. }));
    assert!(
        e.to_string()
            .starts_with("odd.csv: unrecognised flow format; first line: \"name,age\""),
        "{e}"
    );
    let e = FlowReader::from_reader("ns.csv", Cursor::new(b"srcip,dstip,ts,proto\n".to_vec()))
        .err()
        .unwrap();
    assert_eq!(
        e.to_string(),
        "ns.csv: header has no `srcport` column (looked for srcport)"
    );
    let e = FlowReader::open("/nonexistent/flows.csv").err().unwrap();
    assert!(e.to_string().starts_with("/nonexistent/flows.csv: "), "{e}");
}

#[test]
fn skip_policy_keeps_rejects_aside_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.csv");
    let good = std::fs::read_to_string(shared("ugr16/july-week5-first5k.csv")).unwrap();
    let mut lines: Vec<&str> = good.split("\r\n").collect();
    lines.insert(
        10,
        "2016-07-27 13:43:21,oops,1.2.3.4,5.6.7.8,53,53,UDP,.A....,0,0,2,209,background",
    );
    lines.insert(20, "garbage");
    std::fs::write(&input, lines.join("\r\n")).unwrap();

    // fail (default) stops at the first bad row, naming it
    let e = read_files(&[&input], OnError::Fail, None, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("mixed.csv:11: field `td`: invalid duration \"oops\""),
        "{e}"
    );

    let mut sink = RejectSink::new(dir.path().join("rejects.jsonl"));
    let mut n = 0;
    let stats = read_files(&[&input], OnError::Skip, Some(&mut sink), |_| n += 1).unwrap();
    assert_eq!(
        (n, stats.rows(), stats.rejected(), sink.count()),
        (5_000, 5_000, 2, 2)
    );
    let rejects: Vec<serde_json::Value> = std::fs::read_to_string(sink.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rejects.len(), 2);
    assert_eq!(
        (rejects[0]["line"].as_u64(), rejects[0]["field"].as_str()),
        (Some(11), Some("td"))
    );
    assert!(rejects[0]["raw"].as_str().unwrap().contains("oops"));
    assert_eq!(rejects[1]["line"].as_u64(), Some(21));
    assert_eq!(
        rejects[1]["field"].as_str(),
        Some("td"),
        "a one-column row lacks td first: {}",
        rejects[1]
    );
}

#[test]
fn a_file_of_only_bad_rows_is_an_error_even_when_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.jsonl");
    std::fs::write(
        &input,
        "{\"ts\":1,\"src\":\"x\"}\n{\"ts\":2,\"src\":\"y\"}\n",
    )
    .unwrap();
    let mut sink = RejectSink::new(dir.path().join("rejects.jsonl"));
    let e = read_files(&[&input], OnError::Skip, Some(&mut sink), |_| {}).unwrap_err();
    assert!(
        matches!(e, FormatError::TooManyRejected { rejected: 2, .. }),
        "{e}"
    );
    assert_eq!(sink.count(), 2);
}
