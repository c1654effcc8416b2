//! ICMP for IPv4 (RFC 792).
//!
//! The view covers the whole ICMP message, i.e. exactly the IPv4 payload: the checksum is
//! computed over all of it, so the buffer must not include Ethernet padding (use
//! [`ipv4::Packet::payload`](super::ipv4::Packet::payload), which stops at "Total Length").

use super::{Error, Result, checksum, read_u16, write_u16};

/// An ICMP message type (RFC 792; IANA "ICMP Type Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Message(pub u8);

impl Message {
    /// Echo Reply (RFC 792).
    pub const ECHO_REPLY: Self = Self(0);
    /// Destination Unreachable (RFC 792).
    pub const DST_UNREACHABLE: Self = Self(3);
    /// Echo (request) (RFC 792).
    pub const ECHO_REQUEST: Self = Self(8);
    /// Time Exceeded (RFC 792).
    pub const TIME_EXCEEDED: Self = Self(11);
    /// Parameter Problem (RFC 792).
    pub const PARAM_PROBLEM: Self = Self(12);
}

mod field {
    use core::ops::{Range, RangeFrom};
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const ECHO_IDENT: Range<usize> = 4..6;
    pub const ECHO_SEQ_NO: Range<usize> = 6..8;
    pub const DATA: RangeFrom<usize> = 8..;
}

/// Length of the ICMP header: type, code, checksum and the 4-byte type-specific word that
/// every message of RFC 792 has (identifier and sequence number for echo).
pub const HEADER_LEN: usize = field::DATA.start;

/// A view of an ICMPv4 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; getters panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len): no accessor of the result panics.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// [`Error::Truncated`] if the buffer cannot hold the 8-byte header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// "Type".
    pub fn msg_type(&self) -> Message {
        Message(self.buffer.as_ref()[field::TYPE])
    }

    /// "Code".
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// The type and code as the 16-bit word the checksum covers.
    pub fn type_code_word(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TYPE)
    }

    /// "Checksum" as stored.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Whether the message, from the type to the end of the buffer, sums to all ones
    /// (RFC 792 "Checksum", RFC 1071).
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self.buffer.as_ref())
    }

    /// "Identifier" of an echo or echo reply.
    pub fn echo_ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_IDENT.start)
    }

    /// "Sequence Number" of an echo or echo reply.
    pub fn echo_seq_no(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ECHO_SEQ_NO.start)
    }

    /// The data after the 8-byte header (echo data; for errors, the offending datagram's
    /// header and first 64 bits).
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[field::DATA]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets "Type".
    pub fn set_msg_type(&mut self, value: Message) {
        self.buffer.as_mut()[field::TYPE] = value.0;
    }

    /// Sets "Code".
    pub fn set_code(&mut self, value: u8) {
        self.buffer.as_mut()[field::CODE] = value;
    }

    /// Stores a checksum as given (e.g. one updated incrementally).
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Computes the checksum over the whole message and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(value);
    }

    /// Sets the echo "Identifier".
    pub fn set_echo_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_IDENT.start, value);
    }

    /// Sets the echo "Sequence Number".
    pub fn set_echo_seq_no(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ECHO_SEQ_NO.start, value);
    }

    /// The data after the header, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::DATA]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Echo request, identifier 0x1234, sequence 1, data "abcd", checksum 0x2104.
    static ECHO_BYTES: [u8; 12] = [
        0x08, 0x00, 0x21, 0x04, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64,
    ];

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&ECHO_BYTES[..]).unwrap();
        assert_eq!(packet.msg_type(), Message::ECHO_REQUEST);
        assert_eq!(packet.code(), 0);
        assert_eq!(packet.type_code_word(), 0x0800);
        assert_eq!(packet.checksum(), 0x2104);
        assert!(packet.verify_checksum());
        assert_eq!(packet.echo_ident(), 0x1234);
        assert_eq!(packet.echo_seq_no(), 1);
        assert_eq!(packet.data(), b"abcd");
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 12];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Message::ECHO_REQUEST);
        packet.set_code(0);
        packet.set_echo_ident(0x1234);
        packet.set_echo_seq_no(1);
        packet.data_mut().copy_from_slice(b"abcd");
        packet.fill_checksum();
        assert_eq!(bytes, ECHO_BYTES);
    }

    #[test]
    fn construct_reply() {
        let mut bytes = ECHO_BYTES;
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_msg_type(Message::ECHO_REPLY);
        packet.fill_checksum();
        assert_eq!(packet.checksum(), 0x2904);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&ECHO_BYTES[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
        let bare = Packet::new_checked(&ECHO_BYTES[..HEADER_LEN]).unwrap();
        assert_eq!(bare.data(), &[] as &[u8]);
    }

    #[test]
    fn overlong_bytes_count_in_the_checksum() {
        // Trailing bytes are part of the message: a padded buffer no longer verifies.
        let mut padded = [0u8; 14];
        padded[..12].copy_from_slice(&ECHO_BYTES);
        padded[12] = 0x01;
        let packet = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.data(), &padded[8..]);
        assert!(!packet.verify_checksum());
    }
}
