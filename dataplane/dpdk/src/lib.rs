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
mod mem;
mod mempool;
mod port;
mod ring;

pub use burst::{BURST_SIZE, Burst};
pub use eal::{Eal, LcoreId};
pub use error::{Error, Result, errno_text};
pub use mbuf::Mbuf;
pub use mem::advise_huge_pages;
pub use mempool::Mempool;
pub use port::{
    LinkStatus, Port, PortConfig, PortStats, RxQueue, TxQueue, device_names, port_id_by_name,
};
pub use ring::{MbufRing, RingConsumer};

/// Starts loading the cache line holding the byte at `p` into every cache level
/// (`PREFETCHT0`, what `rte_prefetch0` does). Never dereferences it: any address is fine. A
/// no-op off x86_64. The rx loop hands it to `Worker::prefetch_hinted`.
#[inline]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of the x86_64 baseline (the intrinsic is only `unsafe` for its target
    // feature), and a prefetch never faults nor reads memory architecturally, whatever `p`.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `RTE_MAX_LCORE` of the DPDK we link: lcore ids are below this.
pub const MAX_LCORE: usize = dpdk_sys::RTE_MAX_LCORE as usize;
