//! The connection-counting schedulers: lc, wlc, sed and nq, and the helpers lblc/lblcr share.
//!
//! All of them walk the destinations in list order and replace the current best only when
//! another is *strictly* better, so on a tie the first destination in the list wins, as in
//! the kernel's loops. Loads are compared by cross-multiplication (`h1 * w2 > h2 * w1`
//! instead of `h1 / w1 > h2 / w2`, "no floats in kernel mode"); we do it in `u128`, where the
//! kernel's `__s64` could overflow for absurd counts.

use super::DestState;

/// `a / wa > b / wb`, exactly (weights may be zero: `x / 0` compares as the cross product
/// says, which is how the kernel's loops skip weight-0 destinations implicitly).
pub(crate) fn heavier(a: u64, wa: u32, b: u64, wb: u32) -> bool {
    u128::from(a) * u128::from(wb) > u128::from(b) * u128::from(wa)
}

/// lc (`ip_vs_lc.c`): the destination with the least [`DestState::conn_overhead`]
/// (`active * 256 + inactive`), skipping weight-0 and overloaded ones.
pub(crate) fn lc(dests: &[DestState]) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if d.overloaded || d.weight == 0 {
            continue;
        }
        let doh = d.conn_overhead();
        if least.is_none_or(|(_, loh)| doh < loh) {
            least = Some((i, doh));
        }
    }
    least.map(|(i, _)| i)
}

/// The weighted-least loop shared by wlc and sed (`ip_vs_wlc_schedule`, `ip_vs_sed_schedule`,
/// and `__ip_vs_lblc_schedule` / `__ip_vs_lblcr_schedule`): the first available destination
/// (weight > 0, not overloaded) starts as the least; each later non-overloaded one replaces it
/// if `loh * weight > doh * least.weight`.
fn weighted_least(dests: &[DestState], overhead: impl Fn(&DestState) -> u64) -> Option<usize> {
    let first = dests.iter().position(|d| !d.overloaded && d.weight > 0)?;
    let mut least = first;
    let mut loh = overhead(&dests[first]);
    for (i, d) in dests.iter().enumerate().skip(first + 1) {
        if d.overloaded {
            continue;
        }
        let doh = overhead(d);
        if heavier(loh, dests[least].weight, doh, d.weight) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

/// wlc (`ip_vs_wlc.c`): minimum `conn_overhead / weight`.
pub(crate) fn wlc(dests: &[DestState]) -> Option<usize> {
    weighted_least(dests, DestState::conn_overhead)
}

/// The expected delay's numerator of sed and nq (`ip_vs_sed_dest_overhead`,
/// `ip_vs_nq_dest_overhead`): active connections plus the one being scheduled.
fn expected_overhead(d: &DestState) -> u64 {
    u64::from(d.active) + 1
}

/// sed (`ip_vs_sed.c`): minimum `(active + 1) / weight`.
pub(crate) fn sed(dests: &[DestState]) -> Option<usize> {
    weighted_least(dests, expected_overhead)
}

/// nq (`ip_vs_nq.c`): the first idle destination (`active == 0`) if any, else as sed.
pub(crate) fn nq(dests: &[DestState]) -> Option<usize> {
    let mut least: Option<(usize, u64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if d.overloaded || d.weight == 0 {
            continue;
        }
        let doh = expected_overhead(d);
        if d.active == 0 {
            return Some(i);
        }
        if least.is_none_or(|(l, loh)| heavier(loh, dests[l].weight, doh, d.weight)) {
            least = Some((i, doh));
        }
    }
    least.map(|(i, _)| i)
}

/// lblc/lblcr's "overloaded while another is at half load" (`is_overloaded` in
/// `ip_vs_lblc.c` and `ip_vs_lblcr.c`): `d.active > d.weight` and some destination of the
/// service has `active * 2 < weight`.
pub(crate) fn is_overloaded(d: &DestState, dests: &[DestState]) -> bool {
    u64::from(d.active) > u64::from(d.weight)
        && dests
            .iter()
            .any(|o| u64::from(o.active) * 2 < u64::from(o.weight))
}

/// The weighted *most* loaded of `members` (`ip_vs_dest_set_max` in `ip_vs_lblcr.c`): the
/// first with weight > 0 starts; a later one with weight > 0 replaces it if
/// `moh * weight < doh * most.weight`. Overload flags are not consulted, as in the kernel.
pub(crate) fn weighted_most<'a>(
    members: impl Iterator<Item = &'a DestState>,
) -> Option<&'a DestState> {
    let mut most: Option<&DestState> = None;
    for d in members.filter(|d| d.weight > 0) {
        if most.is_none_or(|m| heavier(d.conn_overhead(), d.weight, m.conn_overhead(), m.weight)) {
            most = Some(d);
        }
    }
    most
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::DestId;
    use std::net::Ipv4Addr;

    fn d(i: u32, weight: u32, active: u32, inactive: u32) -> DestState {
        DestState {
            active,
            inactive,
            ..DestState::new(DestId(i), Ipv4Addr::new(10, 0, 0, 1), 80, weight)
        }
    }

    #[test]
    fn lc_counts_active_as_256_inactive() {
        // overheads: A = 1*256 + 0 = 256, B = 0*256 + 255 = 255, C = 0*256 + 300 = 300.
        let dests = [d(0, 1, 1, 0), d(1, 1, 0, 255), d(2, 1, 0, 300)];
        assert_eq!(lc(&dests), Some(1));
        // B at 256 ties A: the first in the list wins.
        let dests = [d(0, 1, 1, 0), d(1, 1, 0, 256)];
        assert_eq!(lc(&dests), Some(0));
        // lc ignores the weight's size, only its being 0.
        let dests = [d(0, 100, 2, 0), d(1, 1, 1, 0), d(2, 0, 0, 0)];
        assert_eq!(lc(&dests), Some(1));
    }

    #[test]
    fn wlc_arithmetic_is_the_kernels() {
        // A: (3*256 + 10) / 2 = 778/2 = 389; B: (5*256 + 0) / 3 = 1280/3 = 426.67;
        // C: (1*256 + 200) / 1 = 456. A is least.
        let dests = [d(0, 2, 3, 10), d(1, 3, 5, 0), d(2, 1, 1, 200)];
        assert_eq!(wlc(&dests), Some(0));
        // Cross products: A vs B: 778 * 3 = 2334 > 1280 * 2 = 2560? No -> A stays.
        // Make B lighter: B = (4*256 + 0) = 1024; 778 * 3 = 2334 > 1024 * 2 = 2048 -> B.
        let dests = [d(0, 2, 3, 10), d(1, 3, 4, 0), d(2, 1, 1, 200)];
        assert_eq!(wlc(&dests), Some(1));
        // Exact tie (778/2 = 1167/3): 778 * 3 = 2334 = 1167 * 2 -> not strictly heavier, A.
        let dests = [d(0, 2, 3, 10), d(1, 3, 4, 143)];
        assert_eq!(wlc(&dests), Some(0));
        // One inactive connection fewer on B: 2334 > 1166 * 2 = 2332, so B is lighter.
        let dests = [d(0, 2, 3, 10), d(1, 3, 4, 142)];
        assert_eq!(wlc(&dests), Some(1));
    }

    #[test]
    fn wlc_skips_weight_zero_and_overloaded_even_when_idle() {
        let mut over = d(1, 5, 0, 0);
        over.overloaded = true;
        let dests = [d(0, 0, 0, 0), over, d(2, 1, 9, 9)];
        assert_eq!(wlc(&dests), Some(2));
        assert_eq!(wlc(&[d(0, 0, 0, 0)]), None);
        assert_eq!(wlc(&[]), None);
    }

    #[test]
    fn sed_uses_active_plus_one_and_ignores_inactive() {
        // A: (0+1)/1 = 1; B: (2+1)/4 = 0.75 -> B, although B has more connections.
        let dests = [d(0, 1, 0, 0), d(1, 4, 2, 1000)];
        assert_eq!(sed(&dests), Some(1));
        // A: 1/1, B: (3+1)/4 = 1 -> tie, first wins.
        let dests = [d(0, 1, 0, 0), d(1, 4, 3, 0)];
        assert_eq!(sed(&dests), Some(0));
    }

    #[test]
    fn nq_takes_the_first_idle_server_else_sed() {
        // B is idle: taken even though C (weight 100) has a lower expected delay.
        let dests = [d(0, 1, 1, 0), d(1, 1, 0, 50), d(2, 100, 0, 0)];
        assert_eq!(nq(&dests), Some(1));
        // Nobody idle: sed's rule. A: 2/1, B: 3/2 = 1.5, C: 4/2 = 2 -> B.
        let dests = [d(0, 1, 1, 0), d(1, 2, 2, 0), d(2, 2, 3, 0)];
        assert_eq!(nq(&dests), Some(1));
        // Ties in the sed stage: the first wins. A: 2/1, B: 4/2.
        let dests = [d(0, 1, 1, 0), d(1, 2, 3, 0)];
        assert_eq!(nq(&dests), Some(0));
        // An idle server with weight 0 is quiesced, not idle-first.
        let dests = [d(0, 0, 0, 0), d(1, 1, 5, 0)];
        assert_eq!(nq(&dests), Some(1));
    }

    #[test]
    fn half_load_rule() {
        // A overloaded (active 3 > weight 2); B at less than half load (1*2 < 3).
        let a = d(0, 2, 3, 0);
        let b = d(1, 3, 1, 0);
        assert!(is_overloaded(&a, &[a, b]));
        // B at exactly half load (2*2 = 4 is not < 4): nobody qualifies.
        let b = d(1, 4, 2, 0);
        assert!(!is_overloaded(&a, &[a, b]));
        // active == weight is not overloaded.
        let a = d(0, 3, 3, 0);
        assert!(!is_overloaded(&a, &[a, d(1, 10, 0, 0)]));
    }

    #[test]
    fn weighted_most_prefers_the_first_on_ties_and_skips_weight_zero() {
        let set = [d(0, 0, 100, 0), d(1, 1, 2, 0), d(2, 2, 4, 0), d(3, 1, 3, 0)];
        // overhead/weight: -, 512, 512, 768 -> D.
        assert_eq!(weighted_most(set.iter()).map(|d| d.id), Some(DestId(3)));
        let set = [d(0, 0, 100, 0), d(1, 1, 2, 0), d(2, 2, 4, 0)];
        assert_eq!(weighted_most(set.iter()).map(|d| d.id), Some(DestId(1)));
        assert_eq!(weighted_most([d(0, 0, 1, 0)].iter()), None);
    }
}
