//! The machine: the hardware blocks composed with the host software model, executing one
//! event at a time (DESIGN "Layers": the root crate implements mmu-model's check and
//! frame-source traits with rmp-model and the host allocator).
//!
//! What the machine gives semantics to: host-kernel and host-process accesses (direct map
//! through `phys:` addresses, demand paging for processes), `work`, RMPUPDATE and PSMASH with
//! the physmap policy and the `rmp.tlb_on_update` knob, SNP_LAUNCH_UPDATE validation, every
//! CPA op on the direct map ([`crate::host::cpa`]), kernel/process map and unmap, host CR3
//! loads, INVLPG, INVPCID, ASID and full flushes, shootdowns, VM creation, recorded
//! allocations, and an early-boot phase (`host.early_boot`); guest (vCPU) accesses through
//! each VM's stage-2 and guest page tables (`src/vm.rs`: 2-D walks for GVAs, nested walks
//! for GPAs), with map and unmap in those tables. Every other event is executed as a no-op and
//! listed in the report's `not_modelled` table, never dropped silently.
//!
//! Shootdowns (arch/x86/mm/tlb.c, read for this model): a flush of the kernel address space
//! goes to every online CPU (`flush_tlb_all`, `flush_tlb_kernel_range`, `cpa_flush`: all
//! `on_each_cpu`); a flush of a process goes to the CPUs that may cache it — those that have
//! had it loaded since their last full flush, tracked per CPU with the PCIDs it was loaded
//! under (Linux's `mm_cpumask`, kept exact rather than trimmed lazily). The initiator pays one
//! IPI send per remote target, its own flush work, and the wait for the slowest
//! acknowledgement (`max(own work, receive + work + ack)`, since targets work while the
//! initiator does its own part, as `smp_call_function_many` runs the local call after sending);
//! each target stalls for the IPI receive plus its flush work.

use crate::config::MachineConfig;
use crate::host::alloc::{BootAllocator, BuddyAllocator};
use crate::host::config::PhysmapPolicy;
use crate::host::cpa::{self, CpaEnv, CpaStats, FlushStep};
use crate::host::directmap::{Count, DirectMap, PAGE_OFFSET, dm_va};
use crate::report::{self, InputInfo, Report};
use crate::vm::{MapFlags, VmMapError, VmPaging};
use mmu_model::{
    AccessKind, AccessPath, AccessRequest, AccessResult, CacheHierarchy, CacheLatency, CheckAllow,
    CheckCache, CheckRequest, CheckTarget, CheckVerdict, CheckWork, CpuCaches, Cr3, FlushScope,
    FrameSource, GuestAccessRequest, GuestAccessResult, GuestAddr, GuestFault, LeafAttrs,
    MemRefKind, Mmu, NoCheck, NpfExitInfo1, PageTable, Paging, PendingInvalidation, PfErrorCode,
    PhysMemTables, Privilege, PteFlags, RefKind, Stage, TlbControl, TlbTag, TranslationCheck,
    WriteCheck,
};
use rmp_model::{
    Executor, GuestAccess, GuestAccessKind, GuestFaultClass, GuestInstrOutcome, GuestRmpContext,
    GuestViolation, HostAccess, NestedTableCheck, Rmp, RmpCheck, RmpEntry, RmpLayout, RmpPageSize,
    RmpReturn, RmpUpdateInput, RmpViolationCause, TlbOnRmpUpdate, VC_PAGE_NOT_VALIDATED,
};
use sim_core::event::{
    AllocKind, CpaOp, Disposition, FaultKind, InvpcidKind, PscOp, Space, VmKind,
};
use sim_core::{
    Address, Agent, Check, Context, Cycles, Event, Gpa, Gva, Hva, MemoryServices, PageSize,
    PrivLevel, Setting, Spa, StateItem, TimedEvent, VmId,
};
use std::collections::{BTreeMap, BTreeSet};

pub use kvm::KvmCounts;
pub use policy::PolicyCounts;
pub use vsm::{VsmCounts, VtlCounts};

/// What an event did, for `expect` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The fault it raised, if any.
    pub fault: Option<FaultInfo>,
    /// An instruction's return code and carry flag.
    pub rc: Option<(u64, Option<bool>)>,
    /// Cycles the event's work costs (before the overlap rule decides what the CPU waits for).
    pub cost: Cycles,
    /// How the CPU's clock treats it (DESIGN.md "The timing model").
    pub timing: Timing,
    /// A handled exit: the access is retried (machine-internal).
    retry: bool,
}

/// How an event's cost reaches its CPU's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Timing {
    /// Serializing: starts when everything before it has retired (RMP instructions, faults,
    /// flushes, CPA, …).
    #[default]
    Serial,
    /// A memory access. Its cost minus `chain` (TLB lookups, and the data access of a TLB hit)
    /// is paid in order at the issue clock; `chain`, the dependent latency of a miss (walk
    /// references, RMP-entry reads, then the data access), overlaps with later accesses:
    /// up to `mmu.page_walkers` walks at a time within a window of `mmu.mlp_window` accesses.
    Access {
        /// The overlappable dependent chain (zero for a TLB hit).
        chain: Cycles,
    },
    /// Non-memory work: advances the issue clock by its cost, so that later accesses issue
    /// after it while earlier misses may still be outstanding.
    Issue,
}

/// A fault as scenarios check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultInfo {
    /// Kind.
    pub kind: FaultKind,
    /// Architectural error code.
    pub code: u64,
    /// What became of it.
    pub disposition: Disposition,
}

/// A machine-construction or state error (bad scenario input, not an architectural outcome).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MachineError {
    /// Memory too small for the kernel's structures.
    #[error("machine setup: {0}")]
    Setup(String),
    /// A `state` line that cannot be applied.
    #[error("state: {0}")]
    State(String),
    /// A `vm` setting that is malformed.
    #[error("vm setting: {0}")]
    Vm(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VmInfo {
    kind: VmKind,
    asid: u32,
    /// Guest RAM in bytes (`memory=`; 0 when not given).
    memory: u64,
}

/// Page-table pages come from the buddy allocator, like every other host page — or, during
/// early boot, from the boot allocator (memblock). A page the boot allocator gave out goes back
/// to it while boot lasts, and to the buddy allocator afterwards.
struct TableFrames<'a> {
    buddy: &'a mut BuddyAllocator,
    boot: &'a mut BootAllocator,
    in_boot: bool,
}

impl FrameSource for TableFrames<'_> {
    fn alloc_table(&mut self) -> Option<Spa> {
        if self.in_boot { self.boot.alloc() } else { self.buddy.alloc(0) }
    }
    fn free_table(&mut self, page: Spa) {
        // A table page we handed out always frees cleanly; a failure would be a model bug.
        let ok = if self.boot.owns(page) {
            if self.in_boot {
                self.boot.free(page)
            } else {
                self.boot.forget(page)
                    && self.buddy.release(page, Spa::new(page.raw() + 4096)).is_ok()
            }
        } else {
            self.buddy.free(page, 0).is_ok()
        };
        debug_assert!(ok, "table page {page:?} freed twice");
    }
}

/// `TableFrames` over the machine's allocators (a macro so that the borrow stays on the two
/// fields, leaving the page tables free to borrow).
macro_rules! frames {
    ($m:ident) => {
        TableFrames { buddy: &mut $m.alloc, boot: &mut $m.boot, in_boot: $m.in_boot }
    };
}

/// `TableFrames` from the buddy allocator even in early boot: for VM tables (a VM runs once
/// the system does) and for initial state.
macro_rules! buddy_frames {
    ($m:ident) => {
        TableFrames { buddy: &mut $m.alloc, boot: &mut $m.boot, in_boot: false }
    };
}

mod iommu;
mod tdx;
pub use tdx::{HostSideCounts, TdxCounts};
mod kvm;
mod kvm_tdx;
mod vsm;
pub use kvm_tdx::{FROZEN_SPTE, KvmTdxCounts, Op, SHADOW_NONPRESENT_VALUE, Step};
mod policy;

/// The RMP check stage behind mmu-model's hook (spec/snp.md §2.1–2.4).
///
/// Host accesses: data writes and page-table accesses get the Hypervisor-Owned check at the
/// mapping's size; reads are not checked; a 1G mapping is checked and cached as 2M (APM
/// §15.36.10). Guest accesses (when built with [`RmpCheckStage::guest`]): the Table 15-39 guest
/// rows of [`Rmp::peek_guest_access`] — the guest's own page-table references and the data
/// access — and, for the nested walk's references to the host-owned NPT, what
/// `rmp.nested_table_check` says (spec/snp.md §7 item 3). The RMP entries it reads are reported
/// in the check work, so the MMU prices them through its latency model.
#[derive(Debug)]
pub struct RmpCheckStage<'a> {
    rmp: &'a mut Rmp,
    lookup: Cycles,
    guest: Option<(GuestRmpContext, NestedTableCheck)>,
    writes_at_fill: bool,
}

impl<'a> RmpCheckStage<'a> {
    /// The stage for an SNP-enabled host; `lookup` is the fixed cost per check on top of the
    /// entry read (`rmp.rmp_lookup_latency`).
    pub fn new(rmp: &'a mut Rmp, lookup: Cycles) -> RmpCheckStage<'a> {
        RmpCheckStage { rmp, lookup, guest: None, writes_at_fill: false }
    }

    /// Decide host writes when a read fills the TLB entry (for
    /// `mmu.recheck_write_on_read_fill = false`): the entry is write-allowed only if the write
    /// check on the same RMP entry passes.
    pub fn writes_at_fill(mut self, yes: bool) -> RmpCheckStage<'a> {
        self.writes_at_fill = yes;
        self
    }

    /// The stage for the accesses of a guest vCPU.
    pub fn guest(
        rmp: &'a mut Rmp,
        lookup: Cycles,
        who: GuestRmpContext,
        nested_tables: NestedTableCheck,
    ) -> RmpCheckStage<'a> {
        RmpCheckStage { rmp, lookup, guest: Some((who, nested_tables)), writes_at_fill: true }
    }

    /// The host rule for an access to `spa`.
    #[inline(always)] // into `check_native`: the walk's table checks fold to the 4K rule
    fn host(&mut self, spa: Spa, target: CheckTarget, work: &mut CheckWork) -> CheckVerdict {
        let (access, mapping) = match target {
            CheckTarget::Data { access: AccessKind::Write, mapping } => {
                (HostAccess::DataWrite, mapping)
            }
            CheckTarget::Data { access: AccessKind::Read | AccessKind::Fetch, mapping } => {
                (HostAccess::DataRead, mapping)
            }
            CheckTarget::TableRead { .. } | CheckTarget::TableWrite { .. } => {
                (HostAccess::PageTable, PageSize::K4)
            }
        };
        let out = self.rmp.check_host_access(spa, mapping, access);
        if let Some(a) = out.entry_read {
            work.reads.push(a);
            work.fixed += self.lookup;
        }
        match out.check {
            RmpCheck::Ok => CheckVerdict::Allow(CheckAllow {
                cache: CheckCache {
                    write: if access == HostAccess::DataWrite
                        || (self.writes_at_fill
                            && access == HostAccess::DataRead
                            && self.rmp.peek_host_access(spa, mapping, HostAccess::DataWrite).check
                                == RmpCheck::Ok)
                    {
                        WriteCheck::Allowed
                    } else {
                        WriteCheck::Unchecked
                    },
                },
                fill_size: (mapping == PageSize::G1).then_some(PageSize::M2),
            }),
            // Violations are counted by rmp-model's own statistics (RmpStats::violations).
            RmpCheck::Violation(_) => CheckVerdict::Fault { error_bits: PfErrorCode::RMP },
        }
    }
}

impl TranslationCheck for RmpCheckStage<'_> {
    fn check(&mut self, req: &CheckRequest, work: &mut CheckWork) -> CheckVerdict {
        let (Some((who, nested_tables)), Some(info)) = (self.guest, req.guest) else {
            return self.host(req.spa, req.target, work);
        };
        let kind = match (req.stage, req.target) {
            (Stage::Nested | Stage::Native, _) => {
                // The NPT is host memory: a hypervisor page-table access when checked at all.
                return match nested_tables {
                    NestedTableCheck::None => CheckVerdict::Allow(CheckAllow::WRITE_OK),
                    NestedTableCheck::HypervisorOwned => match self.host(req.spa, req.target, work)
                    {
                        CheckVerdict::Fault { error_bits } => CheckVerdict::NestedFault {
                            exit_bits: NpfExitInfo1::from_bits_retain(u64::from(error_bits.bits())),
                        },
                        v => v,
                    },
                };
            }
            (Stage::Guest, CheckTarget::TableRead { .. }) => GuestAccessKind::TableRead,
            (Stage::Guest, CheckTarget::TableWrite { .. }) => GuestAccessKind::TableWrite,
            (Stage::Guest, CheckTarget::Data { access, .. }) => match access {
                AccessKind::Read => GuestAccessKind::Read,
                AccessKind::Write => GuestAccessKind::Write,
                AccessKind::Fetch => {
                    GuestAccessKind::Fetch { user: req.privilege == Privilege::User }
                }
            },
        };
        let access = GuestAccess {
            spa: req.spa,
            gpa: info.gpa,
            kind,
            c_bit: info.private.unwrap_or(false),
            nested_size: info.nested_size,
        };
        let out = self.rmp.check_guest_access(who, &access);
        if let Some(a) = out.entry_read {
            work.reads.push(a);
            work.fixed += self.lookup;
        }
        match out.violation {
            // The TLB entry keeps the result for writes too, decided from the same entry read
            // (RMP changes reach TLBs through `rmp.tlb_on_update`): a write through an entry
            // that would fail the write check (VMPL write permission, or Hypervisor-Owned for
            // C=0) re-walks and faults.
            None if kind == GuestAccessKind::Read => {
                let w = GuestAccess { kind: GuestAccessKind::Write, ..access };
                CheckVerdict::Allow(if self.rmp.peek_guest_access(who, &w).violation.is_none() {
                    CheckAllow::WRITE_OK
                } else {
                    CheckAllow::READ_ONLY
                })
            }
            None => CheckVerdict::Allow(CheckAllow::WRITE_OK),
            Some(v) => guest_verdict(v),
        }
    }

    /// A native request carries no guest context, so `check` gives it the host rule: go there
    /// directly.
    #[inline(always)] // into the walk's check loop
    fn check_native(
        &mut self,
        spa: Spa,
        target: CheckTarget,
        _who: Agent,
        _privilege: Privilege,
        work: &mut CheckWork,
    ) -> CheckVerdict {
        self.host(spa, target, work)
    }

    /// The table reads in one pass through [`Rmp::check_host_tables`] (each a hypervisor
    /// page-table access, as `host` checks it), then the data access by `host`.
    #[inline]
    fn check_native_walk(
        &mut self,
        tables: &[Spa],
        _first: mmu_model::Level,
        data: &CheckRequest,
        work: &mut CheckWork,
    ) -> CheckVerdict {
        let before = work.reads.len();
        let failed = self.rmp.check_host_tables(tables, &mut work.reads);
        // `host` charges the lookup once per entry read.
        work.fixed += self.lookup.times((work.reads.len() - before) as u64);
        if failed.is_some() {
            return CheckVerdict::Fault { error_bits: PfErrorCode::RMP };
        }
        self.host(data.spa, data.target, work)
    }
}

/// The architectural report of a failed guest RMP check (spec/snp.md §2.3): #VMEXIT(NPF) with
/// EXITINFO1 bit 31 (RMP), 34 (ENC) when the effective C-bit was 1, 35 (SIZEM), 36 (VMPL); or
/// #VC 0x404.
fn guest_verdict(v: GuestViolation) -> CheckVerdict {
    match v.class {
        GuestFaultClass::Vc => CheckVerdict::GuestVc { error_code: VC_PAGE_NOT_VALIDATED },
        GuestFaultClass::Npf { enc, sizem } => {
            let mut bits = NpfExitInfo1::RMP;
            if enc {
                bits |= NpfExitInfo1::ENC;
            }
            if sizem {
                bits |= NpfExitInfo1::SIZEM;
            }
            if v.cause == RmpViolationCause::Vmpl {
                bits |= NpfExitInfo1::VMPL;
            }
            CheckVerdict::NestedFault { exit_bits: bits }
        }
    }
}

/// The RMP's view of a vCPU: its VM's ASID, whether the VM is SNP-active, and its VMPL (a VTL
/// runs at VMPL0 until the VTL-to-VMPL mapping of the memory-attributes issue exists). `None`
/// for a TD (no RMP on a TDX host) and for an unknown VM.
/// A host access through `mmu`, checked by `chk`: through [`Mmu::access_large`] for the
/// kernel (the direct map's large pages), [`Mmu::access`] otherwise.
#[inline(always)]
fn host_translate<C: TranslationCheck>(
    mmu: &mut Mmu,
    tables: &mut PhysMemTables,
    chk: &mut C,
    lat: &mut Metered<'_>,
    req: &AccessRequest,
    kernel: bool,
) -> mmu_model::AccessOutcome {
    if kernel { mmu.access_large(tables, chk, lat, req) } else { mmu.access(tables, chk, lat, req) }
}

fn rmp_context(
    vm: Option<&VmInfo>,
    ctx: Context,
    vsm: &crate::vsm::VsmConfig,
) -> Option<GuestRmpContext> {
    let info = vm?;
    if info.kind == VmKind::Tdx {
        return None;
    }
    let vmpl = vmpl_of(ctx, vsm);
    Some(GuestRmpContext {
        asid: u16::try_from(info.asid).unwrap_or(u16::MAX),
        snp_active: info.kind == VmKind::Snp,
        vmpl,
    })
}

/// Whether an access of `size` bytes from `first` stays in one 4 KiB page (as
/// [`Machine::per_page`] would run it: a size of 0 is one byte).
#[inline(always)]
fn within_page(first: u64, size: u32) -> bool {
    (first & 0xfff) + u64::from(size.max(1)) <= 0x1000
}

/// The VMPL a guest context runs at: its own, or its VTL's by `vsm.vtl_vmpl` (a VTL the map
/// does not name runs at VMPL 3, the least privileged); host contexts: 0.
fn vmpl_of(ctx: Context, vsm: &crate::vsm::VsmConfig) -> u8 {
    match ctx {
        Context::Guest { level: PrivLevel::Vmpl(v), .. } => v,
        Context::Guest { level: PrivLevel::Vtl(l), .. } => vsm.vmpl_of(l).unwrap_or(3),
        Context::HostKernel | Context::HostProcess(_) => 0,
    }
}

/// What a guest access's outcome says, once its buffer went back for reuse.
struct GuestOutcomeSummary {
    cost: Cycles,
    path: AccessPath,
    result: GuestAccessResult,
}

/// A guest RMP instruction and its operands.
#[derive(Clone, Copy, Debug)]
enum GuestRmpOp {
    Pvalidate { size: PageSize, validate: bool },
    Rmpadjust { size: PageSize, vmpl: u8, perms: u64, vmsa: bool },
}

impl GuestRmpOp {
    const fn name(self) -> &'static str {
        match self {
            GuestRmpOp::Pvalidate { .. } => "pvalidate",
            GuestRmpOp::Rmpadjust { .. } => "rmpadjust",
        }
    }
}

/// The fault kind and code of a guest translation fault, as the report keys them.
fn guest_fault_code(f: &GuestFault) -> (FaultKind, u64) {
    match f {
        GuestFault::PageFault(pf) => (FaultKind::Pf, u64::from(pf.code.bits())),
        GuestFault::Npf(n) => (FaultKind::Npf, n.info1.bits()),
        GuestFault::EptViolation(v) => (FaultKind::EptViolation, v.qual.bits()),
        GuestFault::Vc { code, .. } => (FaultKind::Vc, *code),
        GuestFault::EptMisconfig { .. } => (FaultKind::EptViolation, 0),
    }
}

/// An address space of the host: `None` is the kernel's, `Some(pid)` a process's.
type SpaceId = Option<u32>;

/// Why a `map` was refused: a fixed key for the report's not-modelled table (an event), and
/// the full message for the error of a `state` line.
#[derive(Debug)]
struct Refusal {
    key: String,
    detail: String,
}

impl Refusal {
    fn fixed(what: &'static str) -> Refusal {
        Refusal { key: what.to_owned(), detail: what.to_owned() }
    }
    fn vm(op: &str, e: VmMapError) -> Refusal {
        Refusal { key: format!("{op}: {}", e.category()), detail: e.to_string() }
    }
}

/// Prices walk and RMP-entry references through the CPU's caches and sums them by kind, for
/// the report's cycle breakdown.
struct Metered<'a> {
    caches: CpuCaches<'a>,
    walk: Cycles,
    check: Cycles,
}

impl CacheLatency for Metered<'_> {
    fn latency(&mut self, spa: Spa, kind: MemRefKind) -> Cycles {
        let c = self.caches.latency(spa, kind);
        match kind {
            MemRefKind::CheckRead => self.check += c,
            MemRefKind::TableRead(_) | MemRefKind::TableAdWrite(_) => self.walk += c,
        }
        c
    }

    fn table_reads(&mut self, addrs: &[Spa], levels: &[mmu_model::Level]) -> Cycles {
        let c = self.caches.table_reads(addrs, levels);
        self.walk += c;
        c
    }
}

#[derive(Debug)]
struct Cpu {
    mmu: Mmu,
    /// Retire clock: what the CPU has waited for so far (the overlap layer's frontier).
    clock: Cycles,
    /// Issue clock: when the next access may issue.
    issue: Cycles,
    /// PID whose page table is loaded, or `None` for the kernel's.
    loaded: SpaceId,
    /// The address spaces whose entries this CPU's TLB may hold, with the PCIDs they were
    /// loaded under: each space loaded since the last flush that removed its entries (Linux
    /// `mm_cpumask`, kept exact). The loaded space is always in it.
    cached: BTreeMap<SpaceId, BTreeSet<u16>>,
    /// The guest VM and VMPL whose VMSA this CPU last ran (for the flush on a VMPL switch).
    vmsa: Option<(VmId, u8)>,
    /// The VMSA page VMRUN marked in use on this CPU, until the vCPU exits.
    running_vmsa: Option<Spa>,
    /// The TD vCPU (TDVPR) that last entered on this CPU (TDH.VP.ENTER flushes the TD TLB
    /// contexts when another vCPU ran here last; spec/tdx.md §3.4).
    td_vcpu: Option<u64>,
    /// What this CPU's last guest-physical access learnt of its VM ([`VmMemo`]).
    vm_memo: Option<VmMemo>,
}

sim_core::clone_by_fields!(Cpu {
    mmu,
    clock,
    issue,
    loaded,
    vmsa,
    running_vmsa,
    td_vcpu,
    vm_memo
} changed {
    cached
});

/// A CPU's memo of the VM its last guest-physical access ran in: the VM's stage-2 tables
/// exist and its [`VmInfo`] is `info`, for as long as [`Machine::vm_epoch`] is `epoch`. It
/// spares a guest access two of its three map lookups (VMs sit in ordered maps, where each
/// lookup was ~50 instructions of a ~3,000-instruction access); the epoch moves whenever a VM
/// is declared, created or destroyed, or its tables built or dropped.
#[derive(Clone, Copy, Debug)]
struct VmMemo {
    vm: VmId,
    epoch: u64,
    info: Option<VmInfo>,
    /// The context a guest-physical access translates in ([`VmPaging::context`]), which
    /// [`Machine::guest_hit_fast`] needs: a VM's stage-2 root and ASID are fixed while its
    /// tables exist.
    gpa_ctx: Option<mmu_model::GuestContext>,
}

impl VmMemo {
    /// A CPU's memo (its `vm_memo` field, so that the caller may borrow the CPU's other
    /// fields meanwhile), if it is of `vm` and `epoch` is still [`Machine::vm_epoch`].
    #[inline]
    fn current(memo: &Option<VmMemo>, vm: VmId, epoch: u64) -> Option<&VmMemo> {
        memo.as_ref().filter(|m| m.vm == vm && m.epoch == epoch)
    }
}

impl Cpu {
    /// Charge an event's cost to this CPU's clock under the overlap rule.
    fn charge(&mut self, cost: Cycles, timing: Timing) -> Cycles {
        use mmu_model::TimedAccess;
        let ov = self.mmu.overlap_mut();
        let charged = match timing {
            Timing::Access { chain } => {
                // The access issues at the issue clock and occupies the window for its whole
                // cost; the next access issues after its in-order part (cost − chain).
                let start = self.issue;
                self.issue += cost.saturating_sub(chain);
                ov.charge(TimedAccess { start, latency: cost, walk: chain > Cycles::ZERO })
            }
            Timing::Issue => {
                self.issue += cost;
                ov.charge(TimedAccess { start: self.issue, latency: Cycles::ZERO, walk: false })
            }
            Timing::Serial => {
                let start = ov.clock().max(self.issue);
                let c = ov.charge(TimedAccess { start, latency: cost, walk: false });
                self.issue = ov.clock();
                c
            }
        };
        self.clock = self.mmu.overlap_mut().clock();
        charged
    }

    fn pcid(&self) -> u16 {
        self.mmu.cr3().tag.pcid
    }

    /// The loaded space under its PCID is always cached.
    fn keep_current(&mut self) {
        let pcid = self.pcid();
        self.cached.entry(self.loaded).or_default().insert(pcid);
    }

    /// A CR3 load of `space` under `pcid`; `flushed` without CR3 bit 63, which drops the
    /// PCID's non-global entries, whichever space left them.
    fn note_load(&mut self, space: SpaceId, pcid: u16, flushed: bool) {
        self.loaded = space;
        if flushed {
            self.forget_pcid(pcid);
        }
        self.keep_current();
    }

    /// Everything flushed, global entries included.
    fn note_full_flush(&mut self) {
        // Nothing to do when only the loaded space under its PCID is recorded (the common case
        // of repeated flushes): clearing and re-inserting would allocate each time.
        let pcid = self.pcid();
        let only_current = self.cached.len() == 1
            && self.cached.first_key_value().is_some_and(|(s, p)| {
                *s == self.loaded && p.len() == 1 && p.first() == Some(&pcid)
            });
        if !only_current {
            self.cached.clear();
            self.keep_current();
        }
    }

    /// Every non-global entry flushed: process entries are non-global (user pages).
    fn note_nonglobal_flush(&mut self) {
        self.cached.retain(|s, _| s.is_none());
        self.keep_current();
    }

    /// The non-global entries of one PCID flushed.
    fn forget_pcid(&mut self, pcid: u16) {
        for (s, p) in &mut self.cached {
            if s.is_some() {
                p.remove(&pcid);
            }
        }
        self.cached.retain(|_, p| !p.is_empty());
        self.keep_current();
    }

    fn may_cache(&self, space: SpaceId) -> bool {
        self.cached.contains_key(&space)
    }
}

/// What a flush removes on each CPU it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FlushWork {
    /// Everything, global entries included (`__flush_tlb_all`).
    All,
    /// Every non-global entry of the space under each PCID the CPU loaded it with (a process's
    /// full flush; the kernel's is [`FlushWork::All`]).
    Space,
    /// The space's entries overlapping `[start, start + bytes)`, by `invlpgs` INVLPGs.
    Range { start: Hva, bytes: u64, invlpgs: u64 },
}

/// Which CPUs a flush goes to.
#[derive(Clone, Copy, Debug)]
enum Targets<'a> {
    /// Linux's choice: every online CPU for the kernel; those that may cache a process.
    Auto,
    /// The CPUs a recorded shootdown names.
    Listed(&'a [u32]),
}

/// Cycle totals by component.
#[derive(Debug, Default, Clone, Copy)]
struct CycleSums {
    base: Cycles,
    data: Cycles,
    tlb: Cycles,
    walk: Cycles,
    rmp_check: Cycles,
    rmp_instr: Cycles,
    fault: Cycles,
    invalidation: Cycles,
    policy: Cycles,
    kvm: Cycles,
    iommu: Cycles,
}

/// Shootdown tallies.
#[derive(Debug, Default, Clone, Copy)]
struct ShootdownSums {
    shootdowns: u64,
    ipis: u64,
    target_stall: Cycles,
    initiator: Cycles,
}

/// The simulated host.
#[derive(Debug)]
pub struct Machine {
    /// Shared by copies of the machine (the race explorer makes one per schedule): never
    /// changed after construction.
    cfg: std::sync::Arc<MachineConfig>,
    tables: PhysMemTables,
    alloc: BuddyAllocator,
    /// The boot-time allocator (memblock) of `host.early_boot`; empty otherwise.
    boot: BootAllocator,
    /// Early boot: before the page allocator and `SYSTEM_RUNNING`, one CPU online.
    in_boot: bool,
    dm: DirectMap,
    procs: BTreeMap<u32, PageTable>,
    cpus: Vec<Cpu>,
    rmp: Rmp,
    caches: CacheHierarchy,
    /// The VMs by id. Every insertion or removal here or in `vm_paging` must bump `vm_epoch`.
    vms: BTreeMap<VmId, VmInfo>,
    /// Each VM's stage-2 and guest page tables, built on first use ([`crate::vm`]).
    vm_paging: BTreeMap<VmId, VmPaging>,
    /// Moves whenever `vms` or `vm_paging` gains or loses a VM, voiding every CPU's
    /// [`VmMemo`].
    vm_epoch: u64,
    /// Guest translation counters.
    guest: report::GuestCounts,
    /// KVM's and the VMM's state per VM ([`kvm`]).
    kvm: BTreeMap<VmId, kvm::KvmVm>,
    kvm_counts: KvmCounts,
    /// Faults by kind and code (the report's `faults.by_code`).
    fault_codes: BTreeMap<(FaultKind, u64), u64>,
    /// The outcome buffer guest accesses reuse (working space: a copy of the machine starts
    /// without it).
    guest_out: mmu_model::Scratch<mmu_model::GuestAccessOutcome>,
    policy_counts: PolicyCounts,
    /// Allocation events come from a live generator (already applied through
    /// [`MemoryServices`]) rather than from a recorded trace (to be replayed).
    live: bool,
    events: u64,
    accesses: report::AccessCounts,
    faults: report::FaultCounts,
    cycles: CycleSums,
    update_flushes: u64,
    tlb_flushes: u64,
    tlb_invalidated: u64,
    shoot: ShootdownSums,
    cpa: CpaStats,
    dm_series: sim_core::stats::Series,
    not_modelled: BTreeMap<String, u64>,
    /// `host.captured_phys`: the host page backing each captured 4 KiB page, by captured
    /// frame number, filled on first touch in record order (so a replay backs identically).
    captured_4k: BTreeMap<u64, Spa>,
    /// The same for captured 2 MiB pages (PMD-mapped THPs), by captured 2 MiB frame number.
    captured_2m: BTreeMap<u64, Spa>,
    /// The IOMMU devices' DMA goes through.
    iommu: mmu_model::Iommu,
    /// Each device's clock (devices are not CPUs: their DMA advances only their own time).
    device_clocks: BTreeMap<u32, Cycles>,
    /// The TDX module and the TDs of the event stream.
    tdx: tdx::TdxHost,
    /// VSM guests: per-VTL protections and stage-2 tables ([`vsm`]).
    vsm: vsm::VsmHost,
    /// An event the machine refuses as bad input (a guest or instruction of the other CPU
    /// vendor); the engine stops the run with it.
    input_error: Option<String>,
    /// Working space of the functional 2-D walks that translate PVALIDATE's and RMPADJUST's
    /// operands.
    walk_scratch: mmu_model::Walk2dScratch,
}

sim_core::clone_by_fields!(Machine {
    cfg,
    tables,
    alloc,
    boot,
    in_boot,
    dm,
    cpus,
    rmp,
    caches,
    vm_epoch,
    guest,
    kvm_counts,
    guest_out,
    policy_counts,
    live,
    events,
    accesses,
    faults,
    cycles,
    update_flushes,
    tlb_flushes,
    tlb_invalidated,
    shoot,
    cpa,
    dm_series,
    captured_4k,
    captured_2m,
    iommu,
    tdx,
    vsm,
    input_error,
    walk_scratch
} changed {
    procs,
    vms,
    vm_paging,
    kvm,
    fault_codes,
    not_modelled,
    device_clocks
});

impl Machine {
    /// Build the machine: allocator, direct map, RMP (placed at the top of memory, where
    /// firmware reserves it), CPUs, and the VMs declared by `vm` settings.
    ///
    /// # Errors
    /// [`MachineError`] if memory is too small or a `vm` line is malformed.
    pub fn new(
        cfg: MachineConfig,
        settings: &[(String, Setting)],
        live: bool,
    ) -> Result<Machine, MachineError> {
        let mem = cfg.machine.memory.0;
        // RMP: 16 KiB bookkeeping + 16 B per 4 KiB page (spec/snp.md §1.3), 1 MiB-aligned as
        // SEV firmware requires, at the top of memory.
        let setup = |e: rmp_model::RmpLayoutError| MachineError::Setup(e.to_string());
        let layout = if cfg.rmp.segmented {
            // Segmented (spec/snp.md §1.5): the RST counts GiB, so memory is covered rounded up
            // to 1 GiB; laid out once at 0 to learn its size, then placed at the top.
            let covered = mem.next_multiple_of(1 << 30);
            let shift = cfg.rmp.segment_shift;
            let probe = RmpLayout::segmented_covering(Spa::ZERO, covered, shift).map_err(setup)?;
            let size = probe.table_ranges().iter().map(|(_, e)| e.raw()).max().unwrap_or(0);
            let base = mem.checked_sub(size.next_multiple_of(1 << 20)).ok_or_else(|| {
                MachineError::Setup("memory too small for the segmented RMP".into())
            })? & !((1 << 20) - 1);
            RmpLayout::segmented_covering(Spa::new(base), covered, shift).map_err(setup)?
        } else {
            let rmp_bytes = (0x4000 + (mem >> 12) * 16).next_multiple_of(1 << 20);
            let rmp_base = (mem - rmp_bytes) & !((1 << 20) - 1);
            RmpLayout::covering(Spa::new(rmp_base), mem).map_err(setup)?
        };
        let rmp_base = layout.table_ranges().first().map_or(mem, |(b, _)| b.raw());
        let low = cfg.host.reserved_low.0;
        // Early boot: the boot pool sits at the bottom of allocatable memory and the buddy
        // allocator starts above it (Unsourced placement: memblock allocates top-down in Linux,
        // but where the early tables land matters only to RMP checks of table pages).
        let pool_end =
            if cfg.host.early_boot { (low + cfg.host.boot_pool.0).min(rmp_base) } else { low };
        // Name the setting that leaves the page allocator nothing, rather than run out of
        // memory for the first page table.
        if pool_end >= rmp_base {
            let (key, value) = if low >= rmp_base {
                ("host.reserved_low", cfg.host.reserved_low.to_string())
            } else {
                ("host.boot_pool", cfg.host.boot_pool.to_string())
            };
            return Err(MachineError::Setup(format!(
                "{key} = {value} leaves no memory for the page allocator, whose memory ends \
                 at {rmp_base:#x} where the RMP table starts (machine.memory = {})",
                cfg.machine.memory
            )));
        }
        let mut alloc = BuddyAllocator::with_order(
            pool_end,
            rmp_base,
            cfg.host.alloc_order,
            cfg.host.alloc_seed,
        );
        let mut boot = BootAllocator::new(low, pool_end);
        let mut tables = PhysMemTables::new();
        let fmt = cfg.mmu.pte_format();
        // The direct map itself is built from the buddy allocator (Linux builds it from
        // memblock/brk pages; kept here so that table placement does not depend on the pool).
        let dm = DirectMap::build(
            &mut tables,
            &mut TableFrames { buddy: &mut alloc, boot: &mut boot, in_boot: false },
            fmt,
            mem,
            if cfg.host.policy == PhysmapPolicy::Presplit4k {
                PageSize::K4
            } else {
                cfg.host.physmap
            },
        )
        .map_err(|e| MachineError::Setup(e.to_string()))?;
        let cr3 = Cr3 { root: dm.table().root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
        let mut cpus = Vec::new();
        for c in 0..cfg.machine.cpus {
            let mmu = Mmu::new(c, &cfg.mmu, cr3).map_err(|e| MachineError::Setup(e.to_string()))?;
            let mut cpu = Cpu {
                mmu,
                clock: Cycles::ZERO,
                issue: Cycles::ZERO,
                loaded: None,
                cached: BTreeMap::new(),
                vmsa: None,
                running_vmsa: None,
                td_vcpu: None,
                vm_memo: None,
            };
            cpu.keep_current();
            cpus.push(cpu);
        }
        let caches = CacheHierarchy::new(&cfg.cache, cfg.machine.cpus as usize)
            .map_err(|e| MachineError::Setup(e.to_string()))?;
        let mut m = Machine {
            tables,
            alloc,
            boot,
            in_boot: cfg.host.early_boot,
            dm,
            procs: BTreeMap::new(),
            cpus,
            rmp: {
                // An Intel host has no RMP: an empty table (nothing covered) that no check
                // consults costs nothing to copy. Its memory stays reserved as on an AMD host
                // (UNCONFIRMED whether that matters: it only shifts where allocations land).
                let layout = if cfg.machine.vendor == crate::config::Vendor::Intel {
                    RmpLayout::covering(Spa::new(rmp_base), 0).map_err(setup)?
                } else {
                    layout
                };
                let mut r = Rmp::new(layout);
                r.set_overlap_rule(cfg.rmp.overlap_rule);
                r
            },
            caches,
            vms: BTreeMap::new(),
            vm_paging: BTreeMap::new(),
            vm_epoch: 0,
            guest: report::GuestCounts::default(),
            kvm: BTreeMap::new(),
            kvm_counts: KvmCounts::default(),
            guest_out: mmu_model::Scratch::default(),
            fault_codes: BTreeMap::new(),
            policy_counts: PolicyCounts::default(),
            live,
            events: 0,
            accesses: report::AccessCounts::default(),
            faults: report::FaultCounts::default(),
            cycles: CycleSums::default(),
            update_flushes: 0,
            tlb_flushes: 0,
            tlb_invalidated: 0,
            shoot: ShootdownSums::default(),
            cpa: CpaStats::default(),
            dm_series: sim_core::stats::Series::default(),
            not_modelled: BTreeMap::new(),
            captured_4k: BTreeMap::new(),
            captured_2m: BTreeMap::new(),
            iommu: Self::new_iommu(&cfg).map_err(MachineError::Setup)?,
            tdx: tdx::TdxHost::new(cfg.tdx.clone()),
            vsm: vsm::VsmHost::default(),
            input_error: None,
            walk_scratch: mmu_model::Walk2dScratch::default(),
            device_clocks: BTreeMap::new(),
            cfg: std::sync::Arc::new(cfg),
        };
        for (origin, s) in settings.iter().filter(|(_, s)| s.section == "vm") {
            m.declare_vm(s).map_err(|e| MachineError::Vm(format!("{origin}: {e}")))?;
        }
        m.sample_dm();
        Ok(m)
    }

    fn declare_vm(&mut self, s: &Setting) -> Result<(), String> {
        let [id, kind] = s.args.as_slice() else {
            return Err("expected `vm N KIND [asid=N] [memory=SIZE]`".into());
        };
        let vm: u32 = id.parse().map_err(|_| format!("bad VM number {id:?}"))?;
        let kind: VmKind = kind.parse().map_err(|e| format!("{e}"))?;
        self.vendor_allows_vm(vm, kind)?;
        let mut asid = 0u32;
        let mut memory = 0u64;
        for (k, v) in &s.pairs {
            match k.as_str() {
                "asid" => {
                    asid = sim_core::codec::parse_u64(v)
                        .ok()
                        .and_then(|a| u32::try_from(a).ok())
                        .ok_or(format!("bad asid {v:?}"))?
                }
                "memory" => memory = sim_core::config::ByteSize::parse(v)?.0,
                other => return Err(format!("unknown vm key `{other}` (known: asid, memory)")),
            }
        }
        self.vms.insert(vm, VmInfo { kind, asid, memory });
        self.vm_epoch += 1;
        Ok(())
    }

    /// The first event the machine refused as bad input since the last call (a guest or
    /// instruction of the other CPU vendor).
    pub fn take_input_error(&mut self) -> Option<String> {
        self.input_error.take()
    }

    /// A VM of `kind` needs its vendor's CPU: SEV guests an AMD host with a C-bit, TDs an
    /// Intel one.
    fn vendor_allows_vm(&self, vm: VmId, kind: VmKind) -> Result<(), String> {
        use crate::config::Vendor;
        let want = match kind {
            VmKind::Sev | VmKind::SevEs | VmKind::Snp => Vendor::Amd,
            VmKind::Tdx => Vendor::Intel,
            VmKind::Plain => return Ok(()),
        };
        let have = self.cfg.machine.vendor;
        if want != have {
            return Err(format!(
                "VM {vm} is a {kind} guest, which needs machine.vendor = {want}, but this \
                 machine is {have} (preset {}); choose an {} preset",
                self.cfg.machine.preset,
                if want == Vendor::Amd { "AMD (zen4, zen5)" } else { "Intel (spr, emr, gnr)" }
            ));
        }
        // SEV encrypts what the guest marks with the C-bit, whose position the CPU reports
        // (CPUID 8000_001F EBX[5:0], AMD APM Vol. 2 §15.34.1): a host without one (memory
        // encryption off) runs no SEV guest, and its private GPAs would mean nothing here.
        if want == Vendor::Amd && self.cfg.mmu.cbit_pos.0.is_none() {
            return Err(format!(
                "VM {vm} is a {kind} guest, which needs the host's C-bit (mmu.cbit_pos), but this \
                 machine has mmu.cbit_pos = none (preset {}); set mmu.cbit_pos or choose an AMD \
                 preset (zen4, zen5)",
                self.cfg.machine.preset
            ));
        }
        Ok(())
    }

    /// Why `ev` cannot run on this machine's vendor, if it cannot.
    fn vendor_refusal(&self, ev: &Event) -> Option<String> {
        use crate::config::Vendor;
        let (want, what) = match ev {
            Event::VmCreate { kind, vm, .. } => return self.vendor_allows_vm(*vm, *kind).err(),
            Event::RmpUpdate { .. }
            | Event::Psmash { .. }
            | Event::Pvalidate { .. }
            | Event::RmpAdjust { .. }
            | Event::RmpRead { .. }
            | Event::SnpFw { .. }
            | Event::Psc { .. } => (Vendor::Amd, ev.keyword()),
            Event::Seamcall { .. } | Event::Tdcall { .. } | Event::MapGpa { .. } => {
                (Vendor::Intel, ev.keyword())
            }
            _ => return None,
        };
        let have = self.cfg.machine.vendor;
        (want != have).then(|| {
            format!(
                "`{what}` needs machine.vendor = {want}, but this machine is {have} (preset {})",
                self.cfg.machine.preset
            )
        })
    }

    /// The RMP (for checks and property tests).
    pub fn rmp(&self) -> &Rmp {
        &self.rmp
    }

    /// Turn on every CPU's TLB oracle ([`Mmu::enable_oracle`]): from now on each host and
    /// guest access's translation is compared with a fresh functional walk of the tables as
    /// they are, and a disagreement (a TLB or paging-structure-cache entry that a required
    /// invalidation missed) is recorded. Slow; for property tests and debugging (issue #10).
    pub fn enable_tlb_oracle(&mut self) {
        for c in &mut self.cpus {
            c.mmu.enable_oracle();
        }
    }

    /// What the CPUs' TLB oracles recorded, as (CPU, mismatch) in CPU order; empty while the
    /// oracle is off ([`Machine::enable_tlb_oracle`]) or saw no disagreement.
    pub fn tlb_oracle_mismatches(&self) -> Vec<(u32, mmu_model::OracleMismatch)> {
        (0u32..)
            .zip(&self.cpus)
            .flat_map(|(i, c)| c.mmu.oracle_mismatches().iter().map(move |m| (i, *m)))
            .collect()
    }

    /// The SPA host-virtual address `va` translates to now in the kernel's page table (`pid`
    /// `None`: the direct map and kernel mappings) or in process `pid`'s: a functional lookup
    /// of present leaves, with no TLB, permission or RMP check. For invariant checks of what
    /// an access reached.
    pub fn host_translation(&self, pid: Option<u32>, va: Hva) -> Option<Spa> {
        let pt = match pid {
            None => self.dm.table(),
            Some(p) => self.procs.get(&p)?,
        };
        pt.lookup(&self.tables, va).map(|l| l.pa(va))
    }

    /// `DirectMap4k/2M/1G` in kB recounted by walking the direct map's page table
    /// ([`DirectMap::recount`]), not from the counters CPA keeps: what the report's
    /// `directmap.kb` must equal (issue #10).
    pub fn directmap_recount_kb(&self) -> sim_core::stats::PerSize<u64> {
        crate::host::directmap::kb(self.dm.recount(&self.tables))
    }

    /// Logical CPUs.
    pub fn cpus(&self) -> u32 {
        self.cfg.machine.cpus
    }

    /// The clock of an agent (its CPU's clock; devices and firmware share CPU 0's).
    #[inline]
    pub fn clock(&self, a: Agent) -> Cycles {
        if let Agent::Device(d) = a {
            return self.device_clock(d);
        }
        let c = a.cpu().unwrap_or(0);
        self.cpus.get(c as usize).map_or(Cycles::ZERO, |c| c.clock)
    }

    fn not_modelled(&mut self, what: &str) {
        *self.not_modelled.entry(what.to_owned()).or_insert(0) += 1;
    }

    fn sample_dm(&mut self) {
        self.dm_series.sample(self.events, self.dm.meminfo_kb());
    }

    /// Apply a `state` line.
    ///
    /// # Errors
    /// [`MachineError::State`] naming what is wrong.
    pub fn apply_state(&mut self, s: &StateItem) -> Result<(), MachineError> {
        use crate::config::Vendor;
        let vendor = self.cfg.machine.vendor;
        let needs = match s {
            StateItem::Rmp { .. } => Some((Vendor::Amd, "an RMP entry")),
            StateItem::Td { .. } | StateItem::Sept { .. } | StateItem::Pamt { .. } => {
                Some((Vendor::Intel, "TDX module state"))
            }
            _ => None,
        };
        if let Some((want, what)) = needs.filter(|(w, _)| *w != vendor) {
            return Err(MachineError::State(format!(
                "{what} needs machine.vendor = {want}, but this machine is {vendor} (preset {})",
                self.cfg.machine.preset
            )));
        }
        match s {
            StateItem::Rmp { spa, size, assigned, asid, gpa, validated, immutable, vmsa } => {
                let page_size = match size {
                    PageSize::K4 => RmpPageSize::K4,
                    PageSize::M2 => RmpPageSize::M2,
                    PageSize::G1 => {
                        return Err(MachineError::State("RMP entries are 4K or 2M".into()));
                    }
                };
                let asid = u16::try_from(*asid)
                    .map_err(|_| MachineError::State(format!("asid {asid} too large")))?;
                let mut e = RmpEntry {
                    assigned: *assigned,
                    page_size,
                    immutable: *immutable,
                    gpa: *gpa,
                    asid,
                    vmsa: *vmsa,
                    validated: *validated,
                    ..RmpEntry::default()
                };
                if *assigned {
                    e.vmpl = rmp_model::VMPL_ON_UPDATE;
                }
                self.rmp.set_entry(*spa, &e).map_err(|e| MachineError::State(e.to_string()))?;
            }
            StateItem::DirectMap { spa, size, len } => {
                let len = len.unwrap_or(size.bytes());
                // Initial state, set before any event: its tables come from the buddy
                // allocator even in early boot, so that the boot pool serves CPA alone.
                let mut frames =
                    TableFrames { buddy: &mut self.alloc, boot: &mut self.boot, in_boot: false };
                self.dm
                    .set_leaves(&mut self.tables, &mut frames, *spa, *size, len)
                    .map_err(|e| MachineError::State(e.to_string()))?;
                self.sample_dm();
            }
            StateItem::Map { va, pa, size, space, w, x, user, enc } => {
                let f = MapFlags { w: *w, x: *x, user: *user, enc: *enc };
                match self.map_in(*space, *va, *pa, *size, f) {
                    // Initial state: no CPU has cached anything yet, and a map replaces
                    // nothing present (the token is empty).
                    Ok(Some((_, t))) => t.ignore(),
                    Ok(None) => {}
                    Err(r) => return Err(MachineError::State(r.detail)),
                }
            }
            StateItem::Td { tdr, vm, hkid, state, root, gpaw, epoch } => {
                self.state_td(*tdr, *vm, *hkid, *state, *root, *gpaw, *epoch)
                    .map_err(MachineError::State)?;
            }
            StateItem::Sept { tdr, gpa, level, state, hpa } => {
                self.state_sept(*tdr, *gpa, *level, *state, *hpa).map_err(MachineError::State)?;
            }
            StateItem::Pamt { hpa, pt, owner, size, bepoch } => {
                self.state_pamt(*hpa, *pt, *owner, *size, *bepoch);
            }
            _ => {
                return Err(MachineError::State(format!(
                    "`state {}` is not modelled yet",
                    s.keyword()
                )));
            }
        }
        Ok(())
    }

    /// Execute one event; the agent's clock advances by its cost.
    pub fn exec(&mut self, te: &TimedEvent) -> Outcome {
        self.events += 1;
        // Early boot lasts while CPU 0's kernel does CPA; anything else means the system is up.
        if self.in_boot
            && !matches!(
                (te.agent, &te.event),
                (Agent::Cpu { cpu: 0, ctx: Context::HostKernel }, Event::Cpa { .. })
            )
        {
            self.end_boot();
        }
        if let Agent::Device(d) = te.agent {
            return self.exec_device(d, te.time, &te.event);
        }
        let cpu = te.agent.cpu().unwrap_or(0) as usize;
        if cpu >= self.cpus.len() {
            self.refuse_cpu(cpu, te.event.keyword());
            return Outcome::default();
        }
        // A timestamp later than the CPU's clock is idle time: everything waits for it.
        if let Some(t) = te.time
            && t > self.cpus[cpu].clock
        {
            let gap = t - self.cpus[cpu].clock;
            self.cpus[cpu].charge(gap, Timing::Serial);
        }
        // The common events of a workload (a CPU's loads, stores and `work`) take a short path
        // while no TD exists; everything else goes through `dispatch`, kept out of line so that
        // this stays small.
        let out = match (&te.event, te.agent) {
            (Event::Load { addr, size }, Agent::Cpu { ctx, .. }) if !self.tdx.active => {
                self.access(cpu, ctx, *addr, *size, AccessKind::Read)
            }
            (Event::Store { addr, size, .. }, Agent::Cpu { ctx, .. }) if !self.tdx.active => {
                self.access(cpu, ctx, *addr, *size, AccessKind::Write)
            }
            (Event::Work { count }, _) => self.work(*count),
            _ => {
                if let Some(e) = self.vendor_refusal(&te.event) {
                    self.input_error.get_or_insert(e);
                    return Outcome::default();
                }
                // KVM's TDX operations run as resumable steps (`ccsim explore` interleaves
                // them).
                if let Some(op) = self.kvm_op(te) {
                    return self.run_op(op);
                }
                self.dispatch(cpu, te.agent, &te.event)
            }
        };
        self.cpus[cpu].charge(out.cost, out.timing);
        out
    }

    /// [`Machine::exec`] of `work count` by CPU `cpu` without a timestamp: the same effects,
    /// without building the event or taking the general path (the engine runs the `work` a
    /// generator gives with [`workloads::Workload::next_work`] this way).
    #[inline]
    pub fn exec_work(&mut self, cpu: u32, count: u64) {
        self.events += 1;
        // A `work` is not CPU 0's CPA: early boot ends, as in `exec`.
        if self.in_boot {
            self.end_boot();
        }
        let cpu = cpu as usize;
        if cpu >= self.cpus.len() {
            self.refuse_cpu(cpu, "work");
            return;
        }
        let out = self.work(count);
        self.cpus[cpu].charge(out.cost, out.timing);
    }

    /// An event on CPU `cpu`, which the machine does not have: bad input (the error names the
    /// event and `machine.cpus`), not something the model lacks.
    #[cold]
    fn refuse_cpu(&mut self, cpu: usize, keyword: &str) {
        let n = self.cpus.len();
        self.input_error.get_or_insert_with(|| {
            format!("`{keyword}` on CPU {cpu}, but machine.cpus = {n} (CPUs 0..={})", n - 1)
        });
    }

    /// `work N`: N non-memory instructions at the base CPI.
    #[inline]
    fn work(&mut self, count: u64) -> Outcome {
        let cost = self.cfg.machine.base_cpi.times(count);
        self.cycles.base += cost;
        Outcome { cost, timing: Timing::Issue, ..Outcome::default() }
    }

    #[inline(never)]
    fn dispatch(&mut self, cpu: usize, agent: Agent, ev: &Event) -> Outcome {
        let ctx = match agent {
            Agent::Cpu { ctx, .. } => Some(ctx),
            Agent::Device(_) | Agent::Firmware(_) => None,
        };
        match (ev, ctx) {
            (Event::Load { addr, size }, Some(c)) => {
                if self.tdx.active
                    && let (Address::Spa(s), Context::HostKernel | Context::HostProcess(_)) =
                        (addr, c)
                    && let Some(mc) = self.tdx_outside_read(s.raw(), u64::from(*size), false)
                {
                    return mc;
                }
                self.access(cpu, c, *addr, *size, AccessKind::Read)
            }
            (Event::Store { addr, size, mt }, Some(c)) => {
                let o = self.access(cpu, c, *addr, *size, AccessKind::Write);
                if self.tdx.active
                    && o.fault.is_none()
                    && let (Address::Spa(s), Context::HostKernel | Context::HostProcess(_)) =
                        (addr, c)
                {
                    self.tdx_outside_write(s.raw(), u64::from(*size), tdx::OutsideWrite::Cpu(*mt));
                }
                o
            }
            (Event::Fetch { addr, size }, Some(c)) => {
                // An instruction fetch stands for one instruction: it also pays the base CPI.
                let base = self.cfg.machine.base_cpi;
                self.cycles.base += base;
                self.access(cpu, c, *addr, *size, AccessKind::Fetch).with_cost(base)
            }
            (Event::Work { count }, _) => self.work(*count),
            (
                Event::RmpUpdate { spa, size, assigned, asid, gpa, immutable },
                Some(Context::HostKernel),
            ) => self.rmpupdate(cpu, *spa, *size, *assigned, *asid, *gpa, *immutable),
            (Event::Pvalidate { addr, size, validate }, Some(c @ Context::Guest { vm, .. })) => {
                let op = GuestRmpOp::Pvalidate { size: *size, validate: *validate };
                self.guest_rmp_instr(cpu, c, vm, *addr, op)
            }
            (
                Event::RmpAdjust { addr, size, vmpl, perms, vmsa },
                Some(c @ Context::Guest { vm, .. }),
            ) => {
                let op =
                    GuestRmpOp::Rmpadjust { size: *size, vmpl: *vmpl, perms: perms.0, vmsa: *vmsa };
                self.guest_rmp_instr(cpu, c, vm, *addr, op)
            }
            (Event::RmpRead { spa }, Some(Context::HostKernel)) => {
                // RMPREAD (Zen 5+; spec/snp.md §3.6): the entry is read from memory, priced
                // through the caches; the instruction changes nothing.
                let (rc, _record) = self.rmp.rmpread(Executor::Hypervisor, *spa);
                let read = self
                    .rmp
                    .layout()
                    .entry_addr(*spa)
                    .map_or(Cycles::ZERO, |a| self.caches.data_access(cpu, a, false));
                let cost = self.cfg.rmp.rmp_lookup_latency + read;
                self.cycles.rmp_instr += cost;
                Outcome {
                    rc: Some((u64::from(rc.code()), None)),
                    cost,
                    timing: Timing::Serial,
                    ..Outcome::default()
                }
            }
            (Event::Psmash { spa }, Some(Context::HostKernel)) => {
                let rc = self.rmp.psmash(Executor::Hypervisor, *spa);
                self.after_rmp_change(rc, self.cfg.rmp.psmash_latency, (*spa, PageSize::M2.bytes()))
            }
            (Event::SnpFw { cmd, vm, spa, gpa, pages }, _) => {
                self.snp_fw(cpu, *cmd, *vm, *spa, *gpa, *pages)
            }
            (Event::VmRun { vm, vcpu }, Some(Context::HostKernel)) => self.vmrun(cpu, *vm, *vcpu),
            (Event::VmExit { .. }, Some(Context::HostKernel)) => self.vmexit(cpu),
            (Event::Psc { op, gpa, size, pages }, Some(Context::Guest { vm, .. })) => {
                self.psc(cpu, vm, *op, *gpa, *size, *pages)
            }
            (
                Event::MemAttrs { gpa, bytes, vm, attrs, vtl: 0 },
                Some(Context::HostKernel | Context::HostProcess(_)),
            ) => self.mem_attrs(cpu, *vm, *gpa, *bytes, attrs.0),
            (Event::VsmProtect { gpa, vm, vtl, pages, mask }, Some(c)) => {
                self.vsm_protect(cpu, c, *vm, *gpa, *vtl, *pages, mask.0)
            }
            (
                Event::Cpa { op: op @ (CpaOp::Decrypted | CpaOp::Encrypted), addr, pages },
                Some(c @ Context::Guest { vm, .. }),
            ) => self.guest_set_memory_enc(cpu, c, vm, *op == CpaOp::Encrypted, *addr, *pages),
            (Event::Cpa { op, addr, pages }, Some(Context::HostKernel)) => {
                self.cpa_event(cpu, *op, *addr, *pages)
            }
            (
                Event::Cr3Load { root, pcid, noflush },
                Some(c @ (Context::HostKernel | Context::HostProcess(_))),
            ) => self.cr3_load(cpu, c, *root, *pcid, *noflush),
            (Event::Invlpg { addr }, Some(c @ (Context::HostKernel | Context::HostProcess(_)))) => {
                self.invlpg(cpu, c, *addr)
            }
            (
                Event::Invpcid { kind, pcid, addr },
                Some(c @ (Context::HostKernel | Context::HostProcess(_))),
            ) => self.invpcid(cpu, c, *kind, *pcid, *addr),
            (Event::FlushAsid { asid }, Some(_)) => match u16::try_from(*asid) {
                Ok(a) => {
                    self.tlb_flushes += 1;
                    let mmu = &mut self.cpus[cpu].mmu;
                    self.tlb_invalidated += if a == TlbTag::HOST.asid {
                        mmu.tlb_mut().flush(FlushScope::Asid(a))
                    } else {
                        // A guest's ASID: TLB_CONTROL 03h, which also drops its nested-TLB
                        // and guest/nested PWC entries.
                        mmu.svm_tlb_control(a, TlbControl::FlushAsid).tlb
                    };
                    if a == TlbTag::HOST.asid {
                        self.cpus[cpu].note_full_flush();
                    }
                    self.charge_invalidation(self.cfg.host.flush_all_cost)
                }
                Err(_) => {
                    self.not_modelled("flush-asid of an ASID above 16 bits");
                    Outcome::default()
                }
            },
            (Event::FlushAll {}, Some(_)) => {
                self.tlb_flushes += 1;
                self.tlb_invalidated += self.cpus[cpu].mmu.tlb_mut().flush(FlushScope::All);
                self.cpus[cpu].note_full_flush();
                self.charge_invalidation(self.cfg.host.flush_all_cost)
            }
            (
                Event::Shootdown { targets, addr, pages },
                Some(c @ (Context::HostKernel | Context::HostProcess(_))),
            ) => self.shootdown_event(cpu, c, targets, *addr, *pages),
            (Event::Iommu { cmd, device, domain, addr, pages }, Some(Context::HostKernel)) => {
                self.iommu_cmd(*cmd, *device, *domain, *addr, *pages)
            }
            (Event::Map { va, pa, size, space, w, x, user, enc }, Some(_)) => {
                let f = MapFlags { w: *w, x: *x, user: *user, enc: *enc };
                self.map_event(cpu, *space, *va, *pa, *size, f)
            }
            (Event::Unmap { va, size, space }, Some(_)) => {
                self.unmap_event(cpu, *space, *va, *size)
            }
            (Event::PageAlloc { spa, order, .. }, _) => {
                if !self.live && self.alloc.reserve(*spa, *order).is_err() {
                    self.not_modelled("page-alloc of pages not free");
                }
                Outcome::default()
            }
            (Event::PageFree { spa, order }, _) => {
                if !self.live && self.alloc.free(*spa, *order).is_err() {
                    self.not_modelled("page-free of pages not allocated");
                }
                Outcome::default()
            }
            (Event::GmemAlloc { spa, order, .. }, _) => {
                if !self.live && self.alloc.reserve(*spa, *order).is_err() {
                    self.not_modelled("gmem-alloc of pages not free");
                }
                Outcome::default()
            }
            (Event::VmCreate { kind, vm, asid, memory }, _) => {
                let info = VmInfo { kind: *kind, asid: *asid, memory: *memory };
                // The same VM declared again (a header `vm` line and the trace's own
                // `vm-create`) keeps its tables; another kind or ASID starts afresh.
                // (`memory=` may differ: it only bounds VSM protections.)
                if self.vms.get(vm).map(|i| (i.kind, i.asid)) != Some((info.kind, info.asid)) {
                    self.drop_vm_tables(*vm);
                }
                self.vms.insert(*vm, info);
                self.vm_epoch += 1;
                if *kind == VmKind::Tdx {
                    self.tdx_bind_vm(*vm, *asid);
                }
                Outcome::default()
            }
            (
                Event::Seamcall { leaf, version, rcx, rdx, r8, r9, r10 },
                Some(Context::HostKernel),
            ) => self.seamcall(cpu, *leaf, *version, rcx.0, rdx.0, r8.0, r9.0, r10.0),
            (Event::Tdcall { leaf, rcx, .. }, Some(Context::Guest { vm, vcpu, .. })) => {
                self.tdcall(cpu, vm, vcpu, *leaf, rcx.0)
            }
            (Event::TdEnter { vm, vcpu }, Some(Context::HostKernel)) => self.td_enter(*vm, *vcpu),
            (
                Event::TdExit { vm, vcpu, .. } | Event::VcpuKick { vm, vcpu },
                Some(Context::HostKernel),
            ) if self.tdx.tdr_of(*vm).is_some() => self.td_leave(*vm, *vcpu),
            (Event::VmDestroy { vm }, _) => {
                self.kvm_destroy(cpu, *vm);
                self.vsm_destroy(*vm);
                self.drop_vm_tables(*vm);
                self.vms.remove(vm);
                self.vm_epoch += 1;
                Outcome::default()
            }
            (e, _) => {
                let what = match ctx {
                    Some(Context::Guest { .. }) => format!("{} (guest)", e.keyword()),
                    _ => e.keyword().to_owned(),
                };
                self.not_modelled(&what);
                Outcome::default()
            }
        }
    }

    /// The tag of what CPU `cpu` has loaded (CR3's PCID).
    fn tag_of(&self, cpu: usize) -> TlbTag {
        self.cpus[cpu].mmu.cr3().tag
    }

    /// Make CPU `cpu` run host context `ctx` (load its page table if another is loaded);
    /// false if the process's page table cannot be created.
    fn enter(&mut self, cpu: usize, ctx: Context) -> bool {
        let pid = match ctx {
            Context::HostProcess(p) => Some(p),
            Context::HostKernel | Context::Guest { .. } => None,
        };
        if let Some(p) = pid
            && !self.ensure_proc(p)
        {
            return false;
        }
        self.load_context(cpu, pid);
        true
    }

    /// Charge invalidation work to the event's CPU.
    fn charge_invalidation(&mut self, cost: Cycles) -> Outcome {
        self.cycles.invalidation += cost;
        Outcome { cost, ..Outcome::default() }
    }

    /// End of early boot: `system_state = SYSTEM_RUNNING`, the other CPUs come online and
    /// memblock hands its unused memory to the buddy allocator.
    fn end_boot(&mut self) {
        self.in_boot = false;
        if self.boot.hand_over(&mut self.alloc).is_err() {
            self.not_modelled("boot pool overlapping allocator memory");
        }
    }

    fn invlpg(&mut self, cpu: usize, ctx: Context, addr: Address) -> Outcome {
        let Some(va) = self.host_va(addr) else {
            self.not_modelled("invlpg (non-host address)");
            return Outcome::default();
        };
        if !self.enter(cpu, ctx) {
            self.not_modelled("process page table (out of memory)");
            return Outcome::default();
        }
        let tag = self.tag_of(cpu);
        self.tlb_invalidated += self.cpus[cpu].mmu.tlb_mut().invalidate_page(va, tag);
        self.charge_invalidation(self.cfg.host.invlpg_cost)
    }

    /// INVPCID (Intel SDM Vol. 2A "INVPCID"), in the host's ASID.
    fn invpcid(
        &mut self,
        cpu: usize,
        ctx: Context,
        kind: InvpcidKind,
        pcid: u16,
        addr: Option<Address>,
    ) -> Outcome {
        if !self.enter(cpu, ctx) {
            self.not_modelled("process page table (out of memory)");
            return Outcome::default();
        }
        let tag = TlbTag { asid: TlbTag::HOST.asid, pcid };
        let host = self.cfg.host.clone();
        let va = addr.and_then(|a| self.host_va(a));
        let c = &mut self.cpus[cpu];
        let (removed, cost) = match kind {
            // Type 0: one address in one PCID. The SDM excludes global translations; mmu-model
            // has no non-global single-address invalidation, so a global entry for the address
            // goes too (over-invalidation: never stale, occasionally one refill more).
            InvpcidKind::Addr => match va {
                Some(va) => (c.mmu.tlb_mut().invalidate_page(va, tag), host.invlpg_cost),
                None => {
                    self.not_modelled("invpcid addr without a host address");
                    return Outcome::default();
                }
            },
            // Type 1: every non-global entry of the PCID.
            InvpcidKind::Single => {
                let n = c.mmu.tlb_mut().flush(FlushScope::Context(tag));
                c.forget_pcid(pcid);
                (n, host.flush_all_cost)
            }
            // Type 2: everything, globals included (of this ASID).
            InvpcidKind::AllGlobal => {
                let n = c.mmu.tlb_mut().flush(FlushScope::Asid(tag.asid));
                c.note_full_flush();
                self.tlb_flushes += 1;
                (n, host.flush_all_cost)
            }
            // Type 3: every non-global entry of every PCID.
            InvpcidKind::All => {
                let n = c.mmu.tlb_mut().flush(FlushScope::AllNonGlobal(tag.asid));
                c.note_nonglobal_flush();
                (n, host.flush_all_cost)
            }
        };
        self.tlb_invalidated += removed;
        self.charge_invalidation(cost)
    }

    /// A host CR3 load: the kernel's or a process's page table (the one whose root is `root`,
    /// else the agent's own: a trace's root addresses are not the model's), under `pcid`;
    /// without `noflush` the PCID's non-global entries are flushed first.
    fn cr3_load(
        &mut self,
        cpu: usize,
        ctx: Context,
        root: Address,
        pcid: u16,
        noflush: bool,
    ) -> Outcome {
        let by_root = match root {
            Address::Spa(r) if r == self.dm.table().root() => Some(None),
            Address::Spa(r) => {
                self.procs.iter().find(|(_, pt)| pt.root() == r).map(|(p, _)| Some(*p))
            }
            Address::Hva(_) | Address::Gva(_) | Address::Gpa(_) | Address::Iova(_) => None,
        };
        let space = match (by_root, ctx) {
            (Some(s), _) => s,
            (None, Context::HostProcess(p)) => Some(p),
            (None, Context::HostKernel | Context::Guest { .. }) => None,
        };
        if let Some(p) = space
            && !self.ensure_proc(p)
        {
            self.not_modelled("process page table (out of memory)");
            return Outcome::default();
        }
        let root = match space {
            None => self.dm.table().root(),
            Some(p) => match self.procs.get(&p) {
                Some(pt) => pt.root(),
                None => return Outcome::default(),
            },
        };
        let tag = TlbTag { asid: TlbTag::HOST.asid, pcid };
        let c = &mut self.cpus[cpu];
        let before = c.mmu.tlb().stats().by_size;
        c.mmu.load_cr3(Cr3 { root, paging: Paging::FourLevel, tag }, noflush);
        c.note_load(space, pcid, !noflush);
        let after = c.mmu.tlb().stats().by_size;
        self.tlb_invalidated += PageSize::ALL
            .iter()
            .map(|&s| after[s].invalidations - before[s].invalidations)
            .sum::<u64>();
        if noflush {
            Outcome::default()
        } else {
            self.charge_invalidation(self.cfg.host.flush_all_cost)
        }
    }

    /// A shootdown event: from this CPU, for the agent's address space, to the listed CPUs
    /// (or, with an empty list, to the CPUs Linux would pick).
    fn shootdown_event(
        &mut self,
        cpu: usize,
        ctx: Context,
        targets: &[u32],
        addr: Option<Address>,
        pages: u64,
    ) -> Outcome {
        let space = match ctx {
            Context::HostProcess(p) => Some(p),
            Context::HostKernel | Context::Guest { .. } => None,
        };
        let full = if space.is_none() { FlushWork::All } else { FlushWork::Space };
        let work = match addr {
            None => full,
            Some(a) => match self.host_va(a) {
                Some(_) if pages > self.cfg.host.tlb_single_page_flush_ceiling => full,
                Some(start) => {
                    FlushWork::Range { start, bytes: pages.saturating_mul(4096), invlpgs: pages }
                }
                None => {
                    self.not_modelled("shootdown (non-host address)");
                    return Outcome::default();
                }
            },
        };
        let to = if targets.is_empty() { Targets::Auto } else { Targets::Listed(targets) };
        let cost = self.flush_on(cpu, space, to, work);
        Outcome { cost, ..Outcome::default() }
    }

    /// Apply `work` for `space` to CPU `c`'s TLB.
    fn apply_flush(&mut self, c: usize, space: SpaceId, work: FlushWork) {
        let cpu = &mut self.cpus[c];
        let tags: Vec<TlbTag> = match space {
            None => vec![TlbTag::HOST],
            Some(_) => cpu
                .cached
                .get(&space)
                .map(|p| p.iter().map(|&pcid| TlbTag { asid: TlbTag::HOST.asid, pcid }).collect())
                .unwrap_or_default(),
        };
        // Paging-structure caches go with the TLB entries: a full flush (CR4.PGE toggle,
        // INVPCID all-context) empties them, a context flush drops the context's, and INVLPG
        // drops every PWC entry of the current PCID (Intel SDM Vol. 3A §4.10.4.1). Without
        // that, a walk after a collapse freed a table page would follow a stale PWC entry.
        let mmu = &mut cpu.mmu;
        let host = TlbTag::HOST.asid;
        let removed = match (work, space) {
            // __flush_tlb_all flushes the host's translations, global ones included; guests'
            // ASIDs are not the host kernel's to flush.
            (FlushWork::All, _) | (FlushWork::Space, None) => {
                self.tlb_flushes += 1;
                let n = mmu.invpcid(host, mmu_model::Invpcid::AllIncludingGlobal).tlb;
                cpu.note_full_flush();
                n
            }
            (FlushWork::Space, Some(_)) => {
                let n = tags
                    .iter()
                    .map(|&t| {
                        mmu.invpcid(host, mmu_model::Invpcid::SingleContext { pcid: t.pcid }).tlb
                    })
                    .sum();
                cpu.cached.remove(&space);
                cpu.keep_current();
                n
            }
            (FlushWork::Range { start, bytes, .. }, _) => {
                tags.iter().map(|&t| mmu.invlpg_range(start.raw(), bytes, t).tlb).sum()
            }
        };
        self.tlb_invalidated += removed;
    }

    /// A flush from CPU `initiator` for `space`: applied on the target CPUs (the initiator
    /// among them when it is a target), priced as a shootdown (module docs). Returns the
    /// initiator's cost; each remote target's clock advances by its stall.
    fn flush_on(
        &mut self,
        initiator: usize,
        space: SpaceId,
        targets: Targets<'_>,
        work: FlushWork,
    ) -> Cycles {
        let n = self.cpus.len();
        // During early boot only the boot CPU is online.
        let online = |c: usize| c < n && (!self.in_boot || c == initiator);
        let cpus: BTreeSet<usize> = match targets {
            Targets::Auto => (0..n)
                .filter(|&c| online(c) && (space.is_none() || self.cpus[c].may_cache(space)))
                .collect(),
            Targets::Listed(l) => l.iter().map(|&t| t as usize).filter(|&c| online(c)).collect(),
        };
        for &c in &cpus {
            self.apply_flush(c, space, work);
        }
        let h = &self.cfg.host;
        let per_cpu = match work {
            FlushWork::All | FlushWork::Space => h.flush_all_cost,
            FlushWork::Range { invlpgs, .. } => h.invlpg_cost.times(invlpgs),
        };
        let local = if cpus.contains(&initiator) { per_cpu } else { Cycles::ZERO };
        let remote = cpus.iter().filter(|&&c| c != initiator).count() as u64;
        let cost = if remote == 0 {
            local
        } else {
            let stall = h.ipi_receive_cost + per_cpu;
            let wait = stall + h.ipi_ack_cost;
            let cost = h.ipi_send_cost.times(remote) + if local > wait { local } else { wait };
            for &c in cpus.iter().filter(|&&c| c != initiator) {
                self.cpus[c].charge(stall, Timing::Serial);
            }
            self.shoot.shootdowns += 1;
            self.shoot.ipis += remote;
            self.shoot.target_stall += stall.times(remote);
            self.cycles.invalidation += stall.times(remote);
            cost
        };
        self.shoot.initiator += cost;
        self.cycles.invalidation += cost;
        cost
    }

    /// Flush what a page-table change of `space` left stale, as Linux's range flushes do:
    /// kernel ranges page by page on every CPU (`flush_tlb_kernel_range`), process ranges one
    /// INVLPG per leaf on the CPUs that may cache the process (`flush_tlb_mm_range`); above
    /// the ceiling, a full flush.
    fn flush_token(&mut self, cpu: usize, space: SpaceId, inv: PendingInvalidation<Hva>) -> Cycles {
        let mut cost = Cycles::ZERO;
        for r in inv.ranges() {
            let invlpgs = match space {
                None => r.bytes / 4096,
                Some(_) => (r.bytes / r.stale_size.bytes()).max(1),
            };
            let work = if invlpgs <= self.cfg.host.tlb_single_page_flush_ceiling {
                FlushWork::Range { start: r.start, bytes: r.bytes, invlpgs }
            } else if space.is_none() {
                FlushWork::All
            } else {
                FlushWork::Space
            };
            cost += self.flush_on(cpu, space, Targets::Auto, work);
        }
        // Freed table pages matter to paging-structure caches, which this TLB level does not
        // model; the ranges above are all a TLB can hold.
        inv.ignore();
        cost
    }

    /// A host-kernel CPA request on the direct map (`phys:` or its `hva:`).
    fn cpa_event(&mut self, cpu: usize, op: CpaOp, addr: Address, pages: u64) -> Outcome {
        let spa = match addr {
            Address::Spa(s) => Some(s),
            Address::Hva(v) => {
                v.raw().checked_sub(PAGE_OFFSET).filter(|&o| o < self.dm.end()).map(Spa::new)
            }
            Address::Gva(_) | Address::Gpa(_) | Address::Iova(_) => None,
        };
        let Some(spa) = spa else {
            self.not_modelled("cpa outside the direct map (vmalloc and alias mappings)");
            return Outcome::default();
        };
        let cost = self.cpa(cpu, op, spa.align_down(PageSize::K4), pages);
        Outcome { cost, ..Outcome::default() }
    }

    /// Run a CPA request from CPU `cpu` and price it: split and collapse work, then the
    /// flushes Linux issues, each as a shootdown.
    fn cpa(&mut self, cpu: usize, op: CpaOp, spa: Spa, pages: u64) -> Cycles {
        self.cpa_marked(cpu, op, spa, pages, self.cfg.host.set_memory_4k_marks)
    }

    /// [`Machine::cpa`] with `set_memory_4k()`'s `_PAGE_KERNEL_4K` marking on or off.
    fn cpa_marked(&mut self, cpu: usize, op: CpaOp, spa: Spa, pages: u64, marks: bool) -> Cycles {
        let env = CpaEnv {
            count: if self.in_boot { Count::Boot } else { Count::Running },
            flush_ceiling: self.cfg.host.tlb_single_page_flush_ceiling,
            kernel_4k_marks: marks,
        };
        let res = cpa::change_page_attr(
            &mut self.dm,
            &mut self.tables,
            &mut frames!(self),
            op,
            spa,
            pages,
            env,
        );
        let out = match res {
            Ok(o) => o,
            Err(_) => {
                self.not_modelled("cpa out of page-table memory");
                return Cycles::ZERO;
            }
        };
        let st = out.stats;
        self.cpa.calls += st.calls;
        self.cpa.lp_checked += st.lp_checked;
        self.cpa.lp_sameprot += st.lp_sameprot;
        self.cpa.lp_preserved += st.lp_preserved;
        self.cpa.pte_set_checked += st.pte_set_checked;
        self.cpa.splits += st.splits;
        self.cpa.collapse_attempts += st.collapse_attempts;
        self.cpa.collapsed += st.collapsed;
        self.cpa.holes += st.holes;
        let soft = self.cfg.host.split_cost.times(st.splits)
            + self.cfg.host.collapse_cost.times(st.collapse_attempts);
        self.cycles.policy += soft;
        let mut cost = soft;
        for step in out.flushes.into_steps() {
            let work = match step {
                FlushStep::All => FlushWork::All,
                FlushStep::Pages { start, pages } => {
                    FlushWork::Range { start, bytes: pages * 4096, invlpgs: pages }
                }
            };
            cost += self.flush_on(cpu, None, Targets::Auto, work);
        }
        self.sample_dm();
        cost
    }

    fn host_va(&self, a: Address) -> Option<Hva> {
        match a {
            Address::Hva(v) => Some(v),
            Address::Spa(s) if s.raw() < self.dm.end() => Some(dm_va(s)),
            Address::Spa(_) | Address::Gva(_) | Address::Gpa(_) | Address::Iova(_) => None,
        }
    }

    /// Switch CPU `cpu` to the page table of `pid` (or the kernel's). PCIDs keep entries.
    fn load_context(&mut self, cpu: usize, pid: Option<u32>) {
        if self.cpus[cpu].loaded == pid {
            return;
        }
        let root = match pid {
            None => self.dm.table().root(),
            Some(p) => match self.procs.get(&p) {
                Some(pt) => pt.root(),
                None => return,
            },
        };
        let tag = pid.map_or(TlbTag::HOST, proc_tag);
        self.cpus[cpu].mmu.load_cr3(Cr3 { root, paging: Paging::FourLevel, tag }, true);
        self.cpus[cpu].note_load(pid, tag.pcid, false);
    }

    fn ensure_proc(&mut self, pid: u32) -> bool {
        if self.procs.contains_key(&pid) {
            return true;
        }
        let fmt = self.cfg.mmu.pte_format();
        match PageTable::new(
            &mut self.tables,
            &mut frames!(self),
            Paging::FourLevel,
            fmt,
            PteFlags::USER_TABLE,
        ) {
            Ok(pt) => {
                self.procs.insert(pid, pt);
                true
            }
            Err(_) => false,
        }
    }

    /// A CPU access of `size` bytes, split at 4 KiB boundaries.
    fn access(
        &mut self,
        cpu: usize,
        ctx: Context,
        addr: Address,
        size: u32,
        kind: AccessKind,
    ) -> Outcome {
        match kind {
            AccessKind::Read => self.accesses.loads += 1,
            AccessKind::Write => self.accesses.stores += 1,
            AccessKind::Fetch => self.accesses.fetches += 1,
        }
        let (va, pid, privilege) = match (ctx, addr) {
            (Context::HostKernel | Context::HostProcess(_), Address::Spa(s))
                if self.cfg.host.captured_phys =>
            {
                return self.captured_access(cpu, ctx, s, size, kind);
            }
            (Context::HostKernel, Address::Spa(s)) if s.raw() < self.dm.end() => {
                self.accesses.kernel += 1;
                (dm_va(s), None, Privilege::Supervisor)
            }
            (Context::HostKernel, Address::Hva(v)) => {
                self.accesses.kernel += 1;
                (v, None, Privilege::Supervisor)
            }
            (Context::HostProcess(p), Address::Hva(v)) => (v, Some(p), Privilege::User),
            (Context::HostProcess(_), Address::Spa(s)) if s.raw() < self.dm.end() => {
                (dm_va(s), None, Privilege::Supervisor)
            }
            (Context::Guest { vm, .. }, _) => {
                return self.guest_access(cpu, ctx, vm, addr, size, kind);
            }
            _ => {
                self.not_modelled("access to an address outside the host's memory or kind");
                return Outcome::default();
            }
        };
        if let Some(p) = pid
            && !self.ensure_proc(p)
        {
            self.not_modelled("process page table (out of memory)");
            return Outcome::default();
        }
        self.load_context(cpu, pid);
        // The common direct-map access: one page, a TLB hit the memos answer.
        if pid.is_none()
            && within_page(va.raw(), size)
            && let Some(o) = self.kernel_hit_fast(cpu, va, kind, privilege, ctx)
        {
            return o;
        }
        self.per_page(va.raw(), size, |m, at| {
            m.access_page(cpu, pid, Hva::new_truncate(at), kind, privilege, ctx)
        })
    }

    /// A direct-map access of one page that [`Mmu::access_large_hit`] answers, with every
    /// effect [`Machine::access_page`] has for such a hit (the TLB cycle class and the data
    /// access). `None` (nothing done): take the general path.
    #[inline(always)]
    fn kernel_hit_fast(
        &mut self,
        cpu: usize,
        va: Hva,
        kind: AccessKind,
        privilege: Privilege,
        ctx: Context,
    ) -> Option<Outcome> {
        let req = AccessRequest { va, kind, privilege, ctx };
        let (spa, latency) = self.cpus[cpu].mmu.access_large_hit(&req)?;
        Some(self.tlb_hit_done(cpu, spa, latency, kind))
    }

    /// The rest of an access whose translation hit the TLB after `latency` cycles: the TLB
    /// cycle class, the data reference, and an outcome with no dependent chain (what the
    /// general paths do for a TLB hit).
    #[inline(always)]
    fn tlb_hit_done(&mut self, cpu: usize, spa: Spa, latency: Cycles, kind: AccessKind) -> Outcome {
        self.cycles.tlb += latency;
        let cost = latency + self.data_reference(cpu, spa, kind);
        Outcome { cost, timing: Timing::Access { chain: Cycles::ZERO }, ..Outcome::default() }
    }

    /// The access's own reference to `spa` through the data caches, where it competes with
    /// page-table and RMP lines; its cycles (also counted as data cycles). An instruction
    /// fetch is priced by the base CPI (no L1I model): zero.
    #[inline(always)]
    fn data_reference(&mut self, cpu: usize, spa: Spa, kind: AccessKind) -> Cycles {
        if kind == AccessKind::Fetch {
            return Cycles::ZERO;
        }
        let d = self.caches.data_access(cpu, spa, kind == AccessKind::Write);
        self.cycles.data += d;
        d
    }

    /// A host access to a captured physical address (`host.captured_phys`): each 4 KiB piece
    /// goes through the direct map to the host page backing its captured page.
    fn captured_access(
        &mut self,
        cpu: usize,
        ctx: Context,
        pa: Spa,
        size: u32,
        kind: AccessKind,
    ) -> Outcome {
        if matches!(ctx, Context::HostKernel) {
            self.accesses.kernel += 1;
        }
        self.load_context(cpu, None);
        self.per_page(pa.raw(), size, |m, at| {
            match m.back_captured(Spa::new_truncate(at), PageSize::K4) {
                Some(spa) if spa.raw() < m.dm.end() => {
                    m.access_page(cpu, None, dm_va(spa), kind, Privilege::Supervisor, ctx)
                }
                _ => {
                    m.not_modelled(CAPTURE_UNBACKED);
                    Outcome::default()
                }
            }
        })
    }

    /// The host address backing captured physical address `pa` in a page of `size`,
    /// allocating the host page (order 0, or order 9 for a 2 MiB page) on first touch. `None`
    /// when the allocator is out of memory, for a 1 GiB page, or for a 2 MiB page some of
    /// whose 4 KiB pages were already backed one by one.
    fn back_captured(&mut self, pa: Spa, size: PageSize) -> Option<Spa> {
        let raw = pa.raw();
        if let Some(&b) = self.captured_2m.get(&(raw >> 21)) {
            return (size != PageSize::G1)
                .then_some(b)
                .and_then(|b| b.checked_add(raw & 0x1f_ffff));
        }
        match size {
            PageSize::K4 => {
                if let Some(&b) = self.captured_4k.get(&(raw >> 12)) {
                    return b.checked_add(raw & 0xfff);
                }
                let b = self.alloc.alloc(0)?;
                self.captured_4k.insert(raw >> 12, b);
                b.checked_add(raw & 0xfff)
            }
            PageSize::M2 => {
                let first = (raw >> 21) << 9;
                if self.captured_4k.range(first..first + 512).next().is_some() {
                    return None;
                }
                let b = self.alloc.alloc(9)?;
                self.captured_2m.insert(raw >> 21, b);
                b.checked_add(raw & 0x1f_ffff)
            }
            PageSize::G1 => None,
        }
    }

    fn access_page(
        &mut self,
        cpu: usize,
        pid: Option<u32>,
        va: Hva,
        kind: AccessKind,
        privilege: Privilege,
        ctx: Context,
    ) -> Outcome {
        let req = AccessRequest { va, kind, privilege, ctx };
        let mut demand_paged = false;
        let mut rmp_handled = false;
        // A fault host software handled before the access completed: the event reports it
        // (disposition `handled`), as a guest access reports the exit KVM handled.
        let mut handled_fault: Option<FaultInfo> = None;
        let mut cost = Cycles::ZERO;
        loop {
            let lookup = self.cfg.rmp.rmp_lookup_latency;
            let mut lat =
                Metered { caches: self.caches.cpu(cpu), walk: Cycles::ZERO, check: Cycles::ZERO };
            // The kernel's direct map is mostly large pages ([`Mmu::access_large`]).
            let kernel = pid.is_none();
            let mmu = &mut self.cpus[cpu].mmu;
            let o = if self.cfg.machine.vendor == crate::config::Vendor::Intel {
                // An Intel host has no RMP: its accesses meet no check stage.
                host_translate(mmu, &mut self.tables, &mut NoCheck, &mut lat, &req, kernel)
            } else {
                let mut chk = RmpCheckStage::new(&mut self.rmp, lookup)
                    .writes_at_fill(!self.cfg.mmu.recheck_write_on_read_fill);
                host_translate(mmu, &mut self.tables, &mut chk, &mut lat, &req, kernel)
            };
            if pid.is_none() && matches!(ctx, Context::HostKernel) && o.walked() {
                self.accesses.kernel_dtlb_misses += 1;
            }
            cost += o.cost;
            let rmp = lat.check + lookup.times(o.check_reads.len() as u64);
            self.cycles.walk += lat.walk;
            self.cycles.rmp_check += rmp;
            self.cycles.tlb += o.cost.saturating_sub(lat.walk + rmp);
            match o.result {
                AccessResult::Translated { spa, .. } => {
                    // The access itself, through the data caches: after the walk if any.
                    let walk_chain = lat.walk + rmp;
                    let d = self.data_reference(cpu, spa, kind);
                    cost += d;
                    let chain = if o.walked() { walk_chain + d } else { Cycles::ZERO };
                    if handled_fault.is_some() {
                        return Outcome {
                            fault: handled_fault,
                            cost,
                            timing: Timing::Serial,
                            ..Outcome::default()
                        };
                    }
                    return Outcome {
                        cost,
                        timing: Timing::Access { chain },
                        ..Outcome::default()
                    };
                }
                AccessResult::NonCanonical { .. } => {
                    return self.fault(FaultKind::Gp, 0, Disposition::Fatal, cost);
                }
                AccessResult::Fault(f) => {
                    let code = u64::from(f.code.bits());
                    // A user access to an unmapped page: Linux's anonymous fault handler maps a
                    // fresh 4K page and the access retries (mm/memory.c do_anonymous_page).
                    if let Some(p) = pid
                        && !f.code.contains(PfErrorCode::PRESENT)
                        && !demand_paged
                    {
                        demand_paged = true;
                        let handled =
                            self.fault(FaultKind::Pf, code, Disposition::Handled, Cycles::ZERO);
                        cost += handled.cost;
                        handled_fault = handled_fault.or(handled.fault);
                        if self.demand_map(p, va) {
                            continue;
                        }
                    }
                    // An RMP #PF goes to the policy's handler first (split the direct map or
                    // the user mapping, and retry), once per access.
                    if f.code.contains(PfErrorCode::RMP) && !rmp_handled {
                        rmp_handled = true;
                        let (action, c) = match (pid, self.host_spa(pid, va)) {
                            (None, Some(spa)) => self.kernel_rmp_fault(cpu, spa),
                            (Some(p), Some(spa)) => self.user_rmp_fault(cpu, p, va, spa),
                            (_, None) => (policy::RmpFaultAction::Unhandled, Cycles::ZERO),
                        };
                        if action == policy::RmpFaultAction::Retry {
                            let handled = self.fault(FaultKind::Pf, code, Disposition::Handled, c);
                            cost += handled.cost;
                            handled_fault = handled_fault.or(handled.fault);
                            continue;
                        }
                        cost += c;
                    }
                    let disp = if matches!(ctx, Context::HostKernel) || pid.is_none() {
                        Disposition::Fatal
                    } else {
                        Disposition::Raised
                    };
                    return self.fault(FaultKind::Pf, code, disp, cost);
                }
            }
        }
    }

    /// The SPA a host access at `va` reaches: through the direct map for the kernel, through
    /// the process's table for a user access.
    fn host_spa(&self, pid: Option<u32>, va: Hva) -> Option<Spa> {
        match pid {
            None => va
                .raw()
                .checked_sub(PAGE_OFFSET)
                .filter(|&o| o < self.dm.end())
                .map(Spa::new_truncate),
            Some(p) => self.procs.get(&p)?.lookup(&self.tables, va).map(|l| l.pa(va)),
        }
    }

    fn demand_map(&mut self, pid: u32, va: Hva) -> bool {
        let Some(page) = self.alloc.alloc(0) else { return false };
        let Some(pt) = self.procs.get_mut(&pid) else { return false };
        // The capture carries no VMA permissions (the pagemap importer adds them later), so a
        // demand-paged page is user, writable and executable: no access of the trace fails on
        // a permission the real process had. A and D are left for the walker to set, as on x86
        // (pte_sw_mkyoung() is a no-op there). User pages are never global (Linux sets G only
        // in kernel mappings), so a CR3 switch to another PCID does not see them.
        let attrs = LeafAttrs {
            flags: (LeafAttrs::KERNEL_RW.flags | PteFlags::USER)
                - PteFlags::NO_EXECUTE
                - PteFlags::ACCESSED
                - PteFlags::DIRTY
                - PteFlags::GLOBAL,
            ..LeafAttrs::KERNEL_RW
        };
        match pt.map(
            &mut self.tables,
            &mut frames!(self),
            va.align_down(PageSize::K4),
            page,
            PageSize::K4,
            attrs,
        ) {
            // A not-present entry is never cached by the TLB: nothing to flush.
            Ok(t) => {
                t.ignore();
                true
            }
            Err(_) => false,
        }
    }

    /// A fault, counted by disposition and code, charged the host's fault handling
    /// (`host.fatal_fault_cost`) on top of `cost`.
    fn fault(
        &mut self,
        kind: FaultKind,
        code: u64,
        disposition: Disposition,
        cost: Cycles,
    ) -> Outcome {
        let extra = self.cfg.host.fatal_fault_cost;
        self.cycles.fault += extra;
        self.fault_uncharged(kind, code, disposition, cost + extra)
    }

    /// A fault counted as [`Machine::fault`] counts it, costing only `cost`: no host software
    /// handles it on a CPU (a DMA the IOMMU refused, a TD exit, a machine check).
    fn fault_uncharged(
        &mut self,
        kind: FaultKind,
        code: u64,
        disposition: Disposition,
        cost: Cycles,
    ) -> Outcome {
        match disposition {
            Disposition::Raised => self.faults.raised += 1,
            Disposition::Handled => self.faults.handled += 1,
            Disposition::Fatal => self.faults.fatal += 1,
        }
        // Keyed by value here (no string per fault); named in the report.
        *self.fault_codes.entry((kind, code)).or_insert(0) += 1;
        Outcome {
            fault: Some(FaultInfo { kind, code, disposition }),
            rc: None,
            cost,
            timing: Timing::Serial,
            retry: false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn rmpupdate(
        &mut self,
        cpu: usize,
        spa: Spa,
        size: PageSize,
        assigned: bool,
        asid: u32,
        gpa: Gpa,
        immutable: bool,
    ) -> Outcome {
        // Host policy runs before the instruction, as in the kernel's rmpupdate() wrapper.
        let cost = self.policy_before_rmpupdate(cpu, spa, size, assigned);
        // No 1G RMP entries (spec/snp.md §1.1) and a 10-bit ASID field: FAIL_INPUT.
        let page_size = match size {
            PageSize::K4 => Some(RmpPageSize::K4),
            PageSize::M2 => Some(RmpPageSize::M2),
            PageSize::G1 => None,
        };
        let input = match (page_size, assigned, u16::try_from(asid)) {
            (Some(ps), true, Ok(a)) => Some(RmpUpdateInput::private(gpa, ps, a, immutable)),
            (Some(ps), false, _) => Some(RmpUpdateInput::shared(ps)),
            (None, _, _) | (Some(_), true, Err(_)) => None,
        };
        let Some(input) = input else {
            let lat = self.cfg.rmp.rmpupdate_latency;
            return self.after_rmp_change(RmpReturn::FailInput, lat, (spa, 0)).with_cost(cost);
        };
        let rc = self.rmp.rmpupdate(Executor::Hypervisor, spa, &input);
        if rc == RmpReturn::FailOverlap {
            // Linux's rmpupdate() retries while the instruction returns FAIL_OVERLAP, expecting
            // firmware's brief 2M-range locks to clear (arch/x86/virt/svm/sev.c). The model has
            // no transient overlaps: this one is permanent, and a host would spin forever. The
            // run reports it instead of hanging (spec/snp.md §3.2).
            self.not_modelled(
                "rmpupdate FAIL_OVERLAP that never clears (Linux's retry loop would spin forever)",
            );
        }
        let after = if rc == RmpReturn::Success {
            self.policy_after_rmpupdate(cpu, spa, size, assigned)
        } else {
            Cycles::ZERO
        };
        self.after_rmp_change(rc, self.cfg.rmp.rmpupdate_latency, (spa, size.bytes()))
            .with_cost(cost + after)
    }

    /// PVALIDATE or RMPADJUST by a vCPU (spec/snp.md §3.4–§3.5). The operand address (a GVA,
    /// or a GPA for a vCPU without paging) is translated functionally — the instruction's own
    /// latency (`rmp.pvalidate_latency`, `rmp.rmpadjust_latency`) stands for its translation,
    /// and no TLB entry is filled — then rmp-model applies the instruction's checks. A
    /// translation fault is raised as the access would raise it; an RMP check failure is
    /// #VMEXIT(NPF) with EXITINFO1 RMP (31), ENC (34), SIZEM (35) as rmp-model reports, plus
    /// P, U and GUEST_FINAL (the model's choice: spec/snp.md §6 marks P/U/FINAL UNCONFIRMED for
    /// RMP faults), or #VC 0x404.
    fn guest_rmp_instr(
        &mut self,
        cpu: usize,
        ctx: Context,
        vm: VmId,
        addr: Address,
        op: GuestRmpOp,
    ) -> Outcome {
        self.switch_vmsa(cpu, vm, ctx);
        self.retrying(|m| m.guest_rmp_instr_once(cpu, ctx, vm, addr, op))
    }

    /// One attempt of [`Machine::guest_rmp_instr`]; an exit KVM handles asks for a retry.
    fn guest_rmp_instr_once(
        &mut self,
        cpu: usize,
        ctx: Context,
        vm: VmId,
        addr: Address,
        op: GuestRmpOp,
    ) -> Outcome {
        let Some(who) = rmp_context(self.vms.get(&vm), ctx, &self.cfg.vsm) else {
            self.not_modelled(&format!("{} in a VM that is not SEV-SNP", op.name()));
            return Outcome::default();
        };
        let (gaddr, physical) = match addr {
            Address::Gva(v) => (GuestAddr::Virtual(v), false),
            Address::Gpa(g) => (GuestAddr::Physical(g), true),
            Address::Spa(_) | Address::Hva(_) | Address::Iova(_) => {
                self.not_modelled(&format!("{} of a host address", op.name()));
                return Outcome::default();
            }
        };
        if let Err(e) = self.vm_tables(vm, !physical) {
            self.not_modelled(&format!("{}: {}", op.name(), e.category()));
            return Outcome::default();
        }
        let latency = match op {
            GuestRmpOp::Pvalidate { .. } => self.cfg.rmp.pvalidate_latency,
            GuestRmpOp::Rmpadjust { .. } => self.cfg.rmp.rmpadjust_latency,
        };
        let Some(p) = self.vm_paging.get_mut(&vm) else { unreachable!("built above") };
        let Some((gctx, gtables)) = p.context(physical) else { unreachable!("built above") };
        let req = mmu_model::GuestWalkRequest {
            addr: gaddr,
            access: AccessKind::Read,
            privilege: Privilege::Supervisor,
            who: Agent::Cpu { cpu: 0, ctx },
        };
        let outcome = mmu_model::translate_2d_functional(
            &mut self.walk_scratch,
            &self.tables,
            gtables,
            &gctx,
            &req,
        );
        let (spa, gpa) = match outcome {
            mmu_model::GuestTranslation::Translated { spa, gpa, .. } => (spa, gpa),
            mmu_model::GuestTranslation::Fault(f) => {
                let (kind, code) = guest_fault_code(&f);
                if let GuestFault::Npf(mut n) = f {
                    // PVALIDATE and RMPADJUST name private memory: their exits carry ENC
                    // whatever the operand's C-bit, so KVM faults the page in as private.
                    n.info1 |= NpfExitInfo1::ENC;
                    return self.exit_to_kvm(cpu, vm, &n, latency);
                }
                return self.fault(kind, code, Disposition::Raised, latency);
            }
            mmu_model::GuestTranslation::NonCanonical { .. } => {
                return self.fault(FaultKind::Gp, 0, Disposition::Raised, latency);
            }
        };
        let rmp_size = |s: PageSize| match s {
            PageSize::K4 => Some(RmpPageSize::K4),
            PageSize::M2 => Some(RmpPageSize::M2),
            PageSize::G1 => None,
        };
        let size = match op {
            GuestRmpOp::Pvalidate { size, .. } | GuestRmpOp::Rmpadjust { size, .. } => size,
        };
        let Some(size) = rmp_size(size) else {
            // No 1G form (RCX bit 0 selects 4K or 2M): FAIL_INPUT.
            return self.after_rmp_change(RmpReturn::FailInput, latency, (spa, 0));
        };
        // The instruction names a page: its 4K base (a 2M request's GPA alignment is checked
        // by the instruction itself: FAIL_INPUT).
        let (spa, gpa) = (spa.align_down(PageSize::K4), gpa.align_down(PageSize::K4));
        let out = match op {
            GuestRmpOp::Pvalidate { validate, .. } => {
                self.rmp.pvalidate(who, spa, gpa, size, validate)
            }
            GuestRmpOp::Rmpadjust { vmpl, perms, vmsa, .. } => {
                let Ok(perms) = u8::try_from(perms) else {
                    return self.after_rmp_change(RmpReturn::FailInput, latency, (spa, 0));
                };
                self.rmp.rmpadjust(who, spa, gpa, size, vmpl, perms, vmsa)
            }
        };
        match out {
            GuestInstrOutcome::Done { rc, cf } => {
                let bytes = if size == RmpPageSize::M2 { PageSize::M2.bytes() } else { 4096 };
                let mut o =
                    self.after_rmp_change(rc, latency, (spa.align_down(PageSize::K4), bytes));
                if let Some((code, _)) = o.rc {
                    o.rc = Some((code, Some(cf)));
                }
                o
            }
            GuestInstrOutcome::Fault(v) => {
                self.cycles.rmp_instr += latency;
                match guest_verdict(v) {
                    CheckVerdict::GuestVc { error_code } => {
                        self.fault(FaultKind::Vc, error_code, Disposition::Raised, latency)
                    }
                    v => {
                        let bits = v.guest_fault_bits().unwrap_or_default()
                            | NpfExitInfo1::PRESENT
                            | NpfExitInfo1::USER
                            | NpfExitInfo1::GUEST_FINAL;
                        let n = mmu_model::NpfExit { info1: bits, gpa };
                        self.exit_to_kvm(cpu, vm, &n, latency)
                    }
                }
            }
        }
    }

    /// The SNP guest kernel's `set_memory_decrypted` / `set_memory_encrypted` over `pages` 4K
    /// pages from a GVA of its own page table (Linux `__set_memory_enc_pgtable` with the SNP
    /// hooks of `arch/x86/coco/sev/core.c`, spec/snp.md §4.5 "Guest order of operations"):
    /// - decrypted: each page's PVALIDATE rescind (4K), then one page-state-change request to
    ///   shared per 253 pages (GHCB), then the C-bit cleared in the guest's PTEs;
    /// - encrypted: the C-bit set in the PTEs, a page-state-change request to private, then
    ///   each page's PVALIDATE.
    ///
    /// The PTE change splits a larger guest mapping one level at a time (seed "x86: mm: Provide
    /// support to use memblock when splitting large pages": early in boot the guest's split
    /// tables come from memblock; here from the guest's table pages, which model both) and
    /// drops the guest's TLB entries for the pages on every CPU. Counted under
    /// `guest.cpa_splits` and `guest.cpa_pages`. A fault stops the operation where it is and
    /// is the event's outcome.
    fn guest_set_memory_enc(
        &mut self,
        cpu: usize,
        ctx: Context,
        vm: VmId,
        enc: bool,
        addr: Address,
        pages: u64,
    ) -> Outcome {
        let Address::Gva(first) = addr else {
            self.not_modelled("guest cpa of a non-gva: address");
            return Outcome::default();
        };
        if self.vm_tables(vm, true).is_err() {
            self.not_modelled("guest cpa: VM without tables");
            return Outcome::default();
        }
        let gvas: Vec<Gva> = (0..pages)
            .filter_map(|i| first.raw().checked_add(i * 4096))
            .map(|v| Gva::new_truncate(v & !0xfff))
            .collect();
        let mut total = Outcome::default();
        // Add a step's cost; false if it faulted (and was not handled). The event reports the
        // fault that stopped it, else the first handled one.
        let step = |total: &mut Outcome, o: Outcome| -> bool {
            total.cost += o.cost;
            match o.fault {
                Some(f) if f.disposition != Disposition::Handled => {
                    total.fault = Some(f);
                    false
                }
                Some(f) => {
                    total.fault = total.fault.or(Some(f));
                    true
                }
                None => true,
            }
        };
        // One GHCB request per run of GPA-contiguous pages, at most 253 entries each.
        let psc = |m: &mut Machine, shared: bool| -> Outcome {
            let op = if shared { PscOp::Shared } else { PscOp::Private };
            let gpas: Vec<u64> = gvas
                .iter()
                .filter_map(|g| m.vm_paging.get(&vm).and_then(|p| p.guest_gpa(*g)))
                .map(|g| g.raw() & !0xfff)
                .collect();
            let mut o = Outcome::default();
            let mut rest = gpas.as_slice();
            while let Some(&first) = rest.first() {
                let mut n: u64 = 1;
                while let Some(&next) = rest.get(usize::try_from(n).unwrap_or(usize::MAX))
                    && n < kvm::PSC_MAX_ENTRIES
                    && next == first + n * 4096
                {
                    n += 1;
                }
                let start = Gpa::new_truncate(first);
                o.cost += m.psc(cpu, vm, op, start, PageSize::K4, n).cost;
                rest = rest.get(usize::try_from(n).unwrap_or(usize::MAX)..).unwrap_or(&[]);
            }
            o
        };
        if !enc {
            for g in &gvas {
                let op = GuestRmpOp::Pvalidate { size: PageSize::K4, validate: false };
                let o = self.guest_rmp_instr(cpu, ctx, vm, Address::Gva(*g), op);
                if !step(&mut total, o) {
                    return total;
                }
            }
            let o = psc(self, true);
            step(&mut total, o);
        }
        for g in &gvas {
            let Some(p) = self.vm_paging.get_mut(&vm) else { break };
            let asid = p.asid();
            match p.guest_set_encrypted(vm, &mut self.tables, &mut buddy_frames!(self), *g, enc) {
                Ok((splits, tok)) => {
                    self.guest.cpa_splits += u64::from(splits);
                    self.guest.cpa_pages += 1;
                    let tag = TlbTag { asid, pcid: 0 };
                    for c in &mut self.cpus {
                        self.tlb_invalidated += c.mmu.invalidate(&tok, tag).tlb;
                    }
                    tok.ignore();
                    total.cost += self.cfg.host.invlpg_cost;
                }
                Err(e) => {
                    self.not_modelled(&format!("guest cpa: {}", e.category()));
                    return total;
                }
            }
            self.own_guest_tables(vm);
        }
        if enc {
            let o = psc(self, false);
            if !step(&mut total, o) {
                return total;
            }
            for g in &gvas {
                let op = GuestRmpOp::Pvalidate { size: PageSize::K4, validate: true };
                let o = self.guest_rmp_instr(cpu, ctx, vm, Address::Gva(*g), op);
                if !step(&mut total, o) {
                    return total;
                }
            }
        }
        total.timing = Timing::Serial;
        total
    }

    /// Price an RMP instruction and apply what the hardware does to TLBs (`rmp.tlb_on_update`).
    fn after_rmp_change(&mut self, rc: RmpReturn, latency: Cycles, pages: (Spa, u64)) -> Outcome {
        let mut cost = latency;
        if rc == RmpReturn::Success {
            match self.cfg.rmp.tlb_on_update {
                TlbOnRmpUpdate::GlobalFlush => {
                    self.update_flushes += 1;
                    for c in &mut self.cpus {
                        self.tlb_flushes += 1;
                        self.tlb_invalidated += c.mmu.tlb_mut().flush(FlushScope::All);
                        c.note_full_flush();
                    }
                    // The IOTLB keeps RMP results as CPU TLBs do; this reading flushes it too
                    // (UNCONFIRMED: the study cited covers CPU TLBs).
                    self.iommu.flush_all();
                    cost += self.cfg.rmp.global_flush_latency;
                    self.cycles.invalidation += self.cfg.rmp.global_flush_latency;
                }
                // Hardware drops exactly the entries that translate to the updated pages (a
                // 2M entry whose region holds one of them included), at no charged cost.
                TlbOnRmpUpdate::Coherent => {
                    for c in &mut self.cpus {
                        self.tlb_invalidated += c.mmu.tlb_mut().invalidate_phys(pages.0, pages.1);
                    }
                    self.iommu.invalidate_phys(pages.0, pages.1);
                }
            }
        }
        self.cycles.rmp_instr += latency;
        Outcome {
            fault: None,
            rc: Some((u64::from(rc.code()), None)),
            cost,
            timing: Timing::Serial,
            retry: false,
        }
    }

    /// A `map` event: install a translation (host kernel or process table, a VM's stage 2 or
    /// guest table) and flush what it leaves stale (nothing, over a not-present entry).
    fn map_event(
        &mut self,
        cpu: usize,
        space: Space,
        va: Address,
        pa: Address,
        size: PageSize,
        f: MapFlags,
    ) -> Outcome {
        match self.map_in(space, va, pa, size, f) {
            Ok(Some((sid, t))) => {
                Outcome { cost: self.flush_token(cpu, sid, t), ..Outcome::default() }
            }
            Ok(None) => Outcome::default(),
            Err(r) => {
                self.not_modelled(&r.key);
                Outcome::default()
            }
        }
    }

    /// Install a translation in the table of `space`. A host space returns its token (empty:
    /// a map never replaces a present entry) with the space to flush it in; VM tables have
    /// nothing to flush.
    fn map_in(
        &mut self,
        space: Space,
        va: Address,
        pa: Address,
        size: PageSize,
        f: MapFlags,
    ) -> Result<Option<(SpaceId, PendingInvalidation<Hva>)>, Refusal> {
        match space {
            Space::Kernel | Space::Process(_) => {
                self.host_map(space, va, pa, size, f).map(Some).map_err(Refusal::fixed)
            }
            Space::Stage2(vm) => {
                let (Address::Gpa(g), Address::Spa(mut s)) = (va, pa) else {
                    return Err(Refusal::vm(
                        "map",
                        VmMapError::Addresses("space=stage2:N maps a gpa: address to a phys: one"),
                    ));
                };
                if self.cfg.host.captured_phys {
                    // A captured host frame (e.g. the PFN of a KVM trace's SPTE) gets its
                    // simulated host page on first use, as captured data accesses do.
                    s = self
                        .back_captured(s, size)
                        .ok_or_else(|| Refusal::fixed(CAPTURE_UNBACKED))?;
                }
                self.vm_tables(vm, false).map_err(|e| Refusal::vm("map", e))?;
                let p = self.vm_paging.get_mut(&vm).expect("built above");
                let r = p
                    .stage2_map(&mut self.tables, &mut buddy_frames!(self), g, s, size, f)
                    .map(|()| None)
                    .map_err(|e| Refusal::vm("map", e));
                if r.is_ok() {
                    // KVM's memory behind this GPA range is the host memory mapped here.
                    self.kvm_adopt(vm, g, s, size);
                }
                r
            }
            Space::Guest(vm) => {
                let (Address::Gva(v), Address::Gpa(g)) = (va, pa) else {
                    return Err(Refusal::vm(
                        "map",
                        VmMapError::Addresses("space=guest:N maps a gva: address to a gpa: one"),
                    ));
                };
                self.vm_tables(vm, false).map_err(|e| Refusal::vm("map", e))?;
                let p = self.vm_paging.get_mut(&vm).expect("built above");
                let r = p
                    .guest_map(vm, &mut self.tables, &mut buddy_frames!(self), v, g, size, f)
                    .map(|()| None)
                    .map_err(|e| Refusal::vm("map", e));
                self.own_guest_tables(vm);
                r
            }
            Space::IoDomain(d) => self.iommu_map(d, va, pa, size, f.w).map(|()| None),
        }
    }

    /// Map in the host kernel's or a process's table.
    fn host_map(
        &mut self,
        space: Space,
        va: Address,
        pa: Address,
        size: PageSize,
        f: MapFlags,
    ) -> Result<(SpaceId, PendingInvalidation<Hva>), &'static str> {
        let (Address::Hva(v), Address::Spa(mut p)) = (va, pa) else {
            return Err("map (non-host addresses)");
        };
        if self.cfg.host.captured_phys {
            p = self.back_captured(p, size).ok_or(CAPTURE_UNBACKED)?;
        }
        let attrs = LeafAttrs {
            flags: f.x86_flags(PteFlags::empty()),
            encrypted: f.enc,
            ..LeafAttrs::KERNEL_RW
        };
        let (pt, sid) = match space {
            Space::Kernel => (self.dm.table_mut(), None),
            Space::Process(pid) => {
                if !self.ensure_proc(pid) {
                    return Err("process page table (out of memory)");
                }
                match self.procs.get_mut(&pid) {
                    Some(pt) => (pt, Some(pid)),
                    None => return Err("process page table (out of memory)"),
                }
            }
            Space::Guest(_) | Space::Stage2(_) | Space::IoDomain(_) => {
                return Err("map (non-host space)");
            }
        };
        // Buddy pages even for a `state` line in early boot: the boot pool serves CPA alone
        // (a `map` event ends boot before it runs).
        match pt.map(&mut self.tables, &mut buddy_frames!(self), v, p, size, attrs) {
            Ok(t) => Ok((sid, t)),
            Err(_) => Err("map over an existing mapping"),
        }
    }

    fn unmap_event(&mut self, cpu: usize, space: Space, va: Address, size: PageSize) -> Outcome {
        match space {
            Space::Kernel | Space::Process(_) => self.host_unmap_event(cpu, space, va, size),
            Space::Stage2(vm) => {
                let Address::Gpa(g) = va else {
                    self.not_modelled("unmap (space=stage2:N unmaps a gpa: address)");
                    return Outcome::default();
                };
                let r = match self.vm_paging.get_mut(&vm) {
                    Some(p) => {
                        let eptp = p.nested_root(Gpa::ZERO);
                        p.stage2_unmap(&mut self.tables, g, size).map(|t| (t, p.asid(), eptp))
                    }
                    None => Err(VmMapError::Table(format!("no stage-2 table for VM {vm}"))),
                };
                match r {
                    // KVM's remote TLB flush after zapping SPTEs: every CPU drops what the
                    // root's translations left (combined entries cannot be found by GPA), and
                    // the initiator pays one full flush (TLB_CONTROL at the next VMRUN, or
                    // INVEPT single-context). A TD's entries, shared ones included, carry its
                    // one EPTP, so a shared-EPT unmap flushes under that root too (as
                    // `zap_stage2_gfn` does).
                    Ok(((tok, root), asid, eptp)) => {
                        for c in &mut self.cpus {
                            self.tlb_invalidated += c.mmu.invalidate_nested(&tok, asid, root).tlb;
                            if eptp != root {
                                self.tlb_invalidated +=
                                    c.mmu.invalidate_nested(&tok, asid, eptp).tlb;
                            }
                        }
                        tok.ignore(); // applied on every CPU above
                        self.charge_invalidation(self.cfg.host.flush_all_cost)
                    }
                    Err(e) => {
                        self.not_modelled(&format!("unmap (stage 2): {}", e.category()));
                        Outcome::default()
                    }
                }
            }
            Space::Guest(vm) => {
                let Address::Gva(v) = va else {
                    self.not_modelled("unmap (space=guest:N unmaps a gva: address)");
                    return Outcome::default();
                };
                let r = match self.vm_paging.get_mut(&vm) {
                    Some(p) => p.guest_unmap(v, size).map(|t| (t, p.asid())),
                    None => Err(VmMapError::Table(format!("no guest page table for VM {vm}"))),
                };
                match r {
                    // The guest's own INVLPG; its shootdown to its other vCPUs is not priced
                    // (guest IPIs are not modelled): every CPU drops the entries for free.
                    Ok((tok, asid)) => {
                        let tag = TlbTag { asid, pcid: 0 };
                        for c in &mut self.cpus {
                            self.tlb_invalidated += c.mmu.invalidate(&tok, tag).tlb;
                        }
                        tok.ignore(); // applied on every CPU above
                        self.charge_invalidation(self.cfg.host.invlpg_cost)
                    }
                    Err(e) => {
                        self.not_modelled(&format!("unmap (guest): {}", e.category()));
                        Outcome::default()
                    }
                }
            }
            Space::IoDomain(d) => {
                self.iommu_unmap(d, va, size);
                Outcome::default()
            }
        }
    }

    fn host_unmap_event(
        &mut self,
        cpu: usize,
        space: Space,
        va: Address,
        size: PageSize,
    ) -> Outcome {
        let Address::Hva(v) = va else {
            self.not_modelled("unmap (non-host address)");
            return Outcome::default();
        };
        let (pt, sid) = match space {
            Space::Kernel => (self.dm.table_mut(), None),
            Space::Process(pid) => match self.procs.get_mut(&pid) {
                Some(pt) => (pt, Some(pid)),
                None => {
                    self.not_modelled("unmap in an unknown process");
                    return Outcome::default();
                }
            },
            Space::Guest(_) | Space::Stage2(_) | Space::IoDomain(_) => {
                self.not_modelled("unmap (non-host space)");
                return Outcome::default();
            }
        };
        match pt.unmap(&mut self.tables, v, size) {
            Ok((_, t)) => Outcome { cost: self.flush_token(cpu, sid, t), ..Outcome::default() },
            Err(_) => {
                self.not_modelled("unmap of an unmapped address");
                Outcome::default()
            }
        }
    }

    /// Make sure VM `vm`'s stage-2 table exists, and its guest page table if `guest`.
    fn vm_tables(&mut self, vm: VmId, guest: bool) -> Result<(), VmMapError> {
        if !self.vm_paging.contains_key(&vm) {
            let info = self.vms.get(&vm).copied().ok_or(VmMapError::UnknownVm { vm })?;
            let p = VmPaging::new(
                vm,
                info.kind,
                info.asid,
                self.cfg.mmu.pte_format(),
                &mut self.tables,
                &mut buddy_frames!(self),
            )?;
            self.vm_paging.insert(vm, p);
            self.vm_epoch += 1;
        }
        if guest {
            let p = self.vm_paging.get_mut(&vm).expect("inserted above");
            p.ensure_guest(vm, &mut self.tables, &mut buddy_frames!(self))?;
            self.own_guest_tables(vm);
        }
        Ok(())
    }

    /// Give an SNP guest the pages backing its own page tables, as its launch and boot leave
    /// them: assigned to its ASID at their GPA, validated, VMPL0 full (the RMP state a guest
    /// kernel's page tables have, so that the walker's guest-table references pass the
    /// Table 15-39 checks). Not an instruction: initial state, like a `state rmp` line.
    fn own_guest_tables(&mut self, vm: VmId) {
        let Some(p) = self.vm_paging.get_mut(&vm) else { return };
        let fresh = p.take_fresh_backing();
        let Some(info) = self.vms.get(&vm).filter(|i| i.kind == VmKind::Snp) else { return };
        let Ok(asid) = u16::try_from(info.asid) else { return };
        for (gpa, spa) in fresh {
            let e = RmpEntry {
                assigned: true,
                asid,
                gpa,
                validated: true,
                vmpl: rmp_model::VMPL_ON_UPDATE,
                ..RmpEntry::ZERO
            };
            // Table pages come from the allocator, below the RMP: always covered.
            let _ = self.rmp.set_entry(spa, &e);
        }
    }

    /// Free VM `vm`'s tables and drop its ASID's translations on every CPU (KVM flushes an
    /// ASID before reusing it; here the stale entries would otherwise match a new VM whose
    /// nested root lands on the same freed page).
    fn drop_vm_tables(&mut self, vm: VmId) {
        if let Some(p) = self.vm_paging.remove(&vm) {
            self.vm_epoch += 1;
            let asid = p.asid();
            p.destroy(&mut self.tables, &mut buddy_frames!(self));
            for c in &mut self.cpus {
                self.tlb_invalidated += c.mmu.svm_tlb_control(asid, TlbControl::FlushAsid).tlb;
            }
        }
    }

    /// A vCPU access of `size` bytes: a GVA through the guest's page tables and stage 2 (the
    /// 2-D walk; an empty guest table is made on first use, so an unmapped GVA is a guest
    /// #PF), a GPA through stage 2 alone (a vCPU without paging); split at 4 KiB boundaries.
    /// A TD's private GPAs go through the S-EPT instead ([`tdx`]), its shared ones through the
    /// VM's shared EPT (`stage2:VM`); guest-virtual accesses in a TD are not modelled.
    fn guest_access(
        &mut self,
        cpu: usize,
        ctx: Context,
        vm: VmId,
        addr: Address,
        size: u32,
        kind: AccessKind,
    ) -> Outcome {
        let td = self.tdx.tdr_of(vm).is_some();
        let (first, physical) = match addr {
            Address::Gva(_) if td => {
                self.not_modelled("guest-virtual access in a TD");
                return Outcome::default();
            }
            Address::Gva(v) => (v.raw(), false),
            Address::Gpa(g) => (g.raw(), true),
            Address::Spa(_) | Address::Hva(_) | Address::Iova(_) => {
                self.not_modelled("guest access to a host address (phys:, hva:, iova:)");
                return Outcome::default();
            }
        };
        // A VTL agent translates through its VTL's stage 2 ([`vsm`]).
        let vtl = vsm::vtl_of(ctx);
        if let Some(l) = vtl.filter(|_| !td) {
            if l > 0 && !physical {
                self.not_modelled("guest-virtual access at VTL 1 or above");
                return Outcome::default();
            }
            if let Err(e) = self.vsm_ensure(vm, l) {
                self.not_modelled(&format!("guest access: {}", e.category()));
                return Outcome::default();
            }
        }
        // A TD builds its shared EPT only for a shared GPA (below).
        if !td {
            // A guest-physical access needs only the stage-2 tables, which the CPU's memo may
            // already vouch for.
            if !(physical && self.vm_memo(cpu, vm).is_some()) {
                if let Err(e) = self.vm_tables(vm, !physical) {
                    self.not_modelled(&format!("guest access: {}", e.category()));
                    return Outcome::default();
                }
                if physical {
                    let info = self.vms.get(&vm).copied();
                    let gpa_ctx =
                        self.vm_paging.get_mut(&vm).and_then(|p| p.context(true)).map(|(c, _)| c);
                    self.cpus[cpu].vm_memo =
                        Some(VmMemo { vm, epoch: self.vm_epoch, info, gpa_ctx });
                }
            }
            self.switch_vmsa(cpu, vm, ctx);
            // The common access: a guest-physical one within a page that hits the L1 TLB.
            if physical
                && vtl.is_none()
                && within_page(first, size)
                && let Some(o) = self.guest_hit_fast(cpu, vm, Gpa::new_truncate(first), kind)
            {
                return o;
            }
        }
        self.per_page(first, size, |m, at| {
            if td {
                let gpa = Gpa::new_truncate(at);
                if let Some(o) = m.td_access(cpu, vm, gpa, kind == AccessKind::Write) {
                    m.guest.accesses += 1;
                    return o;
                }
                if let Err(e) = m.vm_tables(vm, false) {
                    m.not_modelled(&format!("guest access: {}", e.category()));
                    return Outcome::default();
                }
            }
            let a = if physical {
                GuestAddr::Physical(Gpa::new_truncate(at))
            } else {
                GuestAddr::Virtual(Gva::new_truncate(at))
            };
            m.guest_access_retrying(cpu, ctx, vm, a, kind)
        })
    }

    /// A guest-physical access of one page that the L1 TLB's memo answers
    /// ([`Mmu::guest_hit_fast`]), with every effect [`Machine::guest_access_page`] has for it:
    /// the guest counters, the cycle classes and the data access. `None` (nothing done): take
    /// the general path, as when CPU `cpu`'s [`VmMemo`] is not current for `vm`.
    #[inline(always)]
    fn guest_hit_fast(
        &mut self,
        cpu: usize,
        vm: VmId,
        gpa: Gpa,
        kind: AccessKind,
    ) -> Option<Outcome> {
        let c = &mut self.cpus[cpu];
        let gctx = VmMemo::current(&c.vm_memo, vm, self.vm_epoch)?.gpa_ctx.as_ref()?;
        // vCPU accesses are the guest kernel's (as in `guest_access_page`).
        let (spa, latency) = c.mmu.guest_hit_fast(gpa, kind, Privilege::Supervisor, gctx)?;
        let g = &mut self.guest;
        g.accesses += 1;
        g.tlb_hits += 1;
        Some(self.tlb_hit_done(cpu, spa, latency, kind))
    }

    /// CPU `cpu`'s [`VmMemo`], if it is of `vm` and still valid.
    #[inline]
    fn vm_memo(&self, cpu: usize, vm: VmId) -> Option<&VmMemo> {
        VmMemo::current(&self.cpus[cpu].vm_memo, vm, self.vm_epoch)
    }

    /// Run an access of `size` bytes from `first` one 4 KiB page at a time (an access that
    /// crosses a page boundary translates each page), summing costs and dependent chains; a
    /// fault, or a page that serializes, makes the whole access serial.
    fn per_page(
        &mut self,
        first: u64,
        size: u32,
        mut one: impl FnMut(&mut Machine, u64) -> Outcome,
    ) -> Outcome {
        let last = first.saturating_add(u64::from(size.max(1)) - 1);
        let mut total = Outcome::default();
        let mut chain = Cycles::ZERO;
        let mut page = first & !0xfff;
        loop {
            let o = one(self, page.max(first));
            total.cost += o.cost;
            match o.timing {
                Timing::Access { chain: c } if o.fault.is_none() => chain += c,
                Timing::Access { .. } | Timing::Serial | Timing::Issue => {
                    total.fault = o.fault;
                    total.timing = Timing::Serial;
                    return total;
                }
            }
            total.timing = Timing::Access { chain };
            if last >> 12 == page >> 12 {
                return total;
            }
            page += 4096;
        }
    }

    /// A CPU that runs another VMPL of the same guest than it ran last runs another VMSA; the
    /// guest's TLB entries of this CPU are flushed, so that translations (and the RMP results
    /// they keep, VMPL permissions included) filled at one VMPL never serve another. Model
    /// reading of APM Vol. 2 §15.36.15 (hardware tracks the VMSA a guest TLB entry was made
    /// under, TLB_ID/PCPU_ID, and flushes when needed): **UNCONFIRMED** whether hardware tags
    /// entries by VMPL instead of flushing.
    fn switch_vmsa(&mut self, cpu: usize, vm: VmId, ctx: Context) {
        let vmpl = vmpl_of(ctx, &self.cfg.vsm);
        let prev = self.cpus[cpu].vmsa.replace((vm, vmpl));
        if matches!(prev, Some((pvm, pl)) if pvm == vm && pl != vmpl) {
            let asid = self.vms.get(&vm).map_or(0, |i| u16::try_from(i.asid).unwrap_or(0));
            self.tlb_flushes += 1;
            self.tlb_invalidated +=
                self.cpus[cpu].mmu.svm_tlb_control(asid, TlbControl::FlushAsid).tlb;
        }
    }

    /// An exit to KVM (#NPF): handled (the caller retries) or raised.
    fn exit_to_kvm(
        &mut self,
        cpu: usize,
        vm: VmId,
        n: &mmu_model::NpfExit,
        cost: Cycles,
    ) -> Outcome {
        let code = n.info1.bits();
        if let Some(extra) = self.kvm_handle_npf(cpu, vm, n) {
            let mut out = self.fault(FaultKind::Npf, code, Disposition::Handled, cost + extra);
            out.retry = true;
            return out;
        }
        self.fault(FaultKind::Npf, code, Disposition::Raised, cost)
    }

    /// An exit of a VTL agent to KVM's VSM fault path: handled (the caller retries) or raised.
    fn vsm_exit(
        &mut self,
        cpu: usize,
        vm: VmId,
        vtl: u8,
        n: &mmu_model::NpfExit,
        cost: Cycles,
    ) -> Outcome {
        let code = n.info1.bits();
        if let Some(extra) = self.vsm_handle_npf(cpu, vm, vtl, n) {
            let mut out = self.fault(FaultKind::Npf, code, Disposition::Handled, cost + extra);
            out.retry = true;
            return out;
        }
        self.fault(FaultKind::Npf, code, Disposition::Raised, cost)
    }

    /// Run `attempt` until it completes without asking for a retry (an exit KVM handled), at
    /// most [`kvm::MAX_RETRIES`] + 1 times. The outcome carries the costs of every attempt, is
    /// serializing once an exit was handled, and reports what the guest finally got (e.g. #VC
    /// after a fault-in) or, when the retry completed, the first exit KVM handled.
    fn retrying(&mut self, mut attempt: impl FnMut(&mut Machine) -> Outcome) -> Outcome {
        let mut first: Option<FaultInfo> = None;
        let mut spent = Cycles::ZERO;
        for i in 0..=kvm::MAX_RETRIES {
            let o = attempt(self);
            if !o.retry || i == kvm::MAX_RETRIES {
                if first.is_none() {
                    return o;
                }
                return Outcome {
                    fault: o.fault.or(first),
                    rc: o.rc,
                    cost: spent + o.cost,
                    timing: Timing::Serial,
                    retry: false,
                };
            }
            first = first.or(o.fault);
            spent += o.cost;
        }
        unreachable!("the last attempt returns")
    }

    /// One page of a vCPU access, retried after each exit KVM handles.
    fn guest_access_retrying(
        &mut self,
        cpu: usize,
        ctx: Context,
        vm: VmId,
        addr: GuestAddr,
        kind: AccessKind,
    ) -> Outcome {
        self.retrying(|m| m.guest_access_page(cpu, ctx, vm, addr, kind))
    }

    fn guest_access_page(
        &mut self,
        cpu: usize,
        ctx: Context,
        vm: VmId,
        addr: GuestAddr,
        kind: AccessKind,
    ) -> Outcome {
        let physical = matches!(addr, GuestAddr::Physical(_));
        let info = match self.vm_memo(cpu, vm) {
            Some(m) => m.info,
            None => self.vms.get(&vm).copied(),
        };
        let vtl = vsm::vtl_of(ctx);
        let paging = match vtl {
            Some(l) if l > 0 => self.vsm.paging_mut(vm, l),
            Some(_) | None => self.vm_paging.get_mut(&vm),
        };
        let Some((gctx, gtables)) = paging.and_then(|p| p.context(physical)) else {
            // vm_tables built what the access needs.
            unreachable!("VM {vm}'s tables exist");
        };
        // The agent carries no CPL: vCPU accesses are the guest kernel's (CPL 0).
        let req = GuestAccessRequest { addr, kind, privilege: Privilege::Supervisor, ctx };
        let mut lat =
            Metered { caches: self.caches.cpu(cpu), walk: Cycles::ZERO, check: Cycles::ZERO };
        // Every guest access of this SNP-enabled host meets the RMP (Table 15-39 guest rows);
        // a TD runs on a TDX host, which has none.
        // One outcome buffer reused by every guest access (a 2-D outcome is over 1 KiB;
        // `Mmu::guest_access_into` fills it in place).
        let mut rmp_stage;
        let checker: &mut dyn TranslationCheck =
            match rmp_context(info.as_ref(), ctx, &self.cfg.vsm) {
                Some(who) => {
                    rmp_stage = RmpCheckStage::guest(
                        &mut self.rmp,
                        self.cfg.rmp.rmp_lookup_latency,
                        who,
                        self.cfg.rmp.nested_table_check,
                    );
                    &mut rmp_stage
                }
                None => &mut NoCheck,
            };
        let mmu = &mut self.cpus[cpu].mmu;
        let mut o = match self.guest_out.take() {
            Some(mut b) => {
                mmu.guest_access_into(
                    &mut self.tables,
                    gtables,
                    &gctx,
                    checker,
                    &mut lat,
                    &req,
                    &mut b,
                );
                b
            }
            None => Box::new(mmu.guest_access(
                &mut self.tables,
                gtables,
                &gctx,
                checker,
                &mut lat,
                &req,
            )),
        };
        let g = &mut self.guest;
        g.accesses += 1;
        match o.path {
            AccessPath::TlbHit | AccessPath::TlbHitWriteCheck => g.tlb_hits += 1,
            AccessPath::Walk if physical => g.gpa_walks += 1,
            AccessPath::Walk => g.walks_2d += 1,
            AccessPath::None => {}
        }
        for r in &o.refs {
            match r.stage {
                Stage::Guest => g.guest_refs += 1,
                Stage::Nested => g.nested_refs += 1,
                Stage::Native => {}
            }
            if r.kind == RefKind::AdWrite {
                g.ad_writes += 1;
            }
        }
        g.refs = g.guest_refs + g.nested_refs;
        let (o_cost, o_path, o_result) = (o.cost, o.path, o.result);
        o.refs.clear();
        self.guest_out.put(o);
        let o = GuestOutcomeSummary { cost: o_cost, path: o_path, result: o_result };
        let mut cost = o.cost;
        self.cycles.walk += lat.walk;
        self.cycles.rmp_check += lat.check;
        self.cycles.tlb += o.cost.saturating_sub(lat.walk + lat.check);
        let walked = o.path == AccessPath::Walk;
        if let Some(l) = vtl {
            self.vsm.note_access(l, walked);
        }
        let (fkind, code) = match o.result {
            GuestAccessResult::Translated { spa, .. } => {
                // As for the host: the data access goes through the data caches; a fetch is
                // priced by the base CPI.
                let walk_chain = lat.walk + lat.check;
                let d = self.data_reference(cpu, spa, kind);
                cost += d;
                let chain = if walked { walk_chain + d } else { Cycles::ZERO };
                return Outcome { cost, timing: Timing::Access { chain }, ..Outcome::default() };
            }
            // #GP in the guest.
            GuestAccessResult::NonCanonical { .. } => (FaultKind::Gp, 0),
            GuestAccessResult::Fault(GuestFault::PageFault(pf)) => {
                (FaultKind::Pf, u64::from(pf.code.bits()))
            }
            GuestAccessResult::Fault(GuestFault::Npf(n)) => (FaultKind::Npf, n.info1.bits()),
            GuestAccessResult::Fault(GuestFault::EptViolation(v)) => {
                (FaultKind::EptViolation, v.qual.bits())
            }
            GuestAccessResult::Fault(GuestFault::Vc { code, .. }) => (FaultKind::Vc, code),
            GuestAccessResult::Fault(GuestFault::EptMisconfig { .. }) => {
                // Unreachable from scenarios (every EPT entry the machine writes is well
                // formed) and without a fault kind in the vocabulary: listed, and serialized.
                self.not_modelled("EPT misconfiguration exit");
                return Outcome { cost, ..Outcome::default() };
            }
        };
        // A #NPF goes to KVM ([`kvm`]): when it handles the exit the access retries. Every
        // other guest fault is raised: a #PF, #GP or #VC to the guest; an EPT violation to the
        // hypervisor (TDX's handling comes with tdx-model).
        if let GuestAccessResult::Fault(GuestFault::Npf(n)) = o.result {
            if let Some(l) = vtl {
                return self.vsm_exit(cpu, vm, l, &n, cost);
            }
            return self.exit_to_kvm(cpu, vm, &n, cost);
        }
        // A TD's shared-EPT violation goes to KVM the same way.
        if let GuestAccessResult::Fault(GuestFault::EptViolation(v)) = o.result
            && let Some(extra) = self.kvm_handle_td_shared_ept(vm, &v)
        {
            let mut out = self.fault(fkind, code, Disposition::Handled, cost + extra);
            out.retry = true;
            return out;
        }
        self.fault(fkind, code, Disposition::Raised, cost)
    }

    /// End of input: take the last DirectMap sample.
    pub fn finish(&mut self) {
        self.sample_dm();
    }

    /// Evaluate an `expect` against the last event's outcome (`None` for `expect final`).
    pub fn check(&self, c: &Check, last: Option<&Outcome>, info: &InputInfo) -> (bool, String) {
        let mut text = String::new();
        c.write_text(&mut text);
        let (ok, found) = match c {
            Check::NoFault {} => match last.and_then(|o| o.fault) {
                None => (true, "no fault".to_owned()),
                Some(f) => (false, describe_fault(&f)),
            },
            Check::Fault { kind, code, bits, disposition } => match last.and_then(|o| o.fault) {
                None => (false, "no fault".to_owned()),
                Some(f) => {
                    let ok = f.kind == *kind
                        && code.is_none_or(|c| c.0 == f.code)
                        && bits.is_none_or(|b| f.code & b.0 == b.0)
                        && disposition.is_none_or(|d| d == f.disposition);
                    (ok, describe_fault(&f))
                }
            },
            Check::Rc { code, cf } => match last.and_then(|o| o.rc) {
                None => (false, "no return code (the event is not an instruction)".to_owned()),
                Some((rc, rcf)) => {
                    (rc == *code && (cf.is_none() || *cf == rcf), format!("rc {rc}"))
                }
            },
            Check::Rmp { spa, size, assigned, asid, gpa, validated, immutable, vmsa } => {
                let e = self.rmp.entry(*spa);
                let esize = match e.page_size {
                    RmpPageSize::K4 => PageSize::K4,
                    RmpPageSize::M2 => PageSize::M2,
                };
                let ok = size.is_none_or(|s| s == esize)
                    && assigned.is_none_or(|a| a == e.assigned)
                    && asid.is_none_or(|a| a == u32::from(e.asid))
                    && gpa.is_none_or(|g| g == e.gpa)
                    && validated.is_none_or(|v| v == e.validated)
                    && immutable.is_none_or(|v| v == e.immutable)
                    && vmsa.is_none_or(|v| v == e.vmsa);
                (
                    ok,
                    format!(
                        "rmp {spa} size={esize} assigned={} asid={} gpa={} validated={} immutable={} vmsa={}",
                        u8::from(e.assigned),
                        e.asid,
                        e.gpa,
                        u8::from(e.validated),
                        u8::from(e.immutable),
                        u8::from(e.vmsa)
                    ),
                )
            }
            Check::DirectMap { spa, size } => match self.dm.leaf_size(&self.tables, *spa) {
                Some(s) => (s == *size, format!("directmap leaf {s}")),
                None => (false, "not mapped".to_owned()),
            },
            Check::Counter { name, eq, min, max } => match self.counter(name, info) {
                Some(v) => (counter_in(v, *eq, *min, *max), format!("{name} = {v}")),
                None => (
                    false,
                    format!("no counter named {name:?} (see docs/scenario-format.md \"Counters\")"),
                ),
            },
            _ => match self.tdx_check(c, last) {
                Some(r) => r,
                None => (false, format!("check `{}` is not supported yet", c.keyword())),
            },
        };
        (ok, format!("expect {text}: {}", if ok { found } else { format!("found {found}") }))
    }

    /// Whether `c` holds: [`Machine::check`] without building its message, for callers that
    /// need the message only on a failure (the race explorer checks every schedule).
    pub fn check_passes(&self, c: &Check, last: Option<&Outcome>, info: &InputInfo) -> bool {
        match c {
            Check::Counter { name, eq, min, max } => {
                self.counter(name, info).is_some_and(|v| counter_in(v, *eq, *min, *max))
            }
            _ => self.check(c, last, info).0,
        }
    }

    /// A counter by name: any flattened report field (`faults.fatal`,
    /// `directmap.level2_splits`, `rmp.violations.not-hypervisor-owned`), plus the totals
    /// `rmp.violations` and `rmp.updates`, and the Linux names `direct_map_level2_splits`,
    /// `direct_map_level3_splits`, `DirectMap4k`, `DirectMap2M`, `DirectMap1G`.
    pub fn counter(&self, name: &str, info: &InputInfo) -> Option<u64> {
        let alias = match name {
            // The fault totals without formatting the by-code table beside them.
            "faults.raised" => return Some(self.faults.raised),
            "faults.handled" => return Some(self.faults.handled),
            "faults.fatal" => return Some(self.faults.fatal),
            "rmp.violations" => return Some(self.report_rmp().violations.values().sum()),
            "rmp.updates" => return Some(self.report_rmp().updates.values().sum()),
            "direct_map_level2_splits" => "directmap.level2_splits",
            "direct_map_level3_splits" => "directmap.level3_splits",
            "direct_map_level2_collapses" => "directmap.level2_collapses",
            "direct_map_level3_collapses" => "directmap.level3_collapses",
            "DirectMap4k" => "directmap.kb.4K",
            "DirectMap2M" => "directmap.kb.2M",
            "DirectMap1G" => "directmap.kb.1G",
            n => n,
        };
        // Only the section the name starts with is serialized.
        let (section, rest) = alias.split_once('.').unwrap_or((alias, ""));
        let v = self.report_section(section, info)?;
        let text = if rest.is_empty() { report::leaf_text(&v) } else { report::leaf(&v, rest) };
        text?.parse().ok()
    }

    /// The report of the run so far.
    pub fn report(&self, info: &InputInfo) -> Report {
        let (dtlb, walks) = self.report_dtlb_walks();
        let (cycles, total) = self.report_cycles();
        Report {
            ccsim: env!("CARGO_PKG_VERSION").to_owned(),
            input: info.clone(),
            machine: self.report_machine(),
            records: 0,
            events: self.events,
            accesses: self.accesses,
            dtlb,
            walks,
            guest: self.report_guest(),
            rmp: self.report_rmp(),
            faults: self.report_faults(),
            kvm: self.kvm_counts.clone(),
            vsm: self.vsm_counts(),
            policy: self.policy_counts.clone(),
            iommu: self.iommu.stats(),
            tdx: self.tdx_counts(),
            directmap: self.report_directmap(),
            shootdowns: self.report_shootdowns(),
            memory: self.report_memory(),
            cycles,
            derived: self.report_derived(&dtlb, total),
            not_modelled: self.not_modelled.clone(),
        }
    }

    /// One section of [`Machine::report`] as [`Report::section`] serializes it, building only
    /// that section (`expect … counter` reads one per check; the race explorer one per
    /// schedule).
    pub fn report_section(&self, name: &str, info: &InputInfo) -> Option<serde_json::Value> {
        use serde_json::to_value as v;
        match name {
            "ccsim" => v(env!("CARGO_PKG_VERSION")),
            "input" => v(info),
            "machine" => v(self.report_machine()),
            "records" => v(0u64),
            "events" => v(self.events),
            "accesses" => v(self.accesses),
            "dtlb" => v(self.report_dtlb_walks().0),
            "walks" => v(self.report_dtlb_walks().1),
            "guest" => v(self.report_guest()),
            "rmp" => v(self.report_rmp()),
            "faults" => v(self.report_faults()),
            "kvm" => v(&self.kvm_counts),
            "vsm" => v(self.vsm_counts()),
            "policy" => v(&self.policy_counts),
            "iommu" => v(self.iommu.stats()),
            "tdx" => v(self.tdx_counts()),
            "directmap" => v(self.report_directmap()),
            "shootdowns" => v(self.report_shootdowns()),
            "memory" => v(self.report_memory()),
            "cycles" => v(self.report_cycles().0),
            "derived" => {
                let (dtlb, _) = self.report_dtlb_walks();
                v(self.report_derived(&dtlb, self.report_cycles().1))
            }
            "not_modelled" => v(&self.not_modelled),
            _ => return None,
        }
        .ok()
    }

    fn report_dtlb_walks(&self) -> (report::TlbCounts, report::WalkCounts) {
        let mut dtlb = report::TlbCounts {
            flushes: self.tlb_flushes,
            invalidated: self.tlb_invalidated,
            ..Default::default()
        };
        let mut walks = report::WalkCounts::default();
        for c in &self.cpus {
            let ts = c.mmu.tlb().stats();
            for s in PageSize::ALL {
                dtlb.hits[s] += ts.by_size[s].hits;
                dtlb.evictions[s] += ts.by_size[s].evictions;
            }
            let ms = c.mmu.stats();
            dtlb.misses += ms.walks;
            walks.walks += ms.walks.total() + ms.walks_faulted;
            walks.refs += ms.walk_reads + ms.walk_ad_writes;
            walks.ad_writes += ms.walk_ad_writes;
        }
        (dtlb, walks)
    }

    fn report_rmp(&self) -> report::RmpCounts {
        let rs = self.rmp.stats();
        report::RmpCounts {
            checks: rs.host_write_checks + rs.host_table_checks,
            guest_checks: rs.guest_checks,
            entry_reads: rs.entry_reads,
            violations: rs
                .violations
                .iter()
                .map(|(k, v)| (cause_name(*k).to_owned(), *v))
                .collect(),
            updates: rs.rmpupdate.iter().map(|(k, v)| (rc_name(*k).to_owned(), *v)).collect(),
            psmash: rs.psmash.iter().map(|(k, v)| (rc_name(*k).to_owned(), *v)).collect(),
            pvalidate: rs.pvalidate.iter().map(|(k, v)| (rc_name(*k).to_owned(), *v)).collect(),
            rmpadjust: rs.rmpadjust.iter().map(|(k, v)| (rc_name(*k).to_owned(), *v)).collect(),
            update_flushes: self.update_flushes,
        }
    }

    /// The cycle counters, and their total.
    fn report_cycles(&self) -> (report::CycleCounts, Cycles) {
        let c = &self.cycles;
        let total = c.base
            + c.data
            + c.tlb
            + c.walk
            + c.rmp_check
            + c.rmp_instr
            + c.fault
            + c.invalidation
            + c.policy
            + c.kvm
            + c.iommu
            + self.tdx.cycles;
        let cycles = report::CycleCounts {
            base: c.base.get(),
            data: c.data.get(),
            tlb: c.tlb.get(),
            walk: c.walk.get(),
            rmp_check: c.rmp_check.get(),
            rmp_instr: c.rmp_instr.get(),
            fault: c.fault.get(),
            invalidation: c.invalidation.get(),
            policy: c.policy.get(),
            kvm: c.kvm.get(),
            iommu: c.iommu.get(),
            tdx: self.tdx.cycles.get(),
            total: total.get(),
            makespan: self
                .cpus
                .iter()
                .map(|c| c.clock)
                .chain(self.device_clocks.values().copied())
                .max()
                .unwrap_or_default()
                .get(),
        };
        (cycles, total)
    }

    fn report_derived(&self, dtlb: &report::TlbCounts, total: Cycles) -> report::Derived {
        let acc = self.accesses.total();
        #[allow(clippy::cast_precision_loss)]
        report::Derived {
            kernel_dtlb_mpka: self.accesses.kernel_mpka(),
            dtlb_mpka: if acc == 0 {
                0.0
            } else {
                dtlb.misses.total() as f64 * 1000.0 / acc as f64
            },
            cycles_per_access: if acc == 0 { 0.0 } else { total.get() as f64 / acc as f64 },
        }
    }

    fn report_machine(&self) -> BTreeMap<String, String> {
        let mut machine = BTreeMap::new();
        machine.insert("preset".to_owned(), self.cfg.machine.preset.clone());
        machine.insert("cpus".to_owned(), self.cfg.machine.cpus.to_string());
        machine.insert("memory".to_owned(), self.cfg.machine.memory.to_string());
        machine.insert("physmap".to_owned(), self.cfg.host.physmap.to_string());
        machine.insert("policy".to_owned(), self.cfg.host.policy.name().to_owned());
        machine.insert("alloc_order".to_owned(), self.cfg.host.alloc_order.name().to_owned());
        machine.insert(
            "rmp.tlb_on_update".to_owned(),
            // The setting's name as the config file spells it (serializing the whole
            // configuration for it cost a report ~230,000 instructions).
            serde_json::to_value(self.cfg.rmp.tlb_on_update)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        );
        machine
    }

    fn report_guest(&self) -> report::GuestCounts {
        report::GuestCounts {
            stage2_table_pages: self.vm_paging.values().map(|p| p.table_pages().0).sum(),
            guest_table_pages: self.vm_paging.values().map(|p| p.table_pages().1).sum(),
            ..self.guest
        }
    }

    fn report_faults(&self) -> report::FaultCounts {
        report::FaultCounts {
            by_code: self
                .fault_codes
                .iter()
                .map(|((k, c), n)| (format!("{} {c:#x}", k.name()), *n))
                .collect(),
            ..self.faults.clone()
        }
    }

    fn report_directmap(&self) -> report::DirectMapCounts {
        report::DirectMapCounts {
            kb: self.dm.meminfo_kb(),
            level2_splits: self.dm.level2_splits,
            level3_splits: self.dm.level3_splits,
            level2_collapses: self.dm.level2_collapses,
            level3_collapses: self.dm.level3_collapses,
            table_pages: self.dm.table_pages(),
            table_kb: self.dm.table_pages() * 4,
            boot_splits: self.dm.boot_splits,
            boot_collapses: self.dm.boot_collapses,
            boot_table_pages: self.boot.taken(),
            not_present: self.dm.not_present() as u64,
            cpa: self.cpa,
            series: self.dm_series.clone(),
        }
    }

    fn report_shootdowns(&self) -> report::ShootdownCounts {
        report::ShootdownCounts {
            shootdowns: self.shoot.shootdowns,
            ipis_sent: self.shoot.ipis,
            target_stall_cycles: self.shoot.target_stall.get(),
            initiator_cycles: self.shoot.initiator.get(),
        }
    }

    fn report_memory(&self) -> report::MemoryCounts {
        report::MemoryCounts {
            free_kb: self.alloc.free_pages() * 4,
            page_tables_kb: 4
                * (self.dm.table_pages()
                    + self.procs.values().map(PageTable::table_pages).sum::<u64>()),
            captured_4k: self.captured_4k.len() as u64,
            captured_2m: self.captured_2m.len() as u64,
        }
    }
}

/// The not-modelled key of a captured page that could not be backed.
const CAPTURE_UNBACKED: &str =
    "captured page not backed (host out of memory, a 1G page, or a 2M page over backed 4K pages)";

fn proc_tag(pid: u32) -> TlbTag {
    // PCID 0 is the kernel's; processes get 1..4095 (CR3[11:0], Intel SDM Vol. 3A §4.10.1).
    let pcid = u16::try_from(1 + pid % 4095).unwrap_or(1);
    TlbTag { asid: 0, pcid }
}

fn describe_fault(f: &FaultInfo) -> String {
    format!("fault {} code={:#x} disposition={}", f.kind.name(), f.code, f.disposition.name())
}

fn cause_name(c: rmp_model::RmpViolationCause) -> &'static str {
    use rmp_model::RmpViolationCause as C;
    match c {
        C::NotCovered => "not-covered",
        C::NotHypervisorOwned => "not-hypervisor-owned",
        C::NotGuestOwned => "not-guest-owned",
        C::ReverseMap => "reverse-map",
        C::Immutable => "immutable",
        C::PageSizeMismatch => "page-size-mismatch",
        C::NotValidated => "not-validated",
        C::Vmpl => "vmpl",
    }
}

fn rc_name(r: RmpReturn) -> &'static str {
    match r {
        RmpReturn::Success => "success",
        RmpReturn::FailInput => "fail-input",
        RmpReturn::FailPermission => "fail-permission",
        RmpReturn::FailInuse => "fail-inuse",
        RmpReturn::FailOverlap => "fail-overlap",
        RmpReturn::FailSizeMismatch => "fail-sizemismatch",
        RmpReturn::FailBadAddr => "fail-badaddr",
    }
}

impl Outcome {
    fn with_cost(mut self, extra: Cycles) -> Outcome {
        self.cost += extra;
        self
    }
}

/// The machine hands host memory to generators.
impl MemoryServices for Machine {
    fn alloc_pages(&mut self, order: u8, _kind: AllocKind) -> Option<Spa> {
        self.alloc.alloc(order)
    }
    fn free_pages(&mut self, spa: Spa, order: u8) {
        if self.alloc.free(spa, order).is_err() {
            self.not_modelled("generator freed pages it did not allocate");
        }
    }
    fn gmem_alloc(&mut self, _vm: VmId, _gpa: Gpa, order: u8) -> Option<Spa> {
        self.alloc.alloc(order)
    }
    fn memory_bytes(&self) -> u64 {
        self.cfg.machine.memory.0
    }
    fn free_bytes(&self) -> u64 {
        self.alloc.free_pages() * 4096
    }
}

/// Whether counter value `v` meets an `expect … counter` line's bounds.
fn counter_in(v: u64, eq: Option<u64>, min: Option<u64>, max: Option<u64>) -> bool {
    eq.is_none_or(|e| v == e) && min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m)
}
