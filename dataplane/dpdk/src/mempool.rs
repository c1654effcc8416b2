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
    /// Creates a pool of `n` mbufs (best as 2^k − 1) with a per-lcore cache of `cache` and the
    /// default data room (2048 bytes + headroom), on the caller's NUMA socket.
    pub fn new(_eal: &'eal Eal, name: &str, n: u32, cache: u32) -> Result<Self> {
        let cname = CString::new(name)
            .map_err(|_| Error::Invalid(format!("mempool name {name:?} has a NUL")))?;
        let data_room = u16::try_from(dpdk_sys::RTE_MBUF_DEFAULT_BUF_SIZE).unwrap_or(u16::MAX);
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
                    "rte_pktmbuf_pool_create({name}, n={n}, cache={cache})"
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

impl Drop for Mempool<'_> {
    fn drop(&mut self) {
        // SAFETY: the pool was created by us; ports using it borrow it and are gone; mbufs borrow
        // it too ('_ lifetime), so none is outstanding.
        unsafe { dpdk_sys::rte_mempool_free(self.ptr.as_ptr()) };
    }
}
