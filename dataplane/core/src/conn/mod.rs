//! The connection table: one per worker lcore, bounded, preallocated, allocation-free after
//! construction, and the source of the events the sync daemon streams to the standby.
//!
//! # Shape
//! - **Slab.** Entries ([`Conn`], 58 bytes of fields aligned to one 64-byte cache line) live
//!   in a `Vec` sized at construction, with a free list threaded through it. A [`ConnId`] is a
//!   slab index.
//! - **Index.** Our own open-addressing table of 64-byte buckets (8 × `u32` hash tag +
//!   `u32` value, see `index.rs`) stores slab indices only (`index << 1 | key`); it hashes and
//!   compares against the keys stored in the entry. Unlike hashbrown it lets a burst of
//!   lookups prefetch their buckets, then their entries, before processing
//!   ([`ConnTable::prefetch_hinted`], [`ConnTable::prefetch_entry_hinted`]). Each connection has the
//!   client→VIP key `(proto, client, vip)`, and **NAT connections only** also the reply key
//!   `(proto, real, client)`. TUN and DR replies go from the real server straight to the
//!   client and never reach the director, so their reply key would only cost index space; a
//!   persistence template sees no packets of its own. [`ConnTable::lookup`] says which key
//!   matched ([`Direction::Input`] or [`Direction::Output`]). No two entries ever share a key:
//!   creating one whose key another entry holds is refused.
//! - **Timer wheel.** A hashed wheel (default 100 ms ticks × 16384 slots = 27 minutes per
//!   turn) of intrusive doubly-linked lists through the slab. A packet re-arming a connection
//!   only stores its new deadline; when the slot it was filed in comes up, the wheel finds the
//!   deadline later and re-files it (and tells the peer, see below). Only a deadline moved
//!   *earlier* (a state with a shorter timeout, e.g. ESTABLISHED → CLOSE) re-files at once,
//!   in O(1). [`ConnTable::expire`] is bounded by a budget of examined entries and resumes
//!   where it stopped, so a burst loop stays bounded; nothing ever scans the whole table on
//!   the packet path.
//! - **Counts.** Active, inactive and persistent counts per destination in a fixed array
//!   indexed by [`crate::lb::DestId`] ([`ConnTable::dest_counts`]), kept exact on every
//!   create, state change, install, expiry and removal.
//!
//! Memory per connection at 1M entries, measured by `tests/conn_memory.rs`: 64 bytes of slab,
//! 32–34 bytes of index (4M slots of 8 bytes in 512K buckets) and the wheel's 64 KiB, about
//! 98 bytes in all. The index is sized for two keys per entry at most half full; deletion
//! shifts values back (no tombstones), so it is never rebuilt and never grows.
//!
//! # IPVS semantics followed (`net/netfilter/ipvs/`)
//! - TCP transitions: the mainline `tcp_states` table for INPUT, OUTPUT and INPUT-ONLY, flag
//!   priority RST, SYN, FIN, ACK ([`tcp_next_state`]). A packet with none of the four flags
//!   moves the connection to CLOSE, as `set_tcp_state` does. The `secure_tcp` (`tcp_states_dos`)
//!   table is not implemented. Older kernels sent NONE + ACK to CLOSE; mainline goes to
//!   ESTABLISHED, and so do we.
//! - TUN/DR connections carry `NO_OUTPUT` and use INPUT-ONLY; an OUTPUT packet clears it.
//! - A new connection starts in NONE counted *inactive* (the kernel sets
//!   `IP_VS_CONN_F_INACTIVE` in every destination's connection flags), then its first packet
//!   is applied. A TCP connection moves to active when it enters an active state and back when
//!   it leaves; UDP connections are never active, so they count as inactive all their life;
//!   templates count in `persistent` (`persistconns`) only. Expiry or removal uncounts from
//!   wherever the entry is.
//! - Active states: the spec's "ESTABLISHED = active" ([`ActivePolicy::EstablishedOnly`], the
//!   default and the kernel's rule until recent versions); [`ActivePolicy::PreEstablished`]
//!   is current mainline's `tcp_state_active_table` (SYN_SENT, SYN_RECV, SYNACK also active).
//! - Every packet re-arms the timer with the timeout of the state after the packet
//!   (`ip_vs_conn_put`). Default timeouts are the kernel's (`tcp_timeouts`, UDP 300 s) with
//!   one deviation the spec orders: **FIN_WAIT 60 s** (kernel 120 s). See [`Timeouts`].
//!
//! # When the table is full
//! The kernel's IPVS has no hard limit (its hash table size only sets the bucket count;
//! entries come from a slab cache until memory runs out); DPVS draws connections from a fixed
//! mempool and drops the packet when it is empty. Tandem is bounded like DPVS: a new
//! connection is **refused** ([`CreateError::Full`], counted in `ConnStats::full_drops`; the
//! glue drops the packet), never evicting a live connection. Before refusing, the create runs
//! the wheel for at most `reclaim_budget` entries to free any that are already past their
//! deadline (counted in `reclaimed`); this only finds something when `expire` is behind. The
//! table never grows and never panics.
//!
//! # Events for the sync daemon
//! Every local create, state change, refresh and deletion (expiry, removal, flush) emits a
//! [`ConnEvent`] (kind, per-table sequence number, full [`ConnRecord`]) into the caller's
//! [`ConnEventSink`]; a full sink is counted in `event_overflow`, and sequence numbers are
//! consumed anyway so the consumer sees the gap. Refreshes are not sent per packet: the wheel
//! sends one when it finds that an entry's deadline moved (at most once per timeout period per
//! entry), and the standby keeps installed entries `peer_grace` longer than the record says so
//! the refresh arrives in time. [`ConnTable::install`] / [`ConnTable::apply`] apply the peer's
//! records on the standby and never emit; [`ConnTable::snapshot`] walks the table in batches
//! for a full resync.
//!
//! # Time
//! `now` is the caller's monotonic clock in nanoseconds. Nothing here reads a clock, spawns a
//! thread, or allocates after [`ConnTable::new`].

mod event;
mod hash;
mod index;
mod state;
mod table;

pub use event::{
    ConnEvent, ConnEventKind, ConnEventSink, ConnFlags, ConnRecord, DeleteReason, DiscardEvents,
    EventQueue,
};
pub use state::{
    ActivePolicy, ConnState, Direction, FlagClass, TcpDir, TcpFlags, Timeouts, keeps_established,
    tcp_next_state,
};
pub use table::{
    Conn, ConnConfig, ConnConfigError, ConnId, ConnStats, ConnTable, CreateError, DestCounts, Hint,
    InstallError, MAX_CAPACITY, MAX_WHEEL_SLOTS, MIN_TICK, MemoryUsage, NewConn,
    SWEEP_STEP_REMOVALS, SWEEP_STEP_SLOTS,
};
