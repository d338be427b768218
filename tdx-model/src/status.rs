//! SEAMCALL/TDCALL completion status codes and operand IDs (spec/tdx.md §2.2–§2.3; TDX module
//! `include/auto_gen/tdx_error_codes_defs.h`; Linux `arch/x86/include/asm/shared/tdx_errno.h`).
//!
//! A status is RAX after the call: bits 63:32 are the class/code, bits 31:0 the operand ID (or
//! another detail such as a level). Bit 63 set means error, bit 62 non-recoverable; a code with
//! bit 63 clear and a non-zero value is success with information.

/// Success.
pub const TDX_SUCCESS: u64 = 0x0000_0000_0000_0000;
/// The TD is unusable; later TD exits report it (spec/tdx.md §1.6).
pub const TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE: u64 = 0x6000_0005_0000_0000;
/// An interruptible leaf was interrupted and can be resumed.
pub const TDX_INTERRUPTED_RESUMABLE: u64 = 0x8000_0003_0000_0000;
/// An interruptible leaf was interrupted and must be restarted.
pub const TDX_INTERRUPTED_RESTARTABLE: u64 = 0x8000_0004_0000_0000;
/// An operand is invalid (the operand ID says which).
pub const TDX_OPERAND_INVALID: u64 = 0xC000_0100_0000_0000;
/// An address operand is outside the TDMRs.
pub const TDX_OPERAND_ADDR_RANGE_ERROR: u64 = 0xC000_0101_0000_0000;
/// A try-lock on the named operand failed.
pub const TDX_OPERAND_BUSY: u64 = 0x8000_0200_0000_0000;
/// TDH.MEM.TRACK: a vCPU still runs in the previous TLB epoch.
pub const TDX_PREVIOUS_TLB_EPOCH_BUSY: u64 = 0x8000_0201_0000_0000;
/// A global module lock was busy.
pub const TDX_SYS_BUSY: u64 = 0x8000_0202_0000_0000;
/// RDRAND/RDSEED returned no entropy.
pub const TDX_RND_NO_ENTROPY: u64 = 0x8000_0203_0000_0000;
/// Guest-side lock failed because a host SEAMCALL flagged host priority on the entry.
pub const TDX_OPERAND_BUSY_HOST_PRIORITY: u64 = 0x8000_0204_0000_0000;
/// A page's PAMT metadata (type, level) is not what the leaf requires.
pub const TDX_PAGE_METADATA_INCORRECT: u64 = 0xC000_0300_0000_0000;
/// Information: the page is already free.
pub const TDX_PAGE_ALREADY_FREE: u64 = 0x0000_0301_0000_0000;
/// The page is not owned by the TD.
pub const TDX_PAGE_NOT_OWNED_BY_TD: u64 = 0xC000_0302_0000_0000;
/// The page is not free.
pub const TDX_PAGE_NOT_FREE: u64 = 0xC000_0303_0000_0000;
/// TDH.PHYMEM.PAGE.RECLAIM of a TDR whose CHLDCNT is not 0.
pub const TDX_TD_ASSOCIATED_PAGES_EXIST: u64 = 0xC000_0400_0000_0000;
/// The TD is in a fatal state.
pub const TDX_TD_FATAL: u64 = 0xE000_0604_0000_0000;
/// The TDCS pages are not all added (num_tdcx below the minimum).
pub const TDX_TDCS_NOT_ALLOCATED: u64 = 0xC000_0606_0000_0000;
/// The TD's TDR lifecycle state does not allow the leaf.
pub const TDX_LIFECYCLE_STATE_INCORRECT: u64 = 0xC000_0607_0000_0000;
/// The TD's OP_STATE does not allow the leaf.
pub const TDX_OP_STATE_INCORRECT: u64 = 0xC000_0608_0000_0000;
/// TDH.MR.FINALIZE with no initialised vCPU.
pub const TDX_NO_VCPUS: u64 = 0xC000_0609_0000_0000;
/// Wrong number of TDCX/TDVPX pages.
pub const TDX_TDCX_NUM_INCORRECT: u64 = 0xC000_0610_0000_0000;
/// The vCPU's state does not allow the leaf (detail: the vCPU state).
pub const TDX_VCPU_STATE_INCORRECT: u64 = 0xC000_0700_0000_0000;
/// The vCPU is associated with another logical processor.
pub const TDX_VCPU_ASSOCIATED: u64 = 0x8000_0701_0000_0000;
/// The vCPU is not associated with this logical processor.
pub const TDX_VCPU_NOT_ASSOCIATED: u64 = 0x8000_0702_0000_0000;
/// TDH.VP.INIT beyond TD_PARAMS.MAX_VCPUS.
pub const TDX_MAX_VCPUS_EXCEEDED: u64 = 0xC000_0705_0000_0000;
/// The TD's keys are not configured (TDR lifecycle is not KEYS_CONFIGURED).
pub const TDX_TD_KEYS_NOT_CONFIGURED: u64 = 0x8000_0810_0000_0000;
/// The key state is incorrect.
pub const TDX_KEY_STATE_INCORRECT: u64 = 0xC000_0811_0000_0000;
/// Information: the key is already configured on this package.
pub const TDX_KEY_CONFIGURED: u64 = 0x0000_0815_0000_0000;
/// TDH.MNG.KEY.FREEID before TDH.PHYMEM.CACHE.WB completed.
pub const TDX_WBCACHE_NOT_COMPLETE: u64 = 0x8000_0817_0000_0000;
/// TDH.MNG.CREATE with an HKID that is not free.
pub const TDX_HKID_NOT_FREE: u64 = 0xC000_0820_0000_0000;
/// Information: TDH.PHYMEM.CACHE.WB found no HKID to write back.
pub const TDX_NO_HKID_READY_TO_WBCACHE: u64 = 0x0000_0821_0000_0000;
/// TDH.PHYMEM.CACHE.WB resume without an interrupted session.
pub const TDX_WBCACHE_RESUME_ERROR: u64 = 0xC000_0823_0000_0000;
/// TDH.MNG.VPFLUSHDONE while vCPUs are still associated.
pub const TDX_FLUSHVP_NOT_DONE: u64 = 0x8000_0824_0000_0000;
/// The S-EPT walk ended above the requested level.
pub const TDX_EPT_WALK_FAILED: u64 = 0xC000_0B00_0000_0000;
/// The S-EPT entry is free.
pub const TDX_EPT_ENTRY_FREE: u64 = 0xC000_0B01_0000_0000;
/// The S-EPT entry is not free (defined; module 1.5 returns STATE_INCORRECT instead).
pub const TDX_EPT_ENTRY_NOT_FREE: u64 = 0xC000_0B02_0000_0000;
/// The S-EPT entry is not present (TDH.MR.EXTEND).
pub const TDX_EPT_ENTRY_NOT_PRESENT: u64 = 0xC000_0B03_0000_0000;
/// The S-EPT entry is not a leaf.
pub const TDX_EPT_ENTRY_NOT_LEAF: u64 = 0xC000_0B04_0000_0000;
/// The S-EPT entry is a leaf.
pub const TDX_EPT_ENTRY_LEAF: u64 = 0xC000_0B05_0000_0000;
/// The entry must be blocked first (running TD).
pub const TDX_GPA_RANGE_NOT_BLOCKED: u64 = 0xC000_0B06_0000_0000;
/// Information: the entry is already blocked.
pub const TDX_GPA_RANGE_ALREADY_BLOCKED: u64 = 0x0000_0B07_0000_0000;
/// The blocked entry's TLB tracking is not complete.
pub const TDX_TLB_TRACKING_NOT_DONE: u64 = 0xC000_0B08_0000_0000;
/// TDH.MEM.PAGE.PROMOTE: the 512 children cannot be merged.
pub const TDX_EPT_INVALID_PROMOTE_CONDITIONS: u64 = 0xC000_0B09_0000_0000;
/// Information (ACCEPT): the page is already accepted (detail: the level).
pub const TDX_PAGE_ALREADY_ACCEPTED: u64 = 0x0000_0B0A_0000_0000;
/// ACCEPT at a size the S-EPT maps with a smaller page (detail: the level).
pub const TDX_PAGE_SIZE_MISMATCH: u64 = 0xC000_0B0B_0000_0000;
/// The GPA range is blocked.
pub const TDX_GPA_RANGE_BLOCKED: u64 = 0xC000_0B0C_0000_0000;
/// The S-EPT entry's state does not allow the leaf.
pub const TDX_EPT_ENTRY_STATE_INCORRECT: u64 = 0xC000_0B0D_0000_0000;
/// TDH.MEM.SEPT.REMOVE: the table still has a non-free entry.
pub const TDX_EPT_PAGE_NOT_FREE: u64 = 0xC000_0B0E_0000_0000;

/// TDG.VP.VMCALL status: success (spec/tdx.md §2.1 \[MAPGPA\]).
pub const TDVMCALL_STATUS_SUCCESS: u64 = 0;
/// TDG.VP.VMCALL status: retry from the GPA in R11.
pub const TDVMCALL_STATUS_RETRY: u64 = 1;
/// TDG.VP.VMCALL status: invalid operand.
pub const TDVMCALL_STATUS_INVALID_OPERAND: u64 = 0x8000_0000_0000_0000;
/// TDG.VP.VMCALL status: misaligned operand.
pub const TDVMCALL_STATUS_ALIGN_ERROR: u64 = 0x8000_0000_0000_0002;

/// Mask of the class/code part of a status (Linux `TDX_SEAMCALL_STATUS_MASK`).
pub const STATUS_MASK: u64 = 0xFFFF_FFFF_0000_0000;

/// An operand ID: which operand a status refers to (`tdx_error_codes_defs.h`, "Error
/// operands"; spec/tdx.md §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OperandId {
    /// RAX (0): the leaf/version itself.
    Rax,
    /// RCX (1).
    Rcx,
    /// RDX (2).
    Rdx,
    /// R8 (8).
    R8,
    /// R9 (9).
    R9,
    /// The TDR page, implicit (0x80).
    Tdr,
    /// A TDCX page (0x81).
    Tdcx,
    /// The TDVPR page (0x82).
    Tdvpr,
    /// The TDCS (0x90).
    Tdcs,
    /// The TDVPS (0x91).
    Tdvps,
    /// The TD's S-EPT tree lock (0x92).
    SeptTree,
    /// An S-EPT entry (0x93).
    SeptEntry,
    /// The TD epoch lock (0xA9).
    TdEpoch,
    /// The TDCS OP_STATE lock (0xAC).
    OpState,
    /// The key ownership table lock (0xBA).
    Kot,
}

impl OperandId {
    /// The numeric ID.
    pub const fn id(self) -> u64 {
        match self {
            OperandId::Rax => 0,
            OperandId::Rcx => 1,
            OperandId::Rdx => 2,
            OperandId::R8 => 8,
            OperandId::R9 => 9,
            OperandId::Tdr => 0x80,
            OperandId::Tdcx => 0x81,
            OperandId::Tdvpr => 0x82,
            OperandId::Tdcs => 0x90,
            OperandId::Tdvps => 0x91,
            OperandId::SeptTree => 0x92,
            OperandId::SeptEntry => 0x93,
            OperandId::TdEpoch => 0xA9,
            OperandId::OpState => 0xAC,
            OperandId::Kot => 0xBA,
        }
    }
}

/// `code | operand` (the module's `api_error_with_operand_id`).
pub const fn status(code: u64, operand: OperandId) -> u64 {
    code | operand.id()
}

/// `code | detail` for statuses whose low half is not an operand ID (a level, a vCPU state).
pub const fn with_detail(code: u64, detail: u32) -> u64 {
    code | detail as u64
}

/// Whether a status is an error (bit 63).
pub const fn is_error(status: u64) -> bool {
    status >> 63 != 0
}

/// The name of a status's class (its bits 63:32), for reports.
pub fn status_name(status: u64) -> &'static str {
    match status & STATUS_MASK {
        TDX_SUCCESS => "TDX_SUCCESS",
        TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE => "TDX_NON_RECOVERABLE_TD_NON_ACCESSIBLE",
        TDX_INTERRUPTED_RESUMABLE => "TDX_INTERRUPTED_RESUMABLE",
        TDX_INTERRUPTED_RESTARTABLE => "TDX_INTERRUPTED_RESTARTABLE",
        TDX_OPERAND_INVALID => "TDX_OPERAND_INVALID",
        TDX_OPERAND_ADDR_RANGE_ERROR => "TDX_OPERAND_ADDR_RANGE_ERROR",
        TDX_OPERAND_BUSY => "TDX_OPERAND_BUSY",
        TDX_PREVIOUS_TLB_EPOCH_BUSY => "TDX_PREVIOUS_TLB_EPOCH_BUSY",
        TDX_SYS_BUSY => "TDX_SYS_BUSY",
        TDX_RND_NO_ENTROPY => "TDX_RND_NO_ENTROPY",
        TDX_OPERAND_BUSY_HOST_PRIORITY => "TDX_OPERAND_BUSY_HOST_PRIORITY",
        TDX_PAGE_METADATA_INCORRECT => "TDX_PAGE_METADATA_INCORRECT",
        TDX_PAGE_ALREADY_FREE => "TDX_PAGE_ALREADY_FREE",
        TDX_PAGE_NOT_OWNED_BY_TD => "TDX_PAGE_NOT_OWNED_BY_TD",
        TDX_PAGE_NOT_FREE => "TDX_PAGE_NOT_FREE",
        TDX_TD_ASSOCIATED_PAGES_EXIST => "TDX_TD_ASSOCIATED_PAGES_EXIST",
        TDX_TD_FATAL => "TDX_TD_FATAL",
        TDX_TDCS_NOT_ALLOCATED => "TDX_TDCS_NOT_ALLOCATED",
        TDX_LIFECYCLE_STATE_INCORRECT => "TDX_LIFECYCLE_STATE_INCORRECT",
        TDX_OP_STATE_INCORRECT => "TDX_OP_STATE_INCORRECT",
        TDX_NO_VCPUS => "TDX_NO_VCPUS",
        TDX_TDCX_NUM_INCORRECT => "TDX_TDCX_NUM_INCORRECT",
        TDX_VCPU_STATE_INCORRECT => "TDX_VCPU_STATE_INCORRECT",
        TDX_VCPU_ASSOCIATED => "TDX_VCPU_ASSOCIATED",
        TDX_VCPU_NOT_ASSOCIATED => "TDX_VCPU_NOT_ASSOCIATED",
        TDX_MAX_VCPUS_EXCEEDED => "TDX_MAX_VCPUS_EXCEEDED",
        TDX_TD_KEYS_NOT_CONFIGURED => "TDX_TD_KEYS_NOT_CONFIGURED",
        TDX_KEY_STATE_INCORRECT => "TDX_KEY_STATE_INCORRECT",
        TDX_KEY_CONFIGURED => "TDX_KEY_CONFIGURED",
        TDX_WBCACHE_NOT_COMPLETE => "TDX_WBCACHE_NOT_COMPLETE",
        TDX_HKID_NOT_FREE => "TDX_HKID_NOT_FREE",
        TDX_NO_HKID_READY_TO_WBCACHE => "TDX_NO_HKID_READY_TO_WBCACHE",
        TDX_WBCACHE_RESUME_ERROR => "TDX_WBCACHE_RESUME_ERROR",
        TDX_FLUSHVP_NOT_DONE => "TDX_FLUSHVP_NOT_DONE",
        TDX_EPT_WALK_FAILED => "TDX_EPT_WALK_FAILED",
        TDX_EPT_ENTRY_FREE => "TDX_EPT_ENTRY_FREE",
        TDX_EPT_ENTRY_NOT_FREE => "TDX_EPT_ENTRY_NOT_FREE",
        TDX_EPT_ENTRY_NOT_PRESENT => "TDX_EPT_ENTRY_NOT_PRESENT",
        TDX_EPT_ENTRY_NOT_LEAF => "TDX_EPT_ENTRY_NOT_LEAF",
        TDX_EPT_ENTRY_LEAF => "TDX_EPT_ENTRY_LEAF",
        TDX_GPA_RANGE_NOT_BLOCKED => "TDX_GPA_RANGE_NOT_BLOCKED",
        TDX_GPA_RANGE_ALREADY_BLOCKED => "TDX_GPA_RANGE_ALREADY_BLOCKED",
        TDX_TLB_TRACKING_NOT_DONE => "TDX_TLB_TRACKING_NOT_DONE",
        TDX_EPT_INVALID_PROMOTE_CONDITIONS => "TDX_EPT_INVALID_PROMOTE_CONDITIONS",
        TDX_PAGE_ALREADY_ACCEPTED => "TDX_PAGE_ALREADY_ACCEPTED",
        TDX_PAGE_SIZE_MISMATCH => "TDX_PAGE_SIZE_MISMATCH",
        TDX_GPA_RANGE_BLOCKED => "TDX_GPA_RANGE_BLOCKED",
        TDX_EPT_ENTRY_STATE_INCORRECT => "TDX_EPT_ENTRY_STATE_INCORRECT",
        TDX_EPT_PAGE_NOT_FREE => "TDX_EPT_PAGE_NOT_FREE",
        _ => "TDX_OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_values() {
        // spec/tdx.md §1.7 / §6 composite values.
        assert_eq!(status(TDX_OPERAND_BUSY, OperandId::SeptTree), 0x8000_0200_0000_0092);
        assert_eq!(status(TDX_OPERAND_BUSY, OperandId::Rcx), 0x8000_0200_0000_0001);
        assert_eq!(status(TDX_OPERAND_BUSY, OperandId::TdEpoch), 0x8000_0200_0000_00A9);
        assert_eq!(status(TDX_EPT_WALK_FAILED, OperandId::Rcx), 0xC000_0B00_0000_0001);
        assert_eq!(status(TDX_GPA_RANGE_NOT_BLOCKED, OperandId::Rcx), 0xC000_0B06_0000_0001);
        assert_eq!(status(TDX_TLB_TRACKING_NOT_DONE, OperandId::Rcx), 0xC000_0B08_0000_0001);
        assert_eq!(with_detail(TDX_PAGE_ALREADY_ACCEPTED, 1), 0x0000_0B0A_0000_0001);
        assert!(is_error(TDX_OPERAND_INVALID));
        assert!(!is_error(TDX_GPA_RANGE_ALREADY_BLOCKED));
        assert_eq!(status_name(0xC000_0B0D_0000_0001), "TDX_EPT_ENTRY_STATE_INCORRECT");
        assert_eq!(status_name(0x1234_5678_0000_0000), "TDX_OTHER");
    }
}
