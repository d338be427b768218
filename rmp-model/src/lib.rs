//! rmp-model: the AMD SEV-SNP Reverse Map Table as hardware (DESIGN.md "Layers").
//!
//! The RMP holds one 16-byte entry per 4 KiB page of system memory, saying who owns the page
//! (hypervisor, a guest by ASID, or the AMD secure processor), at which GPA a guest must map
//! it, whether the guest validated it, and per-VMPL permissions (AMD APM Vol. 2 §15.36;
//! digest: `shared/spec/snp.md`). This crate models:
//!
//! - the entry: architectural fields ([`RmpEntry`]) and the raw in-memory layout
//!   ([`RawRmpEntry`], §1.2), with owner states as an enum ([`RmpPageState`]);
//! - the table ([`Rmp`]): RMP_BASE/RMP_END coverage ([`RmpLayout`], §1.3), sparse storage that
//!   scales to multi-TiB hosts, the 2 MiB authoritative-entry rule (§1.4), and an O(1)
//!   "any page of this 2 MiB region assigned?" count;
//! - the instructions RMPUPDATE and PSMASH as values ([`Rmp::rmpupdate`], [`Rmp::psmash`] →
//!   [`RmpReturn`], §3.1–§3.3);
//! - the host RMP check ([`Rmp::check_host_access`], §2.1–§2.4), which reports the RMP entry
//!   it read so the caller prices it through its cache-latency model;
//! - configuration ([`RmpConfig`], section `[rmp]`) and counters ([`RmpStats`]).
//!
//! Also modelled: the segmented RMP (RMP_CFG and the RMP Segment Table,
//! [`RmpLayout::from_segmented_msrs`], §1.5; storage numbers regions per segment, so holes
//! cost nothing); RMPREAD ([`Rmp::rmpread`] → [`RmpReadRecord`], §3.6); and the RMP effects of
//! the SNP firmware commands — SNP_INIT, GCTX_CREATE, LAUNCH_START/UPDATE/FINISH,
//! DECOMMISSION, PAGE_RECLAIM, PAGE_UNSMASH, DF_FLUSH, the IOMMU part of SHUTDOWN_EX
//! ([`Rmp::snp_init`], [`Rmp::launch_update`], [`Rmp::page_reclaim`], … → [`SnpFwStatus`],
//! with the firmware's page states [`FwPageState`]).
//!
//! Not modelled yet: guest-side checks (Table 15-39 rows for guests; the causes are already in
//! [`RmpViolationCause`]), PVALIDATE, RMPADJUST, RMPQUERY, RMPOPT, the in-use erratum of early
//! parts, transient FAIL_INUSE from concurrent updates (the engine's scheduler sets the in-use
//! flag for that), the firmware's own state (platform and guest states, ASID activation,
//! SNP_ACTIVATE, the per-ASID page counters the 16 KiB bookkeeping area holds per AMD's
//! firmware source, amd/AMD-ASPFW `sev_rmp.c` `check_rmp_for_asid`), and the swap and
//! migration commands (SWAP_OUT/IN, PAGE_MOVE, MD_INIT, PAGE_SET_STATE). This crate does not
//! depend on mmu-model: the root crate plugs [`Rmp::check_host_access`] into mmu-model's check
//! hook.
//!
//! ```
//! use rmp_model::{Executor, HostAccess, Rmp, RmpCheck, RmpLayout, RmpPageSize, RmpReturn,
//!                 RmpUpdateInput};
//! use sim_core::{Gpa, PageSize, Spa};
//!
//! let layout = RmpLayout::covering(Spa::new(0x10_0000), 8 << 30).unwrap();
//! let mut rmp = Rmp::new(layout);
//! // KVM makes one 4 KiB page private to ASID 5 (spec/snp.md §6 S5).
//! let page = Spa::new(0x1_0001_0000);
//! let input = RmpUpdateInput::private(Gpa::new(0x8000_0000), RmpPageSize::K4, 5, false);
//! assert_eq!(rmp.rmpupdate(Executor::Hypervisor, page, &input), RmpReturn::Success);
//! // A host write to a neighbour through a 2 MiB direct-map mapping violates (S1)…
//! let out = rmp.check_host_access(Spa::new(0x1_0000_5000), PageSize::M2, HostAccess::DataWrite);
//! assert!(matches!(out.check, RmpCheck::Violation(_)));
//! // …after reading one RMP entry, the region's 2 MiB-aligned one.
//! assert_eq!(out.entry_read, Some(Spa::new(0x10_0000 + 0x4000 + 0x10_0000 * 16)));
//! // The same write through a 4 KiB mapping is fine (S4).
//! let ok = rmp.check_host_access(Spa::new(0x1_0000_5000), PageSize::K4, HostAccess::DataWrite);
//! assert_eq!(ok.check, RmpCheck::Ok);
//! ```
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

mod check;
mod config;
mod entry;
mod firmware;
mod guest;
mod instr;
mod layout;
mod rmpread;
mod stats;
mod table;

pub use check::{HostAccess, RmpCheck, RmpCheckOutcome, RmpViolation, RmpViolationCause};
pub use config::{
    DEFAULT_FW_COMMAND_LATENCY, DEFAULT_GLOBAL_FLUSH_LATENCY, DEFAULT_GUEST_RMP_INSTR_LATENCY,
    DEFAULT_PSMASH_LATENCY, DEFAULT_RMP_LOOKUP_LATENCY, DEFAULT_RMPUPDATE_LATENCY,
    NestedTableCheck, OverlapRule, RmpConfig, TlbOnRmpUpdate,
};
pub use entry::{
    GPA_LIMIT, MAX_ASID, RawRmpEntry, RmpEntry, RmpPageSize, RmpPageState, VMPL_ON_UPDATE,
    VmplPerms,
};
pub use firmware::{FwPageState, LaunchPageType, LaunchUpdate, SnpFwStatus, SnpInit};
pub use guest::{
    GuestAccess, GuestAccessKind, GuestCheckOutcome, GuestFaultClass, GuestInstrOutcome,
    GuestRmpContext, GuestViolation, RmpQueryResult, VC_PAGE_NOT_VALIDATED,
};
pub use instr::{Executor, RmpReturn, RmpUpdateInput};
pub use layout::{
    CONTIGUOUS_SEGMENT_SHIFT, MIN_SEGMENT_SHIFT, MSR_RMP_CFG, RMP_CFG_SEGMENTED, RST_BYTES,
    RST_MAX_ENTRIES,
};
pub use rmpread::RmpReadRecord;
pub use stats::RmpStats;
pub use table::{
    NotCovered, RMP_ALIGN, RMP_BOOKKEEPING_BYTES, RMP_ENTRY_BYTES, Rmp, RmpLayout, RmpLayoutError,
};
