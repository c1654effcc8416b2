//! TCP segments (RFC 9293 §3.1, formerly RFC 793 §3.1).
//!
//! The view covers exactly one segment, i.e. the IPv4 payload up to "Total Length": the
//! checksum covers all of it plus the pseudo-header (RFC 9293 §3.1 "Checksum"), so the buffer
//! must not include Ethernet padding (use [`ipv4::Packet::payload`](super::ipv4::Packet::payload)).

use std::net::Ipv4Addr;

use super::ipv4::Protocol;
use super::{Error, Result, checksum, pseudo_header_sum, read_u16, write_u16};

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ_NUM: Range<usize> = 4..8;
    pub const ACK_NUM: Range<usize> = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WIN_SIZE: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// The longest header: "Data Offset" is four bits of 32-bit words.
pub const MAX_HEADER_LEN: usize = 60;

/// Where the checksum sits in the header, for code that patches it in quoted headers (an
/// ICMP error quotes only a prefix of the segment).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// The control bits of byte 13 (RFC 9293 §3.1 "Control bits"; CWR and ECE from RFC 3168 §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// No more data from sender.
    pub const FIN: Self = Self(0x01);
    /// Synchronize sequence numbers.
    pub const SYN: Self = Self(0x02);
    /// Reset the connection.
    pub const RST: Self = Self(0x04);
    /// Push function.
    pub const PSH: Self = Self(0x08);
    /// Acknowledgment field is significant.
    pub const ACK: Self = Self(0x10);
    /// Urgent pointer field is significant.
    pub const URG: Self = Self(0x20);
    /// ECN-Echo (RFC 3168 §6.1).
    pub const ECE: Self = Self(0x40);
    /// Congestion Window Reduced (RFC 3168 §6.1).
    pub const CWR: Self = Self(0x80);
    /// No flag set.
    pub const NONE: Self = Self(0);

    /// Whether every bit of `other` is set here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set here.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

impl core::ops::BitOr for Flags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A view of a TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks; getters panic if it is shorter than [`HEADER_LEN`], and
    /// `options`/`payload` panic if "Data Offset" points beyond it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len): no accessor of the result panics.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks "Data Offset" against the buffer (RFC 9293 §3.1 "Data Offset"):
    ///
    /// - [`Error::Truncated`] if the buffer is shorter than 20 bytes or than the header
    ///   "Data Offset" claims;
    /// - [`Error::Malformed`] if "Data Offset" is below 5 words.
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

    /// "Sequence Number".
    pub fn seq_number(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::SEQ_NUM];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// "Acknowledgment Number" (meaningful only with [`Flags::ACK`]).
    pub fn ack_number(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::ACK_NUM];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }

    /// The header length in bytes ("Data Offset" × 4), options included.
    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// The eight control bits.
    pub fn flags(&self) -> Flags {
        Flags(self.buffer.as_ref()[field::FLAGS])
    }

    /// FIN.
    pub fn fin(&self) -> bool {
        self.flags().contains(Flags::FIN)
    }

    /// SYN.
    pub fn syn(&self) -> bool {
        self.flags().contains(Flags::SYN)
    }

    /// RST.
    pub fn rst(&self) -> bool {
        self.flags().contains(Flags::RST)
    }

    /// PSH.
    pub fn psh(&self) -> bool {
        self.flags().contains(Flags::PSH)
    }

    /// ACK.
    pub fn ack(&self) -> bool {
        self.flags().contains(Flags::ACK)
    }

    /// URG.
    pub fn urg(&self) -> bool {
        self.flags().contains(Flags::URG)
    }

    /// "Window".
    pub fn window_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::WIN_SIZE.start)
    }

    /// "Checksum" as stored.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// "Urgent Pointer" (meaningful only with [`Flags::URG`]).
    pub fn urgent_at(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::URGENT.start)
    }

    /// The options, between the fixed header and the data (empty when "Data Offset" is 5).
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.header_len())]
    }

    /// The data after the header, to the end of the buffer.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[usize::from(self.header_len())..]
    }

    /// Whether the segment and the pseudo-header of `src`/`dst` sum to all ones
    /// (RFC 9293 §3.1 "Checksum"). The segment length is the buffer's length.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        segment_sum(self.buffer.as_ref(), src, dst) == 0xffff
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

    /// Sets "Sequence Number".
    pub fn set_seq_number(&mut self, value: u32) {
        self.buffer.as_mut()[field::SEQ_NUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets "Acknowledgment Number".
    pub fn set_ack_number(&mut self, value: u32) {
        self.buffer.as_mut()[field::ACK_NUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets "Data Offset" from a header length in bytes (a multiple of 4, at most 60), and
    /// clears the reserved bits.
    pub fn set_header_len(&mut self, len: u8) {
        self.buffer.as_mut()[field::DATA_OFF] = ((len / 4) & 0x0f) << 4;
    }

    /// Sets the eight control bits.
    pub fn set_flags(&mut self, flags: Flags) {
        self.buffer.as_mut()[field::FLAGS] = flags.0;
    }

    /// Sets "Window".
    pub fn set_window_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::WIN_SIZE.start, value);
    }

    /// Stores a checksum as given (e.g. one updated incrementally).
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets "Urgent Pointer".
    pub fn set_urgent_at(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::URGENT.start, value);
    }

    /// Computes the checksum over the pseudo-header and the whole buffer and stores it.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let value = !segment_sum(self.buffer.as_ref(), src, dst);
        self.set_checksum(value);
    }

    /// The options, writable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.header_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }

    /// The data after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = usize::from(self.header_len());
        &mut self.buffer.as_mut()[start..]
    }
}

/// The one's complement sum of the pseudo-header and `segment` (not complemented).
fn segment_sum(segment: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
    // A segment longer than 64 KiB cannot come out of an IPv4 datagram; saturating keeps the
    // function total (the checksum of such a buffer is simply wrong, never a panic).
    let len = u16::try_from(segment.len()).unwrap_or(u16::MAX);
    let pseudo = pseudo_header_sum(src, dst, Protocol::TCP, len);
    checksum::fold(u64::from(pseudo) + u64::from(checksum::sum(segment)))
}

/// A parsed TCP segment, for slow paths and tests (the forwarding path uses [`Packet`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    /// "Source Port".
    pub src_port: u16,
    /// "Destination Port".
    pub dst_port: u16,
    /// "Sequence Number".
    pub seq_number: u32,
    /// "Acknowledgment Number".
    pub ack_number: u32,
    /// The control bits.
    pub flags: Flags,
    /// "Window".
    pub window_len: u16,
    /// "Urgent Pointer".
    pub urgent_at: u16,
    /// The raw options: a multiple of 4 bytes, at most 40 (not interpreted).
    pub options: &'a [u8],
    /// The data.
    pub payload: &'a [u8],
}

impl<'a> Repr<'a> {
    /// Parses a segment whose lengths were checked, verifying its checksum against the
    /// pseudo-header of `src`/`dst`: [`Error::Malformed`] if it does not verify.
    pub fn parse(packet: &Packet<&'a [u8]>, src: Ipv4Addr, dst: Ipv4Addr) -> Result<Self> {
        packet.check_len()?;
        if !packet.verify_checksum(src, dst) {
            return Err(Error::Malformed);
        }
        let buffer: &'a [u8] = packet.buffer;
        let header_len = usize::from(packet.header_len());
        Ok(Self {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq_number: packet.seq_number(),
            ack_number: packet.ack_number(),
            flags: packet.flags(),
            window_len: packet.window_len(),
            urgent_at: packet.urgent_at(),
            options: &buffer[HEADER_LEN..header_len],
            payload: &buffer[header_len..],
        })
    }

    /// The header length this segment emits with.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.len()
    }

    /// The bytes [`emit`](Self::emit) needs.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the segment into a buffer of exactly [`buffer_len`](Self::buffer_len) bytes and
    /// fills the checksum for `src`/`dst`. Panics if the options are not a multiple of 4 bytes
    /// or longer than 40, or if the buffer has the wrong length.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) {
        assert!(self.options.len() % 4 == 0 && self.header_len() <= MAX_HEADER_LEN);
        assert_eq!(packet.buffer.as_ref().len(), self.buffer_len());
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq_number);
        packet.set_ack_number(self.ack_number);
        // Checked by the assertion above: at most 60.
        #[allow(clippy::cast_possible_truncation)]
        packet.set_header_len(self.header_len() as u8);
        packet.set_flags(self.flags);
        packet.set_window_len(self.window_len);
        packet.set_urgent_at(self.urgent_at);
        packet.options_mut().copy_from_slice(self.options);
        packet.payload_mut().copy_from_slice(self.payload);
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 2);

    // 49152 → 80, seq 0x01020304, ack 0, SYN, window 0xfaf0, checksum 0x558b (for SRC → DST),
    // urgent 0, options: MSS 1460 (02 04 05 b4), no data.
    static SYN_BYTES: [u8; 24] = [
        0xc0, 0x00, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xfa,
        0xf0, 0x55, 0x8b, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
    ];

    // 80 → 49152, seq 0x0a0b0c0d, ack 0x01020305, ACK|PSH, window 1024, checksum 0xc49c,
    // urgent 0, data "hi!".
    static DATA_BYTES: [u8; 23] = [
        0x00, 0x50, 0xc0, 0x00, 0x0a, 0x0b, 0x0c, 0x0d, 0x01, 0x02, 0x03, 0x05, 0x50, 0x18, 0x04,
        0x00, 0xc4, 0x9c, 0x00, 0x00, 0x68, 0x69, 0x21,
    ];

    #[test]
    fn deconstruct() {
        let packet = Packet::new_checked(&SYN_BYTES[..]).unwrap();
        assert_eq!(packet.src_port(), 49152);
        assert_eq!(packet.dst_port(), 80);
        assert_eq!(packet.seq_number(), 0x0102_0304);
        assert_eq!(packet.ack_number(), 0);
        assert_eq!(packet.header_len(), 24);
        assert_eq!(packet.flags(), Flags::SYN);
        assert!(packet.syn() && !packet.ack() && !packet.fin() && !packet.rst());
        assert!(!packet.psh() && !packet.urg());
        assert_eq!(packet.window_len(), 0xfaf0);
        assert_eq!(packet.checksum(), 0x558b);
        assert_eq!(packet.urgent_at(), 0);
        assert_eq!(packet.options(), &[0x02, 0x04, 0x05, 0xb4]);
        assert_eq!(packet.payload(), &[] as &[u8]);
        assert!(packet.verify_checksum(SRC, DST));
        // The pseudo-header counts: the other direction's addresses sum the same (addition
        // commutes), but other addresses do not.
        assert!(!packet.verify_checksum(SRC, Ipv4Addr::new(192, 168, 1, 3)));

        let packet = Packet::new_checked(&DATA_BYTES[..]).unwrap();
        assert_eq!(packet.flags(), Flags::ACK | Flags::PSH);
        assert!(packet.ack() && packet.psh() && !packet.syn());
        assert_eq!(packet.ack_number(), 0x0102_0305);
        assert_eq!(packet.payload(), b"hi!");
        assert!(packet.verify_checksum(DST, SRC));
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 24];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_src_port(49152);
        packet.set_dst_port(80);
        packet.set_seq_number(0x0102_0304);
        packet.set_ack_number(0);
        packet.set_header_len(24);
        packet.set_flags(Flags::SYN);
        packet.set_window_len(0xfaf0);
        packet.set_urgent_at(0);
        packet
            .options_mut()
            .copy_from_slice(&[0x02, 0x04, 0x05, 0xb4]);
        assert_eq!(packet.payload_mut().len(), 0);
        packet.fill_checksum(SRC, DST);
        assert_eq!(bytes, SYN_BYTES);
    }

    #[test]
    fn repr_round_trip() {
        let packet = Packet::new_checked(&DATA_BYTES[..]).unwrap();
        let repr = Repr::parse(&packet, DST, SRC).unwrap();
        assert_eq!(
            repr,
            Repr {
                src_port: 80,
                dst_port: 49152,
                seq_number: 0x0a0b_0c0d,
                ack_number: 0x0102_0305,
                flags: Flags::ACK | Flags::PSH,
                window_len: 1024,
                urgent_at: 0,
                options: &[],
                payload: b"hi!",
            }
        );
        assert_eq!(repr.buffer_len(), DATA_BYTES.len());
        let mut bytes = [0u8; 23];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]), DST, SRC);
        assert_eq!(bytes, DATA_BYTES);
        // A wrong checksum is refused.
        assert_eq!(Repr::parse(&packet, SRC, SRC), Err(Error::Malformed));
    }

    #[test]
    fn truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&SYN_BYTES[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
        // The MSS option claimed by "Data Offset" is cut off.
        for len in HEADER_LEN..SYN_BYTES.len() {
            assert_eq!(
                Packet::new_checked(&SYN_BYTES[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
        // "Data Offset" of 15 words in a 24-byte buffer.
        let mut bytes = SYN_BYTES;
        bytes[12] = 0xf0;
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error::Truncated));
    }

    #[test]
    fn data_offset_below_five_is_malformed() {
        for words in 0..5u8 {
            let mut bytes = SYN_BYTES;
            bytes[12] = words << 4;
            assert_eq!(
                Packet::new_checked(&bytes[..]),
                Err(Error::Malformed),
                "{words}"
            );
        }
    }

    #[test]
    fn overlong_bytes_are_payload() {
        // Whatever follows the header is data: the caller cuts the buffer at "Total Length".
        let mut long = [0u8; 30];
        long[..24].copy_from_slice(&SYN_BYTES);
        let packet = Packet::new_checked(&long[..]).unwrap();
        assert_eq!(packet.payload().len(), 6);
        // Zero bytes add nothing to the sum, but the pseudo-header length grows: no longer
        // verifies.
        assert!(!packet.verify_checksum(SRC, DST));
    }

    #[test]
    fn flags_helpers() {
        let synack = Flags::SYN | Flags::ACK;
        assert!(synack.contains(Flags::SYN));
        assert!(!synack.contains(Flags::SYN | Flags::FIN));
        assert!(synack.intersects(Flags::SYN | Flags::FIN));
        assert!(!Flags::NONE.intersects(synack));
        assert_eq!(Flags::default(), Flags::NONE);
    }
}
