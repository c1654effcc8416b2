//! The whole-dataplane benchmark (`tandem-rack bench-pcap`, `tandem-rack bench-dataplane`):
//! one worker lcore replays, from memory, a capture of established NAT connections through
//! DPDK's `net_pcap` vdev (`infinite_rx=1`), beside `dpdk-testpmd` io forwarding on the same
//! vdev and the same lcore. No network traffic: frames come from a file already copied into
//! mbufs and leave to `/dev/null` (or are freed by the PMD with `--tx drop`).
//!
//! This module holds the pure parts — the capture's frames, the director's config, the
//! parsers of testpmd's output and of the measurement windows, the report — and
//! [`crate::bench_run`] the processes.
//!
//! The capture, replayed in a loop: first one ARP reply from each real server to the director
//! (so it knows their MACs and nothing waits for ARP), then a TCP SYN of every connection from a
//! distinct client address:port to VIP:80, then `data_per_conn` rounds of one data segment
//! (ACK|PSH, 10 bytes of payload, a 64-byte frame) per connection — in connection order, or by
//! default each round in its own pseudo-random order, as connections of real traffic do not
//! take turns in the order they were opened. After the first pass every
//! SYN meets its ESTABLISHED connection (IPVS keeps a SYN on ESTABLISHED in ESTABLISHED) and
//! every segment is an established NAT packet; rates are measured after that pass.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tandem_dataplane::config::{
    ConnectionsSection, DataplaneSection, EalSection, Ipv4Cidr, MethodName, PortSection,
    ProtocolName, ServerSection, ServiceSection, VipSection,
};

use crate::config::DirectorConfig;
use crate::error::{Error, Result};
use crate::pcap::{self, PcapWriter};
use crate::stats::Counters;

/// The MAC DPDK's pcap PMD gives its first port: `02:70:63:61:70:<index>`, "locally
/// administered" then `p c a p` in ASCII (`drivers/net/pcap`, `pmd_init_internals`).
pub const PCAP_PMD_MAC: [u8; 6] = [0x02, 0x70, 0x63, 0x61, 0x70, 0x00];
/// The vdev the benchmark drives.
pub const PCAP_DEVICE: &str = "net_pcap0";
/// The director's address on its one port.
pub const DIRECTOR_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Prefix length of the port's subnet (the real servers are on it).
pub const DIRECTOR_PREFIX_LEN: u8 = 24;
/// The virtual IP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The virtual port.
pub const VPORT: u16 = 80;
/// The real servers' port (NAT maps the port too, as in seed 002).
pub const RS_PORT: u16 = 8080;
/// First client address: clients come from 100.64.0.0/10, four source ports per address.
pub const FIRST_CLIENT: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// Source ports per client address.
pub const PORTS_PER_CLIENT: u32 = 4;
/// The upstream router's MAC: the source of every client frame.
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xfe];
/// Most connections a capture may hold (client addresses stay inside 100.64.0.0/10).
pub const MAX_CONNS: u32 = 4_000_000;
/// Most real servers (they are .11 .. .250 of the port's /24).
pub const MAX_SERVERS: u32 = 240;
/// Payload of each data segment: 14 + 20 + 20 + 10 = a 64-byte frame.
pub const DATA_PAYLOAD: &[u8; 10] = b"tandem-b\r\n";
/// Frame sizes (no FCS, as captured): ARP padded to the 60-byte minimum, SYN with 12 bytes of
/// options, data segment.
pub const ARP_FRAME_LEN: usize = 60;
/// See [`ARP_FRAME_LEN`].
pub const SYN_FRAME_LEN: usize = 66;
/// See [`ARP_FRAME_LEN`].
pub const DATA_FRAME_LEN: usize = 64;
/// The data room of the benchmark's mbufs: every frame is at most 66 bytes.
pub const BENCH_MBUF_DATA_ROOM: u32 = 512;
/// Bumped whenever the frames change, so an old cached capture is never reused.
pub const CAPTURE_FORMAT: u32 = 1;

/// What the capture holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CaptureSpec {
    /// Connections (one SYN each).
    pub conns: u32,
    /// Data segments per connection per pass.
    pub data_per_conn: u32,
    /// Real servers of the service.
    pub servers: u32,
    /// The director port's MAC: the destination of every frame.
    #[serde(serialize_with = "ser_mac")]
    pub port_mac: [u8; 6],
    /// The order of the data segments within a round.
    pub order: Order,
}

/// The order of each round of data segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// A pseudo-random permutation of the connections per round (fixed seeds: the same
    /// capture every time).
    #[default]
    Shuffled,
    /// Connection 0, 1, 2, ...: the order the SYNs opened them, which is also the order of
    /// the director's connection slab, so hardware prefetchers see a stream.
    Sequential,
}

impl std::str::FromStr for Order {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "shuffled" => Ok(Order::Shuffled),
            "sequential" => Ok(Order::Sequential),
            other => Err(Error::parse(
                "--order",
                format!("`{other}` is neither shuffled nor sequential"),
            )),
        }
    }
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Order::Shuffled => "shuffled",
            Order::Sequential => "sequential",
        })
    }
}

/// The connections `0..n` in the order of data round `round`.
pub fn data_order(order: Order, n: u32, round: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    if order == Order::Shuffled {
        // Fisher-Yates with xorshift64*, seeded by the round.
        let mut x =
            0x2545_f491_4f6c_dd1d_u64 ^ (u64::from(round) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for i in (1..v.len()).rev() {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let j = usize::try_from(r % (i as u64 + 1)).unwrap_or(0);
            v.swap(i, j);
        }
    }
    v
}

fn ser_mac<S: serde::Serializer>(m: &[u8; 6], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_str(&mac_string(*m))
}

/// `02:70:63:61:70:00`.
pub fn mac_string(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `02:70:63:61:70:00`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let n = crate::net::normalize_mac(s)
        .ok_or_else(|| Error::parse("MAC address", format!("`{s}` is not six hex octets")))?;
    let mut m = [0u8; 6];
    for (o, p) in m.iter_mut().zip(n.split(':')) {
        *o = u8::from_str_radix(p, 16)
            .map_err(|e| Error::parse("MAC address", format!("`{s}`: {e}")))?;
    }
    Ok(m)
}

impl CaptureSpec {
    /// Checks the numbers.
    pub fn validate(&self) -> Result<()> {
        let bad = |d: String| Error::parse("benchmark capture", d);
        if self.conns == 0 || self.conns > MAX_CONNS {
            return Err(bad(format!(
                "--conns {} is not within 1..={MAX_CONNS}",
                self.conns
            )));
        }
        if self.data_per_conn == 0 || self.data_per_conn > 64 {
            return Err(bad(format!(
                "--data-per-conn {} is not within 1..=64",
                self.data_per_conn
            )));
        }
        if self.servers == 0 || self.servers > MAX_SERVERS {
            return Err(bad(format!(
                "--servers {} is not within 1..={MAX_SERVERS}",
                self.servers
            )));
        }
        if self.port_mac[0] & 1 != 0 {
            return Err(bad(format!(
                "port MAC {} is a group address",
                mac_string(self.port_mac)
            )));
        }
        Ok(())
    }

    /// Frames in one pass of the capture.
    pub fn packets(&self) -> u64 {
        u64::from(self.servers) + u64::from(self.conns) * (1 + u64::from(self.data_per_conn))
    }

    /// Frames the director forwards per pass (every SYN and data segment; the ARP replies
    /// only teach it MACs).
    pub fn forwarded_per_pass(&self) -> u64 {
        self.packets() - u64::from(self.servers)
    }

    /// The capture's size in bytes.
    pub fn file_size(&self) -> u64 {
        let arps = std::iter::repeat_n(ARP_FRAME_LEN, self.servers as usize);
        let syns = std::iter::repeat_n(SYN_FRAME_LEN, self.conns as usize);
        let data = std::iter::repeat_n(
            DATA_FRAME_LEN,
            self.conns as usize * self.data_per_conn as usize,
        );
        pcap::file_size(arps.chain(syns).chain(data))
    }

    /// The file name a capture of this spec is cached under.
    pub fn cache_name(&self) -> String {
        format!(
            "tandem-bench-f{CAPTURE_FORMAT}-c{}-d{}-s{}-{}-{}.pcap",
            self.conns,
            self.data_per_conn,
            self.servers,
            self.order,
            mac_string(self.port_mac).replace(':', "")
        )
    }

    /// Real server `s` (0-based): 10.0.0.11, .12, ...
    pub fn server(&self, s: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(DIRECTOR_ADDR) + 10 + s)
    }

    /// The MAC of real server `s`.
    pub fn server_mac(s: u32) -> [u8; 6] {
        let b = s.to_be_bytes();
        [0x02, 0x00, 0x00, 0x01, b[2], b[3]]
    }

    /// Writes the whole capture.
    pub fn write<W: Write>(&self, out: W) -> std::io::Result<W> {
        let mut w = PcapWriter::new(out)?;
        for s in 0..self.servers {
            w.write(&arp_reply(
                Self::server_mac(s),
                self.server(s),
                self.port_mac,
                DIRECTOR_ADDR,
            ))?;
        }
        for i in 0..self.conns {
            w.write(&client_segment(self.port_mac, i, Segment::Syn))?;
        }
        for round in 0..self.data_per_conn {
            for i in data_order(self.order, self.conns, round) {
                w.write(&client_segment(self.port_mac, i, Segment::Data))?;
            }
        }
        w.finish()
    }
}

/// Connection `i`'s client endpoint: 100.64.0.1 + i / 4, source port 40000 + i % 4.
pub fn client(i: u32) -> (Ipv4Addr, u16) {
    let addr = Ipv4Addr::from(u32::from(FIRST_CLIENT) + i / PORTS_PER_CLIENT);
    let port = 40_000 + (i % PORTS_PER_CLIENT) as u16;
    (addr, port)
}

/// Connection `i`'s initial sequence number (any spread will do).
pub fn isn(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761).wrapping_add(12_345)
}

/// An ARP reply from `sender` (the real server) to the director.
pub fn arp_reply(
    sender_mac: [u8; 6],
    sender: Ipv4Addr,
    target_mac: [u8; 6],
    target: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(ARP_FRAME_LEN);
    f.extend_from_slice(&target_mac);
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&2u16.to_be_bytes()); // reply
    f.extend_from_slice(&sender_mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&target_mac);
    f.extend_from_slice(&target.octets());
    f.resize(ARP_FRAME_LEN, 0);
    f
}

/// Which segment of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// The opening SYN (MSS, window scale, SACK permitted).
    Syn,
    /// ACK|PSH with [`DATA_PAYLOAD`].
    Data,
}

/// A TCP segment of connection `i` from its client to VIP:80, to the director's MAC.
pub fn client_segment(port_mac: [u8; 6], i: u32, seg: Segment) -> Vec<u8> {
    let (src, sport) = client(i);
    let (options, flags, seq, ack, payload): (&[u8], u8, u32, u32, &[u8]) = match seg {
        Segment::Syn => (
            &[2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 1, 1],
            0x02,
            isn(i),
            0,
            &[],
        ),
        Segment::Data => (&[], 0x18, isn(i).wrapping_add(1), 1, DATA_PAYLOAD),
    };
    let tcp_len = 20 + options.len() + payload.len();
    let ip_len = 20 + tcp_len;
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&port_mac);
    f.extend_from_slice(&ROUTER_MAC);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    // IPv4 header, DF, TTL 64.
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&u16::try_from(ip_len).unwrap_or(u16::MAX).to_be_bytes());
    f.extend_from_slice(&i.to_be_bytes()[2..4]); // IP identification: i's low 16 bits
    f.extend_from_slice(&0x4000u16.to_be_bytes());
    f.extend_from_slice(&[64, 6, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&VIP.octets());
    let ip_sum = checksum(&f[ip_start..ip_start + 20], 0);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&ip_sum.to_be_bytes());
    // TCP.
    let tcp_start = f.len();
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&VPORT.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    let doff = u8::try_from((20 + options.len()) / 4).unwrap_or(15);
    f.extend_from_slice(&[doff << 4, flags]);
    f.extend_from_slice(&64_240u16.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    f.extend_from_slice(options);
    f.extend_from_slice(payload);
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&VIP.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&u16::try_from(tcp_len).unwrap_or(0).to_be_bytes());
    let tcp_sum = checksum(&f[tcp_start..], sum_words(&pseudo, 0));
    f[tcp_start + 16..tcp_start + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    f
}

fn sum_words(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// The Internet checksum (RFC 1071) of `data`, starting from the partial sum `initial`.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut acc = sum_words(data, initial);
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !u16::try_from(acc).unwrap_or(u16::MAX)
}

/// Where transmitted frames go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxSink {
    /// `tx_pcap=/dev/null`: the PMD writes every frame with libpcap (a `write(2)` per burst).
    #[default]
    #[serde(rename = "devnull")]
    DevNull,
    /// No tx stream: the PMD frees every frame (`eth_tx_drop`).
    Drop,
}

impl std::str::FromStr for TxSink {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "devnull" => Ok(TxSink::DevNull),
            "drop" => Ok(TxSink::Drop),
            other => Err(Error::parse(
                "--tx",
                format!("`{other}` is neither devnull nor drop"),
            )),
        }
    }
}

impl std::fmt::Display for TxSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TxSink::DevNull => "devnull",
            TxSink::Drop => "drop",
        })
    }
}

/// The `--vdev` argument: `net_pcap0,rx_pcap=FILE,infinite_rx=1[,tx_pcap=/dev/null]`.
pub fn vdev_arg(pcap: &Path, tx: TxSink) -> Result<String> {
    let p = pcap.display().to_string();
    if p.contains([',', '=', ' ']) {
        return Err(Error::parse(
            "capture path",
            format!("`{p}` has a comma, `=` or space, which a --vdev argument cannot carry"),
        ));
    }
    let mut arg = format!("{PCAP_DEVICE},rx_pcap={p},infinite_rx=1");
    if tx == TxSink::DevNull {
        arg.push_str(",tx_pcap=/dev/null");
    }
    Ok(arg)
}

/// Mbufs for a replay of `packets` frames: the PMD holds the whole capture in mbufs, plus
/// bursts in flight and per-lcore caches.
pub fn mbufs_for(packets: u64) -> Result<u32> {
    u32::try_from(packets + 32_768).map_err(|_| {
        Error::parse(
            "benchmark",
            format!("{packets} packets need too many mbufs"),
        )
    })
}

/// EAL memory (`-m`, MiB) for `mbufs` mbufs of `data_room` bytes: each takes the data room,
/// its 128-byte `rte_mbuf` and the mempool's object header (rounded up generously), plus
/// 512 MiB for rings, the capture's ring and the EAL itself.
pub fn eal_memory_mb(mbufs: u32, data_room: u32) -> u64 {
    let per = u64::from(data_room) + 256;
    (u64::from(mbufs) * per).div_ceil(1 << 20) + 512
}

/// How both processes run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSpec {
    /// The capture.
    pub pcap: PathBuf,
    /// Where frames go.
    pub tx: TxSink,
    /// The worker lcore (testpmd's forwarding lcore; its main lcore is another one).
    pub lcore: u32,
    /// testpmd's main lcore.
    pub main_lcore: u32,
    /// Mbufs in the pool.
    pub mbufs: u32,
    /// `-m`.
    pub memory_mb: u64,
    /// DPDK `--file-prefix` of testpmd and of the director.
    pub io_prefix: String,
    /// See `io_prefix`.
    pub dp_prefix: String,
}

/// testpmd's arguments (after the program name): io forwarding of the one port to itself on
/// one forwarding lcore, stats every second, no interactive prompt.
pub fn testpmd_args(run: &RunSpec) -> Result<Vec<String>> {
    Ok(vec![
        "--no-huge".into(),
        "-m".into(),
        run.memory_mb.to_string(),
        "--no-pci".into(),
        "--file-prefix".into(),
        run.io_prefix.clone(),
        "-l".into(),
        format!("{},{}", run.main_lcore, run.lcore),
        "--main-lcore".into(),
        run.main_lcore.to_string(),
        "--vdev".into(),
        vdev_arg(&run.pcap, run.tx)?,
        "--".into(),
        "--forward-mode=io".into(),
        "--nb-cores=1".into(),
        "--port-topology=loop".into(),
        "--auto-start".into(),
        "--stats-period=1".into(),
        format!("--mbuf-size={BENCH_MBUF_DATA_ROOM}"),
        format!("--total-num-mbufs={}", run.mbufs),
        "--no-mlockall".into(),
    ])
}

/// The director's config: one port on the pcap vdev, the VIP and a NAT service with
/// `servers` real servers on the port's subnet, a table for every connection, small mbufs,
/// never an idle sleep, stats every 20 ms.
pub fn director_config(
    spec: &CaptureSpec,
    run: &RunSpec,
    stats_file: &Path,
) -> Result<DirectorConfig> {
    let args = vec![
        "-l".into(),
        run.lcore.to_string(),
        "--no-pci".into(),
        "--no-huge".into(),
        "-m".into(),
        run.memory_mb.to_string(),
        "--file-prefix".into(),
        run.dp_prefix.clone(),
        "--vdev".into(),
        vdev_arg(&run.pcap, run.tx)?,
    ];
    let port = "bench".to_owned();
    Ok(DirectorConfig {
        eal: EalSection { args },
        dataplane: DataplaneSection {
            stats_file: Some(stats_file.display().to_string()),
            stats_interval_ms: 20,
            log_level: "info".into(),
            mbufs: run.mbufs,
            mbuf_cache: 256,
            mbuf_data_room: BENCH_MBUF_DATA_ROOM,
            idle_sleep_max_us: 0,
            ..DataplaneSection::default()
        },
        ports: vec![PortSection {
            name: port.clone(),
            device: PCAP_DEVICE.into(),
            address: Ipv4Cidr {
                addr: DIRECTOR_ADDR,
                prefix_len: DIRECTOR_PREFIX_LEN,
            },
            mtu: None,
        }],
        vips: vec![VipSection { address: VIP, port }],
        routes: Vec::new(),
        connections: ConnectionsSection {
            max_per_lcore: table_size(spec.conns),
            ..ConnectionsSection::default()
        },
        services: vec![ServiceSection {
            protocol: ProtocolName::Tcp,
            address: VIP,
            port: VPORT,
            scheduler: "rr".into(),
            persistence_timeout_s: 0,
            flags: Vec::new(),
            servers: (0..spec.servers)
                .map(|s| ServerSection {
                    address: spec.server(s),
                    port: RS_PORT,
                    method: MethodName::Nat,
                    weight: 1,
                })
                .collect(),
        }],
        control: tandem_dataplane::config::ControlSection {
            socket: stats_file
                .with_file_name("admin.sock")
                .display()
                .to_string(),
            ..Default::default()
        },
        sync: None,
    })
}

/// Connection-table capacity for `conns` connections: an eighth more, and never below the
/// default.
pub fn table_size(conns: u32) -> u32 {
    let want = conns.saturating_add(conns / 8).saturating_add(1024);
    want.max(ConnectionsSection::default().max_per_lcore)
}

/// One reading of cumulative counters, at `t` after the process started.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// When it was taken.
    pub t: Duration,
    /// Frames received.
    pub rx: u64,
    /// Frames forwarded (testpmd: transmitted; the director: `forwarded`).
    pub fwd: u64,
    /// Every other counter, by name (testpmd's `RX-nombuf`, the director's `drops.*`, ...).
    pub other: BTreeMap<String, u64>,
    /// CPU time (ns) each of the process's threads has run, by thread id
    /// (`/proc/PID/task/TID/schedstat`).
    pub cpu: BTreeMap<u32, u64>,
}

/// The CPU time (ns) every thread of `pid` has run so far; empty if `/proc` cannot say.
pub fn thread_cpu_ns(pid: u32) -> BTreeMap<u32, u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return BTreeMap::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let text = std::fs::read_to_string(e.path().join("schedstat")).ok()?;
        Some((tid, parse_schedstat(&text)?))
    })
    .collect()
}

/// The first field of a `schedstat` file: nanoseconds spent on a CPU.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// The measurement window: from the first sample with at least `warm_rx` frames received (a
/// full pass of the capture) to the first at least `seconds` later.
pub fn window(samples: &[Sample], warm_rx: u64, seconds: Duration) -> Option<(&Sample, &Sample)> {
    let a = samples.iter().find(|s| s.rx >= warm_rx)?;
    let b = samples.iter().find(|s| s.t >= a.t + seconds)?;
    Some((a, b))
}

/// What one side measured over its window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Measured {
    /// Frames received per second.
    pub rx_pps: f64,
    /// Frames forwarded per second.
    pub fwd_pps: f64,
    /// The window's length.
    pub seconds: f64,
    /// Frames received in it.
    pub rx: u64,
    /// Frames forwarded in it.
    pub fwd: u64,
    /// The other counters' increase in it, non-zero ones only.
    pub other: BTreeMap<String, u64>,
    /// The share of the window the process's busiest thread (the forwarding lcore) spent on a
    /// CPU: about 1.0 when it had its CPU to itself; lower when another process ran there.
    pub cpu_share: f64,
}

/// The rates between two samples.
pub fn measure(a: &Sample, b: &Sample) -> Measured {
    let secs = b.t.saturating_sub(a.t).as_secs_f64();
    let rx = b.rx.saturating_sub(a.rx);
    let fwd = b.fwd.saturating_sub(a.fwd);
    let per = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    Measured {
        rx_pps: per(rx),
        fwd_pps: per(fwd),
        seconds: secs,
        rx,
        fwd,
        other: b
            .other
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(a.other.get(k).copied().unwrap_or(0)),
                )
            })
            .filter(|(_, v)| *v != 0)
            .collect(),
        cpu_share: b
            .cpu
            .iter()
            .filter_map(|(tid, ns)| Some(ns.saturating_sub(*a.cpu.get(tid)?)))
            .max()
            .map_or(f64::NAN, |ns| {
                if secs > 0.0 {
                    ns as f64 / 1e9 / secs
                } else {
                    f64::NAN
                }
            }),
    }
}

/// Nanoseconds per packet the director adds to io forwarding: 1/rate − 1/io_rate.
pub fn ns_added(director_pps: f64, io_pps: f64) -> f64 {
    if director_pps <= 0.0 || io_pps <= 0.0 {
        return f64::NAN;
    }
    1e9 / director_pps - 1e9 / io_pps
}

/// Reads testpmd's `--stats-period` output line by line and yields the port's counters at
/// the end of each `NIC statistics for port N` block.
#[derive(Debug, Default)]
pub struct TestpmdParser {
    in_block: bool,
    fields: BTreeMap<String, u64>,
}

impl TestpmdParser {
    /// A parser waiting for the first block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one line (terminal escapes allowed); returns the block's fields when it ends:
    /// `RX-packets`, `RX-missed`, `RX-bytes`, `RX-errors`, `RX-nombuf`, `TX-packets`,
    /// `TX-errors`, `TX-bytes`, `Rx-pps`, `Tx-pps`, ...
    pub fn feed(&mut self, line: &str) -> Option<BTreeMap<String, u64>> {
        if line.contains("NIC statistics for port") {
            self.in_block = true;
            self.fields.clear();
            return None;
        }
        if !self.in_block {
            return None;
        }
        let t = line.trim();
        if !t.is_empty() && t.chars().all(|c| c == '#') {
            self.in_block = false;
            return Some(std::mem::take(&mut self.fields));
        }
        let tokens: Vec<&str> = t.split_whitespace().collect();
        for w in tokens.windows(2) {
            if let Some(key) = w[0].strip_suffix(':')
                && let Ok(v) = w[1].parse::<u64>()
            {
                self.fields.insert(key.to_owned(), v);
            }
        }
        None
    }
}

/// A testpmd block as a [`Sample`] taken at `t`; `None` without `RX-packets`/`TX-packets`.
pub fn testpmd_sample(t: Duration, fields: &BTreeMap<String, u64>) -> Option<Sample> {
    Some(Sample {
        t,
        cpu: BTreeMap::new(),
        rx: *fields.get("RX-packets")?,
        fwd: *fields.get("TX-packets")?,
        other: fields
            .iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "RX-missed" | "RX-errors" | "RX-nombuf" | "TX-errors"
                )
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
    })
}

/// The director's stats-file totals as a [`Sample`] taken at `t`: `rx_packets`, `forwarded`,
/// and the `tx_packets` and `drops.*` counters.
pub fn director_sample(t: Duration, total: &Counters) -> Sample {
    Sample {
        t,
        cpu: BTreeMap::new(),
        rx: total.get("rx_packets"),
        fwd: total.get("forwarded"),
        other: total
            .0
            .iter()
            .filter(|(k, _)| k.starts_with("drops.") || *k == "tx_packets")
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
    }
}

/// The drop counters of a director sample or window, non-zero ones only.
pub fn drops(other: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    other
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("drops.").map(|r| (r.to_owned(), *v)))
        .filter(|(_, v)| *v != 0)
        .collect()
}

/// One round: testpmd, then the director, on the same capture and lcore.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Round {
    /// testpmd io forwarding.
    pub io: Measured,
    /// The director.
    pub director: Measured,
    /// Director rate / io rate (received frames).
    pub ratio: f64,
    /// 1/director − 1/io, in nanoseconds per packet.
    pub ns_added: f64,
}

impl Round {
    /// Combines the two measurements.
    pub fn new(io: Measured, director: Measured) -> Self {
        Round {
            ratio: if io.rx_pps > 0.0 {
                director.rx_pps / io.rx_pps
            } else {
                f64::NAN
            },
            ns_added: ns_added(director.rx_pps, io.rx_pps),
            io,
            director,
        }
    }
}

/// The machine the numbers come from.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Machine {
    /// Online CPUs.
    pub nproc: usize,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// /proc/loadavg before the first round and after the last.
    pub loadavg_before: String,
    /// See `loadavg_before`.
    pub loadavg_after: String,
}

/// The benchmark's result.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BenchReport {
    /// The capture.
    pub capture: Option<CaptureSpec>,
    /// The capture file.
    pub pcap: String,
    /// Frames per pass.
    pub packets_per_pass: u64,
    /// Frame sizes: ARP, SYN, data.
    pub frame_bytes: [usize; 3],
    /// Where frames went.
    pub tx: TxSink,
    /// The worker / forwarding lcore.
    pub lcore: u32,
    /// Requested window per side.
    pub seconds: f64,
    /// Each round.
    pub rounds: Vec<Round>,
    /// Medians over the rounds: io Mpps, director Mpps, ratio, ns added.
    pub median: Summary,
    /// The director's non-zero drop counters over the whole last run (first pass included).
    pub director_drops_total: BTreeMap<String, u64>,
    /// The director's drops within the measurement windows, summed over rounds.
    pub director_drops_window: BTreeMap<String, u64>,
    /// Frames received but not forwarded within the windows (ARP replies, which only teach
    /// MACs, and drops), summed over rounds.
    pub director_not_forwarded_window: u64,
    /// Connections the capture opens; the director holds all of them when no SYN was refused
    /// (`conn_table_full`, `no_destination`, ...) and no data segment missed its connection
    /// (`tcp_no_connection`), which `connections_ok` says.
    pub connections: u32,
    /// See `connections`.
    pub connections_ok: bool,
    /// The machine.
    pub machine: Machine,
    /// The testpmd command line.
    pub testpmd_command: String,
    /// The director's command line and its config file's text.
    pub dataplane_command: String,
    /// See `dataplane_command`.
    pub dataplane_config: String,
    /// Measurements repeated because another process shared the lcore.
    pub retries: u32,
}

/// Median figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// testpmd io forwarding, million frames per second.
    pub io_mpps: f64,
    /// The director, million frames per second.
    pub director_mpps: f64,
    /// director / io.
    pub ratio: f64,
    /// Nanoseconds per packet at each rate.
    pub io_ns_per_packet: f64,
    /// See `io_ns_per_packet`.
    pub director_ns_per_packet: f64,
    /// director ns − io ns.
    pub ns_added: f64,
}

/// The median of `v` (mean of the middle two for an even count); NaN when empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

impl Summary {
    /// Medians of the rounds' rates, and the ratio and ns added of those medians.
    pub fn of(rounds: &[Round]) -> Self {
        let io = median(&rounds.iter().map(|r| r.io.rx_pps).collect::<Vec<_>>());
        let dp = median(&rounds.iter().map(|r| r.director.rx_pps).collect::<Vec<_>>());
        Summary {
            io_mpps: io / 1e6,
            director_mpps: dp / 1e6,
            ratio: dp / io,
            io_ns_per_packet: 1e9 / io,
            director_ns_per_packet: 1e9 / dp,
            ns_added: ns_added(dp, io),
        }
    }
}

fn counters_line(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        "none".to_owned()
    } else {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl BenchReport {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut o = String::new();
        if let Some(c) = &self.capture {
            o.push_str(&format!(
                "whole dataplane vs testpmd io forwarding: net_pcap replay from memory, lcore {}, tx {}\n\
                 capture: {} connections, {} servers, {} frames/pass (ARP {} B, SYN {} B, data {} B x {} per connection, {})\n",
                self.lcore,
                self.tx,
                c.conns,
                c.servers,
                self.packets_per_pass,
                self.frame_bytes[0],
                self.frame_bytes[1],
                self.frame_bytes[2],
                c.data_per_conn,
                c.order
            ));
        }
        o.push_str(&format!(
            "{:<7} {:>10} {:>10} {:>13} {:>10} {:>7} {:>9} {:>10}\n",
            "round",
            "io Mpps",
            "io ns/pkt",
            "director Mpps",
            "dir ns/pkt",
            "ratio",
            "ns added",
            "cpu io/dir"
        ));
        let row = |name: String, io: f64, dp: f64, ratio: f64, added: f64, cpu: String| {
            format!(
                "{name:<7} {:>10.3} {:>10.1} {:>13.3} {:>10.1} {:>7.3} {:>9.1} {cpu:>10}\n",
                io / 1e6,
                1e9 / io,
                dp / 1e6,
                1e9 / dp,
                ratio,
                added
            )
        };
        for (i, r) in self.rounds.iter().enumerate() {
            o.push_str(&row(
                format!("{}", i + 1),
                r.io.rx_pps,
                r.director.rx_pps,
                r.ratio,
                r.ns_added,
                format!("{:.2}/{:.2}", r.io.cpu_share, r.director.cpu_share),
            ));
        }
        let m = &self.median;
        o.push_str(&row(
            "median".into(),
            m.io_mpps * 1e6,
            m.director_mpps * 1e6,
            m.ratio,
            m.ns_added,
            String::new(),
        ));
        if self.retries > 0 {
            o.push_str(&format!(
                "{} measurement(s) repeated: another process ran on the lcore\n",
                self.retries
            ));
        }
        o.push_str(&format!(
            "connections: {} ({}); not forwarded in the windows: {} (ARP replies, drops)\n",
            self.connections,
            if self.connections_ok {
                "every SYN and segment found or made its connection"
            } else {
                "SOME WERE REFUSED, see drops"
            },
            self.director_not_forwarded_window
        ));
        o.push_str(&format!(
            "director drops in the windows: {}; over the whole run: {}\n",
            counters_line(&self.director_drops_window),
            counters_line(&self.director_drops_total)
        ));
        o.push_str(&format!(
            "machine: {} CPUs, {}; load average before {} / after {}\n",
            self.machine.nproc,
            self.machine.cpu_model,
            self.machine.loadavg_before,
            self.machine.loadavg_after
        ));
        o
    }
}
