//! The classic libpcap file format (not pcapng), written and read without a crate: a 24-byte
//! global header, then per packet a 16-byte record header and the frame's bytes. Little-endian,
//! microsecond timestamps (magic `0xa1b2c3d4`), version 2.4, link type 1 (Ethernet). This is
//! what DPDK's `net_pcap` vdev reads with `rx_pcap=FILE`.

use std::io::{self, Write};

use crate::error::{Error, Result};

/// Magic number of a microsecond-resolution capture, written little-endian.
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// The same format with nanosecond timestamps (what DPDK's pcap PMD writes for `tx_pcap`).
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// Format version 2.4.
pub const VERSION: (u16, u16) = (2, 4);
/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Length of the global header.
pub const GLOBAL_HEADER_LEN: usize = 24;
/// Length of each record header.
pub const RECORD_HEADER_LEN: usize = 16;
/// The snapshot length written in the header (libpcap's default maximum).
pub const SNAPLEN: u32 = 65_535;

/// The 24-byte global header.
pub fn global_header(snaplen: u32) -> [u8; GLOBAL_HEADER_LEN] {
    let mut h = [0u8; GLOBAL_HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC_MICROS.to_le_bytes());
    h[4..6].copy_from_slice(&VERSION.0.to_le_bytes());
    h[6..8].copy_from_slice(&VERSION.1.to_le_bytes());
    // thiszone (GMT offset) and sigfigs: 0.
    h[16..20].copy_from_slice(&snaplen.to_le_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    h
}

/// The 16-byte header of one record: timestamp, captured length, original length.
pub fn record_header(ts_sec: u32, ts_usec: u32, len: u32) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[0..4].copy_from_slice(&ts_sec.to_le_bytes());
    h[4..8].copy_from_slice(&ts_usec.to_le_bytes());
    h[8..12].copy_from_slice(&len.to_le_bytes());
    h[12..16].copy_from_slice(&len.to_le_bytes());
    h
}

/// Writes a capture: the global header at once, then one record per [`PcapWriter::write`].
/// Timestamps advance by one microsecond per packet (replay ignores them).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
    packets: u64,
    bytes: u64,
}

impl<W: Write> PcapWriter<W> {
    /// Starts a capture on `out`.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&global_header(SNAPLEN))?;
        Ok(PcapWriter {
            out,
            packets: 0,
            bytes: GLOBAL_HEADER_LEN as u64,
        })
    }

    /// Appends one frame (whole: captured length = original length).
    pub fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|l| *l <= SNAPLEN)
            .ok_or_else(|| io::Error::other(format!("a {}-byte frame", frame.len())))?;
        let sec = u32::try_from(self.packets / 1_000_000).unwrap_or(u32::MAX);
        let usec = u32::try_from(self.packets % 1_000_000).unwrap_or(0);
        self.out.write_all(&record_header(sec, usec, len))?;
        self.out.write_all(frame)?;
        self.packets += 1;
        self.bytes += (RECORD_HEADER_LEN + frame.len()) as u64;
        Ok(())
    }

    /// Records written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes written so far, global header included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and hands back the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The size of a capture of frames of these lengths.
pub fn file_size(frame_lens: impl IntoIterator<Item = usize>) -> u64 {
    frame_lens
        .into_iter()
        .map(|l| (RECORD_HEADER_LEN + l) as u64)
        .sum::<u64>()
        + GLOBAL_HEADER_LEN as u64
}

/// One record read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Seconds.
    pub ts_sec: u32,
    /// Microseconds (nanoseconds in a nanosecond capture).
    pub ts_usec: u32,
    /// The original length on the wire.
    pub orig_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}

/// Parses a little-endian capture (micro- or nanosecond timestamps: `ts_usec` holds whichever
/// the file has) of link type Ethernet; any other header, or a record running past the end,
/// is an error naming the offset.
pub fn parse(bytes: &[u8]) -> Result<Vec<Record<'_>>> {
    let bad = |detail: String| Error::parse("pcap file", detail);
    let header = bytes.get(..GLOBAL_HEADER_LEN).ok_or_else(|| {
        bad(format!(
            "{} bytes, shorter than the global header",
            bytes.len()
        ))
    })?;
    let u32_at = |b: &[u8], at: usize| -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&b[at..at + 4]);
        u32::from_le_bytes(w)
    };
    if ![MAGIC_MICROS, MAGIC_NANOS].contains(&u32_at(header, 0)) {
        return Err(bad(format!(
            "magic {:#010x} is neither {MAGIC_MICROS:#010x} nor {MAGIC_NANOS:#010x} \
             (little-endian, micro- or nanoseconds)",
            u32_at(header, 0)
        )));
    }
    if u32_at(header, 20) != LINKTYPE_ETHERNET {
        return Err(bad(format!(
            "link type {} is not Ethernet (1)",
            u32_at(header, 20)
        )));
    }
    let mut records = Vec::new();
    let mut at = GLOBAL_HEADER_LEN;
    while at < bytes.len() {
        let h = bytes
            .get(at..at + RECORD_HEADER_LEN)
            .ok_or_else(|| bad(format!("truncated record header at offset {at}")))?;
        let caplen = u32_at(h, 8) as usize;
        let start = at + RECORD_HEADER_LEN;
        let data = bytes
            .get(start..start + caplen)
            .ok_or_else(|| bad(format!("record at offset {at} claims {caplen} bytes")))?;
        records.push(Record {
            ts_sec: u32_at(h, 0),
            ts_usec: u32_at(h, 4),
            orig_len: u32_at(h, 12),
            data,
        });
        at = start + caplen;
    }
    Ok(records)
}
