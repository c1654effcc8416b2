//! The `tandem-dataplane --config` file of each director, generated from the rack description.
//!
//! The shape is exactly `dataplane/examples/director.toml`; a unit test deserializes that example
//! into these structs with unknown fields refused, so a change on either side shows up.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rack::{DirectorId, DirectorSpec};
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

    /// The `--vdev` argument of the `index`-th port on interface `iface`, with `queues` rx/tx
    /// queue pairs (one per worker lcore):
    /// - AF_XDP: one XSK socket per queue of the interface, `start_queue=0,queue_count=N` (the
    ///   interface needs N rx queues: a veth created with `numrxqueues N`);
    /// - AF_PACKET: `qpairs=N` packet sockets in one `PACKET_FANOUT_HASH` group, so the kernel
    ///   spreads frames over them by flow hash whatever queue they arrived on.
    pub fn vdev_arg(self, index: usize, iface: &str, queues: u16) -> String {
        match self {
            Pmd::AfXdp => format!(
                "{},iface={iface},start_queue=0,queue_count={queues}",
                self.device(index)
            ),
            Pmd::AfPacket if queues > 1 => {
                format!("{},iface={iface},qpairs={queues}", self.device(index))
            }
            Pmd::AfPacket => format!("{},iface={iface}", self.device(index)),
        }
    }
}

impl Pmd {
    /// The driver for a director with `workers` worker lcores when none was asked for: AF_XDP
    /// for one, AF_PACKET for more (see [`Pmd::check_workers`]).
    pub fn default_for(workers: u16) -> Self {
        if workers > 1 {
            Pmd::AfPacket
        } else {
            Pmd::AfXdp
        }
    }

    /// Whether this driver can give a veth `workers` queues. DPDK 22.11's AF_XDP PMD cannot:
    /// it takes its queue limit from the interface's *combined* channels (`ethtool -l`), and veth
    /// reports only separate RX/TX counts (combined n/a), so the PMD caps `queue_count` at 1
    /// ("Specified queue count 2 is larger than combined queue count 1") although the veth has
    /// two rx queues that the bridge fills by flow hash. AF_PACKET's `qpairs=N` works: N packet
    /// sockets in one `PACKET_FANOUT_HASH` group.
    pub fn check_workers(self, workers: u16) -> Result<()> {
        if self == Pmd::AfXdp && workers > 1 {
            return Err(Error::Topology(format!(
                "--pmd af_xdp with {workers} workers: each port needs {workers} queues, and \
                 DPDK's AF_XDP PMD opens only one on a veth (it counts `ethtool -l` combined \
                 channels, which veth does not have); use --pmd af_packet (qpairs={workers}, \
                 flows spread by PACKET_FANOUT_HASH)"
            )));
        }
        Ok(())
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

/// The EAL lcores of one director: lcore ids, each pinned to a CPU. One worker runs per lcore,
/// and each port gets one rx/tx queue per worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lcores {
    /// `(lcore id, CPU)`, in worker order.
    map: Vec<(u32, u32)>,
}

impl Lcores {
    /// One lcore, `lcore`, on the CPU of the same number.
    pub fn single(lcore: u32) -> Self {
        Self {
            map: vec![(lcore, lcore)],
        }
    }

    /// `workers` lcores `0..workers`: lcore i on CPU i when there are that many CPUs online
    /// (`-l 0,1`), else spread round-robin over the online CPUs (`--lcores 0@0,1@1,2@0`; the
    /// workers back off when idle, so sharing a CPU works, slowly).
    pub fn spread(workers: u16, online_cpus: &[u32]) -> Self {
        let cpus: &[u32] = if online_cpus.is_empty() {
            &[0]
        } else {
            online_cpus
        };
        let direct = (0..u32::from(workers)).all(|l| cpus.contains(&l));
        let map = (0..u32::from(workers))
            .zip(cpus.iter().cycle())
            .map(|(l, c)| (l, if direct { l } else { *c }))
            .collect();
        Self { map }
    }

    /// The number of lcores (workers).
    pub fn count(&self) -> u16 {
        u16::try_from(self.map.len()).unwrap_or(u16::MAX)
    }

    /// The lcore ids.
    pub fn ids(&self) -> Vec<u32> {
        self.map.iter().map(|(l, _)| *l).collect()
    }

    /// The EAL arguments: `-l 0,1` when every lcore runs on its own CPU number, else
    /// `--lcores 0@0,1@1,2@0`.
    pub fn eal_args(&self) -> Vec<String> {
        if self.map.iter().all(|(l, c)| l == c) {
            let list = self.ids().iter().map(u32::to_string).collect::<Vec<_>>();
            vec!["-l".into(), list.join(",")]
        } else {
            let list = self
                .map
                .iter()
                .map(|(l, c)| format!("{l}@{c}"))
                .collect::<Vec<_>>();
            vec!["--lcores".into(), list.join(",")]
        }
    }
}

/// Generates the config of `director` for rack `prefix` on `lcores` (one worker each, one queue
/// per worker on every port), writing its stats into `stats_file`.
pub fn director_config(
    director: &DirectorSpec,
    prefix: &Prefix,
    pmd: Pmd,
    lcores: &Lcores,
    stats_file: &Path,
) -> DirectorConfig {
    let mut args: Vec<String> = lcores.eal_args();
    args.extend(["--no-pci", "--no-huge", "-m", "512", "--file-prefix"].map(str::to_owned));
    args.push(prefix.dpdk_file_prefix(director.id.lower()));
    let mut ports = Vec::new();
    for (index, port) in director.ports.iter().enumerate() {
        args.push("--vdev".into());
        args.push(pmd.vdev_arg(index, &port.iface, lcores.count()));
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
        // Next to the stats file: two directors on one machine need two sockets.
        control: tandem_dataplane::config::ControlSection {
            socket: stats_file
                .with_file_name(format!("{}.admin.sock", director.id.lower()))
                .display()
                .to_string(),
            ..Default::default()
        },
        sync: None,
    }
}

/// The lcores of director `id` running `workers` workers. One worker: A on lcore `0`, B on
/// lcore `1`, or `0` on a machine whose CPU 1 is not online (a one-core machine). Several:
/// lcores `0..workers` ([`Lcores::spread`]); with two workers for A on a two-core machine, A
/// and B share CPU 1 (both back off when idle).
pub fn director_lcores(online_cpus: &[u32], id: DirectorId, workers: u16) -> Lcores {
    match (id, workers) {
        (_, 0 | 1) if id == DirectorId::B && online_cpus.contains(&1) => Lcores::single(1),
        (_, 0 | 1) => Lcores::single(0),
        (_, n) => Lcores::spread(n, online_cpus),
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
