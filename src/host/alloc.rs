//! The host's physical page allocator: a binary buddy allocator like Linux's
//! (mm/page_alloc.c: free lists per order, split on allocation, merge with the buddy on free),
//! shared by page-table pages, kernel objects and guest memory, so that where a guest folio or
//! a slab page lands follows from allocation history (DESIGN "Layers"); and the boot-time
//! allocator that serves page-table pages before the buddy allocator exists ([`BootAllocator`],
//! Linux's memblock).
//!
//! Deterministic. Which free block an allocation takes is [`AllocOrder`]: the lowest free block
//! of the smallest sufficient order (`lowest`, the default), or one picked by a seeded
//! [`sim_core::Rng`] among the blocks of that order (`seeded`). Either way the *placement* of
//! everything else follows from allocation and freeing over time; the order only decides which
//! of the equally good blocks is taken. Linux's per-CPU lists, migrate types and zones are not
//! modelled; both rules stand in for them (Unsourced: Linux's choice depends on run-time history
//! a simulation does not have). [`BuddyAllocator::reserve`] (replaying a recorded allocation)
//! takes exactly the block asked for under either rule.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use sim_core::{Rng, Spa};
use std::collections::BTreeSet;

/// Largest buddy order: 2^10 pages = 4 MiB (Linux `MAX_PAGE_ORDER` = 10 on x86-64,
/// include/linux/mmzone.h).
pub const MAX_ORDER: u8 = 10;

/// Which free block of the smallest sufficient order an allocation takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum AllocOrder {
    /// The lowest-addressed block.
    #[serde(rename = "lowest")]
    Lowest,
    /// A block picked with the allocator's seeded RNG: the first free block of that order at or
    /// above a uniformly drawn page frame (wrapping to the lowest). Blocks that follow a long
    /// run of used memory are therefore more likely than others, as with any address-directed
    /// choice; the draw is one RNG step per allocation, so a run replays exactly from its seed.
    #[serde(rename = "seeded")]
    Seeded,
}

impl AllocOrder {
    /// The configuration name.
    pub const fn name(self) -> &'static str {
        match self {
            AllocOrder::Lowest => "lowest",
            AllocOrder::Seeded => "seeded",
        }
    }
}

/// The allocator.
#[derive(Debug)]
pub struct BuddyAllocator {
    /// Free blocks of orders below [`MAX_ORDER`], by first PFN.
    free: Vec<BTreeSet<u64>>,
    /// Free blocks of order [`MAX_ORDER`].
    top: TopFree,
    /// First PFNs of the blocks handed out, with their order (to validate frees). A hash map:
    /// every allocation inserts here (a B-tree insert was about half of an allocation's
    /// instructions), and a block is naturally aligned, so the block holding a page is found by
    /// one lookup per order ([`BuddyAllocator::used_end`]).
    used: FxHashMap<u64, u8>,
    end_pfn: u64,
    free_pages: u64,
    /// `Some` for [`AllocOrder::Seeded`].
    rng: Option<Rng>,
}

sim_core::clone_by_fields!(BuddyAllocator {
    top,
    used,
    end_pfn,
    free_pages,
    rng
} changed {
    free
});

/// Misuse of the allocator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// A free of pages that were not allocated with that order.
    #[error("free of {spa:#x} order {order} that was not allocated so")]
    BadFree {
        /// Address.
        spa: u64,
        /// Order given.
        order: u8,
    },
    /// A reservation of pages not free.
    #[error("reserve of {spa:#x} order {order}: pages not free")]
    NotFree {
        /// Address.
        spa: u64,
        /// Order.
        order: u8,
    },
}

impl BuddyAllocator {
    /// Manage `[start, end)` (4 KiB-aligned byte addresses), taking the lowest free block.
    pub fn new(start: u64, end: u64) -> BuddyAllocator {
        BuddyAllocator::with_order(start, end, AllocOrder::Lowest, 0)
    }

    /// Manage `[start, end)` with the given block choice; `seed` seeds the RNG of
    /// [`AllocOrder::Seeded`] (ignored for [`AllocOrder::Lowest`]).
    pub fn with_order(start: u64, end: u64, order: AllocOrder, seed: u64) -> BuddyAllocator {
        let mut a = BuddyAllocator {
            free: vec![BTreeSet::new(); usize::from(MAX_ORDER)],
            top: TopFree::default(),
            used: FxHashMap::default(),
            end_pfn: end >> 12,
            free_pages: 0,
            rng: match order {
                AllocOrder::Lowest => None,
                AllocOrder::Seeded => Some(Rng::new(seed)),
            },
        };
        a.add_range(start.div_ceil(4096), end >> 12);
        a
    }

    /// Put the pages `[pfn, end_pfn)` on the free lists as the largest aligned blocks.
    fn add_range(&mut self, mut pfn: u64, end_pfn: u64) {
        while pfn < end_pfn {
            let mut order = MAX_ORDER;
            while order > 0 && (!pfn.is_multiple_of(1 << order) || pfn + (1 << order) > end_pfn) {
                order -= 1;
            }
            self.insert_free(pfn, order);
            pfn += 1 << order;
        }
    }

    /// Put one block on the free lists, merging it with free buddies.
    fn insert_free(&mut self, mut pfn: u64, order: u8) {
        self.free_pages += 1 << order;
        let mut o = order;
        while o < MAX_ORDER {
            let buddy = pfn ^ (1 << o);
            if !self.free[usize::from(o)].remove(&buddy) {
                break;
            }
            pfn = pfn.min(buddy);
            o += 1;
        }
        self.insert_block(o, pfn);
    }

    /// Put block `pfn` on the free list of order `o` (no merging).
    fn insert_block(&mut self, o: u8, pfn: u64) {
        if o == MAX_ORDER {
            self.top.insert(pfn);
        } else {
            self.free[usize::from(o)].insert(pfn);
        }
    }

    /// Take block `pfn` off the free list of order `o`; whether it was there.
    fn remove_block(&mut self, o: u8, pfn: u64) -> bool {
        if o == MAX_ORDER { self.top.remove(pfn) } else { self.free[usize::from(o)].remove(&pfn) }
    }

    /// Whether block `pfn` is on the free list of order `o`.
    fn has_block(&self, o: u8, pfn: u64) -> bool {
        if o == MAX_ORDER {
            self.top.contains(pfn)
        } else {
            self.free[usize::from(o)].contains(&pfn)
        }
    }

    /// The free block of order `o` with the highest PFN at or below `pfn`.
    fn block_at_or_below(&self, o: u8, pfn: u64) -> Option<u64> {
        if o == MAX_ORDER {
            self.top.at_or_below(pfn)
        } else {
            self.free[usize::from(o)].range(..=pfn).next_back().copied()
        }
    }

    /// The free block of order `o` with the lowest PFN at or above `pfn`.
    fn block_at_or_above(&self, o: u8, pfn: u64) -> Option<u64> {
        if o == MAX_ORDER {
            self.top.at_or_above(pfn)
        } else {
            self.free[usize::from(o)].range(pfn..).next().copied()
        }
    }

    /// The highest free block of order `o`.
    fn last_block(&self, o: u8) -> Option<u64> {
        if o == MAX_ORDER {
            self.top.at_or_below(u64::MAX)
        } else {
            self.free[usize::from(o)].last().copied()
        }
    }

    /// Whether the free list of order `o` is empty.
    fn no_block(&self, o: u8) -> bool {
        if o == MAX_ORDER { self.top.is_empty() } else { self.free[usize::from(o)].is_empty() }
    }

    /// Which free block of order `o` to take.
    fn pick(&mut self, o: u8) -> Option<u64> {
        let at = match &mut self.rng {
            None => 0,
            Some(rng) => rng.below(self.end_pfn.max(1)) & !((1u64 << o) - 1),
        };
        let pfn = self.block_at_or_above(o, at).or_else(|| self.block_at_or_above(o, 0))?;
        self.remove_block(o, pfn);
        Some(pfn)
    }

    /// Allocate 2^order pages, naturally aligned.
    pub fn alloc(&mut self, order: u8) -> Option<Spa> {
        if order > MAX_ORDER {
            return None;
        }
        let o = (order..=MAX_ORDER).find(|&o| !self.no_block(o))?;
        let pfn = self.pick(o)?;
        // Split down, returning the upper halves to the free lists (Linux expand()).
        for lower in (order..o).rev() {
            self.insert_block(lower, pfn + (1 << lower));
        }
        self.used.insert(pfn, order);
        self.free_pages -= 1 << order;
        Some(Spa::new(pfn << 12))
    }

    /// Free 2^order pages at `spa`, merging with free buddies.
    ///
    /// # Errors
    /// [`AllocError::BadFree`] if the block was not allocated with that order.
    pub fn free(&mut self, spa: Spa, order: u8) -> Result<(), AllocError> {
        let pfn = spa.raw() >> 12;
        if self.used.get(&pfn) != Some(&order) {
            return Err(AllocError::BadFree { spa: spa.raw(), order });
        }
        self.used.remove(&pfn);
        self.insert_free(pfn, order);
        Ok(())
    }

    /// Hand pages this allocator never managed to its free lists: what memblock gives the buddy
    /// allocator at the end of boot (mm/memblock.c `memblock_free_all`), or a boot-time page
    /// freed later. `[start, end)` are 4 KiB-aligned byte addresses.
    ///
    /// # Errors
    /// [`AllocError::NotFree`] naming the first page already managed here (free or used).
    pub fn release(&mut self, start: Spa, end: Spa) -> Result<(), AllocError> {
        let (s, e) = (start.raw() >> 12, end.raw() >> 12);
        for pfn in s..e {
            if self.managed(pfn) {
                return Err(AllocError::NotFree { spa: pfn << 12, order: 0 });
            }
        }
        self.add_range(s, e);
        self.end_pfn = self.end_pfn.max(e);
        Ok(())
    }

    /// One past the last page of the allocated block that holds `pfn`, if one does. Blocks are
    /// naturally aligned (`alloc` splits aligned blocks, `reserve` refuses unaligned ones), so
    /// the block of order `o` that could hold `pfn` starts at `pfn` rounded down to 2^o pages:
    /// one lookup per order.
    fn used_end(&self, pfn: u64) -> Option<u64> {
        (0..=MAX_ORDER).find_map(|o| {
            let base = pfn & !((1u64 << o) - 1);
            (self.used.get(&base) == Some(&o)).then(|| base + (1u64 << o))
        })
    }

    /// Whether `pfn` is in a used or free block of this allocator.
    fn managed(&self, pfn: u64) -> bool {
        let covers =
            |base: Option<(u64, u8)>| base.is_some_and(|(b, o)| pfn >= b && pfn < b + (1u64 << o));
        if self.used_end(pfn).is_some_and(|end| pfn < end) {
            return true;
        }
        (0..=MAX_ORDER).any(|o| covers(self.block_at_or_below(o, pfn).map(|b| (b, o))))
    }

    /// Take the specific block `[spa, spa + 2^order pages)` out of the free lists (replaying a
    /// recorded allocation). Splits the free block that contains it. Never uses the RNG.
    ///
    /// # Errors
    /// [`AllocError::NotFree`] if any page of it is not free.
    pub fn reserve(&mut self, spa: Spa, order: u8) -> Result<(), AllocError> {
        let pfn = spa.raw() >> 12;
        let err = AllocError::NotFree { spa: spa.raw(), order };
        if order > MAX_ORDER || !pfn.is_multiple_of(1 << order) {
            return Err(err);
        }
        // A page inside an allocated block is not free: answered before the search of the free
        // lists below (a TDX 2M AUG claims 512 pages that guest_memfd already holds).
        if self.used_end(pfn).is_some_and(|end| pfn < end) {
            return Err(err);
        }
        // Find the free block containing pfn, at order >= `order`.
        let Some((mut o, mut base)) = (order..=MAX_ORDER).find_map(|o| {
            let b = pfn & !((1u64 << o) - 1);
            self.has_block(o, b).then_some((o, b))
        }) else {
            return Err(err);
        };
        self.remove_block(o, base);
        // Split down towards pfn, freeing the halves that do not contain it.
        while o > order {
            o -= 1;
            let half = 1u64 << o;
            if pfn >= base + half {
                self.insert_block(o, base);
                base += half;
            } else {
                self.insert_block(o, base + half);
            }
        }
        self.used.insert(pfn, order);
        self.free_pages -= 1 << order;
        Ok(())
    }

    /// [`BuddyAllocator::reserve`] of each of the `pages` 4 KiB pages from `spa` that is free,
    /// one page (order 0) at a time; pages not free are left as they are. Returns how many it
    /// took. A range wholly inside one allocated block (a TDX 2M AUG of pages guest_memfd
    /// already holds) is settled by finding the allocated block that holds its first page.
    pub fn reserve_free_pages(&mut self, spa: Spa, pages: u64) -> u64 {
        let pfn = spa.raw() >> 12;
        if self.used_end(pfn).is_some_and(|end| pfn + pages <= end) {
            return 0;
        }
        (0..pages).filter(|i| self.reserve(Spa::new_truncate((pfn + i) << 12), 0).is_ok()).count()
            as u64
    }

    /// The highest-addressed free page, taken. For pages the simulator needs on its own
    /// account while a scenario names pages explicitly (state-line S-EPT tables and TD vCPU
    /// pages): they come from the top of memory, away from the low addresses scenarios use and
    /// the lowest-first allocations of the run. Never uses the RNG.
    pub fn alloc_highest_page(&mut self) -> Option<Spa> {
        let top = (0..=MAX_ORDER)
            .filter_map(|o| self.last_block(o).map(|b| b + (1u64 << o) - 1))
            .max()?;
        let spa = Spa::new(top << 12);
        self.reserve(spa, 0).ok()?;
        Some(spa)
    }

    /// Pages free.
    pub fn free_pages(&self) -> u64 {
        self.free_pages
    }

    /// One past the last managed PFN.
    pub fn end_pfn(&self) -> u64 {
        self.end_pfn
    }
}

/// The free blocks of order [`MAX_ORDER`], as a bitmap over block numbers (PFN >> `MAX_ORDER`)
/// with a summary bit per non-zero word. After boot nearly all free memory is in such blocks
/// (a thousand on a 4 GiB host, 65,536 on a 256 GiB one): as a bitmap they are a few words
/// per thousand blocks, ordered, and copied in one piece, where a B-tree set needs a node
/// allocation per eleven blocks (the race explorer copies the allocator once per schedule).
#[derive(Debug, Default)]
struct TopFree {
    words: Vec<u64>,
    /// Bit `j`: `words[j] != 0`.
    summary: Vec<u64>,
    len: usize,
}

sim_core::clone_by_fields!(TopFree { words, summary, len });

impl TopFree {
    /// The block number of a block's first PFN.
    fn block(pfn: u64) -> usize {
        usize::try_from(pfn >> MAX_ORDER).expect("PFNs below 2^40 fit usize")
    }

    fn first_pfn(block: usize) -> u64 {
        (block as u64) << MAX_ORDER
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn contains(&self, pfn: u64) -> bool {
        let b = Self::block(pfn);
        self.words.get(b / 64).is_some_and(|w| w >> (b % 64) & 1 == 1)
    }

    fn insert(&mut self, pfn: u64) {
        let b = Self::block(pfn);
        if b / 64 >= self.words.len() {
            self.words.resize(b / 64 + 1, 0);
            self.summary.resize(self.words.len().div_ceil(64), 0);
        }
        let w = &mut self.words[b / 64];
        if *w >> (b % 64) & 1 == 0 {
            *w |= 1 << (b % 64);
            self.summary[b / 4096] |= 1 << (b / 64 % 64);
            self.len += 1;
        }
    }

    fn remove(&mut self, pfn: u64) -> bool {
        let b = Self::block(pfn);
        let Some(w) = self.words.get_mut(b / 64) else { return false };
        if *w >> (b % 64) & 1 == 0 {
            return false;
        }
        *w &= !(1 << (b % 64));
        if *w == 0 {
            self.summary[b / 4096] &= !(1 << (b / 64 % 64));
        }
        self.len -= 1;
        true
    }

    /// The lowest block at or above `pfn`'s.
    fn at_or_above(&self, pfn: u64) -> Option<u64> {
        let b = Self::block(pfn.next_multiple_of(1 << MAX_ORDER));
        let wi = b / 64;
        let here = self.words.get(wi)? & (u64::MAX << (b % 64));
        if here != 0 {
            return Some(Self::first_pfn(wi * 64 + here.trailing_zeros() as usize));
        }
        // The next non-zero word, through the summary.
        let next = wi + 1;
        let mut si = next / 64;
        let mut mask = u64::MAX << (next % 64);
        while let Some(&s) = self.summary.get(si) {
            let m = s & mask;
            if m != 0 {
                let w = si * 64 + m.trailing_zeros() as usize;
                return Some(Self::first_pfn(w * 64 + self.words[w].trailing_zeros() as usize));
            }
            si += 1;
            mask = u64::MAX;
        }
        None
    }

    /// The highest block at or below the one holding `pfn`.
    fn at_or_below(&self, pfn: u64) -> Option<u64> {
        if self.words.is_empty() {
            return None;
        }
        let b = Self::block(pfn).min(self.words.len() * 64 - 1);
        let wi = b / 64;
        let here = self.words[wi] & (u64::MAX >> (63 - b % 64));
        if here != 0 {
            return Some(Self::first_pfn(wi * 64 + 63 - here.leading_zeros() as usize));
        }
        // The previous non-zero word, through the summary.
        let prev = wi.checked_sub(1)?;
        let mut si = prev / 64;
        let mut mask = u64::MAX >> (63 - prev % 64);
        loop {
            let m = self.summary[si] & mask;
            if m != 0 {
                let w = si * 64 + 63 - m.leading_zeros() as usize;
                let top = 63 - self.words[w].leading_zeros() as usize;
                return Some(Self::first_pfn(w * 64 + top));
            }
            si = si.checked_sub(1)?;
            mask = u64::MAX;
        }
    }
}

/// The boot-time page allocator (Linux memblock as the early CPA path uses it): a bump
/// allocator over a region reserved at boot, serving page-table pages for direct-map splits
/// before the buddy allocator exists (the SNP guest series patch "x86: mm: Provide support to
/// use memblock when splitting large pages"; not re-read here). At the end of boot the unused
/// rest of the region goes to the buddy allocator ([`BootAllocator::hand_over`]); pages it
/// gave out stay recorded, so that freeing one later (a collapse) gives it to the buddy
/// allocator instead of failing as a free of pages the buddy never handed out.
#[derive(Debug, Clone, Default)]
pub struct BootAllocator {
    next: u64,
    end: u64,
    /// Pages freed during boot, reused before the bump pointer moves (memblock_free).
    freed: Vec<u64>,
    /// Pages given out and not freed yet.
    live: BTreeSet<u64>,
    /// Pages given out in total.
    taken: u64,
}

impl BootAllocator {
    /// Serve `[start, end)` (4 KiB-aligned byte addresses).
    pub fn new(start: u64, end: u64) -> BootAllocator {
        BootAllocator { next: start.div_ceil(4096) << 12, end: end & !0xfff, ..Default::default() }
    }

    /// One page, or `None` when the region is used up.
    pub fn alloc(&mut self) -> Option<Spa> {
        let page = match self.freed.pop() {
            Some(p) => p,
            None if self.next < self.end => {
                self.next += 4096;
                self.next - 4096
            }
            None => return None,
        };
        self.live.insert(page);
        self.taken += 1;
        Some(Spa::new(page))
    }

    /// Whether `page` came from here and is still in use.
    pub fn owns(&self, page: Spa) -> bool {
        self.live.contains(&page.raw())
    }

    /// Take back a page this allocator gave out; returns false if it did not.
    pub fn free(&mut self, page: Spa) -> bool {
        if !self.live.remove(&page.raw()) {
            return false;
        }
        self.freed.push(page.raw());
        true
    }

    /// Forget a page given out (it now belongs to the buddy allocator); returns false if it
    /// was not live here.
    pub fn forget(&mut self, page: Spa) -> bool {
        self.live.remove(&page.raw())
    }

    /// End of boot: give every page not in use (the unused rest of the region and pages freed
    /// during boot) to `buddy`.
    ///
    /// # Errors
    /// [`AllocError::NotFree`] if `buddy` already manages one of them (a setup bug).
    pub fn hand_over(&mut self, buddy: &mut BuddyAllocator) -> Result<(), AllocError> {
        let mut freed = std::mem::take(&mut self.freed);
        freed.sort_unstable();
        for p in freed {
            buddy.release(Spa::new(p), Spa::new(p + 4096))?;
        }
        if self.next < self.end {
            buddy.release(Spa::new(self.next), Spa::new(self.end))?;
        }
        self.next = self.end;
        Ok(())
    }

    /// Pages given out since boot.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// Pages given out and still in use.
    pub fn live(&self) -> u64 {
        self.live.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn lowest_first_and_merge() {
        let mut a = BuddyAllocator::new(0, 8 << 20);
        let total = a.free_pages();
        assert_eq!(total, 2048);
        let p0 = a.alloc(0).unwrap();
        let p1 = a.alloc(0).unwrap();
        assert_eq!((p0.raw(), p1.raw()), (0, 4096));
        let big = a.alloc(9).unwrap();
        assert!(big.is_aligned(sim_core::PageSize::M2));
        a.free(p0, 0).unwrap();
        a.free(p1, 0).unwrap();
        a.free(big, 9).unwrap();
        assert_eq!(a.free_pages(), total);
        // Fully merged again: a max-order block is available at 0.
        assert_eq!(a.alloc(MAX_ORDER).unwrap().raw(), 0);
        assert!(a.free(Spa::new(4096 * 3), 0).is_err());
        // Reserving a specific block gives the same state as allocating it.
        let mut b = BuddyAllocator::new(0, 8 << 20);
        b.reserve(Spa::new(0x3000), 0).unwrap();
        assert!(b.reserve(Spa::new(0x3000), 0).is_err());
        assert_eq!(b.free_pages(), 2047);
        b.free(Spa::new(0x3000), 0).unwrap();
        assert_eq!(b.alloc(MAX_ORDER).unwrap().raw(), 0);
    }

    fn trace(a: &mut BuddyAllocator) -> Vec<(u64, u8)> {
        // A fixed mix of allocations and frees; the addresses handed out are the trace.
        let mut out = Vec::new();
        let mut live = Vec::new();
        for i in 0..200u64 {
            let order = u8::try_from(i % 4).unwrap();
            if i % 5 == 4 {
                let (s, o): (Spa, u8) = live.swap_remove(usize::try_from(i % 3).unwrap());
                a.free(s, o).unwrap();
            } else {
                let s = a.alloc(order).unwrap();
                out.push((s.raw(), order));
                live.push((s, order));
            }
        }
        out
    }

    /// The seeded order is a function of the seed: the same seed gives the same placement,
    /// another seed another one, and both differ from lowest-first.
    #[test]
    fn seeded_is_deterministic_per_seed_and_differs_across_seeds() {
        // 16 blocks of the largest order: the first allocation already has a choice.
        let mk = |seed| BuddyAllocator::with_order(0, 64 << 20, AllocOrder::Seeded, seed);
        let a = trace(&mut mk(7));
        assert_eq!(a, trace(&mut mk(7)));
        let b = trace(&mut mk(8));
        assert_ne!(a, b);
        let lowest = trace(&mut BuddyAllocator::new(0, 64 << 20));
        assert_ne!(a, lowest);
        // Every block is naturally aligned and inside the managed range.
        for &(s, o) in &a {
            assert!(s.is_multiple_of(4096 << o));
            assert!(s < 64 << 20);
        }
    }

    /// `reserve` replays a recorded allocation exactly under the seeded order too: the state
    /// after reserving what a seeded run allocated equals the seeded run's state.
    #[test]
    fn reserve_replays_a_seeded_run() {
        let mut live = BuddyAllocator::with_order(1 << 20, 16 << 20, AllocOrder::Seeded, 3);
        let mut replay = BuddyAllocator::with_order(1 << 20, 16 << 20, AllocOrder::Seeded, 99);
        let mut got = Vec::new();
        for order in [0u8, 3, 1, 9, 0, 2] {
            let s = live.alloc(order).unwrap();
            replay.reserve(s, order).unwrap();
            got.push((s, order));
        }
        assert_eq!(live.free_pages(), replay.free_pages());
        assert_eq!(live.free, replay.free);
        for (s, o) in got {
            replay.free(s, o).unwrap();
        }
        assert_eq!(replay.free_pages(), (15 << 20) >> 12);
        assert!(replay.reserve(Spa::new(0x10_0000), MAX_ORDER).is_err(), "1M is not 4M-aligned");
    }

    /// Reserving a page inside an allocated block (or the block itself, or one of its pages
    /// at a higher order) fails with `NotFree` and changes nothing; the pages around it stay
    /// reservable.
    #[test]
    fn reserve_inside_an_allocated_block_fails() {
        let mut a = BuddyAllocator::new(1 << 20, 16 << 20);
        let block = a.alloc(9).unwrap();
        let (free, lists) = (a.free_pages(), a.free.clone());
        for i in [0u64, 1, 255, 511] {
            let page = Spa::new(block.raw() + i * 4096);
            assert!(matches!(a.reserve(page, 0), Err(AllocError::NotFree { .. })), "page {i}");
        }
        assert!(a.reserve(block, 9).is_err());
        assert_eq!((a.free_pages(), &a.free), (free, &lists), "nothing changed");
        a.reserve(Spa::new(block.raw() + (2 << 20)), 0).unwrap();
        a.free(block, 9).unwrap();
        a.reserve(Spa::new(block.raw() + 4096), 0).unwrap();
    }

    /// The boot allocator bumps through its region, reuses pages freed during boot, and hands
    /// the rest to the buddy allocator at the end of boot; a boot page freed after that joins
    /// the buddy allocator too.
    #[test]
    fn boot_allocator_hands_over() {
        let mut buddy = BuddyAllocator::new(2 << 20, 8 << 20);
        let mut boot = BootAllocator::new(1 << 20, 2 << 20);
        let p0 = boot.alloc().unwrap();
        let p1 = boot.alloc().unwrap();
        assert_eq!((p0.raw(), p1.raw()), (0x10_0000, 0x10_1000));
        assert!(boot.free(p1));
        assert_eq!(boot.alloc(), Some(p1));
        assert!(boot.free(p1));
        assert!(!boot.free(p1), "double free refused");
        let before = buddy.free_pages();
        boot.hand_over(&mut buddy).unwrap();
        // All of the region but p0 is now buddy memory, merged into large blocks.
        assert_eq!(buddy.free_pages(), before + 255);
        assert_eq!(boot.alloc(), None);
        assert!(boot.owns(p0));
        assert!(boot.forget(p0));
        buddy.release(p0, Spa::new(p0.raw() + 4096)).unwrap();
        assert_eq!(buddy.free_pages(), before + 256);
        assert!(buddy.release(p0, Spa::new(p0.raw() + 4096)).is_err(), "already managed");
        // Fully merged: the 1M..2M region forms blocks up to 1M (256 pages).
        assert_eq!(buddy.alloc(8).unwrap().raw(), 1 << 20);
        assert_eq!((boot.taken(), boot.live()), (3, 0));
    }

    /// Reserving a run of pages at once leaves the allocator as reserving each free page of
    /// it does, whether the run is free, partly used, or inside one allocated block.
    #[test]
    fn reserve_free_pages_is_each_free_page_reserved() {
        let mut rng = sim_core::Rng::new(4);
        for round in 0..200 {
            let mut a = BuddyAllocator::new(0, 64 << 20);
            for _ in 0..rng.below(40) {
                let order = u8::try_from(rng.below(10)).unwrap();
                let _ = a.alloc(order);
            }
            let start = rng.below(16_384 - 600) << 12;
            let pages = if round % 3 == 0 { 512 } else { 1 + rng.below(600) };
            let mut each = a.clone();
            let taken = (0..pages)
                .filter(|i| each.reserve(Spa::new(start + i * 4096), 0).is_ok())
                .count() as u64;
            assert_eq!(a.reserve_free_pages(Spa::new(start), pages), taken, "round {round}");
            assert_eq!(format!("{a:?}"), format!("{each:?}"), "round {round}");
        }
        // Inside one allocated 2 MiB block: nothing to take.
        let mut a = BuddyAllocator::new(0, 64 << 20);
        let b = a.alloc(9).unwrap();
        let before = format!("{a:?}");
        assert_eq!(a.reserve_free_pages(b, 512), 0);
        assert_eq!(format!("{a:?}"), before);
    }

    /// The top-order bitmap answers as the ordered set it stands for: membership, the
    /// neighbours at or above and at or below any PFN, emptiness, after any mix of inserts and
    /// removals over several summary words.
    #[test]
    fn top_free_agrees_with_an_ordered_set() {
        let mut rng = sim_core::Rng::new(9);
        let mut bits = TopFree::default();
        let mut set = BTreeSet::new();
        let block = |b: u64| b << MAX_ORDER;
        for step in 0..20_000 {
            // Blocks in 0..12,000: three summary words; some far ones grow the bitmap late.
            let b = if step % 1000 == 999 { 11_000 + rng.below(1000) } else { rng.below(9000) };
            let pfn = block(b);
            if rng.chance(1, 2) {
                bits.insert(pfn);
                set.insert(pfn);
            } else {
                assert_eq!(bits.remove(pfn), set.remove(&pfn), "remove {pfn:#x}");
            }
            let probe = rng.below(13_000 << MAX_ORDER);
            assert_eq!(
                bits.contains(block(probe >> MAX_ORDER)),
                set.contains(&block(probe >> MAX_ORDER))
            );
            assert_eq!(
                bits.at_or_above(probe),
                set.range(probe..).next().copied(),
                "above {probe:#x}"
            );
            assert_eq!(
                bits.at_or_below(probe),
                set.range(..=probe).next_back().copied(),
                "below {probe:#x}"
            );
            assert_eq!(bits.is_empty(), set.is_empty());
        }
        assert_eq!(bits.at_or_below(u64::MAX), set.last().copied());
        assert_eq!(bits.at_or_above(0), set.first().copied());
        for &pfn in &set.clone() {
            assert!(bits.remove(pfn));
        }
        assert!(
            bits.is_empty()
                && bits.at_or_above(0).is_none()
                && bits.at_or_below(u64::MAX).is_none()
        );
    }

    proptest! {
        #[test]
        fn alloc_free_conserves_pages(ops in proptest::collection::vec((0u8..4, any::<bool>()), 1..200)) {
            let mut a = BuddyAllocator::new(1 << 20, 16 << 20);
            let total = a.free_pages();
            let mut live: Vec<(Spa, u8)> = Vec::new();
            for (order, free) in ops {
                if free && !live.is_empty() {
                    let (s, o) = live.swap_remove(0);
                    a.free(s, o).unwrap();
                } else if let Some(s) = a.alloc(order) {
                    prop_assert!(s.raw() % (4096 << order) == 0);
                    prop_assert!(!live.iter().any(|&(l, lo)| s.raw() < l.raw() + (4096 << lo) && l.raw() < s.raw() + (4096 << order)));
                    live.push((s, order));
                }
            }
            let used: u64 = live.iter().map(|&(_, o)| 1u64 << o).sum();
            prop_assert_eq!(a.free_pages() + used, total);
        }
    }
}
