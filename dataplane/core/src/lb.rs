//! The load-balancing vocabulary shared by the connection table, the schedulers and the
//! forwarding transforms: protocols, forwarding methods, flows and destination handles.
//!
//! Terms follow LVS/IPVS: a *virtual service* is (protocol, VIP, port); its *destinations*
//! (real servers) each have an address, a port, a forwarding method and a weight.

use std::net::Ipv4Addr;

/// Transport protocols a virtual service can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Protocol {
    /// TCP (IP protocol 6).
    Tcp = 6,
    /// UDP (IP protocol 17).
    Udp = 17,
}

impl Protocol {
    /// The IPv4 protocol number.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// From an IPv4 protocol number.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// How a destination receives the requests (ipvsadm `-m`, `-i`, `-g`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ForwardMethod {
    /// VS/NAT ("masquerading"): rewrite destination address/port on requests and the source
    /// on replies, which come back through the director (seed 002).
    Nat,
    /// VS/TUN: encapsulate the request in IPIP to the real server, which answers the client
    /// directly (seed 000 §2.2).
    Tunnel,
    /// VS/DR ("gatewaying"): rewrite only the destination MAC; the real server holds the VIP
    /// on a non-ARPing interface on the same segment and answers directly.
    DirectRoute,
}

/// Index of a virtual service in the director's current service set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u32);

/// Index of a destination (real server) in the director's current destination array.
/// Destinations keep their index across configuration changes while they exist, so
/// connections and persistence templates can refer to them by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestId(pub u32);

/// An IPv4 transport endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Address.
    pub addr: Ipv4Addr,
    /// Port (host byte order).
    pub port: u16,
}

impl Endpoint {
    /// `addr:port`.
    pub const fn new(addr: Ipv4Addr, port: u16) -> Self {
        Endpoint { addr, port }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// A transport flow as seen in one packet: protocol, source and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    /// TCP or UDP.
    pub proto: Protocol,
    /// Source endpoint.
    pub src: Endpoint,
    /// Destination endpoint.
    pub dst: Endpoint,
}

impl Flow {
    /// The same flow seen from the other side.
    pub const fn reversed(self) -> Flow {
        Flow {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
        }
    }
}
