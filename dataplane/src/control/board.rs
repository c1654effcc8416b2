//! What the worker lcores publish for the control plane, without locks: per destination its
//! connection counts and traffic, per lcore its table figures. Each worker writes only its own
//! row (relaxed stores, single writer) every millisecond; readers sum the rows. A reader may
//! see one row from two adjacent publications: the figures are at most 1 ms stale.

use std::sync::atomic::{AtomicU64, Ordering};

use tandem_core::balance::DestTraffic;
use tandem_core::conn::DestCounts;
use tandem_core::lb::DestId;

/// Words per destination per worker: active/inactive, persistent, then the traffic.
const WORDS: usize = 7;

/// One lcore's table figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LcoreFigures {
    /// Live connection-table entries.
    pub connections: u64,
    /// Its capacity.
    pub capacity: u64,
    /// Connection events queued for the sync daemon.
    pub events_queued: u64,
    /// Connection events lost to overflow.
    pub events_overflow: u64,
    /// The configuration generation this lcore runs.
    pub generation: u64,
}

/// A destination's figures summed over the lcores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestFigures {
    /// ESTABLISHED connections.
    pub active: u64,
    /// Other connections.
    pub inactive: u64,
    /// Persistence templates.
    pub persistent: u64,
    /// Traffic since start.
    pub traffic: DestTraffic,
}

/// The board. See the [module docs](self).
#[derive(Debug)]
pub struct StatsBoard {
    workers: usize,
    dests: usize,
    cells: Vec<AtomicU64>,
    lcores: Vec<[AtomicU64; 5]>,
}

impl StatsBoard {
    /// A board for `workers` lcores and destination ids below `dests`.
    pub fn new(workers: usize, dests: usize) -> Self {
        StatsBoard {
            workers,
            dests,
            cells: (0..workers * dests * WORDS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            lcores: (0..workers)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        }
    }

    /// How many workers publish.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Publishes worker `worker`'s figures for destination ids below `upto` (by the worker
    /// itself only).
    pub fn publish_dests(
        &self,
        worker: usize,
        counts: &[DestCounts],
        traffic: &[DestTraffic],
        upto: usize,
    ) {
        let upto = upto.min(self.dests);
        let row = self
            .cells
            .iter()
            .skip(worker * self.dests * WORDS)
            .take(upto * WORDS);
        let words = counts.iter().zip(traffic).take(upto).flat_map(|(c, t)| {
            [
                (u64::from(c.active) << 32) | u64::from(c.inactive),
                u64::from(c.persistent),
                t.conns,
                t.packets_in,
                t.packets_out,
                t.bytes_in,
                t.bytes_out,
            ]
        });
        for (cell, v) in row.zip(words) {
            cell.store(v, Ordering::Relaxed);
        }
    }

    /// Publishes worker `worker`'s table figures.
    pub fn publish_lcore(&self, worker: usize, f: &LcoreFigures) {
        if let Some(cells) = self.lcores.get(worker) {
            let v = [
                f.connections,
                f.capacity,
                f.events_queued,
                f.events_overflow,
                f.generation,
            ];
            for (c, v) in cells.iter().zip(v) {
                c.store(v, Ordering::Relaxed);
            }
        }
    }

    /// Worker `worker`'s last published table figures.
    pub fn lcore(&self, worker: usize) -> LcoreFigures {
        let Some(c) = self.lcores.get(worker) else {
            return LcoreFigures::default();
        };
        let w = |i: usize| c[i].load(Ordering::Relaxed);
        LcoreFigures {
            connections: w(0),
            capacity: w(1),
            events_queued: w(2),
            events_overflow: w(3),
            generation: w(4),
        }
    }

    /// Destination `id`'s figures summed over every worker.
    pub fn dest(&self, id: DestId) -> DestFigures {
        let mut f = DestFigures::default();
        let i = id.0 as usize;
        if i >= self.dests {
            return f;
        }
        for w in 0..self.workers {
            let base = (w * self.dests + i) * WORDS;
            let Some(cells) = self.cells.get(base..base + WORDS) else {
                continue;
            };
            let v: [u64; WORDS] = std::array::from_fn(|k| cells[k].load(Ordering::Relaxed));
            f.active += v[0] >> 32;
            f.inactive += v[0] & 0xffff_ffff;
            f.persistent += v[1];
            f.traffic.conns += v[2];
            f.traffic.packets_in += v[3];
            f.traffic.packets_out += v[4];
            f.traffic.bytes_in += v[5];
            f.traffic.bytes_out += v[6];
        }
        f
    }
}

impl crate::control::state::Probe for StatsBoard {
    fn dest_in_use(&self, id: DestId) -> bool {
        let f = self.dest(id);
        f.active + f.inactive + f.persistent > 0
    }

    fn traffic(&self, id: DestId) -> DestTraffic {
        self.dest(id).traffic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::state::Probe;

    #[test]
    fn rows_sum_over_workers_and_stop_at_upto() {
        let b = StatsBoard::new(2, 4);
        let counts = [DestCounts {
            active: 1,
            inactive: 2,
            persistent: 3,
        }; 4];
        let traffic = [DestTraffic {
            conns: 4,
            packets_in: 5,
            packets_out: 6,
            bytes_in: 7,
            bytes_out: 8,
        }; 4];
        b.publish_dests(0, &counts, &traffic, 2);
        b.publish_dests(1, &counts, &traffic, 4);
        let f = b.dest(DestId(1));
        assert_eq!((f.active, f.inactive, f.persistent), (2, 4, 6));
        assert_eq!(f.traffic.bytes_out, 16);
        assert_eq!(b.dest(DestId(3)).traffic.conns, 4, "worker 0 stopped at 2");
        assert_eq!(b.dest(DestId(9)), DestFigures::default());
        assert!(b.dest_in_use(DestId(3)));
        let idle = StatsBoard::new(1, 4);
        assert!(!idle.dest_in_use(DestId(0)));
        b.publish_lcore(
            1,
            &LcoreFigures {
                connections: 3,
                generation: 9,
                ..LcoreFigures::default()
            },
        );
        assert_eq!(b.lcore(1).generation, 9);
        assert_eq!(b.lcore(5), LcoreFigures::default());
    }
}
