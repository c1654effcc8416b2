//! Health verdicts on real servers, as tandem-syncd's checkers report them
//! (`Admin.SetServerHealth`), and what they do to the set the workers are given.
//!
//! The *configured* services (what `ListServices`, `save` and `EditServer` see) never change
//! because of a verdict. The *effective* services, handed to the lcores, are the configured
//! ones with every DOWN server either served as weight 0 (QUIESCE: no new connections,
//! existing ones and persistence templates continue, as for any weight-0 server) or left out
//! of its service (REMOVE: out of the scheduler; the caller flushes its connections). UP, or
//! no verdict at all, serves the configured weight. Pure: no clock, no I/O.

use std::collections::HashMap;

use tandem_core::lb::{Endpoint, Protocol};
use tandem_core::service::ServiceSpec;

/// The longest `checker` kept (characters); longer ones are cut.
pub const MAX_CHECKER_CHARS: usize = 64;
/// The longest `reason` kept (characters); longer ones are cut and end with `…`.
pub const MAX_REASON_CHARS: usize = 256;

/// What a checker says about a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// It answers: served with its configured weight.
    Up,
    /// It does not: see [`HealthAction`].
    Down,
}

impl HealthState {
    /// `up` / `down`.
    pub fn name(self) -> &'static str {
        match self {
            HealthState::Up => "up",
            HealthState::Down => "down",
        }
    }
}

/// What a DOWN verdict does to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthAction {
    /// Served as weight 0: no new connections, existing ones continue.
    Quiesce,
    /// Out of its service's scheduler, its connections removed.
    Remove,
}

impl HealthAction {
    /// `quiesce` / `remove`.
    pub fn name(self) -> &'static str {
        match self {
            HealthAction::Quiesce => "quiesce",
            HealthAction::Remove => "remove",
        }
    }
}

/// How the workers serve a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// With its configured weight (UP, or no verdict).
    Configured,
    /// With weight 0 (DOWN + QUIESCE).
    Quiesced,
    /// Not at all (DOWN + REMOVE).
    Removed,
}

/// A checker's verdict as the request carried it (checked and tidied by [`Verdict::new`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// UP or DOWN.
    pub state: HealthState,
    /// What DOWN does (kept as sent when UP: it is what a later DOWN would do).
    pub action: HealthAction,
    /// Which checker (`http`, `tcp`, ...).
    pub checker: String,
    /// One human line: why.
    pub reason: String,
}

/// One line of at most `max` characters: control characters (newlines included) become
/// spaces, surrounding blanks go, and a longer text is cut and ends with `…`.
fn one_line(s: &str, max: usize) -> String {
    let clean: String = s
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= max {
        return clean;
    }
    let mut cut: String = clean.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

impl Verdict {
    /// A verdict with `checker` and `reason` made one line each and bounded
    /// ([`MAX_CHECKER_CHARS`], [`MAX_REASON_CHARS`]): they end up in listings and logs.
    pub fn new(state: HealthState, action: HealthAction, checker: &str, reason: &str) -> Self {
        Verdict {
            state,
            action,
            checker: one_line(checker, MAX_CHECKER_CHARS),
            reason: one_line(reason, MAX_REASON_CHARS),
        }
    }

    /// How the workers serve a server with this verdict.
    pub fn effect(&self) -> Effect {
        match (self.state, self.action) {
            (HealthState::Up, _) => Effect::Configured,
            (HealthState::Down, HealthAction::Quiesce) => Effect::Quiesced,
            (HealthState::Down, HealthAction::Remove) => Effect::Removed,
        }
    }

    /// `up`, `down (quiesced)` or `down (removed, connections flushed)`; with `applied`
    /// false (the verdict was in force already) nothing was flushed: `down (removed)`.
    pub fn describe(&self, applied: bool) -> &'static str {
        match self.effect() {
            Effect::Configured => "up",
            Effect::Quiesced => "down (quiesced)",
            Effect::Removed if applied => "down (removed, connections flushed)",
            Effect::Removed => "down (removed)",
        }
    }

    /// Whether `other` is the same verdict as far as serving goes: same state and, when DOWN,
    /// same action (checker and reason do not count).
    pub fn same_as(&self, other: &Verdict) -> bool {
        self.state == other.state && (self.state == HealthState::Up || self.action == other.action)
    }
}

/// A server's health as the last verdict left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The last verdict.
    pub verdict: Verdict,
    /// When its state last changed (Unix milliseconds).
    pub since_unix_ms: u64,
    /// State changes recorded since the server got its first verdict, that one included.
    pub changes: u64,
}

/// Which server a verdict is about: (protocol, VIP:port, server endpoint).
pub type HealthKey = (Protocol, Endpoint, Endpoint);

/// Every server's last verdict.
pub type HealthMap = HashMap<HealthKey, Health>;

/// How the workers serve the server `key` under `health`.
pub fn effect(health: &HealthMap, key: &HealthKey) -> Effect {
    health
        .get(key)
        .map_or(Effect::Configured, |h| h.verdict.effect())
}

/// The services the workers are given: `specs` with every quiesced server at weight 0 and
/// every removed one left out (see the [module docs](self)).
pub fn effective_specs(specs: &[ServiceSpec], health: &HealthMap) -> Vec<ServiceSpec> {
    specs
        .iter()
        .map(|s| {
            let mut e = s.clone();
            e.dests = s
                .dests
                .iter()
                .filter_map(|d| {
                    let key = (s.proto, s.vip, Endpoint::new(d.addr, d.port));
                    match effect(health, &key) {
                        Effect::Configured => Some(*d),
                        Effect::Quiesced => {
                            Some(tandem_core::service::DestSpec { weight: 0, ..*d })
                        }
                        Effect::Removed => None,
                    }
                })
                .collect();
            e
        })
        .collect()
}

/// `health` without the verdicts of servers `specs` no longer has.
pub fn kept_for(health: &HealthMap, specs: &[ServiceSpec]) -> HealthMap {
    health
        .iter()
        .filter(|((proto, vip, server), _)| {
            specs.iter().any(|s| {
                s.proto == *proto
                    && s.vip == *vip
                    && s.dests
                        .iter()
                        .any(|d| d.addr == server.addr && d.port == server.port)
            })
        })
        .map(|(k, v)| (*k, v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use tandem_core::lb::ForwardMethod;
    use tandem_core::sched::{SchedulerKind, SchedulerOptions};
    use tandem_core::service::DestSpec;

    use super::*;

    fn dest(last: u8, weight: u32) -> DestSpec {
        DestSpec {
            addr: Ipv4Addr::new(172, 16, 0, last),
            port: 80,
            method: ForwardMethod::Nat,
            weight,
        }
    }

    fn vip() -> Endpoint {
        Endpoint::new(Ipv4Addr::new(203, 0, 113, 10), 80)
    }

    fn key(last: u8) -> HealthKey {
        (
            Protocol::Tcp,
            vip(),
            Endpoint::new(Ipv4Addr::new(172, 16, 0, last), 80),
        )
    }

    fn record(state: HealthState, action: HealthAction) -> Health {
        Health {
            verdict: Verdict::new(state, action, "tcp", ""),
            since_unix_ms: 1,
            changes: 1,
        }
    }

    #[test]
    fn effective_specs_quiesce_to_weight_0_and_leave_removed_servers_out() {
        let specs = vec![ServiceSpec {
            proto: Protocol::Tcp,
            vip: vip(),
            scheduler: SchedulerKind::Wrr,
            options: SchedulerOptions::default(),
            persistence: None,
            dests: vec![dest(2, 1), dest(3, 2), dest(4, 3), dest(5, 4)],
        }];
        let mut health = HealthMap::new();
        health.insert(key(2), record(HealthState::Up, HealthAction::Remove));
        health.insert(key(3), record(HealthState::Down, HealthAction::Quiesce));
        health.insert(key(4), record(HealthState::Down, HealthAction::Remove));
        // A verdict on the same server of another protocol's service does not apply.
        health.insert(
            (
                Protocol::Udp,
                vip(),
                Endpoint::new(Ipv4Addr::new(172, 16, 0, 5), 80),
            ),
            record(HealthState::Down, HealthAction::Remove),
        );
        let e = effective_specs(&specs, &health);
        assert_eq!(e[0].dests, [dest(2, 1), dest(3, 0), dest(5, 4)]);
        assert_eq!(e[0].scheduler, SchedulerKind::Wrr);
        assert_eq!(
            specs[0].dests[1].weight, 2,
            "the configuration is untouched"
        );
        assert_eq!(effect(&health, &key(9)), Effect::Configured);
        // Verdicts of servers that are gone are dropped.
        let kept = kept_for(&health, &specs);
        assert_eq!(kept.len(), 3);
        assert!(!kept.contains_key(&(
            Protocol::Udp,
            vip(),
            Endpoint::new(Ipv4Addr::new(172, 16, 0, 5), 80)
        )));
    }

    #[test]
    fn verdicts_compare_by_state_and_down_action_and_text_is_one_bounded_line() {
        let v = |s, a| Verdict::new(s, a, "http", "r");
        use HealthAction::{Quiesce, Remove};
        use HealthState::{Down, Up};
        assert!(v(Up, Quiesce).same_as(&v(Up, Remove)));
        assert!(!v(Down, Quiesce).same_as(&v(Down, Remove)));
        assert!(!v(Down, Quiesce).same_as(&v(Up, Quiesce)));
        assert!(v(Down, Remove).same_as(&Verdict::new(Down, Remove, "tcp", "other")));
        let w = Verdict::new(Down, Quiesce, " http\n", "line one\nline two\t");
        assert_eq!(
            (w.checker.as_str(), w.reason.as_str()),
            ("http", "line one line two")
        );
        let long = Verdict::new(Down, Quiesce, &"c".repeat(100), &"é".repeat(300));
        assert_eq!(long.checker.chars().count(), MAX_CHECKER_CHARS);
        assert_eq!(long.reason.chars().count(), MAX_REASON_CHARS);
        assert!(long.reason.ends_with('…'));
    }
}
