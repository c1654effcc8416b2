#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use tandem_core::wire::ethernet::Frame;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    if let Ok(mut frame) = Frame::new_checked(&mut buf[..]) {
        black_box((frame.dst_addr(), frame.src_addr(), frame.ethertype()));
        black_box(frame.payload());
        let (dst, src, ethertype) = (frame.dst_addr(), frame.src_addr(), frame.ethertype());
        frame.set_dst_addr(src);
        frame.set_src_addr(dst);
        frame.set_ethertype(ethertype);
        black_box(frame.payload_mut());
    }
});
