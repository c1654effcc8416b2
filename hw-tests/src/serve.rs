//! `tandem-rack serve`: the real servers' services. TCP servers answer every newline-terminated
//! line `X` of a connection with `<name>:<port> X\n`, UDP servers every datagram `X` with
//! `<name>:<port> X`, where `<port>` is the port the request arrived on: so a client sees which
//! real server answered and whether the director mapped the port (seed 002: VIP:80 ->
//! 172.16.0.3:8000).
//!
//! One thread per TCP connection (blocking reads with a timeout, so no busy loop), bounded by
//! [`ServeOptions::max_conns`]: a failover drill keeps a thousand connections open, each
//! exchanging a line every 100 ms, and they must all stay served.
//!
//! TCP listens on 0.0.0.0, so connections to the VIPs on `lo` (DR, TUN) are accepted and
//! answered from the address they were made to. UDP cannot do that with one wildcard socket
//! (the kernel would pick the reply's source by route, not the VIP the datagram was sent to, and
//! the client would drop it), so UDP binds one socket per local address instead.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::exec::{Cancel, Cmd};

/// Longest line a TCP client may send; a longer one closes the connection.
pub const MAX_LINE: usize = 4096;
/// Default bound on concurrent TCP connections of one `serve` process.
pub const DEFAULT_MAX_CONNS: usize = 4096;
/// Default: a connection silent this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a blocked UDP read wakes up to look at the stop flag.
const POLL: Duration = Duration::from_millis(250);
/// How often a blocked TCP connection read wakes up (stop flag, idle timeout): a thousand quiet
/// connections cost a thousand wake-ups a second, nothing more.
const CONN_POLL: Duration = Duration::from_secs(1);
/// Stack of a connection thread: it holds a small buffer and nothing else.
const CONN_STACK: usize = 128 * 1024;

/// What one `serve` process answers.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The name in every answer (`rs1`).
    pub name: String,
    /// TCP ports.
    pub tcp_ports: Vec<u16>,
    /// UDP ports.
    pub udp_ports: Vec<u16>,
    /// Addresses to bind; empty: TCP on 0.0.0.0, UDP on every local IPv4 address.
    pub bind: Vec<Ipv4Addr>,
    /// Bound on concurrent TCP connections; more are closed at once and counted.
    pub max_conns: usize,
    /// A TCP connection silent this long is closed.
    pub idle_timeout: Duration,
    /// Stop when this path no longer exists (the rack's state directory).
    pub watch: Option<PathBuf>,
    /// Stop when this process is gone.
    pub parent_pid: Option<u32>,
    /// Written once every socket is bound.
    pub ready_file: Option<PathBuf>,
}

impl ServeOptions {
    /// Serve `name` on the given ports with the defaults.
    pub fn new(name: &str, tcp_ports: &[u16], udp_ports: &[u16]) -> Self {
        Self {
            name: name.to_owned(),
            tcp_ports: tcp_ports.to_vec(),
            udp_ports: udp_ports.to_vec(),
            bind: Vec::new(),
            max_conns: DEFAULT_MAX_CONNS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            watch: None,
            parent_pid: None,
            ready_file: None,
        }
    }
}

/// The answer to request `request` received on `port`: `<name>:<port> <request>`.
pub fn answer(name: &str, port: u16, request: &[u8]) -> Vec<u8> {
    let mut out = format!("{name}:{port} ").into_bytes();
    out.extend_from_slice(request);
    out
}

/// An answer split into the server's tag and the echoed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer<'a> {
    /// The server's name (`rs2`).
    pub name: &'a str,
    /// The port the request arrived on (`8000`).
    pub port: u16,
    /// The echoed request.
    pub echo: &'a str,
}

impl Answer<'_> {
    /// `rs2:8000`.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.name, self.port)
    }
}

/// Parses an answer (without its newline); `None` if it is not `<name>:<port> <echo>`.
pub fn parse_answer(text: &str) -> Option<Answer<'_>> {
    let (tag, echo) = text.split_once(' ')?;
    let (name, port) = tag.rsplit_once(':')?;
    if name.is_empty() {
        return None;
    }
    Some(Answer {
        name,
        port: port.parse().ok()?,
        echo,
    })
}

/// Counters of a `serve` process.
#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicU64,
    refused_over_limit: AtomicU64,
    active: AtomicUsize,
    lines: AtomicU64,
    closed_idle: AtomicU64,
    closed_long_line: AtomicU64,
    datagrams: AtomicU64,
    errors: AtomicU64,
}

/// What a `serve` process did, printed when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServeSummary {
    /// TCP connections accepted.
    pub accepted: u64,
    /// TCP connections closed at once because `max_conns` were open.
    pub refused_over_limit: u64,
    /// TCP lines answered.
    pub lines: u64,
    /// Connections closed after `idle_timeout` of silence.
    pub closed_idle: u64,
    /// Connections closed for a line longer than [`MAX_LINE`].
    pub closed_long_line: u64,
    /// UDP datagrams answered.
    pub datagrams: u64,
    /// Socket errors.
    pub errors: u64,
}

impl Counts {
    fn summary(&self) -> ServeSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServeSummary {
            accepted: g(&self.accepted),
            refused_over_limit: g(&self.refused_over_limit),
            lines: g(&self.lines),
            closed_idle: g(&self.closed_idle),
            closed_long_line: g(&self.closed_long_line),
            datagrams: g(&self.datagrams),
            errors: g(&self.errors),
        }
    }
}

/// A running server: its sockets' threads, and the flag that stops them.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    tcp: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds every socket (an error if any cannot be bound) and starts serving.
    pub fn start(opts: &ServeOptions) -> Result<Server> {
        if opts.name.is_empty() || opts.name.contains(char::is_whitespace) {
            return Err(Error::parse(
                "serve --name",
                format!("`{}` must be one word", opts.name),
            ));
        }
        let tcp_addrs: Vec<Ipv4Addr> = if opts.bind.is_empty() {
            vec![Ipv4Addr::UNSPECIFIED]
        } else {
            opts.bind.clone()
        };
        let udp_addrs: Vec<Ipv4Addr> = if opts.bind.is_empty() && !opts.udp_ports.is_empty() {
            local_addresses()?
        } else {
            opts.bind.clone()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let mut server = Server {
            stop: Arc::clone(&stop),
            counts: Arc::clone(&counts),
            tcp: Vec::new(),
            udp: Vec::new(),
            threads: Vec::new(),
        };
        let name: Arc<str> = Arc::from(opts.name.as_str());
        for addr in &tcp_addrs {
            for port in &opts.tcp_ports {
                let want = SocketAddrV4::new(*addr, *port);
                let listener = TcpListener::bind(want)
                    .map_err(|e| Error::io(format!("binding TCP {want}"), e))?;
                let local = listener
                    .local_addr()
                    .map_err(|e| Error::io("local address of a listener", e))?;
                server.tcp.push(local);
                let (stop, counts, name) = (Arc::clone(&stop), Arc::clone(&counts), name.clone());
                let (max, idle) = (opts.max_conns, opts.idle_timeout);
                server.threads.push(
                    thread::Builder::new()
                        .name(format!("tcp-{}", local.port()))
                        .spawn(move || accept_loop(listener, name, max, idle, stop, counts))
                        .map_err(|e| Error::io("starting a listener thread", e))?,
                );
            }
        }
        for addr in &udp_addrs {
            for port in &opts.udp_ports {
                let want = SocketAddrV4::new(*addr, *port);
                let socket = UdpSocket::bind(want)
                    .map_err(|e| Error::io(format!("binding UDP {want}"), e))?;
                socket
                    .set_read_timeout(Some(POLL))
                    .map_err(|e| Error::io("UDP read timeout", e))?;
                let local = socket
                    .local_addr()
                    .map_err(|e| Error::io("local address of a UDP socket", e))?;
                server.udp.push(local);
                let (stop, counts, name) = (Arc::clone(&stop), Arc::clone(&counts), name.clone());
                server.threads.push(
                    thread::Builder::new()
                        .name(format!("udp-{local}"))
                        .spawn(move || udp_loop(socket, name, stop, counts))
                        .map_err(|e| Error::io("starting a UDP thread", e))?,
                );
            }
        }
        Ok(server)
    }

    /// The bound TCP listeners (with the real port when 0 was asked for).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// The bound UDP sockets.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    /// TCP connections open now.
    pub fn active(&self) -> usize {
        self.counts.active.load(Ordering::Relaxed)
    }

    /// The counters so far.
    pub fn summary(&self) -> ServeSummary {
        self.counts.summary()
    }

    /// Stops accepting and answering, waits for the listener and UDP threads, and returns the
    /// counters. Connection threads notice the flag within a second and close.
    pub fn stop(mut self) -> ServeSummary {
        self.stop.store(true, Ordering::SeqCst);
        // Wake each blocked accept() with a connection of our own.
        for a in &self.tcp {
            let target = match a {
                SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
                    SocketAddr::from((Ipv4Addr::LOCALHOST, v4.port()))
                }
                other => *other,
            };
            let _ = TcpStream::connect_timeout(&target, Duration::from_millis(200));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let deadline = Instant::now() + CONN_POLL * 2;
        while self.active() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        self.counts.summary()
    }
}

/// Runs a server until `cancel` is set, `opts.watch` disappears or `opts.parent_pid` is gone;
/// writes `opts.ready_file` once every socket is bound.
pub fn serve(opts: &ServeOptions, cancel: &Cancel) -> Result<ServeSummary> {
    let server = Server::start(opts)?;
    let tcp: Vec<String> = server.tcp_addrs().iter().map(|a| a.to_string()).collect();
    let udp: Vec<String> = server.udp_addrs().iter().map(|a| a.to_string()).collect();
    tracing::info!(name = %opts.name, tcp = %tcp.join(","), udp = %udp.join(","), "serve ready");
    if let Some(ready) = &opts.ready_file {
        std::fs::write(ready, format!("{}\n", std::process::id()))
            .map_err(|e| Error::io(format!("writing {}", ready.display()), e))?;
    }
    let why = loop {
        if cancel.is_cancelled() {
            break "signal".to_owned();
        }
        if let Some(w) = &opts.watch {
            if !w.exists() {
                break format!("{} is gone", w.display());
            }
        }
        if let Some(pid) = opts.parent_pid {
            if !crate::process::alive(pid) {
                break format!("parent pid {pid} is gone");
            }
        }
        thread::sleep(Duration::from_millis(200));
    };
    let summary = server.stop();
    tracing::info!(name = %opts.name, reason = %why, ?summary, "serve stopped");
    Ok(summary)
}

/// Every IPv4 address of this network namespace (`ip -j -4 addr show`), loopback included.
pub fn local_addresses() -> Result<Vec<Ipv4Addr>> {
    let out = Cmd::new(["ip", "-j", "-4", "addr", "show"]).run()?;
    let mut set = BTreeSet::new();
    for iface in crate::probe::parse_addrs(&out.stdout)? {
        for a in iface.addr_info {
            if a.family == "inet" {
                if let Ok(ip) = a.local.parse::<Ipv4Addr>() {
                    set.insert(ip);
                }
            }
        }
    }
    if set.is_empty() {
        return Err(Error::parse(
            "`ip -j -4 addr show`",
            "no IPv4 address to bind UDP to",
        ));
    }
    Ok(set.into_iter().collect())
}

fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    max_conns: usize,
    idle: Duration,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "accept");
                // EMFILE and friends: back off instead of spinning on the error.
                thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        counts.accepted.fetch_add(1, Ordering::Relaxed);
        if counts.active.load(Ordering::Relaxed) >= max_conns {
            counts.refused_over_limit.fetch_add(1, Ordering::Relaxed);
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        counts.active.fetch_add(1, Ordering::Relaxed);
        let (name, stop, c) = (name.clone(), Arc::clone(&stop), Arc::clone(&counts));
        let spawned = thread::Builder::new()
            .stack_size(CONN_STACK)
            .spawn(move || {
                connection(stream, &name, port, idle, &stop, &c);
                c.active.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            counts.active.fetch_sub(1, Ordering::Relaxed);
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn connection(
    mut stream: TcpStream,
    name: &str,
    port: u16,
    idle: Duration,
    stop: &AtomicBool,
    counts: &Counts,
) {
    let _ = stream.set_nodelay(true);
    if stream.set_read_timeout(Some(CONN_POLL)).is_err()
        || stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .is_err()
    {
        counts.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut pending: Vec<u8> = Vec::with_capacity(256);
    let mut chunk = [0u8; 2048];
    let mut last = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                last = Instant::now();
                pending.extend_from_slice(chunk.get(..n).unwrap_or_default());
                let mut out = Vec::new();
                while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=i).collect();
                    let body = line.strip_suffix(b"\n").unwrap_or(&line);
                    let body = body.strip_suffix(b"\r").unwrap_or(body);
                    out.extend_from_slice(&answer(name, port, body));
                    out.push(b'\n');
                    counts.lines.fetch_add(1, Ordering::Relaxed);
                }
                if pending.len() > MAX_LINE {
                    counts.closed_long_line.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if !out.is_empty() && stream.write_all(&out).is_err() {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if last.elapsed() >= idle {
                    counts.closed_idle.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

fn udp_loop(socket: UdpSocket, name: Arc<str>, stop: Arc<AtomicBool>, counts: Arc<Counts>) {
    let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let reply = answer(&name, port, buf.get(..n).unwrap_or_default());
                if socket.send_to(&reply, from).is_ok() {
                    counts.datagrams.fetch_add(1, Ordering::Relaxed);
                } else {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                // ICMP errors of earlier replies surface here (ECONNREFUSED); keep serving.
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
