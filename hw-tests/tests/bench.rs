//! Tests of the whole-dataplane benchmark's pure parts: the pcap writer and the capture's
//! frames, the director's config, and the parsing of testpmd's output and the dataplane's stats
//! into measurement windows. No DPDK, no root, no timed assertions.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use tandem_hw_tests::bench::{
    self, BenchReport, CaptureSpec, Order, Round, RunSpec, Sample, Summary, TestpmdParser, TxSink,
};
use tandem_hw_tests::config;
use tandem_hw_tests::pcap::{self, PcapWriter};
use tandem_hw_tests::stats::Stats;

fn spec(conns: u32, order: Order) -> CaptureSpec {
    CaptureSpec {
        conns,
        data_per_conn: 2,
        servers: 3,
        port_mac: bench::PCAP_PMD_MAC,
        order,
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[test]
fn global_and_record_headers_are_classic_little_endian_pcap() {
    assert_eq!(
        pcap::global_header(65_535),
        [
            0xd4, 0xc3, 0xb2, 0xa1, // magic, microseconds
            2, 0, 4, 0, // version 2.4
            0, 0, 0, 0, // thiszone
            0, 0, 0, 0, // sigfigs
            0xff, 0xff, 0, 0, // snaplen 65535
            1, 0, 0, 0, // LINKTYPE_ETHERNET
        ]
    );
    assert_eq!(
        pcap::record_header(1, 2, 64),
        [1, 0, 0, 0, 2, 0, 0, 0, 64, 0, 0, 0, 64, 0, 0, 0]
    );
}

#[test]
fn writer_output_parses_back_with_the_same_frames() {
    let mut w = PcapWriter::new(Vec::new()).expect("header");
    w.write(&[0xaa; 60]).expect("frame");
    w.write(&[0xbb; 66]).expect("frame");
    assert_eq!(w.packets(), 2);
    assert_eq!(w.bytes(), 24 + 16 + 60 + 16 + 66);
    let bytes = w.finish().expect("flush");
    assert_eq!(bytes.len(), 24 + 16 + 60 + 16 + 66);
    assert_eq!(pcap::file_size([60, 66]), bytes.len() as u64);
    let recs = pcap::parse(&bytes).expect("parses");
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0].orig_len, recs[0].data), (60, &[0xaa; 60][..]));
    assert_eq!((recs[1].ts_sec, recs[1].ts_usec), (0, 1));
    assert_eq!(recs[1].data.len(), 66);
    // A truncated file is refused with its offset.
    let e = pcap::parse(&bytes[..bytes.len() - 1]).expect_err("truncated");
    assert!(e.to_string().contains("record at offset 100"), "{e}");
    assert!(pcap::parse(&[0u8; 24]).is_err(), "bad magic");
}

/// Verifies the RFC 1071 sum over `data` (with `initial`) comes out as 0.
fn sums_to_zero(data: &[u8], initial: u32) -> bool {
    bench::checksum(data, initial) == 0
}

#[test]
fn capture_holds_arps_then_syns_then_shuffled_data_rounds() {
    let s = spec(50, Order::Shuffled);
    assert_eq!(s.packets(), 3 + 50 * 3);
    assert_eq!(s.forwarded_per_pass(), 150);
    let bytes = s.write(Vec::new()).expect("written");
    assert_eq!(bytes.len() as u64, s.file_size());
    let recs = pcap::parse(&bytes).expect("parses");
    assert_eq!(recs.len() as u64, s.packets());
    let lens: Vec<usize> = recs.iter().map(|r| r.data.len()).collect();
    assert!(lens[..3].iter().all(|l| *l == bench::ARP_FRAME_LEN));
    assert!(lens[3..53].iter().all(|l| *l == bench::SYN_FRAME_LEN));
    assert!(lens[53..].iter().all(|l| *l == bench::DATA_FRAME_LEN));
    assert!(recs.iter().all(|r| r.orig_len as usize == r.data.len()));

    // The ARP reply of server 1 to the director.
    let arp = recs[1].data;
    assert_eq!(&arp[0..6], &bench::PCAP_PMD_MAC);
    assert_eq!(&arp[6..12], &CaptureSpec::server_mac(1));
    assert_eq!(be16(arp, 12), 0x0806);
    assert_eq!(be16(arp, 20), 2, "reply");
    assert_eq!(&arp[28..32], &Ipv4Addr::new(10, 0, 0, 12).octets());
    assert_eq!(&arp[38..42], &bench::DIRECTOR_ADDR.octets());

    // Connection 7's SYN.
    let syn = recs[3 + 7].data;
    assert_eq!(&syn[0..6], &bench::PCAP_PMD_MAC);
    assert_eq!(be16(syn, 12), 0x0800);
    let ip = &syn[14..34];
    assert!(sums_to_zero(ip, 0), "IPv4 header checksum");
    assert_eq!(be16(ip, 2), 52);
    assert_eq!((ip[8], ip[9]), (64, 6));
    let (client, sport) = bench::client(7);
    assert_eq!(client, Ipv4Addr::new(100, 64, 0, 2));
    assert_eq!(&ip[12..16], &client.octets());
    assert_eq!(&ip[16..20], &bench::VIP.octets());
    let tcp = &syn[34..];
    assert_eq!((be16(tcp, 0), be16(tcp, 2)), (sport, 80));
    assert_eq!(be32(tcp, 4), bench::isn(7));
    assert_eq!((tcp[12] >> 4, tcp[13]), (8, 0x02), "32-byte header, SYN");
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&ip[12..20]);
    pseudo.extend_from_slice(&[0, 6, 0, 32]);
    pseudo.extend_from_slice(tcp);
    assert!(sums_to_zero(&pseudo, 0), "TCP checksum");

    // Each data round names every connection exactly once, not in connection order.
    for round in 0..2 {
        let mut seen: Vec<u32> = recs[53 + round * 50..53 + (round + 1) * 50]
            .iter()
            .map(|r| {
                let d = r.data;
                assert_eq!(d[47], 0x18, "ACK|PSH");
                assert_eq!(&d[54..], bench::DATA_PAYLOAD);
                let src = Ipv4Addr::new(d[26], d[27], d[28], d[29]);
                let sport = be16(d, 34);
                let i = (u32::from(src) - u32::from(bench::FIRST_CLIENT)) * 4
                    + u32::from(sport - 40_000);
                assert_eq!(be32(d, 38), bench::isn(i).wrapping_add(1));
                i
            })
            .collect();
        assert_ne!(seen, (0..50).collect::<Vec<_>>(), "shuffled");
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }
    let seq = spec(50, Order::Sequential)
        .write(Vec::new())
        .expect("written");
    let seq = pcap::parse(&seq).expect("parses");
    assert_eq!(seq[53].data, client_data_of(&recs, 0));
}

/// The data segment of connection `i` in a capture.
fn client_data_of<'a>(recs: &[pcap::Record<'a>], i: u32) -> &'a [u8] {
    let (src, sport) = bench::client(i);
    recs.iter()
        .find(|r| {
            r.data.len() == bench::DATA_FRAME_LEN
                && r.data[26..30] == src.octets()
                && be16(r.data, 34) == sport
        })
        .map(|r| r.data)
        .unwrap_or_default()
}

#[test]
fn capture_spec_is_validated_and_cached_by_its_parameters() {
    assert!(spec(1, Order::Shuffled).validate().is_ok());
    assert!(spec(0, Order::Shuffled).validate().is_err());
    assert!(
        spec(bench::MAX_CONNS + 1, Order::Shuffled)
            .validate()
            .is_err()
    );
    let mut s = spec(10, Order::Shuffled);
    s.port_mac = [1, 0, 0, 0, 0, 0];
    assert!(s.validate().is_err(), "group MAC");
    assert_eq!(
        spec(1_000_000, Order::Shuffled).cache_name(),
        "tandem-bench-f1-c1000000-d2-s3-shuffled-027063617000.pcap"
    );
    assert_eq!(
        bench::parse_mac("02:70:63:61:70:00").ok(),
        Some(bench::PCAP_PMD_MAC)
    );
    assert!(bench::parse_mac("02:70:63").is_err());
}

fn run_spec(pcap: &str) -> RunSpec {
    RunSpec {
        pcap: pcap.into(),
        tx: TxSink::DevNull,
        lcore: 1,
        main_lcore: 0,
        mbufs: bench::mbufs_for(3_000_008).expect("fits"),
        memory_mb: bench::eal_memory_mb(3_032_776, bench::BENCH_MBUF_DATA_ROOM),
        io_prefix: "tb-io".into(),
        dp_prefix: "tb-dp".into(),
    }
}

#[test]
fn director_config_is_one_pcap_port_that_the_dataplane_accepts() {
    let s = spec(1_000_000, Order::Shuffled);
    let run = run_spec("/var/tmp/x.pcap");
    assert_eq!(run.mbufs, 3_032_776);
    assert!(run.memory_mb < 8 * 1024, "{}", run.memory_mb);
    let cfg = bench::director_config(&s, &run, Path::new("/tmp/s.json")).expect("config");
    let text = config::to_toml(&cfg).expect("toml");
    let back = config::from_toml(&text).expect("the dataplane's own validation passes");
    assert_eq!(back, cfg);
    assert_eq!(cfg.dataplane.mbuf_data_room, 512);
    assert_eq!(cfg.dataplane.idle_sleep_max_us, 0);
    assert!(cfg.connections.max_per_lcore >= 1_000_000 + 100_000);
    assert_eq!(cfg.services[0].servers.len(), 3);
    assert_eq!(cfg.eal.args[0..2], ["-l".to_owned(), "1".to_owned()]);
    assert!(
        cfg.eal.args.contains(
            &"net_pcap0,rx_pcap=/var/tmp/x.pcap,infinite_rx=1,tx_pcap=/dev/null".to_owned()
        )
    );
    let io = bench::testpmd_args(&run).expect("args");
    for want in [
        "--forward-mode=io",
        "--nb-cores=1",
        "--mbuf-size=512",
        "--total-num-mbufs=3032776",
        "0,1",
    ] {
        assert!(io.iter().any(|a| a == want), "{want} in {io:?}");
    }
    assert_eq!(
        bench::vdev_arg(Path::new("/tmp/x.pcap"), TxSink::Drop).expect("ok"),
        "net_pcap0,rx_pcap=/tmp/x.pcap,infinite_rx=1"
    );
    assert!(bench::vdev_arg(Path::new("/tmp/a,b.pcap"), TxSink::DevNull).is_err());
}

/// Two stats blocks as `dpdk-testpmd --stats-period 1` prints them (22.11), screen-clearing
/// escapes included.
const TESTPMD_OUT: &str = "\
Logical Core 1 (socket 0) forwards packets on 1 streams:
  RX P=0/Q=0 (socket 0) -> TX P=0/Q=0 (socket 0) peer=02:00:00:00:00:00
\x1b[2J\x1b[1;1H
Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  RX-packets: 232992     RX-missed: 0          RX-bytes:  14212512
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 0          TX-errors: 0          TX-bytes:  0

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
\x1b[2J\x1b[1;1H
Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  RX-packets: 24602720   RX-missed: 0          RX-bytes:  1500765920
  RX-errors: 0
  RX-nombuf:  7         
  TX-packets: 24369760   TX-errors: 0          TX-bytes:  1486555360

  Throughput (since last show)
  Rx-pps:     12183067          Rx-bps:   5945337096
  Tx-pps:     12183083          Tx-bps:   5945344904
  ############################################################################
";

#[test]
fn testpmd_stats_blocks_become_samples() {
    let mut p = TestpmdParser::new();
    let blocks: Vec<BTreeMap<String, u64>> =
        TESTPMD_OUT.lines().filter_map(|l| p.feed(l)).collect();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0]["RX-packets"], 232_992);
    assert_eq!(blocks[1]["TX-packets"], 24_369_760);
    assert_eq!(blocks[1]["RX-nombuf"], 7);
    assert_eq!(blocks[1]["Rx-pps"], 12_183_067);
    let s = bench::testpmd_sample(Duration::from_secs(2), &blocks[1]).expect("sample");
    assert_eq!((s.rx, s.fwd), (24_602_720, 24_369_760));
    assert_eq!(s.other.get("RX-nombuf"), Some(&7));
    assert!(!s.other.contains_key("RX-bytes"));
    assert!(bench::testpmd_sample(Duration::ZERO, &BTreeMap::new()).is_none());
}

fn sample(t_ms: u64, rx: u64, fwd: u64, cpu_ns: u64) -> Sample {
    Sample {
        t: Duration::from_millis(t_ms),
        rx,
        fwd,
        other: BTreeMap::new(),
        cpu: [(100, cpu_ns), (101, 5)].into_iter().collect(),
    }
}

#[test]
fn window_starts_after_a_full_pass_and_measures_rates_and_cpu_share() {
    let samples = vec![
        sample(1000, 500, 400, 1_000_000_000),
        sample(2000, 1_500, 1_400, 2_000_000_000),
        sample(3000, 3_000, 2_990, 3_000_000_000),
        sample(13_000, 23_000, 22_990, 12_500_000_000),
        sample(14_000, 25_000, 24_990, 13_500_000_000),
    ];
    assert!(bench::window(&samples, 100_000, Duration::from_secs(10)).is_none());
    assert!(bench::window(&samples, 1_000, Duration::from_secs(20)).is_none());
    let (a, b) = bench::window(&samples, 1_000, Duration::from_secs(10)).expect("window");
    assert_eq!(
        (a.t, b.t),
        (Duration::from_secs(2), Duration::from_secs(13))
    );
    let m = bench::measure(a, b);
    assert_eq!((m.rx, m.fwd), (21_500, 21_590));
    assert!((m.seconds - 11.0).abs() < 1e-9);
    assert!((m.rx_pps - 21_500.0 / 11.0).abs() < 1e-6);
    assert!((m.cpu_share - 10.5 / 11.0).abs() < 1e-9, "{}", m.cpu_share);
    assert!((bench::ns_added(1e6, 4e6) - 750.0).abs() < 1e-9);
    assert_eq!(
        bench::parse_schedstat("6547823512 1369174350 29916\n"),
        Some(6_547_823_512)
    );
    assert_eq!(bench::parse_schedstat(""), None);
}

/// The dataplane's stats file, cut down to what the benchmark reads.
const STATS: &str = r#"{
  "unix_ms": 1700000000000,
  "ports": [{"name": "bench", "device": "net_pcap0", "port_id": 0,
             "mac": "02:70:63:61:70:00", "address": "10.0.0.1/24"}],
  "lcores": [],
  "total": {"rx_packets": 3000016, "rx_bytes": 1, "tx_packets": 3000000, "tx_bytes": 2,
            "arp_replies": 0, "forwarded": 3000000,
            "drops": {"not_for_us_mac": 0, "tcp_no_connection": 3, "conn_table_full": 0}}
}"#;

#[test]
fn director_stats_become_samples_with_their_drops() {
    let st = Stats::parse(STATS).expect("stats");
    assert_eq!(st.port_mac("bench").as_deref(), Some("02:70:63:61:70:00"));
    let s = bench::director_sample(Duration::from_secs(3), &st.total);
    assert_eq!((s.rx, s.fwd), (3_000_016, 3_000_000));
    assert_eq!(s.other.get("tx_packets"), Some(&3_000_000));
    let drops = bench::drops(&s.other);
    assert_eq!(
        drops,
        [("tcp_no_connection".to_owned(), 3)].into_iter().collect()
    );
    let before = Sample {
        t: Duration::from_secs(1),
        rx: 16,
        fwd: 0,
        other: [("drops.tcp_no_connection".to_owned(), 1)]
            .into_iter()
            .collect(),
        cpu: BTreeMap::new(),
    };
    let m = bench::measure(&before, &s);
    assert_eq!(bench::drops(&m.other).get("tcp_no_connection"), Some(&2));
    assert!(m.cpu_share.is_nan(), "no thread times: unknown");
}

#[test]
fn rounds_summarise_to_medians_and_a_table() {
    let m = |mpps: u32| bench::Measured {
        rx_pps: f64::from(mpps) * 1e6,
        fwd_pps: f64::from(mpps) * 1e6,
        seconds: 10.0,
        rx: u64::from(mpps) * 10_000_000,
        fwd: u64::from(mpps) * 10_000_000,
        other: BTreeMap::new(),
        cpu_share: 0.99,
    };
    let rounds = vec![
        Round::new(m(8), m(2)),
        Round::new(m(6), m(1)),
        Round::new(m(10), m(4)),
    ];
    assert!((rounds[0].ratio - 0.25).abs() < 1e-12);
    assert!((rounds[0].ns_added - 375.0).abs() < 1e-9);
    let sum = Summary::of(&rounds);
    assert!((sum.io_mpps - 8.0).abs() < 1e-12);
    assert!((sum.director_mpps - 2.0).abs() < 1e-12);
    assert!((sum.ns_added - 375.0).abs() < 1e-9);
    assert!((bench::median(&[1.0, 3.0]) - 2.0).abs() < 1e-12);
    assert!(bench::median(&[]).is_nan());
    let report = BenchReport {
        capture: Some(spec(1_000_000, Order::Shuffled)),
        packets_per_pass: 3_000_003,
        rounds,
        median: sum,
        connections: 1_000_000,
        connections_ok: true,
        ..BenchReport::default()
    };
    let table = report.table();
    assert!(table.contains("median"), "{table}");
    assert!(
        table.contains("   8.000      125.0         2.000      500.0   0.250     375.0"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::to_value(&report).expect("json");
    assert_eq!(json["median"]["ns_added"], 375.0);
    assert_eq!(json["capture"]["port_mac"], "02:70:63:61:70:00");
    assert_eq!(json["capture"]["order"], "shuffled");
    assert_eq!(json["tx"], "devnull");
}
