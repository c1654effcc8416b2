//! Processes of the rack: finding the dataplane binary, starting a director inside its
//! namespace, recognising it later by its command line, stopping it.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The dataplane's file name.
pub const DATAPLANE_BIN: &str = "tandem-dataplane";

/// Environment variable naming the dataplane binary.
pub const DATAPLANE_ENV: &str = "TANDEM_DATAPLANE";

/// The rack tool's own file name: it runs `serve` and `client` inside the namespaces.
pub const TOOL_BIN: &str = "tandem-rack";

/// Environment variable naming the `tandem-rack` binary.
pub const TOOL_ENV: &str = "TANDEM_RACK";

/// Finds `tandem-dataplane`: `explicit` (`--dataplane`), else `$TANDEM_DATAPLANE`, else next to
/// the running executable or in its parent directory (integration tests run from
/// `target/debug/deps`, the binary is in `target/debug`).
pub fn locate_dataplane(explicit: Option<&Path>) -> Result<PathBuf> {
    locate_dataplane_with(
        explicit,
        std::env::var_os(DATAPLANE_ENV),
        std::env::current_exe().ok(),
    )
}

/// [`locate_dataplane`] with its inputs given, for tests. An explicit path or the environment
/// variable that names a missing file is an error, not a reason to look elsewhere.
pub fn locate_dataplane_with(
    explicit: Option<&Path>,
    env: Option<OsString>,
    current_exe: Option<PathBuf>,
) -> Result<PathBuf> {
    locate_binary(DATAPLANE_BIN, false, explicit, env, current_exe)
        .map_err(|looked_at| Error::DataplaneNotFound { looked_at })
}

/// Finds another of the project's binaries (`tandemctl`) the way the dataplane is found:
/// `explicit`, else the environment variable's value, else next to `current_exe` or in its
/// parent directory. `Err` lists where it looked.
pub fn locate_named(
    bin: &str,
    explicit: Option<&Path>,
    env: Option<OsString>,
    current_exe: Option<PathBuf>,
) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    locate_binary(bin, false, explicit, env, current_exe)
}

/// The search every locator shares: the named path (explicit, else the environment variable),
/// which must exist; else, when `may_be_self`, the running executable if it is `bin`; else `bin`
/// next to the running executable or in its parent directory. `Err` lists where it looked.
fn locate_binary(
    bin: &str,
    may_be_self: bool,
    explicit: Option<&Path>,
    env: Option<OsString>,
    current_exe: Option<PathBuf>,
) -> std::result::Result<PathBuf, Vec<PathBuf>> {
    let named = explicit
        .map(Path::to_path_buf)
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from));
    if let Some(p) = named {
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(vec![p])
        };
    }
    let mut looked_at = Vec::new();
    if let Some(exe) = current_exe.as_deref() {
        if may_be_self && exe.file_name().is_some_and(|n| n == bin) {
            looked_at.push(exe.to_path_buf());
        }
        if let Some(dir) = exe.parent() {
            looked_at.push(dir.join(bin));
            if let Some(parent) = dir.parent() {
                looked_at.push(parent.join(bin));
            }
        }
    }
    looked_at
        .iter()
        .find(|p| is_executable(p))
        .cloned()
        .ok_or(looked_at)
}

/// Finds `tandem-rack` (which runs `serve` on the real servers and `client` on the client):
/// `explicit`, else `$TANDEM_RACK`, else the running executable if it is `tandem-rack`, else
/// next to the running executable or in its parent directory (tests run from
/// `target/debug/deps`).
pub fn locate_tool(explicit: Option<&Path>) -> Result<PathBuf> {
    locate_tool_with(
        explicit,
        std::env::var_os(TOOL_ENV),
        std::env::current_exe().ok(),
    )
}

/// [`locate_tool`] with its inputs given, for tests.
pub fn locate_tool_with(
    explicit: Option<&Path>,
    env: Option<OsString>,
    current_exe: Option<PathBuf>,
) -> Result<PathBuf> {
    locate_binary(TOOL_BIN, true, explicit, env, current_exe)
        .map_err(|looked_at| Error::ToolNotFound { looked_at })
}

/// Starts `argv` in namespace `netns` through `ip netns exec` (which execs, so the child's pid
/// is the program's), output appended to `log`, in a process group of its own (like the
/// dataplanes): the rack's helpers, `tandem-rack serve` and the IPIP decapsulator.
pub fn spawn_helper_in_netns(netns: &str, argv: &[String], log: &Path) -> Result<Child> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))
    };
    let (out, err) = (open()?, open()?);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    tracing::debug!(?cmd, "spawn helper");
    cmd.spawn().map_err(|e| {
        Error::io(
            format!(
                "starting `{}` in {netns}",
                argv.first().map_or("", String::as_str)
            ),
            e,
        )
    })
}

/// Whether `pid` is a live helper of the rack whose state directory is `state_dir`: one of its
/// arguments is that directory or a path inside it (every helper is started with `--watch
/// <state dir>`), so no process of another rack or of the system matches.
pub fn is_rack_helper(pid: u32, state_dir: &Path) -> bool {
    let Some(argv) = cmdline(pid) else {
        return false;
    };
    let dir = state_dir.display().to_string();
    let inside = format!("{dir}/");
    argv.iter().any(|a| *a == dir || a.starts_with(&inside)) && alive(pid)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts `binary --config config` in namespace `netns` through `ip netns exec` (which execs, so
/// the child's pid is the dataplane's), with stdout and stderr appended to `log`, in a process
/// group of its own so a Ctrl-C at the terminal reaches only the tool, which tears down in order.
pub fn spawn_in_netns(netns: &str, binary: &Path, config: &Path, log: &Path) -> Result<Child> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))
    };
    let (out, err) = (open()?, open()?);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns])
        .arg(binary)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    tracing::debug!(?cmd, "spawn");
    cmd.spawn()
        .map_err(|e| Error::io(format!("starting {} in {netns}", binary.display()), e))
}

/// Sends `sig` (a number such as `libc::SIGTERM`) to `pid` with kill(1); false if there is no
/// such process. The rack tool keeps to safe code: `unsafe` lives only in the DPDK crates.
pub fn signal(pid: u32, sig: libc::c_int) -> bool {
    if pid == 0 || i32::try_from(pid).is_err() {
        return false;
    }
    std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X")
}

/// The command line of `pid`, one entry per argument.
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Whether `pid` is a live director started with `config`: its argv has `--config <config>`,
/// and the config path names the rack's own state directory, so no other process matches.
/// A pid file can outlive its process and the pid be reused; this is what makes signalling safe.
pub fn is_director(pid: u32, config: &Path) -> bool {
    let Some(argv) = cmdline(pid) else {
        return false;
    };
    let config = config.display().to_string();
    let has_config = argv
        .windows(2)
        .any(|w| w[0] == "--config" && w[1] == config);
    has_config && alive(pid)
}

/// Reads a pid file.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// How a stop went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// It exited after SIGTERM.
    Terminated,
    /// It ignored SIGTERM for the whole grace period and was killed.
    Killed,
}

/// SIGTERM, wait up to `grace` for the process to go, then SIGKILL (and wait a little more).
/// For a process that is not our child; use [`stop_child`] for one that is.
pub fn stop_pid(pid: u32, grace: Duration) -> Stopped {
    if !alive(pid) {
        return Stopped::NotRunning;
    }
    signal(pid, libc::SIGTERM);
    if wait_until(grace, || !alive(pid)) {
        return Stopped::Terminated;
    }
    tracing::warn!(
        pid,
        "still running {} s after SIGTERM; sending SIGKILL",
        grace.as_secs()
    );
    signal(pid, libc::SIGKILL);
    wait_until(Duration::from_secs(2), || !alive(pid));
    Stopped::Killed
}

/// SIGTERM our child, wait up to `grace` for its exit status, else SIGKILL it and reap it.
pub fn stop_child(child: &mut Child, grace: Duration) -> Result<(Stopped, ExitStatus)> {
    if let Some(status) = child
        .try_wait()
        .map_err(|e| Error::io("waiting for a director", e))?
    {
        return Ok((Stopped::NotRunning, status));
    }
    signal(child.id(), libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| Error::io("waiting for a director", e))?
        {
            return Ok((Stopped::Terminated, status));
        }
        thread::sleep(Duration::from_millis(20));
    }
    tracing::warn!(
        pid = child.id(),
        "still running {} s after SIGTERM; sending SIGKILL",
        grace.as_secs()
    );
    let _ = child.kill();
    let status = child
        .wait()
        .map_err(|e| Error::io("reaping a killed director", e))?;
    Ok((Stopped::Killed, status))
}

/// Polls `done` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The last `n` lines of a log file (or a note that it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                return "(the log is empty)".to_owned();
            }
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
