//! Where a [`crate::repl::Receiver`] puts what it applies: the [`Replica`] trait, a plain
//! model ([`ModelReplica`]) and an adapter over the core's own connection table
//! ([`ConnTableReplica`]).

use std::collections::HashMap;

use tandem_core::conn::{ConnRecord, ConnTable, Direction};
use tandem_core::lb::Flow;

use super::types::{Change, ConnKey, LocalityEntry, LocalityKey, ReplicaKey};

/// The standby's copy of the replicated state, as the receiver drives it.
///
/// Mark and sweep: the replica stamps every entry it upserts with its current *generation*;
/// [`Replica::begin_snapshot`] starts a new one and [`Replica::end_snapshot`] removes every
/// entry stamped with an older one. The generation belongs to the replica (not to the
/// receiver), so that a restarted receiver still sweeps what an earlier one installed.
pub trait Replica {
    /// Applies one change (an upsert, or a removal) and stamps the entry with the current
    /// generation. Refusals (table full, unknown destination) are the replica's to count;
    /// the stream goes on.
    fn apply(&mut self, change: &Change, now: u64);
    /// A snapshot begins: start a new generation.
    fn begin_snapshot(&mut self);
    /// The snapshot is complete: remove every entry not stamped with the current generation;
    /// returns how many.
    fn end_snapshot(&mut self, now: u64) -> usize;
}

/// What a replica refused or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaStats {
    /// Upserts refused (full, bad destination, key held by another entry).
    pub refused: u64,
    /// Entries removed by sweeps.
    pub swept: u64,
}

/// One value of a [`ModelReplica`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelValue {
    /// A connection or template.
    Conn(ConnRecord),
    /// A locality entry.
    Locality(LocalityEntry),
}

/// A replica that is just a bounded map from key to the last record: the reference the pair
/// tests compare against, and the sender-side table of those tests.
#[derive(Debug, Clone)]
pub struct ModelReplica {
    entries: HashMap<ReplicaKey, (ModelValue, u64)>,
    capacity: usize,
    generation: u64,
    /// What it refused or removed.
    pub stats: ReplicaStats,
}

impl ModelReplica {
    /// An empty model holding at most `capacity` entries.
    pub fn new(capacity: usize) -> ModelReplica {
        ModelReplica {
            entries: HashMap::new(),
            capacity,
            generation: 0,
            stats: ReplicaStats::default(),
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No entry held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry with `key`.
    pub fn get(&self, key: &ReplicaKey) -> Option<&ModelValue> {
        self.entries.get(key).map(|(v, _)| v)
    }

    /// Every entry, sorted by key (for exact comparisons).
    pub fn sorted(&self) -> Vec<(ReplicaKey, ModelValue)> {
        let mut v: Vec<_> = self.entries.iter().map(|(k, (v, _))| (*k, *v)).collect();
        v.sort_by_key(|e| e.0);
        v
    }

    /// Every entry as the upsert that recreates it, sorted by key (a snapshot walk).
    pub fn snapshot(&self) -> Vec<Change> {
        self.sorted()
            .into_iter()
            .map(|(_, v)| match v {
                ModelValue::Conn(record) => Change::Conn {
                    kind: tandem_core::conn::ConnEventKind::Refreshed,
                    record,
                },
                ModelValue::Locality(e) => Change::LocalitySet(e),
            })
            .collect()
    }
}

impl Replica for ModelReplica {
    fn apply(&mut self, change: &Change, _now: u64) {
        let generation = self.generation;
        let key = change.key();
        let value = match change {
            _ if change.is_removal() => {
                self.entries.remove(&key);
                return;
            }
            Change::Conn { record, .. } => ModelValue::Conn(*record),
            Change::LocalitySet(e) => ModelValue::Locality(*e),
            Change::LocalityRemoved(_) => return,
        };
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.stats.refused += 1;
            return;
        }
        self.entries.insert(key, (value, generation));
    }

    fn begin_snapshot(&mut self) {
        self.generation += 1;
    }

    fn end_snapshot(&mut self, _now: u64) -> usize {
        let generation = self.generation;
        let before = self.entries.len();
        self.entries.retain(|_, (_, g)| *g >= generation);
        let swept = before - self.entries.len();
        self.stats.swept += swept as u64;
        swept
    }
}

/// A replica over the core's [`ConnTable`] (one lcore's table; the real daemon instead
/// streams to the dataplane's `ApplyConnections`, with the same bookkeeping). The core keeps
/// no generation per entry, so the adapter keeps one per key beside the table; keys whose
/// entry the table expired on its own are pruned from it when it grows past twice the
/// table's capacity, so it stays bounded. Locality entries are kept in a bounded map.
#[derive(Debug)]
pub struct ConnTableReplica {
    /// The table the records are installed into.
    pub table: ConnTable,
    marks: HashMap<ConnKey, u64>,
    locality: HashMap<LocalityKey, (LocalityEntry, u64)>,
    max_locality: usize,
    generation: u64,
    /// What it refused or removed.
    pub stats: ReplicaStats,
}

impl ConnTableReplica {
    /// Wraps `table`; at most `max_locality` locality entries.
    pub fn new(table: ConnTable, max_locality: usize) -> ConnTableReplica {
        ConnTableReplica {
            table,
            marks: HashMap::new(),
            locality: HashMap::new(),
            max_locality,
            generation: 0,
            stats: ReplicaStats::default(),
        }
    }

    /// Marks every entry the table holds now (a restarted syncd adopting its dataplane's
    /// table), so that the next completed snapshot sweeps those the peer no longer has.
    pub fn adopt_existing(&mut self) {
        let generation = self.generation;
        for (_, c) in self.table.iter() {
            let key = ConnKey {
                proto: c.proto(),
                client: c.client(),
                vip: c.vip(),
            };
            self.marks.insert(key, generation);
        }
    }

    /// The locality entries, sorted by key.
    pub fn locality(&self) -> Vec<LocalityEntry> {
        let mut v: Vec<_> = self.locality.values().map(|(e, _)| *e).collect();
        v.sort_by_key(|e| e.key);
        v
    }

    fn prune_marks(&mut self) {
        if self.marks.len() <= self.table.capacity().saturating_mul(2) {
            return;
        }
        let table = &self.table;
        self.marks.retain(|k, _| present(table, k));
    }
}

fn flow(k: &ConnKey) -> Flow {
    Flow {
        proto: k.proto,
        src: k.client,
        dst: k.vip,
    }
}

fn present(table: &ConnTable, k: &ConnKey) -> bool {
    matches!(table.lookup(&flow(k)), Some((_, Direction::Input)))
}

impl Replica for ConnTableReplica {
    fn apply(&mut self, change: &Change, now: u64) {
        let generation = self.generation;
        match change {
            Change::Conn { record, .. } => {
                let key = ConnKey::of(record);
                if change.is_removal() {
                    self.table.uninstall(record);
                    self.marks.remove(&key);
                } else if self.table.install(record, now).is_ok() {
                    self.marks.insert(key, generation);
                    self.prune_marks();
                } else {
                    self.stats.refused += 1;
                }
            }
            Change::LocalitySet(e) => {
                if self.locality.len() >= self.max_locality && !self.locality.contains_key(&e.key) {
                    self.stats.refused += 1;
                } else {
                    self.locality.insert(e.key, (*e, generation));
                }
            }
            Change::LocalityRemoved(k) => {
                self.locality.remove(k);
            }
        }
    }

    fn begin_snapshot(&mut self) {
        self.generation += 1;
    }

    fn end_snapshot(&mut self, _now: u64) -> usize {
        let generation = self.generation;
        let stale: Vec<ConnKey> = self
            .marks
            .iter()
            .filter(|(_, g)| **g < generation)
            .map(|(k, _)| *k)
            .collect();
        let mut swept = 0usize;
        for k in stale {
            self.marks.remove(&k);
            if let Some((id, Direction::Input)) = self.table.lookup(&flow(&k))
                && let Some(rec) = self.table.record(id, 0)
                && self.table.uninstall(&rec)
            {
                swept += 1;
            }
        }
        let before = self.locality.len();
        self.locality.retain(|_, (_, g)| *g >= generation);
        swept += before - self.locality.len();
        self.stats.swept += swept as u64;
        swept
    }
}
