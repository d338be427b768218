//! The host's physical page allocator: a binary buddy allocator like Linux's
//! (mm/page_alloc.c: free lists per order, split on allocation, merge with the buddy on free),
//! shared by page-table pages, kernel objects and guest memory, so that where a guest folio or
//! a slab page lands follows from allocation history (DESIGN "Layers").
//!
//! Deterministic: each free list is an ordered set and allocation always takes the lowest free
//! block of the smallest sufficient order. Linux's per-CPU lists, migrate types and zones are
//! not modelled; the lowest-address choice stands in for them (Unsourced: Linux's order depends
//! on run-time history we do not have; a fixed rule keeps runs reproducible).

use sim_core::Spa;
use std::collections::BTreeSet;

/// Largest buddy order: 2^10 pages = 4 MiB (Linux `MAX_PAGE_ORDER` = 10 on x86-64,
/// include/linux/mmzone.h).
pub const MAX_ORDER: u8 = 10;

/// The allocator.
#[derive(Debug, Clone)]
pub struct BuddyAllocator {
    /// Free blocks per order, by first PFN.
    free: Vec<BTreeSet<u64>>,
    /// PFNs handed out, with their order (to validate frees).
    used: std::collections::BTreeMap<u64, u8>,
    end_pfn: u64,
    free_pages: u64,
}

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
    /// Manage `[start, end)` (4 KiB-aligned byte addresses).
    pub fn new(start: u64, end: u64) -> BuddyAllocator {
        let mut a = BuddyAllocator {
            free: vec![BTreeSet::new(); usize::from(MAX_ORDER) + 1],
            used: std::collections::BTreeMap::new(),
            end_pfn: end >> 12,
            free_pages: 0,
        };
        let mut pfn = start.div_ceil(4096);
        let end_pfn = end >> 12;
        while pfn < end_pfn {
            let mut order = MAX_ORDER;
            while order > 0 && (!pfn.is_multiple_of(1 << order) || pfn + (1 << order) > end_pfn) {
                order -= 1;
            }
            a.free[usize::from(order)].insert(pfn);
            a.free_pages += 1 << order;
            pfn += 1 << order;
        }
        a
    }

    /// Allocate 2^order pages, naturally aligned.
    pub fn alloc(&mut self, order: u8) -> Option<Spa> {
        if order > MAX_ORDER {
            return None;
        }
        let o = (order..=MAX_ORDER).find(|&o| !self.free[usize::from(o)].is_empty())?;
        let pfn = self.free[usize::from(o)].pop_first()?;
        // Split down, returning the upper halves to the free lists.
        for lower in (order..o).rev() {
            self.free[usize::from(lower)].insert(pfn + (1 << lower));
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
        let mut pfn = spa.raw() >> 12;
        if self.used.get(&pfn) != Some(&order) {
            return Err(AllocError::BadFree { spa: spa.raw(), order });
        }
        self.used.remove(&pfn);
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
        self.free[usize::from(o)].insert(pfn);
        Ok(())
    }

    /// Take the specific block `[spa, spa + 2^order pages)` out of the free lists (replaying a
    /// recorded allocation). Splits the free block that contains it.
    ///
    /// # Errors
    /// [`AllocError::NotFree`] if any page of it is not free.
    pub fn reserve(&mut self, spa: Spa, order: u8) -> Result<(), AllocError> {
        let pfn = spa.raw() >> 12;
        let err = AllocError::NotFree { spa: spa.raw(), order };
        if order > MAX_ORDER || !pfn.is_multiple_of(1 << order) {
            return Err(err);
        }
        // Find the free block containing pfn, at order >= `order`.
        let Some((mut o, mut base)) = (order..=MAX_ORDER).find_map(|o| {
            let b = pfn & !((1u64 << o) - 1);
            self.free[usize::from(o)].contains(&b).then_some((o, b))
        }) else {
            return Err(err);
        };
        self.free[usize::from(o)].remove(&base);
        // Split down towards pfn, freeing the halves that do not contain it.
        while o > order {
            o -= 1;
            let half = 1u64 << o;
            if pfn >= base + half {
                self.free[usize::from(o)].insert(base);
                base += half;
            } else {
                self.free[usize::from(o)].insert(base + half);
            }
        }
        self.used.insert(pfn, order);
        self.free_pages -= 1 << order;
        Ok(())
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
