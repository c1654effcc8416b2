//! VS/NAT: rewriting requests to the real server, replies back to the virtual service, and
//! ICMP errors about either (seed 002; IPVS `ip_vs_nat_xmit`, `ip_vs_nat_icmp`).

use super::edit::{
    HEAD, L3, Layout, check_ttl, decrement_ttl, decrement_ttl_fixed, decremented_ttl, get_addr,
    get16, get32, is_icmp_error, locate_ipv4, parse_quote, put_addr, put16, put32, set_macs,
    set_macs_fixed,
};
use super::{FwdError, MacRewrite, ParsedFlow};
use crate::lb::{Endpoint, Protocol};
use crate::wire::checksum::{apply, diff16, diff32, fold, update_addr, update16};
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
    rewrite_transport(frame, layout.l4, proto, side, to, mac);
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
    // The common shape, all its checks at once; anything else, and every refusal, below.
    let end = L3 + usize::from(parsed.total_len);
    if parsed.l4_offset == HEAD
        && parsed.icmp_error.is_none()
        && parsed.ttl > 1
        && end <= frame.len()
    {
        // The views end with the transport checksum; `end` makes them fit.
        match parsed.flow.proto {
            Protocol::Tcp if end >= HEAD + tcp::HEADER_LEN => {
                if let Some(h) = frame.first_chunk_mut::<{ HEAD + tcp::CHECKSUM_OFFSET + 2 }>() {
                    rewrite_fixed(h, false, side, to, mac.bytes());
                    return Ok(());
                }
            }
            Protocol::Udp if end >= HEAD + udp::HEADER_LEN => {
                if let Some(h) = frame.first_chunk_mut::<{ HEAD + udp::CHECKSUM_OFFSET + 2 }>() {
                    rewrite_fixed(h, true, side, to, mac.bytes());
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    nat_transport_parsed_general(frame, parsed, side, to, mac)
}

/// The NAT rewrite of a frame of the common shape with a TTL above 1 (what the established
/// fast path checked: [`parse_common`](super::parse_common) accepted it as `parsed`): a
/// request's destination becomes `to` (`reply` false, [`nat_request_parsed`]) or a reply's
/// source does (`reply` true, [`nat_reply_parsed`]), with the same bytes as those. `None`,
/// the frame untouched, if it is shorter than its transport header (which `parsed` rules
/// out).
#[inline(always)]
pub(crate) fn nat_common(
    frame: &mut [u8],
    parsed: &ParsedFlow,
    reply: bool,
    to: Endpoint,
    macs: [u8; 12],
) -> Option<()> {
    let side = if reply { Side::Src } else { Side::Dst };
    match parsed.flow.proto {
        Protocol::Tcp => {
            let h = frame.first_chunk_mut::<{ HEAD + tcp::CHECKSUM_OFFSET + 2 }>()?;
            rewrite_fixed(h, false, side, to, macs);
        }
        Protocol::Udp => {
            let h = frame.first_chunk_mut::<{ HEAD + udp::CHECKSUM_OFFSET + 2 }>()?;
            rewrite_fixed(h, true, side, to, macs);
        }
    }
    Some(())
}

/// [`nat_transport_parsed`] for any shape, and every refusal: out of line, so that the
/// common shape's path stays short.
#[inline(never)]
fn nat_transport_parsed_general(
    frame: &mut [u8],
    parsed: &ParsedFlow,
    side: Side,
    to: Endpoint,
    mac: MacRewrite,
) -> Result<(), FwdError> {
    let l4 = parsed_bounds(frame, parsed)?;
    // parse_flow checked the lengths, fragmentation and transport header that nat_transport
    // checks before the TTL.
    if parsed.ttl <= 1 {
        return Err(FwdError::TtlExceeded);
    }
    rewrite_transport(frame, l4, parsed.flow.proto, side, to, mac);
    Ok(())
}

/// Where the transport header lies, per `parsed`, once checked against the frame: whole and
/// within the datagram, which is within the frame (so the rewrite cannot index out of it).
#[inline]
fn parsed_bounds(frame: &[u8], parsed: &ParsedFlow) -> Result<usize, FwdError> {
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
    Ok(l4)
}

/// The rewrite of [`nat_transport`], once everything was checked: the transport header at
/// `l4` is whole (UDP's 8 bytes at least) and within the frame.
#[inline]
fn rewrite_transport(
    frame: &mut [u8],
    l4: usize,
    proto: Protocol,
    side: Side,
    to: Endpoint,
    mac: MacRewrite,
) {
    if l4 == HEAD {
        // The transport checksum ends each view. The checks above make both fit.
        let fixed = match proto {
            Protocol::Tcp => frame
                .first_chunk_mut::<{ HEAD + tcp::CHECKSUM_OFFSET + 2 }>()
                .map(|h| rewrite_fixed(h, false, side, to, mac.bytes())),
            Protocol::Udp => frame
                .first_chunk_mut::<{ HEAD + udp::CHECKSUM_OFFSET + 2 }>()
                .map(|h| rewrite_fixed(h, true, side, to, mac.bytes())),
        };
        if fixed.is_some() {
            return;
        }
    }
    rewrite_general(frame, l4, proto, side, to, mac);
}

/// [`rewrite_transport`] for the common shape, an IPv4 header without options, on the frame's
/// first `N` bytes, which end with the transport checksum (UDP's when `udp`, else TCP's):
/// every field at a constant offset, each checksum updated once for all its changes, in
/// native byte order (the same bytes, see [`checksum`](crate::wire::checksum)).
#[inline(always)]
fn rewrite_fixed<const N: usize>(
    h: &mut [u8; N],
    udp: bool,
    side: Side,
    to: Endpoint,
    macs: [u8; 12],
) {
    const { assert!(N >= HEAD + udp::HEADER_LEN) };
    set_macs_fixed(h, macs);
    let new_addr = to.addr.octets();
    let new_port = to.port.to_be_bytes();
    let (addr_at, port_at) = match side {
        Side::Src => (L3 + 12, HEAD),
        Side::Dst => (L3 + 16, HEAD + 2),
    };
    let [a0, a1, a2, a3] = [h[addr_at], h[addr_at + 1], h[addr_at + 2], h[addr_at + 3]];
    let [p0, p1] = [h[port_at], h[port_at + 1]];
    h[addr_at..addr_at + 4].copy_from_slice(&new_addr);
    h[port_at..port_at + 2].copy_from_slice(&new_port);
    // Folded once for both checksums (congruent, and zero only if it was: the same result).
    let addr_term = u64::from(fold(diff32(
        u32::from_ne_bytes([a0, a1, a2, a3]),
        u32::from_ne_bytes(new_addr),
    )));
    decrement_ttl_fixed(h, addr_term);
    let port_term = diff16(u16::from_ne_bytes([p0, p1]), u16::from_ne_bytes(new_port));
    let update = |cksum: u16| apply(cksum, addr_term + port_term);
    let old = u16::from_ne_bytes([h[N - 2], h[N - 1]]);
    let new = if udp {
        udp::update_checksum(old, update)
    } else {
        update(old)
    };
    h[N - 2..].copy_from_slice(&new.to_ne_bytes());
}

/// [`rewrite_transport`] for any IPv4 header length.
fn rewrite_general(
    frame: &mut [u8],
    l4: usize,
    proto: Protocol,
    side: Side,
    to: Endpoint,
    mac: MacRewrite,
) {
    let new_addr = to.addr.to_bits();
    let old_addr = get32(frame, L3 + side.addr_at());
    put32(frame, L3 + side.addr_at(), new_addr);
    let addr_term = diff32(old_addr, new_addr);
    // The address and the TTL in one update of the IPv4 checksum.
    let (new_ttl, ttl_term) = decremented_ttl(frame[L3 + 8]);
    frame[L3 + 8] = new_ttl;
    put16(
        frame,
        L3 + 10,
        apply(get16(frame, L3 + 10), addr_term + ttl_term),
    );

    let old_port = get16(frame, l4 + side.port_at());
    put16(frame, l4 + side.port_at(), to.port);
    let update = |cksum: u16| apply(cksum, addr_term + diff16(old_port, to.port));
    let cksum_at = l4
        + match proto {
            Protocol::Tcp => tcp::CHECKSUM_OFFSET,
            Protocol::Udp => udp::CHECKSUM_OFFSET,
        };
    let old = get16(frame, cksum_at);
    let new = match proto {
        Protocol::Tcp => update(old),
        Protocol::Udp => udp::update_checksum(old, update),
    };
    put16(frame, cksum_at, new);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    proptest! {
        /// The fixed-offset rewrite of the common shape writes exactly what the general one
        /// does, whatever the bytes (TTLs of 0 and 1, UDP checksums of 0 or that update to 0).
        #[test]
        fn fixed_rewrite_equals_general(
            mut frame in proptest::collection::vec(any::<u8>(), HEAD + tcp::HEADER_LEN..120),
            tcp in any::<bool>(),
            src in any::<bool>(),
            addr in any::<u32>(),
            port in any::<u16>(),
            macs in any::<([u8; 6], [u8; 6])>(),
            ttl in prop_oneof![Just(0u8), Just(1), Just(2), any::<u8>()],
            udp_cksum in prop_oneof![Just(None), Just(Some(0u16)), any::<u16>().prop_map(Some)],
        ) {
            let proto = if tcp { Protocol::Tcp } else { Protocol::Udp };
            let side = if src { Side::Src } else { Side::Dst };
            let to = Endpoint::new(Ipv4Addr::from_bits(addr), port);
            let mac = MacRewrite { src: macs.0, dst: macs.1 };
            frame[L3 + 8] = ttl;
            if let (false, Some(cksum)) = (tcp, udp_cksum) {
                put16(&mut frame, HEAD + udp::CHECKSUM_OFFSET, cksum);
            }
            let mut general = frame.clone();
            rewrite_general(&mut general, HEAD, proto, side, to, mac);
            rewrite_transport(&mut frame, HEAD, proto, side, to, mac);
            prop_assert_eq!(frame, general);
        }
    }
}
