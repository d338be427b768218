//! Paging levels and paging depth (Intel SDM Vol. 3A §4.5, Figures 4-8..4-11; AMD APM Vol. 2
//! §5.3).

use crate::addr::PagedAddr;
use sim_core::PageSize;
use std::fmt;

/// Entries per paging-structure page (4 KiB / 8 bytes).
pub const ENTRIES_PER_TABLE: usize = 512;

/// A paging-structure level, from the root down.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Level {
    /// PML5 (5-level paging only; indexed by VA bits 56:48).
    Pml5,
    /// PML4 (indexed by VA bits 47:39).
    Pml4,
    /// Page-directory-pointer table (bits 38:30); a PS=1 entry maps 1 GiB.
    Pdpt,
    /// Page directory (bits 29:21); a PS=1 entry maps 2 MiB.
    Pd,
    /// Page table (bits 20:12); every present entry maps 4 KiB.
    Pt,
}

impl Level {
    /// Every level, root first.
    pub const ALL: [Level; 5] = [Level::Pml5, Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt];

    /// The level below, or `None` for the page table.
    #[inline]
    pub const fn next_lower(self) -> Option<Level> {
        match self {
            Level::Pml5 => Some(Level::Pml4),
            Level::Pml4 => Some(Level::Pdpt),
            Level::Pdpt => Some(Level::Pd),
            Level::Pd => Some(Level::Pt),
            Level::Pt => None,
        }
    }

    /// The level above, or `None` for PML5.
    pub const fn next_higher(self) -> Option<Level> {
        match self {
            Level::Pml5 => None,
            Level::Pml4 => Some(Level::Pml5),
            Level::Pdpt => Some(Level::Pml4),
            Level::Pd => Some(Level::Pdpt),
            Level::Pt => Some(Level::Pd),
        }
    }

    /// Lowest VA bit of this level's index; also log2 of the bytes one entry spans.
    #[inline]
    pub const fn shift(self) -> u32 {
        match self {
            Level::Pml5 => 48,
            Level::Pml4 => 39,
            Level::Pdpt => 30,
            Level::Pd => 21,
            Level::Pt => 12,
        }
    }

    /// Bytes one entry of this level spans.
    #[inline]
    pub const fn span(self) -> u64 {
        1u64 << self.shift()
    }

    /// The 9-bit index of `va` into a table of this level.
    #[inline]
    pub fn index<V: PagedAddr>(self, va: V) -> usize {
        // Masked to 9 bits: always fits.
        usize::try_from((va.raw() >> self.shift()) & 0x1ff).expect("9-bit index")
    }

    /// The page size a leaf at this level maps, or `None` where leaves are not allowed.
    #[inline]
    pub const fn leaf_size(self) -> Option<PageSize> {
        match self {
            Level::Pml5 | Level::Pml4 => None,
            Level::Pdpt => Some(PageSize::G1),
            Level::Pd => Some(PageSize::M2),
            Level::Pt => Some(PageSize::K4),
        }
    }

    /// The level whose leaves have size `size`.
    pub const fn for_leaf_size(size: PageSize) -> Level {
        match size {
            PageSize::K4 => Level::Pt,
            PageSize::M2 => Level::Pd,
            PageSize::G1 => Level::Pdpt,
        }
    }

    /// 1 for the page table … 5 for PML5 (Linux's PG_LEVEL numbering is different).
    pub const fn number(self) -> u8 {
        match self {
            Level::Pml5 => 5,
            Level::Pml4 => 4,
            Level::Pdpt => 3,
            Level::Pd => 2,
            Level::Pt => 1,
        }
    }

    /// Index 0..5, root first, for arrays of per-level counters.
    #[inline]
    pub const fn idx(self) -> usize {
        match self {
            Level::Pml5 => 0,
            Level::Pml4 => 1,
            Level::Pdpt => 2,
            Level::Pd => 3,
            Level::Pt => 4,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Pml5 => "PML5",
            Level::Pml4 => "PML4",
            Level::Pdpt => "PDPT",
            Level::Pd => "PD",
            Level::Pt => "PT",
        })
    }
}

/// Paging depth: 4-level (48-bit VAs) or 5-level (LA57, 57-bit VAs).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum Paging {
    /// 4-level paging: PML4 at the root.
    #[default]
    FourLevel,
    /// 5-level paging: PML5 at the root.
    FiveLevel,
}

impl Paging {
    /// The root level.
    #[inline]
    pub const fn top(self) -> Level {
        match self {
            Paging::FourLevel => Level::Pml4,
            Paging::FiveLevel => Level::Pml5,
        }
    }

    /// Virtual-address width: 48 or 57.
    #[inline]
    pub const fn va_bits(self) -> u32 {
        match self {
            Paging::FourLevel => 48,
            Paging::FiveLevel => 57,
        }
    }

    /// Number of levels: 4 or 5.
    pub const fn levels(self) -> usize {
        match self {
            Paging::FourLevel => 4,
            Paging::FiveLevel => 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sim_core::Hva;

    #[test]
    fn chain() {
        let mut l = Paging::FiveLevel.top();
        let mut n = 1;
        while let Some(x) = l.next_lower() {
            assert_eq!(x.next_higher(), Some(l));
            assert_eq!(l.shift() - x.shift(), 9);
            l = x;
            n += 1;
        }
        assert_eq!((l, n), (Level::Pt, 5));
        for s in PageSize::ALL {
            assert_eq!(Level::for_leaf_size(s).leaf_size(), Some(s));
            assert_eq!(Level::for_leaf_size(s).shift(), s.shift());
        }
        // The direct map base indexes PML4 slot 273 (Linux mm.rst: 0xffff888000000000).
        assert_eq!(Level::Pml4.index(Hva::new(0xffff_8880_0000_0000)), 273);
    }

    proptest! {
        #[test]
        fn indices_reassemble_the_address(va in any::<u64>()) {
            let h = Hva::new(va);
            let mut rebuilt = va & 0xfff;
            for l in [Level::Pml5, Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt] {
                let i = l.index(h);
                prop_assert!(i < ENTRIES_PER_TABLE);
                rebuilt |= (i as u64) << l.shift();
            }
            prop_assert_eq!(rebuilt, va & ((1 << 57) - 1));
        }
    }
}
