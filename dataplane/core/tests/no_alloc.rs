//! `Worker::process` allocates nothing: every frame of the golden table, and a neighbour
//! table churned through learning, ageing and reclaiming, run under a counting allocator.
//!
//! Alone in its own test binary so the counting allocator sees only this test; it counts per
//! thread so the harness's own threads do not interfere.

mod common;
mod counting_alloc;

use counting_alloc::allocations;
use std::net::Ipv4Addr;

use common::{SECOND, arp_frame, golden_worker};
use tandem_core::golden::{self, decode_hex};
use tandem_core::wire::BROADCAST_MAC;
use tandem_core::wire::arp::Operation;
use tandem_core::{Counters, Verdict};

#[test]
fn process_never_allocates() {
    let capacity = 64;
    let mut worker = golden_worker(capacity);
    let mut counters = Counters::default();
    let mut frames: Vec<(usize, Vec<u8>)> = golden::RESPONDER
        .iter()
        .map(|c| (c.port, decode_hex(c.input).unwrap()))
        .collect();
    // Far more distinct senders than the table holds, so it fills, refuses, ages, reclaims
    // and leaves tombstones behind.
    frames.extend((0..4096u32).map(|i| {
        let [_, _, a, b] = i.to_be_bytes();
        let sender = Ipv4Addr::new(10, 9, a, b);
        let target = Ipv4Addr::new(203, 0, 113, 11);
        let mac = [2, 9, 0, 0, a, b];
        (
            0,
            arp_frame(
                BROADCAST_MAC,
                Operation::REQUEST,
                mac,
                sender,
                [0; 6],
                target,
            ),
        )
    }));
    let pristine = frames.clone();

    let before = allocations();
    let mut replies = 0u64;
    for round in 0..8u64 {
        for (i, ((port, frame), (_, original))) in frames.iter_mut().zip(&pristine).enumerate() {
            // Replies are rewritten in place: restore the request (a copy, no allocation).
            frame.copy_from_slice(original);
            // One second per 10 frames: 60-second entries age out during each round.
            let now = round * 1000 * SECOND + i as u64 / 10 * SECOND;
            replies +=
                u64::from(worker.process(*port, frame, now, &mut counters) == Verdict::Reply);
        }
    }
    let allocated = allocations() - before;

    assert_eq!(
        allocated,
        0,
        "allocations while processing {} frames",
        8 * frames.len()
    );
    assert!(replies >= 8 * 4096);
    assert!(counters.neighbours_learned > 8 * capacity as u64);
    assert!(counters.neighbour_table_full > 0);
    assert!(worker.neighbours().len() <= capacity);
}
