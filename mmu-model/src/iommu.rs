//! The IOMMU: DMA translation for devices, beside the CPU's MMU and built from the same parts
//! (page tables in simulated memory through [`PageTable`], the walker core, [`Tlb`] as the
//! IOTLB).
//!
//! Two kinds ([`IommuKind`]):
//! - **AMD-Vi** (AMD I/O Virtualization Technology (IOMMU) Specification, pub. 48882; bit
//!   positions as Linux `drivers/iommu/amd/amd_iommu_types.h`): a device table entry per
//!   requester id (`DTE_FLAG_V` bit 0, `DTE_FLAG_TV` bit 1, Mode bits 11:9 = paging levels,
//!   page-table root bits 51:12, `DTE_FLAG_IR` bit 61, `DTE_FLAG_IW` bit 62, DomainID bits
//!   15:0 of the second quadword, `DEV_DOMID_MASK`), host ("v1") I/O page tables of
//!   [`AmdIoPte`], the command buffer's invalidations and the event log ([`AmdEvent`]).
//! - **Intel VT-d** legacy-mode second-level translation (Intel Virtualization Technology for
//!   Directed I/O Architecture Specification; Linux `drivers/iommu/intel/`): a root entry per
//!   bus and a context entry per device/function, each a 16-byte memory reference on a miss,
//!   second-level tables whose entries have the EPT layout (R bit 0, W bit 1, PS bit 7, address
//!   bits 51:12 — [`EptEntry`]), and fault records with the legacy fault reasons
//!   ([`VtdFaultReason`], Linux `dma_remap_fault_reasons` in `drivers/iommu/intel/dmar.c`).
//!
//! Functional state (device entries, domains' tables) and caches (the device-entry cache, the
//! IOTLB) are kept apart so that a host that changes an entry without the invalidation the
//! architecture requires sees the stale cached translation, as on hardware: `map`, `unmap` and
//! `attach` never touch the caches; only [`Iommu::command`] does.
//!
//! The RMP check of SNP hosts plugs in through [`DmaCheck`] (spec/snp.md §2.7: DMA must target
//! hypervisor-owned memory; a violation is event 0xD, RMP_PAGE_FAULT). An IOTLB entry keeps
//! the check's "allowed" (so a hit costs no RMP read, as for CPU TLB entries); a violation is
//! never cached and is reported on every access.
//!
//! Not modelled: AMD guest (v2) tables, PASIDs, ATS and device-side IOTLBs (INVALIDATE_IOTLB_PAGES
//! is counted and does nothing), interrupt remapping, the IOMMU's page-directory caches, AMD
//! Mode 1–3 and 6 tables and non-default page sizes (Next Level = 7), VT-d scalable mode and
//! first-level tables, pass-through domains.

use crate::addr::PhysAddr;
use crate::entry::{PagingEntry, Perms};
use crate::ept::{EptEntry, EptFlags, EptLeafAttrs, EptMemType};
use crate::level::{Level, Paging};
use crate::page_table::PageTable;
use crate::pte::PteFormat;
use crate::tables::{FrameSource, PhysMemTables};
use crate::tlb::{FlushScope, Tlb, TlbArrayConfig, TlbConfig, TlbFill, TlbTag};
use crate::walk::{Core, CoreEnd, WalkStart, core_walk_into};
use crate::{CheckCache, WriteCheck};
use sim_core::config::ConfigError;
use sim_core::config::{ConfigBlock, FieldDoc, Source, check_range};
use sim_core::stats::PerSize;
use sim_core::{Cycles, Iova, PageSize, Spa};
use std::collections::BTreeMap;
use std::fmt;

/// Which IOMMU the host has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IommuKind {
    /// AMD-Vi (SEV-SNP hosts).
    AmdVi,
    /// Intel VT-d (TDX hosts).
    VtD,
}

/// Whether an RMP violation blocks a DMA *read* of an assigned page. spec/snp.md §2.7 and §7
/// item 5: "all DMA must target shared memory" suggests reads are blocked, but what the device
/// receives and whether reads are checked is UNCONFIRMED; both readings are offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DmaReadRule {
    /// Reads are checked like writes: a read of an assigned page is an RMP_PAGE_FAULT and
    /// returns no data.
    Checked,
    /// Reads are not checked (only writes meet the RMP).
    Unchecked,
}

/// Configuration of the IOMMU (section `[iommu]`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IommuConfig {
    /// AMD-Vi or VT-d.
    pub kind: IommuKind,
    /// I/O page-table depth: 4 (48-bit IOVA; AMD Mode 4, VT-d AW = 2) or 5 (57-bit; Mode 5,
    /// AW = 3).
    pub levels: u8,
    /// The IOTLB: arrays, latency, replacement (as a CPU TLB level).
    pub iotlb: TlbConfig,
    /// Device entries (AMD DTEs, VT-d context entries) the IOMMU caches.
    pub entry_cache: u32,
    /// Cycles of one memory reference by the IOMMU (device-table, root/context and page-table
    /// reads).
    pub mem_latency: Cycles,
    /// Cycles of one invalidation command (command buffer or invalidation queue), including
    /// the wait for its completion.
    pub command_latency: Cycles,
    /// RMP check of DMA reads.
    pub rmp_dma_read: DmaReadRule,
    /// Whether the IOMMU's own table reads are RMP-checked (spec/snp.md §2.7: "The IOMMU's own
    /// table walks are RMP-checked at the end of the walk" \[RFC21\]): a table page that is not
    /// hypervisor-owned makes the walk an RMP_PAGE_FAULT.
    pub rmp_check_tables: bool,
}

/// Default IOTLB: 64 entries, fully associative, 4K/2M/1G, LRU. Unsourced: neither vendor
/// publishes its IOTLB geometry; 64 entries is the order of a CPU's L1 DTLB.
fn default_iotlb() -> TlbConfig {
    TlbConfig::new(
        vec![TlbArrayConfig::fully_assoc(&[PageSize::K4, PageSize::M2, PageSize::G1], 64)],
        DEFAULT_IOTLB_LATENCY,
    )
}

/// Default of [`IommuConfig::mem_latency`] (cycles). Unsourced: an IOMMU table read is a
/// memory access that does not hit the CPU's caches; 200 cycles is a DRAM access at ~3 GHz.
pub const DEFAULT_IOMMU_MEM_LATENCY: u64 = 200;
/// Default IOTLB hit latency (cycles). Unsourced: no published figure; a few cycles of a
/// small associative lookup.
pub const DEFAULT_IOTLB_LATENCY: u64 = 4;
/// Default of [`IommuConfig::command_latency`] (cycles). Unsourced: no published figure; the
/// order of a posted MMIO write plus a completion-wait poll (~1 µs).
pub const DEFAULT_IOMMU_COMMAND_LATENCY: u64 = 3000;

impl Default for IommuConfig {
    fn default() -> Self {
        IommuConfig {
            kind: IommuKind::AmdVi,
            levels: 4,
            iotlb: default_iotlb(),
            entry_cache: 32,
            mem_latency: Cycles::new(DEFAULT_IOMMU_MEM_LATENCY),
            command_latency: Cycles::new(DEFAULT_IOMMU_COMMAND_LATENCY),
            rmp_dma_read: DmaReadRule::Checked,
            rmp_check_tables: true,
        }
    }
}

impl IommuConfig {
    /// The paging depth of `levels`.
    pub fn paging(&self) -> Paging {
        if self.levels == 5 { Paging::FiveLevel } else { Paging::FourLevel }
    }
}

impl ConfigBlock for IommuConfig {
    const SECTION: &'static str = "iommu";

    fn field_docs() -> &'static [FieldDoc] {
        &[
            FieldDoc { key: "kind", unit: "", doc: "amd-vi | vt-d", source: Source::Choice },
            FieldDoc {
                key: "levels",
                unit: "levels",
                doc: "I/O page-table depth: 4 (48-bit IOVA) or 5 (57-bit)",
                source: Source::Cited(
                    "AMD IOMMU spec DTE Mode (Linux PAGE_MODE_4_LEVEL/5_LEVEL); VT-d context-entry AW 2/3",
                ),
            },
            FieldDoc {
                key: "iotlb",
                unit: "",
                doc: "IOTLB arrays (sizes, sets, ways), hit_latency, replacement",
                source: Source::Unsourced(
                    "no vendor publishes IOTLB geometry; 64 entries fully associative, 4 cycles",
                ),
            },
            FieldDoc {
                key: "entry_cache",
                unit: "entries",
                doc: "device entries (DTEs / context entries) cached",
                source: Source::Unsourced("no published size; 32 covers a host's active devices"),
            },
            FieldDoc {
                key: "mem_latency",
                unit: "cycles",
                doc: "one IOMMU memory reference (device table, root/context entry, page table)",
                source: Source::Unsourced("DRAM access at ~3 GHz; IOMMU reads bypass CPU caches"),
            },
            FieldDoc {
                key: "command_latency",
                unit: "cycles",
                doc: "one invalidation command with its completion wait",
                source: Source::Unsourced("no published figure; MMIO write plus completion poll"),
            },
            FieldDoc {
                key: "rmp_dma_read",
                unit: "",
                doc: "RMP check of DMA reads: checked | unchecked",
                source: Source::Unsourced(
                    "spec/snp.md §2.7/§7 item 5: reads of assigned pages UNCONFIRMED; 'all DMA to/from shared memory' suggests checked",
                ),
            },
            FieldDoc {
                key: "rmp_check_tables",
                unit: "",
                doc: "the IOMMU's table reads are RMP-checked (hypervisor-owned)",
                source: Source::Cited(
                    "spec/snp.md §2.7 [RFC21]: IOMMU table walks are RMP-checked at the end of the walk",
                ),
            },
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.levels, 4 | 5) {
            return Err(ConfigError::OutOfRange {
                key: "iommu.levels".into(),
                value: self.levels.to_string(),
                why: "must be 4 or 5".into(),
            });
        }
        self.iotlb.validate("iommu.iotlb")?;
        check_range("iommu.entry_cache", u64::from(self.entry_cache), 1, 65_536)?;
        check_range("iommu.mem_latency", self.mem_latency.get(), 0, 100_000_000)?;
        check_range("iommu.command_latency", self.command_latency.get(), 0, 100_000_000)?;
        Ok(())
    }
}

/// An AMD-Vi host ("v1") I/O page-table entry, bit-exact (AMD IOMMU spec, "I/O Page Table
/// Entry" figures; Linux `amd_iommu_types.h`): PR bit 0 (`IOMMU_PTE_PR`), Next Level bits 11:9
/// (`PM_PTE_LEVEL`: 0 in a PTE, or in a PDE that maps a page of its level's size), address bits
/// 51:12 (`PM_ADDR_MASK`), U bit 59, FC bit 60, IR bit 61 (`IOMMU_PTE_IR`), IW bit 62
/// (`IOMMU_PTE_IW`). A page of the level's default size is a PDE with Next Level 0 (what Linux
/// writes for 2M and 1G pages: `iommu_v1_map_pages` with one PTE per page); Next Level 7
/// (other page sizes) is malformed here (not modelled).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct AmdIoPte(u64);

impl AmdIoPte {
    /// PR.
    pub const PRESENT: u64 = 1 << 0;
    /// U (untranslated access from an ATS device: not modelled, written 0).
    pub const U: u64 = 1 << 59;
    /// FC: force coherent (Linux sets it on leaves).
    pub const FC: u64 = 1 << 60;
    /// IR: DMA reads allowed.
    pub const IR: u64 = 1 << 61;
    /// IW: DMA writes allowed.
    pub const IW: u64 = 1 << 62;
    /// Address bits 51:12.
    pub const ADDR: u64 = 0x000f_ffff_ffff_f000;

    /// Next Level, bits 11:9.
    pub const fn next_level(self) -> u64 {
        (self.0 >> 9) & 7
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for AmdIoPte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmdIoPte({:#x})", self.0)
    }
}

/// Permissions of an AMD I/O leaf: IR and IW.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoPerms {
    /// DMA reads allowed.
    pub read: bool,
    /// DMA writes allowed.
    pub write: bool,
}

/// Level number (1 = PTE, …) as AMD's Next Level field counts.
fn amd_level(level: Level) -> u64 {
    match level {
        Level::Pt => 1,
        Level::Pd => 2,
        Level::Pdpt => 3,
        Level::Pml4 => 4,
        Level::Pml5 => 5,
    }
}

impl PagingEntry for AmdIoPte {
    type Attrs = IoPerms;
    type TableFlags = ();
    const FORMAT: &'static str = "AMD-Vi";
    // The v1 format has no accessed or dirty bit the walker sets.
    const ACCESSED: u64 = 0;
    const DIRTY: u64 = 0;

    fn addr_bits(_fmt: PteFormat) -> u64 {
        Self::ADDR
    }
    fn from_raw(raw: u64) -> Self {
        AmdIoPte(raw)
    }
    fn to_raw(self) -> u64 {
        self.0
    }
    fn present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }
    fn leaf_at(self, level: Level) -> bool {
        level == Level::Pt || self.next_level() == 0
    }
    fn malformed(self, level: Level, _fmt: PteFormat) -> bool {
        let nl = self.next_level();
        // A PTE has Next Level 0; a PDE points one level down or maps its level's page (0);
        // 7 (other page sizes) and skipped levels are not modelled. 512G pages are refused by
        // Linux for a hardware bug (AMD_IOMMU_PGSIZES); a leaf above 1G is malformed here.
        match level {
            Level::Pt => nl != 0,
            Level::Pd | Level::Pdpt => nl != 0 && nl != amd_level(level) - 1,
            Level::Pml4 | Level::Pml5 => nl != amd_level(level) - 1,
        }
    }
    fn rights(self) -> Perms {
        Perms {
            readable: self.0 & Self::IR != 0,
            writable: self.0 & Self::IW != 0,
            user: true,
            executable: false,
        }
    }
    fn next_table<P: PhysAddr>(self, _fmt: PteFormat) -> P {
        P::from_raw(self.0 & Self::ADDR)
    }
    fn leaf_frame<P: PhysAddr>(self, size: PageSize, _fmt: PteFormat) -> P {
        P::from_raw(self.0 & Self::ADDR & !(size.bytes() - 1))
    }
    fn encrypted(self, _fmt: PteFormat) -> bool {
        false
    }
    fn make_table<P: PhysAddr>(table: P, _flags: (), _fmt: PteFormat) -> Self {
        // A PDE: PR, IR, IW (Linux PM_LEVEL_PDE); Next Level is set by `table_at`.
        AmdIoPte(table.raw() & Self::ADDR | Self::PRESENT | Self::IR | Self::IW)
    }
    fn make_leaf<P: PhysAddr>(frame: P, _size: PageSize, attrs: IoPerms, _fmt: PteFormat) -> Self {
        let mut v = frame.raw() & Self::ADDR | Self::PRESENT | Self::FC;
        if attrs.read {
            v |= Self::IR;
        }
        if attrs.write {
            v |= Self::IW;
        }
        AmdIoPte(v)
    }
    fn attrs_of(self, _size: PageSize, _fmt: PteFormat) -> IoPerms {
        IoPerms { read: self.0 & Self::IR != 0, write: self.0 & Self::IW != 0 }
    }
    fn table_at(self, level: Level) -> Self {
        // Next Level = the level of the table the entry points at (PM_LEVEL_ENC).
        AmdIoPte(self.0 & !(7 << 9) | (amd_level(level) - 1) << 9)
    }
}

/// AMD-Vi event codes this model logs (AMD IOMMU spec "Event Log"; Linux `EVENT_TYPE_*` in
/// `amd_iommu_types.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AmdEventCode {
    /// 0x2 IO_PAGE_FAULT (`EVENT_TYPE_IO_FAULT`): no translation, or one that refuses the access.
    IoPageFault = 0x2,
    /// 0xD RMP_PAGE_FAULT (`EVENT_TYPE_RMP_FAULT`; spec/snp.md §2.7): the DMA (or the IOMMU's
    /// table read) targets memory that is not hypervisor-owned.
    RmpPageFault = 0xd,
}

impl AmdEventCode {
    /// The name Linux prints (`Event logged [NAME …]`).
    pub const fn name(self) -> &'static str {
        match self {
            AmdEventCode::IoPageFault => "IO_PAGE_FAULT",
            AmdEventCode::RmpPageFault => "RMP_PAGE_FAULT",
        }
    }
}

/// IO_PAGE_FAULT / RMP_PAGE_FAULT flag bits (event dword 1 bits 27:16; Linux
/// `EVENT_FLAG_TR` 0x100, `EVENT_FLAG_RW` 0x020, `EVENT_FLAG_PR` 0x010, `EVENT_FLAG_I` 0x008;
/// AMD IOMMU spec rev 3.00 §2.5.3: RW is valid only when PR is set).
pub mod event_flags {
    /// TR: the request was a translation request (ATS; never here).
    pub const TR: u16 = 0x100;
    /// RW: a write (valid only with PR).
    pub const RW: u16 = 0x020;
    /// PR: the page was present (a permission fault, not a missing translation).
    pub const PR: u16 = 0x010;
    /// I: an interrupt request (never here).
    pub const I: u16 = 0x008;
}

/// One AMD-Vi event-log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmdEvent {
    /// Event code.
    pub code: AmdEventCode,
    /// Requester id (dword 0 bits 15:0).
    pub devid: u16,
    /// Domain id (IO_PAGE_FAULT; the VMG tag field of RMP_PAGE_FAULT is left 0).
    pub domain: u16,
    /// Address (the IOVA; for RMP_PAGE_FAULT Linux prints it as `gpa`).
    pub address: u64,
    /// Flags (dword 1 bits 27:16).
    pub flags: u16,
    /// RMP_PAGE_FAULT `flags_rmp` (dword 0 bits 23:16): 0 — the one real log in spec/snp.md
    /// §2.7 shows `flags_rmp=0x0000` for a write, and no public source gives the bits.
    pub flags_rmp: u8,
}

impl AmdEvent {
    /// Dword 1 bits 31:16 as one number: the event code (bits 31:28) above the flags (27:16),
    /// e.g. `0xd020` for an RMP_PAGE_FAULT on a write. Used as the fault code in scenarios.
    pub const fn code_and_flags(&self) -> u64 {
        ((self.code as u64) << 12) | self.flags as u64
    }
}

/// VT-d legacy-mode fault reasons (the FR field of a fault record), in the order and with the
/// numbering of Linux `dma_remap_fault_reasons[]` (`drivers/iommu/intel/dmar.c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum VtdFaultReason {
    /// 0x2: "Present bit in context entry is clear".
    ContextNotPresent = 0x2,
    /// 0x4: "Access beyond MGAW".
    BeyondMgaw = 0x4,
    /// 0x5: "PTE Write access is not set".
    WriteNotSet = 0x5,
    /// 0x6: "PTE Read access is not set".
    ReadNotSet = 0x6,
    /// 0xC: "non-zero reserved fields in PTE".
    ReservedPte = 0xc,
}

impl VtdFaultReason {
    /// Linux's text for the reason.
    pub const fn name(self) -> &'static str {
        match self {
            VtdFaultReason::ContextNotPresent => "Present bit in context entry is clear",
            VtdFaultReason::BeyondMgaw => "Access beyond MGAW",
            VtdFaultReason::WriteNotSet => "PTE Write access is not set",
            VtdFaultReason::ReadNotSet => "PTE Read access is not set",
            VtdFaultReason::ReservedPte => "non-zero reserved fields in PTE",
        }
    }
}

/// One VT-d fault record (primary fault logging).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VtdFault {
    /// Fault reason.
    pub reason: VtdFaultReason,
    /// Source id (requester id).
    pub source_id: u16,
    /// Faulting address (page-aligned in the record: FI bits 63:12).
    pub address: u64,
    /// Whether the request was a write (T = 0) or a read (T = 1).
    pub write: bool,
}

impl VtdFault {
    /// The fault record's top dword as Linux reads it (`data` at offset 12): FR in bits 7:0,
    /// T in bit 30 (1 = read; `dma_frcd_type`). Used as the fault code in scenarios.
    pub const fn record_dword3(&self) -> u64 {
        (self.reason as u64) | if self.write { 0 } else { 1 << 30 }
    }
}

/// What a DMA raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuEvent {
    /// An AMD-Vi event-log entry.
    Amd(AmdEvent),
    /// A VT-d fault record.
    Vtd(VtdFault),
}

impl IommuEvent {
    /// The name counted in reports: the AMD event's name, or `DMAR_FAULT_0x..` with the VT-d
    /// reason.
    pub fn name(&self) -> String {
        match self {
            IommuEvent::Amd(e) => e.code.name().to_owned(),
            IommuEvent::Vtd(f) => format!("DMAR_FAULT_{:#x}", f.reason as u8),
        }
    }
}

/// The RMP (or any other) check a DMA meets at the end of translation, and on the IOMMU's own
/// table reads.
pub trait DmaCheck {
    /// Whether the device may access `spa` (a write if `write`). `table`: the IOMMU reads one of
    /// its own tables there.
    fn allowed(&mut self, device: u32, spa: Spa, write: bool, table: bool) -> bool;
    /// Whether there is a check at all (an SNP host's RMP): without one the IOMMU makes and
    /// counts no lookups.
    fn active(&self) -> bool {
        true
    }
}

/// No check (non-SNP hosts).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDmaCheck;

impl DmaCheck for NoDmaCheck {
    fn allowed(&mut self, _: u32, _: Spa, _: bool, _: bool) -> bool {
        true
    }
    fn active(&self) -> bool {
        false
    }
}

/// The outcome of one DMA translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dma {
    /// Where the access goes, if it is allowed.
    pub spa: Option<Spa>,
    /// What it raised.
    pub event: Option<IommuEvent>,
    /// The IOTLB held the translation.
    pub iotlb_hit: bool,
    /// Memory references the IOMMU made (entry fetches and table reads).
    pub refs: u32,
    /// Cycles: IOTLB lookup plus references.
    pub cost: Cycles,
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IommuStats {
    /// Translations requested (DMA reads and writes).
    pub translations: u64,
    /// IOTLB hits, by entry size.
    pub iotlb_hits: PerSize<u64>,
    /// IOTLB misses (walks started).
    pub iotlb_misses: u64,
    /// Device-entry cache misses (DTE or root+context fetches).
    pub entry_fetches: u64,
    /// Memory references of walks and entry fetches.
    pub refs: u64,
    /// RMP (DmaCheck) lookups.
    pub checks: u64,
    /// DMAs that did not reach memory.
    pub blocked: u64,
    /// Events by name.
    pub events: BTreeMap<String, u64>,
    /// Invalidation commands by name.
    pub commands: BTreeMap<String, u64>,
    /// IOTLB entries dropped by commands.
    pub invalidated: u64,
    /// I/O page-table pages (all domains).
    pub table_pages: u64,
}

/// A domain's I/O page table.
#[derive(Clone, Debug)]
enum IoTable {
    Amd(PageTable<Iova, Spa, AmdIoPte>),
    Vtd(PageTable<Iova, Spa, EptEntry>),
}

impl IoTable {
    fn root(&self) -> Spa {
        match self {
            IoTable::Amd(t) => t.root(),
            IoTable::Vtd(t) => t.root(),
        }
    }
    fn table_pages(&self) -> u64 {
        match self {
            IoTable::Amd(t) => t.table_pages(),
            IoTable::Vtd(t) => t.table_pages(),
        }
    }
}

/// A device's entry as programmed in memory (AMD DTE / VT-d context entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DevEntry {
    domain: u32,
    root: Spa,
}

/// Errors of host-side programming (bad input, not architectural outcomes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IommuError {
    /// No such domain.
    #[error("I/O domain {0} has no page table (attach a device to it first)")]
    NoDomain(u32),
    /// Out of table memory.
    #[error("out of memory for I/O page tables")]
    OutOfFrames,
    /// The page-table primitive refused.
    #[error("{0}")]
    Table(String),
    /// Domain ids are 16 bits (DTE DomainID, VT-d DID).
    #[error("domain {0} does not fit the 16-bit domain id")]
    DomainTooLarge(u32),
    /// Requester ids are 16 bits.
    #[error("device {0:#x} does not fit a 16-bit requester id")]
    DeviceTooLarge(u32),
}

/// The IOMMU unit.
#[derive(Clone, Debug)]
pub struct Iommu {
    cfg: IommuConfig,
    fmt: PteFormat,
    /// Device entries in memory, by requester id.
    devices: BTreeMap<u16, DevEntry>,
    /// Domains' tables.
    domains: BTreeMap<u32, IoTable>,
    /// Cached device entries (requester id → entry, and a use stamp for LRU).
    entry_cache: BTreeMap<u16, (DevEntry, u64)>,
    stamp: u64,
    iotlb: Tlb,
    core: Core<Spa>,
    stats: IommuStats,
}

impl Iommu {
    /// An IOMMU with no device programmed; I/O page tables use `fmt`'s physical-address width.
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn new(cfg: &IommuConfig, fmt: PteFormat) -> Result<Iommu, ConfigError> {
        cfg.validate()?;
        Ok(Iommu {
            cfg: cfg.clone(),
            fmt,
            devices: BTreeMap::new(),
            domains: BTreeMap::new(),
            entry_cache: BTreeMap::new(),
            stamp: 0,
            iotlb: Tlb::new(&cfg.iotlb)?,
            core: Core {
                steps: crate::InlineVec::new(),
                end: CoreEnd::NotPresent,
                and_all: u64::MAX,
                ad: false,
            },
            stats: IommuStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IommuConfig {
        &self.cfg
    }

    /// Counters (with the current I/O page-table pages).
    pub fn stats(&self) -> IommuStats {
        let mut s = self.stats.clone();
        s.table_pages = self.domains.values().map(IoTable::table_pages).sum();
        s
    }

    /// The domain a device's entry names, as programmed in memory.
    pub fn device_domain(&self, device: u32) -> Option<u32> {
        u16::try_from(device).ok().and_then(|d| self.devices.get(&d)).map(|e| e.domain)
    }

    fn tag(domain: u32) -> TlbTag {
        // Domain ids are 16 bits (checked when tables are made).
        TlbTag { asid: u16::try_from(domain).unwrap_or(u16::MAX), pcid: 0 }
    }

    fn domain_table(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        frames: &mut impl FrameSource<Spa>,
        domain: u32,
    ) -> Result<&mut IoTable, IommuError> {
        if u16::try_from(domain).is_err() {
            return Err(IommuError::DomainTooLarge(domain));
        }
        if !self.domains.contains_key(&domain) {
            let paging = self.cfg.paging();
            let t = match self.cfg.kind {
                IommuKind::AmdVi => IoTable::Amd(
                    PageTable::new(tables, frames, paging, self.fmt, ())
                        .map_err(|_| IommuError::OutOfFrames)?,
                ),
                IommuKind::VtD => IoTable::Vtd(
                    PageTable::new(
                        tables,
                        frames,
                        paging,
                        self.fmt,
                        EptFlags::READ | EptFlags::WRITE,
                    )
                    .map_err(|_| IommuError::OutOfFrames)?,
                ),
            };
            self.domains.insert(domain, t);
        }
        self.domains.get_mut(&domain).ok_or(IommuError::NoDomain(domain))
    }

    /// The host writes `device`'s entry to translate through `domain`'s table (made if new).
    /// Cached copies of the old entry stay until an entry invalidation.
    ///
    /// # Errors
    /// Ids out of range; no memory for a new domain's root.
    pub fn attach(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        frames: &mut impl FrameSource<Spa>,
        device: u32,
        domain: u32,
    ) -> Result<(), IommuError> {
        let dev = u16::try_from(device).map_err(|_| IommuError::DeviceTooLarge(device))?;
        let root = self.domain_table(tables, frames, domain)?.root();
        self.devices.insert(dev, DevEntry { domain, root });
        Ok(())
    }

    /// The host clears `device`'s entry (cached copies stay until invalidated).
    pub fn detach(&mut self, device: u32) {
        if let Ok(d) = u16::try_from(device) {
            self.devices.remove(&d);
        }
    }

    /// Map `iova` → `spa` (a page of `size`) in `domain`, readable, writable if `write`. The
    /// IOTLB is not touched (a new mapping replaces nothing cached).
    ///
    /// # Errors
    /// Alignment, an existing mapping, out of memory.
    #[allow(clippy::too_many_arguments)] // the map request, spelled out
    pub fn map(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        frames: &mut impl FrameSource<Spa>,
        domain: u32,
        iova: Iova,
        spa: Spa,
        size: PageSize,
        write: bool,
    ) -> Result<(), IommuError> {
        let t = self.domain_table(tables, frames, domain)?;
        let r = match t {
            IoTable::Amd(t) => t
                .map(tables, frames, iova, spa, size, IoPerms { read: true, write })
                .map(|p| p.ignore())
                .map_err(|e| e.to_string()),
            IoTable::Vtd(t) => {
                let mut flags = EptFlags::READ;
                if write {
                    flags |= EptFlags::WRITE;
                }
                let attrs = EptLeafAttrs { flags, mem_type: EptMemType::WriteBack };
                t.map(tables, frames, iova, spa, size, attrs)
                    .map(|p| p.ignore())
                    .map_err(|e| e.to_string())
            }
        };
        r.map_err(IommuError::Table)
    }

    /// Unmap the page of `size` at `iova` in `domain`. The IOTLB keeps any cached copy until
    /// the host invalidates it (INVALIDATE_IOMMU_PAGES / IOTLB invalidation), as on hardware.
    ///
    /// # Errors
    /// No such domain or mapping.
    pub fn unmap(
        &mut self,
        tables: &mut PhysMemTables<Spa>,
        domain: u32,
        iova: Iova,
        size: PageSize,
    ) -> Result<(), IommuError> {
        let t = self.domains.get_mut(&domain).ok_or(IommuError::NoDomain(domain))?;
        let r = match t {
            IoTable::Amd(t) => t.unmap(tables, iova, size).map(|(_, p)| p.ignore()),
            IoTable::Vtd(t) => t.unmap(tables, iova, size).map(|(_, p)| p.ignore()),
        };
        r.map_err(|e| IommuError::Table(e.to_string()))
    }

    /// Drop the IOTLB entries of `domain` (all of them, or `pages` 4K pages from `addr`) and
    /// count them.
    fn inv_pages(&mut self, domain: u32, addr: Option<Iova>, pages: u64) {
        let tag = Self::tag(domain);
        let n = match addr {
            None => self.iotlb.flush(FlushScope::Asid(tag.asid)),
            Some(a) => self.iotlb.invalidate_range(a, pages.max(1).saturating_mul(4096), tag),
        };
        self.stats.invalidated += n;
    }

    /// Execute one invalidation command; returns its cost. Commands of the other vendor are
    /// counted and do nothing.
    pub fn command(
        &mut self,
        cmd: sim_core::event::IommuCmd,
        device: u32,
        domain: u32,
        addr: Option<Iova>,
        pages: u64,
    ) -> Cycles {
        use sim_core::event::IommuCmd as C;
        *self.stats.commands.entry(cmd.name().to_owned()).or_insert(0) += 1;
        let amd = self.cfg.kind == IommuKind::AmdVi;
        match cmd {
            // AMD: INVALIDATE_IOMMU_PAGES with S=1 and the all-pages address, or VT-d domain- or
            // page-selective IOTLB invalidation; `addr` absent = the whole domain.
            C::InvalidateIommuPages | C::VtdIotlbInv => self.inv_pages(domain, addr, pages),
            C::InvalidateDevtabEntry | C::VtdContextInv => {
                if let Ok(d) = u16::try_from(device) {
                    self.entry_cache.remove(&d);
                }
                if cmd == C::VtdContextInv && device == u32::MAX {
                    self.entry_cache.clear();
                }
            }
            C::InvalidateIommuAll => {
                if amd {
                    self.entry_cache.clear();
                    self.stats.invalidated += self.iotlb.flush(FlushScope::All);
                }
            }
            // Completion waits, device-side IOTLBs (no ATS here), interrupt tables: cost only.
            C::CompletionWait
            | C::VtdWait
            | C::InvalidateIotlbPages
            | C::InvalidateInterruptTable
            | C::Attach
            | C::Detach => {}
        }
        self.cfg.command_latency
    }

    /// Drop every cached translation of `spa`'s page range (RMP changes under a coherent
    /// reading), or everything.
    pub fn flush_all(&mut self) {
        self.stats.invalidated += self.iotlb.flush(FlushScope::All);
    }

    /// Drop IOTLB entries whose frame overlaps `bytes` from `start`.
    pub fn invalidate_phys(&mut self, start: Spa, bytes: u64) {
        self.stats.invalidated += self.iotlb.invalidate_phys(start, bytes);
    }

    fn event_amd(
        &mut self,
        code: AmdEventCode,
        devid: u16,
        domain: u32,
        iova: Iova,
        flags: u16,
    ) -> IommuEvent {
        IommuEvent::Amd(AmdEvent {
            code,
            devid,
            domain: u16::try_from(domain).unwrap_or(0),
            address: iova.raw(),
            flags,
            flags_rmp: 0,
        })
    }

    /// The device's entry: from the entry cache, or fetched from memory (one reference for an
    /// AMD DTE, two for a VT-d root and context entry).
    fn entry(&mut self, dev: u16, refs: &mut u32) -> Option<DevEntry> {
        self.stamp += 1;
        let stamp = self.stamp;
        if let Some((e, s)) = self.entry_cache.get_mut(&dev) {
            *s = stamp;
            return Some(*e);
        }
        self.stats.entry_fetches += 1;
        *refs += match self.cfg.kind {
            IommuKind::AmdVi => 1,
            IommuKind::VtD => 2,
        };
        let e = *self.devices.get(&dev)?;
        if self.entry_cache.len() >= self.cfg.entry_cache as usize {
            // Evict the least recently used entry (ties impossible: stamps are unique).
            if let Some(&victim) =
                self.entry_cache.iter().min_by_key(|(_, (_, s))| *s).map(|(k, _)| k)
            {
                self.entry_cache.remove(&victim);
            }
        }
        self.entry_cache.insert(dev, (e, stamp));
        Some(e)
    }

    /// Translate one DMA by `device` to `iova`, checking the result with `check`.
    ///
    /// On an IOTLB hit: the cached translation and permission (and the cached "allowed" of the
    /// check). On a miss: the device entry (cached or fetched), then a walk of the domain's
    /// table; a missing or refusing translation is an IO_PAGE_FAULT (AMD) or a fault record
    /// with reason 5/6 (VT-d); a reserved encoding an IO_PAGE_FAULT / reason 0xC; a device
    /// without an entry an IO_PAGE_FAULT (AMD: the DTE Linux writes for devices it has not
    /// attached, V=1 TV=1 with no table and IR=IW=0, refuses every access; UNCONFIRMED
    /// reading) or reason 2 (VT-d). Then the check: a refused target (or table page, with
    /// `rmp_check_tables`) is an RMP_PAGE_FAULT (AMD) and the DMA does not reach memory.
    pub fn translate(
        &mut self,
        tables: &PhysMemTables<Spa>,
        device: u32,
        iova: Iova,
        write: bool,
        check: &mut impl DmaCheck,
    ) -> Dma {
        self.stats.translations += 1;
        let mut refs = 0u32;
        let lat = self.cfg.iotlb.hit_latency;
        let amd = self.cfg.kind == IommuKind::AmdVi;
        let dev = u16::try_from(device).unwrap_or(u16::MAX);
        let checked = check.active() && (write || self.cfg.rmp_dma_read == DmaReadRule::Checked);
        // The IOTLB is tagged by domain, which comes from the device entry; a device whose
        // entry is cached is the common case, so look the entry up first (no cost on a hit).
        let entry = self.entry(dev, &mut refs);
        let done =
            |s: &mut Self, spa: Option<Spa>, event: Option<IommuEvent>, hit: bool, refs: u32| {
                s.stats.refs += u64::from(refs);
                if spa.is_none() {
                    s.stats.blocked += 1;
                }
                if let Some(e) = &event {
                    *s.stats.events.entry(e.name()).or_insert(0) += 1;
                }
                let cost = lat + s.cfg.mem_latency.times(u64::from(refs));
                Dma { spa, event, iotlb_hit: hit, refs, cost }
            };
        let Some(entry) = entry else {
            let ev = if amd {
                self.event_amd(AmdEventCode::IoPageFault, dev, 0, iova, 0)
            } else {
                IommuEvent::Vtd(VtdFault {
                    reason: VtdFaultReason::ContextNotPresent,
                    source_id: dev,
                    address: iova.raw() & !0xfff,
                    write,
                })
            };
            return done(self, None, Some(ev), false, refs);
        };
        let tag = Self::tag(entry.domain);
        if let Some(hit) = self.iotlb.lookup(iova, tag) {
            let ok = if write { hit.perms.writable } else { hit.perms.readable };
            if ok && (!write || hit.cache.write == WriteCheck::Allowed) {
                self.stats.iotlb_hits[hit.size] += 1;
                return done(self, Some(hit.pa), None, true, refs);
            }
        }
        self.stats.iotlb_misses += 1;
        let paging = self.cfg.paging();
        if !<Iova as crate::addr::PagedAddr>::in_range(iova, paging) {
            let ev = if amd {
                self.event_amd(AmdEventCode::IoPageFault, dev, entry.domain, iova, 0)
            } else {
                IommuEvent::Vtd(VtdFault {
                    reason: VtdFaultReason::BeyondMgaw,
                    source_id: dev,
                    address: iova.raw() & !0xfff,
                    write,
                })
            };
            return done(self, None, Some(ev), false, refs);
        }
        let start = WalkStart::root(entry.root, paging);
        match self.cfg.kind {
            IommuKind::AmdVi => {
                core_walk_into::<AmdIoPte, _, _>(&mut self.core, tables, start, self.fmt, iova)
            }
            IommuKind::VtD => {
                core_walk_into::<EptEntry, _, _>(&mut self.core, tables, start, self.fmt, iova)
            }
        }
        refs += u32::try_from(self.core.steps.len()).unwrap_or(u32::MAX);
        if self.cfg.rmp_check_tables && check.active() {
            let pages: Vec<Spa> = self.core.steps.iter().map(|s| s.addr).collect();
            for p in pages {
                self.stats.checks += 1;
                if !check.allowed(device, Spa::new_truncate(p.raw() & !0xfff), false, true) {
                    let ev = self.event_amd(AmdEventCode::RmpPageFault, dev, entry.domain, iova, 0);
                    return done(self, None, Some(ev), false, refs);
                }
            }
        }
        let perms = self.core.perms();
        let (frame, size) = match self.core.end {
            CoreEnd::Leaf { size, frame } => (frame, size),
            end => {
                let malformed = matches!(end, CoreEnd::Malformed);
                let ev = if amd {
                    // Not present: PR = 0 and RW is not valid (rev 3.00 §2.5.3). Malformed
                    // (a reserved Next Level): reported as a fault on a present entry.
                    let flags = if malformed {
                        event_flags::PR | if write { event_flags::RW } else { 0 }
                    } else {
                        0
                    };
                    self.event_amd(AmdEventCode::IoPageFault, dev, entry.domain, iova, flags)
                } else {
                    let reason = if malformed {
                        VtdFaultReason::ReservedPte
                    } else if write {
                        VtdFaultReason::WriteNotSet
                    } else {
                        VtdFaultReason::ReadNotSet
                    };
                    IommuEvent::Vtd(VtdFault {
                        reason,
                        source_id: dev,
                        address: iova.raw() & !0xfff,
                        write,
                    })
                };
                return done(self, None, Some(ev), false, refs);
            }
        };
        let permitted = if write { perms.writable } else { perms.readable };
        if !permitted {
            let ev = if amd {
                let flags = event_flags::PR | if write { event_flags::RW } else { 0 };
                self.event_amd(AmdEventCode::IoPageFault, dev, entry.domain, iova, flags)
            } else {
                let reason =
                    if write { VtdFaultReason::WriteNotSet } else { VtdFaultReason::ReadNotSet };
                IommuEvent::Vtd(VtdFault {
                    reason,
                    source_id: dev,
                    address: iova.raw() & !0xfff,
                    write,
                })
            };
            return done(self, None, Some(ev), false, refs);
        }
        let spa = Spa::new_truncate(frame.raw() + (iova.raw() & (size.bytes() - 1)));
        let mut allowed = true;
        if checked {
            self.stats.checks += 1;
            allowed = check.allowed(device, spa, write, false);
        }
        if !allowed {
            // The real log in spec/snp.md §2.7 shows `flags=0x0020` for a DMA write: RW only.
            let flags = if write { event_flags::RW } else { 0 };
            let ev = self.event_amd(AmdEventCode::RmpPageFault, dev, entry.domain, iova, flags);
            return done(self, None, Some(ev), false, refs);
        }
        // Fill: a passed check (read or write: DMA must target hypervisor-owned memory either
        // way) covers later writes; an unchecked read fill makes a later write check first
        // (without an RMP there is nothing to check).
        let write_ok = checked || !check.active();
        let cache = CheckCache {
            write: if write_ok { WriteCheck::Allowed } else { WriteCheck::Unchecked },
        };
        let fill = TlbFill {
            frame,
            size,
            perms,
            nested_perms: Perms::ALL,
            global: false,
            dirty: true,
            cache,
        };
        self.iotlb.fill(iova, tag, &fill);
        done(self, Some(spa), None, false, refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::LinearFrames;
    use sim_core::event::IommuCmd;

    const FMT: PteFormat = PteFormat { phys_bits: 52, cbit: crate::pte::CbitPos(None) };

    struct Host {
        tables: PhysMemTables<Spa>,
        frames: LinearFrames<Spa>,
        iommu: Iommu,
    }

    fn host(kind: IommuKind) -> Host {
        let cfg = IommuConfig { kind, ..IommuConfig::default() };
        Host {
            tables: PhysMemTables::new(),
            frames: LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000)),
            iommu: Iommu::new(&cfg, FMT).unwrap(),
        }
    }

    impl Host {
        fn attach(&mut self, dev: u32, dom: u32) {
            self.iommu.attach(&mut self.tables, &mut self.frames, dev, dom).unwrap();
        }
        fn map(&mut self, dom: u32, iova: u64, spa: u64, size: PageSize, w: bool) {
            let (t, f) = (&mut self.tables, &mut self.frames);
            self.iommu.map(t, f, dom, Iova::new(iova), Spa::new(spa), size, w).unwrap();
        }
        fn dma(&mut self, dev: u32, iova: u64, write: bool) -> Dma {
            self.iommu.translate(&self.tables, dev, Iova::new(iova), write, &mut NoDmaCheck)
        }
    }

    fn amd(d: &Dma) -> AmdEvent {
        match d.event {
            Some(IommuEvent::Amd(e)) => e,
            other => panic!("expected an AMD event, got {other:?}"),
        }
    }

    /// A miss fetches the DTE (1 reference) and walks 4 levels; the repeat hits the IOTLB and
    /// the cached DTE (0 references). A 2M leaf is one level shorter.
    #[test]
    fn amd_walk_and_iotlb() {
        let mut h = host(IommuKind::AmdVi);
        h.attach(0x100, 1);
        h.map(1, 0x1000, 0x4000_1000, PageSize::K4, true);
        h.map(1, 0x20_0000, 0x4020_0000, PageSize::M2, false);
        let d = h.dma(0x100, 0x1008, false);
        assert_eq!((d.spa, d.iotlb_hit, d.refs), (Some(Spa::new(0x4000_1008)), false, 5));
        let d = h.dma(0x100, 0x1010, true);
        assert_eq!((d.spa, d.iotlb_hit, d.refs), (Some(Spa::new(0x4000_1010)), true, 0));
        let d = h.dma(0x100, 0x21_2345, false);
        assert_eq!((d.spa, d.refs), (Some(Spa::new(0x4021_2345)), 3));
        let s = h.iommu.stats();
        assert_eq!((s.iotlb_misses, s.iotlb_hits[PageSize::K4], s.entry_fetches), (2, 1, 1));
        assert_eq!(d.cost, Cycles::new(DEFAULT_IOTLB_LATENCY + 3 * DEFAULT_IOMMU_MEM_LATENCY));
    }

    /// PDEs carry the next table's level (PM_LEVEL_PDE), leaves Next Level 0 and FC.
    #[test]
    fn amd_entry_encoding() {
        let mut h = host(IommuKind::AmdVi);
        h.attach(1, 1);
        h.map(1, 0x1000, 0x4000_1000, PageSize::K4, true);
        let root = h.iommu.domains[&1].root();
        let pml4e = AmdIoPte(h.tables.read(root));
        assert_eq!(pml4e.next_level(), 3);
        assert!(pml4e.raw() & (AmdIoPte::PRESENT | AmdIoPte::IR | AmdIoPte::IW) != 0);
        let mut t = pml4e.raw() & AmdIoPte::ADDR;
        for want in [2, 1] {
            let e = AmdIoPte(h.tables.read(Spa::new(t)));
            assert_eq!(e.next_level(), want);
            t = e.raw() & AmdIoPte::ADDR;
        }
        let pte = AmdIoPte(h.tables.read(Spa::new(t + 8)));
        assert_eq!(pte.raw(), 0x4000_1000 | 1 | AmdIoPte::FC | AmdIoPte::IR | AmdIoPte::IW);
    }

    /// IO_PAGE_FAULT: not present (PR = 0, RW not valid), write to a read-only page (PR | RW),
    /// and a device Linux never attached.
    #[test]
    fn amd_io_page_faults() {
        let mut h = host(IommuKind::AmdVi);
        h.attach(0x100, 7);
        h.map(7, 0x2000, 0x4000_2000, PageSize::K4, false);
        let d = h.dma(0x100, 0x9000, true);
        let e = amd(&d);
        assert_eq!(
            (e.code, e.flags, e.domain, e.address),
            (AmdEventCode::IoPageFault, 0, 7, 0x9000)
        );
        assert_eq!(d.spa, None);
        let e = amd(&h.dma(0x100, 0x2000, true));
        assert_eq!(e.flags, event_flags::PR | event_flags::RW);
        assert_eq!(e.code_and_flags(), 0x2030);
        assert!(h.dma(0x100, 0x2000, false).spa.is_some(), "reads are allowed");
        let e = amd(&h.dma(0x200, 0x2000, false));
        assert_eq!((e.code, e.devid), (AmdEventCode::IoPageFault, 0x200));
        assert_eq!(h.iommu.stats().events["IO_PAGE_FAULT"], 3);
        assert_eq!(h.iommu.stats().blocked, 3);
    }

    /// Unmapping without INVALIDATE_IOMMU_PAGES leaves the IOTLB entry in use (the host must
    /// invalidate); after the command the DMA faults. Attaching a device to another domain
    /// takes effect only after INVALIDATE_DEVTAB_ENTRY.
    #[test]
    fn invalidation_effects() {
        let mut h = host(IommuKind::AmdVi);
        h.attach(0x100, 1);
        h.map(1, 0x1000, 0x4000_1000, PageSize::K4, true);
        assert!(h.dma(0x100, 0x1000, true).spa.is_some());
        h.iommu.unmap(&mut h.tables, 1, Iova::new(0x1000), PageSize::K4).unwrap();
        let stale = h.dma(0x100, 0x1000, true);
        assert_eq!((stale.spa, stale.iotlb_hit), (Some(Spa::new(0x4000_1000)), true));
        h.iommu.command(IommuCmd::InvalidateIommuPages, 0, 1, Some(Iova::new(0x1000)), 1);
        assert_eq!(amd(&h.dma(0x100, 0x1000, true)).code, AmdEventCode::IoPageFault);
        assert_eq!(h.iommu.stats().invalidated, 1);
        // Re-attach to domain 2, which maps the page elsewhere.
        h.map(2, 0x1000, 0x5000_1000, PageSize::K4, true);
        h.attach(0x100, 2);
        assert!(h.dma(0x100, 0x1000, false).spa.is_none(), "the cached DTE still names domain 1");
        h.iommu.command(IommuCmd::InvalidateDevtabEntry, 0x100, 0, None, 0);
        assert_eq!(h.dma(0x100, 0x1000, false).spa, Some(Spa::new(0x5000_1000)));
    }

    struct Refuse(Spa);
    impl DmaCheck for Refuse {
        fn allowed(&mut self, _: u32, spa: Spa, _: bool, _: bool) -> bool {
            spa.raw() & !0xfff != self.0.raw()
        }
    }

    /// A refused target is an RMP_PAGE_FAULT (0xD, RW for a write as in the real log), the DMA
    /// does not complete and nothing is cached; an allowed one is cached, so a hit costs no
    /// check; a refused table page stops the walk.
    #[test]
    fn rmp_check() {
        let mut h = host(IommuKind::AmdVi);
        h.attach(0x100, 1);
        h.map(1, 0x1000, 0x4000_1000, PageSize::K4, true);
        h.map(1, 0x2000, 0x4000_2000, PageSize::K4, true);
        let mut c = Refuse(Spa::new(0x4000_2000));
        let d = h.iommu.translate(&h.tables, 0x100, Iova::new(0x2000), true, &mut c);
        let e = amd(&d);
        assert_eq!((e.code_and_flags(), e.flags_rmp, d.spa), (0xd020, 0, None));
        let d = h.iommu.translate(&h.tables, 0x100, Iova::new(0x2000), false, &mut c);
        assert_eq!(amd(&d).code_and_flags(), 0xd000, "reads are checked by default");
        let before = h.iommu.stats().checks;
        h.iommu.translate(&h.tables, 0x100, Iova::new(0x1000), true, &mut c);
        let hit = h.iommu.translate(&h.tables, 0x100, Iova::new(0x1000), true, &mut c);
        assert!(hit.iotlb_hit);
        assert_eq!(h.iommu.stats().checks - before, 5, "4 table pages + the target, once");
        let root = h.iommu.domains[&1].root();
        let mut t = Refuse(root);
        let d = h.iommu.translate(&h.tables, 0x100, Iova::new(0x3000), false, &mut t);
        assert_eq!(amd(&d).code, AmdEventCode::RmpPageFault);
    }

    /// VT-d: a root + context fetch (2 references) then the second-level walk; fault records
    /// with the legacy reasons and T (bit 30: read).
    #[test]
    fn vtd_faults_and_walk() {
        let mut h = host(IommuKind::VtD);
        let vtd = |d: &Dma| match d.event {
            Some(IommuEvent::Vtd(f)) => f,
            other => panic!("expected a VT-d fault, got {other:?}"),
        };
        let f = vtd(&h.dma(0x300, 0x1000, true));
        assert_eq!((f.reason, f.record_dword3()), (VtdFaultReason::ContextNotPresent, 2));
        h.attach(0x300, 5);
        h.map(5, 0x1000, 0x4000_1000, PageSize::K4, false);
        let d = h.dma(0x300, 0x1234, false);
        assert_eq!((d.spa, d.refs), (Some(Spa::new(0x4000_1234)), 2 + 4));
        let f = vtd(&h.dma(0x300, 0x1000, true));
        assert_eq!((f.reason, f.record_dword3()), (VtdFaultReason::WriteNotSet, 5));
        let f = vtd(&h.dma(0x300, 0x7000, false));
        assert_eq!(f.record_dword3(), 6 | 1 << 30);
        let f = vtd(&h.dma(0x300, 1 << 50, false));
        assert_eq!(f.reason, VtdFaultReason::BeyondMgaw);
    }

    /// Configuration errors name the field.
    #[test]
    fn config_validation() {
        let bad = IommuConfig { levels: 3, ..IommuConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("iommu.levels"));
        let bad = IommuConfig { entry_cache: 0, ..IommuConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("iommu.entry_cache"));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Map { page: u64, frame: u64, write: bool },
        Unmap { page: u64 },
        InvPage { page: u64 },
        InvAll,
        Dma { page: u64, write: bool },
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0..8u64, 0..64u64, any::<bool>()).prop_map(|(page, frame, write)| Op::Map {
                page,
                frame,
                write
            }),
            (0..8u64).prop_map(|page| Op::Unmap { page }),
            (0..8u64).prop_map(|page| Op::InvPage { page }),
            Just(Op::InvAll),
            (0..8u64, any::<bool>()).prop_map(|(page, write)| Op::Dma { page, write }),
        ]
    }

    proptest::proptest! {
        /// Whatever the host does, a DMA reaches only a frame the page maps now or mapped since
        /// the last invalidation of that page (a stale IOTLB copy the host has not yet dropped),
        /// with a permission it had; right after an invalidation it sees exactly the current
        /// mapping.
        #[test]
        fn dma_sees_current_or_uninvalidated_mappings(ops in proptest::collection::vec(op(), 1..80)) {
            let mut h = host(IommuKind::AmdVi);
            h.attach(0x100, 1);
            let mut now: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
            let mut seen: BTreeMap<u64, Vec<(u64, bool)>> = BTreeMap::new();
            let mut fresh = true;
            for op in ops {
                match op {
                    Op::Map { page, frame, write } => {
                        if now.contains_key(&page) {
                            continue;
                        }
                        h.map(1, page << 12, 0x4000_0000 + (frame << 12), PageSize::K4, write);
                        now.insert(page, (frame, write));
                        seen.entry(page).or_default().push((frame, write));
                    }
                    Op::Unmap { page } => {
                        if now.remove(&page).is_some() {
                            h.iommu.unmap(&mut h.tables, 1, Iova::new(page << 12), PageSize::K4).unwrap();
                        }
                    }
                    Op::InvPage { page } => {
                        h.iommu.command(IommuCmd::InvalidateIommuPages, 0, 1, Some(Iova::new(page << 12)), 1);
                        seen.insert(page, now.get(&page).into_iter().copied().collect());
                    }
                    Op::InvAll => {
                        h.iommu.command(IommuCmd::InvalidateIommuAll, 0, 0, None, 0);
                        seen = now.iter().map(|(&p, &m)| (p, vec![m])).collect();
                        fresh = true;
                        continue;
                    }
                    Op::Dma { page, write } => {
                        let d = h.dma(0x100, page << 12, write);
                        let allowed = seen.get(&page).cloned().unwrap_or_default();
                        match d.spa {
                            Some(spa) => {
                                let frame = (spa.raw() - 0x4000_0000) >> 12;
                                proptest::prop_assert!(
                                    allowed.iter().any(|&(f, w)| f == frame && (w || !write)),
                                    "page {page} reached frame {frame} (write {write}); allowed {allowed:?}"
                                );
                                if fresh {
                                    proptest::prop_assert_eq!(now.get(&page).map(|m| m.0), Some(frame));
                                }
                            }
                            None => {
                                if fresh {
                                    let ok = now.get(&page).is_some_and(|&(_, w)| w || !write);
                                    proptest::prop_assert!(!ok, "page {page} is mapped {:?} but refused", now.get(&page));
                                }
                            }
                        }
                    }
                }
                fresh = false;
            }
        }
    }
}
