//! The whole per-packet engine on arbitrary frames: a worker with NAT, TUN, DR and UDP
//! services (the seed 002 example among them), kept across inputs so that sequences of
//! frames build and tear down connections. First byte: the port (bit 0), whether the frame
//! gets tunnel headroom (bit 1), and whether its IPv4 and TCP/UDP checksums are made right
//! first (bit 2, so that mutations get past checksum verification); the rest is the frame.
//! The seeds (`fuzz/seeds/engine`) are the golden frames of `tandem_core::golden` and
//! `tandem_core::fwd::golden`. Must never panic, and every frame is counted once, a drop
//! with exactly one reason.
#![no_main]

use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tandem_core::balance::{Balancer, BalancerConfig};
use tandem_core::buf::VecBuf;
use tandem_core::conn::ConnConfig;
use tandem_core::director::{Director, Port, Route, Verdict, Vip, Worker};
use tandem_core::lb::{Endpoint, ForwardMethod, Protocol};
use tandem_core::sched::{PersistOptions, SchedulerKind, SchedulerOptions};
use tandem_core::service::{DestSpec, ServiceSet, ServiceSpec};
use tandem_core::{Counters, fwd, golden};

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const RS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(172, 16, 0, 2),
    Ipv4Addr::new(172, 16, 0, 3),
    Ipv4Addr::new(172, 16, 0, 4),
];

fn dest(rs: usize, port: u16, method: ForwardMethod, weight: u32) -> DestSpec {
    DestSpec {
        addr: RS[rs],
        port,
        method,
        weight,
    }
}

fn service(proto: Protocol, port: u16, kind: SchedulerKind, dests: Vec<DestSpec>) -> ServiceSpec {
    ServiceSpec {
        proto,
        vip: Endpoint::new(VIP, port),
        scheduler: kind,
        options: SchedulerOptions::default(),
        persistence: None,
        dests,
    }
}

fn worker() -> Worker {
    let services = vec![
        service(
            Protocol::Tcp,
            80,
            SchedulerKind::Wrr,
            vec![
                dest(0, 80, ForwardMethod::Nat, 1),
                dest(1, 8000, ForwardMethod::Nat, 2),
            ],
        ),
        service(
            Protocol::Tcp,
            21,
            SchedulerKind::Rr,
            vec![dest(1, 21, ForwardMethod::Nat, 1)],
        ),
        service(
            Protocol::Udp,
            53,
            SchedulerKind::Lc,
            (0..3).map(|i| dest(i, 53, ForwardMethod::Nat, 1)).collect(),
        ),
        service(
            Protocol::Tcp,
            8080,
            SchedulerKind::Rr,
            vec![dest(0, 8080, ForwardMethod::Tunnel, 1)],
        ),
        service(
            Protocol::Tcp,
            443,
            SchedulerKind::Lblc,
            vec![dest(2, 443, ForwardMethod::DirectRoute, 1)],
        ),
    ];
    let director = Director::new(
        vec![
            Port {
                mac: golden::OUTSIDE_MAC,
                addr: Ipv4Addr::new(203, 0, 113, 11),
                prefix_len: 24,
            },
            Port {
                mac: golden::INSIDE_MAC,
                addr: Ipv4Addr::new(172, 16, 0, 251),
                prefix_len: 24,
            },
        ],
        vec![
            Vip { addr: VIP, port: 0 },
            Vip {
                addr: Ipv4Addr::new(172, 16, 0, 254),
                port: 1,
            },
        ],
    )
    .and_then(|d| {
        d.with_routes(vec![Route {
            prefix: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Ipv4Addr::new(203, 0, 113, 1),
        }])
    })
    .expect("a valid director");
    let set = Arc::new(ServiceSet::new(&services, 64).expect("valid services"));
    let balancer = Balancer::new(
        set,
        BalancerConfig {
            conn: ConnConfig::new(1024, 64),
            persist: PersistOptions::default(),
            event_capacity: 1024,
            worker: 0,
            workers: 1,
        },
    )
    .expect("a balancer");
    let mut w = Worker::new(Arc::new(director), 64, 60_000_000_000).with_balancer(balancer);
    let n = w.neighbours_mut();
    n.learn(fwd::golden::CLIENT, fwd::golden::CLIENT_MAC, 0, 0);
    n.learn(fwd::golden::ROUTER, fwd::golden::ROUTER_MAC, 0, 0);
    for (i, ip) in RS.iter().enumerate() {
        n.learn(*ip, [0x02, 0, 0, 0, 0, 0xa1 + i as u8], 1, 0);
    }
    w
}

/// The ones' complement sum of `data`, folded (RFC 1071), as the core's own is not used here
/// on purpose: an independent computation.
fn sum(data: &[u8], mut acc: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// Makes the IPv4 header checksum and the TCP/UDP checksum of an Ethernet/IPv4 frame right,
/// as far as its lengths allow.
fn fix_checksums(frame: &mut [u8]) {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    if ihl < 20 || frame.len() < 14 + ihl {
        return;
    }
    frame[24] = 0;
    frame[25] = 0;
    let c = fold(sum(&frame[14..14 + ihl], 0));
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    let end = (14 + total).min(frame.len());
    if end < 14 + ihl {
        return;
    }
    let proto = frame[23];
    let at = match proto {
        6 => 16,
        17 => 6,
        _ => return,
    };
    let l4 = 14 + ihl;
    if end < l4 + at + 2 {
        return;
    }
    frame[l4 + at] = 0;
    frame[l4 + at + 1] = 0;
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&frame[26..34]);
    pseudo[9] = proto;
    pseudo[10..12].copy_from_slice(&((end - l4) as u16).to_be_bytes());
    let c = fold(sum(&frame[l4..end], sum(&pseudo, 0)));
    frame[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
}

thread_local! {
    static STATE: RefCell<(Worker, u64)> = RefCell::new((worker(), 0));
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, frame)) = data.split_first() else {
        return;
    };
    let mut owned;
    let frame = if first & 4 != 0 {
        owned = frame.to_vec();
        fix_checksums(&mut owned);
        &owned[..]
    } else {
        frame
    };
    let _ = fwd::parse_flow(frame);
    STATE.with(|s| {
        let (w, now) = &mut *s.borrow_mut();
        // A millisecond per frame: timers fire, entries expire.
        *now += 1_000_000;
        let port = usize::from(first & 1);
        let mut counters = Counters::default();
        let verdict = if first & 2 != 0 {
            let mut buf = VecBuf::with_headroom(frame, 64);
            w.process_buf(port, &mut buf, *now, &mut counters)
        } else {
            let mut copy = frame.to_vec();
            let v = w.process(port, &mut copy, *now, &mut counters);
            assert_eq!(copy.len(), frame.len(), "a slice frame keeps its length");
            v
        };
        assert_eq!(counters.rx_packets, 1);
        match verdict {
            Verdict::Drop(reason) => {
                assert_eq!(counters.dropped(reason), 1);
                assert_eq!(counters.total_drops(), 1);
            }
            _ => assert_eq!(counters.total_drops(), 0),
        }
    });
});
