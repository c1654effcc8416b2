//! Connection records and events between the core's types and `tandem.sync.v1`'s messages,
//! for the dataplane's side of `Local`. Records and event kinds go through
//! `tandem_proto::conn`, the conversion syncd uses too, so the two ends cannot drift apart.
//!
//! Indices are not on the wire: a record read here has `dest` and `service` 0 until
//! [`super::service`] maps them to this director's ids.

use tandem_core::conn::{ConnEvent, ConnEventKind, ConnRecord};
use tandem_proto::sync as pb;

/// A record or entry refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {what}")]
pub struct WireError {
    /// Which field.
    pub field: &'static str,
    /// What is wrong with it.
    pub what: String,
}

fn err(field: &'static str, what: impl std::fmt::Display) -> WireError {
    WireError {
        field,
        what: what.to_string(),
    }
}

pub use tandem_proto::conn::record_to;

use tandem_proto::conn::{self as shared, RecordError};

impl From<RecordError> for WireError {
    fn from(e: RecordError) -> WireError {
        let what = match e {
            RecordError::Missing(_) => "missing".to_string(),
            RecordError::Enum { value, .. } => format!("{value} is not a valid value"),
            RecordError::Range { value, .. } => format!("{value} is out of range"),
        };
        WireError {
            field: e.field(),
            what,
        }
    }
}

fn kind_to(k: ConnEventKind) -> i32 {
    shared::kind_to(k)
}

fn is_deletion(v: i32) -> Result<bool, WireError> {
    Ok(matches!(shared::kind_from(v)?, ConnEventKind::Deleted(_)))
}

/// A record from the wire (`dest`, `service` 0; only `TEMPLATE` of the flags).
pub fn record_from(r: Option<&pb::ConnRecord>) -> Result<ConnRecord, WireError> {
    Ok(shared::record_from(r)?)
}

/// One lcore's event to the wire.
pub fn local_event_to(lcore: u32, ev: &ConnEvent) -> pb::LocalEvent {
    pb::LocalEvent {
        lcore,
        seq: ev.seq,
        event: Some(pb::ConnEvent {
            kind: kind_to(ev.kind),
            record: Some(record_to(&ev.record)),
        }),
    }
}

/// One lcore's head mark to the wire (a `LocalEvent` without an event).
pub fn local_head_to(lcore: u32, last_seq: u64) -> pb::LocalEvent {
    pb::LocalEvent {
        lcore,
        seq: last_seq,
        event: None,
    }
}

/// What one `ApplyRequest` entry asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyEntry {
    /// Install or update (a delta or a snapshot record).
    Upsert(ConnRecord),
    /// Remove (a deletion delta).
    Remove(ConnRecord),
    /// A snapshot begins: mark.
    SnapshotBegin,
    /// The snapshot ended: sweep.
    SnapshotEnd,
    /// A lblc/lblcr locality entry (not installed by this dataplane yet).
    Locality,
}

/// An `ApplyRequest` entry from the wire.
pub fn apply_entry_from(e: &pb::Entry) -> Result<ApplyEntry, WireError> {
    use pb::entry::Item;
    Ok(
        match e
            .item
            .as_ref()
            .ok_or_else(|| err("entry.item", "missing"))?
        {
            Item::Conn(ev) => {
                let r = record_from(ev.record.as_ref())?;
                if is_deletion(ev.kind)? {
                    ApplyEntry::Remove(r)
                } else {
                    ApplyEntry::Upsert(r)
                }
            }
            Item::SnapshotConn(r) => ApplyEntry::Upsert(record_from(Some(r))?),
            Item::SnapshotBegin(_) => ApplyEntry::SnapshotBegin,
            Item::SnapshotEnd(_) => ApplyEntry::SnapshotEnd,
            Item::LocalitySet(_) | Item::LocalityRemoved(_) | Item::SnapshotLocality(_) => {
                ApplyEntry::Locality
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tandem_core::conn::{ConnFlags, ConnState};
    use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};

    fn rec(state: ConnState, template: bool) -> ConnRecord {
        ConnRecord {
            proto: Protocol::Tcp,
            client: Endpoint::new(Ipv4Addr::new(10, 0, 0, 5), 40000),
            vip: Endpoint::new(Ipv4Addr::new(10, 0, 0, 100), 80),
            real: Endpoint::new(Ipv4Addr::new(10, 1, 0, 11), 8080),
            method: ForwardMethod::Nat,
            dest: DestId(0),
            service: ServiceId(0),
            state,
            flags: if template {
                ConnFlags::TEMPLATE
            } else {
                ConnFlags::EMPTY
            },
            timeout_ms: 900_000,
            remaining_ms: 899_000,
        }
    }

    #[test]
    fn records_round_trip() {
        for s in [
            ConnState::None,
            ConnState::Established,
            ConnState::SynRecv,
            ConnState::Udp,
        ] {
            for t in [false, true] {
                let r = rec(s, t);
                assert_eq!(record_from(Some(&record_to(&r))), Ok(r));
            }
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut w = record_to(&rec(ConnState::Established, false));
        w.state = 99;
        assert_eq!(record_from(Some(&w)).unwrap_err().field, "record.state");
        let mut w = record_to(&rec(ConnState::Established, false));
        w.client = Some(pb::Endpoint {
            addr: 1,
            port: 70_000,
        });
        assert_eq!(record_from(Some(&w)).unwrap_err().field, "record.client");
        assert_eq!(
            apply_entry_from(&pb::Entry { item: None })
                .unwrap_err()
                .field,
            "entry.item"
        );
    }
}
