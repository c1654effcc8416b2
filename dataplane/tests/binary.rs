//! Runs the real `tandem-dataplane` binary: config and EAL errors, and a real EAL run on a
//! `net_null` vdev (which delivers an endless stream of zero-filled frames) stopped by SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tandem-dataplane");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tandem-dp-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

fn config(dir: &Path, prefix: &str, extra_eal: &str, device: &str) -> PathBuf {
    let p = dir.join("dp.toml");
    let text = format!(
        r#"[eal]
args = ["-l", "0", "--no-pci", "--no-huge", "-m", "256", "--file-prefix", "{prefix}",
        "--vdev", "net_null0", "--log-level", "lib.eal:warning" {extra_eal}]
[dataplane]
stats_file = "{stats}"
stats_interval_ms = 100
idle_sleep_max_us = 100
[control]
socket = "{socket}"
[[port]]
name = "outside"
device = "{device}"
address = "203.0.113.11/24"
[[vip]]
address = "203.0.113.10"
port = "outside"
"#,
        stats = dir.join("stats.json").display(),
        socket = dir.join("admin.sock").display()
    );
    std::fs::write(&p, text).expect("write config");
    p
}

/// Runs to completion, returns (exit code, stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run tandem-dataplane");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cleanup_runtime_dir(prefix: &str) {
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}

#[test]
fn bad_config_exits_2_with_one_line_naming_the_key() {
    let dir = scratch("badcfg");
    let p = dir.join("bad.toml");
    std::fs::write(&p, "[eal]\nargs = []\n[dataplane]\nmbufz = 5\n[[port]]\nname=\"a\"\ndevice=\"x\"\naddress=\"1.2.3.4/24\"\n")
        .expect("write");
    let (code, err) = run(&["--config", p.to_str().expect("utf8")]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "exactly one line: {err}");
    assert!(err.contains("line 4") && err.contains("mbufz"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_config_file_exits_2() {
    let (code, err) = run(&["--config", "/nonexistent/tandem.toml"]);
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "tandem-dataplane: cannot read config file /nonexistent/tandem.toml: No such file or directory (os error 2)"
    );
}

#[test]
fn check_flag_validates_without_starting() {
    let dir = scratch("check");
    let p = config(&dir, "tandem-dp-check", "", "net_null0");
    let (code, err) = run(&["--check", "--config", p.to_str().expect("utf8")]);
    assert_eq!(code, 0, "{err}");
    assert!(!dir.join("stats.json").exists(), "--check starts nothing");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_eal_argument_exits_2_naming_eal() {
    let dir = scratch("badeal");
    let p = config(
        &dir,
        "tandem-dp-badeal",
        r#", "--no-such-eal-flag""#,
        "net_null0",
    );
    let (code, err) = run(&["--config", p.to_str().expect("utf8")]);
    cleanup_runtime_dir("tandem-dp-badeal");
    assert_eq!(code, 2, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("tandem-dataplane: EAL initialisation failed"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_device_exits_2_naming_it() {
    let dir = scratch("nodev");
    let p = config(&dir, "tandem-dp-nodev", "", "net_af_xdp7");
    let (code, err) = run(&["--config", p.to_str().expect("utf8")]);
    cleanup_runtime_dir("tandem-dp-nodev");
    assert_eq!(code, 2, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("no DPDK device named \"net_af_xdp7\" (known: net_null0)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn runs_on_net_null_counts_and_stops_on_sigterm() {
    let dir = scratch("run");
    let prefix = format!("tandem-dp-run-{}", std::process::id());
    let p = config(&dir, &prefix, "", "net_null0");
    let mut child = Command::new(BIN)
        .args(["--config", p.to_str().expect("utf8")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stats = dir.join("stats.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rx = 0u64;
    let mut doc = serde_json::Value::Null;
    while Instant::now() < deadline && rx < 10_000 {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(t) = std::fs::read_to_string(&stats)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&t)
        {
            rx = v["total"]["rx_packets"].as_u64().unwrap_or(0);
            doc = v;
        }
    }
    // Signal through kill(1): this test needs no unsafe code for it.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    cleanup_runtime_dir(&prefix);
    assert!(
        rx >= 10_000,
        "the worker received frames from net_null0: {doc}"
    );
    assert_eq!(doc["ports"][0]["device"], "net_null0");
    // net_null's frames are zero-filled: destination MAC 00:00:00:00:00:00 is not ours.
    let total = &doc["total"];
    assert_eq!(
        total["drops"]["not_for_us_mac"], total["rx_packets"],
        "{total}"
    );
    assert_eq!(total["tx_packets"], 0);
    let status = status.expect("exited within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("stopped cleanly"), "{err}");
    // The final stats were written after the workers stopped.
    let fin: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).expect("final stats")).expect("json");
    assert!(fin["total"]["rx_packets"].as_u64().unwrap_or(0) >= rx);
    let _ = std::fs::remove_dir_all(dir);
}
