//! The guest side: TDG.MEM.PAGE.ACCEPT (TDCALL 6), the validity check of
//! `TDG.VP.VMCALL<MapGPA>`, and what a guest access to a private GPA does (spec/tdx.md §2.5;
//! TDX module `td_dispatcher/vm_exits/tdg_mem_page_accept.c`, `td_ept_violation.c`,
//! `td_vmexit.h: async_tdexit_ept_violation`).

use crate::lock::{self, GuestLockError};
use crate::module::{ACCEPT_TD_EXIT, MemRefs, Regs, TdxModule, page_info};
use crate::sept::{self, SeptEntry, SeptState, bits, spa};
use crate::status::*;
use mmu_model::{GpaWidth, PhysMemTables};
use sim_core::{Cycles, Spa};

/// Extended exit qualification type NONE (`vmx_eeq_type_t`).
pub const EEQ_NONE: u8 = 0;
/// Extended exit qualification type ACCEPT: an ACCEPT that needs the VMM (AUG or DEMOTE).
pub const EEQ_ACCEPT: u8 = 1;
/// Extended exit qualification type PENDING_EPT_VIOLATION: a guest access to a PENDING page
/// with SEPT_VE_DISABLE.
pub const EEQ_PENDING_EPT_VIOLATION: u8 = 6;

/// An EPT-violation TD exit to the VMM as the module reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolationExit {
    /// The faulting GPA, page-aligned (for ACCEPT: the GPA aligned to the requested level).
    pub gpa: u64,
    /// The exit qualification: bit 1 (data write; ACCEPT is a write), bits 3–5 the R/W/X of
    /// the S-EPT entry where the walk stopped.
    pub exit_qualification: u64,
    /// The extended exit qualification: type in bits 3:0, info in bits 63:32 (for ACCEPT:
    /// requested level bits 2:0, error level 5:3, error state 13:6, error is-leaf 14 —
    /// `tdaccept_vmx_eeq_info_t`).
    pub eeq: u64,
    /// The EEQ type.
    pub eeq_type: u8,
    /// Requested level (ACCEPT).
    pub req_level: u8,
    /// Level where the walk stopped or the state was wrong.
    pub err_level: u8,
    /// Public state of that entry.
    pub err_state: u8,
    /// Whether that entry is a leaf.
    pub err_is_leaf: bool,
}

impl EptViolationExit {
    fn accept(gpa: u64, req_level: u8, entry: u64, err_level: u8) -> EptViolationExit {
        let e = SeptEntry::from_raw(entry);
        let err_state = e.state().map_or(sept::PUBLIC_UNKNOWN, SeptState::public);
        let err_is_leaf = e.is_leaf();
        let info = u64::from(req_level & 7)
            | (u64::from(err_level & 7) << 3)
            | (u64::from(err_state) << 6)
            | (u64::from(err_is_leaf) << 14);
        let rwx = entry & 7;
        EptViolationExit {
            gpa,
            exit_qualification: (1 << 1) | (rwx << 3),
            eeq: u64::from(EEQ_ACCEPT) | (info << 32),
            eeq_type: EEQ_ACCEPT,
            req_level,
            err_level,
            err_state,
            err_is_leaf,
        }
    }
}

/// What a TDCALL did: either it returned to the guest with a status in RAX, or it TD-exited
/// to the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestOutcome {
    /// The guest's registers after the call (RAX = status when `exit` is `None`).
    pub regs: Regs,
    /// The TD exit, when the call ended in one (RAX is then not updated).
    pub exit: Option<EptViolationExit>,
    /// Cycles: the TDCALL round trip, the zeroing (512 × `accept_4k` for 2 MiB) and a TD exit.
    pub cost: Cycles,
    /// S-EPT references.
    pub refs: MemRefs,
}

impl GuestOutcome {
    /// RAX.
    pub const fn status(&self) -> u64 {
        self.regs.rax
    }
}

/// An ACCEPT between [`TdxModule::accept_begin`] and [`TdxModule::accept_finish`]: it holds
/// the entry's guest-side lock (TDEL) while it zeroes the page.
#[must_use = "an ACCEPT in flight holds the entry's guest-side lock until accept_finish()"]
#[derive(Debug)]
pub struct AcceptInFlight {
    entry: Spa,
    value: u64,
    level: u8,
    regs: Regs,
    refs: MemRefs,
}

/// A guest access to a private GPA that translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The host physical address accessed.
    pub hpa: Spa,
    /// The level of the leaf that mapped it (0 = 4K, 1 = 2M, 2 = 1G).
    pub level: u8,
    /// S-EPT entries read (one per level walked).
    pub refs: MemRefs,
}

/// Why a guest access to a private GPA did not translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrivateFault {
    /// A #VE injected into the guest: the page is PENDING and SEPT_VE_DISABLE is clear.
    Ve {
        /// The level of the PENDING leaf.
        level: u8,
    },
    /// An EPT-violation TD exit: EEQ PENDING_EPT_VIOLATION (6) for a PENDING page with
    /// SEPT_VE_DISABLE, NONE (0) otherwise; `level`/`state` say where the module's walk stopped.
    EptViolation {
        /// EEQ type, 6 or 0.
        eeq_type: u8,
        /// Level of the entry the walk stopped at.
        level: u8,
        /// Its state (`None`: no module encoding).
        state: Option<SeptState>,
    },
    /// GPA bits above the TD's width are set: the module turns the violation into #PF(RSVD)
    /// (`are_gpa_bits_above_virt_maxpa_set`).
    ReservedGpaBits,
    /// The GPA is shared: the shared EPT translates it, not the S-EPT.
    Shared,
    /// No such TD (API misuse).
    NoTd,
}

/// Result of the MapGPA validity check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapGpaCheck {
    /// TDVMCALL status (`TDVMCALL_STATUS_*`).
    pub status: u64,
    /// Whether the range is being made private (S-bit clear).
    pub to_private: bool,
}

impl TdxModule {
    /// TDG.MEM.PAGE.ACCEPT (TDCALL 6) by vCPU `vcpu` (TDVPR HPA) of TD `tdr`; RCX = GPA |
    /// level (4K or 2M). Every outcome of spec/tdx.md §2.5. An EPT-violation exit is a TD exit:
    /// if the vCPU was inside its TD (see [`TdxModule::vp_enter_end`]) it leaves it.
    /// The 2 MiB zeroing is done in one go (the module's interruptible `accept_counter` path is
    /// not modelled: guest interrupts are not simulated). An unknown `tdr` (API misuse) returns
    /// `TDX_OPERAND_INVALID | RCX`.
    pub fn accept(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        tdr: u64,
        vcpu: u64,
        regs: Regs,
    ) -> GuestOutcome {
        match self.accept_begin(tables, tdr, vcpu, regs) {
            Ok(f) => self.accept_finish(tables, f),
            Err(o) => o,
        }
    }

    /// First half of ACCEPT: its checks, up to holding the PENDING entry's guest-side lock.
    ///
    /// # Errors
    /// The outcome of an ACCEPT that ended before zeroing (a status or a TD exit).
    #[allow(clippy::result_large_err)] // the error is the call's outcome; no allocation per call
    pub fn accept_begin(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        tdr: u64,
        vcpu: u64,
        regs: Regs,
    ) -> Result<AcceptInFlight, GuestOutcome> {
        let mut refs = MemRefs::new();
        let ret = |m: &mut TdxModule, st: u64, refs: MemRefs| {
            m.count_accept(st & STATUS_MASK);
            GuestOutcome {
                regs: Regs { rax: st, ..regs },
                exit: None,
                cost: m.cfg.costs.tdcall_round_trip,
                refs,
            }
        };
        let Some((gpa, req)) = page_info(regs.rcx, 0, 1) else {
            return Err(ret(self, status(TDX_OPERAND_INVALID, OperandId::Rcx), refs));
        };
        let max_pa = self.cfg.max_pa;
        let Some(td) = self.tds.get(&tdr) else {
            return Err(ret(self, status(TDX_OPERAND_INVALID, OperandId::Rcx), refs));
        };
        if !td.private_gpa_valid(gpa, max_pa) {
            return Err(ret(self, status(TDX_OPERAND_INVALID, OperandId::Rcx), refs));
        }
        let Some(root) = td.sept_root else {
            return Err(ret(self, status(TDX_OPERAND_INVALID, OperandId::Rcx), refs));
        };
        // walk_private_gpa: no tree lock.
        let w = sept::walk(tables, spa(root), td.root_level, gpa, req);
        for &a in w.refs.iter() {
            refs.push(a);
        }
        let walked = SeptEntry::from_raw(w.entry);
        if w.level != req {
            // Case 1.1: a larger guest-accessible leaf; cases 1.2/2: anything else exits.
            if walked.state().is_some_and(SeptState::guest_accessible_leaf) {
                let st = with_detail(TDX_PAGE_ALREADY_ACCEPTED, u32::from(w.level));
                return Err(ret(self, st, refs));
            }
            return Err(self.accept_exit(tables, vcpu, regs, gpa, req, w.entry, w.level, refs));
        }
        let is_leaf = walked.is_leaf();
        match lock::entry_lock_guest(tables, w.entry_addr) {
            Ok(()) => {}
            Err(e) => {
                let code = match e {
                    GuestLockError::Busy => TDX_OPERAND_BUSY,
                    GuestLockError::HostPriority => TDX_OPERAND_BUSY_HOST_PRIORITY,
                };
                return Err(ret(self, status(code, OperandId::Rcx), refs));
            }
        }
        let e = tables.read(w.entry_addr);
        let state = SeptState::decode(e);
        let fail = if state != Some(SeptState::Free) && !is_leaf {
            // Case 3: a table where a 2 MiB page was requested.
            Some(with_detail(TDX_PAGE_SIZE_MISMATCH, u32::from(req)))
        } else if state.is_some_and(SeptState::guest_accessible_leaf) {
            Some(with_detail(TDX_PAGE_ALREADY_ACCEPTED, u32::from(req)))
        } else {
            None
        };
        if let Some(st) = fail {
            lock::entry_unlock(tables, w.entry_addr);
            return Err(ret(self, st, refs));
        }
        if !state.is_some_and(sept::accept_allows) {
            lock::entry_unlock(tables, w.entry_addr);
            return Err(self.accept_exit(tables, vcpu, regs, gpa, req, e, req, refs));
        }
        Ok(AcceptInFlight { entry: w.entry_addr, value: e, level: req, regs, refs })
    }

    /// Second half of ACCEPT: zero the page (512 × 4 KiB for 2 MiB), make the entry MAPPED
    /// (or EXPORTED_DIRTY) with RWX, release the guest-side lock, return SUCCESS.
    pub fn accept_finish(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        f: AcceptInFlight,
    ) -> GuestOutcome {
        let AcceptInFlight { entry, value, level, regs, mut refs } = f;
        // A finished 2 MiB accept leaves ACCEPT_COUNTER at 0 (bits 20:12 of a 4 KiB leaf are
        // address bits).
        let value = if level == 1 { value & !bits::ACCEPT_COUNTER } else { value };
        let e = SeptEntry::from_raw(value);
        let target = if e.state() == Some(SeptState::Pending) {
            SeptState::Mapped
        } else {
            SeptState::ExportedDirty
        };
        let new = e.with_perms(bits::PERMS).with_state(target);
        tables.write(entry, new.raw() & !bits::TDEL);
        refs.push(entry);
        self.count_accept(TDX_SUCCESS);
        let pages = if level == 1 { 512 } else { 1 };
        GuestOutcome {
            regs: Regs { rax: TDX_SUCCESS, ..regs },
            exit: None,
            cost: self.cfg.costs.tdcall_round_trip + self.cfg.costs.accept_4k.times(pages),
            refs,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn accept_exit(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        vcpu: u64,
        regs: Regs,
        gpa: u64,
        req: u8,
        entry: u64,
        err_level: u8,
        refs: MemRefs,
    ) -> GuestOutcome {
        self.count_accept(ACCEPT_TD_EXIT);
        let exit_cost = self.td_exit(tables, vcpu).unwrap_or(self.cfg.costs.td_exit);
        GuestOutcome {
            regs,
            exit: Some(EptViolationExit::accept(gpa, req, entry, err_level)),
            cost: self.cfg.costs.tdcall_round_trip + exit_cost,
            refs,
        }
    }

    /// The validity check KVM makes on `TDG.VP.VMCALL<MapGPA>` (sub-function 0x10001; Linux
    /// `arch/x86/kvm/vmx/tdx.c: tdx_map_gpa`, spec/tdx.md §4.2 \[MAPGPA\]): the range must not
    /// wrap, both ends must be legal GPAs (below 2^GPAW) on the same side of the shared bit
    /// (`INVALID_OPERAND`), and start and size must be 4 KiB aligned (`ALIGN_ERROR`). `gpaw`
    /// is the TD's GPA width.
    pub fn map_gpa_check(gpaw: GpaWidth, gpa: u64, size: u64) -> MapGpaCheck {
        let width = match gpaw {
            GpaWidth::W48 => 48,
            GpaWidth::W52 => 52,
        };
        let to_private = !gpaw.is_shared(sim_core::Gpa::new_truncate(gpa));
        let end = gpa.wrapping_add(size);
        let legal = |a: u64| a >> width == 0;
        let last = end.wrapping_sub(1);
        let same_side = (gpa & gpaw.shared_mask()) == (last & gpaw.shared_mask());
        let status = if end <= gpa || !legal(gpa) || !legal(last) || !same_side {
            TDVMCALL_STATUS_INVALID_OPERAND
        } else if gpa & 0xFFF != 0 || size & 0xFFF != 0 {
            TDVMCALL_STATUS_ALIGN_ERROR
        } else {
            TDVMCALL_STATUS_SUCCESS
        };
        MapGpaCheck { status, to_private }
    }

    /// A guest data access to private GPA `gpa` of TD `tdr`: the hardware S-EPT walk (every
    /// level needs R, and W for a write), and on a violation the module's handling
    /// (`td_ept_violation.c`): a PENDING page the guest may accept raises #VE, or TD-exits with
    /// EEQ PENDING_EPT_VIOLATION under SEPT_VE_DISABLE; any other miss TD-exits with no EEQ.
    /// Functional only (no state changes, no cost).
    ///
    /// # Errors
    /// The [`PrivateFault`].
    pub fn private_access(
        &self,
        tables: &PhysMemTables<Spa>,
        tdr: u64,
        gpa: u64,
        write: bool,
    ) -> Result<Translation, PrivateFault> {
        let td = self.tds.get(&tdr).ok_or(PrivateFault::NoTd)?;
        let width = match td.gpaw {
            GpaWidth::W48 => 48u32,
            GpaWidth::W52 => 52,
        };
        let shared = 1u64 << (width - 1);
        if gpa & shared != 0 {
            return Err(PrivateFault::Shared);
        }
        let min = width.min(u32::from(self.cfg.max_pa));
        if gpa & !((1u64 << min) - 1) & !shared != 0 {
            return Err(PrivateFault::ReservedGpaBits);
        }
        let root = td.sept_root.ok_or(PrivateFault::NoTd)?;
        let w = sept::walk(tables, spa(root), td.root_level, gpa, 0);
        let mut refs = MemRefs::new();
        for &a in w.refs.iter() {
            refs.push(a);
        }
        let need = if write { bits::R | bits::W } else { bits::R };
        // Every non-leaf on the way has RWX (the walk continued through it); the last entry
        // decides.
        let e = SeptEntry::from_raw(w.entry);
        if e.is_leaf() && w.entry & need == need {
            let size = sept::level_bytes(w.level);
            let hpa = e.leaf_hpa(w.level) | (gpa & (size - 1) & !0xFFF) | (gpa & 0xFFF);
            return Ok(Translation { hpa: spa(hpa), level: w.level, refs });
        }
        let state = e.state();
        if state.is_some_and(SeptState::pending_acceptable) {
            if td.sept_ve_disable {
                return Err(PrivateFault::EptViolation {
                    eeq_type: EEQ_PENDING_EPT_VIOLATION,
                    level: w.level,
                    state,
                });
            }
            return Err(PrivateFault::Ve { level: w.level });
        }
        Err(PrivateFault::EptViolation { eeq_type: EEQ_NONE, level: w.level, state })
    }
}
