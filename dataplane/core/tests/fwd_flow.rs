//! `parse_flow` on literal frames, every refusal with its reason; the ICMP error builder's
//! RFC 1812 rules; the tunnel's buffer contract.

mod fwd_common;

use std::net::Ipv4Addr;

use fwd_common::{IpSpec, L4Spec, PacketSpec, cat, ethernet, icmp_message, ipv4_header};
use tandem_core::fwd::golden::{self, decode_hex};
use tandem_core::fwd::{
    self, Fragment, FwdError, ICMP_ERROR_MAX_FRAME, IcmpErrorInfo, IcmpErrorSpec, MacRewrite,
    ParsedFlow, TUNNEL_HEADROOM, TunnelOutcome, TunnelParams, parse_flow,
};
use tandem_core::lb::{Endpoint, Flow, Protocol};
use tandem_core::wire::icmpv4::Message;
use tandem_core::wire::tcp;

const CLIENT_MAC: [u8; 6] = golden::CLIENT_MAC;
const OUR_MAC: [u8; 6] = golden::OUTSIDE_MAC;

fn hex_frame(hex: &str) -> Vec<u8> {
    decode_hex(hex).expect("fixture hex decodes")
}

/// The golden NAT SYN: client:49152 → VIP:80 with options.
fn syn_frame() -> Vec<u8> {
    hex_frame(golden::NAT[0].input)
}

fn ip(src: Ipv4Addr, dst: Ipv4Addr) -> IpSpec {
    IpSpec {
        tos: 0,
        ident: 0x0101,
        df: false,
        mf: false,
        ttl: 64,
        src,
        dst,
        options: Vec::new(),
    }
}

fn udp(payload: &[u8]) -> L4Spec {
    L4Spec::Udp {
        sport: 5000,
        dport: 53,
        payload: payload.to_vec(),
        checksum: true,
    }
}

fn frame(datagram: &[u8]) -> Vec<u8> {
    cat(&[&ethernet(OUR_MAC, CLIENT_MAC), datagram])
}

/// Rewrites a frame's IPv4 header checksum after a test changed the header.
fn fix_ip_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame[24] = 0;
    frame[25] = 0;
    let cksum = fwd_common::naive_checksum(&[&frame[14..14 + ihl]]);
    frame[24..26].copy_from_slice(&cksum.to_be_bytes());
}

#[test]
fn a_tcp_syn_in_full() {
    assert_eq!(
        parse_flow(&syn_frame()),
        Ok(ParsedFlow {
            flow: Flow {
                proto: Protocol::Tcp,
                src: Endpoint::new(golden::CLIENT, 49152),
                dst: Endpoint::new(golden::VIP, 80),
            },
            tcp_flags: tcp::Flags::SYN,
            src_addr: golden::CLIENT,
            dst_addr: golden::VIP,
            l3_offset: 14,
            l4_offset: 34,
            ip_header_len: 20,
            total_len: 60,
            ttl: 64,
            dont_frag: true,
            fragment: Fragment::None,
            icmp_error: None,
        })
    );
}

#[test]
fn ip_options_move_the_transport_header() {
    let case = golden::NAT
        .iter()
        .find(|c| c.description.contains("IP option"))
        .unwrap();
    let parsed = parse_flow(&hex_frame(case.input)).unwrap();
    assert_eq!(parsed.ip_header_len, 24);
    assert_eq!(parsed.l4_offset, 38);
    assert_eq!(parsed.flow.src.port, 49154);
    assert_eq!(parsed.tcp_flags, tcp::Flags::ACK);
}

#[test]
fn an_icmp_port_unreachable_gives_the_quoted_flow() {
    let case = golden::NAT
        .iter()
        .find(|c| c.description.contains("port unreachable"))
        .unwrap();
    let parsed = parse_flow(&hex_frame(case.input)).unwrap();
    // The quoted datagram: client:53000 → RIP:5353 as the real server received it.
    assert_eq!(
        parsed.flow,
        Flow {
            proto: Protocol::Udp,
            src: Endpoint::new(golden::CLIENT, 53000),
            dst: Endpoint::new(golden::RS1, 5353),
        }
    );
    assert_eq!(
        (parsed.src_addr, parsed.dst_addr),
        (golden::RS1, golden::CLIENT)
    );
    assert_eq!(
        parsed.icmp_error,
        Some(IcmpErrorInfo {
            msg_type: Message::DST_UNREACHABLE,
            code: 3,
            quote_l3_offset: 42,
            quote_l4_offset: 62,
            quote_len: 35,
        })
    );
    assert!(parsed.is_icmp_error());
    assert_eq!(parsed.protocol(), Protocol::Udp);
}

#[test]
fn a_first_fragment_has_ports_and_a_non_first_one_is_refused() {
    // UDP "Length" 1008 counts the whole datagram; this first fragment carries 16 bytes.
    let mut spec = PacketSpec {
        ip: ip(golden::CLIENT, golden::VIP),
        l4: udp(&[0x61; 8]),
    };
    spec.ip.mf = true;
    let mut datagram = spec.datagram();
    datagram[24..26].copy_from_slice(&1008u16.to_be_bytes());
    let parsed = parse_flow(&frame(&datagram)).unwrap();
    assert_eq!(parsed.fragment, Fragment::First);
    assert_eq!((parsed.flow.src.port, parsed.flow.dst.port), (5000, 53));
    // The NAT transform handles it too (the checksum update needs no other fragment).
    let mac = MacRewrite {
        src: golden::INSIDE_MAC,
        dst: golden::RS1_MAC,
    };
    let mut first = frame(&datagram);
    fwd::nat_request(&mut first, Endpoint::new(golden::RS1, 5353), mac).unwrap();

    // Offset 1480: no transport header.
    let mut later = frame(&datagram);
    later[20..22].copy_from_slice(&(1480u16 / 8).to_be_bytes());
    fix_ip_checksum(&mut later);
    assert_eq!(parse_flow(&later), Err(FwdError::IpFragment));
    let before = later.clone();
    let target = Endpoint::new(golden::RS1, 5353);
    assert_eq!(
        fwd::nat_request(&mut later, target, mac),
        Err(FwdError::IpFragment)
    );
    assert_eq!(later, before);
    // But DR and TUN forward any datagram, since they read nothing above IPv4.
    assert_eq!(fwd::direct_route(&mut later, mac), Ok(()));
}

#[test]
fn every_refusal_has_its_reason() {
    let syn = syn_frame();
    let with = |at: usize, value: u8| {
        let mut f = syn.clone();
        f[at] = value;
        f
    };
    let with_fixed = |at: usize, value: u8| {
        let mut f = with(at, value);
        fix_ip_checksum(&mut f);
        f
    };
    let cases: Vec<(&str, Vec<u8>, FwdError)> = vec![
        ("13 bytes", syn[..13].to_vec(), FwdError::TruncatedEthernet),
        ("ARP", with(13, 0x06), FwdError::UnsupportedEthertype),
        ("IPv6", with(12, 0x86), FwdError::UnsupportedEthertype),
        (
            "IPv4 cut short",
            syn[..30].to_vec(),
            FwdError::MalformedIpv4,
        ),
        ("IHL 4", with(14, 0x44), FwdError::MalformedIpv4),
        ("version 6", with(14, 0x65), FwdError::MalformedIpv4),
        (
            "total length beyond",
            with(17, 0x3d),
            FwdError::MalformedIpv4,
        ),
        (
            "bad header checksum",
            with(24, 0x00),
            FwdError::BadIpv4Checksum,
        ),
        ("GRE", with_fixed(23, 47), FwdError::UnsupportedIpProtocol),
        ("TCP data offset 4", with(46, 0x40), FwdError::MalformedTcp),
        ("TCP data offset 15", with(46, 0xf0), FwdError::MalformedTcp),
    ];
    for (what, frame, error) in cases {
        assert_eq!(parse_flow(&frame), Err(error), "{what}");
        assert_eq!(error.drop_reason().name(), error.name());
    }

    // TCP shorter than 20 bytes within the datagram.
    let tcp_short = {
        let mut d = ipv4_header(&ip(golden::CLIENT, golden::VIP), 6, 12);
        d.extend_from_slice(&[0u8; 12]);
        frame(&d)
    };
    assert_eq!(parse_flow(&tcp_short), Err(FwdError::MalformedTcp));

    // UDP: "Length" 0, 7, and beyond the datagram; a datagram with 4 bytes of UDP.
    for claimed in [0u16, 7, 17] {
        let mut d = PacketSpec {
            ip: ip(golden::CLIENT, golden::VIP),
            l4: udp(b"abcdefgh"),
        }
        .datagram();
        d[24..26].copy_from_slice(&claimed.to_be_bytes());
        assert_eq!(
            parse_flow(&frame(&d)),
            Err(FwdError::MalformedUdp),
            "{claimed}"
        );
    }
    let mut d = ipv4_header(&ip(golden::CLIENT, golden::VIP), 17, 4);
    d.extend_from_slice(&[0x13, 0x88, 0x00, 0x35]);
    assert_eq!(parse_flow(&frame(&d)), Err(FwdError::MalformedUdp));
}

fn icmp_frame(message: &[u8], mf: bool) -> Vec<u8> {
    let mut outer = ip(golden::ROUTER, golden::VIP);
    outer.mf = mf;
    frame(&cat(&[&ipv4_header(&outer, 1, message.len()), message]))
}

#[test]
fn icmp_refusals() {
    let quoted = PacketSpec {
        ip: ip(golden::VIP, golden::CLIENT),
        l4: udp(b"quoted"),
    }
    .datagram();

    let echo = icmp_message(8, 0, 0x0bad_0001, b"ping");
    assert_eq!(
        parse_flow(&icmp_frame(&echo, false)),
        Err(FwdError::UnhandledIcmp)
    );

    let mut bad = icmp_message(3, 3, 0, &quoted);
    bad[2] ^= 0xff;
    assert_eq!(
        parse_flow(&icmp_frame(&bad, false)),
        Err(FwdError::BadIcmpChecksum)
    );

    assert_eq!(
        parse_flow(&icmp_frame(&[3, 3, 0xfc, 0xfc], false)),
        Err(FwdError::MalformedIcmp)
    );

    let good = icmp_message(3, 3, 0, &quoted);
    assert!(parse_flow(&icmp_frame(&good, false)).is_ok());
    assert_eq!(
        parse_flow(&icmp_frame(&good, true)),
        Err(FwdError::IpFragment)
    );

    // Quotes that cannot give a flow: IP header + 4 bytes, an ICMP datagram, a non-first
    // fragment, an IPv6 version nibble.
    let short = icmp_message(11, 0, 0, &quoted[..24]);
    let about_icmp = icmp_message(
        3,
        1,
        0,
        &cat(&[
            &ipv4_header(&ip(golden::VIP, golden::CLIENT), 1, 8),
            &icmp_message(0, 0, 0, &[]),
        ]),
    );
    let mut later = quoted.clone();
    later[7] = 0x10;
    let later = icmp_message(3, 3, 0, &later);
    let mut v6 = quoted.clone();
    v6[0] = 0x65;
    let v6 = icmp_message(3, 3, 0, &v6);
    for (what, message) in [
        ("short", short),
        ("ICMP", about_icmp),
        ("fragment", later),
        ("v6", v6),
    ] {
        assert_eq!(
            parse_flow(&icmp_frame(&message, false)),
            Err(FwdError::IcmpQuoteUnusable),
            "{what}"
        );
        let mut f = icmp_frame(&message, false);
        let before = f.clone();
        let mac = MacRewrite {
            src: OUR_MAC,
            dst: CLIENT_MAC,
        };
        let to = Endpoint::new(golden::RS1, 1);
        assert_eq!(
            fwd::nat_icmp_to_real(&mut f, to, mac),
            Err(FwdError::IcmpQuoteUnusable),
            "{what}"
        );
        assert_eq!(f, before);
    }
}

#[test]
fn every_icmp_error_type_is_translated_and_others_are_not() {
    let quoted = PacketSpec {
        ip: ip(golden::CLIENT, golden::RS1),
        l4: udp(b"q"),
    }
    .datagram();
    let mac = MacRewrite {
        src: OUR_MAC,
        dst: CLIENT_MAC,
    };
    let virt = Endpoint::new(golden::VIP, 53);
    for msg_type in 0..=255u8 {
        let mut f = icmp_frame(&icmp_message(msg_type, 0, 0, &quoted), false);
        let result = fwd::nat_icmp_to_client(&mut f, virt, mac);
        if matches!(msg_type, 3 | 4 | 5 | 11 | 12) {
            assert_eq!(result, Ok(()), "{msg_type}");
            assert_eq!(parse_flow(&f).unwrap().flow.dst, virt);
        } else {
            assert_eq!(result, Err(FwdError::UnhandledIcmp), "{msg_type}");
        }
    }
}

#[test]
fn icmp_errors_obey_rfc_1812() {
    let syn = syn_frame();
    let spec = IcmpErrorSpec::ttl_exceeded(Ipv4Addr::new(203, 0, 113, 11), 7);
    let mut out = [0u8; ICMP_ERROR_MAX_FRAME];
    let len = fwd::icmp_error(&syn, &spec, &mut out).unwrap();
    assert_eq!(len, 14 + 20 + 8 + 60);
    let reply = &out[..len];
    assert_eq!(reply[..6], CLIENT_MAC);
    assert_eq!(reply[6..12], OUR_MAC);
    assert_eq!(reply[14 + 1], 0xc0, "precedence 6, RFC 1812 §4.3.2.5");
    assert_eq!(reply[14 + 9], 1);
    assert_eq!(reply[14 + 12..14 + 16], [203, 0, 113, 11]);
    assert_eq!(reply[14 + 16..14 + 20], golden::CLIENT.octets());
    assert_eq!(reply[34..36], [11, 0]);
    assert_eq!(reply[42..], syn[14..]);
    assert!(fwd_common::frame_checks(reply).iter().all(|c| c.ok()));

    // Never about: an ICMP error, a link-layer multicast, a broadcast or multicast source
    // or destination, a non-first fragment.
    let quoted = PacketSpec {
        ip: ip(golden::VIP, golden::CLIENT),
        l4: udp(b"q"),
    }
    .datagram();
    let icmp_err = icmp_frame(&icmp_message(3, 3, 0, &quoted), false);
    let unknown_icmp = icmp_frame(&icmp_message(42, 0, 0, &[]), false);
    let mut multicast_mac = syn.clone();
    multicast_mac[0] = 0x01;
    let mut broadcast_src = syn.clone();
    broadcast_src[26..30].copy_from_slice(&[255; 4]);
    fix_ip_checksum(&mut broadcast_src);
    let mut multicast_dst = syn.clone();
    multicast_dst[30..34].copy_from_slice(&[224, 0, 0, 1]);
    fix_ip_checksum(&mut multicast_dst);
    let mut later = syn.clone();
    later[21] = 0x10;
    fix_ip_checksum(&mut later);
    for (what, frame) in [
        ("ICMP error", icmp_err),
        ("unknown ICMP type", unknown_icmp),
        ("multicast MAC", multicast_mac),
        ("broadcast source", broadcast_src),
        ("multicast destination", multicast_dst),
        ("non-first fragment", later),
    ] {
        assert_eq!(
            fwd::icmp_error(&frame, &spec, &mut out),
            Err(FwdError::IcmpErrorSuppressed),
            "{what}"
        );
    }
    // An echo request (a query) may get an error.
    let echo = icmp_frame(&icmp_message(8, 0, 1, b"ping"), false);
    assert!(fwd::icmp_error(&echo, &spec, &mut out).is_ok());

    // The output must hold the header and 64 bits of the datagram; less is refused.
    let mut small = [0u8; 14 + 28 + 20 + 7];
    assert_eq!(
        fwd::icmp_error(&syn, &spec, &mut small),
        Err(FwdError::BufferTooSmall)
    );
    let mut just = [0u8; 14 + 28 + 20 + 8];
    assert_eq!(fwd::icmp_error(&syn, &spec, &mut just), Ok(just.len()));
}

#[test]
fn icmp_errors_quote_at_most_576_bytes_in_all() {
    let big = PacketSpec {
        ip: ip(golden::CLIENT, golden::VIP),
        l4: udp(&[0x77; 1400]),
    }
    .datagram();
    let spec = IcmpErrorSpec::frag_needed(1480, golden::VIP, 1);
    let mut out = [0u8; 2000];
    let len = fwd::icmp_error(&frame(&big), &spec, &mut out).unwrap();
    assert_eq!(len, 14 + 576);
    assert_eq!(out[14 + 2..14 + 4], 576u16.to_be_bytes());
    assert_eq!(out[14 + 20 + 6..14 + 28], 1480u16.to_be_bytes());
    assert_eq!(out[42..len], big[..548]);
    assert!(fwd_common::frame_checks(&out[..len]).iter().all(|c| c.ok()));
}

#[test]
fn the_tunnel_needs_its_headroom_and_an_icmp_buffer() {
    let params = TunnelParams {
        outer_src: golden::INSIDE_ADDR,
        real_server: golden::RS1,
        ident: 1,
        mtu: 96,
        mac: MacRewrite {
            src: golden::INSIDE_MAC,
            dst: golden::RS1_MAC,
        },
    };
    let mut icmp = [0u8; ICMP_ERROR_MAX_FRAME];
    let mut short = [0u8; TUNNEL_HEADROOM - 1];
    assert_eq!(
        fwd::tunnel(&mut short, &params, &mut icmp),
        Err(FwdError::BufferTooSmall)
    );
    // Without headroom the frame is read 20 bytes late: not a valid frame.
    let mut no_room = syn_frame();
    assert!(fwd::tunnel(&mut no_room, &params, &mut icmp).is_err());
    assert_eq!(no_room, syn_frame());

    // Too big with DF and no room for the ICMP error: refused, untouched.
    let too_big = golden::TUN
        .iter()
        .find(|c| c.description.contains("fragmentation needed"))
        .unwrap();
    let mut buf = cat(&[&[0; TUNNEL_HEADROOM], &hex_frame(too_big.input)]);
    let before = buf.clone();
    assert_eq!(
        fwd::tunnel(&mut buf, &params, &mut icmp[..50]),
        Err(FwdError::BufferTooSmall)
    );
    assert_eq!(buf, before);
    assert!(matches!(
        fwd::tunnel(&mut buf, &params, &mut icmp),
        Ok(TunnelOutcome::FragNeeded { len: 122 })
    ));

    // An ICMP error too big for the tunnel, with DF: no error about an error (RFC 1812
    // §4.3.2.7; IPVS skips them too), so it is dropped.
    let quoted = PacketSpec {
        ip: ip(golden::VIP, golden::CLIENT),
        l4: udp(&[0x55; 60]),
    }
    .datagram();
    let message = icmp_message(3, 3, 0, &quoted);
    let mut outer = ip(golden::ROUTER, golden::VIP);
    outer.df = true;
    let error = frame(&cat(&[&ipv4_header(&outer, 1, message.len()), &message]));
    let mut buf = cat(&[&[0; TUNNEL_HEADROOM], &error]);
    assert_eq!(
        fwd::tunnel(&mut buf, &params, &mut icmp),
        Err(FwdError::TunMtuExceeded)
    );
    assert_eq!(buf[TUNNEL_HEADROOM..], error[..]);
}
