//! The whole pair on the core's real connection table: traffic on the active director's
//! `ConnTable`, its events through the dataplane's bounded `EventQueue` into the `Sender`,
//! the standby's `ConnTable` fed by the `Receiver`, both role machines exchanging heartbeats
//! on two paths. Virtual time, no threads.
#![allow(clippy::cast_possible_truncation, clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::{MS, Rng};
use tandem_core::conn::{
    ConnConfig, ConnEventKind, ConnTable, DiscardEvents, EventQueue, TcpFlags, Timeouts,
};
use tandem_core::lb::{DestId, Endpoint, Flow, ForwardMethod, Protocol, ServiceId};
use tandem_syncd::repl::{
    Batch, Change, ConnTableReplica, Feedback, Receiver, ReceiverConfig, Sender, SenderConfig,
};
use tandem_syncd::role::{Action, Heartbeat, Path, RoleConfig, RoleMachine, RoleState};

type Row = (u8, Endpoint, Endpoint, Endpoint, u8, u32, u8, bool);

fn rows(t: &ConnTable) -> Vec<Row> {
    let mut v: Vec<Row> = t
        .iter()
        .map(|(_, c)| {
            (
                c.proto() as u8,
                c.client(),
                c.vip(),
                c.real(),
                c.method() as u8,
                c.dest().0,
                c.state() as u8,
                c.is_template(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Panics with a short account of the difference.
#[track_caller]
fn assert_same(a: &[Row], b: &[Row], what: &str) {
    if a == b {
        return;
    }
    let missing: Vec<_> = a.iter().filter(|x| !b.contains(x)).take(3).collect();
    let extra: Vec<_> = b.iter().filter(|x| !a.contains(x)).take(3).collect();
    panic!(
        "{what}: {} vs {} entries; first missing {missing:?}; first extra {extra:?}",
        a.len(),
        b.len()
    );
}

fn table() -> ConnTable {
    let mut cfg = ConnConfig::new(1 << 14, 8);
    cfg.timeouts = Timeouts {
        established: Duration::from_secs(3),
        ..Timeouts::default()
    };
    cfg.tick = Duration::from_millis(10);
    cfg.wheel_slots = 1024;
    cfg.peer_grace = Duration::from_secs(1);
    ConnTable::new(cfg).unwrap()
}

struct Director {
    role: RoleMachine,
    replica: ConnTableReplica,
    queue: EventQueue,
    sender: Option<Sender>,
    receiver: Receiver,
    walk: Option<(u64, usize)>,
    answering: bool,
}

impl Director {
    fn new(id: u32, prio: u8, incarnation: u64, now: u64, t: ConnTable) -> Director {
        Director {
            role: RoleMachine::new(RoleConfig::new(id, prio), incarnation, now),
            replica: ConnTableReplica::new(t, 64),
            queue: EventQueue::new(4096),
            sender: None,
            receiver: Receiver::new(ReceiverConfig::default()),
            walk: None,
            answering: false,
        }
    }
}

struct Rack {
    now: u64,
    rng: Rng,
    d: [Option<Director>; 2],
    incarnation: [u64; 2],
    /// The replication link's connection id (0: down); sender index.
    link: Option<(u64, usize)>,
    conn_seq: u64,
    to_rx: Vec<(u64, u64, Batch)>,
    to_tx: Vec<(u64, u64, Feedback)>,
    hbs: Vec<(u64, usize, Path, Heartbeat)>,
    sync_cut: bool,
    clients: u32,
    traffic: bool,
    /// Replication link delay (0 while settling).
    delay: u64,
    /// Virtual time advances per step (not while settling).
    advance: bool,
}

fn ep(a: [u8; 4], port: u16) -> Endpoint {
    Endpoint {
        addr: Ipv4Addr::from(a),
        port,
    }
}

impl Rack {
    fn new() -> Rack {
        Rack {
            now: 0,
            rng: Rng::new(42),
            d: [
                Some(Director::new(1, 200, 1, 0, table())),
                Some(Director::new(2, 100, 1, 0, table())),
            ],
            incarnation: [1, 1],
            link: None,
            conn_seq: 0,
            to_rx: Vec::new(),
            to_tx: Vec::new(),
            hbs: Vec::new(),
            sync_cut: false,
            clients: 0,
            traffic: false,
            delay: MS,
            advance: true,
        }
    }

    fn active(&self) -> Option<usize> {
        (0..2).find(|i| {
            self.d[*i]
                .as_ref()
                .is_some_and(|d| d.role.state() == RoleState::Active)
        })
    }

    /// Traffic on the active's table: new connections (SYN, then ACK), packets on existing
    /// ones (keeping them alive), some closes.
    fn traffic(&mut self, i: usize) {
        let now = self.now;
        let Some(d) = self.d[i].as_mut() else { return };
        let t = &mut d.replica.table;
        for _ in 0..3 {
            let r = self.rng.below(10);
            if r < 3 {
                self.clients += 1;
                let c = self.clients;
                let new = tandem_core::conn::NewConn {
                    proto: Protocol::Tcp,
                    client: ep([10, 1, (c >> 8) as u8, c as u8], 1000 + (c % 5000) as u16),
                    vip: ep([192, 0, 2, 1], 80),
                    real: ep([172, 16, 0, 2 + (c % 4) as u8], 80),
                    method: ForwardMethod::Nat,
                    dest: DestId(c % 4),
                    service: ServiceId(0),
                };
                let _ = t.create(&new, TcpFlags::SYN, now, &mut d.queue);
            } else if self.clients > 0 {
                let c = 1 + self.rng.below(u64::from(self.clients)) as u32;
                let flow = Flow {
                    proto: Protocol::Tcp,
                    src: ep([10, 1, (c >> 8) as u8, c as u8], 1000 + (c % 5000) as u16),
                    dst: ep([192, 0, 2, 1], 80),
                };
                if let Some((id, dir)) = t.lookup(&flow) {
                    let flags = if r == 9 { TcpFlags::RST } else { TcpFlags::ACK };
                    t.update(id, dir, flags, now, &mut d.queue);
                }
            }
        }
    }

    fn step(&mut self) {
        if self.advance {
            self.now += MS;
        }
        let now = self.now;
        if self.traffic
            && let Some(a) = self.active()
        {
            self.traffic(a);
        }
        // Tables expire; the active's expiries are events, the standby's are silent.
        for d in self.d.iter_mut().flatten() {
            if d.sender.is_some() {
                d.replica.table.expire(now, 256, &mut d.queue);
            } else {
                d.replica.table.expire(now, 256, &mut DiscardEvents);
            }
            // The dataplane's queue, drained into the sender (or dropped: no peer stream).
            while let Some(ev) = d.queue.pop() {
                if let Some(s) = d.sender.as_mut() {
                    s.push_event(0, &ev, now);
                }
            }
            // Snapshot walks over the live table.
            if let Some(s) = d.sender.as_mut() {
                while let Some(req) = s.wants_snapshot() {
                    let from = match d.walk {
                        Some((id, at)) if id == req.id => at,
                        _ => 0,
                    };
                    let mut chunk = Vec::new();
                    let next = d.replica.table.snapshot(from, req.max_records, now, |rec| {
                        chunk.push(Change::Conn {
                            kind: ConnEventKind::Refreshed,
                            record: rec,
                        })
                    });
                    s.snapshot_chunk(req.id, &chunk, next.is_none(), now);
                    match next {
                        Some(at) => d.walk = Some((req.id, at)),
                        None => {
                            d.walk = None;
                            break;
                        }
                    }
                }
            }
        }
        // Heartbeats on both paths.
        for i in 0..2 {
            let Some(d) = self.d[i].as_mut() else {
                continue;
            };
            let complete = d.receiver.sync_complete(now);
            d.role.set_sync_complete(complete, now);
            d.role.tick(now);
            if let Some(hb) = d.role.poll_heartbeat(now) {
                if !self.sync_cut {
                    self.hbs.push((now + MS, 1 - i, Path::SyncLink, hb));
                }
                self.hbs.push((now + MS, 1 - i, Path::Service, hb));
            }
        }
        let due: Vec<_> = self.hbs.iter().filter(|h| h.0 <= now).copied().collect();
        self.hbs.retain(|h| h.0 > now);
        for (_, to, path, hb) in due {
            if let Some(d) = self.d[to].as_mut() {
                d.role.handle_heartbeat(path, &hb, now);
            }
        }
        // Role actions: the active sends, the standby receives.
        for i in 0..2 {
            let Some(d) = self.d[i].as_mut() else {
                continue;
            };
            while let Some(a) = d.role.poll_action() {
                d.answering = a == Action::Activate;
                if d.answering {
                    let epoch = now.max(1) + i as u64;
                    let mut s = Sender::new(SenderConfig::default(), epoch);
                    s.local_restarted(now);
                    d.sender = Some(s);
                    d.receiver.reset();
                    self.link = None;
                } else {
                    d.sender = None;
                    if self.link.is_some_and(|(_, s)| s == i) {
                        self.link = None;
                    }
                }
            }
        }
        assert!(
            self.d.iter().flatten().filter(|d| d.answering).count() <= 1,
            "two directors answering ARP at {} ms",
            now / MS
        );
        // The replication link: up when one sends and the other is alive.
        if self.link.is_none()
            && !self.sync_cut
            && let Some(a) = self.active()
        {
            let b = 1 - a;
            if self.d[b].is_some() {
                self.conn_seq += 1;
                self.link = Some((self.conn_seq, a));
                if let Some(s) = self.d[a].as_mut().and_then(|d| d.sender.as_mut()) {
                    s.connected(now);
                }
                if let Some(d) = self.d[b].as_mut() {
                    d.receiver.connected(now);
                }
            }
        }
        let Some((conn, a)) = self.link else { return };
        let b = 1 - a;
        if let Some(s) = self.d[a].as_mut().and_then(|d| d.sender.as_mut()) {
            while let Some(batch) = s.poll_transmit(now) {
                self.to_rx.push((now + self.delay, conn, batch));
            }
        }
        let due: Vec<_> = self.to_rx.iter().filter(|m| m.0 <= now).cloned().collect();
        self.to_rx.retain(|m| m.0 > now);
        if let Some(d) = self.d[b].as_mut() {
            for (_, _, batch) in due.iter().filter(|m| m.1 == conn) {
                d.receiver.handle(batch, now, &mut d.replica);
            }
            while let Some(fb) = d.receiver.poll_transmit(now) {
                self.to_tx.push((now + self.delay, conn, fb));
            }
        }
        let due: Vec<_> = self.to_tx.iter().filter(|m| m.0 <= now).copied().collect();
        self.to_tx.retain(|m| m.0 > now);
        if let Some(s) = self.d[a].as_mut().and_then(|d| d.sender.as_mut()) {
            for (_, c, fb) in due {
                if c == conn {
                    s.handle(fb, now);
                }
            }
        }
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    /// Stops the clock and lets the replication stream drain (no delay), so that the two
    /// tables can be compared at one instant.
    fn settle(&mut self) {
        let traffic = self.traffic;
        self.traffic = false;
        self.advance = false;
        self.delay = 0;
        let now = self.now;
        self.to_rx.iter_mut().for_each(|m| m.0 = m.0.min(now));
        self.to_tx.iter_mut().for_each(|m| m.0 = m.0.min(now));
        for _ in 0..20 {
            self.step();
        }
        self.traffic = traffic;
        self.advance = true;
        self.delay = MS;
    }

    fn crash(&mut self, i: usize) {
        self.d[i] = None;
        if self.link.is_some() {
            self.link = None;
        }
        self.to_rx.clear();
        self.to_tx.clear();
    }

    fn table(&self, i: usize) -> Vec<Row> {
        self.d[i]
            .as_ref()
            .map(|d| rows(&d.replica.table))
            .unwrap_or_default()
    }
}

#[test]
fn active_crash_takeover_with_identical_table_then_failback() {
    let mut r = Rack::new();
    r.run_ms(500);
    assert_eq!(r.active(), Some(0));
    r.traffic = true;
    // Long enough for entries to outlive their 3 s timeout several times: kept alive by
    // traffic on the active, by refresh events on the standby.
    r.run_ms(10_000);
    let a_rows = r.table(0);
    assert!(a_rows.len() > 1000, "{}", a_rows.len());
    // The standby has every entry the active has, with the same real server and state.
    // At any instant, the standby has everything but what is in flight.
    r.settle();
    assert_same(&r.table(0), &r.table(1), "standby before the crash");
    let before = r.table(0);
    let dead = RoleConfig::new(2, 100).dead_interval().as_millis() as u64;

    // The active dies.
    r.crash(0);
    let mut took = None;
    for t in 0..2000 {
        if r.d[1].as_ref().is_some_and(|d| d.answering) {
            took = Some(t);
            break;
        }
        r.step();
    }
    let took = took.expect("no takeover");
    assert!(
        took <= dead + 2,
        "takeover after {took} ms (dead interval {dead} ms)"
    );
    assert_same(
        &before,
        &r.table(1),
        "the new active has the old active's table",
    );

    // Traffic on the new active; the old one comes back with its stale table.
    r.traffic = true;
    r.run_ms(2000);
    // (A killed director comes back with an empty table; a restarted syncd alone would
    // adopt its dataplane's table so the first snapshot sweeps what is stale.)
    r.incarnation[0] += 1;
    let mut back = Director::new(1, 200, r.incarnation[0], r.now, table());
    back.replica.adopt_existing();
    r.d[0] = Some(back);
    r.run_ms(3000);
    r.traffic = false;
    r.run_ms(500);
    r.settle();
    // Preemption (on by default) once sync is complete: the old active is active again and
    // has everything the interim active had.
    assert_eq!(r.active(), Some(0));
    assert_same(&r.table(1), &r.table(0), "after failback");
}

#[test]
fn cut_sync_link_keeps_one_active_and_resyncs_after() {
    let mut r = Rack::new();
    r.run_ms(500);
    r.traffic = true;
    r.run_ms(2000);
    r.sync_cut = true;
    r.link = None;
    r.run_ms(3000);
    assert_eq!(r.active(), Some(0));
    assert!(r.d[1].as_ref().is_some_and(|d| !d.answering));
    r.sync_cut = false;
    r.run_ms(2000);
    r.traffic = false;
    r.run_ms(500);
    r.settle();
    assert_eq!(r.active(), Some(0));
    assert_same(&r.table(0), &r.table(1), "after the cut");
    assert!(r.d[1].as_ref().unwrap().receiver.sync_complete(r.now));
}
