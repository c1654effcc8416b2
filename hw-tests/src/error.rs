//! The one error type of the rack library: every variant names what failed and where to look.

use std::path::PathBuf;

/// Everything that can go wrong while building, driving or tearing down a rack.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path or command involved.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external command exited unsuccessfully.
    #[error("command `{command}` failed ({status}){}", stderr_suffix(.stderr))]
    Command {
        /// The command line, as it would be typed.
        command: String,
        /// How it exited.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// An external command did not finish in its time bound and was killed.
    #[error("command `{command}` did not finish within {secs} s and was killed")]
    Timeout {
        /// The command line.
        command: String,
        /// The bound.
        secs: u64,
    },
    /// SIGINT or SIGTERM arrived: the caller stops and tears down.
    #[error("interrupted by a signal")]
    Interrupted,
    /// The tool needs root (namespaces, veth, XDP).
    #[error("{0} needs root (network namespaces, veth pairs and XDP sockets)")]
    NotRoot(String),
    /// The `tandem-dataplane` binary could not be found.
    #[error(
        "tandem-dataplane not found (looked at: {}); build it with `cargo build -p tandem-dataplane`, \
         or pass --dataplane PATH, or set TANDEM_DATAPLANE",
        .looked_at.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    DataplaneNotFound {
        /// Every place that was tried, in order.
        looked_at: Vec<PathBuf>,
    },
    /// The `tandem-rack` binary (for `serve` and `client` in the namespaces) could not be found.
    #[error(
        "tandem-rack not found (looked at: {}); build it with `cargo build -p tandem-hw-tests`, \
         or set TANDEM_RACK",
        .looked_at.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ToolNotFound {
        /// Every place that was tried, in order.
        looked_at: Vec<PathBuf>,
    },
    /// Another of the project's binaries (`tandemctl`, `tandem-syncd`) could not be found.
    #[error(
        "{binary} not found (looked at: {}); build it with `cargo build -p {binary}` or set {env}",
        .looked_at.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    BinaryNotFound {
        /// Its name.
        binary: &'static str,
        /// The environment variable that names it.
        env: &'static str,
        /// Every place that was tried, in order.
        looked_at: Vec<PathBuf>,
    },
    /// A helper of the rack (a real server's `serve`, an IPIP decapsulator) failed to start.
    #[error("{helper} did not start: {why}; last lines of {log}:\n{tail}")]
    HelperFailed {
        /// `serve-rs1`, `decap-rs1`.
        helper: String,
        /// What went wrong.
        why: String,
        /// Its log.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// A director did not write its stats file in time.
    #[error(
        "director {director} not ready within {secs} s (no stats file {stats}); last lines of {log}:\n{tail}"
    )]
    NotReady {
        /// "A" or "B".
        director: String,
        /// The bound.
        secs: u64,
        /// The stats file that never appeared.
        stats: PathBuf,
        /// The director's log.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// A director exited while the rack was starting.
    #[error("director {director} exited during startup ({status}); last lines of {log}:\n{tail}")]
    ExitedEarly {
        /// "A" or "B".
        director: String,
        /// How it exited.
        status: String,
        /// The director's log.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// Namespaces of this prefix already exist.
    #[error(
        "rack `{prefix}` is already up ({namespaces}); run `tandem-rack down --prefix {prefix}` first"
    )]
    AlreadyUp {
        /// The rack's prefix.
        prefix: String,
        /// The namespaces found.
        namespaces: String,
    },
    /// A prefix that would not give safe, unambiguous names.
    #[error("invalid prefix `{0}`: use 1 to 12 characters a-z and 0-9, starting with a letter")]
    InvalidPrefix(String),
    /// A topology description that cannot be built.
    #[error("invalid topology: {0}")]
    Topology(String),
    /// Output of a tool or a file that could not be understood.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// What was being parsed.
        what: String,
        /// Why it failed.
        detail: String,
    },
    /// A benchmark process misbehaved (exited early, never reached a measurement window, was
    /// started on the wrong port MAC, ...).
    #[error("benchmark: {who}: {detail}")]
    Bench {
        /// The process: `dpdk-testpmd`, `tandem-dataplane`, the capture.
        who: String,
        /// What went wrong, with where to look.
        detail: String,
    },
    /// Teardown could not remove everything.
    #[error("teardown incomplete: {}", .0.join("; "))]
    Teardown(Vec<String>),
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// A benchmark failure of `who`.
    pub fn bench(who: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Bench {
            who: who.into(),
            detail: detail.into(),
        }
    }

    /// A parse error about `what`.
    pub fn parse(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Error::Parse {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
