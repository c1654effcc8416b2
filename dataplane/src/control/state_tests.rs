use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use tandem_core::sched::{SchedulerKind, SchedulerOptions};

use super::*;

const EXAMPLE: &str = include_str!("../../examples/director.toml");
const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

#[derive(Default)]
struct FakeProbe {
    in_use: RefCell<HashSet<DestId>>,
    traffic: RefCell<HashMap<DestId, DestTraffic>>,
}

impl Probe for FakeProbe {
    fn dest_in_use(&self, id: DestId) -> bool {
        self.in_use.borrow().contains(&id)
    }
    fn traffic(&self, id: DestId) -> DestTraffic {
        self.traffic.borrow().get(&id).copied().unwrap_or_default()
    }
}

impl FakeProbe {
    fn conns(&self, id: u32, n: u64) {
        self.traffic
            .borrow_mut()
            .entry(DestId(id))
            .or_default()
            .conns = n;
    }
}

fn state() -> ControlState {
    let cfg = Config::parse(EXAMPLE, "example").expect("valid");
    ControlState::new(
        Path::new("/nonexistent"),
        cfg,
        Timeouts::default(),
        build::MAX_DESTS,
    )
    .expect("state")
}

fn web() -> Endpoint {
    Endpoint::new(VIP, 80)
}

fn nat(last: u8, port: u16, weight: u32) -> DestSpec {
    DestSpec {
        addr: Ipv4Addr::new(172, 16, 0, last),
        port,
        method: ForwardMethod::Nat,
        weight,
    }
}

fn spec(port: u16, scheduler: SchedulerKind, dests: Vec<DestSpec>) -> ServiceSpec {
    ServiceSpec {
        proto: Protocol::Tcp,
        vip: Endpoint::new(VIP, port),
        scheduler,
        options: SchedulerOptions::default(),
        persistence: None,
        dests,
    }
}

/// (service port, server, id) of every destination.
fn ids(s: &ControlState) -> Vec<(u16, Endpoint, u32)> {
    let set = s.set();
    set.services()
        .iter()
        .flat_map(|svc| {
            set.service_dests(svc)
                .iter()
                .map(|d| (svc.vip.port, d.endpoint, d.id.0))
        })
        .collect()
}

fn ep(last: u8, port: u16) -> Endpoint {
    Endpoint::new(Ipv4Addr::new(172, 16, 0, last), port)
}

#[test]
fn add_service_and_servers_with_one_line_each() {
    let mut s = state();
    let p = FakeProbe::default();
    let now = Instant::now();
    assert_eq!(s.generation(), 1);
    let c = s
        .add_service(
            spec(443, SchedulerKind::Wlc, vec![nat(4, 8443, 3)]),
            &p,
            now,
        )
        .expect("valid");
    assert_eq!(
        c.lines,
        [
            "added service TCP 203.0.113.10:443 (wlc)",
            "added server 172.16.0.4:8443 to TCP 203.0.113.10:443 (nat weight 3)"
        ]
    );
    assert_eq!(c.generation, 2);
    let apply = c.apply.expect("applies");
    let set = apply.services.expect("a new snapshot");
    assert!(Arc::ptr_eq(&set, s.set()));
    assert!(apply.flush.is_empty() && apply.timeouts.is_none());
    let c = s
        .add_server(
            Protocol::Tcp,
            Endpoint::new(VIP, 443),
            nat(5, 8443, 1),
            &p,
            now,
        )
        .expect("valid");
    assert_eq!(
        c.lines,
        ["added server 172.16.0.5:8443 to TCP 203.0.113.10:443 (nat weight 1)"]
    );
    assert_eq!(
        ids(&s),
        [
            (80, ep(2, 80), 0),
            (80, ep(3, 8000), 1),
            (21, ep(3, 21), 2),
            (443, ep(4, 8443), 3),
            (443, ep(5, 8443), 4)
        ]
    );
    assert_eq!(s.generation(), 3);
}

/// Every refusal names the problem and leaves the state exactly as it was.
#[test]
fn refusals_change_nothing() {
    let mut s = state();
    let p = FakeProbe::default();
    let now = Instant::now();
    let before = (s.specs().to_vec(), s.generation(), ids(&s));
    let same = |s: &ControlState| (s.specs().to_vec(), s.generation(), ids(s));
    let mut other_vip = spec(80, SchedulerKind::Rr, vec![]);
    other_vip.vip.addr = Ipv4Addr::new(198, 51, 100, 1);
    let e = s.add_service(other_vip, &p, now).unwrap_err();
    assert_eq!(
        e.to_string(),
        "service TCP 198.51.100.1:80: address 198.51.100.1 is not a VIP of this director \
         (declared [[vip]]: 203.0.113.10, 172.16.0.254; adding a VIP needs a restart)"
    );
    let e = s
        .add_service(spec(80, SchedulerKind::Rr, vec![]), &p, now)
        .unwrap_err();
    assert_eq!(
        e,
        ControlError::Exists("service TCP 203.0.113.10:80 already exists".into())
    );
    let e = s
        .add_server(
            Protocol::Tcp,
            Endpoint::new(VIP, 8080),
            nat(9, 80, 1),
            &p,
            now,
        )
        .unwrap_err();
    assert_eq!(
        e,
        ControlError::NotFound("no service TCP 203.0.113.10:8080 (add it first)".into())
    );
    let mut dr = nat(9, 8080, 1);
    dr.method = ForwardMethod::DirectRoute;
    let e = s.add_server(Protocol::Tcp, web(), dr, &p, now).unwrap_err();
    assert_eq!(
        e.to_string(),
        "service 203.0.113.10:80: real server 172.16.0.9:8080 uses DirectRoute, which cannot map port 80 to 8080"
    );
    let e = s
        .add_server(Protocol::Tcp, web(), nat(3, 8000, 1), &p, now)
        .unwrap_err();
    assert!(matches!(e, ControlError::Exists(_)), "{e}");
    let e = s
        .add_server(Protocol::Tcp, web(), nat(251, 80, 1), &p, now)
        .unwrap_err();
    assert!(e.to_string().contains("director's own address"), "{e}");
    let e = s
        .edit_server(Protocol::Tcp, web(), ep(9, 80), None, Some(3), &p, now)
        .unwrap_err();
    assert_eq!(
        e,
        ControlError::NotFound("no server 172.16.0.9:80 in service TCP 203.0.113.10:80".into())
    );
    let e = s
        .edit_server(Protocol::Tcp, web(), ep(2, 80), None, Some(70_000), &p, now)
        .unwrap_err();
    assert!(
        e.to_string().contains("weight 70000 is out of range"),
        "{e}"
    );
    // A bad replacement is refused as a whole, the good services in it included.
    let e = s
        .replace(
            vec![
                spec(80, SchedulerKind::Rr, vec![nat(7, 80, 1)]),
                spec(81, SchedulerKind::Rr, vec![nat(7, 80, 1), nat(7, 80, 2)]),
            ],
            false,
            &p,
            now,
        )
        .unwrap_err();
    assert!(e.to_string().contains("listed twice"), "{e}");
    let e = s
        .edit_service(
            Protocol::Tcp,
            web(),
            |x| {
                x.options = SchedulerOptions::with_flags(SchedulerKind::Sh, "sh-port")
                    .map_err(|e| ControlError::Invalid(e.to_string()))?;
                Ok(())
            },
            &p,
            now,
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("only to the sh and mh schedulers"),
        "{e}"
    );
    assert_eq!(same(&s), before);
}

#[test]
fn edits_and_deletes_say_what_changed_and_drain_or_flush() {
    let mut s = state();
    let p = FakeProbe::default();
    let now = Instant::now();
    let c = s
        .edit_server(Protocol::Tcp, web(), ep(3, 8000), None, Some(5), &p, now)
        .expect("valid");
    assert_eq!(
        c.lines,
        ["server 172.16.0.3:8000 of TCP 203.0.113.10:80: weight 2 -> 5"]
    );
    let c = s
        .edit_server(Protocol::Tcp, web(), ep(3, 8000), None, Some(5), &p, now)
        .expect("valid");
    assert!(
        c.lines.is_empty() && c.apply.is_none(),
        "no change, no new generation"
    );
    assert_eq!(c.generation, 2);
    let c = s
        .edit_service(
            Protocol::Tcp,
            web(),
            |x| {
                x.scheduler = SchedulerKind::Rr;
                x.dests.clear(); // ignored: editing a service keeps its servers
                Ok(())
            },
            &p,
            now,
        )
        .expect("valid");
    assert_eq!(
        c.lines,
        ["service TCP 203.0.113.10:80: scheduler wrr -> rr"]
    );
    assert_eq!(s.specs()[0].dests.len(), 2);
    let c = s
        .delete_server(Protocol::Tcp, web(), ep(2, 80), false, &p, now)
        .expect("valid");
    assert_eq!(
        c.lines,
        ["deleted server 172.16.0.2:80 from TCP 203.0.113.10:80 (connections drain)"]
    );
    assert!(c.apply.expect("applies").flush.is_empty());
    let c = s
        .delete_service(Protocol::Tcp, Endpoint::new(VIP, 21), true, &p, now)
        .expect("valid");
    assert_eq!(
        c.lines,
        ["deleted service TCP 203.0.113.10:21 (connections flushed)"]
    );
    assert_eq!(
        c.apply.expect("applies").flush,
        [FlushTarget::Service {
            proto: Protocol::Tcp,
            vip: Endpoint::new(VIP, 21)
        }]
    );
    let c = s
        .delete_server(Protocol::Tcp, web(), ep(3, 8000), true, &p, now)
        .expect("valid");
    assert_eq!(
        c.apply.expect("applies").flush,
        [FlushTarget::Server {
            proto: Protocol::Tcp,
            vip: web(),
            server: ep(3, 8000)
        }]
    );
    assert_eq!(s.generation(), 6);
}

#[test]
fn ids_are_stable_and_deleted_ones_stay_retired_while_in_use() {
    let mut s = state();
    let p = FakeProbe::default();
    let t0 = Instant::now();
    s.delete_server(Protocol::Tcp, web(), ep(2, 80), false, &p, t0)
        .expect("valid");
    assert_eq!(ids(&s), [(80, ep(3, 8000), 1), (21, ep(3, 21), 2)]);
    // Just deleted: slot 0 is retired, the new server takes 3.
    s.add_server(Protocol::Tcp, web(), nat(6, 80, 1), &p, t0)
        .expect("valid");
    assert_eq!(ids(&s)[1], (80, ep(6, 80), 3));
    // Later, but connections still use slot 0: still retired.
    p.in_use.borrow_mut().insert(DestId(0));
    let t1 = t0 + RETIRE_AT_LEAST * 2;
    s.add_server(Protocol::Tcp, web(), nat(7, 80, 1), &p, t1)
        .expect("valid");
    assert_eq!(ids(&s)[2], (80, ep(7, 80), 4));
    // Its connections are gone: slot 0 is free again.
    p.in_use.borrow_mut().clear();
    s.add_server(Protocol::Tcp, web(), nat(8, 80, 1), &p, t1)
        .expect("valid");
    assert_eq!(ids(&s)[3], (80, ep(8, 80), 0));
    // A replacement that keeps everything keeps every id (and changes nothing).
    let before = ids(&s);
    let c = s.replace(s.specs().to_vec(), false, &p, t1).expect("valid");
    assert!(c.lines.is_empty());
    assert_eq!(ids(&s), before);
}

#[test]
fn counters_zero_with_baselines_and_a_reused_slot_starts_fresh() {
    let mut s = state();
    let p = FakeProbe::default();
    let t0 = Instant::now();
    p.conns(0, 100);
    p.conns(1, 10);
    assert_eq!(s.stats(DestId(1), &p).conns, 10);
    s.zero(None, &p).expect("zero");
    assert_eq!(s.stats(DestId(1), &p).conns, 0);
    p.conns(1, 15);
    assert_eq!(s.stats(DestId(1), &p).conns, 5);
    s.zero(Some((Protocol::Tcp, Endpoint::new(VIP, 21))), &p)
        .expect("zero one service");
    assert_eq!(s.stats(DestId(1), &p).conns, 5, "another service's");
    assert!(matches!(
        s.zero(Some((Protocol::Udp, web())), &p),
        Err(ControlError::NotFound(_))
    ));
    // Slot 0 (100 connections) is deleted, released, and reused by a new server.
    p.conns(0, 130);
    s.delete_server(Protocol::Tcp, web(), ep(2, 80), false, &p, t0)
        .expect("valid");
    s.add_server(
        Protocol::Tcp,
        web(),
        nat(9, 80, 1),
        &p,
        t0 + RETIRE_AT_LEAST,
    )
    .expect("valid");
    assert_eq!(ids(&s)[1], (80, ep(9, 80), 0));
    assert_eq!(s.stats(DestId(0), &p).conns, 0, "fresh baseline");
    p.conns(0, 131);
    assert_eq!(s.stats(DestId(0), &p).conns, 1);
}

#[test]
fn rates_follow_the_kernel_estimator() {
    let mut s = state();
    let p = FakeProbe::default();
    let two = Duration::from_secs(2);
    p.conns(1, 40);
    s.estimate(two, &p);
    assert_eq!(
        s.rates(DestId(1)).conns,
        5.0,
        "a quarter of the way to 20/s"
    );
    p.conns(1, 80);
    s.estimate(two, &p);
    assert_eq!(s.rates(DestId(1)).conns, 8.75);
    s.zero(None, &p).expect("zero");
    assert_eq!(s.rates(DestId(1)), Rates::default());
}

#[test]
fn dry_run_reports_without_applying() {
    let mut s = state();
    let p = FakeProbe::default();
    let c = s.replace(vec![], true, &p, Instant::now()).expect("valid");
    assert_eq!(
        c.lines,
        [
            "deleted service TCP 203.0.113.10:80 (connections drain)",
            "deleted service TCP 203.0.113.10:21 (connections drain)"
        ]
    );
    assert!(c.apply.is_none());
    assert_eq!((s.specs().len(), s.generation()), (2, 1));
}

#[test]
fn timeouts_zero_means_unchanged_and_too_long_is_refused() {
    let mut s = state();
    let c = s.set_timeouts(100, 0, 0, 0).expect("valid");
    assert_eq!(
        c.lines,
        ["timeouts tcp 900 -> 100, tcpfin 60 -> 60, udp 300 -> 300, tcp_syn 60 -> 60"]
    );
    assert_eq!(s.timeouts().established, Duration::from_secs(100));
    assert_eq!(c.apply.and_then(|a| a.timeouts), Some(*s.timeouts()));
    let e = s.set_timeouts(0, 0, 5_000_000, 0).unwrap_err();
    assert!(e.to_string().contains("udp = 5000000 s is too long"), "{e}");
    assert_eq!(s.timeouts().udp, Duration::from_secs(300));
    assert_eq!(s.generation(), 2);
}

#[test]
fn reload_applies_services_and_timeouts_and_refuses_a_broken_file() {
    let dir = std::env::temp_dir().join(format!("tandem-control-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("d.toml");
    std::fs::write(&path, EXAMPLE).expect("write");
    let cfg = Config::load(&path).expect("valid");
    let mut s =
        ControlState::new(&path, cfg, Timeouts::default(), build::MAX_DESTS).expect("state");
    let p = FakeProbe::default();
    let now = Instant::now();
    let c = s.reload(false, &p, now).expect("same file");
    assert!(c.lines.is_empty() && c.apply.is_none());
    let changed = EXAMPLE
        .replace(
            "port = 8000\nmethod = \"nat\"\nweight = 2",
            "port = 8000\nmethod = \"nat\"\nweight = 4",
        )
        .replace("udp_s = 300", "udp_s = 30")
        .replace("idle_sleep_max_us = 200", "idle_sleep_max_us = 100");
    assert_ne!(changed, EXAMPLE);
    std::fs::write(&path, &changed).expect("write");
    let c = s.reload(true, &p, now).expect("dry run");
    assert!(c.apply.is_none());
    assert_eq!(s.generation(), 1);
    let c = s.reload(false, &p, now).expect("valid");
    assert_eq!(
        c.lines,
        [
            "server 172.16.0.3:8000 of TCP 203.0.113.10:80: weight 2 -> 4",
            "timeouts tcp 900 -> 900, tcpfin 60 -> 60, udp 300 -> 30, tcp_syn 60 -> 60",
            "[dataplane] changed: needs a restart, not applied"
        ]
    );
    let apply = c.apply.expect("applies");
    assert!(apply.services.is_some());
    assert_eq!(apply.timeouts.map(|t| t.udp), Some(Duration::from_secs(30)));
    assert_eq!(s.generation(), 2, "one change, one generation");
    std::fs::write(&path, changed.replace("weight = 4", "weight = \"x\"")).expect("write");
    let e = s.reload(false, &p, now).unwrap_err().to_string();
    assert!(e.contains("line ") && e.contains("invalid type"), "{e}");
    assert_eq!((s.generation(), s.specs()[0].dests[1].weight), (2, 4));
    let _ = std::fs::remove_dir_all(dir);
}

// ---- health verdicts ---------------------------------------------------------------------

use super::super::health::{HealthAction, HealthState, Verdict};

fn down(action: HealthAction, reason: &str) -> Verdict {
    Verdict::new(HealthState::Down, action, "http", reason)
}

fn up(reason: &str) -> Verdict {
    Verdict::new(HealthState::Up, HealthAction::Quiesce, "http", reason)
}

/// (service port, server, id, weight) of every destination the workers are given.
fn served(s: &ControlState) -> Vec<(u16, Endpoint, u32, u32)> {
    let set = s.set();
    set.services()
        .iter()
        .flat_map(|svc| {
            set.service_dests(svc)
                .iter()
                .map(|d| (svc.vip.port, d.endpoint, d.id.0, d.weight))
        })
        .collect()
}

/// The same, configured.
fn configured(s: &ControlState) -> Vec<(u16, Endpoint, u32, u32)> {
    let set = s.configured();
    set.services()
        .iter()
        .flat_map(|svc| {
            set.service_dests(svc)
                .iter()
                .map(|d| (svc.vip.port, d.endpoint, d.id.0, d.weight))
        })
        .collect()
}

fn health_of(
    s: &ControlState,
    server: Endpoint,
) -> Option<(HealthState, HealthAction, String, u64, u64)> {
    s.health(Protocol::Tcp, web(), server).map(|h| {
        (
            h.verdict.state,
            h.verdict.action,
            h.verdict.reason.clone(),
            h.since_unix_ms,
            h.changes,
        )
    })
}

#[test]
fn health_quiesce_remove_and_up_change_what_the_workers_serve_not_the_configuration() {
    let mut s = state();
    let p = FakeProbe::default();
    let all_configured = vec![
        (80, ep(2, 80), 0, 1),
        (80, ep(3, 8000), 1, 2),
        (21, ep(3, 21), 2, 1),
    ];
    assert_eq!(served(&s), all_configured);
    p.conns(1, 50);

    // DOWN + QUIESCE: weight 0 for the workers, the configured weight everywhere else.
    let c = s
        .set_health(
            Protocol::Tcp,
            web(),
            ep(3, 8000),
            down(HealthAction::Quiesce, "refused"),
            1_000,
        )
        .expect("valid");
    assert_eq!(
        c.line,
        "TCP 203.0.113.10:80 -> 172.16.0.3:8000 down (quiesced): refused"
    );
    assert!(c.changed && c.state_changed);
    assert_eq!((c.generation, s.generation()), (2, 2));
    let apply = c.apply.expect("applies");
    assert!(Arc::ptr_eq(
        &apply.services.expect("a new snapshot"),
        s.set()
    ));
    assert!(apply.flush.is_empty() && apply.timeouts.is_none());
    assert_eq!(
        served(&s),
        [
            (80, ep(2, 80), 0, 1),
            (80, ep(3, 8000), 1, 0),
            (21, ep(3, 21), 2, 1)
        ]
    );
    assert_eq!(configured(&s), all_configured);
    assert_eq!(s.specs()[0].dests[1].weight, 2);
    assert_eq!(
        health_of(&s, ep(3, 8000)),
        Some((
            HealthState::Down,
            HealthAction::Quiesce,
            "refused".into(),
            1_000,
            1
        ))
    );

    // The same verdict again: nothing changes, nothing is published; the reason is updated.
    let set = Arc::clone(s.set());
    let c = s
        .set_health(
            Protocol::Tcp,
            web(),
            ep(3, 8000),
            down(HealthAction::Quiesce, "timeout"),
            2_000,
        )
        .expect("valid");
    assert_eq!(
        c.line,
        "TCP 203.0.113.10:80 -> 172.16.0.3:8000 still down (quiesced): timeout"
    );
    assert!(!c.changed && !c.state_changed && c.apply.is_none());
    assert_eq!((c.generation, s.generation()), (2, 2));
    assert!(Arc::ptr_eq(&set, s.set()));
    assert_eq!(
        health_of(&s, ep(3, 8000)),
        Some((
            HealthState::Down,
            HealthAction::Quiesce,
            "timeout".into(),
            1_000,
            1
        ))
    );

    // DOWN + REMOVE: out of the workers' set, its connections flushed, still configured.
    let c = s
        .set_health(
            Protocol::Tcp,
            web(),
            ep(3, 8000),
            down(HealthAction::Remove, "refused"),
            3_000,
        )
        .expect("valid");
    assert_eq!(
        c.line,
        "TCP 203.0.113.10:80 -> 172.16.0.3:8000 down (removed, connections flushed): refused"
    );
    assert!(c.changed && !c.state_changed);
    assert_eq!(
        c.apply.expect("applies").flush,
        [FlushTarget::Server {
            proto: Protocol::Tcp,
            vip: web(),
            server: ep(3, 8000)
        }]
    );
    assert_eq!(served(&s), [(80, ep(2, 80), 0, 1), (21, ep(3, 21), 2, 1)]);
    assert!(s.set().dest(DestId(1)).is_none());
    assert_eq!(configured(&s), all_configured);
    assert_eq!(s.generation(), 3);
    assert_eq!(
        health_of(&s, ep(3, 8000)),
        Some((
            HealthState::Down,
            HealthAction::Remove,
            "refused".into(),
            1_000,
            1
        ))
    );
    let c = s
        .set_health(
            Protocol::Tcp,
            web(),
            ep(3, 8000),
            down(HealthAction::Remove, "refused"),
            3_500,
        )
        .expect("valid");
    assert_eq!(
        c.line,
        "TCP 203.0.113.10:80 -> 172.16.0.3:8000 still down (removed): refused"
    );
    assert!(!c.changed && c.apply.is_none() && s.generation() == 3);

    // A server added meanwhile does not get the removed one's id.
    s.add_server(Protocol::Tcp, web(), nat(9, 80, 1), &p, Instant::now())
        .expect("valid");
    assert_eq!(
        served(&s),
        [
            (80, ep(2, 80), 0, 1),
            (80, ep(9, 80), 3, 1),
            (21, ep(3, 21), 2, 1)
        ]
    );

    // UP: back with its id, its configured weight and its counters.
    let c = s
        .set_health(Protocol::Tcp, web(), ep(3, 8000), up("200 OK"), 4_000)
        .expect("valid");
    assert_eq!(c.line, "TCP 203.0.113.10:80 -> 172.16.0.3:8000 up: 200 OK");
    assert!(c.changed && c.state_changed);
    assert!(c.apply.expect("applies").flush.is_empty());
    assert_eq!(
        served(&s),
        [
            (80, ep(2, 80), 0, 1),
            (80, ep(3, 8000), 1, 2),
            (80, ep(9, 80), 3, 1),
            (21, ep(3, 21), 2, 1)
        ]
    );
    assert_eq!(s.stats(DestId(1), &p).conns, 50, "its counters are kept");
    assert_eq!(
        health_of(&s, ep(3, 8000)),
        Some((
            HealthState::Up,
            HealthAction::Quiesce,
            "200 OK".into(),
            4_000,
            2
        ))
    );
    assert_eq!(s.generation(), 5);

    // A first verdict of UP changes the record, not what the workers serve.
    let set = Arc::clone(s.set());
    let c = s
        .set_health(Protocol::Tcp, web(), ep(2, 80), up(""), 5_000)
        .expect("valid");
    assert_eq!(c.line, "TCP 203.0.113.10:80 -> 172.16.0.2:80 up");
    assert!(c.changed && c.state_changed && c.apply.is_none());
    assert!(Arc::ptr_eq(&set, s.set()));
    assert_eq!(s.generation(), 5);
    // DOWN on a weight-0 server: nothing to publish either.
    s.edit_server(
        Protocol::Tcp,
        web(),
        ep(9, 80),
        None,
        Some(0),
        &p,
        Instant::now(),
    )
    .expect("valid");
    let c = s
        .set_health(
            Protocol::Tcp,
            web(),
            ep(9, 80),
            down(HealthAction::Quiesce, ""),
            6_000,
        )
        .expect("valid");
    assert!(c.changed && c.apply.is_none());
    assert_eq!(s.generation(), 6);
}

#[test]
fn health_refusals_change_nothing() {
    let mut s = state();
    let before = (s.generation(), served(&s));
    let e = s
        .set_health(
            Protocol::Tcp,
            Endpoint::new(VIP, 8080),
            ep(2, 80),
            down(HealthAction::Remove, ""),
            1,
        )
        .unwrap_err();
    assert_eq!(
        e,
        ControlError::NotFound("no service TCP 203.0.113.10:8080 (add it first)".into())
    );
    let e = s
        .set_health(
            Protocol::Udp,
            web(),
            ep(2, 80),
            down(HealthAction::Remove, ""),
            1,
        )
        .unwrap_err();
    assert!(matches!(e, ControlError::NotFound(_)), "{e}");
    let e = s
        .set_health(
            Protocol::Tcp,
            web(),
            ep(9, 80),
            down(HealthAction::Remove, ""),
            1,
        )
        .unwrap_err();
    assert_eq!(
        e,
        ControlError::NotFound("no server 172.16.0.9:80 in service TCP 203.0.113.10:80".into())
    );
    assert_eq!((s.generation(), served(&s)), before);
    assert!(health_of(&s, ep(9, 80)).is_none() && health_of(&s, ep(2, 80)).is_none());
}

#[test]
fn verdicts_survive_changes_while_their_server_exists() {
    let mut s = state();
    let p = FakeProbe::default();
    let now = Instant::now();
    s.set_health(
        Protocol::Tcp,
        web(),
        ep(3, 8000),
        down(HealthAction::Quiesce, "x"),
        1,
    )
    .expect("valid");
    s.set_health(
        Protocol::Tcp,
        web(),
        ep(2, 80),
        down(HealthAction::Remove, "y"),
        1,
    )
    .expect("valid");
    assert_eq!(served(&s), [(80, ep(3, 8000), 1, 0), (21, ep(3, 21), 2, 1)]);
    // A weight change of a DOWN server: configured for later, still weight 0 for the workers.
    let c = s
        .edit_server(Protocol::Tcp, web(), ep(3, 8000), None, Some(5), &p, now)
        .expect("valid");
    assert_eq!(
        c.lines,
        ["server 172.16.0.3:8000 of TCP 203.0.113.10:80: weight 2 -> 5"]
    );
    assert!(Arc::ptr_eq(
        &c.apply.and_then(|a| a.services).expect("a snapshot"),
        s.set()
    ));
    assert_eq!(served(&s), [(80, ep(3, 8000), 1, 0), (21, ep(3, 21), 2, 1)]);
    assert_eq!(configured(&s)[1], (80, ep(3, 8000), 1, 5));
    // A replacement (restore) that keeps the servers keeps their verdicts, and the ids.
    let mut specs = s.specs().to_vec();
    specs[1].scheduler = SchedulerKind::Wlc;
    s.replace(specs, false, &p, now).expect("valid");
    assert_eq!(served(&s), [(80, ep(3, 8000), 1, 0), (21, ep(3, 21), 2, 1)]);
    // A dry run that deletes the server drops nothing.
    s.replace(vec![], true, &p, now).expect("dry run");
    assert!(health_of(&s, ep(2, 80)).is_some());
    // Deleting a server drops its verdict: added again, it is served as configured.
    s.delete_server(Protocol::Tcp, web(), ep(2, 80), false, &p, now)
        .expect("valid");
    assert!(health_of(&s, ep(2, 80)).is_none());
    s.add_server(
        Protocol::Tcp,
        web(),
        nat(2, 80, 3),
        &p,
        now + RETIRE_AT_LEAST,
    )
    .expect("valid");
    assert_eq!(
        served(&s),
        [
            (80, ep(3, 8000), 1, 0),
            (80, ep(2, 80), 0, 3),
            (21, ep(3, 21), 2, 1)
        ]
    );
    // So does deleting its service.
    s.delete_service(Protocol::Tcp, web(), false, &p, now)
        .expect("valid");
    assert!(health_of(&s, ep(3, 8000)).is_none());
    s.add_service(spec(80, SchedulerKind::Rr, vec![nat(3, 8000, 2)]), &p, now)
        .expect("valid");
    assert_eq!(served(&s)[1].3, 2, "served with its configured weight");
}
