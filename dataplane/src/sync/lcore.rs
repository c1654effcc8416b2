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
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use tandem_core::balance::Balancer;
use tandem_core::conn::ConnRecord;
use tandem_core::lb::{Endpoint, Protocol};

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

/// The client→VIP key of an entry (what `ConnTable::uninstall` looks up).
type Key = (Protocol, Endpoint, Endpoint);

fn key_of(r: &ConnRecord) -> Key {
    (r.proto, r.client, r.vip)
}

/// Where a walk of the table stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// No walk.
    Idle,
    /// Next chunk starts at this slab slot.
    At(usize),
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
    stale: Option<HashSet<Key>>,
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
    /// is beginning.
    pub fn tick(&mut self, b: &mut Balancer, now: u64) {
        let events = b.events_mut();
        match (&self.tx, self.watch) {
            (Some(tx), watch) if watch != 0 => {
                let (mut sent, mut dropped) = (0u64, 0u64);
                while let Some(event) = events.pop() {
                    match tx.try_send(LcoreMsg::Event { watch, event }) {
                        Ok(()) => sent += 1,
                        Err(_) => dropped += 1,
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
            _ => events.clear(),
        }
        self.walk_step(b, now);
    }

    fn walk_step(&mut self, b: &Balancer, now: u64) {
        let Some(tx) = &self.tx else { return };
        let watch = self.watch;
        match self.walk {
            Walk::Idle => {}
            Walk::At(from) => {
                let mut records = Vec::new();
                let next = b
                    .conns()
                    .snapshot(from, self.chunk_slots, now, |r| records.push(r));
                let n = records.len() as u64;
                if !records.is_empty() {
                    match tx.try_send(LcoreMsg::Chunk { watch, records }) {
                        Ok(()) => {}
                        // Full: the same chunk again next tick (records of entries changed
                        // meanwhile are read fresh, and their events follow them).
                        Err(TrySendError::Full(_)) => return,
                        Err(TrySendError::Disconnected(_)) => {
                            self.walk = Walk::Idle;
                            return;
                        }
                    }
                }
                if let Some(c) = self.counters() {
                    SyncCounters::add(&c.snapshot_records, n);
                }
                self.walk = match next {
                    Some(n) => Walk::At(n),
                    None => Walk::Ending,
                };
                if self.walk == Walk::Ending {
                    self.walk_step(b, now);
                }
            }
            Walk::Ending => match tx.try_send(LcoreMsg::WalkDone { watch }) {
                Err(TrySendError::Full(_)) => {}
                _ => self.walk = Walk::Idle,
            },
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
                let _ = reply.try_send(());
            }
        }
    }

    fn apply(&mut self, op: SyncOp, b: &mut Balancer, now: u64) {
        let (mut applied, mut refused, mut swept) = (0u64, 0u64, 0u64);
        match op {
            SyncOp::Install(r) => match b.conns_mut().install(&r, now) {
                Ok(_) => {
                    applied += 1;
                    if let Some(s) = &mut self.stale {
                        s.remove(&key_of(&r));
                    }
                }
                Err(_) => refused += 1,
            },
            SyncOp::Uninstall(r) => {
                b.conns_mut().uninstall(&r);
                applied += 1;
                if let Some(s) = &mut self.stale {
                    s.remove(&key_of(&r));
                }
            }
            SyncOp::Mark => {
                let t = b.conns();
                self.stale = Some(
                    t.iter()
                        .map(|(_, c)| (c.proto(), c.client(), c.vip()))
                        .collect(),
                );
            }
            SyncOp::Sweep => {
                if let Some(stale) = self.stale.take() {
                    let t = b.conns();
                    let gone: Vec<ConnRecord> = t
                        .iter()
                        .filter(|(_, c)| stale.contains(&(c.proto(), c.client(), c.vip())))
                        .filter_map(|(id, _)| t.record(id, now))
                        .collect();
                    for r in &gone {
                        if b.conns_mut().uninstall(r) {
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
