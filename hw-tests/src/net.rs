//! Small address types: an IPv4 interface address with its prefix length, and MAC spelling.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::Error;

/// An IPv4 interface address with prefix length, `203.0.113.11/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    /// The address itself (not the network).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Ipv4Cidr {
    /// `addr/len`; `len` must be at most 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, Error> {
        if len > 32 {
            return Err(Error::parse(
                "IPv4 prefix length",
                format!("{len} is larger than 32"),
            ));
        }
        Ok(Self { addr, len })
    }

    /// Whether `other` lies in this address's network.
    pub fn contains(&self, other: Ipv4Addr) -> bool {
        let mask = if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        };
        (u32::from(self.addr) & mask) == (u32::from(other) & mask)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| Error::parse("IPv4 address/len", format!("`{s}` has no /len")))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|e| Error::parse("IPv4 address/len", format!("`{s}`: {e}")))?;
        let len: u8 = len
            .parse()
            .map_err(|e| Error::parse("IPv4 address/len", format!("`{s}`: {e}")))?;
        Self::new(addr, len)
    }
}

/// Lower-case, colon-separated spelling of a MAC address, so MACs from `ip`, `tcpdump` and the
/// dataplane's stats compare equal. Returns `None` for anything that is not six hex octets.
pub fn normalize_mac(mac: &str) -> Option<String> {
    let parts: Vec<&str> = mac.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut out = Vec::with_capacity(6);
    for p in parts {
        let octet = u8::from_str_radix(p, 16).ok()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        out.push(format!("{octet:02x}"));
    }
    Some(out.join(":"))
}
