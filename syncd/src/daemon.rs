//! The daemon: the sans-IO machines ([`RoleMachine`], [`Sender`], [`Receiver`]) driven by
//! tokio, the `Peer` service over mutual TLS on the sync link, and the local dataplane's
//! `Local` service.
//!
//! # Tasks
//! One **core** task owns the three machines and every counter; nothing else touches them.
//! Around it, one task per link, each talking to the core over bounded channels:
//! - the peer link's **TLS accept loop** and tonic server (`Peer.Replicate` as the sender
//!   when this director is active, `Peer.Heartbeat` inbound);
//! - the **heartbeat client** (our `Peer.Heartbeat` stream to the peer, reconnecting with
//!   backoff) and the **replication client** (our `Peer.Replicate` stream to the peer as the
//!   receiver, held while this director is not active);
//! - the local **heartbeat exchange** (`Local.ExchangeHeartbeats`: the service-network path;
//!   its state is the dataplane's health for the role machine), the **watch**
//!   (`Local.WatchConnections`, while active, feeding the sender), the **apply** stream
//!   (`Local.ApplyConnections`, what the receiver applies), and **set-role** (`Local.SetRole`,
//!   retried until the dataplane confirms).
//!
//! # Never waiting
//! The core never awaits a peer or the dataplane: batches go out with `try_send` only while
//! the link's queue has room (otherwise the sender's log grows, and overflows into a counted
//! resync); receiver feedback is cumulative, so a dropped ack is covered by the next; entries
//! for the dataplane that do not fit its queue are dropped, counted, and the receiver is
//! reset so that the sender resends a full snapshot (mark and sweep repairs the table).
//!
//! # Time
//! `now` for the machines is nanoseconds since the daemon started, from
//! `tokio::time::Instant`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tandem_proto::sync as pb;
use tandem_proto::sync::peer_client::PeerClient;
use tandem_proto::sync::peer_server::{Peer, PeerServer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::{BroadcastStream, ReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::local::LocalDataplane;
use crate::repl::{Change, Item, Receiver, Replica, Sender};
use crate::role::{Action, Path, RoleMachine, RoleState};
use crate::tls::TlsMaterial;
use crate::wire::{self, LocalMsg, PeerHeartbeat};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The TLS material is unusable.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The peer endpoint cannot be built.
    #[error("sync_link.peer: {0}")]
    Endpoint(String),
    /// The health checks' configuration or admin client is unusable.
    #[error("health checks: {0}")]
    Health(String),
}

/// The most bytes one gRPC message may have on the sync link (a batch of `max_batch`
/// records is far below).
const MAX_MESSAGE: usize = 64 << 20;
/// Batches queued towards the peer per link.
const LINK_QUEUE: usize = 64;
/// Apply requests queued towards the dataplane.
const APPLY_QUEUE: usize = 1024;
/// How often the core runs the machines when nothing arrives.
const TICK: Duration = Duration::from_millis(5);
/// A status report the dataplane does not take this fast is abandoned (the next replaces it).
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// TLS handshakes that take longer are abandoned.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(1)
}

/// An error and its sources on one line (rustls' reason is usually a source).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Exponential backoff between connection attempts.
#[derive(Debug, Clone)]
struct Backoff {
    min: Duration,
    max: Duration,
    cur: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, cur: min }
    }
    fn reset(&mut self) {
        self.cur = self.min;
    }
    fn next(&mut self) -> Duration {
        let d = self.cur;
        self.cur = (self.cur * 2).min(self.max);
        d
    }
}

// ---- messages to the core ------------------------------------------------------------------

type BatchTx = mpsc::Sender<Result<pb::EventBatch, Status>>;
type BatchRx = mpsc::Receiver<Result<pb::EventBatch, Status>>;

enum Ctl {
    /// The peer opened `Replicate` on our server: serve it if we are active.
    ReplicateOpen {
        from: Option<SocketAddr>,
        reply: oneshot::Sender<Result<(u64, BatchRx), Status>>,
    },
    /// Feedback on our sender link.
    Feedback { link: u64, msg: pb::ReceiverMessage },
    /// Our sender link ended.
    ReplicateClosed { link: u64, why: String },
    /// Our receiver link (client) is up.
    ReceiverUp {
        link: u64,
        tx: mpsc::Sender<pb::ReceiverMessage>,
    },
    /// Our receiver link ended.
    ReceiverDown { link: u64, why: String },
    /// A link changed state (for logs and the status).
    Link {
        which: LinkKind,
        up: bool,
        detail: String,
    },
    /// The watch of generation `gen` ended (events may be lost).
    WatchEnded { generation: u64, why: String },
    /// The apply stream broke (entries may be lost).
    ApplyBroken { why: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkKind {
    /// Our heartbeat stream to the peer.
    PeerHeartbeat,
    /// The local dataplane's heartbeat exchange (its health).
    Local,
}

// ---- the Peer service --------------------------------------------------------------------

#[derive(Clone)]
struct PeerSvc {
    ctl: mpsc::Sender<Ctl>,
    hb_in: mpsc::Sender<(Path, pb::HeartbeatMessage)>,
    hb_out: broadcast::Sender<pb::HeartbeatMessage>,
}

type HbStream = Pin<Box<dyn Stream<Item = Result<pb::HeartbeatMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Peer for PeerSvc {
    type ReplicateStream = ReceiverStream<Result<pb::EventBatch, Status>>;
    type HeartbeatStream = HbStream;

    async fn replicate(
        &self,
        req: Request<Streaming<pb::ReceiverMessage>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let from = req.remote_addr();
        let (reply, answer) = oneshot::channel();
        self.ctl
            .send(Ctl::ReplicateOpen { from, reply })
            .await
            .map_err(|_| Status::unavailable("shutting down"))?;
        let (link, rx) = answer
            .await
            .map_err(|_| Status::unavailable("shutting down"))??;
        let mut inbound = req.into_inner();
        let ctl = self.ctl.clone();
        tokio::spawn(async move {
            let why = loop {
                match inbound.next().await {
                    Some(Ok(msg)) => {
                        if ctl.send(Ctl::Feedback { link, msg }).await.is_err() {
                            break "shutting down".to_string();
                        }
                    }
                    Some(Err(e)) => break e.message().to_string(),
                    None => break "closed by the peer".to_string(),
                }
            };
            let _ = ctl.send(Ctl::ReplicateClosed { link, why }).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn heartbeat(
        &self,
        req: Request<Streaming<pb::HeartbeatMessage>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let from = req.remote_addr();
        info!(peer = ?from, "sync link: peer's heartbeat stream opened");
        let mut inbound = req.into_inner();
        let hb_in = self.hb_in.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = inbound.next().await {
                if hb_in.send((Path::SyncLink, m)).await.is_err() {
                    return;
                }
            }
            info!(peer = ?from, "sync link: peer's heartbeat stream closed");
        });
        let out = BroadcastStream::new(self.hb_out.subscribe()).filter_map(|r| r.ok().map(Ok));
        Ok(Response::new(Box::pin(out)))
    }
}

/// Accepts TCP connections, does the TLS handshake (refusals are logged with the peer's
/// address and rustls' reason) and hands the authenticated streams to tonic.
/// Each connection is authenticated with the acceptor in force when it arrives (a TLS
/// reload replaces it; connections already up are not touched).
async fn accept_loop(
    listener: TcpListener,
    acceptors: watch::Receiver<tokio_rustls::TlsAcceptor>,
    out: mpsc::Sender<Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>>,
) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "sync link: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptors.borrow().clone();
        let out = out.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    debug!(peer = %addr, "sync link: peer authenticated");
                    let _ = out.send(Ok(tls)).await;
                }
                Ok(Err(e)) => warn!(
                    peer = %addr,
                    reason = %chain(&e),
                    "sync link: connection refused: TLS authentication failed"
                ),
                Err(_) => {
                    warn!(peer = %addr, "sync link: connection refused: TLS handshake timed out")
                }
            }
        });
    }
}

// ---- the receiver's replica: entries for ApplyConnections ---------------------------------

/// The receiver's [`Replica`] in the daemon: it does not hold the table, it queues what to
/// apply as `ApplyConnections` entries (snapshot begin/end pass through; the dataplane does
/// the mark and sweep, and reports what it swept in its summary, so `end_snapshot` returns 0).
#[derive(Debug, Default)]
struct ApplyBuffer {
    entries: Vec<pb::Entry>,
    snapshot: u64,
}

impl Replica for ApplyBuffer {
    fn apply(&mut self, change: &Change, _now: u64) {
        self.entries.push(wire::change_to_entry(change));
    }
    fn begin_snapshot(&mut self) {
        self.snapshot += 1;
        self.entries
            .push(wire::item_to(&Item::SnapshotBegin { id: self.snapshot }));
    }
    fn end_snapshot(&mut self, _now: u64) -> usize {
        self.entries
            .push(wire::item_to(&Item::SnapshotEnd { id: self.snapshot }));
        0
    }
}

// ---- the core ---------------------------------------------------------------------------------

/// Counters of the daemon itself (the machines have their own).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    malformed_batches: u64,
    malformed_feedback: u64,
    malformed_heartbeats: u64,
    malformed_local: u64,
    apply_dropped_entries: u64,
    apply_resets: u64,
    watch_opens: u64,
    watch_lost: u64,
    sender_links: u64,
    receiver_links: u64,
}

struct Core {
    cfg: Config,
    base: Instant,
    role: RoleMachine,
    sender: Option<Sender>,
    last_epoch: u64,
    receiver: Receiver,
    apply: ApplyBuffer,
    sender_link: Option<(u64, BatchTx, Option<SocketAddr>)>,
    /// The receiver on `sender_link` reads packed entries (its last resume request said so).
    sender_packed: bool,
    receiver_link: Option<(u64, mpsc::Sender<pb::ReceiverMessage>)>,
    next_link: u64,
    want_receiver: watch::Sender<bool>,
    dp_role: watch::Sender<Option<pb::Role>>,
    hb_out: broadcast::Sender<pb::HeartbeatMessage>,
    watch_want: watch::Sender<Option<u64>>,
    watch_gen: u64,
    watch_serves: Option<u64>,
    apply_tx: mpsc::Sender<Vec<pb::Entry>>,
    sync_newest: (u64, u64),
    peer_last: Option<PeerHeartbeat>,
    last_state: RoleState,
    /// Whether the peer's heartbeats came by both paths, and since when (None: peer never
    /// heard); and what the log last said of it (a change is logged once it has held for a
    /// dead interval, so the start, one path answering before the other, logs nothing).
    paths_seen: Option<(bool, u64)>,
    paths_logged: Option<bool>,
    peer_hb_up: bool,
    local_up: Option<bool>,
    c: Counters,
    /// Whether this director is active, for the health checks (only the active reports
    /// verdicts to its dataplane).
    active_tx: watch::Sender<bool>,
    /// The health checks' status (`null` without checks).
    health: watch::Receiver<serde_json::Value>,
}

impl Core {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn step(&mut self) {
        let now = self.now();
        let complete = self.receiver.sync_complete(now);
        self.role.set_sync_complete(complete, now);
        self.role.tick(now);
        if let Some(hb) = self.role.poll_heartbeat(now) {
            let (epoch, sequence) = match &self.sender {
                Some(s) => (s.epoch(), s.head_seq()),
                None => (self.receiver.epoch(), self.receiver.applied()),
            };
            let _ = self.hb_out.send(wire::heartbeat_to(&PeerHeartbeat {
                hb,
                epoch,
                sequence,
            }));
        }
        self.log_paths(now);
        let state = self.role.state();
        if state != self.last_state {
            let (reason, _) = self.role.reason();
            let peer = self.role.peer().map(|p| p.last);
            info!(
                from = ?self.last_state,
                to = ?state,
                ?reason,
                peer_state = ?peer.map(|p| p.state),
                peer_node = ?peer.map(|p| p.node_id),
                "role changed"
            );
            self.last_state = state;
            self.active_tx.send_replace(state.is_active());
        }
        while let Some(a) = self.role.poll_action() {
            self.act(a, now);
        }
        self.pump_sender(now);
        self.pump_receiver(now);
    }

    /// Applies a reloaded file's role settings (priority, preemption, timers) and the
    /// replication timers that follow the heartbeat interval, or logs why not.
    fn reload_settings(&mut self, new: &Config) {
        let now = self.now();
        let cfg = new.role();
        if *self.role.config() == cfg {
            return;
        }
        let (priority, preempt) = (cfg.priority, cfg.preempt);
        match self.role.reconfigure(cfg, now) {
            Ok(()) => {
                self.cfg.node.priority = new.node.priority;
                self.cfg.node.preempt = new.node.preempt;
                self.cfg.heartbeat = new.heartbeat.clone();
                self.receiver
                    .set_stale_after(self.cfg.receiver().stale_after);
                if let Some(s) = self.sender.as_mut() {
                    s.set_idle_interval(self.cfg.sender().idle_interval);
                }
                let r = self.role.config();
                info!(
                    priority,
                    preempt,
                    interval_ms = r.interval.as_millis(),
                    dead_interval_ms = r.dead_interval().as_millis(),
                    dead_interval_one_path_ms = r.dead_interval_one_path().as_millis(),
                    role = ?self.role.state(),
                    "SIGHUP: role settings in effect"
                );
            }
            Err(e) => error!(error = %e, "SIGHUP: role settings refused, those in force stay"),
        }
    }

    /// The dead interval in force, ms (the one-path one while the peer is heard on one path).
    fn dead_interval_ms(&self) -> u64 {
        u64::try_from(self.role.dead_interval_now().as_millis()).unwrap_or(u64::MAX)
    }

    /// Logs a change between "peer heard on both paths" and "on one path only" (the one-path
    /// dead interval in effect) once it has held for a dead interval.
    fn log_paths(&mut self, now: u64) {
        let Some(peer) = self.role.peer() else {
            return;
        };
        let both = self.role.both_paths_working();
        let since = match self.paths_seen {
            Some((b, t)) if b == both => t,
            _ => now,
        };
        self.paths_seen = Some((both, since));
        let held = Duration::from_nanos(now.saturating_sub(since));
        if held < self.role.config().dead_interval() || self.paths_logged == Some(both) {
            return;
        }
        let dead_ms = self.dead_interval_ms();
        if both {
            if self.paths_logged.is_some() {
                info!(dead_interval_ms = dead_ms, "peer heard on both paths again");
            }
        } else {
            let ago = |i: usize| {
                peer.heard
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|t| now.saturating_sub(t) / 1_000_000)
            };
            warn!(
                dead_interval_ms = dead_ms,
                sync_link_heard_ms_ago = ?ago(0),
                service_heard_ms_ago = ?ago(1),
                "peer heard on one path only: the one-path dead interval is in effect, so \
                 that a stall of the last path is not taken for the peer's death"
            );
        }
        self.paths_logged = Some(both);
    }

    fn act(&mut self, a: Action, now: u64) {
        match a {
            Action::Activate => {
                info!(
                    "activating: dataplane ordered ACTIVE (gratuitous ARP), streaming the table to the peer"
                );
                self.dp_role.send_replace(Some(pb::Role::Active));
                self.want_receiver.send_replace(false);
                self.receiver_link = None;
                self.receiver.disconnected();
                self.receiver.reset();
                let epoch = unix_nanos().max(self.last_epoch + 1);
                self.last_epoch = epoch;
                let mut s = Sender::new(self.cfg.sender(), epoch);
                s.local_restarted(now);
                self.sender = Some(s);
                self.sync_watch();
            }
            Action::Deactivate => {
                info!("deactivating: dataplane ordered STANDBY, receiving the peer's table");
                self.dp_role.send_replace(Some(pb::Role::Standby));
                self.sender = None;
                self.sender_link = None;
                self.watch_serves = None;
                self.watch_want.send_replace(None);
                self.want_receiver.send_replace(true);
            }
        }
    }

    /// Keeps the local watch in step with the sender: a snapshot in progress that the open
    /// watch does not serve needs a fresh watch (whose own snapshot then feeds it).
    fn sync_watch(&mut self) {
        let Some(s) = self.sender.as_mut() else {
            return;
        };
        let feeding = s.feeding_snapshot();
        let reopen = match feeding {
            Some(id) => self.watch_serves != Some(id),
            None => self.watch_want.borrow().is_none(),
        };
        if reopen {
            self.watch_gen += 1;
            self.watch_serves = feeding;
            s.forget_lcores();
            self.c.watch_opens += 1;
            debug!(generation = self.watch_gen, snapshot = ?feeding, "local watch (re)opened");
            self.watch_want.send_replace(Some(self.watch_gen));
        }
    }

    fn pump_sender(&mut self, now: u64) {
        let packed = self.sender_packed;
        let (Some(s), Some((link, tx, _))) = (self.sender.as_mut(), self.sender_link.as_ref())
        else {
            return;
        };
        while tx.capacity() > 0 {
            let Some(b) = s.poll_transmit(now) else {
                break;
            };
            let msg = if packed {
                wire::batch_to_packed(&b)
            } else {
                wire::batch_to(&b)
            };
            if tx.try_send(Ok(msg)).is_err() {
                info!(link, "replication: peer link gone");
                s.disconnected();
                self.sender_link = None;
                break;
            }
        }
    }

    fn pump_receiver(&mut self, now: u64) {
        let Some((_, tx)) = self.receiver_link.as_ref() else {
            return;
        };
        while let Some(fb) = self.receiver.poll_transmit(now) {
            // A full queue drops the message: acks are cumulative and resumes are repeated.
            let _ = tx.try_send(wire::feedback_to(&fb));
        }
    }

    fn on_heartbeat(&mut self, path: Path, m: &pb::HeartbeatMessage) {
        let now = self.now();
        let ph = match wire::heartbeat_from(m) {
            Ok(h) => h,
            Err(e) => {
                self.c.malformed_heartbeats += 1;
                debug!(?path, error = %e, "malformed heartbeat dropped");
                return;
            }
        };
        if path == Path::SyncLink {
            // The same heartbeats arrive on both directions of the sync link.
            let id = (ph.hb.incarnation, ph.hb.seq);
            if id <= self.sync_newest {
                return;
            }
            self.sync_newest = id;
        }
        self.peer_last = Some(ph);
        self.role.handle_heartbeat(path, &ph.hb, now);
    }

    fn on_batch(&mut self, link: u64, b: &pb::EventBatch) {
        if self.receiver_link.as_ref().map(|l| l.0) != Some(link) {
            return;
        }
        let now = self.now();
        let batch = match wire::batch_from(b) {
            Ok(b) => b,
            Err(e) => {
                self.c.malformed_batches += 1;
                warn!(error = %e, "replication: malformed batch dropped");
                return;
            }
        };
        self.receiver.handle(&batch, now, &mut self.apply);
        self.flush_apply();
    }

    fn flush_apply(&mut self) {
        if self.apply.entries.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut self.apply.entries);
        let n = entries.len() as u64;
        if self.apply_tx.try_send(entries).is_err() {
            self.c.apply_dropped_entries += n;
            self.reset_receiver("the dataplane's apply queue is full");
        }
    }

    fn reset_receiver(&mut self, why: &str) {
        self.c.apply_resets += 1;
        warn!(
            why,
            "replication: local copy incomplete, asking the peer for a full resync"
        );
        self.receiver.reset();
        self.apply.entries.clear();
    }

    fn on_local(&mut self, generation: u64, m: &pb::LocalEvents) {
        if generation != self.watch_gen {
            return;
        }
        let now = self.now();
        let serves = self.watch_serves;
        let Some(s) = self.sender.as_mut() else {
            return;
        };
        match wire::local_from(m) {
            Err(e) => {
                self.c.malformed_local += 1;
                warn!(error = %e, "local watch: malformed message, resyncing");
                s.local_restarted(now);
            }
            Ok(LocalMsg::SnapshotBegin(_)) => {}
            Ok(LocalMsg::SnapshotChunk(records)) => {
                if let Some(id) = serves {
                    s.snapshot_chunk(id, &records, false, now);
                }
            }
            Ok(LocalMsg::SnapshotEnd(_)) => {
                if let Some(id) = serves {
                    s.snapshot_chunk(id, &[], true, now);
                }
            }
            Ok(LocalMsg::Events(evs)) => {
                for (lcore, item) in &evs {
                    s.push_lcore(*lcore, item, now);
                }
            }
            Ok(LocalMsg::Locality(c)) => s.push_change(c, now),
        }
        self.sync_watch();
    }

    fn on_ctl(&mut self, c: Ctl) {
        let now = self.now();
        match c {
            Ctl::ReplicateOpen { from, reply } => {
                let Some(s) = self.sender.as_mut() else {
                    let _ = reply.send(Err(Status::failed_precondition("not the active director")));
                    return;
                };
                let (tx, rx) = mpsc::channel(LINK_QUEUE);
                self.next_link += 1;
                let link = self.next_link;
                if self.sender_link.is_some() {
                    s.disconnected();
                }
                s.connected(now);
                self.c.sender_links += 1;
                info!(link, peer = ?from, epoch = s.epoch(), "replication: peer connected, sending");
                self.sender_link = Some((link, tx, from));
                // Entries until the receiver's resume request says it reads packed ones.
                self.sender_packed = false;
                let _ = reply.send(Ok((link, rx)));
            }
            Ctl::Feedback { link, msg } => {
                if self.sender_link.as_ref().map(|l| l.0) != Some(link) {
                    return;
                }
                let Some(s) = self.sender.as_mut() else {
                    return;
                };
                if let Some(packed) = wire::resume_accepts_packed(&msg) {
                    self.sender_packed = packed;
                }
                match wire::feedback_from(&msg) {
                    Ok(fb) => s.handle(fb, now),
                    Err(e) => {
                        self.c.malformed_feedback += 1;
                        warn!(error = %e, "replication: malformed feedback dropped");
                    }
                }
                self.sync_watch();
            }
            Ctl::ReplicateClosed { link, why } => {
                if self.sender_link.as_ref().map(|l| l.0) == Some(link) {
                    info!(link, why, "replication: peer disconnected");
                    self.sender_link = None;
                    if let Some(s) = self.sender.as_mut() {
                        s.disconnected();
                    }
                }
            }
            Ctl::ReceiverUp { link, tx } => {
                if self.sender.is_some() || !*self.want_receiver.borrow() {
                    return;
                }
                info!(link, "replication: connected to the active peer, receiving");
                self.c.receiver_links += 1;
                self.receiver.connected(now);
                self.receiver_link = Some((link, tx));
            }
            Ctl::ReceiverDown { link, why } => {
                if self.receiver_link.as_ref().map(|l| l.0) == Some(link) {
                    info!(link, why, "replication: receiving link down");
                    self.receiver_link = None;
                    self.receiver.disconnected();
                }
            }
            Ctl::Link { which, up, detail } => match which {
                LinkKind::PeerHeartbeat => {
                    if up != self.peer_hb_up {
                        if up {
                            info!(peer = %self.cfg.sync_link.peer, "sync link up");
                        } else {
                            warn!(peer = %self.cfg.sync_link.peer, reason = %detail, "sync link down");
                        }
                    }
                    self.peer_hb_up = up;
                }
                LinkKind::Local => {
                    if self.local_up != Some(up) {
                        if up {
                            info!(socket = %self.cfg.dataplane.socket.display(), "local dataplane link up");
                        } else {
                            warn!(socket = %self.cfg.dataplane.socket.display(), reason = %detail, "local dataplane link down");
                        }
                        self.local_up = Some(up);
                        self.role.set_dataplane_ok(up, now);
                    }
                }
            },
            Ctl::WatchEnded { generation, why } => {
                if generation == self.watch_gen
                    && let Some(s) = self.sender.as_mut()
                {
                    self.c.watch_lost += 1;
                    warn!(why, "local watch ended: events may be lost, resyncing");
                    s.local_restarted(now);
                    self.watch_serves = None;
                    self.sync_watch();
                }
            }
            Ctl::ApplyBroken { why } => {
                if self.sender.is_none() {
                    self.reset_receiver(&why);
                }
            }
        }
    }

    fn status(&self) -> serde_json::Value {
        let now = self.now();
        let (reason, since) = self.role.reason();
        let peer = self.role.peer();
        let rm = self.role.metrics();
        let ms = |t: u64| now.saturating_sub(t) / 1_000_000;
        let sender = self.sender.as_ref().map(|s| {
            let m = s.metrics(now);
            serde_json::json!({
                "epoch": m.epoch, "head_seq": m.head_seq, "last_sent": m.last_sent,
                "last_acked": m.last_acked, "lag_events": m.lag_events, "lag_ms": m.lag_ms,
                "queue_depth": m.queue_depth, "queue_bytes": m.queue_bytes,
                "snapshots": m.snapshots, "resyncs": m.resyncs,
                "overflow_drops": m.overflow_drops, "lcore_lost": m.lcore_lost,
                "lcore_stale": m.lcore_stale, "resumed": m.resumed,
                "retransmits": m.retransmits, "stray_feedback": m.stray_feedback,
                "connected": self.sender_link.is_some(),
                "peer": self.sender_link.as_ref().and_then(|l| l.2).map(|a| a.to_string()),
            })
        });
        let r = self.receiver.metrics(now);
        let c = &self.c;
        serde_json::json!({
            "node_id": self.cfg.node.id,
            "priority": self.role.config().priority,
            "pid": std::process::id(),
            "updated_unix_ms": unix_nanos() / 1_000_000,
            "role": format!("{:?}", self.role.state()),
            "role_reason": format!("{reason:?}"),
            "role_for_ms": ms(since),
            "peer": {
                "alive": self.role.peer_alive(now),
                "state": peer.map(|p| format!("{:?}", p.last.state)),
                "node_id": peer.map(|p| p.last.node_id),
                "priority": peer.map(|p| p.last.priority),
                "sync_complete": peer.map(|p| p.last.sync_complete),
                "heard_sync_link_ms_ago": peer.and_then(|p| p.heard[0]).map(ms),
                "heard_service_ms_ago": peer.and_then(|p| p.heard[1]).map(ms),
                "both_paths": peer.map(|_| self.role.both_paths_working()),
                "dead_interval_ms": self.dead_interval_ms(),
                "epoch": self.peer_last.map(|p| p.epoch),
                "sequence": self.peer_last.map(|p| p.sequence),
            },
            "links": {
                "sync_link": if self.peer_hb_up { "up" } else { "down" },
                "replication": if self.sender_link.is_some() { "sending" }
                    else if self.receiver_link.is_some() { "receiving" } else { "down" },
                "dataplane": match self.local_up { Some(true) => "up", Some(false) => "down", None => "unknown" },
            },
            "role_metrics": {
                "transitions": rm.transitions, "takeovers": rm.takeovers, "ignored": rm.ignored,
                "stalls": rm.stalls,
                "longest_silence_ms": {
                    "sync_link": rm.longest_silence[0] / 1_000_000,
                    "service": rm.longest_silence[1] / 1_000_000,
                    "both": rm.longest_silence[2] / 1_000_000,
                },
            },
            "sender": sender,
            "receiver": {
                "epoch": r.epoch, "applied": r.applied, "head_seen": r.head_seen,
                "lag_events": r.lag_events, "deltas": r.deltas,
                "snapshot_records": r.snapshot_records, "snapshots": r.snapshots,
                "duplicates": r.duplicates, "gaps": r.gaps, "resumes": r.resumes,
                "sync_complete": r.sync_complete,
            },
            "daemon": {
                "malformed_batches": c.malformed_batches,
                "malformed_feedback": c.malformed_feedback,
                "malformed_heartbeats": c.malformed_heartbeats,
                "malformed_local": c.malformed_local,
                "apply_dropped_entries": c.apply_dropped_entries,
                "apply_resets": c.apply_resets,
                "watch_opens": c.watch_opens,
                "watch_lost": c.watch_lost,
                "sender_links": c.sender_links,
                "receiver_links": c.receiver_links,
            },
            "health": self.health.borrow().clone(),
        })
    }
}

impl Core {
    /// The status for the dataplane (`Local.ReportStatus`): the status file's figures that
    /// `tandemctl status` and the metrics show.
    fn report(&self) -> pb::SyncReport {
        let now = self.now();
        let (reason, since) = self.role.reason();
        let peer = self.role.peer();
        let rm = self.role.metrics();
        let ms = |t: u64| now.saturating_sub(t) / 1_000_000;
        let heard = |i: usize| {
            peer.and_then(|p| p.heard.get(i).copied().flatten())
                .map_or(-1, |t| i64::try_from(ms(t)).unwrap_or(i64::MAX))
        };
        let r = self.receiver.metrics(now);
        let c = &self.c;
        let mut rep = pb::SyncReport {
            node_id: self.cfg.node.id,
            priority: self.role.config().priority.into(),
            role: wire::role_to(self.role.state()) as i32,
            reason: format!("{reason:?}"),
            role_for_ms: ms(since),
            pid: std::process::id(),
            interval_ms: self.cfg.daemon.status_interval_ms,
            peer_alive: self.role.peer_alive(now),
            peer_role: peer.map_or(pb::Role::Unspecified, |p| wire::role_to(p.last.state)) as i32,
            peer_node_id: peer.map_or(0, |p| p.last.node_id),
            peer_sync_complete: peer.is_some_and(|p| p.last.sync_complete),
            peer_heard_sync_link_ms_ago: heard(0),
            peer_heard_service_ms_ago: heard(1),
            // False until both paths have brought a heartbeat of the same peer.
            peer_both_paths: self.role.both_paths_working(),
            dead_interval_ms: self.dead_interval_ms(),
            longest_silence_ms: rm.longest_silence[2] / 1_000_000,
            stalls: rm.stalls,
            sync_link: if self.peer_hb_up { "up" } else { "down" }.into(),
            replication: if self.sender_link.is_some() {
                "sending"
            } else if self.receiver_link.is_some() {
                "receiving"
            } else {
                "down"
            }
            .into(),
            dataplane_link: match self.local_up {
                Some(true) => "up",
                Some(false) => "down",
                None => "unknown",
            }
            .into(),
            sync_complete: r.sync_complete,
            epoch: r.epoch,
            head_seq: r.head_seen,
            last_sent_seq: 0,
            last_acked_seq: r.applied,
            lag_events: r.lag_events,
            lag_ms: 0,
            queue_depth: 0,
            queue_bytes: 0,
            snapshots: r.snapshots,
            resyncs: 0,
            overflow_drops: 0,
            lcore_lost: 0,
            retransmits: 0,
            receiver_gaps: r.gaps,
            receiver_resumes: r.resumes,
            apply_dropped: c.apply_dropped_entries,
            apply_resets: c.apply_resets,
            malformed: c.malformed_batches
                + c.malformed_feedback
                + c.malformed_heartbeats
                + c.malformed_local,
            takeovers: rm.takeovers,
            transitions: rm.transitions,
        };
        if let Some(s) = self.sender.as_ref() {
            let m = s.metrics(now);
            rep.sync_complete = true;
            rep.epoch = m.epoch;
            rep.head_seq = m.head_seq;
            rep.last_sent_seq = m.last_sent;
            rep.last_acked_seq = m.last_acked;
            rep.lag_events = m.lag_events;
            rep.lag_ms = m.lag_ms;
            rep.queue_depth = m.queue_depth as u64;
            rep.queue_bytes = m.queue_bytes as u64;
            rep.snapshots = m.snapshots;
            rep.resyncs = m.resyncs;
            rep.overflow_drops = m.overflow_drops;
            rep.lcore_lost = m.lcore_lost;
            rep.retransmits = m.retransmits;
        }
        rep
    }
}

/// `Local.ReportStatus` with the newest report each time the core publishes one. A slow or
/// absent dataplane only delays this task (the core never waits for it); reports that pile
/// up meanwhile are replaced by the newest.
async fn report_task<L: LocalDataplane>(
    local: L,
    mut reports: watch::Receiver<Option<pb::SyncReport>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        tokio::select! {
            r = reports.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        let Some(rep) = reports.borrow_and_update().clone() else {
            continue;
        };
        match tokio::time::timeout(REPORT_TIMEOUT, local.report_status(rep)).await {
            Ok(Ok(())) => {
                if failing {
                    info!("status reports to the dataplane resumed");
                }
                failing = false;
            }
            Ok(Err(s)) => {
                if !failing {
                    debug!(
                        reason = s.message(),
                        "cannot report the status to the dataplane"
                    );
                }
                failing = true;
            }
            Err(_) => {
                if !failing {
                    debug!("reporting the status to the dataplane timed out");
                }
                failing = true;
            }
        }
    }
}

fn write_status(path: &std::path::Path, v: &serde_json::Value) {
    if path.as_os_str().is_empty() {
        return;
    }
    let tmp = path.with_extension("json.tmp");
    let text = match serde_json::to_vec_pretty(v) {
        Ok(t) => t,
        Err(e) => {
            warn!(error = %e, "status: cannot serialize");
            return;
        }
    };
    if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
        debug!(error = %e, file = %path.display(), "status: cannot write");
    }
}

// ---- link tasks -------------------------------------------------------------------------------

fn peer_endpoint(cfg: &Config, tls: &TlsMaterial) -> Result<Endpoint, DaemonError> {
    Endpoint::from_shared(format!("https://{}", cfg.sync_link.peer))
        .and_then(|e| e.tls_config(tls.tonic_client()))
        .map(|e| {
            e.connect_timeout(Duration::from_millis(cfg.sync_link.connect_timeout_ms))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true)
        })
        .map_err(|e| DaemonError::Endpoint(chain(&e)))
}

/// Applies each TLS material a reload hands over (already loaded and checked by
/// [`TlsMaterial::load`]): the server's acceptor and the clients' endpoint are replaced, so
/// the next connections in either direction use the new CA, certificate and peer name; links
/// already up stay as they are. A material whose configs cannot be built changes nothing.
async fn tls_reloads(
    cfg: Config,
    mut reloads: watch::Receiver<Option<TlsMaterial>>,
    acceptor: watch::Sender<tokio_rustls::TlsAcceptor>,
    endpoint: watch::Sender<Endpoint>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            r = reloads.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        let Some(tls) = reloads.borrow_and_update().clone() else {
            continue;
        };
        let built = tls
            .server_config()
            .map_err(DaemonError::from)
            .and_then(|server| Ok((server, peer_endpoint(&cfg, &tls)?)));
        match built {
            Ok((server, ep)) => {
                acceptor.send_replace(tokio_rustls::TlsAcceptor::from(server));
                endpoint.send_replace(ep);
                info!(
                    peer_name = %tls.peer_name,
                    "TLS reloaded: new connections of the sync link use it"
                );
            }
            Err(e) => {
                error!(error = %e, "TLS reload refused, the material in force stays")
            }
        }
    }
}

fn backoff(cfg: &Config) -> Backoff {
    Backoff::new(
        Duration::from_millis(cfg.sync_link.reconnect_min_ms),
        Duration::from_millis(cfg.sync_link.reconnect_max_ms),
    )
}

/// How long a stopping daemon leaves its heartbeat tasks to send its resignation.
const RESIGN_FLUSH: Duration = Duration::from_millis(50);

/// Sleeps, or returns `false` at shutdown.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// Our heartbeat stream to the peer, reconnecting with backoff (each connection with the
/// endpoint in force, see [`tls_reloads`]).
async fn heartbeat_client(
    eps: watch::Receiver<Endpoint>,
    mut bo: Backoff,
    hb_out: broadcast::Sender<pb::HeartbeatMessage>,
    hb_in: mpsc::Sender<(Path, pb::HeartbeatMessage)>,
    ctl: mpsc::Sender<Ctl>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let ep = eps.borrow().clone();
        let why = match ep.connect().await {
            Err(e) => chain(&e),
            Ok(ch) => {
                let mut client = PeerClient::new(ch)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE);
                let out = BroadcastStream::new(hb_out.subscribe()).filter_map(|r| r.ok());
                match client.heartbeat(out).await {
                    Err(s) => format!("Heartbeat refused: {}", s.message()),
                    Ok(resp) => {
                        bo.reset();
                        let _ = ctl
                            .send(Ctl::Link {
                                which: LinkKind::PeerHeartbeat,
                                up: true,
                                detail: String::new(),
                            })
                            .await;
                        let mut s = resp.into_inner();
                        loop {
                            tokio::select! {
                                m = s.next() => match m {
                                    Some(Ok(m)) => {
                                        if hb_in.send((Path::SyncLink, m)).await.is_err() {
                                            return;
                                        }
                                    }
                                    Some(Err(e)) => break chain(&e),
                                    None => break "closed by the peer".to_string(),
                                },
                                _ = stop.changed() => return,
                            }
                        }
                    }
                }
            }
        };
        let _ = ctl
            .send(Ctl::Link {
                which: LinkKind::PeerHeartbeat,
                up: false,
                detail: why,
            })
            .await;
        if !pause(bo.next(), &mut stop).await {
            return;
        }
    }
}

/// Our replication stream to the peer as the receiver, held while `want` is true (each
/// connection with the endpoint in force, see [`tls_reloads`]).
async fn replicate_client(
    eps: watch::Receiver<Endpoint>,
    mut bo: Backoff,
    mut want: watch::Receiver<bool>,
    batches: mpsc::Sender<(u64, pb::EventBatch)>,
    ctl: mpsc::Sender<Ctl>,
    mut stop: watch::Receiver<bool>,
) {
    let mut link = 0u64;
    loop {
        while !*want.borrow_and_update() {
            tokio::select! {
                r = want.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
        }
        let ep = eps.borrow().clone();
        let ch = match ep.connect().await {
            Ok(ch) => ch,
            Err(e) => {
                debug!(reason = %chain(&e), "replication: cannot connect to the peer");
                if !pause(bo.next(), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let mut client = PeerClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let (fb_tx, fb_rx) = mpsc::channel(LINK_QUEUE);
        link += 1;
        match client.replicate(ReceiverStream::new(fb_rx)).await {
            Err(s) => {
                debug!(code = ?s.code(), reason = s.message(), "replication: peer does not send");
            }
            Ok(resp) => {
                bo.reset();
                if ctl.send(Ctl::ReceiverUp { link, tx: fb_tx }).await.is_err() {
                    return;
                }
                let mut s = resp.into_inner();
                let why = loop {
                    tokio::select! {
                        m = s.next() => match m {
                            Some(Ok(b)) => {
                                if batches.send((link, b)).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(e)) => break e.message().to_string(),
                            None => break "closed by the peer".to_string(),
                        },
                        r = want.changed() => {
                            if r.is_err() { return }
                            if !*want.borrow() { break "this director became active".to_string() }
                        }
                        _ = stop.changed() => return,
                    }
                };
                let _ = ctl.send(Ctl::ReceiverDown { link, why }).await;
            }
        }
        if !pause(bo.next(), &mut stop).await {
            return;
        }
    }
}

/// The service-network heartbeat path through the dataplane; its state is the dataplane's
/// health.
async fn local_heartbeats<L: LocalDataplane>(
    local: L,
    mut bo: Backoff,
    hb_out: broadcast::Sender<pb::HeartbeatMessage>,
    hb_in: mpsc::Sender<(Path, pb::HeartbeatMessage)>,
    ctl: mpsc::Sender<Ctl>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (out_tx, out_rx) = mpsc::channel(16);
        let mut sub = hb_out.subscribe();
        let forward = tokio::spawn(async move {
            loop {
                match sub.recv().await {
                    Ok(m) => {
                        if out_tx.send(m).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let why = match local.exchange_heartbeats(ReceiverStream::new(out_rx)).await {
            Err(s) => format!("ExchangeHeartbeats: {}", s.message()),
            Ok(mut s) => {
                bo.reset();
                let _ = ctl
                    .send(Ctl::Link {
                        which: LinkKind::Local,
                        up: true,
                        detail: String::new(),
                    })
                    .await;
                loop {
                    tokio::select! {
                        m = s.next() => match m {
                            Some(Ok(m)) => {
                                if hb_in.send((Path::Service, m)).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(e)) => break format!("ExchangeHeartbeats: {}", e.message()),
                            None => break "ExchangeHeartbeats closed by the dataplane".to_string(),
                        },
                        _ = stop.changed() => return,
                    }
                }
            }
        };
        forward.abort();
        let _ = ctl
            .send(Ctl::Link {
                which: LinkKind::Local,
                up: false,
                detail: why,
            })
            .await;
        if !pause(bo.next(), &mut stop).await {
            return;
        }
    }
}

/// Orders the dataplane's role, retrying until it confirms the latest order.
async fn set_role_task<L: LocalDataplane>(
    local: L,
    mut bo: Backoff,
    mut want: watch::Receiver<Option<pb::Role>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let role = *want.borrow_and_update();
        if let Some(role) = role {
            match local.set_role(role).await {
                Ok(r) => {
                    info!(role = ?r, "dataplane role set");
                    bo.reset();
                }
                Err(s) => {
                    warn!(
                        ?role,
                        reason = s.message(),
                        "cannot set the dataplane's role, retrying"
                    );
                    if !pause(bo.next(), &mut stop).await {
                        return;
                    }
                    // Try again unless a newer order arrived (then that one).
                    want.mark_changed();
                }
            }
        }
        tokio::select! {
            r = want.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// `WatchConnections` while the core wants generation `g`: messages tagged with it.
async fn watch_task<L: LocalDataplane>(
    local: L,
    chunk: u32,
    mut bo: Backoff,
    mut want: watch::Receiver<Option<u64>>,
    out: mpsc::Sender<(u64, pb::LocalEvents)>,
    ctl: mpsc::Sender<Ctl>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let generation = *want.borrow_and_update();
        let Some(generation) = generation else {
            tokio::select! {
                r = want.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
            }
            continue;
        };
        let why = match local.watch_connections(chunk).await {
            Err(s) => format!("WatchConnections: {}", s.message()),
            Ok(mut s) => {
                bo.reset();
                loop {
                    tokio::select! {
                        m = s.next() => match m {
                            Some(Ok(m)) => {
                                if out.send((generation, m)).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(e)) => break format!("WatchConnections: {}", e.message()),
                            None => break "WatchConnections closed by the dataplane".to_string(),
                        },
                        r = want.changed() => {
                            if r.is_err() { return }
                            break String::new();
                        }
                        _ = stop.changed() => return,
                    }
                }
            }
        };
        if !why.is_empty() {
            let _ = ctl.send(Ctl::WatchEnded { generation, why }).await;
            if !pause(bo.next(), &mut stop).await {
                return;
            }
        }
    }
}

/// `ApplyConnections`: one long stream, reopened after a failure (the core then resyncs).
async fn apply_task<L: LocalDataplane>(
    local: L,
    mut bo: Backoff,
    mut entries: mpsc::Receiver<Vec<pb::Entry>>,
    ctl: mpsc::Sender<Ctl>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            e = entries.recv() => match e { Some(e) => e, None => return },
            _ = stop.changed() => return,
        };
        let (tx, rx) = mpsc::channel::<pb::ApplyRequest>(APPLY_QUEUE);
        let l = local.clone();
        let mut call =
            tokio::spawn(async move { l.apply_connections(ReceiverStream::new(rx)).await });
        let mut next = Some(first);
        let why = loop {
            if let Some(e) = next.take()
                && tx.send(pb::ApplyRequest { entries: e }).await.is_err()
            {
                break "ApplyConnections stream closed".to_string();
            }
            tokio::select! {
                e = entries.recv() => match e {
                    Some(e) => next = Some(e),
                    None => return,
                },
                r = &mut call => break match r {
                    Ok(Ok(sum)) => format!("ApplyConnections ended ({sum:?})"),
                    Ok(Err(s)) => format!("ApplyConnections: {}", s.message()),
                    Err(e) => format!("ApplyConnections task: {e}"),
                },
                _ = stop.changed() => return,
            }
        };
        call.abort();
        warn!(why, "local apply stream broke");
        let _ = ctl.send(Ctl::ApplyBroken { why }).await;
        if !pause(bo.next(), &mut stop).await {
            return;
        }
    }
}

// ---- run --------------------------------------------------------------------------------------

/// What a reload (SIGHUP) hands the running daemon, each part already loaded and checked.
#[derive(Debug)]
pub struct Reloads {
    /// The health checks (`[health]`, `[[check]]`).
    pub checks: watch::Receiver<Vec<crate::health::Plan>>,
    /// The sync link's TLS material.
    pub tls: watch::Receiver<Option<TlsMaterial>>,
    /// The reloaded file, for the settings that follow it at once: the role machine's
    /// (priority, preemption, timers) and the replication timers tied to the heartbeat
    /// interval (the sender's keepalive, the receiver's staleness).
    pub settings: watch::Receiver<Option<Config>>,
}

/// Runs the daemon until `shutdown` completes: serves `Peer` on `listener` (mutual TLS with
/// `tls`), connects to the peer, and drives `local`.
pub async fn run<L: LocalDataplane>(
    cfg: Config,
    tls: TlsMaterial,
    listener: TcpListener,
    local: L,
    shutdown: impl std::future::Future<Output = ()> + Send,
    reloads: Reloads,
) -> Result<(), DaemonError> {
    let Reloads {
        checks: reload,
        tls: tls_reload,
        settings: mut role_reload,
    } = reloads;
    let server_tls = tls.server_config()?;
    let (ep_tx, ep_rx) = watch::channel(peer_endpoint(&cfg, &tls)?);
    let (acceptor_tx, acceptor_rx) =
        watch::channel(tokio_rustls::TlsAcceptor::from(Arc::clone(&server_tls)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Ctl>(1024);
    let (hb_in_tx, mut hb_in_rx) = mpsc::channel::<(Path, pb::HeartbeatMessage)>(256);
    let (batch_tx, mut batch_rx) = mpsc::channel::<(u64, pb::EventBatch)>(64);
    let (local_tx, mut local_rx) = mpsc::channel::<(u64, pb::LocalEvents)>(1024);
    let (apply_tx, apply_rx) = mpsc::channel::<Vec<pb::Entry>>(APPLY_QUEUE);
    let hb_out = broadcast::channel::<pb::HeartbeatMessage>(64).0;
    let (want_receiver, want_receiver_rx) = watch::channel(true);
    let (dp_role, dp_role_rx) = watch::channel(None);
    let (watch_want, watch_want_rx) = watch::channel(None);
    let (report_tx, report_rx) = watch::channel::<Option<pb::SyncReport>>(None);
    let (active_tx, active_rx) = watch::channel(false);
    let (health_tx, health_rx) = watch::channel(serde_json::Value::Null);
    let plans = cfg.health_plans().map_err(DaemonError::Health)?;

    let base = Instant::now();
    let incarnation = unix_nanos();
    let mut core = Core {
        role: RoleMachine::new(cfg.role(), incarnation, 0),
        receiver: Receiver::new(cfg.receiver()),
        cfg: cfg.clone(),
        base,
        sender: None,
        last_epoch: 0,
        apply: ApplyBuffer::default(),
        sender_link: None,
        sender_packed: false,
        receiver_link: None,
        next_link: 0,
        want_receiver,
        dp_role,
        hb_out: hb_out.clone(),
        watch_want,
        watch_gen: 0,
        watch_serves: None,
        apply_tx,
        sync_newest: (0, 0),
        peer_last: None,
        last_state: RoleState::Init,
        paths_seen: None,
        paths_logged: None,
        peer_hb_up: false,
        local_up: None,
        c: Counters::default(),
        active_tx,
        health: health_rx,
    };
    info!(
        node = cfg.node.id,
        priority = cfg.node.priority,
        listen = %cfg.sync_link.listen,
        peer = %cfg.sync_link.peer,
        peer_name = %tls.peer_name,
        dataplane = %cfg.dataplane.socket.display(),
        dead_interval_ms = cfg.role().dead_interval().as_millis(),
        "tandem-syncd starting"
    );

    // The peer link's server.
    let (conn_tx, conn_rx) = mpsc::channel(16);
    let mut tasks = vec![
        tokio::spawn(accept_loop(listener, acceptor_rx, conn_tx)),
        tokio::spawn(tls_reloads(
            cfg.clone(),
            tls_reload,
            acceptor_tx,
            ep_tx,
            stop_rx.clone(),
        )),
    ];
    let svc = PeerServer::new(PeerSvc {
        ctl: ctl_tx.clone(),
        hb_in: hb_in_tx.clone(),
        hb_out: hb_out.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE)
    .max_encoding_message_size(MAX_MESSAGE);
    let mut server_stop = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let r = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(1)))
            .http2_keepalive_timeout(Some(Duration::from_secs(2)))
            .add_service(svc)
            .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), async move {
                let _ = server_stop.changed().await;
            })
            .await;
        if let Err(e) = r {
            warn!(reason = %chain(&e), "sync link server ended");
        }
    }));
    // The peer link's clients.
    tasks.push(tokio::spawn(heartbeat_client(
        ep_rx.clone(),
        backoff(&cfg),
        hb_out.clone(),
        hb_in_tx.clone(),
        ctl_tx.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(replicate_client(
        ep_rx,
        backoff(&cfg),
        want_receiver_rx,
        batch_tx,
        ctl_tx.clone(),
        stop_rx.clone(),
    )));
    // The local dataplane.
    tasks.push(tokio::spawn(local_heartbeats(
        local.clone(),
        backoff(&cfg),
        hb_out.clone(),
        hb_in_tx,
        ctl_tx.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(set_role_task(
        local.clone(),
        backoff(&cfg),
        dp_role_rx,
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(watch_task(
        local.clone(),
        cfg.dataplane.watch_chunk,
        backoff(&cfg),
        watch_want_rx,
        local_tx,
        ctl_tx.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(apply_task(
        local.clone(),
        backoff(&cfg),
        apply_rx,
        ctl_tx,
        stop_rx.clone(),
    )));

    tasks.push(tokio::spawn(report_task(
        local.clone(),
        report_rx,
        stop_rx.clone(),
    )));
    // The health task runs even without checks, so that a reload can add some (it does not
    // poll the dataplane while it has none).
    match crate::health::GrpcAdmin::new(cfg.dataplane.admin_socket.clone()) {
        Err(e) if !plans.is_empty() => {
            return Err(DaemonError::Health(format!(
                "dataplane.admin_socket: {}",
                chain(&e)
            )));
        }
        Err(e) => {
            warn!(error = %chain(&e), "dataplane.admin_socket unusable: checks added by a reload will not run")
        }
        Ok(admin) => {
            info!(
                checks = plans.len(),
                admin_socket = %cfg.dataplane.admin_socket.display(),
                "health checks configured"
            );
            tasks.push(tokio::spawn(crate::health::run(
                crate::health::Settings {
                    plans,
                    poll_interval: Duration::from_millis(cfg.health.poll_interval_ms),
                    max_in_flight: cfg.health.max_in_flight,
                },
                admin,
                active_rx,
                health_tx,
                stop_rx.clone(),
                reload,
            )));
        }
    }

    let status_file: PathBuf = cfg.daemon.status_file.clone();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut status_tick =
        tokio::time::interval(Duration::from_millis(cfg.daemon.status_interval_ms));
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some((path, m)) = hb_in_rx.recv() => core.on_heartbeat(path, &m),
            Some(c) = ctl_rx.recv() => core.on_ctl(c),
            Ok(()) = role_reload.changed() => {
                let cfg = role_reload.borrow_and_update().clone();
                if let Some(cfg) = cfg {
                    core.reload_settings(&cfg);
                }
            }
            _ = tick.tick() => {}
            _ = status_tick.tick() => {
                write_status(&status_file, &core.status());
                report_tx.send_replace(Some(core.report()));
            }
            Some((link, b)) = batch_rx.recv() => core.on_batch(link, &b),
            Some((g, m)) = local_rx.recv() => core.on_local(g, &m),
        }
        core.step();
    }

    info!(role = ?core.role.state(), "shutting down");
    let was_active = core.role.state().is_active();
    // Tell the peer at once, on both paths, that this director is going (a `Fault`
    // heartbeat): a standby takes over now rather than after the dead interval.
    let now = core.now();
    core.role.resign(now);
    core.step();
    if was_active {
        // Best effort: give up the addresses now rather than when the dataplane notices.
        match tokio::time::timeout(
            Duration::from_millis(500),
            local.set_role(pb::Role::Standby),
        )
        .await
        {
            Ok(Ok(_)) => info!("dataplane ordered STANDBY"),
            Ok(Err(s)) => warn!(reason = s.message(), "cannot order the dataplane STANDBY"),
            Err(_) => warn!("ordering the dataplane STANDBY timed out"),
        }
    }
    // Time for the heartbeat tasks to send the resignation before they are stopped.
    tokio::time::sleep(RESIGN_FLUSH).await;
    let mut last = core.status();
    if let Some(o) = last.as_object_mut() {
        o.insert("role".into(), serde_json::Value::from("Stopped"));
    }
    write_status(&status_file, &last);
    // Best effort: tell the dataplane syncd is gone (role unspecified) so that its status
    // says "stopped" at once rather than when the last report grows stale.
    let mut rep = core.report();
    rep.role = pb::Role::Unspecified as i32;
    match tokio::time::timeout(Duration::from_millis(500), local.report_status(rep)).await {
        Ok(Ok(())) => {}
        Ok(Err(s)) => debug!(
            reason = s.message(),
            "cannot report the stop to the dataplane"
        ),
        Err(_) => debug!("reporting the stop to the dataplane timed out"),
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        t.abort();
    }
    Ok(())
}
