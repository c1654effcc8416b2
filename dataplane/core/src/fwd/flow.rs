//! Flow extraction: what the engine needs to find a frame's connection.

use std::net::Ipv4Addr;

use super::FwdError;
use super::edit::{L3, is_icmp_error, locate_ipv4, parse_quote};
use crate::lb::{Endpoint, Flow, Protocol};
use crate::wire::icmpv4::{self, Message};
use crate::wire::ipv4;
use crate::wire::{tcp, udp};

/// Whether a datagram is whole or the first fragment of a larger one. Non-first fragments
/// are refused by [`parse_flow`] (they carry no ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fragment {
    /// Not fragmented: MF clear and offset zero (RFC 791 §2.3).
    None,
    /// The first fragment (MF set, offset zero): the transport header is here, the rest of
    /// the datagram follows in fragments the director will not be able to place.
    First,
}

/// An ICMP error message (RFC 792) and where the datagram it quotes lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IcmpErrorInfo {
    /// "Type": 3, 4, 5, 11 or 12.
    pub msg_type: Message,
    /// "Code".
    pub code: u8,
    /// Offset in the frame of the quoted IP header.
    pub quote_l3_offset: usize,
    /// Offset in the frame of the quoted transport header.
    pub quote_l4_offset: usize,
    /// Bytes quoted, from the quoted IP header to the end of the ICMP message (at least that
    /// header plus 8).
    pub quote_len: usize,
}

/// What [`parse_flow`] found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParsedFlow {
    /// For TCP and UDP, the frame's own flow. For an ICMP error, the flow of the datagram it
    /// quotes, as quoted: that datagram was sent by the ICMP error's destination (an error
    /// from outside about a NAT reply quotes `VIP:vport → client`; one from a real server
    /// about a NAT request quotes `client → RIP:rport`).
    pub flow: Flow,
    /// The TCP control bits (empty for UDP and for ICMP errors, whose 8 quoted bytes stop
    /// before them).
    pub tcp_flags: tcp::Flags,
    /// The IPv4 source of the frame (the ICMP error's sender for errors).
    pub src_addr: Ipv4Addr,
    /// The IPv4 destination of the frame.
    pub dst_addr: Ipv4Addr,
    /// Offset of the IPv4 header in the frame (after the 14-byte Ethernet header; 802.1Q
    /// tags are not supported).
    pub l3_offset: usize,
    /// Offset of the transport header (or ICMP message) in the frame: `l3_offset` plus the
    /// IPv4 header length, options included.
    pub l4_offset: usize,
    /// The IPv4 header length in bytes, options included (20 to 60).
    pub ip_header_len: usize,
    /// IPv4 "Total Length": the frame may be longer (Ethernet padding).
    pub total_len: u16,
    /// IPv4 "Time to Live" as received.
    pub ttl: u8,
    /// IPv4 "Don't Fragment".
    pub dont_frag: bool,
    /// Whole datagram or first fragment.
    pub fragment: Fragment,
    /// For ICMP errors, the message and where its quote lies; `None` for TCP and UDP.
    pub icmp_error: Option<IcmpErrorInfo>,
}

impl ParsedFlow {
    /// The transport protocol of [`flow`](Self::flow) (of the quoted datagram for errors).
    pub fn protocol(&self) -> Protocol {
        self.flow.proto
    }

    /// Whether this is an ICMP error about a TCP or UDP datagram.
    pub fn is_icmp_error(&self) -> bool {
        self.icmp_error.is_some()
    }
}

/// Extracts the flow of an Ethernet frame carrying IPv4: TCP, UDP, or an ICMP error quoting
/// TCP or UDP (RFC 792: the quoted IP header and the first 64 bits of its payload, which
/// hold the ports).
///
/// Checks, in order: Ethernet length, EtherType IPv4, IPv4 lengths/IHL/version, the IPv4
/// header checksum (RFC 1812 §5.2.2), fragmentation (a non-first fragment is
/// [`FwdError::IpFragment`]), then the transport header:
/// - TCP: "Data Offset" ≥ 5 and within the datagram (RFC 9293 §3.1);
/// - UDP: "Length" ≥ 8 and within the datagram (RFC 768); in a first fragment only the
///   8-byte header must be present, since "Length" counts the whole datagram;
/// - ICMP: not fragmented, at least 8 bytes, checksum right (RFC 792), an error type
///   (3, 4, 5, 11, 12; anything else is [`FwdError::UnhandledIcmp`]), quoting a whole
///   IPv4 header plus 8 bytes of TCP or UDP ([`FwdError::IcmpQuoteUnusable`] otherwise).
///
/// IPv4 options are allowed: every offset follows IHL. Transport checksums are not verified
/// (the transforms preserve them, right or wrong, per RFC 1624).
#[inline]
pub fn parse_flow(frame: &[u8]) -> Result<ParsedFlow, FwdError> {
    match parse_common(frame) {
        Some(parsed) => Ok(parsed),
        None => parse_flow_general(frame),
    }
}

/// [`parse_flow`] for the common shape only — an unfragmented TCP or UDP datagram with a
/// 20-byte IPv4 header, every length and the header checksum right — read at fixed offsets;
/// `None` for anything else, which [`parse_flow_general`] then decides. Where it answers, it
/// answers exactly what the general parse does (`tests/fwd_props.rs` checks it).
#[inline(always)]
pub(crate) fn parse_common(frame: &[u8]) -> Option<ParsedFlow> {
    const L4: usize = L3 + ipv4::HEADER_LEN;
    // Everything read sits in the first 48 bytes (the TCP header's flags byte is the last):
    // one length check, then fixed offsets. A shorter frame (shorter than any Ethernet
    // frame on the wire) is the general parse's.
    let f: &[u8; L4 + 14] = frame.first_chunk()?;
    let h: &[u8; L4] = f.first_chunk()?;
    if h[12..14] != [0x08, 0x00] || h[L3] != 0x45 {
        return None;
    }
    let be16 = |i: usize| u16::from_be_bytes([f[i], f[i + 1]]);
    let total_len = be16(L3 + 2);
    let end = L3 + usize::from(total_len);
    let flags_offset = be16(L3 + 6);
    // MF or a fragment offset: a fragment, for the general parse.
    if end > frame.len() || end < L4 || flags_offset & 0x3fff != 0 {
        return None;
    }
    if !header_sums_to_ones(h) {
        return None;
    }
    // The transport header lies within the datagram: at least 20 bytes of TCP (its data
    // offset, within the payload) or the UDP length's claim (at least 8, within it), so the
    // fixed offsets below read the datagram's own bytes.
    let payload_len = end - L4;
    let (proto, tcp_flags) = match h[L3 + 9] {
        6 => {
            let data_off = usize::from(f[L4 + 12] >> 4) * 4;
            if data_off < tcp::HEADER_LEN || data_off > payload_len {
                return None;
            }
            (Protocol::Tcp, tcp::Flags(f[L4 + 13]))
        }
        17 => {
            let claimed = usize::from(be16(L4 + 4));
            if claimed < udp::HEADER_LEN || claimed > payload_len {
                return None;
            }
            (Protocol::Udp, tcp::Flags::NONE)
        }
        _ => return None,
    };
    let port = |i: usize| be16(L4 + i);
    let src_addr = Ipv4Addr::new(h[26], h[27], h[28], h[29]);
    let dst_addr = Ipv4Addr::new(h[30], h[31], h[32], h[33]);
    Some(ParsedFlow {
        flow: Flow {
            proto,
            src: Endpoint::new(src_addr, port(0)),
            dst: Endpoint::new(dst_addr, port(2)),
        },
        tcp_flags,
        src_addr,
        dst_addr,
        l3_offset: L3,
        l4_offset: L4,
        ip_header_len: ipv4::HEADER_LEN,
        total_len,
        ttl: h[L3 + 8],
        dont_frag: flags_offset & 0x4000 != 0,
        fragment: Fragment::None,
        icmp_error: None,
    })
}

/// Whether the 20-byte IPv4 header at [`L3`] checksums right (RFC 1071 §1 step (3)): its
/// five 32-bit words added in native byte order, then folded. The one's complement sum is
/// the same in either byte order up to a byte swap (RFC 1071 §2(B)), and all ones is its own
/// swap; 2³²−1 is a multiple of 2¹⁶−1, so summing 32-bit words folds to the 16-bit sum.
#[inline(always)]
fn header_sums_to_ones(h: &[u8; L3 + ipv4::HEADER_LEN]) -> bool {
    let word = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    let sum = word(L3) + word(L3 + 4) + word(L3 + 8) + word(L3 + 12) + word(L3 + 16);
    crate::wire::checksum::fold(sum) == 0xffff
}

/// [`parse_flow`] without its fast path for the common shape: the reference the fast path is
/// tested against.
#[doc(hidden)]
pub fn parse_flow_general(frame: &[u8]) -> Result<ParsedFlow, FwdError> {
    let layout = locate_ipv4(frame)?;
    let ip = ipv4::Packet::new_unchecked(&frame[L3..layout.end]);
    if !ip.verify_checksum() {
        return Err(FwdError::BadIpv4Checksum);
    }
    if layout.non_first_fragment {
        return Err(FwdError::IpFragment);
    }
    let fragment = if layout.more_frags {
        Fragment::First
    } else {
        Fragment::None
    };
    let payload = &frame[layout.l4..layout.end];
    let (src_addr, dst_addr) = (ip.src_addr(), ip.dst_addr());
    let mut parsed = ParsedFlow {
        flow: Flow {
            proto: Protocol::Tcp,
            src: Endpoint::new(src_addr, 0),
            dst: Endpoint::new(dst_addr, 0),
        },
        tcp_flags: tcp::Flags::NONE,
        src_addr,
        dst_addr,
        l3_offset: L3,
        l4_offset: layout.l4,
        ip_header_len: layout.header_len,
        total_len: layout.total_len,
        ttl: layout.ttl,
        dont_frag: layout.dont_frag,
        fragment,
        icmp_error: None,
    };
    match layout.protocol {
        ipv4::Protocol::TCP => {
            let tcp = tcp::Packet::new_checked(payload).map_err(|_| FwdError::MalformedTcp)?;
            parsed.flow.src.port = tcp.src_port();
            parsed.flow.dst.port = tcp.dst_port();
            parsed.tcp_flags = tcp.flags();
        }
        ipv4::Protocol::UDP => {
            let (src_port, dst_port) = udp_ports(payload, fragment)?;
            parsed.flow.proto = Protocol::Udp;
            parsed.flow.src.port = src_port;
            parsed.flow.dst.port = dst_port;
        }
        ipv4::Protocol::ICMP => {
            if fragment != Fragment::None {
                return Err(FwdError::IpFragment);
            }
            let icmp = icmpv4::Packet::new_checked(payload).map_err(|_| FwdError::MalformedIcmp)?;
            if !icmp.verify_checksum() {
                return Err(FwdError::BadIcmpChecksum);
            }
            if !is_icmp_error(icmp.msg_type()) {
                return Err(FwdError::UnhandledIcmp);
            }
            let quote = parse_quote(icmp.data())?;
            let quote_l3_offset = layout.l4 + icmpv4::HEADER_LEN;
            parsed.flow = Flow {
                proto: quote.proto,
                src: quote.src,
                dst: quote.dst,
            };
            parsed.icmp_error = Some(IcmpErrorInfo {
                msg_type: icmp.msg_type(),
                code: icmp.code(),
                quote_l3_offset,
                quote_l4_offset: quote_l3_offset + quote.header_len,
                quote_len: icmp.data().len(),
            });
        }
        _ => return Err(FwdError::UnsupportedIpProtocol),
    }
    Ok(parsed)
}

/// The ports of a UDP datagram, or of the first fragment of one.
fn udp_ports(payload: &[u8], fragment: Fragment) -> Result<(u16, u16), FwdError> {
    let udp = match fragment {
        Fragment::None => udp::Packet::new_checked(payload).map_err(|_| FwdError::MalformedUdp)?,
        Fragment::First => {
            // "Length" covers the whole datagram, beyond this fragment: check only that the
            // header is here and claims at least itself.
            if payload.len() < udp::HEADER_LEN {
                return Err(FwdError::MalformedUdp);
            }
            let udp = udp::Packet::new_unchecked(payload);
            if usize::from(udp.len()) < udp::HEADER_LEN {
                return Err(FwdError::MalformedUdp);
            }
            udp
        }
    };
    Ok((udp.src_port(), udp.dst_port()))
}
