//! Schedulers: which real server gets a new connection, with the kernel IPVS semantics
//! (seed 000 §2.3, seed 003, seed 004 §2.3; `net/netfilter/ipvs/ip_vs_*.c`).
//!
//! The caller describes a service's destinations as a slice of [`DestState`] (list order
//! matters: it is the kernel's `svc->destinations` order, which decides ties), with the
//! connection counts it aggregates over its lcores. A [`Scheduler`] holds whatever state the
//! algorithm keeps between decisions (a round-robin cursor, a hash table, a locality cache),
//! built by [`Scheduler::new`] and [`Scheduler::update`] at configuration time, and answers
//! [`Scheduler::pick`] on the packet path without allocating.
//!
//! | name | rule | kernel |
//! |---|---|---|
//! | `rr` | next available server in turn | `ip_vs_rr.c` |
//! | `wrr` | gcd/max-weight interleaving; 4, 3, 2 → `A B C A B C A B A` | `ip_vs_wrr.c`, seed 000 |
//! | `lc` | least `active·256 + inactive` | `ip_vs_lc.c` |
//! | `wlc` | least `(active·256 + inactive) / weight` | `ip_vs_wlc.c` |
//! | `lblc` | last server used for the destination IP, unless gone, quiesced or overloaded while another is at half load; then wlc | `ip_vs_lblc.c`, seed 003 |
//! | `lblcr` | a server *set* per destination IP, least-loaded member; grows when that one is overloaded, sheds its busiest when unmodified for a while | `ip_vs_lblcr.c`, seed 003 |
//! | `sh` / `dh` | 256-bucket table by source / destination IP hash | `ip_vs_sh.c`, `ip_vs_dh.c` |
//! | `sed` | least `(active + 1) / weight` | `ip_vs_sed.c` |
//! | `nq` | an idle server if any, else sed | `ip_vs_nq.c` |
//! | `mh` | Maglev consistent hashing of the source | `ip_vs_mh.c` |
//!
//! Everywhere, weight 0 quiesces a server: it gets no new connection (existing ones are the
//! connection table's business). A server flagged [`DestState::overloaded`] (the upper
//! connection threshold, see [`Thresholds`]) is skipped where the kernel skips it.
//!
//! Persistence (ipvsadm `-p`) sits above the scheduler: see [`persist`] and [`choose`].
//!
//! # Where we differ from the kernel, and why
//! - **wrr's default order** is the seed's and the product spec's (`A B C A B C A B A`); the
//!   kernel's own sequence (`A A B A B C A B C`) is [`WrrOrder::Descending`]. Both are the
//!   same gcd/max-weight passes, run in opposite orders.
//! - Loads are compared in `u128`, so no connection count can overflow them.
//! - wrr and the hash schedulers' fallbacks skip work that cannot succeed (passes above the
//!   heaviest available weight; re-hashing when nothing is available) to bound the hot path.
//! - mh hashes with a mixer instead of `hsiphash`, and defaults to the Maglev paper's table
//!   of 65537 (the kernel's default is 4093; configurable).
//! - lblc/lblcr tables are bounded and preallocated, garbage-collected by
//!   [`Scheduler::housekeeping`]; lblcr sets hold at most [`DEST_SET_CAPACITY`] servers.
//! - Removed destinations are dropped from lblc/lblcr tables at [`Scheduler::update`].
//!
//! # One instance, one answer
//! A `Scheduler` is plain single-threaded state. lblc, lblcr and persistence only give one
//! server per key if every connection for that key is scheduled by the same instance (and
//! rr/wrr sequences are per instance); how instances map to lcores is the caller's choice.

mod hash;
mod hashing;
mod least;
mod locality;
mod maglev;
pub mod persist;
mod rr;
mod table;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

pub use hashing::HASH_TABLE_SIZE;
pub use locality::{
    CHECK_EXPIRE_INTERVAL, DEFAULT_BUCKETS as LOCALITY_DEFAULT_BUCKETS,
    DEFAULT_CAPACITY as LOCALITY_DEFAULT_CAPACITY,
    DEFAULT_EXPIRATION as LOCALITY_DEFAULT_EXPIRATION, DEST_SET_CAPACITY, DestSet, ENTRY_TIMEOUT,
    FULL_CHECK_INTERVAL, LblcEntry, LblcrEntry, LocalityEntry, LocalityOptions,
};
pub use maglev::{MH_DEFAULT_TABLE_SIZE, MH_MAX_TABLE_SIZE};
pub use persist::{
    PersistChange, PersistEntry, PersistError, PersistFull, PersistKey, PersistOptions,
    PersistStats, Persistence, PersistenceTable, REFRESH_LEAD,
};
pub use rr::WrrOrder;

use crate::lb::{DestId, Flow, ServiceId};

/// What a scheduler reads about one destination (real server) of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestState {
    /// The destination's handle.
    pub id: DestId,
    /// Its address (mh hashes it into its Maglev permutation).
    pub addr: Ipv4Addr,
    /// Its port (mh hashes it too).
    pub port: u16,
    /// Its weight; 0 quiesces it.
    pub weight: u32,
    /// ESTABLISHED connections to it (the kernel's `activeconns`), summed over lcores.
    pub active: u32,
    /// Its other connections (`inactconns`), summed over lcores.
    pub inactive: u32,
    /// The kernel's `IP_VS_DEST_F_OVERLOAD`: above its upper connection threshold
    /// (see [`Thresholds::overloaded`]). Always false without thresholds.
    pub overloaded: bool,
}

impl DestState {
    /// A destination with no connections, not overloaded.
    pub const fn new(id: DestId, addr: Ipv4Addr, port: u16, weight: u32) -> Self {
        Self {
            id,
            addr,
            port,
            weight,
            active: 0,
            inactive: 0,
            overloaded: false,
        }
    }

    /// `ip_vs_dest_conn_overhead`: `active * 256 + inactive` ("the overhead of processing
    /// active connections is 256 times higher than that of inactive connections").
    pub const fn conn_overhead(&self) -> u64 {
        ((self.active as u64) << 8) + self.inactive as u64
    }

    /// Can take new connections: weight > 0 and not overloaded.
    pub const fn is_available(&self) -> bool {
        self.weight > 0 && !self.overloaded
    }
}

/// A destination's connection thresholds (ipvsadm `-x upper -y lower`; 0 = none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Thresholds {
    /// Upper threshold: at `active + inactive >= upper` the destination is overloaded.
    pub upper: u32,
    /// Lower threshold: an overloaded destination recovers below it (if 0, below 3/4 of the
    /// upper threshold).
    pub lower: u32,
}

impl Thresholds {
    /// The next value of [`DestState::overloaded`], given the current one and the counts
    /// (`ip_vs_bind_dest` sets the flag, `ip_vs_unbind_dest` clears it, in `ip_vs_conn.c`).
    pub fn overloaded(&self, was: bool, active: u32, inactive: u32) -> bool {
        let total = u64::from(active) + u64::from(inactive);
        let (upper, lower) = (u64::from(self.upper), u64::from(self.lower));
        if upper != 0 && total >= upper {
            return true;
        }
        if !was {
            return false;
        }
        if lower != 0 {
            total >= lower
        } else if upper != 0 {
            total * 4 >= upper * 3
        } else {
            false
        }
    }
}

macro_rules! scheduler_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident = $name:literal,)*) => {
        /// The scheduling algorithms, by their ipvsadm names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SchedulerKind {
            $($(#[doc = $doc])* $variant,)*
        }

        impl SchedulerKind {
            /// Every scheduler, in the order ipvsadm's manual lists them.
            pub const ALL: [Self; [$($name),*].len()] = [$(Self::$variant),*];

            /// The ipvsadm name (`-s rr`, ...).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

scheduler_kinds! {
    /// Round robin.
    Rr = "rr",
    /// Weighted round robin.
    Wrr = "wrr",
    /// Least connections.
    Lc = "lc",
    /// Weighted least connections.
    Wlc = "wlc",
    /// Locality-based least connections.
    Lblc = "lblc",
    /// Locality-based least connections with replication.
    Lblcr = "lblcr",
    /// Destination hashing.
    Dh = "dh",
    /// Source hashing.
    Sh = "sh",
    /// Shortest expected delay.
    Sed = "sed",
    /// Never queue.
    Nq = "nq",
    /// Maglev hashing.
    Mh = "mh",
}

fn valid_schedulers() -> String {
    SchedulerKind::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = SchedulerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| SchedulerError::UnknownScheduler(s.to_string()))
    }
}

/// Scheduler flags (ipvsadm `-b`), as the kernel defines them for sh and mh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedFlag {
    /// `sh-fallback`: an unavailable server's clients go to another one.
    ShFallback,
    /// `sh-port`: hash the source port too.
    ShPort,
    /// `mh-fallback`: an unavailable server's clients go to another one.
    MhFallback,
    /// `mh-port`: hash the source port too.
    MhPort,
}

impl SchedFlag {
    /// Every flag.
    pub const ALL: [Self; 4] = [
        Self::ShFallback,
        Self::ShPort,
        Self::MhFallback,
        Self::MhPort,
    ];

    /// The ipvsadm name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ShFallback => "sh-fallback",
            Self::ShPort => "sh-port",
            Self::MhFallback => "mh-fallback",
            Self::MhPort => "mh-port",
        }
    }

    /// The scheduler the flag belongs to.
    pub const fn scheduler(self) -> SchedulerKind {
        match self {
            Self::ShFallback | Self::ShPort => SchedulerKind::Sh,
            Self::MhFallback | Self::MhPort => SchedulerKind::Mh,
        }
    }
}

impl fmt::Display for SchedFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedFlag {
    type Err = SchedulerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| SchedulerError::UnknownFlag(s.to_string()))
    }
}

/// Per-scheduler options. The defaults are the kernel's, except where the module docs say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// sh/mh: fall back to another server when the hashed one is unavailable.
    pub fallback: bool,
    /// sh/mh: hash the source port as well as the address.
    pub port: bool,
    /// wrr: the order of the passes in a cycle.
    pub wrr_order: WrrOrder,
    /// mh: lookup table size, a prime (default [`MH_DEFAULT_TABLE_SIZE`]).
    pub mh_table_size: u32,
    /// lblc/lblcr: table sizes and times.
    pub locality: LocalityOptions,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            fallback: false,
            port: false,
            wrr_order: WrrOrder::default(),
            mh_table_size: MH_DEFAULT_TABLE_SIZE,
            locality: LocalityOptions::default(),
        }
    }
}

impl SchedulerOptions {
    /// Default options with ipvsadm `-b` flags applied: a comma-separated list such as
    /// `"sh-fallback,sh-port"` (empty for none). Each flag must belong to `kind`.
    pub fn with_flags(kind: SchedulerKind, flags: &str) -> Result<Self, SchedulerError> {
        let mut options = Self::default();
        for name in flags.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let flag: SchedFlag = name.parse()?;
            if flag.scheduler() != kind {
                return Err(SchedulerError::FlagMismatch { flag, kind });
            }
            match flag {
                SchedFlag::ShFallback | SchedFlag::MhFallback => options.fallback = true,
                SchedFlag::ShPort | SchedFlag::MhPort => options.port = true,
            }
        }
        Ok(options)
    }

    /// The `-b` flags these options set for `kind` (for listings).
    pub fn flags(&self, kind: SchedulerKind) -> Vec<SchedFlag> {
        let (fallback, port) = match kind {
            SchedulerKind::Sh => (SchedFlag::ShFallback, SchedFlag::ShPort),
            SchedulerKind::Mh => (SchedFlag::MhFallback, SchedFlag::MhPort),
            _ => return Vec::new(),
        };
        [(self.fallback, fallback), (self.port, port)]
            .into_iter()
            .filter_map(|(on, flag)| on.then_some(flag))
            .collect()
    }

    /// Checks the options make sense for `kind`.
    pub fn validate(&self, kind: SchedulerKind) -> Result<(), SchedulerError> {
        if (self.fallback || self.port) && !matches!(kind, SchedulerKind::Sh | SchedulerKind::Mh) {
            let flag = if self.fallback { "fallback" } else { "port" };
            return Err(SchedulerError::FlagsNotSupported { flag, kind });
        }
        if kind == SchedulerKind::Mh
            && (self.mh_table_size > MH_MAX_TABLE_SIZE || !maglev::is_prime(self.mh_table_size))
        {
            return Err(SchedulerError::MhTableSize(self.mh_table_size));
        }
        Ok(())
    }
}

/// A bad scheduler name, flag, option or destination list. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// Not an ipvsadm scheduler name.
    #[error("unknown scheduler `{0}`; valid schedulers: {vs}", vs = valid_schedulers())]
    UnknownScheduler(String),
    /// Not an ipvsadm scheduler flag.
    #[error(
        "unknown scheduler flag `{0}`; valid flags: sh-fallback, sh-port, mh-fallback, mh-port"
    )]
    UnknownFlag(String),
    /// A flag of another scheduler.
    #[error("scheduler flag `{flag}` is for the {} scheduler, not {kind}", flag.scheduler())]
    FlagMismatch {
        /// The flag.
        flag: SchedFlag,
        /// The scheduler it was given for.
        kind: SchedulerKind,
    },
    /// Fallback/port options on a scheduler that has none.
    #[error("the {flag} option applies only to the sh and mh schedulers, not {kind}")]
    FlagsNotSupported {
        /// Which option.
        flag: &'static str,
        /// The scheduler.
        kind: SchedulerKind,
    },
    /// mh table size not a prime in range.
    #[error("mh table size {0} must be a prime between 2 and 1048576")]
    MhTableSize(u32),
    /// More destinations than mh table positions.
    #[error("mh: {dests} destinations do not fit a lookup table of {table} positions")]
    TooManyDests {
        /// Destinations given.
        dests: usize,
        /// Table size.
        table: u32,
    },
    /// lblc/lblcr bucket count not a power of two in range.
    #[error("locality table buckets {0} must be a power of two no larger than 16777216")]
    LocalityBuckets(usize),
    /// lblc/lblcr capacity zero or too large.
    #[error("locality table capacity {0} must be between 1 and 16777216")]
    LocalityCapacity(usize),
    /// The same destination listed twice.
    #[error("destination {} is listed twice", .id.0)]
    DuplicateDest {
        /// The destination.
        id: DestId,
    },
}

/// Why [`Scheduler::install`] refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// The entry is for another kind of scheduler.
    #[error("{entry} entry cannot be installed in a {kind} scheduler")]
    WrongScheduler {
        /// What the entry is for.
        entry: SchedulerKind,
        /// This scheduler.
        kind: SchedulerKind,
    },
    /// The table is full.
    #[error("locality table full")]
    Full,
    /// An lblcr entry with no destination.
    #[error("lblcr entry with an empty destination set")]
    EmptySet,
}

/// Counters of one [`Scheduler`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// [`Scheduler::pick`] found no destination (the kernel's "no destination available").
    pub no_dest: u64,
    /// lblc/lblcr: a new destination address was not remembered because the table was full.
    pub locality_full: u64,
    /// lblcr: a full set dropped its busiest member to take a new one.
    pub locality_set_evictions: u64,
}

#[derive(Debug, Clone)]
enum State {
    Rr(rr::Rr),
    Wrr(rr::Wrr),
    Lc,
    Wlc,
    Lblc(locality::Lblc),
    Lblcr(locality::Lblcr),
    Dh(hashing::Dh),
    Sh(hashing::Sh),
    Sed,
    Nq,
    Mh(maglev::Mh),
}

/// One service's scheduler: the algorithm's state plus its counters.
#[derive(Debug, Clone)]
pub struct Scheduler {
    kind: SchedulerKind,
    options: SchedulerOptions,
    state: State,
    stats: SchedulerStats,
}

fn check_unique(dests: &[DestState]) -> Result<(), SchedulerError> {
    let mut seen = hashbrown::HashSet::with_capacity(dests.len());
    for d in dests {
        if !seen.insert(d.id) {
            return Err(SchedulerError::DuplicateDest { id: d.id });
        }
    }
    Ok(())
}

impl Scheduler {
    /// A scheduler of `kind` for `dests`, building its tables (allocates).
    pub fn new(
        kind: SchedulerKind,
        options: SchedulerOptions,
        dests: &[DestState],
    ) -> Result<Self, SchedulerError> {
        options.validate(kind)?;
        check_unique(dests)?;
        let state = match kind {
            SchedulerKind::Rr => State::Rr(rr::Rr::new(dests)),
            SchedulerKind::Wrr => State::Wrr(rr::Wrr::new(options.wrr_order, dests)),
            SchedulerKind::Lc => State::Lc,
            SchedulerKind::Wlc => State::Wlc,
            SchedulerKind::Lblc => State::Lblc(locality::Lblc::new(&options.locality)?),
            SchedulerKind::Lblcr => State::Lblcr(locality::Lblcr::new(&options.locality)?),
            SchedulerKind::Dh => State::Dh(hashing::Dh::new(dests)),
            SchedulerKind::Sh => State::Sh(hashing::Sh::new(dests, options.fallback, options.port)),
            SchedulerKind::Sed => State::Sed,
            SchedulerKind::Nq => State::Nq,
            SchedulerKind::Mh => State::Mh(maglev::Mh::new(
                options.mh_table_size,
                dests,
                options.fallback,
                options.port,
            )?),
        };
        Ok(Self {
            kind,
            options,
            state,
            stats: SchedulerStats::default(),
        })
    }

    /// The algorithm.
    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    /// The options it was built with.
    pub fn options(&self) -> &SchedulerOptions {
        &self.options
    }

    /// The counters.
    pub fn stats(&self) -> SchedulerStats {
        self.stats
    }

    /// The destination set or a weight changed (the kernel's `add_dest` / `del_dest` /
    /// `upd_dest` hooks): rebuild what depends on it. Configuration time; may allocate. On
    /// error nothing changed. Connection counts and overload flags need no update: `pick`
    /// reads them from its argument.
    pub fn update(&mut self, dests: &[DestState]) -> Result<(), SchedulerError> {
        check_unique(dests)?;
        match &mut self.state {
            State::Rr(s) => s.update(dests),
            State::Wrr(s) => s.update(dests),
            State::Lblc(s) => s.update(dests),
            State::Lblcr(s) => s.update(dests),
            State::Dh(s) => s.update(dests),
            State::Sh(s) => s.update(dests),
            // Checks the list fits its table before changing anything.
            State::Mh(s) => s.update(dests)?,
            State::Lc | State::Wlc | State::Sed | State::Nq => {}
        }
        Ok(())
    }

    /// Chooses the destination for a new connection `flow` among `dests` (the same list, in
    /// the same order, as last given to `new`/`update`, with current counts), or `None` when
    /// no destination is available. Never allocates; never returns a weight-0 destination or
    /// one not in `dests`.
    pub fn pick(&mut self, dests: &[DestState], flow: &Flow, now: u64) -> Option<DestId> {
        let stats = &mut self.stats;
        let id = |i: Option<usize>| i.map(|i| dests[i].id);
        let chosen = match &mut self.state {
            State::Rr(s) => id(s.pick(dests)),
            State::Wrr(s) => id(s.pick(dests)),
            State::Lc => id(least::lc(dests)),
            State::Wlc => id(least::wlc(dests)),
            State::Sed => id(least::sed(dests)),
            State::Nq => id(least::nq(dests)),
            State::Lblc(s) => s.pick(dests, flow.dst.addr, now, stats),
            State::Lblcr(s) => s.pick(dests, flow.dst.addr, now, stats),
            State::Dh(s) => s.pick(dests, flow.dst.addr),
            State::Sh(s) => s.pick(dests, flow.src.addr, flow.src.port),
            State::Mh(s) => s.pick(dests, flow.src.addr, flow.src.port),
        };
        if chosen.is_none() {
            stats.no_dest += 1;
        }
        chosen
    }

    /// Periodic upkeep, about every [`CHECK_EXPIRE_INTERVAL`]: ages the lblc/lblcr tables
    /// (see [`LocalityOptions`]). Returns how many entries went; a no-op for the others.
    pub fn housekeeping(&mut self, now: u64) -> usize {
        self.housekeeping_with(now, |_| {})
    }

    /// [`housekeeping`](Self::housekeeping), telling `removed` the address of every lblc/lblcr
    /// entry it drops (for the sync daemon). Never allocates.
    pub fn housekeeping_with(&mut self, now: u64, mut removed: impl FnMut(Ipv4Addr)) -> usize {
        match &mut self.state {
            State::Lblc(s) => s.housekeeping(now, &mut removed),
            State::Lblcr(s) => s.housekeeping(now, &mut removed),
            _ => 0,
        }
    }

    /// The destination address whose lblc/lblcr entry the last [`pick`](Self::pick) created
    /// or changed (a new mapping, another server, a set member added or dropped), taken: the
    /// caller announces [`locality_entry`](Self::locality_entry) to the peer. A pick that
    /// only used an entry changes nothing. Always `None` for the other schedulers.
    pub fn take_locality_change(&mut self) -> Option<Ipv4Addr> {
        match &mut self.state {
            State::Lblc(s) => s.take_changed(),
            State::Lblcr(s) => s.take_changed(),
            _ => None,
        }
    }

    /// The lblc/lblcr entry of destination address `addr`, with times relative to `now`.
    pub fn locality_entry(&self, addr: Ipv4Addr, now: u64) -> Option<LocalityEntry> {
        match &self.state {
            State::Lblc(s) => s.entry(addr, now),
            State::Lblcr(s) => s.entry(addr, now),
            _ => None,
        }
    }

    /// Removes the lblc/lblcr entry of `addr` (the peer's word). False if there was none.
    pub fn remove_locality(&mut self, addr: Ipv4Addr) -> bool {
        match &mut self.state {
            State::Lblc(s) => s.remove(addr),
            State::Lblcr(s) => s.remove(addr),
            _ => false,
        }
    }

    /// Entries in the lblc/lblcr table (empty for the others), with times relative to `now`,
    /// for listing and for syncing to the standby. Allocates.
    pub fn entries(&self, now: u64) -> Vec<LocalityEntry> {
        match &self.state {
            State::Lblc(s) => s.entries(now).collect(),
            State::Lblcr(s) => s.entries(now).collect(),
            _ => Vec::new(),
        }
    }

    /// Entries held in the lblc/lblcr table.
    pub fn entry_count(&self) -> usize {
        match &self.state {
            State::Lblc(s) => s.len(),
            State::Lblcr(s) => s.len(),
            _ => 0,
        }
    }

    /// Installs an entry received from the peer (replacing any for the same address).
    pub fn install(&mut self, entry: LocalityEntry, now: u64) -> Result<(), InstallError> {
        match (&mut self.state, entry) {
            (State::Lblc(s), LocalityEntry::Lblc(e)) => s.install(e, now),
            (State::Lblcr(s), LocalityEntry::Lblcr(e)) => s.install(e, now),
            (_, e) => Err(InstallError::WrongScheduler {
                entry: match e {
                    LocalityEntry::Lblc(_) => SchedulerKind::Lblc,
                    LocalityEntry::Lblcr(_) => SchedulerKind::Lblcr,
                },
                kind: self.kind,
            }),
        }
    }
}

/// No destination is available for the connection (all quiesced, overloaded or absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no destination available")]
pub struct NoDest;

/// The outcome of [`choose`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Where the connection goes.
    pub dest: DestId,
    /// The persistence template it uses, if any. The connection table should
    /// [`hold`](PersistenceTable::hold) it when it binds the connection and
    /// [`release`](PersistenceTable::release) it when the connection goes.
    pub template: Option<PersistKey>,
    /// The template was created (or replaced) by this decision: the caller announces it to
    /// the peer (the table's walk announces refreshes and expiries).
    pub new_template: bool,
}

/// Schedules a new connection to service `svc`: through its persistence template if the
/// service is persistent and the client has a valid one (`ip_vs_sched_persist`), else by
/// `sched` (creating the template for a persistent service; if the template table is full
/// the connection is still scheduled, just not persistent — counted in
/// [`PersistStats::full`]).
///
/// A template is valid while its destination is in `dests`; a quiesced (weight-0) one stays
/// valid unless the table's `expire_quiescent_template` is on (`ip_vs_check_template`). An
/// invalid template is replaced by a freshly scheduled one. Never allocates.
pub fn choose(
    sched: &mut Scheduler,
    templates: &mut PersistenceTable,
    persistence: Option<Persistence>,
    svc: ServiceId,
    dests: &[DestState],
    flow: &Flow,
    now: u64,
) -> Result<Choice, NoDest> {
    let Some(p) = persistence else {
        let dest = sched.pick(dests, flow, now).ok_or(NoDest)?;
        return Ok(Choice {
            dest,
            template: None,
            new_template: false,
        });
    };
    let key = PersistKey::new(svc, flow.src.addr, p.netmask);
    if let Some(dest) = templates.lookup(key, now) {
        let quiescent_expires = templates.expire_quiescent_template();
        if find(dests, dest).is_some_and(|d| !(quiescent_expires && d.weight == 0)) {
            return Ok(Choice {
                dest,
                template: Some(key),
                new_template: false,
            });
        }
        templates.count_invalidated();
    }
    let dest = sched.pick(dests, flow, now).ok_or(NoDest)?;
    let template = templates
        .insert(key, dest, p.timeout, now)
        .is_ok()
        .then_some(key);
    Ok(Choice {
        dest,
        template,
        new_template: template.is_some(),
    })
}

/// The destination `id` in `dests`.
fn find(dests: &[DestState], id: DestId) -> Option<&DestState> {
    dests.iter().find(|d| d.id == id)
}

/// The index of destination `id` in `dests`.
fn position(dests: &[DestState], id: DestId) -> Option<usize> {
    dests.iter().position(|d| d.id == id)
}

/// The destination a table built over `ids` stored as index `at`, looked up in the caller's
/// current `dests`: directly if the list has not changed, else by id (`None` if it is gone).
fn resolve<'a>(dests: &'a [DestState], ids: &[DestId], at: usize) -> Option<&'a DestState> {
    let id = *ids.get(at)?;
    match dests.get(at) {
        Some(d) if d.id == id => Some(d),
        _ => find(dests, id),
    }
}

#[cfg(test)]
mod tests;
