//! A reference server of `tandem.sync.v1.Local`, in process, backed by the core's real
//! [`ConnTable`]: the dataplane the daemon's tests run against, and the specification, in
//! code, of what the real dataplane's side must do. One table stands for one lcore (lcore 0).
//!
//! # Semantics (what the real dataplane must do too)
//!
//! **`WatchConnections(chunk)`** — a server stream:
//! 1. `SnapshotBegin{id}` (a fresh `id` per watch), then `SnapshotChunk`s of at most `chunk`
//!    records each covering every live entry (connections *and* persistence templates, every
//!    state, with `remaining_ms` as of the walk) and the locality entries, then
//!    `SnapshotEnd{id}`.
//! 2. Then `LocalEventBatch`es: every `ConnEvent` the lcores emit, with the lcore index and
//!    the lcore's own sequence number (`ConnEvent::seq`, consecutive per lcore, one per event
//!    emitted whether delivered or not). Persistence templates are `ConnEvent`s too
//!    (`TEMPLATE` records: created, refreshed at most once per timeout period, expired), and
//!    lblc/lblcr locality changes are `LocalEvent`s with `locality_set` / `locality_removed`
//!    numbered in the *same* per-lcore sequence, so a lost one shows as a gap like a lost
//!    event (the top-level `LocalEvents.locality_set/removed` remain for changes without a
//!    number; this reference has no locality tables and sends neither).
//! 3. **Consistency:** for each lcore, an event of a change made after a record was read
//!    comes after that record in the stream. Here the snapshot is taken and the watcher
//!    registered under one lock, so every later event follows the whole snapshot. The real
//!    dataplane gets the same by walking each lcore's table *on that lcore*, between bursts
//!    (`ConnTable::snapshot`), and putting the chunks in the same per-lcore queue as its
//!    events; per-lcore order is all syncd needs (it is what `Sender::snapshot_chunk`
//!    requires).
//! 4. **Never wait for syncd.** Events go to each watcher through a bounded queue; when it is
//!    full the events are dropped (counted) and their sequence numbers are *not* reused, so
//!    syncd sees the gap, counts `lcore_lost`, and resyncs. A gap shows only when a later
//!    number arrives, so each lcore also sends *head marks* (a `LocalEvent` without an event:
//!    the last number it assigned, every event up to it handed over or dropped): the real
//!    dataplane at the start of a watch, every 50 ms and soon after a drop. This reference
//!    ends each batch with one, and cuts a watcher whose queue is full instead of dropping
//!    into it (syncd reopens the watch and resyncs), since it has no timer to send a late
//!    mark. A closed watcher is forgotten.
//!
//! **`ApplyConnections(stream ApplyRequest)`** — entries in order, each applied at once:
//! - a connection upsert (delta or snapshot record) is installed with
//!   `ConnTable::install` after mapping the real server's endpoint to the local destination
//!   index (unknown real server: refused and counted) — the real dataplane also maps
//!   `(proto, vip)` to its service and installs on the lcore that owns the client address
//!   (`balance::owner`); a deletion is `ConnTable::uninstall` by client→VIP key. The real
//!   dataplane puts a template (`TEMPLATE` record) into its scheduler's persistence table
//!   instead, so that its scheduler honours it (on the owner lcore; on every lcore when the
//!   service's netmask groups several addresses), and a locality entry into the lblc/lblcr
//!   scheduler of the service `(proto, vip)` on every lcore (real servers mapped by
//!   endpoint; an unknown service or real server, or a service that is not lblc/lblcr:
//!   refused and counted);
//! - `SnapshotBegin`: every entry in the table now, *local or installed*, is marked stale;
//!   `SnapshotEnd`: every entry still stale (not upserted since the begin) is removed (the
//!   peer's table is the truth for a standby); locality entries alike;
//! - the summary (`applied`, `refused`, `swept`) is returned when syncd ends the stream.
//!
//! **`SetRole(role)`** — `ACTIVE`: gratuitous ARP for the VIPs and the inside gateway, answer
//! ARP for them; anything else: stop answering. Returns the role now in force.
//!
//! **`ExchangeHeartbeats(stream)`** — every heartbeat syncd sends goes out on the service
//! network (VRRP-like, to the peer director's dataplane); every heartbeat received from the
//! peer's dataplane comes back on the response stream. **When syncd's stream ends (syncd
//! died), the dataplane stops being active at once**: a director without its syncd must not
//! keep the VIPs while the peer takes over. Here the "service network" is an in-process
//! broadcast bus ([`ServiceNet`]) with a switch to cut it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tandem_core::conn::{ConnConfig, ConnEvent, ConnEventKind, ConnEventSink, ConnTable, TcpFlags};
use tandem_core::lb::{DestId, Endpoint, Flow, ForwardMethod, Protocol, ServiceId};
use tandem_proto::sync as pb;
use tandem_proto::sync::local_server::{Local, LocalServer};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::repl::{Change, ConnTableReplica, Item, Replica};
use crate::wire;

/// Events queued per watcher before they are dropped.
const WATCH_QUEUE: usize = 1024;

/// An in-process "service network" carrying heartbeats between reference dataplanes.
#[derive(Debug, Clone)]
pub struct ServiceNet {
    tx: broadcast::Sender<(u64, pb::HeartbeatMessage)>,
    cut: Arc<AtomicBool>,
}

impl Default for ServiceNet {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceNet {
    /// A network nobody is on yet.
    pub fn new() -> ServiceNet {
        ServiceNet {
            tx: broadcast::channel(256).0,
            cut: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Cut (`true`) or restore the network.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

/// What the reference dataplane counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefStats {
    /// Entries applied from `ApplyConnections`.
    pub applied: u64,
    /// Entries refused (unknown real server, table full, malformed).
    pub refused: u64,
    /// Entries removed by sweeps.
    pub swept: u64,
    /// Events dropped because a watcher's queue was full.
    pub event_drops: u64,
    /// `WatchConnections` calls served.
    pub watches: u64,
    /// `SetRole` calls served.
    pub set_roles: u64,
    /// `ReportStatus` calls served.
    pub reports: u64,
}

/// One row of the table, for exact comparisons between directors.
pub type Row = (Protocol, Endpoint, Endpoint, Endpoint, u8, u8, bool);

struct State {
    replica: ConnTableReplica,
    reals: Vec<Endpoint>,
    role: pb::Role,
    watchers: Vec<mpsc::Sender<Result<pb::LocalEvents, Status>>>,
    next_snapshot: u64,
    stats: RefStats,
    last_report: Option<pb::SyncReport>,
    base: Instant,
}

impl State {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn publish(&mut self, events: Vec<ConnEvent>) {
        if events.is_empty() {
            return;
        }
        let head = events.last().map_or(0, |e| e.seq);
        let msg = pb::LocalEvents {
            msg: Some(pb::local_events::Msg::Events(pb::LocalEventBatch {
                events: events
                    .iter()
                    .map(|e| wire::local_event_to(0, e))
                    .chain(std::iter::once(wire::local_head_to(0, head)))
                    .collect(),
            })),
        };
        let n = events.len() as u64;
        let mut drops = 0;
        self.watchers.retain(|w| match w.try_send(Ok(msg.clone())) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                drops += n;
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        self.stats.event_drops += drops;
    }
}

#[derive(Default)]
struct Collect(Vec<ConnEvent>);

impl ConnEventSink for Collect {
    fn emit(&mut self, ev: ConnEvent) -> bool {
        self.0.push(ev);
        true
    }
}

/// The reference dataplane: a `ConnTable` (one lcore) and its `Local` service.
#[derive(Clone)]
pub struct RefDataplane {
    state: Arc<Mutex<State>>,
    net: ServiceNet,
    id: u64,
}

impl std::fmt::Debug for RefDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefDataplane")
            .field("id", &self.id)
            .finish()
    }
}

impl RefDataplane {
    /// A dataplane whose destinations are `reals` (destination index = position), on the
    /// service network `net`; `id` must differ between dataplanes on one network.
    pub fn new(
        id: u64,
        reals: Vec<Endpoint>,
        capacity: usize,
        net: ServiceNet,
    ) -> Result<RefDataplane, tandem_core::conn::ConnConfigError> {
        let mut cfg = ConnConfig::new(capacity, reals.len().max(1));
        cfg.tick = Duration::from_millis(10);
        cfg.hash_seed ^= id;
        let table = ConnTable::new(cfg)?;
        Ok(RefDataplane {
            state: Arc::new(Mutex::new(State {
                replica: ConnTableReplica::new(table, 4096),
                reals,
                role: pb::Role::Unspecified,
                watchers: Vec::new(),
                next_snapshot: 1,
                stats: RefStats::default(),
                last_report: None,
                base: Instant::now(),
            })),
            net,
            id,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens in a failing test; go on with the data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens an established TCP connection client → vip, forwarded to `reals[dest]` by NAT
    /// (a SYN then an ACK: `Created` in SYN_RECV, then `StateChanged` to ESTABLISHED).
    /// `false` if `dest` is out of range or the table refused.
    pub fn open_tcp(&self, client: Endpoint, vip: Endpoint, dest: usize) -> bool {
        let mut s = self.lock();
        let Some(real) = s.reals.get(dest).copied() else {
            return false;
        };
        let now = s.now();
        let mut sink = Collect::default();
        let new = tandem_core::conn::NewConn {
            proto: Protocol::Tcp,
            client,
            vip,
            real,
            method: ForwardMethod::Nat,
            dest: DestId(u32::try_from(dest).unwrap_or(0)),
            service: ServiceId(0),
        };
        let table = &mut s.replica.table;
        let ok = match table.create(&new, TcpFlags::SYN, now, &mut sink) {
            Ok(id) => {
                table.update(
                    id,
                    tandem_core::conn::Direction::Input,
                    TcpFlags::ACK,
                    now,
                    &mut sink,
                );
                true
            }
            Err(_) => false,
        };
        s.publish(sink.0);
        ok
    }

    /// Ends the connection client → vip (`Deleted(Removed)`); `false` if there is none.
    pub fn close(&self, proto: Protocol, client: Endpoint, vip: Endpoint) -> bool {
        let mut s = self.lock();
        let now = s.now();
        let mut sink = Collect::default();
        let flow = Flow {
            proto,
            src: client,
            dst: vip,
        };
        let table = &mut s.replica.table;
        let ok = match table.lookup(&flow) {
            Some((id, _)) => table.remove(id, now, &mut sink),
            None => false,
        };
        s.publish(sink.0);
        ok
    }

    /// Runs the timer wheel (expiries and refreshes become events).
    pub fn expire(&self) {
        let mut s = self.lock();
        let now = s.now();
        let mut sink = Collect::default();
        s.replica.table.expire(now, 4096, &mut sink);
        s.publish(sink.0);
    }

    /// Every entry, sorted.
    pub fn rows(&self) -> Vec<Row> {
        let s = self.lock();
        let mut v: Vec<Row> = s
            .replica
            .table
            .iter()
            .map(|(_, c)| {
                (
                    c.proto(),
                    c.client(),
                    c.vip(),
                    c.real(),
                    c.method() as u8,
                    c.state() as u8,
                    c.is_template(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// The role syncd last ordered.
    pub fn role(&self) -> pb::Role {
        self.lock().role
    }

    /// The status syncd last reported (`ReportStatus`).
    pub fn last_report(&self) -> Option<pb::SyncReport> {
        self.lock().last_report.clone()
    }

    /// Counters of the service.
    pub fn stats(&self) -> RefStats {
        self.lock().stats
    }

    /// Serves `Local` on a Unix socket at `path` until the returned handle is dropped or
    /// shut down; also runs the timer wheel every 50 ms. Must be called inside a tokio
    /// runtime.
    pub fn serve(&self, path: &Path) -> std::io::Result<RefServer> {
        let listener = tokio::net::UnixListener::bind(path)?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let svc = LocalServer::new(self.clone());
        let ticker = {
            let me = self.clone();
            tokio::spawn(async move {
                let mut t = tokio::time::interval(Duration::from_millis(50));
                loop {
                    t.tick().await;
                    me.expire();
                }
            })
        };
        let server = tokio::spawn(async move {
            let r = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stop_rx.await;
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "reference dataplane server ended");
            }
        });
        Ok(RefServer {
            stop: Some(stop_tx),
            server,
            ticker,
        })
    }
}

/// A running reference server; dropping it stops it.
#[derive(Debug)]
pub struct RefServer {
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Drop for RefServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.ticker.abort();
        self.server.abort();
    }
}

type Out<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Local for RefDataplane {
    type WatchConnectionsStream = Out<pb::LocalEvents>;
    type ExchangeHeartbeatsStream = Out<pb::HeartbeatMessage>;

    async fn watch_connections(
        &self,
        req: Request<pb::WatchConnectionsRequest>,
    ) -> Result<Response<Self::WatchConnectionsStream>, Status> {
        let chunk = usize::try_from(req.get_ref().chunk.max(1)).unwrap_or(1024);
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let mut msgs = Vec::new();
        {
            let mut s = self.lock();
            let id = s.next_snapshot;
            s.next_snapshot += 1;
            s.stats.watches += 1;
            let now = s.now();
            msgs.push(pb::local_events::Msg::SnapshotBegin(pb::SnapshotBegin {
                snapshot_id: id,
            }));
            let mut from = 0;
            loop {
                let mut conns = Vec::new();
                let next = s
                    .replica
                    .table
                    .snapshot(from, chunk, now, |r| conns.push(wire::record_to(&r)));
                if !conns.is_empty() {
                    msgs.push(pb::local_events::Msg::SnapshotChunk(pb::SnapshotChunk {
                        conns,
                        locality: Vec::new(),
                    }));
                }
                match next {
                    Some(n) => from = n,
                    None => break,
                }
            }
            let locality: Vec<_> = s
                .replica
                .locality()
                .iter()
                .map(
                    |e| match wire::change_to_entry(&Change::LocalitySet(*e)).item {
                        Some(pb::entry::Item::LocalitySet(l)) => l,
                        _ => pb::LocalityEntry::default(),
                    },
                )
                .collect();
            if !locality.is_empty() {
                msgs.push(pb::local_events::Msg::SnapshotChunk(pb::SnapshotChunk {
                    conns: Vec::new(),
                    locality,
                }));
            }
            msgs.push(pb::local_events::Msg::SnapshotEnd(pb::SnapshotEnd {
                snapshot_id: id,
            }));
            // Registered under the same lock as the walk: every later event follows it.
            s.watchers.push(tx);
        }
        let head = tokio_stream::iter(
            msgs.into_iter()
                .map(|m| Ok(pb::LocalEvents { msg: Some(m) })),
        );
        Ok(Response::new(Box::pin(head.chain(ReceiverStream::new(rx)))))
    }

    async fn apply_connections(
        &self,
        req: Request<Streaming<pb::ApplyRequest>>,
    ) -> Result<Response<pb::ApplySummary>, Status> {
        let mut stream = req.into_inner();
        let mut sum = pb::ApplySummary::default();
        while let Some(r) = stream.next().await {
            let r = r?;
            let mut s = self.lock();
            let now = s.now();
            for e in &r.entries {
                let item = match wire::item_from(e) {
                    Ok(i) => i,
                    Err(_) => {
                        s.stats.refused += 1;
                        sum.refused += 1;
                        continue;
                    }
                };
                match item {
                    Item::Change(c) | Item::Snapshot(c) => {
                        let c = match c {
                            Change::Conn { kind, mut record } => {
                                match s.reals.iter().position(|r| *r == record.real) {
                                    Some(d) => {
                                        record.dest = DestId(u32::try_from(d).unwrap_or(0));
                                    }
                                    None if matches!(kind, ConnEventKind::Deleted(_)) => {}
                                    None => {
                                        s.stats.refused += 1;
                                        sum.refused += 1;
                                        continue;
                                    }
                                }
                                Change::Conn { kind, record }
                            }
                            other => other,
                        };
                        let refused = s.replica.stats.refused;
                        s.replica.apply(&c, now);
                        if s.replica.stats.refused > refused {
                            s.stats.refused += 1;
                            sum.refused += 1;
                        } else {
                            s.stats.applied += 1;
                            sum.applied += 1;
                        }
                    }
                    Item::SnapshotBegin { .. } => {
                        s.replica.adopt_existing();
                        s.replica.begin_snapshot();
                    }
                    Item::SnapshotEnd { .. } => {
                        let n = s.replica.end_snapshot(now) as u64;
                        s.stats.swept += n;
                        sum.swept += n;
                    }
                }
            }
        }
        Ok(Response::new(sum))
    }

    async fn set_role(
        &self,
        req: Request<pb::SetRoleRequest>,
    ) -> Result<Response<pb::SetRoleResponse>, Status> {
        let role = pb::Role::try_from(req.get_ref().role)
            .ok()
            .filter(|r| *r != pb::Role::Unspecified)
            .ok_or_else(|| Status::invalid_argument("role: unspecified or unknown"))?;
        let mut s = self.lock();
        s.role = role;
        s.stats.set_roles += 1;
        tracing::debug!(dataplane = self.id, ?role, "reference dataplane: role set");
        Ok(Response::new(pb::SetRoleResponse { role: role as i32 }))
    }

    async fn report_status(
        &self,
        req: Request<pb::SyncReport>,
    ) -> Result<Response<pb::ReportStatusResponse>, Status> {
        let mut s = self.lock();
        s.stats.reports += 1;
        s.last_report = Some(req.into_inner());
        Ok(Response::new(pb::ReportStatusResponse {}))
    }

    async fn exchange_heartbeats(
        &self,
        req: Request<Streaming<pb::HeartbeatMessage>>,
    ) -> Result<Response<Self::ExchangeHeartbeatsStream>, Status> {
        let mut inbound = req.into_inner();
        let me = self.id;
        let net = self.net.clone();
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            while let Some(Ok(hb)) = inbound.next().await {
                if !net.cut.load(Ordering::SeqCst) {
                    let _ = net.tx.send((me, hb));
                }
            }
            // syncd is gone: a director without its syncd gives up the addresses.
            let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
            if s.role == pb::Role::Active {
                tracing::info!(
                    dataplane = me,
                    "reference dataplane: syncd gone, standing down"
                );
            }
            s.role = pb::Role::Standby;
        });
        let cut = Arc::clone(&self.net.cut);
        let rx = tokio_stream::wrappers::BroadcastStream::new(self.net.tx.subscribe());
        let out = rx.filter_map(move |m| match m {
            Ok((from, hb)) if from != me && !cut.load(Ordering::SeqCst) => Some(Ok(hb)),
            _ => None,
        });
        Ok(Response::new(Box::pin(out)))
    }
}
