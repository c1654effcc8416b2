//! The drill over ssh, for real: the test starts its own `sshd` (Debian's openssh-server,
//! installed by scripts/setup.sh) on 127.0.0.1 with a free port, its own host key, client key
//! and configuration in a temp dir, and writes a rack description whose hosts are reached as
//! `ssh root@127.0.0.1 -p PORT` and then `ip netns exec <ns>` on the far side. `tandem-rack
//! drill --rack FILE` builds the virtual rack (`build = "virtual"`) and runs every command of
//! the drill on a host — the client, the status-file samplers, the `kill` fault, the stop
//! files — through ssh; every connection must survive as in the local drills.
//!
//! Needs root and `ip netns` (else `SKIP`). sshd is killed and the rack's namespaces removed
//! even when the test fails (guards that act on drop).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tandem_hw_tests::exec::{Cmd, is_root};
use tandem_hw_tests::rack;
use tandem_hw_tests::{Prefix, drill::DrillReport};

const PREFIX: &str = "trssh";
const SSHD: &str = "/usr/sbin/sshd";

/// The rack's prefix-wide teardown, before (leftovers of a killed run) and after the test.
struct Cleanup(Prefix);

impl Cleanup {
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

/// The test's sshd and its directory: killed, reaped and removed on drop.
struct Sshd {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("TANDEM_KEEP_SSHD_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Sshd {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    fn identity(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().expect("local addr").port()
}

/// Keys, configuration, and `sshd -D` on 127.0.0.1:<free port>, waiting (bounded) until a
/// login with the client key works.
fn start_sshd() -> Sshd {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("tandem-sshd-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("sshd dir");
    let mut sshd = Sshd {
        child: None,
        dir: dir.clone(),
        port: free_port(),
    };
    let keygen = |file: &Path| {
        Cmd::new([
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "tandem-test",
            "-f",
            &file.display().to_string(),
        ])
        .timeout(Duration::from_secs(20))
        .run()
        .expect("ssh-keygen");
    };
    keygen(&dir.join("host_key"));
    keygen(&sshd.identity());
    std::fs::copy(dir.join("id_ed25519.pub"), dir.join("authorized_keys"))
        .expect("authorized_keys");
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             StrictModes no\nUsePAM no\nUseDNS no\nLogLevel VERBOSE\nMaxStartups 50:30:100\n\
             MaxSessions 50\nSubsystem sftp internal-sftp\n",
            port = sshd.port,
            d = dir.display()
        ),
    )
    .expect("sshd_config");
    // sshd's privilege separation directory (created by the ssh service, which is not running).
    std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
    Cmd::new([SSHD, "-t", "-f", &config.display().to_string()])
        .timeout(Duration::from_secs(10))
        .run()
        .expect("sshd -t accepts the test's configuration");
    let child = Command::new(SSHD)
        .args(["-D", "-f"])
        .arg(&config)
        .arg("-E")
        .arg(dir.join("sshd.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting sshd");
    sshd.child = Some(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let probe = Cmd::new(ssh_argv(&sshd, &["true"]))
            .timeout(Duration::from_secs(10))
            .output();
        if probe.as_ref().is_ok_and(|o| o.status.success()) {
            return sshd;
        }
        if let Some(c) = sshd.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("sshd exited ({status}): {}", sshd.log());
        }
        assert!(
            Instant::now() < deadline,
            "no ssh login to 127.0.0.1:{} within 20 s: {probe:?}\nsshd log:\n{}",
            sshd.port,
            sshd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ssh_options() -> [&'static str; 3] {
    [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "LogLevel=ERROR",
    ]
}

fn ssh_argv(sshd: &Sshd, remote: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "ssh".into(),
        "-p".into(),
        sshd.port.to_string(),
        "-i".into(),
        sshd.identity().display().to_string(),
        "-o".into(),
        "BatchMode=yes".into(),
    ];
    for o in ssh_options() {
        argv.extend(["-o".into(), o.into()]);
    }
    argv.push("root@127.0.0.1".into());
    argv.extend(remote.iter().map(|s| (*s).to_owned()));
    argv
}

/// The rack description: the virtual rack's hosts, every one reached over ssh to the test's
/// sshd and then its namespace.
fn description(sshd: &Sshd) -> String {
    let access = |ns: &str| {
        format!(
            "access = {{ ssh = \"root@127.0.0.1\", port = {port}, identity = \"{id}\", netns = \"{{prefix}}-{ns}\", options = [{opts}] }}",
            port = sshd.port,
            id = sshd.identity().display(),
            opts = ssh_options()
                .iter()
                .map(|o| format!("\"{o}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let director = |name: &str, role: &str, ns: &str, l: &str| {
        format!(
            "[[host]]\nname = \"{name}\"\nrole = \"{role}\"\n{}\nworkdir = \"{{state}}\"\n\
             syncd_status = \"{{state}}/{l}.syncd.json\"\n[host.faults]\n\
             kill = \"kill -9 $(cat {{state}}/{l}.pid) $(cat {{state}}/{l}.syncd.pid)\"\n\
             restart = \"rack:restart\"\nsync-down = \"ip link set dev sync0 down\"\n\
             sync-up = \"ip link set dev sync0 up\"\n[host.logs]\n\
             syncd = \"cat {{state}}/{l}.syncd.log\"\n\n",
            access(ns)
        )
    };
    format!(
        "[rack]\nname = \"virtual over ssh\"\nbuild = \"virtual\"\nport = 80\n\n\
         [rack.vips]\nnat = \"203.0.113.10\"\ntun = \"203.0.113.20\"\ndr = \"203.0.113.30\"\n\n\
         [[host]]\nname = \"client\"\nrole = \"client\"\n{}\ntool = \"{{tool}}\"\nworkdir = \"{{state}}\"\n\n{}{}",
        access("client"),
        director("director-a", "director-a", "dira", "a"),
        director("director-b", "director-b", "dirb", "b"),
    )
}

#[test]
fn failover_drill_kill_over_ssh() {
    if !is_root() {
        println!("SKIP: failover_drill_kill_over_ssh: not root (network namespaces, sshd)");
        return;
    }
    if let Err(e) = rack::list_namespaces() {
        println!("SKIP: failover_drill_kill_over_ssh: `ip netns` is unavailable: {e}");
        return;
    }
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} missing: scripts/setup.sh installs openssh-server"
    );
    // Dropped last: the teardown runs under it.
    let _machine = rack::tests_lock().expect("the rack tests' machine-wide lock");
    let cleanup = Cleanup::new(PREFIX);
    let sshd = start_sshd();
    let file = sshd.dir.join("rack.toml");
    std::fs::write(&file, description(&sshd)).expect("rack description");

    // rack-check parses it and shows every host reached over ssh.
    let check = Command::new(env!("CARGO_BIN_EXE_tandem-rack"))
        .args(["rack-check", "--prefix", PREFIX, "--rack"])
        .arg(&file)
        .output()
        .expect("tandem-rack rack-check");
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "ssh root@127.0.0.1 -p {}, netns {PREFIX}-client",
            sshd.port
        )),
        "{text}"
    );

    let svg = sshd.dir.join("ssh-nat-kill.svg");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-rack"))
        .args([
            "drill",
            "--prefix",
            PREFIX,
            "--mode",
            "nat",
            "--fault",
            "kill",
            "--conns",
            "50",
            "--warmup-ms",
            "1500",
            "--after-ms",
            "2500",
            "--json",
            "--rack",
        ])
        .arg(&file)
        .arg("--svg")
        .arg(&svg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem-rack drill");
    let bound = Duration::from_secs(180);
    let deadline = Instant::now() + bound;
    while child.try_wait().expect("waiting for the drill").is_none() {
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            panic!("the ssh drill ran longer than {} s", bound.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("drill output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: DrillReport = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no report ({e}): {stdout}\n{stderr}\nsshd log:\n{}",
            sshd.log()
        )
    });
    println!("over ssh: {report:?}");
    let what = format!("{report:?}\n{stderr}");
    assert_eq!(report.established, 50, "{what}");
    assert_eq!(report.survived, 50, "{what}");
    assert_eq!(report.broken, 0, "{what}");
    assert_eq!(report.lost_messages, 0, "{what}");
    assert_eq!(report.max_actives, 1, "{what}");
    assert_eq!(report.b_role_after.as_deref(), Some("Active"), "{what}");
    let takeover = report.takeover_ms.expect("an answer after the fault");
    assert!(takeover <= 1000, "takeover {takeover} ms: {what}");
    assert!(report.new_flow_ms.is_some(), "{what}");
    // The role timeline came through the ssh samplers.
    assert!(
        report
            .role_changes
            .iter()
            .any(|r| r.contains("B Active (PeerDead)")),
        "{what}"
    );
    // The kill ran on director A's host over ssh.
    assert!(
        report
            .killed
            .iter()
            .any(|k| k.starts_with("director-a: kill -9")),
        "{what}"
    );
    assert!(out.status.success(), "exit {:?}: {what}", out.status);
    // Every host command went through the test's sshd — the client, two samplers, the kill,
    // the stop files (cleared and touched on three hosts), the status reads — as sessions of
    // the drill's one shared connection (ControlMaster) to it.
    let log = sshd.log();
    let sessions = log.matches("Starting session: command").count();
    let logins = log.matches("Accepted publickey for root").count();
    assert!(sessions >= 10, "{sessions} ssh sessions:\n{log}");
    assert!(
        logins <= 4,
        "{logins} ssh logins, connections not shared:\n{log}"
    );
    drop(sshd);
    drop(cleanup);
    let left = rack::rack_namespaces(&Prefix::new(PREFIX).expect("prefix")).expect("ip netns");
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
