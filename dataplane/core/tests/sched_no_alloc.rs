//! `Scheduler::pick`, `choose` and the tables' packet-path operations allocate nothing: every
//! scheduler is driven through its cases (hits, misses, full tables, set growth and eviction,
//! fallbacks, template creation, expiry and refusal) under a counting allocator.
//!
//! Alone in its own test binary so the counting allocator sees only this test; it counts per
//! thread so the harness's own threads do not interfere.

mod counting_alloc;

use counting_alloc::allocations;
use std::net::Ipv4Addr;

use tandem_core::lb::{DestId, Endpoint, Flow, Protocol, ServiceId};
use tandem_core::sched::{
    DestState, LocalityOptions, PersistKey, PersistOptions, Persistence, PersistenceTable,
    Scheduler, SchedulerKind, SchedulerOptions, WrrOrder, choose,
};

const SECOND: u64 = 1_000_000_000;

fn flow(n: u32) -> Flow {
    Flow {
        proto: Protocol::Tcp,
        src: Endpoint::new(
            Ipv4Addr::from(n.wrapping_mul(2_654_435_761)),
            1024 + u16::try_from(n % 50_000).unwrap_or(0),
        ),
        dst: Endpoint::new(Ipv4Addr::from(0xCB00_7100 + n % 64), 80),
    }
}

#[test]
fn pick_and_choose_never_allocate() {
    let mut dests: Vec<DestState> = (0..8u32)
        .map(|i| {
            DestState::new(
                DestId(i),
                Ipv4Addr::new(192, 168, 1, 1 + u8::try_from(i).unwrap()),
                80,
                1 + i % 4,
            )
        })
        .collect();
    dests[3].weight = 0;
    // Small locality tables and sets fill up quickly, so refusals, evictions and GC all run.
    let options = |kind: SchedulerKind, descending: bool| SchedulerOptions {
        fallback: matches!(kind, SchedulerKind::Sh | SchedulerKind::Mh),
        port: matches!(kind, SchedulerKind::Sh | SchedulerKind::Mh),
        wrr_order: if descending {
            WrrOrder::Descending
        } else {
            WrrOrder::Ascending
        },
        mh_table_size: 4093,
        locality: LocalityOptions {
            buckets: 16,
            capacity: 32,
            expiration: 10 * SECOND,
            hash_seed: 3,
        },
    };
    let mut scheds: Vec<Scheduler> = SchedulerKind::ALL
        .iter()
        .flat_map(|&k| {
            [false, true].map(|desc| Scheduler::new(k, options(k, desc), &dests).unwrap())
        })
        .collect();
    let mut templates = PersistenceTable::new(PersistOptions {
        capacity: 64,
        buckets: 16,
        ..PersistOptions::default()
    })
    .unwrap();
    let persistence = Some(Persistence::new(5 * SECOND));

    let before = allocations();
    let mut picked = 0u64;
    for n in 0..20_000u32 {
        let now = u64::from(n) * SECOND / 100;
        // Loads shift as connections come and go, so overload rules and set growth trigger.
        let d = &mut dests[usize::try_from(n % 8).unwrap()];
        d.active = (n / 8) % 12;
        d.inactive = n % 97;
        d.overloaded = n % 53 == 0;
        let f = flow(n);
        for s in &mut scheds {
            picked += u64::from(s.pick(&dests, &f, now).is_some());
            if n % 500 == 0 {
                s.housekeeping(now);
            }
        }
        let s = &mut scheds[usize::try_from(n % 22).unwrap()];
        if let Ok(c) = choose(
            s,
            &mut templates,
            persistence,
            ServiceId(n % 3),
            &dests,
            &f,
            now,
        ) && let Some(key) = c.template
        {
            templates.hold(key);
            templates.release(key, now);
        }
        let probe = PersistKey::new(ServiceId(1), f.src.addr, Ipv4Addr::BROADCAST);
        templates.peek(probe, now);
        if n % 1000 == 0 {
            templates.expire(now);
        }
    }
    let during = allocations() - before;
    assert_eq!(during, 0, "{during} allocations on the packet path");
    assert!(picked > 300_000, "only {picked} picks succeeded");
    let stats: Vec<_> = scheds.iter().map(Scheduler::stats).collect();
    assert!(
        stats.iter().any(|s| s.locality_full > 0),
        "lblc/lblcr tables never filled"
    );
    assert!(templates.stats().full > 0 || templates.stats().expired > 0);
}
