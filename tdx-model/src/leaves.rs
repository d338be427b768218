//! The memory SEAMCALLs (spec/tdx.md §2.4): each `chk_*` runs the leaf's checks and takes its
//! locks in the order of the TDX module's handler (`src/vmm_dispatcher/api_calls/tdh_*.c`);
//! `apply_commit` does the work after the handler's "ALL_CHECKS_PASSED" point.
//!
//! The "blocked + tracked" rule (REMOVE, SEPT.REMOVE, DEMOTE, PROMOTE, RELOCATE, UNBLOCK)
//! applies only when the entry's state has "TLB tracking required" and the TD's OP_STATE
//! requires tracking (RUNNABLE): the entry must be *BLOCKED (`GPA_RANGE_NOT_BLOCKED | RCX`
//! with the entry view) and the page's PAMT.BEPOCH tracked (`TLB_TRACKING_NOT_DONE | RCX`, no
//! view; UNBLOCK reports operand 0x92).

use crate::lock::{self, HeldLock, LockMode};
use crate::module::{Commit, Cx, NULL_PA, TdxModule, page_info};
use crate::pamt::{PageType, PamtEntry};
use crate::sept::{self, FREE_RAW, SeptEntry, SeptState, bits, seamcall_allows, spa};
use crate::status::*;
use crate::td::TdState;
use mmu_model::PhysMemTables;
use sim_core::{PageSize, Spa};

/// RDX as a TD handle with flags (`td_handle_and_flags_t`): bit 0 a flag, bits 11:1 and 63:52
/// reserved, bits 51:12 the TDR.
const TD_HANDLE_RESERVED: u64 = 0xFFF0_0000_0000_0FFE;

/// Tag folded into MRTD for TDH.MEM.PAGE.ADD ("MEM.PAGE.ADD").
const MEASURE_PAGE_ADD: u64 = 0x4D45_4D2E_5041_4745;
/// Tag folded into MRTD for TDH.MR.EXTEND ("MR.EXTEND").
const MEASURE_MR_EXTEND: u64 = 0x4D52_2E45_5854_454E;

fn size_of_level(level: u8) -> PageSize {
    sept::level_size(level).unwrap_or(PageSize::K4)
}

/// The page an entry's BLOCK/tracking state lives on: a leaf's page at its size, a non-leaf's
/// table at 4 KiB (`tdh_mem_range_block.c`, `tdh_mem_range_unblock.c`).
fn tracked_page(e: SeptEntry, level: u8) -> (u64, PageSize) {
    if e.is_leaf() { (e.leaf_hpa(level), size_of_level(level)) } else { (e.addr(), PageSize::K4) }
}

/// `block_sept_entry`: NL_MAPPED → NL_BLOCKED, MAPPED/BLOCKEDW → BLOCKED (permissions cleared),
/// PENDING/PENDING_BLOCKEDW → PENDING_BLOCKED.
fn blocked(e: SeptEntry) -> SeptEntry {
    match e.state() {
        Some(SeptState::NlMapped) => e.with_state(SeptState::NlBlocked).with_perms(0),
        Some(SeptState::Mapped | SeptState::BlockedW) => {
            e.with_perms(0).with_state(SeptState::Blocked)
        }
        Some(SeptState::Pending | SeptState::PendingBlockedW) => {
            e.with_state(SeptState::PendingBlocked)
        }
        _ => e,
    }
}

/// `sept_unblock`: NL_BLOCKED → NL_MAPPED and BLOCKED → MAPPED (with RWX), PENDING_BLOCKED →
/// PENDING; other states unchanged.
pub(crate) fn unblocked(e: SeptEntry) -> SeptEntry {
    match e.state() {
        Some(SeptState::NlBlocked) => e.with_state(SeptState::NlMapped).with_perms(bits::PERMS),
        Some(SeptState::Blocked) => e.with_state(SeptState::Mapped).with_perms(bits::PERMS),
        Some(SeptState::PendingBlocked) => e.with_state(SeptState::Pending),
        _ => e,
    }
}

fn allowed(leaf: u16, e: u64) -> Option<SeptState> {
    SeptState::decode(e).filter(|&s| seamcall_allows(leaf, s))
}

impl TdxModule {
    /// The start of the memory leaves with the TDR in RDX: the TDR (PAMT lock `tdr_mode`) and
    /// the TD state with its OP_STATE lock.
    fn mem_preamble(
        &mut self,
        cx: &mut Cx,
        tdr: u64,
        tdr_mode: LockMode,
        op_lock: Option<LockMode>,
    ) -> Result<(), u64> {
        self.lock_tdr(cx, tdr, OperandId::Rdx, tdr_mode)?;
        self.td_state_check(cx, tdr, op_lock)
    }

    fn td_ref(&self, tdr: u64) -> Result<&TdState, u64> {
        self.tds.get(&tdr).ok_or(TDX_TD_KEYS_NOT_CONFIGURED)
    }

    /// The blocked + tracked rule (see the module docs). `page`/`size` name the PAMT entry
    /// holding BEPOCH; `tracking_operand` is RCX except for UNBLOCK.
    #[allow(clippy::too_many_arguments)] // mirrors the module's operands one to one
    fn blocked_and_tracked(
        &self,
        cx: &mut Cx,
        tdr: u64,
        entry: u64,
        level: u8,
        page: u64,
        size: PageSize,
        tracking_operand: OperandId,
    ) -> Result<(), u64> {
        let td = self.td_ref(tdr)?;
        let Some(state) = SeptState::decode(entry) else { return Ok(()) };
        if !(state.tlb_tracking_required() && td.op_state.tlb_tracking_required()) {
            return Ok(());
        }
        if cx.leaf != crate::module::Leaf::MemRangeUnblock && !state.any_blocked() {
            cx.view(entry, level);
            return Err(status(TDX_GPA_RANGE_NOT_BLOCKED, OperandId::Rcx));
        }
        if !td.tlb_tracked(self.pamt.get(page, size).bepoch) {
            return Err(status(TDX_TLB_TRACKING_NOT_DONE, tracking_operand));
        }
        Ok(())
    }

    /// TDH.MEM.SEPT.ADD (`tdh_mem_sept_add.c`).
    pub(crate) fn chk_sept_add(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        cx.out.rcx = 0;
        cx.out.rdx = 0;
        if cx.version > 1 {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rax));
        }
        // Bit 63 of a page operand that is not NULL_PA is ignored.
        let strip = |v: u64| if v == NULL_PA { v } else { v & !(1 << 63) };
        let page = strip(cx.inp.r8);
        let l2 = [strip(cx.inp.r9), strip(cx.inp.r10), strip(cx.inp.r11)];
        let mut flagged = page;
        let r = self.sept_add_inner(t, cx, page, l2, &mut flagged);
        if cx.version > 0 {
            // EXIT: version 1 returns the (flagged) page operands.
            cx.out.r8 =
                if r.as_ref().is_ok_and(|c| *c != Commit::Nothing) { NULL_PA } else { flagged };
            cx.out.r9 = l2[0];
            cx.out.r10 = l2[1];
            cx.out.r11 = l2[2];
        }
        r
    }

    fn sept_add_inner(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
        page: u64,
        l2: [u64; 3],
        flagged: &mut u64,
    ) -> Result<Commit, u64> {
        let rdx = cx.inp.rdx;
        if rdx & TD_HANDLE_RESERVED != 0 {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rdx));
        }
        let tdr = rdx & bits::HPA_MASK;
        let allow_existing = rdx & 1 != 0;
        self.mem_preamble(cx, tdr, LockMode::Shared, Some(LockMode::Shared))?;
        let root_level = self.td_ref(tdr)?.root_level;
        let (gpa, level) = page_info(cx.inp.rcx, 1, root_level)
            .ok_or(status(TDX_OPERAND_INVALID, OperandId::Rcx))?;
        let (addr, e) = self.walk_lock(t, cx, tdr, gpa, level, Some(LockMode::Shared), true)?;
        let Some(state) = allowed(3, e) else {
            cx.view(e, level);
            return Err(status(TDX_EPT_ENTRY_STATE_INCORRECT, OperandId::Rcx));
        };
        // process_l1_page
        let mut new_page = false;
        if page == NULL_PA {
            if cx.version == 0 {
                return Err(status(TDX_OPERAND_INVALID, OperandId::R8));
            }
            if state != SeptState::NlMapped {
                cx.view(e, level);
                return Err(status(TDX_EPT_ENTRY_STATE_INCORRECT, OperandId::Rcx));
            }
        } else if state == SeptState::Free {
            self.lock_explicit(
                cx,
                page,
                PageSize::K4,
                true,
                LockMode::Exclusive,
                PageType::Nda,
                OperandId::R8,
            )?;
            new_page = true;
        } else if allow_existing {
            *flagged |= 1 << 63;
        } else {
            cx.view(e, level);
            return Err(status(TDX_EPT_ENTRY_STATE_INCORRECT, OperandId::Rcx));
        }
        // process_l2_pages: no L2 VM exists in the model, so any L2 page is invalid.
        if cx.version > 0 {
            for (i, &p) in l2.iter().enumerate() {
                if p != NULL_PA {
                    let op = 9 + u32::try_from(i).unwrap_or(0);
                    return Err(with_detail(TDX_OPERAND_INVALID, op));
                }
            }
        }
        Ok(if new_page { Commit::SeptAdd { tdr, entry: addr, page } } else { Commit::Nothing })
    }

    /// TDH.MEM.PAGE.ADD (`tdh_mem_page_add.c`): no tree or entry lock; the TDR is locked
    /// exclusively instead.
    pub(crate) fn chk_page_add(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        cx.out.rcx = 0;
        cx.out.rdx = 0;
        let tdr = cx.inp.rdx;
        self.lock_tdr(cx, tdr, OperandId::Rdx, LockMode::Exclusive)?;
        self.td_state_check(cx, tdr, None)?;
        let (gpa, level) =
            page_info(cx.inp.rcx, 0, 0).ok_or(status(TDX_OPERAND_INVALID, OperandId::Rcx))?;
        let (addr, e) = self.walk_lock(t, cx, tdr, gpa, level, None, false)?;
        if allowed(2, e).is_none() {
            cx.view(e, level);
            return Err(status(TDX_EPT_ENTRY_STATE_INCORRECT, OperandId::Rcx));
        }
        if !self.shared_hpa_ok(cx.inp.r9, 4096) {
            return Err(status(TDX_OPERAND_INVALID, OperandId::R9));
        }
        let page = cx.inp.r8;
        self.lock_explicit(
            cx,
            page,
            PageSize::K4,
            true,
            LockMode::Exclusive,
            PageType::Nda,
            OperandId::R8,
        )?;
        Ok(Commit::PageAdd { tdr, entry: addr, page, gpa })
    }

    /// TDH.MEM.PAGE.AUG (`tdh_mem_page_aug.c`).
    pub(crate) fn chk_aug(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        cx.out.rcx = 0;
        cx.out.rdx = 0;
        let tdr = cx.inp.rdx;
        self.mem_preamble(cx, tdr, LockMode::Shared, Some(LockMode::Shared))?;
        let (gpa, level) =
            page_info(cx.inp.rcx, 0, 1).ok_or(status(TDX_OPERAND_INVALID, OperandId::Rcx))?;
        let (addr, e) = self.walk_lock(t, cx, tdr, gpa, level, Some(LockMode::Shared), true)?;
        if allowed(6, e).is_none() {
            cx.view(e, level);
            return Err(status(TDX_EPT_ENTRY_STATE_INCORRECT, OperandId::Rcx));
        }
        // check_and_lock_free_range_hpa
        let page = cx.inp.r8;
        let size = size_of_level(level);
        self.lock_explicit(
            cx,
            page,
            size,
            true,
            LockMode::Exclusive,
            PageType::Nda,
            OperandId::R8,
        )?;
        if size == PageSize::M2 && !self.pamt.range_2m_free(page) {
            return Err(status(TDX_PAGE_METADATA_INCORRECT, OperandId::R8));
        }
        Ok(Commit::Aug { tdr, entry: addr, page, level })
    }

    /// TDH.MEM.RANGE.BLOCK (`tdh_mem_range_block.c`): the tree lock EXCLUSIVE.
    pub(crate) fn chk_block(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        cx.out.rcx = 0;
        cx.out.rdx = 0;
        let tdr = cx.inp.rdx;
        self.mem_preamble(cx, tdr, LockMode::Shared, Some(LockMode::Shared))?;
        let root_level = self.td_ref(tdr)?.root_level;
        let (gpa, level) = page_info(cx.inp.rcx, 0, root_level)
            .ok_or(status(TDX_OPERAND_INVALID, OperandId::Rcx))?;
        let (addr, e) = self.walk_lock(t, cx, tdr, gpa, level, Some(LockMode::Exclusive), true)?;
        if allowed(7, e).is_none() {
            cx.view(e, level);
            let already = SeptState::decode(e).is_some_and(SeptState::any_blocked);
            let code =
                if already { TDX_GPA_RANGE_ALREADY_BLOCKED } else { TDX_EPT_ENTRY_STATE_INCORRECT };
            return Err(status(code, OperandId::Rcx));
        }
        Ok(Commit::Block { tdr, entry: addr, value: e, level })
    }

    /// TDH.MEM.TRACK (`tdh_mem_track.c`): TDR in RCX, the epoch lock EXCLUSIVE, and no vCPU
    /// left in the previous epoch.
    pub(crate) fn chk_track(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let tdr = cx.inp.rcx;
        self.lock_tdr(cx, tdr, OperandId::Rcx, LockMode::Shared)?;
        self.td_state_check(cx, tdr, Some(LockMode::Shared))?;
        let td = self.tds.get_mut(&tdr).ok_or(TDX_TD_KEYS_NOT_CONFIGURED)?;
        if !td.epoch_lock.try_acquire(LockMode::Exclusive) {
            return Err(status(TDX_OPERAND_BUSY, OperandId::TdEpoch));
        }
        cx.held.push(HeldLock::Epoch(tdr, LockMode::Exclusive));
        let prev = usize::from(td.epoch & 1 == 0);
        if td.refcount[prev] != 0 {
            return Err(TDX_PREVIOUS_TLB_EPOCH_BUSY);
        }
        Ok(Commit::Track { tdr })
    }

    /// TDH.MEM.PAGE.REMOVE (`tdh_mem_page_remove.c`).
    pub(crate) fn chk_remove(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        cx.out.rcx = 0;
        cx.out.rdx = 0;
        let tdr = cx.inp.rdx;
        self.mem_preamble(cx, tdr, LockMode::Shared, Some(LockMode::Shared))?;
        let (gpa, level) =
            page_info(cx.inp.rcx, 0, 2).ok_or(status(TDX_OPERAND_INVALID, OperandId::Rcx))?;
        let (addr, e) = self.walk_lock(t, cx, tdr, gpa, level, Some(LockMode::Shared), true)?;
        let se = SeptEntry::from_raw(e);
        if !se.is_leaf() || allowed(29, e).is_none() {
            cx.view(e, level);
            return Err(status(TDX_EPT_ENTRY_STATE_INCORRECT, OperandId::Rcx));
        }
        let page = se.leaf_hpa(level);
        let size = size_of_level(level);
        self.lock_implicit(cx, page, size, LockMode::Exclusive, OperandId::Rcx)?;
        self.blocked_and_tracked(cx, tdr, e, level, page, size, OperandId::Rcx)?;
        Ok(Commit::Remove { tdr, entry: addr, page, level })
    }

    /// TDH.MEM.SEPT.REMOVE (`tdh_mem_sept_remove.c`): the tree lock EXCLUSIVE; every entry of
    /// the table must be FREE.
    pub(crate) fn chk_sept_remove(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        clear_outputs_l2(cx)?;
        let tdr = cx.inp.rdx;
        self.mem_preamble(cx, tdr, LockMode::Shared, Some(LockMode::Shared))?;
        let root_level = self.td_ref(tdr)?.root_level;
        let (gpa, level) = page_info(cx.inp.rcx, 1, root_level)
            .ok_or(status(TDX_OPERAND_INVALID, OperandId::Rcx))?;
        let (addr, e) = self.walk_lock(t, cx, tdr, gpa, level, Some(LockMode::Exclusive), true)?;
        if allowed(30, e).is_none() {
            cx.view(e, level);
            return Err(status(TDX_EPT_ENTRY_STATE_INCORRECT, OperandId::Rcx));
        }
        let table = SeptEntry::from_raw(e).addr();
        self.lock_implicit(cx, table, PageSize::K4, LockMode::Exclusive, OperandId::Rcx)?;
        self.blocked_and_tracked(cx, tdr, e, level, table, PageSize::K4, OperandId::Rcx)?;
        cx.refs.add(512);
        let all_free = (0..512u64)
            .all(|i| SeptState::decode(t.read(spa(table + i * 8))) == Some(SeptState::Free));
        if !all_free {
            cx.view(e, level);
            return Err(status(TDX_EPT_PAGE_NOT_FREE, OperandId::Rcx));
        }
        Ok(Commit::SeptRemove { tdr, entry: addr, table })
    }

    /// TDH.MEM.RANGE.UNBLOCK (`tdh_mem_range_unblock.c`): the tree lock EXCLUSIVE; BLOCK must
    /// have been followed by a completed TRACK (`TLB_TRACKING_NOT_DONE | 0x92`, as spec/tdx.md
    /// §2.4 and the module's `OPERAND_ID_SEPT`; the newest stored module source reports RCX).
    pub(crate) fn chk_unblock(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        cx.out.rcx = 0;
        cx.out.rdx = 0;
        let tdr = cx.inp.rdx;
        self.mem_preamble(cx, tdr, LockMode::Shared, Some(LockMode::Shared))?;
        let root_level = self.td_ref(tdr)?.root_level;
        let (gpa, level) = page_info(cx.inp.rcx, 0, root_level)
            .ok_or(status(TDX_OPERAND_INVALID, OperandId::Rcx))?;
        let (addr, e) = self.walk_lock(t, cx, tdr, gpa, level, Some(LockMode::Exclusive), true)?;
        if allowed(39, e).is_none() {
            cx.view(e, level);
            return Err(status(TDX_EPT_ENTRY_STATE_INCORRECT, OperandId::Rcx));
        }
        let (page, size) = tracked_page(SeptEntry::from_raw(e), level);
        self.blocked_and_tracked(cx, tdr, e, level, page, size, OperandId::SeptTree)?;
        Ok(Commit::Unblock { entry: addr, value: e })
    }

    /// TDH.MEM.PAGE.DEMOTE (`tdh_mem_page_demote.c`). Host-interrupt restarts
    /// (`TDX_INTERRUPTED_RESTARTABLE`) and L2 S-EPTs are not modelled.
    pub(crate) fn chk_demote(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        cx.out.rcx = 0;
        cx.out.rdx = 0;
        let rdx = cx.inp.rdx;
        if rdx & TD_HANDLE_RESERVED != 0 {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rdx));
        }
        let tdr = rdx & bits::HPA_MASK;
        self.mem_preamble(cx, tdr, LockMode::Shared, Some(LockMode::Shared))?;
        let (gpa, level) =
            page_info(cx.inp.rcx, 1, 2).ok_or(status(TDX_OPERAND_INVALID, OperandId::Rcx))?;
        let (addr, e) = self.walk_lock(t, cx, tdr, gpa, level, Some(LockMode::Shared), true)?;
        if allowed(15, e).is_none() {
            cx.view(e, level);
            return Err(status(TDX_EPT_ENTRY_STATE_INCORRECT, OperandId::Rcx));
        }
        let page = SeptEntry::from_raw(e).leaf_hpa(level);
        let size = size_of_level(level);
        self.blocked_and_tracked(cx, tdr, e, level, page, size, OperandId::Rcx)?;
        let table = cx.inp.r8;
        self.lock_explicit(
            cx,
            table,
            PageSize::K4,
            true,
            LockMode::Exclusive,
            PageType::Nda,
            OperandId::R8,
        )?;
        // Model guard: pamt_demote needs the page's PAMT entry at the leaf's size (always true
        // for state built by AUG/ADD; only direct state can break it).
        if self.pamt.get(page, size).pt == PageType::Nda {
            return Err(status(TDX_PAGE_METADATA_INCORRECT, OperandId::Rcx));
        }
        Ok(Commit::Demote { tdr, entry: addr, value: e, level, page, table })
    }

    /// TDH.MEM.PAGE.PROMOTE (`tdh_mem_page_promote.c`): locks the entry and all 512 children;
    /// the children must be all MAPPED or all PENDING leaves, identical but for a contiguous
    /// address stride, starting aligned to the merged size.
    pub(crate) fn chk_promote(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        clear_outputs_l2(cx)?;
        let tdr = cx.inp.rdx;
        self.mem_preamble(cx, tdr, LockMode::Shared, Some(LockMode::Shared))?;
        let (gpa, level) =
            page_info(cx.inp.rcx, 1, 2).ok_or(status(TDX_OPERAND_INVALID, OperandId::Rcx))?;
        let (addr, e) = self.walk_lock(t, cx, tdr, gpa, level, Some(LockMode::Shared), true)?;
        if allowed(23, e).is_none() {
            cx.view(e, level);
            return Err(status(TDX_EPT_ENTRY_STATE_INCORRECT, OperandId::Rcx));
        }
        let table = SeptEntry::from_raw(e).addr();
        self.lock_implicit(cx, table, PageSize::K4, LockMode::Exclusive, OperandId::Rcx)?;
        self.blocked_and_tracked(cx, tdr, e, level, table, PageSize::K4, OperandId::Rcx)?;
        // is_sept_page_valid_for_merge
        let child_level = level - 1;
        let merged = sept::level_bytes(level);
        let stride = sept::level_bytes(child_level);
        let mut first = 0u64;
        let mut locked = 0u16;
        let mut result = Ok(());
        for i in 0..512u64 {
            let a = spa(table + i * 8);
            if !lock::entry_lock_host(t, a) {
                result = Err(status(TDX_OPERAND_BUSY, OperandId::Rcx));
                break;
            }
            locked += 1;
            let c = t.read(a) & !(bits::TDEL | bits::HP);
            let ok = if i == 0 {
                first = c;
                let ce = SeptEntry::from_raw(c);
                ce.leaf_hpa(child_level).is_multiple_of(merged)
                    && ce.is_leaf()
                    && ce.state().is_some_and(SeptState::mapped_or_pending)
            } else {
                c == first.wrapping_add(i * stride)
            };
            if !ok {
                result = Err(status(TDX_EPT_INVALID_PROMOTE_CONDITIONS, OperandId::Rcx));
                break;
            }
        }
        cx.held.push(HeldLock::Children(spa(table), locked));
        cx.refs.add(u32::from(locked));
        if let Err(st) = result {
            cx.view(e, level);
            return Err(st);
        }
        // Model guard: pamt_promote needs 512 uniform PAMT entries (true for state built by
        // AUG/DEMOTE; only direct state can break it).
        let first_page = SeptEntry::from_raw(first).leaf_hpa(child_level);
        let small = size_of_level(child_level);
        let owner = self.pamt.get(first_page, small);
        let uniform = owner.pt == PageType::Reg
            && (1..512u64).all(|i| {
                let p = self.pamt.get(first_page + i * stride, small);
                p.pt == owner.pt && p.owner == owner.owner
            });
        if !uniform {
            return Err(status(TDX_PAGE_METADATA_INCORRECT, OperandId::Rcx));
        }
        Ok(Commit::Promote { tdr, entry: addr, value: first, level, table })
    }

    /// TDH.MEM.PAGE.RELOCATE (`tdh_mem_page_relocate.c`): 4 KiB only.
    pub(crate) fn chk_relocate(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        cx.out.rcx = 0;
        cx.out.rdx = 0;
        let tdr = cx.inp.rdx;
        self.mem_preamble(cx, tdr, LockMode::Shared, Some(LockMode::Shared))?;
        let (gpa, level) =
            page_info(cx.inp.rcx, 0, 0).ok_or(status(TDX_OPERAND_INVALID, OperandId::Rcx))?;
        let (addr, e) = self.walk_lock(t, cx, tdr, gpa, level, Some(LockMode::Shared), true)?;
        let se = SeptEntry::from_raw(e);
        if !se.is_leaf() || allowed(5, e).is_none() {
            cx.view(e, level);
            return Err(status(TDX_EPT_ENTRY_STATE_INCORRECT, OperandId::Rcx));
        }
        let old = se.leaf_hpa(0);
        let new = cx.inp.r8;
        if old == new {
            return Err(status(TDX_OPERAND_INVALID, OperandId::R8));
        }
        self.lock_implicit(cx, old, PageSize::K4, LockMode::Exclusive, OperandId::Rcx)?;
        self.blocked_and_tracked(cx, tdr, e, level, old, PageSize::K4, OperandId::Rcx)?;
        self.lock_explicit(
            cx,
            new,
            PageSize::K4,
            true,
            LockMode::Exclusive,
            PageType::Nda,
            OperandId::R8,
        )?;
        Ok(Commit::Relocate { tdr, entry: addr, value: e, old, new })
    }

    /// TDH.MR.EXTEND (`tdh_mr_extend.c`): TDR EXCLUSIVE; the GPA (256-byte aligned) must map a
    /// MAPPED leaf. A failed walk is `EPT_ENTRY_NOT_PRESENT | RCX` with the view; a leaf in
    /// another state is `EPT_ENTRY_NOT_PRESENT` without operand or view.
    pub(crate) fn chk_mr_extend(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        cx.out.rcx = 0;
        cx.out.rdx = 0;
        let tdr = cx.inp.rdx;
        self.lock_tdr(cx, tdr, OperandId::Rdx, LockMode::Exclusive)?;
        self.td_state_check(cx, tdr, None)?;
        let gpa = cx.inp.rcx;
        if gpa & 0xFF != 0 {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rcx));
        }
        // check_and_walk_private_gpa_to_leaf: no tree lock (the TDR is held exclusively), walk
        // to any leaf.
        let max_pa = self.cfg.max_pa;
        let td = self.td_ref(tdr)?;
        if !td.private_gpa_valid(gpa, max_pa) {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rcx));
        }
        let Some(root) = td.sept_root else { return Err(TDX_TDCS_NOT_ALLOCATED) };
        let w = sept::walk(t, spa(root), td.root_level, gpa, 0);
        for &a in w.refs.iter() {
            cx.refs.push(a);
        }
        let se = SeptEntry::from_raw(w.entry);
        if !se.is_leaf() || !se.present() {
            cx.view(w.entry, w.level);
            return Err(status(TDX_EPT_ENTRY_NOT_PRESENT, OperandId::Rcx));
        }
        if allowed(16, w.entry).is_none() {
            return Err(TDX_EPT_ENTRY_NOT_PRESENT);
        }
        Ok(Commit::MrExtend { tdr, gpa })
    }

    /// TDH.PHYMEM.PAGE.RECLAIM (`tdh_phymem_page_reclaim.c`): only pages of a TD in TEARDOWN;
    /// RCX/RDX/R8 return the page type, owner and level (also on the lifecycle failures).
    pub(crate) fn chk_reclaim(
        &mut self,
        _t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
    ) -> Result<Commit, u64> {
        cx.out.rcx = 0;
        cx.out.rdx = 0;
        cx.out.r8 = 0;
        cx.out.r9 = 0;
        cx.out.r10 = 0;
        cx.out.r11 = 0;
        let hpa = cx.inp.rcx;
        if !self.hpa_ok(hpa, 4096) {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rcx));
        }
        let e = self.pamt.walk(hpa, PageSize::K4);
        self.lock_implicit_path(cx, hpa, e.size)?;
        if matches!(e.pt, PageType::Nda | PageType::Rsvd) {
            return Err(status(TDX_PAGE_METADATA_INCORRECT, OperandId::Rcx));
        }
        cx.out.rcx = u64::from(e.pt.value());
        cx.out.rdx = e.owner;
        cx.out.r8 = u64::from(sept::size_level(e.size));
        if hpa & (e.size.bytes() - 1) != 0 {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rcx));
        }
        if e.pt == PageType::Tdr {
            let td = self.tds.get(&hpa).ok_or(TDX_LIFECYCLE_STATE_INCORRECT)?;
            if td.lifecycle != crate::td::Lifecycle::Teardown {
                return Err(TDX_LIFECYCLE_STATE_INCORRECT);
            }
            if td.chldcnt != 0 {
                return Err(TDX_TD_ASSOCIATED_PAGES_EXIST);
            }
        } else {
            self.lock_implicit(cx, e.owner, PageSize::K4, LockMode::Shared, OperandId::Tdr)?;
            let td = self.tds.get(&e.owner).ok_or(TDX_LIFECYCLE_STATE_INCORRECT)?;
            if td.lifecycle != crate::td::Lifecycle::Teardown {
                return Err(TDX_LIFECYCLE_STATE_INCORRECT);
            }
        }
        Ok(Commit::Reclaim { page: hpa, entry: e })
    }

    /// The PAMT walk with locks of RECLAIM (`pamt_walk`, EXCLUSIVE at the entry reached).
    fn lock_implicit_path(&mut self, cx: &mut Cx, hpa: u64, reached: PageSize) -> Result<(), u64> {
        for size in [PageSize::G1, PageSize::M2, PageSize::K4] {
            let m = if size == reached { LockMode::Exclusive } else { LockMode::Shared };
            self.lock_implicit(cx, hpa, size, m, OperandId::Rcx)?;
            if size == reached {
                break;
            }
        }
        Ok(())
    }

    /// TDH.PHYMEM.PAGE.WBINVD (`tdh_phymem_page_wbinvd.c`): RCX is a KeyID-tagged address;
    /// the page must be free (PT_NDA) — REMOVE first. The cache effect is the machine's.
    pub(crate) fn chk_wbinvd(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let pa = cx.inp.rcx & !self.cfg.hkid_mask();
        self.lock_explicit(
            cx,
            pa,
            PageSize::K4,
            false,
            LockMode::Shared,
            PageType::Nda,
            OperandId::Rcx,
        )?;
        Ok(Commit::Nothing)
    }

    /// The work of the memory leaves.
    pub(crate) fn apply_mem(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        c: Commit,
        out: &mut crate::module::Regs,
        refs: &mut crate::module::MemRefs,
    ) -> bool {
        match c {
            Commit::SeptAdd { tdr, entry, page } => {
                sept::install_free_table(t, spa(page));
                refs.add(512);
                self.pamt.set(
                    page,
                    PamtEntry { pt: PageType::Ept, owner: tdr, bepoch: 0, size: PageSize::K4 },
                );
                self.add_chldcnt(tdr, 1);
                t.write(entry, SeptEntry::non_leaf(page).raw() | bits::TDEL);
                refs.push(entry);
            }
            Commit::PageAdd { tdr, entry, page, gpa } => {
                t.write(entry, SeptEntry::leaf(page, SeptState::Mapped, bits::PERMS).raw());
                refs.push(entry);
                if let Some(td) = self.tds.get_mut(&tdr) {
                    td.measure(MEASURE_PAGE_ADD, gpa);
                }
                self.add_chldcnt(tdr, 1);
                self.pamt.set(
                    page,
                    PamtEntry { pt: PageType::Reg, owner: tdr, bepoch: 0, size: PageSize::K4 },
                );
            }
            Commit::Aug { tdr, entry, page, level } => {
                t.write(entry, SeptEntry::leaf(page, SeptState::Pending, 0).raw());
                refs.push(entry);
                let size = size_of_level(level);
                self.add_chldcnt(tdr, size.pages_4k());
                self.pamt.set(page, PamtEntry { pt: PageType::Reg, owner: tdr, bepoch: 0, size });
            }
            Commit::Block { tdr, entry, value, level } => {
                let e = SeptEntry::from_raw(value);
                t.write(entry, blocked(e).raw());
                refs.push(entry);
                // BEPOCH is sampled after the entry is blocked.
                let (page, size) = tracked_page(e, level);
                let epoch = self.tds.get(&tdr).map_or(0, |td| td.epoch);
                self.pamt.set_bepoch(page, size, epoch);
            }
            Commit::Track { tdr } => {
                if let Some(td) = self.tds.get_mut(&tdr) {
                    td.epoch = td.epoch.saturating_add(1);
                }
            }
            Commit::Remove { tdr, entry, page, level } => {
                t.write(entry, FREE_RAW);
                refs.push(entry);
                let size = size_of_level(level);
                self.sub_chldcnt(tdr, size.pages_4k());
                self.pamt.clear(page, size);
                out.rcx = page;
            }
            Commit::SeptRemove { tdr, entry, table } => {
                t.write(entry, FREE_RAW);
                refs.push(entry);
                self.sub_chldcnt(tdr, 1);
                self.pamt.clear(table, PageSize::K4);
                t.remove(spa(table));
                out.rcx = table;
            }
            Commit::Unblock { entry, value } => {
                t.write(entry, unblocked(SeptEntry::from_raw(value)).raw());
                refs.push(entry);
            }
            Commit::Demote { tdr, entry, value, level, page, table } => {
                let child = unblocked(SeptEntry::from_raw(value & !bits::TDEL));
                let stride = sept::level_bytes(level - 1);
                sept::install_free_table(t, spa(table));
                for i in 0..512u64 {
                    t.write(spa(table + i * 8), child.with_addr(page + i * stride).raw());
                }
                refs.add(512);
                self.pamt.demote(page, size_of_level(level));
                t.write(entry, SeptEntry::non_leaf(table).raw() | bits::TDEL);
                refs.push(entry);
                self.pamt.set(
                    table,
                    PamtEntry { pt: PageType::Ept, owner: tdr, bepoch: 0, size: PageSize::K4 },
                );
                self.add_chldcnt(tdr, 1);
            }
            Commit::Promote { tdr, entry, value, level, table } => {
                t.write(entry, value | bits::TDEL);
                refs.push(entry);
                self.sub_chldcnt(tdr, 1);
                let page = SeptEntry::from_raw(value).leaf_hpa(level);
                self.pamt.promote(page, size_of_level(level));
                self.pamt.clear(table, PageSize::K4);
                t.remove(spa(table));
                out.rcx = table;
            }
            Commit::Relocate { tdr, entry, value, old, new } => {
                self.pamt.clear(old, PageSize::K4);
                self.pamt.set(
                    new,
                    PamtEntry { pt: PageType::Reg, owner: tdr, bepoch: 0, size: PageSize::K4 },
                );
                let e = unblocked(SeptEntry::from_raw(value).with_addr(new));
                t.write(entry, e.raw());
                refs.push(entry);
                out.rcx = old;
            }
            Commit::MrExtend { tdr, gpa } => {
                if let Some(td) = self.tds.get_mut(&tdr) {
                    td.measure(MEASURE_MR_EXTEND, gpa);
                }
            }
            Commit::Reclaim { page, entry } => {
                if entry.pt == PageType::Tdr {
                    self.tds.remove(&page);
                } else {
                    self.sub_chldcnt(entry.owner, entry.size.pages_4k());
                }
                if matches!(entry.pt, PageType::Ept | PageType::Tdcx) {
                    t.remove(spa(page));
                }
                self.pamt.clear(page, entry.size);
            }
            _ => return false,
        }
        true
    }

    pub(crate) fn add_chldcnt(&mut self, tdr: u64, n: u64) {
        if let Some(td) = self.tds.get_mut(&tdr) {
            td.chldcnt = td.chldcnt.wrapping_add(n);
        }
    }

    pub(crate) fn sub_chldcnt(&mut self, tdr: u64, n: u64) {
        if let Some(td) = self.tds.get_mut(&tdr) {
            td.chldcnt = td.chldcnt.wrapping_sub(n);
        }
    }
}

/// The output preamble of SEPT.REMOVE and PROMOTE, which have versions 0 and 1: RCX and RDX
/// cleared, and in version 1 the L2 S-EPT page operands (R9–R11) returned as NULL_PA (no L2 VM
/// exists in the model); a higher version is `TDX_OPERAND_INVALID | RAX`.
fn clear_outputs_l2(cx: &mut Cx) -> Result<(), u64> {
    cx.out.rcx = 0;
    cx.out.rdx = 0;
    if cx.version > 0 {
        cx.out.r9 = NULL_PA;
        cx.out.r10 = NULL_PA;
        cx.out.r11 = NULL_PA;
    }
    if cx.version > 1 {
        return Err(status(TDX_OPERAND_INVALID, OperandId::Rax));
    }
    Ok(())
}
