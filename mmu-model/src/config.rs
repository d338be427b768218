//! MMU configuration (section `[mmu]`; STYLE rule 12) and CPU presets.
//!
//! [`MmuConfig::default`] is the minimal model: one 72-entry fully associative DTLB for every
//! access kind, no L2 TLB, no paging-structure caches, one walker and no overlap. The presets
//! ([`MmuConfig::preset`], [`MMU_PRESETS`]) describe real CPUs level by level, each value with
//! its source or an `Unsourced:` rationale ([`MmuPreset::sources`]).

use crate::hierarchy::Inclusion;
use crate::pte::{CbitPos, PteFormat};
use crate::pwc::{PwcConfig, PwcLevelConfig};
use crate::repl::Replacement;
use crate::tlb::{MAX_LATENCY, TlbArrayConfig, TlbConfig};
use sim_core::config::{ConfigBlock, ConfigError, FieldDoc, Source, check_range};
use sim_core::{Cycles, PageSize};

/// Default of [`MmuConfig::walk_ref_latency`], cycles.
pub const DEFAULT_WALK_REF_LATENCY: u64 = 20;
/// Default of [`MmuConfig::recheck_write_on_read_fill`].
pub const DEFAULT_RECHECK_WRITE_ON_READ_FILL: bool = true;
/// Default of [`MmuConfig::cbit_pos`].
pub const DEFAULT_CBIT_POS: u8 = 51;
/// Default of [`MmuConfig::phys_addr_bits`].
pub const DEFAULT_PHYS_ADDR_BITS: u8 = 52;
/// Default DTLB size: Zen 4 L1 DTLB, 72 entries, fully associative, all page sizes
/// (spec/physmap.md H17 and §5, quoting AMD pub. 57647 — evidence grade `[E]`).
pub const DEFAULT_DTLB_ENTRIES: u32 = 72;
/// Default DTLB hit latency (`dtlb.hit_latency`), cycles.
pub const DEFAULT_TLB_HIT_LATENCY: u64 = 0;
/// Default of [`MmuConfig::page_walkers`].
pub const DEFAULT_PAGE_WALKERS: u32 = 1;
/// Default of [`MmuConfig::mlp_window`].
pub const DEFAULT_MLP_WINDOW: u32 = 1;
/// Default of [`MmuConfig::replacement_seed`].
pub const DEFAULT_REPLACEMENT_SEED: u64 = 0;

/// The C-bit position as configured: an integer bit position, or the string `"none"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CbitSetting(pub Option<u8>);

impl serde::Serialize for CbitSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(b) => s.serialize_u8(b),
            None => s.serialize_str("none"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for CbitSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bit(u8),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bit(b) => Ok(CbitSetting(Some(b))),
            Raw::Word(w) if w == "none" => Ok(CbitSetting(None)),
            Raw::Word(w) => {
                Err(serde::de::Error::custom(format!("cbit_pos {w:?}: a bit number or \"none\"")))
            }
        }
    }
}

/// Configuration of one CPU's MMU: TLB hierarchy, paging-structure caches, walkers and
/// overlap, latencies, entry format, check-cache policy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmuConfig {
    /// Whether a write hitting a TLB entry that a read filled runs the write check first
    /// (spec/snp.md §2.4 model suggestion; hardware behaviour UNCONFIRMED). `false`: the check
    /// stage decides writes when the read fills the entry (from the same RMP entry read), and a
    /// write through an entry whose fill-time write check failed walks again and faults — a
    /// write never completes unchecked (the security rule of §2.4).
    pub recheck_write_on_read_fill: bool,
    /// C-bit position (`CPUID 8000_001F EBX[5:0]`, AMD APM Vol. 2 §15.34.1), or `"none"`.
    pub cbit_pos: CbitSetting,
    /// MAXPHYADDR, bits.
    pub phys_addr_bits: u8,
    /// Cycles per memory reference of a walk and per check-stage read (RMP entry), in the flat
    /// cache-latency model. Unsourced: a placeholder for "the entry mostly hits in the L2
    /// cache"; replaced by the cache-hierarchy model when it exists.
    pub walk_ref_latency: Cycles,
    /// Page walkers that can work at once (overlap rule, DESIGN.md "The timing model").
    pub page_walkers: u32,
    /// Accesses in the overlap window (1: no overlap).
    pub mlp_window: u32,
    /// Seed of the random replacement policy (forked per CPU and structure).
    pub replacement_seed: u64,
    /// How the L1 and L2 TLBs share entries.
    pub inclusion: Inclusion,
    /// L1 ITLB, or absent: fetches use the DTLB.
    pub itlb: Option<TlbConfig>,
    /// L1 DTLB (loads, and stores without a store DTLB).
    pub dtlb: TlbConfig,
    /// L1 store DTLB (Intel SPR and later), or absent.
    pub store_dtlb: Option<TlbConfig>,
    /// L2 ITLB (AMD), or absent: ITLB misses go to the STLB.
    pub l2_itlb: Option<TlbConfig>,
    /// L2 TLB (Intel STLB; AMD L2 DTLB), or absent.
    pub stlb: Option<TlbConfig>,
    /// Nested TLB (gPA→hPA) used by 2-D walks, or absent.
    pub nested_tlb: Option<TlbConfig>,
    /// Host (native) paging-structure caches.
    pub pwc: PwcConfig,
    /// Guest paging-structure caches for 2-D walks (keyed by GVA).
    pub guest_pwc: PwcConfig,
    /// Nested paging-structure caches for 2-D walks (NPT/EPT entries, keyed by GPA).
    pub nested_pwc: PwcConfig,
}

impl Default for MmuConfig {
    /// The minimal model (see the module documentation).
    fn default() -> Self {
        MmuConfig {
            recheck_write_on_read_fill: DEFAULT_RECHECK_WRITE_ON_READ_FILL,
            cbit_pos: CbitSetting(Some(DEFAULT_CBIT_POS)),
            phys_addr_bits: DEFAULT_PHYS_ADDR_BITS,
            walk_ref_latency: Cycles::new(DEFAULT_WALK_REF_LATENCY),
            page_walkers: DEFAULT_PAGE_WALKERS,
            mlp_window: DEFAULT_MLP_WINDOW,
            replacement_seed: DEFAULT_REPLACEMENT_SEED,
            inclusion: Inclusion::NonInclusive,
            itlb: None,
            dtlb: TlbConfig::new(
                vec![TlbArrayConfig::fully_assoc(&PageSize::ALL, DEFAULT_DTLB_ENTRIES)],
                DEFAULT_TLB_HIT_LATENCY,
            ),
            store_dtlb: None,
            l2_itlb: None,
            stlb: None,
            nested_tlb: None,
            pwc: PwcConfig::NONE,
            guest_pwc: PwcConfig::NONE,
            nested_pwc: PwcConfig::NONE,
        }
    }
}

impl MmuConfig {
    /// The entry format this configuration describes.
    pub const fn pte_format(&self) -> PteFormat {
        PteFormat { phys_bits: self.phys_addr_bits, cbit: CbitPos(self.cbit_pos.0) }
    }

    /// Every TLB level's geometry set to true LRU (analytic tests of preset geometries).
    pub fn with_lru(mut self) -> MmuConfig {
        for t in [
            self.itlb.as_mut(),
            Some(&mut self.dtlb),
            self.store_dtlb.as_mut(),
            self.l2_itlb.as_mut(),
            self.stlb.as_mut(),
            self.nested_tlb.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            t.replacement = Replacement::Lru;
        }
        self
    }

    /// A preset by name ([`MMU_PRESET_NAMES`]), or `None`.
    pub fn preset(name: &str) -> Option<MmuConfig> {
        MMU_PRESETS.iter().find(|p| p.name == name).map(|p| (p.build)())
    }
}

const fn fdoc(
    key: &'static str,
    unit: &'static str,
    doc: &'static str,
    source: Source,
) -> FieldDoc {
    FieldDoc { key, unit, doc, source }
}

const TLB_GEOMETRY_UNIT: &str = "sets × ways per array";

impl ConfigBlock for MmuConfig {
    const SECTION: &'static str = "mmu";

    fn field_docs() -> &'static [FieldDoc] {
        MMU_FIELD_DOCS
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_impl()
    }
}

const U_LAT0: Source = Source::Unsourced(
    "the L1 TLB lookup overlaps the VIPT L1D access, so a hit adds nothing beyond the access's own latency",
);

const MMU_FIELD_DOCS: &[FieldDoc] = &[
    fdoc(
        "recheck_write_on_read_fill",
        "",
        "a write hitting a read-filled TLB entry runs the write check first",
        Source::Unsourced(
            "hardware behaviour UNCONFIRMED; spec/snp.md §2.4 suggests re-checking, so true",
        ),
    ),
    fdoc(
        "cbit_pos",
        "bit",
        "SEV C-bit position in page-table entries, or \"none\"",
        Source::Cited(
            "CPUID 8000_001F EBX[5:0], AMD APM Vol. 2 §15.34.1; default 51 as on SNP-capable EPYC parts (value not re-checked against a PPR here)",
        ),
    ),
    fdoc(
        "phys_addr_bits",
        "bits",
        "MAXPHYADDR: entry address bits at and above it are reserved (C-bit excepted)",
        Source::Cited(
            "x86-64 architectural maximum of 52 (Intel SDM Vol. 3A §4.1.4; AMD APM Vol. 2 §5.3.3)",
        ),
    ),
    fdoc(
        "walk_ref_latency",
        "cycles",
        "cost of one walk reference or check-stage read (RMP entry) in the flat cache model",
        Source::Unsourced(
            "placeholder for an entry that mostly hits in L2; to be replaced by the cache-hierarchy model",
        ),
    ),
    fdoc(
        "page_walkers",
        "walkers",
        "TLB misses that can walk at once within the overlap window",
        Source::Unsourced(
            "default 1: no overlap, the cost of a burst is the sum (presets set the CPU's value)",
        ),
    ),
    fdoc(
        "mlp_window",
        "accesses",
        "window of consecutive accesses whose TLB misses may overlap",
        Source::Unsourced("default 1: no overlap (presets set an assumed window)"),
    ),
    fdoc(
        "replacement_seed",
        "",
        "seed of random TLB/PWC replacement, forked per CPU and structure",
        Source::Choice,
    ),
    fdoc(
        "inclusion",
        "",
        "L1/L2 TLB inclusion: \"non-inclusive\" (walks fill both, L2 hits copy up) or \"exclusive\" (L1 victims move to L2)",
        Source::Unsourced(
            "non-inclusive as ChampSim fills both levels (spec/simulators.md §2.2); vendors do not document their policy",
        ),
    ),
    fdoc(
        "itlb",
        "",
        "L1 instruction TLB; absent: fetches use the DTLB",
        Source::Unsourced("absent in the minimal model (presets add the CPU's ITLB)"),
    ),
    fdoc(
        "itlb.arrays",
        TLB_GEOMETRY_UNIT,
        "ITLB arrays: page sizes held, sets, ways",
        Source::Unsourced("absent by default"),
    ),
    fdoc("itlb.hit_latency", "cycles", "ITLB lookup cost", U_LAT0),
    fdoc(
        "itlb.replacement",
        "",
        "ITLB replacement: lru, tree-plru or random",
        Source::Unsourced("true LRU, the analytic reference"),
    ),
    fdoc(
        "dtlb",
        "",
        "L1 data TLB (loads; stores too without a store DTLB)",
        Source::Cited(
            "Zen 4 L1 DTLB: 72 entries, fully associative, all page sizes (AMD pub. 57647 as quoted in spec/physmap.md H17/§5, evidence [E])",
        ),
    ),
    fdoc(
        "dtlb.arrays",
        TLB_GEOMETRY_UNIT,
        "DTLB arrays: page sizes held, sets, ways; sizes with no array are smashed to a smaller size",
        Source::Cited(
            "Zen 4 L1 DTLB: 72 entries, fully associative, all page sizes (AMD pub. 57647 as quoted in spec/physmap.md H17/§5, evidence [E])",
        ),
    ),
    fdoc("dtlb.hit_latency", "cycles", "DTLB lookup cost, paid by every data access", U_LAT0),
    fdoc(
        "dtlb.replacement",
        "",
        "DTLB replacement: lru, tree-plru or random",
        Source::Unsourced("true LRU, the analytic reference"),
    ),
    fdoc(
        "store_dtlb",
        "",
        "L1 store-only DTLB (Intel SPR/EMR/GNR: 16 entries fully associative, CPUID 0x18, spec/tdx.md §5.2); absent: stores use the DTLB",
        Source::Unsourced("absent in the minimal model"),
    ),
    fdoc(
        "store_dtlb.arrays",
        TLB_GEOMETRY_UNIT,
        "store DTLB arrays",
        Source::Unsourced("absent by default"),
    ),
    fdoc("store_dtlb.hit_latency", "cycles", "store DTLB lookup cost", U_LAT0),
    fdoc("store_dtlb.replacement", "", "store DTLB replacement", Source::Unsourced("true LRU")),
    fdoc(
        "l2_itlb",
        "",
        "L2 instruction TLB (AMD Zen); absent: ITLB misses go to the STLB",
        Source::Unsourced("absent in the minimal model"),
    ),
    fdoc(
        "l2_itlb.arrays",
        TLB_GEOMETRY_UNIT,
        "L2 ITLB arrays",
        Source::Unsourced("absent by default"),
    ),
    fdoc(
        "l2_itlb.hit_latency",
        "cycles",
        "L2 ITLB lookup cost (after an ITLB miss)",
        Source::Unsourced("absent by default"),
    ),
    fdoc("l2_itlb.replacement", "", "L2 ITLB replacement", Source::Unsourced("true LRU")),
    fdoc(
        "stlb",
        "",
        "L2 TLB (Intel STLB, AMD L2 DTLB); absent: L1 misses walk",
        Source::Unsourced("absent in the minimal model"),
    ),
    fdoc(
        "stlb.arrays",
        TLB_GEOMETRY_UNIT,
        "L2 TLB arrays (a size in several arrays may go in any: SPR's split halves)",
        Source::Unsourced("absent by default"),
    ),
    fdoc(
        "stlb.hit_latency",
        "cycles",
        "L2 TLB lookup cost (after an L1 miss)",
        Source::Unsourced("absent by default"),
    ),
    fdoc("stlb.replacement", "", "L2 TLB replacement", Source::Unsourced("true LRU")),
    fdoc(
        "nested_tlb",
        "",
        "nested TLB caching gPA→hPA translations for 2-D walks; absent: every nested translation walks (from the nested PWC)",
        Source::Unsourced("absent by default; vendors document no nested-TLB geometry"),
    ),
    fdoc(
        "nested_tlb.arrays",
        TLB_GEOMETRY_UNIT,
        "nested TLB arrays",
        Source::Unsourced("absent by default"),
    ),
    fdoc(
        "nested_tlb.hit_latency",
        "cycles",
        "nested TLB lookup cost per nested translation",
        Source::Unsourced("absent by default"),
    ),
    fdoc("nested_tlb.replacement", "", "nested TLB replacement", Source::Unsourced("true LRU")),
    fdoc(
        "pwc",
        "sets × ways per level",
        "host paging-structure caches (PML5E/PML4E/PDPTE/PDE); ways = 0: no cache for that level",
        Source::Unsourced("none in the minimal model (presets add the CPU's)"),
    ),
    fdoc("pwc.pml5", "sets × ways", "PML5E cache", Source::Unsourced("none by default")),
    fdoc("pwc.pml4", "sets × ways", "PML4E cache", Source::Unsourced("none by default")),
    fdoc("pwc.pdpt", "sets × ways", "PDPTE cache", Source::Unsourced("none by default")),
    fdoc("pwc.pd", "sets × ways", "PDE cache", Source::Unsourced("none by default")),
    fdoc(
        "pwc.hit_latency",
        "cycles",
        "cost of probing the PWCs, once per walk",
        Source::Unsourced("none by default"),
    ),
    fdoc("pwc.replacement", "", "PWC replacement", Source::Unsourced("true LRU")),
    fdoc(
        "guest_pwc",
        "sets × ways per level",
        "guest paging-structure caches for 2-D walks",
        Source::Unsourced("none by default"),
    ),
    fdoc(
        "guest_pwc.pml5",
        "sets × ways",
        "guest PML5E cache",
        Source::Unsourced("none by default"),
    ),
    fdoc(
        "guest_pwc.pml4",
        "sets × ways",
        "guest PML4E cache",
        Source::Unsourced("none by default"),
    ),
    fdoc(
        "guest_pwc.pdpt",
        "sets × ways",
        "guest PDPTE cache",
        Source::Unsourced("none by default"),
    ),
    fdoc("guest_pwc.pd", "sets × ways", "guest PDE cache", Source::Unsourced("none by default")),
    fdoc(
        "guest_pwc.hit_latency",
        "cycles",
        "cost of probing the guest PWCs, once per 2-D walk",
        Source::Unsourced("none by default"),
    ),
    fdoc("guest_pwc.replacement", "", "guest PWC replacement", Source::Unsourced("true LRU")),
    fdoc(
        "nested_pwc",
        "sets × ways per level",
        "nested (NPT/EPT) paging-structure caches for 2-D walks",
        Source::Unsourced("none by default"),
    ),
    fdoc(
        "nested_pwc.pml5",
        "sets × ways",
        "nested PML5E cache",
        Source::Unsourced("none by default"),
    ),
    fdoc(
        "nested_pwc.pml4",
        "sets × ways",
        "nested PML4E cache",
        Source::Unsourced("none by default"),
    ),
    fdoc(
        "nested_pwc.pdpt",
        "sets × ways",
        "nested PDPTE cache",
        Source::Unsourced("none by default"),
    ),
    fdoc("nested_pwc.pd", "sets × ways", "nested PDE cache", Source::Unsourced("none by default")),
    fdoc(
        "nested_pwc.hit_latency",
        "cycles",
        "cost of probing the nested PWCs, once per nested walk",
        Source::Unsourced("none by default"),
    ),
    fdoc("nested_pwc.replacement", "", "nested PWC replacement", Source::Unsourced("true LRU")),
];

impl MmuConfig {
    fn validate_impl(&self) -> Result<(), ConfigError> {
        let s = Self::SECTION;
        check_range(
            || format!("{s}.walk_ref_latency"),
            self.walk_ref_latency.get(),
            0,
            MAX_LATENCY,
        )?;
        check_range(|| format!("{s}.phys_addr_bits"), self.phys_addr_bits, 32, 52)?;
        if let Some(b) = self.cbit_pos.0 {
            check_range(|| format!("{s}.cbit_pos"), b, 12, 51)?;
        }
        check_range(|| format!("{s}.page_walkers"), self.page_walkers, 1, 64)?;
        check_range(|| format!("{s}.mlp_window"), self.mlp_window, 1, 4096)?;
        self.dtlb.validate(&format!("{s}.dtlb"))?;
        for (name, t) in [
            ("itlb", &self.itlb),
            ("store_dtlb", &self.store_dtlb),
            ("l2_itlb", &self.l2_itlb),
            ("stlb", &self.stlb),
            ("nested_tlb", &self.nested_tlb),
        ] {
            if let Some(t) = t {
                t.validate(&format!("{s}.{name}"))?;
            }
        }
        self.pwc.validate(&format!("{s}.pwc"))?;
        self.guest_pwc.validate(&format!("{s}.guest_pwc"))?;
        self.nested_pwc.validate(&format!("{s}.nested_pwc"))
    }
}

// ---------------------------------------------------------------------------------------------
// Presets.

/// A CPU preset: its constructor and the source of every value it sets.
#[derive(Debug, Clone, Copy)]
pub struct MmuPreset {
    /// Name (`MmuConfig::preset(name)`).
    pub name: &'static str,
    /// What it models.
    pub summary: &'static str,
    /// The constructor.
    pub build: fn() -> MmuConfig,
    /// Source of each value the preset sets, by key (dotted, within `[mmu]`).
    pub sources: &'static [(&'static str, Source)],
}

/// Every MMU preset.
pub const MMU_PRESETS: &[MmuPreset] = &[
    MmuPreset {
        name: "zen4",
        summary: "AMD Zen 4 (EPYC 9004 Genoa)",
        build: MmuConfig::zen4,
        sources: ZEN4_SOURCES,
    },
    MmuPreset {
        name: "zen5",
        summary: "AMD Zen 5 (EPYC 9005 Turin); geometry from Hot Chips 2024, associativity unsourced",
        build: MmuConfig::zen5,
        sources: ZEN5_SOURCES,
    },
    MmuPreset {
        name: "spr",
        summary: "Intel Sapphire Rapids (CPUID 0x18 of family 6 model 0x8F)",
        build: MmuConfig::spr,
        sources: SPR_SOURCES,
    },
    MmuPreset {
        name: "emr",
        summary: "Intel Emerald Rapids (CPUID 0x18 identical to SPR)",
        build: MmuConfig::emr,
        sources: SPR_SOURCES,
    },
    MmuPreset {
        name: "gnr",
        summary: "Intel Granite Rapids (CPUID 0x18: 96-entry 4K load DTLB)",
        build: MmuConfig::gnr,
        sources: GNR_SOURCES,
    },
    MmuPreset {
        name: "skylake-sp",
        summary: "Intel Skylake-SP, per spec/simulators.md §4",
        build: MmuConfig::skylake_sp,
        sources: SKYLAKE_SOURCES,
    },
    MmuPreset {
        name: "champsim",
        summary: "ChampSim's default TLBs, PSCLs and walker (spec/simulators.md §2.2)",
        build: MmuConfig::champsim,
        sources: CHAMPSIM_SOURCES,
    },
];

/// The names of [`MMU_PRESETS`].
pub const MMU_PRESET_NAMES: &[&str] =
    &["zen4", "zen5", "spr", "emr", "gnr", "skylake-sp", "champsim"];

const K4: PageSize = PageSize::K4;
const M2: PageSize = PageSize::M2;
const G1: PageSize = PageSize::G1;

/// Unsourced overlap window shared by the presets.
const PRESET_MLP_WINDOW: u32 = 16;
const U_WINDOW: Source = Source::Unsourced(
    "16 accesses: an assumed number of memory accesses in flight whose misses can overlap; no vendor figure; calibrate against measurements",
);
const U_L1_LAT: Source = Source::Unsourced(
    "0: the L1 TLB lookup overlaps the VIPT L1D access, so a hit adds nothing beyond the access itself",
);
const U_INCLUSION: Source = Source::Unsourced(
    "non-inclusive as ChampSim fills both levels (spec/simulators.md §2.2); the vendor's policy is not documented",
);
const U_WALK_REF: Source = Source::Unsourced(
    "flat placeholder (entry mostly hits in L2) until the cache-hierarchy model prices walk references",
);
const VIRTUOSO_NESTED_PWC: Source = Source::Unsourced(
    "Virtuoso's host PWC for nested walks, 4 levels × 32 entries 4-way (spec/simulators.md §4): a simulator's assumption, not this CPU's documented value",
);
const U_GUEST_PWC: Source = Source::Unsourced(
    "the guest walk is assumed to get the same paging-structure caches as a native walk (Virtuoso models guest PSCs this way, spec/simulators.md §4)",
);
const U_NO_NTLB: Source = Source::Unsourced(
    "no nested-TLB geometry is documented for this CPU: none modelled, nested translations walk from the nested PWC",
);
const U_PWC_LAT: Source =
    Source::Unsourced("1 cycle for probing small CAMs in parallel; no published latency");
const INTEL_NO_CBIT: Source =
    Source::Cited("Intel has no SEV C-bit (TDX uses the GPA shared bit, spec/tdx.md §1.1)");
const U_MAXPHY: Source = Source::Unsourced(
    "the architectural maximum 52; the part's CPUID 8000_0008 MAXPHYADDR was not checked",
);

fn virtuoso_nested_pwc() -> PwcConfig {
    PwcConfig {
        pml5: PwcLevelConfig::new(8, 4),
        pml4: PwcLevelConfig::new(8, 4),
        pdpt: PwcLevelConfig::new(8, 4),
        pd: PwcLevelConfig::new(8, 4),
        hit_latency: Cycles::new(1),
        replacement: Replacement::Lru,
    }
}

fn tlb(arrays: Vec<TlbArrayConfig>, lat: u64) -> TlbConfig {
    TlbConfig::new(arrays, lat)
}

const ZEN4_SOURCES: &[(&str, Source)] = &[
    (
        "dtlb",
        Source::Cited(
            "72 entries, fully associative, all page sizes: AMD pub. 57647 via spec/physmap.md H17/§5 [E]",
        ),
    ),
    ("dtlb.hit_latency", U_L1_LAT),
    (
        "itlb",
        Source::Unsourced(
            "64 entries fully associative, all sizes, as on Zen 2 (7-cpu.com/cpu/Zen2.html) and Zen 5 (AMD Hot Chips 2024); no Zen 4 figure found",
        ),
    ),
    ("itlb.hit_latency", U_L1_LAT),
    (
        "l2_itlb",
        Source::Unsourced(
            "512 entries 8-way, 4K and 2M (1G smashed), the Zen 2 value (7-cpu.com/cpu/Zen2.html); no Zen 4 figure found",
        ),
    ),
    ("l2_itlb.hit_latency", Source::Unsourced("taken equal to the L2 DTLB's")),
    (
        "stlb",
        Source::Cited(
            "L2 DTLB 3072 entries, 24-way (128 sets), holds 4K and 2M, 1G smashed to 2M: spec/physmap.md H17/§5 [E]; AMD's skewed per-size ways (spec/simulators.md §4) are approximated by one set-associative array; 16K coalescing is not modelled",
        ),
    ),
    (
        "stlb.hit_latency",
        Source::Cited(
            "7: 'one L2 TLB hit costs about 7–8 extra cycles', spec/physmap.md §5 [E] (lower bound taken)",
        ),
    ),
    ("page_walkers", Source::Cited("6 walkers: spec/physmap.md §5 [E]")),
    (
        "pwc.pd",
        Source::Cited(
            "64-entry page-directory cache: spec/physmap.md §5 [E]; taken fully associative (Unsourced)",
        ),
    ),
    ("pwc.pml4", Source::Unsourced("no upper-level cache documented: none modelled")),
    ("pwc.pdpt", Source::Unsourced("no upper-level cache documented: none modelled")),
    ("pwc.hit_latency", U_PWC_LAT),
    ("guest_pwc", U_GUEST_PWC),
    ("nested_pwc", VIRTUOSO_NESTED_PWC),
    ("nested_tlb", U_NO_NTLB),
    ("mlp_window", U_WINDOW),
    ("inclusion", U_INCLUSION),
    ("walk_ref_latency", U_WALK_REF),
    (
        "cbit_pos",
        Source::Cited(
            "51 on SNP-capable EPYC (CPUID 8000_001F EBX[5:0]); not re-checked against a PPR",
        ),
    ),
    ("phys_addr_bits", U_MAXPHY),
];

const ZEN5_SOURCES: &[(&str, Source)] = &[
    (
        "itlb",
        Source::Cited(
            "64-entry ITLB: AMD, 'Next Generation Zen 5 Core', Hot Chips 2024 (Cohen, Subramony); fully associative all sizes Unsourced (as Zen 4)",
        ),
    ),
    (
        "dtlb",
        Source::Cited(
            "96-entry DTLB: AMD Hot Chips 2024; fully associative all sizes Unsourced (as Zen 4)",
        ),
    ),
    (
        "l2_itlb",
        Source::Cited(
            "2K-entry L2 ITLB: AMD Hot Chips 2024; 8-way (256 sets) and 4K/2M with 1G smashed Unsourced (as Zen 2/4)",
        ),
    ),
    (
        "stlb",
        Source::Cited(
            "4K-entry L2 DTLB holding 'everything but 1G': AMD Hot Chips 2024; 16-way (256 sets) Unsourced",
        ),
    ),
    ("stlb.hit_latency", Source::Unsourced("the Zen 4 value, 7 cycles")),
    ("l2_itlb.hit_latency", Source::Unsourced("the Zen 4 value, 7 cycles")),
    ("itlb.hit_latency", U_L1_LAT),
    ("dtlb.hit_latency", U_L1_LAT),
    ("page_walkers", Source::Unsourced("the Zen 4 value, 6")),
    ("pwc.pd", Source::Unsourced("the Zen 4 value, 64 entries")),
    ("pwc.hit_latency", U_PWC_LAT),
    ("guest_pwc", U_GUEST_PWC),
    ("nested_pwc", VIRTUOSO_NESTED_PWC),
    ("nested_tlb", U_NO_NTLB),
    ("mlp_window", U_WINDOW),
    ("inclusion", U_INCLUSION),
    ("walk_ref_latency", U_WALK_REF),
    ("cbit_pos", Source::Unsourced("51 as on Zen 4 EPYC; not checked for Zen 5")),
    ("phys_addr_bits", U_MAXPHY),
];

const INTEL_COMMON: [(&str, Source); 14] = [
    (
        "itlb",
        Source::Cited(
            "CPUID 0x18: 4K 256 entries 8-way × 32, 2M/4M 32 entries 8-way × 4 (1G smashed to 2M): spec/tdx.md §5.2",
        ),
    ),
    (
        "store_dtlb",
        Source::Cited(
            "CPUID 0x18: store-only DTLB 16 entries fully associative, all sizes: spec/tdx.md §5.2",
        ),
    ),
    (
        "stlb",
        Source::Cited(
            "CPUID 0x18: STLB halves 4K+2M and 4K+1G, 1024 entries 8-way × 128 each; 4K may use either half: spec/tdx.md §5.2",
        ),
    ),
    (
        "stlb.hit_latency",
        Source::Unsourced(
            "12: the Haswell STLB hit measurement (spec/simulators.md §4); no Golden Cove/Redwood Cove figure found",
        ),
    ),
    ("itlb.hit_latency", U_L1_LAT),
    ("dtlb.hit_latency", U_L1_LAT),
    ("store_dtlb.hit_latency", U_L1_LAT),
    (
        "page_walkers",
        Source::Unsourced(
            "4: the commonly cited PMH count for Golden Cove, UNCONFIRMED (spec/tdx.md §5.2)",
        ),
    ),
    (
        "pwc",
        Source::Unsourced(
            "not reported by CPUID (spec/tdx.md §5.2); ChampSim's PSCL defaults 2/4/8/32 (spec/simulators.md §2.2), the research-paper assumption",
        ),
    ),
    ("guest_pwc", U_GUEST_PWC),
    ("nested_pwc", VIRTUOSO_NESTED_PWC),
    ("nested_tlb", U_NO_NTLB),
    ("mlp_window", U_WINDOW),
    ("cbit_pos", INTEL_NO_CBIT),
];

const SPR_SOURCES: &[(&str, Source)] = &[
    INTEL_COMMON[0],
    INTEL_COMMON[1],
    INTEL_COMMON[2],
    INTEL_COMMON[3],
    INTEL_COMMON[4],
    INTEL_COMMON[5],
    INTEL_COMMON[6],
    INTEL_COMMON[7],
    INTEL_COMMON[8],
    INTEL_COMMON[9],
    INTEL_COMMON[10],
    INTEL_COMMON[11],
    INTEL_COMMON[12],
    INTEL_COMMON[13],
    (
        "dtlb",
        Source::Cited(
            "CPUID 0x18: load DTLB 4K 64 entries 4-way × 16, 2M 32 entries 4-way × 8, 1G 8 fully associative: spec/tdx.md §5.2",
        ),
    ),
    ("inclusion", U_INCLUSION),
    ("walk_ref_latency", U_WALK_REF),
    ("phys_addr_bits", U_MAXPHY),
];

const GNR_SOURCES: &[(&str, Source)] = &[
    INTEL_COMMON[0],
    INTEL_COMMON[1],
    INTEL_COMMON[2],
    INTEL_COMMON[3],
    INTEL_COMMON[4],
    INTEL_COMMON[5],
    INTEL_COMMON[6],
    INTEL_COMMON[7],
    INTEL_COMMON[8],
    INTEL_COMMON[9],
    INTEL_COMMON[10],
    INTEL_COMMON[11],
    INTEL_COMMON[12],
    INTEL_COMMON[13],
    (
        "dtlb",
        Source::Cited(
            "CPUID 0x18: load DTLB 4K 96 entries 6-way × 16, 2M 32 entries 4-way × 8, 1G 8 fully associative: spec/tdx.md §5.2",
        ),
    ),
    ("inclusion", U_INCLUSION),
    ("walk_ref_latency", U_WALK_REF),
    ("phys_addr_bits", U_MAXPHY),
];

const SKYLAKE_SOURCES: &[(&str, Source)] = &[
    (
        "itlb",
        Source::Cited(
            "4K 128 entries 8-way (16 sets): spec/simulators.md §4 (Intel Optimization Reference Manual 248966-045 Table 2-15 as quoted); no 2M ITLB listed there, so 2M/1G are smashed to 4K",
        ),
    ),
    (
        "dtlb",
        Source::Cited(
            "4K 64 entries 4-way, 2M 32 entries 4-way, 1G 4 entries: spec/simulators.md §4 (2M/1G rows 'verify before citing as primary')",
        ),
    ),
    (
        "stlb",
        Source::Cited(
            "1536 entries 12-way shared 4K/2M, plus 16 entries 4-way for 1G: spec/simulators.md §4",
        ),
    ),
    (
        "stlb.hit_latency",
        Source::Cited(
            "9: spec/simulators.md §4 suggested default 8–9 cycles (Haswell measured ≈12)",
        ),
    ),
    ("itlb.hit_latency", U_L1_LAT),
    ("dtlb.hit_latency", U_L1_LAT),
    (
        "page_walkers",
        Source::Unsourced("2: 'commonly cited, not verified' (spec/simulators.md §4)"),
    ),
    (
        "pwc",
        Source::Unsourced(
            "PML4E 2 / PDPTE 4 / PDE 32: what research papers assume, unverified against Intel docs (spec/simulators.md §4)",
        ),
    ),
    ("guest_pwc", U_GUEST_PWC),
    ("nested_pwc", VIRTUOSO_NESTED_PWC),
    ("nested_tlb", U_NO_NTLB),
    ("mlp_window", U_WINDOW),
    ("inclusion", U_INCLUSION),
    ("walk_ref_latency", U_WALK_REF),
    ("cbit_pos", INTEL_NO_CBIT),
    ("phys_addr_bits", U_MAXPHY),
];

const CHAMPSIM_SOURCES: &[(&str, Source)] = &[
    (
        "itlb",
        Source::Cited(
            "ITLB 16 sets × 4 ways, latency 1: ChampSim champsim_config.json (spec/simulators.md §2.2); ChampSim has one page size, here every size shares the array",
        ),
    ),
    ("dtlb", Source::Cited("DTLB 16 × 4, latency 1: spec/simulators.md §2.2")),
    ("stlb", Source::Cited("STLB 128 × 12, latency 8: spec/simulators.md §2.2")),
    (
        "pwc",
        Source::Cited(
            "PSCL5 1×2, PSCL4 1×4, PSCL3 2×4, PSCL2 4×8; extra per-step latency 0: spec/simulators.md §2.2",
        ),
    ),
    ("page_walkers", Source::Cited("PTW MSHR 5 (concurrent walks): spec/simulators.md §2.2")),
    (
        "inclusion",
        Source::Cited(
            "walks fill the STLB and the L1 on return: ChampSim (spec/simulators.md §2.2)",
        ),
    ),
    (
        "guest_pwc",
        Source::Unsourced("ChampSim does not model nested walks; the native PSCLs are reused"),
    ),
    ("nested_pwc", VIRTUOSO_NESTED_PWC),
    ("nested_tlb", U_NO_NTLB),
    ("mlp_window", U_WINDOW),
    ("walk_ref_latency", U_WALK_REF),
    ("cbit_pos", Source::Cited("ChampSim models no memory encryption")),
    ("phys_addr_bits", U_MAXPHY),
];

impl MmuConfig {
    /// AMD Zen 4 (sources: [`MmuPreset::sources`] of `"zen4"`).
    pub fn zen4() -> MmuConfig {
        MmuConfig {
            page_walkers: 6,
            mlp_window: PRESET_MLP_WINDOW,
            itlb: Some(tlb(vec![TlbArrayConfig::fully_assoc(&[K4, M2, G1], 64)], 0)),
            dtlb: tlb(vec![TlbArrayConfig::fully_assoc(&[K4, M2, G1], 72)], 0),
            l2_itlb: Some(tlb(vec![TlbArrayConfig::set_assoc(&[K4, M2], 64, 8)], 7)),
            stlb: Some(tlb(vec![TlbArrayConfig::set_assoc(&[K4, M2], 128, 24)], 7)),
            pwc: PwcConfig {
                pd: PwcLevelConfig::new(1, 64),
                hit_latency: Cycles::new(1),
                ..PwcConfig::NONE
            },
            guest_pwc: PwcConfig {
                pd: PwcLevelConfig::new(1, 64),
                hit_latency: Cycles::new(1),
                ..PwcConfig::NONE
            },
            nested_pwc: virtuoso_nested_pwc(),
            ..MmuConfig::default()
        }
    }

    /// AMD Zen 5 (sources: [`MmuPreset::sources`] of `"zen5"`).
    pub fn zen5() -> MmuConfig {
        MmuConfig {
            itlb: Some(tlb(vec![TlbArrayConfig::fully_assoc(&[K4, M2, G1], 64)], 0)),
            dtlb: tlb(vec![TlbArrayConfig::fully_assoc(&[K4, M2, G1], 96)], 0),
            l2_itlb: Some(tlb(vec![TlbArrayConfig::set_assoc(&[K4, M2], 256, 8)], 7)),
            stlb: Some(tlb(vec![TlbArrayConfig::set_assoc(&[K4, M2], 256, 16)], 7)),
            ..MmuConfig::zen4()
        }
    }

    fn intel(dtlb_4k: TlbArrayConfig) -> MmuConfig {
        let pscl = PwcConfig {
            pml5: PwcLevelConfig::new(1, 2),
            pml4: PwcLevelConfig::new(1, 4),
            pdpt: PwcLevelConfig::new(2, 4),
            pd: PwcLevelConfig::new(4, 8),
            hit_latency: Cycles::new(1),
            replacement: Replacement::Lru,
        };
        MmuConfig {
            cbit_pos: CbitSetting(None),
            page_walkers: 4,
            mlp_window: PRESET_MLP_WINDOW,
            itlb: Some(tlb(
                vec![
                    TlbArrayConfig::set_assoc(&[K4], 32, 8),
                    TlbArrayConfig::set_assoc(&[M2], 4, 8),
                ],
                0,
            )),
            dtlb: tlb(
                vec![
                    dtlb_4k,
                    TlbArrayConfig::set_assoc(&[M2], 8, 4),
                    TlbArrayConfig::fully_assoc(&[G1], 8),
                ],
                0,
            ),
            store_dtlb: Some(tlb(vec![TlbArrayConfig::fully_assoc(&[K4, M2, G1], 16)], 0)),
            stlb: Some(tlb(
                vec![
                    TlbArrayConfig::set_assoc(&[K4, M2], 128, 8),
                    TlbArrayConfig::set_assoc(&[K4, G1], 128, 8),
                ],
                12,
            )),
            pwc: pscl,
            guest_pwc: pscl,
            nested_pwc: virtuoso_nested_pwc(),
            ..MmuConfig::default()
        }
    }

    /// Intel Sapphire Rapids (sources: [`MmuPreset::sources`] of `"spr"`).
    pub fn spr() -> MmuConfig {
        MmuConfig::intel(TlbArrayConfig::set_assoc(&[K4], 16, 4))
    }

    /// Intel Emerald Rapids: CPUID 0x18 reports the same TLBs as Sapphire Rapids
    /// (spec/tdx.md §5.2).
    pub fn emr() -> MmuConfig {
        MmuConfig::spr()
    }

    /// Intel Granite Rapids (sources: [`MmuPreset::sources`] of `"gnr"`).
    pub fn gnr() -> MmuConfig {
        MmuConfig::intel(TlbArrayConfig::set_assoc(&[K4], 16, 6))
    }

    /// Intel Skylake-SP (sources: [`MmuPreset::sources`] of `"skylake-sp"`).
    pub fn skylake_sp() -> MmuConfig {
        let psc = PwcConfig {
            pml4: PwcLevelConfig::new(1, 2),
            pdpt: PwcLevelConfig::new(1, 4),
            pd: PwcLevelConfig::new(4, 8),
            hit_latency: Cycles::new(1),
            ..PwcConfig::NONE
        };
        MmuConfig {
            cbit_pos: CbitSetting(None),
            page_walkers: 2,
            mlp_window: PRESET_MLP_WINDOW,
            itlb: Some(tlb(vec![TlbArrayConfig::set_assoc(&[K4], 16, 8)], 0)),
            dtlb: tlb(
                vec![
                    TlbArrayConfig::set_assoc(&[K4], 16, 4),
                    TlbArrayConfig::set_assoc(&[M2], 8, 4),
                    TlbArrayConfig::set_assoc(&[G1], 1, 4),
                ],
                0,
            ),
            stlb: Some(tlb(
                vec![
                    TlbArrayConfig::set_assoc(&[K4, M2], 128, 12),
                    TlbArrayConfig::set_assoc(&[G1], 4, 4),
                ],
                9,
            )),
            pwc: psc,
            guest_pwc: psc,
            nested_pwc: virtuoso_nested_pwc(),
            ..MmuConfig::default()
        }
    }

    /// ChampSim's defaults (sources: [`MmuPreset::sources`] of `"champsim"`).
    pub fn champsim() -> MmuConfig {
        let pscl = PwcConfig {
            pml5: PwcLevelConfig::new(1, 2),
            pml4: PwcLevelConfig::new(1, 4),
            pdpt: PwcLevelConfig::new(2, 4),
            pd: PwcLevelConfig::new(4, 8),
            hit_latency: Cycles::ZERO,
            replacement: Replacement::Lru,
        };
        MmuConfig {
            cbit_pos: CbitSetting(None),
            page_walkers: 5,
            mlp_window: PRESET_MLP_WINDOW,
            itlb: Some(tlb(vec![TlbArrayConfig::set_assoc(&[K4, M2, G1], 16, 4)], 1)),
            dtlb: tlb(vec![TlbArrayConfig::set_assoc(&[K4, M2, G1], 16, 4)], 1),
            stlb: Some(tlb(vec![TlbArrayConfig::set_assoc(&[K4, M2, G1], 128, 12)], 8)),
            pwc: pscl,
            guest_pwc: pscl,
            nested_pwc: virtuoso_nested_pwc(),
            ..MmuConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_valid_and_documented() {
        let c = MmuConfig::default();
        c.validate().unwrap();
        let t = toml::to_string(&c).unwrap();
        for d in MmuConfig::field_docs() {
            let top = d.key.split('.').next().unwrap();
            let optional = ["itlb", "store_dtlb", "l2_itlb", "stlb", "nested_tlb"];
            assert!(optional.contains(&top) || t.contains(top), "{} missing from {t}", d.key);
        }
        let back: MmuConfig = toml::from_str(&t).unwrap();
        assert_eq!(back, c);
        assert_eq!(c.pte_format(), PteFormat::default());
    }

    /// Every serialized leaf key of every preset has a FieldDoc equal to it or a dotted prefix
    /// of it (what the root's `ccsim presets` test requires), and every preset's source keys
    /// name real fields.
    #[test]
    fn presets_valid_round_trip_and_documented() {
        fn leaves(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let key =
                            if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        leaves(&key, v, out);
                    }
                }
                _ => out.push(prefix.to_owned()),
            }
        }
        let docs = MmuConfig::field_docs();
        let documented =
            |k: &str| docs.iter().any(|d| k == d.key || k.starts_with(&format!("{}.", d.key)));
        assert_eq!(MMU_PRESETS.len(), MMU_PRESET_NAMES.len());
        for (p, name) in MMU_PRESETS.iter().zip(MMU_PRESET_NAMES) {
            assert_eq!(p.name, *name);
            let c = MmuConfig::preset(name).unwrap();
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            let v = toml::Value::try_from(&c).unwrap();
            let mut ls = Vec::new();
            leaves("", &v, &mut ls);
            for l in &ls {
                assert!(documented(l), "{name}: {l} has no FieldDoc");
            }
            let text = toml::to_string(&c).unwrap();
            let back: MmuConfig = toml::from_str(&text).unwrap();
            assert_eq!(back, c, "{name} round trip");
            for (k, _) in p.sources {
                assert!(documented(k), "{name}: source key {k} is not a field");
            }
        }
        assert!(MmuConfig::preset("zen9").is_none());
        // Spot checks against the sources.
        let spr = MmuConfig::spr();
        assert_eq!(spr.stlb.as_ref().unwrap().entries(), 2048);
        assert_eq!(spr.store_dtlb.as_ref().unwrap().entries(), 16);
        assert_eq!(MmuConfig::gnr().dtlb.arrays[0].entries(), 96);
        assert_eq!(MmuConfig::zen4().stlb.as_ref().unwrap().entries(), 3072);
        assert_eq!(MmuConfig::zen5().stlb.as_ref().unwrap().entries(), 4096);
        assert_eq!(MmuConfig::skylake_sp().stlb.as_ref().unwrap().arrays[0].entries(), 1536);
        assert_eq!(MmuConfig::champsim().stlb.as_ref().unwrap().entries(), 1536);
    }

    #[test]
    fn parse_overrides_and_reject() {
        let c: MmuConfig = toml::from_str(
            "cbit_pos = \"none\"\nwalk_ref_latency = 7\n[dtlb]\narrays = [{ sizes = [\"4K\"], sets = 16, ways = 4 }, { sizes = [\"2M\", \"1G\"], sets = 1, ways = 8 }]",
        )
        .unwrap();
        assert_eq!(c.cbit_pos, CbitSetting(None));
        assert_eq!(c.walk_ref_latency, Cycles::new(7));
        assert_eq!(c.dtlb.hit_latency, Cycles::ZERO);
        c.validate().unwrap();
        let c: MmuConfig = toml::from_str(
            "[stlb]\nhit_latency = 8\nreplacement = \"tree-plru\"\narrays = [{ sizes = [\"4K\", \"2M\"], sets = 128, ways = 12 }]\n[pwc]\npd = { sets = 4, ways = 8 }",
        )
        .unwrap();
        assert_eq!(c.stlb.as_ref().unwrap().replacement, Replacement::TreePlru);
        assert_eq!(c.pwc.pd, PwcLevelConfig::new(4, 8));
        c.validate().unwrap();
        assert!(toml::from_str::<MmuConfig>("cbit_pos = \"fifty\"").is_err());
        assert!(toml::from_str::<MmuConfig>("tlb_ways = 3").is_err());
        let bad = MmuConfig { phys_addr_bits: 60, ..MmuConfig::default() };
        assert!(bad.validate().is_err());
        let bad = MmuConfig { cbit_pos: CbitSetting(Some(5)), ..MmuConfig::default() };
        let e = bad.validate().unwrap_err();
        assert!(e.to_string().contains("mmu.cbit_pos"));
        let mut bad = MmuConfig::default();
        bad.dtlb.arrays[0].sets = 3;
        assert!(bad.validate().unwrap_err().to_string().contains("mmu.dtlb.arrays[0].sets"));
        let mut bad = MmuConfig::zen4();
        bad.pwc.pd.sets = 3;
        assert!(bad.validate().unwrap_err().to_string().contains("mmu.pwc.pd.sets"));
        let bad = MmuConfig { page_walkers: 0, ..MmuConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("mmu.page_walkers"));
        let mut bad = MmuConfig::default();
        bad.dtlb.replacement = Replacement::TreePlru; // 72 ways > 64
        assert!(bad.validate().is_err());
    }
}
