//! The TDX module: the SEAMCALL dispatcher, its shared checks, the split begin/finish API,
//! TD entry and exit, inspection, direct state setup and statistics. The leaves themselves are
//! in the crate's `leaves` (memory) and `lifecycle` modules; the guest side in `guest`.

use crate::config::TdxConfig;
use crate::lock::{self, Held, HeldLock, LockMode, PamtLocks, Sharex};
use crate::pamt::{PageType, Pamt, PamtEntry};
use crate::sept::{self, SeptEntry, SeptState, arch_view, spa};
use crate::status::*;
use crate::td::{Lifecycle, OpState, TdState, TdView, Vcpu, VcpuState, root_level};
use mmu_model::{FrameSource, GpaWidth, InlineVec, PhysMemTables};
use sim_core::{Cycles, PageSize, Spa};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The general-purpose registers a SEAMCALL reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    /// RAX: leaf and version on input, status on output.
    pub rax: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// R8.
    pub r8: u64,
    /// R9.
    pub r9: u64,
    /// R10.
    pub r10: u64,
    /// R11.
    pub r11: u64,
}

/// The module's NULL physical address (`NULL_PA`, `~0`): "no page" in SEPT.ADD version 1 and
/// the R9–R11 outputs of version-1 leaves.
pub const NULL_PA: u64 = u64::MAX;

/// TDCS pages a TD needs before TDH.MNG.INIT (`MIN_NUM_TDCS_PAGES`, module 1.5).
pub const MIN_TDCS_PAGES: u32 = 6;
/// TDCS pages a TD may have (`MAX_NUM_TDCS_PAGES`, module 1.5, with L2 root pages).
pub const MAX_TDCS_PAGES: u32 = 9;
/// The TDCS page that is the S-EPT root (`SEPT_ROOT_PAGE_INDEX`, module 1.5); TDH.MNG.ADDCX
/// fills it with FREE entries.
pub const SEPT_ROOT_TDCX_INDEX: u32 = 3;
/// TDVPS pages (TDVPR + TDVPX) a vCPU needs before TDH.VP.INIT (`MIN_TDVPS_PAGES`).
pub const MIN_TDVPS_PAGES: u8 = 6;
/// TDVPS pages a vCPU may have (`MAX_TDVPS_PAGES`).
pub const MAX_TDVPS_PAGES: u8 = 15;
/// The TD-exit reason the model reports when TDH.VP.ENTER enters and immediately exits: basic
/// exit reason 1, external interrupt, in RAX bits 31:0 with status class 0. Unsourced: the
/// model does not simulate the TD-exit register image beyond this.
pub const VP_ENTER_IMMEDIATE_EXIT: u64 = 1;

/// The SEAMCALL leaves the model implements (spec/tdx.md §2.1; `tdx_api_defs.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Leaf {
    /// TDH.VP.ENTER (0).
    VpEnter,
    /// TDH.MNG.ADDCX (1).
    MngAddcx,
    /// TDH.MEM.PAGE.ADD (2).
    MemPageAdd,
    /// TDH.MEM.SEPT.ADD (3).
    MemSeptAdd,
    /// TDH.VP.ADDCX (4).
    VpAddcx,
    /// TDH.MEM.PAGE.RELOCATE (5).
    MemPageRelocate,
    /// TDH.MEM.PAGE.AUG (6).
    MemPageAug,
    /// TDH.MEM.RANGE.BLOCK (7).
    MemRangeBlock,
    /// TDH.MNG.KEY.CONFIG (8).
    MngKeyConfig,
    /// TDH.MNG.CREATE (9).
    MngCreate,
    /// TDH.VP.CREATE (10).
    VpCreate,
    /// TDH.MEM.PAGE.DEMOTE (15).
    MemPageDemote,
    /// TDH.MR.EXTEND (16).
    MrExtend,
    /// TDH.MR.FINALIZE (17).
    MrFinalize,
    /// TDH.VP.FLUSH (18).
    VpFlush,
    /// TDH.MNG.VPFLUSHDONE (19).
    MngVpflushdone,
    /// TDH.MNG.KEY.FREEID (20).
    MngKeyFreeid,
    /// TDH.MNG.INIT (21).
    MngInit,
    /// TDH.VP.INIT (22).
    VpInit,
    /// TDH.MEM.PAGE.PROMOTE (23).
    MemPagePromote,
    /// TDH.PHYMEM.PAGE.RECLAIM (28).
    PhymemPageReclaim,
    /// TDH.MEM.PAGE.REMOVE (29).
    MemPageRemove,
    /// TDH.MEM.SEPT.REMOVE (30).
    MemSeptRemove,
    /// TDH.MEM.TRACK (38).
    MemTrack,
    /// TDH.MEM.RANGE.UNBLOCK (39).
    MemRangeUnblock,
    /// TDH.PHYMEM.CACHE.WB (40).
    PhymemCacheWb,
    /// TDH.PHYMEM.PAGE.WBINVD (41).
    PhymemPageWbinvd,
}

impl Leaf {
    /// Every modelled leaf.
    pub const ALL: [Leaf; 27] = [
        Leaf::VpEnter,
        Leaf::MngAddcx,
        Leaf::MemPageAdd,
        Leaf::MemSeptAdd,
        Leaf::VpAddcx,
        Leaf::MemPageRelocate,
        Leaf::MemPageAug,
        Leaf::MemRangeBlock,
        Leaf::MngKeyConfig,
        Leaf::MngCreate,
        Leaf::VpCreate,
        Leaf::MemPageDemote,
        Leaf::MrExtend,
        Leaf::MrFinalize,
        Leaf::VpFlush,
        Leaf::MngVpflushdone,
        Leaf::MngKeyFreeid,
        Leaf::MngInit,
        Leaf::VpInit,
        Leaf::MemPagePromote,
        Leaf::PhymemPageReclaim,
        Leaf::MemPageRemove,
        Leaf::MemSeptRemove,
        Leaf::MemTrack,
        Leaf::MemRangeUnblock,
        Leaf::PhymemCacheWb,
        Leaf::PhymemPageWbinvd,
    ];

    /// The leaf number (RAX bits 15:0).
    pub const fn number(self) -> u16 {
        match self {
            Leaf::VpEnter => 0,
            Leaf::MngAddcx => 1,
            Leaf::MemPageAdd => 2,
            Leaf::MemSeptAdd => 3,
            Leaf::VpAddcx => 4,
            Leaf::MemPageRelocate => 5,
            Leaf::MemPageAug => 6,
            Leaf::MemRangeBlock => 7,
            Leaf::MngKeyConfig => 8,
            Leaf::MngCreate => 9,
            Leaf::VpCreate => 10,
            Leaf::MemPageDemote => 15,
            Leaf::MrExtend => 16,
            Leaf::MrFinalize => 17,
            Leaf::VpFlush => 18,
            Leaf::MngVpflushdone => 19,
            Leaf::MngKeyFreeid => 20,
            Leaf::MngInit => 21,
            Leaf::VpInit => 22,
            Leaf::MemPagePromote => 23,
            Leaf::PhymemPageReclaim => 28,
            Leaf::MemPageRemove => 29,
            Leaf::MemSeptRemove => 30,
            Leaf::MemTrack => 38,
            Leaf::MemRangeUnblock => 39,
            Leaf::PhymemCacheWb => 40,
            Leaf::PhymemPageWbinvd => 41,
        }
    }

    /// The leaf with number `n`, if modelled.
    pub const fn from_number(n: u16) -> Option<Leaf> {
        Some(match n {
            0 => Leaf::VpEnter,
            1 => Leaf::MngAddcx,
            2 => Leaf::MemPageAdd,
            3 => Leaf::MemSeptAdd,
            4 => Leaf::VpAddcx,
            5 => Leaf::MemPageRelocate,
            6 => Leaf::MemPageAug,
            7 => Leaf::MemRangeBlock,
            8 => Leaf::MngKeyConfig,
            9 => Leaf::MngCreate,
            10 => Leaf::VpCreate,
            15 => Leaf::MemPageDemote,
            16 => Leaf::MrExtend,
            17 => Leaf::MrFinalize,
            18 => Leaf::VpFlush,
            19 => Leaf::MngVpflushdone,
            20 => Leaf::MngKeyFreeid,
            21 => Leaf::MngInit,
            22 => Leaf::VpInit,
            23 => Leaf::MemPagePromote,
            28 => Leaf::PhymemPageReclaim,
            29 => Leaf::MemPageRemove,
            30 => Leaf::MemSeptRemove,
            38 => Leaf::MemTrack,
            39 => Leaf::MemRangeUnblock,
            40 => Leaf::PhymemCacheWb,
            41 => Leaf::PhymemPageWbinvd,
            _ => return None,
        })
    }

    /// The leaf's name (`TDH.MEM.PAGE.AUG`).
    pub const fn name(self) -> &'static str {
        match self {
            Leaf::VpEnter => "TDH.VP.ENTER",
            Leaf::MngAddcx => "TDH.MNG.ADDCX",
            Leaf::MemPageAdd => "TDH.MEM.PAGE.ADD",
            Leaf::MemSeptAdd => "TDH.MEM.SEPT.ADD",
            Leaf::VpAddcx => "TDH.VP.ADDCX",
            Leaf::MemPageRelocate => "TDH.MEM.PAGE.RELOCATE",
            Leaf::MemPageAug => "TDH.MEM.PAGE.AUG",
            Leaf::MemRangeBlock => "TDH.MEM.RANGE.BLOCK",
            Leaf::MngKeyConfig => "TDH.MNG.KEY.CONFIG",
            Leaf::MngCreate => "TDH.MNG.CREATE",
            Leaf::VpCreate => "TDH.VP.CREATE",
            Leaf::MemPageDemote => "TDH.MEM.PAGE.DEMOTE",
            Leaf::MrExtend => "TDH.MR.EXTEND",
            Leaf::MrFinalize => "TDH.MR.FINALIZE",
            Leaf::VpFlush => "TDH.VP.FLUSH",
            Leaf::MngVpflushdone => "TDH.MNG.VPFLUSHDONE",
            Leaf::MngKeyFreeid => "TDH.MNG.KEY.FREEID",
            Leaf::MngInit => "TDH.MNG.INIT",
            Leaf::VpInit => "TDH.VP.INIT",
            Leaf::MemPagePromote => "TDH.MEM.PAGE.PROMOTE",
            Leaf::PhymemPageReclaim => "TDH.PHYMEM.PAGE.RECLAIM",
            Leaf::MemPageRemove => "TDH.MEM.PAGE.REMOVE",
            Leaf::MemSeptRemove => "TDH.MEM.SEPT.REMOVE",
            Leaf::MemTrack => "TDH.MEM.TRACK",
            Leaf::MemRangeUnblock => "TDH.MEM.RANGE.UNBLOCK",
            Leaf::PhymemCacheWb => "TDH.PHYMEM.CACHE.WB",
            Leaf::PhymemPageWbinvd => "TDH.PHYMEM.PAGE.WBINVD",
        }
    }

    /// Leaves that accept a version above 0 (`tdx_vmm_dispatcher.c`: PROMOTE, SEPT.ADD,
    /// SEPT.REMOVE and VP.INIT among the modelled ones).
    const fn versioned(self) -> bool {
        matches!(self, Leaf::MemPagePromote | Leaf::MemSeptAdd | Leaf::MemSeptRemove | Leaf::VpInit)
    }
}

/// Entry addresses an outcome lists at most; further references are only counted.
pub const MAX_LISTED_REFS: usize = 8;

/// The memory references of one call: the S-EPT entry addresses it read (in order, up to
/// [`MAX_LISTED_REFS`]) and the count of all 8-byte S-EPT entry references, including entry
/// writes and whole-table fills and scans (512 each). No heap allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemRefs {
    addrs: InlineVec<Spa, MAX_LISTED_REFS>,
    total: u32,
}

impl MemRefs {
    /// Empty.
    pub fn new() -> MemRefs {
        MemRefs::default()
    }

    /// Record one reference to `addr`.
    pub fn push(&mut self, addr: Spa) {
        if self.addrs.len() < MAX_LISTED_REFS {
            self.addrs.push(addr);
        }
        self.total = self.total.saturating_add(1);
    }

    /// Count `n` further references without listing them.
    pub fn add(&mut self, n: u32) {
        self.total = self.total.saturating_add(n);
    }

    /// The listed addresses.
    pub fn addrs(&self) -> &[Spa] {
        &self.addrs
    }

    /// All references counted.
    pub fn total(&self) -> u32 {
        self.total
    }
}

/// What a SEAMCALL returned: the registers (RAX = status; RCX/RDX/R8… as the leaf writes
/// them, other registers as passed in), its cost and its memory references.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Output registers.
    pub regs: Regs,
    /// Cycles: the SEAMCALL round trip plus the leaf's body.
    pub cost: Cycles,
    /// S-EPT references made.
    pub refs: MemRefs,
}

impl Outcome {
    /// RAX, the completion status.
    pub const fn status(&self) -> u64 {
        self.regs.rax
    }
}

/// The work a leaf does once all its checks passed (after its "ALL_CHECKS_PASSED" point).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Commit {
    Nothing,
    SeptAdd { tdr: u64, entry: Spa, page: u64 },
    PageAdd { tdr: u64, entry: Spa, page: u64, gpa: u64 },
    Aug { tdr: u64, entry: Spa, page: u64, level: u8 },
    Block { tdr: u64, entry: Spa, value: u64, level: u8 },
    Track { tdr: u64 },
    Remove { tdr: u64, entry: Spa, page: u64, level: u8 },
    SeptRemove { tdr: u64, entry: Spa, table: u64 },
    Unblock { entry: Spa, value: u64 },
    Demote { tdr: u64, entry: Spa, value: u64, level: u8, page: u64, table: u64 },
    Promote { tdr: u64, entry: Spa, value: u64, level: u8, table: u64 },
    Relocate { tdr: u64, entry: Spa, value: u64, old: u64, new: u64 },
    MrExtend { tdr: u64, gpa: u64 },
    Reclaim { page: u64, entry: PamtEntry },
    CacheWb,
    MngCreate { tdr: u64, hkid: u16 },
    KeyConfig { tdr: u64 },
    MngAddcx { tdr: u64, page: u64 },
    MngInit { tdr: u64 },
    VpCreate { tdr: u64, tdvpr: u64 },
    VpAddcx { tdr: u64, tdvpr: u64, page: u64 },
    VpInit { tdr: u64, tdvpr: u64 },
    MrFinalize { tdr: u64 },
    VpFlush { tdr: u64, tdvpr: u64 },
    VpFlushDone { tdr: u64 },
    KeyFreeid { tdr: u64 },
    VpEnter { tdr: u64, tdvpr: u64 },
}

/// A SEAMCALL that passed its checks and holds its locks, between [`TdxModule::begin`] and
/// [`TdxModule::finish`]. While it exists, other calls see its locks (for race exploration).
/// Dropping it without `finish` leaves its locks held.
#[must_use = "a SEAMCALL in flight holds module locks until finish() is called"]
#[derive(Debug)]
pub struct InFlight {
    pub(crate) leaf: Leaf,
    pub(crate) out: Regs,
    pub(crate) held: Held,
    pub(crate) refs: MemRefs,
    pub(crate) commit: Commit,
}

impl InFlight {
    /// The leaf in flight.
    pub fn leaf(&self) -> Leaf {
        self.leaf
    }
}

/// A TDH.VP.ENTER between [`TdxModule::vp_enter_begin`] and [`TdxModule::vp_enter_end`]: it
/// holds the TD's epoch lock SHARED (and, when the zero-step filter ran, the S-EPT tree lock
/// EXCLUSIVE).
#[must_use = "a TD entry in flight holds the epoch lock until vp_enter_end() is called"]
#[derive(Debug)]
pub struct VpEnterInFlight {
    tdr: u64,
    tdvpr: u64,
    held: Held,
    refs: MemRefs,
    out: Regs,
}

impl VpEnterInFlight {
    /// The entering vCPU's TDVPR HPA.
    pub fn tdvpr(&self) -> u64 {
        self.tdvpr
    }
}

/// Per-call scratch state of a leaf's checks.
#[derive(Debug)]
pub(crate) struct Cx {
    pub(crate) leaf: Leaf,
    pub(crate) version: u8,
    pub(crate) inp: Regs,
    pub(crate) out: Regs,
    pub(crate) held: Held,
    pub(crate) refs: MemRefs,
}

impl Cx {
    fn new(leaf: Leaf, version: u8, regs: Regs) -> Cx {
        Cx { leaf, version, inp: regs, out: regs, held: Held::default(), refs: MemRefs::new() }
    }

    /// Put an entry's architectural view in RCX/RDX (`set_arch_septe_details_in_vmm_regs`).
    pub(crate) fn view(&mut self, entry: u64, level: u8) {
        let (rcx, rdx) = arch_view(entry, level);
        self.out.rcx = rcx;
        self.out.rdx = rdx;
    }
}

/// A key ownership table entry (`kot.entries[hkid]`); absent = HKID_FREE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KotState {
    /// KOT_STATE_HKID_ASSIGNED.
    Assigned,
    /// KOT_STATE_HKID_FLUSHED, with the package's WBINVD still pending or done.
    Flushed { wb_pending: bool },
}

/// Counters behind [`TdxStats`].
#[derive(Clone, Debug)]
struct Counters {
    by_leaf: [u64; 64],
    unknown_leaf: u64,
    by_status: BTreeMap<u64, u64>,
    tdcall_by_status: BTreeMap<u64, u64>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            by_leaf: [0; 64],
            unknown_leaf: 0,
            by_status: BTreeMap::new(),
            tdcall_by_status: BTreeMap::new(),
        }
    }
}

/// SEAMCALL and TDCALL counts for the report (DESIGN.md "Reports": SEAMCALLs by leaf and
/// status).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TdxStats {
    /// SEAMCALLs by leaf name (`UNKNOWN` for leaves the model does not implement).
    pub seamcalls_by_leaf: BTreeMap<String, u64>,
    /// SEAMCALLs by status class name.
    pub seamcalls_by_status: BTreeMap<String, u64>,
    /// TDG.MEM.PAGE.ACCEPT calls by status class name (`TD_EXIT` for EPT-violation exits).
    pub accepts_by_status: BTreeMap<String, u64>,
}

/// Why a direct state setter (for scenario `state` lines) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// No TD has this TDR.
    #[error("no TD with TDR {0:#x}")]
    NoTd(u64),
    /// A page address is misaligned or beyond the physical-address width.
    #[error("page address {0:#x} is misaligned or out of range")]
    BadPage(u64),
    /// The GPA is misaligned for the level or not a valid private GPA of the TD.
    #[error("GPA {gpa:#x} is not a valid private GPA at level {level}")]
    BadGpa {
        /// The GPA.
        gpa: u64,
        /// The level.
        level: u8,
    },
    /// The state cannot sit at this level (a leaf above 1 GiB, a non-leaf at 4 KiB).
    #[error("state {state} is not possible at level {level}")]
    BadLevel {
        /// The state.
        state: SeptState,
        /// The level.
        level: u8,
    },
    /// A leaf sits above the requested level on the way down.
    #[error("a leaf at level {0} covers the GPA")]
    LeafInTheWay(u8),
    /// The entry holds a table and the new state is a leaf or free state.
    #[error("the entry at level {0} points to a table")]
    TableInTheWay(u8),
    /// The frame source had no page for an intermediate table.
    #[error("the frame source is exhausted")]
    NoFrames,
    /// GPAW other than 48 or 52.
    #[error("GPAW {0} (must be 48 or 52)")]
    BadGpaw(u8),
    /// The HKID is already assigned to another TD.
    #[error("HKID {0} is not free")]
    HkidInUse(u16),
}

/// The TDX module model. See the crate documentation.
#[derive(Debug)]
pub struct TdxModule {
    pub(crate) cfg: TdxConfig,
    pub(crate) tds: BTreeMap<u64, TdState>,
    pub(crate) pamt: Pamt,
    pub(crate) pamt_locks: PamtLocks,
    pub(crate) kot: BTreeMap<u16, KotState>,
    pub(crate) kot_lock: Sharex,
    /// Locks a vCPU inside its TD keeps until its TD exit (TDVPR and TDR PAMT locks: the
    /// module saves them in `vp_ctx` at TDH.VP.ENTER).
    guest_held: BTreeMap<u64, Held>,
    stats: Counters,
}

sim_core::clone_by_fields!(TdxModule {
    cfg,
    pamt,
    pamt_locks,
    kot_lock,
    stats
} changed {
    tds,
    kot,
    guest_held
});

impl TdxModule {
    /// A module with no TD, every page `PT_NDA`.
    pub fn new(cfg: TdxConfig) -> TdxModule {
        TdxModule {
            cfg,
            tds: BTreeMap::new(),
            pamt: Pamt::new(),
            pamt_locks: PamtLocks::default(),
            kot: BTreeMap::new(),
            kot_lock: Sharex::default(),
            guest_held: BTreeMap::new(),
            stats: Counters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TdxConfig {
        &self.cfg
    }

    /// Execute one SEAMCALL: [`TdxModule::begin`] then [`TdxModule::finish`]. `leaf` and
    /// `version` are RAX bits 15:0 and 23:16; `regs.rax` is not read. Never panics: every bad
    /// operand yields a status.
    pub fn seamcall(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        leaf: u16,
        version: u8,
        regs: Regs,
    ) -> Outcome {
        match self.begin(tables, leaf, version, regs) {
            Ok(f) => self.finish(tables, f),
            Err(o) => o,
        }
    }

    /// First half of a SEAMCALL: run every check the leaf makes and take the locks it takes,
    /// in the module's order. A failed check (a BUSY try-lock included) releases what was
    /// taken and returns the outcome; otherwise the call is in flight until
    /// [`TdxModule::finish`].
    ///
    /// # Errors
    /// The outcome of a call that ended before its commit point (any non-success status, and
    /// informational ones such as `TDX_GPA_RANGE_ALREADY_BLOCKED`).
    // The error is the call's normal architectural outcome; boxing it would allocate per call.
    #[allow(clippy::result_large_err)]
    pub fn begin(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        leaf: u16,
        version: u8,
        regs: Regs,
    ) -> Result<InFlight, Outcome> {
        let Some(l) = Leaf::from_number(leaf) else {
            // tdx_vmm_dispatcher.c, default case: TDX_OPERAND_INVALID | RAX.
            self.stats.unknown_leaf += 1;
            let out = Regs { rax: status(TDX_OPERAND_INVALID, OperandId::Rax), ..regs };
            self.count_status(out.rax);
            return Err(Outcome {
                regs: out,
                cost: self.cfg.costs.seamcall_round_trip,
                refs: MemRefs::new(),
            });
        };
        let mut cx = Cx::new(l, version, regs);
        let r = if version > 0 && !l.versioned() {
            // tdx_vmm_dispatcher.c: version > 0 only for a few leaves.
            Err(status(TDX_OPERAND_INVALID, OperandId::Rax))
        } else {
            self.check(tables, &mut cx)
        };
        match r {
            Ok(commit) => {
                Ok(InFlight { leaf: l, out: cx.out, held: cx.held, refs: cx.refs, commit })
            }
            Err(st) => {
                self.release(tables, &mut cx.held);
                cx.out.rax = st;
                Err(self.done(l, cx.out, cx.refs, Cycles::ZERO))
            }
        }
    }

    /// Second half of a SEAMCALL: do the leaf's work, release its locks, return the outcome.
    pub fn finish(&mut self, tables: &mut PhysMemTables<Spa>, f: InFlight) -> Outcome {
        let InFlight { leaf, mut out, mut held, mut refs, commit } = f;
        out.rax = TDX_SUCCESS;
        let extra = self.apply(tables, commit, &mut out, &mut refs);
        self.release(tables, &mut held);
        self.done(leaf, out, refs, extra)
    }

    fn check(&mut self, t: &mut PhysMemTables<Spa>, cx: &mut Cx) -> Result<Commit, u64> {
        match cx.leaf {
            Leaf::MemSeptAdd => self.chk_sept_add(t, cx),
            Leaf::MemPageAdd => self.chk_page_add(t, cx),
            Leaf::MemPageAug => self.chk_aug(t, cx),
            Leaf::MemRangeBlock => self.chk_block(t, cx),
            Leaf::MemTrack => self.chk_track(cx),
            Leaf::MemPageRemove => self.chk_remove(t, cx),
            Leaf::MemSeptRemove => self.chk_sept_remove(t, cx),
            Leaf::MemRangeUnblock => self.chk_unblock(t, cx),
            Leaf::MemPageDemote => self.chk_demote(t, cx),
            Leaf::MemPagePromote => self.chk_promote(t, cx),
            Leaf::MemPageRelocate => self.chk_relocate(t, cx),
            Leaf::MrExtend => self.chk_mr_extend(t, cx),
            Leaf::PhymemPageReclaim => self.chk_reclaim(t, cx),
            Leaf::PhymemPageWbinvd => self.chk_wbinvd(cx),
            Leaf::PhymemCacheWb => self.chk_cache_wb(cx),
            Leaf::MngCreate => self.chk_mng_create(cx),
            Leaf::MngKeyConfig => self.chk_key_config(cx),
            Leaf::MngAddcx => self.chk_mng_addcx(cx),
            Leaf::MngInit => self.chk_mng_init(cx),
            Leaf::VpCreate => self.chk_vp_create(cx),
            Leaf::VpAddcx => self.chk_vp_addcx(cx),
            Leaf::VpInit => self.chk_vp_init(cx),
            Leaf::MrFinalize => self.chk_mr_finalize(cx),
            Leaf::VpFlush => self.chk_vp_flush(cx),
            Leaf::MngVpflushdone => self.chk_vpflushdone(cx),
            Leaf::MngKeyFreeid => self.chk_key_freeid(cx),
            Leaf::VpEnter => {
                self.chk_vp_enter(cx, false).map(|(tdr, tdvpr)| Commit::VpEnter { tdr, tdvpr })
            }
        }
    }

    /// Do a commit; returns cycles on top of the round trip and body.
    fn apply(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        c: Commit,
        out: &mut Regs,
        refs: &mut MemRefs,
    ) -> Cycles {
        match c {
            Commit::VpEnter { tdr, tdvpr } => {
                // Enter, then exit at once: the refcount taken at entry is dropped again.
                self.enter_vcpu(tdr, tdvpr);
                self.exit_vcpu(tdr, tdvpr);
                out.rax = VP_ENTER_IMMEDIATE_EXIT;
                self.cfg.costs.td_entry + self.cfg.costs.td_exit
            }
            other => {
                self.apply_commit(t, other, out, refs);
                Cycles::ZERO
            }
        }
    }

    /// Release every held lock, newest first.
    pub(crate) fn release(&mut self, t: &mut PhysMemTables<Spa>, held: &mut Held) {
        while let Some(l) = held.pop() {
            match l {
                HeldLock::Nothing => {}
                HeldLock::Tree(tdr, m) => {
                    if let Some(td) = self.tds.get_mut(&tdr) {
                        td.tree_lock.release(m);
                    }
                }
                HeldLock::Epoch(tdr, m) => {
                    if let Some(td) = self.tds.get_mut(&tdr) {
                        td.epoch_lock.release(m);
                    }
                }
                HeldLock::OpState(tdr, m) => {
                    if let Some(td) = self.tds.get_mut(&tdr) {
                        td.op_state_lock.release(m);
                    }
                }
                HeldLock::Pamt(hpa, size, m) => self.pamt_locks.unlock(hpa, size, m),
                HeldLock::Entry(a) => lock::entry_unlock(t, a),
                HeldLock::Children(table, n) => lock::unlock_children(t, table, n),
                HeldLock::Kot(m) => self.kot_lock.release(m),
            }
        }
    }

    fn body_cost(&self, leaf: Leaf) -> Cycles {
        let c = &self.cfg.costs;
        match leaf {
            Leaf::MemSeptAdd => c.sept_add,
            Leaf::MemPageAdd => c.page_add,
            Leaf::MemPageAug => c.page_aug,
            Leaf::MemRangeBlock => c.range_block,
            Leaf::MemTrack => c.mem_track,
            Leaf::MemPageRemove => c.page_remove,
            Leaf::MemSeptRemove => c.sept_remove,
            Leaf::MemRangeUnblock => c.range_unblock,
            Leaf::MemPageDemote => c.page_demote,
            Leaf::MemPagePromote => c.page_promote,
            Leaf::MemPageRelocate => c.page_relocate,
            Leaf::PhymemPageReclaim => c.phymem_page_reclaim,
            Leaf::PhymemPageWbinvd => c.phymem_page_wbinvd,
            Leaf::MrExtend => c.mr_extend,
            Leaf::VpEnter
            | Leaf::MngAddcx
            | Leaf::VpAddcx
            | Leaf::MngKeyConfig
            | Leaf::MngCreate
            | Leaf::VpCreate
            | Leaf::MrFinalize
            | Leaf::VpFlush
            | Leaf::MngVpflushdone
            | Leaf::MngKeyFreeid
            | Leaf::MngInit
            | Leaf::VpInit
            | Leaf::PhymemCacheWb => c.lifecycle,
        }
    }

    /// Finish an outcome: cost (round trip + body + `extra`; every dispatched call pays its
    /// body, failed ones included: a simplification) and statistics.
    fn done(&mut self, leaf: Leaf, out: Regs, refs: MemRefs, extra: Cycles) -> Outcome {
        let body = if leaf == Leaf::VpEnter { Cycles::ZERO } else { self.body_cost(leaf) };
        let cost = self.cfg.costs.seamcall_round_trip + body + extra;
        self.stats.by_leaf[usize::from(leaf.number() & 63)] += 1;
        self.count_status(out.rax);
        Outcome { regs: out, cost, refs }
    }

    fn count_status(&mut self, st: u64) {
        *self.stats.by_status.entry(st & STATUS_MASK).or_insert(0) += 1;
    }

    pub(crate) fn count_accept(&mut self, class: u64) {
        *self.stats.tdcall_by_status.entry(class).or_insert(0) += 1;
    }

    /// SEAMCALL and ACCEPT counts by name.
    pub fn stats(&self) -> TdxStats {
        let mut s = TdxStats::default();
        for l in Leaf::ALL {
            let n = self.stats.by_leaf[usize::from(l.number() & 63)];
            if n > 0 {
                s.seamcalls_by_leaf.insert(l.name().to_owned(), n);
            }
        }
        if self.stats.unknown_leaf > 0 {
            s.seamcalls_by_leaf.insert("UNKNOWN".to_owned(), self.stats.unknown_leaf);
        }
        for (&code, &n) in &self.stats.by_status {
            *s.seamcalls_by_status.entry(status_name(code).to_owned()).or_insert(0) += n;
        }
        for (&code, &n) in &self.stats.tdcall_by_status {
            let name = if code == ACCEPT_TD_EXIT { "TD_EXIT" } else { status_name(code) };
            *s.accepts_by_status.entry(name.to_owned()).or_insert(0) += n;
        }
        s
    }

    // ---------------------------------------------------------------------------------------
    // Shared checks (TDX module helpers.c)
    // ---------------------------------------------------------------------------------------

    /// `hpa_check_with_pwr_2_alignment`: aligned, no KeyID bits, below MAX_PA.
    pub(crate) fn hpa_ok(&self, hpa: u64, align: u64) -> bool {
        hpa & (align - 1) == 0 && hpa & self.cfg.hkid_mask() == 0 && hpa >> self.cfg.max_pa == 0
    }

    /// `shared_hpa_check_with_pwr_2_alignment`: aligned, below MAX_PA, a shared (non-private)
    /// KeyID. SEAMRR overlap is not modelled.
    pub(crate) fn shared_hpa_ok(&self, hpa: u64, align: u64) -> bool {
        hpa & (align - 1) == 0
            && hpa >> self.cfg.max_pa == 0
            && self.cfg.hkid_of(hpa) < u64::from(self.cfg.private_hkid_min)
    }

    /// Lock the PAMT entries on the walk to the entry at `reached` (parents shared, the entry
    /// in `mode`), as `pamt_walk` does.
    fn lock_pamt_path(&mut self, cx: &mut Cx, hpa: u64, reached: PageSize, mode: LockMode) -> bool {
        for size in [PageSize::G1, PageSize::M2, PageSize::K4] {
            let m = if size == reached { mode } else { LockMode::Shared };
            if !self.pamt_locks.try_lock(hpa, size, m) {
                return false;
            }
            cx.held.push(HeldLock::Pamt(hpa, size, m));
            if size == reached {
                break;
            }
        }
        true
    }

    /// `check_and_lock_explicit_private_hpa`: address checks (`OPERAND_INVALID | op`), the
    /// PAMT walk with locks (`BUSY | op`), the level reached (if `to_target`) and the page
    /// type (`PAGE_METADATA_INCORRECT | op`).
    #[allow(clippy::too_many_arguments)] // mirrors check_and_lock_explicit_private_hpa
    pub(crate) fn lock_explicit(
        &mut self,
        cx: &mut Cx,
        hpa: u64,
        size: PageSize,
        to_target: bool,
        mode: LockMode,
        expected: PageType,
        op: OperandId,
    ) -> Result<PamtEntry, u64> {
        if !self.hpa_ok(hpa, size.bytes()) {
            return Err(status(TDX_OPERAND_INVALID, op));
        }
        let e = self.pamt.walk(hpa, if to_target { size } else { PageSize::K4 });
        if !self.lock_pamt_path(cx, hpa, e.size, mode) {
            return Err(status(TDX_OPERAND_BUSY, op));
        }
        if (to_target && e.size != size) || e.pt != expected {
            return Err(status(TDX_PAGE_METADATA_INCORRECT, op));
        }
        Ok(e)
    }

    /// `pamt_implicit_get_and_lock`: lock one PAMT entry; `BUSY | op` on failure.
    pub(crate) fn lock_implicit(
        &mut self,
        cx: &mut Cx,
        hpa: u64,
        size: PageSize,
        mode: LockMode,
        op: OperandId,
    ) -> Result<(), u64> {
        if !self.pamt_locks.try_lock(hpa, size, mode) {
            return Err(status(TDX_OPERAND_BUSY, op));
        }
        cx.held.push(HeldLock::Pamt(hpa, size, mode));
        Ok(())
    }

    /// `check_lock_and_map_explicit_tdr`: the TDR page must be a 4 KiB PT_TDR page.
    pub(crate) fn lock_tdr(
        &mut self,
        cx: &mut Cx,
        tdr: u64,
        op: OperandId,
        mode: LockMode,
    ) -> Result<(), u64> {
        self.lock_explicit(cx, tdr, PageSize::K4, true, mode, PageType::Tdr, op)?;
        if !self.tds.contains_key(&tdr) {
            // Only reachable through set_pamt_direct: a PT_TDR page without a TD.
            return Err(status(TDX_PAGE_METADATA_INCORRECT, op));
        }
        Ok(())
    }

    /// `check_state_map_tdcs_and_lock`: fatal, lifecycle KEYS_CONFIGURED, enough TDCS pages,
    /// the OP_STATE lock (`BUSY | OP_STATE`), and the leaf allowed in OP_STATE.
    pub(crate) fn td_state_check(
        &mut self,
        cx: &mut Cx,
        tdr: u64,
        op_lock: Option<LockMode>,
    ) -> Result<(), u64> {
        let leaf = cx.leaf.number();
        let Some(td) = self.tds.get_mut(&tdr) else {
            return Err(TDX_TD_KEYS_NOT_CONFIGURED);
        };
        if td.fatal {
            return Err(TDX_TD_FATAL);
        }
        if td.lifecycle != Lifecycle::KeysConfigured {
            return Err(TDX_TD_KEYS_NOT_CONFIGURED);
        }
        if td.tdcx_count < MIN_TDCS_PAGES {
            return Err(TDX_TDCS_NOT_ALLOCATED);
        }
        if let Some(m) = op_lock {
            if !td.op_state_lock.try_acquire(m) {
                return Err(status(TDX_OPERAND_BUSY, OperandId::OpState));
            }
            cx.held.push(HeldLock::OpState(tdr, m));
        }
        if !td.op_state.allows(leaf) {
            return Err(TDX_OP_STATE_INCORRECT);
        }
        Ok(())
    }

    /// `lock_sept_check_and_walk_private_gpa` (+ the host entry lock when `lock_entry`): GPA
    /// validity (`OPERAND_INVALID | RCX`), the tree lock (`BUSY | SEPT_TREE`), the walk
    /// (`EPT_WALK_FAILED | RCX` with the view of where it stopped) and the entry's host lock
    /// (`BUSY | RCX` with the view). Returns the entry's address and its value after locking.
    #[allow(clippy::too_many_arguments)] // mirrors lock_sept_check_and_walk_internal
    pub(crate) fn walk_lock(
        &mut self,
        t: &mut PhysMemTables<Spa>,
        cx: &mut Cx,
        tdr: u64,
        gpa: u64,
        level: u8,
        tree: Option<LockMode>,
        lock_entry: bool,
    ) -> Result<(Spa, u64), u64> {
        let max_pa = self.cfg.max_pa;
        let Some(td) = self.tds.get_mut(&tdr) else {
            return Err(TDX_TD_KEYS_NOT_CONFIGURED);
        };
        if !td.private_gpa_valid(gpa, max_pa) {
            return Err(status(TDX_OPERAND_INVALID, OperandId::Rcx));
        }
        if let Some(m) = tree {
            if !td.tree_lock.try_acquire(m) {
                return Err(status(TDX_OPERAND_BUSY, OperandId::SeptTree));
            }
            cx.held.push(HeldLock::Tree(tdr, m));
        }
        let w = match td.sept_root {
            Some(root) => sept::walk(t, spa(root), td.root_level, gpa, level),
            None => {
                // Unreachable with the TDCS allocated (the root is a TDCS page).
                cx.view(sept::FREE_RAW, td.root_level);
                return Err(status(TDX_EPT_WALK_FAILED, OperandId::Rcx));
            }
        };
        for &a in w.refs.iter() {
            cx.refs.push(a);
        }
        if w.level != level {
            cx.view(w.entry, w.level);
            return Err(status(TDX_EPT_WALK_FAILED, OperandId::Rcx));
        }
        if lock_entry {
            if !lock::entry_lock_host(t, w.entry_addr) {
                cx.view(w.entry, w.level);
                return Err(status(TDX_OPERAND_BUSY, OperandId::Rcx));
            }
            cx.held.push(HeldLock::Entry(w.entry_addr));
        }
        Ok((w.entry_addr, t.read(w.entry_addr)))
    }

    // ---------------------------------------------------------------------------------------
    // TD entry and exit
    // ---------------------------------------------------------------------------------------

    /// First half of TDH.VP.ENTER (`tdh_vp_enter.c`), for race exploration: all its checks, the
    /// TDVPR and TDR PAMT locks (SHARED), the OP_STATE lock, the TD epoch lock SHARED with
    /// REFCOUNT[TD_EPOCH & 1] incremented (`adjust_tlb_tracking_state`), and, with
    /// `zero_step_filter`, the S-EPT tree lock EXCLUSIVE as the zero-step filter takes it
    /// (`BUSY | SEPT_TREE` if it cannot; spec/tdx.md §3.7). `rcx` is the vCPU handle.
    ///
    /// # Errors
    /// The outcome of a failed entry.
    #[allow(clippy::result_large_err)] // see `begin`
    pub fn vp_enter_begin(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        rcx: u64,
        zero_step_filter: bool,
    ) -> Result<VpEnterInFlight, Outcome> {
        let regs = Regs { rcx, ..Regs::default() };
        let mut cx = Cx::new(Leaf::VpEnter, 0, regs);
        match self.chk_vp_enter(&mut cx, zero_step_filter) {
            Ok((tdr, tdvpr)) => {
                Ok(VpEnterInFlight { tdr, tdvpr, held: cx.held, refs: cx.refs, out: cx.out })
            }
            Err(st) => {
                self.release(tables, &mut cx.held);
                cx.out.rax = st;
                Err(self.done(Leaf::VpEnter, cx.out, cx.refs, Cycles::ZERO))
            }
        }
    }

    /// Second half of TDH.VP.ENTER: the vCPU is now inside the TD (its refcount slot stays
    /// taken until [`TdxModule::td_exit`]). Releases the epoch, OP_STATE and tree locks; the
    /// TDVPR and TDR PAMT locks stay with the running vCPU. Returns the entry's cost.
    pub fn vp_enter_end(&mut self, tables: &mut PhysMemTables<Spa>, f: VpEnterInFlight) -> Cycles {
        let VpEnterInFlight { tdr, tdvpr, mut held, refs, mut out } = f;
        let mut keep = Held::default();
        let mut rest = Held::default();
        while let Some(l) = held.pop() {
            match l {
                HeldLock::Pamt(..) => keep.push(l),
                other => rest.push(other),
            }
        }
        self.release(tables, &mut rest);
        self.enter_vcpu(tdr, tdvpr);
        self.guest_held.insert(tdvpr, keep);
        out.rax = TDX_SUCCESS;
        self.done(Leaf::VpEnter, out, refs, self.cfg.costs.td_entry).cost
    }

    /// A TD exit of vCPU `tdvpr` (any cause: an interrupt, a kick, an EPT violation): drops
    /// its REFCOUNT slot and the locks it kept. Returns the exit's cost, or `None` if the vCPU
    /// is not inside its TD.
    pub fn td_exit(&mut self, tables: &mut PhysMemTables<Spa>, tdvpr: u64) -> Option<Cycles> {
        let tdr = self.pamt.entry(tdvpr).owner;
        let inside =
            self.tds.get(&tdr).and_then(|td| td.vcpus.get(&tdvpr)).is_some_and(|v| v.in_guest);
        if !inside {
            return None;
        }
        self.exit_vcpu(tdr, tdvpr);
        if let Some(mut h) = self.guest_held.remove(&tdvpr) {
            self.release(tables, &mut h);
        }
        Some(self.cfg.costs.td_exit)
    }

    /// Make every vCPU of the TD exit (KVM's `KVM_REQ_OUTSIDE_GUEST_MODE` kick after
    /// TDH.MEM.TRACK, spec/tdx.md §3.4). Returns how many were inside.
    pub fn kick_vcpus(&mut self, tables: &mut PhysMemTables<Spa>, tdr: u64) -> usize {
        let inside: Vec<u64> = self
            .tds
            .get(&tdr)
            .map(|td| td.vcpus.iter().filter(|(_, v)| v.in_guest).map(|(&k, _)| k).collect())
            .unwrap_or_default();
        for &v in &inside {
            self.td_exit(tables, v);
        }
        inside.len()
    }

    fn enter_vcpu(&mut self, tdr: u64, tdvpr: u64) {
        if let Some(td) = self.tds.get_mut(&tdr) {
            let epoch = td.epoch;
            let mut newly_associated = false;
            if let Some(v) = td.vcpus.get_mut(&tdvpr) {
                v.in_guest = true;
                v.vcpu_epoch = epoch;
                if !v.associated {
                    v.associated = true;
                    newly_associated = true;
                }
            }
            if newly_associated {
                td.num_assoc_vcpus += 1;
            }
        }
    }

    fn exit_vcpu(&mut self, tdr: u64, tdvpr: u64) {
        if let Some(td) = self.tds.get_mut(&tdr)
            && let Some(v) = td.vcpus.get_mut(&tdvpr)
            && v.in_guest
        {
            v.in_guest = false;
            let slot = usize::from(v.vcpu_epoch & 1 == 1);
            td.refcount[slot] = td.refcount[slot].saturating_sub(1);
        }
    }

    // ---------------------------------------------------------------------------------------
    // Inspection
    // ---------------------------------------------------------------------------------------

    /// Mark TD `tdr` fatal, as the module does on a machine check in the TD (spec/tdx.md
    /// §1.6): from then on its SEAMCALLs return `TDX_TD_FATAL`. `false` for an unknown TD.
    pub fn mark_fatal(&mut self, tdr: u64) -> bool {
        self.tds.get_mut(&tdr).map(|td| td.fatal = true).is_some()
    }

    /// A TD's key state.
    pub fn td(&self, tdr: u64) -> Option<TdView> {
        self.tds.get(&tdr).map(TdState::view)
    }

    /// A TD's full state.
    pub fn td_state(&self, tdr: u64) -> Option<&TdState> {
        self.tds.get(&tdr)
    }

    /// The S-EPT root of a TD and the level of its entries, for the machine's hardware walker.
    pub fn sept_root(&self, tdr: u64) -> Option<(Spa, u8)> {
        let td = self.tds.get(&tdr)?;
        td.sept_root.map(|r| (spa(r), td.root_level))
    }

    /// The S-EPT entry of `gpa` at `level`: its state and the page it maps (a leaf), the table
    /// it points to (a non-leaf) or 0 (free). `None` if the walk stops above `level` or the
    /// entry's state bits are no module encoding.
    pub fn sept_entry(
        &self,
        tables: &PhysMemTables<Spa>,
        tdr: u64,
        gpa: u64,
        level: u8,
    ) -> Option<(SeptState, u64)> {
        let (root, root_level) = self.sept_root(tdr)?;
        let w = sept::walk(tables, root, root_level, gpa, level);
        if w.level != level {
            return None;
        }
        let e = SeptEntry::from_raw(w.entry);
        let s = e.state()?;
        let hpa = if s.is_unmapped() {
            0
        } else if e.is_leaf() {
            e.leaf_hpa(level)
        } else {
            e.addr()
        };
        Some((s, hpa))
    }

    /// Every S-EPT entry of a TD that is not FREE, as (level, GPA, state), in one pass over
    /// its tables (root entries included). For invariant checks.
    pub fn sept_entries(&self, tables: &PhysMemTables<Spa>, tdr: u64) -> Vec<(u8, u64, SeptState)> {
        let Some((root, root_level)) = self.sept_root(tdr) else { return Vec::new() };
        let mut out = Vec::new();
        let mut stack = vec![(root.raw() & sept::bits::HPA_MASK, root_level, 0u64)];
        while let Some((table, level, base)) = stack.pop() {
            // A table still as the module made it: nothing but FREE entries.
            if tables.uniform(spa(table)) == Some(sept::FREE_RAW) {
                continue;
            }
            // A non-table page reads as zeros, as `PhysMemTables::read` reads it.
            let entries = tables.entries(spa(table)).unwrap_or(Cow::Owned([0; 512]));
            // Most of a table holds the FREE value the module fills tables with: 64 entries at
            // a time are compared with it (an OR of differences, which vectorizes), and a group
            // of FREE entries is passed over without a decode.
            for (g, group) in (0u64..).zip(entries.chunks_exact(64)) {
                if group.iter().fold(0, |d, &e| d | (e ^ sept::FREE_RAW)) == 0 {
                    continue;
                }
                for (i, &raw) in (g * 64..).zip(group) {
                    if raw == sept::FREE_RAW {
                        continue;
                    }
                    let Some(s) = SeptState::decode(raw) else { continue };
                    if s == SeptState::Free {
                        continue;
                    }
                    let gpa = base + (i << (12 + 9 * u32::from(level)));
                    out.push((level, gpa, s));
                    if level > 0 && matches!(s, SeptState::NlMapped | SeptState::NlBlocked) {
                        stack.push((raw & sept::bits::HPA_MASK, level - 1, gpa));
                    }
                }
            }
        }
        out
    }

    /// The S-EPT entry of `gpa` at `level` and every entry below it that is not FREE, as
    /// (level, GPA, state, HPA): the page a leaf maps or the table a non-leaf points to. Empty
    /// if the walk stops above `level`. For keeping a mirror of one subtree in step.
    pub fn sept_subtree(
        &self,
        tables: &PhysMemTables<Spa>,
        tdr: u64,
        gpa: u64,
        level: u8,
    ) -> Vec<(u8, u64, SeptState, u64)> {
        let mut out = Vec::new();
        let Some((root, root_level)) = self.sept_root(tdr) else { return out };
        let w = sept::walk(tables, root, root_level, gpa, level);
        if w.level != level {
            return out;
        }
        let size = 4096u64 << (9 * u32::from(level));
        let mut stack = vec![(w.entry, level, gpa & !(size - 1))];
        while let Some((raw, l, g)) = stack.pop() {
            let Some(s) = SeptState::decode(raw) else { continue };
            if s == SeptState::Free {
                continue;
            }
            let e = SeptEntry::from_raw(raw);
            let nl = l > 0 && matches!(s, SeptState::NlMapped | SeptState::NlBlocked);
            let hpa = if s.is_unmapped() {
                0
            } else if nl {
                e.addr()
            } else {
                e.leaf_hpa(l)
            };
            out.push((l, g, s, hpa));
            if nl {
                for i in 0..512u64 {
                    let child = tables.read(spa(e.addr() + i * 8));
                    stack.push((child, l - 1, g + (i << (12 + 9 * u32::from(l - 1)))));
                }
            }
        }
        out
    }

    /// The effective PAMT entry of the 4 KiB page holding `hpa`.
    pub fn pamt(&self, hpa: u64) -> PamtEntry {
        self.pamt.entry(hpa)
    }

    /// The PAMT entry at exactly level `size`.
    pub fn pamt_at(&self, hpa: u64, size: PageSize) -> PamtEntry {
        self.pamt.get(hpa, size)
    }

    /// The state of the lock of the PAMT entry at level `size` covering `hpa`.
    pub fn pamt_lock(&self, hpa: u64, size: PageSize) -> Sharex {
        self.pamt_locks.get(hpa, size)
    }

    /// Whether a vCPU is inside its TD.
    pub fn vcpu_in_guest(&self, tdvpr: u64) -> bool {
        let tdr = self.pamt.entry(tdvpr).owner;
        self.tds.get(&tdr).and_then(|td| td.vcpus.get(&tdvpr)).is_some_and(|v| v.in_guest)
    }

    // ---------------------------------------------------------------------------------------
    // Direct state setup (scenario `state` lines)
    // ---------------------------------------------------------------------------------------

    /// Build a TD directly: TDR page `tdr` (PT_TDR), HKID `hkid` (assigned), lifecycle
    /// KEYS_CONFIGURED, OP_STATE `op_state`, GPAW `gpaw` (48 or 52), the S-EPT root at
    /// `root_hpa` (a TDCX page filled with FREE entries, installed in `tables`), TD_EPOCH 1.
    /// Only the root of the TDCS pages is materialised (CHLDCNT counts it alone), but the TD
    /// counts as having all of them.
    ///
    /// # Errors
    /// [`SetupError`] for a bad page, GPAW or HKID.
    #[allow(clippy::too_many_arguments)]
    pub fn create_td_direct(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        tdr: u64,
        hkid: u16,
        op_state: OpState,
        root_hpa: u64,
        gpaw: u8,
    ) -> Result<(), SetupError> {
        let w = match gpaw {
            48 => GpaWidth::W48,
            52 => GpaWidth::W52,
            other => return Err(SetupError::BadGpaw(other)),
        };
        for p in [tdr, root_hpa] {
            if !self.hpa_ok(p, 4096) {
                return Err(SetupError::BadPage(p));
            }
        }
        if self.kot.contains_key(&hkid) {
            return Err(SetupError::HkidInUse(hkid));
        }
        let mut td = TdState::new(hkid, w);
        td.lifecycle = Lifecycle::KeysConfigured;
        td.key_configured = true;
        td.op_state = op_state;
        td.tdcx_count = MIN_TDCS_PAGES;
        td.tdcx = vec![root_hpa];
        td.sept_root = Some(root_hpa);
        td.root_level = root_level(w);
        td.sept_ve_disable = self.cfg.sept_ve_disable;
        td.max_vcpus = self.cfg.max_vcpus;
        td.epoch = 1;
        td.chldcnt = 1;
        sept::install_free_table(tables, spa(root_hpa));
        self.pamt
            .set(tdr, PamtEntry { pt: PageType::Tdr, owner: 0, bepoch: 0, size: PageSize::K4 });
        self.pamt.set(
            root_hpa,
            PamtEntry { pt: PageType::Tdcx, owner: tdr, bepoch: 0, size: PageSize::K4 },
        );
        self.kot.insert(hkid, KotState::Assigned);
        self.tds.insert(tdr, td);
        Ok(())
    }

    /// Add an initialised (READY, associated) vCPU with TDVPR page `tdvpr` to a TD directly.
    /// Only the TDVPR page is materialised (PT_TDVPR, CHLDCNT + 1).
    ///
    /// # Errors
    /// [`SetupError`] for an unknown TD or a bad page.
    pub fn create_vcpu_direct(&mut self, tdr: u64, tdvpr: u64) -> Result<(), SetupError> {
        if !self.hpa_ok(tdvpr, 4096) {
            return Err(SetupError::BadPage(tdvpr));
        }
        let td = self.tds.get_mut(&tdr).ok_or(SetupError::NoTd(tdr))?;
        let mut v = Vcpu::new();
        v.tdvps_pages = MIN_TDVPS_PAGES;
        v.state = VcpuState::Ready;
        v.associated = true;
        td.vcpus.insert(tdvpr, v);
        td.num_vcpus += 1;
        td.num_assoc_vcpus += 1;
        td.chldcnt += 1;
        self.pamt.set(
            tdvpr,
            PamtEntry { pt: PageType::Tdvpr, owner: tdr, bepoch: 0, size: PageSize::K4 },
        );
        Ok(())
    }

    /// Set the S-EPT entry of `gpa` at `level` to `state` directly, creating missing
    /// intermediate tables (NL_MAPPED, PAMT PT_EPT, from `frames`). For a non-leaf state the
    /// entry keeps the table it has, or gets a new FREE table at `hpa`; for a leaf state it maps
    /// `hpa` (PAMT PT_REG at the level's size, BEPOCH 0), releasing the page it mapped before;
    /// for FREE/REMOVED the old page is released. PAMT and CHLDCNT follow.
    ///
    /// # Errors
    /// [`SetupError`] when the request does not fit the tree.
    #[allow(clippy::too_many_arguments)]
    pub fn set_sept_direct(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        frames: &mut dyn FrameSource<Spa>,
        tdr: u64,
        gpa: u64,
        level: u8,
        state: SeptState,
        hpa: u64,
    ) -> Result<(), SetupError> {
        let max_pa = self.cfg.max_pa;
        let td = self.tds.get(&tdr).ok_or(SetupError::NoTd(tdr))?;
        let (root, root_level) = match td.sept_root {
            Some(r) => (r, td.root_level),
            None => return Err(SetupError::NoTd(tdr)),
        };
        if level > root_level
            || gpa & (sept::level_bytes(level) - 1) != 0
            || !td.private_gpa_valid(gpa, max_pa)
        {
            return Err(SetupError::BadGpa { gpa, level });
        }
        let leaf_state = !state.is_non_leaf() && !state.is_unmapped();
        if (leaf_state && level > 2) || (state.is_non_leaf() && level == 0) {
            return Err(SetupError::BadLevel { state, level });
        }
        if (leaf_state || state.is_non_leaf()) && !self.hpa_ok(hpa, 4096) {
            return Err(SetupError::BadPage(hpa));
        }
        if leaf_state && hpa & (sept::level_bytes(level) - 1) != 0 {
            return Err(SetupError::BadPage(hpa));
        }
        // Walk down, creating tables.
        let mut table = root;
        let mut l = root_level;
        while l > level {
            let addr = spa(table + sept::index(gpa, l) * 8);
            let e = SeptEntry::from_raw(tables.read(addr));
            match e.state() {
                Some(s) if s.is_non_leaf() => table = e.addr(),
                Some(s) if s.is_unmapped() => {
                    let page = frames.alloc_table().ok_or(SetupError::NoFrames)?;
                    self.add_table_direct(tables, tdr, page.raw());
                    tables.write(addr, SeptEntry::non_leaf(page.raw()).raw());
                    table = page.raw();
                }
                _ => return Err(SetupError::LeafInTheWay(l)),
            }
            l -= 1;
        }
        let addr = spa(table + sept::index(gpa, level) * 8);
        let old = SeptEntry::from_raw(tables.read(addr));
        let old_state = old.state();
        let old_nl = old_state.is_some_and(SeptState::is_non_leaf);
        if old_nl && !state.is_non_leaf() {
            return Err(SetupError::TableInTheWay(level));
        }
        if !old_nl {
            self.release_leaf_direct(tdr, old, level);
        }
        let new = if state.is_non_leaf() {
            let t = if old_nl {
                old.addr()
            } else {
                self.add_table_direct(tables, tdr, hpa);
                hpa
            };
            SeptEntry::non_leaf(t).with_perms(state.perms()).with_state(state)
        } else if leaf_state {
            let size = sept::level_size(level).unwrap_or(PageSize::K4);
            self.pamt.set(hpa, PamtEntry { pt: PageType::Reg, owner: tdr, bepoch: 0, size });
            if let Some(td) = self.tds.get_mut(&tdr) {
                td.chldcnt = td.chldcnt.wrapping_add(size.pages_4k());
            }
            SeptEntry::leaf(hpa, state, state.perms())
        } else {
            SeptEntry::FREE.with_state(state)
        };
        tables.write(addr, new.raw());
        Ok(())
    }

    fn add_table_direct(&mut self, tables: &mut PhysMemTables<Spa>, tdr: u64, page: u64) {
        sept::install_free_table(tables, spa(page));
        self.pamt
            .set(page, PamtEntry { pt: PageType::Ept, owner: tdr, bepoch: 0, size: PageSize::K4 });
        if let Some(td) = self.tds.get_mut(&tdr) {
            td.chldcnt = td.chldcnt.wrapping_add(1);
        }
    }

    fn release_leaf_direct(&mut self, tdr: u64, old: SeptEntry, level: u8) {
        let Some(s) = old.state() else { return };
        if s.is_unmapped() || s.is_non_leaf() {
            return;
        }
        let size = sept::level_size(level).unwrap_or(PageSize::K4);
        let page = old.leaf_hpa(level);
        if self.pamt.get(page, size).owner == tdr {
            self.pamt.clear(page, size);
            if let Some(td) = self.tds.get_mut(&tdr) {
                td.chldcnt = td.chldcnt.wrapping_sub(size.pages_4k());
            }
        }
    }

    /// Set the PAMT entry at `entry.size` for the page holding `hpa` directly.
    pub fn set_pamt_direct(&mut self, hpa: u64, entry: PamtEntry) {
        self.pamt.set(hpa & !(entry.size.bytes() - 1), entry);
    }

    /// Set a TD's TD_EPOCH and REFCOUNT\[2\] directly.
    ///
    /// # Errors
    /// [`SetupError::NoTd`].
    pub fn set_epoch_direct(
        &mut self,
        tdr: u64,
        epoch: u64,
        refcounts: [u32; 2],
    ) -> Result<(), SetupError> {
        let td = self.tds.get_mut(&tdr).ok_or(SetupError::NoTd(tdr))?;
        td.epoch = epoch;
        td.refcount = refcounts;
        Ok(())
    }

    /// Set a TD's TDR lifecycle state directly (e.g. TEARDOWN for RECLAIM scenarios).
    ///
    /// # Errors
    /// [`SetupError::NoTd`].
    pub fn set_lifecycle_direct(
        &mut self,
        tdr: u64,
        lifecycle: Lifecycle,
    ) -> Result<(), SetupError> {
        let td = self.tds.get_mut(&tdr).ok_or(SetupError::NoTd(tdr))?;
        td.lifecycle = lifecycle;
        Ok(())
    }

    /// Set a TD's OP_STATE directly.
    ///
    /// # Errors
    /// [`SetupError::NoTd`].
    pub fn set_op_state_direct(&mut self, tdr: u64, op_state: OpState) -> Result<(), SetupError> {
        let td = self.tds.get_mut(&tdr).ok_or(SetupError::NoTd(tdr))?;
        td.op_state = op_state;
        Ok(())
    }
}

/// Key of the ACCEPT counter for EPT-violation TD exits (not a status class: bit 62 alone).
pub(crate) const ACCEPT_TD_EXIT: u64 = 1 << 62;

/// Verify a page-info operand (`verify_page_info_input`): bits 11:3 and 63:52 zero, level in
/// `[min, max]`, GPA aligned to the level. Returns (GPA, level).
pub(crate) fn page_info(raw: u64, min: u8, max: u8) -> Option<(u64, u8)> {
    const RESERVED: u64 = 0xFFF0_0000_0000_0FF8;
    if raw & RESERVED != 0 {
        return None;
    }
    let level = u8::try_from(raw & 7).ok()?;
    if level < min || level > max {
        return None;
    }
    let gpa = raw & sept::bits::HPA_MASK;
    if gpa & (sept::level_bytes(level) - 1) != 0 {
        return None;
    }
    Some((gpa, level))
}
