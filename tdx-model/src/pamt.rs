//! The Physical Address Metadata Table (spec/tdx.md §1.5; TDX module `pamt_manager.h`,
//! `helpers.c: non_shared_hpa_metadata_check_and_lock`, `check_and_lock_free_range_hpa`).
//!
//! The real PAMT is three dense arrays (1G, 2M, 4K levels) of 16-byte entries per TDMR. The
//! model keeps only the entries that are not `PT_NDA`, one sparse map per level, so its memory
//! grows with the pages assigned to TDs, not with host memory. An absent entry is `PT_NDA`.
//! TDMR coverage is not modelled: every address below MAX_PA is in a TDMR.

use rustc_hash::FxHashMap;
use sim_core::PageSize;

/// PAMT page type (spec/tdx.md §1.5; `pamt_manager.h` `page_type_t`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum PageType {
    /// 0: not assigned (free for the host).
    Nda,
    /// 1: reserved.
    Rsvd,
    /// 3: a TD private page.
    Reg,
    /// 4: a TD root page.
    Tdr,
    /// 5: a TD control-structure extension page (TDCS, TDVPS extension).
    Tdcx,
    /// 6: a vCPU root page.
    Tdvpr,
    /// 8: a Secure-EPT page.
    Ept,
}

impl PageType {
    /// The numeric value the module stores (and TDH.PHYMEM.PAGE.RECLAIM returns in RCX).
    pub const fn value(self) -> u8 {
        match self {
            PageType::Nda => 0,
            PageType::Rsvd => 1,
            PageType::Reg => 3,
            PageType::Tdr => 4,
            PageType::Tdcx => 5,
            PageType::Tdvpr => 6,
            PageType::Ept => 8,
        }
    }

    /// The page type with numeric value `v`.
    pub const fn from_value(v: u8) -> Option<PageType> {
        Some(match v {
            0 => PageType::Nda,
            1 => PageType::Rsvd,
            3 => PageType::Reg,
            4 => PageType::Tdr,
            5 => PageType::Tdcx,
            6 => PageType::Tdvpr,
            8 => PageType::Ept,
            _ => return None,
        })
    }

    /// The module's name (`PT_REG`, …).
    pub const fn name(self) -> &'static str {
        match self {
            PageType::Nda => "PT_NDA",
            PageType::Rsvd => "PT_RSVD",
            PageType::Reg => "PT_REG",
            PageType::Tdr => "PT_TDR",
            PageType::Tdcx => "PT_TDCX",
            PageType::Tdvpr => "PT_TDVPR",
            PageType::Ept => "PT_EPT",
        }
    }
}

/// One PAMT entry (spec/tdx.md §1.5). The entry's lock is kept apart (crate `lock` module).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PamtEntry {
    /// Page type.
    pub pt: PageType,
    /// The owning TD's TDR **HPA** (4 KiB aligned; 0 for free pages and for TDR pages). The
    /// module stores bits 51:12 of it (a 40-bit field); the model keeps the full address, which
    /// is also what TDH.PHYMEM.PAGE.RECLAIM returns in RDX.
    pub owner: u64,
    /// The TD epoch when the page was blocked (TDH.MEM.RANGE.BLOCK), for TLB tracking.
    pub bepoch: u64,
    /// The PAMT level holding the entry: the page's size.
    pub size: PageSize,
}

impl PamtEntry {
    /// A free entry at `size`.
    pub const fn nda(size: PageSize) -> PamtEntry {
        PamtEntry { pt: PageType::Nda, owner: 0, bepoch: 0, size }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stored {
    pt: PageType,
    owner: u64,
    bepoch: u64,
}

/// The PAMT: sparse per-level maps of assigned entries. Lookups only; never iterated, so hash
/// order cannot reach an output (STYLE rule 14).
#[derive(Debug, Default)]
pub struct Pamt {
    levels: [FxHashMap<u64, Stored>; 3],
    /// Assigned 4 KiB entries per 2 MiB region (for the "2M range free" check).
    k4_per_2m: FxHashMap<u64, u32>,
}

sim_core::clone_by_fields!(Pamt { levels, k4_per_2m });

/// Level index (0 = 4K, 1 = 2M, 2 = 1G) and page number at that level.
fn key(hpa: u64, size: PageSize) -> (usize, u64) {
    (size.index(), hpa >> size.shift())
}

impl Pamt {
    /// An empty PAMT: every page `PT_NDA`.
    pub fn new() -> Pamt {
        Pamt::default()
    }

    /// The entry at exactly level `size` for the page containing `hpa` (NDA if unassigned).
    pub fn get(&self, hpa: u64, size: PageSize) -> PamtEntry {
        let (l, k) = key(hpa, size);
        match self.levels[l].get(&k) {
            Some(s) => PamtEntry { pt: s.pt, owner: s.owner, bepoch: s.bepoch, size },
            None => PamtEntry::nda(size),
        }
    }

    /// The PAMT walk (`pamt_walk`): from the 1G level down, stopping at the first assigned
    /// entry or at level `target`. Returns the entry reached (its `size` is the level).
    pub fn walk(&self, hpa: u64, target: PageSize) -> PamtEntry {
        for size in [PageSize::G1, PageSize::M2, PageSize::K4] {
            let e = self.get(hpa, size);
            if e.pt != PageType::Nda || size == target {
                return e;
            }
        }
        PamtEntry::nda(PageSize::K4)
    }

    /// The effective entry of the 4 KiB page containing `hpa` (1G, then 2M, then 4K).
    pub fn entry(&self, hpa: u64) -> PamtEntry {
        self.walk(hpa, PageSize::K4)
    }

    /// Set the entry at level `size` (an NDA entry removes it).
    pub fn set(&mut self, hpa: u64, entry: PamtEntry) {
        let (l, k) = key(hpa, entry.size);
        let old = if entry.pt == PageType::Nda {
            self.levels[l].remove(&k)
        } else {
            self.levels[l]
                .insert(k, Stored { pt: entry.pt, owner: entry.owner, bepoch: entry.bepoch })
        };
        if entry.size == PageSize::K4 {
            let region = hpa >> PageSize::M2.shift();
            match (old.is_some(), entry.pt != PageType::Nda) {
                (false, true) => *self.k4_per_2m.entry(region).or_insert(0) += 1,
                (true, false) => {
                    if let Some(c) = self.k4_per_2m.get_mut(&region) {
                        *c = c.saturating_sub(1);
                        if *c == 0 {
                            self.k4_per_2m.remove(&region);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Free the entry at level `size`.
    pub fn clear(&mut self, hpa: u64, size: PageSize) {
        self.set(hpa, PamtEntry::nda(size));
    }

    /// Set BEPOCH of the entry at level `size` (no effect on an NDA entry).
    pub fn set_bepoch(&mut self, hpa: u64, size: PageSize, bepoch: u64) {
        let (l, k) = key(hpa, size);
        if let Some(s) = self.levels[l].get_mut(&k) {
            s.bepoch = bepoch;
        }
    }

    /// `pamt_is_2mb_range_free`: the 2 MiB range holding `hpa` has no assigned 2M entry and
    /// no assigned 4K entry (and no 1G entry covers it).
    pub fn range_2m_free(&self, hpa: u64) -> bool {
        self.get(hpa, PageSize::G1).pt == PageType::Nda
            && self.get(hpa, PageSize::M2).pt == PageType::Nda
            && !self.k4_per_2m.contains_key(&(hpa >> PageSize::M2.shift()))
    }

    /// Split the entry of size `size` at `hpa` into 512 entries of the next smaller size with
    /// the same type, owner and BEPOCH (`pamt_demote`). Returns false (changing nothing) if
    /// the entry is NDA or `size` is 4K.
    pub fn demote(&mut self, hpa: u64, size: PageSize) -> bool {
        let Some(small) = size.next_smaller() else { return false };
        let base = hpa & !(size.bytes() - 1);
        let e = self.get(base, size);
        if e.pt == PageType::Nda {
            return false;
        }
        self.clear(base, size);
        for i in 0..512 {
            self.set(base + i * small.bytes(), PamtEntry { size: small, ..e });
        }
        true
    }

    /// Merge the 512 entries of size `size`'s next smaller size covering the `size`-aligned
    /// range at `hpa` into one entry of `size` (`pamt_promote`). They must all be assigned
    /// with the same type and owner; otherwise nothing changes and false is returned. The
    /// merged entry takes the first child's BEPOCH (unsourced: the model's choice; the merged
    /// page is never blocked at this point).
    pub fn promote(&mut self, hpa: u64, size: PageSize) -> bool {
        let Some(small) = size.next_smaller() else { return false };
        let base = hpa & !(size.bytes() - 1);
        let first = self.get(base, small);
        if first.pt == PageType::Nda || self.get(base, size).pt != PageType::Nda {
            return false;
        }
        let uniform = (1..512u64).all(|i| {
            let e = self.get(base + i * small.bytes(), small);
            e.pt == first.pt && e.owner == first.owner
        });
        if !uniform {
            return false;
        }
        for i in 0..512 {
            self.clear(base + i * small.bytes(), small);
        }
        self.set(base, PamtEntry { size, ..first });
        true
    }

    /// Number of assigned entries stored (all levels), for memory checks.
    pub fn stored_entries(&self) -> usize {
        self.levels.iter().map(|m| m.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TDR: u64 = 0x10_0000;

    fn reg(size: PageSize) -> PamtEntry {
        PamtEntry { pt: PageType::Reg, owner: TDR, bepoch: 0, size }
    }

    #[test]
    fn page_type_values() {
        for (t, v) in [
            (PageType::Nda, 0),
            (PageType::Rsvd, 1),
            (PageType::Reg, 3),
            (PageType::Tdr, 4),
            (PageType::Tdcx, 5),
            (PageType::Tdvpr, 6),
            (PageType::Ept, 8),
        ] {
            assert_eq!(t.value(), v);
            assert_eq!(PageType::from_value(v), Some(t));
        }
        assert_eq!(PageType::from_value(7), None);
    }

    #[test]
    fn levels_free_ranges_split_and_merge() {
        let mut p = Pamt::new();
        assert_eq!(p.entry(0x4000_1000), PamtEntry::nda(PageSize::K4));
        assert!(p.range_2m_free(0x4000_0000));
        p.set(0x4000_1000, reg(PageSize::K4));
        assert!(!p.range_2m_free(0x4000_0000));
        assert!(p.range_2m_free(0x4020_0000));
        assert_eq!(p.walk(0x4000_0000, PageSize::M2), PamtEntry::nda(PageSize::M2));
        p.clear(0x4000_1000, PageSize::K4);
        assert!(p.range_2m_free(0x4000_0000));
        // A 2M page: the 4K lookup finds it at the 2M level.
        p.set(0x4020_0000, reg(PageSize::M2));
        assert_eq!(p.entry(0x4020_5000), reg(PageSize::M2));
        assert_eq!(p.walk(0x4020_5000, PageSize::K4).size, PageSize::M2);
        assert_eq!(p.stored_entries(), 1);
        // Split and merge keep the memory proportional to assigned pages.
        assert!(p.demote(0x4020_0000, PageSize::M2));
        assert_eq!(p.stored_entries(), 512);
        assert_eq!(p.entry(0x4020_5000), reg(PageSize::K4));
        assert!(!p.range_2m_free(0x4020_0000));
        p.set_bepoch(0x4020_5000, PageSize::K4, 7);
        assert!(p.promote(0x4020_0000, PageSize::M2));
        assert_eq!(p.stored_entries(), 1);
        assert_eq!(p.entry(0x4020_0000), reg(PageSize::M2));
        // A non-uniform range is not merged.
        assert!(p.demote(0x4020_0000, PageSize::M2));
        p.clear(0x4020_3000, PageSize::K4);
        assert!(!p.promote(0x4020_0000, PageSize::M2));
        assert_eq!(p.stored_entries(), 511);
    }
}
