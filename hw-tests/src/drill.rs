//! `tandem-rack drill`: a failover drill on the failover pair ([`crate::pair`]).
//!
//! N long-lived TCP connections go from the client through the VIP of the mode; each sends a
//! line every 100 ms and checks the answer (the same real server, the line echoed). After a
//! warm-up the fault is injected (`kill`: SIGKILL of A's dataplane and syncd, as a crashed
//! box); B takes over (syncd sees A silent on both paths, orders its dataplane ACTIVE, which
//! sends gratuitous ARPs for the VIPs and the inside gateway), and the connections go on. The
//! client (`tandem-rack drill-client`, run in the client namespace) records the wall-clock
//! time of every answer; the report is computed from them against the fault's time.
//!
//! Besides the long-lived connections the client opens a **new** connection every
//! [`NEW_FLOW_EVERY`] (one line, one answer, closed) for `new_flow_ms`, and the drill samples
//! both syncd status files every [`ROLE_SAMPLE_EVERY`] to reconstruct each director's role
//! timeline (`max_actives`, `dual_active_ms`). The faults are described on [`Fault`].

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::exec::Cancel;
use crate::hosts::{Build, Host, RackFile, Role, shell_quote};
use crate::rack::{DirectorId, Mode, Rack, RackOptions, now_unix_ms};

/// Message interval per connection.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// An answer later than this breaks the connection.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections a drill may open.
pub const MAX_CONNS: u32 = 4000;
/// A new connection is opened this often during the drill (for `new_flow_ms`).
pub const NEW_FLOW_EVERY: Duration = Duration::from_millis(20);
/// Most new connections one drill opens.
pub const MAX_NEW_FLOWS: u32 = 3000;
/// How often both syncd status files are sampled.
pub const ROLE_SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// syncd rewrites its status file this often (the rack's `status_interval_ms`).
pub const STATUS_INTERVAL_MS: u64 = 50;

/// The faults. A is active (priority 200), B standby (100) when a fault starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL of the active director's dataplane and syncd (a crashed box).
    Kill,
    /// The switch-side ends of A's DPDK ports' veths go down (its cables are pulled): A's
    /// dataplane loses the service network while A's syncd and sync link stay up. B must take
    /// over although it still hears A on the sync link.
    LinkDown,
    /// `kill`, B takes over; then A comes back (dataplane restarted, services applied, syncd
    /// restarted with `preempt = true`), resyncs from B, and takes back over.
    Failback,
    /// B's dataplane and syncd are killed and restarted under traffic; once B is `Standby`
    /// again (sync complete), A is killed.
    StandbyRestart,
    /// `sync0` goes down in A's namespace (both directors alive): A must stay the only active
    /// director; the link is healed after the drill's `after` time and B resyncs.
    SyncCut,
}

impl Fault {
    /// Every fault, in the drill's order of importance.
    pub const ALL: [Fault; 5] = [
        Fault::Kill,
        Fault::LinkDown,
        Fault::Failback,
        Fault::StandbyRestart,
        Fault::SyncCut,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::LinkDown => "link-down",
            Fault::Failback => "failback",
            Fault::StandbyRestart => "standby-restart",
            Fault::SyncCut => "sync-cut",
        }
    }

    /// Whether B is expected to take over.
    pub fn takes_over(self) -> bool {
        self != Fault::SyncCut
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Fault {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                Error::parse(
                    "--fault",
                    format!(
                        "unknown fault `{s}` (kill, link-down, failback, standby-restart, sync-cut)"
                    ),
                )
            })
    }
}

/// One connection's record, as the client saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnTrace {
    /// The connection was made.
    pub established: bool,
    /// Why it ended early (reset, timeout, wrong answer), if it did.
    pub error: Option<String>,
    /// When it ended early (unix ms).
    pub broken_at_ms: Option<u64>,
    /// Lines sent.
    pub sent: u64,
    /// Correct answers, each at this unix ms.
    pub answers_ms: Vec<u64>,
    /// When the line of each answer was sent (unix ms), parallel to `answers_ms`.
    #[serde(default)]
    pub sent_ms: Vec<u64>,
}

/// One short new connection: opened, one line, one answer, closed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewFlow {
    /// When the connect started (unix ms).
    pub started_ms: u64,
    /// When the correct answer came (unix ms).
    pub answered_ms: Option<u64>,
    /// What went wrong, if it did.
    pub error: Option<String>,
}

/// What the client reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientTrace {
    /// One per connection.
    pub conns: Vec<ConnTrace>,
    /// The new connections opened during the drill.
    #[serde(default)]
    pub new_flows: Vec<NewFlow>,
}

/// Runs the client's side: `conns` connections to `target` for at most `duration`, each a
/// thread sending a line every [`INTERVAL`], plus a new connection every [`NEW_FLOW_EVERY`].
/// Everything stops early once `stop_file` exists.
pub fn run_client(
    target: SocketAddrV4,
    conns: u32,
    duration: Duration,
    stop_file: Option<PathBuf>,
) -> Result<ClientTrace> {
    if conns == 0 || conns > MAX_CONNS {
        return Err(Error::parse(
            "--conns",
            format!("{conns}: 1-{MAX_CONNS} allowed"),
        ));
    }
    let start = Instant::now();
    let end = start + duration;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = stop_file.map(|f| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                if f.exists() {
                    stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    });
    let mut handles = Vec::new();
    for i in 0..conns {
        let stop = stop.clone();
        let h = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || one_conn(i, target, end, &stop))
            .map_err(|e| Error::io("spawning a drill connection thread", e))?;
        handles.push(h);
        // Spread the connections' phases over the interval.
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let flows = {
        let stop = stop.clone();
        std::thread::spawn(move || new_flows(target, end, &stop))
    };
    let conns = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    let new_flows = flows.join().unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    Ok(ClientTrace { conns, new_flows })
}

/// A new connection every [`NEW_FLOW_EVERY`] until `end` or `stop`, each in its own thread.
fn new_flows(target: SocketAddrV4, end: Instant, stop: &AtomicBool) -> Vec<NewFlow> {
    let mut handles = Vec::new();
    let mut next = Instant::now();
    for k in 0..MAX_NEW_FLOWS {
        if Instant::now() >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        if let Ok(h) = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || one_new_flow(k, target))
        {
            handles.push(h);
        }
        next += NEW_FLOW_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect()
}

fn one_new_flow(k: u32, target: SocketAddrV4) -> NewFlow {
    let mut f = NewFlow {
        started_ms: now_unix_ms(),
        ..NewFlow::default()
    };
    let result = (|| -> std::result::Result<(), String> {
        let stream = TcpStream::connect_timeout(&target.into(), Duration::from_secs(3))
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| format!("set_read_timeout: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut writer = stream.try_clone().map_err(|e| format!("try_clone: {e}"))?;
        let line = format!("n{k}");
        writer
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .map_err(|e| format!("read: {e}"))?;
        match answer.trim_end().split_once(' ') {
            Some((_, echoed)) if echoed == line => Ok(()),
            _ => Err(format!("answer {answer:?} to {line:?}")),
        }
    })();
    match result {
        Ok(()) => f.answered_ms = Some(now_unix_ms()),
        Err(e) => f.error = Some(e),
    }
    f
}

fn one_conn(i: u32, target: SocketAddrV4, end: Instant, stop: &AtomicBool) -> ConnTrace {
    let mut t = ConnTrace::default();
    let fail = |t: &mut ConnTrace, e: String| {
        t.error = Some(e);
        t.broken_at_ms = Some(now_unix_ms());
    };
    let stream = match TcpStream::connect_timeout(&target.into(), Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            fail(&mut t, format!("connect: {e}"));
            return t;
        }
    };
    t.established = true;
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(ANSWER_TIMEOUT)).is_err() {
        fail(&mut t, "set_read_timeout".into());
        return t;
    }
    let Ok(mut writer) = stream.try_clone() else {
        fail(&mut t, "try_clone".into());
        return t;
    };
    let mut reader = BufReader::new(stream);
    let mut server: Option<String> = None;
    let mut k = 0u64;
    let mut next = Instant::now();
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let line = format!("c{i} m{k}");
        let sent_at = now_unix_ms();
        if let Err(e) = writer.write_all(format!("{line}\n").as_bytes()) {
            fail(&mut t, format!("write: {e}"));
            return t;
        }
        t.sent += 1;
        let mut answer = String::new();
        match reader.read_line(&mut answer) {
            Ok(0) => {
                fail(&mut t, "closed by the peer".into());
                return t;
            }
            Ok(_) => {}
            Err(e) => {
                fail(&mut t, format!("read: {e}"));
                return t;
            }
        }
        // `<name>:<port> <line>`: the line back, from the same real server every time.
        let answer = answer.trim_end();
        let Some((who, echoed)) = answer.split_once(' ') else {
            fail(&mut t, format!("malformed answer {answer:?}"));
            return t;
        };
        if echoed != line {
            fail(&mut t, format!("answer {answer:?} to {line:?}"));
            return t;
        }
        match &server {
            None => server = Some(who.to_owned()),
            Some(s) if s != who => {
                fail(&mut t, format!("answered by {who} after {s}"));
                return t;
            }
            Some(_) => {}
        }
        t.answers_ms.push(now_unix_ms());
        t.sent_ms.push(sent_at);
        k += 1;
        next += INTERVAL;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    t
}

/// One sample of a syncd status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSample {
    /// `A` / `B`.
    pub director: String,
    /// When the file was written (unix ms).
    pub updated_ms: u64,
    /// The role.
    pub role: String,
    /// How long it had been held then.
    pub role_for_ms: u64,
    /// Why it changed to it.
    #[serde(default)]
    pub reason: String,
    /// The longest silences of the peer it had seen so far, and its own stalls.
    #[serde(default)]
    pub silences: Option<crate::pair::Silences>,
    #[serde(default)]
    pub stalls: u64,
}

/// A stretch of one role of one director, reconstructed from samples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleSpan {
    /// `A` / `B`.
    pub director: String,
    /// The role.
    pub role: String,
    /// Why it changed to it.
    pub reason: String,
    /// Since (unix ms): the file's time minus `role_for_ms`.
    pub from_ms: u64,
    /// Until (unix ms): the next role's start, or (the process gone) the last file written in
    /// this role plus one status interval.
    pub to_ms: u64,
}

/// Each director's role stretches, from the samples (any order).
pub fn role_spans(samples: &[RoleSample]) -> Vec<RoleSpan> {
    let mut spans: Vec<RoleSpan> = Vec::new();
    for d in ["A", "B"] {
        let mut mine: Vec<&RoleSample> = samples.iter().filter(|s| s.director == d).collect();
        mine.sort_by_key(|s| s.updated_ms);
        mine.dedup_by_key(|s| s.updated_ms);
        // (role, since, last written, reason)
        let mut runs: Vec<(String, u64, u64, String)> = Vec::new();
        for s in mine {
            let since = s.updated_ms.saturating_sub(s.role_for_ms);
            match runs.last_mut() {
                Some(r) if r.0 == s.role && since.abs_diff(r.1) <= 20 => r.2 = s.updated_ms,
                _ => runs.push((s.role.clone(), since, s.updated_ms, s.reason.clone())),
            }
        }
        for (i, r) in runs.iter().enumerate() {
            let held_until = r.2 + STATUS_INTERVAL_MS;
            let to = runs
                .get(i + 1)
                .map_or(held_until, |n| n.1.min(held_until).max(r.1));
            spans.push(RoleSpan {
                director: d.into(),
                role: r.0.clone(),
                reason: r.3.clone(),
                from_ms: r.1,
                to_ms: to,
            });
        }
    }
    spans.sort_by_key(|s| s.from_ms);
    spans
}

/// The most directors active at one instant, and for how long (ms) two were.
pub fn max_actives(spans: &[RoleSpan]) -> (u32, u64) {
    let mut edges: Vec<(u64, i32)> = spans
        .iter()
        .filter(|s| s.role == "Active" && s.to_ms > s.from_ms)
        .flat_map(|s| [(s.from_ms, 1), (s.to_ms, -1)])
        .collect();
    // Ends before starts at the same instant: touching spans do not overlap.
    edges.sort();
    let (mut n, mut max, mut dual, mut since) = (0i32, 0i32, 0u64, 0u64);
    for (t, d) in edges {
        if n >= 2 {
            dual += t.saturating_sub(since);
        }
        n += d;
        max = max.max(n);
        since = t;
    }
    (u32::try_from(max).unwrap_or(0), dual)
}

/// A step of the fault, at this time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What happened (`A killed`, `A restarted`, `A active again`, ...).
    pub what: String,
    /// Relative to the fault (ms, may be negative).
    pub at_ms: i64,
}

/// What a drill measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DrillReport {
    /// `nat` / `tun` / `dr`.
    pub mode: String,
    /// `kill`, `link-down`, `failback`, `standby-restart`, `sync-cut`.
    pub fault: String,
    /// Connections asked for.
    pub conns: u32,
    /// Connections made before the fault.
    pub established: u32,
    /// Established connections that never broke and answered correctly to a line sent after
    /// the fault's last step.
    pub survived: u32,
    /// Established connections that broke (reset, timeout, wrong server or answer), or never
    /// answered after the last step.
    pub broken: u32,
    /// From the fault to the first correct answer, on a connection established before it, to
    /// a line sent after the fault was complete (in TUN/DR an answer to a line sent before the fault may arrive
    /// later without passing a director, so it proves nothing). `null` when no takeover is
    /// expected (`sync-cut`: see `first_answer_ms`).
    pub takeover_ms: Option<u64>,
    /// The same measure whatever the fault.
    #[serde(default)]
    pub first_answer_ms: Option<u64>,
    /// From the fault until every surviving connection had answered again.
    pub all_answering_ms: Option<u64>,
    /// From the fault to the first answer on a new connection opened after it was complete.
    #[serde(default)]
    pub new_flow_ms: Option<u64>,
    /// New connections opened during the drill / answered.
    #[serde(default)]
    pub new_flows: u32,
    /// New connections answered.
    #[serde(default)]
    pub new_flows_answered: u32,
    /// The longest silence between two answers of one connection, over all connections.
    pub max_gap_ms: u64,
    /// Lines sent and never answered.
    pub lost_messages: u64,
    /// Lines answered.
    pub answered_messages: u64,
    /// The most directors active at one instant during the drill (syncd status files; 2 also
    /// when a director stepped down for a split brain, however short its active spell was).
    #[serde(default)]
    pub max_actives: u32,
    /// How long two directors were active at once (ms).
    #[serde(default)]
    pub dual_active_ms: u64,
    /// The fault's steps, relative to the fault.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Every role change of both directors during the drill, relative to the fault, with its
    /// reason (`+168 B Active (PeerDead)`). A role held for less than a status interval
    /// (50 ms) may be missing.
    #[serde(default)]
    pub role_changes: Vec<String>,
    /// Per director (`A`, `B`), from its last status sample: the longest silences of its
    /// peer it saw (ms, per path and on both; the dead interval is compared with `both`), and
    /// how often its syncd found it had not run for over half an interval (`stalls`).
    #[serde(default)]
    pub silences: BTreeMap<String, (crate::pair::Silences, u64)>,
    /// The role A's syncd reported after the drill.
    #[serde(default)]
    pub a_role_after: Option<String>,
    /// The role B's syncd reported after the drill.
    pub b_role_after: Option<String>,
    /// Errors of broken connections (at most 5).
    pub errors: Vec<String>,
    /// What was killed.
    pub killed: Vec<String>,
    /// The picture of answers per 10 ms around the fault.
    #[serde(default)]
    pub svg: Option<String>,
    /// Both directors' syncd and dataplane logs, kept next to the picture when two directors
    /// were active at once, a connection broke, or the takeover or the first new flow took
    /// over a second (the rack's state directory goes with the rack).
    #[serde(default)]
    pub kept_logs: Vec<String>,
}

impl DrillReport {
    /// Whether the drill passed: connections were established, every one survived, none
    /// broke, and never were both directors active at once. What `tandem-rack drill`'s exit
    /// status and the demo's check say.
    pub fn passed(&self) -> bool {
        self.established > 0
            && self.survived == self.established
            && self.broken == 0
            && self.max_actives <= 1
    }

    /// From the client's trace, the fault's start, when it was complete (`done_ms`: only lines
    /// sent and connections opened after it prove a takeover; times are still measured from
    /// `fault_ms`) and the time of its last step (the same for a one-step fault): a survivor
    /// answered to a line sent after it.
    pub fn compute(
        trace: &ClientTrace,
        fault_ms: u64,
        done_ms: u64,
        last_step_ms: u64,
    ) -> DrillReport {
        let mut r = DrillReport {
            conns: u32::try_from(trace.conns.len()).unwrap_or(u32::MAX),
            ..DrillReport::default()
        };
        let done_ms = done_ms.max(fault_ms);
        let last_step_ms = last_step_ms.max(done_ms);
        let mut first_after = Vec::new();
        let mut takeover: Option<u64> = None;
        for c in &trace.conns {
            if !c.established {
                continue;
            }
            r.established += 1;
            r.answered_messages += c.answers_ms.len() as u64;
            r.lost_messages += c.sent.saturating_sub(c.answers_ms.len() as u64);
            let gap = c
                .answers_ms
                .windows(2)
                .map(|w| w[1].saturating_sub(w[0]))
                .max()
                .unwrap_or(0);
            r.max_gap_ms = r.max_gap_ms.max(gap);
            let after = c.answers_ms.iter().find(|t| **t > fault_ms).copied();
            let answered_after_last = c.sent_ms.iter().any(|s| *s > last_step_ms);
            if let Some(a) = c
                .answers_ms
                .iter()
                .zip(&c.sent_ms)
                .find(|(_, s)| **s > done_ms)
                .map(|(a, _)| *a)
            {
                let d = a.saturating_sub(fault_ms);
                takeover = Some(takeover.map_or(d, |t| t.min(d)));
            }
            if c.error.is_some() {
                r.broken += 1;
                if r.errors.len() < 5 {
                    r.errors.extend(c.error.clone());
                }
            } else if let (Some(a), true) = (after, answered_after_last) {
                r.survived += 1;
                first_after.push(a - fault_ms);
            } else {
                r.broken += 1;
            }
        }
        r.first_answer_ms = takeover;
        r.takeover_ms = takeover;
        r.all_answering_ms = first_after.iter().max().copied();
        r.new_flows = u32::try_from(trace.new_flows.len()).unwrap_or(u32::MAX);
        r.new_flows_answered = u32::try_from(
            trace
                .new_flows
                .iter()
                .filter(|f| f.answered_ms.is_some())
                .count(),
        )
        .unwrap_or(u32::MAX);
        r.new_flow_ms = trace
            .new_flows
            .iter()
            .filter(|f| f.started_ms >= done_ms)
            .filter_map(|f| f.answered_ms)
            .map(|a| a.saturating_sub(fault_ms))
            .min();
        r
    }

    /// Adds the role timeline: `max_actives`, `dual_active_ms`, `role_changes`.
    pub fn set_roles(&mut self, samples: &[RoleSample], fault_ms: u64) {
        let spans = role_spans(samples);
        (self.max_actives, self.dual_active_ms) = max_actives(&spans);
        // Each director's last sample that has them (after a restart: the new syncd's).
        let mut last: BTreeMap<&str, &RoleSample> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.silences.is_some()) {
            let e = last.entry(s.director.as_str()).or_insert(s);
            if s.updated_ms >= e.updated_ms {
                *e = s;
            }
        }
        self.silences = last
            .into_iter()
            .filter_map(|(d, s)| Some((d.to_string(), (s.silences?, s.stalls))))
            .collect();
        // A step-down for a split brain means that director was active while it heard the
        // other one active, however short that was: the samples (one per status interval)
        // can miss it, the reason cannot.
        if spans.iter().any(|s| s.reason == "SplitBrain") {
            self.max_actives = self.max_actives.max(2);
        }
        self.role_changes = spans
            .iter()
            .map(|s| {
                format!(
                    "{:+} {} {} ({})",
                    i128::from(s.from_ms) - i128::from(fault_ms),
                    s.director,
                    s.role,
                    s.reason
                )
            })
            .collect();
    }

    /// The header of [`DrillReport::row`].
    pub const HEADER: &'static str = "mode  fault            established  survived  broken  takeover_ms  new_flow_ms  all_answering_ms  max_gap_ms  lost  max_actives\n";

    /// One line of the table.
    pub fn row(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "{:<5} {:<16} {:>11}  {:>8}  {:>6}  {:>11}  {:>11}  {:>16}  {:>10}  {:>4}  {:>11}\n",
            self.mode,
            self.fault,
            self.established,
            self.survived,
            self.broken,
            opt(self.takeover_ms),
            opt(self.new_flow_ms),
            opt(self.all_answering_ms),
            self.max_gap_ms,
            self.lost_messages,
            self.max_actives,
        )
    }

    /// A short table, the fault's steps and the picture's path.
    pub fn table(&self) -> String {
        let mut t = format!("{}{}", Self::HEADER, self.row());
        if !self.steps.is_empty() {
            let steps: Vec<String> = self
                .steps
                .iter()
                .map(|s| format!("{:+} ms {}", s.at_ms, s.what))
                .collect();
            t.push_str(&format!("steps: {}\n", steps.join(", ")));
        }
        if !self.role_changes.is_empty() {
            t.push_str(&format!("roles: {}\n", self.role_changes.join(", ")));
        }
        for (d, (s, stalls)) in &self.silences {
            t.push_str(&format!(
                "{d} heard its peer: longest silence {} ms on the sync link, {} ms on the service path, {} ms on both; {stalls} stalls of its own\n",
                s.sync_link, s.service, s.both
            ));
        }
        if let Some(p) = &self.svg {
            t.push_str(&format!("picture: {p}\n"));
        }
        t
    }
}

/// Bin width of the picture.
pub const BIN_MS: u64 = 10;

/// An SVG of the answers per [`BIN_MS`] around the fault: established connections' answers
/// (blue) and new connections' answers (orange), the fault's steps as red lines. From 1 s
/// before the fault to 2 s after its last step (at most 20 s).
pub fn svg(trace: &ClientTrace, report: &DrillReport, fault_ms: u64) -> String {
    let last = report
        .steps
        .iter()
        .map(|s| s.at_ms)
        .max()
        .unwrap_or(0)
        .max(0);
    let from = fault_ms.saturating_sub(1000);
    let to = (fault_ms + u64::try_from(last).unwrap_or(0) + 2000).min(from + 20_000);
    let bins = usize::try_from((to - from) / BIN_MS).unwrap_or(1).max(1);
    let count = |times: &mut dyn Iterator<Item = u64>| {
        let mut v = vec![0u32; bins];
        for t in times {
            if t >= from && t < to {
                if let Some(b) = v.get_mut(usize::try_from((t - from) / BIN_MS).unwrap_or(0)) {
                    *b += 1;
                }
            }
        }
        v
    };
    let old = count(
        &mut trace
            .conns
            .iter()
            .flat_map(|c| c.answers_ms.iter().copied()),
    );
    let new = count(&mut trace.new_flows.iter().filter_map(|f| f.answered_ms));
    let ymax = old.iter().chain(&new).copied().max().unwrap_or(1).max(1);
    let (w, h, left, top, bottom) = (1200.0f64, 300.0f64, 60.0f64, 40.0f64, 50.0f64);
    let bw = w / bins as f64;
    let x_of = |t_rel_ms: i64| left + (t_rel_ms + 1000) as f64 / BIN_MS as f64 * bw;
    let y_of = |n: u32| top + h - f64::from(n) / f64::from(ymax) * h;
    let mut o = String::new();
    o.push_str(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        w + left + 20.0,
        h + top + bottom
    ));
    o.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    o.push_str(&format!(
        "<text x=\"{left}\" y=\"20\" font-size=\"14\">tandem-rack drill --mode {} --fault {}: answers per {BIN_MS} ms ({} connections: blue; new connections: orange); survived {}/{}, takeover {} ms, new flow {} ms</text>\n",
        report.mode,
        report.fault,
        report.established,
        report.survived,
        report.established,
        report.takeover_ms.map_or("-".into(), |v| v.to_string()),
        report.new_flow_ms.map_or("-".into(), |v| v.to_string()),
    ));
    for (i, n) in old.iter().enumerate() {
        if *n > 0 {
            o.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.2}\" height=\"{:.1}\" fill=\"#3b6fb6\"/>\n",
                left + i as f64 * bw,
                y_of(*n),
                bw.max(0.5),
                top + h - y_of(*n)
            ));
        }
    }
    for (i, n) in new.iter().enumerate() {
        if *n > 0 {
            o.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.2}\" height=\"{:.1}\" fill=\"#f28e2b\" fill-opacity=\"0.8\"/>\n",
                left + i as f64 * bw,
                y_of(*n),
                bw.max(0.5),
                top + h - y_of(*n)
            ));
        }
    }
    // Axes and ticks every 500 ms.
    o.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{y}\" stroke=\"black\"/>\n",
        y = top + h,
        x2 = left + w
    ));
    o.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{ymax}</text>\n<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>\n",
        left - 4.0,
        top + 4.0,
        left - 4.0,
        top + h
    ));
    let span = i64::try_from(to - from).unwrap_or(0) - 1000;
    let mut t = -1000i64;
    while t <= span {
        let x = x_of(t);
        o.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{y}\" x2=\"{x:.1}\" y2=\"{y2}\" stroke=\"black\"/><text x=\"{x:.1}\" y=\"{ty}\" text-anchor=\"middle\">{t:+}</text>\n",
            y = top + h,
            y2 = top + h + 5.0,
            ty = top + h + 18.0
        ));
        t += 500;
    }
    o.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">ms from the fault</text>\n",
        left + w / 2.0,
        top + h + 38.0
    ));
    for (i, s) in report.steps.iter().enumerate() {
        let x = x_of(s.at_ms);
        o.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{y}\" stroke=\"#d62728\" stroke-dasharray=\"4 3\"/><text x=\"{tx:.1}\" y=\"{ty}\" fill=\"#d62728\">{what}</text>\n",
            y = top + h,
            tx = x + 3.0,
            ty = top + 14.0 + 14.0 * (i % 4) as f64,
            what = xml_escape(&s.what)
        ));
    }
    o.push_str("</svg>\n");
    o
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What to drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The forwarding mode (the VIP of its services).
    pub mode: Mode,
    /// The fault.
    pub fault: Fault,
    /// Connections.
    pub conns: u32,
    /// Traffic before the fault.
    pub warmup: Duration,
    /// Traffic after the fault('s last step).
    pub after: Duration,
    /// Where to write the picture (`None`: `drill-<mode>-<fault>.svg` in the current
    /// directory).
    pub svg: Option<PathBuf>,
}

/// A figure over several runs of one drill: nearest-rank percentiles of the runs that have it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spread {
    /// Runs that have the figure.
    pub runs: usize,
    pub min: Option<u64>,
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub max: Option<u64>,
}

impl Spread {
    /// The spread of `values` (any order).
    pub fn of(values: impl IntoIterator<Item = u64>) -> Spread {
        let mut v: Vec<u64> = values.into_iter().collect();
        v.sort_unstable();
        // Nearest rank: the smallest value with at least p % of the values at or below it.
        let rank = |p: usize| {
            let k = (p * v.len()).div_ceil(100).max(1);
            v.get(k - 1).copied()
        };
        Spread {
            runs: v.len(),
            min: v.first().copied(),
            p50: rank(50),
            p90: rank(90),
            max: v.last().copied(),
        }
    }

    fn cell(&self) -> String {
        let o = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "{} / {} / {} / {} (min / p50 / p90 / max, {} runs)",
            o(self.min),
            o(self.p50),
            o(self.p90),
            o(self.max),
            self.runs
        )
    }
}

/// Several runs of one drill (`tandem-rack drill --runs N`), summed up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunsSummary {
    pub runs: usize,
    /// Runs that passed ([`DrillReport::passed`]).
    pub passed: usize,
    pub established: u64,
    pub survived: u64,
    pub broken: u64,
    pub lost_messages: u64,
    /// The most directors active at once in any run.
    pub max_actives: u32,
    pub takeover_ms: Spread,
    pub new_flow_ms: Spread,
    pub all_answering_ms: Spread,
    pub max_gap_ms: Spread,
    /// The standby's (B's) longest silence of its peer on both paths, per run.
    pub b_longest_silence_ms: Spread,
}

impl RunsSummary {
    /// The summary of `reports`.
    pub fn of(reports: &[DrillReport]) -> RunsSummary {
        RunsSummary {
            runs: reports.len(),
            passed: reports.iter().filter(|r| r.passed()).count(),
            established: reports.iter().map(|r| u64::from(r.established)).sum(),
            survived: reports.iter().map(|r| u64::from(r.survived)).sum(),
            broken: reports.iter().map(|r| u64::from(r.broken)).sum(),
            lost_messages: reports.iter().map(|r| r.lost_messages).sum(),
            max_actives: reports.iter().map(|r| r.max_actives).max().unwrap_or(0),
            takeover_ms: Spread::of(reports.iter().filter_map(|r| r.takeover_ms)),
            new_flow_ms: Spread::of(reports.iter().filter_map(|r| r.new_flow_ms)),
            all_answering_ms: Spread::of(reports.iter().filter_map(|r| r.all_answering_ms)),
            max_gap_ms: Spread::of(reports.iter().map(|r| r.max_gap_ms)),
            b_longest_silence_ms: Spread::of(
                reports
                    .iter()
                    .filter_map(|r| r.silences.get("B").map(|s| s.0.both)),
            ),
        }
    }

    /// The summary as text.
    pub fn text(&self) -> String {
        format!(
            "runs: {} ({} passed); connections: {} established, {} survived, {} broken; lost messages {}; most actives at once {}\n\
             takeover_ms       {}\n\
             new_flow_ms       {}\n\
             all_answering_ms  {}\n\
             max_gap_ms        {}\n\
             B longest silence {}\n",
            self.runs,
            self.passed,
            self.established,
            self.survived,
            self.broken,
            self.lost_messages,
            self.max_actives,
            self.takeover_ms.cell(),
            self.new_flow_ms.cell(),
            self.all_answering_ms.cell(),
            self.max_gap_ms.cell(),
            self.b_longest_silence_ms.cell(),
        )
    }
}

/// How long a multi-step fault may take beyond `warmup + after` (a dataplane restart, the
/// resync), the client's hard bound.
const STEPS_BUDGET: Duration = Duration::from_secs(60);

/// Bound for a director to reach a role.
const ROLE_WAIT: Duration = Duration::from_secs(30);

/// The rack a drill runs on: its description (every command on a host goes through the
/// host's [`crate::hosts::Access`]), and the virtual rack when the drill built it (for the
/// faults only it can do: `rack:restart`, restarting a syncd that won the start-up election).
#[derive(Debug)]
pub struct Target<'r> {
    /// The rack description.
    pub desc: RackFile,
    /// The virtual rack, when `build = "virtual"`.
    pub rack: Option<&'r mut Rack>,
    /// Bound on a restarted dataplane's readiness (`rack:restart`).
    pub ready_timeout: Duration,
}

impl Target<'_> {
    /// Director `id`'s syncd status file, read on its host.
    fn status(&self, id: DirectorId) -> Option<crate::pair::SyncdStatus> {
        crate::hosts::syncd_status(self.desc.director(id).ok()?)
    }

    /// Where director `id`'s syncd status file is, for messages.
    fn status_where(&self, id: DirectorId) -> String {
        self.desc.director(id).map_or_else(
            |e| e.to_string(),
            |h| format!("{} on {} ({})", h.syncd_status, h.name, h.access.describe()),
        )
    }

    /// Runs director `id`'s fault `name` (a shell command on its host): what ran, and when it
    /// started and was done (unix ms, the host's clock).
    fn fault(&self, id: DirectorId, name: &str) -> Result<(String, u64, u64)> {
        let f = self.desc.fault(id, name)?;
        if f.run == crate::hosts::RACK_RESTART {
            return Err(Error::Topology(format!(
                "fault `{name}` of director {} is `{}`, which only `restart` may be",
                id.letter(),
                f.run
            )));
        }
        let (start, done) = self.desc.run_fault(&f)?;
        Ok((format!("{}: {}", f.on, f.run), start, done))
    }

    /// The `kill` fault of director `id`; on the virtual rack its processes are then reaped.
    fn kill(&mut self, id: DirectorId) -> Result<(String, u64, u64)> {
        let what = self.fault(id, "kill")?;
        if let Some(rack) = self.rack.as_deref_mut() {
            rack.reap(id, Duration::from_secs(3));
        }
        Ok(what)
    }

    /// The `restart` fault of director `id`: the virtual rack's own (`rack:restart`, with
    /// `preempt` for its syncd) or the description's command.
    fn restart(&mut self, id: DirectorId, preempt: bool, cancel: &Cancel) -> Result<()> {
        let f = self.desc.fault(id, "restart")?;
        if f.run == crate::hosts::RACK_RESTART {
            let timeout = self.ready_timeout;
            let rack = self.rack.as_deref_mut().ok_or_else(|| {
                Error::Topology(format!(
                    "`{}` needs the virtual rack (build = \"virtual\")",
                    crate::hosts::RACK_RESTART
                ))
            })?;
            rack.restart_director(id, preempt, timeout, cancel)
        } else {
            self.desc.run_fault(&f).map(|_| ())
        }
    }
}

/// Waits (bounded) until director `id`'s syncd reports `role` in a status file written after
/// `since_ms`; returns when (unix ms).
fn wait_role(
    target: &Target<'_>,
    id: DirectorId,
    role: &str,
    since_ms: u64,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        cancel.check()?;
        let st = target.status(id);
        if let Some(s) = &st
            && s.role == role
            && s.updated_unix_ms > since_ms
        {
            return Ok(s
                .updated_unix_ms
                .saturating_sub(s.role_for_ms)
                .max(since_ms));
        }
        if Instant::now() > deadline {
            return Err(Error::Topology(format!(
                "director {} did not become {role} within {} s (last: {:?}; status file {})",
                id.letter(),
                timeout.as_secs(),
                st.map(|s| s.role),
                target.status_where(id)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for A active and B standby. On the virtual rack, if B won the start-up
/// election (A's syncd came up after B's initial hold, as happens on a loaded box: B then
/// holds on, there being no preemption), B's syncd is restarted once so that A takes over
/// and B comes back as the standby. A real rack must be in that state when the drill starts.
pub(crate) fn settle(target: &mut Target<'_>, cancel: &Cancel) -> Result<()> {
    let deadline = Instant::now() + ROLE_WAIT;
    let mut since = 0;
    let mut restarted = false;
    loop {
        cancel.check()?;
        let role = |id| {
            target
                .status(id)
                .filter(|s| s.updated_unix_ms > since)
                .map(|s| s.role)
        };
        let (a, b) = (role(DirectorId::A), role(DirectorId::B));
        if a.as_deref() == Some("Active") && b.as_deref() == Some("Standby") {
            return Ok(());
        }
        let b_won =
            b.as_deref() == Some("Active") && matches!(a.as_deref(), Some("Standby" | "Syncing"));
        if b_won && !restarted {
            if let Some(rack) = target.rack.as_deref_mut() {
                tracing::warn!(
                    "B won the start-up election; restarting B's syncd so that A is active"
                );
                since = now_unix_ms();
                rack.restart_syncd(DirectorId::B, false)?;
                restarted = true;
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Topology(format!(
                "the pair did not settle (A active, B standby) within {} s: A {a:?}, B {b:?} \
                 (status files: {}; {})",
                ROLE_WAIT.as_secs(),
                target.status_where(DirectorId::A),
                target.status_where(DirectorId::B)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The role in director `id`'s status file, or `gone (was …)` when the file is no longer
/// rewritten (its syncd was killed).
fn role_now(target: &Target<'_>, id: DirectorId) -> Option<String> {
    let s = target.status(id)?;
    if now_unix_ms().saturating_sub(s.updated_unix_ms) > 10 * STATUS_INTERVAL_MS {
        Some(format!("gone (was {})", s.role))
    } else {
        Some(s.role)
    }
}

/// What the fault did: its time (the instant takeover is measured from), the time of its last
/// step, the steps, and what was killed.
struct Injected {
    fault_ms: u64,
    /// When the fault was complete (the processes reaped, the links down): only lines sent
    /// and connections opened after this prove the takeover.
    done_ms: u64,
    last_ms: u64,
    steps: Vec<(String, u64)>,
    killed: Vec<String>,
}

fn inject(
    target: &mut Target<'_>,
    fault: Fault,
    after: Duration,
    cancel: &Cancel,
) -> Result<Injected> {
    let mut steps = Vec::new();
    let mut killed = Vec::new();
    let now = now_unix_ms;
    let fault_ms;
    let done_ms;
    match fault {
        Fault::Kill => {
            let what;
            (what, fault_ms, done_ms) = target.kill(DirectorId::A)?;
            killed.push(what);
            steps.push(("A killed".into(), fault_ms));
        }
        Fault::LinkDown => {
            (_, fault_ms, done_ms) = target.fault(DirectorId::A, "link-down")?;
            steps.push(("A's links down".into(), fault_ms));
            let t = wait_role(target, DirectorId::B, "Active", fault_ms, ROLE_WAIT, cancel)?;
            steps.push(("B active".into(), t));
        }
        Fault::Failback => {
            let what;
            (what, fault_ms, done_ms) = target.kill(DirectorId::A)?;
            killed.push(what);
            steps.push(("A killed".into(), fault_ms));
            let t = wait_role(target, DirectorId::B, "Active", fault_ms, ROLE_WAIT, cancel)?;
            steps.push(("B active".into(), t));
            std::thread::sleep(Duration::from_millis(1000));
            let r = now();
            target.restart(DirectorId::A, true, cancel)?;
            steps.push(("A restarted".into(), r));
            steps.push(("A's syncd up".into(), now()));
            let t = wait_role(target, DirectorId::A, "Active", r, ROLE_WAIT, cancel)?;
            steps.push(("A active again".into(), t));
        }
        Fault::StandbyRestart => {
            let r = now();
            killed.push(target.kill(DirectorId::B)?.0);
            target.restart(DirectorId::B, false, cancel)?;
            steps.push(("B restarted".into(), r));
            let t = wait_role(target, DirectorId::B, "Standby", r, ROLE_WAIT, cancel)?;
            steps.push(("B standby (sync complete)".into(), t));
            std::thread::sleep(Duration::from_millis(500));
            let what;
            (what, fault_ms, done_ms) = target.kill(DirectorId::A)?;
            killed.push(what);
            steps.push(("A killed".into(), fault_ms));
        }
        Fault::SyncCut => {
            (_, fault_ms, done_ms) = target.fault(DirectorId::A, "sync-down")?;
            steps.push(("sync link down in A".into(), fault_ms));
            std::thread::sleep(after);
            let h = now();
            target.fault(DirectorId::A, "sync-up")?;
            steps.push(("sync link up".into(), h));
            let t = wait_role(target, DirectorId::B, "Standby", h, ROLE_WAIT, cancel)?;
            steps.push(("B standby (resynced)".into(), t));
        }
    }
    let last_ms = steps.iter().map(|s| s.1).max().unwrap_or(fault_ms);
    Ok(Injected {
        fault_ms,
        done_ms,
        last_ms,
        steps,
        killed,
    })
}

/// Samples director `id`'s syncd status file every [`ROLE_SAMPLE_EVERY`] on its host, until the
/// drill's stop file appears there (bounded by `bound`): one command (one ssh session) for the
/// whole drill.
fn sample_roles(
    host: &Host,
    id: DirectorId,
    bound: Duration,
) -> std::thread::JoinHandle<Vec<RoleSample>> {
    let count =
        u32::try_from(bound.as_millis() / ROLE_SAMPLE_EVERY.as_millis().max(1)).unwrap_or(u32::MAX);
    let cmd = crate::hosts::sample_status_cmd(
        host,
        ROLE_SAMPLE_EVERY,
        count,
        bound + Duration::from_secs(30),
    );
    std::thread::spawn(move || match cmd.output() {
        Ok(out) => crate::hosts::parse_samples(&out.stdout)
            .into_iter()
            .map(|s| RoleSample {
                director: id.letter().into(),
                updated_ms: s.updated_unix_ms,
                role: s.role,
                role_for_ms: s.role_for_ms,
                reason: s.role_reason,
                silences: s.role_metrics.as_ref().and_then(|m| m.longest_silence_ms),
                stalls: s.role_metrics.map_or(0, |m| m.stalls),
            })
            .collect(),
        Err(e) => {
            tracing::warn!(director = id.letter(), error = %e, "sampling the syncd status file");
            Vec::new()
        }
    })
}

/// Brings a failover pair of the virtual rack up (from `rack`), waits for A active and B
/// standby, runs the drill, tears the rack down (also on failure) and reports: the embedded
/// rack description ([`crate::hosts::DEFAULT_VIRTUAL`]).
pub fn run_drill(rack_opts: RackOptions, opts: &DrillOptions) -> Result<DrillReport> {
    run_drill_from(rack_opts, None, opts)
}

/// The placeholders of a rack description for the rack of `rack_opts`.
pub fn rack_vars(rack_opts: &RackOptions) -> crate::hosts::Vars {
    crate::hosts::Vars {
        prefix: rack_opts.prefix.to_string(),
        state: crate::rack::StateDir::for_prefix(&rack_opts.prefix)
            .path()
            .display()
            .to_string(),
        tool: crate::process::locate_tool(rack_opts.tool.as_deref())
            .map_or_else(|_| "tandem-rack".into(), |p| p.display().to_string()),
    }
}

/// The drill on the rack described by `file` (`None`: the virtual rack's embedded
/// description). With `build = "virtual"` the virtual rack is built from `rack_opts` first and
/// torn down after (also on failure); with `build = "none"` the hosts exist already.
pub fn run_drill_from(
    mut rack_opts: RackOptions,
    file: Option<&Path>,
    opts: &DrillOptions,
) -> Result<DrillReport> {
    let vars = rack_vars(&rack_opts);
    let mut desc = match file {
        Some(p) => RackFile::load(p, &vars)?,
        None => RackFile::default_virtual(&vars)?,
    };
    let _shared = SharedSsh::new(&mut desc)?;
    let cancel = rack_opts.cancel.clone();
    match desc.build {
        Build::Virtual => {
            rack_opts.pair = true;
            let mut rack = Rack::up(&rack_opts)?;
            let report = {
                let mut target = Target {
                    desc,
                    rack: Some(&mut rack),
                    ready_timeout: rack_opts.ready_timeout,
                };
                drill_on(&mut target, &cancel, opts)
            };
            rack.down()?;
            report
        }
        Build::None => {
            let mut target = Target {
                desc,
                rack: None,
                ready_timeout: rack_opts.ready_timeout,
            };
            drill_on(&mut target, &cancel, opts)
        }
    }
}

/// The drill's shared ssh connections (one per ssh host, [`RackFile::share_ssh_connections`]):
/// closed, and their private socket directory removed, on drop.
struct SharedSsh {
    desc: Option<RackFile>,
    dir: PathBuf,
}

impl SharedSsh {
    fn new(desc: &mut RackFile) -> Result<SharedSsh> {
        let dir = std::env::temp_dir().join(format!("tandem-rack-ssh-{}", std::process::id()));
        if !desc.hosts.iter().any(|h| !h.access.is_local()) {
            return Ok(SharedSsh { desc: None, dir });
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        desc.share_ssh_connections(&dir);
        // Log in to every ssh host now: the connections are made before anything is timed,
        // and an unreachable host is named before the rack is built.
        // (On the host itself, not in its namespace: a virtual rack's do not exist yet.)
        for h in desc.hosts.iter().filter(|h| !h.access.is_local()) {
            let mut argv = h.access.ssh_argv();
            argv.extend(["--".into(), "true".into()]);
            crate::exec::Cmd::new(argv)
                .timeout(crate::hosts::SMALL_TIMEOUT)
                .run()
                .map_err(|e| {
                    Error::Topology(format!(
                        "host `{}` cannot be reached ({}): {e}",
                        h.name,
                        h.access.describe()
                    ))
                })?;
        }
        Ok(SharedSsh {
            desc: Some(desc.clone()),
            dir,
        })
    }
}

impl Drop for SharedSsh {
    fn drop(&mut self) {
        if let Some(d) = self.desc.take() {
            d.close_ssh_connections();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `f` (a small shell command) on `host`, logging a failure.
fn on_host(host: &Host, script: &str) {
    if let Err(e) = host.access.shell(script, crate::hosts::SMALL_TIMEOUT).run() {
        tracing::warn!(host = %host.name, error = %e, "command on a host");
    }
}

/// The drill on a pair that is up (left up, faults and all, except that a `link-down` is
/// undone with `link-up` when the description has one; the caller tears a virtual rack down).
pub fn drill_on(
    target: &mut Target<'_>,
    cancel: &Cancel,
    opts: &DrillOptions,
) -> Result<DrillReport> {
    settle(target, cancel)?;
    tracing::info!(rack = %target.desc.name, "pair settled: A active, B standby with a complete copy");
    let vip = target.desc.vip(opts.mode)?;
    let port = target.desc.port;
    let client_host = target.desc.host(Role::Client)?.clone();
    let hosts: Vec<Host> = [
        Some(client_host.clone()),
        target.desc.director(DirectorId::A).ok().cloned(),
        target.desc.director(DirectorId::B).ok().cloned(),
    ]
    .into_iter()
    .flatten()
    .collect();
    for h in &hosts {
        on_host(h, &format!("rm -f {}", shell_quote(&h.stop_file())));
    }
    let bound = opts.warmup + opts.after + STEPS_BUDGET;
    let client = client_host.access.command(
        &[
            client_host.tool.clone(),
            "drill-client".into(),
            "--target".into(),
            format!("{vip}:{port}"),
            "--conns".into(),
            opts.conns.to_string(),
            "--duration-ms".into(),
            bound.as_millis().to_string(),
            "--stop-file".into(),
            client_host.stop_file(),
        ],
        bound + Duration::from_secs(30),
    );
    let samplers: Vec<_> = DirectorId::ALL
        .iter()
        .filter_map(|&id| {
            let h = target.desc.director(id).ok()?;
            Some(sample_roles(h, id, bound))
        })
        .collect();
    let handle = std::thread::spawn(move || client.run());
    std::thread::sleep(opts.warmup);
    let injected = cancel
        .check()
        .and_then(|()| inject(target, opts.fault, opts.after, cancel));
    if injected.is_ok() && opts.fault != Fault::SyncCut {
        std::thread::sleep(opts.after);
    } else if injected.is_ok() {
        // sync-cut: `after` ran with the link cut; a little more after the heal.
        std::thread::sleep(Duration::from_millis(1000));
    }
    // Whatever happened, the client and the samplers stop now.
    for h in &hosts {
        on_host(h, &format!("touch {}", shell_quote(&h.stop_file())));
    }
    let out = handle
        .join()
        .map_err(|_| Error::Topology("the drill client thread panicked".into()))?;
    let samples: Vec<RoleSample> = samplers
        .into_iter()
        .flat_map(|s| s.join().unwrap_or_default())
        .collect();
    let injected = injected?;
    tracing::info!(steps = ?injected.steps, "fault injected");
    let out = out?;
    let trace: ClientTrace = serde_json::from_str(&out.stdout)
        .map_err(|e| Error::parse("drill client output", e.to_string()))?;
    let fault_ms = injected.fault_ms;
    let mut report = DrillReport::compute(&trace, fault_ms, injected.done_ms, injected.last_ms);
    report.mode = opts.mode.name().into();
    report.fault = opts.fault.name().into();
    if !opts.fault.takes_over() {
        report.takeover_ms = None;
    }
    report.killed = injected.killed;
    report.steps = injected
        .steps
        .iter()
        .map(|(what, t)| Step {
            what: what.clone(),
            at_ms: i64::try_from(i128::from(*t) - i128::from(fault_ms)).unwrap_or(0),
        })
        .collect();
    report.set_roles(&samples, fault_ms);
    report.a_role_after = role_now(target, DirectorId::A);
    report.b_role_after = role_now(target, DirectorId::B);
    if opts.fault == Fault::LinkDown {
        if let Ok(f) = target.desc.fault(DirectorId::A, "link-up") {
            if let Err(e) = target.desc.run_fault(&f) {
                tracing::warn!(error = %e, "restoring A's links after the drill");
            }
        }
    }
    let path = opts
        .svg
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("drill-{}-{}.svg", report.mode, report.fault)));
    match write_svg(&path, &svg(&trace, &report, fault_ms)) {
        Ok(p) => report.svg = Some(p),
        Err(e) => tracing::warn!(error = %e, "writing the drill's picture"),
    }
    let slow = |v: Option<u64>| v.is_some_and(|v| v > 1000);
    if report.max_actives > 1
        || report.broken > 0
        || report.survived < report.established
        || slow(report.takeover_ms)
        || slow(report.new_flow_ms)
    {
        for id in DirectorId::ALL {
            let Ok(host) = target.desc.director(id) else {
                continue;
            };
            for (what, command) in &host.logs {
                let to = path.with_extension(format!("{}.{what}.log", id.lower()));
                let text = host
                    .access
                    .shell(command, Duration::from_secs(60))
                    .run()
                    .map(|o| o.stdout);
                match text.and_then(|t| {
                    std::fs::write(&to, t)
                        .map_err(|e| Error::io(format!("writing {}", to.display()), e))
                }) {
                    Ok(()) => report.kept_logs.push(to.display().to_string()),
                    Err(e) => {
                        tracing::warn!(error = %e, host = %host.name, log = %what, "keeping a log")
                    }
                }
            }
        }
        tracing::warn!(logs = ?report.kept_logs, "the drill failed: logs kept");
    }
    Ok(report)
}

fn write_svg(path: &Path, text: &str) -> Result<String> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_from_a_trace() {
        let ok = ConnTrace {
            established: true,
            sent: 5,
            answers_ms: vec![100, 200, 300, 650, 750],
            sent_ms: vec![99, 199, 299, 350, 700],
            ..ConnTrace::default()
        };
        let late = ConnTrace {
            answers_ms: vec![110, 210, 900],
            sent_ms: vec![109, 209, 500],
            sent: 4,
            ..ok.clone()
        };
        let broken = ConnTrace {
            error: Some("read: reset".into()),
            answers_ms: vec![120],
            sent: 2,
            ..ok.clone()
        };
        let never = ConnTrace::default();
        let r = DrillReport::compute(
            &ClientTrace {
                conns: vec![ok, late, broken, never],
                new_flows: vec![
                    NewFlow {
                        started_ms: 390,
                        answered_ms: Some(395),
                        error: None,
                    },
                    NewFlow {
                        started_ms: 410,
                        answered_ms: Some(640),
                        error: None,
                    },
                    NewFlow {
                        started_ms: 430,
                        answered_ms: Some(620),
                        error: None,
                    },
                    NewFlow {
                        started_ms: 450,
                        answered_ms: None,
                        error: Some("connect: timed out".into()),
                    },
                ],
            },
            400,
            400,
            400,
        );
        assert_eq!((r.conns, r.established, r.survived, r.broken), (4, 3, 2, 1));
        // Only answers to lines sent after the fault (at 700 and 500) count.
        assert_eq!(r.takeover_ms, Some(350));
        assert_eq!(r.all_answering_ms, Some(500));
        assert_eq!(r.max_gap_ms, 690);
        assert_eq!(r.lost_messages, 2);
        assert_eq!(r.errors, vec!["read: reset".to_string()]);
        assert!(r.table().contains("survived"));
        // The first answer to a new connection opened after the fault.
        assert_eq!(r.new_flow_ms, Some(220));
        assert_eq!((r.new_flows, r.new_flows_answered), (4, 3));
        // A survivor must answer a line sent after the last step too.
        let later = DrillReport::compute(
            &ClientTrace {
                conns: vec![ConnTrace {
                    established: true,
                    sent: 3,
                    answers_ms: vec![100, 500, 600],
                    sent_ms: vec![99, 499, 599],
                    ..ConnTrace::default()
                }],
                new_flows: Vec::new(),
            },
            400,
            400,
            700,
        );
        assert_eq!((later.survived, later.broken), (0, 1));
    }

    fn sample(d: &str, updated_ms: u64, role: &str, role_for_ms: u64) -> RoleSample {
        RoleSample {
            director: d.into(),
            updated_ms,
            role: role.into(),
            role_for_ms,
            reason: String::new(),
            silences: None,
            stalls: 0,
        }
    }

    #[test]
    fn runs_sum_up_with_nearest_rank_percentiles() {
        let s = Spread::of([300, 100, 200, 400, 500, 600, 700, 800, 900, 1000]);
        assert_eq!(
            (s.runs, s.min, s.p50, s.p90, s.max),
            (10, Some(100), Some(500), Some(900), Some(1000))
        );
        let one = Spread::of([7]);
        assert_eq!((one.p50, one.p90), (Some(7), Some(7)));
        assert_eq!(Spread::of([]).p50, None);
        let three = Spread::of([10, 30, 20]);
        assert_eq!((three.p50, three.p90), (Some(20), Some(30)));

        let run = |takeover: Option<u64>, survived: u32, actives: u32| DrillReport {
            established: 20,
            survived,
            broken: 20 - survived,
            takeover_ms: takeover,
            max_actives: actives,
            ..DrillReport::default()
        };
        let reports = [
            run(Some(210), 20, 1),
            run(None, 20, 1),
            run(Some(250), 19, 2),
        ];
        let sum = RunsSummary::of(&reports);
        assert_eq!((sum.runs, sum.passed), (3, 2));
        assert_eq!((sum.established, sum.survived, sum.broken), (60, 59, 1));
        assert_eq!(sum.max_actives, 2);
        assert_eq!(sum.takeover_ms.runs, 2);
        assert_eq!(
            (sum.takeover_ms.p50, sum.takeover_ms.max),
            (Some(210), Some(250))
        );
        assert!(
            sum.text().contains(
                "takeover_ms       210 / 210 / 250 / 250 (min / p50 / p90 / max, 2 runs)"
            ),
            "{}",
            sum.text()
        );
    }

    #[test]
    fn role_timeline_counts_actives() {
        // A active, killed at ~1000 (last file at 990); B active from 1180; A back at 3000 as
        // standby, preempts: B steps down at 3500, A active at 3510.
        let samples = vec![
            sample("A", 900, "Active", 800),
            sample("A", 990, "Active", 890),
            sample("B", 950, "Standby", 850),
            sample("B", 1200, "Active", 20),
            sample("B", 3450, "Active", 2270),
            sample("A", 3050, "Init", 50),
            sample("A", 3300, "Standby", 100),
            sample("B", 3520, "Syncing", 20),
            sample("A", 3540, "Active", 30),
        ];
        let spans = role_spans(&samples);
        assert_eq!((max_actives(&spans)), (1, 0));
        let a: Vec<_> = spans
            .iter()
            .filter(|s| s.director == "A" && s.role == "Active")
            .map(|s| (s.from_ms, s.to_ms))
            .collect();
        // The dead A's span ends one status interval after its last file.
        assert_eq!(a, vec![(100, 1040), (3510, 3590)]);
        // Two actives at once are seen, with their overlap.
        let split = vec![
            sample("A", 1000, "Active", 1000),
            sample("A", 2000, "Active", 2000),
            sample("B", 1500, "Active", 100),
            sample("B", 1900, "Active", 500),
        ];
        assert_eq!(max_actives(&role_spans(&split)), (2, 550));
        // A split brain too short for any sample: its step-down's reason still counts.
        let mut short = vec![
            sample("A", 1000, "Active", 1000),
            sample("A", 2000, "Active", 2000),
            sample("B", 1000, "Standby", 1000),
            sample("B", 2000, "Syncing", 500),
        ];
        if let Some(s) = short.last_mut() {
            s.reason = "SplitBrain".into();
        }
        let mut report = DrillReport::default();
        report.set_roles(&short, 1500);
        assert_eq!((report.max_actives, report.dual_active_ms), (2, 0));
        if let Some(s) = short.last_mut() {
            s.reason = "SyncChanged".into();
        }
        report.set_roles(&short, 1500);
        assert_eq!((report.max_actives, report.dual_active_ms), (1, 0));
        // Silences: each director's last sample that has them.
        let sil = |n: u64| crate::pair::Silences {
            sync_link: n,
            service: n + 1,
            both: n,
        };
        short[2].silences = Some(sil(60));
        short[3].silences = Some(sil(250));
        short[3].stalls = 2;
        short[0].silences = Some(sil(55));
        report.set_roles(&short, 1500);
        assert_eq!(report.silences.get("B"), Some(&(sil(250), 2)));
        assert_eq!(report.silences.get("A"), Some(&(sil(55), 0)));
        assert!(
            report
                .table()
                .contains("B heard its peer: longest silence 250 ms")
        );
        let f = |s: &str| s.parse::<Fault>();
        assert_eq!(f("sync-cut").ok(), Some(Fault::SyncCut));
        assert!(f("reboot").is_err());
    }

    #[test]
    fn picture_is_an_svg_with_the_steps() {
        let trace = ClientTrace {
            conns: vec![ConnTrace {
                established: true,
                answers_ms: (0..50).map(|i| 10_000 + i * 100).collect(),
                ..ConnTrace::default()
            }],
            new_flows: Vec::new(),
        };
        let r = DrillReport {
            mode: "nat".into(),
            fault: "kill".into(),
            steps: vec![Step {
                what: "A killed <now>".into(),
                at_ms: 0,
            }],
            ..DrillReport::default()
        };
        let s = svg(&trace, &r, 12_000);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("A killed &lt;now&gt;"));
        // 30 answers fall in the window (11 000-14 000), one rectangle each, plus the frame.
        assert_eq!(s.matches("fill=\"#3b6fb6\"").count(), 30);
    }
}
