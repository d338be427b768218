//! Hyper-V VSM under KVM (issue #9): per-VTL stage-2 tables, `vsm-protect`
//! (HvCallModifyVtlProtectionMask) under each of the three update designs of `[vsm] design`,
//! the VSM stage-2 fault path, and RMPADJUST of the VTL's VMPL on SNP.
//!
//! - **Each VTL translates through its own stage-2 tables** ([`VmPaging`]): VTL 0 through the
//!   VM's (`stage2:N`), a higher VTL through tables of its own, built on first use. All three
//!   designs give each VTL its own roots (separate address spaces, VTL bits in the MMU role,
//!   separate VMs); TLB entries keep the nested root they were made under, so VTLs never share
//!   a translation.
//! - **Fault-in** maps a GFN with its VTL's protections (NPT: W, NX; a page the VTL may not read
//!   is not mapped, so the access exits) at 2M when the VTL's attributes are uniform over the
//!   2M region and the backing allows it (a 2M guest_memfd folio with a 2M RMP entry, or a VMM
//!   THP under `vsm.vmm_thp`), else 4K — the stage-2 analogue of direct-map splitting.
//! - **A protection change** updates the VTL's attribute layer and then, per design: (a) updates
//!   the VTL address space's memslots (each deleted slot's mappings zapped whole, each update
//!   paying its SRCU synchronisation), (b)/(c) stores the attributes and zaps the stage-2 leaves
//!   covering changed pages (a 2M leaf goes whole). A zap is followed by a TLB flush: of the
//!   whole VM for (a) and (b) (one VM, one ASID, every VTL's entries), of the target VTL's VM
//!   only for (c) (INVEPT single-context of its root, as a separate VM's ASID would be).
//! - **SNP**: the paravisor (the most privileged VTL's VMPL, `vsm.vtl_vmpl`) also issues
//!   RMPADJUST for each page, target VMPL = the VTL's, mask = the VTL protections in VMPL form;
//!   the RMP's VMPL check then enforces it on every access of that VMPL.
//!
//! Not modelled: guest-virtual accesses at VTL ≥ 1 (each VTL has its own guest page tables; the
//! scenario vocabulary names only VTL 0's), EPT permissions for plain VMs (plain VMs get NPT
//! here, see `src/vm.rs`), TDs with VSM, MBEC (one execute bit in NPT: `EXEC_KERNEL` decides
//! it), the RWX `mem-attrs` uAPI.

use super::{Machine, Outcome, TableFrames, Timing};
use crate::vm::{MapFlags, VmMapError, VmPaging};
use crate::vsm::{AttrLayer, Memslots, REGION_PAGES, VsmDesign, prot, vmpl_mask};
use mmu_model::{NpfExit, NpfExitInfo1, TlbControl};
use rmp_model::RmpPageSize;
use serde::{Deserialize, Serialize};
use sim_core::event::VmKind;
use sim_core::stats::{PerSize, Series};
use sim_core::{Address, Context, Cycles, Gpa, PageSize, PrivLevel, Spa, VmId};
use std::collections::BTreeMap;

/// HV_STATUS_SUCCESS (TLFS).
pub(crate) const HV_STATUS_SUCCESS: u64 = 0;
/// HV_STATUS_INVALID_PARAMETER (TLFS): protections on non-RAM, reserved mask bits.
pub(crate) const HV_STATUS_INVALID_PARAMETER: u64 = 5;
/// HV_STATUS_ACCESS_DENIED (TLFS): a VTL placing protections on itself or a higher VTL.
pub(crate) const HV_STATUS_ACCESS_DENIED: u64 = 6;

/// RAM assumed for a VM declared without `memory=`: up to the guest page-table range.
const UNSIZED_RAM_PAGES: u64 = crate::vm::GUEST_TABLE_BASE >> 12;

/// One VTL of a VSM guest.
#[derive(Clone, Debug, Default)]
struct VtlState {
    /// Its protections.
    attrs: AttrLayer,
    /// VTL ≥ 1: its own stage-2 tables (VTL 0 uses the VM's).
    paging: Option<VmPaging>,
    /// Stage-2 leaves installed for this VTL, by first GFN: what zaps enumerate (a stale entry,
    /// a leaf another path removed, is dropped when a zap meets it).
    mapped: BTreeMap<u64, PageSize>,
    /// Its address space's memslots (design address-space-per-vtl), made on first change.
    memslots: Option<Memslots>,
}

/// A VSM guest.
#[derive(Clone, Debug, Default)]
struct VsmVm {
    vtls: BTreeMap<u8, VtlState>,
    /// VMM THP backing (`vsm.vmm_thp`), by 2M region.
    thp: BTreeMap<u64, Spa>,
}

/// The machine's VSM state.
#[derive(Clone, Debug, Default)]
pub(crate) struct VsmHost {
    vms: BTreeMap<VmId, VsmVm>,
    counts: VsmCounts,
}

/// Accesses of one VTL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VtlCounts {
    /// Guest accesses (4 KiB pieces).
    pub accesses: u64,
    /// Of which missed the TLB (walked).
    pub tlb_misses: u64,
    /// Denied by the VTL's protections (stage 2 or the RMP's VMPL check), raised to the VMM.
    pub denied: u64,
}

/// What VSM protection changes did, for the report's `vsm` section.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VsmCounts {
    /// `vsm.design` of the run.
    pub design: String,
    /// Protection changes (one `vsm-protect`, one HvCallModifyVtlProtectionMask rep call).
    pub changes: u64,
    /// Pages they named, and those whose protections changed.
    pub pages: u64,
    /// See [`VsmCounts::pages`].
    pub pages_changed: u64,
    /// Calls refused, by hypercall status (`ACCESS_DENIED`, `INVALID_PARAMETER`).
    pub refused: BTreeMap<String, u64>,
    /// Cycles of the changes (RMPADJUSTs included).
    pub cycles: u64,
    /// `cycles / changes`.
    pub cycles_per_change: f64,
    /// Stage-2 leaves zapped by changes (re-promotion zaps included).
    pub zaps: u64,
    /// TLB flushes after zaps.
    pub flushes: u64,
    /// Memslot updates (address-space-per-vtl), each with its SRCU synchronisation.
    pub memslot_ops: u64,
    /// Most memslots one VTL address space held.
    pub memslots_max: u64,
    /// 2M regions whose mixed state was recomputed (attr-arrays, vm-per-vtl).
    pub lpage_updates: u64,
    /// RMPADJUSTs issued for changes (SNP), and those that did not return SUCCESS.
    pub rmpadjusts: u64,
    /// See [`VsmCounts::rmpadjusts`].
    pub rmpadjust_failed: u64,
    /// Stage-2 fault-ins by the VSM path at 4K and at 2M.
    pub faultins_4k: u64,
    /// See [`VsmCounts::faultins_4k`].
    pub faultins_2m: u64,
    /// 4K tables zapped so that a uniform region maps at 2M again (`vsm.repromote`).
    pub repromotions: u64,
    /// 2M regions of some VTL whose pages disagree, at the end.
    pub mixed_regions: u64,
    /// Stage-2 leaves of the VSM guests' VTL tables, at the end.
    pub stage2: PerSize<u64>,
    /// The same sampled every `vsm.series_every` changes (event index, leaves per size).
    pub series: Series,
    /// Accesses by VTL.
    pub by_vtl: BTreeMap<u8, VtlCounts>,
}

/// The VTL of a guest context, if it runs at one.
pub(super) fn vtl_of(ctx: Context) -> Option<u8> {
    match ctx {
        Context::Guest { level: PrivLevel::Vtl(l), .. } => Some(l),
        Context::Guest { level: PrivLevel::Vmpl(_), .. }
        | Context::HostKernel
        | Context::HostProcess(_) => None,
    }
}

/// The stage-2 tables VTL `$vtl` of `$vm` translates through (a macro so that the borrow stays
/// on the two fields, leaving the host tables free to borrow).
macro_rules! vtl_paging {
    ($m:ident, $vm:expr, $vtl:expr) => {
        if $vtl == 0 { $m.vm_paging.get_mut(&$vm) } else { $m.vsm.paging_mut($vm, $vtl) }
    };
}

/// `gfn`'s page as a GPA.
fn gpa_of(gfn: u64) -> Gpa {
    Gpa::new_truncate(gfn << 12)
}

impl VsmHost {
    fn vtl(&mut self, vm: VmId, vtl: u8) -> &mut VtlState {
        self.vms.entry(vm).or_default().vtls.entry(vtl).or_default()
    }

    /// VTL `vtl`'s own stage-2 tables (VTL ≥ 1), if built.
    pub(super) fn paging_mut(&mut self, vm: VmId, vtl: u8) -> Option<&mut VmPaging> {
        self.vms.get_mut(&vm)?.vtls.get_mut(&vtl)?.paging.as_mut()
    }

    /// Record a stage-2 leaf installed for `vtl` of a VSM guest (no-op for other VMs).
    pub(super) fn note_map(&mut self, vm: VmId, vtl: u8, gpa: Gpa, size: PageSize) {
        if let Some(v) = self.vms.get_mut(&vm).and_then(|v| v.vtls.get_mut(&vtl)) {
            v.mapped.insert(gpa.raw() >> 12, size);
        }
    }

    /// Count a guest access of `vtl`.
    pub(super) fn note_access(&mut self, vtl: u8, walked: bool) {
        let c = self.counts.by_vtl.entry(vtl).or_default();
        c.accesses += 1;
        c.tlb_misses += u64::from(walked);
    }

    /// Free every table and backing page of `vm`'s VTLs ≥ 1.
    pub(super) fn take_vm(&mut self, vm: VmId) -> (Vec<VmPaging>, Vec<Spa>) {
        let Some(v) = self.vms.remove(&vm) else { return (Vec::new(), Vec::new()) };
        let pagings = v.vtls.into_values().filter_map(|s| s.paging).collect();
        (pagings, v.thp.into_values().collect())
    }
}

impl Machine {
    /// Make sure VTL `vtl` of `vm` has its state and, for VTL ≥ 1, its own stage-2 tables
    /// (VTL 0's are the VM's).
    pub(super) fn vsm_ensure(&mut self, vm: VmId, vtl: u8) -> Result<(), VmMapError> {
        let info = self.vms.get(&vm).copied().ok_or(VmMapError::UnknownVm { vm })?;
        self.vm_tables(vm, false)?;
        // VTL 0 translates through the VM's tables.
        self.vsm.vtl(vm, vtl);
        if vtl == 0 || self.vsm.paging_mut(vm, vtl).is_some() {
            return Ok(());
        }
        let p = VmPaging::new(
            vm,
            info.kind,
            info.asid,
            self.cfg.mmu.pte_format(),
            &mut self.tables,
            &mut buddy_frames!(self),
        )?;
        self.vsm.vtl(vm, vtl).paging = Some(p);
        Ok(())
    }

    fn vsm_refuse(&mut self, status: u64) -> Outcome {
        let name = match status {
            HV_STATUS_ACCESS_DENIED => "ACCESS_DENIED",
            _ => "INVALID_PARAMETER",
        };
        *self.vsm.counts.refused.entry(name.to_owned()).or_default() += 1;
        let cost = self.cfg.vsm.hypercall_cost;
        self.cycles.kvm += cost;
        Outcome { rc: Some((status, None)), cost, timing: Timing::Serial, ..Outcome::default() }
    }

    /// `vsm-protect`: HvCallModifyVtlProtectionMask of `pages` pages from `gpa`, setting VTL
    /// `vtl`'s protections to `mask`, issued by `ctx` (a guest VTL, or the VMM acting for one).
    /// Returns the hypercall status as the outcome's return code.
    #[allow(clippy::too_many_arguments)] // the event's fields
    pub(super) fn vsm_protect(
        &mut self,
        cpu: usize,
        ctx: Context,
        vm: VmId,
        gpa: Gpa,
        vtl: u8,
        pages: u64,
        mask: u64,
    ) -> Outcome {
        // Bad input, not a guest's mistake: the run stops with the reason.
        let Some(info) = self.vms.get(&vm).copied() else {
            self.input_error.get_or_insert(format!(
                "`vsm-protect` names VM {vm}, which does not exist (declare it with `vm {vm} KIND asid=N` or a `vm-create` event)"
            ));
            return Outcome::default();
        };
        if vtl >= crate::vsm::MAX_VTLS {
            self.input_error.get_or_insert(format!(
                "`vsm-protect` vtl={vtl}: VTLs are 0 to {}",
                crate::vsm::MAX_VTLS - 1
            ));
            return Outcome::default();
        }
        if info.kind == VmKind::Tdx {
            self.not_modelled("vsm-protect in a TD");
            return Outcome::default();
        }
        // "A VTL can only place protections on a lower VTL" (TLFS).
        if vtl_of(ctx).is_some_and(|c| vtl >= c) {
            return self.vsm_refuse(HV_STATUS_ACCESS_DENIED);
        }
        let ram = if info.memory == 0 { UNSIZED_RAM_PAGES } else { info.memory >> 12 };
        let start = gpa.raw() >> 12;
        let end = start.saturating_add(pages);
        let Ok(p) = u8::try_from(mask)
            .map_err(drop)
            .and_then(|m| if m & !prot::ALL == 0 { Ok(m) } else { Err(()) })
        else {
            return self.vsm_refuse(HV_STATUS_INVALID_PARAMETER);
        };
        // Protections on non-RAM fail (TLFS).
        if !gpa.is_aligned(PageSize::K4) || end > ram || pages == 0 {
            return self.vsm_refuse(HV_STATUS_INVALID_PARAMETER);
        }
        if let Err(e) = self.vsm_ensure(vm, vtl) {
            self.not_modelled(&format!("vsm-protect: {}", e.category()));
            return Outcome::default();
        }
        let v = &self.cfg.vsm;
        let design = v.design;
        let mut cost = v.hypercall_cost + v.vmm_exit_cost;
        self.vsm.counts.changes += 1;
        self.vsm.counts.pages += pages;
        let st = self.vsm.vtl(vm, vtl);
        let mut changed = Vec::new();
        st.attrs.set_range(start, end, p, |g| changed.push(g));
        self.vsm.counts.pages_changed += changed.len() as u64;
        let mut zapped = 0u64;
        match design {
            VsmDesign::AddressSpacePerVtl => {
                let st = self.vsm.vtl(vm, vtl);
                let slots = st.memslots.get_or_insert_with(|| Memslots::new(ram));
                let ch = slots.protect(start, end, p);
                let n = slots.len() as u64;
                let ops = ch.deleted.len() as u64 + ch.created;
                self.vsm.counts.memslot_ops += ops;
                self.vsm.counts.memslots_max = self.vsm.counts.memslots_max.max(n);
                let v = &self.cfg.vsm;
                cost += (v.memslot_op_cost + v.srcu_sync_cost).times(ops);
                for s in ch.deleted {
                    zapped += self.vsm_zap(vm, vtl, s.start, s.end);
                }
            }
            VsmDesign::AttrArrays | VsmDesign::VmPerVtl => {
                if !changed.is_empty() {
                    let regions = {
                        let mut r: Vec<u64> = changed.iter().map(|g| g / REGION_PAGES).collect();
                        r.dedup();
                        r.len() as u64
                    };
                    self.vsm.counts.lpage_updates += regions;
                    let v = &self.cfg.vsm;
                    cost += v.attr_call_cost
                        + v.attr_page_cost.times(changed.len() as u64)
                        + v.lpage_update_cost.times(regions);
                    // Zap the leaves covering changed pages, one run of consecutive GFNs at a
                    // time.
                    let mut i = 0;
                    while i < changed.len() {
                        let mut j = i + 1;
                        while j < changed.len() && changed[j] == changed[j - 1] + 1 {
                            j += 1;
                        }
                        zapped += self.vsm_zap(vm, vtl, changed[i], changed[j - 1] + 1);
                        i = j;
                    }
                }
            }
        }
        // Re-promotion: a region the change left uniform loses its 4K table.
        if self.cfg.vsm.repromote && !changed.is_empty() {
            let first = start / REGION_PAGES;
            let last = (end - 1) / REGION_PAGES;
            for r in first..=last {
                if !self.vsm.vtl(vm, vtl).attrs.uniform(r) {
                    continue;
                }
                let base = r * REGION_PAGES;
                let Some(pg) = vtl_paging!(self, vm, vtl) else { continue };
                let Some(n) =
                    pg.stage2_zap_table(&mut self.tables, &mut buddy_frames!(self), gpa_of(base))
                else {
                    continue;
                };
                let st = self.vsm.vtl(vm, vtl);
                let gone: Vec<u64> =
                    st.mapped.range(base..base + REGION_PAGES).map(|(&g, _)| g).collect();
                for g in gone {
                    st.mapped.remove(&g);
                }
                self.vsm.counts.repromotions += 1;
                zapped += n.max(1);
            }
        }
        if zapped > 0 {
            self.vsm.counts.zaps += zapped;
            cost += self.cfg.vsm.zap_leaf_cost.times(zapped);
            cost += self.vsm_flush(vm, vtl, design);
        }
        self.cycles.kvm += cost;
        // SNP: the paravisor makes the VMPL masks say the same (RMPADJUST per page, priced by
        // the machine's RMPADJUST path and counted under rmp_instr).
        if info.kind == VmKind::Snp {
            cost += self.vsm_rmpadjust(cpu, ctx, vm, vtl, start, end, p);
        }
        self.vsm.counts.cycles += cost.get();
        if self.vsm.counts.changes.is_multiple_of(self.cfg.vsm.series_every) {
            let s = self.vsm_stage2_leaves();
            self.vsm.counts.series.sample(self.events, s);
        }
        Outcome {
            rc: Some((HV_STATUS_SUCCESS, None)),
            cost,
            timing: Timing::Serial,
            ..Outcome::default()
        }
    }

    /// RMPADJUST of each page of `start..end` to VTL `vtl`'s VMPL with protections `p`, by the
    /// paravisor.
    #[allow(clippy::too_many_arguments)]
    fn vsm_rmpadjust(
        &mut self,
        cpu: usize,
        ctx: Context,
        vm: VmId,
        vtl: u8,
        start: u64,
        end: u64,
        p: u8,
    ) -> Cycles {
        let Some(target) = self.cfg.vsm.vmpl_of(vtl) else {
            self.not_modelled("vsm-protect of a VTL with no VMPL in vsm.vtl_vmpl (SNP)");
            return Cycles::ZERO;
        };
        let vcpu = match ctx {
            Context::Guest { vcpu, .. } => vcpu,
            Context::HostKernel | Context::HostProcess(_) => 0,
        };
        let level = PrivLevel::Vmpl(self.cfg.vsm.paravisor_vmpl());
        let pctx = Context::Guest { vm, vcpu, level };
        let op = super::GuestRmpOp::Rmpadjust {
            size: PageSize::K4,
            vmpl: target,
            perms: u64::from(vmpl_mask(p)),
            vmsa: false,
        };
        let mut cost = Cycles::ZERO;
        for g in start..end {
            let o = self.guest_rmp_instr(cpu, pctx, vm, Address::Gpa(gpa_of(g)), op);
            self.vsm.counts.rmpadjusts += 1;
            if o.rc.is_none_or(|(rc, _)| rc != 0) {
                self.vsm.counts.rmpadjust_failed += 1;
            }
            cost += o.cost;
        }
        cost
    }

    /// Zap VTL `vtl`'s stage-2 leaves covering GFNs `start..end` (a 2M leaf goes whole); the
    /// leaves removed.
    fn vsm_zap(&mut self, vm: VmId, vtl: u8, start: u64, end: u64) -> u64 {
        if end - start <= REGION_PAGES {
            return self.vsm_zap_lookup(vm, vtl, start, end);
        }
        let st = self.vsm.vtl(vm, vtl);
        let from = start - start % REGION_PAGES;
        let hit: Vec<(u64, PageSize)> = st
            .mapped
            .range(from..end)
            .map(|(&g, &s)| (g, s))
            .filter(|&(g, s)| g >= start || g + s.pages_4k() > start)
            .collect();
        for (g, _) in &hit {
            st.mapped.remove(g);
        }
        let mut n = 0;
        let Some(pg) = vtl_paging!(self, vm, vtl) else { return 0 };
        for (g, s) in hit {
            if let Ok((tok, _)) = pg.stage2_unmap(&mut self.tables, gpa_of(g), s) {
                // The caller flushes after the zap (vsm_flush).
                tok.ignore();
                n += 1;
            }
        }
        n
    }

    /// [`Machine::vsm_zap`] of a short range by stage-2 lookups, so that leaves other paths
    /// installed (a scenario's `state map`, KVM's own fault-in) are zapped too.
    fn vsm_zap_lookup(&mut self, vm: VmId, vtl: u8, start: u64, end: u64) -> u64 {
        let mut n = 0;
        let mut g = start;
        while g < end {
            let Some(pg) = vtl_paging!(self, vm, vtl) else { return n };
            let size = match pg.stage2_lookup_or_gap(&self.tables, gpa_of(g)) {
                Ok((_, size)) => size,
                Err(gap) => {
                    // No leaf in the next `gap` bytes (a missing table, a run of not-present
                    // entries): nothing to zap there.
                    g += (gap >> 12).max(1);
                    continue;
                }
            };
            let first = g - g % size.pages_4k();
            if let Ok((tok, _)) = pg.stage2_unmap(&mut self.tables, gpa_of(first), size) {
                // The caller flushes after the zap (vsm_flush).
                tok.ignore();
                n += 1;
            }
            if let Some(st) = self.vsm.vms.get_mut(&vm).and_then(|v| v.vtls.get_mut(&vtl)) {
                st.mapped.remove(&first);
            }
            g = first + size.pages_4k();
        }
        n
    }

    /// The TLB flush after a zap: every VTL's entries of the VM (one VM, one ASID) for the
    /// address-space and attribute-array designs; only the target VTL VM's for vm-per-vtl.
    fn vsm_flush(&mut self, vm: VmId, vtl: u8, design: VsmDesign) -> Cycles {
        self.vsm.counts.flushes += 1;
        self.tlb_flushes += 1;
        match design {
            VsmDesign::AddressSpacePerVtl | VsmDesign::AttrArrays => {
                let asid = self.vms.get(&vm).map_or(0, |i| u16::try_from(i.asid).unwrap_or(0));
                for c in &mut self.cpus {
                    self.tlb_invalidated += c.mmu.svm_tlb_control(asid, TlbControl::FlushAsid).tlb;
                }
            }
            VsmDesign::VmPerVtl => {
                if let Some(root) = vtl_paging!(self, vm, vtl).map(|p| p.private_root()) {
                    for c in &mut self.cpus {
                        self.tlb_invalidated +=
                            c.mmu.invept(mmu_model::Invept::SingleContext { root }).tlb;
                    }
                }
            }
        }
        self.cfg.vsm.remote_flush_cost
    }

    /// Stage-2 leaves of every VTL table of the VSM guests.
    fn vsm_stage2_leaves(&self) -> PerSize<u64> {
        let mut s = PerSize::default();
        for (vm, v) in &self.vsm.vms {
            for (&l, st) in &v.vtls {
                let p = if l == 0 { self.vm_paging.get(vm) } else { st.paging.as_ref() };
                if let Some(p) = p {
                    let c = p.stage2_leaves();
                    for z in PageSize::ALL {
                        s[z] += c[z];
                    }
                }
            }
        }
        s
    }

    /// The report's `vsm` section.
    pub(super) fn vsm_counts(&self) -> VsmCounts {
        let mut c = self.vsm.counts.clone();
        c.design = self.cfg.vsm.design.name().to_owned();
        #[allow(clippy::cast_precision_loss)]
        if c.changes > 0 {
            c.cycles_per_change = c.cycles as f64 / c.changes as f64;
        }
        c.stage2 = self.vsm_stage2_leaves();
        c.mixed_regions = self
            .vsm
            .vms
            .values()
            .flat_map(|v| v.vtls.values())
            .map(|s| s.attrs.mixed_regions())
            .sum();
        c
    }

    /// An #NPF of a VTL agent: KVM's VSM fault path. `Some(cost)` when handled (the access
    /// retries); `None` to raise it — a denied access (a permission fault, a page the VTL may
    /// not read, a VMPL violation) goes to the VMM as the hardware reported it.
    pub(super) fn vsm_handle_npf(
        &mut self,
        cpu: usize,
        vm: VmId,
        vtl: u8,
        n: &NpfExit,
    ) -> Option<Cycles> {
        if self.cfg.host.kvm_faults == crate::host::config::KvmFaults::Raise {
            return None;
        }
        let info = *self.vms.get(&vm)?;
        let gfn = n.gpa.raw() >> 12;
        let private = n.info1.contains(NpfExitInfo1::ENC);
        let mut cost = self.cfg.host.vmexit_cost;
        if n.info1.contains(NpfExitInfo1::RMP) {
            if n.info1.contains(NpfExitInfo1::VMPL) {
                self.vsm.counts.by_vtl.entry(vtl).or_default().denied += 1;
                return None;
            }
            // sev_handle_rmp_fault's PSMASH, against this VTL's stage-2 leaf.
            let (spa, leaf) = vtl_paging!(self, vm, vtl)?.stage2_lookup(&self.tables, n.gpa)?;
            let e = self.rmp.entry(spa);
            if e.assigned
                && e.page_size == RmpPageSize::M2
                && (n.info1.contains(NpfExitInfo1::SIZEM) || leaf == PageSize::K4)
            {
                cost += self.kvm_psmash(cpu, spa);
                return Some(self.handled(cost));
            }
            if vtl == 0 {
                return self.kvm_handle_npf(cpu, vm, n);
            }
            return None;
        }
        if n.info1.contains(NpfExitInfo1::PRESENT) {
            // A stage-2 permission fault: the VTL's protections deny the access.
            self.vsm.counts.by_vtl.entry(vtl).or_default().denied += 1;
            return None;
        }
        // On SNP the RMP's VMPL masks enforce the protections (RMPADJUST, below): stage 2 maps
        // with every permission. Otherwise stage 2 carries them.
        let p =
            if info.kind == VmKind::Snp { prot::ALL } else { self.vsm.vtl(vm, vtl).attrs.get(gfn) };
        if p & prot::READ == 0 {
            self.vsm.counts.by_vtl.entry(vtl).or_default().denied += 1;
            return None;
        }
        if info.kind == VmKind::Snp && private != self.attr_private(vm, gfn) {
            cost += self.implicit_conversion(cpu, vm, gfn, private);
        }
        cost += self.cfg.vsm.fault_in_cost + self.vsm_fault_in(cpu, vm, vtl, gfn, p)?;
        Some(self.handled(cost))
    }

    /// Map `gfn` in VTL `vtl`'s stage 2 with protections `p`: 2M when the VTL's attributes
    /// and the private/shared attribute are uniform over the region and the backing is a 2M
    /// page (and no 4K table is in the way), else 4K.
    fn vsm_fault_in(&mut self, cpu: usize, vm: VmId, vtl: u8, gfn: u64, p: u8) -> Option<Cycles> {
        let info = *self.vms.get(&vm)?;
        let region = gfn / REGION_PAGES;
        let base = region * REGION_PAGES;
        let mut cost = Cycles::ZERO;
        let private = self.attr_private(vm, gfn);
        let shared_in_region = self.kvm.get(&vm).map_or(0, |k| k.shared_count(base, REGION_PAGES));
        let attr_uniform = if info.kind == VmKind::Snp {
            shared_in_region == 0 || shared_in_region as u64 == REGION_PAGES
        } else {
            true
        };
        let (spa, big): (Spa, Option<Spa>) = if let Some(spa) = self.adopted(vm, gfn) {
            (spa, None)
        } else if private {
            let (fbase, folio, c) = self.gmem_folio(cpu, vm, gfn)?;
            cost += c + self.gmem_prepare(cpu, info, fbase, folio, gfn);
            let spa = Spa::new_truncate(folio.spa.raw() + ((gfn - fbase) << 12));
            let e = self.rmp.entry(spa);
            let big = (folio.order == 9 && e.assigned && e.page_size == RmpPageSize::M2)
                .then_some(folio.spa);
            (spa, big)
        } else if let Some(s) = self.kvm.get(&vm).and_then(|k| k.vmm_page(gfn)) {
            (s, None)
        } else if self.cfg.vsm.vmm_thp {
            let blk = match self.vsm.vms.get(&vm).and_then(|v| v.thp.get(&region)) {
                Some(&b) => b,
                None => {
                    let Some(b) = self.alloc.alloc(9) else {
                        self.not_modelled("VSM VMM THP with host memory exhausted");
                        return None;
                    };
                    self.vsm.vms.entry(vm).or_default().thp.insert(region, b);
                    b
                }
            };
            (Spa::new_truncate(blk.raw() + ((gfn - base) << 12)), Some(blk))
        } else {
            // A 4K VMM page, as KVM's plain shared fault-in gives it.
            return self.vmm_fault_in_vtl(vm, vtl, gfn, p).map(|c| cost + c);
        };
        let f = MapFlags {
            w: p & prot::WRITE != 0,
            x: p & prot::EXEC_KERNEL != 0,
            user: true,
            enc: false,
        };
        let uniform = attr_uniform && self.vsm.vtl(vm, vtl).attrs.uniform(region);
        if let Some(blk) = big.filter(|_| uniform) {
            let pg = vtl_paging!(self, vm, vtl)?;
            let r = pg.stage2_map(
                &mut self.tables,
                &mut buddy_frames!(self),
                gpa_of(base),
                blk,
                PageSize::M2,
                f,
            );
            if r.is_ok() {
                self.vsm.note_map(vm, vtl, gpa_of(base), PageSize::M2);
                self.vsm.counts.faultins_2m += 1;
                self.kvm_counts.stage2_2m_maps += 1;
                return Some(cost);
            }
            // A table of 4K leaves is in the way (the region was mixed and no re-promotion
            // removed it): 4K.
        }
        self.vtl_map_4k(vm, vtl, gfn, spa, f)?;
        Some(cost)
    }

    /// Map `gfn` to `spa` at 4K with `f` in VTL `vtl`'s stage 2, noted and counted as a 4K
    /// fault-in (`None`: the stage 2 is missing or refuses the mapping).
    fn vtl_map_4k(&mut self, vm: VmId, vtl: u8, gfn: u64, spa: Spa, f: MapFlags) -> Option<()> {
        let pg = vtl_paging!(self, vm, vtl)?;
        pg.stage2_map(
            &mut self.tables,
            &mut buddy_frames!(self),
            gpa_of(gfn),
            spa,
            PageSize::K4,
            f,
        )
        .ok()?;
        self.vsm.note_map(vm, vtl, gpa_of(gfn), PageSize::K4);
        self.vsm.counts.faultins_4k += 1;
        Some(())
    }

    /// A 4K page of VMM memory for `gfn` (shared with KVM's own shared fault-in), mapped in
    /// VTL `vtl`'s stage 2.
    fn vmm_fault_in_vtl(&mut self, vm: VmId, vtl: u8, gfn: u64, p: u8) -> Option<Cycles> {
        let spa = match self.kvm.get(&vm).and_then(|k| k.vmm_page(gfn)) {
            Some(s) => s,
            None => {
                let Some(s) = self.alloc.alloc(0) else {
                    self.not_modelled("VMM memory allocation with host memory exhausted");
                    return None;
                };
                self.kvm.entry(vm).or_default().vmm_insert(gfn, s);
                s
            }
        };
        let f = MapFlags {
            w: p & prot::WRITE != 0,
            x: p & prot::EXEC_KERNEL != 0,
            user: true,
            enc: false,
        };
        self.vtl_map_4k(vm, vtl, gfn, spa, f)?;
        Some(Cycles::ZERO)
    }

    /// VM teardown: VTL tables and VMM THPs go back to the allocator.
    pub(super) fn vsm_destroy(&mut self, vm: VmId) {
        let (pagings, thps) = self.vsm.take_vm(vm);
        for p in pagings {
            p.destroy(&mut self.tables, &mut buddy_frames!(self));
        }
        for b in thps {
            let _ = self.alloc.free(b, 9);
        }
    }
}
