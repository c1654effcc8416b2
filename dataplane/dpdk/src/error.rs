use std::ffi::CStr;

/// A failed DPDK call: what we were doing, and DPDK's errno with its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A DPDK function returned an error code (negative errno or `rte_errno`).
    #[error("{op}: {text} (errno {errno})")]
    Dpdk {
        /// The operation, e.g. `rte_eth_dev_configure(port 0)`.
        op: String,
        /// The positive errno value.
        errno: i32,
        /// `rte_strerror(errno)`.
        text: String,
    },
    /// The caller asked for something invalid before DPDK was even called.
    #[error("{0}")]
    Invalid(String),
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// The text DPDK gives for an errno value (covers DPDK's own `E_RTE_*` codes too).
pub fn errno_text(errno: i32) -> String {
    // SAFETY: rte_strerror accepts any int and returns a pointer to a static or per-lcore
    // buffer holding a NUL-terminated string; we copy it out before anything can overwrite it.
    let ptr = unsafe { dpdk_sys::rte_strerror(errno) };
    if ptr.is_null() {
        return format!("unknown error {errno}");
    }
    // SAFETY: non-null, NUL-terminated as established above, and valid for this read.
    unsafe { CStr::from_ptr(ptr) }
        .to_string_lossy()
        .into_owned()
}

/// The current lcore's `rte_errno`.
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: reads the calling thread's thread-local rte_errno through the shim; no preconditions.
    unsafe { dpdk_sys::tandem_rte_errno() }
}

impl Error {
    /// An error from a DPDK return code `ret` (negative errno, as most ethdev calls return).
    pub(crate) fn from_ret(op: impl Into<String>, ret: i32) -> Self {
        let errno = ret.checked_abs().unwrap_or(i32::MAX);
        Error::Dpdk {
            op: op.into(),
            errno,
            text: errno_text(errno),
        }
    }

    /// An error whose cause DPDK left in `rte_errno` (calls returning NULL or -1).
    pub(crate) fn from_errno(op: impl Into<String>) -> Self {
        let errno = rte_errno();
        Error::Dpdk {
            op: op.into(),
            errno,
            text: errno_text(errno),
        }
    }
}

/// Turns DPDK's "negative errno on failure" convention into a `Result`.
pub(crate) fn check(op: impl FnOnce() -> String, ret: i32) -> Result<i32> {
    if ret < 0 {
        Err(Error::from_ret(op(), ret))
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_return_becomes_errno_with_text() {
        let e = Error::from_ret("rte_eth_dev_configure(port 3)", -22);
        assert!(
            matches!(&e, Error::Dpdk { errno: 22, text, .. } if text == "Invalid argument"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "rte_eth_dev_configure(port 3): Invalid argument (errno 22)"
        );
    }

    #[test]
    fn dpdk_specific_errno_has_dpdk_text() {
        // E_RTE_NO_CONFIG = RTE_MIN_ERRNO + 2 (rte_errno.h)
        let text = errno_text(dpdk_sys::E_RTE_NO_CONFIG as i32);
        assert_eq!(text, "Missing rte_config structure");
    }

    #[test]
    fn check_passes_non_negative_through() {
        assert_eq!(check(|| "x".into(), 5), Ok(5));
        assert!(check(|| "x".into(), -1).is_err());
    }
}
