//! One TLB level: set-associative arrays, each holding some page sizes, a replacement policy,
//! entries tagged by address space (Intel SDM Vol. 3A §4.10; AMD APM Vol. 2 §5.5). The same
//! structure serves as L1 ITLB/DTLB/store DTLB, L2 TLB and the nested (gPA→hPA) TLB; the
//! hierarchy is [`crate::TlbHierarchy`].

use crate::addr::PagedAddr;
use crate::check::CheckCache;
use crate::inval::PendingInvalidation;
use crate::repl::{MAX_PLRU_WAYS, ReplState, Replacement};
use crate::walk::Perms;
use sim_core::config::{ConfigError, check_pow2, check_range};
use sim_core::stats::PerSize;
use sim_core::{Cycles, PageSize, Rng, Spa};
use std::ops::Sub;
use std::sync::Arc;

/// The address-space tag of a TLB entry: the ASID (AMD) / VPID (Intel) of the VM, 0 for the
/// host, and the PCID inside it (Linux uses PCIDs for user/kernel page-table isolation and
/// per-mm contexts). Global entries match any PCID of their ASID. Guest entries are further
/// tagged by the nested root (nCR3 / EPTP), passed separately (see [`Tlb::lookup_in`]).
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
    /// Page sizes this array holds. A size held by several arrays may be filled into any of
    /// them (SPR's STLB: 4K in both halves, spec/tdx.md §5.2).
    pub sizes: Vec<PageSize>,
    /// Number of sets (a power of two; 1 = fully associative).
    pub sets: u32,
    /// Ways per set.
    pub ways: u32,
}

impl TlbArrayConfig {
    /// A fully associative array of `entries` holding `sizes`.
    pub fn fully_assoc(sizes: &[PageSize], entries: u32) -> TlbArrayConfig {
        TlbArrayConfig { sizes: sizes.to_vec(), sets: 1, ways: entries }
    }

    /// A set-associative array of `sets` × `ways` holding `sizes`.
    pub fn set_assoc(sizes: &[PageSize], sets: u32, ways: u32) -> TlbArrayConfig {
        TlbArrayConfig { sizes: sizes.to_vec(), sets, ways }
    }

    /// Entries: sets × ways.
    pub const fn entries(&self) -> u64 {
        self.sets as u64 * self.ways as u64
    }
}

/// Geometry and timing of one TLB level: its arrays, hit latency and replacement policy. A
/// page size held by no array is installed as the next smaller size that has one
/// ("smashing", as Zen's L2 DTLB does with 1 GiB pages, spec/physmap.md H17).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlbConfig {
    /// The arrays, probed in order.
    pub arrays: Vec<TlbArrayConfig>,
    /// Cycles a lookup of this level costs (paid on a hit and on a miss that goes on to the
    /// next level).
    #[serde(default)]
    pub hit_latency: Cycles,
    /// Replacement policy of every array of the level.
    #[serde(default)]
    pub replacement: Replacement,
}

impl TlbConfig {
    /// One array per entry of `arrays`, latency `hit_latency`, true LRU.
    pub fn new(arrays: Vec<TlbArrayConfig>, hit_latency: u64) -> TlbConfig {
        TlbConfig { arrays, hit_latency: Cycles::new(hit_latency), replacement: Replacement::Lru }
    }

    /// Total entries.
    pub fn entries(&self) -> u64 {
        self.arrays.iter().map(TlbArrayConfig::entries).sum()
    }
}

/// Most ways accepted per set (a sanity bound on configuration).
pub const MAX_TLB_WAYS: u32 = 4096;
/// Most sets accepted per array.
pub const MAX_TLB_SETS: u32 = 1 << 20;
/// Upper bound accepted for latency fields (cycles): a sanity limit against unit mistakes.
pub(crate) const MAX_LATENCY: u64 = 1_000_000;

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
        check_range(|| format!("{key}.hit_latency"), self.hit_latency.get(), 0, MAX_LATENCY)?;
        let mut seen = [false; 3];
        for (i, a) in self.arrays.iter().enumerate() {
            // The key is formatted only for an error.
            let k = || format!("{key}.arrays[{i}]");
            check_pow2(|| format!("{}.sets", k()), u64::from(a.sets))?;
            check_range(|| format!("{}.sets", k()), a.sets, 1, MAX_TLB_SETS)?;
            check_range(|| format!("{}.ways", k()), a.ways, 1, MAX_TLB_WAYS)?;
            if self.replacement == Replacement::TreePlru {
                check_range(|| format!("{}.ways", k()), a.ways, 1, MAX_PLRU_WAYS)?;
            }
            if a.sizes.is_empty() {
                return Err(bad(format!("{}.sizes", k()), "[]".into(), "at least one page size"));
            }
            let mut here = [false; 3];
            for s in &a.sizes {
                if std::mem::replace(&mut here[s.index()], true) {
                    return Err(bad(format!("{}.sizes", k()), s.to_string(), "size listed twice"));
                }
                seen[s.index()] = true;
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

impl std::ops::AddAssign for TlbSizeStats {
    fn add_assign(&mut self, o: Self) {
        self.hits += o.hits;
        self.fills += o.fills;
        self.evictions += o.evictions;
        self.invalidations += o.invalidations;
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
    /// Effective permissions of the (guest's or host's own) paging structures, checked
    /// against the privilege and control bits of each access.
    pub perms: Perms,
    /// Permissions of the nested stage (NPT/EPT), enforced whatever the privilege and
    /// control bits; [`Perms::ALL`] for native translations.
    pub nested_perms: Perms,
    /// G bit.
    pub global: bool,
    /// D bit of the leaf as of the fill (a write through a clean entry re-walks to set D).
    pub dirty: bool,
    /// What the entry keeps of the check stage's result.
    pub cache: CheckCache,
}

/// Where a hit entry lives, to update its check cache. Valid until the next fill, invalidation
/// or flush.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlbSlot {
    array: u32,
    set: u32,
    way: u32,
}

impl TlbSlot {
    fn new(array: usize, set: usize, way: usize) -> TlbSlot {
        let n = |v: usize| u32::try_from(v).expect("TLB geometry fits u32");
        TlbSlot { array: n(array), set: n(set), way: n(way) }
    }
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
    /// Cached nested-stage permissions ([`Perms::ALL`] for native translations).
    pub nested_perms: Perms,
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
    /// RMP update; SVM TLB_CONTROL = 1).
    All,
    /// Every entry of one ASID/VPID (SVM TLB_CONTROL = 3; INVVPID single-context).
    Asid(u16),
    /// Non-global entries of one ASID and PCID (MOV CR3 without no-flush; INVPCID type 1).
    Context(TlbTag),
    /// Non-global entries of every PCID of one ASID (INVPCID type 3; SVM TLB_CONTROL = 7;
    /// INVVPID single-context retaining globals).
    AllNonGlobal(u16),
    /// Every entry of every ASID/VPID except the host's (INVVPID all-context).
    AllGuests,
    /// Entries derived from one nested root (nCR3 / EP4TA): INVEPT single-context.
    NestedRoot(Spa),
    /// Every entry derived from any nested root: INVEPT all-context.
    AllNested,
}

/// The key an entry keeps of its nested root: the (4 KiB-aligned) root with bit 0 set, or 0
/// for none.
#[inline]
pub(crate) fn nroot_key(root: Option<Spa>) -> u64 {
    root.map_or(0, |r| r.raw() | 1)
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    valid: bool,
    vpn: u64,
    size: PageSize,
    /// The size of the translation that was installed (larger than `size` when smashed).
    orig_size: PageSize,
    tag: TlbTag,
    /// Nested root the entry was built under ([`nroot_key`]).
    nroot: u64,
    global: bool,
    frame: Spa,
    perms: Perms,
    nested_perms: Perms,
    dirty: bool,
    cache: CheckCache,
}

const INVALID: Entry = Entry {
    valid: false,
    vpn: 0,
    size: PageSize::K4,
    orig_size: PageSize::K4,
    tag: TlbTag::HOST,
    nroot: 0,
    global: false,
    frame: Spa::ZERO,
    perms: Perms { readable: false, writable: false, user: false, executable: false },
    nested_perms: Perms { readable: false, writable: false, user: false, executable: false },
    dirty: false,
    cache: CheckCache { write: crate::check::WriteCheck::Unchecked },
};

impl Entry {
    fn matches(&self, va: u64, tag: TlbTag, nroot: u64) -> bool {
        self.valid
            && self.vpn == va >> self.size.shift()
            && self.tag.asid == tag.asid
            && (self.global || self.tag.pcid == tag.pcid)
            && self.nroot == nroot
    }

    fn overlaps(&self, start: u64, end: u64) -> bool {
        let lo = self.vpn << self.size.shift();
        let hi = lo + self.size.bytes();
        lo < end && start < hi
    }

    /// The translation as installed, at its original size (for refills from a lower level).
    pub(crate) fn as_fill(&self, va: u64) -> TlbFill {
        let orig = self.orig_size;
        let delta = va & (orig.bytes() - 1) & !(self.size.bytes() - 1);
        TlbFill {
            frame: Spa::new_truncate(self.frame.raw() - delta),
            size: orig,
            perms: self.perms,
            nested_perms: self.nested_perms,
            global: self.global,
            dirty: self.dirty,
            cache: self.cache,
        }
    }

    /// The base address of the entry's page.
    pub(crate) fn va(&self) -> u64 {
        self.vpn << self.size.shift()
    }

    /// The entry's tag and nested root.
    pub(crate) fn context(&self) -> (TlbTag, Option<Spa>) {
        let root = (self.nroot != 0).then(|| Spa::new_truncate(self.nroot & !1));
        (self.tag, root)
    }
}

/// One set-associative array of a TLB.
///
/// Its per-slot storage (`entries`, `keys`, `keys32`, `used`, `filter` and the replacement
/// state's) is allocated by the first fill ([`Array::ensure_storage`]), not at construction:
/// until then every one of those vectors is empty and `size_used` is all zero, so no lookup
/// reads them (each probe tests `size_used` first, [`Array::may_hold`]) and flushes and
/// invalidations find no valid slot. Why: a machine's TLBs are most of its memory (an `spr`
/// STLB is 1,536–2,048 slots of ~100 bytes per CPU), and many machines never fill most of
/// them — the race explorer (`ccsim explore`) clones one machine per schedule, and a CPU that
/// has not translated anything yet then costs nothing to build or copy.
#[derive(Debug)]
struct Array {
    holds: [bool; 3],
    sets: usize,
    ways: usize,
    /// Filter buckets once allocated (0: no filter).
    buckets: usize,
    entries: Vec<Entry>,
    /// Per slot: `vpn << 2 | size index` of a valid entry, [`NO_KEY`] for an invalid one. A
    /// dense copy of what a search compares first, so a 72-way scan touches 576 bytes.
    keys: Vec<u64>,
    /// Per slot: a 32-bit fold of `keys` ([`fold32`]), what searches scan first — 32-bit
    /// lanes compare four at a time even on baseline x86-64 (SSE2 has no 64-bit compare).
    /// A fold match is confirmed on the full entry.
    keys32: Vec<u32>,
    /// Valid entries per set (a full set skips the search for an invalid way).
    used: Vec<u32>,
    /// For arrays with many ways: per bucket of [`filter_hash`], how many valid entries have
    /// a key hashing there (empty: no filter). A zero count proves that no entry has a key, so
    /// a search for a page the array does not hold — every TLB miss — skips the scan of a
    /// wide set. Exact bookkeeping, never a guess: a non-zero count only means "scan".
    filter: Vec<u16>,
    /// `log2(filter.len())`.
    filter_bits: u32,
    /// Valid entries per page size (a size with none skips its probe).
    size_used: [u32; 3],
    /// Once [`Tlb::invalidate_phys`] has run on this array (and only for arrays of at least
    /// [`PHYS_FILTER_MIN_SLOTS`] slots): per bucket of [`filter_hash`], how many valid entries
    /// have a [`phys_key`] hashing there. A zero count for every page a physical range could
    /// be reached from proves that no entry reaches it, and the array is not visited. Exact
    /// bookkeeping, as for `filter`; empty (not kept) until the first physical invalidation,
    /// so that a run that never makes one pays nothing for it.
    phys: Vec<u16>,
    /// Which slots hold a valid entry, so that a flush visits only those.
    valid: SlotBits,
    repl: ReplState,
}

sim_core::clone_by_fields!(Array {
    holds,
    sets,
    ways,
    buckets,
    entries,
    keys,
    keys32,
    used,
    filter,
    filter_bits,
    size_used,
    phys,
    valid,
    repl
});

/// A set of slot indices as a two-level bitset: bit `i % 64` of `words[i / 64]` says slot `i`
/// is in the set, and bit `j % 64` of `summary[j / 64]` says `words[j]` is non-zero.
///
/// Why: under `rmp.tlb_on_update = global-flush` every RMPUPDATE flushes every TLB of every
/// CPU, and between two flushes a TLB gains only a few entries. Visiting the set bits costs
/// one summary word per 4,096 slots plus the valid entries, where a scan of the sets costs
/// every set (and every way of each non-empty set).
#[derive(Debug)]
struct SlotBits {
    words: Vec<u64>,
    summary: Vec<u64>,
}

sim_core::clone_by_fields!(SlotBits { words, summary });

impl SlotBits {
    fn new(slots: usize) -> SlotBits {
        let words = slots.div_ceil(64);
        SlotBits { words: vec![0; words], summary: vec![0; words.div_ceil(64)] }
    }

    #[inline]
    fn insert(&mut self, i: usize) {
        self.words[i / 64] |= 1 << (i % 64);
        self.summary[i / 4096] |= 1 << (i / 64 % 64);
    }

    #[inline]
    fn remove(&mut self, i: usize) {
        let w = &mut self.words[i / 64];
        *w &= !(1 << (i % 64));
        if *w == 0 {
            self.summary[i / 4096] &= !(1 << (i / 64 % 64));
        }
    }
}

/// The positions of the set bits of `w`, lowest first.
fn bits(mut w: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (w != 0).then(|| {
            let b = w.trailing_zeros() as usize;
            w &= w - 1;
            b
        })
    })
}

/// The key of an invalid slot (no valid key reaches it: vpn < 2^52).
const NO_KEY: u64 = u64::MAX;
/// A wanted key that matches nothing (for sizes an array does not hold).
const NO_WANT: u64 = u64::MAX - 1;

#[inline(always)]
fn key_of(vpn: u64, size: PageSize) -> u64 {
    vpn << 2 | size.index() as u64
}

/// The page size of a valid entry's key.
#[inline(always)]
fn key_size(key: u64) -> PageSize {
    // A table of four, so that the two key bits index it without a branch or bounds check
    // (a valid key's low bits are 0, 1 or 2: `key_of`).
    const BY_BITS: [PageSize; 4] = [PageSize::K4, PageSize::M2, PageSize::G1, PageSize::G1];
    BY_BITS[(key & 3) as usize]
}

/// The 32-bit fold of a key.
#[allow(clippy::cast_possible_truncation)] // folding on purpose
const fn fold32(key: u64) -> u32 {
    (key ^ (key >> 32)) as u32
}

/// Arrays with at least this many ways keep a presence filter ([`Array::filter`]).
const FILTER_MIN_WAYS: usize = 16;

/// The filter bucket of `key` in a filter of `2^bits` buckets (a multiplicative hash: keys of
/// neighbouring pages spread out).
#[inline(always)]
fn filter_hash(key: u64, bits: u32) -> usize {
    // The shift leaves `bits` (< 32) bits: always fits.
    usize::try_from(key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)).expect("< 2^32")
}

/// Arrays with fewer slots than this keep no physical filter ([`Array::phys`]): visiting their
/// valid entries costs about as much as probing the filter.
const PHYS_FILTER_MIN_SLOTS: usize = 16;

/// A range reaching more pages of one size than this is not probed page by page: the array
/// is visited.
const PHYS_PROBE_MAX: u64 = 1024;

/// The physical filter's key of an entry of size `size` whose frame starts at `frame`: the
/// number of the `size`-page holding its first byte, with the size.
#[inline(always)]
fn phys_key(frame: u64, size: PageSize) -> u64 {
    (frame >> size.shift()) << 2 | size.index() as u64
}

/// The physical filter's key of the 2 MiB region holding `frame`, under which 4K entries are
/// counted as well (tag 3, no page size's index): a range of many 4K pages probes its regions.
#[inline(always)]
fn phys_region_key(frame: u64) -> u64 {
    (frame >> PageSize::M2.shift()) << 2 | 3
}

/// A range of more 4K pages than this probes the 4K entries by 2 MiB region.
const PHYS_PROBE_PAGES: u64 = 8;

/// Count valid entry `e` into (`up`) or out of physical filter `phys` (a power-of-two
/// length): under its page's key, and a 4K entry under its region's too.
#[inline(always)]
fn phys_count(phys: &mut [u16], e: &Entry, up: bool) {
    let bits = phys.len().trailing_zeros();
    let f = e.frame.raw();
    let mut bump = |k| {
        let c = &mut phys[filter_hash(k, bits)];
        *c = if up { *c + 1 } else { *c - 1 };
    };
    bump(phys_key(f, e.size));
    if e.size == PageSize::K4 {
        bump(phys_region_key(f));
    }
}

impl Array {
    /// Allocate the per-slot storage if this array has none yet (see [`Array`]).
    #[inline(always)]
    fn ensure_storage(&mut self) {
        if self.keys.is_empty() {
            self.allocate();
        }
    }

    #[cold]
    #[inline(never)]
    fn allocate(&mut self) {
        let n = self.sets * self.ways;
        self.entries = vec![INVALID; n];
        self.keys = vec![NO_KEY; n];
        self.keys32 = vec![fold32(NO_KEY); n];
        self.used = vec![0; self.sets];
        self.filter = vec![0; self.buckets];
        self.valid = SlotBits::new(n);
        self.repl.allocate();
    }

    /// Record that slot `slot` (of set `set`) now holds `e`.
    #[inline(always)]
    fn set_slot(&mut self, set: usize, slot: usize, e: Entry) {
        let old = self.keys[slot];
        let new = if e.valid { key_of(e.vpn, e.size) } else { NO_KEY };
        self.keys[slot] = new;
        self.keys32[slot] = fold32(new);
        match (old != NO_KEY, e.valid) {
            (false, true) => {
                self.used[set] += 1;
                self.valid.insert(slot);
            }
            (true, false) => {
                self.used[set] -= 1;
                self.valid.remove(slot);
            }
            (false, false) | (true, true) => {}
        }
        if old != NO_KEY {
            self.size_used[key_size(old).index()] -= 1;
            if !self.filter.is_empty() {
                self.filter[filter_hash(old, self.filter_bits)] -= 1;
            }
        }
        if new != NO_KEY {
            self.size_used[e.size.index()] += 1;
            if !self.filter.is_empty() {
                self.filter[filter_hash(new, self.filter_bits)] += 1;
            }
        }
        if !self.phys.is_empty() {
            let was = &self.entries[slot];
            if was.valid {
                phys_count(&mut self.phys, was, false);
            }
            if e.valid {
                phys_count(&mut self.phys, &e, true);
            }
        }
        self.entries[slot] = e;
    }

    /// Whether an entry of this array may reach a physical byte of `[s, e)` (`s < e`): `true`
    /// unless the physical filter proves none does. Starts the filter on first use.
    fn may_reach_phys(&mut self, s: u64, e: u64) -> bool {
        let slots = self.sets * self.ways;
        if self.size_used == [0; 3] {
            return false;
        }
        // Each entry counts under at most two keys: no counter passes 2 × slots.
        if slots < PHYS_FILTER_MIN_SLOTS || slots > usize::from(u16::MAX / 2) {
            return true;
        }
        if self.phys.is_empty() {
            let mut phys = vec![0u16; (slots * 16).next_power_of_two()];
            for x in self.entries.iter().filter(|x| x.valid) {
                phys_count(&mut phys, x, true);
            }
            self.phys = phys;
        }
        let bits = self.phys.len().trailing_zeros();
        let probe = |k: u64| self.phys[filter_hash(k, bits)] != 0;
        PageSize::ALL.iter().filter(|z| self.size_used[z.index()] > 0).any(|&z| {
            // An entry of size `z` at frame `f` reaches the range iff s − |z| < f < e.
            let first = s.saturating_sub(z.bytes() - 1) >> z.shift();
            let last = (e - 1) >> z.shift();
            if z == PageSize::K4 && last - first >= PHYS_PROBE_PAGES {
                let (r0, r1) = (first >> 9, last >> 9);
                return r1 - r0 >= PHYS_PROBE_MAX
                    || (r0..=r1).any(|r| probe(phys_region_key(r << PageSize::M2.shift())));
            }
            last - first >= PHYS_PROBE_MAX
                || (first..=last).any(|p| probe(phys_key(p << z.shift(), z)))
        })
    }

    /// The way of `set` a fill of key `want` (size `size`) takes: the entry `same` recognises
    /// (searched for only if the filters allow one and `search()`, and not at all when the
    /// caller knows there is none: `ABSENT`), else the first invalid
    /// way, else the policy's victim. Also returns whether the way holds the same entry (when
    /// not, no entry of `set` is the same: the filter, the memo or the search says so).
    #[inline(always)]
    fn fill_way<const ABSENT: bool>(
        &mut self,
        set: usize,
        want: u64,
        size: PageSize,
        search: impl FnOnce() -> bool,
        same: impl Fn(&Entry) -> bool,
    ) -> (usize, bool) {
        let base = set * self.ways;
        let keys = &self.keys[base..base + self.ways];
        if !ABSENT
            && self.may_hold(want, size)
            && search()
            && let Some(w) = keys
                .iter()
                .enumerate()
                .position(|(w, &k)| k == want && same(&self.entries[base + w]))
        {
            return (w, true);
        }
        if (self.used[set] as usize) < self.ways
            && let Some(w) = keys.iter().position(|&k| k == NO_KEY)
        {
            return (w, false);
        }
        (self.repl.victim(set), false)
    }

    /// Whether a valid entry may have key `key`, of size `size` (`false`: certainly none).
    #[inline(always)]
    fn may_hold(&self, key: u64, size: PageSize) -> bool {
        self.size_used[size.index()] != 0
            && (self.filter.is_empty() || self.filter[filter_hash(key, self.filter_bits)] != 0)
    }

    #[inline(always)]
    fn set_of(&self, va: u64, size: PageSize) -> usize {
        // sets is a power of two that fits usize: the mask keeps the value below it.
        usize::try_from((va >> size.shift()) & (self.sets as u64 - 1)).expect("below sets")
    }
}

/// A software memo of recent lookups: which slot a page's lookup found. Purely a simulator
/// speed-up for the hit path: it is discarded whenever the TLB's contents change (any fill,
/// invalidation or flush bumps `generation`), so it always returns the slot a full search
/// would, and hardware-visible state (replacement, counters) is updated exactly as on a full
/// search.
#[derive(Clone, Copy, Debug, Default)]
struct Memo {
    generation: u64,
    page: u64,
    tag: TlbTag,
    nroot: u64,
    /// What the search found: the hit for the page's first byte (`pa` of the 4 KiB page;
    /// a lookup ORs in the offset), or `None` for a miss.
    hit: Option<TlbHit>,
    /// [`hit_state`] of the hit (0 for a miss).
    state: u8,
}

/// A hit's permissions and cached bits as six bits: R, W, U, X (bits 0–3), D (bit 4), and the
/// write check passed (bit 5). What decides whether a hit is usable, as an index into a
/// precomputed table (the MMU's fast path).
pub(crate) fn hit_state(h: &TlbHit) -> u8 {
    let p = h.perms;
    u8::from(p.readable)
        | u8::from(p.writable) << 1
        | u8::from(p.user) << 2
        | u8::from(p.executable) << 3
        | u8::from(h.dirty) << 4
        | u8::from(h.cache.write == crate::check::WriteCheck::Allowed) << 5
}

const MEMO_SLOTS: usize = 64;

/// A memo of recent searches that found a 2M or 1G entry, by 2 MiB region: which slot they
/// found. Like [`Memo`] a simulator speed-up only, discarded with it (`generation`), and used
/// only when the presence filters prove that no smaller entry could translate the address
/// looked up (a smaller entry would win the search). It lets lookups of the many 4 KiB pages
/// under one large entry skip the search (the kernel's direct map under SNP: 2M entries, and a
/// 4 KiB memo that misses on every new page).
#[derive(Clone, Copy, Debug, Default)]
struct LargeMemo {
    /// 0 (never current: generations start at 1) until first written.
    generation: u64,
    /// `va >> 21` of the search.
    region: u64,
    tag: TlbTag,
    nroot: u64,
    slot: TlbSlot,
}

const LARGE_MEMO_SLOTS: usize = 32;

/// One TLB level. Deterministic: replacement by a per-array use counter (LRU), tree bits
/// (PLRU) or a seeded [`Rng`] (random).
#[derive(Debug)]
pub struct Tlb {
    arrays: Vec<Array>,
    /// For each page size, the size an entry of that size is installed as.
    install: [PageSize; 3],
    hit_latency: Cycles,
    stats: TlbStats,
    /// Use counter shared by the arrays, so that victims of different arrays compare by age.
    clock: u64,
    generation: u64,
    /// Shared between copies of a TLB until one of them writes its memo (only a search
    /// does): a copied machine (the race explorer makes one per schedule) copies no memo it
    /// does not change. Reading is a plain pointer load, as through a `Box`.
    memo: Arc<[Memo; MEMO_SLOTS]>,
    large_memo: Arc<[LargeMemo; LARGE_MEMO_SLOTS]>,
}

sim_core::clone_by_fields!(Tlb {
    arrays,
    install,
    hit_latency,
    stats,
    clock,
    generation,
    memo,
    large_memo
});

/// What a fill displaced.
pub(crate) struct FillResult {
    /// The size installed.
    pub installed: PageSize,
    /// The valid entry replaced, if any (for exclusive hierarchies).
    pub victim: Option<Entry>,
}

/// Remove every valid entry of `a` for which `pred` holds, counting each in `stats`; returns
/// how many.
fn remove_in(a: &mut Array, stats: &mut TlbStats, pred: &mut impl FnMut(&Entry) -> bool) -> u64 {
    let mut n = 0;
    // Only the valid slots are visited, in increasing order: after a flush most of a large
    // STLB is empty, and RMP-update flushes (rmp.tlb_on_update = global-flush) come often.
    // `bits` iterates over a copy of each word, so removing is safe.
    for si in 0..a.valid.summary.len() {
        for j in bits(a.valid.summary[si]) {
            let wi = si * 64 + j;
            for b in bits(a.valid.words[wi]) {
                let i = wi * 64 + b;
                let e = &mut a.entries[i];
                debug_assert!(e.valid);
                if pred(e) {
                    e.valid = false;
                    a.size_used[e.size.index()] -= 1;
                    if !a.filter.is_empty() {
                        a.filter[filter_hash(a.keys[i], a.filter_bits)] -= 1;
                    }
                    if !a.phys.is_empty() {
                        phys_count(&mut a.phys, e, false);
                    }
                    a.keys[i] = NO_KEY;
                    a.keys32[i] = fold32(NO_KEY);
                    a.used[i / a.ways] -= 1;
                    a.valid.remove(i);
                    stats.by_size[e.size].invalidations += 1;
                    n += 1;
                }
            }
        }
    }
    n
}

impl Tlb {
    /// An empty TLB of the given geometry; random replacement draws from `Rng::new(0)`.
    ///
    /// # Errors
    /// [`ConfigError`] if the geometry is invalid (see [`TlbConfig::validate`]).
    pub fn new(cfg: &TlbConfig) -> Result<Tlb, ConfigError> {
        Tlb::with_rng(cfg, &Rng::new(0))
    }

    /// An empty TLB whose random replacement draws from streams forked from `rng` (one per
    /// array).
    ///
    /// # Errors
    /// [`ConfigError`] if the geometry is invalid (see [`TlbConfig::validate`]).
    pub fn with_rng(cfg: &TlbConfig, rng: &Rng) -> Result<Tlb, ConfigError> {
        cfg.validate("tlb")?;
        let arrays: Vec<Array> = cfg
            .arrays
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut holds = [false; 3];
                for s in &a.sizes {
                    holds[s.index()] = true;
                }
                let (sets, ways) = (a.sets as usize, a.ways as usize);
                let entries = sets * ways;
                let filter_on = ways >= FILTER_MIN_WAYS && entries <= usize::from(u16::MAX);
                let buckets = if filter_on { (entries * 8).next_power_of_two().max(64) } else { 0 };
                Array {
                    filter: Vec::new(),
                    size_used: [0; 3],
                    phys: Vec::new(),
                    filter_bits: buckets.trailing_zeros(),
                    holds,
                    sets,
                    ways,
                    buckets,
                    entries: Vec::new(),
                    keys: Vec::new(),
                    keys32: Vec::new(),
                    used: Vec::new(),
                    valid: SlotBits::new(0),
                    repl: ReplState::new_lazy(cfg.replacement, sets, ways, rng.fork(i as u64)),
                }
            })
            .collect();
        let held = |s: PageSize| arrays.iter().any(|a| a.holds[s.index()]);
        let mut install = [PageSize::K4; 3];
        for s in PageSize::ALL {
            let mut t = s;
            install[s.index()] = loop {
                if held(t) {
                    break t;
                }
                t = t.next_smaller().expect("validated: 4K is held");
            };
        }
        Ok(Tlb {
            arrays,
            install,
            hit_latency: cfg.hit_latency,
            stats: TlbStats::default(),
            clock: 0,
            generation: 1,
            memo: Arc::new([Memo::default(); MEMO_SLOTS]),
            large_memo: Arc::new([LargeMemo::default(); LARGE_MEMO_SLOTS]),
        })
    }

    /// Cycles a lookup costs.
    pub const fn hit_latency(&self) -> Cycles {
        self.hit_latency
    }

    /// Counters.
    pub const fn stats(&self) -> &TlbStats {
        &self.stats
    }

    /// Total entries.
    pub fn capacity(&self) -> usize {
        self.arrays.iter().map(|a| a.sets * a.ways).sum()
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

    /// The slot a lookup of `va` finds: the smallest matching entry.
    #[inline]
    fn find(&self, va: u64, tag: TlbTag, nroot: u64) -> Option<TlbSlot> {
        // Most searches miss and the presence filters prove it: skip the scan's setup.
        if self.proven_absent(va) {
            return None;
        }
        self.find_scan(va, tag, nroot)
    }

    /// Whether the per-size counts and presence filters prove that no entry (of any tag)
    /// translates `va` (`false`: a search must tell).
    #[inline(always)]
    fn proven_absent(&self, va: u64) -> bool {
        // Plain loops: the iterator form was compiled as an out-of-line call per lookup.
        for a in &self.arrays {
            for s in PageSize::ALL {
                if a.holds[s.index()] && a.may_hold(key_of(va >> s.shift(), s), s) {
                    return false;
                }
            }
        }
        true
    }

    /// Whether the per-size counts and presence filters prove that no entry (of any tag)
    /// smaller than `size` translates `va`.
    #[inline(always)]
    fn proven_none_smaller(&self, va: u64, size: PageSize) -> bool {
        for a in &self.arrays {
            for s in PageSize::ALL {
                if s < size && a.holds[s.index()] && a.may_hold(key_of(va >> s.shift(), s), s) {
                    return false;
                }
            }
        }
        true
    }

    /// [`Tlb::find`] past the filters.
    #[inline(never)]
    fn find_scan(&self, va: u64, tag: TlbTag, nroot: u64) -> Option<TlbSlot> {
        let mut best: Option<(PageSize, TlbSlot)> = None;
        for (ai, a) in self.arrays.iter().enumerate() {
            let mut want = [NO_WANT; 3];
            let mut maybe = false;
            for s in PageSize::ALL {
                if a.holds[s.index()] {
                    let k = key_of(va >> s.shift(), s);
                    if a.may_hold(k, s) {
                        want[s.index()] = k;
                        maybe = true;
                    }
                }
            }
            if !maybe {
                continue;
            }
            let mut probed = [usize::MAX; 3];
            for s in PageSize::ALL.into_iter().filter(|s| a.holds[s.index()]) {
                let set = a.set_of(va, s);
                if probed.contains(&set) {
                    continue;
                }
                probed[s.index()] = set;
                let base = set * a.ways;
                let keys = &a.keys32[base..base + a.ways];
                // A branch-free pass over the folds, eight ways at a time (it vectorizes),
                // gives a bit mask of the candidates; only those are compared in full. Most
                // lookups that get here miss, and a hit in a 72-way set has one or a few
                // candidates (other ASIDs' entries for the same page share its key).
                // Candidates are visited in way order, as a plain scan would.
                let [w0, w1, w2] = want.map(fold32);
                let wanted = |k: u32| (k == w0) | (k == w1) | (k == w2);
                let mut consider = |w: usize| {
                    let e = &a.entries[base + w];
                    if e.matches(va, tag, nroot) && best.is_none_or(|(bs, _)| e.size < bs) {
                        best = Some((e.size, TlbSlot::new(ai, set, w)));
                    }
                };
                let mut groups = keys.chunks_exact(8);
                for (g, group) in (&mut groups).enumerate() {
                    if !group.iter().fold(false, |acc, &k| acc | wanted(k)) {
                        continue;
                    }
                    for (i, &k) in group.iter().enumerate() {
                        if wanted(k) {
                            consider(g * 8 + i);
                        }
                    }
                }
                let done = keys.len() - groups.remainder().len();
                for (i, &k) in groups.remainder().iter().enumerate() {
                    if wanted(k) {
                        consider(done + i);
                    }
                }
            }
        }
        best.map(|(_, slot)| slot)
    }

    #[inline]
    fn memo_index(va: u64) -> usize {
        // Masked to 6 bits: always fits.
        usize::try_from((va >> 12) & (MEMO_SLOTS as u64 - 1)).expect("6-bit index")
    }

    /// The search behind a memo miss the filters did not settle: a full search, remembered.
    #[inline(never)]
    fn find_memo_slow(&mut self, va: u64, tag: TlbTag, nroot: u64) -> Option<TlbHit> {
        let generation = self.generation;
        let slot = self.large_memo_slot(va, tag, nroot).or_else(|| {
            let slot = self.find_scan(va, tag, nroot);
            if let Some(s) = slot
                && self.slot_entry(s).size != PageSize::K4
            {
                let region = va >> 21;
                Arc::make_mut(&mut self.large_memo)[Self::large_memo_index(va)] =
                    LargeMemo { generation, region, tag, nroot, slot: s };
            }
            slot
        });
        let hit = slot.map(|slot| self.hit_of(slot, va & !0xfff));
        // One uniqueness check of the shared memo per search (an atomic operation).
        let m = &mut Arc::make_mut(&mut self.memo)[Self::memo_index(va)];
        (m.generation, m.page, m.tag, m.nroot) = (generation, va >> 12, tag, nroot);
        match hit {
            Some(h) => {
                m.hit = Some(h);
                m.state = hit_state(&h);
            }
            // A miss: only the discriminant is written (the common case on a walk).
            None => {
                m.hit = None;
                m.state = 0;
            }
        }
        hit
    }

    #[inline]
    fn hit_of(&self, slot: TlbSlot, va: u64) -> TlbHit {
        let e = self.slot_entry(slot);
        TlbHit {
            pa: Spa::new_truncate(e.frame.raw() | (va & (e.size.bytes() - 1))),
            size: e.size,
            perms: e.perms,
            nested_perms: e.nested_perms,
            global: e.global,
            dirty: e.dirty,
            cache: e.cache,
            slot,
        }
    }

    /// The hit a lookup of `va` would return if the memo answers it now, without any side
    /// effect (its `pa` is that of the 4 KiB page of `va`: OR in `va & 0xfff`). `None` when
    /// the memo has nothing current (a lookup must then search). For the MMU's hit fast path,
    /// which follows a usable hit with [`Tlb::record_memo_hit`].
    /// Also returns the hit's [`hit_state`].
    #[inline(always)]
    pub(crate) fn memo_hit(&self, va: u64, tag: TlbTag, nroot: u64) -> Option<(&TlbHit, u8)> {
        let m = &self.memo[Self::memo_index(va)];
        if m.generation == self.generation && m.page == va >> 12 && m.tag == tag && m.nroot == nroot
        {
            m.hit.as_ref().map(|h| (h, m.state))
        } else {
            None
        }
    }

    /// Whether the memo of searches that found a large entry has something current for
    /// `va`'s 2 MiB region (then [`Tlb::large_memo_hit`] may answer). Two loads and two
    /// comparisons, so that a miss of the page memo that walks pays little for asking.
    #[inline(always)]
    pub(crate) fn large_memo_current(&self, va: u64) -> bool {
        let lm = &self.large_memo[Self::large_memo_index(va)];
        lm.generation == self.generation && lm.region == va >> 21
    }

    /// The slot of `va`'s 2 MiB region in the memo of searches that found a large entry.
    #[inline(always)]
    fn large_memo_index(va: u64) -> usize {
        // Masked to 5 bits: always fits.
        usize::try_from((va >> 21) % LARGE_MEMO_SLOTS as u64).expect("below 32")
    }

    /// The slot a search for `va` would find, if the memo of searches that found a large entry
    /// answers it: a search in `va`'s 2 MiB region found a 2M or 1G entry, nothing has changed
    /// since, and the filters prove that no smaller entry translates `va`.
    #[inline(always)]
    fn large_memo_slot(&self, va: u64, tag: TlbTag, nroot: u64) -> Option<TlbSlot> {
        let lm = &self.large_memo[Self::large_memo_index(va)];
        (lm.generation == self.generation
            && lm.region == va >> 21
            && lm.tag == tag
            && lm.nroot == nroot
            && self.proven_none_smaller(va, self.slot_entry(lm.slot).size))
        .then_some(lm.slot)
    }

    /// [`Tlb::memo_hit`] through the memo of searches that found a large entry
    /// ([`Tlb::large_memo_slot`]): the hit a lookup would return, as its slot, size, the
    /// address of `va`'s 4 KiB page and its [`hit_state`]. Without side effects, like
    /// [`Tlb::memo_hit`].
    #[inline(never)]
    pub(crate) fn large_memo_hit(
        &self,
        va: u64,
        tag: TlbTag,
        nroot: u64,
    ) -> Option<(TlbSlot, PageSize, u64, u8)> {
        let hit = self.hit_of(self.large_memo_slot(va, tag, nroot)?, va & !0xfff);
        Some((hit.slot, hit.size, hit.pa.raw(), hit_state(&hit)))
    }

    /// The side effects of a lookup that hit `slot` (an entry of `size`): exactly what
    /// [`Tlb::lookup_in`] does on a hit.
    #[inline(always)]
    pub(crate) fn record_memo_hit(&mut self, slot: TlbSlot, size: PageSize) {
        self.stats.lookups += 1;
        self.clock += 1;
        self.arrays[slot.array as usize].repl.touch_stamped(
            slot.set as usize,
            slot.way as usize,
            self.clock,
        );
        self.stats.by_size[size].hits += 1;
    }

    /// Look `va` up for host address space `tag`, updating replacement state and counters. If
    /// entries of several sizes match (possible after a page-table change without a flush),
    /// the smallest wins.
    pub fn lookup<V: PagedAddr>(&mut self, va: V, tag: TlbTag) -> Option<TlbHit> {
        self.lookup_in(va.raw(), tag, None)
    }

    /// Look up in an address space that may be nested: `nested_root` is the nCR3 / EP4TA the
    /// entry must have been built under (`None` for the host and for the nested TLB's own
    /// host-side keys).
    #[inline]
    pub fn lookup_in(&mut self, va: u64, tag: TlbTag, nested_root: Option<Spa>) -> Option<TlbHit> {
        self.lookup_in_inline(va, tag, nested_root).0
    }

    /// [`Tlb::lookup_in`], always inlined (the hierarchy's L1 lookup: every access that
    /// misses the MMU's hit fast path). Also returns whether the filters proved that no
    /// entry of any size and tag translates `va` (so that a fill of `va` that follows, with
    /// nothing changed in between, need not look for one to replace:
    /// [`Tlb::fill_in_size_inline`]).
    #[inline(always)]
    pub(crate) fn lookup_in_inline(
        &mut self,
        va: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
    ) -> (Option<TlbHit>, bool) {
        self.stats.lookups += 1;
        let nroot = nroot_key(nested_root);
        let m = &self.memo[Self::memo_index(va)];
        let mut absent = false;
        let found = if m.generation == self.generation
            && m.page == va >> 12
            && m.tag == tag
            && m.nroot == nroot
        {
            m.hit
        } else if self.proven_absent(va) {
            // The common miss (every walk): settled by the filters, not remembered — a fill
            // follows, which changes the generation, and is told that nothing is there.
            absent = true;
            None
        } else {
            self.find_memo_slow(va, tag, nroot)
        };
        match found {
            Some(mut hit) => {
                self.clock += 1;
                let slot = hit.slot;
                self.arrays[slot.array as usize].repl.touch_stamped(
                    slot.set as usize,
                    slot.way as usize,
                    self.clock,
                );
                self.stats.by_size[hit.size].hits += 1;
                hit.pa = Spa::new_truncate(hit.pa.raw() | (va & 0xfff));
                (Some(hit), false)
            }
            None => {
                self.stats.misses += 1;
                (None, absent)
            }
        }
    }

    /// Look up without touching replacement state or counters (oracles, debugging).
    pub fn peek<V: PagedAddr>(&self, va: V, tag: TlbTag) -> Option<TlbHit> {
        self.peek_in(va.raw(), tag, None)
    }

    /// [`Tlb::peek`] in an address space that may be nested.
    pub fn peek_in(&self, va: u64, tag: TlbTag, nested_root: Option<Spa>) -> Option<TlbHit> {
        let nroot = nroot_key(nested_root);
        self.find(va, tag, nroot).map(|slot| self.hit_of(slot, va))
    }

    /// Update the check cache of a hit entry.
    pub fn set_cache(&mut self, slot: TlbSlot, cache: CheckCache) {
        if let Some(a) = self.arrays.get_mut(slot.array as usize)
            && let Some(e) = a.entries.get_mut(slot.set as usize * a.ways + slot.way as usize)
        {
            e.cache = cache;
            // The memo keeps copies of entries.
            self.generation += 1;
        }
    }

    #[inline]
    fn slot_entry(&self, slot: TlbSlot) -> &Entry {
        let a = &self.arrays[slot.array as usize];
        &a.entries[slot.set as usize * a.ways + slot.way as usize]
    }

    /// The entry at a slot (for refills into another level).
    pub(crate) fn entry(&self, slot: TlbSlot) -> Entry {
        *self.slot_entry(slot)
    }

    /// Install the translation of `va`. An entry for the same page, size and tag is replaced in
    /// place; otherwise an invalid way, else the policy's victim. Returns the size installed
    /// (smaller than `fill.size` when that size has no array).
    pub fn fill<V: PagedAddr>(&mut self, va: V, tag: TlbTag, fill: &TlbFill) -> PageSize {
        self.fill_in_size::<false, false>(va.raw(), tag, None, fill)
    }

    /// [`Tlb::fill`] in an address space that may be nested (`ABSENT`, `REMEMBER`: as for
    /// [`Tlb::fill_in_size_inline`]).
    pub(crate) fn fill_in<const ABSENT: bool, const REMEMBER: bool>(
        &mut self,
        va: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        fill: &TlbFill,
    ) -> FillResult {
        self.fill_impl::<true, ABSENT, REMEMBER>(va, tag, nested_root, fill)
    }

    /// [`Tlb::fill_in`] for a caller that does not need the victim: returns the size
    /// installed (the same fill; the victim is not copied out).
    #[inline]
    pub(crate) fn fill_in_size<const ABSENT: bool, const REMEMBER: bool>(
        &mut self,
        va: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        fill: &TlbFill,
    ) -> PageSize {
        self.fill_impl::<false, ABSENT, REMEMBER>(va, tag, nested_root, fill).installed
    }

    /// [`Tlb::fill_in_size`], always inlined (the hierarchy's fill of an L1 without an L2:
    /// every walk of the default machine). `ABSENT`: the fill follows a lookup of `va` that
    /// proved no entry translates it ([`Tlb::lookup_in_inline`]'s second result), nothing
    /// having changed this TLB since, so the search for an entry to replace is skipped (it
    /// could find none). `REMEMBER` (with `ABSENT`): the entry installed is then the only one
    /// that translates `va`'s page, and the memo says so at once, so that the next lookup of
    /// the page (usually the next access) needs no search. Why not always: writing the memo
    /// costs a walk that touches every page once (issue #3's `walk_4level`) about a tenth;
    /// a caller whose pages are touched again passes it.
    #[inline(always)]
    pub(crate) fn fill_in_size_inline<const ABSENT: bool, const REMEMBER: bool>(
        &mut self,
        va: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        fill: &TlbFill,
    ) -> PageSize {
        self.fill_impl::<false, ABSENT, REMEMBER>(va, tag, nested_root, fill).installed
    }

    #[inline(always)]
    fn fill_impl<const VICTIM: bool, const ABSENT: bool, const REMEMBER: bool>(
        &mut self,
        va: u64,
        tag: TlbTag,
        nested_root: Option<Spa>,
        fill: &TlbFill,
    ) -> FillResult {
        let nroot = nroot_key(nested_root);
        let size = self.install[fill.size.index()];
        let frame = Spa::new_truncate(
            fill.frame.raw() | (va & (fill.size.bytes() - 1) & !(size.bytes() - 1)),
        );
        let vpn = va >> size.shift();
        let want = key_of(vpn, size);
        let same = |e: &Entry| {
            e.valid && e.vpn == vpn && e.size == size && e.tag == tag && e.nroot == nroot
        };
        // If the memo says a search for this page found nothing since the last change, no
        // entry of the same page and tag exists: skip the search for one to replace.
        // (Asked only when the filters cannot tell.)
        let none_same = || {
            let m = &self.memo[Self::memo_index(va)];
            m.generation == self.generation
                && m.page == va >> 12
                && m.tag == tag
                && m.nroot == nroot
                && m.hit.is_none()
        };
        let (ai, set, (w, found)) = if let [a] = &mut self.arrays[..] {
            // One array (most TLBs): it holds every installed size (validated).
            a.ensure_storage();
            let set = a.set_of(va, size);
            (0, set, a.fill_way::<ABSENT>(set, want, size, || !none_same(), same))
        } else {
            // Candidate (array, set) pairs: every array holding the size.
            let mut chosen: Option<(usize, usize)> = None; // (array, way)
            let mut best_invalid: Option<(usize, usize)> = None;
            let mut best_victim: Option<(usize, usize, u64)> = None;
            for (ai, a) in self.arrays.iter_mut().enumerate() {
                if !a.holds[size.index()] {
                    continue;
                }
                a.ensure_storage();
                let set = a.set_of(va, size);
                let base = set * a.ways;
                let keys = &a.keys[base..base + a.ways];
                if a.may_hold(want, size)
                    && !none_same()
                    && let Some(w) = keys
                        .iter()
                        .enumerate()
                        .position(|(w, &k)| k == want && same(&a.entries[base + w]))
                {
                    chosen = Some((ai, w));
                    break;
                }
                if best_invalid.is_none()
                    && (a.used[set] as usize) < a.ways
                    && let Some(w) = keys.iter().position(|&k| k == NO_KEY)
                {
                    best_invalid = Some((ai, w));
                }
                if best_invalid.is_none() {
                    let w = a.repl.victim(set);
                    let age = a.repl.stamp(set, w);
                    if best_victim.is_none_or(|(_, _, b)| age < b) {
                        best_victim = Some((ai, w, age));
                    }
                }
            }
            let (ai, w, found) = chosen
                .map(|(a, w)| (a, w, true))
                .or(best_invalid.map(|(a, w)| (a, w, false)))
                .or(best_victim.map(|(a, w, _)| (a, w, false)))
                .expect("validated: some array holds every installed size");
            (ai, self.arrays[ai].set_of(va, size), (w, found))
        };
        let a = &mut self.arrays[ai];
        let slot = set * a.ways + w;
        // The entry replaced, unless it is the same translation (its size from its key).
        let old_key = a.keys[slot];
        let evicted = (old_key != NO_KEY && !found).then(|| key_size(old_key));
        let victim = if VICTIM && evicted.is_some() { Some(a.entries[slot]) } else { None };
        a.set_slot(
            set,
            slot,
            Entry {
                valid: true,
                vpn,
                size,
                orig_size: fill.size,
                tag,
                nroot,
                global: fill.global,
                frame,
                perms: fill.perms,
                nested_perms: fill.nested_perms,
                dirty: fill.dirty,
                cache: fill.cache,
            },
        );
        self.clock += 1;
        a.repl.touch_stamped(set, w, self.clock);
        if let Some(v) = evicted {
            self.stats.by_size[v].evictions += 1;
        }
        self.stats.by_size[size].fills += 1;
        self.generation += 1;
        if ABSENT && REMEMBER {
            let (generation, page) = (self.generation, va & !0xfff);
            let hit = self.hit_of(TlbSlot::new(ai, set, w), page);
            let m = &mut Arc::make_mut(&mut self.memo)[Self::memo_index(va)];
            (m.generation, m.page, m.tag, m.nroot) = (generation, va >> 12, tag, nroot);
            m.hit = Some(hit);
            m.state = hit_state(&hit);
        }
        FillResult { installed: size, victim }
    }

    /// Remove the entry at `slot` (an exclusive hierarchy moving it up). Returns it.
    pub(crate) fn take(&mut self, slot: TlbSlot) -> Entry {
        let a = &mut self.arrays[slot.array as usize];
        let i = slot.set as usize * a.ways + slot.way as usize;
        let e = a.entries[i];
        a.set_slot(slot.set as usize, i, INVALID);
        self.generation += 1;
        e
    }

    pub(crate) fn remove_where(&mut self, pred: impl FnMut(&Entry) -> bool) -> u64 {
        self.remove_where_in(|_| true, pred)
    }

    /// [`Tlb::remove_where`] in the arrays `visit` selects.
    fn remove_where_in(
        &mut self,
        mut visit: impl FnMut(&mut Array) -> bool,
        mut pred: impl FnMut(&Entry) -> bool,
    ) -> u64 {
        let mut n = 0;
        for a in &mut self.arrays {
            if visit(a) {
                n += remove_in(a, &mut self.stats, &mut pred);
            }
        }
        if n > 0 {
            self.generation += 1;
        }
        n
    }

    /// Remove every entry for which `pred(tag, global, start, end)` holds, `[start, end)` being
    /// the input range the entry translates.
    pub(crate) fn remove_matching(
        &mut self,
        pred: &impl Fn(TlbTag, bool, u64, u64) -> bool,
    ) -> u64 {
        self.remove_where(|e| {
            let lo = e.va();
            pred(e.tag, e.global, lo, lo + e.size.bytes())
        })
    }

    /// Remove every entry, of any tag and size, whose translation reaches a physical byte of
    /// `[start, start + bytes)`: what hardware that keeps RMP-derived TLB state coherent must
    /// drop after an RMP update of those pages (rmp-model `TlbOnRmpUpdate::Coherent`; the
    /// mechanism is UNCONFIRMED, spec/snp.md §3.2). Returns how many were removed.
    ///
    /// Each array of 16 slots or more keeps a count of its entries by physical page from the
    /// first call on, so that a range no entry reaches costs a few probes instead of a visit
    /// of every valid entry (under `coherent`, every RMP update asks every CPU's TLBs).
    pub fn invalidate_phys(&mut self, start: Spa, bytes: u64) -> u64 {
        let s = start.raw();
        let e = s.saturating_add(bytes);
        // An empty range matches no page probe but may lie inside an entry: always visited.
        self.remove_where_in(
            |a| s >= e || a.may_reach_phys(s, e),
            |x| {
                let f = x.frame.raw();
                f < e && s < f.saturating_add(x.size.bytes())
            },
        )
    }

    /// INVLPG: remove every entry, of any size, that translates `va` for `tag` (global entries
    /// of the ASID included). Returns how many were removed.
    pub fn invalidate_page<V: PagedAddr>(&mut self, va: V, tag: TlbTag) -> u64 {
        self.invalidate_range(va, 1, tag)
    }

    /// INVLPG over `[start, start + bytes)`: every entry overlapping the range for `tag`
    /// (global entries of the ASID included), whatever nested root it was built under.
    pub fn invalidate_range<V: PagedAddr>(&mut self, start: V, bytes: u64, tag: TlbTag) -> u64 {
        self.invalidate_range_raw(start.raw(), bytes, tag)
    }

    pub(crate) fn invalidate_range_raw(&mut self, s: u64, bytes: u64, tag: TlbTag) -> u64 {
        let e = s.saturating_add(bytes);
        self.remove_where(|x| {
            x.tag.asid == tag.asid && (x.global || x.tag.pcid == tag.pcid) && x.overlaps(s, e)
        })
    }

    /// Apply a page-table change's token for address space `tag`: INVLPG over each stale
    /// range. (Paging-structure caches are the [`crate::Mmu`]'s: use
    /// [`crate::Mmu::invalidate`] to reach them too.) Returns how many entries were removed.
    pub fn invalidate<V: PagedAddr>(&mut self, inv: &PendingInvalidation<V>, tag: TlbTag) -> u64 {
        inv.ranges().iter().map(|r| self.invalidate_range(r.start, r.bytes, tag)).sum()
    }

    /// Flush a whole scope. Returns how many entries were removed.
    #[inline]
    pub fn flush(&mut self, scope: FlushScope) -> u64 {
        // An empty TLB (the common case under `rmp.tlb_on_update = global-flush`, which
        // flushes every CPU on every RMP change) has nothing to visit: answered inline.
        if self.arrays.iter().all(|a| a.size_used == [0; 3]) {
            return 0;
        }
        self.flush_entries(scope)
    }

    /// [`Tlb::flush`] of a TLB that holds entries.
    #[inline(never)]
    fn flush_entries(&mut self, scope: FlushScope) -> u64 {
        match scope {
            FlushScope::All => self.remove_where(|_| true),
            FlushScope::Asid(asid) => self.remove_where(|e| e.tag.asid == asid),
            FlushScope::Context(tag) => self.remove_where(|e| e.tag == tag && !e.global),
            FlushScope::AllNonGlobal(asid) => {
                self.remove_where(|e| e.tag.asid == asid && !e.global)
            }
            FlushScope::AllGuests => self.remove_where(|e| e.tag.asid != 0),
            FlushScope::NestedRoot(root) => {
                let r = nroot_key(Some(root));
                self.remove_where(|e| e.nroot == r)
            }
            FlushScope::AllNested => self.remove_where(|e| e.nroot != 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::WriteCheck;
    use proptest::prelude::{Just, Strategy, prop_assert, prop_assert_eq, prop_oneof, proptest};
    use sim_core::Hva;

    fn fa(ways: u32) -> TlbConfig {
        TlbConfig::new(vec![TlbArrayConfig::fully_assoc(&PageSize::ALL, ways)], 0)
    }

    fn split(sets: u32, ways: u32) -> TlbConfig {
        TlbConfig::new(
            vec![
                TlbArrayConfig::set_assoc(&[PageSize::K4], sets, ways),
                TlbArrayConfig::set_assoc(&[PageSize::M2], sets, ways),
            ],
            0,
        )
    }

    fn fill(frame: u64, size: PageSize, global: bool) -> TlbFill {
        TlbFill {
            frame: Spa::new(frame),
            size,
            perms: Perms { readable: true, writable: true, user: false, executable: false },
            nested_perms: Perms::ALL,
            global,
            dirty: true,
            cache: CheckCache::default(),
        }
    }

    const T: TlbTag = TlbTag::HOST;

    /// A fresh TLB has no per-slot storage; everything that reads it before the first fill
    /// behaves as an empty TLB, and the first fill allocates it in the initial state (the
    /// LRU order of a fresh array: the lowest invalid way first, then way 0 oldest).
    #[test]
    fn storage_comes_with_the_first_fill() {
        for cfg in [fa(4), fa(72), split(4, 2)] {
            let mut t = Tlb::new(&cfg).unwrap();
            assert!(t.arrays.iter().all(|a| a.keys.is_empty() && a.entries.is_empty()));
            assert_eq!(t.capacity(), cfg.arrays.iter().map(|a| (a.sets * a.ways) as usize).sum());
            let copy = t.clone();
            assert!(t.lookup(Hva::new(0x1000), T).is_none());
            assert_eq!(t.flush(FlushScope::All), 0);
            assert_eq!(t.invalidate_page(Hva::new(0x1000), T), 0);
            assert_eq!(t.occupancy(), PerSize([0, 0, 0]));
            assert!(t.arrays.iter().all(|a| a.keys.is_empty()), "nothing allocated yet");
            t.fill(Hva::new(0x1000), T, &fill(0xa000, PageSize::K4, false));
            assert!(t.arrays.iter().any(|a| a.keys.len() == a.sets * a.ways));
            assert_eq!(t.lookup(Hva::new(0x1abc), T).unwrap().pa, Spa::new(0xaabc));
            assert!(copy.arrays.iter().all(|a| a.keys.is_empty()), "the clone is separate");
        }
    }

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

    /// What a TLB's physical filters hold against a recount of its valid entries.
    fn phys_filters_consistent(t: &Tlb) -> bool {
        t.arrays.iter().filter(|a| !a.phys.is_empty()).all(|a| {
            let mut want = vec![0u16; a.phys.len()];
            for e in a.entries.iter().filter(|e| e.valid) {
                phys_count(&mut want, e, true);
            }
            want == a.phys
        })
    }

    /// One step of [`invalidate_phys_with_its_filter_matches_a_full_visit`].
    #[derive(Debug, Clone)]
    enum PhysOp {
        /// Fill page `va_page` (of size `size`) with a frame numbered `frame_page`.
        Fill { va_page: u64, frame_page: u64, size: PageSize },
        /// Invalidate `[start, start + bytes)` physically.
        Phys { start: u64, bytes: u64 },
        /// INVLPG of a 4K page.
        Page { va_page: u64 },
        /// Flush everything.
        Flush,
    }

    fn phys_op() -> impl Strategy<Value = PhysOp> {
        let size =
            prop_oneof![4 => Just(PageSize::K4), 2 => Just(PageSize::M2), 1 => Just(PageSize::G1)];
        let bytes = prop_oneof![
            Just(0u64),
            Just(1),
            Just(4096),
            Just(8 * 4096),
            Just(9 * 4096),
            Just(2 << 20),
            Just(3 << 20),
            Just(1 << 30),
            1u64..(5 << 20),
        ];
        // Mostly near the frames the fills use (the first 4 MiB of each of the first four
        // GiB), at any byte.
        let start = prop_oneof![
            1 => 0u64..(3u64 << 30),
            3 => (0u64..4, 0u64..(4 << 20)).prop_map(|(g, off)| g << 30 | off),
        ];
        prop_oneof![
            4 => (0u64..64, 0u64..32, size).prop_map(|(va_page, frame_page, size)| PhysOp::Fill {
                va_page,
                frame_page,
                size
            }),
            3 => (start, bytes).prop_map(|(start, bytes)| PhysOp::Phys { start, bytes }),
            1 => (0u64..64).prop_map(|va_page| PhysOp::Page { va_page }),
            1 => Just(PhysOp::Flush),
        ]
    }

    proptest! {
        /// The physical filters change no outcome: against a visit of every valid entry (what
        /// `invalidate_phys` did before them), on the same fills, INVLPGs, flushes and
        /// physical invalidations of every size and alignment, the same entries go and the
        /// same stay; and each filter always equals a recount of its array's entries.
        #[test]
        fn invalidate_phys_with_its_filter_matches_a_full_visit(
            ops in proptest::collection::vec(phys_op(), 1..120),
        ) {
            for cfg in [fa(24), split(8, 4)] {
                let mut t = Tlb::new(&cfg).unwrap();
                let mut r = t.clone();
                for op in &ops {
                    match *op {
                        PhysOp::Fill { va_page, frame_page, size } => {
                            let va = Hva::new(va_page << size.shift());
                            // Every other frame only 4K-aligned, as no walk makes one:
                            // the filter must not rely on alignment.
                            let shift = if frame_page % 2 == 0 { size.shift() } else { 12 };
                            let f = fill((frame_page % 4) << 30 | frame_page << shift, size, false);
                            t.fill(va, T, &f);
                            r.fill(va, T, &f);
                        }
                        PhysOp::Phys { start, bytes } => {
                            let e = start.saturating_add(bytes);
                            let got = t.invalidate_phys(Spa::new(start), bytes);
                            let want = r.remove_where(|x| {
                                let f = x.frame.raw();
                                f < e && start < f.saturating_add(x.size.bytes())
                            });
                            prop_assert_eq!(got, want, "{:?}", op);
                        }
                        PhysOp::Page { va_page } => {
                            let va = Hva::new(va_page << 12);
                            prop_assert_eq!(t.invalidate_page(va, T), r.invalidate_page(va, T));
                        }
                        PhysOp::Flush => {
                            prop_assert_eq!(t.flush(FlushScope::All), r.flush(FlushScope::All));
                        }
                    }
                    prop_assert!(phys_filters_consistent(&t));
                    prop_assert_eq!(t.occupancy(), r.occupancy());
                    for size in PageSize::ALL {
                        for p in 0..64u64 {
                            let va = Hva::new(p << size.shift());
                            prop_assert_eq!(
                                t.peek(va, T).map(|h| h.pa),
                                r.peek(va, T).map(|h| h.pa)
                            );
                        }
                    }
                }
            }
        }
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
        assert!(Tlb::new(&TlbConfig::new(vec![], 0)).is_err());
        let no4k = TlbConfig::new(vec![TlbArrayConfig::fully_assoc(&[PageSize::M2], 1)], 0);
        assert!(Tlb::new(&no4k).is_err());
        let twice = TlbConfig::new(
            vec![TlbArrayConfig { sizes: vec![PageSize::K4, PageSize::K4], sets: 1, ways: 1 }],
            0,
        );
        assert!(Tlb::new(&twice).is_err());
        // A size in two arrays is fine (SPR's STLB halves).
        let halves = TlbConfig::new(
            vec![
                TlbArrayConfig::fully_assoc(&[PageSize::K4], 1),
                TlbArrayConfig::fully_assoc(&[PageSize::K4], 1),
            ],
            0,
        );
        assert!(Tlb::new(&halves).is_ok());
        assert!(Tlb::new(&split(3, 1)).is_err());
        let plru_too_wide = TlbConfig {
            replacement: Replacement::TreePlru,
            ..TlbConfig::new(vec![TlbArrayConfig::fully_assoc(&[PageSize::K4], 65)], 0)
        };
        assert!(Tlb::new(&plru_too_wide).is_err());
    }

    fn page(i: u64) -> Hva {
        Hva::new(i << 12)
    }

    fn touch(t: &mut Tlb, i: u64) -> bool {
        if t.lookup(page(i), T).is_some() {
            return true;
        }
        t.fill(page(i), T, &fill(i << 12, PageSize::K4, false));
        false
    }

    /// A size held by two arrays (SPR's STLB halves): 4K fills use both, 2M only the first,
    /// 1G only the second; with both candidate sets full the least recently used victim of
    /// the two goes.
    #[test]
    fn split_halves_share_4k() {
        let cfg = TlbConfig::new(
            vec![
                TlbArrayConfig::fully_assoc(&[PageSize::K4, PageSize::M2], 2),
                TlbArrayConfig::fully_assoc(&[PageSize::K4, PageSize::G1], 2),
            ],
            0,
        );
        let mut t = Tlb::new(&cfg).unwrap();
        for i in 0..4 {
            assert!(!touch(&mut t, i));
        }
        assert_eq!(t.occupancy(), PerSize([4, 0, 0]), "4K fills both halves");
        for i in 0..4 {
            assert!(touch(&mut t, i));
        }
        // Page 4 evicts the LRU of all four (page 0, in the first half).
        assert!(!touch(&mut t, 4));
        assert!(t.peek(page(0), T).is_none());
        for i in 1..5 {
            assert!(t.peek(page(i), T).is_some());
        }
        // A 1G fill can only go to the second half: it evicts that half's LRU (page 3 was
        // touched before 4 but after 1, 2; the second half holds 2 and 3 → 2 goes).
        t.fill(Hva::new(1 << 30), T, &fill(1 << 30, PageSize::G1, false));
        assert!(t.peek(page(2), T).is_none());
        assert!(t.peek(page(1), T).is_some());
        assert_eq!(t.occupancy(), PerSize([3, 0, 1]));
    }

    /// Tree-PLRU in one 4-way set, by hand: the access sequence 0,1,2,3,0,4 evicts page 2
    /// (true LRU would evict page 1).
    #[test]
    fn tree_plru_victims_by_hand() {
        for (policy, gone) in [(Replacement::TreePlru, 2), (Replacement::Lru, 1)] {
            let cfg = TlbConfig {
                replacement: policy,
                ..TlbConfig::new(vec![TlbArrayConfig::fully_assoc(&[PageSize::K4], 4)], 0)
            };
            let mut t = Tlb::new(&cfg).unwrap();
            for i in [0, 1, 2, 3, 0, 4] {
                touch(&mut t, i);
            }
            assert!(t.peek(page(gone), T).is_none(), "{policy:?}");
            assert_eq!(t.occupancy().total(), 4);
        }
    }

    /// Random replacement is reproducible from the seed and differs across seeds.
    #[test]
    fn random_replacement_is_seeded() {
        let run = |seed| {
            let cfg = TlbConfig {
                replacement: Replacement::Random,
                ..TlbConfig::new(vec![TlbArrayConfig::fully_assoc(&[PageSize::K4], 8)], 0)
            };
            let mut t = Tlb::with_rng(&cfg, &Rng::new(seed)).unwrap();
            let mut hits = Vec::new();
            for i in 0..200u64 {
                hits.push(touch(&mut t, (i * 7) % 13));
            }
            hits
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    /// The memo never changes what a lookup finds: a smaller entry filled after a larger one
    /// for the same address wins, as a full search says.
    #[test]
    fn memo_respects_later_fills() {
        let mut t = Tlb::new(&fa(8)).unwrap();
        t.fill(Hva::new(0x20_0000), T, &fill(0x4000_0000, PageSize::M2, false));
        assert_eq!(t.lookup(Hva::new(0x20_1000), T).unwrap().size, PageSize::M2);
        t.fill(Hva::new(0x20_1000), T, &fill(0x9000, PageSize::K4, false));
        let h = t.lookup(Hva::new(0x20_1000), T).unwrap();
        assert_eq!((h.size, h.pa), (PageSize::K4, Spa::new(0x9000)));
        t.invalidate_page(Hva::new(0x20_1000), T);
        assert!(t.lookup(Hva::new(0x20_1000), T).is_none());
    }

    /// A region's large entry found through the memo is not the answer once an entry of its
    /// size is filled there: a global entry of another PCID, filled into an earlier way,
    /// matches too and a search takes it (the first of equal size in way order).
    #[test]
    fn large_memo_forgets_a_region_refilled() {
        let mut t = Tlb::new(&fa(8)).unwrap();
        let (a, b) = (TlbTag { asid: 3, pcid: 0 }, TlbTag { asid: 3, pcid: 1 });
        let (other, region) = (0x4000_0000u64, 0x20_0000u64);
        // Way 0 another region's entry, way 1 the region's, for PCID 0.
        t.fill(Hva::new(other), a, &fill(0x1_0000_0000, PageSize::M2, false));
        t.fill(Hva::new(region), a, &fill(0x2_0000_0000, PageSize::M2, false));
        let first = t.lookup(Hva::new(region + 0x1000), a).unwrap();
        assert_eq!(first.pa, Spa::new(0x2_0000_1000));
        // Way 0 freed, then a global entry of PCID 1 for the region lands there.
        t.invalidate_page(Hva::new(other), a);
        t.fill(Hva::new(region), b, &fill(0x3_0000_0000, PageSize::M2, true));
        let want = t.peek(Hva::new(region + 0x2000), a).unwrap();
        assert_eq!(want.pa, Spa::new(0x3_0000_2000), "the search takes the global entry");
        let got = t.lookup(Hva::new(region + 0x2000), a).unwrap();
        assert_eq!((got.pa, got.slot), (want.pa, want.slot));
    }

    /// Lookups answered through the memos (the 4 KiB one and the large-page one) find what a
    /// search without them finds, over a mix of 4K, 2M and 1G fills, invalidations and flushes
    /// in a few 2 MiB regions, two tags, and arrays with and without presence filters.
    #[test]
    fn memos_agree_with_a_plain_search() {
        for cfg in [fa(72), fa(8), split(16, 24)] {
            let mut t = Tlb::new(&cfg).unwrap();
            let mut rng = Rng::new(11);
            let tags = [T, TlbTag { asid: 3, pcid: 0 }, TlbTag { asid: 3, pcid: 1 }];
            let (mut found_large, mut filled_after_miss) = (0, 0);
            for step in 0..20_000 {
                // Six 2 MiB regions in two 1 GiB regions: large-memo slots are shared and reused.
                let region = rng.below(6);
                // Half the time a region's first pages, where entries of every size overlap.
                let page = if rng.below(2) == 0 { rng.below(2) } else { rng.below(512) };
                let va = (region % 2) << 30 | (region / 2) << 21 | page << 12;
                let tag = tags[usize::try_from(rng.below(3)).unwrap()];
                match rng.below(100) {
                    0..=5 => {
                        let size = PageSize::ALL[usize::try_from(rng.below(3)).unwrap()];
                        let base = va & !(size.bytes() - 1);
                        // Global entries now and then: one of another PCID then matches too,
                        // so equal-size duplicates exist (a search takes the first in way order).
                        let global = rng.below(8) == 0;
                        t.fill(Hva::new(base), tag, &fill(0x1_0000_0000 + base, size, global));
                    }
                    // A fill right after the lookup that missed, as the MMU does after a walk:
                    // told what the lookup proved, it skips the search for an entry to replace
                    // and writes the memo of the page filled.
                    8..=13 => {
                        let size = PageSize::ALL[usize::try_from(rng.below(3)).unwrap()];
                        let base = va & !(size.bytes() - 1);
                        let f = fill(0x1_0000_0000 + base, size, false);
                        if let (None, absent) = t.lookup_in_inline(va, tag, None) {
                            if absent {
                                t.fill_in_size_inline::<true, true>(va, tag, None, &f);
                            } else {
                                t.fill_in_size::<false, false>(va, tag, None, &f);
                            }
                            filled_after_miss += 1;
                        }
                    }
                    6 => {
                        t.invalidate_page(Hva::new(va), tag);
                    }
                    7 if step % 50 == 0 => {
                        t.flush(FlushScope::All);
                    }
                    _ => {
                        let want = t.peek(Hva::new(va), tag);
                        let got = t.lookup(Hva::new(va), tag);
                        assert_eq!(
                            got.map(|h| (h.pa, h.size, h.slot)),
                            want.map(|h| (h.pa, h.size, h.slot)),
                            "step {step} va {va:#x} tag {tag:?}"
                        );
                        found_large += u32::from(got.is_some_and(|h| h.size != PageSize::K4));
                    }
                }
            }
            assert!(found_large > 1000, "large entries were found: {found_large}");
            assert!(filled_after_miss > 100, "fills after a miss: {filled_after_miss}");
        }
    }

    /// The valid-slot bitset that flushes walk agrees with the entries after any mix of fills,
    /// invalidations and scoped flushes, over arrays of more than 4,096 slots (several summary
    /// words), and a flush removes exactly what a scan of every entry would.
    #[test]
    fn valid_slot_bits_track_entries() {
        let cfg = TlbConfig::new(
            vec![
                TlbArrayConfig::set_assoc(&[PageSize::K4], 256, 24),
                TlbArrayConfig::fully_assoc(&[PageSize::M2, PageSize::G1], 72),
            ],
            0,
        );
        let mut t = Tlb::new(&cfg).unwrap();
        let mut rng = Rng::new(3);
        let check = |t: &Tlb| {
            for a in &t.arrays {
                for (i, e) in a.entries.iter().enumerate() {
                    let bit = a.valid.words[i / 64] >> (i % 64) & 1 == 1;
                    assert_eq!(bit, e.valid, "slot {i}");
                }
                for (j, &w) in a.valid.words.iter().enumerate() {
                    assert_eq!(a.valid.summary[j / 64] >> (j % 64) & 1 == 1, w != 0, "word {j}");
                }
            }
        };
        for round in 0..40 {
            for _ in 0..rng.below(400) {
                let tag = TlbTag { asid: u16::try_from(rng.below(3)).unwrap(), pcid: 0 };
                let size = PageSize::ALL[usize::try_from(rng.below(3)).unwrap()];
                let va = rng.below(1 << 40) & !(size.bytes() - 1);
                t.fill(Hva::new(va), tag, &fill(va, size, rng.chance(1, 4)));
            }
            if round % 3 == 0 {
                t.invalidate_range(Hva::new(rng.below(1 << 40)), 1 << 32, T);
            }
            check(&t);
            let scope = match round % 4 {
                0 => FlushScope::All,
                1 => FlushScope::Asid(1),
                2 => FlushScope::AllNonGlobal(2),
                _ => FlushScope::AllGuests,
            };
            let doomed = |e: &Entry| match scope {
                FlushScope::All => true,
                FlushScope::Asid(a) => e.tag.asid == a,
                FlushScope::AllNonGlobal(a) => e.tag.asid == a && !e.global,
                _ => e.tag.asid != 0,
            };
            let expect: u64 = t
                .arrays
                .iter()
                .map(|a| a.entries.iter().filter(|e| e.valid && doomed(e)).count() as u64)
                .sum();
            assert_eq!(t.flush(scope), expect, "round {round}");
            check(&t);
            assert!(t.arrays.iter().all(|a| a.entries.iter().all(|e| !e.valid || !doomed(e))));
        }
    }
}
