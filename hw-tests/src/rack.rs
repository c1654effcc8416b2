//! The virtual rack: the default description, bringing it up (topology, then one dataplane per
//! director), looking at it, and tearing it down again.
//!
//! [`Rack`] is a guard: dropping it tears the rack down unless [`Rack::detach`] was called (what
//! `tandem-rack up` does). [`teardown`] needs nothing but the prefix, so `tandem-rack down`, a
//! signal handler or a failing test can always clean up, and running it twice is harmless.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{Pmd, director_config, director_lcores, online_cpus};
use crate::error::{Error, Result};
use crate::exec::{Cancel, Cmd, is_root};
use crate::net::Ipv4Cidr;
use crate::process::{self, Stopped};
use crate::stats::{Counters, PortInfo, Stats};
use crate::topology::{Host, Interface, Prefix, Route, Topology};

/// Where rack state lives: `/run/tandem-rack/<prefix>/`.
pub const STATE_ROOT: &str = "/run/tandem-rack";
/// Where DPDK keeps its runtime directories (`--file-prefix`).
pub const DPDK_RUNTIME_ROOT: &str = "/var/run/dpdk";
/// The outside bridge.
pub const BRIDGE_OUT: &str = "br-out";
/// The inside bridge.
pub const BRIDGE_IN: &str = "br-in";
/// How long a dataplane gets to write its first stats file.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a dataplane gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// One of the two directors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DirectorId {
    /// Director A.
    A,
    /// Director B.
    B,
}

impl DirectorId {
    /// Both, in order.
    pub const ALL: [DirectorId; 2] = [DirectorId::A, DirectorId::B];

    /// `"A"` / `"B"`.
    pub fn letter(self) -> &'static str {
        match self {
            DirectorId::A => "A",
            DirectorId::B => "B",
        }
    }

    /// `"a"` / `"b"`: file names and DPDK file prefixes.
    pub fn lower(self) -> &'static str {
        match self {
            DirectorId::A => "a",
            DirectorId::B => "b",
        }
    }
}

/// A DPDK port of a director: the operator's name, the veth it drives, and its own address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectorPort {
    /// `outside` / `inside`.
    pub name: String,
    /// The interface in the director's namespace (`out0`).
    pub iface: String,
    /// The director's address on it (held by the dataplane, never by the kernel).
    pub address: Ipv4Cidr,
}

/// A VIP and the port it is answered on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    /// The address.
    pub address: Ipv4Addr,
    /// The director port name.
    pub port: String,
}

/// One director of the rack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectorSpec {
    /// A or B.
    pub id: DirectorId,
    /// Its host (namespace) name.
    pub host: String,
    /// Its DPDK ports, in DPDK port-id order.
    pub ports: Vec<DirectorPort>,
    /// The VIPs it answers.
    pub vips: Vec<Vip>,
}

impl DirectorSpec {
    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&DirectorPort> {
        self.ports.iter().find(|p| p.name == name)
    }
}

/// The rack: its topology plus what runs on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RackSpec {
    /// Hosts, bridges, interfaces, addresses.
    pub topology: Topology,
    /// The directors (A first).
    pub directors: Vec<DirectorSpec>,
    /// The client host.
    pub client: String,
    /// The client's interface on the outside network.
    pub client_iface: String,
    /// The real-server hosts.
    pub real_servers: Vec<String>,
    /// The VIP of the demo service.
    pub vip: Ipv4Addr,
    /// The inside gateway the real servers route through (the active director's, later).
    pub inside_gateway: Ipv4Addr,
}

fn cidr(a: [u8; 4], len: u8) -> Ipv4Cidr {
    Ipv4Cidr {
        addr: Ipv4Addr::from(a),
        len,
    }
}

impl RackSpec {
    /// The default rack: a client on the outside network, directors A and B on both networks
    /// (their ports handed to DPDK), three real servers inside routing via 172.16.0.254, and the
    /// VIP 203.0.113.10 owned by A.
    pub fn default_rack() -> Self {
        let vip = Ipv4Addr::new(203, 0, 113, 10);
        let inside_gateway = Ipv4Addr::new(172, 16, 0, 254);
        let director = |id: DirectorId, host: &str, last: u8, vips: Vec<Vip>| DirectorSpec {
            id,
            host: host.to_owned(),
            ports: vec![
                DirectorPort {
                    name: "outside".into(),
                    iface: "out0".into(),
                    address: cidr([203, 0, 113, last], 24),
                },
                DirectorPort {
                    name: "inside".into(),
                    iface: "in0".into(),
                    address: cidr([172, 16, 0, 240 + last], 24),
                },
            ],
            vips,
        };
        let directors = vec![
            director(
                DirectorId::A,
                "dira",
                11,
                vec![Vip {
                    address: vip,
                    port: "outside".into(),
                }],
            ),
            director(DirectorId::B, "dirb", 12, Vec::new()),
        ];
        let mut hosts = vec![Host {
            name: "client".into(),
            interfaces: vec![Interface::kernel(
                "eth0",
                BRIDGE_OUT,
                &[cidr([203, 0, 113, 2], 24)],
            )],
            routes: Vec::new(),
        }];
        for d in &directors {
            hosts.push(Host {
                name: d.host.clone(),
                interfaces: vec![
                    Interface::dpdk("out0", BRIDGE_OUT),
                    Interface::dpdk("in0", BRIDGE_IN),
                ],
                routes: Vec::new(),
            });
        }
        let mut real_servers = Vec::new();
        for (n, last) in [(1u8, 2u8), (2, 3), (3, 4)] {
            let name = format!("rs{n}");
            hosts.push(Host {
                name: name.clone(),
                interfaces: vec![Interface::kernel(
                    "eth0",
                    BRIDGE_IN,
                    &[cidr([172, 16, 0, last], 24)],
                )],
                routes: vec![Route {
                    destination: None,
                    via: inside_gateway,
                }],
            });
            real_servers.push(name);
        }
        RackSpec {
            topology: Topology {
                switch: "sw".into(),
                bridges: vec![BRIDGE_OUT.into(), BRIDGE_IN.into()],
                hosts,
            },
            directors,
            client: "client".into(),
            client_iface: "eth0".into(),
            real_servers,
            vip,
            inside_gateway,
        }
    }

    /// Director `id`, if the rack has it.
    pub fn director(&self, id: DirectorId) -> Option<&DirectorSpec> {
        self.directors.iter().find(|d| d.id == id)
    }

    /// The topology is valid and every director's host and port interfaces exist in it as DPDK
    /// interfaces.
    pub fn validate(&self) -> Result<()> {
        self.topology.validate()?;
        for d in &self.directors {
            let host = self.topology.host(&d.host).ok_or_else(|| {
                Error::Topology(format!(
                    "director {} names unknown host `{}`",
                    d.id.letter(),
                    d.host
                ))
            })?;
            for p in &d.ports {
                let iface = host.interfaces.iter().find(|i| i.name == p.iface);
                if !matches!(iface.map(|i| &i.owner), Some(crate::topology::Owner::Dpdk)) {
                    return Err(Error::Topology(format!(
                        "director {} port `{}`: `{}` is not a DPDK interface of `{}`",
                        d.id.letter(),
                        p.name,
                        p.iface,
                        d.host
                    )));
                }
            }
            for v in &d.vips {
                if d.port(&v.port).is_none() {
                    return Err(Error::Topology(format!(
                        "director {} VIP {} names unknown port `{}`",
                        d.id.letter(),
                        v.address,
                        v.port
                    )));
                }
            }
        }
        if self.topology.host(&self.client).is_none() {
            return Err(Error::Topology(format!(
                "client host `{}` is not in the topology",
                self.client
            )));
        }
        Ok(())
    }
}

/// The files of one rack under `/run/tandem-rack/<prefix>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state directory of rack `prefix`.
    pub fn for_prefix(prefix: &Prefix) -> Self {
        Self {
            dir: Path::new(STATE_ROOT).join(prefix.as_str()),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// `<state>/a.toml`
    pub fn config(&self, id: DirectorId) -> PathBuf {
        self.dir.join(format!("{}.toml", id.lower()))
    }

    /// `<state>/a.log`
    pub fn log(&self, id: DirectorId) -> PathBuf {
        self.dir.join(format!("{}.log", id.lower()))
    }

    /// `<state>/a.pid`
    pub fn pid(&self, id: DirectorId) -> PathBuf {
        self.dir.join(format!("{}.pid", id.lower()))
    }

    /// `<state>/a.stats.json`
    pub fn stats(&self, id: DirectorId) -> PathBuf {
        self.dir.join(format!("{}.stats.json", id.lower()))
    }

    /// `<state>/rack.json`: what `up` started, for `status`.
    pub fn meta(&self) -> PathBuf {
        self.dir.join("rack.json")
    }
}

/// The DPDK runtime directory of director `id`: `/var/run/dpdk/<prefix>-a`.
pub fn dpdk_runtime_dir(prefix: &Prefix, id: DirectorId) -> PathBuf {
    Path::new(DPDK_RUNTIME_ROOT).join(prefix.dpdk_file_prefix(id.lower()))
}

/// How to bring a rack up.
#[derive(Clone, Debug)]
pub struct RackOptions {
    /// The name prefix.
    pub prefix: Prefix,
    /// What to build.
    pub spec: RackSpec,
    /// The DPDK driver for the veths.
    pub pmd: Pmd,
    /// `--dataplane PATH`; else `$TANDEM_DATAPLANE`, else next to the executable.
    pub dataplane: Option<PathBuf>,
    /// False builds the topology only (kernel-level tests of the wiring).
    pub start_dataplanes: bool,
    /// Bound on each director's first stats file.
    pub ready_timeout: Duration,
    /// Set by SIGINT/SIGTERM handlers; `up` stops and tears down when it is set.
    pub cancel: Cancel,
}

impl RackOptions {
    /// The default rack under `prefix`, AF_XDP, both dataplanes started.
    pub fn new(prefix: Prefix) -> Self {
        Self {
            prefix,
            spec: RackSpec::default_rack(),
            pmd: Pmd::AfXdp,
            dataplane: None,
            start_dataplanes: true,
            ready_timeout: READY_TIMEOUT,
            cancel: Cancel::new(),
        }
    }
}

/// What `up` records in `rack.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RackMeta {
    /// The prefix.
    pub prefix: String,
    /// `af_xdp` / `af_packet`, when dataplanes were started.
    pub pmd: Option<Pmd>,
    /// The dataplane binary used.
    pub dataplane: Option<PathBuf>,
    /// When the rack was ready.
    pub started_unix_ms: u64,
    /// The namespaces created.
    pub namespaces: Vec<String>,
}

#[derive(Debug)]
struct RunningDirector {
    id: DirectorId,
    netns: String,
    child: Option<Child>,
    pid: u32,
}

/// A rack that is up. Dropping it tears it down (unless detached).
#[derive(Debug)]
pub struct Rack {
    prefix: Prefix,
    spec: RackSpec,
    state: StateDir,
    directors: Vec<RunningDirector>,
    armed: bool,
}

impl Rack {
    /// Builds the topology and starts both dataplanes, waiting until each has written its stats
    /// file. On any failure (or cancellation) everything already created is torn down before the
    /// error is returned.
    pub fn up(opts: &RackOptions) -> Result<Rack> {
        preflight("tandem-rack up")?;
        opts.spec.validate()?;
        let binary = if opts.start_dataplanes {
            Some(process::locate_dataplane(opts.dataplane.as_deref())?)
        } else {
            None
        };
        let existing = rack_namespaces(&opts.prefix)?;
        if !existing.is_empty() {
            return Err(Error::AlreadyUp {
                prefix: opts.prefix.to_string(),
                namespaces: existing.join(", "),
            });
        }
        // From here on, the guard owns whatever exists.
        let mut rack = Rack {
            prefix: opts.prefix.clone(),
            spec: opts.spec.clone(),
            state: StateDir::for_prefix(&opts.prefix),
            directors: Vec::new(),
            armed: true,
        };
        let state = rack.state.path().to_path_buf();
        if state.exists() {
            // A stale state directory of a rack whose namespaces are gone: clear it, and any
            // leftover DPDK runtime directories, so readiness never sees an old stats file.
            teardown(&opts.prefix)?;
        }
        std::fs::create_dir_all(&state)
            .map_err(|e| Error::io(format!("creating {}", state.display()), e))?;
        tracing::info!(prefix = %opts.prefix, state = %state.display(), "building topology");
        for step in opts.spec.topology.plan(&opts.prefix) {
            opts.cancel.check()?;
            let cmd = Cmd::new(step.argv.clone());
            match cmd.run() {
                Ok(_) => {}
                Err(e) if !step.required => tracing::warn!(error = %e, "optional step failed"),
                Err(e) => return Err(e),
            }
        }
        if let Some(binary) = &binary {
            rack.start_dataplanes(binary, opts)?;
        }
        let meta = RackMeta {
            prefix: opts.prefix.to_string(),
            pmd: binary.as_ref().map(|_| opts.pmd),
            dataplane: binary.clone(),
            started_unix_ms: now_unix_ms(),
            namespaces: opts.spec.topology.namespaces(&opts.prefix),
        };
        write_file(
            &rack.state.meta(),
            &serde_json::to_string_pretty(&meta)
                .map_err(|e| Error::parse("rack.json", e.to_string()))?,
        )?;
        Ok(rack)
    }

    fn start_dataplanes(&mut self, binary: &Path, opts: &RackOptions) -> Result<()> {
        let (lcore_a, lcore_b) = director_lcores(&online_cpus());
        for d in &self.spec.directors {
            let lcore = match d.id {
                DirectorId::A => lcore_a,
                DirectorId::B => lcore_b,
            };
            let cfg = director_config(d, &self.prefix, opts.pmd, lcore, &self.state.stats(d.id));
            write_file(&self.state.config(d.id), &crate::config::to_toml(&cfg)?)?;
        }
        for d in &self.spec.directors {
            opts.cancel.check()?;
            let netns = self.prefix.netns(&d.host);
            let child = process::spawn_in_netns(
                &netns,
                binary,
                &self.state.config(d.id),
                &self.state.log(d.id),
            )?;
            let pid = child.id();
            write_file(&self.state.pid(d.id), &format!("{pid}\n"))?;
            tracing::info!(director = d.id.letter(), pid, netns = %netns, "dataplane started");
            self.directors.push(RunningDirector {
                id: d.id,
                netns,
                child: Some(child),
                pid,
            });
        }
        for i in 0..self.directors.len() {
            self.wait_ready(i, opts.ready_timeout, &opts.cancel)?;
        }
        Ok(())
    }

    fn wait_ready(&mut self, index: usize, timeout: Duration, cancel: &Cancel) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let Some(d) = self.directors.get_mut(index) else {
            return Ok(());
        };
        let (stats, log) = (self.state.stats(d.id), self.state.log(d.id));
        loop {
            cancel.check()?;
            if let Some(child) = d.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    d.child = None;
                    return Err(Error::ExitedEarly {
                        director: d.id.letter().to_owned(),
                        status: status.to_string(),
                        tail: process::log_tail(&log, 20),
                        log,
                    });
                }
            }
            if Stats::read(&stats).is_ok() {
                tracing::info!(director = d.id.letter(), "ready");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    director: d.id.letter().to_owned(),
                    secs: timeout.as_secs(),
                    stats,
                    tail: process::log_tail(&log, 20),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The rack's prefix.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }

    /// What was built.
    pub fn spec(&self) -> &RackSpec {
        &self.spec
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// The namespace of `host`.
    pub fn netns(&self, host: &str) -> String {
        self.prefix.netns(host)
    }

    /// The client's namespace.
    pub fn client_netns(&self) -> String {
        self.prefix.netns(&self.spec.client)
    }

    /// The namespace of director `id`.
    pub fn director_netns(&self, id: DirectorId) -> Option<String> {
        self.spec.director(id).map(|d| self.prefix.netns(&d.host))
    }

    /// The dataplane pid of director `id`, if it was started.
    pub fn director_pid(&self, id: DirectorId) -> Option<u32> {
        self.directors.iter().find(|d| d.id == id).map(|d| d.pid)
    }

    /// The latest stats of director `id`.
    pub fn stats(&self, id: DirectorId) -> Result<Stats> {
        Stats::read(&self.state.stats(id))
    }

    /// Waits (at most `timeout`) for a stats file of director `id` written after `after_unix_ms`,
    /// so counters of packets exchanged before that instant are in it.
    pub fn stats_after(
        &self,
        id: DirectorId,
        after_unix_ms: u64,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<Stats> {
        let deadline = Instant::now() + timeout;
        loop {
            cancel.check()?;
            let last = self.stats(id);
            if let Ok(s) = &last {
                if s.unix_ms > after_unix_ms {
                    return last;
                }
            }
            if Instant::now() >= deadline {
                return match last {
                    Ok(s) => Err(Error::parse(
                        format!("stats of director {}", id.letter()),
                        format!(
                            "no file newer than {after_unix_ms} within {} s (last written at {})",
                            timeout.as_secs(),
                            s.unix_ms
                        ),
                    )),
                    Err(e) => Err(e),
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM director `id`'s dataplane and wait up to `grace` for its exit status (SIGKILL
    /// after that). For tests of the dataplane's shutdown.
    pub fn stop_director(
        &mut self,
        id: DirectorId,
        grace: Duration,
    ) -> Result<(Stopped, ExitStatus)> {
        let d = self
            .directors
            .iter_mut()
            .find(|d| d.id == id)
            .ok_or_else(|| Error::Topology(format!("director {} was not started", id.letter())))?;
        let mut child = d.child.take().ok_or_else(|| {
            Error::Topology(format!("director {} was already stopped", id.letter()))
        })?;
        process::stop_child(&mut child, grace)
    }

    /// Tears the rack down now and reports what was removed.
    pub fn down(mut self) -> Result<Teardown> {
        self.armed = false;
        self.teardown_now()
    }

    /// Leaves the rack running after this value is gone (`tandem-rack up`).
    pub fn detach(mut self) {
        self.armed = false;
    }

    fn teardown_now(&mut self) -> Result<Teardown> {
        // Our own children first: they are reaped here, so they never linger as zombies.
        for d in &mut self.directors {
            if let Some(mut child) = d.child.take() {
                match process::stop_child(&mut child, STOP_GRACE) {
                    Ok((how, status)) => {
                        tracing::info!(director = d.id.letter(), netns = %d.netns, ?how, %status, "dataplane stopped");
                    }
                    Err(e) => {
                        tracing::warn!(director = d.id.letter(), error = %e, "stopping dataplane")
                    }
                }
            }
        }
        teardown(&self.prefix)
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            if let Err(e) = self.teardown_now() {
                tracing::error!(prefix = %self.prefix, error = %e, "teardown after failure");
            }
        }
    }
}

/// What [`teardown`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Teardown {
    /// Processes stopped (`A pid 123 terminated`).
    pub stopped: Vec<String>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Directories removed.
    pub removed: Vec<String>,
}

impl Teardown {
    /// Whether there was nothing to do.
    pub fn is_empty(&self) -> bool {
        self.stopped.is_empty() && self.namespaces.is_empty() && self.removed.is_empty()
    }
}

/// Tears down everything of rack `prefix`: the dataplanes named by pid files (after checking the
/// pid still runs that director's config), any other process left in the rack's namespaces, the
/// namespaces (and with them the veths, bridges and XDP programs), DPDK's runtime directories and
/// the state directory. Idempotent; keeps going past errors and reports them all at the end.
pub fn teardown(prefix: &Prefix) -> Result<Teardown> {
    let state = StateDir::for_prefix(prefix);
    let mut done = Teardown::default();
    let mut errors = Vec::new();
    for id in DirectorId::ALL {
        let Some(pid) = process::read_pid(&state.pid(id)) else {
            continue;
        };
        if process::is_director(pid, &state.config(id)) {
            let how = process::stop_pid(pid, STOP_GRACE);
            done.stopped
                .push(format!("director {} pid {pid} {how:?}", id.letter()));
        } else {
            tracing::debug!(
                pid,
                "pid file names a process that is not this rack's director; left alone"
            );
        }
    }
    let namespaces = match rack_namespaces(prefix) {
        Ok(n) => n,
        Err(e) => {
            errors.push(e.to_string());
            Vec::new()
        }
    };
    // Anything still living in the rack's namespaces (a dataplane whose pid file was lost, a
    // stray ping) would keep the namespace alive after `ip netns del`.
    for ns in &namespaces {
        for pid in netns_pids(ns) {
            let argv0 = process::cmdline(pid)
                .and_then(|a| a.into_iter().next())
                .unwrap_or_else(|| "?".to_owned());
            let how = process::stop_pid(pid, STOP_GRACE);
            done.stopped
                .push(format!("pid {pid} ({argv0}) in {ns} {how:?}"));
        }
    }
    for ns in &namespaces {
        match Cmd::new(["ip", "netns", "del", ns.as_str()]).run() {
            Ok(_) => done.namespaces.push(ns.clone()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let mut dirs: Vec<PathBuf> = DirectorId::ALL
        .iter()
        .map(|id| dpdk_runtime_dir(prefix, *id))
        .collect();
    dirs.push(state.path().to_path_buf());
    for dir in dirs {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => done.removed.push(dir.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("removing {}: {e}", dir.display())),
        }
    }
    match rack_namespaces(prefix) {
        Ok(left) if !left.is_empty() => {
            errors.push(format!("namespaces still present: {}", left.join(", ")))
        }
        _ => {}
    }
    if errors.is_empty() {
        if !done.is_empty() {
            tracing::info!(prefix = %prefix, ?done, "rack down");
        }
        Ok(done)
    } else {
        Err(Error::Teardown(errors))
    }
}

/// Pids of the processes in namespace `ns` (`ip netns pids`); empty if it cannot be listed.
fn netns_pids(ns: &str) -> Vec<u32> {
    Cmd::new(["ip", "netns", "pids", ns])
        .run()
        .map(|o| {
            o.stdout
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every named network namespace (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>> {
    let out = Cmd::new(["ip", "netns", "list"]).run()?;
    Ok(parse_netns_list(&out.stdout))
}

/// Parses `ip netns list` output: one namespace per line, optionally followed by ` (id: N)`.
pub fn parse_netns_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The namespaces that belong to rack `prefix`.
pub fn rack_namespaces(prefix: &Prefix) -> Result<Vec<String>> {
    Ok(list_namespaces()?
        .into_iter()
        .filter(|n| prefix.owns_netns(n))
        .collect())
}

/// Checks that this process can build a rack: root, and `ip netns` works.
pub fn preflight(what: &str) -> Result<()> {
    if !is_root() {
        return Err(Error::NotRoot(what.to_owned()));
    }
    list_namespaces().map(|_| ())
}

/// Milliseconds since the epoch.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// What `tandem-rack status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct RackStatus {
    /// The prefix.
    pub prefix: String,
    /// Namespaces of this rack that exist.
    pub namespaces: Vec<String>,
    /// The state directory, if it exists.
    pub state_dir: Option<String>,
    /// What `up` recorded.
    pub meta: Option<RackMeta>,
    /// Each director.
    pub directors: Vec<DirectorStatus>,
}

/// One director in [`RackStatus`].
#[derive(Clone, Debug, Serialize)]
pub struct DirectorStatus {
    /// `A` / `B`.
    pub director: String,
    /// Its pid file's pid.
    pub pid: Option<u32>,
    /// Whether that pid runs this director's config.
    pub alive: bool,
    /// Age of its stats file.
    pub stats_age_ms: Option<u64>,
    /// Its ports, from the stats file.
    pub ports: Vec<PortInfo>,
    /// Its last total counters (non-zero ones).
    pub total: Option<Counters>,
    /// Its log file.
    pub log: Option<String>,
}

impl RackStatus {
    /// Whether anything of the rack exists.
    pub fn anything_up(&self) -> bool {
        !self.namespaces.is_empty() || self.state_dir.is_some()
    }
}

/// What is up for rack `prefix`.
pub fn status(prefix: &Prefix) -> Result<RackStatus> {
    let state = StateDir::for_prefix(prefix);
    let namespaces = rack_namespaces(prefix)?;
    let state_exists = state.path().is_dir();
    let meta = std::fs::read_to_string(state.meta())
        .ok()
        .and_then(|t| serde_json::from_str::<RackMeta>(&t).ok());
    let now = now_unix_ms();
    let directors = DirectorId::ALL
        .iter()
        .filter(|id| state.config(**id).exists())
        .map(|&id| {
            let pid = process::read_pid(&state.pid(id));
            let stats = Stats::read(&state.stats(id)).ok();
            DirectorStatus {
                director: id.letter().to_owned(),
                pid,
                alive: pid.is_some_and(|p| process::is_director(p, &state.config(id))),
                stats_age_ms: stats.as_ref().map(|s| now.saturating_sub(s.unix_ms)),
                ports: stats.as_ref().map(|s| s.ports.clone()).unwrap_or_default(),
                total: stats.map(|s| s.total.nonzero()),
                log: Some(state.log(id).display().to_string()),
            }
        })
        .collect();
    Ok(RackStatus {
        prefix: prefix.to_string(),
        namespaces,
        state_dir: state_exists.then(|| state.path().display().to_string()),
        meta,
        directors,
    })
}
