//! The built `tandemctl` against a small in-memory admin server on a Unix socket: the
//! connection, the requests the ipvsadm forms send, the listing, the server's refusals passed
//! on as is, and `save | restore` through the wire. The real dataplane is exercised by the
//! integration tests; this server only keeps a list of services.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use tandem_proto::admin::{self, admin_server};
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Fake {
    state: Mutex<(Vec<admin::ServiceDefinition>, u64, admin::Timeouts)>,
}

fn same_key(d: &admin::ServiceDefinition, k: &Option<admin::ServiceKey>) -> bool {
    d.config.as_ref().and_then(|c| c.key.as_ref()) == k.as_ref()
}

fn describe(k: &Option<admin::ServiceKey>) -> String {
    let k = k.clone().unwrap_or_default();
    let p = if k.protocol == admin::Protocol::Udp as i32 {
        "UDP"
    } else {
        "TCP"
    };
    format!("{p} {}:{}", k.address, k.port)
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl admin_server::Admin for Fake {
    async fn add_service(&self, r: Request<admin::AddServiceRequest>) -> R<admin::ChangeResponse> {
        let def = r.into_inner().service.unwrap_or_default();
        let key = def.config.clone().unwrap_or_default().key;
        let mut st = self.state.lock().unwrap();
        if st.0.iter().any(|d| same_key(d, &key)) {
            return Err(Status::already_exists(format!(
                "service {} already exists",
                describe(&key)
            )));
        }
        st.0.push(def);
        st.1 += 1;
        Ok(Response::new(admin::ChangeResponse {
            changes: vec![format!("added service {}", describe(&key))],
            generation: st.1,
        }))
    }
    async fn edit_service(
        &self,
        _: Request<admin::EditServiceRequest>,
    ) -> R<admin::ChangeResponse> {
        Err(Status::unimplemented("edit_service"))
    }
    async fn delete_service(
        &self,
        _: Request<admin::DeleteServiceRequest>,
    ) -> R<admin::ChangeResponse> {
        Err(Status::unimplemented("delete_service"))
    }
    async fn add_server(&self, r: Request<admin::AddServerRequest>) -> R<admin::ChangeResponse> {
        let r = r.into_inner();
        let mut st = self.state.lock().unwrap();
        let Some(def) = st.0.iter_mut().find(|d| same_key(d, &r.service)) else {
            return Err(Status::not_found(format!(
                "no service {}",
                describe(&r.service)
            )));
        };
        def.servers.push(r.server.unwrap_or_default());
        st.1 += 1;
        Ok(Response::new(admin::ChangeResponse {
            changes: vec!["added server".into()],
            generation: st.1,
        }))
    }
    async fn edit_server(&self, _: Request<admin::EditServerRequest>) -> R<admin::ChangeResponse> {
        Err(Status::unimplemented("edit_server"))
    }
    async fn delete_server(
        &self,
        _: Request<admin::DeleteServerRequest>,
    ) -> R<admin::ChangeResponse> {
        Err(Status::unimplemented("delete_server"))
    }
    async fn replace_services(
        &self,
        r: Request<admin::ReplaceServicesRequest>,
    ) -> R<admin::ChangeResponse> {
        let r = r.into_inner();
        let mut st = self.state.lock().unwrap();
        let changes = vec![format!("{} services", r.services.len())];
        if !r.dry_run {
            st.0 = r.services;
            st.1 += 1;
        }
        Ok(Response::new(admin::ChangeResponse {
            changes,
            generation: st.1,
        }))
    }
    async fn reload(&self, _: Request<admin::ReloadRequest>) -> R<admin::ChangeResponse> {
        Err(Status::failed_precondition("no configuration file"))
    }
    async fn list_services(
        &self,
        r: Request<admin::ListServicesRequest>,
    ) -> R<admin::ListServicesResponse> {
        let key = r.into_inner().key;
        let st = self.state.lock().unwrap();
        let services: Vec<admin::ServiceStatus> =
            st.0.iter()
                .filter(|d| key.is_none() || same_key(d, &key))
                .map(|d| admin::ServiceStatus {
                    config: d.config.clone(),
                    servers: d
                        .servers
                        .iter()
                        .map(|s| admin::ServerStatus {
                            config: Some(s.clone()),
                            ..Default::default()
                        })
                        .collect(),
                    stats: None,
                    rates: None,
                })
                .collect();
        if key.is_some() && services.is_empty() {
            return Err(Status::not_found(format!("no service {}", describe(&key))));
        }
        Ok(Response::new(admin::ListServicesResponse {
            services,
            generation: st.1,
            counts_staleness_ms: 0,
        }))
    }
    async fn list_connections(
        &self,
        _: Request<admin::ListConnectionsRequest>,
    ) -> R<admin::ListConnectionsResponse> {
        Ok(Response::new(admin::ListConnectionsResponse::default()))
    }
    async fn zero_counters(
        &self,
        _: Request<admin::ZeroCountersRequest>,
    ) -> R<admin::ZeroCountersResponse> {
        Ok(Response::new(admin::ZeroCountersResponse {}))
    }
    async fn get_timeouts(&self, _: Request<admin::GetTimeoutsRequest>) -> R<admin::Timeouts> {
        Ok(Response::new(self.state.lock().unwrap().2))
    }
    async fn set_timeouts(&self, r: Request<admin::Timeouts>) -> R<admin::Timeouts> {
        let t = r.into_inner();
        let mut st = self.state.lock().unwrap();
        let cur = &mut st.2;
        for (new, old) in [
            (t.tcp_s, &mut cur.tcp_s),
            (t.tcp_fin_s, &mut cur.tcp_fin_s),
            (t.udp_s, &mut cur.udp_s),
        ] {
            if new != 0 {
                *old = new;
            }
        }
        Ok(Response::new(st.2))
    }
    async fn get_status(&self, _: Request<admin::GetStatusRequest>) -> R<admin::Status> {
        let st = self.state.lock().unwrap();
        Ok(Response::new(admin::Status {
            role: "standalone".into(),
            generation: st.1,
            ..Default::default()
        }))
    }
}

fn fake() -> admin_server::AdminServer<Fake> {
    admin_server::AdminServer::new(Fake {
        state: Mutex::new((
            Vec::new(),
            0,
            admin::Timeouts {
                tcp_s: 900,
                tcp_fin_s: 60,
                udp_s: 300,
                tcp_syn_s: 60,
            },
        )),
    })
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandemctl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Serves a fresh fake on a socket in a temporary directory, from a thread of its own.
fn serve(name: &str) -> PathBuf {
    let path = temp_dir(name).join("admin.sock");
    let p = path.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::UnixListener::bind(&p).unwrap();
            ready_tx.send(()).unwrap();
            tonic::transport::Server::builder()
                .add_service(fake())
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
                .await
                .unwrap();
        });
    });
    ready_rx.recv().unwrap();
    path
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
Tandem director (generation 5, standalone)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  203.0.113.10:80 wrr
  -> 172.16.0.2:80                Masq    1      0          0
  -> 172.16.0.3:8000              Masq    2      0          0
TCP  203.0.113.10:21 wlc persistent 300
  -> 172.16.0.3:21                Route   1      0          0
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
        "tandemctl: no service TCP 203.0.113.10:81\n"
    );
    let o = run(&sock, &["-A", "-t", "203.0.113.10:80"], None);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "tandemctl: service TCP 203.0.113.10:80 already exists\n"
    );
    // Anything else the server says is a failure (exit 1).
    let o = run(&sock, &["-E", "-t", "203.0.113.10:80", "-s", "rr"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());

    // -v and -o json show the change.
    let out = ok(&sock, &["-v", "-A", "-u", "203.0.113.20:53"]);
    assert_eq!(out, "added service UDP 203.0.113.20:53\ngeneration 6\n");
    let out = ok(&sock, &["-o", "json", "-A", "-u", "203.0.113.20:54"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["generation"], 7);
    assert_eq!(j["changes"][0], "added service UDP 203.0.113.20:54");

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
        "2 services\n(dry run: nothing was applied)\n"
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
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            read("server.pem"),
            read("server.key"),
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(read("ca.pem")));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            tonic::transport::Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(fake())
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
    });
    let addr = addr_rx.recv().unwrap();
    let url = format!("https://{addr}");
    let path = |f: &str| dir.join(f).to_str().unwrap().to_string();
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
