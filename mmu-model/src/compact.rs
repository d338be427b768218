//! The set store of a large LRU cache of at most 16 ways (a last-level cache): 32 bytes of state
//! per set that every reference reads, and the whole tags beside them, read only to confirm a
//! candidate and to name an evicted line.
//!
//! Why: a reference that misses the L2 reads one LLC set to look the line up and writes
//! another to take the L2's victim, both at addresses the host cannot predict. With the
//! general record ([`crate::cache`]'s `Set`, 192 bytes for 16 ways) a 32 MiB LLC is 6 MiB of
//! simulator state, more than the host's L2, and each of those reads waits on the host's
//! L3. Measured on issue #4's `snp-churn` case, the same instructions ran 12 % faster with a
//! 4,096-set LLC model (768 KiB of records; docs/performance.md "Issue #4, sixth pass"). Here
//! the 32,768 sets are 1 MiB of hot state.
//!
//! The choices are exactly those of the general record under LRU ([`crate::repl::rank_touch`],
//! [`crate::repl::rank_victim`]): the lowest empty way is filled first, else the least recently
//! used way; an emptied way keeps its place in the recency order. The property test
//! `compact_sets_match_the_general_record` in `cache.rs` runs both on the same operations.

/// Ways a compact set holds at most (one 4-bit lane each in [`CompactSet::order`]).
pub(crate) const COMPACT_WAYS: usize = 16;

/// The 4-bit lane value 1 in every lane of a word.
const NIBBLES_LO: u64 = 0x1111_1111_1111_1111;
/// The top bit of every 4-bit lane of a word.
const NIBBLES_HI: u64 = 0x8888_8888_8888_8888;
/// The byte 0x01 in every lane of a 16-byte word.
const BYTES_LO: u128 = 0x0101_0101_0101_0101_0101_0101_0101_0101;
/// The low seven bits of every byte of a 16-byte word.
const BYTES_LOW7: u128 = 0x7f7f_7f7f_7f7f_7f7f_7f7f_7f7f_7f7f_7f7f;

/// The state of one set that every lookup and fill reads: 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(32))]
pub(crate) struct CompactSet {
    /// An 8-bit hash of each way's tag ([`partial_tag`]); meaningless for an empty way.
    ptag: [u8; COMPACT_WAYS],
    /// The ways in recency order, one per 4-bit lane: lane 0 the most recently used, lane
    /// `ways − 1` the least. Lanes past the last way hold 0xF (never a way: a set of 16 ways
    /// has no such lane).
    order: u64,
    /// Bit `w` set iff way `w` holds a line.
    valid: u16,
    /// Bit `w` set iff way `w`'s line is dirty.
    dirty: u16,
    /// The filler class of way `w` (its `RefClass` index, below 4) in bits `2w..2w+2`.
    class: u32,
}

/// The compact sets of one cache.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CompactSets {
    /// One record per set.
    hot: Vec<CompactSet>,
    /// The whole tag of each way, [`COMPACT_WAYS`] per set; meaningless for an empty way. A
    /// compact cache's tags are below 2^32 ([`CompactSets::fits`]).
    tags: Vec<u32>,
    /// Ways per set (1..=16).
    ways: usize,
    /// Bit `w` set for every way `w` of a set.
    all_ways: u16,
}

// A restore (the race explorer's, once per schedule) copies into the arrays already there.
sim_core::clone_by_fields!(CompactSets { hot, tags, ways, all_ways });

/// What a way held when it was emptied or evicted: its tag, dirty bit and class index.
pub(crate) struct Taken {
    pub tag: u64,
    pub dirty: bool,
    pub class: u8,
}

/// The 8-bit hash a set keeps of a tag: the top byte of a multiplicative hash, so that tags
/// that differ only in high bits (lines one LLC-size stride apart) still differ here.
#[inline(always)]
#[allow(clippy::cast_possible_truncation)] // the top byte, by design
fn partial_tag(tag: u64) -> u8 {
    (tag.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// Bit 8i + 7 set iff byte `i` of `x` is zero, every other bit clear (SWAR, exact for every
/// byte: the low seven bits of each are added without carrying into its top bit).
#[inline(always)]
fn zero_bytes(x: u128) -> u128 {
    let y = ((x & BYTES_LOW7) + BYTES_LOW7) | x;
    !y & !BYTES_LOW7
}

impl CompactSet {
    /// An empty set of `ways` ways, its recency order that of [`crate::repl::rank_init`]: way
    /// `ways − 1` most recently used, way 0 least.
    fn empty(ways: usize) -> CompactSet {
        let mut order = u64::MAX;
        for pos in 0..ways {
            order = with_lane(order, pos, (ways - 1 - pos) as u64);
        }
        CompactSet { ptag: [0; COMPACT_WAYS], order, valid: 0, dirty: 0, class: 0 }
    }

    /// The ways whose partial tag is `p`, valid or not: way `w` as bit 8w + 7.
    #[inline(always)]
    fn candidates(&self, p: u8) -> u128 {
        zero_bytes(u128::from_le_bytes(self.ptag) ^ (u128::from(p) * BYTES_LO))
    }

    /// Make way `w` the most recently used.
    #[inline(always)]
    fn touch(&mut self, w: usize) {
        // The lowest lane equal to `w` (there is exactly one): lanes equal to it become zero,
        // and (x − 0x1…) & !x & 0x8… flags the lowest zero lane exactly (a borrow only
        // flags lanes above a real zero).
        let x = self.order ^ (w as u64 * NIBBLES_LO);
        let pos = (x.wrapping_sub(NIBBLES_LO) & !x & NIBBLES_HI).trailing_zeros() as usize / 4;
        if pos == 0 {
            return;
        }
        // Lanes below `pos` move up one; `w` goes to lane 0; lanes above stay.
        let below = (1u64 << (4 * pos)) - 1;
        let through = below | 0xf << (4 * pos);
        self.order = (self.order & !through) | (self.order & below) << 4 | w as u64;
    }

    /// What way `w`, whose tag is `tag`, holds: the tag with the way's dirty bit and class.
    #[inline(always)]
    fn taken(&self, w: usize, tag: u64) -> Taken {
        Taken {
            tag,
            dirty: self.dirty >> w & 1 != 0,
            #[allow(clippy::cast_possible_truncation)] // two bits
            class: (self.class >> (2 * w) & 3) as u8,
        }
    }
}

/// `order` with 4-bit lane `pos` set to `v`.
fn with_lane(order: u64, pos: usize, v: u64) -> u64 {
    order & !(0xf << (4 * pos)) | v << (4 * pos)
}

/// A tag of a compact cache as stored.
#[inline(always)]
fn narrow(tag: u64) -> u32 {
    u32::try_from(tag).expect("a compact cache's tags are below 2^32")
}

impl CompactSets {
    /// Whether a cache whose line address drops `index_bits` bits (the line offset and the set
    /// index) has tags below 2^32, as a compact cache must: physical addresses are below
    /// 2^[`sim_core::addr::MAX_PHYS_BITS`].
    pub fn fits(index_bits: u32) -> bool {
        sim_core::addr::MAX_PHYS_BITS.saturating_sub(index_bits) <= 32
    }

    /// `sets` empty sets of `ways` ways.
    ///
    /// # Panics
    /// If `ways` is 0 or above [`COMPACT_WAYS`].
    pub fn new(ways: usize, sets: usize) -> CompactSets {
        assert!((1..=COMPACT_WAYS).contains(&ways), "1..=16 ways");
        CompactSets {
            hot: vec![CompactSet::empty(ways); sets],
            tags: vec![0; sets * COMPACT_WAYS],
            ways,
            all_ways: u16::MAX >> (COMPACT_WAYS - ways),
        }
    }

    /// Set `set` from the general record's view of it: `tag_of(w)` for a valid way `w`, `meta`
    /// its dirty/class byte (`dirty` the dirty bit, the low bits the class), `rank[w]` its LRU
    /// rank (0 = most recent) for every way below `ways`.
    pub fn load(
        &mut self,
        set: usize,
        valid: u64,
        tag_of: impl Fn(usize) -> u64,
        meta: &[u8],
        rank: &[u8],
        dirty: u8,
    ) {
        let mut rec = CompactSet::empty(self.ways);
        for w in 0..self.ways {
            rec.order = with_lane(rec.order, usize::from(rank[w]), w as u64);
            if valid >> w & 1 == 0 {
                continue;
            }
            let tag = tag_of(w);
            rec.valid |= 1 << w;
            rec.ptag[w] = partial_tag(tag);
            rec.dirty |= u16::from(meta[w] & dirty != 0) << w;
            rec.class |= u32::from(meta[w] & !dirty & 3) << (2 * w);
            self.tags[set * COMPACT_WAYS + w] = narrow(tag);
        }
        self.hot[set] = rec;
    }

    /// The way of set `set` holding the line with tag `tag`, if any.
    #[inline(always)]
    pub fn find(&self, set: usize, tag: u64) -> Option<usize> {
        let rec = &self.hot[set];
        let mut cand = rec.candidates(partial_tag(tag));
        let tags = &self.tags[set * COMPACT_WAYS..][..COMPACT_WAYS];
        while cand != 0 {
            let w = cand.trailing_zeros() as usize / 8;
            if rec.valid >> w & 1 != 0 && u64::from(tags[w]) == tag {
                return Some(w);
            }
            cand &= cand - 1;
        }
        None
    }

    /// Whether way `w` of set `set` is dirty.
    pub fn is_dirty(&self, set: usize, w: usize) -> bool {
        self.hot[set].dirty >> w & 1 != 0
    }

    /// If set `set` holds the line with tag `tag`: make its way the most recently used, mark
    /// it dirty if `dirty`, and return the way.
    #[inline(always)]
    pub fn use_line(&mut self, set: usize, tag: u64, dirty: bool) -> Option<usize> {
        let w = self.find(set, tag)?;
        let rec = &mut self.hot[set];
        rec.dirty |= u16::from(dirty) << w;
        rec.touch(w);
        Some(w)
    }

    /// Put the absent line with tag `tag` in set `set` (dirty if `dirty`, filled by class
    /// index `class`, below 4): in the lowest empty way, else in the least recently used one,
    /// which is returned. The way becomes the most recently used.
    #[inline(always)]
    pub fn install(&mut self, set: usize, tag: u64, dirty: bool, class: u8) -> Option<Taken> {
        debug_assert!(class < 4, "two bits of class");
        let rec = &mut self.hot[set];
        let slot = &mut self.tags[set * COMPACT_WAYS..][..COMPACT_WAYS];
        let empty = !rec.valid & self.all_ways;
        let (w, old) = if empty != 0 {
            (empty.trailing_zeros() as usize, None)
        } else {
            let w = (rec.order >> (4 * (self.ways - 1)) & 0xf) as usize;
            (w, Some(rec.taken(w, u64::from(slot[w]))))
        };
        rec.valid |= 1 << w;
        rec.ptag[w] = partial_tag(tag);
        rec.dirty = rec.dirty & !(1 << w) | u16::from(dirty) << w;
        rec.class = rec.class & !(3 << (2 * w)) | u32::from(class & 3) << (2 * w);
        rec.touch(w);
        slot[w] = narrow(tag);
        old
    }

    /// Empty way `w` of set `set` (which holds a line) and return what it held. Its place in
    /// the recency order stays.
    pub fn invalidate_way(&mut self, set: usize, w: usize) -> Taken {
        let tag = u64::from(self.tags[set * COMPACT_WAYS + w]);
        let rec = &mut self.hot[set];
        let old = rec.taken(w, tag);
        rec.valid &= !(1 << w);
        rec.dirty &= !(1 << w);
        rec.class &= !(3 << (2 * w));
        old
    }

    /// Lines held.
    pub fn valid_lines(&self) -> usize {
        self.hot.iter().map(|r| r.valid.count_ones() as usize).sum()
    }

    /// Empty every set; return the dirty lines as (set, what the way held), in set-then-way
    /// order. Recency orders stay, as in the general record.
    pub fn drain_dirty(&mut self) -> Vec<(usize, Taken)> {
        let mut out = Vec::new();
        for (i, rec) in self.hot.iter_mut().enumerate() {
            let mut d = rec.dirty & rec.valid;
            while d != 0 {
                let w = d.trailing_zeros() as usize;
                out.push((i, rec.taken(w, u64::from(self.tags[i * COMPACT_WAYS + w]))));
                d &= d - 1;
            }
            (rec.valid, rec.dirty, rec.class) = (0, 0, 0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn zero_bytes_flags_exactly_the_zero_bytes(x in any::<u128>(), zeros in any::<u16>()) {
            let mut v = x.to_le_bytes();
            for (i, b) in v.iter_mut().enumerate() {
                if zeros >> i & 1 == 1 {
                    *b = 0;
                }
            }
            let want = v
                .iter()
                .enumerate()
                .fold(0u128, |m, (i, &b)| m | u128::from(b == 0) << (8 * i + 7));
            prop_assert_eq!(zero_bytes(u128::from_le_bytes(v)), want);
        }
    }

    #[test]
    fn touch_moves_a_way_to_the_front_and_keeps_the_rest_in_order() {
        for ways in [1, 2, 5, 15, 16] {
            let mut rec = CompactSet::empty(ways);
            let mut model: Vec<usize> = (0..ways).rev().collect();
            for step in 0..200usize {
                let w = (step * 7 + step / 3) % ways;
                rec.touch(w);
                model.retain(|&x| x != w);
                model.insert(0, w);
                let lanes: Vec<usize> =
                    (0..ways).map(|p| (rec.order >> (4 * p) & 0xf) as usize).collect();
                assert_eq!(lanes, model, "{ways} ways, step {step}");
                if ways < COMPACT_WAYS {
                    assert_eq!(rec.order >> (4 * ways), u64::MAX >> (4 * ways), "padding kept");
                }
            }
        }
    }
}
