//! What a worker streams to the sync daemon besides its connections, and installs from the
//! peer: persistence templates (created, refreshed at most once per timeout period, expired;
//! installed ones honoured by the scheduler) and lblc/lblcr locality entries (set, removed;
//! installed ones honoured), all numbered in the lcore's one event sequence.

mod fwd_common;
mod worker_common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use tandem_core::balance::{Balancer, LocalityChange, LocalityEvent};
use tandem_core::conn::{ConnEvent, ConnEventKind, ConnFlags, ConnRecord, ConnState, DeleteReason};
use tandem_core::director::{Verdict, Worker};
use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};
use tandem_core::sched::{
    DestSet, LblcEntry, LblcrEntry, LocalityEntry, Persistence, SchedulerKind, SchedulerOptions,
};
use tandem_core::service::{ServiceSet, ServiceSpec};
use worker_common::*;

const SECOND: u64 = 1_000_000_000;

fn balancer(w: &mut Worker) -> &mut Balancer {
    w.balancer_mut().expect("balancer")
}

fn persistent(netmask: Ipv4Addr) -> ServiceSpec {
    ServiceSpec {
        persistence: Some(Persistence {
            timeout: 10 * SECOND,
            netmask,
        }),
        ..service(
            80,
            SchedulerKind::Rr,
            vec![dest(0, 1), dest(1, 1), dest(2, 1)],
        )
    }
}

fn worker_with(specs: &[ServiceSpec]) -> Worker {
    worker(Arc::new(ServiceSet::new(specs, MAX_DESTS).expect("valid")))
}

/// A SYN from `client`:`port` to VIP:80 at `now`; the real server it went to.
fn syn(w: &mut Worker, client: Ipv4Addr, port: u16, now: u64) -> Ipv4Addr {
    let (v, rs) = send(w, OUTSIDE, &tcp((client, port), (VIP, 80), SYN, b""), now);
    assert_eq!(v, Verdict::Forward { port: INSIDE });
    rs
}

/// The service of VIP:80 and its destination ids.
fn ids(w: &mut Worker) -> (ServiceId, Vec<DestId>) {
    let set = balancer(w).services();
    let svc = set
        .lookup(Protocol::Tcp, Endpoint::new(VIP, 80))
        .expect("service");
    (
        svc.id,
        set.service_dests(svc).iter().map(|d| d.id).collect(),
    )
}

/// Everything the worker queued for the sync daemon: connection events and locality events.
fn drain(w: &mut Worker) -> (Vec<ConnEvent>, Vec<LocalityEvent>) {
    let b = balancer(w);
    let conns = std::iter::from_fn(|| b.events_mut().pop()).collect();
    let locality = std::iter::from_fn(|| b.locality_events_mut().pop()).collect();
    (conns, locality)
}

fn template(svc: ServiceId, dest: DestId, rs: usize, remaining_ms: u32) -> ConnRecord {
    ConnRecord {
        proto: Protocol::Tcp,
        client: Endpoint::new(CLIENT, 0),
        vip: Endpoint::new(VIP, 80),
        real: Endpoint::new(RS[rs], 80),
        method: ForwardMethod::Nat,
        dest,
        service: svc,
        state: ConnState::None,
        flags: ConnFlags::TEMPLATE,
        timeout_ms: 10_000,
        remaining_ms,
    }
}

#[test]
fn templates_are_announced_created_refreshed_once_per_period_and_expired() {
    let mut w = worker_with(&[persistent(Ipv4Addr::BROADCAST)]);
    let (svc, d) = ids(&mut w);
    assert_eq!(syn(&mut w, CLIENT, 1000, SECOND), RS[0]);
    let (evs, loc) = drain(&mut w);
    assert!(loc.is_empty());
    // The template first (the decision made it), then the connection, one sequence.
    assert_eq!(evs.len(), 2);
    assert_eq!(
        evs[0],
        ConnEvent {
            kind: ConnEventKind::Created,
            seq: 1,
            record: template(svc, d[0], 0, 10_000),
        }
    );
    assert_eq!(evs[1].seq, 2);
    assert!(!evs[1].record.flags.contains(ConnFlags::TEMPLATE));

    // Used again at 5 s (now good until 15 s): only the connection is announced.
    assert_eq!(syn(&mut w, CLIENT, 1001, 5 * SECOND), RS[0]);
    let (evs, _) = drain(&mut w);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].seq, 3);
    assert!(!evs[0].record.flags.contains(ConnFlags::TEMPLATE));
    // Many more uses: still no template event per use.
    for p in 1002..1010 {
        assert_eq!(syn(&mut w, CLIENT, p, 5 * SECOND), RS[0]);
    }
    let (evs, _) = drain(&mut w);
    assert!(
        evs.iter()
            .all(|e| !e.record.flags.contains(ConnFlags::TEMPLATE))
    );

    // The peer's copy runs out at 11 s: nothing to say at 9.9 s, a refresh (5 s left of
    // the 15 s) at 10 s, then nothing again.
    let b = balancer(&mut w);
    b.housekeeping(9_900_000_000, 4096);
    assert!(drain(&mut w).0.is_empty());
    let b = balancer(&mut w);
    b.housekeeping(10 * SECOND, 4096);
    let (evs, _) = drain(&mut w);
    assert_eq!(
        evs,
        vec![ConnEvent {
            kind: ConnEventKind::Refreshed,
            seq: 12,
            record: template(svc, d[0], 0, 5_000),
        }]
    );
    balancer(&mut w).housekeeping(12 * SECOND, 4096);
    assert!(drain(&mut w).0.is_empty());

    // Expired at 15 s: a deletion with nothing left.
    balancer(&mut w).housekeeping(15 * SECOND, 4096);
    let (evs, _) = drain(&mut w);
    assert_eq!(
        evs,
        vec![ConnEvent {
            kind: ConnEventKind::Deleted(DeleteReason::Expired),
            seq: 13,
            record: template(svc, d[0], 0, 0),
        }]
    );
    assert_eq!(balancer(&mut w).conns().next_seq(), 14);
}

#[test]
fn template_snapshot_walks_every_live_template() {
    let mut w = worker_with(&[persistent(Ipv4Addr::BROADCAST)]);
    let (svc, d) = ids(&mut w);
    syn(&mut w, CLIENT, 1000, SECOND);
    syn(&mut w, CLIENT2, 1000, 2 * SECOND);
    let b = balancer(&mut w);
    let mut got = Vec::new();
    let mut from = Some(0);
    while let Some(f) = from {
        from = b.template_snapshot(f, 7, 3 * SECOND, |r| got.push(r));
    }
    got.sort_by_key(|r| r.client);
    let second = ConnRecord {
        client: Endpoint::new(CLIENT2, 0),
        real: Endpoint::new(RS[1], 80),
        dest: d[1],
        remaining_ms: 9_000,
        ..template(svc, d[1], 1, 0)
    };
    assert_eq!(got, vec![template(svc, d[0], 0, 8_000), second]);
}

#[test]
fn an_installed_template_sends_its_client_to_its_server() {
    let mut w = worker_with(&[persistent(Ipv4Addr::BROADCAST)]);
    let (svc, d) = ids(&mut w);
    // rr would give RS[0] first; the peer's template says RS[2].
    balancer(&mut w)
        .install_template(&template(svc, d[2], 2, 4_000), SECOND)
        .expect("installed");
    // Installing announces nothing.
    assert_eq!(drain(&mut w).0, vec![]);
    assert_eq!(syn(&mut w, CLIENT, 2000, 2 * SECOND), RS[2]);
    assert_eq!(syn(&mut w, CLIENT, 2001, 2 * SECOND), RS[2]);
    // Another client is scheduled as usual.
    assert_eq!(syn(&mut w, CLIENT2, 2000, 2 * SECOND), RS[0]);
    // It lives the record's 4 s + the 5 s grace, and no holder keeps it: the connections
    // above refreshed it to 2 s + 10 s.
    let key = tandem_core::sched::PersistKey::new(svc, CLIENT, Ipv4Addr::BROADCAST);
    let t = balancer(&mut w).templates();
    assert_eq!(t.peek(key, 12 * SECOND - 1), Some(d[2]));
    assert_eq!(t.peek(key, 12 * SECOND), None);
    assert_eq!(t.entry(key, 2 * SECOND).map(|e| e.refs), Some(0));
    // The peer's deletion removes it.
    assert!(balancer(&mut w).uninstall_template(&template(svc, d[2], 2, 0)));
    assert_eq!(balancer(&mut w).templates().peek(key, 3 * SECOND), None);
}

#[test]
fn an_installed_template_covers_its_netmask_and_is_refused_without_persistence() {
    let mut w = worker_with(&[persistent(Ipv4Addr::new(255, 255, 255, 0))]);
    let (svc, d) = ids(&mut w);
    let rec = ConnRecord {
        client: Endpoint::new(Ipv4Addr::new(203, 0, 113, 0), 0),
        ..template(svc, d[1], 1, 10_000)
    };
    balancer(&mut w)
        .install_template(&rec, SECOND)
        .expect("installed");
    assert_eq!(syn(&mut w, CLIENT, 2000, 2 * SECOND), RS[1]);
    assert_eq!(syn(&mut w, CLIENT2, 2000, 2 * SECOND), RS[1]);

    let mut plain = worker_with(&[service(
        80,
        SchedulerKind::Rr,
        vec![dest(0, 1), dest(1, 1), dest(2, 1)],
    )]);
    let (svc, d) = ids(&mut plain);
    assert_eq!(
        balancer(&mut plain).install_template(&template(svc, d[2], 2, 1_000), SECOND),
        Err(tandem_core::balance::PeerInstallError::NotPersistent)
    );
    assert_eq!(syn(&mut plain, CLIENT, 2000, 2 * SECOND), RS[0]);
}

fn locality_service(kind: SchedulerKind) -> ServiceSpec {
    let mut options = SchedulerOptions::default();
    options.locality.expiration = SECOND;
    ServiceSpec {
        options,
        ..service(80, kind, vec![dest(0, 1), dest(1, 1), dest(2, 1)])
    }
}

#[test]
fn lblc_changes_are_announced_in_the_lcore_sequence() {
    let mut w = worker_with(&[locality_service(SchedulerKind::Lblc)]);
    let (svc, d) = ids(&mut w);
    // lblc keys on the destination address: the VIP.
    assert_eq!(syn(&mut w, CLIENT, 1000, SECOND), RS[0]);
    let (evs, loc) = drain(&mut w);
    assert_eq!(
        loc,
        vec![LocalityEvent {
            seq: 1,
            service: svc,
            change: LocalityChange::Set(LocalityEntry::Lblc(LblcEntry {
                addr: VIP,
                dest: d[0],
                idle: 0,
            })),
        }]
    );
    assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2]);
    // Used again within half the expiration (1 s here): nothing changed, nothing announced
    // (the lblc unit tests show the announcement again after half an expiration).
    assert_eq!(syn(&mut w, CLIENT, 1001, SECOND + SECOND / 4), RS[0]);
    let (evs, loc) = drain(&mut w);
    assert!(loc.is_empty());
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].seq, 3);
    // Aged out by the full check (30 min; expiration 1 s here): a removal.
    let full = tandem_core::sched::FULL_CHECK_INTERVAL;
    balancer(&mut w).housekeeping(full + 3 * SECOND, 4096);
    // The two connections expired first (4, 5), then the entry (6): one sequence.
    let (evs, loc) = drain(&mut w);
    assert_eq!(evs.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(
        loc,
        vec![LocalityEvent {
            seq: 6,
            service: svc,
            change: LocalityChange::Removed(VIP),
        }]
    );
}

#[test]
fn installed_locality_entries_are_honoured_walked_and_removed() {
    let mut w = worker_with(&[locality_service(SchedulerKind::Lblc)]);
    let (svc, d) = ids(&mut w);
    let entry = LocalityEntry::Lblc(LblcEntry {
        addr: VIP,
        dest: d[2],
        idle: 0,
    });
    balancer(&mut w)
        .install_locality(svc, entry, SECOND)
        .expect("installed");
    assert!(drain(&mut w).1.is_empty(), "installing announces nothing");
    let mut walked = Vec::new();
    balancer(&mut w).locality_snapshot(SECOND, |s, e| walked.push((s, e)));
    assert_eq!(walked, vec![(svc, entry)]);
    // wlc would pick RS[0]; the entry says RS[2].
    assert_eq!(syn(&mut w, CLIENT, 1000, 2 * SECOND), RS[2]);
    assert_eq!(syn(&mut w, CLIENT2, 1000, 2 * SECOND), RS[2]);
    assert!(balancer(&mut w).remove_locality(svc, VIP));
    assert!(!balancer(&mut w).remove_locality(svc, VIP));

    // lblcr: the set's least loaded member.
    let mut r = worker_with(&[locality_service(SchedulerKind::Lblcr)]);
    let (svc, d) = ids(&mut r);
    let set = DestSet::from_slice(&[d[1], d[2]]).expect("set");
    let entry = LocalityEntry::Lblcr(LblcrEntry {
        addr: VIP,
        dests: set,
        idle: 0,
        unmodified: 0,
    });
    balancer(&mut r)
        .install_locality(svc, entry, SECOND)
        .expect("installed");
    assert_eq!(syn(&mut r, CLIENT, 1000, 2 * SECOND), RS[1]);
    // A lblc entry does not fit a lblcr scheduler: refused.
    assert!(
        balancer(&mut r)
            .install_locality(
                svc,
                LocalityEntry::Lblc(LblcEntry {
                    addr: VIP,
                    dest: d[0],
                    idle: 0
                }),
                SECOND
            )
            .is_err()
    );
}
