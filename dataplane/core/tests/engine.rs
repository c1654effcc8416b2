//! The whole per-packet engine (`Worker` with a `Balancer`) on frames built byte by byte:
//! scheduling, connection tracking and the NAT/TUN/DR transforms, with exact expectations and
//! every checksum of every output recomputed from scratch.

mod fwd_common;

use std::net::Ipv4Addr;
use std::sync::Arc;

use fwd_common::{IpSpec, L4Spec, PacketSpec, assert_checksums, cat, ethernet, icmp_message};
use tandem_core::balance::{Balancer, BalancerConfig, owner};
use tandem_core::buf::{PacketBuf, VecBuf};
use tandem_core::conn::{ConnConfig, ConnState};
use tandem_core::director::{self, Director, Port, Route, Verdict, Vip, Worker};
use tandem_core::lb::{Endpoint, ForwardMethod, Protocol};
use tandem_core::sched::{PersistOptions, SchedulerKind, SchedulerOptions};
use tandem_core::service::{DestSpec, ServiceSet, ServiceSpec};
use tandem_core::{Counters, DropReason};

const OUT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const IN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xee];
const RS_MACS: [[u8; 6]; 3] = [
    [0x02, 0, 0, 0, 0, 0xa1],
    [0x02, 0, 0, 0, 0, 0xa2],
    [0x02, 0, 0, 0, 0, 0xa3],
];

const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
/// The inside port's VIP (the real servers' gateway).
const INSIDE_VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 254);
const FAR_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const RS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(172, 16, 0, 2),
    Ipv4Addr::new(172, 16, 0, 3),
    Ipv4Addr::new(172, 16, 0, 4),
];
const OUTSIDE: usize = 0;
const INSIDE: usize = 1;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYN_ACK: u8 = 0x12;

fn dest(rs: usize, port: u16, method: ForwardMethod, weight: u32) -> DestSpec {
    DestSpec {
        addr: RS[rs],
        port,
        method,
        weight,
    }
}

fn service(
    proto: Protocol,
    port: u16,
    scheduler: SchedulerKind,
    dests: Vec<DestSpec>,
) -> ServiceSpec {
    ServiceSpec {
        proto,
        vip: Endpoint::new(VIP, port),
        scheduler,
        options: SchedulerOptions::default(),
        persistence: None,
        dests,
    }
}

/// Seed 002's services plus one TUN, one DR and one UDP service on the same VIP.
fn services() -> Vec<ServiceSpec> {
    vec![
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
            SchedulerKind::Rr,
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
            SchedulerKind::Rr,
            vec![dest(2, 443, ForwardMethod::DirectRoute, 1)],
        ),
    ]
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
        vec![
            Vip {
                addr: VIP,
                port: OUTSIDE,
            },
            Vip {
                addr: Ipv4Addr::new(172, 16, 0, 254),
                port: INSIDE,
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
    .expect("valid director");
    Arc::new(d)
}

fn worker_n(worker: usize, workers: usize, learn: bool) -> Worker {
    let set = Arc::new(ServiceSet::new(&services(), 64).expect("valid services"));
    let balancer = Balancer::new(
        set,
        BalancerConfig {
            conn: ConnConfig::new(1024, 64),
            persist: PersistOptions::default(),
            event_capacity: 1024,
            worker,
            workers,
        },
    )
    .expect("balancer");
    let mut w = Worker::new(director(), 64, 60_000_000_000).with_balancer(balancer);
    if learn {
        let n = w.neighbours_mut();
        n.learn(CLIENT, CLIENT_MAC, OUTSIDE, 0);
        n.learn(Ipv4Addr::new(203, 0, 113, 1), ROUTER_MAC, OUTSIDE, 0);
        for (ip, mac) in RS.iter().zip(RS_MACS) {
            n.learn(*ip, mac, INSIDE, 0);
        }
    }
    w
}

fn worker() -> Worker {
    worker_n(0, 1, true)
}

fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, payload: &[u8]) -> PacketSpec {
    PacketSpec {
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
    }
}

fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> PacketSpec {
    PacketSpec {
        ip: IpSpec {
            tos: 0,
            ident: 9,
            df: false,
            mf: false,
            ttl: 64,
            src: src.0,
            dst: dst.0,
            options: vec![],
        },
        l4: L4Spec::Udp {
            sport: src.1,
            dport: dst.1,
            payload: payload.to_vec(),
            checksum: true,
        },
    }
}

fn frame(dst_mac: [u8; 6], src_mac: [u8; 6], p: &PacketSpec) -> Vec<u8> {
    cat(&[&ethernet(dst_mac, src_mac), &p.datagram()])
}

/// Runs one frame through the worker with mbuf-like headroom.
fn run(
    w: &mut Worker,
    port: usize,
    bytes: &[u8],
    now: u64,
    c: &mut Counters,
) -> (Verdict, Vec<u8>) {
    let mut buf = VecBuf::new(bytes);
    let v = w.process_buf(port, &mut buf, now, c);
    (v, buf.data().to_vec())
}

fn ip_dst(f: &[u8]) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(f[30], f[31], f[32], f[33]),
        u16::from_be_bytes([f[36], f[37]]),
    )
}

fn ip_src(f: &[u8]) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(f[26], f[27], f[28], f[29]),
        u16::from_be_bytes([f[34], f[35]]),
    )
}

#[test]
fn nat_seed_002_wrr_spreads_by_weight_and_rewrites_the_destination() {
    let mut w = worker();
    let mut c = Counters::default();
    let mut seen = Vec::new();
    for i in 0..9u16 {
        let syn = frame(
            OUT_MAC,
            CLIENT_MAC,
            &tcp((CLIENT, 40000 + i), (VIP, 80), SYN, b""),
        );
        let (v, out) = run(&mut w, OUTSIDE, &syn, 1_000, &mut c);
        assert_eq!(v, Verdict::Forward { port: INSIDE }, "SYN {i}");
        assert_checksums(&out, "NAT request");
        assert_eq!(&out[6..12], &IN_MAC, "leaves from the inside port");
        let (dst, src) = (ip_dst(&out), ip_src(&out));
        assert_eq!(
            src,
            (CLIENT, 40000 + i),
            "the client's address is kept (NAT rewrites the destination only)"
        );
        let rs = RS.iter().position(|r| *r == dst.0).expect("a real server");
        assert_eq!(&out[..6], &RS_MACS[rs], "to the real server's MAC");
        assert_eq!(out[22], 63, "TTL decremented");
        seen.push(dst);
    }
    let rs1 = (RS[0], 80);
    let rs2 = (RS[1], 8000);
    assert_eq!(
        seen.iter().filter(|d| **d == rs1).count(),
        3,
        "weight 1 of 3: {seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|d| **d == rs2).count(),
        6,
        "weight 2 of 3, port 80 mapped to 8000: {seen:?}"
    );
    assert_eq!(c.forwarded, 9);
    let conns = w.balancer().expect("balancer").conns();
    assert_eq!(conns.len(), 9);
}

#[test]
fn nat_reply_goes_back_from_the_vip_and_the_connection_establishes() {
    let mut w = worker();
    let mut c = Counters::default();
    let client = (CLIENT, 41000);
    let (v, out) = run(
        &mut w,
        OUTSIDE,
        &frame(OUT_MAC, CLIENT_MAC, &tcp(client, (VIP, 21), SYN, b"")),
        0,
        &mut c,
    );
    assert_eq!(v, Verdict::Forward { port: INSIDE });
    assert_eq!(ip_dst(&out), (RS[1], 21));

    // The real server answers through the director, its gateway.
    let syn_ack = frame(IN_MAC, RS_MACS[1], &tcp((RS[1], 21), client, SYN_ACK, b""));
    let (v, out) = run(&mut w, INSIDE, &syn_ack, 10, &mut c);
    assert_eq!(v, Verdict::Forward { port: OUTSIDE });
    assert_checksums(&out, "NAT reply");
    assert_eq!(ip_src(&out), (VIP, 21), "the reply comes from VIP:vport");
    assert_eq!(ip_dst(&out), client);
    assert_eq!(&out[..6], &CLIENT_MAC);
    assert_eq!(&out[6..12], &OUT_MAC);

    let ack = frame(
        OUT_MAC,
        CLIENT_MAC,
        &tcp(client, (VIP, 21), ACK, b"USER anonymous\r\n"),
    );
    let (v, out) = run(&mut w, OUTSIDE, &ack, 20, &mut c);
    assert_eq!(v, Verdict::Forward { port: INSIDE });
    assert_checksums(&out, "NAT data");
    let b = w.balancer().expect("balancer");
    let (_, conn) = b.conns().iter().next().expect("one connection");
    assert_eq!(conn.state(), ConnState::Established);
    let dest = conn.dest().0 as usize;
    assert_eq!(
        (
            b.conns().dest_counts()[dest].active,
            b.conns().dest_counts()[dest].inactive
        ),
        (1, 0)
    );
}

#[test]
fn far_clients_are_answered_through_the_default_route() {
    let mut w = worker();
    let mut c = Counters::default();
    let client = (FAR_CLIENT, 5555);
    let syn = frame(OUT_MAC, ROUTER_MAC, &tcp(client, (VIP, 21), SYN, b""));
    assert_eq!(
        run(&mut w, OUTSIDE, &syn, 0, &mut c).0,
        Verdict::Forward { port: INSIDE }
    );
    let (v, out) = run(
        &mut w,
        INSIDE,
        &frame(IN_MAC, RS_MACS[1], &tcp((RS[1], 21), client, SYN_ACK, b"")),
        1,
        &mut c,
    );
    assert_eq!(v, Verdict::Forward { port: OUTSIDE });
    assert_eq!(&out[..6], &ROUTER_MAC, "via the gateway 203.0.113.1");
}

#[test]
fn refused_traffic_is_counted_by_reason() {
    let mut w = worker();
    let mut c = Counters::default();
    let ack = frame(OUT_MAC, CLIENT_MAC, &tcp((CLIENT, 1), (VIP, 80), ACK, b"x"));
    assert_eq!(
        run(&mut w, OUTSIDE, &ack, 0, &mut c).0,
        Verdict::Drop(DropReason::TcpNoConnection)
    );
    // Seed 002: every other port of the VIP is rejected.
    let telnet = frame(OUT_MAC, CLIENT_MAC, &tcp((CLIENT, 2), (VIP, 23), SYN, b""));
    assert_eq!(
        run(&mut w, OUTSIDE, &telnet, 0, &mut c).0,
        Verdict::Drop(DropReason::NoService)
    );
    let udp80 = frame(OUT_MAC, CLIENT_MAC, &udp((CLIENT, 3), (VIP, 80), b"x"));
    assert_eq!(
        run(&mut w, OUTSIDE, &udp80, 0, &mut c).0,
        Verdict::Drop(DropReason::NoService)
    );
    // A reply for no connection is not the balancer's: the director does not route.
    let stray = frame(
        IN_MAC,
        RS_MACS[0],
        &tcp((RS[0], 80), (CLIENT, 9), SYN_ACK, b""),
    );
    assert_eq!(
        run(&mut w, INSIDE, &stray, 0, &mut c).0,
        Verdict::Drop(DropReason::Ipv4NotForUs)
    );
    // Malformed TCP to a VIP.
    let mut bad = frame(OUT_MAC, CLIENT_MAC, &tcp((CLIENT, 4), (VIP, 80), SYN, b""));
    bad[46] = 0x40; // data offset 4
    assert_eq!(
        run(&mut w, OUTSIDE, &bad, 0, &mut c).0,
        Verdict::Drop(DropReason::MalformedTcp)
    );
    assert_eq!(c.total_drops(), 5);
    assert_eq!(c.forwarded, 0);
}

/// A standby (VIPs not held) forwards the connections it holds to their real server, in both
/// directions, and schedules no new one: TCP SYN, UDP, and a SYN reusing a closed entry's
/// ports are each dropped as `standby`, and the table and event queue are left as they were.
/// Once it holds the VIPs again it schedules.
#[test]
fn a_standby_forwards_what_it_holds_and_schedules_nothing() {
    let mut w = worker();
    let mut c = Counters::default();
    let client = (CLIENT, 42000);
    let syn = frame(OUT_MAC, CLIENT_MAC, &tcp(client, (VIP, 21), SYN, b""));
    let (v, out) = run(&mut w, OUTSIDE, &syn, 0, &mut c);
    assert_eq!(v, Verdict::Forward { port: INSIDE });
    assert_eq!(ip_dst(&out), (RS[1], 21));

    w.set_owns_vips(false);
    assert!(!w.balancer().expect("balancer").schedules());
    let events_before = w.balancer_mut().expect("balancer").events_mut().len();

    // The held connection: data on, the reply back, to and from the same real server.
    let data = frame(
        OUT_MAC,
        CLIENT_MAC,
        &tcp(client, (VIP, 21), ACK, b"QUIT\r\n"),
    );
    let (v, out) = run(&mut w, OUTSIDE, &data, 10, &mut c);
    assert_eq!(v, Verdict::Forward { port: INSIDE });
    assert_eq!(ip_dst(&out), (RS[1], 21));
    let reply = frame(
        IN_MAC,
        RS_MACS[1],
        &tcp((RS[1], 21), client, ACK, b"221\r\n"),
    );
    let (v, out) = run(&mut w, INSIDE, &reply, 20, &mut c);
    assert_eq!(v, Verdict::Forward { port: OUTSIDE });
    assert_eq!(ip_src(&out), (VIP, 21));

    // New connections: none.
    let other = frame(
        OUT_MAC,
        CLIENT_MAC,
        &tcp((CLIENT, 42001), (VIP, 80), SYN, b""),
    );
    assert_eq!(
        run(&mut w, OUTSIDE, &other, 30, &mut c).0,
        Verdict::Drop(DropReason::Standby)
    );
    let query = frame(OUT_MAC, CLIENT_MAC, &udp((CLIENT, 6000), (VIP, 53), b"q"));
    assert_eq!(
        run(&mut w, OUTSIDE, &query, 40, &mut c).0,
        Verdict::Drop(DropReason::Standby)
    );
    // The client resets the held connection, then reuses its ports: the closed entry stays.
    let rst = frame(OUT_MAC, CLIENT_MAC, &tcp(client, (VIP, 21), 0x04, b""));
    assert_eq!(
        run(&mut w, OUTSIDE, &rst, 50, &mut c).0,
        Verdict::Forward { port: INSIDE }
    );
    let b = w.balancer().expect("balancer");
    let (id, conn) = b.conns().iter().next().expect("the held connection");
    assert_eq!(conn.state(), ConnState::Close);
    assert_eq!(
        run(&mut w, OUTSIDE, &syn, 60, &mut c).0,
        Verdict::Drop(DropReason::Standby)
    );
    let b = w.balancer_mut().expect("balancer");
    assert_eq!(b.conns().len(), 1);
    assert_eq!(b.conns().get(id).map(|c| c.state()), Some(ConnState::Close));
    assert_eq!(c.drops[DropReason::Standby as usize], 3);
    // Only the held connection's own state changes were queued for the sync daemon.
    let events = b.events_mut().len() - events_before;
    assert_eq!(events, 2, "ESTABLISHED, then CLOSE");

    // Active again: the reused ports make a new connection, and new clients are scheduled.
    w.set_owns_vips(true);
    assert_eq!(
        run(&mut w, OUTSIDE, &syn, 70, &mut c).0,
        Verdict::Forward { port: INSIDE }
    );
    assert_eq!(
        run(&mut w, OUTSIDE, &other, 80, &mut c).0,
        Verdict::Forward { port: INSIDE }
    );
    assert_eq!(w.balancer().expect("balancer").conns().len(), 2);
}

#[test]
fn udp_connections_stick_and_new_ones_rotate() {
    let mut w = worker();
    let mut c = Counters::default();
    let mut dsts = Vec::new();
    for (port, n) in [(6000u16, 3), (6001, 1), (6002, 1)] {
        for _ in 0..n {
            let q = frame(
                OUT_MAC,
                CLIENT_MAC,
                &udp((CLIENT, port), (VIP, 53), b"query"),
            );
            let (v, out) = run(&mut w, OUTSIDE, &q, 0, &mut c);
            assert_eq!(v, Verdict::Forward { port: INSIDE });
            assert_checksums(&out, "NAT UDP");
            dsts.push(ip_dst(&out).0);
        }
    }
    assert_eq!(
        dsts,
        [RS[0], RS[0], RS[0], RS[1], RS[2]],
        "rr; one flow stays on its server"
    );
}

#[test]
fn tun_encapsulates_in_ipip_to_the_real_server() {
    let mut w = worker();
    let mut c = Counters::default();
    let syn = frame(
        OUT_MAC,
        CLIENT_MAC,
        &tcp((CLIENT, 7000), (VIP, 8080), SYN, b""),
    );
    let (v, out) = run(&mut w, OUTSIDE, &syn, 0, &mut c);
    assert_eq!(v, Verdict::Forward { port: INSIDE });
    assert_eq!(out.len(), syn.len() + 20);
    assert_checksums(&out, "IPIP");
    assert_eq!(&out[..6], &RS_MACS[0]);
    assert_eq!(out[23], 4, "outer protocol IPIP");
    assert_eq!(
        &out[26..30],
        &[172, 16, 0, 251],
        "outer source: the director's inside address"
    );
    assert_eq!(
        &out[30..34],
        &RS[0].octets(),
        "outer destination: the real server"
    );
    assert_eq!(
        &out[34 + 16..34 + 20],
        &VIP.octets(),
        "inner destination still the VIP"
    );
    assert_eq!(
        &out[34 + 12..34 + 16],
        &CLIENT.octets(),
        "inner source still the client"
    );
}

#[test]
fn tun_answers_fragmentation_needed_for_a_too_big_df_datagram() {
    let mut w = worker();
    let mut c = Counters::default();
    // 1500 bytes of IP: one byte too many once 20 bytes of IPIP are added.
    let big = frame(
        OUT_MAC,
        CLIENT_MAC,
        &tcp((CLIENT, 7001), (VIP, 8080), SYN, &[0u8; 1460]),
    );
    assert_eq!(big.len(), 14 + 1500);
    let (v, out) = run(&mut w, OUTSIDE, &big, 0, &mut c);
    assert_eq!(v, Verdict::Reply, "sent back out of the port it came in by");
    assert_checksums(&out, "frag needed");
    assert_eq!(&out[..6], &CLIENT_MAC);
    assert_eq!(out[23], 1, "ICMP");
    assert_eq!(
        (out[34], out[35]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), 1480, "next-hop MTU");
    assert_eq!(&out[26..30], &VIP.octets(), "from the VIP");
    assert_eq!(c.icmp_frag_needed, 1);
}

#[test]
fn dr_rewrites_only_the_mac() {
    let mut w = worker();
    let mut c = Counters::default();
    let syn = frame(
        OUT_MAC,
        CLIENT_MAC,
        &tcp((CLIENT, 7100), (VIP, 443), SYN, b""),
    );
    let (v, out) = run(&mut w, OUTSIDE, &syn, 0, &mut c);
    assert_eq!(v, Verdict::Forward { port: INSIDE });
    assert_eq!(&out[..6], &RS_MACS[2]);
    assert_eq!(&out[6..12], &IN_MAC);
    assert_eq!(&out[14..22], &syn[14..22]);
    assert_eq!(ip_dst(&out), (VIP, 443), "the destination stays the VIP");
    assert_eq!(out[22], 63);
    assert_checksums(&out, "DR");
}

#[test]
fn unknown_next_hop_asks_for_resolution() {
    let mut w = worker_n(0, 1, false);
    w.neighbours_mut().learn(CLIENT, CLIENT_MAC, OUTSIDE, 0);
    let mut c = Counters::default();
    let syn = frame(
        OUT_MAC,
        CLIENT_MAC,
        &tcp((CLIENT, 7200), (VIP, 21), SYN, b""),
    );
    let (v, mut out) = run(&mut w, OUTSIDE, &syn, 0, &mut c);
    assert_eq!(
        v,
        Verdict::Resolve {
            port: INSIDE,
            next_hop: RS[1]
        }
    );
    assert_eq!(&out[..6], &[0; 6], "destination MAC left for the glue");
    let mut arp = [0u8; 64];
    let len = w.arp_request(INSIDE, RS[1], &mut arp).expect("room");
    assert_eq!(len, 60);
    assert_eq!(&arp[..6], &[0xff; 6]);
    assert_eq!(&arp[6..12], &IN_MAC);
    assert_eq!(&arp[12..14], &[0x08, 0x06]);
    assert_eq!(
        &arp[14..22],
        &[0, 1, 8, 0, 6, 4, 0, 1],
        "Ethernet/IPv4 request"
    );
    assert_eq!(
        &arp[28..32],
        &[172, 16, 0, 251],
        "sender: the inside address"
    );
    assert_eq!(&arp[38..42], &RS[1].octets(), "target: the next hop");
    assert!(director::set_dst_mac(&mut out, RS_MACS[1]));
    assert_checksums(&out, "resolved");
    assert_eq!(&out[..6], &RS_MACS[1]);
}

#[test]
fn both_directions_of_a_connection_belong_to_one_worker() {
    let client = (CLIENT, 7300);
    let owner_of = owner(Endpoint::new(client.0, client.1), 2);
    let other = 1 - owner_of;
    let mut c = Counters::default();
    let syn = frame(OUT_MAC, CLIENT_MAC, &tcp(client, (VIP, 21), SYN, b""));
    let reply = frame(IN_MAC, RS_MACS[1], &tcp((RS[1], 21), client, SYN_ACK, b""));
    let mut not_owner = worker_n(other, 2, true);
    assert_eq!(
        run(&mut not_owner, OUTSIDE, &syn, 0, &mut c).0,
        Verdict::Redirect { worker: owner_of }
    );
    assert_eq!(
        run(&mut not_owner, INSIDE, &reply, 0, &mut c).0,
        Verdict::Redirect { worker: owner_of }
    );
    assert!(
        not_owner.balancer().expect("b").conns().is_empty(),
        "nothing recorded on the wrong worker"
    );
    let mut owner_w = worker_n(owner_of, 2, true);
    assert_eq!(
        run(&mut owner_w, OUTSIDE, &syn, 0, &mut c).0,
        Verdict::Forward { port: INSIDE }
    );
    assert_eq!(
        run(&mut owner_w, INSIDE, &reply, 1, &mut c).0,
        Verdict::Forward { port: OUTSIDE }
    );
    assert_eq!(c.redirected, 2);
    // Clients spread over both workers; one client's connections all stay on one.
    let spread: Vec<usize> = (0..64u8)
        .map(|i| owner(Endpoint::new(Ipv4Addr::new(198, 51, 100, i), 80), 2))
        .collect();
    let zeros = spread.iter().filter(|w| **w == 0).count();
    assert!((16..=48).contains(&zeros), "{zeros} of 64 on worker 0");
    let ports: Vec<usize> = (0..64u16)
        .map(|p| owner(Endpoint::new(CLIENT, 10000 + p), 2))
        .collect();
    assert!(
        ports.iter().all(|w| *w == owner_of),
        "a client's ports share its worker"
    );
}

#[test]
fn icmp_port_unreachable_from_a_real_server_is_translated_for_the_client() {
    let mut w = worker();
    let mut c = Counters::default();
    let client = (CLIENT, 6100);
    let q = udp(client, (VIP, 53), b"query");
    let (v, fwd) = run(&mut w, OUTSIDE, &frame(OUT_MAC, CLIENT_MAC, &q), 0, &mut c);
    assert_eq!(v, Verdict::Forward { port: INSIDE });
    let rs = ip_dst(&fwd);
    // The real server's kernel answers "port unreachable" quoting what it received.
    let quoted = &fwd[14..];
    let err_ip = IpSpec {
        tos: 0,
        ident: 1,
        df: false,
        mf: false,
        ttl: 64,
        src: rs.0,
        dst: CLIENT,
        options: vec![],
    };
    let icmp = icmp_message(3, 3, 0, quoted);
    let datagram = cat(&[&fwd_common::ipv4_header(&err_ip, 1, icmp.len()), &icmp]);
    let err = cat(&[&ethernet(IN_MAC, RS_MACS[0]), &datagram]);
    let (v, out) = run(&mut w, INSIDE, &err, 1, &mut c);
    assert_eq!(v, Verdict::Forward { port: OUTSIDE });
    assert_checksums(&out, "translated ICMP error");
    assert_eq!(&out[26..30], &VIP.octets(), "from the VIP");
    assert_eq!(&out[30..34], &CLIENT.octets());
    // The quoted datagram is the one the client sent: to VIP:53.
    let quote = &out[42..];
    assert_eq!(&quote[16..20], &VIP.octets());
    assert_eq!(u16::from_be_bytes([quote[22], quote[23]]), 53);
}

#[test]
fn expiry_frees_connections_and_counts() {
    let mut w = worker();
    let mut c = Counters::default();
    let syn = frame(
        OUT_MAC,
        CLIENT_MAC,
        &tcp((CLIENT, 7400), (VIP, 21), SYN, b""),
    );
    assert_eq!(
        run(&mut w, OUTSIDE, &syn, 0, &mut c).0,
        Verdict::Forward { port: INSIDE }
    );
    let b = w.balancer_mut().expect("b");
    assert_eq!(b.conns().len(), 1);
    // SYN_RECV times out after 60 s (spec); nothing expires before.
    assert_eq!(b.housekeeping(59_000_000_000, 64), 0);
    assert_eq!(b.housekeeping(61_000_000_000, 64), 1);
    assert!(b.conns().is_empty());
    assert!(
        !b.events_mut().is_empty(),
        "create and delete were emitted for sync"
    );
}

#[test]
fn hinted_processing_equals_plain_processing_whatever_the_hint() {
    use tandem_core::conn::Hint;
    let client = (CLIENT, 41000);
    let frames = [
        (
            OUTSIDE,
            frame(OUT_MAC, CLIENT_MAC, &tcp(client, (VIP, 21), SYN, b"")),
        ),
        (
            INSIDE,
            frame(IN_MAC, RS_MACS[1], &tcp((RS[1], 21), client, SYN_ACK, b"")),
        ),
        (
            OUTSIDE,
            frame(OUT_MAC, CLIENT_MAC, &tcp(client, (VIP, 21), ACK, b"data")),
        ),
        (
            OUTSIDE,
            frame(
                OUT_MAC,
                CLIENT_MAC,
                &tcp((CLIENT, 41001), (VIP, 21), ACK, b""),
            ),
        ),
        (
            OUTSIDE,
            frame(OUT_MAC, CLIENT_MAC, &udp(client, (VIP, 53), b"q")),
        ),
    ];
    // Each frame's own hint, another frame's hint, and none: the same outcome every time.
    for variant in 0..3 {
        let (mut plain, mut hinted) = (worker(), worker());
        let (mut c1, mut c2) = (Counters::default(), Counters::default());
        for (i, (port, f)) in frames.iter().enumerate() {
            let (v1, out1) = run(&mut plain, *port, f, i as u64 * 10, &mut c1);
            let mut hint = match variant {
                0 => hinted.prefetch_hinted(f, |_| {}),
                1 => hinted.prefetch_hinted(&frames[(i + 1) % frames.len()].1, |_| {}),
                _ => Hint::NONE,
            };
            hinted.prefetch_entry_hinted(&mut hint, |_| {});
            let mut buf = VecBuf::new(f);
            let v2 = hinted.process_hinted(*port, &mut buf, hint, i as u64 * 10, &mut c2);
            assert_eq!(
                (v1, &out1[..]),
                (v2, buf.data()),
                "variant {variant}, frame {i}"
            );
        }
        assert_eq!(c1, c2, "variant {variant}");
    }
}

/// The scripts' services, as (port, UDP?): every forwarding method and both protocols.
const SCRIPT_SERVICES: [(u16, bool); 5] = [
    (80, false),
    (21, false),
    (53, true),
    (8080, false),
    (443, false),
];

/// A frame of a script: input port, frame, and what plain processing gave.
type Step = (usize, Vec<u8>, Verdict, Vec<u8>);

/// Hints computed for a whole burst before any of its frames is processed go stale within it:
/// a frame's connection may be created, closed, removed or recreated by an earlier frame of
/// the same burst (or of the burst before, when the glue pipelines). The outcome must still be
/// that of plain processing, frame by frame.
#[test]
fn stale_hints_of_a_burst_change_no_outcome() {
    use tandem_core::conn::Hint;
    const FIN_ACK: u8 = 0x11;
    const RST: u8 = 0x04;
    // Six clients on each service.
    let services = SCRIPT_SERVICES;
    let conns: Vec<((Ipv4Addr, u16), (u16, bool))> = (0..6u16)
        .flat_map(|c| services.map(|s| ((CLIENT, 42000 + c), s)))
        .collect();
    // The script, one step per round over every connection; the plain worker decides the
    // frames (a NAT reply comes from the real server its SYN was sent to).
    let mut plain = worker();
    let mut c1 = Counters::default();
    let mut reals: Vec<Option<(Ipv4Addr, u16)>> = vec![None; conns.len()];
    let mut script: Vec<Step> = Vec::new();
    let mut now = 0;
    // Two connections at a time through every step: a burst holds several frames of each.
    let order = (0..conns.len()).collect::<Vec<_>>();
    for pair in order.chunks(2) {
        for (step, &i) in (0..8).flat_map(|step| pair.iter().map(move |i| (step, i))) {
            let (client, (vport, is_udp)) = conns[i];
            let to_vip = |flags: u8| {
                if is_udp {
                    frame(OUT_MAC, CLIENT_MAC, &udp(client, (VIP, vport), b"q"))
                } else {
                    frame(OUT_MAC, CLIENT_MAC, &tcp(client, (VIP, vport), flags, b"d"))
                }
            };
            let from_real = |flags: u8, real: (Ipv4Addr, u16)| {
                let mac = RS_MACS[RS.iter().position(|r| *r == real.0).unwrap_or(0)];
                if is_udp {
                    frame(IN_MAC, mac, &udp(real, client, b"a"))
                } else {
                    frame(IN_MAC, mac, &tcp(real, client, flags, b""))
                }
            };
            let nat = matches!(vport, 80 | 21 | 53);
            let (port, f) = match (step + i) % 8 {
                0 | 6 => (OUTSIDE, to_vip(SYN)),
                1 | 3 if nat && reals[i].is_some() => {
                    (INSIDE, from_real(SYN_ACK, reals[i].unwrap_or((RS[0], 0))))
                }
                4 if i % 3 == 0 => (OUTSIDE, to_vip(RST)),
                5 => (OUTSIDE, to_vip(FIN_ACK)),
                _ => (OUTSIDE, to_vip(ACK)),
            };
            // Every 8 frames (a burst below) the table is expired, 3 s apart: closed
            // connections (10 s) go while their frames are still coming.
            if script.len() % 8 == 0 {
                if let Some(b) = plain.balancer_mut() {
                    b.housekeeping(now, 1024);
                }
            }
            now += 3_000_000_000;
            let (v, out) = run(&mut plain, port, &f, now, &mut c1);
            if port == OUTSIDE && matches!(v, Verdict::Forward { .. }) && out.len() >= 38 {
                let (dst, dport) = ip_dst(&out);
                if RS.contains(&dst) {
                    reals[i] = Some((dst, dport));
                }
            }
            script.push((port, f, v, out));
        }
    }
    // Bursts of 8 with every hint taken before the burst is processed, then the same with
    // the hints of each burst taken before the previous burst is processed (a pipeline).
    for lag in [0usize, 1] {
        let mut hinted = worker();
        let mut c2 = Counters::default();
        let bursts: Vec<&[Step]> = script.chunks(8).collect();
        let hints_of = |w: &Worker, burst: &[Step]| {
            let mut hints: Vec<Hint> = burst
                .iter()
                .map(|s| w.prefetch_hinted(&s.1, |_| {}))
                .collect();
            for h in &mut hints {
                w.prefetch_entry_hinted(h, |_| {});
            }
            hints
        };
        let mut next = hints_of(&hinted, bursts[0]);
        let mut now = 0;
        for (b, burst) in bursts.iter().enumerate() {
            let hints = if lag == 0 {
                hints_of(&hinted, burst)
            } else {
                // The next burst's hints are taken before this one is processed.
                let after = bursts.get(b + 1).map(|n| hints_of(&hinted, n));
                std::mem::replace(&mut next, after.unwrap_or_default())
            };
            if let Some(b) = hinted.balancer_mut() {
                b.housekeeping(now, 1024);
            }
            for ((port, f, v, out), hint) in burst.iter().zip(hints) {
                now += 3_000_000_000;
                let mut buf = VecBuf::new(f);
                let got = hinted.process_hinted(*port, &mut buf, hint, now, &mut c2);
                assert_eq!((got, buf.data()), (*v, &out[..]), "lag {lag}, burst {b}");
            }
        }
        assert_eq!(c1, c2, "lag {lag}");
    }
}

/// A hint whose slot names an entry that expired after the hint was taken (and whose slab
/// slot still holds the old key), or whose slot a new connection then took, must not find
/// it.
#[test]
fn a_hint_naming_an_expired_entry_finds_nothing() {
    let client = (CLIENT, 43000);
    let syn = frame(OUT_MAC, CLIENT_MAC, &tcp(client, (VIP, 21), SYN, b""));
    let ack = frame(OUT_MAC, CLIENT_MAC, &tcp(client, (VIP, 21), ACK, b"late"));
    let mut w = worker();
    let mut c = Counters::default();
    assert_eq!(
        run(&mut w, OUTSIDE, &syn, 1_000, &mut c).0,
        Verdict::Forward { port: INSIDE }
    );
    let mut hint = w.prefetch_hinted(&ack, |_| {});
    w.prefetch_entry_hinted(&mut hint, |_| {});
    // SYN_RECV's 60 s pass: the entry expires.
    let b = w.balancer_mut().expect("balancer");
    let removed: usize = (1..=70u64)
        .map(|s| b.housekeeping(s * 1_000_000_000, 64))
        .sum();
    assert_eq!(removed, 1);
    assert!(b.conns().is_empty());
    let mut buf = VecBuf::new(&ack);
    let v = w.process_hinted(OUTSIDE, &mut buf, hint, 71_000_000_000, &mut c);
    assert_eq!(v, Verdict::Drop(DropReason::TcpNoConnection));

    // The freed slot is taken by another client's connection: live, but not this key.
    let other = frame(
        OUT_MAC,
        CLIENT_MAC,
        &tcp((CLIENT, 43001), (VIP, 21), SYN, b""),
    );
    // (Scheduled and sent; its next hop's MAC has aged out by now: Resolve.)
    let (v, _) = run(&mut w, OUTSIDE, &other, 72_000_000_000, &mut c);
    assert!(matches!(v, Verdict::Resolve { port: INSIDE, .. }), "{v:?}");
    assert_eq!(w.balancer().expect("balancer").conns().len(), 1);
    let mut buf = VecBuf::new(&ack);
    let v = w.process_hinted(OUTSIDE, &mut buf, hint, 73_000_000_000, &mut c);
    assert_eq!(v, Verdict::Drop(DropReason::TcpNoConnection));
}

/// The prefetch pass packs a frame's key from its bytes; it must be the key the lookup
/// hashes (the flow the parse finds), or every hint would be ignored.
#[test]
fn the_prefetch_pass_packs_the_key_the_lookup_hashes() {
    use tandem_core::conn::Hint;
    let w = worker();
    let frames = [
        frame(
            OUT_MAC,
            CLIENT_MAC,
            &tcp((CLIENT, 41000), (VIP, 80), SYN, b""),
        ),
        frame(
            IN_MAC,
            RS_MACS[1],
            &tcp((RS[1], 8000), (CLIENT, 65535), ACK, b"x"),
        ),
        frame(OUT_MAC, CLIENT_MAC, &udp((FAR_CLIENT, 1), (VIP, 53), b"q")),
    ];
    for f in &frames {
        let flow = tandem_core::fwd::parse_flow(f).expect("parses").flow;
        let conns = w.balancer().expect("balancer").conns();
        let hint = w.prefetch_hinted(f, |_| {});
        assert!(hint.is_some());
        assert_eq!(hint, conns.hint(&flow), "{flow:?}");
    }
    // Anything but the common shape gives no hint.
    let mut arp = frames[0].clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(w.prefetch_hinted(&arp, |_| {}), Hint::NONE);
}

/// One frame of a fast-path script: which of the script's connections, whether it is the
/// real server's reply, its TCP flags, its TTL, and how it is spoiled.
#[derive(Debug, Clone, Copy)]
struct FastStep {
    conn: usize,
    reply: bool,
    flags: u8,
    ttl: u8,
    spoil: u8,
    /// Milliseconds since the step before (a long gap lets connections expire).
    gap_ms: u64,
    /// Before the frame, both workers switch between [`services`] and those plus a service on
    /// the inside VIP (which makes that address a VIP: replies to it are no NAT replies).
    reconfigure: bool,
}

/// The frame of `step` (`None`: a reply of a connection the table does not hold).
fn fast_frame(w: &Worker, step: &FastStep) -> Option<(usize, Vec<u8>)> {
    let (vport, is_udp) = SCRIPT_SERVICES[step.conn % SCRIPT_SERVICES.len()];
    // The last two clients hold the inside VIP's address: their replies are no NAT replies.
    let sport = 42000 + u16::try_from(step.conn).ok()?;
    let client = if step.conn >= 12 {
        (INSIDE_VIP, sport)
    } else {
        (CLIENT, sport)
    };
    let (port, mut p, dst_mac, src_mac) = if step.reply {
        let real = w
            .balancer()?
            .conns()
            .iter()
            .find(|(_, c)| c.client() == Endpoint::new(client.0, client.1) && !c.is_template())
            .map(|(_, c)| c.real())?;
        let mac = RS_MACS[RS.iter().position(|r| *r == real.addr).unwrap_or(0)];
        let r = (real.addr, real.port);
        let p = if is_udp {
            udp(r, client, b"answer")
        } else {
            tcp(r, client, step.flags, b"answer")
        };
        (INSIDE, p, IN_MAC, mac)
    } else {
        let p = if is_udp {
            udp(client, (VIP, vport), b"question")
        } else {
            tcp(client, (VIP, vport), step.flags, b"question")
        };
        (OUTSIDE, p, OUT_MAC, CLIENT_MAC)
    };
    p.ip.ttl = step.ttl;
    let mut f = frame(dst_mac, src_mac, &p);
    match step.spoil % 8 {
        // The IPv4 header checksum.
        1 => f[24] ^= 0x40,
        // Another host's MAC, or a multicast source.
        2 => f[5] ^= 0x10,
        3 => f[6] |= 1,
        // Truncated inside the transport header.
        4 => f.truncate(40),
        // A fragment (MF set).
        5 => {
            f[20] |= 0x20;
            let sum = u16::from_be_bytes([f[24], f[25]]);
            // RFC 1624: the header checksum follows the flag.
            let fixed = !(!sum)
                .wrapping_add(!0x2000u16)
                .wrapping_add(u16::from(!sum < 0x2000));
            f[24..26].copy_from_slice(&fixed.to_be_bytes());
        }
        _ => {}
    }
    Some((port, f))
}

fn fast_step() -> impl proptest::strategy::Strategy<Value = FastStep> {
    use proptest::prelude::*;
    (
        prop_oneof![3 => 0usize..12, 1 => 12usize..14],
        proptest::bool::weighted(0.3),
        prop_oneof![
            4 => Just(ACK),
            2 => Just(ACK | 0x08),
            2 => Just(SYN),
            1 => Just(SYN_ACK),
            1 => any::<u8>(),
        ],
        prop_oneof![6 => Just(64u8), 1 => Just(1u8), 1 => Just(0u8), 1 => Just(2u8)],
        prop_oneof![6 => Just(0u8), 4 => 1u8..8],
        prop_oneof![8 => 0u64..2_000, 1 => 50_000u64..400_000],
        proptest::bool::weighted(0.1),
    )
        .prop_map(
            |(conn, reply, flags, ttl, spoil, gap_ms, reconfigure)| FastStep {
                conn,
                reply,
                flags,
                ttl,
                spoil,
                gap_ms,
                reconfigure,
            },
        )
}

/// What a worker's state looks like from outside: its connections (as listed, templates
/// included), each destination's traffic, and the events it queued.
fn observed(w: &mut Worker, now: u64) -> (Vec<tandem_core::conn::ConnRecord>, Vec<String>) {
    let Some(b) = w.balancer_mut() else {
        return (Vec::new(), Vec::new());
    };
    let mut conns = Vec::new();
    b.list_conns(&Default::default(), usize::MAX, now, &mut conns);
    let mut rest: Vec<String> = b.dest_traffic().iter().map(|t| format!("{t:?}")).collect();
    while let Some(e) = b.events_mut().pop() {
        rest.push(format!("{e:?}"));
    }
    (conns, rest)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// The established fast path (taken when the prefetch passes found the frame's
    /// connection) gives what the general path gives for every frame: the same verdict,
    /// bytes and counters, and afterwards the same connections, timers, per-destination
    /// traffic and events. One worker processes bursts of up to 8 frames as the DPDK glue
    /// does (every hint taken before the burst is processed, so later frames' hints may be
    /// stale); the other processes each frame without a hint, which never takes the fast path.
    #[test]
    fn the_fast_path_changes_no_outcome(
        bursts in proptest::collection::vec(proptest::collection::vec(fast_step(), 1..8), 1..40)
    ) {
        use tandem_core::conn::Hint;
        let (mut fast, mut plain) = (worker(), worker());
        for w in [&mut fast, &mut plain] {
            w.neighbours_mut().learn(INSIDE_VIP, ROUTER_MAC, INSIDE, 0);
        }
        let (mut cf, mut cp) = (Counters::default(), Counters::default());
        let mut now = 1_000_000_000u64;
        let mut with_inside = services();
        with_inside.push(ServiceSpec {
            vip: Endpoint::new(INSIDE_VIP, 9999),
            ..service(Protocol::Tcp, 9999, SchedulerKind::Rr, vec![dest(0, 80, ForwardMethod::Nat, 1)])
        });
        let sets = [services(), with_inside]
            .map(|s| Arc::new(ServiceSet::new(&s, 64).expect("valid services")));
        let mut set = 0;
        for burst in &bursts {
            // The frames are decided before the burst, from the plain worker's table.
            let frames: Vec<(FastStep, usize, Vec<u8>)> = burst
                .iter()
                .filter_map(|s| fast_frame(&plain, s).map(|(p, f)| (*s, p, f)))
                .collect();
            let mut hints: Vec<Hint> =
                frames.iter().map(|(_, _, f)| fast.prefetch_hinted(f, |_| {})).collect();
            for h in &mut hints {
                fast.prefetch_entry_hinted(h, |_| {});
            }
            for ((step, port, f), hint) in frames.iter().zip(hints) {
                now += step.gap_ms * 1_000_000;
                set = (set + usize::from(step.reconfigure)) % 2;
                for w in [&mut fast, &mut plain] {
                    if let Some(b) = w.balancer_mut() {
                        if step.reconfigure {
                            b.set_services(Arc::clone(&sets[set])).expect("services apply");
                        }
                        b.housekeeping(now, 1024);
                    }
                }
                let mut a = VecBuf::new(f);
                let va = fast.process_hinted(*port, &mut a, hint, now, &mut cf);
                let mut b = VecBuf::new(f);
                let vb = plain.process_buf(*port, &mut b, now, &mut cp);
                proptest::prop_assert_eq!((va, a.data()), (vb, b.data()), "{:?}", step);
                proptest::prop_assert_eq!(&cf, &cp, "{:?}", step);
            }
            proptest::prop_assert_eq!(observed(&mut fast, now), observed(&mut plain, now));
        }
    }
}

/// A reply to a client whose address became a VIP (a service added on it after the
/// connection was made) is no NAT reply any more, on the fast path as on the general one.
#[test]
fn a_reply_to_an_address_that_became_a_vip_is_refused_on_the_fast_path_too() {
    use tandem_core::conn::Hint;
    let client = (INSIDE_VIP, 42012);
    let mut w = worker();
    w.neighbours_mut().learn(INSIDE_VIP, ROUTER_MAC, INSIDE, 0);
    let mut c = Counters::default();
    let to_vip = |flags| frame(OUT_MAC, CLIENT_MAC, &tcp(client, (VIP, 21), flags, b""));
    let reply = frame(IN_MAC, RS_MACS[1], &tcp((RS[1], 21), client, ACK, b"data"));
    let steps = [
        (OUTSIDE, to_vip(SYN)),
        (
            INSIDE,
            frame(IN_MAC, RS_MACS[1], &tcp((RS[1], 21), client, SYN_ACK, b"")),
        ),
        (OUTSIDE, to_vip(ACK)),
        (INSIDE, reply.clone()),
    ];
    for (port, f) in steps {
        assert!(matches!(
            run(&mut w, port, &f, 1, &mut c).0,
            Verdict::Forward { .. }
        ));
    }
    let hinted = |w: &mut Worker, c: &mut Counters| {
        let mut h = w.prefetch_hinted(&reply, |_| {});
        w.prefetch_entry_hinted(&mut h, |_| {});
        assert_ne!(h, Hint::NONE);
        let mut buf = VecBuf::new(&reply);
        w.process_hinted(INSIDE, &mut buf, h, 2, c)
    };
    // Hinted, the reply takes the fast path.
    assert!(matches!(
        hinted(&mut w, &mut c),
        Verdict::Forward { port: INSIDE }
    ));
    let mut specs = services();
    specs.push(ServiceSpec {
        vip: Endpoint::new(INSIDE_VIP, 9999),
        ..service(
            Protocol::Tcp,
            9999,
            SchedulerKind::Rr,
            vec![dest(0, 80, ForwardMethod::Nat, 1)],
        )
    });
    let set = Arc::new(ServiceSet::new(&specs, 64).expect("valid services"));
    if let Some(b) = w.balancer_mut() {
        b.set_services(set).expect("services apply");
    }
    assert_eq!(hinted(&mut w, &mut c), Verdict::Drop(DropReason::NoService));
}
