//! The virtual rack, for real: namespaces, veth pairs, bridges and two `tandem-dataplane`
//! processes on AF_XDP. Needs root and `ip netns`; without them each test prints `SKIP: <reason>`
//! and returns. As root a missing dataplane binary is a failure, never a skip
//! (`cargo build --workspace` builds it into target/debug, where these tests look).
//!
//! Each test uses its own prefix, and a lock keeps them from running at the same time (each
//! rack starts two DPDK processes); a machine-wide lock (`rack::tests_lock`) keeps two runs
//! of these tests on one machine apart. Cleanup runs even when an assertion fails: the `Rack` guard
//! tears down on drop, and a second guard per test runs the prefix-wide teardown after it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tandem_hw_tests::client::ClientOptions;
use tandem_hw_tests::config::{director_config, director_lcores, online_cpus};
use tandem_hw_tests::exec::{Cancel, Cmd, is_root};
use tandem_hw_tests::process::{Stopped, locate_dataplane};
use tandem_hw_tests::rack::{self, DirectorId, Mode, RackOptions, RackSpec, StateDir};
use tandem_hw_tests::{Pmd, Prefix, Rack};
use tandem_hw_tests::{modes, probe};

static RACK_LOCK: Mutex<()> = Mutex::new(());

/// What [`rack_tier`] holds while a test runs: this process's lock, then the machine's.
struct Tier {
    _process: MutexGuard<'static, ()>,
    _machine: rack::TestsLock,
}

/// Root, `ip netns` working, and the locks; `None` (after printing why) when the tier cannot
/// run.
fn rack_tier(test: &str) -> Option<Tier> {
    if !is_root() {
        println!(
            "SKIP: {test}: not root (the virtual rack needs network namespaces, veth and XDP)"
        );
        return None;
    }
    if let Err(e) = rack::list_namespaces() {
        println!("SKIP: {test}: `ip netns` is unavailable: {e}");
        return None;
    }
    let process = RACK_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let machine = rack::tests_lock().expect("the rack tests' machine-wide lock");
    Some(Tier {
        _process: process,
        _machine: machine,
    })
}

/// Runs the prefix-wide teardown when dropped, whatever happened before.
struct Cleanup(Prefix);

impl Cleanup {
    /// Also clears what an earlier, killed run may have left under this prefix.
    fn new(prefix: &str) -> Self {
        let p = Prefix::new(prefix).expect("test prefix");
        rack::teardown(&p).expect("clearing leftovers of an earlier run");
        Cleanup(p)
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Err(e) = rack::teardown(&self.0) {
            eprintln!("cleanup of {}: {e}", self.0);
        }
    }
}

fn assert_nothing_left(prefix: &Prefix) {
    let ns = rack::rack_namespaces(prefix).expect("ip netns list");
    assert!(ns.is_empty(), "namespaces left: {ns:?}");
    let dpdk_left: Vec<String> = std::fs::read_dir(rack::DPDK_RUNTIME_ROOT)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{prefix}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        dpdk_left.is_empty(),
        "DPDK runtime dirs left: {dpdk_left:?}"
    );
    let state = StateDir::for_prefix(prefix);
    assert!(
        !state.path().exists(),
        "state dir left: {}",
        state.path().display()
    );
}

#[test]
fn down_is_idempotent_when_nothing_is_up() {
    let Some(_lock) = rack_tier("down_is_idempotent_when_nothing_is_up") else {
        return;
    };
    let cleanup = Cleanup::new("trk9");
    let first = rack::teardown(&cleanup.0).expect("teardown of nothing");
    assert!(first.is_empty(), "{first:?}");
    let out = Command::new(env!("CARGO_BIN_EXE_tandem-rack"))
        .args(["down", "--prefix", "trk9"])
        .output()
        .expect("run tandem-rack down");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "quiet when nothing is up: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let st = rack::status(&cleanup.0).expect("status");
    assert!(!st.anything_up());
    assert_nothing_left(&cleanup.0);
}

/// The wiring alone, with the kernel standing in for the dataplanes: a temporary address on a
/// director's port is reachable from the client and the real servers reach each other, then the
/// address is removed again.
#[test]
fn topology_wiring_with_kernel_only() {
    let Some(_lock) = rack_tier("topology_wiring_with_kernel_only") else {
        return;
    };
    let cleanup = Cleanup::new("trk3");
    let mut opts = RackOptions::new(cleanup.0.clone());
    opts.start_dataplanes = false;
    let rack = Rack::up(&opts).unwrap_or_else(|e| panic!("topology up: {e}"));
    let ns = |h: &str| rack.netns(h);
    for host in ["sw", "client", "dira", "dirb", "rtr", "rs1", "rs2", "rs3"] {
        assert!(
            rack::rack_namespaces(&cleanup.0)
                .expect("list")
                .contains(&ns(host)),
            "{host}"
        );
    }
    // The directors' ports: up, no address, IPv6 off.
    for host in ["dira", "dirb"] {
        for dev in ["out0", "in0"] {
            assert!(
                probe::kernel_addresses(&ns(host), dev)
                    .expect("addrs")
                    .is_empty(),
                "{host} {dev}"
            );
            let v6 = Cmd::in_netns(
                &ns(host),
                ["sysctl", "-n", &format!("net.ipv6.conf.{dev}.disable_ipv6")],
            )
            .run()
            .expect("sysctl");
            assert_eq!(v6.stdout.trim(), "1", "{host} {dev}");
        }
    }
    let temp = [
        ("dira", "out0", "203.0.113.11/24"),
        ("dira", "in0", "172.16.0.254/24"),
    ];
    for (host, dev, addr) in temp {
        Cmd::new(["ip", "-n", &ns(host), "addr", "add", addr, "dev", dev])
            .run()
            .expect("temp addr");
    }
    let p = probe::ping(&ns("client"), Ipv4Addr::new(203, 0, 113, 11), 2).expect("ping");
    assert!(p.all_answered(), "client -> dira out0 over br-out: {p:?}");
    let p = probe::ping(&ns("rs1"), Ipv4Addr::new(172, 16, 0, 254), 2).expect("ping");
    assert!(
        p.all_answered(),
        "rs1 -> gateway on dira in0 over br-in: {p:?}"
    );
    let p = probe::ping(&ns("rs3"), Ipv4Addr::new(172, 16, 0, 3), 2).expect("ping");
    assert!(p.all_answered(), "rs3 -> rs2 over br-in: {p:?}");
    // The outside and inside networks are separate bridges: B's outside port is not on br-in.
    let n = probe::neighbour(&ns("client"), Ipv4Addr::new(203, 0, 113, 11)).expect("neigh");
    assert!(n.and_then(|n| n.mac()).is_some());
    for (host, dev, addr) in temp {
        Cmd::new(["ip", "-n", &ns(host), "addr", "del", addr, "dev", dev])
            .run()
            .expect("remove temp addr");
        assert!(
            probe::kernel_addresses(&ns(host), dev)
                .expect("addrs")
                .is_empty()
        );
    }
    let down = rack.down().expect("down");
    assert_eq!(down.namespaces.len(), 8);
    assert_nothing_left(&cleanup.0);
}

/// The brief's rack test: up, ping the VIP from the client, exact counters in A's stats file,
/// SIGTERM A and see it exit 0 within 5 s, down, nothing left.
#[test]
fn vip_ping_counters_sigterm_and_clean_down() {
    let Some(_lock) = rack_tier("vip_ping_counters_sigterm_and_clean_down") else {
        return;
    };
    let cleanup = Cleanup::new("trk1");
    let opts = RackOptions::new(cleanup.0.clone());
    let mut rack = Rack::up(&opts).unwrap_or_else(|e| panic!("rack up: {e}"));
    let cancel = Cancel::new();
    let client = rack.client_netns();
    let vip = rack.spec().vip;

    for d in ["dira", "dirb"] {
        for dev in ["out0", "in0"] {
            assert!(
                probe::kernel_addresses(&rack.netns(d), dev)
                    .expect("addrs")
                    .is_empty(),
                "{d} {dev}"
            );
        }
    }
    let a0 = rack.stats(DirectorId::A).expect("A stats");
    let b0 = rack.stats(DirectorId::B).expect("B stats");
    let a_mac = a0.port_mac("outside").expect("A outside mac");

    probe::flush_neighbours(&client, "eth0").expect("flush");
    let ping = probe::ping(&client, vip, 3).expect("ping");
    assert_eq!((ping.sent, ping.received), (3, 3), "{ping:?}");
    let neigh = probe::neighbour(&client, vip)
        .expect("neigh")
        .expect("VIP entry");
    assert_eq!(
        neigh.mac().as_deref(),
        Some(a_mac.as_str()),
        "the VIP's MAC is A's DPDK port"
    );

    let after = rack::now_unix_ms() + 200;
    let a1 = rack
        .stats_after(DirectorId::A, after, Duration::from_secs(5), &cancel)
        .expect("A stats");
    let b1 = rack
        .stats_after(DirectorId::B, after, Duration::from_secs(5), &cancel)
        .expect("B stats");
    let da = a1.total.delta(&a0.total);
    let db = b1.total.delta(&b0.total);
    // The wire is quiet (no IPv6, no bridge IGMP), so these are exact.
    assert_eq!(da.get("icmp_echo_replies"), 3, "A: {da:?}");
    assert_eq!(da.get("arp_replies"), 1, "A: {da:?}");
    assert!(
        da.get("rx_packets") >= 4,
        "A saw the ARP request and 3 echo requests: {da:?}"
    );
    assert!(
        da.get("tx_packets") >= 4,
        "A sent the ARP reply and 3 echo replies: {da:?}"
    );
    assert_eq!(db.get("icmp_echo_replies"), 0, "B: {db:?}");
    assert_eq!(db.get("arp_replies"), 0, "B does not own the VIP: {db:?}");

    let pid = rack.director_pid(DirectorId::A).expect("A pid");
    let started = Instant::now();
    let (how, status) = rack
        .stop_director(DirectorId::A, Duration::from_secs(5))
        .expect("stop A");
    assert_eq!(how, Stopped::Terminated, "A (pid {pid}) exits on SIGTERM");
    assert!(status.success(), "A exits 0 on SIGTERM: {status}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // B keeps running, alone.
    assert!(tandem_hw_tests::process::alive(
        rack.director_pid(DirectorId::B).expect("B pid")
    ));

    let down = rack.down().expect("down");
    assert_eq!(down.namespaces.len(), 8, "{down:?}");
    assert_nothing_left(&cleanup.0);
}

/// `tandem-rack demo --json` end to end: every check passes, the JSON has the promised shape,
/// exit code 0, nothing left behind.
#[test]
fn demo_json_all_checks_pass() {
    let Some(_lock) = rack_tier("demo_json_all_checks_pass") else {
        return;
    };
    let cleanup = Cleanup::new("trk2");
    // The same lookup the tool does (next to it in target/debug): fail here, clearly, if absent.
    if let Err(e) = locate_dataplane(None) {
        panic!("{e}");
    }
    // The demo ends with a failover drill per mode; their pictures go to the current directory.
    let pictures = std::env::temp_dir().join("trk2-demo");
    std::fs::create_dir_all(&pictures).expect("a directory for the demo's pictures");
    let out = Command::new(env!("CARGO_BIN_EXE_tandem-rack"))
        .args(["demo", "--json", "--prefix", "trk2", "--drill-conns", "20"])
        .current_dir(&pictures)
        .output()
        .expect("run tandem-rack demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON object ({e}):\n{stdout}\n{stderr}"));
    let _ = std::fs::remove_dir_all(&pictures);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert_eq!(v["ok"], true);
    let drills = v["drills"].as_array().expect("a drills section");
    assert_eq!(drills.len(), 3, "{drills:?}");
    for d in drills {
        assert_eq!(d["established"], 20, "{d}");
        assert_eq!(d["survived"], 20, "{d}");
        assert_eq!(d["broken"], 0, "{d}");
    }
    // The health-check step: rs1 stopped, quiesced, none of 30 new connections to it,
    // restored.
    let h = &v["health"];
    assert_eq!(h["server"], "172.16.0.2:80", "{h}");
    assert_eq!(h["while_down"]["rs2"], 30, "{h}");
    assert!(h["while_down"]["rs1"].is_null(), "{h}");
    assert!(h["after"]["rs1"].as_u64() > Some(0), "{h}");
    assert_eq!(h["standby_untouched"], true, "{h}");
    assert_eq!(v["vip_ping_ok"], true);
    assert_eq!(v["director"], "A");
    assert_eq!(v["vip"], "203.0.113.10");
    assert_eq!(v["answered_by_dpdk"], true);
    assert!(v["vip_mac"].is_string());
    assert_eq!(v["vip_mac"], v["director_mac"]);
    assert_eq!(v["ping"]["sent"], 3);
    assert_eq!(v["ping"]["received"], 3);
    assert!(v["ping"]["rtt_avg_ms"].is_number());
    // Over the whole demo: A answered the VIP and its own address, B its own address.
    assert!(
        v["directors"]["A"]["icmp_echo_replies"].as_u64() >= Some(6),
        "{}",
        v["directors"]
    );
    assert!(
        v["directors"]["B"]["icmp_echo_replies"].as_u64() >= Some(3),
        "{}",
        v["directors"]
    );
    // The services were applied with tandemctl; its listing ends the demo.
    let listing = v["listing"].as_str().unwrap_or_default();
    assert!(
        listing.contains("Prot LocalAddress:Port Scheduler Flags")
            && listing.contains("TCP  203.0.113.10:80 ")
            && listing.contains("TCP  203.0.113.20:80 ")
            && listing.contains("TCP  203.0.113.30:80 "),
        "{listing}"
    );
    // By default real TCP/UDP traffic runs through all three forwarding modes.
    for mode in ["nat", "tun", "dr"] {
        assert_eq!(v["modes"][mode]["ok"], true, "{mode}: {}", v["modes"][mode]);
        assert!(v["modes"][mode]["per_server"].is_object(), "{mode}");
    }
    let nat = &v["modes"]["nat"]["per_server"];
    assert!(
        nat["rs1"].as_u64() > Some(0) && nat["rs2"].as_u64() > Some(0),
        "NAT reached both seed-002 servers: {nat}"
    );
    let checks = v["checks"].as_array().expect("checks");
    for name in [
        "rack_up",
        "kernel_no_address_a",
        "kernel_no_address_b",
        "vip_ping",
        "vip_mac_is_director_a",
        "vip_counted_by_dataplane_a",
        "vip_not_answered_by_b",
        "director_a_address_ping",
        "director_b_address_ping",
        "rack_down",
        "health_check_quiesce",
    ] {
        let c = checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("check {name} missing"));
        assert_eq!(c["passed"], true, "{c}");
    }
    assert_nothing_left(&cleanup.0);
}

/// The dataplane's own `--check` accepts every config the rack generates (A and B, both PMDs).
#[test]
fn generated_configs_pass_dataplane_check() {
    let binary = match locate_dataplane(None) {
        Ok(b) => b,
        Err(e) if !is_root() => {
            println!("SKIP: generated_configs_pass_dataplane_check: not root and {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let dir = std::env::temp_dir().join(format!("tandem-rack-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let spec = RackSpec::default_rack();
    let prefix = Prefix::new("trk8").expect("prefix");
    for (pmd, workers) in [
        (Pmd::AfXdp, 1),
        (Pmd::AfPacket, 1),
        (Pmd::AfXdp, 2),
        (Pmd::AfPacket, 2),
    ] {
        for d in &spec.directors {
            let lcores = director_lcores(&online_cpus(), d.id, workers);
            let cfg = director_config(d, &prefix, pmd, &lcores, &dir.join("stats.json"));
            if d.id == DirectorId::A {
                // The services of all three modes are in what --check validates.
                assert_eq!(cfg.services.len(), 7);
                for m in ["nat", "tun", "dr"] {
                    let text = cfg.to_toml().expect("toml");
                    assert!(text.contains(&format!("method = \"{m}\"")), "{m}");
                }
            }
            let path = dir.join(format!("{}-{pmd}-{workers}.toml", d.id.lower()));
            std::fs::write(&path, cfg.to_toml().expect("toml")).expect("write");
            let out = Command::new(&binary)
                .arg("--config")
                .arg(&path)
                .arg("--check")
                .output()
                .expect("run tandem-dataplane --check");
            assert!(
                out.status.success(),
                "{} rejected {}:\n{}",
                binary.display(),
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!Path::new(&dir).exists());
}

fn tool() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tandem-rack"))
}

/// The topology, `serve` and the decapsulators, without dataplanes: the kernel stands in for
/// the directors where a test needs it.
fn kernel_rack(cleanup: &Cleanup) -> Rack {
    let mut opts = RackOptions::new(cleanup.0.clone());
    opts.start_dataplanes = false;
    opts.tool = Some(tool());
    Rack::up(&opts).unwrap_or_else(|e| panic!("kernel rack up: {e}"))
}

fn ip(netns: &str, args: &[&str]) {
    let mut argv = vec!["ip", "-n", netns];
    argv.extend_from_slice(args);
    Cmd::new(argv).run().unwrap_or_else(|e| panic!("{e}"));
}

/// Every pid is gone (or a zombie waiting for its reaper).
fn assert_gone(pids: &[(String, u32)]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids
        .iter()
        .any(|(_, p)| tandem_hw_tests::process::alive(*p))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<_> = pids
        .iter()
        .filter(|(_, p)| tandem_hw_tests::process::alive(*p))
        .collect();
    assert!(left.is_empty(), "still running: {left:?}");
}

/// No process anywhere names the rack's state directory (every helper does).
fn assert_no_process_names(state: &Path) {
    let dir = state.display().to_string();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(argv) = tandem_hw_tests::process::cmdline(pid) {
            if argv.iter().any(|a| a.starts_with(&dir)) && tandem_hw_tests::process::alive(pid) {
                found.push((pid, argv.join(" ")));
            }
        }
    }
    assert!(found.is_empty(), "processes of the rack left: {found:?}");
}

/// (a) Every real server answers with its name over TCP (many messages per connection) and
/// UDP, from the client through the router. The kernel stands in for director A: the router
/// also holds the inside gateway 172.16.0.254, and the client routes the inside network via the
/// router, for this test only.
#[test]
fn real_servers_answer_by_name_through_the_router() {
    let Some(_lock) = rack_tier("real_servers_answer_by_name_through_the_router") else {
        return;
    };
    let cleanup = Cleanup::new("trk4");
    let rack = kernel_rack(&cleanup);
    let helpers = rack.helper_pids();
    assert_eq!(
        helpers.len(),
        6,
        "serve and decap on 3 servers: {helpers:?}"
    );
    let spec = rack.spec().clone();
    ip(
        &rack.netns(&spec.router),
        &["addr", "add", "172.16.0.254/24", "dev", "eth1"],
    );
    ip(
        &rack.client_netns(),
        &["route", "add", "172.16.0.0/24", "via", "203.0.113.1"],
    );
    for rs in &spec.real_servers {
        for port in &rs.tcp_ports {
            let target = SocketAddrV4::new(rs.address, *port);
            let r = rack
                .run_client(&ClientOptions::new(target, 3, 5))
                .expect("client");
            assert!(r.all_ok(), "{}", r.summary());
            assert_eq!(r.answers, 15);
            assert_eq!(
                r.per_endpoint,
                BTreeMap::from([(format!("{}:{port}", rs.host), 3)])
            );
        }
        for port in &rs.udp_ports {
            let target = SocketAddrV4::new(rs.address, *port);
            let r = rack
                .run_client(&ClientOptions::new(target, 3, 5).udp())
                .expect("client");
            assert!(r.all_ok(), "{}", r.summary());
            assert_eq!(r.per_server, BTreeMap::from([(rs.host.clone(), 3)]));
            assert_eq!(r.reply_sources, BTreeMap::from([(target.to_string(), 15)]));
        }
    }
    // Connections that stay open and talk every 100 ms, as the failover drills will.
    let target = SocketAddrV4::new(Ipv4Addr::new(172, 16, 0, 3), 8000);
    let opts = ClientOptions {
        parallel: 100,
        interval: Duration::from_millis(100),
        ..ClientOptions::new(target, 100, 5)
    };
    let r = rack.run_client(&opts).expect("client");
    assert!(r.all_ok(), "{}", r.summary());
    assert_eq!(
        r.per_endpoint,
        BTreeMap::from([("rs2:8000".to_owned(), 100)])
    );
    let state = rack.state().path().to_path_buf();
    let down = rack.down().expect("down");
    assert_eq!(down.namespaces.len(), 8, "{down:?}");
    assert_gone(&helpers);
    assert_no_process_names(&state);
    assert_nothing_left(&cleanup.0);
}

fn icmp_out_dest_unreachs(netns: &str) -> u64 {
    let out = Cmd::in_netns(netns, ["cat", "/proc/net/snmp"])
        .run()
        .expect("snmp");
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("Icmp:"))
        .collect();
    let (Some(names), Some(values)) = (lines.first(), lines.get(1)) else {
        panic!("no Icmp lines in /proc/net/snmp");
    };
    let i = names
        .split_whitespace()
        .position(|n| n == "OutDestUnreachs")
        .expect("OutDestUnreachs");
    values
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .expect("a number")
}

/// (b) The user-space IPIP decapsulator: an IPIP packet injected from the router (standing in
/// for a TUN director) carrying a UDP datagram from the client to the TUN VIP, addressed to
/// rs1, is decapsulated, answered by rs1's `serve` from the VIP, and the answer reaches the
/// client directly via the router. rs1 sends no ICMP "protocol unreachable" for the tunnel.
/// Also: a decapsulator exits by itself when its watched path disappears.
#[test]
fn ipip_decapsulator_hands_tunnelled_requests_to_the_tun_vip() {
    let Some(_lock) = rack_tier("ipip_decapsulator_hands_tunnelled_requests_to_the_tun_vip") else {
        return;
    };
    let cleanup = Cleanup::new("trk6");
    let rack = kernel_rack(&cleanup);
    let spec = rack.spec().clone();
    let rs1 = spec.real_server("rs1").expect("rs1").clone();
    let (client, rtr, rs1_ns) = (
        rack.client_netns(),
        rack.netns(&spec.router),
        rack.netns(&rs1.host),
    );
    let state = rack.state().path().to_path_buf();
    let inject = state.join("ipip-inject.py");
    std::fs::write(&inject, tandem_hw_tests::rack::IPIP_INJECT_PY).expect("inject script");
    let unreach_before = icmp_out_dest_unreachs(&rs1_ns);

    // The client listens where the inner packet says it came from.
    let listen = "import socket\n\
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
s.bind(('203.0.113.2', 40053))\n\
s.settimeout(8)\n\
d, a = s.recvfrom(2048)\n\
print(a[0], a[1], d.decode())\n";
    let listener = {
        let client = client.clone();
        std::thread::spawn(move || {
            Cmd::in_netns(&client, ["python3", "-c", listen])
                .timeout(Duration::from_secs(12))
                .run()
        })
    };
    let listening = tandem_hw_tests::process::wait_until(Duration::from_secs(5), || {
        Cmd::in_netns(&client, ["ss", "-Hlun", "sport", "=", ":40053"])
            .run()
            .is_ok_and(|o| !o.stdout.trim().is_empty())
    });
    assert!(listening, "the client's listener did not start");
    let sent = Cmd::in_netns(
        &rtr,
        [
            "python3",
            &inject.display().to_string(),
            "--outer-src",
            "172.16.0.1",
            "--outer-dst",
            &rs1.address.to_string(),
            "--src",
            "203.0.113.2:40053",
            "--dst",
            &format!("{}:53", spec.tun_vip),
            "--payload",
            "tun-probe",
        ],
    )
    .run()
    .expect("inject");
    assert!(sent.stdout.contains("sent 1 x"), "{}", sent.stdout);
    let heard = listener
        .join()
        .expect("listener thread")
        .expect("the client heard an answer");
    assert_eq!(
        heard.stdout.trim(),
        format!("{} 53 rs1:53 tun-probe", spec.tun_vip),
        "answered from the TUN VIP by rs1"
    );
    // Its counters (written within 1.5 s of a change).
    std::thread::sleep(Duration::from_millis(1600));
    let st = rack.decap_stats("rs1").expect("rs1 decap stats");
    for (k, v) in [("received", 1), ("decapsulated", 1), ("written", 1)] {
        assert_eq!(st.get(k), v, "{k}: {st:?}");
    }
    for other in ["rs2", "rs3"] {
        assert_eq!(rack.decap_stats(other).expect("stats").get("received"), 0);
    }
    assert_eq!(
        icmp_out_dest_unreachs(&rs1_ns),
        unreach_before,
        "the raw socket keeps the kernel from answering protocol 4 with ICMP"
    );

    // A second decapsulator on a scratch device: it exits by itself when its watch goes.
    ip(&rs1_ns, &["tuntap", "add", "dev", "tnlx", "mode", "tun"]);
    let watch = state.join("scratch.alive");
    std::fs::write(&watch, "").expect("watch");
    let stats = state.join("scratch.json");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &rs1_ns, "python3"])
        .arg(rack.state().decap_script())
        .args(["--address", "172.16.0.2", "--tun", "tnlx", "--stats"])
        .arg(&stats)
        .arg("--watch")
        .arg(&watch)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("scratch decapsulator");
    assert!(tandem_hw_tests::process::wait_until(
        Duration::from_secs(5),
        || stats.exists()
    ));
    std::fs::remove_file(&watch).expect("remove watch");
    let exited = tandem_hw_tests::process::wait_until(Duration::from_secs(3), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(exited, "the decapsulator outlived its watched path");
    let last =
        tandem_hw_tests::rack::DecapStats::parse(&std::fs::read_to_string(&stats).expect("stats"))
            .expect("parse");
    assert!(last.exited);

    let helpers = rack.helper_pids();
    let down = rack.down().expect("down");
    assert_eq!(down.namespaces.len(), 8);
    assert_gone(&helpers);
    assert_no_process_names(&state);
    assert_nothing_left(&cleanup.0);
}

/// (c) DR wiring: no real server answers ARP for the DR VIP (arp_ignore), each answers for its
/// own address; a frame for the VIP sent to rs1's MAC is accepted and answered from the VIP via
/// the router. The router stands in for the director's MAC rewrite (a static neighbour entry
/// mapping the VIP to rs1's MAC), and the DR mode check itself runs over that path: lblc's
/// "one server", UDP answers from the VIP, replies that bypass the director.
#[test]
fn dr_vip_is_not_arped_by_real_servers_but_accepted_by_mac() {
    let Some(_lock) = rack_tier("dr_vip_is_not_arped_by_real_servers_but_accepted_by_mac") else {
        return;
    };
    let cleanup = Cleanup::new("trk7");
    let rack = kernel_rack(&cleanup);
    let spec = rack.spec().clone();
    let rtr = rack.netns(&spec.router);
    let dr = spec.dr_vip.to_string();
    ip(&rtr, &["route", "add", &format!("{dr}/32"), "dev", "eth1"]);
    // Nobody on the inside network answers ARP for the VIP...
    let p = probe::ping(&rtr, spec.dr_vip, 2).expect("ping");
    assert_eq!(p.received, 0, "{p:?}");
    let n = probe::neighbour(&rtr, spec.dr_vip).expect("neigh");
    assert!(n.as_ref().and_then(|n| n.mac()).is_none(), "{n:?}");
    // ...while each real server does for its own address, with its eth0 MAC.
    let mut rs1_mac = String::new();
    for rs in &spec.real_servers {
        let p = probe::ping(&rtr, rs.address, 1).expect("ping");
        assert!(p.all_answered(), "{}: {p:?}", rs.host);
        let mac = probe::link_mac(&rack.netns(&rs.host), &rs.iface).expect("mac");
        let n = probe::neighbour(&rtr, rs.address)
            .expect("neigh")
            .and_then(|n| n.mac());
        assert_eq!(n.as_deref(), Some(mac.as_str()), "{}", rs.host);
        if rs.host == "rs1" {
            rs1_mac = mac;
        }
    }
    // The router plays the DR director: the VIP's frames go to rs1's MAC.
    ip(
        &rtr,
        &[
            "neigh",
            "replace",
            &dr,
            "lladdr",
            &rs1_mac,
            "dev",
            "eth1",
            "nud",
            "permanent",
        ],
    );
    ip(
        &rack.client_netns(),
        &["route", "add", &format!("{dr}/32"), "via", "203.0.113.1"],
    );
    let m = modes::run_mode(&rack, Mode::Dr, &Cancel::new()).expect("DR traffic");
    let check = |name: &str| {
        m.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("check {name}: {m:?}"))
            .clone()
    };
    let lblc = check("dr_tcp_lblc_one_server");
    assert!(lblc.passed, "{lblc:?}");
    assert_eq!(m.per_server, BTreeMap::from([("rs1".to_owned(), 20)]));
    let path = check("dr_replies_bypass_director");
    assert!(path.passed, "{path:?}");
    assert!(m.director_mac.is_none(), "no dataplane in this test");
    let macs = m
        .reply_macs
        .clone()
        .expect("tcpdump is installed by setup.sh");
    assert_eq!(
        macs.keys().collect::<Vec<_>>(),
        [&m.router_mac.clone().expect("router mac")]
    );
    // UDP: answered by rs1 (the only server the stand-in knows) from the VIP.
    let udp = m.clients.get(1).expect("the UDP run");
    assert_eq!(udp.protocol, "udp");
    assert_eq!(udp.ok, udp.conns, "{}", udp.summary());
    assert_eq!(
        udp.reply_sources.keys().collect::<Vec<_>>(),
        [&format!("{dr}:53")]
    );
    let state = rack.state().path().to_path_buf();
    rack.down().expect("down");
    assert_no_process_names(&state);
    assert_nothing_left(&cleanup.0);
}

/// (e) `tandem-rack up` starts the dataplanes, `serve` and the decapsulators (serve answers
/// inside), `tandem-rack down` stops every one of them and leaves nothing behind.
#[test]
fn up_and_down_leave_nothing_behind() {
    let Some(_lock) = rack_tier("up_and_down_leave_nothing_behind") else {
        return;
    };
    let cleanup = Cleanup::new("trk5");
    if let Err(e) = locate_dataplane(None) {
        panic!("{e}");
    }
    let out = Command::new(tool())
        .args(["up", "--prefix", "trk5"])
        .output()
        .expect("run tandem-rack up");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = StateDir::for_prefix(&cleanup.0);
    let mut pids: Vec<(String, u32)> = Vec::new();
    for id in DirectorId::ALL {
        let pid = tandem_hw_tests::process::read_pid(&state.pid(id)).expect("director pid");
        pids.push((format!("director {}", id.letter()), pid));
    }
    for (helper, path) in state.helper_pid_files() {
        pids.push((
            helper,
            tandem_hw_tests::process::read_pid(&path).expect("helper pid"),
        ));
    }
    let names: Vec<&str> = pids.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "director A",
            "director B",
            "decap-rs1",
            "decap-rs2",
            "decap-rs3",
            "serve-rs1",
            "serve-rs2",
            "serve-rs3"
        ]
    );
    for (n, p) in &pids {
        assert!(tandem_hw_tests::process::alive(*p), "{n} pid {p}");
    }
    // serve answers on the inside network (rs2 -> rs1, no director involved).
    let r = Cmd::in_netns(
        &cleanup.0.netns("rs2"),
        [
            tool().display().to_string().as_str(),
            "client",
            "--target",
            "172.16.0.2:8000",
            "--conns",
            "2",
            "--messages",
            "2",
            "--json",
        ],
    )
    .run()
    .expect("client in rs2");
    let r = tandem_hw_tests::ClientReport::parse(&r.stdout).expect("report");
    assert_eq!(r.per_endpoint, BTreeMap::from([("rs1:8000".to_owned(), 2)]));
    let out = Command::new(tool())
        .args(["down", "--prefix", "trk5"])
        .output()
        .expect("run tandem-rack down");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("8 processes stopped, 8 namespaces deleted"),
        "{said}"
    );
    assert_gone(&pids);
    assert_no_process_names(state.path());
    assert_nothing_left(&cleanup.0);
}

/// Counter deltas of each worker lcore of `after` against `before` (matched by lcore id).
fn lcore_deltas(
    before: &tandem_hw_tests::stats::Stats,
    after: &tandem_hw_tests::stats::Stats,
) -> Vec<(u32, tandem_hw_tests::stats::Counters)> {
    after
        .lcores
        .iter()
        .map(|l| {
            let b = before
                .lcores
                .iter()
                .find(|x| x.lcore == l.lcore)
                .map(|x| x.counters.clone())
                .unwrap_or_default();
            (l.lcore, l.counters.delta(&b))
        })
        .collect()
}

/// Brings up rack `cleanup` with director A on two workers (AF_PACKET `qpairs=2`: the AF_XDP
/// PMD opens one queue on a veth) and checks the wiring: both ends of A's veths have two
/// queues, its EAL two lcores, its vdevs two queue pairs, its stats two counter sets.
fn two_worker_rack(cleanup: &Cleanup) -> Rack {
    let mut opts = RackOptions::new(cleanup.0.clone());
    opts.workers = 2;
    opts.pmd = Pmd::default_for(2);
    assert_eq!(opts.pmd, Pmd::AfPacket);
    let rack = Rack::up(&opts).unwrap_or_else(|e| panic!("rack up with 2 workers: {e}"));
    assert_eq!(rack.spec().workers(DirectorId::A), 2);
    assert_eq!(rack.spec().workers(DirectorId::B), 1);
    let sw = rack.netns(&rack.spec().topology.switch);
    let dira = rack.netns("dira");
    for (ns, dev) in [
        (&dira, "out0"),
        (&dira, "in0"),
        (&sw, "dira-out0"),
        (&sw, "dira-in0"),
    ] {
        let out = Cmd::new(["ip", "-d", "-n", ns.as_str(), "link", "show", dev])
            .run()
            .expect("ip link");
        assert!(
            out.stdout.contains("numtxqueues 2 numrxqueues 2"),
            "{dev}: {}",
            out.stdout
        );
    }
    let cfg = std::fs::read_to_string(rack.state().config(DirectorId::A)).expect("a.toml");
    assert!(cfg.contains(r#""-l", "0,1""#), "{cfg}");
    assert!(cfg.contains("net_af_packet0,iface=out0,qpairs=2"), "{cfg}");
    assert!(cfg.contains("net_af_packet1,iface=in0,qpairs=2"), "{cfg}");
    let a0 = rack.stats(DirectorId::A).expect("A stats");
    assert_eq!(
        a0.lcores.iter().map(|l| l.lcore).collect::<Vec<_>>(),
        [0, 1],
        "one counter set per worker"
    );
    let b0 = rack.stats(DirectorId::B).expect("B stats");
    assert_eq!(b0.lcores.len(), 1, "B keeps one worker");
    rack
}

/// A's stats written after now + the publishing slack, and each lcore's deltas against
/// `before`, printed.
fn lcore_deltas_after(
    rack: &Rack,
    before: &tandem_hw_tests::stats::Stats,
    what: &str,
) -> Vec<(u32, tandem_hw_tests::stats::Counters)> {
    let after = rack
        .stats_after(
            DirectorId::A,
            rack::now_unix_ms() + 200,
            Duration::from_secs(5),
            &Cancel::new(),
        )
        .expect("A stats");
    let deltas = lcore_deltas(before, &after);
    for (lcore, d) in &deltas {
        eprintln!("{what}: A lcore {lcore}: {:?}", d.nonzero());
    }
    deltas
}

fn sum(deltas: &[(u32, tandem_hw_tests::stats::Counters)], name: &str) -> u64 {
    deltas.iter().map(|(_, d)| d.get(name)).sum()
}

/// Director A with two workers: 40 UDP flows and 30 TCP connections to the NAT VIP reach
/// both lcores (AF_PACKET's `PACKET_FANOUT_HASH` spreads flows over the two sockets), frames
/// of connections owned by the other worker cross the redirect rings (every NAT reply whose
/// hash differs from its request's), and no redirect ring overflows. Whether the
/// connections are answered is the next test's business.
#[test]
fn two_workers_spread_frames_over_both_lcores_and_redirect() {
    let Some(_lock) = rack_tier("two_workers_spread_frames_over_both_lcores_and_redirect") else {
        return;
    };
    let cleanup = Cleanup::new("trkv");
    let rack = two_worker_rack(&cleanup);
    let before = rack.stats(DirectorId::A).expect("A stats");
    let vip = rack.spec().vip;
    let bounded = |target: u16, conns: u32| ClientOptions {
        parallel: 8,
        timeout: Duration::from_secs(15),
        op_timeout: Duration::from_millis(1500),
        ..ClientOptions::new(SocketAddrV4::new(vip, target), conns, 2)
    };
    let udp = rack
        .run_client(&bounded(53, 40).udp())
        .expect("UDP client ran");
    let tcp = rack.run_client(&bounded(80, 30)).expect("TCP client ran");
    eprintln!("{}\n{}", udp.summary(), tcp.summary());
    let deltas = lcore_deltas_after(&rack, &before, "nat load");
    assert_eq!(deltas.len(), 2);
    for (lcore, d) in &deltas {
        assert!(
            d.get("rx_packets") > 0,
            "lcore {lcore} received nothing: {deltas:?}"
        );
    }
    assert!(
        sum(&deltas, "redirected") > 0,
        "nothing redirected: {deltas:?}"
    );
    assert_eq!(sum(&deltas, "drops.redirect_ring_full"), 0, "{deltas:?}");
    let state = rack.state().path().to_path_buf();
    rack.down().expect("down");
    assert_no_process_names(&state);
    assert_nothing_left(&cleanup.0);
}

/// Director A with two workers forwards real traffic in all three modes: every mode check
/// passes (lblc: one server per worker, its tables being per worker), both lcores received
/// frames, NAT frames reached the worker owning their connection through the redirect rings,
/// and nothing was lost on the way (no full redirect ring, no unresolved next hop).
///
/// All ARP frames of a port land on one queue (no ports to hash); the dataplane shares what
/// one worker learns from them with the others, so no next hop stays unresolved.
#[test]
fn two_workers_forward_every_mode_without_loss() {
    let Some(_lock) = rack_tier("two_workers_forward_every_mode_without_loss") else {
        return;
    };
    let cleanup = Cleanup::new("trkw");
    let rack = two_worker_rack(&cleanup);
    let cancel = Cancel::new();
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for mode in Mode::ALL {
        let before = rack.stats(DirectorId::A).expect("A stats");
        let report =
            modes::run_mode(&rack, mode, &cancel).unwrap_or_else(|e| panic!("{mode} traffic: {e}"));
        let deltas = lcore_deltas_after(&rack, &before, mode.name());
        for c in report.checks.iter().filter(|c| !c.passed) {
            failures.push(format!("{mode}: check {} failed: {}", c.name, c.detail));
        }
        for (lcore, d) in &deltas {
            if d.get("rx_packets") == 0 {
                failures.push(format!("{mode}: lcore {lcore} received nothing"));
            }
        }
        if mode == Mode::Nat && sum(&deltas, "redirected") == 0 {
            failures.push(format!("{mode}: no frame was redirected between workers"));
        }
        for drop in ["drops.redirect_ring_full", "drops.neighbour_unresolved"] {
            if sum(&deltas, drop) != 0 {
                failures.push(format!(
                    "{mode}: {drop} = {} (per lcore: {:?})",
                    sum(&deltas, drop),
                    deltas
                        .iter()
                        .map(|(l, d)| (*l, d.get(drop)))
                        .collect::<Vec<_>>()
                ));
            }
        }
        summary.push((
            mode,
            report.ok,
            sum(&deltas, "redirected"),
            sum(&deltas, "forwarded"),
        ));
    }
    eprintln!("modes (ok, redirected, forwarded): {summary:?}");
    let state = rack.state().path().to_path_buf();
    rack.down().expect("down");
    assert_no_process_names(&state);
    assert_nothing_left(&cleanup.0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The failover drill with real processes: a pair (A active, B standby, a `tandem-syncd`
/// each), 30 long-lived connections through each mode's VIP, SIGKILL of A's dataplane and
/// syncd: every connection survives, B takes over well within a second.
#[test]
fn failover_drill_kill_in_each_mode() {
    let Some(_lock) = rack_tier("failover_drill_kill_in_each_mode") else {
        return;
    };
    let cleanup = Cleanup::new("trkd");
    for mode in ["nat", "tun", "dr"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tandem-rack"))
            .args([
                "drill",
                "--prefix",
                "trkd",
                "--mode",
                mode,
                "--fault",
                "kill",
                "--conns",
                "30",
                "--warmup-ms",
                "1500",
                "--after-ms",
                "2500",
                "--json",
                "--svg",
            ])
            .arg(std::env::temp_dir().join(format!("trkd-{mode}-kill.svg")))
            .output()
            .expect("run tandem-rack drill");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: tandem_hw_tests::drill::DrillReport = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| {
                panic!(
                    "{mode}: no report ({e}): {stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        println!("{mode}: {report:?}");
        assert_eq!(report.established, 30, "{mode}: {report:?}");
        assert_eq!(report.survived, 30, "{mode}: {report:?}");
        assert_eq!(report.broken, 0, "{mode}: {report:?}");
        assert_eq!(report.lost_messages, 0, "{mode}: {report:?}");
        assert_eq!(report.b_role_after.as_deref(), Some("Active"));
        let takeover = report.takeover_ms.expect("an answer after the fault");
        assert!(takeover <= 1000, "{mode}: takeover {takeover} ms");
        assert!(out.status.success(), "{mode}: exit {:?}", out.status);
    }
    drop(cleanup);
    assert_nothing_left(&Prefix::new("trkd").expect("prefix"));
}

/// Runs `tandem-rack drill --json` for `fault` in `mode` with `conns` connections under
/// `prefix`, bounded by `bound` (the process is killed beyond it), and returns its report.
/// The picture goes to a temp file, checked to be an SVG.
fn drill(
    prefix: &str,
    mode: &str,
    fault: &str,
    conns: u32,
    bound: Duration,
) -> tandem_hw_tests::drill::DrillReport {
    let svg = std::env::temp_dir().join(format!("{prefix}-{mode}-{fault}.svg"));
    let _ = std::fs::remove_file(&svg);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-rack"))
        .args([
            "drill",
            "--prefix",
            prefix,
            "--mode",
            mode,
            "--fault",
            fault,
            "--conns",
            &conns.to_string(),
            "--warmup-ms",
            "1500",
            "--after-ms",
            "2000",
            "--json",
            "--svg",
        ])
        .arg(&svg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tandem-rack drill");
    let deadline = Instant::now() + bound;
    while child.try_wait().expect("waiting for the drill").is_none() {
        if Instant::now() > deadline {
            // SIGTERM: the drill tears its rack down on the way out; the test's Cleanup
            // guard removes whatever is left.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{mode} {fault}: the drill ran longer than {} s",
                bound.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("drill output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: tandem_hw_tests::drill::DrillReport =
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "{mode} {fault}: no report ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    println!("{mode} {fault}: {report:?}");
    let picture = std::fs::read_to_string(&svg).expect("the drill's picture");
    assert!(picture.starts_with("<svg"), "{mode} {fault}: not an SVG");
    let _ = std::fs::remove_file(&svg);
    assert!(
        out.status.success(),
        "{mode} {fault}: exit {:?}",
        out.status
    );
    report
}

/// Every established connection survived, none broke, nothing was lost, and never were two
/// directors active at once.
fn assert_survived(report: &tandem_hw_tests::drill::DrillReport, conns: u32) {
    let what = format!("{} {}: {report:?}", report.mode, report.fault);
    assert_eq!(report.established, conns, "{what}");
    assert_eq!(report.survived, conns, "{what}");
    assert_eq!(report.broken, 0, "{what}");
    assert_eq!(report.lost_messages, 0, "{what}");
    assert_eq!(report.max_actives, 1, "{what}");
    assert_eq!(report.dual_active_ms, 0, "{what}");
    assert!(report.new_flow_ms.is_some(), "{what}");
}

#[test]
fn failover_drill_sync_cut_keeps_one_active() {
    let Some(_lock) = rack_tier("failover_drill_sync_cut_keeps_one_active") else {
        return;
    };
    let cleanup = Cleanup::new("trsc");
    let r = drill("trsc", "nat", "sync-cut", 20, Duration::from_secs(150));
    assert_survived(&r, 20);
    assert_eq!(r.takeover_ms, None, "no takeover: {r:?}");
    // A stayed active throughout, B never became active, and B resynced after the heal.
    assert!(
        !r.role_changes.iter().any(|c| c.contains(" B Active ")),
        "{r:?}"
    );
    assert_eq!(r.a_role_after.as_deref(), Some("Active"), "{r:?}");
    assert_eq!(r.b_role_after.as_deref(), Some("Standby"), "{r:?}");
    drop(cleanup);
    assert_nothing_left(&Prefix::new("trsc").expect("prefix"));
}

#[test]
fn failover_drill_failback_preempts_after_resync() {
    let Some(_lock) = rack_tier("failover_drill_failback_preempts_after_resync") else {
        return;
    };
    let cleanup = Cleanup::new("trfb");
    let r = drill("trfb", "nat", "failback", 20, Duration::from_secs(180));
    assert_survived(&r, 20);
    assert!(r.takeover_ms.is_some_and(|t| t <= 1000), "{r:?}");
    assert_eq!(r.a_role_after.as_deref(), Some("Active"), "{r:?}");
    // B handed back only because A asked with a complete copy (`Yielded` answers only a
    // preemption request that says sync complete), and A was active again after that.
    let yielded = r
        .role_changes
        .iter()
        .position(|c| c.contains(" B ") && c.ends_with("(Yielded)"))
        .unwrap_or_else(|| panic!("B never yielded: {r:?}"));
    assert!(
        r.role_changes[yielded..]
            .iter()
            .any(|c| c.contains(" A Active ")),
        "{r:?}"
    );
    drop(cleanup);
    assert_nothing_left(&Prefix::new("trfb").expect("prefix"));
}

#[test]
fn failover_drill_standby_restart_then_kill() {
    let Some(_lock) = rack_tier("failover_drill_standby_restart_then_kill") else {
        return;
    };
    let cleanup = Cleanup::new("trsr");
    let r = drill(
        "trsr",
        "nat",
        "standby-restart",
        20,
        Duration::from_secs(180),
    );
    assert_survived(&r, 20);
    assert!(r.takeover_ms.is_some_and(|t| t <= 1000), "{r:?}");
    assert_eq!(r.b_role_after.as_deref(), Some("Active"), "{r:?}");
    drop(cleanup);
    assert_nothing_left(&Prefix::new("trsr").expect("prefix"));
}

#[test]
fn failover_drill_link_down_is_taken_over() {
    let Some(_lock) = rack_tier("failover_drill_link_down_is_taken_over") else {
        return;
    };
    let cleanup = Cleanup::new("trld");
    let r = drill("trld", "nat", "link-down", 20, Duration::from_secs(150));
    assert_survived(&r, 20);
    assert!(r.takeover_ms.is_some_and(|t| t <= 1000), "{r:?}");
    // A went to Fault (its dataplane refused syncd's heartbeats), B took over.
    assert!(
        r.role_changes.iter().any(|c| c.contains(" A Fault ")),
        "{r:?}"
    );
    assert_eq!(r.b_role_after.as_deref(), Some("Active"), "{r:?}");
    drop(cleanup);
    assert_nothing_left(&Prefix::new("trld").expect("prefix"));
}

/// Health checks on a failover pair (tandem-syncd's checkers from each director's kernel
/// interface `hc0`, the verdicts applied by A's dataplane): with traffic running through the
/// NAT VIP's port 80, rs1's service is stopped; after `fall` check intervals A's dataplane
/// lists rs1:80 down and no new connection reaches rs1 (rs2 takes them all, none fails);
/// rs1's service is started again and after `rise` intervals it gets new connections again.
/// The standby B saw rs1 down in its own checks but left its dataplane alone.
#[test]
fn health_check_quiesces_a_stopped_real_server_and_restores_it() {
    let Some(_lock) = rack_tier("health_check_quiesces_a_stopped_real_server_and_restores_it")
    else {
        return;
    };
    let cleanup = Cleanup::new("trhc");
    let mut opts = RackOptions::new(cleanup.0.clone());
    opts.tool = Some(tool());
    let report = tandem_hw_tests::health::run_health_drill(opts)
        .unwrap_or_else(|e| panic!("health drill: {e}"));
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    let bound = u64::try_from(tandem_hw_tests::health::verdict_bound().as_millis()).expect("ms");
    let down = report.down_after_ms.expect("rs1 listed down");
    assert!(down <= bound, "down after {down} ms > {bound} ms");
    // At least `fall` failed checks: never before (fall - 1) intervals (less jitter).
    let fall_floor = u64::from(report.fall - 1) * report.interval_ms * 9 / 10;
    assert!(
        down >= fall_floor,
        "down after {down} ms, before fall {}",
        report.fall
    );
    let up = report.up_after_ms.expect("rs1 listed up again");
    assert!(up <= bound, "up after {up} ms > {bound} ms");
    assert!(
        report.before.get("rs1").copied().unwrap_or(0) > 0,
        "{:?}",
        report.before
    );
    assert_eq!(
        report.while_down.get("rs1"),
        None,
        "{:?}",
        report.while_down
    );
    assert_eq!(
        report.while_down.get("rs2"),
        Some(&30),
        "{:?}",
        report.while_down
    );
    assert_eq!(report.while_down_failed, 0);
    assert_eq!(report.bursts_to_victim_while_down, 0, "{:?}", report.bursts);
    assert!(
        report.after.get("rs1").copied().unwrap_or(0) > 0,
        "{:?}",
        report.after
    );
    assert_eq!(report.after.values().sum::<u32>(), 30, "{:?}", report.after);
    assert_eq!(report.after_failed, 0);
    assert!(report.standby_saw_down, "B's checks saw rs1 down");
    assert!(report.standby_untouched, "B's dataplane got no verdict");
    assert!(
        report
            .log_lines
            .iter()
            .any(|l| l.contains("server down: tcp 203.0.113.10:80 -> 172.16.0.2:80, tcp: connect: connection refused (2 failures)")),
        "{:?}",
        report.log_lines
    );
    assert!(report.passed());
    drop(cleanup);
    assert_nothing_left(&Prefix::new("trhc").expect("prefix"));
}
