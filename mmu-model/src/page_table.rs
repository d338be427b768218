//! A page table held in simulated physical memory, and its primitives: map, unmap, protect,
//! split, merge, lookup. Policy (Linux CPA, direct-map policies) is the root crate's business.

use crate::addr::{PagedAddr, PhysAddr};
use crate::entry::PagingEntry;
use crate::inval::PendingInvalidation;
use crate::level::{ENTRIES_PER_TABLE, Level, Paging};
use crate::pte::{LeafAttrs, PteFormat, X86Pte};
use crate::tables::{FrameSource, InstallError, PhysMemTables};
use sim_core::stats::PerSize;
use sim_core::{Hva, PageSize, Spa};
use std::marker::PhantomData;

/// A leaf translation as the tables hold it (functional: no A/D side effects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf<P, A = LeafAttrs> {
    /// The mapped frame (aligned to `size`).
    pub frame: P,
    /// The leaf's page size.
    pub size: PageSize,
    /// The leaf's attributes (not combined with the upper levels' permissions).
    pub attrs: A,
}

impl<P: PhysAddr, A> Leaf<P, A> {
    /// The output address of `va` through this leaf.
    pub fn pa<V: PagedAddr>(&self, va: V) -> P {
        P::from_raw(self.frame.raw() | (va.raw() & (self.size.bytes() - 1)))
    }
}

/// Creating a page table failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NewTableError {
    /// The frame source had no page for the root.
    #[error("no frame for the root table")]
    OutOfFrames,
    /// The frame source returned a page that cannot hold a table.
    #[error("frame source returned an unusable page: {0}")]
    BadFrame(InstallError),
}

/// [`PageTable::map`] failed; nothing was mapped (tables created on the way stay, empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError<V: PagedAddr, P: PhysAddr> {
    /// The address is not translatable at this paging depth.
    #[error("{va:?} is not canonical for this paging depth")]
    NonCanonical {
        /// The address.
        va: V,
    },
    /// The address or frame is not aligned to the page size.
    #[error("{va:?} -> {frame:?}: not aligned to {size}")]
    NotAligned {
        /// The address.
        va: V,
        /// The frame.
        frame: P,
        /// The requested size.
        size: PageSize,
    },
    /// Something is already present where the leaf would go: a leaf of `existing` size on the
    /// path, or a table (`existing` = `None`) at the leaf's level.
    #[error("{va:?} is already mapped (existing: {existing:?})")]
    AlreadyMapped {
        /// The address.
        va: V,
        /// The size of the leaf found, or `None` for a table.
        existing: Option<PageSize>,
    },
    /// The frame source had no page for an intermediate table.
    #[error("no frame for a page table while mapping {va:?}")]
    OutOfFrames {
        /// The address.
        va: V,
    },
    /// The frame source returned a page that cannot hold a table.
    #[error("frame source returned an unusable page: {0}")]
    BadFrame(InstallError),
}

/// Finding the leaf that [`PageTable::unmap`] or [`PageTable::protect`] acts on failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeafError<V: PagedAddr> {
    /// The address is not translatable at this paging depth.
    #[error("{va:?} is not canonical for this paging depth")]
    NonCanonical {
        /// The address.
        va: V,
    },
    /// The address is not aligned to the requested size.
    #[error("{va:?} is not aligned to {size}")]
    NotAligned {
        /// The address.
        va: V,
        /// The requested size.
        size: PageSize,
    },
    /// Nothing is mapped there.
    #[error("{va:?} is not mapped")]
    NotMapped {
        /// The address.
        va: V,
    },
    /// The mapping there has another size: a leaf of `found`, or tables of smaller leaves
    /// (`found` = `None`). Split or act on the smaller leaves.
    #[error("{va:?}: asked for a {requested} leaf, found {found:?}")]
    SizeMismatch {
        /// The address.
        va: V,
        /// The size asked for.
        requested: PageSize,
        /// The leaf size found, or `None` for a table.
        found: Option<PageSize>,
    },
}

/// What [`PageTable::unmap`] returns: the old leaf and the range to invalidate.
pub type Unmapped<V, P, A = LeafAttrs> = (Leaf<P, A>, PendingInvalidation<V>);

/// [`PageTable::unmap`] failed.
pub type UnmapError<V> = LeafError<V>;
/// [`PageTable::protect`] failed.
pub type ProtectError<V> = LeafError<V>;

/// [`PageTable::split`] failed; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError<V: PagedAddr> {
    /// The address is not translatable at this paging depth.
    #[error("{va:?} is not canonical for this paging depth")]
    NonCanonical {
        /// The address.
        va: V,
    },
    /// Nothing is mapped there.
    #[error("{va:?} is not mapped")]
    NotMapped {
        /// The address.
        va: V,
    },
    /// The leaf is already 4 KiB.
    #[error("{va:?} is mapped by a 4K leaf; nothing to split")]
    AlreadySmallest {
        /// The address.
        va: V,
    },
    /// The frame source had no page for the new table.
    #[error("no frame for the table splitting {va:?}")]
    OutOfFrames {
        /// The address.
        va: V,
    },
    /// The frame source returned a page that cannot hold a table.
    #[error("frame source returned an unusable page: {0}")]
    BadFrame(InstallError),
}

/// [`PageTable::merge`] refused; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError<V: PagedAddr> {
    /// The address is not translatable at this paging depth.
    #[error("{va:?} is not canonical for this paging depth")]
    NonCanonical {
        /// The address.
        va: V,
    },
    /// 4 KiB is not a merge target.
    #[error("cannot merge into a {size} leaf")]
    BadSize {
        /// The size asked for.
        size: PageSize,
    },
    /// The entry at the target level is not a table (not present, or already a leaf, or a leaf
    /// above it).
    #[error("{va:?}: no table of smaller leaves to merge")]
    NotATable {
        /// The address.
        va: V,
    },
    /// A child entry is not present.
    #[error("{va:?}: entry not present")]
    NotPresent {
        /// The address of the child.
        va: V,
    },
    /// A child entry points at a further table instead of mapping a page.
    #[error("{va:?}: entry is a table, not a leaf")]
    NotLeaf {
        /// The address of the child.
        va: V,
    },
    /// A child's attributes differ from the first child's.
    #[error("{va:?}: attributes differ from the first entry")]
    NotUniform {
        /// The address of the child.
        va: V,
    },
    /// A child's frame does not continue the first child's.
    #[error("{va:?}: frame not contiguous with the first entry")]
    NotContiguous {
        /// The address of the child.
        va: V,
    },
    /// The first child's frame is not aligned to the merged size.
    #[error("first frame {frame:#x} is not aligned to {size}")]
    Misaligned {
        /// The first frame (raw).
        frame: u64,
        /// The merged size.
        size: PageSize,
    },
}

/// Where the search for an entry stopped.
enum Located<P, E> {
    /// The entry at the requested level.
    At { addr: P, entry: E },
    /// A leaf above the requested level.
    LeafAbove { level: Level, addr: P, entry: E },
    /// A not-present entry above the requested level, at `level`.
    MissingAbove { level: Level },
}

/// A page table in simulated physical memory: a root, a depth, the entry format and the flags
/// its primitives give new non-leaf entries. It holds no entries itself — those live in
/// [`PhysMemTables`], shared by every page table of the machine — only bookkeeping (leaf counts
/// per size, the `DirectMap4k/2M/1G` of `/proc/meminfo` for the direct map).
///
/// Every mutating primitive returns a [`PendingInvalidation`] token or a small error enum
/// naming what was wrong. Invariant kept by the primitives: every non-leaf entry points at a
/// page installed in `PhysMemTables`, allocated through the [`FrameSource`].
#[derive(Clone, Debug)]
pub struct PageTable<V: PagedAddr = Hva, P: PhysAddr = Spa, E: PagingEntry = X86Pte> {
    root: P,
    paging: Paging,
    format: PteFormat,
    table_flags: E::TableFlags,
    leaves: PerSize<u64>,
    table_pages: u64,
    _v: PhantomData<V>,
}

/// A guest's own page table: guest-virtual to guest-physical, its pages in guest-physical
/// memory (keyed by GPA in a `PhysMemTables<Gpa>`).
pub type GuestPageTable = PageTable<sim_core::Gva, sim_core::Gpa, X86Pte>;
/// An AMD nested page table: guest-physical to system-physical, NPT entry format.
pub type NptTable = PageTable<sim_core::Gpa, Spa, crate::npt::NptEntry>;
/// An Intel EPT: guest-physical to system-physical, EPT entry format.
pub type EptTable = PageTable<sim_core::Gpa, Spa, crate::ept::EptEntry>;

impl<V: PagedAddr, P: PhysAddr, E: PagingEntry> PageTable<V, P, E> {
    /// An empty page table whose root page comes from `frames`. `table_flags` are given to the
    /// non-leaf entries the primitives create ([`crate::PteFlags::KERNEL_TABLE`] for kernel tables,
    /// [`crate::PteFlags::USER_TABLE`] where user leaves live below).
    ///
    /// # Errors
    /// [`NewTableError`] if no usable root page is available.
    pub fn new(
        tables: &mut PhysMemTables<P>,
        frames: &mut impl FrameSource<P>,
        paging: Paging,
        format: PteFormat,
        table_flags: E::TableFlags,
    ) -> Result<Self, NewTableError> {
        let root = frames.alloc_table().ok_or(NewTableError::OutOfFrames)?;
        tables.install(root).map_err(NewTableError::BadFrame)?;
        Ok(PageTable {
            root,
            paging,
            format,
            table_flags,
            leaves: PerSize::default(),
            table_pages: 1,
            _v: PhantomData,
        })
    }

    /// The root table page (what CR3 points at).
    pub const fn root(&self) -> P {
        self.root
    }

    /// The paging depth.
    pub const fn paging(&self) -> Paging {
        self.paging
    }

    /// The entry format.
    pub const fn format(&self) -> PteFormat {
        self.format
    }

    /// Leaves per page size (for the direct map: `DirectMap4k/2M/1G` in pages).
    pub const fn leaf_counts(&self) -> PerSize<u64> {
        self.leaves
    }

    /// Table pages in use, the root included.
    pub const fn table_pages(&self) -> u64 {
        self.table_pages
    }

    fn entry_addr(table: P, level: Level, va: V) -> P {
        P::from_raw(table.raw() + 8 * (level.index(va) as u64))
    }

    fn locate(&self, tables: &PhysMemTables<P>, va: V, target: Level) -> Located<P, E> {
        let mut table = self.root;
        let mut level = self.paging.top();
        loop {
            let addr = Self::entry_addr(table, level, va);
            let entry = E::from_raw(tables.read(addr));
            if level == target {
                return Located::At { addr, entry };
            }
            if !entry.present() {
                return Located::MissingAbove { level };
            }
            if entry.leaf_at(level) {
                return Located::LeafAbove { level, addr, entry };
            }
            table = entry.next_table(self.format);
            level = level.next_lower().expect("target is below");
        }
    }

    /// The leaf translating `va`, if any (functional: no A/D updates, no permission checks).
    pub fn lookup(&self, tables: &PhysMemTables<P>, va: V) -> Option<Leaf<P, E::Attrs>> {
        if !va.in_range(self.paging) {
            return None;
        }
        let (level, entry) = match self.locate(tables, va, Level::Pt) {
            Located::At { entry, .. } => (Level::Pt, entry),
            Located::LeafAbove { level, entry, .. } => (level, entry),
            Located::MissingAbove { .. } => return None,
        };
        if !entry.present() {
            return None;
        }
        let size = level.leaf_size()?;
        Some(Leaf {
            frame: entry.leaf_frame(size, self.format),
            size,
            attrs: entry.attrs_of(size, self.format),
        })
    }

    /// [`PageTable::lookup`], or where there is no leaf, how many bytes from `va` on are known
    /// to have none, so that a caller scanning a range can skip them: to the end of the span of
    /// a missing upper-level entry (2M for a missing page-directory entry, …), or up to the next
    /// present entry of the last-level table (at most to its end). An address out of the
    /// table's range gives 4K.
    pub fn lookup_or_gap(
        &self,
        tables: &PhysMemTables<P>,
        va: V,
    ) -> Result<Leaf<P, E::Attrs>, u64> {
        if !va.in_range(self.paging) {
            return Err(Level::Pt.span());
        }
        let (level, entry) = match self.locate(tables, va, Level::Pt) {
            Located::At { addr, entry } => {
                if !entry.present() {
                    // Scan the rest of this table for its next present entry.
                    let idx = Level::Pt.index(va) as u64;
                    let mut k = 1;
                    while idx + k < 512
                        && !E::from_raw(tables.read(P::from_raw(addr.raw() + 8 * k))).present()
                    {
                        k += 1;
                    }
                    return Err(k * Level::Pt.span());
                }
                (Level::Pt, entry)
            }
            Located::LeafAbove { level, entry, .. } => (level, entry),
            Located::MissingAbove { level } => {
                return Err(level.span() - va.raw() % level.span());
            }
        };
        let size = level.leaf_size().ok_or(level.span())?;
        Ok(Leaf {
            frame: entry.leaf_frame(size, self.format),
            size,
            attrs: entry.attrs_of(size, self.format),
        })
    }

    /// Map `va` → `frame` with one leaf of `size`. Creates intermediate tables as needed
    /// (through `frames`). Returns an empty token: nothing present was replaced.
    ///
    /// # Errors
    /// [`MapError`]; on `OutOfFrames` the tables created so far stay (empty).
    pub fn map(
        &mut self,
        tables: &mut PhysMemTables<P>,
        frames: &mut impl FrameSource<P>,
        va: V,
        frame: P,
        size: PageSize,
        attrs: E::Attrs,
    ) -> Result<PendingInvalidation<V>, MapError<V, P>> {
        if !va.in_range(self.paging) {
            return Err(MapError::NonCanonical { va });
        }
        let mask = size.bytes() - 1;
        if va.raw() & mask != 0 || frame.raw() & mask != 0 {
            return Err(MapError::NotAligned { va, frame, size });
        }
        let target = Level::for_leaf_size(size);
        let table = self.descend(tables, frames, va, target)?;
        let addr = Self::entry_addr(table, target, va);
        let e = E::from_raw(tables.read(addr));
        if e.present() {
            let existing = if e.leaf_at(target) { Some(size) } else { None };
            return Err(MapError::AlreadyMapped { va, existing });
        }
        tables.write(addr, E::make_leaf(frame, size, attrs, self.format).to_raw());
        self.leaves[size] += 1;
        Ok(PendingInvalidation::none())
    }

    /// The entries of a table of [`ENTRIES_PER_TABLE`] leaves of `size` from `frame` on,
    /// each with `attrs` (what a split writes, and what [`PageTable::map_table`] installs).
    fn leaf_run(&self, frame: P, size: PageSize, attrs: E::Attrs) -> [u64; ENTRIES_PER_TABLE] {
        std::array::from_fn(|i| {
            let f = P::from_raw(frame.raw() + (i as u64) * size.bytes());
            E::make_leaf(f, size, attrs, self.format).to_raw()
        })
    }

    /// Point the `level` entry at `addr` to the installed table page `page`, which becomes
    /// one of this table's pages.
    fn link_table(&mut self, tables: &mut PhysMemTables<P>, addr: P, level: Level, page: P) {
        let entry = E::make_table(page, self.table_flags, self.format).table_at(level);
        tables.write(addr, entry.to_raw());
        self.table_pages += 1;
    }

    /// The table at `target` on the way to `va`, creating the missing tables above it
    /// (through `frames`, top-down).
    fn descend(
        &mut self,
        tables: &mut PhysMemTables<P>,
        frames: &mut impl FrameSource<P>,
        va: V,
        target: Level,
    ) -> Result<P, MapError<V, P>> {
        let mut table = self.root;
        let mut level = self.paging.top();
        while level != target {
            let addr = Self::entry_addr(table, level, va);
            let e = E::from_raw(tables.read(addr));
            if !e.present() {
                let page = frames.alloc_table().ok_or(MapError::OutOfFrames { va })?;
                tables.install(page).map_err(MapError::BadFrame)?;
                self.link_table(tables, addr, level, page);
                table = page;
            } else if e.leaf_at(level) {
                return Err(MapError::AlreadyMapped { va, existing: level.leaf_size() });
            } else {
                table = e.next_table(self.format);
            }
            level = level.next_lower().expect("target is below");
        }
        Ok(table)
    }

    /// Map the [`ENTRIES_PER_TABLE`] leaves of `size` that fill one table: leaf `i` maps
    /// `va + i × size` → `frame + i × size`, each with `attrs`. `va` must be aligned to the
    /// table's reach (512 × `size`). The outcome — tables, entries, the frames the tables take
    /// and in which order, counts, errors — is that of [`PageTable::map`] of each leaf in
    /// address order; when the leaf table is new, its entries go in as one page (stored
    /// compactly when they form an arithmetic progression, as a direct map's do) instead of
    /// 512 walks and writes.
    ///
    /// Why: a direct map split to 4K at boot (`presplit-4k`) is 64 Mi leaves on a 256 GiB
    /// host, built leaf by leaf in about 500 instructions each.
    ///
    /// # Errors
    /// [`MapError`], as the first failing [`PageTable::map`] would return it.
    pub fn map_table(
        &mut self,
        tables: &mut PhysMemTables<P>,
        frames: &mut impl FrameSource<P>,
        va: V,
        frame: P,
        size: PageSize,
        attrs: E::Attrs,
    ) -> Result<(), MapError<V, P>> {
        let n = ENTRIES_PER_TABLE as u64;
        let target = Level::for_leaf_size(size);
        let fresh = target.next_higher().filter(|_| {
            let reach = n * size.bytes();
            va.in_range(self.paging)
                && va.raw().is_multiple_of(reach)
                && frame.raw().is_multiple_of(size.bytes())
                && va
                    .raw()
                    .checked_add(reach - 1)
                    .is_some_and(|l| V::from_raw(l).in_range(self.paging))
        });
        if let Some(parent_level) = fresh {
            let parent = self.descend(tables, frames, va, parent_level)?;
            let addr = Self::entry_addr(parent, parent_level, va);
            if !E::from_raw(tables.read(addr)).present() {
                let entries = self.leaf_run(frame, size, attrs);
                let page = frames.alloc_table().ok_or(MapError::OutOfFrames { va })?;
                tables.install_entries(page, &entries).map_err(MapError::BadFrame)?;
                self.link_table(tables, addr, parent_level, page);
                self.leaves[size] += n;
                return Ok(());
            }
        }
        for i in 0..n {
            let (v, f) = (va.raw().wrapping_add(i * size.bytes()), frame.raw() + i * size.bytes());
            self.map(tables, frames, V::from_raw(v), P::from_raw(f), size, attrs)?.ignore();
        }
        Ok(())
    }

    fn find_leaf(
        &self,
        tables: &PhysMemTables<P>,
        va: V,
        size: PageSize,
    ) -> Result<(P, E), LeafError<V>> {
        if !va.in_range(self.paging) {
            return Err(LeafError::NonCanonical { va });
        }
        if va.raw() & (size.bytes() - 1) != 0 {
            return Err(LeafError::NotAligned { va, size });
        }
        let target = Level::for_leaf_size(size);
        match self.locate(tables, va, target) {
            Located::MissingAbove { .. } => Err(LeafError::NotMapped { va }),
            Located::LeafAbove { level, .. } => {
                Err(LeafError::SizeMismatch { va, requested: size, found: level.leaf_size() })
            }
            Located::At { entry, .. } if !entry.present() => Err(LeafError::NotMapped { va }),
            Located::At { entry, .. } if !entry.leaf_at(target) => {
                Err(LeafError::SizeMismatch { va, requested: size, found: None })
            }
            Located::At { addr, entry } => Ok((addr, entry)),
        }
    }

    /// Remove the leaf of `size` at `va` (aligned). Tables left empty are kept (Linux keeps the
    /// direct map's tables too). Returns the old leaf and the range to invalidate.
    ///
    /// # Errors
    /// [`UnmapError`] if there is no leaf of exactly that size there.
    pub fn unmap(
        &mut self,
        tables: &mut PhysMemTables<P>,
        va: V,
        size: PageSize,
    ) -> Result<Unmapped<V, P, E::Attrs>, UnmapError<V>> {
        let (addr, entry) = self.find_leaf(tables, va, size)?;
        tables.write(addr, 0);
        self.leaves[size] -= 1;
        let leaf = Leaf {
            frame: entry.leaf_frame(size, self.format),
            size,
            attrs: entry.attrs_of(size, self.format),
        };
        Ok((leaf, PendingInvalidation::range(va, size, size)))
    }

    /// Replace the attributes of the leaf of `size` at `va` (aligned), keeping its frame.
    ///
    /// # Errors
    /// [`ProtectError`] if there is no leaf of exactly that size there.
    pub fn protect(
        &mut self,
        tables: &mut PhysMemTables<P>,
        va: V,
        size: PageSize,
        attrs: E::Attrs,
    ) -> Result<PendingInvalidation<V>, ProtectError<V>> {
        let (addr, entry) = self.find_leaf(tables, va, size)?;
        let frame: P = entry.leaf_frame(size, self.format);
        tables.write(addr, E::make_leaf(frame, size, attrs, self.format).to_raw());
        Ok(PendingInvalidation::range(va, size, size))
    }

    /// Split the large leaf covering `va` into 512 leaves of the next smaller size with
    /// identical attributes (PAT moves between bits 12 and 7 as needed), allocating one table
    /// page. The new non-leaf entry gets the table's `table_flags`. One level per call, as
    /// Linux CPA does (a 1 GiB leaf becomes 2 MiB leaves). Returns the new leaf size.
    ///
    /// # Errors
    /// [`SplitError`]; nothing changes on error.
    pub fn split(
        &mut self,
        tables: &mut PhysMemTables<P>,
        frames: &mut impl FrameSource<P>,
        va: V,
    ) -> Result<(PageSize, PendingInvalidation<V>), SplitError<V>> {
        if !va.in_range(self.paging) {
            return Err(SplitError::NonCanonical { va });
        }
        let (level, addr, entry) = match self.locate(tables, va, Level::Pt) {
            Located::MissingAbove { .. } => return Err(SplitError::NotMapped { va }),
            Located::At { entry, .. } if !entry.present() => {
                return Err(SplitError::NotMapped { va });
            }
            Located::At { .. } => return Err(SplitError::AlreadySmallest { va }),
            Located::LeafAbove { level, addr, entry } => (level, addr, entry),
        };
        let size = level.leaf_size().expect("leaves only at PDPT/PD/PT");
        let small = size.next_smaller().expect("large leaf");
        let frame: P = entry.leaf_frame(size, self.format);
        let attrs = entry.attrs_of(size, self.format);
        let page = frames.alloc_table().ok_or(SplitError::OutOfFrames { va })?;
        let child = self.leaf_run(frame, small, attrs);
        tables.install_entries(page, &child).map_err(SplitError::BadFrame)?;
        self.link_table(tables, addr, level, page);
        self.leaves[size] -= 1;
        self.leaves[small] += ENTRIES_PER_TABLE as u64;
        let base = V::from_raw(va.raw() & !(size.bytes() - 1));
        Ok((small, PendingInvalidation::range(base, size, size)))
    }

    /// Merge the 512 leaves below the `size`-level entry covering `va` into one leaf of
    /// `size`, freeing their table page through `frames`. Refuses unless all 512 are present
    /// leaves with identical attribute bits (every bit but the frame address, A/D included)
    /// and contiguous frames starting at a `size`-aligned frame — Linux's collapse conditions
    /// (spec/physmap.md §2.2).
    ///
    /// # Errors
    /// [`MergeError`]; nothing changes on error.
    pub fn merge(
        &mut self,
        tables: &mut PhysMemTables<P>,
        frames: &mut impl FrameSource<P>,
        va: V,
        size: PageSize,
    ) -> Result<PendingInvalidation<V>, MergeError<V>> {
        let (addr, child, small) = self.table_below(tables, va, size)?;
        let fmt = self.format;
        let child_level = Level::for_leaf_size(small);
        let page = tables.page(child).expect("non-leaf entries point at installed tables");
        let base = va.raw() & !(size.bytes() - 1);
        let child_va = |i: usize| V::from_raw(base + (i as u64) * small.bytes());
        let frame_bits = E::addr_bits(fmt) & !(small.bytes() - 1);
        let first = E::from_raw(page[0]);
        for (i, &raw) in page.iter().enumerate() {
            let e = E::from_raw(raw);
            if !e.present() {
                return Err(MergeError::NotPresent { va: child_va(i) });
            }
            if !e.leaf_at(child_level) {
                return Err(MergeError::NotLeaf { va: child_va(i) });
            }
            if (raw ^ first.to_raw()) & !frame_bits != 0 {
                return Err(MergeError::NotUniform { va: child_va(i) });
            }
            if raw & frame_bits != (first.to_raw() & frame_bits) + (i as u64) * small.bytes() {
                return Err(MergeError::NotContiguous { va: child_va(i) });
            }
        }
        let frame: P = first.leaf_frame(small, fmt);
        if frame.raw() & (size.bytes() - 1) != 0 {
            return Err(MergeError::Misaligned { frame: frame.raw(), size });
        }
        let attrs = first.attrs_of(small, fmt);
        tables.write(addr, E::make_leaf(frame, size, attrs, fmt).to_raw());
        tables.remove(child);
        frames.free_table(child);
        self.table_pages -= 1;
        self.leaves[small] -= ENTRIES_PER_TABLE as u64;
        self.leaves[size] += 1;
        Ok(PendingInvalidation::range(V::from_raw(base), size, small).with_freed_tables())
    }

    /// The `size`-level entry covering `va` when it points to a table of smaller entries: its
    /// address, the table, and the size of the table's leaves (the first steps of
    /// [`PageTable::merge`] and [`PageTable::zap_table`]).
    fn table_below(
        &self,
        tables: &PhysMemTables<P>,
        va: V,
        size: PageSize,
    ) -> Result<(P, P, PageSize), MergeError<V>> {
        if !va.in_range(self.paging) {
            return Err(MergeError::NonCanonical { va });
        }
        let Some(small) = size.next_smaller() else {
            return Err(MergeError::BadSize { size });
        };
        let target = Level::for_leaf_size(size);
        match self.locate(tables, va, target) {
            Located::At { addr, entry } if entry.present() && !entry.leaf_at(target) => {
                Ok((addr, entry.next_table(self.format), small))
            }
            Located::At { .. } | Located::LeafAbove { .. } | Located::MissingAbove { .. } => {
                Err(MergeError::NotATable { va })
            }
        }
    }

    /// Remove the table of smaller leaves below the `size`-level entry covering `va`, with every
    /// leaf in it, and free its page through `frames`: the entry becomes not present, so that a
    /// leaf of `size` can be mapped there again. This is how KVM zaps a non-leaf SPTE (the child
    /// table goes with its leaves), the step before a huge mapping replaces small ones. Refuses
    /// unless every child is a leaf or not present. Returns the leaves removed.
    ///
    /// # Errors
    /// [`MergeError::NotATable`] or [`MergeError::NotLeaf`]; nothing changes on error.
    pub fn zap_table(
        &mut self,
        tables: &mut PhysMemTables<P>,
        frames: &mut impl FrameSource<P>,
        va: V,
        size: PageSize,
    ) -> Result<(u64, PendingInvalidation<V>), MergeError<V>> {
        let (addr, child, small) = self.table_below(tables, va, size)?;
        let child_level = Level::for_leaf_size(small);
        let page = tables.page(child).expect("non-leaf entries point at installed tables");
        let base = va.raw() & !(size.bytes() - 1);
        let mut leaves = 0u64;
        for (i, &raw) in page.iter().enumerate() {
            let e = E::from_raw(raw);
            if e.present() {
                if !e.leaf_at(child_level) {
                    return Err(MergeError::NotLeaf {
                        va: V::from_raw(base + (i as u64) * small.bytes()),
                    });
                }
                leaves += 1;
            }
        }
        tables.write(addr, 0);
        tables.remove(child);
        frames.free_table(child);
        self.table_pages -= 1;
        self.leaves[small] -= leaves;
        Ok((leaves, PendingInvalidation::range(V::from_raw(base), size, small).with_freed_tables()))
    }

    /// Free every table page of this page table (root included) through `frames`. Leaves'
    /// frames are not touched: they belong to whoever mapped them.
    pub fn destroy(self, tables: &mut PhysMemTables<P>, frames: &mut impl FrameSource<P>) {
        fn free_rec<P: PhysAddr, E: PagingEntry>(
            tables: &mut PhysMemTables<P>,
            frames: &mut impl FrameSource<P>,
            table: P,
            level: Level,
            fmt: PteFormat,
        ) {
            if let Some(lower) = level.next_lower() {
                let entries = tables.page(table).expect("installed table");
                for raw in entries {
                    let e = E::from_raw(raw);
                    if e.present() && !e.leaf_at(level) {
                        free_rec::<P, E>(tables, frames, e.next_table(fmt), lower, fmt);
                    }
                }
            }
            tables.remove(table);
            frames.free_table(table);
        }
        free_rec::<P, E>(tables, frames, self.root, self.paging.top(), self.format);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pte::PteFlags;
    use crate::tables::LinearFrames;
    use proptest::prelude::*;

    /// The direct map base (Linux Documentation/arch/x86/x86_64/mm.rst, 4-level).
    const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;

    struct Rig {
        tables: PhysMemTables,
        frames: LinearFrames,
        pt: PageTable,
    }

    fn rig() -> Rig {
        let mut tables = PhysMemTables::new();
        let mut frames = LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
        let pt = PageTable::new(
            &mut tables,
            &mut frames,
            Paging::FourLevel,
            PteFormat::default(),
            PteFlags::KERNEL_TABLE,
        )
        .unwrap();
        Rig { tables, frames, pt }
    }

    fn dm(pa: u64) -> Hva {
        Hva::new(PAGE_OFFSET + pa)
    }

    impl Rig {
        fn map(&mut self, pa: u64, size: PageSize) {
            self.pt
                .map(
                    &mut self.tables,
                    &mut self.frames,
                    dm(pa),
                    Spa::new(pa),
                    size,
                    LeafAttrs::KERNEL_RW,
                )
                .unwrap()
                .ignore(); // fresh mapping: nothing cached
        }
    }

    /// `lookup_or_gap` finds the leaves `lookup` finds and, between them, skips runs of
    /// not-present last-level entries and missing tables without passing a leaf.
    #[test]
    fn lookup_or_gap_skips_only_empty_ranges() {
        let mut r = rig();
        r.map(0x5000, PageSize::K4);
        r.map(0x9000, PageSize::K4);
        r.map(0x60_0000, PageSize::M2);
        // 0x1000: not present until 0x5000 (four 4K entries).
        assert_eq!(r.pt.lookup_or_gap(&r.tables, dm(0x1000)).unwrap_err(), 0x4000);
        assert_eq!(r.pt.lookup_or_gap(&r.tables, dm(0x5000)).unwrap().size, PageSize::K4);
        assert_eq!(r.pt.lookup_or_gap(&r.tables, dm(0x6000)).unwrap_err(), 0x3000);
        // After the last leaf of the table: to the table's end.
        assert_eq!(r.pt.lookup_or_gap(&r.tables, dm(0xa000)).unwrap_err(), 0x20_0000 - 0xa000);
        // No page table under 2M..4M: the rest of that 2M.
        assert_eq!(r.pt.lookup_or_gap(&r.tables, dm(0x20_3000)).unwrap_err(), 0x1f_d000);
        assert_eq!(r.pt.lookup_or_gap(&r.tables, dm(0x61_0000)).unwrap().size, PageSize::M2);
        // Scanning a range with it visits exactly the leaves.
        let (mut va, mut leaves) = (0u64, Vec::new());
        while va < 0x80_0000 {
            match r.pt.lookup_or_gap(&r.tables, dm(va)) {
                Ok(l) => {
                    leaves.push((va, l.size));
                    va = (va & !(l.size.bytes() - 1)) + l.size.bytes();
                }
                Err(gap) => va += gap,
            }
        }
        assert_eq!(
            leaves,
            [(0x5000, PageSize::K4), (0x9000, PageSize::K4), (0x60_0000, PageSize::M2)]
        );
    }

    #[test]
    fn map_lookup_unmap() {
        let mut r = rig();
        r.map(0x4000_0000, PageSize::G1);
        r.map(0x20_0000, PageSize::M2);
        r.map(0x5000, PageSize::K4);
        assert_eq!(r.pt.leaf_counts(), PerSize([1, 1, 1]));
        // Root + PDPT + PD + PT.
        assert_eq!(r.pt.table_pages(), 4);
        let l = r.pt.lookup(&r.tables, dm(0x4123_4567)).unwrap();
        assert_eq!((l.size, l.pa(dm(0x4123_4567))), (PageSize::G1, Spa::new(0x4123_4567)));
        assert_eq!(l.attrs, LeafAttrs::KERNEL_RW);
        assert!(r.pt.lookup(&r.tables, dm(0x6000)).is_none());
        let again = r.pt.map(
            &mut r.tables,
            &mut r.frames,
            dm(0x4020_0000),
            Spa::new(0x4020_0000),
            PageSize::M2,
            LeafAttrs::KERNEL_RW,
        );
        assert_eq!(
            again,
            Err(MapError::AlreadyMapped { va: dm(0x4020_0000), existing: Some(PageSize::G1) })
        );
        let over_table = r.pt.map(
            &mut r.tables,
            &mut r.frames,
            dm(0),
            Spa::new(0),
            PageSize::M2,
            LeafAttrs::KERNEL_RW,
        );
        assert_eq!(over_table, Err(MapError::AlreadyMapped { va: dm(0), existing: None }));
        let mis = r.pt.map(
            &mut r.tables,
            &mut r.frames,
            dm(0x1000),
            Spa::new(0x20_1000),
            PageSize::M2,
            LeafAttrs::KERNEL_RW,
        );
        assert!(matches!(mis, Err(MapError::NotAligned { .. })));
        let nc = r.pt.map(
            &mut r.tables,
            &mut r.frames,
            Hva::new(0x0000_8000_0000_0000),
            Spa::new(0),
            PageSize::K4,
            LeafAttrs::KERNEL_RW,
        );
        assert!(matches!(nc, Err(MapError::NonCanonical { .. })));
        assert_eq!(
            r.pt.unmap(&mut r.tables, dm(0x4020_0000), PageSize::M2),
            Err(LeafError::SizeMismatch {
                va: dm(0x4020_0000),
                requested: PageSize::M2,
                found: Some(PageSize::G1)
            })
        );
        assert_eq!(
            r.pt.unmap(&mut r.tables, dm(0), PageSize::M2),
            Err(LeafError::SizeMismatch { va: dm(0), requested: PageSize::M2, found: None })
        );
        let (leaf, inv) = r.pt.unmap(&mut r.tables, dm(0x20_0000), PageSize::M2).unwrap();
        assert_eq!(leaf.frame, Spa::new(0x20_0000));
        assert_eq!(inv.ranges()[0].bytes, 2 << 20);
        inv.ignore(); // no TLB in this test
        assert!(r.pt.lookup(&r.tables, dm(0x20_0000)).is_none());
        assert_eq!(r.pt.leaf_counts(), PerSize([1, 0, 1]));
    }

    #[test]
    fn protect_keeps_frame() {
        let mut r = rig();
        r.map(0x20_0000, PageSize::M2);
        let ro = LeafAttrs {
            flags: LeafAttrs::KERNEL_RW.flags - PteFlags::WRITABLE,
            ..LeafAttrs::KERNEL_RW
        };
        let inv = r.pt.protect(&mut r.tables, dm(0x20_0000), PageSize::M2, ro).unwrap();
        assert_eq!(inv.ranges().len(), 1);
        inv.ignore(); // no TLB in this test
        let l = r.pt.lookup(&r.tables, dm(0x20_0000)).unwrap();
        assert_eq!(
            (l.frame, l.attrs.flags.contains(PteFlags::WRITABLE)),
            (Spa::new(0x20_0000), false)
        );
    }

    #[test]
    fn split_1g_to_4k_and_merge_back() {
        let mut r = rig();
        let attrs = LeafAttrs { pat: true, pkey: 2, ..LeafAttrs::KERNEL_RW };
        r.pt.map(&mut r.tables, &mut r.frames, dm(1 << 30), Spa::new(1 << 30), PageSize::G1, attrs)
            .unwrap()
            .ignore(); // fresh mapping
        let before = r.pt.lookup(&r.tables, dm(0x4012_3456)).unwrap();
        let raw_pdpte = {
            let Located::LeafAbove { entry, .. } = r.pt.locate(&r.tables, dm(1 << 30), Level::Pt)
            else {
                panic!()
            };
            entry
        };
        let (s, inv) = r.pt.split(&mut r.tables, &mut r.frames, dm(0x4012_3456)).unwrap();
        assert_eq!(s, PageSize::M2);
        assert_eq!(inv.ranges()[0].start, dm(1 << 30));
        assert_eq!(inv.ranges()[0].stale_size, PageSize::G1);
        inv.ignore(); // no TLB in this test
        let (s, inv) = r.pt.split(&mut r.tables, &mut r.frames, dm(0x4012_3456)).unwrap();
        assert_eq!(s, PageSize::K4);
        inv.ignore(); // no TLB in this test
        assert_eq!(r.pt.leaf_counts(), PerSize([512, 511, 0]));
        let after = r.pt.lookup(&r.tables, dm(0x4012_3456)).unwrap();
        assert_eq!(after.attrs, before.attrs);
        assert_eq!(after.pa(dm(0x4012_3456)), before.pa(dm(0x4012_3456)));
        assert_eq!(
            r.pt.split(&mut r.tables, &mut r.frames, dm(0x4012_3456)).map(|(s, i)| {
                i.ignore(); // unreachable
                s
            }),
            Err(SplitError::AlreadySmallest { va: dm(0x4012_3456) })
        );
        let tables_before = r.frames.allocated();
        r.pt.merge(&mut r.tables, &mut r.frames, dm(0x4012_3456), PageSize::M2).unwrap().ignore();
        r.pt.merge(&mut r.tables, &mut r.frames, dm(0x4012_3456), PageSize::G1).unwrap().ignore();
        assert_eq!(r.frames.allocated(), tables_before - 2);
        assert_eq!(r.pt.leaf_counts(), PerSize([0, 0, 1]));
        let Located::LeafAbove { entry, .. } = r.pt.locate(&r.tables, dm(1 << 30), Level::Pt)
        else {
            panic!()
        };
        assert_eq!(entry, raw_pdpte, "split then merge restores the identical entry");
    }

    #[test]
    fn merge_refusals() {
        let mut r = rig();
        r.map(0x20_0000, PageSize::M2);
        let (_, inv) = r.pt.split(&mut r.tables, &mut r.frames, dm(0x20_0000)).unwrap();
        inv.ignore(); // no TLB in this test
        let ro = LeafAttrs {
            flags: LeafAttrs::KERNEL_RW.flags - PteFlags::WRITABLE,
            ..LeafAttrs::KERNEL_RW
        };
        r.pt.protect(&mut r.tables, dm(0x20_3000), PageSize::K4, ro).unwrap().ignore();
        assert_eq!(
            r.pt.merge(&mut r.tables, &mut r.frames, dm(0x20_0000), PageSize::M2),
            Err(MergeError::NotUniform { va: dm(0x20_3000) })
        );
        r.pt.protect(&mut r.tables, dm(0x20_3000), PageSize::K4, LeafAttrs::KERNEL_RW)
            .unwrap()
            .ignore();
        let (_, inv) = r.pt.unmap(&mut r.tables, dm(0x20_5000), PageSize::K4).unwrap();
        inv.ignore();
        assert_eq!(
            r.pt.merge(&mut r.tables, &mut r.frames, dm(0x20_0000), PageSize::M2),
            Err(MergeError::NotPresent { va: dm(0x20_5000) })
        );
        r.pt.map(
            &mut r.tables,
            &mut r.frames,
            dm(0x20_5000),
            Spa::new(0x99_0000),
            PageSize::K4,
            LeafAttrs::KERNEL_RW,
        )
        .unwrap()
        .ignore();
        assert_eq!(
            r.pt.merge(&mut r.tables, &mut r.frames, dm(0x20_0000), PageSize::M2),
            Err(MergeError::NotContiguous { va: dm(0x20_5000) })
        );
        assert_eq!(
            r.pt.merge(&mut r.tables, &mut r.frames, dm(0x20_0000), PageSize::K4),
            Err(MergeError::BadSize { size: PageSize::K4 })
        );
        assert_eq!(
            r.pt.merge(&mut r.tables, &mut r.frames, dm(0x20_0000), PageSize::G1),
            Err(MergeError::NotPresent { va: dm(0) })
        );
        r.map(0, PageSize::M2);
        assert_eq!(
            r.pt.merge(&mut r.tables, &mut r.frames, dm(0x20_0000), PageSize::G1),
            Err(MergeError::NotLeaf { va: dm(0x20_0000) })
        );
        assert_eq!(
            r.pt.merge(&mut r.tables, &mut r.frames, dm(0x80_0000), PageSize::M2),
            Err(MergeError::NotATable { va: dm(0x80_0000) })
        );
        // A contiguous run whose first frame is not 2M-aligned.
        let mut r = rig();
        for i in 0..512u64 {
            r.pt.map(
                &mut r.tables,
                &mut r.frames,
                dm(0x40_0000 + i * 4096),
                Spa::new(0x1000 + i * 4096),
                PageSize::K4,
                LeafAttrs::KERNEL_RW,
            )
            .unwrap()
            .ignore();
        }
        assert_eq!(
            r.pt.merge(&mut r.tables, &mut r.frames, dm(0x40_0000), PageSize::M2),
            Err(MergeError::Misaligned { frame: 0x1000, size: PageSize::M2 })
        );
    }

    #[test]
    fn destroy_frees_every_table() {
        let mut r = rig();
        r.map(0x5000, PageSize::K4);
        r.map(0x4000_0000, PageSize::G1);
        let (_, inv) = r.pt.split(&mut r.tables, &mut r.frames, dm(0x4000_0000)).unwrap();
        inv.ignore();
        assert_eq!(r.frames.allocated(), 5);
        let Rig { mut tables, mut frames, pt } = r;
        pt.destroy(&mut tables, &mut frames);
        assert_eq!(frames.allocated(), 0);
        assert!(tables.is_empty());
    }

    #[test]
    fn five_level() {
        let mut tables = PhysMemTables::new();
        let mut frames: LinearFrames =
            LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
        let mut pt: PageTable = PageTable::new(
            &mut tables,
            &mut frames,
            Paging::FiveLevel,
            PteFormat::default(),
            PteFlags::KERNEL_TABLE,
        )
        .unwrap();
        // Linux 5-level direct map base: 0xff11000000000000 (mm.rst).
        let va = Hva::new(0xff11_0000_0020_0000);
        pt.map(
            &mut tables,
            &mut frames,
            va,
            Spa::new(0x20_0000),
            PageSize::M2,
            LeafAttrs::KERNEL_RW,
        )
        .unwrap()
        .ignore();
        assert_eq!(pt.table_pages(), 4);
        assert_eq!(pt.lookup(&tables, va).unwrap().frame, Spa::new(0x20_0000));
        assert!(pt.lookup(&tables, Hva::new(0xffff_8880_0020_0000)).is_none());
    }

    proptest! {
        #[test]
        fn split_then_merge_is_identity(
            gig in 0u64..4, off in 0u64..(1 << 30), bits in any::<u64>(), pat: bool, pkey in 0u8..16,
        ) {
            let mut r = rig();
            let attrs = LeafAttrs {
                flags: PteFlags::from_bits_truncate(bits), pat, pkey, encrypted: false,
            }.normalized();
            let base = gig << 30;
            r.pt.map(&mut r.tables, &mut r.frames, dm(base), Spa::new(base), PageSize::G1, attrs)
                .unwrap().ignore();
            let before = r.pt.lookup(&r.tables, dm(base)).unwrap();
            let va = dm(base + off);
            let (_, i1) = r.pt.split(&mut r.tables, &mut r.frames, va).unwrap();
            let (_, i2) = r.pt.split(&mut r.tables, &mut r.frames, va).unwrap();
            i1.ignore();
            i2.ignore();
            // Every 4K page of the split 2M region and every 2M neighbour translate as before.
            for probe in [off & !0x1f_ffff, off, off | 0x1f_ffff, (off + (64 << 20)) % (1 << 30)] {
                let v = dm(base + probe);
                let l = r.pt.lookup(&r.tables, v).unwrap();
                prop_assert_eq!(l.pa(v), before.pa(v));
                prop_assert_eq!(l.attrs, before.attrs);
            }
            r.pt.merge(&mut r.tables, &mut r.frames, va, PageSize::M2).unwrap().ignore();
            r.pt.merge(&mut r.tables, &mut r.frames, va, PageSize::G1).unwrap().ignore();
            prop_assert_eq!(r.pt.lookup(&r.tables, va).unwrap(), before);
            prop_assert_eq!(r.pt.table_pages(), 2); // root and PDPT
        }

        /// `map_table` is 512 `map`s in address order: the same result, and afterwards the
        /// same counts, the same frames taken (in the same order), and the same entries in
        /// every page of the frame pool, whatever was mapped before (nothing, a leaf inside
        /// the stretch, a larger leaf over it, the stretch's own table) and whether the frames
        /// run out.
        #[test]
        fn map_table_is_512_maps(
            s in 0usize..3,
            slot in 0u64..4,
            before in proptest::collection::vec((0usize..3, 0u64..2048), 0..4),
            frame_off in 0u64..3,
            pool in prop_oneof![Just(4096u64), 2u64..8],
            bits in any::<u64>(),
        ) {
            let attrs = LeafAttrs {
                flags: PteFlags::from_bits_truncate(bits), pat: false, pkey: 0, encrypted: false,
            }.normalized();
            let size = PageSize::ALL[s];
            let reach = ENTRIES_PER_TABLE as u64 * size.bytes();
            // A table-aligned stretch, or (frame_off 2) one a page off the table's alignment.
            let va = (slot + 1) * reach + if frame_off == 2 { size.bytes() } else { 0 };
            let frame = va + if frame_off == 1 { 1 << 12 } else { 0 };
            let start = || {
                let mut r = rig();
                // After the root, which `rig` took from the first page.
                r.frames = LinearFrames::new(Spa::new(0x100_1000), Spa::new(0x100_1000 + 4096 * pool));
                for &(bs, at) in &before {
                    let bsize = PageSize::ALL[bs];
                    let pa = (va + at * (reach / 2048)) & !(bsize.bytes() - 1);
                    let _ = r.pt.map(&mut r.tables, &mut r.frames, dm(pa), Spa::new(pa), bsize, attrs);
                }
                r
            };
            let (mut fast, mut slow) = (start(), start());
            let got = fast.pt.map_table(&mut fast.tables, &mut fast.frames, dm(va), Spa::new(frame), size, attrs);
            let want = (0..ENTRIES_PER_TABLE as u64).try_for_each(|i| {
                let (v, f) = (va + i * size.bytes(), frame + i * size.bytes());
                slow.pt.map(&mut slow.tables, &mut slow.frames, dm(v), Spa::new(f), size, attrs).map(|inv| inv.ignore())
            });
            if before.is_empty() && pool > 3 && frame_off == 0 {
                prop_assert!(got.is_ok(), "a fresh aligned stretch maps: {:?}", got);
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(fast.pt.leaf_counts(), slow.pt.leaf_counts());
            prop_assert_eq!(fast.pt.table_pages(), slow.pt.table_pages());
            prop_assert_eq!(fast.tables.len(), slow.tables.len());
            for page in (0x100_0000u64..0x100_1000 + 4096 * pool).step_by(4096) {
                let p = Spa::new(page);
                prop_assert_eq!(fast.tables.entries(p).map(|e| *e), slow.tables.entries(p).map(|e| *e));
            }
        }

        #[test]
        fn map_unmap_across_sizes(ops in proptest::collection::vec((0usize..3, 0u64..8, any::<bool>()), 1..40)) {
            // A model: which (size, slot) leaves exist; slots of each size live in disjoint 1G
            // windows so sizes never collide, except through the explicit overlap probe below.
            let mut r = rig();
            let mut live = std::collections::BTreeSet::new();
            for (s, slot, map) in ops {
                let size = PageSize::ALL[s];
                let pa = ((s as u64 + 1) << 30) + slot * size.bytes().min(1 << 27);
                let pa = pa & !(size.bytes() - 1);
                let va = dm(pa);
                if map {
                    let res = r.pt.map(&mut r.tables, &mut r.frames, va, Spa::new(pa), size, LeafAttrs::KERNEL_RW);
                    if live.insert((s, pa)) { res.unwrap().ignore(); } else { prop_assert!(res.is_err()); }
                } else {
                    let res = r.pt.unmap(&mut r.tables, va, size);
                    if live.remove(&(s, pa)) { res.unwrap().1.ignore(); } else { prop_assert!(res.is_err()); }
                }
                let mut counts = PerSize::<u64>::default();
                for (s, pa) in &live {
                    counts[PageSize::ALL[*s]] += 1;
                    let l = r.pt.lookup(&r.tables, dm(*pa + 8)).unwrap();
                    prop_assert_eq!(l.pa(dm(*pa + 8)), Spa::new(*pa + 8));
                }
                prop_assert_eq!(r.pt.leaf_counts(), counts);
            }
        }
    }
}
