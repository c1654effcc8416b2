//! Health verdicts (`Admin.SetServerHealth`, what tandem-syncd's checkers call) on the real
//! `tandem-dataplane` binary (EAL on a `net_null` vdev). Connections are installed on its
//! lcore through the sync daemon's `Local.ApplyConnections` (encoded with tandem-syncd's own
//! wire code), which also shows what the lcores serve: a record for a server that is not in
//! the workers' set is refused.
//! - DOWN + QUIESCE: listed down with its configured weight, its connections continue;
//! - the same verdict again: `changed = false`, generation unchanged;
//! - DOWN + REMOVE: its connections are flushed and new ones to it refused, still listed;
//! - UP: served again; refusals (unknown service or server, no state) change nothing;
//! - a reload keeps the verdict (with the new configured weight), deleting the server drops
//!   it; `/metrics` has `tandem_server_up` and the change counter.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{Director, scrape};
use tandem_core::conn::{ConnEventKind, ConnFlags, ConnRecord, ConnState};
use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};
use tandem_proto::admin::admin_client::AdminClient;
use tandem_proto::admin::{self as apb};
use tandem_proto::sync::local_client::LocalClient;
use tandem_proto::sync::{self as pb};
use tandem_syncd::repl::{Change, Item};
use tandem_syncd::wire;
use tonic::Code;
use tonic::transport::Channel;

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const RS1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
const RS2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 21);
const RS3: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 22);

fn config_text(prefix: &str, admin: &Path, sync: &Path, metrics: u16) -> String {
    let head = common::sync_config_head(prefix, "0", "net_null0", admin, sync, metrics);
    format!(
        r#"{head}[[service]]
protocol = "tcp"
address = "{VIP}"
port = 80
scheduler = "wrr"
[[service.server]]
address = "{RS1}"
port = 80
method = "nat"
weight = 1
[[service.server]]
address = "{RS2}"
port = 80
method = "nat"
weight = 2
[[service.server]]
address = "{RS3}"
port = 80
method = "nat"
weight = 1
"#
    )
}

fn sockets(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("admin.sock"), dir.join("sync.sock"))
}

fn record(i: u32, real: Ipv4Addr) -> ConnRecord {
    ConnRecord {
        proto: Protocol::Tcp,
        client: Endpoint::new(Ipv4Addr::from(0x0a09_0000 + i), 40_000 + (i % 1000) as u16),
        vip: Endpoint::new(VIP, 80),
        real: Endpoint::new(real, 80),
        method: ForwardMethod::Nat,
        dest: DestId(0),
        service: ServiceId(0),
        state: ConnState::Established,
        flags: ConnFlags::EMPTY,
        timeout_ms: 900_000,
        remaining_ms: 600_000,
    }
}

/// Installs `records` (live changes, no snapshot: nothing is swept); (applied, refused).
async fn install(local: &mut LocalClient<Channel>, records: &[ConnRecord]) -> (u64, u64) {
    let entries = records
        .iter()
        .map(|r| {
            wire::item_to(&Item::Change(Change::Conn {
                kind: ConnEventKind::Refreshed,
                record: *r,
            }))
        })
        .collect();
    let sum = local
        .apply_connections(tokio_stream::iter([pb::ApplyRequest { entries }]))
        .await
        .expect("apply")
        .into_inner();
    (sum.applied, sum.refused)
}

fn service_key() -> apb::ServiceKey {
    apb::ServiceKey {
        protocol: apb::Protocol::Tcp.into(),
        address: VIP.to_string(),
        port: 80,
    }
}

fn server_key(a: Ipv4Addr) -> apb::ServerKey {
    apb::ServerKey {
        address: a.to_string(),
        port: 80,
    }
}

fn verdict(
    server: Ipv4Addr,
    state: apb::HealthState,
    action: apb::HealthAction,
    reason: &str,
) -> apb::SetServerHealthRequest {
    apb::SetServerHealthRequest {
        service: Some(service_key()),
        server: Some(server_key(server)),
        state: state.into(),
        action: action.into(),
        checker: "tcp".into(),
        reason: reason.into(),
    }
}

async fn set(c: &mut AdminClient<Channel>, req: apb::SetServerHealthRequest) -> (String, bool) {
    let r = c
        .set_server_health(req)
        .await
        .expect("verdict accepted")
        .into_inner();
    (r.message, r.changed)
}

/// One listed server: (address, configured weight, health (state, action, reason, changes)).
type Listed = (String, u32, Option<(i32, i32, String, u64)>);

/// The generation and the servers of the one service, and each server's `since_unix_ms`.
async fn listing(c: &mut AdminClient<Channel>) -> (u64, Vec<Listed>, Vec<u64>) {
    let r = c
        .list_services(apb::ListServicesRequest { key: None })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(r.services.len(), 1);
    let servers = &r.services[0].servers;
    let listed = servers
        .iter()
        .map(|s| {
            let cfg = s.config.clone().unwrap_or_default();
            (
                cfg.key.unwrap_or_default().address,
                cfg.weight,
                s.health
                    .as_ref()
                    .map(|h| (h.state, h.action, h.reason.clone(), h.changes)),
            )
        })
        .collect();
    let since = servers
        .iter()
        .map(|s| s.health.as_ref().map_or(0, |h| h.since_unix_ms))
        .collect();
    (r.generation, listed, since)
}

/// How many connections the lcores hold to `server`.
async fn conns_to(c: &mut AdminClient<Channel>, server: Ipv4Addr) -> usize {
    c.list_connections(apb::ListConnectionsRequest {
        server_address: Some(server.to_string()),
        ..Default::default()
    })
    .await
    .expect("connections")
    .into_inner()
    .connections
    .len()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

const UP: i32 = apb::HealthState::Up as i32;
const DOWN: i32 = apb::HealthState::Down as i32;
const QUIESCE: i32 = apb::HealthAction::Quiesce as i32;
const REMOVE: i32 = apb::HealthAction::Remove as i32;

fn unchecked(a: Ipv4Addr, w: u32) -> Listed {
    (a.to_string(), w, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_verdicts_on_the_real_dataplane() {
    let mut d = Director::start("health", "verdicts", |dir, prefix, metrics| {
        let (admin, sync) = sockets(dir);
        config_text(prefix, &admin, &sync, metrics)
    });
    let (admin_sock, sync_sock) = sockets(&d.dir);
    let mut c = AdminClient::new(d.channel(&admin_sock).await);
    let mut local = LocalClient::new(d.channel(&sync_sock).await);
    let (g, list, _) = listing(&mut c).await;
    assert_eq!(
        (g, list),
        (
            1,
            vec![unchecked(RS1, 1), unchecked(RS2, 2), unchecked(RS3, 1)]
        )
    );

    // Ten connections to each of RS1 and RS2.
    let records: Vec<ConnRecord> = (0..20)
        .map(|i| record(i, if i % 2 == 0 { RS1 } else { RS2 }))
        .collect();
    assert_eq!(install(&mut local, &records).await, (20, 0));
    assert_eq!(
        (conns_to(&mut c, RS1).await, conns_to(&mut c, RS2).await),
        (10, 10)
    );

    // ---- DOWN + QUIESCE: listed down with its configured weight, connections continue ---
    let before = unix_ms();
    let r = set(
        &mut c,
        verdict(
            RS2,
            apb::HealthState::Down,
            apb::HealthAction::Quiesce,
            "connect: connection refused",
        ),
    )
    .await;
    let after = unix_ms();
    assert_eq!(
        r,
        (
            "TCP 203.0.113.10:80 -> 203.0.113.21:80 down (quiesced): connect: connection refused"
                .to_string(),
            true
        )
    );
    let (g, list, since) = listing(&mut c).await;
    let rs2_quiesced = (
        RS2.to_string(),
        2,
        Some((DOWN, QUIESCE, "connect: connection refused".to_string(), 1)),
    );
    assert_eq!(
        (g, list),
        (
            2,
            vec![unchecked(RS1, 1), rs2_quiesced.clone(), unchecked(RS3, 1)]
        )
    );
    assert!(
        (before..=after).contains(&since[1]),
        "{before} <= {} <= {after}",
        since[1]
    );
    assert_eq!(
        conns_to(&mut c, RS2).await,
        10,
        "quiesced: connections continue"
    );
    // The lcores still know the server (a synced connection to it is installed).
    assert_eq!(install(&mut local, &[record(100, RS2)]).await, (1, 0));
    assert_eq!(conns_to(&mut c, RS2).await, 11);
    let text = scrape(d.metrics).await;
    let labels =
        r#"{protocol="tcp",service="203.0.113.10:80",server="203.0.113.21:80",method="nat"}"#;
    for line in [
        format!("tandem_server_up{labels} 0"),
        format!("tandem_server_health_changes_total{labels} 1"),
        format!("tandem_server_weight{labels} 2"),
        r#"tandem_server_up{protocol="tcp",service="203.0.113.10:80",server="203.0.113.20:80",method="nat"} 1"#.to_string(),
        "tandem_config_generation 2".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }

    // ---- the same verdict again: nothing changes ----------------------------------------
    let r = set(
        &mut c,
        verdict(
            RS2,
            apb::HealthState::Down,
            apb::HealthAction::Unspecified,
            "connect: connection refused",
        ),
    )
    .await;
    assert_eq!(
        r,
        (
            "TCP 203.0.113.10:80 -> 203.0.113.21:80 still down (quiesced): connect: connection refused"
                .to_string(),
            false
        )
    );
    let (g, list, since2) = listing(&mut c).await;
    assert_eq!(g, 2, "no new generation");
    assert_eq!(list[1], rs2_quiesced);
    assert_eq!(since2[1], since[1], "since is the last state change");

    // ---- DOWN + REMOVE: connections flushed, new ones refused, still listed -------------
    let r = set(
        &mut c,
        verdict(
            RS2,
            apb::HealthState::Down,
            apb::HealthAction::Remove,
            "3 failures",
        ),
    )
    .await;
    assert_eq!(
        r,
        (
            "TCP 203.0.113.10:80 -> 203.0.113.21:80 down (removed, connections flushed): 3 failures"
                .to_string(),
            true
        )
    );
    assert_eq!(
        conns_to(&mut c, RS2).await,
        0,
        "removed: connections flushed"
    );
    assert_eq!(conns_to(&mut c, RS1).await, 10, "the others' stay");
    assert_eq!(
        install(&mut local, &[record(101, RS2), record(102, RS1)]).await,
        (1, 1),
        "the lcores no longer serve RS2"
    );
    let (g, list, _) = listing(&mut c).await;
    assert_eq!(
        (g, list),
        (
            3,
            vec![
                unchecked(RS1, 1),
                (
                    RS2.to_string(),
                    2,
                    Some((DOWN, REMOVE, "3 failures".to_string(), 1))
                ),
                unchecked(RS3, 1)
            ]
        )
    );
    let st = c
        .get_status(apb::GetStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!((st.services, st.servers), (1, 3), "configured servers");

    // ---- UP: served again -----------------------------------------------------------------
    let r = set(
        &mut c,
        verdict(RS2, apb::HealthState::Up, apb::HealthAction::Remove, "ok"),
    )
    .await;
    assert_eq!(
        r,
        (
            "TCP 203.0.113.10:80 -> 203.0.113.21:80 up: ok".to_string(),
            true
        )
    );
    assert_eq!(install(&mut local, &[record(103, RS2)]).await, (1, 0));
    assert_eq!(conns_to(&mut c, RS2).await, 1);
    let (g, list, _) = listing(&mut c).await;
    assert_eq!(g, 4);
    assert_eq!(
        list[1],
        (RS2.to_string(), 2, Some((UP, REMOVE, "ok".to_string(), 2)))
    );
    let text = scrape(d.metrics).await;
    for line in [
        format!("tandem_server_up{labels} 1"),
        format!("tandem_server_health_changes_total{labels} 2"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }

    // ---- refusals: a clear status, nothing changed ----------------------------------------
    let before = listing(&mut c).await;
    let e = c
        .set_server_health(verdict(
            Ipv4Addr::new(203, 0, 113, 99),
            apb::HealthState::Down,
            apb::HealthAction::Remove,
            "",
        ))
        .await
        .expect_err("unknown server");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        e.message(),
        "no server 203.0.113.99:80 in service TCP 203.0.113.10:80"
    );
    let mut other = verdict(RS1, apb::HealthState::Down, apb::HealthAction::Remove, "");
    other.service = Some(apb::ServiceKey {
        port: 81,
        ..service_key()
    });
    let e = c
        .set_server_health(other)
        .await
        .expect_err("unknown service");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "no service TCP 203.0.113.10:81 (add it first)");
    let e = c
        .set_server_health(verdict(
            RS1,
            apb::HealthState::Unspecified,
            apb::HealthAction::Remove,
            "",
        ))
        .await
        .expect_err("no state");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "state: HEALTH_STATE_UNSPECIFIED is not a verdict (UP or DOWN)"
    );
    let mut no_server = verdict(RS1, apb::HealthState::Down, apb::HealthAction::Remove, "");
    no_server.server = None;
    let e = c
        .set_server_health(no_server)
        .await
        .expect_err("no server key");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(listing(&mut c).await, before);
    assert_eq!(conns_to(&mut c, RS1).await, 11);

    // ---- a reload keeps the verdict, with the new configured weight -----------------------
    let r = set(
        &mut c,
        verdict(
            RS1,
            apb::HealthState::Down,
            apb::HealthAction::Quiesce,
            "timeout",
        ),
    )
    .await;
    assert!(r.1);
    let text = std::fs::read_to_string(&d.config).expect("config");
    let rs1 = format!("address = \"{RS1}\"\nport = 80\nmethod = \"nat\"\nweight = ");
    assert!(text.contains(&format!("{rs1}1\n")), "{text}");
    std::fs::write(
        &d.config,
        text.replace(&format!("{rs1}1\n"), &format!("{rs1}3\n")),
    )
    .expect("write config");
    let r = c
        .reload(apb::ReloadRequest { dry_run: false })
        .await
        .expect("reload")
        .into_inner();
    assert_eq!(
        (r.generation, r.changes),
        (
            6,
            vec!["server 203.0.113.20:80 of TCP 203.0.113.10:80: weight 1 -> 3".to_string()]
        )
    );
    let (_, list, _) = listing(&mut c).await;
    assert_eq!(
        list[0],
        (
            RS1.to_string(),
            3,
            Some((DOWN, QUIESCE, "timeout".to_string(), 1))
        )
    );
    assert_eq!(
        conns_to(&mut c, RS1).await,
        11,
        "still quiesced, not removed"
    );

    // ---- deleting the server drops its verdict --------------------------------------------
    c.delete_server(apb::DeleteServerRequest {
        service: Some(service_key()),
        server: Some(server_key(RS1)),
        flush: false,
    })
    .await
    .expect("delete");
    c.add_server(apb::AddServerRequest {
        service: Some(service_key()),
        server: Some(apb::ServerConfig {
            key: Some(server_key(RS1)),
            method: apb::ForwardMethod::Nat.into(),
            weight: 3,
        }),
    })
    .await
    .expect("add");
    let (g, list, _) = listing(&mut c).await;
    assert_eq!(g, 8);
    assert_eq!(list[2], unchecked(RS1, 3));

    drop((c, local));
    let (code, err) = d.stop();
    assert_eq!(code, Some(0), "{err}");
}
