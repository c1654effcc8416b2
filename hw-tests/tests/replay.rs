//! The real `tandem-dataplane` replaying a finite capture on DPDK's pcap PMD (rx from one
//! file, tx into another): the benchmark's traffic, but every frame that comes out is checked.
//! The capture is read as fast as the lcore polls, so nearly every rx burst is full and goes
//! through the rx loop's prefetch passes and the inline fast path; the SYNs take the general
//! path (new connections), the data segments the fast one, and the last burst is partial.
//!
//! Needs root (DPDK's EAL); otherwise the test prints `SKIP: <reason>` and returns. As root a
//! missing dataplane binary is a failure (`cargo build --workspace` builds it into
//! target/debug, where this test looks).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tandem_hw_tests::bench::{self, CaptureSpec, Order, RunSpec, Segment, TxSink};
use tandem_hw_tests::config::{self, online_cpus};
use tandem_hw_tests::exec::is_root;
use tandem_hw_tests::pcap;
use tandem_hw_tests::process::locate_dataplane;
use tandem_hw_tests::stats::Stats;

/// A work directory and the dataplane's DPDK runtime directory, removed on drop, and the
/// dataplane killed if it still runs.
struct Run {
    dir: PathBuf,
    runtime_dir: PathBuf,
    child: Option<Child>,
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

/// The frame the director must send for capture frame `input` (connection to VIP:80), NAT to
/// real server `server`: MACs to the server's from the port's, destination address and port
/// rewritten, TTL one less, both checksums computed afresh over the whole header and segment.
fn expected_nat(input: &[u8], spec: &CaptureSpec, server: u32) -> Vec<u8> {
    let mut f = input.to_vec();
    f[0..6].copy_from_slice(&CaptureSpec::server_mac(server));
    f[6..12].copy_from_slice(&spec.port_mac);
    f[22] -= 1;
    f[30..34].copy_from_slice(&spec.server(server).octets());
    f[36..38].copy_from_slice(&bench::RS_PORT.to_be_bytes());
    f[24..26].fill(0);
    let ip_sum = bench::checksum(&f[14..34], 0);
    f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    f[50..52].fill(0);
    let tcp_len = u16::try_from(f.len() - 34).expect("short segment");
    let mut pseudo = Vec::with_capacity(12 + f.len() - 34);
    pseudo.extend_from_slice(&f[26..34]);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&tcp_len.to_be_bytes());
    pseudo.extend_from_slice(&f[34..]);
    let tcp_sum = bench::checksum(&pseudo, 0);
    f[50..52].copy_from_slice(&tcp_sum.to_be_bytes());
    f
}

/// The connection index of a frame from the capture's clients (see [`bench::client`]).
fn conn_of(frame: &[u8]) -> u32 {
    let src = u32::from(Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]));
    let port = u32::from(u16::from_be_bytes([frame[34], frame[35]]));
    (src - u32::from(bench::FIRST_CLIENT)) * bench::PORTS_PER_CLIENT + (port - 40_000)
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn log_tail(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|t| {
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        })
        .unwrap_or_default()
}

#[test]
fn every_replayed_frame_leaves_once_nat_rewritten_to_its_connections_server() {
    let test = "every_replayed_frame_leaves_once_nat_rewritten_to_its_connections_server";
    if !is_root() {
        println!("SKIP: {test}: not root (DPDK's EAL)");
        return;
    }
    let binary = locate_dataplane(None).expect("the tandem-dataplane binary");
    let dir = std::env::temp_dir().join(format!("tandem-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("work dir");
    let prefix = format!("tandem-replay-{}", std::process::id());
    let mut run = Run {
        dir: dir.clone(),
        runtime_dir: Path::new("/var/run/dpdk").join(&prefix),
        child: None,
    };
    // 3 001 connections (not a multiple of the burst), three data rounds in shuffled order,
    // four servers: 12 004 frames in, 12 004 − 4 ARP replies out.
    let spec = CaptureSpec {
        conns: 3_001,
        data_per_conn: 3,
        servers: 4,
        port_mac: bench::PCAP_PMD_MAC,
        order: Order::Shuffled,
    };
    let input = dir.join("in.pcap");
    let output = dir.join("out.pcap");
    spec.write(std::io::BufWriter::new(
        std::fs::File::create(&input).expect("capture file"),
    ))
    .expect("writing the capture");
    let lcore = *online_cpus().last().expect("an online CPU");
    let mbufs = bench::mbufs_for(spec.packets()).expect("mbufs");
    let rs = RunSpec {
        pcap: input.clone(),
        tx: TxSink::DevNull,
        lcore,
        main_lcore: lcore,
        mbufs,
        memory_mb: bench::eal_memory_mb(mbufs, bench::BENCH_MBUF_DATA_ROOM),
        io_prefix: format!("tandem-replay-io-{}", std::process::id()),
        dp_prefix: prefix,
    };
    let stats_file = dir.join("stats.json");
    let mut cfg = bench::director_config(&spec, &rs, &stats_file).expect("config");
    // Read the capture once (no infinite_rx) and write what leaves into a file.
    let vdev = format!(
        "{},rx_pcap={},tx_pcap={}",
        bench::PCAP_DEVICE,
        input.display(),
        output.display()
    );
    for a in &mut cfg.eal.args {
        if a.starts_with(bench::PCAP_DEVICE) {
            a.clone_from(&vdev);
        }
    }
    let cfg_path = dir.join("dataplane.toml");
    std::fs::write(&cfg_path, config::to_toml(&cfg).expect("toml")).expect("config file");
    let log = dir.join("dataplane.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(&binary)
        .arg("--config")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .spawn()
        .expect("starting tandem-dataplane");
    let child = run.child.insert(child);

    // Until every frame was received and the forwarded ones sent (bounded).
    let forwarded = spec.forwarded_per_pass();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tandem-dataplane exited ({status}):\n{}", log_tail(&log));
        }
        if let Ok(s) = Stats::read(&stats_file) {
            let done = s.total.get("rx_packets") == spec.packets()
                && s.total.get("tx_packets") == forwarded;
            last = Some(s);
            if done {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not every frame came through in 120 s; last stats: {:?}\nlog:\n{}",
            last.as_ref().map(|s| s.total.nonzero()),
            log_tail(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(child);
    let stats = last.expect("stats");
    assert_eq!(stats.total.get("forwarded"), forwarded);
    assert_eq!(
        bench::drops(&stats.total.0),
        BTreeMap::new(),
        "no frame dropped"
    );

    // What left: exactly the expected frames, connection by connection.
    let bytes = std::fs::read(&output).expect("the tx capture");
    let records = pcap::parse(&bytes).expect("the tx capture parses");
    assert_eq!(
        records.len() as u64,
        forwarded,
        "one frame out per frame in"
    );
    let mut server_of: BTreeMap<u32, u32> = BTreeMap::new();
    let mut frames_of: BTreeMap<u32, Vec<&[u8]>> = BTreeMap::new();
    for r in &records {
        let f = r.data;
        assert!(
            f.len() >= 54 && f[12..14] == [8, 0],
            "an IPv4 frame: {f:02x?}"
        );
        let i = conn_of(f);
        assert!(i < spec.conns, "a capture client: {f:02x?}");
        let dst = Ipv4Addr::new(f[30], f[31], f[32], f[33]);
        let s = (0..spec.servers)
            .find(|&s| spec.server(s) == dst)
            .unwrap_or_else(|| panic!("to a real server, not {dst}"));
        assert_eq!(
            *server_of.entry(i).or_insert(s),
            s,
            "connection {i} stays on one server"
        );
        frames_of.entry(i).or_default().push(f);
    }
    assert_eq!(server_of.len(), spec.conns as usize, "every connection");
    for (i, frames) in &frames_of {
        let s = server_of[i];
        let mut want = vec![expected_nat(
            &bench::client_segment(spec.port_mac, *i, Segment::Syn),
            &spec,
            s,
        )];
        let data = expected_nat(
            &bench::client_segment(spec.port_mac, *i, Segment::Data),
            &spec,
            s,
        );
        want.extend((0..spec.data_per_conn).map(|_| data.clone()));
        let got: Vec<Vec<u8>> = frames.iter().map(|f| f.to_vec()).collect();
        assert_eq!(
            got, want,
            "connection {i}: its SYN, then its data, in order"
        );
    }
    // Round robin over one lcore: the servers took turns.
    let mut per_server = BTreeMap::new();
    for s in server_of.values() {
        *per_server.entry(*s).or_insert(0u32) += 1;
    }
    assert_eq!(
        per_server,
        BTreeMap::from([(0, 751), (1, 750), (2, 750), (3, 750)]),
        "rr's turns"
    );
    drop(run);
}
