//! The sync daemon's `Local` service of the real `tandem-dataplane` binary (EAL with two
//! lcores on a `net_null` vdev), driven over its Unix socket by a gRPC client, every message
//! decoded with `tandem-syncd`'s own wire conversions (`wire::local_from`, `wire::item_to`),
//! so the two sides cannot drift apart:
//! - roles: standby at start, `SetRole` changes what `GetStatus` shows, the end of syncd's
//!   heartbeat stream stands an active director down at once;
//! - apply: records installed on the lcore that owns the client (both lcores get some),
//!   unknown real servers and services refused and counted, mark and sweep on a second
//!   snapshot;
//! - watch: snapshot begin, chunks of at most the asked size covering exactly the table,
//!   snapshot end, then the lcores' events (flushes by the admin API) with consecutive
//!   per-lcore sequence numbers; a new watch supersedes the old one;
//! - status: without a report `GetStatus.sync` is absent and `/metrics` says
//!   `tandem_sync_reported 0`; a `ReportStatus` shows in both, with its age, and syncd's
//!   last report (role unspecified) shows it stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Director, scrape};
use tandem_core::conn::{ConnEventKind, ConnFlags, ConnRecord, ConnState, DeleteReason};
use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};
use tandem_proto::admin::admin_client::AdminClient;
use tandem_proto::admin::{self as apb};
use tandem_proto::sync::local_client::LocalClient;
use tandem_proto::sync::{self as pb};
use tandem_syncd::repl::{Change, Item};
use tandem_syncd::wire::{self, LcoreItem, LocalMsg};
use tonic::transport::Channel;

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const RS1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 20);
const RS2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 21);

fn config_text(prefix: &str, admin: &Path, sync: &Path, metrics: u16) -> String {
    format!(
        r#"[eal]
args = ["-l", "0,1", "--no-pci", "--no-huge", "-m", "256", "--file-prefix", "{prefix}",
        "--vdev", "net_null0", "--log-level", "lib.eal:warning"]
[dataplane]
idle_sleep_max_us = 200
[control]
socket = "{admin}"
metrics_listen = "127.0.0.1:{metrics}"
[sync]
socket = "{sync}"
peer_address = "203.0.113.12"
[[port]]
name = "outside"
device = "net_null0"
address = "203.0.113.11/24"
[[vip]]
address = "{VIP}"
port = "outside"
[[service]]
protocol = "tcp"
address = "{VIP}"
port = 80
scheduler = "rr"
[[service.server]]
address = "{RS1}"
port = 80
method = "nat"
[[service.server]]
address = "{RS2}"
port = 80
method = "nat"
"#,
        admin = admin.display(),
        sync = sync.display()
    )
}

/// The admin socket and the sync socket (whose directory the director creates).
fn sockets(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("admin.sock"), dir.join("run").join("sync.sock"))
}

fn record(i: u32, real: Ipv4Addr, vip: Ipv4Addr) -> ConnRecord {
    ConnRecord {
        proto: Protocol::Tcp,
        // Distinct client addresses, so the owner hash spreads them over both lcores.
        client: Endpoint::new(Ipv4Addr::from(0x0a09_0000 + i), 40_000 + (i % 1000) as u16),
        vip: Endpoint::new(vip, 80),
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

fn upsert(r: &ConnRecord) -> pb::Entry {
    wire::item_to(&Item::Snapshot(Change::Conn {
        kind: ConnEventKind::Refreshed,
        record: *r,
    }))
}

fn snapshot(records: &[ConnRecord], extra: &[ConnRecord]) -> Vec<pb::ApplyRequest> {
    let mut entries = vec![wire::item_to(&Item::SnapshotBegin { id: 1 })];
    entries.extend(records.iter().chain(extra).map(upsert));
    entries.push(wire::item_to(&Item::SnapshotEnd { id: 1 }));
    // Several requests, as syncd batches them.
    entries
        .chunks(97)
        .map(|c| pb::ApplyRequest {
            entries: c.to_vec(),
        })
        .collect()
}

async fn status(c: &mut AdminClient<Channel>) -> apb::Status {
    c.get_status(apb::GetStatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

/// The status once it counts `n` connections: the lcores publish their figures every
/// millisecond, so right after an apply the count may lag (more so on a loaded machine).
async fn status_with(c: &mut AdminClient<Channel>, n: u64) -> apb::Status {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = status(c).await;
        if st.connections == n || std::time::Instant::now() > deadline {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The key of a record for comparisons.
fn key(r: &ConnRecord) -> (Endpoint, Endpoint, Endpoint, u8) {
    (r.client, r.vip, r.real, r.state as u8)
}

/// Reads one watch until its snapshot ends: the records (checked: begin first, chunks of at
/// most `chunk`), and any events that arrived meanwhile.
async fn read_snapshot(
    s: &mut tonic::Streaming<pb::LocalEvents>,
    chunk: usize,
) -> (u64, Vec<ConnRecord>) {
    let mut id = None;
    let mut records = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("watch message within 10 s")
            .expect("watch stream ok")
            .expect("watch stream open");
        match wire::local_from(&m).expect("syncd decodes what the dataplane sends") {
            LocalMsg::SnapshotBegin(i) => {
                assert!(id.is_none(), "one snapshot begin");
                id = Some(i);
            }
            LocalMsg::SnapshotChunk(c) => {
                assert!(id.is_some(), "chunks after the begin");
                assert!(!c.is_empty() && c.len() <= chunk, "chunk of {}", c.len());
                for ch in c {
                    match ch {
                        Change::Conn { record, .. } => records.push(record),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            LocalMsg::SnapshotEnd(i) => {
                assert_eq!(Some(i), id, "end of the same snapshot");
                return (i, records);
            }
            LocalMsg::Events(e) => assert!(
                e.iter().all(|(_, i)| matches!(i, LcoreItem::Head(_))),
                "only head marks during this snapshot: {e:?}"
            ),
            LocalMsg::Locality(l) => panic!("no locality expected: {l:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_service_of_the_real_dataplane() {
    let mut d = Director::start("sync", "local", |dir, prefix, metrics| {
        let (admin, sync) = sockets(dir);
        config_text(prefix, &admin, &sync, metrics)
    });
    let (admin_sock, sync_sock) = sockets(&d.dir);
    let mut admin = AdminClient::new(d.channel(&admin_sock).await);
    let mut local = LocalClient::new(d.channel(&sync_sock).await);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&sync_sock).expect("socket").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the sync socket is for root only");

    // ---- roles -------------------------------------------------------------------------
    assert_eq!(
        status(&mut admin).await.role,
        "standby",
        "with [sync]: standby until told"
    );
    for (role, shown) in [
        (pb::Role::Active, "active"),
        (pb::Role::Standby, "standby"),
        (pb::Role::Syncing, "standby"),
        (pb::Role::Active, "active"),
    ] {
        let r = local
            .set_role(pb::SetRoleRequest { role: role as i32 })
            .await
            .expect("set role")
            .into_inner();
        assert_eq!(r.role, role as i32);
        assert_eq!(status(&mut admin).await.role, shown);
    }
    let bad = local
        .set_role(pb::SetRoleRequest { role: 0 })
        .await
        .expect_err("unspecified role refused");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    // syncd's heartbeat stream ends: the director stands down at once.
    {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let out = local
            .exchange_heartbeats(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("heartbeats");
        tx.send(pb::HeartbeatMessage {
            node_id: 1,
            priority: 100,
            incarnation: 1,
            seq: 1,
            role: pb::Role::Active as i32,
            ..Default::default()
        })
        .await
        .expect("send heartbeat");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(status(&mut admin).await.role, "active");
        drop(tx);
        drop(out);
        let deadline = Instant::now() + Duration::from_secs(2);
        while status(&mut admin).await.role != "standby" {
            assert!(
                Instant::now() < deadline,
                "still active 2 s after syncd went away"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ---- apply -------------------------------------------------------------------------
    let records: Vec<ConnRecord> = (0..300)
        .map(|i| record(i, if i % 2 == 0 { RS1 } else { RS2 }, VIP))
        .collect();
    let unknown = [
        record(1000, Ipv4Addr::new(203, 0, 113, 99), VIP),
        record(1001, RS1, Ipv4Addr::new(203, 0, 113, 98)),
    ];
    let sum = local
        .apply_connections(tokio_stream::iter(snapshot(&records, &unknown)))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!((sum.applied, sum.refused, sum.swept), (300, 2, 0));
    let st = status_with(&mut admin, 300).await;
    assert_eq!(st.connections, 300);
    assert!(
        st.lcores.iter().all(|l| l.connections > 0),
        "each lcore owns some clients: {:?}",
        st.lcores.iter().map(|l| l.connections).collect::<Vec<_>>()
    );

    // ---- watch: the snapshot covers exactly the table -----------------------------------
    let chunk = 64;
    let mut w1 = local
        .watch_connections(pb::WatchConnectionsRequest { chunk })
        .await
        .expect("watch")
        .into_inner();
    let (id1, seen) = read_snapshot(&mut w1, chunk as usize).await;
    let want: BTreeSet<_> = records.iter().map(key).collect();
    let got: BTreeSet<_> = seen.iter().map(key).collect();
    assert_eq!(seen.len(), 300, "every record once");
    assert_eq!(got, want);
    assert!(
        seen.iter()
            .all(|r| r.remaining_ms > 500_000 && r.timeout_ms == 900_000)
    );

    // ---- a second snapshot of 200 sweeps the other 100 ----------------------------------
    let sum = local
        .apply_connections(tokio_stream::iter(snapshot(&records[..200], &[])))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!((sum.applied, sum.refused, sum.swept), (200, 0, 100));
    assert_eq!(status_with(&mut admin, 200).await.connections, 200);

    // ---- events: flushing RS2's connections ---------------------------------------------
    let r = admin
        .delete_server(apb::DeleteServerRequest {
            service: Some(apb::ServiceKey {
                protocol: apb::Protocol::Tcp.into(),
                address: VIP.to_string(),
                port: 80,
            }),
            server: Some(apb::ServerKey {
                address: RS2.to_string(),
                port: 80,
            }),
            flush: true,
        })
        .await;
    assert!(r.is_ok(), "delete server: {r:?}");
    let flushed_want: BTreeSet<_> = records[..200]
        .iter()
        .filter(|r| r.real.addr == RS2)
        .map(|r| r.client)
        .collect();
    let mut flushed = BTreeSet::new();
    let mut seqs: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    while flushed.len() < flushed_want.len() {
        let m = tokio::time::timeout(Duration::from_secs(10), w1.message())
            .await
            .expect("events within 10 s")
            .expect("stream ok")
            .expect("stream open");
        match wire::local_from(&m).expect("decodes") {
            LocalMsg::Events(evs) => {
                for (lcore, item) in evs {
                    let ev = match item {
                        LcoreItem::Event(ev) => ev,
                        LcoreItem::Head(h) => {
                            let last = seqs.get(&lcore).and_then(|s| s.last()).copied();
                            assert!(
                                last.is_none_or(|l| h >= l),
                                "lcore {lcore}: head {h} behind {last:?}"
                            );
                            continue;
                        }
                    };
                    assert_eq!(ev.kind, ConnEventKind::Deleted(DeleteReason::Flushed));
                    assert_eq!(ev.record.real.addr, RS2);
                    assert!(flushed.insert(ev.record.client), "each once");
                    seqs.entry(lcore).or_default().push(ev.seq);
                }
            }
            other => panic!("only events after the snapshot: {other:?}"),
        }
    }
    assert_eq!(flushed, flushed_want);
    // Each lcore's next head marks (every 50 ms) name its last event: nothing was dropped.
    let mut heads: BTreeMap<usize, u64> = BTreeMap::new();
    while seqs.iter().any(|(l, s)| heads.get(l) != s.last()) {
        let m = tokio::time::timeout(Duration::from_secs(2), w1.message())
            .await
            .expect("head marks within 2 s")
            .expect("stream ok")
            .expect("stream open");
        match wire::local_from(&m).expect("decodes") {
            LocalMsg::Events(evs) => {
                for (lcore, item) in evs {
                    match item {
                        LcoreItem::Head(h) => {
                            heads.insert(lcore, h);
                        }
                        LcoreItem::Event(ev) => panic!("no more events: {ev:?}"),
                    }
                }
            }
            other => panic!("only head marks now: {other:?}"),
        }
    }
    assert_eq!(seqs.len(), 2, "both lcores flushed some");
    for (lcore, s) in &seqs {
        assert!(
            s.windows(2).all(|w| w[1] == w[0] + 1),
            "lcore {lcore}: consecutive sequence numbers {s:?}"
        );
    }
    assert_eq!(status_with(&mut admin, 100).await.connections, 100);

    // ---- a new watch supersedes the old one -----------------------------------------------
    let mut w2 = local
        .watch_connections(pb::WatchConnectionsRequest { chunk: 1000 })
        .await
        .expect("watch 2")
        .into_inner();
    let (id2, seen2) = read_snapshot(&mut w2, 1000).await;
    assert!(id2 > id1);
    assert_eq!(seen2.len(), 100);
    assert!(seen2.iter().all(|r| r.real.addr == RS1));
    let old_end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = w1.message().await {}
    })
    .await;
    assert!(old_end.is_ok(), "the superseded watch ends");

    // ---- SIGTERM removes both sockets ---------------------------------------------------
    drop(w2);
    let (code, err) = d.stop();
    assert_eq!(code, Some(0), "clean stop; stderr:\n{err}");
    assert!(!sync_sock.exists(), "sync socket removed");
    assert!(err.contains("sync: Local service listening"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncd_status_report_shows_in_get_status_and_metrics() {
    let mut d = Director::start("sync", "report", |dir, prefix, metrics| {
        let (admin, sync) = sockets(dir);
        config_text(prefix, &admin, &sync, metrics)
    });
    let (admin_sock, sync_sock) = sockets(&d.dir);
    let mut admin = AdminClient::new(d.channel(&admin_sock).await);
    let mut local = LocalClient::new(d.channel(&sync_sock).await);

    // ---- no syncd yet ---------------------------------------------------------------------
    assert_eq!(
        status(&mut admin).await.sync,
        None,
        "no report: no sync status"
    );
    let text = scrape(d.metrics).await;
    assert!(text.contains("tandem_sync_reported 0"), "{text}");
    assert!(!text.contains("tandem_sync_info"), "{text}");

    // ---- a report ---------------------------------------------------------------------------
    let report = pb::SyncReport {
        node_id: 1,
        priority: 200,
        role: pb::Role::Active as i32,
        reason: "PeerDead".into(),
        pid: 4242,
        interval_ms: 500,
        peer_alive: true,
        peer_role: pb::Role::Syncing as i32,
        peer_node_id: 2,
        peer_heard_sync_link_ms_ago: 10,
        peer_heard_service_ms_ago: -1,
        sync_link: "up".into(),
        replication: "sending".into(),
        dataplane_link: "up".into(),
        sync_complete: true,
        epoch: 77,
        head_seq: 1_000,
        last_sent_seq: 1_000,
        last_acked_seq: 990,
        lag_events: 10,
        lag_ms: 4,
        queue_depth: 10,
        queue_bytes: 640,
        resyncs: 2,
        overflow_drops: 5,
        ..Default::default()
    };
    local
        .report_status(report.clone())
        .await
        .expect("report status");
    let s = status(&mut admin).await.sync.expect("a sync status");
    assert_eq!(s.role, "active");
    assert_eq!(s.reason, "PeerDead");
    assert_eq!((s.peer_role.as_str(), s.peer_node_id), ("syncing", 2));
    assert_eq!((s.last_sent_seq, s.last_acked_seq), (1_000, 990));
    assert_eq!((s.lag_events, s.lag_ms, s.queue_depth), (10, 4, 10));
    assert_eq!((s.resyncs, s.overflow_drops, s.reports), (2, 5, 1));
    assert_eq!(s.replication, "sending");
    assert!(s.sync_complete);
    assert!(!s.stale, "just reported");
    assert!(s.report_age_ms < 1_000, "age {}", s.report_age_ms);

    let text = scrape(d.metrics).await;
    for line in [
        "tandem_sync_reported 1",
        r#"tandem_sync_info{role="active",reason="PeerDead",peer_role="syncing",sync_link="up",replication="sending",dataplane_link="up"} 1"#,
        "tandem_sync_last_sent_sequence 1000",
        "tandem_sync_last_acked_sequence 990",
        "tandem_sync_lag_events 10",
        "tandem_sync_lag_milliseconds 4",
        "tandem_sync_queue_depth 10",
        "tandem_sync_resyncs_total 2",
        "tandem_sync_overflow_drops_total 5",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }

    // ---- the age grows; a stopping syncd says so ----------------------------------------------
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let s = status(&mut admin).await.sync.expect("a sync status");
    assert!(s.report_age_ms >= 1_700, "age {}", s.report_age_ms);
    assert!(s.stale, "older than three 500 ms intervals");
    local
        .report_status(pb::SyncReport {
            role: pb::Role::Unspecified as i32,
            ..report
        })
        .await
        .expect("report status");
    let s = status(&mut admin).await.sync.expect("a sync status");
    assert_eq!((s.role.as_str(), s.reports, s.stale), ("stopped", 2, false));

    let (code, err) = d.stop();
    assert_eq!(code, Some(0), "clean stop; stderr:\n{err}");
}
