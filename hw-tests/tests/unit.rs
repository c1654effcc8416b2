//! Unit tests of the rack's pure parts: naming, the topology plan, config generation, and the
//! parsers of `ping`, `ip -j`, `tcpdump` and the dataplane's stats file. No root, no network.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use tandem_hw_tests::Error;
use tandem_hw_tests::config::{
    self, DirectorConfig, Lcores, Pmd, director_config, director_lcores, parse_cpu_list,
};
use tandem_hw_tests::demo::{Check, DemoReport};
use tandem_hw_tests::net::{Ipv4Cidr, normalize_mac};
use tandem_hw_tests::probe::{parse_addrs, parse_arp_lines, parse_neighbours, parse_ping};
use tandem_hw_tests::process::locate_dataplane_with;
use tandem_hw_tests::rack::{
    DirectorId, Mode, RackSpec, StateDir, dpdk_runtime_dir, parse_netns_list,
};
use tandem_hw_tests::stats::Stats;
use tandem_hw_tests::topology::{IFNAME_MAX, Owner, Prefix, Route, Rule, Sysctl, Topology};

const EXAMPLE: &str = include_str!("../../dataplane/examples/director.toml");

fn prefix(s: &str) -> Prefix {
    Prefix::new(s).expect("valid prefix")
}

#[test]
fn prefix_accepts_short_lowercase_names_only() {
    for ok in ["tnd", "trk1", "a", "abcdefghijkl"] {
        assert!(Prefix::new(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "1tnd",
        "Tnd",
        "t-n",
        "t_n",
        "abcdefghijklm",
        "tnd/x",
        "t n",
    ] {
        assert!(
            matches!(Prefix::new(bad), Err(Error::InvalidPrefix(_))),
            "{bad}"
        );
    }
    assert_eq!(Prefix::default().as_str(), "tnd");
}

#[test]
fn namespace_names_derive_from_prefix_and_belong_unambiguously() {
    let p = prefix("trk1");
    assert_eq!(p.netns("client"), "trk1-client");
    assert_eq!(p.dpdk_file_prefix("a"), "trk1-a");
    assert!(p.owns_netns("trk1-client"));
    assert!(p.owns_netns("trk1-rs3"));
    // Another rack whose prefix starts the same, and foreign namespaces, are not ours.
    assert!(!p.owns_netns("trk10-client"));
    assert!(!p.owns_netns("trk1"));
    assert!(!p.owns_netns("trk1-"));
    assert!(!p.owns_netns("trk1-x-y"));
    assert!(!p.owns_netns("other-client"));
}

#[test]
fn default_rack_has_the_specified_hosts_and_addresses() {
    let spec = RackSpec::default_rack();
    spec.validate().expect("default rack is valid");
    let p = prefix("tnd");
    assert_eq!(
        spec.topology.namespaces(&p),
        [
            "tnd-sw",
            "tnd-client",
            "tnd-dira",
            "tnd-dirb",
            "tnd-rtr",
            "tnd-rs1",
            "tnd-rs2",
            "tnd-rs3"
        ]
    );
    assert_eq!(spec.topology.bridges, ["br-out", "br-in"]);
    assert_eq!(spec.vip, Ipv4Addr::new(203, 0, 113, 10));
    assert_eq!(spec.mode_vip(Mode::Nat), Ipv4Addr::new(203, 0, 113, 10));
    assert_eq!(spec.mode_vip(Mode::Tun), Ipv4Addr::new(203, 0, 113, 20));
    assert_eq!(spec.mode_vip(Mode::Dr), Ipv4Addr::new(203, 0, 113, 30));
    assert_eq!(spec.inside_gateway, Ipv4Addr::new(172, 16, 0, 254));

    let client = spec.topology.host("client").expect("client");
    assert_eq!(client.interfaces.len(), 1);
    assert_eq!(client.interfaces[0].name, "eth0");
    assert_eq!(client.interfaces[0].bridge, "br-out");
    assert_eq!(
        client.interfaces[0].owner,
        Owner::Kernel {
            addresses: vec!["203.0.113.2/24".parse().expect("cidr")]
        }
    );
    for (rs, addr) in [
        ("rs1", "172.16.0.2/24"),
        ("rs2", "172.16.0.3/24"),
        ("rs3", "172.16.0.4/24"),
    ] {
        let h = spec.topology.host(rs).expect("real server");
        assert_eq!(h.interfaces[0].bridge, "br-in");
        assert_eq!(
            h.interfaces[0].owner,
            Owner::Kernel {
                addresses: vec![addr.parse().expect("cidr")]
            }
        );
        // NAT replies via the director's inside gateway; replies from the TUN and DR VIPs via
        // the router (table 100).
        assert_eq!(h.routes.len(), 2);
        assert_eq!(
            h.routes[0],
            Route::default_via(Ipv4Addr::new(172, 16, 0, 254))
        );
        assert_eq!(
            h.routes[1],
            Route::default_via(Ipv4Addr::new(172, 16, 0, 1)).in_table(100)
        );
        assert_eq!(
            h.rules,
            [
                Rule {
                    from: Ipv4Addr::new(203, 0, 113, 20),
                    table: 100
                },
                Rule {
                    from: Ipv4Addr::new(203, 0, 113, 30),
                    table: 100
                }
            ]
        );
        let lo: Vec<String> = h.loopback.iter().map(ToString::to_string).collect();
        assert_eq!(lo, ["203.0.113.20/32", "203.0.113.30/32"]);
        assert_eq!(h.tun_devices, ["tnl0"]);
        for (k, v) in [
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.eth0.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
            ("net.ipv4.conf.eth0.arp_announce", "2"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.tnl0.rp_filter", "0"),
        ] {
            assert!(h.sysctls.contains(&Sysctl::new(k, v)), "{rs}: {k}={v}");
        }
        let r = spec.real_server(rs).expect("real server spec");
        assert_eq!(r.address.to_string(), addr.trim_end_matches("/24"));
        assert_eq!(r.tcp_ports, [80, 8000, 21]);
        assert_eq!(r.udp_ports, [53]);
        assert_eq!(r.tunnel.as_deref(), Some("tnl0"));
    }
    let rtr = spec.topology.host("rtr").expect("router");
    let ifs: Vec<_> = rtr
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.bridge.as_str(), i.owner.clone()))
        .collect();
    assert_eq!(
        ifs,
        [
            (
                "eth0",
                "br-out",
                Owner::Kernel {
                    addresses: vec!["203.0.113.1/24".parse().expect("cidr")]
                }
            ),
            (
                "eth1",
                "br-in",
                Owner::Kernel {
                    addresses: vec!["172.16.0.1/24".parse().expect("cidr")]
                }
            )
        ]
    );
    assert!(rtr.sysctls.contains(&Sysctl::new("net.ipv4.ip_forward", 1)));
    assert!(
        rtr.sysctls
            .contains(&Sysctl::new("net.ipv4.conf.all.rp_filter", 0))
    );
    for (host, id, out, inside) in [
        ("dira", DirectorId::A, "203.0.113.11/24", "172.16.0.251/24"),
        ("dirb", DirectorId::B, "203.0.113.12/24", "172.16.0.252/24"),
    ] {
        let h = spec.topology.host(host).expect("director host");
        let names: Vec<_> = h
            .interfaces
            .iter()
            .map(|i| (i.name.as_str(), i.bridge.as_str()))
            .collect();
        assert_eq!(names, [("out0", "br-out"), ("in0", "br-in")]);
        assert!(
            h.interfaces.iter().all(|i| i.owner == Owner::Dpdk),
            "{host}: kernel gets no address"
        );
        let d = spec.director(id).expect("director");
        assert_eq!(d.host, host);
        assert_eq!(d.port("outside").expect("outside").address.to_string(), out);
        assert_eq!(
            d.port("inside").expect("inside").address.to_string(),
            inside
        );
    }
    // Only A owns the VIPs for now: NAT, the inside gateway, TUN, DR.
    let a = spec.director(DirectorId::A).expect("A");
    let vips: Vec<(String, &str)> = a
        .vips
        .iter()
        .map(|v| (v.address.to_string(), v.port.as_str()))
        .collect();
    assert_eq!(
        vips,
        [
            ("203.0.113.10".to_owned(), "outside"),
            ("172.16.0.254".to_owned(), "inside"),
            ("203.0.113.20".to_owned(), "outside"),
            ("203.0.113.30".to_owned(), "outside")
        ]
    );
    let b = spec.director(DirectorId::B).expect("B");
    assert!(b.vips.is_empty());
    assert!(
        b.services.is_empty(),
        "the dataplane refuses services without their VIP"
    );
    for d in [a, b] {
        assert_eq!(d.routes.len(), 1);
        assert_eq!(d.routes[0].prefix.to_string(), "0.0.0.0/0");
        assert_eq!(d.routes[0].gateway, Ipv4Addr::new(203, 0, 113, 1));
    }
}

#[test]
fn interface_names_fit_ifnamsiz() {
    let spec = RackSpec::default_rack();
    for h in &spec.topology.hosts {
        for i in &h.interfaces {
            let port = Topology::switch_port(&h.name, &i.name);
            assert!(port.len() <= IFNAME_MAX, "{port}");
            assert!(i.name.len() <= IFNAME_MAX);
        }
    }
    assert_eq!(Topology::switch_port("client", "eth0"), "client-eth0");
}

#[test]
fn topology_validation_names_the_problem() {
    let mut spec = RackSpec::default_rack();
    spec.topology.hosts[0].interfaces[0].name = "averyveryverylongname".into();
    let err = spec.validate().expect_err("too long").to_string();
    assert!(err.contains("averyveryverylongname"), "{err}");

    let mut spec = RackSpec::default_rack();
    spec.topology.hosts[0].interfaces[0].bridge = "br-nowhere".into();
    assert!(
        spec.validate()
            .expect_err("bridge")
            .to_string()
            .contains("br-nowhere")
    );

    let mut spec = RackSpec::default_rack();
    spec.topology.hosts[1].name = "dir-a".into();
    assert!(spec.validate().is_err());

    let mut spec = RackSpec::default_rack();
    let dup = spec.topology.hosts[0].clone();
    spec.topology.hosts.push(dup);
    assert!(
        spec.validate()
            .expect_err("dup")
            .to_string()
            .contains("twice")
    );

    // A director whose port is not a DPDK interface.
    let mut spec = RackSpec::default_rack();
    spec.directors[0].ports[0].iface = "eth9".into();
    assert!(
        spec.validate()
            .expect_err("port")
            .to_string()
            .contains("eth9")
    );

    // A TUN device named like an interface, a sysctl that is not key=value, a real server
    // whose address or tunnel does not match its host.
    let rs1 = |spec: &mut RackSpec| -> usize {
        spec.topology
            .hosts
            .iter()
            .position(|h| h.name == "rs1")
            .expect("rs1")
    };
    let mut spec = RackSpec::default_rack();
    let i = rs1(&mut spec);
    spec.topology.hosts[i].tun_devices.push("eth0".into());
    assert!(
        spec.validate()
            .expect_err("dup")
            .to_string()
            .contains("eth0")
    );
    let mut spec = RackSpec::default_rack();
    let i = rs1(&mut spec);
    spec.topology.hosts[i]
        .sysctls
        .push(Sysctl::new("net.ipv4.ip_forward", "1; reboot"));
    assert!(
        spec.validate()
            .expect_err("sysctl")
            .to_string()
            .contains("sysctl")
    );
    let mut spec = RackSpec::default_rack();
    spec.real_servers[0].address = Ipv4Addr::new(172, 16, 0, 99);
    assert!(
        spec.validate()
            .expect_err("addr")
            .to_string()
            .contains("172.16.0.99")
    );
    let mut spec = RackSpec::default_rack();
    spec.real_servers[0].tunnel = Some("tnl9".into());
    assert!(
        spec.validate()
            .expect_err("tun")
            .to_string()
            .contains("tnl9")
    );
    let mut spec = RackSpec::default_rack();
    spec.router = "nowhere".into();
    assert!(
        spec.validate()
            .expect_err("router")
            .to_string()
            .contains("nowhere")
    );
}

#[test]
fn plan_wires_the_router_and_the_real_servers_for_tun_and_dr() {
    let spec = RackSpec::default_rack();
    let plan: Vec<Vec<String>> = spec
        .topology
        .plan(&prefix("trk1"))
        .into_iter()
        .map(|s| s.argv)
        .collect();
    let pos = |argv: &[&str]| {
        plan.iter()
            .position(|s| s.iter().map(String::as_str).eq(argv.iter().copied()))
            .unwrap_or_else(|| panic!("not in the plan: {}", argv.join(" ")))
    };
    let exec = |ns: &str, kv: &str| pos(&["ip", "netns", "exec", ns, "sysctl", "-qw", kv]);
    // The router forwards between its two legs.
    pos(&[
        "ip", "-n", "trk1-sw", "link", "set", "rtr-eth1", "master", "br-in",
    ]);
    pos(&[
        "ip",
        "-n",
        "trk1-rtr",
        "addr",
        "add",
        "172.16.0.1/24",
        "dev",
        "eth1",
    ]);
    exec("trk1-rtr", "net.ipv4.ip_forward=1");
    exec("trk1-rtr", "net.ipv4.conf.eth1.rp_filter=0");
    // rs1: the VIPs on lo, the TUN device up before its rp_filter is set, DR's ARP rules on
    // eth0 after eth0 exists, the direct-reply table and the rules that select it.
    let eth0_up = pos(&["ip", "-n", "trk1-rs1", "link", "set", "eth0", "up"]);
    let tun_add = pos(&[
        "ip", "-n", "trk1-rs1", "tuntap", "add", "dev", "tnl0", "mode", "tun",
    ]);
    let tun_up = pos(&["ip", "-n", "trk1-rs1", "link", "set", "tnl0", "up"]);
    let tun_rp = exec("trk1-rs1", "net.ipv4.conf.tnl0.rp_filter=0");
    assert!(tun_add < tun_up && tun_up < tun_rp);
    let arp_ignore = exec("trk1-rs1", "net.ipv4.conf.eth0.arp_ignore=1");
    let arp_announce = exec("trk1-rs1", "net.ipv4.conf.eth0.arp_announce=2");
    assert!(eth0_up < arp_ignore && eth0_up < arp_announce);
    exec("trk1-rs1", "net.ipv4.conf.all.arp_ignore=1");
    exec("trk1-rs1", "net.ipv4.conf.all.arp_announce=2");
    let lo_vip = pos(&[
        "ip",
        "-n",
        "trk1-rs1",
        "addr",
        "add",
        "203.0.113.30/32",
        "dev",
        "lo",
    ]);
    assert!(
        arp_ignore
            < pos(&[
                "ip",
                "-n",
                "trk1-rs1",
                "route",
                "add",
                "default",
                "via",
                "172.16.0.254"
            ])
    );
    assert!(lo_vip > eth0_up);
    pos(&[
        "ip",
        "-n",
        "trk1-rs1",
        "addr",
        "add",
        "203.0.113.20/32",
        "dev",
        "lo",
    ]);
    let table = pos(&[
        "ip",
        "-n",
        "trk1-rs1",
        "route",
        "add",
        "default",
        "via",
        "172.16.0.1",
        "table",
        "100",
    ]);
    let rule = pos(&[
        "ip",
        "-n",
        "trk1-rs1",
        "rule",
        "add",
        "from",
        "203.0.113.20",
        "lookup",
        "100",
    ]);
    pos(&[
        "ip",
        "-n",
        "trk1-rs1",
        "rule",
        "add",
        "from",
        "203.0.113.30",
        "lookup",
        "100",
    ]);
    assert!(table < rule);
    // The client and the directors get none of it.
    assert!(
        !plan
            .iter()
            .any(|a| a.join(" ").starts_with("ip -n trk1-client rule"))
    );
    assert!(
        !plan
            .iter()
            .any(|a| a.join(" ").contains("trk1-dira tuntap"))
    );
}

fn has(plan: &[Vec<String>], argv: &[&str]) -> bool {
    plan.iter()
        .any(|s| s.iter().map(String::as_str).eq(argv.iter().copied()))
}

#[test]
fn plan_builds_everything_inside_namespaces() {
    let spec = RackSpec::default_rack();
    let p = prefix("trk1");
    let steps = spec.topology.plan(&p);
    let plan: Vec<Vec<String>> = steps.iter().map(|s| s.argv.clone()).collect();
    // Every command names a namespace: nothing is created in the caller's.
    for argv in &plan {
        let joined = argv.join(" ");
        assert!(
            joined.starts_with("ip netns add trk1-")
                || joined.starts_with("ip -n trk1-")
                || joined.starts_with("ip netns exec trk1-"),
            "{joined}"
        );
    }
    // The switch namespace comes first; IPv6 is off before interfaces exist.
    assert_eq!(plan[0], ["ip", "netns", "add", "trk1-sw"]);
    assert!(has(
        &plan,
        &[
            "ip",
            "netns",
            "exec",
            "trk1-dira",
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.disable_ipv6=1"
        ]
    ));
    assert!(has(
        &plan,
        &["ip", "-n", "trk1-client", "link", "set", "lo", "up"]
    ));
    assert!(has(
        &plan,
        &[
            "ip",
            "-n",
            "trk1-sw",
            "link",
            "add",
            "br-out",
            "type",
            "bridge",
            "mcast_snooping",
            "0"
        ]
    ));
    assert!(has(
        &plan,
        &[
            "ip",
            "-n",
            "trk1-sw",
            "link",
            "add",
            "dira-out0",
            "type",
            "veth",
            "peer",
            "name",
            "out0",
            "netns",
            "trk1-dira"
        ]
    ));
    assert!(has(
        &plan,
        &[
            "ip",
            "-n",
            "trk1-sw",
            "link",
            "set",
            "dira-out0",
            "master",
            "br-out"
        ]
    ));
    assert!(has(
        &plan,
        &[
            "ip", "-n", "trk1-sw", "link", "set", "dirb-in0", "master", "br-in"
        ]
    ));
    assert!(has(
        &plan,
        &[
            "ip",
            "netns",
            "exec",
            "trk1-dira",
            "sysctl",
            "-qw",
            "net.ipv6.conf.out0.disable_ipv6=1"
        ]
    ));
    assert!(has(
        &plan,
        &["ip", "-n", "trk1-dira", "link", "set", "out0", "up"]
    ));
    assert!(has(
        &plan,
        &[
            "ip",
            "-n",
            "trk1-client",
            "addr",
            "add",
            "203.0.113.2/24",
            "dev",
            "eth0"
        ]
    ));
    assert!(has(
        &plan,
        &[
            "ip",
            "-n",
            "trk1-rs2",
            "addr",
            "add",
            "172.16.0.3/24",
            "dev",
            "eth0"
        ]
    ));
    assert!(has(
        &plan,
        &[
            "ip",
            "-n",
            "trk1-rs3",
            "route",
            "add",
            "default",
            "via",
            "172.16.0.254"
        ]
    ));
    // The DPDK ports never get an address.
    assert!(!plan.iter().any(|a| a.iter().any(|x| x == "addr")
        && (a.contains(&"out0".to_owned()) || a.contains(&"in0".to_owned()))));
    // The disable_ipv6 of an interface comes before it is set up.
    let pos = |argv: &[&str]| {
        plan.iter()
            .position(|s| s.iter().map(String::as_str).eq(argv.iter().copied()))
    };
    let sysctl = pos(&[
        "ip",
        "netns",
        "exec",
        "trk1-dira",
        "sysctl",
        "-qw",
        "net.ipv6.conf.out0.disable_ipv6=1",
    ]);
    let up = pos(&["ip", "-n", "trk1-dira", "link", "set", "out0", "up"]);
    assert!(sysctl < up);
    // Only the ethtool tweaks are optional.
    for s in &steps {
        assert_eq!(
            s.required,
            s.argv.get(4).map(String::as_str) != Some("ethtool"),
            "{:?}",
            s.argv
        );
    }
}

#[test]
fn generated_config_of_director_a_is_the_example() {
    // The example is the contract: generated with the example's own names, the parts the rack
    // generates (EAL, dataplane, ports, the VIP) must be identical to it.
    let example = config::from_toml(EXAMPLE).expect("example is a valid dataplane config");
    let spec = RackSpec::default_rack();
    let a = spec.director(DirectorId::A).expect("A");
    let generated = director_config(
        a,
        &prefix("tandem"),
        Pmd::AfXdp,
        &Lcores::single(0),
        Path::new("/run/tandem/a/stats.json"),
    );
    assert_eq!(generated.eal, example.eal);
    assert_eq!(generated.dataplane, example.dataplane);
    assert_eq!(generated.ports, example.ports);
    assert_eq!(generated.vips[0], example.vips[0]);
    // The inside gateway, the default route and seed 002's NAT services are the example's too.
    assert_eq!(generated.vips[1], example.vips[1]);
    assert_eq!(generated.routes, example.routes);
    assert_eq!(generated.services[..2], example.services[..]);
    // And what we write parses back, validated by the dataplane's own parser, to the same thing.
    let text = config::to_toml(&generated).expect("serializes");
    let back: DirectorConfig = config::from_toml(&text).expect("round trip");
    assert_eq!(back, generated);
}

#[test]
fn generated_config_of_director_b_and_af_packet() {
    let spec = RackSpec::default_rack();
    let b = spec.director(DirectorId::B).expect("B");
    let state = StateDir::for_prefix(&prefix("trk1"));
    let cfg = director_config(
        b,
        &prefix("trk1"),
        Pmd::AfPacket,
        &Lcores::single(1),
        &state.stats(DirectorId::B),
    );
    assert_eq!(
        cfg.eal.args,
        [
            "-l",
            "1",
            "--no-pci",
            "--no-huge",
            "-m",
            "512",
            "--file-prefix",
            "trk1-b",
            "--vdev",
            "net_af_packet0,iface=out0",
            "--vdev",
            "net_af_packet1,iface=in0"
        ]
    );
    assert_eq!(
        cfg.dataplane.stats_file.as_deref(),
        Some("/run/tandem-rack/trk1/b.stats.json")
    );
    assert_eq!(cfg.dataplane.log_level, "info");
    assert_eq!(cfg.ports[0].device, "net_af_packet0");
    assert_eq!(cfg.ports[0].address.to_string(), "203.0.113.12/24");
    assert_eq!(cfg.ports[1].name, "inside");
    assert_eq!(cfg.ports[1].address.to_string(), "172.16.0.252/24");
    assert!(cfg.vips.is_empty(), "B does not own the VIP yet");
    assert!(!cfg.to_toml().expect("toml").contains("[[vip]]"));
}

#[test]
fn state_paths_and_dpdk_dirs() {
    let p = prefix("trk1");
    let st = StateDir::for_prefix(&p);
    assert_eq!(st.path(), Path::new("/run/tandem-rack/trk1"));
    assert_eq!(
        st.config(DirectorId::A),
        Path::new("/run/tandem-rack/trk1/a.toml")
    );
    assert_eq!(
        st.log(DirectorId::B),
        Path::new("/run/tandem-rack/trk1/b.log")
    );
    assert_eq!(
        st.pid(DirectorId::A),
        Path::new("/run/tandem-rack/trk1/a.pid")
    );
    assert_eq!(
        st.stats(DirectorId::A),
        Path::new("/run/tandem-rack/trk1/a.stats.json")
    );
    assert_eq!(
        dpdk_runtime_dir(&p, DirectorId::B),
        Path::new("/var/run/dpdk/trk1-b")
    );
}

#[test]
fn lcores_follow_the_machine() {
    let one = |online: &[u32]| {
        (
            director_lcores(online, DirectorId::A, 1).eal_args(),
            director_lcores(online, DirectorId::B, 1).eal_args(),
        )
    };
    let l = |s: &str| vec!["-l".to_owned(), s.to_owned()];
    assert_eq!(one(&[0, 1]), (l("0"), l("1")));
    assert_eq!(one(&[0, 1, 2, 3]), (l("0"), l("1")));
    assert_eq!(one(&[0]), (l("0"), l("0")));
    // Several workers: lcores 0..N on their own CPUs when there are enough, else shared.
    let a2 = director_lcores(&[0, 1], DirectorId::A, 2);
    assert_eq!((a2.count(), a2.ids()), (2, vec![0, 1]));
    assert_eq!(a2.eal_args(), l("0,1"));
    assert_eq!(
        director_lcores(&[0, 1, 2, 3], DirectorId::A, 3).eal_args(),
        l("0,1,2")
    );
    let a4 = director_lcores(&[0, 1], DirectorId::A, 4);
    assert_eq!(a4.count(), 4);
    assert_eq!(a4.eal_args(), ["--lcores", "0@0,1@1,2@0,3@1"]);
    assert_eq!(
        Lcores::spread(2, &[2, 3]).eal_args(),
        ["--lcores", "0@2,1@3"]
    );
    assert_eq!(Lcores::spread(2, &[]).eal_args(), ["--lcores", "0@0,1@0"]);
    assert_eq!(parse_cpu_list("0-1\n").expect("list"), [0, 1]);
    assert_eq!(parse_cpu_list("0,2-4,7").expect("list"), [0, 2, 3, 4, 7]);
    assert_eq!(parse_cpu_list("0").expect("list"), [0]);
    assert!(parse_cpu_list("3-1").is_err());
    assert!(parse_cpu_list("x").is_err());
    assert!(!config::online_cpus().is_empty());
}

#[test]
fn pmd_names() {
    assert_eq!("af_xdp".parse::<Pmd>().expect("pmd"), Pmd::AfXdp);
    assert_eq!("af_packet".parse::<Pmd>().expect("pmd"), Pmd::AfPacket);
    assert!("pcap".parse::<Pmd>().is_err());
    assert_eq!(Pmd::AfXdp.to_string(), "af_xdp");
    assert_eq!(
        Pmd::AfXdp.vdev_arg(1, "in0", 1),
        "net_af_xdp1,iface=in0,start_queue=0,queue_count=1"
    );
    assert_eq!(
        Pmd::AfXdp.vdev_arg(0, "out0", 2),
        "net_af_xdp0,iface=out0,start_queue=0,queue_count=2"
    );
    assert_eq!(
        Pmd::AfPacket.vdev_arg(0, "out0", 1),
        "net_af_packet0,iface=out0"
    );
    assert_eq!(
        Pmd::AfPacket.vdev_arg(1, "in0", 2),
        "net_af_packet1,iface=in0,qpairs=2"
    );
    // Several workers need several queues per veth: AF_PACKET only.
    assert_eq!(Pmd::default_for(1), Pmd::AfXdp);
    assert_eq!(Pmd::default_for(2), Pmd::AfPacket);
    assert!(Pmd::AfXdp.check_workers(1).is_ok());
    assert!(Pmd::AfPacket.check_workers(4).is_ok());
    let e = Pmd::AfXdp
        .check_workers(2)
        .expect_err("af_xdp with 2 workers");
    assert!(e.to_string().contains("--pmd af_packet"), "{e}");
}

#[test]
fn ping_output_all_answered() {
    let text = "PING 203.0.113.10 (203.0.113.10) 56(84) bytes of data.\n\
64 bytes from 203.0.113.10: icmp_seq=1 ttl=64 time=0.140 ms\n\
64 bytes from 203.0.113.10: icmp_seq=2 ttl=64 time=0.074 ms\n\
64 bytes from 203.0.113.10: icmp_seq=3 ttl=64 time=0.077 ms\n\
\n\
--- 203.0.113.10 ping statistics ---\n\
3 packets transmitted, 3 received, 0% packet loss, time 2025ms\n\
rtt min/avg/max/mdev = 0.074/0.097/0.140/0.030 ms\n";
    let p = parse_ping(text).expect("parses");
    assert_eq!((p.sent, p.received), (3, 3));
    assert_eq!(p.rtt_avg_ms, Some(0.097));
    assert!(p.all_answered());
}

#[test]
fn ping_output_unanswered_and_errors() {
    let lost = "--- 203.0.113.99 ping statistics ---\n\
3 packets transmitted, 0 received, 100% packet loss, time 2044ms\n";
    let p = parse_ping(lost).expect("parses");
    assert_eq!((p.sent, p.received, p.rtt_avg_ms), (3, 0, None));
    assert!(!p.all_answered());

    let errors = "--- 203.0.113.99 ping statistics ---\n\
3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2051ms\npipe 3\n";
    let p = parse_ping(errors).expect("parses");
    assert_eq!((p.sent, p.received), (3, 0));

    let partial = "5 packets transmitted, 4 received, 20% packet loss, time 4005ms\n\
rtt min/avg/max/mdev = 0.050/1.250/2.000/0.500 ms, pipe 2\n";
    let p = parse_ping(partial).expect("parses");
    assert_eq!((p.sent, p.received, p.rtt_avg_ms), (5, 4, Some(1.25)));

    assert!(parse_ping("ping: connect: Network is unreachable\n").is_err());
}

#[test]
fn ip_json_neighbours() {
    let json = r#"[{"dst":"203.0.113.10","dev":"eth0","lladdr":"EA:B1:7B:A8:50:03","state":["REACHABLE"]},
                   {"dst":"203.0.113.99","dev":"eth0","state":["FAILED"]}]"#;
    let n = parse_neighbours(json).expect("parses");
    assert_eq!(n.len(), 2);
    assert_eq!(n[0].mac().as_deref(), Some("ea:b1:7b:a8:50:03"));
    assert_eq!(n[0].state, ["REACHABLE"]);
    assert_eq!(n[1].mac(), None);
    assert!(parse_neighbours("").expect("empty").is_empty());
    assert!(parse_neighbours("[]").expect("empty").is_empty());
    assert!(parse_neighbours("{not json").is_err());
}

#[test]
fn ip_json_addresses() {
    // Real output for a DPDK port (XDP attached, no address) and a kernel port.
    let dpdk = r#"[{"ifindex":2,"link_index":5,"ifname":"out0","flags":["BROADCAST","MULTICAST","PROMISC","UP","LOWER_UP"],"mtu":1500,"xdp":{"mode":1,"prog":{"id":474,"name":"xsk_def_prog","tag":"dc1bcff258c01244","jited":1},"attached":[{"mode":1,"prog":{"id":474,"name":"xsk_def_prog","tag":"dc1bcff258c01244","jited":1}}]},"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"ea:b1:7b:a8:50:03","broadcast":"ff:ff:ff:ff:ff:ff","link_netnsid":0,"addr_info":[]}]"#;
    let ifs = parse_addrs(dpdk).expect("parses");
    assert_eq!(ifs.len(), 1);
    assert_eq!(ifs[0].ifname, "out0");
    assert!(ifs[0].addr_info.is_empty());
    assert!(ifs[0].flags.iter().any(|f| f == "UP"));

    let kernel = r#"[{},{"ifindex":2,"link_index":4,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"4a:74:de:18:c0:ef","broadcast":"ff:ff:ff:ff:ff:ff","link_netnsid":0,"addr_info":[{"family":"inet","local":"203.0.113.2","prefixlen":24,"scope":"global","label":"eth0","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#;
    let ifs = parse_addrs(kernel).expect("parses");
    assert_eq!(ifs.len(), 1, "empty objects are skipped");
    assert_eq!(ifs[0].addr_info[0].local, "203.0.113.2");
    assert_eq!(ifs[0].addr_info[0].prefixlen, 24);
    assert_eq!(ifs[0].addr_info[0].family, "inet");
}

#[test]
fn tcpdump_arp_lines() {
    let lines = [
        "tcpdump: verbose output suppressed, use -v[v]... for full protocol decode",
        "19:56:44.001 ARP, Request who-has 203.0.113.10 tell 203.0.113.2, length 28",
        "19:56:44.002 ARP, Reply 203.0.113.10 is-at 86:A9:11:E5:95:71, length 28",
        "19:56:45.001 ARP, Request who-has 203.0.113.10 (ff:ff:ff:ff:ff:ff) tell 203.0.113.2, length 28",
        "19:56:46.001 ARP, Request who-has 203.0.113.12 tell 203.0.113.2, length 28",
        "3 packets captured",
    ];
    let seen = parse_arp_lines(lines);
    assert_eq!(seen.requests_for(Ipv4Addr::new(203, 0, 113, 10)), 2);
    assert_eq!(seen.requests_for(Ipv4Addr::new(203, 0, 113, 12)), 1);
    assert_eq!(
        seen.replies_for(Ipv4Addr::new(203, 0, 113, 10)),
        ["86:a9:11:e5:95:71"]
    );
    assert!(seen.replies_for(Ipv4Addr::new(203, 0, 113, 12)).is_empty());
}

const STATS: &str = r#"{"unix_ms": 1795290998480,
 "ports": [{"name":"outside","device":"net_af_xdp0","port_id":0,"mac":"F6:2F:3C:7E:19:E8","address":"203.0.113.11/24"},
           {"name":"inside","device":"net_af_xdp1","port_id":1,"mac":"86:0a:a7:4d:6c:57","address":"172.16.0.251/24"}],
 "lcores":[{"lcore":0,"counters":{"rx_packets":4,"arp_replies":1,"drops":{"not_for_us_mac":1}}}],
 "total": {"rx_packets":4,"rx_bytes":336,"tx_packets":4,"tx_bytes":336,"arp_replies":1,"icmp_echo_replies":3,
           "neighbours_learned":1,"drops":{"not_for_us_mac":1,"arp_not_for_us":0}}}"#;

#[test]
fn stats_file_parses_and_flattens() {
    let s = Stats::parse(STATS).expect("parses");
    assert_eq!(s.unix_ms, 1_795_290_998_480);
    assert_eq!(s.ports.len(), 2);
    assert_eq!(s.port_mac("outside").as_deref(), Some("f6:2f:3c:7e:19:e8"));
    assert_eq!(s.port("inside").map(|p| p.port_id), Some(1));
    assert_eq!(s.port_mac("nowhere"), None);
    assert_eq!(s.lcores[0].lcore, 0);
    assert_eq!(s.lcores[0].counters.get("drops.not_for_us_mac"), 1);
    assert_eq!(s.total.get("icmp_echo_replies"), 3);
    assert_eq!(s.total.get("drops.not_for_us_mac"), 1);
    assert_eq!(s.total.get("drops.arp_not_for_us"), 0);
    assert_eq!(s.total.get("no_such_counter"), 0);
    assert!(
        Stats::parse("{\"unix_ms\": 1}").is_err(),
        "total is required"
    );
    assert!(Stats::parse("{\"unix_ms\": 1, \"total\": {\"x\": -1}}").is_err());
}

#[test]
fn counter_deltas() {
    let before = Stats::parse(STATS).expect("parses").total;
    let after_text = STATS
        .replace("\"icmp_echo_replies\":3", "\"icmp_echo_replies\":9")
        .replace("\"arp_replies\":1,\"icmp", "\"arp_replies\":3,\"icmp");
    let after = Stats::parse(&after_text).expect("parses").total;
    let d = after.delta(&before);
    assert_eq!(d.get("icmp_echo_replies"), 6);
    assert_eq!(d.get("arp_replies"), 2);
    assert_eq!(d.get("rx_packets"), 0);
    // A restarted dataplane counts from zero again: no underflow.
    assert_eq!(before.delta(&after).get("icmp_echo_replies"), 0);
    let nz = d.nonzero();
    assert_eq!(
        nz.0.keys().collect::<Vec<_>>(),
        ["arp_replies", "icmp_echo_replies"]
    );
    assert_eq!(
        serde_json::to_string(&nz).expect("json"),
        r#"{"arp_replies":2,"icmp_echo_replies":6}"#
    );
}

#[test]
fn netns_list_output() {
    assert_eq!(
        parse_netns_list("trk1-sw (id: 3)\ntrk1-client\n\nother\n"),
        ["trk1-sw", "trk1-client", "other"]
    );
    assert!(parse_netns_list("").is_empty());
}

#[test]
fn addresses_and_macs() {
    let c: Ipv4Cidr = "203.0.113.11/24".parse().expect("cidr");
    assert_eq!(c.addr, Ipv4Addr::new(203, 0, 113, 11));
    assert_eq!(c.len, 24);
    assert_eq!(c.to_string(), "203.0.113.11/24");
    assert!(c.contains(Ipv4Addr::new(203, 0, 113, 10)));
    assert!(!c.contains(Ipv4Addr::new(172, 16, 0, 2)));
    assert!("203.0.113.11".parse::<Ipv4Cidr>().is_err());
    assert!("203.0.113.11/33".parse::<Ipv4Cidr>().is_err());
    assert_eq!(
        normalize_mac("02:00:0A:b:0c:FF").as_deref(),
        Some("02:00:0a:0b:0c:ff")
    );
    assert_eq!(
        normalize_mac("02-00-0a-0b-0c-ff").as_deref(),
        Some("02:00:0a:0b:0c:ff")
    );
    assert_eq!(normalize_mac("02:00:0a:0b:0c"), None);
    assert_eq!(normalize_mac("02:00:0a:0b:0c:fff"), None);
    assert_eq!(normalize_mac("zz:00:0a:0b:0c:ff"), None);
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-hw-unit-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn dataplane_is_found_in_the_documented_order() {
    let dir = scratch_dir("locate");
    let debug = dir.join("debug");
    let deps = debug.join("deps");
    std::fs::create_dir_all(&deps).expect("dirs");
    let in_debug = debug.join("tandem-dataplane");
    executable(&in_debug);
    let test_exe = deps.join("rack-0123");
    // From target/debug/deps, the parent directory's binary is found.
    assert_eq!(
        locate_dataplane_with(None, None, Some(test_exe.clone())).expect("found"),
        in_debug
    );
    // Next to the executable wins over the parent.
    let in_deps = deps.join("tandem-dataplane");
    executable(&in_deps);
    assert_eq!(
        locate_dataplane_with(None, None, Some(test_exe.clone())).expect("found"),
        in_deps
    );
    // The environment wins over both; --dataplane wins over the environment.
    let other = dir.join("other-dp");
    executable(&other);
    assert_eq!(
        locate_dataplane_with(
            None,
            Some(other.clone().into_os_string()),
            Some(test_exe.clone())
        )
        .expect("env"),
        other
    );
    assert_eq!(
        locate_dataplane_with(
            Some(&in_debug),
            Some(other.clone().into_os_string()),
            Some(test_exe.clone())
        )
        .expect("explicit"),
        in_debug
    );
    // A named binary that does not exist is an error naming it, not a reason to look elsewhere.
    let missing = dir.join("missing");
    let err =
        locate_dataplane_with(Some(&missing), None, Some(test_exe.clone())).expect_err("missing");
    assert!(err.to_string().contains("missing"), "{err}");
    // Nothing anywhere: the error lists the places tried.
    let empty = scratch_dir("locate-empty").join("deps");
    std::fs::create_dir_all(&empty).expect("dir");
    let err = locate_dataplane_with(None, None, Some(empty.join("t"))).expect_err("none");
    assert!(
        matches!(&err, Error::DataplaneNotFound { looked_at } if looked_at.len() == 2),
        "{err}"
    );
    assert!(err.to_string().contains("cargo build -p tandem-dataplane"));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(empty.parent().expect("parent"));
}

#[test]
fn demo_table_lists_every_check() {
    let report = DemoReport {
        checks: vec![
            Check {
                name: "vip_ping".into(),
                passed: true,
                detail: "3/3".into(),
            },
            Check {
                name: "vip_mac_is_director_a".into(),
                passed: false,
                detail: "differs".into(),
            },
        ],
        ..DemoReport::default()
    };
    let t = report.table();
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("check"));
    assert!(
        lines[1].starts_with("vip_ping") && lines[1].contains("PASS") && lines[1].ends_with("3/3")
    );
    assert!(lines[2].contains("FAIL"));
    assert_eq!(lines[3], "1 of 2 checks FAILED");
    let json = serde_json::to_value(&report).expect("json");
    for key in [
        "vip_ping_ok",
        "director",
        "vip",
        "vip_mac",
        "director_mac",
        "answered_by_dpdk",
        "ping",
        "directors",
        "checks",
        "ok",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    assert!(json["ping"].get("rtt_avg_ms").is_some());
}

#[test]
fn two_workers_give_director_a_two_queues_everywhere() {
    let mut spec = RackSpec::default_rack();
    assert_eq!(spec.workers(DirectorId::A), 1);
    spec.set_workers(DirectorId::A, 2).expect("2 workers");
    spec.validate().expect("valid");
    assert_eq!(spec.workers(DirectorId::A), 2);
    assert_eq!(spec.workers(DirectorId::B), 1, "B keeps one worker");
    let a = spec.topology.host("dira").expect("dira");
    assert!(a.interfaces.iter().all(|i| i.queues == 2), "{a:?}");
    let b = spec.topology.host("dirb").expect("dirb");
    assert!(b.interfaces.iter().all(|i| i.queues == 1), "{b:?}");
    let plan: Vec<Vec<String>> = spec
        .topology
        .plan(&prefix("trkw"))
        .iter()
        .map(|s| s.argv.clone())
        .collect();
    for (port, iface) in [("dira-out0", "out0"), ("dira-in0", "in0")] {
        assert!(
            has(
                &plan,
                &[
                    "ip",
                    "-n",
                    "trkw-sw",
                    "link",
                    "add",
                    port,
                    "numtxqueues",
                    "2",
                    "numrxqueues",
                    "2",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    iface,
                    "numtxqueues",
                    "2",
                    "numrxqueues",
                    "2",
                    "netns",
                    "trkw-dira"
                ]
            ),
            "{port}"
        );
    }
    // B and the kernel hosts keep single-queue veths.
    assert!(has(
        &plan,
        &[
            "ip",
            "-n",
            "trkw-sw",
            "link",
            "add",
            "dirb-out0",
            "type",
            "veth",
            "peer",
            "name",
            "out0",
            "netns",
            "trkw-dirb"
        ]
    ));
    let lcores = director_lcores(&[0, 1], DirectorId::A, spec.workers(DirectorId::A));
    let cfg = director_config(
        spec.director(DirectorId::A).expect("A"),
        &prefix("trkw"),
        Pmd::AfXdp,
        &lcores,
        Path::new("/run/tandem-rack/trkw/a.stats.json"),
    );
    assert_eq!(cfg.eal.args[..2], ["-l", "0,1"]);
    assert!(
        cfg.eal
            .args
            .contains(&"net_af_xdp0,iface=out0,start_queue=0,queue_count=2".to_owned())
    );
    assert!(
        cfg.eal
            .args
            .contains(&"net_af_xdp1,iface=in0,start_queue=0,queue_count=2".to_owned())
    );
    // Bounds, and a director whose ports disagree is refused.
    assert!(spec.set_workers(DirectorId::A, 0).is_err());
    assert!(spec.set_workers(DirectorId::A, 17).is_err());
    let mut odd = RackSpec::default_rack();
    odd.topology
        .hosts
        .iter_mut()
        .find(|h| h.name == "dira")
        .expect("dira")
        .interfaces[0]
        .queues = 2;
    assert!(odd.validate().is_err());
}

/// The machine-wide lock of the rack tests: taken, released on drop, and taken over from a
/// holder that is gone (no process with its pid) without waiting.
#[test]
fn the_rack_tests_lock_is_released_on_drop_and_taken_over_from_a_dead_holder() {
    let base = std::env::temp_dir().join(format!("tandem-lock-test-{}", std::process::id()));
    let dir = base.join("lock");
    let lock = tandem_hw_tests::rack::lock_dir(&dir).expect("free lock");
    assert_eq!(
        std::fs::read_to_string(dir.join("pid")).expect("pid"),
        std::process::id().to_string()
    );
    drop(lock);
    assert!(!dir.exists(), "released on drop");
    // A holder that died without releasing it: pid 0 is never a process in /proc.
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("pid"), "0").expect("pid");
    let t = std::time::Instant::now();
    let lock = tandem_hw_tests::rack::lock_dir(&dir).expect("taken over");
    assert!(t.elapsed() < std::time::Duration::from_secs(2));
    drop(lock);
    let _ = std::fs::remove_dir_all(&base);
}
