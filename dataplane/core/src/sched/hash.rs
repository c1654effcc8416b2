//! The hash functions behind the schedulers' tables.
//!
//! Everything here is deterministic: two directors configured alike build identical sh, dh
//! and mh tables, so after a failover the standby maps a client to the same real server the
//! active one did.

/// `GOLDEN_RATIO_32` from the kernel's `include/linux/hash.h`.
const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// The kernel's `hash_32(val, bits)` (`include/linux/hash.h`): a multiplicative hash keeping
/// the top `bits` bits. sh and dh index their 256-bucket tables with it
/// (`ip_vs_sh_hashkey`, `ip_vs_dh_hashkey`). `bits` must be in `1..=32`.
pub(crate) const fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// The splitmix64 finaliser: a bijective 64-bit mixer with full avalanche.
pub(crate) const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A keyed hash of an IPv4 endpoint and a probe offset, for Maglev's permutations and lookups.
///
/// The kernel (`ip_vs_mh_hashkey`) hashes the 32-bit sum `offset + port + addr` with
/// `hsiphash` under two fixed keys. We hash the same inputs without summing them first (so
/// `10.0.0.1:81` and `10.0.0.2:80` do not share a permutation), with a mixer instead of
/// SipHash: the table is ours alone, only its properties matter.
pub(crate) const fn endpoint_hash(key: u64, addr: u32, port: u16, offset: u32) -> u64 {
    let endpoint = ((addr as u64) << 16) | port as u64;
    let first = mix64(key ^ endpoint);
    mix64(first ^ (offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// `h mod m` as a `u32` (`m > 0`).
pub(crate) fn reduce(h: u64, m: u32) -> u32 {
    // The remainder is below `m`, so it always fits.
    u32::try_from(h % u64::from(m.max(1))).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_32_is_the_kernels_multiplicative_hash() {
        // 1 * GOLDEN_RATIO_32 = 0x61C88647; its top 8 bits are 0x61.
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(hash_32(0, 8), 0);
        // 10.0.0.1 in host order; all 32 bits are the plain product.
        assert_eq!(
            hash_32(0x0A00_0001, 32),
            0x0A00_0001u32.wrapping_mul(0x61C8_8647)
        );
        assert_eq!(
            hash_32(0x0A00_0001, 8),
            0x0A00_0001u32.wrapping_mul(0x61C8_8647) >> 24
        );
    }

    #[test]
    fn endpoint_hash_separates_what_a_sum_would_merge() {
        let a = endpoint_hash(1, 0x0A00_0001, 81, 0);
        let b = endpoint_hash(1, 0x0A00_0002, 80, 0);
        assert_ne!(a, b);
        assert_ne!(endpoint_hash(1, 5, 5, 0), endpoint_hash(2, 5, 5, 0));
        assert_ne!(endpoint_hash(1, 5, 5, 0), endpoint_hash(1, 5, 5, 1));
    }

    #[test]
    fn reduce_stays_in_range() {
        assert_eq!(reduce(10, 7), 3);
        assert_eq!(
            reduce(u64::MAX, 65_537),
            u32::try_from(u64::MAX % 65_537).unwrap()
        );
    }
}
