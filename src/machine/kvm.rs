//! KVM and the VMM around SEV-SNP guests (spec/snp.md §4.5): memory attributes
//! (KVM_SET_MEMORY_ATTRIBUTES), guest_memfd backing with `sev_gmem_prepare` and
//! `sev_gmem_invalidate`, the #NPF handler (fault-in, `sev_handle_rmp_fault`'s PSMASH, implicit
//! conversions through the VMM), page-state changes (GHCB PSC, MSR protocol) and
//! SNP_LAUNCH_UPDATE by GPA.
//!
//! What a real host does that the model leaves out: memslots (every GPA of a VM is RAM), the
//! MMU notifier, KVM's own locking. Every RMPUPDATE and PSMASH goes through the machine's
//! instruction paths, so the physmap policy and `rmp.tlb_on_update` apply to them.

use super::{Machine, Outcome, TableFrames, Timing, VmInfo};
use crate::host::config::{KvmFaults, PhysmapPolicy};
use mmu_model::{NpfExit, NpfExitInfo1, TlbControl};
use rmp_model::{Executor, LaunchPageType, LaunchUpdate, RmpPageSize, SnpFwStatus, SnpInit};
use rustc_hash::FxHashMap;
use sim_core::event::{CpaOp, PscOp, SnpFwCmd, VmKind};
use sim_core::{Cycles, Gpa, PageSize, Spa, VmId};
use std::collections::{BTreeMap, BTreeSet};

/// `KVM_MEMORY_ATTRIBUTE_PRIVATE` (include/uapi/linux/kvm.h: bit 3).
pub(crate) const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = 1 << 3;

/// Most entries of one GHCB page-state-change request (spec/snp.md §4.5, [K-ghcb]).
pub(crate) const PSC_MAX_ENTRIES: u64 = 253;

/// Retries of one guest access after handled exits before the model gives up and raises the
/// last exit (a handler that does not make progress would otherwise loop).
pub(crate) const MAX_RETRIES: u32 = 4;

/// One guest_memfd folio.
#[derive(Debug, Clone, Copy)]
pub(super) struct Folio {
    pub(super) spa: Spa,
    pub(super) order: u8,
    /// Pages of the folio still populated (not punched out).
    live: u16,
    /// The folio was removed from the direct map (`gmem-no-direct-map`).
    unmapped: bool,
}

/// KVM's and the VMM's state of one VM.
#[derive(Clone, Debug, Default)]
pub(crate) struct KvmVm {
    /// The guest context page the firmware keeps for the VM (SNP_GCTX_CREATE).
    gctx: Option<Spa>,
    /// Each vCPU's VMSA page (made at its first VMRUN).
    vmsa: BTreeMap<u32, Spa>,
    /// GFNs whose attribute is shared. For an SNP VM every other GFN is private: the VMM (QEMU)
    /// makes all guest RAM private when it creates a confidential guest.
    shared: BTreeSet<u64>,
    /// guest_memfd folios, by first GFN. A hash map: a fault-in looks its folio up and a new
    /// one is inserted on every first touch (a B-tree insert was ~1,000 instructions of a
    /// 16-guest launch's ~9,000 per PVALIDATE); the one walk over them, at teardown, sorts.
    folios: FxHashMap<u64, Folio>,
    /// The VMM's (shared) backing pages, by GFN.
    vmm: BTreeMap<u64, Spa>,
    /// Memory a scenario or trace mapped in stage 2 itself (`map`/`state map space=stage2:N`),
    /// by first GFN: (first SPA, size). KVM treats it as the guest's memory — what it faults
    /// back in after a zap, and what a conversion to shared invalidates — without owning it.
    adopted: BTreeMap<u64, (Spa, PageSize)>,
}

/// What KVM did, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KvmCounts {
    /// Guest exits KVM handled (#NPF), each followed by a retry of the access.
    pub exits_handled: u64,
    /// Pages faulted in from guest_memfd (private).
    pub private_faultins: u64,
    /// Pages faulted in from VMM memory (shared).
    pub shared_faultins: u64,
    /// Stage-2 mappings installed at 2M.
    pub stage2_2m_maps: u64,
    /// `sev_gmem_prepare` RMPUPDATEs at 4K and at 2M.
    pub prepare_4k: u64,
    /// See [`KvmCounts::prepare_4k`].
    pub prepare_2m: u64,
    /// `sev_gmem_invalidate` RMPUPDATEs to shared (4K and 2M together).
    pub invalidate: u64,
    /// PSMASHes by `sev_handle_rmp_fault` and `sev_gmem_invalidate`.
    pub psmash: u64,
    /// Implicit conversions: an access whose C-bit disagreed with the GPA's attribute, exited
    /// to the VMM (KVM_EXIT_MEMORY_FAULT), which converted the page.
    pub implicit_conversions: u64,
    /// Page-state-change requests (VMGEXIT) and the pages they named.
    pub psc_requests: u64,
    /// See [`KvmCounts::psc_requests`].
    pub psc_pages: u64,
    /// Pages whose memory attribute changed.
    pub attribute_changes: u64,
    /// Stage-2 leaves zapped by attribute changes.
    pub zaps: u64,
    /// guest_memfd folios allocated and freed.
    pub gmem_allocs: u64,
    /// See [`KvmCounts::gmem_allocs`].
    pub gmem_frees: u64,
    /// SNP firmware commands by status name (`SUCCESS`, `INVALID_PAGE_STATE`, …).
    pub fw_status: std::collections::BTreeMap<String, u64>,
    /// VMRUNs of SNP vCPUs, and those that failed the VMSA check (VMEXIT_INVALID).
    pub vmruns: u64,
    /// See [`KvmCounts::vmruns`].
    pub vmrun_invalid: u64,
}

/// The GPA KVM gives a VMSA page in the RMP (`INITIAL_VMSA_GPA` in arch/x86/kvm/svm/sev.c: the
/// VMSA has no guest mapping).
const INITIAL_VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

impl KvmVm {
    /// Make `gfn`'s attribute shared.
    pub(super) fn shared_insert(&mut self, gfn: u64) {
        self.shared.insert(gfn);
    }

    /// Whether `gfn`'s attribute is shared.
    pub(super) fn is_shared(&self, gfn: u64) -> bool {
        self.shared.contains(&gfn)
    }

    /// Make `gfn`'s attribute private again; whether it was shared.
    pub(super) fn shared_remove(&mut self, gfn: u64) -> bool {
        self.shared.remove(&gfn)
    }

    /// How many of the `n` GFNs from `gfn` have the shared attribute.
    pub(super) fn shared_count(&self, gfn: u64, n: u64) -> usize {
        self.shared.range(gfn..gfn.saturating_add(n)).count()
    }

    /// Give `gfn` a VMM (shared) backing page.
    pub(super) fn vmm_insert(&mut self, gfn: u64, spa: Spa) {
        self.vmm.insert(gfn, spa);
    }

    /// The VMM's (shared) backing page of `gfn`, if it has one.
    pub(super) fn vmm_page(&self, gfn: u64) -> Option<Spa> {
        self.vmm.get(&gfn).copied()
    }
}

impl Machine {
    /// The attribute of `gfn`: private for an SNP VM unless set shared.
    pub(super) fn attr_private(&self, vm: VmId, gfn: u64) -> bool {
        let snp = self.vms.get(&vm).is_some_and(|i| i.kind == VmKind::Snp);
        snp && !self.kvm.get(&vm).is_some_and(|k| k.shared.contains(&gfn))
    }

    /// KVM's #NPF handler. `Some(cost)` when it handled the exit and the access should retry;
    /// `None` when the exit is raised as it is (`host.kvm_faults = raise`, or nothing KVM does
    /// applies: a permission fault, an unknown VM).
    pub(super) fn kvm_handle_npf(&mut self, cpu: usize, vm: VmId, n: &NpfExit) -> Option<Cycles> {
        if self.cfg.host.kvm_faults == KvmFaults::Raise {
            return None;
        }
        let info = *self.vms.get(&vm)?;
        let gfn = n.gpa.raw() >> 12;
        // The effective C-bit of the access (EXITINFO1 bit 34), which KVM turns into
        // PFERR_PRIVATE_ACCESS for SNP guests.
        let private = n.info1.contains(NpfExitInfo1::ENC);
        let mut cost = self.cfg.host.vmexit_cost;
        if n.info1.contains(NpfExitInfo1::RMP) {
            // sev_handle_rmp_fault: only the cases that need a PSMASH are KVM's — a SIZEM
            // fault, or a stage-2 leaf smaller than the 2M RMP entry behind it.
            let (spa, leaf) = self.vm_paging.get(&vm)?.stage2_lookup(&self.tables, n.gpa)?;
            let e = self.rmp.entry(spa);
            let rmp_2m = e.assigned && e.page_size == RmpPageSize::M2;
            if rmp_2m && (n.info1.contains(NpfExitInfo1::SIZEM) || leaf == PageSize::K4) {
                cost += self.kvm_psmash(cpu, spa);
                // Then `kvm_zap_gfn_range(kvm, gfn, gfn + PTRS_PER_PMD)`: a 2M stage-2 leaf
                // over the now-4K RMP entries would fail every access's page-size check, so
                // the stage-2 mappings go and the retry faults them in at 4K.
                cost += self.zap_stage2_range(vm, gfn, 512);
                return Some(self.handled(cost));
            }
            // A private access to a shared GPA, or a shared write to a private one: the VMM
            // converts the page (implicit conversion) and the access retries.
            if info.kind == VmKind::Snp && private != self.attr_private(vm, gfn) {
                cost += self.implicit_conversion(cpu, vm, gfn, private);
                return Some(self.handled(cost));
            }
            return None;
        }
        if n.info1.contains(NpfExitInfo1::PRESENT) {
            // A stage-2 permission fault: not KVM's to fix here.
            return None;
        }
        if info.kind == VmKind::Snp && private != self.attr_private(vm, gfn) {
            cost += self.implicit_conversion(cpu, vm, gfn, private);
        }
        cost += if self.attr_private(vm, gfn) {
            self.gmem_fault_in(cpu, vm, info, gfn)?
        } else {
            self.vmm_fault_in(vm, gfn)?
        };
        Some(self.handled(cost))
    }

    /// KVM's EPT-violation handler for a TD's **shared** GPA (the direct root, spec/tdx.md
    /// §1.2): a non-present shared-EPT entry of a GFN whose attribute is shared is faulted in
    /// from the VMM's memory, and the access retries. `None` (raised as it is) for
    /// `host.kvm_faults = raise`, a permission fault, a GPA without the shared bit, or a GFN whose
    /// attribute is private: KVM exits to the VMM with KVM_EXIT_MEMORY_FAULT there, and the
    /// VMM's implicit conversion to shared is not modelled.
    pub(super) fn kvm_handle_td_shared_ept(
        &mut self,
        vm: VmId,
        v: &mmu_model::EptViolation,
    ) -> Option<Cycles> {
        use mmu_model::EptQualification as Q;
        if self.cfg.host.kvm_faults == KvmFaults::Raise {
            return None;
        }
        let bit = self.tdx.shared_bit(self.tdx.tdr_of(vm)?);
        let gpa = v.gpa.raw();
        if gpa & bit == 0 || v.qual.intersects(Q::READABLE | Q::WRITABLE | Q::EXECUTABLE) {
            return None;
        }
        // KVM looks the attribute up by the GFN without the shared bit.
        if !self.kvm.get(&vm).is_some_and(|k| k.is_shared((gpa & !bit) >> 12)) {
            return None;
        }
        let cost = self.cfg.host.vmexit_cost + self.vmm_fault_in(vm, gpa >> 12)?;
        Some(self.handled(cost))
    }

    pub(super) fn handled(&mut self, cost: Cycles) -> Cycles {
        self.kvm_counts.exits_handled += 1;
        self.cycles.kvm += cost;
        cost
    }

    /// KVM_EXIT_MEMORY_FAULT: the VMM converts `gfn` to what the access wanted.
    pub(super) fn implicit_conversion(
        &mut self,
        cpu: usize,
        vm: VmId,
        gfn: u64,
        private: bool,
    ) -> Cycles {
        self.kvm_counts.implicit_conversions += 1;
        self.cfg.host.user_exit_cost + self.set_attributes(cpu, vm, gfn, 1, private)
    }

    /// A private page from guest_memfd: allocate the folio if needed, prepare it
    /// (`sev_gmem_prepare`: RMPUPDATE to private at 2M when the folio is 2M and all 512 pages
    /// are unassigned, else at 4K), and map it in stage 2 at the smaller of the folio and the
    /// RMP entry (`sev_gmem_max_mapping_level`).
    fn gmem_fault_in(&mut self, cpu: usize, vm: VmId, info: VmInfo, gfn: u64) -> Option<Cycles> {
        if let Some(spa) = self.adopted(vm, gfn) {
            // Memory the input mapped itself: prepared at 4K if it is not private yet, mapped
            // back at 4K.
            let mut cost = Cycles::ZERO;
            if !self.rmp.entry(spa).assigned {
                self.kvm_counts.prepare_4k += 1;
                let g = Gpa::new_truncate(gfn << 12);
                cost += self.rmpupdate(cpu, spa, PageSize::K4, true, info.asid, g, false).cost;
            }
            if !self.kvm_stage2_map(vm, Gpa::new_truncate(gfn << 12), spa, PageSize::K4) {
                return None;
            }
            self.kvm_counts.private_faultins += 1;
            return Some(cost);
        }
        let (base_gfn, folio, mut cost) = self.gmem_folio(cpu, vm, gfn)?;
        let spa = Spa::new_truncate(folio.spa.raw() + ((gfn - base_gfn) << 12));
        cost += self.gmem_prepare(cpu, info, base_gfn, folio, gfn);
        let e = self.rmp.entry(spa);
        // KVM maps at 2M only when all 512 GFNs share the private attribute.
        let uniform = folio.order == 9
            && self
                .kvm
                .get(&vm)
                .is_none_or(|k| k.shared.range(base_gfn..base_gfn + 512).next().is_none());
        let size = if uniform && e.assigned && e.page_size == RmpPageSize::M2 {
            PageSize::M2
        } else {
            PageSize::K4
        };
        let (gpa, at) = if size == PageSize::M2 {
            (Gpa::new_truncate(base_gfn << 12), folio.spa)
        } else {
            (Gpa::new_truncate(gfn << 12), spa)
        };
        if !self.kvm_stage2_map(vm, gpa, at, size) {
            return None;
        }
        self.kvm_counts.private_faultins += 1;
        if self.cfg.host.policy == PhysmapPolicy::GmemNoDirectMap && !folio.unmapped {
            // guest_memfd NO_DIRECT_MAP: the folio leaves the direct map when it is first
            // mapped for the guest.
            let pages = 1u64 << folio.order;
            cost += self.cpa(cpu, CpaOp::DirectMapInvalid, folio.spa, pages);
            cost += self.flush_dm_range(cpu, folio.spa, pages);
            if let Some(f) = self.kvm.get_mut(&vm).and_then(|k| k.folios.get_mut(&base_gfn)) {
                f.unmapped = true;
            }
        }
        Some(cost)
    }

    /// Record a stage-2 mapping made by the input (see [`KvmVm::adopted`]).
    pub(super) fn kvm_adopt(&mut self, vm: VmId, gpa: Gpa, spa: Spa, size: PageSize) {
        self.kvm.entry(vm).or_default().adopted.insert(gpa.raw() >> 12, (spa, size));
    }

    /// The host page an input-made stage-2 mapping gave `gfn`, if any.
    pub(super) fn adopted(&self, vm: VmId, gfn: u64) -> Option<Spa> {
        let (&first, &(spa, size)) = self.kvm.get(&vm)?.adopted.range(..=gfn).next_back()?;
        (gfn - first < size.pages_4k())
            .then(|| Spa::new_truncate(spa.raw() + ((gfn - first) << 12)))
    }

    /// The folio holding `gfn`, allocated (order `host.gmem_folio_order`) if there is none.
    pub(super) fn gmem_folio(
        &mut self,
        _cpu: usize,
        vm: VmId,
        gfn: u64,
    ) -> Option<(u64, Folio, Cycles)> {
        let order = self.cfg.host.gmem_folio_order;
        let base = gfn & !((1u64 << order) - 1);
        if let Some(f) = self.kvm.get(&vm).and_then(|k| k.folios.get(&base)) {
            return Some((base, *f, Cycles::ZERO));
        }
        let Some(spa) = self.alloc.alloc(order) else {
            self.not_modelled("guest_memfd allocation with host memory exhausted");
            return None;
        };
        self.kvm_counts.gmem_allocs += 1;
        let f = Folio { spa, order, live: 1 << order, unmapped: false };
        self.kvm.entry(vm).or_default().folios.insert(base, f);
        Some((base, f, Cycles::ZERO))
    }

    /// `sev_gmem_prepare` for the page of `gfn` in `folio`.
    pub(super) fn gmem_prepare(
        &mut self,
        cpu: usize,
        info: VmInfo,
        base_gfn: u64,
        folio: Folio,
        gfn: u64,
    ) -> Cycles {
        let spa = Spa::new_truncate(folio.spa.raw() + ((gfn - base_gfn) << 12));
        if self.rmp.entry(spa).assigned {
            return Cycles::ZERO;
        }
        let whole = folio.order == 9 && !self.rmp.region_has_assigned(folio.spa);
        let (at, gpa, size) = if whole {
            self.kvm_counts.prepare_2m += 1;
            (folio.spa, Gpa::new_truncate(base_gfn << 12), PageSize::M2)
        } else {
            self.kvm_counts.prepare_4k += 1;
            (spa, Gpa::new_truncate(gfn << 12), PageSize::K4)
        };
        self.rmpupdate(cpu, at, size, true, info.asid, gpa, false).cost
    }

    /// A shared page from the VMM's memory.
    fn vmm_fault_in(&mut self, vm: VmId, gfn: u64) -> Option<Cycles> {
        let spa = match self.kvm.get(&vm).and_then(|k| k.vmm.get(&gfn)) {
            Some(s) => *s,
            None => {
                let Some(s) = self.alloc.alloc(0) else {
                    self.not_modelled("VMM memory allocation with host memory exhausted");
                    return None;
                };
                self.kvm.entry(vm).or_default().vmm.insert(gfn, s);
                s
            }
        };
        if !self.kvm_stage2_map(vm, Gpa::new_truncate(gfn << 12), spa, PageSize::K4) {
            return None;
        }
        self.kvm_counts.shared_faultins += 1;
        Some(Cycles::ZERO)
    }

    fn kvm_stage2_map(&mut self, vm: VmId, gpa: Gpa, spa: Spa, size: PageSize) -> bool {
        if self.vm_tables(vm, false).is_err() {
            return false;
        }
        let f = crate::vm::MapFlags { w: true, x: true, user: true, enc: false };
        let Some(p) = self.vm_paging.get_mut(&vm) else { return false };
        let ok =
            p.stage2_map(&mut self.tables, &mut buddy_frames!(self), gpa, spa, size, f).is_ok();
        if ok {
            self.vsm.note_map(vm, 0, gpa, size);
        }
        if ok && size == PageSize::M2 {
            self.kvm_counts.stage2_2m_maps += 1;
        }
        ok
    }

    /// PSMASH of the 2M RMP entry holding `spa`, by KVM.
    pub(super) fn kvm_psmash(&mut self, _cpu: usize, spa: Spa) -> Cycles {
        self.kvm_counts.psmash += 1;
        let base = spa.align_down(PageSize::M2);
        let rc = self.rmp.psmash(Executor::Hypervisor, base);
        self.after_rmp_change(rc, self.cfg.rmp.psmash_latency, (base, PageSize::M2.bytes())).cost
    }

    /// KVM_SET_MEMORY_ATTRIBUTES over `pages` GFNs from `gfn`: set private or shared, zap the
    /// stage-2 leaves covering changed pages (a 2M leaf goes whole), flush the VM's ASID, and
    /// let the VMM discard the backing no longer in use (guest_memfd hole punch →
    /// `sev_gmem_invalidate` for pages made shared; VMM pages freed for pages made private).
    pub(super) fn set_attributes(
        &mut self,
        cpu: usize,
        vm: VmId,
        gfn: u64,
        pages: u64,
        private: bool,
    ) -> Cycles {
        let mut cost = Cycles::ZERO;
        let mut zapped = false;
        for g in gfn..gfn.saturating_add(pages) {
            if self.attr_private(vm, g) == private {
                continue;
            }
            self.kvm_counts.attribute_changes += 1;
            let k = self.kvm.entry(vm).or_default();
            if private {
                k.shared.remove(&g);
            } else {
                k.shared.insert(g);
            }
            zapped |= self.zap_stage2(vm, g);
            cost += if private { self.vmm_discard(vm, g) } else { self.gmem_punch(cpu, vm, g) };
        }
        if zapped {
            cost += self.flush_vm_asid(vm);
        }
        cost
    }

    /// KVM's remote TLB flush after zapping stage-2 leaves of `vm`: its ASID flushed on every
    /// CPU. Returns its cost.
    fn flush_vm_asid(&mut self, vm: VmId) -> Cycles {
        let asid = self.vms.get(&vm).map_or(0, |i| u16::try_from(i.asid).unwrap_or(0));
        for c in &mut self.cpus {
            self.tlb_invalidated += c.mmu.svm_tlb_control(asid, TlbControl::FlushAsid).tlb;
        }
        self.tlb_flushes += 1;
        self.cfg.host.flush_all_cost
    }

    /// `kvm_zap_gfn_range` over the `n` GFNs from `gfn`: every stage-2 leaf translating one of
    /// them goes (a 2M leaf whole), then, if any went, the remote TLB flush. Returns its cost.
    fn zap_stage2_range(&mut self, vm: VmId, gfn: u64, n: u64) -> Cycles {
        let mut zapped = false;
        for g in gfn..gfn.saturating_add(n) {
            zapped |= self.zap_stage2(vm, g);
        }
        if zapped { self.flush_vm_asid(vm) } else { Cycles::ZERO }
    }

    /// [`Machine::zap_stage2`] for KVM's TDX MMU, with KVM's remote TLB flush, so that a TD's
    /// later shared access to a GFN made private walks the shared EPT again. A TD's TLB entries,
    /// shared translations included, are tagged with its one EPTP (the S-EPT root): KVM's flush
    /// for a TD is TDH.MEM.TRACK and a kick, after which the module flushes the TD's EPT
    /// context at the next entry (spec/tdx.md §3.4); modelled as INVEPT single-context of both
    /// roots on every CPU (the shared root keys the shared walk's cached entries).
    pub(super) fn zap_stage2_gfn(&mut self, vm: VmId, gfn: u64) -> bool {
        let gpa = Gpa::new_truncate(gfn << 12);
        let Some(p) = self.vm_paging.get_mut(&vm) else { return false };
        let Some((_, size)) = p.stage2_lookup(&self.tables, gpa) else { return false };
        let (asid, eptp) = (p.asid(), p.nested_root(Gpa::ZERO));
        match p.stage2_unmap(&mut self.tables, gpa.align_down(size), size) {
            Ok((tok, root)) => {
                for c in &mut self.cpus {
                    self.tlb_invalidated += c.mmu.invalidate_nested(&tok, asid, root).tlb;
                    if eptp != root {
                        self.tlb_invalidated += c.mmu.invalidate_nested(&tok, asid, eptp).tlb;
                    }
                }
                tok.ignore(); // applied on every CPU above
                self.kvm_counts.zaps += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// [`Machine::vmm_discard`] for KVM's TDX MMU.
    pub(super) fn vmm_discard_gfn(&mut self, vm: VmId, gfn: u64) {
        let _ = self.vmm_discard(vm, gfn);
    }

    /// Remove the stage-2 leaf translating `gfn`, if any.
    fn zap_stage2(&mut self, vm: VmId, gfn: u64) -> bool {
        let gpa = Gpa::new_truncate(gfn << 12);
        let Some(p) = self.vm_paging.get_mut(&vm) else { return false };
        let Some((_, size)) = p.stage2_lookup(&self.tables, gpa) else { return false };
        let at = gpa.align_down(size);
        match p.stage2_unmap(&mut self.tables, at, size) {
            Ok((tok, _)) => {
                tok.ignore();
                self.kvm_counts.zaps += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// The VMM frees the shared backing of `gfn` (it became private).
    fn vmm_discard(&mut self, vm: VmId, gfn: u64) -> Cycles {
        if let Some(spa) = self.kvm.get_mut(&vm).and_then(|k| k.vmm.remove(&gfn)) {
            let _ = self.alloc.free(spa, 0);
        }
        Cycles::ZERO
    }

    /// guest_memfd hole punch of `gfn` (it became shared): `sev_gmem_invalidate` makes the
    /// page shared again — at 2M when the whole 2M entry goes, else PSMASH first and 4K — and
    /// the folio is freed when its last page is punched.
    pub(super) fn gmem_punch_page(&mut self, cpu: usize, vm: VmId, gfn: u64) -> Cycles {
        self.gmem_punch(cpu, vm, gfn)
    }

    fn gmem_punch(&mut self, cpu: usize, vm: VmId, gfn: u64) -> Cycles {
        let order = self.cfg.host.gmem_folio_order;
        let base = gfn & !((1u64 << order) - 1);
        let Some(mut f) = self.kvm.get(&vm).and_then(|k| k.folios.get(&base)).copied() else {
            // Input-made memory: made shared, never freed (KVM does not own it).
            return match self.adopted(vm, gfn) {
                Some(spa) => self.gmem_invalidate(cpu, spa),
                None => Cycles::ZERO,
            };
        };
        let spa = Spa::new_truncate(f.spa.raw() + ((gfn - base) << 12));
        let mut cost = self.gmem_invalidate(cpu, spa);
        f.live = f.live.saturating_sub(1);
        if f.live == 0 {
            cost += self.gmem_free_folio(cpu, vm, base, f);
        } else if let Some(x) = self.kvm.get_mut(&vm).and_then(|k| k.folios.get_mut(&base)) {
            *x = f;
        }
        cost
    }

    /// `sev_gmem_invalidate` for one page.
    fn gmem_invalidate(&mut self, cpu: usize, spa: Spa) -> Cycles {
        let e = self.rmp.entry(spa);
        if !e.assigned {
            return Cycles::ZERO;
        }
        let mut cost = Cycles::ZERO;
        if e.page_size == RmpPageSize::M2 {
            cost += self.kvm_psmash(cpu, spa);
        }
        self.kvm_counts.invalidate += 1;
        cost + self.rmpupdate(cpu, spa, PageSize::K4, false, 0, Gpa::ZERO, false).cost
    }

    /// Free a folio (its pages already shared): restore it to the direct map under
    /// `gmem-no-direct-map`, give it back to the allocator.
    fn gmem_free_folio(&mut self, cpu: usize, vm: VmId, base: u64, f: Folio) -> Cycles {
        let mut cost = Cycles::ZERO;
        if f.unmapped {
            cost += self.cpa(cpu, CpaOp::DirectMapDefault, f.spa, 1 << f.order);
        }
        if let Some(k) = self.kvm.get_mut(&vm) {
            k.folios.remove(&base);
        }
        let _ = self.alloc.free(f.spa, f.order);
        self.kvm_counts.gmem_frees += 1;
        cost
    }

    /// A guest page-state-change request (GHCB NAE PSC, up to 253 entries per VMGEXIT): KVM
    /// forwards it to the VMM (KVM_HC_MAP_GPA_RANGE), which sets the attributes.
    pub(super) fn psc(
        &mut self,
        cpu: usize,
        vm: VmId,
        op: PscOp,
        gpa: Gpa,
        size: PageSize,
        pages: u64,
    ) -> Outcome {
        let pages_4k = pages.saturating_mul(size.pages_4k());
        let exits = pages.div_ceil(PSC_MAX_ENTRIES).max(1);
        self.kvm_counts.psc_requests += exits;
        self.kvm_counts.psc_pages += pages_4k;
        let mut cost = (self.cfg.host.vmexit_cost + self.cfg.host.user_exit_cost).times(exits);
        let gfn = gpa.raw() >> 12;
        match op {
            PscOp::Private => cost += self.set_attributes(cpu, vm, gfn, pages_4k, true),
            PscOp::Shared => cost += self.set_attributes(cpu, vm, gfn, pages_4k, false),
            PscOp::Psmash => {
                for i in 0..pages {
                    let g = Gpa::new_truncate(gpa.raw() + i * size.bytes());
                    let spa =
                        self.vm_paging.get(&vm).and_then(|p| p.stage2_lookup(&self.tables, g));
                    if let Some((spa, _)) = spa {
                        cost += self.kvm_psmash(cpu, spa);
                    }
                }
            }
            PscOp::Unsmash => {
                self.not_modelled("psc unsmash (needs the AMD-SP's SNP_PAGE_UNSMASH)")
            }
        }
        self.cycles.kvm += cost;
        Outcome { cost, timing: Timing::Serial, ..Outcome::default() }
    }

    /// SNP_LAUNCH_UPDATE by GPA: KVM populates the range from guest_memfd
    /// (`sev_gmem_post_populate`: RMPUPDATE to private at 4K, immutable — Pre-Guest) and the
    /// firmware measures each page and leaves it guest-valid (validated, mutable;
    /// [`rmp_model::Rmp::launch_update`]). The outcome's return code is the first failing
    /// firmware status, or SUCCESS.
    pub(super) fn launch_update_gpa(
        &mut self,
        cpu: usize,
        vm: VmId,
        gpa: Gpa,
        pages: u64,
    ) -> Outcome {
        let Some(info) = self.vms.get(&vm).copied() else {
            self.not_modelled("snp-fw launch-update for an unknown VM");
            return Outcome::default();
        };
        // The context page first (KVM creates it at LAUNCH_START, before populating).
        let (_, mut cost) = self.ensure_gctx(cpu, vm);
        let mut pages_4k = Vec::new();
        for i in 0..pages {
            let gfn = (gpa.raw() >> 12) + i;
            let Some((base, folio, c)) = self.gmem_folio(cpu, vm, gfn) else { break };
            cost += c;
            let spa = Spa::new_truncate(folio.spa.raw() + ((gfn - base) << 12));
            let g = Gpa::new_truncate(gfn << 12);
            cost += self.rmpupdate(cpu, spa, PageSize::K4, true, info.asid, g, true).cost;
            pages_4k.push(spa);
        }
        self.fw_launch_update(cpu, vm, info.asid, &pages_4k, cost)
    }

    /// SNP_LAUNCH_UPDATE of each page (4K, normal) under the VM's guest context; the outcome's
    /// return code is the first failing status, or SUCCESS.
    fn fw_launch_update(
        &mut self,
        cpu: usize,
        vm: VmId,
        asid: u32,
        pages: &[Spa],
        mut cost: Cycles,
    ) -> Outcome {
        let (gctx, c) = self.ensure_gctx(cpu, vm);
        cost += c;
        let asid = u16::try_from(asid).unwrap_or(u16::MAX);
        let update = LaunchUpdate::page_4k(LaunchPageType::Normal);
        let mut status = SnpFwStatus::Success;
        for &p in pages {
            let s = self.rmp.launch_update(gctx, p, asid, &update);
            cost += self.cfg.rmp.fw_command_latency;
            if status == SnpFwStatus::Success {
                status = s;
            }
        }
        self.fw_outcome(status, cost)
    }

    /// The VM's guest context page, made if it has none: a page from the allocator given to
    /// the firmware (`rmp_mark_pages_firmware`: RMPUPDATE to Firmware, through the host's
    /// rmpupdate wrapper and its physmap policy), then SNP_GCTX_CREATE (KVM
    /// `snp_context_create`).
    fn ensure_gctx(&mut self, cpu: usize, vm: VmId) -> (Spa, Cycles) {
        if let Some(g) = self.kvm.get(&vm).and_then(|k| k.gctx) {
            return (g, Cycles::ZERO);
        }
        let Some(page) = self.alloc.alloc(0) else {
            self.not_modelled("guest context page with host memory exhausted");
            return (Spa::ZERO, Cycles::ZERO);
        };
        let mut cost = self.rmpupdate(cpu, page, PageSize::K4, true, 0, Gpa::ZERO, true).cost;
        let _ = self.rmp.gctx_create(page);
        cost += self.cfg.rmp.fw_command_latency;
        self.kvm.entry(vm).or_default().gctx = Some(page);
        (page, cost)
    }

    fn fw_outcome(&mut self, status: SnpFwStatus, cost: Cycles) -> Outcome {
        *self.kvm_counts.fw_status.entry(status.name().to_owned()).or_default() += 1;
        self.cycles.rmp_instr += cost;
        Outcome {
            rc: Some((u64::from(status.code()), None)),
            cost,
            timing: Timing::Serial,
            ..Outcome::default()
        }
    }

    /// An SNP firmware command (`snp-fw CMD vm= spa= gpa= pages=`), issued by the host through
    /// the AMD-SP mailbox (Linux `drivers/crypto/ccp/sev-dev.c`), with its RMP effects as
    /// rmp-model's firmware model gives them ([`rmp_model::Rmp::launch_update`] and its
    /// siblings). The return code is the firmware status (SUCCESS = 0, INVALID_PAGE_STATE =
    /// 0x1A, …); each command costs `rmp.fw_command_latency` (per page for page commands).
    pub(super) fn snp_fw(
        &mut self,
        cpu: usize,
        cmd: SnpFwCmd,
        vm: VmId,
        spa: Option<Spa>,
        gpa: Option<Gpa>,
        pages: u64,
    ) -> Outcome {
        let lat = self.cfg.rmp.fw_command_latency;
        match (cmd, spa, gpa) {
            (SnpFwCmd::Init, _, _) => {
                let s = self.rmp.snp_init(&SnpInit::default());
                self.fw_outcome(s, lat)
            }
            (SnpFwCmd::Shutdown, _, _) => {
                let s = self.rmp.snp_shutdown_iommu(&[]);
                self.fw_outcome(s, lat)
            }
            (SnpFwCmd::Activate, _, _) => self.fw_outcome(SnpFwStatus::Success, lat),
            (SnpFwCmd::LaunchStart, _, _) => {
                let (gctx, c) = self.ensure_gctx(cpu, vm);
                let s = self.rmp.launch_start(gctx);
                self.fw_outcome(s, c + lat)
            }
            (SnpFwCmd::LaunchUpdate, Some(spa), _) => {
                let Some(info) = self.vms.get(&vm).copied() else {
                    self.not_modelled("snp-fw launch-update for an unknown VM");
                    return Outcome::default();
                };
                let list: Vec<Spa> = (0..pages).map_while(|i| spa.checked_add(i * 4096)).collect();
                self.fw_launch_update(cpu, vm, info.asid, &list, Cycles::ZERO)
            }
            (SnpFwCmd::LaunchUpdate, None, Some(g)) => self.launch_update_gpa(cpu, vm, g, pages),
            (SnpFwCmd::LaunchUpdate, None, None) => {
                self.not_modelled("snp-fw launch-update without spa= or gpa=");
                Outcome::default()
            }
            (SnpFwCmd::LaunchFinish, _, _) => {
                let (gctx, c) = self.ensure_gctx(cpu, vm);
                let s = self.rmp.launch_finish(gctx);
                self.fw_outcome(s, c + lat)
            }
            (SnpFwCmd::Decommission, _, _) => {
                // KVM snp_decommission_context: SNP_DECOMMISSION, then the context page is
                // reclaimed (SNP_PAGE_RECLAIM) and made shared again, and freed.
                let Some(gctx) = self.kvm.get_mut(&vm).and_then(|k| k.gctx.take()) else {
                    return self.fw_outcome(SnpFwStatus::InvalidGuest, lat);
                };
                let s = self.rmp.decommission(gctx);
                let mut cost = lat;
                if s == SnpFwStatus::Success {
                    let _ = self.rmp.page_reclaim(gctx, RmpPageSize::K4);
                    cost += lat;
                    cost +=
                        self.rmpupdate(cpu, gctx, PageSize::K4, false, 0, Gpa::ZERO, false).cost;
                    let _ = self.alloc.free(gctx, 0);
                }
                self.fw_outcome(s, cost)
            }
            (SnpFwCmd::PageReclaim, Some(spa), _) => {
                let mut status = SnpFwStatus::Success;
                let mut cost = Cycles::ZERO;
                for i in 0..pages {
                    let Some(p) = spa.checked_add(i * 4096) else { break };
                    let size = if self.rmp.entry(p).page_size == RmpPageSize::M2
                        && p.is_aligned(PageSize::M2)
                    {
                        RmpPageSize::M2
                    } else {
                        RmpPageSize::K4
                    };
                    let s = self.rmp.page_reclaim(p, size);
                    cost += lat;
                    if status == SnpFwStatus::Success {
                        status = s;
                    }
                }
                self.fw_outcome(status, cost)
            }
            (SnpFwCmd::PageUnsmash, Some(spa), _) => {
                let s = self.rmp.page_unsmash(spa);
                self.fw_outcome(s, lat)
            }
            (SnpFwCmd::PageReclaim | SnpFwCmd::PageUnsmash, None, _) => {
                self.not_modelled("snp-fw page command without spa=");
                Outcome::default()
            }
        }
    }

    /// VMRUN of vCPU `vcpu` of an SNP VM on CPU `cpu` (APM Vol. 2 §15.36.12, Table 15-41;
    /// spec/snp.md §2.5). The first VMRUN of a vCPU makes its VMSA page as KVM does
    /// (`snp_safe_alloc_page` — a page that is not 2M-aligned, the in-use erratum's workaround
    /// — made private with GPA `INITIAL_VMSA_GPA`, immutable, then SNP_LAUNCH_UPDATE of type
    /// VMSA). VMRUN checks the VMSA (RMP-covered, guest-owned, mutable, VMSA = 1; a failure is
    /// VMEXIT_INVALID, counted) and marks it in use, so that RMPUPDATE of it returns FAIL_INUSE
    /// until the vCPU exits: at its `vmexit`, or when the CPU runs another VMSA (the stream
    /// then left the guest). VMCB and AVIC pages are not modelled.
    pub(super) fn vmrun(&mut self, cpu: usize, vm: VmId, vcpu: u32) -> Outcome {
        let Some(info) = self.vms.get(&vm).copied().filter(|i| i.kind == VmKind::Snp) else {
            return Outcome { timing: Timing::Serial, ..Outcome::default() };
        };
        let mut cost = Cycles::ZERO;
        let vmsa = match self.kvm.get(&vm).and_then(|k| k.vmsa.get(&vcpu)).copied() {
            Some(p) => p,
            None => {
                let Some(mut page) = self.alloc.alloc(0) else {
                    self.not_modelled("VMSA page with host memory exhausted");
                    return Outcome::default();
                };
                if page.is_aligned(PageSize::M2) {
                    // snp_safe_alloc_page: never a 2M-aligned page.
                    let Some(other) = self.alloc.alloc(0) else {
                        self.not_modelled("VMSA page with host memory exhausted");
                        return Outcome::default();
                    };
                    let _ = self.alloc.free(page, 0);
                    page = other;
                }
                let gpa = Gpa::new_truncate(INITIAL_VMSA_GPA);
                cost += self.rmpupdate(cpu, page, PageSize::K4, true, info.asid, gpa, true).cost;
                let (gctx, c) = self.ensure_gctx(cpu, vm);
                cost += c + self.cfg.rmp.fw_command_latency;
                let asid = u16::try_from(info.asid).unwrap_or(u16::MAX);
                let update = LaunchUpdate::page_4k(LaunchPageType::Vmsa);
                let s = self.rmp.launch_update(gctx, page, asid, &update);
                *self.kvm_counts.fw_status.entry(s.name().to_owned()).or_default() += 1;
                self.kvm.entry(vm).or_default().vmsa.insert(vcpu, page);
                page
            }
        };
        // The CPU left whatever guest it ran before.
        if let Some(prev) = self.cpus[cpu].running_vmsa.take() {
            let _ = self.rmp.set_in_use(prev, false);
        }
        self.kvm_counts.vmruns += 1;
        let e = self.rmp.entry(vmsa);
        let ok = self.rmp.layout().is_covered(vmsa)
            && e.assigned
            && u32::from(e.asid) == info.asid
            && !e.immutable
            && e.vmsa;
        if ok {
            let _ = self.rmp.set_in_use(vmsa, true);
            self.cpus[cpu].running_vmsa = Some(vmsa);
        } else {
            self.kvm_counts.vmrun_invalid += 1;
        }
        self.cycles.kvm += cost;
        Outcome { cost, timing: Timing::Serial, ..Outcome::default() }
    }

    /// #VMEXIT of a vCPU on CPU `cpu`: its VMSA is no longer in use.
    pub(super) fn vmexit(&mut self, cpu: usize) -> Outcome {
        if let Some(prev) = self.cpus[cpu].running_vmsa.take() {
            let _ = self.rmp.set_in_use(prev, false);
        }
        Outcome { timing: Timing::Serial, ..Outcome::default() }
    }

    /// `mem-attrs`: KVM_SET_MEMORY_ATTRIBUTES from the VMM.
    pub(super) fn mem_attrs(
        &mut self,
        cpu: usize,
        vm: VmId,
        gpa: Gpa,
        bytes: u64,
        attrs: u64,
    ) -> Outcome {
        let private = attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE != 0;
        let cost = self.set_attributes(cpu, vm, gpa.raw() >> 12, bytes.div_ceil(4096), private);
        self.cycles.kvm += cost;
        Outcome { cost, timing: Timing::Serial, ..Outcome::default() }
    }

    /// VM teardown: every guest_memfd page goes back to the hypervisor (`sev_gmem_invalidate`)
    /// and every folio and VMM page to the allocator.
    pub(super) fn kvm_destroy(&mut self, cpu: usize, vm: VmId) {
        let Some(k) = self.kvm.remove(&vm) else { return };
        // In GFN order, as the allocator's frees must be deterministic.
        let mut folios: Vec<(u64, Folio)> = k.folios.into_iter().collect();
        folios.sort_unstable_by_key(|&(gfn, _)| gfn);
        for (_, f) in folios {
            for i in 0..(1u64 << f.order) {
                let spa = Spa::new_truncate(f.spa.raw() + (i << 12));
                let _ = self.gmem_invalidate(cpu, spa);
            }
            if f.unmapped {
                let _ = self.cpa(cpu, CpaOp::DirectMapDefault, f.spa, 1 << f.order);
            }
            let _ = self.alloc.free(f.spa, f.order);
            self.kvm_counts.gmem_frees += 1;
        }
        for (_, spa) in k.vmm {
            let _ = self.alloc.free(spa, 0);
        }
        // The vCPUs' VMSA pages (sev_free_vcpu: made shared again, freed), no longer in use on
        // any CPU.
        for (_, page) in k.vmsa {
            for c in &mut self.cpus {
                if c.running_vmsa == Some(page) {
                    c.running_vmsa = None;
                }
            }
            let _ = self.rmp.set_in_use(page, false);
            let _ = self.rmpupdate(cpu, page, PageSize::K4, false, 0, Gpa::ZERO, false);
            let _ = self.alloc.free(page, 0);
        }
        // The guest context page (snp_decommission_context: SNP_DECOMMISSION, reclaim, shared,
        // freed).
        if let Some(gctx) = k.gctx
            && self.rmp.decommission(gctx) == SnpFwStatus::Success
        {
            let _ = self.rmp.page_reclaim(gctx, RmpPageSize::K4);
            let _ = self.rmpupdate(cpu, gctx, PageSize::K4, false, 0, Gpa::ZERO, false);
            let _ = self.alloc.free(gctx, 0);
        }
    }

    /// A kernel-range flush of `pages` direct-map pages from `spa` on every CPU
    /// (`flush_tlb_kernel_range`).
    pub(super) fn flush_dm_range(&mut self, cpu: usize, spa: Spa, pages: u64) -> Cycles {
        let start = crate::host::directmap::dm_va(spa);
        let work = if pages <= self.cfg.host.tlb_single_page_flush_ceiling {
            super::FlushWork::Range { start, bytes: pages * 4096, invlpgs: pages }
        } else {
            super::FlushWork::All
        };
        self.flush_on(cpu, None, super::Targets::Auto, work)
    }
}
