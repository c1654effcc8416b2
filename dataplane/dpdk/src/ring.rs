use std::ffi::{CString, c_void};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Eal;
use crate::burst::Burst;
use crate::error::{Error, Result};
use crate::mempool::Mempool;

/// A lock-free ring of mbufs from many producer lcores to one consumer lcore (`rte_ring`,
/// multi-producer enqueue, single-consumer dequeue): how a worker hands a packet to the worker
/// that owns its connection. Dropping the ring frees the mbufs still in it.
#[derive(Debug)]
pub struct MbufRing<'m> {
    ptr: NonNull<dpdk_sys::rte_ring>,
    name: String,
    consumer_claimed: AtomicBool,
    _pool: PhantomData<&'m Mempool<'m>>,
}

// SAFETY: enqueue is multi-producer safe in DPDK; dequeue is restricted to the one
// `RingConsumer` token, so sharing the ring between lcores is sound.
unsafe impl Send for MbufRing<'_> {}
// SAFETY: as above.
unsafe impl Sync for MbufRing<'_> {}

impl<'m> MbufRing<'m> {
    /// Creates a ring holding up to `capacity` mbufs (exactly; DPDK rounds its storage up).
    pub fn new(_eal: &Eal, name: &str, capacity: u32) -> Result<Self> {
        if capacity == 0 || capacity > (1 << 24) {
            return Err(Error::Invalid(format!(
                "ring {name}: capacity {capacity} is not within 1..=16777216"
            )));
        }
        let cname = CString::new(name)
            .map_err(|_| Error::Invalid(format!("ring name {name:?} has a NUL")))?;
        let flags = dpdk_sys::RING_F_SC_DEQ | dpdk_sys::RING_F_EXACT_SZ;
        // SAFETY: the EAL is initialised (borrowed); valid C string; DPDK validates the rest and
        // returns NULL with rte_errno on failure. SOCKET_ID_ANY = -1.
        let ptr = unsafe { dpdk_sys::rte_ring_create(cname.as_ptr(), capacity, -1, flags) };
        NonNull::new(ptr)
            .map(|ptr| MbufRing {
                ptr,
                name: name.to_owned(),
                consumer_claimed: AtomicBool::new(false),
                _pool: PhantomData,
            })
            .ok_or_else(|| Error::from_errno(format!("rte_ring_create({name}, {capacity})")))
    }

    /// Moves as many of the burst's mbufs as fit into the ring, in order; the rest stay in the
    /// burst (the caller frees and counts them). Returns how many were enqueued. Any lcore.
    pub fn enqueue_burst(&self, burst: &mut Burst<'m>) -> usize {
        let (ptr, n) = burst.held_ptr();
        if n == 0 {
            return 0;
        }
        // SAFETY: the ring is valid; `ptr` holds `n` valid owned mbuf pointers; multi-producer
        // enqueue is thread-safe; the first `done` pointers now belong to the ring.
        let done = unsafe {
            dpdk_sys::rte_ring_mp_enqueue_burst(
                self.ptr.as_ptr(),
                ptr as *const *mut c_void,
                u32::from(n),
                std::ptr::null_mut(),
            )
        };
        let done = done as usize;
        burst.consumed(done);
        done
    }

    /// Claims the single consumer side.
    pub fn consumer(&self) -> Result<RingConsumer<'_, 'm>> {
        if self.consumer_claimed.swap(true, Ordering::AcqRel) {
            return Err(Error::Invalid(format!(
                "ring {}: consumer already claimed",
                self.name
            )));
        }
        Ok(RingConsumer { ring: self })
    }

    /// Mbufs currently in the ring.
    pub fn len(&self) -> usize {
        // SAFETY: valid ring; reads head/tail indices only.
        unsafe { dpdk_sys::rte_ring_count(self.ptr.as_ptr()) as usize }
    }

    /// True when the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn dequeue(&self, burst: &mut Burst<'m>) -> usize {
        let (ptr, room) = burst.spare_ptr();
        if room == 0 {
            return 0;
        }
        // SAFETY: only the claimed consumer (or Drop, with exclusive access) dequeues; `ptr` has
        // `room` writable slots.
        let n = unsafe {
            dpdk_sys::rte_ring_sc_dequeue_burst(
                self.ptr.as_ptr(),
                ptr.cast::<*mut c_void>(),
                u32::from(room),
                std::ptr::null_mut(),
            )
        } as usize;
        // SAFETY: the ring held owned mbufs; the `n` dequeued now belong to the burst.
        unsafe { burst.filled(n) };
        n
    }
}

impl Drop for MbufRing<'_> {
    fn drop(&mut self) {
        loop {
            let mut b = Burst::new();
            if self.dequeue(&mut b) == 0 {
                break;
            }
        }
        // SAFETY: the ring is ours, empty, and no producer or consumer can still use it
        // (they borrow it).
        unsafe { dpdk_sys::rte_ring_free(self.ptr.as_ptr()) };
    }
}

/// The consumer side of an [`MbufRing`], owned by the one lcore that drains it.
#[derive(Debug)]
pub struct RingConsumer<'r, 'm> {
    ring: &'r MbufRing<'m>,
}

impl<'m> RingConsumer<'_, 'm> {
    /// Takes up to the burst's free room of mbufs from the ring; returns how many.
    pub fn dequeue_burst(&mut self, burst: &mut Burst<'m>) -> usize {
        self.ring.dequeue(burst)
    }
}

impl Drop for RingConsumer<'_, '_> {
    fn drop(&mut self) {
        self.ring.consumer_claimed.store(false, Ordering::Release);
    }
}
