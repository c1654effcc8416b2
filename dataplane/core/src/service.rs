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
    /// Its handle (its index in [`ServiceSet::dests`]).
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
#[derive(Debug, Clone, Default)]
pub struct ServiceSet {
    services: Vec<Service>,
    dests: Vec<Dest>,
    index: hashbrown::HashMap<(Protocol, Endpoint), ServiceId>,
}

impl ServiceSet {
    /// Builds and checks the snapshot (allocates). `max_dests` bounds the destination count
    /// (the per-destination counters are sized by it).
    pub fn new(specs: &[ServiceSpec], max_dests: usize) -> Result<Self, ServiceError> {
        let count: usize = specs.iter().map(|s| s.dests.len()).sum();
        if count > max_dests {
            return Err(ServiceError::TooManyDests {
                count,
                max: max_dests,
            });
        }
        let mut set = ServiceSet {
            services: Vec::with_capacity(specs.len()),
            dests: Vec::with_capacity(count),
            index: hashbrown::HashMap::with_capacity(specs.len()),
        };
        for spec in specs {
            let id = ServiceId(u32::try_from(set.services.len()).unwrap_or(u32::MAX));
            if set.index.insert((spec.proto, spec.vip), id).is_some() {
                return Err(ServiceError::Duplicate {
                    proto: spec.proto,
                    vip: spec.vip,
                });
            }
            let first = set.dests.len();
            for d in &spec.dests {
                let endpoint = Endpoint::new(d.addr, d.port);
                if set.dests[first..].iter().any(|x| x.endpoint == endpoint) {
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
                let did = DestId(u32::try_from(set.dests.len()).unwrap_or(u32::MAX));
                set.dests.push(Dest {
                    id: did,
                    service: id,
                    endpoint,
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
                first_dest: u32::try_from(first).unwrap_or(u32::MAX),
                dest_count: u32::try_from(spec.dests.len()).unwrap_or(u32::MAX),
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
        Ok(set)
    }

    /// The service for a packet to `vip` (protocol, VIP, port), if any.
    pub fn lookup(&self, proto: Protocol, vip: Endpoint) -> Option<&Service> {
        self.index
            .get(&(proto, vip))
            .and_then(|id| self.services.get(id.0 as usize))
    }

    /// Whether `addr` is the VIP of any service.
    pub fn is_vip(&self, addr: Ipv4Addr) -> bool {
        self.services.iter().any(|s| s.vip.addr == addr)
    }

    /// Every service, indexed by [`ServiceId`].
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Every destination, indexed by [`DestId`].
    pub fn dests(&self) -> &[Dest] {
        &self.dests
    }

    /// A destination by handle.
    pub fn dest(&self, id: DestId) -> Option<&Dest> {
        self.dests.get(id.0 as usize)
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
}
