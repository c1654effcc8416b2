//! `tandem-rack`: the virtual rack of network namespaces with two DPDK directors.
//!
//! Tables and JSON go to stdout; the tool's own log goes to stderr (`RUST_LOG` or `-v`).
//! Exit codes: 0 success (for `demo`: every check passed), 1 failure, 130 interrupted.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tandem_hw_tests::bench::{self, CaptureSpec, TxSink};
use tandem_hw_tests::bench_run::{self, BenchOptions};
use tandem_hw_tests::client::{self, ClientOptions};
use tandem_hw_tests::rack::{self, RackOptions};
use tandem_hw_tests::serve::{self, ServeOptions};
use tandem_hw_tests::{Cancel, Error, Mode, Pmd, Prefix, Rack, RackStatus};

/// Build, check and tear down Tandem's virtual rack (namespaces, veth, bridges, DPDK directors).
#[derive(Debug, Parser)]
#[command(name = "tandem-rack", version, about)]
struct Cli {
    /// Log the tool's own steps in detail (every command it runs) on stderr.
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct PrefixArg {
    /// Name prefix of the rack's namespaces and files (a-z, 0-9, starting with a letter).
    #[arg(long, default_value = "tnd")]
    prefix: Prefix,
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    #[command(flatten)]
    prefix: PrefixArg,
    /// DPDK driver for the directors' veth ports [default: af_xdp; af_packet with --workers
    /// above 1, as the AF_XDP PMD opens one queue per veth].
    #[arg(long, value_name = "af_xdp|af_packet")]
    pmd: Option<Pmd>,
    /// Worker lcores of director A (one rx/tx queue each on its veths, RSS by flow hash).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=i64::from(rack::MAX_WORKERS)))]
    workers: u16,
    /// The tandem-dataplane binary (else $TANDEM_DATAPLANE, else next to this executable).
    #[arg(long, value_name = "PATH")]
    dataplane: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The name every answer starts with.
    #[arg(long)]
    name: String,
    /// TCP ports, comma separated.
    #[arg(long, value_delimiter = ',')]
    tcp: Vec<u16>,
    /// UDP ports, comma separated.
    #[arg(long, value_delimiter = ',')]
    udp: Vec<u16>,
    /// Addresses to bind (default: TCP 0.0.0.0, UDP every local address).
    #[arg(long, value_delimiter = ',')]
    bind: Vec<Ipv4Addr>,
    /// Most TCP connections open at once; more are closed immediately.
    #[arg(long, default_value_t = serve::DEFAULT_MAX_CONNS)]
    max_conns: usize,
    /// Close a TCP connection silent for this long.
    #[arg(long, default_value_t = serve::DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout_s: u64,
    /// Exit when this path disappears (the rack's state directory).
    #[arg(long)]
    watch: Option<PathBuf>,
    /// Exit when this process is gone.
    #[arg(long)]
    parent_pid: Option<u32>,
    /// Write this file once every socket is bound.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// The service, VIP:PORT.
    #[arg(long)]
    target: SocketAddrV4,
    /// Connections to open.
    #[arg(long, default_value_t = 10)]
    conns: u32,
    /// Messages per connection.
    #[arg(long, default_value_t = 1)]
    messages: u32,
    /// UDP (one socket, so one director connection, per `--conns`).
    #[arg(long)]
    udp: bool,
    /// Connections in flight at once.
    #[arg(long, default_value_t = 8)]
    parallel: u32,
    /// Bound on the whole run.
    #[arg(long, default_value_t = 20_000)]
    timeout_ms: u64,
    /// Bound on one connect or one answer.
    #[arg(long, default_value_t = 2_000)]
    op_timeout_ms: u64,
    /// Pause between two messages of a connection.
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CaptureArgs {
    /// Established connections in the capture (one SYN and --data-per-conn segments each).
    #[arg(long, default_value_t = 1_000_000)]
    conns: u32,
    /// Data segments per connection per pass of the capture.
    #[arg(long, default_value_t = 2)]
    data_per_conn: u32,
    /// Real servers of the NAT service.
    #[arg(long, default_value_t = 8)]
    servers: u32,
    /// The director port's MAC, the destination of every frame (DPDK's pcap PMD gives its
    /// first port 02:70:63:61:70:00).
    #[arg(long, default_value = "02:70:63:61:70:00")]
    port_mac: String,
    /// Order of each round of data segments: shuffled (a pseudo-random permutation per round)
    /// or sequential (the order the connections were opened).
    #[arg(long, default_value = "shuffled", value_name = "shuffled|sequential")]
    order: bench::Order,
}

impl CaptureArgs {
    fn spec(&self) -> Result<CaptureSpec, Error> {
        let spec = CaptureSpec {
            conns: self.conns,
            data_per_conn: self.data_per_conn,
            servers: self.servers,
            port_mac: bench::parse_mac(&self.port_mac)?,
            order: self.order,
        };
        spec.validate()?;
        Ok(spec)
    }
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Length of each measurement window (after one full pass of the capture).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Rounds of testpmd then the director; the table shows each and the medians.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Where frames go: devnull (tx_pcap=/dev/null) or drop (no tx stream: freed by the PMD).
    #[arg(long, default_value = "devnull", value_name = "devnull|drop")]
    tx: TxSink,
    /// The worker lcore (and testpmd's forwarding lcore).
    #[arg(long, default_value_t = 1)]
    lcore: u32,
    /// testpmd's main lcore (it prints the stats).
    #[arg(long, default_value_t = 0)]
    main_lcore: u32,
    /// Where captures are cached, by their parameters.
    #[arg(long, default_value = "/var/tmp/tandem-bench")]
    cache_dir: PathBuf,
    /// Configs, logs and stats of the run (kept when it fails).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The testpmd binary.
    #[arg(long, default_value = "dpdk-testpmd")]
    testpmd: PathBuf,
    /// The tandem-dataplane binary (else $TANDEM_DATAPLANE, else next to this executable).
    #[arg(long, value_name = "PATH")]
    dataplane: Option<PathBuf>,
    /// Bound on each process's start (EAL, the capture copied into mbufs).
    #[arg(long, default_value_t = 300)]
    startup_timeout_s: u64,
    /// Bound on the first full pass of the capture.
    #[arg(long, default_value_t = 120)]
    warmup_timeout_s: u64,
    /// Measure a side again (up to 3 runs; the least disturbed is kept) when its forwarding
    /// thread ran less than this share of the window: another process shared its CPU.
    #[arg(long, default_value_t = 0.9)]
    min_cpu_share: f64,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the capture (unless cached) and the director's config into the work directory
    /// (--work-dir), print the config's path, and run nothing.
    #[arg(long, requires = "work_dir")]
    config_only: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the topology and start both directors' dataplanes; leaves them running.
    Up(UpArgs),
    /// Stop the dataplanes and remove everything of the rack. Quiet if nothing is up.
    Down(PrefixArg),
    /// Up, prove the DPDK directors answer the VIP and their own addresses, down.
    Demo {
        #[command(flatten)]
        up: UpArgs,
        /// One JSON object on stdout instead of the table.
        #[arg(long)]
        json: bool,
        /// Run real TCP/UDP traffic through these forwarding modes: nat,tun,dr, all, or none.
        #[arg(long, default_value = "all", value_name = "nat,tun,dr")]
        modes: String,
        /// Connections of the failover drill (kill) the demo ends with in each mode; 0: no
        /// drills.
        #[arg(long, default_value_t = tandem_hw_tests::demo::DEMO_DRILL_CONNS)]
        drill_conns: u32,
    },
    /// (Rack helper) A real server's services: TCP answers each line `X` with
    /// `<name>:<port> X`, UDP each datagram likewise. Run by `up` inside each real server.
    #[command(hide = true)]
    Serve(ServeArgs),
    /// (Rack helper) The client's load: N connections of M messages to a service, checked,
    /// reported as JSON. Run inside the client namespace.
    #[command(hide = true)]
    Client(ClientArgs),
    /// Write the benchmark's capture (ARP replies from the real servers, then a SYN per
    /// connection, then its data segments) as a classic pcap file.
    BenchPcap {
        #[command(flatten)]
        capture: CaptureArgs,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Benchmark the whole dataplane on one lcore against dpdk-testpmd io forwarding: both
    /// replay the same capture from memory (net_pcap, infinite_rx) on the same lcore.
    BenchDataplane(Box<BenchArgs>),
    /// A failover drill on a director pair: N long-lived connections through the mode's VIP,
    /// the fault, and how many survived.
    Drill {
        #[command(flatten)]
        up: UpArgs,
        /// nat, tun or dr.
        #[arg(long, default_value = "nat")]
        mode: Mode,
        /// kill, link-down, failback, standby-restart or sync-cut (docs/failover.md).
        #[arg(long, default_value = "kill")]
        fault: tandem_hw_tests::drill::Fault,
        /// Long-lived connections.
        #[arg(long, default_value_t = 1000)]
        conns: u32,
        /// Traffic before the fault, ms.
        #[arg(long, default_value_t = 3000)]
        warmup_ms: u64,
        /// Traffic after the fault, ms.
        #[arg(long, default_value_t = 4000)]
        after_ms: u64,
        /// Run the drill this many times (the rack built and torn down each time) and sum up:
        /// min / p50 / p90 / max of the takeover and the other times, survivors, most actives.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
        /// One JSON object on stdout instead of the table (with --runs: `{"runs": [...],
        /// "summary": {...}}`).
        #[arg(long)]
        json: bool,
        /// Where to write the picture of answers per 10 ms (default:
        /// drill-<mode>-<fault>.svg in the current directory; with --runs, `-runK` is added
        /// before the extension).
        #[arg(long)]
        svg: Option<PathBuf>,
        /// A rack description (TOML: hosts, roles, how to reach each one — local network
        /// namespace or ssh — and each host's fault commands; deploy/rack-virtual.toml,
        /// deploy/rack-example-ssh.toml). Default: the virtual rack's, built under --prefix.
        #[arg(long, value_name = "FILE")]
        rack: Option<PathBuf>,
    },
    /// Check a rack description: print each host, how it is reached and its fault commands;
    /// with --probe also run `true` on each host through its access.
    RackCheck {
        /// The rack description.
        #[arg(long, value_name = "FILE")]
        rack: PathBuf,
        /// The prefix its {prefix}/{state} placeholders stand for.
        #[command(flatten)]
        prefix: PrefixArg,
        /// Reach every host (bounded: the ssh connect timeout, 15 s per host at most): for a
        /// rack that exists (`build = "none"`, or a virtual rack that is up).
        #[arg(long)]
        probe: bool,
    },
    /// (Rack helper) The drill's client: long-lived connections, a line every 100 ms each,
    /// every answer's time as JSON. Run inside the client namespace.
    #[command(hide = true)]
    DrillClient {
        /// VIP:port.
        #[arg(long)]
        target: std::net::SocketAddrV4,
        /// Connections.
        #[arg(long)]
        conns: u32,
        /// How long at most, ms.
        #[arg(long)]
        duration_ms: u64,
        /// Stop early once this file exists.
        #[arg(long)]
        stop_file: Option<PathBuf>,
    },
    /// What is up: namespaces, dataplane processes, their last counters.
    Status {
        #[command(flatten)]
        prefix: PrefixArg,
        /// JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(code) => code,
        Err(Error::Interrupted) => {
            eprintln!(
                "tandem-rack: interrupted; what it had started was stopped (a rack: torn down)"
            );
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("tandem-rack: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: bool) {
    let default = if verbose { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// SIGINT and SIGTERM set the flag; the work in progress notices it, stops and tears down.
fn cancel_on_signals() -> Result<Cancel, Error> {
    let cancel = Cancel::new();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, cancel.flag())
            .map_err(|e| Error::io(format!("installing a handler for signal {sig}"), e))?;
    }
    Ok(cancel)
}

/// Prints `value` as pretty JSON when `json`, else `text()`.
fn print_report<T: serde::Serialize>(
    json: bool,
    what: &str,
    value: &T,
    text: impl FnOnce() -> String,
) -> Result<(), Error> {
    if json {
        let out =
            serde_json::to_string_pretty(value).map_err(|e| Error::parse(what, e.to_string()))?;
        println!("{out}");
    } else {
        print!("{}", text());
    }
    Ok(())
}

fn options(up: UpArgs, cancel: Cancel) -> RackOptions {
    let mut opts = RackOptions::new(up.prefix.prefix);
    opts.pmd = up.pmd.unwrap_or_else(|| Pmd::default_for(up.workers));
    opts.workers = up.workers;
    opts.dataplane = up.dataplane;
    opts.cancel = cancel;
    opts
}

fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Up(up) => {
            let cancel = cancel_on_signals()?;
            let opts = options(up, cancel);
            let rack = Rack::up(&opts)?;
            let state = rack.state().clone();
            println!(
                "rack `{}` is up ({} directors on {}, director A with {} worker lcore{})",
                opts.prefix,
                opts.spec.directors.len(),
                opts.pmd,
                opts.workers,
                if opts.workers == 1 { "" } else { "s" }
            );
            println!(
                "  namespaces: {}",
                opts.spec.topology.namespaces(&opts.prefix).join(" ")
            );
            println!("  state:      {}", state.path().display());
            for id in tandem_hw_tests::DirectorId::ALL {
                println!(
                    "  director {}: pid {}, log {}, stats {}",
                    id.letter(),
                    rack.director_pid(id)
                        .map_or_else(|| "-".to_owned(), |p| p.to_string()),
                    state.log(id).display(),
                    state.stats(id).display()
                );
            }
            let spec = &opts.spec;
            if let Some(a) = spec.director(tandem_hw_tests::DirectorId::A) {
                for mode in Mode::ALL {
                    let vip = spec.mode_vip(mode);
                    let services: Vec<String> = a
                        .services
                        .iter()
                        .filter(|s| s.address == vip)
                        .map(|s| {
                            let proto = match s.protocol {
                                rack::ProtocolName::Tcp => "tcp",
                                rack::ProtocolName::Udp => "udp",
                            };
                            format!("{proto} {} {}", s.port, s.scheduler)
                        })
                        .collect();
                    println!("  {mode:<3} VIP:    {vip} ({})", services.join(", "));
                }
            }
            let helpers: Vec<String> = rack
                .helper_pids()
                .iter()
                .map(|(n, p)| format!("{n} {p}"))
                .collect();
            if !helpers.is_empty() {
                println!("  helpers:    {}", helpers.join(", "));
            }
            println!("  down with:  tandem-rack down --prefix {}", opts.prefix);
            rack.detach();
            Ok(ExitCode::SUCCESS)
        }
        Command::Down(p) => {
            // Teardown always runs to the end; a signal meanwhile is noted and ignored.
            let _ = cancel_on_signals()?;
            rack::preflight("tandem-rack down")?;
            let done = rack::teardown(&p.prefix)?;
            if !done.is_empty() {
                println!(
                    "rack `{}` down: {} processes stopped, {} namespaces deleted, {} directories removed",
                    p.prefix,
                    done.stopped.len(),
                    done.namespaces.len(),
                    done.removed.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            up,
            json,
            modes,
            drill_conns,
        } => {
            let modes = Mode::parse_list(&modes)?;
            let cancel = cancel_on_signals()?;
            let opts = options(up, cancel);
            let report = tandem_hw_tests::demo::run_demo_with_drills(
                &opts,
                &modes,
                (drill_conns > 0).then_some(drill_conns),
            )?;
            print_report(json, "demo report", &report, || report.table())?;
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Drill {
            up,
            mode,
            fault,
            conns,
            warmup_ms,
            after_ms,
            runs,
            json,
            svg,
            rack,
        } => {
            use tandem_hw_tests::drill::{DrillOptions, DrillReport, RunsSummary};
            let cancel = cancel_on_signals()?;
            let opts = options(up, cancel.clone());
            let drill = |svg: Option<PathBuf>| DrillOptions {
                mode,
                fault,
                conns,
                warmup: std::time::Duration::from_millis(warmup_ms),
                after: std::time::Duration::from_millis(after_ms),
                svg,
            };
            if runs == 1 {
                let report =
                    tandem_hw_tests::drill::run_drill_from(opts, rack.as_deref(), &drill(svg))?;
                print_report(json, "drill report", &report, || report.table())?;
                return Ok(if report.passed() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            let base = svg.unwrap_or_else(|| PathBuf::from(format!("drill-{mode}-{fault}.svg")));
            let mut reports: Vec<DrillReport> = Vec::new();
            for k in 1..=runs {
                if cancel.is_cancelled() {
                    break;
                }
                let stem = base.file_stem().and_then(|s| s.to_str()).unwrap_or("drill");
                let run_svg = base.with_file_name(format!("{stem}-run{k}.svg"));
                let report = tandem_hw_tests::drill::run_drill_from(
                    opts.clone(),
                    rack.as_deref(),
                    &drill(Some(run_svg)),
                )?;
                if !json {
                    if k == 1 {
                        print!("{}", DrillReport::HEADER);
                    }
                    print!("{}", report.row());
                }
                reports.push(report);
            }
            let summary = RunsSummary::of(&reports);
            let both = serde_json::json!({ "runs": reports, "summary": summary });
            print_report(json, "drill report", &both, || summary.text())?;
            Ok(
                if summary.passed == summary.runs && summary.runs == runs as usize {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
        Command::RackCheck {
            rack,
            prefix,
            probe,
        } => {
            let opts = RackOptions::new(prefix.prefix);
            let vars = tandem_hw_tests::drill::rack_vars(&opts);
            let desc = tandem_hw_tests::hosts::RackFile::load(&rack, &vars)?;
            print!("{}", desc.describe());
            let mut failed = 0;
            if probe {
                for h in &desc.hosts {
                    let r = h
                        .access
                        .command(&["true".into()], tandem_hw_tests::hosts::SMALL_TIMEOUT)
                        .run();
                    match r {
                        Ok(_) => println!("reach {}: ok", h.name),
                        Err(e) => {
                            failed += 1;
                            println!("reach {}: FAILED: {e}", h.name);
                        }
                    }
                }
            }
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::DrillClient {
            target,
            conns,
            duration_ms,
            stop_file,
        } => {
            let trace = tandem_hw_tests::drill::run_client(
                target,
                conns,
                std::time::Duration::from_millis(duration_ms),
                stop_file,
            )?;
            let text = serde_json::to_string(&trace)
                .map_err(|e| Error::parse("drill trace", e.to_string()))?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(a) => {
            let cancel = cancel_on_signals()?;
            let opts = ServeOptions {
                name: a.name,
                tcp_ports: a.tcp,
                udp_ports: a.udp,
                bind: a.bind,
                max_conns: a.max_conns,
                idle_timeout: Duration::from_secs(a.idle_timeout_s),
                watch: a.watch,
                parent_pid: a.parent_pid,
                ready_file: a.ready_file,
            };
            if opts.tcp_ports.is_empty() && opts.udp_ports.is_empty() {
                return Err(Error::parse("serve", "give --tcp and/or --udp ports"));
            }
            let summary = serve::serve(&opts, &cancel)?;
            eprintln!(
                "serve {}: {}",
                opts.name,
                serde_json::to_string(&summary).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Client(a) => {
            let cancel = cancel_on_signals()?;
            let opts = ClientOptions {
                target: a.target,
                udp: a.udp,
                conns: a.conns,
                messages: a.messages,
                parallel: a.parallel,
                timeout: Duration::from_millis(a.timeout_ms),
                op_timeout: Duration::from_millis(a.op_timeout_ms),
                interval: Duration::from_millis(a.interval_ms),
            };
            let report = client::run(&opts, &cancel)?;
            if a.json {
                let text = serde_json::to_string(&report)
                    .map_err(|e| Error::parse("client report", e.to_string()))?;
                println!("{text}");
            } else {
                println!("{}", report.summary());
            }
            Ok(if report.all_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::BenchPcap { capture, out } => {
            let spec = capture.spec()?;
            bench_run::write_capture(&spec, &out)?;
            println!(
                "{}: {} frames, {} bytes ({} ARP replies, {} SYNs, {} data segments), to {}",
                out.display(),
                spec.packets(),
                spec.file_size(),
                spec.servers,
                spec.conns,
                u64::from(spec.conns) * u64::from(spec.data_per_conn),
                bench::mac_string(spec.port_mac)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::BenchDataplane(a) => {
            let cancel = cancel_on_signals()?;
            let work_dir = a.work_dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!("tandem-bench-{}", std::process::id()))
            });
            let opts = BenchOptions {
                capture: a.capture.spec()?,
                seconds: Duration::from_secs(a.seconds),
                rounds: a.rounds,
                tx: a.tx,
                lcore: a.lcore,
                main_lcore: a.main_lcore,
                cache_dir: a.cache_dir.clone(),
                work_dir: work_dir.clone(),
                testpmd: a.testpmd.clone(),
                dataplane: a.dataplane.clone(),
                startup_timeout: Duration::from_secs(a.startup_timeout_s),
                warmup_timeout: Duration::from_secs(a.warmup_timeout_s),
                min_cpu_share: a.min_cpu_share,
                cancel,
            };
            if a.config_only {
                let path = bench_run::write_director_config(&opts)?;
                println!("{}", path.display());
                return Ok(ExitCode::SUCCESS);
            }
            let report = bench_run::run(&opts).inspect_err(|_| {
                eprintln!(
                    "tandem-rack: configs and logs of the failed run are in {}",
                    work_dir.display()
                );
            })?;
            print_report(a.json, "bench report", &report, || report.table())?;
            Ok(if report.connections_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status { prefix, json } => {
            let st = rack::status(&prefix.prefix)?;
            print_report(json, "status", &st, || status_table(&st))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn status_table(st: &RackStatus) -> String {
    if !st.anything_up() {
        return format!("rack `{}`: nothing is up\n", st.prefix);
    }
    let mut out = format!("rack `{}`\n", st.prefix);
    out.push_str(&format!(
        "  namespaces: {}\n",
        if st.namespaces.is_empty() {
            "(none)".to_owned()
        } else {
            st.namespaces.join(" ")
        }
    ));
    if let Some(dir) = &st.state_dir {
        out.push_str(&format!("  state:      {dir}\n"));
    }
    if let Some(meta) = &st.meta {
        if let Some(pmd) = meta.pmd {
            out.push_str(&format!("  pmd:        {pmd}\n"));
        }
        out.push_str(&format!("  workers:    director A {}\n", meta.workers));
    }
    for h in &st.helpers {
        out.push_str(&format!(
            "  {}: pid {} {}, log {}\n",
            h.helper,
            h.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            if h.alive { "running" } else { "NOT running" },
            h.log
        ));
    }
    for d in &st.directors {
        let pid = d.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let age = d.stats_age_ms.map_or_else(
            || "no stats".to_owned(),
            |a| format!("stats {:.1} s old", a as f64 / 1000.0),
        );
        out.push_str(&format!(
            "  director {}: pid {pid} {}, {age}\n",
            d.director,
            if d.alive { "running" } else { "NOT running" }
        ));
        for p in &d.ports {
            out.push_str(&format!(
                "    port {} ({}, id {}): mac {} address {}\n",
                p.name, p.device, p.port_id, p.mac, p.address
            ));
        }
        if let Some(total) = &d.total {
            let counters: Vec<String> = total.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!(
                "    counters: {}\n",
                if counters.is_empty() {
                    "all zero".to_owned()
                } else {
                    counters.join(" ")
                }
            ));
        }
        if d.lcores.len() > 1 {
            for l in &d.lcores {
                let counters: Vec<String> = l
                    .counters
                    .0
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                out.push_str(&format!(
                    "    lcore {}: {}\n",
                    l.lcore,
                    if counters.is_empty() {
                        "all zero".to_owned()
                    } else {
                        counters.join(" ")
                    }
                ));
            }
        }
    }
    out
}
