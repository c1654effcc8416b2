//! What the integration tests that run the real `tandem-dataplane` share: a director process
//! in a scratch directory (killed and cleaned up on drop whatever happened), a gRPC channel to
//! one of its Unix sockets, and a scrape of its metrics endpoint.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

const BIN: &str = env!("CARGO_BIN_EXE_tandem-dataplane");

/// A running director, killed and cleaned up on drop whatever happened.
pub struct Director {
    child: Option<Child>,
    prefix: String,
    /// Its scratch directory (sockets and config live here).
    pub dir: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
    /// A free loopback port for its metrics endpoint.
    pub metrics: u16,
}

impl Director {
    /// Starts one in `<tmp>/tandem-<kind>-<pid>-<name>`, with the configuration
    /// `config_for(dir, file_prefix, metrics_port)` returns.
    pub fn start(
        kind: &str,
        name: &str,
        config_for: impl FnOnce(&Path, &str, u16) -> String,
    ) -> Director {
        let prefix = format!("tandem-{kind}-{}-{name}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let config = dir.join("dp.toml");
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        std::fs::write(&config, config_for(&dir, &prefix, metrics)).expect("write config");
        let child = Command::new(BIN)
            .args(["--config", config.to_str().expect("utf8")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tandem-dataplane");
        Director {
            child: Some(child),
            prefix,
            dir,
            config,
            metrics,
        }
    }

    /// Sends `sig` (`-HUP`, `-TERM`, ...) to the process.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }

    /// SIGTERM, then the exit code and stderr.
    pub fn stop(&mut self) -> (Option<i32>, String) {
        self.signal("-TERM");
        let Some(mut child) = self.child.take() else {
            return (None, String::new());
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let code = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (code, err)
    }

    /// A channel to the Unix socket `path`, once the director serves it (30 s at most).
    pub async fn channel(&mut self, path: &Path) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = &mut self.child
                && let Ok(Some(s)) = c.try_wait()
            {
                let (_, err) = self.stop();
                panic!("the director exited early ({s}): {err}");
            }
            if path.exists() {
                let p = path.to_path_buf();
                let ch = Endpoint::try_from("http://[::]:50051")
                    .expect("uri")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let p = p.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(p).await?,
                            ))
                        }
                    }))
                    .await;
                if let Ok(ch) = ch {
                    return ch;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no socket {} within 30 s",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.prefix));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `GET /metrics` over a plain TCP connection: the whole HTTP response.
pub async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the metrics endpoint");
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: tandem\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut reply))
        .await
        .expect("an answer within 10 s")
        .expect("reply");
    reply
}

/// The head of a test director's file with `[sync]`: EAL on `lcores` with one vdev `vdev`
/// (the port's device is its name, before any `,`), the admin socket and metrics, the sync
/// socket, one outside port 203.0.113.11/24 and the VIP 203.0.113.10 on it. Each test appends
/// its services.
pub fn sync_config_head(
    prefix: &str,
    lcores: &str,
    vdev: &str,
    admin: &Path,
    sync: &Path,
    metrics: u16,
) -> String {
    let device = vdev.split(',').next().unwrap_or(vdev);
    format!(
        r#"[eal]
args = ["-l", "{lcores}", "--no-pci", "--no-huge", "-m", "256", "--file-prefix", "{prefix}",
        "--vdev", "{vdev}", "--log-level", "lib.eal:warning"]
[dataplane]
idle_sleep_max_us = 200
[control]
socket = "{admin}"
metrics_listen = "127.0.0.1:{metrics}"
[sync]
socket = "{sync}"
peer_address = "203.0.113.12"
[[port]]
name = "outside"
device = "{device}"
address = "203.0.113.11/24"
[[vip]]
address = "203.0.113.10"
port = "outside"
"#,
        admin = admin.display(),
        sync = sync.display()
    )
}
