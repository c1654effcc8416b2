//! Zero-copy views over packet headers, in the style of smoltcp's `wire` module.
//!
//! Each view wraps a buffer `T: AsRef<[u8]>`: getters need only `AsRef<[u8]>`, setters need
//! `AsMut<[u8]>`. `new_unchecked` wraps any buffer (for writing into a buffer known to be large
//! enough); `new_checked` runs `check_len` first, after which no getter or setter panics.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod icmpv4;
pub mod ipv4;
pub mod tcp;
pub mod udp;

/// A 48-bit IEEE 802 MAC address, as it appears on the wire.
pub type MacAddr = [u8; 6];

/// Why a buffer could not be viewed as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header (or than the length the header claims).
    #[error("buffer too short for the header it should hold")]
    Truncated,
    /// A header field holds a value the protocol does not allow.
    #[error("header field holds an invalid value")]
    Malformed,
    /// A valid header of a kind this code does not handle (e.g. ARP for non-IPv4).
    #[error("header of an unsupported kind")]
    Unsupported,
}

/// The result of parsing a header.
pub type Result<T> = core::result::Result<T, Error>;

/// Reads a big-endian `u16` at `at`. The caller has checked the length.
#[inline]
fn read_u16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// Writes a big-endian `u16` at `at`. The caller has checked the length.
#[inline]
fn write_u16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// Reads an IPv4 address from `data[range]` (four bytes; the caller has checked the length).
#[inline]
fn read_ipv4(data: &[u8], range: core::ops::Range<usize>) -> std::net::Ipv4Addr {
    let b = &data[range];
    std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Reads a MAC address from `data[range]` (six bytes; the caller has checked the length).
#[inline]
fn read_mac(data: &[u8], range: core::ops::Range<usize>) -> MacAddr {
    let b = &data[range];
    [b[0], b[1], b[2], b[3], b[4], b[5]]
}

/// `true` for a group address: the I/G bit (least significant bit of the first octet) is set.
/// The broadcast address is a group address too (IEEE 802-2014 §8.2).
#[inline]
pub const fn is_multicast_mac(mac: &MacAddr) -> bool {
    mac[0] & 1 == 1
}

/// The Ethernet broadcast address.
pub const BROADCAST_MAC: MacAddr = [0xff; 6];

/// The one's complement sum (not complemented) of the IPv4 pseudo-header that the TCP and UDP
/// checksums cover: source and destination address, a zero octet, the protocol, and the
/// transport length (header and data) — RFC 9293 §3.1 "Checksum" (RFC 793 §3.1), RFC 768.
///
/// Add it to [`checksum::sum`] of the segment and [`checksum::fold`] the total.
#[inline]
pub fn pseudo_header_sum(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    protocol: ipv4::Protocol,
    length: u16,
) -> u16 {
    let [s1, s2, s3, s4] = src.octets();
    let [d1, d2, d3, d4] = dst.octets();
    let words = [
        u16::from_be_bytes([s1, s2]),
        u16::from_be_bytes([s3, s4]),
        u16::from_be_bytes([d1, d2]),
        u16::from_be_bytes([d3, d4]),
        u16::from(protocol.0),
        length,
    ];
    checksum::fold(words.iter().map(|&w| u64::from(w)).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn pseudo_header_sum_is_the_sum_of_its_twelve_bytes() {
        let src = Ipv4Addr::new(192, 168, 1, 1);
        let dst = Ipv4Addr::new(255, 255, 255, 254);
        let mut bytes = [0u8; 12];
        bytes[..4].copy_from_slice(&src.octets());
        bytes[4..8].copy_from_slice(&dst.octets());
        bytes[9] = 17;
        bytes[10..].copy_from_slice(&0xfff0u16.to_be_bytes());
        assert_eq!(
            pseudo_header_sum(src, dst, ipv4::Protocol::UDP, 0xfff0),
            checksum::sum(&bytes)
        );
    }
}
