//! Property tests for every reader: arbitrary records survive the lossless writers, and arbitrary damage to a row of
//! any family gives either a record or an error that names the file and the right line — never a panic.

use proptest::prelude::*;
use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use temponet::format::{FlowReader, FlowWriter, OutputFormat};
use temponet::record::{FlowRecord, TcpFlags};

fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
    ]
}

prop_compose! {
    fn arb_record()(
        start_us in 0i64..4_102_444_800_000_000, // 1970 .. 2100
        duration_us in 0u64..10_000_000_000,
        src in arb_ip(), dst in arb_ip(),
        src_port in any::<u16>(), dst_port in any::<u16>(), proto in any::<u8>(), flags in any::<u8>(),
        packets in 0u64..1 << 40, bytes in 0u64..1 << 50,
        label in proptest::option::of("[A-Za-z0-9 &/,\"-]{1,20}"),
    ) -> FlowRecord {
        // Labels are trimmed by the CSV readers: generate them trimmed.
        let label = label.map(|l| l.trim().to_string()).filter(|l| !l.is_empty());
        FlowRecord { start_us, duration_us, src, dst, src_port, dst_port, proto, flags: TcpFlags(flags), packets, bytes, label }
    }
}

fn write(records: &[FlowRecord], f: OutputFormat) -> Vec<u8> {
    let mut w = FlowWriter::new(Vec::new(), f).unwrap();
    records.iter().for_each(|r| w.write(r).unwrap());
    w.finish().unwrap()
}

fn read(bytes: Vec<u8>) -> Vec<Result<FlowRecord, temponet::format::ParseError>> {
    FlowReader::from_reader("prop", Cursor::new(bytes))
        .unwrap()
        .collect()
}

/// A valid header + first row for each family, and the line the damaged second row will be on.
const FAMILIES: &[(&str, &str, u64)] = &[
    (
        "",
        "\r\n2016-07-27 13:43:21,48.380,187.96.221.207,42.219.153.7,53,53,UDP,.A....,0,0,2,209,background\r\n",
        3,
    ),
    (
        "srcip,dstip,srcport,dstport,proto,ts,td,pkt,byt,type\n",
        "1730436467,719036359,0,0,ICMP,1458298072364000.0,305.6,62,1736,background\n",
        3,
    ),
    (
        "ts,uid,id.orig_h,id.orig_p,id.resp_h,id.resp_p,proto,service,duration,orig_bytes,resp_bytes,conn_state,local_orig,local_resp,missed_bytes,history,orig_pkts,orig_ip_bytes,resp_pkts,resp_ip_bytes,tunnel_parents,label,detailed-label\n",
        "1545403816.962094,C,192.168.1.195,41040,185.244.25.235,80,tcp,,3.139211,0,0,S0,,,0,S,3,180,0,0,,Benign,-\n",
        3,
    ),
    (
        "#separator \\x09\n#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tduration\torig_pkts\tresp_pkts\torig_ip_bytes\tresp_ip_bytes\thistory\n",
        "1547127327.187656\t192.168.1.197\t50642\t185.244.25.183\t4975\ttcp\t1.097122\t9\t7\t543\t596\tShAdDaf\n",
        4,
    ),
    (
        "",
        "{\"ts\":1547127327.187656,\"id.orig_h\":\"192.168.1.197\",\"id.orig_p\":50642,\"id.resp_h\":\"185.244.25.183\",\"id.resp_p\":4975,\"proto\":\"tcp\",\"orig_pkts\":9}\n",
        2,
    ),
    (
        "Flow ID,Src IP,Src Port,Dst IP,Dst Port,Protocol,Timestamp,Flow Duration,Total Fwd Packet,Total Bwd packets,Total Length of Fwd Packet,Total Length of Bwd Packet,SYN Flag Count,Label\n",
        "f,172.16.0.1,55191,192.168.10.50,4005,6,2017-07-07 17:51:49.618008,49,1,1,0,0,1,Portscan\n",
        3,
    ),
    (
        "",
        "{\"ts\":1,\"dur\":0,\"src\":\"10.0.0.1\",\"dst\":\"10.0.0.2\",\"sport\":1,\"dport\":80,\"proto\":6,\"pkts\":1,\"bytes\":40}\n",
        2,
    ),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn json_lines_and_csv_are_lossless(records in proptest::collection::vec(arb_record(), 1..20)) {
        for f in [OutputFormat::Jsonl, OutputFormat::Csv] {
            let back: Vec<FlowRecord> = read(write(&records, f)).into_iter().collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(&back, &records);
        }
    }

    #[test]
    fn bincode_is_lossless(r in arb_record()) {
        prop_assert_eq!(FlowRecord::from_bincode(&r.to_bincode()).unwrap(), r);
    }

    #[test]
    fn damaged_rows_never_panic_and_name_their_line(
        family in 0..FAMILIES.len(),
        field in 0usize..24,
        junk in prop_oneof![".{0,12}", "[0-9.-]{1,25}", Just(String::new()), "[\u{0}-\u{7f}]{0,8}"],
    ) {
        let (header, row, line) = FAMILIES[family];
        let sep = if row.contains('\t') { '\t' } else { ',' };
        // Damage one field of a copy of the valid row (JSON rows: damage the whole text after a prefix).
        let damaged = if row.starts_with('{') {
            format!("{}{}\n", &row[..row.len().min(field * 4)], junk.replace('\n', " "))
        } else {
            let mut fields: Vec<String> = row.trim_end().split(sep).map(str::to_string).collect();
            let i = field % fields.len();
            fields[i] = junk.replace(['\n', '\r', '"'], " ");
            format!("{}\n", fields.join(&sep.to_string()))
        };
        let text = format!("{header}{row}{damaged}");
        let reader = FlowReader::from_reader("damaged.csv", Cursor::new(text.into_bytes())).unwrap();
        let results: Vec<_> = reader.collect();
        prop_assert!(results[0].is_ok(), "the valid row still parses: {:?}", results[0]);
        for r in &results[1..] {
            if let Err(e) = r {
                prop_assert_eq!(&e.file, "damaged.csv");
                prop_assert!(e.line >= line, "error {} reports line {} < {}", e, e.line, line);
                let prefix = format!("damaged.csv:{}: ", e.line);
                prop_assert!(e.to_string().starts_with(&prefix), "{}", e);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(reader) = FlowReader::from_reader("junk", Cursor::new(bytes)) {
            for r in reader.take(1000) {
                let _ = r;
            }
        }
    }
}
