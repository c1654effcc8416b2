#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_core::fwd::{Fragment, parse_flow};
use tandem_core::lb::Protocol;
use tandem_core::wire::tcp;

// parse_flow on any frame: never a panic, and what it reports lies inside the frame.
fuzz_target!(|frame: &[u8]| {
    let Ok(parsed) = parse_flow(frame) else {
        return;
    };
    let end = parsed.l3_offset + usize::from(parsed.total_len);
    assert!(end <= frame.len());
    assert_eq!(parsed.l3_offset, 14);
    assert_eq!(parsed.l4_offset, parsed.l3_offset + parsed.ip_header_len);
    assert!((20..=60).contains(&parsed.ip_header_len));
    assert!(parsed.l4_offset <= end);
    match parsed.icmp_error {
        Some(icmp) => {
            assert_eq!(parsed.fragment, Fragment::None);
            assert_eq!(icmp.quote_l3_offset, parsed.l4_offset + 8);
            assert_eq!(icmp.quote_l3_offset + icmp.quote_len, end);
            assert!(icmp.quote_l4_offset + 8 <= end);
            assert!(matches!(icmp.msg_type.0, 3 | 4 | 5 | 11 | 12));
            assert_eq!(parsed.tcp_flags, tcp::Flags::NONE);
        }
        None => {
            assert_eq!(parsed.flow.src.addr, parsed.src_addr);
            assert_eq!(parsed.flow.dst.addr, parsed.dst_addr);
            let l4_min = match parsed.flow.proto {
                Protocol::Tcp => 20,
                Protocol::Udp => 8,
            };
            assert!(parsed.l4_offset + l4_min <= end);
        }
    }
});
