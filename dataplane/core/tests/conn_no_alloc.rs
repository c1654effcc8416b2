//! The connection table allocates nothing after construction: creates (past capacity, so it
//! refuses and reclaims), lookups, packets, expiry, removals, flushes, installs on a standby,
//! snapshot walks and event queues, all under a counting allocator.
//!
//! Alone in its own test binary so the counting allocator sees only this test; it counts per
//! thread so the harness's own threads do not interfere.

mod counting_alloc;

use counting_alloc::allocations;
use std::net::Ipv4Addr;
use std::time::Duration;

use tandem_core::conn::{
    ConnConfig, ConnTable, CreateError, Direction, EventQueue, NewConn, TcpFlags,
};
use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MS;

fn new_conn(i: u32) -> NewConn {
    let method = match i % 3 {
        0 => ForwardMethod::Nat,
        1 => ForwardMethod::Tunnel,
        _ => ForwardMethod::DirectRoute,
    };
    NewConn {
        proto: if i % 5 == 0 {
            Protocol::Udp
        } else {
            Protocol::Tcp
        },
        client: Endpoint::new(
            Ipv4Addr::from(0x0a09_0000 | (i >> 8)),
            1024 + (i & 0xff) as u16,
        ),
        vip: Endpoint::new(Ipv4Addr::new(202, 103, 106, 5), 80),
        real: Endpoint::new(Ipv4Addr::new(172, 16, 0, 2 + (i % 8) as u8), 8000),
        method,
        dest: DestId(i % 8),
        service: ServiceId(0),
    }
}

#[test]
fn the_table_never_allocates_after_construction() {
    let capacity = 1024;
    let mut cfg = ConnConfig::new(capacity, 8);
    cfg.wheel_slots = 256;
    let mut table = ConnTable::new(cfg.clone()).expect("valid");
    let mut standby = ConnTable::new(cfg).expect("valid");
    let mut events = EventQueue::new(4096);
    let index_bytes = table.memory().index;

    let before = allocations();
    let mut now = 1_000 * SECOND;
    let mut created = 0u64;
    let mut full = 0u64;
    let mut snapshot_records = 0u64;
    for round in 0..40u32 {
        // A burst of new flows, more than the table holds over the run.
        for k in 0..400u32 {
            let i = round * 400 + k;
            let c = new_conn(i % 20_000);
            match table.create(&c, TcpFlags::SYN, now, &mut events) {
                Ok(_) => created += 1,
                Err(CreateError::Full) => full += 1,
                Err(_) => {}
            }
            now += MS;
        }
        // Packets on live connections, both directions; some close, some reset.
        for k in 0..400u32 {
            let c = new_conn((round * 400 + k) % 20_000);
            let flow = tandem_core::lb::Flow {
                proto: c.proto,
                src: c.client,
                dst: c.vip,
            };
            if let Some((id, _)) = table.lookup(&flow) {
                let flags = match k % 7 {
                    0 => TcpFlags::RST,
                    1 => TcpFlags(TcpFlags::FIN.0 | TcpFlags::ACK.0),
                    _ => TcpFlags::ACK,
                };
                table.update(id, Direction::Input, flags, now, &mut events);
                let reply = tandem_core::lb::Flow {
                    proto: c.proto,
                    src: c.real,
                    dst: c.client,
                };
                if let Some((id, dir)) = table.lookup(&reply) {
                    table.update(id, dir, TcpFlags::ACK, now, &mut events);
                }
                if k % 11 == 0 {
                    table.remove(id, now, &mut events);
                }
            }
        }
        // Time passes in uneven steps; expiry in small budgets.
        now += u64::from(round % 9) * 20 * SECOND;
        while table.expire(now, 64, &mut events) == 64 {}
        if round % 10 == 9 {
            table.flush_dest(DestId(round % 8), now, &mut events);
        }
        if round % 13 == 0 {
            let _ = table.create_template(
                &NewConn {
                    client: Endpoint::new(Ipv4Addr::new(10, 1, 1, 1), 0),
                    ..new_conn(round)
                },
                Duration::from_secs(300),
                now,
                &mut events,
            );
        }
        // The standby takes the stream; a snapshot walk reads the table.
        while let Some(ev) = events.pop() {
            let _ = standby.apply(&ev, now);
        }
        let mut cursor = Some(0);
        while let Some(from) = cursor {
            cursor = table.snapshot(from, 100, now, |_| snapshot_records += 1);
        }
    }
    let allocated = allocations() - before;

    assert_eq!(allocated, 0, "allocations after construction");
    assert_eq!(table.memory().index, index_bytes, "the index never grew");
    assert!(created > 4 * capacity as u64, "created {created}");
    assert!(full > 0, "the table filled up");
    assert!(table.stats().expired > 0 && table.stats().reclaimed > 0);
    assert!(table.stats().refiled > 0);
    assert!(standby.stats().installed > 0 && standby.stats().uninstalled > 0);
    assert!(snapshot_records > 0);
    assert!(table.len() <= capacity);
}
