//! A per-lcore cache of next-hop decisions: for a destination address, the egress port, the
//! next hop and the Ethernet addresses a frame to it leaves with.
//!
//! Without it every forwarded frame pays a route lookup ([`Director::next_hop`]) and a hash
//! lookup in the [`NeighbourTable`]; with it, a frame to a destination seen recently pays one
//! direct-mapped probe. The cache never changes an outcome:
//! - the [`Director`] an engine runs is immutable, so a route decision stays right;
//! - only resolved next hops are cached, each with the neighbour table's
//!   [`generation`](NeighbourTable::generation) at the time (any learning, refresh or expiry
//!   moves it on, which makes every entry a miss) and the neighbour's `learned_at`, so an entry
//!   that went stale is a miss exactly when [`NeighbourTable::lookup`] would find none.
//!
//! It is filled through a shared reference ([`Cell`]s of plain copies), so the engine's
//! read-only context can carry it; it belongs to one lcore, like the rest of a [`Worker`].
//!
//! [`Director`]: crate::director::Director
//! [`Director::next_hop`]: crate::director::Director::next_hop
//! [`Worker`]: crate::director::Worker

use std::cell::Cell;
use std::net::Ipv4Addr;

use crate::fwd::MacRewrite;
use crate::neigh::NeighbourTable;

/// Slots (a power of two): the real servers of a NAT/TUN/DR service and the NAT clients' next
/// hops (usually one gateway) fit many times over.
const SLOTS: usize = 256;

/// A resolved next hop, as cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CachedHop {
    /// The egress port's index.
    pub port: usize,
    /// The next hop's address (the destination itself when on-link, else a gateway).
    pub next_hop: Ipv4Addr,
    /// Egress port's MAC → next hop's MAC, as [`MacRewrite::bytes`]: the fast path copies
    /// them to the frame in the pieces they are loaded in.
    pub macs: [u8; 12],
}

impl CachedHop {
    /// The hop by `port` to `next_hop` with `mac`.
    pub(crate) const fn new(port: usize, next_hop: Ipv4Addr, mac: MacRewrite) -> Self {
        CachedHop {
            port,
            next_hop,
            macs: mac.bytes(),
        }
    }

    /// Egress port's MAC → next hop's MAC.
    pub(crate) fn mac(&self) -> MacRewrite {
        let [d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5] = self.macs;
        MacRewrite {
            dst: [d0, d1, d2, d3, d4, d5],
            src: [s0, s1, s2, s3, s4, s5],
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The destination address; meaningful only when `generation` is not [`NEVER`].
    dst: Ipv4Addr,
    generation: u64,
    /// The neighbour's `learned_at`, to age the entry as the table ages the neighbour.
    learned_at: u64,
    hop: CachedHop,
}

/// A generation no table has (they count up from 0).
const NEVER: u64 = u64::MAX;

const EMPTY: Entry = Entry {
    dst: Ipv4Addr::UNSPECIFIED,
    generation: NEVER,
    learned_at: 0,
    hop: CachedHop {
        port: 0,
        next_hop: Ipv4Addr::UNSPECIFIED,
        macs: [0; 12],
    },
};

/// The cache. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct HopCache {
    slots: Box<[Cell<Entry>]>,
}

impl HopCache {
    /// An empty cache (allocated here, never again).
    pub(crate) fn new() -> Self {
        HopCache {
            slots: (0..SLOTS).map(|_| Cell::new(EMPTY)).collect(),
        }
    }

    #[inline]
    fn slot(&self, dst: Ipv4Addr) -> Option<&Cell<Entry>> {
        let h = dst.to_bits().wrapping_mul(0x9e37_79b1) >> 24;
        self.slots.get(h as usize & (SLOTS - 1))
    }

    /// The cached hop to `dst`, if it is still what a route and neighbour lookup would give at
    /// `now`.
    #[inline(always)]
    pub(crate) fn get(
        &self,
        dst: Ipv4Addr,
        neighbours: &NeighbourTable,
        now: u64,
    ) -> Option<CachedHop> {
        let e = self.slot(dst)?.get();
        let fresh = now.saturating_sub(e.learned_at) < neighbours.max_age();
        (e.dst == dst && e.generation == neighbours.generation() && fresh).then_some(e.hop)
    }

    /// Remembers a resolved hop to `dst`, whose neighbour was learned at `learned_at`.
    #[inline]
    pub(crate) fn put(
        &self,
        dst: Ipv4Addr,
        neighbours: &NeighbourTable,
        learned_at: u64,
        hop: CachedHop,
    ) {
        if let Some(slot) = self.slot(dst) {
            slot.set(Entry {
                dst,
                generation: neighbours.generation(),
                learned_at,
                hop,
            });
        }
    }
}

impl Default for HopCache {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 7);

    fn hop(mac: u8) -> CachedHop {
        CachedHop::new(
            1,
            A,
            MacRewrite {
                src: [2, 0, 0, 0, 0, 1],
                dst: [2, 0, 0, 0, 0, mac],
            },
        )
    }

    #[test]
    fn a_hit_only_while_the_neighbour_table_would_say_the_same() {
        let mut n = NeighbourTable::new(8, 100);
        let cache = HopCache::new();
        assert_eq!(cache.get(A, &n, 0), None, "empty");
        n.learn(A, [2, 0, 0, 0, 0, 9], 1, 10);
        cache.put(A, &n, 10, hop(9));
        assert_eq!(cache.get(A, &n, 50), Some(hop(9)));
        assert_eq!(cache.get(Ipv4Addr::new(10, 0, 0, 8), &n, 50), None);
        // Stale when the neighbour is (learned at 10, 100 ns of life).
        assert!(n.lookup(A, 110).is_none());
        assert_eq!(cache.get(A, &n, 110), None);
        // Any change to the table (here a new MAC) makes every entry a miss.
        n.refresh(A, [2, 0, 0, 0, 0, 5], 1, 60);
        assert_eq!(cache.get(A, &n, 70), None);
        cache.put(A, &n, 60, hop(5));
        assert_eq!(cache.get(A, &n, 70), Some(hop(5)));
        // An expiry that removes something too.
        n.learn(Ipv4Addr::new(10, 0, 0, 9), [2, 0, 0, 0, 0, 3], 1, 0);
        cache.put(A, &n, 60, hop(5));
        assert_eq!(n.expire(120), 1);
        assert_eq!(cache.get(A, &n, 121), None);
    }
}
