//! The health task end to end: real checks of real TCP servers on loopback, the dataplane's
//! admin API served by this test on a Unix socket (`ListServices` from a list the test edits,
//! `SetServerHealth` recorded), and the role gate (only an active director reports).
//! Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use tandem_proto::admin as apb;
use tandem_syncd::health::check::Probe;
use tandem_syncd::health::{self, GrpcAdmin, OnFailure, Plan, Proto, ServiceSel, Settings, Spec};
use tokio::net::TcpListener;
use tokio::sync::watch;

mod adminref;
use adminref::TestAdmin;

const VIP: Ipv4Addr = adminref::VIP;

struct Harness {
    admin: TestAdmin,
    active: watch::Sender<bool>,
    status: watch::Receiver<serde_json::Value>,
    stop: watch::Sender<bool>,
    reload: watch::Sender<Vec<Plan>>,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn plan(rise: u32, fall: u32) -> Plan {
    Plan {
        service: ServiceSel {
            proto: Proto::Tcp,
            vip: VIP,
            port: 80,
        },
        servers: None,
        base: Spec {
            probe: Probe::Tcp,
            connect_port: None,
            bind: None,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(100),
            rise,
            fall,
            on_failure: OnFailure::Quiesce,
        },
        overrides: Vec::new(),
    }
}

async fn start(servers: Vec<SocketAddrV4>, unimplemented: bool, active: bool) -> Harness {
    start_with(servers, vec![plan(2, 2)], unimplemented, active).await
}

async fn start_with(
    servers: Vec<SocketAddrV4>,
    plans: Vec<Plan>,
    unimplemented: bool,
    active: bool,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let admin = TestAdmin::serve(&sock, servers);
    admin.0.lock().unwrap().unimplemented = unimplemented;
    let (active_tx, active_rx) = watch::channel(active);
    let (status_tx, status_rx) = watch::channel(serde_json::Value::Null);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (reload_tx, reload_rx) = watch::channel(Vec::new());
    tokio::spawn(health::run(
        Settings {
            plans,
            poll_interval: Duration::from_millis(200),
            max_in_flight: 16,
        },
        GrpcAdmin::new(sock).unwrap(),
        active_rx,
        status_tx,
        stop_rx,
        reload_rx,
    ));
    Harness {
        admin,
        active: active_tx,
        status: status_rx,
        stop: stop_tx,
        reload: reload_tx,
        _dir: dir,
    }
}

/// A TCP server on loopback that accepts until its task is aborted.
async fn listen(port: u16) -> (SocketAddrV4, tokio::task::JoinHandle<()>) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .unwrap();
    let SocketAddr::V4(a) = l.local_addr().unwrap() else {
        panic!("v4")
    };
    let h = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            drop(s);
        }
    });
    (a, h)
}

async fn closed() -> SocketAddrV4 {
    let (a, h) = listen(0).await;
    h.abort();
    let _ = h.await;
    a
}

impl Harness {
    fn target_state(&self, server: SocketAddrV4) -> Option<String> {
        let st = self.status.borrow();
        st["targets"].as_array()?.iter().find_map(|t| {
            (t["server"] == server.to_string())
                .then(|| t["state"].as_str().unwrap_or("").to_string())
        })
    }

    fn targets(&self) -> usize {
        self.status.borrow()["targets"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Waits up to `within` for `cond`; returns how long it took.
    async fn until(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&Harness) -> bool,
    ) -> Duration {
        let start = Instant::now();
        while !cond(self) {
            assert!(
                start.elapsed() < within,
                "{what} not within {within:?}: {}",
                *self.status.borrow()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed()
    }

    fn calls(&self) -> Vec<(String, i32, i32, String)> {
        self.admin.calls()
    }
}

const UP: i32 = apb::HealthState::Up as i32;
const DOWN: i32 = apb::HealthState::Down as i32;
const QUIESCE: i32 = apb::HealthAction::Quiesce as i32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_only_records_and_active_reports_transitions_and_takeover() {
    let (up, up_task) = listen(0).await;
    let down = closed().await;
    let h = start(vec![up, down], false, false).await;
    let s = Duration::from_secs(5);
    h.until(s, "verdicts", |h| {
        h.target_state(up).as_deref() == Some("up")
            && h.target_state(down).as_deref() == Some("down")
    })
    .await;
    // A standby: nothing reported, however long.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.calls(), vec![], "a standby must not touch its dataplane");
    assert_eq!(h.status.borrow()["reporting"], false);

    // Takeover: every known verdict at once, not at the next transition.
    let t0 = Instant::now();
    h.active.send_replace(true);
    h.until(s, "takeover reports", |h| h.calls().len() >= 2)
        .await;
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    let mut calls = h.calls();
    calls.sort();
    let mut want = vec![
        (up.to_string(), UP, QUIESCE, "connected (".to_string()),
        (
            down.to_string(),
            DOWN,
            QUIESCE,
            "connect: connection refused (".to_string(),
        ),
    ];
    want.sort();
    for (c, w) in calls.iter().zip(&want) {
        assert_eq!((&c.0, c.1, c.2), (&w.0, w.1, w.2), "{calls:?}");
        assert!(c.3.starts_with(&w.3), "{c:?}");
    }
    // Once the listing shows them, nothing more is sent.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(h.calls().len(), 2, "{:?}", h.calls());

    // The down server comes back: UP after `rise` (2) successes.
    let (_, back_task) = listen(down.port()).await;
    let took = h
        .until(s, "server back up", |h| {
            h.calls()
                .iter()
                .any(|c| c.0 == down.to_string() && c.1 == UP)
        })
        .await;
    // Two checks 100 ms ± 10 % apart: never sooner than 90 ms.
    assert!(
        took >= Duration::from_millis(85),
        "rise 2 at 100 ms: {took:?}"
    );
    let c = h
        .calls()
        .into_iter()
        .find(|c| c.0 == down.to_string() && c.1 == UP)
        .unwrap();
    assert_eq!(c.3, "connected (2 successes)");

    // The up server fails: DOWN after `fall` (2) failures, with the reason.
    up_task.abort();
    h.until(s, "server down", |h| {
        h.calls()
            .iter()
            .any(|c| c.0 == up.to_string() && c.1 == DOWN)
    })
    .await;
    let c = h
        .calls()
        .into_iter()
        .find(|c| c.0 == up.to_string() && c.1 == DOWN)
        .unwrap();
    assert_eq!(c.3, "connect: connection refused (2 failures)");
    assert_eq!(h.calls().len(), 4, "{:?}", h.calls());

    // Standby again: the next transition is recorded, not reported.
    h.active.send_replace(false);
    tokio::time::sleep(Duration::from_millis(50)).await;
    back_task.abort();
    h.until(s, "down again", |h| {
        h.target_state(down).as_deref() == Some("down")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.calls().len(), 4, "{:?}", h.calls());
    let st = h.status.borrow().clone();
    assert_eq!(st["went_down"], 3, "{st}");
    assert_eq!(st["went_up"], 2, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_follow_the_listing() {
    let (a, _ta) = listen(0).await;
    let (b, _tb) = listen(0).await;
    let h = start(vec![a], false, true).await;
    let s = Duration::from_secs(5);
    h.until(s, "one target", |h| {
        h.target_state(a).as_deref() == Some("up")
    })
    .await;
    assert_eq!(h.targets(), 1);
    // Added with tandemctl: checked within a poll.
    h.admin.0.lock().unwrap().servers.push(b);
    h.until(s, "b checked", |h| {
        h.target_state(b).as_deref() == Some("up")
    })
    .await;
    // Deleted: dropped.
    h.admin.0.lock().unwrap().servers.retain(|x| *x != a);
    h.until(s, "a dropped", |h| {
        h.targets() == 1 && h.target_state(a).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataplane_without_set_server_health_is_retried_at_each_poll() {
    let down = closed().await;
    let h = start(vec![down], true, true).await;
    let s = Duration::from_secs(5);
    h.until(s, "down", |h| {
        h.target_state(down).as_deref() == Some("down")
    })
    .await;
    h.until(s, "first report", |h| !h.calls().is_empty()).await;
    let n = h.calls().len();
    // Polls every 200 ms: retried, never given up, the task keeps running.
    h.until(s, "retries", |h| h.calls().len() >= n + 3).await;
    assert!(h.calls().iter().all(|c| c.1 == DOWN));
    h.until(s, "failures counted", |h| {
        h.status.borrow()["report_failures"].as_u64() >= Some(3)
    })
    .await;
    // The dataplane learns SetServerHealth: the next poll's retry lands, then it stops.
    h.admin.0.lock().unwrap().unimplemented = false;
    h.until(s, "report accepted", |h| {
        h.status.borrow()["reports"].as_u64() >= Some(1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let settled = h.calls().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        h.calls().len(),
        settled,
        "no more reports once the listing shows the verdict"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_checks_and_lifts_what_they_held_down() {
    let down = closed().await;
    let h = start_with(vec![down], Vec::new(), false, true).await;
    let s = Duration::from_secs(5);
    // No checks: nothing checked, nothing reported.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.targets(), 0);
    assert_eq!(h.calls(), vec![]);

    // A reload adds a check: the server is checked and reported DOWN.
    h.reload.send_replace(vec![plan(2, 2)]);
    h.until(s, "down reported", |h| {
        h.calls()
            .iter()
            .any(|c| c.0 == down.to_string() && c.1 == DOWN)
    })
    .await;
    assert_eq!(h.target_state(down).as_deref(), Some("down"));

    // A reload removes it: the target goes and its DOWN verdict is lifted (nothing else
    // would ever bring the server back).
    h.reload.send_replace(Vec::new());
    h.until(s, "verdict lifted", |h| {
        h.calls()
            .iter()
            .any(|c| c.0 == down.to_string() && c.1 == UP)
    })
    .await;
    let lifted = h.calls().into_iter().find(|c| c.1 == UP).unwrap();
    assert_eq!(lifted.3, "no check covers this server any more");
    h.until(s, "no target", |h| h.targets() == 0).await;
    // Once the dataplane shows it UP, nothing more is sent.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let settled = h.calls().len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(h.calls().len(), settled, "{:?}", h.calls());
    assert_eq!(
        h.calls().iter().filter(|c| c.1 == UP).count(),
        1,
        "{:?}",
        h.calls()
    );
}
