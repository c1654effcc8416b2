//! The keyed hash of a connection key for the index.
//!
//! A key is 13 bytes (protocol, two IPv4 endpoints); it is packed into two words and mixed with
//! two folded 64×64→128-bit multiplications, the construction of foldhash/wyhash. The two seed
//! words come from [`crate::conn::ConnConfig::hash_seed`]: with a secret seed per director an
//! outsider cannot aim many flows at one probe sequence. No dependency and no clock or
//! randomness read here; the glue chooses the seed.

use crate::lb::{Endpoint, Protocol};

/// An odd constant with well-spread bits (2⁶⁴/φ).
const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// The 128-bit product of `a` and `b`, folded to 64 bits by XOR of its halves.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the halves of the 128-bit product are taken on purpose"
)]
const fn fold(a: u64, b: u64) -> u64 {
    let full = (a as u128) * (b as u128);
    (full as u64) ^ ((full >> 64) as u64)
}

/// splitmix64, to derive independent seed words from one configured seed.
const fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(MIX);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hashes connection keys with a per-table seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyHasher {
    k0: u64,
    k1: u64,
}

impl KeyHasher {
    pub(crate) const fn new(seed: u64) -> Self {
        let k0 = splitmix(seed);
        KeyHasher {
            k0,
            k1: splitmix(k0),
        }
    }

    /// The hash of the key `(proto, src, dst)`.
    #[inline]
    pub(crate) fn hash(&self, proto: Protocol, src: Endpoint, dst: Endpoint) -> u64 {
        self.hash_words(key_words(proto, src, dst))
    }

    /// The hash of a key packed by [`key_words`].
    #[inline]
    pub(crate) fn hash_words(&self, [addrs, rest]: [u64; 2]) -> u64 {
        fold(fold(addrs ^ self.k0, rest ^ self.k1), MIX)
    }
}

/// The key `(proto, src, dst)` packed into two words: the addresses, then the ports and the
/// protocol number. The second word is never zero for a TCP or UDP key (protocol 6 or 17).
#[inline]
pub(crate) fn key_words(proto: Protocol, src: Endpoint, dst: Endpoint) -> [u64; 2] {
    [
        u64::from(src.addr.to_bits()) << 32 | u64::from(dst.addr.to_bits()),
        u64::from(src.port) << 32 | u64::from(dst.port) << 16 | u64::from(proto.number()),
    ]
}
