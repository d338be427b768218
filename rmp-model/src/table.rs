//! The RMP table: layout (RMP_BASE/RMP_END), sparse storage, and functional lookups.

use crate::entry::{RawRmpEntry, RmpEntry, RmpPageSize};
use crate::stats::RmpStats;
use sim_core::{PageSize, Spa};

/// Size of the processor bookkeeping area at RMP_BASE, before the first entry (spec/snp.md §1.3).
pub const RMP_BOOKKEEPING_BYTES: u64 = 0x4000;
/// Bytes per RMP entry (spec/snp.md §1.2).
pub const RMP_ENTRY_BYTES: u64 = 16;
/// Alignment hardware requires of RMP_BASE and RMP_END + 1 (spec/snp.md §1.3, 8 KiB).
pub const RMP_ALIGN: u64 = 8 << 10;
/// 4 KiB pages per 2 MiB region.
pub const PAGES_PER_2M: u64 = 512;

/// Where the RMP sits and how much memory it covers (contiguous RMP, spec/snp.md §1.3).
///
/// Pages at or beyond [`RmpLayout::covered_end`] are not RMP-covered and always count as
/// hypervisor-owned for RMP checks (APM §15.36.5, §15.36.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmpLayout {
    base: Spa,
    covered_end: Spa,
}

/// The RMP_BASE/RMP_END values cannot describe an RMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RmpLayoutError {
    /// RMP_BASE or RMP_END + 1 is not 8 KiB-aligned.
    #[error("RMP_BASE {base:#x} / RMP_END {end:#x}: base and end+1 must be 8 KiB-aligned")]
    Misaligned {
        /// RMP_BASE.
        base: u64,
        /// RMP_END (address of the last byte).
        end: u64,
    },
    /// The range is smaller than the bookkeeping area, or ends below its start.
    #[error("RMP_BASE {base:#x} / RMP_END {end:#x}: range holds no entries")]
    Empty {
        /// RMP_BASE.
        base: u64,
        /// RMP_END.
        end: u64,
    },
    /// The covered memory size is not a multiple of 4 KiB.
    #[error("covered size {bytes:#x} is not a multiple of 4 KiB")]
    CoverageNotPageAligned {
        /// The size asked for.
        bytes: u64,
    },
}

impl RmpLayout {
    /// Layout from the RMP_BASE and RMP_END MSR values (RMP_END is the address of the last
    /// byte). Coverage is `((RMP_END + 1 − RMP_BASE − 16 KiB) / 16) × 4 KiB` (spec/snp.md §1.3).
    ///
    /// # Errors
    /// [`RmpLayoutError::Misaligned`] or [`RmpLayoutError::Empty`].
    pub fn from_msrs(rmp_base: Spa, rmp_end: Spa) -> Result<RmpLayout, RmpLayoutError> {
        let (base, end) = (rmp_base.raw(), rmp_end.raw());
        let Some(end1) = end.checked_add(1) else {
            return Err(RmpLayoutError::Misaligned { base, end });
        };
        if !base.is_multiple_of(RMP_ALIGN) || !end1.is_multiple_of(RMP_ALIGN) {
            return Err(RmpLayoutError::Misaligned { base, end });
        }
        let bytes = end1
            .checked_sub(base)
            .and_then(|b| b.checked_sub(RMP_BOOKKEEPING_BYTES))
            .filter(|b| *b >= RMP_ENTRY_BYTES)
            .ok_or(RmpLayoutError::Empty { base, end })?;
        let covered = (bytes / RMP_ENTRY_BYTES) << PageSize::K4.shift();
        Ok(RmpLayout { base: rmp_base, covered_end: Spa::new_truncate(covered) })
    }

    /// Layout covering `[0, covered_bytes)` with the table at `rmp_base`.
    ///
    /// # Errors
    /// [`RmpLayoutError::CoverageNotPageAligned`] if `covered_bytes` is not 4 KiB-aligned.
    pub fn covering(rmp_base: Spa, covered_bytes: u64) -> Result<RmpLayout, RmpLayoutError> {
        if !covered_bytes.is_multiple_of(PageSize::K4.bytes()) {
            return Err(RmpLayoutError::CoverageNotPageAligned { bytes: covered_bytes });
        }
        Ok(RmpLayout { base: rmp_base, covered_end: Spa::new_truncate(covered_bytes) })
    }

    /// RMP_BASE.
    pub const fn base(&self) -> Spa {
        self.base
    }

    /// First SPA that is not covered.
    pub const fn covered_end(&self) -> Spa {
        self.covered_end
    }

    /// Whether the page holding `spa` has an RMP entry.
    pub const fn is_covered(&self, spa: Spa) -> bool {
        spa.raw() < self.covered_end.raw()
    }

    /// SPA of the entry for the page holding `spa`: RMP_BASE + 0x4000 + PFN × 16
    /// (spec/snp.md §1.3), or `None` if the page is not covered.
    pub fn entry_addr(&self, spa: Spa) -> Option<Spa> {
        if !self.is_covered(spa) {
            return None;
        }
        self.base.checked_add(RMP_BOOKKEEPING_BYTES + spa.page_number() * RMP_ENTRY_BYTES)
    }

    /// RMP_END for this layout (address of the last byte).
    pub fn rmp_end(&self) -> Spa {
        Spa::new_truncate(
            self.base.raw()
                + RMP_BOOKKEEPING_BYTES
                + (self.covered_end.raw() >> PageSize::K4.shift()) * RMP_ENTRY_BYTES
                - 1,
        )
    }

    fn regions(&self) -> usize {
        let r = self.covered_end.raw().div_ceil(PageSize::M2.bytes());
        usize::try_from(r).expect("region count fits the host's address space")
    }
}

/// A page or region outside the RMP's coverage was named where an entry is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("SPA {spa:#x} is not covered by the RMP (coverage ends at {covered_end:#x})")]
pub struct NotCovered {
    /// The address asked for.
    pub spa: Spa,
    /// The end of coverage.
    pub covered_end: Spa,
}

/// The RMP table (spec/snp.md §1).
///
/// Storage: entries are kept in 8 KiB chunks of 512 raw entries, one chunk per 2 MiB region,
/// allocated on the first write of a non-zero entry into that region (`Vec<Option<Box<..>>>`
/// indexed by region). Why: it is dense where the RMP is used and empty elsewhere, lookups are
/// two array indexings (no hashing), iteration is naturally in address order (deterministic,
/// usable for dumps of a region), and the worst case — every page of a 1 TiB host assigned at
/// 4 KiB — costs 4 GiB, exactly the real RMP's size (16 B per 4 KiB, spec/snp.md §5).
/// Alongside, `assigned[r]` counts the stored entries of region `r` with Assigned = 1 (the
/// aligned entry of a 2 MiB entry counts once), so "is any page of this 2 MiB region assigned?"
/// is O(1). Every write goes through one function that keeps the count exact.
#[derive(Clone, Debug)]
pub struct Rmp {
    layout: RmpLayout,
    chunks: Vec<Option<Box<[RawRmpEntry; 512]>>>,
    assigned: Vec<u16>,
    pub(crate) stats: RmpStats,
}

impl Rmp {
    /// An all-zero RMP (every page hypervisor-owned, 4 KiB) with the given layout.
    pub fn new(layout: RmpLayout) -> Rmp {
        let n = layout.regions();
        Rmp {
            layout,
            chunks: std::iter::repeat_with(|| None).take(n).collect(),
            assigned: vec![0; n],
            stats: RmpStats::default(),
        }
    }

    /// The layout.
    pub const fn layout(&self) -> &RmpLayout {
        &self.layout
    }

    /// Counters since construction.
    pub const fn stats(&self) -> &RmpStats {
        &self.stats
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
    pub fn entry(&self, spa: Spa) -> RmpEntry {
        let base = self.raw(spa.align_down(PageSize::M2));
        if base.assigned() {
            let b = base.decode();
            if b.page_size == RmpPageSize::M2 {
                return b;
            }
        }
        self.stored_entry(spa)
    }

    /// Whether any page of the 2 MiB region holding `spa` is assigned (any stored entry of the
    /// region with Assigned = 1, including an assigned 2 MiB entry). O(1).
    pub fn region_has_assigned(&self, spa: Spa) -> bool {
        self.assigned_in_region(spa) != 0
    }

    /// Number of stored entries of the 2 MiB region holding `spa` with Assigned = 1.
    pub fn assigned_in_region(&self, spa: Spa) -> u16 {
        self.assigned.get(region_index(spa)).copied().unwrap_or(0)
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
        let Some(Some(chunk)) = self.chunks.get(region_index(spa)) else { return Vec::new() };
        chunk
            .iter()
            .enumerate()
            .filter(|(_, r)| **r != RawRmpEntry::ZERO)
            .map(|(i, r)| {
                (Spa::new_truncate(base.raw() + ((i as u64) << PageSize::K4.shift())), r.decode())
            })
            .collect()
    }

    pub(crate) fn require_covered(&self, spa: Spa) -> Result<(), NotCovered> {
        if self.layout.is_covered(spa) {
            Ok(())
        } else {
            Err(NotCovered { spa, covered_end: self.layout.covered_end })
        }
    }

    /// Whether the whole 2 MiB region holding `spa` is covered.
    pub(crate) fn region_covered(&self, spa: Spa) -> bool {
        let base = spa.align_down(PageSize::M2);
        base.raw() + PageSize::M2.bytes() <= self.layout.covered_end.raw()
    }

    pub(crate) fn raw(&self, spa: Spa) -> RawRmpEntry {
        match self.chunks.get(region_index(spa)) {
            Some(Some(c)) => c[slot(spa)],
            Some(None) | None => RawRmpEntry::ZERO,
        }
    }

    /// The one writer of entries: keeps `assigned` exact. `spa` must be covered.
    pub(crate) fn store_raw(&mut self, spa: Spa, new: RawRmpEntry) {
        let r = region_index(spa);
        let old = self.raw(spa);
        if old == new {
            return;
        }
        match (old.assigned(), new.assigned()) {
            (false, true) => self.assigned[r] += 1,
            (true, false) => self.assigned[r] -= 1,
            (false, false) | (true, true) => {}
        }
        let chunk = self.chunks[r].get_or_insert_with(|| {
            vec![RawRmpEntry::ZERO; 512].into_boxed_slice().try_into().expect("512 entries")
        });
        chunk[slot(spa)] = new;
    }

    /// Recount a region from storage (tests check the maintained count against it).
    #[cfg(test)]
    pub(crate) fn recount(&self, spa: Spa) -> u16 {
        match self.chunks.get(region_index(spa)) {
            Some(Some(c)) => {
                u16::try_from(c.iter().filter(|r| r.assigned()).count()).expect("<= 512")
            }
            Some(None) | None => 0,
        }
    }

    /// Number of 2 MiB regions the table tracks.
    #[cfg(test)]
    pub(crate) fn region_count(&self) -> usize {
        self.assigned.len()
    }
}

fn region_index(spa: Spa) -> usize {
    usize::try_from(spa.raw() >> PageSize::M2.shift()).unwrap_or(usize::MAX)
}

fn slot(spa: Spa) -> usize {
    // The page's index inside its 2 MiB region: 9 bits, always fits.
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
