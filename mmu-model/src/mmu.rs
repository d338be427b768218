//! One CPU's MMU: the TLB hierarchy, the paging-structure caches, the nested TLB, the walkers
//! and the check stage, priced per transaction (STYLE rules 11, 13).
//!
//! Functional state (TLB and cache contents, A/D bits) is updated by [`Mmu::access`] and
//! [`Mmu::guest_access`], which also price the access: the levels probed, each walk reference
//! through a [`CacheLatency`] model, each check-stage read. How much of that latency the CPU
//! actually waits for is the overlap layer's business ([`WalkOverlap`], kept apart).

use crate::addr::PagedAddr;
use crate::check::{
    CheckAllow, CheckRequest, CheckTarget, CheckVerdict, CheckWork, MAX_GUEST_CHECK_READS,
    TranslationCheck, WriteCheck,
};
use crate::config::MmuConfig;
use crate::entry::PagingEntry;
use crate::fault::GuestFault;
use crate::hierarchy::{HierarchyGeometry, TlbHierarchy, TlbLevelId, TlbLookup};
use crate::inline::Scratch;
use crate::inval::PendingInvalidation;
use crate::latency::{CacheLatency, MemRefKind};
use crate::level::{Level, Paging};
use crate::nested::{
    Caches2d, Fast2d, GuestAddr, GuestContext, GuestMemory, GuestTranslation, GuestWalkRequest,
    NestedKind, NestedRefs, NestedResult, NtlbHit, Plan2d, fast_walk_2d, walk_2d_functional,
};
use crate::overlap::WalkOverlap;
use crate::pwc::Pwc;
use crate::tables::PhysMemTables;
use crate::tlb::{FlushScope, Tlb, TlbFill, TlbSlot, TlbTag, nroot_key};
use crate::walk::{
    AccessKind, FastWalk, PageFault, PagingControls, Perms, PfErrorCode, Plan, Privilege, RefKind,
    Stage, Translation, WalkContext, WalkRef, WalkRefs, WalkRequest, WalkStart, X86Masks,
    base_code, check_fast_walk, fast_walk_x86, permits, permits_table, plan_checked_into,
    walk_checked_functional, walk_functional,
};
use crate::{InlineVec, check::MAX_CHECK_READS, pte::PteFlags, pte::PteFormat, pte::X86Pte};
use sim_core::config::ConfigError;
use sim_core::stats::PerSize;
use sim_core::{Agent, Context, CpuId, Cycles, Gpa, Gva, Hva, PageSize, Rng, Spa};
use std::collections::BTreeMap;

/// The translation state CR3 names: root table, depth, and the TLB tag of the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cr3 {
    /// The root table.
    pub root: Spa,
    /// 4- or 5-level (CR4.LA57).
    pub paging: Paging,
    /// ASID and PCID of the address space.
    pub tag: TlbTag,
}

/// One access presented to the MMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRequest {
    /// The host virtual address.
    pub va: Hva,
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// Supervisor or user.
    pub privilege: Privilege,
    /// What the CPU runs (passed to the check stage as the agent's context).
    pub ctx: Context,
}

impl AccessRequest {
    /// A host-kernel (CPL 0) access.
    pub const fn kernel(va: Hva, kind: AccessKind) -> AccessRequest {
        AccessRequest { va, kind, privilege: Privilege::Supervisor, ctx: Context::HostKernel }
    }
}

/// The architectural result of an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessResult {
    /// The access proceeds to `spa`.
    Translated {
        /// The system-physical address.
        spa: Spa,
        /// The size of the translation used (the TLB entry's size).
        size: PageSize,
    },
    /// #PF (from the walk or the check stage).
    Fault(PageFault<Hva>),
    /// #GP: the address is not canonical.
    NonCanonical {
        /// The address.
        addr: Hva,
    },
}

/// How the access was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum AccessPath {
    /// No translation attempted (non-canonical address).
    None,
    /// TLB hit (L1, or L2 then refilled into L1).
    TlbHit,
    /// TLB hit by a write on a read-filled entry: the write check ran.
    TlbHitWriteCheck,
    /// Page walk (a miss; or a hit that could not be used: permissions, or D clear on a write).
    Walk,
}

/// The memory the check stage read during one host access.
pub type CheckReads = InlineVec<Spa, MAX_CHECK_READS>;

/// The memory the check stage read during one guest access.
pub type GuestCheckReads = InlineVec<Spa, MAX_GUEST_CHECK_READS>;

/// What one access did and cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessOutcome {
    /// The architectural result.
    pub result: AccessResult,
    /// Cycles the translation cost: the TLB levels probed, the paging-structure-cache probe of
    /// a walk, every walk reference and check-stage read priced by the cache-latency model,
    /// and the checker's fixed cycles. What the CPU waits for is [`WalkOverlap`]'s business.
    pub cost: Cycles,
    /// How it was resolved.
    pub path: AccessPath,
    /// The TLB level that hit (for `TlbHit*` paths).
    pub hit_level: Option<TlbLevelId>,
    /// The walk's references (empty unless `path` is `Walk`).
    pub refs: WalkRefs<Spa>,
    /// What the check stage read (RMP entries), already priced into `cost`.
    pub check_reads: CheckReads,
}

impl AccessOutcome {
    /// Whether a page walk was made.
    pub fn walked(&self) -> bool {
        self.path == AccessPath::Walk
    }
}

/// The result of the functional path: no TLB, no A/D updates, no timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionalOutcome {
    /// The architectural result a walk would give now.
    pub result: AccessResult,
    /// The references that walk would make.
    pub refs: WalkRefs<Spa>,
    /// What the check stage read.
    pub check_reads: CheckReads,
}

/// One guest access presented to the MMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestAccessRequest {
    /// A GVA (guest with paging) or a GPA (guest without paging: a GPA trace).
    pub addr: GuestAddr,
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// Guest CPL 0–2 or 3.
    pub privilege: Privilege,
    /// What the CPU runs (a guest vCPU; passed to the check stage).
    pub ctx: Context,
}

/// The architectural result of a guest access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestAccessResult {
    /// The access proceeds to `spa`.
    Translated {
        /// The system-physical address.
        spa: Spa,
        /// The size of the translation used (the TLB entry's size).
        size: PageSize,
    },
    /// A guest #PF, an #NPF or an EPT violation/misconfiguration.
    Fault(GuestFault),
    /// #GP in the guest: the GVA is not canonical.
    NonCanonical {
        /// The address.
        addr: Gva,
    },
}

/// What one guest access did and cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestAccessOutcome {
    /// The architectural result.
    pub result: GuestAccessResult,
    /// Cycles, priced as for [`AccessOutcome::cost`], plus the guest-PWC probe, and per
    /// nested translation the nested-TLB lookup and the nested-PWC probe of a nested walk.
    pub cost: Cycles,
    /// How it was resolved.
    pub path: AccessPath,
    /// The TLB level that hit.
    pub hit_level: Option<TlbLevelId>,
    /// The 2-D walk's references (empty unless `path` is `Walk`).
    pub refs: NestedRefs,
    /// What the check stage read.
    pub check_reads: GuestCheckReads,
}

/// Why an access faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum FaultKind {
    /// #PF, P = 0.
    NotPresent,
    /// #PF for permissions (P = 1, no RSVD, no check bits).
    Protection,
    /// #PF with RSVD.
    Reserved,
    /// #PF from the check stage (e.g. the RMP bit).
    Check,
    /// #GP for a non-canonical address.
    NonCanonical,
}

/// Why a guest access faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum GuestFaultKind {
    /// A #PF for the guest.
    GuestPageFault,
    /// #VMEXIT(NPF) from the nested walk.
    Npf,
    /// EPT violation from the nested walk.
    EptViolation,
    /// EPT misconfiguration.
    EptMisconfig,
    /// #NPF / EPT violation from the check stage.
    Check,
    /// #GP in the guest for a non-canonical GVA.
    NonCanonical,
}

/// MMU counters. Subtract snapshots for phase deltas.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MmuStats {
    /// Host accesses presented.
    pub accesses: u64,
    /// Accesses resolved by a TLB hit at any level (including write-checked hits).
    pub tlb_hits: u64,
    /// Of those, hits in an L2 TLB (L1 misses).
    pub l2_tlb_hits: u64,
    /// Hits that ran the write check on a read-filled entry.
    pub write_rechecks: u64,
    /// Walks that ended in a translation, by leaf size (TLB misses by the size they resolved
    /// to; 2-D walks by the combined size).
    pub walks: PerSize<u64>,
    /// Walks that ended in a fault.
    pub walks_faulted: u64,
    /// Walk references that read an entry.
    pub walk_reads: u64,
    /// Walk references that wrote A/D bits.
    pub walk_ad_writes: u64,
    /// Memory read by the check stage.
    pub check_reads: u64,
    /// Host faults by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Guest accesses presented.
    pub guest_accesses: u64,
    /// 2-D walks (and guest-physical nested walks) made.
    pub guest_walks: u64,
    /// Nested translations within guest walks answered by the nested TLB.
    pub nested_tlb_hits: u64,
    /// Guest faults by kind.
    pub guest_faults: BTreeMap<GuestFaultKind, u64>,
    /// Total translation cycles (the sum of outcome costs, before overlap).
    pub cycles: Cycles,
}

fn sub_map<K: Ord + Copy>(a: &BTreeMap<K, u64>, b: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
    a.iter()
        .map(|(k, v)| (*k, v - b.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v != 0)
        .collect()
}

impl std::ops::Sub for &MmuStats {
    type Output = MmuStats;
    /// `self − earlier`: the counts of the phase in between.
    fn sub(self, earlier: &MmuStats) -> MmuStats {
        MmuStats {
            accesses: self.accesses - earlier.accesses,
            tlb_hits: self.tlb_hits - earlier.tlb_hits,
            l2_tlb_hits: self.l2_tlb_hits - earlier.l2_tlb_hits,
            write_rechecks: self.write_rechecks - earlier.write_rechecks,
            walks: self.walks - earlier.walks,
            walks_faulted: self.walks_faulted - earlier.walks_faulted,
            walk_reads: self.walk_reads - earlier.walk_reads,
            walk_ad_writes: self.walk_ad_writes - earlier.walk_ad_writes,
            check_reads: self.check_reads - earlier.check_reads,
            faults: sub_map(&self.faults, &earlier.faults),
            guest_accesses: self.guest_accesses - earlier.guest_accesses,
            guest_walks: self.guest_walks - earlier.guest_walks,
            nested_tlb_hits: self.nested_tlb_hits - earlier.nested_tlb_hits,
            guest_faults: sub_map(&self.guest_faults, &earlier.guest_faults),
            cycles: self.cycles - earlier.cycles,
        }
    }
}

fn fault_kind(code: PfErrorCode) -> FaultKind {
    if code.contains(PfErrorCode::RMP) {
        FaultKind::Check
    } else if code.contains(PfErrorCode::RESERVED) {
        FaultKind::Reserved
    } else if code.contains(PfErrorCode::PRESENT) {
        FaultKind::Protection
    } else {
        FaultKind::NotPresent
    }
}

/// A TLB hit (or walk with paging-structure-cache starts) whose translation disagreed with a
/// fresh functional walk: a missing invalidation. Recorded by the oracle mode
/// ([`Mmu::enable_oracle`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OracleMismatch {
    /// The address accessed (HVA, GVA or GPA).
    pub addr: u64,
    /// How the MMU resolved it.
    pub path: AccessPath,
    /// The SPA the MMU gave (`None`: a fault).
    pub got: Option<Spa>,
    /// The SPA a fresh walk gives (`None`: a fault).
    pub expected: Option<Spa>,
}

/// How many cached entries an invalidation removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Invalidated {
    /// TLB entries (every level, the nested TLB included).
    pub tlb: u64,
    /// Paging-structure-cache entries (host, guest and nested PWCs).
    pub pwc: u64,
}

impl Invalidated {
    /// TLB plus PWC entries.
    pub const fn total(&self) -> u64 {
        self.tlb + self.pwc
    }
}

impl std::ops::AddAssign for Invalidated {
    fn add_assign(&mut self, o: Self) {
        self.tlb += o.tlb;
        self.pwc += o.pwc;
    }
}

/// INVPCID (Intel SDM Vol. 2, INVPCID; Vol. 3A §4.10.4.1), executed in address space `asid`
/// (0 = the host; a VPID for a guest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invpcid {
    /// Type 0, individual address: non-global TLB entries of (`pcid`, `addr`), and every
    /// paging-structure-cache entry of `pcid`.
    Address {
        /// The PCID.
        pcid: u16,
        /// The linear address (raw: host or guest linear).
        addr: u64,
    },
    /// Type 1, single context: non-global entries of `pcid`, and its PWC entries.
    SingleContext {
        /// The PCID.
        pcid: u16,
    },
    /// Type 2, all contexts including global translations.
    AllIncludingGlobal,
    /// Type 3, all contexts except global translations.
    AllNonGlobal,
}

/// The SVM VMCB TLB_CONTROL field (AMD APM Vol. 2 §15.16.1): what VMRUN flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TlbControl {
    /// 00h: nothing.
    DoNothing,
    /// 01h: the entire TLB, every ASID (global entries included).
    FlushAll,
    /// 03h: every entry of this guest's ASID.
    FlushAsid,
    /// 07h: this guest's non-global entries.
    FlushAsidNonGlobal,
}

impl TlbControl {
    /// Decode the field; `None` for reserved encodings.
    pub const fn from_raw(v: u8) -> Option<TlbControl> {
        match v {
            0 => Some(TlbControl::DoNothing),
            1 => Some(TlbControl::FlushAll),
            3 => Some(TlbControl::FlushAsid),
            7 => Some(TlbControl::FlushAsidNonGlobal),
            _ => None,
        }
    }
}

/// INVEPT (Intel SDM Vol. 3C §29.4.3): invalidate guest-physical and combined mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invept {
    /// Type 1: mappings derived from the EPT whose root (EP4TA) is given.
    SingleContext {
        /// The EPT root.
        root: Spa,
    },
    /// Type 2: mappings derived from every EPT.
    Global,
}

/// INVVPID (Intel SDM Vol. 3C §29.4.3): invalidate linear and combined mappings by VPID. Guest
/// physical (nested) mappings are untouched. VPID 0 is the host (INVVPID with VPID 0 fails
/// architecturally; here it removes nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invvpid {
    /// Type 0: the mappings of one linear address, every PCID, global ones included.
    IndividualAddress {
        /// The VPID.
        vpid: u16,
        /// The guest-linear address.
        addr: Gva,
    },
    /// Type 1: every mapping of one VPID.
    SingleContext {
        /// The VPID.
        vpid: u16,
    },
    /// Type 2: every mapping of every VPID but 0.
    AllContexts,
    /// Type 3: the non-global mappings of one VPID.
    SingleContextRetainingGlobals {
        /// The VPID.
        vpid: u16,
    },
}

/// One CPU's MMU.
#[derive(Debug)]
pub struct Mmu {
    cpu: CpuId,
    recheck_write_on_read_fill: bool,
    format: PteFormat,
    /// `format`'s masks for the fast walk.
    masks: X86Masks,
    controls: PagingControls,
    cr3: Cr3,
    tlbs: TlbHierarchy,
    nested_tlb: Option<Tlb>,
    pwc: Pwc,
    guest_pwc: Pwc,
    nested_pwc: Pwc,
    overlap: WalkOverlap,
    work: CheckWork,
    /// Reusable walk buffers (built in place, never moved: a 2-D plan is a few KiB).
    plan1d: Scratch<Plan<Hva, Spa>>,
    plan2d: Scratch<Plan2d>,
    oracle: Option<Vec<OracleMismatch>>,
    stats: MmuStats,
    /// `64 − va_bits` of the current paging depth (the canonical check).
    va_shift: u32,
    /// For each (access kind, privilege) ([`fast_index`]): bit `s` set iff a TLB hit of
    /// [`crate::tlb::hit_state`] `s` is usable without a walk or a write check under the
    /// current control bits and `recheck_write_on_read_fill` (the hit fast path).
    fast_ok: [u64; 6],
    /// For each (access kind, privilege) ([`fast_index`]): [`permits_table`] under the
    /// current control bits (the fast walk's permission test).
    walk_ok: [u16; 6],
    /// The fast walk's reusable buffer.
    fast: FastWalk,
    /// The fast 2-D walk's masks: of the last guest format (0) and nested format (1) seen.
    masks_2d: [(PteFormat, X86Masks); 2],
}

sim_core::clone_by_fields!(Mmu {
    cpu,
    recheck_write_on_read_fill,
    format,
    masks,
    controls,
    cr3,
    tlbs,
    nested_tlb,
    pwc,
    guest_pwc,
    nested_pwc,
    overlap,
    work,
    plan1d,
    plan2d,
    oracle,
    stats,
    va_shift,
    fast_ok,
    walk_ok,
    fast,
    masks_2d
});

/// [`permits_table`] for every (access kind, privilege), indexed by [`fast_index`].
fn walk_ok_table(controls: PagingControls) -> [u16; 6] {
    let mut t = [0; 6];
    for kind in [AccessKind::Read, AccessKind::Write, AccessKind::Fetch] {
        for privilege in [Privilege::Supervisor, Privilege::User] {
            t[fast_index(kind, privilege)] = permits_table(kind, privilege, controls);
        }
    }
    t
}

/// The index of (`kind`, `privilege`) in [`Mmu::fast_ok`]'s table.
#[inline(always)]
const fn fast_index(kind: AccessKind, privilege: Privilege) -> usize {
    let k = match kind {
        AccessKind::Read => 0,
        AccessKind::Write => 2,
        AccessKind::Fetch => 4,
    };
    match privilege {
        Privilege::Supervisor => k,
        Privilege::User => k + 1,
    }
}

/// The fast path's usability table for `controls` (see [`Mmu::fast_ok`]): the same decision
/// as the general path's, tabulated.
fn fast_ok_table(controls: PagingControls) -> [u64; 6] {
    let mut t = [0u64; 6];
    for kind in [AccessKind::Read, AccessKind::Write, AccessKind::Fetch] {
        for privilege in [Privilege::Supervisor, Privilege::User] {
            for s in 0..64u32 {
                let bit = |b: u32| s >> b & 1 == 1;
                let perms =
                    Perms { readable: bit(0), writable: bit(1), user: bit(2), executable: bit(3) };
                let (dirty, allowed) = (bit(4), bit(5));
                // A write hit is fast only when its check passed (`allowed`); otherwise the
                // general path re-checks it or walks again.
                let ok = permits(perms, kind, privilege, controls)
                    && (kind != AccessKind::Write || (dirty && allowed));
                if ok {
                    t[fast_index(kind, privilege)] |= 1 << s;
                }
            }
        }
    }
    t
}

/// The nested-TLB tag of a guest: its ASID, PCID 0.
const fn ntag(asid: u16) -> TlbTag {
    TlbTag { asid, pcid: 0 }
}

impl Mmu {
    /// The MMU of CPU `cpu`, with empty TLBs and caches and CR3 = `cr3`; controls as Linux
    /// sets them. Random replacement draws from `Rng::new(cfg.replacement_seed)` forked by
    /// CPU and structure.
    ///
    /// # Errors
    /// [`ConfigError`] if `cfg` is invalid.
    pub fn new(cpu: CpuId, cfg: &MmuConfig, cr3: Cr3) -> Result<Mmu, ConfigError> {
        use sim_core::config::ConfigBlock;
        cfg.validate()?;
        let rng = Rng::new(cfg.replacement_seed).fork(u64::from(cpu));
        let g = HierarchyGeometry {
            itlb: cfg.itlb.as_ref(),
            dtlb: &cfg.dtlb,
            store_dtlb: cfg.store_dtlb.as_ref(),
            l2_itlb: cfg.l2_itlb.as_ref(),
            stlb: cfg.stlb.as_ref(),
            inclusion: cfg.inclusion,
        };
        Ok(Mmu {
            cpu,
            recheck_write_on_read_fill: cfg.recheck_write_on_read_fill,
            format: cfg.pte_format(),
            masks: X86Masks::new(cfg.pte_format()),
            controls: PagingControls::default(),
            cr3,
            tlbs: TlbHierarchy::new(&g, &rng.fork(1))?,
            nested_tlb: cfg
                .nested_tlb
                .as_ref()
                .map(|c| Tlb::with_rng(c, &rng.fork(2)))
                .transpose()?,
            pwc: Pwc::new(&cfg.pwc, "mmu.pwc", &rng.fork(3))?,
            guest_pwc: Pwc::new(&cfg.guest_pwc, "mmu.guest_pwc", &rng.fork(4))?,
            nested_pwc: Pwc::new(&cfg.nested_pwc, "mmu.nested_pwc", &rng.fork(5))?,
            overlap: WalkOverlap::new(cfg.page_walkers, cfg.mlp_window),
            work: CheckWork::default(),
            plan1d: Scratch::default(),
            plan2d: Scratch::default(),
            oracle: None,
            stats: MmuStats::default(),
            va_shift: 64 - cr3.paging.va_bits(),
            fast_ok: fast_ok_table(PagingControls::default()),
            walk_ok: walk_ok_table(PagingControls::default()),
            fast: FastWalk::EMPTY,
            masks_2d: [(cfg.pte_format(), X86Masks::new(cfg.pte_format())); 2],
        })
    }

    /// The CPU.
    pub const fn cpu(&self) -> CpuId {
        self.cpu
    }

    /// Current CR3.
    pub const fn cr3(&self) -> Cr3 {
        self.cr3
    }

    /// MOV CR3: switch address space. Unless `preserve` (CR3 bit 63 with PCIDs), the new
    /// context's non-global TLB entries and its paging-structure-cache entries are flushed
    /// (SDM Vol. 3A §4.10.4.1).
    pub fn load_cr3(&mut self, cr3: Cr3, preserve: bool) -> Invalidated {
        self.cr3 = cr3;
        self.va_shift = 64 - cr3.paging.va_bits();
        if preserve {
            return Invalidated::default();
        }
        let t = cr3.tag;
        Invalidated {
            tlb: self.tlbs.flush(FlushScope::Context(t)),
            pwc: self.pwc_for(t.asid).remove_where(|et, _| et == t),
        }
    }

    /// Current control bits.
    pub const fn controls(&self) -> PagingControls {
        self.controls
    }

    /// Change control bits (WP, SMEP, SMAP, AC). Cached permissions were checked at use, so no
    /// flush is implied.
    pub fn set_controls(&mut self, c: PagingControls) {
        self.controls = c;
        self.fast_ok = fast_ok_table(c);
        self.walk_ok = walk_ok_table(c);
    }

    /// The TLB hierarchy.
    pub const fn tlb(&self) -> &TlbHierarchy {
        &self.tlbs
    }

    /// The TLB hierarchy, for TLB-only invalidations and flushes (the paging-structure caches
    /// are reached through the `Mmu` operations: [`Mmu::invalidate`], [`Mmu::invlpg`], …).
    pub fn tlb_mut(&mut self) -> &mut TlbHierarchy {
        &mut self.tlbs
    }

    /// The nested (gPA→hPA) TLB, if configured.
    pub fn nested_tlb(&self) -> Option<&Tlb> {
        self.nested_tlb.as_ref()
    }

    /// The host paging-structure caches.
    pub const fn pwc(&self) -> &Pwc {
        &self.pwc
    }

    /// The guest paging-structure caches (2-D walks, keyed by GVA).
    pub const fn guest_pwc(&self) -> &Pwc {
        &self.guest_pwc
    }

    /// The nested paging-structure caches (NPT/EPT entries, keyed by GPA).
    pub const fn nested_pwc(&self) -> &Pwc {
        &self.nested_pwc
    }

    /// The overlap timing layer of this CPU.
    pub fn overlap_mut(&mut self) -> &mut WalkOverlap {
        &mut self.overlap
    }

    /// Counters.
    pub const fn stats(&self) -> &MmuStats {
        &self.stats
    }

    /// Turn on the oracle: every access's result is compared with a fresh functional walk
    /// (no caches, no check stage), and disagreements — stale TLB or PWC contents left by a
    /// missing invalidation — are recorded. Slow; for tests and debugging.
    pub fn enable_oracle(&mut self) {
        self.oracle.get_or_insert_with(Vec::new);
    }

    /// What the oracle recorded (empty when off).
    pub fn oracle_mismatches(&self) -> &[OracleMismatch] {
        self.oracle.as_deref().unwrap_or(&[])
    }

    fn pwc_for(&mut self, asid: u16) -> &mut Pwc {
        if asid == 0 { &mut self.pwc } else { &mut self.guest_pwc }
    }

    fn ctx(&self) -> WalkContext<Spa> {
        WalkContext {
            root: self.cr3.root,
            paging: self.cr3.paging,
            format: self.format,
            controls: self.controls,
        }
    }

    fn agent(&self, ctx: Context) -> Agent {
        Agent::Cpu { cpu: self.cpu, ctx }
    }

    /// Price a walk's references in order, then the check stage's reads, and copy those
    /// reads into the outcome (`reads`): the cost part shared by 1-D and 2-D walks.
    #[inline]
    fn price_walk<L: CacheLatency + ?Sized, const N: usize>(
        &mut self,
        refs: &[crate::walk::WalkRef<Spa>],
        reads: &mut InlineVec<Spa, N>,
        lat: &mut L,
    ) -> Cycles {
        let mut cost = Cycles::ZERO;
        for r in refs {
            cost += self.price_ref(r.addr, r.level, r.kind, lat);
        }
        // `price_checks`, copying each read on the way.
        self.stats.check_reads += self.work.reads.len() as u64;
        for &a in &self.work.reads {
            cost += lat.latency(a, MemRefKind::CheckRead);
            reads.push(a);
        }
        cost + self.work.fixed
    }

    fn price_checks<L: CacheLatency + ?Sized>(&mut self, lat: &mut L) -> Cycles {
        self.stats.check_reads += self.work.reads.len() as u64;
        self.work.reads.iter().map(|&a| lat.latency(a, MemRefKind::CheckRead)).sum::<Cycles>()
            + self.work.fixed
    }

    fn price_ref<L: CacheLatency + ?Sized>(
        &mut self,
        addr: Spa,
        level: Level,
        kind: RefKind,
        lat: &mut L,
    ) -> Cycles {
        let k = match kind {
            RefKind::Read => {
                self.stats.walk_reads += 1;
                MemRefKind::TableRead(level)
            }
            RefKind::AdWrite => {
                self.stats.walk_ad_writes += 1;
                MemRefKind::TableAdWrite(level)
            }
        };
        lat.latency(addr, k)
    }

    #[inline]
    fn finish(&mut self, out: &AccessOutcome) {
        match out.result {
            AccessResult::Translated { .. } => {}
            AccessResult::Fault(f) => {
                *self.stats.faults.entry(fault_kind(f.code)).or_default() += 1
            }
            AccessResult::NonCanonical { .. } => {
                *self.stats.faults.entry(FaultKind::NonCanonical).or_default() += 1;
            }
        }
        self.stats.cycles += out.cost;
    }

    #[inline]
    fn count_hit(&mut self, level: Option<TlbLevelId>) {
        self.stats.tlb_hits += 1;
        if level.is_some_and(|l| !l.is_l1()) {
            self.stats.l2_tlb_hits += 1;
        }
    }

    /// Translate one host access (timing mode): TLB lookup (L1, then L2); on a usable hit,
    /// done (running the write check first if a write meets a read-filled entry); otherwise a
    /// walk from the deepest paging-structure-cache hit, through the check stage, A/D updates,
    /// and fills of the TLBs and the PWCs. A fault removes the address's TLB and PWC entries
    /// (SDM Vol. 3A §4.10.4.1) and installs none.
    ///
    /// Cost = the TLB levels probed + on a walk the PWC probe, each walk reference priced by
    /// `lat`, each check-stage read priced by `lat`, and the checker's fixed cycles.
    ///
    /// The outcome is a few hundred bytes: in a loop, [`Mmu::access_into`] reuses one.
    #[inline]
    pub fn access<C: TranslationCheck + ?Sized, L: CacheLatency + ?Sized>(
        &mut self,
        tables: &mut PhysMemTables,
        checker: &mut C,
        lat: &mut L,
        req: &AccessRequest,
    ) -> AccessOutcome {
        if let Some((spa, size, cost, level)) = self.host_hit_fast(req) {
            return hit_outcome(spa, size, cost, level);
        }
        let mut out = empty_outcome(req);
        self.access_general(tables, checker, lat, req, &mut out);
        out
    }

    /// [`Mmu::access`] for an address space mapped mostly with large pages (the kernel's
    /// direct map): a TLB hit on a 4 KiB page the page memo does not know is also answered
    /// through the memo of its 2 MiB region (`Mmu::host_hit_large`). Same outcome and side
    /// effects as [`Mmu::access`]; a function of its own so that [`Mmu::access`], which the
    /// walk benchmarks of issue #3 measure, pays nothing for the extra test.
    #[inline(always)]
    pub fn access_large<C: TranslationCheck + ?Sized, L: CacheLatency + ?Sized>(
        &mut self,
        tables: &mut PhysMemTables,
        checker: &mut C,
        lat: &mut L,
        req: &AccessRequest,
    ) -> AccessOutcome {
        if let Some((spa, size, cost, level)) =
            self.host_hit_fast(req).or_else(|| self.host_hit_large(req))
        {
            return hit_outcome(spa, size, cost, level);
        }
        let mut out = empty_outcome(req);
        self.access_general(tables, checker, lat, req, &mut out);
        out
    }

    /// The hit fast paths of [`Mmu::access_large`] alone: `Some((spa, cost))` when one of
    /// them answered (with every side effect of the hit, as there), `None` (nothing done)
    /// when the caller must take [`Mmu::access_large`]. Spares a caller that only needs the
    /// SPA and the cost the outcome, a few hundred bytes.
    #[inline(always)]
    pub fn access_large_hit(&mut self, req: &AccessRequest) -> Option<(Spa, Cycles)> {
        self.host_hit_fast(req)
            .or_else(|| self.host_hit_large(req))
            .map(|(spa, _, cost, _)| (spa, cost))
    }

    /// [`Mmu::access`] into the caller's `out` (every field overwritten), which is a few
    /// hundred bytes: a TLB hit writes only its result, cost, path and level and empties the
    /// two lists (sets their lengths). The fast way to translate in a loop.
    #[inline]
    pub fn access_into<C: TranslationCheck + ?Sized, L: CacheLatency + ?Sized>(
        &mut self,
        tables: &mut PhysMemTables,
        checker: &mut C,
        lat: &mut L,
        req: &AccessRequest,
        out: &mut AccessOutcome,
    ) {
        out.refs.clear();
        out.check_reads.clear();
        if let Some((spa, size, cost, level)) = self.host_hit_fast(req) {
            out.result = AccessResult::Translated { spa, size };
            out.cost = cost;
            out.path = AccessPath::TlbHit;
            out.hit_level = Some(level);
            return;
        }
        out.result = AccessResult::NonCanonical { addr: req.va };
        out.cost = Cycles::ZERO;
        out.path = AccessPath::None;
        out.hit_level = None;
        self.access_general(tables, checker, lat, req, out);
    }

    /// The common case of [`Mmu::access`], small enough to inline into the caller: an L1 hit
    /// the memo of the L1 answers, usable without a write check, oracle off. Does everything
    /// the general path does for such a hit (TLB replacement state and counters, MMU counters)
    /// and returns the SPA, size, cost and level; `None` (nothing done): take the general
    /// path.
    #[inline(always)]
    fn host_hit_fast(
        &mut self,
        req: &AccessRequest,
    ) -> Option<(Spa, PageSize, Cycles, TlbLevelId)> {
        let va = req.va.raw();
        if !self.fast_usable(va) {
            return None;
        }
        let ok = self.fast_ok[fast_index(req.kind, req.privilege)];
        let tag = self.cr3.tag;
        let (t1, _) = self.tlbs.l1_mut(req.kind);
        let (h, state) = t1.memo_hit(va, tag, 0)?;
        if ok >> state & 1 == 0 {
            return None;
        }
        let (slot, size, page) = (h.slot, h.size, h.pa.raw());
        Some(self.fast_hit_done(req, slot, size, page))
    }

    /// Whether the fast hit paths may answer an access to `va`: the oracle is off and `va` is
    /// canonical ([`Hva::is_canonical`] with the shift precomputed).
    #[inline(always)]
    fn fast_usable(&self, va: u64) -> bool {
        let sh = self.va_shift;
        self.oracle.is_none() && ((va << sh).cast_signed() >> sh).cast_unsigned() == va
    }

    /// The side effects of an L1 hit a fast path found at `slot` (an entry of `size`, `page`
    /// the address of the accessed 4 KiB page): the TLB's replacement state and counters, the
    /// MMU's counters. Returns the SPA, size, cost and level.
    #[inline(always)]
    fn fast_hit_done(
        &mut self,
        req: &AccessRequest,
        slot: TlbSlot,
        size: PageSize,
        page: u64,
    ) -> (Spa, PageSize, Cycles, TlbLevelId) {
        let (t1, level) = self.tlbs.l1_mut(req.kind);
        t1.record_memo_hit(slot, size);
        let latency = t1.hit_latency();
        self.stats.accesses += 1;
        self.stats.tlb_hits += 1;
        self.stats.cycles += latency;
        (Spa::new_truncate(page | (req.va.raw() & 0xfff)), size, latency, level)
    }

    /// [`Mmu::host_hit_fast`] for a new 4 KiB page under a large L1 entry (the kernel's direct
    /// map under SNP: 2M entries, and a page memo that misses on almost every access): the
    /// memo of the page's 2 MiB region answers, with every side effect of the hit (as the
    /// general path's hit). `None` (nothing done): take the general path.
    #[inline(always)]
    fn host_hit_large(
        &mut self,
        req: &AccessRequest,
    ) -> Option<(Spa, PageSize, Cycles, TlbLevelId)> {
        let va = req.va.raw();
        let (t1, _) = self.tlbs.l1_mut(req.kind);
        if !t1.large_memo_current(va) || !self.fast_usable(va) {
            return None;
        }
        let ok = self.fast_ok[fast_index(req.kind, req.privilege)];
        let tag = self.cr3.tag;
        let (t1, _) = self.tlbs.l1_mut(req.kind);
        let (slot, size, page, state) = t1.large_memo_hit(va, tag, 0)?;
        if ok >> state & 1 == 0 {
            return None;
        }
        Some(self.fast_hit_done(req, slot, size, page))
    }

    /// [`Mmu::access`] past the fast path, filling `out` (initialised as for a non-canonical
    /// address).
    #[inline(never)]
    fn access_general<C: TranslationCheck + ?Sized, L: CacheLatency + ?Sized>(
        &mut self,
        tables: &mut PhysMemTables,
        checker: &mut C,
        lat: &mut L,
        req: &AccessRequest,
        out: &mut AccessOutcome,
    ) {
        self.stats.accesses += 1;
        if !req.va.is_canonical(self.cr3.paging.va_bits()) {
            self.access_slow(tables, checker, lat, req, None, out);
            return;
        }
        let look = self.tlbs.lookup(req.va.raw(), self.cr3.tag, None, req.kind);
        if look.hit.is_none()
            && checker.allows_everything()
            && !self.pwc.exists()
            && self.oracle.is_none()
            && self.walk_unchecked(tables, lat, req, look.latency, look.l1_absent, out)
        {
            return;
        }
        self.access_slow(tables, checker, lat, req, Some(look), out);
    }

    /// [`Mmu::access_slow`] for a TLB miss on a machine with no check stage, no
    /// paging-structure cache and the oracle off, when [`fast_walk_x86`] reads the walk: the
    /// same steps without the general path's set-up. `false` (nothing done but the fast
    /// walk's reads, which change no state of the machine): take the general path.
    #[inline(always)]
    fn walk_unchecked<L: CacheLatency + ?Sized>(
        &mut self,
        tables: &mut PhysMemTables,
        lat: &mut L,
        req: &AccessRequest,
        latency: Cycles,
        l1_absent: bool,
        out: &mut AccessOutcome,
    ) -> bool {
        if !fast_walk_x86(
            &mut self.fast,
            tables,
            WalkStart::root(self.cr3.root, self.cr3.paging),
            &self.masks,
            req.va.raw(),
            req.kind == AccessKind::Write,
            self.walk_ok[fast_index(req.kind, req.privilege)],
        ) {
            return false;
        }
        // As `access_slow` (the PWC probes nothing: there is none).
        out.cost = latency + self.pwc.probe_latency();
        out.path = AccessPath::Walk;
        self.work.clear();
        self.fast_walk_done(req, Ok(CheckAllow::WRITE_OK), lat, l1_absent, out);
        self.finish(out);
        true
    }

    /// [`Mmu::access`] after the TLB lookup (`None`: non-canonical, no lookup made), filling
    /// `out` (passed in rather than returned: the outcome is a few hundred bytes).
    fn access_slow<C: TranslationCheck + ?Sized, L: CacheLatency + ?Sized>(
        &mut self,
        tables: &mut PhysMemTables,
        checker: &mut C,
        lat: &mut L,
        req: &AccessRequest,
        look: Option<TlbLookup>,
        out: &mut AccessOutcome,
    ) {
        let Some(look) = look else {
            self.finish(out);
            return;
        };
        let tag = self.cr3.tag;
        out.cost = look.latency;
        if let Some(hit) = look.hit {
            // A write through a clean entry re-walks to set D (SDM Vol. 3A §4.8).
            // With `recheck_write_on_read_fill` off the checker decided writes at fill time:
            // an `Unchecked` entry then failed the write check, and a write through it walks
            // again (and meets the check). A write never completes unchecked.
            let usable = permits(hit.perms, req.kind, req.privilege, self.controls)
                && (req.kind != AccessKind::Write || hit.dirty)
                && !(req.kind == AccessKind::Write
                    && hit.cache.write == WriteCheck::Unchecked
                    && !self.recheck_write_on_read_fill);
            if usable {
                self.count_hit(look.level);
                out.path = AccessPath::TlbHit;
                out.hit_level = look.level;
                out.result = AccessResult::Translated { spa: hit.pa, size: hit.size };
                if req.kind == AccessKind::Write
                    && hit.cache.write == WriteCheck::Unchecked
                    && self.recheck_write_on_read_fill
                {
                    self.stats.write_rechecks += 1;
                    out.path = AccessPath::TlbHitWriteCheck;
                    self.work.clear();
                    let creq = CheckRequest::native(
                        hit.pa,
                        CheckTarget::Data { access: AccessKind::Write, mapping: hit.size },
                        self.agent(req.ctx),
                        req.privilege,
                    );
                    match checker.check(&creq, &mut self.work) {
                        CheckVerdict::Allow(_) => {
                            let mut cache = hit.cache;
                            cache.write = WriteCheck::Allowed;
                            self.tlbs.set_cache(req.kind, hit.slot, cache);
                        }
                        v @ (CheckVerdict::Fault { .. }
                        | CheckVerdict::NestedFault { .. }
                        | CheckVerdict::GuestVc { .. }) => {
                            let mut code = PfErrorCode::PRESENT
                                | PfErrorCode::WRITE
                                | v.host_fault_bits().unwrap_or_default();
                            if req.privilege == Privilege::User {
                                code |= PfErrorCode::USER;
                            }
                            out.result = AccessResult::Fault(PageFault { code, addr: req.va });
                        }
                    }
                    out.cost += self.price_checks(lat);
                    out.check_reads = copy_reads(&self.work.reads);
                }
                self.oracle_host(tables, req, out);
                self.finish(out);
                return;
            }
        }
        out.path = AccessPath::Walk;
        let ctx = self.ctx();
        let start = self.pwc.lookup::<Spa>(req.va.raw(), tag, None, ctx.paging.top());
        out.cost += self.pwc.probe_latency();
        // The common walk (nothing to fault on or to set before the checks) skips the plan.
        self.work.clear();
        let who = self.agent(req.ctx);
        if fast_walk_x86(
            &mut self.fast,
            &mut *tables,
            start.unwrap_or(WalkStart::root(ctx.root, ctx.paging)),
            &self.masks,
            req.va.raw(),
            req.kind == AccessKind::Write,
            self.walk_ok[fast_index(req.kind, req.privilege)],
        ) {
            let verdict = if checker.allows_everything() {
                Ok(CheckAllow::WRITE_OK)
            } else {
                check_fast_walk(&self.fast, req.kind, req.privilege, who, checker, &mut self.work)
            };
            self.fast_walk_done(req, verdict, lat, look.l1_absent, out);
            self.oracle_host(tables, req, out);
            self.finish(out);
            return;
        }
        let wreq = WalkRequest { va: req.va, access: req.kind, privilege: req.privilege, who };
        let p = self.plan1d.get();
        let allow = plan_checked_into(p, tables, &ctx, &wreq, checker, &mut self.work, start);
        p.commit(tables);
        p.push_refs(&mut out.refs);
        out.cost += self.price_walk(&out.refs, &mut out.check_reads, lat);
        let p = self.plan1d.get();
        match (p.outcome, allow) {
            (Translation::Translated { pa, size, perms, attrs }, Some(allow)) => {
                let fill_size = allow.fill_size.unwrap_or(size).min(size);
                let frame = Spa::new_truncate(pa.raw() & !(fill_size.bytes() - 1));
                let installed = self.tlbs.fill(
                    req.va.raw(),
                    tag,
                    None,
                    req.kind,
                    &TlbFill {
                        frame,
                        size: fill_size,
                        perms,
                        nested_perms: Perms::ALL,
                        global: attrs.flags.contains(PteFlags::GLOBAL),
                        dirty: attrs.flags.contains(PteFlags::DIRTY),
                        cache: allow.cache,
                    },
                );
                // Cache the non-leaf entries the walk read.
                let n = if self.pwc.exists() { p.core.steps.len() } else { 0 };
                for s in &p.core.steps[..n.saturating_sub(1)] {
                    let next: Spa = X86Pte::new(s.entry).table_addr(ctx.format);
                    self.pwc.fill(req.va.raw(), tag, None, s.level, next.raw(), s.perms);
                }
                self.stats.walks[size] += 1;
                out.result = AccessResult::Translated { spa: pa, size: installed };
            }
            (Translation::Translated { .. }, None) => unreachable!("checks ran on a translation"),
            (Translation::Fault(f), _) => {
                self.stats.walks_faulted += 1;
                self.tlbs.invalidate_range_raw(req.va.raw(), 1, tag);
                self.pwc.remove_addr(req.va.raw(), tag, None);
                out.result = AccessResult::Fault(f);
            }
            (Translation::NonCanonical { addr }, _) => {
                out.result = AccessResult::NonCanonical { addr };
            }
        }
        self.oracle_host(tables, req, out);
        self.finish(out);
    }

    /// The rest of a walk [`fast_walk_x86`] made, after its checks (`verdict`: what the
    /// checker allowed, or the extra #PF bits of the check that failed, with what the checks
    /// read in `self.work`): what the general path does for the same walk (its references and
    /// the checks' reads priced, then the TLB and PWC fills, or the fault's invalidations, and
    /// the counters), without a plan.
    #[inline(always)]
    fn fast_walk_done<L: CacheLatency + ?Sized>(
        &mut self,
        req: &AccessRequest,
        verdict: Result<CheckAllow, PfErrorCode>,
        lat: &mut L,
        l1_absent: bool,
        out: &mut AccessOutcome,
    ) {
        let (va, tag) = (req.va.raw(), self.cr3.tag);
        let w = &self.fast;
        // The references, listed and priced in walk order, then the check stage's reads (as
        // `price_walk` does).
        self.stats.walk_reads += w.n as u64;
        let slots = out.refs.push_reuse_n(w.n);
        for (i, (slot, &addr)) in slots.iter_mut().zip(&w.addrs[..w.n]).enumerate() {
            let level = w.level(i);
            *slot = WalkRef { addr, level, kind: RefKind::Read, stage: Stage::Native };
        }
        let first = w.first.idx();
        let mut cost = lat.table_reads(&w.addrs[..w.n], &Level::ALL[first..first + w.n]);
        self.stats.check_reads += self.work.reads.len() as u64;
        for &a in &self.work.reads {
            cost += lat.latency(a, MemRefKind::CheckRead);
            out.check_reads.push(a);
        }
        out.cost += cost + self.work.fixed;
        let allow = match verdict {
            Ok(allow) => allow,
            Err(bits) => {
                // As `walk_checked` reports a failed check: a protection #PF.
                let code = base_code(req.kind, req.privilege) | PfErrorCode::PRESENT | bits;
                self.stats.walks_faulted += 1;
                self.tlbs.invalidate_range_raw(va, 1, tag);
                self.pwc.remove_addr(va, tag, None);
                out.result = AccessResult::Fault(PageFault { code, addr: req.va });
                return;
            }
        };
        let (leaf, size) = (w.leaf(), w.size);
        let fill_size = allow.fill_size.unwrap_or(size).min(size);
        let fill = TlbFill {
            frame: Spa::new_truncate(w.pa.raw() & !(fill_size.bytes() - 1)),
            size: fill_size,
            perms: w.perms,
            nested_perms: Perms::ALL,
            global: leaf.flags().contains(PteFlags::GLOBAL),
            dirty: leaf.flags().contains(PteFlags::DIRTY),
            cache: allow.cache,
        };
        // The lookup that missed just before proved the L1 holds nothing for `va` (when its
        // filters settled it); the walk and the checks did not touch the TLBs since.
        let installed =
            self.tlbs.fill_after_lookup::<false>(l1_absent, va, tag, None, req.kind, &fill);
        if self.pwc.exists() {
            // Cache the non-leaf entries, with the rights combined down to each.
            let mut perms = w.start_perms;
            for i in 0..w.n - 1 {
                let e = X86Pte::new(w.entries[i]);
                perms = perms.and(e.rights());
                let next: Spa = e.table_addr(self.format);
                self.pwc.fill(va, tag, None, w.level(i), next.raw(), perms);
            }
        }
        self.stats.walks[size] += 1;
        out.result = AccessResult::Translated { spa: w.pa, size: installed };
    }

    #[inline]
    fn oracle_host(&mut self, tables: &PhysMemTables, req: &AccessRequest, out: &AccessOutcome) {
        if self.oracle.is_some() {
            self.oracle_host_on(tables, req, out);
        }
    }

    fn oracle_host_on(&mut self, tables: &PhysMemTables, req: &AccessRequest, out: &AccessOutcome) {
        let Some(log) = self.oracle.as_mut() else { return };
        let got = match out.result {
            AccessResult::Translated { spa, .. } => Some(spa),
            // Check-stage faults have no counterpart in a check-less walk.
            AccessResult::Fault(f) if f.code.contains(PfErrorCode::RMP) => return,
            AccessResult::Fault(_) | AccessResult::NonCanonical { .. } => None,
        };
        let ctx = WalkContext {
            root: self.cr3.root,
            paging: self.cr3.paging,
            format: self.format,
            controls: self.controls,
        };
        let fresh = walk_functional(tables, &ctx, req.va, req.kind, req.privilege);
        let expected = match fresh.outcome {
            Translation::Translated { pa, .. } => Some(pa),
            Translation::Fault(_) | Translation::NonCanonical { .. } => None,
        };
        if got != expected {
            log.push(OracleMismatch { addr: req.va.raw(), path: out.path, got, expected });
        }
    }

    /// The functional path (`ccsim check`, oracles): what a walk through the check stage would
    /// give now, with no TLB lookup or fill, no A/D updates, no timing, no counters. The
    /// checker is still called (pass a side-effect-free one for a pure query).
    pub fn translate_functional<C: TranslationCheck + ?Sized>(
        &self,
        tables: &PhysMemTables,
        checker: &mut C,
        req: &AccessRequest,
    ) -> FunctionalOutcome {
        let mut work = CheckWork::default();
        let wreq = WalkRequest {
            va: req.va,
            access: req.kind,
            privilege: req.privilege,
            who: self.agent(req.ctx),
        };
        let cw = walk_checked_functional(tables, &self.ctx(), &wreq, checker, &mut work);
        let result = match (cw.walk.outcome, cw.allow) {
            (Translation::Translated { pa, size, .. }, Some(allow)) => {
                AccessResult::Translated { spa: pa, size: allow.fill_size.unwrap_or(size) }
            }
            (Translation::Translated { .. }, None) => unreachable!("checks ran on a translation"),
            (Translation::Fault(f), _) => AccessResult::Fault(f),
            (Translation::NonCanonical { addr }, _) => AccessResult::NonCanonical { addr },
        };
        FunctionalOutcome { result, refs: cw.walk.refs, check_reads: copy_reads(&work.reads) }
    }

    /// Translate one guest access (timing mode) for a vCPU in `gctx`, on this CPU: TLB lookup
    /// of the combined (GVA or GPA → SPA) translation tagged by the guest's ASID/VPID, PCID and
    /// nested root; on a miss the 2-D walk, using the guest PWC, the nested TLB and the nested
    /// PWC, through the check stage; fills of the TLBs, the nested TLB and both PWCs.
    ///
    /// Host tables (`host`) hold the NPT/EPT pages; `guest` holds the guest's own page-table
    /// pages keyed by GPA. A write hitting a read-filled entry re-walks through the check
    /// stage when `recheck_write_on_read_fill` is on (the TLB keeps no GPA to check on a hit).
    #[inline]
    pub fn guest_access<C: TranslationCheck + ?Sized, L: CacheLatency + ?Sized>(
        &mut self,
        host: &mut PhysMemTables,
        guest: &mut PhysMemTables<Gpa>,
        gctx: &GuestContext,
        checker: &mut C,
        lat: &mut L,
        req: &GuestAccessRequest,
    ) -> GuestAccessOutcome {
        let mut out = GuestAccessOutcome {
            result: GuestAccessResult::NonCanonical { addr: Gva::new(req.addr.raw()) },
            cost: Cycles::ZERO,
            path: AccessPath::None,
            hit_level: None,
            refs: NestedRefs::new(),
            check_reads: GuestCheckReads::new(),
        };
        self.guest_access_into(host, guest, gctx, checker, lat, req, &mut out);
        out
    }

    /// The common case of [`Mmu::guest_access_into`] for a guest-physical address (a guest
    /// without paging: [`GuestAddr::Physical`]), small enough to inline into the caller: an
    /// L1 hit the memo of the L1 answers, usable as the general path decides it (nested and
    /// guest permissions, a write only on a dirty entry whose write check ran), oracle off.
    /// Does everything the general path does for such a hit (TLB replacement state and
    /// counters, MMU counters) and returns the SPA and the cost (the L1's hit latency). `None`
    /// (nothing done): take the general path.
    #[inline(always)]
    pub fn guest_hit_fast(
        &mut self,
        gpa: Gpa,
        kind: AccessKind,
        privilege: Privilege,
        gctx: &GuestContext,
    ) -> Option<(Spa, Cycles)> {
        if self.oracle.is_some() {
            return None;
        }
        let va = gpa.raw();
        let (t1, _) = self.tlbs.l1_mut(kind);
        let (h, _) = t1.memo_hit(va, gctx.tag, nroot_key(Some(gctx.nested.root)))?;
        let nested_ok = match kind {
            AccessKind::Read => h.nested_perms.readable,
            AccessKind::Write => h.nested_perms.writable,
            AccessKind::Fetch => h.nested_perms.executable,
        };
        let usable = nested_ok
            && permits(h.perms, kind, privilege, gctx.controls())
            && (kind != AccessKind::Write || (h.dirty && h.cache.write != WriteCheck::Unchecked));
        if !usable {
            return None;
        }
        let (slot, size, page) = (h.slot, h.size, h.pa.raw());
        t1.record_memo_hit(slot, size);
        let latency = t1.hit_latency();
        self.stats.guest_accesses += 1;
        self.stats.tlb_hits += 1;
        self.stats.cycles += latency;
        Some((Spa::new_truncate(page | (va & 0xfff)), latency))
    }

    /// [`Mmu::guest_access`] into the caller's `out` (every field overwritten; the outcome
    /// is over a KiB, so a loop should reuse one rather than have one returned per access).
    #[allow(clippy::too_many_arguments)] // guest_access's arguments and the outcome
    pub fn guest_access_into<C: TranslationCheck + ?Sized, L: CacheLatency + ?Sized>(
        &mut self,
        host: &mut PhysMemTables,
        guest: &mut PhysMemTables<Gpa>,
        gctx: &GuestContext,
        checker: &mut C,
        lat: &mut L,
        req: &GuestAccessRequest,
        out: &mut GuestAccessOutcome,
    ) {
        out.result = GuestAccessResult::NonCanonical { addr: Gva::new(req.addr.raw()) };
        out.cost = Cycles::ZERO;
        out.path = AccessPath::None;
        out.hit_level = None;
        out.refs.clear();
        out.check_reads.clear();
        self.stats.guest_accesses += 1;
        if let (GuestAddr::Virtual(v), Some(gp)) = (req.addr, gctx.paging)
            && !v.is_canonical(gp.paging.va_bits())
        {
            self.finish_guest(out);
            return;
        }
        let tag = gctx.tag;
        let nroot = Some(gctx.nested.root);
        let look = self.tlbs.lookup(req.addr.raw(), tag, nroot, req.kind);
        let l1_absent = look.l1_absent;
        out.cost = look.latency;
        if let Some(hit) = look.hit {
            let nested_ok = match req.kind {
                AccessKind::Read => hit.nested_perms.readable,
                AccessKind::Write => hit.nested_perms.writable,
                AccessKind::Fetch => hit.nested_perms.executable,
            };
            let usable = nested_ok
                && permits(hit.perms, req.kind, req.privilege, gctx.controls())
                // A write needs D set and a passed write check: the TLB keeps no GPA to
                // re-check on a hit, so otherwise it re-walks (with
                // `recheck_write_on_read_fill` off the checker decided writes at fill time,
                // and `Unchecked` then means they failed).
                && (req.kind != AccessKind::Write
                    || (hit.dirty && hit.cache.write != WriteCheck::Unchecked));
            if usable {
                self.count_hit(look.level);
                out.path = AccessPath::TlbHit;
                out.hit_level = look.level;
                out.result = GuestAccessResult::Translated { spa: hit.pa, size: hit.size };
                self.oracle_guest(host, guest, gctx, req, out);
                self.finish_guest(out);
                return;
            }
            if req.kind == AccessKind::Write && hit.cache.write == WriteCheck::Unchecked {
                self.stats.write_rechecks += 1;
            }
        }
        out.path = AccessPath::Walk;
        self.stats.guest_walks += 1;
        // The common cold walk of a machine without nested TLB or paging-structure caches
        // (nothing to fault on or to set, nothing checked) skips the plan; the general path
        // redoes anything else (nothing was written but `out.refs`).
        if let (GuestAddr::Virtual(gva), Some(gp)) = (req.addr, gctx.paging)
            && self.nested_tlb.is_none()
            && !self.guest_pwc.exists()
            && !self.nested_pwc.exists()
            && gctx.memory == GuestMemory::Plain
            && gctx.nested.kind == NestedKind::Npt
            && checker.allows_everything()
        {
            for (i, fmt) in [gp.format, gctx.nested.format].into_iter().enumerate() {
                if self.masks_2d[i].0 != fmt {
                    self.masks_2d[i] = (fmt, X86Masks::new(fmt));
                }
            }
            let [(_, gm), (_, nm)] = &self.masks_2d;
            let (kind, privilege) = (req.kind, req.privilege);
            if let Some(f) =
                fast_walk_2d(host, guest, gctx, gm, nm, gva, kind, privilege, &mut out.refs)
            {
                self.fast_2d_done(req, (tag, nroot), &f, lat, l1_absent, out);
                self.oracle_guest(host, guest, gctx, req, out);
                self.finish_guest(out);
                return;
            }
            out.refs.clear();
        }
        let wreq = GuestWalkRequest {
            addr: req.addr,
            access: req.kind,
            privilege: req.privilege,
            who: self.agent(req.ctx),
        };
        let mut caches = Adapter {
            tag,
            primary: gctx.nested.root,
            ntlb: self.nested_tlb.as_mut(),
            guest_pwc: &mut self.guest_pwc,
            nested_pwc: &mut self.nested_pwc,
            ntlb_lookups: 0,
            ntlb_hits: 0,
            npwc_probes: 0,
            gpwc_probes: 0,
        };
        let p = self.plan2d.get();
        crate::nested::plan_2d_into(p, host, guest, gctx, &wreq, &mut caches);
        let (nl, nh, np, gpr) =
            (caches.ntlb_lookups, caches.ntlb_hits, caches.npwc_probes, caches.gpwc_probes);
        self.stats.nested_tlb_hits += nh;
        if let Some(t) = self.nested_tlb.as_ref() {
            out.cost += t.hit_latency().times(nl);
        }
        out.cost += self.nested_pwc.probe_latency().times(np);
        out.cost += self.guest_pwc.probe_latency().times(gpr);
        self.work.clear();
        let allow = p.run_checks(gctx, &wreq, checker, &mut self.work);
        p.commit(host, guest);
        p.push_refs(&mut out.refs);
        out.cost += self.price_walk(&out.refs, &mut out.check_reads, lat);
        let asid = tag.asid;
        let p = self.plan2d.get();
        match (p.outcome, allow) {
            (
                GuestTranslation::Translated {
                    spa, size, perms, nested_perms, global, dirty, ..
                },
                Some(allow),
            ) => {
                let fill_size = allow.fill_size.unwrap_or(size).min(size);
                let frame = Spa::new_truncate(spa.raw() & !(fill_size.bytes() - 1));
                let fill = TlbFill {
                    frame,
                    size: fill_size,
                    perms,
                    nested_perms,
                    global,
                    dirty,
                    cache: allow.cache,
                };
                // The walk changed no TLB of this hierarchy (the nested TLB is apart). A guest's
                // next access is most often to the same page: the L1's memo answers it.
                let installed = self.tlbs.fill_after_lookup::<true>(
                    l1_absent,
                    req.addr.raw(),
                    tag,
                    nroot,
                    req.kind,
                    &fill,
                );
                // Nested TLB and nested PWC fills for the nested walks made.
                for it in &p.items {
                    let n = &it.nested;
                    if n.from_ntlb {
                        continue;
                    }
                    let NestedResult::Ok { frame, size, perms, dirty } = n.result else { continue };
                    if let Some(t) = self.nested_tlb.as_mut() {
                        t.fill_in_size::<false, false>(
                            n.gpa.raw(),
                            ntag(asid),
                            Some(n.root),
                            &TlbFill {
                                frame,
                                size,
                                perms,
                                nested_perms: Perms::ALL,
                                global: false,
                                dirty: dirty
                                    || n.core.steps.last().is_some_and(|l| l.set != 0 && n.write),
                                cache: crate::check::CheckCache::default(),
                            },
                        );
                    }
                    let k = if self.nested_pwc.exists() { n.core.steps.len() } else { 0 };
                    for s in &n.core.steps[..k.saturating_sub(1)] {
                        let next: Spa = nested_next(gctx, s.entry);
                        self.nested_pwc.fill(
                            n.gpa.raw(),
                            ntag(asid),
                            Some(n.root),
                            s.level,
                            next.raw(),
                            s.perms,
                        );
                    }
                }
                if let Some(gp) = gctx.paging
                    && self.guest_pwc.exists()
                {
                    let core = &p.guest_core;
                    let k = core.steps.len();
                    for s in &core.steps[..k.saturating_sub(1)] {
                        let next: Gpa = X86Pte::new(s.entry).table_addr(gp.format);
                        self.guest_pwc.fill(
                            req.addr.raw(),
                            tag,
                            nroot,
                            s.level,
                            next.raw(),
                            s.perms,
                        );
                    }
                }
                self.stats.walks[size] += 1;
                out.result = GuestAccessResult::Translated { spa, size: installed };
            }
            (GuestTranslation::Translated { .. }, None) => {
                unreachable!("checks ran on a translation")
            }
            (GuestTranslation::Fault(f), _) => {
                self.stats.walks_faulted += 1;
                self.tlbs.invalidate_range_raw(req.addr.raw(), 1, tag);
                self.guest_pwc.remove_addr(req.addr.raw(), tag, nroot);
                out.result = GuestAccessResult::Fault(f);
            }
            (GuestTranslation::NonCanonical { addr }, _) => {
                out.result = GuestAccessResult::NonCanonical { addr };
            }
        }
        self.oracle_guest(host, guest, gctx, req, out);
        self.finish_guest(out);
    }

    /// The rest of a walk [`fast_walk_2d`] made (its references in `out.refs`): what the
    /// general path does for the same walk with a check stage that allows everything — the
    /// references priced, the TLB fill and the counters — without a plan.
    fn fast_2d_done<L: CacheLatency + ?Sized>(
        &mut self,
        req: &GuestAccessRequest,
        (tag, nroot): (TlbTag, Option<Spa>),
        f: &Fast2d,
        lat: &mut L,
        l1_absent: bool,
        out: &mut GuestAccessOutcome,
    ) {
        self.work.clear();
        out.cost += self.price_walk(&out.refs, &mut out.check_reads, lat);
        let allow = CheckAllow::WRITE_OK;
        let fill_size = allow.fill_size.unwrap_or(f.size).min(f.size);
        let fill = TlbFill {
            frame: Spa::new_truncate(f.spa.raw() & !(fill_size.bytes() - 1)),
            size: fill_size,
            perms: f.perms,
            nested_perms: f.nested_perms,
            global: f.global,
            dirty: f.dirty,
            cache: allow.cache,
        };
        let installed = self.tlbs.fill_after_lookup::<false>(
            l1_absent,
            req.addr.raw(),
            tag,
            nroot,
            req.kind,
            &fill,
        );
        self.stats.walks[f.size] += 1;
        out.result = GuestAccessResult::Translated { spa: f.spa, size: installed };
    }

    fn finish_guest(&mut self, out: &GuestAccessOutcome) {
        let kind = match out.result {
            GuestAccessResult::Translated { .. } => None,
            GuestAccessResult::NonCanonical { .. } => Some(GuestFaultKind::NonCanonical),
            GuestAccessResult::Fault(f) => Some(guest_fault_kind(&f)),
        };
        if let Some(k) = kind {
            *self.stats.guest_faults.entry(k).or_default() += 1;
        }
        self.stats.cycles += out.cost;
    }

    #[inline]
    fn oracle_guest(
        &mut self,
        host: &PhysMemTables,
        guest: &PhysMemTables<Gpa>,
        gctx: &GuestContext,
        req: &GuestAccessRequest,
        out: &GuestAccessOutcome,
    ) {
        if self.oracle.is_some() {
            self.oracle_guest_on(host, guest, gctx, req, out);
        }
    }

    fn oracle_guest_on(
        &mut self,
        host: &PhysMemTables,
        guest: &PhysMemTables<Gpa>,
        gctx: &GuestContext,
        req: &GuestAccessRequest,
        out: &GuestAccessOutcome,
    ) {
        let Some(log) = self.oracle.as_mut() else { return };
        let got = match out.result {
            GuestAccessResult::Translated { spa, .. } => Some(spa),
            GuestAccessResult::Fault(f) if guest_fault_kind(&f) == GuestFaultKind::Check => {
                return;
            }
            GuestAccessResult::Fault(_) | GuestAccessResult::NonCanonical { .. } => None,
        };
        let wreq = GuestWalkRequest {
            addr: req.addr,
            access: req.kind,
            privilege: req.privilege,
            who: Agent::Cpu { cpu: self.cpu, ctx: req.ctx },
        };
        let fresh = walk_2d_functional(host, guest, gctx, &wreq);
        let expected = match fresh.outcome {
            GuestTranslation::Translated { spa, .. } => Some(spa),
            GuestTranslation::Fault(_) | GuestTranslation::NonCanonical { .. } => None,
        };
        if got != expected {
            log.push(OracleMismatch { addr: req.addr.raw(), path: out.path, got, expected });
        }
    }

    // -----------------------------------------------------------------------------------------
    // Invalidation.

    /// INVLPG of `va` in address space `tag` (a host HVA with the host's tag, or a GVA with a
    /// guest's ASID/VPID and PCID): every TLB entry of any size translating it for the tag,
    /// global ones included, at every level; and every paging-structure-cache entry of the
    /// tag's PCID, whatever its address (SDM Vol. 3A §4.10.4.1).
    pub fn invlpg<V: PagedAddr>(&mut self, va: V, tag: TlbTag) -> Invalidated {
        Invalidated {
            tlb: self.tlbs.invalidate_range_raw(va.raw(), 1, tag),
            pwc: self.pwc_for(tag.asid).remove_where(|t, _| t == tag),
        }
    }

    /// INVLPG over `[start, start + bytes)` in address space `tag`: the TLB entries of every
    /// level that overlap it, and every paging-structure-cache entry of the tag's PCID (Intel
    /// SDM Vol. 3A §4.10.4.1: INVLPG invalidates all paging-structure-cache entries associated
    /// with the current PCID, whatever their linear addresses).
    pub fn invlpg_range(&mut self, start: u64, bytes: u64, tag: TlbTag) -> Invalidated {
        Invalidated {
            tlb: self.tlbs.invalidate_range_raw(start, bytes, tag),
            pwc: self.pwc_for(tag.asid).remove_where(|t, _| t == tag),
        }
    }

    /// Apply a page-table change's token in address space `tag`: INVLPG over each stale range
    /// (TLB entries of every level; the PWC entries of the tag's PCID), and if table pages were
    /// freed, every PWC entry of the ASID, every PCID (what Linux's full flush after a collapse
    /// achieves, spec/physmap.md §2.2).
    pub fn invalidate<V: PagedAddr>(
        &mut self,
        inv: &PendingInvalidation<V>,
        tag: TlbTag,
    ) -> Invalidated {
        let mut n = Invalidated::default();
        for r in inv.ranges() {
            n.tlb += self.tlbs.invalidate_range_raw(r.start.raw(), r.bytes, tag);
        }
        if !inv.ranges().is_empty() {
            n.pwc += self.pwc_for(tag.asid).remove_where(|t, _| t == tag);
        }
        if inv.freed_tables() {
            n.pwc += self.pwc_for(tag.asid).remove_where(|t, _| t.asid == tag.asid);
        }
        n
    }

    /// Apply a nested-table (NPT/EPT) change's token for the guest with ASID/VPID `asid` under
    /// nested root `root`: the nested TLB's entries for the ranges, the nested PWC's entries of
    /// that root, and — since combined GVA→SPA entries cannot be found by GPA — every TLB and
    /// guest-PWC entry built under that root. This is what INVEPT single-context does (Intel);
    /// on AMD the hypervisor gets the same effect with TLB_CONTROL = 3 ([`Mmu::svm_tlb_control`]).
    pub fn invalidate_nested(
        &mut self,
        inv: &PendingInvalidation<Gpa>,
        asid: u16,
        root: Spa,
    ) -> Invalidated {
        if inv.is_empty() {
            return Invalidated::default();
        }
        let _ = asid;
        self.invept(Invept::SingleContext { root })
    }

    /// INVPCID in address space `asid` (0: host).
    pub fn invpcid(&mut self, asid: u16, op: Invpcid) -> Invalidated {
        match op {
            Invpcid::Address { pcid, addr } => {
                let tag = TlbTag { asid, pcid };
                let tlb = self
                    .tlbs_remove(|e_tag, g, lo, hi| e_tag == tag && !g && lo <= addr && addr < hi);
                Invalidated { tlb, pwc: self.pwc_for(asid).remove_where(|t, _| t == tag) }
            }
            Invpcid::SingleContext { pcid } => {
                let tag = TlbTag { asid, pcid };
                Invalidated {
                    tlb: self.tlbs.flush(FlushScope::Context(tag)),
                    pwc: self.pwc_for(asid).remove_where(|t, _| t == tag),
                }
            }
            Invpcid::AllIncludingGlobal => Invalidated {
                tlb: self.tlbs.flush(FlushScope::Asid(asid)),
                pwc: self.pwc_for(asid).remove_where(|t, _| t.asid == asid),
            },
            Invpcid::AllNonGlobal => Invalidated {
                tlb: self.tlbs.flush(FlushScope::AllNonGlobal(asid)),
                pwc: self.pwc_for(asid).remove_where(|t, _| t.asid == asid),
            },
        }
    }

    fn tlbs_remove(&mut self, pred: impl Fn(TlbTag, bool, u64, u64) -> bool) -> u64 {
        self.tlbs.remove_where(&pred)
    }

    /// A full flush: every TLB entry (all levels, the nested TLB, every ASID, global ones
    /// included) and every paging-structure-cache entry (CR4.PGE toggle; the global flush
    /// after an RMP update).
    pub fn flush_all(&mut self) -> Invalidated {
        let mut n = Invalidated { tlb: self.tlbs.flush(FlushScope::All), pwc: 0 };
        if let Some(t) = self.nested_tlb.as_mut() {
            n.tlb += t.flush(FlushScope::All);
        }
        n.pwc += self.pwc.remove_where(|_, _| true);
        n.pwc += self.guest_pwc.remove_where(|_, _| true);
        n.pwc += self.nested_pwc.remove_where(|_, _| true);
        n
    }

    fn flush_guest_asid(&mut self, asid: u16, scope: FlushScope) -> Invalidated {
        let mut n = Invalidated { tlb: self.tlbs.flush(scope), pwc: 0 };
        if let Some(t) = self.nested_tlb.as_mut() {
            n.tlb += t.flush(FlushScope::Asid(asid));
        }
        n.pwc += self.guest_pwc.remove_where(|t, _| t.asid == asid);
        n.pwc += self.nested_pwc.remove_where(|t, _| t.asid == asid);
        n
    }

    /// What VMRUN does with the VMCB's TLB_CONTROL for the guest with ASID `asid` (AMD APM
    /// Vol. 2 §15.16.1). Flushing an ASID also drops its nested-TLB and nested-PWC entries.
    pub fn svm_tlb_control(&mut self, asid: u16, ctl: TlbControl) -> Invalidated {
        match ctl {
            TlbControl::DoNothing => Invalidated::default(),
            TlbControl::FlushAll => self.flush_all(),
            TlbControl::FlushAsid => self.flush_guest_asid(asid, FlushScope::Asid(asid)),
            TlbControl::FlushAsidNonGlobal => {
                self.flush_guest_asid(asid, FlushScope::AllNonGlobal(asid))
            }
        }
    }

    /// INVEPT: combined (GVA→SPA) TLB entries, guest-PWC entries, nested-TLB entries and
    /// nested-PWC entries derived from one EPT root (single-context) or from any (global).
    pub fn invept(&mut self, op: Invept) -> Invalidated {
        let (scope, key) = match op {
            Invept::SingleContext { root } => {
                (FlushScope::NestedRoot(root), Some(crate::tlb::nroot_key(Some(root))))
            }
            Invept::Global => (FlushScope::AllNested, None),
        };
        let hit = |k: u64| k != 0 && key.is_none_or(|want| k == want);
        let mut n = Invalidated { tlb: self.tlbs.flush(scope), pwc: 0 };
        if let Some(t) = self.nested_tlb.as_mut() {
            n.tlb += t.flush(scope);
        }
        n.pwc += self.guest_pwc.remove_where(|_, k| hit(k));
        n.pwc += self.nested_pwc.remove_where(|_, k| hit(k));
        n
    }

    /// INVVPID: linear and combined mappings (TLB entries, guest-PWC entries) by VPID.
    pub fn invvpid(&mut self, op: Invvpid) -> Invalidated {
        match op {
            Invvpid::IndividualAddress { vpid, addr } if vpid != 0 => {
                let a = addr.raw();
                let tlb = self.tlbs_remove(|t, _, lo, hi| t.asid == vpid && lo <= a && a < hi);
                Invalidated { tlb, pwc: self.guest_pwc.remove_where(|t, _| t.asid == vpid) }
            }
            Invvpid::SingleContext { vpid } if vpid != 0 => Invalidated {
                tlb: self.tlbs.flush(FlushScope::Asid(vpid)),
                pwc: self.guest_pwc.remove_where(|t, _| t.asid == vpid),
            },
            Invvpid::SingleContextRetainingGlobals { vpid } if vpid != 0 => Invalidated {
                tlb: self.tlbs.flush(FlushScope::AllNonGlobal(vpid)),
                pwc: self.guest_pwc.remove_where(|t, _| t.asid == vpid),
            },
            Invvpid::AllContexts => Invalidated {
                tlb: self.tlbs.flush(FlushScope::AllGuests),
                pwc: self.guest_pwc.remove_where(|t, _| t.asid != 0),
            },
            Invvpid::IndividualAddress { .. }
            | Invvpid::SingleContext { .. }
            | Invvpid::SingleContextRetainingGlobals { .. } => Invalidated::default(),
        }
    }

    /// The RMP-update coherence path: every TLB entry (all levels, nested TLB included)
    /// reaching a byte of `[start, start + bytes)`.
    pub fn invalidate_phys(&mut self, start: Spa, bytes: u64) -> Invalidated {
        let mut tlb = self.tlbs.invalidate_phys(start, bytes);
        if let Some(t) = self.nested_tlb.as_mut() {
            tlb += t.invalidate_phys(start, bytes);
        }
        Invalidated { tlb, pwc: 0 }
    }
}

fn copy_reads(reads: &[Spa]) -> CheckReads {
    let mut v = CheckReads::new();
    for &r in reads {
        v.push(r);
    }
    v
}

fn guest_fault_kind(f: &GuestFault) -> GuestFaultKind {
    use crate::fault::NpfExitInfo1;
    let check_bits = NpfExitInfo1::RMP | NpfExitInfo1::VMPL | NpfExitInfo1::SIZEM;
    match f {
        GuestFault::PageFault(_) => GuestFaultKind::GuestPageFault,
        GuestFault::Npf(n) if n.info1.intersects(check_bits) => GuestFaultKind::Check,
        GuestFault::Npf(_) => GuestFaultKind::Npf,
        GuestFault::EptViolation(_) => GuestFaultKind::EptViolation,
        GuestFault::EptMisconfig { .. } => GuestFaultKind::EptMisconfig,
        GuestFault::Vc { .. } => GuestFaultKind::Check,
    }
}

/// The next table a non-leaf nested entry points at.
fn nested_next(g: &GuestContext, raw: u64) -> Spa {
    use crate::entry::PagingEntry;
    match g.nested.kind {
        crate::nested::NestedKind::Npt => {
            crate::npt::NptEntry::new(raw).next_table(g.nested.format)
        }
        crate::nested::NestedKind::Ept { .. } => {
            crate::ept::EptEntry::new(raw).next_table(g.nested.format)
        }
    }
}

/// The MMU's caches as the 2-D walker sees them.
struct Adapter<'a> {
    tag: TlbTag,
    primary: Spa,
    ntlb: Option<&'a mut Tlb>,
    guest_pwc: &'a mut Pwc,
    nested_pwc: &'a mut Pwc,
    ntlb_lookups: u64,
    ntlb_hits: u64,
    npwc_probes: u64,
    gpwc_probes: u64,
}

impl Caches2d for Adapter<'_> {
    #[inline]
    fn guest_start(&mut self, gva: u64, top: Level) -> Option<WalkStart<Gpa>> {
        if self.guest_pwc.exists() {
            self.gpwc_probes += 1;
        }
        self.guest_pwc.lookup(gva, self.tag, Some(self.primary), top)
    }

    #[inline]
    fn ntlb(&mut self, root: Spa, gpa: Gpa) -> Option<NtlbHit> {
        let t = self.ntlb.as_mut()?;
        self.ntlb_lookups += 1;
        let h = t.lookup_in(gpa.raw(), ntag(self.tag.asid), Some(root))?;
        self.ntlb_hits += 1;
        Some(NtlbHit {
            frame: Spa::new_truncate(h.pa.raw() & !(h.size.bytes() - 1)),
            size: h.size,
            perms: h.perms,
            dirty: h.dirty,
        })
    }

    #[inline]
    fn nested_start(&mut self, root: Spa, gpa: Gpa, top: Level) -> Option<WalkStart<Spa>> {
        if self.nested_pwc.exists() {
            self.npwc_probes += 1;
        }
        self.nested_pwc.lookup(gpa.raw(), ntag(self.tag.asid), Some(root), top)
    }
}

/// The outcome of a TLB hit the fast paths served.
#[inline(always)]
fn hit_outcome(spa: Spa, size: PageSize, cost: Cycles, level: TlbLevelId) -> AccessOutcome {
    AccessOutcome {
        result: AccessResult::Translated { spa, size },
        cost,
        path: AccessPath::TlbHit,
        hit_level: Some(level),
        refs: WalkRefs::new(),
        check_reads: CheckReads::new(),
    }
}

/// An outcome for the general path to fill (initialised as for a non-canonical address).
#[inline(always)]
fn empty_outcome(req: &AccessRequest) -> AccessOutcome {
    AccessOutcome {
        result: AccessResult::NonCanonical { addr: req.va },
        cost: Cycles::ZERO,
        path: AccessPath::None,
        hit_level: None,
        refs: WalkRefs::new(),
        check_reads: CheckReads::new(),
    }
}
#[cfg(test)]
mod tests {
    //! Exact-cycle tests of the MMU with mock neighbours (STYLE rule 18b).
    use super::*;
    use crate::check::{CheckAllow, CheckVerdict, NoCheck};
    use crate::latency::FlatLatency;
    use crate::page_table::PageTable;
    use crate::pte::LeafAttrs;
    use crate::tables::LinearFrames;
    use crate::walk::RefKind;

    const HIT: u64 = 3;
    const REF: u64 = 20;
    const VA: u64 = 0xffff_8880_0000_5000;

    /// A 4-level table whose entries all have A and D clear, one 4K page at `VA` -> 0x5000 and
    /// one 2M page at VA + 2M.
    fn setup(recheck: bool) -> (PhysMemTables, Mmu, FlatLatency) {
        let mut tables = PhysMemTables::new();
        let mut frames: LinearFrames =
            LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
        let mut cfg = MmuConfig {
            walk_ref_latency: Cycles::new(REF),
            recheck_write_on_read_fill: recheck,
            ..MmuConfig::default()
        };
        cfg.dtlb.hit_latency = Cycles::new(HIT);
        let mut pt: PageTable = PageTable::new(
            &mut tables,
            &mut frames,
            Paging::FourLevel,
            cfg.pte_format(),
            PteFlags::PRESENT | PteFlags::WRITABLE,
        )
        .unwrap();
        let rw = LeafAttrs::new(PteFlags::WRITABLE | PteFlags::GLOBAL);
        pt.map(&mut tables, &mut frames, Hva::new(VA), Spa::new(0x5000), PageSize::K4, rw)
            .unwrap()
            .ignore(); // fresh mapping
        pt.map(
            &mut tables,
            &mut frames,
            Hva::new(0xffff_8880_0020_0000),
            Spa::new(0x20_0000),
            PageSize::M2,
            rw,
        )
        .unwrap()
        .ignore(); // fresh mapping
        let cr3 = Cr3 { root: pt.root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
        let lat = FlatLatency { per_ref: cfg.walk_ref_latency };
        (tables, Mmu::new(0, &cfg, cr3).unwrap(), lat)
    }

    /// A 4-level host table (tables user-accessible and writable) with `pages` (VA, PA, size,
    /// leaf attributes) mapped, and an MMU of `cfg` on it.
    fn mapped(cfg: &MmuConfig, pages: &[(u64, u64, PageSize, LeafAttrs)]) -> (PhysMemTables, Mmu) {
        let mut t = PhysMemTables::new();
        let mut frames: LinearFrames =
            LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
        let table = PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER;
        let mut pt: PageTable =
            PageTable::new(&mut t, &mut frames, Paging::FourLevel, cfg.pte_format(), table)
                .unwrap();
        for &(va, pa, size, attrs) in pages {
            pt.map(&mut t, &mut frames, Hva::new(va), Spa::new(pa), size, attrs).unwrap().ignore(); // fresh mapping
        }
        let cr3 = Cr3 { root: pt.root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
        (t, Mmu::new(0, cfg, cr3).unwrap())
    }

    /// Every access of a mix (hits, cold walks, A/D updates, faults, user and supervisor,
    /// 4K and 2M pages) on two copies of one machine: one without a check stage (the common
    /// walk takes the fast path) and one whose check stage allows everything through the
    /// general path. Outcomes, counters and the tables must agree; with and without
    /// paging-structure caches.
    #[test]
    fn fast_walk_agrees_with_the_general_path() {
        /// Allows everything, but through the checks (not `allows_everything`).
        struct AllowByCheck;
        impl TranslationCheck for AllowByCheck {
            fn check(&mut self, _req: &CheckRequest, _work: &mut CheckWork) -> CheckVerdict {
                CheckVerdict::Allow(CheckAllow::WRITE_OK)
            }
        }
        // Kernel 4K (A/D clear, global), kernel 2M, a user 4K page (A/D set), none elsewhere.
        let machine = |cfg: &MmuConfig| {
            let rw = LeafAttrs::new(PteFlags::WRITABLE | PteFlags::GLOBAL);
            let u = LeafAttrs::new(PteFlags::USER | PteFlags::ACCESSED | PteFlags::DIRTY);
            mapped(
                cfg,
                &[
                    (VA, 0x5000, PageSize::K4, rw),
                    (0xffff_8880_0020_0000, 0x20_0000, PageSize::M2, rw),
                    (0x40_0000, 0x9000, PageSize::K4, u),
                ],
            )
        };
        let mut lat = FlatLatency { per_ref: Cycles::new(REF) };
        for cfg in [MmuConfig::default(), MmuConfig::zen4()] {
            let (mut t1, mut m1) = machine(&cfg);
            let (mut t2, mut m2) = machine(&cfg);
            let user = 0x40_0000;
            let vas = [VA + 8, 0xffff_8880_0020_0123, VA + 0x1000, user + 16, 0x1234, 1 << 63];
            for round in 0..3 {
                for &va in &vas {
                    for kind in [AccessKind::Read, AccessKind::Write, AccessKind::Fetch] {
                        for privilege in [Privilege::Supervisor, Privilege::User] {
                            let req = AccessRequest {
                                privilege,
                                ..AccessRequest::kernel(Hva::new(va), kind)
                            };
                            let a = m1.access(&mut t1, &mut NoCheck, &mut lat, &req);
                            let b = m2.access(&mut t2, &mut AllowByCheck, &mut lat, &req);
                            assert_eq!(a, b, "round {round} {req:?}");
                            if round > 0 {
                                // Walk again next time (the PWCs stay).
                                m1.tlb_mut().flush(FlushScope::All);
                                m2.tlb_mut().flush(FlushScope::All);
                            }
                        }
                    }
                }
            }
            assert_eq!(m1.stats(), m2.stats());
            assert_eq!(m1.tlb().stats(), m2.tlb().stats());
            assert_eq!(m1.pwc().stats(), m2.pwc().stats());
            assert!(m1.stats().walks.total() >= 20, "{:?}", m1.stats());
            for a in (0x100_0000..0x101_0000).step_by(8) {
                assert_eq!(t1.read(Spa::new(a)), t2.read(Spa::new(a)));
            }
        }
    }

    /// `Mmu::access_large` (the page memo, else the 2 MiB-region memo) agrees with
    /// `Mmu::access` on two copies of one machine: a random mix of reads, writes and fetches at
    /// both privileges over 2M pages (some with 4K pages mapped over part of them later, so
    /// that a smaller entry must win), 4K pages, invalidations and flushes. Outcomes, every
    /// counter and the TLBs' contents must agree; the region memo must have answered.
    #[test]
    fn large_page_memo_agrees_with_the_general_path() {
        let machine = |cfg: &MmuConfig| {
            let rw = LeafAttrs::new(PteFlags::WRITABLE | PteFlags::GLOBAL | PteFlags::DIRTY);
            let ro = LeafAttrs::new(PteFlags::ACCESSED);
            let pages: Vec<_> = (0..6u64)
                .map(|i| {
                    let va = 0xffff_8880_0000_0000 + (i << 21);
                    (va, 0x4000_0000 + (i << 21), PageSize::M2, if i == 5 { ro } else { rw })
                })
                .collect();
            mapped(cfg, &pages)
        };
        let mut lat = FlatLatency { per_ref: Cycles::new(REF) };
        for cfg in [MmuConfig::default(), MmuConfig::zen4()] {
            let (mut t1, mut m1) = machine(&cfg);
            let (mut t2, mut m2) = machine(&cfg);
            let mut rng = sim_core::Rng::new(6);
            let mut large_hits = 0;
            for step in 0..20_000 {
                let va = 0xffff_8880_0000_0000 + (rng.below(6) << 21) + (rng.below(512) << 12) + 8;
                match rng.below(200) {
                    0 => {
                        m1.tlb_mut().flush(FlushScope::All);
                        m2.tlb_mut().flush(FlushScope::All);
                    }
                    1 => {
                        m1.tlb_mut().invalidate_page(Hva::new(va), TlbTag::HOST);
                        m2.tlb_mut().invalidate_page(Hva::new(va), TlbTag::HOST);
                    }
                    2 if step > 10_000 => {
                        // A 4K entry over part of a 2M one (a mapping changed without a flush):
                        // filled directly, as a stale TLB would hold it.
                        let f = TlbFill {
                            frame: Spa::new(0x7000_0000),
                            size: PageSize::K4,
                            perms: Perms::ALL,
                            nested_perms: Perms::ALL,
                            global: false,
                            dirty: true,
                            cache: crate::check::CheckCache::default(),
                        };
                        for m in [&mut m1, &mut m2] {
                            let kind = AccessKind::Read;
                            m.tlb_mut().fill(va & !0xfff, TlbTag::HOST, None, kind, &f);
                        }
                    }
                    _ => {
                        let kind = [AccessKind::Read, AccessKind::Write, AccessKind::Fetch]
                            [usize::try_from(rng.below(3)).unwrap()];
                        let privilege =
                            if rng.chance(1, 10) { Privilege::User } else { Privilege::Supervisor };
                        let req = AccessRequest {
                            privilege,
                            ..AccessRequest::kernel(Hva::new(va), kind)
                        };
                        let before = m2.tlb().stats().lookups;
                        let a = m1.access(&mut t1, &mut NoCheck, &mut lat, &req);
                        let b = m2.access_large(&mut t2, &mut NoCheck, &mut lat, &req);
                        assert_eq!(a, b, "step {step} {req:?}");
                        large_hits += u32::from(
                            b.path == AccessPath::TlbHit && m2.tlb().stats().lookups > before,
                        );
                    }
                }
            }
            assert_eq!(m1.stats(), m2.stats());
            assert_eq!(m1.tlb().stats(), m2.tlb().stats());
            // The same entries (the page memos differ, and may: the region memo answered
            // without writing them).
            assert_eq!(m1.tlb().occupancy(), m2.tlb().occupancy());
            for p in 0..6 * 512u64 {
                let va = 0xffff_8880_0000_0000 + (p << 12);
                let peek = |m: &Mmu| m.tlb().peek_in(va, TlbTag::HOST, None);
                assert_eq!(peek(&m1), peek(&m2), "page {p}");
            }
            assert!(large_hits > 1000, "hits: {large_hits}");
        }
    }

    /// The table storage's memo of upper entries ([`crate::tables::UpperMemo`]) never serves a
    /// stale entry: two copies of one machine see the same random mix of accesses (mostly
    /// walks: the TLBs are flushed often) and of table writes through every write path —
    /// `PageTable` map, unmap, protect, split and merge, the walker's A/D updates (leaves
    /// mapped or protected with A or D clear), `PhysMemTables::write` of any bit of an entry
    /// a walk just read (P, R/W, U/S, A, XD, a reserved bit, an address bit: the entry then
    /// points at another page), and `install`/`remove` of a table page a walk just read.
    /// One copy forgets the memo before every access; outcomes (references included),
    /// counters and tables must agree. With and without paging-structure caches.
    #[test]
    fn upper_entry_memo_agrees_with_fresh_reads() {
        let k = 0xffff_8880_0000_0000u64;
        // Four 2 MiB regions under different PD, PDPT and PML4 entries; region 1 starts as a
        // 2M page (split and merged below).
        let bases = [k, k + (2 << 20), k + (1 << 30), 0x7f00_0000_0000];
        let table = PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER;
        let machine = |cfg: &MmuConfig| {
            let mut t = PhysMemTables::new();
            let mut frames: LinearFrames =
                LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
            let mut pt: PageTable =
                PageTable::new(&mut t, &mut frames, Paging::FourLevel, cfg.pte_format(), table)
                    .unwrap();
            let ad = LeafAttrs::new(
                PteFlags::WRITABLE | PteFlags::USER | PteFlags::ACCESSED | PteFlags::DIRTY,
            );
            for (r, &b) in bases.iter().enumerate() {
                if r == 1 {
                    pt.map(&mut t, &mut frames, Hva::new(b), Spa::new(0x20_0000), PageSize::M2, ad)
                        .unwrap()
                        .ignore(); // fresh mapping
                    continue;
                }
                for i in 0..8 {
                    let (va, pa) = (Hva::new(b + i * 4096), Spa::new(0x40_0000 + i * 4096));
                    pt.map(&mut t, &mut frames, va, pa, PageSize::K4, ad).unwrap().ignore();
                }
            }
            let cr3 = Cr3 { root: pt.root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
            (t, frames, pt, Mmu::new(0, cfg, cr3).unwrap())
        };
        let mut lat = FlatLatency { per_ref: Cycles::new(REF) };
        // Bits a raw write flips: P, R/W, U/S, A, D, XD, a reserved bit (MAXPHYADDR 52 in the
        // default format: bit 52 is ignored, so a PS bit instead), and address bits 12 and 13.
        let flips = [0x1, 0x2, 0x4, 0x20, 0x40, 1 << 63, 0x80, 0x1000, 0x2000];
        let pick =
            |rng: &mut Rng, n: usize| usize::try_from(rng.below(n as u64)).expect("below a usize");
        enum Undo {
            Write(Spa, u64),
            Install(Spa, Box<crate::tables::TablePage>),
        }
        for (ci, cfg) in [MmuConfig::default(), MmuConfig::zen4()].into_iter().enumerate() {
            for seed in 0..6u64 {
                let mut rng = Rng::new(seed * 2 + ci as u64);
                let (mut t1, mut f1, mut p1, mut m1) = machine(&cfg);
                let (mut t2, mut f2, mut p2, mut m2) = machine(&cfg);
                let mut last: Vec<Spa> = Vec::new();
                let mut undo: Vec<Undo> = Vec::new();
                let (mut memo_walks, mut writes) = (0u64, 0u64);
                for step in 0..3000 {
                    let page = |rng: &mut Rng| Hva::new(bases[pick(rng, 4)] + rng.below(10) * 4096);
                    let op = rng.below(100);
                    let attrs = |rng: &mut Rng| {
                        let mut f = PteFlags::empty();
                        for (b, fl) in [
                            PteFlags::WRITABLE,
                            PteFlags::USER,
                            PteFlags::ACCESSED,
                            PteFlags::DIRTY,
                            PteFlags::NO_EXECUTE,
                        ]
                        .into_iter()
                        .enumerate()
                        {
                            // A and D mostly set, so that most walks take the fast path.
                            if rng.chance(if b == 2 || b == 3 { 7 } else { 1 }, 8) {
                                f |= fl;
                            }
                        }
                        LeafAttrs::new(f)
                    };
                    macro_rules! both {
                        (|$t:ident, $f:ident, $p:ident| $e:expr) => {{
                            let r1 = {
                                let ($t, $f, $p) = (&mut t1, &mut f1, &mut p1);
                                format!("{:?}", $e)
                            };
                            let r2 = {
                                let ($t, $f, $p) = (&mut t2, &mut f2, &mut p2);
                                format!("{:?}", $e)
                            };
                            assert_eq!(r1, r2, "seed {seed} step {step}");
                            writes += 1;
                        }};
                    }
                    // Raw writes and removals are undone (through `write` and install)
                    // before the next `PageTable` operation, whose bookkeeping they would
                    // break; accesses in between see them.
                    if (65..84).contains(&op) {
                        while let Some(u) = undo.pop() {
                            match u {
                                Undo::Write(a, v) => both!(|t, _f, _p| t.write(a, v)),
                                Undo::Install(page, e) => {
                                    both!(|t, _f, _p| t.install_entries(page, &e));
                                }
                            }
                        }
                    }
                    match op {
                        0..=64 => {
                            let kind = [AccessKind::Read, AccessKind::Write, AccessKind::Fetch]
                                [pick(&mut rng, 3)];
                            let privilege = if rng.chance(1, 4) {
                                Privilege::User
                            } else {
                                Privilege::Supervisor
                            };
                            let va = Hva::new(page(&mut rng).raw() + 8);
                            let req =
                                AccessRequest { privilege, ..AccessRequest::kernel(va, kind) };
                            t2.forget_upper();
                            if t1.upper().n != 0 {
                                memo_walks += 1;
                            }
                            let a = m1.access(&mut t1, &mut NoCheck, &mut lat, &req);
                            let b = m2.access(&mut t2, &mut NoCheck, &mut lat, &req);
                            assert_eq!(a, b, "seed {seed} step {step} {req:?}");
                            if !a.refs.is_empty() {
                                last = a.refs.iter().map(|r| r.addr).collect();
                            }
                            if rng.chance(1, 4) {
                                // The PWCs too: walks from the root.
                                assert_eq!(m1.flush_all(), m2.flush_all());
                            } else if rng.chance(2, 3) {
                                m1.tlb_mut().flush(FlushScope::All);
                                m2.tlb_mut().flush(FlushScope::All);
                            }
                        }
                        65..=69 => {
                            let (va, at) = (page(&mut rng), attrs(&mut rng));
                            let pa = Spa::new(0x40_0000 + rng.below(64) * 4096);
                            both!(|t, f, p| p
                                .map(t, f, va, pa, PageSize::K4, at)
                                .map(|i| i.ignore()));
                        }
                        70..=73 => {
                            let va = page(&mut rng);
                            both!(|t, _f, p| p.unmap(t, va, PageSize::K4).map(|u| u.0));
                        }
                        74..=79 => {
                            let (va, at) = (page(&mut rng), attrs(&mut rng));
                            both!(|t, _f, p| p
                                .protect(t, va, PageSize::K4, at)
                                .map(|i| i.ignore()));
                        }
                        80..=81 => {
                            let va = Hva::new(bases[1]);
                            both!(|t, f, p| p.split(t, f, va).map(|(s, i)| {
                                i.ignore();
                                s
                            }));
                        }
                        82..=83 => {
                            let va = Hva::new(bases[1]);
                            both!(|t, f, p| p.merge(t, f, va, PageSize::M2).map(|i| i.ignore()));
                        }
                        84..=95 if !last.is_empty() => {
                            // Any entry the last walk read, one bit flipped.
                            let a = last[pick(&mut rng, last.len())];
                            let bit = flips[pick(&mut rng, flips.len())];
                            if t1.is_table(Spa::new(a.raw() & !0xfff)) {
                                undo.push(Undo::Write(a, t1.read(a)));
                                both!(|t, _f, _p| t.write(a, t.read(a) ^ bit));
                            }
                        }
                        96..=99 if !last.is_empty() => {
                            // A table page the last walk read: removed (it reads as zeros).
                            let a = last[pick(&mut rng, last.len())];
                            let page = Spa::new(a.raw() & !0xfff);
                            if let Some(e) = t1.page(page) {
                                undo.push(Undo::Install(page, Box::new(e)));
                                both!(|t, _f, _p| t.remove(page));
                            }
                        }
                        _ => {}
                    }
                }
                assert_eq!(m1.stats(), m2.stats());
                assert_eq!(m1.tlb().stats(), m2.tlb().stats());
                assert_eq!(m1.pwc().stats(), m2.pwc().stats());
                for a in (0x100_0000..0x102_0000).step_by(8) {
                    assert_eq!(t1.read(Spa::new(a)), t2.read(Spa::new(a)));
                }
                assert!(memo_walks > 200, "seed {seed}: {memo_walks} accesses with a memo");
                assert!(writes > 200, "seed {seed}: {writes} writes");
            }
        }
    }

    /// The common walk through a check stage (the fast walk, then `check_fast_walk` through
    /// the default `check_native_walk`) against the general path's answer for the same walk
    /// (`translate_functional`): the same checks in the same order, the same result,
    /// references and check reads, for walks that pass and walks whose table-read or data
    /// check fails; the cost is the check-less walk's plus the reads and fixed cycles; a failed
    /// walk counts as faulted and installs nothing.
    #[test]
    fn checked_fast_walk_agrees_with_the_general_path() {
        /// Reads one "entry" per check, at an address derived from the one checked; denies
        /// `deny`; read-only for data reads.
        struct Recorder {
            deny: Option<Spa>,
            calls: Vec<(Spa, CheckTarget)>,
        }
        impl TranslationCheck for Recorder {
            fn check(&mut self, req: &CheckRequest, work: &mut CheckWork) -> CheckVerdict {
                self.calls.push((req.spa, req.target));
                work.reads.push(Spa::new(0xdead_0000 + (req.spa.raw() >> 12) * 16));
                work.fixed += Cycles::new(1);
                match req.target {
                    _ if self.deny == Some(req.spa) => {
                        CheckVerdict::Fault { error_bits: PfErrorCode::RMP }
                    }
                    CheckTarget::Data { access: AccessKind::Read, .. } => {
                        CheckVerdict::Allow(CheckAllow::READ_ONLY)
                    }
                    _ => CheckVerdict::Allow(CheckAllow::WRITE_OK),
                }
            }
        }
        const BIG: u64 = 0xffff_8880_0020_0000;
        // Every entry with A (and the leaves D): every walk is the common one.
        let machine = || {
            let mut t = PhysMemTables::new();
            let mut frames: LinearFrames =
                LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
            let cfg = MmuConfig { walk_ref_latency: Cycles::new(REF), ..MmuConfig::default() };
            let mut pt: PageTable = PageTable::new(
                &mut t,
                &mut frames,
                Paging::FourLevel,
                cfg.pte_format(),
                PteFlags::KERNEL_TABLE,
            )
            .unwrap();
            let ad = PteFlags::WRITABLE | PteFlags::ACCESSED | PteFlags::DIRTY;
            for (va, pa, size) in [(VA, 0x5000, PageSize::K4), (BIG, 0x20_0000, PageSize::M2)] {
                pt.map(&mut t, &mut frames, Hva::new(va), Spa::new(pa), size, LeafAttrs::new(ad))
                    .unwrap()
                    .ignore(); // fresh mapping
            }
            let cr3 = Cr3 { root: pt.root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
            (t, Mmu::new(0, &cfg, cr3).unwrap())
        };
        let mut lat = FlatLatency { per_ref: Cycles::new(REF) };
        let mut faulted = 0;
        for va in [VA + 8, BIG + 0x1238] {
            for kind in [AccessKind::Read, AccessKind::Write] {
                let req = AccessRequest::kernel(Hva::new(va), kind);
                let (t, m) = machine();
                let plain = m.translate_functional(&t, &mut NoCheck, &req);
                let AccessResult::Translated { spa: data, .. } = plain.result else { panic!() };
                let denials = std::iter::once(None)
                    .chain(plain.refs.iter().map(|r| Some(r.addr)))
                    .chain([Some(data)]);
                for deny in denials {
                    let (mut t, mut m) = machine();
                    let mut f = Recorder { deny, calls: vec![] };
                    let want = m.translate_functional(&t, &mut f, &req);
                    let base = m.access(&mut t, &mut NoCheck, &mut lat, &req).cost;
                    let (mut t, mut m) = machine();
                    let mut c = Recorder { deny, calls: vec![] };
                    let got = m.access(&mut t, &mut c, &mut lat, &req);
                    assert_eq!(got.path, AccessPath::Walk);
                    assert!(got.refs.iter().all(|r| r.kind == RefKind::Read), "the common walk");
                    let ctx = format!("{req:?} deny {deny:x?}");
                    assert_eq!(
                        (got.result, got.refs, got.check_reads),
                        (want.result, want.refs, want.check_reads),
                        "{ctx}"
                    );
                    assert_eq!(c.calls, f.calls, "{ctx}");
                    let n = got.check_reads.len() as u64;
                    assert_eq!(got.cost, base + Cycles::new(n * (REF + 1)), "{ctx}");
                    let again = m.access(&mut t, &mut c, &mut lat, &req);
                    if let AccessResult::Fault(f) = got.result {
                        assert!(f.code.contains(PfErrorCode::RMP | PfErrorCode::PRESENT), "{ctx}");
                        assert_eq!(m.stats().walks_faulted, 2, "{ctx}");
                        assert_eq!(again.path, AccessPath::Walk, "{ctx}");
                        faulted += 1;
                    } else {
                        assert_eq!(m.stats().walks.total(), 1, "{ctx}");
                        assert!(matches!(again.path, AccessPath::TlbHit), "{ctx}");
                    }
                }
            }
        }
        // 4 + 3 table reads and the data, each denied once, for a read and a write.
        assert_eq!(faulted, 2 * (4 + 1) + 2 * (3 + 1));
    }

    fn kinds(o: &AccessOutcome) -> (usize, usize) {
        let w = o.refs.iter().filter(|r| r.kind == RefKind::AdWrite).count();
        (o.refs.len() - w, w)
    }

    #[test]
    fn tlb_hit_costs_exactly_the_hit_latency() {
        let (mut t, mut mmu, mut lat) = setup(true);
        let req = AccessRequest::kernel(Hva::new(VA + 8), AccessKind::Read);
        mmu.access(&mut t, &mut NoCheck, &mut lat, &req);
        let hit = mmu.access(&mut t, &mut NoCheck, &mut lat, &req);
        assert_eq!(hit.path, AccessPath::TlbHit);
        assert_eq!(hit.cost, Cycles::new(HIT));
        assert!(hit.refs.is_empty());
    }

    #[test]
    fn cold_4level_walk_is_4_reads_plus_a_writes() {
        let (mut t, mut mmu, mut lat) = setup(true);
        let req = AccessRequest::kernel(Hva::new(VA), AccessKind::Read);
        // First touch: 4 reads, and an A-bit write on each of the 4 entries.
        let first = mmu.access(&mut t, &mut NoCheck, &mut lat, &req);
        assert_eq!(kinds(&first), (4, 4));
        assert_eq!(first.cost, Cycles::new(HIT + 8 * REF));
        // Second walk (after a flush): A bits are set, 4 reads only.
        mmu.tlb_mut().flush(FlushScope::All);
        let second = mmu.access(&mut t, &mut NoCheck, &mut lat, &req);
        assert_eq!(kinds(&second), (4, 0));
        assert_eq!(second.cost, Cycles::new(HIT + 4 * REF));
        // A write through the clean entry re-walks to set D: 4 reads + 1 write.
        let w = mmu.access(
            &mut t,
            &mut NoCheck,
            &mut lat,
            &AccessRequest::kernel(Hva::new(VA), AccessKind::Write),
        );
        assert_eq!(w.path, AccessPath::Walk);
        assert_eq!(kinds(&w), (4, 1));
        assert_eq!(w.cost, Cycles::new(HIT + 5 * REF));
        // Now a dirty entry: a hit.
        let w2 = mmu.access(
            &mut t,
            &mut NoCheck,
            &mut lat,
            &AccessRequest::kernel(Hva::new(VA), AccessKind::Write),
        );
        assert_eq!((w2.path, w2.cost), (AccessPath::TlbHit, Cycles::new(HIT)));
        let s = mmu.stats();
        assert_eq!((s.accesses, s.tlb_hits, s.walks[PageSize::K4]), (4, 1, 3));
        assert_eq!((s.walk_reads, s.walk_ad_writes), (12, 5));
        assert_eq!(s.cycles, Cycles::new(4 * HIT + 17 * REF));
    }

    #[test]
    fn a_2m_walk_is_3_reads() {
        let (mut t, mut mmu, mut lat) = setup(true);
        let req = AccessRequest::kernel(Hva::new(0xffff_8880_0021_0000), AccessKind::Read);
        mmu.access(&mut t, &mut NoCheck, &mut lat, &req);
        mmu.tlb_mut().flush(FlushScope::All);
        let o = mmu.access(&mut t, &mut NoCheck, &mut lat, &req);
        assert_eq!(kinds(&o), (3, 0));
        assert_eq!(
            o.result,
            AccessResult::Translated { spa: Spa::new(0x21_0000), size: PageSize::M2 }
        );
    }

    /// Reads one "entry" per data check at a fixed address; denies writes to `deny`.
    struct Mock {
        deny: Option<Spa>,
        calls: Vec<CheckTarget>,
    }

    impl TranslationCheck for Mock {
        fn check(&mut self, req: &CheckRequest, work: &mut CheckWork) -> CheckVerdict {
            self.calls.push(req.target);
            let CheckTarget::Data { access, .. } = req.target else {
                return CheckVerdict::Allow(CheckAllow::WRITE_OK);
            };
            work.reads.push(Spa::new(0xdead_0000));
            work.fixed += Cycles::new(1);
            match access {
                AccessKind::Write if self.deny == Some(req.spa) => {
                    CheckVerdict::Fault { error_bits: PfErrorCode::RMP }
                }
                AccessKind::Write => CheckVerdict::Allow(CheckAllow::WRITE_OK),
                AccessKind::Read | AccessKind::Fetch => CheckVerdict::Allow(CheckAllow::READ_ONLY),
            }
        }
    }

    #[test]
    fn check_stage_calls_and_costs() {
        let (mut t, mut mmu, mut lat) = setup(true);
        let mut m = Mock { deny: None, calls: vec![] };
        let req = AccessRequest::kernel(Hva::new(VA), AccessKind::Read);
        let o = mmu.access(&mut t, &mut m, &mut lat, &req);
        // 4 table reads + 4 A writes checked, then the data access.
        assert_eq!(m.calls.len(), 9);
        assert!(matches!(m.calls[1], CheckTarget::TableWrite { level: crate::Level::Pml4 }));
        assert!(matches!(
            m.calls[8],
            CheckTarget::Data { access: AccessKind::Read, mapping: PageSize::K4 }
        ));
        assert_eq!(o.check_reads.len(), 1);
        assert_eq!(o.cost, Cycles::new(HIT + 8 * REF + REF + 1));
    }

    #[test]
    fn write_on_read_filled_entry_is_rechecked_once() {
        let (mut t, mut mmu, mut lat) = setup(true);
        let mut m = Mock { deny: None, calls: vec![] };
        let rd = AccessRequest::kernel(Hva::new(0xffff_8880_0020_0000), AccessKind::Read);
        let wr = AccessRequest { kind: AccessKind::Write, ..rd };
        mmu.access(&mut t, &mut m, &mut lat, &rd);
        // The 2M leaf was clean, so the first write re-walks for D (and the fill is write-checked).
        let w1 = mmu.access(&mut t, &mut m, &mut lat, &wr);
        assert_eq!(w1.path, AccessPath::Walk);
        // Leaf now dirty; read-fill again after a flush, then write: a hit with a write check.
        mmu.tlb_mut().flush(FlushScope::All);
        mmu.access(&mut t, &mut m, &mut lat, &rd);
        let w2 = mmu.access(&mut t, &mut m, &mut lat, &wr);
        assert_eq!(w2.path, AccessPath::TlbHitWriteCheck);
        assert_eq!(w2.cost, Cycles::new(HIT + REF + 1));
        let w3 = mmu.access(&mut t, &mut m, &mut lat, &wr);
        assert_eq!((w3.path, w3.cost), (AccessPath::TlbHit, Cycles::new(HIT)));
        assert_eq!(mmu.stats().write_rechecks, 1);
    }

    #[test]
    /// A write through a read-filled entry: re-checked on the hit (knob on), or, knob off,
    /// walked again because the checker's fill-time write decision was not "allowed" — either
    /// way the denied write faults and never completes.
    fn failed_recheck_faults_and_knob_off_walks_again() {
        for recheck in [true, false] {
            let (mut t, mut mmu, mut lat) = setup(recheck);
            let target = Spa::new(0x20_0040);
            let mut m = Mock { deny: Some(target), calls: vec![] };
            let rd = AccessRequest::kernel(Hva::new(0xffff_8880_0020_0040), AccessKind::Read);
            let wr = AccessRequest { kind: AccessKind::Write, ..rd };
            // Make the leaf dirty through another address so that the write hits.
            let other = AccessRequest { va: Hva::new(0xffff_8880_0020_1000), ..wr };
            mmu.access(&mut t, &mut m, &mut lat, &other);
            mmu.tlb_mut().flush(FlushScope::All);
            mmu.access(&mut t, &mut m, &mut lat, &rd);
            let w = mmu.access(&mut t, &mut m, &mut lat, &wr);
            if recheck {
                let AccessResult::Fault(f) = w.result else { panic!("{w:?}") };
                assert_eq!(f.code.bits(), 0x8000_0003);
                assert_eq!(mmu.stats().faults[&FaultKind::Check], 1);
                // The entry stays for reads.
                assert!(mmu.tlb().peek(rd.va, TlbTag::HOST).is_some());
            } else {
                assert_eq!(w.path, AccessPath::Walk);
                let AccessResult::Fault(f) = w.result else { panic!("{w:?}") };
                assert_eq!(f.code.bits(), 0x8000_0003);
            }
        }
    }

    #[test]
    fn faults_install_nothing_and_non_canonical_costs_nothing() {
        let (mut t, mut mmu, mut lat) = setup(true);
        let req = AccessRequest::kernel(Hva::new(VA + 0x1000), AccessKind::Read);
        let o = mmu.access(&mut t, &mut NoCheck, &mut lat, &req);
        let AccessResult::Fault(f) = o.result else { panic!() };
        assert_eq!(f.code.bits(), 0);
        assert_eq!(f.addr, req.va);
        assert_eq!(kinds(&o), (4, 0));
        assert!(mmu.tlb().peek(req.va, TlbTag::HOST).is_none());
        let nc = AccessRequest::kernel(Hva::new(0x8000_0000_0000), AccessKind::Read);
        let o = mmu.access(&mut t, &mut NoCheck, &mut lat, &nc);
        assert_eq!((o.path, o.cost), (AccessPath::None, Cycles::ZERO));
        assert_eq!(mmu.stats().faults[&FaultKind::NotPresent], 1);
        assert_eq!(mmu.stats().faults[&FaultKind::NonCanonical], 1);
    }

    #[test]
    fn cr3_switch_flushes_non_global_only() {
        let (mut t, mut mmu, mut lat) = setup(true);
        let req = AccessRequest::kernel(Hva::new(VA), AccessKind::Read);
        mmu.access(&mut t, &mut NoCheck, &mut lat, &req);
        let cr3 = mmu.cr3();
        mmu.load_cr3(Cr3 { tag: TlbTag { asid: 0, pcid: 1 }, ..cr3 }, false);
        // The leaf is global: still a hit under another PCID.
        let o = mmu.access(&mut t, &mut NoCheck, &mut lat, &req);
        assert_eq!(o.path, AccessPath::TlbHit);
    }

    #[test]
    fn functional_path_has_no_side_effects() {
        let (mut t, mut mmu, mut lat) = setup(true);
        let req = AccessRequest::kernel(Hva::new(VA), AccessKind::Write);
        let f1 = mmu.translate_functional(&t, &mut NoCheck, &req);
        let f2 = mmu.translate_functional(&t, &mut NoCheck, &req);
        assert_eq!(f1, f2);
        assert_eq!(mmu.stats().accesses, 0);
        assert_eq!(mmu.tlb().occupancy().total(), 0);
        let real = mmu.access(&mut t, &mut NoCheck, &mut lat, &req);
        assert_eq!(real.result, f1.result);
        assert_eq!(real.refs, f1.refs);
    }

    /// A guest machine for the 2-D agreement test: `seed` picks the mappings and then
    /// disturbs the guest and NPT entries (A or D cleared, P cleared, R/W, U/S or XD flipped,
    /// a reserved bit set), so that walks take every path: the fast 2-D walk, guest #PF,
    /// #NPF, A/D updates in both stages.
    fn guest_machine(
        cfg: &MmuConfig,
        seed: u64,
    ) -> (PhysMemTables, PhysMemTables<Gpa>, GuestContext, Mmu, Vec<u64>) {
        use crate::nested::{GuestMemory, GuestPaging, NestedContext, NestedKind};
        use crate::page_table::{GuestPageTable, NptTable};
        let mut rng = Rng::new(seed);
        // MAXPHYADDR 48: bits 51:48 are reserved.
        let fmt = PteFormat { phys_bits: 48, cbit: crate::pte::CbitPos(None) };
        let (hlo, glo) = (0x100_0000u64, 0x10_0000u64);
        let mut host = PhysMemTables::new();
        let mut hframes: LinearFrames = LinearFrames::new(Spa::new(hlo), Spa::new(0x200_0000));
        let nflags = PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER | PteFlags::ACCESSED;
        let mut npt =
            NptTable::new(&mut host, &mut hframes, Paging::FourLevel, fmt, nflags).unwrap();
        let mut gt = PhysMemTables::new();
        let mut gframes: LinearFrames<Gpa> = LinearFrames::new(Gpa::new(glo), Gpa::new(0x40_0000));
        let gflags = PteFlags::KERNEL_TABLE | PteFlags::USER;
        let mut gpt =
            GuestPageTable::new(&mut gt, &mut gframes, Paging::FourLevel, fmt, gflags).unwrap();
        let ad = PteFlags::ACCESSED | PteFlags::DIRTY;
        let mut gvas = Vec::new();
        for i in 0..24u64 {
            let size = if i % 8 == 7 { PageSize::M2 } else { PageSize::K4 };
            let gva = 0x7f00_0000_0000 + i * (4 << 20);
            let gpa = (1 << 30) + i * (2 << 20);
            let mut flags = PteFlags::PRESENT | PteFlags::WRITABLE | ad;
            if rng.below(4) == 0 {
                flags |= PteFlags::USER;
            }
            if rng.below(6) == 0 {
                flags |= PteFlags::GLOBAL;
            }
            let leaf = LeafAttrs::new(flags);
            // Two 4K guest pages, or one 2M.
            for off in if size == PageSize::K4 { &[0, 0x1000][..] } else { &[0][..] } {
                let (v, g) = (Gva::new(gva + off), Gpa::new(gpa + off));
                gpt.map(&mut gt, &mut gframes, v, g, size, leaf).unwrap().ignore(); // fresh
            }
            // The nested leaves: a 2M one or two 4K ones (one GPA range in eight unmapped).
            if rng.below(8) != 0 {
                let nleaf = LeafAttrs::new(flags | PteFlags::USER);
                let nsize = if rng.below(3) == 0 { PageSize::M2 } else { PageSize::K4 };
                for off in if nsize == PageSize::K4 { &[0, 0x1000][..] } else { &[0][..] } {
                    let (g, h) = (Gpa::new(gpa + off), Spa::new(gpa + off + (4 << 30)));
                    npt.map(&mut host, &mut hframes, g, h, nsize, nleaf).unwrap().ignore(); // fresh
                }
            }
            gvas.extend([gva + 8, gva + 0x1000 + 16]);
        }
        gvas.push(0x7f80_0000_0000); // nothing mapped
        let nleaf = LeafAttrs::new(PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER | ad);
        for i in 0..gframes.allocated() {
            let g = glo + i * 4096;
            npt.map(
                &mut host,
                &mut hframes,
                Gpa::new(g),
                Spa::new(g + (4 << 30)),
                PageSize::K4,
                nleaf,
            )
            .unwrap()
            .ignore(); // fresh
        }
        // Disturb present entries (table pages were handed out linearly from `hlo`/`glo`).
        let disturb = |rng: &mut Rng, e: u64| match rng.below(100) {
            0..=5 => e & !PteFlags::ACCESSED.bits(),
            6..=9 => e & !PteFlags::DIRTY.bits(),
            10 => e & !PteFlags::PRESENT.bits(),
            11 => e ^ PteFlags::WRITABLE.bits(),
            12 => e ^ PteFlags::USER.bits(),
            13 => e ^ PteFlags::NO_EXECUTE.bits(),
            14 => e | 1 << 50,
            _ => e,
        };
        for a in (hlo..hlo + hframes.allocated() * 4096).step_by(8) {
            let e = host.read(Spa::new(a));
            if e != 0 {
                let d = disturb(&mut rng, e);
                host.write(Spa::new(a), d);
            }
        }
        for a in (glo..glo + gframes.allocated() * 4096).step_by(8) {
            let e = gt.read(Gpa::new(a));
            if e != 0 {
                let d = disturb(&mut rng, e);
                gt.write(Gpa::new(a), d);
            }
        }
        let ctx = GuestContext {
            tag: TlbTag { asid: 1, pcid: 0 },
            paging: Some(GuestPaging {
                root: gpt.root(),
                paging: Paging::FourLevel,
                format: fmt,
                controls: PagingControls::default(),
            }),
            nested: NestedContext {
                kind: NestedKind::Npt,
                root: npt.root(),
                paging: Paging::FourLevel,
                format: fmt,
            },
            memory: GuestMemory::Plain,
        };
        let cr3 = Cr3 { root: npt.root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
        (host, gt, ctx, Mmu::new(0, cfg, cr3).unwrap(), gvas)
    }

    /// [`Mmu::guest_hit_fast`], with the general path taken when it declines, gives what the
    /// general path alone gives: outcomes, costs, counters and TLB state, for guest-physical
    /// reads, writes and fetches over random nested tables (unmapped, read-only and
    /// non-executable ranges, 2M and 4K leaves), with a check stage that decides writes at fill
    /// time and one that leaves them to a re-check, and flushes in between.
    #[test]
    fn guest_hit_fast_path_agrees_with_the_general_path() {
        struct ReadOnlyCheck;
        impl TranslationCheck for ReadOnlyCheck {
            fn check(&mut self, _req: &CheckRequest, _work: &mut CheckWork) -> CheckVerdict {
                CheckVerdict::Allow(CheckAllow::READ_ONLY)
            }
        }
        let mut lat = FlatLatency { per_ref: Cycles::new(REF) };
        let spa_of = |o: &GuestAccessOutcome| match o.result {
            GuestAccessResult::Translated { spa, .. } => Some(spa),
            GuestAccessResult::Fault(_) | GuestAccessResult::NonCanonical { .. } => None,
        };
        let (mut fast, mut hits) = (0u32, 0u32);
        for seed in 0..24 {
            let cfg = MmuConfig::default();
            let (mut h1, mut g1, vctx, mut m1, _) = guest_machine(&cfg, seed);
            let (mut h2, mut g2, _, mut m2, _) = guest_machine(&cfg, seed);
            // The context of a guest-physical access, as a VM's `context(true)` builds it.
            let ctx = GuestContext {
                tag: TlbTag { asid: 1, pcid: 0xfff },
                paging: vctx.paging.map(|p| crate::nested::GuestPaging {
                    controls: PagingControls {
                        cr0_wp: false,
                        cr4_smep: false,
                        cr4_smap: false,
                        rflags_ac: false,
                    },
                    ..p
                }),
                ..vctx
            };
            // The 24 GPA ranges of `guest_machine` (some unmapped) and the guest's table pages.
            let gpas: Vec<u64> = (0..24u64)
                .flat_map(|i| [(1 << 30) + i * (2 << 20) + 8, (1 << 30) + i * (2 << 20) + 0x1010])
                .chain((0..8u64).map(|i| 0x10_0000 + i * 0x1000 + 0x40))
                .collect();
            let mut rng = Rng::new(seed ^ 0x9a);
            // Odd seeds: a check stage that leaves writes to a re-check.
            let (mut read_only, mut none) = (ReadOnlyCheck, NoCheck);
            let check: &mut dyn TranslationCheck =
                if seed % 2 == 1 { &mut read_only } else { &mut none };
            let mut gpa = gpas[0];
            for round in 0..1200 {
                // Runs of accesses to one page, as a guest's accesses come.
                if rng.below(4) == 0 {
                    gpa = gpas[usize::try_from(rng.below(gpas.len() as u64)).unwrap()];
                }
                let kind =
                    [AccessKind::Read, AccessKind::Read, AccessKind::Write, AccessKind::Fetch]
                        [usize::try_from(rng.below(4)).unwrap()];
                let req = GuestAccessRequest {
                    addr: GuestAddr::Physical(Gpa::new(gpa)),
                    kind,
                    privilege: Privilege::Supervisor,
                    ctx: Context::Guest { vm: 1, vcpu: 0, level: sim_core::PrivLevel::Vmpl(0) },
                };
                let a = match m1.guest_hit_fast(Gpa::new(gpa), kind, Privilege::Supervisor, &ctx) {
                    Some((spa, cost)) => {
                        fast += 1;
                        (Some(spa), cost, AccessPath::TlbHit)
                    }
                    None => {
                        let o = m1.guest_access(&mut h1, &mut g1, &ctx, check, &mut lat, &req);
                        (spa_of(&o), o.cost, o.path)
                    }
                };
                let o = m2.guest_access(&mut h2, &mut g2, &ctx, check, &mut lat, &req);
                hits += u32::from(o.path == AccessPath::TlbHit);
                assert_eq!(a, (spa_of(&o), o.cost, o.path), "seed {seed} round {round} {req:?}");
                if rng.below(16) == 0 {
                    m1.tlb_mut().flush(FlushScope::All);
                    m2.tlb_mut().flush(FlushScope::All);
                }
            }
            assert_eq!(m1.stats(), m2.stats(), "seed {seed}");
            assert_eq!(m1.tlb().stats(), m2.tlb().stats(), "seed {seed}");
        }
        // The fast path answered most hits, not all (writes on read-filled entries decline).
        assert!(fast > 2000 && hits > fast, "{fast} fast of {hits} hits");
    }

    /// The fast 2-D walk (a check stage that allows everything, no nested TLB or PWC) gives
    /// what the general path gives: outcomes, counters, TLB state and A/D writes, over
    /// random tables with faults and A/D updates in both stages.
    #[test]
    fn fast_2d_walk_agrees_with_the_general_path() {
        struct AllowByCheck;
        impl TranslationCheck for AllowByCheck {
            fn check(&mut self, _req: &CheckRequest, _work: &mut CheckWork) -> CheckVerdict {
                CheckVerdict::Allow(CheckAllow::WRITE_OK)
            }
        }
        let mut lat = FlatLatency { per_ref: Cycles::new(REF) };
        // Translated walks without and with A/D writes, faulted walks.
        let (mut clean, mut ad, mut faulted) = (0, 0, 0);
        for seed in 0..40 {
            let cfg = MmuConfig::default();
            let (mut h1, mut g1, ctx, mut m1, gvas) = guest_machine(&cfg, seed);
            let (mut h2, mut g2, _, mut m2, _) = guest_machine(&cfg, seed);
            let mut rng = Rng::new(seed ^ 0x2d);
            for round in 0..300 {
                let gva = gvas[usize::try_from(rng.below(gvas.len() as u64)).unwrap()];
                let kind = [AccessKind::Read, AccessKind::Write, AccessKind::Fetch]
                    [usize::try_from(rng.below(3)).unwrap()];
                let privilege =
                    if rng.below(3) == 0 { Privilege::User } else { Privilege::Supervisor };
                let req = GuestAccessRequest {
                    addr: GuestAddr::Virtual(Gva::new(gva)),
                    kind,
                    privilege,
                    ctx: Context::Guest { vm: 1, vcpu: 0, level: sim_core::PrivLevel::Vmpl(0) },
                };
                let a = m1.guest_access(&mut h1, &mut g1, &ctx, &mut NoCheck, &mut lat, &req);
                let b = m2.guest_access(&mut h2, &mut g2, &ctx, &mut AllowByCheck, &mut lat, &req);
                assert_eq!(a, b, "seed {seed} round {round} {req:?}");
                if a.path == AccessPath::Walk {
                    match a.result {
                        GuestAccessResult::Translated { .. }
                            if a.refs.iter().any(|r| r.kind == RefKind::AdWrite) =>
                        {
                            ad += 1;
                        }
                        GuestAccessResult::Translated { .. } => clean += 1,
                        GuestAccessResult::Fault(_) | GuestAccessResult::NonCanonical { .. } => {
                            faulted += 1;
                        }
                    }
                }
                if rng.below(4) == 0 {
                    m1.tlb_mut().flush(FlushScope::All);
                    m2.tlb_mut().flush(FlushScope::All);
                }
            }
            assert_eq!(m1.stats(), m2.stats(), "seed {seed}");
            assert_eq!(m1.tlb().stats(), m2.tlb().stats(), "seed {seed}");
            for a in (0x100_0000..0x110_0000u64).step_by(8) {
                assert_eq!(h1.read(Spa::new(a)), h2.read(Spa::new(a)), "seed {seed} {a:#x}");
            }
            for a in (0x10_0000..0x20_0000u64).step_by(8) {
                assert_eq!(g1.read(Gpa::new(a)), g2.read(Gpa::new(a)), "seed {seed} {a:#x}");
            }
        }
        assert!(clean > 1000 && ad > 100 && faulted > 100, "{clean} / {ad} / {faulted}");
    }
}
