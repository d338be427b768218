//! Linux CPA (`change_page_attr`, arch/x86/mm/pat/set_memory.c) on the direct map: the
//! `set_memory_*` and `set_direct_map_*` requests of host-kernel agents (`Event::Cpa`).
//!
//! What a request does, as the Linux source reads (torvalds/linux set_memory.c, read for this
//! model; v6.15 collapse from commit 41d88484c71c "x86/mm/pat: restore large ROX pages after
//! fragmentation"; spec/physmap.md §2.1–2.3):
//!
//! - **Masks.** Each op sets and clears PTE bits: `ro` clears RW|Dirty, `rw` sets RW, `rox`
//!   clears RW|Dirty|NX and asks for collapse (`CPA_COLLAPSE`, its only user), `x` clears NX,
//!   `nx` sets NX, `np` clears P, `p` sets P, `4k` sets `_PAGE_KERNEL_4K` and forces splits,
//!   `encrypted`/`decrypted` set/clear the C-bit, `dm-invalid` clears P|RW and `dm-default` /
//!   `dm-valid` set P|RW. A result without P also loses G (`pgprot_clear_protnone_bits`), and
//!   nothing gives G back when P returns.
//! - **Walk.** Page by page from the first: a hole (no entry) is skipped one page at a time; a
//!   4K PTE gets the new bits, and the request is marked as having changed something
//!   (`CPA_FLUSHTLB`) only if the PTE changed; a large leaf (`__should_split_large_page`) is
//!   kept as it is if the new bits equal the old ("sameprot", whatever the range), kept and
//!   changed if the request covers it whole and aligned ("preserved"), and otherwise split —
//!   one level, only the leaf holding the address — and looked up again. `4k` always splits
//!   (`force_split`). Static protections (kernel text, rodata, PCI BIOS) and the W^X warning
//!   are not modelled: the simulated direct map holds no kernel image.
//! - **Splits.** Each split takes one page-table page (from the buddy allocator, or from the
//!   boot pool before it exists), moves `direct_pages_count` (vmstat counted only when
//!   running), and is followed by `flush_tlb_all()` (`__split_large_page`).
//! - **Flush.** `cpa_flush` runs if something changed: a per-page flush of the request range on
//!   every CPU, or `flush_tlb_all()` above `tlb_single_page_flush_ceiling` pages. `encrypted` /
//!   `decrypted` flush after the change unconditionally (`__set_memory_enc_pgtable`); their
//!   optional flush *before* the change (`enc_tlb_flush_required`, needed only without
//!   SME_COHERENT) is not modelled. The `dm-*` ops are the `_noflush` variants: no `cpa_flush`
//!   (their split flushes still happen); the caller flushes, and until then stale entries stay.
//!   `dm-invalid` and `dm-default` are single-page calls (`set_direct_map_{invalid,default}_noflush`
//!   take one page), so `pages=N` runs N calls; `dm-valid` is one call over N pages
//!   (`set_direct_map_valid_noflush(page, nr, true)`).
//! - **Collapse** (`rox` only, at the end of `cpa_flush`): for every PMD-aligned address of
//!   `[addr & PMD_MASK, addr + pages*4K)`, try a PMD collapse and, if it worked, a PUD collapse
//!   ([`crate::host::directmap::collapse_pmd`], [`crate::host::directmap::collapse_pud`]); if
//!   anything collapsed, one more `flush_tlb_all()`, and the freed table pages go back.
//!
//! The outcome is functional (what changed) plus the ordered flushes Linux issues
//! ([`CpaFlushes`], `#[must_use]`); the machine prices them as shootdowns.

use crate::host::directmap::{Count, DirectMap, DirectMapError, DmLeaf, KERNEL_4K, dm_va};
use mmu_model::{FrameSource, LeafAttrs, PendingInvalidation, PhysMemTables, PteFlags};
use sim_core::event::CpaOp;
use sim_core::stats::PerSize;
use sim_core::{Hva, PageSize, Spa};

/// One TLB flush a CPA request issues, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushStep {
    /// `flush_tlb_all()`: every CPU flushes everything, global entries included.
    All,
    /// `on_each_cpu(__cpa_flush_tlb)`: every CPU invalidates each page of the range.
    Pages {
        /// First page.
        start: Hva,
        /// 4K pages.
        pages: u64,
    },
}

/// The flushes a CPA request requires, in the order Linux issues them. Every page-table change
/// the request made is covered by one of them, except the attribute changes of the `_noflush`
/// ops, which Linux leaves to the caller.
#[must_use = "CPA changes must reach the TLBs: execute the flushes (the machine prices them)"]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpaFlushes {
    steps: Vec<FlushStep>,
}

impl CpaFlushes {
    /// The flushes, in order.
    pub fn steps(&self) -> &[FlushStep] {
        &self.steps
    }

    /// Take the flushes to execute them.
    pub fn into_steps(self) -> Vec<FlushStep> {
        self.steps
    }
}

/// What a request did (CONFIG_X86_CPA_STATISTICS's counters plus the model's own); summed
/// over a run, it is the report's `directmap.cpa` section.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CpaStats {
    /// Calls of `change_page_attr_set_clr` (one per request; N for `dm-invalid`/`dm-default`
    /// over N pages).
    pub calls: u64,
    /// Large leaves checked for preservation, by size ("1G/2M pages checked").
    pub lp_checked: PerSize<u64>,
    /// Of those, kept because the new bits equal the old ("sameprot").
    pub lp_sameprot: PerSize<u64>,
    /// Of those, kept and changed as a whole ("preserved").
    pub lp_preserved: PerSize<u64>,
    /// 4K PTEs given new bits ("4K pages set-checked").
    pub pte_set_checked: u64,
    /// Splits made.
    pub splits: u64,
    /// Collapse attempts (`collapse_pmd_page` calls).
    pub collapse_attempts: u64,
    /// Large pages made by collapse.
    pub collapsed: u64,
    /// Pages of the request with no direct-map entry (holes, or beyond the end of memory).
    pub holes: u64,
}

/// A CPA request could not be carried out (a model limit, not an architectural outcome).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CpaError {
    /// The direct map refused a primitive (no page-table page left, or a model bug).
    #[error("cpa: {0}")]
    DirectMap(#[from] DirectMapError),
}

/// The result of one request.
#[must_use = "CPA changes must reach the TLBs: execute the flushes (the machine prices them)"]
#[derive(Debug)]
pub struct CpaOutcome {
    /// The flushes to execute.
    pub flushes: CpaFlushes,
    /// What it did.
    pub stats: CpaStats,
}

/// When `cpa_flush` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlushWhen {
    /// If an entry changed (`CPA_FLUSHTLB`): `change_page_attr_set_clr`.
    Changed,
    /// Always: `__set_memory_enc_pgtable`.
    Always,
    /// Never: `__set_pages_p` / `__set_pages_np` (the `_noflush` API).
    Never,
}

/// The bits one op sets and clears, and how it flushes.
#[derive(Clone, Copy, Debug)]
struct Masks {
    set: PteFlags,
    clr: PteFlags,
    /// `Some(true)`: set the C-bit; `Some(false)`: clear it.
    enc: Option<bool>,
    force_split: bool,
    collapse: bool,
    flush: FlushWhen,
}

impl Masks {
    const fn new(set: PteFlags, clr: PteFlags) -> Masks {
        Masks {
            set,
            clr,
            enc: None,
            force_split: false,
            collapse: false,
            flush: FlushWhen::Changed,
        }
    }

    /// The new attributes of a leaf with `old` (4K-format and large-format are the same
    /// [`LeafAttrs`]; PAT placement is the page table's business).
    fn apply(&self, old: LeafAttrs) -> LeafAttrs {
        let mut flags = (old.flags - self.clr) | self.set;
        // pgprot_clear_protnone_bits: G means PROTNONE on a not-present entry.
        if !flags.contains(PteFlags::PRESENT) {
            flags -= PteFlags::GLOBAL;
        }
        LeafAttrs { flags, encrypted: self.enc.unwrap_or(old.encrypted), ..old }
    }
}

/// The masks of `op` (set_memory.c: set_memory_ro/rw/rox/x/nx/np/p/4k, __set_memory_enc_pgtable,
/// __set_pages_p/np).
fn masks(op: CpaOp, env: CpaEnv) -> Masks {
    use PteFlags as F;
    let none = F::empty();
    match op {
        CpaOp::Set4k => {
            let mark = if env.kernel_4k_marks { KERNEL_4K } else { none };
            Masks { force_split: true, ..Masks::new(mark, none) }
        }
        CpaOp::Ro => Masks::new(none, F::WRITABLE | F::DIRTY),
        CpaOp::Rw => Masks::new(F::WRITABLE, none),
        CpaOp::Rox => {
            Masks { collapse: true, ..Masks::new(none, F::WRITABLE | F::DIRTY | F::NO_EXECUTE) }
        }
        CpaOp::X => Masks::new(none, F::NO_EXECUTE),
        CpaOp::Nx => Masks::new(F::NO_EXECUTE, none),
        CpaOp::Np => Masks::new(none, F::PRESENT),
        CpaOp::P => Masks::new(F::PRESENT, none),
        CpaOp::Encrypted => {
            Masks { enc: Some(true), flush: FlushWhen::Always, ..Masks::new(none, none) }
        }
        CpaOp::Decrypted => {
            Masks { enc: Some(false), flush: FlushWhen::Always, ..Masks::new(none, none) }
        }
        CpaOp::DirectMapInvalid => {
            Masks { flush: FlushWhen::Never, ..Masks::new(none, F::PRESENT | F::WRITABLE) }
        }
        CpaOp::DirectMapDefault | CpaOp::DirectMapValid => {
            Masks { flush: FlushWhen::Never, ..Masks::new(F::PRESENT | F::WRITABLE, none) }
        }
    }
}

/// The running state CPA sees.
#[derive(Clone, Copy, Debug)]
pub struct CpaEnv {
    /// How splits and collapses are counted (`system_state`).
    pub count: Count,
    /// `tlb_single_page_flush_ceiling`.
    pub flush_ceiling: u64,
    /// `set_memory_4k()` sets `_PAGE_KERNEL_4K` (v6.15+; `host.set_memory_4k_marks`).
    pub kernel_4k_marks: bool,
}

/// Run one CPA request of `op` over `pages` 4K pages from `start` on the direct map, taking
/// split page-table pages from `frames` and giving collapsed ones back to it.
///
/// # Errors
/// [`CpaError`] if a page-table page cannot be allocated (the request stops where it was, as
/// Linux's returns -ENOMEM; the flushes of what was done are lost with it).
pub fn change_page_attr(
    dm: &mut DirectMap,
    tables: &mut PhysMemTables,
    frames: &mut impl FrameSource,
    op: CpaOp,
    start: Spa,
    pages: u64,
    env: CpaEnv,
) -> Result<CpaOutcome, CpaError> {
    let m = masks(op, env);
    let mut run = Run {
        dm,
        tables,
        frames,
        env,
        stats: CpaStats::default(),
        steps: Vec::new(),
        inv: PendingInvalidation::none(),
    };
    let changed = match op {
        // Single-page API: one call per page.
        CpaOp::DirectMapInvalid | CpaOp::DirectMapDefault => {
            let mut any = false;
            for i in 0..pages {
                let Some(p) = start.checked_add(i * 4096) else { break };
                any |= run.set_clr(p, 1, &m)?;
            }
            any
        }
        CpaOp::Set4k
        | CpaOp::Ro
        | CpaOp::Rw
        | CpaOp::Rox
        | CpaOp::X
        | CpaOp::Nx
        | CpaOp::Np
        | CpaOp::P
        | CpaOp::Encrypted
        | CpaOp::Decrypted
        | CpaOp::DirectMapValid => run.set_clr(start, pages, &m)?,
    };
    let flush = match m.flush {
        FlushWhen::Changed => changed,
        FlushWhen::Always => true,
        FlushWhen::Never => false,
    };
    if flush && pages > 0 {
        run.cpa_flush(start, pages, m.collapse);
    }
    let Run { stats, steps, inv, .. } = run;
    // Every change above is covered by `steps` — splits and collapses by their
    // flush_tlb_all, attribute changes by cpa_flush — except those of the _noflush ops, whose
    // staleness is Linux's contract with their callers (they flush, e.g. secretmem with
    // flush_tlb_kernel_range). The machine executes `steps`.
    inv.ignore();
    Ok(CpaOutcome { flushes: CpaFlushes { steps }, stats })
}

/// One request in progress.
struct Run<'a, F: FrameSource> {
    dm: &'a mut DirectMap,
    tables: &'a mut PhysMemTables,
    frames: &'a mut F,
    env: CpaEnv,
    stats: CpaStats,
    steps: Vec<FlushStep>,
    inv: PendingInvalidation<Hva>,
}

impl<F: FrameSource> Run<'_, F> {
    /// `__change_page_attr_set_clr` over `[start, start + numpages)`: returns whether an entry
    /// changed (`CPA_FLUSHTLB`).
    fn set_clr(&mut self, start: Spa, numpages: u64, m: &Masks) -> Result<bool, CpaError> {
        self.stats.calls += 1;
        let mut changed = false;
        let mut cur = 0;
        while cur < numpages {
            let rem = numpages - cur;
            let Some(addr) = start.checked_add(cur * 4096) else {
                self.stats.holes += rem;
                break;
            };
            cur += loop {
                let Some(leaf) = self.dm.leaf(self.tables, addr) else {
                    // __cpa_process_fault: a hole in the direct map is skipped, page by page.
                    self.stats.holes += 1;
                    break 1;
                };
                if leaf.size == PageSize::K4 {
                    self.stats.pte_set_checked += 1;
                    changed |= self.change(&leaf, m.apply(leaf.attrs))?;
                    break 1;
                }
                if !m.force_split {
                    self.stats.lp_checked[leaf.size] += 1;
                    let to_end = (leaf.base.raw() + leaf.size.bytes() - addr.raw()) / 4096;
                    let n = rem.min(to_end);
                    let req = m.apply(leaf.attrs);
                    if req == leaf.attrs {
                        self.stats.lp_sameprot[leaf.size] += 1;
                        break n;
                    }
                    if addr == leaf.base && n == leaf.size.pages_4k() {
                        self.stats.lp_preserved[leaf.size] += 1;
                        changed |= self.change(&leaf, req)?;
                        break n;
                    }
                }
                // split_large_page, then look the address up again ("goto repeat").
                let (_, inv) = self.dm.split(self.tables, self.frames, addr, self.env.count)?;
                self.inv.merge(inv);
                self.stats.splits += 1;
                self.steps.push(FlushStep::All);
            };
        }
        Ok(changed)
    }

    fn change(&mut self, leaf: &DmLeaf, attrs: LeafAttrs) -> Result<bool, CpaError> {
        if attrs == leaf.attrs {
            return Ok(false);
        }
        let inv = self.dm.set_attrs(self.tables, self.frames, leaf, attrs)?;
        self.inv.merge(inv);
        Ok(true)
    }

    /// `cpa_flush`, with the v6.15 collapse at its end when the op asks for it.
    fn cpa_flush(&mut self, start: Spa, pages: u64, collapse: bool) {
        if pages > self.env.flush_ceiling {
            self.steps.push(FlushStep::All);
        } else {
            self.steps.push(FlushStep::Pages { start: dm_va(start), pages });
        }
        if !collapse {
            return;
        }
        // cpa_collapse_large_pages: every PMD-aligned address from addr & PMD_MASK below the
        // end of the range.
        let end = start.raw().saturating_add(pages.saturating_mul(4096)).min(self.dm.end());
        let mut at = start.align_down(PageSize::M2).raw();
        let mut collapsed = 0;
        while at < end {
            let a = self.dm.try_collapse(self.tables, self.frames, Spa::new(at), self.env.count);
            if a.tried() {
                self.stats.collapse_attempts += 1;
            }
            collapsed += a.collapsed();
            self.inv.merge(a.inv);
            at += PageSize::M2.bytes();
        }
        if collapsed > 0 {
            self.stats.collapsed += u64::from(collapsed);
            // One flush_tlb_all before the freed tables are reused (the freeing itself already
            // happened through the frame source; nothing runs in between in this model).
            self.steps.push(FlushStep::All);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmu_model::{CbitPos, LinearFrames, PteFormat};
    use proptest::prelude::*;

    const FMT: PteFormat = PteFormat { phys_bits: 52, cbit: CbitPos(Some(51)) };
    const ENV: CpaEnv = CpaEnv { count: Count::Running, flush_ceiling: 33, kernel_4k_marks: true };

    struct Rig {
        t: PhysMemTables,
        f: LinearFrames,
        dm: DirectMap,
    }

    fn rig(max: PageSize) -> Rig {
        let mut t = PhysMemTables::new();
        let mut f = LinearFrames::new(Spa::new(1 << 44), Spa::new((1 << 44) + (1 << 30)));
        let dm = DirectMap::build(&mut t, &mut f, FMT, 4 << 30, max).unwrap();
        Rig { t, f, dm }
    }

    impl Rig {
        fn cpa(&mut self, op: CpaOp, spa: u64, pages: u64) -> CpaOutcome {
            change_page_attr(&mut self.dm, &mut self.t, &mut self.f, op, Spa::new(spa), pages, ENV)
                .unwrap()
        }
        fn size(&self, spa: u64) -> PageSize {
            self.dm.leaf_size(&self.t, Spa::new(spa)).unwrap()
        }
        fn attrs(&self, spa: u64) -> LeafAttrs {
            self.dm.leaf(&self.t, Spa::new(spa)).unwrap().attrs
        }
        fn splits(&self) -> (u64, u64) {
            (self.dm.level3_splits, self.dm.level2_splits)
        }
        fn collapses(&self) -> (u64, u64) {
            (self.dm.level3_collapses, self.dm.level2_collapses)
        }
    }

    fn steps(o: CpaOutcome) -> Vec<FlushStep> {
        o.flushes.into_steps()
    }

    const G1: u64 = 1 << 30;
    const M2: u64 = 2 << 20;

    /// A change that covers a large leaf whole and aligned keeps it and changes its bits; so
    /// does one whose bits are already there, whatever its range.
    #[test]
    fn whole_and_aligned_change_keeps_the_large_page() {
        let mut r = rig(PageSize::G1);
        let o = r.cpa(CpaOp::Ro, G1, G1 / 4096);
        assert_eq!(o.stats.lp_preserved[PageSize::G1], 1);
        assert_eq!(steps(o), vec![FlushStep::All], "262144 pages > ceiling: flush_tlb_all");
        assert_eq!(r.size(G1), PageSize::G1);
        assert!(!r.attrs(G1).flags.contains(PteFlags::WRITABLE));
        assert!(!r.attrs(G1).flags.contains(PteFlags::DIRTY), "ro clears Dirty too");
        assert_eq!(r.splits(), (0, 0));
        // Sameprot: ro again on one page of it keeps the 1G leaf and flushes nothing.
        let o = r.cpa(CpaOp::Ro, G1 + 0x5000, 1);
        assert_eq!(o.stats.lp_sameprot[PageSize::G1], 1);
        assert!(steps(o).is_empty(), "nothing changed: no cpa_flush");
        assert_eq!(r.splits(), (0, 0));
    }

    /// A partial change splits one level at a time, only the leaf holding the change: 1G → 2M,
    /// then the one 2M → 4K; each split is followed by flush_tlb_all, then cpa_flush flushes
    /// the page.
    #[test]
    fn partial_change_splits_one_level_at_a_time() {
        let mut r = rig(PageSize::G1);
        let tables = r.dm.table_pages();
        let o = r.cpa(CpaOp::Nx, G1 + 0x20_3000, 1);
        // KERNEL_RW already has NX: sameprot, nothing to split.
        assert_eq!(o.stats.splits, 0);
        assert!(steps(o).is_empty());
        let o = r.cpa(CpaOp::X, G1 + 0x20_3000, 1);
        assert_eq!(o.stats.splits, 2);
        assert_eq!(
            steps(o),
            vec![
                FlushStep::All,
                FlushStep::All,
                FlushStep::Pages { start: dm_va(Spa::new(G1 + 0x20_3000)), pages: 1 }
            ]
        );
        assert_eq!(r.splits(), (1, 1));
        assert_eq!(r.dm.table_pages(), tables + 2, "one 4 KiB table page per split (H19)");
        assert_eq!(r.size(G1 + 0x20_3000), PageSize::K4);
        assert!(!r.attrs(G1 + 0x20_3000).flags.contains(PteFlags::NO_EXECUTE));
        assert!(r.attrs(G1 + 0x20_4000).flags.contains(PteFlags::NO_EXECUTE));
        assert_eq!(r.size(G1 + 0x40_0000), PageSize::M2);
        assert_eq!(r.size(G1 - 1), PageSize::G1);
        // A range covering one whole 2M leaf of the split 1G and part of the next: the first 2M
        // is preserved, the second split.
        let o = r.cpa(CpaOp::Ro, G1 + 0x40_0000, 512 + 1);
        assert_eq!(o.stats.lp_preserved[PageSize::M2], 1);
        assert_eq!(o.stats.splits, 1);
        assert_eq!(r.size(G1 + 0x40_0000), PageSize::M2);
        assert_eq!(r.size(G1 + 0x60_0000), PageSize::K4);
        assert_eq!(r.splits(), (1, 2));
        assert_eq!(r.dm.leaf_counts(), r.dm.recount(&r.t));
    }

    /// set_memory_4k splits even a whole aligned leaf, tags the requested PTEs
    /// Before v6.15 (`set_memory_4k_marks = false`) set_memory_4k on a page already mapped 4K
    /// changes no PTE, so CPA issues no flush; with the mark it changes the PTE and flushes.
    #[test]
    fn set_memory_4k_without_marks_changes_nothing_on_4k() {
        for (marks, expect_flush) in [(false, false), (true, true)] {
            let env = CpaEnv { kernel_4k_marks: marks, ..ENV };
            let mut r = rig(PageSize::M2);
            let run = |r: &mut Rig, spa: u64| {
                change_page_attr(&mut r.dm, &mut r.t, &mut r.f, CpaOp::Set4k, Spa::new(spa), 1, env)
                    .unwrap()
            };
            // The first call splits the 2M leaf (and flushes for the split either way).
            let first = run(&mut r, 0x1000);
            assert_eq!(r.size(0x2000), PageSize::K4);
            let _ = first.flushes.into_steps();
            let again = run(&mut r, 0x2000);
            assert_eq!(!again.flushes.steps().is_empty(), expect_flush, "marks={marks}");
            let _ = again.flushes.into_steps();
        }
    }

    /// `_PAGE_KERNEL_4K`, and those never collapse: a later rox over the region with every
    /// other condition met leaves it at 4K.
    #[test]
    fn set_memory_4k_regions_never_collapse() {
        let mut r = rig(PageSize::G1);
        let o = r.cpa(CpaOp::Set4k, 0, 512);
        assert_eq!(o.stats.splits, 2);
        assert_eq!(o.flushes.steps().last(), Some(&FlushStep::All), "512 > 33 pages");
        assert_eq!(r.size(0), PageSize::K4);
        assert!(r.attrs(0x1000).flags.contains(KERNEL_4K));
        // Again: the bits are there, nothing changes, nothing is flushed.
        assert!(steps(r.cpa(CpaOp::Set4k, 0, 512)).is_empty());
        let o = r.cpa(CpaOp::Rox, 0, 512);
        assert_eq!((o.stats.collapse_attempts, o.stats.collapsed), (1, 0));
        assert_eq!(r.size(0), PageSize::K4);
        assert_eq!(r.collapses(), (0, 0));
        // One tagged page in the middle is enough: its flags differ from the first's.
        let o = r.cpa(CpaOp::Set4k, M2 + 0x7000, 1);
        assert_eq!(o.stats.splits, 1);
        let o = r.cpa(CpaOp::Rox, M2, 512);
        assert_eq!((o.stats.collapse_attempts, o.stats.collapsed), (1, 0));
        assert_eq!(r.size(M2), PageSize::K4);
    }

    /// rox collapses a region made uniform again: PMD, then PUD; table pages freed, one more
    /// flush_tlb_all, counters moved.
    #[test]
    fn rox_collapses_pmd_then_pud_and_frees_tables() {
        let mut r = rig(PageSize::G1);
        let tables0 = r.dm.table_pages();
        let allocated0 = r.f.allocated();
        r.cpa(CpaOp::Ro, G1 + 0x5000, 1).flushes.into_steps();
        assert_eq!(r.dm.table_pages(), tables0 + 2);
        assert_eq!(r.dm.leaf_counts(), PerSize([512, 511, 3]));
        let o = r.cpa(CpaOp::Rox, G1, G1 / 4096);
        assert_eq!(o.stats.collapsed, 2);
        assert_eq!(o.stats.lp_preserved[PageSize::M2], 511);
        assert_eq!(steps(o), vec![FlushStep::All, FlushStep::All], "cpa_flush, then collapse");
        assert_eq!(r.collapses(), (1, 1));
        assert_eq!(r.size(G1), PageSize::G1);
        assert_eq!(r.dm.table_pages(), tables0);
        assert_eq!(r.f.allocated(), allocated0, "the PTE and PMD pages were freed");
        assert_eq!(r.dm.leaf_counts(), PerSize([0, 0, 4]));
        let a = r.attrs(G1);
        assert!(!a.flags.intersects(PteFlags::WRITABLE | PteFlags::DIRTY | PteFlags::NO_EXECUTE));
    }

    /// rox collapses only when every condition holds; each refusal leaves the region split.
    #[test]
    fn rox_collapse_needs_every_condition() {
        // A PTE that stays different (rox over part of the region).
        let mut r = rig(PageSize::G1);
        r.cpa(CpaOp::Ro, 0x5000, 1).flushes.into_steps();
        let o = r.cpa(CpaOp::Rox, 0, 511);
        assert_eq!((o.stats.collapse_attempts, o.stats.collapsed), (1, 0));
        assert_eq!(r.size(0), PageSize::K4);
        // A not-present PTE in the region.
        let mut r = rig(PageSize::G1);
        r.cpa(CpaOp::Np, 0x5000, 1).flushes.into_steps();
        let o = r.cpa(CpaOp::Rox, 0, 512);
        assert_eq!(o.stats.collapsed, 0);
        assert_eq!(r.size(0), PageSize::K4);
        // nogbpages: the PMD collapses, the PUD never.
        let mut r = rig(PageSize::M2);
        r.cpa(CpaOp::Ro, 0x5000, 1).flushes.into_steps();
        let o = r.cpa(CpaOp::Rox, 0, 512);
        assert_eq!(o.stats.collapsed, 1);
        assert_eq!(r.size(0), PageSize::M2);
        // With gbpages, the other 2M leaves of the 1G still differ: PMD only.
        let mut r = rig(PageSize::G1);
        r.cpa(CpaOp::Ro, 0x5000, 1).flushes.into_steps();
        let o = r.cpa(CpaOp::Rox, 0, 512);
        assert_eq!(o.stats.collapsed, 1);
        assert_eq!((r.size(0), r.size(M2)), (PageSize::M2, PageSize::M2));
        assert_eq!(r.collapses(), (0, 1));
        // Other ops never collapse, even over a uniform split region.
        let mut r = rig(PageSize::G1);
        r.cpa(CpaOp::Ro, 0x5000, 1).flushes.into_steps();
        for op in [CpaOp::Ro, CpaOp::Rw, CpaOp::X, CpaOp::Nx, CpaOp::Np, CpaOp::P, CpaOp::Set4k] {
            let o = r.cpa(op, 0, 512);
            assert_eq!(o.stats.collapse_attempts, 0, "{op}");
        }
        assert_eq!(r.collapses(), (0, 0));
    }

    /// np keeps the large page when it covers it, splits otherwise; p restores presence but
    /// not G; the noflush ops issue no cpa_flush and are one call per page.
    #[test]
    fn present_bits_and_noflush_ops() {
        let mut r = rig(PageSize::G1);
        let o = r.cpa(CpaOp::Np, M2 * 3, 512);
        assert_eq!(o.stats.lp_checked[PageSize::G1], 1);
        assert_eq!(o.stats.splits, 1, "1G → 2M, then the 2M is covered whole");
        assert_eq!(r.size(M2 * 3), PageSize::M2);
        assert!(r.dm.table().lookup(&r.t, dm_va(Spa::new(M2 * 3))).is_none());
        assert!(!r.attrs(M2 * 3).flags.contains(PteFlags::GLOBAL));
        let o = r.cpa(CpaOp::P, M2 * 3 + 0x1000, 1);
        assert_eq!(o.stats.splits, 1, "a partial change of a not-present 2M splits it");
        assert!(r.attrs(M2 * 3 + 0x1000).flags.contains(PteFlags::PRESENT));
        assert!(!r.attrs(M2 * 3 + 0x1000).flags.contains(PteFlags::GLOBAL));
        assert!(!r.attrs(M2 * 3).flags.contains(PteFlags::PRESENT));
        let o = r.cpa(CpaOp::DirectMapInvalid, M2 * 5, 2);
        assert_eq!(o.stats.calls, 2);
        assert_eq!(o.stats.splits, 1);
        assert_eq!(steps(o), vec![FlushStep::All], "the split's flush only: no cpa_flush");
        assert!(!r.attrs(M2 * 5).flags.intersects(PteFlags::PRESENT | PteFlags::WRITABLE));
        let o = r.cpa(CpaOp::DirectMapDefault, M2 * 5, 2);
        assert!(steps(o).is_empty());
        assert!(r.attrs(M2 * 5 + 0x1000).flags.contains(PteFlags::PRESENT | PteFlags::WRITABLE));
        // dm-valid over a whole not-present 2M is one call that keeps it large; dm-default
        // over the same pages is 512 single-page calls, and the first splits it.
        r.cpa(CpaOp::Np, M2 * 9, 512).flushes.into_steps();
        r.cpa(CpaOp::Np, M2 * 11, 512).flushes.into_steps();
        let o = r.cpa(CpaOp::DirectMapValid, M2 * 9, 512);
        assert_eq!((o.stats.calls, o.stats.lp_preserved[PageSize::M2]), (1, 1));
        assert!(steps(o).is_empty());
        assert_eq!(r.size(M2 * 9), PageSize::M2);
        assert!(r.attrs(M2 * 9).flags.contains(PteFlags::PRESENT));
        let o = r.cpa(CpaOp::DirectMapDefault, M2 * 11, 512);
        assert_eq!((o.stats.calls, o.stats.splits), (512, 1));
        assert_eq!(r.size(M2 * 11), PageSize::K4);
        assert_eq!(r.dm.leaf_counts(), r.dm.recount(&r.t));
    }

    /// encrypted/decrypted toggle the C-bit and always flush after the change.
    #[test]
    fn encryption_toggles_the_c_bit_and_always_flushes() {
        let mut r = rig(PageSize::G1);
        let o = r.cpa(CpaOp::Encrypted, 0x1000, 1);
        assert_eq!(o.stats.splits, 2);
        let last = FlushStep::Pages { start: dm_va(Spa::new(0x1000)), pages: 1 };
        assert_eq!(o.flushes.steps().last(), Some(&last));
        assert!(r.attrs(0x1000).encrypted);
        assert!(!r.attrs(0x2000).encrypted);
        let o = r.cpa(CpaOp::Decrypted, 0x1000, 1);
        assert!(!r.attrs(0x1000).encrypted);
        assert_eq!(steps(o), vec![last]);
        // Already decrypted: nothing changes, but the flush still happens.
        let o = r.cpa(CpaOp::Decrypted, 0x1000, 1);
        assert_eq!(steps(o), vec![last]);
        assert_eq!(r.splits(), (1, 1));
    }

    /// Splits taken before SYSTEM_RUNNING move DirectMap but not the vmstat counters.
    #[test]
    fn boot_splits_are_not_vmstat_counted() {
        let mut r = rig(PageSize::G1);
        let env = CpaEnv { count: Count::Boot, ..ENV };
        change_page_attr(&mut r.dm, &mut r.t, &mut r.f, CpaOp::Encrypted, Spa::new(0x1000), 1, env)
            .unwrap()
            .flushes
            .into_steps();
        assert_eq!(r.splits(), (0, 0));
        assert_eq!(r.dm.boot_splits, 2);
        assert_eq!(r.dm.leaf_counts(), PerSize([512, 511, 3]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// After any sequence of CPA requests the DirectMap counts equal a recount of the page
        /// tables, the vmstat counters agree with the leaves, and only rox ever collapses.
        #[test]
        fn cpa_counters_equal_a_recount(
            ops in proptest::collection::vec((0usize..13, 0u64..(1 << 20), 0u8..3), 1..30),
        ) {
            let mut r = rig(PageSize::G1);
            for (i, page, len) in ops {
                let op = CpaOp::ALL[i];
                let (spa, pages) = match len {
                    0 => (page << 12, 1),
                    1 => (page << 12, 16),
                    _ => ((page << 12) & !(M2 - 1), 512),
                };
                let before = r.collapses();
                r.cpa(op, spa, pages).flushes.into_steps();
                if op != CpaOp::Rox {
                    prop_assert_eq!(r.collapses(), before, "{} collapsed", op);
                }
            }
            let c = r.dm.leaf_counts();
            prop_assert_eq!(c, r.dm.recount(&r.t));
            prop_assert_eq!(r.dm.meminfo_kb().total(), (4u64 << 30) / 1024);
            let l2 = r.dm.level2_splits - r.dm.level2_collapses;
            let l3 = r.dm.level3_splits - r.dm.level3_collapses;
            prop_assert_eq!(c[PageSize::K4], l2 * 512);
            prop_assert_eq!(c[PageSize::G1], 4 - l3);
            prop_assert_eq!(c[PageSize::M2], l3 * 512 - l2);
        }
    }
}
