//! The dataplane's side of `tandem-syncd`: the `tandem.sync.v1.Local` service
//! ([`service`]), what each worker lcore does for it between bursts ([`lcore`]), the
//! heartbeats it carries over the service network ([`heartbeat`]) and the record
//! conversions ([`wire`]). `syncd/src/localref.rs` is the contract; `docs/failover.md` the
//! design.
//!
//! How the pieces meet:
//! - **Role**: one atomic ([`SyncState::role`]) written by `SetRole` (and by the end of
//!   syncd's heartbeat stream), read by every worker on its 1 ms housekeeping timer, which
//!   then tells its engine whether to answer for the VIPs; the first worker also sends the
//!   gratuitous ARPs when it sees the director become active.
//! - **Watch**: `WatchConnections` sends [`SyncCommand::Watch`] through every worker's inbox;
//!   from then on each worker puts the events it drains from its core `EventQueue`, the
//!   chunks of its own table walk, and the end of its walk into its own bounded channel
//!   ([`LcoreMsg`]), in that worker's order, never waiting (a full channel drops events,
//!   counted; their sequence numbers are gone, so syncd sees the gap and resyncs). Every
//!   50 ms, and soon after a drop, a head mark with the table's last sequence number follows,
//!   so a lost event is noticed even when no later one shows the gap. A pump task turns the
//!   channels into the gRPC stream.
//! - **Apply**: `ApplyConnections` maps each record to the local service and real server and
//!   sends it, as [`SyncOp`]s, to the worker that owns the client (`balance::owner`); snapshot
//!   begin/end become a mark and a sweep on every worker.
//! - **Heartbeats**: syncd's heartbeats go to the first worker ([`SyncWiring::hb_out`]), which
//!   sends them as UDP datagrams from its own address to the peer's; any worker that receives
//!   one from the peer puts it on [`SyncWiring::hb_in`].

pub mod heartbeat;
pub mod lcore;
pub mod report;
pub mod service;
pub use tandem_proto::local as wire;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender};
use tandem_core::conn::{ConnEvent, ConnRecord};

/// The director's role as the workers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No `[sync]`: no peer, the VIPs are held.
    Standalone,
    /// syncd said standby (or has not said anything yet, or is gone): only the ports' own
    /// addresses are answered.
    Standby,
    /// syncd said active: the VIPs and the inside gateway are announced and answered.
    Active,
}

impl Role {
    /// `standalone` / `standby` / `active` (the admin API's `GetStatus.role`).
    pub fn name(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Standby => "standby",
            Role::Active => "active",
        }
    }

    /// Whether the VIPs are answered.
    pub fn owns_vips(self) -> bool {
        self != Role::Standby
    }

    fn to_u8(self) -> u8 {
        match self {
            Role::Standalone => 0,
            Role::Standby => 1,
            Role::Active => 2,
        }
    }

    fn from_u8(v: u8) -> Role {
        match v {
            0 => Role::Standalone,
            2 => Role::Active,
            _ => Role::Standby,
        }
    }
}

/// Counters of the sync side, written by the workers and the service (relaxed atomics).
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// Events drained from the lcores' queues and handed to a watch.
    pub events_sent: AtomicU64,
    /// Events dropped because a worker's channel to the watch was full.
    pub events_dropped: AtomicU64,
    /// Snapshot records read by the lcores' walks.
    pub snapshot_records: AtomicU64,
    /// `WatchConnections` calls.
    pub watches: AtomicU64,
    /// Records installed or removed on the peer's word.
    pub applied: AtomicU64,
    /// Records refused: unknown service or real server, table full, key taken, malformed.
    pub refused: AtomicU64,
    /// Entries removed by the sweep at a snapshot's end.
    pub swept: AtomicU64,
    /// `SetRole` calls.
    pub set_roles: AtomicU64,
    /// Gratuitous ARPs sent.
    pub garps_sent: AtomicU64,
    /// Heartbeats sent to the peer's dataplane.
    pub heartbeats_sent: AtomicU64,
    /// Heartbeats not sent (peer MAC unknown yet, queue full, no mbuf).
    pub heartbeats_unsent: AtomicU64,
    /// Heartbeats received from the peer's dataplane.
    pub heartbeats_received: AtomicU64,
    /// Heartbeats received but dropped (queue full, undecodable).
    pub heartbeats_dropped: AtomicU64,
}

impl SyncCounters {
    /// Adds `n` to `c`.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads `c`.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What the workers, the control thread and the `Local` service share.
#[derive(Debug)]
pub struct SyncState {
    role: AtomicU8,
    /// A kernel-backed service port (af_xdp/af_packet vdev) has lost its carrier
    /// ([`ports_down`]): syncd's heartbeat stream is refused, so its role machine goes to
    /// `Fault` and the peer takes over.
    kernel_link_down: std::sync::atomic::AtomicBool,
    /// A service port's device (a PCI NIC) reports its link down (`rte_eth_link_get_nowait`,
    /// read by worker 0 every 10 ms): the same consequence.
    device_link_down: std::sync::atomic::AtomicBool,
    /// The counters.
    pub counters: SyncCounters,
    /// syncd's latest status report (`Local.ReportStatus`); control-thread work only.
    pub report: report::ReportSlot,
}

impl SyncState {
    /// The state of a director with `[sync]` (`true`: it starts as a standby until syncd
    /// says otherwise) or without it (standalone).
    pub fn new(with_sync: bool) -> SyncState {
        let role = if with_sync {
            Role::Standby
        } else {
            Role::Standalone
        };
        SyncState {
            role: AtomicU8::new(role.to_u8()),
            kernel_link_down: std::sync::atomic::AtomicBool::new(false),
            device_link_down: std::sync::atomic::AtomicBool::new(false),
            counters: SyncCounters::default(),
            report: report::ReportSlot::default(),
        }
    }

    /// Whether a service port has lost its link (by the kernel's carrier or the device's
    /// own link status).
    pub fn ports_down(&self) -> bool {
        self.kernel_link_down.load(Ordering::Acquire)
            || self.device_link_down.load(Ordering::Acquire)
    }

    /// Records the kernel-backed ports' carrier; going down also stands the director down
    /// at once.
    pub fn set_ports_down(&self, down: bool) {
        self.kernel_link_down.store(down, Ordering::Release);
        self.stand_down_if(down);
    }

    /// Records the devices' own link status (what DPDK reports; PCI NICs); going down also
    /// stands the director down at once.
    pub fn set_device_link_down(&self, down: bool) {
        self.device_link_down.store(down, Ordering::Release);
        self.stand_down_if(down);
    }

    fn stand_down_if(&self, down: bool) {
        if down && self.role() == Role::Active {
            self.set_role(Role::Standby);
        }
    }

    /// The role in force.
    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Acquire))
    }

    /// Sets the role (a standalone director stays standalone).
    pub fn set_role(&self, role: Role) -> Role {
        if self.role() == Role::Standalone {
            return Role::Standalone;
        }
        self.role.store(role.to_u8(), Ordering::Release);
        role
    }
}

/// What a worker puts in its channel to the watch, in its own order.
#[derive(Debug, Clone)]
pub enum LcoreMsg {
    /// One event of the lcore's table (drained from its `EventQueue`).
    Event {
        /// The watch it is for.
        watch: u64,
        /// The event, with the lcore's sequence number.
        event: ConnEvent,
    },
    /// The lcore's head mark: the last sequence number its table assigned; every event up
    /// to it went before this in the channel or was dropped.
    Head {
        /// The watch it is for.
        watch: u64,
        /// The last sequence number assigned.
        last_seq: u64,
    },
    /// One locality change of the lcore's lblc/lblcr tables, numbered in its sequence.
    Locality {
        /// The watch it is for.
        watch: u64,
        /// The lcore's sequence number.
        seq: u64,
        /// The entry (set) or its key (removed).
        entry: wire::WireLocality,
        /// Set (true) or removed.
        set: bool,
    },
    /// Records of the walk of the lcore's table (connections, then persistence templates).
    Chunk {
        /// The watch it is for.
        watch: u64,
        /// The records.
        records: Vec<ConnRecord>,
    },
    /// The lcore's lblc/lblcr entries, for the walk.
    LocalityChunk {
        /// The watch it is for.
        watch: u64,
        /// The entries.
        entries: Vec<wire::WireLocality>,
    },
    /// The walk of the lcore's table is complete.
    WalkDone {
        /// The watch it is for.
        watch: u64,
    },
}

/// What `ApplyConnections` asks of the worker that owns a connection (or of every worker).
/// `count`: whether this worker counts the operation in the summary (an operation sent to
/// every worker is counted once).
#[derive(Debug, Clone)]
pub enum SyncOp {
    /// Install or update (dest and service already mapped to this director's ids).
    Install(ConnRecord),
    /// Remove the entry with this record's client→VIP key.
    Uninstall(ConnRecord),
    /// Install a persistence template (mapped) into the persistence table.
    InstallTemplate {
        /// The template.
        rec: ConnRecord,
        /// Counted here.
        count: bool,
    },
    /// Remove a persistence template (mapped).
    UninstallTemplate {
        /// The template.
        rec: ConnRecord,
        /// Counted here.
        count: bool,
    },
    /// Install a lblc/lblcr entry into a service's scheduler.
    InstallLocality {
        /// The service (this director's id).
        svc: tandem_core::lb::ServiceId,
        /// The entry (this director's ids).
        entry: tandem_core::sched::LocalityEntry,
        /// Counted here.
        count: bool,
    },
    /// Remove a service's lblc/lblcr entry.
    RemoveLocality {
        /// The service.
        svc: tandem_core::lb::ServiceId,
        /// The destination address.
        addr: Ipv4Addr,
        /// Counted here.
        count: bool,
    },
    /// A snapshot begins: every entry in the table now is stale until upserted.
    Mark,
    /// The snapshot ended: remove every entry still stale.
    Sweep,
}

/// A sync order to one worker, through its control inbox.
#[derive(Debug)]
pub enum SyncCommand {
    /// Start watch `watch`: walk the table in chunks of `chunk_slots` slots per tick and send
    /// the events from now on.
    Watch {
        /// The watch's id (non-zero).
        watch: u64,
        /// Slab slots walked per housekeeping tick.
        chunk_slots: usize,
    },
    /// Stop sending events (the watch ended).
    Unwatch {
        /// The watch that ended (ignored if another has started since).
        watch: u64,
    },
    /// Apply these, in order.
    Apply(Vec<SyncOp>),
    /// Answer once everything before has been applied.
    Barrier(Sender<()>),
}

/// Most heartbeat payload bytes carried (an encoded `HeartbeatMessage` is ~50).
pub const HEARTBEAT_MAX: usize = 192;

/// One heartbeat's encoded bytes, inline (no allocation on the packet path).
#[derive(Debug, Clone, Copy)]
pub struct HbFrame {
    /// Bytes used in `bytes`.
    pub len: usize,
    /// The encoded message.
    pub bytes: [u8; HEARTBEAT_MAX],
}

impl HbFrame {
    /// A frame holding `data`, or `None` if it is too long.
    pub fn new(data: &[u8]) -> Option<HbFrame> {
        let mut bytes = [0; HEARTBEAT_MAX];
        bytes.get_mut(..data.len())?.copy_from_slice(data);
        Some(HbFrame {
            len: data.len(),
            bytes,
        })
    }

    /// The bytes.
    pub fn data(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// Capacity of each worker's channel to the watch.
pub const LCORE_CHANNEL: usize = 65_536;
/// Capacity of the heartbeat queues.
pub const HEARTBEAT_QUEUE: usize = 64;

/// The channels between the workers and the `Local` service, made once the number of workers
/// is known.
#[derive(Debug, Clone)]
pub struct SyncWiring {
    /// Shared role and counters.
    pub state: std::sync::Arc<SyncState>,
    /// Per worker: its end of the channel to the watch.
    pub lcore_tx: Vec<Sender<LcoreMsg>>,
    /// Per worker: the watch's end.
    pub lcore_rx: Vec<Receiver<LcoreMsg>>,
    /// Heartbeats from syncd, for the first worker to send.
    pub hb_out: (Sender<HbFrame>, Receiver<HbFrame>),
    /// Heartbeats from the peer, for syncd.
    pub hb_in: (Sender<HbFrame>, Receiver<HbFrame>),
    /// The peer dataplane's address, if heartbeats go over the service network.
    pub peer: Option<Ipv4Addr>,
    /// Their UDP port.
    pub heartbeat_port: u16,
}

impl SyncWiring {
    /// Channels for `workers` workers.
    pub fn new(
        state: std::sync::Arc<SyncState>,
        workers: usize,
        peer: Option<Ipv4Addr>,
        heartbeat_port: u16,
    ) -> SyncWiring {
        let (lcore_tx, lcore_rx) = (0..workers)
            .map(|_| crossbeam_channel::bounded(LCORE_CHANNEL))
            .unzip();
        SyncWiring {
            state,
            lcore_tx,
            lcore_rx,
            hb_out: crossbeam_channel::bounded(HEARTBEAT_QUEUE),
            hb_in: crossbeam_channel::bounded(HEARTBEAT_QUEUE),
            peer,
            heartbeat_port,
        }
    }
}

/// The kernel interfaces behind the ports: the `iface=` of each port's `af_xdp`/`af_packet`
/// vdev in the EAL arguments (`--vdev net_af_xdp0,iface=out0,...`), whose PMDs report their
/// link up whatever the cable does. Other devices have none.
pub fn kernel_ifaces<'a>(
    eal_args: &[String],
    devices: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let vdevs: Vec<&str> = eal_args
        .iter()
        .map(|a| a.strip_prefix("--vdev=").unwrap_or(a))
        .collect();
    devices
        .into_iter()
        .filter_map(|d| {
            vdevs.iter().find_map(|v| {
                let mut kv = v.split(',');
                (kv.next() == Some(d))
                    .then(|| kv.find_map(|kv| kv.strip_prefix("iface=")))
                    .flatten()
                    .map(str::to_owned)
            })
        })
        .collect()
}

/// Whether any of `ifaces` has lost its carrier (`/sys/class/net/<iface>/carrier` is not
/// `1`, or cannot be read: an interface set down reads as an error).
pub fn ports_down(ifaces: &[String]) -> bool {
    ifaces.iter().any(|i| {
        std::fs::read_to_string(format!("/sys/class/net/{i}/carrier"))
            .map(|c| c.trim() != "1")
            .unwrap_or(true)
    })
}

#[cfg(test)]
mod link_tests {
    use super::*;

    #[test]
    fn ifaces_of_vdevs() {
        let eal: Vec<String> = [
            "-l",
            "1",
            "--vdev",
            "net_af_xdp0,iface=out0,start_queue=0,queue_count=1",
            "--vdev=net_af_packet1,iface=in0,qpairs=1",
            "--vdev",
            "net_null0",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            kernel_ifaces(&eal, ["net_af_xdp0", "net_af_packet1", "net_null0"]),
            vec!["out0".to_string(), "in0".to_string()]
        );
        assert!(ports_down(&["no-such-iface-tandem".to_string()]));
        assert!(!ports_down(&[]));
    }

    #[test]
    fn ports_down_stands_the_director_down() {
        let s = SyncState::new(true);
        s.set_role(Role::Active);
        s.set_ports_down(true);
        assert!(s.ports_down());
        assert_eq!(s.role(), Role::Standby);
    }

    #[test]
    fn either_link_source_counts_and_both_must_recover() {
        let s = SyncState::new(true);
        s.set_role(Role::Active);
        s.set_device_link_down(true);
        assert!(s.ports_down());
        assert_eq!(s.role(), Role::Standby);
        s.set_role(Role::Active);
        s.set_ports_down(true);
        s.set_device_link_down(false);
        assert!(s.ports_down(), "the kernel's carrier is still down");
        assert_eq!(s.role(), Role::Standby);
        s.set_ports_down(false);
        assert!(!s.ports_down());
        s.set_role(Role::Active);
        s.set_device_link_down(false);
        assert_eq!(
            s.role(),
            Role::Active,
            "a link that stays up changes no role"
        );
    }
}
