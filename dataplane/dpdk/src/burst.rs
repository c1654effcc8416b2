use std::mem::MaybeUninit;
use std::ptr::NonNull;

use crate::mbuf::Mbuf;

/// Mbufs per burst: the usual DPDK choice, balancing per-call overhead and latency.
pub const BURST_SIZE: usize = 32;

/// A fixed-size stack array of owned mbufs: what an rx burst fills and a tx burst drains.
/// No allocation. Whatever it still holds when dropped is freed, so a tx burst's unsent tail
/// can never leak: the caller either retries it or lets it drop (and counts the drop).
#[derive(Debug)]
pub struct Burst<'pool> {
    // Invariant: slots[..len] hold valid, owned mbufs.
    slots: [MaybeUninit<*mut dpdk_sys::rte_mbuf>; BURST_SIZE],
    len: usize,
    _pool: std::marker::PhantomData<Mbuf<'pool>>,
}

impl Default for Burst<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'pool> Burst<'pool> {
    /// An empty burst.
    pub fn new() -> Self {
        Burst {
            slots: [MaybeUninit::uninit(); BURST_SIZE],
            len: 0,
            _pool: std::marker::PhantomData,
        }
    }

    /// Number of mbufs held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when no more mbufs fit.
    pub fn is_full(&self) -> bool {
        self.len == BURST_SIZE
    }

    /// Adds an mbuf; gives it back if the burst is full.
    pub fn push(&mut self, m: Mbuf<'pool>) -> Result<(), Mbuf<'pool>> {
        if self.is_full() {
            return Err(m);
        }
        self.slots[self.len] = MaybeUninit::new(m.into_raw());
        self.len += 1;
        Ok(())
    }

    /// Total data bytes of the held mbufs (first segments), e.g. for tx byte counters.
    pub fn total_len(&self) -> usize {
        self.slots[..self.len]
            .iter()
            .map(|s| {
                // SAFETY: slots[..len] are initialised (the type's invariant).
                let m = unsafe { s.assume_init() };
                // SAFETY: `m` is a valid owned mbuf; reading a plain field (what
                // rte_pktmbuf_data_len does, without a call per frame).
                usize::from(unsafe { (*m).data_len })
            })
            .sum()
    }

    /// Calls `f` with the data of each held mbuf's first segment, in order, leaving them held
    /// (e.g. to prefetch what processing them will need).
    pub fn for_each_data(&self, mut f: impl FnMut(&[u8])) {
        for s in &self.slots[..self.len] {
            // SAFETY: slots[..len] are initialised (the type's invariant).
            let Some(raw) = NonNull::new(unsafe { s.assume_init() }) else {
                continue;
            };
            // SAFETY: `raw` is a valid mbuf this burst owns; the ManuallyDrop wrapper lends it
            // for this call only and never frees it, so ownership stays with the burst.
            let m = std::mem::ManuallyDrop::new(unsafe { Mbuf::from_raw(raw) });
            f(m.data());
        }
    }

    /// Takes the mbufs out one by one, in order, leaving the burst empty.
    pub fn drain(&mut self) -> Drain<'_, 'pool> {
        let len = self.len;
        self.len = 0;
        Drain {
            burst: self,
            next: 0,
            end: len,
        }
    }

    /// Raw slot array for DPDK to fill (rx) and the room left.
    pub(crate) fn spare_ptr(&mut self) -> (*mut *mut dpdk_sys::rte_mbuf, u16) {
        let room = BURST_SIZE - self.len;
        // `as` is fine: BURST_SIZE is far below u16::MAX.
        #[allow(clippy::cast_possible_truncation)]
        (self.slots[self.len..].as_mut_ptr().cast(), room as u16)
    }

    /// Records that DPDK wrote `n` valid mbufs after the current ones.
    ///
    /// # Safety
    /// `n` slots after `len` must now hold valid owned mbufs.
    pub(crate) unsafe fn filled(&mut self, n: usize) {
        debug_assert!(self.len + n <= BURST_SIZE);
        self.len += n;
    }

    /// Raw pointer to the held mbufs, for a tx burst.
    pub(crate) fn held_ptr(&mut self) -> (*mut *mut dpdk_sys::rte_mbuf, u16) {
        #[allow(clippy::cast_possible_truncation)]
        (self.slots.as_mut_ptr().cast(), self.len as u16)
    }

    /// Forgets the first `n` mbufs (DPDK took ownership of them) and moves the rest to the front.
    pub(crate) fn consumed(&mut self, n: usize) {
        let n = n.min(self.len);
        self.slots.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

impl Drop for Burst<'_> {
    fn drop(&mut self) {
        for m in self.drain() {
            drop(m);
        }
    }
}

/// Iterator returned by [`Burst::drain`]; mbufs it does not yield are freed when it drops.
#[derive(Debug)]
pub struct Drain<'b, 'pool> {
    burst: &'b mut Burst<'pool>,
    next: usize,
    end: usize,
}

impl<'pool> Iterator for Drain<'_, 'pool> {
    type Item = Mbuf<'pool>;

    fn next(&mut self) -> Option<Mbuf<'pool>> {
        if self.next == self.end {
            return None;
        }
        // SAFETY: slots[next..end] held valid owned mbufs when drain began; each is read once.
        let raw = unsafe { self.burst.slots[self.next].assume_init() };
        self.next += 1;
        // SAFETY: DPDK never stores NULL in a returned burst; ownership moves to the Mbuf.
        NonNull::new(raw).map(|p| unsafe { Mbuf::from_raw(p) })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.end - self.next, Some(self.end - self.next))
    }
}

impl Drop for Drain<'_, '_> {
    fn drop(&mut self) {
        for m in self.by_ref() {
            drop(m);
        }
    }
}
