//! The traffic tools without a rack: `serve` and `client` over loopback (no root, no
//! namespaces: 127.0.0.0/8 only, ephemeral ports), the mode checks' pure evaluation, and the
//! IPIP decapsulator's parser (`--self-test`, needs python3).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tandem_hw_tests::client::{self, ClientOptions, ClientReport};
use tandem_hw_tests::demo::Check;
use tandem_hw_tests::exec::Cancel;
use tandem_hw_tests::modes::{
    check_answered_by, check_distribution, check_locality, check_refused, check_reply_path,
    check_single_server, check_udp, expected_shares,
};
use tandem_hw_tests::probe::parse_source_macs;
use tandem_hw_tests::process::locate_tool_with;
use tandem_hw_tests::rack::{DirectorId, Mode, ProtocolName, RackSpec};
use tandem_hw_tests::serve::{ServeOptions, Server, answer, parse_answer};

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(v) => v,
        SocketAddr::V6(_) => panic!("IPv4 only"),
    }
}

fn loopback_server(name: &str, udp: bool) -> Server {
    let mut o = ServeOptions::new(name, &[0], if udp { &[0] } else { &[] });
    o.bind = vec![LO];
    Server::start(&o).expect("bind on loopback")
}

fn tcp_target(s: &Server) -> SocketAddrV4 {
    v4(s.tcp_addrs()[0])
}

#[test]
fn answers_carry_name_and_port() {
    assert_eq!(answer("rs2", 8000, b"hello"), b"rs2:8000 hello");
    let a = parse_answer("rs2:8000 c1m2").expect("parses");
    assert_eq!((a.name, a.port, a.echo), ("rs2", 8000, "c1m2"));
    assert_eq!(a.endpoint(), "rs2:8000");
    // The echo may itself hold spaces; the tag may not be empty or lack a port.
    assert_eq!(parse_answer("rs1:80 a b").map(|a| a.echo), Some("a b"));
    for bad in ["", "rs1", "rs1:80", ":80 x", "rs1:x y", "rs1:70000 y"] {
        assert!(parse_answer(bad).is_none(), "{bad}");
    }
}

#[test]
fn tcp_connection_exchanges_many_lines() {
    let server = loopback_server("rs9", false);
    let mut s = TcpStream::connect(tcp_target(&server)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    // Two lines in one segment, one split across two, and a CRLF line.
    s.write_all(b"one\ntwo\nthr").expect("write");
    s.write_all(b"ee\nfour\r\n").expect("write");
    let port = tcp_target(&server).port();
    for want in ["one", "two", "three", "four"] {
        let mut line = String::new();
        r.read_line(&mut line).expect("answer");
        assert_eq!(line, format!("rs9:{port} {want}\n"));
    }
    drop((s, r));
    let summary = server.stop();
    assert_eq!(summary.lines, 4);
    assert_eq!(summary.accepted, 1);
}

#[test]
fn client_tcp_run_counts_servers_and_endpoints() {
    let server = loopback_server("rs1", false);
    let opts = ClientOptions {
        parallel: 4,
        ..ClientOptions::new(tcp_target(&server), 20, 5)
    };
    let r = client::run(&opts, &Cancel::new()).expect("run");
    assert!(r.all_ok(), "{r:?}");
    assert_eq!((r.ok, r.failed, r.conns, r.messages), (20, 0, 20, 5));
    assert_eq!(r.answers, 100);
    assert_eq!(r.per_server, BTreeMap::from([("rs1".to_owned(), 20)]));
    assert_eq!(
        r.per_endpoint,
        BTreeMap::from([(format!("rs1:{}", opts.target.port()), 20)])
    );
    assert!(r.errors.is_empty() && r.reply_sources.is_empty());
    assert_eq!(r.protocol, "tcp");
    assert_eq!(server.stop().lines, 100);
}

#[test]
fn client_udp_run_checks_the_reply_source() {
    let server = loopback_server("rs3", true);
    let target = v4(server.udp_addrs()[0]);
    let r = client::run(&ClientOptions::new(target, 6, 4).udp(), &Cancel::new()).expect("run");
    assert!(r.all_ok(), "{r:?}");
    assert_eq!(r.per_server, BTreeMap::from([("rs3".to_owned(), 6)]));
    assert_eq!(
        r.reply_sources,
        BTreeMap::from([(target.to_string(), 24)]),
        "every answer from the target"
    );
    assert_eq!(r.protocol, "udp");
    assert_eq!(server.stop().datagrams, 24);
}

/// A UDP "server" that answers from another address, as a real server would if it answered a
/// DR/TUN request from its own address instead of the VIP: the client must refuse it.
#[test]
fn client_udp_refuses_answers_from_elsewhere() {
    let listen = UdpSocket::bind((LO, 0)).expect("bind");
    let other = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 2), 0)).expect("bind 127.0.0.2");
    let target = v4(listen.local_addr().expect("addr"));
    listen
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let t = thread::spawn(move || {
        let mut buf = [0u8; 512];
        if let Ok((n, from)) = listen.recv_from(&mut buf) {
            let reply = answer("rs1", 53, &buf[..n]);
            let _ = other.send_to(&reply, from);
        }
    });
    let opts = ClientOptions {
        op_timeout: Duration::from_secs(3),
        ..ClientOptions::new(target, 1, 1).udp()
    };
    let r = client::run(&opts, &Cancel::new()).expect("run");
    t.join().expect("fake server");
    assert_eq!(r.ok, 0);
    assert_eq!(r.errors.get("wrong_source"), Some(&1), "{r:?}");
    assert!(r.reply_sources.keys().all(|k| k.starts_with("127.0.0.2:")));
}

#[test]
fn client_reports_wrong_echo_and_server_changes() {
    // Answers that do not echo, then a server whose tag changes within a connection.
    for (replies, kind) in [
        (vec!["rs1:80 nope"], "bad_answer"),
        (vec!["garbage"], "bad_answer"),
        (vec!["rs1:80 c0m0", "rs2:80 c0m1"], "server_changed"),
    ] {
        let l = TcpListener::bind((LO, 0)).expect("bind");
        let target = v4(l.local_addr().expect("addr"));
        let t = thread::spawn(move || {
            if let Ok((s, _)) = l.accept() {
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut w = s;
                for reply in replies {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let _ = w.write_all(format!("{reply}\n").as_bytes());
                }
            }
        });
        let r = client::run(&ClientOptions::new(target, 1, 2), &Cancel::new()).expect("run");
        t.join().expect("fake server");
        assert_eq!(r.ok, 0);
        assert_eq!(r.errors.get(kind), Some(&1), "{kind}: {r:?}");
        assert_eq!(r.error_samples.len(), 1);
    }
}

#[test]
fn client_is_bounded_in_time_when_nobody_answers() {
    // Accepted by the kernel's backlog, never read: every answer times out.
    let l = TcpListener::bind((LO, 0)).expect("bind");
    let target = v4(l.local_addr().expect("addr"));
    let opts = ClientOptions {
        parallel: 2,
        timeout: Duration::from_millis(1500),
        op_timeout: Duration::from_millis(400),
        ..ClientOptions::new(target, 50, 1)
    };
    let started = Instant::now();
    let r = client::run(&opts, &Cancel::new()).expect("run");
    assert!(started.elapsed() < Duration::from_secs(4), "{r:?}");
    assert_eq!(r.ok, 0);
    assert_eq!(r.failed, 50);
    let counted: u32 = r.errors.values().sum();
    assert_eq!(counted, 50, "every connection is accounted for: {r:?}");
    assert!(r.errors.get("timeout").copied().unwrap_or(0) >= 2, "{r:?}");
    assert!(
        r.errors.get("deadline").copied().unwrap_or(0) >= 30,
        "{r:?}"
    );
    drop(l);
    // Refused outright.
    let closed = v4(TcpListener::bind((LO, 0))
        .expect("bind")
        .local_addr()
        .expect("addr"));
    let r = client::run(&ClientOptions::new(closed, 3, 1), &Cancel::new()).expect("run");
    assert_eq!(r.errors.get("connect_refused"), Some(&3), "{r:?}");
}

#[test]
fn client_options_are_bounded() {
    let t = SocketAddrV4::new(LO, 80);
    let ok = ClientOptions::new(t, 1, 1);
    ok.validate().expect("valid");
    for bad in [
        ClientOptions {
            conns: 0,
            ..ok.clone()
        },
        ClientOptions {
            conns: client::MAX_CONNS + 1,
            ..ok.clone()
        },
        ClientOptions {
            messages: 0,
            ..ok.clone()
        },
        ClientOptions {
            parallel: 0,
            ..ok.clone()
        },
        ClientOptions {
            parallel: client::MAX_PARALLEL + 1,
            ..ok.clone()
        },
        ClientOptions {
            timeout: Duration::ZERO,
            ..ok.clone()
        },
        ClientOptions {
            timeout: client::MAX_TIMEOUT * 2,
            ..ok.clone()
        },
        ClientOptions {
            op_timeout: Duration::ZERO,
            ..ok.clone()
        },
        ClientOptions {
            target: SocketAddrV4::new(LO, 0),
            ..ok.clone()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
        assert!(client::run(&bad, &Cancel::new()).is_err());
    }
}

#[test]
fn server_closes_over_limit_and_long_lines() {
    let mut o = ServeOptions::new("rs1", &[0], &[]);
    o.bind = vec![LO];
    o.max_conns = 2;
    let server = Server::start(&o).expect("start");
    let target = tcp_target(&server);
    let open = || {
        let s = TcpStream::connect(target).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    };
    let (mut a, mut b) = (open(), open());
    for s in [&mut a, &mut b] {
        s.write_all(b"x\n").expect("write");
        let mut line = String::new();
        BufReader::new(s.try_clone().expect("clone"))
            .read_line(&mut line)
            .expect("answer");
        assert!(line.ends_with(" x\n"));
    }
    assert_eq!(server.active(), 2);
    // The third is closed at once: EOF (or a reset) instead of an answer.
    let c = open();
    let mut line = String::new();
    let _ = (&c).write_all(b"y\n");
    let got = BufReader::new(c).read_line(&mut line).unwrap_or(0);
    assert_eq!(got, 0, "over the limit: {line:?}");
    // A line longer than MAX_LINE closes that connection.
    let big = vec![b'z'; tandem_hw_tests::serve::MAX_LINE + 10];
    let _ = a.write_all(&big);
    let mut line = String::new();
    assert_eq!(BufReader::new(a).read_line(&mut line).unwrap_or(0), 0);
    drop(b);
    let s = server.stop();
    assert_eq!(s.refused_over_limit, 1, "{s:?}");
    assert_eq!(s.closed_long_line, 1, "{s:?}");
}

/// What the failover drills will do: a thousand connections open at once, each exchanging a
/// message every 100 ms. One `serve` keeps up (a thread per connection, no busy loop).
#[test]
fn thousand_concurrent_connections_every_100ms() {
    let server = loopback_server("rs1", false);
    let opts = ClientOptions {
        parallel: 1000,
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(60),
        op_timeout: Duration::from_secs(10),
        ..ClientOptions::new(tcp_target(&server), 1000, 5)
    };
    let r = client::run(&opts, &Cancel::new()).expect("run");
    assert!(r.all_ok(), "{}", r.summary());
    assert_eq!(r.answers, 5000);
    let s = server.stop();
    assert_eq!((s.accepted, s.lines, s.refused_over_limit), (1000, 5000, 0));
}

fn tool() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tandem-rack"))
}

fn free_port() -> u16 {
    TcpListener::bind((LO, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The binaries themselves: `serve` bound to loopback writes its ready file and exits when the
/// watched path disappears; `client --json` prints one report that parses.
#[test]
fn serve_and_client_binaries() {
    let dir = std::env::temp_dir().join(format!("tandem-traffic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch");
    let watch = dir.join("alive");
    std::fs::write(&watch, "").expect("watch file");
    let ready = dir.join("ready");
    let (tcp, udp) = (free_port(), free_port());
    let mut child = Command::new(tool())
        .args(["serve", "--name", "rsx", "--bind", "127.0.0.1"])
        .args(["--tcp", &tcp.to_string(), "--udp", &udp.to_string()])
        .arg("--watch")
        .arg(&watch)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    assert!(ready.exists(), "serve wrote no ready file");
    for extra in [&[][..], &["--udp"][..]] {
        let port = if extra.is_empty() { tcp } else { udp };
        let out = Command::new(tool())
            .args(["client", "--target", &format!("127.0.0.1:{port}")])
            .args(["--conns", "4", "--messages", "3", "--json"])
            .args(extra)
            .output()
            .expect("run client");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = ClientReport::parse(&String::from_utf8_lossy(&out.stdout)).expect("json");
        assert_eq!(r.per_endpoint, BTreeMap::from([(format!("rsx:{port}"), 4)]));
        assert_eq!(r.answers, 12);
    }
    // The lifetime bound: the watched path goes, serve exits by itself.
    std::fs::remove_file(&watch).expect("remove watch");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "serve did not exit on its own"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_serve_and_client_arguments_fail_clearly() {
    let out = Command::new(tool())
        .args(["client", "--target", "127.0.0.1:80", "--conns", "0"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--conns"),
        "{out:?}"
    );
    let out = Command::new(tool())
        .args(["serve", "--name", "x"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tcp"),
        "{out:?}"
    );
    // Hidden from the help that operators read.
    let help = Command::new(tool()).arg("--help").output().expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    let listed = |name: &str| {
        help.lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    };
    assert!(!listed("serve") && !listed("client"), "{help}");
    assert!(listed("demo"), "the command list was read: {help}");
}

fn report(target: &str, per_endpoint: &[(&str, u32)], conns: u32) -> ClientReport {
    let mut r = ClientReport {
        target: target.to_owned(),
        protocol: "tcp".into(),
        conns,
        messages: 1,
        ..ClientReport::default()
    };
    for (e, n) in per_endpoint {
        r.per_endpoint.insert((*e).to_owned(), *n);
        let name = e.split(':').next().unwrap_or_default().to_owned();
        *r.per_server.entry(name).or_default() += n;
        r.ok += n;
    }
    r.failed = conns - r.ok;
    r
}

#[test]
fn expected_shares_follow_the_services_weights() {
    let spec = RackSpec::default_rack();
    let a = spec.director(DirectorId::A).expect("A");
    let share = |proto, mode, port| {
        expected_shares(
            &spec,
            a.service(proto, spec.mode_vip(mode), port)
                .expect("service"),
        )
    };
    let nat = share(ProtocolName::Tcp, Mode::Nat, 80);
    assert_eq!(nat.keys().collect::<Vec<_>>(), ["rs1:80", "rs2:8000"]);
    assert!((nat["rs1:80"] - 1.0 / 3.0).abs() < 1e-9);
    assert!((nat["rs2:8000"] - 2.0 / 3.0).abs() < 1e-9);
    let tun = share(ProtocolName::Tcp, Mode::Tun, 80);
    assert!((tun["rs1:80"] - 4.0 / 9.0).abs() < 1e-9);
    assert!((tun["rs3:80"] - 2.0 / 9.0).abs() < 1e-9);
    assert_eq!(
        share(ProtocolName::Tcp, Mode::Nat, 21)
            .keys()
            .collect::<Vec<_>>(),
        ["rs2:21"]
    );
    assert_eq!(share(ProtocolName::Udp, Mode::Dr, 53).len(), 3);
    // Services by mode: every server of a mode's VIP uses that mode's method, on ports serve
    // listens on.
    for mode in Mode::ALL {
        let vip = spec.mode_vip(mode);
        let services: Vec<_> = a.services.iter().filter(|s| s.address == vip).collect();
        assert!(services.len() >= 2, "{mode}");
        for s in services {
            for srv in &s.servers {
                assert_eq!(srv.method, mode.method(), "{mode} {s:?}");
                let rs = spec.real_server_at(srv.address).expect("a real server");
                let ports = match s.protocol {
                    ProtocolName::Tcp => &rs.tcp_ports,
                    ProtocolName::Udp => &rs.udp_ports,
                };
                assert!(
                    ports.contains(&srv.port),
                    "{mode}: {} {}",
                    rs.host,
                    srv.port
                );
            }
        }
    }
}

#[test]
fn distribution_checks() {
    let spec = RackSpec::default_rack();
    let a = spec.director(DirectorId::A).expect("A");
    let nat = expected_shares(
        &spec,
        a.service(ProtocolName::Tcp, spec.vip, 80).expect("svc"),
    );
    let t = "203.0.113.10:80";
    // Exact wrr 1:2.
    let c = check_distribution(
        "d",
        &report(t, &[("rs1:80", 10), ("rs2:8000", 20)], 30),
        &nat,
        0.1,
    );
    assert!(c.passed, "{c:?}");
    // Within tolerance.
    assert!(
        check_distribution(
            "d",
            &report(t, &[("rs1:80", 12), ("rs2:8000", 18)], 30),
            &nat,
            0.1
        )
        .passed
    );
    // Round robin instead of weighted.
    let c = check_distribution(
        "d",
        &report(t, &[("rs1:80", 15), ("rs2:8000", 15)], 30),
        &nat,
        0.1,
    );
    assert!(
        !c.passed && c.detail.contains("rs2:8000 share 0.50"),
        "{c:?}"
    );
    // The port was not mapped: rs2 answered on 80.
    let c = check_distribution(
        "d",
        &report(t, &[("rs1:80", 10), ("rs2:80", 20)], 30),
        &nat,
        0.1,
    );
    assert!(
        !c.passed && c.detail.contains("rs2:80 answered 20"),
        "{c:?}"
    );
    assert!(
        !check_answered_by(
            "p",
            &report(t, &[("rs2:80", 3)], 3),
            &["rs1:80", "rs2:8000"]
        )
        .passed
    );
    assert!(
        check_answered_by(
            "p",
            &report(t, &[("rs2:8000", 3)], 3),
            &["rs1:80", "rs2:8000"]
        )
        .passed
    );
    // A failed connection fails the check even with the right shares.
    assert!(
        !check_distribution(
            "d",
            &report(t, &[("rs1:80", 10), ("rs2:8000", 20)], 31),
            &nat,
            0.1
        )
        .passed
    );
    // Nothing at all.
    assert!(!check_distribution("d", &report(t, &[], 30), &nat, 0.1).passed);
    // lblc: one server.
    assert!(check_single_server("l", &report(t, &[("rs2:80", 20)], 20)).passed);
    assert!(!check_single_server("l", &report(t, &[("rs2:80", 19), ("rs1:80", 1)], 20)).passed);
    // lblc with per-worker tables: one server per worker at most.
    let split = report(t, &[("rs2:80", 10), ("rs1:80", 10)], 20);
    assert!(!check_locality("l", &split, 1).passed);
    let c = check_locality("l", &split, 2);
    assert!(c.passed && c.name == "l_per_worker", "{c:?}");
    let three = report(t, &[("rs1:80", 7), ("rs2:80", 7), ("rs3:80", 6)], 20);
    assert!(!check_locality("l", &three, 2).passed);
    assert_eq!(
        check_locality("l", &report(t, &[("rs2:80", 20)], 20), 1).name,
        "l"
    );
    // Refused: nothing connected.
    assert!(check_refused("r", &report(t, &[], 2)).passed);
    assert!(!check_refused("r", &report(t, &[("rs1:80", 1)], 2)).passed);
}

#[test]
fn udp_check_wants_every_server_and_the_vip_as_source() {
    let t = "203.0.113.30:53";
    let mut r = report(t, &[("rs1:53", 3), ("rs2:53", 3), ("rs3:53", 3)], 9);
    r.reply_sources.insert(t.to_owned(), 27);
    assert!(check_udp("u", &r, 3).passed);
    let mut wrong = r.clone();
    wrong.reply_sources.insert("172.16.0.2:53".to_owned(), 1);
    assert!(!check_udp("u", &wrong, 3).passed);
    let mut one = report(t, &[("rs1:53", 9)], 9);
    one.reply_sources.insert(t.to_owned(), 27);
    assert!(!check_udp("u", &one, 3).passed, "rr spreads over all three");
    assert!(!check_udp("u", &report(t, &[], 9), 3).passed);
}

#[test]
fn reply_path_from_link_level_capture() {
    let lines = [
        "20:00:00.000001 02:00:00:00:00:aa > 02:00:00:00:00:02, ethertype IPv4 (0x0800), length 74: 203.0.113.20.80 > 203.0.113.2.40000: Flags [S.], seq 1, ack 2, win 65160, length 0",
        "20:00:00.000002 02:00:00:00:00:AA > 02:00:00:00:00:02, ethertype IPv4 (0x0800), length 70: 203.0.113.20.80 > 203.0.113.2.40000: Flags [P.], length 4",
        "20:00:00.000003 02:00:00:00:00:d1 > 02:00:00:00:00:02, ethertype IPv4 (0x0800), length 70: 203.0.113.20.80 > 203.0.113.2.40001: Flags [P.], length 4",
        "tcpdump: listening on client-eth0, link-type EN10MB (Ethernet), snapshot length 262144 bytes",
    ];
    let macs = parse_source_macs(lines);
    assert_eq!(
        macs,
        BTreeMap::from([
            ("02:00:00:00:00:aa".to_owned(), 2),
            ("02:00:00:00:00:d1".to_owned(), 1)
        ])
    );
    let router = Some("02:00:00:00:00:aa");
    let director = Some("02:00:00:00:00:d1");
    let c: Check = check_reply_path("p", Some(&macs), router, "router", director);
    assert!(!c.passed, "one reply passed the director: {c:?}");
    let only_router = BTreeMap::from([("02:00:00:00:00:aa".to_owned(), 5)]);
    assert!(check_reply_path("p", Some(&only_router), router, "router", director).passed);
    assert!(check_reply_path("p", Some(&only_router), router, "router", None).passed);
    assert!(!check_reply_path("p", Some(&BTreeMap::new()), router, "router", director).passed);
    assert!(!check_reply_path("p", None, router, "router", director).passed);
    assert!(!check_reply_path("p", Some(&only_router), None, "router", director).passed);
}

#[test]
fn modes_parse() {
    assert_eq!(Mode::parse_list("").expect("empty"), []);
    assert_eq!(
        Mode::parse_list("dr, nat").expect("two"),
        [Mode::Dr, Mode::Nat]
    );
    assert_eq!(Mode::parse_list("all").expect("all"), Mode::ALL);
    assert_eq!(Mode::parse_list("nat,all,nat").expect("dedup"), Mode::ALL);
    assert!(Mode::parse_list("nat,ipip").is_err());
    assert_eq!(Mode::Tun.to_string(), "tun");
}

#[test]
fn rack_tool_is_found_in_the_documented_order() {
    let dir = std::env::temp_dir().join(format!("tandem-tool-{}", std::process::id()));
    let deps = dir.join("deps");
    std::fs::create_dir_all(&deps).expect("dirs");
    let exe = |p: &PathBuf| {
        std::fs::write(p, "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    let tool = dir.join("tandem-rack");
    exe(&tool);
    // From a test binary in deps/: the parent directory's tandem-rack.
    let found = locate_tool_with(None, None, Some(deps.join("traffic-123"))).expect("found");
    assert_eq!(found, tool);
    // The running executable itself when it is tandem-rack.
    let found = locate_tool_with(None, None, Some(tool.clone())).expect("self");
    assert_eq!(found, tool);
    // An explicit path or the environment that names nothing is an error, not a fallback.
    assert!(locate_tool_with(Some(&dir.join("nope")), None, Some(tool.clone())).is_err());
    assert!(locate_tool_with(None, Some(dir.join("nope").into()), Some(tool.clone())).is_err());
    let err = locate_tool_with(None, None, Some(PathBuf::from("/nonexistent/x/y")))
        .expect_err("nothing there")
        .to_string();
    assert!(err.contains("TANDEM_RACK"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn decapsulator_parser_self_test() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ipip-decap.py");
    let out = match Command::new("python3")
        .arg(script)
        .arg("--self-test")
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            println!("SKIP: decapsulator_parser_self_test: python3 unavailable: {e}");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("10 of 10 cases passed"), "{text}");
    // The copy `up` writes into the state directory is this file.
    assert_eq!(
        tandem_hw_tests::rack::IPIP_DECAP_PY,
        std::fs::read_to_string(script).expect("script")
    );
}
