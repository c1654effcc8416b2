//! The control plane's side of a [`Balancer`]: a new service snapshot swapped in between
//! bursts, live timeouts, per-destination traffic counters, a bounded filtered connection
//! listing and flushes. Nothing here runs per packet except [`Balancer::count_in`] and
//! [`Balancer::count_out`] (two array increments).

use std::net::Ipv4Addr;
use std::sync::Arc;

use super::{Balancer, BalancerError};
use crate::conn::{Conn, ConnConfigError, ConnRecord, ConnState, Timeouts};
use crate::lb::{DestId, Endpoint, Protocol};
use crate::sched::Scheduler;
use crate::service::{Service, ServiceSet};

/// Ethernet header bytes, left out of the byte counters (IPVS counts IP packet lengths).
const ETHERNET_HEADER: usize = 14;

/// One destination's traffic as one worker saw it, cumulative since the worker started (the
/// control plane keeps baselines to zero them). As in IPVS, "in" is client → server and "out"
/// is server → client, which only NAT sees; bytes are IP bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestTraffic {
    /// Connections scheduled to it.
    pub conns: u64,
    /// Packets client → server.
    pub packets_in: u64,
    /// Packets server → client (NAT only).
    pub packets_out: u64,
    /// Bytes client → server.
    pub bytes_in: u64,
    /// Bytes server → client (NAT only).
    pub bytes_out: u64,
}

/// Which connections a listing selects (`ipvsadm -L -c` with filters); `None` matches all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnFilter {
    /// TCP or UDP.
    pub proto: Option<Protocol>,
    /// The client's address.
    pub client: Option<Ipv4Addr>,
    /// The virtual service (protocol, VIP:port).
    pub service: Option<(Protocol, Endpoint)>,
    /// The real server's address.
    pub server: Option<Ipv4Addr>,
    /// The state.
    pub state: Option<ConnState>,
}

impl ConnFilter {
    /// Whether `c` is selected.
    pub fn matches(&self, c: &Conn) -> bool {
        self.selects(c.proto(), c.client(), c.vip(), c.real(), c.state())
    }

    /// Whether the entry `r` stands for is selected (for entries that are records only, such
    /// as the scheduler's persistence templates).
    pub fn matches_record(&self, r: &ConnRecord) -> bool {
        self.selects(r.proto, r.client, r.vip, r.real, r.state)
    }

    fn selects(
        &self,
        proto: Protocol,
        client: Endpoint,
        vip: Endpoint,
        real: Endpoint,
        state: ConnState,
    ) -> bool {
        self.proto.is_none_or(|p| proto == p)
            && self.client.is_none_or(|a| client.addr == a)
            && self.service.is_none_or(|(p, v)| proto == p && vip == v)
            && self.server.is_none_or(|a| real.addr == a)
            && self.state.is_none_or(|s| state == s)
    }
}

/// Connections to remove at once. By endpoints, not ids: what the operator named is what
/// goes, whatever slot it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushTarget {
    /// Every connection of a virtual service.
    Service {
        /// TCP or UDP.
        proto: Protocol,
        /// VIP:port.
        vip: Endpoint,
    },
    /// Every connection of one real server of a virtual service.
    Server {
        /// TCP or UDP.
        proto: Protocol,
        /// VIP:port.
        vip: Endpoint,
        /// The real server.
        server: Endpoint,
    },
}

impl FlushTarget {
    fn matches(&self, c: &Conn) -> bool {
        match *self {
            FlushTarget::Service { proto, vip } => c.proto() == proto && c.vip() == vip,
            FlushTarget::Server { proto, vip, server } => {
                c.proto() == proto && c.vip() == vip && c.real() == server
            }
        }
    }
}

/// A new scheduler for `svc` of `set`.
pub(super) fn fresh_scheduler(set: &ServiceSet, svc: &Service) -> Result<Scheduler, BalancerError> {
    Scheduler::new(svc.scheduler, svc.options, &set.dest_states(svc)).map_err(|source| {
        BalancerError::Scheduler {
            vip: svc.vip,
            source,
        }
    })
}

/// Whether `new` (of `new_set`) schedules exactly as `old` (of `old_set`) did: same
/// algorithm, options and destination list (ids, endpoints, weights, order).
fn same_scheduling(
    old_set: &ServiceSet,
    old: &Service,
    new_set: &ServiceSet,
    new: &Service,
) -> bool {
    old.proto == new.proto
        && old.vip == new.vip
        && old.scheduler == new.scheduler
        && old.options == new.options
        && old_set.dest_states(old) == new_set.dest_states(new)
}

impl Balancer {
    /// Swaps in a new service snapshot (between bursts; allocates). A service whose
    /// scheduler, options and destination list are unchanged keeps its scheduler object
    /// (wrr position, mh table, lblc/lblcr tables); any other gets a new one. Existing
    /// connections are untouched: they keep their real server, as in IPVS (they store its
    /// endpoint and method). On error nothing changed.
    pub fn set_services(&mut self, services: Arc<ServiceSet>) -> Result<(), BalancerError> {
        let old_set = &self.services;
        let mut next: Vec<Option<Scheduler>> =
            (0..services.service_slots()).map(|_| None).collect();
        let mut keep = Vec::with_capacity(services.services().len());
        let mut widest = 0;
        for svc in services.services() {
            widest = widest.max(svc.dest_count as usize);
            let kept = old_set
                .service(svc.id)
                .is_some_and(|old| same_scheduling(old_set, old, &services, svc))
                && self
                    .schedulers
                    .get(svc.id.0 as usize)
                    .is_some_and(Option::is_some);
            if kept {
                keep.push(svc.id);
            } else if let Some(slot) = next.get_mut(svc.id.0 as usize) {
                *slot = Some(fresh_scheduler(&services, svc)?);
            }
        }
        for id in keep {
            let i = id.0 as usize;
            if let (Some(to), Some(from)) = (next.get_mut(i), self.schedulers.get_mut(i)) {
                *to = from.take();
            }
        }
        self.schedulers = next;
        if self.scratch.capacity() < widest {
            self.scratch = Vec::with_capacity(widest);
        }
        self.services = services;
        Ok(())
    }

    /// Replaces the connection timeouts (`ipvsadm --set`); see [`crate::conn::ConnTable::set_timeouts`].
    pub fn set_timeouts(&mut self, timeouts: Timeouts) -> Result<(), ConnConfigError> {
        self.conns.set_timeouts(timeouts)
    }

    /// Traffic per destination, indexed by `DestId`, cumulative since this worker started.
    pub fn dest_traffic(&self) -> &[DestTraffic] {
        &self.traffic
    }

    /// Appends to `out` the records (as of `now`) of at most `limit` connections `filter`
    /// selects, then of the persistence templates it selects (as `ipvsadm -L -c` lists them:
    /// state NONE, client port 0, [`ConnFlags::TEMPLATE`](crate::conn::ConnFlags::TEMPLATE)),
    /// and returns how many it selects in all. Walks both tables: a control-plane call,
    /// between bursts.
    pub fn list_conns(
        &self,
        filter: &ConnFilter,
        limit: usize,
        now: u64,
        out: &mut Vec<ConnRecord>,
    ) -> usize {
        let mut matched = 0;
        for (id, c) in self.conns.iter() {
            if !filter.matches(c) {
                continue;
            }
            matched += 1;
            if out.len() < limit
                && let Some(r) = self.conns.record(id, now)
            {
                out.push(r);
            }
        }
        for key in self.persist.keys() {
            let Some(r) = self
                .persist
                .entry(key, now)
                .and_then(|e| super::sync::template_record(&self.services, &e))
            else {
                continue;
            };
            if filter.matches_record(&r) {
                matched += 1;
                if out.len() < limit {
                    out.push(r);
                }
            }
        }
        matched
    }

    /// Removes the connections of `target` now (emitting a delete event for each, for the
    /// sync daemon) and returns how many. Walks the whole table.
    pub fn flush(&mut self, target: &FlushTarget, now: u64) -> usize {
        self.conns
            .remove_where(|c| target.matches(c), now, &mut self.events)
    }

    /// Counts a client → server packet of `frame_len` bytes (Ethernet included) for `dest`.
    #[inline(always)]
    pub(super) fn count_in(&mut self, dest: DestId, frame_len: usize) {
        if let Some(t) = self.traffic.get_mut(dest.0 as usize) {
            t.packets_in += 1;
            t.bytes_in += frame_len.saturating_sub(ETHERNET_HEADER) as u64;
        }
    }

    /// Counts a server → client packet of `frame_len` bytes (Ethernet included) for `dest`.
    #[inline(always)]
    pub(super) fn count_out(&mut self, dest: DestId, frame_len: usize) {
        if let Some(t) = self.traffic.get_mut(dest.0 as usize) {
            t.packets_out += 1;
            t.bytes_out += frame_len.saturating_sub(ETHERNET_HEADER) as u64;
        }
    }
}
