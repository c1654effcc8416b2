//! Forwarding: flow extraction and the per-method packet transforms (VS/NAT, VS/TUN, VS/DR),
//! as pure functions over the frame bytes.
//!
//! The engine calls [`parse_flow`] on a received frame, looks the connection up (or schedules
//! a new one), then applies one transform with the addresses and MACs it chose:
//!
//! | method | request (client → VIP) | reply (real server → client) | ICMP error about the flow |
//! |---|---|---|---|
//! | NAT | [`nat_request`] | [`nat_reply`] | [`nat_icmp_to_real`] / [`nat_icmp_to_client`] |
//! | TUN | [`tunnel`] | not via the director | [`tunnel`], untranslated |
//! | DR  | [`direct_route`] | not via the director | [`direct_route`], untranslated |
//!
//! Every transform:
//! - checks everything before writing anything: on `Err` the frame is untouched;
//! - decrements the TTL of the datagram it forwards (RFC 1812 §5.3.1; IPVS's `decrement_ttl`
//!   does the same for every method), and refuses with [`FwdError::TtlExceeded`] when the TTL
//!   is 1 or 0 on arrival, so the engine can drop and, if it wants, answer with
//!   [`icmp_error`] / [`IcmpErrorSpec::ttl_exceeded`];
//! - updates every checksum it invalidates incrementally (RFC 1624 eqn. 3, via
//!   [`wire::checksum`](crate::wire::checksum)), never summing the payload again, so a
//!   checksum that was wrong on arrival stays wrong (RFC 1624 §1: the end-to-end check is
//!   preserved); a UDP checksum of zero stays zero (RFC 768);
//! - neither allocates nor panics, whatever the bytes.
//!
//! Policies (see each item for the details):
//! - **Fragments**: a non-first fragment has no transport header, so no ports to find the
//!   connection by; [`parse_flow`] refuses it with [`FwdError::IpFragment`] (the director
//!   does not reassemble). A first fragment carries the ports and is reported as
//!   [`Fragment::First`]; the transforms handle it (the incremental checksum update does not
//!   need the rest of the datagram), and the engine may choose to drop it instead, since its
//!   followers will be dropped.
//! - **TUN and the MTU**: see [`tunnel`]: too big with DF set → ICMP "fragmentation needed"
//!   from the VIP back to the client; too big without DF → dropped as
//!   [`FwdError::TunMtuExceeded`] (IPVS would fragment the outer datagram; we do not yet).

mod dr;
mod edit;
mod flow;
pub mod golden;
mod icmp_error;
mod nat;
mod tunnel;

pub(crate) use dr::direct_route_common;
pub use dr::{direct_route, direct_route_parsed};
pub(crate) use flow::parse_common;
pub use flow::{Fragment, IcmpErrorInfo, ParsedFlow, parse_flow, parse_flow_general};
pub use icmp_error::{ICMP_ERROR_MAX_FRAME, IcmpErrorSpec, icmp_error};
pub(crate) use nat::nat_common;
pub use nat::{
    nat_icmp_to_client, nat_icmp_to_real, nat_reply, nat_reply_parsed, nat_request,
    nat_request_parsed,
};
pub use tunnel::{TUNNEL_HEADROOM, TunnelOutcome, TunnelParams, tunnel};

use crate::counters::DropReason;
use crate::wire::MacAddr;

/// The Ethernet addresses a forwarded frame leaves with, in the Ethernet header's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacRewrite {
    /// The destination: the next hop's MAC (the real server's for DR and for NAT requests to
    /// an on-link server; the client's or the router's for NAT replies).
    pub dst: MacAddr,
    /// The source: the MAC of the port the frame leaves by.
    pub src: MacAddr,
}

impl MacRewrite {
    /// The frame's first 12 bytes: destination, then source. The rewrites copy them in one
    /// 12-byte move: kept as one array, they are loaded and stored in the same two pieces
    /// (8 + 4 bytes), never read back across narrower stores (a store-forwarding stall).
    #[inline]
    pub const fn bytes(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        let mut i = 0;
        while i < 6 {
            b[i] = self.dst[i];
            b[i + 6] = self.src[i];
            i += 1;
        }
        b
    }
}

/// Why a frame could not be parsed or transformed. Each has a snake_case [`name`](Self::name)
/// for a drop counter; those that exist in [`DropReason`] map to it with
/// [`drop_reason`](Self::drop_reason), and the others are new reasons for the engine to add
/// under the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FwdError {
    /// The frame is shorter than an Ethernet header.
    #[error("frame shorter than an Ethernet header")]
    TruncatedEthernet,
    /// Not IPv4 (ARP, IPv6, VLAN-tagged, ...).
    #[error("not an IPv4 frame")]
    UnsupportedEthertype,
    /// IPv4 header truncated, IHL < 5, total length inconsistent, or version ≠ 4.
    #[error("malformed IPv4 header")]
    MalformedIpv4,
    /// The IPv4 header checksum does not verify (RFC 791 §3.1; RFC 1812 §5.2.2 asks a router
    /// to check it).
    #[error("bad IPv4 header checksum")]
    BadIpv4Checksum,
    /// A non-first fragment (no ports to find the connection by), or a fragmented ICMP error
    /// (at most 576 bytes, RFC 1812 §4.3.2.3, so never legitimately fragmented). The director
    /// does not reassemble.
    #[error("IP fragment")]
    IpFragment,
    /// Neither TCP, UDP nor ICMP.
    #[error("IP protocol not forwarded")]
    UnsupportedIpProtocol,
    /// TCP header truncated or "Data Offset" below 5 (RFC 9293 §3.1).
    #[error("malformed TCP header")]
    MalformedTcp,
    /// UDP header truncated, "Length" below 8 or beyond the datagram (RFC 768).
    #[error("malformed UDP header")]
    MalformedUdp,
    /// ICMP shorter than its 8-byte header.
    #[error("malformed ICMP header")]
    MalformedIcmp,
    /// The ICMP checksum does not verify over the message (RFC 792).
    #[error("bad ICMP checksum")]
    BadIcmpChecksum,
    /// ICMP that is not an error about a datagram (echo, timestamps, ...): not a flow.
    #[error("ICMP message that quotes no datagram")]
    UnhandledIcmp,
    /// An ICMP error whose quoted datagram is unusable: shorter than its IP header plus
    /// 8 bytes (RFC 792), not IPv4, a non-first fragment, or neither TCP nor UDP.
    #[error("ICMP error quoting no usable TCP/UDP datagram")]
    IcmpQuoteUnusable,
    /// The TTL would reach zero (RFC 1812 §5.3.1).
    #[error("TTL exceeded")]
    TtlExceeded,
    /// Too big for the tunnel and not answerable with "fragmentation needed": DF clear (we do
    /// not fragment), or DF set but the datagram is one no ICMP error may be sent about.
    #[error("too big to encapsulate")]
    TunMtuExceeded,
    /// No ICMP error may be sent about this datagram (RFC 1812 §4.3.2.7): it is itself an
    /// ICMP error, a non-first fragment, or from or to a non-unicast address.
    #[error("no ICMP error may be sent about this datagram")]
    IcmpErrorSuppressed,
    /// The caller's buffer has no room: [`TUNNEL_HEADROOM`] missing in front of a frame to
    /// encapsulate, or an ICMP output buffer too short. A glue bug, counted so it shows.
    #[error("buffer too small for the transform")]
    BufferTooSmall,
}

impl FwdError {
    /// Every error, in declaration order.
    pub const ALL: [Self; 16] = [
        Self::TruncatedEthernet,
        Self::UnsupportedEthertype,
        Self::MalformedIpv4,
        Self::BadIpv4Checksum,
        Self::IpFragment,
        Self::UnsupportedIpProtocol,
        Self::MalformedTcp,
        Self::MalformedUdp,
        Self::MalformedIcmp,
        Self::BadIcmpChecksum,
        Self::UnhandledIcmp,
        Self::IcmpQuoteUnusable,
        Self::TtlExceeded,
        Self::TunMtuExceeded,
        Self::IcmpErrorSuppressed,
        Self::BufferTooSmall,
    ];

    /// The drop counter's snake_case name (the same as [`DropReason::name`] where one exists).
    pub const fn name(self) -> &'static str {
        match self {
            Self::TruncatedEthernet => "truncated_ethernet",
            Self::UnsupportedEthertype => "unsupported_ethertype",
            Self::MalformedIpv4 => "malformed_ipv4",
            Self::BadIpv4Checksum => "bad_ipv4_checksum",
            Self::IpFragment => "ip_fragment",
            Self::UnsupportedIpProtocol => "unsupported_ip_protocol",
            Self::MalformedTcp => "malformed_tcp",
            Self::MalformedUdp => "malformed_udp",
            Self::MalformedIcmp => "malformed_icmp",
            Self::BadIcmpChecksum => "bad_icmp_checksum",
            Self::UnhandledIcmp => "unhandled_icmp",
            Self::IcmpQuoteUnusable => "icmp_quote_unusable",
            Self::TtlExceeded => "ttl_exceeded",
            Self::TunMtuExceeded => "tun_mtu_exceeded",
            Self::IcmpErrorSuppressed => "icmp_error_suppressed",
            Self::BufferTooSmall => "fwd_buffer_too_small",
        }
    }

    /// The [`DropReason`] of the same name, under which the engine counts the drop.
    pub const fn drop_reason(self) -> DropReason {
        match self {
            Self::TruncatedEthernet => DropReason::TruncatedEthernet,
            Self::UnsupportedEthertype => DropReason::UnsupportedEthertype,
            Self::MalformedIpv4 => DropReason::MalformedIpv4,
            Self::BadIpv4Checksum => DropReason::BadIpv4Checksum,
            Self::IpFragment => DropReason::IpFragment,
            Self::UnsupportedIpProtocol => DropReason::UnsupportedIpProtocol,
            Self::MalformedTcp => DropReason::MalformedTcp,
            Self::MalformedUdp => DropReason::MalformedUdp,
            Self::MalformedIcmp => DropReason::MalformedIcmp,
            Self::BadIcmpChecksum => DropReason::BadIcmpChecksum,
            Self::UnhandledIcmp => DropReason::UnhandledIcmp,
            Self::IcmpQuoteUnusable => DropReason::IcmpQuoteUnusable,
            Self::TtlExceeded => DropReason::TtlExceeded,
            Self::TunMtuExceeded => DropReason::TunMtuExceeded,
            Self::IcmpErrorSuppressed => DropReason::IcmpErrorSuppressed,
            Self::BufferTooSmall => DropReason::FwdBufferTooSmall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_equal_their_drop_reasons() {
        for (i, error) in FwdError::ALL.iter().enumerate() {
            let name = error.name();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert!(
                FwdError::ALL[..i].iter().all(|e| e.name() != name),
                "{name} twice"
            );
            // Every error is counted under the drop reason of the same name.
            assert_eq!(error.drop_reason().name(), name);
        }
        assert_eq!(FwdError::IpFragment.name(), "ip_fragment");
        assert_eq!(FwdError::TunMtuExceeded.name(), "tun_mtu_exceeded");
    }
}
