#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use tandem_core::wire::ipv4::Packet;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    if let Ok(mut packet) = Packet::new_checked(&mut buf[..]) {
        black_box((
            packet.version(),
            packet.header_len(),
            packet.dscp(),
            packet.ecn(),
            packet.total_len(),
            packet.ident(),
            packet.dont_frag(),
            packet.more_frags(),
            packet.frag_offset(),
            packet.is_fragment(),
            packet.ttl(),
            packet.protocol(),
            packet.checksum(),
            packet.verify_checksum(),
            packet.src_addr(),
            packet.dst_addr(),
        ));
        black_box((packet.options(), packet.payload()));
        let (src, dst) = (packet.src_addr(), packet.dst_addr());
        packet.set_src_addr(dst);
        packet.set_dst_addr(src);
        packet.set_ttl(packet.ttl().wrapping_sub(1));
        black_box((packet.options_mut().len(), packet.payload_mut().len()));
        packet.fill_checksum();
        assert!(packet.verify_checksum());
    }
});
