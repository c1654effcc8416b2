//! Benchmarks of the sans-IO engine on pre-built packet buffers (no DPDK): established
//! NAT (both directions), TUN and DR at 1 M live connections, new connections per second
//! (scheduling + insertion + transform), and bytes of memory per connection at 1 M and 10 M
//! entries. Prints numbers; asserts nothing about speed.
//!
//! `cargo bench -p tandem-core --bench engine` (add `-- --quick` for 100 k connections and
//! no 10 M memory figure, or `-- --conns N`; `--no-memory` skips the memory figures; `--only
//! TEXT` runs only the established lines whose name contains TEXT, `--one-by-one` no bursts,
//! `--bursts-only` only bursts, `--no-warm` bursts without the plain-load prefetch passes).
//!
//! Every timed packet includes restoring its input bytes (a 60-byte copy into the buffer),
//! since the transforms rewrite frames in place — a slight overestimate of the engine's cost.

// Addresses and ports are built from counters bounded well below the target widths.
#![allow(clippy::cast_possible_truncation)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_core::Counters;
use tandem_core::balance::{Balancer, BalancerConfig};
use tandem_core::buf::{PacketBuf, VecBuf};
use tandem_core::conn::{
    ConnConfig, ConnTable, DiscardEvents, Hint, NewConn, SWEEP_STEP_REMOVALS, SWEEP_STEP_SLOTS,
    TcpFlags,
};
use tandem_core::director::{Director, Port, Route, Verdict, Vip, Worker};
use tandem_core::lb::{DestId, Endpoint, ForwardMethod, Protocol, ServiceId};
use tandem_core::sched::{PersistOptions, SchedulerKind, SchedulerOptions};
use tandem_core::service::{DestSpec, ServiceSet, ServiceSpec};
use tandem_core::wire::{ethernet, ipv4, tcp};

const OUT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const IN_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const CLIENTS: u32 = 200;

fn director() -> Arc<Director> {
    let d = Director::new(
        vec![
            Port {
                mac: OUT_MAC,
                addr: Ipv4Addr::new(203, 0, 113, 251),
                prefix_len: 24,
            },
            Port {
                mac: IN_MAC,
                addr: Ipv4Addr::new(172, 16, 0, 251),
                prefix_len: 16,
            },
        ],
        vec![Vip { addr: VIP, port: 0 }],
    )
    .and_then(|d| {
        d.with_routes(vec![Route {
            prefix: Ipv4Addr::UNSPECIFIED,
            prefix_len: 0,
            gateway: Ipv4Addr::new(203, 0, 113, 1),
        }])
    })
    .expect("director");
    Arc::new(d)
}

fn real(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, 1, 1 + (i as u8))
}

fn services() -> Vec<ServiceSpec> {
    let svc = |port: u16, method: ForwardMethod, sched: SchedulerKind| ServiceSpec {
        proto: Protocol::Tcp,
        vip: Endpoint::new(VIP, port),
        scheduler: sched,
        options: SchedulerOptions::default(),
        persistence: None,
        dests: (0..8)
            .map(|i| DestSpec {
                addr: real(i),
                port,
                method,
                weight: 1 + i % 3,
            })
            .collect(),
    };
    vec![
        svc(80, ForwardMethod::Nat, SchedulerKind::Wlc),
        svc(8080, ForwardMethod::Tunnel, SchedulerKind::Wrr),
        svc(443, ForwardMethod::DirectRoute, SchedulerKind::Mh),
    ]
}

fn worker(capacity: usize) -> Worker {
    let set = Arc::new(ServiceSet::new(&services(), 64).expect("services"));
    let mut conn = ConnConfig::new(capacity, 64);
    conn.hash_seed = 0x5eed;
    let b = Balancer::new(
        set,
        BalancerConfig {
            conn,
            persist: PersistOptions::default(),
            event_capacity: 1,
            worker: 0,
            workers: 1,
        },
    )
    .expect("balancer");
    let mut w = Worker::new(director(), 4096, u64::MAX / 4).with_balancer(b);
    let n = w.neighbours_mut();
    for c in 0..CLIENTS {
        n.learn(client_addr(c), [2, 0, 0, 0, 1, c as u8], 0, 0);
    }
    for i in 0..8 {
        n.learn(real(i), [2, 0, 0, 0, 2, i as u8], 1, 0);
    }
    w
}

fn client_addr(c: u32) -> Ipv4Addr {
    // 203.0.113.20 ..= .219: clear of the VIP (.10), the router (.1) and the director (.251).
    Ipv4Addr::new(203, 0, 113, 20 + c as u8)
}

/// Connection `i`'s client endpoint: 200 addresses × up to 64 k ports each.
fn client(i: u32) -> Endpoint {
    Endpoint::new(client_addr(i % CLIENTS), 1024 + (i / CLIENTS) as u16)
}

/// A 60-byte Ethernet/IPv4/TCP frame with correct checksums.
fn tcp_frame(dst_mac: [u8; 6], src: Endpoint, dst: Endpoint, flags: tcp::Flags) -> [u8; 60] {
    let mut f = [0u8; 60];
    let mut eth = ethernet::Frame::new_unchecked(&mut f[..]);
    eth.set_dst_addr(dst_mac);
    eth.set_src_addr([2, 0, 0, 0, 9, 9]);
    eth.set_ethertype(ethernet::EtherType::IPV4);
    {
        let mut ip = ipv4::Packet::new_unchecked(&mut f[14..54]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len(40);
        ip.set_ttl(64);
        ip.set_protocol(ipv4::Protocol::TCP);
        ip.set_src_addr(src.addr);
        ip.set_dst_addr(dst.addr);
        ip.fill_checksum();
    }
    let mut t = tcp::Packet::new_unchecked(&mut f[34..54]);
    t.set_src_port(src.port);
    t.set_dst_port(dst.port);
    t.set_seq_number(1);
    t.set_header_len(20);
    t.set_flags(flags);
    t.set_window_len(65535);
    t.fill_checksum(src.addr, dst.addr);
    f
}

/// Frames per burst in burst mode, as the glue's rx bursts.
const BURST: usize = 32;

/// Runs every frame through the worker `rounds` times; returns (packets per second, verdicts ok).
/// With `burst`, frames go in groups of [`BURST`] as the glue handles an rx burst: a
/// `Worker::prefetch` pass, a `Worker::prefetch_entry` pass, then processing. The core has no
/// prefetch instruction of its own (no `unsafe`), so here the passes warm lines with plain
/// loads; the dataplane passes `PREFETCHT0`.
fn run(
    w: &mut Worker,
    port: usize,
    frames: &[[u8; 60]],
    rounds: usize,
    expect: Verdict,
    burst: bool,
) -> (f64, bool) {
    let mut buf = VecBuf::new(&frames[0]);
    let mut c = Counters::default();
    let mut ok = true;
    let size = if burst { BURST } else { 1 };
    let warm = !std::env::args().any(|a| a == "--no-warm");
    let mut hints = [Hint::NONE; BURST];
    let start = Instant::now();
    for r in 0..rounds {
        for (k, chunk) in frames.chunks(size).enumerate() {
            if burst {
                // The glue's two passes, hinted; the prefetch instruction itself needs
                // `unsafe`, so the lines are warmed by the plain-load passes (skipped with
                // `--no-warm`, e.g. to count the glue's instructions under callgrind).
                for (f, h) in chunk.iter().zip(hints.iter_mut()) {
                    *h = w.prefetch_hinted(f, |_| {});
                    if warm {
                        w.prefetch(port, f);
                    }
                }
                for (f, h) in chunk.iter().zip(hints.iter_mut()) {
                    w.prefetch_entry_hinted(h, |_| {});
                    if warm {
                        w.prefetch_entry(port, f);
                    }
                }
            }
            for (j, f) in chunk.iter().enumerate() {
                let i = k * size + j;
                buf.reset(f, 128);
                let v = w.process_hinted(
                    port,
                    &mut buf,
                    if burst { hints[j] } else { Hint::NONE },
                    1_000_000 + (r * frames.len() + i) as u64,
                    &mut c,
                );
                if v != expect && ok {
                    eprintln!("frame {i}: {v:?}, expected {expect:?}; counters {c:?}");
                    ok = false;
                }
                black_box(buf.data());
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    ((rounds * frames.len()) as f64 / secs, ok)
}

/// Runs established traffic one frame at a time, then in bursts, and prints both.
fn both(
    w: &mut Worker,
    name: &str,
    port: usize,
    frames: &[[u8; 60]],
    rounds: usize,
    expect: Verdict,
) {
    // `--only TEXT` runs the established lines whose name contains TEXT (e.g. under
    // callgrind, to count one path's instructions per packet); `--one-by-one` skips bursts.
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    if only.is_some_and(|o| !name.contains(o.as_str())) {
        return;
    }
    let modes: &[bool] = if args.iter().any(|a| a == "--one-by-one") {
        &[false]
    } else if args.iter().any(|a| a == "--bursts-only") {
        &[true]
    } else {
        &[false, true]
    };
    for &burst in modes {
        let (rate, ok) = run(w, port, frames, rounds, expect, burst);
        assert!(ok, "{name}: every frame gave {expect:?}");
        let mode = if burst { "burst 32" } else { "1 by 1" };
        println!(
            "  {:<45}{:>7.2} Mpps ({:.1} ns/pkt)",
            format!("{name} [{mode}]:"),
            rate / 1e6,
            1e9 / rate
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args
        .iter()
        .position(|a| a == "--conns")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 100_000 } else { 1_000_000 });
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!(
        "tandem-core engine benchmark: {n} live connections per forwarding method, one thread"
    );

    // New connections: SYNs, each scheduled (wlc over 8), inserted, NAT-rewritten.
    let mut w = worker(3 * n as usize + 1024);
    let syns: Vec<[u8; 60]> = (0..n)
        .map(|i| tcp_frame(OUT_MAC, client(i), Endpoint::new(VIP, 80), tcp::Flags::SYN))
        .collect();
    let (rate, ok) = run(&mut w, 0, &syns, 1, Verdict::Forward { port: 1 }, false);
    assert!(ok, "every SYN was forwarded");
    println!(
        "  new NAT connections (wlc, insert, rewrite):  {:>7.2} M conn/s",
        rate / 1e6
    );
    {
        // The same in bursts of 32 with the glue's prefetch passes, on a table of its own.
        let mut fresh = worker(3 * n as usize + 1024);
        let (rate, ok) = run(&mut fresh, 0, &syns, 1, Verdict::Forward { port: 1 }, true);
        assert!(ok, "every SYN was forwarded");
        println!(
            "  new NAT connections [burst 32]:              {:>7.2} M conn/s",
            rate / 1e6
        );
    }

    // Established NAT, client → real server.
    let acks: Vec<[u8; 60]> = (0..n)
        .map(|i| tcp_frame(OUT_MAC, client(i), Endpoint::new(VIP, 80), tcp::Flags::ACK))
        .collect();
    both(
        &mut w,
        "established NAT request",
        0,
        &acks,
        rounds,
        Verdict::Forward { port: 1 },
    );

    // Established NAT, real server → client (replies looked up by their own key).
    let conns = w.balancer().expect("balancer").conns();
    let replies: Vec<[u8; 60]> = conns
        .iter()
        .map(|(_, c)| tcp_frame(IN_MAC, c.real(), c.client(), tcp::Flags::ACK))
        .collect();
    both(
        &mut w,
        "established NAT reply",
        1,
        &replies,
        rounds,
        Verdict::Forward { port: 0 },
    );

    // TUN and DR: create, then measure established.
    for (name, port) in [("TUN", 8080u16), ("DR", 443)] {
        let syns: Vec<[u8; 60]> = (0..n)
            .map(|i| {
                tcp_frame(
                    OUT_MAC,
                    client(i),
                    Endpoint::new(VIP, port),
                    tcp::Flags::SYN,
                )
            })
            .collect();
        let (_, ok) = run(&mut w, 0, &syns, 1, Verdict::Forward { port: 1 }, false);
        assert!(ok, "{name} SYNs forwarded");
        let acks: Vec<[u8; 60]> = (0..n)
            .map(|i| {
                tcp_frame(
                    OUT_MAC,
                    client(i),
                    Endpoint::new(VIP, port),
                    tcp::Flags::ACK,
                )
            })
            .collect();
        both(
            &mut w,
            &format!("established {name} request"),
            0,
            &acks,
            rounds,
            Verdict::Forward { port: 1 },
        );
    }
    let total = w.balancer().expect("balancer").conns().len();
    println!("  (connections in the table during the TUN/DR runs: {total})");

    // A standby's mark and sweep at a peer's full snapshot (the worst case: the peer upserted
    // nothing, so the sweep removes every entry).
    let t = w.balancer_mut().expect("balancer").conns_mut();
    let start = Instant::now();
    t.mark_stale();
    let mark = start.elapsed();
    // The sweep in the lcore's steps (one per housekeeping tick there): their total and the
    // longest, which is how long the lcore stops forwarding at most.
    let (mut at, mut swept, mut steps, mut longest) = (Some(0), 0, 0, Duration::ZERO);
    let start = Instant::now();
    while let Some(from) = at {
        let step = Instant::now();
        let (n, next) = t.sweep_stale_step(from, SWEEP_STEP_SLOTS, SWEEP_STEP_REMOVALS);
        longest = longest.max(step.elapsed());
        (swept, steps, at) = (swept + n, steps + 1, next);
    }
    let sweep = start.elapsed();
    println!(
        "  standby mark of {total} entries: {:.3} ms; sweep removing {swept}: {:.1} ms in {steps} \
         steps, the longest {:.2} ms",
        mark.as_secs_f64() * 1e3,
        sweep.as_secs_f64() * 1e3,
        longest.as_secs_f64() * 1e3
    );

    // Memory per connection, index included.
    let sizes: &[usize] = if std::env::args().any(|a| a == "--no-memory") {
        &[]
    } else if quick {
        &[1_000_000]
    } else {
        &[1_000_000, 10_000_000]
    };
    for &cap in sizes {
        let mut t = ConnTable::new(ConnConfig::new(cap, 64)).expect("table");
        let mut sink = DiscardEvents;
        for i in 0..cap as u32 {
            let c = Endpoint::new(
                Ipv4Addr::from(0x0a00_0000 + (i >> 8)),
                (i & 0xff) as u16 + 1024,
            );
            let new = NewConn {
                proto: Protocol::Tcp,
                client: c,
                vip: Endpoint::new(VIP, 80),
                real: Endpoint::new(real(i % 8), 80),
                method: ForwardMethod::Nat,
                dest: DestId(i % 8),
                service: ServiceId(0),
            };
            t.create(&new, TcpFlags(0x02), 0, &mut sink).expect("room");
        }
        let m = t.memory();
        println!(
            "  memory at {:>9} connections: {:>6.1} bytes/connection ({} MiB total, index included)",
            t.len(),
            m.total() as f64 / t.len() as f64,
            m.total() >> 20
        );
    }
}
