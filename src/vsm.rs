//! Hyper-V VSM in KVM (issue #9; spec/tdx.md §4.3, spec/physmap.md §4 and H16): the `[vsm]`
//! configuration, and the functional state of per-VTL memory protections — an attribute layer
//! per (VM, VTL) with per-2M uniformity, and the memslot layout of the address-space-per-VTL
//! design. What the machine does with them (stage-2 fault-in and zaps, the three update designs'
//! costs, RMPADJUST on SNP) is in `machine/vsm.rs`.
//!
//! Representation choices:
//! - **Attributes are stored sparsely by 2M region**: a region whose pages all have the default
//!   VTL protections (RWX, what a VTL has before a higher VTL restricts it) has no entry; a
//!   region with a restricted page has a dense array of its 512 pages' protections. A Windows
//!   boot restricts a few percent of guest memory, so the map is small where a dense array of
//!   a multi-GiB guest is not, and a change's run of consecutive pages costs one map search per
//!   region rather than one per page.
//! - **Per 2M region, the number of pages that are not default** is kept with its array, so
//!   that "is this 2M region uniform?" (KVM's `KVM_LPAGE_MIXED_FLAG`,
//!   `hugepage_has_attrs`) is O(1) for the common cases (0 or 512 restricted pages) and a scan
//!   of 512 entries otherwise.

use serde::{Deserialize, Serialize};
use sim_core::Cycles;
use sim_core::config::{ConfigBlock, ConfigError, FieldDoc, Source};
use std::collections::BTreeMap;

/// The most VTLs a partition can have (the TLFS's VTL field is 4 bits; HV_NUM_VTLS is 16).
pub const MAX_VTLS: u8 = 16;

/// VTL protection bits of `HV_MAP_GPA_FLAGS` as `vsm-protect mask=` carries them (TLFS: bit 0
/// readable, 1 writable, 2 kernel-executable, 3 user-executable).
pub mod prot {
    /// Readable.
    pub const READ: u8 = 1 << 0;
    /// Writable.
    pub const WRITE: u8 = 1 << 1;
    /// Executable in kernel mode.
    pub const EXEC_KERNEL: u8 = 1 << 2;
    /// Executable in user mode.
    pub const EXEC_USER: u8 = 1 << 3;
    /// Every bit the model knows: what a VTL has before any restriction.
    pub const ALL: u8 = READ | WRITE | EXEC_KERNEL | EXEC_USER;
}

/// Translate VTL protections to an SNP VMPL permission mask (APM Vol. 2 Table 15-36: bit 0
/// read, 1 write, 2 execute at CPL 3, 3 execute at CPL < 3). Write without read is illegal in a
/// VMPL mask (data accesses fault), so it is passed as is: the RMP then denies, as hardware
/// would.
pub const fn vmpl_mask(p: u8) -> u8 {
    let mut m = 0;
    if p & prot::READ != 0 {
        m |= 1;
    }
    if p & prot::WRITE != 0 {
        m |= 1 << 1;
    }
    if p & prot::EXEC_USER != 0 {
        m |= 1 << 2;
    }
    if p & prot::EXEC_KERNEL != 0 {
        m |= 1 << 3;
    }
    m
}

/// How KVM turns a VTL protection change into stage-2 state (spec/physmap.md §4; spec/tdx.md
/// §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VsmDesign {
    /// A KVM address space per VTL, protections expressed by that address space's memslots
    /// (Sean Christopherson's "duplicating memslots" suggestion, the RFC review of 2023-11): a
    /// change deletes the memslots it overlaps and creates their replacements, each a
    /// `KVM_SET_USER_MEMORY_REGION` with its SRCU synchronisation; a deleted slot's stage-2
    /// mappings are zapped whole (`kvm_arch_flush_shadow_memslot`) and the VM's TLBs flushed.
    AddressSpacePerVtl,
    /// Attribute arrays per VTL in a "VTL KVM device", VTL bits in the MMU role (the rejected
    /// RFC of 2023-11-08, patches 14-31): the affected range is zapped in that VTL's roots and
    /// the VM's TLBs (every VTL's: one VM, one ASID) flushed.
    AttrArrays,
    /// A KVM VM per VTL with RWX memory attributes (the 2024-06-09 series): the change is
    /// KVM_SET_MEMORY_ATTRIBUTES on the lower VTL's VM; only that VM's range is zapped and only
    /// its TLB entries flushed.
    VmPerVtl,
}

impl VsmDesign {
    /// Every design, for sweeps and listings.
    pub const ALL: [VsmDesign; 3] =
        [VsmDesign::AddressSpacePerVtl, VsmDesign::AttrArrays, VsmDesign::VmPerVtl];

    /// The configuration name.
    pub const fn name(self) -> &'static str {
        match self {
            VsmDesign::AddressSpacePerVtl => "address-space-per-vtl",
            VsmDesign::AttrArrays => "attr-arrays",
            VsmDesign::VmPerVtl => "vm-per-vtl",
        }
    }
}

impl std::str::FromStr for VsmDesign {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        VsmDesign::ALL.into_iter().find(|d| d.name() == s).ok_or_else(|| {
            format!(
                "unknown VSM design `{s}` (known: {})",
                VsmDesign::ALL.map(VsmDesign::name).join(", ")
            )
        })
    }
}

/// `[vsm]`: per-VTL memory protections and what each update design costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VsmConfig {
    /// How protection changes reach stage 2.
    pub design: VsmDesign,
    /// Re-promotion: when a change makes a 2M region uniform again, zap its table of 4K
    /// mappings so that the next fault maps it at 2M. Off: the region stays at 4K until
    /// something else zaps it (KVM clears the mixed flag but does not re-map by itself).
    pub repromote: bool,
    /// The VMPL each VTL runs at on SNP, by VTL number (index 0 = VTL0). Default: Microsoft's
    /// OpenHCL paravisor, VTL2 → VMPL0, VTL1 → VMPL1, VTL0 → VMPL2. VTL protections become
    /// RMPADJUSTs of the target VTL's VMPL, issued at the VMPL of the most privileged VTL.
    pub vtl_vmpl: Vec<u8>,
    /// Back VMM (shared, non-guest_memfd) memory of VSM guests with 2M THPs, so that stage 2
    /// can map it at 2M (QEMU backs guest RAM with THP-eligible anonymous memory).
    pub vmm_thp: bool,
    /// Sample the stage-2 4K/2M mapping counts every this many protection changes.
    pub series_every: u64,
    /// The VTL's hypercall exit and KVM's decode of one HvCallModifyVtlProtectionMask rep call,
    /// and the re-entry.
    pub hypercall_cost: Cycles,
    /// Forwarding the hypercall to the VMM and back (VTL hypercalls go to user space in the
    /// RFC and in the 2024 series).
    pub vmm_exit_cost: Cycles,
    /// (address-space-per-vtl) One `KVM_SET_USER_MEMORY_REGION`: building and installing the
    /// new memslot set, excluding the SRCU wait and the zap.
    pub memslot_op_cost: Cycles,
    /// (address-space-per-vtl) `synchronize_srcu_expedited` after each memslot update, waiting
    /// out vCPUs that read the old memslot set.
    pub srcu_sync_cost: Cycles,
    /// (attr-arrays, vm-per-vtl) Fixed cost of one attribute update: the ioctl or device call,
    /// `mmu_invalidate_begin/end`, the MMU lock.
    pub attr_call_cost: Cycles,
    /// (attr-arrays, vm-per-vtl) Storing one page's attribute (an `xa_store`).
    pub attr_page_cost: Cycles,
    /// (attr-arrays, vm-per-vtl) Recomputing one 2M region's mixed state
    /// (`kvm_update_lpage_private_shared_mixed` / `hugepage_set_mixed`).
    pub lpage_update_cost: Cycles,
    /// Zapping one stage-2 leaf (clearing the SPTE, the rmap/accessed bookkeeping).
    pub zap_leaf_cost: Cycles,
    /// `kvm_flush_remote_tlbs` after a zap: the request on every vCPU and the kick.
    pub remote_flush_cost: Cycles,
    /// A stage-2 fault-in by the VSM path (KVM's fault handler besides the exit itself, which is
    /// `host.vmexit_cost`).
    pub fault_in_cost: Cycles,
}

/// Default `hypercall_cost`.
pub const DEFAULT_HYPERCALL_COST: Cycles = Cycles::new(2_000);
/// Default `vmm_exit_cost`.
pub const DEFAULT_VMM_EXIT_COST: Cycles = Cycles::new(15_000);
/// Default `memslot_op_cost`.
pub const DEFAULT_MEMSLOT_OP_COST: Cycles = Cycles::new(30_000);
/// Default `srcu_sync_cost`.
pub const DEFAULT_SRCU_SYNC_COST: Cycles = Cycles::new(150_000);
/// Default `attr_call_cost`.
pub const DEFAULT_ATTR_CALL_COST: Cycles = Cycles::new(3_000);
/// Default `attr_page_cost`.
pub const DEFAULT_ATTR_PAGE_COST: Cycles = Cycles::new(200);
/// Default `lpage_update_cost`.
pub const DEFAULT_LPAGE_UPDATE_COST: Cycles = Cycles::new(300);
/// Default `zap_leaf_cost`.
pub const DEFAULT_ZAP_LEAF_COST: Cycles = Cycles::new(100);
/// Default `remote_flush_cost`.
pub const DEFAULT_REMOTE_FLUSH_COST: Cycles = Cycles::new(3_000);
/// Default `fault_in_cost`.
pub const DEFAULT_FAULT_IN_COST: Cycles = Cycles::new(1_000);
/// Default `series_every`.
pub const DEFAULT_SERIES_EVERY: u64 = 1_000;
/// The OpenHCL VTL → VMPL map.
pub const OPENHCL_VTL_VMPL: [u8; 3] = [2, 1, 0];

impl Default for VsmConfig {
    fn default() -> Self {
        VsmConfig {
            design: VsmDesign::VmPerVtl,
            repromote: false,
            vtl_vmpl: OPENHCL_VTL_VMPL.to_vec(),
            vmm_thp: true,
            series_every: DEFAULT_SERIES_EVERY,
            hypercall_cost: DEFAULT_HYPERCALL_COST,
            vmm_exit_cost: DEFAULT_VMM_EXIT_COST,
            memslot_op_cost: DEFAULT_MEMSLOT_OP_COST,
            srcu_sync_cost: DEFAULT_SRCU_SYNC_COST,
            attr_call_cost: DEFAULT_ATTR_CALL_COST,
            attr_page_cost: DEFAULT_ATTR_PAGE_COST,
            lpage_update_cost: DEFAULT_LPAGE_UPDATE_COST,
            zap_leaf_cost: DEFAULT_ZAP_LEAF_COST,
            remote_flush_cost: DEFAULT_REMOTE_FLUSH_COST,
            fault_in_cost: DEFAULT_FAULT_IN_COST,
        }
    }
}

impl VsmConfig {
    /// The VMPL of `vtl` on SNP, if the map names one.
    pub fn vmpl_of(&self, vtl: u8) -> Option<u8> {
        self.vtl_vmpl.get(usize::from(vtl)).copied()
    }

    /// The VMPL RMPADJUST is issued at: the most privileged (lowest) VMPL of the map, where
    /// the paravisor handling the hypercall runs.
    pub fn paravisor_vmpl(&self) -> u8 {
        self.vtl_vmpl.iter().copied().min().unwrap_or(0)
    }
}

const DOCS: &[FieldDoc] = &[
    FieldDoc {
        key: "design",
        unit: "",
        doc: "address-space-per-vtl (memslots per VTL), attr-arrays (the 2023 RFC), vm-per-vtl (the 2024 series)",
        source: Source::Cited(
            "spec/tdx.md §4.3; spec/physmap.md §4 (RFC 2023-11-08, series 2024-06-09, Sean's memslot suggestion)",
        ),
    },
    FieldDoc {
        key: "repromote",
        unit: "",
        doc: "zap a 2M region's 4K table when its pages agree again, so the next fault maps 2M",
        source: Source::Choice,
    },
    FieldDoc {
        key: "vtl_vmpl",
        unit: "VMPL by VTL",
        doc: "VMPL each VTL runs at on SNP (index = VTL); RMPADJUST is issued at the lowest",
        source: Source::Cited(
            "Microsoft OpenHCL paravisor on SNP: VTL2 at VMPL0, VTL1 at VMPL1, VTL0 at VMPL2 (issue #9)",
        ),
    },
    FieldDoc {
        key: "vmm_thp",
        unit: "",
        doc: "back VMM memory of VSM guests with 2M THPs (so stage 2 can map 2M)",
        source: Source::Choice,
    },
    FieldDoc {
        key: "series_every",
        unit: "changes",
        doc: "sample stage-2 4K/2M counts every N protection changes",
        source: Source::Choice,
    },
    FieldDoc {
        key: "hypercall_cost",
        unit: "cycles",
        doc: "hypercall exit, KVM decode and re-entry, per rep call",
        source: Source::Unsourced(
            "no measurement of HvCallModifyVtlProtectionMask in KVM is public; a VMCALL exit round trip plus the Hyper-V hypercall decode, ~2k cycles",
        ),
    },
    FieldDoc {
        key: "vmm_exit_cost",
        unit: "cycles",
        doc: "forwarding the hypercall to the VMM and back",
        source: Source::Unsourced(
            "same order as host.user_exit_cost (a return to user space and an ioctl back, ~5 µs at 3 GHz)",
        ),
    },
    FieldDoc {
        key: "memslot_op_cost",
        unit: "cycles",
        doc: "(address-space-per-vtl) one KVM_SET_USER_MEMORY_REGION, excluding SRCU wait and zap",
        source: Source::Unsourced(
            "no public per-ioctl figure; copying and installing a memslot set and the arch prepare/commit hooks, ~10 µs",
        ),
    },
    FieldDoc {
        key: "srcu_sync_cost",
        unit: "cycles",
        doc: "(address-space-per-vtl) synchronize_srcu_expedited after each memslot update",
        source: Source::Unsourced(
            "an expedited SRCU grace period waits for every reader CPU; tens of µs on an idle host, ~50 µs taken",
        ),
    },
    FieldDoc {
        key: "attr_call_cost",
        unit: "cycles",
        doc: "(attr-arrays, vm-per-vtl) fixed cost of one attribute update (ioctl, invalidate begin/end, MMU lock)",
        source: Source::Unsourced("no public figure; ~1 µs of ioctl and locking"),
    },
    FieldDoc {
        key: "attr_page_cost",
        unit: "cycles",
        doc: "(attr-arrays, vm-per-vtl) storing one page's attribute (xa_store)",
        source: Source::Unsourced("an xarray store with node allocation amortised, ~200 cycles"),
    },
    FieldDoc {
        key: "lpage_update_cost",
        unit: "cycles",
        doc: "(attr-arrays, vm-per-vtl) recomputing one 2M region's mixed flag",
        source: Source::Unsourced(
            "walks the region's attributes in the xarray; ~300 cycles when it stops early",
        ),
    },
    FieldDoc {
        key: "zap_leaf_cost",
        unit: "cycles",
        doc: "zapping one stage-2 leaf",
        source: Source::Unsourced("an SPTE write plus accessed/dirty bookkeeping, ~100 cycles"),
    },
    FieldDoc {
        key: "remote_flush_cost",
        unit: "cycles",
        doc: "kvm_flush_remote_tlbs after a zap (request and kick of every vCPU)",
        source: Source::Unsourced(
            "a request bit per vCPU and IPIs to running ones, ~1 µs; the refills are priced by the walks that follow",
        ),
    },
    FieldDoc {
        key: "fault_in_cost",
        unit: "cycles",
        doc: "KVM's stage-2 fault handler for a VSM guest, besides host.vmexit_cost",
        source: Source::Unsourced("kvm_tdp_mmu_map with an attribute lookup, a few hundred ns"),
    },
];

impl ConfigBlock for VsmConfig {
    const SECTION: &'static str = "vsm";
    fn field_docs() -> &'static [FieldDoc] {
        DOCS
    }
    fn validate(&self) -> Result<(), ConfigError> {
        if self.vtl_vmpl.is_empty() || self.vtl_vmpl.len() > usize::from(MAX_VTLS) {
            return Err(ConfigError::OutOfRange {
                key: "vsm.vtl_vmpl".into(),
                value: format!("{:?}", self.vtl_vmpl),
                why: format!("one VMPL per VTL, 1 to {MAX_VTLS} entries"),
            });
        }
        if let Some(v) = self.vtl_vmpl.iter().find(|&&v| v > 3) {
            return Err(ConfigError::OutOfRange {
                key: "vsm.vtl_vmpl".into(),
                value: v.to_string(),
                why: "VMPLs are 0 to 3".into(),
            });
        }
        // VTL numbers rise with privilege and VMPL numbers fall: a higher VTL must run at a
        // lower (more privileged) VMPL, or RMPADJUST could not restrict the lower VTL.
        for w in self.vtl_vmpl.windows(2) {
            if w[1] >= w[0] {
                return Err(ConfigError::OutOfRange {
                    key: "vsm.vtl_vmpl".into(),
                    value: format!("{:?}", self.vtl_vmpl),
                    why: "each higher VTL needs a strictly lower VMPL (VTL2→VMPL0, VTL1→VMPL1, VTL0→VMPL2)".into(),
                });
            }
        }
        if self.series_every == 0 {
            return Err(ConfigError::OutOfRange {
                key: "vsm.series_every".into(),
                value: "0".into(),
                why: "at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Pages per 2M region.
pub const REGION_PAGES: u64 = 512;

/// One VTL's protections over a VM's GFNs (functional: no timing).
#[derive(Debug, Default, Clone)]
pub struct AttrLayer {
    /// The 2M regions (by region number, GFN / 512) with a page that is not [`prot::ALL`].
    /// Why a dense region under a sparse map: a change names runs of consecutive pages, so
    /// one map search serves a whole run's pages in a region, where a map of pages would be
    /// searched (and rebalanced) once per page — the hot spot of a 100,000-change boot.
    regions: BTreeMap<u64, Box<Region>>,
    /// Pages that are not [`prot::ALL`].
    restricted: u64,
}

/// [`REGION_PAGES`] as an array length.
const REGION_LEN: usize = 512;
const _: () = assert!(REGION_LEN as u64 == REGION_PAGES);

/// The protections of one 2M region's pages, and how many are not [`prot::ALL`].
#[derive(Debug, Clone)]
struct Region {
    prot: [u8; REGION_LEN],
    restricted: u16,
}

impl AttrLayer {
    /// The protections of `gfn`.
    pub fn get(&self, gfn: u64) -> u8 {
        self.regions.get(&(gfn / REGION_PAGES)).map_or(prot::ALL, |r| r.prot[page_of(gfn)])
    }

    /// Set `gfn`'s protections; whether they changed.
    pub fn set(&mut self, gfn: u64, p: u8) -> bool {
        let mut changed = false;
        self.set_range(gfn, gfn + 1, p, |_| changed = true);
        changed
    }

    /// Set the protections of GFNs `start..end` to `p`, calling `changed` with each GFN whose
    /// protections changed, in order.
    pub fn set_range(&mut self, start: u64, end: u64, p: u8, mut changed: impl FnMut(u64)) {
        let mut g = start;
        while g < end {
            let region = g / REGION_PAGES;
            let stop = end.min((region + 1) * REGION_PAGES);
            let r = match self.regions.get_mut(&region) {
                Some(r) => r,
                None if p == prot::ALL => {
                    // Every page of an absent region is already ALL.
                    g = stop;
                    continue;
                }
                None => self.regions.entry(region).or_insert_with(|| {
                    Box::new(Region { prot: [prot::ALL; REGION_LEN], restricted: 0 })
                }),
            };
            for gfn in g..stop {
                let slot = &mut r.prot[page_of(gfn)];
                let old = *slot;
                if old == p {
                    continue;
                }
                *slot = p;
                if old == prot::ALL {
                    r.restricted += 1;
                    self.restricted += 1;
                } else if p == prot::ALL {
                    r.restricted -= 1;
                    self.restricted -= 1;
                }
                changed(gfn);
            }
            if r.restricted == 0 {
                self.regions.remove(&region);
            }
            g = stop;
        }
    }

    /// Whether every page of 2M region `region` has the same protections (KVM may map it at
    /// 2M as far as attributes go).
    pub fn uniform(&self, region: u64) -> bool {
        match self.regions.get(&region) {
            None => true,
            Some(r) if u64::from(r.restricted) == REGION_PAGES => {
                r.prot.iter().all(|&p| p == r.prot[0])
            }
            Some(_) => false,
        }
    }

    /// 2M regions that are not uniform.
    pub fn mixed_regions(&self) -> u64 {
        self.regions.keys().filter(|&&r| !self.uniform(r)).count() as u64
    }

    /// Pages whose protections are not the default.
    pub fn restricted_pages(&self) -> u64 {
        self.restricted
    }
}

/// The index of `gfn` in its 2M region.
fn page_of(gfn: u64) -> usize {
    // Below 512: fits.
    #[allow(clippy::cast_possible_truncation)]
    let i = (gfn % REGION_PAGES) as usize;
    i
}

/// One memslot of a VTL's address space (design address-space-per-vtl): GFNs `start..end` with
/// one protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// First GFN.
    pub start: u64,
    /// End GFN (exclusive).
    pub end: u64,
    /// Protections the slot gives its pages.
    pub prot: u8,
}

/// What a memslot-layout change did: the slots deleted (whose mappings are zapped) and how
/// many were created.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SlotChange {
    /// Deleted slots.
    pub deleted: Vec<Slot>,
    /// Slots created.
    pub created: u64,
}

/// The memslots of one VTL's address space, non-overlapping, by first GFN. Initially one slot
/// over the whole of guest RAM with every protection.
#[derive(Debug, Clone)]
pub struct Memslots {
    slots: BTreeMap<u64, Slot>,
}

impl Memslots {
    /// One slot over `0..ram_pages`.
    pub fn new(ram_pages: u64) -> Memslots {
        let mut slots = BTreeMap::new();
        slots.insert(0, Slot { start: 0, end: ram_pages, prot: prot::ALL });
        Memslots { slots }
    }

    /// Slots in use.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Give `start..end` protection `p`, as a VMM would with memslot updates: every slot that
    /// overlaps the range and disagrees with `p` is deleted and replaced by up to three (the
    /// part before the range, the range, the part after). Adjacent slots of equal protection
    /// are not merged (merging would delete and recreate the neighbour: more updates). Slots
    /// that already give `p` stay.
    pub fn protect(&mut self, start: u64, end: u64, p: u8) -> SlotChange {
        let mut change = SlotChange::default();
        let first = self.slots.range(..=start).next_back().map_or(start, |(&s, _)| s);
        let hit: Vec<Slot> = self
            .slots
            .range(first..end)
            .map(|(_, s)| *s)
            .filter(|s| s.end > start && s.start < end && s.prot != p)
            .collect();
        for s in &hit {
            self.slots.remove(&s.start);
            let mut pieces = Vec::with_capacity(3);
            if s.start < start {
                pieces.push(Slot { start: s.start, end: start, prot: s.prot });
            }
            pieces.push(Slot { start: s.start.max(start), end: s.end.min(end), prot: p });
            if s.end > end {
                pieces.push(Slot { start: end, end: s.end, prot: s.prot });
            }
            for piece in pieces {
                self.slots.insert(piece.start, piece);
                change.created += 1;
            }
            change.deleted.push(*s);
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniformity_follows_the_pages() {
        let mut l = AttrLayer::default();
        assert!(l.uniform(0));
        assert!(l.set(5, prot::READ));
        assert!(!l.uniform(0));
        assert!(l.uniform(1));
        assert_eq!(l.mixed_regions(), 1);
        assert!(!l.set(5, prot::READ));
        assert!(l.set(5, prot::ALL));
        assert!(l.uniform(0));
        for g in 512..1024 {
            l.set(g, prot::READ);
        }
        assert!(l.uniform(1), "all 512 pages read-only: uniform");
        l.set(600, prot::READ | prot::WRITE);
        assert!(!l.uniform(1));
        assert_eq!(l.restricted_pages(), 512);
    }

    #[test]
    fn set_range_reports_the_changed_pages_across_regions() {
        let mut l = AttrLayer::default();
        l.set(511, prot::READ);
        let mut changed = Vec::new();
        l.set_range(510, 514, prot::READ, |g| changed.push(g));
        assert_eq!(changed, [510, 512, 513], "511 was already read-only");
        assert_eq!((l.restricted_pages(), l.mixed_regions()), (4, 2));
        changed.clear();
        l.set_range(0, 1024, prot::ALL, |g| changed.push(g));
        assert_eq!(changed, [510, 511, 512, 513]);
        assert_eq!((l.restricted_pages(), l.mixed_regions()), (0, 0));
        assert!(l.uniform(0) && l.uniform(1));
    }

    #[test]
    fn memslot_split_and_merge() {
        let mut m = Memslots::new(1 << 18);
        let c = m.protect(100, 101, prot::READ);
        assert_eq!(c.deleted.len(), 1);
        assert_eq!(c.created, 3);
        assert_eq!(m.len(), 3);
        // The neighbour page joins the read-only slot: the big slot after it is replaced.
        let c = m.protect(101, 102, prot::READ);
        assert_eq!(c.deleted.len(), 1);
        assert_eq!(c.created, 2);
        assert_eq!(m.len(), 4, "[0,100) [100,101) [101,102) [102,..)");
        // Already read-only: nothing to do.
        let c = m.protect(100, 102, prot::READ);
        assert!(c.deleted.is_empty());
        assert_eq!(c.created, 0);
    }

    #[test]
    fn vmpl_mask_bits() {
        assert_eq!(vmpl_mask(prot::ALL), 0xf);
        assert_eq!(vmpl_mask(prot::READ), 1);
        assert_eq!(vmpl_mask(prot::READ | prot::EXEC_KERNEL), 0b1001);
    }

    #[test]
    fn config_checks() {
        let c = VsmConfig::default();
        c.validate().unwrap();
        assert_eq!(c.vmpl_of(0), Some(2));
        assert_eq!(c.paravisor_vmpl(), 0);
        let bad = VsmConfig { vtl_vmpl: vec![0, 1], ..VsmConfig::default() };
        assert!(bad.validate().is_err());
        assert!("vm-per-vtl".parse::<VsmDesign>().is_ok());
        assert!("vtl-per-vm".parse::<VsmDesign>().unwrap_err().contains("known"));
    }
}
