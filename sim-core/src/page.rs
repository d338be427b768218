//! Page sizes: an enum where the size is data, marker types where it is fixed (STYLE rule 5).
//!
//! x86-64 long mode supports 4 KiB, 2 MiB and 1 GiB translations (Intel SDM Vol. 3A §4.5,
//! Table 4-1; AMD APM Vol. 2 §5.3).

use std::fmt;

/// A translation page size, known at run time (TLB entries, RMP page-size bit, trace records).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum PageSize {
    /// 4 KiB: a PTE leaf.
    #[serde(rename = "4K")]
    K4,
    /// 2 MiB: a PDE leaf (PS=1).
    #[serde(rename = "2M")]
    M2,
    /// 1 GiB: a PDPTE leaf (PS=1).
    #[serde(rename = "1G")]
    G1,
}

/// A page-size name was not one of `4K`, `2M`, `1G`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown page size {0:?} (expected 4K, 2M or 1G)")]
pub struct PageSizeParseError(pub String);

impl PageSize {
    /// Every page size, smallest first.
    pub const ALL: [PageSize; 3] = [PageSize::K4, PageSize::M2, PageSize::G1];

    /// log2 of the size in bytes.
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::K4 => 12,
            PageSize::M2 => 21,
            PageSize::G1 => 30,
        }
    }

    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        1u64 << self.shift()
    }

    /// Number of 4 KiB pages in one page of this size.
    pub const fn pages_4k(self) -> u64 {
        self.bytes() >> 12
    }

    /// The next smaller size, or `None` for 4 KiB. Splitting one page of `self` gives 512 of it.
    pub const fn next_smaller(self) -> Option<PageSize> {
        match self {
            PageSize::K4 => None,
            PageSize::M2 => Some(PageSize::K4),
            PageSize::G1 => Some(PageSize::M2),
        }
    }

    /// The next larger size, or `None` for 1 GiB.
    pub const fn next_larger(self) -> Option<PageSize> {
        match self {
            PageSize::K4 => Some(PageSize::M2),
            PageSize::M2 => Some(PageSize::G1),
            PageSize::G1 => None,
        }
    }

    /// Index 0, 1, 2 for 4K, 2M, 1G; for arrays of per-size counters.
    pub const fn index(self) -> usize {
        match self {
            PageSize::K4 => 0,
            PageSize::M2 => 1,
            PageSize::G1 => 2,
        }
    }

    /// The canonical name: `4K`, `2M` or `1G`.
    pub const fn name(self) -> &'static str {
        match self {
            PageSize::K4 => "4K",
            PageSize::M2 => "2M",
            PageSize::G1 => "1G",
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PageSize {
    type Err = PageSizeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "4K" | "4k" | "4KiB" => Ok(PageSize::K4),
            "2M" | "2m" | "2MiB" => Ok(PageSize::M2),
            "1G" | "1g" | "1GiB" => Ok(PageSize::G1),
            other => Err(PageSizeParseError(other.to_owned())),
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A page size fixed at compile time, for `Page<S>`-style types (STYLE rule 5).
pub trait FixedPageSize: sealed::Sealed + Copy + fmt::Debug + 'static {
    /// The run-time size this marker stands for.
    const SIZE: PageSize;
}

/// Marker for 4 KiB pages.
#[derive(Clone, Copy, Debug)]
pub struct Size4K;
/// Marker for 2 MiB pages.
#[derive(Clone, Copy, Debug)]
pub struct Size2M;
/// Marker for 1 GiB pages.
#[derive(Clone, Copy, Debug)]
pub struct Size1G;

impl sealed::Sealed for Size4K {}
impl sealed::Sealed for Size2M {}
impl sealed::Sealed for Size1G {}
impl FixedPageSize for Size4K {
    const SIZE: PageSize = PageSize::K4;
}
impl FixedPageSize for Size2M {
    const SIZE: PageSize = PageSize::M2;
}
impl FixedPageSize for Size1G {
    const SIZE: PageSize = PageSize::G1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ratios() {
        assert_eq!(PageSize::K4.bytes(), 4096);
        assert_eq!(PageSize::M2.bytes(), 2 << 20);
        assert_eq!(PageSize::G1.bytes(), 1 << 30);
        for s in PageSize::ALL {
            if let Some(lo) = s.next_smaller() {
                assert_eq!(s.bytes() / lo.bytes(), 512);
                assert_eq!(lo.next_larger(), Some(s));
            }
            assert_eq!(s.name().parse::<PageSize>().unwrap(), s);
            assert_eq!(PageSize::ALL[s.index()], s);
        }
        assert_eq!(Size2M::SIZE.pages_4k(), 512);
        assert!("3M".parse::<PageSize>().is_err());
    }
}
