//! Exact tests of the connection table: both-direction lookup, the TCP life of a connection
//! with its destination counts (NAT and input-only), timeouts per state, expiry with virtual
//! time, the expiry budget, the full policy, events and their sequence numbers, installing the
//! peer's records, flushing a destination.

use std::net::Ipv4Addr;
use std::time::Duration;

use tandem_core::conn::{
    ActivePolicy, ConnConfig, ConnConfigError, ConnEvent, ConnEventKind, ConnFlags, ConnId,
    ConnState, ConnTable, CreateError, DeleteReason, DestCounts, Direction, DiscardEvents,
    EventQueue, InstallError, NewConn, TcpDir, TcpFlags, Timeouts, tcp_next_state,
};
use tandem_core::lb::{DestId, Endpoint, Flow, ForwardMethod, Protocol, ServiceId};

const SECOND: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const TICK: u64 = 100 * MS;
/// An arbitrary origin: the caller's clock does not start at zero.
const T0: u64 = 1_000_000 * SECOND + 37 * MS;

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const FIN_ACK: TcpFlags = TcpFlags(TcpFlags::FIN.0 | TcpFlags::ACK.0);
const SYN_ACK: TcpFlags = TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0);
const PSH_ACK: TcpFlags = TcpFlags(TcpFlags::PSH.0 | TcpFlags::ACK.0);

fn ep(a: u8, b: u8, port: u16) -> Endpoint {
    Endpoint::new(Ipv4Addr::new(10, a, 0, b), port)
}

fn vip() -> Endpoint {
    Endpoint::new(Ipv4Addr::new(202, 103, 106, 5), 80)
}

fn conn(client: u8, dest: u32, method: ForwardMethod) -> NewConn {
    NewConn {
        proto: Protocol::Tcp,
        client: ep(9, client, 40_000 + u16::from(client)),
        vip: vip(),
        real: ep(16, u8::try_from(dest + 2).expect("small dest"), 8000),
        method,
        dest: DestId(dest),
        service: ServiceId(0),
    }
}

fn table(capacity: usize) -> ConnTable {
    ConnTable::new(ConnConfig::new(capacity, 4)).expect("valid configuration")
}

fn counts(active: u32, inactive: u32) -> DestCounts {
    DestCounts {
        active,
        inactive,
        persistent: 0,
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).expect("fits u64")
}

fn events(q: &mut EventQueue) -> Vec<ConnEvent> {
    std::iter::from_fn(|| q.pop()).collect()
}

#[test]
fn config_is_validated() {
    let bad = |f: fn(&mut ConnConfig)| {
        let mut c = ConnConfig::new(16, 4);
        f(&mut c);
        ConnTable::new(c).unwrap_err()
    };
    assert_eq!(bad(|c| c.capacity = 0), ConnConfigError::Capacity(0));
    assert_eq!(
        bad(|c| c.capacity = (1 << 30) + 1),
        ConnConfigError::Capacity((1 << 30) + 1)
    );
    assert_eq!(
        bad(|c| c.wheel_slots = 1000),
        ConnConfigError::WheelSlots(1000)
    );
    assert_eq!(
        bad(|c| c.tick = Duration::from_millis(1)),
        ConnConfigError::Tick(Duration::from_millis(1))
    );
    assert_eq!(
        bad(|c| c.timeouts.udp = Duration::from_secs(50 * 86_400)),
        ConnConfigError::Timeout(ConnState::Udp)
    );
    assert!(!bad(|c| c.capacity = 0).to_string().is_empty());
}

#[test]
fn lookup_finds_both_directions_of_nat_and_only_input_of_tun_dr() {
    let mut t = table(16);
    let nat = conn(1, 0, ForwardMethod::Nat);
    let dr = conn(2, 1, ForwardMethod::DirectRoute);
    let tun = conn(3, 2, ForwardMethod::Tunnel);
    let id_nat = t.create(&nat, SYN, T0, &mut DiscardEvents).unwrap();
    let id_dr = t.create(&dr, SYN, T0, &mut DiscardEvents).unwrap();
    let id_tun = t.create(&tun, SYN, T0, &mut DiscardEvents).unwrap();

    let flow = |c: &NewConn| Flow {
        proto: c.proto,
        src: c.client,
        dst: c.vip,
    };
    let reply = |c: &NewConn| Flow {
        proto: c.proto,
        src: c.real,
        dst: c.client,
    };
    assert_eq!(t.lookup(&flow(&nat)), Some((id_nat, Direction::Input)));
    assert_eq!(t.lookup(&reply(&nat)), Some((id_nat, Direction::Output)));
    assert_eq!(t.lookup(&flow(&dr)), Some((id_dr, Direction::Input)));
    assert_eq!(t.lookup(&reply(&dr)), None);
    assert_eq!(t.lookup(&flow(&tun)), Some((id_tun, Direction::Input)));
    assert_eq!(t.lookup(&reply(&tun)), None);
    // The reversed flows, another protocol, another port: not found.
    assert_eq!(t.lookup(&flow(&nat).reversed()), None);
    assert_eq!(
        t.lookup(&Flow {
            proto: Protocol::Udp,
            ..flow(&nat)
        }),
        None
    );
    let mut other = flow(&nat);
    other.src.port += 1;
    assert_eq!(t.lookup(&other), None);

    let c = t.get(id_nat).unwrap();
    assert_eq!(c.input_flow(), flow(&nat));
    assert_eq!(c.reply_flow(), reply(&nat));
    assert_eq!(
        (c.dest(), c.method(), c.real()),
        (DestId(0), ForwardMethod::Nat, nat.real)
    );
    assert!(!c.flags().contains(ConnFlags::NO_OUTPUT));
    assert!(t.get(id_dr).unwrap().flags().contains(ConnFlags::NO_OUTPUT));

    // Same client→VIP key again: exists. Another client whose NAT reply key would be the
    // same: refused.
    assert_eq!(
        t.create(&nat, SYN, T0, &mut DiscardEvents),
        Err(CreateError::Exists(id_nat))
    );
    let mut same_reply = nat;
    same_reply.vip.port = 8080;
    assert_eq!(
        t.create(&same_reply, SYN, T0, &mut DiscardEvents),
        Err(CreateError::KeyTaken)
    );
    assert_eq!(t.stats().key_conflicts, 1);
    assert_eq!(t.len(), 3);
}

/// Client SYN, server SYN-ACK, client ACK, data both ways, client FIN, server FIN, client
/// ACK, expiry: the kernel's path through its INPUT/OUTPUT tables, with the counts.
#[test]
fn nat_tcp_life_with_counts() {
    let mut t = table(16);
    let mut q = EventQueue::new(64);
    let c = conn(1, 2, ForwardMethod::Nat);
    let d = |t: &ConnTable| t.dest_counts()[2];
    let mut now = T0;

    let id = t.create(&c, SYN, now, &mut q).unwrap();
    assert_eq!(t.get(id).unwrap().state(), ConnState::SynRecv);
    assert_eq!(d(&t), counts(0, 1));
    let step = |t: &mut ConnTable, q: &mut EventQueue, now: u64, dir, flags, want, active| {
        assert_eq!(t.update(id, dir, flags, now, q), Some(want), "{flags:?}");
        assert_eq!(t.get(id).unwrap().is_active(), active);
        assert_eq!(
            t.dest_counts()[2],
            counts(u32::from(active), u32::from(!active))
        );
        assert_eq!(
            t.get(id).unwrap().deadline(),
            now + ns(t.timeouts().for_state(want))
        );
    };
    now += MS;
    step(
        &mut t,
        &mut q,
        now,
        Direction::Output,
        SYN_ACK,
        ConnState::SynRecv,
        false,
    );
    now += MS;
    step(
        &mut t,
        &mut q,
        now,
        Direction::Input,
        ACK,
        ConnState::Established,
        true,
    );
    for _ in 0..3 {
        now += MS;
        step(
            &mut t,
            &mut q,
            now,
            Direction::Input,
            PSH_ACK,
            ConnState::Established,
            true,
        );
        now += MS;
        step(
            &mut t,
            &mut q,
            now,
            Direction::Output,
            PSH_ACK,
            ConnState::Established,
            true,
        );
    }
    now += MS;
    step(
        &mut t,
        &mut q,
        now,
        Direction::Input,
        FIN_ACK,
        ConnState::CloseWait,
        false,
    );
    now += MS;
    step(
        &mut t,
        &mut q,
        now,
        Direction::Output,
        FIN_ACK,
        ConnState::TimeWait,
        false,
    );
    now += MS;
    step(
        &mut t,
        &mut q,
        now,
        Direction::Input,
        ACK,
        ConnState::TimeWait,
        false,
    );

    // Idle in TIME_WAIT (120 s): gone within a tick of the deadline.
    let deadline = now + 120 * SECOND;
    assert_eq!(t.expire(deadline - MS, usize::MAX, &mut q), 0);
    assert_eq!(t.expire(deadline + TICK, usize::MAX, &mut q), 1);
    assert!(t.is_empty());
    assert_eq!(d(&t), counts(0, 0));

    let kinds: Vec<(ConnEventKind, ConnState)> = events(&mut q)
        .iter()
        .map(|e| (e.kind, e.record.state))
        .collect();
    assert_eq!(
        kinds,
        [
            (ConnEventKind::Created, ConnState::SynRecv),
            (ConnEventKind::StateChanged, ConnState::Established),
            (ConnEventKind::StateChanged, ConnState::CloseWait),
            (ConnEventKind::StateChanged, ConnState::TimeWait),
            // Its first deadline (SYN_RECV, 60 s) came while it was in TIME_WAIT: re-filed,
            // and the peer told.
            (ConnEventKind::Refreshed, ConnState::TimeWait),
            (
                ConnEventKind::Deleted(DeleteReason::Expired),
                ConnState::TimeWait
            ),
        ]
    );
}

/// TUN/DR: only the client's packets are seen; the INPUT-ONLY table.
#[test]
fn input_only_tcp_life_with_counts() {
    for method in [ForwardMethod::DirectRoute, ForwardMethod::Tunnel] {
        let mut t = table(16);
        let c = conn(1, 1, method);
        let mut now = T0;
        let id = t.create(&c, SYN, now, &mut DiscardEvents).unwrap();
        assert_eq!(t.get(id).unwrap().state(), ConnState::SynRecv);
        assert_eq!(t.dest_counts()[1], counts(0, 1));
        let path = [
            (ACK, ConnState::Established, true),
            (PSH_ACK, ConnState::Established, true),
            (PSH_ACK, ConnState::Established, true),
            // Client closes: INPUT-ONLY sends ESTABLISHED + FIN to FIN_WAIT (INPUT would say
            // CLOSE_WAIT).
            (FIN_ACK, ConnState::FinWait, false),
            // The client ACKs the server's FIN, which the director never saw.
            (ACK, ConnState::FinWait, false),
        ];
        for (flags, want, active) in path {
            now += MS;
            assert_eq!(
                t.update(id, Direction::Input, flags, now, &mut DiscardEvents),
                Some(want)
            );
            assert_eq!(
                t.dest_counts()[1],
                counts(u32::from(active), u32::from(!active)),
                "{method:?} {flags:?}"
            );
        }
        // FIN_WAIT: 60 s (the spec), not the kernel's 120 s.
        let deadline = now + 60 * SECOND;
        assert_eq!(t.get(id).unwrap().deadline(), deadline);
        assert_eq!(t.expire(deadline - MS, usize::MAX, &mut DiscardEvents), 0);
        assert_eq!(t.expire(deadline + TICK, usize::MAX, &mut DiscardEvents), 1);
        assert_eq!(t.dest_counts()[1], counts(0, 0));
    }
}

#[test]
fn reset_closes_and_close_expires_after_ten_seconds() {
    let mut t = table(16);
    let id = t
        .create(&conn(1, 0, ForwardMethod::Nat), SYN, T0, &mut DiscardEvents)
        .unwrap();
    t.update(id, Direction::Input, ACK, T0 + MS, &mut DiscardEvents);
    assert_eq!(t.dest_counts()[0], counts(1, 0));
    let now = T0 + 2 * MS;
    assert_eq!(
        t.update(
            id,
            Direction::Output,
            TcpFlags::RST,
            now,
            &mut DiscardEvents
        ),
        Some(ConnState::Close)
    );
    assert_eq!(t.dest_counts()[0], counts(0, 1));
    // The deadline moved from 900 s to 10 s away: the wheel re-filed it at once.
    assert_eq!(
        t.expire(now + 10 * SECOND - MS, usize::MAX, &mut DiscardEvents),
        0
    );
    assert_eq!(
        t.expire(now + 10 * SECOND + TICK, usize::MAX, &mut DiscardEvents),
        1
    );
    assert_eq!(t.dest_counts()[0], counts(0, 0));
}

#[test]
fn udp_is_one_inactive_state_for_300_seconds() {
    let mut t = table(16);
    let mut c = conn(1, 3, ForwardMethod::Nat);
    c.proto = Protocol::Udp;
    let id = t
        .create(&c, TcpFlags::NONE, T0, &mut DiscardEvents)
        .unwrap();
    assert_eq!(t.get(id).unwrap().state(), ConnState::Udp);
    assert_eq!(t.dest_counts()[3], counts(0, 1));
    // Flags mean nothing to UDP.
    assert_eq!(
        t.update(
            id,
            Direction::Output,
            TcpFlags::RST,
            T0 + SECOND,
            &mut DiscardEvents
        ),
        Some(ConnState::Udp)
    );
    assert_eq!(t.dest_counts()[3], counts(0, 1));
    assert_eq!(t.get(id).unwrap().deadline(), T0 + 301 * SECOND);
    assert_eq!(t.get(id).unwrap().timeout(), Duration::from_secs(300));
}

#[test]
fn pre_established_policy_counts_half_open_as_active() {
    let mut cfg = ConnConfig::new(16, 4);
    cfg.active_policy = ActivePolicy::PreEstablished;
    let mut t = ConnTable::new(cfg).unwrap();
    let id = t
        .create(&conn(1, 0, ForwardMethod::Nat), SYN, T0, &mut DiscardEvents)
        .unwrap();
    assert_eq!(t.dest_counts()[0], counts(1, 0));
    t.update(id, Direction::Input, ACK, T0, &mut DiscardEvents);
    assert_eq!(t.dest_counts()[0], counts(1, 0));
    t.update(id, Direction::Input, FIN_ACK, T0, &mut DiscardEvents);
    assert_eq!(t.dest_counts()[0], counts(0, 1));
}

/// Every (state, view, flag class): after the packet, the entry's timeout is the new state's
/// and its deadline `now` + that; counts follow the state.
#[test]
fn timeouts_per_state_after_every_transition() {
    let views = [
        (TcpDir::Input, ForwardMethod::Nat, Direction::Input),
        (TcpDir::Output, ForwardMethod::Nat, Direction::Output),
        (
            TcpDir::InputOnly,
            ForwardMethod::DirectRoute,
            Direction::Input,
        ),
    ];
    let flags = [TcpFlags::SYN, FIN_ACK, ACK, TcpFlags::RST];
    let mut t = table(64);
    let mut now = T0;
    let mut seen = std::collections::BTreeSet::new();
    for from in ConnState::TCP_STATES {
        for (view, method, dir) in views {
            for f in flags {
                // Put a connection in `from` the way the standby would.
                let c = conn(1, 0, method);
                let rec = tandem_core::conn::ConnRecord {
                    proto: c.proto,
                    client: c.client,
                    vip: c.vip,
                    real: c.real,
                    method,
                    dest: c.dest,
                    service: c.service,
                    state: from,
                    flags: ConnFlags::EMPTY,
                    timeout_ms: 1,
                    remaining_ms: 1,
                };
                let id = t.install(&rec, now).unwrap();
                now += MS;
                let to = t.update(id, dir, f, now, &mut DiscardEvents).unwrap();
                assert_eq!(to, tcp_next_state(from, view, f));
                let e = t.get(id).unwrap();
                let timeout = t.timeouts().for_state(to);
                assert_eq!(e.timeout(), timeout, "{from} {view:?} {f:?}");
                assert_eq!(e.deadline(), now + ns(timeout));
                let active = to == ConnState::Established;
                assert_eq!(
                    t.dest_counts()[0],
                    counts(u32::from(active), u32::from(!active))
                );
                seen.insert(to);
                assert!(t.remove(id, now, &mut DiscardEvents));
                assert_eq!(t.dest_counts()[0], counts(0, 0));
            }
        }
    }
    // Every state but NONE and SYNACK is the target of some transition.
    assert_eq!(seen.len(), 9);
}

#[test]
fn a_refreshed_entry_does_not_expire_and_an_idle_one_does_within_a_tick() {
    let mut t = table(16);
    let mut q = EventQueue::new(64);
    let busy = t
        .create(&conn(1, 0, ForwardMethod::Nat), SYN, T0, &mut q)
        .unwrap();
    let idle = t
        .create(&conn(2, 0, ForwardMethod::Nat), SYN, T0, &mut q)
        .unwrap();
    // Both in SYN_RECV (60 s). `busy` gets a packet every 10 s; `idle` none. Expire runs every
    // 10 ms of virtual time.
    let deadline = T0 + 60 * SECOND;
    let mut gone_at = None;
    let mut now = T0;
    while now < T0 + 200 * SECOND {
        now += 10 * MS;
        if (now - T0) % (10 * SECOND) == 0 {
            t.update(busy, Direction::Input, SYN, now, &mut q);
        }
        t.expire(now, usize::MAX, &mut q);
        if gone_at.is_none() && t.get(idle).is_none() {
            gone_at = Some(now);
        }
    }
    let gone_at = gone_at.unwrap();
    assert!(
        gone_at >= deadline && gone_at <= deadline + TICK,
        "idle entry removed {} ms after its deadline",
        (gone_at - deadline) / MS
    );
    assert!(t.get(busy).is_some());
    assert_eq!(t.len(), 1);
    // The busy one was re-filed when its first deadline came, and the peer told.
    assert!(t.stats().refiled >= 1);
    let evs = events(&mut q);
    assert!(
        evs.iter()
            .any(|e| e.kind == ConnEventKind::Refreshed && e.record.client.port == 40_001)
    );
    assert_eq!(
        evs.iter()
            .filter(|e| e.kind == ConnEventKind::Deleted(DeleteReason::Expired))
            .count(),
        1
    );
}

#[test]
fn expiry_is_exact_to_the_tick_for_many_deadlines() {
    // 2000 deadlines spread over 20 s (200 ticks, three turns of a 64-slot wheel), not on tick
    // boundaries; `expire` at every tick boundary. Each entry must be gone at the first
    // boundary at or after its deadline, and present before.
    let mut cfg = ConnConfig::new(4096, 4);
    cfg.wheel_slots = 64;
    let mut t = ConnTable::new(cfg).unwrap();
    let mut deadlines = Vec::new();
    for i in 0..2000u32 {
        let mut c = conn(0, i % 4, ForwardMethod::Nat);
        c.client = Endpoint::new(Ipv4Addr::from(0x0a00_0000 + i), 0);
        let timeout = Duration::from_millis(u64::from(i) * 7919 % 20_000);
        let id = t
            .create_template(&c, timeout, T0, &mut DiscardEvents)
            .unwrap();
        deadlines.push((id, T0 + ns(timeout)));
    }
    let mut now = T0;
    while !t.is_empty() {
        now = (now / TICK + 1) * TICK;
        t.expire(now, usize::MAX, &mut DiscardEvents);
        for &(id, d) in &deadlines {
            assert_eq!(t.get(id).is_none(), d <= now, "deadline {d}, now {now}");
        }
    }
    assert!(now < T0 + 20 * SECOND + TICK);
    assert_eq!(t.stats().expired, 2000);
}

#[test]
fn templates_with_long_timeouts_survive_wheel_turns_and_expire_on_time() {
    let mut cfg = ConnConfig::new(64, 4);
    cfg.wheel_slots = 16; // 1.6 s per turn
    let mut t = ConnTable::new(cfg).unwrap();
    let mut q = EventQueue::new(256);
    let mut deadlines = Vec::new();
    for i in 0..40u8 {
        let mut c = conn(i, u32::from(i % 4), ForwardMethod::DirectRoute);
        c.client.port = 0;
        let timeout = Duration::from_millis(1_000 + 377 * u64::from(i));
        let id = t.create_template(&c, timeout, T0, &mut q).unwrap();
        deadlines.push((id, T0 + ns(timeout)));
    }
    let persistent: u32 = t.dest_counts().iter().map(|d| d.persistent).sum();
    assert_eq!(persistent, 40);
    assert!(
        t.dest_counts()
            .iter()
            .all(|d| d.active == 0 && d.inactive == 0)
    );
    let mut now = T0;
    while !t.is_empty() {
        now += 30 * MS;
        t.expire(now, usize::MAX, &mut q);
        for &(id, d) in &deadlines {
            if t.get(id).is_none() {
                assert!(now >= d, "removed before its deadline");
            } else {
                assert!(now < d + TICK, "kept more than a tick past its deadline");
            }
        }
    }
    assert!(t.dest_counts().iter().all(|d| *d == DestCounts::default()));
    // Skipped in later turns, never re-filed: templates had no traffic.
    assert_eq!(t.stats().refiled, 0);
    assert_eq!(t.stats().expired, 40);
}

#[test]
fn touch_keeps_a_template_alive() {
    let mut t = table(16);
    let mut c = conn(1, 0, ForwardMethod::Nat);
    c.client.port = 0;
    let id = t
        .create_template(&c, Duration::from_secs(300), T0, &mut DiscardEvents)
        .unwrap();
    assert!(t.get(id).unwrap().is_template());
    // No reply key for a template, even NAT.
    assert_eq!(t.lookup(&t.get(id).unwrap().reply_flow()), None);
    let mut now = T0;
    for _ in 0..10 {
        now += 200 * SECOND;
        assert!(t.touch(id, now));
        t.expire(now, usize::MAX, &mut DiscardEvents);
        assert!(t.get(id).is_some());
    }
    assert_eq!(t.dest_counts()[0].persistent, 1);
    t.expire(now + 300 * SECOND + TICK, usize::MAX, &mut DiscardEvents);
    assert!(t.is_empty());
    assert_eq!(t.dest_counts()[0], DestCounts::default());
    assert!(!t.touch(id, now));
}

#[test]
fn expire_is_bounded_by_its_budget_and_resumes() {
    let mut t = table(256);
    for i in 0..100u8 {
        t.create(&conn(i, 0, ForwardMethod::Nat), SYN, T0, &mut DiscardEvents)
            .unwrap();
    }
    let later = T0 + 61 * SECOND;
    let mut calls = 0;
    let mut total = 0;
    while !t.is_empty() {
        let n = t.expire(later, 7, &mut DiscardEvents);
        assert!(n <= 7);
        total += n;
        calls += 1;
        assert!(calls <= 100);
    }
    assert_eq!(total, 100);
    assert_eq!(calls, 100usize.div_ceil(7));
    assert_eq!(t.expire(later, 0, &mut DiscardEvents), 0);
    assert_eq!(t.dest_counts()[0], counts(0, 0));
}

#[test]
fn removing_entries_while_expire_is_paused_mid_slot_is_safe() {
    let mut t = table(64);
    let ids: Vec<_> = (0..30u8)
        .map(|i| {
            t.create(&conn(i, 0, ForwardMethod::Nat), SYN, T0, &mut DiscardEvents)
                .unwrap()
        })
        .collect();
    // A third become ESTABLISHED (900 s) half-way: lazily, they stay in the 60 s slot.
    for id in ids.iter().skip(1).step_by(3) {
        t.update(
            *id,
            Direction::Input,
            ACK,
            T0 + 30 * SECOND,
            &mut DiscardEvents,
        );
    }
    assert_eq!(t.dest_counts()[0], counts(10, 20));
    let later = T0 + 61 * SECOND;
    // Three entries examined (removed, or re-filed if established).
    assert!(t.expire(later, 3, &mut DiscardEvents) <= 3);
    assert!(t.len() < 30);
    // Paused in the middle of that slot: remove a third (possibly the resume point), and
    // reset the established ones (ESTABLISHED → CLOSE, 10 s).
    for id in ids.iter().step_by(3) {
        t.remove(*id, later, &mut DiscardEvents);
    }
    for id in ids.iter().skip(1).step_by(3) {
        assert_eq!(
            t.update(
                *id,
                Direction::Input,
                TcpFlags::RST,
                later,
                &mut DiscardEvents
            ),
            Some(ConnState::Close)
        );
    }
    assert_eq!(t.dest_counts()[0].active, 0);
    t.expire(later, usize::MAX, &mut DiscardEvents);
    // Only the reset ones are left, until 10 s later.
    assert_eq!(t.len(), 10);
    assert!(t.iter().all(|(_, c)| c.state() == ConnState::Close));
    assert_eq!(
        t.expire(later + 10 * SECOND - MS, usize::MAX, &mut DiscardEvents),
        0
    );
    assert_eq!(
        t.expire(later + 10 * SECOND + TICK, usize::MAX, &mut DiscardEvents),
        10
    );
    assert!(t.is_empty());
    assert_eq!(t.dest_counts()[0], counts(0, 0));
}

#[test]
fn a_full_table_refuses_counts_and_reclaims_expired_entries() {
    let mut cfg = ConnConfig::new(4, 4);
    cfg.reclaim_budget = 0;
    let mut strict = ConnTable::new(cfg).unwrap();
    let mut t = table(4);
    for table in [&mut strict, &mut t] {
        for i in 0..4u8 {
            table
                .create(&conn(i, 0, ForwardMethod::Nat), SYN, T0, &mut DiscardEvents)
                .unwrap();
        }
        assert_eq!(
            table.create(&conn(9, 0, ForwardMethod::Nat), SYN, T0, &mut DiscardEvents),
            Err(CreateError::Full)
        );
        assert_eq!(table.stats().full_drops, 1);
        assert_eq!(table.len(), 4);
    }
    // All four are past their deadline (SYN_RECV, 60 s), but nobody ran `expire`.
    let later = T0 + 61 * SECOND;
    assert_eq!(
        strict.create(
            &conn(9, 0, ForwardMethod::Nat),
            SYN,
            later,
            &mut DiscardEvents
        ),
        Err(CreateError::Full)
    );
    assert_eq!(strict.stats().full_drops, 2);
    let mut q = EventQueue::new(16);
    let id = t
        .create(&conn(9, 1, ForwardMethod::Nat), SYN, later, &mut q)
        .unwrap();
    assert!(t.stats().reclaimed >= 1);
    assert_eq!(t.stats().full_drops, 1);
    assert!(t.len() <= 4);
    assert_eq!(t.dest_counts()[1], counts(0, 1));
    let evs = events(&mut q);
    assert_eq!(evs.last().unwrap().kind, ConnEventKind::Created);
    assert!(
        evs[..evs.len() - 1]
            .iter()
            .all(|e| e.kind == ConnEventKind::Deleted(DeleteReason::Expired))
    );
    assert!(t.get(id).is_some());
    // Bad destination: refused, counted, nothing changed.
    assert_eq!(
        t.create(
            &conn(10, 7, ForwardMethod::Nat),
            SYN,
            later,
            &mut DiscardEvents
        ),
        Err(CreateError::BadDest(DestId(7)))
    );
    assert_eq!(t.stats().bad_dest, 1);
}

#[test]
fn events_are_in_order_with_sequence_numbers_and_overflow_is_counted() {
    let mut t = table(16);
    let mut q = EventQueue::new(3);
    let c = conn(1, 0, ForwardMethod::Nat);
    let id = t.create(&c, SYN, T0, &mut q).unwrap();
    t.update(id, Direction::Output, SYN_ACK, T0, &mut q); // no change: no event
    t.update(id, Direction::Input, ACK, T0, &mut q);
    t.update(id, Direction::Input, PSH_ACK, T0, &mut q); // no change
    t.update(id, Direction::Input, FIN_ACK, T0 + SECOND, &mut q);
    t.update(id, Direction::Output, FIN_ACK, T0 + SECOND, &mut q); // 4th event: overflow
    assert_eq!(t.stats().event_overflow, 1);
    assert_eq!(t.stats().events, 3);
    let evs = events(&mut q);
    let got: Vec<(u64, ConnEventKind, ConnState)> = evs
        .iter()
        .map(|e| (e.seq, e.kind, e.record.state))
        .collect();
    assert_eq!(
        got,
        [
            (1, ConnEventKind::Created, ConnState::SynRecv),
            (2, ConnEventKind::StateChanged, ConnState::Established),
            (3, ConnEventKind::StateChanged, ConnState::CloseWait),
        ]
    );
    // The record is complete.
    let r = evs[0].record;
    assert_eq!((r.client, r.vip, r.real), (c.client, c.vip, c.real));
    assert_eq!((r.dest, r.service, r.method), (c.dest, c.service, c.method));
    assert_eq!(r.timeout_ms, 60_000);
    assert_eq!(r.remaining_ms, 60_000);
    assert_eq!(evs[1].record.flags, ConnFlags::ACTIVE);
    assert_eq!(evs[2].record.remaining_ms, 60_000);
    // Sequence number 4 was lost; the next event says so by carrying 5.
    assert!(t.remove(id, T0 + 2 * SECOND, &mut q));
    let del = q.pop().unwrap();
    assert_eq!(del.seq, 5);
    assert_eq!(del.kind, ConnEventKind::Deleted(DeleteReason::Removed));
    assert_eq!(del.record.remaining_ms, 0);
    assert_eq!(t.next_seq(), 6);
}

#[test]
fn flush_dest_ends_its_connections_and_templates_only() {
    let mut t = table(64);
    let mut q = EventQueue::new(64);
    for i in 0..12u8 {
        let id = t
            .create(
                &conn(i, u32::from(i % 3), ForwardMethod::Nat),
                SYN,
                T0,
                &mut q,
            )
            .unwrap();
        if i % 2 == 0 {
            t.update(id, Direction::Input, ACK, T0, &mut q);
        }
    }
    let mut tpl = conn(50, 1, ForwardMethod::Nat);
    tpl.client.port = 0;
    t.create_template(&tpl, Duration::from_secs(60), T0, &mut q)
        .unwrap();
    let before = t.dest_counts().to_vec();
    assert_eq!(
        before[1],
        DestCounts {
            active: 2,
            inactive: 2,
            persistent: 1
        }
    );
    q.clear();
    assert_eq!(t.flush_dest(DestId(1), T0, &mut q), 5);
    assert_eq!(t.dest_counts()[1], DestCounts::default());
    assert_eq!(t.dest_counts()[0], before[0]);
    assert_eq!(t.dest_counts()[2], before[2]);
    assert_eq!(t.len(), 8);
    assert!(t.iter().all(|(_, c)| c.dest() != DestId(1)));
    assert!(
        events(&mut q)
            .iter()
            .all(|e| e.kind == ConnEventKind::Deleted(DeleteReason::Flushed)
                && e.record.dest == DestId(1))
    );
    assert_eq!(t.stats().flushed, 5);
    assert_eq!(t.clear(T0, &mut q), 8);
    assert!(t.dest_counts().iter().all(|d| *d == DestCounts::default()));
}

/// An active table of `capacity` with NAT connections from clients 1..=`n`, and a standby
/// table that applied their events; the active's ids, and its event queue.
fn replicated(capacity: usize, n: u8) -> (ConnTable, ConnTable, Vec<ConnId>, EventQueue) {
    let mut active = table(capacity);
    let mut standby = table(capacity);
    let mut q = EventQueue::new(2 * capacity);
    let ids: Vec<_> = (1..=n)
        .map(|i| {
            active
                .create(&conn(i, 2, ForwardMethod::Nat), SYN, T0, &mut q)
                .expect("room for the connection")
        })
        .collect();
    for ev in events(&mut q) {
        standby.apply(&ev, T0).expect("the standby applies it");
    }
    (active, standby, ids, q)
}

#[test]
fn mark_and_sweep_removes_exactly_what_the_peer_did_not_upsert() {
    let (active, mut standby, ids, _) = replicated(16, 4);
    assert_eq!(standby.len(), 4);
    // The peer's snapshot begins: everything is stale.
    standby.mark_stale();
    // It upserts connections 1 and 3; a local connection appears meanwhile.
    for id in [ids[0], ids[2]] {
        standby
            .install(&active.record(id, T0).unwrap(), T0 + SECOND)
            .unwrap();
    }
    let mut local = EventQueue::new(8);
    let l = standby
        .create(
            &conn(9, 1, ForwardMethod::Nat),
            SYN,
            T0 + SECOND,
            &mut local,
        )
        .unwrap();
    let seq_before = standby.next_seq();
    // Stale marks never show (no bit outside the public ones).
    assert!(standby.iter().all(|(_, c)| c.flags().bits() & !0x0f == 0));
    assert_eq!(standby.sweep_stale(), 2);
    assert_eq!(standby.next_seq(), seq_before, "a sweep emits nothing");
    let left: Vec<_> = standby.iter().map(|(_, c)| c.client()).collect();
    assert_eq!(left.len(), 3);
    for id in [ids[0], ids[2]] {
        assert!(left.contains(&active.get(id).unwrap().client()));
    }
    assert!(
        standby.get(l).is_some(),
        "the local connection is not the peer's to sweep"
    );
    // Nothing is stale any more: a second sweep removes nothing, a new mark all.
    assert_eq!(standby.sweep_stale(), 0);
    standby.mark_stale();
    standby.mark_stale();
    assert_eq!(standby.sweep_stale(), 3);
    assert!(standby.is_empty());
}

/// The sweep in steps (how a lcore spreads it over its ticks): each step looks at no more
/// slots and removes no more entries than asked and says where the next starts; what the peer
/// upserts or the table makes between steps is kept, even ahead of the sweep; the steps remove
/// in all exactly what one sweep would.
#[test]
fn a_sweep_in_steps_removes_what_one_sweep_would_and_keeps_what_comes_meanwhile() {
    let (mut active, mut standby, ids, mut q) = replicated(64, 40);
    standby.mark_stale();
    // The snapshot upserts every even connection; the odd ones are gone at the peer.
    for id in ids.iter().step_by(2) {
        standby
            .install(&active.record(*id, T0).unwrap(), T0 + SECOND)
            .unwrap();
    }
    let (mut at, mut swept, mut steps) = (Some(0u32), 0, 0);
    while let Some(from) = at {
        let (n, next) = standby.sweep_stale_step(from, 7, 3);
        assert!(n <= 3, "{n} removals in one step");
        if let Some(next) = next {
            assert!(next > from && next - from <= 7, "{from} → {next}");
        }
        swept += n;
        steps += 1;
        if steps == 2 {
            // Between steps: the peer upserts the last odd connection (ahead of the sweep) and
            // a new one, and a local connection appears.
            standby
                .install(&active.record(ids[39], T0).unwrap(), T0 + SECOND)
                .unwrap();
            let new = active
                .create(&conn(50, 2, ForwardMethod::Nat), SYN, T0, &mut q)
                .unwrap();
            standby
                .install(&active.record(new, T0).unwrap(), T0 + SECOND)
                .unwrap();
            let mut local = EventQueue::new(8);
            standby
                .create(&conn(60, 1, ForwardMethod::Nat), SYN, T0, &mut local)
                .unwrap();
        }
        at = next;
    }
    assert!(steps > 6, "{steps} steps");
    assert_eq!(
        swept, 19,
        "the odd connections but the one upserted meanwhile"
    );
    assert_eq!(standby.len(), 20 + 1 + 1 + 1);
    assert_eq!(standby.sweep_stale(), 0, "nothing stale is left");

    // A new mark in the middle of a sweep: the sweep starts again from slot 0 for the new
    // snapshot, and removes everything it does not upsert.
    standby.mark_stale();
    let (first, next) = standby.sweep_stale_step(0, 5, usize::MAX);
    assert_eq!(next, Some(5));
    assert!((1..=5).contains(&first), "{first}");
    standby.mark_stale();
    standby
        .install(&active.record(ids[0], T0).unwrap(), T0 + SECOND)
        .unwrap();
    let (rest, next) = standby.sweep_stale_step(0, usize::MAX, usize::MAX);
    assert_eq!(next, None);
    // 23 entries were live; the first step may have taken the one upserted again.
    assert!(first + rest >= 22, "{first} + {rest}");
    let left: Vec<_> = standby.iter().map(|(_, c)| c.client()).collect();
    assert_eq!(left, [active.get(ids[0]).unwrap().client()]);
}

#[test]
fn install_creates_updates_and_never_emits() {
    let mut active = table(16);
    let mut standby = table(16);
    let mut q = EventQueue::new(64);
    let c = conn(1, 2, ForwardMethod::Nat);
    let id = active.create(&c, SYN, T0, &mut q).unwrap();
    active.update(id, Direction::Input, ACK, T0 + SECOND, &mut q);
    let seq_before = standby.next_seq();
    for ev in events(&mut q) {
        standby.apply(&ev, T0 + 2 * SECOND).unwrap();
    }
    assert_eq!(standby.next_seq(), seq_before);
    assert_eq!(standby.len(), 1);
    let (sid, dir) = standby
        .lookup(&active.get(id).unwrap().reply_flow())
        .unwrap();
    assert_eq!(dir, Direction::Output);
    let e = standby.get(sid).unwrap();
    assert_eq!(e.state(), ConnState::Established);
    assert!(e.flags().contains(ConnFlags::SYNCED));
    assert!(e.is_active());
    assert_eq!(standby.dest_counts()[2], counts(1, 0));
    // remaining (900 s when the ACK was applied) + 5 s grace, from the install time.
    assert_eq!(e.deadline(), T0 + 2 * SECOND + 900 * SECOND + 5 * SECOND);
    assert_eq!(standby.stats().installed, 2);

    // Failover: the standby's first local packet clears SYNCED and is processed normally.
    let mut q2 = EventQueue::new(8);
    standby.update(sid, Direction::Input, FIN_ACK, T0 + 3 * SECOND, &mut q2);
    let e = standby.get(sid).unwrap();
    assert!(!e.flags().contains(ConnFlags::SYNCED));
    assert_eq!(e.state(), ConnState::CloseWait);
    assert_eq!(standby.dest_counts()[2], counts(0, 1));
    assert_eq!(q2.pop().unwrap().kind, ConnEventKind::StateChanged);

    // A record for the same key going elsewhere replaces the entry.
    let mut rec = standby.record(sid, T0 + 3 * SECOND).unwrap();
    rec.dest = DestId(3);
    rec.real = ep(16, 5, 8000);
    rec.state = ConnState::Established;
    let nid = standby.install(&rec, T0 + 4 * SECOND).unwrap();
    assert_eq!(standby.len(), 1);
    assert_eq!(standby.get(nid).unwrap().real(), rec.real);
    assert_eq!(standby.dest_counts()[2], counts(0, 0));
    assert_eq!(standby.dest_counts()[3], counts(1, 0));

    // The peer's deletion removes it, silently.
    assert!(standby.uninstall(&rec));
    assert!(standby.is_empty());
    assert_eq!(standby.dest_counts()[3], counts(0, 0));
    assert!(!standby.uninstall(&rec));

    // Bad records change nothing.
    let mut bad = rec;
    bad.dest = DestId(99);
    assert_eq!(
        standby.install(&bad, T0),
        Err(InstallError::BadDest(DestId(99)))
    );
    let mut bad = rec;
    bad.state = ConnState::Udp;
    assert!(matches!(
        standby.install(&bad, T0),
        Err(InstallError::BadState { .. })
    ));
    assert!(standby.is_empty());
    assert_eq!(standby.stats().install_refused, 2);
}

#[test]
fn snapshot_walks_every_entry_in_batches() {
    let mut t = table(100);
    for i in 0..60u8 {
        t.create(&conn(i, 0, ForwardMethod::Nat), SYN, T0, &mut DiscardEvents)
            .unwrap();
    }
    for i in (0..60u8).step_by(4) {
        let id = t
            .lookup(&conn(i, 0, ForwardMethod::Nat).reply_flow_for_test())
            .unwrap()
            .0;
        t.remove(id, T0, &mut DiscardEvents);
    }
    let mut standby = table(100);
    let mut cursor = Some(0);
    let mut batches = 0;
    while let Some(from) = cursor {
        cursor = t.snapshot(from, 16, T0 + SECOND, |rec| {
            standby.install(&rec, T0 + SECOND).unwrap();
        });
        batches += 1;
    }
    assert_eq!(batches, 7);
    assert_eq!(standby.len(), t.len());
    assert_eq!(standby.len(), 45);
    for (_, c) in t.iter() {
        let (id, _) = standby.lookup(&c.input_flow()).unwrap();
        assert_eq!(standby.get(id).unwrap().state(), c.state());
    }
    assert_eq!(standby.dest_counts(), t.dest_counts());
}

trait ReplyFlow {
    fn reply_flow_for_test(&self) -> Flow;
}

impl ReplyFlow for NewConn {
    fn reply_flow_for_test(&self) -> Flow {
        Flow {
            proto: self.proto,
            src: self.real,
            dst: self.client,
        }
    }
}

#[test]
fn stale_handles_are_harmless() {
    let mut t = table(4);
    let id = t
        .create(&conn(1, 0, ForwardMethod::Nat), SYN, T0, &mut DiscardEvents)
        .unwrap();
    assert!(t.remove(id, T0, &mut DiscardEvents));
    assert!(!t.remove(id, T0, &mut DiscardEvents));
    assert_eq!(
        t.update(id, Direction::Input, ACK, T0, &mut DiscardEvents),
        None
    );
    assert!(t.get(id).is_none());
    assert!(t.get(tandem_core::conn::ConnId(1 << 29)).is_none());
    assert_eq!(t.record(id, T0), None);
    assert_eq!(t.stats().removed, 1);
    let _ = Timeouts::kernel();
}
