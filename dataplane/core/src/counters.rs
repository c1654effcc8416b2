//! Per-lcore packet counters and the reasons a packet is dropped.
//!
//! Each lcore owns one [`Counters`] and passes it to every call into the core; the glue sums
//! them with [`Counters::add`] for reporting. Plain `u64`s, no atomics: nothing is shared.
//!
//! Who counts what:
//! - the core counts `rx_packets`/`rx_bytes` for every frame handed to it, whatever the
//!   verdict, and every drop it decides;
//! - the DPDK glue counts `tx_packets`/`tx_bytes` for frames the NIC accepted, and
//!   [`DropReason::TxRingFull`] for frames it had to free because the tx ring was full.

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// Why a frame was dropped. Each reason has its own counter in [`Counters::drops`],
        /// indexed by `reason as usize`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            /// The number of reasons.
            pub const COUNT: usize = [$($name),*].len();

            /// Every reason, in counter order (`ALL[r as usize] == r`).
            pub const ALL: [Self; Self::COUNT] = [$(Self::$variant),*];

            /// The reason's snake_case name, for stats files and logs.
            pub const fn name(&self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// The frame is shorter than an Ethernet header.
    TruncatedEthernet = "truncated_ethernet",
    /// The destination MAC is neither the port's nor broadcast (other multicast included), or
    /// an IPv4 datagram came in a link-layer broadcast (RFC 1122 §3.3.6).
    NotForUsMac = "not_for_us_mac",
    /// The source MAC is a group address, which no station may send from (IEEE 802-2014 §8.2).
    InvalidSourceMac = "invalid_source_mac",
    /// Neither IPv4 nor ARP (IPv6, VLAN-tagged frames, ...).
    UnsupportedEthertype = "unsupported_ethertype",
    /// ARP that is truncated, not Ethernet/IPv4, has an unknown opcode, or a group sender MAC.
    MalformedArp = "malformed_arp",
    /// ARP whose target is not one of our addresses on that port (its sender may still have
    /// been refreshed, RFC 826's merge rule).
    ArpNotForUs = "arp_not_for_us",
    /// ARP whose sender claims one of our own addresses on that port: an address conflict.
    ArpAddressConflict = "arp_address_conflict",
    /// IPv4 header truncated, IHL < 5, total length inconsistent, or version ≠ 4.
    MalformedIpv4 = "malformed_ipv4",
    /// IPv4 header checksum does not verify (RFC 791 §3.1).
    BadIpv4Checksum = "bad_ipv4_checksum",
    /// The source address is one no reply may go to: unspecified, broadcast, multicast or
    /// loopback (RFC 1122 §3.2.1.3, RFC 1812 §5.3.7).
    MartianSource = "martian_source",
    /// A fragment addressed to the director: it does not reassemble. Its own traffic (ICMP echo)
    /// is small enough never to be fragmented in practice.
    IpFragment = "ip_fragment",
    /// IPv4 options on a datagram addressed to the director. A correct echo reply would have to
    /// update Record Route/Timestamp and reverse source routes (RFC 1122 §3.2.2.6, §3.2.1.8),
    /// so the director does not answer rather than answer wrongly.
    Ipv4Options = "ipv4_options",
    /// IPv4 not addressed to one of our addresses on that port.
    Ipv4NotForUs = "ipv4_not_for_us",
    /// Addressed to us, but neither ICMP nor anything else the director serves.
    UnsupportedIpProtocol = "unsupported_ip_protocol",
    /// ICMP shorter than its 8-byte header, or an echo request with a non-zero code.
    MalformedIcmp = "malformed_icmp",
    /// ICMP checksum does not verify over the message (RFC 792).
    BadIcmpChecksum = "bad_icmp_checksum",
    /// ICMP other than echo request (replies, errors, ...) addressed to the director.
    UnhandledIcmp = "unhandled_icmp",
    /// TTL would reach zero when forwarding (RFC 1812 §5.3.1). Reserved: nothing is
    /// forwarded yet.
    TtlExceeded = "ttl_exceeded",
    /// The glue called the core with a port index the configuration does not have.
    UnknownPort = "unknown_port",
    /// The tx ring was full and the frame was freed. Counted by the DPDK glue, not the core.
    TxRingFull = "tx_ring_full",
    /// TCP or UDP to a VIP port that has no virtual service: rejected (seed 002: "every other
    /// port of the VIP is rejected").
    NoService = "no_service",
    /// A TCP segment other than a SYN for a connection the director does not know. Only a SYN
    /// starts a TCP connection (IPVS without `sloppy_tcp`).
    TcpNoConnection = "tcp_no_connection",
    /// The connection table is full: the new connection is refused (see `conn`).
    ConnTableFull = "conn_table_full",
    /// A new connection's keys collide with another entry's (two NAT connections would share
    /// a reply key).
    ConnKeyConflict = "conn_key_conflict",
    /// The scheduler found no available real server (all quiesced, overloaded or none).
    NoDestination = "no_destination",
    /// The first packet of a new connection reached a standby director (one that does not
    /// hold its VIPs, [`Worker::set_owns_vips`](crate::director::Worker::set_owns_vips)):
    /// only the active schedules, so the connection is not created here (the client's
    /// retransmission reaches the active once its gratuitous ARPs have landed). Packets of
    /// connections the standby holds, synced from the active, are still forwarded, to the
    /// same real server.
    Standby = "standby",
    /// No port's subnet and no route leads to the next hop.
    NoRoute = "no_route",
    /// TCP header truncated or data offset below 5 (RFC 9293 §3.1).
    MalformedTcp = "malformed_tcp",
    /// UDP header truncated, length below 8 or beyond the datagram (RFC 768).
    MalformedUdp = "malformed_udp",
    /// An ICMP error quoting no usable TCP/UDP datagram.
    IcmpQuoteUnusable = "icmp_quote_unusable",
    /// Too big for the tunnel and no "fragmentation needed" may be sent (DF clear, or an
    /// ICMP error itself).
    TunMtuExceeded = "tun_mtu_exceeded",
    /// An ICMP error about a datagram no ICMP error may be sent about (RFC 1812 §4.3.2.7).
    IcmpErrorSuppressed = "icmp_error_suppressed",
    /// The packet buffer had no room for a transform (no headroom for IPIP): a glue bug.
    FwdBufferTooSmall = "fwd_buffer_too_small",
    /// The next hop's MAC did not resolve in time, or too many packets were waiting for
    /// resolution. Counted by the glue.
    NeighbourUnresolved = "neighbour_unresolved",
    /// The ring to the lcore that owns the connection was full. Counted by the glue.
    RedirectRingFull = "redirect_ring_full",
    /// A datagram to the heartbeat port ([`Verdict::Local`](crate::director::Verdict::Local))
    /// that is not the peer dataplane's heartbeat: another sender, a bad UDP checksum or
    /// length, no heartbeat magic. Counted by the glue.
    BadHeartbeat = "bad_heartbeat",
}

/// One lcore's counters. `tx_*` and [`DropReason::TxRingFull`] belong to the glue; the rest
/// are counted by the core (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Frames handed to the core, whatever became of them.
    pub rx_packets: u64,
    /// Bytes of those frames (Ethernet header included, FCS excluded).
    pub rx_bytes: u64,
    /// Frames the NIC accepted for transmission (counted by the glue).
    pub tx_packets: u64,
    /// Bytes of those frames (counted by the glue).
    pub tx_bytes: u64,
    /// ARP replies produced for our addresses.
    pub arp_replies: u64,
    /// ICMP echo replies produced.
    pub icmp_echo_replies: u64,
    /// Neighbours added to the table (refreshes of known ones are not counted).
    pub neighbours_learned: u64,
    /// Frames forwarded to a real server or a client (NAT, TUN, DR, translated ICMP errors).
    pub forwarded: u64,
    /// Frames handed to the lcore that owns their connection.
    pub redirected: u64,
    /// ICMP "fragmentation needed" sent back to clients for TUN (RFC 1191).
    pub icmp_frag_needed: u64,
    /// Neighbours not added because the table was full of live entries. The frame itself is
    /// still handled (an ARP request for us is still answered).
    pub neighbour_table_full: u64,
    /// Dropped frames, indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            arp_replies: 0,
            icmp_echo_replies: 0,
            neighbours_learned: 0,
            neighbour_table_full: 0,
            forwarded: 0,
            redirected: 0,
            icmp_frag_needed: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl Counters {
    /// Adds another lcore's counters to these.
    pub fn add(&mut self, other: &Self) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.arp_replies += other.arp_replies;
        self.icmp_echo_replies += other.icmp_echo_replies;
        self.neighbours_learned += other.neighbours_learned;
        self.neighbour_table_full += other.neighbour_table_full;
        self.forwarded += other.forwarded;
        self.redirected += other.redirected;
        self.icmp_frag_needed += other.icmp_frag_needed;
        for (mine, theirs) in self.drops.iter_mut().zip(other.drops) {
            *mine += theirs;
        }
    }

    /// Counts one drop.
    #[inline]
    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// The drops counted for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// All drops, whatever the reason.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_counter_order_and_names_are_unique_snake_case() {
        assert_eq!(DropReason::ALL.len(), DropReason::COUNT);
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
            let name = reason.name();
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
            assert_eq!(
                DropReason::ALL.iter().filter(|r| r.name() == name).count(),
                1
            );
        }
        assert_eq!(DropReason::TruncatedEthernet.name(), "truncated_ethernet");
        assert_eq!(DropReason::TxRingFull.name(), "tx_ring_full");
    }

    #[test]
    fn the_required_reasons_exist() {
        let names: Vec<_> = DropReason::ALL.iter().map(DropReason::name).collect();
        for required in [
            "truncated_ethernet",
            "not_for_us_mac",
            "unsupported_ethertype",
            "malformed_arp",
            "arp_not_for_us",
            "malformed_ipv4",
            "bad_ipv4_checksum",
            "ip_fragment",
            "ipv4_not_for_us",
            "unsupported_ip_protocol",
            "malformed_icmp",
            "bad_icmp_checksum",
            "unhandled_icmp",
            "ttl_exceeded",
            "tx_ring_full",
        ] {
            assert!(names.contains(&required), "{required}");
        }
    }

    #[test]
    fn add_sums_every_field() {
        let mut a = Counters {
            rx_packets: 1,
            rx_bytes: 2,
            tx_packets: 3,
            tx_bytes: 4,
            arp_replies: 5,
            icmp_echo_replies: 6,
            neighbours_learned: 7,
            neighbour_table_full: 8,
            forwarded: 9,
            redirected: 10,
            icmp_frag_needed: 11,
            drops: [1; DropReason::COUNT],
        };
        let mut b = a.clone();
        b.count_drop(DropReason::IpFragment);
        a.add(&b);
        assert_eq!(a.rx_packets, 2);
        assert_eq!(a.rx_bytes, 4);
        assert_eq!(a.tx_packets, 6);
        assert_eq!(a.tx_bytes, 8);
        assert_eq!(a.arp_replies, 10);
        assert_eq!(a.icmp_echo_replies, 12);
        assert_eq!(a.neighbours_learned, 14);
        assert_eq!(a.neighbour_table_full, 16);
        assert_eq!(
            (a.forwarded, a.redirected, a.icmp_frag_needed),
            (18, 20, 22)
        );
        assert_eq!(a.dropped(DropReason::IpFragment), 3);
        assert_eq!(a.dropped(DropReason::TxRingFull), 2);
        assert_eq!(a.total_drops(), 2 * DropReason::COUNT as u64 + 1);
    }
}
