//! Configuration of the host software model (`[host]`): direct-map layout and physmap policy.

use crate::host::alloc::AllocOrder;
use serde::{Deserialize, Serialize};
use sim_core::config::{ConfigBlock, ConfigError, FieldDoc, Source};
use sim_core::{Cycles, PageSize};

/// What the host kernel does to its direct map (and its RMP fault handler) around RMP updates
/// (spec/physmap.md §3, spec/snp.md §4). Each variant names the patch or kernel it models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhysmapPolicy {
    /// Do nothing: a kernel write through a large mapping covering a private page takes an RMP
    /// #PF, which would crash the host. Counted as fatal; the run goes on.
    None,
    /// The 2021 RFC ("x86/mm: split the physmap when adding the page in RMP table", Brijesh
    /// Singh, RFC v1 04/30): `set_memory_4k()` on the page before every RMPUPDATE that assigns
    /// it, whatever the RMP level.
    SplitOnAssign,
    /// Part2 v6 09/49 ("x86/fault: Add support to handle the RMP fault for user address",
    /// 2022-06): nothing is done to the direct map; an RMP #PF at a *user* address whose PFN is
    /// assigned sends SIGBUS, and one whose host mapping is larger than the RMP level splits the
    /// user mapping (`FAULT_FLAG_PAGE_SPLIT` → `__split_huge_pmd`) and retries. Kernel RMP
    /// faults stay fatal, as in the seed.
    SplitOnFault,
    /// The counterfactual the first seed's author asked for: the kernel's own RMP #PF handler
    /// splits the direct-map mapping that faulted to 4K and retries (a write to the assigned
    /// page itself still faults, fatally).
    SplitOnFaultKernel,
    /// Linux ≥ 6.9, "x86/sev: Adjust directmap to avoid inadvertant RMP faults" (init-v2,
    /// Michael Roth, 2024-01-26; `adjust_direct_map` in arch/x86/virt/svm/sev.c): before every
    /// RMPUPDATE at 4K (assign and unassign alike) the page's direct-map mapping is split to 4K
    /// if it is larger; never for 2M RMP updates; never restored.
    AdjustDirectMap,
    /// The direct map split entirely to 4K at boot: the alternative that commit 661b1c6169e2
    /// measured ("no significant benefit" for 2M-THP-backed guests). Modelled as a direct map
    /// built with 4K leaves (as `debug_pagealloc`/`rodata=full` kernels map it), so no split is
    /// counted.
    #[serde(rename = "presplit-4k")]
    Presplit4k,
    /// Part2 v6 07/49 / RFC v8 15/56 (2022–2023): pages are removed from the direct map
    /// (`set_direct_map_invalid_noflush` per page of the RMP level, then a kernel-range flush)
    /// when assigned, and restored (`set_direct_map_default_noflush`) when made shared again.
    UnmapPrivate,
    /// guest_memfd `NO_DIRECT_MAP` (Patrick Roy, 2025 series): a gmem folio leaves the direct
    /// map when it is faulted in for the guest and comes back only when the folio is freed.
    GmemNoDirectMap,
    /// The study's upper bound, which no kernel does: `adjust-direct-map`, plus a rebuild of the
    /// 2M (then 1G) direct-map mapping as soon as every page under it is hypervisor-owned again
    /// after an RMPUPDATE, paying the collapse's real costs (page-table frees, a global TLB
    /// flush). Its splits do not set `_PAGE_KERNEL_4K`, which would forbid the collapse.
    CoalesceOnShared,
}

impl PhysmapPolicy {
    /// Every policy, for listings and sweeps.
    pub const ALL: [PhysmapPolicy; 9] = [
        PhysmapPolicy::None,
        PhysmapPolicy::SplitOnAssign,
        PhysmapPolicy::SplitOnFault,
        PhysmapPolicy::SplitOnFaultKernel,
        PhysmapPolicy::AdjustDirectMap,
        PhysmapPolicy::Presplit4k,
        PhysmapPolicy::UnmapPrivate,
        PhysmapPolicy::GmemNoDirectMap,
        PhysmapPolicy::CoalesceOnShared,
    ];

    /// The configuration name.
    pub const fn name(self) -> &'static str {
        match self {
            PhysmapPolicy::None => "none",
            PhysmapPolicy::SplitOnAssign => "split-on-assign",
            PhysmapPolicy::SplitOnFault => "split-on-fault",
            PhysmapPolicy::SplitOnFaultKernel => "split-on-fault-kernel",
            PhysmapPolicy::AdjustDirectMap => "adjust-direct-map",
            PhysmapPolicy::Presplit4k => "presplit-4k",
            PhysmapPolicy::UnmapPrivate => "unmap-private",
            PhysmapPolicy::GmemNoDirectMap => "gmem-no-direct-map",
            PhysmapPolicy::CoalesceOnShared => "coalesce-on-shared",
        }
    }
}

/// What the model does when a guest access exits to the hypervisor (#VMEXIT(NPF) or an EPT
/// violation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KvmFaults {
    /// KVM handles it (fault-in from guest_memfd or VMM memory, `sev_handle_rmp_fault`'s
    /// PSMASH, implicit conversions through the VMM) and the access retries.
    Handle,
    /// The exit is only raised: the scenario or trace drives the host explicitly.
    Raise,
}

/// How KVM installs a shadow-present mirror SPTE of a TD (spec/tdx.md §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpteProtocol {
    /// `try_cmpxchg` the SPTE to `FROZEN_SPTE`, make the SEAMCALL, then write the final value
    /// (or restore the old one on failure): mainline since the TDX MMU prep series.
    Frozen,
    /// `try_cmpxchg` the final value, then make the SEAMCALL: the protocol before freezing, whose
    /// window lets another vCPU walk through a parent the S-EPT does not have yet (spec/tdx.md
    /// §6 V17 (a)).
    Naive,
}

/// `[host]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Largest direct-map leaf the kernel uses: 1G with `direct_gbpages`, 2M with `nogbpages`
    /// (arch/x86/mm/init.c). Also gates PUD collapse (`collapse_pud_page` needs
    /// `direct_gbpages`).
    pub physmap: PageSize,
    /// Direct-map policy around RMP updates.
    pub policy: PhysmapPolicy,
    /// Bytes at the bottom of memory kept by the kernel image and firmware (never handed to the
    /// allocator).
    pub reserved_low: sim_core::config::ByteSize,
    /// Which free block the physical allocator takes among those of the smallest sufficient
    /// order: `lowest` (default) or `seeded` (drawn with `alloc_seed`). Placement follows from
    /// allocation history under both; see `host::alloc`.
    pub alloc_order: AllocOrder,
    /// Seed of the allocator's RNG under `alloc_order = seeded`.
    pub alloc_seed: u64,
    /// Start the run in early boot: before the page allocator exists and before
    /// `system_state == SYSTEM_RUNNING`, with one CPU online. Direct-map splits then take
    /// their page-table pages from the boot pool (memblock) and are not counted in
    /// `direct_map_level{2,3}_splits`; flushes are local. The first event that is not a
    /// host-kernel `cpa` on CPU 0 ends boot and hands the unused pool to the allocator.
    pub early_boot: bool,
    /// Size of the boot pool (memblock memory for early page tables), carved from the bottom of
    /// allocatable memory when `early_boot` is set.
    pub boot_pool: sim_core::config::ByteSize,
    /// Cost of software work in one CPA split call (cpa_lock, page-table page allocation and
    /// fill), excluding the TLB flush.
    pub split_cost: Cycles,
    /// Cost of one collapse attempt of `set_memory_rox` (reading up to 512 entries and, on
    /// success, installing the large entry), excluding the TLB flush.
    pub collapse_cost: Cycles,
    /// Above this many pages a range flush becomes a full flush (Linux
    /// `tlb_single_page_flush_ceiling`, used by `cpa_flush` and the range-flush paths).
    pub tlb_single_page_flush_ceiling: u64,
    /// Whether `set_memory_4k()` marks its PTEs `_PAGE_KERNEL_4K` (Linux v6.15+, with the rox
    /// collapse): the mark forbids collapse, and setting it changes a PTE that was already 4K,
    /// so CPA flushes it. `false` models earlier kernels (such as the 2021 SNP RFC's), where
    /// `set_memory_4k()` on a 4K page changes nothing and flushes nothing.
    pub set_memory_4k_marks: bool,
    /// Cost of invalidating one page on one CPU (INVLPG / `flush_tlb_one_kernel`).
    pub invlpg_cost: Cycles,
    /// Cost of a full TLB flush on one CPU (`__flush_tlb_all`, INVPCID all-context, a flushing
    /// CR3 load), excluding the refills that follow (those are the walks the model prices).
    pub flush_all_cost: Cycles,
    /// Cost to the initiator of sending one IPI (an x2APIC ICR write), per target CPU.
    pub ipi_send_cost: Cycles,
    /// Cost to a target of taking a flush IPI: delivery, interrupt entry and exit (its stall
    /// besides the flush work itself).
    pub ipi_receive_cost: Cycles,
    /// Time for the initiator to see a target's completion (the acknowledgement's cache-line
    /// transfer), after the target finished.
    pub ipi_ack_cost: Cycles,
    /// Cost of taking and reporting a fatal kernel fault (the run continues; this only keeps
    /// the fault from being free in cycle totals).
    pub fatal_fault_cost: Cycles,
    /// What happens to guest exits.
    pub kvm_faults: KvmFaults,
    /// guest_memfd folio order for private memory: 0 (4K) or 9 (2M). Decides whether
    /// `sev_gmem_prepare` can make pages private at 2M (spec/snp.md §4.5, §7 item 8).
    pub gmem_folio_order: u8,
    /// Cost of one guest exit and re-entry handled in KVM (#VMEXIT, the handler's dispatch,
    /// VMRUN), excluding the work the handler does (priced separately).
    pub vmexit_cost: Cycles,
    /// Extra cost of an exit that KVM forwards to the VMM (KVM_EXIT_MEMORY_FAULT,
    /// KVM_HC_MAP_GPA_RANGE) and the ioctl that answers it (KVM_SET_MEMORY_ATTRIBUTES).
    pub user_exit_cost: Cycles,
    /// The input's `phys:` addresses are physical addresses of the machine a capture was taken
    /// on, not of the simulated host: each captured page is backed by a fresh host page from
    /// the allocator the first time a host-kernel or host-process access or a host `map`
    /// event names it (docs/importers.md). Set by `ccsim trace import` in the trace header.
    pub captured_phys: bool,
    /// How KVM installs a TD's mirror SPTEs: `frozen` (mainline) or `naive` (spec/tdx.md §3.2).
    pub tdx_spte_protocol: SpteProtocol,
    /// Whether KVM retries a RANGE.BLOCK, MEM.TRACK or PAGE.REMOVE that returned
    /// OPERAND_BUSY after kicking every vCPU out (`tdh_do_no_vcpus`, spec/tdx.md §3.3); `false`
    /// treats BUSY as any other failure (KVM_BUG_ON), as before the retry patches.
    pub tdx_busy_retry: bool,
    /// Map TD private memory at 2M when the guest accepts at 2M (the TDX hugepage series,
    /// spec/tdx.md §3.6; mainline maps private memory at 4K only).
    pub tdx_private_2m: bool,
}

/// Default `split_cost`.
pub const DEFAULT_SPLIT_COST: Cycles = Cycles::new(2_000);
/// Default `collapse_cost`.
pub const DEFAULT_COLLAPSE_COST: Cycles = Cycles::new(1_000);
/// Default `tlb_single_page_flush_ceiling` (arch/x86/mm/tlb.c).
pub const DEFAULT_TLB_SINGLE_PAGE_FLUSH_CEILING: u64 = 33;
/// Default `invlpg_cost`: about 100 ns (arch/x86/mm/tlb.c) at 3 GHz.
pub const DEFAULT_INVLPG_COST: Cycles = Cycles::new(300);
/// Default `flush_all_cost`.
pub const DEFAULT_FLUSH_ALL_COST: Cycles = Cycles::new(500);
/// Default `ipi_send_cost`.
pub const DEFAULT_IPI_SEND_COST: Cycles = Cycles::new(300);
/// Default `ipi_receive_cost`.
pub const DEFAULT_IPI_RECEIVE_COST: Cycles = Cycles::new(2_400);
/// Default `ipi_ack_cost`.
pub const DEFAULT_IPI_ACK_COST: Cycles = Cycles::new(300);
/// Default `fatal_fault_cost`.
pub const DEFAULT_FATAL_FAULT_COST: Cycles = Cycles::new(1_000);
/// Default `vmexit_cost`.
pub const DEFAULT_VMEXIT_COST: Cycles = Cycles::new(1_500);
/// Default `user_exit_cost`.
pub const DEFAULT_USER_EXIT_COST: Cycles = Cycles::new(15_000);
/// Default `boot_pool`: 2 MiB, 512 page-table pages.
pub const DEFAULT_BOOT_POOL: u64 = 2 << 20;

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            physmap: PageSize::G1,
            policy: PhysmapPolicy::None,
            reserved_low: sim_core::config::ByteSize(16 << 20),
            alloc_order: AllocOrder::Lowest,
            alloc_seed: 0,
            early_boot: false,
            boot_pool: sim_core::config::ByteSize(DEFAULT_BOOT_POOL),
            split_cost: DEFAULT_SPLIT_COST,
            collapse_cost: DEFAULT_COLLAPSE_COST,
            tlb_single_page_flush_ceiling: DEFAULT_TLB_SINGLE_PAGE_FLUSH_CEILING,
            set_memory_4k_marks: true,
            invlpg_cost: DEFAULT_INVLPG_COST,
            flush_all_cost: DEFAULT_FLUSH_ALL_COST,
            ipi_send_cost: DEFAULT_IPI_SEND_COST,
            ipi_receive_cost: DEFAULT_IPI_RECEIVE_COST,
            ipi_ack_cost: DEFAULT_IPI_ACK_COST,
            fatal_fault_cost: DEFAULT_FATAL_FAULT_COST,
            kvm_faults: KvmFaults::Handle,
            gmem_folio_order: 0,
            vmexit_cost: DEFAULT_VMEXIT_COST,
            user_exit_cost: DEFAULT_USER_EXIT_COST,
            captured_phys: false,
            tdx_spte_protocol: SpteProtocol::Frozen,
            tdx_busy_retry: true,
            tdx_private_2m: false,
        }
    }
}

const DOCS: &[FieldDoc] = &[
    FieldDoc {
        key: "physmap",
        unit: "page size",
        doc: "largest direct-map leaf (1G: direct_gbpages, 2M: nogbpages); 1G also allows PUD collapse",
        source: Source::Cited("arch/x86/mm/init.c (direct_gbpages); spec/physmap.md §2.1–2.2"),
    },
    FieldDoc {
        key: "policy",
        unit: "",
        doc: "direct-map policy around RMP updates: none, split-on-assign, split-on-fault, split-on-fault-kernel, adjust-direct-map, presplit-4k, unmap-private, gmem-no-direct-map, coalesce-on-shared (docs/policies.md)",
        source: Source::Choice,
    },
    FieldDoc {
        key: "reserved_low",
        unit: "bytes",
        doc: "memory below this is never allocated",
        source: Source::Choice,
    },
    FieldDoc {
        key: "alloc_order",
        unit: "",
        doc: "which free block of the smallest order the allocator takes: lowest, or seeded (RNG from alloc_seed)",
        source: Source::Choice,
    },
    FieldDoc {
        key: "alloc_seed",
        unit: "",
        doc: "seed of the allocator's RNG when alloc_order = seeded",
        source: Source::Choice,
    },
    FieldDoc {
        key: "early_boot",
        unit: "",
        doc: "start before the page allocator and SYSTEM_RUNNING: splits use the boot pool, are not vmstat-counted, flushes are local; the first event other than a host cpa on CPU 0 ends boot",
        source: Source::Cited(
            "arch/x86/mm/pat/set_memory.c split_page_count (counts only when SYSTEM_RUNNING); seed patch \"x86: mm: Provide support to use memblock when splitting large pages\"",
        ),
    },
    FieldDoc {
        key: "boot_pool",
        unit: "bytes",
        doc: "memblock region for early split page tables (bottom of allocatable memory, when early_boot)",
        source: Source::Choice,
    },
    FieldDoc {
        key: "split_cost",
        unit: "cycles",
        doc: "software cost of one CPA large-page split, excluding TLB flush",
        source: Source::Unsourced(
            "no published per-split cost; ~2k cycles covers cpa_lock, a page allocation and filling 512 entries",
        ),
    },
    FieldDoc {
        key: "collapse_cost",
        unit: "cycles",
        doc: "software cost of one set_memory_rox collapse attempt (up to 512 entries read), excluding TLB flush",
        source: Source::Unsourced(
            "no published cost; 512 cached 8-byte reads and compares at ~2 per cycle, rounded up",
        ),
    },
    FieldDoc {
        key: "tlb_single_page_flush_ceiling",
        unit: "pages",
        doc: "range flushes of more pages become full flushes (cpa_flush, flush_tlb_kernel_range, flush_tlb_mm_range)",
        source: Source::Cited("arch/x86/mm/tlb.c tlb_single_page_flush_ceiling = 33"),
    },
    FieldDoc {
        key: "set_memory_4k_marks",
        unit: "",
        doc: "set_memory_4k() sets _PAGE_KERNEL_4K (v6.15+): forbids collapse, and re-marking an already-4K PTE costs a CPA flush; false = earlier kernels",
        source: Source::Cited(
            "commit 41d88484c71c \"x86/mm/pat: restore large ROX pages after fragmentation\" (spec/physmap.md §2.1, §2.2)",
        ),
    },
    FieldDoc {
        key: "invlpg_cost",
        unit: "cycles",
        doc: "one single-page TLB invalidation on one CPU",
        source: Source::Cited(
            "arch/x86/mm/tlb.c comment on tlb_single_page_flush_ceiling: each single flush is about 100 ns; 300 cycles at 3 GHz",
        ),
    },
    FieldDoc {
        key: "flush_all_cost",
        unit: "cycles",
        doc: "one full TLB flush on one CPU (CR4.PGE toggle / INVPCID all-context / flushing CR3 load), refills excluded",
        source: Source::Unsourced(
            "no public measurement; a serializing control-register write, a few hundred cycles; refills are priced by the walks that follow",
        ),
    },
    FieldDoc {
        key: "ipi_send_cost",
        unit: "cycles",
        doc: "initiator cost of sending one flush IPI, per target",
        source: Source::Unsourced(
            "no source in spec/; an x2APIC ICR write (WRMSR); send + receive + ack = 3000 cycles, a 1 µs round trip at 3 GHz, the order commonly quoted for an x86 IPI",
        ),
    },
    FieldDoc {
        key: "ipi_receive_cost",
        unit: "cycles",
        doc: "target stall for taking a flush IPI (delivery, entry, exit), besides the flush work",
        source: Source::Unsourced(
            "no source in spec/; interrupt delivery plus entry/exit dominate a ~1 µs IPI round trip (3000 cycles at 3 GHz)",
        ),
    },
    FieldDoc {
        key: "ipi_ack_cost",
        unit: "cycles",
        doc: "time for the initiator to observe a target's completion after the target finished",
        source: Source::Unsourced(
            "no source in spec/; one cache-line transfer between cores, ~100 ns at 3 GHz",
        ),
    },
    FieldDoc {
        key: "fatal_fault_cost",
        unit: "cycles",
        doc: "cycles charged for a fatal kernel fault before the run continues",
        source: Source::Unsourced(
            "a host crash has no meaningful cost; a nominal exception-delivery cost keeps totals monotone",
        ),
    },
    FieldDoc {
        key: "kvm_faults",
        unit: "",
        doc: "guest exits: handle (KVM fault-in, PSMASH, implicit conversions; the access retries) or raise (the input drives the host)",
        source: Source::Choice,
    },
    FieldDoc {
        key: "gmem_folio_order",
        unit: "order",
        doc: "guest_memfd folio order of private memory: 0 (4K) or 9 (2M); 2M folios let sev_gmem_prepare assign at 2M",
        source: Source::Cited(
            "spec/snp.md §4.5 item 6: hugepage guest_memfd unmerged as of May 2026, so 4K folios in practice",
        ),
    },
    FieldDoc {
        key: "vmexit_cost",
        unit: "cycles",
        doc: "one guest exit handled in KVM and the re-entry, excluding the handler's work",
        source: Source::Unsourced(
            "no source in spec/; a #VMEXIT/VMRUN round trip with KVM's dispatch is commonly ~1-2k cycles on recent EPYC",
        ),
    },
    FieldDoc {
        key: "user_exit_cost",
        unit: "cycles",
        doc: "extra cost of an exit forwarded to the VMM and the ioctl answering it",
        source: Source::Unsourced(
            "no source in spec/; a return to user space, the VMM's handling and an ioctl back, ~5 µs at 3 GHz",
        ),
    },
    FieldDoc {
        key: "captured_phys",
        unit: "",
        doc: "phys: addresses of host accesses and host map events are a capture's physical addresses, backed by host pages from the allocator on first touch (docs/importers.md)",
        source: Source::Choice,
    },
    FieldDoc {
        key: "tdx_spte_protocol",
        unit: "",
        doc: "how KVM installs a TD's mirror SPTEs: frozen (try_cmpxchg to FROZEN_SPTE, SEAMCALL, final value) or naive (final value, then SEAMCALL)",
        source: Source::Cited(
            "spec/tdx.md §3.2 (TDX MMU prep series; v19 patch 062 for the race freezing prevents)",
        ),
    },
    FieldDoc {
        key: "tdx_busy_retry",
        unit: "",
        doc: "KVM kicks every vCPU out and retries once when BLOCK, TRACK or REMOVE returns OPERAND_BUSY; false: KVM_BUG_ON",
        source: Source::Cited(
            "spec/tdx.md §3.3 group 3 ('KVM: TDX: Kick off vCPUs when SEAMCALL is busy during TD page removal')",
        ),
    },
    FieldDoc {
        key: "tdx_private_2m",
        unit: "",
        doc: "map TD private memory at 2M when the guest accepts at 2M (hugepage series); mainline maps at 4K",
        source: Source::Cited(
            "spec/tdx.md §3.6: mainline is 4K only; the 2M series is unmerged RFC",
        ),
    },
];

impl ConfigBlock for HostConfig {
    const SECTION: &'static str = "host";
    fn field_docs() -> &'static [FieldDoc] {
        DOCS
    }
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.boot_pool.0.is_multiple_of(4096) {
            return Err(ConfigError::OutOfRange {
                key: "host.boot_pool".into(),
                value: self.boot_pool.to_string(),
                why: "must be 4K-aligned".into(),
            });
        }
        if !matches!(self.gmem_folio_order, 0 | 9) {
            return Err(ConfigError::OutOfRange {
                key: "host.gmem_folio_order".into(),
                value: self.gmem_folio_order.to_string(),
                why: "0 (4K folios) or 9 (2M folios)".into(),
            });
        }
        if !self.reserved_low.0.is_multiple_of(4096) {
            return Err(ConfigError::OutOfRange {
                key: "host.reserved_low".into(),
                value: self.reserved_low.to_string(),
                why: "must be 4K-aligned".into(),
            });
        }
        Ok(())
    }
}
