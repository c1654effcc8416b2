//! VS/DR: direct routing, rewriting only the Ethernet header (seed 000 §2.2; IPVS
//! `ip_vs_dr_xmit`).

use super::edit::{L3, check_ttl, decrement_ttl, locate_ipv4, set_macs};
use super::{FwdError, MacRewrite};
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
