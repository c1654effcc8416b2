//! Tests of the scheduler front door: names, flags, options, quiescing for every scheduler,
//! and persistence through [`choose`].

use super::*;
use crate::lb::{Endpoint, Protocol};

const SECOND: u64 = 1_000_000_000;

fn dest(i: u32, weight: u32) -> DestState {
    DestState::new(DestId(i), Ipv4Addr::from(0xC0A8_0100 + i), 80, weight)
}

fn flow(src: u32, sport: u16, dst: u32) -> Flow {
    Flow {
        proto: Protocol::Tcp,
        src: Endpoint::new(Ipv4Addr::from(src), sport),
        dst: Endpoint::new(Ipv4Addr::from(dst), 80),
    }
}

fn options_for(kind: SchedulerKind) -> SchedulerOptions {
    SchedulerOptions {
        mh_table_size: 251,
        locality: LocalityOptions {
            buckets: 16,
            capacity: 64,
            ..LocalityOptions::default()
        },
        ..SchedulerOptions::default()
    }
    .with_kind_flags(kind)
}

trait KindFlags {
    fn with_kind_flags(self, kind: SchedulerKind) -> Self;
}

impl KindFlags for SchedulerOptions {
    /// Fallback on for sh and mh, so quiescing tests see them route around.
    fn with_kind_flags(mut self, kind: SchedulerKind) -> Self {
        self.fallback = matches!(kind, SchedulerKind::Sh | SchedulerKind::Mh);
        self
    }
}

#[test]
fn names_round_trip_and_unknown_names_list_the_valid_ones() {
    for kind in SchedulerKind::ALL {
        assert_eq!(kind.name().parse::<SchedulerKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.name());
    }
    assert_eq!(SchedulerKind::ALL.len(), 11);
    let err = "wls".parse::<SchedulerKind>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown scheduler `wls`; valid schedulers: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh"
    );
    assert!("WRR".parse::<SchedulerKind>().is_err());
}

#[test]
fn flags_parse_like_ipvsadm_b() {
    let o = SchedulerOptions::with_flags(SchedulerKind::Sh, "sh-fallback,sh-port").unwrap();
    assert!(o.fallback && o.port);
    assert_eq!(
        o.flags(SchedulerKind::Sh),
        vec![SchedFlag::ShFallback, SchedFlag::ShPort]
    );
    let o = SchedulerOptions::with_flags(SchedulerKind::Mh, "mh-port").unwrap();
    assert!(!o.fallback && o.port);
    assert_eq!(o.flags(SchedulerKind::Mh), vec![SchedFlag::MhPort]);
    assert_eq!(
        SchedulerOptions::with_flags(SchedulerKind::Rr, "").unwrap(),
        SchedulerOptions::default()
    );
    assert_eq!(
        SchedulerOptions::with_flags(SchedulerKind::Mh, "sh-port")
            .unwrap_err()
            .to_string(),
        "scheduler flag `sh-port` is for the sh scheduler, not mh"
    );
    assert_eq!(
        SchedulerOptions::with_flags(SchedulerKind::Sh, "sh-fast")
            .unwrap_err()
            .to_string(),
        "unknown scheduler flag `sh-fast`; valid flags: sh-fallback, sh-port, mh-fallback, mh-port"
    );
    for f in SchedFlag::ALL {
        assert_eq!(f.name().parse::<SchedFlag>(), Ok(f));
    }
}

#[test]
fn options_and_destination_lists_are_validated() {
    let bad = SchedulerOptions {
        fallback: true,
        ..SchedulerOptions::default()
    };
    assert_eq!(
        Scheduler::new(SchedulerKind::Wlc, bad, &[])
            .unwrap_err()
            .to_string(),
        "the fallback option applies only to the sh and mh schedulers, not wlc"
    );
    let bad = SchedulerOptions {
        mh_table_size: 65_536,
        ..SchedulerOptions::default()
    };
    assert_eq!(
        Scheduler::new(SchedulerKind::Mh, bad, &[]).unwrap_err(),
        SchedulerError::MhTableSize(65_536)
    );
    // Only mh cares about its table size.
    assert!(Scheduler::new(SchedulerKind::Rr, bad, &[]).is_ok());
    let dup = [dest(1, 1), dest(1, 2)];
    assert_eq!(
        Scheduler::new(SchedulerKind::Rr, SchedulerOptions::default(), &dup)
            .unwrap_err()
            .to_string(),
        "destination 1 is listed twice"
    );
    // A failed update changes nothing.
    let small = SchedulerOptions {
        mh_table_size: 2,
        ..SchedulerOptions::default()
    };
    let two = [dest(0, 1), dest(1, 1)];
    let mut mh = Scheduler::new(SchedulerKind::Mh, small, &two).unwrap();
    let three = [dest(0, 1), dest(1, 1), dest(2, 1)];
    assert!(matches!(
        mh.update(&three),
        Err(SchedulerError::TooManyDests { dests: 3, table: 2 })
    ));
    assert!(mh.pick(&two, &flow(1, 1, 1), 0).is_some());
    let mut wrr = Scheduler::new(SchedulerKind::Wrr, SchedulerOptions::default(), &two).unwrap();
    assert!(wrr.update(&dup).is_err());
}

#[test]
fn thresholds_follow_ip_vs_bind_and_unbind_dest() {
    let t = Thresholds {
        upper: 100,
        lower: 50,
    };
    assert!(!t.overloaded(false, 60, 39));
    assert!(t.overloaded(false, 60, 40)); // total 100 >= upper
    assert!(t.overloaded(true, 30, 20)); // 50 is not below lower
    assert!(!t.overloaded(true, 30, 19));
    let u = Thresholds {
        upper: 100,
        lower: 0,
    };
    assert!(u.overloaded(true, 75, 0)); // 75 * 4 = 300, not below 100 * 3
    assert!(!u.overloaded(true, 74, 0));
    assert!(!Thresholds::default().overloaded(true, 1_000_000, 0));
}

#[test]
fn every_scheduler_never_picks_a_quiesced_server() {
    for kind in SchedulerKind::ALL {
        let mut dests: Vec<_> = (0..6).map(|i| dest(i, 1 + i % 3)).collect();
        let mut sched = Scheduler::new(kind, options_for(kind), &dests).unwrap();
        // Quiesce two servers (a weight change: update, as the control plane would).
        dests[1].weight = 0;
        dests[4].weight = 0;
        sched.update(&dests).unwrap();
        for n in 0..500u32 {
            let f = flow(
                0x0A00_0000 + n * 7919,
                1024 + u16::try_from(n % 1000).unwrap(),
                0xCB00_7100 + n % 13,
            );
            let got = sched.pick(&dests, &f, u64::from(n) * SECOND);
            // dh has no fallback: a destination address hashed to a quiesced server's
            // bucket gets nothing (ip_vs_dh_schedule), which is fine here; a quiesced
            // server never is.
            let Some(got) = got else {
                assert_eq!(
                    kind,
                    SchedulerKind::Dh,
                    "{kind}: no destination for flow {n}"
                );
                continue;
            };
            assert!(
                got != DestId(1) && got != DestId(4),
                "{kind} picked quiesced {got:?}"
            );
        }
        if kind != SchedulerKind::Dh {
            assert_eq!(sched.stats().no_dest, 0, "{kind}");
        }
        assert!(sched.stats().no_dest < 500, "{kind}");
    }
}

#[test]
fn every_scheduler_returns_none_when_nothing_is_available() {
    for kind in SchedulerKind::ALL {
        let quiesced: Vec<_> = (0..3).map(|i| dest(i, 0)).collect();
        let mut sched = Scheduler::new(kind, options_for(kind), &quiesced).unwrap();
        assert_eq!(sched.pick(&quiesced, &flow(1, 2, 3), 0), None, "{kind}");
        let mut overloaded: Vec<_> = (0..3).map(|i| dest(i, 1)).collect();
        for d in &mut overloaded {
            d.overloaded = true;
        }
        let mut sched2 = Scheduler::new(kind, options_for(kind), &overloaded).unwrap();
        let got = sched2.pick(&overloaded, &flow(1, 2, 3), 0);
        if matches!(kind, SchedulerKind::Lblc) {
            // Nothing cached yet, and wlc skips flagged servers.
            assert_eq!(got, None);
        } else {
            assert_eq!(got, None, "{kind}");
        }
        let mut empty = Scheduler::new(kind, options_for(kind), &[]).unwrap();
        assert_eq!(empty.pick(&[], &flow(1, 2, 3), 0), None, "{kind}");
        assert_eq!(empty.stats().no_dest, 1);
        assert_eq!(sched.stats().no_dest, 1);
    }
}

#[test]
fn schedulers_without_tables_have_no_entries() {
    let d = [dest(0, 1)];
    let mut rr = Scheduler::new(SchedulerKind::Rr, SchedulerOptions::default(), &d).unwrap();
    assert!(rr.entries(0).is_empty());
    assert_eq!(rr.housekeeping(u64::MAX), 0);
    let e = LocalityEntry::Lblc(LblcEntry {
        addr: Ipv4Addr::LOCALHOST,
        dest: DestId(0),
        idle: 0,
    });
    assert_eq!(
        rr.install(e, 0).unwrap_err().to_string(),
        "lblc entry cannot be installed in a rr scheduler"
    );
    let mut lblc = Scheduler::new(SchedulerKind::Lblc, SchedulerOptions::default(), &d).unwrap();
    lblc.install(e, 5).unwrap();
    assert_eq!(lblc.entry_count(), 1);
    assert_eq!(lblc.entries(5), vec![e]);
}

#[test]
fn scheduler_level_lblc_uses_the_flow_destination() {
    let mut d = vec![dest(0, 1), dest(1, 1)];
    let mut s = Scheduler::new(SchedulerKind::Lblc, SchedulerOptions::default(), &d).unwrap();
    assert_eq!(s.pick(&d, &flow(1, 1000, 0xCB00_7101), 0), Some(DestId(0)));
    d[0].active = 1;
    // Another client, same destination address: the cached server.
    assert_eq!(s.pick(&d, &flow(2, 2000, 0xCB00_7101), 1), Some(DestId(0)));
    // Another destination address: wlc.
    assert_eq!(s.pick(&d, &flow(1, 1000, 0xCB00_7102), 2), Some(DestId(1)));
    assert_eq!(s.entry_count(), 2);
}

fn persistent_setup() -> (Scheduler, PersistenceTable, Vec<DestState>) {
    let d: Vec<_> = (0..3).map(|i| dest(i, 1)).collect();
    let sched = Scheduler::new(SchedulerKind::Rr, SchedulerOptions::default(), &d).unwrap();
    let templates = PersistenceTable::new(PersistOptions {
        capacity: 4,
        buckets: 4,
        ..PersistOptions::default()
    })
    .unwrap();
    (sched, templates, d)
}

const SVC: ServiceId = ServiceId(7);
const CLIENT_A: u32 = 0xC633_6401; // 198.51.100.1
const CLIENT_B: u32 = 0xC633_6402;

#[test]
fn persistence_sends_every_port_of_a_client_to_one_server() {
    let (mut s, mut t, d) = persistent_setup();
    let p = Some(Persistence::new(300 * SECOND));
    let first = choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_A, 1000, 1), 0).unwrap();
    assert_eq!(
        first,
        Choice {
            dest: DestId(0),
            template: Some(PersistKey::new(
                SVC,
                Ipv4Addr::from(CLIENT_A),
                Ipv4Addr::BROADCAST
            )),
            new_template: true,
        }
    );
    for port in 1001..1010 {
        let c = choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_A, port, 1), SECOND).unwrap();
        assert_eq!(c.dest, DestId(0));
        assert!(!c.new_template);
    }
    // Other clients continue the round robin, which the template did not advance.
    assert_eq!(
        choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_B, 1, 1), SECOND)
            .unwrap()
            .dest,
        DestId(1)
    );
    // Without persistence, rr moves on for the same client.
    assert_eq!(
        choose(&mut s, &mut t, None, SVC, &d, &flow(CLIENT_A, 7, 1), SECOND).unwrap(),
        Choice {
            dest: DestId(2),
            template: None,
            new_template: false,
        }
    );
    // Another service is another template.
    assert_eq!(
        choose(
            &mut s,
            &mut t,
            p,
            ServiceId(8),
            &d,
            &flow(CLIENT_A, 7, 1),
            SECOND
        )
        .unwrap()
        .dest,
        DestId(0)
    );
}

#[test]
fn persistence_netmask_groups_a_subnet() {
    let (mut s, mut t, d) = persistent_setup();
    let p = Some(Persistence {
        timeout: 300 * SECOND,
        netmask: Ipv4Addr::new(255, 255, 255, 0),
    });
    let a = choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_A, 1, 1), 0).unwrap();
    let b = choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_B, 1, 1), 0).unwrap();
    assert_eq!((a.dest, a.template), (b.dest, b.template));
    assert!(a.new_template && !b.new_template);
}

#[test]
fn persistence_expires_then_reschedules() {
    let (mut s, mut t, d) = persistent_setup();
    let p = Some(Persistence::new(10 * SECOND));
    assert_eq!(
        choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_A, 1, 1), 0)
            .unwrap()
            .dest,
        DestId(0)
    );
    // Used at 9 s: refreshed to 19 s.
    assert_eq!(
        choose(
            &mut s,
            &mut t,
            p,
            SVC,
            &d,
            &flow(CLIENT_A, 2, 1),
            9 * SECOND
        )
        .unwrap()
        .dest,
        DestId(0)
    );
    assert_eq!(
        choose(
            &mut s,
            &mut t,
            p,
            SVC,
            &d,
            &flow(CLIENT_A, 3, 1),
            18 * SECOND
        )
        .unwrap()
        .dest,
        DestId(0)
    );
    // Idle past its timeout: a new template, by rr.
    assert_eq!(
        choose(
            &mut s,
            &mut t,
            p,
            SVC,
            &d,
            &flow(CLIENT_A, 4, 1),
            28 * SECOND
        )
        .unwrap()
        .dest,
        DestId(1)
    );
    assert_eq!(t.stats().expired, 1);
}

#[test]
fn persistent_clients_stay_on_a_quiesced_server_by_default() {
    let (mut s, mut t, mut d) = persistent_setup();
    let p = Some(Persistence::new(300 * SECOND));
    assert_eq!(
        choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_A, 1, 1), 0)
            .unwrap()
            .dest,
        DestId(0)
    );
    d[0].weight = 0;
    s.update(&d).unwrap();
    // expire_quiescent_template off (the kernel default): still server 0.
    assert_eq!(
        choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_A, 2, 1), SECOND)
            .unwrap()
            .dest,
        DestId(0)
    );
    // New clients avoid it.
    assert_eq!(
        choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_B, 2, 1), SECOND)
            .unwrap()
            .dest,
        DestId(1)
    );

    let mut strict = PersistenceTable::new(PersistOptions {
        capacity: 4,
        buckets: 4,
        expire_quiescent_template: true,
        ..PersistOptions::default()
    })
    .unwrap();
    let d: Vec<_> = (0..3).map(|i| dest(i, 1)).collect();
    let mut s = Scheduler::new(SchedulerKind::Rr, SchedulerOptions::default(), &d).unwrap();
    assert_eq!(
        choose(&mut s, &mut strict, p, SVC, &d, &flow(CLIENT_A, 1, 1), 0)
            .unwrap()
            .dest,
        DestId(0)
    );
    let mut q = d.clone();
    q[0].weight = 0;
    s.update(&q).unwrap();
    assert_eq!(
        choose(
            &mut s,
            &mut strict,
            p,
            SVC,
            &q,
            &flow(CLIENT_A, 2, 1),
            SECOND
        )
        .unwrap()
        .dest,
        DestId(1)
    );
    assert_eq!(strict.stats().invalidated, 1);
    // The replacement template sticks.
    assert_eq!(
        choose(
            &mut s,
            &mut strict,
            p,
            SVC,
            &q,
            &flow(CLIENT_A, 3, 1),
            SECOND
        )
        .unwrap()
        .dest,
        DestId(1)
    );
}

#[test]
fn a_template_to_a_removed_server_is_replaced() {
    let (mut s, mut t, d) = persistent_setup();
    let p = Some(Persistence::new(300 * SECOND));
    assert_eq!(
        choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_A, 1, 1), 0)
            .unwrap()
            .dest,
        DestId(0)
    );
    let key = PersistKey::new(SVC, Ipv4Addr::from(CLIENT_A), Ipv4Addr::BROADCAST);
    assert!(t.hold(key));
    let rest = d[1..].to_vec();
    s.update(&rest).unwrap();
    let c = choose(&mut s, &mut t, p, SVC, &rest, &flow(CLIENT_A, 2, 1), SECOND).unwrap();
    assert_ne!(c.dest, DestId(0));
    assert_eq!(c.template, Some(key));
    assert_eq!(t.stats().invalidated, 1);
    // The old connection's reference carried over to the replacement.
    assert_eq!(t.iter(SECOND).next().unwrap().refs, 1);
}

#[test]
fn a_full_template_table_still_schedules_but_not_persistently() {
    let (mut s, mut t, d) = persistent_setup();
    let p = Some(Persistence::new(300 * SECOND));
    for n in 0..4 {
        assert!(
            choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_A + n, 1, 1), 0)
                .unwrap()
                .template
                .is_some()
        );
    }
    let c = choose(&mut s, &mut t, p, SVC, &d, &flow(CLIENT_A + 10, 1, 1), 0).unwrap();
    assert_eq!(c.template, None);
    assert_eq!(t.stats().full, 1);
    // No destination at all: NoDest, and no template is created.
    let none: Vec<_> = (0..3).map(|i| dest(i, 0)).collect();
    let mut s = Scheduler::new(SchedulerKind::Rr, SchedulerOptions::default(), &none).unwrap();
    let (_, mut t, _) = persistent_setup();
    assert_eq!(
        choose(&mut s, &mut t, p, SVC, &none, &flow(CLIENT_A, 1, 1), 0),
        Err(NoDest)
    );
    assert!(t.is_empty());
    assert_eq!(NoDest.to_string(), "no destination available");
}
