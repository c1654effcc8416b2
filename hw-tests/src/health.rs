//! The health-check drill: on a failover pair, with traffic running through the NAT VIP's
//! port 80 (rs1:80 weight 1, rs2:8000 weight 2), real server rs1's service is stopped: after
//! `fall` check intervals the active director's dataplane quiesces rs1 (its listing says
//! `down`) and no new connection reaches it, rs2 takes them all; rs1's service is started
//! again and after `rise` intervals it gets new connections again. Meanwhile the standby
//! checks too (its syncd status shows rs1 down, then up) but leaves its own dataplane alone.
//!
//! Checks run from each director's kernel interface `hc0` on the inside network
//! ([`crate::pair`]).

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::ClientOptions;
use crate::error::{Error, Result};
use crate::exec::Cancel;
use crate::pair::{CHECK_FALL, CHECK_INTERVAL_MS, CHECK_RISE, CHECK_TIMEOUT_MS};
use crate::rack::{DirectorId, Rack, RackOptions, run_client};

/// The real server whose service is stopped.
pub const VICTIM: &str = "rs1";
/// How long after the stop (or restart) the dataplane's verdict may take: `fall` (`rise`)
/// intervals with their jitter, one more interval for the phase of the schedule, one check's
/// timeout, and slack for a loaded machine (listing, `SetServerHealth`, applying).
pub fn verdict_bound() -> Duration {
    let n = u64::from(CHECK_FALL.max(CHECK_RISE)) + 1;
    Duration::from_millis(n * CHECK_INTERVAL_MS * 11 / 10 + CHECK_TIMEOUT_MS + 1500)
}

/// One burst of the background traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Burst {
    /// Started, ms after the service was stopped (negative: before).
    pub at_ms: i64,
    /// Connections answered, per server name.
    pub per_server: BTreeMap<String, u32>,
    /// Connections that failed.
    pub failed: u32,
}

/// What the drill saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// The service (`tcp 203.0.113.10:80`).
    pub service: String,
    /// The stopped server (`172.16.0.2:80`).
    pub server: String,
    /// Check settings: interval, timeout, rise, fall.
    pub interval_ms: u64,
    /// A check's timeout.
    pub timeout_ms: u64,
    /// Successes to come back.
    pub rise: u32,
    /// Failures to go down.
    pub fall: u32,
    /// Stop → A's dataplane lists the server down.
    pub down_after_ms: Option<u64>,
    /// Restart → A's dataplane lists it up.
    pub up_after_ms: Option<u64>,
    /// Connections per server of a burst of 30 before the stop.
    pub before: BTreeMap<String, u32>,
    /// The same once the server was listed down (all ok, none to it).
    pub while_down: BTreeMap<String, u32>,
    /// Failed connections of that burst.
    pub while_down_failed: u32,
    /// The same once it was listed up again.
    pub after: BTreeMap<String, u32>,
    /// Failed connections of that burst.
    pub after_failed: u32,
    /// The standby's syncd saw the server down (its status file).
    pub standby_saw_down: bool,
    /// The standby's dataplane never got a verdict (its listing shows none).
    pub standby_untouched: bool,
    /// Background bursts (5 connections each) started after the down verdict and before the
    /// restart that reached the stopped server (must be 0).
    pub bursts_to_victim_while_down: u32,
    /// Background bursts over the whole drill.
    pub bursts: Vec<Burst>,
    /// The active's syncd log lines about the server (`server down: ...`).
    pub log_lines: Vec<String>,
}

impl HealthReport {
    /// Whether everything held.
    pub fn passed(&self) -> bool {
        let bound = u64::try_from(verdict_bound().as_millis()).unwrap_or(u64::MAX);
        self.down_after_ms.is_some_and(|t| t <= bound)
            && self.up_after_ms.is_some_and(|t| t <= bound)
            && self.before.get(VICTIM).copied().unwrap_or(0) > 0
            && !self.while_down.contains_key(VICTIM)
            && self.while_down.values().sum::<u32>() == 30
            && self.while_down_failed == 0
            && self.after.get(VICTIM).copied().unwrap_or(0) > 0
            && self.after_failed == 0
            && self.standby_saw_down
            && self.standby_untouched
            && self.bursts_to_victim_while_down == 0
    }

    /// One line for the demo's check list.
    pub fn summary(&self) -> String {
        format!(
            "{} stopped: down in A's dataplane after {} ms (fall {} x {} ms), then 30/30 new connections to {:?}; restarted: up after {} ms (rise {}), then {:?}; standby saw it down: {}, left its dataplane alone: {}",
            self.server,
            self.down_after_ms.map_or("-".into(), |v| v.to_string()),
            self.fall,
            self.interval_ms,
            self.while_down,
            self.up_after_ms.map_or("-".into(), |v| v.to_string()),
            self.rise,
            self.after,
            self.standby_saw_down,
            self.standby_untouched,
        )
    }
}

/// The health state of `server` (`172.16.0.2:80`) in service VIP:port as director `id`'s
/// dataplane lists it: `Some("up"|"down")`, `Some("-")` without a verdict, `None` if not
/// listed.
pub fn dataplane_health(
    rack: &Rack,
    id: DirectorId,
    vip: SocketAddrV4,
    server: &str,
) -> Result<Option<String>> {
    let ctl = rack
        .ctl(id)
        .ok_or_else(|| Error::Topology(format!("director {} has no tandemctl", id.letter())))?;
    let out = ctl.run(&[
        "-o".into(),
        "json".into(),
        "-L".into(),
        "-n".into(),
        "-t".into(),
        vip.to_string(),
    ])?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| Error::parse("tandemctl -o json -L -n", e.to_string()))?;
    let servers = v["services"]
        .as_array()
        .and_then(|s| s.first())
        .and_then(|s| s["servers"].as_array())
        .cloned()
        .unwrap_or_default();
    Ok(servers
        .iter()
        .find(|s| format!("{}:{}", s["address"].as_str().unwrap_or(""), s["port"]) == server)
        .map(|s| s["health"]["state"].as_str().unwrap_or("-").to_string()))
}

fn burst(target: SocketAddrV4, conns: u32) -> ClientOptions {
    let mut o = ClientOptions::new(target, conns, 1);
    o.op_timeout = Duration::from_millis(1000);
    o.timeout = Duration::from_secs(10);
    o
}

/// Waits (bounded by `limit`) until A's dataplane lists `server` as `state`; the time it
/// took.
fn wait_listed(
    rack: &Rack,
    vip: SocketAddrV4,
    server: &str,
    state: &str,
    limit: Duration,
    cancel: &Cancel,
) -> Result<Option<u64>> {
    let t0 = Instant::now();
    loop {
        cancel.check()?;
        if dataplane_health(rack, DirectorId::A, vip, server)?.as_deref() == Some(state) {
            return Ok(Some(
                u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            ));
        }
        if t0.elapsed() > limit {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Brings a failover pair up, runs [`health_drill_on`] and tears the pair down.
pub fn run_health_drill(mut rack_opts: RackOptions) -> Result<HealthReport> {
    rack_opts.pair = true;
    let cancel = rack_opts.cancel.clone();
    let desc = crate::hosts::RackFile::default_virtual(&crate::drill::rack_vars(&rack_opts))?;
    let mut rack = Rack::up(&rack_opts)?;
    let r = health_drill_on(&mut rack, desc, rack_opts.ready_timeout, &cancel);
    let down = rack.down();
    let r = r?;
    down?;
    Ok(r)
}

/// The drill on a pair that is up (see the module doc). Leaves rs1's service running.
pub fn health_drill_on(
    rack: &mut Rack,
    desc: crate::hosts::RackFile,
    ready_timeout: std::time::Duration,
    cancel: &Cancel,
) -> Result<HealthReport> {
    {
        let mut target = crate::drill::Target {
            desc,
            rack: Some(&mut *rack),
            ready_timeout,
        };
        crate::drill::settle(&mut target, cancel)?;
    }
    let vip = SocketAddrV4::new(rack.spec().vip, 80);
    let rs = rack
        .spec()
        .real_server(VICTIM)
        .ok_or_else(|| Error::Topology(format!("no real server {VICTIM}")))?;
    let server = format!("{}:80", rs.address);
    let service = format!("tcp {vip}");
    let mut report = HealthReport {
        service: service.clone(),
        server: server.clone(),
        interval_ms: CHECK_INTERVAL_MS,
        timeout_ms: CHECK_TIMEOUT_MS,
        rise: CHECK_RISE,
        fall: CHECK_FALL,
        ..HealthReport::default()
    };
    // Both syncds know the servers are up, and A's dataplane has the verdict.
    let t0 = Instant::now();
    loop {
        cancel.check()?;
        let known = |id| {
            rack.syncd_status(id)
                .and_then(|s| s.health)
                .is_some_and(|h| h.state(&service, &server) == Some("up"))
        };
        if known(DirectorId::A)
            && known(DirectorId::B)
            && dataplane_health(rack, DirectorId::A, vip, &server)?.as_deref() == Some("up")
        {
            break;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            return Err(Error::Topology(format!(
                "the checks did not find {server} up within 20 s (see {})",
                rack.state().path().display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let tool = match rack.tool() {
        Some(t) => t.to_path_buf(),
        None => crate::process::locate_tool(None)?,
    };
    let netns = rack.client_netns();
    report.before = run_client(&tool, &netns, &burst(vip, 30))?.per_server;

    // Background traffic: bursts of 5 connections, one after the other, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let traffic = {
        let (stop, tool, netns) = (Arc::clone(&stop), tool.clone(), netns.clone());
        std::thread::spawn(move || {
            let mut bursts = Vec::new();
            for _ in 0..1000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let at = origin.elapsed();
                if let Ok(r) = run_client(&tool, &netns, &burst(vip, 5)) {
                    bursts.push((at, origin.elapsed(), r));
                }
            }
            bursts
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let stopped_at = origin.elapsed();
    let outcome = (|| -> Result<(Duration, Duration)> {
        rack.stop_real_server(VICTIM)?;
        report.down_after_ms =
            wait_listed(rack, vip, &server, "down", Duration::from_secs(15), cancel)?;
        let down_at = origin.elapsed();
        // B checks on its own schedule and writes its status file every status interval:
        // it may see the server down a little after A.
        let b_sees_down = || {
            rack.syncd_status(DirectorId::B)
                .and_then(|s| s.health)
                .is_some_and(|h| h.state(&service, &server) == Some("down"))
        };
        let deadline = std::time::Instant::now() + verdict_bound();
        report.standby_saw_down = loop {
            if b_sees_down() {
                break true;
            }
            if std::time::Instant::now() > deadline || cancel.is_cancelled() {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let w = run_client(&tool, &netns, &burst(vip, 30))?;
        report.while_down = w.per_server;
        report.while_down_failed = w.failed;
        report.standby_untouched =
            dataplane_health(rack, DirectorId::B, vip, &server)?.as_deref() == Some("-");
        std::thread::sleep(Duration::from_millis(500));
        let restart_at = origin.elapsed();
        rack.start_real_server(VICTIM, cancel)?;
        report.up_after_ms =
            wait_listed(rack, vip, &server, "up", Duration::from_secs(15), cancel)?;
        Ok((down_at, restart_at))
    })();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let bursts = traffic.join().unwrap_or_default();
    let (down_at, restart_at) = outcome?;
    let a = run_client(&tool, &netns, &burst(vip, 30))?;
    report.after = a.per_server;
    report.after_failed = a.failed;
    let rel = |d: Duration| {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
            - i64::try_from(stopped_at.as_millis()).unwrap_or(i64::MAX)
    };
    for (start, end, r) in bursts {
        if start > down_at && end < restart_at && r.per_server.contains_key(VICTIM) {
            report.bursts_to_victim_while_down += 1;
        }
        report.bursts.push(Burst {
            at_ms: rel(start),
            per_server: r.per_server,
            failed: r.failed,
        });
    }
    let log = std::fs::read_to_string(rack.state().syncd_log(DirectorId::A)).unwrap_or_default();
    report.log_lines = log
        .lines()
        .filter(|l| l.contains(&server) && (l.contains("server down") || l.contains("server up")))
        .map(|l| l.to_string())
        .collect();
    Ok(report)
}
