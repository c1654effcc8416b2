//! Ethernet II frames (IEEE 802.3 §3.1.1 with an EtherType in the length/type field).
//!
//! The frame check sequence is not part of the buffer: NICs strip it on receive and append it
//! on transmit. 802.1Q-tagged frames carry [`EtherType::VLAN`] here and are not parsed further.

use super::{Error, MacAddr, Result, read_mac, read_u16, write_u16};

/// An EtherType (IEEE 802 numbers, as assigned by the IEEE Registration Authority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EtherType(pub u16);

impl EtherType {
    /// Internet Protocol version 4 (RFC 894).
    pub const IPV4: Self = Self(0x0800);
    /// Address Resolution Protocol (RFC 826).
    pub const ARP: Self = Self(0x0806);
    /// An IEEE 802.1Q VLAN tag follows.
    pub const VLAN: Self = Self(0x8100);
    /// Internet Protocol version 6 (RFC 2464).
    pub const IPV6: Self = Self(0x86dd);
    /// An IEEE 802.1ad service tag (QinQ) follows.
    pub const QINQ: Self = Self(0x88a8);
}

mod field {
    use core::ops::{Range, RangeFrom};
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A view of an Ethernet II frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checking its length; getters panic if it is shorter than
    /// [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len): no accessor of the result panics.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// [`Error::Truncated`] if the buffer cannot hold the header.
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

    /// The destination MAC address.
    pub fn dst_addr(&self) -> MacAddr {
        read_mac(self.buffer.as_ref(), field::DESTINATION)
    }

    /// The source MAC address.
    pub fn src_addr(&self) -> MacAddr {
        read_mac(self.buffer.as_ref(), field::SOURCE)
    }

    /// The EtherType of the payload.
    pub fn ethertype(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::ETHERTYPE.start))
    }

    /// Everything after the header, including any padding up to the 60-byte minimum frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr);
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE.start, ethertype.0);
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // dst 01:02:03:04:05:06, src 11:12:13:14:15:16, IPv4, payload aa bb cc dd.
    static FRAME_BYTES: [u8; 18] = [
        0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x08, 0x00, 0xaa,
        0xbb, 0xcc, 0xdd,
    ];

    #[test]
    fn deconstruct() {
        let frame = Frame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(frame.dst_addr(), [0x01, 0x02, 0x03, 0x04, 0x05, 0x06]);
        assert_eq!(frame.src_addr(), [0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
        assert_eq!(frame.ethertype(), EtherType::IPV4);
        assert_eq!(frame.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0u8; 18];
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr([0x01, 0x02, 0x03, 0x04, 0x05, 0x06]);
        frame.set_src_addr([0x11, 0x12, 0x13, 0x14, 0x15, 0x16]);
        frame.set_ethertype(EtherType::IPV4);
        frame
            .payload_mut()
            .copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(bytes, FRAME_BYTES);
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Frame::new_checked(&FRAME_BYTES[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
        // A bare header is a frame with an empty payload.
        let frame = Frame::new_checked(&FRAME_BYTES[..HEADER_LEN]).unwrap();
        assert_eq!(frame.payload(), &[] as &[u8]);
    }

    #[test]
    fn overlong_keeps_everything_as_payload() {
        let mut long = [0u8; 1514];
        long[..18].copy_from_slice(&FRAME_BYTES);
        let frame = Frame::new_checked(&long[..]).unwrap();
        assert_eq!(frame.payload().len(), 1500);
        assert_eq!(&frame.payload()[..4], &[0xaa, 0xbb, 0xcc, 0xdd]);
    }

    #[test]
    fn vlan_tag_is_reported_as_such() {
        let mut tagged = FRAME_BYTES;
        tagged[12..14].copy_from_slice(&[0x81, 0x00]);
        let frame = Frame::new_checked(&tagged[..]).unwrap();
        assert_eq!(frame.ethertype(), EtherType::VLAN);
    }
}
