//! The sans-IO core of the Tandem director.
//!
//! Everything here works on byte slices handed in by the caller: no DPDK, no I/O, no clock
//! reads (`now` is an argument, in nanoseconds), no threads, and no allocation per packet.
//! The DPDK glue owns the mbufs, the lcores and the clock; it calls
//! [`director::Worker::process`] for every received frame and acts on the returned
//! [`director::Verdict`].
//!
//! - [`wire`]: zero-copy views over Ethernet, ARP, IPv4 and ICMPv4 headers, and checksums.
//! - [`neigh`]: the bounded IPv4 → MAC neighbour table.
//! - [`buf`]: the packet-buffer seam (mbuf in the dataplane, [`buf::VecBuf`] in tests).
//! - [`lb`]: the load-balancing vocabulary (protocols, forwarding methods, flows).
//! - [`conn`]: the per-lcore connection table, the IPVS TCP state machine, sync events.
//! - [`counters`]: per-lcore packet counters and the reasons a packet is dropped.
//! - [`director`]: the director's configuration and the per-packet engine.
//! - [`golden`]: input/expected-output packet fixtures for the engine.
#![forbid(unsafe_code)]

pub mod balance;
pub mod buf;
pub mod conn;
pub mod counters;
pub mod director;
pub mod fwd;
pub mod golden;
mod hop;
pub mod lb;
pub mod neigh;
pub mod sched;
pub mod service;
pub mod wire;

pub use counters::{Counters, DropReason};
pub use director::{ConfigError, Director, Port, Verdict, Vip, Worker};
pub use neigh::{Learned, Neighbour, NeighbourTable};
pub use wire::MacAddr;
