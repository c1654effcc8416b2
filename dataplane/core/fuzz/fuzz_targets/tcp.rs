#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use std::net::Ipv4Addr;
use tandem_core::wire::tcp::{Packet, Repr};

// The first 8 bytes are the pseudo-header's addresses, the rest the segment.
fuzz_target!(|data: &[u8]| {
    let Some((addrs, segment)) = data.split_first_chunk::<8>() else {
        return;
    };
    let src = Ipv4Addr::new(addrs[0], addrs[1], addrs[2], addrs[3]);
    let dst = Ipv4Addr::new(addrs[4], addrs[5], addrs[6], addrs[7]);
    let mut buf = segment.to_vec();
    let Ok(mut packet) = Packet::new_checked(&mut buf[..]) else {
        return;
    };
    black_box((
        packet.src_port(),
        packet.dst_port(),
        packet.seq_number(),
        packet.ack_number(),
        packet.header_len(),
        packet.flags(),
        (
            packet.fin(),
            packet.syn(),
            packet.rst(),
            packet.psh(),
            packet.ack(),
            packet.urg(),
        ),
        packet.window_len(),
        packet.checksum(),
        packet.urgent_at(),
        packet.options(),
        packet.payload(),
        packet.verify_checksum(src, dst),
    ));
    packet.fill_checksum(src, dst);
    assert!(packet.verify_checksum(src, dst));
    // parse(emit(parse(x))) == parse(x).
    let packet = Packet::new_checked(&buf[..]).expect("still valid");
    let repr = Repr::parse(&packet, src, dst).expect("the checksum was just filled");
    let mut out = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Packet::new_unchecked(&mut out[..]), src, dst);
    let again = Packet::new_checked(&out[..]).expect("emitted a valid segment");
    assert_eq!(Repr::parse(&again, src, dst), Ok(repr));
});
