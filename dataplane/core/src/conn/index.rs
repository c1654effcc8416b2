//! The connection table's index: a fixed-capacity, allocation-free open-addressing table of
//! 64-byte buckets, built so a burst of lookups can prefetch their buckets ahead of time.
//!
//! Each bucket holds 8 slots of (`u32` hash tag, `u32` value); values are the conn table's
//! `slab index << 1 | key` and [`EMPTY`] marks a free slot. A key's home bucket is taken from
//! its 32-bit tag (the high half of its 64-bit hash), so the home of a stored value is known
//! without reading the slab. Probing is linear across buckets, and the occupied slots of every
//! bucket form a prefix: a lookup compares the bucket's 8 tags and moves on only if the bucket
//! is full. Deletion moves the bucket's last value into the hole, then, if the bucket was full,
//! pulls back values of later buckets whose probe passed through it (backward shift): no
//! tombstones, so the probe lengths stay those of the live keys and nothing is ever rebuilt.
//!
//! The table is sized at construction (a power-of-two bucket count) and the caller keeps it at
//! most half full; it never allocates again.

/// A free slot's value.
pub(crate) const EMPTY: u32 = u32::MAX;
/// Slots per bucket.
pub(crate) const SLOTS: usize = 8;

/// One cache line: 8 tags, then 8 values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub(crate) struct Bucket {
    pub(crate) tags: [u32; SLOTS],
    pub(crate) vals: [u32; SLOTS],
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        tags: [0; SLOTS],
        vals: [EMPTY; SLOTS],
    };

    /// Occupied slots (they form a prefix).
    #[inline]
    fn len(&self) -> usize {
        self.vals.iter().take_while(|&&v| v != EMPTY).count()
    }

    #[inline]
    fn is_full(&self) -> bool {
        self.vals[SLOTS - 1] != EMPTY
    }
}

/// The 32-bit tag of a 64-bit hash.
#[inline]
pub(crate) const fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// The index proper. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Index {
    buckets: Vec<Bucket>,
    /// Bucket count − 1 (a power of two − 1).
    mask: usize,
}

impl Index {
    /// An index able to hold `max_values` values at most half full.
    pub(crate) fn with_max_values(max_values: usize) -> Index {
        let slots = max_values.saturating_mul(2).max(SLOTS).next_power_of_two();
        let n = slots / SLOTS;
        Index {
            buckets: vec![Bucket::EMPTY; n],
            mask: n - 1,
        }
    }

    /// Bytes held.
    pub(crate) fn allocation_size(&self) -> usize {
        self.buckets.capacity() * size_of::<Bucket>()
    }

    /// Where the buckets lie: (start, bytes).
    pub(crate) fn region(&self) -> (*const u8, usize) {
        (self.buckets.as_ptr().cast(), self.allocation_size())
    }

    /// The home bucket of `tag`.
    #[inline]
    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask
    }

    /// The home bucket of a key with hash `hash`, for prefetching.
    #[inline]
    pub(crate) fn bucket(&self, hash: u64) -> &Bucket {
        &self.buckets[self.home(tag_of(hash))]
    }

    /// The first value in the home bucket of `hash` whose tag matches (for prefetching the
    /// entry it names; the lookup itself may look further).
    #[inline]
    pub(crate) fn first_candidate(&self, hash: u64) -> Option<u32> {
        let tag = tag_of(hash);
        let bucket = &self.buckets[self.home(tag)];
        (0..SLOTS)
            .find(|&i| bucket.tags[i] == tag && bucket.vals[i] != EMPTY)
            .map(|i| bucket.vals[i])
    }

    /// The first value with hash `hash` for which `eq` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = tag_of(hash);
        let mut b = self.home(tag);
        for _ in 0..=self.mask {
            let bucket = &self.buckets[b];
            let mut hits = 0u32;
            for (i, &t) in bucket.tags.iter().enumerate() {
                hits |= u32::from(t == tag) << i;
            }
            while hits != 0 {
                let i = hits.trailing_zeros() as usize;
                hits &= hits - 1;
                let v = bucket.vals[i];
                if v != EMPTY && eq(v) {
                    return Some(v);
                }
            }
            if !bucket.is_full() {
                return None;
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    /// Adds `val` with hash `hash`; the caller makes sure it is not there yet and that the
    /// index stays at most half full. `false` (nothing added) only if every slot is taken.
    pub(crate) fn insert(&mut self, hash: u64, val: u32) -> bool {
        debug_assert_ne!(val, EMPTY, "the empty marker is not a value");
        let tag = tag_of(hash);
        let mut b = self.home(tag);
        for _ in 0..=self.mask {
            let bucket = &mut self.buckets[b];
            if !bucket.is_full() {
                let i = bucket.len();
                bucket.tags[i] = tag;
                bucket.vals[i] = val;
                return true;
            }
            b = (b + 1) & self.mask;
        }
        false
    }

    /// Removes `val`, stored with hash `hash`. `false` if it was not there.
    pub(crate) fn remove(&mut self, hash: u64, val: u32) -> bool {
        let tag = tag_of(hash);
        let mut b = self.home(tag);
        let mut found = None;
        for _ in 0..=self.mask {
            let bucket = &self.buckets[b];
            if let Some(i) = bucket.vals.iter().position(|&v| v == val) {
                found = Some((b, i));
                break;
            }
            if !bucket.is_full() {
                return false;
            }
            b = (b + 1) & self.mask;
        }
        let Some((mut hole_b, i)) = found else {
            return false;
        };
        let was_full = self.buckets[hole_b].is_full();
        self.take_out(hole_b, i);
        if !was_full {
            return true;
        }
        // The hole is now the last slot of `hole_b`: pull back a value of a later bucket whose
        // probe passed through it, and repeat from that value's bucket.
        let mut c = (hole_b + 1) & self.mask;
        for _ in 0..self.mask {
            let bucket = &self.buckets[c];
            let dist_hole = c.wrapping_sub(hole_b) & self.mask;
            let cand = (0..bucket.len())
                .find(|&j| c.wrapping_sub(self.home(bucket.tags[j])) & self.mask >= dist_hole);
            let full = bucket.is_full();
            if let Some(j) = cand {
                let (t, v) = (bucket.tags[j], bucket.vals[j]);
                let dst = &mut self.buckets[hole_b];
                dst.tags[SLOTS - 1] = t;
                dst.vals[SLOTS - 1] = v;
                self.take_out(c, j);
                if !full {
                    return true;
                }
                hole_b = c;
            } else if !full {
                return true;
            }
            c = (c + 1) & self.mask;
        }
        true
    }

    /// Empties slot `i` of bucket `b`, moving the bucket's last value into it.
    fn take_out(&mut self, b: usize, i: usize) {
        let bucket = &mut self.buckets[b];
        let last = bucket.len() - 1;
        bucket.tags[i] = bucket.tags[last];
        bucket.vals[i] = bucket.vals[last];
        bucket.tags[last] = 0;
        bucket.vals[last] = EMPTY;
    }

    /// Every stored value (tests).
    #[cfg(test)]
    pub(crate) fn values(&self) -> impl Iterator<Item = u32> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| b.vals.iter().copied())
            .filter(|&v| v != EMPTY)
    }

    /// Checks every structural invariant (tests).
    #[cfg(test)]
    pub(crate) fn check(&self) {
        for (b, bucket) in self.buckets.iter().enumerate() {
            let n = bucket.len();
            assert!(bucket.vals[n..].iter().all(|&v| v == EMPTY), "prefix");
            for &t in &bucket.tags[..n] {
                // Every bucket from the home to this one (exclusive) is full.
                let mut h = self.home(t);
                while h != b {
                    assert!(self.buckets[h].is_full(), "gap on a probe path");
                    h = (h + 1) & self.mask;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash whose home bucket is `home` (for an index of `n` buckets) and whose tag's other
    /// bits are `salt`.
    fn h(home: u32, salt: u32) -> u64 {
        u64::from(salt << 16 | home) << 32
    }

    fn small() -> Index {
        // 64 values → 128 slots → 16 buckets.
        let ix = Index::with_max_values(64);
        assert_eq!(ix.buckets.len(), 16);
        ix
    }

    #[test]
    fn sized_at_most_half_full_and_one_line_per_bucket() {
        assert_eq!(size_of::<Bucket>(), 64);
        assert_eq!(align_of::<Bucket>(), 64);
        let ix = Index::with_max_values(2_000_000);
        assert_eq!(ix.buckets.len() * SLOTS, 1 << 22);
        assert_eq!(Index::with_max_values(1).buckets.len(), 1);
    }

    #[test]
    fn collisions_in_one_bucket_spill_into_the_next() {
        let mut ix = small();
        for v in 0..20 {
            assert!(ix.insert(h(3, 1), v));
        }
        ix.check();
        for v in 0..20 {
            assert_eq!(ix.find(h(3, 1), |x| x == v), Some(v));
        }
        assert_eq!(ix.find(h(3, 1), |x| x == 99), None);
        assert_eq!(ix.find(h(3, 2), |_| true), None, "other tag, same home");
        assert!(ix.buckets[3].is_full() && ix.buckets[4].is_full());
        assert_eq!(ix.buckets[5].len(), 4);
    }

    #[test]
    fn probes_wrap_around_the_end() {
        let mut ix = small();
        for v in 0..12 {
            assert!(ix.insert(h(15, 7), v));
        }
        ix.check();
        assert_eq!(ix.buckets[0].len(), 4);
        for v in 0..12 {
            assert_eq!(ix.find(h(15, 7), |x| x == v), Some(v));
        }
        for v in 0..12 {
            assert!(ix.remove(h(15, 7), v));
            ix.check();
        }
        assert_eq!(ix.values().count(), 0);
    }

    #[test]
    fn a_full_index_refuses_and_finds_terminate() {
        let mut ix = Index::with_max_values(4); // 8 slots, 1 bucket
        for v in 0..8 {
            assert!(ix.insert(h(0, v), v));
        }
        assert!(!ix.insert(h(0, 9), 9));
        assert_eq!(ix.find(h(0, 9), |_| true), None);
        assert!(!ix.remove(h(0, 9), 9));
        for v in 0..8 {
            assert_eq!(ix.find(h(0, v), |_| true), Some(v));
        }
    }

    #[test]
    fn deletion_pulls_back_displaced_values() {
        let mut ix = small();
        // Bucket 2 full of home-2 values, bucket 3 holds two home-2 spills and home-3 values.
        for v in 0..10 {
            ix.insert(h(2, 1), v);
        }
        for v in 10..14 {
            ix.insert(h(3, 1), v);
        }
        ix.check();
        assert!(ix.remove(h(2, 1), 4));
        ix.check();
        assert!(ix.buckets[2].is_full(), "a spilled value moved back");
        for v in (0..14).filter(|&v| v != 4) {
            let hash = if v < 10 { h(2, 1) } else { h(3, 1) };
            assert_eq!(ix.find(hash, |x| x == v), Some(v), "{v}");
        }
        assert!(!ix.remove(h(2, 1), 4), "already gone");
    }

    #[test]
    fn random_operations_match_a_model() {
        let mut ix = Index::with_max_values(256); // 64 buckets
        let mut model: Vec<(u64, u32)> = Vec::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..20_000u32 {
            let r = next();
            // Few homes, so clusters form and wrap.
            let hash = h((r % 8) as u32 * 7 % 64, ((r >> 8) % 3) as u32);
            if model.len() < 256 && (r >> 20) % 3 != 0 {
                assert!(ix.insert(hash, step));
                model.push((hash, step));
            } else if !model.is_empty() {
                let (hh, v) = model.swap_remove((r >> 24) as usize % model.len());
                assert!(ix.remove(hh, v));
            }
            if step % 97 == 0 {
                ix.check();
                for &(hh, v) in &model {
                    assert_eq!(ix.find(hh, |y| y == v), Some(v));
                }
                assert_eq!(ix.values().count(), model.len());
            }
        }
    }
}
