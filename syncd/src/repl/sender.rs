//! The sending side: local events in, sequence-numbered batches out, a bounded replay log in
//! between.

use std::collections::VecDeque;
use std::time::Duration;

use tandem_core::conn::ConnEvent;

use super::nanos;
use super::types::{Batch, Change, Feedback, Item, LcoreItem};

/// How a [`Sender`] is bounded and paced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderConfig {
    /// The most items the replay log holds (sent-but-unacked plus not yet sent).
    pub max_log_entries: usize,
    /// The most bytes (wire estimate) the replay log holds.
    pub max_log_bytes: usize,
    /// The most items in one batch.
    pub max_batch: usize,
    /// The most items sent and not yet acked.
    pub window: usize,
    /// Without ack progress for this long, send again from the first unacked item.
    pub retransmit_after: Duration,
    /// With nothing to send, an empty batch (a keepalive carrying `head_seq`) this often.
    pub idle_interval: Duration,
    /// The most snapshot records asked for at once ([`SnapshotRequest::max_records`]).
    pub snapshot_chunk: usize,
    /// Lcores whose event sequence numbers are tracked (an index beyond is a resync).
    pub max_lcores: usize,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            max_log_entries: 1 << 20,
            max_log_bytes: 64 << 20,
            max_batch: 512,
            window: 1 << 16,
            retransmit_after: Duration::from_millis(200),
            idle_interval: Duration::from_millis(50),
            snapshot_chunk: 1024,
            max_lcores: 256,
        }
    }
}

/// The sender wants the next records of snapshot `id`. The caller walks its table (for the
/// dataplane, `ConnTable::snapshot` on each lcore, plus the locality tables) and hands them
/// to [`Sender::snapshot_chunk`]. When `id` changes the walk must restart from the top.
///
/// Consistency rule for the caller: every change the table undergoes after a record was read
/// must reach [`Sender::push_event`] / [`Sender::push_change`] *after* that record reached
/// [`Sender::snapshot_chunk`]. Reading the records on the thread that produces the events (the
/// lcore itself, in the dataplane) gives this for free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// Which snapshot.
    pub id: u64,
    /// The most records to hand over now.
    pub max_records: usize,
}

/// What the sender has done, for `tandemctl status` and the metrics endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderMetrics {
    /// The sender's epoch.
    pub epoch: u64,
    /// The highest sequence number assigned.
    pub head_seq: u64,
    /// The highest sequence number transmitted.
    pub last_sent: u64,
    /// The highest sequence number the receiver acked.
    pub last_acked: u64,
    /// `head_seq - last_acked`: items the receiver does not have yet.
    pub lag_events: u64,
    /// Age of the oldest item in the log (pushed, not acked), in milliseconds.
    pub lag_ms: u64,
    /// Items in the replay log.
    pub queue_depth: usize,
    /// Bytes (wire estimate) in the replay log.
    pub queue_bytes: usize,
    /// Snapshots started for any reason.
    pub snapshots: u64,
    /// Snapshots forced by an overflow of the log or a gap in a lcore's events.
    pub resyncs: u64,
    /// Items dropped from the log when it overflowed.
    pub overflow_drops: u64,
    /// Events the dataplane lost before they reached us (gaps in lcore sequence numbers).
    pub lcore_lost: u64,
    /// Events older than the last one seen from their lcore, ignored.
    pub lcore_stale: u64,
    /// Resume requests served from the log.
    pub resumed: u64,
    /// Go-back-N retransmissions after `retransmit_after` without ack progress.
    pub retransmits: u64,
    /// Feedback for another epoch or outside a session, ignored.
    pub stray_feedback: u64,
}

#[derive(Debug, Clone, Copy)]
struct Logged {
    item: Item,
    pushed_at: u64,
}

#[derive(Debug, Clone, Copy)]
struct Snap {
    id: u64,
    /// The walk is still being fed (no `SnapshotEnd` yet).
    feeding: bool,
}

/// The sending side of the replication stream. See the module documentation.
#[derive(Debug)]
pub struct Sender {
    cfg: SenderConfig,
    epoch: u64,
    /// Items `base + 1 ..= next_seq - 1`, oldest first.
    log: VecDeque<Logged>,
    log_bytes: usize,
    /// Everything up to `base` is acked or dropped.
    base: u64,
    next_seq: u64,
    /// The next sequence number to transmit, in `base + 1 ..= next_seq`.
    send_next: u64,
    acked: u64,
    connected: bool,
    /// A `Resume` arrived on the current connection.
    established: bool,
    last_progress: u64,
    last_tx: Option<u64>,
    snapshot: Option<Snap>,
    next_snapshot_id: u64,
    lcore_next: Vec<Option<u64>>,
    m: SenderMetrics,
}

impl Sender {
    /// Takes a new keepalive interval (a reload of the heartbeat interval it follows).
    pub fn set_idle_interval(&mut self, idle_interval: Duration) {
        self.cfg.idle_interval = idle_interval;
    }

    /// A sender for `epoch`, which must differ from every epoch this director has used
    /// before (e.g. the boot time in nanoseconds, or a random `u64`) and be non-zero.
    pub fn new(cfg: SenderConfig, epoch: u64) -> Sender {
        let lcores = cfg.max_lcores;
        Sender {
            cfg,
            epoch: epoch.max(1),
            log: VecDeque::new(),
            log_bytes: 0,
            base: 0,
            next_seq: 1,
            send_next: 1,
            acked: 0,
            connected: false,
            established: false,
            last_progress: 0,
            last_tx: None,
            snapshot: None,
            next_snapshot_id: 1,
            lcore_next: vec![None; lcores],
            m: SenderMetrics::default(),
        }
    }

    /// The sender's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The highest sequence number assigned so far.
    pub fn head_seq(&self) -> u64 {
        self.next_seq.saturating_sub(1)
    }

    /// One event from lcore `lcore`'s queue, with the dataplane's sequence number. A gap in
    /// those numbers means the dataplane dropped events: a snapshot is started. Never blocks.
    pub fn push_event(&mut self, lcore: usize, ev: &ConnEvent, now: u64) {
        if !self.lcore_seq(lcore, ev.seq, now) {
            return;
        }
        self.push_change(
            Change::Conn {
                kind: ev.kind,
                record: ev.record,
            },
            now,
        );
    }

    /// Checks `seq`, lcore `lcore`'s next number: a gap (lost events) starts a snapshot, an
    /// old number (stale) is not taken. Whether to take the item.
    fn lcore_seq(&mut self, lcore: usize, seq: u64, now: u64) -> bool {
        match self.lcore_next.get_mut(lcore) {
            None => {
                self.m.lcore_lost += 1;
                self.resync(now);
                false
            }
            Some(next) => match *next {
                Some(expected) if seq < expected => {
                    self.m.lcore_stale += 1;
                    false
                }
                Some(expected) if seq > expected => {
                    *next = Some(seq.saturating_add(1));
                    self.m.lcore_lost += seq - expected;
                    self.resync(now);
                    true
                }
                _ => {
                    *next = Some(seq.saturating_add(1));
                    true
                }
            },
        }
    }

    /// A change from lcore `lcore` numbered `seq` in its event sequence (its lblc/lblcr
    /// locality changes): checked for gaps as [`Sender::push_event`], then logged. Never
    /// blocks.
    pub fn push_lcore_change(&mut self, lcore: usize, seq: u64, change: Change, now: u64) {
        if self.lcore_seq(lcore, seq, now) {
            self.push_change(change, now);
        }
    }

    /// One element of the local event stream: [`Sender::push_event`],
    /// [`Sender::push_lcore_change`] or [`Sender::lcore_head`].
    pub fn push_lcore(&mut self, lcore: usize, item: &LcoreItem, now: u64) {
        match item {
            LcoreItem::Event(ev) => self.push_event(lcore, ev, now),
            LcoreItem::Locality { seq, change } => {
                self.push_lcore_change(lcore, *seq, *change, now)
            }
            LcoreItem::Head(seq) => self.lcore_head(lcore, *seq, now),
        }
    }

    /// Lcore `lcore` says the last sequence number it has assigned is `last_seq`, after
    /// handing over (or dropping) every event up to it. Without this a lost event that no
    /// later event of the same lcore follows would never be noticed: its entry would stay
    /// stale on the replica until the next snapshot. More than was seen is a loss and starts
    /// a snapshot. Never blocks.
    pub fn lcore_head(&mut self, lcore: usize, last_seq: u64, now: u64) {
        let Some(next) = self.lcore_next.get_mut(lcore) else {
            self.m.lcore_lost += 1;
            self.resync(now);
            return;
        };
        match *next {
            Some(expected) if last_seq >= expected => {
                self.m.lcore_lost += last_seq - expected + 1;
                *next = Some(last_seq.saturating_add(1));
                self.resync(now);
            }
            Some(_) => {}
            // Nothing seen from this lcore since the stream (re)started: the snapshot in
            // progress covers everything up to here.
            None => *next = Some(last_seq.saturating_add(1)),
        }
    }

    /// The local event stream restarted (the dataplane restarted or the watch was reopened):
    /// forget the lcores' sequence numbers and start a snapshot.
    pub fn local_restarted(&mut self, now: u64) {
        self.lcore_next.iter_mut().for_each(|n| *n = None);
        self.resync(now);
    }

    /// The local event stream was reopened *on purpose* to read a fresh snapshot for the
    /// snapshot in progress: forget the lcores' sequence numbers (the new stream starts
    /// wherever the lcores are now) without starting yet another snapshot.
    pub fn forget_lcores(&mut self) {
        self.lcore_next.iter_mut().for_each(|n| *n = None);
    }

    /// The snapshot whose records the caller should be feeding now (whether or not the
    /// log has room for them yet, unlike [`Sender::wants_snapshot`]).
    pub fn feeding_snapshot(&self) -> Option<u64> {
        self.snapshot.filter(|s| s.feeding).map(|s| s.id)
    }

    /// One change without a lcore sequence number (locality entries). Never blocks.
    pub fn push_change(&mut self, change: Change, now: u64) {
        self.append(Item::Change(change), now);
    }

    /// A new connection to the receiver is up. Nothing is sent before its
    /// [`Feedback::Resume`].
    pub fn connected(&mut self, now: u64) {
        self.connected = true;
        self.established = false;
        self.last_progress = now;
        self.last_tx = None;
    }

    /// The connection to the receiver is gone. The log is kept for a resume.
    pub fn disconnected(&mut self) {
        self.connected = false;
        self.established = false;
    }

    /// Whether a receiver is connected and has said where to resume.
    pub fn is_established(&self) -> bool {
        self.established
    }

    /// Feedback from the receiver.
    pub fn handle(&mut self, fb: Feedback, now: u64) {
        if !self.connected {
            self.m.stray_feedback += 1;
            return;
        }
        match fb {
            Feedback::Ack { epoch, seq } => {
                if !self.established || epoch != self.epoch || seq >= self.next_seq {
                    self.m.stray_feedback += 1;
                    return;
                }
                if seq > self.acked {
                    self.acked = seq;
                    self.last_progress = now;
                }
                self.release_through(seq);
            }
            Feedback::Resume { epoch, last_seq } => {
                self.established = true;
                self.last_progress = now;
                self.last_tx = None;
                if epoch == self.epoch && last_seq >= self.base && last_seq < self.next_seq {
                    // Still held: replay the deltas from there.
                    self.acked = self.acked.max(last_seq);
                    self.release_through(last_seq);
                    self.send_next = last_seq + 1;
                    self.m.resumed += 1;
                } else if matches!(
                    self.log.front(),
                    Some(Logged {
                        item: Item::SnapshotBegin { .. },
                        ..
                    })
                ) {
                    // A snapshot starts right at the front of the log: replaying it whole is
                    // a complete resync already.
                    self.send_next = self.base + 1;
                } else {
                    self.start_snapshot(now);
                }
            }
        }
    }

    /// The snapshot the caller should walk now, if any (only while a receiver is connected
    /// and the log has room: at most half of it is given to snapshot records, the other
    /// half stays free for the deltas).
    pub fn wants_snapshot(&self) -> Option<SnapshotRequest> {
        let snap = self.snapshot.filter(|s| s.feeding)?;
        if !self.established {
            return None;
        }
        let free_entries = (self.cfg.max_log_entries / 2).checked_sub(self.log.len())?;
        let free_bytes = (self.cfg.max_log_bytes / 2).checked_sub(self.log_bytes)?;
        let max_records = self
            .cfg
            .snapshot_chunk
            .min(free_entries)
            .min(free_bytes / 64);
        (max_records > 0).then_some(SnapshotRequest {
            id: snap.id,
            max_records,
        })
    }

    /// Records of snapshot `id`, in walk order; `done` when the walk is complete. Records of
    /// a snapshot that is no longer current are ignored.
    pub fn snapshot_chunk(&mut self, id: u64, records: &[Change], done: bool, now: u64) {
        if !matches!(self.snapshot, Some(s) if s.id == id && s.feeding) {
            return;
        }
        for r in records {
            if !self.append(Item::Snapshot(*r), now) {
                return; // overflow: a new snapshot has started
            }
        }
        if done && self.append(Item::SnapshotEnd { id }, now) {
            self.snapshot = None;
        }
    }

    /// The next batch to send, if any: new items within the window, a retransmission after
    /// `retransmit_after` without ack progress, or an empty keepalive every `idle_interval`.
    pub fn poll_transmit(&mut self, now: u64) -> Option<Batch> {
        if !self.established {
            return None;
        }
        let first_unacked = self.base + 1;
        if self.send_next > first_unacked
            && now.saturating_sub(self.last_progress) >= nanos(self.cfg.retransmit_after)
        {
            self.send_next = first_unacked;
            self.last_progress = now;
            self.m.retransmits += 1;
        }
        let in_flight = self.send_next - first_unacked;
        let room = u64::try_from(self.cfg.window)
            .unwrap_or(u64::MAX)
            .saturating_sub(in_flight);
        let n = (self.next_seq - self.send_next)
            .min(room)
            .min(u64::try_from(self.cfg.max_batch).unwrap_or(u64::MAX));
        if n > 0 {
            let start = usize::try_from(self.send_next - first_unacked).ok()?;
            let n_items = usize::try_from(n).ok()?;
            let items: Vec<Item> = self
                .log
                .range(start..start + n_items)
                .map(|l| l.item)
                .collect();
            let batch = Batch {
                epoch: self.epoch,
                first_seq: self.send_next,
                items,
                head_seq: self.head_seq(),
            };
            if in_flight == 0 {
                self.last_progress = now;
            }
            self.send_next += n;
            self.m.last_sent = self.m.last_sent.max(self.send_next - 1);
            self.last_tx = Some(now);
            return Some(batch);
        }
        let idle = match self.last_tx {
            None => true,
            Some(t) => now.saturating_sub(t) >= nanos(self.cfg.idle_interval),
        };
        if idle {
            self.last_tx = Some(now);
            return Some(Batch {
                epoch: self.epoch,
                first_seq: self.send_next,
                items: Vec::new(),
                head_seq: self.head_seq(),
            });
        }
        None
    }

    /// The counters and gauges, as of `now`.
    pub fn metrics(&self, now: u64) -> SenderMetrics {
        SenderMetrics {
            epoch: self.epoch,
            head_seq: self.head_seq(),
            last_acked: self.acked,
            lag_events: self.head_seq().saturating_sub(self.acked),
            lag_ms: self
                .log
                .front()
                .map_or(0, |l| now.saturating_sub(l.pushed_at) / super::NS_PER_MS),
            queue_depth: self.log.len(),
            queue_bytes: self.log_bytes,
            ..self.m
        }
    }

    // ---- internals ----------------------------------------------------------------------

    /// Appends one item; on overflow drops the log, starts a snapshot and returns `false`.
    fn append(&mut self, item: Item, now: u64) -> bool {
        let cost = item.cost();
        if self.log.len() >= self.cfg.max_log_entries
            || self.log_bytes.saturating_add(cost) > self.cfg.max_log_bytes
        {
            self.m.overflow_drops += self.log.len() as u64 + 1;
            self.resync(now);
            return false;
        }
        self.log.push_back(Logged {
            item,
            pushed_at: now,
        });
        self.log_bytes += cost;
        self.next_seq += 1;
        true
    }

    fn resync(&mut self, now: u64) {
        self.m.resyncs += 1;
        self.start_snapshot(now);
    }

    /// Drops the log (a snapshot supersedes it) and appends a `SnapshotBegin`.
    fn start_snapshot(&mut self, now: u64) {
        self.log.clear();
        self.log_bytes = 0;
        self.base = self.next_seq - 1;
        self.send_next = self.next_seq;
        let id = self.next_snapshot_id;
        self.next_snapshot_id += 1;
        self.snapshot = Some(Snap { id, feeding: true });
        self.m.snapshots += 1;
        tracing::debug!(
            epoch = self.epoch,
            id,
            seq = self.next_seq,
            "snapshot starts"
        );
        // The log is empty: this cannot overflow unless the bounds are zero.
        if self.cfg.max_log_entries > 0 && self.cfg.max_log_bytes >= 12 {
            self.log.push_back(Logged {
                item: Item::SnapshotBegin { id },
                pushed_at: now,
            });
            self.log_bytes += 12;
            self.next_seq += 1;
        }
    }

    /// Forgets everything up to `seq` (acked).
    fn release_through(&mut self, seq: u64) {
        while self.base < seq {
            match self.log.pop_front() {
                Some(l) => {
                    self.log_bytes = self.log_bytes.saturating_sub(l.item.cost());
                    self.base += 1;
                }
                None => break,
            }
        }
        if self.send_next <= self.base {
            self.send_next = self.base + 1;
        }
    }
}
