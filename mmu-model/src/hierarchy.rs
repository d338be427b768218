//! A CPU's TLB hierarchy: L1 instruction, data and (where the CPU has one) store TLBs, an
//! optional L2 instruction TLB, and the L2 (second-level, "STLB") TLB.
//!
//! A lookup goes to the L1 chosen by the access kind — fetch → ITLB, load → DTLB, store → the
//! store DTLB if present, else the DTLB — then to the L2 behind it (fetches: the L2 ITLB if
//! present, else the STLB; data: the STLB). Each level probed adds its hit latency.
//!
//! Inclusion ([`Inclusion`]):
//! - **non-inclusive, non-exclusive** (default; what ChampSim does): a walk fills the L2 and
//!   the L1; an L2 hit copies the entry into the L1; each level evicts on its own, with no
//!   back-invalidation.
//! - **exclusive**: a walk fills the L1 only; an L1 victim moves to the L2; an L2 hit moves the
//!   entry up to the L1.
//!
//! Refills restore the translation's original size: a 1 GiB page smashed to a 2 MiB entry in
//! an L2 that holds no 1 GiB entries is installed as 1 GiB again in an L1 that does (WikiChip,
//! Zen 2 memory subsystem: "1-Gbyte pages are smashed into 2-Mbyte entries but installed as
//! 1-Gbyte entries when reloaded into the L1 TLB").

use crate::addr::PagedAddr;
use crate::check::CheckCache;
use crate::inval::PendingInvalidation;
use crate::tlb::{FlushScope, Tlb, TlbConfig, TlbFill, TlbHit, TlbSlot, TlbStats, TlbTag};
use crate::walk::AccessKind;
use serde::{Deserialize, Serialize};
use sim_core::config::ConfigError;
use sim_core::stats::PerSize;
use sim_core::{Cycles, PageSize, Rng, Spa};

/// How the L1 and L2 TLBs share entries.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Inclusion {
    /// Walks fill both levels; L2 hits copy into L1; no back-invalidation.
    #[default]
    NonInclusive,
    /// Walks fill L1; L1 victims move to L2; L2 hits move to L1.
    Exclusive,
}

/// A level of the hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TlbLevelId {
    /// L1 instruction TLB.
    Itlb,
    /// L1 data TLB (loads; also stores when there is no store DTLB).
    Dtlb,
    /// L1 store-only data TLB (Intel SPR/EMR/GNR: 16 entries, all page sizes).
    StoreDtlb,
    /// L2 instruction TLB (AMD Zen).
    L2Itlb,
    /// L2 TLB: unified STLB (Intel) or L2 DTLB (AMD).
    Stlb,
}

impl TlbLevelId {
    /// Every level.
    pub const ALL: [TlbLevelId; 5] = [
        TlbLevelId::Itlb,
        TlbLevelId::Dtlb,
        TlbLevelId::StoreDtlb,
        TlbLevelId::L2Itlb,
        TlbLevelId::Stlb,
    ];

    /// Whether the level is a first-level TLB.
    pub const fn is_l1(self) -> bool {
        match self {
            TlbLevelId::Itlb | TlbLevelId::Dtlb | TlbLevelId::StoreDtlb => true,
            TlbLevelId::L2Itlb | TlbLevelId::Stlb => false,
        }
    }
}

/// The result of a hierarchy lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbLookup {
    /// The hit, with its L1 slot (an L2 hit has been refilled into the L1).
    pub hit: Option<TlbHit>,
    /// The level that hit.
    pub level: Option<TlbLevelId>,
    /// Cycles of the levels probed.
    pub latency: Cycles,
    /// A miss the L1's filters settled: no L1 entry of any size translates the address, so a
    /// fill of it into the L1 right after, nothing changed in between, need not search
    /// ([`TlbHierarchy::fill_after_lookup`]).
    pub l1_absent: bool,
}

/// The TLB levels of one CPU.
#[derive(Debug)]
pub struct TlbHierarchy {
    itlb: Option<Tlb>,
    dtlb: Tlb,
    store: Option<Tlb>,
    l2_itlb: Option<Tlb>,
    stlb: Option<Tlb>,
    inclusion: Inclusion,
}

sim_core::clone_by_fields!(TlbHierarchy { itlb, dtlb, store, l2_itlb, stlb, inclusion });

/// The geometries of a hierarchy (borrowed from [`crate::MmuConfig`]).
#[derive(Clone, Copy, Debug)]
pub struct HierarchyGeometry<'a> {
    /// L1 ITLB, or `None`: fetches use the DTLB.
    pub itlb: Option<&'a TlbConfig>,
    /// L1 DTLB.
    pub dtlb: &'a TlbConfig,
    /// Store DTLB, or `None`: stores use the DTLB.
    pub store_dtlb: Option<&'a TlbConfig>,
    /// L2 ITLB, or `None`: fetches missing the ITLB go to the STLB.
    pub l2_itlb: Option<&'a TlbConfig>,
    /// STLB / L2 DTLB, or `None`.
    pub stlb: Option<&'a TlbConfig>,
    /// Inclusion policy.
    pub inclusion: Inclusion,
}

impl TlbHierarchy {
    /// An empty hierarchy; random replacement draws from streams forked from `rng`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the level whose geometry is invalid.
    pub fn new(g: &HierarchyGeometry<'_>, rng: &Rng) -> Result<TlbHierarchy, ConfigError> {
        let mk = |c: &TlbConfig, key: &str, stream: u64| {
            c.validate(key)?;
            Tlb::with_rng(c, &rng.fork(stream))
        };
        Ok(TlbHierarchy {
            itlb: g.itlb.map(|c| mk(c, "mmu.itlb", 1)).transpose()?,
            dtlb: mk(g.dtlb, "mmu.dtlb", 2)?,
            store: g.store_dtlb.map(|c| mk(c, "mmu.store_dtlb", 3)).transpose()?,
            l2_itlb: g.l2_itlb.map(|c| mk(c, "mmu.l2_itlb", 4)).transpose()?,
            stlb: g.stlb.map(|c| mk(c, "mmu.stlb", 5)).transpose()?,
            inclusion: g.inclusion,
        })
    }

    /// A hierarchy of one DTLB level (every access kind uses it).
    ///
    /// # Errors
    /// [`ConfigError`] if the geometry is invalid.
    pub fn single(dtlb: &TlbConfig) -> Result<TlbHierarchy, ConfigError> {
        let g = HierarchyGeometry {
            itlb: None,
            dtlb,
            store_dtlb: None,
            l2_itlb: None,
            stlb: None,
            inclusion: Inclusion::NonInclusive,
        };
        TlbHierarchy::new(&g, &Rng::new(0))
    }

    /// A level, if the CPU has it.
    pub fn level(&self, id: TlbLevelId) -> Option<&Tlb> {
        match id {
            TlbLevelId::Itlb => self.itlb.as_ref(),
            TlbLevelId::Dtlb => Some(&self.dtlb),
            TlbLevelId::StoreDtlb => self.store.as_ref(),
            TlbLevelId::L2Itlb => self.l2_itlb.as_ref(),
            TlbLevelId::Stlb => self.stlb.as_ref(),
        }
    }

    /// The inclusion policy.
    pub const fn inclusion(&self) -> Inclusion {
        self.inclusion
    }

    /// The L1 an access of `kind` looks up first.
    #[inline]
    pub fn l1_for(&self, kind: AccessKind) -> TlbLevelId {
        match kind {
            AccessKind::Fetch if self.itlb.is_some() => TlbLevelId::Itlb,
            AccessKind::Write if self.store.is_some() => TlbLevelId::StoreDtlb,
            AccessKind::Fetch | AccessKind::Read | AccessKind::Write => TlbLevelId::Dtlb,
        }
    }

    /// The L1 an access of `kind` looks up first, and which level it is.
    #[inline(always)]
    pub(crate) fn l1_mut(&mut self, kind: AccessKind) -> (&mut Tlb, TlbLevelId) {
        match kind {
            AccessKind::Read => (&mut self.dtlb, TlbLevelId::Dtlb),
            AccessKind::Write => match self.store.as_mut() {
                Some(t) => (t, TlbLevelId::StoreDtlb),
                None => (&mut self.dtlb, TlbLevelId::Dtlb),
            },
            AccessKind::Fetch => match self.itlb.as_mut() {
                Some(t) => (t, TlbLevelId::Itlb),
                None => (&mut self.dtlb, TlbLevelId::Dtlb),
            },
        }
    }

    /// The L2 behind the L1 of `kind`, if any.
    #[inline]
    pub fn l2_for(&self, kind: AccessKind) -> Option<TlbLevelId> {
        match kind {
            AccessKind::Fetch if self.itlb.is_some() && self.l2_itlb.is_some() => {
                Some(TlbLevelId::L2Itlb)
            }
            AccessKind::Fetch | AccessKind::Read | AccessKind::Write => {
                self.stlb.is_some().then_some(TlbLevelId::Stlb)
            }
        }
    }

    #[inline]
    fn get_mut(&mut self, id: TlbLevelId) -> &mut Tlb {
        match id {
            TlbLevelId::Itlb => self.itlb.as_mut(),
            TlbLevelId::Dtlb => Some(&mut self.dtlb),
            TlbLevelId::StoreDtlb => self.store.as_mut(),
            TlbLevelId::L2Itlb => self.l2_itlb.as_mut(),
            TlbLevelId::Stlb => self.stlb.as_mut(),
        }
        .expect("only levels the hierarchy has are named")
    }

    fn levels_mut(&mut self) -> impl Iterator<Item = &mut Tlb> {
        [
            self.itlb.as_mut(),
            Some(&mut self.dtlb),
            self.store.as_mut(),
            self.l2_itlb.as_mut(),
            self.stlb.as_mut(),
        ]
        .into_iter()
        .flatten()
    }

    fn levels(&self) -> impl Iterator<Item = &Tlb> {
        [
            self.itlb.as_ref(),
            Some(&self.dtlb),
            self.store.as_ref(),
            self.l2_itlb.as_ref(),
            self.stlb.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    /// Look `va` up for an access of `kind` in address space (`tag`, `nested_root`): the L1,
    /// then the L2 behind it. An L2 hit is refilled into the L1 per the inclusion policy.
    #[inline(always)]
    pub fn lookup(
        &mut self,
        va: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        kind: AccessKind,
    ) -> TlbLookup {
        let (t1, l1) = self.l1_mut(kind);
        let latency = t1.hit_latency();
        let (hit, l1_absent) = t1.lookup_in_inline(va, tag, nested_root);
        if let Some(hit) = hit {
            return TlbLookup { hit: Some(hit), level: Some(l1), latency, l1_absent };
        }
        let Some(l2) = self.l2_for(kind) else {
            return TlbLookup { hit: None, level: None, latency, l1_absent };
        };
        self.lookup_l2(va, tag, nested_root, (l1, l1_absent), l2, latency)
    }

    /// [`TlbHierarchy::lookup`] past an L1 miss, when there is an L2 (`latency`: the L1's).
    #[inline(never)]
    fn lookup_l2(
        &mut self,
        va: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        (l1, l1_absent): (TlbLevelId, bool),
        l2: TlbLevelId,
        mut latency: Cycles,
    ) -> TlbLookup {
        let inclusion = self.inclusion;
        let t2 = self.get_mut(l2);
        latency += t2.hit_latency();
        let Some(h2) = t2.lookup_in(va, tag, nested_root) else {
            // The L2 is another TLB: the L1 is as its lookup left it.
            return TlbLookup { hit: None, level: None, latency, l1_absent };
        };
        let entry = match inclusion {
            Inclusion::NonInclusive => t2.entry(h2.slot),
            Inclusion::Exclusive => t2.take(h2.slot),
        };
        let (etag, eroot) = entry.context();
        let r = self.get_mut(l1).fill_in::<false, false>(va, etag, eroot, &entry.as_fill(va));
        if let (Inclusion::Exclusive, Some(v)) = (self.inclusion, r.victim) {
            let (vt, vr) = v.context();
            self.get_mut(l2).fill_in::<false, false>(v.va(), vt, vr, &v.as_fill(v.va()));
        }
        let hit = self.get_mut(l1).peek_in(va, tag, nested_root);
        debug_assert!(hit.is_some(), "just refilled");
        TlbLookup { hit, level: Some(l2), latency, l1_absent: false }
    }

    /// Install a walked translation for an access of `kind`, per the inclusion policy. Returns
    /// the size installed in the L1.
    #[inline(always)]
    pub fn fill(
        &mut self,
        va: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        kind: AccessKind,
        fill: &TlbFill,
    ) -> PageSize {
        self.fill_known::<false, false>(va, tag, nested_root, kind, fill)
    }

    /// [`TlbHierarchy::fill`] right after the lookup of `va` for `kind` that returned
    /// `l1_absent`, nothing having changed since. When it is set, the L1's search for an entry
    /// to replace is skipped and, with `REMEMBER`, the L1's memo answers the next lookup of
    /// `va`'s page without a search (see `Tlb::fill_in_size_inline`): for translations likely
    /// to be used again at once (a guest's accesses run through a page).
    #[inline(always)]
    pub fn fill_after_lookup<const REMEMBER: bool>(
        &mut self,
        l1_absent: bool,
        va: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        kind: AccessKind,
        fill: &TlbFill,
    ) -> PageSize {
        if l1_absent {
            self.fill_known::<true, REMEMBER>(va, tag, nested_root, kind, fill)
        } else {
            self.fill_known::<false, false>(va, tag, nested_root, kind, fill)
        }
    }

    /// [`TlbHierarchy::fill`] (`L1_ABSENT`, `REMEMBER`: see
    /// [`TlbHierarchy::fill_after_lookup`]).
    #[inline(always)]
    fn fill_known<const L1_ABSENT: bool, const REMEMBER: bool>(
        &mut self,
        va: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        kind: AccessKind,
        fill: &TlbFill,
    ) -> PageSize {
        if self.stlb.is_none() && self.l2_itlb.is_none() {
            // No L2: the L1 alone (either inclusion policy: an exclusive fill's victim has
            // nowhere to go), inlined.
            let l1 = self.l1_mut(kind).0;
            return l1.fill_in_size_inline::<L1_ABSENT, REMEMBER>(va, tag, nested_root, fill);
        }
        self.fill_with_l2::<L1_ABSENT, REMEMBER>(va, tag, nested_root, kind, fill)
    }

    /// [`TlbHierarchy::fill`] with an L2.
    #[inline(never)]
    fn fill_with_l2<const L1_ABSENT: bool, const REMEMBER: bool>(
        &mut self,
        va: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        kind: AccessKind,
        fill: &TlbFill,
    ) -> PageSize {
        let l2 = self.l2_for(kind);
        match self.inclusion {
            Inclusion::NonInclusive => {
                // The L2 is another TLB: filling it first leaves the L1 as its lookup found it.
                if let Some(l2) = l2 {
                    self.get_mut(l2).fill_in_size::<false, false>(va, tag, nested_root, fill);
                }
                self.l1_mut(kind).0.fill_in_size::<L1_ABSENT, REMEMBER>(va, tag, nested_root, fill)
            }
            Inclusion::Exclusive => {
                let r =
                    self.l1_mut(kind).0.fill_in::<L1_ABSENT, REMEMBER>(va, tag, nested_root, fill);
                if let (Some(l2), Some(v)) = (l2, r.victim) {
                    let (vt, vr) = v.context();
                    self.get_mut(l2).fill_in::<false, false>(v.va(), vt, vr, &v.as_fill(v.va()));
                }
                r.installed
            }
        }
    }

    /// Update the check cache of the L1 entry an access of `kind` hit.
    pub fn set_cache(&mut self, kind: AccessKind, slot: TlbSlot, cache: CheckCache) {
        let l1 = self.l1_for(kind);
        self.get_mut(l1).set_cache(slot, cache);
    }

    /// Counters of one level.
    pub fn level_stats(&self, id: TlbLevelId) -> Option<&TlbStats> {
        self.level(id).map(Tlb::stats)
    }

    /// Counters summed over the levels: `lookups` and `misses` are the L1s' (an L2 hit is an
    /// L1 miss); `by_size` sums every level (an access that hits the L2 counts one L2 hit).
    pub fn stats(&self) -> TlbStats {
        let mut s = TlbStats::default();
        for id in TlbLevelId::ALL {
            let Some(t) = self.level(id) else { continue };
            let ts = t.stats();
            if id.is_l1() {
                s.lookups += ts.lookups;
                s.misses += ts.misses;
            }
            for size in PageSize::ALL {
                s.by_size[size] += ts.by_size[size];
            }
        }
        s
    }

    /// Valid entries per size, summed over the levels.
    pub fn occupancy(&self) -> PerSize<u64> {
        let mut p = PerSize::default();
        for t in self.levels() {
            let o = t.occupancy();
            for s in PageSize::ALL {
                p[s] += o[s];
            }
        }
        p
    }

    /// Whether any level holds a translation of `va` for host address space `tag` (no state
    /// change).
    pub fn peek<V: PagedAddr>(&self, va: V, tag: TlbTag) -> Option<TlbHit> {
        self.peek_in(va.raw(), tag, None)
    }

    /// [`TlbHierarchy::peek`] in an address space that may be nested (L1s first).
    pub fn peek_in(&self, va: u64, tag: TlbTag, nested_root: Option<Spa>) -> Option<TlbHit> {
        self.levels().find_map(|t| t.peek_in(va, tag, nested_root))
    }

    /// [`Tlb::invalidate_phys`] on every level.
    pub fn invalidate_phys(&mut self, start: Spa, bytes: u64) -> u64 {
        self.levels_mut().map(|t| t.invalidate_phys(start, bytes)).sum()
    }

    /// [`Tlb::invalidate_page`] on every level.
    pub fn invalidate_page<V: PagedAddr>(&mut self, va: V, tag: TlbTag) -> u64 {
        self.levels_mut().map(|t| t.invalidate_page(va, tag)).sum()
    }

    /// [`Tlb::invalidate_range`] on every level.
    pub fn invalidate_range<V: PagedAddr>(&mut self, start: V, bytes: u64, tag: TlbTag) -> u64 {
        self.levels_mut().map(|t| t.invalidate_range(start, bytes, tag)).sum()
    }

    pub(crate) fn invalidate_range_raw(&mut self, start: u64, bytes: u64, tag: TlbTag) -> u64 {
        self.levels_mut().map(|t| t.invalidate_range_raw(start, bytes, tag)).sum()
    }

    /// [`Tlb::invalidate`] on every level (TLB entries only; [`crate::Mmu::invalidate`] also
    /// reaches the paging-structure caches).
    pub fn invalidate<V: PagedAddr>(&mut self, inv: &PendingInvalidation<V>, tag: TlbTag) -> u64 {
        self.levels_mut().map(|t| t.invalidate(inv, tag)).sum()
    }

    /// Remove, at every level, the entries for which `pred(tag, global, start, end)` holds.
    pub(crate) fn remove_where(&mut self, pred: &impl Fn(TlbTag, bool, u64, u64) -> bool) -> u64 {
        self.levels_mut().map(|t| t.remove_matching(pred)).sum()
    }

    /// Empty one level (tests and experiments: e.g. to force L2 hits).
    pub fn flush_level(&mut self, id: TlbLevelId) -> u64 {
        if self.level(id).is_some() { self.get_mut(id).flush(FlushScope::All) } else { 0 }
    }

    /// [`Tlb::flush`] on every level.
    pub fn flush(&mut self, scope: FlushScope) -> u64 {
        self.levels_mut().map(|t| t.flush(scope)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlb::TlbArrayConfig;
    use crate::walk::Perms;

    const T: TlbTag = TlbTag::HOST;

    fn fill(frame: u64, size: PageSize) -> TlbFill {
        TlbFill {
            frame: Spa::new(frame),
            size,
            perms: Perms::ALL,
            nested_perms: Perms::ALL,
            global: false,
            dirty: true,
            cache: CheckCache::default(),
        }
    }

    fn fa(sizes: &[PageSize], n: u32, lat: u64) -> TlbConfig {
        TlbConfig::new(vec![TlbArrayConfig::fully_assoc(sizes, n)], lat)
    }

    fn h(inclusion: Inclusion, store: bool) -> TlbHierarchy {
        let all = PageSize::ALL;
        let (itlb, dtlb, sdtlb, stlb) = (
            fa(&all, 2, 1),
            fa(&all, 2, 1),
            fa(&all, 2, 1),
            fa(&[PageSize::K4, PageSize::M2], 8, 7),
        );
        let g = HierarchyGeometry {
            itlb: Some(&itlb),
            dtlb: &dtlb,
            store_dtlb: store.then_some(&sdtlb),
            l2_itlb: None,
            stlb: Some(&stlb),
            inclusion,
        };
        TlbHierarchy::new(&g, &Rng::new(0)).unwrap()
    }

    fn look(t: &mut TlbHierarchy, va: u64, kind: AccessKind) -> TlbLookup {
        t.lookup(va, T, None, kind)
    }

    #[test]
    fn routing_by_access_kind() {
        let mut t = h(Inclusion::NonInclusive, true);
        assert_eq!(t.l1_for(AccessKind::Fetch), TlbLevelId::Itlb);
        assert_eq!(t.l1_for(AccessKind::Read), TlbLevelId::Dtlb);
        assert_eq!(t.l1_for(AccessKind::Write), TlbLevelId::StoreDtlb);
        assert_eq!(t.l2_for(AccessKind::Fetch), Some(TlbLevelId::Stlb));
        t.fill(0x1000, T, None, AccessKind::Write, &fill(0xa000, PageSize::K4));
        // The store fill went to the store DTLB and the STLB, not the load DTLB.
        assert_eq!(t.level(TlbLevelId::StoreDtlb).unwrap().occupancy().total(), 1);
        assert_eq!(t.level(TlbLevelId::Dtlb).unwrap().occupancy().total(), 0);
        assert_eq!(t.level(TlbLevelId::Stlb).unwrap().occupancy().total(), 1);
        // A load misses the DTLB, hits the STLB (1 + 7 cycles) and is copied up.
        let l = look(&mut t, 0x1234, AccessKind::Read);
        assert_eq!((l.level, l.latency), (Some(TlbLevelId::Stlb), Cycles::new(8)));
        assert_eq!(l.hit.unwrap().pa, Spa::new(0xa234));
        let l = look(&mut t, 0x1234, AccessKind::Read);
        assert_eq!((l.level, l.latency), (Some(TlbLevelId::Dtlb), Cycles::new(1)));
        // A miss everywhere costs both lookups.
        let l = look(&mut t, 0x9000, AccessKind::Fetch);
        assert_eq!((l.hit, l.latency), (None, Cycles::new(8)));
        let s = t.stats();
        assert_eq!((s.lookups, s.misses), (3, 2));
        assert_eq!(s.by_size[PageSize::K4].hits, 2);
    }

    #[test]
    fn non_inclusive_keeps_l2_copies_exclusive_moves_them() {
        let mut t = h(Inclusion::NonInclusive, false);
        for i in 1..=3u64 {
            t.fill(i << 12, T, None, AccessKind::Read, &fill(i << 20, PageSize::K4));
        }
        // Page 1 left the 2-entry DTLB but stays in the STLB.
        assert_eq!(look(&mut t, 1 << 12, AccessKind::Read).level, Some(TlbLevelId::Stlb));
        assert_eq!(t.level(TlbLevelId::Stlb).unwrap().occupancy().total(), 3);

        let mut t = h(Inclusion::Exclusive, false);
        for i in 1..=3u64 {
            t.fill(i << 12, T, None, AccessKind::Read, &fill(i << 20, PageSize::K4));
        }
        // Walk fills go to the L1; page 1, evicted by page 3, moved down.
        assert_eq!(t.level(TlbLevelId::Stlb).unwrap().occupancy().total(), 1);
        assert!(t.level(TlbLevelId::Stlb).unwrap().peek_in(1 << 12, T, None).is_some());
        // An STLB hit moves it back up, and the L1 victim (page 2) moves down.
        assert_eq!(look(&mut t, 1 << 12, AccessKind::Read).level, Some(TlbLevelId::Stlb));
        let stlb = t.level(TlbLevelId::Stlb).unwrap();
        assert!(stlb.peek_in(1 << 12, T, None).is_none());
        assert!(stlb.peek_in(2 << 12, T, None).is_some());
        assert_eq!(t.occupancy().total(), 3, "each translation in exactly one level");
    }

    /// An STLB without 1 GiB entries holds the 2 MiB piece; the L1 that holds 1 GiB gets the
    /// 1 GiB entry back on refill.
    #[test]
    fn smashed_1g_is_restored_in_l1() {
        let mut t = h(Inclusion::NonInclusive, false);
        t.fill(1 << 30, T, None, AccessKind::Read, &fill(4 << 30, PageSize::G1));
        let stlb = t.level(TlbLevelId::Stlb).unwrap();
        assert_eq!(stlb.occupancy(), PerSize([0, 1, 0]));
        t.flush_level(TlbLevelId::Dtlb);
        // Only the 2 MiB piece the walk was for is in the STLB.
        assert!(look(&mut t, (1 << 30) + (5 << 21), AccessKind::Read).hit.is_none());
        let va = (1 << 30) + 0x12_3456;
        let l = look(&mut t, va, AccessKind::Read);
        assert_eq!(l.level, Some(TlbLevelId::Stlb));
        let hit = l.hit.unwrap();
        assert_eq!((hit.size, hit.pa), (PageSize::G1, Spa::new((4 << 30) + 0x12_3456)));
        // The restored 1 GiB entry covers another 2 MiB piece without a walk.
        let l = look(&mut t, (1 << 30) + (300 << 21), AccessKind::Read);
        assert_eq!(l.level, Some(TlbLevelId::Dtlb));
    }
}
