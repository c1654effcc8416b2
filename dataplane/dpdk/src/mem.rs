//! Memory advice for the lcores' large tables (the connection table and its index).

use std::ffi::{c_int, c_void};

/// Transparent huge pages on x86_64 Linux.
const HUGE_PAGE: usize = 2 << 20;
/// `MADV_HUGEPAGE` (Linux `asm-generic/mman-common.h`).
const MADV_HUGEPAGE: c_int = 14;
/// `MADV_COLLAPSE` (Linux 6.1+).
const MADV_COLLAPSE: c_int = 25;

unsafe extern "C" {
    fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
}

/// Asks the kernel to back the whole 2 MiB pages inside `[start, start + len)` with
/// transparent huge pages: `MADV_HUGEPAGE`, then `MADV_COLLAPSE` so that memory already
/// touched is collapsed now rather than by `khugepaged` some day. Randomly accessed tables of
/// tens of MiB otherwise miss the TLB on nearly every lookup, and with 4 KiB pages a burst's
/// prefetches queue behind page walks. Returns whether the collapse succeeded; failing (no
/// THP, an older kernel, fragmented memory) changes nothing but speed. Setup-time only: the
/// collapse copies the pages.
pub fn advise_huge_pages(start: *const u8, len: usize) -> bool {
    let begin = (start as usize).next_multiple_of(HUGE_PAGE);
    let end = (start as usize).saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    if end <= begin {
        return false;
    }
    let addr = begin as *mut c_void;
    let advise = |advice: c_int| {
        // SAFETY: madvise never dereferences memory for the caller; MADV_HUGEPAGE and
        // MADV_COLLAPSE change only how the pages are backed, never their contents (the
        // collapse copies them into a huge page), and an unmapped range is refused with
        // ENOMEM. Nothing the program can observe changes, whatever the range.
        unsafe { madvise(addr, end - begin, advice) == 0 }
    };
    advise(MADV_HUGEPAGE);
    advise(MADV_COLLAPSE)
}
