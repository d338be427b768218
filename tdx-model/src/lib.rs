//! tdx-model: the Intel TDX module's memory-protection path (DESIGN.md "Layers").
//!
//! What it models, following the TDX module source (github `intel/tdx-module`, module 1.5 and
//! newer; spec/tdx.md is the digest) and Linux KVM:
//! - **SEAMCALLs** ([`TdxModule::seamcall`]) with their leaf numbers, operand layouts, status
//!   codes and operand IDs ([`status`]): the memory leaves TDH.MEM.SEPT.ADD, PAGE.ADD,
//!   PAGE.AUG, RANGE.BLOCK, TRACK, PAGE.REMOVE, SEPT.REMOVE, RANGE.UNBLOCK, PAGE.DEMOTE,
//!   PAGE.PROMOTE, PAGE.RELOCATE, MR.EXTEND, PHYMEM.PAGE.RECLAIM, PHYMEM.PAGE.WBINVD, and the
//!   lifecycle leaves from TDH.MNG.CREATE to TDH.MNG.KEY.FREEID (including TDH.VP.ENTER and
//!   TDH.PHYMEM.CACHE.WB). Each leaf runs its checks in the module handler's order, so the
//!   first failing check decides the status, and returns the S-EPT entry's architectural view
//!   in RCX/RDX where the module does ([`arch_view`]).
//! - **The Secure EPT** in simulated physical memory ([`mmu_model::PhysMemTables`]): entries
//!   are bit-exact ([`SeptEntry`], [`SeptState`] with the module's state encoding), so the
//!   machine's hardware walker walks the same tables ([`TdxModule::sept_root`]).
//! - **The PAMT** ([`Pamt`]): page type, owner, BEPOCH per 4K/2M/1G entry, sparse.
//! - **TLB tracking**: TD_EPOCH, REFCOUNT\[2\], BEPOCH and the "blocked + tracked" rule.
//! - **Locks** as explicit try-lock state (the S-EPT tree, epoch and OP_STATE sharex locks, the
//!   PAMT entry locks, the per-entry TDEL/HP bits, the KOT lock), with a split API for race
//!   exploration: [`TdxModule::begin`]/[`TdxModule::finish`],
//!   [`TdxModule::vp_enter_begin`]/[`TdxModule::vp_enter_end`]/[`TdxModule::td_exit`], and
//!   [`TdxModule::accept_begin`]/[`TdxModule::accept_finish`].
//! - **The guest side**: TDG.MEM.PAGE.ACCEPT ([`TdxModule::accept`]), the MapGPA check
//!   ([`TdxModule::map_gpa_check`]) and guest accesses to private GPAs
//!   ([`TdxModule::private_access`]).
//! - **Direct state setup** for scenario `state` lines and **inspection** ([`TdxModule::td`],
//!   [`TdxModule::sept_entry`], [`TdxModule::pamt`]).
//!
//! Not modelled: live migration (its S-EPT states are decoded but never produced), L2 VMs
//! (TD partitioning), TDX Connect/TDX-IO, TDMR layout (every page below MAX_PA is TDMR memory),
//! TD_PARAMS contents (taken from [`TdxConfig`]), CPUID/MSR virtualisation, multiple packages
//! and logical-processor identities, host-interrupt interruption of DEMOTE/PROMOTE/CACHE.WB and
//! of a 2 MiB ACCEPT, the zero-step detector's counting (only its tree lock is offered, through
//! `vp_enter_begin`), MRTD as SHA-384 (a running 64-bit hash stands in), KeyIDs inside S-EPT
//! addresses, and page contents (the machine models caches and poison). Cycle costs are
//! unsourced (spec/tdx.md §5.1) and named in [`TdxCosts`].
//!
//! Two points where the module source differs from spec/tdx.md: TLB tracking also holds for a
//! BEPOCH older than TD_EPOCH − 1 (`is_tlb_tracked` returns `bepoch < td_epoch - 1` as
//! tracked; the digest lists only `BEPOCH == TD_EPOCH − 1 && REFCOUNT == 0`), and
//! TDH.MR.EXTEND on a leaf that is not MAPPED returns `TDX_EPT_ENTRY_NOT_PRESENT` without
//! operand or view (only a failed walk adds `| RCX`). The model follows the source.
//!
//! ```
//! use mmu_model::{LinearFrames, PhysMemTables};
//! use sim_core::Spa;
//! use tdx_model::{OpState, Regs, SeptState, TdxConfig, TdxModule, leaf, status};
//!
//! let mut tables = PhysMemTables::new();
//! let mut frames = LinearFrames::new(Spa::new(0x1000_0000), Spa::new(0x1100_0000));
//! let mut m = TdxModule::new(TdxConfig::default());
//! let (tdr, root) = (0x10_0000, 0x10_1000);
//! m.create_td_direct(&mut tables, tdr, 16, OpState::Runnable, root, 48).unwrap();
//! // A 2M region whose 4K table exists; one FREE 4K entry in it.
//! m.set_sept_direct(&mut tables, &mut frames, tdr, 0x4000_0000, 1, SeptState::NlMapped, 0x20_0000)
//!     .unwrap();
//! let aug = Regs { rcx: 0x4000_0000, rdx: tdr, r8: 0x80_0000, ..Regs::default() };
//! let out = m.seamcall(&mut tables, leaf::MEM_PAGE_AUG, 0, aug);
//! assert_eq!(out.status(), status::TDX_SUCCESS);
//! assert_eq!(m.sept_entry(&tables, tdr, 0x4000_0000, 0), Some((SeptState::Pending, 0x80_0000)));
//! assert_eq!(m.td(tdr).unwrap().chldcnt, 5); // root, PDPT, PD, PT and the page
//! ```
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![deny(clippy::iter_over_hash_type)]

mod config;
mod guest;
mod leaves;
mod lifecycle;
mod lock;
mod module;
mod pamt;
mod sept;
pub mod status;
mod td;

pub use config::{Integrity, TdxConfig, TdxCosts};
pub use guest::{
    AcceptInFlight, EEQ_ACCEPT, EEQ_NONE, EEQ_PENDING_EPT_VIOLATION, EptViolationExit,
    GuestOutcome, MapGpaCheck, PrivateFault, Translation,
};
pub use lock::{LockMode, Sharex};
pub use module::{
    InFlight, Leaf, MAX_LISTED_REFS, MAX_TDCS_PAGES, MAX_TDVPS_PAGES, MIN_TDCS_PAGES,
    MIN_TDVPS_PAGES, MemRefs, NULL_PA, Outcome, Regs, SEPT_ROOT_TDCX_INDEX, SetupError, TdxModule,
    TdxStats, VP_ENTER_IMMEDIATE_EXIT, VpEnterInFlight,
};
pub use pamt::{PageType, Pamt, PamtEntry};
pub use sept::{
    FREE_RAW, MAX_WALK_REFS, PUBLIC_UNKNOWN, SeptEntry, SeptState, SeptWalk, accept_allows,
    arch_view, bits, encoding_of, index as sept_index, level_bytes, level_size, mask_of,
    seamcall_allows, size_level, walk as sept_walk,
};
pub use status::OperandId;
pub use td::{Lifecycle, OpState, TdState, TdView, Vcpu, VcpuState};

/// SEAMCALL leaf numbers (RAX bits 15:0; spec/tdx.md §2.1), as `u16` for [`TdxModule::seamcall`].
pub mod leaf {
    /// TDH.VP.ENTER.
    pub const VP_ENTER: u16 = 0;
    /// TDH.MNG.ADDCX.
    pub const MNG_ADDCX: u16 = 1;
    /// TDH.MEM.PAGE.ADD.
    pub const MEM_PAGE_ADD: u16 = 2;
    /// TDH.MEM.SEPT.ADD.
    pub const MEM_SEPT_ADD: u16 = 3;
    /// TDH.VP.ADDCX.
    pub const VP_ADDCX: u16 = 4;
    /// TDH.MEM.PAGE.RELOCATE.
    pub const MEM_PAGE_RELOCATE: u16 = 5;
    /// TDH.MEM.PAGE.AUG.
    pub const MEM_PAGE_AUG: u16 = 6;
    /// TDH.MEM.RANGE.BLOCK.
    pub const MEM_RANGE_BLOCK: u16 = 7;
    /// TDH.MNG.KEY.CONFIG.
    pub const MNG_KEY_CONFIG: u16 = 8;
    /// TDH.MNG.CREATE.
    pub const MNG_CREATE: u16 = 9;
    /// TDH.VP.CREATE.
    pub const VP_CREATE: u16 = 10;
    /// TDH.MEM.PAGE.DEMOTE.
    pub const MEM_PAGE_DEMOTE: u16 = 15;
    /// TDH.MR.EXTEND.
    pub const MR_EXTEND: u16 = 16;
    /// TDH.MR.FINALIZE.
    pub const MR_FINALIZE: u16 = 17;
    /// TDH.VP.FLUSH.
    pub const VP_FLUSH: u16 = 18;
    /// TDH.MNG.VPFLUSHDONE.
    pub const MNG_VPFLUSHDONE: u16 = 19;
    /// TDH.MNG.KEY.FREEID.
    pub const MNG_KEY_FREEID: u16 = 20;
    /// TDH.MNG.INIT.
    pub const MNG_INIT: u16 = 21;
    /// TDH.VP.INIT.
    pub const VP_INIT: u16 = 22;
    /// TDH.MEM.PAGE.PROMOTE.
    pub const MEM_PAGE_PROMOTE: u16 = 23;
    /// TDH.PHYMEM.PAGE.RECLAIM.
    pub const PHYMEM_PAGE_RECLAIM: u16 = 28;
    /// TDH.MEM.PAGE.REMOVE.
    pub const MEM_PAGE_REMOVE: u16 = 29;
    /// TDH.MEM.SEPT.REMOVE.
    pub const MEM_SEPT_REMOVE: u16 = 30;
    /// TDH.MEM.TRACK.
    pub const MEM_TRACK: u16 = 38;
    /// TDH.MEM.RANGE.UNBLOCK.
    pub const MEM_RANGE_UNBLOCK: u16 = 39;
    /// TDH.PHYMEM.CACHE.WB.
    pub const PHYMEM_CACHE_WB: u16 = 40;
    /// TDH.PHYMEM.PAGE.WBINVD.
    pub const PHYMEM_PAGE_WBINVD: u16 = 41;
    /// TDG.MEM.PAGE.ACCEPT (a TDCALL leaf).
    pub const TDG_MEM_PAGE_ACCEPT: u16 = 6;
    /// TDG.VP.VMCALL sub-function MapGPA.
    pub const TDVMCALL_MAP_GPA: u64 = 0x10001;
}

#[cfg(test)]
mod tests;
