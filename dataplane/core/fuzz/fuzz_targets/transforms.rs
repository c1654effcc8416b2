#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use tandem_core::fwd::{
    self, FwdError, ICMP_ERROR_MAX_FRAME, IcmpErrorSpec, MacRewrite, TUNNEL_HEADROOM,
    TunnelOutcome, TunnelParams,
};
use tandem_core::lb::Endpoint;
use tandem_core::wire::{ethernet, ipv4};

/// Whether the frame's (outer) IPv4 header checksum verifies.
fn ip_ok(frame: &[u8]) -> bool {
    ethernet::Frame::new_checked(frame)
        .ok()
        .and_then(|eth| {
            ipv4::Packet::new_checked(eth.payload())
                .ok()
                .map(|ip| ip.verify_checksum())
        })
        .unwrap_or(false)
}

// 10 bytes of parameters (address, port, MTU, ICMP buffer length), then the frame. Every
// transform runs on it: never a panic; a refused frame is untouched; a frame whose IPv4
// checksum was right leaves with a right one (the inner one too, for the tunnel).
fuzz_target!(|data: &[u8]| {
    let Some((params, frame)) = data.split_first_chunk::<10>() else {
        return;
    };
    let to = Endpoint::new(
        Ipv4Addr::new(params[0], params[1], params[2], params[3]),
        u16::from_be_bytes([params[4], params[5]]),
    );
    let mtu = u16::from_be_bytes([params[6], params[7]]);
    let out_len =
        usize::from(u16::from_be_bytes([params[8], params[9]])) % (ICMP_ERROR_MAX_FRAME + 1);
    let mac = MacRewrite {
        src: [2, 0, 0, 0, 0, 1],
        dst: [2, 0, 0, 0, 0, 2],
    };
    let was_ok = ip_ok(frame);

    type Transform = fn(&mut [u8], Endpoint, MacRewrite) -> Result<(), FwdError>;
    let transforms: [Transform; 5] = [
        fwd::nat_request,
        fwd::nat_reply,
        fwd::nat_icmp_to_real,
        fwd::nat_icmp_to_client,
        |f, _, mac| fwd::direct_route(f, mac),
    ];
    for transform in transforms {
        let mut copy = frame.to_vec();
        match transform(&mut copy, to, mac) {
            Ok(()) => assert!(!was_ok || ip_ok(&copy)),
            Err(_) => assert_eq!(copy, frame),
        }
    }

    let mut buf = vec![0u8; TUNNEL_HEADROOM];
    buf.extend_from_slice(frame);
    let mut icmp = vec![0u8; out_len];
    let params = TunnelParams {
        outer_src: to.addr,
        real_server: to.addr,
        ident: to.port,
        mtu,
        mac,
    };
    match fwd::tunnel(&mut buf, &params, &mut icmp) {
        Ok(TunnelOutcome::Encapsulated { len }) => {
            assert!(ip_ok(&buf[..len]));
            let inner = &buf[ethernet::HEADER_LEN + ipv4::HEADER_LEN..len];
            assert!(!was_ok || ipv4::Packet::new_checked(inner).unwrap().verify_checksum());
        }
        Ok(TunnelOutcome::FragNeeded { len }) => {
            assert_eq!(&buf[TUNNEL_HEADROOM..], frame);
            assert!(ip_ok(&icmp[..len]));
        }
        Err(_) => assert_eq!(&buf[TUNNEL_HEADROOM..], frame),
    }

    let spec = IcmpErrorSpec::ttl_exceeded(to.addr, to.port);
    if let Ok(len) = fwd::icmp_error(frame, &spec, &mut icmp) {
        assert!(ip_ok(&icmp[..len]));
    }
});
