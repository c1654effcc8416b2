//! The buffer seam between the sans-IO core and whatever holds packets: a DPDK mbuf in the
//! dataplane, a [`VecBuf`] in tests and benchmarks. The core never allocates or frees packet
//! memory; it asks the buffer to grow at the front (encapsulation) or shrink (decapsulation).

/// A packet buffer: its bytes, plus room to grow at the front.
pub trait PacketBuf {
    /// The packet's bytes (Ethernet header first).
    fn data(&self) -> &[u8];
    /// The packet's bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the packet by `n` bytes at the front; the new bytes come first in `data()` and
    /// hold unspecified values. False (and nothing changed) without enough headroom.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front. False (and nothing changed) if shorter than `n`.
    fn trim_front(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the end. False (and nothing changed) if shorter than `n`.
    fn trim_back(&mut self, n: usize) -> bool;
    /// Bytes available for [`prepend`](Self::prepend).
    fn headroom(&self) -> usize;
}

/// A heap buffer with headroom, for tests, benchmarks and fuzzing. Allocates only when built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecBuf {
    storage: Vec<u8>,
    start: usize,
    end: usize,
}

/// Headroom of a DPDK mbuf (`RTE_PKTMBUF_HEADROOM`), used by default so tests see what the
/// dataplane sees.
pub const DEFAULT_HEADROOM: usize = 128;

impl VecBuf {
    /// A buffer holding `bytes` after `headroom` free bytes.
    pub fn with_headroom(bytes: &[u8], headroom: usize) -> Self {
        let mut storage = vec![0; headroom + bytes.len()];
        storage[headroom..].copy_from_slice(bytes);
        VecBuf {
            storage,
            start: headroom,
            end: headroom + bytes.len(),
        }
    }

    /// A buffer holding `bytes` with the mbuf's default headroom.
    pub fn new(bytes: &[u8]) -> Self {
        Self::with_headroom(bytes, DEFAULT_HEADROOM)
    }

    /// Replaces the contents (keeping the allocation when it is large enough), for reuse in
    /// benchmark loops.
    pub fn reset(&mut self, bytes: &[u8], headroom: usize) {
        let need = headroom + bytes.len();
        if self.storage.len() < need {
            self.storage.resize(need, 0);
        }
        self.start = headroom;
        self.end = need;
        self.storage[headroom..need].copy_from_slice(bytes);
    }
}

impl PacketBuf for VecBuf {
    fn data(&self) -> &[u8] {
        &self.storage[self.start..self.end]
    }

    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.end]
    }

    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }

    fn trim_front(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }

    fn trim_back(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.end -= n;
        true
    }

    fn headroom(&self) -> usize {
        self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_and_trim_move_the_window() {
        let mut b = VecBuf::with_headroom(&[1, 2, 3, 4], 20);
        assert_eq!(b.headroom(), 20);
        assert!(b.prepend(20));
        assert_eq!(b.data().len(), 24);
        assert_eq!(&b.data()[20..], &[1, 2, 3, 4]);
        assert!(!b.prepend(1), "no headroom left");
        assert!(b.trim_front(20));
        assert_eq!(b.data(), &[1, 2, 3, 4]);
        assert!(b.trim_back(1));
        assert_eq!(b.data(), &[1, 2, 3]);
        assert!(!b.trim_back(4));
        assert!(!b.trim_front(4));
        assert_eq!(b.data(), &[1, 2, 3], "failed operations change nothing");
    }

    #[test]
    fn reset_reuses_storage() {
        let mut b = VecBuf::new(&[9; 64]);
        b.reset(&[7; 10], 8);
        assert_eq!(b.data(), &[7; 10]);
        assert_eq!(b.headroom(), 8);
    }
}
