//! `tandem-rack drill`: a failover drill on the failover pair ([`crate::pair`]).
//!
//! N long-lived TCP connections go from the client through the VIP of the mode; each sends a
//! line every 100 ms and checks the answer (the same real server, the line echoed). After a
//! warm-up the fault is injected (`kill`: SIGKILL of A's dataplane and syncd, as a crashed
//! box); B takes over (syncd sees A silent on both paths, orders its dataplane ACTIVE, which
//! sends gratuitous ARPs for the VIPs and the inside gateway), and the connections go on. The
//! client (`tandem-rack drill-client`, run in the client namespace) records the wall-clock
//! time of every answer; the report is computed from them against the fault's time.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::exec::{Cancel, Cmd};
use crate::rack::{DirectorId, Mode, Rack, RackOptions, now_unix_ms};

/// Message interval per connection.
pub const INTERVAL: Duration = Duration::from_millis(100);
/// An answer later than this breaks the connection.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections a drill may open.
pub const MAX_CONNS: u32 = 4000;

/// The faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL of the active director's dataplane and syncd.
    Kill,
}

impl std::str::FromStr for Fault {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "kill" => Ok(Fault::Kill),
            "link-down" | "failback" | "standby-restart" | "sync-cut" => Err(Error::parse(
                "--fault",
                format!("`{s}` is not implemented yet (only `kill`)"),
            )),
            other => Err(Error::parse("--fault", format!("unknown fault `{other}`"))),
        }
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

/// What the client reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientTrace {
    /// One per connection.
    pub conns: Vec<ConnTrace>,
}

/// Runs the client's side: `conns` connections to `target` for `duration` (bounded), each a
/// thread sending a line every [`INTERVAL`].
pub fn run_client(target: SocketAddrV4, conns: u32, duration: Duration) -> Result<ClientTrace> {
    if conns == 0 || conns > MAX_CONNS {
        return Err(Error::parse(
            "--conns",
            format!("{conns}: 1-{MAX_CONNS} allowed"),
        ));
    }
    let start = Instant::now();
    let end = start + duration;
    let mut handles = Vec::new();
    for i in 0..conns {
        let h = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || one_conn(i, target, end))
            .map_err(|e| Error::io("spawning a drill connection thread", e))?;
        handles.push(h);
        // Spread the connections' phases over the interval.
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let conns = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_default())
        .collect();
    Ok(ClientTrace { conns })
}

fn one_conn(i: u32, target: SocketAddrV4, end: Instant) -> ConnTrace {
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
    while Instant::now() < end {
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

/// What a drill measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DrillReport {
    /// `nat` / `tun` / `dr`.
    pub mode: String,
    /// `kill`, ...
    pub fault: String,
    /// Connections asked for.
    pub conns: u32,
    /// Connections made before the fault.
    pub established: u32,
    /// Established connections that answered correctly after the fault and never broke.
    pub survived: u32,
    /// Established connections that broke (reset, timeout, wrong server or answer).
    pub broken: u32,
    /// From the fault to the first correct answer, on a connection established before it, to
    /// a line sent after it (in TUN/DR an answer to a line sent before the fault may arrive
    /// later without passing a director, so it proves nothing).
    pub takeover_ms: Option<u64>,
    /// From the fault until every surviving connection had answered again.
    pub all_answering_ms: Option<u64>,
    /// The longest silence between two answers of one connection, over all connections.
    pub max_gap_ms: u64,
    /// Lines sent and never answered.
    pub lost_messages: u64,
    /// Lines answered.
    pub answered_messages: u64,
    /// The role B's syncd reported after the drill.
    pub b_role_after: Option<String>,
    /// Errors of broken connections (at most 5).
    pub errors: Vec<String>,
    /// What was killed.
    pub killed: Vec<String>,
}

impl DrillReport {
    /// From the client's trace and the fault's time.
    pub fn compute(trace: &ClientTrace, fault_ms: u64) -> DrillReport {
        let mut r = DrillReport {
            conns: u32::try_from(trace.conns.len()).unwrap_or(u32::MAX),
            ..DrillReport::default()
        };
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
            if let Some(a) = c
                .answers_ms
                .iter()
                .zip(&c.sent_ms)
                .find(|(_, s)| **s > fault_ms)
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
            } else if let Some(a) = after {
                r.survived += 1;
                first_after.push(a - fault_ms);
            } else {
                r.broken += 1;
            }
        }
        r.takeover_ms = takeover;
        r.all_answering_ms = first_after.iter().max().copied();
        r
    }

    /// A short table.
    pub fn table(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        format!(
            "mode  fault  established  survived  broken  takeover_ms  all_answering_ms  max_gap_ms  lost\n\
             {:<5} {:<6} {:>11}  {:>8}  {:>6}  {:>11}  {:>16}  {:>10}  {:>4}\n",
            self.mode,
            self.fault,
            self.established,
            self.survived,
            self.broken,
            opt(self.takeover_ms),
            opt(self.all_answering_ms),
            self.max_gap_ms,
            self.lost_messages
        )
    }
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
    /// Traffic after the fault.
    pub after: Duration,
}

/// Brings a failover pair up (from `rack`), waits for A active and B standby, runs the
/// drill, tears the rack down (also on failure) and reports.
pub fn run_drill(mut rack_opts: RackOptions, opts: &DrillOptions) -> Result<DrillReport> {
    rack_opts.pair = true;
    let cancel: Cancel = rack_opts.cancel.clone();
    let mut rack = Rack::up(&rack_opts)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        cancel.check()?;
        let (a, b) = (
            rack.syncd_role(DirectorId::A),
            rack.syncd_role(DirectorId::B),
        );
        if a.as_deref() == Some("Active") && b.as_deref() == Some("Standby") {
            break;
        }
        if Instant::now() > deadline {
            return Err(Error::Topology(format!(
                "the pair did not settle within 30 s: A {a:?}, B {b:?} (see {})",
                rack.state().path().display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::info!("pair settled: A active, B standby with a complete copy");
    let vip = rack.spec().mode_vip(opts.mode);
    let tool = rack
        .tool()
        .ok_or_else(|| Error::Topology("no tandem-rack binary to run the drill client".into()))?
        .to_path_buf();
    let total = opts.warmup + opts.after;
    let client = Cmd::new(vec![
        "ip".into(),
        "netns".into(),
        "exec".into(),
        rack.client_netns(),
        tool.display().to_string(),
        "drill-client".into(),
        "--target".into(),
        format!("{vip}:80"),
        "--conns".into(),
        opts.conns.to_string(),
        "--duration-ms".into(),
        total.as_millis().to_string(),
    ])
    .timeout(total + Duration::from_secs(60));
    let handle = std::thread::spawn(move || client.run());
    std::thread::sleep(opts.warmup);
    cancel.check()?;
    let fault_ms = now_unix_ms();
    let killed = match opts.fault {
        Fault::Kill => rack.kill_director(DirectorId::A),
    };
    tracing::info!(?killed, "fault injected");
    let out = handle
        .join()
        .map_err(|_| Error::Topology("the drill client thread panicked".into()))??;
    let trace: ClientTrace = serde_json::from_str(&out.stdout)
        .map_err(|e| Error::parse("drill client output", e.to_string()))?;
    let mut report = DrillReport::compute(&trace, fault_ms);
    report.mode = opts.mode.name().into();
    report.fault = "kill".into();
    report.killed = killed;
    report.b_role_after = rack.syncd_role(DirectorId::B);
    rack.down()?;
    Ok(report)
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
            },
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
    }
}
