//! Properties of every scheduler over arbitrary destination sets and flows: `pick` never
//! panics, never returns a destination outside the list or with weight 0, and the
//! connection-counting schedulers agree with a brute-force reference.

use std::net::Ipv4Addr;

use proptest::prelude::*;
use tandem_core::lb::{DestId, Endpoint, Flow, Protocol, ServiceId};
use tandem_core::sched::{
    Choice, DestState, LocalityOptions, PersistOptions, Persistence, PersistenceTable, Scheduler,
    SchedulerKind, SchedulerOptions, WrrOrder, choose,
};

const SECOND: u64 = 1_000_000_000;

fn kind() -> impl Strategy<Value = SchedulerKind> {
    proptest::sample::select(SchedulerKind::ALL.to_vec())
}

fn dest_state() -> impl Strategy<Value = (u32, u32, u32, bool, u32, u16)> {
    (
        prop_oneof![Just(0u32), 1u32..4, 1u32..1000, Just(u32::MAX)],
        prop_oneof![Just(0u32), 0u32..20, Just(u32::MAX)],
        prop_oneof![Just(0u32), 0u32..300, Just(u32::MAX)],
        proptest::bool::weighted(0.15),
        any::<u32>(),
        any::<u16>(),
    )
}

/// Up to 12 destinations with distinct ids drawn from 0..40.
fn dests() -> impl Strategy<Value = Vec<DestState>> {
    (
        proptest::sample::subsequence((0u32..40).collect::<Vec<_>>(), 0..12).prop_shuffle(),
        proptest::collection::vec(dest_state(), 12),
    )
        .prop_map(|(ids, states)| {
            ids.into_iter()
                .zip(states)
                .map(
                    |(id, (weight, active, inactive, overloaded, addr, port))| DestState {
                        active,
                        inactive,
                        overloaded,
                        ..DestState::new(DestId(id), Ipv4Addr::from(addr), port, weight)
                    },
                )
                .collect()
        })
}

fn flow() -> impl Strategy<Value = Flow> {
    (any::<u32>(), any::<u16>(), 0u32..8, any::<bool>()).prop_map(|(src, sport, dst, udp)| Flow {
        proto: if udp { Protocol::Udp } else { Protocol::Tcp },
        src: Endpoint::new(Ipv4Addr::from(src), sport),
        dst: Endpoint::new(Ipv4Addr::from(0xCB00_7100 + dst), 80),
    })
}

fn options(fallback: bool, port: bool, descending: bool, kind: SchedulerKind) -> SchedulerOptions {
    let hashing = matches!(kind, SchedulerKind::Sh | SchedulerKind::Mh);
    SchedulerOptions {
        fallback: fallback && hashing,
        port: port && hashing,
        wrr_order: if descending {
            WrrOrder::Descending
        } else {
            WrrOrder::Ascending
        },
        mh_table_size: 251,
        locality: LocalityOptions {
            buckets: 4,
            capacity: 8,
            expiration: 30 * SECOND,
            hash_seed: 1,
        },
    }
}

fn valid(dests: &[DestState], id: DestId) -> bool {
    dests.iter().any(|d| d.id == id && d.weight > 0)
}

/// The brute-force reference for lc/wlc/sed/nq: the first available destination whose load
/// is no larger than any other's (exact rationals by cross-multiplication in u128).
fn reference(kind: SchedulerKind, dests: &[DestState]) -> Option<DestId> {
    let available: Vec<_> = dests
        .iter()
        .filter(|d| d.weight > 0 && !d.overloaded)
        .collect();
    if kind == SchedulerKind::Nq {
        if let Some(idle) = available.iter().find(|d| d.active == 0) {
            return Some(idle.id);
        }
    }
    let load = |d: &DestState| -> (u128, u128) {
        let overhead = match kind {
            SchedulerKind::Lc | SchedulerKind::Wlc => {
                u128::from(d.active) * 256 + u128::from(d.inactive)
            }
            _ => u128::from(d.active) + 1,
        };
        let weight = if kind == SchedulerKind::Lc {
            1
        } else {
            u128::from(d.weight)
        };
        (overhead, weight)
    };
    available
        .iter()
        .find(|a| {
            let (oa, wa) = load(a);
            available.iter().all(|b| {
                let (ob, wb) = load(b);
                oa * wb <= ob * wa
            })
        })
        .map(|d| d.id)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn pick_returns_only_listed_destinations_with_weight(
        kind in kind(),
        initial in dests(),
        later in dests(),
        flows in proptest::collection::vec(flow(), 1..40),
        fallback: bool,
        port: bool,
        descending: bool,
        stale: bool,
    ) {
        let mut sched = Scheduler::new(kind, options(fallback, port, descending, kind), &initial).unwrap();
        let mut now = 0;
        for (i, f) in flows.iter().enumerate() {
            let current = if i < flows.len() / 2 { &initial } else { &later };
            if i == flows.len() / 2 && !stale {
                sched.update(&later).unwrap();
            }
            now += 7 * SECOND;
            if let Some(id) = sched.pick(current, f, now) {
                prop_assert!(valid(current, id), "{kind} picked {id:?} from {current:?}");
            }
            if i % 5 == 0 {
                sched.housekeeping(now);
            }
        }
        // Whatever the table holds can be listed and installed into a fresh scheduler.
        let mut copy = Scheduler::new(kind, options(fallback, port, descending, kind), &later).unwrap();
        for e in sched.entries(now) {
            // A full copy may refuse; it never panics.
            let _ = copy.install(e, now);
        }
        prop_assert!(copy.entry_count() <= 8);
    }

    #[test]
    fn connection_counting_schedulers_match_the_reference(
        kind in proptest::sample::select(vec![
            SchedulerKind::Lc, SchedulerKind::Wlc, SchedulerKind::Sed, SchedulerKind::Nq,
        ]),
        dests in dests(),
        f in flow(),
    ) {
        let mut sched = Scheduler::new(kind, SchedulerOptions::default(), &dests).unwrap();
        prop_assert_eq!(sched.pick(&dests, &f, 0), reference(kind, &dests));
    }

    #[test]
    fn hashing_schedulers_are_stable(
        kind in proptest::sample::select(vec![SchedulerKind::Sh, SchedulerKind::Dh, SchedulerKind::Mh]),
        dests in dests(),
        f in flow(),
        port: bool,
    ) {
        let opts = options(false, port, false, kind);
        let mut a = Scheduler::new(kind, opts, &dests).unwrap();
        let mut b = Scheduler::new(kind, opts, &dests).unwrap();
        let first = a.pick(&dests, &f, 0);
        prop_assert_eq!(first, a.pick(&dests, &f, 1));
        prop_assert_eq!(first, b.pick(&dests, &f, 2));
    }

    #[test]
    fn choose_with_persistence_stays_in_the_list(
        kind in kind(),
        dests in dests(),
        flows in proptest::collection::vec(flow(), 1..30),
        timeout in 1u64..20,
    ) {
        let mut sched = Scheduler::new(kind, options(true, false, false, kind), &dests).unwrap();
        let mut templates = PersistenceTable::new(PersistOptions {
            capacity: 4,
            buckets: 2,
            ..PersistOptions::default()
        })
        .unwrap();
        let p = Some(Persistence::new(timeout * SECOND));
        for (i, f) in flows.iter().enumerate() {
            let now = u64::try_from(i).unwrap() * SECOND;
            let had = templates.peek(
                tandem_core::sched::PersistKey::new(ServiceId(1), f.src.addr, Ipv4Addr::BROADCAST),
                now,
            );
            match choose(&mut sched, &mut templates, p, ServiceId(1), &dests, f, now) {
                Ok(Choice { dest, .. }) => {
                    prop_assert!(dests.iter().any(|d| d.id == dest));
                    match had {
                        // A template to a listed destination is honoured, quiesced or not.
                        Some(t) if dests.iter().any(|d| d.id == t) => prop_assert_eq!(dest, t),
                        _ => prop_assert!(valid(&dests, dest)),
                    }
                }
                Err(_) => prop_assert!(had.is_none_or(|t| !dests.iter().any(|d| d.id == t))),
            }
        }
        prop_assert!(templates.len() <= 4);
    }
}
