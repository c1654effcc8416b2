//! UDP datagrams (RFC 768).
//!
//! Over IPv4 a checksum of zero means "no checksum" (RFC 768 "Checksum"; RFC 1122 §4.1.3.4);
//! a computed checksum of zero is therefore sent as all ones. Code that rewrites a datagram
//! must keep a zero checksum zero, and must never store a computed zero: see
//! [`update_checksum`].

use std::net::Ipv4Addr;

use super::ipv4::Protocol;
use super::{Error, Result, checksum, pseudo_header_sum, read_u16, write_u16};

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// Where the checksum sits in the header, for code that patches it in quoted headers.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// A view of a UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; getters panic if it is shorter than [`HEADER_LEN`], and
    /// `payload` panics if "Length" disagrees with the buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len): no accessor of the result panics.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks "Length" against the buffer (RFC 768 "Length": header and data, so at least 8):
    ///
    /// - [`Error::Truncated`] if the buffer is shorter than 8 bytes or than "Length";
    /// - [`Error::Malformed`] if "Length" is below 8 (zero included).
    ///
    /// A buffer longer than "Length" is accepted; [`payload`](Self::payload) stops at "Length".
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let claimed = usize::from(self.len());
        if claimed < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if claimed > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// "Source Port".
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// "Destination Port".
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// "Length": header and data, in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// "Checksum" as stored; zero means the sender computed none.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The data, from the header to "Length".
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Whether the checksum is right: zero (none was computed, RFC 768), or the pseudo-header
    /// of `src`/`dst` and the datagram up to "Length" sum to all ones.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let datagram = &self.buffer.as_ref()[..usize::from(self.len())];
        datagram_sum(datagram, src, dst) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets "Source Port".
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT.start, value);
    }

    /// Sets "Destination Port".
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT.start, value);
    }

    /// Sets "Length".
    pub fn set_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, value);
    }

    /// Stores a checksum as given (zero for none).
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Computes the checksum over the pseudo-header and the datagram up to "Length" and stores
    /// it, as all ones if it computes to zero (RFC 768).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let datagram = &self.buffer.as_ref()[..usize::from(self.len())];
        let value = !datagram_sum(datagram, src, dst);
        self.set_checksum(if value == 0 { 0xffff } else { value });
    }

    /// The data up to "Length", writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// The one's complement sum of the pseudo-header and `datagram` (not complemented).
fn datagram_sum(datagram: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
    let len = u16::try_from(datagram.len()).unwrap_or(u16::MAX);
    let pseudo = pseudo_header_sum(src, dst, Protocol::UDP, len);
    checksum::fold(u64::from(pseudo) + u64::from(checksum::sum(datagram)))
}

/// Applies `update` (an RFC 1624 incremental update) to a stored UDP checksum, honouring
/// RFC 768: a zero checksum ("none") stays zero, and an update that yields zero is stored as
/// all ones (the other one's complement zero), since zero would mean "none".
#[inline]
pub fn update_checksum(stored: u16, update: impl FnOnce(u16) -> u16) -> u16 {
    if stored == 0 {
        return 0;
    }
    match update(stored) {
        0 => 0xffff,
        value => value,
    }
}

/// A parsed UDP datagram, for slow paths and tests (the forwarding path uses [`Packet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    /// "Source Port".
    pub src_port: u16,
    /// "Destination Port".
    pub dst_port: u16,
    /// The data.
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parses a datagram, verifying its checksum (if any) against the pseudo-header of
    /// `src`/`dst`: [`Error::Malformed`] if it does not verify.
    pub fn parse(packet: &Packet<&'a [u8]>, src: Ipv4Addr, dst: Ipv4Addr) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::Malformed);
        }
        let buffer: &'a [u8] = packet.buffer;
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload: &buffer[HEADER_LEN..usize::from(packet.len())],
        })
    }

    /// The bytes [`emit`](Self::emit) needs.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Writes the datagram into a buffer of exactly [`buffer_len`](Self::buffer_len) bytes
    /// and fills the checksum for `src`/`dst` (always computed: RFC 1122 §4.1.3.4 makes
    /// computing it the default). Panics if the buffer has the wrong length or the datagram
    /// would exceed 65535 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) {
        assert_eq!(packet.buffer.as_ref().len(), self.buffer_len());
        let len = u16::try_from(self.buffer_len()).expect("a UDP datagram fits 65535 bytes");
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.payload_mut().copy_from_slice(self.payload);
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::update16;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    // 53000 → 53, length 12, checksum 0x57cf (for SRC → DST), data "abcd".
    static PACKET_BYTES: [u8; 12] = [
        0xcf, 0x08, 0x00, 0x35, 0x00, 0x0c, 0x57, 0xcf, 0x61, 0x62, 0x63, 0x64,
    ];

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.src_port(), 53000);
        assert_eq!(packet.dst_port(), 53);
        assert_eq!(packet.len(), 12);
        assert_eq!(packet.checksum(), 0x57cf);
        assert_eq!(packet.payload(), b"abcd");
        assert!(packet.verify_checksum(SRC, DST));
        assert!(!packet.verify_checksum(SRC, Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 12];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_src_port(53000);
        packet.set_dst_port(53);
        packet.set_len(12);
        packet.payload_mut().copy_from_slice(b"abcd");
        packet.fill_checksum(SRC, DST);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut bytes = PACKET_BYTES;
        bytes[6] = 0;
        bytes[7] = 0;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert!(packet.verify_checksum(SRC, DST));
        assert!(packet.verify_checksum(SRC, Ipv4Addr::new(10, 0, 0, 3)));
        // And stays none under an update.
        assert_eq!(update_checksum(0, |c| update16(c, 53, 54)), 0);
    }

    #[test]
    fn computed_zero_is_sent_as_all_ones() {
        // Pick the data word so that the whole sum is all ones: the checksum computes to 0.
        let mut bytes = [0xcf, 0x08, 0x00, 0x35, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.fill_checksum(SRC, DST);
        let natural = packet.checksum();
        // Adding `natural` to the data word makes the computed checksum zero.
        packet.payload_mut().copy_from_slice(&natural.to_be_bytes());
        packet.fill_checksum(SRC, DST);
        assert_eq!(packet.checksum(), 0xffff);
        assert!(packet.verify_checksum(SRC, DST));
        // An incremental update landing on zero stores all ones too.
        assert_eq!(update_checksum(0x1234, |_| 0), 0xffff);
        assert_eq!(update_checksum(0x1234, |_| 0x4321), 0x4321);
    }

    #[test]
    fn repr_round_trip() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        let repr = Repr::parse(&packet, SRC, DST).unwrap();
        assert_eq!(
            repr,
            Repr {
                src_port: 53000,
                dst_port: 53,
                payload: b"abcd",
            }
        );
        let mut bytes = [0u8; 12];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), SRC, DST);
        assert_eq!(bytes, PACKET_BYTES);
        assert_eq!(Repr::parse(&packet, DST, DST), Err(Error::Malformed));
    }

    #[test]
    fn truncated() {
        for len in 0..PACKET_BYTES.len() {
            assert_eq!(
                Packet::new_checked(&PACKET_BYTES[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn length_below_eight_is_malformed() {
        for claimed in 0..8u8 {
            let mut bytes = PACKET_BYTES;
            bytes[5] = claimed;
            assert_eq!(
                Packet::new_checked(&bytes[..]),
                Err(Error::Malformed),
                "{claimed}"
            );
        }
        // Exactly a header: an empty datagram is fine.
        let mut bytes = PACKET_BYTES;
        bytes[5] = 8;
        let packet = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(packet.payload(), &[] as &[u8]);
    }

    #[test]
    fn overlong_payload_stops_at_length() {
        let mut padded = [0xeeu8; 18];
        padded[..12].copy_from_slice(&PACKET_BYTES);
        let packet = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload(), b"abcd");
        assert!(packet.verify_checksum(SRC, DST));
    }
}
