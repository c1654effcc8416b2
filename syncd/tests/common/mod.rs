//! A deterministic simulated network and workload for the pair tests: virtual time, a seeded
//! RNG, no threads, no wall clock.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use tandem_core::balance::owner;
use tandem_core::conn::{ConnEvent, ConnEventKind, ConnFlags, ConnRecord, ConnState, DeleteReason};
use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};
use tandem_syncd::repl::{
    Batch, Change, ConnKey, Feedback, LocalityEntry, LocalityKey, ModelReplica, ModelValue,
    Receiver, ReceiverConfig, Replica, ReplicaKey, Sender, SenderConfig,
};

pub const MS: u64 = 1_000_000;

/// splitmix64: small, seeded, good enough for fault schedules.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5eed_5eed_5eed_5eed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// true with probability `p` per mille.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// Faults of one direction of the link, per message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Loss, per mille.
    pub loss: u64,
    /// Duplication, per mille.
    pub dup: u64,
    /// Base one-way delay (ms).
    pub delay_ms: u64,
    /// Extra random delay up to this (ms): reorders.
    pub jitter_ms: u64,
}

/// One direction of a link: messages in flight, tagged with the connection they belong to
/// (a message of an older connection is never delivered, as with TCP).
#[derive(Debug)]
pub struct Wire<T> {
    in_flight: Vec<(u64, u64, u64, T)>, // (deliver_at, order, conn, msg)
    order: u64,
    pub faults: Faults,
    pub sent: u64,
}

impl<T: Clone> Wire<T> {
    pub fn new() -> Self {
        Wire {
            in_flight: Vec::new(),
            order: 0,
            faults: Faults::default(),
            sent: 0,
        }
    }
    pub fn send(&mut self, msg: T, conn: u64, now: u64, rng: &mut Rng) {
        self.sent += 1;
        if rng.chance(self.faults.loss) {
            return;
        }
        let copies = if rng.chance(self.faults.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = self.faults.delay_ms + rng.below(self.faults.jitter_ms + 1);
            self.order += 1;
            self.in_flight
                .push((now + delay * MS, self.order, conn, msg.clone()));
        }
    }
    /// Messages due by `now` on connection `conn`, in delivery order.
    pub fn due(&mut self, now: u64, conn: u64) -> Vec<T> {
        let mut due: Vec<_> = Vec::new();
        let mut keep = Vec::new();
        for m in self.in_flight.drain(..) {
            if m.0 <= now {
                due.push(m);
            } else {
                keep.push(m);
            }
        }
        self.in_flight = keep;
        due.sort_by_key(|m| (m.0, m.1));
        due.into_iter()
            .filter(|m| m.2 == conn)
            .map(|m| m.3)
            .collect()
    }
    pub fn clear(&mut self) {
        self.in_flight.clear();
    }
}

/// The active side's table with the dataplane's per-lcore event numbering.
#[derive(Debug)]
pub struct Source {
    pub table: ModelReplica,
    pub lcores: usize,
    pub lcore_seq: Vec<u64>,
    next_client: u32,
    /// Snapshot walk in progress: (id, key cursor).
    walk: Option<(u64, Option<ReplicaKey>)>,
}

pub fn record(client: u32, state: ConnState, remaining_ms: u32) -> ConnRecord {
    let udp = state == ConnState::Udp;
    ConnRecord {
        proto: if udp { Protocol::Udp } else { Protocol::Tcp },
        client: Endpoint {
            addr: Ipv4Addr::from(0x0a00_0000 | (client >> 6)),
            port: 1024 + (client & 63) as u16,
        },
        vip: Endpoint {
            addr: Ipv4Addr::new(192, 0, 2, 1),
            port: 80,
        },
        real: Endpoint {
            addr: Ipv4Addr::new(172, 16, 0, 2 + (client % 5) as u8),
            port: 8080,
        },
        method: ForwardMethod::Nat,
        dest: DestId(client % 5),
        service: ServiceId(0),
        state,
        flags: ConnFlags::EMPTY,
        timeout_ms: 900_000,
        remaining_ms,
    }
}

impl Source {
    pub fn new(lcores: usize) -> Source {
        Source {
            table: ModelReplica::new(usize::MAX),
            lcores,
            lcore_seq: vec![0; lcores],
            next_client: 0,
            walk: None,
        }
    }

    fn lcore_of(&self, rec: &ConnRecord) -> usize {
        owner(rec.client, self.lcores)
    }

    /// One random change of the table, applied here; returns its event and lcore.
    pub fn random_op(&mut self, rng: &mut Rng) -> (usize, ConnEvent) {
        let existing: Vec<ConnRecord> = if self.table.is_empty() || rng.chance(350) {
            Vec::new()
        } else {
            // Pick an existing connection (cheaply: a random recent client number).
            let mut found = Vec::new();
            for _ in 0..4 {
                let c = rng.below(u64::from(self.next_client.max(1))) as u32;
                let r = record(c, ConnState::Established, 0);
                if let Some(ModelValue::Conn(rec)) =
                    self.table.get(&ReplicaKey::Conn(ConnKey::of(&r)))
                {
                    found.push(*rec);
                    break;
                }
            }
            found
        };
        let (kind, rec) = match existing.first() {
            None => {
                self.next_client += 1;
                let c = self.next_client;
                let state = match rng.below(4) {
                    0 => ConnState::SynRecv,
                    1 => ConnState::Udp,
                    _ => ConnState::Established,
                };
                let mut r = record(c, state, 60_000);
                if rng.chance(100) {
                    r.flags = ConnFlags::TEMPLATE;
                    r.proto = Protocol::Tcp;
                    r.state = ConnState::None;
                }
                (ConnEventKind::Created, r)
            }
            Some(r) => {
                let mut r = *r;
                match rng.below(3) {
                    0 => (ConnEventKind::Deleted(DeleteReason::Expired), r),
                    1 if r.proto == Protocol::Tcp && !r.flags.contains(ConnFlags::TEMPLATE) => {
                        r.state = match r.state {
                            ConnState::SynRecv => ConnState::Established,
                            ConnState::Established => ConnState::FinWait,
                            _ => ConnState::TimeWait,
                        };
                        (ConnEventKind::StateChanged, r)
                    }
                    _ => {
                        r.remaining_ms = 1 + rng.below(900_000) as u32;
                        (ConnEventKind::Refreshed, r)
                    }
                }
            }
        };
        let change = Change::Conn { kind, record: rec };
        self.table.apply(&change, 0);
        let l = self.lcore_of(&rec);
        self.lcore_seq[l] += 1;
        (
            l,
            ConnEvent {
                kind,
                seq: self.lcore_seq[l],
                record: rec,
            },
        )
    }

    /// A random locality change, applied here.
    pub fn locality_op(&mut self, rng: &mut Rng) -> Change {
        let key = LocalityKey {
            proto: Protocol::Tcp,
            vip: Endpoint {
                addr: Ipv4Addr::new(192, 0, 2, 1),
                port: 80,
            },
            dest_ip: Ipv4Addr::new(198, 51, 100, rng.below(16) as u8),
        };
        let change = if rng.chance(250) {
            Change::LocalityRemoved(key)
        } else {
            let n = 1 + rng.below(3) as usize;
            let reals: Vec<Endpoint> = (0..n)
                .map(|i| Endpoint {
                    addr: Ipv4Addr::new(172, 16, 0, 2 + i as u8),
                    port: 8080,
                })
                .collect();
            Change::LocalitySet(LocalityEntry::new(key, &reals).0)
        };
        self.table.apply(&change, 0);
        change
    }

    /// A random locality change of a random lcore's tables, applied here, with the lcore's
    /// next sequence number.
    pub fn numbered_locality_op(&mut self, rng: &mut Rng) -> (usize, u64, Change) {
        let c = self.locality_op(rng);
        let l = rng.below(self.lcores as u64) as usize;
        self.lcore_seq[l] += 1;
        (l, self.lcore_seq[l], c)
    }

    /// Feeds the sender's snapshot walk from the live table, `max` records at a time.
    pub fn feed_snapshot(&mut self, sender: &mut Sender, now: u64) {
        while let Some(req) = sender.wants_snapshot() {
            let cursor = match self.walk {
                Some((id, c)) if id == req.id => c,
                _ => None,
            };
            let all = self.table.sorted();
            let rest: Vec<_> = all
                .iter()
                .filter(|(k, _)| cursor.is_none_or(|c| *k > c))
                .take(req.max_records)
                .collect();
            let done =
                rest.len() < req.max_records || all.last().map(|l| l.0) == rest.last().map(|r| r.0);
            let chunk: Vec<Change> = rest
                .iter()
                .map(|(_, v)| match v {
                    ModelValue::Conn(record) => Change::Conn {
                        kind: ConnEventKind::Refreshed,
                        record: *record,
                    },
                    ModelValue::Locality(e) => Change::LocalitySet(*e),
                })
                .collect();
            self.walk = Some((req.id, rest.last().map(|r| r.0).or(cursor)));
            sender.snapshot_chunk(req.id, &chunk, done, now);
            if done {
                self.walk = None;
                break;
            }
        }
    }
}

/// An active director's sender and a standby's receiver joined by a simulated link.
#[derive(Debug)]
pub struct ReplPair {
    pub now: u64,
    pub rng: Rng,
    pub src: Source,
    pub sender: Sender,
    pub dst: ModelReplica,
    pub receiver: Receiver,
    pub to_rx: Wire<Batch>,
    pub to_tx: Wire<Feedback>,
    pub conn: u64,
    pub up: bool,
    /// Events per step while loaded.
    pub load: u64,
    /// Locality changes per step while loaded, per mille.
    pub locality_per_mille: u64,
    /// Lose local events (dataplane queue overflow), per mille.
    pub local_loss: u64,
    pub next_epoch: u64,
}

impl ReplPair {
    pub fn new(seed: u64, scfg: SenderConfig, rcfg: ReceiverConfig) -> ReplPair {
        let mut p = ReplPair {
            now: 0,
            rng: Rng::new(seed),
            src: Source::new(4),
            sender: Sender::new(scfg, 1000),
            dst: ModelReplica::new(usize::MAX),
            receiver: Receiver::new(rcfg),
            to_rx: Wire::new(),
            to_tx: Wire::new(),
            conn: 0,
            up: false,
            load: 0,
            locality_per_mille: 50,
            local_loss: 0,
            next_epoch: 1001,
        };
        p.heads();
        p.connect();
        p
    }

    /// Each lcore's head mark (the dataplane sends one when a watch starts and every few
    /// milliseconds).
    pub fn heads(&mut self) {
        for (l, seq) in self.src.lcore_seq.iter().enumerate() {
            self.sender.lcore_head(l, *seq, self.now);
        }
    }

    pub fn connect(&mut self) {
        self.conn += 1;
        self.up = true;
        self.sender.connected(self.now);
        self.receiver.connected(self.now);
    }

    pub fn disconnect(&mut self) {
        self.up = false;
        self.sender.disconnected();
        self.receiver.disconnected();
        self.to_rx.clear();
        self.to_tx.clear();
    }

    /// One millisecond of virtual time.
    pub fn step(&mut self) {
        self.now += MS;
        let now = self.now;
        for _ in 0..self.load {
            let (l, ev) = self.src.random_op(&mut self.rng);
            if !self.rng.chance(self.local_loss) {
                self.sender.push_event(l, &ev, now);
            }
        }
        if self.now.is_multiple_of(10 * MS) {
            // Every 10 ms each lcore says how far its numbering has gone, so that a lost
            // last event is noticed.
            self.heads();
        }
        if self.load > 0 && self.rng.chance(self.locality_per_mille) {
            // The dataplane numbers its lblc/lblcr changes in the lcore's event sequence,
            // and loses them like events when its queue is full.
            let (l, seq, c) = self.src.numbered_locality_op(&mut self.rng);
            if !self.rng.chance(self.local_loss) {
                self.sender.push_lcore_change(l, seq, c, now);
            }
        }
        self.src.feed_snapshot(&mut self.sender, now);
        while let Some(b) = self.sender.poll_transmit(now) {
            if self.up {
                self.to_rx.send(b, self.conn, now, &mut self.rng);
            }
        }
        for b in self.to_rx.due(now, self.conn) {
            self.receiver.handle(&b, now, &mut self.dst);
        }
        while let Some(f) = self.receiver.poll_transmit(now) {
            if self.up {
                self.to_tx.send(f, self.conn, now, &mut self.rng);
            }
        }
        for f in self.to_tx.due(now, self.conn) {
            self.sender.handle(f, now);
        }
    }

    pub fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    /// No load, no faults, link up, for `ms`.
    pub fn quiesce(&mut self, ms: u64) {
        self.load = 0;
        self.local_loss = 0;
        self.to_rx.faults = Faults::default();
        self.to_tx.faults = Faults::default();
        if !self.up {
            self.connect();
        }
        self.run_ms(ms);
    }

    /// The standby's syncd restarts (fresh receiver, its table kept as it was: the
    /// dataplane still holds it).
    pub fn restart_receiver(&mut self, rcfg: ReceiverConfig) {
        self.disconnect();
        self.receiver = Receiver::new(rcfg);
        self.connect();
    }

    /// The active's syncd restarts (fresh sender in a new epoch; the dataplane's table is
    /// kept and its event stream restarts).
    pub fn restart_sender(&mut self, scfg: SenderConfig) {
        self.disconnect();
        self.sender = Sender::new(scfg, self.next_epoch);
        self.next_epoch += 1;
        self.sender.local_restarted(self.now);
        self.heads();
        self.connect();
    }

    /// Exact comparison of the two tables.
    pub fn check_equal(&self) -> Result<(), String> {
        compare(&self.src.table, &self.dst)
    }
}

pub fn compare(a: &ModelReplica, b: &ModelReplica) -> Result<(), String> {
    let a = a.sorted();
    let b = b.sorted();
    if a == b {
        return Ok(());
    }
    let missing = a.iter().filter(|x| !b.contains(x)).count();
    let extra = b.iter().filter(|x| !a.contains(x)).count();
    Err(format!(
        "tables differ: source {} entries, replica {}; {missing} missing or different, {extra} extra",
        a.len(),
        b.len()
    ))
}
