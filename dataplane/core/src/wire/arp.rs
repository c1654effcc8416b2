//! ARP for IPv4 over Ethernet (RFC 826).
//!
//! Only the one combination the director speaks is accepted: hardware type 1 (Ethernet),
//! protocol type 0x0800 (IPv4), hardware length 6, protocol length 4. With those fixed the
//! packet has a fixed 28-byte layout; anything after it in the buffer is Ethernet padding.

use std::net::Ipv4Addr;

use super::{Error, MacAddr, Result, read_ipv4, read_mac, read_u16, write_u16};
use crate::wire::ethernet::EtherType;

/// An ARP opcode (RFC 826 "ar$op"; IANA "ARP Operation Codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Operation(pub u16);

impl Operation {
    /// `ares_op$REQUEST` (RFC 826).
    pub const REQUEST: Self = Self(1);
    /// `ares_op$REPLY` (RFC 826).
    pub const REPLY: Self = Self(2);
}

/// Hardware type 1: Ethernet (10Mb) in RFC 826 and IANA's "Hardware Types".
pub const HTYPE_ETHERNET: u16 = 1;

mod field {
    use core::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; getters panic if it is shorter than [`PACKET_LEN`], and
    /// the address getters are meaningless unless the packet is Ethernet/IPv4.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len) and a check that the packet maps
    /// IPv4 to Ethernet addresses ([`Error::Unsupported`] otherwise). No accessor panics after.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        if packet.hardware_type() != HTYPE_ETHERNET
            || packet.protocol_type() != EtherType::IPV4
            || packet.hardware_len() != 6
            || packet.protocol_len() != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(packet)
    }

    /// [`Error::Truncated`] if the buffer cannot hold an Ethernet/IPv4 ARP packet.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// `ar$hrd`, the hardware address space.
    pub fn hardware_type(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::HTYPE.start)
    }

    /// `ar$pro`, the protocol address space, as an EtherType.
    pub fn protocol_type(&self) -> EtherType {
        EtherType(read_u16(self.buffer.as_ref(), field::PTYPE.start))
    }

    /// `ar$hln`, the length of a hardware address.
    pub fn hardware_len(&self) -> u8 {
        self.buffer.as_ref()[field::HLEN]
    }

    /// `ar$pln`, the length of a protocol address.
    pub fn protocol_len(&self) -> u8 {
        self.buffer.as_ref()[field::PLEN]
    }

    /// `ar$op`.
    pub fn operation(&self) -> Operation {
        Operation(read_u16(self.buffer.as_ref(), field::OPER.start))
    }

    /// `ar$sha`, the sender hardware address.
    pub fn sender_hardware_addr(&self) -> MacAddr {
        read_mac(self.buffer.as_ref(), field::SHA)
    }

    /// `ar$spa`, the sender protocol address.
    pub fn sender_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::SPA)
    }

    /// `ar$tha`, the target hardware address (ignored in requests).
    pub fn target_hardware_addr(&self) -> MacAddr {
        read_mac(self.buffer.as_ref(), field::THA)
    }

    /// `ar$tpa`, the target protocol address.
    pub fn target_protocol_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::TPA)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets `ar$hrd`.
    pub fn set_hardware_type(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::HTYPE.start, value);
    }

    /// Sets `ar$pro`.
    pub fn set_protocol_type(&mut self, value: EtherType) {
        write_u16(self.buffer.as_mut(), field::PTYPE.start, value.0);
    }

    /// Sets `ar$hln`.
    pub fn set_hardware_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::HLEN] = value;
    }

    /// Sets `ar$pln`.
    pub fn set_protocol_len(&mut self, value: u8) {
        self.buffer.as_mut()[field::PLEN] = value;
    }

    /// Sets the four fixed fields of an Ethernet/IPv4 ARP packet.
    pub fn set_ethernet_ipv4(&mut self) {
        self.set_hardware_type(HTYPE_ETHERNET);
        self.set_protocol_type(EtherType::IPV4);
        self.set_hardware_len(6);
        self.set_protocol_len(4);
    }

    /// Sets `ar$op`.
    pub fn set_operation(&mut self, value: Operation) {
        write_u16(self.buffer.as_mut(), field::OPER.start, value.0);
    }

    /// Sets `ar$sha`.
    pub fn set_sender_hardware_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr);
    }

    /// Sets `ar$spa`.
    pub fn set_sender_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr.octets());
    }

    /// Sets `ar$tha`.
    pub fn set_target_hardware_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr);
    }

    /// Sets `ar$tpa`.
    pub fn set_target_protocol_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Who has 10.0.0.1? Tell 10.0.0.2 (at 02:00:00:00:00:02).
    static REQUEST_BYTES: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0a,
        0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&REQUEST_BYTES[..]).unwrap();
        assert_eq!(packet.hardware_type(), 1);
        assert_eq!(packet.protocol_type(), EtherType::IPV4);
        assert_eq!(packet.hardware_len(), 6);
        assert_eq!(packet.protocol_len(), 4);
        assert_eq!(packet.operation(), Operation::REQUEST);
        assert_eq!(packet.sender_hardware_addr(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(packet.sender_protocol_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(packet.target_hardware_addr(), [0; 6]);
        assert_eq!(packet.target_protocol_addr(), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 28];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_ethernet_ipv4();
        packet.set_operation(Operation::REQUEST);
        packet.set_sender_hardware_addr([2, 0, 0, 0, 0, 2]);
        packet.set_sender_protocol_addr(Ipv4Addr::new(10, 0, 0, 2));
        packet.set_target_hardware_addr([0; 6]);
        packet.set_target_protocol_addr(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(bytes, REQUEST_BYTES);
    }

    #[test]
    fn truncated() {
        for len in 0..PACKET_LEN {
            assert_eq!(
                Packet::new_checked(&REQUEST_BYTES[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn overlong_with_ethernet_padding() {
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&REQUEST_BYTES);
        let packet = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.target_protocol_addr(), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn other_address_spaces_are_unsupported() {
        // (byte, value): hardware type 6 (IEEE 802), protocol IPv6, hlen 8, plen 16.
        for (at, value) in [(1, 6), (2, 0x86), (4, 8), (5, 16)] {
            let mut bytes = REQUEST_BYTES;
            bytes[at] = value;
            assert_eq!(
                Packet::new_checked(&bytes[..]),
                Err(Error::Unsupported),
                "byte {at}"
            );
        }
    }
}
