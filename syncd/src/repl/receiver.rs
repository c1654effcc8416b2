//! The receiving side: batches in, applied in order exactly once into a [`Replica`],
//! cumulative acks and resume requests out.

use std::time::Duration;

use super::nanos;
use super::replica::Replica;
use super::types::{Batch, Feedback, Item};

/// How a [`Receiver`] paces its requests and judges itself complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// The least time between two resume requests sent because of a gap (the one sent on
    /// connect is never held back).
    pub resume_interval: Duration,
    /// Nothing heard from the sender for this long: not "sync complete".
    pub stale_after: Duration,
    /// More than this many items behind the sender's head: not "sync complete".
    pub max_lag_events: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            resume_interval: Duration::from_millis(100),
            stale_after: Duration::from_millis(500),
            max_lag_events: 10_000,
        }
    }
}

/// What the receiver has done, for `tandemctl status` and the metrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReceiverMetrics {
    /// The epoch being applied (0: none yet).
    pub epoch: u64,
    /// The last applied sequence number.
    pub applied: u64,
    /// The sender's head as last announced.
    pub head_seen: u64,
    /// `head_seen - applied`.
    pub lag_events: u64,
    /// Deltas applied.
    pub deltas: u64,
    /// Snapshot records applied.
    pub snapshot_records: u64,
    /// Snapshots completed (swept).
    pub snapshots: u64,
    /// Entries removed by the sweeps.
    pub swept: u64,
    /// Items received again and skipped.
    pub duplicates: u64,
    /// Batches dropped because they did not follow on (gap or unknown epoch).
    pub gaps: u64,
    /// Resume requests sent.
    pub resumes: u64,
    /// Whether the copy is complete now.
    pub sync_complete: bool,
}

/// The receiving side of the replication stream. See the module documentation.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    epoch: u64,
    applied: u64,
    head_seen: u64,
    connected: bool,
    /// A batch arrived on the current connection.
    heard: bool,
    last_rx: Option<u64>,
    /// The snapshot being received.
    snapshot: Option<u64>,
    /// A snapshot of the current epoch completed.
    snapshot_done: bool,
    ack_due: bool,
    resume_due: bool,
    last_resume: Option<u64>,
    m: ReceiverMetrics,
}

impl Receiver {
    /// Takes a new staleness limit (a reload of the heartbeat interval it follows).
    pub fn set_stale_after(&mut self, stale_after: Duration) {
        self.cfg.stale_after = stale_after;
    }

    /// A receiver with nothing applied yet.
    pub fn new(cfg: ReceiverConfig) -> Receiver {
        Receiver {
            cfg,
            epoch: 0,
            applied: 0,
            head_seen: 0,
            connected: false,
            heard: false,
            last_rx: None,
            snapshot: None,
            snapshot_done: false,
            ack_due: false,
            resume_due: false,
            last_resume: None,
            m: ReceiverMetrics::default(),
        }
    }

    /// A new connection to the sender is up: the next [`Receiver::poll_transmit`] says where
    /// to resume.
    pub fn connected(&mut self, now: u64) {
        self.connected = true;
        self.heard = false;
        self.resume_due = true;
        self.ack_due = false;
        self.last_resume = None;
        self.last_rx = Some(now);
    }

    /// The connection is gone. The applied state and position are kept.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.resume_due = false;
        self.ack_due = false;
    }

    /// The epoch being applied (0: none).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The last applied sequence number of [`Receiver::epoch`].
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Forget the sender's stream (e.g. this director became the active one and the other
    /// director's stream will be a new epoch anyway). The replica is left as it is.
    pub fn reset(&mut self) {
        self.epoch = 0;
        self.applied = 0;
        self.head_seen = 0;
        self.snapshot = None;
        self.snapshot_done = false;
    }

    /// One batch from the sender: applies what follows on from the last applied item, skips
    /// duplicates, and on a gap or an unknown epoch drops the rest and asks to resume.
    pub fn handle(&mut self, batch: &Batch, now: u64, replica: &mut impl Replica) {
        if !self.connected {
            return;
        }
        self.last_rx = Some(now);
        self.heard = true;
        let mut start = 0usize;
        if batch.epoch != self.epoch {
            // A new epoch is taken up only from its snapshot.
            let begin = batch
                .items
                .iter()
                .position(|i| matches!(i, Item::SnapshotBegin { .. }));
            match begin {
                Some(k) => {
                    tracing::debug!(old = self.epoch, new = batch.epoch, "new sender epoch");
                    self.epoch = batch.epoch;
                    self.applied = batch.first_seq.saturating_add(k as u64).saturating_sub(1);
                    self.head_seen = 0;
                    self.snapshot = None;
                    self.snapshot_done = false;
                    start = k;
                }
                None => {
                    self.m.gaps += 1;
                    self.ask_resume(now);
                    return;
                }
            }
        }
        self.head_seen = self.head_seen.max(batch.head_seq);
        let mut progressed = false;
        let mut seq = batch.first_seq.saturating_add(start as u64);
        for item in batch.items.iter().skip(start) {
            if seq <= self.applied {
                self.m.duplicates += 1;
                seq = seq.saturating_add(1);
                continue;
            }
            if seq > self.applied + 1 {
                if matches!(item, Item::SnapshotBegin { .. }) {
                    // A snapshot supersedes whatever was missed before it.
                    self.applied = seq - 1;
                } else {
                    self.m.gaps += 1;
                    self.ask_resume(now);
                    break;
                }
            }
            self.apply(item, now, replica);
            self.applied = seq;
            progressed = true;
            seq = seq.saturating_add(1);
        }
        if batch.items.is_empty() && batch.first_seq > self.applied + 1 {
            // A keepalive announcing items we never got (the tail was lost).
            self.m.gaps += 1;
            self.ask_resume(now);
        }
        if progressed || !batch.items.is_empty() {
            // Duplicates are acked too, in case our earlier ack was lost.
            self.ack_due = true;
        }
    }

    /// The next message for the sender, if any.
    pub fn poll_transmit(&mut self, now: u64) -> Option<Feedback> {
        if !self.connected {
            return None;
        }
        if !self.heard {
            // Nothing back since our resume request: it may have been lost; ask again.
            self.ask_resume(now);
        }
        if self.resume_due {
            self.resume_due = false;
            self.last_resume = Some(now);
            self.ack_due = false;
            self.m.resumes += 1;
            return Some(Feedback::Resume {
                epoch: self.epoch,
                last_seq: self.applied,
            });
        }
        if self.ack_due && self.epoch != 0 {
            self.ack_due = false;
            return Some(Feedback::Ack {
                epoch: self.epoch,
                seq: self.applied,
            });
        }
        None
    }

    /// Whether this director holds a complete copy of the sender's table: a snapshot of the
    /// current epoch completed and none is in progress, the sender was heard from within
    /// `stale_after`, and at most `max_lag_events` behind its head. The role machine's
    /// preemption gate.
    pub fn sync_complete(&self, now: u64) -> bool {
        self.snapshot_done
            && self.snapshot.is_none()
            && self.connected
            && self
                .last_rx
                .is_some_and(|t| now.saturating_sub(t) <= nanos(self.cfg.stale_after))
            && self.head_seen.saturating_sub(self.applied) <= self.cfg.max_lag_events
    }

    /// The counters and gauges, as of `now`.
    pub fn metrics(&self, now: u64) -> ReceiverMetrics {
        ReceiverMetrics {
            epoch: self.epoch,
            applied: self.applied,
            head_seen: self.head_seen,
            lag_events: self.head_seen.saturating_sub(self.applied),
            sync_complete: self.sync_complete(now),
            ..self.m
        }
    }

    fn ask_resume(&mut self, now: u64) {
        let allowed = match self.last_resume {
            None => true,
            Some(t) => now.saturating_sub(t) >= nanos(self.cfg.resume_interval),
        };
        if allowed {
            self.resume_due = true;
            self.last_resume = Some(now);
        }
    }

    fn apply(&mut self, item: &Item, now: u64, replica: &mut impl Replica) {
        match item {
            Item::Change(c) => {
                replica.apply(c, now);
                self.m.deltas += 1;
            }
            Item::Snapshot(c) => {
                replica.apply(c, now);
                self.m.snapshot_records += 1;
            }
            Item::SnapshotBegin { id } => {
                replica.begin_snapshot();
                self.snapshot = Some(*id);
            }
            Item::SnapshotEnd { id } => {
                if self.snapshot == Some(*id) {
                    let swept = replica.end_snapshot(now);
                    self.m.swept += swept as u64;
                    self.m.snapshots += 1;
                    self.snapshot = None;
                    self.snapshot_done = true;
                }
            }
        }
    }
}
