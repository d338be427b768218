//! The TDX host: SEAMCALLs by the host kernel, TDCALLs and private-GPA accesses by TD guests,
//! TD entries, exits and kicks, through the TDX module model (`tdx-model`).
//!
//! The module's Secure-EPT pages live in the machine's simulated physical memory (the same
//! [`mmu_model::PhysMemTables`] as every other page table), so a private access walks the very
//! entries the SEAMCALLs wrote. Pages the module takes (TDR, TDCX, TDVPR, S-EPT and TD pages)
//! are taken out of the host allocator when they are first given to the module, so that the
//! machine never hands them out again while the module owns them.
//!
//! A TD is bound to a VM of the event stream in one of two ways: a `state td … vm=V` line, or a
//! `vm-create tdx vm=V asid=HKID` event naming the HKID of a TD built with SEAMCALLs
//! (TDH.MNG.CREATE's RDX). vCPU `N` of a VM is the TD's `N`-th TDVPR in creation order
//! (TDH.VP.CREATE), or for a TD made by a `state` line a page the machine takes on the vCPU's
//! first `td-enter`.
//!
//! Private translations are cached in the CPU's TLB hierarchy (tagged by the VM's VPID with the
//! paging-off PCID, and by the S-EPT root as EPTP) while the vCPU is inside its TD; TDH.VP.ENTER
//! flushes them when the vCPU entered last at an older TD epoch (after a TRACK) or another vCPU
//! ran on the CPU last (spec/tdx.md §3.4), so a BLOCKed page stays reachable through the TLB
//! until the TRACK, the kick and the next entry, as on hardware
//! (`traces/scenarios/tdx/tlb-tracking.ccs`).
//!
//! Not modelled here: guest-virtual accesses in a TD (only `gpa:` accesses; a TD's own page
//! tables are not walked).

use super::{Disposition, Machine, Outcome, Timing};
use sim_core::event::{FaultKind, PamtType, SeptStateName, TdState};
use sim_core::{Check, Cycles, Gpa, Spa, VmId};
use tdx_model::{Lifecycle, OpState, PageType, PrivateFault, Regs, SeptState};

/// The machine's TDX state: the module and the bindings of the event stream's VMs to TDs.
#[derive(Debug)]
pub(super) struct TdxHost {
    pub(super) module: tdx_model::TdxModule,
    /// VM id → TDR.
    td_of_vm: std::collections::BTreeMap<VmId, u64>,
    /// (VM, vCPU index) → TDVPR.
    tdvpr: std::collections::BTreeMap<(VmId, u32), u64>,
    /// vCPUs of each TD in creation order (TDH.VP.CREATE or first entry).
    vcpus: std::collections::BTreeMap<u64, Vec<u64>>,
    /// HKID → TDR of TDs built with TDH.MNG.CREATE.
    td_of_hkid: std::collections::BTreeMap<u64, u64>,
    /// The last SEAMCALL/TDCALL's output registers, for `expect regs`.
    pub(super) last_regs: Option<Regs>,
    /// Cycles spent in SEAMCALLs, TDCALLs, TD entries and exits.
    pub(super) cycles: Cycles,
    /// Guest accesses to private GPAs, and those that faulted.
    pub(super) private_accesses: u64,
    pub(super) private_faults: u64,
    /// Private accesses whose translation came from the TLB, and S-EPT walks.
    pub(super) private_tlb_hits: u64,
    pub(super) private_walks: u64,
    /// TD-entry TLB flushes (TDH.VP.ENTER after a TRACK, or another vCPU on the CPU).
    pub(super) entry_flushes: u64,
    /// Whether any TD exists: the host-side checks of private memory run only then.
    pub(super) active: bool,
    /// 64-byte lines (address >> 6) poisoned by a partial write (the erratum): the next read
    /// by anyone is a machine check.
    poisoned: std::collections::BTreeSet<u64>,
    /// Lines of private pages the host or a device wrote with another KeyID: the TD's next
    /// access fails integrity (Ci: MAC; Li: TD-owner bit), a machine check.
    foreign: std::collections::BTreeSet<u64>,
    /// What happened to private memory from the host side.
    pub(super) host_side: HostSideCounts,
    /// KVM's TDX MMU state of each TD's VM (the mirror root, `mmu_lock`, …).
    pub(super) kvm: std::collections::BTreeMap<VmId, super::kvm_tdx::KvmTd>,
    /// What KVM's TDX MMU did.
    pub(super) kvm_counts: super::kvm_tdx::KvmTdxCounts,
}

sim_core::clone_by_fields!(TdxHost {
    module,
    last_regs,
    cycles,
    private_accesses,
    private_faults,
    private_tlb_hits,
    private_walks,
    entry_flushes,
    active,
    host_side,
    kvm_counts
} changed {
    td_of_vm,
    tdvpr,
    vcpus,
    td_of_hkid,
    poisoned,
    foreign,
    kvm
});

/// Host and device accesses to TD-private memory (spec/tdx.md §1.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostSideCounts {
    /// Host CPU writes to private pages (through the direct map).
    pub cpu_writes: u64,
    /// Host CPU reads of private pages (no fault at access; the data is not the TD's).
    pub cpu_reads: u64,
    /// DMA writes that reached private pages.
    pub dma_writes: u64,
    /// DMA reads of private pages.
    pub dma_reads: u64,
    /// Lines poisoned by partial non-temporal/UC/WC or DMA writes (the erratum).
    pub poisoned_lines: u64,
    /// Machine checks: reads of poisoned lines, and TD accesses that failed integrity.
    pub machine_checks: u64,
}

/// How a write from outside the TD reaches memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OutsideWrite {
    /// A host CPU store of this memory type.
    Cpu(sim_core::event::MemType),
    /// A device's DMA.
    Dma,
}

impl TdxHost {
    pub(super) fn new(cfg: tdx_model::TdxConfig) -> TdxHost {
        TdxHost {
            module: tdx_model::TdxModule::new(cfg),
            td_of_vm: Default::default(),
            tdvpr: Default::default(),
            vcpus: Default::default(),
            td_of_hkid: Default::default(),
            last_regs: None,
            cycles: Cycles::ZERO,
            private_accesses: 0,
            private_faults: 0,
            private_tlb_hits: 0,
            private_walks: 0,
            entry_flushes: 0,
            active: false,
            poisoned: Default::default(),
            foreign: Default::default(),
            host_side: HostSideCounts::default(),
            kvm: Default::default(),
            kvm_counts: Default::default(),
        }
    }

    /// The VM bound to TD `tdr`, if any.
    pub(super) fn vm_of_tdr(&self, tdr: u64) -> Option<VmId> {
        self.td_of_vm.iter().find(|(_, t)| **t == tdr).map(|(v, _)| *v)
    }

    /// The TDR of VM `vm`, if it is a TD.
    pub(super) fn tdr_of(&self, vm: VmId) -> Option<u64> {
        self.td_of_vm.get(&vm).copied()
    }

    /// The TD's shared bit (47 for GPAW 48, 51 for 52; spec/tdx.md §1.1).
    pub(super) fn shared_bit(&self, tdr: u64) -> u64 {
        match self.module.td_state(tdr).map(|t| t.gpaw) {
            Some(mmu_model::GpaWidth::W52) => 1 << 51,
            _ => 1 << 47,
        }
    }
}

/// Report counters of the TDX host.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TdxCounts {
    /// SEAMCALLs by leaf name.
    pub seamcalls: std::collections::BTreeMap<String, u64>,
    /// SEAMCALLs by status name.
    pub status: std::collections::BTreeMap<String, u64>,
    /// TDG.MEM.PAGE.ACCEPT by status name (`TD_EXIT` for EPT-violation exits).
    pub accepts: std::collections::BTreeMap<String, u64>,
    /// Guest accesses to private GPAs.
    pub private_accesses: u64,
    /// Of those, the ones that faulted (#VE, an EPT-violation TD exit or a machine check).
    pub private_faults: u64,
    /// Private accesses translated by a TLB hit (no S-EPT walk).
    #[serde(default)]
    pub private_tlb_hits: u64,
    /// Private accesses that walked the S-EPT.
    #[serde(default)]
    pub private_walks: u64,
    /// TLB flushes by TDH.VP.ENTER (a vCPU entering after a TRACK, or onto a CPU where another
    /// vCPU ran last).
    #[serde(default)]
    pub entry_flushes: u64,
    /// Host and device accesses to private memory.
    pub host_side: HostSideCounts,
    /// KVM's TDX MMU: faults, retries, frozen SPTEs, SEPT.ADD/AUG, zaps, BUSY, KVM_BUG_ON.
    #[serde(default)]
    pub kvm: super::kvm_tdx::KvmTdxCounts,
}

fn op_state(s: TdState) -> OpState {
    match s {
        TdState::Uninitialized => OpState::Uninitialized,
        TdState::Initialized => OpState::Initialized,
        TdState::Runnable | TdState::Teardown => OpState::Runnable,
    }
}

fn td_state_name(v: &tdx_model::TdView) -> TdState {
    if v.lifecycle == Lifecycle::Teardown {
        return TdState::Teardown;
    }
    match v.op_state {
        OpState::Uninitialized => TdState::Uninitialized,
        OpState::Initialized => TdState::Initialized,
        OpState::Runnable => TdState::Runnable,
    }
}

fn sept_state(s: SeptStateName) -> SeptState {
    match s {
        SeptStateName::Free => SeptState::Free,
        SeptStateName::Blocked => SeptState::Blocked,
        SeptStateName::Pending => SeptState::Pending,
        SeptStateName::PendingBlocked => SeptState::PendingBlocked,
        SeptStateName::Mapped => SeptState::Mapped,
        SeptStateName::Removed => SeptState::Removed,
        SeptStateName::NlMapped => SeptState::NlMapped,
        SeptStateName::NlBlocked => SeptState::NlBlocked,
    }
}

fn sept_state_name(s: SeptState) -> Option<SeptStateName> {
    Some(match s {
        SeptState::Free => SeptStateName::Free,
        SeptState::Blocked => SeptStateName::Blocked,
        SeptState::Pending => SeptStateName::Pending,
        SeptState::PendingBlocked => SeptStateName::PendingBlocked,
        SeptState::Mapped => SeptStateName::Mapped,
        SeptState::Removed => SeptStateName::Removed,
        SeptState::NlMapped => SeptStateName::NlMapped,
        SeptState::NlBlocked => SeptStateName::NlBlocked,
        _ => return None,
    })
}

fn page_type(t: PamtType) -> PageType {
    match t {
        PamtType::Nda => PageType::Nda,
        PamtType::Rsvd => PageType::Rsvd,
        PamtType::Reg => PageType::Reg,
        PamtType::Tdr => PageType::Tdr,
        PamtType::Tdcx => PageType::Tdcx,
        PamtType::Tdvpr => PageType::Tdvpr,
        PamtType::Ept => PageType::Ept,
    }
}

fn page_type_name(t: PageType) -> PamtType {
    match t {
        PageType::Nda => PamtType::Nda,
        PageType::Rsvd => PamtType::Rsvd,
        PageType::Reg => PamtType::Reg,
        PageType::Tdr => PamtType::Tdr,
        PageType::Tdcx => PamtType::Tdcx,
        PageType::Tdvpr => PamtType::Tdvpr,
        PageType::Ept => PamtType::Ept,
    }
}

/// Table pages for `state sept` lines: from the top of memory, so that they never land on a
/// page the scenario names in a later line.
struct TopFrames<'a>(&'a mut crate::host::alloc::BuddyAllocator);

impl mmu_model::FrameSource<Spa> for TopFrames<'_> {
    fn alloc_table(&mut self) -> Option<Spa> {
        self.0.alloc_highest_page()
    }
    fn free_table(&mut self, page: Spa) {
        let _ = self.0.free(page, 0);
    }
}

impl Machine {
    /// Take a page the module now owns out of the host allocator (if it is still free there).
    fn tdx_claim(&mut self, hpa: u64) {
        self.tdx_claim_pages(hpa, 1);
    }

    /// [`Machine::tdx_claim`] of `pages` pages from `hpa`.
    fn tdx_claim_pages(&mut self, hpa: u64, pages: u64) {
        let first = hpa & !0xfff;
        let mem = self.cfg.machine.memory.0;
        // Only pages inside memory: the part of the range below its end.
        let inside = mem.saturating_sub(first).div_ceil(4096).min(pages);
        if inside > 0 {
            self.alloc.reserve_free_pages(Spa::new_truncate(first), inside);
        }
    }

    /// The S-EPT references of a module operation, through the cache hierarchy (entries the
    /// model does not name are priced as DRAM accesses).
    pub(super) fn tdx_refs(&mut self, cpu: usize, refs: &tdx_model::MemRefs) -> Cycles {
        let mut c = Cycles::ZERO;
        for a in refs.addrs() {
            c += self.caches.data_access(cpu, *a, false);
        }
        let unnamed = u64::from(refs.total()).saturating_sub(refs.addrs().len() as u64);
        c + self.cfg.cache.dram_latency.times(unnamed)
    }

    /// Claim the pages a SEAMCALL handed to the module (R8 of SEPT.ADD, PAGE.ADD, AUG, DEMOTE,
    /// RELOCATE; RCX of MNG.CREATE, MNG.ADDCX, VP.CREATE, VP.ADDCX), once it succeeded.
    pub(super) fn tdx_claim_operands(&mut self, leaf: u16, regs: &Regs) {
        use tdx_model::leaf as l;
        match leaf {
            l::MEM_SEPT_ADD
            | l::MEM_PAGE_ADD
            | l::MEM_PAGE_AUG
            | l::MEM_PAGE_DEMOTE
            | l::MEM_PAGE_RELOCATE => {
                // A 2M AUG takes the whole 2 MiB range.
                let pages = if leaf == l::MEM_PAGE_AUG && regs.rcx & 7 == 1 { 512 } else { 1 };
                self.tdx_claim_pages(regs.r8, pages);
            }
            l::MNG_CREATE => {
                self.tdx.active = true;
                self.tdx_claim(regs.rcx);
                self.tdx.td_of_hkid.insert(regs.rdx, regs.rcx);
            }
            l::MNG_ADDCX | l::VP_ADDCX => self.tdx_claim(regs.rcx),
            l::VP_CREATE => {
                self.tdx_claim(regs.rcx);
                self.tdx.vcpus.entry(regs.rdx).or_default().push(regs.rcx);
            }
            _ => {}
        }
    }

    /// A SEAMCALL by the host kernel, in one go: the module runs it, the pages it took are
    /// claimed, its S-EPT references priced and its cost and registers kept. Returns the
    /// output registers and the cost.
    pub(super) fn tdx_host_call(
        &mut self,
        cpu: usize,
        leaf: u16,
        version: u8,
        regs: Regs,
    ) -> (Regs, Cycles) {
        let out = self.tdx.module.seamcall(&mut self.tables, leaf, version, regs);
        if out.regs.rax == tdx_model::status::TDX_SUCCESS {
            self.tdx_claim_operands(leaf, &regs);
        }
        let cost = out.cost + self.tdx_refs(cpu, &out.refs);
        self.tdx_charge(out.regs, cost);
        (out.regs, cost)
    }

    /// `seamcall LEAF …` by the host kernel (KVM's, so KVM's mirror follows what it changed).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn seamcall(
        &mut self,
        cpu: usize,
        leaf: u16,
        version: u8,
        rcx: u64,
        rdx: u64,
        r8: u64,
        r9: u64,
        r10: u64,
    ) -> Outcome {
        let regs = Regs { rax: 0, rcx, rdx, r8, r9, r10, r11: 0 };
        let (out, cost) = self.tdx_host_call(cpu, leaf, version, regs);
        use tdx_model::leaf as l;
        if out.rax == tdx_model::status::TDX_SUCCESS
            && matches!(
                leaf,
                l::MEM_SEPT_ADD
                    | l::MEM_PAGE_ADD
                    | l::MEM_PAGE_AUG
                    | l::MEM_RANGE_BLOCK
                    | l::MEM_RANGE_UNBLOCK
                    | l::MEM_PAGE_REMOVE
                    | l::MEM_SEPT_REMOVE
                    | l::MEM_PAGE_DEMOTE
                    | l::MEM_PAGE_PROMOTE
                    | l::MEM_PAGE_RELOCATE
            )
        {
            let level = u8::try_from(rcx & 7).unwrap_or(0);
            self.mirror_follow(rdx, rcx & !0xfff, level);
        }
        Outcome { rc: Some((out.rax, None)), cost, timing: Timing::Serial, ..Outcome::default() }
    }

    /// Count `cost` cycles of module work and keep `regs` for `expect regs`.
    pub(super) fn tdx_charge(&mut self, regs: Regs, cost: Cycles) {
        self.tdx.cycles += cost;
        self.tdx.last_regs = Some(regs);
    }

    /// A SEAMCALL, TD entry or TDCALL that returned `regs` after `cost` cycles: RAX is its
    /// return code, the registers are kept for `expect regs`.
    pub(super) fn tdx_returned(&mut self, regs: Regs, cost: Cycles) -> Outcome {
        self.tdx_charge(regs, cost);
        Outcome { rc: Some((regs.rax, None)), cost, timing: Timing::Serial, ..Outcome::default() }
    }

    /// The TDVPR of vCPU `vcpu` of VM `vm`: the TD's `vcpu`-th TDVPR, or a page the machine
    /// creates for a TD made by a `state` line.
    pub(super) fn tdvpr_of(&mut self, vm: VmId, vcpu: u32) -> Option<u64> {
        if let Some(&t) = self.tdx.tdvpr.get(&(vm, vcpu)) {
            return Some(t);
        }
        let tdr = self.tdx.tdr_of(vm)?;
        let n = usize::try_from(vcpu).ok()?;
        // A `state td` TD: make vCPUs up to this one, each on a page of its own.
        while self.tdx.vcpus.get(&tdr).map_or(0, Vec::len) <= n {
            let page = self.alloc.alloc_highest_page()?.raw();
            self.tdx.module.create_vcpu_direct(tdr, page).ok()?;
            self.tdx.vcpus.entry(tdr).or_default().push(page);
        }
        let t = self.tdx.vcpus[&tdr][n];
        self.tdx.tdvpr.insert((vm, vcpu), t);
        Some(t)
    }

    /// `td-enter vm=V vcpu=N`: TDH.VP.ENTER; the vCPU stays in the TD until a `td-exit`, a
    /// `kick` or a TD exit of its own (an EPT violation).
    pub(super) fn td_enter(&mut self, vm: VmId, vcpu: u32) -> Outcome {
        let Some(tdvpr) = self.tdvpr_of(vm, vcpu) else {
            self.not_modelled("td-enter of a VM that is not a TD");
            return Outcome::default();
        };
        let (status, cost) = match self.tdx.module.vp_enter_begin(&mut self.tables, tdvpr, false) {
            Ok(f) => {
                (tdx_model::status::TDX_SUCCESS, self.tdx.module.vp_enter_end(&mut self.tables, f))
            }
            Err(o) => (o.regs.rax, o.cost),
        };
        self.tdx_returned(Regs { rax: status, ..Regs::default() }, cost)
    }

    /// `td-exit vm=V vcpu=N reason=…` or `kick vm=V vcpu=N`: the vCPU leaves the TD (its
    /// REFCOUNT of the epoch it entered at drops).
    pub(super) fn td_leave(&mut self, vm: VmId, vcpu: u32) -> Outcome {
        let Some(tdvpr) = self.tdvpr_of(vm, vcpu) else {
            self.not_modelled("td-exit of a VM that is not a TD");
            return Outcome::default();
        };
        let cost = self.tdx.module.td_exit(&mut self.tables, tdvpr).unwrap_or(Cycles::ZERO);
        self.tdx.cycles += cost;
        Outcome { cost, timing: Timing::Serial, ..Outcome::default() }
    }

    /// `tdcall LEAF …` by a TD's vCPU: TDG.MEM.PAGE.ACCEPT (6); other leaves are not modelled.
    pub(super) fn tdcall(
        &mut self,
        cpu: usize,
        vm: VmId,
        vcpu: u32,
        leaf: u16,
        rcx: u64,
    ) -> Outcome {
        let (Some(tdr), Some(tdvpr)) = (self.tdx.tdr_of(vm), self.tdvpr_of(vm, vcpu)) else {
            self.not_modelled("tdcall by a VM that is not a TD");
            return Outcome::default();
        };
        if leaf != 6 {
            self.not_modelled(&format!("tdcall leaf {leaf}"));
            return Outcome::default();
        }
        let regs = Regs { rcx, ..Regs::default() };
        let out = self.tdx.module.accept(&mut self.tables, tdr, tdvpr, regs);
        let cost = out.cost + self.tdx_refs(cpu, &out.refs);
        let returned = self.tdx_returned(out.regs, cost);
        if out.exit.is_none() && out.regs.rax == tdx_model::status::TDX_SUCCESS {
            // ACCEPT zeroes the page with the TD's key: its lines are the TD's again.
            let level = u8::try_from(rcx & 7).unwrap_or(0);
            let gpa = rcx & !0xfff;
            if let Some((_, hpa)) = self.tdx.module.sept_entry(&self.tables, tdr, gpa, level) {
                let bytes = if level == 1 { 2 << 20 } else { 4096 };
                self.tdx_clear_lines(hpa, bytes);
            }
        }
        if let Some(exit) = out.exit {
            // An EPT-violation TD exit (EEQ type ACCEPT) to the VMM: code = the exit
            // qualification, with the EEQ type in bits 63:60 so that scenarios can tell them
            // apart.
            let code = exit.exit_qualification | (u64::from(exit.eeq_type) << 60);
            return self.fault_uncharged(FaultKind::EptViolation, code, Disposition::Raised, cost);
        }
        returned
    }

    /// A TD guest's access to `gpa` (private when the shared bit is clear): the S-EPT walk, then
    /// the data access. A shared GPA goes through the VM's shared EPT (`stage2:VM`) like any
    /// guest-physical access, which the caller does when this returns `None`.
    pub(super) fn td_access(
        &mut self,
        cpu: usize,
        vm: VmId,
        gpa: Gpa,
        write: bool,
    ) -> Option<Outcome> {
        let tdr = self.tdx.tdr_of(vm)?;
        if gpa.raw() & self.tdx.shared_bit(tdr) != 0 {
            return None;
        }
        self.tdx.private_accesses += 1;
        if let Some(o) = self.td_tlb_access(cpu, vm, tdr, gpa, write) {
            return Some(o);
        }
        self.tdx.private_walks += 1;
        let (kind, code) = match self.tdx.module.private_access(&self.tables, tdr, gpa.raw(), write)
        {
            Ok(t) => {
                self.td_tlb_fill(cpu, vm, tdr, gpa, &t);
                let line = t.hpa.raw() >> 6;
                if self.tdx.poisoned.contains(&line) || self.tdx.foreign.contains(&line) {
                    // A #MC VM exit: the module marks the TD fatal (spec/tdx.md §1.6).
                    self.tdx.host_side.machine_checks += 1;
                    self.tdx.module.mark_fatal(tdr);
                    (FaultKind::Mc, 0)
                } else {
                    let walk = self.tdx_refs(cpu, &t.refs);
                    self.cycles.walk += walk;
                    let d = self.caches.data_access(cpu, t.hpa, write);
                    self.cycles.data += d;
                    return Some(Outcome {
                        cost: walk + d,
                        timing: Timing::Access { chain: walk + d },
                        ..Outcome::default()
                    });
                }
            }
            Err(PrivateFault::Ve { .. }) => (FaultKind::Ve, 0),
            Err(PrivateFault::EptViolation { eeq_type, .. }) => {
                // Exit qualification: bit 0 read / bit 1 write (SDM Vol. 3C Table 28-7), the
                // EEQ type in bits 63:60 (see `tdcall`).
                let q = if write { 2 } else { 1 };
                (FaultKind::EptViolation, q | (u64::from(eeq_type) << 60))
            }
            Err(PrivateFault::ReservedGpaBits) => (FaultKind::Pf, 1 << 3),
            Err(PrivateFault::Shared | PrivateFault::NoTd) => return None,
        };
        self.tdx.private_faults += 1;
        let exit = self.tdx.module.config().costs.td_exit;
        self.tdx.cycles += exit;
        Some(self.fault_uncharged(kind, code, Disposition::Raised, exit))
    }

    /// The TLB tag and nested root of TD `tdr`'s private GPA translations: the VM's VPID (its
    /// ASID setting) with the paging-off PCID, and the S-EPT root as the EPTP.
    fn td_tlb_key(&self, vm: VmId, tdr: u64) -> Option<(mmu_model::TlbTag, Spa)> {
        let (root, _) = self.tdx.module.sept_root(tdr)?;
        let asid = self.vms.get(&vm).map_or(0, |i| u16::try_from(i.asid).unwrap_or(0));
        Some((mmu_model::TlbTag { asid, pcid: crate::vm::PAGING_OFF_PCID }, root))
    }

    /// Whether vCPU translations of `vm` on this CPU may use the TLB: only while the vCPU is
    /// inside its TD (entered with TDH.VP.ENTER, whose flush rule keeps the entries in step
    /// with TLB tracking); an access outside that walks every time.
    fn td_tlb_usable(&self, cpu: usize, tdr: u64) -> bool {
        self.cpus[cpu].td_vcpu.is_some_and(|v| {
            self.tdx.module.vcpu_in_guest(v) && self.tdx.module.pamt(v).owner == tdr
        })
    }

    /// A private access translated by the CPU's TLB, if it hits with the rights it needs.
    fn td_tlb_access(
        &mut self,
        cpu: usize,
        vm: VmId,
        tdr: u64,
        gpa: Gpa,
        write: bool,
    ) -> Option<Outcome> {
        if !self.td_tlb_usable(cpu, tdr) {
            return None;
        }
        let (tag, root) = self.td_tlb_key(vm, tdr)?;
        let kind = if write { mmu_model::AccessKind::Write } else { mmu_model::AccessKind::Read };
        let look = self.cpus[cpu].mmu.tlb_mut().lookup(gpa.raw(), tag, Some(root), kind);
        let hit = look.hit.filter(|h| !write || h.nested_perms.writable)?;
        let line = hit.pa.raw() >> 6;
        if self.tdx.poisoned.contains(&line) || self.tdx.foreign.contains(&line) {
            return None;
        }
        self.tdx.private_tlb_hits += 1;
        let tlb = look.latency;
        self.cycles.tlb += tlb;
        let d = self.caches.data_access(cpu, hit.pa, write);
        self.cycles.data += d;
        Some(Outcome {
            cost: tlb + d,
            timing: Timing::Access { chain: tlb + d },
            ..Outcome::default()
        })
    }

    /// Keep a private translation the S-EPT walk made (a leaf of 4K, 2M or 1G, RWX as the
    /// module grants every MAPPED leaf).
    fn td_tlb_fill(
        &mut self,
        cpu: usize,
        vm: VmId,
        tdr: u64,
        gpa: Gpa,
        t: &tdx_model::Translation,
    ) {
        if !self.td_tlb_usable(cpu, tdr) {
            return;
        }
        let Some((tag, root)) = self.td_tlb_key(vm, tdr) else { return };
        let size = match t.level {
            0 => sim_core::PageSize::K4,
            1 => sim_core::PageSize::M2,
            _ => sim_core::PageSize::G1,
        };
        let fill = mmu_model::TlbFill {
            frame: t.hpa.align_down(size),
            size,
            perms: mmu_model::Perms::ALL,
            nested_perms: mmu_model::Perms::ALL,
            global: false,
            dirty: true,
            cache: mmu_model::CheckCache::default(),
        };
        let kind = mmu_model::AccessKind::Read;
        let _ = self.cpus[cpu].mmu.tlb_mut().fill(gpa.raw(), tag, Some(root), kind, &fill);
    }

    /// TDH.VP.ENTER of `tdvpr` on `cpu` succeeded: the module flushes the TD's EPT/VPID
    /// contexts on this CPU if the vCPU last entered at an older TD epoch (a TRACK happened
    /// since), and all TD contexts if another vCPU ran on this CPU last (spec/tdx.md §3.4,
    /// `tdh_vp_enter.c`). `stale` is the epoch test, made before the entry.
    pub(super) fn td_entered(&mut self, cpu: usize, tdr: u64, tdvpr: u64, stale: bool) {
        let other = self.cpus[cpu].td_vcpu != Some(tdvpr);
        let tlb = self.cpus[cpu].mmu.tlb_mut();
        if other {
            // UNCONFIRMED scope: "all TD ASIDs"; the model flushes every guest context.
            tlb.flush(mmu_model::FlushScope::AllGuests);
            self.tdx.entry_flushes += 1;
        } else if stale && let Some((root, _)) = self.tdx.module.sept_root(tdr) {
            tlb.flush(mmu_model::FlushScope::NestedRoot(root));
            self.tdx.entry_flushes += 1;
        }
        self.cpus[cpu].td_vcpu = Some(tdvpr);
    }

    /// Whether vCPU `tdvpr` last entered at an epoch older than its TD's (so its next entry
    /// flushes).
    pub(super) fn td_epoch_stale(&self, tdvpr: u64) -> bool {
        let tdr = self.tdx.module.pamt(tdvpr).owner;
        self.tdx
            .module
            .td_state(tdr)
            .is_none_or(|td| td.vcpus.get(&tdvpr).is_none_or(|v| v.vcpu_epoch != td.epoch))
    }

    pub(super) fn tdx_clear_lines(&mut self, hpa: u64, bytes: u64) {
        let (a, b) = (hpa >> 6, (hpa + bytes) >> 6);
        let t = &mut self.tdx;
        let dead: Vec<u64> = t.poisoned.range(a..b).chain(t.foreign.range(a..b)).copied().collect();
        for l in dead {
            t.poisoned.remove(&l);
            t.foreign.remove(&l);
        }
    }

    /// Whether `hpa`'s page is TD memory (any PAMT type but NDA and RSVD).
    fn tdx_private(&self, hpa: u64) -> bool {
        !matches!(self.tdx.module.pamt(hpa).pt, PageType::Nda | PageType::Rsvd)
    }

    /// A write of `len` bytes at `hpa` from outside any TD (a host store through the direct
    /// map, or a DMA), per spec/tdx.md §1.6: on a private page, a partial-line write that is
    /// non-temporal, UC or WC, or a DMA write, poisons the line on CPUs with the erratum
    /// (`tdx.partial_write_erratum`); any write leaves the line failing the TD's integrity
    /// check unless `tdx.integrity = none` (UNCONFIRMED in the digest, §1.6 (b), (c)). Ordinary
    /// write-back stores never poison. A full-line non-write-back write to a page that is no
    /// longer private (MOVDIR64B, the page recycle rule) clears the line's poison.
    pub(super) fn tdx_outside_write(&mut self, hpa: u64, len: u64, how: OutsideWrite) {
        use sim_core::event::MemType;
        let private = self.tdx_private(hpa);
        let cfg = self.tdx.module.config();
        let (erratum, integrity) = (cfg.partial_write_erratum, cfg.integrity);
        let streaming = matches!(
            how,
            OutsideWrite::Dma | OutsideWrite::Cpu(MemType::Nt | MemType::Uc | MemType::Wc)
        );
        if private {
            match how {
                OutsideWrite::Dma => self.tdx.host_side.dma_writes += 1,
                OutsideWrite::Cpu(_) => self.tdx.host_side.cpu_writes += 1,
            }
        }
        let end = hpa + len.max(1);
        let mut line = hpa & !63;
        while line < end {
            let full = hpa <= line && end >= line + 64;
            let l = line >> 6;
            if private {
                if erratum && streaming && !full {
                    if self.tdx.poisoned.insert(l) {
                        self.tdx.host_side.poisoned_lines += 1;
                    }
                } else if integrity != tdx_model::Integrity::None {
                    self.tdx.foreign.insert(l);
                }
            } else if full && streaming {
                self.tdx.poisoned.remove(&l);
                self.tdx.foreign.remove(&l);
            }
            line += 64;
        }
    }

    /// A host read of `len` bytes at `hpa`: a machine check if a line is poisoned
    /// (fatal in the host kernel: Linux reports it as a possible kernel bug, spec/tdx.md §1.6).
    pub(super) fn tdx_outside_read(&mut self, hpa: u64, len: u64, dma: bool) -> Option<Outcome> {
        if self.tdx_private(hpa) {
            if dma {
                self.tdx.host_side.dma_reads += 1;
            } else {
                self.tdx.host_side.cpu_reads += 1;
            }
        }
        let (a, b) = (hpa >> 6, (hpa + len.max(1) + 63) >> 6);
        if dma || self.tdx.poisoned.range(a..b).next().is_none() {
            return None;
        }
        self.tdx.host_side.machine_checks += 1;
        Some(self.fault_uncharged(FaultKind::Mc, 0, Disposition::Fatal, Cycles::ZERO))
    }

    /// `vm-create tdx vm=V asid=HKID`: bind VM `V` to the TD built with that HKID.
    pub(super) fn tdx_bind_vm(&mut self, vm: VmId, hkid: u32) {
        if let Some(&tdr) = self.tdx.td_of_hkid.get(&u64::from(hkid)) {
            self.tdx.td_of_vm.insert(vm, tdr);
        }
    }

    /// `state td …`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn state_td(
        &mut self,
        tdr: Spa,
        vm: u32,
        hkid: u32,
        state: TdState,
        root: Spa,
        gpaw: u32,
        epoch: u64,
    ) -> Result<(), String> {
        let hkid = u16::try_from(hkid).map_err(|_| format!("hkid {hkid} too large"))?;
        let gpaw = u8::try_from(gpaw).map_err(|_| format!("gpaw {gpaw}"))?;
        let m = &mut self.tdx.module;
        m.create_td_direct(&mut self.tables, tdr.raw(), hkid, op_state(state), root.raw(), gpaw)
            .map_err(|e| e.to_string())?;
        if state == TdState::Teardown {
            m.set_lifecycle_direct(tdr.raw(), Lifecycle::Teardown).map_err(|e| e.to_string())?;
        }
        m.set_epoch_direct(tdr.raw(), epoch, [0, 0]).map_err(|e| e.to_string())?;
        self.tdx_claim(tdr.raw());
        self.tdx_claim(root.raw());
        self.tdx.td_of_vm.insert(vm, tdr.raw());
        self.tdx.active = true;
        Ok(())
    }

    /// `state sept …`.
    pub(super) fn state_sept(
        &mut self,
        tdr: Spa,
        gpa: Gpa,
        level: u8,
        state: SeptStateName,
        hpa: Option<Spa>,
    ) -> Result<(), String> {
        let s = sept_state(state);
        let hpa = match hpa {
            Some(h) => h.raw(),
            // A non-leaf needs a table page; a leaf state needs its page named.
            None if matches!(s, SeptState::NlMapped | SeptState::NlBlocked) => {
                self.alloc.alloc_highest_page().ok_or("out of memory for an S-EPT table")?.raw()
            }
            None if matches!(s, SeptState::Free | SeptState::Removed) => 0,
            None => return Err(format!("`state sept state={state}` needs hpa=")),
        };
        // Claim the named pages first, so that the tables made for missing levels come from
        // elsewhere.
        if hpa != 0 {
            let pages = match level {
                _ if matches!(s, SeptState::NlMapped | SeptState::NlBlocked) => 1,
                0 => 1,
                1 => 512,
                _ => 512 * 512,
            };
            for i in 0..pages {
                self.tdx_claim(hpa + i * 4096);
            }
        }
        let mut frames = TopFrames(&mut self.alloc);
        self.tdx
            .module
            .set_sept_direct(&mut self.tables, &mut frames, tdr.raw(), gpa.raw(), level, s, hpa)
            .map_err(|e| e.to_string())?;
        // KVM's mirror holds the same entry (and the levels the module made above it).
        if let Some(vm) = self.tdx.vm_of_tdr(tdr.raw()) {
            let (_, root_level) = self.tdx.module.sept_root(tdr.raw()).ok_or("no S-EPT root")?;
            for l in (level + 1)..=root_level {
                if let Some((st, h)) =
                    self.tdx.module.sept_entry(&self.tables, tdr.raw(), gpa.raw(), l)
                {
                    self.mirror_state_sept(vm, gpa.raw(), l, st, h);
                }
            }
            self.mirror_state_sept(vm, gpa.raw(), level, s, hpa);
        }
        Ok(())
    }

    /// `state pamt …`.
    pub(super) fn state_pamt(
        &mut self,
        hpa: Spa,
        pt: PamtType,
        owner: Option<Spa>,
        size: sim_core::PageSize,
        bepoch: u64,
    ) {
        let entry = tdx_model::PamtEntry {
            pt: page_type(pt),
            owner: owner.map_or(0, Spa::raw),
            bepoch,
            size,
        };
        self.tdx.module.set_pamt_direct(hpa.raw(), entry);
        self.tdx.active = true;
        if pt != PamtType::Nda {
            self.tdx_claim(hpa.raw());
        }
    }

    /// The TDX checks (`regs`, `sept`, `pamt`, `td`); `None` for other checks.
    pub(super) fn tdx_check(&self, c: &Check, last: Option<&Outcome>) -> Option<(bool, String)> {
        Some(match c {
            Check::Regs { rax, rcx, rdx, r8, r11 } => {
                let Some(r) = last.and(self.tdx.last_regs) else {
                    return Some((false, "no SEAMCALL or TDCALL before it".to_owned()));
                };
                let ok = rax.is_none_or(|v| v.0 == r.rax)
                    && rcx.is_none_or(|v| v.0 == r.rcx)
                    && rdx.is_none_or(|v| v.0 == r.rdx)
                    && r8.is_none_or(|v| v.0 == r.r8)
                    && r11.is_none_or(|v| v.0 == r.r11);
                (
                    ok,
                    format!(
                        "regs rax={:#x} rcx={:#x} rdx={:#x} r8={:#x} r11={:#x}",
                        r.rax, r.rcx, r.rdx, r.r8, r.r11
                    ),
                )
            }
            Check::Sept { tdr, gpa, level, state, hpa } => {
                let e = self.tdx.module.sept_entry(&self.tables, tdr.raw(), gpa.raw(), *level);
                let (s, h) =
                    e.map_or((Some(SeptStateName::Free), 0), |(s, h)| (sept_state_name(s), h));
                let ok = state.is_none_or(|want| s == Some(want))
                    && hpa.is_none_or(|want| want.raw() == h);
                let name =
                    s.map_or("(a state outside the vocabulary)".to_owned(), |s| s.to_string());
                (ok, format!("sept state={name} hpa={h:#x}"))
            }
            Check::Pamt { hpa, pt, owner, bepoch } => {
                let e = self.tdx.module.pamt(hpa.raw());
                let got = page_type_name(e.pt);
                let ok = pt.is_none_or(|p| p == got)
                    && owner.is_none_or(|o| o.raw() == e.owner)
                    && bepoch.is_none_or(|b| b == e.bepoch);
                (
                    ok,
                    format!(
                        "pamt pt={got} owner={:#x} bepoch={} size={}",
                        e.owner, e.bepoch, e.size
                    ),
                )
            }
            Check::Td { tdr, state, epoch, chldcnt } => match self.tdx.module.td(tdr.raw()) {
                None => (false, format!("no TD with TDR {tdr}")),
                Some(v) => {
                    let s = td_state_name(&v);
                    let ok = state.is_none_or(|w| w == s)
                        && epoch.is_none_or(|e| e == v.epoch)
                        && chldcnt.is_none_or(|c| c == v.chldcnt);
                    (
                        ok,
                        format!(
                            "td state={s} epoch={} chldcnt={} refcount={:?}",
                            v.epoch, v.chldcnt, v.refcount
                        ),
                    )
                }
            },
            _ => return None,
        })
    }

    /// The report's `tdx` section.
    pub(super) fn tdx_counts(&self) -> TdxCounts {
        let s = self.tdx.module.stats();
        TdxCounts {
            seamcalls: s.seamcalls_by_leaf,
            status: s.seamcalls_by_status,
            accepts: s.accepts_by_status,
            private_accesses: self.tdx.private_accesses,
            private_faults: self.tdx.private_faults,
            private_tlb_hits: self.tdx.private_tlb_hits,
            private_walks: self.tdx.private_walks,
            entry_flushes: self.tdx.entry_flushes,
            host_side: self.tdx.host_side,
            kvm: self.tdx.kvm_counts.clone(),
        }
    }
}
