//! A small safe wrapper over [`dpdk_sys`]: the EAL, mempools, owning mbufs, ports with their
//! rx/tx queues, bursts that never leak the unsent tail, and lcore launch.
//!
//! Together with `dpdk-sys` this crate is the only place in Tandem where `unsafe` code lives;
//! every `unsafe` block states why it is sound in a `// SAFETY:` comment.
//!
//! Ownership model:
//! - [`Eal`] is initialised once per process and cleans up on drop; everything else borrows it.
//! - [`Mempool`] owns a DPDK packet pool; [`Mbuf`] owns one packet and frees it on drop.
//! - [`Port`] owns a configured and started ethdev and stops and closes it on drop. Each of its
//!   queues is claimed by exactly one worker through [`RxQueue`]/[`TxQueue`] tokens, because DPDK
//!   queues are not thread-safe.
//! - [`Burst`] is a fixed-size stack array of mbufs; whatever it still holds when dropped is freed.

#![deny(clippy::unwrap_used, clippy::panic)]

mod burst;
mod eal;
mod error;
mod mbuf;
mod mempool;
mod port;
mod ring;

pub use burst::{BURST_SIZE, Burst};
pub use eal::{Eal, LcoreId};
pub use error::{Error, Result, errno_text};
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use port::{
    LinkStatus, Port, PortConfig, PortStats, RxQueue, TxQueue, device_names, port_id_by_name,
};
pub use ring::{MbufRing, RingConsumer};

/// `RTE_MAX_LCORE` of the DPDK we link: lcore ids are below this.
pub const MAX_LCORE: usize = dpdk_sys::RTE_MAX_LCORE as usize;
