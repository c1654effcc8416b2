//! Golden packets: hand-written input frames, the exact frames the core must turn them into,
//! and the verdict, in the style of Katran's fixtures.
//!
//! The table is part of the library so that the same cases can be replayed against the real
//! binary (hw-tests) and used as fuzzing seeds; `tests/golden.rs` runs it against
//! [`Worker::process`](crate::Worker::process). The addresses are those of
//! `dataplane/examples/director.toml`: see [`director`].
//!
//! Frames are hex, one protocol layer per string; whitespace is ignored. Checksums were
//! computed by hand and are verified by full recomputation in the test.

use std::net::Ipv4Addr;

use crate::counters::DropReason;
use crate::director::{ConfigError, Director, Port, Verdict, Vip};
use crate::wire::MacAddr;

/// One fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// What the case shows.
    pub description: &'static str,
    /// The port index the frame arrives on.
    pub port: usize,
    /// The received frame, in hex.
    pub input: &'static str,
    /// The frame after processing, in hex; `None` when it must be left untouched.
    pub expected: Option<&'static str>,
    /// The verdict.
    pub verdict: Verdict,
}

/// MAC of port 0, "outside".
pub const OUTSIDE_MAC: MacAddr = [0x02, 0x74, 0x64, 0x00, 0x00, 0x01];
/// MAC of port 1, "inside".
pub const INSIDE_MAC: MacAddr = [0x02, 0x74, 0x64, 0x00, 0x00, 0x02];

/// The configuration the cases assume: outside 203.0.113.11/24, inside 172.16.0.251/24,
/// VIP 203.0.113.10 on outside. The client is 203.0.113.50 at 52:54:00:12:34:56, the real
/// server 172.16.0.2 at 52:54:00:00:00:02.
pub fn director() -> Result<Director, ConfigError> {
    Director::new(
        vec![
            Port {
                mac: OUTSIDE_MAC,
                addr: Ipv4Addr::new(203, 0, 113, 11),
                prefix_len: 24,
            },
            Port {
                mac: INSIDE_MAC,
                addr: Ipv4Addr::new(172, 16, 0, 251),
                prefix_len: 24,
            },
        ],
        vec![Vip {
            addr: Ipv4Addr::new(203, 0, 113, 10),
            port: 0,
        }],
    )
}

/// Decodes hex digits, ignoring whitespace; `None` on any other character or an odd count.
pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = hex
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect::<Option<_>>()?;
    if digits.len() % 2 != 0 {
        return None;
    }
    Some(digits.chunks_exact(2).map(|p| p[0] << 4 | p[1]).collect())
}

/// The ARP and ICMP responder.
pub const RESPONDER: &[Case] = &[
    Case {
        description: "ARP request for the director's outside address is answered",
        port: 0,
        input: concat!(
            "ffffffffffff 525400123456 0806 ",
            "0001 0800 06 04 0001 525400123456 cb007132 000000000000 cb00710b ",
            "000000000000000000000000000000000000", // padding to 60 bytes
        ),
        expected: Some(concat!(
            "525400123456 027464000001 0806 ",
            "0001 0800 06 04 0002 027464000001 cb00710b 525400123456 cb007132 ",
            "000000000000000000000000000000000000",
        )),
        verdict: Verdict::Reply,
    },
    Case {
        description: "ARP request for the VIP is answered (unpadded frame)",
        port: 0,
        input: concat!(
            "ffffffffffff 525400123456 0806 ",
            "0001 0800 06 04 0001 525400123456 cb007132 000000000000 cb00710a",
        ),
        expected: Some(concat!(
            "525400123456 027464000001 0806 ",
            "0001 0800 06 04 0002 027464000001 cb00710a 525400123456 cb007132",
        )),
        verdict: Verdict::Reply,
    },
    Case {
        description: "ARP request for another address on the segment is not ours",
        port: 0,
        input: concat!(
            "ffffffffffff 525400123456 0806 ",
            "0001 0800 06 04 0001 525400123456 cb007132 000000000000 cb007163",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::ArpNotForUs),
    },
    Case {
        description: "ARP request for the VIP on the inside port is not answered there",
        port: 1,
        input: concat!(
            "ffffffffffff 525400000002 0806 ",
            "0001 0800 06 04 0001 525400000002 ac100002 000000000000 cb00710a",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::ArpNotForUs),
    },
    Case {
        description: "ARP reply from a real server to the director is consumed",
        port: 1,
        input: concat!(
            "027464000002 525400000002 0806 ",
            "0001 0800 06 04 0002 525400000002 ac100002 027464000002 ac1000fb",
        ),
        expected: None,
        verdict: Verdict::Consumed,
    },
    Case {
        description: "ARP for IPv6 (protocol type 0x86dd) is malformed for us",
        port: 0,
        input: concat!(
            "ffffffffffff 525400123456 0806 ",
            "0001 86dd 06 04 0001 525400123456 cb007132 000000000000 cb00710b",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::MalformedArp),
    },
    Case {
        description: "ICMP echo to the VIP gets an echo reply (TTL 64, padding kept)",
        port: 0,
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0024 1c46 4000 39 01 ad55 cb007132 cb00710a ",
            "08 00 82f7 0bad 0007 74616e64656d2121 ", // echo, id 0x0bad, seq 7, "tandem!!"
            "00000000000000000000",                   // padding to 60 bytes
        ),
        expected: Some(concat!(
            "525400123456 027464000001 0800 ",
            "4500 0024 1c46 4000 40 01 a655 cb00710a cb007132 ",
            "00 00 8af7 0bad 0007 74616e64656d2121 ",
            "00000000000000000000",
        )),
        verdict: Verdict::Reply,
    },
    Case {
        description: "ICMP echo with id 0, seq 0 and no data: the reply's checksum is 0xffff",
        port: 1,
        input: concat!(
            "027464000002 525400000002 0800 ",
            "4500 001c 0000 0000 40 01 21c4 ac100002 ac1000fb ",
            "08 00 f7ff 0000 0000 ",
            "000000000000000000000000000000000000",
        ),
        expected: Some(concat!(
            "525400000002 027464000002 0800 ",
            "4500 001c 0000 0000 40 01 21c4 ac1000fb ac100002 ",
            "00 00 ffff 0000 0000 ",
            "000000000000000000000000000000000000",
        )),
        verdict: Verdict::Reply,
    },
    Case {
        description: "ICMP echo with a bad ICMP checksum is dropped",
        port: 0,
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0024 1c46 4000 39 01 ad55 cb007132 cb00710a ",
            "08 00 82f8 0bad 0007 74616e64656d2121",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::BadIcmpChecksum),
    },
    Case {
        description: "ICMP echo with a bad IPv4 header checksum is dropped",
        port: 0,
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0024 1c46 4000 39 01 ad56 cb007132 cb00710a ",
            "08 00 82f7 0bad 0007 74616e64656d2121",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::BadIpv4Checksum),
    },
    Case {
        description: "ICMP echo to an address that is not ours",
        port: 0,
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0024 1c46 4000 39 01 acfc cb007132 cb007163 ",
            "08 00 82f7 0bad 0007 74616e64656d2121",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::Ipv4NotForUs),
    },
    Case {
        description: "ICMP echo to the VIP in a link-layer broadcast is dropped (RFC 1122 §3.3.6)",
        port: 0,
        input: concat!(
            "ffffffffffff 525400123456 0800 ",
            "4500 0024 1c46 4000 39 01 ad55 cb007132 cb00710a ",
            "08 00 82f7 0bad 0007 74616e64656d2121",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::NotForUsMac),
    },
    Case {
        description: "a fragment (MF set) to the VIP is dropped",
        port: 0,
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0024 1c46 2000 39 01 cd55 cb007132 cb00710a ",
            "08 00 82f7 0bad 0007 74616e64656d2121",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::IpFragment),
    },
    Case {
        description: "ICMP echo with IP options (NOP NOP EOL EOL) is not answered",
        port: 0,
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4600 0028 1c46 4000 39 01 ab50 cb007132 cb00710a 01010000 ",
            "08 00 82f7 0bad 0007 74616e64656d2121",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::Ipv4Options),
    },
    Case {
        description: "UDP to the VIP is not served yet",
        port: 0,
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0024 1c46 4000 39 11 ad45 cb007132 cb00710a ",
            "d431 0035 0010 0000 74616e64656d2121",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::UnsupportedIpProtocol),
    },
    Case {
        description: "a frame too short for an Ethernet header",
        port: 0,
        input: "027464000001 525400123456 08",
        expected: None,
        verdict: Verdict::Drop(DropReason::TruncatedEthernet),
    },
    Case {
        description: "an ARP request cut off after the sender address",
        port: 0,
        input: concat!(
            "ffffffffffff 525400123456 0806 ",
            "0001 0800 06 04 0001 525400123456 cb007132",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::MalformedArp),
    },
    Case {
        description: "an IPv4 header cut off after 12 bytes",
        port: 0,
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0024 1c46 4000 39 01 ad55",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::MalformedIpv4),
    },
    Case {
        description: "an IPv4 total length beyond the end of the frame",
        port: 0,
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0024 1c46 4000 39 01 ad55 cb007132 cb00710a ",
            "08 00 82f7 0bad 0007 7461",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::MalformedIpv4),
    },
    Case {
        description: "an ICMP message shorter than its 8-byte header",
        port: 0,
        input: concat!(
            "027464000001 525400123456 0800 ",
            "4500 0018 1c46 4000 39 01 ad61 cb007132 cb00710a ",
            "08 00 f7ff",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::MalformedIcmp),
    },
    Case {
        description: "a multicast destination MAC (IPv4 all-hosts) is not for us",
        port: 0,
        input: concat!(
            "01005e000001 525400123456 0800 ",
            "4500 0024 1c46 4000 39 01 ad55 cb007132 cb00710a ",
            "08 00 82f7 0bad 0007 74616e64656d2121",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::NotForUsMac),
    },
    Case {
        description: "a VLAN-tagged frame is not supported",
        port: 0,
        input: concat!(
            "027464000001 525400123456 8100 0064 0800 ",
            "4500 0024 1c46 4000 39 01 ad55 cb007132 cb00710a ",
            "08 00 82f7 0bad 0007 74616e64656d2121",
        ),
        expected: None,
        verdict: Verdict::Drop(DropReason::UnsupportedEthertype),
    },
];
