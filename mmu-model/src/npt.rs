//! The AMD nested page table (NPT) entry.
//!
//! AMD APM Vol. 2 §15.25.5: nested page tables use the same entry format as long-mode page
//! tables (P, R/W, U/S, PWT, PCD, A, D, PS, G, PAT, NX, address, at the same bit positions as
//! [`X86Pte`]); only their meaning differs: they translate guest-physical to system-physical
//! addresses, their permission checks treat every access as a user access, and a failure is a
//! #VMEXIT(NPF) rather than a #PF. A separate type keeps the two kinds of table from being mixed
//! up (STYLE rule 6), even though the bits are the same.

use crate::addr::PhysAddr;
use crate::entry::{PagingEntry, Perms};
use crate::level::Level;
use crate::pte::{LeafAttrs, PteFlags, PteFormat, X86Pte};
use sim_core::PageSize;
use std::fmt;

/// One 8-byte NPT entry, bit-exact: the [`X86Pte`] layout (AMD APM Vol. 2 §15.25.5, which
/// refers to the long-mode formats of §5.3/§5.4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct NptEntry(u64);

impl NptEntry {
    /// The not-present entry.
    pub const EMPTY: NptEntry = NptEntry(0);

    /// Wrap a raw value.
    pub const fn new(raw: u64) -> NptEntry {
        NptEntry(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The same bits read as a long-mode entry (identical layout).
    pub const fn as_x86(self) -> X86Pte {
        X86Pte::new(self.0)
    }

    /// The single-bit flags.
    pub const fn flags(self) -> PteFlags {
        self.as_x86().flags()
    }
}

impl fmt::Debug for NptEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NptEntry({:#018x} {:?})", self.0, self.flags())
    }
}

impl PagingEntry for NptEntry {
    type Attrs = LeafAttrs;
    type TableFlags = PteFlags;
    const FORMAT: &'static str = "NPT";
    const ACCESSED: u64 = PteFlags::ACCESSED.bits();
    const DIRTY: u64 = PteFlags::DIRTY.bits();

    #[inline]
    fn addr_bits(fmt: PteFormat) -> u64 {
        fmt.addr_mask()
    }
    #[inline]
    fn from_raw(raw: u64) -> Self {
        NptEntry(raw)
    }
    #[inline]
    fn to_raw(self) -> u64 {
        self.0
    }
    #[inline]
    fn present(self) -> bool {
        self.as_x86().is_present()
    }
    #[inline]
    fn leaf_at(self, level: Level) -> bool {
        self.as_x86().is_leaf(level)
    }
    #[inline]
    fn malformed(self, level: Level, fmt: PteFormat) -> bool {
        self.as_x86().reserved_bits_set(level, fmt)
    }
    #[inline]
    fn rights(self) -> Perms {
        self.as_x86().rights()
    }
    #[inline]
    fn next_table<P: PhysAddr>(self, fmt: PteFormat) -> P {
        self.as_x86().table_addr(fmt)
    }
    #[inline]
    fn leaf_frame<P: PhysAddr>(self, size: PageSize, fmt: PteFormat) -> P {
        self.as_x86().frame(size, fmt)
    }
    #[inline]
    fn encrypted(self, fmt: PteFormat) -> bool {
        self.as_x86().c_bit(fmt)
    }
    fn make_table<P: PhysAddr>(table: P, flags: PteFlags, fmt: PteFormat) -> Self {
        NptEntry(X86Pte::table(table, flags, fmt).raw())
    }
    fn make_leaf<P: PhysAddr>(frame: P, size: PageSize, attrs: LeafAttrs, fmt: PteFormat) -> Self {
        NptEntry(X86Pte::leaf(frame, size, attrs, fmt).raw())
    }
    fn attrs_of(self, size: PageSize, fmt: PteFormat) -> LeafAttrs {
        self.as_x86().leaf_attrs(size, fmt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::Spa;

    #[test]
    fn same_bits_as_long_mode() {
        let fmt = PteFormat::default();
        let a = LeafAttrs::new(PteFlags::WRITABLE | PteFlags::USER);
        let n = NptEntry::make_leaf(Spa::new(0x4020_0000), PageSize::M2, a, fmt);
        let x = X86Pte::leaf(Spa::new(0x4020_0000), PageSize::M2, a, fmt);
        assert_eq!(n.raw(), x.raw());
        assert_eq!(n.raw(), 0x4020_0000 | 0x80 | 0x7);
        assert!(n.leaf_at(Level::Pd));
        assert_eq!(n.rights(), Perms::ALL);
        assert_eq!(n.attrs_of(PageSize::M2, fmt), x.leaf_attrs(PageSize::M2, fmt));
    }
}
