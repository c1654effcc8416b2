//! [`ConnTable`]: the slab, the index, the timer wheel and the per-destination counts.

use std::time::Duration;

use crate::lb::{DestId, Endpoint, Flow, ForwardMethod, Protocol, ServiceId};

use super::event::{
    ConnEvent, ConnEventKind, ConnEventSink, ConnFlags, ConnRecord, DeleteReason, DiscardEvents,
};
use super::hash::{KeyHasher, key_words};
use super::index::Index;
use super::state::{
    ActivePolicy, ConnState, Direction, TcpDir, TcpFlags, Timeouts, duration_ms, keeps_established,
    tcp_next_state,
};

/// "No entry" in the slab's links and the wheel's heads.
const NIL: u32 = u32::MAX;
const NS_PER_MS: u64 = 1_000_000;

/// The largest capacity: slab indices keep one bit free in the index's `u32`s.
pub const MAX_CAPACITY: usize = 1 << 30;
/// The finest timer tick. Per-entry deadlines are filed as 32-bit tick numbers, and with 10 ms
/// ticks the longest timeout (`u32::MAX` ms) stays far inside their wrap-around.
pub const MIN_TICK: Duration = Duration::from_millis(10);
/// The most wheel slots.
pub const MAX_WHEEL_SLOTS: usize = 1 << 24;

/// How a [`ConnTable`] is sized and tuned. Everything is allocated by [`ConnTable::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// The most entries (connections and templates) the table holds; 1..=[`MAX_CAPACITY`].
    pub capacity: usize,
    /// Destinations are `DestId(0)..DestId(max_dests)`; the size of the per-destination
    /// count array.
    pub max_dests: usize,
    /// Idle timeouts per state.
    pub timeouts: Timeouts,
    /// Which TCP states count as active.
    pub active_policy: ActivePolicy,
    /// The timer wheel's tick (expiry granularity); at least [`MIN_TICK`]. Default 100 ms.
    pub tick: Duration,
    /// The timer wheel's slots, a power of two up to [`MAX_WHEEL_SLOTS`]. Default 16384,
    /// which with 100 ms ticks spans 27 minutes, longer than the default ESTABLISHED timeout,
    /// so most entries are filed once and visited once.
    pub wheel_slots: usize,
    /// Seed of the index's keyed hash. The glue should pass a random value per table.
    pub hash_seed: u64,
    /// When the table is full, how many wheel entries one create may examine to reclaim
    /// entries already past their deadline before refusing; 0 never reclaims. Default 8.
    pub reclaim_budget: usize,
    /// Added to the remaining time of entries installed from the peer, so the peer's refresh
    /// (sent when its own deadline passes, see [`ConnEventKind::Refreshed`]) arrives before
    /// the copy here expires. Default 5 s.
    pub peer_grace: Duration,
}

impl ConnConfig {
    /// A configuration with the defaults for everything but the sizes.
    pub fn new(capacity: usize, max_dests: usize) -> Self {
        ConnConfig {
            capacity,
            max_dests,
            timeouts: Timeouts::default(),
            active_policy: ActivePolicy::default(),
            tick: Duration::from_millis(100),
            wheel_slots: 16384,
            hash_seed: 0x7a4d_656d_2d63_6f6e,
            reclaim_budget: 8,
            peer_grace: Duration::from_secs(5),
        }
    }
}

/// What is wrong with a [`ConnConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnConfigError {
    /// Capacity 0 or over [`MAX_CAPACITY`].
    #[error("connection table capacity {0} is outside 1..={MAX_CAPACITY}")]
    Capacity(usize),
    /// More destinations than a `DestId` can name.
    #[error("max_dests {0} does not fit a DestId")]
    MaxDests(usize),
    /// Tick shorter than [`MIN_TICK`].
    #[error("timer tick {0:?} is shorter than {MIN_TICK:?}")]
    Tick(Duration),
    /// Slot count not a power of two in 1..=[`MAX_WHEEL_SLOTS`].
    #[error("timer wheel slots {0} is not a power of two in 1..={MAX_WHEEL_SLOTS}")]
    WheelSlots(usize),
    /// A timeout longer than `u32::MAX` milliseconds.
    #[error("the {0} timeout is longer than 49 days")]
    Timeout(ConnState),
}

/// Connections and templates per destination, as `ipvsadm -L` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DestCounts {
    /// `ActiveConn`: TCP connections in an active state (see [`ActivePolicy`]).
    pub active: u32,
    /// `InActConn`: every other connection (all UDP ones included).
    pub inactive: u32,
    /// Persistence templates pointing at the destination (`persistconns`).
    pub persistent: u32,
}

/// Per-table counters. Plain `u64`, one table per lcore; the glue sums them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ConnStats {
    /// Entries created by local packets ([`ConnTable::create`], [`ConnTable::create_template`]).
    pub created: u64,
    /// Entries created or updated from the peer ([`ConnTable::install`]).
    pub installed: u64,
    /// Entries removed on the peer's word ([`ConnTable::uninstall`]).
    pub uninstalled: u64,
    /// Installs refused (table full, key held by another entry).
    pub install_refused: u64,
    /// TCP state changes by local packets.
    pub state_changes: u64,
    /// Entries whose timer ran out.
    pub expired: u64,
    /// Of `expired`, those reclaimed by a create that found the table full.
    pub reclaimed: u64,
    /// Entries removed by [`ConnTable::remove`].
    pub removed: u64,
    /// Entries flushed by [`ConnTable::flush_dest`], [`ConnTable::remove_where`],
    /// [`ConnTable::clear`].
    pub flushed: u64,
    /// New connections refused because the table was full (their packet is dropped).
    pub full_drops: u64,
    /// New connections refused because a key was held by another entry.
    pub key_conflicts: u64,
    /// New connections or installs naming a destination outside `max_dests`.
    pub bad_dest: u64,
    /// Entries re-filed in the wheel because traffic pushed their deadline back.
    pub refiled: u64,
    /// Events the sink took.
    pub events: u64,
    /// Events the sink refused (its queue was full).
    pub event_overflow: u64,
}

/// Bytes the table holds, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryUsage {
    /// The slab of entries.
    pub entries: usize,
    /// The index (buckets and control bytes).
    pub index: usize,
    /// The timer wheel's list heads.
    pub wheel: usize,
    /// The per-destination counts.
    pub dests: usize,
}

impl MemoryUsage {
    /// All of it.
    pub fn total(&self) -> usize {
        self.entries + self.index + self.wheel + self.dests
    }
}

/// A connection key's hash, computed once per frame by the first prefetch pass over a burst
/// and reused by the second pass and the lookup ([`ConnTable::hint`]), and the index slot the
/// second pass found for it ([`ConnTable::prefetch_entry_hinted`]). A lookup uses them only
/// if they are those of the very key looked up (the packed key is kept and compared), and the
/// slot only if the live entry it names has that key, indexed: a wrong or stale hint costs a
/// hash computation and a bucket scan, never a wrong answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    words: [u64; 2],
    hash: u64,
    /// The first index value (`slab index << 1 | reply`) under the key's tag in its home
    /// bucket, or `index::EMPTY`.
    slot: u32,
}

impl Hint {
    /// No hint: the lookup hashes the key itself.
    pub const NONE: Hint = Hint {
        words: [0; 2],
        hash: 0,
        slot: crate::conn::index::EMPTY,
    };

    /// Whether this is a hint (no TCP/UDP key packs to [`Hint::NONE`]'s words).
    #[inline]
    pub fn is_some(&self) -> bool {
        self.words[1] != 0
    }

    /// Whether the second prefetch pass found an index slot for the key (else the fast path
    /// has nothing to look at).
    #[inline]
    pub(crate) fn has_slot(&self) -> bool {
        self.slot != crate::conn::index::EMPTY
    }
}

impl Default for Hint {
    fn default() -> Self {
        Hint::NONE
    }
}

/// A handle on a live entry: its slab index. Valid until the entry is removed (a later entry
/// may then reuse the slot); every method taking one checks the slot is in use and never
/// panics on a stale handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u32);

/// What the scheduler decided for a new connection (or template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NewConn {
    /// TCP or UDP.
    pub proto: Protocol,
    /// The client's endpoint (source of the first packet). Templates use port 0 by the IPVS
    /// convention, which keeps their keys apart from connections'.
    pub client: Endpoint,
    /// The virtual service endpoint (destination of the first packet).
    pub vip: Endpoint,
    /// The real server's endpoint.
    pub real: Endpoint,
    /// NAT, TUN or DR.
    pub method: ForwardMethod,
    /// The chosen destination.
    pub dest: DestId,
    /// The virtual service.
    pub service: ServiceId,
}

/// Why [`ConnTable::create`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// The client→VIP key is already a connection: use it (or remove it first).
    #[error("the connection already exists")]
    Exists(ConnId),
    /// One of the keys is held by another entry (e.g. two NAT connections would share a reply
    /// key): counted as `key_conflicts`.
    #[error("a key of the new connection is held by another entry")]
    KeyTaken,
    /// The table is full of live entries: counted as `full_drops`.
    #[error("the connection table is full")]
    Full,
    /// The destination is outside `max_dests`: counted as `bad_dest`.
    #[error("destination {0:?} is outside the configured destinations")]
    BadDest(DestId),
}

/// Why [`ConnTable::install`] refused a peer's record. Counted as `install_refused` (and
/// `bad_dest` for [`InstallError::BadDest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// A key of the record is held by a different entry here.
    #[error("a key of the record is held by another entry")]
    KeyTaken,
    /// The table is full of live entries.
    #[error("the connection table is full")]
    Full,
    /// The destination is outside `max_dests`.
    #[error("destination {0:?} is outside the configured destinations")]
    BadDest(DestId),
    /// The state does not belong to the protocol (UDP must be `UDP`, TCP a TCP state).
    #[error("state {state} is not a {proto:?} state")]
    BadState {
        /// The record's protocol.
        proto: Protocol,
        /// The record's state.
        state: ConnState,
    },
}

/// One connection (or persistence template) in the table: 58 bytes of fields, aligned to a
/// 64-byte cache line so that a lookup, its update and the rewrite touch one line, not two
/// (7 in 8 entries straddled a line boundary when packed at 56 bytes).
#[derive(Debug, Clone)]
#[repr(align(64))]
pub struct Conn {
    /// `now` (ns) after which the entry is expired.
    deadline: u64,
    dest: DestId,
    service: ServiceId,
    /// The idle timeout the entry is re-armed with, in ms.
    timeout_ms: u32,
    /// The wheel tick (low 32 bits) whose slot list holds the entry.
    filed_tick: u32,
    /// Wheel list links; `next` doubles as the free-list link.
    prev: u32,
    next: u32,
    /// The table's mark epoch when the entry was made or last upserted by the peer: stale
    /// when it differs from the table's (see [`ConnTable::mark_stale`]).
    epoch: u32,
    client: Endpoint,
    vip: Endpoint,
    real: Endpoint,
    proto: Protocol,
    method: ForwardMethod,
    state: ConnState,
    flags: ConnFlags,
}

impl Conn {
    const VACANT: Conn = Conn {
        deadline: 0,
        dest: DestId(0),
        service: ServiceId(0),
        timeout_ms: 0,
        filed_tick: 0,
        prev: NIL,
        next: NIL,
        epoch: 0,
        client: Endpoint::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
        vip: Endpoint::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
        real: Endpoint::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
        proto: Protocol::Tcp,
        method: ForwardMethod::Nat,
        state: ConnState::None,
        flags: ConnFlags::EMPTY,
    };

    /// TCP or UDP.
    pub fn proto(&self) -> Protocol {
        self.proto
    }
    /// The client's endpoint.
    pub fn client(&self) -> Endpoint {
        self.client
    }
    /// The virtual service endpoint.
    pub fn vip(&self) -> Endpoint {
        self.vip
    }
    /// The real server's endpoint.
    pub fn real(&self) -> Endpoint {
        self.real
    }
    /// The destination index.
    pub fn dest(&self) -> DestId {
        self.dest
    }
    /// The virtual service index.
    pub fn service(&self) -> ServiceId {
        self.service
    }
    /// NAT, TUN or DR.
    pub fn method(&self) -> ForwardMethod {
        self.method
    }
    /// The current state.
    pub fn state(&self) -> ConnState {
        self.state
    }
    /// The public flags.
    pub fn flags(&self) -> ConnFlags {
        self.flags.public()
    }
    /// A persistence template?
    pub fn is_template(&self) -> bool {
        self.flags.contains(ConnFlags::TEMPLATE)
    }
    /// Counted active?
    pub fn is_active(&self) -> bool {
        self.flags.contains(ConnFlags::ACTIVE)
    }
    /// The instant (ns, the caller's clock) after which it expires.
    pub fn deadline(&self) -> u64 {
        self.deadline
    }
    /// The idle timeout it is re-armed with on each packet.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }
    /// The client→VIP key: how client packets find it.
    pub fn input_flow(&self) -> Flow {
        Flow {
            proto: self.proto,
            src: self.client,
            dst: self.vip,
        }
    }
    /// The real server→client key: how NAT replies find it.
    pub fn reply_flow(&self) -> Flow {
        Flow {
            proto: self.proto,
            src: self.real,
            dst: self.client,
        }
    }

    fn in_use(&self) -> bool {
        self.flags.contains(ConnFlags::IN_USE)
    }

    /// Whether the reply key is indexed: NAT connections only (TUN/DR replies bypass the
    /// director; templates see no packets of their own).
    fn indexes_reply(&self) -> bool {
        self.method == ForwardMethod::Nat && !self.is_template()
    }

    /// Whether a packet with `tcp_flags` leaves this connection's state as it is, whatever
    /// its direction and table, with no event: an ESTABLISHED TCP connection's segment that
    /// keeps it ESTABLISHED in the INPUT, OUTPUT and INPUT-ONLY tables alike (ACK alone, or a
    /// SYN: [`keeps_established`]), or any datagram of a UDP connection in its one state.
    /// What [`ConnTable::update`] does then is [`ConnTable::refresh_steady`].
    #[inline(always)]
    pub(crate) fn steady(&self, tcp_flags: TcpFlags) -> bool {
        match self.proto {
            Protocol::Tcp => self.state == ConnState::Established && keeps_established(tcp_flags),
            Protocol::Udp => self.state == ConnState::Udp,
        }
    }

    /// Key `reply` (0: input, 1: reply) as (proto, src, dst).
    fn key(&self, reply: bool) -> (Protocol, Endpoint, Endpoint) {
        if reply {
            (self.proto, self.real, self.client)
        } else {
            (self.proto, self.client, self.vip)
        }
    }
}

/// The low 32 bits (wheel tick numbers wrap; see [`MIN_TICK`]).
#[expect(
    clippy::cast_possible_truncation,
    reason = "tick numbers are kept modulo 2^32 on purpose"
)]
const fn low32(x: u64) -> u32 {
    x as u32
}

/// Whether tick `a` comes before tick `b`, modulo 2^32.
const fn tick_before(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) > u32::MAX / 2
}

/// A sweep step's slots for a lcore that spreads a standby's sweep over its ticks
/// ([`ConnTable::sweep_stale_step`])...
pub const SWEEP_STEP_SLOTS: usize = 32_768;
/// ...and its removals (on the development VM 0.65 ms a step on average, 1.5 ms at most, when
/// every entry goes), so that the lcore goes on forwarding and relaying heartbeats while a
/// table of millions is swept.
pub const SWEEP_STEP_REMOVALS: usize = 4_096;

/// Index value for key `reply` of slab entry `i`.
const fn tag(i: u32, reply: bool) -> u32 {
    i << 1 | reply as u32
}

/// A bounded, preallocated connection table for one lcore. See the [module docs](super).
#[derive(Debug)]
pub struct ConnTable {
    conns: Vec<Conn>,
    /// Slab index << 1 | (1 for the reply key), hashed by the key stored in the entry.
    index: Index,
    hasher: KeyHasher,
    free: u32,
    len: u32,

    /// Wheel: one list head per slot; slot of tick t is `t & slot_mask`.
    heads: Vec<u32>,
    slot_mask: u32,
    tick_ns: u64,
    /// The next tick whose slot `expire` processes (absolute tick number).
    next_tick: u64,
    /// Whether `next_tick` was set from a caller's clock yet.
    clock_started: bool,
    /// `expire` stopped in the middle of `next_tick`'s slot; `cursor` is the next entry to
    /// examine there.
    mid_slot: bool,
    cursor: u32,

    dest_counts: Vec<DestCounts>,
    timeouts: Timeouts,
    timeouts_ms: [u32; ConnState::COUNT],
    active_policy: ActivePolicy,
    reclaim_budget: usize,
    peer_grace_ns: u64,
    next_seq: u64,
    /// The mark epoch (see [`mark_stale`](Self::mark_stale)).
    epoch: u32,
    stats: ConnStats,
}

impl ConnTable {
    /// A table with everything allocated for `config.capacity` entries.
    ///
    /// The index holds up to two keys per entry and is sized so that its used part never
    /// exceeds half its capacity; it never grows, so nothing is ever allocated again.
    pub fn new(config: ConnConfig) -> Result<ConnTable, ConnConfigError> {
        let ConnConfig {
            capacity,
            max_dests,
            timeouts,
            active_policy,
            tick,
            wheel_slots,
            hash_seed,
            reclaim_budget,
            peer_grace,
        } = config;
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(ConnConfigError::Capacity(capacity));
        }
        if u32::try_from(max_dests).is_err() {
            return Err(ConnConfigError::MaxDests(max_dests));
        }
        if tick < MIN_TICK {
            return Err(ConnConfigError::Tick(tick));
        }
        if wheel_slots == 0 || !wheel_slots.is_power_of_two() || wheel_slots > MAX_WHEEL_SLOTS {
            return Err(ConnConfigError::WheelSlots(wheel_slots));
        }
        if let Some(state) = timeouts.too_long() {
            return Err(ConnConfigError::Timeout(state));
        }
        let slot_mask =
            u32::try_from(wheel_slots - 1).map_err(|_| ConnConfigError::WheelSlots(wheel_slots))?;
        let tick_ns = u64::try_from(tick.as_nanos()).unwrap_or(u64::MAX);

        let mut conns = Vec::with_capacity(capacity);
        conns.resize(capacity, Conn::VACANT);
        // Free list in slab order: new entries fill the slab from the front.
        for (i, c) in conns.iter_mut().enumerate() {
            c.next = u32::try_from(i + 1)
                .ok()
                .filter(|&n| (n as usize) < capacity)
                .unwrap_or(NIL);
        }
        Ok(ConnTable {
            conns,
            index: Index::with_max_values(2 * capacity),
            hasher: KeyHasher::new(hash_seed),
            free: 0,
            len: 0,
            heads: vec![NIL; wheel_slots],
            slot_mask,
            tick_ns,
            next_tick: 0,
            clock_started: false,
            mid_slot: false,
            cursor: NIL,
            dest_counts: vec![DestCounts::default(); max_dests],
            timeouts,
            timeouts_ms: timeouts.millis(),
            active_policy,
            reclaim_budget,
            peer_grace_ns: u64::try_from(peer_grace.as_nanos()).unwrap_or(u64::MAX),
            next_seq: 1,
            epoch: 0,
            stats: ConnStats::default(),
        })
    }

    // ---- queries ------------------------------------------------------------------------

    /// Live entries.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// No live entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most entries it holds.
    pub fn capacity(&self) -> usize {
        self.conns.len()
    }

    /// The configured timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Replaces the timeouts (`ipvsadm --set`): they apply from each entry's next packet or
    /// state change on; deadlines already armed are left as they are. Refuses (changing
    /// nothing) a timeout longer than `u32::MAX` milliseconds.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) -> Result<(), ConnConfigError> {
        if let Some(state) = timeouts.too_long() {
            return Err(ConnConfigError::Timeout(state));
        }
        self.timeouts = timeouts;
        self.timeouts_ms = timeouts.millis();
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> &ConnStats {
        &self.stats
    }

    /// Active/inactive/persistent counts, indexed by `DestId.0`, for the glue to publish to
    /// the schedulers and the listing (sum over lcores).
    pub fn dest_counts(&self) -> &[DestCounts] {
        &self.dest_counts
    }

    /// The sequence number the next event will carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// How much longer than its record says an installed entry lives (the standby's grace,
    /// [`ConnConfig::peer_grace`]), in nanoseconds.
    pub fn peer_grace_ns(&self) -> u64 {
        self.peer_grace_ns
    }

    /// Numbers a change kept outside this table — a persistence template of the scheduler's
    /// `PersistenceTable`, a lblc/lblcr locality entry — in this table's event sequence, so
    /// that the lcore's peer sees one gapless sequence for everything it streams: takes the
    /// next number, calls `emit` with it (which returns whether its bounded sink took the
    /// change) and counts the outcome like the table's own events (`events` or
    /// `event_overflow`). The number is consumed either way, so a dropped change shows as a
    /// gap. Never allocates.
    pub fn emit_external(&mut self, emit: impl FnOnce(u64) -> bool) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if emit(seq) {
            self.stats.events += 1;
        } else {
            self.stats.event_overflow += 1;
        }
        seq
    }

    /// Bytes held, by part.
    pub fn memory(&self) -> MemoryUsage {
        MemoryUsage {
            entries: self.conns.capacity() * size_of::<Conn>(),
            index: self.index.allocation_size(),
            wheel: self.heads.capacity() * size_of::<u32>(),
            dests: self.dest_counts.capacity() * size_of::<DestCounts>(),
        }
    }

    /// Where the two large allocations lie, the slab and the index, as (start, bytes): for the
    /// glue to ask the kernel for huge pages (lookups touch both at random). Nothing is read or
    /// written through these pointers here.
    pub fn memory_regions(&self) -> [(*const u8, usize); 2] {
        [
            (
                self.conns.as_ptr().cast(),
                self.conns.capacity() * size_of::<Conn>(),
            ),
            self.index.region(),
        ]
    }

    /// The entry a packet of `flow` belongs to, and which of its keys matched:
    /// [`Direction::Input`] for client→VIP, [`Direction::Output`] for a NAT reply
    /// (real server→client). Templates are found by their own key (client port 0).
    #[inline]
    pub fn lookup(&self, flow: &Flow) -> Option<(ConnId, Direction)> {
        self.lookup_hinted(flow, Hint::NONE)
    }

    /// [`lookup`](Self::lookup), with the key's hash taken from `hint` if it is `flow`'s
    /// (computed by [`hint`](Self::hint) in a prefetch pass); otherwise computed again.
    #[inline]
    pub fn lookup_hinted(&self, flow: &Flow, hint: Hint) -> Option<(ConnId, Direction)> {
        let words = key_words(flow.proto, flow.src, flow.dst);
        let h = if hint.words == words {
            // The slot the second prefetch pass found, if its entry is still this key's: the
            // index holds each key once, so a live entry with the key indexed is the answer.
            if let Some(found) = self.found_at(hint.slot, flow) {
                return Some(found);
            }
            hint.hash
        } else {
            self.hasher.hash_words(words)
        };
        let conns = &self.conns;
        self.index
            .find(h, |t| {
                let c = &conns[(t >> 1) as usize];
                c.key(t & 1 == 1) == (flow.proto, flow.src, flow.dst)
            })
            .map(|t| {
                let dir = if t & 1 == 1 {
                    Direction::Output
                } else {
                    Direction::Input
                };
                (ConnId(t >> 1), dir)
            })
    }

    /// The entry the second prefetch pass found for this frame's key, if it is `flow`'s: what
    /// [`lookup_hinted`](Self::lookup_hinted) answers when it answers without a bucket scan,
    /// whatever the hint's words (a live entry holding and indexing `flow`'s key is the one
    /// entry of that key). `None` when the hint has no slot or the slot no longer fits.
    #[inline(always)]
    pub(crate) fn at_hint(&self, hint: &Hint, flow: &Flow) -> Option<(ConnId, Direction)> {
        self.found_at(hint.slot, flow)
    }

    /// What [`lookup_hinted`](Self::lookup_hinted) answers if index value `t` is where
    /// `flow`'s key is: the entry is live, has that key, and indexes it. `None` otherwise.
    #[inline(always)]
    fn found_at(&self, t: u32, flow: &Flow) -> Option<(ConnId, Direction)> {
        let c = self.conns.get((t >> 1) as usize)?;
        let reply = t & 1 == 1;
        (c.in_use()
            && (!reply || c.indexes_reply())
            && c.key(reply) == (flow.proto, flow.src, flow.dst))
            .then(|| {
                let dir = if reply {
                    Direction::Output
                } else {
                    Direction::Input
                };
                (ConnId(t >> 1), dir)
            })
    }

    /// The hint of `flow`'s key (its hash), for [`prefetch_hinted`](Self::prefetch_hinted),
    /// [`prefetch_entry_hinted`](Self::prefetch_entry_hinted) and
    /// [`lookup_hinted`](Self::lookup_hinted): the key is hashed once per frame of a burst.
    #[inline]
    pub fn hint(&self, flow: &Flow) -> Hint {
        self.hint_words(key_words(flow.proto, flow.src, flow.dst))
    }

    /// [`hint`](Self::hint) of a key already packed as [`key_words`] packs it (the glue's
    /// prefetch pass reads it from the frame in two loads).
    #[inline]
    pub(crate) fn hint_words(&self, words: [u64; 2]) -> Hint {
        Hint {
            words,
            hash: self.hasher.hash_words(words),
            slot: crate::conn::index::EMPTY,
        }
    }

    /// First stage of a burst of lookups: starts loading the index bucket of `hint`'s key
    /// with `prefetch` (inlined where the caller's is; the glue passes
    /// `tandem_dpdk::prefetch`). Call it for every frame of a burst, then
    /// [`prefetch_entry_hinted`](Self::prefetch_entry_hinted) for every frame, then look them
    /// up: the cache misses of the burst overlap instead of following one another. Changes
    /// nothing; nothing for [`Hint::NONE`].
    #[inline]
    pub fn prefetch_hinted(&self, hint: Hint, prefetch: impl Fn(*const u8)) {
        if hint.is_some() {
            prefetch(std::ptr::from_ref(self.index.bucket(hint.hash)).cast());
        }
    }

    /// Second stage (see [`prefetch_hinted`](Self::prefetch_hinted)): reads the key's home
    /// bucket (loaded by the first stage by now) and starts loading the slab entry its first
    /// matching tag names; records in `hint` the slot it found, which the lookup then checks
    /// before any bucket scan.
    #[inline]
    pub fn prefetch_entry_hinted(&self, hint: &mut Hint, prefetch: impl Fn(*const u8)) {
        if !hint.is_some() {
            return;
        }
        let Some(t) = self.index.first_candidate(hint.hash) else {
            return;
        };
        hint.slot = t;
        if let Some(c) = self.conns.get((t >> 1) as usize) {
            prefetch(std::ptr::from_ref(c).cast::<u8>());
        }
    }

    /// [`prefetch_hinted`](Self::prefetch_hinted) with a plain load whose value is ignored:
    /// the core cannot emit a prefetch instruction (it forbids `unsafe`), so its benchmark
    /// warms the lines this way; the dataplane passes the real instruction.
    #[inline]
    pub fn warm(&self, hint: Hint) {
        if hint.is_some() {
            std::hint::black_box(self.index.bucket(hint.hash).vals[0]);
        }
    }

    /// [`prefetch_entry_hinted`](Self::prefetch_entry_hinted) with a plain load (see
    /// [`warm`](Self::warm)): reads the home bucket and the slab entry its first matching tag
    /// names.
    #[inline]
    pub fn warm_entry(&self, hint: Hint) {
        if !hint.is_some() {
            return;
        }
        let Some(t) = self.index.first_candidate(hint.hash) else {
            return;
        };
        if let Some(c) = self.conns.get((t >> 1) as usize) {
            // An entry is one cache line.
            std::hint::black_box((c.client, c.deadline, c.flags));
        }
    }

    /// The live entry `id` names.
    #[inline]
    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id.0 as usize).filter(|c| c.in_use())
    }

    /// Every live entry, in slab order.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn)> {
        self.conns
            .iter()
            .zip(0u32..)
            .filter(|(c, _)| c.in_use())
            .map(|(c, i)| (ConnId(i), c))
    }

    /// The record of entry `id` as of `now`.
    pub fn record(&self, id: ConnId, now: u64) -> Option<ConnRecord> {
        self.get(id).map(|c| record_of(c, now))
    }

    /// One batch of the full-resync walk: calls `out` with the record of every live entry in
    /// slab slots `from..from + max_slots` and returns where the next batch starts, or `None`
    /// when the walk is complete. Entries created or changed behind the cursor during the walk
    /// reach the peer as events; start streaming events before the walk.
    pub fn snapshot(
        &self,
        from: usize,
        max_slots: usize,
        now: u64,
        mut out: impl FnMut(ConnRecord),
    ) -> Option<usize> {
        let end = from.saturating_add(max_slots).min(self.conns.len());
        for c in self.conns.get(from..end).unwrap_or_default() {
            if c.in_use() {
                out(record_of(c, now));
            }
        }
        (end < self.conns.len()).then_some(end)
    }

    // ---- local packets ------------------------------------------------------------------

    /// Records a new connection for the first packet of a flow, after the scheduler chose its
    /// destination, and applies that packet (`tcp_flags`, ignored for UDP) as an INPUT packet
    /// from state NONE, as the kernel's `ip_vs_conn_new` + `ip_vs_set_state`. Emits
    /// [`ConnEventKind::Created`] with the resulting state.
    ///
    /// When the table is full, first reclaims entries already past their deadline (at most
    /// `reclaim_budget` examined); refuses if none, counted as `full_drops`.
    pub fn create(
        &mut self,
        new: &NewConn,
        tcp_flags: TcpFlags,
        now: u64,
        sink: &mut impl ConnEventSink,
    ) -> Result<ConnId, CreateError> {
        self.create_inner(new, tcp_flags, now, sink, false)
    }

    /// [`create`](Self::create) for a caller that has just looked up `new`'s client→VIP key
    /// and found nothing (and changed nothing since): the same, without that lookup again.
    pub(crate) fn create_absent(
        &mut self,
        new: &NewConn,
        tcp_flags: TcpFlags,
        now: u64,
        sink: &mut impl ConnEventSink,
    ) -> Result<ConnId, CreateError> {
        self.create_inner(new, tcp_flags, now, sink, true)
    }

    fn create_inner(
        &mut self,
        new: &NewConn,
        tcp_flags: TcpFlags,
        now: u64,
        sink: &mut impl ConnEventSink,
        input_absent: bool,
    ) -> Result<ConnId, CreateError> {
        self.start_clock(now);
        let i = self.claim(new, false, input_absent, now, sink)?;
        let state = match new.proto {
            Protocol::Tcp => {
                let dir = if new.method == ForwardMethod::Nat {
                    TcpDir::Input
                } else {
                    TcpDir::InputOnly
                };
                tcp_next_state(ConnState::None, dir, tcp_flags)
            }
            Protocol::Udp => ConnState::Udp,
        };
        self.occupy(i, new, state, ConnFlags::EMPTY);
        let timeout_ms = self.timeouts_ms[state as usize];
        self.arm_new(i, timeout_ms, now);
        self.stats.created += 1;
        self.emit(ConnEventKind::Created, i, now, sink);
        Ok(ConnId(i))
    }

    /// Records a persistence template (client → destination affinity) for `timeout`, the
    /// service's persistence timeout. It is counted in `persistent`, has no state machine, and
    /// only its client→VIP key is indexed (IPVS convention: client port 0, and VIP port 0 for
    /// all-port persistence).
    pub fn create_template(
        &mut self,
        new: &NewConn,
        timeout: Duration,
        now: u64,
        sink: &mut impl ConnEventSink,
    ) -> Result<ConnId, CreateError> {
        self.start_clock(now);
        let i = self.claim(new, true, false, now, sink)?;
        self.occupy(i, new, ConnState::None, ConnFlags::TEMPLATE);
        self.arm_new(i, duration_ms(timeout), now);
        self.stats.created += 1;
        self.emit(ConnEventKind::Created, i, now, sink);
        Ok(ConnId(i))
    }

    /// Applies a packet of connection `id` travelling in `dir` (as [`ConnTable::lookup`] found
    /// it): moves a TCP connection through the IPVS state machine (`tcp_flags`), updates the
    /// destination's active/inactive counts when it enters or leaves an active state, and
    /// re-arms the idle timer with the new state's timeout (a template just re-arms). Emits
    /// [`ConnEventKind::StateChanged`] when the state changed. Returns the state after the
    /// packet, or `None` if `id` is not a live entry.
    ///
    /// TUN/DR connections use the INPUT-ONLY table; an OUTPUT packet for one (which should not
    /// happen: their reply key is not indexed) switches it to the NAT tables, as the kernel
    /// does when it clears `IP_VS_CONN_F_NOOUTPUT`.
    pub fn update(
        &mut self,
        id: ConnId,
        dir: Direction,
        tcp_flags: TcpFlags,
        now: u64,
        sink: &mut impl ConnEventSink,
    ) -> Option<ConnState> {
        self.start_clock(now);
        let i = self.live(id)?;
        let c = &mut self.conns[i as usize];
        c.flags.remove(ConnFlags::SYNCED);
        if c.is_template() {
            let timeout_ms = c.timeout_ms;
            self.arm(i, timeout_ms, now);
            return Some(ConnState::None);
        }
        // The common case, first: a packet that leaves the state as it is in every table.
        if c.steady(tcp_flags) {
            let state = c.state;
            self.refresh_steady(i, dir, now);
            return Some(state);
        }
        let new_state = match c.proto {
            Protocol::Tcp => {
                let table = match dir {
                    Direction::Output => {
                        c.flags.remove(ConnFlags::NO_OUTPUT);
                        TcpDir::Output
                    }
                    Direction::Input if c.flags.contains(ConnFlags::NO_OUTPUT) => TcpDir::InputOnly,
                    Direction::Input => TcpDir::Input,
                };
                tcp_next_state(c.state, table, tcp_flags)
            }
            Protocol::Udp => ConnState::Udp,
        };
        // Most packets leave the state as it is (an ESTABLISHED connection's data).
        let changed = self.conns[i as usize].state != new_state && self.set_state(i, new_state);
        self.arm(i, self.timeouts_ms[new_state as usize], now);
        if changed {
            self.stats.state_changes += 1;
            self.emit(ConnEventKind::StateChanged, i, now, sink);
        }
        Some(new_state)
    }

    /// What [`update`](Self::update) does for a packet that leaves live entry `i` in its
    /// state ([`Conn::steady`]): the entry is no longer as the peer sent it, a TCP reply
    /// clears INPUT-ONLY, and the idle timer is re-armed with the state's timeout. No event.
    #[inline(always)]
    pub(crate) fn refresh_steady(&mut self, i: u32, dir: Direction, now: u64) {
        self.start_clock(now);
        let c = &mut self.conns[i as usize];
        c.flags.remove(ConnFlags::SYNCED);
        if dir == Direction::Output && c.proto == Protocol::Tcp {
            c.flags.remove(ConnFlags::NO_OUTPUT);
        }
        let timeout_ms = self.timeouts_ms[c.state as usize];
        self.arm(i, timeout_ms, now);
    }

    /// Re-arms entry `id`'s idle timer with its current timeout, without a state change or an
    /// event (e.g. a persistence template used by a new connection). `false` if not live.
    pub fn touch(&mut self, id: ConnId, now: u64) -> bool {
        self.start_clock(now);
        match self.live(id) {
            Some(i) => {
                let timeout_ms = self.conns[i as usize].timeout_ms;
                self.arm(i, timeout_ms, now);
                true
            }
            None => false,
        }
    }

    /// Removes entry `id` now (emits [`DeleteReason::Removed`]). `false` if not live.
    pub fn remove(&mut self, id: ConnId, now: u64, sink: &mut impl ConnEventSink) -> bool {
        match self.live(id) {
            Some(i) => {
                self.stats.removed += 1;
                self.release(i, Some(DeleteReason::Removed), now, sink);
                true
            }
            None => false,
        }
    }

    // ---- expiry ---------------------------------------------------------------------------

    /// Removes entries whose deadline is at or before `now`, walking the timer wheel's slots
    /// up to `now`'s tick. Examines at most `budget` entries (each removed, re-filed because
    /// traffic pushed its deadline back, or skipped because it is due in a later turn of the
    /// wheel), so the number removed is at most `budget`; the next call resumes where this one
    /// stopped. Passing over empty slots is not counted (at most one turn of the wheel per
    /// call). Emits [`DeleteReason::Expired`] per removal and [`ConnEventKind::Refreshed`] per
    /// re-filed entry. Returns the number removed.
    ///
    /// An idle entry is removed by the first call at or after the end of the tick its
    /// deadline falls in: at most one tick late.
    pub fn expire(&mut self, now: u64, budget: usize, sink: &mut impl ConnEventSink) -> usize {
        self.start_clock(now);
        let target = now / self.tick_ns;
        let slots = u64::from(self.slot_mask) + 1;
        let mut examined = 0;
        let mut removed = 0;
        loop {
            let slot = low32(self.next_tick) & self.slot_mask;
            if !self.mid_slot {
                if self.next_tick > target {
                    break;
                }
                // After a long pause one turn of the wheel visits every slot once, which
                // covers every entry: skip the turns in between.
                if target >= self.next_tick.saturating_add(slots) {
                    self.next_tick = target + 1 - slots;
                    continue;
                }
                self.cursor = self.heads[slot as usize];
                self.mid_slot = true;
            }
            while self.cursor != NIL {
                if examined >= budget {
                    return removed;
                }
                examined += 1;
                let i = self.cursor;
                let c = &mut self.conns[i as usize];
                self.cursor = c.next;
                if c.deadline <= now {
                    self.stats.expired += 1;
                    removed += 1;
                    self.release(i, Some(DeleteReason::Expired), now, sink);
                    continue;
                }
                let due = low32(c.deadline.div_ceil(self.tick_ns));
                if due & self.slot_mask == slot {
                    // Due in a later turn of the wheel: it is in the right slot already.
                    c.filed_tick = due;
                } else {
                    self.unlink(i);
                    self.link(i, due);
                    self.stats.refiled += 1;
                    self.emit(ConnEventKind::Refreshed, i, now, sink);
                }
            }
            self.mid_slot = false;
            self.next_tick += 1;
        }
        removed
    }

    // ---- control plane --------------------------------------------------------------------

    /// Removes every entry (connections and templates) of destination `dest`: deleting a real
    /// server ends its connections. Emits [`DeleteReason::Flushed`] for each. Walks the whole
    /// slab (O(capacity)): a control-plane operation, not for the packet path.
    pub fn flush_dest(&mut self, dest: DestId, now: u64, sink: &mut impl ConnEventSink) -> usize {
        self.remove_where(|c| c.dest == dest, now, sink)
    }

    /// Removes every entry for which `pred` holds (emits [`DeleteReason::Flushed`]). Walks the
    /// whole slab.
    pub fn remove_where(
        &mut self,
        mut pred: impl FnMut(&Conn) -> bool,
        now: u64,
        sink: &mut impl ConnEventSink,
    ) -> usize {
        let mut n = 0;
        for i in 0..self.len_slab() {
            let c = &self.conns[i as usize];
            if c.in_use() && pred(c) {
                self.stats.flushed += 1;
                self.release(i, Some(DeleteReason::Flushed), now, sink);
                n += 1;
            }
        }
        n
    }

    /// Removes every entry (emits [`DeleteReason::Flushed`] for each).
    pub fn clear(&mut self, now: u64, sink: &mut impl ConnEventSink) -> usize {
        self.remove_where(|_| true, now, sink)
    }

    // ---- the peer's records -----------------------------------------------------------------

    /// Applies a record from the peer (standby side): creates the entry, or updates the one with
    /// the same client→VIP key (state, timeout, deadline, counts), or replaces it if it goes
    /// elsewhere. The entry expires `remaining_ms + peer_grace` from `now` unless refreshed,
    /// carries [`ConnFlags::SYNCED`], and is counted per destination like a local one. Never
    /// emits an event. A full table is first relieved of entries already past their deadline,
    /// as for [`ConnTable::create`].
    pub fn install(&mut self, rec: &ConnRecord, now: u64) -> Result<ConnId, InstallError> {
        self.start_clock(now);
        let result = self.install_inner(rec, now);
        match result {
            Ok(_) => self.stats.installed += 1,
            Err(InstallError::BadDest(_)) => {
                self.stats.bad_dest += 1;
                self.stats.install_refused += 1;
            }
            Err(_) => self.stats.install_refused += 1,
        }
        result
    }

    /// Removes the entry with the record's client→VIP key, on the peer's word (its
    /// [`ConnEventKind::Deleted`]). Never emits an event. `false` if there was none.
    pub fn uninstall(&mut self, rec: &ConnRecord) -> bool {
        let key = Flow {
            proto: rec.proto,
            src: rec.client,
            dst: rec.vip,
        };
        match self.lookup(&key) {
            Some((id, Direction::Input)) => {
                self.stats.uninstalled += 1;
                self.release(id.0, None, 0, &mut DiscardEvents);
                true
            }
            _ => false,
        }
    }

    /// Marks every live entry stale: a standby's mark when the peer's full snapshot begins.
    /// An entry stays stale until the peer upserts it ([`ConnTable::install`]);
    /// [`ConnTable::sweep_stale`] then removes those still stale, the entries the peer no
    /// longer has. Constant time: the table's mark epoch moves on, and an entry is stale when
    /// its own epoch (set when it is made or upserted) is an older one; nothing is walked, so
    /// a table of millions is marked as fast as an empty one. Entries created later, locally
    /// or by the peer, are not stale; marking again (a snapshot restarted) marks all.
    pub fn mark_stale(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
    }

    /// Whether slab slot `i` holds a live entry that is stale (see
    /// [`mark_stale`](Self::mark_stale)).
    fn is_stale(&self, i: u32) -> bool {
        self.conns
            .get(i as usize)
            .is_some_and(|c| c.in_use() && c.epoch != self.epoch)
    }

    /// Removes every entry still stale since [`ConnTable::mark_stale`] (the peer's snapshot
    /// ended without it), as [`ConnTable::uninstall`] does: no event. Returns how many. In
    /// one go: a lcore spreads the sweep over its ticks with
    /// [`sweep_stale_step`](Self::sweep_stale_step) instead.
    pub fn sweep_stale(&mut self) -> usize {
        let (swept, _) = self.sweep_stale_step(0, usize::MAX, usize::MAX);
        swept
    }

    /// One step of a sweep (see [`sweep_stale`](Self::sweep_stale)): looks at the slab slots
    /// from `from` on, at most `slots` of them, and stops early once it has removed
    /// `removals`. Returns how many it removed and the slot the next step starts at (`None`:
    /// the sweep is done). Steps may be interleaved with anything else (installs, local
    /// connections, expiry): what they make or upsert is not stale. A new
    /// [`mark_stale`](Self::mark_stale) calls for a new sweep from slot 0.
    pub fn sweep_stale_step(
        &mut self,
        from: u32,
        slots: usize,
        removals: usize,
    ) -> (usize, Option<u32>) {
        let end = self.len_slab();
        let mut swept = 0;
        let mut i = from;
        let mut looked = 0;
        while i < end {
            if looked >= slots || swept >= removals {
                return (swept, Some(i));
            }
            if self.is_stale(i) {
                self.stats.uninstalled += 1;
                self.release(i, None, 0, &mut DiscardEvents);
                swept += 1;
            }
            looked += 1;
            i += 1;
        }
        (swept, None)
    }

    /// Applies one event from the peer: [`ConnTable::uninstall`] for a deletion,
    /// [`ConnTable::install`] for anything else. `Ok(None)` for a deletion.
    pub fn apply(&mut self, ev: &ConnEvent, now: u64) -> Result<Option<ConnId>, InstallError> {
        match ev.kind {
            ConnEventKind::Deleted(_) => {
                self.uninstall(&ev.record);
                Ok(None)
            }
            _ => self.install(&ev.record, now).map(Some),
        }
    }

    fn install_inner(&mut self, rec: &ConnRecord, now: u64) -> Result<ConnId, InstallError> {
        let template = rec.flags.contains(ConnFlags::TEMPLATE);
        if rec.dest.0 as usize >= self.dest_counts.len() {
            return Err(InstallError::BadDest(rec.dest));
        }
        let state_ok = match (template, rec.proto) {
            (true, _) => rec.state == ConnState::None,
            (false, Protocol::Tcp) => rec.state.is_tcp(),
            (false, Protocol::Udp) => rec.state == ConnState::Udp,
        };
        if !state_ok {
            return Err(InstallError::BadState {
                proto: rec.proto,
                state: rec.state,
            });
        }
        let new = NewConn {
            proto: rec.proto,
            client: rec.client,
            vip: rec.vip,
            real: rec.real,
            method: rec.method,
            dest: rec.dest,
            service: rec.service,
        };
        let remaining_ns = u64::from(rec.remaining_ms)
            .saturating_mul(NS_PER_MS)
            .saturating_add(self.peer_grace_ns);

        let existing = match self.lookup(&input_flow(&new)) {
            Some((_, Direction::Output)) => return Err(InstallError::KeyTaken),
            Some((id, Direction::Input)) => Some(id.0),
            None => None,
        };
        if !template && new.method == ForwardMethod::Nat {
            if reply_flow(&new) == input_flow(&new) {
                return Err(InstallError::KeyTaken);
            }
            if let Some((other, _)) = self.lookup(&reply_flow(&new)) {
                if Some(other.0) != existing {
                    return Err(InstallError::KeyTaken);
                }
            }
        }
        if let Some(i) = existing {
            let c = &self.conns[i as usize];
            let same = c.real == rec.real
                && c.method == rec.method
                && c.dest == rec.dest
                && c.service == rec.service
                && c.is_template() == template;
            if same {
                self.set_state(i, rec.state);
                let c = &mut self.conns[i as usize];
                c.flags.insert(ConnFlags::SYNCED);
                c.epoch = self.epoch;
                c.timeout_ms = rec.timeout_ms;
                c.deadline = now.saturating_add(remaining_ns);
                self.refile_if_earlier(i);
                return Ok(ConnId(i));
            }
            self.release(i, None, now, &mut DiscardEvents);
        }
        let i = match self.take_slot(now, &mut DiscardEvents) {
            Some(i) => i,
            None => return Err(InstallError::Full),
        };
        let flags = if template {
            ConnFlags::TEMPLATE | ConnFlags::SYNCED
        } else {
            ConnFlags::SYNCED
        };
        self.occupy(i, &new, rec.state, flags);
        let c = &mut self.conns[i as usize];
        c.timeout_ms = rec.timeout_ms;
        c.deadline = now.saturating_add(remaining_ns);
        self.file(i);
        Ok(ConnId(i))
    }

    // ---- internals ------------------------------------------------------------------------

    fn len_slab(&self) -> u32 {
        u32::try_from(self.conns.len()).unwrap_or(u32::MAX)
    }

    fn live(&self, id: ConnId) -> Option<u32> {
        self.get(id).map(|_| id.0)
    }

    fn start_clock(&mut self, now: u64) {
        if !self.clock_started {
            self.clock_started = true;
            self.next_tick = now / self.tick_ns;
        }
    }

    /// Checks a new entry's keys and destination and takes a free slot for it
    /// (`input_absent`: the caller knows the client→VIP key is not in the index).
    fn claim(
        &mut self,
        new: &NewConn,
        template: bool,
        input_absent: bool,
        now: u64,
        sink: &mut impl ConnEventSink,
    ) -> Result<u32, CreateError> {
        if new.dest.0 as usize >= self.dest_counts.len() {
            self.stats.bad_dest += 1;
            return Err(CreateError::BadDest(new.dest));
        }
        let input = if input_absent {
            None
        } else {
            self.lookup(&input_flow(new))
        };
        match input {
            Some((id, Direction::Input)) => return Err(CreateError::Exists(id)),
            Some((_, Direction::Output)) => {
                self.stats.key_conflicts += 1;
                return Err(CreateError::KeyTaken);
            }
            None => {}
        }
        // The reply key must be free, and differ from the input key (client, VIP and real
        // server all one endpoint: nonsense, but it must not corrupt the index).
        if !template
            && new.method == ForwardMethod::Nat
            && (reply_flow(new) == input_flow(new) || self.lookup(&reply_flow(new)).is_some())
        {
            self.stats.key_conflicts += 1;
            return Err(CreateError::KeyTaken);
        }
        match self.take_slot(now, sink) {
            Some(i) => Ok(i),
            None => {
                self.stats.full_drops += 1;
                Err(CreateError::Full)
            }
        }
    }

    /// A free slot, reclaiming expired entries first if there is none.
    fn take_slot(&mut self, now: u64, sink: &mut impl ConnEventSink) -> Option<u32> {
        if self.free == NIL && self.reclaim_budget > 0 {
            let n = self.expire(now, self.reclaim_budget, sink);
            self.stats.reclaimed += n as u64;
        }
        let i = self.free;
        if i == NIL {
            return None;
        }
        self.free = self.conns[i as usize].next;
        Some(i)
    }

    /// Fills slot `i`, counts it (inactive, or persistent for a template), indexes its keys and
    /// moves it to `state` (adjusting the counts). Not yet in the wheel.
    fn occupy(&mut self, i: u32, new: &NewConn, state: ConnState, flags: ConnFlags) {
        let mut flags = flags | ConnFlags::IN_USE;
        if new.method != ForwardMethod::Nat {
            flags.insert(ConnFlags::NO_OUTPUT);
        }
        self.conns[i as usize] = Conn {
            deadline: 0,
            dest: new.dest,
            service: new.service,
            timeout_ms: 0,
            filed_tick: 0,
            prev: NIL,
            next: NIL,
            epoch: self.epoch,
            client: new.client,
            vip: new.vip,
            real: new.real,
            proto: new.proto,
            method: new.method,
            state: ConnState::None,
            flags,
        };
        self.len += 1;
        self.count(i, true);
        self.index_insert(tag(i, false));
        if self.conns[i as usize].indexes_reply() {
            self.index_insert(tag(i, true));
        }
        self.set_state(i, state);
    }

    /// Frees slot `i`: emits its deletion (unless `reason` is `None`), uncounts it, drops its
    /// keys and timer.
    fn release(
        &mut self,
        i: u32,
        reason: Option<DeleteReason>,
        now: u64,
        sink: &mut impl ConnEventSink,
    ) {
        if let Some(reason) = reason {
            self.emit(ConnEventKind::Deleted(reason), i, now, sink);
        }
        self.count(i, false);
        self.index_remove(tag(i, false));
        if self.conns[i as usize].indexes_reply() {
            self.index_remove(tag(i, true));
        }
        self.unlink(i);
        let c = &mut self.conns[i as usize];
        c.flags = ConnFlags::EMPTY;
        c.prev = NIL;
        c.next = self.free;
        self.free = i;
        self.len -= 1;
    }

    /// Moves entry `i` to `state`, moving it between its destination's active and inactive
    /// counts if its activity changes (the kernel's `set_tcp_state`). `true` if it changed.
    fn set_state(&mut self, i: u32, state: ConnState) -> bool {
        let c = &self.conns[i as usize];
        if c.state == state {
            return false;
        }
        let active =
            !c.is_template() && c.proto == Protocol::Tcp && self.active_policy.is_active(state);
        if active != c.is_active() {
            self.count(i, false);
            let flags = &mut self.conns[i as usize].flags;
            if active {
                flags.insert(ConnFlags::ACTIVE);
            } else {
                flags.remove(ConnFlags::ACTIVE);
            }
            self.count(i, true);
        }
        self.conns[i as usize].state = state;
        true
    }

    /// Adds (or removes) entry `i` to its destination's counts per its flags.
    fn count(&mut self, i: u32, add: bool) {
        let c = &self.conns[i as usize];
        let Some(d) = self.dest_counts.get_mut(c.dest.0 as usize) else {
            return;
        };
        let n = if c.is_template() {
            &mut d.persistent
        } else if c.is_active() {
            &mut d.active
        } else {
            &mut d.inactive
        };
        if add {
            *n += 1;
        } else {
            debug_assert!(*n > 0, "destination count underflow");
            *n = n.saturating_sub(1);
        }
    }

    fn emit(&mut self, kind: ConnEventKind, i: u32, now: u64, sink: &mut impl ConnEventSink) {
        let mut record = record_of(&self.conns[i as usize], now);
        if matches!(kind, ConnEventKind::Deleted(_)) {
            record.remaining_ms = 0;
        }
        let ev = ConnEvent {
            kind,
            seq: self.next_seq,
            record,
        };
        self.next_seq += 1;
        if sink.emit(ev) {
            self.stats.events += 1;
        } else {
            self.stats.event_overflow += 1;
        }
    }

    fn index_insert(&mut self, t: u32) {
        let conns = &self.conns;
        let hasher = &self.hasher;
        let h = hash_tag(hasher, conns, t);
        // Never grows: sized at construction for two keys per entry at most half full.
        let added = self.index.insert(h, t);
        debug_assert!(added, "the index is sized to never fill up");
    }

    fn index_remove(&mut self, t: u32) {
        let h = hash_tag(&self.hasher, &self.conns, t);
        self.index.remove(h, t);
    }

    // ---- the timer wheel ------------------------------------------------------------------

    /// Sets the timeout and deadline (`now` + timeout) of entry `i`, already on the wheel, and
    /// makes sure the wheel visits it by then. Pushing the deadline later is only a store: the
    /// wheel re-files the entry when its old slot comes up.
    ///
    /// A deadline that did not move earlier needs no re-filing: the entry's filed tick is at
    /// most the due tick of the deadline it was last checked against (and the first open slot
    /// then), both of which only grow, so [`refile_if_earlier`](Self::refile_if_earlier) would
    /// find nothing to do. This skips its division on the common path (the same state again).
    #[inline(always)]
    fn arm(&mut self, i: u32, timeout_ms: u32, now: u64) {
        let c = &mut self.conns[i as usize];
        let deadline = now.saturating_add(u64::from(timeout_ms) * NS_PER_MS);
        let earlier = deadline < c.deadline;
        c.timeout_ms = timeout_ms;
        c.deadline = deadline;
        if earlier {
            self.refile_if_earlier(i);
        }
    }

    /// Sets the timeout and deadline of new entry `i` and puts it on the wheel.
    fn arm_new(&mut self, i: u32, timeout_ms: u32, now: u64) {
        let c = &mut self.conns[i as usize];
        c.timeout_ms = timeout_ms;
        c.deadline = now.saturating_add(u64::from(timeout_ms) * NS_PER_MS);
        self.file(i);
    }

    /// The tick whose slot entry `i` should be filed in for its deadline: the end of the tick
    /// its deadline falls in, but never a slot `expire` has already passed this turn.
    fn due_tick(&self, i: u32) -> u32 {
        let want = self.conns[i as usize].deadline.div_ceil(self.tick_ns);
        let first_open = self.next_tick + u64::from(self.mid_slot);
        low32(want.max(first_open))
    }

    fn file(&mut self, i: u32) {
        let t = self.due_tick(i);
        self.link(i, t);
    }

    /// Re-files entry `i` if its deadline now comes before the tick it is filed at (a state
    /// with a shorter timeout, e.g. ESTABLISHED → CLOSE). Out of line: [`arm`](Self::arm)'s
    /// common path, inlined, only tests for it.
    #[inline(never)]
    fn refile_if_earlier(&mut self, i: u32) {
        let t = self.due_tick(i);
        if tick_before(t, self.conns[i as usize].filed_tick) {
            self.unlink(i);
            self.link(i, t);
        }
    }

    fn link(&mut self, i: u32, tick: u32) {
        let slot = (tick & self.slot_mask) as usize;
        let head = self.heads[slot];
        let c = &mut self.conns[i as usize];
        c.filed_tick = tick;
        c.prev = NIL;
        c.next = head;
        if head != NIL {
            self.conns[head as usize].prev = i;
        }
        self.heads[slot] = i;
    }

    fn unlink(&mut self, i: u32) {
        let c = &self.conns[i as usize];
        let (prev, next, tick) = (c.prev, c.next, c.filed_tick);
        if self.mid_slot && self.cursor == i {
            self.cursor = next;
        }
        if prev == NIL {
            self.heads[(tick & self.slot_mask) as usize] = next;
        } else {
            self.conns[prev as usize].next = next;
        }
        if next != NIL {
            self.conns[next as usize].prev = prev;
        }
        let c = &mut self.conns[i as usize];
        c.prev = NIL;
        c.next = NIL;
    }
}

fn input_flow(new: &NewConn) -> Flow {
    Flow {
        proto: new.proto,
        src: new.client,
        dst: new.vip,
    }
}

fn reply_flow(new: &NewConn) -> Flow {
    Flow {
        proto: new.proto,
        src: new.real,
        dst: new.client,
    }
}

fn hash_tag(hasher: &KeyHasher, conns: &[Conn], t: u32) -> u64 {
    let (proto, src, dst) = conns[(t >> 1) as usize].key(t & 1 == 1);
    hasher.hash(proto, src, dst)
}

fn record_of(c: &Conn, now: u64) -> ConnRecord {
    let remaining_ms = if c.in_use() {
        u32::try_from(c.deadline.saturating_sub(now) / NS_PER_MS).unwrap_or(u32::MAX)
    } else {
        0
    };
    ConnRecord {
        proto: c.proto,
        client: c.client,
        vip: c.vip,
        real: c.real,
        method: c.method,
        dest: c.dest,
        service: c.service,
        state: c.state,
        flags: c.flags.public(),
        timeout_ms: c.timeout_ms,
        remaining_ms,
    }
}
