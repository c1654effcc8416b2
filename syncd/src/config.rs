//! `tandem-syncd`'s TOML configuration file (see `syncd/examples/syncd.toml`).
//!
//! Parsing is strict, as the dataplane's: unknown keys are errors (a typo must not silently
//! change nothing), and every error names the file, the line and the key. Relative paths
//! (certificates, sockets, the status file) are taken relative to the config file's folder.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::health::check::{ExecProbe, HttpProbe, HttpsTls, Probe, UdpProbe};
use crate::health::{OnFailure, Plan, ServerSel, ServiceSel, Spec};
use crate::repl::{ReceiverConfig, SenderConfig};
use crate::role::RoleConfig;

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
    /// TOML syntax or type error (unknown keys included), with its position.
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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this director is in the pair.
    pub node: NodeSection,
    /// Heartbeat timing.
    #[serde(default)]
    pub heartbeat: HeartbeatSection,
    /// The dedicated sync link to the peer director.
    pub sync_link: SyncLinkSection,
    /// Mutual TLS on the sync link.
    pub tls: TlsSection,
    /// The local dataplane's `Local` service.
    pub dataplane: DataplaneSection,
    /// Replication bounds.
    #[serde(default)]
    pub replication: ReplicationSection,
    /// Logging and the status file.
    #[serde(default)]
    pub daemon: DaemonSection,
    /// Defaults of the health checks.
    #[serde(default)]
    pub health: HealthSection,
    /// `[[check]]`: the health checks of real servers, one block per virtual service.
    #[serde(default, rename = "check")]
    pub checks: Vec<CheckSection>,
}

/// `[node]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Unique in the pair (the last tie-break of the election).
    pub id: u32,
    /// 1..=255, higher is preferred as the active director.
    pub priority: u8,
    /// Take the active role back from a lower-priority peer once this director holds a
    /// complete copy of the table.
    #[serde(default = "yes")]
    pub preempt: bool,
}

fn yes() -> bool {
    true
}

/// `[heartbeat]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatSection {
    /// Heartbeat interval, ms (both paths). Default 50.
    pub interval_ms: u64,
    /// Silence on both paths for this long means the peer is dead, ms. Default: 3 intervals
    /// plus VRRP's skew `(256 - priority) / 256` of an interval, at least half an interval.
    pub dead_interval_ms: Option<u64>,
    /// Silence that means the peer is dead while its heartbeats come by one path only (the
    /// sync link cut, or the service network broken), ms. Default: twice the dead interval;
    /// at least the dead interval.
    pub dead_interval_one_path_ms: Option<u64>,
    /// How long to listen for the peer after start before deciding alone, ms. Default: the
    /// dead interval plus one interval.
    pub init_hold_ms: Option<u64>,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        HeartbeatSection {
            interval_ms: 50,
            dead_interval_ms: None,
            dead_interval_one_path_ms: None,
            init_hold_ms: None,
        }
    }
}

/// `[sync_link]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncLinkSection {
    /// Where this syncd accepts the peer (address on the sync link).
    pub listen: SocketAddr,
    /// The peer syncd's `listen` address.
    pub peer: SocketAddr,
    /// TCP + TLS connect timeout, ms. Default 1000.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// First reconnection delay, ms; doubles up to `reconnect_max_ms`. Default 50.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnection delay, ms. Default 1000.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
}

fn default_connect_timeout() -> u64 {
    1000
}
fn default_reconnect_min() -> u64 {
    50
}
fn default_reconnect_max() -> u64 {
    1000
}

/// `[tls]`: PEM files. Both directors' certificates must be signed by `ca`; each one's
/// certificate names the director (a DNS subject alternative name), and `peer_name` is the
/// name the *other* director's certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The CA certificate(s) that sign the pair's certificates.
    pub ca: PathBuf,
    /// This director's certificate chain.
    pub cert: PathBuf,
    /// This director's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The DNS name the peer's certificate must be valid for.
    pub peer_name: String,
}

/// `[dataplane]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneSection {
    /// The Unix socket on which the local dataplane serves `tandem.sync.v1.Local`.
    pub socket: PathBuf,
    /// Records per snapshot message asked of `WatchConnections`. Default 1024.
    #[serde(default = "default_watch_chunk")]
    pub watch_chunk: u32,
    /// The dataplane's admin API socket (`tandem.admin.v1.Admin`): the health checks list
    /// the services' real servers there and report their verdicts. Default
    /// `/run/tandem/admin.sock`.
    #[serde(default = "default_admin_socket")]
    pub admin_socket: PathBuf,
}

fn default_admin_socket() -> PathBuf {
    PathBuf::from("/run/tandem/admin.sock")
}

fn default_watch_chunk() -> u32 {
    1024
}

/// `[replication]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationSection {
    /// Most items the sender's replay log holds. Default 1048576.
    pub max_log_entries: usize,
    /// Most bytes (wire estimate) the replay log holds. Default 64 MiB.
    pub max_log_bytes: usize,
    /// Most items in one batch. Default 512.
    pub max_batch: usize,
    /// Most items sent and not yet acked. Default 65536.
    pub window: usize,
    /// Resend from the first unacked item after this long without ack progress, ms.
    /// Default 200.
    pub retransmit_ms: u64,
    /// More than this many items behind the sender: not "sync complete". Default 10000.
    pub max_lag_events: u64,
}

impl Default for ReplicationSection {
    fn default() -> Self {
        let s = SenderConfig::default();
        ReplicationSection {
            max_log_entries: s.max_log_entries,
            max_log_bytes: s.max_log_bytes,
            max_batch: s.max_batch,
            window: s.window,
            retransmit_ms: 200,
            max_lag_events: ReceiverConfig::default().max_lag_events,
        }
    }
}

/// `[daemon]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    /// A `tracing` filter (`info`, `debug`, `tandem_syncd=debug,info`); `RUST_LOG` overrides.
    pub log_level: String,
    /// Where the status (role, peer, replication metrics) is written as JSON, atomically
    /// (write + rename). Empty: no status file.
    pub status_file: PathBuf,
    /// How often the status file is rewritten, ms. Default 500.
    pub status_interval_ms: u64,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            log_level: "info".into(),
            status_file: PathBuf::new(),
            status_interval_ms: 500,
        }
    }
}

/// `[health]`: how the checks run, and the defaults of every `[[check]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// How often the services' real servers are listed from the dataplane's admin API, ms.
    /// Default 1000.
    pub poll_interval_ms: u64,
    /// Most checks running at once (the rest wait for their turn). Default 256.
    pub max_in_flight: usize,
    /// Default source address of the checks (the director's management or inside
    /// interface); the kernel's choice when unset.
    pub bind: Option<Ipv4Addr>,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            poll_interval_ms: 1000,
            max_in_flight: 256,
            bind: None,
        }
    }
}

impl HealthSection {
    fn params(&self) -> CheckParams {
        CheckParams {
            bind: self.bind,
            ..CheckParams::default()
        }
    }
}

/// A check's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    /// TCP connect.
    Tcp,
    /// HTTP GET.
    Http,
    /// HTTPS GET.
    Https,
    /// UDP request and reply.
    Udp,
    /// An external command.
    Exec,
}

/// Declares `[[check]]`, `[[check.server]]` and the parameters they share (every one
/// optional in both; a server's value wins over its check's, which wins over the default).
macro_rules! check_params {
    ($( $(#[doc = $doc:literal])* $field:ident : $ty:ty ),* $(,)?) => {
        /// `[[check]]`: the health check of one virtual service's real servers.
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct CheckSection {
            /// The virtual service: `tcp:192.0.2.10:80` or `udp:192.0.2.10:53`.
            pub service: String,
            /// Only these real servers (`172.16.0.2` or `172.16.0.2:80`); all when unset.
            #[serde(default)]
            pub servers: Option<Vec<String>>,
            /// `[[check.server]]`: per-server settings.
            #[serde(default)]
            pub server: Vec<ServerOverride>,
            $( $(#[doc = $doc])* #[serde(default)] pub $field: Option<$ty>, )*
        }

        /// `[[check.server]]`: settings of one real server (or every port of an address).
        #[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ServerOverride {
            /// The real server's address.
            pub address: Ipv4Addr,
            /// Its port in the service; every port of `address` when unset.
            #[serde(default)]
            pub port: Option<u16>,
            $( $(#[doc = $doc])* #[serde(default)] pub $field: Option<$ty>, )*
        }

        /// The parameters of a check, each possibly unset.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct CheckParams {
            $( $(#[doc = $doc])* pub $field: Option<$ty>, )*
        }

        impl CheckSection {
            /// Its parameters.
            pub fn params(&self) -> CheckParams {
                CheckParams { $( $field: self.$field.clone(), )* }
            }
        }

        impl ServerOverride {
            /// Its parameters.
            pub fn params(&self) -> CheckParams {
                CheckParams { $( $field: self.$field.clone(), )* }
            }
        }

        impl CheckParams {
            /// These, with `base`'s where these are unset.
            pub fn over(&self, base: &CheckParams) -> CheckParams {
                CheckParams { $( $field: self.$field.clone().or_else(|| base.$field.clone()), )* }
            }
        }
    };
}

check_params! {
    /// `tcp`, `http`, `https`, `udp` or `exec`.
    r#type: CheckType,
    /// Check this port instead of the real server's (keepalived's `connect_port`).
    connect_port: u16,
    /// Source address of the check.
    bind: Ipv4Addr,
    /// Time between checks, ms. Default 2000.
    interval_ms: u64,
    /// A check not done by then failed, ms. Default 1000 (at most `interval_ms`).
    timeout_ms: u64,
    /// Consecutive successes that bring a down server back. Default 2.
    rise: u32,
    /// Consecutive failures that take a server down. Default 3.
    fall: u32,
    /// `quiesce` (weight 0: no new connections, existing ones continue) or `remove`.
    on_failure: OnFailure,
    /// http(s): the path requested. Default `/`.
    path: String,
    /// http(s): the `Host` header. Default the server's address.
    host: String,
    /// http(s): accepted status codes. Default `[200]`.
    status: Vec<u16>,
    /// http(s): a substring the body (first 64 KiB) must contain.
    body: String,
    /// https: check the server's certificate against `ca_file` (and `sni`). Default false.
    verify: bool,
    /// https: the CA certificate(s) (PEM) for `verify = true`.
    ca_file: PathBuf,
    /// https: the TLS server name sent and verified. Default `host`, else the address.
    sni: String,
    /// udp: the request as text.
    payload: String,
    /// udp: the request as hex bytes (`"0a0b"`).
    payload_hex: String,
    /// udp: text the reply must contain (any reply when unset).
    expect: String,
    /// udp: hex bytes the reply must contain.
    expect_hex: String,
    /// exec: the program, an absolute path.
    command: PathBuf,
    /// exec: its arguments.
    args: Vec<String>,
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return Err("must be an even number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| format!("`{}` is not hex", s.get(i..i + 2).unwrap_or_default()))
        })
        .collect()
}

fn header_safe(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic())
}

/// One check's parameters, defaults filled in and checked; `at` names the block in errors.
fn resolve(p: &CheckParams, at: &str, read_files: bool) -> Result<Spec, String> {
    let kind = p
        .r#type
        .ok_or_else(|| format!("{at}.type: missing (tcp, http, https, udp or exec)"))?;
    let is_http = matches!(kind, CheckType::Http | CheckType::Https);
    let only = |set: bool, key: &str, what: &str| -> Result<(), String> {
        if set {
            Err(format!("{at}.{key}: only for {what} checks (this one is {kind:?})").to_lowercase())
        } else {
            Ok(())
        }
    };
    only(!is_http && p.path.is_some(), "path", "http/https")?;
    only(!is_http && p.host.is_some(), "host", "http/https")?;
    only(!is_http && p.status.is_some(), "status", "http/https")?;
    only(!is_http && p.body.is_some(), "body", "http/https")?;
    let https = kind == CheckType::Https;
    only(!https && p.verify.is_some(), "verify", "https")?;
    only(!https && p.ca_file.is_some(), "ca_file", "https")?;
    only(!https && p.sni.is_some(), "sni", "https")?;
    let is_udp = kind == CheckType::Udp;
    only(!is_udp && p.payload.is_some(), "payload", "udp")?;
    only(!is_udp && p.payload_hex.is_some(), "payload_hex", "udp")?;
    only(!is_udp && p.expect.is_some(), "expect", "udp")?;
    only(!is_udp && p.expect_hex.is_some(), "expect_hex", "udp")?;
    let is_exec = kind == CheckType::Exec;
    only(!is_exec && p.command.is_some(), "command", "exec")?;
    only(!is_exec && p.args.is_some(), "args", "exec")?;

    let interval_ms = p.interval_ms.unwrap_or(2000);
    if !(100..=3_600_000).contains(&interval_ms) {
        return Err(format!(
            "{at}.interval_ms: {interval_ms} is out of range (100-3600000)"
        ));
    }
    let timeout_ms = p.timeout_ms.unwrap_or_else(|| interval_ms.min(1000));
    if timeout_ms < 10 || timeout_ms > interval_ms {
        return Err(format!(
            "{at}.timeout_ms: {timeout_ms} must be at least 10 and at most interval_ms ({interval_ms})"
        ));
    }
    let rise = p.rise.unwrap_or(2);
    let fall = p.fall.unwrap_or(3);
    for (key, v) in [("rise", rise), ("fall", fall)] {
        if !(1..=100).contains(&v) {
            return Err(format!("{at}.{key}: {v} is out of range (1-100)"));
        }
    }
    if p.connect_port == Some(0) {
        return Err(format!("{at}.connect_port: 0 is not a port"));
    }
    let probe = match kind {
        CheckType::Tcp => Probe::Tcp,
        CheckType::Http | CheckType::Https => {
            let path = p.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || !header_safe(&path) || path.len() > 1024 {
                return Err(format!(
                    "{at}.path: `{path}` must start with / and have no spaces or control characters (at most 1024 bytes)"
                ));
            }
            if let Some(h) = &p.host
                && (!header_safe(h) || h.len() > 255)
            {
                return Err(format!(
                    "{at}.host: `{h}` is not a host name (no spaces, at most 255 bytes)"
                ));
            }
            let status = p.status.clone().unwrap_or_else(|| vec![200]);
            if status.is_empty() || status.len() > 32 {
                return Err(format!("{at}.status: give 1 to 32 status codes"));
            }
            if let Some(c) = status.iter().find(|c| !(100..=599).contains(*c)) {
                return Err(format!("{at}.status: {c} is not an HTTP status (100-599)"));
            }
            if let Some(b) = &p.body
                && (b.is_empty() || b.len() > 1024)
            {
                return Err(format!("{at}.body: must be 1 to 1024 bytes"));
            }
            let tls = if https {
                let verify = p.verify.unwrap_or(false);
                match (verify, &p.ca_file) {
                    (true, None) => {
                        return Err(format!("{at}.ca_file: verify = true needs the CA file"));
                    }
                    (false, Some(_)) => {
                        return Err(format!("{at}.ca_file: only with verify = true"));
                    }
                    _ => {}
                }
                let sni = p.sni.clone().or_else(|| p.host.clone());
                if let Some(n) = &sni
                    && rustls_pki_types::ServerName::try_from(n.as_str()).is_err()
                {
                    return Err(format!("{at}.sni: `{n}` is not a DNS name or IP address"));
                }
                let config = if read_files {
                    let pem = match &p.ca_file {
                        Some(f) => Some(std::fs::read(f).map_err(|e| {
                            format!("{at}.ca_file: cannot read {}: {e}", f.display())
                        })?),
                        None => None,
                    };
                    crate::health::check::https_config(pem.as_deref())
                        .map_err(|e| format!("{at}.ca_file: {e}"))?
                } else {
                    crate::health::check::https_config(None).map_err(|e| format!("{at}: {e}"))?
                };
                Some(HttpsTls {
                    config,
                    server_name: sni,
                })
            } else {
                None
            };
            Probe::Http(HttpProbe {
                path,
                host: p.host.clone(),
                status,
                body: p.body.clone(),
                tls,
            })
        }
        CheckType::Udp => {
            let payload = match (&p.payload, &p.payload_hex) {
                (Some(t), None) => t.as_bytes().to_vec(),
                (None, Some(h)) => hex(h).map_err(|e| format!("{at}.payload_hex: {e}"))?,
                _ => {
                    return Err(format!(
                        "{at}.payload: give exactly one of payload and payload_hex"
                    ));
                }
            };
            if payload.is_empty() || payload.len() > 1472 {
                return Err(format!("{at}.payload: must be 1 to 1472 bytes"));
            }
            let expect = match (&p.expect, &p.expect_hex) {
                (Some(t), None) => Some(t.as_bytes().to_vec()),
                (None, Some(h)) => Some(hex(h).map_err(|e| format!("{at}.expect_hex: {e}"))?),
                (None, None) => None,
                _ => {
                    return Err(format!(
                        "{at}.expect: give at most one of expect and expect_hex"
                    ));
                }
            };
            if expect
                .as_ref()
                .is_some_and(|e| e.is_empty() || e.len() > 1024)
            {
                return Err(format!("{at}.expect: must be 1 to 1024 bytes"));
            }
            Probe::Udp(UdpProbe { payload, expect })
        }
        CheckType::Exec => {
            let command = p
                .command
                .clone()
                .ok_or_else(|| format!("{at}.command: missing for an exec check"))?;
            if !command.is_absolute() {
                return Err(format!(
                    "{at}.command: `{}` must be an absolute path",
                    command.display()
                ));
            }
            Probe::Exec(ExecProbe {
                command,
                args: p.args.clone().unwrap_or_default(),
            })
        }
    };
    Ok(Spec {
        probe,
        connect_port: p.connect_port,
        bind: p.bind,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        rise,
        fall,
        on_failure: p.on_failure.unwrap_or(OnFailure::Quiesce),
    })
}

impl Config {
    /// Reads and checks a file; relative paths are resolved against its folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        let mut cfg = Self::parse(&text, &p)?;
        if let Some(dir) = path.parent() {
            cfg.resolve_paths(dir);
        }
        Ok(cfg)
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

    fn resolve_paths(&mut self, dir: &Path) {
        for p in [
            &mut self.tls.ca,
            &mut self.tls.cert,
            &mut self.tls.key,
            &mut self.dataplane.socket,
            &mut self.dataplane.admin_socket,
            &mut self.daemon.status_file,
        ] {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        let files = self.checks.iter_mut().flat_map(|c| {
            std::iter::once(&mut c.ca_file).chain(c.server.iter_mut().map(|s| &mut s.ca_file))
        });
        for p in files.flatten() {
            if !p.as_os_str().is_empty() && p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.node.priority == 0 {
            return Err("node.priority: 0 is not allowed (1-255, higher wins)".into());
        }
        let hb = &self.heartbeat;
        if !(10..=10_000).contains(&hb.interval_ms) {
            return Err(format!(
                "heartbeat.interval_ms: {} is out of range (10-10000)",
                hb.interval_ms
            ));
        }
        if let Some(d) = hb.dead_interval_ms
            && d <= hb.interval_ms
        {
            return Err(format!(
                "heartbeat.dead_interval_ms: {d} must be longer than heartbeat.interval_ms ({})",
                hb.interval_ms
            ));
        }
        let dead = self.role().dead_interval();
        if let Some(d) = hb.dead_interval_one_path_ms
            && Duration::from_millis(d) < dead
        {
            return Err(format!(
                "heartbeat.dead_interval_one_path_ms: {d} must be at least the dead interval ({} ms)",
                dead.as_millis()
            ));
        }
        let link = &self.sync_link;
        if link.listen == link.peer {
            return Err(format!(
                "sync_link.peer: {} is this director's own sync_link.listen",
                link.peer
            ));
        }
        if link.reconnect_min_ms == 0 || link.reconnect_min_ms > link.reconnect_max_ms {
            return Err(format!(
                "sync_link.reconnect_min_ms: {} must be at least 1 and at most reconnect_max_ms ({})",
                link.reconnect_min_ms, link.reconnect_max_ms
            ));
        }
        if link.connect_timeout_ms == 0 {
            return Err("sync_link.connect_timeout_ms: must be at least 1".into());
        }
        if rustls_pki_types::ServerName::try_from(self.tls.peer_name.as_str()).is_err()
            || self.tls.peer_name.is_empty()
        {
            return Err(format!(
                "tls.peer_name: `{}` is not a DNS name or IP address",
                self.tls.peer_name
            ));
        }
        for (key, p) in [
            ("tls.ca", &self.tls.ca),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("dataplane.socket", &self.dataplane.socket),
            ("dataplane.admin_socket", &self.dataplane.admin_socket),
        ] {
            if p.as_os_str().is_empty() {
                return Err(format!("{key}: must not be empty"));
            }
        }
        if self.dataplane.watch_chunk == 0 {
            return Err("dataplane.watch_chunk: must be at least 1".into());
        }
        let r = &self.replication;
        for (key, v) in [
            ("replication.max_log_entries", r.max_log_entries),
            ("replication.max_batch", r.max_batch),
            ("replication.window", r.window),
        ] {
            if v == 0 {
                return Err(format!("{key}: must be at least 1"));
            }
        }
        if r.max_log_bytes < 4096 {
            return Err(format!(
                "replication.max_log_bytes: {} is too small (at least 4096)",
                r.max_log_bytes
            ));
        }
        if r.retransmit_ms == 0 {
            return Err("replication.retransmit_ms: must be at least 1".into());
        }
        if self.daemon.status_interval_ms < 10 {
            return Err(format!(
                "daemon.status_interval_ms: {} is too short (at least 10)",
                self.daemon.status_interval_ms
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.daemon.log_level).is_err() {
            return Err(format!(
                "daemon.log_level: `{}` is not a log filter (e.g. info, debug)",
                self.daemon.log_level
            ));
        }
        let h = &self.health;
        if !(100..=60_000).contains(&h.poll_interval_ms) {
            return Err(format!(
                "health.poll_interval_ms: {} is out of range (100-60000)",
                h.poll_interval_ms
            ));
        }
        if !(1..=4096).contains(&h.max_in_flight) {
            return Err(format!(
                "health.max_in_flight: {} is out of range (1-4096)",
                h.max_in_flight
            ));
        }
        self.plans(false).map(|_| ())
    }

    /// The health checks, checked and resolved (defaults, then the `[[check]]` block, then
    /// its `[[check.server]]` overrides). With `read_files`, https CA files are read and
    /// parsed too (the daemon and `--check` do it after relative paths are resolved).
    pub fn health_plans(&self) -> Result<Vec<Plan>, String> {
        self.plans(true)
    }

    fn plans(&self, read_files: bool) -> Result<Vec<Plan>, String> {
        let mut plans: Vec<Plan> = Vec::with_capacity(self.checks.len());
        for (i, c) in self.checks.iter().enumerate() {
            let at = format!("check[{i}]");
            let service = ServiceSel::parse(&c.service)
                .map_err(|e| format!("{at}.service: `{}` {e}", c.service))?;
            if let Some(j) = plans.iter().position(|p| p.service == service) {
                return Err(format!(
                    "{at}.service: {service} already has a check (check[{j}]); use [[check.server]] for per-server settings"
                ));
            }
            let base_params = c.params().over(&self.health.params());
            let base = resolve(&base_params, &at, read_files)?;
            let servers = match &c.servers {
                None => None,
                Some(list) => {
                    if list.is_empty() {
                        return Err(format!(
                            "{at}.servers: empty (leave it out to check every server)"
                        ));
                    }
                    let mut v = Vec::with_capacity(list.len());
                    for (k, s) in list.iter().enumerate() {
                        v.push(
                            ServerSel::parse(s)
                                .map_err(|e| format!("{at}.servers[{k}]: `{s}` {e}"))?,
                        );
                    }
                    Some(v)
                }
            };
            let mut overrides = Vec::with_capacity(c.server.len());
            for (k, o) in c.server.iter().enumerate() {
                let at = format!("{at}.server[{k}]");
                if o.port == Some(0) {
                    return Err(format!("{at}.port: 0 is not a port"));
                }
                let sel = ServerSel {
                    address: o.address,
                    port: o.port,
                };
                if overrides.iter().any(|(s, _)| *s == sel) {
                    return Err(format!("{at}: {sel} has another [[check.server]] block"));
                }
                if let Some(list) = &servers
                    && !list.iter().any(|s: &ServerSel| s.covers(&sel))
                {
                    return Err(format!(
                        "{at}: {sel} is not in {}.servers",
                        format_args!("check[{i}]")
                    ));
                }
                let spec = resolve(&o.params().over(&base_params), &at, read_files)?;
                overrides.push((sel, spec));
            }
            plans.push(Plan {
                service,
                servers,
                base,
                overrides,
            });
        }
        Ok(plans)
    }

    /// What differs from `running` that a reload does not apply (the sections read at start
    /// only): their names, for the log. (A changed `node.id` refuses the reload instead.)
    pub fn restart_only_changes(&self, running: &Config) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.sync_link != running.sync_link {
            v.push("sync_link");
        }
        if self.dataplane != running.dataplane {
            v.push("dataplane");
        }
        if self.replication != running.replication {
            v.push("replication");
        }
        if self.daemon != running.daemon {
            v.push("daemon");
        }
        v
    }

    /// The role machine's configuration.
    pub fn role(&self) -> RoleConfig {
        let mut r = RoleConfig::new(self.node.id, self.node.priority);
        r.interval = Duration::from_millis(self.heartbeat.interval_ms);
        r.dead_interval = self.heartbeat.dead_interval_ms.map(Duration::from_millis);
        r.dead_interval_one_path = self
            .heartbeat
            .dead_interval_one_path_ms
            .map(Duration::from_millis);
        r.init_hold = self.heartbeat.init_hold_ms.map(Duration::from_millis);
        r.preempt = self.node.preempt;
        r
    }

    /// The replication sender's configuration.
    pub fn sender(&self) -> SenderConfig {
        let r = &self.replication;
        SenderConfig {
            max_log_entries: r.max_log_entries,
            max_log_bytes: r.max_log_bytes,
            max_batch: r.max_batch,
            window: r.window,
            retransmit_after: Duration::from_millis(r.retransmit_ms),
            idle_interval: Duration::from_millis(self.heartbeat.interval_ms),
            snapshot_chunk: usize::try_from(self.dataplane.watch_chunk).unwrap_or(1024),
            ..SenderConfig::default()
        }
    }

    /// The replication receiver's configuration: stale after 10 heartbeat intervals of
    /// silence from the sender (at least 500 ms).
    pub fn receiver(&self) -> ReceiverConfig {
        ReceiverConfig {
            stale_after: Duration::from_millis((self.heartbeat.interval_ms * 10).max(500)),
            max_lag_events: self.replication.max_lag_events,
            ..ReceiverConfig::default()
        }
    }
}

/// toml's error on one line: `line 3, column 7: unknown field ...`.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let upto = text.get(..span.start.min(text.len())).unwrap_or_default();
            let line = upto.matches('\n').count() + 1;
            let col = span.start - upto.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {col}: {msg}")
        }
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/syncd.toml");

    fn err(text: &str) -> String {
        match Config::parse(text, "t.toml") {
            Ok(_) => String::from("no error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn example_is_valid() {
        let c = Config::parse(EXAMPLE, "syncd.toml").expect("example parses");
        assert_eq!(c.heartbeat.interval_ms, 50);
        // Priority 200: 3 × 50 ms + max((256 - 200) / 256 × 50 ms, 25 ms).
        assert_eq!(c.role().dead_interval(), Duration::from_millis(175));
        assert_eq!(
            c.role().dead_interval_one_path(),
            Duration::from_millis(350)
        );
    }

    #[test]
    fn a_one_path_dead_interval_shorter_than_the_dead_interval_is_refused() {
        let t = EXAMPLE.replace(
            "[heartbeat]",
            "[heartbeat]\ndead_interval_one_path_ms = 174",
        );
        assert_eq!(
            err(&t),
            "config file t.toml: heartbeat.dead_interval_one_path_ms: 174 must be at least the dead interval (175 ms)"
        );
        let t = EXAMPLE.replace(
            "[heartbeat]",
            "[heartbeat]\ndead_interval_one_path_ms = 500",
        );
        let c = Config::parse(&t, "syncd.toml").expect("parses");
        assert_eq!(
            c.role().dead_interval_one_path(),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn unknown_key_is_named_with_line() {
        let t = EXAMPLE.replace("preempt = true", "preempt = true\npreemt = false");
        let e = err(&t);
        assert!(e.starts_with("config file t.toml: line "), "{e}");
        assert!(e.contains("preemt"), "{e}");
    }

    #[test]
    fn unknown_section_is_refused() {
        let e = err(&format!("{EXAMPLE}\n[extra]\nx = 1\n"));
        assert!(e.contains("extra"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("priority = 200", "priority = 0", "node.priority"),
            (
                "interval_ms = 50",
                "interval_ms = 5",
                "heartbeat.interval_ms",
            ),
            ("peer_name = ", "peer_name = \"\" #", "tls.peer_name"),
            ("max_batch = 512", "max_batch = 0", "replication.max_batch"),
            (
                "log_level = \"info\"",
                "log_level = \"=[\"",
                "daemon.log_level",
            ),
        ];
        for (from, to, key) in cases {
            assert!(EXAMPLE.contains(from), "{from}");
            let e = err(&EXAMPLE.replacen(from, to, 1));
            assert!(e.contains(key), "{to}: {e}");
        }
        let e = err(&EXAMPLE.replace("priority = 200", "priority = 300"));
        assert!(e.contains("line 8, column 12"), "{e}");
        let e = err(&EXAMPLE.replace("192.168.255.2:7800", "192.168.255.1:7800"));
        assert!(e.contains("sync_link.peer"), "{e}");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let dir = std::env::temp_dir().join(format!("syncd-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let f = dir.join("s.toml");
        std::fs::write(&f, EXAMPLE).expect("write");
        let c = Config::load(&f).expect("load");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(c.tls.ca.starts_with(&dir), "{}", c.tls.ca.display());
        assert!(c.dataplane.socket.is_absolute());
    }

    #[test]
    fn example_checks_resolve() {
        use crate::health::check::Probe;
        use crate::health::{OnFailure, Proto};
        let c = Config::parse(EXAMPLE, "syncd.toml").expect("example parses");
        assert_eq!(
            c.dataplane.admin_socket,
            PathBuf::from("/run/tandem/admin.sock")
        );
        let plans = c.health_plans().expect("plans");
        assert_eq!(plans.len(), 4);
        let http = &plans[0];
        assert_eq!(http.service.to_string(), "tcp 192.0.2.10:80");
        assert_eq!(http.base.interval, Duration::from_millis(2000));
        assert_eq!((http.base.rise, http.base.fall), (2, 3));
        assert_eq!(http.base.on_failure, OnFailure::Quiesce);
        assert_eq!(http.base.bind, Some(Ipv4Addr::new(172, 16, 0, 253)));
        let Probe::Http(h) = &http.base.probe else {
            panic!("not http: {:?}", http.base.probe)
        };
        assert_eq!(
            (h.path.as_str(), h.status.as_slice()),
            ("/health", &[200, 204][..])
        );
        assert!(h.tls.is_none());
        // The override inherits the block's settings and changes two.
        let s3 = "172.16.0.3:8000".parse().expect("addr");
        let o = http.spec_for(s3).expect("checked");
        assert_eq!((o.connect_port, o.fall, o.rise), (Some(8081), 2, 2));
        assert!(matches!(&o.probe, Probe::Http(h) if h.path == "/health"));
        let s2 = "172.16.0.2:80".parse().expect("addr");
        assert_eq!(http.spec_for(s2).map(|s| s.fall), Some(3));
        // Restricted servers.
        let https = &plans[1];
        assert_eq!(https.base.probe.name(), "https");
        assert!(
            https
                .spec_for("172.16.0.2:443".parse().expect("a"))
                .is_some()
        );
        assert!(
            https
                .spec_for("172.16.0.3:443".parse().expect("a"))
                .is_some()
        );
        assert!(
            https
                .spec_for("172.16.0.3:8443".parse().expect("a"))
                .is_none()
        );
        assert!(
            https
                .spec_for("172.16.0.4:443".parse().expect("a"))
                .is_none()
        );
        assert_eq!(plans[2].service.proto, Proto::Udp);
        let Probe::Udp(u) = &plans[2].base.probe else {
            panic!("not udp")
        };
        assert_eq!(u.expect.as_deref(), Some(&[0x12, 0x34][..]));
        assert_eq!(u.payload.len(), 33);
        assert_eq!(plans[2].base.timeout, Duration::from_millis(1000));
        assert_eq!(plans[3].base.probe.name(), "exec");
    }

    #[test]
    fn no_checks_is_fine() {
        let cut = EXAMPLE.find("[health]").expect("health section");
        let c = Config::parse(&EXAMPLE[..cut], "t.toml").expect("parses");
        assert!(c.checks.is_empty());
        assert_eq!(c.health.poll_interval_ms, 1000);
    }

    #[test]
    fn bad_checks_name_their_key() {
        let cut = EXAMPLE.find("[health]").expect("health section");
        let head = &EXAMPLE[..cut];
        let check = |body: &str| {
            err(&format!(
                "{head}[[check]]\nservice = \"tcp:192.0.2.10:80\"\n{body}\n"
            ))
        };
        let cases = [
            (
                "type = \"tcp\"\npath = \"/\"",
                "check[0].path: only for http/https checks (this one is tcp)",
            ),
            (
                "interval_ms = 1000",
                "check[0].type: missing (tcp, http, https, udp or exec)",
            ),
            (
                "type = \"tcp\"\ninterval_ms = 1000\ntimeout_ms = 2000",
                "check[0].timeout_ms: 2000 must be at least 10 and at most interval_ms (1000)",
            ),
            (
                "type = \"tcp\"\nfall = 0",
                "check[0].fall: 0 is out of range (1-100)",
            ),
            (
                "type = \"tcp\"\ninterval_ms = 50",
                "check[0].interval_ms: 50 is out of range (100-3600000)",
            ),
            (
                "type = \"http\"\nstatus = [200, 700]",
                "check[0].status: 700 is not an HTTP status (100-599)",
            ),
            (
                "type = \"http\"\npath = \"health\"",
                "check[0].path: `health` must start with /",
            ),
            (
                "type = \"https\"\nverify = true",
                "check[0].ca_file: verify = true needs the CA file",
            ),
            (
                "type = \"http\"\nverify = true",
                "check[0].verify: only for https checks (this one is http)",
            ),
            (
                "type = \"udp\"",
                "check[0].payload: give exactly one of payload and payload_hex",
            ),
            (
                "type = \"udp\"\npayload_hex = \"abc\"",
                "check[0].payload_hex: must be an even number of hex digits",
            ),
            (
                "type = \"udp\"\npayload = \"a\"\nexpect_hex = \"zz\"",
                "check[0].expect_hex: `zz` is not hex",
            ),
            (
                "type = \"exec\"\ncommand = \"check.sh\"",
                "check[0].command: `check.sh` must be an absolute path",
            ),
            (
                "type = \"exec\"",
                "check[0].command: missing for an exec check",
            ),
            (
                "type = \"tcp\"\nservers = [\"172.16.0.2:0\"]",
                "check[0].servers[0]: `172.16.0.2:0` has port 0",
            ),
            (
                "type = \"tcp\"\nservers = [\"172.16.0.2\"]\n[[check.server]]\naddress = \"172.16.0.3\"\nfall = 1",
                "check[0].server[0]: 172.16.0.3 is not in check[0].servers",
            ),
            (
                "type = \"tcp\"\n[[check.server]]\naddress = \"172.16.0.3\"\npath = \"/\"",
                "check[0].server[0].path: only for http/https checks (this one is tcp)",
            ),
            (
                "type = \"tcp\"\n[[check.server]]\naddress = \"172.16.0.3\"\ntype = \"http\"\npath = \"/x\"",
                "no error",
            ),
            (
                "type = \"tcp\"\non_failure = \"drop\"",
                "unknown variant `drop`",
            ),
            (
                "type = \"tcp\"\nconnect_port = 0",
                "check[0].connect_port: 0 is not a port",
            ),
        ];
        for (body, want) in cases {
            let e = check(body);
            assert!(e.contains(want), "{body}\n  got: {e}\n want: {want}");
        }
        // Unknown keys are refused with their line, in blocks and overrides.
        let e = check("type = \"tcp\"\nintervall_ms = 5");
        assert!(e.contains("line ") && e.contains("intervall_ms"), "{e}");
        let e = check("type = \"tcp\"\n[[check.server]]\naddress = \"172.16.0.3\"\nrize = 2");
        assert!(e.contains("line ") && e.contains("rize"), "{e}");
        // The service.
        let e = err(&format!(
            "{head}[[check]]\nservice = \"sctp:1.2.3.4:80\"\ntype = \"tcp\"\n"
        ));
        assert!(e.contains("check[0].service: `sctp:1.2.3.4:80` is not a service (tcp:VIP:PORT or udp:VIP:PORT)"), "{e}");
        let two = "[[check]]\nservice = \"tcp:192.0.2.10:80\"\ntype = \"tcp\"\n";
        let e = err(&format!("{head}{two}{two}"));
        assert!(
            e.contains("check[1].service: tcp 192.0.2.10:80 already has a check (check[0])"),
            "{e}"
        );
        let e = err(&format!("{head}[health]\npoll_interval_ms = 10\n"));
        assert!(
            e.contains("health.poll_interval_ms: 10 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn https_ca_files_are_read_relative_to_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cut = EXAMPLE.find("[health]").expect("health section");
        let text = format!(
            "{}[[check]]\nservice = \"tcp:192.0.2.10:443\"\ntype = \"https\"\nverify = true\nca_file = \"servers-ca.pem\"\n",
            &EXAMPLE[..cut]
        );
        let f = dir.path().join("s.toml");
        std::fs::write(&f, text).expect("write");
        let c = Config::load(&f).expect("load");
        let e = c.health_plans().expect_err("no CA file yet");
        assert!(
            e.starts_with("check[0].ca_file: cannot read ") && e.contains("servers-ca.pem"),
            "{e}"
        );
        std::fs::write(dir.path().join("servers-ca.pem"), "not a pem").expect("write");
        let e = c.health_plans().expect_err("bad CA file");
        assert_eq!(e, "check[0].ca_file: no CERTIFICATE in the file");
    }
}
