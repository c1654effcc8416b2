//! Counters shared between worker lcores and the reporting side, without locks.
//!
//! Each worker owns a plain [`Counters`] and, every [`PUBLISH_EVERY_NS`], copies it into its
//! own cache-line-aligned slot of relaxed atomics (single writer: plain stores, no read-modify-
//! write). Readers sum the slots. A reader may see one lcore's fields from two adjacent
//! publications; every field is monotonic, so totals are never wrong by more than one period.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tandem_core::counters::{Counters, DropReason};

/// How often a worker publishes its counters (nanoseconds).
pub const PUBLISH_EVERY_NS: u64 = 100_000_000;

const SCALARS: usize = 11;
const WORDS: usize = SCALARS + DropReason::COUNT;

/// One lcore's published counters.
#[derive(Debug)]
#[repr(align(64))]
pub struct CounterSlot {
    words: [AtomicU64; WORDS],
}

impl Default for CounterSlot {
    fn default() -> Self {
        CounterSlot {
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl CounterSlot {
    /// Publishes `c` (called by the owning worker only).
    pub fn publish(&self, c: &Counters) {
        let scalars = [
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes,
            c.arp_replies,
            c.icmp_echo_replies,
            c.neighbours_learned,
            c.neighbour_table_full,
            c.forwarded,
            c.redirected,
            c.icmp_frag_needed,
        ];
        for (w, v) in self.words.iter().zip(scalars.iter().chain(c.drops.iter())) {
            w.store(*v, Ordering::Relaxed);
        }
    }

    /// The last published counters.
    pub fn snapshot(&self) -> Counters {
        let w = |i: usize| self.words[i].load(Ordering::Relaxed);
        let mut c = Counters {
            rx_packets: w(0),
            rx_bytes: w(1),
            tx_packets: w(2),
            tx_bytes: w(3),
            arp_replies: w(4),
            icmp_echo_replies: w(5),
            neighbours_learned: w(6),
            neighbour_table_full: w(7),
            forwarded: w(8),
            redirected: w(9),
            icmp_frag_needed: w(10),
            ..Counters::default()
        };
        for (i, d) in c.drops.iter_mut().enumerate() {
            *d = w(SCALARS + i);
        }
        c
    }
}

/// What the stats file says about a port.
#[derive(Debug, Clone, Serialize)]
pub struct PortReport {
    /// Operator's name.
    pub name: String,
    /// DPDK device name.
    pub device: String,
    /// DPDK port id.
    pub port_id: u16,
    /// MAC address, `02:00:00:00:00:01`.
    pub mac: String,
    /// The director's address, `a.b.c.d/len`.
    pub address: String,
}

#[derive(Serialize)]
struct CountersJson {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    arp_replies: u64,
    icmp_echo_replies: u64,
    neighbours_learned: u64,
    neighbour_table_full: u64,
    forwarded: u64,
    redirected: u64,
    icmp_frag_needed: u64,
    drops: serde_json::Map<String, serde_json::Value>,
}

impl From<&Counters> for CountersJson {
    fn from(c: &Counters) -> Self {
        CountersJson {
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            arp_replies: c.arp_replies,
            icmp_echo_replies: c.icmp_echo_replies,
            neighbours_learned: c.neighbours_learned,
            neighbour_table_full: c.neighbour_table_full,
            forwarded: c.forwarded,
            redirected: c.redirected,
            icmp_frag_needed: c.icmp_frag_needed,
            drops: DropReason::ALL
                .iter()
                .map(|r| (r.name().to_owned(), c.drops[*r as usize].into()))
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct LcoreJson {
    lcore: u32,
    counters: CountersJson,
}

#[derive(Serialize)]
struct StatsJson<'a> {
    unix_ms: u128,
    ports: &'a [PortReport],
    lcores: Vec<LcoreJson>,
    total: CountersJson,
}

/// Renders the stats document for the given lcores and their slots.
pub fn render(ports: &[PortReport], lcores: &[(u32, &CounterSlot)]) -> String {
    let mut total = Counters::default();
    let mut per = Vec::with_capacity(lcores.len());
    for (lcore, slot) in lcores {
        let c = slot.snapshot();
        total.add(&c);
        per.push(LcoreJson {
            lcore: *lcore,
            counters: CountersJson::from(&c),
        });
    }
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let doc = StatsJson {
        unix_ms,
        ports,
        lcores: per,
        total: CountersJson::from(&total),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Writes `text` to `path` atomically (temporary file in the same directory, then rename), so
/// readers never see a half-written file.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Formats a MAC address the usual way.
pub fn mac_string(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_snapshot_round_trip() {
        let mut c = Counters {
            rx_packets: 1,
            rx_bytes: 2,
            tx_packets: 3,
            tx_bytes: 4,
            ..Counters::default()
        };
        c.arp_replies = 5;
        c.icmp_echo_replies = 6;
        c.neighbours_learned = 7;
        c.neighbour_table_full = 8;
        c.forwarded = 9;
        c.redirected = 10;
        c.icmp_frag_needed = 11;
        for (i, d) in c.drops.iter_mut().enumerate() {
            *d = 100 + i as u64;
        }
        let slot = CounterSlot::default();
        slot.publish(&c);
        assert_eq!(slot.snapshot(), c);
    }

    #[test]
    fn render_sums_lcores_and_names_drops() {
        let a = CounterSlot::default();
        let b = CounterSlot::default();
        let mut c = Counters {
            rx_packets: 10,
            ..Counters::default()
        };
        c.drops[DropReason::NotForUsMac as usize] = 2;
        a.publish(&c);
        b.publish(&Counters {
            rx_packets: 5,
            icmp_echo_replies: 3,
            ..Counters::default()
        });
        let ports = [PortReport {
            name: "outside".into(),
            device: "net_null0".into(),
            port_id: 0,
            mac: mac_string([2, 0, 0, 0, 0, 1]),
            address: "10.0.0.1/24".into(),
        }];
        let v: serde_json::Value =
            serde_json::from_str(&render(&ports, &[(0, &a), (1, &b)])).expect("json");
        assert_eq!(v["total"]["rx_packets"], 15);
        assert_eq!(v["total"]["icmp_echo_replies"], 3);
        assert_eq!(v["total"]["drops"]["not_for_us_mac"], 2);
        assert_eq!(v["lcores"][1]["lcore"], 1);
        assert_eq!(v["ports"][0]["mac"], "02:00:00:00:00:01");
    }

    #[test]
    fn atomic_write_replaces_file() {
        let dir = std::env::temp_dir().join(format!("tandem-stats-test-{}", std::process::id()));
        let p = dir.join("s.json");
        write_atomic(&p, "one").expect("write");
        write_atomic(&p, "two").expect("write");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "two\n");
        let _ = std::fs::remove_dir_all(dir);
    }
}
