//! RMP configuration (section `[rmp]`; STYLE rule 12).

use sim_core::Cycles;
use sim_core::config::{ConfigBlock, ConfigError, FieldDoc, Source, check_range};

/// What an RMP update does to the TLBs (spec/snp.md §3.2: Linux issues no flush after RMPUPDATE
/// or PSMASH, so the hardware must keep RMP-derived TLB state coherent by itself; the exact
/// mechanism is UNCONFIRMED). rmp-model only exposes the choice; the engine applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlbOnRmpUpdate {
    /// Every RMPUPDATE and PSMASH flushes every TLB of every CPU, global entries included,
    /// costing [`RmpConfig::global_flush_latency`] on the executing CPU (Bagia et al., "A Close
    /// Look at RMP Entry Caching and Its Security Implications in SEV-SNP", handle
    /// 1721.1/164204, as cited in spec/simulators.md §1.1: "every RMP update triggers a global
    /// TLB flush").
    GlobalFlush,
    /// Hardware keeps TLBs coherent with the RMP at no charged cost and no flush.
    Coherent,
}

/// Whether the nested walk's reads of the NPT (host memory) are RMP-checked during an SNP
/// guest's 2-D walk. The APM's Table 15-39 names page-table accesses only on the host and
/// non-SNP-guest rows, and spec/snp.md §7 item 3 lists the question as open; both readings are
/// offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NestedTableCheck {
    /// Not checked: only the guest's own table references and the data access are (up to 5
    /// RMP entry reads for a 4-level guest walk, spec/snp.md §5).
    None,
    /// Checked as hypervisor page-table accesses (Hypervisor-Owned at 4 KiB), one RMP entry
    /// read per nested reference.
    HypervisorOwned,
}

/// What makes RMPUPDATE return FAIL_OVERLAP (4). Only "4K/2M overlap detected" is documented
/// (Microsoft's `__rmpupdate` page; spec/snp.md §3.2, §7 item 4); both readings are offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverlapRule {
    /// Both directions: a 2 MiB update while another page of the region has an assigned
    /// 4 KiB entry, and a 4 KiB update of a page inside an assigned 2 MiB entry.
    BothWays,
    /// Only the first: a 2 MiB update over assigned 4 KiB entries. A 4 KiB update inside an
    /// assigned 2 MiB entry succeeds and writes the 4 KiB entry, which stays shadowed by the
    /// 2 MiB entry (the authoritative one, §1.4) until that is PSMASHed or unassigned.
    TwoMegOnly,
}

/// Default of [`RmpConfig::rmp_lookup_latency`], cycles.
pub const DEFAULT_RMP_LOOKUP_LATENCY: u64 = 0;
/// Default of [`RmpConfig::global_flush_latency`], cycles.
pub const DEFAULT_GLOBAL_FLUSH_LATENCY: u64 = 0;
/// Default of [`RmpConfig::rmpupdate_latency`], cycles.
pub const DEFAULT_RMPUPDATE_LATENCY: u64 = 1000;
/// Default of [`RmpConfig::psmash_latency`], cycles.
pub const DEFAULT_PSMASH_LATENCY: u64 = 1000;
/// Default of [`RmpConfig::fw_command_latency`], cycles.
pub const DEFAULT_FW_COMMAND_LATENCY: u64 = 30_000;
/// Default of [`RmpConfig::pvalidate_latency`] and [`RmpConfig::rmpadjust_latency`], cycles.
pub const DEFAULT_GUEST_RMP_INSTR_LATENCY: u64 = 1000;

/// Configuration of the RMP block.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmpConfig {
    /// Fixed cost of one RMP check, in cycles, on top of the RMP entry read (which is priced by
    /// the cache-latency model). Unsourced: spec/snp.md §5 finds no published RMP-check cost;
    /// with the entry fetch charged separately, the default adds nothing.
    pub rmp_lookup_latency: Cycles,
    /// TLB behaviour on RMPUPDATE/PSMASH.
    pub tlb_on_update: TlbOnRmpUpdate,
    /// Cycles charged to the executing CPU for the global flush of
    /// [`TlbOnRmpUpdate::GlobalFlush`]. Unsourced: no public measurement; the misses that
    /// follow the flush are charged by the TLB model, so the default charges the flush itself
    /// nothing.
    pub global_flush_latency: Cycles,
    /// Cycles of one RMPUPDATE. Unsourced (spec/snp.md §5: no published latency): placeholder
    /// order of magnitude for a microcoded, serialising instruction that reads and writes one
    /// 16-byte entry and may lock a 2 MiB range.
    pub rmpupdate_latency: Cycles,
    /// Cycles of one PSMASH. Unsourced (spec/snp.md §5): placeholder equal to RMPUPDATE's,
    /// although PSMASH writes 512 entries.
    pub psmash_latency: Cycles,
    /// Cycles of one PVALIDATE. Unsourced (spec/snp.md §5): placeholder equal to RMPUPDATE's.
    pub pvalidate_latency: Cycles,
    /// Cycles of one RMPADJUST. Unsourced (spec/snp.md §5): placeholder equal to RMPUPDATE's.
    pub rmpadjust_latency: Cycles,
    /// Whether NPT reads of an SNP guest's 2-D walk are RMP-checked (spec/snp.md §7 item 3).
    pub nested_table_check: NestedTableCheck,
    /// What triggers RMPUPDATE's FAIL_OVERLAP (spec/snp.md §7 item 4).
    pub overlap_rule: OverlapRule,
    /// Lay the RMP out as a segmented RMP (RMP_CFG bit 0; spec/snp.md §1.5): a segment table
    /// (RST) after the bookkeeping area, each segment's entries 1 MiB-aligned after it, covering
    /// memory rounded up to 1 GiB. `false`: the contiguous RMP of §1.3.
    pub segmented: bool,
    /// log2 of the memory one segment covers (RMP_CFG bits 13:8; Linux's example: 36, 64 GiB).
    /// Checked against 30..=52 (the real bounds come from CPUID 8000_0025, which the model
    /// does not have).
    pub segment_shift: u32,
    /// Cycles the host CPU waits for one SNP firmware command (per page for page commands).
    /// Unsourced (spec/snp.md §5: no published figure): a mailbox round trip to the AMD-SP,
    /// about 10 µs at 3 GHz.
    pub fw_command_latency: Cycles,
}

impl Default for RmpConfig {
    fn default() -> Self {
        RmpConfig {
            rmp_lookup_latency: Cycles::new(DEFAULT_RMP_LOOKUP_LATENCY),
            tlb_on_update: TlbOnRmpUpdate::GlobalFlush,
            global_flush_latency: Cycles::new(DEFAULT_GLOBAL_FLUSH_LATENCY),
            rmpupdate_latency: Cycles::new(DEFAULT_RMPUPDATE_LATENCY),
            psmash_latency: Cycles::new(DEFAULT_PSMASH_LATENCY),
            pvalidate_latency: Cycles::new(DEFAULT_GUEST_RMP_INSTR_LATENCY),
            rmpadjust_latency: Cycles::new(DEFAULT_GUEST_RMP_INSTR_LATENCY),
            nested_table_check: NestedTableCheck::None,
            fw_command_latency: Cycles::new(DEFAULT_FW_COMMAND_LATENCY),
            overlap_rule: OverlapRule::BothWays,
            segmented: false,
            segment_shift: 36,
        }
    }
}

/// Upper bound accepted for any latency field (cycles): a sanity limit against unit mistakes.
const MAX_LATENCY: u64 = 100_000_000;

impl ConfigBlock for RmpConfig {
    const SECTION: &'static str = "rmp";

    fn field_docs() -> &'static [FieldDoc] {
        &[
            FieldDoc {
                key: "rmp_lookup_latency",
                unit: "cycles",
                doc: "fixed cost of one RMP check on top of the RMP entry read (priced by the cache model)",
                source: Source::Unsourced(
                    "no published RMP-check cost (spec/snp.md §5); the entry fetch is charged separately, so 0",
                ),
            },
            FieldDoc {
                key: "tlb_on_update",
                unit: "",
                doc: "TLB effect of RMPUPDATE/PSMASH: global-flush | coherent",
                source: Source::Cited(
                    "Bagia et al., \"A Close Look at RMP Entry Caching and Its Security Implications in SEV-SNP\" (handle 1721.1/164204), via spec/simulators.md §1.1: every RMP update triggers a global TLB flush",
                ),
            },
            FieldDoc {
                key: "global_flush_latency",
                unit: "cycles",
                doc: "cost of the global flush of tlb_on_update = global-flush, to the executing CPU",
                source: Source::Unsourced(
                    "no public measurement; refill misses are charged by the TLB model, so 0",
                ),
            },
            FieldDoc {
                key: "rmpupdate_latency",
                unit: "cycles",
                doc: "latency of one RMPUPDATE",
                source: Source::Unsourced(
                    "no published latency (spec/snp.md §5); placeholder magnitude for a microcoded serialising instruction",
                ),
            },
            FieldDoc {
                key: "psmash_latency",
                unit: "cycles",
                doc: "latency of one PSMASH",
                source: Source::Unsourced(
                    "no published latency (spec/snp.md §5); placeholder equal to rmpupdate_latency",
                ),
            },
            FieldDoc {
                key: "pvalidate_latency",
                unit: "cycles",
                doc: "latency of one PVALIDATE",
                source: Source::Unsourced(
                    "no published latency (spec/snp.md §5); placeholder equal to rmpupdate_latency",
                ),
            },
            FieldDoc {
                key: "rmpadjust_latency",
                unit: "cycles",
                doc: "latency of one RMPADJUST",
                source: Source::Unsourced(
                    "no published latency (spec/snp.md §5); placeholder equal to rmpupdate_latency",
                ),
            },
            FieldDoc {
                key: "overlap_rule",
                unit: "",
                doc: "what makes RMPUPDATE return FAIL_OVERLAP: both-ways (2M over assigned 4K, and 4K inside an assigned 2M) | two-meg-only",
                source: Source::Choice,
            },
            FieldDoc {
                key: "segmented",
                unit: "",
                doc: "segmented RMP (RST + per-segment tables) instead of the contiguous one",
                source: Source::Cited(
                    "Linux Documentation/arch/x86/amd-memory-encryption.rst \"Segmented RMP\" (spec/snp.md §1.5)",
                ),
            },
            FieldDoc {
                key: "segment_shift",
                unit: "log2 bytes",
                doc: "memory covered by one RMP segment (RMP_CFG bits 13:8)",
                source: Source::Cited(
                    "Linux Documentation/arch/x86/amd-memory-encryption.rst example RMP_CFG 0x2401: shift 36 (spec/snp.md §1.5)",
                ),
            },
            FieldDoc {
                key: "fw_command_latency",
                unit: "cycles",
                doc: "host wait for one SNP firmware command (per page for page commands)",
                source: Source::Unsourced(
                    "no published figure (spec/snp.md §5); a mailbox round trip to the AMD-SP, ~10 µs at 3 GHz",
                ),
            },
            FieldDoc {
                key: "nested_table_check",
                unit: "",
                doc: "RMP check of NPT reads during an SNP guest's 2-D walk: none | hypervisor-owned",
                source: Source::Choice,
            },
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let s = Self::SECTION;
        check_range(|| format!("{s}.segment_shift"), u64::from(self.segment_shift), 30, 52)?;
        for (k, v) in [
            ("rmp_lookup_latency", self.rmp_lookup_latency),
            ("global_flush_latency", self.global_flush_latency),
            ("rmpupdate_latency", self.rmpupdate_latency),
            ("psmash_latency", self.psmash_latency),
            ("pvalidate_latency", self.pvalidate_latency),
            ("rmpadjust_latency", self.rmpadjust_latency),
            ("fw_command_latency", self.fw_command_latency),
        ] {
            check_range(|| format!("{s}.{k}"), v.get(), 0, MAX_LATENCY)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_documented_and_valid() {
        let c = RmpConfig::default();
        c.validate().unwrap();
        let t = toml::to_string(&c).unwrap();
        for d in RmpConfig::field_docs() {
            assert!(t.contains(d.key), "{} undocumented or missing", d.key);
        }
        assert_eq!(t.matches(" = ").count(), RmpConfig::field_docs().len());
        assert!(t.contains("tlb_on_update = \"global-flush\""));
    }

    #[test]
    fn parse_and_reject() {
        let c: RmpConfig =
            toml::from_str("tlb_on_update = \"coherent\"\nrmp_lookup_latency = 7").unwrap();
        assert_eq!(c.tlb_on_update, TlbOnRmpUpdate::Coherent);
        assert_eq!(c.rmp_lookup_latency, Cycles::new(7));
        assert!(toml::from_str::<RmpConfig>("bogus = 1").is_err());
        let bad =
            RmpConfig { psmash_latency: Cycles::new(MAX_LATENCY + 1), ..RmpConfig::default() };
        assert!(bad.validate().is_err());
    }
}
