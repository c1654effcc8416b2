//! Traffic through the three forwarding modes (SPEC "Forwarding"), checked from the client:
//! real TCP and UDP connections to each mode's VIP, answered by the real servers' `serve`.
//!
//! - **NAT** (203.0.113.10): TCP :80 is spread over rs1:80 and rs2:8000 by wrr 1:2, and the
//!   answers name the port the server was reached on, so the port mapping is visible; :21 goes
//!   to rs2:21; UDP :53 is answered (rr over all three), from the VIP; another port of the VIP
//!   is refused; every reply frame reaches the client from director A's MAC.
//! - **TUN** (203.0.113.20): TCP :80 by wrr 4:3:2, UDP :53; answers come from the VIP, but the
//!   reply frames reach the client from the router's MAC, never the director's (only requests
//!   pass the director), and each server's decapsulator counted the tunnelled packets.
//! - **DR** (203.0.113.30): TCP :80 by lblc stays on one server (one destination), UDP :53;
//!   replies come from the VIP via the router, never the director.
//!
//! Which MAC a reply frame carries is read by a bounded `tcpdump -e` on the client's port of
//! the outside bridge (in the switch namespace), where every frame towards the client passes.
//! The evaluation is pure ([`check_distribution`], [`check_reply_path`], ...) and unit-tested.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use serde::Serialize;

use crate::client::{ClientOptions, ClientReport};
use crate::demo::Check;
use crate::error::Result;
use crate::exec::Cancel;
use crate::probe::{self, Capture};
use crate::rack::{DirectorId, Mode, ProtocolName, Rack, RackSpec, ServiceSection};
use crate::topology::Topology;

/// Share tolerance of a weighted distribution: each server's observed share of the connections
/// may differ from its weight's share by this much (absolute).
pub const SHARE_TOLERANCE: f64 = 0.10;
/// Messages per connection in the mode checks.
pub const MESSAGES: u32 = 3;
/// Bound on each client run.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most reply frames one capture keeps.
const CAPTURE_MAX: u32 = 20_000;
/// A port of the NAT VIP that has no service.
pub const UNSERVED_PORT: u16 = 81;

/// What one mode's traffic showed. `demo --json` prints it under `modes.<mode>`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ModeReport {
    /// Every check of the mode passed.
    pub ok: bool,
    /// The mode's VIP.
    pub vip: String,
    /// Successful TCP :80 connections per real server.
    pub per_server: BTreeMap<String, u32>,
    /// Successful TCP :80 connections per real server and port (`rs2:8000`).
    pub per_endpoint: BTreeMap<String, u32>,
    /// Reply frames towards the client per source MAC (`None` without tcpdump).
    pub reply_macs: Option<BTreeMap<String, u32>>,
    /// The router's outside MAC (the direct path of TUN and DR replies).
    pub router_mac: Option<String>,
    /// Director A's outside MAC (from its stats; `None` without a dataplane).
    pub director_mac: Option<String>,
    /// TUN: packets each real server's decapsulator handed to the kernel during the mode.
    pub decapsulated: BTreeMap<String, u64>,
    /// The mode's checks.
    pub checks: Vec<Check>,
    /// Every client run, in order.
    pub clients: Vec<ClientReport>,
}

/// The expected share of each `<host>:<port>` among a service's servers, from their weights
/// (weight-0 servers get none). Servers that are not real servers of the rack are named by
/// address.
pub fn expected_shares(spec: &RackSpec, service: &ServiceSection) -> BTreeMap<String, f64> {
    let total: u32 = service.servers.iter().map(|s| s.weight).sum();
    let mut out = BTreeMap::new();
    if total == 0 {
        return out;
    }
    for s in &service.servers {
        if s.weight == 0 {
            continue;
        }
        let name = spec
            .real_server_at(s.address)
            .map_or_else(|| s.address.to_string(), |r| r.host.clone());
        *out.entry(format!("{name}:{}", s.port)).or_insert(0.0) +=
            f64::from(s.weight) / f64::from(total);
    }
    out
}

fn counts(m: &BTreeMap<String, u32>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every connection succeeded and the connections per `<host>:<port>` follow `expected` shares
/// within `tolerance`; an endpoint that is not expected at all fails the check.
pub fn check_distribution(
    name: &str,
    report: &ClientReport,
    expected: &BTreeMap<String, f64>,
    tolerance: f64,
) -> Check {
    let total: u32 = report.per_endpoint.values().sum();
    let mut problems = Vec::new();
    if !report.all_ok() {
        problems.push(format!("{}/{} connections ok", report.ok, report.conns));
    }
    for (endpoint, n) in &report.per_endpoint {
        if !expected.contains_key(endpoint) {
            problems.push(format!(
                "{endpoint} answered {n} but is no server of the service"
            ));
        }
    }
    let mut shares = Vec::new();
    for (endpoint, want) in expected {
        let got = report.per_endpoint.get(endpoint).copied().unwrap_or(0);
        let share = if total == 0 {
            0.0
        } else {
            f64::from(got) / f64::from(total)
        };
        shares.push(format!("{endpoint} {got} ({share:.2}, want {want:.2})"));
        if (share - want).abs() > tolerance {
            problems.push(format!(
                "{endpoint} share {share:.2} is not {want:.2}±{tolerance:.2}"
            ));
        }
    }
    let detail = format!(
        "{}: {}{}",
        report.target,
        shares.join(", "),
        if problems.is_empty() {
            String::new()
        } else {
            format!("; {}", problems.join("; "))
        }
    );
    Check::new(name, problems.is_empty(), detail)
}

/// Every connection succeeded and all of them were answered by one server.
pub fn check_single_server(name: &str, report: &ClientReport) -> Check {
    let ok = report.all_ok() && report.per_server.len() == 1;
    Check::new(
        name,
        ok,
        format!(
            "{}: {}/{} ok, servers: {}{}",
            report.target,
            report.ok,
            report.conns,
            counts(&report.per_server),
            errors_suffix(report)
        ),
    )
}

/// lblc from one client to one VIP: every connection succeeded and one server answered them
/// all — or, with `workers` > 1, at most one server per worker: lblc's locality tables are per
/// worker (docs/forwarding.md, "Schedulers and counts across lcores"), and connections of one
/// client are owned by different workers (the owner hashes the client's address *and port*).
pub fn check_locality(name: &str, report: &ClientReport, workers: u16) -> Check {
    if workers <= 1 {
        return check_single_server(name, report);
    }
    let servers = report.per_server.len();
    let ok = report.all_ok() && servers >= 1 && servers <= usize::from(workers);
    Check::new(
        &format!("{name}_per_worker"),
        ok,
        format!(
            "{}: {}/{} ok, servers: {} (at most one per worker, {workers} workers: lblc tables \
             are per worker){}",
            report.target,
            report.ok,
            report.conns,
            counts(&report.per_server),
            errors_suffix(report)
        ),
    )
}

/// Every connection succeeded, answered only by `endpoints` (any of them).
pub fn check_answered_by(name: &str, report: &ClientReport, endpoints: &[&str]) -> Check {
    let stray: Vec<&String> = report
        .per_endpoint
        .keys()
        .filter(|e| !endpoints.contains(&e.as_str()))
        .collect();
    Check::new(
        name,
        report.all_ok() && stray.is_empty(),
        format!(
            "{}: {}/{} ok, answered by {} (want {}){}",
            report.target,
            report.ok,
            report.conns,
            counts(&report.per_endpoint),
            endpoints.join(" or "),
            errors_suffix(report)
        ),
    )
}

/// UDP: every connection succeeded, every server of the service answered at least once when
/// there were enough connections, and every answer came from the target (the VIP).
pub fn check_udp(name: &str, report: &ClientReport, servers: usize) -> Check {
    let from_target = report.reply_sources.keys().all(|s| *s == report.target)
        && !report.reply_sources.is_empty();
    let spread = report.conns < u32::try_from(servers).unwrap_or(u32::MAX)
        || report.per_server.len() == servers;
    Check::new(
        name,
        report.all_ok() && from_target && spread,
        format!(
            "{}: {}/{} ok, servers: {} (want all {servers}), answers from {}{}",
            report.target,
            report.ok,
            report.conns,
            counts(&report.per_server),
            counts(&report.reply_sources),
            errors_suffix(report)
        ),
    )
}

/// No connection to a port without a service succeeded (the director refuses or drops it).
pub fn check_refused(name: &str, report: &ClientReport) -> Check {
    Check::new(
        name,
        report.ok == 0 && report.answers == 0,
        format!(
            "{}: {}/{} connected and answered (want 0){}",
            report.target,
            report.ok,
            report.conns,
            errors_suffix(report)
        ),
    )
}

/// Reply frames towards the client all carry `via` as source MAC (and at least one was seen);
/// none carries `not_via` when it is known.
pub fn check_reply_path(
    name: &str,
    macs: Option<&BTreeMap<String, u32>>,
    via: Option<&str>,
    via_name: &str,
    not_via: Option<&str>,
) -> Check {
    let Some(macs) = macs else {
        return Check::new(name, false, "no capture (tcpdump unavailable)");
    };
    let Some(via) = via else {
        return Check::new(
            name,
            false,
            format!(
                "the {via_name}'s MAC is unknown; frames by source MAC: {}",
                counts(macs)
            ),
        );
    };
    let total: u32 = macs.values().sum();
    let from_via = macs.get(via).copied().unwrap_or(0);
    let from_not = not_via.and_then(|m| macs.get(m)).copied().unwrap_or(0);
    Check::new(
        name,
        total > 0 && from_via == total && from_not == 0,
        format!(
            "{total} reply frames to the client, {from_via} from the {via_name} ({via}){}",
            not_via.map_or_else(String::new, |m| format!(
                ", {from_not} from director A ({m})"
            ))
        ),
    )
}

fn errors_suffix(report: &ClientReport) -> String {
    if report.errors.is_empty() {
        String::new()
    } else {
        let first = report
            .error_samples
            .first()
            .map(|s| format!(" (e.g. {s})"))
            .unwrap_or_default();
        format!(
            "; errors {}{first}",
            report
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }
}

/// Runs one mode's traffic against a rack that is up and returns its report. Errors only for
/// an interruption or a failure to run the client at all; everything the traffic shows is a
/// check.
pub fn run_mode(rack: &Rack, mode: Mode, cancel: &Cancel) -> Result<ModeReport> {
    let spec = rack.spec();
    let vip = spec.mode_vip(mode);
    let mut report = ModeReport {
        vip: vip.to_string(),
        ..ModeReport::default()
    };
    let Some(a) = spec.director(DirectorId::A) else {
        report.checks.push(Check::new(
            &format!("{mode}_services"),
            false,
            "no director A",
        ));
        return Ok(finish(report));
    };
    report.router_mac = probe::link_mac(&rack.netns(&spec.router), &spec.router_outside_iface).ok();
    report.director_mac = rack
        .stats(DirectorId::A)
        .ok()
        .and_then(|s| s.port_mac("outside"));
    let capture = start_reply_capture(rack, vip);
    let decap_before = decap_counts(rack);

    let run = |report: &mut ModeReport, opts: ClientOptions| -> Result<ClientReport> {
        cancel.check()?;
        let r = rack.run_client(&opts)?;
        tracing::info!(%mode, client = %r.summary(), "mode traffic");
        report.clients.push(r.clone());
        Ok(r)
    };
    let target = |port: u16| SocketAddrV4::new(vip, port);
    let client = |port: u16, conns: u32, parallel: u32| ClientOptions {
        parallel,
        timeout: CLIENT_TIMEOUT,
        ..ClientOptions::new(target(port), conns, MESSAGES)
    };
    let tcp80 = a.service(ProtocolName::Tcp, vip, 80).cloned();
    let udp53 = a.service(ProtocolName::Udp, vip, 53).cloned();
    let servers_of = |s: &Option<ServiceSection>| s.as_ref().map_or(0, |s| s.servers.len());
    match mode {
        Mode::Nat => {
            let r = run(&mut report, client(80, 30, 6))?;
            tcp_main(&mut report, &r);
            let expected = tcp80
                .as_ref()
                .map(|s| expected_shares(spec, s))
                .unwrap_or_default();
            report.checks.push(check_distribution(
                "nat_tcp_wrr",
                &r,
                &expected,
                SHARE_TOLERANCE,
            ));
            let mapped: Vec<&str> = expected.keys().map(String::as_str).collect();
            report
                .checks
                .push(check_answered_by("nat_tcp_port_map", &r, &mapped));
            let r = run(&mut report, client(21, 5, 5))?;
            let want: Vec<String> = a
                .service(ProtocolName::Tcp, vip, 21)
                .map(|s| expected_shares(spec, s).into_keys().collect())
                .unwrap_or_default();
            let want: Vec<&str> = want.iter().map(String::as_str).collect();
            report
                .checks
                .push(check_answered_by("nat_tcp_21", &r, &want));
            let r = run(&mut report, client(53, 30, 6).udp())?;
            report
                .checks
                .push(check_udp("nat_udp_rr", &r, servers_of(&udp53)));
            let refused = ClientOptions {
                op_timeout: Duration::from_secs(1),
                timeout: Duration::from_secs(5),
                ..client(UNSERVED_PORT, 2, 2)
            };
            let r = run(&mut report, refused)?;
            report
                .checks
                .push(check_refused("nat_other_port_refused", &r));
        }
        Mode::Tun => {
            let r = run(&mut report, client(80, 45, 6))?;
            tcp_main(&mut report, &r);
            let expected = tcp80
                .as_ref()
                .map(|s| expected_shares(spec, s))
                .unwrap_or_default();
            report.checks.push(check_distribution(
                "tun_tcp_wrr",
                &r,
                &expected,
                SHARE_TOLERANCE,
            ));
            let r = run(&mut report, client(53, 9, 3).udp())?;
            report
                .checks
                .push(check_udp("tun_udp_from_vip", &r, servers_of(&udp53)));
        }
        Mode::Dr => {
            // lblc: one destination stays on its server while that server has no more active
            // connections than its weight; 4 in flight never overload a weight of 10.
            let r = run(&mut report, client(80, 20, 4))?;
            tcp_main(&mut report, &r);
            report.checks.push(check_locality(
                "dr_tcp_lblc_one_server",
                &r,
                spec.workers(DirectorId::A),
            ));
            let r = run(&mut report, client(53, 9, 3).udp())?;
            report
                .checks
                .push(check_udp("dr_udp_from_vip", &r, servers_of(&udp53)));
        }
    }
    report.reply_macs =
        capture.map(|c| probe::parse_source_macs(c.stop().iter().map(String::as_str)));
    let director = report.director_mac.clone();
    let router = report.router_mac.clone();
    let path = match mode {
        Mode::Nat => check_reply_path(
            "nat_replies_via_director",
            report.reply_macs.as_ref(),
            director.as_deref(),
            "director A",
            None,
        ),
        Mode::Tun | Mode::Dr => check_reply_path(
            &format!("{mode}_replies_bypass_director"),
            report.reply_macs.as_ref(),
            router.as_deref(),
            "router",
            director.as_deref(),
        ),
    };
    report.checks.push(path);
    if mode == Mode::Tun {
        let after = wait_decap_counts(rack, cancel)?;
        let mut problems = Vec::new();
        for (host, now) in &after {
            let before = decap_before.get(host).cloned().unwrap_or_default();
            let d = |k: &str| {
                now.get(k)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(before.get(k).copied().unwrap_or(0))
            };
            report.decapsulated.insert(host.clone(), d("written"));
            for bad in ["malformed_outer", "malformed_inner", "write_errors"] {
                if d(bad) > 0 {
                    problems.push(format!("{host} {bad} +{}", d(bad)));
                }
            }
            if report.per_server.contains_key(host) && d("written") == 0 {
                problems.push(format!("{host} answered but decapsulated nothing"));
            }
        }
        let seen: u64 = report.decapsulated.values().sum();
        report.checks.push(Check::new(
            "tun_decapsulated",
            problems.is_empty() && seen > 0,
            format!(
                "inner packets written per server: {}{}",
                report
                    .decapsulated
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                if problems.is_empty() {
                    String::new()
                } else {
                    format!("; {}", problems.join("; "))
                }
            ),
        ));
    }
    Ok(finish(report))
}

fn tcp_main(report: &mut ModeReport, r: &ClientReport) {
    report.per_server = r.per_server.clone();
    report.per_endpoint = r.per_endpoint.clone();
}

fn finish(mut report: ModeReport) -> ModeReport {
    report.ok = !report.checks.is_empty() && report.checks.iter().all(|c| c.passed);
    report
}

/// A capture of IPv4 frames from `vip` on the client's port of the outside bridge, or `None`
/// (logged) without tcpdump. `ip` keeps the director's ARP replies for the VIP out of it.
fn start_reply_capture(rack: &Rack, vip: Ipv4Addr) -> Option<Capture> {
    if !Capture::available() {
        tracing::warn!("tcpdump unavailable: reply paths are not checked");
        return None;
    }
    let spec = rack.spec();
    let port = Topology::switch_port(&spec.client, &spec.client_iface);
    let sw = rack.netns(&spec.topology.switch);
    match Capture::start_with(
        &sw,
        &port,
        &["-e"],
        &format!("ip and src host {vip}"),
        CAPTURE_MAX,
    ) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "reply capture unavailable");
            None
        }
    }
}

type DecapCounts = BTreeMap<String, BTreeMap<String, u64>>;

fn decap_counts(rack: &Rack) -> DecapCounts {
    rack.spec()
        .real_servers
        .iter()
        .filter(|r| r.tunnel.is_some())
        .filter_map(|r| {
            rack.decap_stats(&r.host)
                .ok()
                .map(|s| (r.host.clone(), s.counters))
        })
        .collect()
}

/// The decapsulators write their counters at most 1.5 s after they change (a 0.5 s poll, a
/// write per second): wait that long, then read.
fn wait_decap_counts(rack: &Rack, cancel: &Cancel) -> Result<DecapCounts> {
    cancel.sleep(Duration::from_millis(1600))?;
    Ok(decap_counts(rack))
}
