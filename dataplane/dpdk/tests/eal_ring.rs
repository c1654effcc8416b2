//! The inter-lcore mbuf ring on a real EAL with two lcores: lcore 0 produces, lcore 1 consumes.
//! One test per file: the EAL starts once per process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tandem_dpdk::{Burst, Eal, MbufRing, Mempool};

#[test]
fn mbufs_cross_lcores_in_order_and_leftovers_are_freed() {
    let args = [
        "--no-huge",
        "--no-pci",
        "-m",
        "256",
        "-l",
        "0,1",
        "--file-prefix",
        "tandem-ring-test",
        "--log-level",
        "lib.eal:error",
    ];
    let eal = Eal::init("tandem-ring-test", &args).expect("EAL init");
    assert_eq!(eal.lcores(), vec![0, 1]);
    let pool = Mempool::new(&eal, "ring_pool", 4095, 32).expect("pool");
    let before = pool.available();
    let ring = MbufRing::new(&eal, "to_lcore1", 512).expect("ring");
    assert!(MbufRing::new(&eal, "bad", 0).is_err());

    const TOTAL: u64 = 20_000;
    let received = AtomicU64::new(0);
    let in_order = AtomicBool::new(true);
    let rejected = AtomicU64::new(0);
    eal.run_on_all_lcores(&|lcore| {
        let deadline = Instant::now() + Duration::from_secs(20);
        if lcore == 0 {
            let mut seq = 0u64;
            while seq < TOTAL && Instant::now() < deadline {
                let mut b = Burst::new();
                while !b.is_full() && seq < TOTAL {
                    let Some(mut m) = pool.alloc() else { break };
                    if let Some(d) = m.append(8) {
                        d.copy_from_slice(&seq.to_be_bytes());
                    }
                    if b.push(m).is_err() {
                        break;
                    }
                    seq += 1;
                }
                let queued = b.len();
                let done = ring.enqueue_burst(&mut b);
                // A full ring leaves the tail in the burst: give the sequence numbers back.
                seq -= (queued - done) as u64;
                rejected.fetch_add((queued - done) as u64, Ordering::Relaxed);
                drop(b);
            }
        } else {
            let mut consumer = ring.consumer().expect("consumer");
            assert!(ring.consumer().is_err(), "one consumer only");
            let mut expect = 0u64;
            while expect < TOTAL && Instant::now() < deadline {
                let mut b = Burst::new();
                consumer.dequeue_burst(&mut b);
                for m in b.drain() {
                    let d = m.data();
                    let seq = u64::from_be_bytes(d[..8].try_into().unwrap_or_default());
                    if seq != expect {
                        in_order.store(false, Ordering::Relaxed);
                    }
                    expect += 1;
                }
            }
            received.store(expect, Ordering::Relaxed);
        }
    })
    .expect("both lcores ran");
    assert_eq!(received.load(Ordering::Relaxed), TOTAL);
    assert!(in_order.load(Ordering::Relaxed), "FIFO across lcores");

    // Mbufs left in a ring are freed with it.
    let mut b = Burst::new();
    for _ in 0..10 {
        b.push(pool.alloc().expect("mbuf")).expect("room");
    }
    assert_eq!(ring.enqueue_burst(&mut b), 10);
    assert_eq!(ring.len(), 10);
    drop(b);
    drop(ring);
    assert_eq!(
        pool.available(),
        before,
        "no mbuf leaked (ring full rejections: {})",
        rejected.load(Ordering::Relaxed)
    );
    drop(pool);
    drop(eal);
    let _ = std::fs::remove_dir_all("/var/run/dpdk/tandem-ring-test");
}
