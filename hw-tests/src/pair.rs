//! The failover pair in the rack: director B gets the same VIPs and services as A, both
//! dataplanes get `[sync]` (their `Local` socket, the peer's outside address for the
//! service-network heartbeats), and a `tandem-syncd` runs in each director's namespace with
//! certificates the rack makes with `rcgen` at `up` time. The sync link is a third bridge,
//! `br-sync`, with a kernel interface `sync0` in each director namespace (the dataplanes'
//! ports are DPDK's; syncd needs the kernel's TCP). A has the higher priority.
//!
//! Health checks: each director namespace also gets a kernel interface `hc0` on the inside
//! bridge (`br-in`, the real servers' network) with its own address, and syncd's checks of
//! the rack's real servers leave from it (`[health] bind`): the path a real director's
//! checks take through a kernel interface on the inside or management network, since the
//! DPDK ports are invisible to the kernel.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::net::Ipv4Cidr;
use crate::rack::{BRIDGE_IN, DirectorId, RackSpec};
use crate::topology::Interface;

/// The sync-link bridge.
pub const BRIDGE_SYNC: &str = "br-sync";
/// The sync-link interface in each director namespace.
pub const SYNC_IFACE: &str = "sync0";
/// The syncd TCP port on the sync link.
pub const SYNC_PORT: u16 = 7800;

/// The health checks' interface in each director namespace (on the inside bridge).
pub const HEALTH_IFACE: &str = "hc0";
/// Time between two checks of one real server in the rack, ms.
pub const CHECK_INTERVAL_MS: u64 = 300;
/// A check not done by then failed, ms.
pub const CHECK_TIMEOUT_MS: u64 = 250;
/// Consecutive failures that take a real server down in the rack.
pub const CHECK_FALL: u32 = 2;
/// Consecutive successes that bring it back.
pub const CHECK_RISE: u32 = 2;

/// A director's health-check address on the inside network: 172.16.0.231 (A), .232 (B).
pub fn health_address(id: DirectorId) -> Ipv4Addr {
    match id {
        DirectorId::A => Ipv4Addr::new(172, 16, 0, 231),
        DirectorId::B => Ipv4Addr::new(172, 16, 0, 232),
    }
}

/// A director's address on the sync link: 10.255.0.11 (A), .12 (B).
pub fn sync_address(id: DirectorId) -> Ipv4Addr {
    match id {
        DirectorId::A => Ipv4Addr::new(10, 255, 0, 11),
        DirectorId::B => Ipv4Addr::new(10, 255, 0, 12),
    }
}

/// syncd's priority: A 200, B 100.
pub fn priority(id: DirectorId) -> u8 {
    match id {
        DirectorId::A => 200,
        DirectorId::B => 100,
    }
}

fn other(id: DirectorId) -> DirectorId {
    match id {
        DirectorId::A => DirectorId::B,
        DirectorId::B => DirectorId::A,
    }
}

/// The TLS name of a director's certificate.
pub fn tls_name(id: DirectorId) -> String {
    format!("director-{}.tandem", id.lower())
}

/// Turns the default rack into a failover pair (see the module doc).
pub fn make_pair(spec: &mut RackSpec) -> Result<()> {
    let a = spec
        .director(DirectorId::A)
        .cloned()
        .ok_or_else(|| Error::Topology("the rack has no director A".into()))?;
    if !spec.topology.bridges.iter().any(|b| b == BRIDGE_SYNC) {
        spec.topology.bridges.push(BRIDGE_SYNC.into());
    }
    for d in &mut spec.directors {
        if d.id == DirectorId::B {
            d.vips = a.vips.clone();
            d.services = a.services.clone();
        }
        let host = d.host.clone();
        let addr = sync_address(d.id);
        if let Some(h) = spec.topology.hosts.iter_mut().find(|h| h.name == host) {
            if !h.interfaces.iter().any(|i| i.name == SYNC_IFACE) {
                h.interfaces.push(Interface::kernel(
                    SYNC_IFACE,
                    BRIDGE_SYNC,
                    &[Ipv4Cidr { addr, len: 24 }],
                ));
            }
            if !h.interfaces.iter().any(|i| i.name == HEALTH_IFACE) {
                h.interfaces.push(Interface::kernel(
                    HEALTH_IFACE,
                    BRIDGE_IN,
                    &[Ipv4Cidr {
                        addr: health_address(d.id),
                        len: 24,
                    }],
                ));
            }
        }
    }
    Ok(())
}

/// The `[sync]` section of director `id`'s dataplane: its `Local` socket in `state`, and the
/// peer's outside address for the service-network heartbeats.
pub fn sync_section(
    spec: &RackSpec,
    id: DirectorId,
    socket: &Path,
) -> Option<tandem_dataplane::config::SyncSection> {
    let peer = spec.director(other(id))?.port("outside")?.address.addr;
    Some(tandem_dataplane::config::SyncSection {
        socket: socket.display().to_string(),
        peer_address: Some(peer),
        heartbeat_port: tandem_dataplane::config::DEFAULT_HEARTBEAT_PORT,
    })
}

fn tls_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Topology(format!("making the sync link's certificates ({what}): {e}"))
}

/// Writes the pair's CA and each director's certificate and key into `dir` (`ca.pem`,
/// `a.pem`, `a.key`, `b.pem`, `b.key`).
pub fn write_certificates(dir: &Path) -> Result<()> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA", e))?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "Tandem rack sync CA");
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().map_err(|e| tls_err("CA", e))?)
        .map_err(|e| tls_err("CA", e))?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| Error::io(format!("writing {}", dir.join(name).display()), e))
    };
    write("ca.pem", &ca.pem())?;
    for id in DirectorId::ALL {
        let name = tls_name(id);
        let key = KeyPair::generate().map_err(|e| tls_err(&name, e))?;
        let mut p = CertificateParams::new(vec![name.clone()]).map_err(|e| tls_err(&name, e))?;
        p.distinguished_name.push(DnType::CommonName, name.as_str());
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &ca).map_err(|e| tls_err(&name, e))?;
        write(&format!("{}.pem", id.lower()), &cert.pem())?;
        write(&format!("{}.key", id.lower()), &key.serialize_pem())?;
    }
    Ok(())
}

/// The `[health]` section and one `[[check]]` per service of director `id`: TCP services
/// get a `tcp` check, UDP services a `udp` one (the rack's `serve` answers every datagram
/// with its name, the port and the request), from the director's `hc0` address.
pub fn health_checks(spec: &RackSpec, id: DirectorId) -> String {
    use tandem_dataplane::config::ProtocolName;
    let mut out = format!(
        "[health]\npoll_interval_ms = 500\nbind = \"{}\"\n",
        health_address(id)
    );
    let Some(d) = spec.director(id) else {
        return out;
    };
    for s in &d.services {
        let (proto, kind) = match s.protocol {
            ProtocolName::Tcp => ("tcp", "type = \"tcp\"\n".to_string()),
            ProtocolName::Udp => (
                "udp",
                "type = \"udp\"\npayload = \"health\"\nexpect = \"health\"\n".to_string(),
            ),
        };
        out.push_str(&format!(
            "\n[[check]]\nservice = \"{proto}:{}:{}\"\n{kind}interval_ms = {CHECK_INTERVAL_MS}\ntimeout_ms = {CHECK_TIMEOUT_MS}\nrise = {CHECK_RISE}\nfall = {CHECK_FALL}\non_failure = \"quiesce\"\n",
            s.address, s.port
        ));
    }
    out
}

/// The `tandem-syncd` configuration of director `id`; `admin` is its dataplane's admin
/// socket and `checks` the health-check sections ([`health_checks`]).
pub fn syncd_config(
    id: DirectorId,
    certs: &Path,
    socket: &Path,
    status: &Path,
    preempt: bool,
    admin: &Path,
    checks: &str,
) -> String {
    let peer = other(id);
    format!(
        r#"# Written by tandem-rack (failover pair).
[node]
id = {node}
priority = {priority}
preempt = {preempt}

[heartbeat]
interval_ms = 50

[sync_link]
listen = "{listen}:{SYNC_PORT}"
peer = "{peer_addr}:{SYNC_PORT}"
connect_timeout_ms = 500
reconnect_min_ms = 20
reconnect_max_ms = 500

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
peer_name = "{peer_name}"

[dataplane]
socket = "{socket}"
admin_socket = "{admin}"

[daemon]
log_level = "info"
status_file = "{status}"
status_interval_ms = 50

{checks}"#,
        node = if id == DirectorId::A { 1 } else { 2 },
        priority = priority(id),
        listen = sync_address(id),
        peer_addr = sync_address(peer),
        ca = certs.join("ca.pem").display(),
        cert = certs.join(format!("{}.pem", id.lower())).display(),
        key = certs.join(format!("{}.key", id.lower())).display(),
        peer_name = tls_name(peer),
        socket = socket.display(),
        status = status.display(),
        admin = admin.display(),
    )
}

/// What the rack reads of a syncd status file.
#[derive(Debug, Clone, Deserialize)]
pub struct SyncdStatus {
    /// `Active`, `Standby`, `Syncing`, ...
    pub role: String,
    /// When the file was written (unix ms).
    #[serde(default)]
    pub updated_unix_ms: u64,
    /// How long the role had been held when the file was written.
    #[serde(default)]
    pub role_for_ms: u64,
    /// Why it changed to it (`PeerDead`, `Yielded`, ...).
    #[serde(default)]
    pub role_reason: String,
    /// The health checks (`null` without checks).
    #[serde(default)]
    pub health: Option<HealthStatus>,
    /// The role machine's counters.
    #[serde(default)]
    pub role_metrics: Option<RoleMetricsStatus>,
}

/// What the rack reads of the `role_metrics` section of a syncd status file.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RoleMetricsStatus {
    /// The longest waits between two heartbeats of the peer, per path and on both.
    #[serde(default)]
    pub longest_silence_ms: Option<Silences>,
    /// Times the daemon found it had not run for over half an interval.
    #[serde(default)]
    pub stalls: u64,
}

/// The longest silences of the peer a syncd saw (ms): on each path, and on both together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Silences {
    pub sync_link: u64,
    pub service: u64,
    pub both: u64,
}

/// What the rack reads of the `health` section of a syncd status file.
#[derive(Debug, Clone, Deserialize)]
pub struct HealthStatus {
    /// Whether this syncd reports verdicts (it is active).
    #[serde(default)]
    pub reporting: bool,
    /// Transitions to down so far.
    #[serde(default)]
    pub went_down: u64,
    /// Transitions to up so far.
    #[serde(default)]
    pub went_up: u64,
    /// One entry per checked real server.
    #[serde(default)]
    pub targets: Vec<HealthTarget>,
}

/// One checked real server in a syncd status file.
#[derive(Debug, Clone, Deserialize)]
pub struct HealthTarget {
    /// `tcp 203.0.113.10:80`.
    pub service: String,
    /// `172.16.0.2:80`.
    pub server: String,
    /// `unknown`, `up` or `down`.
    pub state: String,
    /// The last result's detail or reason.
    #[serde(default)]
    pub last: Option<String>,
}

impl HealthStatus {
    /// The state of `server` in `service` (`tcp 203.0.113.10:80`, `172.16.0.2:80`).
    pub fn state(&self, service: &str, server: &str) -> Option<&str> {
        self.targets
            .iter()
            .find(|t| t.service == service && t.server == server)
            .map(|t| t.state.as_str())
    }
}

impl SyncdStatus {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<SyncdStatus> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_str(&text).map_err(|e| Error::parse("syncd status", e.to_string()))
    }
}

/// Where `tandem-syncd` is: `$TANDEM_SYNCD`, else next to the running executable.
pub fn locate_syncd() -> Result<PathBuf> {
    crate::process::locate_named(
        "tandem-syncd",
        None,
        std::env::var_os("TANDEM_SYNCD"),
        std::env::current_exe().ok(),
    )
    .map_err(|looked_at| Error::BinaryNotFound {
        binary: "tandem-syncd",
        env: "TANDEM_SYNCD",
        looked_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_directors_get_a_health_interface_and_a_check_per_service() {
        let mut spec = RackSpec::default_rack();
        make_pair(&mut spec).expect("pair");
        for (id, host, addr) in [
            (DirectorId::A, "dira", "172.16.0.231"),
            (DirectorId::B, "dirb", "172.16.0.232"),
        ] {
            let h = spec
                .topology
                .hosts
                .iter()
                .find(|h| h.name == host)
                .expect("director host");
            let hc = h
                .interfaces
                .iter()
                .find(|i| i.name == HEALTH_IFACE)
                .expect("hc0");
            assert_eq!(hc.bridge, BRIDGE_IN);
            assert_eq!(
                hc.owner,
                crate::topology::Owner::Kernel {
                    addresses: vec![Ipv4Cidr {
                        addr: addr.parse().expect("addr"),
                        len: 24
                    }]
                }
            );
            let checks = health_checks(&spec, id);
            assert!(
                checks.starts_with(&format!(
                    "[health]\npoll_interval_ms = 500\nbind = \"{addr}\"\n"
                )),
                "{checks}"
            );
            // Every service of the rack once (4 TCP, 3 UDP).
            assert_eq!(checks.matches("[[check]]").count(), 7, "{checks}");
            assert!(checks.contains(
                "[[check]]\nservice = \"tcp:203.0.113.10:80\"\ntype = \"tcp\"\ninterval_ms = 300\ntimeout_ms = 250\nrise = 2\nfall = 2\non_failure = \"quiesce\"\n"
            ), "{checks}");
            assert!(checks.contains(
                "[[check]]\nservice = \"udp:203.0.113.10:53\"\ntype = \"udp\"\npayload = \"health\"\nexpect = \"health\"\n"
            ), "{checks}");
        }
        // Making a pair twice adds nothing.
        let before = spec.topology.clone();
        make_pair(&mut spec).expect("pair again");
        assert_eq!(spec.topology, before);
    }
}
