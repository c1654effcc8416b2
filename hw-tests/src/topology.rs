//! The rack as data: hosts (one network namespace each), the switch namespace holding the
//! bridges, and the interfaces that join hosts to bridges through veth pairs.
//!
//! Nothing here touches the system: [`Topology::plan`] turns the description into the list of
//! commands that build it, which the rack runs and the unit tests read. Later issues extend the
//! rack by adding hosts, bridges and interfaces (a sync link between the directors, more real
//! servers) rather than by writing more `ip` calls.
//!
//! Naming: the namespace of host `h` is `<prefix>-<h>`; the switch-side end of the veth of
//! interface `i` of host `h` is `<h>-<i>` inside the switch namespace. The prefix never appears
//! in interface names, so every interface name stays within Linux's 15 characters whatever the
//! prefix, and two racks with different prefixes never collide.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::net::Ipv4Cidr;

/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Most queues the rack gives one veth (far below the kernel's 4096; a rack runs a few lcores).
pub const MAX_QUEUES: u16 = 64;

/// The name prefix of one rack: `tnd` gives namespaces `tnd-client`, `tnd-sw`, ...
///
/// Restricted to `[a-z][a-z0-9]{0,11}` so that a namespace belongs to a rack unambiguously
/// (host names have no `-` either), and so it is safe in paths and DPDK file prefixes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Prefix(String);

impl Prefix {
    /// Validates a prefix.
    pub fn new(s: &str) -> Result<Self> {
        let ok = (1..=12).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::InvalidPrefix(s.to_owned()))
        }
    }

    /// The prefix itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace of `host`: `<prefix>-<host>`.
    pub fn netns(&self, host: &str) -> String {
        format!("{}-{}", self.0, host)
    }

    /// Whether namespace `name` belongs to this rack: `<prefix>-` followed by a host name.
    pub fn owns_netns(&self, name: &str) -> bool {
        name.strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(is_host_name)
    }

    /// The DPDK `--file-prefix` of director `letter` (`a`/`b`): `<prefix>-a`.
    pub fn dpdk_file_prefix(&self, letter: &str) -> String {
        format!("{}-{}", self.0, letter)
    }
}

impl Default for Prefix {
    fn default() -> Self {
        Self("tnd".to_owned())
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Prefix {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// Host names: `[a-z0-9]+`, no `-`, short enough to leave room for an interface name in the
/// switch-side veth name.
pub fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 8
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

/// Who owns an interface inside its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    /// The host's kernel, with these addresses.
    Kernel {
        /// Addresses configured on the interface.
        addresses: Vec<Ipv4Cidr>,
    },
    /// A DPDK process (AF_XDP / AF_PACKET vdev): the kernel gets no address, IPv6 disabled, the
    /// link only set up, so the kernel keeps the wire quiet.
    Dpdk,
}

/// One interface of a host, the host end of a veth pair whose other end is a bridge port in the
/// switch namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    /// Name inside the host namespace (`eth0`, `out0`).
    pub name: String,
    /// The bridge in the switch namespace it is attached to.
    pub bridge: String,
    /// Kernel-owned with addresses, or handed to DPDK.
    pub owner: Owner,
    /// Rx and tx queues of both ends of its veth pair (`numrxqueues`/`numtxqueues`; 1 by
    /// default). A DPDK port with N worker lcores needs N: one AF_XDP socket per rx queue, and
    /// the switch-side end needs N tx queues, since veth delivers a frame to the peer's rx queue
    /// of the same index as the tx queue the sender picked.
    pub queues: u16,
}

impl Interface {
    /// A kernel interface with addresses.
    pub fn kernel(name: &str, bridge: &str, addresses: &[Ipv4Cidr]) -> Self {
        Self {
            name: name.to_owned(),
            bridge: bridge.to_owned(),
            owner: Owner::Kernel {
                addresses: addresses.to_vec(),
            },
            queues: 1,
        }
    }

    /// An interface handed to a DPDK process.
    pub fn dpdk(name: &str, bridge: &str) -> Self {
        Self {
            name: name.to_owned(),
            bridge: bridge.to_owned(),
            owner: Owner::Dpdk,
            queues: 1,
        }
    }

    /// The same interface with `queues` rx and tx queues on both ends of its veth pair.
    pub fn with_queues(mut self, queues: u16) -> Self {
        self.queues = queues;
        self
    }
}

/// A static IPv4 route of a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// `None` for the default route.
    pub destination: Option<Ipv4Cidr>,
    /// The gateway.
    pub via: Ipv4Addr,
    /// The routing table (`ip route ... table N`); `None` for the main table.
    pub table: Option<u32>,
}

impl Route {
    /// The default route via `via` in the main table.
    pub fn default_via(via: Ipv4Addr) -> Self {
        Self {
            destination: None,
            via,
            table: None,
        }
    }

    /// The same route in table `table`.
    pub fn in_table(mut self, table: u32) -> Self {
        self.table = Some(table);
        self
    }
}

/// A policy-routing rule: packets sourced from `from` are routed by `table`
/// (`ip rule add from <from> lookup <table>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// The source address the rule matches.
    pub from: Ipv4Addr,
    /// The table it selects.
    pub table: u32,
}

/// A kernel parameter of a host's namespace (`sysctl -w key=value`), set after its interfaces
/// exist so per-interface keys (`net.ipv4.conf.eth0.arp_ignore`) can be named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// `net.ipv4.ip_forward`
    pub key: String,
    /// `1`
    pub value: String,
}

impl Sysctl {
    /// `key=value`.
    pub fn new(key: &str, value: impl ToString) -> Self {
        Self {
            key: key.to_owned(),
            value: value.to_string(),
        }
    }
}

/// One host: a network namespace with interfaces and routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Host {
    /// Host name (`client`, `dira`, `rs1`); see [`is_host_name`].
    pub name: String,
    /// Its interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses on `lo` (a real server's VIPs for TUN and DR: held, never announced by ARP).
    pub loopback: Vec<Ipv4Cidr>,
    /// TUN devices (`ip tuntap add dev <name> mode tun`, no packet-info header) created up and
    /// left for a user-space program to attach to (the IPIP decapsulator).
    pub tun_devices: Vec<String>,
    /// Kernel parameters, set after the interfaces and TUN devices exist.
    pub sysctls: Vec<Sysctl>,
    /// Its static routes.
    pub routes: Vec<Route>,
    /// Its policy-routing rules, added after the routes.
    pub rules: Vec<Rule>,
}

impl Host {
    /// A host with nothing configured yet.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    /// The first kernel address of interface `iface`.
    pub fn address(&self, iface: &str) -> Option<Ipv4Addr> {
        self.interfaces
            .iter()
            .find(|i| i.name == iface)
            .and_then(|i| match &i.owner {
                Owner::Kernel { addresses } => addresses.first().map(|c| c.addr),
                Owner::Dpdk => None,
            })
    }
}

/// The whole virtual rack: hosts, and the switch namespace with its bridges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Host name of the switch namespace (`sw`).
    pub switch: String,
    /// Bridges inside the switch namespace (`br-out`, `br-in`).
    pub bridges: Vec<String>,
    /// Every other host.
    pub hosts: Vec<Host>,
}

/// One command of a build plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The argv (`argv[0]` is the program).
    pub argv: Vec<String>,
    /// A failing optional step is logged and skipped (e.g. `ethtool` tweaks).
    pub required: bool,
}

impl Step {
    fn required<S: AsRef<str>>(argv: &[S]) -> Self {
        Self {
            argv: argv.iter().map(|s| s.as_ref().to_owned()).collect(),
            required: true,
        }
    }

    fn optional<S: AsRef<str>>(argv: &[S]) -> Self {
        Self {
            argv: argv.iter().map(|s| s.as_ref().to_owned()).collect(),
            required: false,
        }
    }
}

impl Topology {
    /// The host named `name`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The switch-side name of the veth of `iface` on `host`: `<host>-<iface>`.
    pub fn switch_port(host: &str, iface: &str) -> String {
        format!("{host}-{iface}")
    }

    /// All namespaces of the rack, switch first (the order they are created in).
    pub fn namespaces(&self, prefix: &Prefix) -> Vec<String> {
        std::iter::once(self.switch.as_str())
            .chain(self.hosts.iter().map(|h| h.name.as_str()))
            .map(|h| prefix.netns(h))
            .collect()
    }

    /// Checks names and references: host names valid and unique, interface names within 15
    /// characters and unique per host, bridges known, kernel addresses unique.
    pub fn validate(&self) -> Result<()> {
        let mut seen_hosts = std::collections::BTreeSet::new();
        for name in std::iter::once(&self.switch).chain(self.hosts.iter().map(|h| &h.name)) {
            if !is_host_name(name) {
                return Err(Error::Topology(format!(
                    "host name `{name}` must be 1-8 characters a-z, 0-9"
                )));
            }
            if !seen_hosts.insert(name.as_str()) {
                return Err(Error::Topology(format!("host `{name}` appears twice")));
            }
        }
        for b in &self.bridges {
            check_ifname(b)?;
        }
        let mut addresses = std::collections::BTreeSet::new();
        for h in &self.hosts {
            let mut names = std::collections::BTreeSet::new();
            for i in &h.interfaces {
                check_ifname(&i.name)?;
                check_ifname(&Self::switch_port(&h.name, &i.name))?;
                if !names.insert(i.name.as_str()) {
                    return Err(Error::Topology(format!(
                        "host `{}` has interface `{}` twice",
                        h.name, i.name
                    )));
                }
                if i.queues == 0 || i.queues > MAX_QUEUES {
                    return Err(Error::Topology(format!(
                        "interface `{}` of `{}` has {} queues; 1-{MAX_QUEUES} are allowed",
                        i.name, h.name, i.queues
                    )));
                }
                if !self.bridges.contains(&i.bridge) {
                    return Err(Error::Topology(format!(
                        "interface `{}` of `{}` names unknown bridge `{}`",
                        i.name, h.name, i.bridge
                    )));
                }
                if let Owner::Kernel { addresses: a } = &i.owner {
                    for c in a {
                        if !addresses.insert(c.addr) {
                            return Err(Error::Topology(format!(
                                "address {} is used twice",
                                c.addr
                            )));
                        }
                    }
                }
            }
            for t in &h.tun_devices {
                check_ifname(t)?;
                if !names.insert(t.as_str()) {
                    return Err(Error::Topology(format!(
                        "host `{}` has interface `{t}` twice",
                        h.name
                    )));
                }
            }
            for s in &h.sysctls {
                let ok = !s.key.is_empty()
                    && s.key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                    && !s.value.is_empty()
                    && !s.value.contains(['\n', ' ']);
                if !ok {
                    return Err(Error::Topology(format!(
                        "host `{}`: sysctl `{}={}` is not a plain key=value",
                        h.name, s.key, s.value
                    )));
                }
            }
        }
        Ok(())
    }

    /// The commands that build this topology, in order. Undoing it is deleting the namespaces
    /// (which destroys their veths, bridges and any XDP programs).
    pub fn plan(&self, prefix: &Prefix) -> Vec<Step> {
        let mut steps = Vec::new();
        let sw = prefix.netns(&self.switch);
        // Namespaces first; IPv6 off by default in each, before any interface exists, so no
        // link-local address, router solicitation or MLD report ever reaches a DPDK port and
        // the directors' counters count only what the tests send.
        for ns in self.namespaces(prefix) {
            steps.push(Step::required(&["ip", "netns", "add", &ns]));
            for key in ["all", "default"] {
                steps.push(Step::required(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
                ]));
            }
            steps.push(Step::required(&[
                "ip", "-n", &ns, "link", "set", "lo", "up",
            ]));
        }
        for br in &self.bridges {
            // Without multicast snooping the bridge does not join 224.0.0.106 (RFC 4286 router
            // discovery) and so sends no IGMP reports that every DPDK port would count.
            steps.push(Step::required(&[
                "ip",
                "-n",
                &sw,
                "link",
                "add",
                br,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]));
            steps.push(Step::required(&["ip", "-n", &sw, "link", "set", br, "up"]));
        }
        for h in &self.hosts {
            let ns = prefix.netns(&h.name);
            for i in &h.interfaces {
                let port = Self::switch_port(&h.name, &i.name);
                // Both ends are created in place: nothing ever exists in the caller's namespace.
                // With several queues, both ends get them: frames the bridge sends into the
                // switch-side end arrive on the host end's rx queue of the same index as the tx
                // queue the kernel picked (by flow hash; XPS is off on veth).
                let queues: Vec<String> = if i.queues > 1 {
                    let n = i.queues.to_string();
                    ["numtxqueues", &n, "numrxqueues", &n]
                        .map(str::to_owned)
                        .to_vec()
                } else {
                    Vec::new()
                };
                let mut argv: Vec<String> = ["ip", "-n", &sw, "link", "add", &port]
                    .map(str::to_owned)
                    .to_vec();
                argv.extend(queues.iter().cloned());
                argv.extend(["type", "veth", "peer", "name", &i.name].map(str::to_owned));
                argv.extend(queues.iter().cloned());
                argv.extend(["netns", &ns].map(str::to_owned));
                steps.push(Step::required(&argv));
                steps.push(Step::required(&[
                    "ip", "-n", &sw, "link", "set", &port, "master", &i.bridge,
                ]));
                steps.push(Step::required(&[
                    "ip", "-n", &sw, "link", "set", &port, "up",
                ]));
                steps.push(Step::required(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{}.disable_ipv6=1", i.name),
                ]));
                match &i.owner {
                    Owner::Kernel { addresses } => {
                        // veth hands the peer partially-checksummed and GSO packets; a DPDK port
                        // on the same bridge would see TCP/UDP checksums unfilled and frames
                        // larger than the MTU. Make the kernel hosts send finished frames.
                        steps.push(Step::optional(&[
                            "ip", "netns", "exec", &ns, "ethtool", "-K", &i.name, "tx", "off",
                            "tso", "off", "gso", "off",
                        ]));
                        for a in addresses {
                            steps.push(Step::required(&[
                                "ip",
                                "-n",
                                &ns,
                                "addr",
                                "add",
                                &a.to_string(),
                                "dev",
                                &i.name,
                            ]));
                        }
                    }
                    Owner::Dpdk => {}
                }
                steps.push(Step::required(&[
                    "ip", "-n", &ns, "link", "set", &i.name, "up",
                ]));
            }
            for t in &h.tun_devices {
                // Persistent, IFF_TUN without packet information (iproute2's default), so the
                // decapsulator attaches with IFF_TUN | IFF_NO_PI and writes bare IPv4 packets.
                steps.push(Step::required(&[
                    "ip", "-n", &ns, "tuntap", "add", "dev", t, "mode", "tun",
                ]));
                steps.push(Step::required(&["ip", "-n", &ns, "link", "set", t, "up"]));
            }
            for a in &h.loopback {
                steps.push(Step::required(&[
                    "ip",
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &a.to_string(),
                    "dev",
                    "lo",
                ]));
            }
            for s in &h.sysctls {
                steps.push(Step::required(&[
                    "ip",
                    "netns",
                    "exec",
                    &ns,
                    "sysctl",
                    "-qw",
                    &format!("{}={}", s.key, s.value),
                ]));
            }
            for r in &h.routes {
                let dest = r
                    .destination
                    .map_or_else(|| "default".to_owned(), |d| d.to_string());
                let mut argv = vec![
                    "ip".to_owned(),
                    "-n".to_owned(),
                    ns.clone(),
                    "route".to_owned(),
                    "add".to_owned(),
                    dest,
                    "via".to_owned(),
                    r.via.to_string(),
                ];
                if let Some(t) = r.table {
                    argv.extend(["table".to_owned(), t.to_string()]);
                }
                steps.push(Step::required(&argv));
            }
            for rule in &h.rules {
                steps.push(Step::required(&[
                    "ip",
                    "-n",
                    &ns,
                    "rule",
                    "add",
                    "from",
                    &rule.from.to_string(),
                    "lookup",
                    &rule.table.to_string(),
                ]));
            }
        }
        steps
    }
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > IFNAME_MAX || name.contains(['/', ' ', ':']) {
        return Err(Error::Topology(format!(
            "interface name `{name}` must be 1-{IFNAME_MAX} characters without '/', ':' or spaces"
        )));
    }
    Ok(())
}
