//! Locality-based least connections: lblc (`ip_vs_lblc.c`) and lblc with replication
//! (`ip_vs_lblcr.c`), seed 003 "基于局部性的最少链接" and "带复制的基于局部性最少链接".
//!
//! Both key a table on the request's *destination* IP address (they were made for cache
//! clusters, where the destination is the origin server; on a plain VIP service every
//! request has the same destination and one entry serves them all).
//!
//! # Bounds and ageing
//! The table has a fixed number of buckets (default 1024, the kernel's
//! `CONFIG_IP_VS_LBLC_TAB_BITS` = 10) and a fixed capacity (default 16384, the kernel's
//! `max_size` = 16 × buckets). A new destination address that finds the table full is still
//! scheduled (by wlc), but its mapping is not remembered; this is counted in
//! [`SchedulerStats::locality_full`](super::SchedulerStats::locality_full). The kernel's
//! periodic timer becomes [`Scheduler::housekeeping`](super::Scheduler::housekeeping), which
//! the caller runs about every [`CHECK_EXPIRE_INTERVAL`]:
//! - every [`FULL_CHECK_INTERVAL`] it drops entries unused for the expiration time
//!   (`lblc_expiration` / `lblcr_expiration`, default [`DEFAULT_EXPIRATION`] = 24 h);
//! - otherwise, if the table is full or refused an entry since the last run, it drops entries
//!   unused for [`ENTRY_TIMEOUT`] (6 min), as the kernel does when over `max_size` (the kernel
//!   stops after a goal of `(entries − max) · 4/3`; we reclaim every such entry).
//!
//! Nothing on the packet path sweeps the table.
//!
//! # What the sync daemon hears
//! `take_changed` names the address whose entry the last `pick` created or changed, and also
//! one it merely used when its last announcement is half an expiration old
//! ([`reannounce_due`]): the standby's copy ages from the moment it is installed (the wire
//! carries no idle time), so an entry the active keeps using unchanged is announced again
//! before the standby's copy could expire, at most twice per expiration time.

use std::net::Ipv4Addr;

use super::least::{heavier, is_overloaded, weighted_most, wlc};
use super::table::BoundedTable;
use super::{DestState, InstallError, SchedulerStats, find};
use crate::lb::DestId;

const SECOND: u64 = 1_000_000_000;
/// How often the kernel's GC timer runs (`CHECK_EXPIRE_INTERVAL`, 60 s), in nanoseconds.
pub const CHECK_EXPIRE_INTERVAL: u64 = 60 * SECOND;
/// Idle time after which an entry may be reclaimed from a full table (`ENTRY_TIMEOUT`, 6 min).
pub const ENTRY_TIMEOUT: u64 = 6 * 60 * SECOND;
/// Default `lblc_expiration` / `lblcr_expiration` (`DEFAULT_EXPIRATION`, 24 h).
pub const DEFAULT_EXPIRATION: u64 = 24 * 60 * 60 * SECOND;
/// Interval of the full expiration check (`COUNT_FOR_FULL_EXPIRATION` = 30 timer runs).
pub const FULL_CHECK_INTERVAL: u64 = 30 * CHECK_EXPIRE_INTERVAL;
/// Default bucket count (`IP_VS_LBLC_TAB_SIZE`, `1 << 10`).
pub const DEFAULT_BUCKETS: usize = 1024;
/// Default capacity (`max_size = IP_VS_LBLC_TAB_SIZE * 16`).
pub const DEFAULT_CAPACITY: usize = 16 * DEFAULT_BUCKETS;
/// The most destinations one lblcr set holds (the kernel's sets are unbounded).
pub const DEST_SET_CAPACITY: usize = 8;

/// Sizes and times of an lblc/lblcr table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalityOptions {
    /// Hash buckets, a power of two (default 1024).
    pub buckets: usize,
    /// The most entries (default 16384).
    pub capacity: usize,
    /// `lblc_expiration` / `lblcr_expiration` in nanoseconds: entries idle this long are
    /// dropped by the full check, and (lblcr) a set unmodified this long sheds its busiest
    /// member. Default 24 h.
    pub expiration: u64,
    /// Seed of the bucket hash. Use a random value per director: clients choose the keys.
    pub hash_seed: u64,
}

impl Default for LocalityOptions {
    fn default() -> Self {
        Self {
            buckets: DEFAULT_BUCKETS,
            capacity: DEFAULT_CAPACITY,
            expiration: DEFAULT_EXPIRATION,
            hash_seed: 0,
        }
    }
}

/// A bounded set of destinations, most recently added first (the kernel adds to the head of
/// the set's list, so ties in the set's least-loaded search go to the newest member).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestSet {
    len: u8,
    members: [DestId; DEST_SET_CAPACITY],
}

impl Default for DestSet {
    fn default() -> Self {
        Self {
            len: 0,
            members: [DestId(0); DEST_SET_CAPACITY],
        }
    }
}

impl DestSet {
    /// A set from `ids`, newest first. `None` if there are more than [`DEST_SET_CAPACITY`]
    /// or a duplicate.
    pub fn from_slice(ids: &[DestId]) -> Option<Self> {
        let mut set = Self::default();
        for &id in ids.iter().rev() {
            if set.contains(id) || !set.push_front(id) {
                return None;
            }
        }
        Some(set)
    }

    /// The members, newest first.
    pub fn as_slice(&self) -> &[DestId] {
        &self.members[..usize::from(self.len)]
    }

    /// How many members.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `id` is a member.
    pub fn contains(&self, id: DestId) -> bool {
        self.as_slice().contains(&id)
    }

    fn is_full(&self) -> bool {
        self.len() >= DEST_SET_CAPACITY
    }

    /// Adds `id` as the newest member; false if full.
    fn push_front(&mut self, id: DestId) -> bool {
        if self.is_full() {
            return false;
        }
        let n = self.len();
        self.members.copy_within(0..n, 1);
        self.members[0] = id;
        self.len += 1;
        true
    }

    fn remove(&mut self, id: DestId) -> bool {
        let Some(at) = self.as_slice().iter().position(|&m| m == id) else {
            return false;
        };
        let n = self.len();
        self.members.copy_within(at + 1..n, at);
        self.len -= 1;
        true
    }

    fn retain(&mut self, keep: impl Fn(DestId) -> bool) {
        let mut kept = Self::default();
        for &id in self.as_slice().iter().rev() {
            if keep(id) {
                kept.push_front(id);
            }
        }
        *self = kept;
    }
}

/// One lblc mapping, for listing and for syncing to the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LblcEntry {
    /// The request destination address.
    pub addr: Ipv4Addr,
    /// The server last used for it.
    pub dest: DestId,
    /// Nanoseconds since it was last used (relative, so it survives the two directors'
    /// different clocks).
    pub idle: u64,
}

/// One lblcr mapping, for listing and for syncing to the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LblcrEntry {
    /// The request destination address.
    pub addr: Ipv4Addr,
    /// Its server set, newest first.
    pub dests: DestSet,
    /// Nanoseconds since the entry was last used.
    pub idle: u64,
    /// Nanoseconds since the set was last modified.
    pub unmodified: u64,
}

/// An entry of an lblc or lblcr table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalityEntry {
    /// From an lblc scheduler.
    Lblc(LblcEntry),
    /// From an lblcr scheduler.
    Lblcr(LblcrEntry),
}

/// The GC state shared by both tables.
#[derive(Debug, Clone, Default)]
struct Gc {
    last_full_check: u64,
    refused: bool,
}

impl Gc {
    /// The kernel's `ip_vs_lblc_check_expire` / `ip_vs_lblcr_check_expire`, one run.
    fn run<V>(
        &mut self,
        table: &mut BoundedTable<Ipv4Addr, V>,
        expiration: u64,
        now: u64,
        last_use: impl Fn(&V) -> u64,
        removed_addr: &mut impl FnMut(Ipv4Addr),
    ) -> usize {
        let idle_limit = if now.saturating_sub(self.last_full_check) >= FULL_CHECK_INTERVAL {
            self.last_full_check = now;
            Some(expiration)
        } else if self.refused || table.is_full() {
            Some(ENTRY_TIMEOUT)
        } else {
            None
        };
        let removed = match idle_limit {
            Some(limit) => table.retain(|addr, v| {
                let keep = now < last_use(v).saturating_add(limit);
                if !keep {
                    removed_addr(*addr);
                }
                keep
            }),
            None => 0,
        };
        self.refused = false;
        removed
    }
}

/// Whether an entry last announced at `announced` and used at `now` is to be announced again:
/// half of `expiration` has passed, so that the standby's copy, which ages from its
/// installation, never comes near its own expiry while the active uses the entry.
pub(crate) fn reannounce_due(announced: u64, now: u64, expiration: u64) -> bool {
    now.saturating_sub(announced) >= expiration / 2
}

fn validate(options: &LocalityOptions) -> Result<(), super::SchedulerError> {
    type T = BoundedTable<Ipv4Addr, ()>;
    if !options.buckets.is_power_of_two() || options.buckets > T::MAX_BUCKETS {
        return Err(super::SchedulerError::LocalityBuckets(options.buckets));
    }
    if options.capacity == 0 || options.capacity > T::MAX_CAPACITY {
        return Err(super::SchedulerError::LocalityCapacity(options.capacity));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct LblcValue {
    dest: DestId,
    last_use: u64,
    /// When the entry was last announced to the sync daemon (made, changed, or used and
    /// [`reannounce_due`]); when it was installed, for the peer's.
    announced: u64,
}

/// lblc: destination address → the server last used for it.
#[derive(Debug, Clone)]
pub(crate) struct Lblc {
    table: BoundedTable<Ipv4Addr, LblcValue>,
    expiration: u64,
    gc: Gc,
    /// The address whose mapping the last `pick` created or changed (for the sync daemon).
    changed: Option<Ipv4Addr>,
}

impl Lblc {
    pub(crate) fn new(options: &LocalityOptions) -> Result<Self, super::SchedulerError> {
        validate(options)?;
        Ok(Self {
            table: BoundedTable::new(options.buckets, options.capacity, options.hash_seed),
            expiration: options.expiration,
            gc: Gc::default(),
            changed: None,
        })
    }

    /// Forgets mappings to destinations no longer in the list. (The kernel keeps them,
    /// unavailable, until replaced or expired; the scheduling outcome is the same, and a
    /// reused `DestId` cannot inherit them.)
    pub(crate) fn update(&mut self, dests: &[DestState]) {
        self.table.retain(|_, v| find(dests, v.dest).is_some());
    }

    /// `ip_vs_lblc_schedule`: the cached server for `daddr` if it is still in the list, has
    /// weight > 0 and is not overloaded in the half-load sense ([`is_overloaded`]); else wlc's
    /// choice, which becomes the cached server.
    pub(crate) fn pick(
        &mut self,
        dests: &[DestState],
        daddr: Ipv4Addr,
        now: u64,
        stats: &mut SchedulerStats,
    ) -> Option<DestId> {
        if let Some(v) = self.table.get_mut(&daddr) {
            v.last_use = now;
            if let Some(d) = find(dests, v.dest) {
                if d.weight > 0 && !is_overloaded(d, dests) {
                    if reannounce_due(v.announced, now, self.expiration) {
                        v.announced = now;
                        self.changed = Some(daddr);
                    }
                    return Some(d.id);
                }
            }
        }
        let id = dests[wlc(dests)?].id;
        let fresh = LblcValue {
            dest: id,
            last_use: now,
            announced: now,
        };
        match self.table.get_mut(&daddr) {
            Some(v) => {
                if v.dest != id || reannounce_due(v.announced, now, self.expiration) {
                    *v = fresh;
                    self.changed = Some(daddr);
                }
            }
            None => {
                if self.table.insert(daddr, fresh).is_err() {
                    stats.locality_full += 1;
                    self.gc.refused = true;
                } else {
                    self.changed = Some(daddr);
                }
            }
        }
        Some(id)
    }

    pub(crate) fn housekeeping(&mut self, now: u64, removed: &mut impl FnMut(Ipv4Addr)) -> usize {
        self.gc.run(
            &mut self.table,
            self.expiration,
            now,
            |v| v.last_use,
            removed,
        )
    }

    pub(crate) fn take_changed(&mut self) -> Option<Ipv4Addr> {
        self.changed.take()
    }

    pub(crate) fn entry(&self, addr: Ipv4Addr, now: u64) -> Option<LocalityEntry> {
        self.table.get(&addr).map(|v| {
            LocalityEntry::Lblc(LblcEntry {
                addr,
                dest: v.dest,
                idle: now.saturating_sub(v.last_use),
            })
        })
    }

    pub(crate) fn remove(&mut self, addr: Ipv4Addr) -> bool {
        self.table.remove(&addr).is_some()
    }

    pub(crate) fn entries(&self, now: u64) -> impl Iterator<Item = LocalityEntry> + '_ {
        self.table.iter().map(move |(addr, v)| {
            LocalityEntry::Lblc(LblcEntry {
                addr: *addr,
                dest: v.dest,
                idle: now.saturating_sub(v.last_use),
            })
        })
    }

    pub(crate) fn install(&mut self, e: LblcEntry, now: u64) -> Result<(), InstallError> {
        let value = LblcValue {
            dest: e.dest,
            last_use: now.saturating_sub(e.idle),
            announced: now,
        };
        self.table
            .insert(e.addr, value)
            .map_err(|_| InstallError::Full)
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct LblcrValue {
    set: DestSet,
    last_use: u64,
    last_mod: u64,
    /// As [`LblcValue::announced`].
    announced: u64,
}

/// lblcr: destination address → a set of servers.
#[derive(Debug, Clone)]
pub(crate) struct Lblcr {
    table: BoundedTable<Ipv4Addr, LblcrValue>,
    expiration: u64,
    gc: Gc,
    /// The address whose set the last `pick` created or changed (for the sync daemon).
    changed: Option<Ipv4Addr>,
}

/// `ip_vs_dest_set_min`: the set's weighted least-connection member among those still in
/// the list, with weight > 0 (for the first), not overloaded.
fn set_min<'a>(set: &DestSet, dests: &'a [DestState]) -> Option<&'a DestState> {
    let mut least: Option<&DestState> = None;
    for &id in set.as_slice() {
        let Some(d) = find(dests, id) else { continue };
        if d.overloaded {
            continue;
        }
        let better = match least {
            None => d.weight > 0,
            Some(l) => heavier(l.conn_overhead(), l.weight, d.conn_overhead(), d.weight),
        };
        if better {
            least = Some(d);
        }
    }
    least
}

/// `ip_vs_dest_set_max` over the members still in the list.
fn set_max(set: &DestSet, dests: &[DestState]) -> Option<DestId> {
    weighted_most(set.as_slice().iter().filter_map(|&id| find(dests, id))).map(|d| d.id)
}

impl Lblcr {
    pub(crate) fn new(options: &LocalityOptions) -> Result<Self, super::SchedulerError> {
        validate(options)?;
        Ok(Self {
            table: BoundedTable::new(options.buckets, options.capacity, options.hash_seed),
            expiration: options.expiration,
            gc: Gc::default(),
            changed: None,
        })
    }

    /// Drops removed destinations from every set, and sets left empty.
    pub(crate) fn update(&mut self, dests: &[DestState]) {
        self.table.retain(|_, v| {
            v.set.retain(|id| find(dests, id).is_some());
            !v.set.is_empty()
        });
    }

    /// `ip_vs_lblcr_schedule`:
    /// 1. an entry for `daddr` exists: take its set's least-loaded member; if the set has
    ///    more than one member and was not modified for the expiration time, drop its
    ///    weighted most-loaded member (after choosing, as the kernel does); if the chosen
    ///    member exists and is not overloaded (half-load rule), use it;
    /// 2. otherwise wlc over the whole list chooses, and joins the set (or starts one).
    ///
    /// A full set makes room by dropping its busiest member (counted in
    /// [`SchedulerStats::locality_set_evictions`]).
    pub(crate) fn pick(
        &mut self,
        dests: &[DestState],
        daddr: Ipv4Addr,
        now: u64,
        stats: &mut SchedulerStats,
    ) -> Option<DestId> {
        let expiration = self.expiration;
        if let Some(v) = self.table.get_mut(&daddr) {
            v.last_use = now;
            let chosen = set_min(&v.set, dests);
            let mut shrunk = false;
            if v.set.len() > 1 && now > v.last_mod.saturating_add(expiration) {
                if let Some(m) = set_max(&v.set, dests) {
                    v.set.remove(m);
                    v.last_mod = now;
                    shrunk = true;
                }
            }
            if shrunk || reannounce_due(v.announced, now, expiration) {
                // Announced now (the set shrank above, or it is due): the standby's copy
                // starts its age again.
                v.announced = now;
                self.changed = Some(daddr);
            }
            if let Some(d) = chosen {
                if !is_overloaded(d, dests) {
                    return Some(d.id);
                }
            }
            let id = dests[wlc(dests)?].id;
            if !v.set.contains(id) {
                if v.set.is_full() {
                    let victim =
                        set_max(&v.set, dests).or_else(|| v.set.as_slice().last().copied());
                    if let Some(victim) = victim {
                        v.set.remove(victim);
                        stats.locality_set_evictions += 1;
                    }
                }
                v.set.push_front(id);
                v.last_mod = now;
                v.announced = now;
                self.changed = Some(daddr);
            }
            return Some(id);
        }
        let id = dests[wlc(dests)?].id;
        let mut set = DestSet::default();
        set.push_front(id);
        let value = LblcrValue {
            set,
            last_use: now,
            last_mod: now,
            announced: now,
        };
        if self.table.insert(daddr, value).is_err() {
            stats.locality_full += 1;
            self.gc.refused = true;
        } else {
            self.changed = Some(daddr);
        }
        Some(id)
    }

    pub(crate) fn housekeeping(&mut self, now: u64, removed: &mut impl FnMut(Ipv4Addr)) -> usize {
        self.gc.run(
            &mut self.table,
            self.expiration,
            now,
            |v| v.last_use,
            removed,
        )
    }

    pub(crate) fn take_changed(&mut self) -> Option<Ipv4Addr> {
        self.changed.take()
    }

    pub(crate) fn entry(&self, addr: Ipv4Addr, now: u64) -> Option<LocalityEntry> {
        self.table.get(&addr).map(|v| {
            LocalityEntry::Lblcr(LblcrEntry {
                addr,
                dests: v.set,
                idle: now.saturating_sub(v.last_use),
                unmodified: now.saturating_sub(v.last_mod),
            })
        })
    }

    pub(crate) fn remove(&mut self, addr: Ipv4Addr) -> bool {
        self.table.remove(&addr).is_some()
    }

    pub(crate) fn entries(&self, now: u64) -> impl Iterator<Item = LocalityEntry> + '_ {
        self.table.iter().map(move |(addr, v)| {
            LocalityEntry::Lblcr(LblcrEntry {
                addr: *addr,
                dests: v.set,
                idle: now.saturating_sub(v.last_use),
                unmodified: now.saturating_sub(v.last_mod),
            })
        })
    }

    pub(crate) fn install(&mut self, e: LblcrEntry, now: u64) -> Result<(), InstallError> {
        if e.dests.is_empty() {
            return Err(InstallError::EmptySet);
        }
        let value = LblcrValue {
            set: e.dests,
            last_use: now.saturating_sub(e.idle),
            last_mod: now.saturating_sub(e.unmodified),
            announced: now,
        };
        self.table
            .insert(e.addr, value)
            .map_err(|_| InstallError::Full)
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: u64 = 60 * SECOND;
    const HOUR: u64 = 60 * MINUTE;

    fn dest(i: u32, weight: u32, active: u32) -> DestState {
        DestState {
            active,
            ..DestState::new(
                DestId(i),
                Ipv4Addr::new(192, 168, 0, 1 + u8::try_from(i).unwrap()),
                80,
                weight,
            )
        }
    }

    fn cache(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(203, 0, 113, n)
    }

    fn small(capacity: usize) -> LocalityOptions {
        LocalityOptions {
            buckets: 4,
            capacity,
            ..LocalityOptions::default()
        }
    }

    /// An entry used unchanged is announced again once half an expiration has passed since
    /// its last announcement, and not more often; a change announces at once and restarts
    /// the count. (The standby's copy ages from its installation.)
    #[test]
    fn entries_used_unchanged_are_announced_again_every_half_expiration() {
        let dests = [dest(0, 1, 0), dest(1, 1, 0)];
        let mut stats = SchedulerStats::default();
        let mut lblc = Lblc::new(&small(16)).unwrap();
        let mut lblcr = Lblcr::new(&small(16)).unwrap();
        let t0 = 5 * HOUR;
        // (time, announced by lblc, announced by lblcr)
        let steps = [
            (t0, true, true),          // made
            (t0 + HOUR, false, false), // used
            (t0 + 12 * HOUR - 1, false, false),
            (t0 + 12 * HOUR, true, true), // half of the 24 h expiration
            (t0 + 12 * HOUR + 1, false, false),
            (t0 + 23 * HOUR, false, false),
            (t0 + 24 * HOUR, true, true),
        ];
        for (now, lblc_says, lblcr_says) in steps {
            assert_eq!(
                lblc.pick(&dests, cache(1), now, &mut stats),
                Some(DestId(0))
            );
            assert_eq!(lblc.take_changed().is_some(), lblc_says, "lblc at {now}");
            assert_eq!(
                lblcr.pick(&dests, cache(1), now, &mut stats),
                Some(DestId(0))
            );
            assert_eq!(lblcr.take_changed().is_some(), lblcr_says, "lblcr at {now}");
        }
        // lblc: the server changes (weight 0 now) → announced at once; then not for 12 h.
        let quiesced = [dest(0, 0, 0), dest(1, 1, 0)];
        let t1 = t0 + 25 * HOUR;
        assert_eq!(
            lblc.pick(&quiesced, cache(1), t1, &mut stats),
            Some(DestId(1))
        );
        assert_eq!(lblc.take_changed(), Some(cache(1)));
        assert_eq!(
            lblc.pick(&quiesced, cache(1), t1 + 11 * HOUR, &mut stats),
            Some(DestId(1))
        );
        assert_eq!(lblc.take_changed(), None);
        // An installed entry counts as announced when installed.
        let mut standby = Lblc::new(&small(16)).unwrap();
        let e = LblcEntry {
            addr: cache(2),
            dest: DestId(1),
            idle: 0,
        };
        standby.install(e, t0).unwrap();
        assert_eq!(
            standby.pick(&dests, cache(2), t0 + HOUR, &mut stats),
            Some(DestId(1))
        );
        assert_eq!(standby.take_changed(), None);
        assert_eq!(
            standby.pick(&dests, cache(2), t0 + 12 * HOUR, &mut stats),
            Some(DestId(1))
        );
        assert_eq!(standby.take_changed(), Some(cache(2)));
    }

    #[test]
    fn dest_set_keeps_newest_first_and_bounds() {
        let mut s = DestSet::default();
        for i in 0..8 {
            assert!(s.push_front(DestId(i)));
        }
        assert!(!s.push_front(DestId(9)));
        assert_eq!(s.as_slice()[0], DestId(7));
        assert!(s.remove(DestId(3)));
        assert!(!s.remove(DestId(3)));
        assert_eq!(s.len(), 7);
        s.retain(|id| id.0 % 2 == 0);
        assert_eq!(s.as_slice(), &[DestId(6), DestId(4), DestId(2), DestId(0)]);
        assert_eq!(DestSet::from_slice(s.as_slice()), Some(s));
        assert_eq!(DestSet::from_slice(&[DestId(1), DestId(1)]), None);
        assert_eq!(DestSet::from_slice(&[DestId(1); 9]), None);
    }

    #[test]
    fn lblc_sticks_to_the_cached_server() {
        let mut stats = SchedulerStats::default();
        let mut lblc = Lblc::new(&small(16)).unwrap();
        let mut d = vec![dest(0, 1, 0), dest(1, 1, 0)];
        assert_eq!(lblc.pick(&d, cache(1), 0, &mut stats), Some(DestId(0)));
        // A becomes the busier one: wlc would say B, but the cache keeps A.
        d[0].active = 1;
        assert_eq!(lblc.pick(&d, cache(1), 1, &mut stats), Some(DestId(0)));
        // Another address goes by wlc.
        assert_eq!(lblc.pick(&d, cache(2), 2, &mut stats), Some(DestId(1)));
    }

    #[test]
    fn lblc_overload_needs_a_half_loaded_peer() {
        let mut stats = SchedulerStats::default();
        let mut lblc = Lblc::new(&small(16)).unwrap();
        let mut d = vec![dest(0, 2, 0), dest(1, 4, 0)];
        // wlc: both idle -> A (first). Cached.
        assert_eq!(lblc.pick(&d, cache(1), 0, &mut stats), Some(DestId(0)));
        // A: active 3 > weight 2 (overloaded); B: 2 * 2 = 4, not < 4 -> not at half load.
        d[0].active = 3;
        d[1].active = 2;
        assert_eq!(lblc.pick(&d, cache(1), 1, &mut stats), Some(DestId(0)));
        // B drops to 1 active: 2 < 4, half load -> rescheduled by wlc: A (3*256)/2 = 384,
        // B (1*256)/4 = 64 -> B, which becomes the cached server.
        d[1].active = 1;
        assert_eq!(lblc.pick(&d, cache(1), 2, &mut stats), Some(DestId(1)));
        d[0].active = 0;
        assert_eq!(lblc.pick(&d, cache(1), 3, &mut stats), Some(DestId(1)));
    }

    #[test]
    fn lblc_quiesced_or_removed_cached_server_is_replaced() {
        let mut stats = SchedulerStats::default();
        let mut lblc = Lblc::new(&small(16)).unwrap();
        let mut d = vec![dest(0, 1, 0), dest(1, 1, 1)];
        assert_eq!(lblc.pick(&d, cache(1), 0, &mut stats), Some(DestId(0)));
        d[0].weight = 0;
        assert_eq!(lblc.pick(&d, cache(1), 1, &mut stats), Some(DestId(1)));
        d[0].weight = 1;
        // The cache now says B, and B (1 active, not above its weight) is fine.
        assert_eq!(lblc.pick(&d, cache(1), 2, &mut stats), Some(DestId(1)));
        // B removed from the list: its mapping goes on update, A takes over.
        let only_a = vec![d[0]];
        lblc.update(&only_a);
        assert_eq!(lblc.len(), 0);
        assert_eq!(lblc.pick(&only_a, cache(1), 3, &mut stats), Some(DestId(0)));
        let none = vec![dest(0, 0, 0)];
        assert_eq!(lblc.pick(&none, cache(1), 4, &mut stats), None);
        // The cached flag-overloaded server is still used (the kernel only checks weight and
        // the half-load rule for a cached server).
        let mut flagged = vec![dest(0, 1, 0), dest(1, 1, 0)];
        flagged[0].overloaded = true;
        assert_eq!(
            lblc.pick(&flagged, cache(1), 5, &mut stats),
            Some(DestId(0))
        );
    }

    #[test]
    fn lblc_full_table_refuses_counts_and_recovers_after_gc() {
        let mut stats = SchedulerStats::default();
        let mut lblc = Lblc::new(&small(2)).unwrap();
        let d = vec![dest(0, 1, 0)];
        lblc.pick(&d, cache(1), 0, &mut stats);
        lblc.pick(&d, cache(2), 0, &mut stats);
        // Full: still scheduled, not remembered, counted.
        assert_eq!(lblc.pick(&d, cache(3), MINUTE, &mut stats), Some(DestId(0)));
        assert_eq!(stats.locality_full, 1);
        assert_eq!(lblc.len(), 2);
        // cache(2) stays in use; cache(1) idles.
        lblc.pick(&d, cache(2), 5 * MINUTE, &mut stats);
        // GC 6 minutes after cache(1)'s last use: it goes, cache(2) (1 min idle) stays.
        assert_eq!(lblc.housekeeping(6 * MINUTE, &mut |_| {}), 1);
        let left: Vec<_> = lblc.entries(6 * MINUTE).collect();
        assert_eq!(
            left,
            vec![LocalityEntry::Lblc(LblcEntry {
                addr: cache(2),
                dest: DestId(0),
                idle: MINUTE
            })]
        );
        lblc.pick(&d, cache(3), 7 * MINUTE, &mut stats);
        assert_eq!(lblc.len(), 2);
    }

    #[test]
    fn lblc_full_expiration_check_every_thirty_minutes() {
        let mut stats = SchedulerStats::default();
        let mut lblc = Lblc::new(&small(16)).unwrap();
        let d = vec![dest(0, 1, 0)];
        let t0 = 100 * HOUR;
        lblc.pick(&d, cache(1), t0, &mut stats);
        lblc.pick(&d, cache(2), t0 + 10 * HOUR, &mut stats);
        // Not full, so only the 30-minute full check removes anything, and only after the
        // 24 h expiration: cache(1) expires at t0 + 24 h exactly.
        assert_eq!(lblc.housekeeping(t0, &mut |_| {}), 0); // first run: full check, nothing expired
        assert_eq!(lblc.housekeeping(t0 + 24 * HOUR, &mut |_| {}), 1); // 30 min passed, cache(1) expired
        let t1 = t0 + 34 * HOUR - 1; // a full check, cache(2) one nanosecond short of 24 h
        assert_eq!(lblc.housekeeping(t1, &mut |_| {}), 0);
        assert_eq!(lblc.housekeeping(t1 + 1, &mut |_| {}), 0); // expired now, but no full check due yet
        assert_eq!(lblc.len(), 1);
        assert_eq!(lblc.housekeeping(t1 + FULL_CHECK_INTERVAL, &mut |_| {}), 1);
        assert_eq!(lblc.len(), 0);
    }

    #[test]
    fn lblc_entries_install_round_trip() {
        let mut stats = SchedulerStats::default();
        let mut a = Lblc::new(&small(16)).unwrap();
        let mut d = vec![dest(0, 1, 0), dest(1, 1, 0)];
        assert_eq!(a.pick(&d, cache(1), 1000, &mut stats), Some(DestId(0)));
        d[0].active = 1;
        assert_eq!(a.pick(&d, cache(2), 1500, &mut stats), Some(DestId(1)));
        let entries: Vec<_> = a.entries(2000).collect();
        // The standby's clock is elsewhere: idle times carry over.
        let mut b = Lblc::new(&small(16)).unwrap();
        for e in &entries {
            let LocalityEntry::Lblc(e) = e else { panic!() };
            b.install(*e, 9_000_000).unwrap();
        }
        let mut again: Vec<_> = b.entries(9_000_000).collect();
        let mut want = entries.clone();
        again.sort_by_key(|e| format!("{e:?}"));
        want.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(again, want);
        assert_eq!(b.pick(&d, cache(2), 9_000_001, &mut stats), Some(DestId(1)));
    }

    #[test]
    fn lblcr_set_grows_when_the_member_is_overloaded() {
        let mut stats = SchedulerStats::default();
        let mut r = Lblcr::new(&small(16)).unwrap();
        let mut d = vec![dest(0, 2, 0), dest(1, 4, 0), dest(2, 4, 0)];
        assert_eq!(r.pick(&d, cache(1), 0, &mut stats), Some(DestId(0)));
        // A overloaded (3 > 2) with B and C at half load: wlc over all: A 768/2 = 384,
        // B 256/4 = 64, C 0/4 = 0 -> C joins the set, as its newest member.
        d[0].active = 3;
        d[1].active = 1;
        assert_eq!(r.pick(&d, cache(1), SECOND, &mut stats), Some(DestId(2)));
        let LocalityEntry::Lblcr(e) = r.entries(SECOND).next().unwrap() else {
            panic!()
        };
        assert_eq!(e.dests.as_slice(), &[DestId(2), DestId(0)]);
        assert_eq!(e.unmodified, 0);
        // Now the set's least loaded is C (0 active): used, set unchanged.
        assert_eq!(
            r.pick(&d, cache(1), 2 * SECOND, &mut stats),
            Some(DestId(2))
        );
        let LocalityEntry::Lblcr(e) = r.entries(2 * SECOND).next().unwrap() else {
            panic!()
        };
        assert_eq!(e.dests.len(), 2);
        assert_eq!(e.unmodified, SECOND);
    }

    #[test]
    fn lblcr_set_sheds_its_busiest_member_after_the_expiration() {
        let mut stats = SchedulerStats::default();
        let opts = LocalityOptions {
            expiration: 6 * MINUTE,
            ..small(16)
        };
        let mut r = Lblcr::new(&opts).unwrap();
        let d = vec![dest(0, 1, 0), dest(1, 1, 0)];
        let two = DestSet::from_slice(&[DestId(1), DestId(0)]).unwrap();
        r.install(
            LblcrEntry {
                addr: cache(1),
                dests: two,
                idle: 0,
                unmodified: 0,
            },
            0,
        )
        .unwrap();
        let mut busy = d.clone();
        busy[0].active = 1; // A busier than B
        // Not yet expired (strictly after last_mod + expiration is needed).
        assert_eq!(
            r.pick(&busy, cache(1), 6 * MINUTE, &mut stats),
            Some(DestId(1))
        );
        let LocalityEntry::Lblcr(e) = r.entries(6 * MINUTE).next().unwrap() else {
            panic!()
        };
        assert_eq!(e.dests.len(), 2);
        // One nanosecond later: the busiest (A) is dropped; B chosen.
        assert_eq!(
            r.pick(&busy, cache(1), 6 * MINUTE + 1, &mut stats),
            Some(DestId(1))
        );
        let LocalityEntry::Lblcr(e) = r.entries(6 * MINUTE + 1).next().unwrap() else {
            panic!()
        };
        assert_eq!(e.dests.as_slice(), &[DestId(1)]);
        assert_eq!(e.unmodified, 0);
        // A single member is never dropped.
        assert_eq!(
            r.pick(&busy, cache(1), 60 * MINUTE, &mut stats),
            Some(DestId(1))
        );
        let LocalityEntry::Lblcr(e) = r.entries(60 * MINUTE).next().unwrap() else {
            panic!()
        };
        assert_eq!(e.dests.len(), 1);
    }

    #[test]
    fn lblcr_default_expiration_is_a_day() {
        let mut stats = SchedulerStats::default();
        let mut r = Lblcr::new(&small(16)).unwrap();
        let d = vec![dest(0, 1, 1), dest(1, 1, 0)];
        let two = DestSet::from_slice(&[DestId(1), DestId(0)]).unwrap();
        r.install(
            LblcrEntry {
                addr: cache(1),
                dests: two,
                idle: 0,
                unmodified: 0,
            },
            0,
        )
        .unwrap();
        r.pick(&d, cache(1), 24 * HOUR, &mut stats);
        let LocalityEntry::Lblcr(e) = r.entries(24 * HOUR).next().unwrap() else {
            panic!()
        };
        assert_eq!(e.dests.len(), 2);
        r.pick(&d, cache(1), 24 * HOUR + 1, &mut stats);
        let LocalityEntry::Lblcr(e) = r.entries(24 * HOUR + 1).next().unwrap() else {
            panic!()
        };
        assert_eq!(e.dests.as_slice(), &[DestId(1)]);
    }

    #[test]
    fn lblcr_set_min_skips_quiesced_removed_and_flagged_members() {
        let mut stats = SchedulerStats::default();
        let mut r = Lblcr::new(&small(16)).unwrap();
        let mut d = vec![dest(0, 1, 0), dest(1, 1, 5), dest(2, 1, 9)];
        let set = DestSet::from_slice(&[DestId(7), DestId(0), DestId(1), DestId(2)]).unwrap();
        r.install(
            LblcrEntry {
                addr: cache(1),
                dests: set,
                idle: 0,
                unmodified: 0,
            },
            0,
        )
        .unwrap();
        // 7 is not in the list; A quiesced; B and C: B less loaded.
        d[0].weight = 0;
        assert_eq!(r.pick(&d, cache(1), 1, &mut stats), Some(DestId(1)));
        d[1].overloaded = true;
        assert_eq!(r.pick(&d, cache(1), 2, &mut stats), Some(DestId(2)));
        // Update drops member 7.
        r.update(&d);
        let LocalityEntry::Lblcr(e) = r.entries(3).next().unwrap() else {
            panic!()
        };
        assert_eq!(e.dests.as_slice(), &[DestId(0), DestId(1), DestId(2)]);
        // Nobody usable in the set and nobody in the list: None.
        for x in &mut d {
            x.weight = 0;
        }
        assert_eq!(r.pick(&d, cache(1), 4, &mut stats), None);
    }

    #[test]
    fn lblcr_full_set_evicts_its_busiest() {
        let mut stats = SchedulerStats::default();
        let mut r = Lblcr::new(&small(16)).unwrap();
        let mut d: Vec<_> = (0..9).map(|i| dest(i, 1, 2)).collect();
        let full = DestSet::from_slice(&(0..8).map(DestId).collect::<Vec<_>>()).unwrap();
        r.install(
            LblcrEntry {
                addr: cache(1),
                dests: full,
                idle: 0,
                unmodified: 0,
            },
            0,
        )
        .unwrap();
        d[5].active = 3; // the busiest member
        d[8].active = 0; // outside the set, idle: at half load
        assert_eq!(r.pick(&d, cache(1), 1, &mut stats), Some(DestId(8)));
        assert_eq!(stats.locality_set_evictions, 1);
        let LocalityEntry::Lblcr(e) = r.entries(1).next().unwrap() else {
            panic!()
        };
        assert_eq!(e.dests.len(), 8);
        assert!(e.dests.contains(DestId(8)) && !e.dests.contains(DestId(5)));
    }

    #[test]
    fn options_are_validated() {
        assert!(
            Lblc::new(&LocalityOptions {
                buckets: 1000,
                ..LocalityOptions::default()
            })
            .is_err()
        );
        assert!(
            Lblcr::new(&LocalityOptions {
                capacity: 0,
                ..LocalityOptions::default()
            })
            .is_err()
        );
        assert!(Lblcr::new(&LocalityOptions::default()).is_ok());
    }
}
