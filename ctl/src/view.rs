//! What `tandemctl` prints: the JSON documents (`-o json`) and the tables an ipvsadm user
//! knows. Both are built from the admin API's responses, so the lead's tests (and anything
//! else) can render a hand-made response without a server.
//!
//! # JSON schema (stable; fields are only ever added)
//!
//! * `list`, `stats`, `rate`: `{"generation": u64, "role": string|null,
//!   "counts_staleness_ms": u32, "services": [Service]}` where Service is
//!   `{"protocol": "tcp"|"udp", "address": string, "port": u32, "scheduler": string,
//!   "flags": [string], "persistence_timeout_s": u32 (0 = not persistent),
//!   "persistence_netmask": string|null, "stats": Stats, "rates": Rates,
//!   "servers": [Server]}`, Server is `{"address", "port", "method": "nat"|"tunnel"|
//!   "direct_route", "weight" (configured, whatever the health), "active_connections",
//!   "inactive_connections", "health": Health|null (null: no checker has reported), "stats",
//!   "rates"}`, Health is `{"state": "up"|"down", "action": "quiesce"|"remove" (what DOWN
//!   does), "checker": string, "reason": string, "since_unix_ms": u64 (when the state last
//!   changed), "changes": u64 (state changes so far)}`, Stats is `{"connections", "packets_in", "packets_out", "bytes_in",
//!   "bytes_out"}` and Rates is `{"connections_per_s", "packets_in_per_s",
//!   "packets_out_per_s", "bytes_in_per_s", "bytes_out_per_s"}`.
//! * `conns`: `{"connections": [{"protocol", "client_address", "client_port",
//!   "virtual_address", "virtual_port", "server_address", "server_port", "method", "state",
//!   "expires_ms", "lcore", "template"}], "truncated": bool}`.
//! * `timeout`: `{"tcp_s", "tcp_fin_s", "udp_s", "tcp_syn_s"}`.
//! * `status`: see [`StatusView`].
//! * changes (`service`, `server`, `restore`, `clear`, `reload`): `{"changes": [string],
//!   "generation": u64, "dry_run": bool}`; `zero`: `{"zeroed": "all"|"TCP VIP:PORT"}`.
//! * `save`: `{"rules": [string]}` (the `-S` lines).
//!
//! An unknown enum value from a newer server shows as `"unknown"`.

use std::fmt::Write as _;

use serde::Serialize;
use tandem_proto::admin;

use crate::parse::{Method, Proto};

/// `list` / `stats` / `rate` as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListView {
    /// The configuration generation the listing shows.
    pub generation: u64,
    /// `standalone`, `active` or `standby`, when the status call answered.
    pub role: Option<String>,
    /// How stale the connection counts may be.
    pub counts_staleness_ms: u32,
    /// The virtual services, in the dataplane's order.
    pub services: Vec<ServiceView>,
}

/// One virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceView {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The VIP.
    pub address: String,
    /// The virtual port.
    pub port: u32,
    /// The scheduler's ipvsadm name.
    pub scheduler: String,
    /// Scheduler flags (`sh-fallback`, ...).
    pub flags: Vec<String>,
    /// Persistence timeout, 0 when not persistent.
    pub persistence_timeout_s: u32,
    /// Persistence netmask, when not 255.255.255.255.
    pub persistence_netmask: Option<String>,
    /// Counters.
    pub stats: StatsView,
    /// Rates.
    pub rates: RatesView,
    /// The real servers, in the dataplane's order.
    pub servers: Vec<ServerView>,
}

/// One real server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerView {
    /// Its address.
    pub address: String,
    /// Its port.
    pub port: u32,
    /// `nat`, `tunnel` or `direct_route`.
    pub method: String,
    /// Its weight.
    pub weight: u32,
    /// ESTABLISHED TCP connections.
    pub active_connections: u64,
    /// Other connections.
    pub inactive_connections: u64,
    /// The last health verdict, if a checker has reported.
    pub health: Option<HealthView>,
    /// Counters.
    pub stats: StatsView,
    /// Rates.
    pub rates: RatesView,
}

/// A real server's health as the last checker verdict left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthView {
    /// `up` or `down` (`unknown` from a newer server).
    pub state: String,
    /// What DOWN does: `quiesce` (weight 0 for new connections) or `remove`.
    pub action: String,
    /// Which checker.
    pub checker: String,
    /// Why.
    pub reason: String,
    /// When the state last changed (Unix milliseconds).
    pub since_unix_ms: u64,
    /// State changes so far.
    pub changes: u64,
}

/// The health of a listing's server, `None` when no checker has reported.
fn health_view(h: Option<&admin::ServerHealth>) -> Option<HealthView> {
    let h = h?;
    let state = match admin::HealthState::try_from(h.state) {
        Ok(admin::HealthState::Unspecified) => return None,
        Ok(admin::HealthState::Up) => "up",
        Ok(admin::HealthState::Down) => "down",
        Err(_) => "unknown",
    };
    let action = match admin::HealthAction::try_from(h.action) {
        Ok(admin::HealthAction::Unspecified | admin::HealthAction::Quiesce) => "quiesce",
        Ok(admin::HealthAction::Remove) => "remove",
        Err(_) => "unknown",
    };
    Some(HealthView {
        state: state.into(),
        action: action.into(),
        checker: h.checker.clone(),
        reason: h.reason.clone(),
        since_unix_ms: h.since_unix_ms,
        changes: h.changes,
    })
}

/// Cumulative counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsView {
    /// Connections scheduled.
    pub connections: u64,
    /// Packets from clients.
    pub packets_in: u64,
    /// Packets to clients.
    pub packets_out: u64,
    /// Bytes from clients.
    pub bytes_in: u64,
    /// Bytes to clients.
    pub bytes_out: u64,
}

/// Rates per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RatesView {
    /// New connections per second.
    pub connections_per_s: u64,
    /// Packets from clients per second.
    pub packets_in_per_s: u64,
    /// Packets to clients per second.
    pub packets_out_per_s: u64,
    /// Bytes from clients per second.
    pub bytes_in_per_s: u64,
    /// Bytes to clients per second.
    pub bytes_out_per_s: u64,
}

fn proto_name(value: i32) -> String {
    match Proto::from_wire(value) {
        Some(Proto::Tcp) => "tcp".into(),
        Some(Proto::Udp) => "udp".into(),
        None => "unknown".into(),
    }
}

fn method_name(value: i32) -> String {
    match Method::from_wire(value) {
        Some(Method::Nat) => "nat".into(),
        Some(Method::Tunnel) => "tunnel".into(),
        Some(Method::DirectRoute) => "direct_route".into(),
        None => "unknown".into(),
    }
}

fn stats_view(s: Option<&admin::Stats>) -> StatsView {
    s.map(|s| StatsView {
        connections: s.connections,
        packets_in: s.packets_in,
        packets_out: s.packets_out,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
    })
    .unwrap_or_default()
}

fn rates_view(r: Option<&admin::Rates>) -> RatesView {
    r.map(|r| RatesView {
        connections_per_s: r.connections_per_s,
        packets_in_per_s: r.packets_in_per_s,
        packets_out_per_s: r.packets_out_per_s,
        bytes_in_per_s: r.bytes_in_per_s,
        bytes_out_per_s: r.bytes_out_per_s,
    })
    .unwrap_or_default()
}

/// One service of a listing.
pub fn service_view(s: &admin::ServiceStatus) -> ServiceView {
    let config = s.config.clone().unwrap_or_default();
    let key = config.key.clone().unwrap_or_default();
    let scheduler = if config.scheduler.trim().is_empty() {
        tandem_proto::DEFAULT_SCHEDULER.name().to_string()
    } else {
        config.scheduler.clone()
    };
    let netmask = config.persistence_netmask.trim();
    ServiceView {
        protocol: proto_name(key.protocol),
        address: key.address.clone(),
        port: key.port,
        scheduler,
        flags: config.flags.clone(),
        persistence_timeout_s: config.persistence_timeout_s,
        persistence_netmask: (!netmask.is_empty() && netmask != "255.255.255.255")
            .then(|| netmask.to_string()),
        stats: stats_view(s.stats.as_ref()),
        rates: rates_view(s.rates.as_ref()),
        servers: s
            .servers
            .iter()
            .map(|d| {
                let c = d.config.clone().unwrap_or_default();
                let k = c.key.clone().unwrap_or_default();
                ServerView {
                    address: k.address,
                    port: k.port,
                    method: method_name(c.method),
                    weight: c.weight,
                    active_connections: d.active_connections,
                    inactive_connections: d.inactive_connections,
                    health: health_view(d.health.as_ref()),
                    stats: stats_view(d.stats.as_ref()),
                    rates: rates_view(d.rates.as_ref()),
                }
            })
            .collect(),
    }
}

/// A listing.
pub fn list_view(resp: &admin::ListServicesResponse, role: Option<String>) -> ListView {
    ListView {
        generation: resp.generation,
        role,
        counts_staleness_ms: resp.counts_staleness_ms,
        services: resp.services.iter().map(service_view).collect(),
    }
}

/// Which columns a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// Scheduler, flags, forward, weight, active and inactive connections, and health
    /// (`-L -n`).
    Plain,
    /// Counters (`--stats`).
    Stats,
    /// Rates (`--rate`).
    Rate,
}

/// A number in a 9-character column as ipvsadm prints counters: exact below 100 million,
/// then thousands (K), millions (M), billions (G) or trillions (T), each truncated; with
/// `exact`, the whole number (the column widens as needed).
pub fn large_number(n: u64, exact: bool) -> String {
    if exact {
        let digits = n.to_string();
        let width = if digits.len() <= 8 {
            9
        } else {
            digits.len() + 1
        };
        return format!("{digits:>width$}");
    }
    if n < 100_000_000 {
        format!("{n:>9}")
    } else if n < 1_000_000_000 {
        format!("{:>8}K", n / 1_000)
    } else if n < 100_000_000_000 {
        format!("{:>8}M", n / 1_000_000)
    } else if n < 100_000_000_000_000 {
        format!("{:>8}G", n / 1_000_000_000)
    } else {
        format!("{:>8}T", n / 1_000_000_000_000)
    }
}

/// The first line of a listing: `Tandem director (generation N, ROLE)`.
pub fn header(v: &ListView) -> String {
    match &v.role {
        Some(role) => format!("Tandem director (generation {}, {role})", v.generation),
        None => format!("Tandem director (generation {})", v.generation),
    }
}

fn service_name(s: &ServiceView) -> String {
    format!("{}  {}:{}", s.protocol.to_uppercase(), s.address, s.port)
}

fn method_listing(m: &str) -> &str {
    match m {
        "nat" => "Masq",
        "tunnel" => "Tunnel",
        "direct_route" => "Route",
        _ => "?",
    }
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line.trim_end());
    out.push('\n');
}

/// The table `ipvsadm -L -n` (or `--stats`, `--rate`) prints, with a Tandem header line.
/// Column widths are ipvsadm's; trailing blanks are trimmed. The plain listing has one more
/// column at the end, `Health` (`up`, `down`, or `-` when no checker has reported); the
/// weight shown is the configured one, also while a server is down.
pub fn render_list(v: &ListView, format: ListFormat, exact: bool) -> String {
    let mut out = String::new();
    push_line(&mut out, &header(v));
    let n = |x: u64| large_number(x, exact);
    match format {
        ListFormat::Plain => {
            push_line(&mut out, "Prot LocalAddress:Port Scheduler Flags");
            push_line(
                &mut out,
                "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn  Health",
            );
        }
        ListFormat::Stats | ListFormat::Rate => {
            let cols: [&str; 5] = if format == ListFormat::Stats {
                ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]
            } else {
                ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]
            };
            push_line(
                &mut out,
                &format!(
                    "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    "Prot LocalAddress:Port", cols[0], cols[1], cols[2], cols[3], cols[4]
                ),
            );
            push_line(&mut out, "  -> RemoteAddress:Port");
        }
    }
    for s in &v.services {
        let name = service_name(s);
        let line = match format {
            ListFormat::Plain => {
                let mut l = format!("{name} {}", s.scheduler);
                if !s.flags.is_empty() {
                    let _ = write!(l, " ({})", s.flags.join(","));
                }
                if s.persistence_timeout_s > 0 {
                    let _ = write!(l, " persistent {}", s.persistence_timeout_s);
                    if let Some(m) = &s.persistence_netmask {
                        let _ = write!(l, " mask {m}");
                    }
                }
                l
            }
            ListFormat::Stats => format!(
                "{name:<33}{}{}{}{}{}",
                n(s.stats.connections),
                n(s.stats.packets_in),
                n(s.stats.packets_out),
                n(s.stats.bytes_in),
                n(s.stats.bytes_out)
            ),
            ListFormat::Rate => format!(
                "{name:<33}{}{}{}{}{}",
                n(s.rates.connections_per_s),
                n(s.rates.packets_in_per_s),
                n(s.rates.packets_out_per_s),
                n(s.rates.bytes_in_per_s),
                n(s.rates.bytes_out_per_s)
            ),
        };
        push_line(&mut out, &line);
        for d in &s.servers {
            let dname = format!("{}:{}", d.address, d.port);
            let line = match format {
                ListFormat::Plain => format!(
                    "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10} {}",
                    method_listing(&d.method),
                    d.weight,
                    d.active_connections,
                    d.inactive_connections,
                    d.health.as_ref().map_or("-", |h| h.state.as_str())
                ),
                ListFormat::Stats => format!(
                    "  -> {dname:<28}{}{}{}{}{}",
                    n(d.stats.connections),
                    n(d.stats.packets_in),
                    n(d.stats.packets_out),
                    n(d.stats.bytes_in),
                    n(d.stats.bytes_out)
                ),
                // ipvsadm prints a server's CPS and PPS exactly and only its BPS shortened.
                ListFormat::Rate => format!(
                    "  -> {dname:<28} {:>8} {:>8} {:>8}{}{}",
                    d.rates.connections_per_s,
                    d.rates.packets_in_per_s,
                    d.rates.packets_out_per_s,
                    n(d.rates.bytes_in_per_s),
                    n(d.rates.bytes_out_per_s)
                ),
            };
            push_line(&mut out, &line);
        }
    }
    out
}

/// `conns` as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnsView {
    /// The connections returned.
    pub connections: Vec<ConnView>,
    /// More matched than were returned.
    pub truncated: bool,
}

/// One connection (or persistence template).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnView {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Client address.
    pub client_address: String,
    /// Client port.
    pub client_port: u32,
    /// VIP.
    pub virtual_address: String,
    /// Virtual port.
    pub virtual_port: u32,
    /// Real server address.
    pub server_address: String,
    /// Real server port.
    pub server_port: u32,
    /// `nat`, `tunnel` or `direct_route`.
    pub method: String,
    /// ESTABLISHED, SYN_RECV, FIN_WAIT, ..., UDP.
    pub state: String,
    /// Milliseconds until it expires.
    pub expires_ms: u64,
    /// The worker lcore that holds it.
    pub lcore: u32,
    /// A persistence template rather than a connection.
    pub template: bool,
}

/// A connection listing.
pub fn conns_view(resp: &admin::ListConnectionsResponse) -> ConnsView {
    ConnsView {
        connections: resp
            .connections
            .iter()
            .map(|c| ConnView {
                protocol: proto_name(c.protocol),
                client_address: c.client_address.clone(),
                client_port: c.client_port,
                virtual_address: c.virtual_address.clone(),
                virtual_port: c.virtual_port,
                server_address: c.server_address.clone(),
                server_port: c.server_port,
                method: method_name(c.method),
                state: c.state.clone(),
                expires_ms: c.expires_ms,
                lcore: c.lcore,
                template: c.template,
            })
            .collect(),
        truncated: resp.truncated,
    }
}

/// `mm:ss` as ipvsadm shows a connection's expiry (minutes grow past 99 as needed).
pub fn expire(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}", s / 60, s % 60)
}

/// The table `ipvsadm -L -n -c` prints.
pub fn render_conns(v: &ConnsView) -> String {
    let mut out = String::new();
    push_line(&mut out, "Tandem connection entries");
    push_line(
        &mut out,
        &format!(
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        ),
    );
    for c in &v.connections {
        let state = if c.template && c.state.is_empty() {
            "NONE"
        } else {
            c.state.as_str()
        };
        let source = format!("{}:{}", c.client_address, c.client_port);
        let virt = format!("{}:{}", c.virtual_address, c.virtual_port);
        push_line(
            &mut out,
            &format!(
                "{:<3} {:<6} {state:<11} {source:<18} {virt:<18} {}:{}",
                c.protocol.to_uppercase(),
                expire(c.expires_ms),
                c.server_address,
                c.server_port,
            ),
        );
    }
    out
}

/// `timeout` as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeoutsView {
    /// ESTABLISHED TCP.
    pub tcp_s: u32,
    /// TCP after FIN.
    pub tcp_fin_s: u32,
    /// UDP.
    pub udp_s: u32,
    /// SYN_RECV.
    pub tcp_syn_s: u32,
}

/// Timeouts.
pub fn timeouts_view(t: &admin::Timeouts) -> TimeoutsView {
    TimeoutsView {
        tcp_s: t.tcp_s,
        tcp_fin_s: t.tcp_fin_s,
        udp_s: t.udp_s,
        tcp_syn_s: t.tcp_syn_s,
    }
}

/// The line `ipvsadm -L --timeout` prints.
pub fn render_timeouts(t: &TimeoutsView) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp_s, t.tcp_fin_s, t.udp_s
    )
}

/// The outcome of a change, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeView {
    /// One line per change.
    pub changes: Vec<String>,
    /// The generation now running.
    pub generation: u64,
    /// Nothing was applied.
    pub dry_run: bool,
}

/// A change's lines for the table output: the changes, or a note that there were none.
pub fn render_changes(c: &ChangeView) -> String {
    let mut out = String::new();
    for l in &c.changes {
        push_line(&mut out, l);
    }
    if c.changes.is_empty() {
        push_line(&mut out, "no changes");
    }
    if c.dry_run {
        push_line(&mut out, "(dry run: nothing was applied)");
    } else {
        push_line(&mut out, &format!("generation {}", c.generation));
    }
    out
}

/// `status` as JSON: the admin API's `Status`, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusView {
    /// Dataplane version.
    pub version: String,
    /// `standalone`, `active` or `standby`.
    pub role: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// The configuration file.
    pub config_file: String,
    /// The configuration generation.
    pub generation: u64,
    /// The NIC ports.
    pub ports: Vec<PortView>,
    /// The worker lcores.
    pub lcores: Vec<LcoreView>,
    /// Connections in the tables.
    pub connections: u64,
    /// Room in the tables.
    pub connection_capacity: u64,
    /// Virtual services.
    pub services: u32,
    /// Real servers.
    pub servers: u32,
    /// Drops by reason (all reported, including zeros).
    pub drops: Vec<DropView>,
    /// What tandem-syncd last reported (`null`: no syncd has reported).
    pub sync: Option<SyncView>,
}

/// The sync daemon's latest report: the admin API's `SyncStatus`, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct SyncView {
    pub role: String,
    pub reason: String,
    pub role_for_ms: u64,
    pub node_id: u32,
    pub priority: u32,
    pub pid: u32,
    pub report_age_ms: u64,
    pub stale: bool,
    pub peer_alive: bool,
    pub peer_role: String,
    pub peer_node_id: u32,
    pub peer_sync_complete: bool,
    pub peer_heard_sync_link_ms_ago: i64,
    pub peer_heard_service_ms_ago: i64,
    pub sync_link: String,
    pub replication: String,
    pub dataplane_link: String,
    pub sync_complete: bool,
    pub epoch: u64,
    pub head_seq: u64,
    pub last_sent_seq: u64,
    pub last_acked_seq: u64,
    pub lag_events: u64,
    pub lag_ms: u64,
    pub queue_depth: u64,
    pub queue_bytes: u64,
    pub snapshots: u64,
    pub resyncs: u64,
    pub overflow_drops: u64,
    pub lcore_lost: u64,
    pub retransmits: u64,
    pub receiver_gaps: u64,
    pub receiver_resumes: u64,
    pub apply_dropped: u64,
    pub apply_resets: u64,
    pub malformed: u64,
    pub takeovers: u64,
    pub transitions: u64,
    pub reports: u64,
    pub peer_both_paths: bool,
    pub dead_interval_ms: u64,
    pub longest_silence_ms: u64,
    pub stalls: u64,
}

/// The sync section's view.
pub fn sync_view(s: &admin::SyncStatus) -> SyncView {
    SyncView {
        role: s.role.clone(),
        reason: s.reason.clone(),
        role_for_ms: s.role_for_ms,
        node_id: s.node_id,
        priority: s.priority,
        pid: s.pid,
        report_age_ms: s.report_age_ms,
        stale: s.stale,
        peer_alive: s.peer_alive,
        peer_role: s.peer_role.clone(),
        peer_node_id: s.peer_node_id,
        peer_sync_complete: s.peer_sync_complete,
        peer_heard_sync_link_ms_ago: s.peer_heard_sync_link_ms_ago,
        peer_heard_service_ms_ago: s.peer_heard_service_ms_ago,
        sync_link: s.sync_link.clone(),
        replication: s.replication.clone(),
        dataplane_link: s.dataplane_link.clone(),
        sync_complete: s.sync_complete,
        epoch: s.epoch,
        head_seq: s.head_seq,
        last_sent_seq: s.last_sent_seq,
        last_acked_seq: s.last_acked_seq,
        lag_events: s.lag_events,
        lag_ms: s.lag_ms,
        queue_depth: s.queue_depth,
        queue_bytes: s.queue_bytes,
        snapshots: s.snapshots,
        resyncs: s.resyncs,
        overflow_drops: s.overflow_drops,
        lcore_lost: s.lcore_lost,
        retransmits: s.retransmits,
        receiver_gaps: s.receiver_gaps,
        receiver_resumes: s.receiver_resumes,
        apply_dropped: s.apply_dropped,
        apply_resets: s.apply_resets,
        malformed: s.malformed,
        takeovers: s.takeovers,
        transitions: s.transitions,
        reports: s.reports,
        peer_both_paths: s.peer_both_paths,
        dead_interval_ms: s.dead_interval_ms,
        longest_silence_ms: s.longest_silence_ms,
        stalls: s.stalls,
    }
}

/// One port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct PortView {
    pub name: String,
    pub device: String,
    pub port_id: u32,
    pub mac: String,
    pub address: String,
    pub link_up: bool,
    pub speed_mbps: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
}

/// One worker lcore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct LcoreView {
    pub lcore: u32,
    pub worker: u32,
    pub connections: u64,
    pub connection_capacity: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub forwarded: u64,
    pub redirected: u64,
    pub dropped: u64,
    pub sync_events_queued: u64,
    pub sync_events_overflow: u64,
}

/// Drops for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct DropView {
    pub reason: String,
    pub count: u64,
}

/// The status.
pub fn status_view(s: &admin::Status) -> StatusView {
    StatusView {
        version: s.version.clone(),
        role: s.role.clone(),
        uptime_s: s.uptime_s,
        config_file: s.config_file.clone(),
        generation: s.generation,
        ports: s
            .ports
            .iter()
            .map(|p| PortView {
                name: p.name.clone(),
                device: p.device.clone(),
                port_id: p.port_id,
                mac: p.mac.clone(),
                address: p.address.clone(),
                link_up: p.link_up,
                speed_mbps: p.speed_mbps,
                rx_packets: p.rx_packets,
                tx_packets: p.tx_packets,
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                rx_missed: p.rx_missed,
                rx_errors: p.rx_errors,
                tx_errors: p.tx_errors,
            })
            .collect(),
        lcores: s
            .lcores
            .iter()
            .map(|l| LcoreView {
                lcore: l.lcore,
                worker: l.worker,
                connections: l.connections,
                connection_capacity: l.connection_capacity,
                rx_packets: l.rx_packets,
                tx_packets: l.tx_packets,
                forwarded: l.forwarded,
                redirected: l.redirected,
                dropped: l.dropped,
                sync_events_queued: l.sync_events_queued,
                sync_events_overflow: l.sync_events_overflow,
            })
            .collect(),
        connections: s.connections,
        connection_capacity: s.connection_capacity,
        services: s.services,
        servers: s.servers,
        drops: s
            .drops
            .iter()
            .map(|d| DropView {
                reason: d.reason.clone(),
                count: d.count,
            })
            .collect(),
        sync: s.sync.as_ref().map(sync_view),
    }
}

/// `3d 04:05:06` or `04:05:06`.
pub fn uptime(s: u64) -> String {
    let (d, h, m, sec) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

/// Tenths of a percent of `part` in `whole`, as text (`12.5%`), or `-` when `whole` is 0.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    let tenths = u128::from(part) * 1000 / u128::from(whole);
    format!("{}.{}%", tenths / 10, tenths % 10)
}

/// A readable summary of the director's state.
pub fn render_status(s: &StatusView) -> String {
    let mut out = String::new();
    let version = if s.version.is_empty() {
        "?"
    } else {
        &s.version
    };
    push_line(&mut out, &format!("Tandem director {version}"));
    let config = if s.config_file.is_empty() {
        "-"
    } else {
        &s.config_file
    };
    for (k, v) in [
        ("role", s.role.clone()),
        ("generation", s.generation.to_string()),
        ("uptime", uptime(s.uptime_s)),
        ("config", config.to_string()),
        (
            "services",
            format!("{} ({} real servers)", s.services, s.servers),
        ),
        (
            "connections",
            format!(
                "{} / {} ({})",
                s.connections,
                s.connection_capacity,
                percent(s.connections, s.connection_capacity)
            ),
        ),
    ] {
        push_line(&mut out, &format!("  {k:<12}{v}"));
    }
    push_line(&mut out, "Ports");
    push_line(
        &mut out,
        &format!(
            "  {:<10} {:<14} {:>3} {:<17} {:<15} {:<10} {:>12} {:>12} {:>14} {:>14} {:>9} {:>9} {:>9}",
            "NAME",
            "DEVICE",
            "ID",
            "MAC",
            "ADDRESS",
            "LINK",
            "RX-PKTS",
            "TX-PKTS",
            "RX-BYTES",
            "TX-BYTES",
            "RX-MISSED",
            "RX-ERRORS",
            "TX-ERRORS"
        ),
    );
    for p in &s.ports {
        let link = match (p.link_up, p.speed_mbps) {
            (false, _) => "down".to_string(),
            (true, 0) => "up".to_string(),
            (true, m) if m % 1000 == 0 => format!("up {}G", m / 1000),
            (true, m) => format!("up {m}M"),
        };
        push_line(
            &mut out,
            &format!(
                "  {:<10} {:<14} {:>3} {:<17} {:<15} {:<10} {:>12} {:>12} {:>14} {:>14} {:>9} {:>9} {:>9}",
                p.name,
                p.device,
                p.port_id,
                p.mac,
                if p.address.is_empty() {
                    "-"
                } else {
                    &p.address
                },
                link,
                p.rx_packets,
                p.tx_packets,
                p.rx_bytes,
                p.tx_bytes,
                p.rx_missed,
                p.rx_errors,
                p.tx_errors
            ),
        );
    }
    push_line(&mut out, "Lcores");
    push_line(
        &mut out,
        &format!(
            "  {:>5} {:>6} {:>10} {:>10} {:>12} {:>12} {:>12} {:>10} {:>10} {:>8} {:>9}",
            "LCORE",
            "WORKER",
            "CONNS",
            "CAPACITY",
            "RX-PKTS",
            "TX-PKTS",
            "FORWARDED",
            "REDIRECTED",
            "DROPPED",
            "SYNC-Q",
            "SYNC-LOST"
        ),
    );
    for l in &s.lcores {
        push_line(
            &mut out,
            &format!(
                "  {:>5} {:>6} {:>10} {:>10} {:>12} {:>12} {:>12} {:>10} {:>10} {:>8} {:>9}",
                l.lcore,
                l.worker,
                l.connections,
                l.connection_capacity,
                l.rx_packets,
                l.tx_packets,
                l.forwarded,
                l.redirected,
                l.dropped,
                l.sync_events_queued,
                l.sync_events_overflow
            ),
        );
    }
    let drops: Vec<&DropView> = s.drops.iter().filter(|d| d.count > 0).collect();
    if drops.is_empty() {
        push_line(&mut out, "Drops: none");
    } else {
        push_line(&mut out, "Drops");
        for d in drops {
            push_line(&mut out, &format!("  {:<28} {:>12}", d.reason, d.count));
        }
    }
    render_sync(&mut out, s.sync.as_ref());
    out
}

/// `12 ms`, `3.4 s`, `5 min` (a duration given in milliseconds).
pub fn millis(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{}.{} s", ms / 1_000, ms % 1_000 / 100),
        _ => format!("{} min", ms / 60_000),
    }
}

fn heard(ms_ago: i64) -> String {
    u64::try_from(ms_ago).map_or_else(|_| "never".to_string(), |m| format!("{} ago", millis(m)))
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The "Sync" section: what tandem-syncd last reported, or that none did.
fn render_sync(out: &mut String, sync: Option<&SyncView>) {
    let Some(s) = sync else {
        push_line(
            out,
            "Sync: none (no tandem-syncd has reported to this dataplane)",
        );
        return;
    };
    let freshness = if s.stale {
        format!("STALE: last report {} ago", millis(s.report_age_ms))
    } else {
        format!("reported {} ago", millis(s.report_age_ms))
    };
    push_line(out, &format!("Sync ({freshness})"));
    let peer = if s.peer_role == "unknown" {
        "never heard".to_string()
    } else {
        format!(
            "{} (node {}), {}, sync complete {}",
            s.peer_role,
            s.peer_node_id,
            if s.peer_alive { "alive" } else { "silent" },
            yes_no(s.peer_sync_complete)
        )
    };
    for (k, v) in [
        (
            "role",
            format!(
                "{} ({}, for {}), node {} priority {}, pid {}",
                s.role,
                s.reason,
                millis(s.role_for_ms),
                s.node_id,
                s.priority,
                s.pid
            ),
        ),
        ("peer", peer),
        (
            "heard",
            format!(
                "sync link {}, service network {}",
                heard(s.peer_heard_sync_link_ms_ago),
                heard(s.peer_heard_service_ms_ago)
            ),
        ),
        (
            "dead",
            format!(
                "after {} of silence{}; longest silence {}, {} stalls of syncd",
                millis(s.dead_interval_ms),
                if s.peer_both_paths || s.peer_role == "unknown" {
                    ""
                } else {
                    " (ONE PATH: the peer is heard on one path only)"
                },
                millis(s.longest_silence_ms),
                s.stalls
            ),
        ),
        (
            "links",
            format!(
                "sync link {}, replication {}, dataplane {}",
                s.sync_link, s.replication, s.dataplane_link
            ),
        ),
        ("complete", yes_no(s.sync_complete).to_string()),
        (
            "sequence",
            format!(
                "epoch {} head {} sent {} acked {}",
                s.epoch, s.head_seq, s.last_sent_seq, s.last_acked_seq
            ),
        ),
        (
            "lag",
            format!("{} events, {}", s.lag_events, millis(s.lag_ms)),
        ),
        (
            "queue",
            format!("{} events, {} bytes", s.queue_depth, s.queue_bytes),
        ),
        (
            "resyncs",
            format!(
                "{} (snapshots {}), overflow drops {}, lost by lcores {}, retransmits {}",
                s.resyncs, s.snapshots, s.overflow_drops, s.lcore_lost, s.retransmits
            ),
        ),
        (
            "receiver",
            format!(
                "gaps {}, resumes {}, apply dropped {}, apply resets {}, malformed {}",
                s.receiver_gaps, s.receiver_resumes, s.apply_dropped, s.apply_resets, s.malformed
            ),
        ),
        (
            "roles",
            format!("{} transitions, {} takeovers", s.transitions, s.takeovers),
        ),
    ] {
        push_line(out, &format!("  {k:<12}{v}"));
    }
}
