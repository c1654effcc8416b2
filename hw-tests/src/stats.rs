//! The dataplane's stats file: what it says and how two readings differ.
//!
//! Counters are kept as a flat map of dotted names (`arp_replies`, `drops.not_for_us_mac`) so a
//! counter the dataplane adds later shows up in every report without a change here.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::normalize_mac;

/// One reading of a stats file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// When the dataplane wrote it (milliseconds since the epoch).
    pub unix_ms: u64,
    /// The DPDK ports.
    #[serde(default)]
    pub ports: Vec<PortInfo>,
    /// Per-lcore counters.
    #[serde(default)]
    pub lcores: Vec<LcoreStats>,
    /// Sum over lcores.
    pub total: Counters,
}

/// A DPDK port as the dataplane reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    /// The operator's name (`outside`).
    pub name: String,
    /// DPDK device name.
    #[serde(default)]
    pub device: String,
    /// DPDK port id.
    #[serde(default)]
    pub port_id: u16,
    /// The port's MAC.
    pub mac: String,
    /// The director's own address on it.
    #[serde(default)]
    pub address: String,
}

/// One lcore's counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LcoreStats {
    /// The lcore id.
    pub lcore: u32,
    /// Its counters.
    pub counters: Counters,
}

/// Counters by dotted name; nested JSON objects flatten to `outer.inner`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Counters {
    /// A counter's value; a counter the file does not have reads as 0.
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// `self - before`, per counter, saturating at 0 (a restarted dataplane starts again at 0).
    pub fn delta(&self, before: &Counters) -> Counters {
        Counters(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(before.get(k))))
                .collect(),
        )
    }

    /// The counters that are not zero.
    pub fn nonzero(&self) -> Counters {
        Counters(
            self.0
                .iter()
                .filter(|(_, v)| **v != 0)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        )
    }

    fn flatten_into(&mut self, prefix: &str, v: &serde_json::Value) -> Result<()> {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let name = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    self.flatten_into(&name, v)?;
                }
                Ok(())
            }
            serde_json::Value::Number(n) => {
                let n = n.as_u64().ok_or_else(|| {
                    Error::parse("stats counters", format!("`{prefix}` = {n} is not a u64"))
                })?;
                self.0.insert(prefix.to_owned(), n);
                Ok(())
            }
            // Strings, booleans and nulls are not counters; ignore them.
            _ => Ok(()),
        }
    }
}

impl Serialize for Counters {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Counters {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let mut c = Counters::default();
        c.flatten_into("", &v).map_err(serde::de::Error::custom)?;
        Ok(c)
    }
}

impl Stats {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::parse("stats file", e.to_string()))
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(&text).map_err(|e| Error::parse(path.display().to_string(), e.to_string()))
    }

    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&PortInfo> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The normalized MAC of port `name`.
    pub fn port_mac(&self, name: &str) -> Option<String> {
        self.port(name).and_then(|p| normalize_mac(&p.mac))
    }
}
