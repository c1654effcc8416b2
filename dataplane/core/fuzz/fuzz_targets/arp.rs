#![no_main]

use libfuzzer_sys::fuzz_target;
use std::hint::black_box;
use tandem_core::wire::arp::Packet;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    if let Ok(mut packet) = Packet::new_checked(&mut buf[..]) {
        black_box((
            packet.hardware_type(),
            packet.protocol_type(),
            packet.hardware_len(),
            packet.protocol_len(),
            packet.operation(),
        ));
        let (sha, spa) = (packet.sender_hardware_addr(), packet.sender_protocol_addr());
        let (tha, tpa) = (packet.target_hardware_addr(), packet.target_protocol_addr());
        packet.set_sender_hardware_addr(tha);
        packet.set_sender_protocol_addr(tpa);
        packet.set_target_hardware_addr(sha);
        packet.set_target_protocol_addr(spa);
        packet.set_operation(packet.operation());
        packet.set_ethernet_ipv4();
    }
});
