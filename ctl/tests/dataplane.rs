//! The built `tandemctl` against the real `tandem-dataplane` (EAL on `net_null` vdevs, no
//! NIC, no hugepages): the ipvsadm forms, the listing, the server's refusals passed on as is
//! and leaving the listing unchanged, `save | restore` as an identity, timeouts, JSON, and the
//! TCP listener with mutual TLS. Needs root (DPDK's runtime directory) and the dataplane
//! binary built next to `tandemctl` (`cargo build -p tandem-dataplane`; `scripts/test.sh`
//! builds every binary first) or named by `$TANDEM_DATAPLANE`.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandemctl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A real dataplane, killed and cleaned up on drop whatever happened.
struct Dataplane {
    child: Option<Child>,
    dir: PathBuf,
    prefix: String,
    socket: PathBuf,
}

impl std::ops::Deref for Dataplane {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn dataplane_binary() -> PathBuf {
    let p = std::env::var_os("TANDEM_DATAPLANE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_BIN_EXE_tandemctl")).with_file_name("tandem-dataplane")
        });
    assert!(
        p.exists(),
        "{} not found: build it with `cargo build -p tandem-dataplane` or set TANDEM_DATAPLANE",
        p.display()
    );
    p
}

/// Starts a dataplane with no services (its VIPs 203.0.113.10 and .20 declared, an inside
/// port on 172.16.0.0/24) and `control` as extra `[control]` lines; waits for its socket.
fn start(name: &str, control: &str) -> Dataplane {
    let dir = temp_dir(name);
    let prefix = format!("tandemctl-{name}-{}", std::process::id());
    let socket = dir.join("admin.sock");
    let config = dir.join("dp.toml");
    std::fs::write(
        &config,
        format!(
            r#"[eal]
args = ["-l", "0", "--no-pci", "--no-huge", "-m", "256", "--file-prefix", "{prefix}",
        "--vdev", "net_null0", "--vdev", "net_null1", "--log-level", "lib.eal:warning"]
[dataplane]
idle_sleep_max_us = 200
[control]
socket = "{socket}"
{control}
[[port]]
name = "outside"
device = "net_null0"
address = "203.0.113.11/24"
[[port]]
name = "inside"
device = "net_null1"
address = "172.16.0.251/24"
[[vip]]
address = "203.0.113.10"
port = "outside"
[[vip]]
address = "203.0.113.20"
port = "outside"
"#,
            socket = socket.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("dp.log")).unwrap();
    let child = Command::new(dataplane_binary())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut dp = Dataplane {
        child: Some(child),
        dir,
        prefix,
        socket,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(c) = dp.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            let log = std::fs::read_to_string(dp.dir.join("dp.log")).unwrap_or_default();
            panic!("the dataplane exited early ({status}):\n{log}");
        }
        if std::os::unix::net::UnixStream::connect(&dp.socket).is_ok() {
            return dp;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no admin socket within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A real dataplane with the admin API on a socket in a temporary directory.
fn serve(name: &str) -> Dataplane {
    start(name, "")
}

fn run(sock: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandemctl"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(sock: &Path, args: &[&str]) -> String {
    let o = run(sock, args, None);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

const DEMO: &str = "\
Tandem director (generation 6, standalone)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn  Health
TCP  203.0.113.10:80 wrr
  -> 172.16.0.2:80                Masq    1      0          0          -
  -> 172.16.0.3:8000              Masq    2      0          0          -
TCP  203.0.113.10:21 wlc persistent 300
  -> 172.16.0.3:21                Route   1      0          0          -
";

#[test]
fn ipvsadm_forms_over_the_socket() {
    let sock = serve("forms");
    assert_eq!(ok(&sock, &["-A", "-t", "203.0.113.10:80", "-s", "wrr"]), "");
    ok(
        &sock,
        &[
            "-a",
            "-t",
            "203.0.113.10:80",
            "-r",
            "172.16.0.2:80",
            "-m",
            "-w",
            "1",
        ],
    );
    ok(
        &sock,
        &[
            "-a",
            "-t",
            "203.0.113.10:80",
            "-r",
            "172.16.0.3:8000",
            "-m",
            "-w",
            "2",
        ],
    );
    ok(&sock, &["-A", "-t", "203.0.113.10:21", "-p"]);
    ok(
        &sock,
        &["server", "add", "-t", "203.0.113.10:21", "-r", "172.16.0.3"],
    );
    assert_eq!(ok(&sock, &["-L", "-n"]), DEMO);
    assert_eq!(ok(&sock, &["ls"]), DEMO);

    // The server's refusals: its message as is, exit 2, nothing on stdout.
    let o = run(
        &sock,
        &["-a", "-t", "203.0.113.10:81", "-r", "172.16.0.2"],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "tandemctl: no service TCP 203.0.113.10:81 (add it first)\n"
    );
    let o = run(&sock, &["-A", "-t", "203.0.113.10:80"], None);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "tandemctl: service TCP 203.0.113.10:80 already exists\n"
    );
    // Refusals by the dataplane itself (not checked by the client): a VIP the director does
    // not hold, a DR server off the director's networks, a TUN server with a mapped port.
    for (args, message) in [
        (&["-A", "-t", "203.0.113.99:80"][..], "203.0.113.99"),
        (
            &["-a", "-t", "203.0.113.10:80", "-r", "198.51.100.7:80", "-g"][..],
            "198.51.100.7",
        ),
        (
            &["-a", "-t", "203.0.113.10:80", "-r", "172.16.0.4:8080", "-i"][..],
            "172.16.0.4:8080",
        ),
    ] {
        let o = run(&sock, args, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(o.stdout.is_empty());
        assert!(
            err.starts_with("tandemctl: ") && err.contains(message) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // None of the refused commands changed anything.
    assert_eq!(ok(&sock, &["-L", "-n"]), DEMO);

    // -v and -o json show the change.
    let out = ok(&sock, &["-v", "-A", "-u", "203.0.113.20:53"]);
    assert_eq!(
        out,
        "added service UDP 203.0.113.20:53 (wlc)\ngeneration 7\n"
    );
    let out = ok(&sock, &["-o", "json", "-A", "-u", "203.0.113.20:54"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["generation"], 8);
    assert_eq!(j["changes"][0], "added service UDP 203.0.113.20:54 (wlc)");

    let j: serde_json::Value = serde_json::from_str(&ok(&sock, &["-Ln", "-o", "json"])).unwrap();
    assert_eq!(j["role"], "standalone");
    assert_eq!(j["services"].as_array().unwrap().len(), 4);
    assert_eq!(j["services"][1]["persistence_timeout_s"], 300);
    assert_eq!(j["services"][1]["servers"][0]["method"], "direct_route");

    // Filtered listing.
    let out = ok(&sock, &["-L", "-n", "-t", "203.0.113.10:21"]);
    assert!(
        out.contains("TCP  203.0.113.10:21 wlc persistent 300"),
        "{out}"
    );
    assert!(!out.contains(":80"), "{out}");

    // Timeouts.
    assert_eq!(ok(&sock, &["--set", "0", "0", "120"]), "");
    assert_eq!(
        ok(&sock, &["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 900 60 120\n"
    );
    assert_eq!(
        ok(&sock, &["timeout"]),
        "Timeout (tcp tcpfin udp): 900 60 120\n"
    );
    assert_eq!(
        ok(&sock, &["-Lnc"]),
        "Tandem connection entries\npro expire state       source             virtual            destination\n"
    );
    assert_eq!(ok(&sock, &["-Z"]), "");
}

#[test]
fn save_restore_is_an_identity_over_the_wire() {
    let sock = serve("save");
    ok(
        &sock,
        &["-A", "-t", "203.0.113.10:80", "-s", "sh", "-b", "sh-port"],
    );
    ok(
        &sock,
        &[
            "-a",
            "-t",
            "203.0.113.10:80",
            "-r",
            "172.16.0.2",
            "-i",
            "-w",
            "3",
        ],
    );
    ok(
        &sock,
        &[
            "-A",
            "-u",
            "203.0.113.10:53",
            "-s",
            "rr",
            "-p",
            "60",
            "-M",
            "255.255.255.0",
        ],
    );
    ok(
        &sock,
        &["-a", "-u", "203.0.113.10:53", "-r", "172.16.0.9:5353", "-m"],
    );
    let saved = ok(&sock, &["-S", "-n"]);
    assert_eq!(
        saved,
        "\
-A -t 203.0.113.10:80 -s sh -b sh-port
-a -t 203.0.113.10:80 -r 172.16.0.2:80 -i -w 3
-A -u 203.0.113.10:53 -s rr -p 60 -M 255.255.255.0
-a -u 203.0.113.10:53 -r 172.16.0.9:5353 -m -w 1
"
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&sock, &["save", "-o", "json"])).unwrap();
    assert_eq!(j["rules"][0], "-A -t 203.0.113.10:80 -s sh -b sh-port");
    assert_eq!(ok(&sock, &["-C"]), "");
    assert_eq!(ok(&sock, &["save"]), "");
    // A dry run shows the change and applies nothing.
    let o = run(&sock, &["restore", "--dry-run"], Some(&saved));
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "added service TCP 203.0.113.10:80 (sh)\n\
         added server 172.16.0.2:80 to TCP 203.0.113.10:80 (tun weight 3)\n\
         added service UDP 203.0.113.10:53 (rr)\n\
         added server 172.16.0.9:5353 to UDP 203.0.113.10:53 (nat weight 1)\n\
         (dry run: nothing was applied)\n"
    );
    assert_eq!(ok(&sock, &["save"]), "");
    let o = run(&sock, &["-R"], Some(&saved));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(ok(&sock, &["save"]), saved);
    // A bad file changes nothing.
    let o = run(
        &sock,
        &["restore", "-"],
        Some("-A -t 203.0.113.10:80 -s nope\n"),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("tandemctl: line 1: unknown scheduler"));
    assert_eq!(ok(&sock, &["save"]), saved);
}

/// Health verdicts (sent over the admin API as tandem-syncd's checkers send them) show in
/// the listing's last column and in its JSON, and are not saved.
#[test]
fn health_shows_in_the_listing_and_json_and_is_not_saved() {
    use tandem_proto::admin as pb;
    let sock = serve("health");
    ok(&sock, &["-A", "-t", "203.0.113.10:80", "-s", "wrr"]);
    for (server, weight) in [
        ("172.16.0.2:80", "1"),
        ("172.16.0.3:8000", "2"),
        ("172.16.0.4:80", "1"),
    ] {
        ok(
            &sock,
            &[
                "-a",
                "-t",
                "203.0.113.10:80",
                "-r",
                server,
                "-m",
                "-w",
                weight,
            ],
        );
    }
    let saved = ok(&sock, &["-S", "-n"]);
    let verdict = |address: &str, port: u32, state: pb::HealthState, reason: &str| {
        pb::SetServerHealthRequest {
            service: Some(pb::ServiceKey {
                protocol: pb::Protocol::Tcp.into(),
                address: "203.0.113.10".into(),
                port: 80,
            }),
            server: Some(pb::ServerKey {
                address: address.into(),
                port,
            }),
            state: state.into(),
            action: pb::HealthAction::Quiesce.into(),
            checker: "http".into(),
            reason: reason.into(),
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answers = rt.block_on(async {
        let target = tandemctl::client::Target::Socket(sock.to_path_buf());
        let timeout = std::time::Duration::from_secs(10);
        let mut c = tandemctl::client::connect_to(&target, timeout, timeout)
            .await
            .unwrap()
            .client;
        let mut answers = Vec::new();
        for req in [
            verdict(
                "172.16.0.3",
                8000,
                pb::HealthState::Down,
                "connect: connection refused",
            ),
            verdict("172.16.0.2", 80, pb::HealthState::Up, "200 OK"),
        ] {
            let r = c.set_server_health(req).await.unwrap().into_inner();
            answers.push((r.message, r.changed));
        }
        answers
    });
    assert_eq!(
        answers,
        [
            (
                "TCP 203.0.113.10:80 -> 172.16.0.3:8000 down (quiesced): connect: connection refused"
                    .to_string(),
                true
            ),
            ("TCP 203.0.113.10:80 -> 172.16.0.2:80 up: 200 OK".to_string(), true)
        ]
    );
    // The quiesced server shows its configured weight; the first UP changed no generation.
    assert_eq!(
        ok(&sock, &["-L", "-n"]),
        "\
Tandem director (generation 6, standalone)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn  Health
TCP  203.0.113.10:80 wrr
  -> 172.16.0.2:80                Masq    1      0          0          up
  -> 172.16.0.3:8000              Masq    2      0          0          down
  -> 172.16.0.4:80                Masq    1      0          0          -
"
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&sock, &["-Ln", "-o", "json"])).unwrap();
    let servers = &j["services"][0]["servers"];
    let down = &servers[1]["health"];
    assert_eq!(servers[1]["weight"], 2);
    assert_eq!(
        (
            down["state"].as_str(),
            down["action"].as_str(),
            down["checker"].as_str(),
            down["reason"].as_str(),
            down["changes"].as_u64()
        ),
        (
            Some("down"),
            Some("quiesce"),
            Some("http"),
            Some("connect: connection refused"),
            Some(1)
        )
    );
    assert!(
        down["since_unix_ms"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000_000),
        "{down}"
    );
    assert_eq!(servers[0]["health"]["state"], "up");
    assert!(servers[2]["health"].is_null(), "{}", servers[2]);
    // Health is runtime state: save shows the configuration only.
    assert_eq!(ok(&sock, &["-S", "-n"]), saved);
}

/// Runs openssl; false when it is not installed.
fn openssl(dir: &Path, args: &[&str]) -> bool {
    match Command::new("openssl").current_dir(dir).args(args).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => false,
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
fn certificates(dir: &Path) -> bool {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tandemctl test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    if !openssl(dir, &ca) {
        return false;
    }
    for who in ["server", "client"] {
        let key = format!("{who}.key");
        let csr = format!("{who}.csr");
        let pem = format!("{who}.pem");
        let ext = format!("{who}.ext");
        let subj = format!("/CN={who}");
        let mut req = vec!["req"];
        req.extend(ec);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
    true
}

#[test]
fn mutual_tls_over_tcp() {
    let dir = temp_dir("tls");
    if !certificates(&dir) {
        eprintln!("skipped: openssl is not installed, so no test certificates can be made");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
    let _dp = start(
        "tls-dp",
        &format!(
            "tcp_listen = \"127.0.0.1:{port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"",
            path("server.pem"),
            path("server.key"),
            path("ca.pem")
        ),
    );
    let addr = format!("127.0.0.1:{port}");
    let url = format!("https://{addr}");
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let tandemctl = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_tandemctl"))
            .args(["--server", &url])
            .args(args)
            .output()
            .unwrap()
    };
    let o = tandemctl(&[
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "-A",
        "-t",
        "203.0.113.10:80",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = tandemctl(&["--ca", &ca, "--cert", &cert, "--key", &key, "-Ln"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("TCP  203.0.113.10:80 wlc"));
    // Without a client certificate the server refuses the connection.
    let o = tandemctl(&["--ca", &ca, "-Ln"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("tandemctl: cannot reach the dataplane at {url}: ")),
        "{err}"
    );
    // A CA that did not sign the server's certificate: refused too.
    let o = tandemctl(&["--ca", &cert, "--cert", &cert, "--key", &key, "-Ln"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("UnknownIssuer"));
}
