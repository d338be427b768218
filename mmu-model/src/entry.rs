//! What every paging-structure entry format has in common, so that one page-table builder
//! ([`crate::PageTable`]) and one walker core serve the x86-64 format ([`crate::X86Pte`]), AMD
//! nested page tables ([`crate::NptEntry`]) and Intel EPT ([`crate::EptEntry`]).
//!
//! The formats stay separate types (STYLE rule 6); this trait only names the operations the
//! builder and the walker need, each format answering with its own bits.

use crate::addr::PhysAddr;
use crate::level::Level;
use crate::pte::PteFormat;
use sim_core::PageSize;
use std::fmt;

/// Access rights of one entry, or of a translation combined over all levels (SDM Vol. 3A
/// §4.6.1: the AND of R/W and U/S, the OR of XD; SDM Vol. 3C §29.3.3.2 for EPT: the AND of
/// R, W and X). What a TLB entry caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Perms {
    /// Data reads allowed. Always true for x86-64 and NPT entries (a present entry is
    /// readable); EPT bit 0.
    pub readable: bool,
    /// Writes allowed: x86 R/W = 1 at every level; EPT W = 1 at every level.
    pub writable: bool,
    /// User-mode (CPL 3) accesses allowed: x86 U/S = 1 at every level. EPT has no U/S: true.
    pub user: bool,
    /// Instruction fetches allowed: x86 XD = 0 at every level; EPT X = 1 at every level.
    pub executable: bool,
}

impl Perms {
    /// Everything allowed: the identity of [`Perms::and`].
    pub const ALL: Perms = Perms { readable: true, writable: true, user: true, executable: true };

    /// The rights of both (combining levels, or the guest and nested stages of a 2-D walk).
    pub const fn and(self, o: Perms) -> Perms {
        Perms {
            readable: self.readable && o.readable,
            writable: self.writable && o.writable,
            user: self.user && o.user,
            executable: self.executable && o.executable,
        }
    }
}

pub(crate) mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::pte::X86Pte {}
    impl Sealed for crate::npt::NptEntry {}
    impl Sealed for crate::ept::EptEntry {}
    impl Sealed for crate::iommu::AmdIoPte {}
}

/// An 8-byte paging-structure entry format.
///
/// Implemented by [`crate::X86Pte`] (host and guest tables), [`crate::NptEntry`] and
/// [`crate::EptEntry`]. Sealed: the walker relies on each format's documented semantics.
pub trait PagingEntry: Copy + Eq + Default + fmt::Debug + sealed::Sealed {
    /// What a leaf carries besides its frame ([`crate::LeafAttrs`], [`crate::EptLeafAttrs`]).
    type Attrs: Copy + Eq + fmt::Debug;
    /// The flags given to non-leaf entries ([`crate::PteFlags`], [`crate::EptFlags`]).
    type TableFlags: Copy + Eq + fmt::Debug;
    /// Short name for messages ("x86", "NPT", "EPT").
    const FORMAT: &'static str;
    /// Mask of the accessed flag.
    const ACCESSED: u64;
    /// Mask of the dirty flag (leaves).
    const DIRTY: u64;

    /// The bits of an entry that hold a frame or table address under `fmt`.
    fn addr_bits(fmt: PteFormat) -> u64;
    /// Wrap a raw value.
    fn from_raw(raw: u64) -> Self;
    /// The raw value.
    fn to_raw(self) -> u64;
    /// Whether the entry is present (x86/NPT: P; EPT: any of R, W, X).
    fn present(self) -> bool;
    /// Whether a present entry at `level` maps a page rather than pointing at a table.
    fn leaf_at(self, level: Level) -> bool;
    /// Whether a present entry at `level` is malformed: reserved bits for x86/NPT (#PF/#NPF with
    /// RSVD), an EPT misconfiguration for EPT.
    fn malformed(self, level: Level, fmt: PteFormat) -> bool;
    /// The rights this entry grants (ANDed over levels by the walker).
    fn rights(self) -> Perms;
    /// The next-level table a non-leaf entry points at.
    fn next_table<P: PhysAddr>(self, fmt: PteFormat) -> P;
    /// The frame a leaf of `size` maps.
    fn leaf_frame<P: PhysAddr>(self, size: PageSize, fmt: PteFormat) -> P;
    /// The effective C-bit of a leaf (SEV; always false for EPT).
    fn encrypted(self, fmt: PteFormat) -> bool;
    /// A non-leaf entry pointing at `table`.
    fn make_table<P: PhysAddr>(table: P, flags: Self::TableFlags, fmt: PteFormat) -> Self;
    /// A leaf of `size` mapping `frame`.
    fn make_leaf<P: PhysAddr>(frame: P, size: PageSize, attrs: Self::Attrs, fmt: PteFormat)
    -> Self;
    /// The attributes of a leaf of `size` (inverse of [`PagingEntry::make_leaf`]).
    fn attrs_of(self, size: PageSize, fmt: PteFormat) -> Self::Attrs;
    /// A non-leaf entry made by [`PagingEntry::make_table`], adjusted for the level it is
    /// written at (AMD I/O page tables encode the next table's level in the entry). Unchanged
    /// for the CPU formats.
    #[inline]
    fn table_at(self, _level: Level) -> Self {
        self
    }
}
