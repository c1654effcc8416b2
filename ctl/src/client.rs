//! The connection to the dataplane: its Unix socket (the default) or TCP, with TLS or mutual
//! TLS. Both have a connect timeout and a per-call timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tandem_proto::admin::admin_client::AdminClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Uri};

use crate::cli::Cli;
use crate::error::{self, CtlError};

/// Largest response accepted (a connection listing of 100000 entries fits).
const MAX_MESSAGE: usize = 64 << 20;

/// A connected admin client and what it is connected to (for messages).
#[derive(Debug, Clone)]
pub struct Connection {
    /// The gRPC client.
    pub client: AdminClient<Channel>,
    /// The socket path or server URL.
    pub target: String,
}

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket.
    Socket(PathBuf),
    /// TCP, `http://` or `https://` (then with a CA and optionally a client identity).
    Server {
        /// The URL.
        url: String,
        /// CA certificate file.
        ca: Option<PathBuf>,
        /// Client certificate and key files.
        identity: Option<(PathBuf, PathBuf)>,
    },
}

/// The target the command line names, with its options checked.
pub fn target(cli: &Cli) -> Result<Target, CtlError> {
    let identity = match (&cli.cert, &cli.key) {
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        (None, None) => None,
        _ => return Err(CtlError::usage("--cert and --key go together")),
    };
    let Some(url) = &cli.server else {
        if cli.ca.is_some() || identity.is_some() {
            return Err(CtlError::usage(
                "--ca, --cert and --key go with --server https://HOST:PORT",
            ));
        }
        return Ok(Target::Socket(cli.socket.clone()));
    };
    if url.starts_with("https://") {
        if cli.ca.is_none() {
            return Err(CtlError::usage(
                "--server https://... needs --ca (the CA that signed the dataplane's certificate)",
            ));
        }
    } else if url.starts_with("http://") {
        if cli.ca.is_some() || identity.is_some() {
            return Err(CtlError::usage(
                "--ca, --cert and --key need an https:// server URL",
            ));
        }
    } else {
        return Err(CtlError::usage(format!(
            "server URL `{url}` must start with https:// or http://"
        )));
    }
    Ok(Target::Server {
        url: url.clone(),
        ca: cli.ca.clone(),
        identity,
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, CtlError> {
    std::fs::read(path)
        .map_err(|e| CtlError::usage(format!("cannot read the {what} {}: {e}", path.display())))
}

/// Connects to the dataplane the command line names.
pub async fn connect(cli: &Cli) -> Result<Connection, CtlError> {
    let connect_timeout = Duration::from_secs(cli.connect_timeout.max(1));
    let call_timeout = Duration::from_secs(cli.rpc_timeout.max(1));
    connect_to(&target(cli)?, connect_timeout, call_timeout).await
}

/// Connects to `target`.
pub async fn connect_to(
    target: &Target,
    connect_timeout: Duration,
    call_timeout: Duration,
) -> Result<Connection, CtlError> {
    let (name, endpoint) = match target {
        Target::Socket(path) => (
            path.display().to_string(),
            // The URI is not used: the connector below always dials the socket.
            Endpoint::from_static("http://localhost"),
        ),
        Target::Server { url, ca, identity } => {
            let mut ep = Endpoint::from_shared(url.clone())
                .map_err(|e| CtlError::usage(format!("bad server URL `{url}`: {e}")))?;
            if let Some(ca) = ca {
                let mut tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read(ca, "CA certificate")?));
                if let Some((cert, key)) = identity {
                    tls = tls.identity(Identity::from_pem(
                        read(cert, "client certificate")?,
                        read(key, "client key")?,
                    ));
                }
                ep = ep
                    .tls_config(tls)
                    .map_err(|e| CtlError::usage(format!("TLS settings: {}", error::chain(&e))))?;
            }
            (url.clone(), ep)
        }
    };
    let endpoint = endpoint
        .connect_timeout(connect_timeout)
        .timeout(call_timeout);
    let unreachable = |reason: String| CtlError::Unreachable {
        target: name.clone(),
        reason,
    };
    let connecting = async {
        match target {
            Target::Socket(path) => {
                let path = path.clone();
                endpoint
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
            }
            Target::Server { .. } => endpoint.connect().await,
        }
    };
    let channel = tokio::time::timeout(connect_timeout, connecting)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", connect_timeout.as_secs())))?
        .map_err(|e| unreachable(error::innermost(&e).unwrap_or_else(|| e.to_string())))?;
    Ok(Connection {
        client: AdminClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        target: name,
    })
}
