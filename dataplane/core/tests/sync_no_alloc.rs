//! A worker that announces persistence templates and lblc/lblcr changes to the sync daemon
//! still allocates nothing on the packet path or in its housekeeping: hundreds of new
//! templates (far more than its event queue holds, so it overflows), lblc and lblcr entries
//! made and aged out, template refreshes and expiries, all under a counting allocator.
//!
//! Alone in its own test binary so the counting allocator sees only this test; it counts per
//! thread so the harness's own threads do not interfere.

mod fwd_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv4Addr;
use std::sync::Arc;

use fwd_common::{IpSpec, L4Spec, PacketSpec, cat, ethernet};
use tandem_core::Counters;
use tandem_core::balance::{Balancer, BalancerConfig};
use tandem_core::conn::ConnConfig;
use tandem_core::director::{Director, Port, Verdict, Vip, Worker};
use tandem_core::lb::{Endpoint, ForwardMethod, Protocol};
use tandem_core::sched::{PersistOptions, Persistence, SchedulerKind, SchedulerOptions};
use tandem_core::service::{DestSpec, ServiceSet, ServiceSpec};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

const SECOND: u64 = 1_000_000_000;
const OUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const CLIENT2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
const RS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(172, 16, 0, 2),
    Ipv4Addr::new(172, 16, 0, 3),
    Ipv4Addr::new(172, 16, 0, 4),
];
const OUTSIDE: usize = 0;
const INSIDE: usize = 1;
const SYN: u8 = 0x02;
const MAX_DESTS: usize = 16;

fn dest(rs: usize, weight: u32) -> DestSpec {
    DestSpec {
        addr: RS[rs],
        port: 80,
        method: ForwardMethod::Nat,
        weight,
    }
}

fn service(port: u16, scheduler: SchedulerKind, dests: Vec<DestSpec>) -> ServiceSpec {
    ServiceSpec {
        proto: Protocol::Tcp,
        vip: Endpoint::new(VIP, port),
        scheduler,
        options: SchedulerOptions::default(),
        persistence: None,
        dests,
    }
}

fn director() -> Arc<Director> {
    let d = Director::new(
        vec![
            Port {
                mac: OUT_MAC,
                addr: Ipv4Addr::new(203, 0, 113, 11),
                prefix_len: 24,
            },
            Port {
                mac: IN_MAC,
                addr: Ipv4Addr::new(172, 16, 0, 251),
                prefix_len: 24,
            },
        ],
        vec![Vip {
            addr: VIP,
            port: OUTSIDE,
        }],
    )
    .expect("valid director");
    Arc::new(d)
}

fn worker(set: Arc<ServiceSet>) -> Worker {
    let balancer = Balancer::new(
        set,
        BalancerConfig {
            conn: ConnConfig::new(1024, MAX_DESTS),
            persist: PersistOptions::default(),
            event_capacity: 1024,
            worker: 0,
            workers: 1,
        },
    )
    .expect("balancer");
    let mut w = Worker::new(director(), 64, 60_000_000_000).with_balancer(balancer);
    let n = w.neighbours_mut();
    n.learn(CLIENT, CLIENT_MAC, OUTSIDE, 0);
    n.learn(CLIENT2, CLIENT_MAC, OUTSIDE, 0);
    for (i, ip) in (0u8..).zip(RS.iter()) {
        n.learn(*ip, [2, 0, 0, 0, 0, 0xa0 + i], INSIDE, 0);
    }
    w
}

fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, payload: &[u8]) -> Vec<u8> {
    let p = PacketSpec {
        ip: IpSpec {
            tos: 0,
            ident: 7,
            df: true,
            mf: false,
            ttl: 64,
            src: src.0,
            dst: dst.0,
            options: vec![],
        },
        l4: L4Spec::Tcp {
            sport: src.1,
            dport: dst.1,
            seq: 1000,
            ack: 0,
            flags,
            window: 65535,
            urgent: 0,
            options: vec![],
            payload: payload.to_vec(),
        },
    };
    let mac = if src.0 == VIP || RS.contains(&src.0) {
        IN_MAC
    } else {
        OUT_MAC
    };
    cat(&[&ethernet(mac, CLIENT_MAC), &p.datagram()])
}

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
