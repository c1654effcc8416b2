//! The admin API server (`tandem.admin.v1`) and the control thread behind it.
//!
//! Threads: the tokio runtime (its worker threads, created at startup before `rte_eal_init`
//! so they are not pinned to a worker's CPU) only decodes requests and waits; every operation
//! runs on **one control thread** (also created before EAL init), which owns the
//! [`ControlState`], so operations are serialised without a lock shared with anything else.
//! The control thread talks to the worker lcores through their bounded inboxes
//! ([`Command`]) and reads what they publish on the [`StatsBoard`] and the counter slots. It
//! also runs the rate estimator every 2 s and the reload that SIGHUP asks for.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tandem_core::balance::ConnFilter;
use tandem_core::conn::{ConnFlags, ConnState, Timeouts};
use tandem_core::counters::{Counters, DropReason};
use tandem_core::lb::Endpoint;
use tandem_core::service::{DestSpec, ServiceSpec};
use tandem_proto::admin::admin_server::{Admin, AdminServer};
use tandem_proto::admin::{self as pb};
use tandem_proto::{ConvertError, ServiceKey};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::board::StatsBoard;
use super::command::{Command, ConnListing, PortFigures};
use super::health::{Health, HealthAction, HealthState, Verdict};
use super::state::{Apply, Change, ControlError, ControlState, Rates, add_traffic};
use crate::stats::{CounterSlot, PortReport};

/// How often the rate estimator runs (the kernel's `ip_vs_est` period).
pub const ESTIMATE_EVERY: Duration = Duration::from_secs(2);
/// How stale the published connection counts may be (the workers publish every 1 ms).
pub const COUNTS_STALENESS_MS: u32 = 1;
/// How long a worker may take to answer (a listing, the port counters) or to take a command.
pub const WORKER_DEADLINE: Duration = Duration::from_secs(2);
/// Connections listed when the request says 0, and the most it may ask for.
pub const DEFAULT_CONN_LIMIT: usize = 1000;
/// See [`DEFAULT_CONN_LIMIT`].
pub const MAX_CONN_LIMIT: usize = 100_000;
/// Requests waiting for the control thread before new ones are refused.
const JOB_QUEUE: usize = 256;

/// What the control thread learns once the EAL, the ports and the workers are up.
#[derive(Debug)]
pub struct Running {
    /// One inbox per worker, in worker order.
    pub workers: Vec<Sender<Command>>,
    /// The lcore of each worker.
    pub lcores: Vec<u32>,
    /// The ports, in configuration order.
    pub ports: Vec<PortReport>,
    /// What the workers publish.
    pub board: Arc<StatsBoard>,
    /// Per-lcore counters, indexed by lcore id.
    pub slots: Arc<Vec<CounterSlot>>,
    /// The sync side's role and counters.
    pub sync: Arc<crate::sync::SyncState>,
}

/// The control thread's state.
#[derive(Debug)]
pub struct Controller {
    state: ControlState,
    running: Option<Running>,
    started: Instant,
    last_estimate: Instant,
}

type Job = Box<dyn FnOnce(&mut Controller) + Send>;

/// A handle for sending work to the control thread.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    jobs: Sender<Job>,
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn status(e: ControlError) -> Status {
    match e {
        ControlError::Invalid(m) => Status::invalid_argument(m),
        ControlError::NotFound(m) => Status::not_found(m),
        ControlError::Exists(m) => Status::already_exists(m),
    }
}

impl ControlHandle {
    /// Runs `f` on the control thread and waits for its answer.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Controller) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.jobs.try_send(job).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => {
                Status::resource_exhausted("too many admin requests waiting; try again")
            }
            crossbeam_channel::TrySendError::Disconnected(_) => {
                Status::unavailable("the director is stopping")
            }
        })?;
        rx.await
            .map_err(|_| Status::unavailable("the director is stopping"))?
    }

    /// The running services (the sync service maps the peer's records with them).
    pub async fn services(&self) -> Result<Arc<tandem_core::service::ServiceSet>, Status> {
        self.call(|c| Ok(Arc::clone(c.state.set()))).await
    }

    /// Tells the control thread the workers are up (from the main thread).
    pub fn set_running(&self, running: Running) -> Result<(), String> {
        self.jobs
            .send(Box::new(move |c| c.running = Some(running)))
            .map_err(|_| "the control thread stopped".to_string())
    }
}

/// Spawns the control thread (call before `rte_eal_init`). It stops when `stop` is set;
/// `hangup` set (by SIGHUP) makes it reload the configuration file.
pub fn spawn(
    state: ControlState,
    stop: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
) -> std::io::Result<(ControlHandle, std::thread::JoinHandle<()>)> {
    let (jobs, rx) = crossbeam_channel::bounded::<Job>(JOB_QUEUE);
    let handle = std::thread::Builder::new()
        .name("tandem-control".into())
        .spawn(move || {
            let now = Instant::now();
            let mut c = Controller {
                state,
                running: None,
                started: now,
                last_estimate: now,
            };
            c.run(&rx, &stop, &hangup);
        })?;
    Ok((ControlHandle { jobs }, handle))
}

impl Controller {
    fn run(&mut self, rx: &Receiver<Job>, stop: &AtomicBool, hangup: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(job) => job(self),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if hangup.swap(false, Ordering::Relaxed) {
                self.sighup();
            }
            if self.last_estimate.elapsed() >= ESTIMATE_EVERY {
                let interval = self.last_estimate.elapsed();
                self.last_estimate = Instant::now();
                if let Some(r) = &self.running {
                    self.state.estimate(interval, r.board.as_ref());
                }
            }
        }
    }

    fn sighup(&mut self) {
        info!(file = %self.state.config_path().display(), "SIGHUP: reloading the configuration");
        match self.reload(false) {
            Ok(c) if c.changes.is_empty() => info!("reload: nothing changed"),
            Ok(c) => {
                for l in &c.changes {
                    info!(generation = c.generation, "reload: {l}");
                }
            }
            Err(e) => warn!("reload refused, nothing changed: {}", e.message()),
        }
    }

    fn running(&self) -> Result<&Running, Status> {
        self.running
            .as_ref()
            .ok_or_else(|| Status::unavailable("the dataplane is starting"))
    }

    /// Applies a change to the state and hands it to every worker.
    fn mutate(
        &mut self,
        f: impl FnOnce(&mut ControlState, &StatsBoard, Instant) -> Result<Change, ControlError>,
    ) -> Result<pb::ChangeResponse, Status> {
        let board = Arc::clone(&self.running()?.board);
        let change = f(&mut self.state, &board, Instant::now()).map_err(status)?;
        if let Some(apply) = &change.apply {
            self.broadcast(apply, change.generation)?;
            for l in &change.lines {
                info!(generation = change.generation, "{l}");
            }
        }
        Ok(pb::ChangeResponse {
            changes: change.lines,
            generation: change.generation,
        })
    }

    fn broadcast(&self, apply: &Apply, generation: u64) -> Result<(), Status> {
        let r = self.running()?;
        for (i, tx) in r.workers.iter().enumerate() {
            let mut cmds = Vec::new();
            if let Some(s) = &apply.services {
                cmds.push(Command::SetServices {
                    services: Arc::clone(s),
                    generation,
                });
            }
            cmds.extend(apply.flush.iter().map(|f| Command::Flush(*f)));
            if let Some(t) = apply.timeouts {
                cmds.push(Command::SetTimeouts(t));
            }
            for cmd in cmds {
                tx.send_timeout(cmd, WORKER_DEADLINE).map_err(|_| {
                    Status::unavailable(format!(
                        "lcore {} did not take the change within {WORKER_DEADLINE:?}; \
                         the configuration may differ between lcores",
                        r.lcores.get(i).copied().unwrap_or_default()
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Records a health verdict and hands what it changes to every worker.
    fn set_health(
        &mut self,
        k: ServiceKey,
        server: Endpoint,
        verdict: Verdict,
    ) -> Result<pb::SetServerHealthResponse, Status> {
        self.running()?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let v = verdict.clone();
        let c = self
            .state
            .set_health(k.proto, k.vip, server, verdict, now_ms)
            .map_err(status)?;
        if let Some(apply) = &c.apply {
            self.broadcast(apply, c.generation)?;
        }
        if c.changed {
            info!(
                service = %k,
                server = %server,
                state = v.state.name(),
                action = v.action.name(),
                checker = %v.checker,
                reason = %v.reason,
                generation = c.generation,
                "health: {}",
                c.line
            );
        } else {
            debug!(service = %k, server = %server, "health: {}", c.line);
        }
        Ok(pb::SetServerHealthResponse {
            message: c.line,
            changed: c.changed,
        })
    }

    fn reload(&mut self, dry_run: bool) -> Result<pb::ChangeResponse, Status> {
        self.mutate(|s, b, now| s.reload(dry_run, b, now))
    }

    fn list_services(&self, key: Option<ServiceKey>) -> Result<pb::ListServicesResponse, Status> {
        let r = self.running()?;
        let board = r.board.as_ref();
        // The configured servers (whatever their health), with the ids their counters have.
        let set = self.state.configured();
        let mut services = Vec::new();
        for spec in self.state.specs() {
            if key.is_some_and(|k| k.proto != spec.proto || k.vip != spec.vip) {
                continue;
            }
            let Some(svc) = set.lookup(spec.proto, spec.vip) else {
                continue;
            };
            let mut total = Default::default();
            let mut total_rates = Rates::default();
            let mut servers = Vec::new();
            for (d, ds) in set.service_dests(svc).iter().zip(&spec.dests) {
                let f = board.dest(d.id);
                let stats = self.state.stats(d.id, board);
                let rates = self.state.rates(d.id);
                add_traffic(&mut total, &stats);
                total_rates.add(&rates);
                let health = self
                    .state
                    .health(spec.proto, spec.vip, d.endpoint)
                    .map(health_pb);
                servers.push(pb::ServerStatus {
                    config: Some(pb::ServerConfig::from(ds)),
                    health,
                    active_connections: f.active,
                    inactive_connections: f.inactive,
                    stats: Some(stats_pb(&stats)),
                    rates: Some(rates_pb(&rates)),
                });
            }
            services.push(pb::ServiceStatus {
                config: Some(tandem_proto::service_config(spec)),
                servers,
                stats: Some(stats_pb(&total)),
                rates: Some(rates_pb(&total_rates)),
            });
        }
        if let Some(k) = key
            && services.is_empty()
        {
            return Err(Status::not_found(format!("no service {k}")));
        }
        Ok(pb::ListServicesResponse {
            services,
            generation: self.state.generation(),
            counts_staleness_ms: COUNTS_STALENESS_MS,
        })
    }

    /// Asks every worker for its part of the listing; each gets [`WORKER_DEADLINE`] at most.
    fn list_connections(
        &self,
        filter: ConnFilter,
        limit: usize,
    ) -> Result<pb::ListConnectionsResponse, Status> {
        let r = self.running()?;
        let (tx, rx) = crossbeam_channel::bounded::<ConnListing>(r.workers.len());
        for (i, w) in r.workers.iter().enumerate() {
            w.send_timeout(
                Command::ListConns {
                    filter,
                    limit,
                    reply: tx.clone(),
                },
                WORKER_DEADLINE,
            )
            .map_err(|_| not_answering(r, i))?;
        }
        drop(tx);
        let deadline = Instant::now() + WORKER_DEADLINE;
        let mut parts = Vec::with_capacity(r.workers.len());
        let mut answered = vec![false; r.workers.len()];
        while parts.len() < r.workers.len() {
            match rx.recv_deadline(deadline) {
                Ok(p) => {
                    if let Some(a) = answered.get_mut(p.worker) {
                        *a = true;
                    }
                    parts.push(p);
                }
                Err(_) => {
                    let i = answered.iter().position(|a| !a).unwrap_or(0);
                    return Err(not_answering(r, i));
                }
            }
        }
        parts.sort_by_key(|p| p.worker);
        let mut connections = Vec::new();
        let mut matched = 0;
        for p in parts {
            matched += p.matched;
            let lcore = r.lcores.get(p.worker).copied().unwrap_or_default();
            for rec in p.records {
                if connections.len() >= limit {
                    break;
                }
                connections.push(pb::Connection {
                    protocol: tandem_proto::protocol_to_wire(rec.proto).into(),
                    client_address: rec.client.addr.to_string(),
                    client_port: rec.client.port.into(),
                    virtual_address: rec.vip.addr.to_string(),
                    virtual_port: rec.vip.port.into(),
                    server_address: rec.real.addr.to_string(),
                    server_port: rec.real.port.into(),
                    method: tandem_proto::method_to_wire(rec.method).into(),
                    state: rec.state.name().into(),
                    expires_ms: rec.remaining_ms.into(),
                    lcore,
                    template: rec.flags.contains(ConnFlags::TEMPLATE),
                });
            }
        }
        Ok(pb::ListConnectionsResponse {
            truncated: matched > connections.len(),
            connections,
        })
    }

    fn port_figures(&self, r: &Running) -> Vec<PortFigures> {
        let Some(w) = r.workers.first() else {
            return vec![];
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        if w.send_timeout(Command::PortStats { reply: tx }, WORKER_DEADLINE)
            .is_err()
        {
            return vec![];
        }
        rx.recv_timeout(WORKER_DEADLINE).unwrap_or_else(|_| {
            warn!("the first worker did not report port counters in time");
            vec![]
        })
    }

    fn status(&self) -> Result<pb::Status, Status> {
        let r = self.running()?;
        let figures = self.port_figures(r);
        let ports = r
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let f = figures.get(i).copied().unwrap_or_default();
                pb::PortStatus {
                    name: p.name.clone(),
                    device: p.device.clone(),
                    port_id: p.port_id.into(),
                    mac: p.mac.clone(),
                    address: p.address.clone(),
                    link_up: f.link_up,
                    speed_mbps: f.speed_mbps,
                    rx_packets: f.rx_packets,
                    tx_packets: f.tx_packets,
                    rx_bytes: f.rx_bytes,
                    tx_bytes: f.tx_bytes,
                    rx_missed: f.rx_missed,
                    rx_errors: f.rx_errors,
                    tx_errors: f.tx_errors,
                }
            })
            .collect();
        let mut total = Counters::default();
        let mut lcores = Vec::new();
        let (mut conns, mut capacity) = (0, 0);
        for (i, lcore) in r.lcores.iter().enumerate() {
            let c = r
                .slots
                .get(*lcore as usize)
                .map(CounterSlot::snapshot)
                .unwrap_or_default();
            total.add(&c);
            let t = r.board.lcore(i);
            conns += t.connections;
            capacity += t.capacity;
            lcores.push(pb::LcoreStatus {
                lcore: *lcore,
                worker: u32::try_from(i).unwrap_or(u32::MAX),
                connections: t.connections,
                connection_capacity: t.capacity,
                rx_packets: c.rx_packets,
                tx_packets: c.tx_packets,
                forwarded: c.forwarded,
                redirected: c.redirected,
                dropped: c.total_drops(),
                sync_events_queued: t.events_queued,
                sync_events_overflow: t.events_overflow,
            });
        }
        let set = self.state.configured();
        Ok(pb::Status {
            version: env!("CARGO_PKG_VERSION").into(),
            role: r.sync.role().name().into(),
            uptime_s: self.started.elapsed().as_secs(),
            config_file: self.state.config_path().display().to_string(),
            generation: self.state.generation(),
            ports,
            lcores,
            connections: conns,
            connection_capacity: capacity,
            services: u32::try_from(set.services().len()).unwrap_or(u32::MAX),
            servers: u32::try_from(set.dests().len()).unwrap_or(u32::MAX),
            drops: DropReason::ALL
                .iter()
                .map(|d| pb::DropCount {
                    reason: d.name().into(),
                    count: total.dropped(*d),
                })
                .collect(),
            sync: r.sync.report.status(std::time::Instant::now()),
        })
    }
}

fn not_answering(r: &Running, worker: usize) -> Status {
    Status::unavailable(format!(
        "lcore {} did not answer within {WORKER_DEADLINE:?}",
        r.lcores.get(worker).copied().unwrap_or_default()
    ))
}

fn stats_pb(t: &tandem_core::balance::DestTraffic) -> pb::Stats {
    pb::Stats {
        connections: t.conns,
        packets_in: t.packets_in,
        packets_out: t.packets_out,
        bytes_in: t.bytes_in,
        bytes_out: t.bytes_out,
    }
}

fn rates_pb(r: &Rates) -> pb::Rates {
    // Saturating float-to-int conversion (NaN -> 0) is what a rate display wants.
    #[allow(clippy::cast_possible_truncation)]
    let u = |v: f64| v.round().max(0.0) as u64;
    pb::Rates {
        connections_per_s: u(r.conns),
        packets_in_per_s: u(r.packets_in),
        packets_out_per_s: u(r.packets_out),
        bytes_in_per_s: u(r.bytes_in),
        bytes_out_per_s: u(r.bytes_out),
    }
}

fn health_pb(h: &Health) -> pb::ServerHealth {
    pb::ServerHealth {
        state: match h.verdict.state {
            HealthState::Up => pb::HealthState::Up,
            HealthState::Down => pb::HealthState::Down,
        }
        .into(),
        action: match h.verdict.action {
            HealthAction::Quiesce => pb::HealthAction::Quiesce,
            HealthAction::Remove => pb::HealthAction::Remove,
        }
        .into(),
        checker: h.verdict.checker.clone(),
        reason: h.verdict.reason.clone(),
        since_unix_ms: h.since_unix_ms,
        changes: h.changes,
    }
}

/// The verdict a `SetServerHealth` request carries (action UNSPECIFIED is QUIESCE).
fn verdict(req: &pb::SetServerHealthRequest) -> Result<Verdict, Status> {
    let state = match pb::HealthState::try_from(req.state) {
        Ok(pb::HealthState::Up) => HealthState::Up,
        Ok(pb::HealthState::Down) => HealthState::Down,
        Ok(pb::HealthState::Unspecified) => {
            return Err(invalid(
                "state: HEALTH_STATE_UNSPECIFIED is not a verdict (UP or DOWN)",
            ));
        }
        Err(_) => {
            return Err(invalid(format!(
                "state: {} is not a health state (UP or DOWN)",
                req.state
            )));
        }
    };
    let action = match pb::HealthAction::try_from(req.action) {
        Ok(pb::HealthAction::Unspecified | pb::HealthAction::Quiesce) => HealthAction::Quiesce,
        Ok(pb::HealthAction::Remove) => HealthAction::Remove,
        Err(_) => {
            return Err(invalid(format!(
                "action: {} is not a health action (QUIESCE or REMOVE)",
                req.action
            )));
        }
    };
    Ok(Verdict::new(state, action, &req.checker, &req.reason))
}

fn timeouts_pb(t: &Timeouts) -> pb::Timeouts {
    let s = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    pb::Timeouts {
        tcp_s: s(t.established),
        tcp_fin_s: s(t.fin_wait),
        udp_s: s(t.udp),
        tcp_syn_s: s(t.syn_recv),
    }
}

fn key(k: Option<&pb::ServiceKey>, field: &'static str) -> Result<ServiceKey, Status> {
    let k = k.ok_or_else(|| invalid(ConvertError::Missing(field)))?;
    ServiceKey::try_from(k).map_err(invalid)
}

fn server(k: Option<&pb::ServerKey>) -> Result<Endpoint, Status> {
    let k = k.ok_or_else(|| invalid(ConvertError::Missing("server key")))?;
    Endpoint::try_from(k).map_err(invalid)
}

fn addr(field: &str, v: &str) -> Result<Ipv4Addr, Status> {
    v.trim()
        .parse()
        .map_err(|_| invalid(format!("{field}: `{v}` is not an IPv4 address")))
}

fn state_named(name: &str) -> Result<ConnState, Status> {
    ConnState::TCP_STATES
        .iter()
        .chain(&[ConnState::Udp])
        .copied()
        .find(|s| s.name().eq_ignore_ascii_case(name.trim()))
        .ok_or_else(|| {
            invalid(format!(
                "state: `{name}` is not a connection state (ESTABLISHED, SYN_RECV, FIN_WAIT, \
                 TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, SYN_SENT, LISTEN, SYNACK, NONE, UDP)"
            ))
        })
}

/// The tonic service: every call is decoded and checked here, then run on the control thread.
#[derive(Debug, Clone)]
pub struct AdminService {
    handle: ControlHandle,
}

impl AdminService {
    /// The service over the control thread `handle` talks to.
    pub fn new(handle: ControlHandle) -> Self {
        AdminService { handle }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn add_service(
        &self,
        req: Request<pb::AddServiceRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let def = req
            .into_inner()
            .service
            .ok_or_else(|| invalid(ConvertError::Missing("service")))?;
        let spec = ServiceSpec::try_from(&def).map_err(invalid)?;
        let r = self
            .handle
            .call(move |c| c.mutate(|s, b, now| s.add_service(spec, b, now)))
            .await?;
        Ok(Response::new(r))
    }

    async fn edit_service(
        &self,
        req: Request<pb::EditServiceRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let req = req.into_inner();
        let k = key(req.key.as_ref(), "service key")?;
        let r = self
            .handle
            .call(move |c| {
                c.mutate(|s, b, now| {
                    s.edit_service(
                        k.proto,
                        k.vip,
                        |spec| {
                            let cur = tandem_proto::service_config(spec);
                            let scheduler = req.scheduler.clone().unwrap_or(cur.scheduler.clone());
                            // Flags of the old scheduler are dropped when only the scheduler
                            // changes and they do not apply to the new one.
                            let flags = match &req.flags {
                                Some(f) => f.flags.clone(),
                                None if scheduler == cur.scheduler => cur.flags.clone(),
                                None => tandem_proto::scheduling(&scheduler, &cur.flags, 0, "")
                                    .map(|_| cur.flags.clone())
                                    .unwrap_or_default(),
                            };
                            let (kind, options, persistence) = tandem_proto::scheduling(
                                &scheduler,
                                &flags,
                                req.persistence_timeout_s
                                    .unwrap_or(cur.persistence_timeout_s),
                                req.persistence_netmask
                                    .as_deref()
                                    .unwrap_or(&cur.persistence_netmask),
                            )
                            .map_err(|e| ControlError::Invalid(e.to_string()))?;
                            spec.scheduler = kind;
                            spec.options = options;
                            spec.persistence = persistence;
                            Ok(())
                        },
                        b,
                        now,
                    )
                })
            })
            .await?;
        Ok(Response::new(r))
    }

    async fn delete_service(
        &self,
        req: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let req = req.into_inner();
        let k = key(req.key.as_ref(), "service key")?;
        let flush = req.flush;
        let r = self
            .handle
            .call(move |c| c.mutate(|s, b, now| s.delete_service(k.proto, k.vip, flush, b, now)))
            .await?;
        Ok(Response::new(r))
    }

    async fn add_server(
        &self,
        req: Request<pb::AddServerRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let req = req.into_inner();
        let k = key(req.service.as_ref(), "service key")?;
        let cfg = req
            .server
            .ok_or_else(|| invalid(ConvertError::Missing("server")))?;
        let dest = DestSpec::try_from(&cfg).map_err(invalid)?;
        let r = self
            .handle
            .call(move |c| c.mutate(|s, b, now| s.add_server(k.proto, k.vip, dest, b, now)))
            .await?;
        Ok(Response::new(r))
    }

    async fn edit_server(
        &self,
        req: Request<pb::EditServerRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let req = req.into_inner();
        let k = key(req.service.as_ref(), "service key")?;
        let ep = server(req.server.as_ref())?;
        let method = req
            .method
            .map(tandem_proto::method)
            .transpose()
            .map_err(invalid)?;
        if let Some(w) = req.weight
            && w > tandem_proto::MAX_WEIGHT
        {
            return Err(invalid(ConvertError::Weight(w)));
        }
        let weight = req.weight;
        let r = self
            .handle
            .call(move |c| {
                c.mutate(|s, b, now| s.edit_server(k.proto, k.vip, ep, method, weight, b, now))
            })
            .await?;
        Ok(Response::new(r))
    }

    async fn delete_server(
        &self,
        req: Request<pb::DeleteServerRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let req = req.into_inner();
        let k = key(req.service.as_ref(), "service key")?;
        let ep = server(req.server.as_ref())?;
        let flush = req.flush;
        let r = self
            .handle
            .call(move |c| c.mutate(|s, b, now| s.delete_server(k.proto, k.vip, ep, flush, b, now)))
            .await?;
        Ok(Response::new(r))
    }

    async fn replace_services(
        &self,
        req: Request<pb::ReplaceServicesRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let req = req.into_inner();
        let specs = req
            .services
            .iter()
            .enumerate()
            .map(|(i, d)| {
                ServiceSpec::try_from(d).map_err(|e| invalid(format!("services[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let dry_run = req.dry_run;
        let r = self
            .handle
            .call(move |c| c.mutate(|s, b, now| s.replace(specs, dry_run, b, now)))
            .await?;
        Ok(Response::new(r))
    }

    async fn reload(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let dry_run = req.into_inner().dry_run;
        let r = self.handle.call(move |c| c.reload(dry_run)).await?;
        Ok(Response::new(r))
    }

    async fn list_services(
        &self,
        req: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let k = req
            .into_inner()
            .key
            .as_ref()
            .map(ServiceKey::try_from)
            .transpose()
            .map_err(invalid)?;
        let r = self.handle.call(move |c| c.list_services(k)).await?;
        Ok(Response::new(r))
    }

    async fn list_connections(
        &self,
        req: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<pb::ListConnectionsResponse>, Status> {
        let req = req.into_inner();
        let filter = ConnFilter {
            proto: req
                .protocol
                .map(tandem_proto::protocol)
                .transpose()
                .map_err(invalid)?,
            client: req
                .client_address
                .as_deref()
                .map(|a| addr("client address", a))
                .transpose()?,
            service: req
                .service
                .as_ref()
                .map(|k| ServiceKey::try_from(k).map(|k| (k.proto, k.vip)))
                .transpose()
                .map_err(invalid)?,
            server: req
                .server_address
                .as_deref()
                .map(|a| addr("server address", a))
                .transpose()?,
            state: req.state.as_deref().map(state_named).transpose()?,
        };
        let limit = match req.limit as usize {
            0 => DEFAULT_CONN_LIMIT,
            n if n > MAX_CONN_LIMIT => {
                return Err(invalid(format!(
                    "limit: {n} is more than {MAX_CONN_LIMIT} connections"
                )));
            }
            n => n,
        };
        let r = self
            .handle
            .call(move |c| c.list_connections(filter, limit))
            .await?;
        Ok(Response::new(r))
    }

    async fn zero_counters(
        &self,
        req: Request<pb::ZeroCountersRequest>,
    ) -> Result<Response<pb::ZeroCountersResponse>, Status> {
        let k = req
            .into_inner()
            .key
            .as_ref()
            .map(ServiceKey::try_from)
            .transpose()
            .map_err(invalid)?;
        self.handle
            .call(move |c| {
                let board = Arc::clone(&c.running()?.board);
                c.state
                    .zero(k.map(|k| (k.proto, k.vip)), board.as_ref())
                    .map_err(status)?;
                info!("counters zeroed");
                Ok(())
            })
            .await?;
        Ok(Response::new(pb::ZeroCountersResponse {}))
    }

    async fn get_timeouts(
        &self,
        _req: Request<pb::GetTimeoutsRequest>,
    ) -> Result<Response<pb::Timeouts>, Status> {
        let t = self
            .handle
            .call(|c| Ok(timeouts_pb(c.state.timeouts())))
            .await?;
        Ok(Response::new(t))
    }

    async fn set_timeouts(
        &self,
        req: Request<pb::Timeouts>,
    ) -> Result<Response<pb::Timeouts>, Status> {
        let t = req.into_inner();
        let r = self
            .handle
            .call(move |c| {
                c.mutate(|s, _, _| s.set_timeouts(t.tcp_s, t.tcp_fin_s, t.udp_s, t.tcp_syn_s))?;
                Ok(timeouts_pb(c.state.timeouts()))
            })
            .await?;
        Ok(Response::new(r))
    }

    async fn get_status(
        &self,
        _req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::Status>, Status> {
        let r = self.handle.call(|c| c.status()).await?;
        Ok(Response::new(r))
    }

    async fn set_server_health(
        &self,
        req: Request<pb::SetServerHealthRequest>,
    ) -> Result<Response<pb::SetServerHealthResponse>, Status> {
        let req = req.into_inner();
        let k = key(req.service.as_ref(), "service key")?;
        let ep = server(req.server.as_ref())?;
        let v = verdict(&req)?;
        let r = self.handle.call(move |c| c.set_health(k, ep, v)).await?;
        Ok(Response::new(r))
    }
}

// ---- listeners ---------------------------------------------------------------------------

/// Why the admin API cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// The socket path is taken by a live server.
    #[error("control socket {0} is in use by another process")]
    InUse(String),
    /// Anything else about the Unix socket.
    #[error("control socket {path}: {source}")]
    Unix {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TCP listener or its TLS files.
    #[error("control TCP listener: {0}")]
    Tcp(String),
    /// The metrics listener.
    #[error("metrics endpoint: {0}")]
    Metrics(String),
}

/// The bound listeners (bound before EAL init, served once the workers are up).
#[derive(Debug)]
pub struct Listeners {
    unix: std::os::unix::net::UnixListener,
    path: PathBuf,
    tcp: Option<(std::net::TcpListener, tonic::transport::ServerTlsConfig)>,
    metrics: Option<std::net::TcpListener>,
}

impl Listeners {
    /// The Unix socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds the Unix socket (creating its directory, replacing a stale socket, mode 0600) and,
/// if configured, the TCP listener with its TLS identity.
pub fn bind(cfg: &crate::config::ControlSection) -> Result<Listeners, ListenError> {
    use std::os::unix::fs::PermissionsExt;
    let path = PathBuf::from(&cfg.socket);
    let err = |source| ListenError::Unix {
        path: cfg.socket.clone(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if std::fs::symlink_metadata(&path).is_ok() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(ListenError::InUse(cfg.socket.clone()));
        }
        std::fs::remove_file(&path).map_err(err)?;
    }
    let unix = std::os::unix::net::UnixListener::bind(&path).map_err(err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    unix.set_nonblocking(true).map_err(err)?;
    let tcp = match (&cfg.tcp_listen, &cfg.tls_cert, &cfg.tls_key) {
        (Some(addr), Some(cert), Some(key)) => {
            let read = |p: &str| {
                std::fs::read(p).map_err(|e| ListenError::Tcp(format!("cannot read {p}: {e}")))
            };
            let mut tls = tonic::transport::ServerTlsConfig::new().identity(
                tonic::transport::Identity::from_pem(read(cert)?, read(key)?),
            );
            if let Some(ca) = &cfg.tls_client_ca {
                tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(ca)?));
            }
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| ListenError::Tcp(format!("cannot listen on {addr}: {e}")))?;
            l.set_nonblocking(true)
                .map_err(|e| ListenError::Tcp(e.to_string()))?;
            Some((l, tls))
        }
        (Some(addr), _, _) => {
            return Err(ListenError::Tcp(format!(
                "{addr}: TLS certificate and key are required"
            )));
        }
        _ => None,
    };
    let metrics = match cfg.metrics_listen {
        Some(addr) => {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| ListenError::Metrics(format!("cannot listen on {addr}: {e}")))?;
            l.set_nonblocking(true)
                .map_err(|e| ListenError::Metrics(e.to_string()))?;
            Some(l)
        }
        None => None,
    };
    Ok(Listeners {
        unix,
        path,
        tcp,
        metrics,
    })
}

/// Serves the admin API (with gRPC reflection, v1 and v1alpha) on the listeners until
/// `shutdown` resolves, then removes the socket. Run inside the tokio runtime.
pub async fn serve(
    listeners: Listeners,
    handle: ControlHandle,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), String> {
    use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
    let reflection = || {
        let b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET);
        let v1 = b.build_v1().map_err(|e| format!("reflection: {e}"))?;
        let b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tandem_proto::FILE_DESCRIPTOR_SET);
        let v1a = b.build_v1alpha().map_err(|e| format!("reflection: {e}"))?;
        Ok::<_, String>((v1, v1a))
    };
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let Listeners {
        unix,
        path,
        tcp,
        metrics,
    } = listeners;
    let metrics_server = match metrics {
        Some(l) => {
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
            let h = handle.clone();
            let source: crate::metrics::Source = Arc::new(move || {
                let h = h.clone();
                Box::pin(async move {
                    let status = h
                        .call(|c| c.status())
                        .await
                        .map_err(|s| s.message().to_string())?;
                    let services = h
                        .call(|c| c.list_services(None))
                        .await
                        .map_err(|s| s.message().to_string())?;
                    Ok((status, services))
                })
            });
            info!(%addr, "Prometheus metrics on http://{addr}/metrics");
            Some(tokio::spawn(crate::metrics::serve(
                l,
                source,
                stopped(shutdown.clone()),
            )))
        }
        None => None,
    };
    let unix = tokio::net::UnixListener::from_std(unix).map_err(|e| e.to_string())?;
    let (v1, v1a) = reflection()?;
    let unix_server = tonic::transport::Server::builder()
        .add_service(AdminServer::new(AdminService::new(handle.clone())))
        .add_service(v1)
        .add_service(v1a)
        .serve_with_incoming_shutdown(UnixListenerStream::new(unix), stopped(shutdown.clone()));
    info!(socket = %path.display(), "admin API listening");
    let tcp_server = match tcp {
        Some((l, tls)) => {
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            let l = tokio::net::TcpListener::from_std(l).map_err(|e| e.to_string())?;
            let (v1, v1a) = reflection()?;
            let server = tonic::transport::Server::builder()
                .tls_config(tls)
                .map_err(|e| format!("TLS: {e}"))?
                .add_service(AdminServer::new(AdminService::new(handle)))
                .add_service(v1)
                .add_service(v1a)
                .serve_with_incoming_shutdown(TcpListenerStream::new(l), stopped(shutdown));
            info!(%addr, "admin API listening on TCP (TLS)");
            Some(server)
        }
        None => None,
    };
    let result = match tcp_server {
        Some(t) => {
            let (a, b) = tokio::join!(unix_server, t);
            a.and(b)
        }
        None => unix_server.await,
    };
    let _ = std::fs::remove_file(&path);
    if let Some(m) = metrics_server {
        match m.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("metrics endpoint: {e}")),
            Err(e) => return Err(format!("metrics endpoint: {e}")),
        }
    }
    result.map_err(|e| format!("admin API server: {e}"))
}
