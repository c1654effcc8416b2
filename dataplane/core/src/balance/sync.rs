//! What a worker's balancer streams to the sync daemon besides its connections, and installs
//! from the peer: the **persistence templates** of its [`PersistenceTable`] and the
//! **lblc/lblcr locality entries** of its schedulers.
//!
//! Both are numbered in the lcore's one event sequence ([`ConnTable::emit_external`]), so
//! the sync daemon's per-lcore gap detection and head marks cover them like connections: a
//! change that finds its bounded queue full is counted (`ConnStats::event_overflow`), its
//! number is gone, and the daemon resyncs.
//!
//! - A template travels as a [`ConnRecord`] with [`ConnFlags::TEMPLATE`] (the IPVS
//!   convention: client port 0, the masked client address, the service's VIP:port — port 0
//!   for an all-port service), in the connection [`EventQueue`]: `Created` when a decision
//!   makes one, `Refreshed` when the table's walk finds it used since its last announcement
//!   and the peer's copy near its end (at most once per timeout period), `Deleted(Expired)`
//!   when it expires. On the standby it goes into the [`PersistenceTable`], so its scheduler
//!   honours it; it has no holders there until connections bind to it.
//! - A locality change goes into the [`LocalityQueue`] as a [`LocalityEvent`] (service,
//!   destination address, entry or removal); the glue maps ids to endpoints.
//!
//! [`ConnFlags::TEMPLATE`]: crate::conn::ConnFlags::TEMPLATE
//! [`EventQueue`]: crate::conn::EventQueue

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use super::Balancer;
use crate::conn::{ConnEvent, ConnEventKind, ConnFlags, ConnRecord, ConnState, ConnTable};
use crate::lb::{Endpoint, ServiceId};
use crate::sched::{
    InstallError, LocalityEntry, PersistChange, PersistEntry, PersistKey, PersistenceTable,
    Scheduler,
};
use crate::service::ServiceSet;

const NS_PER_MS: u64 = 1_000_000;

/// What happened to a locality entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalityChange {
    /// Created or changed (another server, a set member added or dropped).
    Set(LocalityEntry),
    /// Dropped (aged out).
    Removed(Ipv4Addr),
}

/// One change of one lblc/lblcr table, numbered in the lcore's event sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalityEvent {
    /// The lcore's sequence number (shared with its connection events).
    pub seq: u64,
    /// The service whose scheduler changed.
    pub service: ServiceId,
    /// What changed.
    pub change: LocalityChange,
}

/// A bounded FIFO of locality events, allocated once: `push` refuses when full.
#[derive(Debug, Clone)]
pub struct LocalityQueue {
    events: VecDeque<LocalityEvent>,
    capacity: usize,
}

impl LocalityQueue {
    /// A queue for at most `capacity` events.
    pub fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Takes `ev`; false when full.
    pub fn push(&mut self, ev: LocalityEvent) -> bool {
        if self.events.len() < self.capacity {
            self.events.push_back(ev);
            true
        } else {
            false
        }
    }

    /// The oldest event, removed.
    pub fn pop(&mut self) -> Option<LocalityEvent> {
        self.events.pop_front()
    }

    /// The oldest event's sequence number.
    pub fn front_seq(&self) -> Option<u64> {
        self.events.front().map(|e| e.seq)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// No event waiting.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Forget every waiting event.
    pub fn clear(&mut self) {
        self.events.clear();
    }
}

/// Why the peer's template or locality entry was not installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerInstallError {
    /// No such service here.
    #[error("no such service")]
    NoService,
    /// A template for a service without persistence here.
    #[error("the service is not persistent")]
    NotPersistent,
    /// A template whose real server is not one of the service's.
    #[error("the real server is not one of the service's")]
    BadDest,
    /// The persistence table is full of live templates.
    #[error("persistence table full")]
    TemplatesFull,
    /// The scheduler refused the locality entry.
    #[error("locality entry: {0}")]
    Locality(#[from] InstallError),
}

fn ms(ns: u64) -> u32 {
    u32::try_from(ns / NS_PER_MS).unwrap_or(u32::MAX)
}

/// The sync record of template `e`, or `None` if its service or destination is gone.
pub(super) fn template_record(services: &ServiceSet, e: &PersistEntry) -> Option<ConnRecord> {
    let svc = services.service(e.key.svc)?;
    let dest = services.dest(e.dest)?;
    Some(ConnRecord {
        proto: svc.proto,
        client: Endpoint::new(e.key.client, 0),
        vip: svc.vip,
        real: dest.endpoint,
        method: dest.method,
        dest: dest.id,
        service: svc.id,
        state: ConnState::None,
        flags: ConnFlags::TEMPLATE,
        timeout_ms: ms(e.timeout),
        remaining_ms: ms(e.expires_in),
    })
}

/// Announces template `key` (just created) into `events`, numbered by `conns`.
pub(super) fn announce_template(
    conns: &mut ConnTable,
    events: &mut crate::conn::EventQueue,
    services: &ServiceSet,
    persist: &PersistenceTable,
    key: PersistKey,
    now: u64,
) {
    use crate::conn::ConnEventSink;
    let Some(record) = persist
        .entry(key, now)
        .and_then(|e| template_record(services, &e))
    else {
        return;
    };
    conns.emit_external(|seq| {
        events.emit(ConnEvent {
            kind: ConnEventKind::Created,
            seq,
            record,
        })
    });
}

/// Announces the change of `sched`'s entry for `addr` (service `svc`) into `queue`.
pub(super) fn announce_locality(
    conns: &mut ConnTable,
    queue: &mut LocalityQueue,
    svc: ServiceId,
    sched: &Scheduler,
    addr: Ipv4Addr,
    now: u64,
) {
    let change = match sched.locality_entry(addr, now) {
        Some(e) => LocalityChange::Set(e),
        None => LocalityChange::Removed(addr),
    };
    conns.emit_external(|seq| {
        queue.push(LocalityEvent {
            seq,
            service: svc,
            change,
        })
    });
}

impl Balancer {
    /// The locality events not yet taken by the sync daemon.
    pub fn locality_events_mut(&mut self) -> &mut LocalityQueue {
        &mut self.locality
    }

    /// This worker's persistence templates.
    pub fn templates(&self) -> &PersistenceTable {
        &self.persist
    }

    /// Housekeeping's sync part: ages the schedulers' locality tables and the templates,
    /// announcing what goes and the templates to refresh on the peer.
    pub(super) fn age_with_events(&mut self, now: u64) {
        let Self {
            conns,
            events,
            locality,
            schedulers,
            persist,
            services,
            ..
        } = self;
        for (i, s) in schedulers.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            let svc = ServiceId(u32::try_from(i).unwrap_or(u32::MAX));
            s.housekeeping_with(now, |addr| {
                conns.emit_external(|seq| {
                    locality.push(LocalityEvent {
                        seq,
                        service: svc,
                        change: LocalityChange::Removed(addr),
                    })
                });
            });
        }
        persist.expire_with(now, |c| {
            use crate::conn::ConnEventSink;
            let (kind, e) = match c {
                PersistChange::Refreshed(e) => (ConnEventKind::Refreshed, e),
                PersistChange::Expired(e) => (
                    ConnEventKind::Deleted(crate::conn::DeleteReason::Expired),
                    e,
                ),
            };
            if let Some(record) = template_record(services, &e) {
                conns.emit_external(|seq| events.emit(ConnEvent { kind, seq, record }));
            }
        });
    }

    /// The persistence key of a template record already mapped to this director's ids
    /// (service and destination), under the service's netmask here.
    pub fn template_key(&self, rec: &ConnRecord) -> Result<PersistKey, PeerInstallError> {
        let svc = self
            .services
            .service(rec.service)
            .ok_or(PeerInstallError::NoService)?;
        let p = svc.persistence.ok_or(PeerInstallError::NotPersistent)?;
        Ok(PersistKey::new(svc.id, rec.client.addr, p.netmask))
    }

    /// Installs the peer's template `rec` (its `service` and `dest` mapped to this director's
    /// ids) into the persistence table, so that this director's scheduler sends the client
    /// to the same real server: it expires `remaining_ms` + the peer grace from `now` unless
    /// used, and has no holders until connections bind to it.
    pub fn install_template(&mut self, rec: &ConnRecord, now: u64) -> Result<(), PeerInstallError> {
        let key = self.template_key(rec)?;
        let owned = self
            .services
            .dest(rec.dest)
            .is_some_and(|d| d.service == rec.service);
        if !owned {
            return Err(PeerInstallError::BadDest);
        }
        let entry = PersistEntry {
            key,
            dest: rec.dest,
            timeout: u64::from(rec.timeout_ms).saturating_mul(NS_PER_MS),
            expires_in: u64::from(rec.remaining_ms)
                .saturating_mul(NS_PER_MS)
                .saturating_add(self.conns.peer_grace_ns()),
            refs: 0,
        };
        self.persist
            .install(entry, now)
            .map_err(|_| PeerInstallError::TemplatesFull)
    }

    /// Removes the template of the peer's record `rec` (mapped as for
    /// [`install_template`](Self::install_template)). False if there was none.
    pub fn uninstall_template(&mut self, rec: &ConnRecord) -> bool {
        match self.template_key(rec) {
            Ok(key) => self.persist.uninstall(key),
            Err(_) => false,
        }
    }

    /// Removes template `key` (a snapshot's sweep). False if there was none.
    pub fn remove_template(&mut self, key: PersistKey) -> bool {
        self.persist.uninstall(key)
    }

    /// One step of the templates' walk for a full resync: the records of the live templates
    /// in slots `from..from + max_slots`, and where the next step starts (`None`: done).
    pub fn template_snapshot(
        &self,
        from: usize,
        max_slots: usize,
        now: u64,
        mut out: impl FnMut(ConnRecord),
    ) -> Option<usize> {
        let services = &self.services;
        self.persist.snapshot(from, max_slots, now, |e| {
            if let Some(r) = template_record(services, &e) {
                out(r);
            }
        })
    }

    /// Every lblc/lblcr entry of every service, for a full resync and a standby's mark.
    /// Allocates (between bursts only).
    pub fn locality_snapshot(&self, now: u64, mut out: impl FnMut(ServiceId, LocalityEntry)) {
        for (i, s) in self.schedulers.iter().enumerate() {
            let Some(s) = s else { continue };
            let svc = ServiceId(u32::try_from(i).unwrap_or(u32::MAX));
            for e in s.entries(now) {
                out(svc, e);
            }
        }
    }

    /// Installs the peer's locality entry into service `svc`'s scheduler (replacing the one
    /// for the same address). The entry's times are taken as given (the peer sends none:
    /// fresh from `now`).
    pub fn install_locality(
        &mut self,
        svc: ServiceId,
        entry: LocalityEntry,
        now: u64,
    ) -> Result<(), PeerInstallError> {
        let sched = self
            .schedulers
            .get_mut(svc.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(PeerInstallError::NoService)?;
        Ok(sched.install(entry, now)?)
    }

    /// Removes service `svc`'s locality entry for `addr`. False if there was none.
    pub fn remove_locality(&mut self, svc: ServiceId, addr: Ipv4Addr) -> bool {
        self.schedulers
            .get_mut(svc.0 as usize)
            .and_then(Option::as_mut)
            .is_some_and(|s| s.remove_locality(addr))
    }
}
