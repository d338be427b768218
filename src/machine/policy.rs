//! The physmap policies' hooks (spec/physmap.md §3, spec/snp.md §4; [`PhysmapPolicy`] names
//! the patch or kernel each models): around every RMPUPDATE, in the host's RMP #PF handler, and
//! (for `gmem-no-direct-map`) in KVM's guest_memfd paths ([`super::kvm`]).

use super::{FlushWork, Machine, TableFrames, Targets};
use crate::host::config::PhysmapPolicy;
use crate::host::directmap::Count;
use rmp_model::RmpPageSize;
use sim_core::event::CpaOp;
use sim_core::{Cycles, PageSize, Spa};

/// What the host's RMP #PF handler did with a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RmpFaultAction {
    /// Fixed: the access retries.
    Retry,
    /// Not handled: the fault stands (fatal in the kernel).
    Unhandled,
}

/// Per-policy counters, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyCounts {
    /// Kernel RMP #PFs fixed by splitting the direct map (`split-on-fault-kernel`).
    pub kernel_fault_splits: u64,
    /// User RMP #PFs fixed by splitting the user mapping (`split-on-fault`).
    pub user_fault_splits: u64,
    /// SIGBUS sent for user writes to assigned pages (`split-on-fault`), by PID.
    pub sigbus: std::collections::BTreeMap<u32, u64>,
    /// Pages removed from the direct map (`unmap-private`, `gmem-no-direct-map`).
    pub dm_unmapped_pages: u64,
    /// Pages restored to the direct map.
    pub dm_restored_pages: u64,
    /// Direct-map rebuilds by `coalesce-on-shared`: 2M and 1G mappings restored.
    pub coalesced_2m: u64,
    /// See [`PolicyCounts::coalesced_2m`].
    pub coalesced_1g: u64,
}

impl Machine {
    /// Before an RMPUPDATE of `size` at `spa` (Linux's `rmpupdate()` wrapper runs its direct-map
    /// work first).
    pub(super) fn policy_before_rmpupdate(
        &mut self,
        cpu: usize,
        spa: Spa,
        size: PageSize,
        assigned: bool,
    ) -> Cycles {
        if spa.raw() >= self.dm.end() {
            return Cycles::ZERO;
        }
        let pages = size.pages_4k().min(512);
        match self.cfg.host.policy {
            // The RFC: set_memory_4k() on every assign, whatever the RMP level.
            PhysmapPolicy::SplitOnAssign if assigned => self.cpa(cpu, CpaOp::Set4k, spa, pages),
            // adjust_direct_map(): only 4K RMP changes, assign and unassign alike, and only when
            // the page sits in a larger mapping.
            PhysmapPolicy::AdjustDirectMap | PhysmapPolicy::CoalesceOnShared
                if size == PageSize::K4
                    && self.dm.leaf_size(&self.tables, spa).is_some_and(|s| s > PageSize::K4) =>
            {
                let marks = self.cfg.host.policy == PhysmapPolicy::AdjustDirectMap
                    && self.cfg.host.set_memory_4k_marks;
                self.cpa_marked(cpu, CpaOp::Set4k, spa, 1, marks)
            }
            // v6/v8: invalidate the direct map for each page of the RMP level, then flush.
            PhysmapPolicy::UnmapPrivate if assigned => {
                self.policy_counts.dm_unmapped_pages += pages;
                self.cpa(cpu, CpaOp::DirectMapInvalid, spa, pages)
                    + self.flush_dm_range(cpu, spa, pages)
            }
            PhysmapPolicy::None
            | PhysmapPolicy::SplitOnAssign
            | PhysmapPolicy::SplitOnFault
            | PhysmapPolicy::SplitOnFaultKernel
            | PhysmapPolicy::AdjustDirectMap
            | PhysmapPolicy::Presplit4k
            | PhysmapPolicy::UnmapPrivate
            | PhysmapPolicy::GmemNoDirectMap
            | PhysmapPolicy::CoalesceOnShared => Cycles::ZERO,
        }
    }

    /// After a successful RMPUPDATE.
    pub(super) fn policy_after_rmpupdate(
        &mut self,
        cpu: usize,
        spa: Spa,
        size: PageSize,
        assigned: bool,
    ) -> Cycles {
        if assigned || spa.raw() >= self.dm.end() {
            return Cycles::ZERO;
        }
        match self.cfg.host.policy {
            // v6/v8 restore_direct_map(): back in the direct map when shared (no flush: the
            // entry goes from not-present to present).
            PhysmapPolicy::UnmapPrivate => {
                let pages = size.pages_4k().min(512);
                self.policy_counts.dm_restored_pages += pages;
                self.cpa(cpu, CpaOp::DirectMapDefault, spa, pages)
            }
            PhysmapPolicy::CoalesceOnShared => self.coalesce(cpu, spa),
            PhysmapPolicy::None
            | PhysmapPolicy::SplitOnAssign
            | PhysmapPolicy::SplitOnFault
            | PhysmapPolicy::SplitOnFaultKernel
            | PhysmapPolicy::AdjustDirectMap
            | PhysmapPolicy::Presplit4k
            | PhysmapPolicy::GmemNoDirectMap => Cycles::ZERO,
        }
    }

    /// `coalesce-on-shared`: when no page of the 2M region holding `spa` is assigned any more,
    /// rebuild its 2M mapping (and then the 1G one, where the direct map uses 1G pages),
    /// charging `host.collapse_cost` per attempt, the freed page-table pages and Linux's
    /// `flush_tlb_all()` after a collapse (commit 41d88484c71c does the same for ROX pages).
    fn coalesce(&mut self, cpu: usize, spa: Spa) -> Cycles {
        let base = spa.align_down(PageSize::M2);
        if self.rmp.region_has_assigned(base)
            || self.dm.leaf_size(&self.tables, base) != Some(PageSize::K4)
        {
            return Cycles::ZERO;
        }
        let mut cost = self.cfg.host.collapse_cost;
        self.cycles.policy += self.cfg.host.collapse_cost;
        let count = if self.in_boot { Count::Boot } else { Count::Running };
        let attempt = self.dm.try_collapse(&mut self.tables, &mut frames!(self), base, count);
        self.cpa.collapse_attempts += 1;
        if attempt.pmd.is_ok() {
            self.policy_counts.coalesced_2m += 1;
            self.cpa.collapsed += 1;
            if matches!(attempt.pud, Some(Ok(()))) {
                self.policy_counts.coalesced_1g += 1;
                self.cpa.collapsed += 1;
            }
            attempt.inv.ignore();
            cost += self.flush_on(cpu, None, Targets::Auto, FlushWork::All);
            self.sample_dm();
        } else {
            attempt.inv.ignore();
        }
        cost
    }

    /// The host's RMP #PF handler for a kernel access to direct-map address of `spa`
    /// (`split-on-fault-kernel`: split the mapping that faulted to 4K, once; a fault on the
    /// assigned page itself stays fatal).
    pub(super) fn kernel_rmp_fault(&mut self, cpu: usize, spa: Spa) -> (RmpFaultAction, Cycles) {
        if self.cfg.host.policy != PhysmapPolicy::SplitOnFaultKernel
            || spa.raw() >= self.dm.end()
            || self.rmp.entry(spa).assigned
            || self.dm.leaf_size(&self.tables, spa).is_none_or(|s| s == PageSize::K4)
        {
            return (RmpFaultAction::Unhandled, Cycles::ZERO);
        }
        self.policy_counts.kernel_fault_splits += 1;
        (RmpFaultAction::Retry, self.cpa(cpu, CpaOp::Set4k, spa.align_down(PageSize::K4), 1))
    }

    /// The host's RMP #PF handler for a user access of process `pid` at `va` translating to
    /// `spa` (`split-on-fault`, Part2 v6 09/49): SIGBUS when the page itself is assigned; a
    /// split of the user mapping (`__split_huge_pmd`) when it is larger than the RMP level;
    /// else nothing to do.
    pub(super) fn user_rmp_fault(
        &mut self,
        cpu: usize,
        pid: u32,
        va: sim_core::Hva,
        spa: Spa,
    ) -> (RmpFaultAction, Cycles) {
        if self.cfg.host.policy != PhysmapPolicy::SplitOnFault {
            return (RmpFaultAction::Unhandled, Cycles::ZERO);
        }
        let e = self.rmp.entry(spa);
        if e.assigned {
            *self.policy_counts.sigbus.entry(pid).or_default() += 1;
            return (RmpFaultAction::Unhandled, Cycles::ZERO);
        }
        let rmp_level = if e.page_size == RmpPageSize::M2 { PageSize::M2 } else { PageSize::K4 };
        let Some(pt) = self.procs.get_mut(&pid) else {
            return (RmpFaultAction::Unhandled, Cycles::ZERO);
        };
        let Some(leaf) = pt.lookup(&self.tables, va) else {
            return (RmpFaultAction::Unhandled, Cycles::ZERO);
        };
        if leaf.size <= rmp_level {
            return (RmpFaultAction::Unhandled, Cycles::ZERO);
        }
        let mut cost = self.cfg.host.split_cost;
        self.cycles.policy += self.cfg.host.split_cost;
        let mut frames =
            TableFrames { buddy: &mut self.alloc, boot: &mut self.boot, in_boot: false };
        match pt.split(&mut self.tables, &mut frames, va) {
            Ok((_, tok)) => {
                self.policy_counts.user_fault_splits += 1;
                cost += self.flush_token(cpu, Some(pid), tok);
                (RmpFaultAction::Retry, cost)
            }
            Err(_) => (RmpFaultAction::Unhandled, cost),
        }
    }
}
