//! The `tandem-dataplane --config` file of each director, generated from the rack description.
//!
//! The shape is exactly `dataplane/examples/director.toml`; a unit test deserializes that example
//! into these structs with unknown fields refused, so a change on either side shows up.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rack::DirectorSpec;
use crate::topology::Prefix;

/// Which DPDK poll-mode driver drives the veth ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pmd {
    /// `net_af_xdp`: an XDP program steals the frames for an AF_XDP socket; the director's kernel
    /// never sees them.
    #[default]
    AfXdp,
    /// `net_af_packet`: the fallback; a packet socket sees frames the kernel also sees.
    AfPacket,
}

impl Pmd {
    /// The vdev name of the `index`-th port: `net_af_xdp0`.
    pub fn device(self, index: usize) -> String {
        match self {
            Pmd::AfXdp => format!("net_af_xdp{index}"),
            Pmd::AfPacket => format!("net_af_packet{index}"),
        }
    }

    /// The `--vdev` argument of the `index`-th port on interface `iface`.
    pub fn vdev_arg(self, index: usize, iface: &str) -> String {
        match self {
            Pmd::AfXdp => format!(
                "{},iface={iface},start_queue=0,queue_count=1",
                self.device(index)
            ),
            Pmd::AfPacket => format!("{},iface={iface}", self.device(index)),
        }
    }
}

impl fmt::Display for Pmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pmd::AfXdp => "af_xdp",
            Pmd::AfPacket => "af_packet",
        })
    }
}

impl FromStr for Pmd {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "af_xdp" => Ok(Pmd::AfXdp),
            "af_packet" => Ok(Pmd::AfPacket),
            other => Err(Error::parse(
                "--pmd",
                format!("`{other}` is neither af_xdp nor af_packet"),
            )),
        }
    }
}

/// A director's configuration file: the dataplane's own type, so the rack can never write a
/// file the dataplane would refuse or read differently.
pub use tandem_dataplane::config::Config as DirectorConfig;
use tandem_dataplane::config::{DataplaneSection, EalSection, Ipv4Cidr, PortSection, VipSection};

/// The TOML text of `cfg`, with a header saying who wrote it.
pub fn to_toml(cfg: &DirectorConfig) -> Result<String> {
    let body = cfg
        .to_toml()
        .map_err(|e| Error::parse("director config", format!("cannot serialize: {e}")))?;
    Ok(format!(
        "# Written by tandem-rack; the shape of dataplane/examples/director.toml.\n{body}"
    ))
}

/// Parses and validates a config file's text exactly as the dataplane does.
pub fn from_toml(text: &str) -> Result<DirectorConfig> {
    DirectorConfig::parse(text, "director config")
        .map_err(|e| Error::parse("director config", e.to_string()))
}

/// Generates the config of `director` for rack `prefix` on `lcore`, writing its stats into
/// `stats_file`.
pub fn director_config(
    director: &DirectorSpec,
    prefix: &Prefix,
    pmd: Pmd,
    lcore: u32,
    stats_file: &Path,
) -> DirectorConfig {
    let mut args: Vec<String> = vec![
        "-l".into(),
        lcore.to_string(),
        "--no-pci".into(),
        "--no-huge".into(),
        "-m".into(),
        "512".into(),
        "--file-prefix".into(),
        prefix.dpdk_file_prefix(director.id.lower()),
    ];
    let mut ports = Vec::new();
    for (index, port) in director.ports.iter().enumerate() {
        args.push("--vdev".into());
        args.push(pmd.vdev_arg(index, &port.iface));
        ports.push(PortSection {
            name: port.name.clone(),
            device: pmd.device(index),
            address: Ipv4Cidr {
                addr: port.address.addr,
                prefix_len: port.address.len,
            },
            mtu: None,
        });
    }
    DirectorConfig {
        eal: EalSection { args },
        dataplane: DataplaneSection {
            stats_file: Some(stats_file.display().to_string()),
            ..DataplaneSection::default()
        },
        ports,
        vips: director
            .vips
            .iter()
            .map(|v| VipSection {
                address: v.address,
                port: v.port.clone(),
            })
            .collect(),
        routes: director.routes.clone(),
        connections: Default::default(),
        services: director.services.clone(),
    }
}

/// The lcores of directors A and B: `0` and `1`, or both `0` on a machine whose CPU 1 is not
/// online (a one-core machine).
pub fn director_lcores(online_cpus: &[u32]) -> (u32, u32) {
    if online_cpus.contains(&1) {
        (0, 1)
    } else {
        (0, 0)
    }
}

/// Parses a kernel CPU list (`/sys/devices/system/cpu/online`): `0-3,6,8-9`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = |e: std::num::ParseIntError| Error::parse("CPU list", format!("`{s}`: {e}"));
        if let Some((lo, hi)) = part.split_once('-') {
            let (lo, hi): (u32, u32) = (lo.parse().map_err(bad)?, hi.parse().map_err(bad)?);
            if hi < lo || hi - lo > 4096 {
                return Err(Error::parse("CPU list", format!("bad range `{part}`")));
            }
            cpus.extend(lo..=hi);
        } else {
            cpus.push(part.parse().map_err(bad)?);
        }
    }
    Ok(cpus)
}

/// The CPUs online on this machine (CPU 0 alone if that cannot be read).
pub fn online_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(&s).ok())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec![0])
}
