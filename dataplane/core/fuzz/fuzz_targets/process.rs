#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tandem_core::{Counters, Director, Verdict, Worker, golden};

static DIRECTOR: OnceLock<Arc<Director>> = OnceLock::new();

// The first byte picks the port (including one that does not exist), the rest is the frame.
fuzz_target!(|data: &[u8]| {
    let Some((&port, frame)) = data.split_first() else {
        return;
    };
    let director = DIRECTOR
        .get_or_init(|| Arc::new(golden::director().expect("the golden configuration is valid")));
    let mut worker = Worker::new(Arc::clone(director), 8, 60_000_000_000);
    let mut counters = Counters::default();
    let mut buf = frame.to_vec();
    // Twice: the first pass may have taught the neighbour table something.
    for now in [0, 1_000_000_000] {
        buf.copy_from_slice(frame);
        let verdict = worker.process(usize::from(port % 3), &mut buf, now, &mut counters);
        assert_eq!(buf.len(), frame.len());
        if let Verdict::Drop(reason) = verdict {
            assert!(counters.dropped(reason) > 0);
        }
    }
    assert_eq!(counters.rx_packets, 2);
});
