//! What random cache lines cost on this machine: the floor under the director's per-packet
//! time once its connection table is far larger than the caches.
//!
//! `cargo bench -p tandem-dataplane --bench memory` (add `-- --quick` for fewer accesses).
//!
//! Two regions the size of the benchmark table's at 1 M connections (`tandem-rack
//! bench-dataplane`: a 64 MiB index and a 72 MiB slab), advised onto transparent huge pages
//! as the dataplane's are. Each "packet" reads random 64-byte lines in them, in bursts of 32
//! with every line prefetched first (`tandem_dpdk::prefetch`), as the dataplane's rx loop
//! does:
//! - **one line**: a single line per packet (a table whose lookup needs one line);
//! - **two lines, independent**: one line in each region, both prefetched at once;
//! - **two lines, dependent**: a line in the index, then one in the slab whose address is
//!   known only once the first has arrived (the director's lookup today: bucket, then entry).
//!
//! The loop's own cost (the random numbers, no memory) is measured too and subtracted. Plus
//! the latency of one dependent load at a time. Nothing is asserted; numbers are printed.

use std::hint::black_box;
use std::time::Instant;

use tandem_dpdk::{advise_huge_pages, prefetch};

const INDEX_BYTES: usize = 64 << 20;
const SLAB_BYTES: usize = 72 << 20;
const LINE: usize = 64;
const BURST: usize = 32;

/// xorshift64: cheap, and good enough to scatter lines.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A line index below `lines` (multiply-high, no division).
#[allow(clippy::cast_possible_truncation)] // below `lines`, a usize
fn line_of(r: u64, lines: usize) -> usize {
    ((u128::from(r) * lines as u128) >> 64) as usize
}

/// A region of `bytes`, written once (so every page exists), then advised onto huge pages as
/// the dataplane advises its tables once they are built.
fn region(bytes: usize) -> Vec<u64> {
    let mut v: Vec<u64> = (0..bytes as u64 / 8).collect();
    advise_huge_pages(v.as_mut_ptr().cast_const().cast(), bytes);
    v
}

/// This process's anonymous memory on transparent huge pages, MiB (Linux).
fn huge_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = text.lines().find(|l| l.starts_with("AnonHugePages:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib >> 10)
}

#[derive(Clone, Copy)]
enum Shape {
    /// Random numbers only.
    Loop,
    OneLine,
    TwoIndependent,
    TwoDependent,
}

/// ns per packet over `packets` packets of `shape`.
fn run(shape: Shape, index: &mut [u64], slab: &mut [u64], packets: usize) -> f64 {
    let (il, sl) = (index.len() * 8 / LINE, slab.len() * 8 / LINE);
    let words = LINE / 8;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let (mut a, mut b) = ([0usize; BURST], [0usize; BURST]);
    let mut acc = 0u64;
    let start = Instant::now();
    for _ in 0..packets / BURST {
        for k in 0..BURST {
            a[k] = line_of(next(&mut rng), il) * words;
            b[k] = line_of(next(&mut rng), sl) * words;
        }
        match shape {
            Shape::Loop => {
                for k in 0..BURST {
                    acc = acc.wrapping_add((a[k] ^ b[k]) as u64);
                }
            }
            Shape::OneLine => {
                for &i in &a {
                    prefetch(index[i..].as_ptr().cast());
                }
                for &i in &a {
                    acc = acc.wrapping_add(index[i]);
                    index[i + 1] = acc;
                }
            }
            Shape::TwoIndependent => {
                for k in 0..BURST {
                    prefetch(index[a[k]..].as_ptr().cast());
                    prefetch(slab[b[k]..].as_ptr().cast());
                }
                for k in 0..BURST {
                    acc = acc.wrapping_add(index[a[k]]);
                    slab[b[k] + 1] = acc;
                }
            }
            Shape::TwoDependent => {
                for &i in &a {
                    prefetch(index[i..].as_ptr().cast());
                }
                let zero = black_box(0u64);
                for k in 0..BURST {
                    // The slab line depends on the index line's value (as an entry's slot
                    // comes from its bucket), though the value chosen does not change.
                    b[k] ^= usize::from(index[a[k]] & zero != 0);
                    prefetch(slab[b[k]..].as_ptr().cast());
                }
                for &j in &b {
                    acc = acc.wrapping_add(slab[j]);
                    slab[j + 1] = acc;
                }
            }
        }
    }
    black_box(acc);
    start.elapsed().as_nanos() as f64 / (packets / BURST * BURST) as f64
}

/// ns per load when each load's address comes from the previous one.
fn latency(index: &[u64], loads: usize) -> f64 {
    let il = index.len() * 8 / LINE;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut i = 0usize;
    let zero = black_box(0u64);
    let start = Instant::now();
    for _ in 0..loads {
        i = line_of(next(&mut rng) ^ (index[i] & zero), il) * (LINE / 8);
    }
    black_box(i);
    start.elapsed().as_nanos() as f64 / loads as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let packets = if quick { 2_000_000 } else { 10_000_000 };
    let repeats = if quick { 3 } else { 5 };
    let mut index = region(INDEX_BYTES);
    let mut slab = region(SLAB_BYTES);
    println!(
        "memory probe: index {} MiB + slab {} MiB; on transparent huge pages: {}",
        INDEX_BYTES >> 20,
        SLAB_BYTES >> 20,
        huge_mib().map_or("unknown".into(), |m| format!("{m} MiB"))
    );
    let lat = median(
        (0..repeats)
            .map(|_| latency(&index, packets / 10))
            .collect(),
    );
    println!("  one dependent load at a time: {lat:.1} ns");
    let mut measure = |shape| {
        median(
            (0..repeats)
                .map(|_| run(shape, &mut index, &mut slab, packets))
                .collect(),
        )
    };
    let base = measure(Shape::Loop);
    println!(
        "  per packet, bursts of {BURST} prefetched, the loop's own {base:.1} ns subtracted \
         (median of {repeats} runs of {packets} packets):"
    );
    for (name, shape) in [
        ("one line", Shape::OneLine),
        ("two lines, independent", Shape::TwoIndependent),
        (
            "two lines, dependent (bucket, then entry)",
            Shape::TwoDependent,
        ),
    ] {
        let ns = measure(shape) - base;
        println!("    {name:<42} {ns:6.1} ns");
    }
}
