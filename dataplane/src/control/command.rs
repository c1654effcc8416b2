//! What the control thread asks a worker lcore to do. Each worker has a bounded inbox that
//! it reads on its 1 ms housekeeping timer, between bursts: never per packet, never blocking.
//! Replies go back through channels the request carries; the control thread waits for them
//! a bounded time.

use std::sync::Arc;

use crossbeam_channel::Sender;
use tandem_core::balance::{ConnFilter, FlushTarget};
use tandem_core::conn::{ConnRecord, Timeouts};
use tandem_core::service::ServiceSet;

/// Capacity of each worker's inbox.
pub const INBOX_CAPACITY: usize = 64;

/// One worker's part of a connection listing.
#[derive(Debug, Clone, Default)]
pub struct ConnListing {
    /// The worker's index.
    pub worker: usize,
    /// At most the requested number of records.
    pub records: Vec<ConnRecord>,
    /// How many connections matched in all.
    pub matched: usize,
}

/// A port's device counters and link, as one worker read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortFigures {
    /// Link up.
    pub link_up: bool,
    /// Speed in Mb/s.
    pub speed_mbps: u32,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Dropped by the NIC for lack of descriptors.
    pub rx_missed: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

/// A request to a worker.
#[derive(Debug)]
pub enum Command {
    /// Swap in this service snapshot (configuration `generation`).
    SetServices {
        /// The snapshot, built by the control thread.
        services: Arc<ServiceSet>,
        /// Its generation, published back on the board once applied.
        generation: u64,
    },
    /// Use these timeouts from now on.
    SetTimeouts(Timeouts),
    /// Remove these connections now.
    Flush(FlushTarget),
    /// List connections.
    ListConns {
        /// Which.
        filter: ConnFilter,
        /// At most this many records.
        limit: usize,
        /// Where the answer goes.
        reply: Sender<ConnListing>,
    },
    /// Read every port's counters (asked of one worker only).
    PortStats {
        /// Where the answer goes, one entry per port in configuration order.
        reply: Sender<Vec<PortFigures>>,
    },
    /// A sync daemon order (watch, apply; see `crate::sync`).
    Sync(crate::sync::SyncCommand),
}
