//! The running configuration as the control plane holds it, and every change the admin API
//! can make to it: checked completely first, then applied completely, or refused with nothing
//! changed. Pure (no threads, no clock reads, no DPDK): what the lcores currently count is
//! asked through a [`Probe`], and the caller hands the resulting [`Apply`] to the workers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::balance::{DestTraffic, FlushTarget};
use tandem_core::conn::Timeouts;
use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};
use tandem_core::service::{DestSpec, ServiceSet, ServiceSpec};

use super::health::{self, Effect, Health, HealthKey, HealthMap, Verdict};
use crate::build;
use crate::config::Config;

/// How long a deleted real server's id stays retired at least, even when no lcore reports a
/// connection to it: covers the 1 ms staleness of the published counts and the time the new
/// snapshot takes to reach every lcore (their inboxes are read every millisecond).
pub const RETIRE_AT_LEAST: Duration = Duration::from_millis(100);

/// Why a change was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The request is wrong (bad value, conflicting configuration).
    #[error("{0}")]
    Invalid(String),
    /// It names a service or server that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It adds a service or server that exists already.
    #[error("{0}")]
    Exists(String),
}

/// What the control plane asks the lcores about.
pub trait Probe {
    /// Whether any lcore still has a connection (or template) of destination `id`.
    fn dest_in_use(&self, id: DestId) -> bool;
    /// Destination `id`'s traffic, cumulative since start, summed over the lcores.
    fn traffic(&self, id: DestId) -> DestTraffic;
}

/// What the workers must do for an applied change, in this order.
#[derive(Debug, Clone, Default)]
pub struct Apply {
    /// A new service snapshot.
    pub services: Option<Arc<ServiceSet>>,
    /// Connections to remove now (deleted with `flush`).
    pub flush: Vec<FlushTarget>,
    /// New connection timeouts.
    pub timeouts: Option<Timeouts>,
}

/// The outcome of a change (or of a dry run).
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// One human line per change.
    pub lines: Vec<String>,
    /// The generation running after it.
    pub generation: u64,
    /// What the workers must do (`None` for a dry run or when nothing changed).
    pub apply: Option<Apply>,
}

/// Rates per second, kept as an exponentially weighted moving average.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Connections per second.
    pub conns: f64,
    /// Packets in per second.
    pub packets_in: f64,
    /// Packets out per second.
    pub packets_out: f64,
    /// Bytes in per second.
    pub bytes_in: f64,
    /// Bytes out per second.
    pub bytes_out: f64,
}

impl Rates {
    /// Adds `o` (a service's rates are the sum of its servers').
    pub fn add(&mut self, o: &Rates) {
        self.conns += o.conns;
        self.packets_in += o.packets_in;
        self.packets_out += o.packets_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
    }
}

fn sub(a: &DestTraffic, b: &DestTraffic) -> DestTraffic {
    DestTraffic {
        conns: a.conns.saturating_sub(b.conns),
        packets_in: a.packets_in.saturating_sub(b.packets_in),
        packets_out: a.packets_out.saturating_sub(b.packets_out),
        bytes_in: a.bytes_in.saturating_sub(b.bytes_in),
        bytes_out: a.bytes_out.saturating_sub(b.bytes_out),
    }
}

/// Adds `b` to `a`.
pub fn add_traffic(a: &mut DestTraffic, b: &DestTraffic) {
    a.conns += b.conns;
    a.packets_in += b.packets_in;
    a.packets_out += b.packets_out;
    a.bytes_in += b.bytes_in;
    a.bytes_out += b.bytes_out;
}

/// `TCP 203.0.113.10:80`
pub fn service_name(proto: Protocol, vip: Endpoint) -> String {
    let p = match proto {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    };
    format!("{p} {vip}")
}

fn method_name(m: ForwardMethod) -> &'static str {
    match m {
        ForwardMethod::Nat => "nat",
        ForwardMethod::Tunnel => "tun",
        ForwardMethod::DirectRoute => "dr",
    }
}

fn flags_text(s: &ServiceSpec) -> String {
    let f: Vec<String> = s
        .options
        .flags(s.scheduler)
        .iter()
        .map(|f| f.to_string())
        .collect();
    if f.is_empty() {
        "none".into()
    } else {
        f.join(",")
    }
}

fn persistence_text(s: &ServiceSpec) -> String {
    match s.persistence {
        None => "none".into(),
        Some(p) => format!("{} s netmask {}", p.timeout / 1_000_000_000, p.netmask),
    }
}

/// What a health verdict did.
#[derive(Debug, Clone, Default)]
pub struct HealthChange {
    /// One human line, e.g. `TCP 203.0.113.10:80 -> 172.16.0.2:80 down (quiesced): refused`.
    pub line: String,
    /// Whether the verdict differs from the one in force (state, or action when DOWN).
    pub changed: bool,
    /// Whether the server's state changed (counted, and logged at info).
    pub state_changed: bool,
    /// The generation running after it.
    pub generation: u64,
    /// What the workers must do (`None` when what they serve did not change).
    pub apply: Option<Apply>,
}

/// The running configuration. See the [module docs](self).
///
/// Two snapshots are kept: `configured` numbers every configured real server (the ids and
/// counters of the listing), and `set`, built from it, is what the workers are given, with
/// the health verdicts applied ([`health::effective_specs`]). Every server of `set` has its id
/// from `configured`, so a server a verdict took out comes back with its id and counters.
#[derive(Debug)]
pub struct ControlState {
    config_path: PathBuf,
    /// The file as the process started with it: VIPs, ports and everything that needs a
    /// restart to change.
    config: Config,
    specs: Vec<ServiceSpec>,
    /// The configured services and servers, with their stable ids.
    configured: ServiceSet,
    /// What the workers serve: `configured` with the verdicts applied.
    set: Arc<ServiceSet>,
    /// The last verdict on each server that has one.
    health: HealthMap,
    generation: u64,
    timeouts: Timeouts,
    max_dests: usize,
    /// Ids of deleted real servers still retired, with their service and when.
    retired: HashMap<DestId, (ServiceId, Instant)>,
    /// Per destination id: the cumulative traffic at the last zeroing or (re)assignment.
    baselines: Vec<DestTraffic>,
    /// Per destination id: the cumulative traffic at the last estimation, and the rates.
    last: Vec<DestTraffic>,
    rates: Vec<Rates>,
}

impl ControlState {
    /// The state for a process started with `config` (read from `config_path`); the service
    /// snapshot is numbered densely. `timeouts` are the workers' initial ones.
    pub fn new(
        config_path: &Path,
        config: Config,
        timeouts: Timeouts,
        max_dests: usize,
    ) -> Result<Self, ControlError> {
        let specs = build::service_specs(&config).map_err(ControlError::Invalid)?;
        let set =
            ServiceSet::new(&specs, max_dests).map_err(|e| ControlError::Invalid(e.to_string()))?;
        Ok(ControlState {
            config_path: config_path.to_path_buf(),
            config,
            specs,
            configured: set.clone(),
            set: Arc::new(set),
            health: HashMap::new(),
            generation: 1,
            timeouts,
            max_dests,
            retired: HashMap::new(),
            baselines: vec![DestTraffic::default(); max_dests],
            last: vec![DestTraffic::default(); max_dests],
            rates: vec![Rates::default(); max_dests],
        })
    }

    /// The running services as configured.
    pub fn specs(&self) -> &[ServiceSpec] {
        &self.specs
    }

    /// The running snapshot (what the workers were given last: the configured services with
    /// the health verdicts applied).
    pub fn set(&self) -> &Arc<ServiceSet> {
        &self.set
    }

    /// The configured services and servers with their ids (every configured server, whatever
    /// its health): what listings and counters go by.
    pub fn configured(&self) -> &ServiceSet {
        &self.configured
    }

    /// The last verdict on server `server` of service (`proto`, `vip`), if any.
    pub fn health(&self, proto: Protocol, vip: Endpoint, server: Endpoint) -> Option<&Health> {
        self.health.get(&(proto, vip, server))
    }

    /// The configuration generation: 1 at start, one more per applied change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The running connection timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    // ---- services ------------------------------------------------------------------------

    fn position(&self, proto: Protocol, vip: Endpoint) -> Result<usize, ControlError> {
        self.specs
            .iter()
            .position(|s| s.proto == proto && s.vip == vip)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "no service {} (add it first)",
                    service_name(proto, vip)
                ))
            })
    }

    /// ipvsadm -A: adds a service (with its servers).
    pub fn add_service(
        &mut self,
        spec: ServiceSpec,
        probe: &dyn Probe,
        now: Instant,
    ) -> Result<Change, ControlError> {
        self.change(probe, now, false, false, |specs| {
            if specs
                .iter()
                .any(|s| s.proto == spec.proto && s.vip == spec.vip)
            {
                return Err(ControlError::Exists(format!(
                    "service {} already exists",
                    service_name(spec.proto, spec.vip)
                )));
            }
            specs.push(spec);
            Ok(())
        })
    }

    /// ipvsadm -E: `edit` changes the service's settings (its servers are kept whatever it
    /// does to `dests`).
    pub fn edit_service(
        &mut self,
        proto: Protocol,
        vip: Endpoint,
        edit: impl FnOnce(&mut ServiceSpec) -> Result<(), ControlError>,
        probe: &dyn Probe,
        now: Instant,
    ) -> Result<Change, ControlError> {
        let i = self.position(proto, vip)?;
        self.change(probe, now, false, false, |specs| {
            let s = &mut specs[i];
            let dests = s.dests.clone();
            edit(s)?;
            s.dests = dests;
            Ok(())
        })
    }

    /// ipvsadm -D: deletes a service; its connections drain unless `flush`.
    pub fn delete_service(
        &mut self,
        proto: Protocol,
        vip: Endpoint,
        flush: bool,
        probe: &dyn Probe,
        now: Instant,
    ) -> Result<Change, ControlError> {
        let i = self.position(proto, vip)?;
        self.change(probe, now, false, flush, |specs| {
            specs.remove(i);
            Ok(())
        })
    }

    /// ipvsadm -a: adds a real server to a service.
    pub fn add_server(
        &mut self,
        proto: Protocol,
        vip: Endpoint,
        dest: DestSpec,
        probe: &dyn Probe,
        now: Instant,
    ) -> Result<Change, ControlError> {
        let i = self.position(proto, vip)?;
        self.change(probe, now, false, false, |specs| {
            let s = &mut specs[i];
            if s.dests
                .iter()
                .any(|d| d.addr == dest.addr && d.port == dest.port)
            {
                return Err(ControlError::Exists(format!(
                    "server {}:{} of {} already exists",
                    dest.addr,
                    dest.port,
                    service_name(proto, vip)
                )));
            }
            s.dests.push(dest);
            Ok(())
        })
    }

    fn server_position(
        &self,
        i: usize,
        server: Endpoint,
        proto: Protocol,
        vip: Endpoint,
    ) -> Result<usize, ControlError> {
        self.specs[i]
            .dests
            .iter()
            .position(|d| d.addr == server.addr && d.port == server.port)
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "no server {server} in service {}",
                    service_name(proto, vip)
                ))
            })
    }

    /// ipvsadm -e: changes a real server's method and/or weight.
    #[allow(clippy::too_many_arguments)]
    pub fn edit_server(
        &mut self,
        proto: Protocol,
        vip: Endpoint,
        server: Endpoint,
        method: Option<ForwardMethod>,
        weight: Option<u32>,
        probe: &dyn Probe,
        now: Instant,
    ) -> Result<Change, ControlError> {
        let i = self.position(proto, vip)?;
        let j = self.server_position(i, server, proto, vip)?;
        self.change(probe, now, false, false, |specs| {
            let d = &mut specs[i].dests[j];
            if let Some(m) = method {
                d.method = m;
            }
            if let Some(w) = weight {
                d.weight = w;
            }
            Ok(())
        })
    }

    /// ipvsadm -d: deletes a real server; its connections drain unless `flush`.
    pub fn delete_server(
        &mut self,
        proto: Protocol,
        vip: Endpoint,
        server: Endpoint,
        flush: bool,
        probe: &dyn Probe,
        now: Instant,
    ) -> Result<Change, ControlError> {
        let i = self.position(proto, vip)?;
        let j = self.server_position(i, server, proto, vip)?;
        self.change(probe, now, false, flush, |specs| {
            specs[i].dests.remove(j);
            Ok(())
        })
    }

    /// ipvsadm -R / -C: replaces every service (connections of deleted ones drain).
    pub fn replace(
        &mut self,
        specs: Vec<ServiceSpec>,
        dry_run: bool,
        probe: &dyn Probe,
        now: Instant,
    ) -> Result<Change, ControlError> {
        self.change(probe, now, dry_run, false, |s| {
            *s = specs;
            Ok(())
        })
    }

    /// Re-reads the configuration file and applies its services and timeouts. Changes to
    /// anything else (EAL, dataplane, ports, VIPs, routes, table size, control) are reported
    /// as needing a restart and not applied. A file with an error changes nothing.
    pub fn reload(
        &mut self,
        dry_run: bool,
        probe: &dyn Probe,
        now: Instant,
    ) -> Result<Change, ControlError> {
        let file =
            Config::load(&self.config_path).map_err(|e| ControlError::Invalid(e.to_string()))?;
        let specs = build::service_specs(&file).map_err(ControlError::Invalid)?;
        let mut restart = Vec::new();
        let c = &self.config;
        for (what, differs) in [
            ("[eal]", file.eal != c.eal),
            ("[dataplane]", file.dataplane != c.dataplane),
            ("[[port]]", file.ports != c.ports),
            ("[[vip]]", file.vips != c.vips),
            ("[[route]]", file.routes != c.routes),
            (
                "connections.max_per_lcore",
                file.connections.max_per_lcore != c.connections.max_per_lcore,
            ),
            ("[control]", file.control != c.control),
            ("[sync]", file.sync != c.sync),
        ] {
            if differs {
                restart.push(format!("{what} changed: needs a restart, not applied"));
            }
        }
        let timeouts = build::timeouts(&file.connections);
        // Check the timeouts before anything is applied.
        let timeouts_changed = timeouts != self.timeouts;
        let mut change = self.change(probe, now, dry_run, false, |s| {
            *s = specs;
            Ok(())
        })?;
        if timeouts_changed {
            change.lines.push(timeouts_line(&self.timeouts, &timeouts));
            if !dry_run {
                self.timeouts = timeouts;
                if change.apply.is_none() {
                    self.generation += 1;
                    change.generation = self.generation;
                }
                change.apply.get_or_insert_with(Apply::default).timeouts = Some(timeouts);
            }
        }
        change.lines.extend(restart);
        Ok(change)
    }

    /// ipvsadm --set tcp tcpfin udp (and SYN_RECV); a zero leaves that timeout unchanged.
    pub fn set_timeouts(
        &mut self,
        tcp_s: u32,
        tcp_fin_s: u32,
        udp_s: u32,
        tcp_syn_s: u32,
    ) -> Result<Change, ControlError> {
        let mut t = self.timeouts;
        let s = |v: u32| Duration::from_secs(u64::from(v));
        t.set_ipvsadm(s(tcp_s), s(tcp_fin_s), s(udp_s));
        if tcp_syn_s != 0 {
            t.syn_recv = s(tcp_syn_s);
        }
        // A timeout must fit u32 milliseconds (the connection table's limit).
        for (name, v) in [
            ("tcp", tcp_s),
            ("tcp_fin", tcp_fin_s),
            ("udp", udp_s),
            ("tcp_syn", tcp_syn_s),
        ] {
            if u64::from(v) * 1000 > u64::from(u32::MAX) {
                return Err(ControlError::Invalid(format!(
                    "timeout {name} = {v} s is too long (at most {} s)",
                    u32::MAX / 1000
                )));
            }
        }
        if t == self.timeouts {
            return Ok(Change {
                lines: vec![],
                generation: self.generation,
                apply: None,
            });
        }
        let line = timeouts_line(&self.timeouts, &t);
        self.timeouts = t;
        self.generation += 1;
        Ok(Change {
            lines: vec![line],
            generation: self.generation,
            apply: Some(Apply {
                timeouts: Some(t),
                ..Apply::default()
            }),
        })
    }

    /// A health checker's verdict on server `server` of service (`proto`, `vip`)
    /// (`Admin.SetServerHealth`). An unknown service or server is refused with nothing
    /// changed. The verdict is recorded (`since_unix_ms` = `now_unix_ms` when the state
    /// changes) and, when it changes what the workers serve, a new snapshot is built from the
    /// configured one (ids kept) and handed to them, with the server's connections flushed
    /// when it is removed. The same verdict again changes nothing (its checker and reason are
    /// still recorded).
    pub fn set_health(
        &mut self,
        proto: Protocol,
        vip: Endpoint,
        server: Endpoint,
        verdict: Verdict,
        now_unix_ms: u64,
    ) -> Result<HealthChange, ControlError> {
        let i = self.position(proto, vip)?;
        let j = self.server_position(i, server, proto, vip)?;
        let configured_weight = self.specs[i].dests[j].weight;
        // The weight the workers serve the server with (`None`: not at all).
        let served = |e: Effect| match e {
            Effect::Configured => Some(configured_weight),
            Effect::Quiesced => Some(0),
            Effect::Removed => None,
        };
        let key: HealthKey = (proto, vip, server);
        let old = self.health.get(&key);
        let old_effect = health::effect(&self.health, &key);
        let changed = old.is_none_or(|h| !h.verdict.same_as(&verdict));
        let state_changed = old.is_none_or(|h| h.verdict.state != verdict.state);
        let entry = Health {
            since_unix_ms: match old {
                Some(h) if !state_changed => h.since_unix_ms,
                _ => now_unix_ms,
            },
            changes: old
                .map_or(0, |h| h.changes)
                .saturating_add(u64::from(state_changed)),
            verdict,
        };
        let mut line = format!(
            "{} -> {server} {}{}",
            service_name(proto, vip),
            if changed { "" } else { "still " },
            entry.verdict.describe(changed)
        );
        if !entry.verdict.reason.is_empty() {
            line.push_str(": ");
            line.push_str(&entry.verdict.reason);
        }
        let new_effect = entry.verdict.effect();
        let mut health = self.health.clone();
        health.insert(key, entry);
        if served(new_effect) == served(old_effect) {
            // What the workers serve is unchanged (no verdict -> UP, a weight-0 server
            // quiesced, the same verdict again): nothing to publish.
            self.health = health;
            return Ok(HealthChange {
                line,
                changed,
                state_changed,
                generation: self.generation,
                apply: None,
            });
        }
        let set = effective_set(&self.specs, &health, &self.configured, self.max_dests)?;
        let flush = if new_effect == Effect::Removed {
            vec![FlushTarget::Server { proto, vip, server }]
        } else {
            vec![]
        };
        self.health = health;
        self.set = Arc::new(set);
        self.generation += 1;
        Ok(HealthChange {
            line,
            changed,
            state_changed,
            generation: self.generation,
            apply: Some(Apply {
                services: Some(Arc::clone(&self.set)),
                flush,
                timeouts: None,
            }),
        })
    }

    /// The core of every service change: `f` edits a copy of the services; the result is
    /// checked completely, diffed, and (unless `dry_run`) becomes the running state.
    fn change(
        &mut self,
        probe: &dyn Probe,
        now: Instant,
        dry_run: bool,
        flush: bool,
        f: impl FnOnce(&mut Vec<ServiceSpec>) -> Result<(), ControlError>,
    ) -> Result<Change, ControlError> {
        let mut specs = self.specs.clone();
        f(&mut specs)?;
        self.check(&specs)?;
        // Retired ids are released once no lcore reports a connection to them.
        self.retired.retain(|id, (_, since)| {
            now.saturating_duration_since(*since) < RETIRE_AT_LEAST || probe.dest_in_use(*id)
        });
        let retired = &self.retired;
        let configured = ServiceSet::with_previous(
            &specs,
            self.max_dests,
            &self.configured,
            |s| retired.values().any(|(svc, _)| *svc == s),
            |d| retired.contains_key(&d),
        )
        .map_err(|e| ControlError::Invalid(e.to_string()))?;
        // Verdicts stay while their server exists (by service and server key).
        let health = health::kept_for(&self.health, &specs);
        let set = effective_set(&specs, &health, &configured, self.max_dests)?;
        let (lines, flushes) = diff(&self.specs, &specs, flush);
        if dry_run || lines.is_empty() {
            return Ok(Change {
                lines,
                generation: self.generation,
                apply: None,
            });
        }
        // Ids that left the configuration are retired; ids that (re)appear start from a
        // fresh baseline. (A server a verdict took out of `set` keeps its id: it is still
        // configured.)
        for d in self.configured.dests() {
            if configured.dest(d.id).is_none_or(|n| n.service != d.service) {
                self.retired.insert(d.id, (d.service, now));
            }
        }
        for d in configured.dests() {
            let fresh = self
                .configured
                .dest(d.id)
                .is_none_or(|o| o.service != d.service || o.endpoint != d.endpoint);
            if fresh {
                self.rebase(d.id, probe);
            }
        }
        self.specs = specs;
        self.configured = configured;
        self.health = health;
        self.set = Arc::new(set);
        self.generation += 1;
        Ok(Change {
            lines,
            generation: self.generation,
            apply: Some(Apply {
                services: Some(Arc::clone(&self.set)),
                flush: flushes,
                timeouts: None,
            }),
        })
    }

    /// The checks the core cannot make: VIPs and the director's own addresses.
    fn check(&self, specs: &[ServiceSpec]) -> Result<(), ControlError> {
        let c = &self.config;
        for s in specs {
            let name = service_name(s.proto, s.vip);
            if !c.vips.iter().any(|v| v.address == s.vip.addr) {
                let vips: Vec<String> = c.vips.iter().map(|v| v.address.to_string()).collect();
                return Err(ControlError::Invalid(format!(
                    "service {name}: address {} is not a VIP of this director (declared [[vip]]: {}; \
                     adding a VIP needs a restart)",
                    s.vip.addr,
                    if vips.is_empty() {
                        "none".into()
                    } else {
                        vips.join(", ")
                    }
                )));
            }
            for d in &s.dests {
                let ep = Endpoint::new(d.addr, d.port);
                if d.weight > tandem_proto::MAX_WEIGHT {
                    return Err(ControlError::Invalid(format!(
                        "server {ep} of {name}: weight {} is out of range (0-65535)",
                        d.weight
                    )));
                }
                if c.ports.iter().any(|p| p.address.addr == d.addr)
                    || c.vips.iter().any(|v| v.address == d.addr)
                {
                    return Err(ControlError::Invalid(format!(
                        "server {ep} of {name}: {} is the director's own address",
                        d.addr
                    )));
                }
                if d.method == ForwardMethod::DirectRoute
                    && !c
                        .ports
                        .iter()
                        .any(|p| crate::config::same_subnet(p.address, d.addr))
                {
                    return Err(ControlError::Invalid(format!(
                        "server {ep} of {name}: direct routing needs the server on a port's subnet"
                    )));
                }
            }
        }
        Ok(())
    }

    // ---- counters --------------------------------------------------------------------------

    fn rebase(&mut self, id: DestId, probe: &dyn Probe) {
        let now = probe.traffic(id);
        let i = id.0 as usize;
        if let (Some(b), Some(l), Some(r)) = (
            self.baselines.get_mut(i),
            self.last.get_mut(i),
            self.rates.get_mut(i),
        ) {
            *b = now;
            *l = now;
            *r = Rates::default();
        }
    }

    /// ipvsadm -Z: zeroes the counters (and rates) of every server, or of one service's.
    pub fn zero(
        &mut self,
        service: Option<(Protocol, Endpoint)>,
        probe: &dyn Probe,
    ) -> Result<(), ControlError> {
        let set = &self.configured;
        let ids: Vec<DestId> = match service {
            None => set.dests().iter().map(|d| d.id).collect(),
            Some((proto, vip)) => {
                let svc = set.lookup(proto, vip).ok_or_else(|| {
                    ControlError::NotFound(format!("no service {}", service_name(proto, vip)))
                })?;
                set.service_dests(svc).iter().map(|d| d.id).collect()
            }
        };
        for id in ids {
            self.rebase(id, probe);
        }
        Ok(())
    }

    /// Destination `id`'s counters since the last zeroing (or since it got its id).
    pub fn stats(&self, id: DestId, probe: &dyn Probe) -> DestTraffic {
        let base = self
            .baselines
            .get(id.0 as usize)
            .copied()
            .unwrap_or_default();
        sub(&probe.traffic(id), &base)
    }

    /// Destination `id`'s rates.
    pub fn rates(&self, id: DestId) -> Rates {
        self.rates.get(id.0 as usize).copied().unwrap_or_default()
    }

    /// The rate estimator, run every `interval` (2 s, like the kernel's `ip_vs_est`): each
    /// rate moves a quarter of the way towards the rate over the last interval (the kernel's
    /// `avg += (rate - avg) >> 2`), so a step change shows within a few runs and noise is
    /// smoothed.
    pub fn estimate(&mut self, interval: Duration, probe: &dyn Probe) {
        let secs = interval.as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        for d in self.configured.dests() {
            let i = d.id.0 as usize;
            let cur = probe.traffic(d.id);
            let (Some(last), Some(r)) = (self.last.get_mut(i), self.rates.get_mut(i)) else {
                continue;
            };
            let delta = sub(&cur, last);
            let ewma = |avg: &mut f64, n: u64| *avg += (n as f64 / secs - *avg) / 4.0;
            ewma(&mut r.conns, delta.conns);
            ewma(&mut r.packets_in, delta.packets_in);
            ewma(&mut r.packets_out, delta.packets_out);
            ewma(&mut r.bytes_in, delta.bytes_in);
            ewma(&mut r.bytes_out, delta.bytes_out);
            *last = cur;
        }
    }
}

/// The snapshot the workers are given: `specs` with the verdicts in `health` applied, every
/// server numbered as in `configured` (the snapshot of `specs` itself), so nothing new is
/// numbered and a server a verdict took out gets its id back.
fn effective_set(
    specs: &[ServiceSpec],
    health: &HealthMap,
    configured: &ServiceSet,
    max_dests: usize,
) -> Result<ServiceSet, ControlError> {
    ServiceSet::with_previous(
        &health::effective_specs(specs, health),
        max_dests,
        configured,
        |_| false,
        |_| false,
    )
    .map_err(|e| ControlError::Invalid(e.to_string()))
}

fn timeouts_line(old: &Timeouts, new: &Timeouts) -> String {
    let s = |d: Duration| d.as_secs();
    format!(
        "timeouts tcp {} -> {}, tcpfin {} -> {}, udp {} -> {}, tcp_syn {} -> {}",
        s(old.established),
        s(new.established),
        s(old.fin_wait),
        s(new.fin_wait),
        s(old.udp),
        s(new.udp),
        s(old.syn_recv),
        s(new.syn_recv)
    )
}

/// One line per change from `old` to `new`, and the flushes a deletion with `flush` asks for.
pub fn diff(
    old: &[ServiceSpec],
    new: &[ServiceSpec],
    flush: bool,
) -> (Vec<String>, Vec<FlushTarget>) {
    let mut lines = Vec::new();
    let mut flushes = Vec::new();
    let drain = if flush {
        "connections flushed"
    } else {
        "connections drain"
    };
    let find = |list: &'_ [ServiceSpec], s: &ServiceSpec| -> Option<usize> {
        list.iter()
            .position(|x| x.proto == s.proto && x.vip == s.vip)
    };
    for o in old {
        if find(new, o).is_none() {
            lines.push(format!(
                "deleted service {} ({drain})",
                service_name(o.proto, o.vip)
            ));
            if flush {
                flushes.push(FlushTarget::Service {
                    proto: o.proto,
                    vip: o.vip,
                });
            }
        }
    }
    for n in new {
        let name = service_name(n.proto, n.vip);
        let Some(o) = find(old, n).map(|i| &old[i]) else {
            lines.push(format!("added service {name} ({})", n.scheduler.name()));
            for d in &n.dests {
                lines.push(format!(
                    "added server {}:{} to {name} ({} weight {})",
                    d.addr,
                    d.port,
                    method_name(d.method),
                    d.weight
                ));
            }
            continue;
        };
        if o.scheduler != n.scheduler {
            lines.push(format!(
                "service {name}: scheduler {} -> {}",
                o.scheduler.name(),
                n.scheduler.name()
            ));
        }
        if flags_text(o) != flags_text(n) {
            lines.push(format!(
                "service {name}: flags {} -> {}",
                flags_text(o),
                flags_text(n)
            ));
        } else if o.options != n.options && o.scheduler == n.scheduler {
            lines.push(format!("service {name}: scheduler options changed"));
        }
        if o.persistence != n.persistence {
            lines.push(format!(
                "service {name}: persistence {} -> {}",
                persistence_text(o),
                persistence_text(n)
            ));
        }
        for od in &o.dests {
            if !n
                .dests
                .iter()
                .any(|d| d.addr == od.addr && d.port == od.port)
            {
                lines.push(format!(
                    "deleted server {}:{} from {name} ({drain})",
                    od.addr, od.port
                ));
                if flush {
                    flushes.push(FlushTarget::Server {
                        proto: n.proto,
                        vip: n.vip,
                        server: Endpoint::new(od.addr, od.port),
                    });
                }
            }
        }
        for nd in &n.dests {
            let ep = format!("{}:{}", nd.addr, nd.port);
            match o
                .dests
                .iter()
                .find(|d| d.addr == nd.addr && d.port == nd.port)
            {
                None => lines.push(format!(
                    "added server {ep} to {name} ({} weight {})",
                    method_name(nd.method),
                    nd.weight
                )),
                Some(od) => {
                    if od.method != nd.method {
                        lines.push(format!(
                            "server {ep} of {name}: method {} -> {}",
                            method_name(od.method),
                            method_name(nd.method)
                        ));
                    }
                    if od.weight != nd.weight {
                        lines.push(format!(
                            "server {ep} of {name}: weight {} -> {}",
                            od.weight, nd.weight
                        ));
                    }
                }
            }
        }
    }
    (lines, flushes)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
