//! Tandem's virtual rack: network namespaces joined by veth pairs to Linux bridges, with the
//! directors' ports handed to `tandem-dataplane` through DPDK's `net_af_xdp` (or `net_af_packet`)
//! vdevs, and the checks that drive traffic through it.
//!
//! Layers, bottom up:
//! - [`topology`]: the rack as data and the commands that build it (pure);
//! - [`config`]: each director's dataplane config file (pure);
//! - [`ctl`]: configuring a director with `tandemctl` (ipvsadm forms) over its admin socket;
//! - [`stats`], [`probe`]: reading the dataplane's stats and the hosts' view (`ping`, `ip -j`,
//!   `tcpdump`), with pure parsers;
//! - [`exec`], [`process`]: bounded external commands and the processes the rack starts;
//! - [`serve`], [`client`]: the real servers' TCP/UDP services and the client's load
//!   (`tandem-rack serve`/`client`, run inside the namespaces);
//! - [`rack`]: up / down / status, and the [`rack::Rack`] guard that tears down on drop;
//! - [`modes`]: NAT/TUN/DR traffic checks against the VIPs;
//! - [`demo`]: the list of checks `tandem-rack demo` runs;
//! - [`pcap`], [`bench`], [`bench_run`]: the whole-dataplane benchmark against testpmd
//!   (`tandem-rack bench-pcap`, `bench-dataplane`), replaying a capture through DPDK's
//!   `net_pcap` vdev; no network at all.
//!
//! Traffic rule: everything here sends packets only to addresses inside namespaces the rack
//! created, and every loop is bounded in count and time.

#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_run;
pub mod client;
pub mod config;
pub mod ctl;
pub mod demo;
pub mod drill;
pub mod error;
pub mod exec;
pub mod health;
pub mod hosts;
pub mod modes;
pub mod net;
pub mod pair;
pub mod pcap;
pub mod probe;
pub mod process;
pub mod rack;
pub mod serve;
pub mod stats;
pub mod topology;

pub use client::{ClientOptions, ClientReport};
pub use config::{DirectorConfig, Pmd};
pub use demo::{Check, DemoReport, run_demo};
pub use error::{Error, Result};
pub use exec::Cancel;
pub use rack::{
    DirectorId, Mode, Rack, RackOptions, RackSpec, RackStatus, Teardown, status, teardown,
};
pub use stats::{Counters, Stats};
pub use topology::{Prefix, Topology};
