//! Round robin (`ip_vs_rr.c`) and weighted round robin (`ip_vs_wrr.c`, seed 000 §2.3).

use super::{DestState, position};
use crate::lb::DestId;

/// rr: the next available destination after the last one chosen, wrapping around.
#[derive(Debug, Clone)]
pub(crate) struct Rr {
    /// Index of the last destination chosen; `None` is the kernel's list head.
    cursor: Option<usize>,
    /// The destination list as of the last `update`, to follow the cursor across changes.
    ids: Vec<DestId>,
}

impl Rr {
    pub(crate) fn new(dests: &[DestState]) -> Self {
        Self {
            cursor: None,
            ids: dests.iter().map(|d| d.id).collect(),
        }
    }

    /// Keeps the cursor on the same destination; if that one was removed, on the nearest
    /// surviving one before it (`ip_vs_rr_del_dest` moves it to the previous entry), or on
    /// the list head.
    pub(crate) fn update(&mut self, dests: &[DestState]) {
        let old = std::mem::take(&mut self.ids);
        self.cursor = self
            .cursor
            .and_then(|c| old.get(..=c))
            .and_then(|before| before.iter().rev().find_map(|id| position(dests, *id)));
        self.ids = dests.iter().map(|d| d.id).collect();
    }

    /// `ip_vs_rr_schedule`: scan from after the cursor to the end, then from the start up to
    /// and including the cursor, for a destination with weight > 0 that is not overloaded.
    pub(crate) fn pick(&mut self, dests: &[DestState]) -> Option<usize> {
        let n = dests.len();
        let (from, wrap_to) = match self.cursor {
            None => (0, 0),
            Some(c) => (c + 1, (c + 1).min(n)),
        };
        let found = (from..n)
            .chain(0..wrap_to)
            .find(|&i| dests[i].is_available())?;
        self.cursor = Some(found);
        Some(found)
    }
}

/// The order of the passes in one wrr cycle.
///
/// Both orders run the kernel's gcd/max-weight machinery (`ip_vs_wrr.c`): with `di` the gcd
/// of the positive weights and `mw = max weight − (di − 1)`, a cycle is a series of passes
/// over the list with a current weight `cw` on the grid `1, 1 + di, …, mw`, each pass choosing,
/// in list order, every destination with `weight >= cw`. They differ only in which end of the
/// grid a cycle starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WrrOrder {
    /// `cw` rises from 1 to `mw`: every server first, the heaviest last. Weights 4, 3, 2 for
    /// A, B, C give `A B C A B C A B A`, the cycle seed 000 §2.3 and the product spec require.
    #[default]
    Ascending,
    /// `cw` falls from `mw` to 1, as `ip_vs_wrr_schedule` does: the heaviest first. Weights
    /// 4, 3, 2 give the kernel's `A A B A B C A B C`.
    Descending,
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// wrr's state: the kernel's `struct ip_vs_wrr_mark`.
#[derive(Debug, Clone)]
pub(crate) struct Wrr {
    order: WrrOrder,
    /// Index of the last destination chosen; `None` is the list head.
    cl: Option<usize>,
    /// Current weight.
    cw: i64,
    /// Maximum weight less `di - 1` (0: no destination has a positive weight).
    mw: i64,
    /// Step: gcd of the positive weights (1 if there are none).
    di: i64,
}

impl Wrr {
    pub(crate) fn new(order: WrrOrder, dests: &[DestState]) -> Self {
        let mut wrr = Self {
            order,
            cl: None,
            cw: 0,
            mw: 0,
            di: 1,
        };
        wrr.recompute(dests);
        wrr.cw = wrr.cycle_start();
        wrr
    }

    fn recompute(&mut self, dests: &[DestState]) {
        let positive = dests.iter().map(|d| i64::from(d.weight)).filter(|&w| w > 0);
        self.di = positive.clone().fold(0, gcd).max(1);
        self.mw = positive.max().unwrap_or(0) - (self.di - 1);
    }

    fn cycle_start(&self) -> i64 {
        match self.order {
            WrrOrder::Descending => self.mw,
            WrrOrder::Ascending => self.mw.min(1),
        }
    }

    /// `ip_vs_wrr_dest_changed`: back to the list head; `cw` restarts the cycle if it is now
    /// out of range, else snaps to the new grid (`(cw / di) * di + 1`).
    pub(crate) fn update(&mut self, dests: &[DestState]) {
        self.cl = None;
        self.recompute(dests);
        if self.cw > self.mw || self.cw == 0 {
            self.cw = self.cycle_start();
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }

    /// `ip_vs_wrr_schedule`: continue after the last choice with the current `cw`; at the end
    /// of the list, start the next pass from the head.
    ///
    /// One addition keeps the hot path bounded: passes whose `cw` exceeds the largest weight
    /// of any available destination would choose nothing (the kernel walks through them one
    /// by one, up to `mw / di` passes when the heaviest servers are overloaded), so we skip
    /// straight to the next pass that can choose. The sequence is the kernel's.
    pub(crate) fn pick(&mut self, dests: &[DestState]) -> Option<usize> {
        if self.mw <= 0 {
            return None;
        }
        let top = dests
            .iter()
            .filter(|d| d.is_available())
            .map(|d| i64::from(d.weight))
            .max()?;
        let mut from = self.cl.map_or(0, |c| c + 1);
        // A partial pass from the cursor, then at most one skip to a pass with cw <= top,
        // which a full pass from the head always satisfies. Four is a safe bound even if
        // the weights changed without `update`.
        for _ in 0..4 {
            let cw = self.cw;
            let hit = (from..dests.len())
                .find(|&i| dests[i].is_available() && i64::from(dests[i].weight) >= cw);
            if let Some(i) = hit {
                self.cl = Some(i);
                return Some(i);
            }
            from = 0;
            self.next_pass(top);
        }
        None
    }

    fn next_pass(&mut self, top: i64) {
        match self.order {
            WrrOrder::Descending => {
                self.cw -= self.di;
                if self.cw <= 0 {
                    self.cw = self.mw;
                }
                if self.cw > top {
                    let passes = (self.cw - top + self.di - 1) / self.di;
                    self.cw = (self.cw - passes * self.di).max(1);
                }
            }
            WrrOrder::Ascending => {
                self.cw += self.di;
                if self.cw > self.mw || self.cw > top {
                    self.cw = 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn dests(weights: &[u32]) -> Vec<DestState> {
        weights
            .iter()
            .zip(0u32..)
            .map(|(&w, i)| DestState::new(DestId(i), Ipv4Addr::from(0x0A00_0001 + i), 80, w))
            .collect()
    }

    fn letters(picks: &[Option<usize>]) -> String {
        picks
            .iter()
            .map(|p| p.map_or('-', |i| char::from(b'A' + u8::try_from(i).unwrap())))
            .collect()
    }

    fn run_rr(rr: &mut Rr, d: &[DestState], n: usize) -> String {
        letters(&(0..n).map(|_| rr.pick(d)).collect::<Vec<_>>())
    }

    fn run_wrr(wrr: &mut Wrr, d: &[DestState], n: usize) -> String {
        letters(&(0..n).map(|_| wrr.pick(d)).collect::<Vec<_>>())
    }

    #[test]
    fn rr_cycles_and_skips_quiesced_and_overloaded() {
        let mut d = dests(&[1, 0, 1, 1]);
        let mut rr = Rr::new(&d);
        assert_eq!(run_rr(&mut rr, &d, 6), "ACDACD");
        d[3].overloaded = true;
        assert_eq!(run_rr(&mut rr, &d, 4), "ACAC");
        // Weight is otherwise irrelevant to rr.
        let d = dests(&[5, 1]);
        let mut rr = Rr::new(&d);
        assert_eq!(run_rr(&mut rr, &d, 4), "ABAB");
    }

    #[test]
    fn rr_with_one_available_server_returns_it_every_time() {
        let d = dests(&[0, 1, 0]);
        let mut rr = Rr::new(&d);
        assert_eq!(run_rr(&mut rr, &d, 3), "BBB");
        let d = dests(&[0, 0]);
        assert_eq!(run_rr(&mut Rr::new(&d), &d, 2), "--");
        assert_eq!(run_rr(&mut Rr::new(&[]), &[], 1), "-");
    }

    #[test]
    fn rr_cursor_follows_removals_like_ip_vs_rr_del_dest() {
        let d = dests(&[1, 1, 1, 1]);
        let mut rr = Rr::new(&d);
        assert_eq!(run_rr(&mut rr, &d, 2), "AB");
        // Remove B (the cursor): the cursor moves back to A, so C comes next.
        let without_b: Vec<_> = d.iter().copied().filter(|x| x.id != DestId(1)).collect();
        rr.update(&without_b);
        assert_eq!(
            rr.pick(&without_b).map(|i| without_b[i].id),
            Some(DestId(2))
        );
        // Remove the first entry while the cursor is on it: back to the head.
        let mut rr = Rr::new(&d);
        rr.pick(&d);
        let tail = d[1..].to_vec();
        rr.update(&tail);
        assert_eq!(rr.pick(&tail).map(|i| tail[i].id), Some(DestId(1)));
        // Additions do not move the cursor.
        let mut rr = Rr::new(&d[..2]);
        rr.pick(&d[..2]);
        rr.update(&d);
        assert_eq!(run_rr(&mut rr, &d, 4), "BCDA");
    }

    #[test]
    fn wrr_seed_000_cycle_abcabcaba() {
        // Seed 000 §2.3: A, B, C with weights 4, 3, 2 -> "ABCABCABA" per cycle.
        let d = dests(&[4, 3, 2]);
        let mut wrr = Wrr::new(WrrOrder::Ascending, &d);
        assert_eq!(run_wrr(&mut wrr, &d, 27), "ABCABCABA".repeat(3));
    }

    #[test]
    fn wrr_kernel_order_aababcabc() {
        let d = dests(&[4, 3, 2]);
        let mut wrr = Wrr::new(WrrOrder::Descending, &d);
        assert_eq!(run_wrr(&mut wrr, &d, 27), "AABABCABC".repeat(3));
    }

    #[test]
    fn wrr_gcd_steps_and_the_di_minus_one_correction() {
        // 4, 2: di = 2, mw = 4 - 1 = 3; passes cw = 1, 3 (ascending) or 3, 1 (descending).
        let d = dests(&[4, 2]);
        assert_eq!(
            run_wrr(&mut Wrr::new(WrrOrder::Ascending, &d), &d, 6),
            "ABAABA"
        );
        assert_eq!(
            run_wrr(&mut Wrr::new(WrrOrder::Descending, &d), &d, 6),
            "AABAAB"
        );
        // 6, 3, 3: di = 3, mw = 4; passes 1, 4.
        let d = dests(&[6, 3, 3]);
        assert_eq!(
            run_wrr(&mut Wrr::new(WrrOrder::Ascending, &d), &d, 8),
            "ABCAABCA"
        );
    }

    #[test]
    fn wrr_skips_quiesced_and_overloaded() {
        let mut d = dests(&[4, 3, 0, 2]);
        assert_eq!(
            run_wrr(&mut Wrr::new(WrrOrder::Ascending, &d), &d, 9),
            "ABDABDABA"
        );
        d[1].overloaded = true;
        assert_eq!(
            run_wrr(&mut Wrr::new(WrrOrder::Ascending, &d), &d, 6),
            "ADADAA"
        );
        assert_eq!(
            run_wrr(&mut Wrr::new(WrrOrder::Descending, &d), &d, 6),
            "AAADAD"
        );
        let d = dests(&[0, 0]);
        assert_eq!(run_wrr(&mut Wrr::new(WrrOrder::Ascending, &d), &d, 2), "--");
    }

    #[test]
    fn wrr_skips_empty_passes_when_the_heaviest_is_overloaded() {
        let mut d = dests(&[1_000_000, 1]);
        d[0].overloaded = true;
        for order in [WrrOrder::Ascending, WrrOrder::Descending] {
            let mut wrr = Wrr::new(order, &d);
            assert_eq!(run_wrr(&mut wrr, &d, 3), "BBB");
        }
    }

    #[test]
    fn wrr_weight_change_resets_to_the_head_as_ip_vs_wrr_dest_changed() {
        let d = dests(&[4, 3, 2]);
        let mut wrr = Wrr::new(WrrOrder::Ascending, &d);
        assert_eq!(run_wrr(&mut wrr, &d, 4), "ABCA"); // now in the cw = 2 pass, after A
        wrr.update(&d);
        // Back to the head with cw = 2: the cw = 2 pass runs again from A.
        assert_eq!(run_wrr(&mut wrr, &d, 9), "ABCABAABC");

        // Kernel order, a weight drop below cw: cw > mw restarts the cycle at the new mw.
        let mut wrr = Wrr::new(WrrOrder::Descending, &d);
        assert_eq!(run_wrr(&mut wrr, &d, 1), "A"); // cw = 4
        let lighter = dests(&[2, 2, 2]);
        wrr.update(&lighter);
        assert_eq!(run_wrr(&mut wrr, &lighter, 6), "ABCABC");

        // A new gcd: cw snaps onto the grid (cw / di) * di + 1.
        let d = dests(&[6, 4, 2]);
        let mut wrr = Wrr::new(WrrOrder::Descending, &d); // di 2, mw 5: passes 5, 3, 1
        assert_eq!(run_wrr(&mut wrr, &d, 3), "AAB"); // cw = 3 after B
        let d2 = dests(&[8, 4, 4]); // di 4, mw 5: cw 3 -> (3 / 4) * 4 + 1 = 1
        wrr.update(&d2);
        assert_eq!(wrr.cw, 1);
        assert_eq!(run_wrr(&mut wrr, &d2, 4), "ABCA");
    }

    /// The kernel's cycle, built directly from its definition: the passes of the grid
    /// `mw, mw - di, …` (or its reverse), each choosing every destination with
    /// weight >= cw in list order.
    fn reference_cycle(weights: &[u32], order: WrrOrder) -> String {
        let positive: Vec<i64> = weights
            .iter()
            .map(|&w| i64::from(w))
            .filter(|&w| w > 0)
            .collect();
        let di = positive.iter().copied().fold(0, gcd).max(1);
        let mw = positive.iter().copied().max().unwrap_or(0) - (di - 1);
        let mut passes: Vec<i64> = (0..)
            .map(|j| mw - j * di)
            .take_while(|&cw| cw >= 1)
            .collect();
        if order == WrrOrder::Ascending {
            passes.reverse();
        }
        let mut cycle = String::new();
        for cw in passes {
            for (i, &w) in weights.iter().enumerate() {
                if i64::from(w) >= cw {
                    cycle.push(char::from(b'A' + u8::try_from(i).unwrap()));
                }
            }
        }
        cycle
    }

    #[test]
    fn wrr_matches_the_reference_cycle_for_many_weight_sets() {
        let sets: &[&[u32]] = &[
            &[1],
            &[1, 1, 1],
            &[5, 1],
            &[1, 5],
            &[3, 0, 3, 6],
            &[2, 4, 6, 8],
            &[7, 5, 3, 1],
            &[10, 10, 5],
            &[100, 1, 50],
            &[9, 6, 3, 0, 12],
        ];
        for weights in sets {
            for order in [WrrOrder::Ascending, WrrOrder::Descending] {
                let d = dests(weights);
                let cycle = reference_cycle(weights, order);
                let mut wrr = Wrr::new(order, &d);
                let got = run_wrr(&mut wrr, &d, cycle.len() * 3);
                assert_eq!(got, cycle.repeat(3), "weights {weights:?} {order:?}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn wrr_matches_the_reference_cycle(
            weights in proptest::collection::vec(0u32..12, 1..7),
            descending: bool,
        ) {
            let order = if descending { WrrOrder::Descending } else { WrrOrder::Ascending };
            let d = dests(&weights);
            let cycle = reference_cycle(&weights, order);
            let mut wrr = Wrr::new(order, &d);
            let got = run_wrr(&mut wrr, &d, cycle.len().max(1) * 3);
            let want = if cycle.is_empty() { "---".to_string() } else { cycle.repeat(3) };
            proptest::prop_assert_eq!(got, want);
        }
    }
}
