//! mmu-model: the CPU's translation hardware (DESIGN.md "Layers").
//!
//! What it models:
//! - **Entries**, bit-exact, one type per format (STYLE rule 6): the x86-64 paging-structure
//!   entry ([`X86Pte`], [`PteFlags`], [`LeafAttrs`]; SDM Vol. 3A §4.5 Tables 4-14..4-20, AMD
//!   APM Vol. 2 §5.3–§5.4) with protection keys and the SEV C-bit at a configured position
//!   ([`CbitPos`], APM §15.34.1); the AMD nested-page-table entry ([`NptEntry`], APM
//!   §15.25.5); the Intel EPT entry ([`EptEntry`], [`EptFlags`], [`EptMemType`]; SDM Vol. 3C
//!   §29.3.2); the TDX shared bit of a GPA ([`GpaWidth`]; spec/tdx.md §1.1).
//! - **Page tables in simulated physical memory** ([`PhysMemTables`], [`PageTable`] over any
//!   format: [`GuestPageTable`] keyed by GPA, [`NptTable`], [`EptTable`]): map, unmap,
//!   protect, split, merge, each returning a `#[must_use]` [`PendingInvalidation`].
//! - **Walks**, functional cores apart from timing: the 1-D walk ([`walk`],
//!   [`walk_functional`], [`walk_checked`]), the 2-D walk (guest × NPT/EPT: [`walk_2d`],
//!   [`walk_2d_functional`], [`walk_2d_checked`]) and the nested walk of guest-physical
//!   accesses, each giving the ordered memory references ([`WalkRef`]: SPA, level, [`Stage`],
//!   read or A/D write) — (n+1)(m+1)−1 of them for an n×m 2-D walk with nothing cached. Faults
//!   are values: #PF ([`PfErrorCode`]), #VMEXIT(NPF) ([`NpfExit`], [`NpfExitInfo1`]), EPT
//!   violations ([`EptViolation`], [`EptQualification`]).
//! - **The check hook** ([`TranslationCheck`]): called for every table reference (guest,
//!   nested or native) and for the data access of a walk, with the guest-side context
//!   ([`GuestCheckInfo`]) where there is one; the TLB entry keeps a [`CheckCache`]. The root
//!   crate plugs rmp-model in here.
//! - **TLBs declared per CPU** ([`TlbHierarchy`] of [`Tlb`] levels): L1 ITLB, L1 DTLB, store
//!   DTLB, L2 ITLB, STLB, each of arrays with sets × ways, page sizes, a [`Replacement`]
//!   policy and a hit latency, tagged by ASID/VPID, PCID, global bit and nested root; an
//!   [`Inclusion`] policy; a nested TLB for 2-D walks.
//! - **Paging-structure caches** ([`Pwc`]): host, guest and nested, per level; a walk starts
//!   below the deepest hit.
//! - **Invalidation**: INVLPG, INVPCID, MOV CR3 (with and without no-flush), full flushes,
//!   SVM TLB_CONTROL, INVEPT, INVVPID, page-table tokens ([`Mmu::invalidate`]) — every TLB
//!   level, the nested TLB and the PWCs — and an oracle mode that catches a skipped one
//!   ([`Mmu::enable_oracle`]).
//! - **The MMU** ([`Mmu`]): all of the above, priced per access through a [`CacheLatency`]
//!   model ([`FlatLatency`], or the cache model), with a functional path without side effects.
//! - **The overlap rule** ([`WalkOverlap`]): a timing layer apart from the functional state;
//!   TLB misses within `mlp_window` accesses overlap up to `page_walkers` at a time.
//! - **Configuration** ([`MmuConfig`], section `[mmu]`) and CPU presets ([`MMU_PRESETS`]).
//!
//! Not modelled: the IOMMU, protection-key checks, shadow stacks, 32-bit and PAE paging,
//! memory types, mode-based execute control, Zen's 16K coalesced entries and skewed L2 ways,
//! prefetching walks. The direct map, CPA and the physmap policies are host software and live
//! in the root crate.
//!
//! ```
//! use mmu_model::{AccessKind, AccessRequest, AccessResult, Cr3, FlatLatency, LeafAttrs,
//!                 LinearFrames, Mmu, MmuConfig, NoCheck, PageTable, Paging, PhysMemTables,
//!                 PteFlags, TlbTag};
//! use sim_core::{Cycles, Hva, PageSize, Spa};
//!
//! let mut tables = PhysMemTables::new();
//! let mut frames = LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
//! let cfg = MmuConfig::zen4();
//! let mut dm: PageTable = PageTable::new(&mut tables, &mut frames, Paging::FourLevel,
//!                                        cfg.pte_format(), PteFlags::KERNEL_TABLE).unwrap();
//! // Direct-map 2 MiB of physical memory at PAGE_OFFSET.
//! let page_offset = 0xffff_8880_0000_0000;
//! dm.map(&mut tables, &mut frames, Hva::new(page_offset), Spa::new(0), PageSize::M2,
//!        LeafAttrs::KERNEL_RW).unwrap().ignore(); // fresh mapping: nothing to flush
//! let cr3 = Cr3 { root: dm.root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
//! let mut mmu = Mmu::new(0, &cfg, cr3).unwrap();
//! let mut lat = FlatLatency { per_ref: cfg.walk_ref_latency };
//! let req = AccessRequest::kernel(Hva::new(page_offset + 0x1234), AccessKind::Read);
//! let miss = mmu.access(&mut tables, &mut NoCheck, &mut lat, &req);
//! assert_eq!(miss.result, AccessResult::Translated { spa: Spa::new(0x1234), size: PageSize::M2 });
//! assert_eq!(miss.refs.len(), 3); // PML4, PDPT, PD; A bits already set by LeafAttrs/KERNEL_TABLE
//! let hit = mmu.access(&mut tables, &mut NoCheck, &mut lat, &req);
//! assert_eq!(hit.cost, cfg.dtlb.hit_latency);
//! ```
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![deny(clippy::iter_over_hash_type)]

mod addr;
mod cache;
mod check;
mod compact;
mod config;
mod entry;
mod ept;
mod fault;
mod gpa;
mod hierarchy;
mod inline;
mod inval;
mod iommu;
mod latency;
mod level;
mod mmu;
mod nested;
mod npt;
mod overlap;
mod page_table;
mod pte;
mod pwc;
mod repl;
mod tables;
mod tlb;
mod walk;

pub use addr::{PagedAddr, PhysAddr};
pub use cache::{
    CACHE_PRESETS, Cache, CacheConfig, CacheError, CacheGeometry, CacheHierarchy, CacheLevelConfig,
    CachePreset, CacheStats, ClassCounts, CpuCaches, Evicted, HierarchyStats, HitLevel,
    LINE_SIZE_RANGE, LlcFill, MAX_CACHE_LINES, MAX_CACHE_WAYS, RefClass, Served, ServedCounts,
};
pub use check::{
    CheckAllow, CheckCache, CheckRequest, CheckTarget, CheckVerdict, CheckWork, GuestCheckInfo,
    MAX_CHECK_READS, MAX_GUEST_CHECK_READS, NoCheck, TranslationCheck, WriteCheck,
};
pub use config::{
    CbitSetting, DEFAULT_CBIT_POS, DEFAULT_DTLB_ENTRIES, DEFAULT_MLP_WINDOW, DEFAULT_PAGE_WALKERS,
    DEFAULT_PHYS_ADDR_BITS, DEFAULT_RECHECK_WRITE_ON_READ_FILL, DEFAULT_REPLACEMENT_SEED,
    DEFAULT_TLB_HIT_LATENCY, DEFAULT_WALK_REF_LATENCY, MMU_PRESET_NAMES, MMU_PRESETS, MmuConfig,
    MmuPreset,
};
pub use entry::{PagingEntry, Perms};
pub use ept::{EptEntry, EptFlags, EptLeafAttrs, EptMemType};
pub use fault::{EptQualification, EptViolation, GuestFault, NpfExit, NpfExitInfo1};
pub use gpa::GpaWidth;
pub use hierarchy::{HierarchyGeometry, Inclusion, TlbHierarchy, TlbLevelId, TlbLookup};
pub use inline::{InlineVec, Scratch};
pub use inval::{InvalidationRange, PendingInvalidation};
pub use iommu::{
    AmdEvent, AmdEventCode, AmdIoPte, Dma, DmaCheck, DmaReadRule, IoPerms, Iommu, IommuConfig,
    IommuError, IommuEvent, IommuKind, IommuStats, NoDmaCheck, VtdFault, VtdFaultReason,
    event_flags,
};
pub use latency::{CacheLatency, FlatLatency, MemRefKind};
pub use level::{ENTRIES_PER_TABLE, Level, Paging};
pub use mmu::{
    AccessOutcome, AccessPath, AccessRequest, AccessResult, CheckReads, Cr3, FaultKind,
    FunctionalOutcome, GuestAccessOutcome, GuestAccessRequest, GuestAccessResult, GuestCheckReads,
    GuestFaultKind, Invalidated, Invept, Invpcid, Invvpid, Mmu, MmuStats, OracleMismatch,
    TlbControl,
};
pub use nested::{
    CheckedGuestWalk, GuestAddr, GuestContext, GuestMemory, GuestPaging, GuestTranslation,
    GuestWalk, GuestWalkRequest, MAX_2D_REFS, NestedContext, NestedKind, NestedRefs, Walk2dScratch,
    translate_2d_functional, walk_2d, walk_2d_checked, walk_2d_functional,
};
pub use npt::NptEntry;
pub use overlap::{TimedAccess, WalkOverlap};
pub use page_table::{
    EptTable, GuestPageTable, Leaf, LeafError, MapError, MergeError, NewTableError, NptTable,
    PageTable, ProtectError, SplitError, UnmapError, Unmapped,
};
pub use pte::{CbitPos, LeafAttrs, PteFlags, PteFormat, X86Pte};
pub use pwc::{Pwc, PwcConfig, PwcLevelConfig, PwcStats};
pub use repl::{MAX_PLRU_WAYS, Replacement};
pub use tables::{FrameSource, InstallError, LinearFrames, PhysMemTables};
pub use tlb::{
    FlushScope, MAX_TLB_SETS, MAX_TLB_WAYS, Tlb, TlbArrayConfig, TlbConfig, TlbFill, TlbHit,
    TlbSizeStats, TlbSlot, TlbStats, TlbTag,
};
pub use walk::{
    AccessKind, CheckedWalk, MAX_1D_REFS, PageFault, PagingControls, PfErrorCode, Privilege,
    RefKind, Stage, Translation, Walk, WalkContext, WalkRef, WalkRefs, WalkRequest, WalkStart,
    permits, walk, walk_checked, walk_checked_functional, walk_functional,
};
