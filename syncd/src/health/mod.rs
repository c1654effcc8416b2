//! Health checks of real servers (keepalived's checkers, beside the role machine as they
//! are beside VRRP).
//!
//! - [`state`]: the sans-IO core: rise/fall per target and the schedule of its checks.
//! - [`check`]: the checkers (`tcp`, `http`/`https`, `udp`, `exec`), async and bounded.
//! - [`Targets`]: which real servers are checked with which [`Spec`] (the `[[check]]`
//!   blocks matched against the services the dataplane lists), their machines and counters.
//! - [`run`]: the task that drives them: lists the services every `poll_interval_ms` over
//!   the dataplane's admin socket, runs the due checks (at most one per target, at most
//!   `max_in_flight` in all), and — **only while this director is active** — reports every
//!   verdict to the dataplane (`Admin.SetServerHealth`): at each transition, at activation
//!   for every target with a verdict, and at each poll for any verdict the dataplane's
//!   listing does not show (a failed report is retried there). A standby checks and logs
//!   but never changes its dataplane: its view of a server may differ from the active's
//!   (a partition between the standby and a server), and the connections the active serves
//!   there must survive a failover. See docs/architecture.md.

pub mod check;
pub mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tandem_proto::admin as apb;
use tandem_proto::admin::admin_client::AdminClient;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint, Uri};
use tracing::{debug, info, warn};

pub use state::{Health, Transition};
use state::{Schedule, Verdict};

/// What a down verdict does to a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Served as weight 0: no new connections, existing ones continue.
    Quiesce,
    /// Out of the scheduler, its connections removed.
    Remove,
}

impl OnFailure {
    fn to_pb(self) -> apb::HealthAction {
        match self {
            OnFailure::Quiesce => apb::HealthAction::Quiesce,
            OnFailure::Remove => apb::HealthAction::Remove,
        }
    }
}

/// TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A virtual service: protocol, VIP, port (`tcp:192.0.2.10:80`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceSel {
    /// Protocol.
    pub proto: Proto,
    /// The VIP.
    pub vip: Ipv4Addr,
    /// The virtual port.
    pub port: u16,
}

impl ServiceSel {
    /// Parses `tcp:VIP:PORT` / `udp:VIP:PORT`; the error completes "`text` ...".
    pub fn parse(s: &str) -> Result<ServiceSel, String> {
        let usage = "is not a service (tcp:VIP:PORT or udp:VIP:PORT)";
        let (p, rest) = s.split_once(':').ok_or(usage)?;
        let proto = match p.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(usage.into()),
        };
        let a: SocketAddrV4 = rest.parse().map_err(|_| usage.to_string())?;
        if a.port() == 0 {
            return Err("has port 0".into());
        }
        Ok(ServiceSel {
            proto,
            vip: *a.ip(),
            port: a.port(),
        })
    }

    fn from_pb(k: &apb::ServiceKey) -> Option<ServiceSel> {
        let proto = match apb::Protocol::try_from(k.protocol).ok()? {
            apb::Protocol::Tcp => Proto::Tcp,
            apb::Protocol::Udp => Proto::Udp,
            apb::Protocol::Unspecified => return None,
        };
        Some(ServiceSel {
            proto,
            vip: k.address.parse().ok()?,
            port: u16::try_from(k.port).ok()?,
        })
    }

    fn to_pb(self) -> apb::ServiceKey {
        apb::ServiceKey {
            protocol: match self.proto {
                Proto::Tcp => apb::Protocol::Tcp,
                Proto::Udp => apb::Protocol::Udp,
            } as i32,
            address: self.vip.to_string(),
            port: self.port.into(),
        }
    }
}

impl fmt::Display for ServiceSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        write!(f, "{p} {}:{}", self.vip, self.port)
    }
}

/// A real server selector: an address, and a port or any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerSel {
    /// The address.
    pub address: Ipv4Addr,
    /// The port, or every port of the address.
    pub port: Option<u16>,
}

impl ServerSel {
    /// Parses `172.16.0.2` or `172.16.0.2:80`; the error completes "`text` ...".
    pub fn parse(s: &str) -> Result<ServerSel, String> {
        if let Ok(a) = s.parse::<SocketAddrV4>() {
            if a.port() == 0 {
                return Err("has port 0".into());
            }
            return Ok(ServerSel {
                address: *a.ip(),
                port: Some(a.port()),
            });
        }
        s.parse::<Ipv4Addr>()
            .map(|address| ServerSel {
                address,
                port: None,
            })
            .map_err(|_| "is not a real server (ADDRESS or ADDRESS:PORT)".into())
    }

    /// Whether it selects `server`.
    pub fn matches(&self, server: SocketAddrV4) -> bool {
        *server.ip() == self.address && self.port.is_none_or(|p| p == server.port())
    }

    /// Whether everything `other` selects, this selects too.
    pub fn covers(&self, other: &ServerSel) -> bool {
        self.address == other.address && (self.port.is_none() || self.port == other.port)
    }
}

impl fmt::Display for ServerSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

/// One server's check, resolved.
#[derive(Debug, Clone)]
pub struct Spec {
    /// What a check does.
    pub probe: check::Probe,
    /// The port checked instead of the server's.
    pub connect_port: Option<u16>,
    /// The source address.
    pub bind: Option<Ipv4Addr>,
    /// Between checks.
    pub interval: Duration,
    /// A check's bound.
    pub timeout: Duration,
    /// Successes to come back.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
    /// What down means.
    pub on_failure: OnFailure,
}

/// One `[[check]]` block, resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The service.
    pub service: ServiceSel,
    /// Only these servers, if set.
    pub servers: Option<Vec<ServerSel>>,
    /// The check of its servers.
    pub base: Spec,
    /// Per-server checks (the first match wins; a port-specific one is preferred).
    pub overrides: Vec<(ServerSel, Spec)>,
}

impl Plan {
    /// The check of `server`, if this plan checks it.
    pub fn spec_for(&self, server: SocketAddrV4) -> Option<&Spec> {
        if let Some(list) = &self.servers
            && !list.iter().any(|s| s.matches(server))
        {
            return None;
        }
        let exact = self
            .overrides
            .iter()
            .find(|(s, _)| s.port.is_some() && s.matches(server));
        let any = || self.overrides.iter().find(|(s, _)| s.matches(server));
        Some(exact.or_else(any).map_or(&self.base, |(_, spec)| spec))
    }
}

/// A checked real server: its service and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetKey {
    /// The virtual service.
    pub service: ServiceSel,
    /// The real server.
    pub server: SocketAddrV4,
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.service, self.server)
    }
}

/// What the dataplane's listing says of a server's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    /// UNSPECIFIED, UP or DOWN.
    pub state: apb::HealthState,
    /// The action in force.
    pub action: apb::HealthAction,
}

/// A service of the dataplane's listing: its servers and the health it reports for each.
pub type ListedService = (ServiceSel, Vec<(SocketAddrV4, Option<Reported>)>);

/// One target's machines and figures.
#[derive(Debug)]
struct Target {
    spec: Arc<Spec>,
    verdict: Verdict,
    schedule: Schedule,
    /// Increases when the spec changes: a result of an older check is judged all the same
    /// (it is one more result), but the key is the identity, this only shows in the status.
    checks: u64,
    failed_checks: u64,
    transitions: u64,
    since_unix_ms: u64,
    last: Option<Result<String, String>>,
    reported: Option<Reported>,
}

/// A check to start.
#[derive(Debug, Clone)]
pub struct Due {
    /// Whose.
    pub key: TargetKey,
    /// With what.
    pub spec: Arc<Spec>,
}

/// A transition, with what the log line and the dataplane need.
#[derive(Debug, Clone)]
pub struct Change {
    /// Whose.
    pub key: TargetKey,
    /// What changed.
    pub transition: Transition,
    /// The checker's name.
    pub checker: &'static str,
    /// The last result's detail or reason.
    pub reason: String,
    /// What down means for it.
    pub on_failure: OnFailure,
}

/// Figures of all targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Transitions to up (from unknown or down).
    pub went_up: u64,
    /// Transitions to down.
    pub went_down: u64,
    /// Checks run.
    pub checks: u64,
    /// Checks failed.
    pub failed_checks: u64,
    /// `SetServerHealth` calls the dataplane accepted.
    pub reports: u64,
    /// `SetServerHealth` calls that failed.
    pub report_failures: u64,
    /// Listings of the services that failed.
    pub list_failures: u64,
}

/// The checked targets (sans-IO: `now` in nanoseconds is given).
#[derive(Debug, Default)]
pub struct Targets {
    map: BTreeMap<TargetKey, Target>,
    seed: u64,
    /// Figures.
    pub counters: Counters,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn spec_same(a: &Spec, b: &Spec) -> bool {
    // Probes hold TLS configs (no Eq); their Debug text is a faithful enough identity.
    format!("{a:?}") == format!("{b:?}")
}

impl Targets {
    /// An empty set; `seed` spreads the first checks.
    pub fn new(seed: u64) -> Targets {
        Targets {
            seed,
            ..Targets::default()
        }
    }

    /// Brings the set in line with the dataplane's listing: a target for every listed
    /// server a plan checks (new ones get a fresh machine in `Unknown`), none for the rest.
    /// A changed spec keeps the target's state and runs. Returns (added, removed).
    pub fn sync(&mut self, plans: &[Plan], listing: &[ListedService], now: u64) -> (usize, usize) {
        let mut seen = std::collections::BTreeSet::new();
        let mut added = 0;
        for (service, servers) in listing {
            let Some(plan) = plans.iter().find(|p| p.service == *service) else {
                continue;
            };
            for &(server, reported) in servers {
                let Some(spec) = plan.spec_for(server) else {
                    continue;
                };
                let key = TargetKey {
                    service: *service,
                    server,
                };
                seen.insert(key);
                match self.map.get_mut(&key) {
                    Some(t) => {
                        t.reported = reported;
                        if !spec_same(&t.spec, spec) {
                            t.verdict.set_counts(spec.rise, spec.fall);
                            t.schedule
                                .set_interval(crate::repl::nanos(spec.interval), now);
                            t.spec = Arc::new(spec.clone());
                        }
                    }
                    None => {
                        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                        self.map.insert(
                            key,
                            Target {
                                spec: Arc::new(spec.clone()),
                                verdict: Verdict::new(spec.rise, spec.fall),
                                schedule: Schedule::new(
                                    crate::repl::nanos(spec.interval),
                                    self.seed,
                                    now,
                                ),
                                checks: 0,
                                failed_checks: 0,
                                transitions: 0,
                                since_unix_ms: unix_ms(),
                                last: None,
                                reported,
                            },
                        );
                        added += 1;
                    }
                }
            }
        }
        let before = self.map.len();
        self.map.retain(|k, _| seen.contains(k));
        (added, before - self.map.len())
    }

    /// Marks the due checks in flight and returns them (at most `limit`).
    pub fn due(&mut self, now: u64, limit: usize) -> Vec<Due> {
        let mut out = Vec::new();
        for (key, t) in &mut self.map {
            if out.len() >= limit {
                break;
            }
            if t.schedule.start_if_due(now) {
                out.push(Due {
                    key: *key,
                    spec: Arc::clone(&t.spec),
                });
            }
        }
        out
    }

    /// When the earliest check not in flight is due.
    pub fn next_due(&self) -> Option<u64> {
        self.map
            .values()
            .filter(|t| !t.schedule.in_flight())
            .map(|t| t.schedule.next_due())
            .min()
    }

    /// A check's result; the change it caused. A result for a target no longer checked is
    /// ignored.
    pub fn result(
        &mut self,
        key: &TargetKey,
        result: Result<String, String>,
        now: u64,
    ) -> Option<Change> {
        let t = self.map.get_mut(key)?;
        t.schedule.finish(now);
        t.checks += 1;
        self.counters.checks += 1;
        let ok = result.is_ok();
        if !ok {
            t.failed_checks += 1;
            self.counters.failed_checks += 1;
        }
        let reason = match &result {
            Ok(d) | Err(d) => d.clone(),
        };
        t.last = Some(result);
        let tr = t.verdict.record(ok)?;
        t.transitions += 1;
        t.since_unix_ms = unix_ms();
        match tr.to {
            Health::Down => self.counters.went_down += 1,
            _ => self.counters.went_up += 1,
        }
        Some(Change {
            key: *key,
            transition: tr,
            checker: t.spec.probe.name(),
            reason,
            on_failure: t.spec.on_failure,
        })
    }

    /// The `SetServerHealth` request for a target's current verdict (none while unknown).
    pub fn request(&self, key: &TargetKey) -> Option<apb::SetServerHealthRequest> {
        let t = self.map.get(key)?;
        let state = match t.verdict.state() {
            Health::Unknown => return None,
            Health::Up => apb::HealthState::Up,
            Health::Down => apb::HealthState::Down,
        };
        let reason = match &t.last {
            Some(Ok(d)) => format!("{d} ({} successes)", t.verdict.successes()),
            Some(Err(e)) => format!("{e} ({} failures)", t.verdict.failures()),
            None => String::new(),
        };
        Some(apb::SetServerHealthRequest {
            service: Some(key.service.to_pb()),
            server: Some(apb::ServerKey {
                address: key.server.ip().to_string(),
                port: key.server.port().into(),
            }),
            state: state as i32,
            action: t.spec.on_failure.to_pb() as i32,
            checker: t.spec.probe.name().to_string(),
            reason,
        })
    }

    /// Every target's key.
    pub fn keys(&self) -> std::collections::BTreeSet<TargetKey> {
        self.map.keys().copied().collect()
    }

    /// Listed servers the dataplane holds DOWN that no target checks. Those that were
    /// targets before a reload removed their check are reported UP ([`clear_request`]):
    /// nothing else would ever bring them back.
    pub fn unchecked_down(&self, listing: &[ListedService]) -> Vec<TargetKey> {
        let mut out = Vec::new();
        for (service, servers) in listing {
            for &(server, reported) in servers {
                let key = TargetKey {
                    service: *service,
                    server,
                };
                if reported.is_some_and(|r| r.state == apb::HealthState::Down)
                    && !self.map.contains_key(&key)
                {
                    out.push(key);
                }
            }
        }
        out
    }

    /// Targets with a verdict the dataplane's last listing does not show.
    pub fn out_of_step(&self) -> Vec<TargetKey> {
        self.map
            .iter()
            .filter(|(_, t)| {
                let want = match t.verdict.state() {
                    Health::Unknown => return false,
                    Health::Up => apb::HealthState::Up,
                    Health::Down => apb::HealthState::Down,
                };
                match t.reported {
                    None => true,
                    Some(r) => {
                        r.state != want
                            || (want == apb::HealthState::Down
                                && r.action != t.spec.on_failure.to_pb())
                    }
                }
            })
            .map(|(k, _)| *k)
            .collect()
    }

    /// Targets with a verdict.
    pub fn known(&self) -> Vec<TargetKey> {
        self.map
            .iter()
            .filter(|(_, t)| t.verdict.state() != Health::Unknown)
            .map(|(k, _)| *k)
            .collect()
    }

    /// A target's state.
    pub fn state(&self, key: &TargetKey) -> Option<Health> {
        self.map.get(key).map(|t| t.verdict.state())
    }

    /// How many targets.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The status file's `health.targets`.
    pub fn status(&self) -> serde_json::Value {
        let v: Vec<serde_json::Value> = self
            .map
            .iter()
            .map(|(k, t)| {
                let (last_ok, last) = match &t.last {
                    None => (None, None),
                    Some(Ok(d)) => (Some(true), Some(d.clone())),
                    Some(Err(e)) => (Some(false), Some(e.clone())),
                };
                serde_json::json!({
                    "service": k.service.to_string(),
                    "server": k.server.to_string(),
                    "checker": t.spec.probe.name(),
                    "state": t.verdict.state().as_str(),
                    "since_unix_ms": t.since_unix_ms,
                    "successes": t.verdict.successes(),
                    "failures": t.verdict.failures(),
                    "rise": t.spec.rise,
                    "fall": t.spec.fall,
                    "on_failure": match t.spec.on_failure { OnFailure::Quiesce => "quiesce", OnFailure::Remove => "remove" },
                    "last_ok": last_ok,
                    "last": last,
                    "checks": t.checks,
                    "failed_checks": t.failed_checks,
                    "transitions": t.transitions,
                    "dataplane": t.reported.map(|r| match r.state {
                        apb::HealthState::Up => "up",
                        apb::HealthState::Down => "down",
                        apb::HealthState::Unspecified => "unset",
                    }),
                })
            })
            .collect();
        serde_json::Value::Array(v)
    }
}

/// What the health task needs from the dataplane's admin API.
pub trait AdminApi: Clone + Send + Sync + 'static {
    /// `ListServices`.
    fn list_services(
        &self,
    ) -> impl Future<Output = Result<apb::ListServicesResponse, tonic::Status>> + Send;
    /// `SetServerHealth`.
    fn set_server_health(
        &self,
        req: apb::SetServerHealthRequest,
    ) -> impl Future<Output = Result<apb::SetServerHealthResponse, tonic::Status>> + Send;
}

/// The admin API client on the dataplane's Unix socket (connects lazily, reconnects on the
/// next call after a failure).
#[derive(Debug, Clone)]
pub struct GrpcAdmin {
    client: AdminClient<Channel>,
}

impl GrpcAdmin {
    /// A client of the socket at `path`.
    pub fn new(path: PathBuf) -> Result<GrpcAdmin, tonic::transport::Error> {
        let channel = Endpoint::try_from("http://dataplane.admin")?
            .connect_timeout(Duration::from_secs(1))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let s = tokio::net::UnixStream::connect(&path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(s))
                }
            }));
        Ok(GrpcAdmin {
            client: AdminClient::new(channel).max_decoding_message_size(64 << 20),
        })
    }
}

impl AdminApi for GrpcAdmin {
    fn list_services(
        &self,
    ) -> impl Future<Output = Result<apb::ListServicesResponse, tonic::Status>> + Send {
        let mut c = self.client.clone();
        async move {
            Ok(c.list_services(apb::ListServicesRequest { key: None })
                .await?
                .into_inner())
        }
    }

    fn set_server_health(
        &self,
        req: apb::SetServerHealthRequest,
    ) -> impl Future<Output = Result<apb::SetServerHealthResponse, tonic::Status>> + Send {
        let mut c = self.client.clone();
        async move { Ok(c.set_server_health(req).await?.into_inner()) }
    }
}

/// The report that lifts a DOWN verdict whose check was removed
/// ([`Targets::unchecked_down`]): UP, as a server without a check is served.
pub fn clear_request(key: &TargetKey) -> apb::SetServerHealthRequest {
    apb::SetServerHealthRequest {
        service: Some(key.service.to_pb()),
        server: Some(apb::ServerKey {
            address: key.server.ip().to_string(),
            port: key.server.port().into(),
        }),
        state: apb::HealthState::Up as i32,
        action: apb::HealthAction::Quiesce as i32,
        checker: "none".to_string(),
        reason: "no check covers this server any more".to_string(),
    }
}

/// The listing as the targets want it: every service's servers with their reported health.
type Listing = Vec<ListedService>;

fn listing(resp: &apb::ListServicesResponse) -> Listing {
    resp.services
        .iter()
        .filter_map(|s| {
            let key = s.config.as_ref()?.key.as_ref()?;
            let sel = ServiceSel::from_pb(key)?;
            let servers = s
                .servers
                .iter()
                .filter_map(|st| {
                    let k = st.config.as_ref()?.key.as_ref()?;
                    let addr =
                        SocketAddrV4::new(k.address.parse().ok()?, u16::try_from(k.port).ok()?);
                    let reported = st.health.as_ref().map(|h| Reported {
                        state: apb::HealthState::try_from(h.state)
                            .unwrap_or(apb::HealthState::Unspecified),
                        action: apb::HealthAction::try_from(h.action)
                            .unwrap_or(apb::HealthAction::Unspecified),
                    });
                    Some((addr, reported))
                })
                .collect();
            Some((sel, servers))
        })
        .collect()
}

/// How long one admin call may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Most `SetServerHealth` calls in flight.
const MAX_REPORTS_IN_FLIGHT: usize = 8;

/// The health task's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The checks.
    pub plans: Vec<Plan>,
    /// Between listings.
    pub poll_interval: Duration,
    /// Most checks at once.
    pub max_in_flight: usize,
}

enum Done {
    Check(TargetKey, Result<String, String>),
    Report(TargetKey, Result<apb::SetServerHealthResponse, String>),
}

/// Runs the health checks until `stop` turns true. `active` says whether this director is
/// active (only then are verdicts reported to the dataplane); the status (`health` in the
/// status file) is published on `status` after every change and listing. A new set of
/// checks on `reload` (the configuration file read again on SIGHUP) replaces the current one
/// at once: servers keep their state where their check's settings change, new ones start
/// `Unknown`, and servers no check covers any more are dropped (reported UP if the dataplane
/// holds them DOWN from their check). With no checks and no targets the dataplane is not
/// polled.
pub async fn run<A: AdminApi>(
    mut settings: Settings,
    admin: A,
    mut active: watch::Receiver<bool>,
    status: watch::Sender<serde_json::Value>,
    mut stop: watch::Receiver<bool>,
    mut reload: watch::Receiver<Vec<Plan>>,
) {
    let base = Instant::now();
    let now = || u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos().into())
        .unwrap_or(1);
    let mut targets = Targets::new(seed);
    let mut jobs: JoinSet<Done> = JoinSet::new();
    let mut checks_in_flight = 0usize;
    let mut reporting: std::collections::BTreeSet<TargetKey> = Default::default();
    // Targets whose verdict must be (re)sent as soon as a report slot is free.
    let mut to_report: std::collections::BTreeSet<TargetKey> = Default::default();
    let mut poll = tokio::time::interval(settings.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut list_failing = false;
    let mut report_failing = false;
    let mut is_active = *active.borrow_and_update();
    let mut list_jobs: JoinSet<Result<apb::ListServicesResponse, String>> = JoinSet::new();
    // When the listing in flight was asked for, and when each target's last report was
    // accepted: a listing asked for before a report landed may not show it yet, and is not
    // a reason to send it again.
    let mut list_asked = 0u64;
    let mut accepted: BTreeMap<TargetKey, u64> = BTreeMap::new();
    // DOWN verdicts whose check a reload removed, until the listing shows them lifted, and
    // those to (re)send after the last listing (see `Targets::unchecked_down`). A verdict
    // this task never held (a server nobody checks, set DOWN by hand) is left alone.
    let mut lifting: std::collections::BTreeSet<TargetKey> = Default::default();
    let mut to_clear: std::collections::BTreeSet<TargetKey> = Default::default();
    let mut reload_open = true;
    info!(
        checks = settings.plans.len(),
        active = is_active,
        "health checks starting"
    );
    loop {
        let publish;
        let wake = targets
            .next_due()
            .map(|d| base + Duration::from_nanos(d))
            .unwrap_or_else(|| Instant::now() + settings.poll_interval);
        tokio::select! {
            _ = stop.changed() => break,
            r = active.changed() => {
                if r.is_err() { break }
                let a = *active.borrow_and_update();
                if a && !is_active {
                    let known = targets.known();
                    info!(targets = known.len(), "active: reporting every known verdict to the dataplane");
                    to_report.extend(known);
                } else if !a && is_active {
                    to_report.clear();
                }
                is_active = a;
                publish = false;
            }
            r = reload.changed(), if reload_open => {
                match r {
                    Ok(()) => {
                        settings.plans = reload.borrow_and_update().clone();
                        info!(checks = settings.plans.len(), "health: checks reloaded");
                        poll.reset_immediately();
                    }
                    Err(_) => reload_open = false,
                }
                publish = false;
            }
            _ = poll.tick() => {
                // Nothing to check and no verdict to lift: the dataplane is left alone.
                let idle = settings.plans.is_empty() && targets.is_empty() && lifting.is_empty();
                if list_jobs.is_empty() && !idle {
                    list_asked = now();
                    let a = admin.clone();
                    list_jobs.spawn(async move {
                        match tokio::time::timeout(ADMIN_TIMEOUT, a.list_services()).await {
                            Ok(Ok(r)) => Ok(r),
                            Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
                            Err(_) => Err(format!("timed out after {} ms", ADMIN_TIMEOUT.as_millis())),
                        }
                    });
                }
                publish = false;
            }
            Some(r) = list_jobs.join_next() => {
                match r {
                    Ok(Ok(resp)) => {
                        if list_failing {
                            info!("health: listing the dataplane's services works again");
                        }
                        list_failing = false;
                        let listed = listing(&resp);
                        let before = targets.keys();
                        let (added, removed) = targets.sync(&settings.plans, &listed, now());
                        if added + removed > 0 {
                            info!(added, removed, targets = targets.len(), "health: checked servers changed");
                        }
                        let down: std::collections::BTreeSet<TargetKey> =
                            targets.unchecked_down(&listed).into_iter().collect();
                        lifting.extend(down.iter().filter(|k| before.contains(k)).copied());
                        lifting.retain(|k| down.contains(k));
                        to_clear = lifting.clone();
                        if is_active {
                            let stale = |k: &TargetKey| {
                                reporting.contains(k)
                                    || accepted.get(k).is_some_and(|&t| t >= list_asked)
                            };
                            to_report.extend(targets.out_of_step().into_iter().filter(|k| !stale(k)));
                        }
                        accepted.retain(|k, _| targets.state(k).is_some());
                    }
                    Ok(Err(e)) => {
                        targets.counters.list_failures += 1;
                        if !list_failing {
                            warn!(error = %e, "health: cannot list the dataplane's services (admin socket); keeping the known servers, retrying");
                        }
                        list_failing = true;
                    }
                    Err(e) => warn!(error = %e, "health: listing task failed"),
                }
                publish = true;
            }
            _ = tokio::time::sleep_until(wake), if checks_in_flight < settings.max_in_flight => {
                publish = false;
            }
            Some(r) = jobs.join_next(), if !jobs.is_empty() => {
                publish = true;
                match r {
                    Ok(Done::Check(key, res)) => {
                        checks_in_flight = checks_in_flight.saturating_sub(1);
                        if let Some(ch) = targets.result(&key, res, now()) {
                            log_change(&ch, is_active);
                            if is_active {
                                to_report.insert(ch.key);
                            }
                        }
                    }
                    Ok(Done::Report(key, res)) => {
                        reporting.remove(&key);
                        match res {
                            Ok(resp) => {
                                accepted.insert(key, now());
                                targets.counters.reports += 1;
                                if report_failing {
                                    info!("health: the dataplane takes verdicts again");
                                }
                                report_failing = false;
                                info!(target = %key, changed = resp.changed, message = %resp.message, "health: dataplane updated");
                            }
                            Err(e) => {
                                targets.counters.report_failures += 1;
                                if !report_failing {
                                    warn!(target = %key, error = %e, "health: cannot report a verdict to the dataplane (SetServerHealth); retrying at the next poll");
                                } else {
                                    debug!(target = %key, error = %e, "health: SetServerHealth failed again");
                                }
                                report_failing = true;
                            }
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "health: a check task failed");
                        checks_in_flight = checks_in_flight.saturating_sub(1);
                    }
                }
            }
        }
        // Start what is due.
        let room = settings.max_in_flight.saturating_sub(checks_in_flight);
        for d in targets.due(now(), room) {
            checks_in_flight += 1;
            let target = check::Target {
                addr: SocketAddrV4::new(
                    *d.key.server.ip(),
                    d.spec.connect_port.unwrap_or(d.key.server.port()),
                ),
                bind: d.spec.bind,
            };
            let service = d.key.service.to_string();
            jobs.spawn(async move {
                let r = check::run(&d.spec.probe, target, &service, d.spec.timeout).await;
                Done::Check(d.key, r)
            });
        }
        if is_active {
            send_reports(&mut to_report, &mut reporting, &mut jobs, &admin, |k| {
                targets.request(k)
            });
            send_reports(&mut to_clear, &mut reporting, &mut jobs, &admin, |k| {
                info!(target = %k, "health: no check covers this server any more: lifting its DOWN verdict");
                Some(clear_request(k))
            });
        }
        if publish {
            status.send_replace(status_json(&targets, is_active, list_failing));
        }
    }
    jobs.abort_all();
    list_jobs.abort_all();
}

/// Takes keys off `queue` while fewer than MAX_REPORTS_IN_FLIGHT reports are in flight and
/// sends what `request` makes of each (nothing for `None`); a key already in flight stays
/// queued for later.
fn send_reports<A: AdminApi>(
    queue: &mut std::collections::BTreeSet<TargetKey>,
    reporting: &mut std::collections::BTreeSet<TargetKey>,
    jobs: &mut JoinSet<Done>,
    admin: &A,
    mut request: impl FnMut(&TargetKey) -> Option<apb::SetServerHealthRequest>,
) {
    let mut taken = Vec::new();
    for key in queue.iter() {
        if reporting.len() >= MAX_REPORTS_IN_FLIGHT {
            break;
        }
        if reporting.contains(key) {
            continue;
        }
        taken.push(*key);
        if let Some(req) = request(key) {
            reporting.insert(*key);
            spawn_report(jobs, admin, *key, req);
        }
    }
    for k in taken {
        queue.remove(&k);
    }
}

/// Sends `req` about `key` to the dataplane in a job of its own (bounded by ADMIN_TIMEOUT).
fn spawn_report<A: AdminApi>(
    jobs: &mut JoinSet<Done>,
    admin: &A,
    key: TargetKey,
    req: apb::SetServerHealthRequest,
) {
    let a = admin.clone();
    jobs.spawn(async move {
        let r = match tokio::time::timeout(ADMIN_TIMEOUT, a.set_server_health(req)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
            Err(_) => Err(format!("timed out after {} ms", ADMIN_TIMEOUT.as_millis())),
        };
        Done::Report(key, r)
    });
}

fn log_change(ch: &Change, active: bool) {
    let role = if active {
        "active"
    } else {
        "standby: not applied"
    };
    match ch.transition.to {
        Health::Down => info!(
            action = ?ch.on_failure,
            role,
            "server down: {}, {}: {} ({} failures)",
            ch.key, ch.checker, ch.reason, ch.transition.count
        ),
        _ if ch.transition.from == Health::Unknown => info!(
            role,
            "server up (first check): {}, {}: {}", ch.key, ch.checker, ch.reason
        ),
        _ => info!(
            role,
            "server up: {}, {}: {} ({} successes)",
            ch.key,
            ch.checker,
            ch.reason,
            ch.transition.count
        ),
    }
}

fn status_json(t: &Targets, active: bool, list_failing: bool) -> serde_json::Value {
    let c = t.counters;
    serde_json::json!({
        "reporting": active,
        "listing": if list_failing { "failing" } else { "ok" },
        "went_up": c.went_up,
        "went_down": c.went_down,
        "checks": c.checks,
        "failed_checks": c.failed_checks,
        "reports": c.reports,
        "report_failures": c.report_failures,
        "list_failures": c.list_failures,
        "targets": t.status(),
    })
}
