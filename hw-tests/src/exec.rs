//! Running external commands (`ip`, `ping`, `sysctl`, ...) with a time bound, and the
//! cancellation flag that SIGINT/SIGTERM set.
//!
//! Every command the rack runs goes through [`Cmd`], so every one is bounded in time and logged
//! at debug level with the exact command line.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Default bound for one command: `ip` and `sysctl` finish in milliseconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// A cancellation flag shared with signal handlers. Long waits poll it; teardown ignores it
/// (teardown must always run to the end).
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The flag itself, to hand to `signal_hook::flag::register`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }

    /// Sets the flag.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// `Err(Error::Interrupted)` once the flag is set.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Sleeps `d` in small steps, returning early with `Interrupted` when the flag is set.
    pub fn sleep(&self, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        loop {
            self.check()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// An external command: program, arguments and a time bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    argv: Vec<String>,
    timeout: Duration,
}

/// What a finished command printed, and how it exited.
#[derive(Clone, Debug)]
pub struct CmdOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Cmd {
    /// A command from its argv (`argv[0]` is the program); an empty argv runs `true`.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut argv: Vec<String> = argv.into_iter().map(Into::into).collect();
        if argv.is_empty() {
            argv.push("true".to_owned());
        }
        Self {
            argv,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// `program args...` run inside network namespace `netns` (`ip netns exec netns ...`).
    pub fn in_netns<I, S>(netns: &str, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut full = vec![
            "ip".to_owned(),
            "netns".to_owned(),
            "exec".to_owned(),
            netns.to_owned(),
        ];
        full.extend(argv.into_iter().map(Into::into));
        Self::new(full)
    }

    /// Replaces the time bound.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The argv.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// The command line as it would be typed (arguments with spaces quoted).
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| {
                if a.is_empty() || a.contains([' ', '"', '\'']) {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs the command; a non-zero exit is an error carrying its stderr.
    pub fn run(&self) -> Result<CmdOutput> {
        let out = self.output()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(Error::Command {
                command: self.display(),
                status: out.status.to_string(),
                stderr: out.stderr.trim().to_owned(),
            })
        }
    }

    /// Runs the command and returns its output whatever its exit status (for `ping`, whose exit
    /// status only says whether replies came).
    pub fn output(&self) -> Result<CmdOutput> {
        tracing::debug!(command = %self.display(), "run");
        let (program, args) = self
            .argv
            .split_first()
            .ok_or_else(|| Error::parse("command", "empty argv"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("cannot start `{}`", self.display()), e))?;
        let stdout = child.stdout.take().map(reader_thread);
        let stderr = child.stderr.take().map(reader_thread);
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => return Err(Error::io(format!("waiting for `{}`", self.display()), e)),
            }
            if Instant::now() >= deadline {
                // Bounded: kill, reap, and leave the reader threads to finish on their own.
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    command: self.display(),
                    secs: self.timeout.as_secs(),
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        let stdout = stdout.map(join_reader).unwrap_or_default();
        let stderr = stderr.map(join_reader).unwrap_or_default();
        Ok(CmdOutput {
            status,
            stdout,
            stderr,
        })
    }
}

fn reader_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join_reader(h: thread::JoinHandle<Vec<u8>>) -> String {
    h.join()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // /proc/self belongs to the process's effective uid (proc(5)); no unsafe FFI needed.
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
