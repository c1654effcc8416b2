//! The director's configuration and its per-lcore packet engine.
//!
//! [`Director`] is the immutable configuration shared by all lcores (behind an [`Arc`]);
//! [`Worker`] is one lcore's engine, owning that lcore's [`NeighbourTable`]. For every
//! received frame the glue calls [`Worker::process`] and acts on the [`Verdict`].
//!
//! So far the engine is the director's own L2/L3 responder: it answers ARP (RFC 826) and
//! ICMP echo (RFC 792) for the director's address on each port and for the VIPs configured on
//! that port, learns neighbours from ARP, and drops everything else with a counted reason.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::balance::Balancer;

use crate::conn::Hint;
use crate::counters::{Counters, DropReason};
use crate::hop::HopCache;
use crate::neigh::{Learned, NeighbourTable};
use crate::wire::arp::{self, Operation};
use crate::wire::ethernet::{self, EtherType};
use crate::wire::icmpv4::{self, Message};
use crate::wire::ipv4::{self, Protocol};
use crate::wire::{BROADCAST_MAC, MacAddr, checksum, is_multicast_mac};

/// The TTL of datagrams the director originates, echo replies included: IANA's recommended
/// default (RFC 1700 "IP Time To Live Parameter"; RFC 1122 §3.2.1.7 asks for a fixed default).
pub const DEFAULT_TTL: u8 = 64;

/// One DPDK port as the core sees it: the director's MAC and IPv4 address on that link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// The port's MAC address, the source of every frame the director sends from it.
    pub mac: MacAddr,
    /// The director's own address on this port.
    pub addr: Ipv4Addr,
    /// The length of the on-link prefix of `addr` (for next-hop decisions).
    pub prefix_len: u8,
}

/// A virtual IP address, answered (ARP, ICMP echo) on one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vip {
    /// The virtual address.
    pub addr: Ipv4Addr,
    /// The index, in [`Director::ports`], of the port it is announced on.
    pub port: usize,
}

/// A configuration [`Director::new`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// There is no port at all.
    #[error("no ports configured")]
    NoPorts,
    /// A prefix length over 32.
    #[error("port {port}: prefix length {prefix_len} is longer than 32")]
    PrefixLen {
        /// The port's index.
        port: usize,
        /// The prefix length given.
        prefix_len: u8,
    },
    /// A port MAC that is a group address (or all zeros), so it cannot be a source.
    #[error("port {port}: MAC address {mac:02x?} is not a unicast address")]
    PortMac {
        /// The port's index.
        port: usize,
        /// The MAC given.
        mac: MacAddr,
    },
    /// An address no host can have: unspecified, broadcast, multicast or loopback.
    #[error("port {port}: {addr} cannot be a host address")]
    NotAHostAddress {
        /// The port's index.
        port: usize,
        /// The address given.
        addr: Ipv4Addr,
    },
    /// A VIP on a port index that does not exist.
    #[error("VIP {addr}: port {port} does not exist ({ports} ports configured)")]
    VipPort {
        /// The VIP.
        addr: Ipv4Addr,
        /// The port index given.
        port: usize,
        /// How many ports there are.
        ports: usize,
    },
    /// The same address twice on one port (two VIPs, or a VIP equal to the port's address).
    #[error("port {port}: {addr} is configured twice")]
    Duplicate {
        /// The port's index.
        port: usize,
        /// The address.
        addr: Ipv4Addr,
    },
    /// A route whose gateway is on no port's subnet, or with a prefix length over 32.
    #[error("route {prefix}/{prefix_len} via {gateway}: the gateway is on no port's subnet")]
    Route {
        /// The destination prefix.
        prefix: Ipv4Addr,
        /// Its length.
        prefix_len: u8,
        /// The gateway given.
        gateway: Ipv4Addr,
    },
    /// An MTU outside 68..=9600, or for a port that does not exist.
    #[error("port {port}: MTU {mtu} is not within 68..=9600 or the port does not exist")]
    Mtu {
        /// The port's index.
        port: usize,
        /// The MTU given.
        mtu: u16,
    },
}

/// A route to destinations off the ports' subnets: `prefix/prefix_len via gateway`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub prefix: Ipv4Addr,
    /// Its length, 0 for the default route.
    pub prefix_len: u8,
    /// The next hop, on one of the ports' subnets.
    pub gateway: Ipv4Addr,
}

/// The Ethernet MTU a port has unless configured otherwise.
pub const DEFAULT_MTU: u16 = 1500;

fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// Whether `addr` is in `prefix/len` (a length over 32 counts as 32).
pub fn in_prefix(prefix: Ipv4Addr, len: u8, addr: Ipv4Addr) -> bool {
    let m = prefix_mask(len);
    prefix.to_bits() & m == addr.to_bits() & m
}

/// The director's configuration: its ports and VIPs. Immutable once built, shared by the
/// lcores' [`Worker`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Director {
    ports: Vec<Port>,
    vips: Vec<Vip>,
    /// `(port, address)` of every address answered on each port, sorted for binary search.
    local: Vec<(usize, u32)>,
    /// Routes, longest prefix first.
    routes: Vec<Route>,
    /// Each port's MTU.
    mtus: Vec<u16>,
    /// The UDP port on which datagrams to a port's own address are the glue's business
    /// ([`Verdict::Local`]): the dataplanes' heartbeats.
    local_udp_port: Option<u16>,
}

/// An address a host may hold or be answered at.
fn is_host_address(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() || addr.is_loopback())
}

impl Director {
    /// Checks and builds a configuration.
    pub fn new(ports: Vec<Port>, vips: Vec<Vip>) -> Result<Self, ConfigError> {
        if ports.is_empty() {
            return Err(ConfigError::NoPorts);
        }
        let mut local = Vec::with_capacity(ports.len() + vips.len());
        for (index, port) in ports.iter().enumerate() {
            if port.prefix_len > 32 {
                return Err(ConfigError::PrefixLen {
                    port: index,
                    prefix_len: port.prefix_len,
                });
            }
            if is_multicast_mac(&port.mac) || port.mac == [0; 6] {
                return Err(ConfigError::PortMac {
                    port: index,
                    mac: port.mac,
                });
            }
            local.push((index, port.addr));
        }
        for vip in &vips {
            if vip.port >= ports.len() {
                return Err(ConfigError::VipPort {
                    addr: vip.addr,
                    port: vip.port,
                    ports: ports.len(),
                });
            }
            local.push((vip.port, vip.addr));
        }
        if let Some(&(port, addr)) = local.iter().find(|(_, addr)| !is_host_address(*addr)) {
            return Err(ConfigError::NotAHostAddress { port, addr });
        }
        let mut local: Vec<(usize, u32)> = local
            .into_iter()
            .map(|(port, addr)| (port, addr.to_bits()))
            .collect();
        local.sort_unstable();
        if let Some(pair) = local.windows(2).find(|pair| pair[0] == pair[1]) {
            let (port, addr) = pair[0];
            return Err(ConfigError::Duplicate {
                port,
                addr: Ipv4Addr::from_bits(addr),
            });
        }
        let mtus = vec![DEFAULT_MTU; ports.len()];
        Ok(Self {
            ports,
            vips,
            local,
            routes: Vec::new(),
            mtus,
            local_udp_port: None,
        })
    }

    /// Adds the routes to destinations off the ports' subnets (checked: every gateway must be
    /// on a port's subnet).
    pub fn with_routes(mut self, mut routes: Vec<Route>) -> Result<Self, ConfigError> {
        for r in &routes {
            if r.prefix_len > 32 || self.on_link(r.gateway).is_none() {
                return Err(ConfigError::Route {
                    prefix: r.prefix,
                    prefix_len: r.prefix_len,
                    gateway: r.gateway,
                });
            }
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix_len));
        self.routes = routes;
        Ok(self)
    }

    /// Hands UDP datagrams to a port's own address and UDP port `port` to the glue
    /// ([`Verdict::Local`]) instead of dropping them as an unsupported protocol.
    pub fn with_local_udp_port(mut self, port: u16) -> Self {
        self.local_udp_port = Some(port);
        self
    }

    /// Sets a port's MTU (the largest IPv4 datagram it carries; TUN needs 20 bytes of it).
    pub fn with_mtu(mut self, port: usize, mtu: u16) -> Result<Self, ConfigError> {
        match self.mtus.get_mut(port) {
            Some(m) if (68..=9600).contains(&mtu) => {
                *m = mtu;
                Ok(self)
            }
            _ => Err(ConfigError::Mtu { port, mtu }),
        }
    }

    /// A port's MTU.
    pub fn mtu(&self, port: usize) -> u16 {
        self.mtus.get(port).copied().unwrap_or(DEFAULT_MTU)
    }

    /// The port whose subnet holds `addr` (the longest prefix if several do).
    pub fn on_link(&self, addr: Ipv4Addr) -> Option<usize> {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| in_prefix(p.addr, p.prefix_len, addr))
            .max_by_key(|(_, p)| p.prefix_len)
            .map(|(i, _)| i)
    }

    /// Where a datagram to `dst` goes: the port and the next hop's address (`dst` itself when
    /// on a port's subnet, else the gateway of the longest matching route).
    pub fn next_hop(&self, dst: Ipv4Addr) -> Option<(usize, Ipv4Addr)> {
        if let Some(port) = self.on_link(dst) {
            return Some((port, dst));
        }
        let r = self
            .routes
            .iter()
            .find(|r| in_prefix(r.prefix, r.prefix_len, dst))?;
        self.on_link(r.gateway).map(|port| (port, r.gateway))
    }

    /// The ports, in the glue's port-index order.
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// The VIPs.
    pub fn vips(&self) -> &[Vip] {
        &self.vips
    }

    /// Whether `addr` is answered on `port`: the director's address there, or a VIP of it.
    pub fn is_local(&self, port: usize, addr: Ipv4Addr) -> bool {
        self.local.binary_search(&(port, addr.to_bits())).is_ok()
    }
}

/// What the glue must do with a frame after [`Worker::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Verdict {
    /// The frame was rewritten in place into an answer; send it out of the port it came in
    /// on. Its length is unchanged.
    Reply,
    /// The frame was for the director and did its job (an ARP reply that taught us a
    /// neighbour); free it. Nothing was wrong with it.
    Consumed,
    /// Free the frame; the reason has been counted.
    Drop(DropReason),
    /// The frame was rewritten for its next hop (NAT, TUN, DR, a translated ICMP error):
    /// send it out of `port`.
    Forward {
        /// The port index to send it from.
        port: usize,
    },
    /// Like [`Verdict::Forward`], but the next hop's MAC is not known yet: the destination
    /// MAC is zero. Hold the frame, ask [`Worker::arp_request`] for a request to send, and once
    /// the neighbour is known fill its MAC in with [`set_dst_mac`] and send it; drop it (and
    /// count [`DropReason::NeighbourUnresolved`]) if no answer comes.
    Resolve {
        /// The port index to send it from.
        port: usize,
        /// The address whose MAC is needed.
        next_hop: Ipv4Addr,
    },
    /// Another worker owns this frame's connection: hand it over unchanged.
    Redirect {
        /// That worker's index.
        worker: usize,
    },
    /// A UDP datagram to the receiving port's own address on the director's local UDP port
    /// ([`Director::with_local_udp_port`]), whole and with a right IPv4 header: the glue's
    /// to read (the peer dataplane's heartbeat); nothing was counted.
    Local,
}

/// A [`Verdict`] (or "not load-balanced traffic", [`Act::PASS`]) packed into two machine
/// words, as the engine's layers hand it to one another.
///
/// The enum, 16 bytes with its payload at different offsets per variant, was built with
/// narrow stores and copied through the stack with wide loads between the layers (the
/// profile showed store-forwarding stalls there, ~15 % of the main packet function); a pair of
/// integers stays in registers, and becomes a [`Verdict`] only at the end of
/// [`Worker::process_buf`].
///
/// `word`: the kind in bits 0..8, a drop reason's index in bits 8..16, a next hop's address in
/// bits 32..64; `port`: the egress port, or the worker of a redirect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Act {
    word: u64,
    port: usize,
}

impl Act {
    const K_PASS: u64 = 0;
    const K_REPLY: u64 = 1;
    const K_CONSUMED: u64 = 2;
    const K_DROP: u64 = 3;
    const K_FORWARD: u64 = 4;
    const K_RESOLVE: u64 = 5;
    const K_REDIRECT: u64 = 6;
    const K_LOCAL: u64 = 7;

    /// Not load-balanced traffic: the director's own handling takes the frame.
    pub(crate) const PASS: Act = Act::kind(Self::K_PASS);
    /// [`Verdict::Reply`].
    pub(crate) const REPLY: Act = Act::kind(Self::K_REPLY);

    const fn kind(k: u64) -> Act {
        Act { word: k, port: 0 }
    }

    /// [`Verdict::Drop`].
    #[inline(always)]
    pub(crate) const fn dropped(reason: DropReason) -> Act {
        Act {
            word: Self::K_DROP | (reason as u64) << 8,
            port: 0,
        }
    }

    /// [`Verdict::Forward`].
    #[inline(always)]
    pub(crate) const fn forward(port: usize) -> Act {
        Act {
            word: Self::K_FORWARD,
            port,
        }
    }

    /// [`Verdict::Resolve`].
    #[inline(always)]
    pub(crate) const fn resolve(port: usize, next_hop: Ipv4Addr) -> Act {
        Act {
            word: Self::K_RESOLVE | (next_hop.to_bits() as u64) << 32,
            port,
        }
    }

    /// [`Verdict::Redirect`].
    #[inline(always)]
    pub(crate) const fn redirect(worker: usize) -> Act {
        Act {
            word: Self::K_REDIRECT,
            port: worker,
        }
    }

    #[inline(always)]
    const fn k(self) -> u64 {
        self.word & 0xff
    }

    /// Whether this is [`Act::PASS`].
    #[inline(always)]
    pub(crate) const fn is_pass(self) -> bool {
        self.k() == Self::K_PASS
    }

    /// The index of the drop reason, for a drop.
    #[inline(always)]
    fn drop_index(self) -> Option<usize> {
        (self.k() == Self::K_DROP).then_some(((self.word >> 8) & 0xff) as usize)
    }

    /// The verdict of an act that is one (every act but PASS), its drop reason counted.
    #[inline(always)]
    fn counted(self, counters: &mut Counters) -> Verdict {
        if let Some(i) = self.drop_index()
            && let Some(n) = counters.drops.get_mut(i)
        {
            *n += 1;
        }
        self.verdict()
            .unwrap_or(Verdict::Drop(DropReason::UnsupportedEthertype))
    }

    /// The verdict (`PASS` has none: the caller handles the frame otherwise).
    #[inline(always)]
    fn verdict(self) -> Option<Verdict> {
        Some(match self.k() {
            Self::K_REPLY => Verdict::Reply,
            Self::K_CONSUMED => Verdict::Consumed,
            Self::K_DROP => {
                Verdict::Drop(*DropReason::ALL.get(((self.word >> 8) & 0xff) as usize)?)
            }
            Self::K_FORWARD => Verdict::Forward { port: self.port },
            Self::K_RESOLVE => Verdict::Resolve {
                port: self.port,
                next_hop: Ipv4Addr::from_bits((self.word >> 32) as u32),
            },
            Self::K_REDIRECT => Verdict::Redirect { worker: self.port },
            Self::K_LOCAL => Verdict::Local,
            _ => return None,
        })
    }
}

impl From<Verdict> for Act {
    #[inline(always)]
    fn from(v: Verdict) -> Act {
        match v {
            Verdict::Reply => Act::REPLY,
            Verdict::Consumed => Act::kind(Act::K_CONSUMED),
            Verdict::Drop(r) => Act::dropped(r),
            Verdict::Forward { port } => Act::forward(port),
            Verdict::Resolve { port, next_hop } => Act::resolve(port, next_hop),
            Verdict::Redirect { worker } => Act::redirect(worker),
            Verdict::Local => Act::kind(Act::K_LOCAL),
        }
    }
}

/// Writes the destination MAC of a frame held for [`Verdict::Resolve`].
pub fn set_dst_mac(frame: &mut [u8], mac: MacAddr) -> bool {
    match frame.get_mut(..6) {
        Some(dst) => {
            dst.copy_from_slice(&mac);
            true
        }
        None => false,
    }
}

/// A packet buffer that cannot grow: the bytes of a slice.
struct SliceBuf<'a>(&'a mut [u8]);

impl crate::buf::PacketBuf for SliceBuf<'_> {
    fn data(&self) -> &[u8] {
        self.0
    }
    fn data_mut(&mut self) -> &mut [u8] {
        self.0
    }
    fn prepend(&mut self, _: usize) -> bool {
        false
    }
    fn trim_front(&mut self, _: usize) -> bool {
        false
    }
    fn trim_back(&mut self, _: usize) -> bool {
        false
    }
    fn headroom(&self) -> usize {
        0
    }
}

/// The connection key of a frame of the common shape (Ethernet, IPv4 with IHL 5, TCP or
/// UDP), packed as the connection table hashes it ([`crate::conn::Hint`]), read at fixed
/// offsets without any check beyond that shape: only a hint for prefetching, the real parse
/// ([`crate::fwd::parse_flow`]) decides. The addresses are bytes 26..34 in order (source then
/// destination, big-endian: the first word as is), the ports bytes 34..38.
#[inline]
fn quick_key(frame: &[u8]) -> Option<[u64; 2]> {
    let h: &[u8; 38] = frame.get(..38)?.try_into().ok()?;
    if h[12..14] != [0x08, 0x00] || h[14] != 0x45 || !matches!(h[23], 6 | 17) {
        return None;
    }
    let addrs = u64::from_be_bytes([h[26], h[27], h[28], h[29], h[30], h[31], h[32], h[33]]);
    let ports = u32::from_be_bytes([h[34], h[35], h[36], h[37]]);
    Some([addrs, u64::from(ports) << 16 | u64::from(h[23])])
}

/// One lcore's packet engine.
#[derive(Debug)]
pub struct Worker {
    director: Arc<Director>,
    neighbours: NeighbourTable,
    balancer: Option<Balancer>,
    /// Next hops recently used by the balancer (see [`crate::hop`]).
    hops: HopCache,
    /// Whether ARP and ICMP echo for the VIPs are answered (an active or standalone
    /// director) or only for the ports' own addresses (a standby).
    owns_vips: bool,
}

impl Worker {
    /// An engine for `director` with its own neighbour table (see [`NeighbourTable::new`]).
    /// This is where the lcore's memory is allocated; [`process`](Self::process) allocates
    /// nothing.
    pub fn new(director: Arc<Director>, neighbour_capacity: usize, neighbour_max_age: u64) -> Self {
        Self {
            director,
            neighbours: NeighbourTable::new(neighbour_capacity, neighbour_max_age),
            balancer: None,
            hops: HopCache::new(),
            owns_vips: true,
        }
    }

    /// Whether this director holds its VIPs (and the inside gateway address, a VIP of the
    /// inside port): `true` (the default, a standalone or active director) answers ARP and
    /// ICMP echo for them; `false` (a standby) answers only for the ports' own addresses, so
    /// the peer can hold them. Set by the glue between bursts when syncd changes the role.
    ///
    /// A director that does not hold its VIPs schedules no new connection either (counted
    /// [`DropReason::Standby`]): it still forwards the connections it holds, synced from the
    /// active, so that frames still reaching it while a takeover's gratuitous ARPs spread go
    /// to the same real server, but it never schedules beside the active.
    pub fn set_owns_vips(&mut self, owns: bool) {
        self.owns_vips = owns;
        if let Some(b) = &mut self.balancer {
            b.set_scheduling(owns);
        }
    }

    /// Whether the VIPs are answered (see [`set_owns_vips`](Self::set_owns_vips)).
    pub fn owns_vips(&self) -> bool {
        self.owns_vips
    }

    /// Writes into `out` a gratuitous ARP (RFC 5227 §3, an ARP request whose sender and
    /// target are both `addr`, broadcast) announcing that `addr` is at `port`'s MAC, and
    /// returns its length (60), or `None` if `out` is too short or the port does not exist.
    /// Neighbours that already have `addr` in their cache replace the MAC (Linux overrides
    /// its lock time for a gratuitous ARP), which is how a new active director takes over.
    pub fn gratuitous_arp(&self, port: usize, addr: Ipv4Addr, out: &mut [u8]) -> Option<usize> {
        let len = self.arp_request(port, addr, out)?;
        let frame = out.get_mut(ethernet::HEADER_LEN..len)?;
        let mut a = arp::Packet::new_unchecked(frame);
        a.set_sender_protocol_addr(addr);
        Some(len)
    }

    /// The same engine, load-balancing the virtual services of `balancer`.
    pub fn with_balancer(mut self, mut balancer: Balancer) -> Self {
        balancer.set_scheduling(self.owns_vips);
        self.balancer = Some(balancer);
        self
    }

    /// First prefetch pass over a received burst: for a frame of the common shape (IPv4 with
    /// a 20-byte header, TCP or UDP) starts loading the connection-index bucket its lookup
    /// will read; anything else is left alone. Call it for every frame of a burst, then
    /// [`prefetch_entry`](Self::prefetch_entry) for every frame, then process them: the
    /// lookups' cache misses overlap instead of following one another. Reads the frame only
    /// and changes nothing, so any frame is safe to pass.
    #[inline]
    pub fn prefetch(&self, _port: usize, frame: &[u8]) {
        if let (Some(b), Some(words)) = (&self.balancer, quick_key(frame)) {
            b.conns().warm(b.conns().hint_words(words));
        }
    }

    /// Second prefetch pass (see [`prefetch`](Self::prefetch)): starts loading the
    /// connection entry the frame's bucket names.
    #[inline]
    pub fn prefetch_entry(&self, _port: usize, frame: &[u8]) {
        if let (Some(b), Some(words)) = (&self.balancer, quick_key(frame)) {
            b.conns().warm_entry(b.conns().hint_words(words));
        }
    }

    /// First prefetch pass over a received burst, hashing each frame's key once: like
    /// [`prefetch`](Self::prefetch), with the prefetch instruction given by the caller (so it
    /// is inlined: the glue passes `tandem_dpdk::prefetch`), and returning the [`Hint`] that
    /// [`prefetch_entry_hinted`](Self::prefetch_entry_hinted) and
    /// [`process_hinted`](Self::process_hinted) take for the same frame instead of hashing
    /// its key again. [`Hint::NONE`] for a frame not of the common shape.
    #[inline]
    pub fn prefetch_hinted(&self, frame: &[u8], prefetch: impl Fn(*const u8)) -> Hint {
        let (Some(b), Some(words)) = (&self.balancer, quick_key(frame)) else {
            return Hint::NONE;
        };
        let hint = b.conns().hint_words(words);
        b.conns().prefetch_hinted(hint, prefetch);
        hint
    }

    /// Second prefetch pass (see [`prefetch_hinted`](Self::prefetch_hinted)): starts loading
    /// the connection entry the frame's bucket names.
    #[inline]
    pub fn prefetch_entry_hinted(&self, hint: &mut Hint, prefetch: impl Fn(*const u8)) {
        if let Some(b) = &self.balancer {
            b.conns().prefetch_entry_hinted(hint, prefetch);
        }
    }

    /// The load-balancing state, if any.
    pub fn balancer(&self) -> Option<&Balancer> {
        self.balancer.as_ref()
    }

    /// The load-balancing state, for housekeeping and sync.
    pub fn balancer_mut(&mut self) -> Option<&mut Balancer> {
        self.balancer.as_mut()
    }

    /// Writes into `out` a broadcast ARP request from `port` for `target` (RFC 826) and
    /// returns its length (60: the Ethernet minimum), or `None` if `out` is too short or the
    /// port does not exist.
    pub fn arp_request(&self, port: usize, target: Ipv4Addr, out: &mut [u8]) -> Option<usize> {
        const LEN: usize = 60;
        let p = self.director.ports.get(port)?;
        let frame = out.get_mut(..LEN)?;
        frame.fill(0);
        let mut eth = ethernet::Frame::new_unchecked(&mut *frame);
        eth.set_dst_addr(BROADCAST_MAC);
        eth.set_src_addr(p.mac);
        eth.set_ethertype(EtherType::ARP);
        let mut a = arp::Packet::new_unchecked(frame.get_mut(ethernet::HEADER_LEN..)?);
        a.set_ethernet_ipv4();
        a.set_operation(arp::Operation::REQUEST);
        a.set_sender_hardware_addr(p.mac);
        a.set_sender_protocol_addr(p.addr);
        a.set_target_hardware_addr([0; 6]);
        a.set_target_protocol_addr(target);
        Some(LEN)
    }

    /// The configuration this engine runs.
    pub fn director(&self) -> &Director {
        &self.director
    }

    /// This lcore's neighbour table.
    pub fn neighbours(&self) -> &NeighbourTable {
        &self.neighbours
    }

    /// This lcore's neighbour table, for housekeeping ([`NeighbourTable::expire`]).
    pub fn neighbours_mut(&mut self) -> &mut NeighbourTable {
        &mut self.neighbours
    }

    /// [`process`](Self::process) on a [`PacketBuf`](crate::buf::PacketBuf): the glue's entry
    /// point, so that verdicts which resize the packet (IPIP encapsulation) can grow it.
    #[inline]
    pub fn process_buf<B: crate::buf::PacketBuf>(
        &mut self,
        port: usize,
        buf: &mut B,
        now: u64,
        counters: &mut Counters,
    ) -> Verdict {
        // Without a hint the fast path cannot find the connection.
        self.process_slow(port, buf, Hint::NONE, now, counters)
    }

    /// [`process_buf`](Self::process_buf) of a frame whose [`Hint`] the prefetch passes gave
    /// ([`prefetch_hinted`](Self::prefetch_hinted),
    /// [`prefetch_entry_hinted`](Self::prefetch_entry_hinted)): first
    /// [`forward_established`](Self::forward_established), then, if that declines,
    /// [`process_slow`](Self::process_slow).
    #[inline]
    pub fn process_hinted<B: crate::buf::PacketBuf>(
        &mut self,
        port: usize,
        buf: &mut B,
        hint: Hint,
        now: u64,
        counters: &mut Counters,
    ) -> Verdict {
        if let Some(v) = self.forward_established(port, buf, &hint, now, counters) {
            return v;
        }
        self.process_slow(port, buf, hint, now, counters)
    }

    /// The established fast path: a TCP segment or UDP datagram of the common shape, to
    /// `port`'s MAC, whose connection the prefetch passes found (`hint`) and which leaves its
    /// connection's state as it is; NAT and DR with the next hop cached, and TUN (see
    /// [`crate::balance`]'s `fast` module). Returns the verdict, the frame transformed and
    /// everything counted exactly as [`process_buf`](Self::process_buf) would; `None`
    /// leaves the frame and every state untouched, for [`process_slow`](Self::process_slow).
    /// The glue calls it inline for every frame of a burst.
    #[inline(always)]
    pub fn forward_established<B: crate::buf::PacketBuf>(
        &mut self,
        port: usize,
        buf: &mut B,
        hint: &Hint,
        now: u64,
        counters: &mut Counters,
    ) -> Option<Verdict> {
        if !hint.has_slot() {
            return None;
        }
        let mac = self.director.ports.get(port)?.mac;
        let balancer = self.balancer.as_mut()?;
        let frame = buf.data();
        let pf = crate::fwd::parse_common(frame)?;
        // dispatch's decisions for such a frame: to this port's MAC (not a broadcast), from
        // a unicast source.
        let (dst, src) = frame.first_chunk::<12>()?.split_at(6);
        if dst != mac || is_multicast_mac(src.try_into().ok()?) {
            return None;
        }
        let len = frame.len();
        let fast = balancer.fast(
            &crate::balance::Ctx {
                director: &self.director,
                neighbours: &self.neighbours,
                hops: &self.hops,
                hint: *hint,
                now,
            },
            &pf,
            buf,
            counters,
        )?;
        counters.rx_packets += 1;
        counters.rx_bytes += len as u64;
        match fast {
            crate::balance::Fast::Forward(out) => Some(Verdict::Forward { port: out }),
            // Every act the tunnel returns is a verdict.
            crate::balance::Fast::Tunnel(act) => Some(act.counted(counters)),
        }
    }

    /// [`process_hinted`](Self::process_hinted) without the fast path: for a frame
    /// [`forward_established`](Self::forward_established) declined.
    #[inline(never)]
    pub fn process_slow<B: crate::buf::PacketBuf>(
        &mut self,
        port: usize,
        buf: &mut B,
        hint: Hint,
        now: u64,
        counters: &mut Counters,
    ) -> Verdict {
        counters.rx_packets += 1;
        counters.rx_bytes += buf.data().len() as u64;
        // Every act dispatch returns is a verdict (PASS never leaves it).
        self.dispatch(port, buf, hint, now, counters)
            .counted(counters)
    }

    /// Handles one frame received on port index `port` at time `now` (nanoseconds).
    ///
    /// Counts `rx_packets`/`rx_bytes` for every frame, the answer it produced, and the drop
    /// reason for every [`Verdict::Drop`]; the glue counts `tx_*` when the NIC takes a reply.
    /// Never panics, whatever the bytes.
    pub fn process(
        &mut self,
        port: usize,
        frame: &mut [u8],
        now: u64,
        counters: &mut Counters,
    ) -> Verdict {
        // A slice cannot grow: TUN encapsulation needs process_buf.
        self.process_buf(port, &mut SliceBuf(frame), now, counters)
    }

    #[inline(always)]
    fn dispatch<B: crate::buf::PacketBuf>(
        &mut self,
        port: usize,
        buf: &mut B,
        hint: Hint,
        now: u64,
        counters: &mut Counters,
    ) -> Act {
        let frame = buf.data();
        let Some(config) = self.director.ports.get(port) else {
            return Act::dropped(DropReason::UnknownPort);
        };
        let Ok(eth) = ethernet::Frame::new_checked(frame) else {
            return Act::dropped(DropReason::TruncatedEthernet);
        };
        let to_port = eth.dst_addr() == config.mac;
        if !to_port && eth.dst_addr() != BROADCAST_MAC {
            return Act::dropped(DropReason::NotForUsMac);
        }
        if is_multicast_mac(&eth.src_addr()) {
            return Act::dropped(DropReason::InvalidSourceMac);
        }
        let ethertype = eth.ethertype();
        let mac = config.mac;
        if ethertype == EtherType::IPV4
            && to_port
            && let Some(balancer) = self.balancer.as_mut()
        {
            let act = balancer.handle(
                &crate::balance::Ctx {
                    director: &self.director,
                    neighbours: &self.neighbours,
                    hops: &self.hops,
                    hint,
                    now,
                },
                port,
                buf,
                counters,
            );
            if !act.is_pass() {
                return act;
            }
        }
        self.own(port, mac, ethertype, to_port, buf.data_mut(), now, counters)
            .into()
    }

    /// The director's own handling of a frame that is not load-balanced traffic.
    #[inline(never)]
    #[expect(clippy::too_many_arguments, reason = "what dispatch found, passed on")]
    fn own(
        &mut self,
        port: usize,
        mac: MacAddr,
        ethertype: EtherType,
        to_port: bool,
        frame: &mut [u8],
        now: u64,
        counters: &mut Counters,
    ) -> Verdict {
        let Some(own_addr) = self.director.ports.get(port).map(|p| p.addr) else {
            return Verdict::Drop(DropReason::UnknownPort);
        };
        let ingress = Ingress {
            director: &self.director,
            port,
            mac,
            own_addr,
            owns_vips: self.owns_vips,
        };
        match ethertype {
            EtherType::ARP => ingress.arp(&mut self.neighbours, frame, now, counters),
            EtherType::IPV4 if to_port => ingress.ipv4(frame, counters),
            // RFC 1122 §3.3.6: a unicast IP datagram in a link-layer broadcast is discarded,
            // and the director answers no IP broadcast.
            EtherType::IPV4 => Verdict::Drop(DropReason::NotForUsMac),
            _ => Verdict::Drop(DropReason::UnsupportedEthertype),
        }
    }
}

/// The port a frame came in on, with what the handlers need to know about it.
struct Ingress<'a> {
    director: &'a Director,
    port: usize,
    mac: MacAddr,
    /// The port's own address (always answered).
    own_addr: Ipv4Addr,
    /// Whether the VIPs are answered too (see [`Worker::set_owns_vips`]).
    owns_vips: bool,
}

impl Ingress<'_> {
    /// Whether `addr` is answered on this port now: its own address, or a VIP of it while
    /// the director holds its VIPs.
    fn answers(&self, addr: Ipv4Addr) -> bool {
        self.director.is_local(self.port, addr) && (self.owns_vips || addr == self.own_addr)
    }
}

impl Ingress<'_> {
    /// RFC 826 "Packet Reception", with the sender checks of RFC 5227 and RFC 1812 §3.3.2.
    fn arp(
        &self,
        neighbours: &mut NeighbourTable,
        frame: &mut [u8],
        now: u64,
        counters: &mut Counters,
    ) -> Verdict {
        let Some((eth_header, payload)) = frame.split_at_mut_checked(ethernet::HEADER_LEN) else {
            return Verdict::Drop(DropReason::TruncatedEthernet);
        };
        let Ok(mut arp) = arp::Packet::new_checked(payload) else {
            return Verdict::Drop(DropReason::MalformedArp);
        };
        let operation = arp.operation();
        if operation != Operation::REQUEST && operation != Operation::REPLY {
            return Verdict::Drop(DropReason::MalformedArp);
        }
        let sender_mac = arp.sender_hardware_addr();
        let sender = arp.sender_protocol_addr();
        let target = arp.target_protocol_addr();
        // RFC 1812 §3.3.2: never believe an ARP that maps an address to a group MAC.
        if is_multicast_mac(&sender_mac) {
            return Verdict::Drop(DropReason::MalformedArp);
        }
        if self.director.is_local(self.port, sender) {
            return Verdict::Drop(DropReason::ArpAddressConflict);
        }
        // A probe (RFC 5227 §2.1.1) has sender 0.0.0.0: answered, but nothing to learn.
        let learnable = is_host_address(sender);
        // "Merge": a known sender is refreshed whoever the packet is for (RFC 826; this is
        // also how a gratuitous ARP, RFC 5227 §3, updates a neighbour that moved).
        let merged = learnable && neighbours.refresh(sender, sender_mac, self.port, now);
        if !self.answers(target) {
            return Verdict::Drop(DropReason::ArpNotForUs);
        }
        if learnable && !merged {
            match neighbours.learn(sender, sender_mac, self.port, now) {
                Learned::New => counters.neighbours_learned += 1,
                Learned::Refreshed => {}
                Learned::TableFull => counters.neighbour_table_full += 1,
            }
        }
        if operation == Operation::REPLY {
            return Verdict::Consumed;
        }
        // "Swap hardware and protocol fields, putting the local hardware and protocol
        // addresses in the sender fields. Set the ar$op field to ares_op$REPLY."
        arp.set_target_hardware_addr(sender_mac);
        arp.set_target_protocol_addr(sender);
        arp.set_sender_hardware_addr(self.mac);
        arp.set_sender_protocol_addr(target);
        arp.set_operation(Operation::REPLY);
        let mut eth = ethernet::Frame::new_unchecked(eth_header);
        eth.set_dst_addr(sender_mac);
        eth.set_src_addr(self.mac);
        counters.arp_replies += 1;
        Verdict::Reply
    }

    /// IPv4 addressed to us: only ICMP echo is answered (RFC 792, RFC 1122 §3.2.2.6).
    fn ipv4(&self, frame: &mut [u8], counters: &mut Counters) -> Verdict {
        let Some((eth_header, payload)) = frame.split_at_mut_checked(ethernet::HEADER_LEN) else {
            return Verdict::Drop(DropReason::TruncatedEthernet);
        };
        let Ok(mut ip) = ipv4::Packet::new_checked(payload) else {
            return Verdict::Drop(DropReason::MalformedIpv4);
        };
        if !ip.verify_checksum() {
            return Verdict::Drop(DropReason::BadIpv4Checksum);
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if !self.answers(dst) {
            return Verdict::Drop(DropReason::Ipv4NotForUs);
        }
        if !is_host_address(src) {
            return Verdict::Drop(DropReason::MartianSource);
        }
        if ip.is_fragment() {
            return Verdict::Drop(DropReason::IpFragment);
        }
        if usize::from(ip.header_len()) != ipv4::HEADER_LEN {
            return Verdict::Drop(DropReason::Ipv4Options);
        }
        if ip.protocol() == Protocol::UDP
            && let Some(local) = self.director.local_udp_port
            && let [_, _, hi, lo, ..] = *ip.payload_mut()
            && u16::from_be_bytes([hi, lo]) == local
            && dst == self.own_addr
        {
            return Verdict::Local;
        }
        if ip.protocol() != Protocol::ICMP {
            return Verdict::Drop(DropReason::UnsupportedIpProtocol);
        }
        let Ok(mut icmp) = icmpv4::Packet::new_checked(ip.payload_mut()) else {
            return Verdict::Drop(DropReason::MalformedIcmp);
        };
        if !icmp.verify_checksum() {
            return Verdict::Drop(DropReason::BadIcmpChecksum);
        }
        if icmp.msg_type() != Message::ECHO_REQUEST {
            return Verdict::Drop(DropReason::UnhandledIcmp);
        }
        if icmp.code() != 0 {
            return Verdict::Drop(DropReason::MalformedIcmp);
        }

        // RFC 792 "Echo or Echo Reply Message": addresses reversed, type changed to 0,
        // checksum recomputed — here incrementally over the one changed word (RFC 1624).
        let old_word = icmp.type_code_word();
        icmp.set_msg_type(Message::ECHO_REPLY);
        let cksum = checksum::update16(icmp.checksum(), old_word, icmp.type_code_word());
        icmp.set_checksum(cksum);
        // The one case eqn. 3 gets the wrong zero: a reply that is all zeros (id 0, seq 0, no
        // data) needs 0xffff. Only a 0x0000 result needs the check.
        if cksum == 0 && !icmp.verify_checksum() {
            icmp.fill_checksum();
        }

        // Swapping the addresses leaves the header sum unchanged; the TTL word changes.
        let old_word = u16::from_be_bytes([ip.ttl(), ip.protocol().0]);
        ip.set_src_addr(dst);
        ip.set_dst_addr(src);
        ip.set_ttl(DEFAULT_TTL);
        let new_word = u16::from_be_bytes([DEFAULT_TTL, ip.protocol().0]);
        ip.set_checksum(checksum::update16(ip.checksum(), old_word, new_word));

        let mut eth = ethernet::Frame::new_unchecked(eth_header);
        let client_mac = eth.src_addr();
        eth.set_dst_addr(client_mac);
        eth.set_src_addr(self.mac);
        counters.icmp_echo_replies += 1;
        Verdict::Reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = [2, 0, 0, 0, 0, 1];

    fn port(addr: [u8; 4]) -> Port {
        Port {
            mac: MAC,
            addr: Ipv4Addr::from(addr),
            prefix_len: 24,
        }
    }

    fn vip(addr: [u8; 4], port: usize) -> Vip {
        Vip {
            addr: Ipv4Addr::from(addr),
            port,
        }
    }

    #[test]
    fn local_addresses_are_per_port() {
        let director = Director::new(
            vec![port([10, 0, 0, 1]), port([10, 1, 0, 1])],
            vec![vip([10, 0, 0, 100], 0), vip([10, 1, 0, 100], 1)],
        )
        .unwrap();
        assert!(director.is_local(0, Ipv4Addr::new(10, 0, 0, 1)));
        assert!(director.is_local(0, Ipv4Addr::new(10, 0, 0, 100)));
        assert!(!director.is_local(1, Ipv4Addr::new(10, 0, 0, 100)));
        assert!(director.is_local(1, Ipv4Addr::new(10, 1, 0, 100)));
        assert!(!director.is_local(0, Ipv4Addr::new(10, 0, 0, 2)));
        assert!(!director.is_local(2, Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(director.ports().len(), 2);
        assert_eq!(director.vips().len(), 2);
    }

    #[test]
    fn bad_configurations_are_refused_with_what_is_wrong() {
        let ok = port([10, 0, 0, 1]);
        assert_eq!(Director::new(vec![], vec![]), Err(ConfigError::NoPorts));
        assert_eq!(
            Director::new(
                vec![Port {
                    prefix_len: 33,
                    ..ok
                }],
                vec![]
            ),
            Err(ConfigError::PrefixLen {
                port: 0,
                prefix_len: 33
            })
        );
        for mac in [[1, 0, 0x5e, 0, 0, 1], [0; 6], [0xff; 6]] {
            assert_eq!(
                Director::new(vec![ok, Port { mac, ..ok }], vec![]),
                Err(ConfigError::PortMac { port: 1, mac })
            );
        }
        for addr in [
            [0, 0, 0, 0],
            [255, 255, 255, 255],
            [224, 0, 0, 5],
            [127, 0, 0, 1],
        ] {
            assert_eq!(
                Director::new(vec![ok], vec![vip(addr, 0)]),
                Err(ConfigError::NotAHostAddress {
                    port: 0,
                    addr: Ipv4Addr::from(addr)
                })
            );
        }
        assert_eq!(
            Director::new(vec![ok], vec![vip([10, 0, 0, 9], 1)]),
            Err(ConfigError::VipPort {
                addr: Ipv4Addr::new(10, 0, 0, 9),
                port: 1,
                ports: 1
            })
        );
        assert_eq!(
            Director::new(vec![ok], vec![vip([10, 0, 0, 1], 0)]),
            Err(ConfigError::Duplicate {
                port: 0,
                addr: Ipv4Addr::new(10, 0, 0, 1)
            })
        );
        // The same address on two ports is two different things to answer.
        assert!(Director::new(vec![ok, ok], vec![]).is_ok());
        assert_eq!(
            ConfigError::PortMac {
                port: 1,
                mac: [1, 0, 0x5e, 0, 0, 1]
            }
            .to_string(),
            "port 1: MAC address [01, 00, 5e, 00, 00, 01] is not a unicast address"
        );
    }

    #[test]
    fn a_standby_answers_arp_for_its_own_address_only() {
        let director = Arc::new(
            Director::new(vec![port([10, 0, 0, 1])], vec![vip([10, 0, 0, 100], 0)]).unwrap(),
        );
        let mut w = Worker::new(Arc::clone(&director), 16, u64::MAX);
        let asker = Worker::new(
            Arc::new(
                Director::new(
                    vec![Port {
                        mac: [2, 0, 0, 0, 0, 9],
                        ..port([10, 0, 0, 9])
                    }],
                    vec![],
                )
                .unwrap(),
            ),
            16,
            u64::MAX,
        );
        let ask = |target: [u8; 4]| {
            let mut f = [0u8; 60];
            asker
                .arp_request(0, Ipv4Addr::from(target), &mut f)
                .unwrap();
            f
        };
        let mut c = Counters::default();
        assert_eq!(
            w.process(0, &mut ask([10, 0, 0, 100]), 1, &mut c),
            Verdict::Reply
        );
        w.set_owns_vips(false);
        assert!(!w.owns_vips());
        assert_eq!(
            w.process(0, &mut ask([10, 0, 0, 100]), 2, &mut c),
            Verdict::Drop(DropReason::ArpNotForUs)
        );
        assert_eq!(
            w.process(0, &mut ask([10, 0, 0, 1]), 3, &mut c),
            Verdict::Reply
        );
        w.set_owns_vips(true);
        assert_eq!(
            w.process(0, &mut ask([10, 0, 0, 100]), 4, &mut c),
            Verdict::Reply
        );
    }

    #[test]
    fn gratuitous_arp_announces_the_address_at_the_port_mac() {
        let director = Arc::new(
            Director::new(vec![port([10, 0, 0, 1])], vec![vip([10, 0, 0, 100], 0)]).unwrap(),
        );
        let w = Worker::new(director, 16, u64::MAX);
        let mut f = [0u8; 60];
        assert_eq!(
            w.gratuitous_arp(0, Ipv4Addr::new(10, 0, 0, 100), &mut f),
            Some(60)
        );
        assert!(
            w.gratuitous_arp(1, Ipv4Addr::new(10, 0, 0, 100), &mut f)
                .is_none()
        );
        let eth = ethernet::Frame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.dst_addr(), BROADCAST_MAC);
        assert_eq!(eth.src_addr(), MAC);
        let a = arp::Packet::new_checked(&f[ethernet::HEADER_LEN..]).unwrap();
        assert_eq!(a.operation(), Operation::REQUEST);
        assert_eq!(a.sender_hardware_addr(), MAC);
        assert_eq!(a.sender_protocol_addr(), Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(a.target_protocol_addr(), Ipv4Addr::new(10, 0, 0, 100));
    }
}
