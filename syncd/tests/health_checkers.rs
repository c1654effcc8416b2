//! The checkers against real servers this test starts on loopback: a TCP listener, a tiny
//! HTTP server (plain and TLS), a UDP responder and shell scripts. Every failure mode the
//! checkers report is produced for real (refused, timeout, wrong status, body mismatch,
//! certificate refused, exit status, no UDP reply).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tandem_syncd::health::check::{
    self, ExecProbe, HttpProbe, HttpsTls, Probe, Target, UdpProbe, https_config,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const T: Duration = Duration::from_millis(500);
const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn target(addr: SocketAddr) -> Target {
    let SocketAddr::V4(a) = addr else {
        panic!("v4 only")
    };
    Target {
        addr: a,
        bind: None,
    }
}

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

#[tokio::test]
async fn tcp_connects_refused_and_binds_the_source() {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let peers = Arc::new(Mutex::new(Vec::new()));
    let p = Arc::clone(&peers);
    tokio::spawn(async move {
        while let Ok((_, from)) = l.accept().await {
            p.lock().unwrap().push(from);
        }
    });
    assert_eq!(
        check::run(&Probe::Tcp, target(addr), "tcp 192.0.2.1:80", T).await,
        Ok("connected".to_string())
    );
    // From a chosen source address (127.0.0.2 is local too).
    let mut t = target(addr);
    t.bind = Some(Ipv4Addr::new(127, 0, 0, 2));
    assert!(check::run(&Probe::Tcp, t, "", T).await.is_ok());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let seen: Vec<Ipv4Addr> = peers
        .lock()
        .unwrap()
        .iter()
        .map(|a| match a {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        })
        .collect();
    assert_eq!(seen, vec![LO, Ipv4Addr::new(127, 0, 0, 2)]);

    let r = check::run(&Probe::Tcp, target(closed_port().await), "", T).await;
    assert_eq!(r, Err("connect: connection refused".to_string()));
}

/// What the tiny HTTP server answers for a path.
fn answer(path: &str) -> Option<Vec<u8>> {
    let r = match path {
        "/ok" => "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nhello ok world".to_string(),
        "/503" => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".to_string(),
        "/204" => "HTTP/1.1 204 No Content\r\n\r\n".to_string(),
        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nheal\r\n6\r\nthy ok\r\n0\r\n\r\n".to_string(),
        "/close" => "HTTP/1.0 200 OK\r\n\r\nstatus: healthy".to_string(),
        "/big" => {
            // The match is past the 64 KiB the checker reads.
            let body = format!("{}MARKER", "x".repeat(100 * 1024));
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        }
        "/garbage" => "SSH-2.0-OpenSSH_9.6\r\n\r\n".to_string(),
        _ => return None, // silent: never answers
    };
    Some(r.into_bytes())
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let req = String::from_utf8_lossy(&buf).into_owned();
    let path = req.split(' ').nth(1).unwrap_or_default().to_string();
    seen.lock().unwrap().push(req);
    match answer(&path) {
        Some(r) => {
            let _ = s.write_all(&r).await;
            let _ = s.shutdown().await;
        }
        None => tokio::time::sleep(Duration::from_secs(30)).await,
    }
}

async fn http_server(
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind((LO, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let seen = Arc::clone(&s2);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_http(tcp, seen).await,
                    Some(acc) => {
                        if let Ok(s) = acc.accept(tcp).await {
                            serve_http(s, seen).await;
                        }
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn http(path: &str, status: &[u16], body: Option<&str>) -> Probe {
    Probe::Http(HttpProbe {
        path: path.into(),
        host: Some("www.example.test".into()),
        status: status.to_vec(),
        body: body.map(Into::into),
        tls: None,
    })
}

#[tokio::test]
async fn http_status_body_and_failures() {
    let (addr, seen) = http_server(None).await;
    let t = target(addr);
    let run = |p: Probe| async move { check::run(&p, t, "", T).await };
    assert_eq!(
        run(http("/ok", &[200], None)).await,
        Ok("status 200".into())
    );
    {
        let reqs = seen.lock().unwrap();
        assert!(
            reqs[0].starts_with("GET /ok HTTP/1.1\r\nHost: www.example.test\r\n"),
            "{}",
            reqs[0]
        );
        assert!(reqs[0].contains("Connection: close\r\n"), "{}", reqs[0]);
    }
    assert_eq!(
        run(http("/ok", &[200], Some("ok w"))).await,
        Ok("status 200, body matched".into())
    );
    assert_eq!(
        run(http("/ok", &[200], Some("nope"))).await,
        Err("status 200, body does not contain `nope`".into())
    );
    assert_eq!(
        run(http("/503", &[200], None)).await,
        Err("status 503".into())
    );
    assert_eq!(
        run(http("/503", &[200, 503], None)).await,
        Ok("status 503".into())
    );
    assert_eq!(
        run(http("/204", &[200], None)).await,
        Err("status 204".into())
    );
    // Chunked: the match spans two chunks.
    assert_eq!(
        run(http("/chunked", &[200], Some("healthy ok"))).await,
        Ok("status 200, body matched".into())
    );
    // Body until close (HTTP/1.0, no length).
    assert_eq!(
        run(http("/close", &[200], Some("healthy"))).await,
        Ok("status 200, body matched".into())
    );
    // Only 64 KiB of body are read.
    assert_eq!(
        run(http("/big", &[200], Some("MARKER"))).await,
        Err("status 200, body does not contain `MARKER`".into())
    );
    assert_eq!(
        run(http("/garbage", &[200], None)).await,
        Err("not an HTTP response: `SSH-2.0-OpenSSH_9.6`".into())
    );
    // A server that accepts and never answers: the timeout.
    let start = Instant::now();
    assert_eq!(
        run(http("/silent", &[200], None)).await,
        Err("timed out after 500 ms".into())
    );
    assert!(start.elapsed() < Duration::from_millis(1500));
    // Nothing listening.
    let r = check::run(
        &http("/ok", &[200], None),
        target(closed_port().await),
        "",
        T,
    )
    .await;
    assert_eq!(r, Err("connect: connection refused".into()));
}

struct Pki {
    ca_pem: String,
    acceptor: tokio_rustls::TlsAcceptor,
}

fn pki(name: &str) -> Pki {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "health test CA");
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(tandem_syncd::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
    }
}

fn https(ca: Option<&str>, sni: Option<&str>, body: Option<&str>) -> Probe {
    Probe::Http(HttpProbe {
        path: "/ok".into(),
        host: None,
        status: vec![200],
        body: body.map(Into::into),
        tls: Some(HttpsTls {
            config: https_config(ca.map(str::as_bytes)).unwrap(),
            server_name: sni.map(Into::into),
        }),
    })
}

#[tokio::test]
async fn https_with_and_without_verification() {
    let server = pki("rs1.tandem.test");
    let (addr, seen) = http_server(Some(server.acceptor.clone())).await;
    let t = target(addr);
    // Default: any certificate (keepalived's SSL_GET).
    assert_eq!(
        check::run(&https(None, None, Some("ok")), t, "", T).await,
        Ok("status 200, body matched".into())
    );
    assert!(
        seen.lock().unwrap()[0].contains("Host: 127.0.0.1\r\n"),
        "{:?}",
        seen.lock().unwrap()
    );
    // verify with the right CA and name.
    assert_eq!(
        check::run(
            &https(Some(&server.ca_pem), Some("rs1.tandem.test"), None),
            t,
            "",
            T
        )
        .await,
        Ok("status 200".into())
    );
    // verify with the right CA but another name.
    let r = check::run(
        &https(Some(&server.ca_pem), Some("rs2.tandem.test"), None),
        t,
        "",
        T,
    )
    .await;
    let e = r.unwrap_err();
    assert!(
        e.starts_with("tls: ") && e.contains("certificate not valid for name \"rs2.tandem.test\""),
        "{e}"
    );
    // verify with another CA of the same name (an impostor key).
    let other = pki("rs1.tandem.test");
    let r = check::run(
        &https(Some(&other.ca_pem), Some("rs1.tandem.test"), None),
        t,
        "",
        T,
    )
    .await;
    let e = r.unwrap_err();
    assert!(
        e.starts_with("tls: ") && e.contains("invalid peer certificate: BadSignature"),
        "{e}"
    );
    // A plain HTTP server waits for a request line that never comes: no handshake.
    let (plain, _) = http_server(None).await;
    let r = check::run(&https(None, None, None), target(plain), "", T).await;
    assert_eq!(r, Err("timed out after 500 ms".into()));
}

/// Answers `pong <request>` to every datagram starting with `ping`, ignores the rest.
async fn udp_responder() -> SocketAddr {
    let s = UdpSocket::bind((LO, 0)).await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf).await {
            if buf[..n].starts_with(b"ping") {
                let mut r = b"pong ".to_vec();
                r.extend_from_slice(&buf[..n]);
                let _ = s.send_to(&r, from).await;
            }
        }
    });
    addr
}

fn udp(payload: &[u8], expect: Option<&[u8]>) -> Probe {
    Probe::Udp(UdpProbe {
        payload: payload.to_vec(),
        expect: expect.map(<[u8]>::to_vec),
    })
}

#[tokio::test]
async fn udp_reply_match_silence_and_unreachable() {
    let addr = udp_responder().await;
    let t = target(addr);
    assert_eq!(
        check::run(&udp(b"ping 1", None), t, "", T).await,
        Ok("reply of 11 bytes".into())
    );
    assert_eq!(
        check::run(&udp(b"ping 1", Some(b"pong")), t, "", T).await,
        Ok("reply of 11 bytes matched".into())
    );
    // A reply that does not match is no success: the check waits out its timeout.
    assert_eq!(
        check::run(&udp(b"ping 1", Some(b"PONG")), t, "", T).await,
        Err("timed out after 500 ms".into())
    );
    // No reply at all.
    assert_eq!(
        check::run(&udp(b"hello", None), t, "", T).await,
        Err("timed out after 500 ms".into())
    );
    // Nothing bound to the port: ICMP port unreachable comes back at once.
    let s = UdpSocket::bind((LO, 0)).await.unwrap();
    let closed = s.local_addr().unwrap();
    drop(s);
    let start = Instant::now();
    assert_eq!(
        check::run(&udp(b"ping", None), target(closed), "", T).await,
        Err("recv: connection refused".into())
    );
    assert!(start.elapsed() < Duration::from_millis(400));
}

fn script(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn exec(command: std::path::PathBuf, args: &[&str]) -> Probe {
    Probe::Exec(ExecProbe {
        command,
        args: args.iter().map(|s| s.to_string()).collect(),
    })
}

#[tokio::test]
async fn exec_exit_codes_environment_and_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let t = Target {
        addr: SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 9), 8080),
        bind: None,
    };
    let env = script(
        dir.path(),
        "env.sh",
        r#"[ "$TANDEM_SERVER_ADDR" = 127.0.0.9 ] && [ "$TANDEM_SERVER_PORT" = 8080 ] && [ "$TANDEM_SERVICE" = "tcp 192.0.2.1:80" ] && [ "$1" = arg1 ]"#,
    );
    assert_eq!(
        check::run(&exec(env.clone(), &["arg1"]), t, "tcp 192.0.2.1:80", T).await,
        Ok("exit 0".into())
    );
    assert_eq!(
        check::run(&exec(env, &["other"]), t, "tcp 192.0.2.1:80", T).await,
        Err("exit status 1".into())
    );
    let three = script(dir.path(), "three.sh", "exit 3");
    assert_eq!(
        check::run(&exec(three, &[]), t, "", T).await,
        Err("exit status 3".into())
    );
    // Killed at the timeout: the marker file is never written.
    let marker = dir.path().join("late");
    let slow = script(
        dir.path(),
        "slow.sh",
        &format!("sleep 1\ntouch {}", marker.display()),
    );
    let start = Instant::now();
    assert_eq!(
        check::run(&exec(slow, &[]), t, "", Duration::from_millis(200)).await,
        Err("timed out after 200 ms".into())
    );
    assert!(start.elapsed() < Duration::from_millis(800));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(!marker.exists(), "the command outlived its timeout");
    // Its children go with it: a background job of the script, in the same process group.
    let child_marker = dir.path().join("late-child");
    let forks = script(
        dir.path(),
        "forks.sh",
        &format!(
            "(sleep 1; touch {}) &
sleep 5",
            child_marker.display()
        ),
    );
    assert_eq!(
        check::run(&exec(forks, &[]), t, "", Duration::from_millis(200)).await,
        Err("timed out after 200 ms".into())
    );
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert!(
        !child_marker.exists(),
        "the command's child outlived the check's timeout"
    );
    let missing = dir.path().join("missing.sh");
    let e = check::run(&exec(missing, &[]), t, "", T).await.unwrap_err();
    assert!(
        e.starts_with("cannot run ") && e.ends_with("no such file or directory"),
        "{e}"
    );
}
