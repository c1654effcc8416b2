//! Bounds-checked helpers shared by the flow parser and the transforms.

use std::net::Ipv4Addr;

use super::{FwdError, MacRewrite};
use crate::lb::{self, Endpoint};
use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::icmpv4::Message;
use crate::wire::ipv4;

/// Where the IPv4 header starts in a frame: right after an untagged Ethernet header.
pub(super) const L3: usize = ethernet::HEADER_LEN;

/// The length of an untagged Ethernet header plus an IPv4 header without options: where the
/// transport header starts in the common shape, which the fast paths read at fixed offsets.
pub(super) const HEAD: usize = L3 + ipv4::HEADER_LEN;

/// Offsets in a frame of the IPv4 fields the transforms rewrite.
pub(super) const TTL_AT: usize = L3 + 8;
pub(super) const IP_CKSUM_AT: usize = L3 + 10;

/// Where the parts of an IPv4 frame lie, once their lengths were checked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    /// Offset of the transport header (or ICMP message) in the frame.
    pub l4: usize,
    /// End of the datagram in the frame ("Total Length"; Ethernet padding lies beyond).
    pub end: usize,
    pub header_len: usize,
    pub total_len: u16,
    pub protocol: ipv4::Protocol,
    pub ttl: u8,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// A fragment offset other than zero: no transport header here.
    pub non_first_fragment: bool,
}

/// Checks the Ethernet and IPv4 lengths of `frame` (not the IPv4 checksum).
#[inline]
pub(super) fn locate_ipv4(frame: &[u8]) -> Result<Layout, FwdError> {
    // The common shape at fixed offsets: IPv4 without options, its lengths right. Anything
    // else, and every error, is left to the general checks.
    if let Some(h) = frame.first_chunk::<HEAD>() {
        let total_len = u16::from_be_bytes([h[L3 + 2], h[L3 + 3]]);
        let end = L3 + usize::from(total_len);
        if h[12..14] == [0x08, 0x00] && h[L3] == 0x45 && end >= HEAD && end <= frame.len() {
            let flags_offset = u16::from_be_bytes([h[L3 + 6], h[L3 + 7]]);
            return Ok(Layout {
                l4: HEAD,
                end,
                header_len: ipv4::HEADER_LEN,
                total_len,
                protocol: ipv4::Protocol(h[L3 + 9]),
                ttl: h[TTL_AT],
                dont_frag: flags_offset & 0x4000 != 0,
                more_frags: flags_offset & 0x2000 != 0,
                non_first_fragment: flags_offset & 0x1fff != 0,
            });
        }
    }
    locate_ipv4_general(frame)
}

/// [`locate_ipv4`] for any header length, and every error.
fn locate_ipv4_general(frame: &[u8]) -> Result<Layout, FwdError> {
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| FwdError::TruncatedEthernet)?;
    if eth.ethertype() != EtherType::IPV4 {
        return Err(FwdError::UnsupportedEthertype);
    }
    let ip = ipv4::Packet::new_checked(eth.payload()).map_err(|_| FwdError::MalformedIpv4)?;
    let header_len = usize::from(ip.header_len());
    Ok(Layout {
        l4: L3 + header_len,
        end: L3 + usize::from(ip.total_len()),
        header_len,
        total_len: ip.total_len(),
        protocol: ip.protocol(),
        ttl: ip.ttl(),
        dont_frag: ip.dont_frag(),
        more_frags: ip.more_frags(),
        non_first_fragment: ip.frag_offset() != 0,
    })
}

/// [`FwdError::TtlExceeded`] unless the datagram may be forwarded one more hop: its TTL must
/// be above 1, since it reaches zero here otherwise (RFC 1812 §5.3.1).
pub(super) fn check_ttl(layout: &Layout) -> Result<(), FwdError> {
    if layout.ttl <= 1 {
        return Err(FwdError::TtlExceeded);
    }
    Ok(())
}

/// The TTL after forwarding (one less; a TTL of 0, which [`check_ttl`] refuses, stays 0) and
/// the term its change adds to the IPv4 header checksum: [`checksum::diff16`] of the
/// TTL/protocol word, in which the protocol byte cancels out.
#[inline]
pub(super) const fn decremented_ttl(ttl: u8) -> (u8, u64) {
    let new = ttl.saturating_sub(1);
    (new, 0xffff - (((ttl - new) as u64) << 8))
}

/// Decrements the TTL (checked by [`check_ttl`]) and updates the header checksum for the
/// TTL/protocol word (RFC 1624 eqn. 3; RFC 1141 for this very case).
pub(super) fn decrement_ttl(ip: &mut ipv4::Packet<&mut [u8]>) {
    let (new_ttl, term) = decremented_ttl(ip.ttl());
    ip.set_ttl(new_ttl);
    ip.set_checksum(checksum::apply(ip.checksum(), term));
}

/// Decrements the TTL of the IPv4 header in `head` (a frame's first [`HEAD`] bytes at least)
/// and updates its checksum, in one RFC 1624 update, for that and for `more`: the terms of the
/// header's other changes (already written) in **native byte order** (`from_ne_bytes` words,
/// see [`checksum`]'s byte order note). The same bytes as [`decrement_ttl`] after updates
/// for those changes.
#[inline]
pub(super) fn decrement_ttl_fixed<const N: usize>(head: &mut [u8; N], more: u64) {
    const { assert!(N >= HEAD) };
    // diff16 of the TTL/protocol word read in native order: the TTL is its first byte. A TTL
    // of 0 stays 0 (the word does not change: ~m + m = 0xffff).
    let ttl_weight = u64::from(u16::from_ne_bytes([1, 0]));
    let term = match head[TTL_AT] {
        0 => 0xffff,
        ttl => {
            head[TTL_AT] = ttl - 1;
            0xffff - ttl_weight
        }
    };
    let old = u16::from_ne_bytes([head[IP_CKSUM_AT], head[IP_CKSUM_AT + 1]]);
    let new = checksum::apply(old, term + more);
    head[IP_CKSUM_AT..IP_CKSUM_AT + 2].copy_from_slice(&new.to_ne_bytes());
}

/// Sets the Ethernet source and destination.
pub(super) fn set_macs(frame: &mut [u8], mac: MacRewrite) {
    let mut eth = ethernet::Frame::new_unchecked(frame);
    eth.set_src_addr(mac.src);
    eth.set_dst_addr(mac.dst);
}

/// [`set_macs`] on a frame's first `N` bytes (`N` ≥ 12), from [`MacRewrite::bytes`].
#[inline(always)]
pub(super) fn set_macs_fixed<const N: usize>(head: &mut [u8; N], macs: [u8; 12]) {
    const { assert!(N >= 12) };
    head[..12].copy_from_slice(&macs);
}

/// ICMP messages that report a problem with a datagram and quote its IP header and first
/// 64 bits (RFC 792): destination unreachable, source quench, redirect, time exceeded,
/// parameter problem.
pub(super) const fn is_icmp_error(message: Message) -> bool {
    matches!(message.0, 3 | 4 | 5 | 11 | 12)
}

/// The datagram quoted by an ICMP error, once its header was checked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Quote {
    /// Its IP header length; the transport header starts there.
    pub header_len: usize,
    pub proto: lb::Protocol,
    pub src: Endpoint,
    pub dst: Endpoint,
}

/// Checks the datagram an ICMP error quotes (the ICMP data after the 8-byte header): a whole
/// IPv4 header plus at least the 8 bytes RFC 792 promises, not a non-first fragment, TCP or
/// UDP. Its "Total Length" is not checked against the quote, which is cut short by design.
pub(super) fn parse_quote(quote: &[u8]) -> Result<Quote, FwdError> {
    if quote.len() < ipv4::HEADER_LEN {
        return Err(FwdError::IcmpQuoteUnusable);
    }
    let ip = ipv4::Packet::new_unchecked(quote);
    let header_len = usize::from(ip.header_len());
    if ip.version() != 4 || header_len < ipv4::HEADER_LEN || quote.len() < header_len + 8 {
        return Err(FwdError::IcmpQuoteUnusable);
    }
    if ip.frag_offset() != 0 {
        return Err(FwdError::IcmpQuoteUnusable);
    }
    let proto = lb::Protocol::from_number(ip.protocol().0).ok_or(FwdError::IcmpQuoteUnusable)?;
    let port = |at: usize| u16::from_be_bytes([quote[header_len + at], quote[header_len + at + 1]]);
    Ok(Quote {
        header_len,
        proto,
        src: Endpoint::new(ip.src_addr(), port(0)),
        dst: Endpoint::new(ip.dst_addr(), port(2)),
    })
}

/// Reads a big-endian `u16` at `at` (the caller has checked the length).
pub(super) fn get16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// Writes a big-endian `u16` at `at` (the caller has checked the length).
pub(super) fn put16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Reads an IPv4 address at `at` (the caller has checked the length).
pub(super) fn get_addr(data: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(data[at], data[at + 1], data[at + 2], data[at + 3])
}

/// Reads a big-endian `u32` at `at` (the caller has checked the length).
pub(super) fn get32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// Writes a big-endian `u32` at `at` (the caller has checked the length).
pub(super) fn put32(data: &mut [u8], at: usize, value: u32) {
    data[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// Writes an IPv4 address at `at` (the caller has checked the length).
pub(super) fn put_addr(data: &mut [u8], at: usize, addr: Ipv4Addr) {
    data[at..at + 4].copy_from_slice(&addr.octets());
}
