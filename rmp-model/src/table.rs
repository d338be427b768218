//! The RMP table: storage of the entries, the 2 MiB authoritative-entry rule, and functional
//! lookups. Where the table sits and what it covers is [`RmpLayout`] (`layout.rs`).

#[cfg(test)]
use crate::entry::RmpPageSize;
use crate::entry::{RawRmpEntry, RmpEntry};
use crate::stats::RmpStats;
use sim_core::{PageSize, Spa};

pub use crate::layout::{
    RMP_ALIGN, RMP_BOOKKEEPING_BYTES, RMP_ENTRY_BYTES, RmpLayout, RmpLayoutError,
};

/// 4 KiB pages per 2 MiB region.
pub const PAGES_PER_2M: u64 = 512;

/// Raw low-qword bit 1, Page_Size (spec/snp.md §1.2), tested without decoding the entry.
const RAW_PAGE_SIZE_2M: u64 = 1 << 1;

/// A page or region outside the RMP's coverage was named where an entry is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("SPA {spa:#x} is not covered by the RMP (coverage ends at {covered_end:#x})")]
pub struct NotCovered {
    /// The address asked for.
    pub spa: Spa,
    /// The end of coverage (for a segmented RMP: one past the highest covered address).
    pub covered_end: Spa,
}

/// The 511 entries of a 2 MiB region after its aligned one, and how many of them are non-zero.
#[derive(Clone, Debug)]
struct Tail {
    entries: [RawRmpEntry; TAIL],
    nonzero: u16,
}

const TAIL: usize = 511;

/// One 2 MiB region's storage: its aligned entry, the other 511 entries when any of them is
/// non-zero, and how many of its stored entries have Assigned = 1. 32 B, aligned to 32 so one
/// cache line holds all of it.
#[derive(Clone, Debug, Default)]
#[repr(align(32))]
struct Region {
    aligned: RawRmpEntry,
    tail: Option<Box<Tail>>,
    assigned: u16,
}

/// One segment of the layout as the lookups need it: where its entries lie and which of its
/// pages they cover (copied from [`RmpLayout`]), and where its 2 MiB regions start in the
/// per-region arrays. One lookup of this record answers coverage, the region and the entry's
/// address together.
#[derive(Clone, Copy, Debug)]
struct SegIndex {
    /// SPA of the entry of the segment's first page (below 2^52 + 16 KiB: an RST base field,
    /// or RMP_BASE + 16 KiB).
    entries: u64,
    /// Bytes from the segment's first address that have entries (a multiple of 4 KiB).
    covered: u64,
    /// Index of the segment's first region in the per-region arrays.
    first: usize,
    /// Regions of the segment with at least one covered page.
    count: usize,
}

/// A covered page, located by [`Rmp::locate_page`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct PageSlot {
    /// Index of the page's 2 MiB region in the per-region arrays.
    pub(crate) region: usize,
    /// Address of the page's entry ([`RmpLayout::entry_addr`]), unchecked: a segment whose
    /// entries run past the 52-bit space gives an address no [`Spa`] can hold, and then the
    /// page has no entry read ([`entry_spa`]). Below 2^53, so sums with an offset within a
    /// 2 MiB region's entries do not overflow.
    pub(crate) entry: u64,
    /// Whether every page of the region is covered.
    pub(crate) whole_region: bool,
}

/// The SPA of an entry at `addr`, if there is one (`None` past 2^52, as
/// [`RmpLayout::entry_addr`] gives).
#[inline]
pub(crate) fn entry_spa(addr: u64) -> Option<Spa> {
    Spa::try_new(addr).ok()
}

/// The RMP table (spec/snp.md §1).
///
/// # Storage
///
/// One record per covered 2 MiB region (regions are numbered segment by segment, so a
/// segmented RMP's holes cost nothing), 32 B each:
///
/// - the raw entry at the region's 2 MiB-aligned PFN — a 2 MiB entry, or the first 4 KiB entry;
/// - the other 511 raw entries, boxed (8 KiB), allocated on the first write of a non-zero entry
///   among them and freed when the last of them becomes zero again (8 B when absent: the
///   `Option<Box>` niche);
/// - the number of the region's stored entries with Assigned = 1 (an assigned 2 MiB entry
///   counts once);
///
/// plus one bit per region, set while that count is non-zero.
///
/// So a region holding only its aligned entry — a 2 MiB entry, or any region whose only
/// non-zero entry is the aligned one — costs 32 B and a bit; a region with non-zero 4 KiB
/// entries after the first costs 8 KiB more. A lookup is one array index (one cache line) plus,
/// for a non-aligned page of a split region, one pointer dereference; no hashing; iteration is
/// in address order.
///
/// Measured (benches/benches/rmp.rs, docs/performance.md "RMP"): the 4 TiB host —
/// 2,097,152 regions, 419,430 assigned as 2 MiB entries, 41,943 of them PSMASHed and every
/// 4 KiB page re-assigned at its own GPA — stores 391.6 MiB (64.3 MiB of records and bits,
/// 327.4 MiB of tails; VmHWM 398–399 MiB); an 8 KiB chunk per touched region (the previous layout)
/// would be 3.2 GiB. Separate arrays (entries, tail pointers, counts: 26 B per region) store
/// 379.4 MiB; random `entry` lookups cost the same within this machine's noise (23–55 ms per
/// million for either), split-region lookups tended to be faster with the record (46–109 vs
/// 48–130 ms per million), and the record makes a write touch one line instead of three, so
/// the 12 MiB buy locality.
///
/// # The per-region summary
///
/// "Is any page of this 2 MiB region assigned?" reads the bit. The count stays beside it: an
/// unassign must know whether another assignment is left (a bit alone would need a 512-entry
/// rescan), and [`Rmp::assigned_in_region`] reports it. Measured over 2^20 random probes of the
/// 4 TiB host: the bit (256 KiB, L2-resident) answers in 1.7–3.2 ms, a `u16` count array (4 MiB)
/// in 3.4–8.1 ms. Hardware keeps a count as well: AMD's published SEV firmware
/// (amd/AMD-ASPFW, `fw/psp_bl_uapps/sev_uapp/src/sev_rmp.h` `rmp_fields_t`) names raw-entry
/// bits 11:3 `subpage_count` and writes "RMP.Sub_Pages count" of the 2 MiB-aligned entry for the
/// region's assigned 4 KiB pages (`sev_rmp.c` `set_rmp_sub_page_count`). The model keeps its
/// count outside the raw entry so [`Rmp::stored_entry`] stays the architectural view. Every
/// write goes through one function that keeps count and bit exact.
#[derive(Debug)]
pub struct Rmp {
    layout: RmpLayout,
    /// `layout.segment_shift()`, kept here for the lookup path.
    shift: u32,
    /// Bits of an address below the segment shift: the offset inside its segment.
    offset_mask: u64,
    /// Indexed by segment number (`pa >> shift`), as the layout's segments.
    segs: Box<[SegIndex]>,
    regions: Vec<Region>,
    /// Bit `r`: `regions[r].assigned != 0`.
    summary: Vec<u64>,
    pub(crate) stats: RmpStats,
    /// The last 2 MiB region [`Rmp::check_host_tables`] found clean, kept across calls: a
    /// host's page tables lie in few regions, so the next walk's tables are mostly in it. Every
    /// write ([`Rmp::store_raw`], [`Rmp::clear`]) forgets it, so it never describes a table
    /// other than the current one. A cache of the table's content: it changes no answer.
    pub(crate) clean_tables: CleanRegion,
    /// The same for host data writes ([`Rmp::check_host_access`]), kept apart: a walk's data
    /// lies elsewhere than its tables.
    pub(crate) clean_writes: CleanRegion,
    /// What makes RMPUPDATE return FAIL_OVERLAP ([`crate::OverlapRule`]).
    pub(crate) overlap_rule: crate::OverlapRule,
}

sim_core::clone_by_fields!(Rmp {
    layout,
    shift,
    offset_mask,
    segs,
    regions,
    summary,
    stats,
    clean_tables,
    clean_writes,
    overlap_rule
});

/// A 2 MiB region found clean for the host checks: wholly covered, without an assigned entry,
/// and with every entry's address below 2^52 — so a page in it passes a 4 KiB host check and
/// reads the entry `first_entry` + (page index in the region) × 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CleanRegion {
    /// The region's number (SPA >> 21); [`CleanRegion::NONE`]'s matches no SPA.
    pub(crate) number: u64,
    /// Address of the region's first entry.
    pub(crate) first_entry: u64,
}

impl CleanRegion {
    /// No region.
    pub(crate) const NONE: CleanRegion = CleanRegion { number: u64::MAX, first_entry: 0 };

    /// The region's aligned entry (the one a 2 MiB or 1 GiB host check reads).
    #[inline(always)]
    pub(crate) fn first(self) -> Spa {
        Spa::new_truncate(self.first_entry)
    }

    /// The entry of the page holding `spa`, which must lie in the region.
    #[inline(always)]
    pub(crate) fn entry(self, spa: Spa) -> Spa {
        debug_assert_eq!(spa.raw() >> PageSize::M2.shift(), self.number);
        // Below 2^52 (the region's last entry is), so truncation keeps it.
        Spa::new_truncate(
            self.first_entry + u64::try_from(slot(spa)).expect("9 bits") * RMP_ENTRY_BYTES,
        )
    }
}

impl Rmp {
    /// An all-zero RMP (every page hypervisor-owned, 4 KiB) with the given layout.
    pub fn new(layout: RmpLayout) -> Rmp {
        let mut first = 0usize;
        let segs: Box<[SegIndex]> = layout
            .segments()
            .iter()
            .map(|s| {
                let count = usize::try_from(s.covered.div_ceil(PageSize::M2.bytes()))
                    .expect("region count fits the host's address space");
                let r = SegIndex { entries: s.entries, covered: s.covered, first, count };
                first += count;
                r
            })
            .collect();
        let shift = layout.segment_shift();
        Rmp {
            shift,
            offset_mask: (1u64 << shift) - 1,
            layout,
            segs,
            regions: std::iter::repeat_with(Region::default).take(first).collect(),
            summary: vec![0; first.div_ceil(64)],
            stats: RmpStats::default(),
            clean_tables: CleanRegion::NONE,
            clean_writes: CleanRegion::NONE,
            overlap_rule: crate::OverlapRule::BothWays,
        }
    }

    /// Choose what makes RMPUPDATE return FAIL_OVERLAP (`rmp.overlap_rule`; default
    /// [`crate::OverlapRule::BothWays`]).
    pub fn set_overlap_rule(&mut self, rule: crate::OverlapRule) {
        self.overlap_rule = rule;
    }

    /// The layout.
    pub const fn layout(&self) -> &RmpLayout {
        &self.layout
    }

    /// Counters since construction.
    pub const fn stats(&self) -> &RmpStats {
        &self.stats
    }

    /// Bytes of host memory the table's storage holds: the per-region arrays plus the tails of
    /// split regions (allocator overhead not included).
    pub fn storage_bytes(&self) -> usize {
        let dense = self.regions.len() * size_of::<Region>() + self.summary.len() * 8;
        dense + self.tail_count() * size_of::<Tail>()
    }

    /// Number of 2 MiB regions whose non-aligned entries are stored (each costs a tail).
    pub fn split_regions(&self) -> usize {
        self.tail_count()
    }

    fn tail_count(&self) -> usize {
        self.regions.iter().filter(|r| r.tail.is_some()).count()
    }

    /// The entry stored at the PFN of `spa` (not the authoritative one: see [`Rmp::entry`]).
    /// Uncovered pages read as the zero entry.
    pub fn stored_entry(&self, spa: Spa) -> RmpEntry {
        self.raw(spa).decode()
    }

    /// The entry that governs the page holding `spa` (spec/snp.md §1.4): the entry at the
    /// 2 MiB-aligned PFN if it is an *assigned* 2 MiB entry, otherwise the page's own entry.
    /// For a 2 MiB entry the result is the aligned entry itself (its `gpa` is the region's base
    /// GPA). Uncovered pages read as the zero (hypervisor-owned) entry.
    ///
    /// Model rule (documented choice): an *unassigned* 2 MiB entry does not override the 4 KiB
    /// entries inside its region. Linux's `rmp_make_shared(pfn, 2M)` leaves such entries, and a
    /// later 4 KiB assignment inside the region must then take effect (spec/snp.md §4.5 flows).
    #[inline]
    pub fn entry(&self, spa: Spa) -> RmpEntry {
        let Some(r) = self.region_of(spa) else { return RmpEntry::ZERO };
        let base = self.regions[r].aligned;
        if base.assigned() && base.0[0] & RAW_PAGE_SIZE_2M != 0 {
            return base.decode();
        }
        self.raw_in(r, slot(spa)).decode()
    }

    /// Whether any page of the 2 MiB region holding `spa` is assigned (any stored entry of the
    /// region with Assigned = 1, including an assigned 2 MiB entry). O(1).
    #[inline]
    pub fn region_has_assigned(&self, spa: Spa) -> bool {
        self.region_of(spa).is_some_and(|r| self.region_assigned(r))
    }

    /// Number of stored entries of the 2 MiB region holding `spa` with Assigned = 1.
    #[inline]
    pub fn assigned_in_region(&self, spa: Spa) -> u16 {
        self.region_of(spa).map_or(0, |r| self.regions[r].assigned)
    }

    /// The hidden in-use flag of the page holding `spa` (spec/snp.md §1.1).
    pub fn in_use(&self, spa: Spa) -> bool {
        self.raw(spa).in_use()
    }

    /// Set or clear the hidden in-use flag (VMRUN marks VMCB, VMSA and AVIC pages; #VMEXIT
    /// clears them). While set, RMPUPDATE and PSMASH on the entry return FAIL_INUSE.
    ///
    /// # Errors
    /// [`NotCovered`] if the page has no entry.
    pub fn set_in_use(&mut self, spa: Spa, in_use: bool) -> Result<(), NotCovered> {
        self.require_covered(spa)?;
        let raw = self.raw(spa).with_in_use(in_use);
        self.store_raw(spa, raw);
        Ok(())
    }

    /// Write an entry directly, bypassing the instructions' rules (initial state of a scenario,
    /// firmware actions such as SNP_INIT). The in-use flag is kept; the 2 MiB counts stay
    /// exact.
    ///
    /// # Errors
    /// [`NotCovered`] if the page has no entry.
    ///
    /// # Panics
    /// If the ASID or GPA do not fit the raw fields ([`crate::MAX_ASID`], [`crate::GPA_LIMIT`]).
    pub fn set_entry(&mut self, spa: Spa, e: &RmpEntry) -> Result<(), NotCovered> {
        self.require_covered(spa)?;
        let in_use = self.in_use(spa);
        self.store_raw(spa, RawRmpEntry::encode(e, in_use));
        Ok(())
    }

    /// The stored entries of the 2 MiB region holding `spa` that are not all-zero, in PFN
    /// order (what Linux dumps after an RMP #PF, spec/snp.md §6 S1).
    pub fn region_entries(&self, spa: Spa) -> Vec<(Spa, RmpEntry)> {
        let base = spa.align_down(PageSize::M2);
        let Some(r) = self.region_of(spa) else { return Vec::new() };
        let page = |i: usize| Spa::new_truncate(base.raw() + ((i as u64) << PageSize::K4.shift()));
        let mut v = Vec::new();
        let reg = &self.regions[r];
        if reg.aligned != RawRmpEntry::ZERO {
            v.push((base, reg.aligned.decode()));
        }
        if let Some(t) = &reg.tail {
            for (i, e) in t.entries.iter().enumerate().filter(|(_, e)| **e != RawRmpEntry::ZERO) {
                v.push((page(i + 1), e.decode()));
            }
        }
        v
    }

    pub(crate) fn require_covered(&self, spa: Spa) -> Result<(), NotCovered> {
        if self.layout.is_covered(spa) {
            Ok(())
        } else {
            Err(NotCovered { spa, covered_end: self.layout.covered_end() })
        }
    }

    /// Whether the whole 2 MiB region holding `spa` is covered. Coverage inside a segment is a
    /// prefix of whole pages, and no region straddles two segments (segments are at least
    /// 1 GiB), so the region's last page decides.
    pub(crate) fn region_covered(&self, spa: Spa) -> bool {
        let last = spa.align_down(PageSize::M2).raw() + PageSize::M2.bytes() - PageSize::K4.bytes();
        Spa::try_new(last).is_ok_and(|l| self.layout.is_covered(l))
    }

    /// The segment holding `pa` and the offset of `pa` inside it, if the layout has that
    /// segment.
    #[inline(always)] // two instructions and a bounds check on the checks' path
    fn segment_of(&self, pa: u64) -> Option<(&SegIndex, u64)> {
        // `pa >> shift` is below 2^22 (an SPA has 52 bits, the shift is at least 30).
        let s = self.segs.get(usize::try_from(pa >> self.shift).ok()?)?;
        Some((s, pa & self.offset_mask))
    }

    /// The region index of the 2 MiB region holding `spa`, if any page of it is covered.
    #[inline]
    fn region_of(&self, spa: Spa) -> Option<usize> {
        let (s, off) = self.segment_of(spa.raw())?;
        let r = usize::try_from(off >> PageSize::M2.shift()).ok()?;
        (r < s.count).then_some(s.first + r)
    }

    /// The page holding `spa`, if it is covered: one segment lookup for coverage, its region
    /// and its entry's address ([`RmpLayout::locate`] and [`RmpLayout::entry_addr`] in one).
    #[inline(always)] // the checks' lookup: folds into them
    pub(crate) fn locate_page(&self, spa: Spa) -> Option<PageSlot> {
        let (s, off) = self.segment_of(spa.raw())?;
        if off >= s.covered {
            return None;
        }
        Some(PageSlot {
            // A covered page's region is one of the segment's `count`.
            region: s.first + usize::try_from(off >> PageSize::M2.shift()).ok()?,
            // Below 2^52 + 16 KiB plus below 2^44 (`off` < 2^52): no overflow.
            entry: s.entries + (off >> PageSize::K4.shift()) * RMP_ENTRY_BYTES,
            // `covered` is page-granular: the region's last byte is covered iff its last page.
            whole_region: (off | (PageSize::M2.bytes() - 1)) < s.covered,
        })
    }

    /// Whether the authoritative entry of the page holding `spa`, in region `r`, is assigned.
    /// A region with no assigned entry, the common case, answers from its count without
    /// reading an entry.
    #[inline(always)] // the checks' common case is one load and a test
    pub(crate) fn page_assigned(&self, r: usize, spa: Spa) -> bool {
        let reg = &self.regions[r];
        reg.assigned != 0 && (reg.aligned.assigned_2m() || self.raw_in(r, slot(spa)).assigned())
    }

    /// Number of stored entries of region `r` with Assigned = 1.
    #[inline(always)]
    pub(crate) fn assigned_count(&self, r: usize) -> u16 {
        self.regions[r].assigned
    }

    /// The region of the page `p` located for `spa` as a [`CleanRegion`], if it is clean.
    #[inline(always)]
    pub(crate) fn clean_region(&self, p: &PageSlot, spa: Spa) -> Option<CleanRegion> {
        let first_entry = p.entry - u64::try_from(slot(spa)).expect("9 bits") * RMP_ENTRY_BYTES;
        let last = first_entry + (PAGES_PER_2M - 1) * RMP_ENTRY_BYTES;
        let clean = p.whole_region && self.assigned_count(p.region) == 0;
        (clean && entry_spa(last).is_some())
            .then_some(CleanRegion { number: spa.raw() >> PageSize::M2.shift(), first_entry })
    }

    /// Whether region `r` has an assigned entry (its summary bit).
    #[inline]
    pub(crate) fn region_assigned(&self, r: usize) -> bool {
        self.summary[r / 64] >> (r % 64) & 1 != 0
    }

    #[inline]
    fn raw_in(&self, r: usize, slot: usize) -> RawRmpEntry {
        let reg = &self.regions[r];
        if slot == 0 {
            return reg.aligned;
        }
        match &reg.tail {
            Some(t) => t.entries[slot - 1],
            None => RawRmpEntry::ZERO,
        }
    }

    #[inline]
    pub(crate) fn raw(&self, spa: Spa) -> RawRmpEntry {
        match self.region_of(spa) {
            Some(r) => self.raw_in(r, slot(spa)),
            None => RawRmpEntry::ZERO,
        }
    }

    /// The one writer of entries: keeps `assigned` exact and tails allocated exactly where a
    /// non-aligned entry is non-zero. `spa` must be covered.
    pub(crate) fn store_raw(&mut self, spa: Spa, new: RawRmpEntry) {
        self.forget_clean();
        let r = self.region_of(spa).expect("store_raw on an uncovered page");
        let slot = slot(spa);
        let old = self.raw_in(r, slot);
        if old == new {
            return;
        }
        let reg = &mut self.regions[r];
        match (old.assigned(), new.assigned()) {
            (false, true) => reg.assigned += 1,
            (true, false) => reg.assigned -= 1,
            (false, false) | (true, true) => {}
        }
        let bit = 1u64 << (r % 64);
        if reg.assigned == 0 {
            self.summary[r / 64] &= !bit;
        } else {
            self.summary[r / 64] |= bit;
        }
        if slot == 0 {
            reg.aligned = new;
            return;
        }
        let i = slot - 1;
        if new == RawRmpEntry::ZERO {
            let t = reg.tail.as_mut().expect("a non-zero old entry lives in a tail");
            t.entries[i] = RawRmpEntry::ZERO;
            t.nonzero -= 1;
            if t.nonzero == 0 {
                reg.tail = None;
            }
        } else {
            let t = reg.tail.get_or_insert_with(|| {
                Box::new(Tail { entries: [RawRmpEntry::ZERO; TAIL], nonzero: 0 })
            });
            if old == RawRmpEntry::ZERO {
                t.nonzero += 1;
            }
            t.entries[i] = new;
        }
    }

    /// Forget the regions remembered clean (before any write; tests also check without them).
    pub(crate) fn forget_clean(&mut self) {
        self.clean_tables = CleanRegion::NONE;
        self.clean_writes = CleanRegion::NONE;
    }

    /// Reset every entry to zero (hypervisor-owned, 4 KiB, not in use), as software zeroing
    /// RMP_BASE..RMP_END does before SNP is enabled (spec/snp.md §1.3).
    pub(crate) fn clear(&mut self) {
        self.forget_clean();
        self.regions.fill_with(Region::default);
        self.summary.fill(0);
    }

    /// Recount a region from storage (tests check the maintained count against it).
    #[cfg(test)]
    pub(crate) fn recount(&self, spa: Spa) -> u16 {
        let Some(r) = self.region_of(spa) else { return 0 };
        let reg = &self.regions[r];
        let tail =
            reg.tail.as_ref().map_or(0, |t| t.entries.iter().filter(|e| e.assigned()).count());
        let n = tail + usize::from(reg.aligned.assigned());
        u16::try_from(n).expect("<= 512")
    }

    /// Check a region's tail bookkeeping: allocated iff some non-aligned entry is non-zero,
    /// with an exact non-zero count (tests).
    #[cfg(test)]
    pub(crate) fn tail_consistent(&self, spa: Spa) -> bool {
        let Some(r) = self.region_of(spa) else { return true };
        let bit = self.summary[r / 64] >> (r % 64) & 1 != 0;
        if bit != (self.regions[r].assigned != 0) {
            return false;
        }
        match &self.regions[r].tail {
            None => true,
            Some(t) => {
                let n = t.entries.iter().filter(|e| **e != RawRmpEntry::ZERO).count();
                n != 0 && usize::from(t.nonzero) == n
            }
        }
    }

    /// Number of 2 MiB regions the table tracks.
    #[cfg(test)]
    pub(crate) fn region_count(&self) -> usize {
        self.regions.len()
    }
}

/// The page's index inside its 2 MiB region.
#[inline]
fn slot(spa: Spa) -> usize {
    // 9 bits: always fits.
    usize::try_from(spa.page_number() % PAGES_PER_2M).expect("9-bit value")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::Gpa;

    #[test]
    fn apm_layout_example() {
        // APM §15.36.4: RMP_BASE 0x10_0000, RMP_END 0x110_3FFF covers the first 4 GiB.
        let l = RmpLayout::from_msrs(Spa::new(0x10_0000), Spa::new(0x110_3fff)).unwrap();
        assert_eq!(l.covered_end().raw(), 4 << 30);
        assert_eq!(l.rmp_end().raw(), 0x110_3fff);
        assert_eq!(l.entry_addr(Spa::new(0)).unwrap().raw(), 0x10_4000);
        assert_eq!(l.entry_addr(Spa::new(0x1_0000_5000)), None);
        assert_eq!(l.entry_addr(Spa::new(0xffff_f123)).unwrap().raw(), 0x10_4000 + 0xfffff * 16);
        assert!(matches!(
            RmpLayout::from_msrs(Spa::new(0x10_1000), Spa::new(0x110_3fff)),
            Err(RmpLayoutError::Misaligned { .. })
        ));
        assert!(matches!(
            RmpLayout::from_msrs(Spa::new(0x10_0000), Spa::new(0x10_1fff)),
            Err(RmpLayoutError::Empty { .. })
        ));
    }

    #[test]
    fn authoritative_entry_and_counts() {
        let mut rmp = Rmp::new(RmpLayout::covering(Spa::new(0), 8 << 20).unwrap());
        assert_eq!(rmp.region_count(), 4);
        let base = Spa::new(0x20_0000);
        let big = RmpEntry {
            assigned: true,
            page_size: RmpPageSize::M2,
            asid: 5,
            gpa: Gpa::new(0x8000_0000),
            ..RmpEntry::ZERO
        };
        rmp.set_entry(base, &big).unwrap();
        assert_eq!(rmp.entry(Spa::new(0x20_5000)), big);
        assert_eq!(rmp.stored_entry(Spa::new(0x20_5000)), RmpEntry::ZERO);
        assert!(rmp.region_has_assigned(Spa::new(0x3f_f000)));
        assert!(!rmp.region_has_assigned(Spa::new(0x40_0000)));
        assert_eq!(rmp.assigned_in_region(base), 1);
        // An unassigned 2M entry does not override the 4K entries below it.
        let shared2m = RmpEntry { page_size: RmpPageSize::M2, ..RmpEntry::ZERO };
        rmp.set_entry(base, &shared2m).unwrap();
        let g = RmpEntry { assigned: true, asid: 5, ..RmpEntry::ZERO };
        rmp.set_entry(Spa::new(0x20_5000), &g).unwrap();
        assert_eq!(rmp.entry(Spa::new(0x20_5000)), g);
        assert_eq!(rmp.entry(base), shared2m);
        assert_eq!(rmp.assigned_in_region(base), 1);
        assert_eq!(rmp.recount(base), 1);
        assert_eq!(rmp.region_entries(base).len(), 2);
        assert!(rmp.set_entry(Spa::new(8 << 20), &g).is_err());
        assert_eq!(rmp.entry(Spa::new(1 << 40)), RmpEntry::ZERO);
    }

    /// `locate_page` against the layout's own answers: coverage, the entry's address, the
    /// region, and whether the region is wholly covered, on a contiguous layout whose last
    /// region is partly covered, a segmented one, one with a partly mapped segment and a hole,
    /// and one whose shift is 52.
    #[test]
    fn located_page_agrees_with_layout() {
        const GIB: u64 = 1 << 30;
        let layouts = [
            RmpLayout::covering(Spa::new(0x10_0000), (8 << 30) + 0x3000).unwrap(),
            RmpLayout::segmented_covering(Spa::new(0x4000_0000), 8 << 30, 31).unwrap(),
            RmpLayout::from_segmented_msrs(
                Spa::new(0x10_0000),
                0,
                (32 << 8) | 1,
                &[0x100_0000 | 2, 0, 0x200_0000 | 1],
            )
            .unwrap(),
            RmpLayout::from_segmented_msrs(
                Spa::new(0x10_0000),
                0,
                (52 << 8) | 1,
                &[0x100_0000 | 3],
            )
            .unwrap(),
        ];
        for l in layouts {
            let rmp = Rmp::new(l.clone());
            let mut pas = vec![0, 0x1000, 0x1f_f000, 0x7fff_f123, 0x8000_0000, 0x1_0001_0008];
            for edge in
                [GIB, 2 * GIB, 3 * GIB, 4 * GIB, 5 * GIB, 8 * GIB, 9 * GIB, (8 << 30) + 0x3000]
            {
                pas.extend([edge - 0x20_0000, edge - 0x1000, edge - 1, edge, edge + 0x1000]);
            }
            pas.extend([(1 << 40) + 5, (1 << 52) - 1]);
            for pa in pas {
                let spa = Spa::new(pa);
                let p = rmp.locate_page(spa);
                assert_eq!(p.is_some(), l.is_covered(spa), "{pa:#x}");
                let Some(p) = p else { continue };
                assert_eq!(entry_spa(p.entry), l.entry_addr(spa), "{pa:#x}");
                assert_eq!(Some(p.region), rmp.region_of(spa), "{pa:#x}");
                assert_eq!(p.whole_region, rmp.region_covered(spa), "{pa:#x}");
            }
        }
    }

    #[test]
    fn in_use_flag_survives_entry_writes() {
        let mut rmp = Rmp::new(RmpLayout::covering(Spa::new(0), 2 << 20).unwrap());
        let p = Spa::new(0x3000);
        rmp.set_in_use(p, true).unwrap();
        rmp.set_entry(p, &RmpEntry { assigned: true, asid: 1, ..RmpEntry::ZERO }).unwrap();
        assert!(rmp.in_use(p));
        assert!(rmp.stored_entry(p).assigned);
        rmp.set_in_use(p, false).unwrap();
        assert!(!rmp.in_use(p));
    }
}

/// The storage against a naive reference: a flat map from PFN to entry running the documented
/// rules of RMPUPDATE, PSMASH and `set_entry` directly, on a contiguous layout with a partly
/// covered last region and on a segmented layout with a hole.
#[cfg(test)]
mod reference_tests {
    use super::*;
    use crate::entry::{GPA_LIMIT, MAX_ASID, VMPL_ON_UPDATE};
    use crate::instr::{Executor, RmpReturn, RmpUpdateInput};
    use proptest::prelude::*;
    use sim_core::Gpa;
    use std::collections::BTreeMap;

    const M2: u64 = 2 << 20;
    const GIB: u64 = 1 << 30;

    /// The naive model: every stored entry by PFN, plus the in-use flags.
    #[derive(Default)]
    struct Naive {
        e: BTreeMap<u64, RmpEntry>,
        in_use: BTreeMap<u64, bool>,
    }

    impl Naive {
        fn stored(&self, pa: u64) -> RmpEntry {
            self.e.get(&(pa >> 12)).copied().unwrap_or(RmpEntry::ZERO)
        }
        fn in_use(&self, pa: u64) -> bool {
            self.in_use.get(&(pa >> 12)).copied().unwrap_or(false)
        }
        fn entry(&self, pa: u64) -> RmpEntry {
            let b = self.stored(pa & !(M2 - 1));
            if b.assigned && b.page_size == RmpPageSize::M2 { b } else { self.stored(pa) }
        }
        fn count(&self, pa: u64) -> u16 {
            let base = (pa & !(M2 - 1)) >> 12;
            let n = self.e.range(base..base + 512).filter(|(_, e)| e.assigned).count();
            u16::try_from(n).unwrap()
        }
        fn put(&mut self, pa: u64, e: RmpEntry) {
            self.e.insert(pa >> 12, e);
        }

        fn rmpupdate(&mut self, l: &RmpLayout, pa: u64, i: &RmpUpdateInput) -> RmpReturn {
            let big = i.page_size == RmpPageSize::M2;
            let size = if big { M2 } else { 4096 };
            let region_ok = l.is_covered(Spa::new((pa & !(M2 - 1)) + M2 - 4096));
            let bad = !pa.is_multiple_of(4096)
                || !l.is_covered(Spa::new(pa))
                || (big && (!pa.is_multiple_of(M2) || !region_ok))
                || i.asid > MAX_ASID
                || (!i.assigned && i.asid != 0)
                || !i.gpa.raw().is_multiple_of(size)
                || i.gpa.raw() >= GPA_LIMIT;
            if bad {
                return RmpReturn::FailInput;
            }
            let cur = self.stored(pa);
            if cur.immutable || self.entry(pa).immutable {
                return RmpReturn::FailPermission;
            }
            if self.in_use(pa) {
                return RmpReturn::FailInuse;
            }
            let base = pa & !(M2 - 1);
            let b = self.stored(base);
            let overlap = if big {
                self.count(pa) > u16::from(cur.assigned)
            } else {
                pa != base && b.assigned && b.page_size == RmpPageSize::M2
            };
            if overlap {
                return RmpReturn::FailOverlap;
            }
            let changed = cur.assigned != i.assigned
                || cur.page_size != i.page_size
                || cur.asid != i.asid
                || cur.gpa != i.gpa;
            let new = RmpEntry {
                assigned: i.assigned,
                page_size: i.page_size,
                immutable: i.immutable,
                gpa: i.gpa,
                asid: i.asid,
                vmsa: !changed && cur.vmsa,
                validated: !changed && cur.validated,
                vmpl: if changed { VMPL_ON_UPDATE } else { cur.vmpl },
            };
            self.put(pa, new);
            self.in_use.insert(pa >> 12, false);
            RmpReturn::Success
        }

        fn psmash(&mut self, l: &RmpLayout, pa: u64) -> RmpReturn {
            if !pa.is_multiple_of(M2) || !l.is_covered(Spa::new(pa + M2 - 4096)) {
                return RmpReturn::FailInput;
            }
            let big = self.stored(pa);
            if big.immutable {
                return RmpReturn::FailPermission;
            }
            if self.in_use(pa) {
                return RmpReturn::FailInuse;
            }
            if big.page_size != RmpPageSize::M2 {
                return RmpReturn::FailBadAddr;
            }
            for k in 0..512 {
                let small = RmpEntry {
                    page_size: RmpPageSize::K4,
                    gpa: Gpa::new_truncate(big.gpa.raw() + k * 4096),
                    ..big
                };
                self.put(pa + k * 4096, small);
            }
            RmpReturn::Success
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Update { page: u64, input: RmpUpdateInput },
        Psmash,
        Set { page: u64, e: RmpEntry },
        InUse { page: u64, on: bool },
    }

    /// Layout 0: contiguous over 3 regions and 4 pages of a fourth. Layout 1: segmented with
    /// 1 GiB segments: segment 0 maps 1 GiB, segment 1 nothing, segment 2 maps 1 GiB.
    fn layout(which: bool) -> (RmpLayout, Vec<u64>) {
        if which {
            let rst = [0x1000_0000 | 1, 0, 0x2000_0000 | 1];
            let l = RmpLayout::from_segmented_msrs(Spa::new(0), 0, (30 << 8) | 1, &rst).unwrap();
            // Regions: two in segment 0, one in the hole, two in segment 2 (one its last).
            (l, vec![0, M2, GIB + 4 * M2, 2 * GIB, 3 * GIB - M2])
        } else {
            let l = RmpLayout::covering(Spa::new(0x10_0000), 3 * M2 + 4 * 4096).unwrap();
            (l, vec![0, M2, 2 * M2, 3 * M2])
        }
    }

    fn op(regions: usize) -> impl Strategy<Value = (Op, usize)> {
        let page = (0..regions, prop_oneof![Just(0u64), 0u64..512, Just(1), Just(511)]);
        let gpa =
            prop_oneof![Just(0u64), Just(M2), (0u64..4096).prop_map(|p| p << 12), Just(0x800)];
        let input = (any::<bool>(), any::<bool>(), any::<bool>(), 0u16..4, gpa.clone()).prop_map(
            |(assigned, big, immutable, asid, gpa)| RmpUpdateInput {
                assigned,
                page_size: if big { RmpPageSize::M2 } else { RmpPageSize::K4 },
                immutable: immutable && assigned && asid == 0,
                asid: if assigned { asid } else { 0 },
                gpa: Gpa::new(gpa),
            },
        );
        let entry = (any::<bool>(), any::<bool>(), any::<bool>(), 0u16..3, gpa, any::<bool>())
            .prop_map(|(assigned, big, validated, asid, gpa, immutable)| RmpEntry {
                assigned,
                page_size: if big { RmpPageSize::M2 } else { RmpPageSize::K4 },
                immutable,
                gpa: Gpa::new(gpa),
                asid,
                validated,
                vmsa: false,
                vmpl: VMPL_ON_UPDATE,
            });
        prop_oneof![
            4 => (page.clone(), input).prop_map(|((r, p), input)| (Op::Update { page: p, input }, r)),
            2 => (0..regions).prop_map(|r| (Op::Psmash, r)),
            2 => (page.clone(), entry).prop_map(|((r, p), e)| (Op::Set { page: p, e }, r)),
            1 => (page, any::<bool>()).prop_map(|((r, p), on)| (Op::InUse { page: p, on }, r)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn storage_matches_naive_reference(
            seg in any::<bool>(),
            ops in proptest::collection::vec(op(5), 1..150),
        ) {
            let (l, regions) = layout(seg);
            let mut rmp = Rmp::new(l.clone());
            let mut naive = Naive::default();
            let hv = Executor::Hypervisor;
            for (o, r) in ops {
                let base = regions[r % regions.len()];
                match o {
                    Op::Update { page, input } => {
                        let pa = base + page * 4096;
                        let got = rmp.rmpupdate(hv, Spa::new(pa), &input);
                        prop_assert_eq!(got, naive.rmpupdate(&l, pa, &input));
                    }
                    Op::Psmash => {
                        prop_assert_eq!(rmp.psmash(hv, Spa::new(base)), naive.psmash(&l, base));
                    }
                    Op::Set { page, e } => {
                        let pa = base + page * 4096;
                        let ok = rmp.set_entry(Spa::new(pa), &e).is_ok();
                        prop_assert_eq!(ok, l.is_covered(Spa::new(pa)));
                        if ok {
                            // The raw entry keeps GPA bits 50:12 only.
                            naive.put(pa, RawRmpEntry::encode(&e, false).decode());
                        }
                    }
                    Op::InUse { page, on } => {
                        let pa = base + page * 4096;
                        if rmp.set_in_use(Spa::new(pa), on).is_ok() {
                            naive.in_use.insert(pa >> 12, on);
                        }
                    }
                }
                for &b in &regions {
                    let s = Spa::new(b);
                    prop_assert_eq!(rmp.assigned_in_region(s), rmp.recount(s));
                    prop_assert_eq!(rmp.assigned_in_region(s), naive.count(b));
                    prop_assert_eq!(rmp.region_has_assigned(s), naive.count(b) != 0);
                    prop_assert!(rmp.tail_consistent(s));
                    for k in [0u64, 1, 2, 255, 510, 511] {
                        let pa = b + k * 4096;
                        prop_assert_eq!(rmp.entry(Spa::new(pa)), naive.entry(pa));
                        prop_assert_eq!(rmp.stored_entry(Spa::new(pa)), naive.stored(pa));
                        prop_assert_eq!(rmp.in_use(Spa::new(pa)), naive.in_use(pa));
                    }
                }
            }
            // Every stored non-zero entry of the naive model is in the region dumps, in order.
            for &b in &regions {
                let dump: Vec<u64> =
                    rmp.region_entries(Spa::new(b)).iter().map(|(s, _)| s.raw()).collect();
                let mut want: Vec<u64> = (0..512u64)
                    .map(|k| b + k * 4096)
                    .filter(|&pa| rmp.raw(Spa::new(pa)) != RawRmpEntry::ZERO)
                    .collect();
                want.sort_unstable();
                prop_assert_eq!(dump, want);
            }
        }
    }

    #[test]
    fn tails_come_and_go() {
        let mut rmp = Rmp::new(RmpLayout::covering(Spa::ZERO, 4 * M2).unwrap());
        let hv = Executor::Hypervisor;
        assert_eq!(rmp.split_regions(), 0);
        // A 2 MiB assignment stores only the aligned entry: no tail.
        let big = RmpUpdateInput::private(Gpa::new(0), RmpPageSize::M2, 1, false);
        assert_eq!(rmp.rmpupdate(hv, Spa::new(M2), &big), RmpReturn::Success);
        assert_eq!(rmp.split_regions(), 0);
        // PSMASH writes 511 non-zero 4 KiB entries after the aligned one: one tail.
        assert_eq!(rmp.psmash(hv, Spa::new(M2)), RmpReturn::Success);
        assert_eq!(rmp.split_regions(), 1);
        assert_eq!(rmp.assigned_in_region(Spa::new(M2)), 512);
        // Making the pages shared leaves non-zero entries (RMPUPDATE resets the VMPL masks to
        // VMPL0 full on any change, spec/snp.md §3.2), so the tail stays.
        for k in 1..512u64 {
            let sh = RmpUpdateInput::shared(RmpPageSize::K4);
            assert_eq!(rmp.rmpupdate(hv, Spa::new(M2 + k * 4096), &sh), RmpReturn::Success);
        }
        assert_eq!(rmp.split_regions(), 1);
        assert_eq!(rmp.assigned_in_region(Spa::new(M2)), 1);
        // Zeroing every non-aligned entry frees it.
        for k in 1..512u64 {
            rmp.set_entry(Spa::new(M2 + k * 4096), &RmpEntry::ZERO).unwrap();
        }
        assert_eq!(rmp.split_regions(), 0);
        let dense = 4 * 32 + 8;
        assert_eq!(rmp.storage_bytes(), dense);
    }
}
