//! Property tests: random sequences of creates, packets, time, expiry, removals, flushes and
//! lookups against a plain `HashMap` model. After every step the table and the model hold the
//! same entries (found by both keys), every destination's counts equal the model's recount,
//! every event is accounted for with consecutive sequence numbers, and a standby table fed
//! the events mirrors the active one.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use proptest::prelude::*;

use tandem_core::conn::{
    ActivePolicy, ConnConfig, ConnEvent, ConnEventKind, ConnId, ConnState, ConnTable, CreateError,
    DeleteReason, DestCounts, Direction, EventQueue, NewConn, TcpDir, TcpFlags, Timeouts,
    tcp_next_state,
};
use tandem_core::lb::{DestId, Endpoint, Flow, ForwardMethod, Protocol, ServiceId};

const MS: u64 = 1_000_000;
const SECOND: u64 = 1_000 * MS;
const TICK: u64 = 100 * MS;
const DESTS: usize = 4;
const T0: u64 = 5_000 * SECOND + 3 * MS;

#[derive(Debug, Clone)]
enum Op {
    Create {
        client: u8,
        vip: u8,
        real: u8,
        dest: u8,
        method: u8,
        udp: bool,
        flags: u8,
    },
    Template {
        client: u8,
        vip: u8,
        dest: u8,
        timeout_s: u16,
    },
    Packet {
        pick: usize,
        reply: bool,
        force_output: bool,
        flags: u8,
    },
    Advance {
        ms: u32,
    },
    Expire {
        budget: Option<u8>,
    },
    Remove {
        pick: usize,
    },
    FlushDest {
        dest: u8,
    },
    Lookup {
        src: u8,
        dst: u8,
        udp: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let flags = prop_oneof![
        Just(TcpFlags::SYN.0),
        Just(TcpFlags::ACK.0),
        Just(TcpFlags::SYN.0 | TcpFlags::ACK.0),
        Just(TcpFlags::FIN.0 | TcpFlags::ACK.0),
        Just(TcpFlags::RST.0),
        any::<u8>(),
    ];
    prop_oneof![
        4 => (0..8u8, 0..8u8, 0..8u8, 0..5u8, 0..3u8, any::<bool>(), flags.clone()).prop_map(
            |(client, vip, real, dest, method, udp, flags)| Op::Create {
                client, vip, real, dest, method, udp, flags
            }
        ),
        1 => (0..8u8, 0..8u8, 0..4u8, 1..2000u16)
            .prop_map(|(client, vip, dest, timeout_s)| Op::Template { client, vip, dest, timeout_s }),
        6 => (any::<usize>(), any::<bool>(), proptest::bool::weighted(0.1), flags)
            .prop_map(|(pick, reply, force_output, flags)| Op::Packet { pick, reply, force_output, flags }),
        3 => (0..400_000u32).prop_map(|ms| Op::Advance { ms }),
        2 => proptest::option::of(0..6u8).prop_map(|budget| Op::Expire { budget }),
        1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        1 => (0..4u8).prop_map(|dest| Op::FlushDest { dest }),
        1 => (0..8u8, 0..8u8, any::<bool>()).prop_map(|(src, dst, udp)| Op::Lookup { src, dst, udp }),
    ]
}

/// A small pool of endpoints shared by clients, VIPs and real servers, so keys collide.
fn pool(i: u8) -> Endpoint {
    Endpoint::new(Ipv4Addr::new(10, 0, 0, i % 4), 80 + u16::from(i / 4))
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Conn(TcpFlags),
    Template(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Model {
    real: Endpoint,
    dest: DestId,
    method: ForwardMethod,
    state: ConnState,
    deadline: u64,
    timeout: u64,
    no_output: bool,
    template: bool,
}

impl Model {
    fn has_reply_key(&self) -> bool {
        self.method == ForwardMethod::Nat && !self.template
    }
}

fn reply_of(key: &Flow, m: &Model) -> Flow {
    Flow {
        proto: key.proto,
        src: m.real,
        dst: key.src,
    }
}

struct Harness {
    table: ConnTable,
    standby: ConnTable,
    events: EventQueue,
    model: HashMap<Flow, Model>,
    timeouts: Timeouts,
    policy: ActivePolicy,
    capacity: usize,
    now: u64,
    next_seq: u64,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("fits u64")
}

impl Harness {
    fn new(capacity: usize, policy: ActivePolicy, reclaim_budget: usize, slots: usize) -> Self {
        let mut cfg = ConnConfig::new(capacity, DESTS);
        cfg.active_policy = policy;
        cfg.reclaim_budget = reclaim_budget;
        cfg.wheel_slots = slots;
        let mut standby_cfg = cfg.clone();
        standby_cfg.reclaim_budget = 0;
        Harness {
            table: ConnTable::new(cfg).expect("valid"),
            standby: ConnTable::new(standby_cfg).expect("valid"),
            events: EventQueue::new(4 * capacity + 16),
            model: HashMap::new(),
            timeouts: Timeouts::default(),
            policy,
            capacity,
            now: T0,
            next_seq: 1,
        }
    }

    /// Which model entry owns `flow` as a key, and by which key.
    fn owner(&self, flow: &Flow) -> Option<(Flow, Direction)> {
        if self.model.contains_key(flow) {
            return Some((*flow, Direction::Input));
        }
        self.model
            .iter()
            .find(|(k, m)| m.has_reply_key() && reply_of(k, m) == *flow)
            .map(|(k, _)| (*k, Direction::Output))
    }

    fn sorted_keys(&self) -> Vec<Flow> {
        let mut keys: Vec<Flow> = self.model.keys().copied().collect();
        keys.sort();
        keys
    }

    fn id_of(&self, key: &Flow) -> ConnId {
        let (id, dir) = self.table.lookup(key).expect("model entry is in the table");
        assert_eq!(dir, Direction::Input);
        id
    }

    /// Takes the events of the last operation: checks their sequence numbers, applies
    /// expiries to the model (checking they were due), feeds them all to the standby, and
    /// returns them.
    fn drain(&mut self) -> Vec<ConnEvent> {
        let mut out = Vec::new();
        while let Some(ev) = self.events.pop() {
            assert_eq!(ev.seq, self.next_seq, "consecutive sequence numbers");
            self.next_seq += 1;
            let key = Flow {
                proto: ev.record.proto,
                src: ev.record.client,
                dst: ev.record.vip,
            };
            match ev.kind {
                ConnEventKind::Deleted(DeleteReason::Expired) => {
                    let m = self
                        .model
                        .remove(&key)
                        .expect("expired entry was in the model");
                    assert!(m.deadline <= self.now, "expired before its deadline");
                }
                ConnEventKind::Refreshed => {
                    let m = self.model[&key];
                    assert!(m.deadline > self.now);
                    assert_eq!(ev.record.state, m.state);
                }
                _ => {}
            }
            self.standby
                .apply(&ev, self.now)
                .expect("the standby takes every record");
            out.push(ev);
        }
        assert_eq!(self.table.stats().event_overflow, 0);
        out
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Create {
                client,
                vip,
                real,
                dest,
                method,
                udp,
                flags,
            } => {
                let method = [
                    ForwardMethod::Nat,
                    ForwardMethod::Tunnel,
                    ForwardMethod::DirectRoute,
                ][usize::from(method)];
                let new = NewConn {
                    proto: if udp { Protocol::Udp } else { Protocol::Tcp },
                    client: pool(client),
                    vip: pool(vip),
                    real: pool(real),
                    method,
                    dest: DestId(u32::from(dest)),
                    service: ServiceId(7),
                };
                self.create(&new, Kind::Conn(TcpFlags(flags)));
            }
            Op::Template {
                client,
                vip,
                dest,
                timeout_s,
            } => {
                let mut client = pool(client);
                client.port = 0;
                let new = NewConn {
                    proto: Protocol::Tcp,
                    client,
                    vip: pool(vip),
                    real: pool(vip.wrapping_add(3)),
                    method: ForwardMethod::Nat,
                    dest: DestId(u32::from(dest)),
                    service: ServiceId(1),
                };
                self.create(
                    &new,
                    Kind::Template(Duration::from_secs(u64::from(timeout_s))),
                );
            }
            Op::Packet {
                pick,
                reply,
                force_output,
                flags,
            } => {
                let keys = self.sorted_keys();
                if keys.is_empty() {
                    return;
                }
                let key = keys[pick % keys.len()];
                let m = self.model[&key];
                let (id, dir) = if reply && m.has_reply_key() {
                    let (id, dir) = self
                        .table
                        .lookup(&reply_of(&key, &m))
                        .expect("reply key is indexed");
                    assert_eq!(dir, Direction::Output);
                    (id, dir)
                } else if force_output {
                    (self.id_of(&key), Direction::Output)
                } else {
                    (self.id_of(&key), Direction::Input)
                };
                let flags = TcpFlags(flags);
                let got = self
                    .table
                    .update(id, dir, flags, self.now, &mut self.events);
                let m = self.model.get_mut(&key).expect("present");
                if m.template {
                    m.deadline = self.now + m.timeout;
                } else {
                    let view = match dir {
                        Direction::Output => {
                            m.no_output = false;
                            TcpDir::Output
                        }
                        Direction::Input if m.no_output => TcpDir::InputOnly,
                        Direction::Input => TcpDir::Input,
                    };
                    m.state = tcp_next_state(m.state, view, flags);
                    m.timeout = ns(self.timeouts.for_state(m.state));
                    m.deadline = self.now + m.timeout;
                }
                assert_eq!(got, Some(m.state));
                let _ = self.drain();
            }
            Op::Advance { ms } => self.now += u64::from(ms) * MS,
            Op::Expire { budget } => {
                let budget = budget.map_or(usize::MAX, usize::from);
                let removed = self.table.expire(self.now, budget, &mut self.events);
                assert!(removed <= budget);
                let expired = self
                    .drain()
                    .iter()
                    .filter(|e| e.kind == ConnEventKind::Deleted(DeleteReason::Expired))
                    .count();
                assert_eq!(expired, removed);
                if budget == usize::MAX {
                    let boundary = self.now / TICK * TICK;
                    for (k, m) in &self.model {
                        assert!(m.deadline > boundary, "{k:?} is past its deadline");
                    }
                }
            }
            Op::Remove { pick } => {
                let keys = self.sorted_keys();
                if keys.is_empty() {
                    return;
                }
                let key = keys[pick % keys.len()];
                let id = self.id_of(&key);
                assert!(self.table.remove(id, self.now, &mut self.events));
                self.model.remove(&key);
                let evs = self.drain();
                assert_eq!(evs.len(), 1);
                assert_eq!(evs[0].kind, ConnEventKind::Deleted(DeleteReason::Removed));
                assert!(!self.table.remove(id, self.now, &mut self.events));
            }
            Op::FlushDest { dest } => {
                let dest = DestId(u32::from(dest));
                let n = self.table.flush_dest(dest, self.now, &mut self.events);
                let before = self.model.len();
                self.model.retain(|_, m| m.dest != dest);
                assert_eq!(n, before - self.model.len());
                let evs = self.drain();
                assert_eq!(evs.len(), n);
                assert!(
                    evs.iter()
                        .all(|e| e.kind == ConnEventKind::Deleted(DeleteReason::Flushed)
                            && e.record.dest == dest)
                );
            }
            Op::Lookup { src, dst, udp } => {
                let flow = Flow {
                    proto: if udp { Protocol::Udp } else { Protocol::Tcp },
                    src: pool(src),
                    dst: pool(dst),
                };
                let got = self
                    .table
                    .lookup(&flow)
                    .map(|(id, dir)| (self.table.get(id).expect("live").input_flow(), dir));
                assert_eq!(got, self.owner(&flow));
            }
        }
        self.check();
    }

    fn create(&mut self, new: &NewConn, kind: Kind) {
        let key = Flow {
            proto: new.proto,
            src: new.client,
            dst: new.vip,
        };
        let template = matches!(kind, Kind::Template(_));
        let nat = new.method == ForwardMethod::Nat && !template;
        let reply = Flow {
            proto: new.proto,
            src: new.real,
            dst: new.client,
        };
        let expect_conflict = match self.owner(&key) {
            Some((_, Direction::Input)) => Some(CreateError::Exists(self.id_of(&key))),
            Some((_, Direction::Output)) => Some(CreateError::KeyTaken),
            None if nat && (reply == key || self.owner(&reply).is_some()) => {
                Some(CreateError::KeyTaken)
            }
            None => None,
        };
        let got = match kind {
            Kind::Conn(f) => self.table.create(new, f, self.now, &mut self.events),
            Kind::Template(timeout) => {
                self.table
                    .create_template(new, timeout, self.now, &mut self.events)
            }
        };
        // Reclaimed entries show up as expiry events.
        let _ = self.drain();
        if new.dest.0 as usize >= DESTS {
            assert_eq!(got, Err(CreateError::BadDest(new.dest)));
            return;
        }
        if let Some(e) = expect_conflict {
            assert_eq!(got, Err(e));
            return;
        }
        match got {
            Ok(id) => {
                assert!(self.model.len() < self.capacity);
                let (state, timeout) = match (kind, new.proto) {
                    (Kind::Template(timeout), _) => (ConnState::None, ns(timeout)),
                    (Kind::Conn(f), Protocol::Tcp) => {
                        let view = if new.method == ForwardMethod::Nat {
                            TcpDir::Input
                        } else {
                            TcpDir::InputOnly
                        };
                        let s = tcp_next_state(ConnState::None, view, f);
                        (s, ns(self.timeouts.for_state(s)))
                    }
                    (Kind::Conn(_), Protocol::Udp) => {
                        (ConnState::Udp, ns(self.timeouts.for_state(ConnState::Udp)))
                    }
                };
                self.model.insert(
                    key,
                    Model {
                        real: new.real,
                        dest: new.dest,
                        method: new.method,
                        state,
                        deadline: self.now + timeout,
                        timeout,
                        no_output: new.method != ForwardMethod::Nat,
                        template,
                    },
                );
                assert_eq!(self.table.get(id).expect("live").input_flow(), key);
            }
            Err(CreateError::Full) => assert_eq!(self.model.len(), self.capacity),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    fn check(&self) {
        let t = &self.table;
        assert_eq!(t.len(), self.model.len());
        assert_eq!(t.iter().count(), self.model.len());
        let mut recount = [DestCounts::default(); DESTS];
        for (key, m) in &self.model {
            let (id, dir) = t.lookup(key).expect("input key found");
            assert_eq!(dir, Direction::Input);
            let c = t.get(id).expect("live");
            assert_eq!(c.state(), m.state, "{key:?}");
            assert_eq!((c.dest(), c.real(), c.method()), (m.dest, m.real, m.method));
            assert_eq!(c.is_template(), m.template);
            assert_eq!(c.deadline(), m.deadline);
            let reply = reply_of(key, m);
            if m.has_reply_key() {
                assert_eq!(t.lookup(&reply), Some((id, Direction::Output)));
            } else if self.owner(&reply).is_none() {
                assert_eq!(t.lookup(&reply), None);
            }
            let d = &mut recount[m.dest.0 as usize];
            if m.template {
                d.persistent += 1;
            } else if m.state.is_tcp() && self.policy.is_active(m.state) {
                d.active += 1;
                assert!(c.is_active());
            } else {
                d.inactive += 1;
                assert!(!c.is_active());
            }
        }
        assert_eq!(t.dest_counts(), &recount[..]);

        // The standby mirrors the active table (deadlines aside).
        let s = &self.standby;
        assert_eq!(s.len(), t.len());
        for (_, c) in t.iter() {
            let (id, dir) = s.lookup(&c.input_flow()).expect("standby has it");
            assert_eq!(dir, Direction::Input);
            let sc = s.get(id).expect("live");
            assert_eq!(
                (
                    sc.state(),
                    sc.dest(),
                    sc.real(),
                    sc.method(),
                    sc.is_template()
                ),
                (c.state(), c.dest(), c.real(), c.method(), c.is_template())
            );
        }
        assert_eq!(s.dest_counts(), t.dest_counts());
    }
}

fn policy() -> impl Strategy<Value = ActivePolicy> {
    prop_oneof![
        Just(ActivePolicy::EstablishedOnly),
        Just(ActivePolicy::PreEstablished)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn table_agrees_with_a_hashmap_model(
        capacity in 1usize..12,
        policy in policy(),
        reclaim in 0usize..4,
        slots in prop_oneof![Just(16usize), Just(16384)],
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let mut h = Harness::new(capacity, policy, reclaim, slots);
        for op in &ops {
            h.step(op);
        }
        // Everything ends: a long time later the table is empty and the counts are zero.
        h.now += 3_600 * SECOND;
        while !h.table.is_empty() {
            h.step(&Op::Expire { budget: Some(5) });
        }
        prop_assert!(h.table.dest_counts().iter().all(|d| *d == DestCounts::default()));
        prop_assert!(h.standby.is_empty());
        if std::env::var_os("CONN_PROPS_STATS").is_some() {
            eprintln!("{:?}", h.table.stats());
        }
    }
}

fn record() -> impl Strategy<Value = tandem_core::conn::ConnRecord> {
    (
        (any::<bool>(), 0..8u8, 0..8u8, 0..8u8, 0..3u8, 0..6u8),
        (0..=12u8, any::<u8>(), any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |((udp, client, vip, real, method, dest), (state, flags, timeout_ms, remaining_ms))| {
                tandem_core::conn::ConnRecord {
                    proto: if udp { Protocol::Udp } else { Protocol::Tcp },
                    client: pool(client),
                    vip: pool(vip),
                    real: pool(real),
                    method: [
                        ForwardMethod::Nat,
                        ForwardMethod::Tunnel,
                        ForwardMethod::DirectRoute,
                    ][usize::from(method)],
                    dest: DestId(u32::from(dest)),
                    service: ServiceId(0),
                    state: ConnState::from_u8(state).unwrap_or(ConnState::Close),
                    flags: tandem_core::conn::ConnFlags::from_bits(flags),
                    timeout_ms,
                    remaining_ms,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the peer sends, installing it never panics, refuses bad records without a
    /// change, keeps keys unique and the counts exact.
    #[test]
    fn arbitrary_peer_records_keep_the_table_consistent(
        capacity in 1usize..10,
        records in proptest::collection::vec((record(), any::<bool>(), 0..200u16), 1..80),
    ) {
        let mut t = ConnTable::new(ConnConfig::new(capacity, DESTS)).expect("valid");
        let mut now = T0;
        for (rec, delete, advance_s) in &records {
            now += u64::from(*advance_s) * SECOND;
            let len = t.len();
            let counts = t.dest_counts().to_vec();
            if *delete {
                let had = t.uninstall(rec);
                prop_assert_eq!(t.len(), len - usize::from(had));
            } else {
                match t.install(rec, now) {
                    Ok(id) => {
                        let c = t.get(id).expect("live");
                        prop_assert_eq!(c.state(), rec.state);
                        prop_assert_eq!(c.real(), rec.real);
                        prop_assert_eq!(t.lookup(&c.input_flow()), Some((id, Direction::Input)));
                    }
                    Err(_) => {
                        prop_assert_eq!(t.len(), len);
                        prop_assert_eq!(t.dest_counts(), &counts[..]);
                    }
                }
            }
            t.expire(now, 4, &mut tandem_core::conn::DiscardEvents);
            prop_assert!(t.len() <= capacity);
            let mut recount = [DestCounts::default(); DESTS];
            for (id, c) in t.iter() {
                prop_assert_eq!(t.lookup(&c.input_flow()), Some((id, Direction::Input)));
                if c.method() == ForwardMethod::Nat && !c.is_template() {
                    prop_assert_eq!(t.lookup(&c.reply_flow()), Some((id, Direction::Output)));
                }
                let d = &mut recount[c.dest().0 as usize];
                if c.is_template() {
                    d.persistent += 1;
                } else if c.proto() == Protocol::Tcp
                    && ActivePolicy::EstablishedOnly.is_active(c.state())
                {
                    prop_assert!(c.is_active());
                    d.active += 1;
                } else {
                    prop_assert!(!c.is_active());
                    d.inactive += 1;
                }
            }
            prop_assert_eq!(t.dest_counts(), &recount[..]);
        }
    }
}
