//! `tandem-syncd`'s TOML configuration file (see `syncd/examples/syncd.toml`).
//!
//! Parsing is strict, as the dataplane's: unknown keys are errors (a typo must not silently
//! change nothing), and every error names the file, the line and the key. Relative paths
//! (certificates, sockets, the status file) are taken relative to the config file's folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

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
    /// How long to listen for the peer after start before deciding alone, ms. Default: the
    /// dead interval plus one interval.
    pub init_hold_ms: Option<u64>,
}

impl Default for HeartbeatSection {
    fn default() -> Self {
        HeartbeatSection {
            interval_ms: 50,
            dead_interval_ms: None,
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
            &mut self.daemon.status_file,
        ] {
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
        Ok(())
    }

    /// The role machine's configuration.
    pub fn role(&self) -> RoleConfig {
        let mut r = RoleConfig::new(self.node.id, self.node.priority);
        r.interval = Duration::from_millis(self.heartbeat.interval_ms);
        r.dead_interval = self.heartbeat.dead_interval_ms.map(Duration::from_millis);
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
}
