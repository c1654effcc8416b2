//! Connection-table replication between the two directors, as pure state machines.
//!
//! The active director's [`Sender`] turns the local dataplane's events (and the lblc/lblcr
//! locality changes) into one ordered stream of [`Item`]s, each with a link sequence number in
//! the sender's *epoch*; the standby's [`Receiver`] applies them in order, exactly once, into a
//! [`Replica`] and answers with cumulative acks. Nothing here does I/O or reads a clock: the
//! caller passes `now` (monotonic nanoseconds), feeds incoming messages with `handle` and
//! drains outgoing ones with `poll_transmit`, in the manner of `quinn-proto`.
//!
//! # The stream
//! - Every item has a sequence number `1, 2, 3, …` in the sender's epoch. A [`Batch`] carries
//!   consecutive items (`first_seq`, then one per item), the epoch, and the highest sequence
//!   number assigned so far (`head_seq`), from which the receiver computes its lag.
//! - The receiver acks cumulatively ([`Feedback::Ack`]): "everything up to `seq` is applied".
//!   The sender keeps unacked items in a bounded replay log and retransmits from the first
//!   unacked one when no ack arrives in time (go-back-N; on the real TCP link this only
//!   happens after a message is lost with its connection).
//! - On every (re)connect, and whenever it sees a gap, the receiver sends
//!   [`Feedback::Resume`] with its epoch and last applied sequence. The sender replays from
//!   there if its log still holds it, and otherwise starts a full snapshot: a
//!   [`Item::SnapshotBegin`], the records of the whole table ([`Item::Snapshot`]) interleaved
//!   with the deltas produced meanwhile in the order they happened, and an
//!   [`Item::SnapshotEnd`]. A snapshot supersedes everything before it, so a receiver may
//!   jump over a gap straight to a `SnapshotBegin`.
//! - At `SnapshotEnd` the receiver removes every entry that neither the snapshot nor a delta
//!   touched since the matching `SnapshotBegin` (mark and sweep): this is how deletions missed
//!   during an outage or an overflow are caught up.
//!
//! # Bounds
//! The sender's log is bounded in entries and bytes. When it is full the producer is never
//! blocked: the log is dropped (counted in `overflow_drops`) and a new snapshot is started
//! (counted in `resyncs`). A gap in a lcore's event sequence numbers (the dataplane's own
//! queue overflowed) is handled the same way. The receiver holds no buffer at all: it applies
//! in order or drops and asks again.

mod receiver;
mod replica;
mod sender;
mod types;

pub use receiver::{Receiver, ReceiverConfig, ReceiverMetrics};
pub use replica::{ConnTableReplica, ModelReplica, ModelValue, Replica, ReplicaStats};
pub use sender::{Sender, SenderConfig, SenderMetrics, SnapshotRequest};
pub use types::{
    Batch, Change, ConnKey, Feedback, Item, LcoreItem, LocalityEntry, LocalityKey,
    MAX_LOCALITY_REALS, ReplicaKey,
};

/// Nanoseconds in a millisecond.
pub(crate) const NS_PER_MS: u64 = 1_000_000;

/// A `Duration` in nanoseconds, saturating.
pub(crate) fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
