//! The control plane's hooks into a running worker: a new service snapshot swapped in between
//! packets (scheduler state kept when its service is unchanged, connections keep their
//! server), per-destination traffic counters, live timeouts, the filtered listing and flushes.

mod fwd_common;
mod worker_common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tandem_core::balance::{Balancer, ConnFilter, DestTraffic, FlushTarget};
use tandem_core::conn::{ConnFlags, ConnState, Timeouts};
use tandem_core::director::{Verdict, Worker};
use tandem_core::lb::{DestId, Endpoint, Protocol};
use tandem_core::sched::{Persistence, SchedulerKind};
use tandem_core::service::{ServiceSet, ServiceSpec};
use worker_common::*;

/// Sends one frame and checks that it was forwarded.
fn forwarded(w: &mut Worker, port: usize, frame: &[u8], now: u64) {
    let (v, _) = send(w, port, frame, now);
    assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
}

/// Opens `n` connections to VIP:`port` from client ports starting at `first`; returns the
/// real servers chosen.
fn open(w: &mut Worker, port: u16, first: u16, n: u16) -> Vec<Ipv4Addr> {
    (first..first + n)
        .map(|p| {
            let (v, rs) = send(w, OUTSIDE, &tcp((CLIENT, p), (VIP, port), SYN, b""), 1_000);
            assert_eq!(v, Verdict::Forward { port: INSIDE });
            rs
        })
        .collect()
}

fn balancer(w: &mut Worker) -> &mut Balancer {
    w.balancer_mut().expect("balancer")
}

fn rebuild(prev: &ServiceSet, specs: &[ServiceSpec]) -> Arc<ServiceSet> {
    Arc::new(
        ServiceSet::with_previous(specs, MAX_DESTS, prev, |_| false, |_| false).expect("valid"),
    )
}

#[test]
fn an_unchanged_service_keeps_its_scheduler_and_a_changed_one_starts_afresh() {
    let web = service(
        80,
        SchedulerKind::Wrr,
        vec![dest(0, 1), dest(1, 2), dest(2, 3)],
    );
    let v1 = Arc::new(ServiceSet::new(std::slice::from_ref(&web), MAX_DESTS).expect("valid"));
    let whole = open(&mut worker(Arc::clone(&v1)), 80, 1000, 12);

    // Same sequence across a swap that only adds another service.
    let mut w = worker(Arc::clone(&v1));
    let mut seq = open(&mut w, 80, 1000, 5);
    let other = service(81, SchedulerKind::Rr, vec![dest(0, 1)]);
    let v2 = rebuild(&v1, &[other.clone(), web.clone()]);
    balancer(&mut w)
        .set_services(Arc::clone(&v2))
        .expect("swap");
    seq.extend(open(&mut w, 80, 2000, 7));
    assert_eq!(seq, whole, "the wrr position survived the swap");

    // A weight change: a new scheduler, whose sequence starts from the beginning.
    let mut changed = web.clone();
    changed.dests[2].weight = 1;
    let fresh_seq = {
        let v = Arc::new(ServiceSet::new(&[changed.clone()], MAX_DESTS).expect("valid"));
        open(&mut worker(v), 80, 1000, 6)
    };
    let v3 = rebuild(&v2, &[other, changed]);
    balancer(&mut w).set_services(v3).expect("swap");
    assert_eq!(open(&mut w, 80, 3000, 6), fresh_seq);
}

#[test]
fn connections_keep_their_server_after_it_is_deleted_until_flushed() {
    let web = service(80, SchedulerKind::Rr, vec![dest(0, 1), dest(1, 1)]);
    let v1 = Arc::new(ServiceSet::new(std::slice::from_ref(&web), MAX_DESTS).expect("valid"));
    let mut w = worker(Arc::clone(&v1));
    assert_eq!(open(&mut w, 80, 1000, 2), [RS[0], RS[1]]);
    let only_second = service(80, SchedulerKind::Rr, vec![dest(1, 1)]);
    balancer(&mut w)
        .set_services(rebuild(&v1, &[only_second]))
        .expect("swap");
    // The connection to the deleted server drains: its packets still go there.
    let (v, rs) = send(
        &mut w,
        OUTSIDE,
        &tcp((CLIENT, 1000), (VIP, 80), ACK, b"x"),
        2_000,
    );
    assert_eq!((v, rs), (Verdict::Forward { port: INSIDE }, RS[0]));
    // New connections go to the remaining one.
    assert_eq!(open(&mut w, 80, 1100, 2), [RS[1], RS[1]]);
    let n = balancer(&mut w).flush(
        &FlushTarget::Server {
            proto: Protocol::Tcp,
            vip: Endpoint::new(VIP, 80),
            server: Endpoint::new(RS[0], 80),
        },
        3_000,
    );
    assert_eq!(n, 1);
    let (v, _) = send(
        &mut w,
        OUTSIDE,
        &tcp((CLIENT, 1000), (VIP, 80), ACK, b"x"),
        4_000,
    );
    assert!(matches!(v, Verdict::Drop(_)), "flushed: {v:?}");
    let flushed = balancer(&mut w)
        .events_mut()
        .iter()
        .filter(|e| matches!(e.kind, tandem_core::conn::ConnEventKind::Deleted(_)))
        .count();
    assert_eq!(flushed, 1, "a delete event for the sync daemon");
    let n = balancer(&mut w).flush(
        &FlushTarget::Service {
            proto: Protocol::Tcp,
            vip: Endpoint::new(VIP, 80),
        },
        5_000,
    );
    assert_eq!(n, 3);
    assert!(balancer(&mut w).conns().is_empty());
}

#[test]
fn traffic_is_counted_per_destination_in_and_out() {
    let web = service(80, SchedulerKind::Rr, vec![dest(0, 1), dest(1, 1)]);
    let v1 = Arc::new(ServiceSet::new(&[web], MAX_DESTS).expect("valid"));
    let mut w = worker(v1);
    let syn = tcp((CLIENT, 1000), (VIP, 80), SYN, b"");
    let data = tcp((CLIENT, 1000), (VIP, 80), ACK, b"hello");
    let reply = tcp((RS[0], 80), (CLIENT, 1000), SYN_ACK, b"");
    forwarded(&mut w, OUTSIDE, &syn, 1_000);
    let (v, _) = send(&mut w, INSIDE, &reply, 1_100);
    assert_eq!(v, Verdict::Forward { port: OUTSIDE });
    forwarded(&mut w, OUTSIDE, &data, 1_200);
    let t = balancer(&mut w).dest_traffic();
    assert_eq!(
        t[0],
        DestTraffic {
            conns: 1,
            packets_in: 2,
            packets_out: 1,
            bytes_in: (syn.len() - 14 + data.len() - 14) as u64,
            bytes_out: (reply.len() - 14) as u64,
        }
    );
    assert_eq!(t[1], DestTraffic::default());
    assert_eq!(t.len(), MAX_DESTS, "sized for every possible id");
}

#[test]
fn timeouts_apply_to_the_next_transition() {
    let web = service(80, SchedulerKind::Rr, vec![dest(0, 1)]);
    let v1 = Arc::new(ServiceSet::new(&[web], MAX_DESTS).expect("valid"));
    let mut w = worker(v1);
    forwarded(
        &mut w,
        OUTSIDE,
        &tcp((CLIENT, 1000), (VIP, 80), SYN, b""),
        1_000,
    );
    let mut t = Timeouts::default();
    t.set_ipvsadm(Duration::from_secs(7), Duration::ZERO, Duration::ZERO);
    balancer(&mut w).set_timeouts(t).expect("valid");
    assert_eq!(
        balancer(&mut w).conns().timeouts().established,
        Duration::from_secs(7)
    );
    forwarded(
        &mut w,
        INSIDE,
        &tcp((RS[0], 80), (CLIENT, 1000), SYN_ACK, b""),
        1_100,
    );
    forwarded(
        &mut w,
        OUTSIDE,
        &tcp((CLIENT, 1000), (VIP, 80), ACK, b""),
        1_200,
    );
    let mut out = Vec::new();
    balancer(&mut w).list_conns(&ConnFilter::default(), 10, 1_200, &mut out);
    assert_eq!(out[0].state, ConnState::Established);
    assert_eq!(out[0].timeout_ms, 7_000);
    let bad = Timeouts {
        udp: Duration::from_secs(u64::from(u32::MAX)),
        ..Timeouts::default()
    };
    assert!(balancer(&mut w).set_timeouts(bad).is_err());
    assert_eq!(
        balancer(&mut w).conns().timeouts().established,
        Duration::from_secs(7)
    );
}

#[test]
fn listing_shows_persistence_templates_as_ipvsadm_does() {
    let web = ServiceSpec {
        persistence: Some(Persistence::new(300 * 1_000_000_000)),
        ..service(80, SchedulerKind::Rr, vec![dest(0, 1), dest(1, 1)])
    };
    let mut w = worker(Arc::new(ServiceSet::new(&[web], MAX_DESTS).expect("valid")));
    // Three connections from one client: one template, all three on its server.
    let servers = open(&mut w, 80, 1000, 3);
    assert!(servers.iter().all(|s| *s == servers[0]), "{servers:?}");
    let b = balancer(&mut w);
    let list = |f: ConnFilter| {
        let mut out = Vec::new();
        let n = b.list_conns(&f, 100, 2_000, &mut out);
        (n, out)
    };
    let (n, all) = list(ConnFilter::default());
    assert_eq!((n, all.len()), (4, 4));
    let templates: Vec<_> = all
        .iter()
        .filter(|r| r.flags.contains(ConnFlags::TEMPLATE))
        .collect();
    assert_eq!(templates.len(), 1, "{all:?}");
    let t = templates[0];
    assert_eq!(
        (t.proto, t.client, t.vip, t.real, t.state, t.timeout_ms),
        (
            Protocol::Tcp,
            Endpoint::new(CLIENT, 0),
            Endpoint::new(VIP, 80),
            Endpoint::new(servers[0], 80),
            ConnState::None,
            300_000
        )
    );
    // Filters apply to templates too.
    let none = ConnFilter {
        state: Some(ConnState::None),
        ..ConnFilter::default()
    };
    assert_eq!(list(none).0, 1);
    let syn_recv = ConnFilter {
        state: Some(ConnState::SynRecv),
        ..ConnFilter::default()
    };
    assert_eq!(list(syn_recv).0, 3);
    let other_client = ConnFilter {
        client: Some(CLIENT2),
        ..ConnFilter::default()
    };
    assert_eq!(list(other_client).0, 0);
}

#[test]
fn listing_filters_and_is_bounded() {
    let web = service(80, SchedulerKind::Rr, vec![dest(0, 1), dest(1, 1)]);
    let ftp = service(21, SchedulerKind::Rr, vec![dest(2, 1)]);
    let mut w = worker(Arc::new(
        ServiceSet::new(&[web, ftp], MAX_DESTS).expect("valid"),
    ));
    open(&mut w, 80, 1000, 4);
    open(&mut w, 21, 1000, 1);
    forwarded(
        &mut w,
        OUTSIDE,
        &tcp((CLIENT2, 5), (VIP, 80), SYN, b""),
        1_000,
    );
    let b = balancer(&mut w);
    let list = |f: ConnFilter, limit: usize| {
        let mut out = Vec::new();
        let n = b.list_conns(&f, limit, 2_000, &mut out);
        (n, out)
    };
    assert_eq!(list(ConnFilter::default(), 100).0, 6);
    let (n, out) = list(ConnFilter::default(), 2);
    assert_eq!((n, out.len()), (6, 2), "bounded, with the total");
    let by_service = ConnFilter {
        service: Some((Protocol::Tcp, Endpoint::new(VIP, 21))),
        ..ConnFilter::default()
    };
    let (n, out) = list(by_service, 100);
    assert_eq!((n, out[0].real), (1, Endpoint::new(RS[2], 80)));
    let by_client = ConnFilter {
        client: Some(CLIENT2),
        ..ConnFilter::default()
    };
    assert_eq!(list(by_client, 100).0, 1);
    let by_server = ConnFilter {
        server: Some(RS[0]),
        state: Some(ConnState::SynRecv),
        ..ConnFilter::default()
    };
    assert_eq!(
        list(by_server, 100).0,
        3,
        "rr over .2 .3: 1000, 1002 and CLIENT2's"
    );
    let none = ConnFilter {
        proto: Some(Protocol::Udp),
        ..ConnFilter::default()
    };
    assert_eq!(list(none, 100).0, 0);
    assert_eq!(b.dest_traffic()[DestId(2).0 as usize].conns, 1);
}
