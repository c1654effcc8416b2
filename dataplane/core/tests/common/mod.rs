//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use tandem_core::golden;
use tandem_core::wire::{ethernet, icmpv4, ipv4};
use tandem_core::{Counters, Worker};

pub const SECOND: u64 = 1_000_000_000;

/// A worker for the golden configuration.
pub fn golden_worker(neighbour_capacity: usize) -> Worker {
    Worker::new(
        Arc::new(golden::director().expect("the golden configuration is valid")),
        neighbour_capacity,
        tandem_core::neigh::DEFAULT_MAX_AGE,
    )
}

/// The Internet checksum the slow way, word by word (RFC 1071 §1), independent of the crate.
pub fn naive_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in data.chunks(2) {
        sum += u32::from(pair[0]) << 8 | u32::from(pair.get(1).copied().unwrap_or(0));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded to 16 bits")
}

/// The checksum stored at `at` equals a full recomputation over `data` with it zeroed.
pub fn stored_equals_recomputed(data: &[u8], at: usize) -> bool {
    let mut copy = data.to_vec();
    copy[at] = 0;
    copy[at + 1] = 0;
    u16::from_be_bytes([data[at], data[at + 1]]) == naive_checksum(&copy)
}

/// What a frame's checksums say when recomputed from scratch: `(ipv4, icmp)`, each `None`
/// when the frame has no such complete header.
pub fn recomputed_checksums(frame: &[u8]) -> (Option<bool>, Option<bool>) {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return (None, None);
    };
    if eth.ethertype() != ethernet::EtherType::IPV4 {
        return (None, None);
    }
    let Ok(ip) = ipv4::Packet::new_checked(eth.payload()) else {
        return (None, None);
    };
    let header = &eth.payload()[..usize::from(ip.header_len())];
    let ip_ok = stored_equals_recomputed(header, 10);
    if ip.protocol() != ipv4::Protocol::ICMP || ip.payload().len() < icmpv4::HEADER_LEN {
        return (Some(ip_ok), None);
    }
    (Some(ip_ok), Some(stored_equals_recomputed(ip.payload(), 2)))
}

/// Runs one frame through a worker with fresh counters.
pub fn run(
    worker: &mut Worker,
    port: usize,
    frame: &mut [u8],
    now: u64,
) -> (tandem_core::Verdict, Counters) {
    let mut counters = Counters::default();
    let verdict = worker.process(port, frame, now, &mut counters);
    (verdict, counters)
}

pub const CLIENT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
pub const CLIENT_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(203, 0, 113, 50);
pub const OUTSIDE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(203, 0, 113, 11);
pub const INSIDE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(172, 16, 0, 251);
pub const VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(203, 0, 113, 10);

/// An Ethernet/IPv4 ARP frame, unpadded (42 bytes).
pub fn arp_frame(
    eth_dst: [u8; 6],
    operation: tandem_core::wire::arp::Operation,
    sha: [u8; 6],
    spa: std::net::Ipv4Addr,
    tha: [u8; 6],
    tpa: std::net::Ipv4Addr,
) -> Vec<u8> {
    use tandem_core::wire::arp;
    let mut frame = vec![0u8; ethernet::HEADER_LEN + arp::PACKET_LEN];
    let mut eth = ethernet::Frame::new_unchecked(&mut frame[..]);
    eth.set_dst_addr(eth_dst);
    eth.set_src_addr(sha);
    eth.set_ethertype(ethernet::EtherType::ARP);
    let mut packet = arp::Packet::new_unchecked(eth.payload_mut());
    packet.set_ethernet_ipv4();
    packet.set_operation(operation);
    packet.set_sender_hardware_addr(sha);
    packet.set_sender_protocol_addr(spa);
    packet.set_target_hardware_addr(tha);
    packet.set_target_protocol_addr(tpa);
    frame
}

/// An ICMP echo request frame with right checksums, TTL 50, no options.
pub fn echo_frame(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    data: &[u8],
) -> Vec<u8> {
    let icmp_len = icmpv4::HEADER_LEN + data.len();
    let ip_len = ipv4::HEADER_LEN + icmp_len;
    let mut frame = vec![0u8; ethernet::HEADER_LEN + ip_len];
    let mut eth = ethernet::Frame::new_unchecked(&mut frame[..]);
    eth.set_dst_addr(eth_dst);
    eth.set_src_addr(eth_src);
    eth.set_ethertype(ethernet::EtherType::IPV4);
    let mut ip = ipv4::Packet::new_unchecked(eth.payload_mut());
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len(u16::try_from(ip_len).expect("test frames are small"));
    ip.set_ident(0x4242);
    ip.set_ttl(50);
    ip.set_protocol(ipv4::Protocol::ICMP);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
    let mut icmp = icmpv4::Packet::new_unchecked(ip.payload_mut());
    icmp.set_msg_type(icmpv4::Message::ECHO_REQUEST);
    icmp.set_echo_ident(0x0bad);
    icmp.set_echo_seq_no(1);
    icmp.data_mut().copy_from_slice(data);
    icmp.fill_checksum();
    frame
}
