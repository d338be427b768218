//! The overlap rule of DESIGN.md "The timing model": a CPU's TLB misses within a window of
//! `mlp_window` accesses overlap, up to `page_walkers` at a time, so a window costs its
//! longest chain of dependent latency, not the sum.
//!
//! A timing layer only (STYLE rule 11): it takes each access's *start* (the earliest cycle it
//! may begin: its issue time, or the completion of what it depends on) and *latency* (what
//! [`crate::Mmu::access`] priced), in access order, and says how far the CPU's clock moves.
//! The model, an interval model in the manner of Sniper:
//!
//! - accesses retire in order; the CPU's clock is the retire time of the last access;
//! - access *i* may not start before access *i − `mlp_window`* has retired (the window);
//! - an access that walks also needs one of `page_walkers` walkers, held from its start to
//!   its completion; TLB hits use none;
//! - completion = start + latency; retire = max(previous retire, completion).
//!
//! The cycles charged for an access are how much it moves the retire frontier. With
//! `mlp_window = 1` or a single walker serialising every miss, a burst of misses costs the
//! sum of their latencies; with `W` accesses in the window and `P` walkers, `W` independent
//! misses of latency `L` cost `⌈W / P⌉ · L`.

use sim_core::Cycles;

/// One access as the timing layer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedAccess {
    /// The earliest cycle the access may start (its issue time or its dependence).
    pub start: Cycles,
    /// Its latency as priced by the functional model.
    pub latency: Cycles,
    /// Whether it needs a page walker (a TLB miss that walked).
    pub walk: bool,
}

/// The per-CPU overlap layer.
#[derive(Debug)]
pub struct WalkOverlap {
    /// When each walker is next free.
    walker_free: Vec<Cycles>,
    /// Retire times of the last `mlp_window` accesses, a ring whose oldest is at `oldest`.
    /// Slots not yet written hold 0, which constrains no start (every start is at least 0),
    /// so a window not yet full behaves as one with fewer accesses in it.
    window: Box<[Cycles]>,
    /// Index of the oldest retire time in `window` (the slot the next access overwrites).
    oldest: usize,
    /// Retire time of the last access: the CPU's clock as charged so far.
    frontier: Cycles,
}

sim_core::clone_by_fields!(WalkOverlap { walker_free, window, oldest, frontier });

impl WalkOverlap {
    /// `page_walkers` walkers (at least 1) and a window of `mlp_window` accesses (at least 1).
    pub fn new(page_walkers: u32, mlp_window: u32) -> WalkOverlap {
        let w = usize::try_from(mlp_window.max(1)).expect("u32 fits usize");
        WalkOverlap {
            walker_free: vec![Cycles::ZERO; usize::try_from(page_walkers.max(1)).expect("fits")],
            window: vec![Cycles::ZERO; w].into_boxed_slice(),
            oldest: 0,
            frontier: Cycles::ZERO,
        }
    }

    /// The retire frontier: the clock as charged so far.
    pub const fn clock(&self) -> Cycles {
        self.frontier
    }

    /// Charge one access; returns the cycles the CPU's clock advances by. Inlined (every event
    /// of every CPU is charged here); a walk's choice of walker is out of line.
    #[inline(always)]
    pub fn charge(&mut self, a: TimedAccess) -> Cycles {
        // The access `mlp_window` back must have retired (0 while the window is not full).
        let start = a.start.max(self.window[self.oldest]);
        let done = if a.walk { self.walk_done(start, a.latency) } else { start + a.latency };
        let retire = self.frontier.max(done);
        self.window[self.oldest] = retire;
        self.oldest += 1;
        if self.oldest == self.window.len() {
            self.oldest = 0;
        }
        let charged = retire - self.frontier;
        self.frontier = retire;
        charged
    }

    /// When a walk that may start at `start` and takes `latency` completes: on the walker free
    /// first (the lowest-numbered of those free as early), which it then holds until then.
    #[inline(never)]
    fn walk_done(&mut self, start: Cycles, latency: Cycles) -> Cycles {
        let (w, free) = self
            .walker_free
            .iter()
            .copied()
            .enumerate()
            .min_by_key(|&(i, t)| (t, i))
            .expect("at least one walker");
        let done = start.max(free) + latency;
        self.walker_free[w] = done;
        done
    }

    /// Charge a sequence; returns the total.
    pub fn charge_all(&mut self, accesses: impl IntoIterator<Item = TimedAccess>) -> Cycles {
        accesses.into_iter().map(|a| self.charge(a)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miss(start: u64, lat: u64) -> TimedAccess {
        TimedAccess { start: Cycles::new(start), latency: Cycles::new(lat), walk: true }
    }

    fn hit(start: u64, lat: u64) -> TimedAccess {
        TimedAccess { start: Cycles::new(start), latency: Cycles::new(lat), walk: false }
    }

    fn burst(walkers: u32, window: u32, n: usize, lat: u64) -> u64 {
        let mut o = WalkOverlap::new(walkers, window);
        o.charge_all((0..n).map(|_| miss(0, lat))).get()
    }

    /// Eight independent misses of 100 cycles issued together: the cost moves with both fields.
    #[test]
    fn burst_of_independent_misses() {
        // One walker or a window of one: fully serial.
        assert_eq!(burst(1, 8, 8, 100), 800);
        assert_eq!(burst(8, 1, 8, 100), 800);
        // Two walkers, a wide window: pairs overlap.
        assert_eq!(burst(2, 8, 8, 100), 400);
        // Four walkers: four at a time.
        assert_eq!(burst(4, 8, 8, 100), 200);
        // Eight walkers but a window of two: two at a time.
        assert_eq!(burst(8, 2, 8, 100), 400);
        // Window of four, two walkers: walkers limit.
        assert_eq!(burst(2, 4, 8, 100), 400);
        // Everything in flight: one latency.
        assert_eq!(burst(8, 8, 8, 100), 100);
    }

    #[test]
    fn charged_per_access_and_dependence() {
        let mut o = WalkOverlap::new(2, 4);
        assert_eq!(o.charge(miss(0, 100)), Cycles::new(100));
        assert_eq!(o.charge(miss(0, 100)), Cycles::ZERO, "overlaps the first");
        assert_eq!(o.charge(miss(0, 100)), Cycles::new(100), "walkers busy until 100");
        // A dependent access starts when its producer completed (200): the chain adds up.
        assert_eq!(o.charge(miss(200, 100)), Cycles::new(100));
        assert_eq!(o.clock(), Cycles::new(300));
    }

    /// The ring agrees with the rule stated plainly: the window as a queue that fills up
    /// before it constrains anything, the walkers scanned for the earliest free.
    #[test]
    fn ring_agrees_with_a_queue_of_the_last_accesses() {
        let mut rng = sim_core::Rng::new(5);
        for (walkers, window) in [(1, 1), (2, 3), (4, 8), (3, 16)] {
            let mut o = WalkOverlap::new(walkers, window);
            let mut q = std::collections::VecDeque::new();
            let mut free = vec![0u64; walkers as usize];
            let mut frontier = 0u64;
            for i in 0..5_000u64 {
                let a = TimedAccess {
                    start: Cycles::new(i * 3 + rng.below(40)),
                    latency: Cycles::new(rng.below(300)),
                    walk: rng.chance(1, 3),
                };
                let mut start = a.start.get();
                if q.len() == window as usize {
                    start = start.max(q.pop_front().unwrap());
                }
                let done = if a.walk {
                    let w = (0..free.len()).min_by_key(|&w| (free[w], w)).unwrap();
                    free[w] = start.max(free[w]) + a.latency.get();
                    free[w]
                } else {
                    start + a.latency.get()
                };
                let retire = frontier.max(done);
                q.push_back(retire);
                let want = retire - frontier;
                frontier = retire;
                assert_eq!(
                    o.charge(a).get(),
                    want,
                    "access {i}, {walkers} walkers, window {window}"
                );
            }
        }
    }

    #[test]
    fn hits_use_no_walker_but_hold_the_window() {
        let mut o = WalkOverlap::new(1, 3);
        assert_eq!(o.charge(miss(0, 100)), Cycles::new(100));
        // A hit issued at 1 completes at 2 but retires after the miss: no extra cycles.
        assert_eq!(o.charge(hit(1, 1)), Cycles::ZERO);
        assert_eq!(o.charge(hit(2, 1)), Cycles::ZERO);
        // The window (3) is full: the 4th access waits for the 1st to retire (100).
        assert_eq!(o.charge(hit(3, 1)), Cycles::new(1));
        assert_eq!(o.clock(), Cycles::new(101));
    }
}
