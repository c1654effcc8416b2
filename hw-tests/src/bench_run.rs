//! Runs the whole-dataplane benchmark described in [`crate::bench`]: the capture (cached by its
//! parameters), then per round `dpdk-testpmd` io forwarding and `tandem-dataplane`, one after
//! the other, on the same `net_pcap` vdev and the same lcore, each for a fixed window after a
//! full pass of the capture. Every wait is bounded; a process still running when anything
//! fails (or on SIGINT/SIGTERM) is stopped by its guard, and its DPDK runtime directory
//! (`/var/run/dpdk/<prefix>`) removed.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::bench::{
    self, BenchReport, CaptureSpec, Machine, Measured, Round, RunSpec, Sample, Summary, TxSink,
};
use crate::error::{Error, Result};
use crate::exec::Cancel;
use crate::process::{self, Stopped};
use crate::rack::DPDK_RUNTIME_ROOT;
use crate::stats::Stats;

/// How to run the benchmark.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The capture to replay.
    pub capture: CaptureSpec,
    /// Length of each measurement window.
    pub seconds: Duration,
    /// testpmd + director rounds.
    pub rounds: u32,
    /// Where frames go.
    pub tx: TxSink,
    /// The worker lcore (testpmd's forwarding lcore).
    pub lcore: u32,
    /// testpmd's main lcore.
    pub main_lcore: u32,
    /// Where captures are cached.
    pub cache_dir: PathBuf,
    /// Where configs, logs and stats go (removed after a successful run).
    pub work_dir: PathBuf,
    /// The testpmd binary.
    pub testpmd: PathBuf,
    /// The dataplane binary; else found like the rack finds it.
    pub dataplane: Option<PathBuf>,
    /// Bound on a process's start (EAL, the capture copied into mbufs).
    pub startup_timeout: Duration,
    /// Bound on the first full pass once the process runs.
    pub warmup_timeout: Duration,
    /// A side whose forwarding thread ran less than this share of its window (another
    /// process on its CPU) is measured again, up to 3 runs; the least disturbed run is kept.
    pub min_cpu_share: f64,
    /// SIGINT/SIGTERM.
    pub cancel: Cancel,
}

/// Writes the capture of `spec` into `cache_dir` unless a file of the right size is there;
/// returns its path.
pub fn ensure_capture(spec: &CaptureSpec, cache_dir: &Path) -> Result<PathBuf> {
    spec.validate()?;
    std::fs::create_dir_all(cache_dir)
        .map_err(|e| Error::io(format!("creating {}", cache_dir.display()), e))?;
    let path = cache_dir.join(spec.cache_name());
    let want = spec.file_size();
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == want) {
        tracing::info!(path = %path.display(), "reusing the cached capture");
        return Ok(path);
    }
    write_capture(spec, &path)?;
    let got = std::fs::metadata(&path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
        .len();
    if got != want {
        return Err(Error::bench(
            "capture",
            format!("{} has {got} bytes, expected {want}", path.display()),
        ));
    }
    Ok(path)
}

/// Writes the capture of `spec` to `path` (through a temporary file, renamed at the end).
pub fn write_capture(spec: &CaptureSpec, path: &Path) -> Result<()> {
    spec.validate()?;
    let started = Instant::now();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let file =
        File::create(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    let written = spec
        .write(BufWriter::with_capacity(1 << 20, file))
        .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
        .and_then(|f| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", tmp.display()), e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", tmp.display(), path.display()),
            e,
        )
    })?;
    tracing::info!(
        path = %path.display(),
        packets = spec.packets(),
        bytes = spec.file_size(),
        ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "capture written"
    );
    Ok(())
}

/// A process of the benchmark: stopped (SIGTERM, then SIGKILL) and its DPDK runtime
/// directory removed when dropped.
struct Guard {
    name: &'static str,
    child: Option<Child>,
    runtime_dir: PathBuf,
}

impl Guard {
    fn stop(&mut self, grace: Duration) -> Result<(Stopped, std::process::ExitStatus)> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::bench(self.name, "already stopped"));
        };
        process::stop_child(&mut child, grace)
    }

    fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c
                .try_wait()
                .map_err(|e| Error::io(format!("waiting for {}", self.name), e)),
            None => Ok(None),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            tracing::warn!(name = self.name, pid = child.id(), "stopping");
            let _ = process::stop_child(&mut child, Duration::from_secs(10));
        }
        match std::fs::remove_dir_all(&self.runtime_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %self.runtime_dir.display(), "cannot remove: {e}"),
        }
    }
}

fn spawn(
    name: &'static str,
    program: &Path,
    args: &[String],
    stdout: Stdio,
    log: &Path,
    prefix: &str,
) -> Result<Guard> {
    let err = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(err)
        .process_group(0);
    tracing::debug!(?cmd, "spawn");
    let child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", program.display()), e))?;
    Ok(Guard {
        name,
        child: Some(child),
        runtime_dir: Path::new(DPDK_RUNTIME_ROOT).join(prefix),
    })
}

fn shell_line(program: &Path, args: &[String]) -> String {
    std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| {
            if a.contains([' ', ',', '\'', '"', '*', '$']) {
                format!("'{a}'")
            } else {
                a.clone()
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

fn died(name: &str, status: std::process::ExitStatus, log: &Path) -> Error {
    Error::bench(
        name,
        format!(
            "exited early ({status}); last lines of {}:\n{}",
            log.display(),
            process::log_tail(log, 25)
        ),
    )
}

/// Where a measurement is.
struct Phases {
    started: Instant,
    first: Option<Duration>,
    warm_rx: u64,
    seconds: Duration,
    startup_timeout: Duration,
    warmup_timeout: Duration,
}

impl Phases {
    /// Ok(true) once the window is complete; an error when a phase overran its bound.
    fn check(&mut self, name: &str, samples: &[Sample]) -> Result<bool> {
        let now = self.started.elapsed();
        if let Some(s) = samples.first()
            && self.first.is_none()
        {
            self.first = Some(s.t);
        }
        if bench::window(samples, self.warm_rx, self.seconds).is_some() {
            return Ok(true);
        }
        match self.first {
            None if now > self.startup_timeout => Err(Error::Timeout {
                command: format!("{name} start (EAL, capture into mbufs)"),
                secs: self.startup_timeout.as_secs(),
            }),
            Some(f) if now > f + self.warmup_timeout + self.seconds * 2 => {
                let rx = samples.last().map_or(0, |s| s.rx);
                Err(Error::bench(
                    name,
                    format!(
                        "no complete window within {} s of its first counters: {rx} frames \
                         received, a pass is {}",
                        (self.warmup_timeout + self.seconds * 2).as_secs(),
                        self.warm_rx
                    ),
                ))
            }
            _ => Ok(false),
        }
    }
}

/// Runs testpmd io forwarding and measures it.
fn run_testpmd(opts: &BenchOptions, run: &RunSpec, warm_rx: u64) -> Result<(Measured, String)> {
    let args = bench::testpmd_args(run)?;
    let command = shell_line(&opts.testpmd, &args);
    tracing::info!(%command, "testpmd");
    let log = opts.work_dir.join("testpmd.log");
    // Line-buffered stdout, so each stats block arrives when it is printed.
    let mut stdbuf_args = vec!["-oL".to_owned(), opts.testpmd.display().to_string()];
    stdbuf_args.extend(args.iter().cloned());
    let mut guard = spawn(
        "dpdk-testpmd",
        Path::new("stdbuf"),
        &stdbuf_args,
        Stdio::piped(),
        &log,
        &run.io_prefix,
    )?;
    let started = Instant::now();
    let stdout = guard
        .child
        .as_mut()
        .and_then(|c| c.stdout.take())
        .ok_or_else(|| Error::bench("dpdk-testpmd", "no stdout pipe"))?;
    let pid = guard.child.as_ref().map_or(0, Child::id);
    let (tx, rx) = mpsc::channel::<Sample>();
    let out_log = opts.work_dir.join("testpmd.stdout.log");
    let mut out_file = File::create(&out_log)
        .map_err(|e| Error::io(format!("creating {}", out_log.display()), e))?;
    let reader = thread::spawn(move || {
        let mut parser = bench::TestpmdParser::new();
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let _ = out_file.write_all(&line);
            let _ = out_file.write_all(b"\n");
            let text = String::from_utf8_lossy(&line);
            if let Some(fields) = parser.feed(&text)
                && let Some(mut s) = bench::testpmd_sample(started.elapsed(), &fields)
            {
                s.cpu = bench::thread_cpu_ns(pid);
                if tx.send(s).is_err() {
                    break;
                }
            }
        }
    });
    let mut phases = Phases {
        started,
        first: None,
        warm_rx,
        seconds: opts.seconds,
        startup_timeout: opts.startup_timeout,
        warmup_timeout: opts.warmup_timeout,
    };
    let mut samples = Vec::new();
    loop {
        opts.cancel.check()?;
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(s) => samples.push(s),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = guard.stop(Duration::from_secs(5))?.1;
                return Err(died("dpdk-testpmd", status, &log));
            }
        }
        if let Some(status) = guard.exited()? {
            return Err(died("dpdk-testpmd", status, &log));
        }
        if phases.check("dpdk-testpmd", &samples)? {
            break;
        }
    }
    let (stopped, status) = guard.stop(Duration::from_secs(20))?;
    drop(guard);
    let _ = reader.join();
    if stopped == Stopped::Killed {
        tracing::warn!("testpmd ignored SIGTERM and was killed");
    } else if !status.success() {
        tracing::warn!(%status, "testpmd exited unsuccessfully after SIGTERM");
    }
    let (a, b) = bench::window(&samples, warm_rx, opts.seconds)
        .ok_or_else(|| Error::bench("dpdk-testpmd", "no window"))?;
    Ok((bench::measure(a, b), command))
}

/// What the director's run gave.
struct DirectorRun {
    measured: Measured,
    last: Sample,
    command: String,
    config: String,
}

/// Runs the director and measures it.
fn run_director(
    opts: &BenchOptions,
    run: &RunSpec,
    warm_rx: u64,
    binary: &Path,
) -> Result<DirectorRun> {
    let stats_file = opts.work_dir.join("dataplane.stats.json");
    let (cfg_path, text) = director_config_file(opts, run)?;
    let args = vec!["--config".to_owned(), cfg_path.display().to_string()];
    let command = shell_line(binary, &args);
    tracing::info!(%command, "director");
    let log = opts.work_dir.join("dataplane.log");
    let mut guard = spawn(
        "tandem-dataplane",
        binary,
        &args,
        Stdio::from(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| Error::io(format!("opening {}", log.display()), e))?,
        ),
        &log,
        &run.dp_prefix,
    )?;
    let started = Instant::now();
    let pid = guard.child.as_ref().map_or(0, Child::id);
    let mut phases = Phases {
        started,
        first: None,
        warm_rx,
        seconds: opts.seconds,
        startup_timeout: opts.startup_timeout,
        warmup_timeout: opts.warmup_timeout,
    };
    let mut samples: Vec<Sample> = Vec::new();
    let mut mac_checked = false;
    loop {
        opts.cancel.check()?;
        thread::sleep(Duration::from_millis(5));
        if let Some(status) = guard.exited()? {
            return Err(died("tandem-dataplane", status, &log));
        }
        let stats = match Stats::read(&stats_file) {
            Ok(s) => Some(s),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(stats) = stats {
            if !mac_checked {
                check_port_mac(&stats, &opts.capture)?;
                mac_checked = true;
            }
            let mut s = bench::director_sample(started.elapsed(), &stats.total);
            // A sample is taken when the worker has published new counters (every 100 ms):
            // its time is then known to within the polling period.
            if samples.last().is_none_or(|l| l.rx != s.rx) {
                s.cpu = bench::thread_cpu_ns(pid);
                samples.push(s);
            }
        }
        if phases.check("tandem-dataplane", &samples)? {
            break;
        }
    }
    let (stopped, status) = guard.stop(Duration::from_secs(60))?;
    drop(guard);
    if stopped == Stopped::Killed || !status.success() {
        return Err(Error::bench(
            "tandem-dataplane",
            format!(
                "did not stop cleanly on SIGTERM ({status}); last lines of {}:\n{}",
                log.display(),
                process::log_tail(&log, 25)
            ),
        ));
    }
    let last = bench::director_sample(started.elapsed(), &Stats::read(&stats_file)?.total);
    let (a, b) = bench::window(&samples, warm_rx, opts.seconds)
        .ok_or_else(|| Error::bench("tandem-dataplane", "no window"))?;
    Ok(DirectorRun {
        measured: bench::measure(a, b),
        last,
        command,
        config: text,
    })
}

fn check_port_mac(stats: &Stats, capture: &CaptureSpec) -> Result<()> {
    let want = bench::mac_string(capture.port_mac);
    let got = stats
        .ports
        .first()
        .and_then(|p| crate::net::normalize_mac(&p.mac))
        .unwrap_or_default();
    if got != want {
        return Err(Error::bench(
            "tandem-dataplane",
            format!(
                "its port's MAC is `{got}` but the capture is addressed to {want}; rerun with \
                 --port-mac {got}"
            ),
        ));
    }
    Ok(())
}

fn machine(before: String) -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    Machine {
        nproc: crate::config::online_cpus().len(),
        cpu_model,
        loadavg_before: before,
        loadavg_after: loadavg(),
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Most runs of one side in a round when its lcore turns out to be shared; the run whose
/// forwarding thread had the largest share of its CPU is kept.
const MAX_ATTEMPTS: u32 = 3;

/// Whether a measurement's forwarding thread had too little of its CPU (NaN: unknown, not
/// contended).
fn contended(share: f64, min: f64) -> bool {
    share < min
}

/// Whether a run whose forwarding thread had `share` of its CPU beats one that had `best`
/// (an unknown share, NaN, never beats a known one).
fn less_disturbed(share: f64, best: f64) -> bool {
    best.is_nan() || share > best
}

/// The capture (written unless cached), the work directory, and what both processes are run
/// with.
fn prepare(opts: &BenchOptions) -> Result<RunSpec> {
    let pcap = ensure_capture(&opts.capture, &opts.cache_dir)?;
    std::fs::create_dir_all(&opts.work_dir)
        .map_err(|e| Error::io(format!("creating {}", opts.work_dir.display()), e))?;
    let mbufs = bench::mbufs_for(opts.capture.packets())?;
    let pid = std::process::id();
    Ok(RunSpec {
        pcap,
        tx: opts.tx,
        lcore: opts.lcore,
        main_lcore: opts.main_lcore,
        mbufs,
        memory_mb: bench::eal_memory_mb(mbufs, bench::BENCH_MBUF_DATA_ROOM),
        io_prefix: format!("tandem-bench-io-{pid}"),
        dp_prefix: format!("tandem-bench-dp-{pid}"),
    })
}

/// Writes the director's config of the benchmark (`dataplane.toml`, its stats file beside it)
/// into the work directory, the capture into the cache, and returns the config's path: for
/// running the dataplane on the benchmark's traffic by other means (e.g. under callgrind,
/// `scripts/instructions-dataplane.sh`). Runs nothing.
pub fn write_director_config(opts: &BenchOptions) -> Result<PathBuf> {
    let run = prepare(opts)?;
    Ok(director_config_file(opts, &run)?.0)
}

/// Writes the director's config into the work directory (checked by the dataplane's own
/// validation first); returns its path and text.
fn director_config_file(opts: &BenchOptions, run: &RunSpec) -> Result<(PathBuf, String)> {
    let stats_file = opts.work_dir.join("dataplane.stats.json");
    let _ = std::fs::remove_file(&stats_file);
    let cfg = bench::director_config(&opts.capture, run, &stats_file)?;
    let text = crate::config::to_toml(&cfg)?;
    crate::config::from_toml(&text)?;
    let cfg_path = opts.work_dir.join("dataplane.toml");
    std::fs::write(&cfg_path, &text)
        .map_err(|e| Error::io(format!("writing {}", cfg_path.display()), e))?;
    Ok((cfg_path, text))
}

/// Runs the whole benchmark.
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    opts.capture.validate()?;
    if opts.rounds == 0 || opts.rounds > 20 {
        return Err(Error::parse(
            "--rounds",
            format!("{} is not within 1..=20", opts.rounds),
        ));
    }
    if opts.seconds < Duration::from_secs(1) || opts.seconds > Duration::from_secs(600) {
        return Err(Error::parse("--seconds", "must be within 1..=600"));
    }
    let cpus = crate::config::online_cpus();
    for (what, l) in [("--lcore", opts.lcore), ("--main-lcore", opts.main_lcore)] {
        if !cpus.contains(&l) {
            return Err(Error::parse(
                what,
                format!("CPU {l} is not online ({cpus:?})"),
            ));
        }
    }
    if opts.lcore == opts.main_lcore {
        return Err(Error::parse("--lcore", "must differ from --main-lcore"));
    }
    let binary = process::locate_dataplane(opts.dataplane.as_deref())?;
    let load_before = loadavg();
    let run = prepare(opts)?;
    let pcap = run.pcap.clone();
    let packets = opts.capture.packets();
    let mut report = BenchReport {
        capture: Some(opts.capture.clone()),
        pcap: pcap.display().to_string(),
        packets_per_pass: packets,
        frame_bytes: [
            bench::ARP_FRAME_LEN,
            bench::SYN_FRAME_LEN,
            bench::DATA_FRAME_LEN,
        ],
        tx: opts.tx,
        lcore: opts.lcore,
        seconds: opts.seconds.as_secs_f64(),
        connections: opts.capture.conns,
        ..BenchReport::default()
    };
    for round in 1..=opts.rounds {
        let mut io_best: Option<(Measured, String)> = None;
        for attempt in 1..=MAX_ATTEMPTS {
            tracing::info!(round, attempt, "testpmd io forwarding");
            let (io, cmd) = run_testpmd(opts, &run, packets)?;
            tracing::info!(
                round,
                mpps = io.rx_pps / 1e6,
                cpu_share = io.cpu_share,
                "testpmd measured"
            );
            let done = !contended(io.cpu_share, opts.min_cpu_share);
            if io_best
                .as_ref()
                .is_none_or(|(b, _)| less_disturbed(io.cpu_share, b.cpu_share))
            {
                io_best = Some((io, cmd));
            }
            if done {
                break;
            }
            report.retries += 1;
            tracing::warn!(
                round,
                "testpmd's lcore was shared with another process; again"
            );
        }
        let (io, io_cmd) = io_best.ok_or_else(|| Error::bench("dpdk-testpmd", "not measured"))?;
        let mut dp_best: Option<DirectorRun> = None;
        for attempt in 1..=MAX_ATTEMPTS {
            tracing::info!(round, attempt, "director");
            let dp = run_director(opts, &run, packets, &binary)?;
            let m = &dp.measured;
            tracing::info!(
                round,
                mpps = m.rx_pps / 1e6,
                cpu_share = m.cpu_share,
                "director measured"
            );
            let done = !contended(m.cpu_share, opts.min_cpu_share);
            if dp_best
                .as_ref()
                .is_none_or(|b| less_disturbed(m.cpu_share, b.measured.cpu_share))
            {
                dp_best = Some(dp);
            }
            if done {
                break;
            }
            report.retries += 1;
            tracing::warn!(
                round,
                "the director's lcore was shared with another process; again"
            );
        }
        let dp = dp_best.ok_or_else(|| Error::bench("tandem-dataplane", "not measured"))?;
        report.director_not_forwarded_window += dp.measured.rx - dp.measured.fwd;
        for (k, v) in bench::drops(&dp.measured.other) {
            *report.director_drops_window.entry(k).or_default() += v;
        }
        report.director_drops_total = bench::drops(&dp.last.other);
        report.testpmd_command = io_cmd;
        report.dataplane_command = dp.command;
        report.dataplane_config = dp.config;
        report.rounds.push(Round::new(io, dp.measured));
    }
    report.connections_ok = report.director_drops_total.is_empty();
    report.median = Summary::of(&report.rounds);
    report.machine = machine(load_before);
    let _ = std::fs::remove_dir_all(&opts.work_dir);
    Ok(report)
}
