//! VS/DR: direct routing, rewriting only the Ethernet header (seed 000 §2.2; IPVS
//! `ip_vs_dr_xmit`).

use super::edit::{L3, check_ttl, decrement_ttl, locate_ipv4, set_macs};
use super::{FwdError, MacRewrite, ParsedFlow};
use crate::wire::ipv4;

/// Forwards a request to a real server on the same segment, which holds the VIP on a
/// non-ARPing interface: sets the Ethernet destination to the real server's MAC and the
/// source to the egress port's (`mac`), and decrements the TTL with an incremental update of
/// the IPv4 header checksum (RFC 1812 §5.3.1, RFC 1624). Nothing else changes: addresses and
/// ports stay those the client sent.
///
/// Any IPv4 payload is accepted (TCP, UDP, an ICMP error about a DR connection, fragments):
/// nothing above IPv4 is read. On `Err` the frame is untouched: [`FwdError::TtlExceeded`],
/// and the Ethernet and IPv4 errors of [`parse_flow`](super::parse_flow).
pub fn direct_route(frame: &mut [u8], mac: MacRewrite) -> Result<(), FwdError> {
    let layout = locate_ipv4(frame)?;
    check_ttl(&layout)?;
    let mut ip = ipv4::Packet::new_unchecked(&mut frame[L3..layout.end]);
    decrement_ttl(&mut ip);
    set_macs(frame, mac);
    Ok(())
}

/// [`direct_route`] for a frame [`parse_flow`](super::parse_flow) has just accepted (`parsed`
/// is its result): the same outcome and bytes without parsing again. A `parsed` that does not
/// fit the frame is refused with [`FwdError::MalformedIpv4`], never a panic.
#[inline]
pub fn direct_route_parsed(
    frame: &mut [u8],
    parsed: &ParsedFlow,
    mac: MacRewrite,
) -> Result<(), FwdError> {
    let end = L3 + usize::from(parsed.total_len);
    if end > frame.len() || end < L3 + ipv4::HEADER_LEN {
        return Err(FwdError::MalformedIpv4);
    }
    if parsed.ttl <= 1 {
        return Err(FwdError::TtlExceeded);
    }
    let mut ip = ipv4::Packet::new_unchecked(&mut frame[L3..end]);
    decrement_ttl(&mut ip);
    set_macs(frame, mac);
    Ok(())
}
