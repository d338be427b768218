//! Configuration of the host software model (`[host]`): direct-map layout and physmap policy.

use serde::{Deserialize, Serialize};
use sim_core::config::{ConfigBlock, ConfigError, FieldDoc, Source};
use sim_core::{Cycles, PageSize};

/// What the host kernel does to its direct map around RMP updates (spec/physmap.md §3,
/// spec/snp.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PhysmapPolicy {
    /// Do nothing: a kernel write through a large mapping covering a private page takes an RMP
    /// #PF, which would crash the host. Counted as fatal; the run goes on.
    #[serde(rename = "none")]
    None,
    /// The 2021 RFC ("x86/mm: split the physmap when adding the page in RMP table", Brijesh
    /// Singh, RFC v1 04/30): `set_memory_4k()` on the page before every RMPUPDATE that assigns
    /// it, whatever the RMP level.
    #[serde(rename = "split-on-assign")]
    SplitOnAssign,
}

impl PhysmapPolicy {
    /// Every policy, for listings and sweeps.
    pub const ALL: [PhysmapPolicy; 2] = [PhysmapPolicy::None, PhysmapPolicy::SplitOnAssign];

    /// The configuration name.
    pub const fn name(self) -> &'static str {
        match self {
            PhysmapPolicy::None => "none",
            PhysmapPolicy::SplitOnAssign => "split-on-assign",
        }
    }
}

/// `[host]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// Largest direct-map leaf the kernel uses: 1G with `direct_gbpages`, 2M with `nogbpages`
    /// (arch/x86/mm/init.c).
    pub physmap: PageSize,
    /// Direct-map policy around RMP updates.
    pub policy: PhysmapPolicy,
    /// Bytes at the bottom of memory kept by the kernel image and firmware (never handed to the
    /// allocator).
    pub reserved_low: sim_core::config::ByteSize,
    /// Cost of software work in one CPA split call (cpa_lock, page-table page allocation and
    /// fill), excluding the TLB flush.
    pub split_cost: Cycles,
    /// Cost of a TLB-shootdown IPI round trip to one remote CPU.
    pub shootdown_ipi_cost: Cycles,
    /// Cost of taking and reporting a fatal kernel fault (the run continues; this only keeps
    /// the fault from being free in cycle totals).
    pub fatal_fault_cost: Cycles,
}

/// Default `split_cost`.
pub const DEFAULT_SPLIT_COST: Cycles = Cycles::new(2_000);
/// Default `shootdown_ipi_cost`.
pub const DEFAULT_SHOOTDOWN_IPI_COST: Cycles = Cycles::new(1_500);
/// Default `fatal_fault_cost`.
pub const DEFAULT_FATAL_FAULT_COST: Cycles = Cycles::new(1_000);

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            physmap: PageSize::G1,
            policy: PhysmapPolicy::None,
            reserved_low: sim_core::config::ByteSize(16 << 20),
            split_cost: DEFAULT_SPLIT_COST,
            shootdown_ipi_cost: DEFAULT_SHOOTDOWN_IPI_COST,
            fatal_fault_cost: DEFAULT_FATAL_FAULT_COST,
        }
    }
}

const DOCS: &[FieldDoc] = &[
    FieldDoc {
        key: "physmap",
        unit: "page size",
        doc: "largest direct-map leaf (1G: direct_gbpages, 2M: nogbpages)",
        source: Source::Cited("arch/x86/mm/init.c (direct_gbpages); spec/physmap.md §2.1"),
    },
    FieldDoc {
        key: "policy",
        unit: "",
        doc: "direct-map policy around RMP updates: none, split-on-assign",
        source: Source::Choice,
    },
    FieldDoc {
        key: "reserved_low",
        unit: "bytes",
        doc: "memory below this is never allocated",
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
        key: "shootdown_ipi_cost",
        unit: "cycles",
        doc: "TLB shootdown IPI round trip, per remote CPU",
        source: Source::Unsourced(
            "no source in spec/; order of magnitude of an x86 IPI round trip (~1 µs at 1.5 GHz)",
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
];

impl ConfigBlock for HostConfig {
    const SECTION: &'static str = "host";
    fn field_docs() -> &'static [FieldDoc] {
        DOCS
    }
    fn validate(&self) -> Result<(), ConfigError> {
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
