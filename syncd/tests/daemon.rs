//! The real `tandem-syncd` binary, two (or three) processes on loopback with mutual TLS, each
//! pointed at its own reference dataplane (`localref`: the `Local` service on the core's
//! `ConnTable`) served by this test process on a Unix socket in a temp dir.
//!
//! Every wait is bounded; processes are killed and temp files removed on drop, so a failing
//! assertion cleans up too.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tandem_core::lb::{Endpoint, Protocol};
use tandem_proto::sync as pb;
use tandem_syncd::localref::{RefDataplane, RefServer, ServiceNet};

mod adminref;

fn ep(a: [u8; 4], port: u16) -> Endpoint {
    Endpoint {
        addr: Ipv4Addr::from(a),
        port,
    }
}

fn reals() -> Vec<Endpoint> {
    vec![ep([172, 16, 0, 2], 80), ep([172, 16, 0, 3], 8000)]
}

const VIP: [u8; 4] = [192, 0, 2, 1];

/// A CA that writes its certificate and signs leaves into a folder.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, format!("Tandem test CA {name}"));
        let issuer = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.join(format!("{name}-ca.pem")), issuer.pem()).unwrap();
        Ca {
            issuer,
            dir: dir.to_path_buf(),
            name: name.to_string(),
        }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A leaf certificate for `dns`; returns (cert, key) paths.
    fn leaf(&self, file: &str, dns: &str) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![dns.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, dns);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let c = self.dir.join(format!("{file}.pem"));
        let k = self.dir.join(format!("{file}.key"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct NodeCfg<'a> {
    name: &'a str,
    id: u32,
    priority: u8,
    listen: u16,
    peer: u16,
    ca: PathBuf,
    cert: (PathBuf, PathBuf),
    peer_name: &'a str,
}

/// Director A of the test pair: node 1, priority 200, listening on `listen`.
fn node_a(ca: &Ca, listen: u16, peer: u16) -> NodeCfg<'static> {
    NodeCfg {
        name: "a",
        id: 1,
        priority: 200,
        listen,
        peer,
        ca: ca.ca_path(),
        cert: ca.leaf("director-a", "director-a.tandem"),
        peer_name: "director-b.tandem",
    }
}

/// Director B of the test pair: node 2, priority 100.
fn node_b(ca: &Ca, listen: u16, peer: u16) -> NodeCfg<'static> {
    NodeCfg {
        name: "b",
        id: 2,
        priority: 100,
        listen,
        peer,
        ca: ca.ca_path(),
        cert: ca.leaf("director-b", "director-b.tandem"),
        peer_name: "director-a.tandem",
    }
}

/// A running `tandem-syncd`; killed on drop.
struct Syncd {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    status: PathBuf,
}

impl Syncd {
    fn start(dir: &Path, c: &NodeCfg) -> Syncd {
        Syncd::start_with(dir, c, "")
    }

    /// With `extra` appended to the configuration (health checks).
    fn start_with(dir: &Path, c: &NodeCfg, extra: &str) -> Syncd {
        let status = dir.join(format!("{}-status.json", c.name));
        let log = dir.join(format!("{}.log", c.name));
        let cfg = format!(
            r#"
[node]
id = {id}
priority = {priority}
preempt = true

[heartbeat]
interval_ms = 50

[sync_link]
listen = "127.0.0.1:{listen}"
peer = "127.0.0.1:{peer}"
reconnect_min_ms = 20
reconnect_max_ms = 200

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
peer_name = "{peer_name}"

[dataplane]
socket = "{name}.sock"
admin_socket = "{name}-admin.sock"

[daemon]
log_level = "info"
status_file = "{name}-status.json"
status_interval_ms = 20
{extra}
"#,
            id = c.id,
            priority = c.priority,
            listen = c.listen,
            peer = c.peer,
            ca = c.ca.display(),
            cert = c.cert.0.display(),
            key = c.cert.1.display(),
            peer_name = c.peer_name,
            name = c.name,
        );
        let path = dir.join(format!("{}.toml", c.name));
        std::fs::write(&path, cfg).unwrap();
        let check = Command::new(env!("CARGO_BIN_EXE_tandem-syncd"))
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "--check: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(env!("CARGO_BIN_EXE_tandem-syncd"))
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Syncd {
            name: c.name.to_string(),
            child: Some(child),
            log,
            status,
        }
    }

    fn status(&self) -> Option<serde_json::Value> {
        let t = std::fs::read(&self.status).ok()?;
        serde_json::from_slice(&t).ok()
    }

    fn role(&self) -> String {
        self.status()
            .and_then(|s| s["role"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    /// SIGTERM through kill(1) (no unsafe code here), then waits for the exit.
    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Syncd {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log());
        }
    }
}

/// Polls `f` every 5 ms for at most `limit`; the time it took, or `None`.
async fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f().then(|| t0.elapsed())
}

fn dataplane(id: u64, net: &ServiceNet, dir: &Path, name: &str) -> (RefDataplane, RefServer) {
    let dp = RefDataplane::new(id, reals(), 1 << 12, net.clone()).unwrap();
    let srv = dp.serve(&dir.join(format!("{name}.sock"))).unwrap();
    (dp, srv)
}

/// Directors A and B (`node_a`, `node_b`) started in `d`, each with its reference dataplane,
/// on one simulated service network. Fields drop in order: the daemons before their
/// dataplanes.
struct Pair {
    a: Syncd,
    b: Syncd,
    dp_a: RefDataplane,
    dp_b: RefDataplane,
    _servers: (RefServer, RefServer),
}

impl Pair {
    fn start(d: &Path) -> Pair {
        let ca = Ca::new(d, "pair");
        let net = ServiceNet::new();
        let (dp_a, srv_a) = dataplane(1, &net, d, "a");
        let (dp_b, srv_b) = dataplane(2, &net, d, "b");
        let (pa, pb) = (free_port(), free_port());
        Pair {
            a: Syncd::start(d, &node_a(&ca, pa, pb)),
            b: Syncd::start(d, &node_b(&ca, pb, pa)),
            dp_a,
            dp_b,
            _servers: (srv_a, srv_b),
        }
    }

    /// Started, then waited for: A active and B a sync-complete standby, in the daemons and
    /// in their dataplanes. Panics (with both roles) after 10 s.
    async fn elected(d: &Path) -> (Pair, Duration) {
        let p = Pair::start(d);
        let took = wait_for(Duration::from_secs(10), || {
            p.a.role() == "Active"
                && p.b.role() == "Standby"
                && p.dp_a.role() == pb::Role::Active
                && p.dp_b.role() == pb::Role::Standby
        })
        .await;
        let Some(took) = took else {
            panic!(
                "no election: a {} / {:?}, b {} / {:?}",
                p.a.role(),
                p.dp_a.role(),
                p.b.role(),
                p.dp_b.role()
            );
        };
        (p, took)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_elects_replicates_and_takes_over_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Exactly one active: the higher priority; the other a sync-complete standby.
    let (
        Pair {
            mut a,
            b,
            dp_a,
            dp_b,
            _servers,
        },
        elected,
    ) = Pair::elected(d).await;
    eprintln!("elected after {elected:?}");

    // Connections on the active appear identically on the standby.
    for i in 0..300u32 {
        let client = ep([10, 1, (i >> 8) as u8, i as u8], 20_000 + i as u16);
        assert!(dp_a.open_tcp(client, ep(VIP, 80), (i % 2) as usize));
    }
    for i in (0..300u32).step_by(10) {
        let client = ep([10, 1, (i >> 8) as u8, i as u8], 20_000 + i as u16);
        assert!(dp_a.close(Protocol::Tcp, client, ep(VIP, 80)));
    }
    let synced = wait_for(Duration::from_secs(10), || dp_b.rows() == dp_a.rows()).await;
    let rows = dp_a.rows();
    assert_eq!(rows.len(), 270);
    assert!(
        synced.is_some(),
        "standby has {} entries, active {}",
        dp_b.rows().len(),
        rows.len()
    );
    eprintln!(
        "replicated 300 creates + 30 deletes in {:?}",
        synced.unwrap()
    );
    // The status file (rewritten every 20 ms) shows the stream fully acked.
    let acked = wait_for(Duration::from_secs(2), || {
        a.status().is_some_and(|s| {
            s["sender"]["lag_events"] == 0
                && s["sender"]["last_acked"].as_u64().unwrap_or(0) > 0
                && s["links"]["replication"] == "sending"
        })
    })
    .await;
    assert!(acked.is_some(), "{:#?}", a.status());
    // The same figures reach each dataplane through Local.ReportStatus.
    let reported = wait_for(Duration::from_secs(2), || {
        let (ra, rb) = (dp_a.last_report(), dp_b.last_report());
        ra.is_some_and(|r| {
            r.role == pb::Role::Active as i32
                && r.replication == "sending"
                && r.last_acked_seq > 0
                && r.lag_events == 0
                && r.sync_complete
        }) && rb.is_some_and(|r| {
            r.role == pb::Role::Standby as i32
                && r.replication == "receiving"
                && r.peer_role == pb::Role::Active as i32
                && r.sync_complete
        })
    })
    .await;
    assert!(
        reported.is_some(),
        "{:#?}\n{:#?}",
        dp_a.last_report(),
        dp_b.last_report()
    );

    // kill -9 the active: the standby takes over within the dead interval (+ slack).
    let dead = tandem_syncd::role::RoleConfig::new(2, 100).dead_interval();
    let t0 = Instant::now();
    a.kill9();
    let took = wait_for(Duration::from_secs(3), || dp_b.role() == pb::Role::Active).await;
    let took = took.expect("the standby never took over");
    eprintln!(
        "takeover: dataplane B ordered ACTIVE {:?} after kill -9 (dead interval {:?})",
        took, dead
    );
    assert!(
        took <= dead + Duration::from_millis(250),
        "takeover after {took:?} (dead interval {dead:?})"
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    // The killed director's dataplane lost its syncd and stood down.
    assert_eq!(dp_a.role(), pb::Role::Standby);
    // The new active has the old active's table, identically.
    assert_eq!(dp_b.rows(), rows);
    assert!(
        wait_for(Duration::from_secs(2), || b.status().is_some_and(
            |s| s["role"] == "Active" && s["role_reason"] == "PeerDead"
        ))
        .await
        .is_some(),
        "{:?}",
        b.status()
    );
    let log = b.log();
    assert!(log.contains("role changed"), "{log}");
    assert!(log.contains("activating"), "{log}");
    drop(b);
    drop(dir);
}

/// `systemctl stop` of the active (SIGTERM): it tells the standby on its way out (a `Fault`
/// heartbeat), which takes over at once (`PeerFault`), not after the dead interval
/// (`PeerDead`, what a crash gives).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_hands_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (
        Pair {
            mut a,
            b,
            dp_a,
            dp_b,
            _servers,
        },
        _,
    ) = Pair::elected(d).await;

    a.terminate();
    // A ordered its own dataplane STANDBY before it went.
    assert_eq!(dp_a.role(), pb::Role::Standby);
    let took = wait_for(Duration::from_secs(3), || dp_b.role() == pb::Role::Active).await;
    assert!(took.is_some(), "the standby never took over");
    assert!(
        wait_for(Duration::from_secs(2), || b.status().is_some_and(
            |s| s["role"] == "Active" && s["role_reason"] == "PeerFault"
        ))
        .await
        .is_some(),
        "taken over on A's word, not by its silence: {:?}",
        b.status()
            .map(|s| (s["role"].clone(), s["role_reason"].clone()))
    );
    let log = a.log();
    assert!(log.contains("shutting down"), "{log}");
    drop(b);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_a_foreign_ca_or_the_wrong_name_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "good");
    let other = Ca::new(d, "other");
    let net_a = ServiceNet::new();
    let (_dp_a, _srv_a) = dataplane(1, &net_a, d, "a");
    let (_dp_c, _srv_c) = dataplane(3, &ServiceNet::new(), d, "c");
    let (_dp_x, _srv_x) = dataplane(4, &ServiceNet::new(), d, "x");
    let (pa, pc, px) = (free_port(), free_port(), free_port());
    let a = Syncd::start(
        d,
        &NodeCfg {
            name: "a",
            id: 1,
            priority: 200,
            listen: pa,
            peer: pc,
            ca: ca.ca_path(),
            cert: ca.leaf("director-a", "director-a.tandem"),
            peer_name: "director-b.tandem",
        },
    );
    // The right name, signed by another CA. It trusts both CAs, so that the refusal is a's
    // (of its certificate), not its own refusal of a's certificate.
    let both = d.join("both-ca.pem");
    let mut bundle = std::fs::read(other.ca_path()).unwrap();
    bundle.extend(std::fs::read(ca.ca_path()).unwrap());
    std::fs::write(&both, bundle).unwrap();
    let mut c = Syncd::start(
        d,
        &NodeCfg {
            name: "c",
            id: 2,
            priority: 100,
            listen: pc,
            peer: pa,
            ca: both.clone(),
            cert: other.leaf("intruder-c", "director-b.tandem"),
            peer_name: "director-a.tandem",
        },
    );
    // The right CA, the wrong name.
    let mut x = Syncd::start(
        d,
        &NodeCfg {
            name: "x",
            id: 3,
            priority: 100,
            listen: px,
            peer: pa,
            ca: ca.ca_path(),
            cert: ca.leaf("intruder-x", "intruder.tandem"),
            peer_name: "director-a.tandem",
        },
    );
    let refused = wait_for(Duration::from_secs(10), || {
        let log = a.log();
        log.contains("connection refused: TLS authentication failed")
            && log.contains("UnknownIssuer")
            && log.contains("NotValidForName")
    })
    .await;
    assert!(refused.is_some(), "a's log:\n{}", a.log());
    // Neither intruder was ever heard as a peer, and neither got a link up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = a.status().unwrap();
    assert!(st["peer"]["node_id"].is_null(), "{st:#}");
    assert_eq!(st["links"]["sync_link"], "down", "{st:#}");
    assert!(c.alive() && x.alive());
    assert!(!c.log().contains("sync link up"), "{}", c.log());
    assert!(!x.log().contains("sync link up"), "{}", x.log());
    // Alone, a becomes active (after its initial hold).
    assert!(
        wait_for(Duration::from_secs(5), || a.role() == "Active")
            .await
            .is_some()
    );
}

/// A client with the right certificate sends malformed messages: they are counted and
/// dropped, and the daemon stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_peer_messages_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "good");
    let (_dp_a, _srv_a) = dataplane(1, &ServiceNet::new(), d, "a");
    let (pa, pb) = (free_port(), free_port());
    let mut a = Syncd::start(d, &node_a(&ca, pa, pb));
    assert!(
        wait_for(Duration::from_secs(5), || a.role() == "Active")
            .await
            .is_some()
    );
    let (cert, key) = ca.leaf("director-b", "director-b.tandem");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(ca.ca_path()).unwrap(),
        ))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ))
        .domain_name("director-a.tandem");
    let ch = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{pa}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::peer_client::PeerClient::new(ch);
    let bad_hb = vec![
        pb::HeartbeatMessage {
            node_id: 2,
            priority: 0, // out of range
            role: pb::Role::Standby as i32,
            seq: 1,
            ..Default::default()
        },
        pb::HeartbeatMessage {
            node_id: 2,
            priority: 100,
            role: 99, // no such role
            seq: 2,
            ..Default::default()
        },
    ];
    let _ = client.heartbeat(tokio_stream::iter(bad_hb)).await;
    let bad_fb = vec![
        pb::ReceiverMessage { msg: None },
        pb::ReceiverMessage { msg: None },
    ];
    let _ = client.replicate(tokio_stream::iter(bad_fb)).await;
    let counted = wait_for(Duration::from_secs(5), || {
        a.status().is_some_and(|s| {
            s["daemon"]["malformed_heartbeats"] == 2 && s["daemon"]["malformed_feedback"] == 2
        })
    })
    .await;
    assert!(counted.is_some(), "{:#?}", a.status());
    assert!(a.alive());
    assert_eq!(a.role(), "Active");
}

/// Health checks in both directors of a pair: both check, only the active reports its
/// verdicts to its dataplane, and a standby that takes over reports every known verdict at
/// once (the listing is polled only every 5 s here, so nothing else could send them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_verdicts_reach_only_the_active_dataplane_and_follow_a_takeover() {
    use std::net::SocketAddrV4;
    use tandem_proto::admin as apb;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "pair");
    let net = ServiceNet::new();
    let (_dp_a, _srv_a) = dataplane(1, &net, d, "a");
    let (_dp_b, _srv_b) = dataplane(2, &net, d, "b");
    // One real server up (a listener), one down (a closed port).
    let up_l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let std::net::SocketAddr::V4(up) = up_l.local_addr().unwrap() else {
        panic!("v4")
    };
    tokio::spawn(async move {
        while let Ok((s, _)) = up_l.accept().await {
            drop(s);
        }
    });
    let down = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, free_port());
    let admin_a = adminref::TestAdmin::serve(&d.join("a-admin.sock"), vec![up, down]);
    let admin_b = adminref::TestAdmin::serve(&d.join("b-admin.sock"), vec![up, down]);
    let checks = r#"
[health]
poll_interval_ms = 5000

[[check]]
service = "tcp:192.0.2.1:80"
type = "tcp"
interval_ms = 100
timeout_ms = 100
rise = 1
fall = 2
on_failure = "remove"
"#;
    let (pa, pb) = (free_port(), free_port());
    let mut a = Syncd::start_with(
        d,
        &NodeCfg {
            name: "a",
            id: 1,
            priority: 200,
            listen: pa,
            peer: pb,
            ca: ca.ca_path(),
            cert: ca.leaf("director-a", "director-a.tandem"),
            peer_name: "director-b.tandem",
        },
        checks,
    );
    let b = Syncd::start_with(
        d,
        &NodeCfg {
            name: "b",
            id: 2,
            priority: 100,
            listen: pb,
            peer: pa,
            ca: ca.ca_path(),
            cert: ca.leaf("director-b", "director-b.tandem"),
            peer_name: "director-a.tandem",
        },
        checks,
    );
    let (up_s, down_s) = (up.to_string(), down.to_string());
    let state_of = |s: &Syncd, server: &str| -> String {
        s.status()
            .and_then(|st| {
                st["health"]["targets"].as_array().and_then(|ts| {
                    ts.iter()
                        .find(|t| t["server"] == server)
                        .and_then(|t| t["state"].as_str().map(str::to_string))
                })
            })
            .unwrap_or_default()
    };
    let both_known = |s: &Syncd| state_of(s, &up_s) == "up" && state_of(s, &down_s) == "down";
    let settled = wait_for(Duration::from_secs(10), || {
        a.role() == "Active"
            && b.role() == "Standby"
            && both_known(&a)
            && both_known(&b)
            && admin_a.calls().len() >= 2
    })
    .await;
    assert!(
        settled.is_some(),
        "a {} {:?}, b {} {:?}",
        a.role(),
        a.status().map(|s| s["health"].clone()),
        b.role(),
        b.status().map(|s| s["health"].clone())
    );
    const UP: i32 = apb::HealthState::Up as i32;
    const DOWN: i32 = apb::HealthState::Down as i32;
    const REMOVE: i32 = apb::HealthAction::Remove as i32;
    let mut calls: Vec<(String, i32, i32)> = admin_a
        .calls()
        .into_iter()
        .map(|c| (c.0, c.1, c.2))
        .collect();
    calls.sort();
    let mut want = vec![(up_s.clone(), UP, REMOVE), (down_s.clone(), DOWN, REMOVE)];
    want.sort();
    assert_eq!(calls, want);
    // The standby checked the same servers and said nothing to its dataplane.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(admin_b.calls(), vec![]);
    assert_eq!(b.status().unwrap()["health"]["reporting"], false);
    assert!(b.log().contains(&format!("server down: tcp 192.0.2.1:80 -> {down_s}, tcp: connect: connection refused (2 failures)")), "{}", b.log());

    // A dies: B takes over and reports both verdicts at once.
    a.kill9();
    let took = wait_for(Duration::from_secs(5), || admin_b.calls().len() >= 2).await;
    assert!(took.is_some(), "b {} calls {:?}", b.role(), admin_b.calls());
    assert!(took.unwrap() < Duration::from_millis(1500), "{took:?}");
    let active = wait_for(Duration::from_secs(2), || b.role() == "Active").await;
    assert!(active.is_some(), "b {}", b.role());
    let mut calls: Vec<(String, i32, i32)> = admin_b
        .calls()
        .into_iter()
        .map(|c| (c.0, c.1, c.2))
        .collect();
    calls.sort();
    assert_eq!(calls, want);
}

/// SIGHUP reads the file again: a broken one is refused and the daemon runs on; a good one's
/// checks are applied. (What the health task then does with new checks is
/// `health_task.rs`'s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_health_checks_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "hup");
    let mut a = Syncd::start(d, &node_a(&ca, free_port(), free_port()));
    let cfg = d.join("a.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || a.status().is_some())
            .await
            .is_some(),
        "started: {}",
        a.log()
    );
    // Writes the file with `check` after the good part, sends SIGHUP, waits for `logged`.
    async fn reload(a: &Syncd, cfg: &Path, good: &str, check: &str, logged: &str) {
        std::fs::write(cfg, format!("{good}\n[[check]]\n{check}\n")).unwrap();
        hup(a);
        let seen = wait_for(Duration::from_secs(5), || a.log().contains(logged)).await;
        assert!(seen.is_some(), "no `{logged}` in: {}", a.log());
    }

    let broken = "service = \"nonsense\"\ntype = \"tcp\"";
    reload(&a, &cfg, &good, broken, "reload refused").await;
    assert!(a.log().contains("check[0].service"), "{}", a.log());
    assert!(a.alive(), "a refused reload must not stop the daemon");

    let check = "service = \"tcp:203.0.113.10:80\"\ntype = \"tcp\"";
    reload(&a, &cfg, &good, check, "health checks reloaded").await;
    assert!(a.log().contains("checks=1"), "{}", a.log());
    assert!(a.alive());
}

/// SIGHUP applies new TLS material, the rotation to a new CA without a restart: B runs with a
/// certificate of a new CA that A does not trust yet, and A refuses it; A's file is pointed at
/// the new CA and its own new certificate, SIGHUP, and the link comes up (A's server accepts
/// B, A's clients trust B) with neither daemon restarted. Unusable TLS files in a reload are
/// refused, and the link stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_tls_material_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = Ca::new(d, "old");
    let new = Ca::new(d, "new");
    let net = ServiceNet::new();
    let (_dp_a, _srv_a) = dataplane(1, &net, d, "a");
    let (_dp_b, _srv_b) = dataplane(2, &net, d, "b");
    let (pa, pb) = (free_port(), free_port());
    let node_a_old = node_a(&old, pa, pb);
    let a_old_cert = node_a_old.cert.clone();
    let mut a = Syncd::start(d, &node_a_old);
    let mut b = Syncd::start(d, &node_b(&new, pb, pa));
    let refused = wait_for(Duration::from_secs(10), || {
        a.log()
            .contains("connection refused: TLS authentication failed")
    })
    .await;
    assert!(refused.is_some(), "a's log:\n{}", a.log());
    // (A may hear B's heartbeats on the service network, not on the sync link.)
    let st = a.status().unwrap();
    assert_eq!(st["links"]["sync_link"], "down", "{st:#}");

    // Rotate A: the new CA and A's certificate from it, same file otherwise.
    let cfg = d.join("a.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let (cert, key) = new.leaf("director-a-new", "director-a.tandem");
    let rotated = text
        .replace(
            &old.ca_path().display().to_string(),
            &new.ca_path().display().to_string(),
        )
        .replace(
            &a_old_cert.0.display().to_string(),
            &cert.display().to_string(),
        )
        .replace(
            &a_old_cert.1.display().to_string(),
            &key.display().to_string(),
        );
    assert_ne!(rotated, text);
    std::fs::write(&cfg, &rotated).unwrap();
    hup(&a);
    let up = wait_for(Duration::from_secs(10), || {
        let st = a.status().unwrap_or_default();
        st["peer"]["node_id"] == 2 && st["links"]["sync_link"] == "up"
    })
    .await;
    assert!(up.is_some(), "a's log:\n{}\nb's log:\n{}", a.log(), b.log());
    assert!(a.log().contains("TLS reloaded"), "{}", a.log());
    assert!(a.alive() && b.alive(), "no restart");

    // A key that is not the certificate's: the reload is refused, the link stays up.
    let (_, wrong_key) = new.leaf("unrelated", "unrelated.tandem");
    std::fs::write(
        &cfg,
        rotated.replace(&key.display().to_string(), &wrong_key.display().to_string()),
    )
    .unwrap();
    hup(&a);
    let seen = wait_for(Duration::from_secs(5), || {
        a.log().contains("reload refused")
    })
    .await;
    assert!(seen.is_some(), "{}", a.log());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = a.status().unwrap();
    assert_eq!(st["links"]["sync_link"], "up", "{st:#}");
    assert!(a.alive());
    a.terminate();
    b.terminate();
}

/// Sends SIGHUP to `s` through kill(1).
fn hup(s: &Syncd) {
    let pid = s.child.as_ref().unwrap().id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// SIGHUP applies a new priority: lowered on the active, it makes a planned handover without
/// a restart (the sync-complete standby now outranks it, asks to preempt, the active yields),
/// and the pair never has two actives. A changed node id is refused whole; a changed section
/// that only a restart applies is named in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_lowers_the_priority_for_a_planned_handover() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (
        Pair {
            mut a,
            b,
            dp_a,
            dp_b,
            _servers,
        },
        _,
    ) = Pair::elected(d).await;
    let cfg = d.join("a.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    assert!(good.contains("priority = 200"), "{good}");

    // A node id change: refused, nothing changes.
    std::fs::write(&cfg, good.replace("id = 1\n", "id = 7\n")).unwrap();
    hup(&a);
    let refused = wait_for(Duration::from_secs(5), || {
        a.log().contains("reload refused")
    })
    .await;
    assert!(refused.is_some(), "{}", a.log());
    assert!(
        a.log().contains("node.id: 1 → 7 takes a restart"),
        "{}",
        a.log()
    );
    assert!(a.alive());
    assert_eq!(a.role(), "Active");

    // Priority 50 (B has 100), and a restart-only change beside it.
    let lower = good
        .replace("priority = 200", "priority = 50")
        .replace("reconnect_max_ms = 200", "reconnect_max_ms = 300");
    std::fs::write(&cfg, lower).unwrap();
    hup(&a);
    let handed = wait_for(Duration::from_secs(10), || {
        a.role() == "Standby"
            && b.role() == "Active"
            && dp_a.role() == pb::Role::Standby
            && dp_b.role() == pb::Role::Active
    })
    .await;
    assert!(
        handed.is_some(),
        "no handover: a {} b {}\n{}",
        a.role(),
        b.role(),
        a.log()
    );
    let log = a.log();
    assert!(log.contains("SIGHUP: role settings in effect"), "{log}");
    assert!(log.contains("sections=[\"sync_link\"]"), "{log}");
    assert!(log.contains("reason=Yielded"), "{log}");
    assert_eq!(a.status().unwrap()["priority"], 50);
    // A handover by preemption, not a takeover: B never called A dead.
    let bs = b.status().unwrap();
    assert_eq!(bs["role_metrics"]["takeovers"], 0, "{bs:#}");
    assert!(!b.log().contains("SplitBrain"), "{}", b.log());
    assert!(a.alive());
}
