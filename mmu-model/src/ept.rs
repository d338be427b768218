//! The Intel EPT paging-structure entry, bit-exact (Intel SDM Vol. 3C §29.3.2, "EPT
//! Translation Mechanism", the tables giving the formats of EPT PML5E/PML4E/PDPTE/PDE/PTE;
//! misconfigurations per §29.3.3.1). A TDX S-EPT entry is this entry plus the TDX module's
//! state, and wraps this type in tdx-model rather than redefining the bits (STYLE rule 6).

use crate::addr::PhysAddr;
use crate::entry::{PagingEntry, Perms};
use crate::level::Level;
use crate::pte::PteFormat;
use sim_core::PageSize;
use std::fmt;

bitflags::bitflags! {
    /// Single-bit fields of an EPT entry, at their architectural positions (SDM Vol. 3C
    /// §29.3.2). Bits 5:3 are the memory type ([`EptMemType`]), read through
    /// [`EptEntry::mem_type`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct EptFlags: u64 {
        /// Bit 0, R: reads allowed from the region this entry controls. An entry with none of
        /// R, W, X is not present (an access through it is an EPT violation).
        const READ = 1 << 0;
        /// Bit 1, W: writes allowed. W = 1 with R = 0 is an EPT misconfiguration.
        const WRITE = 1 << 1;
        /// Bit 2, X: instruction fetches allowed (supervisor-mode fetches when mode-based
        /// execute control is on; not modelled).
        const EXECUTE = 1 << 2;
        /// Bit 6, ignore PAT (leaves): the EPT memory type is used without combining it with
        /// the guest PAT type.
        const IGNORE_PAT = 1 << 6;
        /// Bit 7, PS in a PDPTE (1 GiB page) or PDE (2 MiB page); reserved in PML4E/PML5E,
        /// ignored in PTEs.
        const HUGE = 1 << 7;
        /// Bit 8, A: set by the processor on use when EPTP bit 6 enables EPT A/D flags.
        const ACCESSED = 1 << 8;
        /// Bit 9, D (leaves): set on a write when EPT A/D flags are enabled.
        const DIRTY = 1 << 9;
        /// Bit 10: user-mode execute (with mode-based execute control for EPT; not modelled).
        const USER_EXECUTE = 1 << 10;
        /// Bit 63, suppress #VE: an EPT violation through this leaf is never converted to a
        /// virtualization exception (the TDX module relies on it for S-EPT).
        const SUPPRESS_VE = 1 << 63;
    }
}

/// The EPT memory type of a leaf, bits 5:3 (SDM Vol. 3C §29.3.7; values 2, 3 and 7 are
/// reserved and cause an EPT misconfiguration).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum EptMemType {
    /// 0: uncacheable (UC).
    Uncacheable,
    /// 1: write combining (WC).
    WriteCombining,
    /// 4: write-through (WT).
    WriteThrough,
    /// 5: write-protected (WP).
    WriteProtected,
    /// 6: write-back (WB), what KVM uses for guest RAM.
    WriteBack,
}

impl EptMemType {
    /// The 3-bit encoding.
    pub const fn bits(self) -> u64 {
        match self {
            EptMemType::Uncacheable => 0,
            EptMemType::WriteCombining => 1,
            EptMemType::WriteThrough => 4,
            EptMemType::WriteProtected => 5,
            EptMemType::WriteBack => 6,
        }
    }

    /// Decode bits 2:0 of `v`; `None` for the reserved encodings 2, 3, 7.
    pub const fn from_bits(v: u64) -> Option<EptMemType> {
        match v & 7 {
            0 => Some(EptMemType::Uncacheable),
            1 => Some(EptMemType::WriteCombining),
            4 => Some(EptMemType::WriteThrough),
            5 => Some(EptMemType::WriteProtected),
            6 => Some(EptMemType::WriteBack),
            _ => None,
        }
    }
}

/// What an EPT leaf carries besides its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EptLeafAttrs {
    /// Permission and status flags, within [`EptFlags::LEAF_ATTR_MASK`] (PS is placed by
    /// [`EptEntry::leaf`]).
    pub flags: EptFlags,
    /// The memory type.
    pub mem_type: EptMemType,
}

impl EptLeafAttrs {
    /// R | W | X, write-back: KVM's ordinary guest-RAM leaf.
    pub const RWX_WB: EptLeafAttrs = EptLeafAttrs {
        flags: EptFlags::READ.union(EptFlags::WRITE).union(EptFlags::EXECUTE),
        mem_type: EptMemType::WriteBack,
    };
}

impl EptFlags {
    /// R | W | X: the flags of a non-leaf entry that allows everything below it.
    pub const RWX: EptFlags = EptFlags::READ.union(EptFlags::WRITE).union(EptFlags::EXECUTE);

    /// Flags a leaf's [`EptLeafAttrs::flags`] may carry.
    pub const LEAF_ATTR_MASK: EptFlags = EptFlags::RWX
        .union(EptFlags::IGNORE_PAT)
        .union(EptFlags::ACCESSED)
        .union(EptFlags::DIRTY)
        .union(EptFlags::USER_EXECUTE)
        .union(EptFlags::SUPPRESS_VE);

    /// Flags a non-leaf entry may carry (bits 7:3 are reserved there).
    pub const TABLE_ATTR_MASK: EptFlags =
        EptFlags::RWX.union(EptFlags::ACCESSED).union(EptFlags::USER_EXECUTE);
}

/// One 8-byte EPT entry (SDM Vol. 3C §29.3.2):
///
/// | Bits | Non-leaf | 1 GiB / 2 MiB leaf | 4 KiB leaf |
/// |---|---|---|---|
/// | 2:0 | R W X | R W X | R W X |
/// | 5:3 | reserved (0) | memory type | memory type |
/// | 6 | reserved (0) | ignore PAT | ignore PAT |
/// | 7 | PS = 0 (reserved in PML4E/PML5E) | PS = 1 | ignored |
/// | 8 | A | A | A |
/// | 9 | ignored | D | D |
/// | 10 | user execute | user execute | user execute |
/// | N-1:12 | table address | frame (from bit 30 / 21) | frame |
/// | 63 | ignored | suppress #VE | suppress #VE |
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct EptEntry(u64);

const MEM_TYPE_SHIFT: u32 = 3;
const MEM_TYPE_MASK: u64 = 7 << MEM_TYPE_SHIFT;

impl EptEntry {
    /// The not-present entry.
    pub const EMPTY: EptEntry = EptEntry(0);

    /// Wrap a raw value.
    pub const fn new(raw: u64) -> EptEntry {
        EptEntry(raw)
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The single-bit flags.
    pub const fn flags(self) -> EptFlags {
        EptFlags::from_bits_truncate(self.0)
    }

    /// Present: any of R, W, X.
    pub const fn is_present(self) -> bool {
        self.0 & EptFlags::RWX.bits() != 0
    }

    /// Whether a present entry at `level` maps a page.
    pub const fn is_leaf(self, level: Level) -> bool {
        match level {
            Level::Pt => true,
            Level::Pd | Level::Pdpt => self.0 & EptFlags::HUGE.bits() != 0,
            Level::Pml4 | Level::Pml5 => false,
        }
    }

    /// The memory type of a leaf (`None` for a reserved encoding).
    pub const fn mem_type(self) -> Option<EptMemType> {
        EptMemType::from_bits((self.0 & MEM_TYPE_MASK) >> MEM_TYPE_SHIFT)
    }

    /// Whether the entry causes an EPT misconfiguration at `level` (SDM Vol. 3C §29.3.3.1):
    /// W without R; a reserved memory type in a leaf; reserved bits set (address bits at or
    /// above MAXPHYADDR, bits 7:3 of a PML4E/PML5E, bits 6:3 of a non-leaf PDPTE/PDE, bits
    /// 29:12 of a 1 GiB leaf and 20:12 of a 2 MiB leaf). Execute-only entries are taken as
    /// supported (IA32_VMX_EPT_VPID_CAP bit 0, set on every EPT-capable server part).
    pub const fn misconfigured(self, level: Level, fmt: PteFormat) -> bool {
        let rwx = self.0 & 7;
        if rwx == 0b010 || rwx == 0b110 {
            return true;
        }
        let leaf = self.is_leaf(level);
        let mut rsvd = fmt.high_reserved_any();
        match level {
            Level::Pml5 | Level::Pml4 => rsvd |= 0xf8,
            Level::Pdpt | Level::Pd if !leaf => rsvd |= 0x78,
            Level::Pdpt => rsvd |= (PageSize::G1.bytes() - 1) & !0xfff,
            Level::Pd => rsvd |= (PageSize::M2.bytes() - 1) & !0xfff,
            Level::Pt => {}
        }
        if leaf && self.mem_type().is_none() {
            return true;
        }
        self.0 & rsvd != 0
    }

    /// The address of the next-level table.
    pub fn table_addr<P: PhysAddr>(self, fmt: PteFormat) -> P {
        P::from_raw(self.0 & fmt.ept_addr_mask())
    }

    /// The frame of a leaf of `size`.
    pub fn frame<P: PhysAddr>(self, size: PageSize, fmt: PteFormat) -> P {
        P::from_raw(self.0 & fmt.ept_addr_mask() & !(size.bytes() - 1))
    }

    /// A non-leaf entry pointing at `table` with `flags` (restricted to
    /// [`EptFlags::TABLE_ATTR_MASK`]).
    pub fn table<P: PhysAddr>(table: P, flags: EptFlags, fmt: PteFormat) -> EptEntry {
        let f = flags.intersection(EptFlags::TABLE_ATTR_MASK);
        EptEntry((table.raw() & fmt.ept_addr_mask()) | f.bits())
    }

    /// A leaf of `size` mapping `frame` (aligned to `size`) with `attrs`.
    pub fn leaf<P: PhysAddr>(
        frame: P,
        size: PageSize,
        attrs: EptLeafAttrs,
        fmt: PteFormat,
    ) -> EptEntry {
        let mut raw = (frame.raw() & fmt.ept_addr_mask() & !(size.bytes() - 1))
            | attrs.flags.intersection(EptFlags::LEAF_ATTR_MASK).bits()
            | (attrs.mem_type.bits() << MEM_TYPE_SHIFT);
        match size {
            PageSize::K4 => {}
            PageSize::M2 | PageSize::G1 => raw |= EptFlags::HUGE.bits(),
        }
        EptEntry(raw)
    }

    /// The attributes of a leaf (inverse of [`EptEntry::leaf`]; a reserved memory type reads
    /// as uncacheable).
    pub const fn leaf_attrs(self) -> EptLeafAttrs {
        EptLeafAttrs {
            flags: self.flags().intersection(EptFlags::LEAF_ATTR_MASK),
            mem_type: match self.mem_type() {
                Some(t) => t,
                None => EptMemType::Uncacheable,
            },
        }
    }
}

impl PteFormat {
    /// Address bits MAXPHYADDR-1..12 (EPT has no C-bit: the configured C-bit is ignored).
    pub const fn ept_addr_mask(self) -> u64 {
        let top = if self.phys_bits >= 64 { u64::MAX } else { (1u64 << self.phys_bits) - 1 };
        top & !0xfff
    }

    /// Bits 51..MAXPHYADDR (EPT: all of them reserved).
    const fn high_reserved_any(self) -> u64 {
        ((1u64 << 52) - 1) & !0xfff & !self.ept_addr_mask()
    }
}

impl fmt::Debug for EptEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EptEntry({:#018x} {:?} {:?})", self.0, self.flags(), self.mem_type())
    }
}

impl PagingEntry for EptEntry {
    type Attrs = EptLeafAttrs;
    type TableFlags = EptFlags;
    const FORMAT: &'static str = "EPT";
    const ACCESSED: u64 = EptFlags::ACCESSED.bits();
    const DIRTY: u64 = EptFlags::DIRTY.bits();

    #[inline]
    fn addr_bits(fmt: PteFormat) -> u64 {
        fmt.ept_addr_mask()
    }
    #[inline]
    fn from_raw(raw: u64) -> Self {
        EptEntry(raw)
    }
    #[inline]
    fn to_raw(self) -> u64 {
        self.0
    }
    #[inline]
    fn present(self) -> bool {
        self.is_present()
    }
    #[inline]
    fn leaf_at(self, level: Level) -> bool {
        self.is_leaf(level)
    }
    #[inline]
    fn malformed(self, level: Level, fmt: PteFormat) -> bool {
        self.misconfigured(level, fmt)
    }
    #[inline]
    fn rights(self) -> Perms {
        let f = self.flags();
        Perms {
            readable: f.contains(EptFlags::READ),
            writable: f.contains(EptFlags::WRITE),
            user: true,
            executable: f.contains(EptFlags::EXECUTE),
        }
    }
    #[inline]
    fn next_table<P: PhysAddr>(self, fmt: PteFormat) -> P {
        self.table_addr(fmt)
    }
    #[inline]
    fn leaf_frame<P: PhysAddr>(self, size: PageSize, fmt: PteFormat) -> P {
        self.frame(size, fmt)
    }
    #[inline]
    fn encrypted(self, _fmt: PteFormat) -> bool {
        false
    }
    fn make_table<P: PhysAddr>(table: P, flags: EptFlags, fmt: PteFormat) -> Self {
        EptEntry::table(table, flags, fmt)
    }
    fn make_leaf<P: PhysAddr>(
        frame: P,
        size: PageSize,
        attrs: EptLeafAttrs,
        fmt: PteFormat,
    ) -> Self {
        EptEntry::leaf(frame, size, attrs, fmt)
    }
    fn attrs_of(self, _size: PageSize, _fmt: PteFormat) -> EptLeafAttrs {
        self.leaf_attrs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sim_core::Spa;

    const FMT: PteFormat = PteFormat { phys_bits: 52, cbit: crate::pte::CbitPos(None) };

    #[test]
    fn bit_positions() {
        assert_eq!(EptFlags::READ.bits(), 1);
        assert_eq!(EptFlags::WRITE.bits(), 2);
        assert_eq!(EptFlags::EXECUTE.bits(), 4);
        assert_eq!(EptFlags::IGNORE_PAT.bits(), 0x40);
        assert_eq!(EptFlags::HUGE.bits(), 0x80);
        assert_eq!(EptFlags::ACCESSED.bits(), 0x100);
        assert_eq!(EptFlags::DIRTY.bits(), 0x200);
        assert_eq!(EptFlags::USER_EXECUTE.bits(), 0x400);
        assert_eq!(EptFlags::SUPPRESS_VE.bits(), 1 << 63);
        // KVM's WB RWX 4K leaf: 0x37 (memory type 6 << 3 | RWX).
        let e = EptEntry::leaf(Spa::new(0x1234_5000), PageSize::K4, EptLeafAttrs::RWX_WB, FMT);
        assert_eq!(e.raw(), 0x1234_5000 | 0x37);
        assert_eq!(e.mem_type(), Some(EptMemType::WriteBack));
        let big = EptEntry::leaf(Spa::new(0x4000_0000), PageSize::G1, EptLeafAttrs::RWX_WB, FMT);
        assert_eq!(big.raw(), 0x4000_0000 | 0xb7);
        assert!(big.is_leaf(Level::Pdpt));
    }

    #[test]
    fn misconfigurations() {
        let fmt = FMT;
        let t = EptEntry::table(Spa::new(0x5000), EptFlags::RWX, fmt);
        assert!(!t.misconfigured(Level::Pml4, fmt));
        // Write-only and write/execute are misconfigured.
        assert!(EptEntry::new(0x5000 | 0b010).misconfigured(Level::Pt, fmt));
        assert!(EptEntry::new(0x5000 | 0b110 | 0x30).misconfigured(Level::Pt, fmt));
        // Execute-only is fine (supported), read-only too.
        assert!(!EptEntry::new(0x5000 | 0b100 | 0x30).misconfigured(Level::Pt, fmt));
        // Reserved memory type 2 in a leaf.
        assert!(EptEntry::new(0x5000 | 0b001 | (2 << 3)).misconfigured(Level::Pt, fmt));
        // Bits 7:3 reserved in a PML4E; PS in a PML4E.
        assert!(EptEntry::new(t.raw() | 0x80).misconfigured(Level::Pml4, fmt));
        assert!(EptEntry::new(t.raw() | 0x08).misconfigured(Level::Pml4, fmt));
        // Bit 13 in a 2 MiB leaf.
        let big = EptEntry::leaf(Spa::new(0x20_0000), PageSize::M2, EptLeafAttrs::RWX_WB, fmt);
        assert!(!big.misconfigured(Level::Pd, fmt));
        assert!(EptEntry::new(big.raw() | 0x2000).misconfigured(Level::Pd, fmt));
        // Address above MAXPHYADDR.
        let narrow = PteFormat { phys_bits: 46, ..fmt };
        assert!(EptEntry::new(t.raw() | (1 << 47)).misconfigured(Level::Pml4, narrow));
        assert!(!EptEntry::EMPTY.is_present());
        assert!(EptEntry::new(0b100).is_present());
    }

    proptest! {
        #[test]
        fn leaf_round_trip(frame in 0u64..(1 << 52), s in 0usize..3, bits in any::<u64>(), mt in 0usize..5) {
            let size = PageSize::ALL[s];
            let frame = Spa::new(frame & !(size.bytes() - 1));
            let types = [EptMemType::Uncacheable, EptMemType::WriteCombining,
                EptMemType::WriteThrough, EptMemType::WriteProtected, EptMemType::WriteBack];
            let attrs = EptLeafAttrs {
                flags: EptFlags::from_bits_truncate(bits).intersection(EptFlags::LEAF_ATTR_MASK),
                mem_type: types[mt],
            };
            let e = EptEntry::leaf(frame, size, attrs, FMT);
            prop_assert!(e.is_leaf(Level::for_leaf_size(size)));
            prop_assert_eq!(e.frame::<Spa>(size, FMT), frame);
            prop_assert_eq!(e.leaf_attrs(), attrs);
        }
    }
}
