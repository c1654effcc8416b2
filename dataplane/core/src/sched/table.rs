//! A fixed-capacity chained hash table that never allocates after construction.
//!
//! The lblc/lblcr locality tables and the persistence templates live in one of these: the
//! kernel keeps them in `hlist` bucket arrays (`IP_VS_LBLC_TAB_SIZE` = 1024 buckets) and
//! allocates an entry per new mapping; we allocate every slot up front and thread the free
//! ones on a list, so inserting on the packet path costs no allocation and the table can
//! never grow past its capacity.
//!
//! Buckets are chosen by a *keyed* hash (seed given at construction): clients pick their own
//! addresses, and an unkeyed hash would let them line every entry up on one chain.

use super::hash::mix64;

/// "No slot": the end of a chain or of the free list.
const NIL: u32 = u32::MAX;

/// What the table needs of a key: equality and a 64-bit fold of its bits.
pub(crate) trait TableKey: Copy + Eq {
    /// All of the key's bits, folded into 64 (injective where possible).
    fn fold(&self) -> u64;
}

impl TableKey for std::net::Ipv4Addr {
    fn fold(&self) -> u64 {
        u64::from(u32::from(*self))
    }
}

#[derive(Debug, Clone)]
struct Slot<K, V> {
    /// Next slot on the same chain, or on the free list.
    next: u32,
    entry: Option<(K, V)>,
}

/// The table is full: the entry was not inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

/// A chained hash map with `capacity` preallocated slots and a power-of-two bucket count.
#[derive(Debug, Clone)]
pub(crate) struct BoundedTable<K, V> {
    heads: Vec<u32>,
    slots: Vec<Slot<K, V>>,
    free: u32,
    len: usize,
    mask: u64,
    seed: u64,
}

impl<K: TableKey, V> BoundedTable<K, V> {
    /// The largest capacity a table accepts (slot indices are `u32`, `NIL` excluded).
    pub(crate) const MAX_CAPACITY: usize = 1 << 24;
    /// The most buckets a table accepts.
    pub(crate) const MAX_BUCKETS: usize = 1 << 24;

    /// A table of `buckets` chains (a power of two) holding at most `capacity` entries.
    /// The caller validates both against the limits above.
    pub(crate) fn new(buckets: usize, capacity: usize, seed: u64) -> Self {
        debug_assert!(buckets.is_power_of_two() && buckets <= Self::MAX_BUCKETS);
        debug_assert!(capacity <= Self::MAX_CAPACITY);
        let mut slots = Vec::with_capacity(capacity);
        for i in 0..capacity {
            let next = u32::try_from(i + 1).ok().filter(|_| i + 1 < capacity);
            slots.push(Slot {
                next: next.unwrap_or(NIL),
                entry: None,
            });
        }
        Self {
            heads: vec![NIL; buckets],
            slots,
            free: if capacity == 0 { NIL } else { 0 },
            len: 0,
            mask: u64::try_from(buckets.saturating_sub(1)).unwrap_or(0),
            seed,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.slots.len()
    }

    fn bucket(&self, key: &K) -> usize {
        let h = mix64(key.fold() ^ self.seed) & self.mask;
        usize::try_from(h).unwrap_or(0)
    }

    fn slot(&self, index: u32) -> Option<&Slot<K, V>> {
        self.slots.get(usize::try_from(index).ok()?)
    }

    fn slot_mut(&mut self, index: u32) -> Option<&mut Slot<K, V>> {
        self.slots.get_mut(usize::try_from(index).ok()?)
    }

    fn find(&self, key: &K) -> Option<u32> {
        let mut at = *self.heads.get(self.bucket(key))?;
        while let Some(slot) = self.slot(at) {
            if matches!(&slot.entry, Some((k, _)) if k == key) {
                return Some(at);
            }
            at = slot.next;
        }
        None
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        let at = self.find(key)?;
        self.slot(at)?.entry.as_ref().map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let at = self.find(key)?;
        self.slot_mut(at)?.entry.as_mut().map(|(_, v)| v)
    }

    /// Inserts or replaces `key`'s value. Fails only when `key` is new and the table is full.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Result<(), Full> {
        if let Some(v) = self.get_mut(&key) {
            *v = value;
            return Ok(());
        }
        let at = self.free;
        let bucket = self.bucket(&key);
        let head = *self.heads.get(bucket).ok_or(Full)?;
        let slot = self.slot_mut(at).ok_or(Full)?;
        let next_free = slot.next;
        slot.next = head;
        slot.entry = Some((key, value));
        self.free = next_free;
        if let Some(h) = self.heads.get_mut(bucket) {
            *h = at;
        }
        self.len += 1;
        Ok(())
    }

    /// Removes `key`, returning its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let bucket = self.bucket(key);
        let mut prev = NIL;
        let mut at = *self.heads.get(bucket)?;
        while let Some(slot) = self.slot(at) {
            let next = slot.next;
            if matches!(&slot.entry, Some((k, _)) if k == key) {
                return self.unlink(bucket, prev, at, next);
            }
            prev = at;
            at = next;
        }
        None
    }

    /// Unlinks slot `at` (whose predecessor on chain `bucket` is `prev`) and frees it.
    fn unlink(&mut self, bucket: usize, prev: u32, at: u32, next: u32) -> Option<V> {
        if prev == NIL {
            if let Some(h) = self.heads.get_mut(bucket) {
                *h = next;
            }
        } else if let Some(p) = self.slot_mut(prev) {
            p.next = next;
        }
        let free = self.free;
        let slot = self.slot_mut(at)?;
        let (_, value) = slot.entry.take()?;
        slot.next = free;
        self.free = at;
        self.len -= 1;
        Some(value)
    }

    /// Keeps only the entries for which `keep` returns true; returns how many went.
    /// O(buckets + capacity), and nothing for an empty table (housekeeping asks every 10 ms).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) -> usize {
        if self.len() == 0 {
            return 0;
        }
        let mut removed = 0;
        for bucket in 0..self.heads.len() {
            let mut prev = NIL;
            let mut at = self.heads[bucket];
            while at != NIL {
                let Some(slot) = self.slot_mut(at) else { break };
                let next = slot.next;
                let kept = match &mut slot.entry {
                    Some((k, v)) => keep(k, v),
                    None => true,
                };
                if kept {
                    prev = at;
                } else {
                    self.unlink(bucket, prev, at, next);
                    removed += 1;
                }
                at = next;
            }
        }
        removed
    }

    /// The entries in slots `from..from + max_slots`, and where the next range starts
    /// (`None` once past the last slot): a walk in bounded steps.
    pub(crate) fn iter_slots(
        &self,
        from: usize,
        max_slots: usize,
    ) -> (impl Iterator<Item = (&K, &V)> + '_, Option<usize>) {
        let end = from.saturating_add(max_slots).min(self.slots.len());
        let part = self.slots.get(from..end).unwrap_or_default();
        let next = (end < self.slots.len()).then_some(end);
        (
            part.iter()
                .filter_map(|s| s.entry.as_ref().map(|(k, v)| (k, v))),
            next,
        )
    }

    /// Every entry, in slot order (deterministic for a given history of operations).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.slots
            .iter()
            .filter_map(|s| s.entry.as_ref().map(|(k, v)| (k, v)))
    }

    /// The longest chain, for tests of the hash spread.
    #[cfg(test)]
    pub(crate) fn longest_chain(&self) -> usize {
        (0..self.heads.len())
            .map(|b| {
                let mut n = 0;
                let mut at = self.heads[b];
                while let Some(slot) = self.slot(at) {
                    n += 1;
                    at = slot.next;
                }
                n
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0A00_0000 | n)
    }

    #[test]
    fn insert_get_replace_remove() {
        let mut t: BoundedTable<Ipv4Addr, u32> = BoundedTable::new(4, 3, 7);
        assert_eq!(t.capacity(), 3);
        assert_eq!(t.get(&ip(1)), None);
        t.insert(ip(1), 10).unwrap();
        t.insert(ip(2), 20).unwrap();
        t.insert(ip(1), 11).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(&ip(1)), Some(&11));
        t.insert(ip(3), 30).unwrap();
        assert!(t.is_full());
        assert_eq!(t.insert(ip(4), 40), Err(Full));
        // Replacing a present key still works when full.
        t.insert(ip(3), 31).unwrap();
        assert_eq!(t.remove(&ip(2)), Some(20));
        assert_eq!(t.remove(&ip(2)), None);
        t.insert(ip(4), 40).unwrap();
        let mut all: Vec<_> = t.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort();
        assert_eq!(all, vec![(ip(1), 11), (ip(3), 31), (ip(4), 40)]);
    }

    #[test]
    fn retain_unlinks_anywhere_on_a_chain() {
        // One bucket: every entry on the same chain, so head, middle and tail removals run.
        let mut t: BoundedTable<Ipv4Addr, u32> = BoundedTable::new(1, 8, 0);
        for n in 0..8 {
            t.insert(ip(n), n).unwrap();
        }
        assert_eq!(t.retain(|_, v| *v % 3 == 0), 5);
        let mut left: Vec<_> = t.iter().map(|(_, v)| *v).collect();
        left.sort();
        assert_eq!(left, vec![0, 3, 6]);
        for n in [0, 3, 6] {
            assert_eq!(t.get(&ip(n)), Some(&n));
        }
        // Freed slots are reused.
        for n in 10..15 {
            t.insert(ip(n), n).unwrap();
        }
        assert!(t.is_full());
    }

    #[test]
    fn zero_capacity_refuses_everything() {
        let mut t: BoundedTable<Ipv4Addr, u32> = BoundedTable::new(1, 0, 0);
        assert_eq!(t.insert(ip(1), 1), Err(Full));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn consecutive_addresses_spread_over_the_buckets() {
        let mut t: BoundedTable<Ipv4Addr, u32> = BoundedTable::new(1024, 16_384, 0);
        for n in 0..16_384 {
            t.insert(ip(n), n).unwrap();
        }
        // 16 per bucket on average; a keyed mixer keeps the worst chain short.
        assert!(
            t.longest_chain() < 48,
            "longest chain {}",
            t.longest_chain()
        );
    }
}
