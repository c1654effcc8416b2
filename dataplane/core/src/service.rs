//! The virtual services and their destinations (real servers), as one immutable snapshot that
//! every worker lcore reads: lookup by (protocol, VIP, port), destinations by [`DestId`].
//!
//! Seed 002's example is the model: VIP:80 → 172.16.0.2:80 weight 1 and 172.16.0.3:8000
//! weight 2; VIP:21 → 172.16.0.3:21; every other port of the VIP is rejected (no service, no
//! forwarding).

use std::net::Ipv4Addr;

use crate::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};
use crate::sched::{
    DestState, Persistence, Scheduler, SchedulerError, SchedulerKind, SchedulerOptions,
};

/// A real server as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestSpec {
    /// Its address.
    pub addr: Ipv4Addr,
    /// Its port (equal to the virtual port for TUN and DR, which cannot map ports).
    pub port: u16,
    /// How requests reach it.
    pub method: ForwardMethod,
    /// Its weight; 0 quiesces it.
    pub weight: u32,
}

/// A virtual service as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// TCP or UDP.
    pub proto: Protocol,
    /// The virtual endpoint (VIP and port).
    pub vip: Endpoint,
    /// The scheduler.
    pub scheduler: SchedulerKind,
    /// Its options (flags such as sh-port).
    pub options: SchedulerOptions,
    /// Persistence (ipvsadm -p), if any.
    pub persistence: Option<Persistence>,
    /// The real servers.
    pub dests: Vec<DestSpec>,
}

/// A service in the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Its handle.
    pub id: ServiceId,
    /// TCP or UDP.
    pub proto: Protocol,
    /// VIP:port.
    pub vip: Endpoint,
    /// The scheduler.
    pub scheduler: SchedulerKind,
    /// Its options.
    pub options: SchedulerOptions,
    /// Persistence, if any.
    pub persistence: Option<Persistence>,
    /// Its destinations: `ServiceSet::dests()[first..first + count]`.
    pub first_dest: u32,
    /// How many destinations it has.
    pub dest_count: u32,
}

/// A destination in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dest {
    /// Its handle (stable across configuration changes, see [`ServiceSet::with_previous`]).
    pub id: DestId,
    /// The service it belongs to.
    pub service: ServiceId,
    /// Address and port.
    pub endpoint: Endpoint,
    /// Forwarding method.
    pub method: ForwardMethod,
    /// Weight.
    pub weight: u32,
}

/// A service configuration the director refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// Two services with the same protocol, VIP and port.
    #[error("service {proto:?} {vip} is defined twice")]
    Duplicate {
        /// Protocol.
        proto: Protocol,
        /// VIP:port.
        vip: Endpoint,
    },
    /// A real server listed twice in one service.
    #[error("service {vip}: real server {dest} is listed twice")]
    DuplicateDest {
        /// The service.
        vip: Endpoint,
        /// The server.
        dest: Endpoint,
    },
    /// TUN or DR with a port different from the virtual port.
    #[error("service {vip}: real server {dest} uses {method:?}, which cannot map port {} to {}", vip.port, dest.port)]
    PortMapping {
        /// The service.
        vip: Endpoint,
        /// The server.
        dest: Endpoint,
        /// Its method.
        method: ForwardMethod,
    },
    /// The scheduler refused the configuration.
    #[error("service {vip}: {source}")]
    Scheduler {
        /// The service.
        vip: Endpoint,
        /// Why.
        source: SchedulerError,
    },
    /// Every destination id below the limit is used or still referenced by connections.
    #[error("no free real-server slot: all {max} are in use or still referenced by connections")]
    DestSlotsExhausted {
        /// Supported.
        max: usize,
    },
    /// More destinations than the connection table was sized for.
    #[error("{count} real servers configured, at most {max} are supported")]
    TooManyDests {
        /// Configured.
        count: usize,
        /// Supported.
        max: usize,
    },
}

/// All services and destinations, immutable; replaced as a whole when the configuration changes.
///
/// # Stable handles
/// Connections, persistence templates and per-destination counters refer to services and
/// destinations by [`ServiceId`] and [`DestId`], so a handle must keep naming the same thing
/// across configuration changes. [`ServiceSet::new`] numbers densely in configuration order;
/// [`ServiceSet::with_previous`] builds the next snapshot from the running one: a service
/// keeps its id while its (protocol, VIP, port) exists, a real server keeps its id while
/// (service, server endpoint) exists, and a new one takes the lowest slot that is neither used
/// by the new set nor reported still in use by the caller (a deleted server's slot stays
/// retired while connections still reference it). Ids therefore may have gaps: iterate with
/// [`ServiceSet::services`] / [`ServiceSet::dests`], look up by id with
/// [`ServiceSet::service`] / [`ServiceSet::dest`].
#[derive(Debug, Clone, Default)]
pub struct ServiceSet {
    /// In configuration order.
    services: Vec<Service>,
    /// Grouped by service, in configuration order.
    dests: Vec<Dest>,
    index: hashbrown::HashMap<(Protocol, Endpoint), ServiceId>,
    /// Position in `services` by `ServiceId.0` (`NO_SLOT` for a free id).
    service_pos: Vec<u32>,
    /// Position in `dests` by `DestId.0` (`NO_SLOT` for a free id).
    dest_pos: Vec<u32>,
    /// Every VIP address, sorted, once: [`is_vip`](Self::is_vip) is asked for every NAT
    /// reply, so it must not scan the services.
    vip_addrs: Vec<u32>,
}

/// An id slot that names nothing in this snapshot.
const NO_SLOT: u32 = u32::MAX;

/// The lowest slot at or after `*next` and below `limit` that `taken` refuses; advances
/// `*next` past it.
fn lowest_free(next: &mut u32, limit: u32, taken: impl Fn(u32) -> bool) -> Option<u32> {
    while *next < limit && taken(*next) {
        *next += 1;
    }
    let id = *next;
    (id < limit).then(|| {
        *next += 1;
        id
    })
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl ServiceSet {
    /// Builds and checks the snapshot (allocates), numbering services and destinations
    /// densely in configuration order. `max_dests` bounds the destination ids (the
    /// per-destination counters are sized by it).
    pub fn new(specs: &[ServiceSpec], max_dests: usize) -> Result<Self, ServiceError> {
        Self::build(specs, max_dests, None, &|_| false, &|_| false)
    }

    /// Builds the snapshot that replaces `prev` (see [Stable handles](ServiceSet#stable-handles)):
    /// unchanged services and servers keep their ids; new ones take the lowest id that the
    /// new set does not use and `service_in_use` / `dest_in_use` do not report (e.g. slots
    /// still referenced by connections of a deleted server).
    pub fn with_previous(
        specs: &[ServiceSpec],
        max_dests: usize,
        prev: &ServiceSet,
        service_in_use: impl Fn(ServiceId) -> bool,
        dest_in_use: impl Fn(DestId) -> bool,
    ) -> Result<Self, ServiceError> {
        Self::build(specs, max_dests, Some(prev), &service_in_use, &dest_in_use)
    }

    fn build(
        specs: &[ServiceSpec],
        max_dests: usize,
        prev: Option<&ServiceSet>,
        service_in_use: &dyn Fn(ServiceId) -> bool,
        dest_in_use: &dyn Fn(DestId) -> bool,
    ) -> Result<Self, ServiceError> {
        let count: usize = specs.iter().map(|s| s.dests.len()).sum();
        if count > max_dests {
            return Err(ServiceError::TooManyDests {
                count,
                max: max_dests,
            });
        }
        Self::check(specs)?;
        // Ids kept from the previous snapshot.
        let mut svc_ids: Vec<Option<ServiceId>> = Vec::with_capacity(specs.len());
        let mut dest_ids: Vec<Vec<Option<DestId>>> = Vec::with_capacity(specs.len());
        for spec in specs {
            let old = prev.and_then(|p| p.lookup(spec.proto, spec.vip).map(|s| (p, s)));
            svc_ids.push(old.map(|(_, s)| s.id));
            dest_ids.push(
                spec.dests
                    .iter()
                    .map(|d| {
                        let ep = Endpoint::new(d.addr, d.port);
                        old.and_then(|(p, s)| p.service_dests(s).iter().find(|x| x.endpoint == ep))
                            .map(|x| x.id)
                    })
                    .collect(),
            );
        }
        // New ids: the lowest slot neither kept nor still in use.
        let kept_svc: hashbrown::HashSet<u32> = svc_ids.iter().flatten().map(|i| i.0).collect();
        let kept_dest: hashbrown::HashSet<u32> =
            dest_ids.iter().flatten().flatten().map(|i| i.0).collect();
        let mut next = 0;
        for id in &mut svc_ids {
            if id.is_none() {
                *id = lowest_free(&mut next, NO_SLOT, |i| {
                    kept_svc.contains(&i) || service_in_use(ServiceId(i))
                })
                .map(ServiceId);
            }
        }
        let mut next = 0;
        for ids in &mut dest_ids {
            for id in ids.iter_mut() {
                if id.is_none() {
                    let i = lowest_free(&mut next, to_u32(max_dests), |i| {
                        kept_dest.contains(&i) || dest_in_use(DestId(i))
                    })
                    .ok_or(ServiceError::DestSlotsExhausted { max: max_dests })?;
                    *id = Some(DestId(i));
                }
            }
        }
        let mut set = ServiceSet {
            services: Vec::with_capacity(specs.len()),
            dests: Vec::with_capacity(count),
            index: hashbrown::HashMap::with_capacity(specs.len()),
            service_pos: Vec::new(),
            dest_pos: Vec::new(),
            vip_addrs: Vec::new(),
        };
        for ((spec, id), ids) in specs.iter().zip(svc_ids).zip(dest_ids) {
            let id = id.unwrap_or(ServiceId(NO_SLOT));
            set.index.insert((spec.proto, spec.vip), id);
            let first = set.dests.len();
            for (d, did) in spec.dests.iter().zip(ids) {
                set.dests.push(Dest {
                    id: did.unwrap_or(DestId(NO_SLOT)),
                    service: id,
                    endpoint: Endpoint::new(d.addr, d.port),
                    method: d.method,
                    weight: d.weight,
                });
            }
            let svc = Service {
                id,
                proto: spec.proto,
                vip: spec.vip,
                scheduler: spec.scheduler,
                options: spec.options,
                persistence: spec.persistence,
                first_dest: to_u32(first),
                dest_count: to_u32(spec.dests.len()),
            };
            // Build the scheduler once here so a bad configuration is refused up front.
            Scheduler::new(svc.scheduler, svc.options, &set.dest_states(&svc)).map_err(
                |source| ServiceError::Scheduler {
                    vip: spec.vip,
                    source,
                },
            )?;
            set.services.push(svc);
        }
        let slots = |ids: &mut dyn Iterator<Item = u32>| -> Vec<u32> {
            let ids: Vec<u32> = ids.collect();
            let len = ids.iter().map(|i| *i as usize + 1).max().unwrap_or(0);
            let mut pos = vec![NO_SLOT; len];
            for (p, i) in ids.iter().enumerate() {
                pos[*i as usize] = to_u32(p);
            }
            pos
        };
        set.service_pos = slots(&mut set.services.iter().map(|s| s.id.0));
        set.dest_pos = slots(&mut set.dests.iter().map(|d| d.id.0));
        set.vip_addrs = set.services.iter().map(|s| s.vip.addr.to_bits()).collect();
        set.vip_addrs.sort_unstable();
        set.vip_addrs.dedup();
        Ok(set)
    }

    /// The checks that need no ids: duplicates and port mapping.
    fn check(specs: &[ServiceSpec]) -> Result<(), ServiceError> {
        let mut keys = hashbrown::HashSet::with_capacity(specs.len());
        for spec in specs {
            if !keys.insert((spec.proto, spec.vip)) {
                return Err(ServiceError::Duplicate {
                    proto: spec.proto,
                    vip: spec.vip,
                });
            }
            for (i, d) in spec.dests.iter().enumerate() {
                let endpoint = Endpoint::new(d.addr, d.port);
                if spec.dests[..i]
                    .iter()
                    .any(|x| Endpoint::new(x.addr, x.port) == endpoint)
                {
                    return Err(ServiceError::DuplicateDest {
                        vip: spec.vip,
                        dest: endpoint,
                    });
                }
                if d.method != ForwardMethod::Nat && d.port != spec.vip.port {
                    return Err(ServiceError::PortMapping {
                        vip: spec.vip,
                        dest: endpoint,
                        method: d.method,
                    });
                }
            }
        }
        Ok(())
    }

    /// The service for a packet to `vip` (protocol, VIP, port), if any.
    pub fn lookup(&self, proto: Protocol, vip: Endpoint) -> Option<&Service> {
        self.index
            .get(&(proto, vip))
            .and_then(|id| self.service(*id))
    }

    /// A service by handle.
    pub fn service(&self, id: ServiceId) -> Option<&Service> {
        let pos = *self.service_pos.get(id.0 as usize)?;
        self.services.get(pos as usize)
    }

    /// One more than the highest service id in use (the size of arrays indexed by id).
    pub fn service_slots(&self) -> usize {
        self.service_pos.len()
    }

    /// One more than the highest destination id in use (the size of arrays indexed by id).
    pub fn dest_slots(&self) -> usize {
        self.dest_pos.len()
    }

    /// Whether `addr` is the VIP of any service.
    pub fn is_vip(&self, addr: Ipv4Addr) -> bool {
        self.vip_addrs.binary_search(&addr.to_bits()).is_ok()
    }

    /// Every service, in configuration order (ids may have gaps: use [`ServiceSet::service`]).
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Every destination, grouped by service in configuration order (ids may have gaps: use
    /// [`ServiceSet::dest`]).
    pub fn dests(&self) -> &[Dest] {
        &self.dests
    }

    /// A destination by handle.
    pub fn dest(&self, id: DestId) -> Option<&Dest> {
        let pos = *self.dest_pos.get(id.0 as usize)?;
        self.dests.get(pos as usize)
    }

    /// The destinations of `svc`.
    pub fn service_dests(&self, svc: &Service) -> &[Dest] {
        let first = svc.first_dest as usize;
        self.dests
            .get(first..first + svc.dest_count as usize)
            .unwrap_or(&[])
    }

    /// The scheduler's view of `svc`'s destinations with zero connection counts (the engine
    /// fills in the counts before each decision).
    pub fn dest_states(&self, svc: &Service) -> Vec<DestState> {
        self.service_dests(svc)
            .iter()
            .map(|d| DestState::new(d.id, d.endpoint.addr, d.endpoint.port, d.weight))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(a: [u8; 4], port: u16) -> Endpoint {
        Endpoint::new(Ipv4Addr::from(a), port)
    }

    fn dest(a: [u8; 4], port: u16, method: ForwardMethod, weight: u32) -> DestSpec {
        DestSpec {
            addr: Ipv4Addr::from(a),
            port,
            method,
            weight,
        }
    }

    fn svc(port: u16, scheduler: SchedulerKind, dests: Vec<DestSpec>) -> ServiceSpec {
        ServiceSpec {
            proto: Protocol::Tcp,
            vip: ep([202, 103, 106, 5], port),
            scheduler,
            options: SchedulerOptions::default(),
            persistence: None,
            dests,
        }
    }

    /// Seed 002: two services on one VIP, every other port rejected.
    #[test]
    fn seed_002_example() {
        let set = ServiceSet::new(
            &[
                svc(
                    80,
                    SchedulerKind::Wrr,
                    vec![
                        dest([172, 16, 0, 2], 80, ForwardMethod::Nat, 1),
                        dest([172, 16, 0, 3], 8000, ForwardMethod::Nat, 2),
                    ],
                ),
                svc(
                    21,
                    SchedulerKind::Rr,
                    vec![dest([172, 16, 0, 3], 21, ForwardMethod::Nat, 1)],
                ),
            ],
            16,
        )
        .expect("valid");
        let web = set
            .lookup(Protocol::Tcp, ep([202, 103, 106, 5], 80))
            .expect("port 80");
        let ds: Vec<(Endpoint, u32)> = set
            .service_dests(web)
            .iter()
            .map(|d| (d.endpoint, d.weight))
            .collect();
        assert_eq!(
            ds,
            [(ep([172, 16, 0, 2], 80), 1), (ep([172, 16, 0, 3], 8000), 2)]
        );
        let ftp = set
            .lookup(Protocol::Tcp, ep([202, 103, 106, 5], 21))
            .expect("port 21");
        assert_eq!(set.service_dests(ftp)[0].id, DestId(2));
        assert!(
            set.lookup(Protocol::Tcp, ep([202, 103, 106, 5], 23))
                .is_none(),
            "other ports rejected"
        );
        assert!(
            set.lookup(Protocol::Udp, ep([202, 103, 106, 5], 80))
                .is_none(),
            "other protocol rejected"
        );
        assert!(set.is_vip(Ipv4Addr::new(202, 103, 106, 5)));
        assert_eq!(set.dest(DestId(1)).map(|d| d.service), Some(ServiceId(0)));
    }

    #[test]
    fn refusals_name_the_problem() {
        let twice = svc(80, SchedulerKind::Rr, vec![]);
        assert_eq!(
            ServiceSet::new(&[twice.clone(), twice], 16)
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("service Tcp 202.103.106.5:80 is defined twice")
        );
        let dr = svc(
            80,
            SchedulerKind::Rr,
            vec![dest([172, 16, 0, 2], 8080, ForwardMethod::DirectRoute, 1)],
        );
        assert_eq!(
            ServiceSet::new(&[dr], 16)
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some(
                "service 202.103.106.5:80: real server 172.16.0.2:8080 uses DirectRoute, which cannot map port 80 to 8080"
            )
        );
        let many = svc(
            80,
            SchedulerKind::Rr,
            (0..5)
                .map(|i| dest([172, 16, 0, i], 80, ForwardMethod::Nat, 1))
                .collect(),
        );
        assert!(matches!(
            ServiceSet::new(&[many], 4),
            Err(ServiceError::TooManyDests { count: 5, max: 4 })
        ));
        let dup = svc(
            80,
            SchedulerKind::Rr,
            vec![dest([172, 16, 0, 2], 80, ForwardMethod::Nat, 1); 2],
        );
        assert!(matches!(
            ServiceSet::new(&[dup], 16),
            Err(ServiceError::DuplicateDest { .. })
        ));
    }

    /// (virtual port, service id, [(server, dest id)]) per service.
    type Ids = Vec<(u16, u32, Vec<(Endpoint, u32)>)>;

    fn ids(set: &ServiceSet) -> Ids {
        set.services()
            .iter()
            .map(|s| {
                (
                    s.vip.port,
                    s.id.0,
                    set.service_dests(s)
                        .iter()
                        .map(|d| (d.endpoint, d.id.0))
                        .collect(),
                )
            })
            .collect()
    }

    fn nat(last: u8, port: u16) -> DestSpec {
        dest([172, 16, 0, last], port, ForwardMethod::Nat, 1)
    }

    #[test]
    fn ids_survive_changes_and_new_ones_take_the_lowest_free_slot() {
        let a = svc(80, SchedulerKind::Wrr, vec![nat(2, 80), nat(3, 8000)]);
        let b = svc(21, SchedulerKind::Rr, vec![nat(3, 21)]);
        let c = svc(443, SchedulerKind::Rr, vec![nat(4, 443), nat(5, 443)]);
        let v1 = ServiceSet::new(&[a.clone(), b.clone(), c.clone()], 16).expect("valid");
        assert_eq!(
            ids(&v1),
            [
                (
                    80,
                    0,
                    vec![(ep([172, 16, 0, 2], 80), 0), (ep([172, 16, 0, 3], 8000), 1)]
                ),
                (21, 1, vec![(ep([172, 16, 0, 3], 21), 2)]),
                (
                    443,
                    2,
                    vec![(ep([172, 16, 0, 4], 443), 3), (ep([172, 16, 0, 5], 443), 4)]
                ),
            ]
        );
        // Delete service 21 and server .2 of port 80; reorder; add a server to 443.
        let mut a2 = a.clone();
        a2.dests.remove(0);
        let mut c2 = c.clone();
        c2.dests.insert(0, nat(6, 443));
        let none = |_: DestId| false;
        let v2 = ServiceSet::with_previous(&[c2.clone(), a2.clone()], 16, &v1, |_| false, none)
            .expect("valid");
        assert_eq!(
            ids(&v2),
            [
                (
                    443,
                    2,
                    vec![
                        (ep([172, 16, 0, 6], 443), 0),
                        (ep([172, 16, 0, 4], 443), 3),
                        (ep([172, 16, 0, 5], 443), 4)
                    ]
                ),
                (80, 0, vec![(ep([172, 16, 0, 3], 8000), 1)]),
            ]
        );
        assert_eq!(
            v2.dest(DestId(3)).map(|d| d.endpoint),
            Some(ep([172, 16, 0, 4], 443))
        );
        assert!(v2.dest(DestId(2)).is_none(), "a freed slot names nothing");
        assert_eq!(v2.service(ServiceId(2)).map(|s| s.vip.port), Some(443));
        assert!(v2.service(ServiceId(1)).is_none());
        assert_eq!((v2.service_slots(), v2.dest_slots()), (3, 5));
        // Slots 2 (dest) and 1 (service) are still referenced by connections: retired.
        let d = svc(22, SchedulerKind::Rr, vec![nat(7, 22), nat(8, 22)]);
        let v3 = ServiceSet::with_previous(
            &[c2, a2, d],
            16,
            &v2,
            |s| s == ServiceId(1),
            |x| x == DestId(2),
        )
        .expect("valid");
        assert_eq!(
            ids(&v3)[2],
            (
                22,
                3,
                vec![(ep([172, 16, 0, 7], 22), 5), (ep([172, 16, 0, 8], 22), 6)]
            )
        );
        // Same key again after deletion: a new id, not a resurrection of the old one's.
        let v4 = ServiceSet::with_previous(&[b], 16, &v3, |_| false, |_| false).expect("valid");
        assert_eq!(ids(&v4), [(21, 0, vec![(ep([172, 16, 0, 3], 21), 0)])]);
    }

    #[test]
    fn a_server_moving_to_another_service_gets_a_new_id_and_slots_are_bounded() {
        let a = svc(80, SchedulerKind::Rr, vec![nat(2, 80)]);
        let b = svc(81, SchedulerKind::Rr, vec![]);
        let v1 = ServiceSet::new(&[a, b], 2).expect("valid");
        let a2 = svc(80, SchedulerKind::Rr, vec![]);
        let b2 = svc(81, SchedulerKind::Rr, vec![nat(2, 80)]);
        let v2 = ServiceSet::with_previous(&[a2.clone(), b2.clone()], 2, &v1, |_| false, |_| false)
            .expect("valid");
        assert_eq!(ids(&v2)[1].2, [(ep([172, 16, 0, 2], 80), 0)]);
        let v2 = ServiceSet::with_previous(&[a2, b2], 2, &v1, |_| false, |d| d == DestId(0))
            .expect("valid");
        assert_eq!(ids(&v2)[1].2, [(ep([172, 16, 0, 2], 80), 1)]);
        let b3 = svc(81, SchedulerKind::Rr, vec![nat(9, 80)]);
        assert_eq!(
            ServiceSet::with_previous(&[b3], 2, &v2, |_| false, |_| true).err(),
            Some(ServiceError::DestSlotsExhausted { max: 2 })
        );
    }
}
