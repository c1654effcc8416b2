//! `tandem-dataplane`: one director's DPDK process.
//!
//! Startup order matters: the config is read and checked, logging and signal handling are set
//! up, the admin API's sockets are bound, and the reporting thread, the control thread and the
//! tokio runtime of the admin API are spawned *before* `rte_eal_init`, because after it every
//! new thread inherits the main lcore's CPU pinning. Then the EAL, the packet pool and the
//! ports come up, the control thread learns the workers' inboxes, the admin API starts
//! serving, and one worker poll loop runs on every EAL lcore until SIGTERM/SIGINT. SIGHUP
//! re-reads the configuration file (services and timeouts).
//!
//! Exit codes: 0 after a clean stop; 2 for a bad config file or bad EAL arguments (one error
//! line names the problem); 1 for any other failure.

mod buf;
mod worker;

use tandem_dataplane::control::board::StatsBoard;
use tandem_dataplane::control::command::{Command, INBOX_CAPACITY};
use tandem_dataplane::control::server::{self as admin, ControlHandle, Running};
use tandem_dataplane::control::state::ControlState;
use tandem_dataplane::sync::service::{self as sync_service, LocalService, LocalSetup};
use tandem_dataplane::sync::{SyncState, SyncWiring};
use tandem_dataplane::{build, config, stats};

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use tandem_dpdk::{Eal, MbufRing, Mempool, Port, PortConfig};
use tracing::{error, info, warn};

use config::Config;
use stats::{CounterSlot, PortReport};

/// How long a learned neighbour stays valid without a refresh: the Linux default
/// base_reachable_time is 30 s; ARP entries of a director change rarely, so 5 minutes.
const NEIGHBOUR_MAX_AGE_NS: u64 = 300 * 1_000_000_000;

/// Capacity of each worker's inbound redirect ring.
const REDIRECT_RING: u32 = 4096;

/// Tandem director dataplane (DPDK).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The director's TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration file and exit (0 if valid, 2 if not), starting nothing.
    #[arg(long)]
    check: bool,
}

/// A failure at startup and the exit code it deserves.
#[derive(Debug)]
enum Failure {
    /// The operator's input is wrong (config, EAL arguments, device names): exit 2.
    Input(String),
    /// Something else went wrong: exit 1.
    Runtime(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tandem-dataplane: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check {
        eprintln!("tandem-dataplane: {} is valid", cli.config.display());
        return ExitCode::SUCCESS;
    }
    init_logging(&cfg.dataplane.log_level);
    match run(&cli.config, &cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(msg)) => {
            error!("{msg}");
            eprintln!("tandem-dataplane: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            error!("{msg}");
            eprintln!("tandem-dataplane: {msg}");
            ExitCode::FAILURE
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

/// What the reporting thread needs once the ports are up.
struct ReportSetup {
    ports: Vec<PortReport>,
    lcores: Vec<u32>,
}

/// What the EAL side hands to the admin API once the workers exist.
struct ControlSetup {
    handle: ControlHandle,
    services: Arc<tandem_core::service::ServiceSet>,
    generation: u64,
    ready: tokio::sync::oneshot::Sender<()>,
    /// The sync side's shared state.
    sync: Arc<SyncState>,
    /// Where the `Local` service learns the workers (`None`: no `[sync]`).
    sync_ready: Option<tokio::sync::oneshot::Sender<LocalSetup>>,
}

fn run(config_path: &std::path::Path, cfg: &Config) -> Result<(), Failure> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| {
            Failure::Runtime(format!("cannot install handler for signal {sig}: {e}"))
        })?;
    }
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hangup))
        .map_err(|e| Failure::Runtime(format!("cannot install handler for SIGHUP: {e}")))?;

    // The control plane, before EAL init (its threads must not inherit the lcore pinning).
    let state = ControlState::new(
        config_path,
        cfg.clone(),
        build::timeouts(&cfg.connections),
        build::MAX_DESTS,
    )
    .map_err(|e| Failure::Input(format!("configuration refused: {e}")))?;
    let services = Arc::clone(state.set());
    let generation = state.generation();
    let listeners = admin::bind(&cfg.control).map_err(|e| Failure::Input(e.to_string()))?;
    let socket = listeners.path().to_path_buf();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name("tandem-admin")
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("cannot start the admin API runtime: {e}")))?;
    let (handle, control_thread) = admin::spawn(state, Arc::clone(&stop), hangup)
        .map_err(|e| Failure::Runtime(format!("cannot spawn the control thread: {e}")))?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let server_handle = handle.clone();
    let server = runtime.spawn(async move {
        // Serve once the workers exist; if the EAL side fails first, just remove the socket.
        if ready_rx.await.is_ok() {
            if let Err(e) = admin::serve(listeners, server_handle, shutdown_rx).await {
                error!("{e}");
            }
        } else {
            let _ = std::fs::remove_file(listeners.path());
        }
    });
    // The sync daemon's Local service: bound now, served once the workers exist.
    let sync_state = Arc::new(SyncState::new(cfg.sync.is_some()));
    let (sync_ready, sync_server) = match &cfg.sync {
        Some(s) => {
            let listener = sync_service::bind(&s.socket).map_err(Failure::Input)?;
            let path = PathBuf::from(&s.socket);
            let (tx, rx) = tokio::sync::oneshot::channel::<LocalSetup>();
            let shutdown = shutdown_tx.subscribe();
            let server = runtime.spawn(async move {
                match rx.await {
                    Ok(setup) => {
                        let svc = LocalService::new(setup);
                        if let Err(e) = sync_service::serve(listener, &path, svc, shutdown).await {
                            error!("{e}");
                        }
                    }
                    Err(_) => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            });
            // The ports' link, from the kernel for af_xdp/af_packet vdevs (their PMDs always
            // report it up): polled every 10 ms; lost, syncd's heartbeat stream is refused.
            let ifaces = tandem_dataplane::sync::kernel_ifaces(
                &cfg.eal.args,
                cfg.ports.iter().map(|p| p.device.as_str()),
            );
            if !ifaces.is_empty() {
                let st = Arc::clone(&sync_state);
                let mut shutdown = shutdown_tx.subscribe();
                runtime.spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(10));
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = shutdown.wait_for(|s| *s) => return,
                        }
                        let down = tandem_dataplane::sync::ports_down(&ifaces);
                        if down != st.ports_down() {
                            if down {
                                warn!(?ifaces, "sync: a service port lost its link: standing down");
                            } else {
                                info!(?ifaces, "sync: the service ports have their link again");
                            }
                        }
                        st.set_ports_down(down);
                    }
                });
            }
            (Some(tx), Some(server))
        }
        None => (None, None),
    };
    let control = ControlSetup {
        handle,
        services,
        generation,
        ready: ready_tx,
        sync: sync_state,
        sync_ready,
    };

    // One counter slot per possible lcore, allocated before any worker runs.
    let slots: Arc<Vec<CounterSlot>> = Arc::new(
        (0..tandem_dpdk::MAX_LCORE)
            .map(|_| CounterSlot::default())
            .collect(),
    );
    let (setup_tx, setup_rx) = mpsc::channel::<ReportSetup>();
    let reporter = spawn_reporter(cfg, Arc::clone(&slots), Arc::clone(&stop), setup_rx)?;

    let result = run_eal(cfg, &slots, &stop, setup_tx, control);
    stop.store(true, Ordering::Relaxed);
    let _ = shutdown_tx.send(true);
    if runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), server).await })
        .is_err()
    {
        warn!("the admin API did not stop within 5 s");
    }
    if let Some(s) = sync_server
        && runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), s).await })
            .is_err()
    {
        warn!("the sync Local service did not stop within 5 s");
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_file(&socket);
    if let Some(s) = &cfg.sync {
        let _ = std::fs::remove_file(&s.socket);
    }
    if control_thread.join().is_err() {
        warn!("the control thread panicked");
    }
    if let Some(r) = reporter
        && r.join().is_err()
    {
        warn!("the stats reporter thread panicked");
    }
    result
}

/// The stats-file writer. Created before EAL init so it is not pinned to a worker's CPU.
fn spawn_reporter(
    cfg: &Config,
    slots: Arc<Vec<CounterSlot>>,
    stop: Arc<AtomicBool>,
    setup_rx: mpsc::Receiver<ReportSetup>,
) -> Result<Option<std::thread::JoinHandle<()>>, Failure> {
    let Some(path) = cfg.dataplane.stats_file.clone().map(PathBuf::from) else {
        return Ok(None);
    };
    let interval = Duration::from_millis(cfg.dataplane.stats_interval_ms);
    let handle = std::thread::Builder::new()
        .name("tandem-stats".into())
        .spawn(move || {
            let Ok(setup) = setup_rx.recv() else { return };
            let write = |setup: &ReportSetup| {
                let lcores: Vec<(u32, &CounterSlot)> = setup
                    .lcores
                    .iter()
                    .filter_map(|l| slots.get(*l as usize).map(|s| (*l, s)))
                    .collect();
                if let Err(e) = stats::write_atomic(&path, &stats::render(&setup.ports, &lcores)) {
                    warn!("cannot write stats file {}: {e}", path.display());
                }
            };
            write(&setup);
            let mut next = Instant::now() + interval;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10).min(interval));
                if Instant::now() >= next {
                    write(&setup);
                    next += interval;
                }
            }
            // Workers publish their final counters before run() returns; wait for that.
            while setup_rx.recv_timeout(Duration::from_secs(10)).is_ok() {}
            write(&setup);
        })
        .map_err(|e| Failure::Runtime(format!("cannot spawn the stats thread: {e}")))?;
    Ok(Some(handle))
}

fn run_eal(
    cfg: &Config,
    slots: &Arc<Vec<CounterSlot>>,
    stop: &AtomicBool,
    setup_tx: mpsc::Sender<ReportSetup>,
    control: ControlSetup,
) -> Result<(), Failure> {
    info!(args = ?cfg.eal.args, "starting DPDK EAL");
    let eal = Eal::init("tandem-dataplane", &cfg.eal.args).map_err(|e| {
        Failure::Input(format!(
            "EAL initialisation failed ({e}); EAL arguments: {:?}",
            cfg.eal.args
        ))
    })?;
    let lcores = eal.lcores();
    let queues =
        u16::try_from(lcores.len()).map_err(|_| Failure::Input("too many lcores".into()))?;
    info!(?lcores, "EAL up: one worker per lcore");

    let d = &cfg.dataplane;
    // Validated within MIN..=MAX_MBUF_DATA_ROOM, so it fits a u16.
    let data_room = u16::try_from(d.mbuf_data_room).map_err(|_| {
        Failure::Input(format!(
            "dataplane.mbuf_data_room = {} does not fit 16 bits",
            d.mbuf_data_room
        ))
    })?;
    let pool = Mempool::with_data_room(&eal, "tandem_pkts", d.mbufs, d.mbuf_cache, data_room)
        .map_err(|e| Failure::Runtime(e.to_string()))?;

    let mut ports = Vec::with_capacity(cfg.ports.len());
    let mut reports = Vec::with_capacity(cfg.ports.len());
    let mut macs = Vec::with_capacity(cfg.ports.len());
    for p in &cfg.ports {
        let pc = PortConfig {
            rx_queues: queues,
            tx_queues: queues,
            rx_descriptors: d.rx_descriptors,
            tx_descriptors: d.tx_descriptors,
            promiscuous: true,
            mtu: p.mtu,
        };
        let port = Port::start(&p.device, &pc, &pool).map_err(|e| match e {
            tandem_dpdk::Error::Invalid(m) => Failure::Input(format!("port {:?}: {m}", p.name)),
            other => Failure::Runtime(format!("port {:?}: {other}", p.name)),
        })?;
        let mac = port.mac().map_err(|e| Failure::Runtime(e.to_string()))?;
        let link = port.link().map_err(|e| Failure::Runtime(e.to_string()))?;
        info!(port = %p.name, device = %p.device, id = port.id(), mac = %stats::mac_string(mac), address = %p.address,
              link_up = link.up, speed_mbps = link.speed_mbps, "port started");
        reports.push(PortReport {
            name: p.name.clone(),
            device: p.device.clone(),
            port_id: port.id(),
            mac: stats::mac_string(mac),
            address: p.address.to_string(),
        });
        macs.push(mac);
        ports.push(port);
    }
    let built = build::build(cfg, &macs)
        .map_err(|e| Failure::Input(format!("configuration refused: {e}")))?;
    let director = Arc::new(built.director);
    // The control plane's snapshot (same services, numbered by it) so ids agree.
    let services = control.services;
    info!(
        services = services.services().len(),
        real_servers = services.dests().len(),
        max_connections_per_lcore = built.conn.capacity,
        "virtual services loaded"
    );
    // One inbound ring per worker for frames whose connection it owns (the client endpoint
    // decides, so both directions of a NAT connection meet one connection table).
    let mut rings = Vec::with_capacity(lcores.len());
    for i in 0..lcores.len() {
        rings.push(
            MbufRing::new(&eal, &format!("tandem_redirect_{i}"), REDIRECT_RING)
                .map_err(|e| Failure::Runtime(e.to_string()))?,
        );
    }
    let board = worker::DestBoard::new(lcores.len(), build::MAX_DESTS);
    let stats_board = Arc::new(StatsBoard::new(lcores.len(), build::MAX_DESTS));
    let (inbox_tx, inboxes): (Vec<_>, Vec<_>) = (0..lcores.len())
        .map(|_| crossbeam_channel::bounded::<Command>(INBOX_CAPACITY))
        .unzip();
    let neighbour_bus: Vec<_> = (0..lcores.len())
        .map(|_| crossbeam_channel::bounded(worker::NEIGHBOUR_BUS_CAPACITY))
        .collect();

    // The stats file appears now: readiness for whoever started us.
    let _ = setup_tx.send(ReportSetup {
        ports: reports.clone(),
        lcores: lcores.clone(),
    });
    control
        .handle
        .set_running(Running {
            workers: inbox_tx.clone(),
            lcores: lcores.clone(),
            ports: reports.clone(),
            board: Arc::clone(&stats_board),
            slots: Arc::clone(slots),
            sync: Arc::clone(&control.sync),
        })
        .map_err(Failure::Runtime)?;
    let _ = control.ready.send(());
    let wiring = cfg.sync.as_ref().map(|s| {
        SyncWiring::new(
            Arc::clone(&control.sync),
            lcores.len(),
            s.peer_address,
            s.heartbeat_port,
        )
    });
    if let (Some(w), Some(ready)) = (&wiring, control.sync_ready) {
        let _ = ready.send(LocalSetup {
            wiring: w.clone(),
            workers: inbox_tx,
            control: control.handle.clone(),
        });
    }

    let shared = worker::Shared {
        ports: &ports,
        pool: &pool,
        director: &director,
        services: &services,
        conn: &built.conn,
        persist: &built.persist,
        rings: &rings,
        board: &board,
        inboxes: &inboxes,
        stats_board: &stats_board,
        generation: control.generation,
        neighbour_bus: &neighbour_bus,
        stop,
        origin: Instant::now(),
        neighbour_capacity: d.neighbour_capacity,
        neighbour_max_age: NEIGHBOUR_MAX_AGE_NS,
        idle_sleep_max: Duration::from_micros(d.idle_sleep_max_us),
        sync: wiring.as_ref(),
    };
    let failed = AtomicBool::new(false);
    info!("forwarding");
    let launched = eal.run_on_all_lcores(&|lcore| {
        let index = lcores.iter().position(|l| *l == lcore).unwrap_or(0);
        let Some(slot) = slots.get(lcore as usize) else {
            error!(lcore, "no counter slot for lcore");
            failed.store(true, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
            return;
        };
        if let Err(e) = worker::run(index, &shared, slot) {
            error!(lcore, "worker failed: {e}");
            failed.store(true, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
        }
    });
    // Final counters are published: let the reporter write them.
    let _ = setup_tx.send(ReportSetup {
        ports: reports,
        lcores,
    });
    drop(setup_tx);
    info!("stopping: ports, then EAL");
    drop(rings);
    drop(ports);
    drop(pool);
    drop(eal);
    launched.map_err(|e| Failure::Runtime(e.to_string()))?;
    if failed.load(Ordering::Relaxed) {
        return Err(Failure::Runtime("a worker lcore failed (see above)".into()));
    }
    info!("stopped cleanly");
    Ok(())
}
