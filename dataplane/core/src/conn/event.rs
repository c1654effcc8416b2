//! What the connection table tells the sync daemon: one [`ConnEvent`] per create, state change,
//! refresh and delete, each carrying a self-contained [`ConnRecord`], and the bounded
//! [`ConnEventSink`] it is handed to.
//!
//! The table never blocks and never allocates to emit: a sink that is full returns `false`, the
//! table counts it (`ConnStats::event_overflow`) and moves on. Sequence numbers are taken for
//! every event, delivered or not, so the consumer sees a gap where events were lost and can
//! ask for a full resync (the table's snapshot walk) instead of silently diverging.

use std::collections::VecDeque;

use crate::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};

use super::state::ConnState;

/// Flags of an entry, as the listing and the sync records show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ConnFlags(u8);

impl ConnFlags {
    /// No flag.
    pub const EMPTY: ConnFlags = ConnFlags(0);
    /// Counted in its destination's `active` (not `inactive`); the kernel keeps the inverse,
    /// `IP_VS_CONN_F_INACTIVE`.
    pub const ACTIVE: ConnFlags = ConnFlags(0x01);
    /// Installed from the peer's sync stream and not touched by a local packet since.
    pub const SYNCED: ConnFlags = ConnFlags(0x02);
    /// A persistence template (client → destination affinity), not a connection: counted in
    /// `persistent`, never in active/inactive, no state machine, its own timeout.
    pub const TEMPLATE: ConnFlags = ConnFlags(0x04);
    /// Replies bypass the director (TUN, DR): client packets use the INPUT-ONLY table, as the
    /// kernel's `IP_VS_CONN_F_NOOUTPUT`.
    pub const NO_OUTPUT: ConnFlags = ConnFlags(0x08);
    /// The slot holds a live entry (internal; never shown).
    pub(crate) const IN_USE: ConnFlags = ConnFlags(0x80);

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// From raw bits (unknown bits are dropped).
    pub const fn from_bits(bits: u8) -> ConnFlags {
        ConnFlags(bits & 0x0f)
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: ConnFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) fn insert(&mut self, other: ConnFlags) {
        self.0 |= other.0;
    }

    pub(crate) fn remove(&mut self, other: ConnFlags) {
        self.0 &= !other.0;
    }

    /// Without the internal bits.
    pub(crate) const fn public(self) -> ConnFlags {
        ConnFlags::from_bits(self.0)
    }
}

impl std::ops::BitOr for ConnFlags {
    type Output = ConnFlags;
    fn bitor(self, rhs: ConnFlags) -> ConnFlags {
        ConnFlags(self.0 | rhs.0)
    }
}

/// Everything needed to recreate one entry on the peer: its keys, where it goes, its state and
/// how long it has left. `Copy`, fixed size, no pointers.
///
/// `dest` and `service` are indices in the *sender's* configuration; the receiving syncd maps
/// them (by real-server endpoint and virtual service) to its own before
/// [`crate::conn::ConnTable::install`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRecord {
    /// TCP or UDP.
    pub proto: Protocol,
    /// The client's endpoint.
    pub client: Endpoint,
    /// The virtual service's endpoint (VIP:port) the client addressed.
    pub vip: Endpoint,
    /// The real server's endpoint the director forwards to.
    pub real: Endpoint,
    /// NAT, TUN or DR.
    pub method: ForwardMethod,
    /// The destination (real server) index.
    pub dest: DestId,
    /// The virtual service index.
    pub service: ServiceId,
    /// The state after the event.
    pub state: ConnState,
    /// Public flags ([`ConnFlags::TEMPLATE`] is the one the receiver honours; activity is
    /// recomputed from the state).
    pub flags: ConnFlags,
    /// The idle timeout the entry is re-armed with, in milliseconds.
    pub timeout_ms: u32,
    /// Time left before the entry expires, in milliseconds, when the event was emitted (0 for
    /// deletions).
    pub remaining_ms: u32,
}

/// Why an entry left the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeleteReason {
    /// Its timer ran out (including entries reclaimed by a full table: they had run out too).
    Expired,
    /// [`crate::conn::ConnTable::remove`]: the glue ended it (e.g. a new SYN reusing a
    /// TIME_WAIT connection's ports).
    Removed,
    /// Flushed by the control plane: destination deleted, `remove_where`, `clear`.
    Flushed,
}

/// What happened to the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnEventKind {
    /// A new entry (connection or template).
    Created,
    /// A packet moved a TCP connection to another state.
    StateChanged,
    /// The entry had traffic since it was last announced and its timer was pushed back: sent
    /// when the timer wheel finds the old deadline extended, so at most once per timeout
    /// period per entry, and early enough to keep the peer's copy alive.
    Refreshed,
    /// The entry is gone.
    Deleted(DeleteReason),
}

/// One change of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnEvent {
    /// What happened.
    pub kind: ConnEventKind,
    /// Per-table (per-lcore) sequence number, starting at 1, one per event emitted whether
    /// or not the sink took it.
    pub seq: u64,
    /// The entry as it is after the event.
    pub record: ConnRecord,
}

/// Where the table puts its events. Must not block and should not allocate; returns `false`
/// when it cannot take the event (bounded queue full), which the table counts.
pub trait ConnEventSink {
    /// Take one event; `false` if it was dropped.
    fn emit(&mut self, ev: ConnEvent) -> bool;
}

impl<S: ConnEventSink + ?Sized> ConnEventSink for &mut S {
    fn emit(&mut self, ev: ConnEvent) -> bool {
        (**self).emit(ev)
    }
}

/// A sink that takes and forgets every event (a director without a peer).
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardEvents;

impl ConnEventSink for DiscardEvents {
    fn emit(&mut self, _ev: ConnEvent) -> bool {
        true
    }
}

/// A bounded FIFO of events, allocated once: `emit` refuses when it holds `capacity` events.
/// The glue drains it into the channel to syncd between bursts.
#[derive(Debug, Clone)]
pub struct EventQueue {
    events: VecDeque<ConnEvent>,
    capacity: usize,
}

impl EventQueue {
    /// A queue for at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        EventQueue {
            events: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// The oldest event, removed.
    pub fn pop(&mut self) -> Option<ConnEvent> {
        self.events.pop_front()
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// No event waiting.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The most events it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The waiting events, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &ConnEvent> {
        self.events.iter()
    }

    /// Forget every waiting event.
    pub fn clear(&mut self) {
        self.events.clear();
    }
}

impl ConnEventSink for EventQueue {
    fn emit(&mut self, ev: ConnEvent) -> bool {
        if self.events.len() < self.capacity {
            // Below the capacity reserved at construction: no reallocation.
            self.events.push_back(ev);
            true
        } else {
            false
        }
    }
}
