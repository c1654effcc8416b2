//! The dataplane's TOML configuration file (see `examples/director.toml`).
//!
//! Parsing is strict: unknown keys are errors (a typo must not silently change nothing), and
//! every error names the file, the line and the key.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A configuration error, ready to print as one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or type error, with its position.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message with line and column, folded to one line.
        message: String,
    },
    /// The file parsed but says something impossible.
    #[error("config file {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// EAL arguments.
    pub eal: EalSection,
    /// Dataplane tunables.
    #[serde(default)]
    pub dataplane: DataplaneSection,
    /// The ports, in the order the core numbers them (0, 1, ...).
    #[serde(rename = "port")]
    pub ports: Vec<PortSection>,
    /// Virtual IPs the director answers for.
    #[serde(rename = "vip", default)]
    pub vips: Vec<VipSection>,
    /// Next hops for destinations that are not on a port's subnet.
    #[serde(rename = "route", default)]
    pub routes: Vec<RouteSection>,
    /// Connection table size and timeouts.
    #[serde(default)]
    pub connections: ConnectionsSection,
    /// Virtual services and their real servers.
    #[serde(rename = "service", default)]
    pub services: Vec<ServiceSection>,
    /// The administration API (gRPC).
    #[serde(default)]
    pub control: ControlSection,
    /// The sync daemon's side (`tandem.sync.v1.Local`); absent: no peer, the director is
    /// `standalone` and holds its VIPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncSection>,
}

/// The UDP port of heartbeats between the two dataplanes when `[sync] heartbeat_port` is not
/// given (VRRP has no port; this one is unassigned by IANA).
pub const DEFAULT_HEARTBEAT_PORT: u16 = 7471;

/// `[sync]`: where `tandem-syncd` reaches this dataplane, and the service-network path of the
/// heartbeats to the peer director's dataplane.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyncSection {
    /// The Unix socket of the `Local` service (mode 0600; its directory is created; a stale
    /// socket is replaced).
    pub socket: String,
    /// The peer director's own address on the port whose subnet holds it (normally the
    /// outside port): heartbeats go there from this director's address on that port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_address: Option<Ipv4Addr>,
    /// The UDP port heartbeats are sent to and from.
    #[serde(default = "default_heartbeat_port")]
    pub heartbeat_port: u16,
}

fn default_heartbeat_port() -> u16 {
    DEFAULT_HEARTBEAT_PORT
}

/// The default path of the admin API's Unix socket.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/tandem/admin.sock";

/// `[control]`: where the admin API (`tandem.admin.v1`, used by `tandemctl`) is served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// The Unix socket (mode 0600; its directory is created; a stale socket is replaced).
    pub socket: String,
    /// Also serve on this TCP address (`ip:port`), TLS only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain for the TCP listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    /// PEM private key for the TCP listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<String>,
    /// PEM CA bundle: if set, TCP clients must present a certificate it signed (mTLS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<String>,
    /// Serve Prometheus metrics (`GET /metrics`, plain HTTP) on this address (`ip:port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            socket: DEFAULT_CONTROL_SOCKET.into(),
            tcp_listen: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            metrics_listen: None,
        }
    }
}

/// `[connections]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsSection {
    /// Most connections one worker lcore tracks; new connections beyond it are dropped and counted.
    pub max_per_lcore: u32,
    /// Timeout of an ESTABLISHED TCP connection (ipvsadm --set tcp).
    pub tcp_established_s: u32,
    /// Timeout of the FIN_WAIT state (ipvsadm --set tcpfin).
    pub tcp_fin_s: u32,
    /// Timeout of the SYN_RECV state.
    pub tcp_syn_s: u32,
    /// Timeout of a UDP connection (ipvsadm --set udp).
    pub udp_s: u32,
}

impl Default for ConnectionsSection {
    fn default() -> Self {
        ConnectionsSection {
            max_per_lcore: 1 << 20,
            tcp_established_s: 900,
            tcp_fin_s: 60,
            tcp_syn_s: 60,
            udp_s: 300,
        }
    }
}

/// `[[route]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Destination prefix, `0.0.0.0/0` for the default route.
    pub prefix: Ipv4Cidr,
    /// Next hop; must be on the subnet of one of the ports.
    pub gateway: Ipv4Addr,
}

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolName {
    /// TCP
    Tcp,
    /// UDP
    Udp,
}

/// Forwarding method of a real server (ipvsadm -m / -i / -g).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MethodName {
    /// NAT (masquerading)
    Nat,
    /// IPIP tunnel
    Tun,
    /// Direct routing (gatewaying)
    Dr,
}

/// `[[service]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// `tcp` or `udp`.
    pub protocol: ProtocolName,
    /// The virtual IP (one of the `[[vip]]` addresses).
    pub address: Ipv4Addr,
    /// The virtual port.
    pub port: u16,
    /// Scheduler name, as ipvsadm -s.
    pub scheduler: String,
    /// Persistence timeout in seconds (ipvsadm -p); absent or 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub persistence_timeout_s: u32,
    /// Scheduler flags (ipvsadm -b).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// The real servers.
    #[serde(rename = "server", default)]
    pub servers: Vec<ServerSection>,
}

/// `[[service.server]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// The real server's address.
    pub address: Ipv4Addr,
    /// Its port (must equal the service's for tun and dr, which cannot map ports).
    pub port: u16,
    /// `nat`, `tun` or `dr`.
    pub method: MethodName,
    /// Weight, 0..=65535; 0 quiesces (no new connections).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn default_weight() -> u32 {
    1
}

/// `[eal]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EalSection {
    /// Passed verbatim to `rte_eal_init` after argv[0].
    pub args: Vec<String>,
}

/// DPDK's `RTE_MBUF_DEFAULT_BUF_SIZE`: 2048 bytes of packet plus the headroom.
pub const DEFAULT_MBUF_DATA_ROOM: u32 = 2176;
/// DPDK's `RTE_PKTMBUF_HEADROOM`, part of every mbuf's data room.
pub const MBUF_HEADROOM: u32 = 128;
/// The smallest `mbuf_data_room`: the headroom plus 256 bytes, room for any ARP, ICMP echo or
/// small TCP/UDP frame (a real port will still drop or truncate larger frames).
pub const MIN_MBUF_DATA_ROOM: u32 = MBUF_HEADROOM + 256;
/// The largest: the mbuf's `buf_len` is a `u16`.
pub const MAX_MBUF_DATA_ROOM: u32 = 65535;

/// `[dataplane]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataplaneSection {
    /// Where to write counters as JSON; none if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats_file: Option<String>,
    /// How often to write them.
    pub stats_interval_ms: u64,
    /// `error`, `warn`, `info`, `debug` or `trace` (RUST_LOG overrides).
    pub log_level: String,
    /// Mbufs in the packet pool.
    pub mbufs: u32,
    /// Per-lcore mempool cache.
    pub mbuf_cache: u32,
    /// Bytes of data room per mbuf, DPDK's 128-byte headroom included: frames up to
    /// `mbuf_data_room − 128` bytes fit. DPDK's default (2176) fits a 1500-byte MTU; smaller
    /// mbufs let a pool hold millions of small packets (the net_pcap replay benchmark).
    pub mbuf_data_room: u32,
    /// Descriptors per rx queue.
    pub rx_descriptors: u16,
    /// Descriptors per tx queue.
    pub tx_descriptors: u16,
    /// Entries in each lcore's neighbour table.
    pub neighbour_capacity: usize,
    /// Longest sleep of an idle worker, in microseconds (0: busy-poll always).
    pub idle_sleep_max_us: u64,
}

impl Default for DataplaneSection {
    fn default() -> Self {
        DataplaneSection {
            stats_file: None,
            stats_interval_ms: 1000,
            log_level: "info".into(),
            mbufs: 8191,
            mbuf_cache: 256,
            mbuf_data_room: DEFAULT_MBUF_DATA_ROOM,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            neighbour_capacity: 4096,
            idle_sleep_max_us: 200,
        }
    }
}

/// `[[port]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    /// The operator's name for it (`outside`, `inside`).
    pub name: String,
    /// The DPDK device: vdev name or PCI address.
    pub device: String,
    /// The director's own address on this port, `a.b.c.d/len`.
    pub address: Ipv4Cidr,
    /// MTU to set on the device, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

/// `[[vip]]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VipSection {
    /// The virtual IP.
    pub address: Ipv4Addr,
    /// The name of the port it is announced on.
    pub port: String,
}

/// An IPv4 address with its prefix length, `203.0.113.11/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The address.
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub prefix_len: u8,
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a.b.c.d/len"))?;
        let addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix_len = l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("prefix length {l:?} is not within 0..=32"))?;
        Ok(Ipv4Cidr { addr, prefix_len })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// The file's text (TOML) for this configuration.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    /// Parses and checks file contents; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: one_line(&e, text),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: origin.to_owned(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.ports.is_empty() {
            return Err("no [[port]] configured: a director needs at least one port".into());
        }
        let mut names = HashSet::new();
        let mut devices = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.name.is_empty() {
                return Err(format!("port[{i}].name is empty"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(format!("port[{i}].name = {:?} is used twice", p.name));
            }
            if !devices.insert(p.device.as_str()) {
                return Err(format!(
                    "port[{i}].device = {:?} is used by two ports",
                    p.device
                ));
            }
            if !addrs.insert(p.address.addr) {
                return Err(format!("port[{i}].address = {} is used twice", p.address));
            }
            if let Some(mtu) = p.mtu
                && !(68..=9600).contains(&mtu)
            {
                return Err(format!("port[{i}].mtu = {mtu} is not within 68..=9600"));
            }
        }
        for (i, v) in self.vips.iter().enumerate() {
            if !names.contains(v.port.as_str()) {
                return Err(format!(
                    "vip[{i}].port = {:?} names no [[port]] (ports: {})",
                    v.port,
                    self.port_names()
                ));
            }
            if !addrs.insert(v.address) {
                return Err(format!(
                    "vip[{i}].address = {} is already a port address or another VIP",
                    v.address
                ));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            if !self.ports.iter().any(|p| same_subnet(p.address, r.gateway)) {
                return Err(format!(
                    "route[{i}].gateway = {} is on no port's subnet",
                    r.gateway
                ));
            }
        }
        self.validate_services()?;
        if let Some(sync) = &self.sync {
            if sync.socket.is_empty() {
                return Err("sync.socket is empty".into());
            }
            if sync.socket == self.control.socket {
                return Err(format!(
                    "sync.socket = {:?} is also control.socket",
                    sync.socket
                ));
            }
            if let Some(peer) = sync.peer_address {
                if !self.ports.iter().any(|p| same_subnet(p.address, peer)) {
                    return Err(format!("sync.peer_address = {peer} is on no port's subnet"));
                }
                if addrs.contains(&peer) {
                    return Err(format!(
                        "sync.peer_address = {peer} is this director's own address or a VIP"
                    ));
                }
            }
            if sync.heartbeat_port == 0 {
                return Err("sync.heartbeat_port must not be 0".into());
            }
        }
        let c = &self.connections;
        if c.max_per_lcore == 0 {
            return Err("connections.max_per_lcore must be at least 1".into());
        }
        for (k, v) in [
            ("tcp_established_s", c.tcp_established_s),
            ("tcp_fin_s", c.tcp_fin_s),
            ("tcp_syn_s", c.tcp_syn_s),
            ("udp_s", c.udp_s),
        ] {
            if v == 0 {
                return Err(format!("connections.{k} must be at least 1 second"));
            }
        }
        let d = &self.dataplane;
        if !matches!(
            d.log_level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return Err(format!(
                "dataplane.log_level = {:?}: use error, warn, info, debug or trace",
                d.log_level
            ));
        }
        if d.stats_interval_ms == 0 {
            return Err("dataplane.stats_interval_ms must be at least 1".into());
        }
        if d.mbufs < 1023 {
            return Err(format!(
                "dataplane.mbufs = {} is too small (at least 1023)",
                d.mbufs
            ));
        }
        if !(MIN_MBUF_DATA_ROOM..=MAX_MBUF_DATA_ROOM).contains(&d.mbuf_data_room) {
            return Err(format!(
                "dataplane.mbuf_data_room = {} is not within {MIN_MBUF_DATA_ROOM}..={MAX_MBUF_DATA_ROOM} \
                 (bytes per mbuf, the {MBUF_HEADROOM}-byte headroom included)",
                d.mbuf_data_room
            ));
        }
        for (i, p) in self.ports.iter().enumerate() {
            // An MTU-sized frame (plus Ethernet header and one VLAN tag) must fit one mbuf.
            if let Some(mtu) = p.mtu
                && u32::from(mtu) + 18 + MBUF_HEADROOM > d.mbuf_data_room
            {
                return Err(format!(
                    "dataplane.mbuf_data_room = {} cannot hold a frame of port[{i}].mtu = {mtu} \
                     (needs at least {})",
                    d.mbuf_data_room,
                    u32::from(mtu) + 18 + MBUF_HEADROOM
                ));
            }
        }
        for (k, n) in [
            ("rx_descriptors", d.rx_descriptors),
            ("tx_descriptors", d.tx_descriptors),
        ] {
            if n < 32 || !n.is_power_of_two() {
                return Err(format!(
                    "dataplane.{k} = {n}: must be a power of two, at least 32"
                ));
            }
        }
        if d.neighbour_capacity == 0 {
            return Err("dataplane.neighbour_capacity must be at least 1".into());
        }
        let c = &self.control;
        if c.socket.is_empty() {
            return Err("control.socket is empty".into());
        }
        match (&c.tcp_listen, &c.tls_cert, &c.tls_key) {
            (Some(addr), None, _) | (Some(addr), _, None) => {
                return Err(format!(
                    "control.tcp_listen = {addr} needs control.tls_cert and control.tls_key: \
                     the admin API is not served on TCP without TLS"
                ));
            }
            (None, Some(_), _) | (None, _, Some(_)) => {
                return Err(
                    "control.tls_cert / control.tls_key are set without control.tcp_listen".into(),
                );
            }
            _ => {}
        }
        if c.tls_client_ca.is_some() && c.tcp_listen.is_none() {
            return Err("control.tls_client_ca is set without control.tcp_listen".into());
        }
        Ok(())
    }

    fn validate_services(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (i, svc) in self.services.iter().enumerate() {
            let name = format!(
                "service[{i}] ({:?} {}:{})",
                svc.protocol, svc.address, svc.port
            );
            if !self.vips.iter().any(|v| v.address == svc.address) {
                return Err(format!("{name}: address {} is not a [[vip]]", svc.address));
            }
            if svc.port == 0 {
                return Err(format!("{name}: port must be within 1..=65535"));
            }
            if !seen.insert((svc.protocol, svc.address, svc.port)) {
                return Err(format!("{name}: defined twice"));
            }
            crate::build::scheduler(&svc.scheduler, &svc.flags)
                .map_err(|e| format!("{name}: {e}"))?;
            let mut servers = HashSet::new();
            for (j, s) in svc.servers.iter().enumerate() {
                let sname = format!("{name}.server[{j}] ({}:{})", s.address, s.port);
                if s.port == 0 {
                    return Err(format!("{sname}: port must be within 1..=65535"));
                }
                if !servers.insert((s.address, s.port)) {
                    return Err(format!("{sname}: listed twice"));
                }
                if s.weight > 65535 {
                    return Err(format!(
                        "{sname}: weight {} is not within 0..=65535",
                        s.weight
                    ));
                }
                if matches!(s.method, MethodName::Tun | MethodName::Dr) && s.port != svc.port {
                    return Err(format!(
                        "{sname}: method {:?} cannot map port {} to {}; use nat, or the same port",
                        s.method, svc.port, s.port
                    ));
                }
                if self.ports.iter().any(|p| p.address.addr == s.address)
                    || self.vips.iter().any(|v| v.address == s.address)
                {
                    return Err(format!(
                        "{sname}: address {} is the director's own",
                        s.address
                    ));
                }
                if matches!(s.method, MethodName::Dr)
                    && !self.ports.iter().any(|p| same_subnet(p.address, s.address))
                {
                    return Err(format!(
                        "{sname}: direct routing needs the server on a port's subnet"
                    ));
                }
            }
        }
        Ok(())
    }

    fn port_names(&self) -> String {
        self.ports
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Whether `addr` is on the subnet of `net`.
pub fn same_subnet(net: Ipv4Cidr, addr: Ipv4Addr) -> bool {
    tandem_core::director::in_prefix(net.addr, net.prefix_len, addr)
}

/// toml's error on one line: `line 3, column 7: invalid type ... (key dataplane.mbufs)`.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let col = span.start
                - text[..span.start.min(text.len())]
                    .rfind('\n')
                    .map_or(0, |i| i + 1)
                + 1;
            // Name the key when toml's message does not (type errors).
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && !msg.contains(k));
            match key {
                Some(k) => format!("line {line}, column {col}: {msg} (key `{k}`)"),
                None => format!("line {line}, column {col}: {msg}"),
            }
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/director.toml");

    fn err(text: &str) -> String {
        match Config::parse(text, "t.toml") {
            Ok(_) => String::from("no error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn example_parses() {
        let c = Config::parse(EXAMPLE, "example").expect("example config is valid");
        assert_eq!(c.ports.len(), 2);
        assert_eq!(
            c.ports[0].address,
            Ipv4Cidr {
                addr: Ipv4Addr::new(203, 0, 113, 11),
                prefix_len: 24
            }
        );
        assert_eq!(c.vips[0].address, Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(c.dataplane.idle_sleep_max_us, 200);
    }

    #[test]
    fn defaults_apply() {
        let c = Config::parse(
            "[eal]\nargs = []\n[[port]]\nname = \"p\"\ndevice = \"net_null0\"\naddress = \"10.0.0.1/8\"\n",
            "t",
        )
        .expect("minimal config");
        assert_eq!(c.dataplane.mbufs, 8191);
        assert!(c.vips.is_empty());
    }

    #[test]
    fn unknown_key_is_named_with_line() {
        let t = EXAMPLE.replace("mbuf_cache = 256", "mbuf_cahce = 256");
        let e = err(&t);
        assert!(e.starts_with("config file t.toml: line "), "{e}");
        assert!(e.contains("mbuf_cahce"), "{e}");
    }

    #[test]
    fn bad_address_is_named() {
        let t = EXAMPLE.replace("172.16.0.251/24", "172.16.0.251/33");
        let e = err(&t);
        assert!(
            e.contains("prefix length \"33\" is not within 0..=32"),
            "{e}"
        );
        assert!(e.contains("line "), "{e}");
    }

    #[test]
    fn vip_on_missing_port() {
        let t = EXAMPLE.replace("port = \"outside\"", "port = \"outsde\"");
        assert_eq!(
            err(&t),
            "config file t.toml: vip[0].port = \"outsde\" names no [[port]] (ports: outside, inside)"
        );
    }

    #[test]
    fn duplicate_device_rejected() {
        let t = EXAMPLE.replace("device = \"net_af_xdp1\"", "device = \"net_af_xdp0\"");
        assert_eq!(
            err(&t),
            "config file t.toml: port[1].device = \"net_af_xdp0\" is used by two ports"
        );
    }

    #[test]
    fn vip_equal_to_port_address_rejected() {
        let t = EXAMPLE.replace("address = \"203.0.113.10\"", "address = \"203.0.113.11\"");
        assert!(err(&t).contains("vip[0].address = 203.0.113.11 is already a port address"));
    }

    #[test]
    fn descriptors_checked() {
        let t = EXAMPLE.replace("rx_descriptors = 1024", "rx_descriptors = 1000");
        assert!(err(&t).contains("dataplane.rx_descriptors = 1000"));
    }

    #[test]
    fn mbuf_data_room_defaults_to_dpdk_and_is_bounded() {
        assert_eq!(
            DEFAULT_MBUF_DATA_ROOM,
            u32::from(tandem_dpdk::Mempool::DEFAULT_DATA_ROOM)
        );
        assert_eq!(MBUF_HEADROOM, u32::from(tandem_dpdk::Mempool::HEADROOM));
        let c = Config::parse(EXAMPLE, "example").expect("valid");
        assert_eq!(c.dataplane.mbuf_data_room, 2176);
        let without = EXAMPLE.replace("mbuf_data_room = 2176\n", "");
        assert_ne!(without, EXAMPLE);
        let c = Config::parse(&without, "t").expect("valid without the knob");
        assert_eq!(c.dataplane.mbuf_data_room, DEFAULT_MBUF_DATA_ROOM);
        let small = EXAMPLE.replace("mbuf_data_room = 2176", "mbuf_data_room = 512");
        let c = Config::parse(&small, "t").expect("512 is fine");
        assert_eq!(c.dataplane.mbuf_data_room, 512);
        assert_eq!(
            Config::parse(&c.to_toml().expect("toml"), "round trip").expect("parses"),
            c
        );
        for bad in ["383", "0", "65536"] {
            let t = EXAMPLE.replace("mbuf_data_room = 2176", &format!("mbuf_data_room = {bad}"));
            assert_eq!(
                err(&t),
                format!(
                    "config file t.toml: dataplane.mbuf_data_room = {bad} is not within 384..=65535 \
                     (bytes per mbuf, the 128-byte headroom included)"
                )
            );
        }
        let t = EXAMPLE.replace("mbuf_data_room = 2176", "mbuf_data_room = -1");
        assert!(err(&t).contains("line "), "{}", err(&t));
    }

    #[test]
    fn mbuf_data_room_must_hold_an_mtu_sized_frame() {
        let t = EXAMPLE
            .replace("mbuf_data_room = 2176", "mbuf_data_room = 1600")
            .replace(
                "address = \"172.16.0.251/24\"",
                "address = \"172.16.0.251/24\"\nmtu = 1500",
            );
        assert_eq!(
            err(&t),
            "config file t.toml: dataplane.mbuf_data_room = 1600 cannot hold a frame of port[1].mtu = 1500 (needs at least 1646)"
        );
        let t = t.replace("mtu = 1500", "mtu = 1400");
        assert!(Config::parse(&t, "t").is_ok(), "{}", err(&t));
    }

    #[test]
    fn example_services_are_the_seed_002_example() {
        let c = Config::parse(EXAMPLE, "example").expect("valid");
        assert_eq!(c.services.len(), 2);
        let web = &c.services[0];
        assert_eq!(
            (web.protocol, web.port, web.scheduler.as_str()),
            (ProtocolName::Tcp, 80, "wrr")
        );
        let s: Vec<(Ipv4Addr, u16, u32)> = web
            .servers
            .iter()
            .map(|s| (s.address, s.port, s.weight))
            .collect();
        assert_eq!(
            s,
            [
                (Ipv4Addr::new(172, 16, 0, 2), 80, 1),
                (Ipv4Addr::new(172, 16, 0, 3), 8000, 2)
            ]
        );
        assert_eq!(c.services[1].servers[0].port, 21);
        assert_eq!(c.routes[0].gateway, Ipv4Addr::new(203, 0, 113, 1));
    }

    #[test]
    fn unknown_scheduler_lists_known_ones() {
        let t = EXAMPLE.replace("scheduler = \"wrr\"", "scheduler = \"wrrr\"");
        assert_eq!(
            err(&t),
            "config file t.toml: service[0] (Tcp 203.0.113.10:80): unknown scheduler `wrrr`; valid schedulers: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, mh"
        );
    }

    #[test]
    fn dr_cannot_map_ports() {
        let t = EXAMPLE.replace(
            "port = 8000\nmethod = \"nat\"",
            "port = 8000\nmethod = \"dr\"",
        );
        assert!(
            err(&t).contains("method Dr cannot map port 80 to 8000"),
            "{}",
            err(&t)
        );
    }

    #[test]
    fn service_on_unknown_vip_and_bad_method() {
        let t = EXAMPLE.replace(
            "address = \"203.0.113.10\"\nport = 21",
            "address = \"203.0.113.99\"\nport = 21",
        );
        assert!(
            err(&t).contains("address 203.0.113.99 is not a [[vip]]"),
            "{}",
            err(&t)
        );
        let t = EXAMPLE.replace(
            "method = \"nat\"                # nat",
            "method = \"masq\"                # nat",
        );
        let e = err(&t);
        assert!(e.contains("line ") && e.contains("masq"), "{e}");
    }

    #[test]
    fn route_gateway_must_be_on_link() {
        let t = EXAMPLE.replace("gateway = \"203.0.113.1\"", "gateway = \"198.51.100.1\"");
        assert_eq!(
            err(&t),
            "config file t.toml: route[0].gateway = 198.51.100.1 is on no port's subnet"
        );
    }

    #[test]
    fn subnet_math() {
        let n: Ipv4Cidr = "172.16.0.251/24".parse().expect("cidr");
        assert!(same_subnet(n, Ipv4Addr::new(172, 16, 0, 9)));
        assert!(!same_subnet(n, Ipv4Addr::new(172, 16, 1, 9)));
        assert!(same_subnet(
            "0.0.0.0/0".parse().expect("cidr"),
            Ipv4Addr::new(1, 2, 3, 4)
        ));
    }

    #[test]
    fn serializes_back_to_the_same_config() {
        let c = Config::parse(EXAMPLE, "example").expect("valid");
        let text = c.to_toml().expect("serializes");
        assert_eq!(Config::parse(&text, "round trip").expect("parses back"), c);
    }

    #[test]
    fn control_section_defaults_and_refuses_tcp_without_tls() {
        let c = Config::parse(EXAMPLE, "example").expect("valid");
        assert_eq!(c.control.socket, "/run/tandem/a/admin.sock");
        let t = EXAMPLE.replace(
            "[control]\n",
            "[control]\ntcp_listen = \"127.0.0.1:50051\"\n",
        );
        assert_ne!(t, EXAMPLE);
        assert_eq!(
            err(&t),
            "config file t.toml: control.tcp_listen = 127.0.0.1:50051 needs control.tls_cert and \
             control.tls_key: the admin API is not served on TCP without TLS"
        );
        let minimal =
            "[eal]\nargs = []\n[[port]]\nname = \"p\"\ndevice = \"d\"\naddress = \"10.0.0.1/8\"\n";
        let c = Config::parse(minimal, "t").expect("valid");
        assert_eq!(c.control.socket, DEFAULT_CONTROL_SOCKET);
        let t = format!("{minimal}[control]\nsockett = \"/x\"\n");
        assert!(err(&t).contains("sockett"), "{}", err(&t));
    }

    #[test]
    fn missing_file_is_clear() {
        let e = Config::load(Path::new("/nonexistent/x.toml"))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "cannot read config file /nonexistent/x.toml: No such file or directory (os error 2)"
            )
        );
    }
}
