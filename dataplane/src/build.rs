//! Turns a checked [`Config`] into the core's immutable state: the [`Director`] (ports, VIPs,
//! routes, MTUs), the [`ServiceSet`] and the sizes of each worker's tables. Pure: tested
//! without DPDK; the process calls it once the ports' MACs are known.

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use tandem_core::conn::{ConnConfig, Timeouts};
use tandem_core::director::{self, Director, Route, Vip};
use tandem_core::lb::{Endpoint, ForwardMethod, Protocol};
use tandem_core::sched::{PersistOptions, Persistence, SchedulerKind, SchedulerOptions};
use tandem_core::service::{DestSpec, ServiceSet, ServiceSpec};
use tandem_core::wire::MacAddr;

use crate::config::{Config, ConnectionsSection, MethodName, ProtocolName};

/// Most real servers a director holds (sizes the per-destination counters of every lcore).
pub const MAX_DESTS: usize = 4096;

/// The core state a configuration describes.
#[derive(Debug)]
pub struct Built {
    /// Ports, VIPs, routes, MTUs.
    pub director: Director,
    /// Virtual services and real servers.
    pub services: ServiceSet,
    /// Each worker's connection table.
    pub conn: ConnConfig,
    /// Each worker's persistence templates.
    pub persist: PersistOptions,
}

/// The scheduler and its options for a `[[service]]`, as the core parses them.
pub fn scheduler(
    name: &str,
    flags: &[String],
) -> Result<(SchedulerKind, SchedulerOptions), String> {
    let kind = SchedulerKind::from_str(name).map_err(|e| e.to_string())?;
    let options =
        SchedulerOptions::with_flags(kind, &flags.join(",")).map_err(|e| e.to_string())?;
    Ok((kind, options))
}

/// The services of `cfg` in the core's terms.
pub fn service_specs(cfg: &Config) -> Result<Vec<ServiceSpec>, String> {
    cfg.services
        .iter()
        .map(|s| {
            let (scheduler, options) = scheduler(&s.scheduler, &s.flags)?;
            let persistence = (s.persistence_timeout_s > 0).then(|| Persistence {
                timeout: u64::from(s.persistence_timeout_s) * 1_000_000_000,
                netmask: Ipv4Addr::BROADCAST,
            });
            Ok(ServiceSpec {
                proto: match s.protocol {
                    ProtocolName::Tcp => Protocol::Tcp,
                    ProtocolName::Udp => Protocol::Udp,
                },
                vip: Endpoint::new(s.address, s.port),
                scheduler,
                options,
                persistence,
                dests: s
                    .servers
                    .iter()
                    .map(|d| DestSpec {
                        addr: d.address,
                        port: d.port,
                        method: match d.method {
                            MethodName::Nat => ForwardMethod::Nat,
                            MethodName::Tun => ForwardMethod::Tunnel,
                            MethodName::Dr => ForwardMethod::DirectRoute,
                        },
                        weight: d.weight,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// The connection timeouts `[connections]` sets (the rest are the defaults).
pub fn timeouts(c: &ConnectionsSection) -> Timeouts {
    let mut t = Timeouts::default();
    t.set_ipvsadm(
        Duration::from_secs(c.tcp_established_s.into()),
        Duration::from_secs(c.tcp_fin_s.into()),
        Duration::from_secs(c.udp_s.into()),
    );
    t.syn_recv = Duration::from_secs(c.tcp_syn_s.into());
    t
}

/// Builds the core state; `macs[i]` is the MAC of `cfg.ports[i]`.
pub fn build(cfg: &Config, macs: &[MacAddr]) -> Result<Built, String> {
    let ports = cfg
        .ports
        .iter()
        .zip(macs)
        .map(|(p, mac)| director::Port {
            mac: *mac,
            addr: p.address.addr,
            prefix_len: p.address.prefix_len,
        })
        .collect();
    let vips = cfg
        .vips
        .iter()
        .filter_map(|v| {
            cfg.ports
                .iter()
                .position(|p| p.name == v.port)
                .map(|port| Vip {
                    addr: v.address,
                    port,
                })
        })
        .collect();
    let routes = cfg
        .routes
        .iter()
        .map(|r| Route {
            prefix: r.prefix.addr,
            prefix_len: r.prefix.prefix_len,
            gateway: r.gateway,
        })
        .collect();
    let mut director = Director::new(ports, vips)
        .and_then(|d| d.with_routes(routes))
        .map_err(|e| e.to_string())?;
    // The dataplanes' heartbeats reach the glue rather than the unsupported-protocol drop.
    if let Some(sync) = &cfg.sync {
        director = director.with_local_udp_port(sync.heartbeat_port);
    }
    for (i, p) in cfg.ports.iter().enumerate() {
        if let Some(mtu) = p.mtu {
            director = director.with_mtu(i, mtu).map_err(|e| e.to_string())?;
        }
    }
    let services = ServiceSet::new(&service_specs(cfg)?, MAX_DESTS).map_err(|e| e.to_string())?;
    let c = &cfg.connections;
    let mut conn = ConnConfig::new(c.max_per_lcore as usize, MAX_DESTS);
    conn.timeouts = timeouts(c);
    Ok(Built {
        director,
        services,
        conn,
        persist: PersistOptions::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/director.toml");

    #[test]
    fn example_builds_the_seed_002_services() {
        let cfg = Config::parse(EXAMPLE, "example").expect("valid");
        let b = build(&cfg, &[[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]]).expect("builds");
        let vip = Ipv4Addr::new(203, 0, 113, 10);
        let web = b
            .services
            .lookup(Protocol::Tcp, Endpoint::new(vip, 80))
            .expect("port 80");
        assert_eq!(web.scheduler, SchedulerKind::Wrr);
        let ds: Vec<(Endpoint, u32)> = b
            .services
            .service_dests(web)
            .iter()
            .map(|d| (d.endpoint, d.weight))
            .collect();
        assert_eq!(
            ds,
            [
                (Endpoint::new(Ipv4Addr::new(172, 16, 0, 2), 80), 1),
                (Endpoint::new(Ipv4Addr::new(172, 16, 0, 3), 8000), 2)
            ]
        );
        assert!(
            b.services
                .lookup(Protocol::Tcp, Endpoint::new(vip, 23))
                .is_none()
        );
        assert_eq!(
            b.director.next_hop(Ipv4Addr::new(198, 51, 100, 1)),
            Some((0, Ipv4Addr::new(203, 0, 113, 1)))
        );
        assert_eq!(
            b.director.next_hop(Ipv4Addr::new(172, 16, 0, 3)),
            Some((1, Ipv4Addr::new(172, 16, 0, 3)))
        );
        assert_eq!(b.conn.timeouts.established, Duration::from_secs(900));
        assert_eq!(b.conn.timeouts.fin_wait, Duration::from_secs(60));
        assert_eq!(b.conn.timeouts.syn_recv, Duration::from_secs(60));
        assert_eq!(b.conn.timeouts.udp, Duration::from_secs(300));
        assert_eq!(b.conn.capacity, 1 << 20);
    }

    #[test]
    fn scheduler_names_and_flags_come_from_the_core() {
        assert!(scheduler("mh", &["mh-port".into()]).is_ok());
        let e = scheduler("wrrr", &[]).err().unwrap_or_default();
        assert!(
            e.contains("wrrr") && e.contains("rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh"),
            "{e}"
        );
        assert!(
            scheduler("rr", &["sh-port".into()]).is_err(),
            "a flag of another scheduler"
        );
    }
}
