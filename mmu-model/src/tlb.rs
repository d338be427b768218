//! One data-TLB level: set-associative arrays, each holding some page sizes, true LRU, entries
//! tagged by address space (Intel SDM Vol. 3A §4.10; AMD APM Vol. 2 §5.5).

use crate::addr::PagedAddr;
use crate::check::CheckCache;
use crate::inval::PendingInvalidation;
use crate::walk::Perms;
use sim_core::config::{ConfigError, check_pow2, check_range};
use sim_core::stats::PerSize;
use sim_core::{PageSize, Spa};
use std::ops::Sub;

/// The address-space tag of a TLB entry: the ASID (AMD) / VPID (Intel) of the VM, 0 for the
/// host, and the PCID inside it (Linux uses PCIDs for user/kernel page-table isolation and
/// per-mm contexts). Global entries match any PCID of their ASID.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct TlbTag {
    /// VM tag: 0 = host; an SNP/SEV guest's ASID or a VMX VPID otherwise.
    pub asid: u16,
    /// Process-context identifier (12 bits architecturally).
    pub pcid: u16,
}

impl TlbTag {
    /// The host with PCID 0.
    pub const HOST: TlbTag = TlbTag { asid: 0, pcid: 0 };
}

/// Geometry of one TLB array.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlbArrayConfig {
    /// Page sizes this array holds (each size in at most one array).
    pub sizes: Vec<PageSize>,
    /// Number of sets (a power of two; 1 = fully associative).
    pub sets: u32,
    /// Ways per set.
    pub ways: u32,
}

/// Geometry of one TLB level: its arrays. A page size held by no array is installed as the next
/// smaller size that has one ("smashing", as Zen's L2 DTLB does with 1 GiB pages,
/// spec/physmap.md H17).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlbConfig {
    /// The arrays, probed in order.
    pub arrays: Vec<TlbArrayConfig>,
}

/// Most ways accepted per set (a sanity bound on configuration).
pub const MAX_TLB_WAYS: u32 = 4096;
/// Most sets accepted per array.
pub const MAX_TLB_SETS: u32 = 1 << 20;

impl TlbConfig {
    /// Check the geometry; `key` is the dotted path of this config for messages.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] naming the field.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let bad = |k: String, v: String, why: &str| ConfigError::OutOfRange {
            key: k,
            value: v,
            why: why.to_owned(),
        };
        if self.arrays.is_empty() {
            return Err(bad(format!("{key}.arrays"), "[]".into(), "at least one array"));
        }
        let mut seen = [false; 3];
        for (i, a) in self.arrays.iter().enumerate() {
            let k = format!("{key}.arrays[{i}]");
            check_pow2(&format!("{k}.sets"), u64::from(a.sets))?;
            check_range(&format!("{k}.sets"), a.sets, 1, MAX_TLB_SETS)?;
            check_range(&format!("{k}.ways"), a.ways, 1, MAX_TLB_WAYS)?;
            if a.sizes.is_empty() {
                return Err(bad(format!("{k}.sizes"), "[]".into(), "at least one page size"));
            }
            for s in &a.sizes {
                if std::mem::replace(&mut seen[s.index()], true) {
                    return Err(bad(
                        format!("{k}.sizes"),
                        s.to_string(),
                        "size held by two arrays",
                    ));
                }
            }
        }
        if !seen[PageSize::K4.index()] {
            return Err(bad(format!("{key}.arrays"), "no 4K".into(), "some array must hold 4K"));
        }
        Ok(())
    }
}

/// Per-page-size counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlbSizeStats {
    /// Lookups that hit an entry of this size.
    pub hits: u64,
    /// Entries of this size installed.
    pub fills: u64,
    /// Valid entries of this size replaced by a fill.
    pub evictions: u64,
    /// Entries of this size removed by invalidations and flushes.
    pub invalidations: u64,
}

impl Sub for TlbSizeStats {
    type Output = TlbSizeStats;
    fn sub(self, o: Self) -> Self {
        TlbSizeStats {
            hits: self.hits - o.hits,
            fills: self.fills - o.fills,
            evictions: self.evictions - o.evictions,
            invalidations: self.invalidations - o.invalidations,
        }
    }
}

/// TLB counters. Misses have no size at lookup time: the walk that follows finds it
/// (`MmuStats::walks` counts misses by the size walked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TlbStats {
    /// Lookups.
    pub lookups: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// Counters by entry size.
    pub by_size: PerSize<TlbSizeStats>,
}

impl Sub for TlbStats {
    type Output = TlbStats;
    fn sub(self, o: Self) -> Self {
        TlbStats {
            lookups: self.lookups - o.lookups,
            misses: self.misses - o.misses,
            by_size: self.by_size - o.by_size,
        }
    }
}

/// What a fill installs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbFill {
    /// The frame of the translation (aligned to `size`).
    pub frame: Spa,
    /// The translation's size (the entry may be smaller: see [`TlbConfig`]).
    pub size: PageSize,
    /// Effective permissions.
    pub perms: Perms,
    /// G bit.
    pub global: bool,
    /// D bit of the leaf as of the fill (a write through a clean entry re-walks to set D).
    pub dirty: bool,
    /// What the entry keeps of the check stage's result.
    pub cache: CheckCache,
}

/// Where a hit entry lives, to update its check cache. Valid until the next fill, invalidation
/// or flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbSlot {
    array: usize,
    index: usize,
}

/// A TLB hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbHit {
    /// The translated address (frame plus offset).
    pub pa: Spa,
    /// The entry's size.
    pub size: PageSize,
    /// Cached permissions.
    pub perms: Perms,
    /// G bit.
    pub global: bool,
    /// Cached D bit.
    pub dirty: bool,
    /// Cached check result.
    pub cache: CheckCache,
    /// The entry, for [`Tlb::set_cache`].
    pub slot: TlbSlot,
}

/// Which entries a flush removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushScope {
    /// Everything, global entries and every ASID included (CR4.PGE toggle; a global flush on
    /// RMP update).
    All,
    /// Every entry of one ASID (VMCB TLB_CONTROL flush of a guest).
    Asid(u16),
    /// Non-global entries of one ASID and PCID (MOV CR3 without no-flush; INVPCID type 1).
    Context(TlbTag),
    /// Non-global entries of every PCID of one ASID (INVPCID type 3).
    AllNonGlobal(u16),
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    valid: bool,
    vpn: u64,
    size: PageSize,
    tag: TlbTag,
    global: bool,
    frame: Spa,
    perms: Perms,
    dirty: bool,
    cache: CheckCache,
    stamp: u64,
}

const INVALID: Entry = Entry {
    valid: false,
    vpn: 0,
    size: PageSize::K4,
    tag: TlbTag::HOST,
    global: false,
    frame: Spa::ZERO,
    perms: Perms { writable: false, user: false, executable: false },
    dirty: false,
    cache: CheckCache { write: crate::check::WriteCheck::Unchecked },
    stamp: 0,
};

impl Entry {
    fn matches(&self, va: u64, tag: TlbTag) -> bool {
        self.valid
            && self.vpn == va >> self.size.shift()
            && self.tag.asid == tag.asid
            && (self.global || self.tag.pcid == tag.pcid)
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        let lo = self.vpn << self.size.shift();
        let hi = lo + self.size.bytes();
        lo < end && start < hi
    }
}

#[derive(Clone, Debug)]
struct Array {
    holds: [bool; 3],
    sets: usize,
    ways: usize,
    entries: Vec<Entry>,
}

impl Array {
    fn set_of(&self, va: u64, size: PageSize) -> usize {
        // sets is a power of two that fits usize: the mask keeps the value below it.
        usize::try_from((va >> size.shift()) & (self.sets as u64 - 1)).expect("below sets")
    }
}

/// One TLB level. Deterministic: true LRU by a per-TLB access counter, ties impossible.
#[derive(Clone, Debug)]
pub struct Tlb {
    arrays: Vec<Array>,
    /// For each page size, the (array, size) an entry of that size is installed as.
    install: [(usize, PageSize); 3],
    clock: u64,
    stats: TlbStats,
}

impl Tlb {
    /// An empty TLB of the given geometry.
    ///
    /// # Errors
    /// [`ConfigError`] if the geometry is invalid (see [`TlbConfig::validate`]).
    pub fn new(cfg: &TlbConfig) -> Result<Tlb, ConfigError> {
        cfg.validate("tlb")?;
        let arrays: Vec<Array> = cfg
            .arrays
            .iter()
            .map(|a| {
                let mut holds = [false; 3];
                for s in &a.sizes {
                    holds[s.index()] = true;
                }
                let (sets, ways) = (a.sets as usize, a.ways as usize);
                Array { holds, sets, ways, entries: vec![INVALID; sets * ways] }
            })
            .collect();
        let find = |s: PageSize| arrays.iter().position(|a| a.holds[s.index()]);
        let mut install = [(0, PageSize::K4); 3];
        for s in PageSize::ALL {
            let mut t = s;
            install[s.index()] = loop {
                if let Some(a) = find(t) {
                    break (a, t);
                }
                t = t.next_smaller().expect("validated: 4K is held");
            };
        }
        Ok(Tlb { arrays, install, clock: 0, stats: TlbStats::default() })
    }

    /// Counters.
    pub const fn stats(&self) -> &TlbStats {
        &self.stats
    }

    /// Valid entries per size (what the TLB holds now).
    pub fn occupancy(&self) -> PerSize<u64> {
        let mut p = PerSize::default();
        for a in &self.arrays {
            for e in a.entries.iter().filter(|e| e.valid) {
                p[e.size] += 1;
            }
        }
        p
    }

    fn find(&self, va: u64, tag: TlbTag) -> Option<TlbSlot> {
        let mut best: Option<(PageSize, TlbSlot)> = None;
        for (ai, a) in self.arrays.iter().enumerate() {
            let mut probed = [usize::MAX; 3];
            for s in PageSize::ALL.into_iter().filter(|s| a.holds[s.index()]) {
                let set = a.set_of(va, s);
                if probed.contains(&set) {
                    continue;
                }
                probed[s.index()] = set;
                let base = set * a.ways;
                for (w, e) in a.entries[base..base + a.ways].iter().enumerate() {
                    if e.matches(va, tag) && best.is_none_or(|(bs, _)| e.size < bs) {
                        best = Some((e.size, TlbSlot { array: ai, index: base + w }));
                    }
                }
            }
        }
        best.map(|(_, slot)| slot)
    }

    fn hit_of(&self, slot: TlbSlot, va: u64) -> TlbHit {
        let e = &self.arrays[slot.array].entries[slot.index];
        TlbHit {
            pa: Spa::new_truncate(e.frame.raw() | (va & (e.size.bytes() - 1))),
            size: e.size,
            perms: e.perms,
            global: e.global,
            dirty: e.dirty,
            cache: e.cache,
            slot,
        }
    }

    /// Look `va` up for address space `tag`, updating LRU and counters. If entries of several
    /// sizes match (possible after a page-table change without a flush), the smallest wins.
    pub fn lookup<V: PagedAddr>(&mut self, va: V, tag: TlbTag) -> Option<TlbHit> {
        self.stats.lookups += 1;
        let va = va.raw();
        match self.find(va, tag) {
            Some(slot) => {
                self.clock += 1;
                let e = &mut self.arrays[slot.array].entries[slot.index];
                e.stamp = self.clock;
                self.stats.by_size[e.size].hits += 1;
                Some(self.hit_of(slot, va))
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// Look up without touching LRU state or counters (oracles, debugging).
    pub fn peek<V: PagedAddr>(&self, va: V, tag: TlbTag) -> Option<TlbHit> {
        let va = va.raw();
        self.find(va, tag).map(|slot| self.hit_of(slot, va))
    }

    /// Update the check cache of a hit entry.
    pub fn set_cache(&mut self, slot: TlbSlot, cache: CheckCache) {
        if let Some(e) = self.arrays.get_mut(slot.array).and_then(|a| a.entries.get_mut(slot.index))
        {
            e.cache = cache;
        }
    }

    /// Install the translation of `va`. An entry for the same page, size and tag is replaced in
    /// place; otherwise an invalid way, else the least recently used one. Returns the size
    /// installed (smaller than `fill.size` when that size has no array).
    pub fn fill<V: PagedAddr>(&mut self, va: V, tag: TlbTag, fill: &TlbFill) -> PageSize {
        let va = va.raw();
        let (ai, size) = self.install[fill.size.index()];
        let frame = Spa::new_truncate(
            fill.frame.raw() | (va & (fill.size.bytes() - 1) & !(size.bytes() - 1)),
        );
        self.clock += 1;
        let a = &mut self.arrays[ai];
        let base = a.set_of(va, size) * a.ways;
        let vpn = va >> size.shift();
        let ways = &mut a.entries[base..base + a.ways];
        let same = |e: &Entry| e.valid && e.vpn == vpn && e.size == size && e.tag == tag;
        let victim = ways
            .iter()
            .position(same)
            .or_else(|| ways.iter().position(|e| !e.valid))
            .unwrap_or_else(|| {
                let (w, _) =
                    ways.iter().enumerate().min_by_key(|(_, e)| e.stamp).expect("ways ≥ 1");
                w
            });
        let old = ways[victim];
        if old.valid && !same(&old) {
            self.stats.by_size[old.size].evictions += 1;
        }
        ways[victim] = Entry {
            valid: true,
            vpn,
            size,
            tag,
            global: fill.global,
            frame,
            perms: fill.perms,
            dirty: fill.dirty,
            cache: fill.cache,
            stamp: self.clock,
        };
        self.stats.by_size[size].fills += 1;
        size
    }

    fn remove_where(&mut self, mut pred: impl FnMut(&Entry) -> bool) -> u64 {
        let mut n = 0;
        for a in &mut self.arrays {
            for e in a.entries.iter_mut().filter(|e| e.valid) {
                if pred(e) {
                    e.valid = false;
                    self.stats.by_size[e.size].invalidations += 1;
                    n += 1;
                }
            }
        }
        n
    }

    /// Remove every entry, of any tag and size, whose translation reaches a physical byte of
    /// `[start, start + bytes)`: what hardware that keeps RMP-derived TLB state coherent must
    /// drop after an RMP update of those pages (rmp-model `TlbOnRmpUpdate::Coherent`; the
    /// mechanism is UNCONFIRMED, spec/snp.md §3.2). Returns how many were removed.
    pub fn invalidate_phys(&mut self, start: Spa, bytes: u64) -> u64 {
        let s = start.raw();
        let e = s.saturating_add(bytes);
        self.remove_where(|x| {
            let f = x.frame.raw();
            f < e && s < f.saturating_add(x.size.bytes())
        })
    }

    /// INVLPG: remove every entry, of any size, that translates `va` for `tag` (global entries
    /// of the ASID included). Returns how many were removed.
    pub fn invalidate_page<V: PagedAddr>(&mut self, va: V, tag: TlbTag) -> u64 {
        self.invalidate_range(va, 1, tag)
    }

    /// INVLPG over `[start, start + bytes)`: every entry overlapping the range for `tag`
    /// (global entries of the ASID included).
    pub fn invalidate_range<V: PagedAddr>(&mut self, start: V, bytes: u64, tag: TlbTag) -> u64 {
        let s = start.raw();
        let e = s.saturating_add(bytes);
        self.remove_where(|x| {
            x.tag.asid == tag.asid && (x.global || x.tag.pcid == tag.pcid) && x.overlaps(s, e)
        })
    }

    /// Apply a page-table change's token for address space `tag`: INVLPG over each stale
    /// range. (Freed tables matter to paging-structure caches, which this level does not
    /// model.) Returns how many entries were removed.
    pub fn invalidate<V: PagedAddr>(&mut self, inv: &PendingInvalidation<V>, tag: TlbTag) -> u64 {
        inv.ranges().iter().map(|r| self.invalidate_range(r.start, r.bytes, tag)).sum()
    }

    /// Flush a whole scope. Returns how many entries were removed.
    pub fn flush(&mut self, scope: FlushScope) -> u64 {
        match scope {
            FlushScope::All => self.remove_where(|_| true),
            FlushScope::Asid(asid) => self.remove_where(|e| e.tag.asid == asid),
            FlushScope::Context(tag) => self.remove_where(|e| e.tag == tag && !e.global),
            FlushScope::AllNonGlobal(asid) => {
                self.remove_where(|e| e.tag.asid == asid && !e.global)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::WriteCheck;
    use sim_core::Hva;

    fn fa(ways: u32) -> TlbConfig {
        TlbConfig { arrays: vec![TlbArrayConfig { sizes: PageSize::ALL.to_vec(), sets: 1, ways }] }
    }

    fn split(sets: u32, ways: u32) -> TlbConfig {
        TlbConfig {
            arrays: vec![
                TlbArrayConfig { sizes: vec![PageSize::K4], sets, ways },
                TlbArrayConfig { sizes: vec![PageSize::M2], sets, ways },
            ],
        }
    }

    fn fill(frame: u64, size: PageSize, global: bool) -> TlbFill {
        TlbFill {
            frame: Spa::new(frame),
            size,
            perms: Perms { writable: true, user: false, executable: false },
            global,
            dirty: true,
            cache: CheckCache::default(),
        }
    }

    const T: TlbTag = TlbTag::HOST;

    #[test]
    fn hit_miss_lru() {
        let mut t = Tlb::new(&fa(2)).unwrap();
        assert!(t.lookup(Hva::new(0x1000), T).is_none());
        t.fill(Hva::new(0x1000), T, &fill(0xa000, PageSize::K4, false));
        t.fill(Hva::new(0x2000), T, &fill(0xb000, PageSize::K4, false));
        assert_eq!(t.lookup(Hva::new(0x1abc), T).unwrap().pa, Spa::new(0xaabc));
        // 0x2000 is now LRU and gets evicted.
        t.fill(Hva::new(0x3000), T, &fill(0xc000, PageSize::K4, false));
        assert!(t.peek(Hva::new(0x2000), T).is_none());
        assert!(t.peek(Hva::new(0x1000), T).is_some());
        let s = t.stats();
        assert_eq!((s.lookups, s.misses), (2, 1));
        assert_eq!(s.by_size[PageSize::K4].evictions, 1);
        assert_eq!(s.by_size[PageSize::K4].fills, 3);
        assert_eq!(t.occupancy(), PerSize([2, 0, 0]));
    }

    #[test]
    fn sizes_and_sets() {
        let mut t = Tlb::new(&split(4, 1)).unwrap();
        t.fill(Hva::new(0x20_0000), T, &fill(0x4000_0000, PageSize::M2, false));
        let h = t.lookup(Hva::new(0x21_2345), T).unwrap();
        assert_eq!((h.pa, h.size), (Spa::new(0x4001_2345), PageSize::M2));
        // 1G has no array: installed as the 2M piece containing the address.
        let got = t.fill(Hva::new(0x4060_0000), T, &fill(0x8000_0000, PageSize::G1, false));
        assert_eq!(got, PageSize::M2);
        assert_eq!(t.lookup(Hva::new(0x4061_0000), T).unwrap().pa, Spa::new(0x8061_0000));
        assert!(t.lookup(Hva::new(0x4080_0000), T).is_none());
        // Set conflict in a direct-mapped 4K array: 0x1000 and 0x5000 share set 1.
        t.fill(Hva::new(0x1000), T, &fill(0x1000, PageSize::K4, false));
        t.fill(Hva::new(0x5000), T, &fill(0x5000, PageSize::K4, false));
        assert!(t.peek(Hva::new(0x1000), T).is_none());
        assert!(t.peek(Hva::new(0x2000), T).is_none());
    }

    /// Physical invalidation drops exactly the entries reaching the range, whatever their
    /// tag: a 2M entry containing the page, not a 4K entry of a neighbour page.
    #[test]
    fn invalidate_phys_is_exact() {
        let mut t = Tlb::new(&fa(8)).unwrap();
        let guest = TlbTag { asid: 5, pcid: 0 };
        t.fill(Hva::new(0x20_0000), T, &fill(0x4000_0000, PageSize::M2, false));
        t.fill(Hva::new(0x1000), T, &fill(0x4020_0000, PageSize::K4, false));
        t.fill(Hva::new(0x2000), guest, &fill(0x4000_5000, PageSize::K4, false));
        // Page 0x4001_0000 lies in the 2M entry only.
        assert_eq!(t.invalidate_phys(Spa::new(0x4001_0000), 4096), 1);
        assert!(t.peek(Hva::new(0x20_0000), T).is_none());
        assert!(t.peek(Hva::new(0x1000), T).is_some());
        assert!(t.peek(Hva::new(0x2000), guest).is_some());
        // The guest's 4K page, by another tag.
        assert_eq!(t.invalidate_phys(Spa::new(0x4000_5000), 4096), 1);
        assert_eq!(t.invalidate_phys(Spa::new(0x4000_5000), 4096), 0);
    }

    #[test]
    fn tags_globals_and_invlpg() {
        let mut t = Tlb::new(&fa(8)).unwrap();
        let p1 = TlbTag { asid: 0, pcid: 1 };
        let guest = TlbTag { asid: 5, pcid: 0 };
        t.fill(Hva::new(0x1000), T, &fill(0x1000, PageSize::K4, false));
        t.fill(Hva::new(0x20_0000), T, &fill(0x20_0000, PageSize::M2, true));
        t.fill(Hva::new(0x1000), guest, &fill(0x9000, PageSize::K4, false));
        assert!(t.peek(Hva::new(0x1000), p1).is_none());
        assert!(t.peek(Hva::new(0x20_1000), p1).is_some(), "global matches any PCID");
        assert!(t.peek(Hva::new(0x20_1000), guest).is_none(), "but not another ASID");
        assert_eq!(t.flush(FlushScope::Context(T)), 1);
        assert!(t.peek(Hva::new(0x20_1000), T).is_some());
        // INVLPG of one 4K address inside the 2M entry removes it (all sizes covering).
        assert_eq!(t.invalidate_page(Hva::new(0x20_3000), p1), 1);
        assert_eq!(t.flush(FlushScope::Asid(5)), 1);
        assert_eq!(t.occupancy(), PerSize([0, 0, 0]));
        assert_eq!(t.stats().by_size[PageSize::M2].invalidations, 1);
    }

    #[test]
    fn refill_replaces_in_place_and_cache_updates() {
        let mut t = Tlb::new(&fa(4)).unwrap();
        t.fill(Hva::new(0x1000), T, &fill(0x1000, PageSize::K4, false));
        let h = t.lookup(Hva::new(0x1000), T).unwrap();
        assert_eq!(h.cache.write, WriteCheck::Unchecked);
        t.set_cache(h.slot, CheckCache { write: WriteCheck::Allowed });
        assert_eq!(t.peek(Hva::new(0x1000), T).unwrap().cache.write, WriteCheck::Allowed);
        t.fill(Hva::new(0x1000), T, &fill(0x7000, PageSize::K4, false));
        assert_eq!(t.occupancy(), PerSize([1, 0, 0]));
        assert_eq!(t.peek(Hva::new(0x1000), T).unwrap().pa, Spa::new(0x7000));
        assert_eq!(t.stats().by_size[PageSize::K4].evictions, 0);
    }

    #[test]
    fn bad_geometry() {
        assert!(Tlb::new(&TlbConfig { arrays: vec![] }).is_err());
        let no4k = TlbConfig {
            arrays: vec![TlbArrayConfig { sizes: vec![PageSize::M2], sets: 1, ways: 1 }],
        };
        assert!(Tlb::new(&no4k).is_err());
        let dup = TlbConfig {
            arrays: vec![
                TlbArrayConfig { sizes: vec![PageSize::K4], sets: 1, ways: 1 },
                TlbArrayConfig { sizes: vec![PageSize::K4], sets: 1, ways: 1 },
            ],
        };
        assert!(Tlb::new(&dup).is_err());
        assert!(Tlb::new(&split(3, 1)).is_err());
    }
}
