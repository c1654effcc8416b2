//! Golden packets for the forwarding transforms: one table per forwarding method of
//! `{description, transform, input frame, expected frame, outcome}`, in the style of Katran's
//! fixtures and of [`crate::golden`] for the responder.
//!
//! `tests/fwd_golden.rs` replays them with [`run`] and checks every checksum of every
//! expected frame by full recomputation (outer and quoted IPv4 headers, TCP/UDP with the
//! pseudo-header, ICMP). The expected frames were computed independently of this crate, by
//! building each output datagram from scratch with full checksums, never incrementally.
//!
//! The network is that of [`crate::golden::director`]: the director's outside port
//! ([`OUTSIDE_MAC`], 203.0.113.11) faces the client 203.0.113.50 ([`CLIENT_MAC`]) and a router
//! 203.0.113.1 ([`ROUTER_MAC`]); its inside port ([`INSIDE_MAC`], [`INSIDE_ADDR`]) faces the
//! real servers [`RS1`] ([`RS1_MAC`]) and [`RS2`] ([`RS2_MAC`]). The virtual services are
//! seed 002's: [`VIP`]:80 → 172.16.0.2:80 and 172.16.0.3:8000, plus VIP:53/udp →
//! 172.16.0.2:5353.
//!
//! Frames are hex, one protocol layer per string (fields grouped); whitespace is ignored.

use std::net::Ipv4Addr;

pub use crate::golden::{INSIDE_MAC, OUTSIDE_MAC, decode_hex};

use super::{
    FwdError, ICMP_ERROR_MAX_FRAME, MacRewrite, TUNNEL_HEADROOM, TunnelOutcome, TunnelParams,
    direct_route, nat_icmp_to_client, nat_icmp_to_real, nat_reply, nat_request, tunnel,
};
use crate::lb::Endpoint;
use crate::wire::MacAddr;

/// The virtual IP.
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The client.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 50);
/// The client's MAC.
pub const CLIENT_MAC: MacAddr = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// A router on the outside segment, which sends ICMP errors.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The router's MAC.
pub const ROUTER_MAC: MacAddr = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
/// The director's address on the inside port: the outer source of tunnels.
pub const INSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 251);
/// Real server 1.
pub const RS1: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
/// Real server 1's MAC.
pub const RS1_MAC: MacAddr = [0x52, 0x54, 0x00, 0x00, 0x00, 0x02];
/// Real server 2 (port 8000 for VIP:80, seed 002).
pub const RS2: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 3);
/// Real server 2's MAC.
pub const RS2_MAC: MacAddr = [0x52, 0x54, 0x00, 0x00, 0x00, 0x03];

// Short names for the tables.
const O_MAC: MacAddr = OUTSIDE_MAC;
const I_MAC: MacAddr = INSIDE_MAC;
const C_MAC: MacAddr = CLIENT_MAC;
const IN_ADDR: Ipv4Addr = INSIDE_ADDR;

/// Which transform a case applies, with its arguments (the MACs are in [`Case::mac`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// [`nat_request`] to this real server address and port.
    NatRequest(Ipv4Addr, u16),
    /// [`nat_reply`] from this virtual address and port.
    NatReply(Ipv4Addr, u16),
    /// [`nat_icmp_to_real`] for this real server address and port.
    NatIcmpToReal(Ipv4Addr, u16),
    /// [`nat_icmp_to_client`] from this virtual address and port.
    NatIcmpToClient(Ipv4Addr, u16),
    /// [`tunnel`] with these [`TunnelParams`] (and the case's MACs).
    Tunnel {
        /// [`TunnelParams::outer_src`].
        outer_src: Ipv4Addr,
        /// [`TunnelParams::real_server`].
        real_server: Ipv4Addr,
        /// [`TunnelParams::ident`].
        ident: u16,
        /// [`TunnelParams::mtu`].
        mtu: u16,
    },
    /// [`direct_route`].
    DirectRoute,
}

/// What a transform must do with the case's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The frame is rewritten into the expected frame and forwarded.
    Forwarded,
    /// The frame is dropped and the expected frame (an ICMP error) is sent back instead.
    Replied,
    /// The transform refuses the frame and leaves it untouched.
    Dropped(FwdError),
}

/// One fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// What the case shows.
    pub description: &'static str,
    /// The transform and its arguments.
    pub transform: Transform,
    /// The Ethernet addresses the frame leaves with.
    pub mac: MacRewrite,
    /// The received frame, in hex.
    pub input: &'static str,
    /// The frame that must come out (forwarded or replied), in hex; `None` when dropped.
    pub expected: Option<&'static str>,
    /// What the transform must do.
    pub outcome: Outcome,
}

/// Applies `transform` with `mac` to a copy of `input`. Returns the outcome and the frame that
/// comes out: the rewritten frame when forwarded, the ICMP error when replied, and the input
/// as the transform left it (it must be untouched) when dropped — for a tunnel that is what
/// follows the headroom. Allocates: for tests, fuzzing and replays only.
pub fn apply(transform: Transform, mac: MacRewrite, input: &[u8]) -> (Outcome, Vec<u8>) {
    let mut frame = input.to_vec();
    let result = match transform {
        Transform::NatRequest(addr, port) => {
            nat_request(&mut frame, Endpoint::new(addr, port), mac)
        }
        Transform::NatReply(addr, port) => nat_reply(&mut frame, Endpoint::new(addr, port), mac),
        Transform::NatIcmpToReal(addr, port) => {
            nat_icmp_to_real(&mut frame, Endpoint::new(addr, port), mac)
        }
        Transform::NatIcmpToClient(addr, port) => {
            nat_icmp_to_client(&mut frame, Endpoint::new(addr, port), mac)
        }
        Transform::DirectRoute => direct_route(&mut frame, mac),
        Transform::Tunnel {
            outer_src,
            real_server,
            ident,
            mtu,
        } => {
            let params = TunnelParams {
                outer_src,
                real_server,
                ident,
                mtu,
                mac,
            };
            let mut buf = vec![0u8; TUNNEL_HEADROOM];
            buf.extend_from_slice(input);
            let mut icmp = vec![0u8; ICMP_ERROR_MAX_FRAME];
            return match tunnel(&mut buf, &params, &mut icmp) {
                Ok(TunnelOutcome::Encapsulated { len }) => {
                    buf.truncate(len);
                    (Outcome::Forwarded, buf)
                }
                Ok(TunnelOutcome::FragNeeded { len }) => {
                    icmp.truncate(len);
                    (Outcome::Replied, icmp)
                }
                Err(error) => (Outcome::Dropped(error), buf.split_off(TUNNEL_HEADROOM)),
            };
        }
    };
    match result {
        Ok(()) => (Outcome::Forwarded, frame),
        Err(error) => (Outcome::Dropped(error), frame),
    }
}

/// [`apply`] to a case's decoded input.
pub fn run(case: &Case) -> (Outcome, Vec<u8>) {
    let input = decode_hex(case.input).expect("golden hex decodes");
    apply(case.transform, case.mac, &input)
}

/// Every table.
pub const ALL: [(&str, &[Case]); 3] = [("NAT", NAT), ("TUN", TUN), ("DR", DR)];

/// VS/NAT: requests, replies, seed 002's port mapping, UDP with and without checksum, ICMP
/// errors both ways, and what is refused.
pub const NAT: &[Case] = &[
    Case {
        description: "NAT request: TCP SYN client:49152 → VIP:80 becomes client → 172.16.0.2:80",
        transform: Transform::NatRequest(RS1, 80),
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 003c 1c46 4000 40 06 a638 cb007132 cb00710a ",
            "c000 0050 12345678 00000000 a002 faf0 f86f 0000 ",
            "020405b40402080a00a1b2c30000000001030307",
        ),
        expected: Some(concat!(
            "525400000002 027464000002 0800 ",
            "4500 003c 1c46 4000 3f 06 3731 cb007132 ac100002 ",
            "c000 0050 12345678 00000000 a002 faf0 8868 0000 ",
            "020405b40402080a00a1b2c30000000001030307",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "NAT reply: TCP SYN-ACK 172.16.0.2:80 → client becomes VIP:80 → client",
        transform: Transform::NatReply(VIP, 80),
        mac: MacRewrite {
            src: O_MAC,
            dst: C_MAC,
        },
        input: concat!(
            "027464000002 525400000002 0800 ",
            "4500 003c 0000 4000 40 06 5277 ac100002 cb007132 ",
            "0050 c000 9abcdef0 12345679 a012 fe88 2447 0000 ",
            "020405b40402080a00d4e5f600a1b2c301030307",
        ),
        expected: Some(concat!(
            "525400123456 027464000001 0800 ",
            "4500 003c 0000 4000 3f 06 c37e cb00710a cb007132 ",
            "0050 c000 9abcdef0 12345679 a012 fe88 944e 0000 ",
            "020405b40402080a00d4e5f600a1b2c301030307",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "NAT request, seed 002 port mapping: client:49153 → VIP:80 becomes client → 172.16.0.3:8000 (data kept)",
        transform: Transform::NatRequest(RS2, 8000),
        mac: MacRewrite {
            src: I_MAC,
            dst: RS2_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 003a 2a2a 4000 40 06 9856 cb007132 cb00710a ",
            "c001 0050 0badcafe 600d0001 5018 01f6 5fdb 0000 474554202f20485454502f312e300d0a0d0a",
        ),
        expected: Some(concat!(
            "525400000003 027464000002 0800 ",
            "4500 003a 2a2a 4000 3f 06 294e cb007132 ac100003 ",
            "c001 1f40 0badcafe 600d0001 5018 01f6 d0e2 0000 474554202f20485454502f312e300d0a0d0a",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "NAT reply, seed 002 port mapping: 172.16.0.3:8000 → client becomes VIP:80 → client (odd-length data)",
        transform: Transform::NatReply(VIP, 80),
        mac: MacRewrite {
            src: O_MAC,
            dst: C_MAC,
        },
        input: concat!(
            "027464000002 525400000003 0800 ",
            "4500 003b 7777 4000 40 06 daff ac100003 cb007132 ",
            "1f40 c001 600d0001 0badcb10 5019 01fd e595 0000 ",
            "485454502f312e3020323030204f4b0d0a0d0a",
        ),
        expected: Some(concat!(
            "525400123456 027464000001 0800 ",
            "4500 003b 7777 4000 3f 06 4c08 cb00710a cb007132 ",
            "0050 c001 600d0001 0badcb10 5019 01fd 748e 0000 ",
            "485454502f312e3020323030204f4b0d0a0d0a",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "NAT request: UDP client:53000 → VIP:53 becomes client → 172.16.0.2:5353, checksum updated",
        transform: Transform::NatRequest(RS1, 5353),
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0023 0101 0000 40 11 018c cb007132 cb00710a ",
            "cf08 0035 000f 3121 74616e64656d3f",
        ),
        expected: Some(concat!(
            "525400000002 027464000002 0800 ",
            "4500 0023 0101 0000 3f 11 9284 cb007132 ac100002 ",
            "cf08 14e9 000f ac65 74616e64656d3f",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "NAT reply: UDP 172.16.0.2:5353 → client becomes VIP:53 → client, checksum updated",
        transform: Transform::NatReply(VIP, 53),
        mac: MacRewrite {
            src: O_MAC,
            dst: C_MAC,
        },
        input: concat!(
            "027464000002 525400000002 0800 ",
            "4500 0023 0202 0000 40 11 9083 ac100002 cb007132 ",
            "14e9 cf08 000f ca65 74616e64656d21",
        ),
        expected: Some(concat!(
            "525400123456 027464000001 0800 ",
            "4500 0023 0202 0000 3f 11 018b cb00710a cb007132 ",
            "0035 cf08 000f 4f21 74616e64656d21",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "NAT request: UDP without checksum (0) keeps 0; Ethernet padding kept",
        transform: Transform::NatRequest(RS1, 5353),
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0020 0303 0000 40 11 ff8c cb007132 cb00710a ",
            "cf09 0035 000c 0000 70696e67 ",
            "0000000000000000000000000000",
        ),
        expected: Some(concat!(
            "525400000002 027464000002 0800 ",
            "4500 0020 0303 0000 3f 11 9085 cb007132 ac100002 ",
            "cf09 14e9 000c 0000 70696e67 ",
            "0000000000000000000000000000",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "NAT reply: UDP without checksum (0) keeps 0",
        transform: Transform::NatReply(VIP, 53),
        mac: MacRewrite {
            src: O_MAC,
            dst: C_MAC,
        },
        input: concat!(
            "027464000002 525400000002 0800 ",
            "4500 0020 0404 0000 40 11 8e84 ac100002 cb007132 ",
            "14e9 cf09 000c 0000 706f6e67 ",
            "0000000000000000000000000000",
        ),
        expected: Some(concat!(
            "525400123456 027464000001 0800 ",
            "4500 0020 0404 0000 3f 11 ff8b cb00710a cb007132 ",
            "0035 cf09 000c 0000 706f6e67 ",
            "0000000000000000000000000000",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "NAT ICMP: port unreachable from 172.16.0.2 about client → RIP:5353 goes to the client from the VIP, quoting client → VIP:53 with its original UDP checksum",
        transform: Transform::NatIcmpToClient(VIP, 53),
        mac: MacRewrite {
            src: O_MAC,
            dst: C_MAC,
        },
        input: concat!(
            "027464000002 525400000002 0800 ",
            "45c0 003f 5151 0000 40 01 4068 ac100002 cb007132 ",
            "03 03 e562 00000000 ",
            "4500 0023 0101 0000 3f 11 9284 cb007132 ac100002 ",
            "cf08 14e9 000f ac65 74616e64656d3f",
        ),
        expected: Some(concat!(
            "525400123456 027464000001 0800 ",
            "45c0 003f 5151 0000 3f 01 b16f cb00710a cb007132 ",
            "03 03 755b 00000000 ",
            "4500 0023 0101 0000 3f 11 028c cb007132 cb00710a ",
            "cf08 0035 000f 3121 74616e64656d3f",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "NAT ICMP: time exceeded from a router about VIP:80 → client goes to 172.16.0.3, quoting 172.16.0.3:8000 → client (TCP checksum in the quote updated)",
        transform: Transform::NatIcmpToReal(RS2, 8000),
        mac: MacRewrite {
            src: I_MAC,
            dst: RS2_MAC,
        },
        input: concat!(
            "027464000001 525400aabbcc 0800 ",
            "45c0 0057 6161 0000 ff 01 e177 cb007101 cb00710a ",
            "0b 00 6d6b 00000000 ",
            "4500 003b 7777 4000 01 06 8a08 cb00710a cb007132 ",
            "0050 c001 600d0001 0badcb10 5019 01fd 748e 0000 ",
            "485454502f312e3020323030204f4b0d0a0d0a",
        ),
        expected: Some(concat!(
            "525400000003 027464000002 0800 ",
            "45c0 0057 6161 0000 fe 01 726f cb007101 ac100003 ",
            "0b 00 dd73 00000000 ",
            "4500 003b 7777 4000 01 06 1a00 ac100003 cb007132 ",
            "1f40 c001 600d0001 0badcb10 5019 01fd e595 0000 ",
            "485454502f312e3020323030204f4b0d0a0d0a",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "NAT request with TTL 1: exhausted, frame untouched",
        transform: Transform::NatRequest(RS1, 80),
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 003c 1c47 4000 01 06 e537 cb007132 cb00710a ",
            "c000 0050 12345678 00000000 a002 faf0 f86f 0000 ",
            "020405b40402080a00a1b2c30000000001030307",
        ),
        expected: None,
        outcome: Outcome::Dropped(FwdError::TtlExceeded),
    },
    Case {
        description: "NAT request with an IP option (Router Alert, IHL 6): offsets follow IHL",
        transform: Transform::NatRequest(RS1, 80),
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4600 002c 0aaa 4000 40 06 22e0 cb007132 cb00710a 94040000 ",
            "c002 0050 00000001 00000002 5010 03e8 7359 0000 ",
            "0000",
        ),
        expected: Some(concat!(
            "525400000002 027464000002 0800 ",
            "4600 002c 0aaa 4000 3f 06 b3d8 cb007132 ac100002 94040000 ",
            "c002 0050 00000001 00000002 5010 03e8 0352 0000 ",
            "0000",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "NAT: a non-first fragment (offset 8) has no ports and is refused",
        transform: Transform::NatRequest(RS1, 5353),
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 001c 0bbb 0001 40 11 f6d7 cb007132 cb00710a ",
            "667261676d656e74",
        ),
        expected: None,
        outcome: Outcome::Dropped(FwdError::IpFragment),
    },
    Case {
        description: "NAT: a UDP header whose length is 0 is malformed",
        transform: Transform::NatRequest(RS1, 5353),
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0020 0ccc 0000 40 11 f5c3 cb007132 cb00710a ",
            "cf08 0035 0000 0000 61626364",
        ),
        expected: None,
        outcome: Outcome::Dropped(FwdError::MalformedUdp),
    },
];

/// VS/TUN: IPIP encapsulation, the MTU and "fragmentation needed", and what is refused.
pub const TUN: &[Case] = &[
    Case {
        description: "TUN: TCP SYN encapsulated in IPIP 172.16.0.251 → 172.16.0.2 (DF copied, TTL 64, inner TTL 63)",
        transform: Transform::Tunnel {
            outer_src: IN_ADDR,
            real_server: RS1,
            ident: 0x0001,
            mtu: 1500,
        },
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 003c 1c46 4000 40 06 a638 cb007132 cb00710a ",
            "c000 0050 12345678 00000000 a002 faf0 f86f 0000 ",
            "020405b40402080a00a1b2c30000000001030307",
        ),
        expected: Some(concat!(
            "525400000002 027464000002 0800 ",
            "4500 0050 0001 4000 40 04 e18b ac1000fb ac100002 ",
            "4500 003c 1c46 4000 3f 06 a738 cb007132 cb00710a ",
            "c000 0050 12345678 00000000 a002 faf0 f86f 0000 ",
            "020405b40402080a00a1b2c30000000001030307",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "TUN: TOS (AF11, ECT(0)) copied to the outer header, DF clear stays clear, Ethernet padding trimmed",
        transform: Transform::Tunnel {
            outer_src: IN_ADDR,
            real_server: RS1,
            ident: 0x0002,
            mtu: 1500,
        },
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "452a 0028 1234 0000 40 06 f034 cb007132 cb00710a ",
            "c003 0050 01010101 02020202 5010 0400 6d3d 0000 ",
            "000000000000",
        ),
        expected: Some(concat!(
            "525400000002 027464000002 0800 ",
            "452a 003c 0002 0000 40 04 2175 ac1000fb ac100002 ",
            "452a 0028 1234 0000 3f 06 f134 cb007132 cb00710a ",
            "c003 0050 01010101 02020202 5010 0400 6d3d 0000",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "TUN: 80 bytes with DF do not fit a 96-byte MTU with the outer header: fragmentation needed (next-hop MTU 76) from the VIP to the client",
        transform: Transform::Tunnel {
            outer_src: IN_ADDR,
            real_server: RS1,
            ident: 0x0003,
            mtu: 96,
        },
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0050 4321 4000 40 06 7f49 cb007132 cb00710a ",
            "c004 0050 00000007 00000009 5018 0400 dc57 0000 ",
            "4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768",
        ),
        expected: Some(concat!(
            "525400123456 027464000001 0800 ",
            "45c0 006c 0003 0000 40 01 0191 cb00710a cb007132 ",
            "03 04 7530 0000004c ",
            "4500 0050 4321 4000 40 06 7f49 cb007132 cb00710a ",
            "c004 0050 00000007 00000009 5018 0400 dc57 0000 ",
            "4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768",
        )),
        outcome: Outcome::Replied,
    },
    Case {
        description: "TUN: too big without DF is dropped (no fragmentation)",
        transform: Transform::Tunnel {
            outer_src: IN_ADDR,
            real_server: RS1,
            ident: 0x0004,
            mtu: 96,
        },
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0050 4322 0000 40 06 bf48 cb007132 cb00710a ",
            "c004 0050 00000007 00000009 5018 0400 dc57 0000 ",
            "4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768",
        ),
        expected: None,
        outcome: Outcome::Dropped(FwdError::TunMtuExceeded),
    },
    Case {
        description: "TUN: TTL 1 is exhausted",
        transform: Transform::Tunnel {
            outer_src: IN_ADDR,
            real_server: RS1,
            ident: 0x0005,
            mtu: 1500,
        },
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 003c 1c48 4000 01 06 e536 cb007132 cb00710a ",
            "c000 0050 12345678 00000000 a002 faf0 f86f 0000 ",
            "020405b40402080a00a1b2c30000000001030307",
        ),
        expected: None,
        outcome: Outcome::Dropped(FwdError::TtlExceeded),
    },
    Case {
        description: "TUN: an ICMP error about a TUN connection is encapsulated to its real server untranslated",
        transform: Transform::Tunnel {
            outer_src: IN_ADDR,
            real_server: RS1,
            ident: 0x0006,
            mtu: 1500,
        },
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400aabbcc 0800 ",
            "45c0 0058 6262 0000 ff 01 e075 cb007101 cb00710a ",
            "0b 00 6d6c 00000000 ",
            "4500 003c 0000 4000 01 06 017f cb00710a cb007132 ",
            "0050 c000 9abcdef0 12345679 a012 fe88 944e 0000 ",
            "020405b40402080a00d4e5f600a1b2c301030307",
        ),
        expected: Some(concat!(
            "525400000002 027464000002 0800 ",
            "45c0 006c 0006 0000 40 04 20ab ac1000fb ac100002 ",
            "45c0 0058 6262 0000 fe 01 e175 cb007101 cb00710a ",
            "0b 00 6d6c 00000000 ",
            "4500 003c 0000 4000 01 06 017f cb00710a cb007132 ",
            "0050 c000 9abcdef0 12345679 a012 fe88 944e 0000 ",
            "020405b40402080a00d4e5f600a1b2c301030307",
        )),
        outcome: Outcome::Forwarded,
    },
];

/// VS/DR: the MAC rewrite, and what is refused.
pub const DR: &[Case] = &[
    Case {
        description: "DR: TCP SYN to the VIP goes to the real server MAC, only the TTL changes in IPv4",
        transform: Transform::DirectRoute,
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 003c 1c46 4000 40 06 a638 cb007132 cb00710a ",
            "c000 0050 12345678 00000000 a002 faf0 f86f 0000 ",
            "020405b40402080a00a1b2c30000000001030307",
        ),
        expected: Some(concat!(
            "525400000002 027464000002 0800 ",
            "4500 003c 1c46 4000 3f 06 a738 cb007132 cb00710a ",
            "c000 0050 12345678 00000000 a002 faf0 f86f 0000 ",
            "020405b40402080a00a1b2c30000000001030307",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "DR: UDP with IP options and TTL 2 leaves with TTL 1",
        transform: Transform::DirectRoute,
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4700 0026 0d0d 4000 02 11 5b77 cb007132 cb00710a 9404000001010100 ",
            "cf08 0035 000a 53ec 6472",
        ),
        expected: Some(concat!(
            "525400000002 027464000002 0800 ",
            "4700 0026 0d0d 4000 01 11 5c77 cb007132 cb00710a 9404000001010100 ",
            "cf08 0035 000a 53ec 6472",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "DR: an ICMP error about a DR connection goes to its real server untranslated",
        transform: Transform::DirectRoute,
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400aabbcc 0800 ",
            "45c0 0058 6262 0000 ff 01 e075 cb007101 cb00710a ",
            "0b 00 6d6c 00000000 ",
            "4500 003c 0000 4000 01 06 017f cb00710a cb007132 ",
            "0050 c000 9abcdef0 12345679 a012 fe88 944e 0000 ",
            "020405b40402080a00d4e5f600a1b2c301030307",
        ),
        expected: Some(concat!(
            "525400000002 027464000002 0800 ",
            "45c0 0058 6262 0000 fe 01 e175 cb007101 cb00710a ",
            "0b 00 6d6c 00000000 ",
            "4500 003c 0000 4000 01 06 017f cb00710a cb007132 ",
            "0050 c000 9abcdef0 12345679 a012 fe88 944e 0000 ",
            "020405b40402080a00d4e5f600a1b2c301030307",
        )),
        outcome: Outcome::Forwarded,
    },
    Case {
        description: "DR: TTL 0 is exhausted",
        transform: Transform::DirectRoute,
        mac: MacRewrite {
            src: I_MAC,
            dst: RS1_MAC,
        },
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 003c 1c49 4000 00 06 e635 cb007132 cb00710a ",
            "c000 0050 12345678 00000000 a002 faf0 f86f 0000 ",
            "020405b40402080a00a1b2c30000000001030307",
        ),
        expected: None,
        outcome: Outcome::Dropped(FwdError::TtlExceeded),
    },
];
