//! The forwarding transforms and `parse_flow` allocate nothing: every golden input runs
//! through them under a counting allocator, buffers prepared beforehand.
//!
//! Alone in its own test binary so the counting allocator sees only this test; it counts per
//! thread so the harness's own threads do not interfere.

mod counting_alloc;

use counting_alloc::allocations;
use tandem_core::fwd::golden::{self, Transform, decode_hex};
use tandem_core::fwd::{self, ICMP_ERROR_MAX_FRAME, IcmpErrorSpec, TUNNEL_HEADROOM, TunnelParams};
use tandem_core::lb::Endpoint;

#[test]
fn transforms_never_allocate() {
    let cases: Vec<_> = golden::ALL
        .iter()
        .flat_map(|(_, cases)| cases.iter())
        .collect();
    let inputs: Vec<Vec<u8>> = cases.iter().map(|c| decode_hex(c.input).unwrap()).collect();
    let mut frames: Vec<Vec<u8>> = inputs
        .iter()
        .map(|i| vec![0u8; i.len() + TUNNEL_HEADROOM])
        .collect();
    let mut icmp = [0u8; ICMP_ERROR_MAX_FRAME];
    let mut ran = 0u32;

    let before = allocations();
    for _ in 0..3 {
        for ((case, input), buf) in cases.iter().zip(&inputs).zip(&mut frames) {
            buf[TUNNEL_HEADROOM..].copy_from_slice(input);
            let _ = std::hint::black_box(fwd::parse_flow(&buf[TUNNEL_HEADROOM..]));
            let frame = &mut buf[TUNNEL_HEADROOM..];
            let mac = case.mac;
            let _ = match case.transform {
                Transform::NatRequest(a, p) => fwd::nat_request(frame, Endpoint::new(a, p), mac),
                Transform::NatReply(a, p) => fwd::nat_reply(frame, Endpoint::new(a, p), mac),
                Transform::NatIcmpToReal(a, p) => {
                    fwd::nat_icmp_to_real(frame, Endpoint::new(a, p), mac)
                }
                Transform::NatIcmpToClient(a, p) => {
                    fwd::nat_icmp_to_client(frame, Endpoint::new(a, p), mac)
                }
                Transform::DirectRoute => fwd::direct_route(frame, mac),
                Transform::Tunnel {
                    outer_src,
                    real_server,
                    ident,
                    mtu,
                } => {
                    let params = TunnelParams {
                        outer_src,
                        real_server,
                        ident,
                        mtu,
                        mac,
                    };
                    fwd::tunnel(buf, &params, &mut icmp).map(|_| ())
                }
            };
            let spec = IcmpErrorSpec::ttl_exceeded(golden::INSIDE_ADDR, 1);
            let _ = std::hint::black_box(fwd::icmp_error(input, &spec, &mut icmp));
            ran += 1;
        }
    }
    let after = allocations();
    assert_eq!(ran, 3 * u32::try_from(cases.len()).unwrap());
    assert_eq!(after - before, 0, "the transforms allocated");
    // The counter does count.
    let boxed = std::hint::black_box(Box::new(ran));
    assert_eq!(allocations(), after + 1, "{boxed}");
}
