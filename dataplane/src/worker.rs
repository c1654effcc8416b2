//! The poll loop of one worker lcore: rx bursts from every port, the sans-IO core on each
//! frame, tx bursts back out, idle back-off, counters published for the reporting side.
//!
//! Per packet this allocates nothing, takes no lock and logs nothing: the bursts are stack
//! arrays, the engine and counters belong to this lcore alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tandem_core::counters::{Counters, DropReason};
use tandem_core::director::{Director, Verdict, Worker};
use tandem_dpdk::{Burst, Port, TxQueue};

use crate::buf::MbufPacket;
use tandem_dataplane::stats::{CounterSlot, PUBLISH_EVERY_NS};

/// Most ports a director drives; keeps the per-lcore tx bursts on the stack.
pub const MAX_PORTS: usize = 8;

/// Polls that must come back empty before a worker starts to sleep.
const IDLE_POLLS_BEFORE_SLEEP: u32 = 64;

/// What every worker shares (read-only).
#[derive(Debug)]
pub struct Shared<'a, 'm> {
    /// Started ports, indexed as the core numbers them.
    pub ports: &'a [Port<'m>],
    /// The director's addresses and VIPs.
    pub director: &'a Arc<Director>,
    /// Set by SIGTERM/SIGINT (or a failing lcore): every worker returns.
    pub stop: &'a AtomicBool,
    /// Time origin for `now` (same for all lcores).
    pub origin: Instant,
    /// Entries in each lcore's neighbour table.
    pub neighbour_capacity: usize,
    /// How long a learned neighbour stays valid without being refreshed (ns).
    pub neighbour_max_age: u64,
    /// Longest idle sleep.
    pub idle_sleep_max: Duration,
}

/// Runs the poll loop on queue `queue` of every port until `shared.stop` is set.
pub fn run(queue: u16, shared: &Shared<'_, '_>, slot: &CounterSlot) -> Result<(), String> {
    let ports = shared.ports;
    if ports.len() > MAX_PORTS {
        return Err(format!(
            "{} ports configured, at most {MAX_PORTS} are supported",
            ports.len()
        ));
    }
    let mut rxqs = Vec::with_capacity(ports.len());
    let mut txqs = Vec::with_capacity(ports.len());
    for p in ports {
        rxqs.push(p.rx_queue(queue).map_err(|e| e.to_string())?);
        txqs.push(p.tx_queue(queue).map_err(|e| e.to_string())?);
    }
    let mut engine = Worker::new(
        Arc::clone(shared.director),
        shared.neighbour_capacity,
        shared.neighbour_max_age,
    );
    let mut counters = Counters::default();
    let mut tx: [Burst<'_>; MAX_PORTS] = std::array::from_fn(|_| Burst::new());
    let mut idle = Backoff::new(shared.idle_sleep_max);
    let mut last_publish = 0u64;

    while !shared.stop.load(Ordering::Relaxed) {
        let now = now_ns(shared.origin);
        let mut received = 0usize;
        for (p, rxq) in rxqs.iter_mut().enumerate() {
            let mut rx = Burst::new();
            received += rxq.rx_burst(&mut rx);
            for mut m in rx.drain() {
                match engine.process_buf(p, &mut MbufPacket(&mut m), now, &mut counters) {
                    Verdict::Reply => {
                        if tx[p].is_full() {
                            flush(&mut txqs[p], &mut tx[p], &mut counters);
                        }
                        if let Err(m) = tx[p].push(m) {
                            counters.count_drop(DropReason::TxRingFull);
                            drop(m);
                        }
                    }
                    Verdict::Consumed | Verdict::Drop(_) => drop(m),
                }
            }
        }
        for (txq, burst) in txqs.iter_mut().zip(tx.iter_mut()) {
            flush(txq, burst, &mut counters);
        }
        if now.saturating_sub(last_publish) >= PUBLISH_EVERY_NS {
            slot.publish(&counters);
            last_publish = now;
        }
        idle.after_poll(received);
    }
    slot.publish(&counters);
    Ok(())
}

/// Sends what `burst` holds; retries the unsent tail once, then frees and counts it.
fn flush<'m>(txq: &mut TxQueue<'_, 'm>, burst: &mut Burst<'m>, c: &mut Counters) {
    if burst.is_empty() {
        return;
    }
    let bytes = burst.total_len();
    let mut sent = txq.tx_burst(burst);
    if !burst.is_empty() {
        sent += txq.tx_burst(burst);
    }
    let unsent_bytes = burst.total_len();
    c.tx_packets += sent as u64;
    c.tx_bytes += (bytes - unsent_bytes) as u64;
    for m in burst.drain() {
        c.count_drop(DropReason::TxRingFull);
        drop(m);
    }
}

fn now_ns(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Idle back-off: busy-poll while traffic flows; after a run of empty polls, sleep 1 µs,
/// doubling up to the configured bound; the first packet brings back busy polling. This lets a
/// director pair and its test traffic share a 2-core machine while keeping added latency
/// under `max` when idle.
#[derive(Debug)]
struct Backoff {
    empty_polls: u32,
    sleep: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            empty_polls: 0,
            sleep: Duration::from_micros(1),
            max,
        }
    }

    /// Returns the sleep it took (for tests).
    fn after_poll(&mut self, received: usize) -> Duration {
        if received > 0 || self.max.is_zero() {
            self.empty_polls = 0;
            self.sleep = Duration::from_micros(1);
            return Duration::ZERO;
        }
        self.empty_polls = self.empty_polls.saturating_add(1);
        if self.empty_polls < IDLE_POLLS_BEFORE_SLEEP {
            return Duration::ZERO;
        }
        let s = self.sleep.min(self.max);
        std::thread::sleep(s);
        self.sleep = (self.sleep * 2).min(self.max);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_busy_polls_then_doubles_then_resets() {
        let mut b = Backoff::new(Duration::from_micros(8));
        for _ in 0..IDLE_POLLS_BEFORE_SLEEP - 1 {
            assert_eq!(b.after_poll(0), Duration::ZERO);
        }
        let slept: Vec<u128> = (0..6).map(|_| b.after_poll(0).as_micros()).collect();
        assert_eq!(slept, [1, 2, 4, 8, 8, 8]);
        assert_eq!(b.after_poll(3), Duration::ZERO);
        assert_eq!(
            b.after_poll(0),
            Duration::ZERO,
            "busy polling again after traffic"
        );
    }

    #[test]
    fn zero_max_never_sleeps() {
        let mut b = Backoff::new(Duration::ZERO);
        for _ in 0..1000 {
            assert_eq!(b.after_poll(0), Duration::ZERO);
        }
    }
}
