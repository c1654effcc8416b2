//! The health task end to end: real checks of real TCP servers on loopback, the dataplane's
//! admin API served by this test on a Unix socket (`ListServices` from a list the test edits,
//! `SetServerHealth` recorded), and the role gate (only an active director reports).
//! Every wait is bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tandem_proto::admin as apb;
use tandem_proto::admin::admin_server::{Admin, AdminServer};
use tandem_syncd::health::check::Probe;
use tandem_syncd::health::{self, GrpcAdmin, OnFailure, Plan, Proto, ServiceSel, Settings, Spec};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

#[derive(Default)]
struct AdminState {
    servers: Vec<SocketAddrV4>,
    health: Vec<(SocketAddrV4, apb::ServerHealth)>,
    calls: Vec<apb::SetServerHealthRequest>,
    unimplemented: bool,
}

#[derive(Clone, Default)]
struct TestAdmin(Arc<Mutex<AdminState>>);

fn no<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in this test"))
}

#[tonic::async_trait]
impl Admin for TestAdmin {
    async fn add_service(
        &self,
        _: Request<apb::AddServiceRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn edit_service(
        &self,
        _: Request<apb::EditServiceRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn delete_service(
        &self,
        _: Request<apb::DeleteServiceRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn add_server(
        &self,
        _: Request<apb::AddServerRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn edit_server(
        &self,
        _: Request<apb::EditServerRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn delete_server(
        &self,
        _: Request<apb::DeleteServerRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn replace_services(
        &self,
        _: Request<apb::ReplaceServicesRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn reload(
        &self,
        _: Request<apb::ReloadRequest>,
    ) -> Result<Response<apb::ChangeResponse>, Status> {
        no()
    }
    async fn list_connections(
        &self,
        _: Request<apb::ListConnectionsRequest>,
    ) -> Result<Response<apb::ListConnectionsResponse>, Status> {
        no()
    }
    async fn zero_counters(
        &self,
        _: Request<apb::ZeroCountersRequest>,
    ) -> Result<Response<apb::ZeroCountersResponse>, Status> {
        no()
    }
    async fn get_timeouts(
        &self,
        _: Request<apb::GetTimeoutsRequest>,
    ) -> Result<Response<apb::Timeouts>, Status> {
        no()
    }
    async fn set_timeouts(
        &self,
        _: Request<apb::Timeouts>,
    ) -> Result<Response<apb::Timeouts>, Status> {
        no()
    }
    async fn get_status(
        &self,
        _: Request<apb::GetStatusRequest>,
    ) -> Result<Response<apb::Status>, Status> {
        no()
    }

    async fn list_services(
        &self,
        _: Request<apb::ListServicesRequest>,
    ) -> Result<Response<apb::ListServicesResponse>, Status> {
        let st = self.0.lock().unwrap();
        let servers = st
            .servers
            .iter()
            .map(|s| apb::ServerStatus {
                config: Some(apb::ServerConfig {
                    key: Some(apb::ServerKey {
                        address: s.ip().to_string(),
                        port: s.port().into(),
                    }),
                    method: apb::ForwardMethod::Nat as i32,
                    weight: 1,
                }),
                health: st.health.iter().find(|h| h.0 == *s).map(|h| h.1.clone()),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(apb::ListServicesResponse {
            services: vec![apb::ServiceStatus {
                config: Some(apb::ServiceConfig {
                    key: Some(apb::ServiceKey {
                        protocol: apb::Protocol::Tcp as i32,
                        address: VIP.to_string(),
                        port: 80,
                    }),
                    ..Default::default()
                }),
                servers,
                ..Default::default()
            }],
            ..Default::default()
        }))
    }

    async fn set_server_health(
        &self,
        req: Request<apb::SetServerHealthRequest>,
    ) -> Result<Response<apb::SetServerHealthResponse>, Status> {
        let req = req.into_inner();
        let mut st = self.0.lock().unwrap();
        st.calls.push(req.clone());
        if st.unimplemented {
            return Err(Status::unimplemented(
                "SetServerHealth is not implemented yet",
            ));
        }
        let k = req.server.clone().unwrap();
        let addr = SocketAddrV4::new(k.address.parse().unwrap(), u16::try_from(k.port).unwrap());
        let h = apb::ServerHealth {
            state: req.state,
            action: req.action,
            checker: req.checker.clone(),
            reason: req.reason.clone(),
            since_unix_ms: 1,
        };
        let changed = match st.health.iter_mut().find(|x| x.0 == addr) {
            Some(x) => {
                let c = x.1.state != h.state || x.1.action != h.action;
                x.1 = h;
                c
            }
            None => {
                st.health.push((addr, h));
                true
            }
        };
        Ok(Response::new(apb::SetServerHealthResponse {
            message: format!("{addr} {}", req.state),
            changed,
        }))
    }
}

struct Harness {
    admin: TestAdmin,
    active: watch::Sender<bool>,
    status: watch::Receiver<serde_json::Value>,
    stop: watch::Sender<bool>,
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
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("admin.sock");
    let admin = TestAdmin::default();
    {
        let mut st = admin.0.lock().unwrap();
        st.servers = servers;
        st.unimplemented = unimplemented;
    }
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let svc = AdminServer::new(admin.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await;
    });
    let (active_tx, active_rx) = watch::channel(active);
    let (status_tx, status_rx) = watch::channel(serde_json::Value::Null);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(health::run(
        Settings {
            plans: vec![plan(2, 2)],
            poll_interval: Duration::from_millis(200),
            max_in_flight: 16,
        },
        GrpcAdmin::new(sock).unwrap(),
        active_rx,
        status_tx,
        stop_rx,
    ));
    Harness {
        admin,
        active: active_tx,
        status: status_rx,
        stop: stop_tx,
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
        self.admin
            .0
            .lock()
            .unwrap()
            .calls
            .iter()
            .map(|c| {
                let s = c.server.clone().unwrap();
                (
                    format!("{}:{}", s.address, s.port),
                    c.state,
                    c.action,
                    c.reason.clone(),
                )
            })
            .collect()
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
    let n = h.calls().len();
    assert!(n >= 1);
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
