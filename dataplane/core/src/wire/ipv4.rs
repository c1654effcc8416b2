//! IPv4 headers (RFC 791 §3.1).

use std::net::Ipv4Addr;

use super::{Error, Result, checksum, read_ipv4, read_u16, write_u16};

/// An IP protocol number (RFC 791 "Protocol"; IANA "Assigned Internet Protocol Numbers").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Protocol(pub u8);

impl Protocol {
    /// ICMP (RFC 792).
    pub const ICMP: Self = Self(1);
    /// IP in IP encapsulation (RFC 2003).
    pub const IPIP: Self = Self(4);
    /// TCP (RFC 9293).
    pub const TCP: Self = Self(6);
    /// UDP (RFC 768).
    pub const UDP: Self = Self(17);
}

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC_ADDR: Range<usize> = 12..16;
    pub const DST_ADDR: Range<usize> = 16..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::DST_ADDR.end;

/// "Don't Fragment" in the flags/fragment-offset word (RFC 791 §3.1 "Flags").
const FLAG_DF: u16 = 0x4000;
/// "More Fragments".
const FLAG_MF: u16 = 0x2000;
/// The fragment offset, in units of 8 octets.
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet: the header, its options and the payload up to "Total Length".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; getters panic if it is shorter than [`HEADER_LEN`], and
    /// `options`/`payload` panic if the length fields disagree with the buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len) and a check that the version is 4
    /// ([`Error::Malformed`] otherwise). No accessor of the result panics.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        if packet.version() != 4 {
            return Err(Error::Malformed);
        }
        Ok(packet)
    }

    /// Checks the length fields against the buffer (RFC 791 §3.1 "IHL", "Total Length"):
    ///
    /// - [`Error::Truncated`] if the buffer is shorter than 20 bytes, than IHL says, or than
    ///   "Total Length" says;
    /// - [`Error::Malformed`] if IHL < 5 or "Total Length" is shorter than the header.
    ///
    /// A buffer longer than "Total Length" is fine: Ethernet pads short frames to 60 bytes, and
    /// [`payload`](Self::payload) stops at "Total Length".
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let header_len = usize::from(self.header_len());
        if header_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if header_len > len {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        if total_len < header_len {
            return Err(Error::Malformed);
        }
        if total_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// "Version"; 4 for every packet that passed [`new_checked`](Self::new_checked).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes ("IHL" × 4), options included.
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The Differentiated Services field (RFC 2474 §3), the upper six bits of the old TOS.
    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] >> 2
    }

    /// The ECN field (RFC 3168 §5), the lower two bits of the old TOS.
    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::DSCP_ECN] & 0x03
    }

    /// "Total Length": header and payload, in bytes.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// "Identification".
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    fn flags_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FLG_OFF.start)
    }

    /// The "Don't Fragment" flag.
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }

    /// The "More Fragments" flag.
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }

    /// "Fragment Offset", converted to bytes (the field counts 8-octet units).
    pub fn frag_offset(&self) -> u16 {
        (self.flags_offset() & OFFSET_MASK) << 3
    }

    /// Whether this is a fragment of a larger datagram: MF set or a non-zero offset
    /// (RFC 791 §2.3 "Fragmentation"). An unfragmented datagram has both clear.
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (FLAG_MF | OFFSET_MASK) != 0
    }

    /// "Time to Live".
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// "Protocol" of the payload.
    pub fn protocol(&self) -> Protocol {
        Protocol(self.buffer.as_ref()[field::PROTOCOL])
    }

    /// "Header Checksum" as stored.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Whether the header checksum is right: the header, options included, sums to all ones
    /// (RFC 791 §3.1 "Header Checksum", RFC 1071).
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(&self.buffer.as_ref()[..usize::from(self.header_len())])
    }

    /// "Source Address".
    pub fn src_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// "Destination Address".
    pub fn dst_addr(&self) -> Ipv4Addr {
        read_ipv4(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// The options, between the fixed header and the payload (empty when IHL = 5).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.header_len())]
    }

    /// The payload: from the end of the header to "Total Length", so Ethernet padding after
    /// the datagram is not part of it.
    pub fn payload(&self) -> &[u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets "Version".
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0x0f) | (version << 4);
    }

    /// Sets "IHL" from a header length in bytes (a multiple of 4, at most 60).
    pub fn set_header_len(&mut self, len: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (*b & 0xf0) | ((len / 4) & 0x0f);
    }

    /// Sets the DSCP (RFC 2474 §3), keeping ECN.
    pub fn set_dscp(&mut self, dscp: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0x03) | (dscp << 2);
    }

    /// Sets the ECN bits (RFC 3168 §5), keeping the DSCP.
    pub fn set_ecn(&mut self, ecn: u8) {
        let b = &mut self.buffer.as_mut()[field::DSCP_ECN];
        *b = (*b & 0xfc) | (ecn & 0x03);
    }

    /// Sets "Total Length".
    pub fn set_total_len(&mut self, len: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH.start, len);
    }

    /// Sets "Identification".
    pub fn set_ident(&mut self, ident: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT.start, ident);
    }

    fn set_flags_offset(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::FLG_OFF.start, value);
    }

    /// Clears the three flag bits (reserved, DF, MF), keeping the fragment offset.
    pub fn clear_flags(&mut self) {
        let word = self.flags_offset() & OFFSET_MASK;
        self.set_flags_offset(word);
    }

    /// Sets or clears "Don't Fragment".
    pub fn set_dont_frag(&mut self, value: bool) {
        let word = self.flags_offset() & !FLAG_DF;
        self.set_flags_offset(if value { word | FLAG_DF } else { word });
    }

    /// Sets or clears "More Fragments".
    pub fn set_more_frags(&mut self, value: bool) {
        let word = self.flags_offset() & !FLAG_MF;
        self.set_flags_offset(if value { word | FLAG_MF } else { word });
    }

    /// Sets "Fragment Offset" from a byte offset (a multiple of 8).
    pub fn set_frag_offset(&mut self, bytes: u16) {
        let word = self.flags_offset() & !OFFSET_MASK;
        self.set_flags_offset(word | (bytes >> 3));
    }

    /// Sets "Time to Live".
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets "Protocol".
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol.0;
    }

    /// Stores a header checksum as given (e.g. one updated incrementally).
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Computes the header checksum over the header and options and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let header_len = usize::from(self.header_len());
        let value = checksum::checksum(&self.buffer.as_ref()[..header_len]);
        self.set_checksum(value);
    }

    /// Sets "Source Address".
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets "Destination Address".
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// The options, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// The payload up to "Total Length", writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = usize::from(self.header_len())..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 192.168.0.2 → 192.168.0.1, ICMP, id 0x1234, DF, TTL 64, 4 payload bytes, checksum 0xa75d.
    static PACKET_BYTES: [u8; 24] = [
        0x45, 0x00, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0xa7, 0x5d, 0xc0, 0xa8, 0x00,
        0x02, 0xc0, 0xa8, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef,
    ];

    // IHL 6 with a 4-byte option (NOP NOP EOL EOL), a fragment (MF, offset 80 bytes), total 32.
    static OPTIONS_BYTES: [u8; 32] = [
        0x46, 0x00, 0x00, 0x20, 0x12, 0x34, 0x20, 0x0a, 0x40, 0x01, 0xc5, 0x4a, 0xc0, 0xa8, 0x00,
        0x02, 0xc0, 0xa8, 0x00, 0x01, 0x01, 0x01, 0x00, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66,
        0x77, 0x88,
    ];

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.version(), 4);
        assert_eq!(packet.header_len(), 20);
        assert_eq!(packet.dscp(), 0);
        assert_eq!(packet.ecn(), 0);
        assert_eq!(packet.total_len(), 24);
        assert_eq!(packet.ident(), 0x1234);
        assert!(packet.dont_frag());
        assert!(!packet.more_frags());
        assert_eq!(packet.frag_offset(), 0);
        assert!(!packet.is_fragment());
        assert_eq!(packet.ttl(), 64);
        assert_eq!(packet.protocol(), Protocol::ICMP);
        assert_eq!(packet.checksum(), 0xa75d);
        assert!(packet.verify_checksum());
        assert_eq!(packet.src_addr(), Ipv4Addr::new(192, 168, 0, 2));
        assert_eq!(packet.dst_addr(), Ipv4Addr::new(192, 168, 0, 1));
        assert_eq!(packet.options(), &[] as &[u8]);
        assert_eq!(packet.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn deconstruct_options_and_fragment() {
        let packet = Packet::new_checked(&OPTIONS_BYTES[..]).unwrap();
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.options(), &[0x01, 0x01, 0x00, 0x00]);
        assert!(!packet.dont_frag());
        assert!(packet.more_frags());
        assert_eq!(packet.frag_offset(), 80);
        assert!(packet.is_fragment());
        assert!(packet.verify_checksum());
        assert_eq!(packet.payload(), &OPTIONS_BYTES[24..]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 24];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(4);
        packet.set_header_len(20);
        packet.set_dscp(0);
        packet.set_ecn(0);
        packet.set_total_len(24);
        packet.set_ident(0x1234);
        packet.set_frag_offset(0);
        packet.clear_flags();
        packet.set_dont_frag(true);
        packet.set_ttl(64);
        packet.set_protocol(Protocol::ICMP);
        packet.set_src_addr(Ipv4Addr::new(192, 168, 0, 2));
        packet.set_dst_addr(Ipv4Addr::new(192, 168, 0, 1));
        packet
            .payload_mut()
            .copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        packet.fill_checksum();
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn construct_options_and_fragment() {
        let mut bytes = [0u8; 32];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version(4);
        packet.set_header_len(24);
        packet.set_total_len(32);
        packet.set_ident(0x1234);
        packet.set_more_frags(true);
        packet.set_frag_offset(80);
        packet.set_ttl(64);
        packet.set_protocol(Protocol::ICMP);
        packet.set_src_addr(Ipv4Addr::new(192, 168, 0, 2));
        packet.set_dst_addr(Ipv4Addr::new(192, 168, 0, 1));
        packet
            .options_mut()
            .copy_from_slice(&[0x01, 0x01, 0x00, 0x00]);
        packet.payload_mut().copy_from_slice(&OPTIONS_BYTES[24..]);
        packet.fill_checksum();
        assert_eq!(bytes, OPTIONS_BYTES);
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
        // Options claimed by IHL but cut off.
        assert_eq!(
            Packet::new_checked(&OPTIONS_BYTES[..22]),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn overlong_payload_stops_at_total_length() {
        // Padded to the 46-byte minimum Ethernet payload.
        let mut padded = [0u8; 46];
        padded[..24].copy_from_slice(&PACKET_BYTES);
        let packet = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(packet.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn malformed() {
        let with = |at: usize, value: u8| {
            let mut bytes = PACKET_BYTES;
            bytes[at] = value;
            Packet::new_checked(bytes).map(|_| ())
        };
        // IHL below 5.
        for ihl in 0..5 {
            assert_eq!(with(0, 0x40 | ihl), Err(Error::Malformed), "ihl {ihl}");
        }
        // IHL larger than the buffer.
        assert_eq!(with(0, 0x47), Err(Error::Truncated));
        // Total length shorter than the header, longer than the buffer.
        assert_eq!(with(3, 19), Err(Error::Malformed));
        assert_eq!(with(3, 25), Err(Error::Truncated));
        // Version 6 in an otherwise fine header.
        assert_eq!(with(0, 0x65), Err(Error::Malformed));
    }

    #[test]
    fn bad_checksum_is_detected() {
        let mut bytes = PACKET_BYTES;
        bytes[8] = 63; // TTL changed, checksum not.
        assert!(!Packet::new_checked(&bytes[..]).unwrap().verify_checksum());
    }
}
