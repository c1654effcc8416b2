//! `ApplyConnections` as the dataplane receives it from syncd: an `ApplyRequest`'s protobuf
//! bytes, decoded, then each entry through the dataplane's checked conversion
//! (`tandem_proto::local::apply_entry_from`) and its mapping to this director's services
//! (`map_record`, `map_locality`, against a fixed set of services: a port service, an
//! all-port persistent one, lblc and lblcr). Must never panic; whatever converts must convert
//! back to the same thing; a mapped record keeps everything but its ids, which name a service
//! of its protocol and VIP and a real server of it that is its real server; a mapped locality
//! entry goes back to the wire as it came.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use tandem_core::balance::LocalityChange;
use tandem_core::conn::{ConnFlags, ConnRecord};
use tandem_core::lb::{Endpoint, ForwardMethod, Protocol};
use tandem_core::sched::{Persistence, SchedulerKind, SchedulerOptions};
use tandem_core::service::{DestSpec, ServiceSet, ServiceSpec};
use tandem_proto::local::{self, ApplyEntry};
use tandem_proto::sync as pb;

/// Small addresses and ports, so that the fuzzer finds the services often.
fn services() -> &'static ServiceSet {
    static SET: OnceLock<ServiceSet> = OnceLock::new();
    SET.get_or_init(|| {
        let dest = |last: u8, port: u16| DestSpec {
            addr: Ipv4Addr::new(10, 0, 1, last),
            port,
            method: ForwardMethod::Nat,
            weight: 1,
        };
        let service = |port: u16, scheduler, persistence, dests| ServiceSpec {
            proto: Protocol::Tcp,
            vip: Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), port),
            scheduler,
            options: SchedulerOptions::default(),
            persistence,
            dests,
        };
        let specs = [
            service(80, SchedulerKind::Rr, None, vec![dest(1, 80), dest(2, 8080)]),
            service(
                0,
                SchedulerKind::Wlc,
                Some(Persistence::new(300_000_000_000)),
                vec![dest(3, 0)],
            ),
            service(8080, SchedulerKind::Lblc, None, vec![dest(1, 8080), dest(2, 8080)]),
            service(
                8081,
                SchedulerKind::Lblcr,
                None,
                vec![dest(1, 8081), dest(2, 8081), dest(3, 8081)],
            ),
        ];
        ServiceSet::new(&specs, 16).expect("valid services")
    })
}

fn check_mapped(set: &ServiceSet, r: &ConnRecord) {
    let Some(m) = local::map_record(set, r) else {
        return;
    };
    assert_eq!(
        ConnRecord {
            dest: r.dest,
            service: r.service,
            ..m
        },
        *r,
        "only the ids change"
    );
    let svc = set.service(m.service).expect("a service of the set");
    let dest = set.dest(m.dest).expect("a real server of the set");
    assert_eq!(dest.service, svc.id);
    assert_eq!(dest.endpoint, r.real);
    assert_eq!(svc.proto, r.proto);
    let all_port_template =
        r.flags.contains(ConnFlags::TEMPLATE) && r.vip.port == 0 && svc.vip.addr == r.vip.addr;
    assert!(svc.vip == r.vip || all_port_template, "{svc:?} for {r:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = pb::ApplyRequest::decode(data) else {
        return;
    };
    let set = services();
    for e in &req.entries {
        let Ok(entry) = local::apply_entry_from(e) else {
            continue;
        };
        use pb::entry::Item;
        let again = match &entry {
            // A record converts back; its event kind is not kept (only upsert or remove).
            ApplyEntry::Upsert(r) | ApplyEntry::Remove(r) => {
                assert_eq!(local::record_from(Some(&local::record_to(r))).as_ref(), Ok(r));
                check_mapped(set, r);
                continue;
            }
            ApplyEntry::SnapshotBegin | ApplyEntry::SnapshotEnd => continue,
            ApplyEntry::LocalitySet(l) => {
                if let Some((svc, mapped)) = local::map_locality(set, l) {
                    let back = local::locality_to_wire(set, svc, &LocalityChange::Set(mapped));
                    assert_eq!(back, Some((l.clone(), true)), "{mapped:?}");
                }
                Item::LocalitySet(local::locality_to(l))
            }
            ApplyEntry::LocalityRemoved(l) => Item::LocalityRemoved(local::locality_key_to(l)),
        };
        let back = local::apply_entry_from(&pb::Entry { item: Some(again) });
        assert_eq!(back.as_ref(), Ok(&entry));
    }
});
