//! A worker that announces persistence templates and lblc/lblcr changes to the sync daemon
//! still allocates nothing on the packet path or in its housekeeping: hundreds of new
//! templates (far more than its event queue holds, so it overflows), lblc and lblcr entries
//! made and aged out, template refreshes and expiries, all under a counting allocator.
//!
//! Alone in its own test binary so the counting allocator sees only this test; it counts per
//! thread so the harness's own threads do not interfere.

mod counting_alloc;
mod fwd_common;
mod worker_common;

use counting_alloc::allocations;
use std::net::Ipv4Addr;
use std::sync::Arc;

use tandem_core::Counters;
use tandem_core::director::Verdict;
use tandem_core::sched::{Persistence, SchedulerKind, SchedulerOptions};
use tandem_core::service::{ServiceSet, ServiceSpec};
use worker_common::*;

const SECOND: u64 = 1_000_000_000;

#[test]
fn announcing_templates_and_locality_never_allocates() {
    let rr = ServiceSpec {
        persistence: Some(Persistence::new(10 * SECOND)),
        ..service(
            80,
            SchedulerKind::Rr,
            vec![dest(0, 1), dest(1, 1), dest(2, 1)],
        )
    };
    let mut options = SchedulerOptions::default();
    options.locality.expiration = SECOND;
    let lblc = ServiceSpec {
        options,
        ..service(8080, SchedulerKind::Lblc, vec![dest(0, 1), dest(1, 1)])
    };
    let lblcr = ServiceSpec {
        options,
        ..service(8081, SchedulerKind::Lblcr, vec![dest(1, 1), dest(2, 1)])
    };
    let set = Arc::new(ServiceSet::new(&[rr, lblc, lblcr], MAX_DESTS).expect("valid"));
    let mut w = worker(set);
    // Every frame built beforehand; each is restored from its copy before it is sent again.
    let clients = 300u32;
    let pristine: Vec<Vec<u8>> = (0..clients)
        .flat_map(|i| {
            let [_, _, a, b] = i.to_be_bytes();
            let c = Ipv4Addr::new(198, 18, a, b);
            [80u16, 8080, 8081].map(|port| tcp((c, port), (VIP, port), SYN, b""))
        })
        .collect();
    let mut frames = pristine.clone();
    let mut counters = Counters::default();
    let mut events = 0u64;
    let mut locality = 0u64;
    let before = allocations();
    for round in 0..3u64 {
        let t0 = round * 4000 * SECOND;
        for (frame, original) in frames.iter_mut().zip(&pristine) {
            frame.copy_from_slice(original);
            let v = w.process(OUTSIDE, frame, t0 + SECOND, &mut counters);
            // Forwarded, or held for ARP once the neighbours aged out: scheduled either way.
            assert!(
                matches!(v, Verdict::Forward { .. } | Verdict::Resolve { .. }),
                "{v:?}"
            );
        }
        let b = w.balancer_mut().expect("balancer");
        // Refreshes are due, then everything expires, then the lblc entries age out.
        for t in [9, 10, 11, 20, 70, 2000] {
            b.housekeeping(t0 + t * SECOND, 1 << 16);
        }
        while b.events_mut().pop().is_some() {
            events += 1;
        }
        while b.locality_events_mut().pop().is_some() {
            locality += 1;
        }
    }
    let allocated = allocations() - before;
    assert_eq!(allocated, 0, "allocations while announcing");
    let b = w.balancer_mut().expect("balancer");
    assert!(events >= 3 * 1024, "{events} events");
    assert!(b.conns().stats().event_overflow > 0, "the queue overflowed");
    assert!(locality >= 6, "{locality} locality events");
}
