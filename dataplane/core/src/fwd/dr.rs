//! VS/DR: direct routing, rewriting only the Ethernet header (seed 000 §2.2; IPVS
//! `ip_vs_dr_xmit`).

use super::edit::{HEAD, L3, check_ttl, decrement_ttl_fixed, locate_ipv4, set_macs_fixed};
use super::{FwdError, MacRewrite, ParsedFlow};

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
    // A whole IPv4 header is there, options or not: the TTL and checksum lie within HEAD.
    let head = frame.first_chunk_mut().ok_or(FwdError::MalformedIpv4)?;
    rewrite(head, mac.bytes());
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
    if end > frame.len() || end < HEAD {
        return Err(FwdError::MalformedIpv4);
    }
    if parsed.ttl <= 1 {
        return Err(FwdError::TtlExceeded);
    }
    let head = frame.first_chunk_mut().ok_or(FwdError::MalformedIpv4)?;
    rewrite(head, mac.bytes());
    Ok(())
}

/// The rewrite of [`direct_route_parsed`] for a frame of the common shape with a TTL above 1
/// (what the established fast path checked). `None`, the frame untouched, if it is shorter
/// than an IPv4 header (which the common shape rules out).
#[inline(always)]
pub(crate) fn direct_route_common(frame: &mut [u8], macs: [u8; 12]) -> Option<()> {
    rewrite(frame.first_chunk_mut()?, macs);
    Some(())
}

/// The rewrite of [`direct_route`] on the frame's first [`HEAD`] bytes.
#[inline(always)]
fn rewrite(head: &mut [u8; HEAD], macs: [u8; 12]) {
    set_macs_fixed(head, macs);
    decrement_ttl_fixed(head, 0);
}
