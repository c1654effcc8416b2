//! Replays the forwarding golden packets (`tandem_core::fwd::golden`) against the transforms,
//! and checks every checksum of every frame by full recomputation.

mod fwd_common;

use fwd_common::{assert_checksums, frame_checks};
use tandem_core::fwd::golden::{self, Case, Outcome, Transform, decode_hex};
use tandem_core::fwd::{Fragment, FwdError, parse_flow};
use tandem_core::lb::Protocol;

fn all_cases() -> impl Iterator<Item = (&'static str, &'static Case)> {
    golden::ALL
        .into_iter()
        .flat_map(|(table, cases)| cases.iter().map(move |case| (table, case)))
}

#[test]
fn every_case_decodes_and_has_an_expected_frame_unless_dropped() {
    for (table, case) in all_cases() {
        assert!(
            decode_hex(case.input).is_some(),
            "{table}: {}",
            case.description
        );
        match case.outcome {
            Outcome::Dropped(_) => assert!(case.expected.is_none(), "{}", case.description),
            _ => assert!(
                case.expected.and_then(decode_hex).is_some(),
                "{table}: {}",
                case.description
            ),
        }
    }
}

#[test]
fn every_checksum_in_the_fixtures_is_right_by_full_recomputation() {
    let mut checked = 0;
    for (table, case) in all_cases() {
        let context = format!("{table}: {}", case.description);
        let input = decode_hex(case.input).unwrap();
        checked += assert_checksums(&input, &format!("input of {context}"));
        if let Some(expected) = case.expected {
            let expected = decode_hex(expected).unwrap();
            let n = assert_checksums(&expected, &format!("expected output of {context}"));
            assert!(n > 0, "{context}: no checksum found in the expected output");
            checked += n;
        }
    }
    // Sanity: the checker did look at the quoted and inner headers too.
    assert!(checked > 60, "only {checked} checksums checked");
}

#[test]
fn the_transforms_turn_each_input_into_its_expected_output() {
    for (table, case) in all_cases() {
        let context = format!("{table}: {}", case.description);
        let input = decode_hex(case.input).unwrap();
        let (outcome, output) = golden::run(case);
        assert_eq!(outcome, case.outcome, "{context}");
        let expected = case
            .expected
            .map_or_else(|| input.clone(), |e| decode_hex(e).unwrap());
        assert_eq!(
            hex(&output),
            hex(&expected),
            "{context}\n(left: output, right: expected)"
        );
    }
}

#[test]
fn frag_needed_leaves_the_request_untouched() {
    for case in golden::TUN.iter().filter(|c| c.outcome == Outcome::Replied) {
        let Transform::Tunnel {
            outer_src,
            real_server,
            ident,
            mtu,
        } = case.transform
        else {
            panic!("{}", case.description);
        };
        let input = decode_hex(case.input).unwrap();
        let mut buf = vec![0xeeu8; tandem_core::fwd::TUNNEL_HEADROOM];
        buf.extend_from_slice(&input);
        let before = buf.clone();
        let mut icmp = [0u8; tandem_core::fwd::ICMP_ERROR_MAX_FRAME];
        let params = tandem_core::fwd::TunnelParams {
            outer_src,
            real_server,
            ident,
            mtu,
            mac: case.mac,
        };
        let outcome = tandem_core::fwd::tunnel(&mut buf, &params, &mut icmp).unwrap();
        assert!(matches!(
            outcome,
            tandem_core::fwd::TunnelOutcome::FragNeeded { .. }
        ));
        assert_eq!(buf, before, "{}", case.description);
    }
}

#[test]
fn the_tables_cover_what_the_brief_asks_for() {
    let has = |table: &[Case], words: &[&str], outcome: fn(&Outcome) -> bool| {
        table
            .iter()
            .any(|c| words.iter().all(|w| c.description.contains(w)) && outcome(&c.outcome))
    };
    let fwd = |o: &Outcome| *o == Outcome::Forwarded;
    assert!(has(golden::NAT, &["NAT request", "SYN"], fwd));
    assert!(has(golden::NAT, &["NAT reply", "SYN-ACK"], fwd));
    assert!(has(
        golden::NAT,
        &["request", "UDP", "checksum updated"],
        fwd
    ));
    assert!(has(golden::NAT, &["reply", "UDP", "checksum updated"], fwd));
    assert!(has(golden::NAT, &["request", "UDP", "keeps 0"], fwd));
    assert!(has(golden::NAT, &["reply", "UDP", "keeps 0"], fwd));
    assert!(has(golden::NAT, &["seed 002", "8000"], fwd));
    assert!(has(golden::NAT, &["port unreachable", "client"], fwd));
    assert!(has(golden::NAT, &["TTL 1"], |o| {
        *o == Outcome::Dropped(FwdError::TtlExceeded)
    }));
    assert!(has(golden::TUN, &["IPIP"], fwd));
    assert!(has(golden::TUN, &["fragmentation needed"], |o| {
        *o == Outcome::Replied
    }));
    assert!(has(golden::DR, &["MAC"], fwd));
}

#[test]
fn parse_flow_reads_each_golden_input() {
    for (table, case) in all_cases() {
        let context = format!("{table}: {}", case.description);
        let input = decode_hex(case.input).unwrap();
        match (parse_flow(&input), case.outcome) {
            (Err(error), Outcome::Dropped(expected)) => {
                // Refused by parse_flow for the same reason, or accepted and refused by
                // the transform only (TTL, MTU).
                assert_eq!(error, expected, "{context}");
            }
            (Err(error), _) => panic!("{context}: {error}"),
            (Ok(parsed), _) => {
                assert_eq!(parsed.l3_offset, 14, "{context}");
                assert_eq!(parsed.l4_offset, 14 + parsed.ip_header_len, "{context}");
                assert_eq!(parsed.fragment, Fragment::None, "{context}");
                assert!(
                    matches!(parsed.protocol(), Protocol::Tcp | Protocol::Udp),
                    "{context}"
                );
                if let Outcome::Dropped(error) = case.outcome {
                    assert!(
                        matches!(error, FwdError::TtlExceeded | FwdError::TunMtuExceeded),
                        "{context}: parse_flow accepted what the transform refused: {error}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_checker_catches_a_wrong_checksum() {
    let case = &golden::NAT[0];
    let mut frame = decode_hex(case.expected.unwrap()).unwrap();
    let last = frame.len() - 1;
    frame[last] ^= 1;
    assert!(frame_checks(&frame).iter().any(|c| !c.ok()));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
