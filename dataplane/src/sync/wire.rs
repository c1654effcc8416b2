//! Connection records and events between the core's types and `tandem.sync.v1`'s messages,
//! for the dataplane's side of `Local`. The numbering is `syncd/src/wire.rs`'s (states are the
//! kernel's + 1, so 0 stays "unspecified"); the integration tests decode what the dataplane
//! sends with syncd's own conversions, so the two cannot drift apart unnoticed.
//!
//! Indices are not on the wire: a record read here has `dest` and `service` 0 until
//! [`super::service`] maps them to this director's ids.

use std::net::Ipv4Addr;

use tandem_core::conn::{ConnEvent, ConnEventKind, ConnFlags, ConnRecord, ConnState, DeleteReason};
use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};
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

/// An endpoint to the wire.
pub fn endpoint_to(e: Endpoint) -> pb::Endpoint {
    pb::Endpoint {
        addr: u32::from(e.addr),
        port: u32::from(e.port),
    }
}

fn endpoint_from(field: &'static str, e: Option<&pb::Endpoint>) -> Result<Endpoint, WireError> {
    let e = e.ok_or_else(|| err(field, "missing"))?;
    let port = u16::try_from(e.port).map_err(|_| err(field, format!("port {}", e.port)))?;
    Ok(Endpoint {
        addr: Ipv4Addr::from(e.addr),
        port,
    })
}

fn proto_to(p: Protocol) -> i32 {
    match p {
        Protocol::Tcp => pb::Protocol::Tcp as i32,
        Protocol::Udp => pb::Protocol::Udp as i32,
    }
}

fn proto_from(v: i32) -> Result<Protocol, WireError> {
    match pb::Protocol::try_from(v) {
        Ok(pb::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Ok(Protocol::Udp),
        _ => Err(err("record.proto", format!("{v} is not a valid value"))),
    }
}

fn method_to(m: ForwardMethod) -> i32 {
    match m {
        ForwardMethod::Nat => pb::ForwardMethod::Nat as i32,
        ForwardMethod::Tunnel => pb::ForwardMethod::Tunnel as i32,
        ForwardMethod::DirectRoute => pb::ForwardMethod::DirectRoute as i32,
    }
}

fn method_from(v: i32) -> Result<ForwardMethod, WireError> {
    match pb::ForwardMethod::try_from(v) {
        Ok(pb::ForwardMethod::Nat) => Ok(ForwardMethod::Nat),
        Ok(pb::ForwardMethod::Tunnel) => Ok(ForwardMethod::Tunnel),
        Ok(pb::ForwardMethod::DirectRoute) => Ok(ForwardMethod::DirectRoute),
        _ => Err(err("record.method", format!("{v} is not a valid value"))),
    }
}

fn state_from(v: i32) -> Result<ConnState, WireError> {
    v.checked_sub(1)
        .and_then(|n| u8::try_from(n).ok())
        .and_then(ConnState::from_u8)
        .ok_or_else(|| err("record.state", format!("{v} is not a valid value")))
}

fn kind_to(k: ConnEventKind) -> i32 {
    (match k {
        ConnEventKind::Created => pb::ConnEventKind::Created,
        ConnEventKind::StateChanged => pb::ConnEventKind::StateChanged,
        ConnEventKind::Refreshed => pb::ConnEventKind::Refreshed,
        ConnEventKind::Deleted(DeleteReason::Expired) => pb::ConnEventKind::Expired,
        ConnEventKind::Deleted(DeleteReason::Removed) => pb::ConnEventKind::Removed,
        ConnEventKind::Deleted(DeleteReason::Flushed) => pb::ConnEventKind::Flushed,
    }) as i32
}

fn is_deletion(v: i32) -> Result<bool, WireError> {
    match pb::ConnEventKind::try_from(v) {
        Ok(
            pb::ConnEventKind::Created
            | pb::ConnEventKind::StateChanged
            | pb::ConnEventKind::Refreshed,
        ) => Ok(false),
        Ok(
            pb::ConnEventKind::Expired | pb::ConnEventKind::Removed | pb::ConnEventKind::Flushed,
        ) => Ok(true),
        _ => Err(err("event.kind", format!("{v} is not a valid value"))),
    }
}

/// A record to the wire.
pub fn record_to(r: &ConnRecord) -> pb::ConnRecord {
    pb::ConnRecord {
        proto: proto_to(r.proto),
        client: Some(endpoint_to(r.client)),
        vip: Some(endpoint_to(r.vip)),
        real: Some(endpoint_to(r.real)),
        method: method_to(r.method),
        state: i32::from(r.state as u8) + 1,
        template: r.flags.contains(ConnFlags::TEMPLATE),
        timeout_ms: r.timeout_ms,
        remaining_ms: r.remaining_ms,
    }
}

/// A record from the wire (`dest`, `service` 0; only `TEMPLATE` of the flags).
pub fn record_from(r: Option<&pb::ConnRecord>) -> Result<ConnRecord, WireError> {
    let r = r.ok_or_else(|| err("record", "missing"))?;
    Ok(ConnRecord {
        proto: proto_from(r.proto)?,
        client: endpoint_from("record.client", r.client.as_ref())?,
        vip: endpoint_from("record.vip", r.vip.as_ref())?,
        real: endpoint_from("record.real", r.real.as_ref())?,
        method: method_from(r.method)?,
        dest: DestId(0),
        service: ServiceId(0),
        state: state_from(r.state)?,
        flags: if r.template {
            ConnFlags::TEMPLATE
        } else {
            ConnFlags::EMPTY
        },
        timeout_ms: r.timeout_ms,
        remaining_ms: r.remaining_ms,
    })
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
