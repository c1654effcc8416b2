//! The load-balancing step of the per-packet engine: for a TCP/UDP datagram (or an ICMP error
//! about one) that belongs to a virtual service, find or create its connection, pick the real
//! server, apply the forwarding method's transform and choose where the frame leaves.
//!
//! The order of decisions, per frame:
//! 1. [`parse_flow`]: the flow (or, for an ICMP error, the flow it quotes).
//! 2. **Ownership**: the worker that owns a connection is chosen by the client address, which
//!    is the source of requests and the destination of NAT replies, so both directions of a
//!    connection meet the same connection table whatever queue the NIC put them on (and all
//!    of a client's connections meet the same persistence templates). A frame
//!    owned by another worker is returned as [`Verdict::Redirect`][crate::director::Verdict::Redirect] before anything is looked
//!    up or changed.
//! 3. **Request** (client → VIP:vport of a service): the connection by its client→VIP key, or
//!    a new one — only a TCP SYN (or any UDP datagram) starts one (IPVS without
//!    `sloppy_tcp`) — scheduled through persistence and the service's scheduler.
//! 4. **NAT reply** (real server → client): the connection by its reply key.
//! 5. **ICMP error**: the connection of the quoted datagram; translated in NAT mode
//!    ([`fwd::nat_icmp_to_real`]/[`fwd::nat_icmp_to_client`]), forwarded as is to the real server in
//!    TUN/DR mode.
//! 6. **Next hop**: [`Director::next_hop`] gives the port and the next hop's address; its MAC
//!    comes from the neighbour table, or the frame is returned as [`Verdict::Resolve`][crate::director::Verdict::Resolve] with the
//!    destination MAC left zero for the glue to hold until ARP answers.
//!
//! Anything else returns `Act::PASS`: the frame is not load-balanced, and the director's own
//! handling (ARP, ICMP echo, drops) takes it.
//!
//! Persistence templates are refreshed by every connection that uses them and expire on
//! their timeout; unlike IPVS they are not kept alive by the connections that reference them
//! (a client whose template expired while a long connection lasted is scheduled afresh).

use std::sync::Arc;

mod control;
mod fast;
mod sync;
pub use control::{ConnFilter, DestTraffic, FlushTarget};
pub(crate) use fast::Fast;
pub use sync::{LocalityChange, LocalityEvent, LocalityQueue, PeerInstallError};

use crate::buf::PacketBuf;
use crate::conn::{
    ConnConfig, ConnConfigError, ConnState, ConnTable, CreateError, DestCounts, Direction,
    EventQueue, NewConn, TcpFlags,
};
use crate::counters::{Counters, DropReason};
use crate::director::{Act, Director};
use crate::fwd::{
    self, FwdError, ICMP_ERROR_MAX_FRAME, MacRewrite, ParsedFlow, TUNNEL_HEADROOM, TunnelOutcome,
    TunnelParams, parse_flow,
};
use crate::hop::{CachedHop, HopCache};
use crate::lb::{Endpoint, Flow, ForwardMethod, Protocol};
use crate::neigh::NeighbourTable;
use crate::sched::{self, DestState, PersistError, PersistOptions, PersistenceTable, Scheduler};
use crate::service::ServiceSet;
use crate::wire::tcp;

/// How a worker's load-balancing state is sized.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// The connection table (capacity, timeouts, ...).
    pub conn: ConnConfig,
    /// The persistence templates.
    pub persist: PersistOptions,
    /// Connection events kept for the sync daemon before overflow is counted.
    pub event_capacity: usize,
    /// This worker's index among the workers.
    pub worker: usize,
    /// How many workers share the connections (by client endpoint).
    pub workers: usize,
}

/// Why a worker's load-balancing state could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BalancerError {
    /// The connection table configuration.
    #[error("connection table: {0}")]
    Conn(#[from] ConnConfigError),
    /// The persistence table configuration.
    #[error("persistence table: {0}")]
    Persist(#[from] PersistError),
    /// A scheduler refused its service.
    #[error("scheduler of service {vip}: {source}")]
    Scheduler {
        /// The service.
        vip: Endpoint,
        /// Why.
        source: sched::SchedulerError,
    },
    /// Worker index out of range.
    #[error("worker {worker} of {workers}")]
    Worker {
        /// Index.
        worker: usize,
        /// Count.
        workers: usize,
    },
}

/// One worker's load-balancing state.
#[derive(Debug)]
pub struct Balancer {
    services: Arc<ServiceSet>,
    conns: ConnTable,
    /// Indexed by `ServiceId` (ids may have gaps).
    schedulers: Vec<Option<Scheduler>>,
    /// Traffic per destination, indexed by `DestId`, sized for every possible id.
    traffic: Vec<DestTraffic>,
    persist: PersistenceTable,
    events: EventQueue,
    /// lblc/lblcr changes for the sync daemon (numbered with the connection events).
    locality: LocalityQueue,
    /// The schedulers' view of one service's destinations, refilled per decision.
    scratch: Vec<DestState>,
    /// Connection counts of the other workers, per destination (refreshed by the glue).
    remote: Vec<DestCounts>,
    icmp_out: Box<[u8; ICMP_ERROR_MAX_FRAME]>,
    ident: u16,
    worker: usize,
    workers: usize,
    /// Whether new connections are scheduled (an active or standalone director) or refused
    /// with [`DropReason::Standby`] (a standby); see [`set_scheduling`](Self::set_scheduling).
    schedules: bool,
}

/// The worker that owns connections of `client` among `workers`: a multiplicative hash of
/// the client's *address*, identical on every worker. The port is left out on purpose: all
/// connections of one client then share one worker, so its persistence templates and the
/// schedulers' per-client state (sh) are consistent; the cost is that one very busy client
/// address cannot spread over several workers.
pub fn owner(client: Endpoint, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let key = u64::from(client.addr.to_bits());
    let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // Fibonacci hashing: the high bits are the well-mixed ones.
    ((h >> 32) % workers as u64) as usize
}

impl Balancer {
    /// Builds the state (this is where its memory is allocated).
    pub fn new(services: Arc<ServiceSet>, config: BalancerConfig) -> Result<Self, BalancerError> {
        if config.worker >= config.workers.max(1) {
            return Err(BalancerError::Worker {
                worker: config.worker,
                workers: config.workers,
            });
        }
        let max_dests = config.conn.max_dests;
        let conns = ConnTable::new(config.conn)?;
        let persist = PersistenceTable::new(config.persist)?;
        let mut schedulers: Vec<Option<Scheduler>> =
            (0..services.service_slots()).map(|_| None).collect();
        let mut widest = 0;
        for svc in services.services() {
            widest = widest.max(svc.dest_count as usize);
            if let Some(slot) = schedulers.get_mut(svc.id.0 as usize) {
                *slot = Some(control::fresh_scheduler(&services, svc)?);
            }
        }
        Ok(Self {
            services,
            conns,
            schedulers,
            traffic: vec![DestTraffic::default(); max_dests],
            persist,
            events: EventQueue::new(config.event_capacity),
            locality: LocalityQueue::new(config.event_capacity),
            scratch: Vec::with_capacity(widest),
            remote: vec![DestCounts::default(); max_dests],
            icmp_out: Box::new([0; ICMP_ERROR_MAX_FRAME]),
            ident: 0,
            worker: config.worker,
            workers: config.workers.max(1),
            schedules: true,
        })
    }

    /// Whether this worker schedules new connections: `true` (the default) for an active or
    /// standalone director; `false` for a standby, which still forwards the connections it
    /// holds (synced from the active) but creates none, so that the two directors never
    /// schedule at once. Set with the VIPs' ownership
    /// ([`Worker::set_owns_vips`](crate::director::Worker::set_owns_vips)).
    pub fn set_scheduling(&mut self, on: bool) {
        self.schedules = on;
    }

    /// Whether new connections are scheduled (see [`set_scheduling`](Self::set_scheduling)).
    pub fn schedules(&self) -> bool {
        self.schedules
    }

    /// The services this worker balances.
    pub fn services(&self) -> &ServiceSet {
        &self.services
    }

    /// This worker's connection table.
    pub fn conns(&self) -> &ConnTable {
        &self.conns
    }

    /// This worker's connection table, for the sync daemon's installs and sweeps (standby
    /// side: `ConnTable::install` / `uninstall`), between bursts.
    pub fn conns_mut(&mut self) -> &mut ConnTable {
        &mut self.conns
    }

    /// The connection events not yet taken by the sync daemon.
    pub fn events_mut(&mut self) -> &mut EventQueue {
        &mut self.events
    }

    /// The other workers' connection counts per destination, for the glue to refresh (the
    /// schedulers add this worker's own, exact counts).
    pub fn remote_counts_mut(&mut self) -> &mut [DestCounts] {
        &mut self.remote
    }

    /// Housekeeping between bursts: expires at most `budget` connections, and ages the
    /// schedulers' and persistence tables. Returns the connections removed.
    pub fn housekeeping(&mut self, now: u64, budget: usize) -> usize {
        let removed = self.conns.expire(now, budget, &mut self.events);
        // Emits the locality entries aged out, the templates expired and those whose
        // refresh the peer needs now (see `sync`).
        self.age_with_events(now);
        removed
    }

    /// Handles a frame addressed to one of the director's MACs, if it is load-balanced
    /// traffic; `Act::PASS` hands it back to the director's own handling.
    #[inline(always)]
    pub(crate) fn handle<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        in_port: usize,
        buf: &mut B,
        counters: &mut Counters,
    ) -> Act {
        // The common shape is parsed inline, so its flow stays in registers on the way to the
        // lookup and the rewrite; anything else takes the general parse.
        match fwd::parse_common(buf.data()) {
            Some(pf) => self.handle_flow(ctx, &pf, buf, counters),
            None => self.handle_general(ctx, in_port, buf, counters),
        }
    }

    /// [`handle`](Self::handle) for a frame of any shape.
    #[inline(never)]
    fn handle_general<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        in_port: usize,
        buf: &mut B,
        counters: &mut Counters,
    ) -> Act {
        let director = ctx.director;
        let pf = match parse_flow(buf.data()) {
            Ok(pf) => pf,
            // Not a flow (ICMP echo, other protocols): the director's own business.
            Err(FwdError::UnsupportedIpProtocol | FwdError::UnhandledIcmp) => return Act::PASS,
            Err(e) => {
                // Malformed traffic to the director's own addresses is its own handling's to
                // count; anything else is counted here.
                let dst = buf
                    .data()
                    .get(30..34)
                    .map(|d| std::net::Ipv4Addr::new(d[0], d[1], d[2], d[3]));
                if dst.is_some_and(|d| director.is_local(in_port, d) && !self.services.is_vip(d)) {
                    return Act::PASS;
                }
                return Act::dropped(e.drop_reason());
            }
        };
        self.handle_flow(ctx, &pf, buf, counters)
    }

    /// [`handle`](Self::handle) once [`parse_flow`] found the flow `pf`.
    #[inline(always)]
    fn handle_flow<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        pf: &ParsedFlow,
        buf: &mut B,
        counters: &mut Counters,
    ) -> Act {
        if pf.icmp_error.is_some() {
            return self.icmp_error(ctx, pf, buf, counters);
        }
        // Borrowed, not copied: a copy of the packed flow in wide words would wait for the
        // narrow stores that built it.
        let flow = &pf.flow;
        let flags = pf.tcp_flags;
        // The connection is looked up first (it changes nothing), so that an established
        // connection's frame finds its service without a hash lookup. The decisions are those
        // of the order in the module docs.
        let found = self.conns.lookup_hinted(flow, ctx.hint);
        let (svc_id, dst_is_vip) = match found {
            // A request of a live connection: its service, if that still serves the key.
            Some((id, Direction::Input)) => match self.conn_service(id, flow) {
                Some(svc_id) => (Some(svc_id), true),
                None => self.service_of(flow),
            },
            // A NAT reply: no service can have the destination's address if no VIP has it.
            Some((_, Direction::Output)) if !self.services.is_vip(flow.dst.addr) => (None, false),
            _ => self.service_of(flow),
        };
        if let Some(svc_id) = svc_id {
            if let Some(w) = self.redirect(flow.src, counters) {
                return Act::redirect(w);
            }
            return self.request(ctx, svc_id, pf, found, buf, counters);
        }
        if dst_is_vip {
            return Act::dropped(DropReason::NoService);
        }
        // A NAT reply: real server → client.
        if let Some(w) = self.redirect(flow.dst, counters) {
            return Act::redirect(w);
        }
        match found {
            Some((id, Direction::Output)) => {
                // Read before the update writes the entry (the update changes none of them).
                let Some(conn) = self.conns.get(id) else {
                    return Act::PASS;
                };
                let (vip, client, dest) = (conn.vip(), conn.client(), conn.dest());
                self.conns.update(
                    id,
                    Direction::Output,
                    TcpFlags(flags.0),
                    ctx.now,
                    &mut self.events,
                );
                self.count_out(dest, buf.data().len());
                self.emit(ctx, client.addr, buf, counters, |frame, mac| {
                    fwd::nat_reply_parsed(frame, pf, vip, mac)
                })
            }
            _ => Act::PASS,
        }
    }

    /// The service of connection `id`, found by `flow`'s client→VIP key, if the service with
    /// that id still has the connection's protocol and VIP: the one [`ServiceSet::lookup`]
    /// would give for `flow` (VIPs are unique), without its hash lookup.
    #[inline(always)]
    fn conn_service(&self, id: crate::conn::ConnId, flow: &Flow) -> Option<crate::lb::ServiceId> {
        let conn = self.conns.get(id)?;
        let svc = self.services.service(conn.service())?;
        (svc.id == conn.service() && svc.proto == flow.proto && svc.vip == flow.dst)
            .then_some(svc.id)
    }

    /// The service of `flow`'s destination, and whether that address is a VIP at all.
    fn service_of(&self, flow: &Flow) -> (Option<crate::lb::ServiceId>, bool) {
        match self.services.lookup(flow.proto, flow.dst) {
            Some(svc) => (Some(svc.id), true),
            None => (None, self.services.is_vip(flow.dst.addr)),
        }
    }

    /// The worker to redirect to ([`Verdict::Redirect`](crate::director::Verdict::Redirect))
    /// if another worker owns connections of `client`.
    #[inline]
    fn redirect(&self, client: Endpoint, counters: &mut Counters) -> Option<usize> {
        let w = owner(client, self.workers);
        (w != self.worker).then(|| {
            counters.redirected += 1;
            w
        })
    }

    /// A datagram from a client to a virtual service; `found` is what the connection lookup
    /// of its flow gave.
    #[inline(always)]
    fn request<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        svc_id: crate::lb::ServiceId,
        pf: &ParsedFlow,
        found: Option<(crate::conn::ConnId, Direction)>,
        buf: &mut B,
        counters: &mut Counters,
    ) -> Act {
        let (flow, flags) = (&pf.flow, pf.tcp_flags);
        let tcp_flags = TcpFlags(flags.0);
        let syn = flow.proto == Protocol::Tcp
            && flags.contains(tcp::Flags::SYN)
            && !flags.contains(tcp::Flags::ACK);
        let existing = match found {
            Some((id, Direction::Input)) => {
                // What the update does not change is read before it writes the entry.
                let (closed, target) = match self.conns.get(id) {
                    Some(c) => (
                        matches!(c.state(), ConnState::TimeWait | ConnState::Close),
                        Some((c.real(), c.method(), c.dest())),
                    ),
                    None => (false, None),
                };
                if syn && closed {
                    // A new connection on the same ports after the old one closed: the
                    // active's to schedule (a standby keeps the closed entry as synced).
                    if !self.schedules {
                        return Act::dropped(DropReason::Standby);
                    }
                    self.conns.remove(id, ctx.now, &mut self.events);
                    None
                } else {
                    self.conns
                        .update(id, Direction::Input, tcp_flags, ctx.now, &mut self.events);
                    if let Some((real, method, dest)) = target {
                        self.count_in(dest, buf.data().len());
                        return self.forward_to_real(ctx, method, real, pf, buf, counters);
                    }
                    Some(id)
                }
            }
            Some((_, Direction::Output)) => return Act::dropped(DropReason::ConnKeyConflict),
            None => None,
        };
        let id = match existing {
            Some(id) => id,
            None => {
                if flow.proto == Protocol::Tcp && !syn {
                    return Act::dropped(DropReason::TcpNoConnection);
                }
                if !self.schedules {
                    return Act::dropped(DropReason::Standby);
                }
                match self.schedule(svc_id, flow, tcp_flags, ctx.now) {
                    Ok(id) => id,
                    Err(reason) => return Act::dropped(reason),
                }
            }
        };
        let Some(conn) = self.conns.get(id) else {
            return Act::dropped(DropReason::ConnTableFull);
        };
        let (real, method, dest) = (conn.real(), conn.method(), conn.dest());
        self.count_in(dest, buf.data().len());
        self.forward_to_real(ctx, method, real, pf, buf, counters)
    }

    /// Picks a real server for a new connection and records it. Only for a flow whose
    /// client→VIP key the caller has just found absent from the connection table.
    fn schedule(
        &mut self,
        svc_id: crate::lb::ServiceId,
        flow: &Flow,
        flags: TcpFlags,
        now: u64,
    ) -> Result<crate::conn::ConnId, DropReason> {
        // A plain borrow of the field (disjoint from the ones mutated below): no reference
        // count touched per new connection.
        let services: &ServiceSet = &self.services;
        let svc = services.service(svc_id).ok_or(DropReason::NoService)?;
        let local = self.conns.dest_counts();
        self.scratch.clear();
        for d in services.service_dests(svc) {
            let i = d.id.0 as usize;
            let (l, r) = (
                local.get(i).copied().unwrap_or_default(),
                self.remote.get(i).copied().unwrap_or_default(),
            );
            self.scratch.push(DestState {
                active: l.active.saturating_add(r.active),
                inactive: l.inactive.saturating_add(r.inactive),
                ..DestState::new(d.id, d.endpoint.addr, d.endpoint.port, d.weight)
            });
        }
        let sched = self
            .schedulers
            .get_mut(svc_id.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(DropReason::NoService)?;
        let choice = sched::choose(
            sched,
            &mut self.persist,
            svc.persistence,
            svc_id,
            &self.scratch,
            flow,
            now,
        );
        // The sync daemon hears of a new or changed lblc/lblcr entry and of a new template
        // (rare: not per connection); refreshes and expiries come from housekeeping.
        if let Some(addr) = sched.take_locality_change() {
            sync::announce_locality(
                &mut self.conns,
                &mut self.locality,
                svc_id,
                sched,
                addr,
                now,
            );
        }
        let choice = choice.map_err(|_| DropReason::NoDestination)?;
        if let (true, Some(key)) = (choice.new_template, choice.template) {
            sync::announce_template(
                &mut self.conns,
                &mut self.events,
                services,
                &self.persist,
                key,
                now,
            );
        }
        let dest = services
            .dest(choice.dest)
            .ok_or(DropReason::NoDestination)?;
        let new = NewConn {
            proto: flow.proto,
            client: flow.src,
            vip: flow.dst,
            real: dest.endpoint,
            method: dest.method,
            dest: dest.id,
            service: svc_id,
        };
        // request() looked the flow up and found nothing (or removed what it found); the
        // scheduler does not touch the connection table.
        match self.conns.create_absent(&new, flags, now, &mut self.events) {
            Ok(id) => {
                if let Some(t) = self.traffic.get_mut(dest.id.0 as usize) {
                    t.conns += 1;
                }
                Ok(id)
            }
            Err(CreateError::Exists(id)) => Ok(id),
            Err(CreateError::Full) => Err(DropReason::ConnTableFull),
            Err(CreateError::KeyTaken | CreateError::BadDest(_)) => {
                Err(DropReason::ConnKeyConflict)
            }
        }
    }

    /// An ICMP error about a tracked connection.
    fn icmp_error<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        pf: &ParsedFlow,
        buf: &mut B,
        counters: &mut Counters,
    ) -> Act {
        let quoted = pf.flow;
        // From outside about a reply (quotes VIP:vport → client), or from the inside about a
        // request (quotes client → RIP:rport): the client is the quote's destination in the
        // first case, its source in the second.
        let about_reply = self.services.lookup(quoted.proto, quoted.src).is_some();
        let client = if about_reply { quoted.dst } else { quoted.src };
        let Some((id, dir)) = self.conns.lookup(&quoted.reversed()) else {
            return Act::PASS;
        };
        if let Some(w) = self.redirect(client, counters) {
            return Act::redirect(w);
        }
        let Some(conn) = self.conns.get(id) else {
            return Act::PASS;
        };
        let (real, vip, method, client) = (conn.real(), conn.vip(), conn.method(), conn.client());
        match (dir, method) {
            (Direction::Input, ForwardMethod::Nat) => {
                self.emit(ctx, real.addr, buf, counters, |frame, mac| {
                    fwd::nat_icmp_to_real(frame, real, mac)
                })
            }
            (Direction::Input, method) => {
                self.forward_to_real(ctx, method, real, pf, buf, counters)
            }
            (Direction::Output, _) => self.emit(ctx, client.addr, buf, counters, |frame, mac| {
                fwd::nat_icmp_to_client(frame, vip, mac)
            }),
        }
    }

    /// Sends a request (or an ICMP error about one) to its real server by `method`; `pf` is
    /// what [`parse_flow`] found in the frame.
    #[inline(always)]
    fn forward_to_real<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        method: ForwardMethod,
        real: Endpoint,
        pf: &ParsedFlow,
        buf: &mut B,
        counters: &mut Counters,
    ) -> Act {
        match method {
            ForwardMethod::Nat => self.emit(ctx, real.addr, buf, counters, |frame, mac| {
                fwd::nat_request_parsed(frame, pf, real, mac)
            }),
            ForwardMethod::DirectRoute => self.emit(ctx, real.addr, buf, counters, |frame, mac| {
                fwd::direct_route_parsed(frame, pf, mac)
            }),
            ForwardMethod::Tunnel => self.tunnel(ctx, real, buf, counters),
        }
    }

    /// Applies `transform` with the MACs towards `dst` and picks the verdict.
    #[inline(always)]
    fn emit<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        dst: std::net::Ipv4Addr,
        buf: &mut B,
        counters: &mut Counters,
        transform: impl FnOnce(&mut [u8], MacRewrite) -> Result<(), FwdError>,
    ) -> Act {
        // The cached hop is used right where it is read. Merged with the slow path's result
        // in one stack slot, its MACs were reloaded across two narrower stores (a
        // store-forwarding stall on every forwarded frame).
        if let Some(hop) = ctx.hops.get(dst, ctx.neighbours, ctx.now) {
            return match transform(buf.data_mut(), hop.mac()) {
                Ok(()) => {
                    counters.forwarded += 1;
                    Act::forward(hop.port)
                }
                Err(e) => Act::dropped(e.drop_reason()),
            };
        }
        Self::emit_slow(ctx, dst, buf, counters, transform)
    }

    /// [`emit`](Self::emit) when the hop is not cached: route and neighbour lookups.
    #[cold]
    #[inline(never)]
    fn emit_slow<B: PacketBuf>(
        ctx: &Ctx<'_>,
        dst: std::net::Ipv4Addr,
        buf: &mut B,
        counters: &mut Counters,
        transform: impl FnOnce(&mut [u8], MacRewrite) -> Result<(), FwdError>,
    ) -> Act {
        let Some(hop) = ctx.hop_slow(dst) else {
            return Act::dropped(DropReason::NoRoute);
        };
        match transform(buf.data_mut(), hop.mac) {
            Ok(()) => hop.verdict(counters),
            Err(e) => Act::dropped(e.drop_reason()),
        }
    }

    /// VS/TUN: IPIP to the real server, or "fragmentation needed" back to the client.
    fn tunnel<B: PacketBuf>(
        &mut self,
        ctx: &Ctx<'_>,
        real: Endpoint,
        buf: &mut B,
        counters: &mut Counters,
    ) -> Act {
        let Some(hop) = ctx.hop(real.addr) else {
            return Act::dropped(DropReason::NoRoute);
        };
        let Some(port) = ctx.director.ports().get(hop.port) else {
            return Act::dropped(DropReason::NoRoute);
        };
        if !buf.prepend(TUNNEL_HEADROOM) {
            return Act::dropped(DropReason::FwdBufferTooSmall);
        }
        self.ident = self.ident.wrapping_add(1);
        let params = TunnelParams {
            outer_src: port.addr,
            real_server: real.addr,
            ident: self.ident,
            mtu: ctx.director.mtu(hop.port),
            mac: hop.mac,
        };
        match fwd::tunnel(buf.data_mut(), &params, &mut self.icmp_out[..]) {
            Ok(TunnelOutcome::Encapsulated { len }) => {
                let extra = buf.data().len().saturating_sub(len);
                if extra > 0 && !buf.trim_back(extra) {
                    return Act::dropped(DropReason::FwdBufferTooSmall);
                }
                hop.verdict(counters)
            }
            Ok(TunnelOutcome::FragNeeded { len }) => {
                // The request is not sent; the ICMP error replaces it in the same buffer and
                // goes back out of the port the request came in by.
                let have = buf.data().len();
                let Some(icmp) = self.icmp_out.get(..len) else {
                    return Act::dropped(DropReason::FwdBufferTooSmall);
                };
                if have < len || !buf.trim_back(have - len) {
                    return Act::dropped(DropReason::FwdBufferTooSmall);
                }
                buf.data_mut().copy_from_slice(icmp);
                counters.icmp_frag_needed += 1;
                Act::REPLY
            }
            Err(e) => Act::dropped(e.drop_reason()),
        }
    }
}

/// What a forwarding decision needs to know about the world.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) director: &'a Director,
    pub(crate) neighbours: &'a NeighbourTable,
    pub(crate) hops: &'a HopCache,
    /// The frame's key hash from the prefetch pass, if the glue has it.
    pub(crate) hint: crate::conn::Hint,
    pub(crate) now: u64,
}

/// Where a frame leaves: the port, the next hop, and the MACs (destination zero until known).
struct Hop {
    port: usize,
    next_hop: std::net::Ipv4Addr,
    mac: MacRewrite,
    resolved: bool,
}

impl Ctx<'_> {
    /// The hop towards `dst`: from the [`HopCache`] when it has it, else by route and
    /// neighbour lookups (and cached if resolved).
    #[inline]
    fn hop(&self, dst: std::net::Ipv4Addr) -> Option<Hop> {
        if let Some(h) = self.hops.get(dst, self.neighbours, self.now) {
            return Some(Hop {
                port: h.port,
                next_hop: h.next_hop,
                mac: h.mac(),
                resolved: true,
            });
        }
        self.hop_slow(dst)
    }

    fn hop_slow(&self, dst: std::net::Ipv4Addr) -> Option<Hop> {
        let (port, next_hop) = self.director.next_hop(dst)?;
        let src = self.director.ports().get(port)?.mac;
        let neighbour = self.neighbours.lookup(next_hop, self.now);
        if let Some(n) = neighbour {
            let hop = CachedHop::new(port, next_hop, MacRewrite { src, dst: n.mac });
            self.hops.put(dst, self.neighbours, n.learned_at, hop);
        }
        let known = neighbour.map(|n| n.mac);
        Some(Hop {
            port,
            next_hop,
            mac: MacRewrite {
                src,
                dst: known.unwrap_or([0; 6]),
            },
            resolved: known.is_some(),
        })
    }
}

impl Hop {
    fn verdict(&self, counters: &mut Counters) -> Act {
        counters.forwarded += 1;
        if self.resolved {
            Act::forward(self.port)
        } else {
            Act::resolve(self.port, self.next_hop)
        }
    }
}
