//! Page-table pages in simulated physical memory, and the frame source that provides them.

use crate::addr::PhysAddr;
use crate::level::ENTRIES_PER_TABLE;
use rustc_hash::FxHashMap;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// Where page-table pages come from: the host's physical allocator (in the root crate) or a
/// test double. Every table page a [`crate::PageTable`] uses is allocated and freed through it.
pub trait FrameSource<P: PhysAddr = sim_core::Spa> {
    /// A free, 4 KiB-aligned page to hold a table, or `None` when memory is exhausted.
    fn alloc_table(&mut self) -> Option<P>;
    /// Give back a table page that is no longer referenced.
    fn free_table(&mut self, page: P);
}

/// A simple frame source: hands out pages from `[next, end)` in address order, reusing freed
/// pages first (lowest address first, so the order is deterministic). For tests and for early
/// bring-up before the host allocator exists.
#[derive(Clone, Debug)]
pub struct LinearFrames<P: PhysAddr = sim_core::Spa> {
    next: u64,
    end: u64,
    freed: std::collections::BTreeSet<u64>,
    allocated: u64,
    _p: PhantomData<P>,
}

impl<P: PhysAddr> LinearFrames<P> {
    /// Pages from `[start, end)` (both rounded to 4 KiB: start up, end down).
    pub fn new(start: P, end: P) -> Self {
        LinearFrames {
            next: start.raw().next_multiple_of(4096),
            end: end.raw() & !0xfff,
            freed: Default::default(),
            allocated: 0,
            _p: PhantomData,
        }
    }

    /// Pages currently handed out.
    pub const fn allocated(&self) -> u64 {
        self.allocated
    }
}

impl<P: PhysAddr> FrameSource<P> for LinearFrames<P> {
    fn alloc_table(&mut self) -> Option<P> {
        let page = if let Some(p) = self.freed.pop_first() {
            p
        } else if self.next < self.end {
            let p = self.next;
            self.next += 4096;
            p
        } else {
            return None;
        };
        self.allocated += 1;
        Some(P::from_raw(page))
    }

    fn free_table(&mut self, page: P) {
        if self.freed.insert(page.raw()) {
            self.allocated -= 1;
        }
    }
}

/// One table page: 512 raw entries.
pub(crate) type TablePage = [u64; ENTRIES_PER_TABLE];

/// How one table page is stored.
#[derive(Clone)]
enum Slot {
    /// Every entry. Shared (`Arc`) by copies of the tables until one of them writes it: a
    /// copied machine (the race explorer makes one per schedule) copies only the pages it
    /// changes.
    Full(Arc<TablePage>),
    /// Entry `i` is `first + i × step` (wrapping): a zeroed page (0, 0), or the 512 leaves a
    /// split produces (consecutive frames, identical attributes). Materialized as `Full` by the
    /// first write that breaks the progression.
    Linear { first: u64, step: u64 },
}

impl Slot {
    const ZERO: Slot = Slot::Linear { first: 0, step: 0 };

    #[inline]
    fn get(&self, i: usize) -> u64 {
        match self {
            Slot::Full(p) => p[i],
            Slot::Linear { first, step } => first.wrapping_add((i as u64).wrapping_mul(*step)),
        }
    }

    fn from_entries(e: &TablePage) -> Slot {
        let step = e[1].wrapping_sub(e[0]);
        let linear = e
            .iter()
            .enumerate()
            .all(|(i, &v)| v == e[0].wrapping_add((i as u64).wrapping_mul(step)));
        if linear { Slot::Linear { first: e[0], step } } else { Slot::Full(Arc::new(*e)) }
    }

    fn entries(&self) -> TablePage {
        match self {
            Slot::Full(p) => **p,
            Slot::Linear { .. } => std::array::from_fn(|i| self.get(i)),
        }
    }
}

/// The page-table pages of simulated physical memory, keyed by their physical page.
///
/// Storage: a slot arena with an `FxHashMap<page number, slot>` index and a free-slot list.
/// A page whose 512 entries form an arithmetic progression — a fresh zeroed page, or the 512
/// leaves of a split (consecutive frames, identical attributes) — is stored as two words and
/// expanded to a boxed `[u64; 512]` by the first write that breaks the progression. Why: a
/// 1 TiB direct map split to 4 KiB has 512 Ki table pages, 2 GiB of entries on the real host
/// (physmap.md H19); stored flat they would not fit a small machine, while split PT pages
/// compress to 16 bytes each. What the simulated machine sees is unchanged: every page
/// reads, writes and counts as a full table page. Lookups by page are O(1) hashed; the hash
/// map is only ever looked up, never iterated, so its order cannot reach an output (STYLE
/// rule 14).
///
/// Memory that is not a table page reads as zero (a not-present entry).
pub struct PhysMemTables<P: PhysAddr = sim_core::Spa> {
    slots: Vec<Slot>,
    index: FxHashMap<u64, u32>,
    free_slots: Vec<u32>,
    full: usize,
    /// A direct-mapped memo of recent (page number + 1, slot) lookups, in front of the hashed
    /// index: a walk reads a handful of pages over and over. Purely a speed-up: entries are
    /// dropped when their page stops being a table, so it always agrees with the index.
    recent: [Cell<(u64, u32)>; RECENT],
    /// The upper entries of the last walk that reached a page table (the walker's memo,
    /// [`UpperMemo`]). Every write path of this storage — [`PhysMemTables::write`],
    /// install and [`PhysMemTables::remove`] — empties it, so it only ever holds what a read
    /// would return now.
    upper: UpperMemo,
    _p: PhantomData<P>,
}

sim_core::clone_by_fields!(impl[P: PhysAddr] PhysMemTables<P> {
    slots,
    index,
    free_slots,
    full,
    recent,
    upper,
    _p
});

/// What a 4- or 5-level walk read above its page table (PT), remembered in the table storage
/// for the next walk of the same 2 MiB region: the walk's start table and level, the region
/// (`va >> 21`), the walker's address mask, and each entry's address and value, root side
/// first. Consecutive walks share these entries 511 times in 512 (a sweep of 4K pages).
///
/// The storage cannot tell what a walker does with the entries, only what they are: the
/// memo is a copy of table content, and any write to the storage (any entry, any page
/// installed or removed) forgets it. What the walker tests on an entry it tests again on the
/// copy ([`crate::walk`]'s fast walk), except what cannot change while the values do not
/// (present, not a leaf).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UpperMemo {
    /// Entries remembered (0: none).
    pub n: usize,
    /// The table the walk started at, and its level index (root first, as in the walker).
    pub table: u64,
    pub first: usize,
    /// `va >> 21` of the walk.
    pub region: u64,
    /// The walker's mask of a table address in an entry.
    pub addr_mask: u64,
    /// AND and OR of the entries.
    pub and_all: u64,
    pub or_all: u64,
    /// Address and value of each entry, root side first.
    pub addrs: [u64; 4],
    pub entries: [u64; 4],
}

const RECENT: usize = 64;

#[inline]
fn recent_index(page: u64) -> usize {
    // Masked to 6 bits: always fits.
    usize::try_from(page & (RECENT as u64 - 1)).expect("6-bit index")
}

impl<P: PhysAddr> fmt::Debug for PhysMemTables<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhysMemTables")
            .field("tables", &self.len())
            .field("compact", &self.compact_pages())
            .finish()
    }
}

impl<P: PhysAddr> Default for PhysMemTables<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// A table page could not be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// The page is not 4 KiB-aligned.
    #[error("table page {page:#x} is not 4 KiB-aligned")]
    Misaligned {
        /// The page.
        page: u64,
    },
    /// The page already holds a table.
    #[error("page {page:#x} already holds a page table")]
    AlreadyTable {
        /// The page.
        page: u64,
    },
}

impl<P: PhysAddr> PhysMemTables<P> {
    /// No tables.
    pub fn new() -> Self {
        PhysMemTables {
            slots: Vec::new(),
            index: FxHashMap::default(),
            free_slots: Vec::new(),
            full: 0,
            recent: std::array::from_fn(|_| Cell::new((0, 0))),
            upper: UpperMemo::default(),
            _p: PhantomData,
        }
    }

    /// The slot of table page number `page`.
    #[inline(always)]
    fn slot_of(&self, page: u64) -> Option<u32> {
        let r = &self.recent[recent_index(page)];
        let (p1, s) = r.get();
        if p1 == page.wrapping_add(1) {
            return Some(s);
        }
        let s = *self.index.get(&page)?;
        r.set((page.wrapping_add(1), s));
        Some(s)
    }

    /// Number of table pages.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no table pages.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Table pages stored compactly (as an arithmetic progression of entries).
    pub fn compact_pages(&self) -> u64 {
        (self.len() - self.full.min(self.len())) as u64
    }

    /// Host memory the storage uses, bytes (slot arena, expanded pages, index), for
    /// benchmarks and reports.
    pub fn storage_bytes(&self) -> u64 {
        let slot = std::mem::size_of::<Slot>() as u64;
        let idx = (std::mem::size_of::<(u64, u32)>() + 1) as u64;
        self.slots.capacity() as u64 * slot
            + self.full as u64 * std::mem::size_of::<TablePage>() as u64
            + self.index.capacity() as u64 * idx
            + self.free_slots.capacity() as u64 * 4
    }

    /// Whether `page` (4 KiB-aligned) holds a table.
    pub fn is_table(&self, page: P) -> bool {
        self.index.contains_key(&(page.raw() >> 12))
    }

    fn put(&mut self, page: P, slot: Slot) -> Result<(), InstallError> {
        let raw = page.raw();
        if raw & 0xfff != 0 {
            return Err(InstallError::Misaligned { page: raw });
        }
        if self.index.contains_key(&(raw >> 12)) {
            return Err(InstallError::AlreadyTable { page: raw });
        }
        if matches!(slot, Slot::Full(_)) {
            self.full += 1;
        }
        self.upper.n = 0;
        let s = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s as usize] = slot;
                s
            }
            None => {
                let s = u32::try_from(self.slots.len()).expect("fewer than 2^32 table pages");
                self.slots.push(slot);
                s
            }
        };
        self.index.insert(raw >> 12, s);
        Ok(())
    }

    /// Make `page` a zeroed table page.
    ///
    /// # Errors
    /// [`InstallError`] if the page is misaligned or already a table.
    pub fn install(&mut self, page: P) -> Result<(), InstallError> {
        self.put(page, Slot::ZERO)
    }

    /// Make `page` a table page whose 512 entries all hold `value` (stored compactly): what
    /// filling a new page with one value writes, in one step.
    ///
    /// # Errors
    /// [`InstallError`] if the page is misaligned or already a table.
    pub fn install_filled(&mut self, page: P, value: u64) -> Result<(), InstallError> {
        self.put(page, Slot::Linear { first: value, step: 0 })
    }

    /// Make `page` a table page holding `entries` (stored compactly when they form an
    /// arithmetic progression).
    ///
    /// # Errors
    /// [`InstallError`] if the page is misaligned or already a table.
    pub(crate) fn install_entries(
        &mut self,
        page: P,
        entries: &TablePage,
    ) -> Result<(), InstallError> {
        self.put(page, Slot::from_entries(entries))
    }

    /// Stop treating `page` as a table. Returns whether it was one.
    pub fn remove(&mut self, page: P) -> bool {
        self.upper.n = 0;
        let pn = page.raw() >> 12;
        let r = &self.recent[recent_index(pn)];
        if r.get().0 == pn.wrapping_add(1) {
            r.set((0, 0));
        }
        match self.index.remove(&pn) {
            Some(slot) => {
                let old = std::mem::replace(&mut self.slots[slot as usize], Slot::ZERO);
                if matches!(old, Slot::Full(_)) {
                    self.full -= 1;
                }
                self.free_slots.push(slot);
                true
            }
            None => false,
        }
    }

    /// The 8-byte entry at physical address `addr` (0 if `addr` is not in a table page).
    #[inline(always)]
    pub fn read(&self, addr: P) -> u64 {
        let raw = addr.raw();
        match self.slot_of(raw >> 12) {
            Some(slot) => self.slots[slot as usize].get(entry_index(raw)),
            None => 0,
        }
    }

    /// The value every entry of table page `page` holds, if they are all the same (a page
    /// filled with one value and not written since); `None` otherwise or if `page` is not a
    /// table page.
    pub fn uniform(&self, page: P) -> Option<u64> {
        match &self.slots[self.slot_of(page.raw() >> 12)? as usize] {
            Slot::Linear { first, step: 0 } => Some(*first),
            _ => None,
        }
    }

    /// The 512 entries of table page `page` (any address in it), or `None` if it is not a
    /// table page: one lookup for a whole page, for callers that scan every entry. Borrowed
    /// when the page is stored entry by entry, built when it is stored compactly.
    pub fn entries(&self, page: P) -> Option<std::borrow::Cow<'_, [u64; ENTRIES_PER_TABLE]>> {
        self.slot_of(page.raw() >> 12).map(|s| match &self.slots[s as usize] {
            Slot::Full(p) => std::borrow::Cow::Borrowed(&**p),
            linear @ Slot::Linear { .. } => std::borrow::Cow::Owned(linear.entries()),
        })
    }

    /// Write the 8-byte entry at `addr`, bypassing the [`crate::PageTable`] primitives (for
    /// scenario state and tests; no invalidation is computed). Returns `false`, writing
    /// nothing, if `addr` is not in a table page.
    pub fn write(&mut self, addr: P, value: u64) -> bool {
        self.upper.n = 0;
        let raw = addr.raw();
        let Some(slot) = self.slot_of(raw >> 12) else { return false };
        let i = entry_index(raw);
        let s = &mut self.slots[slot as usize];
        match s {
            Slot::Full(p) => Arc::make_mut(p)[i] = value,
            Slot::Linear { .. } if s.get(i) == value => {}
            Slot::Linear { .. } => {
                let mut e = s.entries();
                e[i] = value;
                *s = Slot::Full(Arc::new(e));
                self.full += 1;
            }
        }
        true
    }

    /// The walker's memo of upper entries (empty after any write).
    #[inline(always)]
    pub(crate) const fn upper(&self) -> &UpperMemo {
        &self.upper
    }

    /// Remember the upper entries of a walk (see [`UpperMemo`]).
    #[inline]
    pub(crate) fn set_upper(&mut self, memo: UpperMemo) {
        self.upper = memo;
    }

    /// Forget the walker's memo (for tests that compare against a storage without one).
    #[cfg(test)]
    pub(crate) fn forget_upper(&mut self) {
        self.upper.n = 0;
    }

    /// A copy of a whole table page (for merge checks and teardown).
    pub(crate) fn page(&self, page: P) -> Option<TablePage> {
        self.index.get(&(page.raw() >> 12)).map(|&s| self.slots[s as usize].entries())
    }
}

#[inline]
fn entry_index(raw: u64) -> usize {
    // Bits 11:3 of the address: always < 512.
    usize::try_from((raw & 0xff8) >> 3).expect("9-bit index")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::Spa;

    #[test]
    fn install_read_write_recycle() {
        let mut t: PhysMemTables = PhysMemTables::new();
        let p = Spa::new(0x5000);
        t.install(p).unwrap();
        assert_eq!(t.install(p), Err(InstallError::AlreadyTable { page: 0x5000 }));
        assert_eq!(t.install(Spa::new(0x5008)), Err(InstallError::Misaligned { page: 0x5008 }));
        assert!(t.write(Spa::new(0x5ff8), 0xabc));
        assert_eq!(t.read(Spa::new(0x5ff8)), 0xabc);
        assert_eq!(t.read(Spa::new(0x6ff8)), 0);
        assert!(!t.write(Spa::new(0x6000), 1));
        assert!(t.remove(p));
        assert!(!t.remove(p));
        t.install(Spa::new(0x9000)).unwrap();
        // The recycled slot comes back zeroed.
        assert_eq!(t.read(Spa::new(0x9ff8)), 0);
        assert_eq!(t.len(), 1);
    }

    /// Copies share pages until one writes; a copy restored with `clone_from` reads exactly
    /// as its source whatever it wrote (pages it owns alone take the source's entries in
    /// place), and writes to either side never show through to the other.
    #[test]
    fn copies_and_restores_stay_independent() {
        let mut src: PhysMemTables = PhysMemTables::new();
        for (k, page) in [0x5000u64, 0x6000, 0x7000].into_iter().enumerate() {
            src.install(Spa::new(page)).unwrap();
            for i in 0..8u64 {
                assert!(src.write(Spa::new(page + i * 8), 0x1000 * (k as u64 + 1) + i));
            }
        }
        let snapshot = |t: &PhysMemTables| {
            [0x5000u64, 0x6000, 0x7000, 0x8000].map(|p| t.page(Spa::new(p)).unwrap_or([7; 512]))
        };
        let want = snapshot(&src);
        let mut copy = src.clone();
        for round in 0..3u64 {
            // Write one shared page, the page written last round, and a new table.
            assert!(copy.write(Spa::new(0x5008), 0xdead + round));
            assert!(copy.write(Spa::new(0x6010), 0xbeef + round));
            copy.install(Spa::new(0x8000)).unwrap();
            assert!(copy.write(Spa::new(0x8000), 1));
            assert_eq!(snapshot(&src), want, "round {round}: the source changed");
            copy.clone_from(&src);
            assert_eq!(snapshot(&copy), want, "round {round}: not restored");
        }
        // The source's own writes do not reach the restored copy.
        assert!(src.write(Spa::new(0x5008), 0x42));
        assert_eq!(snapshot(&copy), want);
    }

    #[test]
    fn compact_pages_expand_on_a_breaking_write() {
        let mut t: PhysMemTables = PhysMemTables::new();
        let e: TablePage = std::array::from_fn(|i| 0x4000_0000 + i as u64 * 4096 + 0x63);
        t.install_entries(Spa::new(0x5000), &e).unwrap();
        assert_eq!(t.compact_pages(), 1);
        assert_eq!(t.read(Spa::new(0x5000 + 8 * 7)), 0x4000_7063);
        assert_eq!(t.page(Spa::new(0x5000)).unwrap(), e);
        // A write that keeps the progression keeps it compact; one that breaks it expands.
        assert!(t.write(Spa::new(0x5008), 0x4000_1063));
        assert_eq!(t.compact_pages(), 1);
        assert!(t.write(Spa::new(0x5008), 0x4000_1000));
        assert_eq!(t.compact_pages(), 0);
        assert_eq!(t.read(Spa::new(0x5008)), 0x4000_1000);
        assert_eq!(t.read(Spa::new(0x5010)), 0x4000_2063);
        let mut odd = e;
        odd[300] = 0;
        t.install_entries(Spa::new(0x6000), &odd).unwrap();
        assert_eq!(t.compact_pages(), 0, "not a progression: stored in full");
        assert!(t.remove(Spa::new(0x5000)));
        t.install(Spa::new(0x7000)).unwrap();
        assert_eq!(t.page(Spa::new(0x7000)).unwrap(), [0; 512], "recycled slot is zero");
        assert!(t.storage_bytes() > 0);
    }

    #[test]
    fn linear_frames() {
        let mut f: LinearFrames = LinearFrames::new(Spa::new(0x1001), Spa::new(0x4000));
        assert_eq!(f.alloc_table(), Some(Spa::new(0x2000)));
        assert_eq!(f.alloc_table(), Some(Spa::new(0x3000)));
        assert_eq!(f.alloc_table(), None);
        f.free_table(Spa::new(0x2000));
        assert_eq!(f.allocated(), 1);
        assert_eq!(f.alloc_table(), Some(Spa::new(0x2000)));
    }
}
