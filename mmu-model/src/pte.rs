//! The x86-64 paging-structure entry, bit-exact (Intel SDM Vol. 3A §4.5, Tables 4-14..4-20;
//! AMD APM Vol. 2 §5.3–§5.4), with the SEV C-bit at a configured position (AMD APM Vol. 2
//! §15.34.1).

use crate::addr::PhysAddr;
use crate::level::Level;
use sim_core::PageSize;
use std::fmt;

bitflags::bitflags! {
    /// Single-bit fields of an x86-64 paging-structure entry, at their architectural positions.
    ///
    /// Bit 7 is PS in PDPTEs and PDEs but PAT in PTEs, and bit 12 is PAT in large leaves but part
    /// of the address elsewhere: [`X86Pte`] and [`LeafAttrs`] handle that per level, so code
    /// outside this module never places PAT by hand.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct PteFlags: u64 {
        /// Bit 0, P: the entry is present; if clear the walk stops with #PF (P=0 in the error
        /// code) and every other bit is ignored.
        const PRESENT = 1 << 0;
        /// Bit 1, R/W: writes allowed. Effective write permission is the AND over all levels;
        /// supervisor writes ignore it when CR0.WP = 0.
        const WRITABLE = 1 << 1;
        /// Bit 2, U/S: user-mode (CPL 3) accesses allowed; the AND over all levels.
        const USER = 1 << 2;
        /// Bit 3, PWT: page-level write-through (with PCD and PAT, selects the memory type).
        const WRITE_THROUGH = 1 << 3;
        /// Bit 4, PCD: page-level cache disable.
        const CACHE_DISABLE = 1 << 4;
        /// Bit 5, A: set by the walker the first time the entry is used for a translation.
        const ACCESSED = 1 << 5;
        /// Bit 6, D: set by the walker on the first write through a leaf (leaves only).
        const DIRTY = 1 << 6;
        /// Bit 7, PS in a PDPTE (1 GiB leaf) or PDE (2 MiB leaf); reserved in PML4E/PML5E. In a
        /// PTE the same bit is PAT (see [`PteFlags::PAT_4K`]).
        const HUGE = 1 << 7;
        /// Bit 8, G: global translation (leaves only, with CR4.PGE); survives CR3 loads and
        /// non-global flushes.
        const GLOBAL = 1 << 8;
        /// Bit 9: ignored by hardware, available to software (Linux `_PAGE_BIT_SOFTW1`).
        const AVL9 = 1 << 9;
        /// Bit 10: ignored by hardware, available to software (Linux `_PAGE_BIT_SOFTW2`).
        const AVL10 = 1 << 10;
        /// Bit 11: ignored by hardware, available to software (Linux `_PAGE_BIT_SOFTW3`, used as
        /// `_PAGE_KERNEL_4K` since v6.15 to keep split direct-map PTEs from collapsing,
        /// spec/snp.md §4.3).
        const AVL11 = 1 << 11;
        /// Bit 12, PAT in a 2 MiB or 1 GiB leaf (address bit elsewhere).
        const PAT_LARGE = 1 << 12;
        /// Bit 63, XD/NX: instruction fetches not allowed (with EFER.NXE); the OR over all
        /// levels.
        const NO_EXECUTE = 1 << 63;
    }
}

impl PteFlags {
    /// Bit 7 in a PTE: PAT (the same bit as [`PteFlags::HUGE`]).
    pub const PAT_4K: PteFlags = PteFlags::HUGE;

    /// Flags a leaf's [`LeafAttrs::flags`] may carry (PS and the PAT bits are placed by
    /// [`X86Pte::leaf`]).
    pub const LEAF_ATTR_MASK: PteFlags = PteFlags::PRESENT
        .union(PteFlags::WRITABLE)
        .union(PteFlags::USER)
        .union(PteFlags::WRITE_THROUGH)
        .union(PteFlags::CACHE_DISABLE)
        .union(PteFlags::ACCESSED)
        .union(PteFlags::DIRTY)
        .union(PteFlags::GLOBAL)
        .union(PteFlags::AVL9)
        .union(PteFlags::AVL10)
        .union(PteFlags::AVL11)
        .union(PteFlags::NO_EXECUTE);

    /// Linux `_KERNPG_TABLE`: P | RW | A | D, the flags of kernel non-leaf entries
    /// (`arch/x86/include/asm/pgtable_types.h`).
    pub const KERNEL_TABLE: PteFlags = PteFlags::PRESENT
        .union(PteFlags::WRITABLE)
        .union(PteFlags::ACCESSED)
        .union(PteFlags::DIRTY);

    /// Linux `_PAGE_TABLE`: `_KERNPG_TABLE` | US, for user page-table entries.
    pub const USER_TABLE: PteFlags = PteFlags::KERNEL_TABLE.union(PteFlags::USER);
}

/// Position of the SEV C-bit (encryption bit) in entries, or `None` when memory encryption is
/// off. Its value is `CPUID 8000_001F EBX[5:0]` (AMD APM Vol. 2 §15.34.1); the bit is removed
/// from the address field wherever it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CbitPos(pub Option<u8>);

impl CbitPos {
    /// The mask of the C-bit (0 when absent).
    #[inline]
    pub const fn mask(self) -> u64 {
        match self.0 {
            Some(b) => 1u64 << b,
            None => 0,
        }
    }
}

/// How a CPU interprets entry bits: physical-address width and C-bit position. Both are
/// per-machine configuration (STYLE rule 14), never globals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PteFormat {
    /// MAXPHYADDR: address bits at and above it (other than the C-bit) are reserved.
    pub phys_bits: u8,
    /// The C-bit.
    pub cbit: CbitPos,
}

impl Default for PteFormat {
    /// 52 physical bits, C-bit at 51.
    fn default() -> Self {
        PteFormat { phys_bits: 52, cbit: CbitPos(Some(51)) }
    }
}

impl PteFormat {
    /// Address bits MAXPHYADDR-1..12, less the C-bit.
    #[inline]
    pub const fn addr_mask(self) -> u64 {
        let top = if self.phys_bits >= 64 { u64::MAX } else { (1u64 << self.phys_bits) - 1 };
        top & !0xfff & !self.cbit.mask()
    }

    /// Bits 51..MAXPHYADDR, which must be zero (the C-bit excepted).
    #[inline]
    const fn high_reserved(self) -> u64 {
        let all = ((1u64 << 52) - 1) & !0xfff;
        all & !self.addr_mask() & !self.cbit.mask()
    }
}

/// What a leaf carries besides its frame: the attribute bits, the PAT bit, the protection key
/// and the C-bit. Size-independent: [`X86Pte::leaf`] puts PAT at bit 7 (4 KiB) or 12 (large).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeafAttrs {
    /// Attribute flags, within [`PteFlags::LEAF_ATTR_MASK`]; PRESENT is implied.
    pub flags: PteFlags,
    /// The PAT bit.
    pub pat: bool,
    /// Protection key, bits 62:59 (used with CR4.PKE/PKS).
    pub pkey: u8,
    /// The C-bit: the page is accessed encrypted.
    pub encrypted: bool,
}

impl LeafAttrs {
    /// Linux `__PAGE_KERNEL` (P | RW | A | D | G | NX), the direct map's default protection
    /// (`arch/x86/include/asm/pgtable_types.h`).
    pub const KERNEL_RW: LeafAttrs = LeafAttrs {
        flags: PteFlags::PRESENT
            .union(PteFlags::WRITABLE)
            .union(PteFlags::ACCESSED)
            .union(PteFlags::DIRTY)
            .union(PteFlags::GLOBAL)
            .union(PteFlags::NO_EXECUTE),
        pat: false,
        pkey: 0,
        encrypted: false,
    };

    /// Attributes with the given flags, no PAT, key 0, not encrypted.
    #[inline]
    pub const fn new(flags: PteFlags) -> LeafAttrs {
        LeafAttrs { flags, pat: false, pkey: 0, encrypted: false }
    }

    /// The same attributes with the flags restricted to [`PteFlags::LEAF_ATTR_MASK`], PRESENT
    /// set and the key restricted to 4 bits.
    pub const fn normalized(self) -> LeafAttrs {
        LeafAttrs {
            flags: self.flags.intersection(PteFlags::LEAF_ATTR_MASK).union(PteFlags::PRESENT),
            pat: self.pat,
            pkey: self.pkey & 0xf,
            encrypted: self.encrypted,
        }
    }
}

/// One 8-byte paging-structure entry, bit-exact (SDM Vol. 3A Tables 4-14..4-20; APM Vol. 2
/// §5.3/§5.4):
///
/// | Bits | Non-leaf | 2 MiB / 1 GiB leaf | 4 KiB leaf |
/// |---|---|---|---|
/// | 0–6 | P RW US PWT PCD A (6 ignored) | P RW US PWT PCD A D | P RW US PWT PCD A D |
/// | 7 | PS = 0 | PS = 1 | PAT |
/// | 8 | ignored | G | G |
/// | 9–11 | software | software | software |
/// | 12 | address | PAT | address |
/// | 20:13 / 29:13 | address | reserved (2 MiB / 1 GiB) | address |
/// | 51:12 | table address | frame address (from bit 21 / 30) | frame address |
/// | 62:59 | ignored | protection key | protection key |
/// | 63 | XD | XD | XD |
///
/// The C-bit (configured, [`CbitPos`]) is taken out of the address field.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct X86Pte(u64);

const PKEY_SHIFT: u32 = 59;
const PKEY_MASK: u64 = 0xf << PKEY_SHIFT;

impl X86Pte {
    /// The not-present entry.
    pub const EMPTY: X86Pte = X86Pte(0);

    /// Wrap a raw value.
    #[inline]
    pub const fn new(raw: u64) -> X86Pte {
        X86Pte(raw)
    }

    /// The raw value.
    #[inline]
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The single-bit flags (address, key and C-bit excluded).
    #[inline]
    pub const fn flags(self) -> PteFlags {
        PteFlags::from_bits_truncate(self.0)
    }

    /// P.
    #[inline]
    pub const fn is_present(self) -> bool {
        self.0 & PteFlags::PRESENT.bits() != 0
    }

    /// Whether a present entry at `level` maps a page (rather than pointing at a table).
    #[inline]
    pub const fn is_leaf(self, level: Level) -> bool {
        match level {
            Level::Pt => true,
            Level::Pd | Level::Pdpt => self.0 & PteFlags::HUGE.bits() != 0,
            Level::Pml4 | Level::Pml5 => false,
        }
    }

    /// The protection key (bits 62:59).
    #[allow(clippy::cast_possible_truncation)] // a 4-bit field
    #[inline]
    pub const fn pkey(self) -> u8 {
        ((self.0 & PKEY_MASK) >> PKEY_SHIFT) as u8
    }

    /// Whether the C-bit is set.
    #[inline]
    pub const fn c_bit(self, fmt: PteFormat) -> bool {
        self.0 & fmt.cbit.mask() != 0
    }

    /// The address of the next-level table (non-leaf entries).
    #[inline]
    pub fn table_addr<P: PhysAddr>(self, fmt: PteFormat) -> P {
        P::from_raw(self.0 & fmt.addr_mask())
    }

    /// The frame of a leaf of `size`.
    #[inline]
    pub fn frame<P: PhysAddr>(self, size: PageSize, fmt: PteFormat) -> P {
        P::from_raw(self.0 & fmt.addr_mask() & !(size.bytes() - 1))
    }

    /// Whether any reserved bit is set for an entry at `level` (#PF with RSVD when the walk
    /// meets it): address bits at or above MAXPHYADDR other than the C-bit; PS in PML4E/PML5E;
    /// bits 20:13 of a 2 MiB leaf and 29:13 of a 1 GiB leaf. EFER.NXE = 1 is assumed (Linux),
    /// so XD is never reserved.
    #[inline]
    pub const fn reserved_bits_set(self, level: Level, fmt: PteFormat) -> bool {
        let mut rsvd = fmt.high_reserved();
        match level {
            Level::Pml5 | Level::Pml4 => rsvd |= PteFlags::HUGE.bits(),
            Level::Pdpt if self.0 & PteFlags::HUGE.bits() != 0 => {
                rsvd |= (PageSize::G1.bytes() - 1) & !0x1fff;
            }
            Level::Pd if self.0 & PteFlags::HUGE.bits() != 0 => {
                rsvd |= (PageSize::M2.bytes() - 1) & !0x1fff;
            }
            Level::Pdpt | Level::Pd | Level::Pt => {}
        }
        self.0 & rsvd != 0
    }

    /// A non-leaf entry pointing at `table`.
    pub fn table<P: PhysAddr>(table: P, flags: PteFlags, fmt: PteFormat) -> X86Pte {
        let f =
            flags.difference(PteFlags::HUGE.union(PteFlags::PAT_LARGE)).union(PteFlags::PRESENT);
        X86Pte((table.raw() & fmt.addr_mask()) | f.bits())
    }

    /// A leaf of `size` mapping `frame` (aligned to `size`) with `attrs`.
    pub fn leaf<P: PhysAddr>(frame: P, size: PageSize, attrs: LeafAttrs, fmt: PteFormat) -> X86Pte {
        let a = attrs.normalized();
        let mut raw = (frame.raw() & fmt.addr_mask() & !(size.bytes() - 1)) | a.flags.bits();
        match size {
            PageSize::K4 => {
                if a.pat {
                    raw |= PteFlags::PAT_4K.bits();
                }
            }
            PageSize::M2 | PageSize::G1 => {
                raw |= PteFlags::HUGE.bits();
                if a.pat {
                    raw |= PteFlags::PAT_LARGE.bits();
                }
            }
        }
        raw |= u64::from(a.pkey) << PKEY_SHIFT;
        if a.encrypted {
            raw |= fmt.cbit.mask();
        }
        X86Pte(raw)
    }

    /// The attributes of a leaf of `size` (inverse of [`X86Pte::leaf`]).
    #[inline]
    pub const fn leaf_attrs(self, size: PageSize, fmt: PteFormat) -> LeafAttrs {
        let pat_bit = match size {
            PageSize::K4 => PteFlags::PAT_4K,
            PageSize::M2 | PageSize::G1 => PteFlags::PAT_LARGE,
        };
        LeafAttrs {
            flags: self.flags().intersection(PteFlags::LEAF_ATTR_MASK),
            pat: self.0 & pat_bit.bits() != 0,
            pkey: self.pkey(),
            encrypted: self.c_bit(fmt),
        }
    }

    /// The same entry with `bits` set (A/D updates).
    pub const fn with(self, bits: PteFlags) -> X86Pte {
        X86Pte(self.0 | bits.bits())
    }
}

impl crate::entry::PagingEntry for X86Pte {
    type Attrs = LeafAttrs;
    type TableFlags = PteFlags;
    const FORMAT: &'static str = "x86";
    const ACCESSED: u64 = PteFlags::ACCESSED.bits();
    const DIRTY: u64 = PteFlags::DIRTY.bits();

    #[inline]
    fn addr_bits(fmt: PteFormat) -> u64 {
        fmt.addr_mask()
    }
    #[inline]
    fn from_raw(raw: u64) -> Self {
        X86Pte(raw)
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
        self.reserved_bits_set(level, fmt)
    }
    #[inline]
    fn rights(self) -> crate::entry::Perms {
        let f = self.flags();
        crate::entry::Perms {
            readable: true,
            writable: f.contains(PteFlags::WRITABLE),
            user: f.contains(PteFlags::USER),
            executable: !f.contains(PteFlags::NO_EXECUTE),
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
    fn encrypted(self, fmt: PteFormat) -> bool {
        self.c_bit(fmt)
    }
    fn make_table<P: PhysAddr>(table: P, flags: PteFlags, fmt: PteFormat) -> Self {
        X86Pte::table(table, flags, fmt)
    }
    fn make_leaf<P: PhysAddr>(frame: P, size: PageSize, attrs: LeafAttrs, fmt: PteFormat) -> Self {
        X86Pte::leaf(frame, size, attrs, fmt)
    }
    fn attrs_of(self, size: PageSize, fmt: PteFormat) -> LeafAttrs {
        self.leaf_attrs(size, fmt)
    }
}

impl fmt::Debug for X86Pte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "X86Pte({:#018x} {:?})", self.0, self.flags())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sim_core::Spa;

    const FMT: PteFormat = PteFormat { phys_bits: 52, cbit: CbitPos(Some(51)) };

    #[test]
    fn bit_positions() {
        assert_eq!(PteFlags::PRESENT.bits(), 1);
        assert_eq!(PteFlags::DIRTY.bits(), 0x40);
        assert_eq!(PteFlags::HUGE.bits(), 0x80);
        assert_eq!(PteFlags::GLOBAL.bits(), 0x100);
        assert_eq!(PteFlags::PAT_LARGE.bits(), 0x1000);
        assert_eq!(PteFlags::NO_EXECUTE.bits(), 1 << 63);
        // Linux __PAGE_KERNEL = 0x8000000000000163.
        assert_eq!(LeafAttrs::KERNEL_RW.flags.bits(), 0x8000_0000_0000_0163);
        assert_eq!(PteFlags::KERNEL_TABLE.bits(), 0x63);
    }

    #[test]
    fn pat_moves_with_size() {
        let a = LeafAttrs { pat: true, pkey: 3, ..LeafAttrs::KERNEL_RW };
        let small = X86Pte::leaf(Spa::new(0x1234_6000), PageSize::K4, a, FMT);
        assert_eq!(small.raw() & 0x1080, 0x80);
        assert_eq!(small.pkey(), 3);
        let big = X86Pte::leaf(Spa::new(0x4020_0000), PageSize::M2, a, FMT);
        assert_eq!(big.raw() & 0x1080, 0x1080);
        assert_eq!(big.leaf_attrs(PageSize::M2, FMT), small.leaf_attrs(PageSize::K4, FMT));
        assert_eq!(big.frame::<Spa>(PageSize::M2, FMT), Spa::new(0x4020_0000));
        assert!(!big.reserved_bits_set(Level::Pd, FMT));
        // Bit 13 set in a 2M leaf is reserved.
        assert!(X86Pte::new(big.raw() | 0x2000).reserved_bits_set(Level::Pd, FMT));
        assert!(X86Pte::new(0x83).reserved_bits_set(Level::Pml4, FMT));
    }

    #[test]
    fn cbit_is_not_address() {
        let a = LeafAttrs { encrypted: true, ..LeafAttrs::KERNEL_RW };
        let e = X86Pte::leaf(Spa::new(0x7_0000_0000), PageSize::K4, a, FMT);
        assert!(e.raw() & (1 << 51) != 0);
        assert!(e.c_bit(FMT));
        assert_eq!(e.frame::<Spa>(PageSize::K4, FMT), Spa::new(0x7_0000_0000));
        assert!(!e.reserved_bits_set(Level::Pt, FMT));
        let narrow = PteFormat { phys_bits: 46, cbit: CbitPos(Some(51)) };
        assert!(!e.reserved_bits_set(Level::Pt, narrow));
        assert!(X86Pte::new(e.raw() | (1 << 47)).reserved_bits_set(Level::Pt, narrow));
        let none = PteFormat { phys_bits: 52, cbit: CbitPos(None) };
        assert!(!e.c_bit(none));
        assert_eq!(e.frame::<Spa>(PageSize::K4, none).raw(), 0x8_0007_0000_0000);
    }

    proptest! {
        #[test]
        fn leaf_round_trip(
            frame in 0u64..(1 << 51), s in 0usize..3, bits in any::<u64>(), pat: bool,
            pkey in 0u8..16, enc: bool,
        ) {
            let size = PageSize::ALL[s];
            let frame = Spa::new(frame & !(size.bytes() - 1));
            let attrs = LeafAttrs {
                flags: PteFlags::from_bits_truncate(bits), pat, pkey, encrypted: enc,
            }.normalized();
            let e = X86Pte::leaf(frame, size, attrs, FMT);
            prop_assert!(e.is_present());
            prop_assert!(e.is_leaf(Level::for_leaf_size(size)));
            prop_assert_eq!(e.frame::<Spa>(size, FMT), frame);
            prop_assert_eq!(e.leaf_attrs(size, FMT), attrs);
            prop_assert!(!e.reserved_bits_set(Level::for_leaf_size(size), FMT));
        }
    }
}
