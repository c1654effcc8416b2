//! Property tests: `Worker::process` never panics, whatever the bytes, and a `Reply` is a
//! frame of the same length with right checksums.

mod common;

use common::{golden_worker, recomputed_checksums};
use proptest::prelude::*;
use tandem_core::golden::{self, decode_hex};
use tandem_core::{Counters, DropReason, Verdict};

/// A golden input frame, then byte flips, then maybe a truncation or an extension.
fn mutated_golden() -> impl Strategy<Value = (usize, Vec<u8>)> {
    let cases: Vec<(usize, Vec<u8>)> = golden::RESPONDER
        .iter()
        .map(|c| (c.port, decode_hex(c.input).expect("golden hex decodes")))
        .collect();
    (
        proptest::sample::select(cases),
        proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        prop_oneof![Just(None), (0usize..80).prop_map(Some)],
    )
        .prop_map(|((port, mut frame), flips, new_len)| {
            for (at, xor) in flips {
                let i = at.index(frame.len());
                frame[i] ^= xor;
            }
            if let Some(len) = new_len {
                frame.resize(len, 0);
            }
            (port, frame)
        })
}

fn check(port: usize, mut frame: Vec<u8>) -> Result<(), TestCaseError> {
    let mut worker = golden_worker(4);
    let mut counters = Counters::default();
    let len = frame.len();
    let input_checksums = recomputed_checksums(&frame);
    let verdict = worker.process(port, &mut frame, 0, &mut counters);
    prop_assert_eq!(frame.len(), len);
    prop_assert_eq!(counters.rx_packets, 1);
    match verdict {
        Verdict::Reply => {
            prop_assert_eq!(counters.arp_replies + counters.icmp_echo_replies, 1);
            // An ICMP reply was only made from a request whose checksums were right, and it
            // must leave with right checksums (recomputed from scratch).
            if input_checksums.0.is_some() {
                prop_assert_eq!(input_checksums, (Some(true), Some(true)));
                prop_assert_eq!(recomputed_checksums(&frame), (Some(true), Some(true)));
            }
        }
        Verdict::Consumed => prop_assert_eq!(counters.total_drops(), 0),
        Verdict::Drop(reason) => {
            prop_assert_eq!(counters.dropped(reason), 1);
            prop_assert_eq!(counters.total_drops(), 1);
            prop_assert_ne!(reason, DropReason::TxRingFull);
        }
        // This worker has no virtual services (it never forwards) and no local UDP port.
        other @ (Verdict::Forward { .. }
        | Verdict::Resolve { .. }
        | Verdict::Redirect { .. }
        | Verdict::Local) => {
            prop_assert!(false, "a worker without services forwarded: {:?}", other);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        port in 0usize..3,
        frame in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        check(port, frame)?;
    }

    #[test]
    fn mutated_golden_frames_never_panic((port, frame) in mutated_golden()) {
        check(port, frame)?;
    }
}
