//! VS/TUN: IP-in-IP encapsulation of requests to the real server (RFC 2003; seed 000 §2.2;
//! IPVS `ip_vs_tunnel_xmit`).

use std::net::Ipv4Addr;

use super::edit::{
    HEAD, L3, Layout, check_ttl, decrement_ttl_fixed, get_addr, locate_ipv4, set_macs_fixed,
};
use super::icmp_error::{IcmpErrorSpec, icmp_error};
use super::{FwdError, MacRewrite};
use crate::wire::checksum;
use crate::wire::ethernet::EtherType;
use crate::wire::ipv4;

/// The bytes the caller must make room for in front of the frame: one IPv4 header without
/// options (RFC 2003 §3.1). DPDK mbufs have 128 bytes of headroom; the glue calls
/// `rte_pktmbuf_prepend(m, TUNNEL_HEADROOM)` and passes the grown data slice.
pub const TUNNEL_HEADROOM: usize = ipv4::HEADER_LEN;

/// The outer TTL: enough to reach the tunnel's exit (RFC 2003 §3.1), the default of
/// RFC 1700.
const OUTER_TTL: u8 = 64;

/// What the tunnel needs to know about this packet's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelParams {
    /// The outer source: the director's address on the egress port (configurable, e.g. to
    /// derive one per flow so ECMP/RSS spreads tunnels, as Katran does).
    pub outer_src: Ipv4Addr,
    /// The outer destination: the real server.
    pub real_server: Ipv4Addr,
    /// The outer "Identification", from the caller's per-lcore counter (RFC 6864 §4.1: only
    /// needs to be unique for datagrams that may be fragmented). The "fragmentation needed"
    /// error, when built instead, takes it.
    pub ident: u16,
    /// The egress link's MTU: the largest IPv4 datagram it carries (1500 on Ethernet).
    pub mtu: u16,
    /// Egress port MAC → next hop towards the real server.
    pub mac: MacRewrite,
}

/// What [`tunnel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelOutcome {
    /// The encapsulated frame is `buf[..len]`: Ethernet, outer IPv4, the inner datagram
    /// (Ethernet padding of the received frame trimmed). Transmit it.
    Encapsulated {
        /// The frame's length.
        len: usize,
    },
    /// Too big for the tunnel with DF set: `icmp_out[..len]` holds an ICMP "fragmentation
    /// needed" for the client (Ethernet addresses swapped from the received frame: send it
    /// out the port the request came in by). `buf` is untouched; drop the request.
    FragNeeded {
        /// The ICMP frame's length.
        len: usize,
    },
}

/// Encapsulates a request in IPIP to the real server (RFC 2003 §3), or answers that it does
/// not fit.
///
/// `buf` is [`TUNNEL_HEADROOM`] bytes of room (any content) followed by the received frame
/// (Ethernet + IPv4, with any Ethernet padding). The inner datagram stays where it is; the
/// outer header and a new Ethernet header are written in front of it.
///
/// - Inner: the TTL is decremented with an incremental checksum update (RFC 1812 §5.3.1;
///   IPVS's `decrement_ttl` runs before every transmitter), nothing else changes.
/// - Outer (RFC 2003 §3.1): version 4, IHL 5, TOS copied from the inner header (DSCP and
///   ECN, RFC 6040 §4.1 normal mode), total length = inner + 20, identification
///   `params.ident`, DF copied from the inner header, TTL 64, protocol 4, source
///   `params.outer_src`, destination `params.real_server`, checksum computed over these 20
///   bytes.
/// - Ethernet: `params.mac`, EtherType IPv4.
///
/// MTU: when inner total length + 20 exceeds `params.mtu`:
/// - DF set: nothing is encapsulated; an ICMP Destination Unreachable "fragmentation needed"
///   (type 3 code 4) with next-hop MTU `params.mtu − 20` (RFC 1191 §4) is written into
///   `icmp_out` ([`ICMP_ERROR_MAX_FRAME`](super::ICMP_ERROR_MAX_FRAME) bytes always suffice)
///   from the **VIP** (the request's destination) to the client, quoting the request as
///   received, up to 576 bytes (RFC 1812 §4.3.2.3). The VIP is what Linux sends it from under
///   IPVS: `icmp_send` uses the offending datagram's destination as the source when that is a
///   local address, as the VIP is on an IPVS director — and the client knows the VIP, not the
///   director's own addresses. Returns [`TunnelOutcome::FragNeeded`]. When RFC 1812 §4.3.2.7
///   forbids an error about the request (an ICMP error itself — IPVS skips those too — a
///   non-first fragment, a non-unicast source) it is dropped as
///   [`FwdError::TunMtuExceeded`].
/// - DF clear: dropped as [`FwdError::TunMtuExceeded`]. IPVS would fragment the outer
///   datagram; the director does not fragment (yet), so this is counted to show whether it is
///   worth doing.
///
/// On `Err` nothing was written: [`FwdError::BufferTooSmall`] when `buf` is shorter than the
/// headroom or `icmp_out` cannot hold the error, [`FwdError::TtlExceeded`], and the Ethernet
/// and IPv4 errors of [`parse_flow`](super::parse_flow). Any IPv4 payload is accepted (TCP,
/// UDP, an ICMP error about a TUN connection, fragments): nothing above IPv4 is read.
pub fn tunnel(
    buf: &mut [u8],
    params: &TunnelParams,
    icmp_out: &mut [u8],
) -> Result<TunnelOutcome, FwdError> {
    let Some(frame) = buf.get(TUNNEL_HEADROOM..) else {
        return Err(FwdError::BufferTooSmall);
    };
    let layout = locate_ipv4(frame)?;
    check_ttl(&layout)?;
    let inner_len = usize::from(layout.total_len);
    if inner_len + ipv4::HEADER_LEN > usize::from(params.mtu) {
        return too_big(frame, &layout, params, icmp_out);
    }

    // Nothing can fail from here on. The inner datagram starts at HEADROOM + 14 = 14 + 20:
    // exactly after the new Ethernet and outer IPv4 headers.
    let inner_at = TUNNEL_HEADROOM + L3;
    let end = inner_at + inner_len;
    // The inner header (at least 20 bytes, located above) ends the view: every field at a
    // constant offset.
    let h: &mut [u8; TUNNEL_HEADROOM + HEAD] =
        buf.first_chunk_mut().ok_or(FwdError::BufferTooSmall)?;
    let tos = h[inner_at + 1];
    {
        let inner: &mut [u8; HEAD] = h.last_chunk_mut().ok_or(FwdError::BufferTooSmall)?;
        decrement_ttl_fixed(inner, 0);
    }
    // The inner length fits the MTU, a u16, less 20.
    let outer_len = u16::try_from(inner_len + ipv4::HEADER_LEN).unwrap_or(u16::MAX);
    let flags_offset: u16 = if layout.dont_frag { 0x4000 } else { 0 };
    let [len0, len1] = outer_len.to_be_bytes();
    let [id0, id1] = params.ident.to_be_bytes();
    let [fo0, fo1] = flags_offset.to_be_bytes();
    let [s0, s1, s2, s3] = params.outer_src.octets();
    let [d0, d1, d2, d3] = params.real_server.octets();
    #[rustfmt::skip]
    let mut outer = [
        0x45, tos, len0, len1,
        id0, id1, fo0, fo1,
        OUTER_TTL, ipv4::Protocol::IPIP.0, 0, 0,
        s0, s1, s2, s3,
        d0, d1, d2, d3,
    ];
    // `checksum::checksum` of these bytes, as 32-bit native-order words (2¹⁶ ≡ 1 modulo
    // 2¹⁶−1; the byte order note of `checksum`): the same fold, the same bytes.
    let word = |i: usize| {
        u64::from(u32::from_ne_bytes([
            outer[i],
            outer[i + 1],
            outer[i + 2],
            outer[i + 3],
        ]))
    };
    let sum = word(0) + word(4) + word(8) + word(12) + word(16);
    outer[10..12].copy_from_slice(&(!checksum::fold(sum)).to_ne_bytes());
    set_macs_fixed(h, params.mac.bytes());
    h[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
    h[L3..HEAD].copy_from_slice(&outer);
    Ok(TunnelOutcome::Encapsulated { len: end })
}

/// [`tunnel`]'s answer to a datagram too big for the tunnel: out of line, off the common path.
#[cold]
fn too_big(
    frame: &[u8],
    layout: &Layout,
    params: &TunnelParams,
    icmp_out: &mut [u8],
) -> Result<TunnelOutcome, FwdError> {
    if !layout.dont_frag {
        return Err(FwdError::TunMtuExceeded);
    }
    let vip = get_addr(frame, L3 + 16);
    let next_hop_mtu = params.mtu.saturating_sub(20);
    let spec = IcmpErrorSpec::frag_needed(next_hop_mtu, vip, params.ident);
    match icmp_error(frame, &spec, icmp_out) {
        Ok(len) => Ok(TunnelOutcome::FragNeeded { len }),
        Err(FwdError::IcmpErrorSuppressed) => Err(FwdError::TunMtuExceeded),
        Err(other) => Err(other),
    }
}
