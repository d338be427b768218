//! The lifecycle SEAMCALLs that take a TD from nothing to RUNNABLE and back to TEARDOWN, and
//! TDH.VP.ENTER's checks (TDX module `tdh_mng_*.c`, `tdh_vp_*.c`, `tdh_mr_finalize.c`,
//! `tdh_phymem_cache_wb.c`, `td_transitions/tdh_vp_enter.c`).
//!
//! Kept as simple as the module allows while exact on the states and statuses:
//! - one package and one logical processor per vCPU: TDH.MNG.KEY.CONFIG configures "all
//!   packages" in one call, and vCPU association is a flag (no LP identities, so
//!   `TDX_VCPU_ASSOCIATED` only arises for a vCPU already inside its TD);
//! - TD_PARAMS contents are not simulated: TDH.MNG.INIT takes GPAW, SEPT_VE_DISABLE and
//!   MAX_VCPUS from [`crate::TdxConfig`] and only checks the TD_PARAMS address;
//! - CPUID/MSR/XFAM configuration, the x2APIC IDs of TDH.VP.INIT version 1, L2 VMs, key
//!   programming failures (KET busy, entropy) and TDH.PHYMEM.CACHE.WB interruption are not
//!   modelled.

use crate::lock::{HeldLock, LockMode};
use crate::module::{
    Commit, Cx, KotState, MAX_TDCS_PAGES, MAX_TDVPS_PAGES, MIN_TDCS_PAGES, MIN_TDVPS_PAGES,
    MemRefs, Regs, SEPT_ROOT_TDCX_INDEX, TdxModule,
};
use crate::pamt::{PageType, PamtEntry};
use crate::sept::{self, bits, spa};
use crate::status::*;
use crate::td::{Lifecycle, OpState, TdState, Vcpu, VcpuState, root_level};
use mmu_model::{GpaWidth, PhysMemTables};
use sim_core::{PageSize, Spa};

/// TD_PARAMS alignment (`TD_PARAMS_ALIGN_IN_BYTES`).
const TD_PARAMS_ALIGN: u64 = 1024;
/// VP.ENTER RCX: bits 11:0 and 63:54 reserved (`vcpu_and_flags_t`).
const VCPU_HANDLE_RESERVED: u64 = 0xFFC0_0000_0000_0FFF;
/// VP.ENTER RCX bit 52: host recoverability hint.
const VCPU_HOST_RECOVERABILITY_HINT: u64 = 1 << 52;
/// VP.ENTER RCX bit 53: resume L1.
const VCPU_RESUME_L1: u64 = 1 << 53;

impl TdxModule {
    fn pamt_owner(&self, page: u64) -> u64 {
        self.pamt.get(page, PageSize::K4).owner
    }

    fn vcpu(&self, tdr: u64, tdvpr: u64) -> Option<&Vcpu> {
        self.tds.get(&tdr).and_then(|td| td.vcpus.get(&tdvpr))
    }

    /// TDH.MNG.CREATE (`tdh_mng_create.c`): RCX = new TDR page, RDX = HKID.
    pub(crate) fn chk_mng_create(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let (tdr, hkid_info) = (cx.inp.rcx, cx.inp.rdx);
        let hkid = u16::try_from(hkid_info)
            .ok()
            .filter(|&h| h >= self.cfg.private_hkid_min && h <= self.cfg.private_hkid_max);
        let Some(hkid) = hkid else {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rdx));
        };
        self.lock_explicit(
            cx,
            tdr,
            PageSize::K4,
            true,
            LockMode::Exclusive,
            PageType::Nda,
            OperandId::Rcx,
        )?;
        if !self.kot_lock.try_acquire(LockMode::Exclusive) {
            return Err(status(TDX_OPERAND_BUSY, OperandId::Kot));
        }
        cx.held.push(HeldLock::Kot(LockMode::Exclusive));
        if self.kot.contains_key(&hkid) {
            return Err(TDX_HKID_NOT_FREE);
        }
        Ok(Commit::MngCreate { tdr, hkid })
    }

    /// TDH.MNG.KEY.CONFIG (`tdh_mng_key_config.c`): RCX = TDR.
    pub(crate) fn chk_key_config(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let tdr = cx.inp.rcx;
        self.lock_tdr(cx, tdr, OperandId::Rcx, LockMode::Exclusive)?;
        let td = self.tds.get(&tdr).ok_or(TDX_LIFECYCLE_STATE_INCORRECT)?;
        if td.fatal {
            return Err(TDX_TD_FATAL);
        }
        if td.lifecycle != Lifecycle::HkidAssigned {
            return Err(TDX_LIFECYCLE_STATE_INCORRECT);
        }
        if td.key_configured {
            return Err(TDX_KEY_CONFIGURED);
        }
        Ok(Commit::KeyConfig { tdr })
    }

    /// TDH.MNG.ADDCX (`tdh_mng_add_cx.c`): RCX = TDCX page, RDX = TDR. Page
    /// `SEPT_ROOT_TDCX_INDEX` becomes the S-EPT root, filled with FREE entries.
    pub(crate) fn chk_mng_addcx(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let (page, tdr) = (cx.inp.rcx, cx.inp.rdx);
        self.lock_tdr(cx, tdr, OperandId::Rdx, LockMode::Exclusive)?;
        let td = self.tds.get(&tdr).ok_or(TDX_TD_KEYS_NOT_CONFIGURED)?;
        if td.fatal {
            return Err(TDX_TD_FATAL);
        }
        if td.lifecycle != Lifecycle::KeysConfigured {
            return Err(TDX_TD_KEYS_NOT_CONFIGURED);
        }
        let index = td.tdcx_count;
        if index > MAX_TDCS_PAGES - 1 {
            return Err(TDX_TDCX_NUM_INCORRECT);
        }
        let op_state = td.op_state;
        self.lock_explicit(
            cx,
            page,
            PageSize::K4,
            true,
            LockMode::Exclusive,
            PageType::Nda,
            OperandId::Rcx,
        )?;
        if index + 1 > MIN_TDCS_PAGES && !op_state.allows(1) {
            return Err(TDX_OP_STATE_INCORRECT);
        }
        Ok(Commit::MngAddcx { tdr, page })
    }

    /// TDH.MNG.INIT (`tdh_mng_init.c`): RCX = TDR, RDX = TD_PARAMS (a shared, 1 KiB-aligned
    /// page; its contents are taken from the configuration).
    pub(crate) fn chk_mng_init(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        cx.out.rcx = 0;
        let tdr = cx.inp.rcx;
        self.lock_tdr(cx, tdr, OperandId::Rcx, LockMode::Exclusive)?;
        self.td_state_check(cx, tdr, None)?;
        if !self.shared_hpa_ok(cx.inp.rdx, TD_PARAMS_ALIGN) {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rdx));
        }
        Ok(Commit::MngInit { tdr })
    }

    /// TDH.VP.CREATE (`tdh_vp_create.c`): RCX = new TDVPR page, RDX = TDR.
    pub(crate) fn chk_vp_create(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let (tdvpr, tdr) = (cx.inp.rcx, cx.inp.rdx);
        self.lock_tdr(cx, tdr, OperandId::Rdx, LockMode::Shared)?;
        self.td_state_check(cx, tdr, Some(LockMode::Shared))?;
        self.lock_explicit(
            cx,
            tdvpr,
            PageSize::K4,
            true,
            LockMode::Exclusive,
            PageType::Nda,
            OperandId::Rcx,
        )?;
        Ok(Commit::VpCreate { tdr, tdvpr })
    }

    /// The TDVPR checks shared by VP.ADDCX, VP.INIT, VP.FLUSH and VP.ENTER: the explicit
    /// TDVPR page lock, then the owner TDR's implicit lock (`BUSY | TDR`).
    fn lock_tdvpr(
        &mut self,
        cx: &mut Cx,
        tdvpr: u64,
        op: OperandId,
        mode: LockMode,
    ) -> Result<u64, u64> {
        self.lock_explicit(cx, tdvpr, PageSize::K4, true, mode, PageType::Tdvpr, op)?;
        let tdr = self.pamt_owner(tdvpr);
        self.lock_implicit(cx, tdr, PageSize::K4, LockMode::Shared, OperandId::Tdr)?;
        if self.vcpu(tdr, tdvpr).is_none() {
            // Only reachable through set_pamt_direct: a PT_TDVPR page without a vCPU.
            return Err(status(TDX_PAGE_METADATA_INCORRECT, op));
        }
        Ok(tdr)
    }

    /// TDH.VP.ADDCX (`tdh_vp_addcx.c`): RCX = TDVPX page, RDX = TDVPR.
    pub(crate) fn chk_vp_addcx(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let (page, tdvpr) = (cx.inp.rcx, cx.inp.rdx);
        let tdr = self.lock_tdvpr(cx, tdvpr, OperandId::Rdx, LockMode::Exclusive)?;
        self.td_state_check(cx, tdr, Some(LockMode::Shared))?;
        let v = self.vcpu(tdr, tdvpr).ok_or(TDX_VCPU_STATE_INCORRECT)?;
        if v.state != VcpuState::Uninitialized {
            return Err(with_detail(TDX_VCPU_STATE_INCORRECT, v.state.value()));
        }
        if v.tdvps_pages >= MAX_TDVPS_PAGES {
            return Err(TDX_TDCX_NUM_INCORRECT);
        }
        self.lock_explicit(
            cx,
            page,
            PageSize::K4,
            true,
            LockMode::Exclusive,
            PageType::Nda,
            OperandId::Rcx,
        )?;
        Ok(Commit::VpAddcx { tdr, tdvpr, page })
    }

    /// TDH.VP.INIT (`tdh_vp_init.c`): RCX = TDVPR, RDX = the vCPU's initial RCX; version 1
    /// passes an x2APIC ID in R8 (only its range is checked).
    pub(crate) fn chk_vp_init(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        if cx.version > 1 {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rax));
        }
        let tdvpr = cx.inp.rcx;
        let tdr = self.lock_tdvpr(cx, tdvpr, OperandId::Rcx, LockMode::Exclusive)?;
        self.td_state_check(cx, tdr, Some(LockMode::Shared))?;
        let td = self.tds.get(&tdr).ok_or(TDX_TD_KEYS_NOT_CONFIGURED)?;
        let v = td.vcpus.get(&tdvpr).ok_or(TDX_TDCX_NUM_INCORRECT)?;
        if v.tdvps_pages < MIN_TDVPS_PAGES {
            return Err(TDX_TDCX_NUM_INCORRECT);
        }
        if v.state != VcpuState::Uninitialized {
            return Err(with_detail(TDX_VCPU_STATE_INCORRECT, v.state.value()));
        }
        if td.num_vcpus >= td.max_vcpus {
            return Err(TDX_MAX_VCPUS_EXCEEDED);
        }
        if cx.version == 1 && cx.inp.r8 > u64::from(u32::MAX) {
            return Err(status(TDX_OPERAND_INVALID, OperandId::R8));
        }
        Ok(Commit::VpInit { tdr, tdvpr })
    }

    /// TDH.MR.FINALIZE (`tdh_mr_finalize.c`): RCX = TDR; needs an initialised vCPU.
    pub(crate) fn chk_mr_finalize(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let tdr = cx.inp.rcx;
        self.lock_tdr(cx, tdr, OperandId::Rcx, LockMode::Exclusive)?;
        self.td_state_check(cx, tdr, None)?;
        if self.tds.get(&tdr).is_none_or(|td| td.num_vcpus == 0) {
            return Err(TDX_NO_VCPUS);
        }
        Ok(Commit::MrFinalize { tdr })
    }

    /// TDH.VP.FLUSH (`tdh_vp_flush.c`): RCX = TDVPR; dissociates the vCPU.
    pub(crate) fn chk_vp_flush(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let tdvpr = cx.inp.rcx;
        let tdr = self.lock_tdvpr(cx, tdvpr, OperandId::Rcx, LockMode::Exclusive)?;
        let td = self.tds.get(&tdr).ok_or(TDX_TD_KEYS_NOT_CONFIGURED)?;
        if td.lifecycle != Lifecycle::KeysConfigured {
            return Err(TDX_TD_KEYS_NOT_CONFIGURED);
        }
        let v = td.vcpus.get(&tdvpr).ok_or(TDX_TDCX_NUM_INCORRECT)?;
        if v.tdvps_pages < MIN_TDVPS_PAGES {
            return Err(TDX_TDCX_NUM_INCORRECT);
        }
        if !v.associated {
            return Err(TDX_VCPU_NOT_ASSOCIATED);
        }
        Ok(Commit::VpFlush { tdr, tdvpr })
    }

    /// TDH.MNG.VPFLUSHDONE (`tdh_mng_vpflushdone.c`): RCX = TDR; no vCPU may be associated.
    pub(crate) fn chk_vpflushdone(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let tdr = cx.inp.rcx;
        self.lock_tdr(cx, tdr, OperandId::Rcx, LockMode::Exclusive)?;
        if !self.kot_lock.try_acquire(LockMode::Exclusive) {
            return Err(status(TDX_OPERAND_BUSY, OperandId::Kot));
        }
        cx.held.push(HeldLock::Kot(LockMode::Exclusive));
        let td = self.tds.get(&tdr).ok_or(TDX_LIFECYCLE_STATE_INCORRECT)?;
        if !matches!(td.lifecycle, Lifecycle::KeysConfigured | Lifecycle::HkidAssigned) {
            return Err(TDX_LIFECYCLE_STATE_INCORRECT);
        }
        if td.tdcx_count >= MIN_TDCS_PAGES
            && td.op_state != OpState::Uninitialized
            && td.num_assoc_vcpus != 0
        {
            return Err(TDX_FLUSHVP_NOT_DONE);
        }
        Ok(Commit::VpFlushDone { tdr })
    }

    /// TDH.MNG.KEY.FREEID (`tdh_mng_key_freeid.c`): RCX = TDR; after TDH.PHYMEM.CACHE.WB.
    pub(crate) fn chk_key_freeid(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let tdr = cx.inp.rcx;
        self.lock_tdr(cx, tdr, OperandId::Rcx, LockMode::Exclusive)?;
        let td = self.tds.get(&tdr).ok_or(TDX_LIFECYCLE_STATE_INCORRECT)?;
        if td.lifecycle != Lifecycle::Blocked {
            return Err(TDX_LIFECYCLE_STATE_INCORRECT);
        }
        let hkid = td.hkid;
        if !self.kot_lock.try_acquire(LockMode::Exclusive) {
            return Err(status(TDX_OPERAND_BUSY, OperandId::Kot));
        }
        cx.held.push(HeldLock::Kot(LockMode::Exclusive));
        if self.kot.get(&hkid) == Some(&KotState::Flushed { wb_pending: true }) {
            return Err(TDX_WBCACHE_NOT_COMPLETE);
        }
        Ok(Commit::KeyFreeid { tdr })
    }

    /// TDH.PHYMEM.CACHE.WB (`tdh_phymem_cache_wb.c`): RCX = 0 (start) or 1 (resume). The
    /// write-back is never interrupted in the model, so a resume has nothing to resume.
    pub(crate) fn chk_cache_wb(&mut self, cx: &mut Cx) -> Result<Commit, u64> {
        let cmd = cx.inp.rcx;
        if cmd > 1 {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rcx));
        }
        if !self.kot_lock.try_acquire(LockMode::Shared) {
            return Err(status(TDX_OPERAND_BUSY, OperandId::Kot));
        }
        cx.held.push(HeldLock::Kot(LockMode::Shared));
        if cmd == 1 {
            return Err(TDX_WBCACHE_RESUME_ERROR);
        }
        if !self.kot.values().any(|k| matches!(k, KotState::Flushed { .. })) {
            return Err(TDX_NO_HKID_READY_TO_WBCACHE);
        }
        Ok(Commit::CacheWb)
    }

    /// TDH.VP.ENTER's checks and locks up to the TD entry (`tdh_vp_enter.c`): the vCPU handle,
    /// TDVPR (SHARED) and TDR locks, OP_STATE (RUNNABLE), the vCPU state, the zero-step
    /// filter's tree lock (EXCLUSIVE, `BUSY | SEPT_TREE`) when `zero_step`, and the epoch lock
    /// (SHARED, `BUSY | TD_EPOCH`) with REFCOUNT[TD_EPOCH & 1] incremented. (The module takes
    /// the epoch before the filter and reverts the refcount if the filter fails; the order of
    /// the two try-locks is swapped here, with the same outcomes.)
    pub(crate) fn chk_vp_enter(&mut self, cx: &mut Cx, zero_step: bool) -> Result<(u64, u64), u64> {
        let rcx = cx.inp.rcx;
        if rcx & VCPU_HANDLE_RESERVED != 0 {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rcx));
        }
        let tdvpr = rcx & bits::HPA_MASK;
        let tdr = self.lock_tdvpr(cx, tdvpr, OperandId::Rcx, LockMode::Shared)?;
        self.td_state_check(cx, tdr, Some(LockMode::Shared))?;
        let v = self.vcpu(tdr, tdvpr).ok_or(TDX_TDCX_NUM_INCORRECT)?;
        if v.tdvps_pages < MIN_TDVPS_PAGES {
            return Err(TDX_TDCX_NUM_INCORRECT);
        }
        if v.state != VcpuState::Ready {
            return Err(with_detail(TDX_VCPU_STATE_INCORRECT, v.state.value()));
        }
        if v.in_guest {
            return Err(TDX_VCPU_ASSOCIATED);
        }
        // The last TD exit is never ASYNC_TRAP in the model, and the vCPU is always in L1.
        if rcx & (VCPU_HOST_RECOVERABILITY_HINT | VCPU_RESUME_L1) != 0 {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rcx));
        }
        let td = self.tds.get_mut(&tdr).ok_or(TDX_TD_KEYS_NOT_CONFIGURED)?;
        if !td.epoch_lock.try_acquire(LockMode::Shared) {
            return Err(status(TDX_OPERAND_BUSY, OperandId::TdEpoch));
        }
        cx.held.push(HeldLock::Epoch(tdr, LockMode::Shared));
        if zero_step {
            if !td.tree_lock.try_acquire(LockMode::Exclusive) {
                return Err(status(TDX_OPERAND_BUSY, OperandId::SeptTree));
            }
            cx.held.push(HeldLock::Tree(tdr, LockMode::Exclusive));
        }
        let slot = usize::from(td.epoch & 1 == 1);
        td.refcount[slot] += 1;
        Ok((tdr, tdvpr))
    }

    /// The work of every commit.
    pub(crate) fn apply_commit(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        c: Commit,
        out: &mut Regs,
        refs: &mut MemRefs,
    ) {
        if self.apply_mem(t, c, out, refs) {
            return;
        }
        let cfg_gpaw = if self.cfg.gpaw == 52 { GpaWidth::W52 } else { GpaWidth::W48 };
        match c {
            Commit::MngCreate { tdr, hkid } => {
                self.tds.insert(tdr, TdState::new(hkid, cfg_gpaw));
                self.pamt.set(
                    tdr,
                    PamtEntry { pt: PageType::Tdr, owner: 0, bepoch: 0, size: PageSize::K4 },
                );
                self.kot.insert(hkid, KotState::Assigned);
            }
            Commit::KeyConfig { tdr } => {
                if let Some(td) = self.tds.get_mut(&tdr) {
                    td.key_configured = true;
                    td.lifecycle = Lifecycle::KeysConfigured;
                }
            }
            Commit::MngAddcx { tdr, page } => {
                let Some(td) = self.tds.get_mut(&tdr) else { return };
                if td.tdcx_count == SEPT_ROOT_TDCX_INDEX {
                    td.sept_root = Some(page);
                    sept::install_free_table(t, spa(page));
                    refs.add(512);
                }
                td.tdcx.push(page);
                td.tdcx_count += 1;
                td.chldcnt = td.chldcnt.wrapping_add(1);
                self.pamt.set(
                    page,
                    PamtEntry { pt: PageType::Tdcx, owner: tdr, bepoch: 0, size: PageSize::K4 },
                );
            }
            Commit::MngInit { tdr } => {
                let (ve, vcpus) = (self.cfg.sept_ve_disable, self.cfg.max_vcpus);
                if let Some(td) = self.tds.get_mut(&tdr) {
                    td.epoch = 1;
                    td.refcount = [0; 2];
                    td.num_vcpus = 0;
                    td.num_assoc_vcpus = 0;
                    td.gpaw = cfg_gpaw;
                    td.root_level = root_level(cfg_gpaw);
                    td.sept_ve_disable = ve;
                    td.max_vcpus = vcpus;
                    td.op_state = OpState::Initialized;
                }
            }
            Commit::VpCreate { tdr, tdvpr } => {
                if let Some(td) = self.tds.get_mut(&tdr) {
                    td.vcpus.insert(tdvpr, Vcpu::new());
                    td.chldcnt = td.chldcnt.wrapping_add(1);
                }
                self.pamt.set(
                    tdvpr,
                    PamtEntry { pt: PageType::Tdvpr, owner: tdr, bepoch: 0, size: PageSize::K4 },
                );
            }
            Commit::VpAddcx { tdr, tdvpr, page } => {
                if let Some(td) = self.tds.get_mut(&tdr) {
                    if let Some(v) = td.vcpus.get_mut(&tdvpr) {
                        v.tdvps_pages += 1;
                        v.tdvpx.push(page);
                    }
                    td.chldcnt = td.chldcnt.wrapping_add(1);
                }
                self.pamt.set(
                    page,
                    PamtEntry { pt: PageType::Tdcx, owner: tdr, bepoch: 0, size: PageSize::K4 },
                );
            }
            Commit::VpInit { tdr, tdvpr } => {
                if let Some(td) = self.tds.get_mut(&tdr) {
                    if let Some(v) = td.vcpus.get_mut(&tdvpr) {
                        v.state = VcpuState::Ready;
                        v.associated = true;
                        v.vcpu_epoch = 0;
                    }
                    td.num_vcpus += 1;
                    td.num_assoc_vcpus += 1;
                }
            }
            Commit::MrFinalize { tdr } => {
                if let Some(td) = self.tds.get_mut(&tdr) {
                    td.mrtd_finalized = true;
                    td.op_state = OpState::Runnable;
                }
            }
            Commit::VpFlush { tdr, tdvpr } => {
                if let Some(td) = self.tds.get_mut(&tdr) {
                    if let Some(v) = td.vcpus.get_mut(&tdvpr) {
                        v.associated = false;
                    }
                    td.num_assoc_vcpus = td.num_assoc_vcpus.saturating_sub(1);
                }
            }
            Commit::VpFlushDone { tdr } => {
                if let Some(td) = self.tds.get_mut(&tdr) {
                    td.lifecycle = Lifecycle::Blocked;
                    self.kot.insert(td.hkid, KotState::Flushed { wb_pending: true });
                }
            }
            Commit::KeyFreeid { tdr } => {
                if let Some(td) = self.tds.get_mut(&tdr) {
                    td.lifecycle = Lifecycle::Teardown;
                    self.kot.remove(&td.hkid);
                }
            }
            Commit::CacheWb => {
                for k in self.kot.values_mut() {
                    if let KotState::Flushed { wb_pending } = k {
                        *wb_pending = false;
                    }
                }
            }
            // Memory commits are done by apply_mem; VP.ENTER by TdxModule::apply.
            _ => {}
        }
    }
}
