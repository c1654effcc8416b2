//! VS/NAT: rewriting requests to the real server, replies back to the virtual service, and
//! ICMP errors about either (seed 002; IPVS `ip_vs_nat_xmit`, `ip_vs_nat_icmp`).

use super::edit::{
    L3, Layout, check_ttl, decrement_ttl, get_addr, get16, is_icmp_error, locate_ipv4, parse_quote,
    put_addr, put16, set_macs,
};
use super::{FwdError, MacRewrite, ParsedFlow};
use crate::lb::{Endpoint, Protocol};
use crate::wire::checksum::{update_addr, update16};
use crate::wire::icmpv4;
use crate::wire::{ipv4, tcp, udp};

/// Which endpoint of a header a rewrite replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

impl Side {
    /// Offset of the address in an IPv4 header.
    const fn addr_at(self) -> usize {
        match self {
            Side::Src => 12,
            Side::Dst => 16,
        }
    }

    /// Offset of the port in a TCP or UDP header.
    const fn port_at(self) -> usize {
        match self {
            Side::Src => 0,
            Side::Dst => 2,
        }
    }

    const fn other(self) -> Self {
        match self {
            Side::Src => Side::Dst,
            Side::Dst => Side::Src,
        }
    }
}

/// NAT for a request, client → `VIP:vport` becoming client → `real` (`RIP:rport`): rewrites
/// the destination address and port, decrements the TTL, updates the IPv4 header checksum
/// and the TCP/UDP checksum incrementally (the pseudo-header covers the address, RFC 1624),
/// keeps a zero UDP checksum zero (RFC 768), and sets the Ethernet addresses to `mac`
/// (egress port → next hop towards the real server).
///
/// Accepts a whole TCP or UDP datagram or a first fragment. On `Err` the frame is untouched:
/// [`FwdError::TtlExceeded`] for a TTL of 0 or 1, [`FwdError::IpFragment`] for a non-first
/// fragment, and the malformed-header errors of [`parse_flow`](super::parse_flow) (the IPv4
/// checksum is not verified again).
pub fn nat_request(frame: &mut [u8], real: Endpoint, mac: MacRewrite) -> Result<(), FwdError> {
    nat_transport(frame, Side::Dst, real, mac)
}

/// NAT for a reply, `real` → client becoming `virt` (`VIP:vport`) → client: rewrites the
/// source address and port, with the same TTL, checksum and Ethernet handling as
/// [`nat_request`] (`mac`: egress port → next hop towards the client).
pub fn nat_reply(frame: &mut [u8], virt: Endpoint, mac: MacRewrite) -> Result<(), FwdError> {
    nat_transport(frame, Side::Src, virt, mac)
}

fn nat_transport(
    frame: &mut [u8],
    side: Side,
    to: Endpoint,
    mac: MacRewrite,
) -> Result<(), FwdError> {
    let layout = locate_ipv4(frame)?;
    if layout.non_first_fragment {
        return Err(FwdError::IpFragment);
    }
    let proto = transport_checks(frame, &layout)?;
    check_ttl(&layout)?;
    rewrite_transport(frame, layout.l4, layout.end, proto, side, to, mac);
    Ok(())
}

/// [`nat_request`] for a frame [`parse_flow`](super::parse_flow) has just accepted as TCP or
/// UDP (`parsed` is its result): the same outcome and bytes, without parsing the frame again.
/// Only the TTL is left to check; a `parsed` that does not fit the frame is refused with
/// [`FwdError::MalformedIpv4`], never a panic.
#[inline]
pub fn nat_request_parsed(
    frame: &mut [u8],
    parsed: &ParsedFlow,
    real: Endpoint,
    mac: MacRewrite,
) -> Result<(), FwdError> {
    nat_transport_parsed(frame, parsed, Side::Dst, real, mac)
}

/// [`nat_reply`] for a frame [`parse_flow`](super::parse_flow) has just accepted, as
/// [`nat_request_parsed`] is to [`nat_request`].
#[inline]
pub fn nat_reply_parsed(
    frame: &mut [u8],
    parsed: &ParsedFlow,
    virt: Endpoint,
    mac: MacRewrite,
) -> Result<(), FwdError> {
    nat_transport_parsed(frame, parsed, Side::Src, virt, mac)
}

#[inline]
fn nat_transport_parsed(
    frame: &mut [u8],
    parsed: &ParsedFlow,
    side: Side,
    to: Endpoint,
    mac: MacRewrite,
) -> Result<(), FwdError> {
    let (l4, end) = parsed_bounds(frame, parsed)?;
    // parse_flow checked the lengths, fragmentation and transport header that nat_transport
    // checks before the TTL.
    if parsed.ttl <= 1 {
        return Err(FwdError::TtlExceeded);
    }
    rewrite_transport(frame, l4, end, parsed.flow.proto, side, to, mac);
    Ok(())
}

/// Where the transport header and the datagram's end lie, per `parsed`, once checked against
/// the frame (so the rewrite cannot index out of it).
#[inline]
fn parsed_bounds(frame: &[u8], parsed: &ParsedFlow) -> Result<(usize, usize), FwdError> {
    let (l4, end) = (parsed.l4_offset, L3 + usize::from(parsed.total_len));
    let header = match parsed.flow.proto {
        Protocol::Tcp => tcp::HEADER_LEN,
        Protocol::Udp => udp::HEADER_LEN,
    };
    if parsed.icmp_error.is_some()
        || l4 < L3 + ipv4::HEADER_LEN
        || l4 + header > end
        || end > frame.len()
    {
        return Err(FwdError::MalformedIpv4);
    }
    Ok((l4, end))
}

/// The rewrite of [`nat_transport`], once everything was checked.
#[inline]
fn rewrite_transport(
    frame: &mut [u8],
    l4: usize,
    end: usize,
    proto: Protocol,
    side: Side,
    to: Endpoint,
    mac: MacRewrite,
) {
    let old_addr = get_addr(frame, L3 + side.addr_at());
    {
        let mut ip = ipv4::Packet::new_unchecked(&mut frame[L3..end]);
        match side {
            Side::Src => ip.set_src_addr(to.addr),
            Side::Dst => ip.set_dst_addr(to.addr),
        }
        ip.set_checksum(update_addr(ip.checksum(), old_addr, to.addr));
        decrement_ttl(&mut ip);
    }
    let old_port = get16(frame, l4 + side.port_at());
    put16(frame, l4 + side.port_at(), to.port);
    let update = |cksum: u16| update16(update_addr(cksum, old_addr, to.addr), old_port, to.port);
    match proto {
        Protocol::Tcp => {
            let mut tcp = tcp::Packet::new_unchecked(&mut frame[l4..end]);
            tcp.set_checksum(update(tcp.checksum()));
        }
        Protocol::Udp => {
            let mut udp = udp::Packet::new_unchecked(&mut frame[l4..end]);
            udp.set_checksum(udp::update_checksum(udp.checksum(), update));
        }
    }
    set_macs(frame, mac);
}

/// The transport protocol of a datagram whose TCP or UDP header is all there (the first
/// fragment of a UDP datagram needs only its 8-byte header: "Length" counts the whole).
fn transport_checks(frame: &[u8], layout: &Layout) -> Result<Protocol, FwdError> {
    let payload = &frame[layout.l4..layout.end];
    match layout.protocol {
        ipv4::Protocol::TCP => {
            tcp::Packet::new_checked(payload).map_err(|_| FwdError::MalformedTcp)?;
            Ok(Protocol::Tcp)
        }
        ipv4::Protocol::UDP => {
            let claimed = if payload.len() >= udp::HEADER_LEN {
                usize::from(get16(payload, 4))
            } else {
                return Err(FwdError::MalformedUdp);
            };
            let fits = claimed <= payload.len() || layout.more_frags;
            if claimed < udp::HEADER_LEN || !fits {
                return Err(FwdError::MalformedUdp);
            }
            Ok(Protocol::Udp)
        }
        _ => Err(FwdError::UnsupportedIpProtocol),
    }
}

/// NAT for an ICMP error arriving from the client side about a reply the director sent
/// (IPVS `ip_vs_in_icmp` → `ip_vs_nat_icmp(.., inout = 0)`): the error is addressed to the
/// VIP and quotes `VIP:vport → client`. It becomes addressed to `real` (`RIP:rport`), quoting
/// `RIP:rport → client` — the datagram the real server actually sent.
///
/// Rewrites the outer destination address; the quoted source address and source port;
/// updates incrementally the outer IPv4 checksum (TTL decremented too), the quoted IPv4
/// header checksum, the quoted transport checksum where the quote holds it (UDP's is within
/// the first 8 bytes and updated unless zero; TCP's only when at least 18 bytes of the TCP
/// header are quoted, RFC 1812 §4.3.2.3 lets routers quote more than 8; a quote that ends
/// halfway through it leaves that byte alone, since the carry from the missing byte is
/// unknown), and the ICMP checksum for every quoted word changed. Sets the Ethernet addresses to `mac`.
///
/// On `Err` the frame is untouched: the errors of [`parse_flow`](super::parse_flow) for ICMP
/// (not its checksum checks), and [`FwdError::TtlExceeded`].
pub fn nat_icmp_to_real(frame: &mut [u8], real: Endpoint, mac: MacRewrite) -> Result<(), FwdError> {
    nat_icmp(frame, Side::Dst, real, mac)
}

/// NAT for an ICMP error from the real-server side about a request the director forwarded
/// (IPVS `ip_vs_out_icmp` → `ip_vs_nat_icmp(.., inout = 1)`): the error comes from the real
/// server (or a router behind the director) and quotes `client → RIP:rport`. It becomes an
/// error from `virt` (`VIP:vport`), quoting `client → VIP:vport` — the datagram the client
/// actually sent, checksums included, since the quoted UDP checksum is updated back too.
///
/// Rewrites the outer source address (always to the VIP, as IPVS does, so the client sees
/// the error from the address it talks to and the inside addresses stay hidden); the quoted
/// destination address and port; and updates the same checksums as [`nat_icmp_to_real`].
pub fn nat_icmp_to_client(
    frame: &mut [u8],
    virt: Endpoint,
    mac: MacRewrite,
) -> Result<(), FwdError> {
    nat_icmp(frame, Side::Src, virt, mac)
}

fn nat_icmp(
    frame: &mut [u8],
    outer_side: Side,
    to: Endpoint,
    mac: MacRewrite,
) -> Result<(), FwdError> {
    let layout = locate_ipv4(frame)?;
    if layout.protocol != ipv4::Protocol::ICMP {
        return Err(FwdError::UnsupportedIpProtocol);
    }
    if layout.non_first_fragment || layout.more_frags {
        return Err(FwdError::IpFragment);
    }
    let (l4, end) = (layout.l4, layout.end);
    let icmp = icmpv4::Packet::new_checked(&frame[l4..end]).map_err(|_| FwdError::MalformedIcmp)?;
    if !is_icmp_error(icmp.msg_type()) {
        return Err(FwdError::UnhandledIcmp);
    }
    let quote = parse_quote(icmp.data())?;
    check_ttl(&layout)?;

    // Nothing can fail from here on. Offsets in the frame:
    let q3 = l4 + icmpv4::HEADER_LEN; // quoted IPv4 header
    let q4 = q3 + quote.header_len; // quoted transport header
    let quote_side = outer_side.other();

    // The outer IPv4 header.
    let old_outer = get_addr(frame, L3 + outer_side.addr_at());
    {
        let mut ip = ipv4::Packet::new_unchecked(&mut frame[L3..end]);
        match outer_side {
            Side::Src => ip.set_src_addr(to.addr),
            Side::Dst => ip.set_dst_addr(to.addr),
        }
        ip.set_checksum(update_addr(ip.checksum(), old_outer, to.addr));
        decrement_ttl(&mut ip);
    }

    let mut icmp_cksum = get16(frame, l4 + 2);

    // The quoted address and the quoted header's checksum. Each changed word of the ICMP
    // message also updates the ICMP checksum.
    let old_addr = get_addr(frame, q3 + quote_side.addr_at());
    put_addr(frame, q3 + quote_side.addr_at(), to.addr);
    icmp_cksum = update_addr(icmp_cksum, old_addr, to.addr);
    let old_q_cksum = get16(frame, q3 + 10);
    let new_q_cksum = update_addr(old_q_cksum, old_addr, to.addr);
    put16(frame, q3 + 10, new_q_cksum);
    icmp_cksum = update16(icmp_cksum, old_q_cksum, new_q_cksum);

    // The quoted port.
    let old_port = get16(frame, q4 + quote_side.port_at());
    put16(frame, q4 + quote_side.port_at(), to.port);
    icmp_cksum = update16(icmp_cksum, old_port, to.port);

    // The quoted transport checksum, where quoted.
    let update = |cksum: u16| update16(update_addr(cksum, old_addr, to.addr), old_port, to.port);
    let cksum_at = q4
        + match quote.proto {
            Protocol::Udp => udp::CHECKSUM_OFFSET,
            Protocol::Tcp => tcp::CHECKSUM_OFFSET,
        };
    if cksum_at + 2 <= end {
        let old = get16(frame, cksum_at);
        let new = match quote.proto {
            Protocol::Udp => udp::update_checksum(old, update),
            Protocol::Tcp => update(old),
        };
        put16(frame, cksum_at, new);
        icmp_cksum = update16(icmp_cksum, old, new);
    }
    // A quote ending inside the TCP checksum (one byte of it) is left as is: the carry from
    // the missing low byte into the high byte is unknown, so no update of it can be exact.

    put16(frame, l4 + 2, icmp_cksum);
    set_macs(frame, mac);
    Ok(())
}
