#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use std::net::Ipv4Addr;
use tandem_core::wire::udp::{Packet, Repr};

// The first 8 bytes are the pseudo-header's addresses, the rest the datagram.
fuzz_target!(|data: &[u8]| {
    let Some((addrs, datagram)) = data.split_first_chunk::<8>() else {
        return;
    };
    let src = Ipv4Addr::new(addrs[0], addrs[1], addrs[2], addrs[3]);
    let dst = Ipv4Addr::new(addrs[4], addrs[5], addrs[6], addrs[7]);
    let mut buf = datagram.to_vec();
    let Ok(mut packet) = Packet::new_checked(&mut buf[..]) else {
        return;
    };
    black_box((
        packet.src_port(),
        packet.dst_port(),
        packet.len(),
        packet.checksum(),
        packet.payload(),
        packet.verify_checksum(src, dst),
    ));
    if let Ok(repr) = Repr::parse(
        &Packet::new_checked(datagram).expect("checked above"),
        src,
        dst,
    ) {
        let mut out = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut out[..]), src, dst);
        let again = Packet::new_checked(&out[..]).expect("emitted a valid datagram");
        assert_ne!(
            again.checksum(),
            0,
            "RFC 768: a computed zero is sent as all ones"
        );
        assert_eq!(Repr::parse(&again, src, dst), Ok(repr));
    }
    packet.fill_checksum(src, dst);
    assert_ne!(packet.checksum(), 0);
    assert!(packet.verify_checksum(src, dst));
});
