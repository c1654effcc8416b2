//! Conversions between the `tandem.sync.v1` wire messages ([`tandem_proto::sync`]) and the
//! sans-IO types of [`crate::repl`] and [`crate::role`].
//!
//! Domain → wire never fails. Wire → domain checks every field and refuses the whole message
//! with a [`WireError`] naming the field: the daemon counts the refusal and drops the
//! message (a dropped batch is a gap the receiver asks to resume over), it never panics.
//!
//! Real-server and service *indices* are not on the wire (each director maps endpoints to its
//! own configuration), so a record read from the wire has `dest` and `service` 0, and of its
//! flags only `TEMPLATE` travels (activity is recomputed from the state).

use std::net::Ipv4Addr;

use tandem_core::conn::{ConnEvent, ConnEventKind, ConnFlags, ConnRecord};
use tandem_core::lb::{DestId, Endpoint, Protocol, ServiceId};
use tandem_proto::sync as pb;

use crate::repl::{Batch, Change, Feedback, Item, LocalityEntry, LocalityKey, MAX_LOCALITY_REALS};
use crate::role::{Heartbeat, RoleState};

/// A wire message the daemon refuses (and counts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A required field or oneof is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// An enum left unspecified or out of range.
    #[error("{field}: {value} is not a valid value")]
    Enum {
        /// Which field.
        field: &'static str,
        /// What was sent.
        value: i32,
    },
    /// A number out of its range.
    #[error("{field}: {value} is out of range")]
    Range {
        /// Which field.
        field: &'static str,
        /// What was sent.
        value: u64,
    },
    /// A locality entry with more real servers than [`MAX_LOCALITY_REALS`].
    #[error("locality entry with {0} real servers (at most {MAX_LOCALITY_REALS})")]
    TooManyReals(usize),
    /// A snapshot record that is not an upsert.
    #[error("snapshot record cannot be a removal")]
    SnapshotRemoval,
    /// A message with more than one of its alternative payloads.
    #[error("{0}: more than one payload")]
    Ambiguous(&'static str),
}

// ---- scalars and records: `tandem_proto::conn`, shared with the dataplane ---------------

pub use tandem_proto::conn::{endpoint_to, record_to};

use tandem_proto::conn::{self as shared, RecordError};

impl From<RecordError> for WireError {
    fn from(e: RecordError) -> WireError {
        match e {
            RecordError::Missing(field) => WireError::Missing(field),
            RecordError::Enum { field, value } => WireError::Enum { field, value },
            RecordError::Range { field, value } => WireError::Range { field, value },
        }
    }
}

/// An endpoint from the wire (port 0 is allowed: persistence templates use it).
pub fn endpoint_from(field: &'static str, e: Option<&pb::Endpoint>) -> Result<Endpoint, WireError> {
    Ok(shared::endpoint_from(field, e)?)
}

fn proto_to(p: Protocol) -> i32 {
    shared::protocol_to(p)
}

fn proto_from(field: &'static str, v: i32) -> Result<Protocol, WireError> {
    Ok(shared::protocol_from(field, v)?)
}

fn kind_to(k: ConnEventKind) -> i32 {
    shared::kind_to(k)
}

fn kind_from(v: i32) -> Result<ConnEventKind, WireError> {
    Ok(shared::kind_from(v)?)
}

/// A connection record from the wire; `dest` and `service` are 0 (see the module doc).
pub fn record_from(r: Option<&pb::ConnRecord>) -> Result<ConnRecord, WireError> {
    Ok(shared::record_from(r)?)
}

/// What survives a trip through the wire: `dest`/`service` zeroed, only `TEMPLATE` kept.
pub fn wire_normal(r: &ConnRecord) -> ConnRecord {
    ConnRecord {
        dest: DestId(0),
        service: ServiceId(0),
        flags: if r.flags.contains(ConnFlags::TEMPLATE) {
            ConnFlags::TEMPLATE
        } else {
            ConnFlags::EMPTY
        },
        ..*r
    }
}

fn locality_key_to(k: &LocalityKey) -> pb::LocalityKey {
    pb::LocalityKey {
        proto: proto_to(k.proto),
        vip: Some(endpoint_to(k.vip)),
        dest_ip: u32::from(k.dest_ip),
    }
}

fn locality_key_from(k: Option<&pb::LocalityKey>) -> Result<LocalityKey, WireError> {
    let k = k.ok_or(WireError::Missing("locality.key"))?;
    Ok(LocalityKey {
        proto: proto_from("locality.key.proto", k.proto)?,
        vip: endpoint_from("locality.key.vip", k.vip.as_ref())?,
        dest_ip: Ipv4Addr::from(k.dest_ip),
    })
}

fn locality_to(e: &LocalityEntry) -> pb::LocalityEntry {
    pb::LocalityEntry {
        key: Some(locality_key_to(&e.key)),
        reals: e.reals().iter().map(|r| endpoint_to(*r)).collect(),
    }
}

fn locality_from(e: &pb::LocalityEntry) -> Result<LocalityEntry, WireError> {
    if e.reals.len() > MAX_LOCALITY_REALS {
        return Err(WireError::TooManyReals(e.reals.len()));
    }
    let key = locality_key_from(e.key.as_ref())?;
    let reals = e
        .reals
        .iter()
        .map(|r| endpoint_from("locality.reals", Some(r)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LocalityEntry::new(key, &reals).0)
}

// ---- stream items ----------------------------------------------------------------------

/// A change as a wire entry (a delta).
pub fn change_to_entry(c: &Change) -> pb::Entry {
    use pb::entry::Item as E;
    let item = match c {
        Change::Conn { kind, record } => E::Conn(pb::ConnEvent {
            kind: kind_to(*kind),
            record: Some(record_to(record)),
        }),
        Change::LocalitySet(e) => E::LocalitySet(locality_to(e)),
        Change::LocalityRemoved(k) => E::LocalityRemoved(locality_key_to(k)),
    };
    pb::Entry { item: Some(item) }
}

/// A stream item to the wire. A snapshot record is always an upsert: its event kind is not
/// sent (it is read back as `Refreshed`).
pub fn item_to(i: &Item) -> pb::Entry {
    use pb::entry::Item as E;
    let item = match i {
        Item::Change(c) => return change_to_entry(c),
        Item::SnapshotBegin { id } => E::SnapshotBegin(pb::SnapshotBegin { snapshot_id: *id }),
        Item::SnapshotEnd { id } => E::SnapshotEnd(pb::SnapshotEnd { snapshot_id: *id }),
        Item::Snapshot(Change::Conn { record, .. }) => E::SnapshotConn(record_to(record)),
        Item::Snapshot(Change::LocalitySet(e)) => E::SnapshotLocality(locality_to(e)),
        // Never produced (a snapshot holds upserts only); sent as the delta it is.
        Item::Snapshot(c @ Change::LocalityRemoved(_)) => return change_to_entry(c),
    };
    pb::Entry { item: Some(item) }
}

/// A stream item from the wire.
pub fn item_from(e: &pb::Entry) -> Result<Item, WireError> {
    use pb::entry::Item as E;
    Ok(
        match e.item.as_ref().ok_or(WireError::Missing("entry.item"))? {
            E::Conn(ev) => Item::Change(Change::Conn {
                kind: kind_from(ev.kind)?,
                record: record_from(ev.record.as_ref())?,
            }),
            E::LocalitySet(l) => Item::Change(Change::LocalitySet(locality_from(l)?)),
            E::LocalityRemoved(k) => {
                Item::Change(Change::LocalityRemoved(locality_key_from(Some(k))?))
            }
            E::SnapshotBegin(b) => Item::SnapshotBegin { id: b.snapshot_id },
            E::SnapshotConn(r) => Item::Snapshot(Change::Conn {
                kind: ConnEventKind::Refreshed,
                record: record_from(Some(r))?,
            }),
            E::SnapshotLocality(l) => Item::Snapshot(Change::LocalitySet(locality_from(l)?)),
            E::SnapshotEnd(b) => Item::SnapshotEnd { id: b.snapshot_id },
        },
    )
}

/// A batch to the wire.
pub fn batch_to(b: &Batch) -> pb::EventBatch {
    pb::EventBatch {
        epoch: b.epoch,
        first_seq: b.first_seq,
        entries: b.items.iter().map(item_to).collect(),
        head_seq: b.head_seq,
    }
}

/// A batch from the wire: every entry must be valid, the epoch non-zero, the sequence
/// numbers must not wrap, and `head_seq` must cover the batch.
pub fn batch_from(b: &pb::EventBatch) -> Result<Batch, WireError> {
    if b.epoch == 0 {
        return Err(WireError::Range {
            field: "batch.epoch",
            value: 0,
        });
    }
    if b.first_seq == 0 {
        return Err(WireError::Range {
            field: "batch.first_seq",
            value: 0,
        });
    }
    let n = b.entries.len() as u64;
    let last = b
        .first_seq
        .checked_add(n)
        .ok_or(WireError::Range {
            field: "batch.first_seq",
            value: b.first_seq,
        })?
        .saturating_sub(1);
    if n > 0 && b.head_seq < last {
        return Err(WireError::Range {
            field: "batch.head_seq",
            value: b.head_seq,
        });
    }
    Ok(Batch {
        epoch: b.epoch,
        first_seq: b.first_seq,
        items: b.entries.iter().map(item_from).collect::<Result<_, _>>()?,
        head_seq: b.head_seq,
    })
}

/// Receiver feedback to the wire.
pub fn feedback_to(f: &Feedback) -> pb::ReceiverMessage {
    use pb::receiver_message::Msg;
    let msg = match *f {
        Feedback::Ack { epoch, seq } => Msg::Ack(pb::Ack { epoch, seq }),
        Feedback::Resume { epoch, last_seq } => Msg::Resume(pb::ResumeRequest { epoch, last_seq }),
    };
    pb::ReceiverMessage { msg: Some(msg) }
}

/// Receiver feedback from the wire.
pub fn feedback_from(m: &pb::ReceiverMessage) -> Result<Feedback, WireError> {
    use pb::receiver_message::Msg;
    Ok(
        match m
            .msg
            .as_ref()
            .ok_or(WireError::Missing("receiver_message.msg"))?
        {
            Msg::Ack(a) => Feedback::Ack {
                epoch: a.epoch,
                seq: a.seq,
            },
            Msg::Resume(r) => Feedback::Resume {
                epoch: r.epoch,
                last_seq: r.last_seq,
            },
        },
    )
}

// ---- heartbeats --------------------------------------------------------------------------

/// A role to the wire.
pub fn role_to(s: RoleState) -> pb::Role {
    match s {
        RoleState::Init => pb::Role::Init,
        RoleState::Syncing => pb::Role::Syncing,
        RoleState::Standby => pb::Role::Standby,
        RoleState::Active => pb::Role::Active,
        RoleState::Fault => pb::Role::Fault,
    }
}

/// A role from the wire; `None` for `ROLE_UNSPECIFIED`.
pub fn role_from(field: &'static str, v: i32) -> Result<Option<RoleState>, WireError> {
    Ok(Some(match pb::Role::try_from(v) {
        Ok(pb::Role::Unspecified) => return Ok(None),
        Ok(pb::Role::Init) => RoleState::Init,
        Ok(pb::Role::Syncing) => RoleState::Syncing,
        Ok(pb::Role::Standby) => RoleState::Standby,
        Ok(pb::Role::Active) => RoleState::Active,
        Ok(pb::Role::Fault) => RoleState::Fault,
        Err(_) => return Err(WireError::Enum { field, value: v }),
    }))
}

/// A heartbeat with the sender's replication position (for status only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHeartbeat {
    /// What the role machine takes.
    pub hb: Heartbeat,
    /// The peer's sender epoch (active) or applied epoch (standby).
    pub epoch: u64,
    /// The peer's head (active) or applied (standby) sequence number.
    pub sequence: u64,
}

/// A heartbeat to the wire.
pub fn heartbeat_to(h: &PeerHeartbeat) -> pb::HeartbeatMessage {
    let hb = &h.hb;
    pb::HeartbeatMessage {
        node_id: hb.node_id,
        priority: u32::from(hb.priority),
        incarnation: hb.incarnation,
        seq: hb.seq,
        role: role_to(hb.state) as i32,
        sync_complete: hb.sync_complete,
        preempt_request: hb.preempt_request,
        sees_peer: hb.sees_peer.map_or(pb::Role::Unspecified, role_to) as i32,
        epoch: h.epoch,
        sequence: h.sequence,
    }
}

/// A heartbeat from the wire: priority 1..=255, a specified role.
pub fn heartbeat_from(m: &pb::HeartbeatMessage) -> Result<PeerHeartbeat, WireError> {
    let priority = u8::try_from(m.priority)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(WireError::Range {
            field: "heartbeat.priority",
            value: u64::from(m.priority),
        })?;
    let state = role_from("heartbeat.role", m.role)?.ok_or(WireError::Enum {
        field: "heartbeat.role",
        value: m.role,
    })?;
    Ok(PeerHeartbeat {
        hb: Heartbeat {
            node_id: m.node_id,
            priority,
            incarnation: m.incarnation,
            seq: m.seq,
            state,
            sync_complete: m.sync_complete,
            preempt_request: m.preempt_request,
            sees_peer: role_from("heartbeat.sees_peer", m.sees_peer)?,
        },
        epoch: m.epoch,
        sequence: m.sequence,
    })
}

// ---- the local dataplane's stream ----------------------------------------------------------

/// One message of `Local.WatchConnections`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalMsg {
    /// The watch's snapshot starts.
    SnapshotBegin(u64),
    /// Snapshot records (upserts).
    SnapshotChunk(Vec<Change>),
    /// The watch's snapshot is complete.
    SnapshotEnd(u64),
    /// Events and head marks, each with its lcore.
    Events(Vec<(usize, LcoreItem)>),
    /// A locality delta.
    Locality(Change),
}

pub use crate::repl::LcoreItem;

/// A local event to the wire (the reference dataplane's side).
pub fn local_event_to(lcore: u32, ev: &ConnEvent) -> pb::LocalEvent {
    pb::LocalEvent {
        lcore,
        seq: ev.seq,
        event: Some(pb::ConnEvent {
            kind: kind_to(ev.kind),
            record: Some(record_to(&ev.record)),
        }),
        locality_set: None,
        locality_removed: None,
    }
}

/// A lcore's numbered locality change to the wire (`None` for a change that is not a
/// locality one).
pub fn local_locality_to(lcore: u32, seq: u64, change: &Change) -> Option<pb::LocalEvent> {
    let (set, removed) = match change {
        Change::LocalitySet(e) => (Some(locality_to(e)), None),
        Change::LocalityRemoved(k) => (None, Some(locality_key_to(k))),
        Change::Conn { .. } => return None,
    };
    Some(pb::LocalEvent {
        lcore,
        seq,
        event: None,
        locality_set: set,
        locality_removed: removed,
    })
}

/// A lcore's head mark to the wire.
pub fn local_head_to(lcore: u32, last_seq: u64) -> pb::LocalEvent {
    pb::LocalEvent {
        lcore,
        seq: last_seq,
        event: None,
        locality_set: None,
        locality_removed: None,
    }
}

/// A `WatchConnections` message from the wire.
pub fn local_from(m: &pb::LocalEvents) -> Result<LocalMsg, WireError> {
    use pb::local_events::Msg;
    Ok(
        match m
            .msg
            .as_ref()
            .ok_or(WireError::Missing("local_events.msg"))?
        {
            Msg::SnapshotBegin(b) => LocalMsg::SnapshotBegin(b.snapshot_id),
            Msg::SnapshotEnd(b) => LocalMsg::SnapshotEnd(b.snapshot_id),
            Msg::SnapshotChunk(c) => {
                let mut v = Vec::with_capacity(c.conns.len() + c.locality.len());
                for r in &c.conns {
                    v.push(Change::Conn {
                        kind: ConnEventKind::Refreshed,
                        record: record_from(Some(r))?,
                    });
                }
                for l in &c.locality {
                    v.push(Change::LocalitySet(locality_from(l)?));
                }
                LocalMsg::SnapshotChunk(v)
            }
            Msg::Events(b) => {
                let mut v = Vec::with_capacity(b.events.len());
                for e in &b.events {
                    let lcore = usize::try_from(e.lcore).map_err(|_| WireError::Range {
                        field: "local_event.lcore",
                        value: u64::from(e.lcore),
                    })?;
                    let change = match (&e.event, &e.locality_set, &e.locality_removed) {
                        (None, None, None) => {
                            v.push((lcore, LcoreItem::Head(e.seq)));
                            continue;
                        }
                        (Some(_), None, None) => None,
                        (None, Some(l), None) => Some(Change::LocalitySet(locality_from(l)?)),
                        (None, None, Some(k)) => {
                            Some(Change::LocalityRemoved(locality_key_from(Some(k))?))
                        }
                        _ => return Err(WireError::Ambiguous("local_event")),
                    };
                    if e.seq == 0 {
                        return Err(WireError::Range {
                            field: "local_event.seq",
                            value: 0,
                        });
                    }
                    if let Some(change) = change {
                        v.push((lcore, LcoreItem::Locality { seq: e.seq, change }));
                        continue;
                    }
                    let Some(ev) = e.event.as_ref() else {
                        continue;
                    };
                    v.push((
                        lcore,
                        LcoreItem::Event(ConnEvent {
                            kind: kind_from(ev.kind)?,
                            seq: e.seq,
                            record: record_from(ev.record.as_ref())?,
                        }),
                    ));
                }
                LocalMsg::Events(v)
            }
            Msg::LocalitySet(l) => LocalMsg::Locality(Change::LocalitySet(locality_from(l)?)),
            Msg::LocalityRemoved(k) => {
                LocalMsg::Locality(Change::LocalityRemoved(locality_key_from(Some(k))?))
            }
        },
    )
}
