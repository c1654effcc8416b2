//! The poll loop of one worker lcore: rx bursts from every port and from its redirect ring,
//! the sans-IO engine on each frame, then per verdict: tx bursts out of the chosen port, a
//! small queue of frames waiting for ARP, or the ring of the worker that owns the connection.
//! Between bursts: counters and per-destination connection counts are published, the
//! connection table is expired a bounded amount at a time, and every millisecond the
//! control plane's inbox is read (new service snapshots, timeouts, listings, flushes) and
//! the per-destination figures it reads are published.
//!
//! Per packet this allocates nothing, takes no lock and logs nothing: the bursts are stack
//! arrays, the engine and counters belong to this lcore alone, and every queue is bounded and
//! preallocated.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tandem_core::balance::{Balancer, BalancerConfig};
use tandem_core::conn::{ConnConfig, DestCounts, Hint};
use tandem_core::counters::{Counters, DropReason};
use tandem_core::director::{self, Director, Verdict, Worker};
use tandem_core::sched::PersistOptions;
use tandem_core::service::ServiceSet;
use tandem_dpdk::{BURST_SIZE, Burst, Mbuf, MbufRing, Mempool, Port, TxQueue};

use crate::buf::MbufPacket;
use tandem_dataplane::control::board::{LcoreFigures, StatsBoard};
use tandem_dataplane::control::command::{Command, ConnListing, PortFigures};
use tandem_dataplane::stats::{CounterSlot, PUBLISH_EVERY_NS};
use tandem_dataplane::sync::lcore::LcoreSync;
use tandem_dataplane::sync::{HbFrame, SyncCounters, SyncWiring, heartbeat};

/// Most ports a director drives; keeps the per-lcore tx bursts on the stack.
pub const MAX_PORTS: usize = 8;

/// Polls that must come back empty before a worker starts to sleep.
const IDLE_POLLS_BEFORE_SLEEP: u32 = 64;
/// Frames held while their next hop's MAC is resolved, per worker.
const PENDING_MAX: usize = 256;
/// How long a frame waits for ARP before it is dropped.
const PENDING_TIMEOUT_NS: u64 = 1_000_000_000;
/// At most one ARP request per next hop in this interval.
const ARP_RETRY_NS: u64 = 250_000_000;
/// How often the per-destination connection counts are exchanged between workers: the
/// staleness bound of what lc/wlc/lblc/sed/nq see of the other workers' connections.
const DEST_COUNTS_EVERY_NS: u64 = 1_000_000;
/// How often the connection table is expired, and how many entries one pass may examine.
const EXPIRE_EVERY_NS: u64 = 10_000_000;
const EXPIRE_BUDGET: usize = 4096;
/// Connection events held for the sync daemon (it drains them in a later issue; until then
/// they overflow, counted, once this many are queued).
const EVENT_CAPACITY: usize = 16_384;
/// Control-plane commands one worker handles per millisecond at most.
const COMMANDS_PER_TICK: usize = 8;

/// The per-destination connection counts of every worker, exchanged without locks: each
/// worker writes its own row (relaxed stores of `active << 32 | inactive`), reads the others.
#[derive(Debug)]
pub struct DestBoard {
    dests: usize,
    cells: Vec<AtomicU64>,
}

impl DestBoard {
    /// A board for `workers` × `dests`.
    pub fn new(workers: usize, dests: usize) -> Self {
        DestBoard {
            dests,
            cells: (0..workers * dests).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn publish(&self, worker: usize, counts: &[DestCounts]) {
        let row = self.cells.iter().skip(worker * self.dests).take(self.dests);
        for (cell, c) in row.zip(counts) {
            cell.store(
                (u64::from(c.active) << 32) | u64::from(c.inactive),
                Ordering::Relaxed,
            );
        }
    }

    fn sum_others(&self, worker: usize, out: &mut [DestCounts]) {
        for c in out.iter_mut() {
            *c = DestCounts::default();
        }
        for (w, row) in self.cells.chunks(self.dests.max(1)).enumerate() {
            if w == worker {
                continue;
            }
            for (cell, c) in row.iter().zip(out.iter_mut()) {
                let v = cell.load(Ordering::Relaxed);
                c.active = c.active.saturating_add((v >> 32) as u32);
                c.inactive = c.inactive.saturating_add((v & 0xffff_ffff) as u32);
            }
        }
    }
}

/// What every worker shares (read-only).
#[derive(Debug)]
pub struct Shared<'a, 'm> {
    /// Started ports, indexed as the core numbers them.
    pub ports: &'a [Port<'m>],
    /// The packet pool (ARP requests are allocated from it).
    pub pool: &'m Mempool<'m>,
    /// The director's addresses, VIPs and routes.
    pub director: &'a Arc<Director>,
    /// The virtual services.
    pub services: &'a Arc<ServiceSet>,
    /// Each worker's connection table configuration.
    pub conn: &'a ConnConfig,
    /// Each worker's persistence table configuration.
    pub persist: &'a PersistOptions,
    /// One inbound ring per worker, for frames whose connection it owns.
    pub rings: &'a [MbufRing<'m>],
    /// Connection counts per destination, per worker.
    pub board: &'a DestBoard,
    /// One control-plane inbox per worker.
    pub inboxes: &'a [Receiver<Command>],
    /// What the workers publish for the control plane.
    pub stats_board: &'a StatsBoard,
    /// The configuration generation of `services`.
    pub generation: u64,
    /// One inbox per worker for neighbours another worker learned from ARP (RSS hands an ARP
    /// reply to one queue only; every worker needs the MAC).
    pub neighbour_bus: &'a [(Sender<NeighbourUpdate>, Receiver<NeighbourUpdate>)],
    /// Set by SIGTERM/SIGINT (or a failing lcore): every worker returns.
    pub stop: &'a AtomicBool,
    /// Time origin for `now` (same for all lcores).
    pub origin: Instant,
    /// Entries in each lcore's neighbour table.
    pub neighbour_capacity: usize,
    /// How long a learned neighbour stays valid without being refreshed (ns).
    pub neighbour_max_age: u64,
    /// Longest idle sleep.
    pub idle_sleep_max: Duration,
    /// The channels with the sync daemon's `Local` service (`None`: no `[sync]`).
    pub sync: Option<&'a SyncWiring>,
}

/// A neighbour learned by one worker: address, MAC, port index.
pub type NeighbourUpdate = (Ipv4Addr, [u8; 6], usize);

/// Capacity of each worker's neighbour inbox; updates beyond it are dropped (the worker then
/// resolves that neighbour itself).
pub const NEIGHBOUR_BUS_CAPACITY: usize = 1024;

/// A frame waiting for its next hop's MAC.
#[derive(Debug)]
struct PendingFrame<'m> {
    mbuf: Mbuf<'m>,
    port: usize,
    next_hop: Ipv4Addr,
    since: u64,
}

/// One worker's state between bursts.
struct Lcore<'q, 'm> {
    shared: &'q Shared<'q, 'm>,
    index: usize,
    engine: Worker,
    counters: Counters,
    tx: [Burst<'m>; MAX_PORTS],
    txqs: Vec<TxQueue<'q, 'm>>,
    redirect: Vec<Burst<'m>>,
    pending: Vec<PendingFrame<'m>>,
    asked: Vec<(Ipv4Addr, u64)>,
    /// The configuration generation this worker runs.
    generation: u64,
    /// One more than the highest destination id this worker has seen: its published rows.
    dest_rows: usize,
    /// The sync daemon's part of housekeeping.
    sync: LcoreSync,
    /// IPv4 identification of the heartbeats this worker sends.
    hb_ident: u16,
}

/// Runs the poll loop of worker `index` (which uses queue `index` of every port) until
/// `shared.stop` is set.
pub fn run(index: usize, shared: &Shared<'_, '_>, slot: &CounterSlot) -> Result<(), String> {
    let ports = shared.ports;
    if ports.len() > MAX_PORTS {
        return Err(format!(
            "{} ports configured, at most {MAX_PORTS} are supported",
            ports.len()
        ));
    }
    let queue = u16::try_from(index).map_err(|_| format!("worker {index}: too many workers"))?;
    let mut rxqs = Vec::with_capacity(ports.len());
    let mut txqs = Vec::with_capacity(ports.len());
    for p in ports {
        rxqs.push(p.rx_queue(queue).map_err(|e| e.to_string())?);
        txqs.push(p.tx_queue(queue).map_err(|e| e.to_string())?);
    }
    let ring = shared
        .rings
        .get(index)
        .ok_or_else(|| format!("worker {index}: no redirect ring"))?;
    let mut inbound = ring.consumer().map_err(|e| e.to_string())?;
    let mut conn = shared.conn.clone();
    conn.hash_seed = std::hash::RandomState::new().hash_one(index);
    let balancer = Balancer::new(
        Arc::clone(shared.services),
        BalancerConfig {
            conn,
            persist: *shared.persist,
            event_capacity: EVENT_CAPACITY,
            worker: index,
            workers: shared.rings.len(),
        },
    )
    .map_err(|e| format!("worker {index}: {e}"))?;
    let mut engine = Worker::new(
        Arc::clone(shared.director),
        shared.neighbour_capacity,
        shared.neighbour_max_age,
    )
    .with_balancer(balancer);
    // The role in force from the first burst on (a director with `[sync]` starts a standby:
    // no VIP answered, nothing scheduled); the housekeeping tick follows its changes.
    engine.set_owns_vips(shared.sync.is_none_or(|w| w.state.role().owns_vips()));
    let engine = engine;
    if let Some(b) = engine.balancer() {
        // Lookups hit the slab and the index at random: huge pages spare a TLB miss each.
        for (start, len) in b.conns().memory_regions() {
            tandem_dpdk::advise_huge_pages(start, len);
        }
    }
    let mut lc = Lcore {
        shared,
        index,
        engine,
        counters: Counters::default(),
        tx: std::array::from_fn(|_| Burst::new()),
        txqs,
        redirect: (0..shared.rings.len()).map(|_| Burst::new()).collect(),
        pending: Vec::with_capacity(PENDING_MAX),
        asked: Vec::with_capacity(PENDING_MAX),
        generation: shared.generation,
        dest_rows: shared.services.dest_slots(),
        sync: LcoreSync::new(index, shared.sync),
        hb_ident: 0,
    };
    let mut idle = Backoff::new(shared.idle_sleep_max);
    let (mut last_publish, mut last_counts, mut last_expire) = (0u64, 0u64, 0u64);

    while !shared.stop.load(Ordering::Relaxed) {
        let now = now_ns(shared.origin);
        let mut received = 0usize;
        for (p, rxq) in rxqs.iter_mut().enumerate() {
            let mut rx = Burst::new();
            received += rxq.rx_burst(&mut rx);
            // Two prefetch passes first (connection-index buckets, then the entries they
            // name), so the burst's cache misses overlap (the rte_hash_lookup_bulk idea).
            // The first pass hashes each frame's key; the second and the lookup reuse it.
            let mut hints = [Hint::NONE; BURST_SIZE];
            let mut n = 0;
            rx.for_each_data(|f| {
                if let Some(h) = hints.get_mut(n) {
                    *h = lc.engine.prefetch_hinted(f, tandem_dpdk::prefetch);
                }
                n += 1;
            });
            for h in hints.iter_mut().take(n) {
                lc.engine.prefetch_entry_hinted(h, tandem_dpdk::prefetch);
            }
            for (mut m, h) in rx
                .drain()
                .zip(hints.iter().chain(std::iter::repeat(&Hint::NONE)))
            {
                // The established fast path inline; anything it declines, untouched, takes
                // the engine's whole path.
                match lc.engine.forward_established(
                    p,
                    &mut MbufPacket(&mut m),
                    h,
                    now,
                    &mut lc.counters,
                ) {
                    Some(Verdict::Forward { port }) => lc.send(port, m),
                    Some(v) => lc.act(p, m, v, now),
                    None => lc.handle_slow(p, m, *h, now),
                }
            }
        }
        let mut rx = Burst::new();
        received += inbound.dequeue_burst(&mut rx);
        for m in rx.drain() {
            let p = usize::from(m.port());
            lc.handle(p, m, now);
        }
        lc.share_neighbours(now);
        if !lc.pending.is_empty() {
            lc.serve_pending(now);
        }
        lc.flush_all();
        if now.saturating_sub(last_counts) >= DEST_COUNTS_EVERY_NS {
            lc.exchange_dest_counts();
            lc.control(now);
            last_counts = now;
        }
        if now.saturating_sub(last_expire) >= EXPIRE_EVERY_NS {
            if let Some(b) = lc.engine.balancer_mut() {
                b.housekeeping(now, EXPIRE_BUDGET);
            }
            last_expire = now;
        }
        if now.saturating_sub(last_publish) >= PUBLISH_EVERY_NS {
            slot.publish(&lc.counters);
            last_publish = now;
        }
        idle.after_poll(received);
    }
    for p in lc.pending.drain(..) {
        lc.counters.count_drop(DropReason::NeighbourUnresolved);
        drop(p);
    }
    slot.publish(&lc.counters);
    Ok(())
}

impl<'m> Lcore<'_, 'm> {
    /// A frame of a burst the fast path declined ([`Worker::process_slow`]).
    fn handle_slow(&mut self, p: usize, mut m: Mbuf<'m>, hint: Hint, now: u64) {
        let v = self
            .engine
            .process_slow(p, &mut MbufPacket(&mut m), hint, now, &mut self.counters);
        self.act(p, m, v, now);
    }

    /// A frame from another worker's ring (no hint).
    fn handle(&mut self, p: usize, mut m: Mbuf<'m>, now: u64) {
        let v = self
            .engine
            .process_buf(p, &mut MbufPacket(&mut m), now, &mut self.counters);
        self.act(p, m, v, now);
    }

    /// Does what the engine decided for frame `m`, received on port `p`.
    fn act(&mut self, p: usize, mut m: Mbuf<'m>, v: Verdict, now: u64) {
        match v {
            Verdict::Reply => self.send(p, m),
            Verdict::Forward { port } => self.send(port, m),
            Verdict::Resolve { port, next_hop } => self.hold(m, port, next_hop, now),
            Verdict::Redirect { worker } => {
                // The input port travels in the mbuf; the owner processes the frame as if it
                // had received it.
                m.set_port(u16::try_from(p).unwrap_or(u16::MAX));
                match self.redirect.get_mut(worker) {
                    Some(b) if worker != self.index => {
                        if b.is_full() {
                            flush_ring(&self.shared.rings[worker], b, &mut self.counters);
                        }
                        if let Err(m) = b.push(m) {
                            self.counters.count_drop(DropReason::RedirectRingFull);
                            drop(m);
                        }
                    }
                    // A frame redirected to its own worker would loop: the engine's owner
                    // function disagreeing with itself. Drop it, counted.
                    _ => {
                        self.counters.count_drop(DropReason::RedirectRingFull);
                        drop(m);
                    }
                }
            }
            // UDP to a port's own address on the heartbeat port: the peer dataplane's.
            Verdict::Local => {
                self.heartbeat_in(p, &m);
                drop(m);
            }
            Verdict::Consumed | Verdict::Drop(_) => drop(m),
        }
    }

    /// Hands a heartbeat from the peer's dataplane to syncd; anything else that reached the
    /// heartbeat port is counted as [`DropReason::BadHeartbeat`].
    fn heartbeat_in(&mut self, p: usize, m: &Mbuf<'m>) {
        let Some(w) = self.shared.sync else {
            self.counters.count_drop(DropReason::BadHeartbeat);
            return;
        };
        let payload = match (w.peer, self.engine.director().ports().get(p)) {
            (Some(peer), Some(own)) => heartbeat::parse(m.data(), own.addr, peer, w.heartbeat_port),
            _ => None,
        };
        let Some(payload) = payload else {
            self.counters.count_drop(DropReason::BadHeartbeat);
            return;
        };
        let c = &w.state.counters;
        let taken = HbFrame::new(payload).is_some_and(|f| w.hb_in.0.try_send(f).is_ok());
        let counter = if taken {
            &c.heartbeats_received
        } else {
            &c.heartbeats_dropped
        };
        SyncCounters::add(counter, 1);
    }

    /// Sync housekeeping (every millisecond, between bursts): the role, the gratuitous ARPs
    /// of a new active director, syncd's heartbeats out, the events and walks to the watch.
    fn sync_tick(&mut self, now: u64) {
        if let Some(role) = self.sync.role_change(now) {
            self.engine.set_owns_vips(role.owns_vips());
            tracing::info!(
                worker = self.index,
                role = role.name(),
                "sync: role in force"
            );
        }
        if self.sync.garp_due(now) {
            self.announce_vips();
        }
        if self.index == 0 {
            self.heartbeats_out(now);
        }
        if self.sync.link_check_due(now) {
            // PCI NICs report their link here; the af_xdp/af_packet PMDs always say up (their
            // kernel carrier is watched by the control thread instead). A device that cannot
            // say counts as up.
            let down = self
                .shared
                .ports
                .iter()
                .any(|p| p.link().is_ok_and(|l| !l.up));
            self.sync.device_link(down);
        }
        if let Some(b) = self.engine.balancer_mut() {
            self.sync.tick(b, now);
        }
    }

    /// Gratuitous ARPs for every VIP (the inside gateway is a VIP of the inside port).
    fn announce_vips(&mut self) {
        let mut sent = 0;
        for i in 0..self.engine.director().vips().len() {
            let Some(v) = self.engine.director().vips().get(i).copied() else {
                break;
            };
            let Some(mut m) = self.shared.pool.alloc() else {
                break;
            };
            let Some(out) = m.append(60) else { continue };
            if self.engine.gratuitous_arp(v.port, v.addr, out).is_some() {
                self.send(v.port, m);
                sent += 1;
            }
        }
        if let Some(w) = self.shared.sync {
            SyncCounters::add(&w.state.counters.garps_sent, sent);
        }
    }

    /// Sends syncd's heartbeats to the peer's dataplane from this director's address on the
    /// port whose subnet holds the peer.
    fn heartbeats_out(&mut self, now: u64) {
        let Some(w) = self.shared.sync else { return };
        let c = &w.state.counters;
        while let Ok(f) = w.hb_out.1.try_recv() {
            let Some(peer) = w.peer else {
                continue;
            };
            let director = self.engine.director();
            let Some(port) = director.on_link(peer) else {
                SyncCounters::add(&c.heartbeats_unsent, 1);
                continue;
            };
            let Some(own) = director.ports().get(port).copied() else {
                continue;
            };
            let Some(mac) = self.engine.neighbours().lookup(peer, now).map(|n| n.mac) else {
                // Not resolved yet: ask, and let this one go (the next follows shortly).
                self.ask(port, peer, now);
                SyncCounters::add(&c.heartbeats_unsent, 1);
                continue;
            };
            let a = heartbeat::Addressing {
                src_mac: own.mac,
                dst_mac: mac,
                src: own.addr,
                dst: peer,
                port: w.heartbeat_port,
            };
            let len = (heartbeat::OVERHEAD + f.len).max(60);
            let Some(mut m) = self.shared.pool.alloc() else {
                SyncCounters::add(&c.heartbeats_unsent, 1);
                continue;
            };
            self.hb_ident = self.hb_ident.wrapping_add(1);
            let built = u16::try_from(len)
                .ok()
                .and_then(|len| m.append(len))
                .and_then(|out| heartbeat::build(&a, self.hb_ident, f.data(), out));
            if built.is_some() {
                self.send(port, m);
                SyncCounters::add(&c.heartbeats_sent, 1);
            } else {
                SyncCounters::add(&c.heartbeats_unsent, 1);
            }
        }
    }

    #[inline]
    fn send(&mut self, port: usize, m: Mbuf<'m>) {
        let (Some(burst), Some(txq)) = (self.tx.get_mut(port), self.txqs.get_mut(port)) else {
            self.counters.count_drop(DropReason::UnknownPort);
            return;
        };
        if burst.is_full() {
            flush(txq, burst, &mut self.counters);
        }
        if let Err(m) = burst.push(m) {
            self.counters.count_drop(DropReason::TxRingFull);
            drop(m);
        }
    }

    /// Holds a frame until ARP tells its next hop's MAC, asking at most every ARP_RETRY_NS.
    fn hold(&mut self, m: Mbuf<'m>, port: usize, next_hop: Ipv4Addr, now: u64) {
        if self.pending.len() >= PENDING_MAX {
            self.counters.count_drop(DropReason::NeighbourUnresolved);
            drop(m);
            return;
        }
        self.pending.push(PendingFrame {
            mbuf: m,
            port,
            next_hop,
            since: now,
        });
        self.ask(port, next_hop, now);
    }

    fn ask(&mut self, port: usize, next_hop: Ipv4Addr, now: u64) {
        let full = self.asked.len() >= PENDING_MAX;
        match self.asked.iter_mut().find(|(a, _)| *a == next_hop) {
            Some((_, at)) if now.saturating_sub(*at) < ARP_RETRY_NS => return,
            Some((_, at)) => *at = now,
            None if !full => self.asked.push((next_hop, now)),
            None => return,
        }
        let Some(mut m) = self.shared.pool.alloc() else {
            return;
        };
        let Some(out) = m.append(60) else { return };
        if self.engine.arp_request(port, next_hop, out).is_some() {
            self.send(port, m);
        }
    }

    /// Sends the held frames whose next hop is now known; drops the ones that waited too long.
    fn serve_pending(&mut self, now: u64) {
        let mut i = 0;
        while i < self.pending.len() {
            let (port, next_hop, since) = {
                let p = &self.pending[i];
                (p.port, p.next_hop, p.since)
            };
            let mac = self
                .engine
                .neighbours()
                .lookup(next_hop, now)
                .map(|n| n.mac);
            if let Some(mac) = mac {
                let mut p = self.pending.swap_remove(i);
                director::set_dst_mac(p.mbuf.data_mut(), mac);
                self.send(port, p.mbuf);
            } else if now.saturating_sub(since) > PENDING_TIMEOUT_NS {
                drop(self.pending.swap_remove(i));
                self.counters.count_drop(DropReason::NeighbourUnresolved);
            } else {
                if now.saturating_sub(since) >= ARP_RETRY_NS {
                    self.ask(port, next_hop, now);
                }
                i += 1;
            }
        }
        if self.pending.is_empty() {
            self.asked.clear();
        }
    }

    fn flush_all(&mut self) {
        for (txq, burst) in self.txqs.iter_mut().zip(self.tx.iter_mut()) {
            flush(txq, burst, &mut self.counters);
        }
        for (ring, burst) in self.shared.rings.iter().zip(self.redirect.iter_mut()) {
            flush_ring(ring, burst, &mut self.counters);
        }
    }

    /// Sends what this worker learned from ARP to the others, and learns what they did.
    fn share_neighbours(&mut self, now: u64) {
        let bus = self.shared.neighbour_bus;
        if bus.len() < 2 {
            self.engine.neighbours_mut().drain_journal(|_, _, _| {});
            return;
        }
        let index = self.index;
        self.engine
            .neighbours_mut()
            .drain_journal(|addr, mac, port| {
                for (i, (tx, _)) in bus.iter().enumerate() {
                    if i != index {
                        // A full inbox only means that worker resolves this neighbour itself.
                        let _ = tx.try_send((addr, mac, port));
                    }
                }
            });
        if let Some((_, rx)) = bus.get(index) {
            while let Ok((addr, mac, port)) = rx.try_recv() {
                self.engine
                    .neighbours_mut()
                    .learn_from_peer(addr, mac, port, now);
            }
        }
    }

    fn exchange_dest_counts(&mut self) {
        if self.shared.rings.len() < 2 {
            return;
        }
        let Some(b) = self.engine.balancer_mut() else {
            return;
        };
        let counts = b.conns().dest_counts();
        self.shared
            .board
            .publish(self.index, &counts[..self.dest_rows.min(counts.len())]);
        self.shared
            .board
            .sum_others(self.index, b.remote_counts_mut());
    }
}

impl Lcore<'_, '_> {
    /// The control plane's part of housekeeping (every millisecond, between bursts): a few
    /// commands from the inbox, then the figures the control plane reads.
    fn control(&mut self, now: u64) {
        if let Some(inbox) = self.shared.inboxes.get(self.index) {
            for _ in 0..COMMANDS_PER_TICK {
                match inbox.try_recv() {
                    Ok(cmd) => self.command(cmd, now),
                    Err(_) => break,
                }
            }
        }
        self.sync_tick(now);
        let Some(b) = self.engine.balancer_mut() else {
            return;
        };
        let figures = LcoreFigures {
            connections: b.conns().len() as u64,
            capacity: b.conns().capacity() as u64,
            events_queued: b.events_mut().len() as u64,
            events_overflow: b.conns().stats().event_overflow,
            generation: self.generation,
        };
        let board = self.shared.stats_board;
        board.publish_dests(
            self.index,
            b.conns().dest_counts(),
            b.dest_traffic(),
            self.dest_rows,
        );
        board.publish_lcore(self.index, &figures);
    }

    fn command(&mut self, cmd: Command, now: u64) {
        let index = self.index;
        if let Command::PortStats { reply } = cmd {
            let figures = self
                .shared
                .ports
                .iter()
                .map(|p| {
                    let s = p.stats().unwrap_or_default();
                    let l = p.link().ok();
                    PortFigures {
                        link_up: l.is_some_and(|l| l.up),
                        speed_mbps: l.map_or(0, |l| l.speed_mbps),
                        rx_packets: s.ipackets,
                        tx_packets: s.opackets,
                        rx_bytes: s.ibytes,
                        tx_bytes: s.obytes,
                        rx_missed: s.imissed,
                        rx_errors: s.ierrors,
                        tx_errors: s.oerrors,
                    }
                })
                .collect();
            let _ = reply.try_send(figures);
            return;
        }
        let Some(b) = self.engine.balancer_mut() else {
            return;
        };
        match cmd {
            Command::SetServices {
                services,
                generation,
            } => {
                let rows = services.dest_slots();
                match b.set_services(services) {
                    Ok(()) => {
                        self.generation = generation;
                        // Retired ids keep their rows: connections may still count there.
                        self.dest_rows = self.dest_rows.max(rows);
                    }
                    Err(e) => {
                        tracing::error!(worker = index, generation, "new services refused: {e}")
                    }
                }
            }
            Command::SetTimeouts(t) => {
                if let Err(e) = b.set_timeouts(t) {
                    tracing::error!(worker = index, "new timeouts refused: {e}");
                }
            }
            Command::Flush(target) => {
                b.flush(&target, now);
            }
            Command::ListConns {
                filter,
                limit,
                reply,
            } => {
                let mut records = Vec::with_capacity(limit.min(b.conns().len()));
                let matched = b.list_conns(&filter, limit, now, &mut records);
                let _ = reply.try_send(ConnListing {
                    worker: index,
                    records,
                    matched,
                });
            }
            Command::Sync(c) => self.sync.command(c, b, now),
            Command::PortStats { .. } => {}
        }
    }
}

/// Sends what `burst` holds; retries the unsent tail once, then frees and counts it.
fn flush<'m>(txq: &mut TxQueue<'_, 'm>, burst: &mut Burst<'m>, c: &mut Counters) {
    if burst.is_empty() {
        return;
    }
    let bytes = burst.total_len();
    let mut sent = txq.tx_burst(burst);
    if !burst.is_empty() {
        sent += txq.tx_burst(burst);
    }
    let unsent_bytes = burst.total_len();
    c.tx_packets += sent as u64;
    c.tx_bytes += (bytes - unsent_bytes) as u64;
    for m in burst.drain() {
        c.count_drop(DropReason::TxRingFull);
        drop(m);
    }
}

/// Hands `burst` to another worker's ring; what does not fit is freed and counted.
fn flush_ring<'m>(ring: &MbufRing<'m>, burst: &mut Burst<'m>, c: &mut Counters) {
    if burst.is_empty() {
        return;
    }
    ring.enqueue_burst(burst);
    for m in burst.drain() {
        c.count_drop(DropReason::RedirectRingFull);
        drop(m);
    }
}

fn now_ns(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Idle back-off: busy-poll while traffic flows; after a run of empty polls, sleep 1 µs,
/// doubling up to the configured bound; the first packet brings back busy polling. This lets a
/// director pair and its test traffic share a 2-core machine while keeping added latency
/// under `max` when idle.
#[derive(Debug)]
struct Backoff {
    empty_polls: u32,
    sleep: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            empty_polls: 0,
            sleep: Duration::from_micros(1),
            max,
        }
    }

    /// Returns the sleep it took (for tests).
    fn after_poll(&mut self, received: usize) -> Duration {
        if received > 0 || self.max.is_zero() {
            self.empty_polls = 0;
            self.sleep = Duration::from_micros(1);
            return Duration::ZERO;
        }
        self.empty_polls = self.empty_polls.saturating_add(1);
        if self.empty_polls < IDLE_POLLS_BEFORE_SLEEP {
            return Duration::ZERO;
        }
        let s = self.sleep.min(self.max);
        std::thread::sleep(s);
        self.sleep = (self.sleep * 2).min(self.max);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_busy_polls_then_doubles_then_resets() {
        let mut b = Backoff::new(Duration::from_micros(8));
        for _ in 0..IDLE_POLLS_BEFORE_SLEEP - 1 {
            assert_eq!(b.after_poll(0), Duration::ZERO);
        }
        let slept: Vec<u128> = (0..6).map(|_| b.after_poll(0).as_micros()).collect();
        assert_eq!(slept, [1, 2, 4, 8, 8, 8]);
        assert_eq!(b.after_poll(3), Duration::ZERO);
        assert_eq!(
            b.after_poll(0),
            Duration::ZERO,
            "busy polling again after traffic"
        );
    }

    #[test]
    fn zero_max_never_sleeps() {
        let mut b = Backoff::new(Duration::ZERO);
        for _ in 0..1000 {
            assert_eq!(b.after_poll(0), Duration::ZERO);
        }
    }

    #[test]
    fn dest_board_sums_the_other_workers_only() {
        let board = DestBoard::new(3, 2);
        board.publish(
            0,
            &[
                DestCounts {
                    active: 1,
                    inactive: 2,
                    persistent: 0,
                },
                DestCounts {
                    active: 3,
                    inactive: 4,
                    persistent: 0,
                },
            ],
        );
        board.publish(
            1,
            &[
                DestCounts {
                    active: 10,
                    inactive: 20,
                    persistent: 0,
                },
                DestCounts {
                    active: 30,
                    inactive: 40,
                    persistent: 0,
                },
            ],
        );
        board.publish(
            2,
            &[
                DestCounts {
                    active: 100,
                    inactive: 200,
                    persistent: 0,
                },
                DestCounts::default(),
            ],
        );
        let mut out = [DestCounts::default(); 2];
        board.sum_others(1, &mut out);
        assert_eq!(
            (
                out[0].active,
                out[0].inactive,
                out[1].active,
                out[1].inactive
            ),
            (101, 202, 3, 4)
        );
    }
}
