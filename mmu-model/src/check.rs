//! The check hook: where other hardware acts on a translation (DESIGN.md: "a check trait
//! called at the end of a walk and when a TLB entry is filled; the RMP check stage plugs in
//! there; the TLB entry keeps what the hardware keeps of the result").
//!
//! mmu-model knows nothing of the RMP. The root crate implements [`TranslationCheck`] on top of
//! rmp-model; [`NoCheck`] is the machine without one.

use crate::inline::InlineVec;
use crate::level::Level;
use crate::walk::{AccessKind, PfErrorCode, Privilege};
use sim_core::{Agent, Cycles, PageSize, Spa};

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
    /// access (P, W, U, I) ORed with `error_bits` (e.g. [`PfErrorCode::RMP`]).
    Fault {
        /// Extra error-code bits.
        error_bits: PfErrorCode,
    },
}

/// Most memory references one access's checks may report (one per check: up to five table
/// reads, five A/D writes and the data access of a 5-level walk, rounded up).
pub const MAX_CHECK_READS: usize = 16;

/// The memory a checker read while checking (e.g. RMP entries), for the caller to price through
/// its cache-latency model, plus any fixed cycles the checker charges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckWork {
    /// SPAs read by the checker, in order.
    pub reads: InlineVec<Spa, MAX_CHECK_READS>,
    /// Fixed cycles charged on top (e.g. `rmp.rmp_lookup_latency` per check).
    pub fixed: Cycles,
}

/// The check stage called at the end of every walk (for each table reference and for the data
/// access) and when a write hits a TLB entry whose write check has not run.
pub trait TranslationCheck {
    /// Check one request, recording the memory read and any fixed cost in `work`.
    fn check(&mut self, req: &CheckRequest, work: &mut CheckWork) -> CheckVerdict;
}

/// A machine without a check stage: everything is allowed, writes included.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCheck;

impl TranslationCheck for NoCheck {
    fn check(&mut self, _req: &CheckRequest, _work: &mut CheckWork) -> CheckVerdict {
        CheckVerdict::Allow(CheckAllow::WRITE_OK)
    }
}

impl<C: TranslationCheck + ?Sized> TranslationCheck for &mut C {
    fn check(&mut self, req: &CheckRequest, work: &mut CheckWork) -> CheckVerdict {
        (**self).check(req, work)
    }
}
