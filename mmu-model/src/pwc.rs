//! Paging-structure caches ("page-walk caches", PWCs): per-level caches of non-leaf entries
//! (Intel SDM Vol. 3A §4.10.3: PML5E, PML4E, PDPTE and PDE caches; AMD's page-directory cache
//! and nested PWCs). A hit at level L gives the table the entry points at and the rights
//! combined down to L, so a walk after a TLB miss starts below the deepest hit and issues only
//! the remaining references (ChampSim `src/ptw.cc`: probe every PSCL, start at the deepest
//! hit).
//!
//! Three instances serve a CPU: the host (native) PWC keyed by linear address, and for 2-D
//! walks the guest PWC (guest entries, keyed by GVA, holding guest-physical table addresses)
//! and the nested PWC (NPT/EPT entries, keyed by GPA).
//!
//! Entries are created only by walks that complete with a translation (their entries then have
//! A = 1), and are tagged like TLB entries: ASID/VPID, PCID (not for the nested PWC) and nested
//! root.

use crate::addr::PhysAddr;
use crate::level::Level;
use crate::repl::{MAX_PLRU_WAYS, ReplState, Replacement};
use crate::tlb::{MAX_LATENCY, MAX_TLB_SETS, MAX_TLB_WAYS, TlbTag, nroot_key};
use crate::walk::{Perms, WalkStart};
use serde::{Deserialize, Serialize};
use sim_core::config::{ConfigError, check_pow2, check_range};
use sim_core::{Cycles, Rng, Spa};

/// Geometry of one level's cache. `ways = 0`: the CPU has no cache for that level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PwcLevelConfig {
    /// Sets (a power of two; 1 = fully associative).
    pub sets: u32,
    /// Ways per set (0 = absent).
    pub ways: u32,
}

impl PwcLevelConfig {
    /// No cache for this level.
    pub const NONE: PwcLevelConfig = PwcLevelConfig { sets: 1, ways: 0 };

    /// `sets` × `ways`.
    pub const fn new(sets: u32, ways: u32) -> PwcLevelConfig {
        PwcLevelConfig { sets, ways }
    }

    /// Entries.
    pub const fn entries(&self) -> u64 {
        self.sets as u64 * self.ways as u64
    }
}

/// Geometry and timing of one set of paging-structure caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PwcConfig {
    /// PML5E cache (5-level paging only).
    pub pml5: PwcLevelConfig,
    /// PML4E cache.
    pub pml4: PwcLevelConfig,
    /// PDPTE cache.
    pub pdpt: PwcLevelConfig,
    /// PDE cache.
    pub pd: PwcLevelConfig,
    /// Cycles a walk spends probing the caches (all levels in parallel, once per walk; only
    /// charged when some level exists).
    pub hit_latency: Cycles,
    /// Replacement policy of every level.
    pub replacement: Replacement,
}

impl Default for PwcConfig {
    /// No paging-structure caches.
    fn default() -> Self {
        PwcConfig::NONE
    }
}

impl PwcConfig {
    /// No paging-structure caches.
    pub const NONE: PwcConfig = PwcConfig {
        pml5: PwcLevelConfig::NONE,
        pml4: PwcLevelConfig::NONE,
        pdpt: PwcLevelConfig::NONE,
        pd: PwcLevelConfig::NONE,
        hit_latency: Cycles::ZERO,
        replacement: Replacement::Lru,
    };

    /// Whether any level has a cache.
    pub const fn any(&self) -> bool {
        self.pml5.ways + self.pml4.ways + self.pdpt.ways + self.pd.ways > 0
    }

    fn level(&self, l: Level) -> Option<PwcLevelConfig> {
        match l {
            Level::Pml5 => Some(self.pml5),
            Level::Pml4 => Some(self.pml4),
            Level::Pdpt => Some(self.pdpt),
            Level::Pd => Some(self.pd),
            Level::Pt => None,
        }
    }

    /// Check the geometry; `key` is the dotted path for messages.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] naming the field.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_range(|| format!("{key}.hit_latency"), self.hit_latency.get(), 0, MAX_LATENCY)?;
        for (name, c) in
            [("pml5", self.pml5), ("pml4", self.pml4), ("pdpt", self.pdpt), ("pd", self.pd)]
        {
            check_pow2(|| format!("{key}.{name}.sets"), u64::from(c.sets))?;
            check_range(|| format!("{key}.{name}.sets"), c.sets, 1, MAX_TLB_SETS)?;
            let max = if self.replacement == Replacement::TreePlru {
                MAX_PLRU_WAYS
            } else {
                MAX_TLB_WAYS
            };
            check_range(|| format!("{key}.{name}.ways"), c.ways, 0, max)?;
        }
        Ok(())
    }
}

/// Per-level counters (index by [`Level::idx`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PwcStats {
    /// Walks that probed the caches.
    pub lookups: u64,
    /// Walks whose deepest hit was at each level (PML5E…PDE; the PT slot is unused).
    pub hits: [u64; 5],
    /// Entries created per level.
    pub fills: [u64; 5],
    /// Entries removed by invalidations per level.
    pub invalidations: [u64; 5],
}

#[derive(Clone, Copy, Debug, Default)]
struct PwcEntry {
    valid: bool,
    key: u64,
    tag: TlbTag,
    nroot: u64,
    table: u64,
    perms: Perms,
}

#[derive(Clone, Debug)]
struct PwcArray {
    sets: usize,
    ways: usize,
    entries: Vec<PwcEntry>,
    repl: ReplState,
}

/// One set of paging-structure caches (levels PML5E, PML4E, PDPTE, PDE).
#[derive(Clone, Debug)]
pub struct Pwc {
    /// Indexed by [`Level::idx`] (PML5 … PD); `None` until the first fill, so that a CPU that
    /// has walked nothing costs nothing to build or copy (until then every lookup misses, as
    /// in an allocated cache with no valid entry).
    levels: Option<Box<[Option<PwcArray>; 4]>>,
    /// What the first fill allocates: each level's (sets, ways), `None` for an absent level.
    shape: [Option<(usize, usize)>; 4],
    replacement: Replacement,
    /// The generator the levels' random replacement forks from (one stream per level).
    rng: Rng,
    /// Whether any level exists (fixed at construction).
    exists: bool,
    hit_latency: Cycles,
    stats: PwcStats,
}

/// The address bits that select entries at `level` and above (bits 56..shift, so a 4-level
/// and a 5-level walk of the same address never share entries wrongly: the key includes every
/// index above).
fn key_of(addr: u64, level: Level) -> u64 {
    (addr & ((1u64 << 57) - 1)) >> level.shift()
}

impl Pwc {
    /// Empty caches of geometry `cfg`; random replacement draws from `rng`.
    ///
    /// # Errors
    /// [`ConfigError`] if the geometry is invalid.
    pub fn new(cfg: &PwcConfig, key: &str, rng: &Rng) -> Result<Pwc, ConfigError> {
        cfg.validate(key)?;
        let shape_of = |l: Level| {
            cfg.level(l).filter(|c| c.ways > 0).map(|c| (c.sets as usize, c.ways as usize))
        };
        let shape = [Level::Pml5, Level::Pml4, Level::Pdpt, Level::Pd].map(shape_of);
        Ok(Pwc {
            levels: None,
            exists: shape.iter().any(Option::is_some),
            shape,
            replacement: cfg.replacement,
            rng: rng.clone(),
            hit_latency: cfg.hit_latency,
            stats: PwcStats::default(),
        })
    }

    /// Whether any level exists.
    #[inline]
    pub const fn exists(&self) -> bool {
        self.exists
    }

    /// Cycles a walk spends probing (0 when no level exists).
    #[inline]
    pub fn probe_latency(&self) -> Cycles {
        if self.exists() { self.hit_latency } else { Cycles::ZERO }
    }

    /// Counters.
    pub const fn stats(&self) -> &PwcStats {
        &self.stats
    }

    /// Valid entries per level (PML5E…PDE).
    pub fn occupancy(&self) -> [u64; 4] {
        let mut o = [0; 4];
        for (i, l) in self.levels.iter().flat_map(|l| l.iter()).enumerate() {
            if let Some(a) = l {
                o[i] = a.entries.iter().filter(|e| e.valid).count() as u64;
            }
        }
        o
    }

    #[inline]
    fn slot_range(a: &PwcArray, key: u64) -> (usize, std::ops::Range<usize>) {
        // sets is a power of two: the mask keeps the value below it.
        let set = usize::try_from(key & (a.sets as u64 - 1)).expect("below sets");
        (set, set * a.ways..(set + 1) * a.ways)
    }

    /// Where a walk of `addr` (from a table of depth whose root level is `top`) can start:
    /// below the deepest level that hits, with its table and rights.
    #[inline]
    pub fn lookup<P: PhysAddr>(
        &mut self,
        addr: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        top: Level,
    ) -> Option<WalkStart<P>> {
        if !self.exists {
            return None;
        }
        self.lookup_present(addr, tag, nested_root, top)
    }

    /// Allocate every level's entries and replacement state (once, at the first fill).
    #[cold]
    fn allocate(&mut self) -> &mut [Option<PwcArray>; 4] {
        let (replacement, rng) = (self.replacement, &self.rng);
        let mut i = 0;
        let levels = self.shape.map(|shape| {
            let array = shape.map(|(sets, ways)| PwcArray {
                sets,
                ways,
                entries: vec![PwcEntry::default(); sets * ways],
                repl: ReplState::new(replacement, sets, ways, rng.fork(i)),
            });
            i += 1;
            array
        });
        self.levels.insert(Box::new(levels))
    }

    /// [`Pwc::lookup`] when some level exists.
    fn lookup_present<P: PhysAddr>(
        &mut self,
        addr: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        top: Level,
    ) -> Option<WalkStart<P>> {
        self.stats.lookups += 1;
        let levels = self.levels.as_deref_mut()?;
        let nroot = nroot_key(nested_root);
        for level in [Level::Pd, Level::Pdpt, Level::Pml4, Level::Pml5] {
            // Levels above the root of this table's depth do not exist for it.
            if level < top {
                continue;
            }
            let Some(a) = levels[level.idx()].as_mut() else { continue };
            let key = key_of(addr, level);
            let (set, range) = Self::slot_range(a, key);
            let base = range.start;
            let found = a.entries[range].iter().position(|e| {
                e.valid
                    && e.key == key
                    && e.nroot == nroot
                    && e.tag.asid == tag.asid
                    && e.tag.pcid == tag.pcid
            });
            if let Some(w) = found {
                a.repl.touch(set, w);
                let e = a.entries[base + w];
                self.stats.hits[level.idx()] += 1;
                let next = level.next_lower().expect("cached levels are above PT");
                return Some(WalkStart {
                    level: next,
                    table: P::from_raw(e.table),
                    perms: e.perms,
                });
            }
        }
        None
    }

    /// Cache the non-leaf entry at `level` of a walk of `addr`: it points at `table`, with
    /// rights `perms` combined down to it.
    pub fn fill(
        &mut self,
        addr: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        level: Level,
        table: u64,
        perms: Perms,
    ) {
        if self.shape.get(level.idx()).is_none_or(Option::is_none) {
            return;
        }
        let levels = match self.levels.as_deref_mut() {
            Some(l) => l,
            None => self.allocate(),
        };
        let Some(a) = levels[level.idx()].as_mut() else { return };
        let key = key_of(addr, level);
        let nroot = nroot_key(nested_root);
        let (set, range) = Self::slot_range(a, key);
        let base = range.start;
        let ways = &a.entries[range];
        let w = ways
            .iter()
            .position(|e| e.valid && e.key == key && e.tag == tag && e.nroot == nroot)
            .or_else(|| ways.iter().position(|e| !e.valid))
            .unwrap_or_else(|| a.repl.victim(set));
        a.entries[base + w] = PwcEntry { valid: true, key, tag, nroot, table, perms };
        a.repl.touch(set, w);
        self.stats.fills[level.idx()] += 1;
    }

    /// Remove the entries of (`tag`, `nested_root`) that a walk of `addr` would use (after a
    /// fault on it: SDM Vol. 3A §4.10.4.1). Returns how many.
    pub fn remove_addr(&mut self, addr: u64, tag: TlbTag, nested_root: Option<Spa>) -> u64 {
        let Some(levels) = self.levels.as_deref_mut() else { return 0 };
        let nroot = nroot_key(nested_root);
        let mut n = 0;
        for level in [Level::Pml5, Level::Pml4, Level::Pdpt, Level::Pd] {
            let Some(a) = levels[level.idx()].as_mut() else { continue };
            let key = key_of(addr, level);
            let (_, range) = Self::slot_range(a, key);
            for e in &mut a.entries[range] {
                if e.valid && e.key == key && e.tag == tag && e.nroot == nroot {
                    e.valid = false;
                    self.stats.invalidations[level.idx()] += 1;
                    n += 1;
                }
            }
        }
        n
    }

    /// Remove every entry `pred` selects (given its tag and nested-root key). Returns how many.
    pub(crate) fn remove_where(&mut self, mut pred: impl FnMut(TlbTag, u64) -> bool) -> u64 {
        let mut n = 0;
        let Some(levels) = self.levels.as_deref_mut() else { return 0 };
        for (i, l) in levels.iter_mut().enumerate() {
            let Some(a) = l else { continue };
            for e in a.entries.iter_mut().filter(|e| e.valid) {
                if pred(e.tag, e.nroot) {
                    e.valid = false;
                    self.stats.invalidations[i] += 1;
                    n += 1;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pwc() -> Pwc {
        let cfg = PwcConfig {
            pml4: PwcLevelConfig::new(1, 2),
            pdpt: PwcLevelConfig::new(1, 4),
            pd: PwcLevelConfig::new(2, 2),
            ..PwcConfig::NONE
        };
        Pwc::new(&cfg, "pwc", &Rng::new(0)).unwrap()
    }

    const T: TlbTag = TlbTag::HOST;

    #[test]
    fn deepest_hit_wins_and_tags_match() {
        let mut p = pwc();
        let va = 0xffff_8880_1234_5000u64;
        assert_eq!(p.lookup::<Spa>(va, T, None, Level::Pml4), None);
        p.fill(va, T, None, Level::Pml4, 0x1000, Perms::ALL);
        p.fill(va, T, None, Level::Pdpt, 0x2000, Perms::ALL);
        let s = p.lookup::<Spa>(va, T, None, Level::Pml4).unwrap();
        assert_eq!((s.level, s.table), (Level::Pd, Spa::new(0x2000)));
        p.fill(va, T, None, Level::Pd, 0x3000, Perms::ALL);
        let s = p.lookup::<Spa>(va, T, None, Level::Pml4).unwrap();
        assert_eq!((s.level, s.table), (Level::Pt, Spa::new(0x3000)));
        // Another 2M region of the same 1G region: PDPTE hit only.
        let s = p.lookup::<Spa>(va + (2 << 20), T, None, Level::Pml4).unwrap();
        assert_eq!(s.level, Level::Pd);
        // Another PCID or nested root: nothing.
        assert!(p.lookup::<Spa>(va, TlbTag { asid: 0, pcid: 1 }, None, Level::Pml4).is_none());
        assert!(p.lookup::<Spa>(va, T, Some(Spa::new(0x9000)), Level::Pml4).is_none());
        assert_eq!(p.stats().hits[Level::Pd.idx()], 1);
        assert_eq!(p.stats().hits[Level::Pdpt.idx()], 2);
        assert_eq!(p.remove_where(|t, _| t == T), 3);
        assert_eq!(p.occupancy(), [0; 4]);
    }

    #[test]
    fn set_conflicts_evict_lru() {
        let mut p = pwc();
        // PDE cache: 2 sets × 2 ways, key = va >> 21; keys 0, 2, 4 share set 0.
        for k in [0u64, 2, 4] {
            p.fill(k << 21, T, None, Level::Pd, k << 12, Perms::ALL);
        }
        assert!(p.lookup::<Spa>(0, T, None, Level::Pml4).is_none(), "key 0 was LRU");
        assert!(p.lookup::<Spa>(2 << 21, T, None, Level::Pml4).is_some());
        assert!(p.lookup::<Spa>(4 << 21, T, None, Level::Pml4).is_some());
    }

    /// Storage comes with the first fill; before it every lookup misses and is counted, and
    /// invalidations find nothing, as in an allocated cache with no valid entry.
    #[test]
    fn storage_comes_with_the_first_fill() {
        let mut p = pwc();
        let va = 0xffff_8880_1234_5000u64;
        assert!(p.levels.is_none());
        assert!(p.lookup::<Spa>(va, T, None, Level::Pml4).is_none());
        assert_eq!(p.stats().lookups, 1);
        assert_eq!(p.remove_addr(va, T, None), 0);
        assert_eq!(p.remove_where(|_, _| true), 0);
        assert_eq!(p.occupancy(), [0; 4]);
        p.fill(va, T, None, Level::Pdpt, 0x7000, Perms::ALL);
        let levels = p.levels.as_deref().expect("allocated");
        assert!(levels.iter().flatten().all(|a| a.entries.len() == a.sets * a.ways));
        assert_eq!(levels.iter().flatten().count(), 3);
        let hit = p.lookup::<Spa>(va, T, None, Level::Pml4).expect("filled");
        assert_eq!((hit.level, hit.table), (Level::Pd, Spa::new(0x7000)));
        assert_eq!(p.stats().lookups, 2);
    }

    #[test]
    fn absent_levels_cost_nothing() {
        let mut p = Pwc::new(&PwcConfig::NONE, "pwc", &Rng::new(0)).unwrap();
        assert!(!p.exists());
        assert_eq!(p.probe_latency(), Cycles::ZERO);
        p.fill(0, T, None, Level::Pd, 0x1000, Perms::ALL);
        assert!(p.lookup::<Spa>(0, T, None, Level::Pml4).is_none());
    }
}
