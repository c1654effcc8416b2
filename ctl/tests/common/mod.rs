//! Hand-made responses (data, not a mock server) shared by the tests.
#![allow(dead_code, clippy::unwrap_used)]

use tandem_proto::admin;

pub fn key(proto: admin::Protocol, address: &str, port: u32) -> admin::ServiceKey {
    admin::ServiceKey {
        protocol: proto.into(),
        address: address.into(),
        port,
    }
}

pub fn server(
    address: &str,
    port: u32,
    method: admin::ForwardMethod,
    weight: u32,
    active: u64,
    inactive: u64,
) -> admin::ServerStatus {
    admin::ServerStatus {
        config: Some(admin::ServerConfig {
            key: Some(admin::ServerKey {
                address: address.into(),
                port,
            }),
            method: method.into(),
            weight,
        }),
        health: None,
        active_connections: active,
        inactive_connections: inactive,
        stats: None,
        rates: None,
    }
}

pub fn service(
    k: admin::ServiceKey,
    scheduler: &str,
    persistence: u32,
    netmask: &str,
    servers: Vec<admin::ServerStatus>,
) -> admin::ServiceStatus {
    admin::ServiceStatus {
        config: Some(admin::ServiceConfig {
            key: Some(k),
            scheduler: scheduler.into(),
            flags: vec![],
            persistence_timeout_s: persistence,
            persistence_netmask: netmask.into(),
        }),
        servers,
        stats: None,
        rates: None,
    }
}

/// The listing of the issue: a NAT web service and a persistent DR ftp service.
pub fn demo() -> admin::ListServicesResponse {
    use admin::ForwardMethod::*;
    use admin::Protocol::*;
    admin::ListServicesResponse {
        services: vec![
            service(
                key(Tcp, "203.0.113.10", 80),
                "wrr",
                0,
                "",
                vec![
                    server("172.16.0.2", 80, Nat, 1, 0, 0),
                    server("172.16.0.3", 8000, Nat, 2, 0, 0),
                ],
            ),
            service(
                key(Tcp, "203.0.113.10", 21),
                "wlc",
                300,
                "",
                vec![server("172.16.0.3", 21, DirectRoute, 1, 0, 0)],
            ),
        ],
        generation: 7,
        counts_staleness_ms: 100,
    }
}
