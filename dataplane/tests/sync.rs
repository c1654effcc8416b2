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
    let head = common::sync_config_head(prefix, "0,1", "net_null0", admin, sync, metrics);
    format!(
        r#"{head}[[service]]
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
"#
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
                        LcoreItem::Locality { .. } => panic!("no locality here: {item:?}"),
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
                        other => panic!("no more events: {other:?}"),
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

// ---- persistence templates and lblc/lblcr locality, with real packets ------------------

const CLIENT1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const CLIENT2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 8);
const CLIENT3: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const PORT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];

/// The director on a `net_tap` port (kernel interface `iface`), so the test can send it
/// frames: a persistent rr service on :80, lblc services on :8080 and :8081.
fn tap_config(prefix: &str, iface: &str, admin: &Path, sync: &Path, metrics: u16) -> String {
    let servers = format!(
        "[[service.server]]\naddress = \"{RS1}\"\nport = PORT\nmethod = \"nat\"\n\
         [[service.server]]\naddress = \"{RS2}\"\nport = PORT\nmethod = \"nat\"\n"
    );
    let svc = |port: u16, sched: &str, extra: &str| {
        format!(
            "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}\"\nport = {port}\n\
             scheduler = \"{sched}\"\n{extra}{}",
            servers.replace("PORT", &port.to_string())
        )
    };
    format!(
        r#"{}{}{}{}"#,
        common::sync_config_head(
            prefix,
            "0,1",
            &format!("net_tap0,iface={iface},mac=02:00:00:00:00:11"),
            admin,
            sync,
            metrics
        ),
        svc(80, "rr", "persistence_timeout_s = 300\n"),
        svc(8080, "lblc", ""),
        svc(8081, "lblc", ""),
    )
}

/// Sends `frames` out of the kernel side of the tap `iface` (what the dataplane's port
/// receives) on an AF_PACKET socket, through python3 (installed by `scripts/setup.sh`) so that
/// this test needs no unsafe code of its own.
fn tap_send(iface: &str, frames: &[Vec<u8>]) -> std::io::Result<()> {
    const SCRIPT: &str = "import socket, sys\n\
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
        s.bind((sys.argv[1], 0))\n\
        for f in sys.argv[2:]:\n    s.send(bytes.fromhex(f))\n";
    let hex: Vec<String> = frames
        .iter()
        .map(|f| f.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(iface)
        .args(&hex)
        .stderr(std::process::Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "python3 sending on {iface}: {status}"
        )))
    }
}

fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// A TCP SYN from `src` to `dst`, addressed to the director's port MAC.
fn syn_frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&src.1.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.1.to_be_bytes());
    tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.0.octets());
    pseudo.extend_from_slice(&dst.0.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&tcp);
    let c = checksum(&pseudo, 0);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.0.octets());
    ip.extend_from_slice(&dst.0.octets());
    let c = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = PORT_MAC.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xc1, 0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

fn template_rec(client: Ipv4Addr, real: Ipv4Addr, remaining_ms: u32) -> ConnRecord {
    ConnRecord {
        client: Endpoint::new(client, 0),
        vip: Endpoint::new(VIP, 80),
        real: Endpoint::new(real, 80),
        state: ConnState::None,
        flags: ConnFlags::TEMPLATE,
        timeout_ms: 300_000,
        remaining_ms,
        ..record(0, real, VIP)
    }
}

fn locality(port: u16, reals: &[Ipv4Addr]) -> tandem_syncd::repl::LocalityEntry {
    let key = tandem_syncd::repl::LocalityKey {
        proto: Protocol::Tcp,
        vip: Endpoint::new(VIP, port),
        dest_ip: VIP,
    };
    let reals: Vec<Endpoint> = reals.iter().map(|r| Endpoint::new(*r, port)).collect();
    tandem_syncd::repl::LocalityEntry::new(key, &reals).0
}

/// What a watch's snapshot held: records, locality entries (one per lcore that has it),
/// and the numbered items that came meanwhile.
type Snap = (
    Vec<ConnRecord>,
    Vec<tandem_syncd::repl::LocalityEntry>,
    Vec<(usize, LcoreItem)>,
);

async fn next_local(s: &mut tonic::Streaming<pb::LocalEvents>) -> LocalMsg {
    let m = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("watch message within 10 s")
        .expect("watch stream ok")
        .expect("watch stream open");
    wire::local_from(&m).expect("syncd decodes what the dataplane sends")
}

async fn read_full_snapshot(s: &mut tonic::Streaming<pb::LocalEvents>) -> Snap {
    let (mut recs, mut loc, mut items) = (Vec::new(), Vec::new(), Vec::new());
    assert!(matches!(next_local(s).await, LocalMsg::SnapshotBegin(_)));
    loop {
        match next_local(s).await {
            LocalMsg::SnapshotChunk(c) => {
                for ch in c {
                    match ch {
                        Change::Conn { record, .. } => recs.push(record),
                        Change::LocalitySet(e) => loc.push(e),
                        other => panic!("not a snapshot record: {other:?}"),
                    }
                }
            }
            LocalMsg::SnapshotEnd(_) => return (recs, loc, items),
            LocalMsg::Events(e) => items.extend(e),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Templates and lblc entries from the peer are installed and decide where new connections go;
/// those the director makes itself are streamed. Before that, as a standby, it schedules no
/// connection at all (the SYNs are counted as `standby` drops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_and_locality_are_streamed_and_installed() {
    let iface = format!("tdms{}", std::process::id() % 100_000);
    let mut d = Director::start("sync", "content", |dir, prefix, metrics| {
        let (admin, sync) = sockets(dir);
        tap_config(prefix, &iface, &admin, &sync, metrics)
    });
    let (admin_sock, sync_sock) = sockets(&d.dir);
    let mut admin = AdminClient::new(d.channel(&admin_sock).await);
    let mut local = LocalClient::new(d.channel(&sync_sock).await);

    // ---- apply: the peer's template and locality entry, and two refusals ---------------
    let t1 = template_rec(CLIENT1, RS2, 200_000);
    let entries = vec![
        wire::item_to(&Item::Change(Change::Conn {
            kind: ConnEventKind::Created,
            record: t1,
        })),
        wire::item_to(&Item::Change(Change::LocalitySet(locality(8080, &[RS2])))),
        // No such service; and a service that is not lblc/lblcr.
        wire::item_to(&Item::Change(Change::LocalitySet(locality(9999, &[RS2])))),
        wire::item_to(&Item::Change(Change::LocalitySet(locality(80, &[RS2])))),
    ];
    let sum = local
        .apply_connections(tokio_stream::iter([pb::ApplyRequest { entries }]))
        .await
        .expect("apply")
        .into_inner();
    assert_eq!((sum.applied, sum.refused, sum.swept), (2, 2, 0));

    // ---- the watch's snapshot holds them --------------------------------------------------
    let mut w = local
        .watch_connections(pb::WatchConnectionsRequest { chunk: 64 })
        .await
        .expect("watch")
        .into_inner();
    let (recs, loc, _) = read_full_snapshot(&mut w).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(
        ConnRecord {
            remaining_ms: 0,
            ..recs[0]
        },
        ConnRecord {
            remaining_ms: 0,
            ..t1
        }
    );
    // Installed with the record's 200 s plus the 5 s grace.
    assert!(
        (200_000..=205_000).contains(&recs[0].remaining_ms),
        "{recs:?}"
    );
    // Every lcore got the entry, and walks it.
    assert_eq!(loc, vec![locality(8080, &[RS2]); 2]);

    // ---- packets: the installed template and entry decide, once active -------------------
    let flows = [
        ((CLIENT1, 40_001), 80, RS2), // the installed template (rr would say RS1)
        ((CLIENT2, 40_001), 8080, RS2), // the installed lblc entry (wlc would say RS1)
        ((CLIENT3, 40_001), 80, RS1), // a new template
        ((CLIENT3, 40_002), 8081, RS1), // a new lblc entry
    ];
    let want: BTreeMap<(String, u32, u32), String> = flows
        .iter()
        .map(|((c, p), vport, rs)| {
            (
                (c.to_string(), u32::from(*p), u32::from(*vport)),
                rs.to_string(),
            )
        })
        .collect();
    let frames: Vec<Vec<u8>> = flows
        .iter()
        .map(|((c, p), vport, _)| syn_frame((*c, *p), (VIP, *vport)))
        .collect();

    // A standby (no role given yet) schedules nothing: the SYNs are counted, no connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The tap or the port may not be up yet: keep sending until the drops show.
        let _ = tap_send(&iface, &frames);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let st = status(&mut admin).await;
        assert_eq!(st.role, "standby");
        let standby = st.drops.iter().find(|d| d.reason == "standby");
        if standby.is_some_and(|d| d.count >= frames.len() as u64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no standby drops in 10 s: {st:?}"
        );
    }
    let list = admin
        .list_connections(apb::ListConnectionsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.connections.len(), 1, "the installed template only");

    // Only an active director schedules.
    local
        .set_role(pb::SetRoleRequest {
            role: pb::Role::Active as i32,
        })
        .await
        .expect("set role");
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let _ = tap_send(&iface, &frames);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let list = admin
            .list_connections(apb::ListConnectionsRequest::default())
            .await
            .expect("list")
            .into_inner();
        let got: BTreeMap<(String, u32, u32), String> = list
            .connections
            .iter()
            .filter(|c| !c.template)
            .map(|c| {
                (
                    (c.client_address.clone(), c.client_port, c.virtual_port),
                    c.server_address.clone(),
                )
            })
            .collect();
        if got.len() >= want.len() || Instant::now() > deadline {
            break got;
        }
    };
    assert_eq!(got, want);

    // ---- events: the new template and the new entry, numbered with the connections -------
    let t3 = template_rec(CLIENT3, RS1, 0);
    let (mut template_events, mut locality_events) = (Vec::new(), Vec::new());
    let mut numbered: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    let mut conns_created = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while conns_created < 4 || template_events.is_empty() || locality_events.is_empty() {
        assert!(Instant::now() < deadline, "events within 10 s");
        let LocalMsg::Events(evs) = next_local(&mut w).await else {
            panic!("only events after the snapshot");
        };
        for (lcore, item) in evs {
            match item {
                LcoreItem::Event(ev) if ev.record.flags.contains(ConnFlags::TEMPLATE) => {
                    numbered.entry(lcore).or_default().push(ev.seq);
                    template_events.push(ev);
                }
                LcoreItem::Event(ev) => {
                    numbered.entry(lcore).or_default().push(ev.seq);
                    assert_eq!(ev.kind, ConnEventKind::Created);
                    conns_created += 1;
                }
                LcoreItem::Locality { seq, change } => {
                    numbered.entry(lcore).or_default().push(seq);
                    locality_events.push(change);
                }
                LcoreItem::Head(_) => {}
            }
        }
    }
    assert_eq!(
        template_events.len(),
        1,
        "only the new template: {template_events:?}"
    );
    let ev = template_events[0];
    assert_eq!(ev.kind, ConnEventKind::Created);
    assert!((299_000..=300_000).contains(&ev.record.remaining_ms));
    assert_eq!(
        ConnRecord {
            remaining_ms: 0,
            ..ev.record
        },
        t3
    );
    assert_eq!(
        locality_events,
        vec![Change::LocalitySet(locality(8081, &[RS1]))]
    );
    for (lcore, s) in &numbered {
        assert!(
            s.windows(2).all(|w| w[1] == w[0] + 1),
            "lcore {lcore}: one gapless sequence for connections, templates, locality: {s:?}"
        );
    }

    // ---- a new watch's snapshot has both templates and all three entries -------------------
    let mut w2 = local
        .watch_connections(pb::WatchConnectionsRequest { chunk: 64 })
        .await
        .expect("watch 2")
        .into_inner();
    let (recs, mut loc, _) = read_full_snapshot(&mut w2).await;
    let mut templates: Vec<_> = recs
        .iter()
        .filter(|r| r.flags.contains(ConnFlags::TEMPLATE))
        .map(|r| (r.client, r.real))
        .collect();
    templates.sort();
    assert_eq!(
        templates,
        vec![
            (Endpoint::new(CLIENT1, 0), Endpoint::new(RS2, 80)),
            (Endpoint::new(CLIENT3, 0), Endpoint::new(RS1, 80)),
        ]
    );
    assert_eq!(recs.len(), 6, "4 connections and 2 templates: {recs:?}");
    loc.sort_by_key(|e| e.key);
    assert_eq!(
        loc,
        vec![
            locality(8080, &[RS2]),
            locality(8080, &[RS2]),
            locality(8081, &[RS1])
        ]
    );
    drop(w);

    // ---- a snapshot of the peer's that lacks them sweeps them -------------------------------
    let entries = vec![
        wire::item_to(&Item::SnapshotBegin { id: 7 }),
        upsert(&t1),
        wire::item_to(&Item::Snapshot(Change::LocalitySet(locality(8080, &[RS1])))),
        wire::item_to(&Item::SnapshotEnd { id: 7 }),
    ];
    let sum = local
        .apply_connections(tokio_stream::iter([pb::ApplyRequest { entries }]))
        .await
        .expect("apply")
        .into_inner();
    // Upserted: the template and the entry (counted once); swept: the 4 connections, C3's
    // template and the lcore's :8081 entry.
    assert_eq!((sum.applied, sum.refused, sum.swept), (2, 0, 6));
    let mut w3 = local
        .watch_connections(pb::WatchConnectionsRequest { chunk: 64 })
        .await
        .expect("watch 3")
        .into_inner();
    drop(w2);
    let (recs, loc, _) = read_full_snapshot(&mut w3).await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].client, t1.client);
    assert_eq!(loc, vec![locality(8080, &[RS1]); 2]);
    drop(w3);
    let (code, err) = d.stop();
    assert_eq!(code, Some(0), "clean stop; stderr:\n{err}");
}
