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
    /// Packed entries ([`batch_to_packed`]) that do not parse.
    #[error("packed entries: {what} at byte {at}")]
    Packed {
        /// What is wrong.
        what: &'static str,
        /// Where, from the start of `EventBatch.packed`.
        at: usize,
    },
}

// ---- scalars and records: `tandem_proto::conn`, shared with the dataplane ---------------

pub use tandem_proto::conn::{PACKED_RECORD_LEN, endpoint_to, record_to};

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
        packed: Vec::new(),
    }
}

/// A batch to the wire in the packed encoding (for a receiver whose resume request said
/// `packed`; see [`resume_accepts_packed`]).
pub fn batch_to_packed(b: &Batch) -> pb::EventBatch {
    let mut packed = Vec::with_capacity(b.items.len() * (PACKED_RECORD_LEN + 2));
    for i in &b.items {
        item_pack(i, &mut packed);
    }
    pb::EventBatch {
        epoch: b.epoch,
        first_seq: b.first_seq,
        entries: Vec::new(),
        head_seq: b.head_seq,
        packed,
    }
}

/// A batch from the wire (entries or packed entries, never both): every entry must be
/// valid, the epoch non-zero, the sequence numbers must not wrap, and `head_seq` must cover
/// the batch.
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
    let items: Vec<Item> = if b.packed.is_empty() {
        b.entries.iter().map(item_from).collect::<Result<_, _>>()?
    } else if b.entries.is_empty() {
        items_unpack(&b.packed)?
    } else {
        return Err(WireError::Ambiguous("batch (entries and packed entries)"));
    };
    let n = items.len() as u64;
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
        items,
        head_seq: b.head_seq,
    })
}

// ---- the packed encoding of stream items (`EventBatch.packed`) --------------------------
//
// Each item is a tag byte and fixed-size big-endian fields:
//   1 delta of a connection/template   kind (u8, the ConnEventKind number), record (30 bytes)
//   2 snapshot record                  record
//   3 locality set (delta)             locality entry
//   4 locality removed (delta)         locality key
//   5 snapshot locality entry          locality entry
//   6 snapshot begin                   id (u64)
//   7 snapshot end                     id (u64)
// record: tandem_proto::conn::record_pack; locality key: protocol (u8), VIP address (4) and
// port (2), destination address (4); locality entry: key, count (u8, at most 8), then each
// real server's address (4) and port (2).

const TAG_CONN: u8 = 1;
const TAG_SNAPSHOT_CONN: u8 = 2;
const TAG_LOCALITY_SET: u8 = 3;
const TAG_LOCALITY_REMOVED: u8 = 4;
const TAG_SNAPSHOT_LOCALITY: u8 = 5;
const TAG_SNAPSHOT_BEGIN: u8 = 6;
const TAG_SNAPSHOT_END: u8 = 7;

/// A protocol or event-kind number as the one byte the packed encoding gives it (all of them
/// are below 16).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn small(v: i32) -> u8 {
    v as u8
}

fn locality_key_pack(k: &LocalityKey, out: &mut Vec<u8>) {
    out.push(small(proto_to(k.proto)));
    out.extend_from_slice(&u32::from(k.vip.addr).to_be_bytes());
    out.extend_from_slice(&k.vip.port.to_be_bytes());
    out.extend_from_slice(&u32::from(k.dest_ip).to_be_bytes());
}

fn locality_pack(e: &LocalityEntry, out: &mut Vec<u8>) {
    locality_key_pack(&e.key, out);
    let reals = e.reals();
    out.push(u8::try_from(reals.len()).unwrap_or(u8::MAX));
    for r in reals {
        out.extend_from_slice(&u32::from(r.addr).to_be_bytes());
        out.extend_from_slice(&r.port.to_be_bytes());
    }
}

fn change_pack(c: &Change, snapshot: bool, out: &mut Vec<u8>) {
    match c {
        Change::Conn { kind, record } => {
            if snapshot {
                out.push(TAG_SNAPSHOT_CONN);
            } else {
                out.push(TAG_CONN);
                out.push(small(kind_to(*kind)));
            }
            tandem_proto::conn::record_pack(record, out);
        }
        Change::LocalitySet(e) => {
            out.push(if snapshot {
                TAG_SNAPSHOT_LOCALITY
            } else {
                TAG_LOCALITY_SET
            });
            locality_pack(e, out);
        }
        // A snapshot never holds a removal; sent as the delta it is (as `item_to` does).
        Change::LocalityRemoved(k) => {
            out.push(TAG_LOCALITY_REMOVED);
            locality_key_pack(k, out);
        }
    }
}

fn item_pack(i: &Item, out: &mut Vec<u8>) {
    match i {
        Item::Change(c) => change_pack(c, false, out),
        Item::Snapshot(c) => change_pack(c, true, out),
        Item::SnapshotBegin { id } => {
            out.push(TAG_SNAPSHOT_BEGIN);
            out.extend_from_slice(&id.to_be_bytes());
        }
        Item::SnapshotEnd { id } => {
            out.push(TAG_SNAPSHOT_END);
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
}

/// A cursor over packed bytes that says where it ran out.
struct Unpack<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Unpack<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let part = self
            .b
            .get(self.at..self.at.saturating_add(n))
            .ok_or(WireError::Packed { what, at: self.at })?;
        self.at += n;
        Ok(part)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(a))
    }

    fn endpoint(&mut self, what: &'static str) -> Result<Endpoint, WireError> {
        let b = self.take(6, what)?;
        Ok(Endpoint {
            addr: Ipv4Addr::new(b[0], b[1], b[2], b[3]),
            port: u16::from_be_bytes([b[4], b[5]]),
        })
    }

    fn record(&mut self) -> Result<ConnRecord, WireError> {
        let b = self.take(PACKED_RECORD_LEN, "truncated record")?;
        Ok(tandem_proto::conn::record_unpack(b)?)
    }

    fn locality_key(&mut self) -> Result<LocalityKey, WireError> {
        let proto = proto_from("locality.key.proto", i32::from(self.u8("truncated key")?))?;
        let vip = self.endpoint("truncated key")?;
        let dest_ip = Ipv4Addr::from(self.u32("truncated key")?);
        Ok(LocalityKey {
            proto,
            vip,
            dest_ip,
        })
    }

    fn locality(&mut self) -> Result<LocalityEntry, WireError> {
        let key = self.locality_key()?;
        let n = usize::from(self.u8("truncated locality entry")?);
        if n > MAX_LOCALITY_REALS {
            return Err(WireError::TooManyReals(n));
        }
        let mut reals = [Endpoint {
            addr: Ipv4Addr::UNSPECIFIED,
            port: 0,
        }; MAX_LOCALITY_REALS];
        for r in reals.iter_mut().take(n) {
            *r = self.endpoint("truncated locality entry")?;
        }
        Ok(LocalityEntry::new(key, &reals[..n]).0)
    }
}

/// The items of `EventBatch.packed`, every one checked.
fn items_unpack(b: &[u8]) -> Result<Vec<Item>, WireError> {
    let mut u = Unpack { b, at: 0 };
    // Every item takes at least 9 bytes: never reserve more than the bytes could hold.
    let mut items = Vec::with_capacity(b.len() / 9);
    while u.at < b.len() {
        let at = u.at;
        let item = match u.u8("truncated tag")? {
            TAG_CONN => {
                let kind = kind_from(i32::from(u.u8("truncated event kind")?))?;
                Item::Change(Change::Conn {
                    kind,
                    record: u.record()?,
                })
            }
            TAG_SNAPSHOT_CONN => Item::Snapshot(Change::Conn {
                kind: ConnEventKind::Refreshed,
                record: u.record()?,
            }),
            TAG_LOCALITY_SET => Item::Change(Change::LocalitySet(u.locality()?)),
            TAG_LOCALITY_REMOVED => Item::Change(Change::LocalityRemoved(u.locality_key()?)),
            TAG_SNAPSHOT_LOCALITY => Item::Snapshot(Change::LocalitySet(u.locality()?)),
            TAG_SNAPSHOT_BEGIN => Item::SnapshotBegin {
                id: u.u64("truncated snapshot id")?,
            },
            TAG_SNAPSHOT_END => Item::SnapshotEnd {
                id: u.u64("truncated snapshot id")?,
            },
            _ => {
                return Err(WireError::Packed {
                    what: "unknown tag",
                    at,
                });
            }
        };
        items.push(item);
    }
    Ok(items)
}

/// Whether `m` is a resume request of a receiver that reads packed entries (`None`: not a
/// resume request). The sender's link keeps the answer until the next resume request.
pub fn resume_accepts_packed(m: &pb::ReceiverMessage) -> Option<bool> {
    match &m.msg {
        Some(pb::receiver_message::Msg::Resume(r)) => Some(r.packed),
        _ => None,
    }
}

/// Receiver feedback to the wire.
pub fn feedback_to(f: &Feedback) -> pb::ReceiverMessage {
    use pb::receiver_message::Msg;
    let msg = match *f {
        Feedback::Ack { epoch, seq } => Msg::Ack(pb::Ack { epoch, seq }),
        // This receiver reads packed entries.
        Feedback::Resume { epoch, last_seq } => Msg::Resume(pb::ResumeRequest {
            epoch,
            last_seq,
            packed: true,
        }),
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

/// A local event and a lcore's head mark to the wire (the reference dataplane's side): the
/// dataplane's own conversions.
pub use tandem_proto::local::{local_event_to, local_head_to};

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
