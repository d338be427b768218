//! The check hook: where other hardware acts on a translation (DESIGN.md: "a check trait
//! called at the end of a walk and when a TLB entry is filled; the RMP check stage plugs in
//! there; the TLB entry keeps what the hardware keeps of the result").
//!
//! mmu-model knows nothing of the RMP. The root crate implements [`TranslationCheck`] on top of
//! rmp-model; [`NoCheck`] is the machine without one.

use crate::fault::NpfExitInfo1;
use crate::level::Level;
use crate::walk::{AccessKind, PfErrorCode, Privilege, Stage};
use sim_core::{Agent, Cycles, Gpa, PageSize, Spa};

/// What a check request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckTarget {
    /// The final data access (or instruction fetch) through a leaf of `mapping` size: at the
    /// end of a walk, and again on the first write through a TLB entry that a read filled
    /// (see [`WriteCheck`]).
    Data {
        /// The access.
        access: AccessKind,
        /// The size of the translation the access goes through (the TLB entry's size when
        /// re-checking on a hit).
        mapping: PageSize,
    },
    /// The walker read a paging-structure entry at `level`.
    TableRead {
        /// The level of the entry read.
        level: Level,
    },
    /// The walker updated A/D bits of an entry at `level` (a write for SNP, 4 KiB-sized,
    /// spec/snp.md §2.2).
    TableWrite {
        /// The level of the entry written.
        level: Level,
    },
}

/// What a check of a guest access knows about the guest side (what the RMP's guest rules
/// need: APM Vol. 2 §15.36.10, Table 15-39).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCheckInfo {
    /// The VM's TLB tag: its ASID (AMD) or VPID (Intel).
    pub asid: u16,
    /// The guest-physical address involved: the data GPA ([`CheckTarget::Data`]), the GPA of
    /// the guest entry ([`Stage::Guest`] table references), or the GPA whose translation the
    /// nested walk is making ([`Stage::Nested`] table references).
    pub gpa: Gpa,
    /// Whether the access is to private memory: the effective C-bit for an SEV guest (guest
    /// page-table accesses are always private, APM §15.34.5 as read here), the shared bit
    /// clear for a TD (spec/tdx.md §1.1); `None` for a guest without memory encryption, and
    /// for nested-table references (host memory).
    pub private: Option<bool>,
    /// The size of the nested (stage-2) leaf that translated `gpa`: what the SNP Page-Size
    /// check compares with the RMP entry's size (APM Vol. 2 §15.36.10, spec/snp.md §2.1).
    /// 4 KiB for nested-table references.
    pub nested_size: PageSize,
}

/// One check: who touches which system-physical address, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckRequest {
    /// The SPA touched: the data address (not its page base) or the entry's address.
    pub spa: Spa,
    /// What is being checked.
    pub target: CheckTarget,
    /// The agent making the access (host kernel, host process, guest vCPU, device).
    pub who: Agent,
    /// The privilege of the access.
    pub privilege: Privilege,
    /// The stage: native (host, 1-D), or the guest or nested stage of a 2-D walk. A data check
    /// of a guest access has [`Stage::Guest`].
    pub stage: Stage,
    /// For guest accesses: the guest-side context.
    pub guest: Option<GuestCheckInfo>,
}

impl CheckRequest {
    /// A check of a native (host) access.
    pub const fn native(
        spa: Spa,
        target: CheckTarget,
        who: Agent,
        privilege: Privilege,
    ) -> CheckRequest {
        CheckRequest { spa, target, who, privilege, stage: Stage::Native, guest: None }
    }
}

/// Whether a TLB entry's translation has passed the write check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WriteCheck {
    /// Filled by a read or fetch; the write check has not run. A write hitting the entry runs
    /// it first (if `MmuConfig::recheck_write_on_read_fill`).
    #[default]
    Unchecked,
    /// The write check passed (the entry was filled by a write, or re-checked, or the checker
    /// decided at fill time).
    Allowed,
}

/// What a TLB entry keeps of the check result. Grows with the guest checks (e.g. VMPL
/// permissions); a plain value so that TLB entries stay `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CheckCache {
    /// Result of the write check.
    pub write: WriteCheck,
}

/// A passed check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckAllow {
    /// What the TLB entry keeps (only meaningful for [`CheckTarget::Data`]).
    pub cache: CheckCache,
    /// Size of the TLB entry to install, when smaller than the translation: with SNP enabled a
    /// 1 GiB host translation installs only a 2 MiB TLB entry (APM §15.36.10). `None`: the
    /// translation's size.
    pub fill_size: Option<PageSize>,
}

impl CheckAllow {
    /// Allowed with the write check passed, full-size fill.
    pub const WRITE_OK: CheckAllow =
        CheckAllow { cache: CheckCache { write: WriteCheck::Allowed }, fill_size: None };
    /// Allowed, write check not run, full-size fill.
    pub const READ_ONLY: CheckAllow =
        CheckAllow { cache: CheckCache { write: WriteCheck::Unchecked }, fill_size: None };
}

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckVerdict {
    /// The access may proceed.
    Allow(CheckAllow),
    /// The access faults. For the host: #PF whose error code is the ordinary bits of the
    /// access (P, W, U, I) ORed with `error_bits` (e.g. [`PfErrorCode::RMP`]). For a guest
    /// access under NPT: #VMEXIT(NPF) with these bits in EXITINFO1 (bit 31 is RMP in both);
    /// under EPT: an EPT violation.
    Fault {
        /// Extra error-code bits.
        error_bits: PfErrorCode,
    },
    /// A guest-access fault with EXITINFO1 bits above 31 (e.g. [`NpfExitInfo1::VMPL`],
    /// [`NpfExitInfo1::SIZEM`]). On a host access only the low 32 bits are used, as #PF error
    /// bits.
    NestedFault {
        /// Extra EXITINFO1 bits.
        exit_bits: NpfExitInfo1,
    },
    /// A guest access raises an exception inside the guest rather than an exit: SEV-SNP's
    /// #VC with error code 0x404 (PAGE_NOT_VALIDATED) when the Validated check fails (APM
    /// Vol. 2 §15.36.10; spec/snp.md §2.3). On a host access it is treated as an RMP #PF.
    GuestVc {
        /// The #VC error code.
        error_code: u64,
    },
}

impl CheckVerdict {
    /// For a host access: the extra #PF error bits if the verdict is a fault.
    #[allow(clippy::cast_possible_truncation)] // the low 32 bits, on purpose
    pub fn host_fault_bits(self) -> Option<PfErrorCode> {
        match self {
            CheckVerdict::Allow(_) => None,
            CheckVerdict::Fault { error_bits } => Some(error_bits),
            CheckVerdict::NestedFault { exit_bits } => {
                Some(PfErrorCode::from_bits_retain(exit_bits.bits() as u32))
            }
            CheckVerdict::GuestVc { .. } => Some(PfErrorCode::RMP),
        }
    }

    /// For a guest access: the extra EXITINFO1 bits if the verdict is an exit (`None` for
    /// [`CheckVerdict::Allow`] and [`CheckVerdict::GuestVc`]).
    pub fn guest_fault_bits(self) -> Option<NpfExitInfo1> {
        match self {
            CheckVerdict::Allow(_) | CheckVerdict::GuestVc { .. } => None,
            CheckVerdict::Fault { error_bits } => {
                Some(NpfExitInfo1::from_bits_retain(u64::from(error_bits.bits())))
            }
            CheckVerdict::NestedFault { exit_bits } => Some(exit_bits),
        }
    }
}

/// Most memory references one host access's checks may report in its
/// [`crate::AccessOutcome`] (one per check: up to five table reads, five A/D writes and the
/// data access of a 5-level walk, rounded up).
pub const MAX_CHECK_READS: usize = 16;

/// Most memory references one guest access's checks may report in its
/// [`crate::GuestAccessOutcome`]: one per reference of a 5×5 2-D walk (35 reads and up to 35
/// A/D writes) plus the data access, rounded up.
pub const MAX_GUEST_CHECK_READS: usize = 96;

/// The memory a checker read while checking (e.g. RMP entries), for the caller to price through
/// its cache-latency model, plus any fixed cycles the checker charges. A reusable buffer: the
/// MMU clears and refills one per access, so checks allocate nothing after warm-up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckWork {
    /// SPAs read by the checker, in order.
    pub reads: Vec<Spa>,
    /// Fixed cycles charged on top (e.g. `rmp.rmp_lookup_latency` per check).
    pub fixed: Cycles,
}

impl CheckWork {
    /// Empty, keeping the buffer.
    pub fn clear(&mut self) {
        self.reads.clear();
        self.fixed = Cycles::ZERO;
    }
}

/// The check stage called at the end of every walk (for each table reference and for the data
/// access) and when a write hits a TLB entry whose write check has not run.
pub trait TranslationCheck {
    /// Check one request, recording the memory read and any fixed cost in `work`.
    fn check(&mut self, req: &CheckRequest, work: &mut CheckWork) -> CheckVerdict;

    /// Check one reference of a native (host, 1-D) walk, or its data access: what
    /// [`TranslationCheck::check`] gives for [`CheckRequest::native`]`(spa, target, who,
    /// privilege)`, which the default builds and forwards. The MMU's common walk calls this
    /// once per reference; a checker may override it with a path that takes only what its
    /// native rule needs, as long as the verdict and the `work` recorded are the same.
    #[inline]
    fn check_native(
        &mut self,
        spa: Spa,
        target: CheckTarget,
        who: Agent,
        privilege: Privilege,
        work: &mut CheckWork,
    ) -> CheckVerdict {
        self.check(&CheckRequest::native(spa, target, who, privilege), work)
    }

    /// Check a native walk that sets no A/D bit: a table read of each entry at `tables` (root
    /// side first; the first at level `first`, each next one a level lower), then the data
    /// access `data` (a native request), stopping at the first check that fails. Returns the
    /// failing check's verdict, or the data check's. The default makes these checks through
    /// [`TranslationCheck::check_native`]; a checker may make them in one pass, as long as the
    /// checks made, their order, the verdict and the `work` recorded are the same.
    #[inline]
    fn check_native_walk(
        &mut self,
        tables: &[Spa],
        first: Level,
        data: &CheckRequest,
        work: &mut CheckWork,
    ) -> CheckVerdict {
        for (&spa, &level) in tables.iter().zip(&Level::ALL[first.idx()..]) {
            let target = CheckTarget::TableRead { level };
            let v = self.check_native(spa, target, data.who, data.privilege, work);
            if !matches!(v, CheckVerdict::Allow(_)) {
                return v;
            }
        }
        self.check_native(data.spa, data.target, data.who, data.privilege, work)
    }

    /// Whether every check allows everything with the write check passed, reads nothing and
    /// costs nothing (then the walkers skip the calls). Default: false.
    fn allows_everything(&self) -> bool {
        false
    }
}

/// A machine without a check stage: everything is allowed, writes included.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCheck;

impl TranslationCheck for NoCheck {
    fn check(&mut self, _req: &CheckRequest, _work: &mut CheckWork) -> CheckVerdict {
        CheckVerdict::Allow(CheckAllow::WRITE_OK)
    }

    fn allows_everything(&self) -> bool {
        true
    }
}

impl<C: TranslationCheck + ?Sized> TranslationCheck for &mut C {
    fn check(&mut self, req: &CheckRequest, work: &mut CheckWork) -> CheckVerdict {
        (**self).check(req, work)
    }

    #[inline]
    fn check_native(
        &mut self,
        spa: Spa,
        target: CheckTarget,
        who: Agent,
        privilege: Privilege,
        work: &mut CheckWork,
    ) -> CheckVerdict {
        (**self).check_native(spa, target, who, privilege, work)
    }

    #[inline]
    fn check_native_walk(
        &mut self,
        tables: &[Spa],
        first: Level,
        data: &CheckRequest,
        work: &mut CheckWork,
    ) -> CheckVerdict {
        (**self).check_native_walk(tables, first, data, work)
    }

    fn allows_everything(&self) -> bool {
        (**self).allows_everything()
    }
}
