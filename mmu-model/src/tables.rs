//! Page-table pages in simulated physical memory, and the frame source that provides them.

use crate::addr::PhysAddr;
use crate::level::ENTRIES_PER_TABLE;
use rustc_hash::FxHashMap;
use std::fmt;
use std::marker::PhantomData;

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

/// The page-table pages of simulated physical memory, keyed by their physical page.
///
/// Storage: an arena `Vec<Box<[u64; 512]>>` with an `FxHashMap<page number, slot>` index and a
/// free-slot list. Why: a 1 TiB direct map split to 4 KiB has ~512 Ki table pages (2 GiB of
/// entries, as on the real host, physmap.md H19), so pages are boxed individually (growing the
/// arena moves pointers, never 2 GiB of entries); lookups by page are O(1) hashed; pages freed
/// by merges are recycled without allocator traffic. The hash map is only ever looked up, never
/// iterated, so its order cannot reach an output (STYLE rule 14).
///
/// Memory that is not a table page reads as zero (a not-present entry).
pub struct PhysMemTables<P: PhysAddr = sim_core::Spa> {
    slots: Vec<Box<TablePage>>,
    index: FxHashMap<u64, u32>,
    free_slots: Vec<u32>,
    _p: PhantomData<P>,
}

impl<P: PhysAddr> fmt::Debug for PhysMemTables<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhysMemTables").field("tables", &self.len()).finish()
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
            _p: PhantomData,
        }
    }

    /// Number of table pages.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no table pages.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `page` (4 KiB-aligned) holds a table.
    pub fn is_table(&self, page: P) -> bool {
        self.index.contains_key(&(page.raw() >> 12))
    }

    /// Make `page` a zeroed table page.
    ///
    /// # Errors
    /// [`InstallError`] if the page is misaligned or already a table.
    pub fn install(&mut self, page: P) -> Result<(), InstallError> {
        let raw = page.raw();
        if raw & 0xfff != 0 {
            return Err(InstallError::Misaligned { page: raw });
        }
        if self.index.contains_key(&(raw >> 12)) {
            return Err(InstallError::AlreadyTable { page: raw });
        }
        let slot = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s as usize].fill(0);
                s
            }
            None => {
                let s = u32::try_from(self.slots.len()).expect("fewer than 2^32 table pages");
                self.slots.push(Box::new([0; ENTRIES_PER_TABLE]));
                s
            }
        };
        self.index.insert(raw >> 12, slot);
        Ok(())
    }

    /// Stop treating `page` as a table. Returns whether it was one.
    pub fn remove(&mut self, page: P) -> bool {
        match self.index.remove(&(page.raw() >> 12)) {
            Some(slot) => {
                self.free_slots.push(slot);
                true
            }
            None => false,
        }
    }

    /// The 8-byte entry at physical address `addr` (0 if `addr` is not in a table page).
    pub fn read(&self, addr: P) -> u64 {
        let raw = addr.raw();
        match self.index.get(&(raw >> 12)) {
            Some(&slot) => self.slots[slot as usize][entry_index(raw)],
            None => 0,
        }
    }

    /// Write the 8-byte entry at `addr`, bypassing the [`crate::PageTable`] primitives (for
    /// scenario state and tests; no invalidation is computed). Returns `false`, writing
    /// nothing, if `addr` is not in a table page.
    pub fn write(&mut self, addr: P, value: u64) -> bool {
        let raw = addr.raw();
        match self.index.get(&(raw >> 12)) {
            Some(&slot) => {
                self.slots[slot as usize][entry_index(raw)] = value;
                true
            }
            None => false,
        }
    }

    /// A whole table page (for merge checks).
    pub(crate) fn page(&self, page: P) -> Option<&TablePage> {
        self.index.get(&(page.raw() >> 12)).map(|&s| &*self.slots[s as usize])
    }

    /// A whole table page, mutably (for split).
    pub(crate) fn page_mut(&mut self, page: P) -> Option<&mut TablePage> {
        match self.index.get(&(page.raw() >> 12)) {
            Some(&s) => Some(&mut *self.slots[s as usize]),
            None => None,
        }
    }
}

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
