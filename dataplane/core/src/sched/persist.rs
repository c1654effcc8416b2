//! Persistence: ipvsadm `-p [timeout]` with `-M netmask` (seed 004 §2.3 "持续的客户端连接").
//!
//! With persistence on a service, the first connection from a client creates a *template*
//! (the kernel's `IP_VS_CONN_F_TEMPLATE` connection, `ip_vs_sched_persist` in
//! `ip_vs_core.c`) recording the destination chosen for (service, client address & netmask);
//! every later connection from that client, any source port, goes to the same destination
//! while the template lives.
//!
//! # Lifetime
//! - A template expires `timeout` after it was created or last used; each new connection
//!   that uses it refreshes it to the full `timeout`.
//! - While connections reference it the kernel does not let it expire (its timer re-checks
//!   every 60 s, `ip_vs_conn_expire`'s "expire later"). Here the connection table calls
//!   [`PersistenceTable::hold`] when it binds a connection to a template and
//!   [`PersistenceTable::release`] when that connection goes. A referenced template is never
//!   expired; when the last reference goes after its time ran out, it lives
//!   [`EXPIRE_LATER`] more (the longest the kernel's re-check could take). Simplification:
//!   after an "expire later" the kernel refreshes such a template by 60 s only; we always
//!   refresh by the full timeout.
//!
//! # A template whose destination changed
//! `ip_vs_check_template`: a template whose destination was removed is invalidated and the
//! client is scheduled afresh. A *quiesced* destination (weight 0) keeps its persistent
//! clients unless `expire_quiescent_template` is set; the kernel default is off, and so is
//! ours ([`PersistOptions::expire_quiescent_template`]). Clients keep going to a draining
//! server until their templates expire — which is what an operator quiescing a server for
//! maintenance with persistence expects to wait for.
//!
//! # When the table is full
//! A new template is refused (counted in [`PersistStats::full`]); the connection is
//! scheduled normally and simply is not persistent. Before refusing, expired templates are
//! reclaimed, but only when one may actually have expired (the table keeps a lower bound on
//! the earliest expiry), so a full table of live templates costs no sweep per connection.

use std::net::Ipv4Addr;

use super::table::{BoundedTable, TableKey};
use crate::lb::{DestId, ServiceId};

const SECOND: u64 = 1_000_000_000;
/// ipvsadm's persistence timeout when `-p` is given without a value: 300 s.
pub const DEFAULT_PERSISTENCE_TIMEOUT: u64 = 300 * SECOND;
/// How long a template whose time ran out while referenced survives its last reference: the
/// kernel's 60 s re-check interval (`cp->timeout = 60*HZ` in `ip_vs_conn_expire`).
pub const EXPIRE_LATER: u64 = 60 * SECOND;
/// Default table capacity.
pub const DEFAULT_PERSIST_CAPACITY: usize = 65_536;
/// Default bucket count.
pub const DEFAULT_PERSIST_BUCKETS: usize = 16_384;

/// A service's persistence settings (ipvsadm `-p timeout -M netmask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    /// Template lifetime after last use, in nanoseconds.
    pub timeout: u64,
    /// Clients are grouped by `address & netmask` (default 255.255.255.255: one client).
    pub netmask: Ipv4Addr,
}

impl Persistence {
    /// Persistence for `timeout` nanoseconds, per client address.
    pub const fn new(timeout: u64) -> Self {
        Self {
            timeout,
            netmask: Ipv4Addr::BROADCAST,
        }
    }
}

impl Default for Persistence {
    fn default() -> Self {
        Self::new(DEFAULT_PERSISTENCE_TIMEOUT)
    }
}

/// What a template is keyed on: the service and the masked client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PersistKey {
    /// The virtual service.
    pub svc: ServiceId,
    /// The client address, already masked.
    pub client: Ipv4Addr,
}

impl PersistKey {
    /// The key for `client` under `netmask`.
    pub fn new(svc: ServiceId, client: Ipv4Addr, netmask: Ipv4Addr) -> Self {
        Self {
            svc,
            client: Ipv4Addr::from(u32::from(client) & u32::from(netmask)),
        }
    }
}

impl TableKey for PersistKey {
    fn fold(&self) -> u64 {
        (u64::from(self.svc.0) << 32) | u64::from(u32::from(self.client))
    }
}

/// Sizes and policy of a [`PersistenceTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistOptions {
    /// The most templates held.
    pub capacity: usize,
    /// Hash buckets, a power of two.
    pub buckets: usize,
    /// The kernel's `expire_quiescent_template` sysctl (default off): when on, a template
    /// whose destination has weight 0 is dropped and its client scheduled afresh.
    pub expire_quiescent_template: bool,
    /// Seed of the bucket hash; use a random value per director.
    pub hash_seed: u64,
}

impl Default for PersistOptions {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_PERSIST_CAPACITY,
            buckets: DEFAULT_PERSIST_BUCKETS,
            expire_quiescent_template: false,
            hash_seed: 0,
        }
    }
}

/// A bad [`PersistOptions`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PersistError {
    /// Capacity zero or too large.
    #[error("persistence table capacity {0} must be between 1 and 16777216")]
    Capacity(usize),
    /// Bucket count not a power of two, or too large.
    #[error("persistence table buckets {0} must be a power of two no larger than 16777216")]
    Buckets(usize),
}

/// The table is full of live templates: nothing was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("persistence table full")]
pub struct PersistFull;

/// Counters of a [`PersistenceTable`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PersistStats {
    /// Templates created or replaced.
    pub created: u64,
    /// New templates refused because the table was full.
    pub full: u64,
    /// Templates removed because they expired.
    pub expired: u64,
    /// Templates found pointing at a removed (or, with `expire_quiescent_template`,
    /// quiesced) destination and replaced.
    pub invalidated: u64,
}

/// One template, for listing (`ipvsadm -Lc` shows them as `NONE` entries) and for syncing to
/// the standby.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistEntry {
    /// Service and masked client.
    pub key: PersistKey,
    /// The destination its clients go to.
    pub dest: DestId,
    /// Its persistence timeout.
    pub timeout: u64,
    /// Nanoseconds until it expires if unused (relative, so it survives the two directors'
    /// different clocks).
    pub expires_in: u64,
    /// Connections holding it (informational: [`PersistenceTable::install`] ignores it; the
    /// standby's connection table takes its own references).
    pub refs: u32,
}

/// How long before the peer's copy of a template would run out the table announces that it
/// was used since ([`PersistChange::Refreshed`]): the walk runs every few milliseconds and
/// the standby adds its grace on top, so the refresh is always in time.
pub const REFRESH_LEAD: u64 = SECOND;

/// A change of a template the table finds on its walk ([`PersistenceTable::expire_with`]),
/// for the sync daemon. Creations are the caller's to announce
/// ([`Choice::new_template`](super::Choice::new_template)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistChange {
    /// The template was used since it was last announced and the peer's copy is about to
    /// run out: `expires_in` is the time it has now. At most one per timeout period.
    Refreshed(PersistEntry),
    /// The template expired and was removed (`expires_in` 0).
    Expired(PersistEntry),
}

#[derive(Debug, Clone, Copy)]
struct Template {
    dest: DestId,
    timeout: u64,
    expires_at: u64,
    refs: u32,
    /// False once its destination was forgotten while connections still held it.
    valid: bool,
    /// The expiry the peer was last told of (at its creation, install or last refresh
    /// announcement): a use that pushes `expires_at` past it is announced by the walk when
    /// this comes near ([`REFRESH_LEAD`]), not per use.
    announced: u64,
}

impl Template {
    fn live(&self, now: u64) -> bool {
        self.refs > 0 || now < self.expires_at
    }
}

/// The persistence templates of all services, bounded. See the module docs for the policy.
#[derive(Debug, Clone)]
pub struct PersistenceTable {
    table: BoundedTable<PersistKey, Template>,
    expire_quiescent_template: bool,
    /// No unreferenced template expires before this (a lower bound); `u64::MAX` if none.
    next_expiry: u64,
    stats: PersistStats,
}

impl PersistenceTable {
    /// An empty table.
    pub fn new(options: PersistOptions) -> Result<Self, PersistError> {
        type T = BoundedTable<PersistKey, Template>;
        if options.capacity == 0 || options.capacity > T::MAX_CAPACITY {
            return Err(PersistError::Capacity(options.capacity));
        }
        if !options.buckets.is_power_of_two() || options.buckets > T::MAX_BUCKETS {
            return Err(PersistError::Buckets(options.buckets));
        }
        Ok(Self {
            table: BoundedTable::new(options.buckets, options.capacity, options.hash_seed),
            expire_quiescent_template: options.expire_quiescent_template,
            next_expiry: u64::MAX,
            stats: PersistStats::default(),
        })
    }

    /// Whether templates to quiesced destinations are dropped.
    pub fn expire_quiescent_template(&self) -> bool {
        self.expire_quiescent_template
    }

    /// Templates held (expired ones not yet reclaimed included).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no template is held.
    pub fn is_empty(&self) -> bool {
        self.table.len() == 0
    }

    /// The most templates held.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// The counters.
    pub fn stats(&self) -> PersistStats {
        self.stats
    }

    pub(crate) fn count_invalidated(&mut self) {
        self.stats.invalidated += 1;
    }

    /// The destination of `key`'s live template, refreshing it (a new connection uses it).
    /// An expired, unreferenced template is removed and `None` returned.
    pub fn lookup(&mut self, key: PersistKey, now: u64) -> Option<DestId> {
        let t = self.table.get_mut(&key)?;
        if t.live(now) {
            if !t.valid {
                return None;
            }
            t.expires_at = t.expires_at.max(now.saturating_add(t.timeout));
            return Some(t.dest);
        }
        self.table.remove(&key);
        self.stats.expired += 1;
        None
    }

    /// The destination of `key`'s live template, without refreshing it.
    pub fn peek(&self, key: PersistKey, now: u64) -> Option<DestId> {
        self.table
            .get(&key)
            .filter(|t| t.valid && t.live(now))
            .map(|t| t.dest)
    }

    /// Creates (or replaces) `key`'s template: `dest` for `timeout` nanoseconds from `now`.
    /// A replaced template keeps its references (connections bound to the old one release
    /// through the same key). Fails, counted, when the key is new and the table is full of
    /// live templates.
    pub fn insert(
        &mut self,
        key: PersistKey,
        dest: DestId,
        timeout: u64,
        now: u64,
    ) -> Result<(), PersistFull> {
        let expires_at = now.saturating_add(timeout);
        let existing = self.table.get(&key).map(|t| t.refs);
        if existing.is_none() && self.table.is_full() && now >= self.next_expiry {
            self.expire(now);
        }
        let refs = existing.unwrap_or(0);
        let template = Template {
            dest,
            timeout,
            expires_at,
            refs,
            valid: true,
            announced: expires_at,
        };
        if self.table.insert(key, template).is_err() {
            self.stats.full += 1;
            return Err(PersistFull);
        }
        self.stats.created += 1;
        self.next_expiry = self.next_expiry.min(expires_at);
        Ok(())
    }

    /// A connection was bound to `key`'s template. False if there is none.
    pub fn hold(&mut self, key: PersistKey) -> bool {
        match self.table.get_mut(&key) {
            Some(t) => {
                t.refs = t.refs.saturating_add(1);
                true
            }
            None => false,
        }
    }

    /// A connection bound to `key`'s template went. False if there is none.
    pub fn release(&mut self, key: PersistKey, now: u64) -> bool {
        let Some(t) = self.table.get_mut(&key) else {
            return false;
        };
        t.refs = t.refs.saturating_sub(1);
        if t.refs == 0 {
            if t.expires_at <= now {
                t.expires_at = now.saturating_add(EXPIRE_LATER);
            }
            if !t.valid {
                t.expires_at = now;
            }
            let at = t.expires_at;
            self.next_expiry = self.next_expiry.min(at);
        }
        true
    }

    /// Removes `key`'s template, whatever its state.
    pub fn invalidate(&mut self, key: PersistKey) -> Option<DestId> {
        let t = self.table.remove(&key)?;
        self.stats.invalidated += 1;
        Some(t.dest)
    }

    /// Forgets the templates of `svc` that send clients to `dest` (call when a destination
    /// is removed, before its [`DestId`] may be reused). Unreferenced ones go now; referenced
    /// ones stop matching and go with their last reference. O(capacity). Returns how many.
    pub fn forget_dest(&mut self, svc: ServiceId, dest: DestId) -> usize {
        let mut n = 0;
        self.table.retain(|k, t| {
            if k.svc != svc || t.dest != dest || !t.valid {
                return true;
            }
            n += 1;
            t.valid = false;
            t.refs > 0
        });
        self.stats.invalidated += u64::try_from(n).unwrap_or(u64::MAX);
        n
    }

    /// Removes every expired, unreferenced template; returns how many. O(capacity): for
    /// periodic housekeeping (and run by [`insert`](Self::insert) when full).
    pub fn expire(&mut self, now: u64) -> usize {
        self.expire_with(now, |_| {})
    }

    /// [`expire`](Self::expire), telling `out` about every template it removes and about
    /// every live one whose use since its last announcement should reach the peer now (its
    /// announced expiry is less than [`REFRESH_LEAD`] away and it was pushed back since), so
    /// that the peer's copy lives as long as this one: at most one refresh per timeout
    /// period per template, however often it is used. Never allocates.
    pub fn expire_with(&mut self, now: u64, mut out: impl FnMut(PersistChange)) -> usize {
        let mut earliest = u64::MAX;
        let removed = self.table.retain(|k, t| {
            let keep = t.live(now);
            if !keep {
                if t.valid {
                    out(PersistChange::Expired(entry_of(k, t, now)));
                }
                return false;
            }
            if t.refs == 0 {
                earliest = earliest.min(t.expires_at);
            }
            if t.valid
                && t.expires_at > t.announced
                && now.saturating_add(REFRESH_LEAD) >= t.announced
            {
                t.announced = t.expires_at;
                out(PersistChange::Refreshed(entry_of(k, t, now)));
            }
            true
        });
        self.next_expiry = earliest;
        self.stats.expired += u64::try_from(removed).unwrap_or(u64::MAX);
        removed
    }

    /// `key`'s live template as of `now` (e.g. to announce the one just created).
    pub fn entry(&self, key: PersistKey, now: u64) -> Option<PersistEntry> {
        self.table
            .get(&key)
            .filter(|t| t.valid && t.live(now))
            .map(|t| entry_of(&key, t, now))
    }

    /// Every template's key, live or not yet reclaimed (a standby's mark before a snapshot).
    pub fn keys(&self) -> impl Iterator<Item = PersistKey> + '_ {
        self.table.iter().map(|(k, _)| *k)
    }

    /// Removes `key`'s template on the peer's word (its deletion, or a snapshot's sweep),
    /// whatever its state. False if there was none.
    pub fn uninstall(&mut self, key: PersistKey) -> bool {
        self.table.remove(&key).is_some()
    }

    /// One step of a walk for a full resync: the live templates in slots
    /// `from..from + max_slots`, and where the next step starts (`None`: done).
    pub fn snapshot(
        &self,
        from: usize,
        max_slots: usize,
        now: u64,
        mut out: impl FnMut(PersistEntry),
    ) -> Option<usize> {
        let (part, next) = self.table.iter_slots(from, max_slots);
        for (k, t) in part {
            if t.valid && t.live(now) {
                out(entry_of(k, t, now));
            }
        }
        next
    }

    /// Every live template, for listing and syncing.
    pub fn iter(&self, now: u64) -> impl Iterator<Item = PersistEntry> + '_ {
        self.table
            .iter()
            .filter(move |(_, t)| t.valid && t.live(now))
            .map(move |(k, t)| entry_of(k, t, now))
    }

    /// Installs a template received from the peer: it expires `entry.expires_in` from `now`.
    /// References already held here are kept; `entry.refs` is ignored.
    pub fn install(&mut self, entry: PersistEntry, now: u64) -> Result<(), PersistFull> {
        self.insert(entry.key, entry.dest, entry.timeout, now)?;
        if let Some(t) = self.table.get_mut(&entry.key) {
            t.expires_at = now.saturating_add(entry.expires_in);
            t.announced = t.expires_at;
            let at = t.expires_at;
            self.next_expiry = self.next_expiry.min(at);
        }
        Ok(())
    }
}

fn entry_of(key: &PersistKey, t: &Template, now: u64) -> PersistEntry {
    PersistEntry {
        key: *key,
        dest: t.dest,
        timeout: t.timeout,
        expires_in: t.expires_at.saturating_sub(now),
        refs: t.refs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: ServiceId = ServiceId(1);

    fn key(last: u8) -> PersistKey {
        PersistKey::new(SVC, Ipv4Addr::new(198, 51, 100, last), Ipv4Addr::BROADCAST)
    }

    fn table(capacity: usize) -> PersistenceTable {
        PersistenceTable::new(PersistOptions {
            capacity,
            buckets: 8,
            ..PersistOptions::default()
        })
        .unwrap()
    }

    #[test]
    fn netmask_groups_clients() {
        let mask = Ipv4Addr::new(255, 255, 255, 0);
        let a = PersistKey::new(SVC, Ipv4Addr::new(198, 51, 100, 7), mask);
        let b = PersistKey::new(SVC, Ipv4Addr::new(198, 51, 100, 200), mask);
        let c = PersistKey::new(SVC, Ipv4Addr::new(198, 51, 101, 7), mask);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.client, Ipv4Addr::new(198, 51, 100, 0));
        assert_ne!(
            a,
            PersistKey::new(ServiceId(2), Ipv4Addr::new(198, 51, 100, 7), mask)
        );
    }

    #[test]
    fn template_lives_for_its_timeout_and_each_use_refreshes_it() {
        let mut t = table(4);
        t.insert(key(1), DestId(3), 300 * SECOND, 0).unwrap();
        assert_eq!(t.lookup(key(1), 299 * SECOND), Some(DestId(3)));
        // Refreshed at 299 s: good until 599 s.
        assert_eq!(t.peek(key(1), 598 * SECOND), Some(DestId(3)));
        assert_eq!(t.peek(key(1), 599 * SECOND), None);
        assert_eq!(t.lookup(key(1), 599 * SECOND), None);
        assert_eq!(t.len(), 0);
        assert_eq!(t.stats().expired, 1);
    }

    #[test]
    fn references_keep_a_template_alive() {
        let mut t = table(4);
        t.insert(key(1), DestId(3), 10 * SECOND, 0).unwrap();
        assert!(t.hold(key(1)));
        assert!(t.hold(key(1)));
        assert_eq!(t.expire(100 * SECOND), 0);
        assert_eq!(t.peek(key(1), 100 * SECOND), Some(DestId(3)));
        assert!(t.release(key(1), 100 * SECOND));
        assert_eq!(t.peek(key(1), 100 * SECOND), Some(DestId(3)));
        // Last reference at 100 s, long after its timeout: 60 s more.
        assert!(t.release(key(1), 100 * SECOND));
        assert_eq!(t.expire(159 * SECOND), 0);
        assert_eq!(t.expire(160 * SECOND), 1);
        assert!(!t.release(key(1), 0));
        assert!(!t.hold(key(1)));
    }

    #[test]
    fn release_before_the_timeout_leaves_the_timer_alone() {
        let mut t = table(4);
        t.insert(key(1), DestId(3), 300 * SECOND, 0).unwrap();
        t.hold(key(1));
        t.release(key(1), 10 * SECOND);
        assert_eq!(t.peek(key(1), 299 * SECOND), Some(DestId(3)));
        assert_eq!(t.peek(key(1), 300 * SECOND), None);
    }

    #[test]
    fn full_table_refuses_counts_and_reclaims_expired() {
        let mut t = table(2);
        t.insert(key(1), DestId(1), 10 * SECOND, 0).unwrap();
        t.insert(key(2), DestId(2), 100 * SECOND, 0).unwrap();
        assert_eq!(
            t.insert(key(3), DestId(3), 10 * SECOND, 5 * SECOND),
            Err(PersistFull)
        );
        assert_eq!(t.stats().full, 1);
        // Replacing an existing key works when full.
        t.insert(key(2), DestId(9), 100 * SECOND, 5 * SECOND)
            .unwrap();
        // key(1) expired at 10 s: reclaimed on demand.
        t.insert(key(3), DestId(3), 10 * SECOND, 10 * SECOND)
            .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.peek(key(2), 10 * SECOND), Some(DestId(9)));
        assert_eq!(t.stats().expired, 1);
    }

    #[test]
    fn forget_dest_drops_or_disarms_templates() {
        let mut t = table(8);
        t.insert(key(1), DestId(1), 100 * SECOND, 0).unwrap();
        t.insert(key(2), DestId(1), 100 * SECOND, 0).unwrap();
        t.insert(key(3), DestId(2), 100 * SECOND, 0).unwrap();
        t.hold(key(2));
        assert_eq!(t.forget_dest(SVC, DestId(1)), 2);
        assert_eq!(t.forget_dest(ServiceId(9), DestId(2)), 0);
        assert_eq!(t.len(), 2); // key(2) waits for its reference
        assert_eq!(t.lookup(key(2), SECOND), None);
        assert_eq!(t.iter(SECOND).count(), 1);
        t.release(key(2), 2 * SECOND);
        assert_eq!(t.expire(2 * SECOND), 1);
        assert_eq!(t.peek(key(3), 2 * SECOND), Some(DestId(2)));
    }

    #[test]
    fn replacing_a_held_template_keeps_its_references() {
        let mut t = table(4);
        t.insert(key(1), DestId(1), 10 * SECOND, 0).unwrap();
        t.hold(key(1));
        t.insert(key(1), DestId(2), 10 * SECOND, SECOND).unwrap();
        assert_eq!(t.iter(SECOND).next().unwrap().refs, 1);
        assert_eq!(t.expire(1000 * SECOND), 0);
    }

    #[test]
    fn iter_and_install_carry_relative_times() {
        let mut a = table(8);
        a.insert(key(1), DestId(1), 300 * SECOND, 1000 * SECOND)
            .unwrap();
        a.insert(key(2), DestId(2), 60 * SECOND, 1000 * SECOND)
            .unwrap();
        a.hold(key(2));
        let now_a = 1030 * SECOND;
        let mut entries: Vec<_> = a.iter(now_a).collect();
        entries.sort_by_key(|e| e.key);
        assert_eq!(
            entries,
            vec![
                PersistEntry {
                    key: key(1),
                    dest: DestId(1),
                    timeout: 300 * SECOND,
                    expires_in: 270 * SECOND,
                    refs: 0
                },
                PersistEntry {
                    key: key(2),
                    dest: DestId(2),
                    timeout: 60 * SECOND,
                    expires_in: 30 * SECOND,
                    refs: 1
                },
            ]
        );
        let mut b = table(8);
        let now_b = 7 * SECOND;
        for e in &entries {
            b.install(*e, now_b).unwrap();
        }
        let mut got: Vec<_> = b.iter(now_b).collect();
        got.sort_by_key(|e| e.key);
        assert_eq!(got[0].expires_in, 270 * SECOND);
        assert_eq!(got[1].expires_in, 30 * SECOND);
        assert_eq!(got[1].refs, 0);
        assert_eq!(b.peek(key(2), now_b + 30 * SECOND), None);
    }

    #[test]
    fn options_are_validated() {
        assert_eq!(
            PersistenceTable::new(PersistOptions {
                capacity: 0,
                ..PersistOptions::default()
            })
            .err(),
            Some(PersistError::Capacity(0))
        );
        assert_eq!(
            PersistenceTable::new(PersistOptions {
                buckets: 3,
                ..PersistOptions::default()
            })
            .err(),
            Some(PersistError::Buckets(3))
        );
    }
}
