//! Source hashing (`ip_vs_sh.c`) and destination hashing (`ip_vs_dh.c`): a static
//! 256-bucket table from an address hash to a destination.

use std::net::Ipv4Addr;

use super::hash::hash_32;
use super::{DestState, resolve};
use crate::lb::DestId;

/// `IP_VS_SH_TAB_BITS` / `IP_VS_DH_TAB_BITS`: 8, a table of 256 buckets.
pub const HASH_TABLE_BITS: u32 = 8;
/// Buckets in an sh or dh table.
pub const HASH_TABLE_SIZE: usize = 256;
const SIZE: u32 = 1 << HASH_TABLE_BITS;
const MASK: u32 = SIZE - 1;
const EMPTY: u32 = u32::MAX;

/// A filled bucket table: each bucket holds an index into `ids` (the destination list as of
/// the last build), or `EMPTY` when there are no destinations.
#[derive(Debug, Clone)]
struct Buckets {
    slots: Box<[u32; HASH_TABLE_SIZE]>,
    ids: Vec<DestId>,
}

impl Buckets {
    fn empty() -> Self {
        Self {
            slots: Box::new([EMPTY; HASH_TABLE_SIZE]),
            ids: Vec::new(),
        }
    }

    /// Fills the buckets in order, giving each destination `share(d)` consecutive buckets
    /// (at least one) before moving on, and cycling through the list until all are full.
    fn fill(dests: &[DestState], share: impl Fn(&DestState) -> u32) -> Self {
        let mut b = Self::empty();
        b.ids = dests.iter().map(|d| d.id).collect();
        if dests.is_empty() {
            return b;
        }
        let (mut at, mut count) = (0usize, 0u32);
        for slot in b.slots.iter_mut() {
            *slot = u32::try_from(at).unwrap_or(EMPTY);
            count += 1;
            if count >= share(&dests[at]) {
                at = (at + 1) % dests.len();
                count = 0;
            }
        }
        b
    }

    /// The destination in `bucket`, looked up by id in the caller's current list.
    fn get<'a>(&self, dests: &'a [DestState], bucket: u32) -> Option<&'a DestState> {
        let at = *self.slots.get(usize::try_from(bucket).ok()?)?;
        let at = usize::try_from(at).ok()?;
        resolve(dests, &self.ids, at)
    }

    #[cfg(test)]
    fn owners(&self) -> Vec<DestId> {
        self.slots
            .iter()
            .filter_map(|&s| self.ids.get(usize::try_from(s).ok()?).copied())
            .collect()
    }
}

/// sh and mh's notion of unavailable (`is_unavailable`): weight 0 or overloaded.
fn unavailable(d: &DestState) -> bool {
    !d.is_available()
}

/// `ip_vs_sh_hashkey`: `(offset + hash_32(port + addr, 8)) & 255`, on host-order values.
fn sh_hashkey(addr: Ipv4Addr, port: u16, offset: u32) -> u32 {
    let key = u32::from(addr).wrapping_add(u32::from(port));
    offset.wrapping_add(hash_32(key, HASH_TABLE_BITS)) & MASK
}

/// sh: source hashing, with the kernel's `sh-fallback` and `sh-port` flags.
#[derive(Debug, Clone)]
pub(crate) struct Sh {
    buckets: Buckets,
    fallback: bool,
    port: bool,
}

impl Sh {
    pub(crate) fn new(dests: &[DestState], fallback: bool, port: bool) -> Self {
        let mut sh = Self {
            buckets: Buckets::empty(),
            fallback,
            port,
        };
        sh.update(dests);
        sh
    }

    /// `ip_vs_sh_reassign`: each destination gets `weight` consecutive buckets (a weight-0
    /// one still gets one, where it is unavailable), cycling until the 256 are full. Called
    /// on every change, weights included (`upd_dest`).
    pub(crate) fn update(&mut self, dests: &[DestState]) {
        self.buckets = Buckets::fill(dests, |d| d.weight);
    }

    /// `ip_vs_sh_schedule`: the bucket of the source address (and port with `sh-port`); if
    /// its destination is unavailable, nothing, or with `sh-fallback` the first available one
    /// met walking the table as `ip_vs_sh_get_fallback` does.
    pub(crate) fn pick(&self, dests: &[DestState], addr: Ipv4Addr, port: u16) -> Option<DestId> {
        let port = if self.port { port } else { 0 };
        let ihash = sh_hashkey(addr, port, 0);
        let first = self.buckets.get(dests, ihash)?;
        if !unavailable(first) {
            return Some(first.id);
        }
        if !self.fallback {
            return None;
        }
        // The kernel re-hashes with offset (offset + ihash) % 256, which lands on bucket
        // (offset + 2 * ihash) & 255: a walk over all 256 buckets.
        for offset in 0..SIZE {
            let roffset = (offset + ihash) % SIZE;
            let d = self.buckets.get(dests, sh_hashkey(addr, port, roffset))?;
            if !unavailable(d) {
                return Some(d.id);
            }
        }
        None
    }

    #[cfg(test)]
    pub(crate) fn owners(&self) -> Vec<DestId> {
        self.buckets.owners()
    }
}

/// dh: destination hashing.
#[derive(Debug, Clone)]
pub(crate) struct Dh {
    buckets: Buckets,
}

impl Dh {
    pub(crate) fn new(dests: &[DestState]) -> Self {
        Self {
            buckets: Buckets::fill(dests, |_| 1),
        }
    }

    /// `ip_vs_dh_reassign`: one bucket per destination in turn, weights ignored. (The kernel
    /// reassigns only when a destination is added or removed; a weight change would give the
    /// same table.)
    pub(crate) fn update(&mut self, dests: &[DestState]) {
        self.buckets = Buckets::fill(dests, |_| 1);
    }

    /// `ip_vs_dh_schedule`: the bucket of `hash_32(daddr, 8)`, unless its destination is
    /// gone, quiesced or overloaded. dh has no fallback.
    pub(crate) fn pick(&self, dests: &[DestState], daddr: Ipv4Addr) -> Option<DestId> {
        let d = self
            .buckets
            .get(dests, hash_32(u32::from(daddr), HASH_TABLE_BITS))?;
        (!unavailable(d)).then_some(d.id)
    }

    #[cfg(test)]
    pub(crate) fn owners(&self) -> Vec<DestId> {
        self.buckets.owners()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests(weights: &[u32]) -> Vec<DestState> {
        weights
            .iter()
            .zip(0u32..)
            .map(|(&w, i)| DestState::new(DestId(i), Ipv4Addr::from(0xC0A8_0001 + i), 80, w))
            .collect()
    }

    fn count(owners: &[DestId], id: u32) -> usize {
        owners.iter().filter(|&&o| o == DestId(id)).count()
    }

    fn client(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0A00_0000 + n)
    }

    #[test]
    fn sh_buckets_are_filled_by_weight() {
        // Runs of 4, 3, 2: 28 full rounds of 9 make 252 buckets, then 4 more for A.
        let sh = Sh::new(&dests(&[4, 3, 2]), false, false);
        let owners = sh.owners();
        assert_eq!(owners.len(), 256);
        assert_eq!(&owners[..10], &[0, 0, 0, 0, 1, 1, 1, 2, 2, 0].map(DestId));
        assert_eq!(
            (count(&owners, 0), count(&owners, 1), count(&owners, 2)),
            (116, 84, 56)
        );
        // A weight-0 destination still holds one bucket per round.
        let owners = Sh::new(&dests(&[1, 0]), false, false).owners();
        assert_eq!((count(&owners, 0), count(&owners, 1)), (128, 128));
    }

    #[test]
    fn sh_maps_a_source_to_its_bucket_whatever_the_port() {
        let d = dests(&[1, 1, 1, 1]);
        let sh = Sh::new(&d, false, false);
        for n in 0..1000 {
            let c = client(n);
            let bucket = sh_hashkey(c, 0, 0);
            let want = sh.owners()[usize::try_from(bucket).unwrap()];
            assert_eq!(sh.pick(&d, c, 1), Some(want));
            assert_eq!(sh.pick(&d, c, 65535), Some(want));
        }
        // The kernel's hash: 10.0.0.7 + port 0 -> hash_32(0x0A000007, 8).
        assert_eq!(
            sh_hashkey(client(7), 0, 0),
            0x0A00_0007u32.wrapping_mul(0x61C8_8647) >> 24
        );
    }

    #[test]
    fn sh_port_spreads_one_source_over_servers() {
        let d = dests(&[1, 1, 1, 1]);
        let sh = Sh::new(&d, false, true);
        let mut seen = std::collections::BTreeSet::new();
        for port in 1000..1100 {
            seen.insert(sh.pick(&d, client(1), port).unwrap());
            assert_eq!(
                sh.pick(&d, client(1), port),
                Some(sh.owners()[usize::try_from(sh_hashkey(client(1), port, 0)).unwrap()])
            );
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn sh_quiesced_or_overloaded_server_gives_nothing_without_fallback() {
        let mut d = dests(&[1, 1]);
        let sh = Sh::new(&d, false, false);
        let c = (0..)
            .map(client)
            .find(|&c| sh.pick(&d, c, 0) == Some(DestId(0)))
            .unwrap();
        d[0].weight = 0;
        assert_eq!(sh.pick(&d, c, 0), None);
        d[0].weight = 1;
        d[0].overloaded = true;
        assert_eq!(sh.pick(&d, c, 0), None);
    }

    #[test]
    fn sh_fallback_finds_another_server_and_leaves_the_rest_alone() {
        let d = dests(&[1, 1, 1]);
        let mut quiesced = d.clone();
        quiesced[1].weight = 0;
        // The table is rebuilt for the weight change, as the kernel's upd_dest does.
        let before = Sh::new(&d, true, false);
        let after = Sh::new(&quiesced, true, false);
        for n in 0..2000 {
            let c = client(n);
            let got = after.pick(&quiesced, c, 0).unwrap();
            assert_ne!(got, DestId(1));
            // Buckets keep their owner when only a weight changes between 1 and 0 (each
            // still fills one bucket per round), so the others' clients stay put.
            let was = before.pick(&d, c, 0).unwrap();
            if was != DestId(1) {
                assert_eq!(got, was);
            }
        }
        // Nothing available at all: None even with fallback.
        let mut none = d.clone();
        for x in &mut none {
            x.overloaded = true;
        }
        assert_eq!(Sh::new(&none, true, false).pick(&none, client(1), 0), None);
    }

    #[test]
    fn sh_is_stable_across_rebuilds() {
        let d = dests(&[3, 1, 2]);
        let a = Sh::new(&d, false, false);
        let b = Sh::new(&d, false, false);
        for n in 0..500 {
            assert_eq!(a.pick(&d, client(n), 0), b.pick(&d, client(n), 0));
        }
        assert!(Sh::new(&[], true, true).pick(&[], client(1), 1).is_none());
    }

    #[test]
    fn dh_cycles_destinations_over_buckets_ignoring_weight() {
        let d = dests(&[5, 1, 1]);
        let dh = Dh::new(&d);
        let owners = dh.owners();
        assert_eq!(&owners[..6], &[0, 1, 2, 0, 1, 2].map(DestId));
        assert_eq!(
            (count(&owners, 0), count(&owners, 1), count(&owners, 2)),
            (86, 85, 85)
        );
        for n in 0..300 {
            let daddr = client(n);
            let bucket = hash_32(u32::from(daddr), 8);
            assert_eq!(
                dh.pick(&d, daddr),
                Some(owners[usize::try_from(bucket).unwrap()])
            );
        }
    }

    #[test]
    fn dh_refuses_quiesced_and_overloaded() {
        let mut d = dests(&[1]);
        let dh = Dh::new(&d);
        assert_eq!(dh.pick(&d, client(3)), Some(DestId(0)));
        d[0].weight = 0;
        assert_eq!(dh.pick(&d, client(3)), None);
        d[0].weight = 1;
        d[0].overloaded = true;
        assert_eq!(dh.pick(&d, client(3)), None);
        assert_eq!(Dh::new(&[]).pick(&[], client(3)), None);
    }
}
