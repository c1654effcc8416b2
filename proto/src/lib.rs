//! Every `.proto` file of Tandem and the prost/tonic code generated from it (with `protox`,
//! no system `protoc`), plus the conversions between the wire messages and the core's domain
//! types.
//!
//! The wire types are deliberately loose (addresses are strings, ports `uint32`) so that
//! `grpcurl` users can type them; the [`TryFrom`] conversions here are the one place where
//! they are checked, and every refusal says which field was wrong and why.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::str::FromStr;

use tandem_core::lb::{Endpoint, ForwardMethod, Protocol};
use tandem_core::sched::{Persistence, SchedulerKind, SchedulerOptions};
use tandem_core::service::{DestSpec, ServiceSpec};

/// `tandem.admin.v1`: the administration API each dataplane serves.
pub mod admin {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("tandem.admin.v1");
}

/// `tandem.sync.v1`: the director↔director replication and heartbeat link (`Peer`) and the
/// syncd↔dataplane link (`Local`). The state machines that speak it are in `tandem-syncd`.
pub mod sync {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("tandem.sync.v1");
}

pub mod conn;
pub mod local;

/// The encoded `FileDescriptorSet` of every `.proto` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tandem_descriptor");

/// The scheduler a service gets when none is named (ipvsadm's default).
pub const DEFAULT_SCHEDULER: SchedulerKind = SchedulerKind::Wlc;

/// Nanoseconds per second, for persistence timeouts.
const NS_PER_S: u64 = 1_000_000_000;

/// A wire message the domain refuses. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required field is absent.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// Not a dotted-quad IPv4 address.
    #[error("{field}: `{value}` is not an IPv4 address")]
    Address {
        /// Which field.
        field: &'static str,
        /// What was given.
        value: String,
    },
    /// A port outside 1..=65535.
    #[error("{field}: port {value} is out of range (1-65535)")]
    Port {
        /// Which field.
        field: &'static str,
        /// What was given.
        value: u32,
    },
    /// An enum left unspecified or out of range.
    #[error("{field}: {value} is not a valid {field}")]
    Enum {
        /// Which field.
        field: &'static str,
        /// What was given.
        value: i32,
    },
    /// A scheduler name or flag the core refuses.
    #[error("{0}")]
    Scheduler(String),
    /// A persistence netmask that is not contiguous.
    #[error("persistence netmask `{0}` is not a contiguous IPv4 netmask")]
    Netmask(String),
    /// A weight above the kernel's limit.
    #[error("weight {0} is out of range (0-65535)")]
    Weight(u32),
}

/// Most weight a server may have (ipvsadm's limit).
pub const MAX_WEIGHT: u32 = 65_535;

fn addr(field: &'static str, value: &str) -> Result<Ipv4Addr, ConvertError> {
    Ipv4Addr::from_str(value.trim()).map_err(|_| ConvertError::Address {
        field,
        value: value.to_string(),
    })
}

fn port(field: &'static str, value: u32) -> Result<u16, ConvertError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or(ConvertError::Port { field, value })
}

/// The wire protocol enum as the core's.
pub fn protocol(value: i32) -> Result<Protocol, ConvertError> {
    match admin::Protocol::try_from(value) {
        Ok(admin::Protocol::Tcp) => Ok(Protocol::Tcp),
        Ok(admin::Protocol::Udp) => Ok(Protocol::Udp),
        _ => Err(ConvertError::Enum {
            field: "protocol",
            value,
        }),
    }
}

/// The core's protocol on the wire.
pub fn protocol_to_wire(p: Protocol) -> admin::Protocol {
    match p {
        Protocol::Tcp => admin::Protocol::Tcp,
        Protocol::Udp => admin::Protocol::Udp,
    }
}

/// The wire forwarding method as the core's.
pub fn method(value: i32) -> Result<ForwardMethod, ConvertError> {
    match admin::ForwardMethod::try_from(value) {
        Ok(admin::ForwardMethod::Nat) => Ok(ForwardMethod::Nat),
        Ok(admin::ForwardMethod::Tunnel) => Ok(ForwardMethod::Tunnel),
        Ok(admin::ForwardMethod::DirectRoute) => Ok(ForwardMethod::DirectRoute),
        _ => Err(ConvertError::Enum {
            field: "forwarding method",
            value,
        }),
    }
}

/// The core's forwarding method on the wire.
pub fn method_to_wire(m: ForwardMethod) -> admin::ForwardMethod {
    match m {
        ForwardMethod::Nat => admin::ForwardMethod::Nat,
        ForwardMethod::Tunnel => admin::ForwardMethod::Tunnel,
        ForwardMethod::DirectRoute => admin::ForwardMethod::DirectRoute,
    }
}

/// A service's identity in the core's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// TCP or UDP.
    pub proto: Protocol,
    /// VIP and port.
    pub vip: Endpoint,
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = match self.proto {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        };
        write!(f, "{p} {}", self.vip)
    }
}

impl TryFrom<&admin::ServiceKey> for ServiceKey {
    type Error = ConvertError;

    fn try_from(k: &admin::ServiceKey) -> Result<Self, Self::Error> {
        Ok(ServiceKey {
            proto: protocol(k.protocol)?,
            vip: Endpoint::new(
                addr("service address", &k.address)?,
                port("service port", k.port)?,
            ),
        })
    }
}

impl From<ServiceKey> for admin::ServiceKey {
    fn from(k: ServiceKey) -> Self {
        admin::ServiceKey {
            protocol: protocol_to_wire(k.proto).into(),
            address: k.vip.addr.to_string(),
            port: u32::from(k.vip.port),
        }
    }
}

impl TryFrom<&admin::ServerKey> for Endpoint {
    type Error = ConvertError;

    fn try_from(k: &admin::ServerKey) -> Result<Self, Self::Error> {
        Ok(Endpoint::new(
            addr("server address", &k.address)?,
            port("server port", k.port)?,
        ))
    }
}

/// A real server's endpoint on the wire.
pub fn server_key(e: Endpoint) -> admin::ServerKey {
    admin::ServerKey {
        address: e.addr.to_string(),
        port: u32::from(e.port),
    }
}

impl TryFrom<&admin::ServerConfig> for DestSpec {
    type Error = ConvertError;

    fn try_from(s: &admin::ServerConfig) -> Result<Self, Self::Error> {
        let key = s.key.as_ref().ok_or(ConvertError::Missing("server key"))?;
        let ep = Endpoint::try_from(key)?;
        if s.weight > MAX_WEIGHT {
            return Err(ConvertError::Weight(s.weight));
        }
        Ok(DestSpec {
            addr: ep.addr,
            port: ep.port,
            method: method(s.method)?,
            weight: s.weight,
        })
    }
}

impl From<&DestSpec> for admin::ServerConfig {
    fn from(d: &DestSpec) -> Self {
        admin::ServerConfig {
            key: Some(server_key(Endpoint::new(d.addr, d.port))),
            method: method_to_wire(d.method).into(),
            weight: d.weight,
        }
    }
}

/// The scheduler, its options and persistence a wire service config names.
pub fn scheduling(
    scheduler: &str,
    flags: &[String],
    persistence_timeout_s: u32,
    persistence_netmask: &str,
) -> Result<(SchedulerKind, SchedulerOptions, Option<Persistence>), ConvertError> {
    let kind = if scheduler.trim().is_empty() {
        DEFAULT_SCHEDULER
    } else {
        SchedulerKind::from_str(scheduler.trim())
            .map_err(|e| ConvertError::Scheduler(e.to_string()))?
    };
    let options = SchedulerOptions::with_flags(kind, &flags.join(","))
        .map_err(|e| ConvertError::Scheduler(e.to_string()))?;
    let netmask = if persistence_netmask.trim().is_empty() {
        Ipv4Addr::BROADCAST
    } else {
        let m = addr("persistence netmask", persistence_netmask)?;
        let bits = m.to_bits();
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return Err(ConvertError::Netmask(persistence_netmask.to_string()));
        }
        m
    };
    let persistence = (persistence_timeout_s > 0).then(|| Persistence {
        timeout: u64::from(persistence_timeout_s) * NS_PER_S,
        netmask,
    });
    Ok((kind, options, persistence))
}

impl TryFrom<&admin::ServiceDefinition> for ServiceSpec {
    type Error = ConvertError;

    fn try_from(d: &admin::ServiceDefinition) -> Result<Self, Self::Error> {
        let c = d
            .config
            .as_ref()
            .ok_or(ConvertError::Missing("service config"))?;
        let key =
            ServiceKey::try_from(c.key.as_ref().ok_or(ConvertError::Missing("service key"))?)?;
        let (scheduler, options, persistence) = scheduling(
            &c.scheduler,
            &c.flags,
            c.persistence_timeout_s,
            &c.persistence_netmask,
        )?;
        let dests = d
            .servers
            .iter()
            .map(DestSpec::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ServiceSpec {
            proto: key.proto,
            vip: key.vip,
            scheduler,
            options,
            persistence,
            dests,
        })
    }
}

/// A service's settings on the wire.
pub fn service_config(s: &ServiceSpec) -> admin::ServiceConfig {
    let persistence_timeout_s = s.persistence.map_or(0, |p| {
        u32::try_from(p.timeout / NS_PER_S).unwrap_or(u32::MAX)
    });
    let persistence_netmask = s
        .persistence
        .map(|p| p.netmask)
        .filter(|m| *m != Ipv4Addr::BROADCAST)
        .map(|m| m.to_string())
        .unwrap_or_default();
    admin::ServiceConfig {
        key: Some(
            ServiceKey {
                proto: s.proto,
                vip: s.vip,
            }
            .into(),
        ),
        scheduler: s.scheduler.name().to_string(),
        flags: s
            .options
            .flags(s.scheduler)
            .iter()
            .map(|f| f.to_string())
            .collect(),
        persistence_timeout_s,
        persistence_netmask,
    }
}

impl From<&ServiceSpec> for admin::ServiceDefinition {
    fn from(s: &ServiceSpec) -> Self {
        admin::ServiceDefinition {
            config: Some(service_config(s)),
            servers: s.dests.iter().map(admin::ServerConfig::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn web() -> ServiceSpec {
        ServiceSpec {
            proto: Protocol::Tcp,
            vip: Endpoint::new(Ipv4Addr::new(203, 0, 113, 10), 80),
            scheduler: SchedulerKind::Wrr,
            options: SchedulerOptions::default(),
            persistence: None,
            dests: vec![
                DestSpec {
                    addr: Ipv4Addr::new(172, 16, 0, 2),
                    port: 80,
                    method: ForwardMethod::Nat,
                    weight: 1,
                },
                DestSpec {
                    addr: Ipv4Addr::new(172, 16, 0, 3),
                    port: 8000,
                    method: ForwardMethod::Nat,
                    weight: 2,
                },
            ],
        }
    }

    #[test]
    fn service_round_trips_through_the_wire() {
        let mut specs = vec![web()];
        let mut mh = web();
        mh.proto = Protocol::Udp;
        mh.scheduler = SchedulerKind::Mh;
        mh.options =
            SchedulerOptions::with_flags(SchedulerKind::Mh, "mh-port,mh-fallback").expect("flags");
        mh.persistence = Some(Persistence {
            timeout: 300 * NS_PER_S,
            netmask: Ipv4Addr::new(255, 255, 255, 0),
        });
        mh.dests[0].method = ForwardMethod::Tunnel;
        mh.dests[1].method = ForwardMethod::DirectRoute;
        mh.dests[1].port = 80;
        specs.push(mh);
        for spec in specs {
            let wire = admin::ServiceDefinition::from(&spec);
            let bytes = wire.encode_to_vec();
            let decoded = admin::ServiceDefinition::decode(bytes.as_slice()).expect("decodes");
            assert_eq!(decoded, wire);
            assert_eq!(ServiceSpec::try_from(&decoded), Ok(spec));
        }
    }

    fn definition(scheduler: &str, address: &str, port_: u32) -> admin::ServiceDefinition {
        admin::ServiceDefinition {
            config: Some(admin::ServiceConfig {
                key: Some(admin::ServiceKey {
                    protocol: admin::Protocol::Tcp.into(),
                    address: address.into(),
                    port: port_,
                }),
                scheduler: scheduler.into(),
                ..Default::default()
            }),
            servers: vec![],
        }
    }

    #[test]
    fn empty_scheduler_means_wlc() {
        let spec = ServiceSpec::try_from(&definition("", "10.0.0.1", 80)).expect("valid");
        assert_eq!(spec.scheduler, SchedulerKind::Wlc);
    }

    #[test]
    fn bad_input_is_refused_with_the_field_named() {
        let e = ServiceSpec::try_from(&definition("wrrr", "10.0.0.1", 80)).unwrap_err();
        assert!(e.to_string().contains("unknown scheduler `wrrr`"), "{e}");
        let e = ServiceSpec::try_from(&definition("rr", "10.0.0.300", 80)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service address: `10.0.0.300` is not an IPv4 address"
        );
        let e = ServiceSpec::try_from(&definition("rr", "10.0.0.1", 70000)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "service port: port 70000 is out of range (1-65535)"
        );
        let e = ServiceSpec::try_from(&definition("rr", "10.0.0.1", 0)).unwrap_err();
        assert!(matches!(e, ConvertError::Port { .. }));
        let mut d = definition("rr", "10.0.0.1", 80);
        d.servers.push(admin::ServerConfig {
            key: Some(server_key(Endpoint::new(Ipv4Addr::new(10, 0, 1, 1), 80))),
            method: 0,
            weight: 1,
        });
        let e = ServiceSpec::try_from(&d).unwrap_err();
        assert_eq!(
            e.to_string(),
            "forwarding method: 0 is not a valid forwarding method"
        );
        d.servers[0].method = admin::ForwardMethod::Nat.into();
        d.servers[0].weight = 65_536;
        assert_eq!(ServiceSpec::try_from(&d), Err(ConvertError::Weight(65_536)));
        let e = scheduling("rr", &["sh-port".into()], 0, "").unwrap_err();
        assert!(e.to_string().contains("sh-port"), "{e}");
        let e = scheduling("rr", &[], 60, "255.0.255.0").unwrap_err();
        assert!(matches!(e, ConvertError::Netmask(_)), "{e}");
        let mut k = definition("rr", "10.0.0.1", 80);
        if let Some(c) = k.config.as_mut() {
            c.key = None;
        }
        assert_eq!(
            ServiceSpec::try_from(&k),
            Err(ConvertError::Missing("service key"))
        );
    }

    #[test]
    fn the_descriptor_set_names_the_admin_service() {
        let fds = descriptor_mentions_package(FILE_DESCRIPTOR_SET);
        assert!(fds, "descriptor set mentions tandem.admin.v1.Admin");
    }

    /// The descriptor is a protobuf blob: check it decodes as a message with the service's
    /// name inside, without a prost-types dependency.
    fn descriptor_mentions_package(bytes: &[u8]) -> bool {
        let needle = b"tandem.admin.v1";
        !bytes.is_empty() && bytes.windows(needle.len()).any(|w| w == needle)
    }
}
