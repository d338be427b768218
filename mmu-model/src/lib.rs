//! mmu-model: the CPU's translation hardware (DESIGN.md "Layers").
//!
//! What it models:
//! - **Entries** ([`X86Pte`], [`PteFlags`], [`LeafAttrs`]): the x86-64 paging-structure entry,
//!   bit-exact (Intel SDM Vol. 3A §4.5 Tables 4-14..4-20; AMD APM Vol. 2 §5.3–§5.4), with the
//!   SEV C-bit at a configured position ([`CbitPos`], APM §15.34.1).
//! - **Page tables in simulated physical memory** ([`PhysMemTables`], [`PageTable`]): every
//!   table page is a real page allocated through a [`FrameSource`], so walks yield real memory
//!   references. Primitives map, unmap, protect, split and merge, each returning a
//!   `#[must_use]` [`PendingInvalidation`]; `lookup` is functional.
//! - **Walks** ([`walk`], [`walk_functional`], [`walk_checked`]): 4- and 5-level, permission
//!   checks with WP/SMEP/SMAP, reserved bits, A/D updates recorded as references, #PF error
//!   codes bit-exact ([`PfErrorCode`], RMP bit 31 included).
//! - **The check hook** ([`TranslationCheck`]): called for each table reference and for the
//!   data access at the end of a walk, and when a write hits a read-filled TLB entry; the TLB
//!   entry keeps a [`CheckCache`]. The root crate plugs rmp-model in here.
//! - **One DTLB level** ([`Tlb`]): arrays per page-size group, sets × ways, true LRU, ASID/PCID
//!   tags and global entries, INVLPG-style range invalidation and scoped flushes.
//! - **The MMU** ([`Mmu`]): TLB + walker + checks, priced per access through a
//!   [`CacheLatency`] model ([`FlatLatency`] for now), plus a functional path with no side
//!   effects.
//! - **Configuration** ([`MmuConfig`], section `[mmu]`).
//!
//! Not modelled yet: nested (2-D) walks, paging-structure caches, a second TLB level, the
//! IOMMU, protection keys, shadow stacks, 32-bit and PAE paging, memory types. The direct map,
//! CPA and the physmap policies are host software and live in the root crate.
//!
//! ```
//! use mmu_model::{AccessKind, AccessRequest, AccessResult, Cr3, FlatLatency, LeafAttrs,
//!                 LinearFrames, Mmu, MmuConfig, NoCheck, PageTable, Paging, PhysMemTables,
//!                 PteFlags, TlbTag};
//! use sim_core::{Cycles, Hva, PageSize, Spa};
//!
//! let mut tables = PhysMemTables::new();
//! let mut frames = LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
//! let cfg = MmuConfig::default();
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
//! assert_eq!(hit.cost, cfg.tlb_hit_latency);
//! ```
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![deny(clippy::iter_over_hash_type)]

mod addr;
mod check;
mod config;
mod inline;
mod inval;
mod latency;
mod level;
mod mmu;
mod page_table;
mod pte;
mod tables;
mod tlb;
mod walk;

pub use addr::{PagedAddr, PhysAddr};
pub use check::{
    CheckAllow, CheckCache, CheckRequest, CheckTarget, CheckVerdict, CheckWork, MAX_CHECK_READS,
    NoCheck, TranslationCheck, WriteCheck,
};
pub use config::{
    CbitSetting, DEFAULT_CBIT_POS, DEFAULT_DTLB_ENTRIES, DEFAULT_PHYS_ADDR_BITS,
    DEFAULT_RECHECK_WRITE_ON_READ_FILL, DEFAULT_TLB_HIT_LATENCY, DEFAULT_WALK_REF_LATENCY,
    MmuConfig,
};
pub use inline::InlineVec;
pub use inval::{InvalidationRange, PendingInvalidation};
pub use latency::{CacheLatency, FlatLatency, MemRefKind};
pub use level::{ENTRIES_PER_TABLE, Level, Paging};
pub use mmu::{
    AccessOutcome, AccessPath, AccessRequest, AccessResult, CheckReads, Cr3, FaultKind,
    FunctionalOutcome, Mmu, MmuStats,
};
pub use page_table::{
    Leaf, LeafError, MapError, MergeError, NewTableError, PageTable, ProtectError, SplitError,
    UnmapError,
};
pub use pte::{CbitPos, LeafAttrs, PteFlags, PteFormat, X86Pte};
pub use tables::{FrameSource, InstallError, LinearFrames, PhysMemTables};
pub use tlb::{
    FlushScope, MAX_TLB_SETS, MAX_TLB_WAYS, Tlb, TlbArrayConfig, TlbConfig, TlbFill, TlbHit,
    TlbSizeStats, TlbSlot, TlbStats, TlbTag,
};
pub use walk::{
    AccessKind, CheckedWalk, MAX_1D_REFS, PageFault, PagingControls, Perms, PfErrorCode, Privilege,
    RefKind, Translation, Walk, WalkContext, WalkRef, WalkRefs, WalkRequest, permits, walk,
    walk_checked, walk_checked_functional, walk_functional,
};
