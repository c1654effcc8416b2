//! `tandem-syncd`: one director's sync daemon — the peer link (replication and heartbeats
//! over gRPC with mutual TLS) and the active/standby role, driving the local dataplane over
//! its `Local` service. See docs/failover.md.
//!
//! Exit codes: 0 after a clean stop (SIGTERM/SIGINT); 2 for a bad config file or unusable
//! certificates (one error line names the problem); 1 for any other failure. SIGHUP reads
//! the file again and applies its health checks, its TLS material, the priority, preemption
//! and the heartbeat timers (the sync link's addresses, the dataplane socket, replication
//! bounds, the daemon section and the node id need a restart).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tandem_syncd::config::Config;
use tandem_syncd::daemon;
use tandem_syncd::health::Plan;
use tandem_syncd::local::GrpcLocal;
use tandem_syncd::tls::TlsMaterial;
use tracing::error;

/// Tandem's sync daemon (connection-table replication and failover).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The daemon's TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration file and the certificates it names, and exit (0 if valid,
    /// 2 if not), starting nothing.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tandem-syncd: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match TlsMaterial::load(&cfg.tls) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tandem-syncd: {}: {e}", cli.config.display());
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cfg.health_plans() {
        eprintln!("tandem-syncd: {}: {e}", cli.config.display());
        return ExitCode::from(2);
    }
    if cli.check {
        eprintln!("tandem-syncd: {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    init_logging(&cfg.daemon.log_level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("syncd")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(cfg.sync_link.listen).await {
            Ok(l) => l,
            Err(e) => {
                error!(listen = %cfg.sync_link.listen, error = %e, "cannot listen on the sync link");
                return ExitCode::FAILURE;
            }
        };
        let local = match GrpcLocal::new(cfg.dataplane.socket.clone()) {
            Ok(l) => l,
            Err(e) => {
                error!(error = %daemon::chain(&e), "dataplane.socket");
                return ExitCode::FAILURE;
            }
        };
        let (reload_tx, reload_rx) = tokio::sync::watch::channel(Vec::new());
        let (tls_tx, tls_rx) = tokio::sync::watch::channel(None);
        let (settings_tx, settings_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(reload_on_sighup(
            cli.config.clone(),
            cfg.clone(),
            ReloadTx {
                checks: reload_tx,
                tls: tls_tx,
                settings: settings_tx,
            },
        ));
        let reloads = daemon::Reloads {
            checks: reload_rx,
            tls: tls_rx,
            settings: settings_rx,
        };
        let run = daemon::run(cfg, tls, listener, local, shutdown_signal(), reloads);
        match run.await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = %e, "tandem-syncd failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Completes at the first SIGTERM or SIGINT (or at once if they cannot be watched, which
/// is logged: better stop than run unstoppable).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (term, int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            error!(error = %e, "cannot watch SIGTERM/SIGINT");
            return;
        }
    };
    let (mut term, mut int) = (term, int);
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

/// Where a reload hands what it read.
struct ReloadTx {
    checks: tokio::sync::watch::Sender<Vec<Plan>>,
    tls: tokio::sync::watch::Sender<Option<TlsMaterial>>,
    settings: tokio::sync::watch::Sender<Option<Config>>,
}

/// On every SIGHUP, reads the configuration file again and hands its health checks
/// (`[health]`, `[[check]]`) to the health task, its `[tls]` material (CA, certificate,
/// key, peer name: a certificate rotation without a restart, which on the active director
/// would hand the VIPs over) to the sync link, and the file itself to the core for its role
/// settings (`node.priority`, `node.preempt`, `[heartbeat]`) and the replication timers that
/// follow the heartbeat interval. A file that does not load, whose
/// checks are wrong, whose TLS files are unusable or whose `node.id` differs from the running
/// one changes nothing (the error is logged with its line and key, or the file and rustls'
/// reason). The other sections are read at start only: those that differ from the running
/// ones are named in the log as needing a restart.
async fn reload_on_sighup(path: PathBuf, running: Config, tx: ReloadTx) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot watch SIGHUP: no reload of the health checks");
            return;
        }
    };
    while hup.recv().await.is_some() {
        let loaded = Config::load(&path)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                if c.node.id != running.node.id {
                    return Err(format!(
                        "node.id: {} → {} takes a restart (the peer knows this director by its id)",
                        running.node.id, c.node.id
                    ));
                }
                let plans = c.health_plans()?;
                let tls = TlsMaterial::load(&c.tls).map_err(|e| e.to_string())?;
                Ok((c, plans, tls))
            });
        match loaded {
            Ok((c, plans, tls)) => {
                let restart = c.restart_only_changes(&running);
                tracing::info!(
                    file = %path.display(),
                    checks = plans.len(),
                    priority = c.node.priority,
                    "SIGHUP: health checks reloaded, TLS material handed to the sync link, role settings to the role machine"
                );
                if !restart.is_empty() {
                    tracing::warn!(
                        sections = ?restart,
                        "SIGHUP: these changed sections take effect at the next start only"
                    );
                }
                tx.checks.send_replace(plans);
                tx.tls.send_replace(Some(tls));
                tx.settings.send_replace(Some(c));
            }
            Err(e) => {
                error!(file = %path.display(), error = %e, "SIGHUP: reload refused, the settings in force stay")
            }
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
