//! What the replication stream carries. These mirror `tandem.sync.v1` (proto/), one to one;
//! the gRPC glue converts between the two.

use std::net::Ipv4Addr;

use tandem_core::conn::{ConnEvent, ConnEventKind, ConnRecord};
use tandem_core::lb::{Endpoint, Protocol};

/// The key of a replicated connection or template: its client→VIP key, the one
/// `ConnTable::install` and `ConnTable::uninstall` find it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// TCP or UDP.
    pub proto: Protocol,
    /// The client's endpoint.
    pub client: Endpoint,
    /// The virtual service's endpoint.
    pub vip: Endpoint,
}

impl ConnKey {
    /// The key of a record.
    pub fn of(rec: &ConnRecord) -> ConnKey {
        ConnKey {
            proto: rec.proto,
            client: rec.client,
            vip: rec.vip,
        }
    }
}

/// The most real servers one lblcr set holds on the wire (the kernel's sets are small; a
/// bigger set is truncated by the sender and counted): the bound the dataplane's side of the
/// wire checks too.
pub use tandem_proto::local::MAX_LOCALITY_REALS;

/// The key of a locality entry: which virtual service, which destination IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalityKey {
    /// The virtual service's protocol.
    pub proto: Protocol,
    /// The virtual service's endpoint (the receiver maps it to its own service index).
    pub vip: Endpoint,
    /// The destination IP address the lblc/lblcr scheduler keys on.
    pub dest_ip: Ipv4Addr,
}

/// One lblc/lblcr locality entry: destination IP → the real server (lblc) or server set
/// (lblcr) it was last scheduled to, so cache affinity survives a failover. Fixed size,
/// `Copy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalityEntry {
    /// Which service and destination.
    pub key: LocalityKey,
    reals: [Endpoint; MAX_LOCALITY_REALS],
    len: u8,
}

impl LocalityEntry {
    /// An entry with the first [`MAX_LOCALITY_REALS`] of `reals`; the `bool` says whether
    /// some were left out.
    pub fn new(key: LocalityKey, reals: &[Endpoint]) -> (LocalityEntry, bool) {
        let unset = Endpoint {
            addr: Ipv4Addr::UNSPECIFIED,
            port: 0,
        };
        let mut e = LocalityEntry {
            key,
            reals: [unset; MAX_LOCALITY_REALS],
            len: 0,
        };
        for (slot, r) in e.reals.iter_mut().zip(reals) {
            *slot = *r;
            e.len += 1;
        }
        (e, reals.len() > MAX_LOCALITY_REALS)
    }

    /// The real servers, in the sender's order.
    pub fn reals(&self) -> &[Endpoint] {
        self.reals.get(..usize::from(self.len)).unwrap_or_default()
    }
}

/// The key of anything a [`crate::repl::Replica`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReplicaKey {
    /// A connection or persistence template.
    Conn(ConnKey),
    /// A locality entry.
    Locality(LocalityKey),
}

/// One change of the replicated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Change {
    /// A connection or template was created, changed state, refreshed or deleted (the
    /// dataplane's `ConnEvent` without its per-lcore sequence number).
    Conn {
        /// What happened.
        kind: ConnEventKind,
        /// The entry after the event.
        record: ConnRecord,
    },
    /// A locality entry was set (created or replaced).
    LocalitySet(LocalityEntry),
    /// A locality entry was dropped (expired or its service deleted).
    LocalityRemoved(LocalityKey),
}

impl Change {
    /// The key of the entry it changes.
    pub fn key(&self) -> ReplicaKey {
        match self {
            Change::Conn { record, .. } => ReplicaKey::Conn(ConnKey::of(record)),
            Change::LocalitySet(e) => ReplicaKey::Locality(e.key),
            Change::LocalityRemoved(k) => ReplicaKey::Locality(*k),
        }
    }

    /// Whether the change removes its entry.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Change::Conn {
                kind: ConnEventKind::Deleted(_),
                ..
            } | Change::LocalityRemoved(_)
        )
    }

    /// Roughly what it costs on the wire, for the log's byte bound.
    pub(crate) fn cost(&self) -> usize {
        match self {
            // kind, proto, 3 endpoints, method, dest, service, state, flags, 2 timers.
            Change::Conn { .. } => 48,
            Change::LocalitySet(e) => 16 + 8 * e.reals().len(),
            Change::LocalityRemoved(_) => 16,
        }
    }
}

/// One sequence-numbered element of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    /// A live change (a delta).
    Change(Change),
    /// A full snapshot starts: everything before it is superseded. `id` names the walk.
    SnapshotBegin {
        /// Which snapshot.
        id: u64,
    },
    /// One record of the snapshot (always an upsert).
    Snapshot(Change),
    /// The snapshot `id` is complete: entries it did not refresh may be swept.
    SnapshotEnd {
        /// Which snapshot.
        id: u64,
    },
}

impl Item {
    /// Roughly what it costs on the wire, for the log's byte bound.
    pub(crate) fn cost(&self) -> usize {
        match self {
            Item::Change(c) | Item::Snapshot(c) => c.cost(),
            Item::SnapshotBegin { .. } | Item::SnapshotEnd { .. } => 12,
        }
    }
}

/// Sender → receiver: consecutive items of one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The sender's epoch (its session identity: a new process, or the other director
    /// becoming the sender, is a new epoch and always starts with a snapshot).
    pub epoch: u64,
    /// The sequence number of `items[0]` (of the next item if `items` is empty).
    pub first_seq: u64,
    /// The items, `first_seq`, `first_seq + 1`, …
    pub items: Vec<Item>,
    /// The highest sequence number the sender has assigned, for the receiver's lag.
    pub head_seq: u64,
}

/// Receiver → sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feedback {
    /// Cumulative: everything up to and including `seq` of `epoch` is applied.
    Ack {
        /// The epoch the sequence number belongs to.
        epoch: u64,
        /// The last applied sequence number.
        seq: u64,
    },
    /// Send again from `last_seq + 1` of `epoch` if you still can, or a full snapshot.
    /// `epoch == 0` means "I have nothing of yours".
    Resume {
        /// The epoch the receiver has applied from (0: none).
        epoch: u64,
        /// The last sequence number it applied in that epoch.
        last_seq: u64,
    },
}

/// One element of the local dataplane's event stream (a `LocalEventBatch` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LcoreItem {
    /// An event, with the lcore's sequence number.
    Event(ConnEvent),
    /// A locality change ([`Change::LocalitySet`] / [`Change::LocalityRemoved`]) numbered in
    /// the same lcore sequence as its events (the lcore's lblc/lblcr tables).
    Locality {
        /// The lcore's sequence number.
        seq: u64,
        /// The change.
        change: Change,
    },
    /// The lcore's head mark: the last sequence number it assigned (every event up to it
    /// was handed over or dropped).
    Head(u64),
}
