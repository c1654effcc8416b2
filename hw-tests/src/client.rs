//! `tandem-rack client`: the client's load. Opens `conns` connections (TCP, or UDP sockets with
//! one source port each, which the director tracks as one connection) to a target, at most
//! `parallel` at a time, exchanges `messages` messages on each and checks that every answer
//! echoes its message (`<name>:<port> <message>`, see [`crate::serve`]), that a connection
//! stays on one server, and for UDP that every answer comes from the target address.
//!
//! Bounded in count (at most [`MAX_CONNS`] connections of [`MAX_MESSAGES`] messages) and in
//! time: nothing starts after the overall timeout, every wait is cut at it, and connections not
//! done by then count as failed (`deadline`).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::exec::Cancel;
use crate::serve::{MAX_LINE, parse_answer};

/// Most connections one run opens.
pub const MAX_CONNS: u32 = 100_000;
/// Most messages per connection.
pub const MAX_MESSAGES: u32 = 100_000;
/// Most connections in flight at once.
pub const MAX_PARALLEL: u32 = 4096;
/// Longest overall timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Error samples kept in a report.
const MAX_SAMPLES: usize = 8;
/// Stack of a worker thread.
const WORKER_STACK: usize = 256 * 1024;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The service (VIP:port).
    pub target: SocketAddrV4,
    /// UDP instead of TCP.
    pub udp: bool,
    /// Connections to open.
    pub conns: u32,
    /// Messages per connection.
    pub messages: u32,
    /// Connections in flight at once.
    pub parallel: u32,
    /// Bound on the whole run.
    pub timeout: Duration,
    /// Bound on one connect or one answer.
    pub op_timeout: Duration,
    /// Pause between two messages of a connection.
    pub interval: Duration,
}

impl ClientOptions {
    /// `conns` TCP connections of `messages` messages to `target`, 8 at a time, 20 s overall,
    /// 2 s per connect or answer, no pause.
    pub fn new(target: SocketAddrV4, conns: u32, messages: u32) -> Self {
        Self {
            target,
            udp: false,
            conns,
            messages,
            parallel: 8,
            timeout: Duration::from_secs(20),
            op_timeout: Duration::from_secs(2),
            interval: Duration::ZERO,
        }
    }

    /// The same over UDP.
    pub fn udp(mut self) -> Self {
        self.udp = true;
        self
    }

    /// Checks the bounds.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, detail: String| Err(Error::parse(format!("client {what}"), detail));
        if self.conns == 0 || self.conns > MAX_CONNS {
            return bad(
                "--conns",
                format!("{} is not within 1..={MAX_CONNS}", self.conns),
            );
        }
        if self.messages == 0 || self.messages > MAX_MESSAGES {
            return bad(
                "--messages",
                format!("{} is not within 1..={MAX_MESSAGES}", self.messages),
            );
        }
        if self.parallel == 0 || self.parallel > MAX_PARALLEL {
            return bad(
                "--parallel",
                format!("{} is not within 1..={MAX_PARALLEL}", self.parallel),
            );
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return bad(
                "--timeout-ms",
                format!(
                    "{} ms is not within 1..={}",
                    self.timeout.as_millis(),
                    MAX_TIMEOUT.as_millis()
                ),
            );
        }
        if self.op_timeout.is_zero() {
            return bad("--op-timeout-ms", "must be at least 1 ms".to_owned());
        }
        if self.target.port() == 0 || self.target.ip().is_unspecified() {
            return bad("--target", format!("{} is not a service", self.target));
        }
        Ok(())
    }

    /// The command-line arguments of `tandem-rack client` for these options (with `--json`).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "client".to_owned(),
            "--target".to_owned(),
            self.target.to_string(),
            "--conns".to_owned(),
            self.conns.to_string(),
            "--messages".to_owned(),
            self.messages.to_string(),
            "--parallel".to_owned(),
            self.parallel.to_string(),
            "--timeout-ms".to_owned(),
            self.timeout.as_millis().to_string(),
            "--op-timeout-ms".to_owned(),
            self.op_timeout.as_millis().to_string(),
            "--interval-ms".to_owned(),
            self.interval.as_millis().to_string(),
        ];
        if self.udp {
            a.push("--udp".to_owned());
        }
        a.push("--json".to_owned());
        a
    }
}

/// What a run saw. `--json` prints it as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientReport {
    /// The target, `203.0.113.10:80`.
    pub target: String,
    /// `tcp` / `udp`.
    pub protocol: String,
    /// Connections asked for.
    pub conns: u32,
    /// Messages per connection.
    pub messages: u32,
    /// Connections whose every message was answered correctly.
    pub ok: u32,
    /// The others (`conns - ok`).
    pub failed: u32,
    /// Failed connections by reason (`connect_refused`, `connect_timeout`, `timeout`,
    /// `closed`, `reset`, `bad_answer`, `server_changed`, `wrong_source`, `deadline`, `io`).
    pub errors: BTreeMap<String, u32>,
    /// Successful connections per server name (`rs1`).
    pub per_server: BTreeMap<String, u32>,
    /// Successful connections per server name and the port it was reached on (`rs2:8000`).
    pub per_endpoint: BTreeMap<String, u32>,
    /// UDP: answers per source address; TCP: empty (the kernel only accepts segments of a
    /// connection from the address it connected to).
    pub reply_sources: BTreeMap<String, u32>,
    /// Answers that echoed their message.
    pub answers: u64,
    /// Wall time of the run.
    pub elapsed_ms: u64,
    /// A few failures with detail (`conn 3: connect: Connection refused`).
    pub error_samples: Vec<String>,
}

impl ClientReport {
    /// Every connection succeeded.
    pub fn all_ok(&self) -> bool {
        self.conns > 0 && self.ok == self.conns
    }

    /// A one-line summary.
    pub fn summary(&self) -> String {
        let map = |m: &BTreeMap<String, u32>| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut s = format!(
            "{} {}: {}/{} ok in {} ms",
            self.protocol, self.target, self.ok, self.conns, self.elapsed_ms
        );
        if !self.per_endpoint.is_empty() {
            s.push_str(&format!(" [{}]", map(&self.per_endpoint)));
        }
        if !self.errors.is_empty() {
            s.push_str(&format!("; errors {}", map(&self.errors)));
        }
        s
    }

    /// Parses `--json` output.
    pub fn parse(json: &str) -> Result<Self> {
        serde_json::from_str(json.trim())
            .map_err(|e| Error::parse("`tandem-rack client --json` output", e.to_string()))
    }
}

/// How one connection ended.
#[derive(Debug)]
enum Outcome {
    Ok {
        server: String,
        endpoint: String,
        answers: u32,
        sources: Vec<SocketAddr>,
    },
    Failed {
        kind: &'static str,
        detail: String,
        answers: u32,
        sources: Vec<SocketAddr>,
    },
}

#[derive(Default)]
struct Tally {
    report: ClientReport,
}

impl Tally {
    fn add(&mut self, conn: u32, outcome: Outcome) {
        let r = &mut self.report;
        let (answers, sources) = match outcome {
            Outcome::Ok {
                server,
                endpoint,
                answers,
                sources,
            } => {
                r.ok += 1;
                *r.per_server.entry(server).or_default() += 1;
                *r.per_endpoint.entry(endpoint).or_default() += 1;
                (answers, sources)
            }
            Outcome::Failed {
                kind,
                detail,
                answers,
                sources,
            } => {
                *r.errors.entry(kind.to_owned()).or_default() += 1;
                if r.error_samples.len() < MAX_SAMPLES {
                    r.error_samples.push(format!("conn {conn}: {detail}"));
                }
                (answers, sources)
            }
        };
        r.answers += u64::from(answers);
        for s in sources {
            *r.reply_sources.entry(s.to_string()).or_default() += 1;
        }
    }
}

/// Runs the load and reports; `cancel` stops it early (what is not done counts as `deadline`).
pub fn run(opts: &ClientOptions, cancel: &Cancel) -> Result<ClientReport> {
    opts.validate()?;
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let next = Arc::new(AtomicU32::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let workers = opts.parallel.min(opts.conns);
    let mut handles = Vec::new();
    for w in 0..workers {
        let (next, tally, opts, cancel) = (
            Arc::clone(&next),
            Arc::clone(&tally),
            opts.clone(),
            cancel.clone(),
        );
        let h = thread::Builder::new()
            .name(format!("client-{w}"))
            .stack_size(WORKER_STACK)
            .spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= opts.conns || Instant::now() >= deadline || cancel.is_cancelled() {
                        break;
                    }
                    let outcome = if opts.udp {
                        udp_conn(&opts, i, deadline, &cancel)
                    } else {
                        tcp_conn(&opts, i, deadline, &cancel)
                    };
                    if let Ok(mut t) = tally.lock() {
                        t.add(i, outcome);
                    }
                }
            });
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                if handles.is_empty() {
                    return Err(Error::io("starting client threads", e));
                }
                tracing::warn!(error = %e, started = handles.len(), "fewer client threads than asked");
                break;
            }
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let mut report = match Arc::try_unwrap(tally) {
        Ok(m) => m.into_inner().map(|t| t.report).unwrap_or_default(),
        Err(shared) => shared.lock().map(|t| t.report.clone()).unwrap_or_default(),
    };
    let done = report.ok + report.errors.values().sum::<u32>();
    if done < opts.conns {
        *report.errors.entry("deadline".to_owned()).or_default() += opts.conns - done;
    }
    report.target = opts.target.to_string();
    report.protocol = if opts.udp { "udp" } else { "tcp" }.to_owned();
    report.conns = opts.conns;
    report.messages = opts.messages;
    report.failed = opts.conns - report.ok.min(opts.conns);
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(report)
}

/// The message `j` of connection `i`: unique in the run, so a crossed answer is noticed.
fn message(i: u32, j: u32) -> String {
    format!("c{i}m{j}")
}

fn left(deadline: Instant, cap: Duration) -> Option<Duration> {
    let l = deadline.saturating_duration_since(Instant::now()).min(cap);
    (!l.is_zero()).then_some(l)
}

fn answer_error(j: u32, waited: Duration, e: &std::io::Error) -> String {
    match io_kind(e) {
        "timeout" => format!("no answer to message {j} within {} ms", waited.as_millis()),
        _ => format!("answer to message {j}: {e}"),
    }
}

fn io_kind(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "timeout",
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "reset"
        }
        ErrorKind::ConnectionRefused => "refused",
        _ => "io",
    }
}

/// Checks one answer against its message and the connection's server so far.
fn check_answer(
    text: &str,
    expected: &str,
    first: &mut Option<(String, String)>,
) -> std::result::Result<(), (&'static str, String)> {
    let Some(a) = parse_answer(text) else {
        return Err((
            "bad_answer",
            format!("answer `{text}` is not `<name>:<port> <echo>`"),
        ));
    };
    if a.echo != expected {
        return Err((
            "bad_answer",
            format!("answer `{text}` does not echo `{expected}`"),
        ));
    }
    match first {
        None => *first = Some((a.name.to_owned(), a.endpoint())),
        Some((_, endpoint)) if *endpoint != a.endpoint() => {
            return Err((
                "server_changed",
                format!("answered by {} after {endpoint}", a.endpoint()),
            ));
        }
        Some(_) => {}
    }
    Ok(())
}

fn pause(opts: &ClientOptions, j: u32, deadline: Instant, cancel: &Cancel) {
    if j + 1 < opts.messages && !opts.interval.is_zero() {
        if let Some(d) = left(deadline, opts.interval) {
            let _ = cancel.sleep(d);
        }
    }
}

fn tcp_conn(opts: &ClientOptions, i: u32, deadline: Instant, cancel: &Cancel) -> Outcome {
    let fail = |kind, detail: String, answers| Outcome::Failed {
        kind,
        detail,
        answers,
        sources: Vec::new(),
    };
    let target = SocketAddr::V4(opts.target);
    let Some(t) = left(deadline, opts.op_timeout) else {
        return fail("deadline", "overall timeout before connect".into(), 0);
    };
    let mut stream = match TcpStream::connect_timeout(&target, t) {
        Ok(s) => s,
        Err(e) => {
            let kind = match io_kind(&e) {
                "timeout" => "connect_timeout",
                "refused" => "connect_refused",
                _ => "connect_error",
            };
            return fail(kind, format!("connect {target}: {e}"), 0);
        }
    };
    let _ = stream.set_nodelay(true);
    let mut first = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    for j in 0..opts.messages {
        if cancel.is_cancelled() {
            return fail("deadline", "interrupted".into(), j);
        }
        let msg = message(i, j);
        let Some(t) = left(deadline, opts.op_timeout) else {
            return fail("deadline", format!("overall timeout before message {j}"), j);
        };
        if let Err(e) = stream
            .set_write_timeout(Some(t))
            .and_then(|()| stream.write_all(format!("{msg}\n").as_bytes()))
        {
            return fail(io_kind(&e), format!("send message {j}: {e}"), j);
        }
        let line = loop {
            if let Some(p) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=p).collect();
                break String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line))
                    .into_owned();
            }
            if pending.len() > MAX_LINE {
                return fail("bad_answer", format!("answer to message {j} too long"), j);
            }
            let Some(t) = left(deadline, opts.op_timeout) else {
                return fail(
                    "timeout",
                    format!("no answer to message {j} by the deadline"),
                    j,
                );
            };
            if let Err(e) = stream.set_read_timeout(Some(t)) {
                return fail("io", format!("read timeout: {e}"), j);
            }
            match stream.read(&mut chunk) {
                Ok(0) => return fail("closed", format!("closed before answer {j}"), j),
                Ok(n) => pending.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return fail(io_kind(&e), answer_error(j, t, &e), j),
            }
        };
        if let Err((kind, detail)) = check_answer(&line, &msg, &mut first) {
            return fail(kind, detail, j);
        }
        pause(opts, j, deadline, cancel);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    let (server, endpoint) = first.unwrap_or_default();
    Outcome::Ok {
        server,
        endpoint,
        answers: opts.messages,
        sources: Vec::new(),
    }
}

fn udp_conn(opts: &ClientOptions, i: u32, deadline: Instant, cancel: &Cancel) -> Outcome {
    let mut sources = Vec::new();
    let socket = match UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failed {
                kind: "io",
                detail: format!("bind: {e}"),
                answers: 0,
                sources,
            };
        }
    };
    let target = SocketAddr::V4(opts.target);
    let mut first = None;
    let mut buf = vec![0u8; 65536];
    for j in 0..opts.messages {
        let fail = |kind, detail: String, sources| Outcome::Failed {
            kind,
            detail,
            answers: j,
            sources,
        };
        if cancel.is_cancelled() {
            return fail("deadline", "interrupted".into(), sources);
        }
        let msg = message(i, j);
        if let Err(e) = socket.send_to(msg.as_bytes(), target) {
            return fail(io_kind(&e), format!("send message {j}: {e}"), sources);
        }
        let Some(t) = left(deadline, opts.op_timeout) else {
            return fail(
                "deadline",
                format!("overall timeout at message {j}"),
                sources,
            );
        };
        if let Err(e) = socket.set_read_timeout(Some(t)) {
            return fail("io", format!("read timeout: {e}"), sources);
        }
        let (n, from) = loop {
            match socket.recv_from(&mut buf) {
                Ok(r) => break r,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    return fail(io_kind(&e), answer_error(j, t, &e), sources);
                }
            }
        };
        sources.push(from);
        if from != target {
            return fail(
                "wrong_source",
                format!("answer {j} came from {from}, not {target}"),
                sources,
            );
        }
        let text = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
        if let Err((kind, detail)) = check_answer(&text, &msg, &mut first) {
            return fail(kind, detail, sources);
        }
        pause(opts, j, deadline, cancel);
    }
    let (server, endpoint) = first.unwrap_or_default();
    Outcome::Ok {
        server,
        endpoint,
        answers: opts.messages,
        sources,
    }
}
