//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! The checksum field holds the one's complement of the one's complement sum of the 16-bit
//! big-endian words of the data. A receiver sums the data *including* the checksum field and
//! accepts it when the sum is all ones (RFC 1071 §1, step (3)).
//!
//! Byte order: the functions here take words as numbers, however they were read, as long as
//! every word of a computation is read the same way. Swapping the bytes of every word swaps
//! those of the folded sum (RFC 1071 §2(B)) and of its complement, zero and all ones included,
//! so a checksum computed from `from_ne_bytes` words and stored with `to_ne_bytes` is the same
//! bytes as one computed and stored big-endian, without swapping anything.

use std::net::Ipv4Addr;

/// Folds a wide one's complement accumulator down to 16 bits (end-around carry, RFC 1071 §2(B)).
///
/// The result is zero only if `sum` is zero. Branch-free: the high half of
/// `x + x.rotate_left(half)` is the sum of `x`'s halves with the end-around carry out of the
/// low half (the carry out of the top is dropped: the halves' one's complement sum), so two
/// such steps fold 64 → 32 → 16 bits. Each keeps the value modulo 2¹⁶−1 and keeps it non-zero,
/// so the result is the one value in `1..=0xffff` congruent to a non-zero `sum`: what folding
/// 16 bits at a time gives.
#[inline]
pub const fn fold(sum: u64) -> u16 {
    #[allow(clippy::cast_possible_truncation)]
    let s = (sum.wrapping_add(sum.rotate_left(32)) >> 32) as u32;
    #[allow(clippy::cast_possible_truncation)]
    let folded = (s.wrapping_add(s.rotate_left(16)) >> 16) as u16;
    folded
}

/// The one's complement sum of `data` as big-endian 16-bit words, folded to 16 bits and not
/// complemented. An odd trailing byte is padded with a zero octet (RFC 1071 §1, step (1)).
///
/// Sums eight bytes at a time with an end-around carry: 2⁶⁴−1 is a multiple of 2¹⁶−1, so the
/// 64-bit one's complement sum folds to the same 16-bit one's complement sum (RFC 1071 §2(C),
/// "parallel summation" and byte-order independence §2(B)).
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let (s, carry) = acc.overflowing_add(u64::from_be_bytes(word));
        acc = s + u64::from(carry);
    }
    // Fold to 33 bits so the (at most four) tail words cannot overflow the accumulator.
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut rest = chunks.remainder().chunks_exact(2);
    for pair in &mut rest {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = rest.remainder() {
        acc += u64::from(*last) << 8;
    }
    fold(acc)
}

/// The checksum to store in a header whose checksum field is zero: `!sum(data)`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Whether `data`, checksum field included, sums to all ones (RFC 1071 §1, step (3)).
#[inline]
pub fn verify(data: &[u8]) -> bool {
    sum(data) == 0xffff
}

/// The term one 16-bit word of the covered data adds to the sum when it changes from `old` to
/// `new`: `~m + m'` of RFC 1624 eqn. 3. Terms of several changed words add up; [`apply`]
/// applies their total at once, which equals updating for each word in turn.
#[inline]
pub const fn diff16(old: u16, new: u16) -> u64 {
    (!old) as u64 + new as u64
}

/// [`diff16`] for a 32-bit field, such as an IPv4 address: both of its 16-bit words. Summed
/// as 32-bit values with an end-around carry, so below 2³²: congruent modulo 2¹⁶−1 to what the
/// two words give (2¹⁶ ≡ 1), and zero only if that is, so the fold is the same.
#[inline]
pub const fn diff32(old: u32, new: u32) -> u64 {
    let (sum, carry) = (!old).overflowing_add(new);
    // With a carry, `sum` is at most 2³² − 2.
    (sum + carry as u32) as u64
}

/// The checksum after the changes whose [`diff16`]/[`diff32`] terms add up to `diff`:
/// `HC' = ~(~HC + Σ(~m + m'))` (RFC 1624 §3, eqn. 3). `diff` must stay below 2⁶⁴ (any sum
/// of fewer than 2³¹ terms does).
///
/// Equals a full recomputation whenever the new data is not all zeros: the only case where a
/// full computation gives `0xffff` while the incremental form gives its one's complement twin
/// `0x0000` (RFC 1624 §3; impossible for IPv4 headers, whose version nibble is never zero).
#[inline]
pub const fn apply(old_cksum: u16, diff: u64) -> u16 {
    !fold((!old_cksum) as u64 + diff)
}

/// The checksum after one 16-bit word of the covered data changes from `old_word` to
/// `new_word`: [`apply`] of one [`diff16`].
#[inline]
pub fn update16(old_cksum: u16, old_word: u16, new_word: u16) -> u16 {
    apply(old_cksum, diff16(old_word, new_word))
}

/// [`update16`] for a 32-bit field, such as an IPv4 address: both of its 16-bit words change.
#[inline]
pub fn update32(old_cksum: u16, old: u32, new: u32) -> u16 {
    apply(old_cksum, diff32(old, new))
}

/// [`update32`] for an IPv4 address (or any 32-bit field stored as one).
#[inline]
pub fn update_addr(old_cksum: u16, old: Ipv4Addr, new: Ipv4Addr) -> u16 {
    update32(old_cksum, old.to_bits(), new.to_bits())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference: RFC 1071 §1 word by word, the slow way.
    fn naive_sum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let word = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
            acc += word;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        u16::try_from(acc).unwrap()
    }

    /// Reference: the fold as RFC 1071 §2(B) loops it.
    fn loop_fold(mut sum: u64) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        u16::try_from(sum).unwrap()
    }

    #[test]
    fn fold_edges() {
        for sum in [
            0,
            1,
            0xfffe,
            0xffff,
            0x1_0000,
            0x1_fffe,
            0x1_ffff,
            0xffff_fffe,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_ffff_fffe,
            0xffff_0000_ffff_0000,
            0xffff_ffff_0000_0000,
            0x8000_0000_8000_0000,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(fold(sum), loop_fold(sum), "{sum:#x}");
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(sum(&data), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn known_ipv4_header() {
        // A header from the wire with its checksum 0xb861 in place (bytes 10..12).
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert!(verify(&hdr));
        let mut zeroed = hdr;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(&zeroed), 0xb861);
    }

    #[test]
    fn odd_length_and_empty() {
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0xab]), 0xab00);
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x6834);
        // All-ones words never fold to zero.
        assert_eq!(sum(&[0xff; 64]), 0xffff);
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: a word changes from 0x5555 to 0x3285 in a header whose checksum is
        // 0xdd2f; the new checksum is 0x0000 (eqn. 3 gives 0x0000, not 0xffff).
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    fn word_at(data: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([data[at], data[at + 1]])
    }

    proptest! {
        #[test]
        fn fold_matches_loop(sum in any::<u64>(), shift in 0u32..64) {
            prop_assert_eq!(fold(sum), loop_fold(sum));
            prop_assert_eq!(fold(sum >> shift), loop_fold(sum >> shift));
        }

        /// Several words changed at once, their terms applied in one update: equal to a full
        /// recomputation, and to updating word by word.
        #[test]
        fn apply_combined_equals_recompute_and_sequential(
            mut hdr in proptest::array::uniform20(any::<u8>()),
            changes in proptest::collection::vec((0usize..9, any::<u16>()), 0..6),
            addr in any::<u32>(),
        ) {
            hdr[0] = 0x40 | (hdr[0] & 0x0f);
            hdr[10] = 0;
            hdr[11] = 0;
            let cksum = checksum(&hdr);
            let (mut diff, mut sequential) = (0, cksum);
            for (word, new_word) in changes {
                // Any word but the checksum (5); the first keeps its version nibble.
                let at = [2, 4, 6, 8, 12, 14, 16, 18, 0][word];
                let new_word = if at == 0 { 0x4000 | (new_word & 0x0fff) } else { new_word };
                let old_word = word_at(&hdr, at);
                hdr[at..at + 2].copy_from_slice(&new_word.to_be_bytes());
                diff += diff16(old_word, new_word);
                sequential = update16(sequential, old_word, new_word);
            }
            let old_addr = u32::from_be_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
            hdr[16..20].copy_from_slice(&addr.to_be_bytes());
            diff += diff32(old_addr, addr);
            sequential = update32(sequential, old_addr, addr);
            let combined = apply(cksum, diff);
            prop_assert_eq!(combined, sequential);
            prop_assert_eq!(combined, checksum(&hdr));
        }

        /// The byte order note: words read little-endian give the byte-swapped update.
        #[test]
        fn apply_is_byte_order_independent(
            cksum in any::<u16>(),
            words in proptest::collection::vec(any::<u16>(), 0..8),
            wides in proptest::collection::vec(any::<u32>(), 0..4),
        ) {
            let (mut be, mut swapped) = (0, 0);
            for pair in words.chunks_exact(2) {
                be += diff16(pair[0], pair[1]);
                swapped += diff16(pair[0].swap_bytes(), pair[1].swap_bytes());
            }
            for pair in wides.chunks_exact(2) {
                // A 32-bit field read little-endian is the big-endian reading swapped.
                be += diff32(pair[0], pair[1]);
                swapped += diff32(pair[0].swap_bytes(), pair[1].swap_bytes());
            }
            prop_assert_eq!(apply(cksum, be).swap_bytes(), apply(cksum.swap_bytes(), swapped));
        }

        #[test]
        fn sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..1600)) {
            prop_assert_eq!(sum(&data), naive_sum(&data));
        }

        /// A random 20-byte IPv4-like header (version nibble set, so never all zeros): change one
        /// 16-bit word, update the checksum incrementally, compare with a full recomputation.
        #[test]
        fn update16_equals_recompute(
            mut hdr in proptest::array::uniform20(any::<u8>()),
            word in 0usize..10,
            new_word in any::<u16>(),
        ) {
            hdr[0] = 0x40 | (hdr[0] & 0x0f);
            hdr[10] = 0;
            hdr[11] = 0;
            let cksum = checksum(&hdr);
            hdr[10..12].copy_from_slice(&cksum.to_be_bytes());
            // The checksum word itself is not data to update.
            let at = if word == 5 { 8 } else { word * 2 };
            let old_word = word_at(&hdr, at);
            hdr[at..at + 2].copy_from_slice(&new_word.to_be_bytes());
            let incremental = update16(cksum, old_word, new_word);
            hdr[10] = 0;
            hdr[11] = 0;
            prop_assert_eq!(incremental, checksum(&hdr));
        }

        /// Same for a 32-bit field (the source or destination address).
        #[test]
        fn update_addr_equals_recompute(
            mut hdr in proptest::array::uniform20(any::<u8>()),
            dst in any::<bool>(),
            new in any::<u32>(),
        ) {
            hdr[0] = 0x40 | (hdr[0] & 0x0f);
            hdr[10] = 0;
            hdr[11] = 0;
            let cksum = checksum(&hdr);
            hdr[10..12].copy_from_slice(&cksum.to_be_bytes());
            let at = if dst { 16 } else { 12 };
            let old = Ipv4Addr::new(hdr[at], hdr[at + 1], hdr[at + 2], hdr[at + 3]);
            let new = Ipv4Addr::from_bits(new);
            hdr[at..at + 4].copy_from_slice(&new.octets());
            let incremental = update_addr(cksum, old, new);
            let mut stored = hdr;
            stored[10..12].copy_from_slice(&incremental.to_be_bytes());
            prop_assert!(verify(&stored));
            hdr[10] = 0;
            hdr[11] = 0;
            prop_assert_eq!(incremental, checksum(&hdr));
        }

        /// Arbitrary data of any length (any 16-bit-aligned word changes): equal to a full
        /// recomputation unless the new data is all zeros (see `update16`'s doc).
        #[test]
        fn update16_any_data(
            mut data in proptest::collection::vec(any::<u8>(), 2..200),
            pick in any::<prop::sample::Index>(),
            new_word in any::<u16>(),
        ) {
            let at = pick.index(data.len() / 2) * 2;
            let cksum = checksum(&data);
            let old_word = word_at(&data, at);
            data[at..at + 2].copy_from_slice(&new_word.to_be_bytes());
            prop_assume!(data.iter().any(|&b| b != 0));
            prop_assert_eq!(update16(cksum, old_word, new_word), checksum(&data));
        }
    }
}
