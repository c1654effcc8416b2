//! The conversions between `tandem.sync.v1` and the machines' types: round trips (through
//! the encoded bytes too) for everything the daemon sends, and no panic whatever arrives.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::Ipv4Addr;

use proptest::prelude::*;
use prost::Message;
use tandem_core::conn::{ConnEvent, ConnEventKind, ConnFlags, ConnRecord, ConnState, DeleteReason};
use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};
use tandem_proto::sync as pb;
use tandem_syncd::repl::{Batch, Change, Feedback, Item, LocalityEntry, LocalityKey};
use tandem_syncd::role::{Heartbeat, RoleState};
use tandem_syncd::wire::{self, LcoreItem, LocalMsg, PeerHeartbeat, WireError};

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (any::<u32>(), any::<u16>()).prop_map(|(a, p)| Endpoint {
        addr: Ipv4Addr::from(a),
        port: p,
    })
}

fn proto() -> impl Strategy<Value = Protocol> {
    prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp)]
}

fn record() -> impl Strategy<Value = ConnRecord> {
    (
        (proto(), endpoint(), endpoint(), endpoint()),
        prop_oneof![
            Just(ForwardMethod::Nat),
            Just(ForwardMethod::Tunnel),
            Just(ForwardMethod::DirectRoute)
        ],
        0u8..12,
        any::<bool>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |((proto, client, vip, real), method, st, template, t, r)| ConnRecord {
                proto,
                client,
                vip,
                real,
                method,
                dest: DestId(0),
                service: ServiceId(0),
                state: ConnState::from_u8(st).unwrap(),
                flags: if template {
                    ConnFlags::TEMPLATE
                } else {
                    ConnFlags::EMPTY
                },
                timeout_ms: t,
                remaining_ms: r,
            },
        )
}

fn kind() -> impl Strategy<Value = ConnEventKind> {
    prop_oneof![
        Just(ConnEventKind::Created),
        Just(ConnEventKind::StateChanged),
        Just(ConnEventKind::Refreshed),
        Just(ConnEventKind::Deleted(DeleteReason::Expired)),
        Just(ConnEventKind::Deleted(DeleteReason::Removed)),
        Just(ConnEventKind::Deleted(DeleteReason::Flushed)),
    ]
}

fn locality_key() -> impl Strategy<Value = LocalityKey> {
    (proto(), endpoint(), any::<u32>()).prop_map(|(proto, vip, d)| LocalityKey {
        proto,
        vip,
        dest_ip: Ipv4Addr::from(d),
    })
}

fn locality() -> impl Strategy<Value = LocalityEntry> {
    (locality_key(), prop::collection::vec(endpoint(), 0..=8))
        .prop_map(|(k, reals)| LocalityEntry::new(k, &reals).0)
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (kind(), record()).prop_map(|(kind, record)| Change::Conn { kind, record }),
        locality().prop_map(Change::LocalitySet),
        locality_key().prop_map(Change::LocalityRemoved),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        change().prop_map(Item::Change),
        any::<u64>().prop_map(|id| Item::SnapshotBegin { id }),
        any::<u64>().prop_map(|id| Item::SnapshotEnd { id }),
        record().prop_map(|record| Item::Snapshot(Change::Conn {
            kind: ConnEventKind::Refreshed,
            record
        })),
        locality().prop_map(|e| Item::Snapshot(Change::LocalitySet(e))),
    ]
}

fn role() -> impl Strategy<Value = RoleState> {
    prop_oneof![
        Just(RoleState::Init),
        Just(RoleState::Syncing),
        Just(RoleState::Standby),
        Just(RoleState::Active),
        Just(RoleState::Fault),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn batches_round_trip_through_bytes(
        epoch in 1u64..,
        first in 1u64..(u64::MAX / 2),
        items in prop::collection::vec(item(), 0..40),
        extra in 0u64..1000,
    ) {
        let b = Batch {
            epoch,
            first_seq: first,
            head_seq: first + items.len() as u64 + extra,
            items,
        };
        let bytes = wire::batch_to(&b).encode_to_vec();
        let back = wire::batch_from(&pb::EventBatch::decode(bytes.as_slice()).unwrap()).unwrap();
        prop_assert_eq!(&back, &b);
        // The packed encoding carries exactly the same, in fewer bytes once it holds records.
        let packed = wire::batch_to_packed(&b).encode_to_vec();
        let back = wire::batch_from(&pb::EventBatch::decode(packed.as_slice()).unwrap()).unwrap();
        prop_assert_eq!(&back, &b);
        prop_assert!(packed.len() <= bytes.len() + 2, "{} > {}", packed.len(), bytes.len());
    }

    /// Any bytes as packed entries: refused or read, never a panic; what is read packs back
    /// to the same bytes.
    #[test]
    fn packed_garbage_is_refused_or_read_back_exactly(bytes in prop::collection::vec(any::<u8>(), 1..200)) {
        let m = pb::EventBatch { epoch: 1, first_seq: 1, entries: vec![], head_seq: u64::MAX, packed: bytes.clone() };
        if let Ok(b) = wire::batch_from(&m) {
            prop_assert_eq!(wire::batch_to_packed(&b).packed, bytes);
        }
    }

    #[test]
    fn feedback_round_trips(epoch in any::<u64>(), seq in any::<u64>(), ack in any::<bool>()) {
        let f = if ack { Feedback::Ack { epoch, seq } } else { Feedback::Resume { epoch, last_seq: seq } };
        let bytes = wire::feedback_to(&f).encode_to_vec();
        let back = wire::feedback_from(&pb::ReceiverMessage::decode(bytes.as_slice()).unwrap()).unwrap();
        prop_assert_eq!(back, f);
    }

    #[test]
    fn heartbeats_round_trip(
        node_id in any::<u32>(), priority in 1u8.., incarnation in any::<u64>(), seq in any::<u64>(),
        state in role(), sync_complete in any::<bool>(), preempt_request in any::<bool>(),
        sees in prop::option::of(role()), epoch in any::<u64>(), sequence in any::<u64>(),
    ) {
        let h = PeerHeartbeat {
            hb: Heartbeat { node_id, priority, incarnation, seq, state, sync_complete, preempt_request, sees_peer: sees },
            epoch,
            sequence,
        };
        let bytes = wire::heartbeat_to(&h).encode_to_vec();
        let back = wire::heartbeat_from(&pb::HeartbeatMessage::decode(bytes.as_slice()).unwrap()).unwrap();
        prop_assert_eq!(back, h);
    }

    #[test]
    fn local_events_round_trip(lcore in 0u32..256, seq in 1u64.., head in any::<u64>(), k in kind(), r in record()) {
        let ev = ConnEvent { kind: k, seq, record: r };
        let m = pb::LocalEvents { msg: Some(pb::local_events::Msg::Events(pb::LocalEventBatch {
            events: vec![wire::local_event_to(lcore, &ev), wire::local_head_to(lcore, head)],
        })) };
        let back = wire::local_from(&pb::LocalEvents::decode(m.encode_to_vec().as_slice()).unwrap()).unwrap();
        prop_assert_eq!(
            back,
            LocalMsg::Events(vec![(lcore as usize, LcoreItem::Event(ev)), (lcore as usize, LcoreItem::Head(head))])
        );
    }

    #[test]
    fn numbered_locality_changes_round_trip(lcore in 0u32..256, seq in 1u64.., c in change()) {
        let Some(ev) = wire::local_locality_to(lcore, seq, &c) else {
            let is_conn = matches!(c, Change::Conn { .. });
            prop_assert!(is_conn);
            return Ok(());
        };
        let m = pb::LocalEvents { msg: Some(pb::local_events::Msg::Events(pb::LocalEventBatch {
            events: vec![ev],
        })) };
        let back = wire::local_from(&pb::LocalEvents::decode(m.encode_to_vec().as_slice()).unwrap()).unwrap();
        prop_assert_eq!(back, LocalMsg::Events(vec![(lcore as usize, LcoreItem::Locality { seq, change: c })]));
    }

    /// A record keeps everything but what is not on the wire (indices, local flags).
    #[test]
    fn records_keep_what_the_wire_carries(r in record(), dest in any::<u32>(), svc in any::<u32>(), flags in any::<u8>()) {
        let local = ConnRecord { dest: DestId(dest), service: ServiceId(svc), flags: ConnFlags::from_bits(flags), ..r };
        let back = wire::record_from(Some(&wire::record_to(&local))).unwrap();
        prop_assert_eq!(back, wire::wire_normal(&local));
    }

    /// Whatever bytes arrive: a decode error, a refusal, or a value — never a panic.
    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(m) = pb::EventBatch::decode(bytes.as_slice()) { let _ = wire::batch_from(&m); }
        if let Ok(m) = pb::ReceiverMessage::decode(bytes.as_slice()) { let _ = wire::feedback_from(&m); }
        if let Ok(m) = pb::HeartbeatMessage::decode(bytes.as_slice()) { let _ = wire::heartbeat_from(&m); }
        if let Ok(m) = pb::LocalEvents::decode(bytes.as_slice()) { let _ = wire::local_from(&m); }
        if let Ok(m) = pb::Entry::decode(bytes.as_slice()) { let _ = wire::item_from(&m); }
    }
}

fn ep(port: u32) -> Option<pb::Endpoint> {
    Some(pb::Endpoint { addr: 1, port })
}

fn good_record() -> pb::ConnRecord {
    pb::ConnRecord {
        proto: pb::Protocol::Tcp as i32,
        client: ep(1000),
        vip: ep(80),
        real: ep(80),
        method: pb::ForwardMethod::Nat as i32,
        state: pb::ConnState::Established as i32,
        template: false,
        timeout_ms: 900_000,
        remaining_ms: 900_000,
    }
}

fn entry(r: pb::ConnRecord) -> pb::Entry {
    pb::Entry {
        item: Some(pb::entry::Item::Conn(pb::ConnEvent {
            kind: pb::ConnEventKind::Created as i32,
            record: Some(r),
        })),
    }
}

fn batch(entries: Vec<pb::Entry>) -> pb::EventBatch {
    pb::EventBatch {
        epoch: 7,
        first_seq: 1,
        head_seq: entries.len() as u64,
        entries,
        packed: vec![],
    }
}

fn packed_batch(packed: Vec<u8>) -> pb::EventBatch {
    pb::EventBatch {
        packed,
        head_seq: 100,
        ..batch(vec![])
    }
}

#[test]
fn a_packed_connection_event_has_the_documented_bytes() {
    let r = wire::record_from(Some(&good_record())).unwrap();
    let b = Batch {
        epoch: 7,
        first_seq: 1,
        items: vec![
            Item::SnapshotBegin { id: 3 },
            Item::Change(Change::Conn {
                kind: ConnEventKind::Created,
                record: r,
            }),
        ],
        head_seq: 2,
    };
    let m = wire::batch_to_packed(&b);
    assert!(m.entries.is_empty());
    let mut want = vec![6, 0, 0, 0, 0, 0, 0, 0, 3, 1, 1];
    tandem_proto::conn::record_pack(&r, &mut want);
    assert_eq!(m.packed, want);
    assert_eq!(wire::batch_from(&m), Ok(b));
}

#[test]
fn malformed_packed_entries_are_refused_with_the_byte() {
    let r = wire::record_from(Some(&good_record())).unwrap();
    let mut conn = vec![1, 1];
    tandem_proto::conn::record_pack(&r, &mut conn);
    assert!(wire::batch_from(&packed_batch(conn.clone())).is_ok());
    let cases: Vec<(Vec<u8>, WireError)> = vec![
        (
            vec![9],
            WireError::Packed {
                what: "unknown tag",
                at: 0,
            },
        ),
        (
            conn[..20].to_vec(),
            WireError::Packed {
                what: "truncated record",
                at: 2,
            },
        ),
        (
            [conn.clone(), vec![7, 0, 0]].concat(),
            WireError::Packed {
                what: "truncated snapshot id",
                at: 33,
            },
        ),
        (
            {
                let mut c = conn.clone();
                c[1] = 0;
                c
            },
            WireError::Enum {
                field: "event.kind",
                value: 0,
            },
        ),
        (
            [vec![3, 1, 0, 0, 0, 1, 0, 80, 0, 0, 0, 5, 9], vec![0; 54]].concat(),
            WireError::TooManyReals(9),
        ),
    ];
    for (bytes, want) in cases {
        assert_eq!(
            wire::batch_from(&packed_batch(bytes.clone())),
            Err(want),
            "{bytes:?}"
        );
    }
    let both = pb::EventBatch {
        packed: conn,
        ..batch(vec![entry(good_record())])
    };
    assert!(matches!(
        wire::batch_from(&both),
        Err(WireError::Ambiguous(_))
    ));
}

#[test]
fn this_receiver_asks_for_packed_entries_and_the_sender_can_tell() {
    let resume = wire::feedback_to(&Feedback::Resume {
        epoch: 1,
        last_seq: 2,
    });
    assert_eq!(wire::resume_accepts_packed(&resume), Some(true));
    // A receiver of the previous version says nothing: entries.
    let old = pb::ReceiverMessage {
        msg: Some(pb::receiver_message::Msg::Resume(pb::ResumeRequest {
            epoch: 1,
            last_seq: 2,
            packed: false,
        })),
    };
    assert_eq!(wire::resume_accepts_packed(&old), Some(false));
    let ack = wire::feedback_to(&Feedback::Ack { epoch: 1, seq: 2 });
    assert_eq!(wire::resume_accepts_packed(&ack), None);
}

#[test]
fn malformed_batches_are_refused_naming_the_field() {
    assert!(wire::batch_from(&batch(vec![entry(good_record())])).is_ok());
    let cases: Vec<(pb::EventBatch, WireError)> = vec![
        (
            batch(vec![entry(pb::ConnRecord {
                client: ep(70_000),
                ..good_record()
            })]),
            WireError::Range {
                field: "record.client",
                value: 70_000,
            },
        ),
        (
            batch(vec![entry(pb::ConnRecord {
                vip: None,
                ..good_record()
            })]),
            WireError::Missing("record.vip"),
        ),
        (
            batch(vec![entry(pb::ConnRecord {
                state: 0,
                ..good_record()
            })]),
            WireError::Enum {
                field: "record.state",
                value: 0,
            },
        ),
        (
            batch(vec![entry(pb::ConnRecord {
                proto: 9,
                ..good_record()
            })]),
            WireError::Enum {
                field: "record.proto",
                value: 9,
            },
        ),
        (
            batch(vec![pb::Entry { item: None }]),
            WireError::Missing("entry.item"),
        ),
        (
            pb::EventBatch {
                epoch: 0,
                ..batch(vec![])
            },
            WireError::Range {
                field: "batch.epoch",
                value: 0,
            },
        ),
        (
            pb::EventBatch {
                head_seq: 0,
                ..batch(vec![entry(good_record()), entry(good_record())])
            },
            WireError::Range {
                field: "batch.head_seq",
                value: 0,
            },
        ),
        (
            pb::EventBatch {
                first_seq: u64::MAX,
                head_seq: u64::MAX,
                ..batch(vec![entry(good_record()), entry(good_record())])
            },
            WireError::Range {
                field: "batch.first_seq",
                value: u64::MAX,
            },
        ),
        (
            batch(vec![pb::Entry {
                item: Some(pb::entry::Item::LocalitySet(pb::LocalityEntry {
                    key: Some(pb::LocalityKey {
                        proto: 1,
                        vip: ep(80),
                        dest_ip: 5,
                    }),
                    reals: vec![pb::Endpoint { addr: 1, port: 1 }; 9],
                })),
            }]),
            WireError::TooManyReals(9),
        ),
    ];
    for (b, want) in cases {
        assert_eq!(wire::batch_from(&b), Err(want.clone()), "{want}");
        assert!(!want.to_string().is_empty());
    }
}

#[test]
fn malformed_heartbeats_are_refused() {
    let good = pb::HeartbeatMessage {
        node_id: 1,
        priority: 100,
        role: pb::Role::Standby as i32,
        ..Default::default()
    };
    assert!(wire::heartbeat_from(&good).is_ok());
    for (m, field) in [
        (
            pb::HeartbeatMessage {
                priority: 0,
                ..good
            },
            "heartbeat.priority",
        ),
        (
            pb::HeartbeatMessage {
                priority: 256,
                ..good
            },
            "heartbeat.priority",
        ),
        (pb::HeartbeatMessage { role: 0, ..good }, "heartbeat.role"),
        (pb::HeartbeatMessage { role: 42, ..good }, "heartbeat.role"),
        (
            pb::HeartbeatMessage {
                sees_peer: 42,
                ..good
            },
            "heartbeat.sees_peer",
        ),
    ] {
        let e = wire::heartbeat_from(&m).unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
}

#[test]
fn a_local_event_with_two_payloads_is_refused() {
    let key = pb::LocalityKey {
        proto: 1,
        vip: ep(80),
        dest_ip: 5,
    };
    let ev = pb::LocalEvent {
        lcore: 0,
        seq: 3,
        event: Some(pb::ConnEvent {
            kind: 1,
            record: Some(good_record()),
        }),
        locality_set: None,
        locality_removed: Some(key),
    };
    let m = pb::LocalEvents {
        msg: Some(pb::local_events::Msg::Events(pb::LocalEventBatch {
            events: vec![ev.clone()],
        })),
    };
    assert_eq!(
        wire::local_from(&m),
        Err(WireError::Ambiguous("local_event"))
    );
    // Without the connection event it is a numbered locality removal; with seq 0, refused.
    let only = pb::LocalEvent { event: None, ..ev };
    let m = |e: pb::LocalEvent| pb::LocalEvents {
        msg: Some(pb::local_events::Msg::Events(pb::LocalEventBatch {
            events: vec![e],
        })),
    };
    assert!(matches!(
        wire::local_from(&m(only.clone())),
        Ok(LocalMsg::Events(v)) if matches!(v[..], [(0, LcoreItem::Locality { seq: 3, change: Change::LocalityRemoved(_) })])
    ));
    assert_eq!(
        wire::local_from(&m(pb::LocalEvent { seq: 0, ..only })),
        Err(WireError::Range {
            field: "local_event.seq",
            value: 0
        })
    );
}
