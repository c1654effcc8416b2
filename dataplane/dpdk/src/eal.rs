use std::ffi::{CString, c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

/// An lcore id as DPDK numbers them (`-l 0-3`).
pub type LcoreId = u32;

/// Set once `rte_eal_init` has been attempted: DPDK allows one EAL per process, and a second
/// call (even after a failure or a cleanup) is refused by DPDK itself.
static EAL_INITIALISED: AtomicBool = AtomicBool::new(false);

/// The initialised DPDK Environment Abstraction Layer. Dropping it calls `rte_eal_cleanup`;
/// ports and mempools borrow it, so they are gone by then.
#[derive(Debug)]
pub struct Eal {
    _private: (),
}

impl Eal {
    /// Initialises the EAL with `args` (without argv[0], which is supplied as `program`).
    ///
    /// Note: afterwards the calling thread is pinned to the main lcore's CPUs and every thread
    /// it creates inherits that pinning; spawn control-plane threads before calling this.
    pub fn init<S: AsRef<str>>(program: &str, args: &[S]) -> Result<Eal> {
        let mut owned = Vec::with_capacity(args.len() + 1);
        for a in std::iter::once(program).chain(args.iter().map(AsRef::as_ref)) {
            owned.push(
                CString::new(a).map_err(|_| {
                    Error::Invalid(format!("EAL argument {a:?} contains a NUL byte"))
                })?,
            );
        }
        if EAL_INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(Error::Invalid(
                "the DPDK EAL can be initialised only once per process".into(),
            ));
        }
        // rte_eal_init may permute argv and keeps pointers into it for the life of the process
        // (e.g. for `rte_eal_get_configuration`'s program name): leak the strings on purpose.
        let mut argv: Vec<*mut c_char> = owned.into_iter().map(CString::into_raw).collect();
        let argc = c_int::try_from(argv.len())
            .map_err(|_| Error::Invalid("too many EAL arguments".into()))?;
        let argv_ptr = argv.as_mut_ptr();
        std::mem::forget(argv);
        // SAFETY: argc/argv describe `argc` valid NUL-terminated strings that stay alive (leaked)
        // for the rest of the process; EAL_INITIALISED guarantees this runs at most once.
        let ret = unsafe { dpdk_sys::rte_eal_init(argc, argv_ptr) };
        if ret < 0 {
            return Err(Error::from_errno("rte_eal_init"));
        }
        Ok(Eal { _private: () })
    }

    /// The main lcore (the thread that called [`Eal::init`]).
    pub fn main_lcore(&self) -> LcoreId {
        // SAFETY: the EAL is initialised (we hold an `Eal`); the call only reads its config.
        unsafe { dpdk_sys::rte_get_main_lcore() }
    }

    /// Every enabled lcore, the main lcore first, then the others in ascending order.
    pub fn lcores(&self) -> Vec<LcoreId> {
        let mut out = vec![self.main_lcore()];
        let mut i: u32 = u32::MAX; // rte_get_next_lcore(-1, ...) starts from the first lcore
        loop {
            // SAFETY: the EAL is initialised; the call only reads the lcore configuration.
            i = unsafe { dpdk_sys::rte_get_next_lcore(i, 1, 0) };
            if i >= dpdk_sys::RTE_MAX_LCORE {
                break;
            }
            out.push(i);
        }
        out
    }

    /// The lcore the calling thread runs as (`LCORE_ID_ANY` = u32::MAX on non-EAL threads).
    pub fn current_lcore() -> LcoreId {
        // SAFETY: reads a thread-local variable; valid on any thread.
        unsafe { dpdk_sys::rte_lcore_id() }
    }

    /// Runs `f(lcore)` on every enabled lcore at once, the main lcore included, and returns when
    /// all have returned. `f` may borrow from the caller's stack: nothing outlives this call.
    /// Fails if an lcore is busy, or if `f` panicked on any lcore (the panic is caught at the
    /// FFI boundary and reported).
    pub fn run_on_all_lcores<F>(&self, f: &F) -> Result<()>
    where
        F: Fn(LcoreId) + Sync,
    {
        unsafe extern "C" fn trampoline<F: Fn(LcoreId) + Sync>(arg: *mut c_void) -> c_int {
            // SAFETY: `arg` is the `&F` passed below, alive until rte_eal_mp_wait_lcore returns.
            let f = unsafe { &*(arg as *const F) };
            match catch_unwind(AssertUnwindSafe(|| f(Eal::current_lcore()))) {
                Ok(()) => 0,
                Err(_) => -1,
            }
        }
        let arg = f as *const F as *mut c_void;
        // SAFETY: the trampoline matches lcore_function_t; `arg` stays valid because we wait for
        // every lcore below before returning; F: Sync makes sharing it across lcores sound.
        let ret = unsafe {
            dpdk_sys::rte_eal_mp_remote_launch(Some(trampoline::<F>), arg, dpdk_sys::CALL_MAIN)
        };
        if ret < 0 {
            // CALL_MAIN ran nothing if the launch failed (workers busy); nothing to wait for.
            return Err(Error::from_ret("rte_eal_mp_remote_launch", ret));
        }
        // SAFETY: waits for every worker lcore launched above.
        unsafe { dpdk_sys::rte_eal_mp_wait_lcore() };
        let mut failed = Vec::new();
        for lcore in self.lcores() {
            if lcore == self.main_lcore() {
                continue;
            }
            // SAFETY: lcore is an enabled worker lcore; it is in WAIT state after mp_wait.
            let rc = unsafe { dpdk_sys::rte_eal_wait_lcore(lcore) };
            if rc != 0 {
                failed.push(lcore);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "worker function failed (panicked) on lcore(s) {failed:?}"
            )))
        }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: we own the EAL; everything that borrowed it (ports, mempools) is dropped.
        unsafe { dpdk_sys::rte_eal_cleanup() };
    }
}
