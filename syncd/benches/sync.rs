//! Sync throughput and replication lag, one active to one standby over loopback gRPC with
//! mutual TLS, through the daemon's own pieces: [`Sender`] and [`Receiver`], the wire
//! conversions of [`tandem_syncd::wire`] on both sides (the local stream's `LocalEvents` in,
//! `EventBatch`es and acks over `Peer.Replicate`, the standby's `ApplyConnections` entries
//! out), and the daemon's TLS material ([`TlsMaterial`], rustls + ring).
//!
//! What is *not* in the loop: the dataplane's lcores and its Unix socket (the active's
//! events are built in-process as `LocalEvents` messages and decoded with
//! `wire::local_from`, as the daemon decodes its watch), and the standby dataplane's
//! installation of the entries (they are built with `wire::change_to_entry`, as the daemon
//! queues them, then dropped).
//!
//! Two measurements, numbers printed, nothing asserted:
//! - **throughput**: `--events` connection events (creations) pushed as fast as the sender's
//!   log takes them (the producer waits while the log is more than half full, so nothing
//!   overflows), from the first push to the last event applied on the standby;
//! - **lag under load**: events produced at fixed rates (`--rates`, events/s) for
//!   `--seconds` each, in 1 ms ticks as the dataplane's pump delivers them; an event's lag
//!   runs from its scheduled creation time (spread evenly over the tick) to the moment the
//!   standby applied it, on one shared monotonic clock (both sides are in this process).
//!
//! ```text
//! cargo bench -p tandem-syncd --bench sync -- [--events N] [--batch N] [--rates R1,R2,...]
//!     [--seconds S] [--wire packed|entries]
//! ```
// A benchmark: failures panic with their message; indices and percentiles are far below 2^32.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tandem_core::conn::{ConnEvent, ConnEventKind, ConnFlags, ConnRecord, ConnState};
use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};
use tandem_proto::sync as pb;
use tandem_proto::sync::peer_client::PeerClient;
use tandem_proto::sync::peer_server::{Peer, PeerServer};
use tandem_syncd::config::TlsSection;
use tandem_syncd::repl::{Change, Receiver, ReceiverConfig, Replica, Sender, SenderConfig};
use tandem_syncd::tls::TlsMaterial;
use tandem_syncd::wire::{self, LocalMsg};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Batches queued towards the peer (the daemon's `LINK_QUEUE`).
const LINK_QUEUE: usize = 64;
/// Events per local message in the throughput run (the dataplane's pump sends up to 4096
/// per lcore pass).
const LOCAL_CHUNK: usize = 4096;

struct Args {
    /// `--wire entries`: protobuf entries even to a receiver that reads packed ones (the
    /// encoding of a director of the previous version), to compare.
    entries: bool,
    events: u64,
    batch: usize,
    rates: Vec<u64>,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        entries: false,
        events: 2_000_000,
        batch: SenderConfig::default().max_batch,
        rates: vec![100_000, 500_000, 1_000_000],
        seconds: 3,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--events" => a.events = v.parse().expect("--events N"),
            "--batch" => a.batch = v.parse().expect("--batch N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds S"),
            "--wire" => {
                a.entries = match v.as_str() {
                    "entries" => true,
                    "packed" => false,
                    _ => panic!("--wire packed|entries"),
                }
            }
            "--rates" => {
                a.rates = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().expect("--rates R1,R2"))
                    .collect()
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

// ---- TLS material ---------------------------------------------------------------------------

fn tls_pair(dir: &Path) -> (TlsMaterial, TlsMaterial) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "Tandem bench CA");
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.signed_by(&key, &ca).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let (a_cert, a_key) = leaf("a.tandem");
    let (b_cert, b_key) = leaf("b.tandem");
    let a = TlsMaterial::load(&TlsSection {
        ca: ca_path.clone(),
        cert: a_cert,
        key: a_key,
        peer_name: "b.tandem".into(),
    })
    .unwrap();
    let b = TlsMaterial::load(&TlsSection {
        ca: ca_path,
        cert: b_cert,
        key: b_key,
        peer_name: "a.tandem".into(),
    })
    .unwrap();
    (a, b)
}

// ---- the events -------------------------------------------------------------------------------

/// Event `i` (from 0): a new established TCP connection whose client address encodes `i`.
fn event(i: u64) -> ConnEvent {
    let n = u32::try_from(i + 1).unwrap();
    ConnEvent {
        kind: ConnEventKind::Created,
        seq: i + 1,
        record: ConnRecord {
            proto: Protocol::Tcp,
            client: Endpoint {
                addr: Ipv4Addr::from(n),
                port: 40_000,
            },
            vip: Endpoint {
                addr: Ipv4Addr::new(192, 0, 2, 1),
                port: 80,
            },
            real: Endpoint {
                addr: Ipv4Addr::new(172, 16, 0, 2 + (n % 8) as u8),
                port: 8080,
            },
            method: ForwardMethod::Nat,
            dest: DestId(n % 8),
            service: ServiceId(0),
            state: ConnState::Established,
            flags: ConnFlags::EMPTY,
            timeout_ms: 900_000,
            remaining_ms: 900_000,
        },
    }
}

fn index_of(r: &ConnRecord) -> usize {
    (u32::from(r.client.addr) - 1) as usize
}

// ---- the active's side: Sender behind Peer.Replicate ----------------------------------------

type BatchTx = mpsc::Sender<Result<pb::EventBatch, Status>>;

#[derive(Clone)]
struct PeerSvc {
    open: mpsc::Sender<(BatchTx, Streaming<pb::ReceiverMessage>)>,
}

#[tonic::async_trait]
impl Peer for PeerSvc {
    type ReplicateStream = ReceiverStream<Result<pb::EventBatch, Status>>;
    type HeartbeatStream = ReceiverStream<Result<pb::HeartbeatMessage, Status>>;

    async fn replicate(
        &self,
        req: Request<Streaming<pb::ReceiverMessage>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        self.open
            .send((tx, req.into_inner()))
            .await
            .map_err(|_| Status::unavailable("bench over"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn heartbeat(
        &self,
        _req: Request<Streaming<pb::HeartbeatMessage>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        Err(Status::unimplemented("not in the bench"))
    }
}

#[derive(Clone, Copy)]
enum Load {
    /// As fast as the log takes them.
    Saturate { events: u64 },
    /// `rate` events/s for `seconds`.
    Paced { rate: u64, seconds: u64 },
}

impl Load {
    fn total(self) -> u64 {
        match self {
            Load::Saturate { events } => events,
            Load::Paced { rate, seconds } => rate * seconds,
        }
    }
}

struct Clock {
    base: Instant,
}

impl Clock {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

#[derive(Debug, Default)]
struct SenderReport {
    first_push_ns: u64,
    batches: u64,
    overflow_drops: u64,
    resyncs: u64,
    retransmits: u64,
}

/// The active's core: local events in (built and decoded as the daemon's watch delivers
/// them), batches out, acks in. Ends when every event is acked.
async fn active(
    cfg: SenderConfig,
    load: Load,
    clock: Arc<Clock>,
    created: Arc<Vec<AtomicU64>>,
    mut open: mpsc::Receiver<(BatchTx, Streaming<pb::ReceiverMessage>)>,
) -> SenderReport {
    let (tx, mut inbound) = open.recv().await.expect("the standby connects");
    let (fb_tx, mut fb_rx) = mpsc::channel::<pb::ReceiverMessage>(1024);
    tokio::spawn(async move {
        while let Some(Ok(m)) = inbound.next().await {
            if fb_tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let mut s = Sender::new(cfg.clone(), 1);
    s.connected(clock.now());
    // As the daemon: packed once the receiver's resume request says it reads them.
    let mut packed = false;
    let only_entries = ENTRIES.load(Ordering::Relaxed);
    let total = load.total();
    let mut produced = 0u64;
    let mut rep = SenderReport::default();
    let mut started: Option<u64> = None;
    let mut gone = false;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let now = clock.now();
        while let Ok(m) = fb_rx.try_recv() {
            if let Some(p) = wire::resume_accepts_packed(&m) {
                packed = p && !only_entries;
            }
            s.handle(wire::feedback_from(&m).expect("feedback"), now);
        }
        if let Some(req) = s.wants_snapshot() {
            // The active's table is empty when the standby connects.
            s.snapshot_chunk(req.id, &[], true, now);
        }
        let ready = s.is_established() && s.feeding_snapshot().is_none();
        let mut did = false;
        if ready && produced < total {
            let start = *started.get_or_insert(now);
            let (upto, paced_rate) = match load {
                Load::Saturate { .. } => {
                    let depth = s.metrics(now).queue_depth;
                    let room = (cfg.max_log_entries / 2).saturating_sub(depth) as u64;
                    ((produced + room.min(LOCAL_CHUNK as u64)).min(total), None)
                }
                Load::Paced { rate, .. } => {
                    let due = u128::from(now - start) * u128::from(rate) / 1_000_000_000;
                    (
                        u64::try_from(due).unwrap_or(u64::MAX).min(total),
                        Some(rate),
                    )
                }
            };
            while produced < upto {
                let n = (upto - produced).min(LOCAL_CHUNK as u64);
                let msg = pb::LocalEvents {
                    msg: Some(pb::local_events::Msg::Events(pb::LocalEventBatch {
                        events: (produced..produced + n)
                            .map(|i| wire::local_event_to(0, &event(i)))
                            .collect(),
                    })),
                };
                for i in produced..produced + n {
                    let t = match paced_rate {
                        None => now,
                        Some(rate) => {
                            start
                                + u64::try_from(u128::from(i) * 1_000_000_000 / u128::from(rate))
                                    .unwrap_or(u64::MAX)
                        }
                    };
                    created[i as usize].store(t, Ordering::Relaxed);
                }
                let Ok(LocalMsg::Events(evs)) = wire::local_from(&msg) else {
                    panic!("local events do not decode");
                };
                for (lcore, item) in &evs {
                    s.push_lcore(*lcore, item, now);
                }
                produced += n;
                did = true;
            }
            if rep.first_push_ns == 0 {
                rep.first_push_ns = start;
            }
        }
        while tx.capacity() > 0 {
            let Some(b) = s.poll_transmit(now) else {
                break;
            };
            rep.batches += 1;
            did = true;
            let msg = if packed {
                wire::batch_to_packed(&b)
            } else {
                wire::batch_to(&b)
            };
            if tx.try_send(Ok(msg)).is_err() {
                // The standby hangs up once it has applied every event, possibly before
                // its last ack reached us.
                assert!(produced == total, "the standby went away");
                gone = true;
                break;
            }
        }
        let m = s.metrics(now);
        if gone || (produced == total && m.last_acked >= m.head_seq && m.head_seq > 0) {
            rep.overflow_drops = m.overflow_drops;
            rep.resyncs = m.resyncs;
            rep.retransmits = m.retransmits;
            return rep;
        }
        if !did {
            // Wait for an ack, room on the link, or the next 1 ms tick (the pump's pace).
            tokio::select! {
                m = fb_rx.recv() => if let Some(m) = m {
                    if let Some(p) = wire::resume_accepts_packed(&m) {
                        packed = p && !only_entries;
                    }
                    s.handle(wire::feedback_from(&m).expect("feedback"), clock.now());
                },
                _ = tick.tick() => {},
            }
        } else if matches!(load, Load::Saturate { .. }) {
            tokio::task::yield_now().await;
        }
    }
}

// ---- the standby's side: Receiver on a Peer.Replicate client ------------------------------

/// The daemon's replica on the standby queues `ApplyConnections` entries; this one builds
/// them the same way, records each event's lag, and drops the entries.
struct LagReplica {
    created: Arc<Vec<AtomicU64>>,
    entries: Vec<pb::Entry>,
    lag_ns: Vec<u64>,
    last_apply_ns: u64,
}

impl Replica for LagReplica {
    fn apply(&mut self, change: &Change, now: u64) {
        self.entries.push(wire::change_to_entry(change));
        if let Change::Conn { record, .. } = change {
            let t = self.created[index_of(record)].load(Ordering::Relaxed);
            self.lag_ns.push(now.saturating_sub(t));
            self.last_apply_ns = now;
        }
    }
    fn begin_snapshot(&mut self) {}
    fn end_snapshot(&mut self, _now: u64) -> usize {
        0
    }
}

async fn standby(
    addr: SocketAddr,
    tls: &TlsMaterial,
    total: u64,
    clock: Arc<Clock>,
    created: Arc<Vec<AtomicU64>>,
) -> LagReplica {
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls.tonic_client())
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("mTLS connection to the active");
    let mut client = PeerClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (fb_tx, fb_rx) = mpsc::channel::<pb::ReceiverMessage>(LINK_QUEUE);
    let mut r = Receiver::new(ReceiverConfig::default());
    r.connected(clock.now());
    while let Some(fb) = r.poll_transmit(clock.now()) {
        fb_tx.try_send(wire::feedback_to(&fb)).unwrap();
    }
    let mut inbound = client
        .replicate(ReceiverStream::new(fb_rx))
        .await
        .expect("Replicate")
        .into_inner();
    let mut replica = LagReplica {
        created,
        entries: Vec::new(),
        lag_ns: Vec::with_capacity(usize::try_from(total).unwrap_or(0)),
        last_apply_ns: 0,
    };
    while (replica.lag_ns.len() as u64) < total {
        let Some(b) = inbound.message().await.expect("batch") else {
            panic!("the active closed the stream early");
        };
        let batch = wire::batch_from(&b).expect("batch decodes");
        r.handle(&batch, clock.now(), &mut replica);
        replica.entries.clear();
        while let Some(fb) = r.poll_transmit(clock.now()) {
            // As in the daemon: a full queue drops the ack (the next one covers it).
            let _ = fb_tx.try_send(wire::feedback_to(&fb));
        }
    }
    replica
}

// ---- one run ------------------------------------------------------------------------------------

struct RunResult {
    events: u64,
    seconds: f64,
    lag_ns: Vec<u64>,
    sender: SenderReport,
}

async fn run(load: Load, batch: usize, a: &TlsMaterial, b: &TlsMaterial) -> RunResult {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(a.server_config().unwrap());
    let (conn_tx, conn_rx) = mpsc::channel(4);
    let accept = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            match acceptor.accept(tcp).await {
                Ok(tls) => {
                    if conn_tx.send(Ok::<_, std::io::Error>(tls)).await.is_err() {
                        return;
                    }
                }
                Err(e) => eprintln!("bench: TLS handshake failed: {e}"),
            }
        }
    });
    let (open_tx, open_rx) = mpsc::channel(1);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                PeerServer::new(PeerSvc { open: open_tx })
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(64 << 20),
            )
            .serve_with_incoming_shutdown(ReceiverStream::new(conn_rx), async {
                let _ = stop_rx.await;
            }),
    );
    let total = load.total();
    let created: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let clock = Arc::new(Clock {
        base: Instant::now(),
    });
    let cfg = SenderConfig {
        max_batch: batch,
        ..SenderConfig::default()
    };
    let sender = tokio::spawn(active(
        cfg,
        load,
        Arc::clone(&clock),
        Arc::clone(&created),
        open_rx,
    ));
    let replica = standby(addr, b, total, Arc::clone(&clock), created).await;
    let sender = sender.await.expect("the active's task");
    let _ = stop_tx.send(());
    accept.abort();
    let _ = server.await;
    RunResult {
        events: total,
        seconds: (replica.last_apply_ns.saturating_sub(sender.first_push_ns)) as f64 / 1e9,
        lag_ns: replica.lag_ns,
        sender,
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1e6
}

fn print(name: &str, mut r: RunResult) {
    r.lag_ns.sort_unstable();
    let l = &r.lag_ns;
    println!(
        "{name:<22} {:>10} {:>8.3} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8} {:>7} {:>8} {:>7}",
        r.events,
        r.seconds,
        r.events as f64 / r.seconds,
        pct(l, 0.5),
        pct(l, 0.99),
        pct(l, 0.999),
        pct(l, 1.0),
        r.sender.batches,
        r.sender.resyncs,
        r.sender.overflow_drops,
        r.sender.retransmits,
    );
}

/// `--wire entries` (see [`Args`]).
static ENTRIES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn main() {
    let a = args();
    ENTRIES.store(a.entries, Ordering::Relaxed);
    let dir = tempfile::tempdir().expect("a scratch directory");
    let (tls_a, tls_b) = tls_pair(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!(
        "tandem-syncd sync bench: loopback gRPC + mTLS (rustls/ring), {} wire, max_batch {}, window {}, {} CPUs",
        if a.entries { "entries" } else { "packed" },
        a.batch,
        SenderConfig::default().window,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<22} {:>10} {:>8} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8} {:>7}",
        "run",
        "events",
        "secs",
        "events/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "batches",
        "resync",
        "overflow",
        "retx"
    );
    rt.block_on(async {
        let r = run(Load::Saturate { events: a.events }, a.batch, &tls_a, &tls_b).await;
        print("throughput (saturate)", r);
        for rate in &a.rates {
            let r = run(
                Load::Paced {
                    rate: *rate,
                    seconds: a.seconds,
                },
                a.batch,
                &tls_a,
                &tls_b,
            )
            .await;
            print(&format!("lag @ {rate}/s"), r);
        }
    });
}
