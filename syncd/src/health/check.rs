//! The checkers: one check of one real server, async, bounded by its timeout.
//!
//! - `tcp`: a TCP connection is established (then closed).
//! - `http`/`https`: a hand-written HTTP/1.1 `GET` (`Connection: close`) over a TCP stream,
//!   with rustls for `https`: the status must be in the expected list; with a body match the
//!   body (at most [`BODY_LIMIT`] bytes, `Content-Length`, chunked or until close) must
//!   contain it. A full HTTP client would bring a connection pool, redirects, proxies and
//!   decompression a health check must not have, for one request line and a status line.
//! - `udp`: a datagram is sent and a reply must come back (containing `expect`, if set);
//!   an ICMP port unreachable is a failure at once (`connection refused`).
//! - `exec`: a command runs with the target in its environment (`TANDEM_SERVER_ADDR`,
//!   `TANDEM_SERVER_PORT`, `TANDEM_SERVICE`); exit 0 is up. It runs in a process group of
//!   its own, and when the timeout expires the whole group is killed (SIGKILL), so a script's
//!   own children (a `curl`, a `sleep`) go with it.
//!
//! Every check may bind its socket to a source address (the director's management or inside
//! interface). Results are `Ok(detail)` or `Err(reason)`, one short human line each.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// The most body bytes an HTTP check reads.
pub const BODY_LIMIT: usize = 64 * 1024;
/// The most bytes of status line and headers an HTTP check accepts.
pub const HEAD_LIMIT: usize = 16 * 1024;
/// The largest UDP reply read.
const UDP_LIMIT: usize = 64 * 1024;

/// What one check does.
#[derive(Debug, Clone)]
pub enum Probe {
    /// TCP connect.
    Tcp,
    /// HTTP(S) GET.
    Http(HttpProbe),
    /// UDP request/response.
    Udp(UdpProbe),
    /// An external command.
    Exec(ExecProbe),
}

impl Probe {
    /// The checker's name: `tcp`, `http`, `https`, `udp`, `exec`.
    pub fn name(&self) -> &'static str {
        match self {
            Probe::Tcp => "tcp",
            Probe::Http(h) if h.tls.is_some() => "https",
            Probe::Http(_) => "http",
            Probe::Udp(_) => "udp",
            Probe::Exec(_) => "exec",
        }
    }
}

/// An HTTP(S) GET.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// The request target, e.g. `/health`.
    pub path: String,
    /// The `Host` header; the target's address when unset.
    pub host: Option<String>,
    /// Accepted status codes (non-empty).
    pub status: Vec<u16>,
    /// A substring the body must contain.
    pub body: Option<String>,
    /// TLS (https) and the name to present (SNI, and checked against the certificate if
    /// the config verifies).
    pub tls: Option<HttpsTls>,
}

/// The TLS side of an https check.
#[derive(Clone)]
pub struct HttpsTls {
    /// The client configuration (verifying or not).
    pub config: Arc<rustls::ClientConfig>,
    /// SNI / the name the certificate must be valid for; the target's address when unset.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for HttpsTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A UDP request/response.
#[derive(Debug, Clone)]
pub struct UdpProbe {
    /// The datagram sent.
    pub payload: Vec<u8>,
    /// Bytes the reply must contain (any reply when unset).
    pub expect: Option<Vec<u8>>,
}

/// An external command.
#[derive(Debug, Clone)]
pub struct ExecProbe {
    /// The program (absolute path).
    pub command: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Who is checked: the real server's address and the port checked (the server's, or the
/// check's `connect_port`), and the virtual service (for `exec`'s environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Address and port to check.
    pub addr: SocketAddrV4,
    /// Source address to bind, if any.
    pub bind: Option<Ipv4Addr>,
}

/// Runs one check, bounded by `timeout`. `service` is the virtual service as text (for
/// `exec`).
pub async fn run(
    probe: &Probe,
    target: Target,
    service: &str,
    timeout: Duration,
) -> Result<String, String> {
    let fut = async {
        match probe {
            Probe::Tcp => {
                let s = connect(target).await?;
                drop(s);
                Ok("connected".to_string())
            }
            Probe::Http(h) => http(h, target).await,
            Probe::Udp(u) => udp(u, target).await,
            Probe::Exec(e) => exec(e, target, service).await,
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
    }
}

async fn connect(target: Target) -> Result<TcpStream, String> {
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    if let Some(b) = target.bind {
        sock.bind(SocketAddr::from((b, 0)))
            .map_err(|e| format!("bind {b}: {e}"))?;
    }
    sock.connect(SocketAddr::V4(target.addr))
        .await
        .map_err(|e| format!("connect: {}", io_reason(&e)))
}

/// `connection refused` rather than `Connection refused (os error 111)`.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    s.to_lowercase()
}

async fn http(h: &HttpProbe, target: Target) -> Result<String, String> {
    let tcp = connect(target).await?;
    let _ = tcp.set_nodelay(true);
    let host = h
        .host
        .clone()
        .unwrap_or_else(|| target.addr.ip().to_string());
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tandem-syncd\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        h.path
    );
    match &h.tls {
        None => exchange(tcp, req.as_bytes(), h).await,
        Some(t) => {
            let name = t
                .server_name
                .clone()
                .unwrap_or_else(|| target.addr.ip().to_string());
            let name = ServerName::try_from(name.clone())
                .map_err(|_| format!("tls: `{name}` is not a server name"))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&t.config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls: {}", crate::daemon::chain(&e)))?;
            exchange(tls, req.as_bytes(), h).await
        }
    }
}

/// Reads into `buf` (appending); 0 at the end of the stream. A TLS peer that closes without
/// `close_notify` (common with `Connection: close`) is an end too.
async fn read_some<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk).await {
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(format!("read: {}", io_reason(&e))),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    Close,
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &[u8],
    h: &HttpProbe,
) -> Result<String, String> {
    s.write_all(req)
        .await
        .map_err(|e| format!("write: {}", io_reason(&e)))?;
    let _ = s.flush().await;
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > HEAD_LIMIT {
            return Err(format!("response header longer than {HEAD_LIMIT} bytes"));
        }
        if read_some(&mut s, &mut buf).await? == 0 {
            return Err(if buf.is_empty() {
                "connection closed without a response".to_string()
            } else {
                "connection closed in the response header".to_string()
            });
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let code = parse_status(status_line)
        .ok_or_else(|| format!("not an HTTP response: `{}`", truncate(status_line, 60)))?;
    if !h.status.contains(&code) {
        return Err(format!("status {code}"));
    }
    let Some(want) = &h.body else {
        return Ok(format!("status {code}"));
    };
    let mut framing = Framing::Close;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if k.eq_ignore_ascii_case("content-length")
            && framing != Framing::Chunked
            && let Ok(n) = v.parse::<usize>()
        {
            framing = Framing::Length(n);
        }
    }
    let mut raw = buf.split_off(head_end + 4);
    // Chunked framing adds a little around each chunk; allow for it in the raw bound.
    let raw_limit = BODY_LIMIT + BODY_LIMIT / 4;
    loop {
        let done = match framing {
            Framing::Length(n) => raw.len() >= n.min(BODY_LIMIT),
            Framing::Chunked => dechunk(&raw).1,
            Framing::Close => false,
        };
        if done || raw.len() >= raw_limit {
            break;
        }
        if read_some(&mut s, &mut raw).await? == 0 {
            break;
        }
    }
    let body = match framing {
        Framing::Chunked => dechunk(&raw).0,
        _ => raw,
    };
    let body = &body[..body.len().min(BODY_LIMIT)];
    if find(body, want.as_bytes()).is_some() {
        Ok(format!("status {code}, body matched"))
    } else {
        Err(format!(
            "status {code}, body does not contain `{}`",
            truncate(want, 40)
        ))
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n).collect();
        format!("{t}...")
    }
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status(line: &str) -> Option<u16> {
    let mut it = line.split_ascii_whitespace();
    let v = it.next()?;
    if !v.starts_with("HTTP/") {
        return None;
    }
    let code = it.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Decodes as much of a chunked body as `raw` holds; `true` once the last chunk was seen.
fn dechunk(raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let Some(eol) = find(&raw[i..], b"\r\n") else {
            return (out, false);
        };
        let size_text = String::from_utf8_lossy(&raw[i..i + eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return (out, true);
        };
        i += eol + 2;
        if size == 0 {
            return (out, true);
        }
        let end = i.saturating_add(size).min(raw.len());
        out.extend_from_slice(&raw[i..end]);
        if end < i.saturating_add(size) || end + 2 > raw.len() {
            return (out, false);
        }
        i = end + 2;
    }
}

async fn udp(u: &UdpProbe, target: Target) -> Result<String, String> {
    let local = SocketAddr::from((target.bind.unwrap_or(Ipv4Addr::UNSPECIFIED), 0));
    let sock = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("bind {local}: {}", io_reason(&e)))?;
    sock.connect(SocketAddr::V4(target.addr))
        .await
        .map_err(|e| format!("connect: {}", io_reason(&e)))?;
    sock.send(&u.payload)
        .await
        .map_err(|e| format!("send: {}", io_reason(&e)))?;
    let mut buf = vec![0u8; UDP_LIMIT];
    // Replies that do not match are skipped until the timeout (a late reply to an earlier
    // check, or noise); the loop ends with the caller's timeout.
    loop {
        let n = sock
            .recv(&mut buf)
            .await
            .map_err(|e| format!("recv: {}", io_reason(&e)))?;
        let reply = &buf[..n];
        match &u.expect {
            None => return Ok(format!("reply of {n} bytes")),
            Some(want) if find(reply, want).is_some() => {
                return Ok(format!("reply of {n} bytes matched"));
            }
            Some(_) => continue,
        }
    }
}

async fn exec(e: &ExecProbe, target: Target, service: &str) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(&e.command);
    cmd.args(&e.args)
        .env("TANDEM_SERVER_ADDR", target.addr.ip().to_string())
        .env("TANDEM_SERVER_PORT", target.addr.port().to_string())
        .env("TANDEM_SERVICE", service)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(b) = target.bind {
        cmd.env("TANDEM_BIND_ADDR", b.to_string());
    }
    let mut child = cmd
        .spawn()
        .map_err(|err| format!("cannot run {}: {}", e.command.display(), io_reason(&err)))?;
    let mut group = GroupKill(child.id());
    let status = child
        .wait()
        .await
        .map_err(|err| format!("wait: {}", io_reason(&err)))?;
    // Reaped: its pid may be reused from now on, so the group is not killed after this.
    group.0 = None;
    match status.code() {
        Some(0) => Ok("exit 0".to_string()),
        Some(c) => Err(format!("exit status {c}")),
        None => Err("killed by a signal".to_string()),
    }
}

/// Kills process group `.0` (the exec check's command and whatever it started) when dropped
/// with it set: the check was cancelled, at its timeout, while the command still ran. The
/// command is not reaped yet then, so its pid, the group's id, cannot have been reused.
/// Through kill(1), reaped by tokio, without blocking and without unsafe code.
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = tokio::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
        }
    }
}

/// The client config of an https check: with `ca_pem`, the server's certificate must chain
/// to it and be valid for the name; without, any certificate is accepted (keepalived's
/// `SSL_GET` default: a check proves the service answers, not who it is), though the
/// handshake's signatures are still checked.
pub fn https_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let cfg = match ca_pem {
        Some(pem) => builder
            .with_root_certificates(crate::tls::pem_roots(pem)?)
            .with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// Accepts any certificate (but checks the handshake signatures with it).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status("HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status("SSH-2.0-OpenSSH"), None);
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"),
            (b"abcde".to_vec(), true)
        );
        assert_eq!(dechunk(b"3\r\nabc\r\n5\r\nde"), (b"abcde".to_vec(), false));
        assert_eq!(dechunk(b"3\r\nab"), (b"ab".to_vec(), false));
        assert_eq!(dechunk(b"zz\r\n"), (Vec::new(), true));
    }
}
