//! One CPU's MMU: DTLB + walker + check stage, priced per transaction (STYLE rules 11, 13).

use crate::check::{
    CheckRequest, CheckTarget, CheckVerdict, CheckWork, TranslationCheck, WriteCheck,
};
use crate::config::MmuConfig;
use crate::latency::{CacheLatency, MemRefKind};
use crate::level::Paging;
use crate::tables::PhysMemTables;
use crate::tlb::{FlushScope, Tlb, TlbFill, TlbTag};
use crate::walk::{
    AccessKind, PageFault, PagingControls, PfErrorCode, Privilege, RefKind, Translation,
    WalkContext, WalkRefs, WalkRequest, permits, walk_checked, walk_checked_functional,
};
use crate::{InlineVec, check::MAX_CHECK_READS, pte::PteFlags, pte::PteFormat};
use sim_core::config::ConfigError;
use sim_core::stats::PerSize;
use sim_core::{Agent, Context, CpuId, Cycles, Hva, PageSize, Spa};
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
    /// DTLB hit.
    TlbHit,
    /// DTLB hit by a write on a read-filled entry: the write check ran.
    TlbHitWriteCheck,
    /// Page walk (a miss; or a hit that could not be used: permissions, or D clear on a write).
    Walk,
}

/// The memory the check stage read during one access.
pub type CheckReads = InlineVec<Spa, MAX_CHECK_READS>;

/// What one access did and cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessOutcome {
    /// The architectural result.
    pub result: AccessResult,
    /// Cycles the translation cost: the lookup, plus every walk reference and check-stage
    /// read priced by the cache-latency model, plus the checker's fixed cycles.
    pub cost: Cycles,
    /// How it was resolved.
    pub path: AccessPath,
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

/// MMU counters. Subtract snapshots for phase deltas.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MmuStats {
    /// Accesses presented.
    pub accesses: u64,
    /// Accesses resolved by a DTLB hit (including write-checked hits).
    pub tlb_hits: u64,
    /// Hits that ran the write check on a read-filled entry.
    pub write_rechecks: u64,
    /// Walks that ended in a translation, by leaf size (DTLB misses by the size they resolved
    /// to).
    pub walks: PerSize<u64>,
    /// Walks that ended in a fault.
    pub walks_faulted: u64,
    /// Walk references that read an entry.
    pub walk_reads: u64,
    /// Walk references that wrote A/D bits.
    pub walk_ad_writes: u64,
    /// Memory read by the check stage.
    pub check_reads: u64,
    /// Faults by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Total translation cycles.
    pub cycles: Cycles,
}

impl std::ops::Sub for &MmuStats {
    type Output = MmuStats;
    /// `self − earlier`: the counts of the phase in between.
    fn sub(self, earlier: &MmuStats) -> MmuStats {
        MmuStats {
            accesses: self.accesses - earlier.accesses,
            tlb_hits: self.tlb_hits - earlier.tlb_hits,
            write_rechecks: self.write_rechecks - earlier.write_rechecks,
            walks: self.walks - earlier.walks,
            walks_faulted: self.walks_faulted - earlier.walks_faulted,
            walk_reads: self.walk_reads - earlier.walk_reads,
            walk_ad_writes: self.walk_ad_writes - earlier.walk_ad_writes,
            check_reads: self.check_reads - earlier.check_reads,
            faults: self
                .faults
                .iter()
                .map(|(k, v)| (*k, v - earlier.faults.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v != 0)
                .collect(),
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

/// One CPU's MMU (host translation; the nested 2-D path arrives with the guest issues).
#[derive(Clone, Debug)]
pub struct Mmu {
    cpu: CpuId,
    tlb_hit_latency: Cycles,
    recheck_write_on_read_fill: bool,
    format: PteFormat,
    controls: PagingControls,
    cr3: Cr3,
    tlb: Tlb,
    stats: MmuStats,
}

impl Mmu {
    /// The MMU of CPU `cpu`, with an empty DTLB and CR3 = `cr3`; controls as Linux sets them.
    ///
    /// # Errors
    /// [`ConfigError`] if `cfg` is invalid.
    pub fn new(cpu: CpuId, cfg: &MmuConfig, cr3: Cr3) -> Result<Mmu, ConfigError> {
        use sim_core::config::ConfigBlock;
        cfg.validate()?;
        Ok(Mmu {
            cpu,
            tlb_hit_latency: cfg.tlb_hit_latency,
            recheck_write_on_read_fill: cfg.recheck_write_on_read_fill,
            format: cfg.pte_format(),
            controls: PagingControls::default(),
            cr3,
            tlb: Tlb::new(&cfg.dtlb)?,
            stats: MmuStats::default(),
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
    /// context's non-global entries are flushed.
    pub fn load_cr3(&mut self, cr3: Cr3, preserve: bool) {
        self.cr3 = cr3;
        if !preserve {
            self.tlb.flush(FlushScope::Context(cr3.tag));
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
    }

    /// The DTLB.
    pub const fn tlb(&self) -> &Tlb {
        &self.tlb
    }

    /// The DTLB, for invalidations and flushes.
    pub fn tlb_mut(&mut self) -> &mut Tlb {
        &mut self.tlb
    }

    /// Counters.
    pub const fn stats(&self) -> &MmuStats {
        &self.stats
    }

    fn ctx(&self) -> WalkContext<Spa> {
        WalkContext {
            root: self.cr3.root,
            paging: self.cr3.paging,
            format: self.format,
            controls: self.controls,
        }
    }

    fn agent(&self, req: &AccessRequest) -> Agent {
        Agent::Cpu { cpu: self.cpu, ctx: req.ctx }
    }

    fn walk_request(&self, req: &AccessRequest) -> WalkRequest<Hva> {
        WalkRequest { va: req.va, access: req.kind, privilege: req.privilege, who: self.agent(req) }
    }

    fn price_checks<L: CacheLatency + ?Sized>(&mut self, work: &CheckWork, lat: &mut L) -> Cycles {
        self.stats.check_reads += work.reads.len() as u64;
        work.reads.iter().map(|&a| lat.latency(a, MemRefKind::CheckRead)).sum::<Cycles>()
            + work.fixed
    }

    fn finish(&mut self, out: AccessOutcome) -> AccessOutcome {
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
        out
    }

    /// Translate one access (timing mode): DTLB lookup; on a usable hit, done (running the
    /// write check first if a write meets a read-filled entry); otherwise a walk through the
    /// check stage, A/D updates, and a fill. A fault removes the address's entries (SDM Vol. 3A
    /// §4.10.4.1) and installs none.
    ///
    /// Cost = `tlb_hit_latency` + each walk reference priced by `lat` + each check-stage read
    /// priced by `lat` + the checker's fixed cycles.
    pub fn access<C: TranslationCheck + ?Sized, L: CacheLatency + ?Sized>(
        &mut self,
        tables: &mut PhysMemTables,
        checker: &mut C,
        lat: &mut L,
        req: &AccessRequest,
    ) -> AccessOutcome {
        self.stats.accesses += 1;
        let mut out = AccessOutcome {
            result: AccessResult::NonCanonical { addr: req.va },
            cost: Cycles::ZERO,
            path: AccessPath::None,
            refs: WalkRefs::new(),
            check_reads: CheckReads::new(),
        };
        if !req.va.is_canonical(self.cr3.paging.va_bits()) {
            return self.finish(out);
        }
        out.cost = self.tlb_hit_latency;
        let tag = self.cr3.tag;
        let mut work = CheckWork::default();
        if let Some(hit) = self.tlb.lookup(req.va, tag) {
            // A write through a clean entry re-walks to set D (SDM Vol. 3A §4.8).
            let usable = permits(hit.perms, req.kind, req.privilege, self.controls)
                && (req.kind != AccessKind::Write || hit.dirty);
            if usable {
                self.stats.tlb_hits += 1;
                out.path = AccessPath::TlbHit;
                out.result = AccessResult::Translated { spa: hit.pa, size: hit.size };
                if req.kind == AccessKind::Write
                    && hit.cache.write == WriteCheck::Unchecked
                    && self.recheck_write_on_read_fill
                {
                    self.stats.write_rechecks += 1;
                    out.path = AccessPath::TlbHitWriteCheck;
                    let creq = CheckRequest {
                        spa: hit.pa,
                        target: CheckTarget::Data { access: AccessKind::Write, mapping: hit.size },
                        who: self.agent(req),
                        privilege: req.privilege,
                    };
                    match checker.check(&creq, &mut work) {
                        CheckVerdict::Allow(_) => {
                            let mut cache = hit.cache;
                            cache.write = WriteCheck::Allowed;
                            self.tlb.set_cache(hit.slot, cache);
                        }
                        CheckVerdict::Fault { error_bits } => {
                            let mut code = PfErrorCode::PRESENT | PfErrorCode::WRITE | error_bits;
                            if req.privilege == Privilege::User {
                                code |= PfErrorCode::USER;
                            }
                            out.result = AccessResult::Fault(PageFault { code, addr: req.va });
                        }
                    }
                    out.cost += self.price_checks(&work, lat);
                    out.check_reads = work.reads;
                }
                return self.finish(out);
            }
        }
        out.path = AccessPath::Walk;
        let cw = walk_checked(tables, &self.ctx(), &self.walk_request(req), checker, &mut work);
        for r in &cw.walk.refs {
            let kind = match r.kind {
                RefKind::Read => {
                    self.stats.walk_reads += 1;
                    MemRefKind::TableRead(r.level)
                }
                RefKind::AdWrite => {
                    self.stats.walk_ad_writes += 1;
                    MemRefKind::TableAdWrite(r.level)
                }
            };
            out.cost += lat.latency(r.addr, kind);
        }
        out.cost += self.price_checks(&work, lat);
        out.refs = cw.walk.refs;
        out.check_reads = work.reads;
        match (cw.walk.outcome, cw.allow) {
            (Translation::Translated { pa, size, perms, attrs }, Some(allow)) => {
                let fill_size = allow.fill_size.unwrap_or(size).min(size);
                let frame = Spa::new_truncate(pa.raw() & !(fill_size.bytes() - 1));
                let installed = self.tlb.fill(
                    req.va,
                    tag,
                    &TlbFill {
                        frame,
                        size: fill_size,
                        perms,
                        global: attrs.flags.contains(PteFlags::GLOBAL),
                        dirty: attrs.flags.contains(PteFlags::DIRTY),
                        cache: allow.cache,
                    },
                );
                self.stats.walks[size] += 1;
                out.result = AccessResult::Translated { spa: pa, size: installed };
            }
            (Translation::Translated { .. }, None) => unreachable!("checks ran on a translation"),
            (Translation::Fault(f), _) => {
                self.stats.walks_faulted += 1;
                self.tlb.invalidate_page(req.va, tag);
                out.result = AccessResult::Fault(f);
            }
            (Translation::NonCanonical { addr }, _) => {
                out.result = AccessResult::NonCanonical { addr };
            }
        }
        self.finish(out)
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
        let cw = walk_checked_functional(
            tables,
            &self.ctx(),
            &self.walk_request(req),
            checker,
            &mut work,
        );
        let result = match (cw.walk.outcome, cw.allow) {
            (Translation::Translated { pa, size, .. }, Some(allow)) => {
                AccessResult::Translated { spa: pa, size: allow.fill_size.unwrap_or(size) }
            }
            (Translation::Translated { .. }, None) => unreachable!("checks ran on a translation"),
            (Translation::Fault(f), _) => AccessResult::Fault(f),
            (Translation::NonCanonical { addr }, _) => AccessResult::NonCanonical { addr },
        };
        FunctionalOutcome { result, refs: cw.walk.refs, check_reads: work.reads }
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
        let cfg = MmuConfig {
            tlb_hit_latency: Cycles::new(HIT),
            walk_ref_latency: Cycles::new(REF),
            recheck_write_on_read_fill: recheck,
            ..MmuConfig::default()
        };
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
    fn failed_recheck_faults_and_knob_off_trusts_the_fill() {
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
                assert_eq!(w.path, AccessPath::TlbHit);
                assert!(matches!(w.result, AccessResult::Translated { .. }));
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
}
