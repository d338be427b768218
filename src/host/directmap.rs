//! The kernel direct map ("physmap"): all of physical memory mapped at `PAGE_OFFSET` in the
//! kernel page table, with the largest leaves alignment allows (arch/x86/mm/init.c
//! `kernel_physical_mapping_init`), and the primitives Linux CPA applies to it
//! (arch/x86/mm/pat/set_memory.c): one-level splits, attribute changes of one leaf, and the
//! v6.15 PMD/PUD collapse checks. The CPA policy that drives them is [`crate::host::cpa`].
//!
//! Counters follow what Linux exports (spec/physmap.md H20): `DirectMap4k/2M/1G` of
//! /proc/meminfo come from `direct_pages_count`, kept exactly as Linux keeps it — set when the
//! map is built, moved by `split_page_count` and `collapse_page_count`, and *not* changed by
//! making a page not present — and `direct_map_level{2,3}_{splits,collapses}` of /proc/vmstat
//! count only once `system_state == SYSTEM_RUNNING` (both helpers check it). Mappings the
//! kernel page table holds outside the direct map (kernel `map` events) are not counted, as in
//! Linux (`__split_large_page` counts only `virt_addr_valid` addresses).
//!
//! Not-present leaves (`set_memory_np`, `set_direct_map_invalid_noflush`): mmu-model writes
//! leaves through [`LeafAttrs`], which always sets P, so a not-present leaf is modelled by
//! unmapping it and keeping a record of its size, frame and attributes here; lookups, splits
//! and the counters see it as Linux sees a non-present PTE that keeps its PFN and flags. The
//! hardware walk sees an empty entry, which faults exactly as a not-present one does.

use mmu_model::{
    ENTRIES_PER_TABLE, FrameSource, LeafAttrs, MergeError, PageTable, Paging, PendingInvalidation,
    PhysMemTables, PteFlags, PteFormat,
};
use sim_core::stats::PerSize;
use sim_core::{Hva, PageSize, Spa};
use std::collections::BTreeMap;

/// Start of the direct map with 4-level paging and no KASLR: `0xffff888000000000`
/// (Linux Documentation/arch/x86/x86_64/mm.rst, "direct mapping of all physical memory").
pub const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;

/// `_PAGE_KERNEL_4K` (v6.15): software bit 11 (`_PAGE_BIT_SOFTW3`) that `set_memory_4k` sets
/// on the PTEs it forces to 4K so that no collapse turns them back into a large page
/// (arch/x86/include/asm/pgtable_types.h in commit 41d88484c71c).
pub const KERNEL_4K: PteFlags = PteFlags::AVL11;

/// Leaf counts per size in kB, as /proc/meminfo prints `DirectMap4k/2M/1G`.
pub fn kb(leaves: PerSize<u64>) -> PerSize<u64> {
    let c = leaves;
    PerSize([c[PageSize::K4] * 4, c[PageSize::M2] * 2048, c[PageSize::G1] * 1024 * 1024])
}

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
    /// A split of a leaf that is already 4K.
    #[error("{0:#x} is mapped by a 4K leaf: nothing to split")]
    AlreadySmallest(u64),
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

/// One direct-map leaf as CPA sees it (`lookup_address`): present or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmLeaf {
    /// First physical byte it maps (aligned to `size`); the direct map is linear, so this is
    /// also its frame.
    pub base: Spa,
    /// Its size.
    pub size: PageSize,
    /// Its attributes; `flags` lacks [`PteFlags::PRESENT`] for a not-present leaf.
    pub attrs: LeafAttrs,
}

impl DmLeaf {
    /// Whether the leaf is present.
    pub fn present(&self) -> bool {
        self.attrs.flags.contains(PteFlags::PRESENT)
    }
}

/// How a split or collapse is counted (Linux `split_page_count` / `collapse_page_count`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// `system_state == SYSTEM_RUNNING`: DirectMap counts and the vmstat events.
    Running,
    /// Before that (early boot): DirectMap counts only; also tallied in the `boot_*` fields.
    Boot,
    /// Initial state set by a scenario: DirectMap counts only.
    State,
}

/// Why a collapse did not happen (spec/physmap.md §2.2; `collapse_pmd_page`,
/// `collapse_pud_page`, `collapse_large_pages` of commit 41d88484c71c).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CollapseRefusal {
    /// The entry is not a present table of smaller leaves (already a leaf, not present, or a
    /// leaf above it): `collapse_large_pages` gives up before trying.
    NotATable,
    /// The first entry's frame is not aligned to the large size.
    Misaligned,
    /// The first PTE carries `_PAGE_KERNEL_4K` ("the page is 4k intentionally").
    Kernel4k,
    /// An entry is not present.
    NotPresent,
    /// A PMD entry is a table rather than a 2M leaf (PUD collapse).
    NotLeaf,
    /// An entry's flags differ from the first's.
    NotUniform,
    /// An entry's frame does not continue the first's.
    NotContiguous,
    /// PUD collapse without `direct_gbpages` (`nogbpages`).
    NoGbPages,
}

fn refusal<V: mmu_model::PagedAddr>(e: MergeError<V>) -> CollapseRefusal {
    match e {
        MergeError::NotPresent { .. } => CollapseRefusal::NotPresent,
        MergeError::NotLeaf { .. } => CollapseRefusal::NotLeaf,
        MergeError::NotUniform { .. } => CollapseRefusal::NotUniform,
        MergeError::NotContiguous { .. } => CollapseRefusal::NotContiguous,
        MergeError::Misaligned { .. } => CollapseRefusal::Misaligned,
        // NotATable, and the misuse variants (a non-canonical address, a 4K target) that a
        // direct-map collapse cannot produce; MergeError is non-exhaustive.
        _ => CollapseRefusal::NotATable,
    }
}

/// PMD collapse of the 2M region holding `va` in any kernel page table: Linux
/// `collapse_pmd_page` behind `collapse_large_pages`' precondition. The checks run in Linux's
/// order: the PMD must be a table; the first PTE's frame 2M-aligned; the first PTE without
/// `_PAGE_KERNEL_4K`; then all 512 PTEs present, with identical flags and contiguous frames
/// (the last three by [`PageTable::merge`], which also frees the PTE page through `frames`).
///
/// # Errors
/// The [`CollapseRefusal`]; nothing changes then.
pub fn collapse_pmd(
    pt: &mut PageTable,
    tables: &mut PhysMemTables,
    frames: &mut impl FrameSource,
    va: Hva,
) -> Result<PendingInvalidation<Hva>, CollapseRefusal> {
    let base = va.align_down(PageSize::M2);
    match pt.lookup(tables, base) {
        Some(l) if l.size != PageSize::K4 => return Err(CollapseRefusal::NotATable),
        Some(l) if !l.frame.is_aligned(PageSize::M2) => return Err(CollapseRefusal::Misaligned),
        Some(l) if l.attrs.flags.contains(KERNEL_4K) => return Err(CollapseRefusal::Kernel4k),
        Some(_) | None => {}
    }
    pt.merge(tables, frames, base, PageSize::M2).map_err(refusal)
}

/// PUD collapse of the 1G region holding `va`: Linux `collapse_pud_page`, tried only after a
/// PMD collapse succeeded. Needs `direct_gbpages`; the first PMD must be a 2M leaf with a
/// 1G-aligned frame; then all 512 PMDs present 2M leaves with identical flags and contiguous
/// frames. Frees the PMD page through `frames`.
///
/// # Errors
/// The [`CollapseRefusal`]; nothing changes then.
pub fn collapse_pud(
    pt: &mut PageTable,
    tables: &mut PhysMemTables,
    frames: &mut impl FrameSource,
    va: Hva,
    gbpages: bool,
) -> Result<PendingInvalidation<Hva>, CollapseRefusal> {
    if !gbpages {
        return Err(CollapseRefusal::NoGbPages);
    }
    let base = va.align_down(PageSize::G1);
    match pt.lookup(tables, base) {
        None => return Err(CollapseRefusal::NotPresent),
        Some(l) if l.size == PageSize::G1 => return Err(CollapseRefusal::NotATable),
        Some(l) if l.size == PageSize::K4 => return Err(CollapseRefusal::NotLeaf),
        Some(l) if !l.frame.is_aligned(PageSize::G1) => return Err(CollapseRefusal::Misaligned),
        Some(_) => {}
    }
    pt.merge(tables, frames, base, PageSize::G1).map_err(refusal)
}

/// What one collapse attempt at a PMD-aligned address did.
#[derive(Debug)]
pub struct CollapseAttempt {
    /// The PMD collapse: `Err(NotATable)` when `collapse_large_pages` did not try.
    pub pmd: Result<(), CollapseRefusal>,
    /// The PUD collapse, tried only after a PMD collapse.
    pub pud: Option<Result<(), CollapseRefusal>>,
    /// What the collapses require of the TLBs (one full flush in Linux).
    pub inv: PendingInvalidation<Hva>,
}

impl CollapseAttempt {
    /// Whether `collapse_pmd_page` ran (the precondition held).
    pub fn tried(&self) -> bool {
        self.pmd != Err(CollapseRefusal::NotATable)
    }

    /// Large pages made (0, 1 or 2).
    pub fn collapsed(&self) -> u32 {
        u32::from(self.pmd.is_ok()) + u32::from(matches!(self.pud, Some(Ok(()))))
    }
}

/// The direct map and its Linux counters.
#[derive(Clone, Debug)]
pub struct DirectMap {
    pt: PageTable,
    end: u64,
    max: PageSize,
    /// `direct_pages_count`: leaves per size, present or not.
    pages: PerSize<u64>,
    /// Not-present leaves by first physical byte: (size, attributes without P).
    removed: BTreeMap<u64, (PageSize, LeafAttrs)>,
    /// `direct_map_level2_splits` (2M → 4K).
    pub level2_splits: u64,
    /// `direct_map_level3_splits` (1G → 2M).
    pub level3_splits: u64,
    /// `direct_map_level2_collapses`.
    pub level2_collapses: u64,
    /// `direct_map_level3_collapses`.
    pub level3_collapses: u64,
    /// Splits made before `SYSTEM_RUNNING` (not in the vmstat counters).
    pub boot_splits: u64,
    /// Collapses made before `SYSTEM_RUNNING` (not in the vmstat counters).
    pub boot_collapses: u64,
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
            max,
            pages: PerSize::default(),
            removed: BTreeMap::new(),
            level2_splits: 0,
            level3_splits: 0,
            level2_collapses: 0,
            level3_collapses: 0,
            boot_splits: 0,
            boot_collapses: 0,
        };
        let mut pa = 0u64;
        while pa < memory {
            let size = [PageSize::G1, PageSize::M2, PageSize::K4]
                .into_iter()
                .find(|s| *s <= max && pa.is_multiple_of(s.bytes()) && pa + s.bytes() <= memory)
                .unwrap_or(PageSize::K4);
            let (va, spa, attrs) = (dm_va(Spa::new(pa)), Spa::new(pa), LeafAttrs::KERNEL_RW);
            // Where the next 512 leaves are all of this size (a table-aligned stretch: the
            // next size up is not allowed, or `pa` would have taken it), one table at once.
            let reach = ENTRIES_PER_TABLE as u64 * size.bytes();
            let leaves = if pa.is_multiple_of(reach) && pa + reach <= memory {
                dm.pt
                    .map_table(tables, frames, va, spa, size, attrs)
                    .map_err(|_| DirectMapError::OutOfFrames)?;
                ENTRIES_PER_TABLE as u64
            } else {
                dm.pt
                    .map(tables, frames, va, spa, size, attrs)
                    .map_err(|_| DirectMapError::OutOfFrames)?
                    // A fresh mapping at boot: no TLB holds anything for it.
                    .ignore();
                1
            };
            // update_page_count() of kernel_physical_mapping_init.
            dm.pages[size] += leaves;
            pa += leaves * size.bytes();
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

    /// Whether 1G leaves are allowed (`direct_gbpages`).
    pub fn gbpages(&self) -> bool {
        self.max == PageSize::G1
    }

    /// The leaf, present or not, mapping `spa`; `None` outside memory or in a hole.
    pub fn leaf(&self, tables: &PhysMemTables, spa: Spa) -> Option<DmLeaf> {
        if spa.raw() >= self.end {
            return None;
        }
        if let Some(l) = self.pt.lookup(tables, dm_va(spa)) {
            return Some(DmLeaf { base: spa.align_down(l.size), size: l.size, attrs: l.attrs });
        }
        let (&base, &(size, attrs)) = self.removed.range(..=spa.raw()).next_back()?;
        (spa.raw() < base + size.bytes()).then(|| DmLeaf { base: Spa::new(base), size, attrs })
    }

    /// The leaf size mapping `spa`, present or not; `None` outside memory or in a hole.
    pub fn leaf_size(&self, tables: &PhysMemTables, spa: Spa) -> Option<PageSize> {
        self.leaf(tables, spa).map(|l| l.size)
    }

    /// Give `leaf` the attributes `attrs` (P included or not), keeping its frame and size.
    /// Returns what must be invalidated (nothing when a not-present leaf changes or becomes
    /// present: not-present entries are never cached).
    ///
    /// # Errors
    /// [`DirectMapError::Layout`] if `leaf` is not the current leaf there (a model bug).
    pub fn set_attrs(
        &mut self,
        tables: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        leaf: &DmLeaf,
        attrs: LeafAttrs,
    ) -> Result<PendingInvalidation<Hva>, DirectMapError> {
        let bad = |why: &str| DirectMapError::Layout {
            spa: leaf.base.raw(),
            size: leaf.size,
            why: why.to_owned(),
        };
        let va = dm_va(leaf.base);
        let now_present = attrs.flags.contains(PteFlags::PRESENT);
        match (leaf.present(), now_present) {
            (true, true) => {
                self.pt.protect(tables, va, leaf.size, attrs).map_err(|e| bad(&e.to_string()))
            }
            (true, false) => {
                let (_, inv) =
                    self.pt.unmap(tables, va, leaf.size).map_err(|e| bad(&e.to_string()))?;
                self.removed.insert(leaf.base.raw(), (leaf.size, attrs));
                Ok(inv)
            }
            (false, true) => {
                self.removed.remove(&leaf.base.raw()).ok_or_else(|| bad("no record"))?;
                self.pt
                    .map(tables, frames, va, leaf.base, leaf.size, attrs)
                    .map_err(|e| bad(&e.to_string()))
            }
            (false, false) => {
                let r = self.removed.get_mut(&leaf.base.raw()).ok_or_else(|| bad("no record"))?;
                r.1 = attrs;
                Ok(PendingInvalidation::none())
            }
        }
    }

    /// Split the large leaf mapping `spa` one level (1G → 2M or 2M → 4K), present or not, with
    /// one page-table page from `frames`, and count it (`split_page_count`). The children keep
    /// the leaf's attributes (`__split_large_page`). Returns the new size and what must be
    /// invalidated (Linux follows every split with `flush_tlb_all`).
    ///
    /// # Errors
    /// [`DirectMapError`]: outside memory, already 4K, or no frame.
    pub fn split(
        &mut self,
        tables: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        spa: Spa,
        count: Count,
    ) -> Result<(PageSize, PendingInvalidation<Hva>), DirectMapError> {
        let leaf = self.leaf(tables, spa).ok_or(DirectMapError::Outside(spa.raw()))?;
        let small = leaf.size.next_smaller().ok_or(DirectMapError::AlreadySmallest(spa.raw()))?;
        let inv = if leaf.present() {
            let (_, inv) = self
                .pt
                .split(tables, frames, dm_va(spa))
                .map_err(|_| DirectMapError::OutOfFrames)?;
            inv
        } else {
            // A not-present large leaf splits into 512 not-present children. Map it present
            // for the split (the page-table primitive splits present leaves only), then take
            // the children out again: all within this one event, so no TLB can see it.
            let present = LeafAttrs { flags: leaf.attrs.flags | PteFlags::PRESENT, ..leaf.attrs };
            let table_before = self.pt.table_pages();
            self.removed.remove(&leaf.base.raw());
            self.pt
                .map(tables, frames, dm_va(leaf.base), leaf.base, leaf.size, present)
                .map_err(|_| DirectMapError::OutOfFrames)?
                .ignore(); // over a not-present entry: nothing cached
            debug_assert_eq!(self.pt.table_pages(), table_before, "the leaf's tables existed");
            let (_, inv) = self
                .pt
                .split(tables, frames, dm_va(spa))
                .map_err(|_| DirectMapError::OutOfFrames)?;
            // The temporary present leaf was never visible to a TLB.
            inv.ignore();
            for i in 0..512u64 {
                let child = Spa::new(leaf.base.raw() + i * small.bytes());
                let (_, t) = self.pt.unmap(tables, dm_va(child), small).map_err(|e| {
                    DirectMapError::Layout { spa: child.raw(), size: small, why: e.to_string() }
                })?;
                t.ignore(); // present only inside this event, never cached
                self.removed.insert(child.raw(), (small, leaf.attrs));
            }
            PendingInvalidation::none()
        };
        self.pages[leaf.size] -= 1;
        self.pages[small] += 512;
        match count {
            Count::Running => match leaf.size {
                PageSize::G1 => self.level3_splits += 1,
                PageSize::M2 => self.level2_splits += 1,
                PageSize::K4 => {}
            },
            Count::Boot => self.boot_splits += 1,
            Count::State => {}
        }
        Ok((small, inv))
    }

    /// `set_memory_4k(__va(spa), 1)`'s splits alone: split whatever large leaf maps `spa`, one
    /// level at a time (1G → 2M, then the 2M holding `spa` → 4K), counted as running. Returns
    /// what must be flushed and how many splits were made. (CPA proper, with the
    /// `_PAGE_KERNEL_4K` tag and the flushes, is [`crate::host::cpa`].)
    ///
    /// # Errors
    /// [`DirectMapError`] if `spa` is outside memory or no table page can be allocated.
    pub fn split_to_4k(
        &mut self,
        tables: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        spa: Spa,
    ) -> Result<(PendingInvalidation<Hva>, u32), DirectMapError> {
        self.split_until(tables, frames, spa, PageSize::K4, Count::Running)
    }

    fn split_until(
        &mut self,
        tables: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        spa: Spa,
        target: PageSize,
        count: Count,
    ) -> Result<(PendingInvalidation<Hva>, u32), DirectMapError> {
        let mut inv = PendingInvalidation::none();
        let mut splits = 0;
        loop {
            let size = self.leaf_size(tables, spa).ok_or(DirectMapError::Outside(spa.raw()))?;
            if size <= target {
                return Ok((inv, splits));
            }
            let (_, token) = self.split(tables, frames, spa, count)?;
            inv.merge(token);
            splits += 1;
        }
    }

    /// Try the v6.15 collapse at the PMD-aligned address holding `spa` (Linux
    /// `collapse_large_pages`): a PMD collapse, then, if it succeeded, a PUD collapse. Counts
    /// what collapsed (`collapse_page_count`). The freed table pages go back through `frames`.
    pub fn try_collapse(
        &mut self,
        tables: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        spa: Spa,
        count: Count,
    ) -> CollapseAttempt {
        let va = dm_va(spa);
        let gbpages = self.gbpages();
        let mut inv = PendingInvalidation::none();
        let pmd = collapse_pmd(&mut self.pt, tables, frames, va).map(|t| inv.merge(t));
        let pud = pmd
            .is_ok()
            .then(|| collapse_pud(&mut self.pt, tables, frames, va, gbpages).map(|t| inv.merge(t)));
        let mut counted = |size: PageSize| {
            let small = size.next_smaller().unwrap_or(PageSize::K4);
            self.pages[size] += 1;
            self.pages[small] -= 512;
            match count {
                Count::Running if size == PageSize::G1 => self.level3_collapses += 1,
                Count::Running => self.level2_collapses += 1,
                Count::Boot => self.boot_collapses += 1,
                Count::State => {}
            }
        };
        if pmd.is_ok() {
            counted(PageSize::M2);
        }
        if matches!(pud, Some(Ok(()))) {
            counted(PageSize::G1);
        }
        CollapseAttempt { pmd, pud, inv }
    }

    /// Set the leaves of `[spa, spa+len)` to exactly `size` (scenario `state directmap`):
    /// larger leaves are split, smaller uniform ones merged. Initial state: the vmstat counters
    /// and TLBs are not touched (the DirectMap counts follow the leaves).
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
        let mut pa = spa.raw();
        while pa < spa.raw() + len {
            let at = Spa::new(pa);
            let (token, _) = self.split_until(tables, frames, at, size, Count::State)?;
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
                        let (t, _) =
                            self.split_until(tables, frames, Spa::new(sub), s, Count::State)?;
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
                    self.pages[s] -= 512;
                    self.pages[up] += 1;
                    s = up;
                }
            }
            pa += size.bytes();
        }
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

    /// `direct_pages_count`: direct-map leaves per size, present or not.
    pub fn leaf_counts(&self) -> PerSize<u64> {
        self.pages
    }

    /// `DirectMap4k/2M/1G` in kB, as /proc/meminfo prints them.
    pub fn meminfo_kb(&self) -> PerSize<u64> {
        kb(self.pages)
    }

    /// Count the direct map's leaves by walking it (present or not): what
    /// [`DirectMap::leaf_counts`] must equal.
    pub fn recount(&self, tables: &PhysMemTables) -> PerSize<u64> {
        let mut c = PerSize([0u64; 3]);
        let mut pa = 0;
        while pa < self.end {
            match self.leaf(tables, Spa::new(pa)) {
                Some(l) => {
                    c[l.size] += 1;
                    pa = l.base.raw() + l.size.bytes();
                }
                None => pa += 4096,
            }
        }
        c
    }

    /// Not-present direct-map leaves.
    pub fn not_present(&self) -> usize {
        self.removed.len()
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
        assert_eq!(dm.recount(&t), PerSize([3, 3, 3]));
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
        assert_eq!(dm.leaf_counts(), dm.recount(&t));
        dm.set_leaves(&mut t, &mut f, Spa::new(0x4000_0000), PageSize::G1, 1 << 30).unwrap();
        assert_eq!(dm.leaf_counts(), PerSize([0, 0, 2]));
        assert_eq!((dm.level2_splits, dm.level3_splits), (0, 0), "initial state is not a split");
        assert!(dm.set_leaves(&mut t, &mut f, Spa::new(0x1000), PageSize::M2, 2 << 20).is_err());
        assert!(dm.set_leaves(&mut t, &mut f, Spa::new(0), PageSize::G1, 4 << 30).is_err());
    }

    /// A not-present leaf keeps its place in the counts and splits like a present one, into
    /// not-present children; making it present again restores the mapping.
    #[test]
    fn not_present_leaves_are_recorded() {
        let (mut t, mut f, mut dm) = build(2 << 30, PageSize::G1);
        let leaf = dm.leaf(&t, Spa::new(0x4000_0000)).unwrap();
        let np = LeafAttrs { flags: leaf.attrs.flags - PteFlags::PRESENT, ..leaf.attrs };
        dm.set_attrs(&mut t, &mut f, &leaf, np).unwrap().ignore();
        assert!(dm.table().lookup(&t, dm_va(Spa::new(0x4000_0000))).is_none());
        assert_eq!(dm.leaf(&t, Spa::new(0x4123_4000)).unwrap().size, PageSize::G1);
        assert_eq!(dm.leaf_counts(), PerSize([0, 0, 2]));
        let (s, inv) = dm.split(&mut t, &mut f, Spa::new(0x4123_4000), Count::Running).unwrap();
        assert_eq!(s, PageSize::M2);
        assert!(inv.is_empty(), "nothing of a not-present leaf is cached");
        inv.ignore();
        assert_eq!(dm.not_present(), 512);
        assert_eq!(dm.leaf_counts(), dm.recount(&t));
        let child = dm.leaf(&t, Spa::new(0x4123_4000)).unwrap();
        assert_eq!((child.base, child.present()), (Spa::new(0x4120_0000), false));
        dm.set_attrs(&mut t, &mut f, &child, leaf.attrs).unwrap().ignore();
        let l = dm.table().lookup(&t, dm_va(Spa::new(0x4123_4000))).unwrap();
        assert_eq!((l.size, l.frame), (PageSize::M2, Spa::new(0x4120_0000)));
    }

    fn pages_of(dm: &DirectMap, t: &PhysMemTables, base: u64, n: u64) -> Vec<DmLeaf> {
        (0..n).map(|i| dm.leaf(t, Spa::new(base + i * 4096)).unwrap()).collect()
    }

    /// PMD collapse then PUD collapse restore a 1G leaf and free both table pages.
    #[test]
    fn collapse_pmd_then_pud() {
        let (mut t, mut f, mut dm) = build(2 << 30, PageSize::G1);
        dm.split_to_4k(&mut t, &mut f, Spa::new(0x4000_5000)).unwrap().0.ignore();
        let tables = f.allocated();
        let a = dm.try_collapse(&mut t, &mut f, Spa::new(0x4000_5000), Count::Running);
        assert_eq!((a.pmd, a.pud), (Ok(()), Some(Ok(()))));
        assert_eq!(a.collapsed(), 2);
        a.inv.ignore();
        assert_eq!(f.allocated(), tables - 2);
        assert_eq!((dm.level2_collapses, dm.level3_collapses), (1, 1));
        assert_eq!(dm.leaf_counts(), PerSize([0, 0, 2]));
        assert_eq!(dm.leaf_counts(), dm.recount(&t));
    }

    /// Each collapse condition refuses on its own.
    #[test]
    fn collapse_refusals() {
        let (mut t, mut f, mut dm) = build(2 << 30, PageSize::G1);
        // A large leaf: nothing to collapse.
        let a = dm.try_collapse(&mut t, &mut f, Spa::new(0), Count::Running);
        assert_eq!(a.pmd, Err(CollapseRefusal::NotATable));
        assert!(!a.tried());
        a.inv.ignore();
        dm.split_to_4k(&mut t, &mut f, Spa::new(0x4000_0000)).unwrap().0.ignore();
        let ps = pages_of(&dm, &t, 0x4000_0000, 3);
        // First PTE tagged _PAGE_KERNEL_4K.
        let k4 = LeafAttrs { flags: ps[0].attrs.flags | KERNEL_4K, ..ps[0].attrs };
        dm.set_attrs(&mut t, &mut f, &ps[0], k4).unwrap().ignore();
        let a = dm.try_collapse(&mut t, &mut f, Spa::new(0x4000_0000), Count::Running);
        assert_eq!(a.pmd, Err(CollapseRefusal::Kernel4k));
        a.inv.ignore();
        let first = dm.leaf(&t, Spa::new(0x4000_0000)).unwrap();
        dm.set_attrs(&mut t, &mut f, &first, ps[0].attrs).unwrap().ignore();
        // A PTE with other flags.
        let ro = LeafAttrs { flags: ps[1].attrs.flags - PteFlags::WRITABLE, ..ps[1].attrs };
        dm.set_attrs(&mut t, &mut f, &ps[1], ro).unwrap().ignore();
        let a = dm.try_collapse(&mut t, &mut f, Spa::new(0x4000_0000), Count::Running);
        assert_eq!(a.pmd, Err(CollapseRefusal::NotUniform));
        a.inv.ignore();
        let second = dm.leaf(&t, Spa::new(0x4000_1000)).unwrap();
        dm.set_attrs(&mut t, &mut f, &second, ps[1].attrs).unwrap().ignore();
        // A not-present PTE.
        let np = LeafAttrs { flags: ps[2].attrs.flags - PteFlags::PRESENT, ..ps[2].attrs };
        dm.set_attrs(&mut t, &mut f, &ps[2], np).unwrap().ignore();
        let a = dm.try_collapse(&mut t, &mut f, Spa::new(0x4000_0000), Count::Running);
        assert_eq!(a.pmd, Err(CollapseRefusal::NotPresent));
        a.inv.ignore();
        let third = dm.leaf(&t, Spa::new(0x4000_2000)).unwrap();
        dm.set_attrs(&mut t, &mut f, &third, ps[2].attrs).unwrap().ignore();
        // Now uniform: the PMD collapses, but the PUD does not without gbpages.
        dm.max = PageSize::M2;
        let a = dm.try_collapse(&mut t, &mut f, Spa::new(0x4000_0000), Count::Running);
        assert_eq!((a.pmd, a.pud), (Ok(()), Some(Err(CollapseRefusal::NoGbPages))));
        a.inv.ignore();
        dm.max = PageSize::G1;
        // A PMD whose 2M leaves differ: PUD refused for uniformity.
        dm.split_to_4k(&mut t, &mut f, Spa::new(0x4040_0000)).unwrap().0.ignore();
        let m = dm.leaf(&t, Spa::new(0x4020_0000)).unwrap();
        let nx = LeafAttrs { flags: m.attrs.flags - PteFlags::NO_EXECUTE, ..m.attrs };
        dm.set_attrs(&mut t, &mut f, &m, nx).unwrap().ignore();
        let a = dm.try_collapse(&mut t, &mut f, Spa::new(0x4040_0000), Count::Running);
        assert_eq!((a.pmd, a.pud), (Ok(()), Some(Err(CollapseRefusal::NotUniform))));
        a.inv.ignore();
        let m2 = dm.leaf(&t, Spa::new(0x4020_0000)).unwrap();
        dm.set_attrs(&mut t, &mut f, &m2, m.attrs).unwrap().ignore();
        // A PMD that is still a table below the PUD: NotLeaf.
        dm.split_to_4k(&mut t, &mut f, Spa::new(0x4060_0000)).unwrap().0.ignore();
        dm.split_to_4k(&mut t, &mut f, Spa::new(0x4080_0000)).unwrap().0.ignore();
        let a = dm.try_collapse(&mut t, &mut f, Spa::new(0x4080_0000), Count::Running);
        assert_eq!((a.pmd, a.pud), (Ok(()), Some(Err(CollapseRefusal::NotLeaf))));
        a.inv.ignore();
        assert_eq!(dm.leaf_counts(), dm.recount(&t));
        assert_eq!((dm.level2_collapses, dm.level3_collapses), (3, 0));
    }

    /// Alignment and contiguity can only fail outside the linear direct map: a kernel table
    /// mapping 512 contiguous frames that start 4K past a 2M boundary, then one out of order.
    #[test]
    fn collapse_refuses_misaligned_and_discontiguous_frames() {
        let mut t = PhysMemTables::new();
        let mut f: LinearFrames =
            LinearFrames::new(Spa::new(1 << 40), Spa::new((1 << 40) + (1 << 24)));
        let mut pt: PageTable =
            PageTable::new(&mut t, &mut f, Paging::FourLevel, FMT, PteFlags::KERNEL_TABLE).unwrap();
        let va = Hva::new(0xffff_c900_0000_0000);
        for i in 0..512u64 {
            pt.map(
                &mut t,
                &mut f,
                Hva::new(va.raw() + i * 4096),
                Spa::new(0x1000 + i * 4096),
                PageSize::K4,
                LeafAttrs::KERNEL_RW,
            )
            .unwrap()
            .ignore();
        }
        assert_eq!(
            collapse_pmd(&mut pt, &mut t, &mut f, va).err(),
            Some(CollapseRefusal::Misaligned)
        );
        let va2 = Hva::new(0xffff_c900_0020_0000);
        for i in 0..512u64 {
            let frame = if i == 7 { 0x4000_0000 } else { 0x20_0000 + i * 4096 };
            pt.map(
                &mut t,
                &mut f,
                Hva::new(va2.raw() + i * 4096),
                Spa::new(frame),
                PageSize::K4,
                LeafAttrs::KERNEL_RW,
            )
            .unwrap()
            .ignore();
        }
        assert_eq!(
            collapse_pmd(&mut pt, &mut t, &mut f, va2).err(),
            Some(CollapseRefusal::NotContiguous)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Direct-map counters equal a recount of the page tables after any sequence of
        /// splits, attribute changes (present or not) and collapses; the vmstat counters agree
        /// with the leaves they produced.
        #[test]
        fn counters_equal_a_recount(
            ops in proptest::collection::vec((0u8..4, 0u64..(4u64 << 18)), 1..60),
        ) {
            let mem = 4u64 << 30;
            let (mut t, mut f, mut dm) = build(mem, PageSize::G1);
            for (op, p) in ops {
                let spa = Spa::new(p << 12);
                match op {
                    0 => dm.split_to_4k(&mut t, &mut f, spa).unwrap().0.ignore(),
                    1 => dm.try_collapse(&mut t, &mut f, spa, Count::Running).inv.ignore(),
                    2 | 3 => {
                        let l = dm.leaf(&t, spa).unwrap();
                        let flag = if op == 2 { PteFlags::PRESENT } else { PteFlags::WRITABLE };
                        let attrs = LeafAttrs { flags: l.attrs.flags ^ flag, ..l.attrs };
                        dm.set_attrs(&mut t, &mut f, &l, attrs).unwrap().ignore();
                    }
                    _ => unreachable!(),
                }
                prop_assert_eq!(dm.leaf_counts(), dm.recount(&t));
            }
            let c = dm.leaf_counts();
            prop_assert_eq!(dm.meminfo_kb().total(), mem / 1024);
            let l2 = dm.level2_splits - dm.level2_collapses;
            let l3 = dm.level3_splits - dm.level3_collapses;
            prop_assert_eq!(c[PageSize::K4], l2 * 512);
            prop_assert_eq!(c[PageSize::G1], 4 - l3);
            prop_assert_eq!(c[PageSize::M2], l3 * 512 - l2);
        }
    }
}
