//! Connection records and events between the core's types and `tandem.sync.v1`: the one
//! conversion both ends of the sync path use (the daemon's peer link and local client, the
//! dataplane's `Local` service), so the two cannot drift apart.
//!
//! Domain → wire never fails. Wire → domain checks every field and names the one it refuses.
//! Real-server and service *indices* are not on the wire (each director maps endpoints to its
//! own configuration), so a record read from the wire has `dest` and `service` 0, and of its
//! flags only `TEMPLATE` travels (activity is recomputed from the state). States are numbered
//! as the kernel's + 1, so that 0 stays "unspecified".

use std::net::Ipv4Addr;

use tandem_core::conn::{ConnEventKind, ConnFlags, ConnRecord, ConnState, DeleteReason};
use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};

use crate::sync as pb;

/// A record field the domain refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A required field is absent.
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
}

impl RecordError {
    /// The field it names.
    pub fn field(&self) -> &'static str {
        match self {
            RecordError::Missing(f) => f,
            RecordError::Enum { field, .. } | RecordError::Range { field, .. } => field,
        }
    }
}

/// An endpoint to the wire.
pub fn endpoint_to(e: Endpoint) -> pb::Endpoint {
    pb::Endpoint {
        addr: u32::from(e.addr),
        port: u32::from(e.port),
    }
}

/// An endpoint from the wire (port 0 is allowed: persistence templates use it).
pub fn endpoint_from(
    field: &'static str,
    e: Option<&pb::Endpoint>,
) -> Result<Endpoint, RecordError> {
    let e = e.ok_or(RecordError::Missing(field))?;
    let port = u16::try_from(e.port).map_err(|_| RecordError::Range {
        field,
        value: u64::from(e.port),
    })?;
    Ok(Endpoint {
        addr: Ipv4Addr::from(e.addr),
        port,
    })
}

/// A protocol to the wire.
pub fn protocol_to(p: Protocol) -> i32 {
    match p {
        Protocol::Tcp => pb::Protocol::Tcp as i32,
        Protocol::Udp => pb::Protocol::Udp as i32,
    }
}

/// A protocol from the wire (`field` names it in the error).
pub fn protocol_from(field: &'static str, v: i32) -> Result<Protocol, RecordError> {
    match pb::Protocol::try_from(v) {
        Ok(pb::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(pb::Protocol::Udp) => Ok(Protocol::Udp),
        _ => Err(RecordError::Enum { field, value: v }),
    }
}

fn method_to(m: ForwardMethod) -> i32 {
    match m {
        ForwardMethod::Nat => pb::ForwardMethod::Nat as i32,
        ForwardMethod::Tunnel => pb::ForwardMethod::Tunnel as i32,
        ForwardMethod::DirectRoute => pb::ForwardMethod::DirectRoute as i32,
    }
}

fn method_from(v: i32) -> Result<ForwardMethod, RecordError> {
    match pb::ForwardMethod::try_from(v) {
        Ok(pb::ForwardMethod::Nat) => Ok(ForwardMethod::Nat),
        Ok(pb::ForwardMethod::Tunnel) => Ok(ForwardMethod::Tunnel),
        Ok(pb::ForwardMethod::DirectRoute) => Ok(ForwardMethod::DirectRoute),
        _ => Err(RecordError::Enum {
            field: "record.method",
            value: v,
        }),
    }
}

fn state_to(s: ConnState) -> i32 {
    i32::from(s as u8) + 1
}

fn state_from(v: i32) -> Result<ConnState, RecordError> {
    v.checked_sub(1)
        .and_then(|n| u8::try_from(n).ok())
        .and_then(ConnState::from_u8)
        .ok_or(RecordError::Enum {
            field: "record.state",
            value: v,
        })
}

/// An event kind to the wire.
pub fn kind_to(k: ConnEventKind) -> i32 {
    (match k {
        ConnEventKind::Created => pb::ConnEventKind::Created,
        ConnEventKind::StateChanged => pb::ConnEventKind::StateChanged,
        ConnEventKind::Refreshed => pb::ConnEventKind::Refreshed,
        ConnEventKind::Deleted(DeleteReason::Expired) => pb::ConnEventKind::Expired,
        ConnEventKind::Deleted(DeleteReason::Removed) => pb::ConnEventKind::Removed,
        ConnEventKind::Deleted(DeleteReason::Flushed) => pb::ConnEventKind::Flushed,
    }) as i32
}

/// An event kind from the wire.
pub fn kind_from(v: i32) -> Result<ConnEventKind, RecordError> {
    Ok(match pb::ConnEventKind::try_from(v) {
        Ok(pb::ConnEventKind::Created) => ConnEventKind::Created,
        Ok(pb::ConnEventKind::StateChanged) => ConnEventKind::StateChanged,
        Ok(pb::ConnEventKind::Refreshed) => ConnEventKind::Refreshed,
        Ok(pb::ConnEventKind::Expired) => ConnEventKind::Deleted(DeleteReason::Expired),
        Ok(pb::ConnEventKind::Removed) => ConnEventKind::Deleted(DeleteReason::Removed),
        Ok(pb::ConnEventKind::Flushed) => ConnEventKind::Deleted(DeleteReason::Flushed),
        _ => {
            return Err(RecordError::Enum {
                field: "event.kind",
                value: v,
            });
        }
    })
}

/// A connection record to the wire.
pub fn record_to(r: &ConnRecord) -> pb::ConnRecord {
    pb::ConnRecord {
        proto: protocol_to(r.proto),
        client: Some(endpoint_to(r.client)),
        vip: Some(endpoint_to(r.vip)),
        real: Some(endpoint_to(r.real)),
        method: method_to(r.method),
        state: state_to(r.state),
        template: r.flags.contains(ConnFlags::TEMPLATE),
        timeout_ms: r.timeout_ms,
        remaining_ms: r.remaining_ms,
    }
}

/// A connection record from the wire; `dest` and `service` are 0 (see the module doc).
pub fn record_from(r: Option<&pb::ConnRecord>) -> Result<ConnRecord, RecordError> {
    let r = r.ok_or(RecordError::Missing("record"))?;
    Ok(ConnRecord {
        proto: protocol_from("record.proto", r.proto)?,
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

// ---- the packed record: fixed-size bytes instead of a nested message ------------------------

/// Bytes of one packed record ([`record_pack`]).
pub const PACKED_RECORD_LEN: usize = 30;

fn pack_endpoint(e: Endpoint, out: &mut Vec<u8>) {
    out.extend_from_slice(&u32::from(e.addr).to_be_bytes());
    out.extend_from_slice(&e.port.to_be_bytes());
}

fn unpack_endpoint(b: &[u8]) -> Endpoint {
    let mut addr = [0u8; 4];
    addr.copy_from_slice(&b[..4]);
    Endpoint {
        addr: Ipv4Addr::from(addr),
        port: u16::from_be_bytes([b[4], b[5]]),
    }
}

/// Appends `r` in the packed layout (big-endian, [`PACKED_RECORD_LEN`] bytes): protocol,
/// client, VIP and real server (address, port each), method, state and template flag (the
/// same numbers as the message's enums), `timeout_ms`, `remaining_ms`.
///
/// The replication stream carries millions of records; as nested protobuf messages each
/// costs two length computations per level and a dozen tagged fields to encode and decode,
/// most of the sync path's CPU. Packed, a record is one bounds check and fixed offsets.
pub fn record_pack(r: &ConnRecord, out: &mut Vec<u8>) {
    // The enums' wire numbers are small (< 16); `as u8` keeps them exactly.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let small = |v: i32| v as u8;
    out.push(small(protocol_to(r.proto)));
    pack_endpoint(r.client, out);
    pack_endpoint(r.vip, out);
    pack_endpoint(r.real, out);
    out.push(small(method_to(r.method)));
    out.push(small(state_to(r.state)));
    out.push(u8::from(r.flags.contains(ConnFlags::TEMPLATE)));
    out.extend_from_slice(&r.timeout_ms.to_be_bytes());
    out.extend_from_slice(&r.remaining_ms.to_be_bytes());
}

/// A record from the first [`PACKED_RECORD_LEN`] bytes of `b`, checked like
/// [`record_from`] (`dest`/`service` 0, only `TEMPLATE` of the flags).
pub fn record_unpack(b: &[u8]) -> Result<ConnRecord, RecordError> {
    let b = b.get(..PACKED_RECORD_LEN).ok_or(RecordError::Range {
        field: "packed record length",
        value: b.len() as u64,
    })?;
    let template = match b[21] {
        0 => false,
        1 => true,
        v => {
            return Err(RecordError::Enum {
                field: "record.template",
                value: i32::from(v),
            });
        }
    };
    Ok(ConnRecord {
        proto: protocol_from("record.proto", i32::from(b[0]))?,
        client: unpack_endpoint(&b[1..7]),
        vip: unpack_endpoint(&b[7..13]),
        real: unpack_endpoint(&b[13..19]),
        method: method_from(i32::from(b[19]))?,
        dest: DestId(0),
        service: ServiceId(0),
        state: state_from(i32::from(b[20]))?,
        flags: if template {
            ConnFlags::TEMPLATE
        } else {
            ConnFlags::EMPTY
        },
        timeout_ms: u32::from_be_bytes([b[22], b[23], b[24], b[25]]),
        remaining_ms: u32::from_be_bytes([b[26], b[27], b[28], b[29]]),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A UDP/TUN record in `state`, a template or not: the fixture of this module's tests
    /// and of `local`'s.
    pub(crate) fn rec(state: ConnState, template: bool) -> ConnRecord {
        ConnRecord {
            proto: Protocol::Udp,
            client: Endpoint::new(Ipv4Addr::new(10, 0, 0, 5), 40000),
            vip: Endpoint::new(Ipv4Addr::new(10, 0, 0, 100), 53),
            real: Endpoint::new(Ipv4Addr::new(10, 1, 0, 11), 5353),
            method: ForwardMethod::Tunnel,
            dest: DestId(0),
            service: ServiceId(0),
            state,
            flags: if template {
                ConnFlags::TEMPLATE
            } else {
                ConnFlags::EMPTY
            },
            timeout_ms: 300_000,
            remaining_ms: 299_000,
        }
    }

    #[test]
    fn every_state_and_the_template_flag_round_trip() {
        for s in (0..=u8::MAX).filter_map(ConnState::from_u8) {
            for t in [false, true] {
                let r = rec(s, t);
                assert_eq!(record_from(Some(&record_to(&r))), Ok(r));
            }
        }
    }

    #[test]
    fn every_event_kind_round_trips() {
        for k in [
            ConnEventKind::Created,
            ConnEventKind::StateChanged,
            ConnEventKind::Refreshed,
            ConnEventKind::Deleted(DeleteReason::Expired),
            ConnEventKind::Deleted(DeleteReason::Removed),
            ConnEventKind::Deleted(DeleteReason::Flushed),
        ] {
            assert_eq!(kind_from(kind_to(k)), Ok(k));
        }
        assert_eq!(kind_from(0).map_err(|e| e.field()), Err("event.kind"));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut w = record_to(&rec(ConnState::Udp, false));
        w.state = 99;
        assert_eq!(
            record_from(Some(&w)).map_err(|e| e.field()),
            Err("record.state")
        );
        let mut w = record_to(&rec(ConnState::Udp, false));
        w.real = Some(pb::Endpoint {
            addr: 1,
            port: 70_000,
        });
        assert_eq!(
            record_from(Some(&w)),
            Err(RecordError::Range {
                field: "record.real",
                value: 70_000
            })
        );
        let mut w = record_to(&rec(ConnState::Udp, false));
        w.vip = None;
        assert_eq!(
            record_from(Some(&w)),
            Err(RecordError::Missing("record.vip"))
        );
        assert_eq!(record_from(None), Err(RecordError::Missing("record")));
    }

    #[test]
    fn packed_records_round_trip_and_have_the_documented_layout() {
        for s in (0..=u8::MAX).filter_map(ConnState::from_u8) {
            for t in [false, true] {
                let r = rec(s, t);
                let mut b = Vec::new();
                record_pack(&r, &mut b);
                assert_eq!(b.len(), PACKED_RECORD_LEN);
                assert_eq!(record_unpack(&b), Ok(r));
            }
        }
        let mut b = Vec::new();
        record_pack(&rec(ConnState::Established, true), &mut b);
        assert_eq!(
            b,
            [
                2, // UDP
                10, 0, 0, 5, 0x9c, 0x40, // client 10.0.0.5:40000
                10, 0, 0, 100, 0, 53, // VIP 10.0.0.100:53
                10, 1, 0, 11, 0x14, 0xe9, // real 10.1.0.11:5353
                2,    // tunnel
                2,    // ESTABLISHED (kernel's 1, + 1)
                1,    // template
                0, 4, 0x93, 0xe0, // timeout 300 000 ms
                0, 4, 0x8f, 0xf8, // remaining 299 000 ms
            ]
        );
    }

    #[test]
    fn bad_packed_records_are_refused_with_the_field() {
        let mut good = Vec::new();
        record_pack(&rec(ConnState::Udp, false), &mut good);
        assert_eq!(
            record_unpack(&good[..29]).map_err(|e| e.field()),
            Err("packed record length")
        );
        for (at, value, field) in [
            (0, 9, "record.proto"),
            (19, 0, "record.method"),
            (20, 200, "record.state"),
            (21, 2, "record.template"),
        ] {
            let mut b = good.clone();
            b[at] = value;
            assert_eq!(
                record_unpack(&b).map_err(|e| e.field()),
                Err(field),
                "byte {at}"
            );
        }
    }
}
