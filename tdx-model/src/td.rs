//! Per-TD state: what the module keeps in the TDR, the TDCS and each vCPU's TDVPS, reduced to
//! the fields the memory-protection path uses (spec/tdx.md §1.5, §3.4; TDX module
//! `td_control_structures.h`, `op_state_lookup.c`).

use crate::lock::Sharex;
use mmu_model::GpaWidth;
use std::collections::BTreeMap;

/// The TDR lifecycle state (`td_lifecycle_state_t`). TEARDOWN is a lifecycle state of the TDR,
/// not an OP_STATE: TDH.MNG.CREATE → HKID_ASSIGNED, TDH.MNG.KEY.CONFIG (on every package) →
/// KEYS_CONFIGURED, TDH.MNG.VPFLUSHDONE → BLOCKED, TDH.MNG.KEY.FREEID → TEARDOWN.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Lifecycle {
    /// 0: an HKID is assigned, keys not yet programmed.
    HkidAssigned,
    /// 1: keys programmed on every package; the TD is usable.
    KeysConfigured,
    /// 2: vCPUs flushed, HKID being reclaimed (no SEAMCALL on TD memory works any more).
    Blocked,
    /// 3: HKID freed; pages can be reclaimed.
    Teardown,
}

impl Lifecycle {
    /// The module's numeric value.
    pub const fn value(self) -> u8 {
        match self {
            Lifecycle::HkidAssigned => 0,
            Lifecycle::KeysConfigured => 1,
            Lifecycle::Blocked => 2,
            Lifecycle::Teardown => 3,
        }
    }
}

/// The TDCS OP_STATE (`op_state_lookup.h`). The migration states (LIVE_EXPORT … FAILED_IMPORT)
/// are not modelled. TDH.MNG.INIT → INITIALIZED; TDH.MR.FINALIZE → RUNNABLE.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum OpState {
    /// 0: TDCS allocated, TDH.MNG.INIT not yet run.
    Uninitialized,
    /// 1: being built (PAGE.ADD, MR.EXTEND, VP.CREATE/INIT allowed).
    Initialized,
    /// 2: finalized and runnable; removals need BLOCK + TRACK.
    Runnable,
}

impl OpState {
    /// The module's numeric value.
    pub const fn value(self) -> u8 {
        match self {
            OpState::Uninitialized => 0,
            OpState::Initialized => 1,
            OpState::Runnable => 2,
        }
    }

    /// `op_state_is_tlb_tracking_required` (state_flags_lookup: RUNNABLE, LIVE_EXPORT and
    /// LIVE_IMPORT; only RUNNABLE is modelled).
    pub const fn tlb_tracking_required(self) -> bool {
        matches!(self, OpState::Runnable)
    }

    /// Whether SEAMCALL `leaf` is allowed in this state (`seamcall_state_lookup`, columns
    /// UNINITIALIZED, INITIALIZED, RUNNABLE). Leaves without a row do not check OP_STATE.
    pub const fn allows(self, leaf: u16) -> bool {
        // (uninitialized, initialized, runnable)
        let row: (bool, bool, bool) = match leaf {
            0 => (false, false, true),                         // VP.ENTER
            1 | 21 => (true, false, false),                    // MNG.ADDCX, MNG.INIT
            2 | 4 | 10 | 16 | 17 | 22 => (false, true, false), // build-time leaves
            3 | 5 | 6 | 7 | 15 | 23 | 29 | 30 | 38 | 39 => (false, true, true), // memory leaves
            18 => (true, true, true),                          // VP.FLUSH
            _ => (true, true, true),
        };
        match self {
            OpState::Uninitialized => row.0,
            OpState::Initialized => row.1,
            OpState::Runnable => row.2,
        }
    }
}

/// TDVPS vCPU state (`VCPU_UNINITIALIZED` 0, `VCPU_READY` 2, `VCPU_ACTIVE` 4, `VCPU_DISABLED`
/// 8). ACTIVE is represented by [`Vcpu::in_guest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VcpuState {
    /// Created, TDH.VP.INIT not yet run.
    Uninitialized,
    /// Initialised; can be entered.
    Ready,
}

impl VcpuState {
    /// The module's numeric value (the detail of `TDX_VCPU_STATE_INCORRECT`).
    pub const fn value(self) -> u32 {
        match self {
            VcpuState::Uninitialized => 0,
            VcpuState::Ready => 2,
        }
    }
}

/// One vCPU (a TDVPR page and its TDVPX pages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vcpu {
    /// TDVPS pages added (the TDVPR counts as the first).
    pub tdvps_pages: u8,
    /// The TDVPX pages added by TDH.VP.ADDCX.
    pub tdvpx: Vec<u64>,
    /// UNINITIALIZED or READY.
    pub state: VcpuState,
    /// Associated with a logical processor (TDH.VP.INIT or VP.ENTER until TDH.VP.FLUSH). The
    /// model has one logical processor per vCPU and no LP identities.
    pub associated: bool,
    /// Currently inside the TD (between a TD entry and the next TD exit).
    pub in_guest: bool,
    /// TD_EPOCH sampled at the last entry (`vcpu_epoch`); the refcount slot it holds while in
    /// the guest is `vcpu_epoch & 1`.
    pub vcpu_epoch: u64,
}

impl Vcpu {
    pub(crate) fn new() -> Vcpu {
        Vcpu {
            tdvps_pages: 1,
            tdvpx: Vec::new(),
            state: VcpuState::Uninitialized,
            associated: false,
            in_guest: false,
            vcpu_epoch: 0,
        }
    }
}

/// The state of one TD, keyed in the module by its TDR HPA.
#[derive(Debug)]
pub struct TdState {
    /// The TD's private HKID.
    pub hkid: u16,
    /// TDR lifecycle state.
    pub lifecycle: Lifecycle,
    /// TDCS OP_STATE (meaningful once the TDCS pages are added).
    pub op_state: OpState,
    /// TDR.FATAL.
    pub fatal: bool,
    /// Keys programmed on the (single modelled) package.
    pub key_configured: bool,
    /// GPA width (from TD_PARAMS at TDH.MNG.INIT).
    pub gpaw: GpaWidth,
    /// Level of the S-EPT root table's entries: 3 (4-level, GPAW 48) or 4 (5-level, GPAW 52).
    pub root_level: u8,
    /// The S-EPT root (TDCS page `SEPT_ROOT_PAGE_INDEX`), once added.
    pub sept_root: Option<u64>,
    /// Number of TDCS pages added (`num_tdcx`).
    pub tdcx_count: u32,
    /// The TDCS pages the model materialised (a directly created TD has only its root).
    pub tdcx: Vec<u64>,
    /// ATTRIBUTES.SEPT_VE_DISABLE.
    pub sept_ve_disable: bool,
    /// TD_PARAMS.MAX_VCPUS.
    pub max_vcpus: u32,
    /// TD_EPOCH (1 after TDH.MNG.INIT).
    pub epoch: u64,
    /// REFCOUNT\[2\]: vCPUs inside the TD per epoch parity.
    pub refcount: [u32; 2],
    /// TDR.CHLDCNT: 4 KiB-equivalents of pages assigned to the TD other than the TDR (TDCX,
    /// TDVPR/TDVPX, S-EPT pages, private pages).
    pub chldcnt: u64,
    /// Initialised vCPUs (`num_vcpus`).
    pub num_vcpus: u32,
    /// vCPUs associated with a logical processor (`num_assoc_vcpus`).
    pub num_assoc_vcpus: u32,
    /// vCPUs by TDVPR HPA.
    pub vcpus: BTreeMap<u64, Vcpu>,
    /// MRTD as a running 64-bit hash of what PAGE.ADD and MR.EXTEND measured (GPA and a tag);
    /// not SHA-384 (the model has no page contents).
    pub mrtd: u64,
    /// Calls folded into `mrtd`.
    pub measured_chunks: u64,
    /// MRTD finalized (TDH.MR.FINALIZE).
    pub mrtd_finalized: bool,
    /// The S-EPT tree lock (`secure_ept_lock`).
    pub tree_lock: Sharex,
    /// The epoch lock.
    pub epoch_lock: Sharex,
    /// The OP_STATE lock.
    pub op_state_lock: Sharex,
}

sim_core::clone_by_fields!(TdState {
    hkid,
    lifecycle,
    op_state,
    fatal,
    key_configured,
    gpaw,
    root_level,
    sept_root,
    tdcx_count,
    tdcx,
    sept_ve_disable,
    max_vcpus,
    epoch,
    refcount,
    chldcnt,
    num_vcpus,
    num_assoc_vcpus,
    mrtd,
    measured_chunks,
    mrtd_finalized,
    tree_lock,
    epoch_lock,
    op_state_lock
} changed {
    vcpus
});

impl TdState {
    pub(crate) fn new(hkid: u16, gpaw: GpaWidth) -> TdState {
        TdState {
            hkid,
            lifecycle: Lifecycle::HkidAssigned,
            op_state: OpState::Uninitialized,
            fatal: false,
            key_configured: false,
            gpaw,
            root_level: root_level(gpaw),
            sept_root: None,
            tdcx_count: 0,
            tdcx: Vec::new(),
            sept_ve_disable: true,
            max_vcpus: 1,
            epoch: 0,
            refcount: [0; 2],
            chldcnt: 0,
            num_vcpus: 0,
            num_assoc_vcpus: 0,
            vcpus: BTreeMap::new(),
            mrtd: MRTD_SEED,
            measured_chunks: 0,
            mrtd_finalized: false,
            tree_lock: Sharex::default(),
            epoch_lock: Sharex::default(),
            op_state_lock: Sharex::default(),
        }
    }

    /// `check_gpa_validity` (TDX module `helpers.c`; spec/tdx.md §1.1) for a private-only
    /// operand: the shared bit must be clear, and every bit at or above min(MAX_PA, GPAW) other
    /// than the shared bit must be 0.
    pub fn private_gpa_valid(&self, gpa: u64, max_pa: u8) -> bool {
        let width = match self.gpaw {
            GpaWidth::W48 => 48u32,
            GpaWidth::W52 => 52,
        };
        let shared = 1u64 << (width - 1);
        if gpa & shared != 0 {
            return false;
        }
        let min = width.min(u32::from(max_pa));
        let mask = !((1u64 << min) - 1) & !shared;
        gpa & mask == 0
    }

    /// Fold one measured item into MRTD (FNV-1a over the tag and the GPA).
    pub(crate) fn measure(&mut self, tag: u64, gpa: u64) {
        for b in tag.to_le_bytes().into_iter().chain(gpa.to_le_bytes()) {
            self.mrtd = (self.mrtd ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
        self.measured_chunks += 1;
    }

    /// `is_tlb_tracked` (TDX module `helpers.h`): BEPOCH is tracked if it is the previous epoch
    /// and no vCPU holds that epoch's refcount, or if it is older still. (spec/tdx.md §2.4 states
    /// only the first half; see the crate docs.) The subtraction wraps as the module's does.
    pub fn tlb_tracked(&self, bepoch: u64) -> bool {
        let prev = self.epoch.wrapping_sub(1);
        let slot = usize::from(bepoch & 1 == 1);
        (bepoch == prev && self.refcount[slot] == 0) || bepoch < prev
    }

    /// A summary for inspection.
    pub fn view(&self) -> TdView {
        TdView {
            lifecycle: self.lifecycle,
            op_state: self.op_state,
            epoch: self.epoch,
            refcount: self.refcount,
            chldcnt: self.chldcnt,
            hkid: self.hkid,
            num_vcpus: self.num_vcpus,
            fatal: self.fatal,
        }
    }
}

/// FNV-1a offset basis, the initial MRTD of the model.
const MRTD_SEED: u64 = 0xCBF2_9CE4_8422_2325;

/// The S-EPT root level for a GPA width (spec/tdx.md §1.1: KVM pairs GPAW 48 with a 4-level
/// EPT and GPAW 52 with a 5-level EPT).
pub const fn root_level(gpaw: GpaWidth) -> u8 {
    match gpaw {
        GpaWidth::W48 => 3,
        GpaWidth::W52 => 4,
    }
}

/// A copy of a TD's key state, for inspection and scenario expectations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TdView {
    /// TDR lifecycle state.
    pub lifecycle: Lifecycle,
    /// TDCS OP_STATE.
    pub op_state: OpState,
    /// TD_EPOCH.
    pub epoch: u64,
    /// REFCOUNT\[0\], REFCOUNT\[1\].
    pub refcount: [u32; 2],
    /// TDR.CHLDCNT.
    pub chldcnt: u64,
    /// The HKID.
    pub hkid: u16,
    /// Initialised vCPUs.
    pub num_vcpus: u32,
    /// TDR.FATAL.
    pub fatal: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpa_validity() {
        let td = TdState::new(16, GpaWidth::W48);
        assert!(td.private_gpa_valid(0x7fff_ffff_f000, 52));
        assert!(!td.private_gpa_valid(1 << 47, 52)); // shared bit
        assert!(!td.private_gpa_valid(1 << 48, 52)); // bits 51:48 with GPAW 48
        assert!(!td.private_gpa_valid(1 << 45, 45)); // above MAX_PA
        let td = TdState::new(16, GpaWidth::W52);
        assert!(td.private_gpa_valid(1 << 50, 52));
        assert!(!td.private_gpa_valid(1 << 51, 52));
        assert_eq!(root_level(GpaWidth::W52), 4);
    }

    #[test]
    fn tracking_rule() {
        let mut td = TdState::new(16, GpaWidth::W48);
        td.epoch = 5;
        assert!(!td.tlb_tracked(5)); // blocked in the current epoch
        assert!(td.tlb_tracked(4)); // previous epoch, nobody in it
        td.refcount[0] = 1;
        assert!(!td.tlb_tracked(4)); // a vCPU entered at epoch 4 is still inside
        assert!(td.tlb_tracked(3)); // older epochs are tracked (module is_tlb_tracked)
    }

    #[test]
    fn op_state_table() {
        assert!(OpState::Initialized.allows(6) && OpState::Runnable.allows(6));
        assert!(!OpState::Uninitialized.allows(6));
        assert!(OpState::Initialized.allows(2) && !OpState::Runnable.allows(2));
        assert!(OpState::Runnable.allows(0) && !OpState::Initialized.allows(0));
        assert!(OpState::Uninitialized.allows(21) && !OpState::Initialized.allows(21));
    }
}
