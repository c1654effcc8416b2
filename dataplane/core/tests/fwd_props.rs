//! Property tests of the forwarding transforms: for random valid IPv4/TCP/UDP datagrams
//! (random IP and TCP options, payloads of any length, UDP with and without checksum) and
//! random new addresses and ports, each transform's output equals the same datagram built
//! from scratch with every checksum fully recomputed (outer, quoted and inner headers);
//! `parse_flow` reads back what was built; `Repr`s round-trip; and nothing panics or leaves
//! a refused frame modified, whatever the bytes.

mod fwd_common;

use std::net::Ipv4Addr;

use fwd_common::{
    IpSpec, L4Spec, PacketSpec, cat, ethernet, frame_checks, icmp_message, ipv4_header,
};
use proptest::prelude::*;
use tandem_core::fwd::{
    self, Fragment, FwdError, ICMP_ERROR_MAX_FRAME, IcmpErrorInfo, MacRewrite, ParsedFlow,
    TUNNEL_HEADROOM, TunnelOutcome, TunnelParams, parse_flow,
};
use tandem_core::lb::{Endpoint, Flow, Protocol};
use tandem_core::wire::icmpv4::Message;
use tandem_core::wire::{tcp, udp};

// ---- Strategies ----

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from_bits)
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (addr(), any::<u16>()).prop_map(|(a, p)| Endpoint::new(a, p))
}

fn mac() -> impl Strategy<Value = [u8; 6]> {
    any::<[u8; 6]>()
}

fn mac_rewrite() -> impl Strategy<Value = MacRewrite> {
    (mac(), mac()).prop_map(|(src, dst)| MacRewrite { src, dst })
}

/// Options of 0 to 40 bytes, in 4-byte words, of any content (nothing interprets them).
fn options() -> impl Strategy<Value = Vec<u8>> {
    (0usize..=10).prop_flat_map(|words| proptest::collection::vec(any::<u8>(), words * 4))
}

fn ip_spec(ttl: impl Strategy<Value = u8>) -> impl Strategy<Value = IpSpec> {
    (
        any::<u8>(),
        any::<u16>(),
        any::<bool>(),
        prop::bool::weighted(0.1),
        ttl,
        addr(),
        addr(),
        options(),
    )
        .prop_map(|(tos, ident, df, mf, ttl, src, dst, options)| IpSpec {
            tos,
            ident,
            df,
            mf,
            ttl,
            src,
            dst,
            options,
        })
}

fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn l4_spec(max_payload: usize) -> impl Strategy<Value = L4Spec> {
    prop_oneof![
        (
            any::<(u16, u16, u32, u32, u8, u16, u16)>(),
            options(),
            payload(max_payload),
        )
            .prop_map(
                |((sport, dport, seq, ack, flags, window, urgent), options, payload)| {
                    L4Spec::Tcp {
                        sport,
                        dport,
                        seq,
                        ack,
                        flags,
                        window,
                        urgent,
                        options,
                        payload,
                    }
                }
            ),
        (any::<(u16, u16, bool)>(), payload(max_payload)).prop_map(
            |((sport, dport, checksum), payload)| L4Spec::Udp {
                sport,
                dport,
                payload,
                checksum,
            }
        ),
    ]
}

/// A forwardable datagram: TTL 2 or more.
fn packet_spec() -> impl Strategy<Value = PacketSpec> {
    (ip_spec(2u8..=255), l4_spec(300)).prop_map(|(ip, l4)| PacketSpec { ip, l4 })
}

/// Ethernet padding after the datagram (a frame is at least 60 bytes on the wire; the glue
/// may hand over more).
fn padding() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), payload(20)]
}

fn frame_of(eth_dst: [u8; 6], eth_src: [u8; 6], datagram: &[u8], padding: &[u8]) -> Vec<u8> {
    cat(&[&ethernet(eth_dst, eth_src), datagram, padding])
}

/// The MACs a frame leaves with.
fn rewritten_eth(mac: MacRewrite) -> Vec<u8> {
    ethernet(mac.dst, mac.src)
}

fn with_ttl_decremented(mut ip: IpSpec) -> IpSpec {
    ip.ttl -= 1;
    ip
}

fn assert_all_checksums_right(frame: &[u8]) -> Result<(), TestCaseError> {
    for check in frame_checks(frame) {
        prop_assert!(check.ok(), "{check:?}");
    }
    Ok(())
}

/// An ICMP error about `inner` (quoting `quote_len` bytes of it).
#[derive(Debug, Clone)]
struct IcmpCase {
    outer: IpSpec,
    msg_type: u8,
    code: u8,
    rest: u32,
    inner: PacketSpec,
    quote_len: usize,
}

impl IcmpCase {
    /// The ICMP error's datagram, quoting `self.inner`; but where the quote ends halfway
    /// through the quoted TCP checksum, that byte is taken from `original` (a translation
    /// cannot update half a checksum exactly, and leaves it as it was).
    fn translated_datagram(&self, original: &IcmpCase) -> Vec<u8> {
        let mut datagram = self.datagram();
        let at = 20 + self.inner.ip.options.len() + 16;
        if self.inner.l4.proto() == 6 && self.quote_len == at + 1 {
            let outer_len = 20 + self.outer.options.len() + 8;
            let original_byte = original.inner.datagram()[at];
            datagram[outer_len + at] = original_byte;
            // Recompute the ICMP checksum over the message from scratch.
            let icmp = outer_len - 8;
            datagram[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
            let fixed = fwd_common::naive_checksum(&[&datagram[icmp..]]);
            datagram[icmp + 2..icmp + 4].copy_from_slice(&fixed.to_be_bytes());
        }
        datagram
    }

    fn datagram(&self) -> Vec<u8> {
        let quoted = self.inner.datagram();
        let message = icmp_message(
            self.msg_type,
            self.code,
            self.rest,
            &quoted[..self.quote_len],
        );
        cat(&[&ipv4_header(&self.outer, 1, message.len()), &message])
    }
}

fn icmp_case() -> impl Strategy<Value = IcmpCase> {
    // The error itself is never a fragment (parse_flow refuses fragmented ICMP).
    let outer = ip_spec(2u8..=255).prop_map(|mut ip| {
        ip.mf = false;
        ip
    });
    (
        outer,
        prop::sample::select(vec![3u8, 4, 5, 11, 12]),
        any::<u8>(),
        any::<u32>(),
        ip_spec(any::<u8>()),
        l4_spec(200),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(outer, msg_type, code, rest, inner_ip, inner_l4, cut)| {
            let inner = PacketSpec {
                ip: inner_ip,
                l4: inner_l4,
            };
            let len = inner.datagram().len();
            let min = 20 + inner.ip.options.len() + 8;
            let quote_len = min + cut.index(len - min + 1);
            IcmpCase {
                outer,
                msg_type,
                code,
                rest,
                inner,
                quote_len,
            }
        })
}

fn is_unicast(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback())
}

// ---- Properties ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// NAT request: the output is the same datagram built from scratch with the new
    /// destination, TTL − 1, every checksum recomputed; padding kept.
    #[test]
    fn nat_request_equals_full_recomputation(
        spec in packet_spec(),
        eth in (mac(), mac()),
        pad in padding(),
        to in endpoint(),
        mac in mac_rewrite(),
    ) {
        let mut frame = frame_of(eth.0, eth.1, &spec.datagram(), &pad);
        fwd::nat_request(&mut frame, to, mac).unwrap();

        let mut want = spec.clone();
        want.ip = with_ttl_decremented(want.ip);
        want.ip.dst = to.addr;
        let (sport, _) = want.l4.ports();
        want.l4.set_ports(sport, to.port);
        let expected = cat(&[&rewritten_eth(mac), &want.datagram(), &pad]);
        prop_assert_eq!(&frame, &expected);
        assert_all_checksums_right(&frame)?;
    }

    /// NAT reply: same with the new source.
    #[test]
    fn nat_reply_equals_full_recomputation(
        spec in packet_spec(),
        eth in (mac(), mac()),
        pad in padding(),
        from in endpoint(),
        mac in mac_rewrite(),
    ) {
        let mut frame = frame_of(eth.0, eth.1, &spec.datagram(), &pad);
        fwd::nat_reply(&mut frame, from, mac).unwrap();

        let mut want = spec.clone();
        want.ip = with_ttl_decremented(want.ip);
        want.ip.src = from.addr;
        let (_, dport) = want.l4.ports();
        want.l4.set_ports(from.port, dport);
        let expected = cat(&[&rewritten_eth(mac), &want.datagram(), &pad]);
        prop_assert_eq!(&frame, &expected);
    }

    /// DR: only the MACs and the TTL (with its checksum) change.
    #[test]
    fn direct_route_equals_full_recomputation(
        spec in packet_spec(),
        eth in (mac(), mac()),
        pad in padding(),
        mac in mac_rewrite(),
    ) {
        let mut frame = frame_of(eth.0, eth.1, &spec.datagram(), &pad);
        fwd::direct_route(&mut frame, mac).unwrap();
        let mut want = spec.clone();
        want.ip = with_ttl_decremented(want.ip);
        let expected = cat(&[&rewritten_eth(mac), &want.datagram(), &pad]);
        prop_assert_eq!(&frame, &expected);
    }

    /// ICMP error from the real-server side about a NAT request: the outer source becomes
    /// the VIP, the quoted destination VIP:vport, every checksum (outer IPv4, ICMP, quoted
    /// IPv4, quoted TCP/UDP where quoted) equal to a full recomputation of the translated
    /// datagrams.
    #[test]
    fn nat_icmp_to_client_equals_full_recomputation(
        case in icmp_case(),
        eth in (mac(), mac()),
        pad in padding(),
        virt in endpoint(),
        mac in mac_rewrite(),
    ) {
        let mut frame = frame_of(eth.0, eth.1, &case.datagram(), &pad);
        fwd::nat_icmp_to_client(&mut frame, virt, mac).unwrap();

        let mut want = case.clone();
        want.outer = with_ttl_decremented(want.outer);
        want.outer.src = virt.addr;
        want.inner.ip.dst = virt.addr;
        let (sport, _) = want.inner.l4.ports();
        want.inner.l4.set_ports(sport, virt.port);
        let expected = cat(&[&rewritten_eth(mac), &want.translated_datagram(&case), &pad]);
        prop_assert_eq!(&frame, &expected);
        assert_all_checksums_right(&frame)?;
    }

    /// ICMP error from outside about a NAT reply: the outer destination becomes the real
    /// server, the quoted source RIP:rport.
    #[test]
    fn nat_icmp_to_real_equals_full_recomputation(
        case in icmp_case(),
        eth in (mac(), mac()),
        pad in padding(),
        real in endpoint(),
        mac in mac_rewrite(),
    ) {
        let mut frame = frame_of(eth.0, eth.1, &case.datagram(), &pad);
        fwd::nat_icmp_to_real(&mut frame, real, mac).unwrap();

        let mut want = case.clone();
        want.outer = with_ttl_decremented(want.outer);
        want.outer.dst = real.addr;
        want.inner.ip.src = real.addr;
        let (_, dport) = want.inner.l4.ports();
        want.inner.l4.set_ports(real.port, dport);
        let expected = cat(&[&rewritten_eth(mac), &want.translated_datagram(&case), &pad]);
        prop_assert_eq!(&frame, &expected);
    }

    /// TUN: encapsulated exactly as RFC 2003 says, or "fragmentation needed" with DF, or
    /// dropped without DF; the outer header's checksum is right, the inner datagram is the
    /// original with TTL − 1.
    #[test]
    fn tunnel_equals_full_recomputation(
        spec in (ip_spec(2u8..=255), l4_spec(1500)).prop_map(|(ip, l4)| PacketSpec { ip, l4 }),
        eth in (mac(), mac()),
        pad in padding(),
        outer_src in addr(),
        real_server in addr(),
        ident in any::<u16>(),
        mtu in prop_oneof![68u16..=1600, Just(1500u16), Just(9000u16)],
        mac in mac_rewrite(),
    ) {
        let datagram = spec.datagram();
        let input = frame_of(eth.0, eth.1, &datagram, &pad);
        let mut buf = cat(&[&[0x5a; TUNNEL_HEADROOM], &input]);
        let mut icmp = [0u8; ICMP_ERROR_MAX_FRAME];
        let params = TunnelParams { outer_src, real_server, ident, mtu, mac };
        let result = fwd::tunnel(&mut buf, &params, &mut icmp);

        if datagram.len() + 20 <= usize::from(mtu) {
            let Ok(TunnelOutcome::Encapsulated { len }) = result else {
                return Err(TestCaseError::fail(format!("{result:?}")));
            };
            let mut inner = spec.clone();
            inner.ip = with_ttl_decremented(inner.ip);
            let inner = inner.datagram();
            let outer = IpSpec {
                tos: spec.ip.tos,
                ident,
                df: spec.ip.df,
                mf: false,
                ttl: 64,
                src: outer_src,
                dst: real_server,
                options: Vec::new(),
            };
            let expected = cat(&[&rewritten_eth(mac), &ipv4_header(&outer, 4, inner.len()), &inner]);
            prop_assert_eq!(&buf[..len], &expected[..]);
            assert_all_checksums_right(&buf[..len])?;
            return Ok(());
        }
        // Too big: whatever happens, the request is untouched.
        prop_assert_eq!(&buf[TUNNEL_HEADROOM..], &input[..]);
        let answerable = spec.ip.df
            && is_unicast(spec.ip.src)
            && is_unicast(spec.ip.dst)
            && eth.0[0] & 1 == 0;
        if !answerable {
            prop_assert_eq!(result, Err(FwdError::TunMtuExceeded));
            return Ok(());
        }
        let Ok(TunnelOutcome::FragNeeded { len }) = result else {
            return Err(TestCaseError::fail(format!("{result:?}")));
        };
        // From the VIP back to the client, quoting up to 576 bytes in all (RFC 1812).
        let quote = &datagram[..datagram.len().min(576 - 28)];
        let message = icmp_message(3, 4, u32::from(mtu - 20), quote);
        let header = IpSpec {
            tos: 0xc0,
            ident,
            df: false,
            mf: false,
            ttl: 64,
            src: spec.ip.dst,
            dst: spec.ip.src,
            options: Vec::new(),
        };
        let expected = cat(&[
            &ethernet(eth.1, eth.0),
            &ipv4_header(&header, 1, message.len()),
            &message,
        ]);
        prop_assert_eq!(&icmp[..len], &expected[..]);
        prop_assert!(len <= ICMP_ERROR_MAX_FRAME);
    }

    /// parse_flow reads back every field of a TCP/UDP datagram that was built.
    #[test]
    fn parse_flow_reads_what_was_built(
        spec in (ip_spec(any::<u8>()), l4_spec(300)).prop_map(|(ip, l4)| PacketSpec { ip, l4 }),
        eth in (mac(), mac()),
        pad in padding(),
    ) {
        let datagram = spec.datagram();
        let frame = frame_of(eth.0, eth.1, &datagram, &pad);
        let (sport, dport) = spec.l4.ports();
        let (proto, tcp_flags) = match &spec.l4 {
            L4Spec::Tcp { flags, .. } => (Protocol::Tcp, tcp::Flags(*flags)),
            L4Spec::Udp { .. } => (Protocol::Udp, tcp::Flags::NONE),
        };
        let header_len = 20 + spec.ip.options.len();
        let expected = ParsedFlow {
            flow: Flow {
                proto,
                src: Endpoint::new(spec.ip.src, sport),
                dst: Endpoint::new(spec.ip.dst, dport),
            },
            tcp_flags,
            src_addr: spec.ip.src,
            dst_addr: spec.ip.dst,
            l3_offset: 14,
            l4_offset: 14 + header_len,
            ip_header_len: header_len,
            total_len: u16::try_from(datagram.len()).unwrap(),
            ttl: spec.ip.ttl,
            dont_frag: spec.ip.df,
            fragment: if spec.ip.mf { Fragment::First } else { Fragment::None },
            icmp_error: None,
        };
        prop_assert_eq!(parse_flow(&frame), Ok(expected));
    }

    /// parse_flow finds the quoted flow of an ICMP error.
    #[test]
    fn parse_flow_reads_icmp_errors(case in icmp_case(), eth in (mac(), mac()), pad in padding()) {
        let datagram = case.datagram();
        let frame = frame_of(eth.0, eth.1, &datagram, &pad);
        let parsed = parse_flow(&frame).unwrap();
        let (sport, dport) = case.inner.l4.ports();
        let proto = if case.inner.l4.proto() == 6 { Protocol::Tcp } else { Protocol::Udp };
        prop_assert_eq!(parsed.flow, Flow {
            proto,
            src: Endpoint::new(case.inner.ip.src, sport),
            dst: Endpoint::new(case.inner.ip.dst, dport),
        });
        let l4 = 14 + 20 + case.outer.options.len();
        prop_assert_eq!(parsed.icmp_error, Some(IcmpErrorInfo {
            msg_type: Message(case.msg_type),
            code: case.code,
            quote_l3_offset: l4 + 8,
            quote_l4_offset: l4 + 8 + 20 + case.inner.ip.options.len(),
            quote_len: case.quote_len,
        }));
        prop_assert_eq!(parsed.l4_offset, l4);
        prop_assert_eq!((parsed.src_addr, parsed.dst_addr), (case.outer.src, case.outer.dst));
        prop_assert_eq!(parsed.tcp_flags, tcp::Flags::NONE);
    }

    /// tcp::Repr: parse(emit(x)) == x.
    #[test]
    fn tcp_repr_round_trips(
        fields in any::<(u16, u16, u32, u32, u8, u16, u16)>(),
        options in options(),
        payload in payload(200),
        src in addr(),
        dst in addr(),
    ) {
        let (src_port, dst_port, seq_number, ack_number, flags, window_len, urgent_at) = fields;
        let repr = tcp::Repr {
            src_port, dst_port, seq_number, ack_number, flags: tcp::Flags(flags),
            window_len, urgent_at, options: &options, payload: &payload,
        };
        let mut bytes = vec![0u8; repr.buffer_len()];
        repr.emit(&mut tcp::Packet::new_unchecked(&mut bytes[..]), src, dst);
        let packet = tcp::Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_eq!(tcp::Repr::parse(&packet, src, dst), Ok(repr));
    }

    /// udp::Repr: parse(emit(x)) == x.
    #[test]
    fn udp_repr_round_trips(
        ports in any::<(u16, u16)>(),
        payload in payload(300),
        src in addr(),
        dst in addr(),
    ) {
        let repr = udp::Repr { src_port: ports.0, dst_port: ports.1, payload: &payload };
        let mut bytes = vec![0u8; repr.buffer_len()];
        repr.emit(&mut udp::Packet::new_unchecked(&mut bytes[..]), src, dst);
        let packet = udp::Packet::new_checked(&bytes[..]).unwrap();
        prop_assert_ne!(packet.checksum(), 0);
        prop_assert_eq!(udp::Repr::parse(&packet, src, dst), Ok(repr));
    }
}

// ---- Hostile input ----

/// Every transform and parser on one frame: never a panic; on `Err` the frame is untouched;
/// on success, if every checksum of the input was right, every checksum of the output is.
fn exercise(
    frame: &[u8],
    to: Endpoint,
    mac: MacRewrite,
    mtu: u16,
    out_len: usize,
) -> Result<(), TestCaseError> {
    // The fast path for the common shape answers what the general parse does.
    prop_assert_eq!(parse_flow(frame), fwd::parse_flow_general(frame));
    // The transforms on a parsed frame do exactly what the ones that parse again do.
    if let Ok(parsed) = parse_flow(frame) {
        type Parsed = fn(&mut [u8], &fwd::ParsedFlow, Endpoint, MacRewrite) -> Result<(), FwdError>;
        type Plain = fn(&mut [u8], Endpoint, MacRewrite) -> Result<(), FwdError>;
        let pairs: [(&str, Parsed, Plain); 3] = [
            ("nat_request", fwd::nat_request_parsed, fwd::nat_request),
            ("nat_reply", fwd::nat_reply_parsed, fwd::nat_reply),
            (
                "direct_route",
                |f, p, _, mac| fwd::direct_route_parsed(f, p, mac),
                |f, _, mac| fwd::direct_route(f, mac),
            ),
        ];
        for (name, with_parsed, plain) in pairs {
            if parsed.is_icmp_error() && name != "direct_route" {
                continue;
            }
            let (mut a, mut b) = (frame.to_vec(), frame.to_vec());
            let (ra, rb) = (
                with_parsed(&mut a, &parsed, to, mac),
                plain(&mut b, to, mac),
            );
            prop_assert_eq!(ra, rb, "{}: parsed and plain outcomes differ", name);
            prop_assert_eq!(a, b, "{}: parsed and plain bytes differ", name);
        }
    }
    let input_ok = frame_checks(frame).iter().all(fwd_common::Check::ok);
    type Transform = fn(&mut [u8], Endpoint, MacRewrite) -> Result<(), FwdError>;
    let transforms: [(&str, Transform); 5] = [
        ("nat_request", fwd::nat_request),
        ("nat_reply", fwd::nat_reply),
        ("nat_icmp_to_real", fwd::nat_icmp_to_real),
        ("nat_icmp_to_client", fwd::nat_icmp_to_client),
        ("direct_route", |f, _, mac| fwd::direct_route(f, mac)),
    ];
    for (name, transform) in transforms {
        let mut copy = frame.to_vec();
        match transform(&mut copy, to, mac) {
            Err(_) => prop_assert_eq!(&copy[..], frame, "{} modified a refused frame", name),
            Ok(()) => {
                prop_assert_eq!(copy.len(), frame.len());
                if input_ok {
                    for check in frame_checks(&copy) {
                        prop_assert!(check.ok(), "{}: {:?}", name, check);
                    }
                }
            }
        }
    }
    let mut buf = cat(&[&[0u8; TUNNEL_HEADROOM], frame]);
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
            prop_assert!(len <= buf.len());
            if input_ok {
                for check in frame_checks(&buf[..len]) {
                    prop_assert!(check.ok(), "tunnel: {:?}", check);
                }
            }
        }
        Ok(TunnelOutcome::FragNeeded { len }) => {
            prop_assert!(len <= out_len);
            prop_assert_eq!(&buf[TUNNEL_HEADROOM..], frame);
            for check in frame_checks(&icmp[..len]) {
                // The quote may carry wrong checksums; ours must be right.
                if !check.what.starts_with("quoted") {
                    prop_assert!(check.ok(), "frag needed: {:?}", check);
                }
            }
        }
        Err(_) => prop_assert_eq!(&buf[TUNNEL_HEADROOM..], frame),
    }
    let spec = fwd::IcmpErrorSpec::ttl_exceeded(to.addr, to.port);
    if let Ok(len) = fwd::icmp_error(frame, &spec, &mut icmp) {
        prop_assert!(len <= out_len);
    }
    Ok(())
}

/// A valid frame of any kind the transforms handle.
fn valid_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (packet_spec(), mac(), mac(), padding()).prop_map(|(spec, d, s, pad)| frame_of(
            d,
            s,
            &spec.datagram(),
            &pad
        )),
        (icmp_case(), mac(), mac(), padding()).prop_map(|(case, d, s, pad)| frame_of(
            d,
            s,
            &case.datagram(),
            &pad
        )),
    ]
}

/// A valid frame with a few bytes changed, then maybe cut or extended.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    (
        valid_frame(),
        proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        prop_oneof![3 => Just(None), 1 => (0usize..120).prop_map(Some)],
    )
        .prop_map(|(mut frame, flips, new_len)| {
            for (at, xor) in flips {
                let i = at.index(frame.len());
                frame[i] ^= xor;
            }
            if let Some(len) = new_len {
                frame.resize(len, 0);
            }
            frame
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        frame in proptest::collection::vec(any::<u8>(), 0..160),
        to in endpoint(),
        mac in mac_rewrite(),
        mtu in any::<u16>(),
        out_len in 0usize..=ICMP_ERROR_MAX_FRAME,
    ) {
        exercise(&frame, to, mac, mtu, out_len)?;
    }

    #[test]
    fn arbitrary_ipv4_never_panics(
        mut frame in proptest::collection::vec(any::<u8>(), 34..200),
        version_ihl in prop_oneof![Just(0x45u8), 0x40u8..=0x4f],
        to in endpoint(),
        mac in mac_rewrite(),
        mtu in any::<u16>(),
        out_len in 0usize..=ICMP_ERROR_MAX_FRAME,
    ) {
        // Steer the bytes past the Ethernet and IPv4 checks more often.
        frame[12] = 0x08;
        frame[13] = 0x00;
        frame[14] = version_ihl;
        let total = u16::try_from(frame.len() - 14).unwrap();
        frame[16..18].copy_from_slice(&total.to_be_bytes());
        exercise(&frame, to, mac, mtu, out_len)?;
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        frame in mutated_frame(),
        to in endpoint(),
        mac in mac_rewrite(),
        mtu in prop_oneof![Just(1500u16), any::<u16>()],
        out_len in prop_oneof![Just(ICMP_ERROR_MAX_FRAME), 0usize..=ICMP_ERROR_MAX_FRAME],
    ) {
        exercise(&frame, to, mac, mtu, out_len)?;
    }
}
