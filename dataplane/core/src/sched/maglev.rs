//! Maglev hashing (`ip_vs_mh.c`; Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, §3.4).
//!
//! Each destination gets a permutation of the lookup table's `M` positions (`M` prime) from
//! two hashes of its address and port: `offset = h1 mod M`, `skip = h2 mod (M − 1) + 1`, the
//! `j`-th preference being `(offset + j·skip) mod M`. The table is filled by letting the
//! destinations take turns claiming their next preferred free position; a client is then
//! mapped by `table[hash(source) mod M]`. Removing one of `N` destinations frees its ~`M/N`
//! positions and moves few others, because every remaining destination keeps walking the same
//! preference list.
//!
//! As in the kernel, weights become turns: a destination with weight `w` claims
//! `(w / gcd) >> rshift` positions per turn (`rshift` keeps the largest under
//! `2^(log2(M)/2)` turns), and the table is built from each destination's *last non-zero*
//! weight (`dest->last_weight`), so quiescing a server (weight 0) leaves the table untouched:
//! its clients find it unavailable (and, with `mh-fallback`, move elsewhere) while everyone
//! else stays put.

use std::net::Ipv4Addr;

use super::hash::{endpoint_hash, reduce};
use super::{DestState, SchedulerError, resolve};
use crate::lb::DestId;

/// The lookup table size when none is configured: 65537, the prime of the Maglev paper.
/// (The kernel's default, `CONFIG_IP_VS_MH_TAB_INDEX` 12, is 4093.)
pub const MH_DEFAULT_TABLE_SIZE: u32 = 65_537;
/// The largest lookup table accepted (entries; 4 bytes each).
pub const MH_MAX_TABLE_SIZE: u32 = 1 << 20;

/// Hash keys for the permutation offset (and lookups) and for the skip. The kernel seeds its
/// two `hsiphash` keys with 2654435761 and 2654446892; we use the same constants.
const KEY1: u64 = 0x9E37_79B1_9E37_79B1;
const KEY2: u64 = 0x9E37_A52C_9E37_A52C;
const EMPTY: u32 = u32::MAX;

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn bit_length(x: u32) -> u32 {
    32 - x.leading_zeros()
}

/// Whether `n` is prime (trial division; configuration time only).
pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// The mh scheduler: a Maglev lookup table of indices into the destination list.
#[derive(Debug, Clone)]
pub(crate) struct Mh {
    size: u32,
    slots: Vec<u32>,
    ids: Vec<DestId>,
    last_weight: Vec<u32>,
    fallback: bool,
    port: bool,
}

impl Mh {
    pub(crate) fn new(
        size: u32,
        dests: &[DestState],
        fallback: bool,
        port: bool,
    ) -> Result<Self, SchedulerError> {
        let mut mh = Self {
            size,
            slots: Vec::new(),
            ids: Vec::new(),
            last_weight: Vec::new(),
            fallback,
            port,
        };
        mh.update(dests)?;
        Ok(mh)
    }

    /// Checks that `dests` fits a table of `size` (`ip_vs_mh_reassign`: more destinations than
    /// positions is `-EINVAL`).
    fn check(size: u32, dests: &[DestState]) -> Result<(), SchedulerError> {
        if dests.len() > usize::try_from(size).unwrap_or(usize::MAX) {
            return Err(SchedulerError::TooManyDests {
                dests: dests.len(),
                table: size,
            });
        }
        Ok(())
    }

    /// `ip_vs_mh_dest_changed`: recompute the last weights, the gcd and shift, and refill.
    pub(crate) fn update(&mut self, dests: &[DestState]) -> Result<(), SchedulerError> {
        Self::check(self.size, dests)?;
        // __ip_vs_update_dest keeps last_weight at the latest non-zero weight (a destination
        // added with weight 0 starts at 0).
        let last_weight: Vec<u32> = dests
            .iter()
            .map(|d| {
                if d.weight > 0 {
                    return d.weight;
                }
                self.ids
                    .iter()
                    .position(|&id| id == d.id)
                    .and_then(|i| self.last_weight.get(i).copied())
                    .unwrap_or(0)
            })
            .collect();
        self.slots = populate(self.size, dests, &last_weight);
        self.ids = dests.iter().map(|d| d.id).collect();
        self.last_weight = last_weight;
        Ok(())
    }

    fn get<'a>(&self, dests: &'a [DestState], position: u32) -> Option<&'a DestState> {
        let at = *self.slots.get(usize::try_from(position).ok()?)?;
        resolve(dests, &self.ids, usize::try_from(at).ok()?)
    }

    /// `ip_vs_mh_schedule`: the destination at `hash(source [, port]) mod M`; if unavailable,
    /// nothing, or with `mh-fallback` the first available one found by re-hashing with
    /// offsets as `ip_vs_mh_get_fallback` does.
    pub(crate) fn pick(&self, dests: &[DestState], addr: Ipv4Addr, port: u16) -> Option<DestId> {
        let port = if self.port { port } else { 0 };
        let addr = u32::from(addr);
        let ihash = reduce(endpoint_hash(KEY1, addr, port, 0), self.size);
        let first = self.get(dests, ihash)?;
        if first.is_available() {
            return Some(first.id);
        }
        // Up to M re-hashes; skip them all when nothing could be found.
        if !self.fallback || !dests.iter().any(DestState::is_available) {
            return None;
        }
        for offset in 0..self.size {
            let roffset = (offset + ihash) % self.size;
            let h = reduce(endpoint_hash(KEY1, addr, port, roffset), self.size);
            let d = self.get(dests, h)?;
            if d.is_available() {
                return Some(d.id);
            }
        }
        None
    }

    /// The owner of every table position (for tests of spread and disruption).
    #[cfg(test)]
    pub(crate) fn owners(&self) -> Vec<Option<DestId>> {
        self.slots
            .iter()
            .map(|&s| self.ids.get(usize::try_from(s).ok()?).copied())
            .collect()
    }
}

/// One destination's walk through its preference list (`struct ip_vs_mh_dest_setup`).
struct Walk {
    next: u32,
    skip: u32,
    turns: u32,
}

/// `ip_vs_mh_permutate` + `ip_vs_mh_populate`.
fn populate(size: u32, dests: &[DestState], last_weight: &[u32]) -> Vec<u32> {
    let mut slots = vec![EMPTY; usize::try_from(size).unwrap_or(0)];
    let g = last_weight.iter().copied().fold(0, gcd);
    if g == 0 {
        return slots;
    }
    let most = last_weight.iter().copied().max().unwrap_or(0) / g;
    let shift = bit_length(most).saturating_sub(bit_length(size - 1) / 2);
    let mut walks: Vec<Walk> = dests
        .iter()
        .zip(last_weight)
        .map(|(d, &lw)| {
            let addr = u32::from(d.addr);
            let offset = reduce(endpoint_hash(KEY1, addr, d.port, 0), size);
            let skip = reduce(endpoint_hash(KEY2, addr, d.port, 0), size - 1) + 1;
            let turns = (lw / g) >> shift;
            Walk {
                next: offset,
                skip,
                turns: if turns == 0 {
                    u32::from(lw != 0)
                } else {
                    turns
                },
            }
        })
        .collect();
    let mut taken = vec![false; slots.len()];
    let mut filled = 0usize;
    // g > 0, so some destination has turns >= 1 and every round fills at least one slot.
    'fill: loop {
        for (i, walk) in walks.iter_mut().enumerate() {
            for _ in 0..walk.turns {
                // M is prime and 1 <= skip < M, so the walk visits every position and finds
                // a free one while the table is not full.
                let mut c = usize::try_from(walk.next).unwrap_or(0);
                while taken[c] {
                    walk.next += walk.skip;
                    if walk.next >= size {
                        walk.next -= size;
                    }
                    c = usize::try_from(walk.next).unwrap_or(0);
                }
                taken[c] = true;
                slots[c] = u32::try_from(i).unwrap_or(EMPTY);
                filled += 1;
                if filled == slots.len() {
                    break 'fill;
                }
            }
        }
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests(weights: &[u32]) -> Vec<DestState> {
        weights
            .iter()
            .zip(0u32..)
            .map(|(&w, i)| DestState::new(DestId(i), Ipv4Addr::from(0xC0A8_0000 + i), 8080, w))
            .collect()
    }

    fn shares(owners: &[Option<DestId>], n: u32) -> Vec<f64> {
        let total = owners.len() as f64;
        (0..n)
            .map(|i| owners.iter().filter(|&&o| o == Some(DestId(i))).count() as f64 / total)
            .collect()
    }

    #[test]
    fn primes() {
        assert!(is_prime(65_537) && is_prime(4093) && is_prime(251) && is_prime(2));
        assert!(!is_prime(65_536) && !is_prime(1) && !is_prime(0) && !is_prime(4095));
    }

    #[test]
    fn equal_weights_spread_within_one_percent() {
        let d = dests(&[1; 10]);
        let mh = Mh::new(MH_DEFAULT_TABLE_SIZE, &d, false, false).unwrap();
        let owners = mh.owners();
        assert!(owners.iter().all(Option::is_some));
        for (i, s) in shares(&owners, 10).iter().enumerate() {
            assert!((s - 0.1).abs() < 0.001, "dest {i} share {s}");
        }
    }

    #[test]
    fn weighted_spread_within_a_few_percent_of_the_weight_shares() {
        let weights = [1, 2, 3, 4, 6];
        let d = dests(&weights);
        let mh = Mh::new(MH_DEFAULT_TABLE_SIZE, &d, false, false).unwrap();
        let total: u32 = weights.iter().sum();
        for (i, s) in shares(&mh.owners(), 5).iter().enumerate() {
            let want = f64::from(weights[i]) / f64::from(total);
            assert!(
                (s - want).abs() / want < 0.03,
                "dest {i} share {s} want {want}"
            );
        }
    }

    #[test]
    fn large_weight_ratios_are_shifted_like_the_kernel() {
        // M = 251: log2 bits 8, half 4. 1000/1 needs 10 bits -> rshift 6: turns 15 and 1.
        let d = dests(&[1000, 1]);
        let mh = Mh::new(251, &d, false, false).unwrap();
        let owners = mh.owners();
        let a = owners.iter().filter(|&&o| o == Some(DestId(0))).count();
        // Rounds of 15 + 1: fifteen full rounds fill 240, then A takes the last 11.
        assert_eq!(a, 15 * 15 + 11);
    }

    #[test]
    fn removing_one_of_n_moves_little_else() {
        let n = 10;
        let d = dests(&[1; 10]);
        let before = Mh::new(MH_DEFAULT_TABLE_SIZE, &d, false, false)
            .unwrap()
            .owners();
        let removed = DestId(3);
        let rest: Vec<_> = d.iter().copied().filter(|x| x.id != removed).collect();
        let after = Mh::new(MH_DEFAULT_TABLE_SIZE, &rest, false, false)
            .unwrap()
            .owners();
        let m = before.len() as f64;
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64;
        let between_survivors = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a && **b != Some(removed))
            .count() as f64;
        // Every position of the removed server moves (~1/N); Maglev also shuffles a little
        // between survivors. Measured: see the assertion message.
        eprintln!(
            "mh remove 1 of {n}: {:.4} of the table moved, {:.4} between survivors",
            moved / m,
            between_survivors / m
        );
        assert!(after.iter().all(|o| o.is_some() && *o != Some(removed)));
        assert!(
            moved / m < 1.0 / f64::from(n) + 0.01,
            "moved {:.4} of the table",
            moved / m
        );
        assert!(
            between_survivors / m < 0.01,
            "survivor-to-survivor moves {:.4} of the table",
            between_survivors / m
        );
    }

    #[test]
    fn adding_one_moves_about_one_nth() {
        let d = dests(&[1; 11]);
        let before = Mh::new(MH_DEFAULT_TABLE_SIZE, &d[..10], false, false)
            .unwrap()
            .owners();
        let after = Mh::new(MH_DEFAULT_TABLE_SIZE, &d, false, false)
            .unwrap()
            .owners();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count() as f64;
        let to_new = after.iter().filter(|&&o| o == Some(DestId(10))).count() as f64;
        let m = before.len() as f64;
        assert!((to_new / m - 1.0 / 11.0).abs() < 0.005);
        assert!(moved / m < 1.0 / 11.0 + 0.02, "moved {:.4}", moved / m);
    }

    #[test]
    fn quiescing_keeps_the_table_and_fallback_moves_only_its_clients() {
        let d = dests(&[1, 1, 1, 1]);
        let mut mh = Mh::new(4093, &d, false, false).unwrap();
        let before = mh.owners();
        let mut q = d.clone();
        q[2].weight = 0;
        mh.update(&q).unwrap();
        assert_eq!(mh.owners(), before, "last_weight keeps the table");
        let mut with_fallback = Mh::new(4093, &d, true, false).unwrap();
        with_fallback.update(&q).unwrap();
        let reference = Mh::new(4093, &d, false, false).unwrap();
        let mut moved = 0;
        for n in 0..3000u32 {
            let c = Ipv4Addr::from(0x0A00_0000 + n);
            let was = reference.pick(&d, c, 0).unwrap();
            let now = mh.pick(&q, c, 0);
            let fb = with_fallback.pick(&q, c, 0).unwrap();
            assert_ne!(fb, DestId(2));
            if was == DestId(2) {
                // No fallback: the quiesced server's clients get nothing (kernel behaviour).
                assert_eq!(now, None);
                moved += 1;
            } else {
                assert_eq!(now, Some(was));
                assert_eq!(fb, was);
            }
        }
        assert!(
            (600..900).contains(&moved),
            "{moved} of 3000 clients were on the server"
        );
    }

    #[test]
    fn a_destination_added_with_weight_zero_holds_no_position() {
        let mut d = dests(&[1, 1]);
        let mut mh = Mh::new(251, &d, false, false).unwrap();
        d.push(DestState::new(
            DestId(7),
            Ipv4Addr::new(192, 168, 9, 9),
            80,
            0,
        ));
        mh.update(&d).unwrap();
        assert!(mh.owners().iter().all(|&o| o != Some(DestId(7))));
    }

    #[test]
    fn port_flag_mixes_in_the_source_port() {
        let d = dests(&[1; 8]);
        let plain = Mh::new(4093, &d, false, false).unwrap();
        let ported = Mh::new(4093, &d, false, true).unwrap();
        let c = Ipv4Addr::new(10, 1, 2, 3);
        let one: std::collections::BTreeSet<_> = (1000..1100)
            .map(|p| plain.pick(&d, c, p).unwrap())
            .collect();
        let many: std::collections::BTreeSet<_> = (1000..1100)
            .map(|p| ported.pick(&d, c, p).unwrap())
            .collect();
        assert_eq!(one.len(), 1);
        assert!(many.len() >= 6);
    }

    #[test]
    fn lookups_spread_clients_by_table_share() {
        let d = dests(&[1, 3]);
        let mh = Mh::new(4093, &d, false, false).unwrap();
        let heavy = (0..20_000u32)
            .filter(|n| mh.pick(&d, Ipv4Addr::from(0x0A00_0000 + n), 0) == Some(DestId(1)))
            .count();
        assert!((14_000..16_000).contains(&heavy), "heavy got {heavy}");
    }

    #[test]
    fn tables_are_deterministic_and_bounded() {
        let d = dests(&[2, 3, 5]);
        let a = Mh::new(4093, &d, false, false).unwrap();
        let b = Mh::new(4093, &d, false, false).unwrap();
        assert_eq!(a.owners(), b.owners());
        assert!(matches!(
            Mh::new(2, &dests(&[1, 1, 1]), false, false),
            Err(SchedulerError::TooManyDests { dests: 3, table: 2 })
        ));
        let empty = Mh::new(251, &[], true, true).unwrap();
        assert!(empty.owners().iter().all(Option::is_none));
        assert_eq!(empty.pick(&[], Ipv4Addr::LOCALHOST, 1), None);
        let zero = dests(&[0, 0]);
        assert_eq!(
            Mh::new(251, &zero, true, false)
                .unwrap()
                .pick(&zero, Ipv4Addr::LOCALHOST, 0),
            None
        );
    }
}
