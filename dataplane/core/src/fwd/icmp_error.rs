//! ICMP error messages the director originates about a datagram it will not forward
//! (RFC 792; RFC 1812 §4.3.2 for what a router must and must not do).

use std::net::Ipv4Addr;

use super::FwdError;
use super::edit::{L3, locate_ipv4};
use crate::director::DEFAULT_TTL;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::icmpv4::{self, Message};
use crate::wire::{MacAddr, ipv4, is_multicast_mac};

/// The longest ICMP error datagram: 576 bytes (RFC 1812 §4.3.2.3, "as much of the original
/// datagram as possible without the length of the ICMP datagram exceeding 576 bytes").
const MAX_DATAGRAM: usize = 576;

/// The longest frame [`icmp_error`] writes: an Ethernet header and 576 bytes of IPv4. An
/// output buffer this long always suffices.
pub const ICMP_ERROR_MAX_FRAME: usize = ethernet::HEADER_LEN + MAX_DATAGRAM;

/// DSCP CS6 (TOS byte 0xc0): precedence 6 "internetwork control", which ICMP errors should
/// carry (RFC 1812 §4.3.2.5; RFC 2474 §4.2.2.2 for the class selector).
const ERROR_DSCP: u8 = 0x30;

/// What to say in an ICMP error, and from which address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpErrorSpec {
    /// "Type".
    pub msg_type: Message,
    /// "Code".
    pub code: u8,
    /// The second 32-bit word of the header: unused (zero) for most errors, the next-hop MTU
    /// in its low 16 bits for "fragmentation needed" (RFC 1191 §4), the pointer in its high
    /// octet for parameter problems.
    pub rest: u32,
    /// The IPv4 source of the error.
    pub src_addr: Ipv4Addr,
    /// The IPv4 "Identification" of the error (from the caller's counter).
    pub ident: u16,
}

impl IcmpErrorSpec {
    /// Destination Unreachable, code 4 "fragmentation needed and DF set", with the next-hop
    /// MTU (RFC 792, RFC 1191 §4).
    pub const fn frag_needed(next_hop_mtu: u16, src_addr: Ipv4Addr, ident: u16) -> Self {
        Self {
            msg_type: Message::DST_UNREACHABLE,
            code: 4,
            rest: next_hop_mtu as u32,
            src_addr,
            ident,
        }
    }

    /// Time Exceeded, code 0 "time to live exceeded in transit" (RFC 792; RFC 1812 §5.3.1).
    /// RFC 1812 §4.3.2.4 suggests the address of the interface the datagram came in by.
    pub const fn ttl_exceeded(src_addr: Ipv4Addr, ident: u16) -> Self {
        Self {
            msg_type: Message::TIME_EXCEEDED,
            code: 0,
            rest: 0,
            src_addr,
            ident,
        }
    }
}

/// ICMP query types (echo, timestamp, information, address mask; RFC 792, RFC 950): an error
/// may be sent about these. Any other ICMP type is an error or unknown, and gets none
/// (RFC 1812 §4.3.2.7; Linux treats unknown types as errors too).
const fn is_icmp_query(msg_type: u8) -> bool {
    matches!(msg_type, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
}

/// An address a host can have: no error goes to or about anything else (RFC 1812 §4.3.2.7;
/// a directed broadcast cannot be recognised without the prefix, and is not).
fn is_unicast(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback())
}

/// Writes into `out` an Ethernet frame carrying an ICMP error about the datagram in `frame`,
/// back to its sender, and returns the frame's length.
///
/// - Ethernet: to the frame's source MAC, from the frame's destination MAC (the port it
///   arrived on), so the error leaves by that port to the station that sent the datagram.
/// - IPv4: from `spec.src_addr` to the datagram's source, TOS 0xc0 (RFC 1812 §4.3.2.5),
///   identification `spec.ident`, DF clear, TTL 64, no options, checksum computed.
/// - ICMP: `spec`'s type, code and second word, then the datagram as received — its IP
///   header and as much of the rest as fits in 576 bytes (RFC 1812 §4.3.2.3; at least the
///   64 bits RFC 792 asks for), checksum computed.
///
/// [`FwdError::IcmpErrorSuppressed`] when RFC 1812 §4.3.2.7 forbids an error about this
/// datagram: it is an ICMP error (or unknown ICMP type), a non-first fragment, it came in a
/// link-layer multicast or broadcast, or its source or destination is not a unicast address.
/// [`FwdError::BufferTooSmall`] when `out` cannot hold the header and the first 64 bits of the
/// datagram ([`ICMP_ERROR_MAX_FRAME`] always suffices). The IPv4 lengths of `frame` must
/// check out (the errors of [`parse_flow`](super::parse_flow)); its checksum is not verified.
pub fn icmp_error(frame: &[u8], spec: &IcmpErrorSpec, out: &mut [u8]) -> Result<usize, FwdError> {
    let layout = locate_ipv4(frame)?;
    let eth = ethernet::Frame::new_unchecked(frame);
    let ip = ipv4::Packet::new_unchecked(&frame[L3..layout.end]);
    let original = &frame[L3..layout.end];
    let icmp_type = frame[layout.l4..layout.end].first().copied();
    let about_icmp_error = layout.protocol == ipv4::Protocol::ICMP
        && !layout.non_first_fragment
        && !icmp_type.is_some_and(is_icmp_query);
    if about_icmp_error
        || layout.non_first_fragment
        || is_multicast_mac(&eth.dst_addr())
        || !is_unicast(ip.src_addr())
        || !is_unicast(ip.dst_addr())
    {
        return Err(FwdError::IcmpErrorSuppressed);
    }

    let headers = L3 + ipv4::HEADER_LEN + icmpv4::HEADER_LEN;
    let quote_len = original
        .len()
        .min(MAX_DATAGRAM - ipv4::HEADER_LEN - icmpv4::HEADER_LEN)
        .min(out.len().saturating_sub(headers));
    if quote_len < original.len().min(layout.header_len + 8) {
        return Err(FwdError::BufferTooSmall);
    }
    let len = headers + quote_len;
    let out = &mut out[..len];

    let reply_mac: MacAddr = eth.src_addr();
    let our_mac: MacAddr = eth.dst_addr();
    let mut reply = ethernet::Frame::new_unchecked(&mut *out);
    reply.set_dst_addr(reply_mac);
    reply.set_src_addr(our_mac);
    reply.set_ethertype(EtherType::IPV4);

    // At most 576: fits.
    let total_len = u16::try_from(len - L3).unwrap_or(u16::MAX);
    let mut rip = ipv4::Packet::new_unchecked(&mut out[L3..]);
    rip.set_version(4);
    rip.set_header_len(20);
    rip.set_dscp(ERROR_DSCP);
    rip.set_ecn(0);
    rip.set_total_len(total_len);
    rip.set_ident(spec.ident);
    rip.clear_flags();
    rip.set_frag_offset(0);
    rip.set_ttl(DEFAULT_TTL);
    rip.set_protocol(ipv4::Protocol::ICMP);
    rip.set_src_addr(spec.src_addr);
    rip.set_dst_addr(ip.src_addr());
    rip.fill_checksum();

    let message = &mut out[L3 + ipv4::HEADER_LEN..];
    message[4..8].copy_from_slice(&spec.rest.to_be_bytes());
    message[icmpv4::HEADER_LEN..].copy_from_slice(&original[..quote_len]);
    let mut icmp = icmpv4::Packet::new_unchecked(message);
    icmp.set_msg_type(spec.msg_type);
    icmp.set_code(spec.code);
    icmp.fill_checksum();
    Ok(len)
}
