//! The responder's behaviour beyond the golden table: neighbour learning (RFC 826 merge
//! rule, gratuitous ARP, probes, a full table), sender checks, and echo details.

mod common;

use std::net::Ipv4Addr;

use common::*;
use tandem_core::golden::{INSIDE_MAC, OUTSIDE_MAC};
use tandem_core::wire::arp::{self, Operation};
use tandem_core::wire::{BROADCAST_MAC, ethernet, icmpv4, ipv4};
use tandem_core::{Counters, DropReason, Neighbour, Verdict};

const REQUEST: Operation = Operation::REQUEST;
const REPLY: Operation = Operation::REPLY;
const OTHER_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
const OTHER_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 60);

fn who_has(target: Ipv4Addr, sha: [u8; 6], spa: Ipv4Addr) -> Vec<u8> {
    arp_frame(BROADCAST_MAC, REQUEST, sha, spa, [0; 6], target)
}

fn neighbour(mac: [u8; 6], port: usize, learned_at: u64) -> Option<Neighbour> {
    Some(Neighbour {
        mac,
        port,
        learned_at,
    })
}

#[test]
fn arp_request_for_us_learns_the_sender() {
    let mut worker = golden_worker(16);
    let mut frame = who_has(OUTSIDE_IP, CLIENT_MAC, CLIENT_IP);
    let (verdict, counters) = run(&mut worker, 0, &mut frame, 7 * SECOND);
    assert_eq!(verdict, Verdict::Reply);
    assert_eq!(counters.neighbours_learned, 1);
    assert_eq!(counters.arp_replies, 1);
    assert_eq!(
        worker.neighbours().lookup(CLIENT_IP, 7 * SECOND).copied(),
        neighbour(CLIENT_MAC, 0, 7 * SECOND)
    );
    // Asking again refreshes without counting a new neighbour.
    let mut frame = who_has(VIP, CLIENT_MAC, CLIENT_IP);
    let (verdict, counters) = run(&mut worker, 0, &mut frame, 9 * SECOND);
    assert_eq!(verdict, Verdict::Reply);
    assert_eq!(counters.neighbours_learned, 0);
    assert_eq!(
        worker.neighbours().lookup(CLIENT_IP, 0).unwrap().learned_at,
        9 * SECOND
    );
}

#[test]
fn arp_for_someone_else_learns_nothing_but_refreshes_known_senders() {
    let mut worker = golden_worker(16);
    let mut frame = who_has(OTHER_IP, CLIENT_MAC, CLIENT_IP);
    let (verdict, counters) = run(&mut worker, 0, &mut frame, 0);
    assert_eq!(verdict, Verdict::Drop(DropReason::ArpNotForUs));
    assert_eq!(counters.neighbours_learned, 0);
    assert!(worker.neighbours().is_empty());

    let _ = run(
        &mut worker,
        0,
        &mut who_has(OUTSIDE_IP, CLIENT_MAC, CLIENT_IP),
        0,
    );
    // RFC 826 merge: the known sender moved to a new MAC; its request for someone else
    // still updates the entry.
    let mut frame = who_has(OTHER_IP, OTHER_MAC, CLIENT_IP);
    let (verdict, _) = run(&mut worker, 0, &mut frame, 5 * SECOND);
    assert_eq!(verdict, Verdict::Drop(DropReason::ArpNotForUs));
    assert_eq!(
        worker.neighbours().lookup(CLIENT_IP, 5 * SECOND).copied(),
        neighbour(OTHER_MAC, 0, 5 * SECOND)
    );
}

#[test]
fn gratuitous_arp_refreshes_a_known_neighbour_only() {
    let mut worker = golden_worker(16);
    // Unknown sender announcing itself: nothing learned.
    let mut frame = arp_frame(
        BROADCAST_MAC,
        REQUEST,
        OTHER_MAC,
        OTHER_IP,
        [0; 6],
        OTHER_IP,
    );
    let (verdict, _) = run(&mut worker, 0, &mut frame, 0);
    assert_eq!(verdict, Verdict::Drop(DropReason::ArpNotForUs));
    assert!(worker.neighbours().is_empty());

    let _ = run(
        &mut worker,
        0,
        &mut who_has(OUTSIDE_IP, CLIENT_MAC, CLIENT_IP),
        0,
    );
    // A gratuitous reply (RFC 5227 §3 announcement) after a NIC swap.
    let mut frame = arp_frame(
        BROADCAST_MAC,
        REPLY,
        OTHER_MAC,
        CLIENT_IP,
        BROADCAST_MAC,
        CLIENT_IP,
    );
    let (verdict, counters) = run(&mut worker, 0, &mut frame, 3 * SECOND);
    assert_eq!(verdict, Verdict::Drop(DropReason::ArpNotForUs));
    assert_eq!(counters.neighbours_learned, 0);
    assert_eq!(
        worker.neighbours().lookup(CLIENT_IP, 3 * SECOND).copied(),
        neighbour(OTHER_MAC, 0, 3 * SECOND)
    );
}

#[test]
fn arp_reply_to_us_is_consumed_and_learned() {
    let mut worker = golden_worker(16);
    let server = Ipv4Addr::new(172, 16, 0, 2);
    let mut frame = arp_frame(INSIDE_MAC, REPLY, OTHER_MAC, server, INSIDE_MAC, INSIDE_IP);
    let before = frame.clone();
    let (verdict, counters) = run(&mut worker, 1, &mut frame, SECOND);
    assert_eq!(verdict, Verdict::Consumed);
    assert_eq!(frame, before);
    assert_eq!(counters.neighbours_learned, 1);
    assert_eq!(counters.total_drops(), 0);
    assert_eq!(
        worker.neighbours().lookup(server, SECOND).copied(),
        neighbour(OTHER_MAC, 1, SECOND)
    );
}

#[test]
fn arp_probe_for_our_address_is_answered_without_learning() {
    // RFC 5227 §2.1.1: sender address 0.0.0.0.
    let mut worker = golden_worker(16);
    let mut frame = who_has(VIP, CLIENT_MAC, Ipv4Addr::UNSPECIFIED);
    let (verdict, counters) = run(&mut worker, 0, &mut frame, 0);
    assert_eq!(verdict, Verdict::Reply);
    assert_eq!(counters.neighbours_learned, 0);
    assert!(worker.neighbours().is_empty());
    let eth = ethernet::Frame::new_checked(&frame[..]).unwrap();
    assert_eq!(eth.dst_addr(), CLIENT_MAC);
    let reply = arp::Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(reply.operation(), REPLY);
    assert_eq!(reply.sender_hardware_addr(), OUTSIDE_MAC);
    assert_eq!(reply.sender_protocol_addr(), VIP);
    assert_eq!(reply.target_hardware_addr(), CLIENT_MAC);
    assert_eq!(reply.target_protocol_addr(), Ipv4Addr::UNSPECIFIED);
}

#[test]
fn arp_claiming_our_address_is_a_conflict() {
    let mut worker = golden_worker(16);
    let mut frame = arp_frame(BROADCAST_MAC, REQUEST, OTHER_MAC, VIP, [0; 6], VIP);
    let (verdict, _) = run(&mut worker, 0, &mut frame, 0);
    assert_eq!(verdict, Verdict::Drop(DropReason::ArpAddressConflict));
    assert!(worker.neighbours().lookup(VIP, 0).is_none());
}

#[test]
fn malformed_arp() {
    let mut worker = golden_worker(16);
    // Opcode 3 (RARP request).
    let mut frame = arp_frame(
        BROADCAST_MAC,
        Operation(3),
        CLIENT_MAC,
        CLIENT_IP,
        [0; 6],
        VIP,
    );
    assert_eq!(
        run(&mut worker, 0, &mut frame, 0).0,
        Verdict::Drop(DropReason::MalformedArp)
    );
    // A group sender MAC (RFC 1812 §3.3.2), in a frame from a unicast source.
    let mut frame = who_has(VIP, [0x01, 0, 0x5e, 0, 0, 1], CLIENT_IP);
    frame[6..12].copy_from_slice(&CLIENT_MAC);
    assert_eq!(
        run(&mut worker, 0, &mut frame, 0).0,
        Verdict::Drop(DropReason::MalformedArp)
    );
    assert!(worker.neighbours().is_empty());
}

#[test]
fn a_full_neighbour_table_is_counted_and_the_request_still_answered() {
    let mut worker = golden_worker(2);
    for last in 1..=3u8 {
        let sender = Ipv4Addr::new(203, 0, 113, last);
        let mut frame = who_has(OUTSIDE_IP, [2, 0, 0, 0, 0, last], sender);
        let (verdict, counters) = run(&mut worker, 0, &mut frame, 0);
        assert_eq!(verdict, Verdict::Reply);
        assert_eq!(counters.neighbours_learned, u64::from(last <= 2));
        assert_eq!(counters.neighbour_table_full, u64::from(last == 3));
    }
    assert_eq!(worker.neighbours().len(), 2);
    // Once the first two have aged out (60 s), the third gets in.
    let mut frame = who_has(
        OUTSIDE_IP,
        [2, 0, 0, 0, 0, 3],
        Ipv4Addr::new(203, 0, 113, 3),
    );
    let (_, counters) = run(&mut worker, 0, &mut frame, 60 * SECOND);
    assert_eq!(counters.neighbours_learned, 1);
    assert_eq!(worker.neighbours().len(), 1);
}

#[test]
fn echo_reply_rewrites_exactly_what_it_should() {
    let mut worker = golden_worker(16);
    // Odd-length data exercises the checksum's padding octet.
    let mut frame = echo_frame(
        INSIDE_MAC,
        OTHER_MAC,
        Ipv4Addr::new(172, 16, 0, 9),
        INSIDE_IP,
        b"odd",
    );
    let request = frame.clone();
    let (verdict, counters) = run(&mut worker, 1, &mut frame, 0);
    assert_eq!(verdict, Verdict::Reply);
    assert_eq!(counters.icmp_echo_replies, 1);
    assert_eq!(recomputed_checksums(&frame), (Some(true), Some(true)));

    let eth = ethernet::Frame::new_checked(&frame[..]).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (OTHER_MAC, INSIDE_MAC));
    let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
    assert_eq!(ip.src_addr(), INSIDE_IP);
    assert_eq!(ip.dst_addr(), Ipv4Addr::new(172, 16, 0, 9));
    assert_eq!(ip.ttl(), 64);
    assert_eq!(ip.ident(), 0x4242);
    let icmp = icmpv4::Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.msg_type(), icmpv4::Message::ECHO_REPLY);
    assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x0bad, 1));
    assert_eq!(icmp.data(), b"odd");
    // Nothing else moved: only MACs, TTL, IP checksum, addresses, ICMP type and checksum.
    let changed: Vec<usize> = (0..frame.len())
        .filter(|&i| frame[i] != request[i])
        .collect();
    assert!(
        changed
            .iter()
            .all(|i| matches!(i, 0..12 | 22 | 24..34 | 34 | 36..38)),
        "{changed:?}"
    );
}

#[test]
fn icmp_that_is_not_an_echo_request() {
    let mut worker = golden_worker(16);
    let mut frame = echo_frame(OUTSIDE_MAC, CLIENT_MAC, CLIENT_IP, VIP, b"");
    // Turn it into an echo reply (type 0) with a right checksum.
    frame[34] = 0;
    frame[36..38].copy_from_slice(&[0, 0]);
    let cksum = naive_checksum(&frame[34..]);
    frame[36..38].copy_from_slice(&cksum.to_be_bytes());
    assert_eq!(
        run(&mut worker, 0, &mut frame, 0).0,
        Verdict::Drop(DropReason::UnhandledIcmp)
    );
    // An echo request with code 1.
    let mut frame = echo_frame(OUTSIDE_MAC, CLIENT_MAC, CLIENT_IP, VIP, b"");
    frame[35] = 1;
    frame[36..38].copy_from_slice(&[0, 0]);
    let cksum = naive_checksum(&frame[34..]);
    frame[36..38].copy_from_slice(&cksum.to_be_bytes());
    assert_eq!(
        run(&mut worker, 0, &mut frame, 0).0,
        Verdict::Drop(DropReason::MalformedIcmp)
    );
}

#[test]
fn sources_nobody_may_answer() {
    let mut worker = golden_worker(16);
    for src in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::new(127, 0, 0, 1),
    ] {
        let mut frame = echo_frame(OUTSIDE_MAC, CLIENT_MAC, src, VIP, b"x");
        assert_eq!(
            run(&mut worker, 0, &mut frame, 0).0,
            Verdict::Drop(DropReason::MartianSource),
            "{src}"
        );
    }
    let mut frame = echo_frame(OUTSIDE_MAC, [0x01, 0, 0x5e, 0, 0, 1], CLIENT_IP, VIP, b"x");
    assert_eq!(
        run(&mut worker, 0, &mut frame, 0).0,
        Verdict::Drop(DropReason::InvalidSourceMac)
    );
}

#[test]
fn ports_and_ethertypes_the_core_does_not_know() {
    let mut worker = golden_worker(16);
    let mut frame = echo_frame(OUTSIDE_MAC, CLIENT_MAC, CLIENT_IP, VIP, b"x");
    assert_eq!(
        run(&mut worker, 2, &mut frame, 0).0,
        Verdict::Drop(DropReason::UnknownPort)
    );
    // The VIP is not answered on the inside port, whose MAC this frame is not for anyway.
    assert_eq!(
        run(&mut worker, 1, &mut frame, 0).0,
        Verdict::Drop(DropReason::NotForUsMac)
    );
    frame[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(
        run(&mut worker, 0, &mut frame, 0).0,
        Verdict::Drop(DropReason::UnsupportedEthertype)
    );
}

#[test]
fn counters_add_up_over_a_sequence() {
    let mut worker = golden_worker(16);
    let mut counters = Counters::default();
    let frames = [
        who_has(OUTSIDE_IP, CLIENT_MAC, CLIENT_IP),
        echo_frame(OUTSIDE_MAC, CLIENT_MAC, CLIENT_IP, VIP, b"abc"),
        who_has(OTHER_IP, CLIENT_MAC, CLIENT_IP),
        vec![0; 10],
    ];
    let mut bytes = 0;
    for frame in &frames {
        let _ = worker.process(0, &mut frame.clone(), 0, &mut counters);
        bytes += frame.len() as u64;
    }
    assert_eq!(counters.rx_packets, 4);
    assert_eq!(counters.rx_bytes, bytes);
    assert_eq!(counters.arp_replies, 1);
    assert_eq!(counters.icmp_echo_replies, 1);
    assert_eq!(counters.dropped(DropReason::ArpNotForUs), 1);
    assert_eq!(counters.dropped(DropReason::TruncatedEthernet), 1);
    assert_eq!(counters.total_drops(), 2);
}

/// A UDP datagram from the client to `dst:dst_port`, IPv4 checksum right.
fn udp_to(dst: Ipv4Addr, dst_port: u16) -> Vec<u8> {
    let mut frame = echo_frame(OUTSIDE_MAC, CLIENT_MAC, CLIENT_IP, dst, &[0; 4]);
    let mut ip = ipv4::Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN..]);
    ip.set_protocol(ipv4::Protocol::UDP);
    ip.fill_checksum();
    let udp = &mut frame[ethernet::HEADER_LEN + ipv4::HEADER_LEN..];
    udp[..2].copy_from_slice(&7000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&12u16.to_be_bytes());
    udp[6..8].fill(0);
    frame
}

#[test]
fn the_local_udp_port_of_a_port_address_goes_to_the_glue_uncounted() {
    let director = tandem_core::golden::director()
        .expect("valid")
        .with_local_udp_port(5405);
    let mut worker = tandem_core::Worker::new(
        std::sync::Arc::new(director),
        16,
        tandem_core::neigh::DEFAULT_MAX_AGE,
    );
    let (verdict, counters) = run(&mut worker, 0, &mut udp_to(OUTSIDE_IP, 5405), 0);
    assert_eq!(verdict, Verdict::Local);
    assert_eq!(counters.total_drops(), 0);
    // Another port of the port address, or the local port of a VIP: not the glue's.
    for (dst, port) in [(OUTSIDE_IP, 5406), (VIP, 5405)] {
        let (verdict, counters) = run(&mut worker, 0, &mut udp_to(dst, port), 0);
        assert_eq!(verdict, Verdict::Drop(DropReason::UnsupportedIpProtocol));
        assert_eq!(counters.total_drops(), 1);
    }
    // Without a local port, the same datagram is an unsupported protocol, as before.
    let mut plain = golden_worker(16);
    let (verdict, _) = run(&mut plain, 0, &mut udp_to(OUTSIDE_IP, 5405), 0);
    assert_eq!(verdict, Verdict::Drop(DropReason::UnsupportedIpProtocol));
}
