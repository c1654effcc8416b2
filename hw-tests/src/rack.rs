//! The virtual rack: the default description, bringing it up (topology, then one dataplane per
//! director), looking at it, and tearing it down again.
//!
//! [`Rack`] is a guard: dropping it tears the rack down unless [`Rack::detach`] was called (what
//! `tandem-rack up` does). [`teardown`] needs nothing but the prefix, so `tandem-rack down`, a
//! signal handler or a failing test can always clean up, and running it twice is harmless.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::client::{ClientOptions, ClientReport};
use crate::config::{Pmd, director_config, director_lcores, online_cpus};
use crate::ctl::Ctl;
use crate::error::{Error, Result};
use crate::exec::{Cancel, Cmd, is_root};
use crate::net::Ipv4Cidr;
use crate::process::{self, Stopped};
use crate::stats::{Counters, LcoreStats, PortInfo, Stats};
use crate::topology::{Host, Interface, Prefix, Route, Rule, Sysctl, Topology};
pub use tandem_dataplane::config::{
    MethodName, ProtocolName, RouteSection, ServerSection, ServiceSection,
};

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
/// How long a helper (`serve`, the decapsulator) gets to bind its sockets.
pub const HELPER_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a helper gets between SIGTERM and SIGKILL.
pub const HELPER_GRACE: Duration = Duration::from_secs(3);
/// Most worker lcores a rack director may run (`--workers`).
pub const MAX_WORKERS: u16 = 16;
/// The IPIP decapsulator run on every real server (python3; the kernel has no `ipip`).
pub const IPIP_DECAP_PY: &str = include_str!("../scripts/ipip-decap.py");
/// A sender of one hand-made IPIP packet, for tests of the decapsulator without a director.
pub const IPIP_INJECT_PY: &str = include_str!("../scripts/ipip-inject.py");

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
    /// Its `[[route]]`s (next hops off the ports' subnets).
    pub routes: Vec<RouteSection>,
    /// Its virtual services (`[[service]]`), in the dataplane's own type.
    pub services: Vec<ServiceSection>,
}

impl DirectorSpec {
    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&DirectorPort> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The port on interface `iface`.
    pub fn port_by_iface(&self, iface: &str) -> Option<&DirectorPort> {
        self.ports.iter().find(|p| p.iface == iface)
    }

    /// The service `protocol` `address`:`port`.
    pub fn service(
        &self,
        protocol: ProtocolName,
        address: Ipv4Addr,
        port: u16,
    ) -> Option<&ServiceSection> {
        self.services
            .iter()
            .find(|s| s.protocol == protocol && s.address == address && s.port == port)
    }
}

/// A real server: its host, its address, what `tandem-rack serve` listens on there, and the TUN
/// device its IPIP decapsulator writes into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealServer {
    /// Host (namespace) name, also the name it answers with (`rs1`).
    pub host: String,
    /// Its interface on the inside network.
    pub iface: String,
    /// Its address there (the NAT/TUN/DR destination).
    pub address: Ipv4Addr,
    /// TCP ports `serve` listens on.
    pub tcp_ports: Vec<u16>,
    /// UDP ports `serve` answers on.
    pub udp_ports: Vec<u16>,
    /// The TUN device of its user-space IPIP decapsulator; `None`: no decapsulator.
    pub tunnel: Option<String>,
}

/// The three forwarding methods the rack is wired for (SPEC "Forwarding").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// VS/NAT: requests and replies pass the director, which rewrites addresses and ports.
    Nat,
    /// VS/TUN: the director encapsulates requests (IPIP); servers answer the client directly.
    Tun,
    /// VS/DR: the director rewrites the destination MAC; servers answer the client directly.
    Dr,
}

impl Mode {
    /// All three, in order.
    pub const ALL: [Mode; 3] = [Mode::Nat, Mode::Tun, Mode::Dr];

    /// `nat` / `tun` / `dr`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Nat => "nat",
            Mode::Tun => "tun",
            Mode::Dr => "dr",
        }
    }

    /// The dataplane's method name.
    pub fn method(self) -> MethodName {
        match self {
            Mode::Nat => MethodName::Nat,
            Mode::Tun => MethodName::Tun,
            Mode::Dr => MethodName::Dr,
        }
    }

    /// Parses `nat,tun,dr` (also `all`; empty gives none), rejecting unknown names.
    pub fn parse_list(s: &str) -> Result<Vec<Mode>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "none" {
                continue;
            }
            if part == "all" {
                for m in Mode::ALL {
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
                continue;
            }
            let m: Mode = part.parse()?;
            if !out.contains(&m) {
                out.push(m);
            }
        }
        Ok(out)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::parse("mode", format!("`{s}` is not one of nat, tun, dr")))
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
    /// The router between the outside and inside networks: the path TUN and DR replies take.
    pub router: String,
    /// The router's interface on the outside network.
    pub router_outside_iface: String,
    /// The router's interface on the inside network.
    pub router_inside_iface: String,
    /// The real servers.
    pub real_servers: Vec<RealServer>,
    /// The VIP of the demo service (the NAT VIP).
    pub vip: Ipv4Addr,
    /// The VIP of the TUN services.
    pub tun_vip: Ipv4Addr,
    /// The VIP of the DR services.
    pub dr_vip: Ipv4Addr,
    /// The inside gateway the real servers route through (the active director's, later).
    pub inside_gateway: Ipv4Addr,
}

fn cidr(a: [u8; 4], len: u8) -> Ipv4Cidr {
    Ipv4Cidr {
        addr: Ipv4Addr::from(a),
        len,
    }
}

/// TCP ports every real server listens on: the seed-002 NAT ports (80, 8000 for the port
/// mapping, 21).
pub const RS_TCP_PORTS: [u16; 3] = [80, 8000, 21];
/// UDP ports every real server answers on.
pub const RS_UDP_PORTS: [u16; 1] = [53];
/// The real servers' routing table for replies sourced from a TUN or DR VIP (via the router).
pub const DIRECT_REPLY_TABLE: u32 = 100;
/// The TUN device of each real server's IPIP decapsulator.
pub const DECAP_TUN: &str = "tnl0";

fn server(address: Ipv4Addr, port: u16, method: MethodName, weight: u32) -> ServerSection {
    ServerSection {
        address,
        port,
        method,
        weight,
    }
}

fn service(
    protocol: ProtocolName,
    address: Ipv4Addr,
    port: u16,
    scheduler: &str,
    servers: Vec<ServerSection>,
) -> ServiceSection {
    ServiceSection {
        protocol,
        address,
        port,
        scheduler: scheduler.to_owned(),
        persistence_timeout_s: 0,
        flags: Vec::new(),
        servers,
    }
}

/// The services of the three modes on real servers `rs` (at least three addresses):
/// - NAT `nat`: TCP :80 wrr -> rs1:80 weight 1, rs2:8000 weight 2 and :21 -> rs2:21 (seed 002),
///   UDP :53 rr -> every server;
/// - TUN `tun`: TCP :80 wrr -> weights 4, 3, 2 (seed 000's cycle A B C A B C A B A), UDP :53 rr;
/// - DR `dr`: TCP :80 lblc -> weight 10 each (one destination stays on one server while no
///   server has more than 10 active connections), UDP :53 rr.
pub fn mode_services(
    nat: Ipv4Addr,
    tun: Ipv4Addr,
    dr: Ipv4Addr,
    rs: &[Ipv4Addr],
) -> Vec<ServiceSection> {
    use MethodName::{Dr, Nat, Tun};
    use ProtocolName::{Tcp, Udp};
    let all = |method: MethodName, port: u16, weights: &[u32]| -> Vec<ServerSection> {
        rs.iter()
            .zip(weights.iter().chain(std::iter::repeat(&1)))
            .map(|(a, w)| server(*a, port, method, *w))
            .collect()
    };
    let (rs1, rs2) = match rs {
        [a, b, ..] => (*a, *b),
        _ => return Vec::new(),
    };
    vec![
        service(
            Tcp,
            nat,
            80,
            "wrr",
            vec![server(rs1, 80, Nat, 1), server(rs2, 8000, Nat, 2)],
        ),
        service(Tcp, nat, 21, "rr", vec![server(rs2, 21, Nat, 1)]),
        service(Udp, nat, 53, "rr", all(Nat, 53, &[])),
        service(Tcp, tun, 80, "wrr", all(Tun, 80, &[4, 3, 2])),
        service(Udp, tun, 53, "rr", all(Tun, 53, &[])),
        service(Tcp, dr, 80, "lblc", all(Dr, 80, &[10, 10, 10])),
        service(Udp, dr, 53, "rr", all(Dr, 53, &[])),
    ]
}

impl RackSpec {
    /// The default rack: a client on the outside network, directors A and B on both networks
    /// (their ports handed to DPDK), a router joining the two networks, three real servers
    /// inside, and the NAT, TUN and DR VIPs (203.0.113.10, .20, .30) owned by A.
    ///
    /// Real servers route via the inside gateway 172.16.0.254 (a VIP of A on its inside port:
    /// NAT replies pass the director), except replies sourced from the TUN or DR VIP, which a
    /// policy rule sends via the router (172.16.0.1) straight to the client. Both VIPs sit on
    /// their `lo` with `arp_ignore=1`/`arp_announce=2`, so only the director answers ARP for them;
    /// TUN requests arrive tunnelled and are decapsulated by a user-space program into `tnl0`.
    pub fn default_rack() -> Self {
        let vip = Ipv4Addr::new(203, 0, 113, 10);
        let tun_vip = Ipv4Addr::new(203, 0, 113, 20);
        let dr_vip = Ipv4Addr::new(203, 0, 113, 30);
        let inside_gateway = Ipv4Addr::new(172, 16, 0, 254);
        let router_outside = Ipv4Addr::new(203, 0, 113, 1);
        let router_inside = Ipv4Addr::new(172, 16, 0, 1);
        let rs_addrs: Vec<Ipv4Addr> = [2u8, 3, 4]
            .iter()
            .map(|l| Ipv4Addr::new(172, 16, 0, *l))
            .collect();
        let outside = |address: Ipv4Addr| Vip {
            address,
            port: "outside".into(),
        };
        let default_route = RouteSection {
            prefix: tandem_dataplane::config::Ipv4Cidr {
                addr: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
            },
            gateway: router_outside,
        };
        let director =
            |id: DirectorId, host: &str, last: u8, vips: Vec<Vip>, services| DirectorSpec {
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
                routes: vec![default_route.clone()],
                services,
            };
        let directors = vec![
            director(
                DirectorId::A,
                "dira",
                11,
                vec![
                    outside(vip),
                    Vip {
                        address: inside_gateway,
                        port: "inside".into(),
                    },
                    outside(tun_vip),
                    outside(dr_vip),
                ],
                mode_services(vip, tun_vip, dr_vip, &rs_addrs),
            ),
            // B holds no VIP until VIP takeover exists, and the dataplane refuses a service whose
            // address is not one of its [[vip]]s: so B gets the routes but no services yet.
            director(DirectorId::B, "dirb", 12, Vec::new(), Vec::new()),
        ];
        let mut client = Host::new("client");
        client.interfaces = vec![Interface::kernel(
            "eth0",
            BRIDGE_OUT,
            &[cidr([203, 0, 113, 2], 24)],
        )];
        let mut hosts = vec![client];
        for d in &directors {
            let mut h = Host::new(&d.host);
            h.interfaces = vec![
                Interface::dpdk("out0", BRIDGE_OUT),
                Interface::dpdk("in0", BRIDGE_IN),
            ];
            hosts.push(h);
        }
        let mut router = Host::new("rtr");
        router.interfaces = vec![
            Interface::kernel("eth0", BRIDGE_OUT, &[cidr(router_outside.octets(), 24)]),
            Interface::kernel("eth1", BRIDGE_IN, &[cidr(router_inside.octets(), 24)]),
        ];
        router.sysctls = vec![Sysctl::new("net.ipv4.ip_forward", 1)];
        // TUN/DR replies come in on eth1 from VIPs that belong to eth0's subnet: no reverse-path
        // filter. No redirects either: the wire stays quiet for the directors' counters.
        for dev in ["all", "default", "eth0", "eth1"] {
            router
                .sysctls
                .push(Sysctl::new(&format!("net.ipv4.conf.{dev}.rp_filter"), 0));
            router.sysctls.push(Sysctl::new(
                &format!("net.ipv4.conf.{dev}.send_redirects"),
                0,
            ));
        }
        hosts.push(router);
        let mut real_servers = Vec::new();
        for (n, address) in rs_addrs.iter().enumerate() {
            let name = format!("rs{}", n + 1);
            let mut h = Host::new(&name);
            h.interfaces = vec![Interface::kernel(
                "eth0",
                BRIDGE_IN,
                &[cidr(address.octets(), 24)],
            )];
            h.loopback = vec![cidr(tun_vip.octets(), 32), cidr(dr_vip.octets(), 32)];
            h.tun_devices = vec![DECAP_TUN.to_owned()];
            // LVS/DR: answer ARP only for addresses of the receiving interface (not the VIPs on
            // lo), and announce with the interface's own address.
            for dev in ["all", "eth0"] {
                h.sysctls
                    .push(Sysctl::new(&format!("net.ipv4.conf.{dev}.arp_ignore"), 1));
                h.sysctls
                    .push(Sysctl::new(&format!("net.ipv4.conf.{dev}.arp_announce"), 2));
            }
            // Decapsulated packets arrive on tnl0 from clients whose route is via eth0.
            for dev in ["all", "default", "eth0", DECAP_TUN] {
                h.sysctls
                    .push(Sysctl::new(&format!("net.ipv4.conf.{dev}.rp_filter"), 0));
            }
            h.routes = vec![
                Route::default_via(inside_gateway),
                Route::default_via(router_inside).in_table(DIRECT_REPLY_TABLE),
            ];
            h.rules = [tun_vip, dr_vip]
                .iter()
                .map(|from| Rule {
                    from: *from,
                    table: DIRECT_REPLY_TABLE,
                })
                .collect();
            hosts.push(h);
            real_servers.push(RealServer {
                host: name,
                iface: "eth0".into(),
                address: *address,
                tcp_ports: RS_TCP_PORTS.to_vec(),
                udp_ports: RS_UDP_PORTS.to_vec(),
                tunnel: Some(DECAP_TUN.to_owned()),
            });
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
            router: "rtr".into(),
            router_outside_iface: "eth0".into(),
            router_inside_iface: "eth1".into(),
            real_servers,
            vip,
            tun_vip,
            dr_vip,
            inside_gateway,
        }
    }

    /// Gives director `id` `workers` worker lcores: its DPDK interfaces (and their switch-side
    /// ends) get that many rx/tx queues, and [`Rack::up`] starts it on that many lcores with
    /// one queue per lcore on every port.
    pub fn set_workers(&mut self, id: DirectorId, workers: u16) -> Result<()> {
        if workers == 0 || workers > MAX_WORKERS {
            return Err(Error::Topology(format!(
                "director {}: {workers} workers; 1-{MAX_WORKERS} are allowed",
                id.letter()
            )));
        }
        let d = self
            .director(id)
            .ok_or_else(|| Error::Topology(format!("the rack has no director {}", id.letter())))?;
        let (host, ifaces): (String, Vec<String>) = (
            d.host.clone(),
            d.ports.iter().map(|p| p.iface.clone()).collect(),
        );
        let h = self
            .topology
            .hosts
            .iter_mut()
            .find(|h| h.name == host)
            .ok_or_else(|| {
                Error::Topology(format!(
                    "director {} names unknown host `{host}`",
                    id.letter()
                ))
            })?;
        for i in h.interfaces.iter_mut().filter(|i| ifaces.contains(&i.name)) {
            i.queues = workers;
        }
        Ok(())
    }

    /// The worker lcores director `id` runs: the queues of its DPDK interfaces (1 unless
    /// [`RackSpec::set_workers`] said otherwise).
    pub fn workers(&self, id: DirectorId) -> u16 {
        let Some(d) = self.director(id) else {
            return 1;
        };
        self.topology
            .host(&d.host)
            .and_then(|h| {
                h.interfaces
                    .iter()
                    .filter(|i| d.port_by_iface(&i.name).is_some())
                    .map(|i| i.queues)
                    .min()
            })
            .unwrap_or(1)
            .max(1)
    }

    /// Director `id`, if the rack has it.
    pub fn director(&self, id: DirectorId) -> Option<&DirectorSpec> {
        self.directors.iter().find(|d| d.id == id)
    }

    /// The VIP of `mode`'s services.
    pub fn mode_vip(&self, mode: Mode) -> Ipv4Addr {
        match mode {
            Mode::Nat => self.vip,
            Mode::Tun => self.tun_vip,
            Mode::Dr => self.dr_vip,
        }
    }

    /// The real server at `address`.
    pub fn real_server_at(&self, address: Ipv4Addr) -> Option<&RealServer> {
        self.real_servers.iter().find(|r| r.address == address)
    }

    /// The real server on host `host`.
    pub fn real_server(&self, host: &str) -> Option<&RealServer> {
        self.real_servers.iter().find(|r| r.host == host)
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
            let queues: std::collections::BTreeSet<u16> = host
                .interfaces
                .iter()
                .filter(|i| d.port_by_iface(&i.name).is_some())
                .map(|i| i.queues)
                .collect();
            if queues.len() > 1 {
                return Err(Error::Topology(format!(
                    "director {}: its ports' interfaces have different queue counts {queues:?} \
                     (one queue per worker on every port)",
                    d.id.letter()
                )));
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
        if self.topology.host(&self.router).is_none() {
            return Err(Error::Topology(format!(
                "router host `{}` is not in the topology",
                self.router
            )));
        }
        for r in &self.real_servers {
            let host = self.topology.host(&r.host).ok_or_else(|| {
                Error::Topology(format!("real server `{}` is not in the topology", r.host))
            })?;
            if host.address(&r.iface) != Some(r.address) {
                return Err(Error::Topology(format!(
                    "real server `{}`: {} is not the address of its `{}`",
                    r.host, r.address, r.iface
                )));
            }
            if let Some(t) = &r.tunnel {
                if !host.tun_devices.contains(t) {
                    return Err(Error::Topology(format!(
                        "real server `{}`: tunnel device `{t}` is not one of its TUN devices",
                        r.host
                    )));
                }
            }
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

    /// Director `id`'s dataplane `Local` socket (failover pair).
    pub fn sync_socket(&self, id: DirectorId) -> PathBuf {
        self.dir.join(format!("{}.sync.sock", id.lower()))
    }

    /// Director `id`'s syncd configuration.
    pub fn syncd_config(&self, id: DirectorId) -> PathBuf {
        self.dir.join(format!("{}.syncd.toml", id.lower()))
    }

    /// Director `id`'s syncd log.
    pub fn syncd_log(&self, id: DirectorId) -> PathBuf {
        self.dir.join(format!("{}.syncd.log", id.lower()))
    }

    /// Director `id`'s syncd pid file (for the rack description's `kill` command).
    pub fn syncd_pid(&self, id: DirectorId) -> PathBuf {
        self.dir.join(format!("{}.syncd.pid", id.lower()))
    }

    /// Director `id`'s syncd status file.
    pub fn syncd_status(&self, id: DirectorId) -> PathBuf {
        self.dir.join(format!("{}.syncd.json", id.lower()))
    }

    /// `<state>/rack.json`: what `up` started, for `status`.
    pub fn meta(&self) -> PathBuf {
        self.dir.join("rack.json")
    }

    /// `<state>/<helper>.pid` (`serve-rs1`, `decap-rs1`).
    pub fn helper_pid(&self, helper: &str) -> PathBuf {
        self.dir.join(format!("{helper}.pid"))
    }

    /// `<state>/<helper>.log`
    pub fn helper_log(&self, helper: &str) -> PathBuf {
        self.dir.join(format!("{helper}.log"))
    }

    /// `<state>/serve-<host>.ready`: written by `serve` once its sockets are bound.
    pub fn serve_ready(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{}.ready", serve_helper(host)))
    }

    /// `<state>/decap-<host>.json`: the decapsulator's counters.
    pub fn decap_stats(&self, host: &str) -> PathBuf {
        self.dir.join(format!("{}.json", decap_helper(host)))
    }

    /// `<state>/ipip-decap.py`: the decapsulator, written by `up`.
    pub fn decap_script(&self) -> PathBuf {
        self.dir.join("ipip-decap.py")
    }

    /// The helpers' pid files present now: `(helper, path)`.
    pub fn helper_pid_files(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<(String, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let helper = name.strip_suffix(".pid")?;
                (helper.starts_with("serve-") || helper.starts_with("decap-"))
                    .then(|| (helper.to_owned(), e.path()))
            })
            .collect();
        out.sort();
        out
    }
}

/// The helper name of real server `host`'s `serve`: `serve-rs1`.
pub fn serve_helper(host: &str) -> String {
    format!("serve-{host}")
}

/// The helper name of real server `host`'s decapsulator: `decap-rs1`.
pub fn decap_helper(host: &str) -> String {
    format!("decap-{host}")
}

/// The counters file of an IPIP decapsulator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecapStats {
    /// Its pid.
    #[serde(default)]
    pub pid: u32,
    /// When it was written.
    #[serde(default)]
    pub unix_ms: u64,
    /// Whether the decapsulator had exited.
    #[serde(default)]
    pub exited: bool,
    /// `received`, `decapsulated`, `written`, `not_for_us`, `malformed_outer`, ...
    #[serde(default)]
    pub counters: std::collections::BTreeMap<String, u64>,
}

impl DecapStats {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::parse("decapsulator stats", e.to_string()))
    }

    /// A counter (0 when absent).
    pub fn get(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
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
    /// Worker lcores of director A (`--workers`, default 1): its EAL gets that many lcores,
    /// its veths that many queues, its vdevs `queue_count`/`qpairs` that many
    /// ([`RackSpec::set_workers`]). B keeps one. More than one needs [`Pmd::AfPacket`]
    /// ([`Pmd::check_workers`]).
    pub workers: u16,
    /// `--dataplane PATH`; else `$TANDEM_DATAPLANE`, else next to the executable.
    pub dataplane: Option<PathBuf>,
    /// False builds the topology only (kernel-level tests of the wiring).
    pub start_dataplanes: bool,
    /// Start the real servers' `serve` and IPIP decapsulators.
    pub start_services: bool,
    /// The `tandem-rack` binary run in the namespaces; else found by [`process::locate_tool`].
    pub tool: Option<PathBuf>,
    /// The `tandemctl` binary that applies the services; else found by
    /// [`crate::ctl::locate_ctl`].
    pub ctl: Option<PathBuf>,
    /// Bound on each director's first stats file.
    pub ready_timeout: Duration,
    /// Set by SIGINT/SIGTERM handlers; `up` stops and tears down when it is set.
    pub cancel: Cancel,
    /// A failover pair: B gets A's VIPs and services, both dataplanes `[sync]`, and a
    /// `tandem-syncd` runs in each director namespace ([`crate::pair`]).
    pub pair: bool,
}

impl RackOptions {
    /// The default rack under `prefix`, AF_XDP, both dataplanes started.
    pub fn new(prefix: Prefix) -> Self {
        Self {
            prefix,
            spec: RackSpec::default_rack(),
            pmd: Pmd::AfXdp,
            workers: 1,
            dataplane: None,
            start_dataplanes: true,
            start_services: true,
            tool: None,
            ctl: None,
            ready_timeout: READY_TIMEOUT,
            cancel: Cancel::new(),
            pair: false,
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
    /// Worker lcores of director A.
    #[serde(default = "one")]
    pub workers: u16,
    /// When the rack was ready.
    pub started_unix_ms: u64,
    /// The namespaces created.
    pub namespaces: Vec<String>,
}

fn one() -> u16 {
    1
}

#[derive(Debug)]
struct RunningHelper {
    name: String,
    child: Option<Child>,
    pid: u32,
    ready: PathBuf,
    log: PathBuf,
    /// Where and how it was started (for a restart).
    netns: String,
    argv: Vec<String>,
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
    helpers: Vec<RunningHelper>,
    tool: Option<PathBuf>,
    ctls: Vec<(DirectorId, Ctl)>,
    armed: bool,
    /// The failover pair's `tandem-syncd`s.
    syncds: Vec<(DirectorId, Option<Child>, u32)>,
    /// Each director's services as applied at start (applied again after a restart).
    services: Vec<(DirectorId, Vec<tandem_dataplane::config::ServiceSection>)>,
    /// The dataplane binary (for a restart).
    binary: Option<PathBuf>,
}

impl Rack {
    /// Builds the topology and starts both dataplanes, waiting until each has written its stats
    /// file. On any failure (or cancellation) everything already created is torn down before the
    /// error is returned.
    pub fn up(opts: &RackOptions) -> Result<Rack> {
        preflight("tandem-rack up")?;
        if opts.start_dataplanes {
            opts.pmd.check_workers(opts.workers)?;
        }
        let mut spec = opts.spec.clone();
        if opts.pair {
            crate::pair::make_pair(&mut spec)?;
        }
        if opts.workers != spec.workers(DirectorId::A) {
            spec.set_workers(DirectorId::A, opts.workers)?;
        }
        spec.validate()?;
        let binary = if opts.start_dataplanes {
            Some(process::locate_dataplane(opts.dataplane.as_deref())?)
        } else {
            None
        };
        let tool = if opts.start_services {
            Some(process::locate_tool(opts.tool.as_deref())?)
        } else {
            process::locate_tool(opts.tool.as_deref()).ok()
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
            spec,
            state: StateDir::for_prefix(&opts.prefix),
            directors: Vec::new(),
            helpers: Vec::new(),
            tool,
            ctls: Vec::new(),
            armed: true,
            syncds: Vec::new(),
            services: Vec::new(),
            binary: binary.clone(),
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
        for step in rack.spec.topology.plan(&opts.prefix) {
            opts.cancel.check()?;
            let cmd = Cmd::new(step.argv.clone());
            match cmd.run() {
                Ok(_) => {}
                Err(e) if !step.required => tracing::warn!(error = %e, "optional step failed"),
                Err(e) => return Err(e),
            }
        }
        if opts.start_services {
            rack.start_helpers(&opts.cancel)?;
        }
        if let Some(binary) = &binary {
            rack.start_dataplanes(binary, opts)?;
        }
        let meta = RackMeta {
            prefix: opts.prefix.to_string(),
            pmd: binary.as_ref().map(|_| opts.pmd),
            dataplane: binary.clone(),
            workers: rack.spec.workers(DirectorId::A),
            started_unix_ms: now_unix_ms(),
            namespaces: rack.spec.topology.namespaces(&opts.prefix),
        };
        write_file(
            &rack.state.meta(),
            &serde_json::to_string_pretty(&meta)
                .map_err(|e| Error::parse("rack.json", e.to_string()))?,
        )?;
        Ok(rack)
    }

    /// Starts `serve` on every real server and its IPIP decapsulator, and waits until each has
    /// bound its sockets. Both watch the state directory: when the rack is torn down they exit
    /// even if nothing signals them.
    fn start_helpers(&mut self, cancel: &Cancel) -> Result<()> {
        let tool = self.tool.clone().ok_or_else(|| Error::ToolNotFound {
            looked_at: Vec::new(),
        })?;
        let state_dir = self.state.path().display().to_string();
        if self.spec.real_servers.iter().any(|r| r.tunnel.is_some()) {
            write_file(&self.state.decap_script(), IPIP_DECAP_PY)?;
        }
        let join = |ports: &[u16]| {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let servers = self.spec.real_servers.clone();
        for rs in &servers {
            let netns = self.prefix.netns(&rs.host);
            let name = serve_helper(&rs.host);
            let ready = self.state.serve_ready(&rs.host);
            let mut argv = vec![
                tool.display().to_string(),
                "serve".to_owned(),
                "--name".to_owned(),
                rs.host.clone(),
                "--watch".to_owned(),
                state_dir.clone(),
                "--ready-file".to_owned(),
                ready.display().to_string(),
            ];
            if !rs.tcp_ports.is_empty() {
                argv.extend(["--tcp".to_owned(), join(&rs.tcp_ports)]);
            }
            if !rs.udp_ports.is_empty() {
                argv.extend(["--udp".to_owned(), join(&rs.udp_ports)]);
            }
            self.spawn_helper(&netns, name, argv, ready)?;
            if let Some(tun) = &rs.tunnel {
                let name = decap_helper(&rs.host);
                let stats = self.state.decap_stats(&rs.host);
                let argv = vec![
                    "python3".to_owned(),
                    self.state.decap_script().display().to_string(),
                    "--address".to_owned(),
                    rs.address.to_string(),
                    "--tun".to_owned(),
                    tun.clone(),
                    "--stats".to_owned(),
                    stats.display().to_string(),
                    "--watch".to_owned(),
                    state_dir.clone(),
                ];
                self.spawn_helper(&netns, name, argv, stats)?;
            }
        }
        for i in 0..self.helpers.len() {
            self.wait_helper(i, cancel)?;
        }
        Ok(())
    }

    fn spawn_helper(
        &mut self,
        netns: &str,
        name: String,
        argv: Vec<String>,
        ready: PathBuf,
    ) -> Result<()> {
        let log = self.state.helper_log(&name);
        let child = process::spawn_helper_in_netns(netns, &argv, &log)?;
        let pid = child.id();
        write_file(&self.state.helper_pid(&name), &format!("{pid}\n"))?;
        tracing::debug!(helper = %name, pid, netns, "helper started");
        self.helpers.push(RunningHelper {
            name,
            child: Some(child),
            pid,
            ready,
            log,
            netns: netns.to_owned(),
            argv,
        });
        Ok(())
    }

    /// Stops real server `host`'s service (its `serve` process, SIGKILL: every port it
    /// serves stops answering, connections are reset), as a crashed daemon on a real
    /// server. The server itself stays up.
    pub fn stop_real_server(&mut self, host: &str) -> Result<()> {
        let name = serve_helper(host);
        let h = self
            .helpers
            .iter_mut()
            .find(|h| h.name == name)
            .ok_or_else(|| Error::Topology(format!("no service on real server {host}")))?;
        if let Some(mut c) = h.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            tracing::info!(helper = %name, pid = h.pid, "real server's service stopped");
        }
        let _ = std::fs::remove_file(&h.ready);
        Ok(())
    }

    /// Starts real server `host`'s service again (after [`Rack::stop_real_server`]) and
    /// waits until it has bound its sockets.
    pub fn start_real_server(&mut self, host: &str, cancel: &Cancel) -> Result<()> {
        let name = serve_helper(host);
        let index = self
            .helpers
            .iter()
            .position(|h| h.name == name)
            .ok_or_else(|| Error::Topology(format!("no service on real server {host}")))?;
        let h = self.helpers.remove(index);
        if h.child.is_some() {
            self.helpers.insert(index, h);
            return Ok(());
        }
        let _ = std::fs::remove_file(&h.ready);
        self.spawn_helper(&h.netns, h.name, h.argv, h.ready)?;
        let last = self.helpers.len() - 1;
        self.wait_helper(last, cancel)
    }

    fn wait_helper(&mut self, index: usize, cancel: &Cancel) -> Result<()> {
        let deadline = Instant::now() + HELPER_READY_TIMEOUT;
        let Some(h) = self.helpers.get_mut(index) else {
            return Ok(());
        };
        loop {
            cancel.check()?;
            if let Some(child) = h.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    h.child = None;
                    return Err(Error::HelperFailed {
                        helper: h.name.clone(),
                        why: format!("exited during startup ({status})"),
                        tail: process::log_tail(&h.log, 20),
                        log: h.log.clone(),
                    });
                }
            }
            if h.ready.exists() {
                tracing::debug!(helper = %h.name, "ready");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::HelperFailed {
                    helper: h.name.clone(),
                    why: format!(
                        "{} not written within {} s",
                        h.ready.display(),
                        HELPER_READY_TIMEOUT.as_secs()
                    ),
                    tail: process::log_tail(&h.log, 20),
                    log: h.log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_dataplanes(&mut self, binary: &Path, opts: &RackOptions) -> Result<()> {
        let online = online_cpus();
        // The services are not in the files: once a dataplane is up they are applied with
        // `tandemctl`, as an operator would (ipvsadm forms over the admin socket).
        let mut services = Vec::new();
        for d in &self.spec.directors {
            let lcores = director_lcores(&online, d.id, self.spec.workers(d.id));
            let mut cfg =
                director_config(d, &self.prefix, opts.pmd, &lcores, &self.state.stats(d.id));
            services.push((
                d.id,
                std::mem::take(&mut cfg.services),
                cfg.control.socket.clone(),
            ));
            if opts.pair {
                cfg.sync =
                    crate::pair::sync_section(&self.spec, d.id, &self.state.sync_socket(d.id));
            }
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
        let binary = crate::ctl::locate_ctl(opts.ctl.as_deref())?;
        for (id, list, socket) in services {
            opts.cancel.check()?;
            let ctl = Ctl::new(binary.clone(), PathBuf::from(socket));
            let applied = ctl.apply(&list)?;
            tracing::info!(
                director = id.letter(),
                commands = applied.len(),
                "services applied with tandemctl"
            );
            self.ctls.push((id, ctl));
            self.services.push((id, list));
        }
        if opts.pair {
            self.start_syncds()?;
        }
        Ok(())
    }

    /// `tandemctl` bound to director `id`'s admin socket (once its dataplane is up).
    pub fn ctl(&self, id: DirectorId) -> Option<&Ctl> {
        self.ctls.iter().find(|(d, _)| *d == id).map(|(_, c)| c)
    }

    /// Certificates, configurations, and one `tandem-syncd` per director namespace.
    fn start_syncds(&mut self) -> Result<()> {
        let syncd = crate::pair::locate_syncd()?;
        let certs = self.state.path().join("certs");
        std::fs::create_dir_all(&certs)
            .map_err(|e| Error::io(format!("creating {}", certs.display()), e))?;
        crate::pair::write_certificates(&certs)?;
        for id in DirectorId::ALL {
            if self.spec.director(id).is_some() {
                self.spawn_syncd(&syncd, id, false)?;
            }
        }
        Ok(())
    }

    /// Writes director `id`'s syncd configuration (with `preempt`) and starts it.
    fn spawn_syncd(&mut self, syncd: &Path, id: DirectorId, preempt: bool) -> Result<()> {
        let d = self
            .spec
            .director(id)
            .ok_or_else(|| Error::Topology(format!("no director {}", id.letter())))?;
        let netns = self.prefix.netns(&d.host);
        let certs = self.state.path().join("certs");
        let cfg = self.state.syncd_config(id);
        let admin = self
            .ctl(id)
            .map(|c| c.socket().to_path_buf())
            .ok_or_else(|| {
                Error::Topology(format!("director {} has no admin socket", id.letter()))
            })?;
        write_file(
            &cfg,
            &crate::pair::syncd_config(
                id,
                &certs,
                &self.state.sync_socket(id),
                &self.state.syncd_status(id),
                preempt,
                &admin,
                &crate::pair::health_checks(&self.spec, id),
            ),
        )?;
        let child = process::spawn_in_netns(&netns, syncd, &cfg, &self.state.syncd_log(id))?;
        let pid = child.id();
        write_file(&self.state.syncd_pid(id), &format!("{pid}\n"))?;
        tracing::info!(director = id.letter(), pid, netns = %netns, preempt, "tandem-syncd started");
        self.syncds.retain(|s| s.0 != id);
        self.syncds.push((id, Some(child), pid));
        Ok(())
    }

    /// SIGKILL of director `id`'s syncd alone and a new one (`preempt` as given).
    pub fn restart_syncd(&mut self, id: DirectorId, preempt: bool) -> Result<()> {
        for s in self.syncds.iter_mut().filter(|s| s.0 == id) {
            process::signal(s.2, libc::SIGKILL);
            if let Some(mut c) = s.1.take() {
                let _ = c.wait();
            }
        }
        let syncd = crate::pair::locate_syncd()?;
        self.spawn_syncd(&syncd, id, preempt)
    }

    /// Restarts director `id` as a box that comes back: SIGKILL of whatever of it still runs,
    /// then its dataplane from the same configuration (waiting until it is ready), its
    /// services again with `tandemctl`, and its syncd (`preempt` as given). Bounded by
    /// `timeout` for the dataplane's readiness.
    pub fn restart_director(
        &mut self,
        id: DirectorId,
        preempt: bool,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<()> {
        let binary = self
            .binary
            .clone()
            .ok_or_else(|| Error::Topology("the rack was started without dataplanes".into()))?;
        self.kill_director(id);
        let index = self
            .directors
            .iter()
            .position(|d| d.id == id)
            .ok_or_else(|| Error::Topology(format!("director {} was not started", id.letter())))?;
        // Readiness is a fresh stats file: the dead process's one must not count.
        let _ = std::fs::remove_file(self.state.stats(id));
        let netns = self.directors[index].netns.clone();
        let child =
            process::spawn_in_netns(&netns, &binary, &self.state.config(id), &self.state.log(id))?;
        let pid = child.id();
        write_file(&self.state.pid(id), &format!("{pid}\n"))?;
        tracing::info!(director = id.letter(), pid, netns = %netns, "dataplane restarted");
        self.directors[index].child = Some(child);
        self.directors[index].pid = pid;
        self.wait_ready(index, timeout, cancel)?;
        let list = self
            .services
            .iter()
            .find(|s| s.0 == id)
            .map(|s| s.1.clone())
            .unwrap_or_default();
        if let Some(ctl) = self.ctl(id) {
            ctl.apply(&list)?;
        }
        if self.syncds.iter().any(|s| s.0 == id) {
            let syncd = crate::pair::locate_syncd()?;
            self.spawn_syncd(&syncd, id, preempt)?;
        }
        Ok(())
    }

    /// Director `id`'s syncd status file, if it can be read.
    pub fn syncd_status(&self, id: DirectorId) -> Option<crate::pair::SyncdStatus> {
        crate::pair::SyncdStatus::read(&self.state.syncd_status(id)).ok()
    }

    /// SIGKILL of director `id`'s dataplane and syncd, as a crashed box. Their children are
    /// reaped. Returns what was killed.
    pub fn kill_director(&mut self, id: DirectorId) -> Vec<String> {
        let mut killed = Vec::new();
        for d in self.directors.iter_mut().filter(|d| d.id == id) {
            if process::signal(d.pid, libc::SIGKILL) {
                killed.push(format!("dataplane pid {}", d.pid));
            }
        }
        for s in self.syncds.iter_mut().filter(|s| s.0 == id) {
            if process::signal(s.2, libc::SIGKILL) {
                killed.push(format!("syncd pid {}", s.2));
            }
        }
        for d in self.directors.iter_mut().filter(|d| d.id == id) {
            if let Some(mut c) = d.child.take() {
                let _ = c.wait();
            }
        }
        for s in self.syncds.iter_mut().filter(|s| s.0 == id) {
            if let Some(mut c) = s.1.take() {
                let _ = c.wait();
            }
        }
        killed
    }

    /// Reaps director `id`'s dataplane and syncd after something else killed them (a rack
    /// description's `kill` command): waits at most `bound` for each to exit; one that is
    /// still running is left as it is (and stopped at teardown).
    pub fn reap(&mut self, id: DirectorId, bound: Duration) {
        let deadline = Instant::now() + bound;
        let children = self
            .directors
            .iter_mut()
            .filter(|d| d.id == id)
            .map(|d| &mut d.child)
            .chain(
                self.syncds
                    .iter_mut()
                    .filter(|s| s.0 == id)
                    .map(|s| &mut s.1),
            );
        for slot in children {
            let Some(child) = slot.as_mut() else {
                continue;
            };
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        tracing::debug!(director = id.letter(), %status, "reaped");
                        *slot = None;
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Ok(None) => {
                        tracing::warn!(
                            director = id.letter(),
                            pid = child.id(),
                            "still running after the kill command"
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(director = id.letter(), error = %e, "reaping");
                        break;
                    }
                }
            }
        }
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

    /// The pids of the helpers started (`serve-rs1`, `decap-rs1`, ...).
    pub fn helper_pids(&self) -> Vec<(String, u32)> {
        self.helpers
            .iter()
            .map(|h| (h.name.clone(), h.pid))
            .collect()
    }

    /// The `tandem-rack` binary the rack runs in its namespaces, if it was found.
    pub fn tool(&self) -> Option<&Path> {
        self.tool.as_deref()
    }

    /// The counters of real server `host`'s IPIP decapsulator.
    pub fn decap_stats(&self, host: &str) -> Result<DecapStats> {
        let path = self.state.decap_stats(host);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        DecapStats::parse(&text)
    }

    /// Runs `tandem-rack client` in the client's namespace and returns its report.
    pub fn run_client(&self, opts: &ClientOptions) -> Result<ClientReport> {
        self.run_client_in(&self.client_netns(), opts)
    }

    /// Runs `tandem-rack client` in namespace `netns` (bounded by the client's own timeout plus
    /// a margin) and returns its report.
    pub fn run_client_in(&self, netns: &str, opts: &ClientOptions) -> Result<ClientReport> {
        opts.validate()?;
        let tool = match &self.tool {
            Some(t) => t.clone(),
            None => process::locate_tool(None)?,
        };
        run_client(&tool, netns, opts)
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
        for (id, child, _) in &mut self.syncds {
            if let Some(mut c) = child.take() {
                match process::stop_child(&mut c, HELPER_GRACE) {
                    Ok((how, status)) => {
                        tracing::debug!(director = id.letter(), ?how, %status, "syncd stopped");
                    }
                    Err(e) => tracing::warn!(director = id.letter(), error = %e, "stopping syncd"),
                }
            }
        }
        // Our own children first: they are reaped here, so they never linger as zombies.
        for h in &mut self.helpers {
            if let Some(mut child) = h.child.take() {
                match process::stop_child(&mut child, HELPER_GRACE) {
                    Ok((how, status)) => {
                        tracing::debug!(helper = %h.name, ?how, %status, "helper stopped");
                    }
                    Err(e) => tracing::warn!(helper = %h.name, error = %e, "stopping helper"),
                }
            }
        }
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

/// The machine-wide lock of the virtual-rack tests ([`tests_lock`]): a directory.
pub const TESTS_LOCK: &str = "/run/lock/tandem-rack-tests";

/// The machine-wide lock of the virtual-rack tests, held until dropped ([`tests_lock`]).
#[derive(Debug)]
pub struct TestsLock {
    dir: PathBuf,
}

impl Drop for TestsLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Takes the machine-wide lock of the virtual-rack tests. Their racks carry fixed prefixes
/// and each first tears down what its prefix left, so two test runs on one machine (two
/// sessions, two CI jobs) would tear each other's racks down; with the lock the second waits
/// for the first (saying so on stdout). The lock is a directory made atomically, holding the
/// holder's pid: a lock whose holder is gone (killed before it could remove it) is taken
/// over, as is one left without a pid for more than 10 s.
pub fn tests_lock() -> std::io::Result<TestsLock> {
    lock_dir(Path::new(TESTS_LOCK))
}

/// [`tests_lock`] at `dir` (tests lock elsewhere).
pub fn lock_dir(dir: &Path) -> std::io::Result<TestsLock> {
    let dir = dir.to_path_buf();
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut said = false;
    loop {
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                let lock = TestsLock { dir };
                std::fs::write(lock.dir.join("pid"), std::process::id().to_string())?;
                return Ok(lock);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(dir.join("pid"))
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok());
                let stale = match holder {
                    Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
                    // Made but its pid not written yet, or never: stale after 10 s.
                    None => std::fs::metadata(&dir)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(10)),
                };
                if stale {
                    let _ = std::fs::remove_dir_all(&dir);
                    continue;
                }
                if !said {
                    println!("waiting for {}: another run holds it", dir.display());
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
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
    for (helper, path) in state.helper_pid_files() {
        let Some(pid) = process::read_pid(&path) else {
            continue;
        };
        if process::is_rack_helper(pid, state.path()) {
            let how = process::stop_pid(pid, HELPER_GRACE);
            done.stopped.push(format!("{helper} pid {pid} {how:?}"));
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
    /// Each helper (`serve-rs1`, `decap-rs1`, ...).
    pub helpers: Vec<HelperStatus>,
}

/// One helper process in [`RackStatus`].
#[derive(Clone, Debug, Serialize)]
pub struct HelperStatus {
    /// `serve-rs1`, `decap-rs1`.
    pub helper: String,
    /// Its pid file's pid.
    pub pid: Option<u32>,
    /// Whether that pid is this rack's helper and running.
    pub alive: bool,
    /// Its log file.
    pub log: String,
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
    /// Its last counters per worker lcore (non-zero ones).
    pub lcores: Vec<LcoreStats>,
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
                lcores: stats
                    .as_ref()
                    .map(|s| {
                        s.lcores
                            .iter()
                            .map(|l| LcoreStats {
                                lcore: l.lcore,
                                counters: l.counters.nonzero(),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                total: stats.map(|s| s.total.nonzero()),
                log: Some(state.log(id).display().to_string()),
            }
        })
        .collect();
    let helpers = state
        .helper_pid_files()
        .into_iter()
        .map(|(helper, path)| {
            let pid = process::read_pid(&path);
            HelperStatus {
                alive: pid.is_some_and(|p| process::is_rack_helper(p, state.path())),
                pid,
                log: state.helper_log(&helper).display().to_string(),
                helper,
            }
        })
        .collect();
    Ok(RackStatus {
        prefix: prefix.to_string(),
        namespaces,
        state_dir: state_exists.then(|| state.path().display().to_string()),
        meta,
        directors,
        helpers,
    })
}

/// Runs the client `tool` (`tandem-rack client`) with `opts` in namespace `netns`, bounded by
/// the client's own timeout plus a margin, and returns its report.
pub(crate) fn run_client(tool: &Path, netns: &str, opts: &ClientOptions) -> Result<ClientReport> {
    let mut argv = vec![tool.display().to_string()];
    argv.extend(opts.to_args());
    let cmd = Cmd::in_netns(netns, argv).timeout(opts.timeout + Duration::from_secs(15));
    let out = cmd.output()?;
    ClientReport::parse(&out.stdout).map_err(|e| Error::Command {
        command: cmd.display(),
        status: out.status.to_string(),
        stderr: format!("{e}; stderr: {}", out.stderr.trim()),
    })
}
