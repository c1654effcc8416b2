//! The active/standby role machine (VRRP-like), as a pure state machine.
//!
//! Each director sends a [`Heartbeat`] every `interval` on **two paths**: the sync link and
//! the service network (through the dataplanes, as VRRP adverts would go). The caller feeds
//! the peer's heartbeats in with [`RoleMachine::handle_heartbeat`], tells it about its own
//! health ([`RoleMachine::set_dataplane_ok`]) and copy ([`RoleMachine::set_sync_complete`]),
//! calls [`RoleMachine::tick`] at least every few milliseconds, and executes the
//! [`Action`]s it puts out (announce the VIPs and the inside gateway by gratuitous ARP and
//! answer ARP for them, or stop). States and transitions are documented in
//! docs/failover.md; the rules that keep the pair safe:
//!
//! - **Takeover only on silence on both paths.** A standby becomes active when it has heard
//!   nothing from the peer on either path for `dead_interval`, or when the peer says it is
//!   faulty. A cut sync link alone never does it: the service-path heartbeats keep the
//!   directors apart.
//! - **One path left is weaker evidence.** When the peer's newest heartbeats came by one path
//!   only (the other cut, or trailing), a stall of that one path (CPU contention, a lossy
//!   segment) looks exactly like a dead peer, so the silence must last
//!   `dead_interval_one_path` (default twice the dead interval) instead.
//! - **Our own stall is not the peer's silence.** When this process did not run for a while
//!   (the machine is called with a `now` more than half an interval after the previous call),
//!   the peer's heartbeats may be waiting in socket buffers: no verdict from silence
//!   (`PeerDead`, `Alone`) for one interval after it resumes, time for them to be read.
//! - **One active at a time, by handshake.** A backup becomes active while the peer is alive
//!   only after the peer's newest heartbeat says it is *not* active and the backup outranks
//!   it (priority, then node id). Preemption is a request (a flag in the heartbeat) the active
//!   grants by stepping down first; the requester takes over when it hears that.
//! - **Sync-complete gate.** A director asks to preempt only with a complete copy of the
//!   table; the active grants only a request that says so.
//! - **Split brain heals deterministically.** If both are active (only possible after both
//!   paths were silent at once), the lower-ranked one steps down as soon as it hears the
//!   other.

use std::time::Duration;

/// A director's role, as it advertises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoleState {
    /// Just started: listening for the peer for `init_hold` before deciding.
    Init,
    /// Standby without a complete copy of the active's table.
    Syncing,
    /// Standby with a complete copy ("sync complete").
    Standby,
    /// Owns the VIPs and the inside gateway address; forwards; streams its table.
    Active,
    /// Its own dataplane is down (process gone, ports down): never active, tells the peer.
    Fault,
}

impl RoleState {
    /// Whether the director owns the addresses in this state.
    pub fn is_active(self) -> bool {
        self == RoleState::Active
    }

    /// Whether it is a standby (syncing or complete).
    pub fn is_backup(self) -> bool {
        matches!(self, RoleState::Syncing | RoleState::Standby)
    }
}

/// Which path a heartbeat came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// The dedicated sync link (the `Peer.Heartbeat` gRPC stream).
    SyncLink,
    /// The service network, through the two dataplanes.
    Service,
}

/// One heartbeat (the same one is sent on both paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Heartbeat {
    /// The sender's node id (unique in the pair; the last tie-break).
    pub node_id: u32,
    /// The sender's priority (higher wins).
    pub priority: u8,
    /// The sender's process incarnation (e.g. boot time); a higher one is a restart.
    pub incarnation: u64,
    /// Increases by one per heartbeat within an incarnation.
    pub seq: u64,
    /// The sender's role.
    pub state: RoleState,
    /// The sender holds a complete copy of the peer's table.
    pub sync_complete: bool,
    /// The sender asks the active peer to step down for it (preemption).
    pub preempt_request: bool,
    /// The receiver's state as the sender last heard it (`None`: not heard on any path
    /// for 1.5 intervals, or never). An election needs the peer to have seen us as a
    /// standby: a peer that saw us active or faulty may be taking over at this very moment.
    /// `None` also asks the receiver for a heartbeat at once (probe and answer).
    pub sees_peer: Option<RoleState>,
}

impl Heartbeat {
    fn rank(&self) -> (u8, u32) {
        (self.priority, self.node_id)
    }
}

/// What the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Become the active director: tell the dataplane to send gratuitous ARPs for the VIPs and
    /// the inside gateway address, answer ARP for them and forward; stream the table to the
    /// peer.
    Activate,
    /// Stop answering ARP for the VIPs and the gateway; receive the peer's table.
    Deactivate,
}

/// Why the last transition happened (for logs and `tandemctl status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The initial state.
    Start,
    /// The peer was heard as active.
    PeerActive,
    /// Nothing heard from the peer on either path for the dead interval.
    PeerDead,
    /// The peer says its dataplane is down.
    PeerFault,
    /// No active director and this one outranks the peer.
    Elected,
    /// Nobody heard during the initial hold.
    Alone,
    /// Own dataplane down.
    LocalFault,
    /// Own dataplane back.
    Recovered,
    /// The copy became complete or stopped being complete.
    SyncChanged,
    /// Stepped down for a higher-ranked, sync-complete peer that asked to preempt.
    Yielded,
    /// Both active: the lower-ranked one steps down.
    SplitBrain,
}

/// How a [`RoleMachine`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleConfig {
    /// This director's node id (unique in the pair).
    pub node_id: u32,
    /// Its priority, 1..=255 (higher is preferred).
    pub priority: u8,
    /// Heartbeat interval. Default 50 ms.
    pub interval: Duration,
    /// Silence on both paths for this long means the peer is dead. Default: 3 intervals plus
    /// VRRP's skew, `(256 - priority) / 256` of an interval, but at least half an interval
    /// (see [`RoleConfig::dead_interval`]).
    pub dead_interval: Option<Duration>,
    /// The silence that means the peer is dead when its newest heartbeats came by one path
    /// only (see [`RoleConfig::dead_interval_one_path`]). Default: twice the dead interval.
    pub dead_interval_one_path: Option<Duration>,
    /// Listen this long after start before deciding alone. Default: the dead interval plus an
    /// interval.
    pub init_hold: Option<Duration>,
    /// Ask an active, lower-ranked peer to step down once sync is complete.
    pub preempt: bool,
}

impl RoleConfig {
    /// Defaults for everything but the identity.
    pub fn new(node_id: u32, priority: u8) -> RoleConfig {
        RoleConfig {
            node_id,
            priority,
            interval: Duration::from_millis(50),
            dead_interval: None,
            dead_interval_one_path: None,
            init_hold: None,
            preempt: true,
        }
    }

    /// The dead interval in effect: 3 intervals plus VRRP's skew, `(256 - priority) / 256`
    /// of an interval, with the skew at least half an interval.
    ///
    /// The margin beyond 3 intervals is what a heartbeat may arrive later than the one
    /// before it (jitter) without counting as missing. With VRRP's skew alone it shrinks
    /// to 0.2 ms at priority 255 (11 ms at 200): a higher-priority standby (back after a
    /// restart without preemption, or still syncing) then declared a live active dead after
    /// only two lost heartbeats on the one path left and made two actives. The floor keeps
    /// the rule for every priority: a takeover from a live peer needs three heartbeats in a
    /// row lost on every path still up. Priorities up to 128 keep VRRP's value.
    pub fn dead_interval(&self) -> Duration {
        self.dead_interval.unwrap_or_else(|| {
            let skew = self.interval * (256 - u32::from(self.priority)) / 256;
            self.interval * 3 + skew.max(self.interval / 2)
        })
    }

    /// The dead interval in effect while the peer is heard on one path only: the sync link
    /// cut (or the service network broken) with both directors alive. Then nothing but that
    /// path keeps the pair apart, and a stall of it for longer than the dead interval (a
    /// director's CPU busy with other work, a lossy segment) would make two actives: on the
    /// virtual rack under CPU load the service path went silent for over 216 and 227 ms with
    /// the sync link cut, twice in one drill. The price is a slower takeover in a double fault (sync
    /// link cut, then the active dies). Never shorter than the dead interval.
    pub fn dead_interval_one_path(&self) -> Duration {
        let dead = self.dead_interval();
        self.dead_interval_one_path.unwrap_or(dead * 2).max(dead)
    }

    /// The initial hold in effect.
    pub fn init_hold(&self) -> Duration {
        self.init_hold
            .unwrap_or_else(|| self.dead_interval() + self.interval)
    }
}

/// The newest word from the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerView {
    /// Its newest heartbeat.
    pub last: Heartbeat,
    /// When each path last brought a new heartbeat (`[sync link, service]`).
    pub heard: [Option<u64>; 2],
}

/// Counters for the status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoleMetrics {
    /// Transitions made.
    pub transitions: u64,
    /// Takeovers (to active because the peer died or failed).
    pub takeovers: u64,
    /// Heartbeats ignored (own node id, older incarnation or sequence).
    pub ignored: u64,
    /// Times this process was found not to have run for over half an interval.
    pub stalls: u64,
    /// The longest wait (ns) between two new heartbeats of the same peer incarnation, per
    /// path (`[sync link, service]`), and on both paths together (the silence the dead
    /// interval is compared with): how close the pair came to a takeover from a live peer.
    /// Includes a real death only if the peer came back with the same incarnation (never).
    pub longest_silence: [u64; 3],
}

/// The role machine. See the module documentation.
#[derive(Debug)]
pub struct RoleMachine {
    cfg: RoleConfig,
    incarnation: u64,
    state: RoleState,
    reason: Reason,
    since: u64,
    started: u64,
    seq: u64,
    next_heartbeat: u64,
    /// An extra heartbeat (a probe or an answer, outside the interval schedule) is due
    /// since then.
    extra_due: Option<u64>,
    /// When the last answer to a probe was due (answers are rate-limited by it).
    last_answer: Option<u64>,
    /// The probe for the current silence of the peer has been sent.
    probed: bool,
    peer: Option<PeerView>,
    /// Per path, the newest (incarnation, seq) that path brought.
    path_newest: [(u64, u64); 2],
    /// The `now` of the previous call (to notice that this process did not run).
    last_now: u64,
    /// No verdict from silence before this: the process resumed from a stall.
    silence_grace_until: u64,
    sync_complete: bool,
    dataplane_ok: bool,
    /// The activeness last ordered (None: nothing ordered yet).
    ordered: Option<bool>,
    actions: Vec<Action>,
    m: RoleMetrics,
}

impl RoleMachine {
    /// A machine in [`RoleState::Init`] at `now`. `incarnation` must grow across restarts of
    /// this director.
    pub fn new(cfg: RoleConfig, incarnation: u64, now: u64) -> RoleMachine {
        RoleMachine {
            cfg,
            incarnation,
            state: RoleState::Init,
            reason: Reason::Start,
            since: now,
            started: now,
            seq: 0,
            next_heartbeat: now,
            extra_due: None,
            last_answer: None,
            probed: false,
            peer: None,
            path_newest: [(0, 0); 2],
            last_now: now,
            silence_grace_until: 0,
            sync_complete: false,
            dataplane_ok: true,
            ordered: None,
            actions: Vec::new(),
            m: RoleMetrics::default(),
        }
    }

    /// The current state.
    pub fn state(&self) -> RoleState {
        self.state
    }

    /// Why it is in this state, and since when.
    pub fn reason(&self) -> (Reason, u64) {
        (self.reason, self.since)
    }

    /// The newest word from the peer.
    pub fn peer(&self) -> Option<PeerView> {
        self.peer
    }

    /// The configuration.
    pub fn config(&self) -> &RoleConfig {
        &self.cfg
    }

    /// Counters.
    pub fn metrics(&self) -> RoleMetrics {
        self.m
    }

    /// Whether the peer was heard on any path within the dead interval in effect
    /// ([`RoleMachine::dead_interval_now`]).
    pub fn peer_alive(&self, now: u64) -> bool {
        let dead = nanos(self.dead_interval_now());
        self.peer.is_some_and(|p| {
            p.heard
                .iter()
                .flatten()
                .any(|t| now.saturating_sub(*t) < dead)
        })
    }

    /// Whether the peer's newest heartbeats came by both paths: each path's newest is at
    /// most [`PATHS_AGREE_SEQS`] heartbeats behind the other's, from the same incarnation.
    /// Sequence numbers, not arrival times: a path that delivers late (a busy director) still
    /// carries the same heartbeats, while a cut one falls behind by one per interval.
    pub fn both_paths_working(&self) -> bool {
        let [(inc_a, seq_a), (inc_b, seq_b)] = self.path_newest;
        inc_a == inc_b && seq_a != 0 && seq_b != 0 && seq_a.abs_diff(seq_b) <= PATHS_AGREE_SEQS
    }

    /// The silence that means the peer is dead, now: the dead interval while both paths
    /// carry its heartbeats, else the one-path dead interval.
    pub fn dead_interval_now(&self) -> Duration {
        if self.both_paths_working() {
            self.cfg.dead_interval()
        } else {
            self.cfg.dead_interval_one_path()
        }
    }

    /// A heartbeat from the peer on `path`.
    pub fn handle_heartbeat(&mut self, path: Path, hb: &Heartbeat, now: u64) {
        self.clock(now);
        if hb.node_id == self.cfg.node_id {
            self.m.ignored += 1;
            return;
        }
        let p = match path {
            Path::SyncLink => 0,
            Path::Service => 1,
        };
        let id = (hb.incarnation, hb.seq);
        let fresh_on_path = self.path_newest.get(p).is_some_and(|n| id > *n);
        if !fresh_on_path {
            self.m.ignored += 1;
            return;
        }
        if let Some(n) = self.path_newest.get_mut(p) {
            // A new incarnation's first heartbeat ends no silence of the old one.
            let same_peer = n.0 == hb.incarnation;
            *n = id;
            if let Some(view) = self.peer.filter(|v| v.last.incarnation == hb.incarnation) {
                let path_gap = view.heard.get(p).copied().flatten().filter(|_| same_peer);
                let any_gap = view.heard.iter().flatten().max().copied();
                for (slot, since) in [(p, path_gap), (2, any_gap)] {
                    if let (Some(t), Some(l)) = (since, self.m.longest_silence.get_mut(slot)) {
                        *l = (*l).max(now.saturating_sub(t));
                    }
                }
            }
        }
        let mut view = self.peer.unwrap_or(PeerView {
            last: *hb,
            heard: [None; 2],
        });
        if id >= (view.last.incarnation, view.last.seq) {
            view.last = *hb;
        }
        if let Some(h) = view.heard.get_mut(p) {
            *h = Some(now);
        }
        self.peer = Some(view);
        self.probed = false;
        // Probe and answer: the peer has not heard us for 1.5 intervals (or never). If it is a
        // standby it may be about to call us dead while this path works in this direction:
        // send an extra heartbeat at once, on top of the schedule, for another chance in the
        // other direction. At most one answer per quarter interval: a peer cannot make us
        // flood.
        let quarter = nanos(self.cfg.interval) / 4;
        if hb.sees_peer.is_none()
            && self
                .last_answer
                .is_none_or(|t| now.saturating_sub(t) >= quarter)
        {
            self.last_answer = Some(now);
            self.extra_due.get_or_insert(now);
        }
        self.evaluate(now);
    }

    /// Whether the local receiver holds a complete copy of the peer's table.
    pub fn set_sync_complete(&mut self, complete: bool, now: u64) {
        self.clock(now);
        self.sync_complete = complete;
        self.evaluate(now);
    }

    /// Whether the local dataplane is up and its service ports are up.
    pub fn set_dataplane_ok(&mut self, ok: bool, now: u64) {
        self.clock(now);
        self.dataplane_ok = ok;
        self.evaluate(now);
    }

    /// The daemon is stopping (a graceful stop: SIGTERM, `systemctl stop`): goes to `Fault`
    /// and has the next [`RoleMachine::poll_heartbeat`] say so at once, so that a standby peer
    /// takes over now (`PeerFault`) instead of after the dead interval, as a VRRP router's
    /// priority-0 advertisement does when it shuts down.
    pub fn resign(&mut self, now: u64) {
        self.dataplane_ok = false;
        self.evaluate(now);
        self.extra_due = Some(now);
    }

    /// Takes new settings (a reload): priority, preemption and the timers, in effect at once.
    /// The new priority goes out in a heartbeat now, and the rules apply to it as to any: a
    /// standby that now outranks the active asks it to step down (if it preempts and its copy
    /// is complete), an active that is now outranked by a standby asking for it yields. The
    /// node id cannot change (the peer knows this director by it): refused, nothing changed.
    pub fn reconfigure(&mut self, cfg: RoleConfig, now: u64) -> Result<(), String> {
        if cfg.node_id != self.cfg.node_id {
            return Err(format!(
                "node.id: {} → {} takes a restart (the peer knows this director by its id)",
                self.cfg.node_id, cfg.node_id
            ));
        }
        if cfg.priority == 0 {
            return Err("node.priority: 0 is not allowed (1-255, higher wins)".into());
        }
        self.clock(now);
        self.next_heartbeat = self
            .next_heartbeat
            .min(now.saturating_add(nanos(cfg.interval)));
        self.cfg = cfg;
        self.extra_due = Some(now);
        self.evaluate(now);
        Ok(())
    }

    /// Lets time pass: the dead interval and the initial hold are checked here, and a probe
    /// is due when the peer has been silent for 1.5 intervals.
    pub fn tick(&mut self, now: u64) {
        self.clock(now);
        if !self.probed && self.peer_suspect(now) {
            // One heartbeat at once saying "not heard" (`sees_peer: None`): a live peer answers
            // with one of its own, a second chance before the dead interval runs out.
            self.probed = true;
            self.extra_due.get_or_insert(now);
        }
        self.evaluate(now);
    }

    /// Notices a stall of this process: a call more than half an interval after the previous
    /// one (the daemon calls every few milliseconds). Then what the peer sent meanwhile may
    /// still be in buffers, so silence decides nothing for one more interval.
    fn clock(&mut self, now: u64) {
        let gap = now.saturating_sub(self.last_now);
        if gap > nanos(self.cfg.interval) / 2 {
            self.silence_grace_until = now.saturating_add(nanos(self.cfg.interval));
            self.m.stalls += 1;
            tracing::warn!(
                stalled_ms = gap / 1_000_000,
                "the role machine was not run for a while: no verdict from the peer's silence \
                 for one interval, while what it sent meanwhile is read"
            );
        }
        self.last_now = self.last_now.max(now);
    }

    /// When the peer was last heard on any path.
    fn last_heard(&self) -> Option<u64> {
        self.peer
            .and_then(|p| p.heard.iter().flatten().max().copied())
    }

    /// A known peer silent on both paths for 1.5 intervals: at least one heartbeat missing.
    fn peer_suspect(&self, now: u64) -> bool {
        let limit = nanos(self.cfg.interval) * 3 / 2;
        self.last_heard()
            .is_some_and(|t| now.saturating_sub(t) >= limit)
    }

    /// The next action to execute, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            None
        } else {
            Some(self.actions.remove(0))
        }
    }

    /// The heartbeat to send now on both paths: once per interval, plus a probe when the
    /// peer has been silent for 1.5 intervals and an answer to a heartbeat that says the
    /// peer does not hear us (`sees_peer: None`); the extra ones leave the schedule alone.
    pub fn poll_heartbeat(&mut self, now: u64) -> Option<Heartbeat> {
        let scheduled = now >= self.next_heartbeat;
        if !scheduled && self.extra_due.is_none_or(|t| now < t) {
            return None;
        }
        self.extra_due = None;
        self.seq += 1;
        if scheduled {
            self.next_heartbeat = now.saturating_add(nanos(self.cfg.interval));
        }
        let suspect = self.peer_suspect(now);
        Some(Heartbeat {
            node_id: self.cfg.node_id,
            priority: self.cfg.priority,
            incarnation: self.incarnation,
            seq: self.seq,
            state: self.state,
            sync_complete: self.sync_complete,
            preempt_request: self.cfg.preempt
                && self.sync_complete
                && self.state == RoleState::Standby
                && self
                    .peer
                    .is_some_and(|p| p.last.state.is_active() && self.outranks(&p.last)),
            sees_peer: self.peer.filter(|_| !suspect).map(|p| p.last.state),
        })
    }

    /// When [`RoleMachine::tick`] or [`RoleMachine::poll_heartbeat`] next has something to
    /// do (an upper bound; calling earlier is harmless).
    pub fn next_timeout(&self) -> u64 {
        let dead = nanos(self.dead_interval_now());
        let mut t = self
            .extra_due
            .map_or(self.next_heartbeat, |e| e.min(self.next_heartbeat));
        if let Some(p) = self.peer {
            for h in p.heard.iter().flatten() {
                let d = h.saturating_add(dead);
                if d > self.since {
                    t = t.min(d);
                }
            }
        }
        if self.state == RoleState::Init {
            t = t.min(self.started.saturating_add(nanos(self.cfg.init_hold())));
        }
        if self.silence_grace_until > self.last_now {
            t = t.min(self.silence_grace_until);
        }
        if let Some(h) = self.last_heard().filter(|_| !self.probed) {
            t = t.min(h.saturating_add(nanos(self.cfg.interval) * 3 / 2));
        }
        t
    }

    fn outranks(&self, peer: &Heartbeat) -> bool {
        (self.cfg.priority, self.cfg.node_id) > peer.rank()
    }

    /// Whether this director may make itself active while the peer is alive and not
    /// active: it outranks the peer, and the peer's newest heartbeat shows it saw this
    /// director as a standby (so the peer is not taking over from us right now).
    fn may_elect(&self, p: &Heartbeat) -> bool {
        !p.state.is_active()
            && p.state != RoleState::Fault
            && self.outranks(p)
            && matches!(
                p.sees_peer,
                Some(RoleState::Init | RoleState::Syncing | RoleState::Standby)
            )
    }

    fn backup_state(&self) -> RoleState {
        if self.sync_complete {
            RoleState::Standby
        } else {
            RoleState::Syncing
        }
    }

    fn evaluate(&mut self, now: u64) {
        let alive = self.peer_alive(now);
        let peer = self.peer.map(|p| p.last).filter(|_| alive);
        let next = match self.state {
            RoleState::Fault => self
                .dataplane_ok
                .then_some((RoleState::Init, Reason::Recovered)),
            _ if !self.dataplane_ok => Some((RoleState::Fault, Reason::LocalFault)),
            RoleState::Init => match peer {
                Some(p) if p.state.is_active() => Some((self.backup_state(), Reason::PeerActive)),
                Some(p) if p.state == RoleState::Fault => {
                    Some((RoleState::Active, Reason::PeerFault))
                }
                Some(p) if self.may_elect(&p) => Some((RoleState::Active, Reason::Elected)),
                Some(p) if !self.outranks(&p) => Some((self.backup_state(), Reason::Elected)),
                Some(_) => None,
                None if now.saturating_sub(self.started) >= nanos(self.cfg.init_hold())
                    && now >= self.silence_grace_until =>
                {
                    Some((RoleState::Active, Reason::Alone))
                }
                None => None,
            },
            RoleState::Syncing | RoleState::Standby => match peer {
                None if now < self.silence_grace_until => None,
                None => {
                    // Silent on both paths (or never heard since we entered this state).
                    let waited = now.saturating_sub(self.since) >= nanos(self.cfg.dead_interval());
                    (self.peer.is_some() || waited).then_some((RoleState::Active, Reason::PeerDead))
                }
                Some(p) if p.state == RoleState::Fault => {
                    Some((RoleState::Active, Reason::PeerFault))
                }
                Some(p) if self.may_elect(&p) => Some((RoleState::Active, Reason::Elected)),
                Some(_) if self.state != self.backup_state() => {
                    Some((self.backup_state(), Reason::SyncChanged))
                }
                Some(_) => None,
            },
            RoleState::Active => match peer {
                Some(p) if p.state.is_active() && !self.outranks(&p) => {
                    Some((self.backup_state(), Reason::SplitBrain))
                }
                Some(p) if p.preempt_request && p.sync_complete && !self.outranks(&p) => {
                    Some((self.backup_state(), Reason::Yielded))
                }
                _ => None,
            },
        };
        if let Some((state, reason)) = next {
            self.transition(state, reason, now);
            // One more round: e.g. Fault → Init → Syncing at once when the peer is known.
            if state == RoleState::Init {
                self.started = now;
            }
        }
    }

    fn transition(&mut self, state: RoleState, reason: Reason, now: u64) {
        if state == self.state {
            return;
        }
        tracing::info!(from = ?self.state, to = ?state, ?reason, "role transition");
        if state == RoleState::Active && matches!(reason, Reason::PeerDead | Reason::PeerFault) {
            self.m.takeovers += 1;
        }
        self.state = state;
        self.reason = reason;
        self.since = now;
        self.m.transitions += 1;
        let active = state.is_active();
        if state != RoleState::Init && self.ordered != Some(active) {
            self.ordered = Some(active);
            self.actions.push(if active {
                Action::Activate
            } else {
                Action::Deactivate
            });
        }
    }
}

/// Heartbeats by which one path's newest may trail the other's while both still count as
/// working: the last one or two lost on one path, or a probe or an answer sent meanwhile.
pub const PATHS_AGREE_SEQS: u64 = 3;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
