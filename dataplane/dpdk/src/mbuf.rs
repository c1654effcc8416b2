use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::mempool::Mempool;

/// One packet buffer, owned: dropping it returns it (and any chained segments) to its pool.
///
/// Only the first segment's data is exposed as a slice; the dataplane configures ports so that
/// received frames fit one segment (MTU ≤ data room), and multi-segment mbufs are dropped.
#[derive(Debug)]
pub struct Mbuf<'pool> {
    ptr: NonNull<dpdk_sys::rte_mbuf>,
    _pool: PhantomData<&'pool Mempool<'pool>>,
}

// SAFETY: an mbuf is owned by exactly one Mbuf value; moving it to another lcore and freeing it
// there is what DPDK does all the time (the pool is thread-safe).
unsafe impl Send for Mbuf<'_> {}

impl<'pool> Mbuf<'pool> {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `ptr` must be a valid mbuf that nobody else owns or will free, from a pool that lives at
    /// least as long as `'pool`.
    pub(crate) unsafe fn from_raw(ptr: NonNull<dpdk_sys::rte_mbuf>) -> Self {
        Mbuf {
            ptr,
            _pool: PhantomData,
        }
    }

    /// Gives up ownership without freeing.
    pub(crate) fn into_raw(self) -> *mut dpdk_sys::rte_mbuf {
        let p = self.ptr.as_ptr();
        std::mem::forget(self);
        p
    }

    /// Number of segments in the chain.
    pub fn segments(&self) -> u16 {
        // SAFETY: we own a valid mbuf.
        unsafe { (*self.ptr.as_ptr()).nb_segs }
    }

    /// Length of the data in the first segment.
    pub fn len(&self) -> usize {
        // SAFETY: we own a valid mbuf; reading a plain field (what rte_pktmbuf_data_len does,
        // without a call per frame).
        usize::from(unsafe { (*self.ptr.as_ptr()).data_len })
    }

    /// True when the first segment holds no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The data of the first segment.
    pub fn data(&self) -> &[u8] {
        let len = self.len();
        let start = self.data_ptr();
        // SAFETY: `start` points at `data_len` initialised bytes inside the mbuf's buffer, which
        // we own for as long as the returned borrow of self lives.
        unsafe { std::slice::from_raw_parts(start, len) }
    }

    /// The data of the first segment, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        let start = self.data_ptr();
        // SAFETY: as in `data`, and `&mut self` guarantees exclusive access to the buffer.
        unsafe { std::slice::from_raw_parts_mut(start, len) }
    }

    fn data_ptr(&self) -> *mut u8 {
        // SAFETY: we own a valid mbuf; reading a plain field.
        let m = unsafe { &*self.ptr.as_ptr() };
        // buf_addr + data_off is rte_pktmbuf_mtod, computed here without a call per frame
        // (not dereferenced here; DPDK keeps data_off within the buffer).
        m.buf_addr
            .cast::<u8>()
            .wrapping_add(usize::from(m.data_off))
    }

    /// Appends `len` bytes at the end of the data and returns them (zeroed), or `None` if the
    /// buffer has no room.
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: we own a valid single-segment mbuf; rte_pktmbuf_append returns NULL if no room.
        let p = unsafe { dpdk_sys::rte_pktmbuf_append(self.ptr.as_ptr(), len) };
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` points at `len` bytes of tailroom just claimed inside our buffer.
        let s = unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), usize::from(len)) };
        s.fill(0);
        Some(s)
    }

    /// Removes `len` bytes from the start of the data (e.g. a decapsulated outer header).
    pub fn adj(&mut self, len: u16) -> bool {
        // SAFETY: valid owned mbuf; rte_pktmbuf_adj returns NULL if len > data_len.
        !unsafe { dpdk_sys::rte_pktmbuf_adj(self.ptr.as_ptr(), len) }.is_null()
    }

    /// Prepends `len` bytes at the start of the data (e.g. an encapsulation header) and returns
    /// the new, uninitialised-but-valid bytes, or `None` without enough headroom.
    pub fn prepend(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: valid owned mbuf; rte_pktmbuf_prepend returns NULL if headroom is short.
        let p = unsafe { dpdk_sys::rte_pktmbuf_prepend(self.ptr.as_ptr(), len) };
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` points at `len` bytes of former headroom, now data, inside our buffer.
        Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), usize::from(len)) })
    }

    /// The mbuf's `port` field: the DPDK input port, or whatever the owner stored there (the
    /// dataplane stores its own port index before handing an mbuf to another lcore).
    pub fn port(&self) -> u16 {
        // SAFETY: we own a valid mbuf; reading a plain field.
        unsafe { (*self.ptr.as_ptr()).port }
    }

    /// Sets the mbuf's `port` field.
    pub fn set_port(&mut self, port: u16) {
        // SAFETY: we own a valid mbuf exclusively (&mut self); writing a plain field.
        unsafe { (*self.ptr.as_ptr()).port = port };
    }

    /// Free bytes in front of the data (room for [`prepend`](Self::prepend)).
    pub fn headroom(&self) -> usize {
        // SAFETY: we own a valid mbuf; the call only reads data_off.
        usize::from(unsafe { dpdk_sys::rte_pktmbuf_headroom(self.ptr.as_ptr()) })
    }

    /// Removes `len` bytes from the end of the data.
    pub fn trim(&mut self, len: u16) -> bool {
        // SAFETY: valid owned mbuf; rte_pktmbuf_trim returns -1 if len > data_len.
        unsafe { dpdk_sys::rte_pktmbuf_trim(self.ptr.as_ptr(), len) == 0 }
    }

    /// The RSS hash the NIC computed, if it set one.
    pub fn rss_hash(&self) -> Option<u32> {
        // SAFETY: we own a valid mbuf for as long as this borrow lives.
        let m = unsafe { self.ptr.as_ref() };
        // RTE_MBUF_F_RX_RSS_HASH = 1 << 1 (rte_mbuf_core.h): the union holds the RSS hash.
        if m.ol_flags & (1 << 1) == 0 {
            return None;
        }
        // SAFETY: the flag above says the driver filled the `hash` member of this union; any
        // bit pattern is a valid value of it.
        let hash = unsafe { m.__bindgen_anon_2.hash };
        // SAFETY: `rss` is the member the flag names; any bit pattern is a valid u32.
        Some(unsafe { hash.rss })
    }
}

impl Drop for Mbuf<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and nobody else references it.
        unsafe { dpdk_sys::rte_pktmbuf_free(self.ptr.as_ptr()) };
    }
}
