//! Replays the golden packet table (`tandem_core::golden`) against the core.

mod common;

use common::{golden_worker, recomputed_checksums, run};
use tandem_core::golden::{self, decode_hex};
use tandem_core::{DropReason, Verdict};

#[test]
fn every_case_decodes() {
    for case in golden::RESPONDER {
        assert!(decode_hex(case.input).is_some(), "{}", case.description);
        if let Some(expected) = case.expected {
            assert!(decode_hex(expected).is_some(), "{}", case.description);
        }
    }
    assert_eq!(decode_hex("0a 0B\nff"), Some(vec![0x0a, 0x0b, 0xff]));
    assert_eq!(decode_hex("abc"), None);
    assert_eq!(decode_hex("zz"), None);
}

#[test]
fn checksums_in_the_fixtures_are_right() {
    for case in golden::RESPONDER {
        let input = decode_hex(case.input).unwrap();
        let (ip, icmp) = recomputed_checksums(&input);
        // Every fixture carries right checksums except where a wrong one is the point.
        let bad_ip = case.verdict == Verdict::Drop(DropReason::BadIpv4Checksum);
        let bad_icmp = case.verdict == Verdict::Drop(DropReason::BadIcmpChecksum);
        if let Some(ok) = ip {
            assert_eq!(ok, !bad_ip, "IPv4 checksum of: {}", case.description);
        }
        if let Some(ok) = icmp {
            assert_eq!(ok, !bad_icmp, "ICMP checksum of: {}", case.description);
        }
        if let Some(expected) = case.expected {
            let expected = decode_hex(expected).unwrap();
            let (ip, icmp) = recomputed_checksums(&expected);
            assert_ne!(ip, Some(false), "{}", case.description);
            assert_ne!(icmp, Some(false), "{}", case.description);
        }
    }
}

#[test]
fn the_core_turns_each_input_into_its_expected_output() {
    for case in golden::RESPONDER {
        let input = decode_hex(case.input).unwrap();
        let mut frame = input.clone();
        let mut worker = golden_worker(16);
        let (verdict, counters) = run(&mut worker, case.port, &mut frame, 0);
        assert_eq!(verdict, case.verdict, "{}", case.description);
        let expected = case
            .expected
            .map_or_else(|| input.clone(), |e| decode_hex(e).unwrap());
        assert_eq!(frame, expected, "{}", case.description);
        assert_eq!(counters.rx_packets, 1);
        assert_eq!(counters.rx_bytes, input.len() as u64);
        assert_eq!(counters.tx_packets + counters.tx_bytes, 0);
        let drops = u64::from(matches!(verdict, Verdict::Drop(_)));
        assert_eq!(counters.total_drops(), drops, "{}", case.description);
        if let Verdict::Drop(reason) = verdict {
            assert_eq!(counters.dropped(reason), 1);
        }
        assert_eq!(
            counters.arp_replies + counters.icmp_echo_replies,
            u64::from(verdict == Verdict::Reply),
            "{}",
            case.description
        );
    }
}

#[test]
fn the_table_covers_each_verdict_and_the_required_drops() {
    let verdicts: Vec<Verdict> = golden::RESPONDER.iter().map(|c| c.verdict).collect();
    for required in [
        Verdict::Reply,
        Verdict::Consumed,
        Verdict::Drop(DropReason::ArpNotForUs),
        Verdict::Drop(DropReason::BadIcmpChecksum),
        Verdict::Drop(DropReason::TruncatedEthernet),
        Verdict::Drop(DropReason::MalformedArp),
        Verdict::Drop(DropReason::MalformedIpv4),
        Verdict::Drop(DropReason::MalformedIcmp),
    ] {
        assert!(verdicts.contains(&required), "{required:?}");
    }
}
