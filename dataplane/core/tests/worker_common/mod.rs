//! The worker the control and sync tests drive: two ports (outside 203.0.113.11/24, inside
//! 172.16.0.251/24), one VIP, three NAT real servers with learned MACs, and the frames they
//! send. Each test binary that uses it also declares `mod fwd_common;`.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::fwd_common::{IpSpec, L4Spec, PacketSpec, cat, ethernet};
use tandem_core::Counters;
use tandem_core::balance::{Balancer, BalancerConfig};
use tandem_core::buf::{PacketBuf, VecBuf};
use tandem_core::conn::ConnConfig;
use tandem_core::director::{Director, Port, Verdict, Vip, Worker};
use tandem_core::lb::{Endpoint, ForwardMethod, Protocol};
use tandem_core::sched::{PersistOptions, SchedulerKind, SchedulerOptions};
use tandem_core::service::{DestSpec, ServiceSet, ServiceSpec};

pub const OUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
pub const CLIENT2: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
pub const RS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(172, 16, 0, 2),
    Ipv4Addr::new(172, 16, 0, 3),
    Ipv4Addr::new(172, 16, 0, 4),
];
pub const OUTSIDE: usize = 0;
pub const INSIDE: usize = 1;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const SYN_ACK: u8 = 0x12;
pub const MAX_DESTS: usize = 16;

pub fn dest(rs: usize, weight: u32) -> DestSpec {
    DestSpec {
        addr: RS[rs],
        port: 80,
        method: ForwardMethod::Nat,
        weight,
    }
}

pub fn service(port: u16, scheduler: SchedulerKind, dests: Vec<DestSpec>) -> ServiceSpec {
    ServiceSpec {
        proto: Protocol::Tcp,
        vip: Endpoint::new(VIP, port),
        scheduler,
        options: SchedulerOptions::default(),
        persistence: None,
        dests,
    }
}

pub fn director() -> Arc<Director> {
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

pub fn worker(set: Arc<ServiceSet>) -> Worker {
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

pub fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, payload: &[u8]) -> Vec<u8> {
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

/// Sends one frame in on `port`; returns the verdict and the real server it went to (for a
/// request forwarded to the inside).
pub fn send(w: &mut Worker, port: usize, frame: &[u8], now: u64) -> (Verdict, Ipv4Addr) {
    let mut buf = VecBuf::new(frame);
    let v = w.process_buf(port, &mut buf, now, &mut Counters::default());
    let f = buf.data();
    (v, Ipv4Addr::new(f[30], f[31], f[32], f[33]))
}
