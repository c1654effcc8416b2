//! The deployment files in `deploy/` (docs/deployment.md): the systemd units verify and name
//! only flags our binaries have, the PCI director config passes `tandem-dataplane --check`, and
//! `deploy/make-certs.sh` makes certificates `tandem-syncd --check` accepts.
//!
//! The binaries are found next to the test (`cargo build --bins` puts them in target/debug);
//! a missing binary is a failure, not a skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_hw_tests::exec::Cmd;
use tandem_hw_tests::pair::locate_syncd;
use tandem_hw_tests::process::locate_dataplane;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("tandem-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("creating a temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A unit file as `(section, key) -> values` (a key may repeat, e.g. `ExecStartPre`).
fn parse_unit(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not `key=value`: {line}", n + 1));
        assert!(!section.is_empty(), "line {}: key outside a section", n + 1);
        out.entry((section.clone(), k.trim().to_owned()))
            .or_default()
            .push(v.trim().to_owned());
    }
    out
}

fn one<'a>(unit: &'a BTreeMap<(String, String), Vec<String>>, s: &str, k: &str) -> &'a str {
    let v = unit
        .get(&(s.to_owned(), k.to_owned()))
        .unwrap_or_else(|| panic!("[{s}] {k} missing"));
    assert_eq!(v.len(), 1, "[{s}] {k} given {} times", v.len());
    &v[0]
}

fn help(binary: &Path) -> String {
    let out = Cmd::new([binary.display().to_string(), "--help".into()])
        .timeout(Duration::from_secs(10))
        .run()
        .expect("--help");
    out.stdout
}

/// Every `--flag` of every command line of `unit` that runs `binary` (by file name) is in the
/// binary's `--help`.
fn flags_exist(unit: &BTreeMap<(String, String), Vec<String>>, name: &str, binary: &Path) -> usize {
    let help = help(binary);
    let mut checked = 0;
    for key in ["ExecStart", "ExecStartPre", "ExecReload"] {
        for line in unit
            .get(&("Service".to_owned(), key.to_owned()))
            .into_iter()
            .flatten()
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words
                .first()
                .is_none_or(|w| !w.ends_with(&format!("/{name}")))
            {
                continue;
            }
            for w in words.iter().filter(|w| w.starts_with("--")) {
                assert!(help.contains(w), "{name} has no {w} ({key}={line})");
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn systemd_units_have_the_expected_keys_and_verify() {
    let dir = repo().join("deploy/systemd");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("unit file");
    let dp = parse_unit(&read("tandem-dataplane.service"));
    let sy = parse_unit(&read("tandem-syncd.service"));

    assert_eq!(
        one(&dp, "Service", "ExecStart"),
        "/usr/local/bin/tandem-dataplane --config /etc/tandem/director.toml"
    );
    assert_eq!(one(&dp, "Service", "Restart"), "on-failure");
    assert_eq!(one(&dp, "Service", "RestartPreventExitStatus"), "2");
    assert_eq!(one(&dp, "Service", "LimitMEMLOCK"), "infinity");
    assert_eq!(one(&dp, "Service", "RuntimeDirectory"), "tandem");
    assert_eq!(one(&dp, "Service", "RuntimeDirectoryPreserve"), "yes");
    assert_eq!(one(&dp, "Service", "ExecReload"), "/bin/kill -HUP $MAINPID");
    let pre = dp
        .get(&("Service".into(), "ExecStartPre".into()))
        .expect("ExecStartPre");
    assert!(pre.iter().any(|l| l.contains("--check")), "{pre:?}");
    assert!(pre.iter().any(|l| l.contains("HugePages_Total")), "{pre:?}");
    assert!(pre.iter().any(|l| l.contains("/dev/vfio/vfio")), "{pre:?}");
    assert!(one(&dp, "Unit", "After").contains("dpdk.service"));
    assert_eq!(one(&dp, "Install", "WantedBy"), "multi-user.target");
    // DPDK needs the devices: no PrivateDevices on the dataplane.
    assert!(!dp.contains_key(&("Service".into(), "PrivateDevices".into())));

    assert_eq!(
        one(&sy, "Service", "ExecStart"),
        "/usr/local/bin/tandem-syncd --config /etc/tandem/syncd.toml"
    );
    assert_eq!(one(&sy, "Unit", "Requires"), "tandem-dataplane.service");
    assert!(
        one(&sy, "Unit", "After")
            .split_whitespace()
            .any(|u| u == "tandem-dataplane.service")
    );
    // syncd reconnects to a restarted dataplane by itself: a crash of the dataplane must not
    // stop it (BindsTo would).
    assert!(!sy.contains_key(&("Unit".into(), "BindsTo".into())));
    assert_eq!(one(&sy, "Service", "Restart"), "on-failure");
    assert_eq!(one(&sy, "Service", "RuntimeDirectory"), "tandem");
    assert_eq!(one(&sy, "Service", "ReadWritePaths"), "/run/tandem");
    // Heartbeats ahead of other work on a busy box.
    assert_eq!(one(&sy, "Service", "Nice"), "-10");

    let dataplane = locate_dataplane(None).expect("tandem-dataplane (cargo build --bins)");
    let syncd = locate_syncd().expect("tandem-syncd (cargo build --bins)");
    assert!(flags_exist(&dp, "tandem-dataplane", &dataplane) >= 3);
    assert!(flags_exist(&sy, "tandem-syncd", &syncd) >= 3);

    // systemd's own check, on copies that run the binaries just built.
    let analyze = Cmd::new(["systemd-analyze", "--version"])
        .timeout(Duration::from_secs(10))
        .run();
    if analyze.is_err() {
        println!("SKIP: systemd-analyze verify: systemd-analyze is not available here");
        return;
    }
    let tmp = TempDir::new("units");
    let bin_dir = dataplane.parent().expect("the binaries' directory");
    assert_eq!(syncd.parent(), Some(bin_dir));
    let mut files = Vec::new();
    for f in ["tandem-dataplane.service", "tandem-syncd.service"] {
        let text = read(f).replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
        let path = tmp.0.join(f);
        std::fs::write(&path, text).expect("writing a unit copy");
        files.push(path.display().to_string());
    }
    let mut argv = vec!["systemd-analyze".to_owned(), "verify".to_owned()];
    argv.extend(files);
    let out = Cmd::new(argv)
        .timeout(Duration::from_secs(30))
        .output()
        .expect("systemd-analyze verify");
    println!("systemd-analyze verify: {} {}", out.stdout, out.stderr);
    assert!(out.status.success(), "{}", out.stderr);
    for bad in [
        "Unknown",
        "ignoring",
        "bad unit",
        "not executable",
        "Failed",
    ] {
        assert!(!out.stderr.contains(bad), "{}", out.stderr);
    }
}

#[test]
fn director_pci_config_passes_check() {
    let file = repo().join("deploy/director-pci.toml");
    let dataplane = locate_dataplane(None).expect("tandem-dataplane (cargo build --bins)");
    let out = Cmd::new([
        dataplane.display().to_string(),
        "--check".into(),
        "--config".into(),
        file.display().to_string(),
    ])
    .timeout(Duration::from_secs(10))
    .output()
    .expect("tandem-dataplane --check");
    assert!(out.status.success(), "{}", out.stderr);
    let cfg = tandem_dataplane::config::Config::load(&file).expect("the file loads");
    let args = &cfg.eal.args;
    // Several worker lcores, the PCI devices allowed, hugepages (no --no-huge, no --no-pci).
    let lcores = args
        .windows(2)
        .find(|w| w[0] == "-l")
        .map(|w| w[1].clone())
        .expect("-l");
    assert_eq!(lcores, "2-5");
    assert!(!args.iter().any(|a| a == "--no-huge" || a == "--no-pci"));
    let allowed: Vec<&String> = args
        .windows(2)
        .filter(|w| w[0] == "-a")
        .map(|w| &w[1])
        .collect();
    assert_eq!(cfg.ports.len(), 2);
    for p in &cfg.ports {
        assert!(
            allowed.contains(&&p.device),
            "{} not allowed by -a",
            p.device
        );
        assert_eq!(p.device.len(), "0000:03:00.0".len(), "{}", p.device);
    }
    assert!(cfg.sync.is_some());
    // The pool holds every queue's descriptors: 2 ports x 4 lcores x (rx + tx) + caches.
    let d = &cfg.dataplane;
    let needed =
        2 * 4 * (u32::from(d.rx_descriptors) + u32::from(d.tx_descriptors)) + 4 * d.mbuf_cache;
    assert!(d.mbufs > 2 * needed, "{} mbufs for {needed}", d.mbufs);
}

#[test]
fn make_certs_gives_certificates_syncd_accepts() {
    let tmp = TempDir::new("certs");
    let script = repo().join("deploy/make-certs.sh");
    let certs = tmp.0.join("certs");
    let out = Cmd::new([
        "sh".to_owned(),
        script.display().to_string(),
        certs.display().to_string(),
    ])
    .timeout(Duration::from_secs(60))
    .run()
    .expect("make-certs.sh");
    println!("{}", out.stdout);
    for f in [
        "ca.pem",
        "ca.key",
        "director-a.pem",
        "director-a.key",
        "director-b.pem",
        "director-b.key",
    ] {
        assert!(certs.join(f).is_file(), "{f} missing");
    }
    // A second run refuses to replace the CA.
    let again = Cmd::new([
        "sh".to_owned(),
        script.display().to_string(),
        certs.display().to_string(),
    ])
    .timeout(Duration::from_secs(60))
    .output()
    .expect("make-certs.sh again");
    assert!(!again.status.success());
    assert!(again.stderr.contains("refusing"), "{}", again.stderr);

    // The example syncd.toml uses certs/ca.pem, certs/director-a.{pem,key} and peer_name
    // director-b.tandem, relative to the file: exactly what the script made. B's is swapped.
    let example = std::fs::read_to_string(repo().join("syncd/examples/syncd.toml"))
        .expect("syncd/examples/syncd.toml");
    let b = example
        .replace("director-a.pem", "director-b.pem")
        .replace("director-a.key", "director-b.key")
        .replace(
            "peer_name = \"director-b.tandem\"",
            "peer_name = \"director-a.tandem\"",
        );
    assert_ne!(b, example);
    let syncd = locate_syncd().expect("tandem-syncd (cargo build --bins)");
    for (name, text) in [("a.toml", example), ("b.toml", b)] {
        let cfg = tmp.0.join(name);
        std::fs::write(&cfg, text).expect("writing a syncd config");
        let out = Cmd::new([
            syncd.display().to_string(),
            "--config".into(),
            cfg.display().to_string(),
            "--check".into(),
        ])
        .timeout(Duration::from_secs(20))
        .output()
        .expect("tandem-syncd --check");
        assert!(
            out.status.success(),
            "{name}: {} {}",
            out.stdout,
            out.stderr
        );
    }
    // A key that is not the certificate's is caught by --check.
    std::fs::copy(certs.join("director-b.key"), certs.join("director-a.key")).expect("copy");
    let out = Cmd::new([
        syncd.display().to_string(),
        "--config".into(),
        tmp.0.join("a.toml").display().to_string(),
        "--check".into(),
    ])
    .timeout(Duration::from_secs(20))
    .output()
    .expect("tandem-syncd --check");
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
}

/// A running dataplane and its files: stopped (SIGKILL if still running), its temp dir and
/// DPDK runtime dir removed on drop.
struct Dataplane {
    child: Option<std::process::Child>,
    dir: TempDir,
    runtime: PathBuf,
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.runtime);
    }
}

/// `deploy/director-pci.toml` as it is — pool, descriptors, connection tables, two ports,
/// `[sync]`, services — with only what needs hardware swapped: the two PCI ports become
/// `net_null` vdevs, `-l 2-5` becomes four lcores on this machine's CPUs, no hugepages, and
/// the paths go to a temp dir. Every one of the four workers polls its own queue on both
/// ports (RSS configured, 4 rx/tx queues per port) and the dataplane stops cleanly.
#[test]
fn director_pci_config_runs_four_workers_with_a_queue_each() {
    if !tandem_hw_tests::exec::is_root() {
        println!("SKIP: director_pci_config_runs_four_workers_with_a_queue_each: not root (DPDK)");
        return;
    }
    let text = std::fs::read_to_string(repo().join("deploy/director-pci.toml")).expect("file");
    let tmp = TempDir::new("pci");
    let prefix = format!("tandem-pcitest-{}", std::process::id());
    let (start, end) = (
        text.find("args = [").expect("[eal] args"),
        text.find("\n]\n").expect("end of args") + 2,
    );
    let args = format!(
        "args = [\"--lcores\", \"(0-3)@(0-{})\", \"--no-pci\", \"--no-huge\", \"-m\", \"1024\", \
         \"--file-prefix\", \"{prefix}\", \"--vdev\", \"net_null0\", \"--vdev\", \"net_null1\", \
         \"--log-level\", \"lib.eal:warning\"]",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .saturating_sub(1)
    );
    let d = tmp.0.display();
    let cfg = format!("{}{args}{}", &text[..start], &text[end..])
        .replace("\"0000:03:00.0\"", "\"net_null0\"")
        .replace("\"0000:03:00.1\"", "\"net_null1\"")
        .replace("/run/tandem/stats.json", &format!("{d}/stats.json"))
        .replace("/run/tandem/admin.sock", &format!("{d}/admin.sock"))
        .replace("/run/tandem/dataplane-sync.sock", &format!("{d}/sync.sock"))
        .replace("metrics_listen = \"127.0.0.1:9610\"\n", "");
    let path = tmp.0.join("director.toml");
    std::fs::write(&path, &cfg).expect("writing the config");
    let log = std::fs::File::create(tmp.0.join("log")).expect("log");
    let dataplane = locate_dataplane(None).expect("tandem-dataplane (cargo build --bins)");
    let child = std::process::Command::new(&dataplane)
        .arg("--config")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting tandem-dataplane");
    let mut dp = Dataplane {
        child: Some(child),
        runtime: PathBuf::from("/var/run/dpdk").join(&prefix),
        dir: tmp,
    };
    let stats = dp.dir.0.join("stats.json");
    let log = || std::fs::read_to_string(dp.dir.0.join("log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let rx = loop {
        if let Some(c) = dp.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("tandem-dataplane exited ({status}):\n{}", log());
        }
        let rx: Vec<(u64, u64)> = std::fs::read_to_string(&stats)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v["lcores"].as_array().map(|a| {
                    a.iter()
                        .map(|l| {
                            (
                                l["lcore"].as_u64().unwrap_or(u64::MAX),
                                l["counters"]["rx_packets"].as_u64().unwrap_or(0),
                            )
                        })
                        .collect()
                })
            })
            .unwrap_or_default();
        if rx.len() == 4 && rx.iter().all(|(_, n)| *n > 0) {
            break rx;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no stats with four busy lcores within 60 s (last {rx:?}):\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    println!("frames per lcore: {rx:?}");
    assert_eq!(rx.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    let text = log();
    for port in [
        "port=outside device=net_null0",
        "port=inside device=net_null1",
    ] {
        assert!(text.contains(port), "{port} not started:\n{text}");
    }
    let pid = dp.child.as_ref().map(|c| c.id()).expect("child");
    Cmd::new(["kill".to_owned(), "-TERM".into(), pid.to_string()])
        .timeout(Duration::from_secs(5))
        .run()
        .expect("SIGTERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = dp.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            dp.child = None;
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit within 30 s of SIGTERM:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}:\n{}", log());
    assert!(log().contains("stopped cleanly"), "{}", log());
}
