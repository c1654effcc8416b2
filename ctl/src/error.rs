//! The one error type of `tandemctl` and how each kind maps to an exit code.

use std::error::Error as StdError;

/// Why a command failed. Input errors (ours or the server's refusal) exit 2, everything else 1,
/// so that scripts can tell "you asked for something wrong" from "the director is in trouble".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CtlError {
    /// Bad command-line or file input, found before anything was sent.
    #[error("{0}")]
    Usage(String),
    /// The dataplane refused the request (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
    /// FAILED_PRECONDITION, OUT_OF_RANGE); its message is shown as is. Nothing was changed.
    #[error("{0}")]
    Rejected(String),
    /// The dataplane could not be reached at all.
    #[error("cannot reach the dataplane at {target}: {reason}")]
    Unreachable {
        /// The socket path or server URL.
        target: String,
        /// The innermost cause (for example `No such file or directory (os error 2)`).
        reason: String,
    },
    /// Any other failure (timeouts, internal errors, local I/O).
    #[error("{0}")]
    Failed(String),
}

impl CtlError {
    /// The process exit code for this error: 2 for input the user can fix, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) | CtlError::Rejected(_) => 2,
            CtlError::Unreachable { .. } | CtlError::Failed(_) => 1,
        }
    }

    /// A usage error from anything printable.
    pub fn usage(msg: impl Into<String>) -> Self {
        CtlError::Usage(msg.into())
    }

    /// Maps a gRPC status from the dataplane at `target`.
    pub fn from_status(status: &tonic::Status, target: &str) -> Self {
        use tonic::Code;
        let message = status.message().trim().to_string();
        match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::OutOfRange => CtlError::Rejected(message),
            // A status made from a transport failure (a TLS alert, a reset) carries its
            // cause; say what it was rather than "Unknown error: transport error".
            Code::Unavailable | Code::Unknown if status.source().is_some() => {
                CtlError::Unreachable {
                    target: target.to_string(),
                    reason: innermost(status).unwrap_or(message),
                }
            }
            Code::Unavailable => CtlError::Unreachable {
                target: target.to_string(),
                reason: innermost(status).unwrap_or(message),
            },
            Code::DeadlineExceeded => {
                CtlError::Failed(format!("the dataplane at {target} did not answer in time"))
            }
            Code::Cancelled if timed_out(status) || status.source().is_none() => {
                CtlError::Failed(format!("the dataplane at {target} did not answer in time"))
            }
            // Cancelled by the connection going away (a TLS 1.3 server refusing our
            // certificate does so after the handshake looked complete to us): unreachable.
            Code::Cancelled => CtlError::Unreachable {
                target: target.to_string(),
                reason: innermost(status).unwrap_or(message),
            },
            code => CtlError::Failed(format!(
                "the dataplane at {target} failed: {}: {message}",
                code.description()
            )),
        }
    }
}

/// Whether `status` is tonic's own call timeout (`TimeoutExpired` in its source chain).
fn timed_out(status: &tonic::Status) -> bool {
    let mut cur = status.source();
    while let Some(e) = cur {
        if e.is::<tonic::TimeoutExpired>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The message of the deepest error in `e`'s source chain, if it has a source: that is the one
/// that says what went wrong ("No such file or directory"), not "transport error".
pub fn innermost(e: &(dyn StdError + 'static)) -> Option<String> {
    let mut cur = e.source()?;
    while let Some(next) = cur.source() {
        cur = next;
    }
    Some(cur.to_string())
}

/// The whole source chain of `e` as one line, repeated messages skipped.
pub fn chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_servers_message_and_exit_2() {
        let s = tonic::Status::not_found("no service TCP 10.0.0.1:80");
        let e = CtlError::from_status(&s, "/run/x.sock");
        assert_eq!(e, CtlError::Rejected("no service TCP 10.0.0.1:80".into()));
        assert_eq!(e.exit_code(), 2);
        let s = tonic::Status::internal("boom");
        let e = CtlError::from_status(&s, "/run/x.sock");
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("boom"), "{e}");
        let e = CtlError::from_status(&tonic::Status::unavailable("gone"), "/s");
        assert_eq!(
            e.to_string(),
            "cannot reach the dataplane at /s: gone",
            "unavailable names the target"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn a_cancelled_call_is_a_timeout_only_when_it_timed_out() {
        let timeout = tonic::Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(timeout.code(), tonic::Code::Cancelled);
        assert_eq!(
            CtlError::from_status(&timeout, "/s").to_string(),
            "the dataplane at /s did not answer in time"
        );
        let mut closed = tonic::Status::cancelled("operation was canceled");
        closed.set_source(std::sync::Arc::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "received fatal alert: CertificateRequired",
        )));
        let e = CtlError::from_status(&closed, "https://d:50051");
        assert_eq!(
            e.to_string(),
            "cannot reach the dataplane at https://d:50051: received fatal alert: CertificateRequired"
        );
        assert_eq!(e.exit_code(), 1);
    }
}
