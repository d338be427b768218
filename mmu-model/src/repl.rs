//! Replacement policies of set-associative translation structures (TLB arrays, paging-structure
//! caches): true LRU, tree pseudo-LRU, and seeded random through [`sim_core::Rng`].

use serde::{Deserialize, Serialize};
use sim_core::Rng;

/// How a full set picks its victim. Invalid ways are always filled first (lowest way first).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Replacement {
    /// True LRU: the way used longest ago (a per-structure use counter; ties impossible).
    #[default]
    Lru,
    /// Tree pseudo-LRU: a binary tree of `ways − 1` bits per set over the ways rounded up to a
    /// power of two. A use sets every bit on its path to point away from it; the victim is
    /// found by following the bits from the root (bit 0 = left), never into a subtree that has
    /// no real way. At most 64 ways.
    TreePlru,
    /// Uniformly random among the ways, drawn from a [`sim_core::Rng`] seeded from
    /// `mmu.replacement_seed` (per CPU and structure, so runs are reproducible).
    Random,
}

/// Most ways a tree-PLRU set may have (one `u64` of tree bits per set).
pub const MAX_PLRU_WAYS: u32 = 64;

/// Replacement state of one structure: `sets` × `ways`.
///
/// True LRU keeps, per set, a doubly linked recency list over the ways (most recent at the
/// head), so a use and a victim choice are O(1) even for a 72-way fully associative TLB; the
/// victim is the tail. Ways never used sit at the tail in index order, so the victim among
/// them is the lowest-numbered one — the same choice as "smallest last-use stamp, lowest way
/// on ties".
#[derive(Debug)]
pub(crate) struct ReplState {
    policy: Replacement,
    sets: usize,
    ways: usize,
    /// Leaves of the PLRU tree (ways rounded up to a power of two).
    leaves: usize,
    /// Last-use stamp per slot (kept for every policy, to compare victims across arrays).
    stamps: Vec<u64>,
    /// Tree bits per set (tree-PLRU).
    tree: Vec<u64>,
    /// LRU lists: per slot (the next-older way, the next-newer way); per set (head = MRU,
    /// tail = LRU). `u32::MAX`: none.
    links: Vec<(u32, u32)>,
    ends: Vec<(u32, u32)>,
    clock: u64,
    rng: Rng,
}

sim_core::clone_by_fields!(ReplState {
    policy,
    sets,
    ways,
    leaves,
    stamps,
    tree,
    links,
    ends,
    clock,
    rng
});

impl ReplState {
    pub fn new(policy: Replacement, sets: usize, ways: usize, rng: Rng) -> ReplState {
        let mut r = ReplState::new_lazy(policy, sets, ways, rng);
        r.allocate();
        r
    }

    /// [`ReplState::new`] without its per-set and per-slot storage, which [`ReplState::allocate`]
    /// adds (until then nothing may be touched or chosen). For structures that allocate their
    /// slots on first use (the TLB arrays).
    pub fn new_lazy(policy: Replacement, sets: usize, ways: usize, rng: Rng) -> ReplState {
        ReplState {
            policy,
            sets,
            ways,
            leaves: ways.next_power_of_two(),
            stamps: Vec::new(),
            tree: Vec::new(),
            links: Vec::new(),
            ends: Vec::new(),
            clock: 0,
            rng,
        }
    }

    /// Add the storage of a [`ReplState::new_lazy`] state, in the initial state [`ReplState::new`]
    /// gives (nothing is drawn from the random stream). Does nothing if it is there already.
    pub fn allocate(&mut self) {
        if !self.stamps.is_empty() || self.sets * self.ways == 0 {
            return;
        }
        let (sets, ways) = (self.sets, self.ways);
        if self.policy == Replacement::TreePlru {
            self.tree = vec![0; sets];
        }
        if self.policy == Replacement::Lru {
            // Initial order: way 0 oldest (tail) … way ways-1 newest (head).
            let w = u32::try_from(ways).expect("ways fit u32");
            let (mut links, mut ends) = (Vec::with_capacity(sets * ways), Vec::with_capacity(sets));
            for _ in 0..sets {
                for i in 0..w {
                    // Way 0 has no older way (u32::MAX), the last no newer one.
                    links.push((i.wrapping_sub(1), if i + 1 == w { u32::MAX } else { i + 1 }));
                }
                ends.push((w.saturating_sub(1), 0));
            }
            (self.links, self.ends) = (links, ends);
        }
        self.stamps = vec![0; sets * ways];
    }

    /// Move `way` to the head of `set`'s recency list.
    #[inline(always)]
    fn lru_promote(&mut self, set: usize, way: usize) {
        let w = u32::try_from(way).expect("ways fit u32");
        let (head, _) = self.ends[set];
        if head == w {
            return;
        }
        let base = set * self.ways;
        let links = &mut self.links[base..base + self.ways];
        let (o, n) = links[way];
        // Unlink (n exists: way is not the head).
        links[n as usize].0 = o;
        if o == u32::MAX {
            self.ends[set].1 = n;
        } else {
            links[o as usize].1 = n;
        }
        // Link at the head.
        links[head as usize].1 = w;
        links[way] = (head, u32::MAX);
        self.ends[set].0 = w;
    }

    /// Record a use (hit or fill) of `way` in `set`.
    pub fn touch(&mut self, set: usize, way: usize) {
        self.clock += 1;
        let stamp = self.clock;
        self.touch_stamped(set, way, stamp);
    }

    /// [`ReplState::touch`] with a stamp from a counter shared with other structures (so that
    /// the victims of several arrays can be compared by age). Stamps must increase.
    #[inline(always)]
    pub fn touch_stamped(&mut self, set: usize, way: usize, stamp: u64) {
        self.stamps[set * self.ways + way] = stamp;
        match self.policy {
            Replacement::Lru => self.lru_promote(set, way),
            Replacement::TreePlru => self.plru_touch(set, way),
            Replacement::Random => {}
        }
    }

    /// Point every tree bit on `way`'s path away from it.
    fn plru_touch(&mut self, set: usize, way: usize) {
        let bits = &mut self.tree[set];
        // Walk from the root: node n has children 2n+1, 2n+2; leaves cover [lo, hi).
        let (mut node, mut lo, mut hi) = (0usize, 0usize, self.leaves);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if way < mid {
                *bits |= 1 << node; // used left: point right
                node = 2 * node + 1;
                hi = mid;
            } else {
                *bits &= !(1 << node); // used right: point left
                node = 2 * node + 2;
                lo = mid;
            }
        }
    }

    /// The way to replace in a full `set`.
    #[inline(always)]
    pub fn victim(&mut self, set: usize) -> usize {
        match self.policy {
            Replacement::Lru => self.ends[set].1 as usize,
            Replacement::TreePlru | Replacement::Random => self.victim_other(set),
        }
    }

    /// [`ReplState::victim`] for the policies other than LRU (kept out of line).
    #[inline(never)]
    fn victim_other(&mut self, set: usize) -> usize {
        match self.policy {
            Replacement::Lru => self.ends[set].1 as usize,
            Replacement::TreePlru => {
                let bits = self.tree[set];
                let (mut node, mut lo, mut hi) = (0usize, 0usize, self.leaves);
                while hi - lo > 1 {
                    let mid = (lo + hi) / 2;
                    // The right half may hold no real way when ways is not a power of two.
                    let right = bits >> node & 1 == 1 && mid < self.ways;
                    if right {
                        node = 2 * node + 2;
                        lo = mid;
                    } else {
                        node = 2 * node + 1;
                        hi = mid;
                    }
                }
                lo
            }
            Replacement::Random => {
                let w = self.rng.below(self.ways as u64);
                usize::try_from(w).expect("below ways")
            }
        }
    }

    /// The last-use stamp of a slot (0 = never used).
    #[inline]
    pub fn stamp(&self, set: usize, way: usize) -> u64 {
        self.stamps[set * self.ways + way]
    }
}

/// True LRU for sets of at most 64 ways (the data caches), as one recency rank per way: one
/// byte per way, 0 = most recently used … `ways − 1` = least, in an array of `W` bytes kept in
/// the cache's per-set record (lanes past the last way hold [`RANK_PAD`]).
///
/// Why not [`ReplState`]: its recency list costs 8 bytes per way plus an 8-byte stamp that only
/// the TLBs need (to compare victims across arrays), which for a 32 MiB LLC is 8 MiB of
/// replacement state the host has to miss on. Ranks cost one byte per way, and a use or a
/// victim choice is one pass over `W` bytes, which the compiler vectorizes. It makes exactly
/// the choices of [`ReplState`]'s LRU: ways never used rank oldest in index order (way 0 is
/// the first victim).
///
/// The ranks of one set with `ways` ways (`ways ≤ W ≤ 64`): way 0 least recently used … way
/// `ways − 1` most.
///
/// # Panics
/// If `ways` is 0 or above `W`.
pub(crate) fn rank_init<const W: usize>(ways: usize) -> [u8; W] {
    assert!(
        (1..=W).contains(&ways) && W <= 64 && W.is_multiple_of(8),
        "1..=W ways, W a multiple of 8 up to 64"
    );
    let mut rank = [RANK_PAD; W];
    for (w, r) in rank.iter_mut().take(ways).enumerate() {
        *r = u8::try_from(ways - 1 - w).expect("below 64");
    }
    rank
}

/// The rank of a lane past the last way: above every real rank (never ages, never a victim).
pub(crate) const RANK_PAD: u8 = 0x7f;

/// Record a use of `way`: it becomes rank 0, and every way used more recently than it (a
/// smaller rank) ages by one.
#[inline(always)]
pub(crate) fn rank_touch<const W: usize>(rank: &mut [u8; W], way: usize) {
    let way = way % W;
    let r = rank[way];
    for x in rank.iter_mut() {
        *x += u8::from(*x < r);
    }
    rank[way] = 0;
}

/// The least recently used of `ways` ways (the one ranked `ways − 1`).
#[inline(always)]
pub(crate) fn rank_victim<const W: usize>(rank: &[u8; W], ways: usize) -> usize {
    #[allow(clippy::cast_possible_truncation)] // ways ≤ 64
    let oldest = (ways - 1) as u8;
    debug_assert!(
        rank.iter().filter(|&&x| x == oldest).count() == 1,
        "the ranks of a set are a permutation of 0..ways"
    );
    // Eight lanes per word (SWAR): lanes equal to `oldest` become zero, and
    // (x − 0x01…) & !x & 0x80… flags the lowest zero byte exactly (a borrow can only flag bytes
    // above a real zero). Every rank and the padding is below 0x80, so no lane borrows into
    // the next unless it was zero.
    let want = u64::from(oldest) * LANES_LO;
    for (i, chunk) in rank.as_chunks::<8>().0.iter().enumerate() {
        let x = u64::from_le_bytes(*chunk) ^ want;
        let zero = x.wrapping_sub(LANES_LO) & !x & LANES_HI;
        if zero != 0 {
            return i * 8 + zero.trailing_zeros() as usize / 8;
        }
    }
    unreachable!("the ranks of a set are a permutation of 0..ways")
}

/// The byte 0x01 in every lane of a word.
const LANES_LO: u64 = 0x0101_0101_0101_0101;
/// The byte 0x80 in every lane of a word.
const LANES_HI: u64 = 0x8080_8080_8080_8080;

#[cfg(test)]
mod tests {
    use super::*;

    fn plru(ways: usize) -> ReplState {
        ReplState::new(Replacement::TreePlru, 1, ways, Rng::new(0))
    }

    /// Hand-computed 4-way tree-PLRU: nodes b0 (root), b1 (ways 0–1), b2 (ways 2–3).
    #[test]
    fn tree_plru_4way_by_hand() {
        let mut r = plru(4);
        // All bits 0: left, left → way 0.
        assert_eq!(r.victim(0), 0);
        r.touch(0, 0); // b0=1 (go right), b1=1
        assert_eq!(r.victim(0), 2); // right, b2=0 → left → way 2
        r.touch(0, 2); // b0=0, b2=1
        assert_eq!(r.victim(0), 1); // left, b1=1 → way 1
        r.touch(0, 1); // b0=1, b1=0
        assert_eq!(r.victim(0), 3); // right, b2=1 → way 3
        r.touch(0, 3); // b0=0, b2=0
        assert_eq!(r.victim(0), 0); // left, b1=0 → way 0
        // The classic PLRU anomaly: after 0,1,2,3,0 the victim is 2, not LRU's 1.
        let mut r = plru(4);
        for w in [0, 1, 2, 3, 0] {
            r.touch(0, w);
        }
        // b0=1 (last touched 0 → right), b1=1 (0 left of 1 → right), b2=0 (3 → left).
        assert_eq!(r.victim(0), 2);
    }

    /// 3 ways: a tree over 4 leaves, leaf 3 does not exist and is never chosen.
    #[test]
    fn tree_plru_3way_skips_missing_leaf() {
        let mut r = plru(3);
        r.touch(0, 0); // b0=1, b1=1
        r.touch(0, 1); // b0=1, b1=0
        assert_eq!(r.victim(0), 2); // right half: b2=0 → way 2
        r.touch(0, 2); // b0=0, b2=1 (points at the missing way 3)
        assert_eq!(r.victim(0), 0); // left, b1=0 → way 0
        r.touch(0, 0); // b0=1, b1=1
        // Root: right (b0=1, and the right half holds way 2). Then b2=1 points at the
        // missing way 3, so the walk turns left: way 2.
        assert_eq!(r.victim(0), 2);
        for _ in 0..50 {
            let v = r.victim(0);
            assert!(v < 3);
            r.touch(0, v);
        }
    }

    proptest::proptest! {
        /// The O(1) list picks what "smallest stamp, lowest way on ties" picks.
        #[test]
        fn lru_list_matches_stamps(ways in 1usize..20, touches in proptest::collection::vec(0usize..20, 0..80)) {
            let mut r = ReplState::new(Replacement::Lru, 1, ways, Rng::new(0));
            for t in touches {
                let w = t % ways;
                r.touch(0, w);
                let by_stamp = (0..ways).min_by_key(|&x| r.stamp(0, x)).unwrap();
                proptest::prop_assert_eq!(r.victim(0), by_stamp);
            }
        }
    }

    proptest::proptest! {
        /// Byte ranks choose exactly what the recency list chooses, for any way count.
        #[test]
        fn rank_lru_matches_list(ways in 1usize..=64, touches in proptest::collection::vec(0usize..64, 0..200)) {
            let mut list = ReplState::new(Replacement::Lru, 1, ways, Rng::new(0));
            let mut wide = rank_init::<64>(ways);
            let mut narrow = (ways <= 8).then(|| rank_init::<8>(ways));
            proptest::prop_assert_eq!(rank_victim(&wide, ways), list.victim(0));
            for t in touches {
                let w = t % ways;
                list.touch(0, w);
                rank_touch(&mut wide, w);
                proptest::prop_assert_eq!(rank_victim(&wide, ways), list.victim(0));
                if let Some(n) = &mut narrow {
                    rank_touch(n, w);
                    proptest::prop_assert_eq!(rank_victim(n, ways), list.victim(0));
                }
            }
            proptest::prop_assert!(wide[ways..].iter().all(|&p| p == RANK_PAD), "padding never ages");
        }
    }

    #[test]
    fn lru_and_random() {
        let mut r = ReplState::new(Replacement::Lru, 2, 3, Rng::new(0));
        r.touch(1, 2);
        r.touch(1, 0);
        assert_eq!(r.victim(1), 1, "never used");
        r.touch(1, 1);
        assert_eq!(r.victim(1), 2);
        assert_eq!(r.victim(0), 0);
        let draws = |seed| {
            let mut r = ReplState::new(Replacement::Random, 1, 8, Rng::new(seed));
            (0..16).map(|_| r.victim(0)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7), "seeded: reproducible");
        assert_ne!(draws(7), draws(8));
        assert!(draws(7).iter().all(|w| *w < 8));
    }
}
