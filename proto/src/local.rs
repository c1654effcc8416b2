//! Connection records, events and locality entries between the core's types and
//! `tandem.sync.v1`'s messages, for the dataplane's side of `Local`: what it streams to syncd
//! and what `ApplyConnections` asks of it. Records and event kinds go through [`crate::conn`],
//! the conversion syncd uses too, so the two ends cannot drift apart. Here, not in the
//! dataplane (which links DPDK), so that the fuzz target `local_apply` can run it.
//!
//! Indices are not on the wire: a record read here has `dest` and `service` 0 until it is
//! mapped to the director's own ids ([`map_record`], [`map_locality`]; [`locality_to_wire`]
//! the other way), here too for the same reason.

use std::net::Ipv4Addr;

use crate::sync as pb;
use tandem_core::balance::LocalityChange;
use tandem_core::conn::{ConnEvent, ConnEventKind, ConnFlags, ConnRecord};
use tandem_core::lb::{DestId, Endpoint, Protocol, ServiceId};
use tandem_core::sched::{DestSet, LblcEntry, LblcrEntry, LocalityEntry, SchedulerKind};
use tandem_core::service::ServiceSet;

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

pub use crate::conn::record_to;

use crate::conn::{self as shared, RecordError};

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
            kind: shared::kind_to(ev.kind),
            record: Some(record_to(&ev.record)),
        }),
        locality_set: None,
        locality_removed: None,
    }
}

/// The most real servers of one locality entry on the wire (the core's lblcr sets hold at
/// most as many; syncd's replication uses this bound too).
pub const MAX_LOCALITY_REALS: usize = 8;

/// A lblc/lblcr locality entry with endpoints instead of this director's ids: which
/// service (protocol, VIP:port), which destination address, which real servers (one for
/// lblc; newest first for lblcr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireLocality {
    /// The service's protocol.
    pub proto: Protocol,
    /// The service's VIP:port.
    pub vip: Endpoint,
    /// The destination address the scheduler keys on.
    pub dest_ip: Ipv4Addr,
    /// The real servers (empty for a removal's key).
    pub reals: Vec<Endpoint>,
}

/// A locality entry's key to the wire (`locality_removed`).
pub fn locality_key_to(l: &WireLocality) -> pb::LocalityKey {
    pb::LocalityKey {
        proto: shared::protocol_to(l.proto),
        vip: Some(shared::endpoint_to(l.vip)),
        dest_ip: u32::from(l.dest_ip),
    }
}

/// A locality entry to the wire (snapshot chunks and `locality_set`).
pub fn locality_to(l: &WireLocality) -> pb::LocalityEntry {
    pb::LocalityEntry {
        key: Some(locality_key_to(l)),
        reals: l.reals.iter().map(|r| shared::endpoint_to(*r)).collect(),
    }
}

/// One lcore's numbered locality change to the wire: `Some` entry = set, `None` = removed
/// (only `l`'s key is used).
pub fn local_locality_to(lcore: u32, seq: u64, l: &WireLocality, set: bool) -> pb::LocalEvent {
    pb::LocalEvent {
        lcore,
        seq,
        event: None,
        locality_set: set.then(|| locality_to(l)),
        locality_removed: (!set).then(|| locality_key_to(l)),
    }
}

fn locality_key_from(k: Option<&pb::LocalityKey>) -> Result<WireLocality, WireError> {
    let k = k.ok_or_else(|| err("locality.key", "missing"))?;
    Ok(WireLocality {
        proto: shared::protocol_from("locality.key.proto", k.proto)?,
        vip: shared::endpoint_from("locality.key.vip", k.vip.as_ref())?,
        dest_ip: Ipv4Addr::from(k.dest_ip),
        reals: Vec::new(),
    })
}

fn locality_from(e: &pb::LocalityEntry) -> Result<WireLocality, WireError> {
    if e.reals.is_empty() || e.reals.len() > MAX_LOCALITY_REALS {
        return Err(err(
            "locality.reals",
            format!("{} real servers (1 to {MAX_LOCALITY_REALS})", e.reals.len()),
        ));
    }
    let mut l = locality_key_from(e.key.as_ref())?;
    for r in &e.reals {
        l.reals
            .push(shared::endpoint_from("locality.reals", Some(r))?);
    }
    Ok(l)
}

/// One lcore's head mark to the wire (a `LocalEvent` without an event).
pub fn local_head_to(lcore: u32, last_seq: u64) -> pb::LocalEvent {
    pb::LocalEvent {
        lcore,
        seq: last_seq,
        event: None,
        locality_set: None,
        locality_removed: None,
    }
}

/// What one `ApplyRequest` entry asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyEntry {
    /// Install or update (a delta or a snapshot record).
    Upsert(ConnRecord),
    /// Remove (a deletion delta).
    Remove(ConnRecord),
    /// A snapshot begins: mark.
    SnapshotBegin,
    /// The snapshot ended: sweep.
    SnapshotEnd,
    /// Install or replace a lblc/lblcr locality entry (a delta or a snapshot record).
    LocalitySet(WireLocality),
    /// Remove a locality entry (only the key is set).
    LocalityRemoved(WireLocality),
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
            Item::LocalitySet(l) | Item::SnapshotLocality(l) => {
                ApplyEntry::LocalitySet(locality_from(l)?)
            }
            Item::LocalityRemoved(k) => ApplyEntry::LocalityRemoved(locality_key_from(Some(k))?),
        },
    )
}

// ---- this director's ids: records and locality entries mapped to its services ------------

/// `rec` with this director's service and real-server ids, or `None` if either is unknown.
/// A persistence template of an all-port service has VIP port 0: it belongs to the service
/// of that address and protocol whose real servers include its real server.
pub fn map_record(set: &ServiceSet, rec: &ConnRecord) -> Option<ConnRecord> {
    let svc = set.lookup(rec.proto, rec.vip).or_else(|| {
        (rec.flags.contains(ConnFlags::TEMPLATE) && rec.vip.port == 0)
            .then(|| {
                set.services().iter().find(|s| {
                    s.proto == rec.proto
                        && s.vip.addr == rec.vip.addr
                        && set.service_dests(s).iter().any(|d| d.endpoint == rec.real)
                })
            })
            .flatten()
    })?;
    let dest = set
        .service_dests(svc)
        .iter()
        .find(|d| d.endpoint == rec.real)?;
    Some(ConnRecord {
        dest: dest.id,
        service: svc.id,
        ..*rec
    })
}

/// The destination address a locality entry is for.
pub fn locality_addr(e: &LocalityEntry) -> Ipv4Addr {
    match e {
        LocalityEntry::Lblc(e) => e.addr,
        LocalityEntry::Lblcr(e) => e.addr,
    }
}

/// A locality change of service `svc` with endpoints for the wire, and whether it is a set
/// (`false`: removed, only the key). `None` if the service is gone or (set) none of its real
/// servers is left.
pub fn locality_to_wire(
    set: &ServiceSet,
    svc: ServiceId,
    change: &LocalityChange,
) -> Option<(WireLocality, bool)> {
    let s = set.service(svc)?;
    let mut w = WireLocality {
        proto: s.proto,
        vip: s.vip,
        dest_ip: Ipv4Addr::UNSPECIFIED,
        reals: Vec::new(),
    };
    match change {
        LocalityChange::Removed(addr) => {
            w.dest_ip = *addr;
            Some((w, false))
        }
        LocalityChange::Set(e) => {
            w.dest_ip = locality_addr(e);
            let ids: &[DestId] = match e {
                LocalityEntry::Lblc(e) => std::slice::from_ref(&e.dest),
                LocalityEntry::Lblcr(e) => e.dests.as_slice(),
            };
            w.reals = ids
                .iter()
                .filter_map(|id| set.dest(*id).map(|d| d.endpoint))
                .collect();
            (!w.reals.is_empty()).then_some((w, true))
        }
    }
}

/// The peer's locality entry `l` with this director's ids: the service by protocol and
/// VIP:port, which must be lblc (exactly one real server) or lblcr, and every real server one
/// of its destinations. `None` (refused) otherwise.
pub fn map_locality(set: &ServiceSet, l: &WireLocality) -> Option<(ServiceId, LocalityEntry)> {
    let svc = set.lookup(l.proto, l.vip)?;
    let dests = set.service_dests(svc);
    let ids = l
        .reals
        .iter()
        .map(|r| dests.iter().find(|d| d.endpoint == *r).map(|d| d.id))
        .collect::<Option<Vec<DestId>>>()?;
    let entry = match (svc.scheduler, ids.as_slice()) {
        (SchedulerKind::Lblc, [dest]) => LocalityEntry::Lblc(LblcEntry {
            addr: l.dest_ip,
            dest: *dest,
            idle: 0,
        }),
        (SchedulerKind::Lblcr, ids) if !ids.is_empty() => LocalityEntry::Lblcr(LblcrEntry {
            addr: l.dest_ip,
            dests: DestSet::from_slice(ids)?,
            idle: 0,
            unmodified: 0,
        }),
        _ => return None,
    };
    Some((svc.id, entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::tests::rec;
    use tandem_core::conn::ConnState;

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
