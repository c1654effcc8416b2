//! The sans-IO core of the health checks: one [`Verdict`] machine per target (rise and fall
//! counts) and the [`Schedule`] of its checks (interval, jitter, one check in flight). Both
//! take `now` in nanoseconds and never read a clock.
//!
//! **Initial state.** A target starts [`Health::Unknown`]: no verdict yet, and nothing is
//! said to the dataplane, which serves a server without a verdict normally. That is
//! keepalived's default (servers start up unless `alpha`): `fall` consecutive failures make
//! it [`Health::Down`]; its first success makes it [`Health::Up`] at once (it was already
//! being served, the success only confirms it, and an `Up` verdict clears a stale `Down` a
//! previous syncd left in the dataplane). Between `Up` and `Down` the state flips only after
//! `rise` consecutive successes or `fall` consecutive failures.

/// A target's health as its checks decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Health {
    /// No verdict yet (served normally by the dataplane).
    Unknown,
    /// Healthy: served.
    Up,
    /// Failed `fall` checks in a row: quiesced or removed.
    Down,
}

impl Health {
    /// `unknown`, `up` or `down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A change of a target's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: Health,
    /// The state now.
    pub to: Health,
    /// The consecutive results of the kind that decided it (successes for `Up`, failures
    /// for `Down`).
    pub count: u32,
}

/// Rise and fall counts over one target's results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    rise: u32,
    fall: u32,
    state: Health,
    ok_run: u32,
    fail_run: u32,
}

impl Verdict {
    /// A new machine in [`Health::Unknown`]; `rise` and `fall` are at least 1 (0 is taken
    /// as 1).
    pub fn new(rise: u32, fall: u32) -> Verdict {
        Verdict {
            rise: rise.max(1),
            fall: fall.max(1),
            state: Health::Unknown,
            ok_run: 0,
            fail_run: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Consecutive successes so far (0 after a failure).
    pub fn successes(&self) -> u32 {
        self.ok_run
    }

    /// Consecutive failures so far (0 after a success).
    pub fn failures(&self) -> u32 {
        self.fail_run
    }

    /// Changes `rise`/`fall` (a configuration change); the runs and the state are kept, and
    /// the next result is judged against the new counts.
    pub fn set_counts(&mut self, rise: u32, fall: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
    }

    /// One check's result; the transition it caused, if any.
    pub fn record(&mut self, ok: bool) -> Option<Transition> {
        let from = self.state;
        if ok {
            self.fail_run = 0;
            self.ok_run = self.ok_run.saturating_add(1);
            let to_up = match from {
                Health::Unknown => true,
                Health::Down => self.ok_run >= self.rise,
                Health::Up => false,
            };
            if to_up {
                self.state = Health::Up;
                return Some(Transition {
                    from,
                    to: Health::Up,
                    count: self.ok_run,
                });
            }
        } else {
            self.ok_run = 0;
            self.fail_run = self.fail_run.saturating_add(1);
            if from != Health::Down && self.fail_run >= self.fall {
                self.state = Health::Down;
                return Some(Transition {
                    from,
                    to: Health::Down,
                    count: self.fail_run,
                });
            }
        }
        None
    }
}

/// When one target's checks run: every `interval`, each start moved by up to ±`jitter`
/// (deterministic per target, from `seed`), at most one in flight. The first check is
/// spread over the first interval by the seed, so targets added together do not all fire at
/// once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    interval: u64,
    jitter: u64,
    rng: u64,
    next: u64,
    in_flight: Option<u64>,
}

/// xorshift64*: a few bits of spread, no dependency.
fn next_rand(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

impl Schedule {
    /// A schedule starting at `now` with `interval_ns` between checks and a jitter of a
    /// tenth of it; the first check is due somewhere in `[now, now + interval)`.
    pub fn new(interval_ns: u64, seed: u64, now: u64) -> Schedule {
        let interval = interval_ns.max(1);
        // splitmix64 of the seed, so that neighbouring seeds start far apart (never 0).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let mut rng = (z ^ (z >> 31)) | 1;
        let first = next_rand(&mut rng) % interval;
        Schedule {
            interval,
            jitter: interval / 10,
            rng,
            next: now.saturating_add(first),
            in_flight: None,
        }
    }

    /// Changes the interval; the next due time is brought forward if it is now beyond one
    /// new interval.
    pub fn set_interval(&mut self, interval_ns: u64, now: u64) {
        self.interval = interval_ns.max(1);
        self.jitter = self.interval / 10;
        self.next = self.next.min(now.saturating_add(self.interval));
    }

    /// When the next check is due (meaningless while one is in flight).
    pub fn next_due(&self) -> u64 {
        self.next
    }

    /// Whether a check is running.
    pub fn in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// If a check is due at `now` and none is in flight, marks one in flight and returns
    /// `true`: the caller starts it and reports its end with [`Schedule::finish`].
    pub fn start_if_due(&mut self, now: u64) -> bool {
        if self.in_flight.is_some() || now < self.next {
            return false;
        }
        self.in_flight = Some(now);
        true
    }

    /// The check started earlier ended at `now`: the next is due one interval (± jitter)
    /// after that start, and never before `now`.
    pub fn finish(&mut self, now: u64) {
        let Some(started) = self.in_flight.take() else {
            return;
        };
        let j = if self.jitter == 0 {
            0
        } else {
            next_rand(&mut self.rng) % (2 * self.jitter + 1)
        };
        let due = started
            .saturating_add(self.interval)
            .saturating_add(j)
            .saturating_sub(self.jitter);
        self.next = due.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(v: &mut Verdict, results: &[bool]) -> Vec<Option<(Health, Health, u32)>> {
        results
            .iter()
            .map(|&ok| v.record(ok).map(|t| (t.from, t.to, t.count)))
            .collect()
    }

    #[test]
    fn fall_three_needs_three_failures_in_a_row() {
        let mut v = Verdict::new(2, 3);
        let out = run(&mut v, &[true, true, false, false]);
        assert_eq!(
            out,
            vec![Some((Health::Unknown, Health::Up, 1)), None, None, None]
        );
        assert_eq!(v.state(), Health::Up);
        assert_eq!(v.failures(), 2);
        assert_eq!(v.record(false).map(|t| t.to), Some(Health::Down));
        assert_eq!(v.state(), Health::Down);
        // More failures change nothing.
        assert_eq!(v.record(false), None);
        assert_eq!(v.failures(), 4);
    }

    #[test]
    fn a_success_resets_the_failure_run() {
        let mut v = Verdict::new(2, 3);
        let out = run(&mut v, &[true, false, false, true, false, false]);
        assert!(out[1..].iter().all(Option::is_none), "{out:?}");
        assert_eq!(v.state(), Health::Up);
        assert_eq!(
            v.record(false),
            Some(Transition {
                from: Health::Up,
                to: Health::Down,
                count: 3
            })
        );
    }

    #[test]
    fn rise_two_needs_two_successes_in_a_row() {
        let mut v = Verdict::new(2, 1);
        assert_eq!(
            v.record(false).map(|t| (t.from, t.to)),
            Some((Health::Unknown, Health::Down))
        );
        assert_eq!(run(&mut v, &[true, false, true]), vec![None, None, None]);
        assert_eq!(v.state(), Health::Down);
        assert_eq!(
            v.record(true),
            Some(Transition {
                from: Health::Down,
                to: Health::Up,
                count: 2
            })
        );
        assert_eq!(v.record(true), None);
    }

    #[test]
    fn unknown_goes_down_only_after_fall_failures() {
        let mut v = Verdict::new(1, 2);
        assert_eq!(v.record(false), None);
        assert_eq!(v.state(), Health::Unknown);
        assert_eq!(v.record(false).map(|t| t.to), Some(Health::Down));
    }

    #[test]
    fn zero_counts_are_one() {
        let mut v = Verdict::new(0, 0);
        assert_eq!(v.record(false).map(|t| t.to), Some(Health::Down));
        assert_eq!(v.record(true).map(|t| t.to), Some(Health::Up));
    }

    #[test]
    fn new_counts_apply_to_the_next_result() {
        let mut v = Verdict::new(1, 5);
        run(&mut v, &[true, false, false]);
        v.set_counts(1, 3);
        assert_eq!(
            v.record(false).map(|t| (t.to, t.count)),
            Some((Health::Down, 3))
        );
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn schedule_spreads_the_first_check_and_keeps_one_in_flight() {
        let mut s = Schedule::new(1000 * MS, 42, 5000 * MS);
        let first = s.next_due();
        assert!((5000 * MS..6000 * MS).contains(&first), "{first}");
        assert!(!s.start_if_due(first - 1));
        assert!(s.start_if_due(first));
        assert!(s.in_flight());
        // Still running: never a second one, however late.
        assert!(!s.start_if_due(first + 10_000 * MS));
        s.finish(first + 200 * MS);
        let next = s.next_due();
        assert!(
            (first + 900 * MS..=first + 1100 * MS).contains(&next),
            "next {} after {}",
            next / MS,
            first / MS
        );
        assert!(!s.in_flight());
    }

    #[test]
    fn a_check_longer_than_the_interval_is_followed_at_once_not_in_a_burst() {
        let mut s = Schedule::new(100 * MS, 7, 0);
        let t = s.next_due();
        assert!(s.start_if_due(t));
        s.finish(t + 350 * MS);
        assert_eq!(s.next_due(), t + 350 * MS);
        assert!(s.start_if_due(t + 350 * MS));
        s.finish(t + 360 * MS);
        assert!(s.next_due() >= t + 350 * MS + 90 * MS);
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let mut s = Schedule::new(1000 * MS, 99, 0);
        let mut t = s.next_due();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            assert!(s.start_if_due(t));
            s.finish(t);
            let d = s.next_due() - t;
            assert!((900 * MS..=1100 * MS).contains(&d), "{d}");
            seen.insert(d);
            t = s.next_due();
        }
        assert!(seen.len() > 50, "jitter varies: {}", seen.len());
    }

    #[test]
    fn different_seeds_spread_first_checks() {
        let firsts: std::collections::BTreeSet<u64> = (0..20)
            .map(|seed| Schedule::new(1000 * MS, seed, 0).next_due())
            .collect();
        assert!(firsts.len() >= 15, "{firsts:?}");
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// The state never changes without `rise`/`fall` consecutive results of its
            /// kind (one success from `Unknown`), and it always follows such a run.
            #[test]
            fn flips_only_after_consecutive_runs(
                rise in 1u32..6,
                fall in 1u32..6,
                results in proptest::collection::vec(any::<bool>(), 0..200),
            ) {
                let mut v = Verdict::new(rise, fall);
                for (i, &ok) in results.iter().enumerate() {
                    let before = v.state();
                    let t = v.record(ok);
                    let seen = &results[..=i];
                    let run_of = |want: bool| seen.iter().rev().take_while(|&&r| r == want).count();
                    match t {
                        Some(t) => {
                            prop_assert_eq!(t.from, before);
                            prop_assert_ne!(t.from, t.to);
                            prop_assert_eq!(v.state(), t.to);
                            match (t.from, t.to) {
                                (Health::Unknown, Health::Up) => prop_assert!(ok),
                                (Health::Down, Health::Up) => {
                                    prop_assert!(run_of(true) >= rise as usize);
                                    prop_assert_eq!(t.count, rise);
                                }
                                (_, Health::Down) => {
                                    prop_assert!(run_of(false) >= fall as usize);
                                    prop_assert_eq!(t.count, fall);
                                }
                                other => prop_assert!(false, "impossible {:?}", other),
                            }
                        }
                        None => prop_assert_eq!(v.state(), before),
                    }
                    // Liveness: a full run always decides.
                    if run_of(false) >= fall as usize {
                        prop_assert_eq!(v.state(), Health::Down);
                    }
                    if run_of(true) >= rise as usize {
                        prop_assert_eq!(v.state(), Health::Up);
                    }
                }
            }
        }
    }
}
