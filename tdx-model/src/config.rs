//! Configuration of the TDX module model (section `[tdx]`; STYLE rule 12).
//!
//! Every latency here is `Unsourced:`: spec/tdx.md §5.1 records that no primary cycle numbers
//! for SEAMCALLs, TDCALLs or TD transitions were found. Each default states its rationale, and
//! `ccsim presets` lists them.

use sim_core::Cycles;
use sim_core::config::{ConfigBlock, ConfigError, FieldDoc, Source, check_range};

/// Which memory-integrity mode the platform runs TDX with (spec/tdx.md §1.6 \[ENCL\]). The module
/// model itself does not use it; the machine uses it to decide what a host write to a TD-owned
/// line does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Integrity {
    /// Cryptographic integrity: TD-owner bit plus a 28-bit MAC per 64-byte line.
    Ci,
    /// Logical integrity: the TD-owner bit only.
    Li,
    /// TDX without integrity (MCHECK's `tdx_without_integrity`; plain AES-XTS keys, TDX module
    /// `helpers.c: program_mktme_keys`).
    None,
}

/// Default of [`TdxCosts::seamcall_round_trip`]. Unsourced (spec/tdx.md §5.1: no primary
/// numbers): the order of a VMX exit plus entry (~1–2 k cycles on recent Xeons) for SEAMCALL and
/// SEAMRET, plus the module's entry sanitisation (BHB drain, MSR saves).
pub const DEFAULT_SEAMCALL_ROUND_TRIP: u64 = 2_000;
/// Default of [`TdxCosts::sept_add`]. Unsourced: the walk and PAMT update plus a 4 KiB MOVDIR64B
/// fill of the new S-EPT page (64 direct 64-byte stores, ~1 k cycles at ~3 B/cycle).
pub const DEFAULT_SEPT_ADD: u64 = 1_500;
/// Default of [`TdxCosts::page_add`]. Unsourced: a 4 KiB MOVDIR64B copy plus one SHA-384 block
/// (128 bytes) of the measurement update.
pub const DEFAULT_PAGE_ADD: u64 = 3_000;
/// Default of [`TdxCosts::page_aug`]. Unsourced: a 4–5 level S-EPT walk, one PAMT walk and a
/// few locked updates; no page content is touched (the guest zeroes it on ACCEPT).
pub const DEFAULT_PAGE_AUG: u64 = 500;
/// Default of [`TdxCosts::range_block`]. Unsourced: a walk and one entry update.
pub const DEFAULT_RANGE_BLOCK: u64 = 400;
/// Default of [`TdxCosts::mem_track`]. Unsourced: one locked epoch increment.
pub const DEFAULT_MEM_TRACK: u64 = 200;
/// Default of [`TdxCosts::page_remove`]. Unsourced: a walk, a PAMT update and one entry write.
pub const DEFAULT_PAGE_REMOVE: u64 = 500;
/// Default of [`TdxCosts::sept_remove`]. Unsourced: a walk plus a scan of 512 entries.
pub const DEFAULT_SEPT_REMOVE: u64 = 1_000;
/// Default of [`TdxCosts::range_unblock`]. Unsourced: a walk and one entry update.
pub const DEFAULT_RANGE_UNBLOCK: u64 = 400;
/// Default of [`TdxCosts::page_demote`]. Unsourced: 512 entries written with MOVDIR64B plus the
/// PAMT split.
pub const DEFAULT_PAGE_DEMOTE: u64 = 2_000;
/// Default of [`TdxCosts::page_promote`]. Unsourced: 512 entry locks and compares plus the PAMT
/// merge.
pub const DEFAULT_PAGE_PROMOTE: u64 = 4_000;
/// Default of [`TdxCosts::page_relocate`]. Unsourced: a 4 KiB MOVDIR64B copy plus two PAMT
/// updates.
pub const DEFAULT_PAGE_RELOCATE: u64 = 2_000;
/// Default of [`TdxCosts::phymem_page_reclaim`]. Unsourced: a PAMT walk and update.
pub const DEFAULT_PHYMEM_PAGE_RECLAIM: u64 = 300;
/// Default of [`TdxCosts::phymem_page_wbinvd`]. Unsourced: 64 cache-line write-back-and-
/// invalidate operations on the keyed page.
pub const DEFAULT_PHYMEM_PAGE_WBINVD: u64 = 2_000;
/// Default of [`TdxCosts::mr_extend`]. Unsourced: three SHA-384 blocks (384 bytes) in software,
/// ~10–15 cycles per byte.
pub const DEFAULT_MR_EXTEND: u64 = 5_000;
/// Default of [`TdxCosts::lifecycle`]. Unsourced: lifecycle leaves initialise whole control pages
/// (TDR, TDCS, TDVPS, VMCS) and program keys; an order of magnitude above the memory leaves.
pub const DEFAULT_LIFECYCLE: u64 = 10_000;
/// Default of [`TdxCosts::tdcall_round_trip`]. Unsourced: a VM exit from the TD into the module
/// and the VM entry back, like a SEAMCALL round trip.
pub const DEFAULT_TDCALL_ROUND_TRIP: u64 = 2_000;
/// Default of [`TdxCosts::accept_4k`]. Unsourced: zeroing 4 KiB with MOVDIR64B (64 direct
/// 64-byte stores) at ~3 B/cycle of one core's store bandwidth.
pub const DEFAULT_ACCEPT_4K: u64 = 1_200;
/// Default of [`TdxCosts::td_exit`]. Unsourced: a VM exit plus the module's save of the TD's
/// state and restore of the VMM's (more than a plain VM exit).
pub const DEFAULT_TD_EXIT: u64 = 3_000;
/// Default of [`TdxCosts::td_entry`]. Unsourced: the VM entry plus the module's restore of the
/// TD's state and the TLB-tracking bookkeeping.
pub const DEFAULT_TD_ENTRY: u64 = 3_000;

/// Default of [`TdxConfig::max_pa`]: physical-address bits (the module's MAX_PA).
pub const DEFAULT_MAX_PA: u8 = 52;
/// Default of [`TdxConfig::hkid_bits`]. Unsourced: enough KeyID bits for the private range of
/// the kernel's example ("private KeyID range: [16, 64)", spec/tdx.md §1.4).
pub const DEFAULT_HKID_BITS: u8 = 6;
/// Default first private HKID (spec/tdx.md §1.4: the kernel's example range [16, 64)).
pub const DEFAULT_PRIVATE_HKID_MIN: u16 = 16;
/// Default last private HKID (spec/tdx.md §1.4: the kernel's example range [16, 64)).
pub const DEFAULT_PRIVATE_HKID_MAX: u16 = 63;
/// Default of [`TdxConfig::max_vcpus`]. A choice: the TD_PARAMS field is the VMM's.
pub const DEFAULT_MAX_VCPUS: u32 = 64;

/// Named cycle costs of the module's operations. A SEAMCALL costs `seamcall_round_trip` plus
/// its leaf's body; a TDCALL costs `tdcall_round_trip` plus its work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdxCosts {
    /// SEAMCALL + SEAMRET (cycles).
    pub seamcall_round_trip: Cycles,
    /// TDH.MEM.SEPT.ADD body (cycles).
    pub sept_add: Cycles,
    /// TDH.MEM.PAGE.ADD body (cycles).
    pub page_add: Cycles,
    /// TDH.MEM.PAGE.AUG body (cycles).
    pub page_aug: Cycles,
    /// TDH.MEM.RANGE.BLOCK body (cycles).
    pub range_block: Cycles,
    /// TDH.MEM.TRACK body (cycles).
    pub mem_track: Cycles,
    /// TDH.MEM.PAGE.REMOVE body (cycles).
    pub page_remove: Cycles,
    /// TDH.MEM.SEPT.REMOVE body (cycles).
    pub sept_remove: Cycles,
    /// TDH.MEM.RANGE.UNBLOCK body (cycles).
    pub range_unblock: Cycles,
    /// TDH.MEM.PAGE.DEMOTE body (cycles).
    pub page_demote: Cycles,
    /// TDH.MEM.PAGE.PROMOTE body (cycles).
    pub page_promote: Cycles,
    /// TDH.MEM.PAGE.RELOCATE body (cycles).
    pub page_relocate: Cycles,
    /// TDH.PHYMEM.PAGE.RECLAIM body (cycles).
    pub phymem_page_reclaim: Cycles,
    /// TDH.PHYMEM.PAGE.WBINVD body (cycles).
    pub phymem_page_wbinvd: Cycles,
    /// TDH.MR.EXTEND body, one 256-byte chunk (cycles).
    pub mr_extend: Cycles,
    /// Body of every lifecycle leaf (MNG.*, VP.*, MR.FINALIZE, CACHE.WB) (cycles).
    pub lifecycle: Cycles,
    /// TDCALL into the module and back (cycles).
    pub tdcall_round_trip: Cycles,
    /// Zeroing one 4 KiB page on TDG.MEM.PAGE.ACCEPT (cycles; a 2 MiB accept costs 512 ×).
    pub accept_4k: Cycles,
    /// A TD exit to the VMM (cycles).
    pub td_exit: Cycles,
    /// A TD entry by TDH.VP.ENTER (cycles, on top of the SEAMCALL round trip).
    pub td_entry: Cycles,
}

impl Default for TdxCosts {
    fn default() -> Self {
        TdxCosts {
            seamcall_round_trip: Cycles::new(DEFAULT_SEAMCALL_ROUND_TRIP),
            sept_add: Cycles::new(DEFAULT_SEPT_ADD),
            page_add: Cycles::new(DEFAULT_PAGE_ADD),
            page_aug: Cycles::new(DEFAULT_PAGE_AUG),
            range_block: Cycles::new(DEFAULT_RANGE_BLOCK),
            mem_track: Cycles::new(DEFAULT_MEM_TRACK),
            page_remove: Cycles::new(DEFAULT_PAGE_REMOVE),
            sept_remove: Cycles::new(DEFAULT_SEPT_REMOVE),
            range_unblock: Cycles::new(DEFAULT_RANGE_UNBLOCK),
            page_demote: Cycles::new(DEFAULT_PAGE_DEMOTE),
            page_promote: Cycles::new(DEFAULT_PAGE_PROMOTE),
            page_relocate: Cycles::new(DEFAULT_PAGE_RELOCATE),
            phymem_page_reclaim: Cycles::new(DEFAULT_PHYMEM_PAGE_RECLAIM),
            phymem_page_wbinvd: Cycles::new(DEFAULT_PHYMEM_PAGE_WBINVD),
            mr_extend: Cycles::new(DEFAULT_MR_EXTEND),
            lifecycle: Cycles::new(DEFAULT_LIFECYCLE),
            tdcall_round_trip: Cycles::new(DEFAULT_TDCALL_ROUND_TRIP),
            accept_4k: Cycles::new(DEFAULT_ACCEPT_4K),
            td_exit: Cycles::new(DEFAULT_TD_EXIT),
            td_entry: Cycles::new(DEFAULT_TD_ENTRY),
        }
    }
}

/// Configuration of the TDX module (section `[tdx]`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdxConfig {
    /// Guest-physical address width of TDs built by TDH.MNG.INIT: 48 (shared bit 47, 4-level
    /// S-EPT) or 52 (shared bit 51, 5-level S-EPT) (spec/tdx.md §1.1).
    pub gpaw: u8,
    /// Physical-address bits (the module's MAX_PA, MAXPHYADDR), KeyID bits included. A
    /// private GPA must have no bit at or above it (spec/tdx.md §1.1).
    pub max_pa: u8,
    /// Width of the KeyID (HKID) field: the top `hkid_bits` bits below `max_pa` of a keyed
    /// physical address (`pa | hkid << (max_pa - hkid_bits)`: Linux `mk_keyed_paddr` with
    /// `x86_phys_bits` reduced by the KeyID bits, spec/tdx.md §1.4; TDX module
    /// `get_hkid_from_pa`). Host pages given to the module must have these bits clear.
    pub hkid_bits: u8,
    /// First private HKID (TDX KeyIDs are `[private_hkid_min, private_hkid_max]`).
    pub private_hkid_min: u16,
    /// Last private HKID.
    pub private_hkid_max: u16,
    /// ATTRIBUTES.SEPT_VE_DISABLE of TDs built by TDH.MNG.INIT: a guest access to a PENDING page
    /// TD-exits (EEQ PENDING_EPT_VIOLATION) instead of raising #VE. KVM always sets it
    /// (spec/tdx.md §2.5, `KVM_SUPPORTED_TD_ATTRS`).
    pub sept_ve_disable: bool,
    /// TD_PARAMS.MAX_VCPUS of TDs built by TDH.MNG.INIT.
    pub max_vcpus: u32,
    /// The partial-write erratum: a partial (< 64 B) write to a private line poisons it
    /// (spec/tdx.md §1.6). Used by the machine, not by this crate.
    pub partial_write_erratum: bool,
    /// Integrity mode of TD keys (used by the machine).
    pub integrity: Integrity,
    /// Consecutive private EPT-violation exits of a vCPU at one GPA after which its next
    /// TDH.VP.ENTER runs the zero-step filter, taking the S-EPT tree lock EXCLUSIVE
    /// (`STEPPING_EPF_THRESHOLD`, spec/tdx.md §3.7); 0 disables it. Counted by the machine.
    pub zero_step_threshold: u32,
    /// Cycle costs.
    pub costs: TdxCosts,
}

impl Default for TdxConfig {
    fn default() -> Self {
        TdxConfig {
            gpaw: 48,
            max_pa: DEFAULT_MAX_PA,
            hkid_bits: DEFAULT_HKID_BITS,
            private_hkid_min: DEFAULT_PRIVATE_HKID_MIN,
            private_hkid_max: DEFAULT_PRIVATE_HKID_MAX,
            sept_ve_disable: true,
            max_vcpus: DEFAULT_MAX_VCPUS,
            partial_write_erratum: true,
            integrity: Integrity::Ci,
            zero_step_threshold: 6,
            costs: TdxCosts::default(),
        }
    }
}

const UNSOURCED_COST: &str =
    "spec/tdx.md §5.1: no primary SEAMCALL/TDCALL cycle numbers; see the DEFAULT_* constant";

macro_rules! cost_doc {
    ($key:literal, $doc:literal) => {
        FieldDoc { key: $key, unit: "cycles", doc: $doc, source: Source::Unsourced(UNSOURCED_COST) }
    };
}

impl ConfigBlock for TdxConfig {
    const SECTION: &'static str = "tdx";

    fn field_docs() -> &'static [FieldDoc] {
        &[
            FieldDoc {
                key: "gpaw",
                unit: "bits",
                doc: "TD guest-physical address width: 48 (shared bit 47, 4-level S-EPT) or 52 (bit 51, 5-level)",
                source: Source::Cited(
                    "spec/tdx.md §1.1; TDX module helpers.h get_gpa_shared_bit; KVM TDX_SHARED_BIT_PWL_4/5",
                ),
            },
            FieldDoc {
                key: "max_pa",
                unit: "bits",
                doc: "physical-address bits incl. KeyID bits (the module's MAX_PA)",
                source: Source::Choice,
            },
            FieldDoc {
                key: "hkid_bits",
                unit: "bits",
                doc: "width of the KeyID field (top bits below max_pa) of keyed physical addresses",
                source: Source::Unsourced(
                    "6 bits hold the kernel's example private KeyID range [16, 64) (spec/tdx.md §1.4)",
                ),
            },
            FieldDoc {
                key: "private_hkid_min",
                unit: "",
                doc: "first TDX private HKID",
                source: Source::Cited(
                    "spec/tdx.md §1.4: kernel example 'private KeyID range: [16, 64)'",
                ),
            },
            FieldDoc {
                key: "private_hkid_max",
                unit: "",
                doc: "last TDX private HKID",
                source: Source::Cited(
                    "spec/tdx.md §1.4: kernel example 'private KeyID range: [16, 64)'",
                ),
            },
            FieldDoc {
                key: "sept_ve_disable",
                unit: "",
                doc: "TD ATTRIBUTES.SEPT_VE_DISABLE: PENDING access TD-exits instead of #VE",
                source: Source::Cited(
                    "spec/tdx.md §2.5: KVM_SUPPORTED_TD_ATTRS = TDX_TD_ATTR_SEPT_VE_DISABLE",
                ),
            },
            FieldDoc {
                key: "max_vcpus",
                unit: "vCPUs",
                doc: "TD_PARAMS.MAX_VCPUS of TDs built by TDH.MNG.INIT",
                source: Source::Choice,
            },
            FieldDoc {
                key: "partial_write_erratum",
                unit: "",
                doc: "partial writes to private lines poison them (used by the machine)",
                source: Source::Cited("spec/tdx.md §1.6 [LNX-doc 'Erratum']"),
            },
            FieldDoc {
                key: "integrity",
                unit: "",
                doc: "ci | li | none (used by the machine)",
                source: Source::Cited("spec/tdx.md §1.6 [ENCL]"),
            },
            FieldDoc {
                key: "zero_step_threshold",
                unit: "exits",
                doc: "same-GPA EPT-violation exits before VP.ENTER runs the zero-step filter (S-EPT tree lock EXCLUSIVE); 0 = off",
                source: Source::Cited("spec/tdx.md §3.7: STEPPING_EPF_THRESHOLD = 6 [MOD-0step]"),
            },
            cost_doc!("costs.seamcall_round_trip", "SEAMCALL + SEAMRET"),
            cost_doc!("costs.sept_add", "TDH.MEM.SEPT.ADD body"),
            cost_doc!("costs.page_add", "TDH.MEM.PAGE.ADD body"),
            cost_doc!("costs.page_aug", "TDH.MEM.PAGE.AUG body"),
            cost_doc!("costs.range_block", "TDH.MEM.RANGE.BLOCK body"),
            cost_doc!("costs.mem_track", "TDH.MEM.TRACK body"),
            cost_doc!("costs.page_remove", "TDH.MEM.PAGE.REMOVE body"),
            cost_doc!("costs.sept_remove", "TDH.MEM.SEPT.REMOVE body"),
            cost_doc!("costs.range_unblock", "TDH.MEM.RANGE.UNBLOCK body"),
            cost_doc!("costs.page_demote", "TDH.MEM.PAGE.DEMOTE body"),
            cost_doc!("costs.page_promote", "TDH.MEM.PAGE.PROMOTE body"),
            cost_doc!("costs.page_relocate", "TDH.MEM.PAGE.RELOCATE body"),
            cost_doc!("costs.phymem_page_reclaim", "TDH.PHYMEM.PAGE.RECLAIM body"),
            cost_doc!("costs.phymem_page_wbinvd", "TDH.PHYMEM.PAGE.WBINVD body"),
            cost_doc!("costs.mr_extend", "TDH.MR.EXTEND body (one 256-byte chunk)"),
            cost_doc!("costs.lifecycle", "body of each lifecycle leaf"),
            cost_doc!("costs.tdcall_round_trip", "TDCALL into the module and back"),
            cost_doc!("costs.accept_4k", "zeroing one 4 KiB page on ACCEPT"),
            cost_doc!("costs.td_exit", "TD exit to the VMM"),
            cost_doc!("costs.td_entry", "TD entry by TDH.VP.ENTER"),
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.gpaw, 48 | 52) {
            return Err(ConfigError::OutOfRange {
                key: "tdx.gpaw".into(),
                value: self.gpaw.to_string(),
                why: "must be 48 or 52".into(),
            });
        }
        check_range("tdx.max_pa", self.max_pa, 36, 52)?;
        check_range("tdx.hkid_bits", self.hkid_bits, 1, 11)?;
        check_range("tdx.max_pa - tdx.hkid_bits", self.max_pa - self.hkid_bits, 32, 51)?;
        let hkids = 1u32 << self.hkid_bits;
        check_range("tdx.private_hkid_min", u32::from(self.private_hkid_min), 1, hkids - 1)?;
        check_range(
            "tdx.private_hkid_max",
            u32::from(self.private_hkid_max),
            u32::from(self.private_hkid_min),
            hkids - 1,
        )?;
        check_range("tdx.max_vcpus", self.max_vcpus, 1, 0xffff)?;
        Ok(())
    }
}

impl TdxConfig {
    /// The bit position of the KeyID field.
    pub(crate) fn hkid_shift(&self) -> u8 {
        self.max_pa.saturating_sub(self.hkid_bits)
    }

    /// Mask of the KeyID field of a keyed physical address.
    pub(crate) fn hkid_mask(&self) -> u64 {
        ((1u64 << self.hkid_bits) - 1) << self.hkid_shift()
    }

    /// The KeyID of a keyed physical address.
    pub(crate) fn hkid_of(&self, pa: u64) -> u64 {
        (pa & self.hkid_mask()) >> self.hkid_shift()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_document_every_field() {
        let c = TdxConfig::default();
        c.validate().unwrap();
        assert_eq!(TdxConfig::SECTION, "tdx");
        // One doc per top-level field except `costs`, plus one per cost field.
        assert_eq!(TdxConfig::field_docs().len(), 10 + 20);
        assert_eq!(c.hkid_mask(), 0x3f << 46);
        assert_eq!(c.hkid_of(0x1000 | (16 << 46)), 16);
        let bad = TdxConfig { gpaw: 50, ..TdxConfig::default() };
        assert!(bad.validate().is_err());
        let bad = TdxConfig { private_hkid_max: 64, ..TdxConfig::default() };
        assert!(bad.validate().is_err());
    }
}
