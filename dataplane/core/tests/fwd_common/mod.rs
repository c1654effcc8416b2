//! Helpers for the forwarding tests: an independent checksum checker that reads frames by
//! raw offsets and recomputes every checksum from scratch (RFC 1071 word by word), without
//! any code of the crate, and packet builders for property tests.
#![allow(dead_code)]

/// The Internet checksum the slow way (RFC 1071 §1): one's complement of the one's
/// complement sum of the 16-bit words, odd byte padded.
pub fn naive_checksum(chunks: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for chunk in chunks {
        bytes.extend_from_slice(chunk);
    }
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        sum += u64::from(pair[0]) << 8 | u64::from(pair.get(1).copied().unwrap_or(0));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded to 16 bits")
}

fn word(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// The checksum that belongs at `at` in `data` (with `prefix`, e.g. a pseudo-header, summed
/// first), computed with the field zeroed.
pub fn recomputed(prefix: &[u8], data: &[u8], at: usize) -> u16 {
    let mut copy = data.to_vec();
    copy[at] = 0;
    copy[at + 1] = 0;
    naive_checksum(&[prefix, &copy])
}

fn pseudo(ip: &[u8], proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&ip[12..20]);
    p.push(0);
    p.push(proto);
    p.extend_from_slice(
        &u16::try_from(len)
            .expect("an IPv4 payload length")
            .to_be_bytes(),
    );
    p
}

/// One checksum found in a frame: where, stored, recomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub what: String,
    pub stored: u16,
    pub recomputed: u16,
}

impl Check {
    /// Stored equals recomputed (for UDP, a computed 0 is stored as 0xffff, RFC 768).
    pub fn ok(&self) -> bool {
        self.stored == self.recomputed
    }
}

/// Every checksum of an Ethernet frame carrying IPv4, recomputed: the IPv4 header, TCP or UDP
/// with the pseudo-header (UDP only when non-zero), ICMP, and for ICMP errors the quoted
/// IPv4 header and, when the whole quoted datagram is there, its TCP/UDP checksum; IPIP is
/// followed into the inner datagram. Anything it cannot read is skipped, never a panic.
pub fn frame_checks(frame: &[u8]) -> Vec<Check> {
    let mut checks = Vec::new();
    if frame.len() >= 14 && frame[12..14] == [0x08, 0x00] {
        datagram_checks(&frame[14..], "", &mut checks);
    }
    checks
}

fn datagram_checks(data: &[u8], context: &str, checks: &mut Vec<Check>) {
    if data.len() < 20 || data[0] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(data[0] & 0x0f) * 4;
    let total = usize::from(word(data, 2));
    if ihl < 20 || total < ihl || total > data.len() {
        return;
    }
    let ip = &data[..total];
    checks.push(Check {
        what: format!("{context}IPv4 header"),
        stored: word(ip, 10),
        recomputed: recomputed(&[], &ip[..ihl], 10),
    });
    let fragmented = word(ip, 6) & 0x3fff != 0;
    let payload = &ip[ihl..];
    match ip[9] {
        6 if !fragmented && payload.len() >= 20 => checks.push(Check {
            what: format!("{context}TCP"),
            stored: word(payload, 16),
            recomputed: recomputed(&pseudo(ip, 6, payload.len()), payload, 16),
        }),
        17 if !fragmented && payload.len() >= 8 => {
            let len = usize::from(word(payload, 4));
            if word(payload, 6) != 0 && (8..=payload.len()).contains(&len) {
                let mut value = recomputed(&pseudo(ip, 17, len), &payload[..len], 6);
                if value == 0 {
                    value = 0xffff;
                }
                checks.push(Check {
                    what: format!("{context}UDP"),
                    stored: word(payload, 6),
                    recomputed: value,
                });
            }
        }
        1 if !fragmented && payload.len() >= 8 => {
            checks.push(Check {
                what: format!("{context}ICMP"),
                stored: word(payload, 2),
                recomputed: recomputed(&[], payload, 2),
            });
            if matches!(payload[0], 3 | 4 | 5 | 11 | 12) {
                quote_checks(&payload[8..], &format!("{context}quoted "), checks);
            }
        }
        4 => datagram_checks(payload, &format!("{context}inner "), checks),
        _ => {}
    }
}

/// A quoted datagram: its header always; its transport checksum when it is all quoted.
fn quote_checks(quote: &[u8], context: &str, checks: &mut Vec<Check>) {
    if quote.len() < 20 || quote[0] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(quote[0] & 0x0f) * 4;
    if ihl < 20 || quote.len() < ihl {
        return;
    }
    let total = usize::from(word(quote, 2));
    if total <= quote.len() {
        datagram_checks(&quote[..total], context, checks);
    } else {
        checks.push(Check {
            what: format!("{context}IPv4 header"),
            stored: word(quote, 10),
            recomputed: recomputed(&[], &quote[..ihl], 10),
        });
    }
}

/// Asserts every checksum in `frame` is right, and returns how many there were.
pub fn assert_checksums(frame: &[u8], context: &str) -> usize {
    let checks = frame_checks(frame);
    for check in &checks {
        assert!(
            check.ok(),
            "{context}: {} checksum {:#06x}, recomputed {:#06x}",
            check.what,
            check.stored,
            check.recomputed
        );
    }
    checks.len()
}

// ---- Packet builders: every checksum computed from scratch with `naive_checksum`. ----

use std::net::Ipv4Addr;

/// An IPv4 header's variable fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSpec {
    pub tos: u8,
    pub ident: u16,
    pub df: bool,
    pub mf: bool,
    pub ttl: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Raw options, a multiple of 4 bytes, at most 40.
    pub options: Vec<u8>,
}

/// A transport header and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum L4Spec {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        window: u16,
        urgent: u16,
        /// Raw options, a multiple of 4 bytes, at most 40.
        options: Vec<u8>,
        payload: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
        /// Compute a checksum (else 0, "none").
        checksum: bool,
    },
}

/// A whole TCP or UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketSpec {
    pub ip: IpSpec,
    pub l4: L4Spec,
}

/// An IPv4 header with its checksum.
pub fn ipv4_header(ip: &IpSpec, proto: u8, payload_len: usize) -> Vec<u8> {
    let header_len = 20 + ip.options.len();
    let total = u16::try_from(header_len + payload_len).expect("fits an IPv4 datagram");
    let mut h = vec![0u8; 20];
    h[0] = 0x40 | u8::try_from(header_len / 4).expect("IHL fits");
    h[1] = ip.tos;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&ip.ident.to_be_bytes());
    h[6] = if ip.df { 0x40 } else { 0 } | if ip.mf { 0x20 } else { 0 };
    h[8] = ip.ttl;
    h[9] = proto;
    h[12..16].copy_from_slice(&ip.src.octets());
    h[16..20].copy_from_slice(&ip.dst.octets());
    h.extend_from_slice(&ip.options);
    let cksum = naive_checksum(&[&h]);
    h[10..12].copy_from_slice(&cksum.to_be_bytes());
    h
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.push(0);
    p.push(proto);
    p.extend_from_slice(&u16::try_from(len).expect("fits").to_be_bytes());
    p
}

impl L4Spec {
    pub fn proto(&self) -> u8 {
        match self {
            L4Spec::Tcp { .. } => 6,
            L4Spec::Udp { .. } => 17,
        }
    }

    pub fn ports(&self) -> (u16, u16) {
        match self {
            L4Spec::Tcp { sport, dport, .. } | L4Spec::Udp { sport, dport, .. } => (*sport, *dport),
        }
    }

    pub fn set_ports(&mut self, src: u16, dst: u16) {
        match self {
            L4Spec::Tcp { sport, dport, .. } | L4Spec::Udp { sport, dport, .. } => {
                *sport = src;
                *dport = dst;
            }
        }
    }

    /// The transport bytes with the checksum for `src` → `dst`.
    pub fn bytes(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        match self {
            L4Spec::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
                urgent,
                options,
                payload,
            } => {
                let mut t = Vec::new();
                t.extend_from_slice(&sport.to_be_bytes());
                t.extend_from_slice(&dport.to_be_bytes());
                t.extend_from_slice(&seq.to_be_bytes());
                t.extend_from_slice(&ack.to_be_bytes());
                t.push(u8::try_from((20 + options.len()) / 4).expect("fits") << 4);
                t.push(*flags);
                t.extend_from_slice(&window.to_be_bytes());
                t.extend_from_slice(&[0, 0]);
                t.extend_from_slice(&urgent.to_be_bytes());
                t.extend_from_slice(options);
                t.extend_from_slice(payload);
                let cksum = naive_checksum(&[&pseudo_header(src, dst, 6, t.len()), &t]);
                t[16..18].copy_from_slice(&cksum.to_be_bytes());
                t
            }
            L4Spec::Udp {
                sport,
                dport,
                payload,
                checksum,
            } => {
                let mut u = Vec::new();
                u.extend_from_slice(&sport.to_be_bytes());
                u.extend_from_slice(&dport.to_be_bytes());
                let len = u16::try_from(8 + payload.len()).expect("fits");
                u.extend_from_slice(&len.to_be_bytes());
                u.extend_from_slice(&[0, 0]);
                u.extend_from_slice(payload);
                if *checksum {
                    let mut cksum = naive_checksum(&[&pseudo_header(src, dst, 17, u.len()), &u]);
                    if cksum == 0 {
                        cksum = 0xffff;
                    }
                    u[6..8].copy_from_slice(&cksum.to_be_bytes());
                }
                u
            }
        }
    }
}

impl PacketSpec {
    /// The IPv4 datagram.
    pub fn datagram(&self) -> Vec<u8> {
        let l4 = self.l4.bytes(self.ip.src, self.ip.dst);
        let mut d = ipv4_header(&self.ip, self.l4.proto(), l4.len());
        d.extend_from_slice(&l4);
        d
    }
}

/// An Ethernet II header for IPv4.
pub fn ethernet(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut e = Vec::with_capacity(14);
    e.extend_from_slice(&dst);
    e.extend_from_slice(&src);
    e.extend_from_slice(&[0x08, 0x00]);
    e
}

/// An ICMP message with its checksum.
pub fn icmp_message(msg_type: u8, code: u8, rest: u32, data: &[u8]) -> Vec<u8> {
    let mut m = vec![msg_type, code, 0, 0];
    m.extend_from_slice(&rest.to_be_bytes());
    m.extend_from_slice(data);
    let cksum = naive_checksum(&[&m]);
    m[2..4].copy_from_slice(&cksum.to_be_bytes());
    m
}

/// Concatenates byte slices.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
