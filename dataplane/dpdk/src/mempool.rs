use std::ffi::CString;
use std::ptr::NonNull;

use crate::Eal;
use crate::error::{Error, Result};
use crate::mbuf::Mbuf;

/// A DPDK packet-buffer pool (`rte_pktmbuf_pool_create`), freed on drop.
#[derive(Debug)]
pub struct Mempool<'eal> {
    ptr: NonNull<dpdk_sys::rte_mempool>,
    _eal: std::marker::PhantomData<&'eal Eal>,
}

// SAFETY: rte_mempool is designed for concurrent use from many lcores (per-lcore caches plus a
// multi-producer/multi-consumer ring); the pointer itself is never mutated.
unsafe impl Send for Mempool<'_> {}
// SAFETY: as above: every operation we expose is thread-safe in DPDK.
unsafe impl Sync for Mempool<'_> {}

impl<'eal> Mempool<'eal> {
    /// The data room of [`Mempool::new`]'s mbufs: DPDK's `RTE_MBUF_DEFAULT_BUF_SIZE`, 2048 bytes
    /// of packet plus `RTE_PKTMBUF_HEADROOM` (128).
    pub const DEFAULT_DATA_ROOM: u16 = narrow(dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE);

    /// Headroom DPDK reserves at the front of every mbuf's data room (`RTE_PKTMBUF_HEADROOM`).
    pub const HEADROOM: u16 = narrow(dpdk_sys::RTE_PKTMBUF_HEADROOM);

    /// Creates a pool of `n` mbufs (best as 2^k − 1) with a per-lcore cache of `cache` and the
    /// default data room ([`Mempool::DEFAULT_DATA_ROOM`]), on the caller's NUMA socket.
    pub fn new(eal: &'eal Eal, name: &str, n: u32, cache: u32) -> Result<Self> {
        Self::with_data_room(eal, name, n, cache, Self::DEFAULT_DATA_ROOM)
    }

    /// Like [`Mempool::new`] with `data_room` bytes per mbuf, headroom included: a frame of
    /// up to `data_room − HEADROOM` bytes fits one mbuf. Small data rooms let a pool hold
    /// millions of small packets (a replayed capture); `data_room` must exceed the headroom.
    pub fn with_data_room(
        _eal: &'eal Eal,
        name: &str,
        n: u32,
        cache: u32,
        data_room: u16,
    ) -> Result<Self> {
        let cname = CString::new(name)
            .map_err(|_| Error::Invalid(format!("mempool name {name:?} has a NUL")))?;
        if data_room <= Self::HEADROOM {
            return Err(Error::Invalid(format!(
                "mempool {name}: data room {data_room} does not exceed the {} bytes of headroom",
                Self::HEADROOM
            )));
        }
        // SAFETY: the EAL is initialised (borrowed); the name is a valid C string.
        let socket = unsafe { dpdk_sys::rte_socket_id() };
        let socket = i32::try_from(socket).unwrap_or(-1); // SOCKET_ID_ANY for LCORE_ID_ANY threads
        // SAFETY: valid name; numeric arguments are checked by DPDK, which returns NULL + rte_errno.
        let ptr = unsafe {
            dpdk_sys::rte_pktmbuf_pool_create(cname.as_ptr(), n, cache, 0, data_room, socket)
        };
        NonNull::new(ptr)
            .map(|ptr| Mempool {
                ptr,
                _eal: std::marker::PhantomData,
            })
            .ok_or_else(|| {
                Error::from_errno(format!(
                    "rte_pktmbuf_pool_create({name}, n={n}, cache={cache}, data_room={data_room})"
                ))
            })
    }

    pub(crate) fn as_ptr(&self) -> *mut dpdk_sys::rte_mempool {
        self.ptr.as_ptr()
    }

    /// Takes one mbuf from the pool, or `None` when the pool is empty.
    pub fn alloc(&self) -> Option<Mbuf<'_>> {
        // SAFETY: the pool is valid for 'self; rte_pktmbuf_alloc returns NULL when empty.
        let m = unsafe { dpdk_sys::rte_pktmbuf_alloc(self.ptr.as_ptr()) };
        NonNull::new(m).map(|m| {
            // SAFETY: a freshly allocated mbuf that nobody else references.
            unsafe { Mbuf::from_raw(m) }
        })
    }

    /// Mbufs currently free in the pool (including per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is valid; the call only reads counters.
        unsafe { dpdk_sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs currently taken from the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is valid; the call only reads counters.
        unsafe { dpdk_sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }
}

/// A DPDK size constant as the `u16` the mbuf API takes; a value that does not fit fails the
/// build (const evaluation).
#[expect(
    clippy::cast_possible_truncation,
    reason = "the assert rules truncation out"
)]
const fn narrow(v: u32) -> u16 {
    assert!(v <= u16::MAX as u32, "a DPDK mbuf size does not fit u16");
    v as u16
}

impl Drop for Mempool<'_> {
    fn drop(&mut self) {
        // SAFETY: the pool was created by us; ports using it borrow it and are gone; mbufs borrow
        // it too ('_ lifetime), so none is outstanding.
        unsafe { dpdk_sys::rte_mempool_free(self.ptr.as_ptr()) };
    }
}
