//! The `tandem.sync.v1.Local` service, served on the `[sync] socket` Unix socket by the
//! admin API's tokio runtime. Semantics exactly as `syncd/src/localref.rs` documents them;
//! the lcores' side is [`super::lcore`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use prost::Message;
use std::net::Ipv4Addr;

use tandem_core::balance::owner;
use tandem_core::conn::{ConnFlags, ConnRecord};
use tandem_core::service::ServiceSet;
use tandem_proto::sync as pb;
use tandem_proto::sync::local_server::{Local, LocalServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use super::wire::{self, ApplyEntry};
use super::{HbFrame, LcoreMsg, Role, SyncCommand, SyncCounters, SyncOp, SyncWiring};
use crate::control::command::Command;
use crate::control::server::ControlHandle;
pub use tandem_proto::local::{locality_addr, locality_to_wire, map_locality, map_record};

/// Slab slots each lcore walks per housekeeping tick (1 ms) for a snapshot.
pub const WALK_SLOTS_PER_TICK: usize = 8192;
/// Largest snapshot chunk a watch may ask for.
pub const MAX_CHUNK: usize = 65_536;
/// Messages of one lcore's channel the pump takes per pass (then it goes to the next lcore).
const PUMP_PER_LCORE: usize = 4096;
/// How often the pump and the heartbeat relay look at their channels.
const POLL_EVERY: Duration = Duration::from_millis(1);
/// How long a worker may take to accept a command.
const WORKER_DEADLINE: Duration = Duration::from_secs(2);
/// Most operations in one command to a worker.
const OPS_PER_COMMAND: usize = 1024;
/// Messages queued towards syncd per stream.
const STREAM_QUEUE: usize = 256;

/// Everything the service needs, known once the workers exist.
#[derive(Debug)]
pub struct LocalSetup {
    /// The channels with the workers.
    pub wiring: SyncWiring,
    /// Each worker's control inbox.
    pub workers: Vec<Sender<Command>>,
    /// The control thread (for the running services).
    pub control: ControlHandle,
}

#[derive(Debug)]
struct Inner {
    setup: LocalSetup,
    next_watch: AtomicU64,
    current_watch: AtomicU64,
    /// Only one pump reads the lcore channels at a time.
    pump: tokio::sync::Mutex<()>,
    heartbeat_streams: AtomicU64,
}

/// The service (cheap to clone).
#[derive(Debug, Clone)]
pub struct LocalService {
    inner: Arc<Inner>,
}

fn counters(i: &Inner) -> &SyncCounters {
    &i.setup.wiring.state.counters
}

impl LocalService {
    /// The service over `setup`.
    pub fn new(setup: LocalSetup) -> LocalService {
        LocalService {
            inner: Arc::new(Inner {
                setup,
                next_watch: AtomicU64::new(0),
                current_watch: AtomicU64::new(0),
                pump: tokio::sync::Mutex::new(()),
                heartbeat_streams: AtomicU64::new(0),
            }),
        }
    }
}

/// Sends `cmd` to worker `w`, waiting (asynchronously) while its inbox is full.
async fn to_worker(i: &Inner, w: usize, cmd: SyncCommand) -> Result<(), Status> {
    let tx = i
        .setup
        .workers
        .get(w)
        .ok_or_else(|| Status::internal(format!("no worker {w}")))?;
    let mut cmd = Command::Sync(cmd);
    let deadline = tokio::time::Instant::now() + WORKER_DEADLINE;
    loop {
        match tx.try_send(cmd) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(c)) if tokio::time::Instant::now() < deadline => {
                cmd = c;
                tokio::time::sleep(POLL_EVERY).await;
            }
            Err(TrySendError::Full(_)) => {
                return Err(Status::unavailable(format!(
                    "worker {w} did not take a sync command within {WORKER_DEADLINE:?}"
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Status::unavailable("the dataplane is stopping"));
            }
        }
    }
}

/// Queues `msg` for syncd; `false` if the stream is gone or watch `id` was superseded.
async fn push(
    i: &Inner,
    tx: &mpsc::Sender<Result<pb::LocalEvents, Status>>,
    id: u64,
    msg: pb::local_events::Msg,
) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_millis(50), tx.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(Ok(pb::LocalEvents { msg: Some(msg) }));
                return true;
            }
            Ok(Err(_)) => return false,
            Err(_) if i.current_watch.load(Ordering::Acquire) != id => return false,
            Err(_) => {}
        }
    }
}

/// Pushes the events gathered in `batch`, if any, leaving it empty; false when syncd has
/// gone (as [`push`]).
async fn push_events(
    i: &Inner,
    tx: &mpsc::Sender<Result<pb::LocalEvents, Status>>,
    id: u64,
    batch: &mut Vec<pb::LocalEvent>,
) -> bool {
    if batch.is_empty() {
        return true;
    }
    let events = std::mem::take(batch);
    push(
        i,
        tx,
        id,
        pb::local_events::Msg::Events(pb::LocalEventBatch { events }),
    )
    .await
}

/// Watch `id`: snapshot begin, the lcores' walks and events, snapshot end, then events, until
/// syncd goes away or a newer watch begins.
async fn pump(
    i: Arc<Inner>,
    id: u64,
    chunk: usize,
    tx: mpsc::Sender<Result<pb::LocalEvents, Status>>,
) {
    use pb::local_events::Msg;
    let _guard = i.pump.lock().await;
    if i.current_watch.load(Ordering::Acquire) != id {
        return;
    }
    let workers = i.setup.workers.len();
    if !push(
        &i,
        &tx,
        id,
        Msg::SnapshotBegin(pb::SnapshotBegin { snapshot_id: id }),
    )
    .await
    {
        return;
    }
    for w in 0..workers {
        if let Err(e) = to_worker(
            &i,
            w,
            SyncCommand::Watch {
                watch: id,
                chunk_slots: WALK_SLOTS_PER_TICK,
            },
        )
        .await
        {
            let _ = tx.send(Err(e)).await;
            return;
        }
    }
    let mut done = vec![false; workers];
    let mut ended = false;
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'watch: loop {
        tick.tick().await;
        if i.current_watch.load(Ordering::Acquire) != id || tx.is_closed() {
            break;
        }
        let mut batch = Vec::new();
        for (lcore, rx) in i.setup.wiring.lcore_rx.iter().enumerate() {
            let lcore_u32 = u32::try_from(lcore).unwrap_or(u32::MAX);
            for _ in 0..PUMP_PER_LCORE {
                let Ok(m) = rx.try_recv() else { break };
                match m {
                    LcoreMsg::Event { watch, event } if watch == id => {
                        batch.push(wire::local_event_to(lcore_u32, &event));
                    }
                    LcoreMsg::Head { watch, last_seq } if watch == id => {
                        batch.push(wire::local_head_to(lcore_u32, last_seq));
                    }
                    LcoreMsg::Locality {
                        watch,
                        seq,
                        entry,
                        set,
                    } if watch == id => {
                        batch.push(wire::local_locality_to(lcore_u32, seq, &entry, set));
                    }
                    LcoreMsg::LocalityChunk { watch, entries } if watch == id => {
                        // This lcore's earlier events go first.
                        if !push_events(&i, &tx, id, &mut batch).await {
                            break 'watch;
                        }
                        for part in entries.chunks(chunk) {
                            let msg = Msg::SnapshotChunk(pb::SnapshotChunk {
                                conns: Vec::new(),
                                locality: part.iter().map(wire::locality_to).collect(),
                            });
                            if !push(&i, &tx, id, msg).await {
                                break 'watch;
                            }
                        }
                    }
                    LcoreMsg::Chunk { watch, records } if watch == id => {
                        // This lcore's earlier events go first.
                        if !push_events(&i, &tx, id, &mut batch).await {
                            break 'watch;
                        }
                        for part in records.chunks(chunk) {
                            let conns = part.iter().map(wire::record_to).collect();
                            let msg = Msg::SnapshotChunk(pb::SnapshotChunk {
                                conns,
                                locality: Vec::new(),
                            });
                            if !push(&i, &tx, id, msg).await {
                                break 'watch;
                            }
                        }
                    }
                    LcoreMsg::WalkDone { watch } if watch == id => {
                        if let Some(d) = done.get_mut(lcore) {
                            *d = true;
                        }
                    }
                    // A message of an older watch.
                    _ => {}
                }
            }
        }
        if !push_events(&i, &tx, id, &mut batch).await {
            break;
        }
        if !ended && done.iter().all(|d| *d) {
            ended = true;
            if !push(
                &i,
                &tx,
                id,
                Msg::SnapshotEnd(pb::SnapshotEnd { snapshot_id: id }),
            )
            .await
            {
                break;
            }
        }
    }
    if i.current_watch
        .compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        for w in 0..workers {
            let _ = to_worker(&i, w, SyncCommand::Unwatch { watch: id }).await;
        }
    }
}

/// The workers a template of service `svc` goes to: the owner of its client when the
/// service's persistence groups single addresses (a template and its client's connections
/// then live on one lcore), every worker when its netmask groups several (their clients may
/// land on any).
fn template_workers(set: &ServiceSet, rec: &ConnRecord, workers: usize) -> std::ops::Range<usize> {
    let single = set
        .service(rec.service)
        .and_then(|s| s.persistence)
        .is_none_or(|p| p.netmask == Ipv4Addr::BROADCAST);
    if single {
        let w = owner(rec.client, workers);
        w..w + 1
    } else {
        0..workers
    }
}

type Out<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Local for LocalService {
    type WatchConnectionsStream = Out<pb::LocalEvents>;
    type ExchangeHeartbeatsStream = Out<pb::HeartbeatMessage>;

    async fn watch_connections(
        &self,
        req: Request<pb::WatchConnectionsRequest>,
    ) -> Result<Response<Self::WatchConnectionsStream>, Status> {
        let chunk = usize::try_from(req.get_ref().chunk)
            .unwrap_or(MAX_CHUNK)
            .clamp(1, MAX_CHUNK);
        let i = Arc::clone(&self.inner);
        let id = i.next_watch.fetch_add(1, Ordering::AcqRel) + 1;
        SyncCounters::add(&counters(&i).watches, 1);
        // From now on the previous watch's pump stops and gives the channels up.
        i.current_watch.store(id, Ordering::Release);
        info!(
            watch = id,
            chunk, "sync: watch of the connection table begins"
        );
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(pump(i, id, chunk, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn apply_connections(
        &self,
        req: Request<Streaming<pb::ApplyRequest>>,
    ) -> Result<Response<pb::ApplySummary>, Status> {
        let i = &self.inner;
        let c = counters(i);
        let before = (
            SyncCounters::get(&c.applied),
            SyncCounters::get(&c.refused),
            SyncCounters::get(&c.swept),
        );
        let workers = i.setup.workers.len().max(1);
        let mut stream = req.into_inner();
        let mut failure = None;
        while let Some(r) = stream.next().await {
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            let set = i.setup.control.services().await?;
            let mut ops: Vec<Vec<SyncOp>> = vec![Vec::new(); workers];
            let mut refused = 0u64;
            for e in &r.entries {
                match wire::apply_entry_from(e) {
                    Ok(ApplyEntry::Upsert(rec)) => match map_record(&set, &rec) {
                        Some(rec) if rec.flags.contains(ConnFlags::TEMPLATE) => {
                            let ws = template_workers(&set, &rec, workers);
                            let first = ws.start;
                            for w in ws {
                                ops[w].push(SyncOp::InstallTemplate {
                                    rec,
                                    count: w == first,
                                });
                            }
                        }
                        Some(rec) => ops[owner(rec.client, workers)].push(SyncOp::Install(rec)),
                        None => refused += 1,
                    },
                    Ok(ApplyEntry::Remove(rec)) if rec.flags.contains(ConnFlags::TEMPLATE) => {
                        // Unknown here: nothing to remove.
                        if let Some(rec) = map_record(&set, &rec) {
                            let ws = template_workers(&set, &rec, workers);
                            let first = ws.start;
                            for w in ws {
                                ops[w].push(SyncOp::UninstallTemplate {
                                    rec,
                                    count: w == first,
                                });
                            }
                        }
                    }
                    Ok(ApplyEntry::Remove(rec)) => {
                        ops[owner(rec.client, workers)].push(SyncOp::Uninstall(rec));
                    }
                    // lblc/lblcr tables are per lcore and keyed by destination address,
                    // which any client may ask for: every worker gets the entry.
                    Ok(ApplyEntry::LocalitySet(l)) => match map_locality(&set, &l) {
                        Some((svc, entry)) => {
                            for (w, o) in ops.iter_mut().enumerate() {
                                o.push(SyncOp::InstallLocality {
                                    svc,
                                    entry,
                                    count: w == 0,
                                });
                            }
                        }
                        None => refused += 1,
                    },
                    Ok(ApplyEntry::LocalityRemoved(l)) => {
                        if let Some(svc) = set.lookup(l.proto, l.vip) {
                            for (w, o) in ops.iter_mut().enumerate() {
                                o.push(SyncOp::RemoveLocality {
                                    svc: svc.id,
                                    addr: l.dest_ip,
                                    count: w == 0,
                                });
                            }
                        }
                    }
                    Ok(ApplyEntry::SnapshotBegin) => {
                        ops.iter_mut().for_each(|o| o.push(SyncOp::Mark))
                    }
                    Ok(ApplyEntry::SnapshotEnd) => {
                        ops.iter_mut().for_each(|o| o.push(SyncOp::Sweep))
                    }
                    Err(e) => {
                        refused += 1;
                        warn!("sync: apply entry refused: {e}");
                    }
                }
            }
            SyncCounters::add(&c.refused, refused);
            for (w, mut list) in ops.into_iter().enumerate() {
                while !list.is_empty() {
                    let rest = list.split_off(list.len().min(OPS_PER_COMMAND));
                    to_worker(i, w, SyncCommand::Apply(list)).await?;
                    list = rest;
                }
            }
        }
        // Wait until every worker has applied what it was sent, for an exact summary.
        let (btx, brx) = crossbeam_channel::bounded(workers);
        for w in 0..i.setup.workers.len() {
            to_worker(i, w, SyncCommand::Barrier(btx.clone())).await?;
        }
        let deadline = tokio::time::Instant::now() + WORKER_DEADLINE;
        let mut answered = 0;
        while answered < i.setup.workers.len() && tokio::time::Instant::now() < deadline {
            match brx.try_recv() {
                Ok(()) => answered += 1,
                Err(_) => tokio::time::sleep(POLL_EVERY).await,
            }
        }
        let summary = pb::ApplySummary {
            applied: SyncCounters::get(&c.applied).saturating_sub(before.0),
            refused: SyncCounters::get(&c.refused).saturating_sub(before.1),
            swept: SyncCounters::get(&c.swept).saturating_sub(before.2),
        };
        info!(
            applied = summary.applied,
            refused = summary.refused,
            swept = summary.swept,
            "sync: apply stream ended"
        );
        match failure {
            Some(e) => Err(e),
            None => Ok(Response::new(summary)),
        }
    }

    async fn set_role(
        &self,
        req: Request<pb::SetRoleRequest>,
    ) -> Result<Response<pb::SetRoleResponse>, Status> {
        let asked = pb::Role::try_from(req.get_ref().role)
            .ok()
            .filter(|r| *r != pb::Role::Unspecified)
            .ok_or_else(|| Status::invalid_argument("role: unspecified or unknown"))?;
        let state = &self.inner.setup.wiring.state;
        SyncCounters::add(&state.counters.set_roles, 1);
        let want = if asked == pb::Role::Active {
            Role::Active
        } else {
            Role::Standby
        };
        let before = state.role();
        let now = state.set_role(want);
        if now != before {
            info!(
                from = before.name(),
                to = now.name(),
                ?asked,
                "sync: role changed by syncd"
            );
        }
        let role = match now {
            Role::Active | Role::Standalone => pb::Role::Active,
            Role::Standby => asked,
        };
        Ok(Response::new(pb::SetRoleResponse { role: role as i32 }))
    }

    async fn report_status(
        &self,
        req: Request<pb::SyncReport>,
    ) -> Result<Response<pb::ReportStatusResponse>, Status> {
        let report = req.into_inner();
        let state = &self.inner.setup.wiring.state;
        if report.role == pb::Role::Unspecified as i32 {
            info!(pid = report.pid, "sync: syncd reports it is stopping");
        }
        state.report.store(report, std::time::Instant::now());
        Ok(Response::new(pb::ReportStatusResponse {}))
    }

    async fn exchange_heartbeats(
        &self,
        req: Request<Streaming<pb::HeartbeatMessage>>,
    ) -> Result<Response<Self::ExchangeHeartbeatsStream>, Status> {
        // Ports without link: the director cannot serve, so syncd must see its dataplane down
        // (its role machine goes to `Fault`, which the peer takes over from at once).
        if self.inner.setup.wiring.state.ports_down() {
            return Err(Status::unavailable(
                "the service ports are down (no carrier)",
            ));
        }
        let mut inbound = req.into_inner();
        let i = Arc::clone(&self.inner);
        i.heartbeat_streams.fetch_add(1, Ordering::AcqRel);
        let relay = Arc::clone(&i);
        tokio::spawn(async move {
            let w = &relay.setup.wiring;
            while let Some(Ok(hb)) = inbound.next().await {
                let sent = HbFrame::new(&hb.encode_to_vec())
                    .is_some_and(|f| w.hb_out.0.try_send(f).is_ok());
                if !sent {
                    SyncCounters::add(&w.state.counters.heartbeats_unsent, 1);
                }
            }
            // syncd is gone: a director without its syncd gives the addresses up at once.
            if relay.heartbeat_streams.fetch_sub(1, Ordering::AcqRel) == 1 {
                let before = w.state.role();
                w.state.set_role(Role::Standby);
                if before == Role::Active {
                    warn!("sync: syncd's heartbeat stream ended: standing down (standby)");
                }
            }
        });
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(async move {
            let w = &i.setup.wiring;
            let mut tick = tokio::time::interval(POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !tx.is_closed() {
                tick.tick().await;
                if w.state.ports_down() {
                    warn!(
                        "sync: the service ports lost their link: ending syncd's heartbeat stream"
                    );
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "the service ports are down (no carrier)",
                        )))
                        .await;
                    break;
                }
                while let Ok(f) = w.hb_in.1.try_recv() {
                    match pb::HeartbeatMessage::decode(f.data()) {
                        Ok(hb) => {
                            if tx.try_send(Ok(hb)).is_err() {
                                SyncCounters::add(&w.state.counters.heartbeats_dropped, 1);
                            }
                        }
                        Err(_) => SyncCounters::add(&w.state.counters.heartbeats_dropped, 1),
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Binds the `Local` service's Unix socket: its directory is created, a stale socket is
/// replaced, a live one is an error; mode 0600.
pub fn bind(path: &str) -> Result<std::os::unix::net::UnixListener, String> {
    use std::os::unix::fs::PermissionsExt;
    let p = PathBuf::from(path);
    let err = |e: std::io::Error| format!("sync socket {path}: {e}");
    if let Some(dir) = p.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if std::fs::symlink_metadata(&p).is_ok() {
        if std::os::unix::net::UnixStream::connect(&p).is_ok() {
            return Err(format!("sync socket {path} is in use by another process"));
        }
        std::fs::remove_file(&p).map_err(err)?;
    }
    let l = std::os::unix::net::UnixListener::bind(&p).map_err(err)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    Ok(l)
}

/// Serves `Local` on `listener` until `shutdown` says so, then removes the socket.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    path: &Path,
    svc: LocalService,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    let l = tokio::net::UnixListener::from_std(listener).map_err(|e| e.to_string())?;
    info!(socket = %path.display(), "sync: Local service listening");
    let r = tonic::transport::Server::builder()
        .add_service(LocalServer::new(svc))
        .serve_with_incoming_shutdown(UnixListenerStream::new(l), async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    let _ = std::fs::remove_file(path);
    r.map_err(|e| format!("sync Local service: {e}"))
}
