//! `tandem-rack demo`: bring a rack up, prove from the client that the DPDK directors answer for
//! their addresses and the VIP, tear the rack down. A list of named checks, each with a result
//! and a detail, so later drills (NAT/TUN/DR traffic, failover) add checks rather than programs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::exec::Cancel;
use crate::modes::{self, ModeReport};
use crate::probe::{self, ArpSeen, Capture, PingSummary};
use crate::rack::{DirectorId, Mode, Rack, RackOptions, now_unix_ms};
use crate::stats::{Counters, Stats};

/// Echo requests per ping phase.
pub const PING_COUNT: u32 = 3;
/// Bound on waiting for a stats file written after a phase (files come every second).
const FRESH_STATS: Duration = Duration::from_secs(5);
/// Upper bound of the delay between a packet and its counter reaching the stats writer.
pub const COUNTER_PUBLISH_SLACK_MS: u64 = 200;

/// One check of the demo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short name (`vip_ping`).
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

impl Check {
    /// A check with its outcome and what was seen.
    pub fn new(name: &str, passed: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            passed,
            detail: detail.into(),
        }
    }
}

/// One ping phase: a target address pinged from the client, what the client and the wire saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PingPhase {
    /// The address pinged.
    pub target: String,
    /// What `ping` said.
    pub ping: PingSummary,
    /// The MAC the client's neighbour table holds for it afterwards.
    pub mac: Option<String>,
    /// ARP requests for the target the client sent (from a capture; `None` without tcpdump).
    pub arp_requests: Option<u32>,
    /// The MACs of the ARP replies for the target the client received, one per reply.
    pub arp_reply_macs: Option<Vec<String>>,
    /// Counter changes of each director over the phase.
    pub directors: BTreeMap<String, Counters>,
}

/// The demo's outcome. `--json` prints it as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DemoReport {
    /// Every check passed (and there was at least one).
    pub ok: bool,
    /// The rack prefix.
    pub prefix: String,
    /// The DPDK driver used.
    pub pmd: String,
    /// The VIP was pinged with every request answered.
    pub vip_ping_ok: bool,
    /// The director that owns the VIP.
    pub director: String,
    /// The VIP.
    pub vip: String,
    /// The VIP's MAC in the client's neighbour table.
    pub vip_mac: Option<String>,
    /// The owning director's outside MAC, from its stats file.
    pub director_mac: Option<String>,
    /// The VIP's MAC is the DPDK port's and the dataplane counted the ARP and echo replies.
    pub answered_by_dpdk: bool,
    /// The VIP ping.
    pub ping: PingSummary,
    /// Counter changes of each director over the whole demo (non-zero counters only).
    pub directors: BTreeMap<String, Counters>,
    /// The ping phases in order (VIP, then each director's own outside address).
    pub phases: Vec<PingPhase>,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Traffic through the forwarding modes asked for with `--modes` (empty without).
    pub modes: BTreeMap<String, ModeReport>,
    /// Worker lcores of director A (`--workers`).
    pub workers: u16,
    /// With several workers: director A's counter changes over the whole demo per lcore
    /// (non-zero counters only), keyed by lcore id.
    pub lcores: BTreeMap<String, Counters>,
    /// Director A's `tandemctl -L -n` at the end of the demo (its services were applied with
    /// `tandemctl`; the counts show the demo's connections that are still in the table).
    pub listing: Option<String>,
    /// The failover drills the demo ends with (`kill`, one per mode), each on a failover pair
    /// built for it.
    pub drills: Vec<crate::drill::DrillReport>,
    /// The health-check drill after them (a real server's service stopped and started
    /// again on a failover pair: quiesced after `fall` intervals, back after `rise`).
    pub health: Option<crate::health::HealthReport>,
}

impl DemoReport {
    fn push(&mut self, check: Check) {
        tracing::debug!(check = %check.name, passed = check.passed, detail = %check.detail, "check");
        self.checks.push(check);
    }

    /// The human table: check, result, detail.
    pub fn table(&self) -> String {
        let w = self
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!("{:<w$}  {:<6}  {}\n", "check", "result", "detail");
        for c in &self.checks {
            out.push_str(&format!(
                "{:<w$}  {:<6}  {}\n",
                c.name,
                if c.passed { "PASS" } else { "FAIL" },
                c.detail
            ));
        }
        if let Some(listing) = &self.listing {
            out.push_str("\ndirector A, `tandemctl -L -n`:\n");
            out.push_str(listing);
            out.push('\n');
        }
        if !self.drills.is_empty() {
            out.push_str("\nfailover drills (A's dataplane and syncd SIGKILLed under traffic):\n");
            out.push_str(crate::drill::DrillReport::HEADER);
            for d in &self.drills {
                out.push_str(&d.row());
            }
            for d in &self.drills {
                if let Some(p) = &d.svg {
                    out.push_str(&format!("picture ({}): {p}\n", d.mode));
                }
            }
            out.push('\n');
        }
        if let Some(h) = &self.health {
            out.push_str(&format!(
                "\nhealth checks ({} of {} stopped under traffic; tcp checks every {} ms, fall {}, rise {}):\n",
                h.server, h.service, h.interval_ms, h.fall, h.rise
            ));
            out.push_str(&format!(
                "before: {:?}\ndown in A's dataplane after {} ms, then: {:?} ({} failed)\nup again after {} ms, then: {:?} ({} failed)\n",
                h.before,
                h.down_after_ms.map_or("-".into(), |v| v.to_string()),
                h.while_down,
                h.while_down_failed,
                h.up_after_ms.map_or("-".into(), |v| v.to_string()),
                h.after,
                h.after_failed,
            ));
            for l in &h.log_lines {
                out.push_str(&format!("A's syncd: {l}\n"));
            }
            out.push('\n');
        }
        let failed = self.checks.iter().filter(|c| !c.passed).count();
        if failed == 0 {
            out.push_str(&format!("all {} checks passed\n", self.checks.len()));
        } else {
            out.push_str(&format!(
                "{failed} of {} checks FAILED\n",
                self.checks.len()
            ));
        }
        out
    }
}

/// Runs the whole demo: up, checks, down (always, also when a check or the bring-up fails or a
/// signal sets `opts.cancel`). Returns an error only when it was interrupted; a failed bring-up or
/// teardown is reported as a failed check.
pub fn run_demo(opts: &RackOptions) -> Result<DemoReport> {
    run_demo_with_modes(opts, &[])
}

/// [`run_demo`], then traffic through each of `modes` ([`modes::run_mode`]), whose checks join
/// the report's list and whose reports go under `modes`.
pub fn run_demo_with_modes(opts: &RackOptions, modes: &[Mode]) -> Result<DemoReport> {
    run_demo_with_drills(opts, modes, None)
}

/// Connections of each of the demo's failover drills.
pub const DEMO_DRILL_CONNS: u32 = 50;

/// [`run_demo_with_modes`], then, with `drill_conns`, a failover drill (`kill`) in each of
/// `modes` on a failover pair under the same prefix (its checks `failover_drill_<mode>` and its
/// reports under `drills`; the pictures go to the current directory).
pub fn run_demo_with_drills(
    opts: &RackOptions,
    modes: &[Mode],
    drill_conns: Option<u32>,
) -> Result<DemoReport> {
    let mut report = demo_body(opts, modes)?;
    let Some(conns) = drill_conns else {
        return Ok(report);
    };
    for &mode in modes {
        opts.cancel.check()?;
        let drill = crate::drill::DrillOptions {
            mode,
            fault: crate::drill::Fault::Kill,
            conns,
            warmup: Duration::from_millis(1500),
            after: Duration::from_millis(2500),
            svg: Some(std::path::PathBuf::from(format!(
                "demo-drill-{}-kill.svg",
                mode.name()
            ))),
        };
        let name = format!("failover_drill_{}", mode.name());
        match crate::drill::run_drill(opts.clone(), &drill) {
            Ok(d) => {
                // A kill drill must also have had an active director throughout.
                let ok = d.passed() && d.max_actives == 1;
                report.push(Check::new(
                    &name,
                    ok,
                    format!(
                        "{}/{} connections survived the kill of A, takeover {} ms, new flow {} ms, {} lost messages",
                        d.survived,
                        d.established,
                        d.takeover_ms.map_or("-".into(), |v| v.to_string()),
                        d.new_flow_ms.map_or("-".into(), |v| v.to_string()),
                        d.lost_messages
                    ),
                ));
                report.drills.push(d);
            }
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => report.push(Check::new(&name, false, e.to_string())),
        }
    }
    opts.cancel.check()?;
    match crate::health::run_health_drill(opts.clone()) {
        Ok(h) => {
            report.push(Check::new("health_check_quiesce", h.passed(), h.summary()));
            report.health = Some(h);
        }
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(e) => report.push(Check::new("health_check_quiesce", false, e.to_string())),
    }
    Ok(finish(report))
}

fn demo_body(opts: &RackOptions, modes: &[Mode]) -> Result<DemoReport> {
    let mut report = DemoReport {
        prefix: opts.prefix.to_string(),
        pmd: opts.pmd.to_string(),
        vip: opts.spec.vip.to_string(),
        director: DirectorId::A.letter().to_owned(),
        workers: opts.workers,
        ..DemoReport::default()
    };
    let rack = match Rack::up(opts) {
        Ok(rack) => rack,
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(e) => {
            report.push(Check::new("rack_up", false, e.to_string()));
            return Ok(finish(report));
        }
    };
    report.push(Check::new(
        "rack_up",
        true,
        format!(
            "directors A (pid {}) and B (pid {}) ready; state in {}",
            rack.director_pid(DirectorId::A).unwrap_or(0),
            rack.director_pid(DirectorId::B).unwrap_or(0),
            rack.state().path().display()
        ),
    ));
    let a_first = rack.stats(DirectorId::A);
    let mut outcome = run_checks(&rack, &opts.cancel, &mut report);
    for &mode in modes {
        if outcome.is_err() {
            break;
        }
        outcome = modes::run_mode(&rack, mode, &opts.cancel).map(|m| {
            for c in &m.checks {
                report.push(c.clone());
            }
            report.modes.insert(mode.name().to_owned(), m);
        });
    }
    if outcome.is_ok() && rack.spec().workers(DirectorId::A) > 1 {
        outcome = a_first.and_then(|first| worker_checks(&rack, &first, &opts.cancel, &mut report));
    }
    if outcome.is_ok() {
        outcome = listing_check(&rack, &mut report);
    }
    let down = rack.down();
    if let Err(Error::Interrupted) = outcome {
        return Err(Error::Interrupted);
    }
    if let Err(e) = outcome {
        report.push(Check::new("demo", false, e.to_string()));
    }
    match down {
        Ok(t) => report.push(Check::new(
            "rack_down",
            true,
            format!(
                "{} namespaces deleted, {} directories removed",
                t.namespaces.len(),
                t.removed.len()
            ),
        )),
        Err(e) => report.push(Check::new("rack_down", false, e.to_string())),
    }
    Ok(finish(report))
}

/// Director A's `tandemctl -L -n`: every service of the rack's spec is listed (they were
/// applied with `tandemctl` when the rack came up).
fn listing_check(rack: &Rack, report: &mut DemoReport) -> Result<()> {
    let Some(ctl) = rack.ctl(DirectorId::A) else {
        report.push(Check::new(
            "tandemctl_listing",
            false,
            "no tandemctl for director A",
        ));
        return Ok(());
    };
    let listing = ctl.listing()?;
    let spec = rack.spec();
    let services: Vec<String> = spec
        .directors
        .iter()
        .filter(|d| d.id == DirectorId::A)
        .flat_map(|d| d.services.iter())
        .map(|s| {
            let p = match s.protocol {
                crate::rack::ProtocolName::Tcp => "TCP",
                crate::rack::ProtocolName::Udp => "UDP",
            };
            format!("{p}  {}:{} {}", s.address, s.port, s.scheduler)
        })
        .collect();
    let missing: Vec<&String> = services
        .iter()
        .filter(|l| !listing.lines().any(|x| x.starts_with(l.as_str())))
        .collect();
    report.push(Check::new(
        "tandemctl_listing",
        missing.is_empty(),
        if missing.is_empty() {
            format!(
                "director A lists the {} services applied with tandemctl",
                services.len()
            )
        } else {
            format!("missing from `tandemctl -L -n`: {missing:?}")
        },
    ));
    report.listing = Some(listing);
    Ok(())
}

fn finish(mut report: DemoReport) -> DemoReport {
    report.ok = !report.checks.is_empty() && report.checks.iter().all(|c| c.passed);
    report
}

/// The checks against a rack that is up. Each phase snapshots the directors' stats, flushes the
/// client's neighbours, captures ARP on the client while pinging, then waits for stats written
/// after the ping so the deltas hold exactly that phase's packets.
pub fn run_checks(rack: &Rack, cancel: &Cancel, report: &mut DemoReport) -> Result<()> {
    let spec = rack.spec();
    for d in &spec.directors {
        let netns = rack.netns(&d.host);
        let mut found = Vec::new();
        for p in &d.ports {
            for a in probe::kernel_addresses(&netns, &p.iface)? {
                found.push(format!("{}: {a}", p.iface));
            }
        }
        let ifaces = d
            .ports
            .iter()
            .map(|p| p.iface.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        report.push(Check::new(
            &format!("kernel_no_address_{}", d.id.lower()),
            found.is_empty(),
            if found.is_empty() {
                format!("kernel of {netns} holds no address on {ifaces}")
            } else {
                format!("kernel of {netns} holds {}", found.join(", "))
            },
        ));
    }
    let first: BTreeMap<DirectorId, Stats> = DirectorId::ALL
        .iter()
        .map(|&id| rack.stats(id).map(|s| (id, s)))
        .collect::<Result<_>>()?;
    let mut before = first.clone();

    // Phase 1: the VIP, owned by A only.
    let vip = spec.vip;
    let (phase, after) = ping_phase(rack, cancel, vip, &before)?;
    let a_mac = after
        .get(&DirectorId::A)
        .and_then(|s| s.port_mac("outside"));
    report.ping = phase.ping.clone();
    report.vip_mac = phase.mac.clone();
    report.director_mac = a_mac.clone();
    report.vip_ping_ok = phase.ping.all_answered();
    report.push(Check::new(
        "vip_ping",
        report.vip_ping_ok,
        format!("{vip}: {}", ping_detail(&phase.ping)),
    ));
    let mac_ok = mac_matches(&phase, a_mac.as_deref());
    report.push(Check::new(
        "vip_mac_is_director_a",
        mac_ok,
        format!(
            "client neighbour {vip} lladdr {}, director A outside port mac {}",
            phase.mac.as_deref().unwrap_or("(none)"),
            a_mac.as_deref().unwrap_or("(unknown)")
        ),
    ));
    let counted = counters_cover(&phase, "A");
    report.push(Check::new(
        "vip_counted_by_dataplane_a",
        counted.0,
        counted.1,
    ));
    let b = phase.directors.get("B").cloned().unwrap_or_default();
    let b_quiet = b.get("arp_replies") == 0 && b.get("icmp_echo_replies") == 0;
    report.push(Check::new(
        "vip_not_answered_by_b",
        b_quiet,
        format!(
            "director B arp_replies +{}, icmp_echo_replies +{}",
            b.get("arp_replies"),
            b.get("icmp_echo_replies")
        ),
    ));
    report.answered_by_dpdk = report.vip_ping_ok && mac_ok && counted.0;
    report.phases.push(phase);
    before = after;

    // Phases 2 and 3: each director's own outside address, answered by its own dataplane.
    for d in &spec.directors {
        let Some(port) = d.port("outside") else {
            continue;
        };
        let target = port.address.addr;
        let (phase, after) = ping_phase(rack, cancel, target, &before)?;
        let own_mac = after.get(&d.id).and_then(|s| s.port_mac("outside"));
        let letter = d.id.letter();
        let mac_ok = mac_matches(&phase, own_mac.as_deref());
        let counted = counters_cover(&phase, letter);
        report.push(Check::new(
            &format!("director_{}_address_ping", d.id.lower()),
            phase.ping.all_answered() && mac_ok && counted.0,
            format!(
                "{target}: {}; mac {} (director {letter}'s {}); {}",
                ping_detail(&phase.ping),
                phase.mac.as_deref().unwrap_or("(none)"),
                own_mac.as_deref().unwrap_or("(unknown)"),
                counted.1
            ),
        ));
        report.phases.push(phase);
        before = after;
    }
    for (id, s) in &before {
        if let Some(f) = first.get(id) {
            report
                .directors
                .insert(id.letter().to_owned(), s.total.delta(&f.total).nonzero());
        }
    }
    Ok(())
}

/// With several workers, director A's per-lcore counters over the demo since `first`: every
/// lcore received frames, no redirect ring overflowed, every next hop was resolved (a worker
/// learns neighbours only from the ARP frames it receives itself).
fn worker_checks(
    rack: &Rack,
    first: &Stats,
    cancel: &Cancel,
    report: &mut DemoReport,
) -> Result<()> {
    let last = rack.stats_after(
        DirectorId::A,
        now_unix_ms() + COUNTER_PUBLISH_SLACK_MS,
        FRESH_STATS,
        cancel,
    )?;
    let mut deltas = Vec::new();
    for l in &last.lcores {
        let before = first
            .lcores
            .iter()
            .find(|f| f.lcore == l.lcore)
            .map(|f| f.counters.clone())
            .unwrap_or_default();
        let d = l.counters.delta(&before).nonzero();
        report.lcores.insert(l.lcore.to_string(), d.clone());
        deltas.push((l.lcore, d));
    }
    let per = |name: &str| {
        deltas
            .iter()
            .map(|(l, d)| format!("lcore {l} {}", d.get(name)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sum = |name: &str| deltas.iter().map(|(_, d)| d.get(name)).sum::<u64>();
    report.push(Check::new(
        "a_every_lcore_received",
        deltas.len() == usize::from(report.workers)
            && deltas.iter().all(|(_, d)| d.get("rx_packets") > 0),
        format!(
            "{} workers; rx_packets: {}; redirected: {}",
            report.workers,
            per("rx_packets"),
            per("redirected")
        ),
    ));
    report.push(Check::new(
        "a_redirect_ring_never_full",
        sum("drops.redirect_ring_full") == 0,
        format!(
            "drops.redirect_ring_full: {}",
            per("drops.redirect_ring_full")
        ),
    ));
    report.push(Check::new(
        "a_next_hops_resolved",
        sum("drops.neighbour_unresolved") == 0,
        format!(
            "drops.neighbour_unresolved: {}; neighbours_learned: {}",
            per("drops.neighbour_unresolved"),
            per("neighbours_learned")
        ),
    ));
    Ok(())
}

/// The client's neighbour entry, and every ARP reply on the wire, carry `expected`.
fn mac_matches(phase: &PingPhase, expected: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return false;
    };
    phase.mac.as_deref() == Some(expected)
        && phase
            .arp_reply_macs
            .as_ref()
            .is_none_or(|macs| macs.iter().all(|m| m == expected))
}

fn ping_detail(p: &PingSummary) -> String {
    match p.rtt_avg_ms {
        Some(rtt) => format!("{}/{} answered, rtt avg {rtt:.3} ms", p.received, p.sent),
        None => format!("{}/{} answered", p.received, p.sent),
    }
}

/// Whether director `letter`'s counters cover what the client saw in `phase`: its ARP replies
/// rose by at least the ARP requests the client sent (at least one, as the client's neighbour
/// entry was flushed before; the director answers every request for its addresses), its echo
/// replies by at least the echo replies the client received.
fn counters_cover(phase: &PingPhase, letter: &str) -> (bool, String) {
    let d = phase.directors.get(letter).cloned().unwrap_or_default();
    let replies_seen = phase.arp_reply_macs.as_ref().map_or(0, Vec::len);
    let replies_seen = u32::try_from(replies_seen).unwrap_or(u32::MAX);
    let arp_needed = phase.arp_requests.unwrap_or(0).max(replies_seen).max(1);
    let echo_needed = phase.ping.received.max(1);
    let ok = d.get("arp_replies") >= u64::from(arp_needed)
        && d.get("icmp_echo_replies") >= u64::from(echo_needed);
    let wire = match (phase.arp_requests, &phase.arp_reply_macs) {
        (Some(q), Some(r)) => format!(" (wire: {q} ARP requests, {} replies)", r.len()),
        _ => String::new(),
    };
    (
        ok,
        format!(
            "director {letter} arp_replies +{} (need >= {arp_needed}), icmp_echo_replies +{} (need >= {echo_needed}){wire}",
            d.get("arp_replies"),
            d.get("icmp_echo_replies"),
        ),
    )
}

/// Pings `target` from the client with a clean neighbour table and an ARP capture running;
/// returns the phase and the directors' stats written after it.
fn ping_phase(
    rack: &Rack,
    cancel: &Cancel,
    target: Ipv4Addr,
    before: &BTreeMap<DirectorId, Stats>,
) -> Result<(PingPhase, BTreeMap<DirectorId, Stats>)> {
    cancel.check()?;
    let client = rack.client_netns();
    let dev = rack.spec().client_iface.clone();
    probe::flush_neighbours(&client, &dev)?;
    let capture = if Capture::available() {
        match Capture::start(&client, &dev, "arp", 1000) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "ARP capture unavailable; relying on counters and neighbours");
                None
            }
        }
    } else {
        None
    };
    let ping = probe::ping(&client, target, PING_COUNT)?;
    let neighbour = probe::neighbour(&client, target)?;
    let arp: Option<ArpSeen> = capture.map(|c| {
        let lines = c.stop();
        probe::parse_arp_lines(lines.iter().map(String::as_str))
    });
    // Workers publish their counters every 100 ms and the file is written every second: a file
    // written 200 ms after the last packet holds it.
    let done_ms = now_unix_ms() + COUNTER_PUBLISH_SLACK_MS;
    let mut after = BTreeMap::new();
    let mut directors = BTreeMap::new();
    for (&id, b) in before {
        let s = rack.stats_after(id, done_ms, FRESH_STATS, cancel)?;
        directors.insert(id.letter().to_owned(), s.total.delta(&b.total).nonzero());
        after.insert(id, s);
    }
    Ok((
        PingPhase {
            target: target.to_string(),
            ping,
            mac: neighbour.and_then(|n| n.mac()),
            arp_requests: arp.as_ref().map(|a| a.requests_for(target)),
            arp_reply_macs: arp.as_ref().map(|a| a.replies_for(target).to_vec()),
            directors,
        },
        after,
    ))
}
