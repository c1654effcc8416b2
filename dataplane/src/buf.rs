//! The core's buffer seam ([`PacketBuf`]) implemented over a DPDK mbuf.

use tandem_core::buf::PacketBuf;
use tandem_dpdk::Mbuf;

/// A borrowed mbuf seen as a [`PacketBuf`] by the core.
#[derive(Debug)]
pub struct MbufPacket<'a, 'm>(pub &'a mut Mbuf<'m>);

impl PacketBuf for MbufPacket<'_, '_> {
    fn data(&self) -> &[u8] {
        self.0.data()
    }

    fn data_mut(&mut self) -> &mut [u8] {
        self.0.data_mut()
    }

    fn prepend(&mut self, n: usize) -> bool {
        u16::try_from(n).is_ok_and(|n| self.0.prepend(n).is_some())
    }

    fn trim_front(&mut self, n: usize) -> bool {
        u16::try_from(n).is_ok_and(|n| self.0.adj(n))
    }

    fn trim_back(&mut self, n: usize) -> bool {
        u16::try_from(n).is_ok_and(|n| self.0.trim(n))
    }

    fn headroom(&self) -> usize {
        self.0.headroom()
    }
}
