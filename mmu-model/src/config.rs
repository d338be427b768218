//! MMU configuration (section `[mmu]`; STYLE rule 12).

use crate::pte::{CbitPos, PteFormat};
use crate::tlb::{TlbArrayConfig, TlbConfig};
use sim_core::config::{ConfigBlock, ConfigError, FieldDoc, Source, check_range};
use sim_core::{Cycles, PageSize};

/// Default of [`MmuConfig::tlb_hit_latency`], cycles.
pub const DEFAULT_TLB_HIT_LATENCY: u64 = 0;
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

/// Configuration of one CPU's MMU: DTLB geometry, latencies, entry format, check-cache policy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MmuConfig {
    /// Cycles every access pays for the DTLB lookup (hit or miss). Unsourced: the L1 DTLB is
    /// looked up in parallel with the virtually-indexed L1D access, so a hit adds nothing
    /// beyond the load-to-use latency the engine charges for the access itself.
    pub tlb_hit_latency: Cycles,
    /// Cycles per memory reference of a walk and per check-stage read (RMP entry), in the flat
    /// cache-latency model. Unsourced: a placeholder for "the entry mostly hits in the L2
    /// cache"; replaced by the cache-hierarchy model when it exists.
    pub walk_ref_latency: Cycles,
    /// Whether a write hitting a TLB entry that a read filled runs the write check first
    /// (spec/snp.md §2.4 model suggestion; hardware behaviour UNCONFIRMED). `false`: the
    /// read's fill result is trusted for writes.
    pub recheck_write_on_read_fill: bool,
    /// C-bit position (`CPUID 8000_001F EBX[5:0]`, AMD APM Vol. 2 §15.34.1), or `"none"`.
    pub cbit_pos: CbitSetting,
    /// MAXPHYADDR.
    pub phys_addr_bits: u8,
    /// DTLB geometry.
    pub dtlb: TlbConfig,
}

impl Default for MmuConfig {
    fn default() -> Self {
        MmuConfig {
            tlb_hit_latency: Cycles::new(DEFAULT_TLB_HIT_LATENCY),
            walk_ref_latency: Cycles::new(DEFAULT_WALK_REF_LATENCY),
            recheck_write_on_read_fill: DEFAULT_RECHECK_WRITE_ON_READ_FILL,
            cbit_pos: CbitSetting(Some(DEFAULT_CBIT_POS)),
            phys_addr_bits: DEFAULT_PHYS_ADDR_BITS,
            dtlb: TlbConfig {
                arrays: vec![TlbArrayConfig {
                    sizes: PageSize::ALL.to_vec(),
                    sets: 1,
                    ways: DEFAULT_DTLB_ENTRIES,
                }],
            },
        }
    }
}

impl MmuConfig {
    /// The entry format this configuration describes.
    pub const fn pte_format(&self) -> PteFormat {
        PteFormat { phys_bits: self.phys_addr_bits, cbit: CbitPos(self.cbit_pos.0) }
    }
}

/// Upper bound accepted for latency fields (cycles): a sanity limit against unit mistakes.
const MAX_LATENCY: u64 = 1_000_000;

impl ConfigBlock for MmuConfig {
    const SECTION: &'static str = "mmu";

    fn field_docs() -> &'static [FieldDoc] {
        &[
            FieldDoc {
                key: "tlb_hit_latency",
                unit: "cycles",
                doc: "cost of the DTLB lookup, paid by every access",
                source: Source::Unsourced(
                    "the L1 DTLB lookup overlaps the VIPT L1D access, so a hit adds nothing beyond the access's own latency",
                ),
            },
            FieldDoc {
                key: "walk_ref_latency",
                unit: "cycles",
                doc: "cost of one walk reference or check-stage read (RMP entry) in the flat cache model",
                source: Source::Unsourced(
                    "placeholder for an entry that mostly hits in L2; to be replaced by the cache-hierarchy model",
                ),
            },
            FieldDoc {
                key: "recheck_write_on_read_fill",
                unit: "",
                doc: "a write hitting a read-filled TLB entry runs the write check first",
                source: Source::Unsourced(
                    "hardware behaviour UNCONFIRMED; spec/snp.md §2.4 suggests re-checking, so true",
                ),
            },
            FieldDoc {
                key: "cbit_pos",
                unit: "bit",
                doc: "SEV C-bit position in page-table entries, or \"none\"",
                source: Source::Cited(
                    "CPUID 8000_001F EBX[5:0], AMD APM Vol. 2 §15.34.1; default 51 as on SNP-capable EPYC parts (value not re-checked against a PPR here)",
                ),
            },
            FieldDoc {
                key: "phys_addr_bits",
                unit: "bits",
                doc: "MAXPHYADDR: entry address bits at and above it are reserved (C-bit excepted)",
                source: Source::Cited(
                    "x86-64 architectural maximum of 52 (Intel SDM Vol. 3A §4.1.4; AMD APM Vol. 2 §5.3.3)",
                ),
            },
            FieldDoc {
                key: "dtlb.arrays",
                unit: "sets × ways per array",
                doc: "DTLB arrays: page sizes held, sets, ways; sizes with no array are smashed to a smaller size",
                source: Source::Cited(
                    "Zen 4 L1 DTLB: 72 entries, fully associative, all page sizes (AMD pub. 57647 as quoted in spec/physmap.md H17/§5, evidence [E])",
                ),
            },
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = Self::SECTION;
        check_range(&format!("{s}.tlb_hit_latency"), self.tlb_hit_latency.get(), 0, MAX_LATENCY)?;
        check_range(&format!("{s}.walk_ref_latency"), self.walk_ref_latency.get(), 0, MAX_LATENCY)?;
        check_range(&format!("{s}.phys_addr_bits"), self.phys_addr_bits, 32, 52)?;
        if let Some(b) = self.cbit_pos.0 {
            check_range(&format!("{s}.cbit_pos"), b, 12, 51)?;
        }
        self.dtlb.validate(&format!("{s}.dtlb"))
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
            assert!(t.contains(top), "{} missing from {t}", d.key);
        }
        let back: MmuConfig = toml::from_str(&t).unwrap();
        assert_eq!(back, c);
        assert_eq!(c.pte_format(), PteFormat::default());
    }

    #[test]
    fn parse_overrides_and_reject() {
        let c: MmuConfig = toml::from_str(
            "cbit_pos = \"none\"\nwalk_ref_latency = 7\n[dtlb]\narrays = [{ sizes = [\"4K\"], sets = 16, ways = 4 }, { sizes = [\"2M\", \"1G\"], sets = 1, ways = 8 }]",
        )
        .unwrap();
        assert_eq!(c.cbit_pos, CbitSetting(None));
        assert_eq!(c.walk_ref_latency, Cycles::new(7));
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
    }
}
