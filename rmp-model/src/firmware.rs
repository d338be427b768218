//! SNP firmware (AMD-SP) commands as their effects on the RMP.
//!
//! The SEV-SNP Firmware ABI (AMD pub. 56860) defines the commands; its text was not available
//! to this work. The facts here come from:
//!
//! - AMD's published SEV firmware source, `amd/AMD-ASPFW` @ 3ca6650d,
//!   `fw/psp_bl_uapps/sev_uapp/src/`: `sev_rmp.h` (the page-state table, comment "6.2 Page
//!   States"), `sev_rmp.c` (`rmp_entry_get_state`, `configure_rmp`) and `sev_mcmd.c` (one
//!   function per command). Cited below as [fw `function`]. Which firmware release and part it
//!   matches is not stated there; comments mention Genoa (Zen 4). Its ABI section numbers may
//!   differ from the current ABI's (Linux calls the page states "Chapter 5 of the SEV-SNP
//!   Firmware ABI"): **UNCONFIRMED** which revision it follows.
//! - Linux: `include/uapi/linux/psp-sev.h` (status values), `include/linux/psp-sev.h` (page
//!   types), `drivers/crypto/ccp/sev-dev.c` (how the host uses the commands) and
//!   `arch/x86/kvm/svm/sev.c` (KVM's launch flow).
//!
//! Each function takes the RMP as it is and returns the status the firmware would; on anything
//! but [`SnpFwStatus::Success`] the RMP is unchanged. What the firmware checks from its own
//! state rather than the RMP — the platform state (`INVALID_PLATFORM_STATE`), the guest's state
//! in its context page (`INVALID_GUEST_STATE`), whether the guest is activated (`INACTIVE`),
//! that a WBINVD ran on every core (`WBINVD_REQUIRED`) — is the caller's: the functions assume
//! those checks passed.
//!
//! Host side, for orientation: the hypervisor itself makes pages Firmware and Pre-Guest with
//! RMPUPDATE before handing them over — [`RmpUpdateInput::firmware`] (Linux
//! `rmp_mark_pages_firmware`) and `RmpUpdateInput::private(gpa, size, asid, true)` (KVM
//! `sev_gmem_post_populate`: `rmp_make_private(pfn + i, gfn << PAGE_SHIFT, PG_LEVEL_4K,
//! sev_get_asid(kvm), true)`) — and turns reclaimed pages back into hypervisor pages with
//! RMPUPDATE (`snp_reclaim_pages` / KVM `snp_page_reclaim`: `SNP_PAGE_RECLAIM`, then
//! `rmp_make_shared(pfn, PG_LEVEL_4K)`).

use crate::entry::{RmpEntry, RmpPageSize, VmplPerms};
use crate::instr::RmpUpdateInput;
use crate::table::{PAGES_PER_2M, Rmp};
use sim_core::{Gpa, PageSize, Spa};
use std::fmt;

/// A firmware command's status (Linux `include/uapi/linux/psp-sev.h` `sev_ret_code`; the values
/// are the ABI's). Only the statuses the functions here return.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum SnpFwStatus {
    /// 0x00 `SUCCESS`.
    Success,
    /// 0x09 `INVALID_ADDRESS`: e.g. a 2 MiB page not 2 MiB-aligned, or a range overlapping the
    /// RMP itself.
    InvalidAddress,
    /// 0x10 `INVALID_GUEST`: the guest context page is not in the Context state.
    InvalidGuest,
    /// 0x16 `INVALID_PARAM`: reserved address bits set, a bad page type, an unaligned
    /// PAGE_UNSMASH address.
    InvalidParam,
    /// 0x19 `INVALID_PAGE_SIZE`: the RMP page size is not the one the command needs.
    InvalidPageSize,
    /// 0x1A `INVALID_PAGE_STATE`: the page is not in a state the command accepts.
    InvalidPageState,
    /// 0x1C `INVALID_PAGE_OWNER`: the page's ASID is not the guest's.
    InvalidPageOwner,
}

impl SnpFwStatus {
    /// The numeric status.
    pub const fn code(self) -> u32 {
        match self {
            SnpFwStatus::Success => 0x00,
            SnpFwStatus::InvalidAddress => 0x09,
            SnpFwStatus::InvalidGuest => 0x10,
            SnpFwStatus::InvalidParam => 0x16,
            SnpFwStatus::InvalidPageSize => 0x19,
            SnpFwStatus::InvalidPageState => 0x1A,
            SnpFwStatus::InvalidPageOwner => 0x1C,
        }
    }

    /// The ABI name (`SUCCESS`, `INVALID_PAGE_STATE`, …).
    pub const fn name(self) -> &'static str {
        match self {
            SnpFwStatus::Success => "SUCCESS",
            SnpFwStatus::InvalidAddress => "INVALID_ADDRESS",
            SnpFwStatus::InvalidGuest => "INVALID_GUEST",
            SnpFwStatus::InvalidParam => "INVALID_PARAM",
            SnpFwStatus::InvalidPageSize => "INVALID_PAGE_SIZE",
            SnpFwStatus::InvalidPageState => "INVALID_PAGE_STATE",
            SnpFwStatus::InvalidPageOwner => "INVALID_PAGE_OWNER",
        }
    }
}

impl fmt::Display for SnpFwStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#04x})", self.name(), self.code())
    }
}

/// A page's state as the firmware reads it from the RMP entry (the ABI's "Page States";
/// [fw `rmp_entry_get_state`], table in `sev_rmp.h`). A = Assigned, V = Validated, I =
/// Immutable; the classification is tried in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum FwPageState {
    /// The page has no RMP entry (the firmware's DEFAULT: "beyond the range that's mapped").
    Default,
    /// A=0, V=0, ASID=0, I=0.
    Hypervisor,
    /// A=0, V=0, ASID=0, I=1: a hypervisor page no guest may get (SNP_INIT_EX's range list,
    /// non-DRAM; Linux `snp_filter_reserved_mem_regions`: "the list of HV_FIXED pages").
    HvFixed,
    /// A=1, V=0, ASID=0, I=1, GPA=0, VMSA=0: owned by the firmware.
    Firmware,
    /// A=1, V=0, ASID=0, I=0: reclaimed from the firmware; the hypervisor may RMPUPDATE it.
    Reclaim,
    /// A=1, V=0, ASID=0, I=1, GPA=0, VMSA=1: a guest context page.
    Context,
    /// A=1, V=0, ASID=0, I=1, GPA tagged as metadata (the guest context's PFN plus a tag in GPA
    /// bits 50:48, [fw `sev_rmp.h`] `RMP_GPA_STATE_METADATA`): a swapped-out page's metadata.
    Metadata,
    /// A=1, V=0, ASID≠0, I=1: a guest page handed to the firmware (LAUNCH_UPDATE's input).
    PreGuest,
    /// A=1, V=1, ASID≠0, I=1: a validated guest page being swapped or moved.
    PreSwap,
    /// A=1, V=0, ASID≠0, I=0.
    GuestInvalid,
    /// A=1, V=1, ASID≠0, I=0.
    GuestValid,
    /// A=1, V=0, ASID=0, I=1, GPA tagged as the IOMMU's (GPA field 1 plus tag 2 in bits 50:48,
    /// [fw `sev_rmp.h`] `RMP_GPA_STATE_FW_IOMMU`): IOMMU logs SNP_INIT took. Not a state of the
    /// ABI table; the firmware's own ("locked once set and should never be passed into firmware
    /// again").
    FirmwareIommu,
    /// Any other combination.
    Invalid,
}

/// GPA bits 50:48 (RMP GPA-field bits 38:36): the firmware's tag separating Firmware,
/// Metadata and IOMMU pages ([fw `sev_rmp.h`] `RMP_GPA_STATE_SHIFT` = 36 in the PFN field,
/// "CSF-983").
const GPA_TAG_SHIFT: u32 = 48;
const GPA_TAG_MASK: u64 = 0x7 << GPA_TAG_SHIFT;
const GPA_TAG_METADATA: u64 = 1;
const GPA_TAG_IOMMU: u64 = 2;
/// The GPA the firmware writes into IOMMU pages: PFN 1, tag IOMMU ([fw `sev_rmp.c`]
/// `initialize_rmp_entries_range`).
const IOMMU_PAGE_GPA: u64 = (1 << 12) | (GPA_TAG_IOMMU << GPA_TAG_SHIFT);
/// The legacy HyperTransport hole SNP_INIT always makes HV-Fixed, inclusive bounds
/// ([fw `sev_rmp.c`] `add_known_hvfixed_ranges`: "there's still some risk associated with it").
const LEGACY_HT_HOLE: (u64, u64) = (0xFD_0000_0000, 0xFD_FFFF_FFFF);

impl FwPageState {
    /// Classify an entry ([fw `rmp_entry_get_state`]). The raw entry's lock bit, which the
    /// firmware also reads for Reclaim, is not modelled (always 0).
    pub fn of(e: &RmpEntry) -> FwPageState {
        let gpa = e.gpa.raw();
        let tag = (gpa & GPA_TAG_MASK) >> GPA_TAG_SHIFT;
        let pfn = (gpa & !GPA_TAG_MASK) >> 12;
        match (e.assigned, e.validated, e.asid != 0, e.immutable) {
            (false, false, false, false) => FwPageState::Hypervisor,
            (false, false, false, true) => FwPageState::HvFixed,
            (true, false, false, true) if gpa == 0 && !e.vmsa => FwPageState::Firmware,
            (true, false, false, false) => FwPageState::Reclaim,
            (true, false, false, true) if gpa == 0 => FwPageState::Context,
            (true, false, false, true) if pfn > 0 && tag == GPA_TAG_METADATA => {
                FwPageState::Metadata
            }
            (true, false, true, true) => FwPageState::PreGuest,
            (true, true, true, true) => FwPageState::PreSwap,
            (true, false, true, false) => FwPageState::GuestInvalid,
            (true, true, true, false) => FwPageState::GuestValid,
            (true, false, false, true) if pfn == 1 && tag == GPA_TAG_IOMMU && !e.vmsa => {
                FwPageState::FirmwareIommu
            }
            _ => FwPageState::Invalid,
        }
    }
}

/// The type of a page LAUNCH_UPDATE measures (Linux `include/linux/psp-sev.h`
/// `SNP_PAGE_TYPE_*`; values 1–6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum LaunchPageType {
    /// 1: measured and encrypted.
    Normal,
    /// 2: a VMSA; the RMP entry's VMSA bit is set.
    Vmsa,
    /// 3: zeroed, measured as zero.
    Zero,
    /// 4: encrypted, not measured.
    Unmeasured,
    /// 5: the secrets page.
    Secrets,
    /// 6: the CPUID page.
    Cpuid,
}

impl LaunchPageType {
    /// The numeric page type.
    pub const fn code(self) -> u8 {
        match self {
            LaunchPageType::Normal => 1,
            LaunchPageType::Vmsa => 2,
            LaunchPageType::Zero => 3,
            LaunchPageType::Unmeasured => 4,
            LaunchPageType::Secrets => 5,
            LaunchPageType::Cpuid => 6,
        }
    }

    /// Whether the page must be a 4 KiB page ([fw `snp_mcmd_launch_update`]: "Page must be 4K"
    /// for VMSA, SECRETS and CPUID).
    const fn needs_4k(self) -> bool {
        match self {
            LaunchPageType::Vmsa | LaunchPageType::Secrets | LaunchPageType::Cpuid => true,
            LaunchPageType::Normal | LaunchPageType::Zero | LaunchPageType::Unmeasured => false,
        }
    }
}

/// SNP_LAUNCH_UPDATE's per-page inputs that matter to the RMP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchUpdate {
    /// PAGE_SIZE: must equal the page's RMP page size.
    pub page_size: RmpPageSize,
    /// PAGE_TYPE.
    pub page_type: LaunchPageType,
    /// VMPL1_PERMS, VMPL2_PERMS, VMPL3_PERMS: written to the entry's masks for VMPL1..3
    /// (Linux `struct sev_data_snp_launch_update`; KVM passes none, i.e. zero).
    pub vmpl_perms: [VmplPerms; 3],
}

impl LaunchUpdate {
    /// A 4 KiB page of `page_type` with no permissions for VMPL1..3 (what KVM issues).
    pub const fn page_4k(page_type: LaunchPageType) -> LaunchUpdate {
        LaunchUpdate { page_size: RmpPageSize::K4, page_type, vmpl_perms: [VmplPerms::empty(); 3] }
    }
}

/// SNP_INIT / SNP_INIT_EX inputs that shape the RMP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnpInit {
    /// SNP_INIT_EX INIT_RMP: (re)initialise the RMP. Without it the RMP is left as it is.
    pub init_rmp: bool,
    /// SNP_INIT_EX RANGE_LIST: `(base, pages)` ranges made HV-Fixed (Linux passes E820
    /// reserved, PMEM and ACPI ranges). Also the place for what the firmware derives from its
    /// memory map, which the model does not have: every covered page that is not DRAM.
    pub hv_fixed: Vec<(Spa, u64)>,
    /// Pages of the IOMMU's event log, PPR log and completion-wait buffer, which SNP_INIT takes
    /// ([fw `snp_mcmd_init_common`]: "Set all IOMMU logs to FIRMWARE_IOMMU state").
    pub iommu_pages: Vec<Spa>,
}

/// Address bits a page operand must have clear (bits 11:0; [fw] `SNP_ADDR_RESERVED_MASK`).
fn page_operand_ok(spa: Spa) -> bool {
    spa.is_aligned(PageSize::K4)
}

fn check_operand(spa: Spa) -> Result<(), SnpFwStatus> {
    if page_operand_ok(spa) { Ok(()) } else { Err(SnpFwStatus::InvalidParam) }
}

impl RmpUpdateInput {
    /// What Linux writes to give a page to the firmware: `rmp_make_private(pfn, 0, PG_LEVEL_4K,
    /// 0, true)` (`drivers/crypto/ccp/sev-dev.c` `rmp_mark_pages_firmware`): Assigned, ASID 0,
    /// GPA 0, Immutable — the Firmware state.
    pub const fn firmware() -> RmpUpdateInput {
        RmpUpdateInput::private(Gpa::ZERO, RmpPageSize::K4, 0, true)
    }
}

impl Rmp {
    /// The firmware's view of the page holding `spa` (its stored entry; [`FwPageState::of`]).
    pub fn fw_page_state(&self, spa: Spa) -> FwPageState {
        if !self.layout().is_covered(spa) {
            return FwPageState::Default;
        }
        FwPageState::of(&self.stored_entry(spa))
    }

    /// SNP_INIT / SNP_INIT_EX ([fw `snp_mcmd_init_common`, `configure_rmp`]). With
    /// [`SnpInit::init_rmp`]:
    ///
    /// 1. every entry becomes Hypervisor (zero);
    /// 2. the listed ranges and the legacy HyperTransport hole 0xFD_0000_0000–0xFD_FFFF_FFFF
    ///    become HV-Fixed, except pages of the RMP itself ([fw `walk_reserved_list`]: "Exclude
    ///    the RMP from the list");
    /// 3. the RMP's own pages ([`crate::RmpLayout::table_ranges`]) become Firmware ("Finally set
    ///    the RMP itself to FW state");
    /// 4. the IOMMU pages become the firmware's IOMMU state.
    ///
    /// Pages without an entry are skipped. Without `init_rmp` the RMP is unchanged.
    ///
    /// Status: `INVALID_PARAM` if a range base or IOMMU page has address bits 11:0 set
    /// ([fw `walk_reserved_list`]); otherwise `SUCCESS`.
    pub fn snp_init(&mut self, init: &SnpInit) -> SnpFwStatus {
        let bases = init.hv_fixed.iter().map(|(b, _)| *b);
        if !bases.chain(init.iommu_pages.iter().copied()).all(page_operand_ok) {
            return SnpFwStatus::InvalidParam;
        }
        if !init.init_rmp {
            return SnpFwStatus::Success;
        }
        self.clear();
        let table = self.layout().table_ranges();
        let in_table = |pa: u64| table.iter().any(|(s, e)| (s.raw()..e.raw()).contains(&pa));
        let hv_fixed = RmpEntry { immutable: true, ..RmpEntry::ZERO };
        let mut ranges: Vec<(u64, u64)> = init
            .hv_fixed
            .iter()
            .map(|(b, pages)| (b.raw(), b.raw().saturating_add(pages.saturating_mul(4096))))
            .collect();
        ranges.push((LEGACY_HT_HOLE.0, LEGACY_HT_HOLE.1 + 1));
        for (start, end) in ranges {
            self.fill_covered(start, end, &hv_fixed, |pa| !in_table(pa));
        }
        let firmware = RmpEntry { assigned: true, immutable: true, ..RmpEntry::ZERO };
        for (s, e) in &table {
            self.fill_covered(s.raw() & !0xfff, e.raw(), &firmware, |_| true);
        }
        let iommu = RmpEntry { gpa: Gpa::new(IOMMU_PAGE_GPA), ..firmware };
        for &p in &init.iommu_pages {
            self.fill_covered(p.raw(), p.raw() + 4096, &iommu, |_| true);
        }
        SnpFwStatus::Success
    }

    /// Write `e` to every covered page of `[start, end)` that `keep` accepts, a 2 MiB region at
    /// a time so that uncovered stretches are skipped quickly.
    fn fill_covered(&mut self, start: u64, end: u64, e: &RmpEntry, keep: impl Fn(u64) -> bool) {
        let mut pa = start;
        while pa < end {
            let Ok(spa) = Spa::try_new(pa) else { return };
            if !self.layout().is_covered(spa) {
                // Coverage is a prefix of each 2 MiB region's pages: skip to the next region.
                pa = spa.align_down(PageSize::M2).raw() + PageSize::M2.bytes();
                continue;
            }
            if keep(pa) {
                self.set_entry(spa, e).expect("covered");
            }
            pa += 4096;
        }
    }

    /// SNP_GCTX_CREATE ([fw `snp_mcmd_gctx_create`]): the page the hypervisor gave the
    /// firmware (Firmware state, see [`RmpUpdateInput::firmware`]) becomes a guest context page
    /// (Context: VMSA bit set). KVM issues it before SNP_LAUNCH_START (`snp_context_create`).
    ///
    /// Status: `INVALID_PARAM` for address bits 11:0 set or a page of the RMP;
    /// `INVALID_PAGE_STATE` unless Firmware; `INVALID_PAGE_SIZE` unless a 4 KiB entry.
    pub fn gctx_create(&mut self, gctx: Spa) -> SnpFwStatus {
        match check_operand(gctx).and_then(|()| self.fw_lookup(gctx)) {
            Ok(FwPageState::Firmware) => {}
            Ok(_) => return SnpFwStatus::InvalidPageState,
            Err(s) => return s,
        }
        let mut e = self.stored_entry(gctx);
        if e.page_size != RmpPageSize::K4 {
            return SnpFwStatus::InvalidPageSize;
        }
        e.vmsa = true;
        self.set_entry(gctx, &e).expect("covered");
        SnpFwStatus::Success
    }

    /// How the firmware looks a page operand up ([fw `get_rmp_paddr`]): `INVALID_PARAM` if the
    /// page lies in the RMP itself ("The hypervisor should never be pointing the PSP at the
    /// RMP, no matter what"), else the page's state.
    fn fw_lookup(&self, spa: Spa) -> Result<FwPageState, SnpFwStatus> {
        let pa = spa.raw();
        if self.layout().table_ranges().iter().any(|(s, e)| (s.raw()..e.raw()).contains(&pa)) {
            return Err(SnpFwStatus::InvalidParam);
        }
        Ok(self.fw_page_state(spa))
    }

    /// Check a guest context page operand: `INVALID_PARAM` for address bits 11:0 set or a page
    /// of the RMP, `INVALID_GUEST` unless in the Context state.
    fn check_gctx(&self, gctx: Spa) -> Result<(), SnpFwStatus> {
        check_operand(gctx)?;
        if self.fw_lookup(gctx)? != FwPageState::Context {
            return Err(SnpFwStatus::InvalidGuest);
        }
        Ok(())
    }

    /// SNP_LAUNCH_START ([fw `snp_mcmd_launch_start`]): starts the guest's launch (guest state
    /// INIT → LAUNCH); no RMP change. RMP-visible checks: the context page (`INVALID_PARAM`,
    /// `INVALID_GUEST`: "Verify that the Guest context page is in the CONTEXT state"). The
    /// policy checks (`POLICY_FAILURE`) and the migration agent's context page are not
    /// modelled. (Older KVM passed the context page to LAUNCH_START; current KVM creates it
    /// with SNP_GCTX_CREATE first, [`Rmp::gctx_create`].)
    pub fn launch_start(&self, gctx: Spa) -> SnpFwStatus {
        match self.check_gctx(gctx) {
            Ok(()) => SnpFwStatus::Success,
            Err(s) => s,
        }
    }

    /// SNP_LAUNCH_UPDATE ([fw `snp_mcmd_launch_update`]): the firmware measures and encrypts a
    /// Pre-Guest page of the guest whose context is `gctx` and whose ASID (bound by
    /// SNP_ACTIVATE) is `guest_asid`, then makes it Guest-Valid: Validated = 1, Immutable = 0,
    /// the VMPL1..3 masks from `update`, and VMSA = 1 for a VMSA page ("The firmware
    /// transitions the page from Pre-Guest to Guest-Valid"). The GPA measured is the entry's.
    ///
    /// Checks, in the firmware's order:
    /// 1. `INVALID_PARAM`: address bits 11:0 of `gctx` or `page` set;
    /// 2. `INVALID_PARAM` if `gctx` is a page of the RMP, else `INVALID_GUEST` unless a Context
    ///    page;
    /// 3. `INVALID_PARAM` if `page` is a page of the RMP, else `INVALID_PAGE_STATE` unless its
    ///    own entry is Pre-Guest (KVM makes it so with `rmp_make_private(.., immutable =
    ///    true)`);
    /// 4. `INVALID_PAGE_SIZE`: the entry's size is not `update.page_size`;
    /// 5. `INVALID_ADDRESS`: a 2 MiB page not 2 MiB-aligned;
    /// 6. `INVALID_PAGE_SIZE`: a VMSA, secrets or CPUID page that is not 4 KiB;
    /// 7. `INVALID_PAGE_OWNER`: the entry's ASID is not `guest_asid`.
    ///
    /// Not modelled: the guest-state and activation checks (caller's), and a CPUID page that
    /// fails validation (the firmware then returns `INVALID_PARAM` and leaves it Pre-Guest;
    /// the model has no page contents).
    pub fn launch_update(
        &mut self,
        gctx: Spa,
        page: Spa,
        guest_asid: u16,
        update: &LaunchUpdate,
    ) -> SnpFwStatus {
        if let Err(s) = check_operand(page).and_then(|()| self.check_gctx(gctx)) {
            return s;
        }
        match self.fw_lookup(page) {
            Ok(FwPageState::PreGuest) => {}
            Ok(_) => return SnpFwStatus::InvalidPageState,
            Err(s) => return s,
        }
        let mut e = self.stored_entry(page);
        if e.page_size != update.page_size {
            return SnpFwStatus::InvalidPageSize;
        }
        if e.page_size == RmpPageSize::M2 && !page.is_aligned(PageSize::M2) {
            return SnpFwStatus::InvalidAddress;
        }
        if update.page_type.needs_4k() && e.page_size != RmpPageSize::K4 {
            return SnpFwStatus::InvalidPageSize;
        }
        if e.asid != guest_asid {
            return SnpFwStatus::InvalidPageOwner;
        }
        e.vmpl[1..].copy_from_slice(&update.vmpl_perms);
        if update.page_type == LaunchPageType::Vmsa {
            e.vmsa = true;
        }
        e.validated = true;
        e.immutable = false;
        self.set_entry(page, &e).expect("covered");
        SnpFwStatus::Success
    }

    /// SNP_LAUNCH_FINISH ([fw `snp_mcmd_launch_finish`]): ends the launch (the guest goes to
    /// RUNNING); no RMP change. RMP-visible checks: the context page (`INVALID_PARAM`,
    /// `INVALID_GUEST`). The ID-block checks are not modelled. After it KVM makes private pages
    /// with plain RMPUPDATE (`pre_fault_allowed`).
    pub fn launch_finish(&self, gctx: Spa) -> SnpFwStatus {
        match self.check_gctx(gctx) {
            Ok(()) => SnpFwStatus::Success,
            Err(s) => s,
        }
    }

    /// SNP_DECOMMISSION ([fw `snp_mcmd_decommission`]): the guest's context page goes from
    /// Context back to Firmware (VMSA bit cleared), ready for SNP_PAGE_RECLAIM. Deactivating the
    /// ASID is the caller's. Status: `INVALID_PARAM`, `INVALID_GUEST` as for the context
    /// operand.
    pub fn decommission(&mut self, gctx: Spa) -> SnpFwStatus {
        if let Err(s) = self.check_gctx(gctx) {
            return s;
        }
        let mut e = self.stored_entry(gctx);
        e.vmsa = false;
        self.set_entry(gctx, &e).expect("covered");
        SnpFwStatus::Success
    }

    /// SNP_PAGE_RECLAIM ([fw `snp_mcmd_page_reclaim`]): clears Immutable so that the
    /// hypervisor can take the page back with RMPUPDATE (Linux `snp_reclaim_pages` follows it
    /// with `rmp_make_shared(pfn, PG_LEVEL_4K)`; KVM `snp_page_reclaim`: Pre-Guest and Firmware
    /// pages "cannot be directly transitioned back to normal/hypervisor-owned state via
    /// RMPUPDATE unless they are reclaimed first"). By the page's state:
    ///
    /// | before | after |
    /// |---|---|
    /// | Firmware | Reclaim (Immutable = 0) |
    /// | Metadata | Reclaim (Immutable = 0, GPA tag cleared) |
    /// | Pre-Guest | Guest-Invalid (Immutable = 0) |
    /// | Pre-Swap | Guest-Valid (Immutable = 0) |
    ///
    /// A Context page must be decommissioned first ([`Rmp::decommission`]); the firmware's IOMMU
    /// pages come back only through SNP_SHUTDOWN_EX ([`Rmp::snp_shutdown_iommu`]).
    ///
    /// Checks, in order: `INVALID_PARAM` for address bits 11:0 set or a page of the RMP;
    /// `INVALID_PAGE_STATE` for a page without an entry (model choice: the firmware source does not handle that case
    /// explicitly, **UNCONFIRMED**); `INVALID_PAGE_SIZE` if the entry's size is not
    /// `page_size`; `INVALID_ADDRESS` for a 2 MiB page not 2 MiB-aligned; `SUCCESS` with no
    /// change if Immutable is already 0 ("Return success if the immutable bit is already 0");
    /// `INVALID_PAGE_STATE` for any state not in the table.
    pub fn page_reclaim(&mut self, page: Spa, page_size: RmpPageSize) -> SnpFwStatus {
        let state = match check_operand(page).and_then(|()| self.fw_lookup(page)) {
            Ok(FwPageState::Default) => return SnpFwStatus::InvalidPageState,
            Ok(s) => s,
            Err(s) => return s,
        };
        let mut e = self.stored_entry(page);
        if e.page_size != page_size {
            return SnpFwStatus::InvalidPageSize;
        }
        if e.page_size == RmpPageSize::M2 && !page.is_aligned(PageSize::M2) {
            return SnpFwStatus::InvalidAddress;
        }
        if !e.immutable {
            return SnpFwStatus::Success;
        }
        match state {
            FwPageState::Metadata => e.gpa = Gpa::new(e.gpa.raw() & !GPA_TAG_MASK),
            FwPageState::Firmware | FwPageState::PreGuest | FwPageState::PreSwap => {}
            FwPageState::Default
            | FwPageState::Hypervisor
            | FwPageState::HvFixed
            | FwPageState::Reclaim
            | FwPageState::Context
            | FwPageState::GuestInvalid
            | FwPageState::GuestValid
            | FwPageState::FirmwareIommu
            | FwPageState::Invalid => return SnpFwStatus::InvalidPageState,
        }
        e.immutable = false;
        self.set_entry(page, &e).expect("covered");
        SnpFwStatus::Success
    }

    /// SNP_PAGE_UNSMASH ([fw `snp_mcmd_page_unsmash`]): turns 512 consistent 4 KiB entries back
    /// into one 2 MiB entry — what PSMASH undid, which the hypervisor cannot redo alone
    /// (spec/snp.md §3.3).
    ///
    /// Preconditions, checked on all 512 entries before any is written:
    /// - `page` is 2 MiB-aligned and not a page of the RMP, else `INVALID_PARAM`;
    /// - the region has entries, else `INVALID_PAGE_STATE` (the firmware's DEFAULT); a region
    ///   only partly covered is also `INVALID_PAGE_STATE` (model choice, **UNCONFIRMED**);
    /// - the 2 MiB range does not overlap the RMP itself, else `INVALID_ADDRESS`;
    /// - every entry: 4 KiB, Immutable, not a VMSA, ASID ≠ 0 — so Pre-Guest or Pre-Swap;
    ///   the first one's GPA is 2 MiB-aligned; every entry has the first one's state, ASID and
    ///   VMPL masks, and GPA = first GPA + i × 4 KiB. Otherwise `INVALID_PAGE_STATE`.
    ///
    /// Effect: the aligned entry becomes a 2 MiB entry with its other fields unchanged (still
    /// Pre-Guest or Pre-Swap, so SNP_PAGE_RECLAIM at 2 MiB follows). The firmware also
    /// rewrites the other 511 entries as Assigned = 1, ASID = 0, Immutable = 0 (GPA, Validated
    /// and masks kept) and zeroes the aligned entry's sub-page count. The model instead zeroes
    /// those 511 entries (documented choice): in the model a 2 MiB entry alone governs its
    /// region, which is what RMPUPDATE at 2 MiB leaves, and the model's FAIL_OVERLAP rule
    /// (itself **UNCONFIRMED**, spec/snp.md §3.2) would read Assigned sub-entries as assigned
    /// 4 KiB pages and refuse a later `rmp_make_shared(pfn, PG_LEVEL_2M)`, which Linux retries
    /// forever. What hardware keeps in those entries is **UNCONFIRMED**.
    pub fn page_unsmash(&mut self, page: Spa) -> SnpFwStatus {
        if !page.is_aligned(PageSize::M2) {
            return SnpFwStatus::InvalidParam;
        }
        match self.fw_lookup(page) {
            Err(s) => return s,
            Ok(FwPageState::Default) => return SnpFwStatus::InvalidPageState,
            Ok(_) if !self.region_covered(page) => return SnpFwStatus::InvalidPageState,
            Ok(_) => {}
        }
        let (lo, hi) = (page.raw(), page.raw() + PageSize::M2.bytes());
        if self.layout().table_ranges().iter().any(|(s, e)| s.raw() < hi && lo < e.raw()) {
            return SnpFwStatus::InvalidAddress;
        }
        let first = self.stored_entry(page);
        let state = FwPageState::of(&first);
        if !first.gpa.is_aligned(PageSize::M2) {
            return SnpFwStatus::InvalidPageState;
        }
        for i in 0..PAGES_PER_2M {
            let e = self.stored_entry(Spa::new(lo + i * 4096));
            let ok = e.page_size == RmpPageSize::K4
                && e.immutable
                && !e.vmsa
                && e.asid != 0
                && FwPageState::of(&e) == state
                && e.asid == first.asid
                && e.vmpl == first.vmpl
                && e.gpa.raw() == first.gpa.raw() + i * 4096;
            if !ok {
                return SnpFwStatus::InvalidPageState;
            }
        }
        for i in 1..PAGES_PER_2M {
            self.set_entry(Spa::new(lo + i * 4096), &RmpEntry::ZERO).expect("covered");
        }
        let big = RmpEntry { page_size: RmpPageSize::M2, ..first };
        self.set_entry(page, &big).expect("covered");
        SnpFwStatus::Success
    }

    /// SNP_DF_FLUSH ([fw `snp_mcmd_df_flush`]): flushes the data fabric's write buffers and
    /// marks ASIDs whose caches every core has written back (WBINVD) as clean for reuse. No RMP
    /// effect; returns `SUCCESS`. (`WBINVD_REQUIRED`, when some core has not run WBINVD, depends
    /// on per-core state the model does not keep; the caller decides.)
    pub fn df_flush(&self) -> SnpFwStatus {
        SnpFwStatus::Success
    }

    /// SNP_SHUTDOWN_EX with IOMMU_SNP_SHUTDOWN = 1 ([fw `snp_mcmd_shutdown_common`]: "Transition
    /// all pages associated with the IOMMU to the Reclaim state and clear GPA"): the IOMMU
    /// pages SNP_INIT took become Reclaim (Assigned = 1, everything else 0), so the host can
    /// RMPUPDATE them (Linux: "iommu/amd: Clean up RMP entries for IOMMU pages during SNP
    /// shutdown", spec/snp.md §2.6). Pages not in the firmware's IOMMU state are left alone.
    pub fn snp_shutdown_iommu(&mut self, iommu_pages: &[Spa]) -> SnpFwStatus {
        if !iommu_pages.iter().copied().all(page_operand_ok) {
            return SnpFwStatus::InvalidParam;
        }
        let reclaim = RmpEntry { assigned: true, ..RmpEntry::ZERO };
        for &p in iommu_pages {
            if self.fw_page_state(p) == FwPageState::FirmwareIommu {
                self.set_entry(p, &reclaim).expect("covered");
            }
        }
        SnpFwStatus::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{RmpPageState, VMPL_ON_UPDATE};
    use crate::instr::{Executor, RmpReturn};
    use crate::layout::RmpLayout;

    const HV: Executor = Executor::Hypervisor;
    const RMP_BASE: u64 = 0x10_0000;
    /// The guest context page, and the guest's first data page, both above the RMP.
    const GCTX: u64 = 0x1_2000_0000;
    const PAGE: u64 = 0x1_0001_0000;
    const ASID: u16 = 5;
    const M2: u64 = 2 << 20;

    fn rmp() -> Rmp {
        // 8 GiB covered; the table occupies RMP_BASE .. RMP_BASE + 16 KiB + 32 MiB.
        Rmp::new(RmpLayout::covering(Spa::new(RMP_BASE), 8 << 30).unwrap())
    }

    fn spa(pa: u64) -> Spa {
        Spa::new(pa)
    }

    /// KVM's context page: made Firmware by the host, then SNP_GCTX_CREATE.
    fn with_gctx() -> Rmp {
        let mut r = rmp();
        assert_eq!(r.rmpupdate(HV, spa(GCTX), &RmpUpdateInput::firmware()), RmpReturn::Success);
        assert_eq!(r.gctx_create(spa(GCTX)), SnpFwStatus::Success);
        r
    }

    /// KVM `sev_gmem_post_populate`: the page becomes Pre-Guest before LAUNCH_UPDATE.
    fn pre_guest(r: &mut Rmp, pa: u64, gpa: u64, size: RmpPageSize) {
        let input = RmpUpdateInput::private(Gpa::new(gpa), size, ASID, true);
        assert_eq!(r.rmpupdate(HV, spa(pa), &input), RmpReturn::Success);
        assert_eq!(r.fw_page_state(spa(pa)), FwPageState::PreGuest);
    }

    #[test]
    fn status_codes() {
        assert_eq!(SnpFwStatus::InvalidPageState.code(), 0x1a);
        assert_eq!(SnpFwStatus::InvalidPageOwner.code(), 0x1c);
        assert_eq!(SnpFwStatus::InvalidParam.to_string(), "INVALID_PARAM (0x16)");
        assert_eq!(LaunchPageType::Cpuid.code(), 6);
    }

    #[test]
    fn page_state_classification() {
        use FwPageState as S;
        let z = RmpEntry::ZERO;
        let a = RmpEntry { assigned: true, ..z };
        let meta = Gpa::new((0x12_0000 << 12) | (GPA_TAG_METADATA << GPA_TAG_SHIFT));
        let cases = [
            (z, S::Hypervisor),
            (RmpEntry { immutable: true, ..z }, S::HvFixed),
            (RmpEntry { immutable: true, ..a }, S::Firmware),
            (a, S::Reclaim),
            (RmpEntry { immutable: true, vmsa: true, ..a }, S::Context),
            (RmpEntry { immutable: true, gpa: meta, ..a }, S::Metadata),
            (RmpEntry { immutable: true, asid: 3, ..a }, S::PreGuest),
            (RmpEntry { immutable: true, asid: 3, validated: true, ..a }, S::PreSwap),
            (RmpEntry { asid: 3, ..a }, S::GuestInvalid),
            (RmpEntry { asid: 3, validated: true, ..a }, S::GuestValid),
            (RmpEntry { immutable: true, gpa: Gpa::new(IOMMU_PAGE_GPA), ..a }, S::FirmwareIommu),
            // Validated with ASID 0, and an untagged GPA on an immutable ASID-0 page.
            (RmpEntry { validated: true, ..a }, S::Invalid),
            (RmpEntry { immutable: true, gpa: Gpa::new(0x5000), ..a }, S::Invalid),
            // Unassigned pages with an ASID.
            (RmpEntry { asid: 3, ..z }, S::Invalid),
        ];
        for (e, want) in cases {
            assert_eq!(FwPageState::of(&e), want, "{e:?}");
        }
        assert_eq!(rmp().fw_page_state(spa(8 << 30)), S::Default);
    }

    #[test]
    fn gctx_create_rules() {
        let mut r = with_gctx();
        let e = r.stored_entry(spa(GCTX));
        assert_eq!(r.fw_page_state(spa(GCTX)), FwPageState::Context);
        assert!(e.vmsa && e.assigned && e.immutable && e.asid == 0);
        // Already Context, a hypervisor page, an uncovered page: not Firmware.
        assert_eq!(r.gctx_create(spa(GCTX)), SnpFwStatus::InvalidPageState);
        assert_eq!(r.gctx_create(spa(GCTX + 4096)), SnpFwStatus::InvalidPageState);
        assert_eq!(r.gctx_create(spa(8 << 30)), SnpFwStatus::InvalidPageState);
        // Reserved address bits; a page of the RMP itself.
        assert_eq!(r.gctx_create(spa(GCTX + 8)), SnpFwStatus::InvalidParam);
        assert_eq!(r.gctx_create(spa(RMP_BASE + 0x8000)), SnpFwStatus::InvalidParam);
        // A 2 MiB firmware page.
        let fw2m = RmpUpdateInput::private(Gpa::ZERO, RmpPageSize::M2, 0, true);
        assert_eq!(r.rmpupdate(HV, spa(0x1_4000_0000), &fw2m), RmpReturn::Success);
        assert_eq!(r.fw_page_state(spa(0x1_4000_0000)), FwPageState::Firmware);
        assert_eq!(r.gctx_create(spa(0x1_4000_0000)), SnpFwStatus::InvalidPageSize);
        assert!(!r.stored_entry(spa(0x1_4000_0000)).vmsa);
    }

    #[test]
    fn launch_start_and_finish_need_a_context_page() {
        let r = with_gctx();
        assert_eq!(r.launch_start(spa(GCTX)), SnpFwStatus::Success);
        assert_eq!(r.launch_finish(spa(GCTX)), SnpFwStatus::Success);
        assert_eq!(r.launch_start(spa(GCTX + 4096)), SnpFwStatus::InvalidGuest);
        assert_eq!(r.launch_finish(spa(GCTX + 4096)), SnpFwStatus::InvalidGuest);
        assert_eq!(r.launch_start(spa(GCTX + 1)), SnpFwStatus::InvalidParam);
        assert_eq!(r.launch_finish(spa(RMP_BASE)), SnpFwStatus::InvalidParam);
        let mut fw = rmp();
        assert_eq!(fw.rmpupdate(HV, spa(GCTX), &RmpUpdateInput::firmware()), RmpReturn::Success);
        assert_eq!(fw.launch_start(spa(GCTX)), SnpFwStatus::InvalidGuest);
    }

    #[test]
    fn launch_update_makes_pre_guest_guest_valid() {
        let mut r = with_gctx();
        pre_guest(&mut r, PAGE, 0x8000_0000, RmpPageSize::K4);
        let perms = [VmplPerms::READ, VmplPerms::empty(), VmplPerms::all()];
        let u = LaunchUpdate { vmpl_perms: perms, ..LaunchUpdate::page_4k(LaunchPageType::Normal) };
        assert_eq!(r.launch_update(spa(GCTX), spa(PAGE), ASID, &u), SnpFwStatus::Success);
        let e = r.stored_entry(spa(PAGE));
        assert_eq!(r.fw_page_state(spa(PAGE)), FwPageState::GuestValid);
        assert_eq!(e.state(), RmpPageState::GuestValid { asid: ASID });
        assert!(e.validated && !e.immutable && !e.vmsa);
        assert_eq!(e.gpa, Gpa::new(0x8000_0000));
        assert_eq!(
            e.vmpl,
            [VMPL_ON_UPDATE[0], VmplPerms::READ, VmplPerms::empty(), VmplPerms::all()]
        );
        // A second LAUNCH_UPDATE of the same page: no longer Pre-Guest.
        assert_eq!(r.launch_update(spa(GCTX), spa(PAGE), ASID, &u), SnpFwStatus::InvalidPageState);
        // A VMSA page gets the VMSA bit.
        pre_guest(&mut r, PAGE + 4096, 0xffff_ffff_f000, RmpPageSize::K4);
        let vmsa = LaunchUpdate::page_4k(LaunchPageType::Vmsa);
        assert_eq!(r.launch_update(spa(GCTX), spa(PAGE + 4096), ASID, &vmsa), SnpFwStatus::Success);
        assert!(r.stored_entry(spa(PAGE + 4096)).vmsa);
        // A 2 MiB Pre-Guest page.
        pre_guest(&mut r, 0x1_0020_0000, 0x4000_0000, RmpPageSize::M2);
        let big = LaunchUpdate {
            page_size: RmpPageSize::M2,
            ..LaunchUpdate::page_4k(LaunchPageType::Zero)
        };
        assert_eq!(
            r.launch_update(spa(GCTX), spa(0x1_0020_0000), ASID, &big),
            SnpFwStatus::Success
        );
        let e = r.entry(spa(0x1_0020_5000));
        assert!(e.validated && !e.immutable && e.page_size == RmpPageSize::M2);
    }

    #[test]
    fn launch_update_preconditions() {
        let mut r = with_gctx();
        pre_guest(&mut r, PAGE, 0x8000_0000, RmpPageSize::K4);
        let before = r.stored_entry(spa(PAGE));
        let n = LaunchUpdate::page_4k(LaunchPageType::Normal);
        let g = spa(GCTX);
        // 1. Reserved address bits.
        assert_eq!(r.launch_update(g, spa(PAGE + 0x10), ASID, &n), SnpFwStatus::InvalidParam);
        assert_eq!(
            r.launch_update(spa(GCTX + 0x10), spa(PAGE), ASID, &n),
            SnpFwStatus::InvalidParam
        );
        // 2. The context operand: not Context, or a page of the RMP.
        assert_eq!(r.launch_update(spa(PAGE), spa(PAGE), ASID, &n), SnpFwStatus::InvalidGuest);
        assert_eq!(r.launch_update(spa(RMP_BASE), spa(PAGE), ASID, &n), SnpFwStatus::InvalidParam);
        // 3. The page: hypervisor-owned, Guest-Invalid (mutable), uncovered, in the RMP.
        assert_eq!(r.launch_update(g, spa(PAGE + 4096), ASID, &n), SnpFwStatus::InvalidPageState);
        let gi = RmpUpdateInput::private(Gpa::new(0x9000_0000), RmpPageSize::K4, ASID, false);
        assert_eq!(r.rmpupdate(HV, spa(PAGE + 8192), &gi), RmpReturn::Success);
        assert_eq!(r.launch_update(g, spa(PAGE + 8192), ASID, &n), SnpFwStatus::InvalidPageState);
        assert_eq!(r.launch_update(g, spa(8 << 30), ASID, &n), SnpFwStatus::InvalidPageState);
        assert_eq!(r.launch_update(g, spa(RMP_BASE + 0x8000), ASID, &n), SnpFwStatus::InvalidParam);
        // 4. PAGE_SIZE differs from the RMP's.
        let big = LaunchUpdate { page_size: RmpPageSize::M2, ..n };
        assert_eq!(r.launch_update(g, spa(PAGE), ASID, &big), SnpFwStatus::InvalidPageSize);
        // 5. A 2 MiB Pre-Guest entry at an address that is not 2 MiB-aligned.
        let odd = RmpEntry {
            assigned: true,
            page_size: RmpPageSize::M2,
            immutable: true,
            asid: ASID,
            ..RmpEntry::ZERO
        };
        r.set_entry(spa(PAGE + 0x10_0000), &odd).unwrap();
        assert_eq!(
            r.launch_update(g, spa(PAGE + 0x10_0000), ASID, &big),
            SnpFwStatus::InvalidAddress
        );
        // 6. VMSA, secrets and CPUID pages must be 4 KiB.
        pre_guest(&mut r, 0x1_0040_0000, 0x4000_0000, RmpPageSize::M2);
        for t in [LaunchPageType::Vmsa, LaunchPageType::Secrets, LaunchPageType::Cpuid] {
            let u = LaunchUpdate { page_size: RmpPageSize::M2, ..LaunchUpdate::page_4k(t) };
            let rc = r.launch_update(g, spa(0x1_0040_0000), ASID, &u);
            assert_eq!(rc, SnpFwStatus::InvalidPageSize, "{t:?}");
        }
        // 7. The page belongs to another ASID.
        assert_eq!(r.launch_update(g, spa(PAGE), ASID + 1, &n), SnpFwStatus::InvalidPageOwner);
        // Nothing changed on any failure.
        assert_eq!(r.stored_entry(spa(PAGE)), before);
        assert_eq!(r.fw_page_state(spa(0x1_0040_0000)), FwPageState::PreGuest);
    }

    #[test]
    fn reclaim_then_rmp_make_shared() {
        // Linux snp_reclaim_pages: SNP_PAGE_RECLAIM, then rmp_make_shared(pfn, 4K).
        let mut r = rmp();
        let p = spa(PAGE);
        let shared = RmpUpdateInput::shared(RmpPageSize::K4);
        assert_eq!(r.rmpupdate(HV, p, &RmpUpdateInput::firmware()), RmpReturn::Success);
        // Immutable: RMPUPDATE cannot take it back.
        assert_eq!(r.rmpupdate(HV, p, &shared), RmpReturn::FailPermission);
        assert_eq!(r.page_reclaim(p, RmpPageSize::K4), SnpFwStatus::Success);
        assert_eq!(r.fw_page_state(p), FwPageState::Reclaim);
        let e = r.stored_entry(p);
        assert!(e.assigned && !e.immutable && e.asid == 0);
        assert_eq!(r.rmpupdate(HV, p, &shared), RmpReturn::Success);
        assert_eq!(r.fw_page_state(p), FwPageState::Hypervisor);
    }

    #[test]
    fn reclaim_by_state() {
        let mut r = rmp();
        let z = RmpEntry::ZERO;
        let a = RmpEntry { assigned: true, immutable: true, ..z };
        let meta = Gpa::new((0x12_0000 << 12) | (GPA_TAG_METADATA << GPA_TAG_SHIFT));
        let cases = [
            (RmpEntry { asid: 7, ..a }, FwPageState::GuestInvalid),
            (RmpEntry { asid: 7, validated: true, ..a }, FwPageState::GuestValid),
            (RmpEntry { gpa: meta, ..a }, FwPageState::Reclaim),
        ];
        for (i, (e, after)) in cases.into_iter().enumerate() {
            let p = spa(PAGE + i as u64 * 4096);
            r.set_entry(p, &e).unwrap();
            assert_eq!(r.page_reclaim(p, RmpPageSize::K4), SnpFwStatus::Success);
            assert_eq!(r.fw_page_state(p), after);
        }
        // The metadata tag is cleared, the PFN kept.
        assert_eq!(r.stored_entry(spa(PAGE + 2 * 4096)).gpa, Gpa::new(0x12_0000 << 12));
        // Already mutable: SUCCESS, unchanged.
        let gv = RmpEntry { asid: 7, validated: true, assigned: true, ..z };
        r.set_entry(spa(PAGE + 3 * 4096), &gv).unwrap();
        assert_eq!(r.page_reclaim(spa(PAGE + 3 * 4096), RmpPageSize::K4), SnpFwStatus::Success);
        assert_eq!(r.stored_entry(spa(PAGE + 3 * 4096)), gv);
    }

    #[test]
    fn reclaim_preconditions() {
        let mut r = with_gctx();
        let k4 = RmpPageSize::K4;
        // A Context page must be decommissioned first.
        assert_eq!(r.page_reclaim(spa(GCTX), k4), SnpFwStatus::InvalidPageState);
        // HV-Fixed and the firmware's IOMMU pages are immutable but not reclaimable.
        let hvf = RmpEntry { immutable: true, ..RmpEntry::ZERO };
        r.set_entry(spa(PAGE), &hvf).unwrap();
        assert_eq!(r.page_reclaim(spa(PAGE), k4), SnpFwStatus::InvalidPageState);
        let iommu = RmpEntry {
            assigned: true,
            immutable: true,
            gpa: Gpa::new(IOMMU_PAGE_GPA),
            ..RmpEntry::ZERO
        };
        r.set_entry(spa(PAGE + 4096), &iommu).unwrap();
        assert_eq!(r.page_reclaim(spa(PAGE + 4096), k4), SnpFwStatus::InvalidPageState);
        // Size mismatch; a 2 MiB entry off its alignment; no entry; reserved bits; the RMP.
        let fw2m = RmpUpdateInput::private(Gpa::ZERO, RmpPageSize::M2, 0, true);
        assert_eq!(r.rmpupdate(HV, spa(0x1_4000_0000), &fw2m), RmpReturn::Success);
        assert_eq!(r.page_reclaim(spa(0x1_4000_0000), k4), SnpFwStatus::InvalidPageSize);
        let odd = RmpEntry {
            page_size: RmpPageSize::M2,
            assigned: true,
            immutable: true,
            ..RmpEntry::ZERO
        };
        r.set_entry(spa(PAGE + 8192), &odd).unwrap();
        assert_eq!(r.page_reclaim(spa(PAGE + 8192), RmpPageSize::M2), SnpFwStatus::InvalidAddress);
        assert_eq!(r.page_reclaim(spa(8 << 30), k4), SnpFwStatus::InvalidPageState);
        assert_eq!(r.page_reclaim(spa(PAGE + 1), k4), SnpFwStatus::InvalidParam);
        assert_eq!(r.page_reclaim(spa(RMP_BASE + 0x4000), k4), SnpFwStatus::InvalidParam);
        // The 2 MiB firmware page at its size: Reclaim.
        assert_eq!(r.page_reclaim(spa(0x1_4000_0000), RmpPageSize::M2), SnpFwStatus::Success);
        assert_eq!(r.fw_page_state(spa(0x1_4000_0000)), FwPageState::Reclaim);
    }

    #[test]
    fn decommission_then_reclaim_the_context_page() {
        let mut r = with_gctx();
        assert_eq!(r.decommission(spa(GCTX)), SnpFwStatus::Success);
        assert_eq!(r.fw_page_state(spa(GCTX)), FwPageState::Firmware);
        assert_eq!(r.decommission(spa(GCTX)), SnpFwStatus::InvalidGuest);
        assert_eq!(r.decommission(spa(GCTX + 2)), SnpFwStatus::InvalidParam);
        assert_eq!(r.page_reclaim(spa(GCTX), RmpPageSize::K4), SnpFwStatus::Success);
        let shared = RmpUpdateInput::shared(RmpPageSize::K4);
        assert_eq!(r.rmpupdate(HV, spa(GCTX), &shared), RmpReturn::Success);
        assert_eq!(r.fw_page_state(spa(GCTX)), FwPageState::Hypervisor);
    }

    /// 512 Pre-Guest (or, validated, Pre-Swap) 4 KiB entries at consecutive GPAs.
    fn smashed(r: &mut Rmp, base: u64, gpa: u64, validated: bool) {
        for i in 0..512 {
            let e = RmpEntry {
                assigned: true,
                immutable: true,
                asid: ASID,
                validated,
                gpa: Gpa::new(gpa + i * 4096),
                vmpl: VMPL_ON_UPDATE,
                ..RmpEntry::ZERO
            };
            r.set_entry(spa(base + i * 4096), &e).unwrap();
        }
    }

    #[test]
    fn unsmash_rebuilds_a_2m_entry() {
        let mut r = rmp();
        let b = 0x1_0000_0000;
        smashed(&mut r, b, 0x4000_0000, false);
        assert_eq!(r.assigned_in_region(spa(b)), 512);
        assert_eq!(r.page_unsmash(spa(b)), SnpFwStatus::Success);
        let e = r.entry(spa(b + 0x3_4000));
        assert_eq!(e.page_size, RmpPageSize::M2);
        assert_eq!((e.asid, e.gpa.raw(), e.immutable), (ASID, 0x4000_0000, true));
        assert_eq!(r.fw_page_state(spa(b)), FwPageState::PreGuest);
        assert_eq!(r.assigned_in_region(spa(b)), 1);
        assert_eq!(r.stored_entry(spa(b + 4096)), RmpEntry::ZERO);
        // Then reclaim at 2 MiB and hand it back with a 2 MiB RMPUPDATE (no overlap).
        assert_eq!(r.page_reclaim(spa(b), RmpPageSize::M2), SnpFwStatus::Success);
        assert_eq!(r.fw_page_state(spa(b)), FwPageState::GuestInvalid);
        let sh = RmpUpdateInput::shared(RmpPageSize::M2);
        assert_eq!(r.rmpupdate(HV, spa(b), &sh), RmpReturn::Success);
        assert!(!r.region_has_assigned(spa(b)));
        // Pre-Swap pages unsmash to a Pre-Swap 2 MiB entry.
        smashed(&mut r, b + M2, 0x4020_0000, true);
        assert_eq!(r.page_unsmash(spa(b + M2)), SnpFwStatus::Success);
        assert_eq!(r.fw_page_state(spa(b + M2)), FwPageState::PreSwap);
    }

    #[test]
    fn unsmash_preconditions() {
        let b = 0x1_0000_0000u64;
        type Spoil = fn(&mut RmpEntry);
        // Each spoils entry 77 (or the first) in one way; every one is INVALID_PAGE_STATE.
        let spoilers: [(u64, Spoil); 8] = [
            (77, |e| e.gpa = Gpa::new(e.gpa.raw() + 4096)),
            (77, |e| e.asid += 1),
            (77, |e| e.vmpl[1] = VmplPerms::READ),
            (77, |e| e.validated = true),
            (77, |e| e.immutable = false),
            (77, |e| e.vmsa = true),
            (77, |e| e.page_size = RmpPageSize::M2),
            (0, |e| e.asid = 0),
        ];
        for (i, f) in spoilers {
            let mut r = rmp();
            smashed(&mut r, b, 0x4000_0000, false);
            let p = spa(b + i * 4096);
            let mut e = r.stored_entry(p);
            f(&mut e);
            r.set_entry(p, &e).unwrap();
            let before: Vec<_> = r.region_entries(spa(b));
            assert_eq!(r.page_unsmash(spa(b)), SnpFwStatus::InvalidPageState, "entry {i}: {e:?}");
            assert_eq!(r.region_entries(spa(b)), before);
        }
        let mut r = rmp();
        // The first GPA not 2 MiB-aligned.
        smashed(&mut r, b, 0x4000_1000, false);
        assert_eq!(r.page_unsmash(spa(b)), SnpFwStatus::InvalidPageState);
        // Not 2 MiB-aligned; no entries; the region holding RMP_BASE; a page of the RMP.
        assert_eq!(r.page_unsmash(spa(b + 4096)), SnpFwStatus::InvalidParam);
        assert_eq!(r.page_unsmash(spa(8 << 30)), SnpFwStatus::InvalidPageState);
        assert_eq!(r.page_unsmash(spa(0)), SnpFwStatus::InvalidAddress);
        assert_eq!(r.page_unsmash(spa(M2)), SnpFwStatus::InvalidParam);
        // Hypervisor pages are not Pre-Guest.
        assert_eq!(r.page_unsmash(spa(b + M2)), SnpFwStatus::InvalidPageState);
    }

    #[test]
    fn snp_init_lays_out_the_rmp() {
        // A segmented RMP with 4 GiB segments: segment 0 maps 1 GiB, segment 253
        // (0xFD_0000_0000, in the legacy HyperTransport hole) maps 1 GiB.
        let mut rst = vec![0u64; 254];
        rst[0] = 0x100_0000 | 1;
        rst[253] = 0x200_0000 | 1;
        let l = RmpLayout::from_segmented_msrs(spa(RMP_BASE), 0, (32 << 8) | 1, &rst).unwrap();
        let mut r = Rmp::new(l);
        let guest = RmpUpdateInput::private(Gpa::new(0), RmpPageSize::K4, 3, false);
        assert_eq!(r.rmpupdate(HV, spa(0x3000_0000), &guest), RmpReturn::Success);
        let init = SnpInit {
            init_rmp: true,
            // One range crosses the RMP's first segment (16 MiB .. 20 MiB): those pages stay
            // Firmware.
            hv_fixed: vec![(spa(0x2000_0000), 2), (spa(0xF0_0000), 0x200)],
            iommu_pages: vec![spa(0x2100_0000)],
        };
        assert_eq!(r.snp_init(&init), SnpFwStatus::Success);
        use FwPageState as S;
        let at = |r: &Rmp, pa: u64| r.fw_page_state(spa(pa));
        // Bookkeeping + RST, and each segment's entries: Firmware.
        for pa in [RMP_BASE, RMP_BASE + 0x4000, 0x100_0000, 0x13f_f000] {
            assert_eq!(at(&r, pa), S::Firmware, "{pa:#x}");
        }
        // Segment 253's entries (32 MiB .. 36 MiB) are RMP pages too.
        assert_eq!(at(&r, 0x200_0000), S::Firmware);
        assert_eq!(at(&r, 0x140_0000), S::Hypervisor);
        // The HV-Fixed ranges, minus the RMP's pages.
        assert_eq!(at(&r, 0x2000_0000), S::HvFixed);
        assert_eq!(at(&r, 0x2000_1000), S::HvFixed);
        assert_eq!(at(&r, 0x2000_2000), S::Hypervisor);
        assert_eq!(at(&r, 0xF0_0000), S::HvFixed);
        assert_eq!(at(&r, 0xFF_F000), S::HvFixed);
        assert_eq!(at(&r, 0x100_0000), S::Firmware);
        // The legacy HT hole, as far as it is covered.
        assert_eq!(at(&r, 0xFD_0000_0000), S::HvFixed);
        assert_eq!(at(&r, 0xFD_3FFF_F000), S::HvFixed);
        assert_eq!(at(&r, 0xFD_4000_0000), S::Default);
        // IOMMU pages; everything else (the guest page included) Hypervisor.
        assert_eq!(at(&r, 0x2100_0000), S::FirmwareIommu);
        assert_eq!(at(&r, 0x3000_0000), S::Hypervisor);
        // SNP_SHUTDOWN_EX hands the IOMMU pages back as Reclaim; RMPUPDATE then works.
        assert_eq!(
            r.snp_shutdown_iommu(&[spa(0x2100_0000), spa(0x2000_0000)]),
            SnpFwStatus::Success
        );
        assert_eq!(at(&r, 0x2100_0000), S::Reclaim);
        assert_eq!(at(&r, 0x2000_0000), S::HvFixed);
        let sh = RmpUpdateInput::shared(RmpPageSize::K4);
        assert_eq!(r.rmpupdate(HV, spa(0x2100_0000), &sh), RmpReturn::Success);
        assert_eq!(r.snp_shutdown_iommu(&[spa(0x2100_0004)]), SnpFwStatus::InvalidParam);
    }

    #[test]
    fn snp_init_without_init_rmp_and_bad_input() {
        let mut r = rmp();
        let guest = RmpUpdateInput::private(Gpa::new(0), RmpPageSize::K4, 3, false);
        assert_eq!(r.rmpupdate(HV, spa(PAGE), &guest), RmpReturn::Success);
        let keep = SnpInit { init_rmp: false, ..SnpInit::default() };
        assert_eq!(r.snp_init(&keep), SnpFwStatus::Success);
        assert!(r.entry(spa(PAGE)).assigned);
        let bad =
            SnpInit { init_rmp: true, hv_fixed: vec![(spa(0x2000_0800), 1)], ..SnpInit::default() };
        assert_eq!(r.snp_init(&bad), SnpFwStatus::InvalidParam);
        assert!(r.entry(spa(PAGE)).assigned);
        let bad =
            SnpInit { init_rmp: true, iommu_pages: vec![spa(0x2000_0010)], ..SnpInit::default() };
        assert_eq!(r.snp_init(&bad), SnpFwStatus::InvalidParam);
        // The contiguous table's pages become Firmware.
        assert_eq!(
            r.snp_init(&SnpInit { init_rmp: true, ..SnpInit::default() }),
            SnpFwStatus::Success
        );
        assert_eq!(r.fw_page_state(spa(RMP_BASE)), FwPageState::Firmware);
        assert_eq!(
            r.fw_page_state(spa(r.layout().rmp_end().raw() & !0xfff)),
            FwPageState::Firmware
        );
        assert_eq!(r.fw_page_state(spa(r.layout().rmp_end().raw() + 1)), FwPageState::Hypervisor);
        assert!(!r.entry(spa(PAGE)).assigned);
    }

    #[test]
    fn df_flush_changes_nothing() {
        let r = with_gctx();
        let before = r.region_entries(spa(GCTX));
        assert_eq!(r.df_flush(), SnpFwStatus::Success);
        assert_eq!(r.region_entries(spa(GCTX)), before);
    }
}
