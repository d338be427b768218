//! The kernel direct map ("physmap"): all of physical memory mapped at `PAGE_OFFSET` in the
//! kernel page table, with the largest leaves alignment allows (arch/x86/mm/init.c
//! `kernel_physical_mapping_init`), and Linux's CPA splits (arch/x86/mm/pat/set_memory.c).
//!
//! Counters follow what Linux exports: `DirectMap4k/2M/1G` of /proc/meminfo (from the leaf
//! counts) and `direct_map_level2_splits` / `direct_map_level3_splits` of /proc/vmstat
//! (spec/physmap.md H20).

use mmu_model::{
    FrameSource, LeafAttrs, PageTable, Paging, PendingInvalidation, PhysMemTables, PteFlags,
    PteFormat,
};
use sim_core::stats::PerSize;
use sim_core::{Hva, PageSize, Spa};

/// Start of the direct map with 4-level paging and no KASLR: `0xffff888000000000`
/// (Linux Documentation/arch/x86/x86_64/mm.rst, "direct mapping of all physical memory").
pub const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;

/// The direct-map virtual address of a physical address (`__va(pa)`).
pub fn dm_va(spa: Spa) -> Hva {
    Hva::new(PAGE_OFFSET + spa.raw())
}

/// A direct-map problem (misuse or exhausted memory; not an architectural outcome).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DirectMapError {
    /// No page-table page could be allocated.
    #[error("out of memory for direct-map page tables")]
    OutOfFrames,
    /// An address outside memory.
    #[error("{0:#x} is outside the direct map")]
    Outside(u64),
    /// A range that cannot be given the requested leaf size.
    #[error("cannot map {spa:#x} with a {size} leaf: {why}")]
    Layout {
        /// Address.
        spa: u64,
        /// Size asked for.
        size: PageSize,
        /// Why.
        why: String,
    },
}

/// The direct map and its split/collapse counters.
#[derive(Debug)]
pub struct DirectMap {
    pt: PageTable,
    end: u64,
    /// `direct_map_level2_splits` (2M → 4K).
    pub level2_splits: u64,
    /// `direct_map_level3_splits` (1G → 2M).
    pub level3_splits: u64,
    /// `direct_map_level2_collapses`.
    pub level2_collapses: u64,
    /// `direct_map_level3_collapses`.
    pub level3_collapses: u64,
}

impl DirectMap {
    /// Build the direct map of `[0, memory)` with leaves up to `max`: 1G where aligned, 2M
    /// otherwise, 4K at the edges.
    ///
    /// # Errors
    /// [`DirectMapError::OutOfFrames`].
    pub fn build(
        tables: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        fmt: PteFormat,
        memory: u64,
        max: PageSize,
    ) -> Result<DirectMap, DirectMapError> {
        let pt = PageTable::new(tables, frames, Paging::FourLevel, fmt, PteFlags::KERNEL_TABLE)
            .map_err(|_| DirectMapError::OutOfFrames)?;
        let mut dm = DirectMap {
            pt,
            end: memory,
            level2_splits: 0,
            level3_splits: 0,
            level2_collapses: 0,
            level3_collapses: 0,
        };
        let mut pa = 0u64;
        while pa < memory {
            let size = [PageSize::G1, PageSize::M2, PageSize::K4]
                .into_iter()
                .find(|s| *s <= max && pa.is_multiple_of(s.bytes()) && pa + s.bytes() <= memory)
                .unwrap_or(PageSize::K4);
            dm.pt
                .map(tables, frames, dm_va(Spa::new(pa)), Spa::new(pa), size, LeafAttrs::KERNEL_RW)
                .map_err(|_| DirectMapError::OutOfFrames)?
                // A fresh mapping at boot: no TLB holds anything for it.
                .ignore();
            pa += size.bytes();
        }
        Ok(dm)
    }

    /// The kernel page table (its root is the kernel CR3).
    pub fn table(&self) -> &PageTable {
        &self.pt
    }

    /// The kernel page table, mutable (for kernel `map`/`unmap` events outside the direct map).
    pub fn table_mut(&mut self) -> &mut PageTable {
        &mut self.pt
    }

    /// The leaf size mapping `spa`, or `None` outside memory or where unmapped.
    pub fn leaf_size(&self, tables: &PhysMemTables, spa: Spa) -> Option<PageSize> {
        if spa.raw() >= self.end {
            return None;
        }
        self.pt.lookup(tables, dm_va(spa)).map(|l| l.size)
    }

    /// `set_memory_4k(__va(spa), 1)`: split whatever large leaf maps `spa`, one level at a time
    /// (1G → 2M, then the 2M holding `spa` → 4K), as CPA does. Returns what must be flushed
    /// and how many splits were made.
    ///
    /// # Errors
    /// [`DirectMapError`] if `spa` is outside memory or no table page can be allocated.
    pub fn split_to_4k(
        &mut self,
        tables: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        spa: Spa,
    ) -> Result<(PendingInvalidation<Hva>, u32), DirectMapError> {
        self.split_until(tables, frames, spa, PageSize::K4)
    }

    fn split_until(
        &mut self,
        tables: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        spa: Spa,
        target: PageSize,
    ) -> Result<(PendingInvalidation<Hva>, u32), DirectMapError> {
        let mut inv = PendingInvalidation::none();
        let mut splits = 0;
        loop {
            let size = self.leaf_size(tables, spa).ok_or(DirectMapError::Outside(spa.raw()))?;
            if size <= target {
                return Ok((inv, splits));
            }
            let (_, token) = self
                .pt
                .split(tables, frames, dm_va(spa))
                .map_err(|_| DirectMapError::OutOfFrames)?;
            inv.merge(token);
            splits += 1;
            match size {
                PageSize::G1 => self.level3_splits += 1,
                PageSize::M2 => self.level2_splits += 1,
                PageSize::K4 => {}
            }
        }
    }

    /// Set the leaves of `[spa, spa+len)` to exactly `size` (scenario `state directmap`):
    /// larger leaves are split, smaller uniform ones merged. Initial state: counters and TLBs
    /// are not touched.
    ///
    /// # Errors
    /// [`DirectMapError::Layout`] if the range is outside memory or misaligned, or a merge is
    /// impossible.
    pub fn set_leaves(
        &mut self,
        tables: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        spa: Spa,
        size: PageSize,
        len: u64,
    ) -> Result<(), DirectMapError> {
        let bad = |why: &str| DirectMapError::Layout { spa: spa.raw(), size, why: why.to_owned() };
        if !spa.is_aligned(size) || !len.is_multiple_of(size.bytes()) || len == 0 {
            return Err(bad("range not aligned to the leaf size"));
        }
        if spa.raw().checked_add(len).is_none_or(|e| e > self.end) {
            return Err(bad("range extends beyond memory"));
        }
        let saved = (self.level2_splits, self.level3_splits);
        let mut pa = spa.raw();
        while pa < spa.raw() + len {
            let at = Spa::new(pa);
            let (token, _) = self.split_until(tables, frames, at, size)?;
            token.ignore(); // initial state: nothing is cached yet
            let cur = self.leaf_size(tables, at).ok_or_else(|| bad("unmapped"))?;
            if cur < size {
                // Merge upwards level by level (4K → 2M → 1G).
                let mut s = cur;
                while s < size {
                    let up = s.next_larger().ok_or_else(|| bad("no larger size"))?;
                    let base = at.align_down(up);
                    // Every sub-leaf of `up` must be `s` first.
                    let mut sub = base.raw();
                    while sub < base.raw() + up.bytes() {
                        let (t, _) = self.split_until(tables, frames, Spa::new(sub), s)?;
                        t.ignore();
                        if self.leaf_size(tables, Spa::new(sub)) != Some(s) {
                            self.merge_to(tables, frames, Spa::new(sub), s)?;
                        }
                        sub += s.bytes();
                    }
                    self.pt
                        .merge(tables, frames, dm_va(base), up)
                        .map_err(|e| bad(&format!("merge refused: {e}")))?
                        .ignore();
                    s = up;
                }
            }
            pa += size.bytes();
        }
        (self.level2_splits, self.level3_splits) = saved;
        Ok(())
    }

    fn merge_to(
        &mut self,
        tables: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        spa: Spa,
        size: PageSize,
    ) -> Result<(), DirectMapError> {
        self.set_leaves(tables, frames, spa.align_down(size), size, size.bytes())
    }

    /// Leaves per size.
    pub fn leaf_counts(&self) -> PerSize<u64> {
        self.pt.leaf_counts()
    }

    /// `DirectMap4k/2M/1G` in kB, as /proc/meminfo prints them.
    pub fn meminfo_kb(&self) -> PerSize<u64> {
        let c = self.leaf_counts();
        PerSize([c[PageSize::K4] * 4, c[PageSize::M2] * 2048, c[PageSize::G1] * 1024 * 1024])
    }

    /// Page-table pages of the kernel page table.
    pub fn table_pages(&self) -> u64 {
        self.pt.table_pages()
    }

    /// One past the last mapped physical byte.
    pub fn end(&self) -> u64 {
        self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmu_model::{CbitPos, LinearFrames};
    use proptest::prelude::*;

    const FMT: PteFormat = PteFormat { phys_bits: 52, cbit: CbitPos(Some(51)) };

    fn build(mem: u64, max: PageSize) -> (PhysMemTables, LinearFrames, DirectMap) {
        let mut tables = PhysMemTables::new();
        let mut frames = LinearFrames::new(Spa::new(1 << 44), Spa::new((1 << 44) + (1 << 30)));
        let dm = DirectMap::build(&mut tables, &mut frames, FMT, mem, max).unwrap();
        (tables, frames, dm)
    }

    #[test]
    fn layout_uses_the_largest_aligned_leaves() {
        // 3 GiB + 6 MiB + 12 KiB: three 1G leaves, three 2M leaves, three 4K leaves at the edge.
        let mem = (3 << 30) + (6 << 20) + (12 << 10);
        let (t, _, dm) = build(mem, PageSize::G1);
        assert_eq!(dm.leaf_counts(), PerSize([3, 3, 3]));
        assert_eq!(dm.meminfo_kb().total(), mem / 1024);
        assert_eq!(dm.leaf_size(&t, Spa::new(mem - 1)), Some(PageSize::K4));
        assert_eq!(dm.leaf_size(&t, Spa::new(mem)), None);
        let (_, _, dm2) = build(4 << 30, PageSize::M2);
        assert_eq!(dm2.leaf_counts(), PerSize([0, 2048, 0]));
    }

    /// S5 point 5 (spec/snp.md §6): a 4K split inside a 1G leaf is one level-3 and one
    /// level-2 split; the rest of the 1G stays 2M.
    #[test]
    fn split_one_level_at_a_time() {
        let (mut t, mut f, mut dm) = build(2 << 30, PageSize::G1);
        let (inv, n) = dm.split_to_4k(&mut t, &mut f, Spa::new(0x4001_0000)).unwrap();
        assert_eq!(n, 2);
        assert!(!inv.is_empty());
        inv.ignore();
        assert_eq!((dm.level3_splits, dm.level2_splits), (1, 1));
        assert_eq!(dm.leaf_size(&t, Spa::new(0x4001_0000)), Some(PageSize::K4));
        assert_eq!(dm.leaf_size(&t, Spa::new(0x4020_0000)), Some(PageSize::M2));
        assert_eq!(dm.leaf_size(&t, Spa::new(0)), Some(PageSize::G1));
        // Already 4K: nothing to do.
        let (inv, n) = dm.split_to_4k(&mut t, &mut f, Spa::new(0x4001_0000)).unwrap();
        assert_eq!(n, 0);
        assert!(inv.is_empty());
        inv.ignore();
    }

    #[test]
    fn set_leaves_splits_and_merges_without_counting() {
        let (mut t, mut f, mut dm) = build(2 << 30, PageSize::G1);
        dm.set_leaves(&mut t, &mut f, Spa::new(0x4000_0000), PageSize::K4, 2 << 20).unwrap();
        assert_eq!(dm.leaf_size(&t, Spa::new(0x401f_f000)), Some(PageSize::K4));
        assert_eq!(dm.leaf_size(&t, Spa::new(0x4020_0000)), Some(PageSize::M2));
        dm.set_leaves(&mut t, &mut f, Spa::new(0x4000_0000), PageSize::G1, 1 << 30).unwrap();
        assert_eq!(dm.leaf_counts(), PerSize([0, 0, 2]));
        assert_eq!((dm.level2_splits, dm.level3_splits), (0, 0), "initial state is not a split");
        assert!(dm.set_leaves(&mut t, &mut f, Spa::new(0x1000), PageSize::M2, 2 << 20).is_err());
        assert!(dm.set_leaves(&mut t, &mut f, Spa::new(0), PageSize::G1, 4 << 30).is_err());
    }

    proptest! {
        /// DirectMap counters equal a recount after any sequence of splits, and the split
        /// counters agree with the leaves they produced (nothing starts at 4K here).
        #[test]
        fn counters_equal_a_recount(pages in proptest::collection::vec(0u64..(4u64 << 18), 1..40)) {
            let mem = 4u64 << 30;
            let (mut t, mut f, mut dm) = build(mem, PageSize::G1);
            for p in pages {
                dm.split_to_4k(&mut t, &mut f, Spa::new(p << 12)).unwrap().0.ignore();
            }
            let c = dm.leaf_counts();
            prop_assert_eq!(dm.meminfo_kb().total(), mem / 1024);
            prop_assert_eq!(c[PageSize::K4], dm.level2_splits * 512);
            prop_assert_eq!(c[PageSize::G1], 4 - dm.level3_splits);
            prop_assert_eq!(c[PageSize::M2], dm.level3_splits * 512 - dm.level2_splits);
            let mut recount = PerSize([0u64; 3]);
            let mut pa = 0;
            while pa < mem {
                let s = dm.leaf_size(&t, Spa::new(pa)).unwrap();
                recount[s] += 1;
                pa += s.bytes();
            }
            prop_assert_eq!(recount, c);
        }
    }
}
