//! Looking at the rack from its hosts: `ping`, the kernel's neighbour table and addresses
//! (`ip -j`), and a bounded `tcpdump` capture of ARP on the wire.
//!
//! The parsers are pure functions over the tools' text so they are unit-tested on literal output.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::exec::Cmd;
use crate::net::normalize_mac;

/// What `ping` reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PingSummary {
    /// Echo requests sent.
    pub sent: u32,
    /// Echo replies received.
    pub received: u32,
    /// Average round trip, when any reply came.
    pub rtt_avg_ms: Option<f64>,
}

impl PingSummary {
    /// Every request answered (and at least one sent).
    pub fn all_answered(&self) -> bool {
        self.sent > 0 && self.received == self.sent
    }
}

/// Parses iputils `ping` output: the `N packets transmitted, M received` line and the optional
/// `rtt min/avg/max/mdev = a/b/c/d ms` line.
pub fn parse_ping(text: &str) -> Result<PingSummary> {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| Error::parse("ping output", "no `packets transmitted` line"))?;
    let mut sent = None;
    let mut received = None;
    for part in line.split(',') {
        let part = part.trim();
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        match what {
            "packets" => sent = n.parse::<u32>().ok(),
            "received" | "packets_received" => received = n.parse::<u32>().ok(),
            _ => {}
        }
    }
    let (Some(sent), Some(received)) = (sent, received) else {
        return Err(Error::parse(
            "ping output",
            format!("cannot read counts from `{line}`"),
        ));
    };
    let rtt_avg_ms = text
        .lines()
        .find(|l| l.starts_with("rtt ") || l.starts_with("round-trip "))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok());
    Ok(PingSummary {
        sent,
        received,
        rtt_avg_ms,
    })
}

/// Pings `target` `count` times from namespace `netns`, one second apart, each reply awaited at
/// most a second. No `-w`: with a deadline, `ping` keeps sending until `count` replies came,
/// so "sent" would no longer be `count`. The run is bounded by the command's own time limit.
pub fn ping(netns: &str, target: Ipv4Addr, count: u32) -> Result<PingSummary> {
    let cmd = Cmd::in_netns(
        netns,
        [
            "ping".to_owned(),
            "-n".to_owned(),
            "-c".to_owned(),
            count.to_string(),
            "-W".to_owned(),
            "1".to_owned(),
            target.to_string(),
        ],
    )
    .timeout(Duration::from_secs(u64::from(count) + 5));
    let out = cmd.output()?;
    parse_ping(&out.stdout).map_err(|e| match out.status.code() {
        Some(0 | 1) => e,
        _ => Error::Command {
            command: cmd.display(),
            status: out.status.to_string(),
            stderr: out.stderr.trim().to_owned(),
        },
    })
}

/// One entry of `ip -j neigh`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    /// The neighbour's address.
    pub dst: String,
    /// The interface.
    #[serde(default)]
    pub dev: String,
    /// Its MAC, once resolved.
    #[serde(default)]
    pub lladdr: Option<String>,
    /// `REACHABLE`, `STALE`, `INCOMPLETE`, `FAILED`...
    #[serde(default)]
    pub state: Vec<String>,
}

impl Neighbour {
    /// The normalized MAC, if resolved.
    pub fn mac(&self) -> Option<String> {
        self.lladdr.as_deref().and_then(normalize_mac)
    }
}

/// Parses `ip -j neigh` output (an empty output means no entries).
pub fn parse_neighbours(json: &str) -> Result<Vec<Neighbour>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(json).map_err(|e| Error::parse("`ip -j neigh` output", e.to_string()))
}

/// The neighbour entry of `addr` in namespace `netns`.
pub fn neighbour(netns: &str, addr: Ipv4Addr) -> Result<Option<Neighbour>> {
    let out = Cmd::new([
        "ip",
        "-j",
        "-n",
        netns,
        "neigh",
        "show",
        "to",
        &addr.to_string(),
    ])
    .run()?;
    Ok(parse_neighbours(&out.stdout)?
        .into_iter()
        .find(|n| n.dst == addr.to_string()))
}

/// Flushes every neighbour entry of `dev` in `netns`.
pub fn flush_neighbours(netns: &str, dev: &str) -> Result<()> {
    Cmd::new(["ip", "-n", netns, "neigh", "flush", "dev", dev]).run()?;
    Ok(())
}

/// One interface of `ip -j addr`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceAddrs {
    /// Interface name.
    pub ifname: String,
    /// `UP`, `LOWER_UP`...
    #[serde(default)]
    pub flags: Vec<String>,
    /// Its MAC.
    #[serde(default)]
    pub address: Option<String>,
    /// Addresses, IPv4 and IPv6.
    #[serde(default)]
    pub addr_info: Vec<AddrInfo>,
}

/// One address of an interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddrInfo {
    /// `inet` or `inet6`.
    #[serde(default)]
    pub family: String,
    /// The address.
    #[serde(default)]
    pub local: String,
    /// Prefix length.
    #[serde(default)]
    pub prefixlen: u8,
}

/// Parses `ip -j addr` output.
pub fn parse_addrs(json: &str) -> Result<Vec<InterfaceAddrs>> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    let all: Vec<serde_json::Value> = serde_json::from_str(json)
        .map_err(|e| Error::parse("`ip -j addr` output", e.to_string()))?;
    // `ip -j addr` also prints empty objects for some link types; keep the interfaces only.
    all.into_iter()
        .filter(|v| v.get("ifname").is_some())
        .map(|v| {
            serde_json::from_value(v).map_err(|e| Error::parse("`ip -j addr` entry", e.to_string()))
        })
        .collect()
}

/// The MAC of the kernel interface `dev` in `netns`.
pub fn link_mac(netns: &str, dev: &str) -> Result<String> {
    let out = Cmd::new(["ip", "-j", "-n", netns, "addr", "show", "dev", dev]).run()?;
    parse_addrs(&out.stdout)?
        .into_iter()
        .find(|i| i.ifname == dev)
        .and_then(|i| i.address.as_deref().and_then(normalize_mac))
        .ok_or_else(|| Error::parse("`ip -j addr` output", format!("no MAC of {dev} in {netns}")))
}

/// Counts frames per source MAC in `tcpdump -e -nn` lines
/// (`12:00:00.000001 02:00:00:00:00:01 > 02:00:00:00:00:02, ethertype IPv4 ...`).
pub fn parse_source_macs<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for line in lines {
        let words: Vec<&str> = line.split_whitespace().collect();
        let src = words
            .windows(2)
            .find(|w| w[1] == ">" && normalize_mac(w[0]).is_some())
            .and_then(|w| normalize_mac(w[0]));
        if let Some(mac) = src {
            *out.entry(mac).or_default() += 1;
        }
    }
    out
}

/// The addresses the kernel of `netns` has on `dev`, as `addr/len` strings.
pub fn kernel_addresses(netns: &str, dev: &str) -> Result<Vec<String>> {
    let out = Cmd::new(["ip", "-j", "-n", netns, "addr", "show", "dev", dev]).run()?;
    let ifs = parse_addrs(&out.stdout)?;
    let iface = ifs.into_iter().find(|i| i.ifname == dev).ok_or_else(|| {
        Error::parse(
            "`ip -j addr` output",
            format!("no interface {dev} in {netns}"),
        )
    })?;
    Ok(iface
        .addr_info
        .iter()
        .map(|a| format!("{}/{}", a.local, a.prefixlen))
        .collect())
}

/// What an ARP capture saw.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArpSeen {
    /// Requests per target address (`who-has T`).
    pub requests: BTreeMap<String, u32>,
    /// Reply MACs per answered address (`T is-at M`), one entry per reply.
    pub replies: BTreeMap<String, Vec<String>>,
}

impl ArpSeen {
    /// Requests seen for `addr`.
    pub fn requests_for(&self, addr: Ipv4Addr) -> u32 {
        self.requests.get(&addr.to_string()).copied().unwrap_or(0)
    }

    /// Reply MACs seen for `addr`.
    pub fn replies_for(&self, addr: Ipv4Addr) -> &[String] {
        self.replies
            .get(&addr.to_string())
            .map_or(&[], Vec::as_slice)
    }
}

/// Parses `tcpdump -nn` lines of ARP traffic:
/// `ARP, Request who-has 203.0.113.10 tell 203.0.113.2, length 28` and
/// `ARP, Reply 203.0.113.10 is-at 02:00:00:00:00:01, length 28`.
pub fn parse_arp_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> ArpSeen {
    let mut seen = ArpSeen::default();
    for line in lines {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(i) = words.iter().position(|w| *w == "who-has") {
            if let Some(target) = words.get(i + 1) {
                *seen.requests.entry((*target).to_owned()).or_default() += 1;
            }
        } else if let Some(i) = words.iter().position(|w| *w == "is-at") {
            if let (Some(addr), Some(mac)) = (
                i.checked_sub(1).and_then(|j| words.get(j)),
                words.get(i + 1),
            ) {
                let mac = normalize_mac(mac).unwrap_or_else(|| (*mac).to_owned());
                seen.replies
                    .entry((*addr).to_owned())
                    .or_default()
                    .push(mac);
            }
        }
    }
    seen
}

/// A running `tcpdump` in a namespace. Bounded: at most `max_packets` packets, and
/// [`Capture::stop`] (or drop) ends it.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
}

impl Capture {
    /// Whether `tcpdump` is installed.
    pub fn available() -> bool {
        Command::new("tcpdump")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts capturing `filter` on `dev` in `netns` and waits (at most 5 s) until tcpdump says
    /// it is listening.
    pub fn start(netns: &str, dev: &str, filter: &str, max_packets: u32) -> Result<Self> {
        Self::start_with(netns, dev, &[], filter, max_packets)
    }

    /// [`Capture::start`] with extra tcpdump options (`-e` for link-level headers).
    pub fn start_with(
        netns: &str,
        dev: &str,
        extra: &[&str],
        filter: &str,
        max_packets: u32,
    ) -> Result<Self> {
        let mut argv: Vec<String> = ["tcpdump", "-i", dev, "-nn", "-l", "--immediate-mode"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        argv.extend(["-c".to_owned(), max_packets.to_string(), filter.to_owned()]);
        let cmd = Cmd::in_netns(netns, argv);
        tracing::debug!(command = %cmd.display(), "start capture");
        let (program, args) = cmd
            .argv()
            .split_first()
            .ok_or_else(|| Error::parse("command", "empty argv"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("cannot start `{}`", cmd.display()), e))?;
        let (tx, lines) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(out)
                    .lines()
                    .map_while(std::result::Result::ok)
                {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        if let Some(err) = child.stderr.take() {
            thread::spawn(move || {
                for line in BufReader::new(err)
                    .lines()
                    .map_while(std::result::Result::ok)
                {
                    tracing::debug!(line = %line, "tcpdump");
                    let _ = ready_tx.send(line);
                }
            });
        }
        let mut capture = Capture {
            child: Some(child),
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut said = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match ready.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => return Ok(capture),
                Ok(line) => said.push(line),
                Err(_) => {
                    capture.kill();
                    return Err(Error::Command {
                        command: cmd.display(),
                        status: "not listening after 5 s".to_owned(),
                        stderr: said.join("\n"),
                    });
                }
            }
        }
    }

    /// Stops the capture (SIGINT, then SIGKILL after a second) and returns the lines it printed.
    pub fn stop(mut self) -> Vec<String> {
        if let Some(child) = self.child.as_mut() {
            crate::process::signal(child.id(), libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            out.push(line);
        }
        out
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
    }
}
