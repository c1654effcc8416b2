//! The failover pair in the rack: director B gets the same VIPs and services as A, both
//! dataplanes get `[sync]` (their `Local` socket, the peer's outside address for the
//! service-network heartbeats), and a `tandem-syncd` runs in each director's namespace with
//! certificates the rack makes with `rcgen` at `up` time. The sync link is a third bridge,
//! `br-sync`, with a kernel interface `sync0` in each director namespace (the dataplanes'
//! ports are DPDK's; syncd needs the kernel's TCP). A has the higher priority.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::net::Ipv4Cidr;
use crate::rack::{DirectorId, RackSpec};
use crate::topology::Interface;

/// The sync-link bridge.
pub const BRIDGE_SYNC: &str = "br-sync";
/// The sync-link interface in each director namespace.
pub const SYNC_IFACE: &str = "sync0";
/// The syncd TCP port on the sync link.
pub const SYNC_PORT: u16 = 7800;

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
        if let Some(h) = spec.topology.hosts.iter_mut().find(|h| h.name == host)
            && !h.interfaces.iter().any(|i| i.name == SYNC_IFACE)
        {
            h.interfaces.push(Interface::kernel(
                SYNC_IFACE,
                BRIDGE_SYNC,
                &[Ipv4Cidr { addr, len: 24 }],
            ));
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

/// The `tandem-syncd` configuration of director `id`.
pub fn syncd_config(
    id: DirectorId,
    certs: &Path,
    socket: &Path,
    status: &Path,
    preempt: bool,
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

[daemon]
log_level = "info"
status_file = "{status}"
status_interval_ms = 50
"#,
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
