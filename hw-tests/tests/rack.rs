//! The virtual rack, for real: namespaces, veth pairs, bridges and two `tandem-dataplane`
//! processes on AF_XDP. Needs root and `ip netns`; without them each test prints `SKIP: <reason>`
//! and returns. As root a missing dataplane binary is a failure, never a skip
//! (`cargo build --workspace` builds it into target/debug, where these tests look).
//!
//! Each test uses its own prefix, and a lock keeps them from running at the same time (each
//! rack starts two DPDK processes). Cleanup runs even when an assertion fails: the `Rack` guard
//! tears down on drop, and a second guard per test runs the prefix-wide teardown after it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tandem_hw_tests::config::{director_config, director_lcores, online_cpus};
use tandem_hw_tests::exec::{Cancel, Cmd, is_root};
use tandem_hw_tests::probe;
use tandem_hw_tests::process::{Stopped, locate_dataplane};
use tandem_hw_tests::rack::{self, DirectorId, RackOptions, RackSpec, StateDir};
use tandem_hw_tests::{Pmd, Prefix, Rack};

static RACK_LOCK: Mutex<()> = Mutex::new(());

/// Root, `ip netns` working, and the lock; `None` (after printing why) when the tier cannot run.
fn rack_tier(test: &str) -> Option<MutexGuard<'static, ()>> {
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
    Some(
        RACK_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
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
    for host in ["sw", "client", "dira", "dirb", "rs1", "rs2", "rs3"] {
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
    assert_eq!(down.namespaces.len(), 7);
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
    assert_eq!(down.namespaces.len(), 7, "{down:?}");
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
    let out = Command::new(env!("CARGO_BIN_EXE_tandem-rack"))
        .args(["demo", "--json", "--prefix", "trk2"])
        .output()
        .expect("run tandem-rack demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is one JSON object ({e}):\n{stdout}\n{stderr}"));
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert_eq!(v["ok"], true);
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
    let (la, lb) = director_lcores(&online_cpus());
    for pmd in [Pmd::AfXdp, Pmd::AfPacket] {
        for d in &spec.directors {
            let lcore = if d.id == DirectorId::A { la } else { lb };
            let cfg = director_config(d, &prefix, pmd, lcore, &dir.join("stats.json"));
            let path = dir.join(format!("{}-{pmd}.toml", d.id.lower()));
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
