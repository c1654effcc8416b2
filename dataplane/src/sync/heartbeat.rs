//! Heartbeats over the service network (the second path of docs/failover.md, VRRP-like): an
//! encoded `HeartbeatMessage` in a UDP datagram from this director's own address on a port to
//! the peer director's address on the same subnet, both on `[sync] heartbeat_port`, behind a
//! 4-byte magic so that nothing else sent to that port is taken for one.
//!
//! The worker builds the frame into an mbuf (no allocation) and recognises received ones on
//! its drop path (UDP to the director's own address is not load-balanced), copying the payload
//! into a fixed-size [`super::HbFrame`].

use std::net::Ipv4Addr;

use tandem_core::MacAddr;
use tandem_core::wire::ethernet::{self, EtherType};
use tandem_core::wire::{ipv4, udp};

/// The first bytes of every heartbeat payload: "TDH1".
pub const MAGIC: [u8; 4] = *b"TDH1";

/// Ethernet + IPv4 + UDP + magic.
pub const OVERHEAD: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN + MAGIC.len();

/// The addresses of one heartbeat datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addressing {
    /// This director's MAC on the port.
    pub src_mac: MacAddr,
    /// The peer's MAC.
    pub dst_mac: MacAddr,
    /// This director's address on the port.
    pub src: Ipv4Addr,
    /// The peer director's address.
    pub dst: Ipv4Addr,
    /// Source and destination UDP port.
    pub port: u16,
}

/// Writes the frame carrying `payload` into `out` and returns its length (at least 60, the
/// Ethernet minimum), or `None` if `out` is too short.
pub fn build(a: &Addressing, ident: u16, payload: &[u8], out: &mut [u8]) -> Option<usize> {
    let udp_len = udp::HEADER_LEN + MAGIC.len() + payload.len();
    let ip_len = ipv4::HEADER_LEN + udp_len;
    let len = (ethernet::HEADER_LEN + ip_len).max(60);
    let frame = out.get_mut(..len)?;
    frame.fill(0);
    let mut eth = ethernet::Frame::new_unchecked(&mut *frame);
    eth.set_dst_addr(a.dst_mac);
    eth.set_src_addr(a.src_mac);
    eth.set_ethertype(EtherType::IPV4);
    let ip_bytes = frame.get_mut(ethernet::HEADER_LEN..ethernet::HEADER_LEN + ip_len)?;
    let mut ip = ipv4::Packet::new_unchecked(&mut *ip_bytes);
    ip.set_version(4);
    ip.set_header_len(20); // bytes: no options
    ip.set_total_len(u16::try_from(ip_len).ok()?);
    ip.set_ident(ident);
    ip.set_dont_frag(true);
    ip.set_ttl(tandem_core::director::DEFAULT_TTL);
    ip.set_protocol(ipv4::Protocol::UDP);
    ip.set_src_addr(a.src);
    ip.set_dst_addr(a.dst);
    ip.fill_checksum();
    let mut u = udp::Packet::new_unchecked(ip.payload_mut());
    u.set_src_port(a.port);
    u.set_dst_port(a.port);
    u.set_len(u16::try_from(udp_len).ok()?);
    let body = u.payload_mut();
    body.get_mut(..MAGIC.len())?.copy_from_slice(&MAGIC);
    body.get_mut(MAGIC.len()..MAGIC.len() + payload.len())?
        .copy_from_slice(payload);
    u.fill_checksum(a.src, a.dst);
    Some(len)
}

/// The payload of `frame` if it is a heartbeat from `peer` to `own` on `port`, with valid
/// checksums; `None` for anything else.
pub fn parse(frame: &[u8], own: Ipv4Addr, peer: Ipv4Addr, port: u16) -> Option<&[u8]> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    if eth.ethertype() != EtherType::IPV4 {
        return None;
    }
    let ip = ipv4::Packet::new_checked(frame.get(ethernet::HEADER_LEN..)?).ok()?;
    if ip.protocol() != ipv4::Protocol::UDP
        || ip.src_addr() != peer
        || ip.dst_addr() != own
        || ip.is_fragment()
        || usize::from(ip.header_len()) != ipv4::HEADER_LEN
        || !ip.verify_checksum()
    {
        return None;
    }
    let start = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
    let end = ethernet::HEADER_LEN + usize::from(ip.total_len());
    let u = udp::Packet::new_checked(frame.get(start..end)?).ok()?;
    if u.dst_port() != port || u.src_port() != port || !u.verify_checksum(peer, own) {
        return None;
    }
    let udp_end = start + usize::from(u.len());
    let body = frame.get(start + udp::HEADER_LEN..udp_end)?;
    body.strip_prefix(&MAGIC[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Addressing = Addressing {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src: Ipv4Addr::new(10, 0, 0, 1),
        dst: Ipv4Addr::new(10, 0, 0, 2),
        port: 7471,
    };

    #[test]
    fn a_built_heartbeat_parses_back_only_for_its_addressee() {
        let mut buf = [0u8; 256];
        let n = build(&A, 7, b"hello", &mut buf).unwrap();
        assert_eq!(n, 60);
        let f = &buf[..n];
        assert_eq!(parse(f, A.dst, A.src, A.port), Some(&b"hello"[..]));
        assert_eq!(parse(f, A.src, A.dst, A.port), None);
        assert_eq!(parse(f, A.dst, A.src, A.port + 1), None);
        let mut bad = buf;
        bad[n - 20] ^= 1; // inside the payload: UDP checksum fails
        assert_eq!(parse(&bad[..n], A.dst, A.src, A.port), None);
        let big = [0xabu8; 150];
        let n = build(&A, 8, &big, &mut buf).unwrap();
        assert_eq!(n, OVERHEAD + 150);
        assert_eq!(parse(&buf[..n], A.dst, A.src, A.port), Some(&big[..]));
        assert!(build(&A, 9, &big, &mut [0u8; 100]).is_none());
        for cut in 0..n {
            let _ = parse(&buf[..cut], A.dst, A.src, A.port);
        }
    }
}
