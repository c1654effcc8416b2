//! Rack description files and host access: what `tandem-rack drill --rack FILE` reads.
//!
//! A rack description (TOML, `deploy/rack-virtual.toml`, `deploy/rack-example-ssh.toml`)
//! names the rack's hosts (the client, directors A and B, real servers, and any helper host
//! such as a switch or PDU controller), their roles and addresses, how to reach each one —
//! [`Access::Local`]: on this machine, optionally inside a network namespace; [`Access::Ssh`]:
//! `ssh user@host -p PORT -i KEY`, optionally entering a network namespace on the far side —
//! and, per host, the shell commands that inject each fault there (`kill`, `link-down`, ...).
//!
//! The drill ([`crate::drill`]) runs every command on a host through its [`Access`]: the
//! client, the reads of the syncd status files, the faults, the logs it keeps. The virtual
//! rack's default is the embedded [`DEFAULT_VIRTUAL`] (`deploy/rack-virtual.toml`), so the
//! default drill and a drill from a file are the same code.
//!
//! Placeholders in any string of the file: `{prefix}` (the rack's `--prefix`), `{state}` (its
//! state directory, `/run/tandem-rack/<prefix>`), `{tool}` (the `tandem-rack` binary running
//! the drill). A fault command `rack:restart` is done by the virtual rack itself (restart the
//! director's dataplane, apply its services with `tandemctl`, restart its syncd), which only a
//! rack with `build = "virtual"` can do.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::exec::Cmd;
use crate::rack::{DirectorId, Mode};

/// The virtual rack's description, the default of `tandem-rack drill`.
pub const DEFAULT_VIRTUAL: &str = include_str!("../../deploy/rack-virtual.toml");

/// The fault command that the virtual rack performs itself.
pub const RACK_RESTART: &str = "rack:restart";

/// Bound on one fault command.
pub const FAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an idle shared ssh connection stays (`ControlPersist`, seconds): a drill that dies
/// without closing its connections leaves none for longer.
pub const CONTROL_PERSIST_S: u32 = 60;

/// Bound on one small command on a host (a `cat`, a `touch`).
pub const SMALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How a rack description's hosts come to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Build {
    /// `tandem-rack` builds the virtual rack (namespaces, dataplanes, syncds) under `--prefix`
    /// first, as `tandem-rack drill` always did, and tears it down afterwards.
    Virtual,
    /// The hosts exist and run their directors already (a real rack).
    None,
}

/// A host's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs the drill's client (`tandem-rack drill-client`).
    Client,
    /// Director A: active (priority higher than B's) when a drill starts.
    DirectorA,
    /// Director B: the standby.
    DirectorB,
    /// A real server (documentation; the drill does not run anything there).
    RealServer,
    /// A host that only runs fault commands of others (a switch, a PDU, a jump host).
    Control,
}

/// The `[rack]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RackSection {
    /// A name for reports.
    pub name: String,
    /// See [`Build`].
    pub build: Build,
    /// The services' TCP port the drill connects to (default 80).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The VIP of each forwarding mode (`nat`, `tun`, `dr`); a drill in a mode without one is
    /// refused.
    #[serde(default)]
    pub vips: BTreeMap<Mode, std::net::Ipv4Addr>,
}

fn default_port() -> u16 {
    80
}

/// A host's `access`: exactly one of `local` and `ssh`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// On this machine; the value is the network namespace to enter (`""`: none).
    pub local: Option<String>,
    /// `user@host` (or `host`) to ssh to.
    pub ssh: Option<String>,
    /// ssh port (default 22).
    pub port: Option<u16>,
    /// ssh identity file.
    pub identity: Option<String>,
    /// Network namespace to enter on the far side (`ip netns exec`).
    pub netns: Option<String>,
    /// Extra `-o` options for ssh (`StrictHostKeyChecking=accept-new`, ...).
    #[serde(default)]
    pub options: Vec<String>,
    /// ssh connect timeout in seconds (default 5).
    pub connect_timeout_s: Option<u32>,
}

/// A fault command: a shell command run on the host it belongs to, or (table form) on another
/// host named by `on`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FaultSection {
    /// `kill = "systemctl kill -s KILL tandem-dataplane tandem-syncd"`
    Here(String),
    /// `link-down = { on = "switch", run = "..." }`
    On {
        /// The host to run it on.
        on: String,
        /// The shell command.
        run: String,
    },
}

/// One `[[host]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// Its name in the description (`director-a`, `rs1`, ...).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its main address (documentation, reports).
    #[serde(default)]
    pub address: Option<std::net::Ipv4Addr>,
    /// How to reach it.
    pub access: AccessSection,
    /// Client: the `tandem-rack` binary there (default `tandem-rack` on its PATH).
    #[serde(default)]
    pub tool: Option<String>,
    /// A writable directory there for the drill's stop file (default `/tmp`).
    #[serde(default)]
    pub workdir: Option<String>,
    /// Directors: the syncd status file (`[daemon] status_file`; default
    /// `/run/tandem/syncd-status.json`).
    #[serde(default)]
    pub syncd_status: Option<String>,
    /// Fault commands by name: `kill`, `restart`, `link-down`, `link-up`, `sync-down`,
    /// `sync-up` (and any other name, for documentation: `power-off`, ...).
    #[serde(default)]
    pub faults: BTreeMap<String, FaultSection>,
    /// Commands whose output the drill keeps when it fails, by name (`syncd`, `dataplane`).
    #[serde(default)]
    pub logs: BTreeMap<String, String>,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RackFileSection {
    /// `[rack]`
    pub rack: RackSection,
    /// `[[host]]`
    #[serde(rename = "host")]
    pub hosts: Vec<HostSection>,
}

/// How to run commands on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// This machine, in `netns` if given.
    Local {
        /// The network namespace.
        netns: Option<String>,
    },
    /// Over ssh (`BatchMode=yes`: never a password prompt), in `netns` on the far side if
    /// given.
    Ssh {
        /// `user@host`.
        destination: String,
        /// Port.
        port: u16,
        /// Identity file.
        identity: Option<String>,
        /// Network namespace on the far side.
        netns: Option<String>,
        /// Extra `-o` options.
        options: Vec<String>,
        /// `ConnectTimeout`, seconds.
        connect_timeout_s: u32,
        /// The directory of ssh's connection-sharing sockets (`ControlMaster`): one login
        /// per host for the whole drill, each later command a new session on it (an ssh login
        /// takes 0.5-1.5 s on a loaded machine; a shared connection's session milliseconds).
        control_dir: Option<String>,
    },
}

/// Quotes `s` for a POSIX shell (`'...'`, inner quotes as `'\''`); plain words stay as they
/// are.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl Access {
    /// The argv that runs `argv` on the host.
    pub fn wrap(&self, argv: &[String]) -> Vec<String> {
        let enter = |netns: &Option<String>| -> Vec<String> {
            match netns {
                Some(ns) => vec!["ip".into(), "netns".into(), "exec".into(), ns.clone()],
                None => Vec::new(),
            }
        };
        match self {
            Access::Local { netns } => {
                let mut out = enter(netns);
                out.extend(argv.iter().cloned());
                out
            }
            Access::Ssh { netns, .. } => {
                let mut out = self.ssh_argv();
                out.push("--".into());
                // ssh joins its arguments with spaces for the remote shell: quote each word.
                let remote: Vec<String> = enter(netns)
                    .iter()
                    .chain(argv)
                    .map(|w| shell_quote(w))
                    .collect();
                out.push(remote.join(" "));
                out
            }
        }
    }

    /// `ssh [options] destination` (empty for a local host).
    pub fn ssh_argv(&self) -> Vec<String> {
        let Access::Ssh {
            destination,
            port,
            identity,
            options,
            connect_timeout_s,
            control_dir,
            ..
        } = self
        else {
            return Vec::new();
        };
        let mut out: Vec<String> = vec![
            "ssh".into(),
            "-p".into(),
            port.to_string(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("ConnectTimeout={connect_timeout_s}"),
        ];
        if let Some(id) = identity {
            out.extend([
                "-i".into(),
                id.clone(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        if let Some(dir) = control_dir {
            out.extend([
                "-o".into(),
                "ControlMaster=auto".into(),
                "-o".into(),
                format!("ControlPath={dir}/%C"),
                "-o".into(),
                format!("ControlPersist={CONTROL_PERSIST_S}"),
            ]);
        }
        for o in options {
            out.extend(["-o".into(), o.clone()]);
        }
        out.push(destination.clone());
        out
    }

    /// `argv` on the host, bounded by `timeout`.
    pub fn command(&self, argv: &[String], timeout: Duration) -> Cmd {
        Cmd::new(self.wrap(argv)).timeout(timeout)
    }

    /// `sh -c script` on the host, bounded by `timeout`.
    pub fn shell(&self, script: &str, timeout: Duration) -> Cmd {
        self.command(&["sh".into(), "-c".into(), script.into()], timeout)
    }

    /// The text of `path` on the host: read directly for a local host (a network namespace
    /// shares the file system), with `cat` over ssh.
    pub fn read_file(&self, path: &str) -> Result<String> {
        match self {
            Access::Local { .. } => {
                std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {path}"), e))
            }
            Access::Ssh { .. } => Ok(self
                .command(&["cat".into(), path.into()], SMALL_TIMEOUT)
                .run()?
                .stdout),
        }
    }

    /// Whether this is the local machine.
    pub fn is_local(&self) -> bool {
        matches!(self, Access::Local { .. })
    }

    /// How it is reached, for messages.
    pub fn describe(&self) -> String {
        match self {
            Access::Local { netns: None } => "local".into(),
            Access::Local { netns: Some(ns) } => format!("local netns {ns}"),
            Access::Ssh {
                destination,
                port,
                netns,
                ..
            } => format!(
                "ssh {destination} -p {port}{}",
                netns
                    .as_ref()
                    .map_or(String::new(), |n| format!(", netns {n}"))
            ),
        }
    }
}

/// A fault command resolved: which host runs it, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultCommand {
    /// The host that runs it.
    pub on: String,
    /// The shell command (or [`RACK_RESTART`]).
    pub run: String,
}

/// A host, resolved.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its address.
    pub address: Option<std::net::Ipv4Addr>,
    /// How to reach it.
    pub access: Access,
    /// `tandem-rack` there.
    pub tool: String,
    /// Its writable directory.
    pub workdir: String,
    /// The syncd status file.
    pub syncd_status: String,
    /// Its fault commands by name.
    pub faults: BTreeMap<String, FaultCommand>,
    /// Its log commands by name.
    pub logs: BTreeMap<String, String>,
}

impl Host {
    /// The drill's stop file on this host.
    pub fn stop_file(&self) -> String {
        format!("{}/tandem-drill.stop", self.workdir.trim_end_matches('/'))
    }
}

/// A rack description, parsed, checked, and its placeholders filled in.
#[derive(Debug, Clone)]
pub struct RackFile {
    /// `[rack] name`.
    pub name: String,
    /// `[rack] build`.
    pub build: Build,
    /// The services' port.
    pub port: u16,
    /// Each mode's VIP.
    pub vips: BTreeMap<Mode, std::net::Ipv4Addr>,
    /// Every host, in file order.
    pub hosts: Vec<Host>,
}

/// The values of the placeholders.
#[derive(Debug, Clone)]
pub struct Vars {
    /// `{prefix}`
    pub prefix: String,
    /// `{state}`
    pub state: String,
    /// `{tool}`
    pub tool: String,
}

impl Vars {
    fn fill(&self, s: &str) -> String {
        s.replace("{prefix}", &self.prefix)
            .replace("{state}", &self.state)
            .replace("{tool}", &self.tool)
    }
}

impl RackFile {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path, vars: &Vars) -> Result<RackFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading rack description {}", path.display()), e))?;
        Self::parse(&text, &path.display().to_string(), vars)
    }

    /// The virtual rack's default ([`DEFAULT_VIRTUAL`]).
    pub fn default_virtual(vars: &Vars) -> Result<RackFile> {
        Self::parse(
            DEFAULT_VIRTUAL,
            "the embedded deploy/rack-virtual.toml",
            vars,
        )
    }

    /// Parses and checks `text` (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str, vars: &Vars) -> Result<RackFile> {
        let raw: RackFileSection = toml::from_str(text)
            .map_err(|e| Error::parse(format!("rack description {origin}"), e.to_string()))?;
        let bad = |m: String| Error::parse(format!("rack description {origin}"), m);
        let mut hosts = Vec::new();
        for h in &raw.hosts {
            if h.name.is_empty() || hosts.iter().any(|o: &Host| o.name == h.name) {
                return Err(bad(format!(
                    "host name `{}` is empty or not unique",
                    h.name
                )));
            }
            let a = &h.access;
            let netns =
                |n: &Option<String>| n.as_deref().map(|s| vars.fill(s)).filter(|s| !s.is_empty());
            let access = match (&a.local, &a.ssh) {
                (Some(local), None) => {
                    if a.port.is_some()
                        || a.identity.is_some()
                        || a.netns.is_some()
                        || !a.options.is_empty()
                    {
                        return Err(bad(format!(
                            "host `{}`: access.local takes no port, identity, netns or options \
                             (its value is the namespace)",
                            h.name
                        )));
                    }
                    Access::Local {
                        netns: netns(&Some(local.clone())),
                    }
                }
                (None, Some(dest)) => {
                    let dest = vars.fill(dest);
                    if dest.is_empty()
                        || dest.starts_with('-')
                        || dest.contains(char::is_whitespace)
                    {
                        return Err(bad(format!(
                            "host `{}`: access.ssh `{dest}` is not user@host",
                            h.name
                        )));
                    }
                    Access::Ssh {
                        destination: dest,
                        port: a.port.unwrap_or(22),
                        identity: a.identity.as_deref().map(|s| vars.fill(s)),
                        netns: netns(&a.netns),
                        options: a.options.iter().map(|o| vars.fill(o)).collect(),
                        connect_timeout_s: a.connect_timeout_s.unwrap_or(5).clamp(1, 60),
                        control_dir: None,
                    }
                }
                _ => {
                    return Err(bad(format!(
                        "host `{}`: access needs exactly one of `local` and `ssh`",
                        h.name
                    )));
                }
            };
            let faults = h
                .faults
                .iter()
                .map(|(k, f)| {
                    let (on, run) = match f {
                        FaultSection::Here(run) => (h.name.clone(), run.clone()),
                        FaultSection::On { on, run } => (on.clone(), run.clone()),
                    };
                    (
                        k.clone(),
                        FaultCommand {
                            on,
                            run: vars.fill(&run),
                        },
                    )
                })
                .collect();
            hosts.push(Host {
                name: h.name.clone(),
                role: h.role,
                address: h.address,
                access,
                tool: h
                    .tool
                    .as_deref()
                    .map_or_else(|| "tandem-rack".into(), |t| vars.fill(t)),
                workdir: h
                    .workdir
                    .as_deref()
                    .map_or_else(|| "/tmp".into(), |w| vars.fill(w)),
                syncd_status: h
                    .syncd_status
                    .as_deref()
                    .map_or_else(|| "/run/tandem/syncd-status.json".into(), |s| vars.fill(s)),
                faults,
                logs: h
                    .logs
                    .iter()
                    .map(|(k, v)| (k.clone(), vars.fill(v)))
                    .collect(),
            });
        }
        for role in [Role::Client, Role::DirectorA, Role::DirectorB] {
            let n = hosts.iter().filter(|h| h.role == role).count();
            if n != 1 {
                return Err(bad(format!(
                    "{n} hosts with role {role:?}; exactly one is needed"
                )));
            }
        }
        for h in &hosts {
            for (name, f) in &h.faults {
                if !hosts.iter().any(|o| o.name == f.on) {
                    return Err(bad(format!(
                        "host `{}`: fault `{name}` runs on unknown host `{}`",
                        h.name, f.on
                    )));
                }
                if f.run == RACK_RESTART && raw.rack.build != Build::Virtual {
                    return Err(bad(format!(
                        "host `{}`: fault `{name}` = `{RACK_RESTART}` needs build = \"virtual\"",
                        h.name
                    )));
                }
            }
        }
        Ok(RackFile {
            name: raw.rack.name,
            build: raw.rack.build,
            port: raw.rack.port,
            vips: raw.rack.vips,
            hosts,
        })
    }

    /// The host of `role` (client, director-a, director-b: checked to exist).
    pub fn host(&self, role: Role) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.role == role)
            .ok_or_else(|| Error::Topology(format!("the rack description has no {role:?}")))
    }

    /// The host named `name`.
    pub fn host_named(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| Error::Topology(format!("the rack description has no host `{name}`")))
    }

    /// Director `id`'s host.
    pub fn director(&self, id: DirectorId) -> Result<&Host> {
        self.host(match id {
            DirectorId::A => Role::DirectorA,
            DirectorId::B => Role::DirectorB,
        })
    }

    /// Director `id`'s fault `name`, or an error naming what the description lacks.
    pub fn fault(&self, id: DirectorId, name: &str) -> Result<FaultCommand> {
        let d = self.director(id)?;
        d.faults.get(name).cloned().ok_or_else(|| {
            Error::Topology(format!(
                "host `{}` (director {}) has no `{name}` fault command in the rack description",
                d.name,
                id.letter()
            ))
        })
    }

    /// Runs a fault command (not [`RACK_RESTART`]) on its host, bounded by [`FAULT_TIMEOUT`].
    /// Returns when it started and when it was done (unix ms) by the host's clock (`date`
    /// around the command there: an ssh login takes longer than most faults), or by this
    /// machine's around the whole command if the host's `date` cannot tell.
    pub fn run_fault(&self, f: &FaultCommand) -> Result<(u64, u64)> {
        let host = self.host_named(&f.on)?;
        tracing::info!(host = %host.name, access = %host.access.describe(), command = %f.run, "fault command");
        let script = format!("date +%s%3N\n(\n{}\n)\nrc=$?\ndate +%s%3N\nexit $rc", f.run);
        let before = crate::rack::now_unix_ms();
        let out = host.access.shell(&script, FAULT_TIMEOUT).run()?;
        let after = crate::rack::now_unix_ms();
        let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
        let times = (
            lines.first().and_then(|l| l.parse::<u64>().ok()),
            lines.last().and_then(|l| l.parse::<u64>().ok()),
        );
        Ok(match times {
            (Some(a), Some(b)) if a <= b && b.abs_diff(after) < 600_000 => (a, b),
            _ => (before, after),
        })
    }

    /// Makes every ssh host share one connection per host (`ControlMaster`), its sockets in
    /// `dir` (a private directory of this machine).
    pub fn share_ssh_connections(&mut self, dir: &Path) {
        for h in &mut self.hosts {
            if let Access::Ssh { control_dir, .. } = &mut h.access {
                *control_dir = Some(dir.display().to_string());
            }
        }
    }

    /// Closes the shared ssh connections (`ssh -O exit`), each bounded.
    pub fn close_ssh_connections(&self) {
        for h in &self.hosts {
            if let Access::Ssh {
                control_dir: Some(_),
                ..
            } = &h.access
            {
                let mut argv = h.access.ssh_argv();
                let dest = argv.pop().unwrap_or_default();
                argv.extend(["-O".into(), "exit".into(), dest]);
                let _ = Cmd::new(argv).timeout(SMALL_TIMEOUT).output();
            }
        }
    }

    /// The VIP of `mode`.
    pub fn vip(&self, mode: Mode) -> Result<std::net::Ipv4Addr> {
        self.vips.get(&mode).copied().ok_or_else(|| {
            Error::Topology(format!(
                "the rack description `{}` has no VIP for mode {mode} ([rack.vips] {mode} = ...)",
                self.name
            ))
        })
    }

    /// Each host with the argv that reaches it (for `tandem-rack rack-check`).
    pub fn describe(&self) -> String {
        let mut out = format!(
            "rack `{}` (build {:?}), port {}\n",
            self.name, self.build, self.port
        );
        for (m, v) in &self.vips {
            out.push_str(&format!("  vip {m}: {v}\n"));
        }
        for h in &self.hosts {
            out.push_str(&format!(
                "  {:<12} {:<12} {:<16} {}\n",
                h.name,
                format!("{:?}", h.role),
                h.address.map_or("-".into(), |a| a.to_string()),
                h.access.describe()
            ));
            for (k, f) in &h.faults {
                let on = if f.on == h.name {
                    String::new()
                } else {
                    format!(" (on {})", f.on)
                };
                out.push_str(&format!("      fault {k}{on}: {}\n", f.run));
            }
        }
        out
    }
}

/// Reads the text `path` of a syncd status file on `host` (a [`crate::pair::SyncdStatus`]).
pub fn syncd_status(host: &Host) -> Option<crate::pair::SyncdStatus> {
    let text = host.access.read_file(&host.syncd_status).ok()?;
    serde_json::from_str(&text).ok()
}

/// A command on `host` that prints its syncd status file every `every` (at most `count` times,
/// each followed by a line `--`) until `stop_file` exists there: one process (one ssh session)
/// for the whole drill instead of one per sample.
pub fn sample_status_cmd(host: &Host, every: Duration, count: u32, bound: Duration) -> Cmd {
    let script = format!(
        "i=0; while [ $i -lt {count} ] && [ ! -e {stop} ]; do cat {file} 2>/dev/null; echo; echo --; sleep {secs:.3}; i=$((i+1)); done",
        stop = shell_quote(&host.stop_file()),
        file = shell_quote(&host.syncd_status),
        secs = every.as_secs_f64(),
    );
    host.access.shell(&script, bound)
}

/// The samples in the output of [`sample_status_cmd`] (unreadable ones skipped).
pub fn parse_samples(text: &str) -> Vec<crate::pair::SyncdStatus> {
    text.split("\n--\n")
        .filter_map(|chunk| serde_json::from_str(chunk.trim()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            prefix: "tnd".into(),
            state: "/run/tandem-rack/tnd".into(),
            tool: "/x/tandem-rack".into(),
        }
    }

    #[test]
    fn the_embedded_default_parses() {
        let r = RackFile::default_virtual(&vars()).expect("default");
        assert_eq!(r.build, Build::Virtual);
        let a = r.director(DirectorId::A).expect("A");
        assert_eq!(
            a.access,
            Access::Local {
                netns: Some("tnd-dira".into())
            }
        );
        assert_eq!(a.syncd_status, "/run/tandem-rack/tnd/a.syncd.json");
        for f in [
            "kill",
            "restart",
            "link-down",
            "link-up",
            "sync-down",
            "sync-up",
        ] {
            assert!(r.fault(DirectorId::A, f).is_ok(), "A {f}");
            assert!(r.fault(DirectorId::B, f).is_ok(), "B {f}");
        }
        assert_eq!(r.host(Role::Client).expect("client").tool, "/x/tandem-rack");
        assert_eq!(
            r.vip(Mode::Dr).ok(),
            Some("203.0.113.30".parse().expect("ip"))
        );
    }

    #[test]
    fn the_ssh_example_parses() {
        let r = RackFile::parse(
            include_str!("../../deploy/rack-example-ssh.toml"),
            "deploy/rack-example-ssh.toml",
            &vars(),
        )
        .expect("the example");
        assert_eq!(r.build, Build::None);
        let a = r.director(DirectorId::A).expect("A");
        assert!(
            matches!(&a.access, Access::Ssh { destination, port: 22, .. } if destination == "root@director-a.lab.example")
        );
        assert_eq!(
            r.fault(DirectorId::A, "link-down")
                .map(|f| f.on)
                .ok()
                .as_deref(),
            Some("switch")
        );
        assert_eq!(
            r.fault(DirectorId::A, "power-off")
                .map(|f| f.on)
                .ok()
                .as_deref(),
            Some("pdu")
        );
        assert_eq!(
            r.host(Role::Client).expect("client").tool,
            "/usr/local/bin/tandem-rack"
        );
        assert!(r.vip(Mode::Tun).is_err());
    }

    #[test]
    fn ssh_access_quotes_the_remote_command() {
        let a = Access::Ssh {
            destination: "root@127.0.0.1".into(),
            port: 2222,
            identity: Some("/k/id".into()),
            netns: Some("t-client".into()),
            options: vec!["StrictHostKeyChecking=no".into()],
            connect_timeout_s: 5,
            control_dir: None,
        };
        let argv = a.wrap(&["sh".into(), "-c".into(), "echo 'hi' $x".into()]);
        assert_eq!(&argv[..3], &["ssh", "-p", "2222"]);
        assert_eq!(
            argv.last().map(String::as_str),
            Some("ip netns exec t-client sh -c 'echo '\\''hi'\\'' $x'")
        );
        assert!(argv.contains(&"root@127.0.0.1".to_string()));
        assert!(argv.windows(2).any(|w| w[0] == "-i" && w[1] == "/k/id"));
        let local = Access::Local { netns: None };
        assert_eq!(local.wrap(&["true".into()]), vec!["true".to_string()]);
    }

    #[test]
    fn bad_descriptions_are_refused_by_name() {
        let v = vars();
        let base = |hosts: &str| format!("[rack]\nname = \"x\"\nbuild = \"none\"\n{hosts}");
        let client = "[[host]]\nname = \"c\"\nrole = \"client\"\naccess = { local = \"\" }\n";
        let a = "[[host]]\nname = \"a\"\nrole = \"director-a\"\naccess = { ssh = \"root@a\" }\n";
        let b = "[[host]]\nname = \"b\"\nrole = \"director-b\"\naccess = { ssh = \"root@b\", port = 2200 }\n";
        assert!(RackFile::parse(&base(&format!("{client}{a}{b}")), "t", &v).is_ok());
        let e = |t: String| {
            RackFile::parse(&t, "t", &v)
                .expect_err("refused")
                .to_string()
        };
        assert!(e(base(&format!("{client}{a}"))).contains("DirectorB"));
        assert!(
            e(base(&format!("{client}{a}{b}").replace(
                "ssh = \"root@b\"",
                "ssh = \"root@b\", local = \"\""
            )))
            .contains("exactly one")
        );
        assert!(
            e(base(&format!(
                "{client}{a}{b}faults = {{ kill = {{ on = \"pdu\", run = \"off\" }} }}\n"
            )))
            .contains("unknown host `pdu`")
        );
        assert!(
            e(base(&format!(
                "{client}{a}{b}faults = {{ restart = \"rack:restart\" }}\n"
            )))
            .contains("virtual")
        );
        assert!(e(base(&format!("{client}{a}{b}colour = \"red\"\n"))).contains("colour"));
    }

    #[test]
    fn samples_are_split_and_bad_ones_skipped() {
        let text = "{\"role\":\"Active\",\"updated_unix_ms\":5,\"role_for_ms\":1}\n\n--\n\n--\n{\"role\":\"Standby\"}\n--\n";
        let s = parse_samples(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].role, "Active");
    }
}
