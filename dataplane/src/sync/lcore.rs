//! What one worker lcore does for the sync daemon, between bursts (on its 1 ms housekeeping
//! timer): drain its connection events into its channel to the watch, walk its own table in
//! chunks when a watch begins, apply the peer's records, and notice role changes.
//!
//! Nothing here waits: a full channel drops events (counted; the lcore's sequence numbers
//! were taken anyway, so syncd sees a gap and resyncs) and leaves a walk chunk for the next
//! tick. The walk and the events go through the same channel, so for this lcore an event of a
//! change made after a record was read always follows that record (what
//! `Sender::snapshot_chunk` needs, see `syncd/src/localref.rs`).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use tandem_core::balance::Balancer;
use tandem_core::conn::{SWEEP_STEP_REMOVALS, SWEEP_STEP_SLOTS};
use tandem_core::lb::ServiceId;
use tandem_core::sched::{LocalityEntry, PersistKey};

use super::service::{locality_addr, locality_to_wire};
use super::{LcoreMsg, Role, SyncCommand, SyncCounters, SyncOp, SyncState, SyncWiring};

/// Gratuitous ARPs after becoming active: at once, then again after these delays (ns), in
/// case the first ones are lost — and past 1 s, because Linux ignores an ARP update that
/// comes within `locktime` (1 s by default) of the entry's last update: a neighbour that had
/// just refreshed its entry for a VIP from the failed director would otherwise keep its MAC
/// until its own probes fail, seconds later.
const GARP_REPEATS_NS: [u64; 5] = [0, 100_000_000, 500_000_000, 1_100_000_000, 2_100_000_000];

/// How often worker 0 reads the ports' link status from their devices.
const LINK_EVERY_NS: u64 = 10_000_000;

/// How often a watched lcore sends its head mark (the last sequence number it assigned), so
/// that syncd notices lost events that no later event follows.
const HEAD_EVERY_NS: u64 = 50_000_000;

/// What a standby's mark remembers besides the connections (which carry their mark in the
/// table, `ConnTable::mark_stale`): the key of every template and locality entry a snapshot
/// must upsert again to survive its sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum StaleKey {
    /// A persistence template.
    Template(PersistKey),
    /// A service's lblc/lblcr entry for a destination address.
    Locality(ServiceId, Ipv4Addr),
}

/// Where a walk of the table stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// No walk.
    Idle,
    /// Next chunk of connections starts at this slab slot.
    At(usize),
    /// Next chunk of persistence templates starts at this slot.
    Templates(usize),
    /// The lblc/lblcr entries are next.
    Locality,
    /// Every record is sent; the end marker is not yet.
    Ending,
}

/// One worker's sync state.
#[derive(Debug)]
pub struct LcoreSync {
    tx: Option<Sender<LcoreMsg>>,
    state: Option<Arc<SyncState>>,
    watch: u64,
    walk: Walk,
    chunk_slots: usize,
    stale: Option<HashSet<StaleKey>>,
    /// A sweep of the connection table in progress: the next slab slot.
    sweep: Option<u32>,
    /// Barriers that came while a sweep was in progress, answered when it is done (so the
    /// apply stream's summary counts the whole sweep).
    barriers: Vec<Sender<()>>,
    role_seen: Option<Role>,
    /// When the gratuitous ARPs are due (ns), the next first.
    garp_due: Vec<u64>,
    announces: bool,
    /// When the next head mark is due (ns); 0 at the start of a watch and after a drop.
    head_due: u64,
    /// When worker 0 next reads the devices' link status (ns).
    link_due: u64,
    /// The devices' link as last read (`None`: not yet).
    link_down_seen: Option<bool>,
}

impl LcoreSync {
    /// The sync state of worker `index` (`None`: no `[sync]`, everything is a no-op but the
    /// draining of the event queue). Worker 0 announces the VIPs.
    pub fn new(index: usize, wiring: Option<&SyncWiring>) -> LcoreSync {
        LcoreSync {
            tx: wiring.and_then(|w| w.lcore_tx.get(index).cloned()),
            state: wiring.map(|w| Arc::clone(&w.state)),
            watch: 0,
            walk: Walk::Idle,
            chunk_slots: 4096,
            stale: None,
            sweep: None,
            barriers: Vec::new(),
            role_seen: None,
            garp_due: Vec::new(),
            announces: index == 0,
            head_due: 0,
            link_due: 0,
            link_down_seen: None,
        }
    }

    fn counters(&self) -> Option<&SyncCounters> {
        self.state.as_deref().map(|s| &s.counters)
    }

    /// The role now in force, if it changed since the last call (the first call reports
    /// it). On a change to active, worker 0 schedules its gratuitous ARPs.
    pub fn role_change(&mut self, now: u64) -> Option<Role> {
        let role = self.state.as_ref().map_or(Role::Standalone, |s| s.role());
        if self.role_seen == Some(role) {
            return None;
        }
        self.role_seen = Some(role);
        self.garp_due.clear();
        if role == Role::Active && self.announces {
            self.garp_due
                .extend(GARP_REPEATS_NS.iter().rev().map(|d| now.saturating_add(*d)));
        }
        Some(role)
    }

    /// Whether worker 0 should read the ports' link status from their devices now (every
    /// 10 ms, with `[sync]` only).
    pub fn link_check_due(&mut self, now: u64) -> bool {
        if !self.announces || self.state.is_none() || now < self.link_due {
            return false;
        }
        self.link_due = now.saturating_add(LINK_EVERY_NS);
        true
    }

    /// The devices' link status as worker 0 read it: a port whose device reports its link
    /// down makes the director unable to serve (syncd's role machine goes to `Fault`).
    pub fn device_link(&mut self, down: bool) {
        let Some(state) = &self.state else { return };
        if self.link_down_seen != Some(down) {
            if down {
                tracing::warn!(
                    "sync: a service port's device reports its link down: standing down"
                );
            } else if self.link_down_seen.is_some() {
                tracing::info!("sync: the service ports' devices report their link up again");
            }
            self.link_down_seen = Some(down);
        }
        state.set_device_link_down(down);
    }

    /// Whether a round of gratuitous ARPs is due now (worker 0, after becoming active).
    pub fn garp_due(&mut self, now: u64) -> bool {
        match self.garp_due.last() {
            Some(t) if *t <= now && self.role_seen == Some(Role::Active) => {
                self.garp_due.pop();
                true
            }
            _ => false,
        }
    }

    /// Between bursts: hands the events the table emitted since the last tick to the watch
    /// (or forgets them when nobody watches), then walks one chunk of the table if a watch
    /// is beginning. Connection and template events and locality changes share the lcore's
    /// sequence numbers; they are handed over in that order.
    pub fn tick(&mut self, b: &mut Balancer, now: u64) {
        match (&self.tx, self.watch) {
            (Some(tx), watch) if watch != 0 => {
                let (mut sent, mut dropped) = (0u64, 0u64);
                loop {
                    let conn = b.events_mut().iter().next().map(|e| e.seq);
                    let loc = b.locality_events_mut().front_seq();
                    let msg = match (conn, loc) {
                        (None, None) => break,
                        (Some(c), l) if l.is_none_or(|l| c < l) => {
                            let Some(event) = b.events_mut().pop() else {
                                break;
                            };
                            Some(LcoreMsg::Event { watch, event })
                        }
                        _ => {
                            let Some(ev) = b.locality_events_mut().pop() else {
                                break;
                            };
                            // A service removed meanwhile cannot be named: the change is
                            // dropped like an overflow (the gap makes syncd resync).
                            locality_to_wire(b.services(), ev.service, &ev.change).map(
                                |(entry, set)| LcoreMsg::Locality {
                                    watch,
                                    seq: ev.seq,
                                    entry,
                                    set,
                                },
                            )
                        }
                    };
                    match msg.map(|m| tx.try_send(m)) {
                        Some(Ok(())) => sent += 1,
                        _ => dropped += 1,
                    }
                }
                if dropped > 0 {
                    self.head_due = 0;
                }
                // Every event up to the table's last number is handed over or dropped now.
                if now >= self.head_due {
                    let last_seq = b.conns().next_seq().saturating_sub(1);
                    if tx.try_send(LcoreMsg::Head { watch, last_seq }).is_ok() {
                        self.head_due = now.saturating_add(HEAD_EVERY_NS);
                    }
                }
                if let Some(c) = self.counters() {
                    SyncCounters::add(&c.events_sent, sent);
                    SyncCounters::add(&c.events_dropped, dropped);
                }
            }
            // Nobody watches: the sequence numbers were taken, a later watch starts with a
            // snapshot anyway.
            _ => {
                b.events_mut().clear();
                b.locality_events_mut().clear();
            }
        }
        self.walk_step(b, now);
        self.sweep_step(b);
    }

    /// One step of a sweep in progress (a standby's sweep is spread over the ticks, a bounded
    /// step each, instead of stalling the lcore: it took 421 ms for 3 M entries in one go);
    /// when it is done, answers the barriers it held.
    fn sweep_step(&mut self, b: &mut Balancer) {
        let Some(from) = self.sweep else {
            return;
        };
        let (swept, next) =
            b.conns_mut()
                .sweep_stale_step(from, SWEEP_STEP_SLOTS, SWEEP_STEP_REMOVALS);
        if let Some(c) = self.counters() {
            SyncCounters::add(&c.swept, swept as u64);
        }
        self.sweep = next;
        if next.is_none() {
            self.release_barriers();
        }
    }

    /// Answers the barriers held back by a sweep.
    fn release_barriers(&mut self) {
        for reply in self.barriers.drain(..) {
            let _ = reply.try_send(());
        }
    }

    /// Sends `msg` (a walk chunk) to the watch: `Some(true)` sent, `Some(false)` the channel
    /// is full (try the same chunk next tick), `None` the watch is gone.
    fn send_chunk(&mut self, msg: LcoreMsg) -> Option<bool> {
        let tx = self.tx.as_ref()?;
        match tx.try_send(msg) {
            Ok(()) => Some(true),
            Err(TrySendError::Full(_)) => Some(false),
            Err(TrySendError::Disconnected(_)) => {
                self.walk = Walk::Idle;
                None
            }
        }
    }

    fn walk_step(&mut self, b: &Balancer, now: u64) {
        if self.tx.is_none() {
            return;
        }
        let watch = self.watch;
        match self.walk {
            Walk::Idle => {}
            Walk::At(from) | Walk::Templates(from) => {
                let templates = matches!(self.walk, Walk::Templates(_));
                let mut records = Vec::new();
                let next = if templates {
                    b.template_snapshot(from, self.chunk_slots, now, |r| records.push(r))
                } else {
                    b.conns()
                        .snapshot(from, self.chunk_slots, now, |r| records.push(r))
                };
                let n = records.len() as u64;
                // Full: the same chunk again next tick (records of entries changed meanwhile
                // are read fresh, and their events follow them).
                if !records.is_empty()
                    && self.send_chunk(LcoreMsg::Chunk { watch, records }) != Some(true)
                {
                    return;
                }
                if let Some(c) = self.counters() {
                    SyncCounters::add(&c.snapshot_records, n);
                }
                self.walk = match (next, templates) {
                    (Some(n), false) => Walk::At(n),
                    (None, false) => Walk::Templates(0),
                    (Some(n), true) => Walk::Templates(n),
                    (None, true) => Walk::Locality,
                };
            }
            Walk::Locality => {
                let set = b.services();
                let mut entries = Vec::new();
                b.locality_snapshot(now, |svc, e| {
                    if let Some((w, _)) =
                        locality_to_wire(set, svc, &tandem_core::balance::LocalityChange::Set(e))
                    {
                        entries.push(w);
                    }
                });
                let n = entries.len() as u64;
                if !entries.is_empty()
                    && self.send_chunk(LcoreMsg::LocalityChunk { watch, entries }) != Some(true)
                {
                    return;
                }
                if let Some(c) = self.counters() {
                    SyncCounters::add(&c.snapshot_records, n);
                }
                self.walk = Walk::Ending;
                self.walk_step(b, now);
            }
            Walk::Ending => {
                if self.send_chunk(LcoreMsg::WalkDone { watch }) != Some(false) {
                    self.walk = Walk::Idle;
                }
            }
        }
    }

    /// A sync order from the control inbox.
    pub fn command(&mut self, cmd: SyncCommand, b: &mut Balancer, now: u64) {
        match cmd {
            SyncCommand::Watch { watch, chunk_slots } => {
                // Events queued before the walk starts are sent first: they precede every
                // record of it.
                self.watch = watch;
                self.head_due = 0;
                self.chunk_slots = chunk_slots.max(1);
                self.walk = Walk::At(0);
            }
            SyncCommand::Unwatch { watch } => {
                if self.watch == watch {
                    self.watch = 0;
                    self.walk = Walk::Idle;
                }
            }
            SyncCommand::Apply(ops) => {
                for op in ops {
                    self.apply(op, b, now);
                }
            }
            SyncCommand::Barrier(reply) => {
                if self.sweep.is_some() {
                    self.barriers.push(reply);
                } else {
                    let _ = reply.try_send(());
                }
            }
        }
    }

    fn unstale(&mut self, key: StaleKey) {
        if let Some(s) = &mut self.stale {
            s.remove(&key);
        }
    }

    fn apply(&mut self, op: SyncOp, b: &mut Balancer, now: u64) {
        let (mut applied, mut refused, mut swept) = (0u64, 0u64, 0u64);
        let mut tally = |ok: bool, count: bool| match (ok, count) {
            (true, true) => applied += 1,
            (false, true) => refused += 1,
            _ => {}
        };
        match op {
            SyncOp::Install(r) => match b.conns_mut().install(&r, now) {
                // An upsert clears the entry's stale mark (`ConnTable::install`).
                Ok(_) => tally(true, true),
                Err(_) => tally(false, true),
            },
            SyncOp::Uninstall(r) => {
                b.conns_mut().uninstall(&r);
                tally(true, true);
            }
            SyncOp::InstallTemplate { rec, count } => {
                let ok = b.install_template(&rec, now).is_ok();
                tally(ok, count);
                if let (true, Ok(k)) = (ok, b.template_key(&rec)) {
                    self.unstale(StaleKey::Template(k));
                }
            }
            SyncOp::UninstallTemplate { rec, count } => {
                b.uninstall_template(&rec);
                tally(true, count);
                if let Ok(k) = b.template_key(&rec) {
                    self.unstale(StaleKey::Template(k));
                }
            }
            SyncOp::InstallLocality { svc, entry, count } => {
                let ok = b.install_locality(svc, entry, now).is_ok();
                tally(ok, count);
                if ok {
                    self.unstale(StaleKey::Locality(svc, locality_addr(&entry)));
                }
            }
            SyncOp::RemoveLocality { svc, addr, count } => {
                b.remove_locality(svc, addr);
                tally(true, count);
                self.unstale(StaleKey::Locality(svc, addr));
            }
            SyncOp::Mark => {
                // Connections carry their mark in the table (an epoch, constant time); the
                // templates and locality entries (bounded tables) in a set of keys. A sweep
                // still in progress is for the previous snapshot: what it has not reached is
                // stale again, for this snapshot's sweep.
                b.conns_mut().mark_stale();
                self.sweep = None;
                self.release_barriers();
                let mut stale: HashSet<StaleKey> =
                    b.templates().keys().map(StaleKey::Template).collect();
                b.locality_snapshot(now, |svc, e: LocalityEntry| {
                    stale.insert(StaleKey::Locality(svc, locality_addr(&e)));
                });
                self.stale = Some(stale);
            }
            SyncOp::Sweep => {
                // Only after a mark: a sweep without one (an apply stream reopened) is
                // ignored, as before.
                // The connections are swept over the next ticks (`sweep_step`); the
                // templates and locality entries at once.
                if let Some(stale) = self.stale.take() {
                    self.sweep = Some(0);
                    for k in &stale {
                        let removed = match *k {
                            StaleKey::Template(key) => b.remove_template(key),
                            StaleKey::Locality(svc, addr) => b.remove_locality(svc, addr),
                        };
                        if removed {
                            swept += 1;
                        }
                    }
                }
            }
        }
        if let Some(c) = self.counters() {
            SyncCounters::add(&c.applied, applied);
            SyncCounters::add(&c.refused, refused);
            SyncCounters::add(&c.swept, swept);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tandem_core::balance::BalancerConfig;
    use tandem_core::conn::{ConnConfig, DiscardEvents, NewConn, TcpFlags};
    use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol};
    use tandem_core::sched::PersistOptions;
    use tandem_core::service::ServiceSet;

    use super::*;

    /// A standby's sweep of 50 000 entries the peer's snapshot did not upsert runs over many
    /// ticks, none removing more than its share, and the barrier that follows the snapshot is
    /// answered only once the sweep is done (so the apply summary counts all of it).
    #[test]
    fn the_sweep_is_spread_over_ticks_and_holds_the_barrier() {
        const N: u32 = 50_000;
        let services = Arc::new(ServiceSet::new(&[], 4).expect("empty service set"));
        let mut b = Balancer::new(
            services,
            BalancerConfig {
                conn: ConnConfig::new(N as usize, 4),
                persist: PersistOptions::default(),
                event_capacity: 16,
                worker: 0,
                workers: 1,
            },
        )
        .expect("balancer");
        for i in 0..N {
            let client = Endpoint::new(Ipv4Addr::from(0x0a00_0000 + i), 40_000);
            let new = NewConn {
                proto: Protocol::Tcp,
                client,
                vip: Endpoint::new(Ipv4Addr::new(203, 0, 113, 10), 80),
                real: Endpoint::new(Ipv4Addr::new(172, 16, 0, 2), 80),
                method: ForwardMethod::DirectRoute,
                dest: DestId(0),
                service: ServiceId(0),
            };
            b.conns_mut()
                .create(&new, TcpFlags::SYN, 0, &mut DiscardEvents)
                .expect("room");
        }
        let mut sync = LcoreSync::new(0, None);
        sync.command(
            SyncCommand::Apply(vec![SyncOp::Mark, SyncOp::Sweep]),
            &mut b,
            0,
        );
        assert_eq!(
            b.conns().len(),
            N as usize,
            "nothing swept inside the command"
        );
        let (tx, rx) = crossbeam_channel::bounded(1);
        sync.command(SyncCommand::Barrier(tx), &mut b, 0);
        let mut ticks = 0;
        while rx.try_recv().is_err() {
            let before = b.conns().len();
            sync.tick(&mut b, ticks);
            assert!(before - b.conns().len() <= SWEEP_STEP_REMOVALS);
            ticks += 1;
            assert!(ticks < 1_000, "the sweep never ended");
        }
        assert!(b.conns().is_empty());
        assert_eq!(ticks, u64::from(N).div_ceil(SWEEP_STEP_REMOVALS as u64));
        // No sweep in progress: a barrier is answered at once.
        let (tx, rx) = crossbeam_channel::bounded(1);
        sync.command(SyncCommand::Barrier(tx), &mut b, 0);
        assert!(rx.try_recv().is_ok());
    }
}
