//! Which address kinds page tables translate, and which they point at (STYLE rules 3–4).
//!
//! A page table maps an input kind ([`PagedAddr`]: `Hva` for host tables, `Gva` for a guest's
//! own tables, `Gpa` for nested tables) to an output kind ([`PhysAddr`]: `Spa`, or `Gpa` for a
//! guest's own tables, whose table pages and leaves are guest-physical). Only a walk turns one
//! into the other.

use crate::level::Paging;
use sim_core::{Gpa, Gva, Hva, Spa};
use std::fmt;

mod sealed {
    pub trait Sealed {}
    impl Sealed for sim_core::Hva {}
    impl Sealed for sim_core::Gva {}
    impl Sealed for sim_core::Gpa {}
    impl Sealed for sim_core::Spa {}
    impl Sealed for sim_core::Iova {}
}

/// An address kind that page tables translate.
pub trait PagedAddr: Copy + Eq + Ord + fmt::Debug + fmt::LowerHex + sealed::Sealed {
    /// Short name for messages.
    const KIND: &'static str;
    /// The raw value.
    fn raw(self) -> u64;
    /// Build from a value derived from an in-range address of the same kind (aligning down,
    /// adding an offset inside a mapped page).
    fn from_raw(v: u64) -> Self;
    /// Whether a walk of this depth can translate the address: canonical for virtual kinds,
    /// below 2^va_bits for a GPA (Intel SDM Vol. 3A §4.5; AMD APM Vol. 2 §5.3.1).
    fn in_range(self, paging: Paging) -> bool;
}

impl PagedAddr for Hva {
    const KIND: &'static str = Hva::KIND;
    fn raw(self) -> u64 {
        Hva::raw(self)
    }
    fn from_raw(v: u64) -> Self {
        Hva::new(v)
    }
    fn in_range(self, paging: Paging) -> bool {
        self.is_canonical(paging.va_bits())
    }
}

/// An I/O virtual address: below 2^48 or 2^57 by the I/O table's depth (AMD IOMMU spec:
/// Mode 4 translates 48 bits, Mode 5 57; VT-d AGAW 48/57).
impl PagedAddr for sim_core::Iova {
    const KIND: &'static str = "Iova";
    fn raw(self) -> u64 {
        sim_core::Iova::raw(self)
    }
    fn from_raw(v: u64) -> Self {
        sim_core::Iova::new_truncate(v)
    }
    fn in_range(self, paging: Paging) -> bool {
        sim_core::Iova::raw(self) >> paging.va_bits() == 0
    }
}

impl PagedAddr for Gva {
    const KIND: &'static str = Gva::KIND;
    fn raw(self) -> u64 {
        Gva::raw(self)
    }
    fn from_raw(v: u64) -> Self {
        Gva::new(v)
    }
    fn in_range(self, paging: Paging) -> bool {
        self.is_canonical(paging.va_bits())
    }
}

impl PagedAddr for Gpa {
    const KIND: &'static str = Gpa::KIND;
    fn raw(self) -> u64 {
        Gpa::raw(self)
    }
    fn from_raw(v: u64) -> Self {
        Gpa::new_truncate(v)
    }
    fn in_range(self, paging: Paging) -> bool {
        Gpa::raw(self) >> paging.va_bits() == 0
    }
}

/// An address kind that page-table entries point at (table pages and leaf frames).
pub trait PhysAddr:
    Copy + Eq + Ord + Default + fmt::Debug + fmt::LowerHex + sealed::Sealed
{
    /// Short name for messages.
    const KIND: &'static str;
    /// The raw value.
    fn raw(self) -> u64;
    /// Build from a value read out of an entry's address field (at most 52 bits).
    fn from_raw(v: u64) -> Self;
}

impl PhysAddr for Spa {
    const KIND: &'static str = Spa::KIND;
    fn raw(self) -> u64 {
        Spa::raw(self)
    }
    fn from_raw(v: u64) -> Self {
        Spa::new_truncate(v)
    }
}

impl PhysAddr for Gpa {
    const KIND: &'static str = Gpa::KIND;
    fn raw(self) -> u64 {
        Gpa::raw(self)
    }
    fn from_raw(v: u64) -> Self {
        Gpa::new_truncate(v)
    }
}
