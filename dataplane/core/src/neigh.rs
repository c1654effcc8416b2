//! The neighbour table: IPv4 address → MAC address and port, learned from ARP (RFC 826).
//!
//! Bounded and allocation-free after construction. Time is the caller's `now` in nanoseconds
//! (any monotonic origin); an entry older than `max_age` is *stale* and every method treats it
//! as missing, as a cache entry that timed out (RFC 1122 §2.3.2.1).
//!
//! # When the table is full
//! A new address is **refused** (outcome [`Learned::TableFull`], counted by the engine as
//! `neighbour_table_full`) unless stale entries can be reclaimed. Known addresses are always
//! refreshed. Refusing rather than evicting keeps the neighbours the director already talks to
//! (gateways, real servers) from being pushed out by a flood of ARP from new senders; stale
//! entries are reclaimed on demand, so a table full of dead entries still takes new ones.
//!
//! Reclaiming sweeps the table (O(capacity)), but only when an entry may actually have gone
//! stale: the table keeps a lower bound on the earliest expiry and does not sweep before it.
//! [`NeighbourTable::expire`] does the same sweep for periodic housekeeping.

use std::net::Ipv4Addr;

use hashbrown::HashMap;

use crate::wire::MacAddr;

/// A neighbour's lifetime when the configuration names none: a minute, the order RFC 1122
/// §2.3.2.1 gives for ARP cache timeouts. In nanoseconds.
pub const DEFAULT_MAX_AGE: u64 = 60_000_000_000;

/// Where to send frames for one IPv4 neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// The neighbour's MAC address.
    pub mac: MacAddr,
    /// The port index it was last heard on.
    pub port: usize,
    /// `now` when it was learned or last refreshed.
    pub learned_at: u64,
}

/// The outcome of [`NeighbourTable::learn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// The address was missing (or stale) and is now in the table.
    New,
    /// The address was known; its MAC, port and time are now the new ones.
    Refreshed,
    /// The address was missing and the table is full of live entries: nothing changed.
    TableFull,
}

/// A fixed-capacity IPv4 → [`Neighbour`] map with ageing. See the module docs for the policy.
#[derive(Debug)]
pub struct NeighbourTable {
    entries: HashMap<Ipv4Addr, Neighbour>,
    capacity: usize,
    max_age: u64,
    /// No entry goes stale before this instant (a lower bound: refreshes only move entries'
    /// expiry later). `u64::MAX` when the table is empty.
    next_expiry: u64,
    /// What [`learn`](Self::learn) and [`refresh`](Self::refresh) recorded since the last
    /// [`drain_journal`](Self::drain_journal): the glue shares it with the other lcores, whose
    /// own tables never see ARP frames that RSS gave to this one.
    journal: [(Ipv4Addr, MacAddr, usize); JOURNAL_LEN],
    journal_len: usize,
    /// Moves on with every change to an entry (learned, refreshed, expired): what was looked
    /// up under one generation is still the answer while it stays the same, but for ageing.
    generation: u64,
}

/// Learned neighbours kept between two drains of the journal; more are not shared (the other
/// lcores then resolve them themselves).
pub const JOURNAL_LEN: usize = 32;

impl NeighbourTable {
    /// A table for at most `capacity` neighbours, each valid for `max_age` nanoseconds after it
    /// was last learned.
    ///
    /// The map is allocated at twice `capacity`: after removals leave tombstones, hashbrown
    /// rehashes in place (no allocation) only while the table is at most half its full
    /// capacity, so this guarantees no allocation after construction.
    pub fn new(capacity: usize, max_age: u64) -> Self {
        Self {
            entries: HashMap::with_capacity(capacity.saturating_mul(2)),
            capacity,
            max_age,
            next_expiry: u64::MAX,
            journal: [(Ipv4Addr::UNSPECIFIED, [0; 6], 0); JOURNAL_LEN],
            journal_len: 0,
            generation: 0,
        }
    }

    /// Changes whenever an entry is learned, refreshed or removed, never otherwise: a caller
    /// may keep what [`lookup`](Self::lookup) returned while the generation is the same, as long
    /// as it ages it by the same `learned_at` and [`max_age`](Self::max_age).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Called for every entry written (learned or refreshed).
    fn record(&mut self, addr: Ipv4Addr, mac: MacAddr, port: usize) {
        self.generation = self.generation.wrapping_add(1);
        if let Some(slot) = self.journal.get_mut(self.journal_len) {
            *slot = (addr, mac, port);
            self.journal_len += 1;
        }
    }

    /// Hands every neighbour learned or refreshed since the last call to `f`, and forgets them.
    pub fn drain_journal(&mut self, mut f: impl FnMut(Ipv4Addr, MacAddr, usize)) {
        for &(addr, mac, port) in &self.journal[..self.journal_len] {
            f(addr, mac, port);
        }
        self.journal_len = 0;
    }

    /// [`learn`](Self::learn) for a neighbour another lcore learned: not journaled again.
    pub fn learn_from_peer(
        &mut self,
        addr: Ipv4Addr,
        mac: MacAddr,
        port: usize,
        now: u64,
    ) -> Learned {
        let journaled = self.journal_len;
        let learned = self.learn(addr, mac, port, now);
        // learn() journaled it (if there was room): take it back out.
        self.journal_len = journaled;
        learned
    }

    /// The most entries the table holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long an entry stays valid, in nanoseconds.
    pub fn max_age(&self) -> u64 {
        self.max_age
    }

    /// Entries held, stale ones not yet reclaimed included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no entry at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn is_fresh(max_age: u64, neighbour: &Neighbour, now: u64) -> bool {
        now.saturating_sub(neighbour.learned_at) < max_age
    }

    /// The live entry for `addr`, if any.
    pub fn lookup(&self, addr: Ipv4Addr, now: u64) -> Option<&Neighbour> {
        self.entries
            .get(&addr)
            .filter(|n| Self::is_fresh(self.max_age, n, now))
    }

    /// Updates `addr` only if it has a live entry: RFC 826's "merge" step, applied to every
    /// ARP packet whatever its target. Returns whether it did.
    pub fn refresh(&mut self, addr: Ipv4Addr, mac: MacAddr, port: usize, now: u64) -> bool {
        match self.entries.get_mut(&addr) {
            Some(n) if Self::is_fresh(self.max_age, n, now) => {
                *n = Neighbour {
                    mac,
                    port,
                    learned_at: now,
                };
                self.record(addr, mac, port);
                true
            }
            _ => false,
        }
    }

    /// Adds or refreshes `addr` (RFC 826: the sender of an ARP packet addressed to us).
    pub fn learn(&mut self, addr: Ipv4Addr, mac: MacAddr, port: usize, now: u64) -> Learned {
        let neighbour = Neighbour {
            mac,
            port,
            learned_at: now,
        };
        if let Some(n) = self.entries.get_mut(&addr) {
            let was_fresh = Self::is_fresh(self.max_age, n, now);
            *n = neighbour;
            self.record(addr, mac, port);
            return if was_fresh {
                Learned::Refreshed
            } else {
                Learned::New
            };
        }
        if self.entries.len() >= self.capacity && (now < self.next_expiry || self.expire(now) == 0)
        {
            return Learned::TableFull;
        }
        self.entries.insert(addr, neighbour);
        self.next_expiry = self.next_expiry.min(now.saturating_add(self.max_age));
        self.record(addr, mac, port);
        Learned::New
    }

    /// Removes every stale entry and returns how many went. O(capacity); meant for the
    /// lcore's periodic housekeeping (and run by [`learn`](Self::learn) when full).
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.entries.len();
        let max_age = self.max_age;
        let mut oldest = u64::MAX;
        self.entries.retain(|_, n| {
            let fresh = Self::is_fresh(max_age, n, now);
            if fresh {
                oldest = oldest.min(n.learned_at);
            }
            fresh
        });
        self.next_expiry = oldest.saturating_add(max_age);
        let removed = before - self.entries.len();
        if removed > 0 {
            self.generation = self.generation.wrapping_add(1);
        }
        removed
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn journal_shares_learned_neighbours_once() {
        let mut t = NeighbourTable::new(8, 100);
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        assert_eq!(t.learn(a, [2, 0, 0, 0, 0, 1], 0, 0), Learned::New);
        assert!(t.refresh(a, [2, 0, 0, 0, 0, 9], 1, 1));
        assert_eq!(t.learn_from_peer(b, [2, 0, 0, 0, 0, 2], 0, 1), Learned::New);
        let mut seen = Vec::new();
        t.drain_journal(|addr, mac, port| seen.push((addr, mac[5], port)));
        assert_eq!(
            seen,
            [(a, 1, 0), (a, 9, 1)],
            "a peer's neighbour is not shared back"
        );
        t.drain_journal(|_, _, _| panic!("drained"));
        assert_eq!(t.lookup(b, 2).map(|n| n.mac[5]), Some(2));
    }

    #[test]
    fn full_journal_keeps_the_first_entries() {
        let mut t = NeighbourTable::new(64, 100);
        for i in 0..40u8 {
            t.learn(Ipv4Addr::new(10, 0, 1, i), [2, 0, 0, 0, 1, i], 0, 0);
        }
        t.learn_from_peer(Ipv4Addr::new(10, 0, 2, 1), [2, 0, 0, 0, 2, 1], 0, 0);
        let mut n = 0;
        t.drain_journal(|addr, _, _| {
            assert_eq!(addr, Ipv4Addr::new(10, 0, 1, n));
            n += 1;
        });
        assert_eq!(usize::from(n), JOURNAL_LEN);
    }

    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const MAC_A: MacAddr = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: MacAddr = [2, 0, 0, 0, 0, 0xb];

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    #[test]
    fn learn_lookup_and_age_out() {
        let mut table = NeighbourTable::new(4, 30 * SECOND);
        assert_eq!(table.lookup(ip(1), 0), None);
        assert_eq!(table.learn(ip(1), MAC_A, 1, 5 * SECOND), Learned::New);
        let expected = Neighbour {
            mac: MAC_A,
            port: 1,
            learned_at: 5 * SECOND,
        };
        assert_eq!(table.lookup(ip(1), 5 * SECOND), Some(&expected));
        // Valid for exactly max_age: the last live nanosecond, then gone.
        assert_eq!(table.lookup(ip(1), 35 * SECOND - 1), Some(&expected));
        assert_eq!(table.lookup(ip(1), 35 * SECOND), None);
        // A `now` from before the entry (another lcore's clock read) is not stale.
        assert_eq!(table.lookup(ip(1), 0), Some(&expected));
    }

    #[test]
    fn learning_again_refreshes_mac_port_and_time() {
        let mut table = NeighbourTable::new(4, 30 * SECOND);
        assert_eq!(table.learn(ip(1), MAC_A, 0, 0), Learned::New);
        assert_eq!(
            table.learn(ip(1), MAC_B, 1, 20 * SECOND),
            Learned::Refreshed
        );
        let n = table.lookup(ip(1), 40 * SECOND).copied();
        assert_eq!(
            n,
            Some(Neighbour {
                mac: MAC_B,
                port: 1,
                learned_at: 20 * SECOND
            })
        );
        // Relearning a stale entry is a new neighbour.
        assert_eq!(table.learn(ip(1), MAC_A, 0, 100 * SECOND), Learned::New);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn refresh_only_touches_live_entries() {
        let mut table = NeighbourTable::new(4, 30 * SECOND);
        assert!(!table.refresh(ip(1), MAC_A, 0, 0));
        assert!(table.is_empty());
        table.learn(ip(1), MAC_A, 0, 0);
        assert!(table.refresh(ip(1), MAC_B, 2, 10 * SECOND));
        assert_eq!(table.lookup(ip(1), 10 * SECOND).map(|n| n.mac), Some(MAC_B));
        // Stale: the merge rule sees nothing to update.
        assert!(!table.refresh(ip(1), MAC_A, 0, 41 * SECOND));
        assert_eq!(table.lookup(ip(1), 41 * SECOND), None);
    }

    #[test]
    fn full_table_refuses_new_but_refreshes_known() {
        let mut table = NeighbourTable::new(3, 30 * SECOND);
        for i in 1..=3 {
            assert_eq!(table.learn(ip(i), MAC_A, 0, SECOND), Learned::New);
        }
        assert_eq!(table.learn(ip(4), MAC_A, 0, 2 * SECOND), Learned::TableFull);
        assert_eq!(table.lookup(ip(4), 2 * SECOND), None);
        assert_eq!(table.learn(ip(2), MAC_B, 0, 2 * SECOND), Learned::Refreshed);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn full_table_reclaims_stale_entries() {
        let mut table = NeighbourTable::new(3, 30 * SECOND);
        table.learn(ip(1), MAC_A, 0, 0);
        table.learn(ip(2), MAC_A, 0, 10 * SECOND);
        table.learn(ip(3), MAC_A, 0, 20 * SECOND);
        // ip(1) expires at 30 s.
        assert_eq!(
            table.learn(ip(4), MAC_A, 0, 29 * SECOND),
            Learned::TableFull
        );
        assert_eq!(table.learn(ip(4), MAC_A, 0, 30 * SECOND), Learned::New);
        assert_eq!(table.len(), 3);
        assert_eq!(table.lookup(ip(1), 30 * SECOND), None);
        assert!(table.lookup(ip(4), 30 * SECOND).is_some());
        // ip(2) was refreshed before its expiry: a sweep at 40 s finds nothing to reclaim.
        table.refresh(ip(2), MAC_A, 0, 39 * SECOND);
        assert_eq!(
            table.learn(ip(5), MAC_A, 0, 40 * SECOND),
            Learned::TableFull
        );
        // ip(3) goes at 50 s.
        assert_eq!(table.learn(ip(5), MAC_A, 0, 50 * SECOND), Learned::New);
    }

    #[test]
    fn expire_removes_exactly_the_stale_entries() {
        let mut table = NeighbourTable::new(8, 30 * SECOND);
        for i in 0..8u8 {
            table.learn(ip(i), MAC_A, 0, u64::from(i) * 10 * SECOND);
        }
        // At 55 s, entries learned at 0, 10, 20 s are stale (25 s is the cut).
        assert_eq!(table.expire(55 * SECOND), 3);
        assert_eq!(table.len(), 5);
        assert_eq!(table.expire(55 * SECOND), 0);
        assert_eq!(table.expire(u64::MAX), 5);
        assert!(table.is_empty());
    }

    #[test]
    fn zero_capacity_learns_nothing() {
        let mut table = NeighbourTable::new(0, SECOND);
        assert_eq!(table.learn(ip(1), MAC_A, 0, 0), Learned::TableFull);
        assert_eq!(table.capacity(), 0);
        assert!(table.is_empty());
    }
}
