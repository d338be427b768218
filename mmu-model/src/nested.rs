//! Guest translation: the 2-D walk (guest page tables × NPT/EPT) and guest-physical accesses
//! (a guest without paging: the nested walk alone).
//!
//! A 2-D walk of an n-level guest table under an m-level nested table makes, when nothing is
//! cached, (n+1)(m+1)−1 memory references: each of the n guest entries needs the nested walk
//! of its table's GPA (m references) and then the read itself, and the final GPA needs one
//! more nested walk — 24 for 4×4, 35 for 5×5 (spec/simulators.md §4; spec/tdx.md §5.2). The
//! references come out in that order, each with its SPA, level, stage and kind.
//!
//! Guest page-table pages live in guest-physical memory: a `PhysMemTables<Gpa>` keyed by GPA.
//! Each guest table pointer is translated through the nested table to the SPA that goes in the
//! reference list and to the check hook.
//!
//! Faults are values ([`GuestFault`]): the guest's #PF, #VMEXIT(NPF) with EXITINFO1 bits 0–4,
//! 32 (GUEST_FINAL) or 33 (GUEST_PAGE) and the SNP bits the check stage adds (31, 34–36), or
//! an EPT violation with its exit qualification. Model choices, each documented where made:
//! nested accesses are user accesses under NPT; with EPT A/D flags enabled guest
//! paging-structure accesses are writes for EPT (SDM Vol. 3C, "Accessed and Dirty Flags for
//! EPT"); under NPT a guest table access is a read, and the A/D update of a guest entry needs
//! nested write permission; a walk that faults writes no A/D bits; a GPA at or above the
//! nested table's reach faults as not present.

use crate::addr::PagedAddr;
use crate::check::{
    CheckAllow, CheckRequest, CheckTarget, CheckVerdict, CheckWork, GuestCheckInfo,
    TranslationCheck,
};
use crate::entry::{PagingEntry, Perms};
use crate::ept::EptEntry;
use crate::fault::{EptQualification, EptViolation, GuestFault, NpfExit, NpfExitInfo1};
use crate::gpa::GpaWidth;
use crate::inline::InlineVec;
use crate::level::{Level, Paging};
use crate::npt::NptEntry;
use crate::pte::{PteFlags, PteFormat, X86Pte};
use crate::tables::PhysMemTables;
use crate::tlb::TlbTag;
use crate::walk::{
    AccessKind, Core, CoreEnd, CoreStep, PageFault, PagingControls, PfErrorCode, Privilege,
    RefKind, Stage, WalkRef, WalkStart, X86Masks, base_code, core_walk_into, permits,
};
use sim_core::{Agent, Gpa, Gva, PageSize, Spa};

/// Which nested-paging architecture translates guest-physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NestedKind {
    /// AMD nested page tables (nCR3 in the VMCB): [`NptEntry`] format, faults are
    /// #VMEXIT(NPF).
    Npt,
    /// Intel EPT (EPTP in the VMCS): [`EptEntry`] format, faults are EPT violations or
    /// misconfigurations.
    Ept {
        /// EPTP bit 6: the processor sets EPT A/D flags.
        accessed_dirty: bool,
    },
}

/// The nested (second-stage) translation of a guest: nCR3 or EPTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NestedContext {
    /// NPT or EPT.
    pub kind: NestedKind,
    /// The root table: nCR3, or the EPTP's PML4/PML5 address (EP4TA).
    pub root: Spa,
    /// 4 or 5 levels (EPT page-walk length).
    pub paging: Paging,
    /// Entry format: MAXPHYADDR, and the host C-bit for NPT (ignored for EPT).
    pub format: PteFormat,
}

/// How a guest's memory is protected: what decides whether an access is private.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMemory {
    /// No memory encryption.
    Plain,
    /// SEV / SEV-SNP: the C-bit (at the guest's configured position, in guest page-table
    /// entries, or in the GPA of a guest-physical access) marks private memory; guest
    /// page-table accesses are always private (APM Vol. 2 §15.34.5, as read here).
    Sev,
    /// A TDX trust domain: the shared bit of the GPA selects the shared EPT (`shared_root`)
    /// over the Secure EPT ([`NestedContext::root`]); spec/tdx.md §1.1.
    Tdx {
        /// The TD's guest-physical address width (fixes the shared bit).
        gpaw: GpaWidth,
        /// The shared EPT's root.
        shared_root: Spa,
    },
}

/// A guest's own paging: gCR3, depth, entry format and control bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPaging {
    /// gCR3: the guest-physical address of the guest's root table.
    pub root: Gpa,
    /// 4- or 5-level.
    pub paging: Paging,
    /// Guest entry format (the guest's MAXPHYADDR and C-bit).
    pub format: PteFormat,
    /// Guest CR0/CR4/RFLAGS bits.
    pub controls: PagingControls,
}

/// The translation state of a guest vCPU: what a VMRUN / VM entry loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestContext {
    /// ASID (AMD) or VPID (Intel), and the guest's PCID.
    pub tag: TlbTag,
    /// The guest's own paging, or `None` when it runs without paging (its linear addresses
    /// are guest-physical: GPA traces).
    pub paging: Option<GuestPaging>,
    /// The nested translation.
    pub nested: NestedContext,
    /// Memory protection.
    pub memory: GuestMemory,
}

impl GuestContext {
    /// Control bits that apply (a guest without paging has none).
    pub fn controls(&self) -> PagingControls {
        self.paging.map_or(
            PagingControls { cr0_wp: false, cr4_smep: false, cr4_smap: false, rflags_ac: false },
            |p| p.controls,
        )
    }
}

/// The address a guest access uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GuestAddr {
    /// A guest-virtual address, translated by the guest's page tables then the nested ones.
    Virtual(Gva),
    /// A guest-physical address (guest without paging): the nested tables alone. For an SEV
    /// guest, the C-bit position of the GPA carries the C-bit and is not an address bit.
    Physical(Gpa),
}

impl GuestAddr {
    /// The raw value (what the TLB is indexed by).
    pub const fn raw(self) -> u64 {
        match self {
            GuestAddr::Virtual(v) => v.raw(),
            GuestAddr::Physical(p) => p.raw(),
        }
    }
}

/// One guest access to walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestWalkRequest {
    /// The address.
    pub addr: GuestAddr,
    /// Read, write or fetch.
    pub access: AccessKind,
    /// Guest CPL 0–2 or 3.
    pub privilege: Privilege,
    /// Who accesses (passed to the checker).
    pub who: Agent,
}

/// Most references of one 2-D walk: 35 reads (5×5), 5 guest A/D writes and one A/D write per
/// nested entry read (30).
pub const MAX_2D_REFS: usize = 70;

/// The references of a 2-D walk, in order.
pub type NestedRefs = InlineVec<WalkRef<Spa>, MAX_2D_REFS>;

/// The functional result of a guest walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestTranslation {
    /// The access translates.
    Translated {
        /// The system-physical address (with the offset).
        spa: Spa,
        /// The guest-physical address (with the offset; C-bit removed).
        gpa: Gpa,
        /// The combined page size: the smaller of the guest leaf and the nested leaf.
        size: PageSize,
        /// Guest permissions (Perms::ALL for a guest without paging).
        perms: Perms,
        /// Nested permissions.
        nested_perms: Perms,
        /// The guest leaf's G bit.
        global: bool,
        /// D of the guest leaf (and of the nested leaf where the nested stage tracks D).
        dirty: bool,
        /// Whether the access is private (see [`GuestCheckInfo::private`]).
        private: Option<bool>,
    },
    /// The access faults.
    Fault(GuestFault),
    /// The GVA is not canonical for the guest's paging depth (#GP in the guest).
    NonCanonical {
        /// The address.
        addr: Gva,
    },
}

/// A guest walk's result and references.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestWalk {
    /// The outcome.
    pub outcome: GuestTranslation,
    /// The references, in order (A/D writes only when the walk translated).
    pub refs: NestedRefs,
}

/// A guest walk through the check stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedGuestWalk {
    /// The walk (its outcome is a fault if a check failed).
    pub walk: GuestWalk,
    /// For a translation: what the checker allowed.
    pub allow: Option<CheckAllow>,
}

// ---------------------------------------------------------------------------------------------
// Caches the walker may consult (the MMU's nested TLB and paging-structure caches).

/// A nested-TLB hit: a gPA page's translation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NtlbHit {
    /// Frame of the cached translation (aligned to `size`).
    pub frame: Spa,
    pub size: PageSize,
    pub perms: Perms,
    pub dirty: bool,
}

/// Lookups the 2-D walker makes in the MMU's caches. [`NoCaches`] for the functional path.
pub(crate) trait Caches2d {
    /// Guest PWC: where the guest walk of `gva` can start.
    fn guest_start(&mut self, gva: u64, top: Level) -> Option<WalkStart<Gpa>>;
    /// Nested TLB: a cached translation of `gpa` under `root`.
    fn ntlb(&mut self, root: Spa, gpa: Gpa) -> Option<NtlbHit>;
    /// Nested PWC: where the nested walk of `gpa` under `root` can start.
    fn nested_start(&mut self, root: Spa, gpa: Gpa, top: Level) -> Option<WalkStart<Spa>>;
}

/// No caches: every walk starts at the root and makes every reference.
pub(crate) struct NoCaches;

impl Caches2d for NoCaches {
    fn guest_start(&mut self, _gva: u64, _top: Level) -> Option<WalkStart<Gpa>> {
        None
    }
    fn ntlb(&mut self, _root: Spa, _gpa: Gpa) -> Option<NtlbHit> {
        None
    }
    fn nested_start(&mut self, _root: Spa, _gpa: Gpa, _top: Level) -> Option<WalkStart<Spa>> {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// One nested translation.

/// What a nested translation is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The GPA of a guest page-table entry.
    GuestTable,
    /// The final GPA of the access.
    Final,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum NestedResult {
    Ok {
        frame: Spa,
        size: PageSize,
        perms: Perms,
        dirty: bool,
    },
    /// Not present (or out of the table's reach); the rights ANDed so far are all clear.
    NotPresent,
    Malformed,
    Denied {
        perms: Perms,
    },
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct NestedStep {
    /// The GPA translated (C-bit removed; TDX shared bit kept).
    pub gpa: Gpa,
    /// The root walked.
    pub root: Spa,
    /// Entries read (none when the nested TLB hit).
    pub core: Core<Spa>,
    pub from_ntlb: bool,
    /// The walk started below a nested-PWC hit.
    pub pwc_start: Option<Level>,
    pub result: NestedResult,
    pub purpose: Purpose,
    /// The access was checked as a write.
    pub write: bool,
}

impl Default for NestedStep {
    fn default() -> Self {
        NestedStep {
            gpa: Gpa::new(0),
            root: Spa::ZERO,
            core: Core {
                steps: InlineVec::new(),
                end: CoreEnd::NotPresent,
                and_all: u64::MAX,
                ad: false,
            },
            from_ntlb: false,
            pwc_start: None,
            result: NestedResult::NotPresent,
            purpose: Purpose::Final,
            write: false,
        }
    }
}

/// Whether the nested stage tracks A/D bits.
fn tracks_ad(kind: NestedKind) -> bool {
    match kind {
        NestedKind::Npt => true,
        NestedKind::Ept { accessed_dirty } => accessed_dirty,
    }
}

/// Nested permission check: NPT treats every access as a user access (APM §15.25.5, as read
/// here); EPT checks R, W or X.
fn nested_permits(kind: NestedKind, perms: Perms, access: AccessKind) -> bool {
    let user_ok = match kind {
        NestedKind::Npt => perms.user,
        NestedKind::Ept { .. } => true,
    };
    user_ok
        && match access {
            AccessKind::Read => perms.readable,
            AccessKind::Write => perms.writable,
            AccessKind::Fetch => perms.executable,
        }
}

/// Translate `gpa` through the nested table into `step` (overwriting every field).
#[allow(clippy::too_many_arguments)] // the walker's context, spelled out
fn nested_translate_into<C: Caches2d>(
    step: &mut NestedStep,
    host: &PhysMemTables<Spa>,
    n: &NestedContext,
    root: Spa,
    gpa: Gpa,
    access: AccessKind,
    purpose: Purpose,
    caches: &mut C,
) {
    let write = access == AccessKind::Write;
    step.gpa = gpa;
    step.root = root;
    step.purpose = purpose;
    step.write = write;
    step.from_ntlb = false;
    step.pwc_start = None;
    step.result = NestedResult::NotPresent;
    step.core.steps.clear();
    step.core.end = CoreEnd::NotPresent;
    if !gpa.in_range(n.paging) {
        return;
    }
    let ad = tracks_ad(n.kind);
    if let Some(h) = caches.ntlb(root, gpa)
        && nested_permits(n.kind, h.perms, access)
        && (!write || h.dirty || !ad)
    {
        step.from_ntlb = true;
        step.result =
            NestedResult::Ok { frame: h.frame, size: h.size, perms: h.perms, dirty: h.dirty };
        return;
    }
    let start = caches.nested_start(root, gpa, n.paging.top());
    step.pwc_start = start.map(|s| s.level);
    let start = start.unwrap_or(WalkStart::root(root, n.paging));
    let core = &mut step.core;
    match n.kind {
        NestedKind::Npt => core_walk_into::<NptEntry, Gpa, Spa>(core, host, start, n.format, gpa),
        NestedKind::Ept { .. } => {
            core_walk_into::<EptEntry, Gpa, Spa>(core, host, start, n.format, gpa);
        }
    }
    step.result = match core.end {
        CoreEnd::NotPresent => NestedResult::NotPresent,
        CoreEnd::Malformed => NestedResult::Malformed,
        CoreEnd::Leaf { size, frame } => {
            let perms = core.perms();
            if nested_permits(n.kind, perms, access) {
                let dirty_bit = match n.kind {
                    NestedKind::Npt => NptEntry::DIRTY,
                    NestedKind::Ept { .. } => EptEntry::DIRTY,
                };
                if ad {
                    match n.kind {
                        NestedKind::Npt => core.set_ad::<NptEntry>(write),
                        NestedKind::Ept { .. } => core.set_ad::<EptEntry>(write),
                    }
                }
                let leaf = core.steps.last().expect("a leaf was read");
                let dirty = !ad || (leaf.entry | leaf.set) & dirty_bit != 0;
                NestedResult::Ok { frame, size, perms, dirty }
            } else {
                NestedResult::Denied { perms }
            }
        }
    };
}

// ---------------------------------------------------------------------------------------------
// The common 2-D walk, without a plan.

/// What [`fast_walk_2d`] found: the translation of a 2-D walk that had nothing to fault on
/// and no A/D bit to set (what [`plan_2d_into`] gives for it as
/// [`GuestTranslation::Translated`], `private` being `None`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fast2d {
    pub spa: Spa,
    pub size: PageSize,
    pub perms: Perms,
    pub nested_perms: Perms,
    pub global: bool,
    pub dirty: bool,
}

/// The entries above the page table that the last NPT translation of one [`fast_walk_2d`]
/// read, for the next one under the same 2 MiB of GPA space: within one walk nothing is
/// written, so reading them again would give the same values at the same addresses (the
/// guest's table pages usually share them).
#[derive(Clone, Copy, Debug, Default)]
struct UpperPath {
    /// `gpa >> 21` of the translation that read them, `u64::MAX` for none.
    prefix: u64,
    /// How many entries (root first), and their addresses.
    n: usize,
    addrs: [Spa; 4],
    /// The AND and the OR of those entries.
    and: u64,
    or: u64,
    /// The page table the last of them points at.
    table: u64,
}

/// One NPT translation of [`fast_walk_2d`]: `gpa` through `n`'s table for an access of
/// `access`, each entry read listed in `refs` as a nested read. `Some((spa, size, rights,
/// D))` when every entry is present and well formed (masks `nm`, of `n.format`), already has
/// A (and the leaf D for a write), and the rights allow the access: what
/// `nested_translate_into` gives for it with no cache; `None` otherwise. `up`: the upper
/// path of the walk's previous NPT translation, reused if `gpa` shares it, else replaced.
#[inline(always)]
fn fast_npt(
    host: &PhysMemTables<Spa>,
    n: &NestedContext,
    nm: &X86Masks,
    gpa: u64,
    access: AccessKind,
    refs: &mut NestedRefs,
    up: &mut UpperPath,
) -> Option<(Spa, PageSize, Perms, bool)> {
    const P: u64 = PteFlags::PRESENT.bits();
    const HUGE: u64 = PteFlags::HUGE.bits();
    if gpa >> n.paging.va_bits() != 0 {
        return None;
    }
    let top = n.paging.top().idx();
    let mut table = n.root.raw();
    let mut idx = top;
    let (mut and_all, mut or_all) = (u64::MAX, 0);
    let fresh = up.prefix != gpa >> 21;
    if !fresh {
        for (k, &addr) in up.addrs[..up.n].iter().enumerate() {
            let level = *Level::ALL.get(top + k)?;
            refs.push(WalkRef { addr, level, kind: RefKind::Read, stage: Stage::Nested });
        }
        (and_all, or_all, table, idx) = (up.and, up.or, up.table, 4);
    } else {
        up.prefix = u64::MAX;
    }
    let (leaf_idx, leaf) = loop {
        let rsvd = nm.rsvd.get(idx)?;
        let addr = Spa::new_truncate(table + 8 * ((gpa >> (48 - 9 * idx)) & 0x1ff));
        let raw = host.read(addr);
        let huge = raw & HUGE != 0;
        if raw & P == 0 || raw & rsvd[usize::from(huge)] != 0 {
            return None;
        }
        let level = *Level::ALL.get(idx)?;
        refs.push(WalkRef { addr, level, kind: RefKind::Read, stage: Stage::Nested });
        if huge || idx == 4 {
            if fresh && idx == 4 {
                // Every entry above the page table: remember them.
                (up.prefix, up.n, up.and, up.or, up.table) =
                    (gpa >> 21, 4 - top, and_all, or_all, table);
            }
            break (idx, raw);
        }
        if fresh {
            *up.addrs.get_mut(idx - top)? = addr;
        }
        and_all &= raw;
        or_all |= raw;
        table = raw & nm.addr;
        idx += 1;
    };
    and_all &= leaf;
    or_all |= leaf;
    let size = fast_leaf_size(leaf_idx);
    let perms = Perms {
        readable: true,
        writable: and_all & PteFlags::WRITABLE.bits() != 0,
        user: and_all & PteFlags::USER.bits() != 0,
        executable: or_all & PteFlags::NO_EXECUTE.bits() == 0,
    };
    let write = access == AccessKind::Write;
    if !nested_permits(NestedKind::Npt, perms, access)
        || and_all & PteFlags::ACCESSED.bits() == 0
        || (write && leaf & PteFlags::DIRTY.bits() == 0)
    {
        return None;
    }
    let spa = Spa::new_truncate(leaf & nm.addr & !(size.bytes() - 1) | (gpa & (size.bytes() - 1)));
    Some((spa, size, perms, leaf & PteFlags::DIRTY.bits() != 0))
}

/// The size of a leaf at level index `idx` (2: PDPT, 3: PD, else PT).
#[inline(always)]
fn fast_leaf_size(idx: usize) -> PageSize {
    match idx {
        2 => PageSize::G1,
        3 => PageSize::M2,
        _ => PageSize::K4,
    }
}

/// The common 2-D walk of `gva` for a guest with paging over NPT, plain memory and no nested
/// TLB or paging-structure cache (the caller checks those): every guest and nested entry
/// present and well formed (guest masks `gm` of the guest's format, nested `nm` of the NPT's),
/// already carrying A (and for a write the leaves' D), and the access allowed by both stages.
/// Lists the walk's references in `refs` (in [`Plan2d::push_refs`]'s order) and returns what
/// [`plan_2d_into`] gives for the same walk; `None` (with `refs` partly written) when the walk
/// needs the plan. Nothing is written to the tables.
#[allow(clippy::too_many_arguments)] // the walk request, spelled out
#[inline(always)]
pub(crate) fn fast_walk_2d(
    host: &PhysMemTables<Spa>,
    guest: &PhysMemTables<Gpa>,
    ctx: &GuestContext,
    gm: &X86Masks,
    nm: &X86Masks,
    gva: Gva,
    access: AccessKind,
    privilege: Privilege,
    refs: &mut NestedRefs,
) -> Option<Fast2d> {
    const P: u64 = PteFlags::PRESENT.bits();
    const HUGE: u64 = PteFlags::HUGE.bits();
    let gp = ctx.paging?;
    if !gva.in_range(gp.paging) {
        return None;
    }
    let gva = gva.raw();
    // The guest's own walk (its tables are stored by GPA).
    let (mut addrs, mut n) = ([0u64; 5], 0);
    let first = gp.paging.top().idx();
    let mut table = gp.root.raw();
    let mut idx = first;
    let (mut and_all, mut or_all) = (u64::MAX, 0);
    let (leaf_idx, leaf) = loop {
        let rsvd = gm.rsvd.get(idx)?;
        let addr = Gpa::new_truncate(table + 8 * ((gva >> (48 - 9 * idx)) & 0x1ff));
        let raw = guest.read(addr);
        let huge = raw & HUGE != 0;
        if raw & P == 0 || raw & rsvd[usize::from(huge)] != 0 {
            return None;
        }
        *addrs.get_mut(n)? = addr.raw();
        n += 1;
        and_all &= raw;
        or_all |= raw;
        if huge || idx == 4 {
            break (idx, raw);
        }
        table = raw & gm.addr;
        idx += 1;
    };
    let perms = Perms {
        readable: true,
        writable: and_all & PteFlags::WRITABLE.bits() != 0,
        user: and_all & PteFlags::USER.bits() != 0,
        executable: or_all & PteFlags::NO_EXECUTE.bits() == 0,
    };
    if !permits(perms, access, privilege, gp.controls)
        || and_all & PteFlags::ACCESSED.bits() == 0
        || (access == AccessKind::Write && leaf & PteFlags::DIRTY.bits() == 0)
    {
        return None;
    }
    // Each guest entry: its nested translation (a read under NPT), then its read.
    let mut up = UpperPath { prefix: u64::MAX, ..UpperPath::default() };
    for (i, &egpa) in addrs[..n].iter().enumerate() {
        let (spa, _, _, _) =
            fast_npt(host, &ctx.nested, nm, egpa, AccessKind::Read, refs, &mut up)?;
        let level = *Level::ALL.get(first + i)?;
        refs.push(WalkRef { addr: spa, level, kind: RefKind::Read, stage: Stage::Guest });
    }
    let gsize = fast_leaf_size(leaf_idx);
    let gpa =
        Gpa::new_truncate(leaf & gm.addr & !(gsize.bytes() - 1) | (gva & (gsize.bytes() - 1)));
    let (spa, nsize, nested_perms, ndirty) =
        fast_npt(host, &ctx.nested, nm, gpa.raw(), access, refs, &mut up)?;
    Some(Fast2d {
        spa,
        size: gsize.min(nsize),
        perms,
        nested_perms,
        global: leaf & PteFlags::GLOBAL.bits() != 0,
        dirty: leaf & PteFlags::DIRTY.bits() != 0 && ndirty,
    })
}

// ---------------------------------------------------------------------------------------------
// The 2-D plan.

/// One nested translation and the guest entry read after it (none for the final one).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Item {
    pub nested: NestedStep,
    /// The guest entry read (GPA address) and its SPA.
    pub guest: Option<(CoreStep<Gpa>, Spa)>,
}

/// A 2-D walk computed without side effects.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan2d {
    pub outcome: GuestTranslation,
    pub items: InlineVec<Item, 6>,
    /// The guest walk started below a guest-PWC hit at this level.
    pub guest_pwc_start: Option<Level>,
    /// The guest walk (for guest-PWC fills); empty when the guest has no paging.
    pub guest_core: Core<Gpa>,
}

impl Default for Plan2d {
    fn default() -> Self {
        Plan2d {
            outcome: GuestTranslation::NonCanonical { addr: Gva::new(0) },
            items: InlineVec::new(),
            guest_pwc_start: None,
            guest_core: Core {
                steps: InlineVec::new(),
                end: CoreEnd::NotPresent,
                and_all: u64::MAX,
                ad: false,
            },
        }
    }
}

fn private_of(memory: GuestMemory, gpa: Gpa, c_bit: bool) -> Option<bool> {
    match memory {
        GuestMemory::Plain => None,
        GuestMemory::Sev => Some(c_bit),
        GuestMemory::Tdx { gpaw, .. } => Some(!gpaw.is_shared(gpa)),
    }
}

fn root_for(ctx: &GuestContext, gpa: Gpa) -> Spa {
    match ctx.memory {
        GuestMemory::Tdx { gpaw, shared_root } if gpaw.is_shared(gpa) => shared_root,
        GuestMemory::Plain | GuestMemory::Sev | GuestMemory::Tdx { .. } => ctx.nested.root,
    }
}

/// The fault for a failed nested translation (or a failed check of one, `extra` bits).
pub(crate) fn nested_fault(
    ctx: &GuestContext,
    step: &NestedStep,
    access: AccessKind,
    gla: Gva,
    private: Option<bool>,
    extra: NpfExitInfo1,
) -> GuestFault {
    let final_ = step.purpose == Purpose::Final;
    let (present, perms, malformed) = match step.result {
        NestedResult::NotPresent => (false, Perms::default(), false),
        NestedResult::Malformed => (true, Perms::default(), true),
        NestedResult::Denied { perms } | NestedResult::Ok { perms, .. } => (true, perms, false),
    };
    match ctx.nested.kind {
        NestedKind::Npt => {
            let mut info = NpfExitInfo1::USER | extra;
            if present {
                info |= NpfExitInfo1::PRESENT;
            }
            if malformed {
                info |= NpfExitInfo1::RESERVED;
            }
            match access {
                AccessKind::Read => {}
                AccessKind::Write => info |= NpfExitInfo1::WRITE,
                AccessKind::Fetch => info |= NpfExitInfo1::FETCH,
            }
            info |= if final_ { NpfExitInfo1::GUEST_FINAL } else { NpfExitInfo1::GUEST_PAGE };
            if matches!(ctx.memory, GuestMemory::Sev) && private == Some(true) {
                info |= NpfExitInfo1::ENC;
            }
            GuestFault::Npf(NpfExit { info1: info, gpa: step.gpa })
        }
        NestedKind::Ept { .. } => {
            if malformed {
                return GuestFault::EptMisconfig { gpa: step.gpa };
            }
            let mut q = match access {
                AccessKind::Read => EptQualification::READ,
                AccessKind::Write => EptQualification::WRITE,
                AccessKind::Fetch => EptQualification::FETCH,
            };
            if perms.readable {
                q |= EptQualification::READABLE;
            }
            if perms.writable {
                q |= EptQualification::WRITABLE;
            }
            if perms.executable {
                q |= EptQualification::EXECUTABLE;
            }
            q |= EptQualification::GLA_VALID;
            if final_ {
                q |= EptQualification::GLA_TRANSLATED;
            }
            GuestFault::EptViolation(EptViolation { qual: q, gpa: step.gpa, gla: Some(gla) })
        }
    }
}

/// Plan a guest access: the 2-D walk (or the nested walk alone), consulting `caches`.
pub(crate) fn plan_2d<C: Caches2d>(
    host: &PhysMemTables<Spa>,
    guest: &PhysMemTables<Gpa>,
    ctx: &GuestContext,
    req: &GuestWalkRequest,
    caches: &mut C,
) -> Plan2d {
    let mut plan = Plan2d::default();
    plan_2d_into(&mut plan, host, guest, ctx, req, caches);
    plan
}

/// [`plan_2d`] into `plan` (overwritten), so that the MMU reuses one buffer.
pub(crate) fn plan_2d_into<C: Caches2d>(
    plan: &mut Plan2d,
    host: &PhysMemTables<Spa>,
    guest: &PhysMemTables<Gpa>,
    ctx: &GuestContext,
    req: &GuestWalkRequest,
    caches: &mut C,
) {
    plan.outcome = GuestTranslation::NonCanonical { addr: Gva::new(req.addr.raw()) };
    plan.items.clear();
    plan.guest_pwc_start = None;
    plan.guest_core.steps.clear();
    plan.guest_core.end = CoreEnd::NotPresent;
    let access = req.access;
    let gla = Gva::new(req.addr.raw());
    // The guest stage: final GPA, its C-bit, guest rights, leaf size, G and D.
    let (gpa, c_bit, gperms, gsize, global, gdirty) = match (req.addr, ctx.paging) {
        (GuestAddr::Physical(p), _) => {
            let cmask = match ctx.memory {
                GuestMemory::Sev => {
                    ctx.paging.map_or(PteFormat::default(), |g| g.format).cbit.mask()
                }
                GuestMemory::Plain | GuestMemory::Tdx { .. } => 0,
            };
            let gpa = Gpa::new_truncate(p.raw() & !cmask);
            (gpa, p.raw() & cmask != 0, Perms::ALL, PageSize::G1, false, true)
        }
        (GuestAddr::Virtual(_), None) => {
            // Paging off: linear = physical.
            (Gpa::new_truncate(req.addr.raw()), false, Perms::ALL, PageSize::G1, false, true)
        }
        (GuestAddr::Virtual(gva), Some(gp)) => {
            if !gva.in_range(gp.paging) {
                return;
            }
            let start = caches.guest_start(gva.raw(), gp.paging.top());
            plan.guest_pwc_start = start.map(|s| s.level);
            let start = start.unwrap_or(WalkStart::root(gp.root, gp.paging));
            core_walk_into::<X86Pte, Gva, Gpa>(&mut plan.guest_core, guest, start, gp.format, gva);
            // Nested-translate each guest entry's GPA before its read.
            let ept_ad = matches!(ctx.nested.kind, NestedKind::Ept { accessed_dirty: true });
            let table_access = if ept_ad { AccessKind::Write } else { AccessKind::Read };
            for i in 0..plan.guest_core.steps.len() {
                let s = plan.guest_core.steps[i];
                let egpa = s.addr;
                let item = plan.items.push_reuse();
                nested_translate_into(
                    &mut item.nested,
                    host,
                    &ctx.nested,
                    root_for(ctx, egpa),
                    egpa,
                    table_access,
                    Purpose::GuestTable,
                    caches,
                );
                match item.nested.result {
                    NestedResult::Ok { frame, size, .. } => {
                        let spa =
                            Spa::new_truncate(frame.raw() | (egpa.raw() & (size.bytes() - 1)));
                        item.guest = Some((s, spa));
                    }
                    NestedResult::NotPresent
                    | NestedResult::Malformed
                    | NestedResult::Denied { .. } => {
                        item.guest = None;
                        let private = private_of(ctx.memory, egpa, true);
                        plan.outcome = GuestTranslation::Fault(nested_fault(
                            ctx,
                            &item.nested,
                            table_access,
                            gla,
                            private,
                            NpfExitInfo1::empty(),
                        ));
                        return;
                    }
                }
            }
            let code = base_code(access, req.privilege);
            let pf = |extra: PfErrorCode| {
                GuestTranslation::Fault(GuestFault::PageFault(PageFault {
                    code: code | extra,
                    addr: gva,
                }))
            };
            let core = &mut plan.guest_core;
            match core.end {
                CoreEnd::NotPresent => {
                    plan.outcome = pf(PfErrorCode::empty());
                    return;
                }
                CoreEnd::Malformed => {
                    plan.outcome = pf(PfErrorCode::PRESENT | PfErrorCode::RESERVED);
                    return;
                }
                CoreEnd::Leaf { size, frame } => {
                    let perms = core.perms();
                    if !permits(perms, access, req.privilege, gp.controls) {
                        plan.outcome = pf(PfErrorCode::PRESENT);
                        return;
                    }
                    core.set_ad::<X86Pte>(access == AccessKind::Write);
                    // Guest A/D updates are writes to guest memory: under NPT (and EPT without
                    // A/D) the table access was translated as a read, so the update needs
                    // nested write permission now.
                    // No planned write (`core.ad` false): every `set` is 0, nothing to check.
                    let planned: &[CoreStep<Gpa>] = if core.ad { &core.steps } else { &[] };
                    for (i, s) in planned.iter().enumerate() {
                        let item = &mut plan.items[i];
                        if s.set == 0 {
                            continue;
                        }
                        item.guest = item.guest.map(|(_, spa)| (*s, spa));
                        if item.nested.write {
                            continue;
                        }
                        let NestedResult::Ok { perms: np, .. } = item.nested.result else {
                            unreachable!("translated above")
                        };
                        if !nested_permits(ctx.nested.kind, np, AccessKind::Write) {
                            let mut denied = item.nested;
                            denied.result = NestedResult::Denied { perms: np };
                            let private = private_of(ctx.memory, s.addr, true);
                            plan.outcome = GuestTranslation::Fault(nested_fault(
                                ctx,
                                &denied,
                                AccessKind::Write,
                                gla,
                                private,
                                NpfExitInfo1::empty(),
                            ));
                            // No A/D writes on a faulting walk.
                            for it in plan.items.iter_mut() {
                                if let Some((g, _)) = it.guest.as_mut() {
                                    g.set = 0;
                                }
                            }
                            core.steps.iter_mut().for_each(|s| s.set = 0);
                            return;
                        }
                        // The nested leaf becomes dirty if the stage tracks D.
                        if tracks_ad(ctx.nested.kind) && !item.nested.from_ntlb {
                            let n = item.nested.core.steps.len();
                            let dbit = match ctx.nested.kind {
                                NestedKind::Npt => NptEntry::DIRTY,
                                NestedKind::Ept { .. } => EptEntry::DIRTY,
                            };
                            if let Some(leaf) = item.nested.core.steps.get_mut(n.wrapping_sub(1))
                                && leaf.entry & dbit == 0
                            {
                                leaf.set |= dbit;
                                item.nested.core.ad = true;
                            }
                        }
                    }
                    let leaf = core.steps.last().expect("a leaf was read");
                    let e = X86Pte::new(leaf.entry | leaf.set);
                    let attrs = e.leaf_attrs(size, gp.format);
                    let gpa = Gpa::new_truncate(frame.raw() | (gva.raw() & (size.bytes() - 1)));
                    (
                        gpa,
                        attrs.encrypted,
                        perms,
                        size,
                        attrs.flags.contains(crate::pte::PteFlags::GLOBAL),
                        attrs.flags.contains(crate::pte::PteFlags::DIRTY),
                    )
                }
            }
        }
    };
    // The final nested translation.
    let private = private_of(ctx.memory, gpa, c_bit);
    let item = plan.items.push_reuse();
    item.guest = None;
    nested_translate_into(
        &mut item.nested,
        host,
        &ctx.nested,
        root_for(ctx, gpa),
        gpa,
        access,
        Purpose::Final,
        caches,
    );
    plan.outcome = match item.nested.result {
        NestedResult::Ok { frame, size: nsize, perms: nperms, dirty: ndirty } => {
            let size = gsize.min(nsize);
            let spa = Spa::new_truncate(frame.raw() | (gpa.raw() & (nsize.bytes() - 1)));
            GuestTranslation::Translated {
                spa,
                gpa,
                size,
                perms: gperms,
                nested_perms: nperms,
                global,
                dirty: gdirty && ndirty,
                private,
            }
        }
        NestedResult::NotPresent | NestedResult::Malformed | NestedResult::Denied { .. } => {
            GuestTranslation::Fault(nested_fault(
                ctx,
                &item.nested,
                access,
                gla,
                private,
                NpfExitInfo1::empty(),
            ))
        }
    };
}

impl Plan2d {
    fn ok(&self) -> bool {
        matches!(self.outcome, GuestTranslation::Translated { .. })
    }

    /// The references, in order: for each item its nested references, then its guest read;
    /// each A/D write right after its read (only when the walk translated).
    pub fn refs(&self) -> NestedRefs {
        let mut refs = NestedRefs::new();
        self.push_refs(&mut refs);
        refs
    }

    /// [`Plan2d::refs`] into `refs`.
    pub fn push_refs(&self, refs: &mut NestedRefs) {
        let ok = self.ok();
        for it in &self.items {
            it.nested.core.push_refs(refs, Stage::Nested, ok);
            if let Some((g, spa)) = it.guest {
                let r =
                    WalkRef { addr: spa, level: g.level, kind: RefKind::Read, stage: Stage::Guest };
                refs.push(r);
                if ok && g.set != 0 {
                    refs.push(WalkRef { kind: RefKind::AdWrite, ..r });
                }
            }
        }
    }

    /// Write the planned A/D bits (guest entries into the guest tables, nested entries into
    /// the host tables) if the walk translated.
    pub fn commit(&self, host: &mut PhysMemTables<Spa>, guest: &mut PhysMemTables<Gpa>) {
        if !self.ok() {
            return;
        }
        for it in &self.items {
            it.nested.core.commit(host);
            if let Some((g, _)) = it.guest
                && g.set != 0
            {
                guest.write(g.addr, g.entry | g.set);
            }
        }
    }

    /// Run the check stage over the references and the data access (if the walk translated);
    /// a failure turns the outcome into the guest fault it causes.
    pub fn run_checks<C: TranslationCheck + ?Sized>(
        &mut self,
        ctx: &GuestContext,
        req: &GuestWalkRequest,
        checker: &mut C,
        work: &mut CheckWork,
    ) -> Option<CheckAllow> {
        let GuestTranslation::Translated { spa, gpa, size, private, .. } = self.outcome else {
            return None;
        };
        if checker.allows_everything() {
            return Some(CheckAllow::WRITE_OK);
        }
        let gla = Gva::new(req.addr.raw());
        let asid = ctx.tag.asid;
        // The first failed check: the item, the access kind, the effective C-bit, the verdict.
        let mut fail: Option<(usize, AccessKind, Option<bool>, CheckVerdict)> = None;
        let leaf_size = |i: usize| match self.items[i].nested.result {
            NestedResult::Ok { size, .. } => size,
            NestedResult::NotPresent | NestedResult::Malformed | NestedResult::Denied { .. } => {
                PageSize::K4
            }
        };
        'items: for (i, it) in self.items.iter().enumerate() {
            let info = GuestCheckInfo {
                asid,
                gpa: it.nested.gpa,
                private: None,
                nested_size: PageSize::K4,
            };
            for s in &it.nested.core.steps {
                let targets = [
                    Some(CheckTarget::TableRead { level: s.level }),
                    (s.set != 0).then_some(CheckTarget::TableWrite { level: s.level }),
                ];
                for t in targets.into_iter().flatten() {
                    let r = CheckRequest {
                        spa: s.addr,
                        target: t,
                        who: req.who,
                        privilege: req.privilege,
                        stage: Stage::Nested,
                        guest: Some(info),
                    };
                    let v = checker.check(&r, work);
                    if !matches!(v, CheckVerdict::Allow(_)) {
                        fail = Some((i, table_access(t), None, v));
                        break 'items;
                    }
                }
            }
            if let Some((g, gspa)) = it.guest {
                let gprivate = private_of(ctx.memory, g.addr, true);
                let info = GuestCheckInfo {
                    asid,
                    gpa: g.addr,
                    private: gprivate,
                    nested_size: leaf_size(i),
                };
                let targets = [
                    Some(CheckTarget::TableRead { level: g.level }),
                    (g.set != 0).then_some(CheckTarget::TableWrite { level: g.level }),
                ];
                for t in targets.into_iter().flatten() {
                    let r = CheckRequest {
                        spa: gspa,
                        target: t,
                        who: req.who,
                        privilege: req.privilege,
                        stage: Stage::Guest,
                        guest: Some(info),
                    };
                    let v = checker.check(&r, work);
                    if !matches!(v, CheckVerdict::Allow(_)) {
                        fail = Some((i, table_access(t), gprivate, v));
                        break 'items;
                    }
                }
            }
        }
        let mut allow = None;
        let last = self.items.len() - 1;
        if fail.is_none() {
            let r = CheckRequest {
                spa,
                target: CheckTarget::Data { access: req.access, mapping: size },
                who: req.who,
                privilege: req.privilege,
                stage: Stage::Guest,
                guest: Some(GuestCheckInfo { asid, gpa, private, nested_size: leaf_size(last) }),
            };
            match checker.check(&r, work) {
                CheckVerdict::Allow(a) => {
                    allow = Some(CheckAllow {
                        cache: a.cache,
                        fill_size: a.fill_size.filter(|f| *f < size),
                    });
                }
                v => fail = Some((last, req.access, private, v)),
            }
        }
        if let Some((i, kind, private, verdict)) = fail {
            let mut step = self.items[i].nested;
            // A check failure on a guest-table item reports the guest entry's GPA.
            if let Some((g, _)) = self.items[i].guest
                && matches!(step.purpose, Purpose::GuestTable)
            {
                step.gpa = g.addr;
            }
            self.outcome = GuestTranslation::Fault(match verdict {
                CheckVerdict::GuestVc { error_code } => {
                    GuestFault::Vc { code: error_code, gla, gpa: step.gpa }
                }
                v => nested_fault(
                    ctx,
                    &step,
                    kind,
                    gla,
                    private,
                    v.guest_fault_bits().unwrap_or_default(),
                ),
            });
            return None;
        }
        allow
    }
}

/// The access kind of a table reference's check: A/D updates are writes.
fn table_access(t: CheckTarget) -> AccessKind {
    if matches!(t, CheckTarget::TableWrite { .. }) { AccessKind::Write } else { AccessKind::Read }
}

/// Walk a guest access without caches and without side effects: the outcome and references a
/// cold walk makes now (A/D writes that would be made are listed). For oracles and `ccsim
/// check`.
pub fn walk_2d_functional(
    host: &PhysMemTables<Spa>,
    guest: &PhysMemTables<Gpa>,
    ctx: &GuestContext,
    req: &GuestWalkRequest,
) -> GuestWalk {
    let p = plan_2d(host, guest, ctx, req, &mut NoCaches);
    GuestWalk { outcome: p.outcome, refs: p.refs() }
}

/// Reusable working space for [`translate_2d_functional`] (a 2-D walk's plan is over 1 KiB:
/// building and copying one per call cost more than the walk).
#[derive(Clone, Debug, Default)]
pub struct Walk2dScratch(crate::inline::Scratch<Plan2d>);

/// The outcome of [`walk_2d_functional`] alone, planned in `scratch`: no reference list is
/// built and nothing but the outcome is copied out. For instructions that need only where a
/// guest address goes (PVALIDATE's and RMPADJUST's operand).
pub fn translate_2d_functional(
    scratch: &mut Walk2dScratch,
    host: &PhysMemTables<Spa>,
    guest: &PhysMemTables<Gpa>,
    ctx: &GuestContext,
    req: &GuestWalkRequest,
) -> GuestTranslation {
    let p = scratch.0.get();
    plan_2d_into(p, host, guest, ctx, req, &mut NoCaches);
    p.outcome
}

/// Walk a guest access without caches, setting A/D bits (guest entries in `guest`, nested
/// entries in `host`). No check stage: see [`walk_2d_checked`].
pub fn walk_2d(
    host: &mut PhysMemTables<Spa>,
    guest: &mut PhysMemTables<Gpa>,
    ctx: &GuestContext,
    req: &GuestWalkRequest,
) -> GuestWalk {
    let p = plan_2d(host, guest, ctx, req, &mut NoCaches);
    p.commit(host, guest);
    GuestWalk { outcome: p.outcome, refs: p.refs() }
}

/// [`walk_2d`] through the check stage: once the walk translates, one check per reference (in
/// order: nested references of each item, then the guest entry) and one for the data access;
/// the first failure becomes an #NPF (with the checker's bits, GUEST_PAGE or GUEST_FINAL, and
/// ENC for a private SEV access) or an EPT violation, and no A/D bits are written.
pub fn walk_2d_checked<C: TranslationCheck + ?Sized>(
    host: &mut PhysMemTables<Spa>,
    guest: &mut PhysMemTables<Gpa>,
    ctx: &GuestContext,
    req: &GuestWalkRequest,
    checker: &mut C,
    work: &mut CheckWork,
) -> CheckedGuestWalk {
    let mut p = plan_2d(host, guest, ctx, req, &mut NoCaches);
    let allow = p.run_checks(ctx, req, checker, work);
    p.commit(host, guest);
    CheckedGuestWalk { walk: GuestWalk { outcome: p.outcome, refs: p.refs() }, allow }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ept::{EptFlags, EptLeafAttrs};
    use crate::page_table::{EptTable, GuestPageTable, NptTable};
    use crate::pte::{LeafAttrs, PteFlags};
    use crate::tables::LinearFrames;
    use crate::walk::PagingControls;

    /// Guest table pages live at GPA 1 MiB.., the NPT/EPT pages at SPA 16 MiB.., guest RAM GPA
    /// g is backed by SPA g + `HOST_OFFSET`.
    const HOST_OFFSET: u64 = 0x1_0000_0000;
    const GVA: u64 = 0x7f12_3456_7000;
    const GPA: u64 = 0x4000_5000;

    enum Nested {
        Npt(NptTable),
        Ept(EptTable),
    }

    struct Rig {
        host: PhysMemTables<Spa>,
        hframes: LinearFrames<Spa>,
        nested: Nested,
        guest: PhysMemTables<Gpa>,
        gframes: LinearFrames<Gpa>,
        gpt: GuestPageTable,
        ctx: GuestContext,
    }

    const NPT_TABLE: PteFlags =
        PteFlags::PRESENT.union(PteFlags::WRITABLE).union(PteFlags::USER).union(PteFlags::ACCESSED);

    fn npt_leaf(writable: bool) -> LeafAttrs {
        let mut f = PteFlags::PRESENT | PteFlags::USER | PteFlags::ACCESSED | PteFlags::DIRTY;
        if writable {
            f |= PteFlags::WRITABLE;
        }
        LeafAttrs::new(f)
    }

    const GUEST_LEAF: LeafAttrs = LeafAttrs::new(
        PteFlags::PRESENT
            .union(PteFlags::WRITABLE)
            .union(PteFlags::ACCESSED)
            .union(PteFlags::DIRTY),
    );

    fn rig(kind: NestedKind, gpaging: Option<Paging>, npaging: Paging) -> Rig {
        let fmt = PteFormat { phys_bits: 52, cbit: crate::pte::CbitPos(None) };
        let mut host = PhysMemTables::new();
        let mut hframes = LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
        let nested = match kind {
            NestedKind::Npt => Nested::Npt(
                NptTable::new(&mut host, &mut hframes, npaging, fmt, NPT_TABLE).unwrap(),
            ),
            NestedKind::Ept { .. } => Nested::Ept(
                EptTable::new(
                    &mut host,
                    &mut hframes,
                    npaging,
                    fmt,
                    EptFlags::RWX | EptFlags::ACCESSED,
                )
                .unwrap(),
            ),
        };
        let mut guest = PhysMemTables::new();
        let mut gframes = LinearFrames::new(Gpa::new(0x10_0000), Gpa::new(0x20_0000));
        let gp = gpaging.unwrap_or(Paging::FourLevel);
        let gpt =
            GuestPageTable::new(&mut guest, &mut gframes, gp, fmt, PteFlags::KERNEL_TABLE).unwrap();
        let root = match &nested {
            Nested::Npt(t) => t.root(),
            Nested::Ept(t) => t.root(),
        };
        let ctx = GuestContext {
            tag: TlbTag { asid: 7, pcid: 0 },
            paging: gpaging.map(|p| GuestPaging {
                root: gpt.root(),
                paging: p,
                format: fmt,
                controls: PagingControls::default(),
            }),
            nested: NestedContext { kind, root, paging: npaging, format: fmt },
            memory: GuestMemory::Plain,
        };
        let mut r = Rig { host, hframes, nested, guest, gframes, gpt, ctx };
        r.gmap(GVA, GPA, PageSize::K4);
        r
    }

    impl Rig {
        fn gmap(&mut self, gva: u64, gpa: u64, size: PageSize) {
            self.gpt
                .map(
                    &mut self.guest,
                    &mut self.gframes,
                    Gva::new(gva),
                    Gpa::new(gpa),
                    size,
                    GUEST_LEAF,
                )
                .unwrap()
                .ignore(); // fresh mapping
        }

        fn nmap_with(&mut self, gpa: u64, size: PageSize, writable: bool) {
            let (g, s) = (Gpa::new(gpa), Spa::new(gpa + HOST_OFFSET));
            let tok = match &mut self.nested {
                Nested::Npt(t) => {
                    t.map(&mut self.host, &mut self.hframes, g, s, size, npt_leaf(writable))
                }
                Nested::Ept(t) => {
                    let mut a = EptLeafAttrs::RWX_WB;
                    a.flags |= EptFlags::ACCESSED | EptFlags::DIRTY;
                    if !writable {
                        a.flags -= EptFlags::WRITE;
                    }
                    t.map(&mut self.host, &mut self.hframes, g, s, size, a)
                }
            };
            tok.unwrap().ignore(); // fresh mapping
        }

        /// Map every guest table page and the data page in the nested table, 4K each.
        fn nmap_all(&mut self) {
            for i in 0..self.gframes.allocated() {
                self.nmap_with(0x10_0000 + i * 4096, PageSize::K4, true);
            }
            self.nmap_with(GPA, PageSize::K4, true);
        }

        fn req(&self, addr: GuestAddr, access: AccessKind) -> GuestWalkRequest {
            GuestWalkRequest {
                addr,
                access,
                privilege: Privilege::Supervisor,
                who: Agent::guest(0, 1, 0),
            }
        }

        /// The functional walk; also checks that [`translate_2d_functional`], in a scratch
        /// that planned another walk before, finds the same outcome.
        fn walk(&self, addr: GuestAddr, access: AccessKind) -> GuestWalk {
            let req = self.req(addr, access);
            let w = walk_2d_functional(&self.host, &self.guest, &self.ctx, &req);
            let mut scratch = Walk2dScratch::default();
            let other = self.req(GuestAddr::Physical(Gpa::new(GPA)), AccessKind::Write);
            translate_2d_functional(&mut scratch, &self.host, &self.guest, &self.ctx, &other);
            let outcome =
                translate_2d_functional(&mut scratch, &self.host, &self.guest, &self.ctx, &req);
            assert_eq!(outcome, w.outcome);
            w
        }
    }

    fn read_gva(r: &Rig) -> GuestWalk {
        r.walk(GuestAddr::Virtual(Gva::new(GVA)), AccessKind::Read)
    }

    fn stages(w: &GuestWalk) -> String {
        w.refs
            .iter()
            .map(|r| match (r.stage, r.kind) {
                (Stage::Nested, RefKind::Read) => 'n',
                (Stage::Guest, RefKind::Read) => 'g',
                (Stage::Nested, RefKind::AdWrite) => 'N',
                (Stage::Guest, RefKind::AdWrite) => 'G',
                (Stage::Native, _) => '?',
            })
            .collect()
    }

    #[test]
    fn cold_4x4_walk_makes_24_references_in_order() {
        for kind in [NestedKind::Npt, NestedKind::Ept { accessed_dirty: false }] {
            let mut r = rig(kind, Some(Paging::FourLevel), Paging::FourLevel);
            r.nmap_all();
            let w = read_gva(&r);
            assert_eq!(
                w.outcome,
                GuestTranslation::Translated {
                    spa: Spa::new(GPA + HOST_OFFSET),
                    gpa: Gpa::new(GPA),
                    size: PageSize::K4,
                    perms: Perms { readable: true, writable: true, user: false, executable: true },
                    nested_perms: match kind {
                        NestedKind::Npt => Perms::ALL,
                        NestedKind::Ept { .. } => Perms { user: true, ..Perms::ALL },
                    },
                    global: false,
                    dirty: true,
                    private: None,
                },
                "{kind:?}"
            );
            assert_eq!(w.refs.len(), 24);
            assert_eq!(stages(&w), "nnnng".repeat(4) + "nnnn");
            // Nested levels run PML4..PT within each group; guest levels PML4..PT.
            let levels: Vec<Level> = w.refs.iter().map(|r| r.level).collect();
            let nl = [Level::Pml4, Level::Pdpt, Level::Pd, Level::Pt];
            for (g, gl) in nl.iter().enumerate() {
                assert_eq!(&levels[g * 5..g * 5 + 4], &nl);
                assert_eq!(levels[g * 5 + 4], *gl);
            }
            // The guest root entry is read at gCR3's SPA.
            let groot = r.ctx.paging.unwrap().root.raw();
            let idx = Level::Pml4.index(Gva::new(GVA)) as u64;
            assert_eq!(w.refs[4].addr, Spa::new(groot + HOST_OFFSET + 8 * idx));
        }
    }

    #[test]
    fn cold_5x5_walk_makes_35_references() {
        let mut r = rig(NestedKind::Npt, Some(Paging::FiveLevel), Paging::FiveLevel);
        r.nmap_all();
        let w = read_gva(&r);
        assert!(matches!(w.outcome, GuestTranslation::Translated { .. }), "{w:?}");
        assert_eq!(w.refs.len(), 35);
        assert_eq!(stages(&w), "nnnnng".repeat(5) + "nnnnn");
        let mut r = rig(
            NestedKind::Ept { accessed_dirty: true },
            Some(Paging::FiveLevel),
            Paging::FiveLevel,
        );
        r.nmap_all();
        assert_eq!(read_gva(&r).refs.len(), 35);
    }

    /// (n+1)(m+1)−1 with large pages: a 2 MiB guest leaf (n = 3) under 4 KiB nested pages
    /// (m = 4) makes 19; the nested tables mapping everything with 1 GiB pages (m = 2) make
    /// (4+1)(2+1)−1 = 14 for a 4 KiB guest leaf.
    #[test]
    fn reference_counts_with_large_pages() {
        let mut r = rig(NestedKind::Npt, Some(Paging::FourLevel), Paging::FourLevel);
        r.gmap(0x7f00_0020_0000, 0x4020_0000, PageSize::M2);
        r.nmap_all();
        r.nmap_with(0x4020_0000, PageSize::K4, true);
        let w = r.walk(GuestAddr::Virtual(Gva::new(0x7f00_0020_0000)), AccessKind::Read);
        let GuestTranslation::Translated { size, .. } = w.outcome else { panic!("{w:?}") };
        assert_eq!(size, PageSize::K4, "combined size: the smaller");
        assert_eq!(w.refs.len(), 19);
        let mut r = rig(NestedKind::Npt, Some(Paging::FourLevel), Paging::FourLevel);
        r.nmap_with(0, PageSize::G1, true);
        r.nmap_with(1 << 30, PageSize::G1, true);
        let w = read_gva(&r);
        let GuestTranslation::Translated { size, spa, .. } = w.outcome else { panic!("{w:?}") };
        assert_eq!((size, spa), (PageSize::K4, Spa::new(GPA + HOST_OFFSET)));
        assert_eq!(w.refs.len(), 14);
    }

    #[test]
    fn guest_physical_access_walks_only_the_nested_table() {
        for (np, m) in [(Paging::FourLevel, 4), (Paging::FiveLevel, 5)] {
            let mut r = rig(NestedKind::Npt, None, np);
            r.nmap_all();
            let w = r.walk(GuestAddr::Physical(Gpa::new(GPA + 0x10)), AccessKind::Write);
            let GuestTranslation::Translated { spa, .. } = w.outcome else { panic!("{w:?}") };
            assert_eq!(spa, Spa::new(GPA + HOST_OFFSET + 0x10));
            assert_eq!(w.refs.len(), m);
            assert!(w.refs.iter().all(|r| r.stage == Stage::Nested));
        }
    }

    #[test]
    fn guest_page_fault_is_delivered_to_the_guest() {
        let mut r = rig(NestedKind::Npt, Some(Paging::FourLevel), Paging::FourLevel);
        r.nmap_all();
        let gva = GVA + 0x1000; // same PT, entry not present
        let w = r.walk(GuestAddr::Virtual(Gva::new(gva)), AccessKind::Write);
        assert_eq!(
            w.outcome,
            GuestTranslation::Fault(GuestFault::PageFault(PageFault {
                code: PfErrorCode::WRITE,
                addr: Gva::new(gva)
            }))
        );
        assert_eq!(w.refs.len(), 20, "4 nested walks and 4 guest reads, no final walk");
    }

    #[test]
    fn npf_exitinfo_for_final_and_guest_page_faults() {
        // Final translation missing: GUEST_FINAL | USER, EXITINFO2 = the data GPA.
        let mut r = rig(NestedKind::Npt, Some(Paging::FourLevel), Paging::FourLevel);
        for i in 0..r.gframes.allocated() {
            r.nmap_with(0x10_0000 + i * 4096, PageSize::K4, true);
        }
        let w = read_gva(&r);
        let GuestTranslation::Fault(GuestFault::Npf(n)) = w.outcome else { panic!("{w:?}") };
        assert_eq!(n.info1.bits(), 0x1_0000_0004);
        assert_eq!(n.gpa, Gpa::new(GPA));
        // A write to a read-only nested page: P | W | U | GUEST_FINAL.
        r.nmap_with(GPA, PageSize::K4, false);
        let w = r.walk(GuestAddr::Virtual(Gva::new(GVA)), AccessKind::Write);
        let GuestTranslation::Fault(GuestFault::Npf(n)) = w.outcome else { panic!("{w:?}") };
        assert_eq!(n.info1.bits(), 0x1_0000_0007);
        // A guest table page missing: GUEST_PAGE, EXITINFO2 = the guest entry's GPA.
        let mut r = rig(NestedKind::Npt, Some(Paging::FourLevel), Paging::FourLevel);
        r.nmap_with(GPA, PageSize::K4, true);
        let w = read_gva(&r);
        let GuestTranslation::Fault(GuestFault::Npf(n)) = w.outcome else { panic!("{w:?}") };
        assert_eq!(n.info1, NpfExitInfo1::USER | NpfExitInfo1::GUEST_PAGE);
        let groot = r.ctx.paging.unwrap().root.raw();
        assert_eq!(n.gpa, Gpa::new(groot + 8 * Level::Pml4.index(Gva::new(GVA)) as u64));
        // The nested walk stops at the missing PDPTE (PML4E shared with the data GPA); no
        // guest read.
        assert_eq!(stages(&w), "nn");
    }

    #[test]
    fn ept_violation_qualification() {
        let kind = NestedKind::Ept { accessed_dirty: false };
        let mut r = rig(kind, Some(Paging::FourLevel), Paging::FourLevel);
        for i in 0..r.gframes.allocated() {
            r.nmap_with(0x10_0000 + i * 4096, PageSize::K4, true);
        }
        // Final translation not present: read | GLA valid | final; no R/W/X bits.
        let w = read_gva(&r);
        let GuestTranslation::Fault(GuestFault::EptViolation(v)) = w.outcome else {
            panic!("{w:?}")
        };
        assert_eq!(v.qual.bits(), 0x181);
        assert_eq!((v.gpa, v.gla), (Gpa::new(GPA), Some(Gva::new(GVA))));
        // Write to a read+execute page: write | R | X | GLA valid | final.
        r.nmap_with(GPA, PageSize::K4, false);
        let w = r.walk(GuestAddr::Virtual(Gva::new(GVA)), AccessKind::Write);
        let GuestTranslation::Fault(GuestFault::EptViolation(v)) = w.outcome else {
            panic!("{w:?}")
        };
        assert_eq!(v.qual.bits(), 0x2 | 0x8 | 0x20 | 0x80 | 0x100);
        // Guest paging-structure access missing: bit 8 clear; a read without EPT A/D, a
        // write with it (guest paging-structure accesses are writes then).
        for (ad, acc) in [(false, 0x1), (true, 0x2)] {
            let mut r = rig(
                NestedKind::Ept { accessed_dirty: ad },
                Some(Paging::FourLevel),
                Paging::FourLevel,
            );
            r.nmap_with(GPA, PageSize::K4, true);
            let w = read_gva(&r);
            let GuestTranslation::Fault(GuestFault::EptViolation(v)) = w.outcome else {
                panic!("{w:?}")
            };
            assert_eq!(v.qual.bits(), acc | 0x80, "A/D {ad}");
        }
    }

    #[test]
    fn ept_misconfiguration() {
        let mut r = rig(NestedKind::Ept { accessed_dirty: false }, None, Paging::FourLevel);
        r.nmap_all();
        // Make the data page's EPT leaf write-only.
        let w = r.walk(GuestAddr::Physical(Gpa::new(GPA)), AccessKind::Read);
        let leaf = w.refs.last().unwrap().addr;
        let raw = r.host.read(leaf);
        r.host.write(leaf, (raw & !7) | 0b010);
        let w = r.walk(GuestAddr::Physical(Gpa::new(GPA)), AccessKind::Read);
        assert_eq!(
            w.outcome,
            GuestTranslation::Fault(GuestFault::EptMisconfig { gpa: Gpa::new(GPA) })
        );
    }

    #[test]
    fn sev_c_bit_sets_enc_and_tdx_shared_bit_picks_the_root() {
        // SEV: guest leaf with the C-bit; the final nested translation missing → ENC.
        let mut r = rig(NestedKind::Npt, Some(Paging::FourLevel), Paging::FourLevel);
        let fmt = PteFormat { phys_bits: 52, cbit: crate::pte::CbitPos(Some(51)) };
        r.ctx.memory = GuestMemory::Sev;
        r.ctx.paging.as_mut().unwrap().format = fmt;
        let enc = LeafAttrs { encrypted: true, ..GUEST_LEAF };
        r.gpt.unmap(&mut r.guest, Gva::new(GVA), PageSize::K4).unwrap().1.ignore();
        let mut g2 = GuestPageTable::new(
            &mut r.guest,
            &mut r.gframes,
            Paging::FourLevel,
            fmt,
            PteFlags::KERNEL_TABLE,
        )
        .unwrap();
        g2.map(&mut r.guest, &mut r.gframes, Gva::new(GVA), Gpa::new(GPA), PageSize::K4, enc)
            .unwrap()
            .ignore();
        r.ctx.paging.as_mut().unwrap().root = g2.root();
        for i in 0..r.gframes.allocated() {
            r.nmap_with(0x10_0000 + i * 4096, PageSize::K4, true);
        }
        let w = read_gva(&r);
        let GuestTranslation::Fault(GuestFault::Npf(n)) = w.outcome else { panic!("{w:?}") };
        assert!(n.info1.contains(NpfExitInfo1::ENC | NpfExitInfo1::GUEST_FINAL));
        r.nmap_with(GPA, PageSize::K4, true);
        let w = read_gva(&r);
        let GuestTranslation::Translated { private, gpa, .. } = w.outcome else { panic!() };
        assert_eq!((private, gpa), (Some(true), Gpa::new(GPA)));
        // A GPA access carrying the C-bit: stripped before the nested walk.
        let w = r.walk(GuestAddr::Physical(Gpa::new(GPA | 1 << 51)), AccessKind::Read);
        let GuestTranslation::Translated { private, spa, .. } = w.outcome else { panic!("{w:?}") };
        assert_eq!((private, spa), (Some(true), Spa::new(GPA + HOST_OFFSET)));

        // TDX: a shared GPA (bit 47) walks the shared EPT root.
        let kind = NestedKind::Ept { accessed_dirty: true };
        let mut r = rig(kind, None, Paging::FourLevel);
        r.nmap_all();
        let shared_gpa = GPA | 1 << 47;
        let mut shared = EptTable::new(
            &mut r.host,
            &mut r.hframes,
            Paging::FourLevel,
            r.ctx.nested.format,
            EptFlags::RWX | EptFlags::ACCESSED,
        )
        .unwrap();
        shared
            .map(
                &mut r.host,
                &mut r.hframes,
                Gpa::new(shared_gpa),
                Spa::new(0x7700_0000),
                PageSize::K4,
                EptLeafAttrs::RWX_WB,
            )
            .unwrap()
            .ignore();
        r.ctx.memory = GuestMemory::Tdx { gpaw: GpaWidth::W48, shared_root: shared.root() };
        let w = r.walk(GuestAddr::Physical(Gpa::new(shared_gpa)), AccessKind::Read);
        let GuestTranslation::Translated { spa, private, .. } = w.outcome else { panic!("{w:?}") };
        assert_eq!((spa, private), (Spa::new(0x7700_0000), Some(false)));
        let w = r.walk(GuestAddr::Physical(Gpa::new(GPA)), AccessKind::Read);
        let GuestTranslation::Translated { spa, private, .. } = w.outcome else { panic!("{w:?}") };
        assert_eq!((spa, private), (Spa::new(GPA + HOST_OFFSET), Some(true)));
    }

    /// Guest entries with A clear get A/D writes (guest stage, right after their read); under
    /// NPT the nested entries are marked too; the functional walk lists the writes, `walk_2d`
    /// makes them.
    #[test]
    fn a_d_updates_in_both_stages() {
        let mut r = rig(NestedKind::Npt, Some(Paging::FourLevel), Paging::FourLevel);
        // Clear A in the guest leaf.
        let gva2 = GVA + 0x1000;
        let a = LeafAttrs::new(PteFlags::PRESENT | PteFlags::WRITABLE);
        r.gpt
            .map(&mut r.guest, &mut r.gframes, Gva::new(gva2), Gpa::new(GPA), PageSize::K4, a)
            .unwrap()
            .ignore();
        r.nmap_all();
        let req = r.req(GuestAddr::Virtual(Gva::new(gva2)), AccessKind::Write);
        let f = walk_2d_functional(&r.host, &r.guest, &r.ctx, &req);
        assert_eq!(stages(&f), "nnnng".repeat(3) + "nnnngG" + "nnnn");
        let w = walk_2d(&mut r.host, &mut r.guest, &r.ctx, &req);
        assert_eq!(w, f);
        let again = walk_2d_functional(&r.host, &r.guest, &r.ctx, &req);
        assert_eq!(again.refs.len(), 24, "A and D now set");
        // A read-only nested mapping of the guest PT page: the guest A/D update faults.
        let mut r = rig(NestedKind::Npt, Some(Paging::FourLevel), Paging::FourLevel);
        r.gpt
            .map(&mut r.guest, &mut r.gframes, Gva::new(gva2), Gpa::new(GPA), PageSize::K4, a)
            .unwrap()
            .ignore();
        let n = r.gframes.allocated();
        for i in 0..n - 1 {
            r.nmap_with(0x10_0000 + i * 4096, PageSize::K4, true);
        }
        r.nmap_with(0x10_0000 + (n - 1) * 4096, PageSize::K4, false); // the PT page
        r.nmap_with(GPA, PageSize::K4, true);
        let w = walk_2d(&mut r.host, &mut r.guest, &r.ctx, &req);
        let GuestTranslation::Fault(GuestFault::Npf(f)) = w.outcome else { panic!("{w:?}") };
        assert_eq!(
            f.info1,
            NpfExitInfo1::PRESENT
                | NpfExitInfo1::WRITE
                | NpfExitInfo1::USER
                | NpfExitInfo1::GUEST_PAGE
        );
        assert!(w.refs.iter().all(|r| r.kind == RefKind::Read), "no A/D writes on a fault");
    }

    /// Every reference and the data access go through the check hook, with the stage and
    /// the guest-side context; a failure becomes an #NPF with the checker's bits.
    #[test]
    fn check_hook_sees_every_reference() {
        use crate::check::{CheckAllow, CheckTarget, CheckVerdict};
        struct Log(Vec<CheckRequest>, Option<usize>);
        impl TranslationCheck for Log {
            fn check(&mut self, req: &CheckRequest, _w: &mut CheckWork) -> CheckVerdict {
                self.0.push(*req);
                if Some(self.0.len()) == self.1 {
                    CheckVerdict::Fault { error_bits: PfErrorCode::RMP }
                } else {
                    CheckVerdict::Allow(CheckAllow::WRITE_OK)
                }
            }
        }
        let mut r = rig(NestedKind::Npt, Some(Paging::FourLevel), Paging::FourLevel);
        r.ctx.memory = GuestMemory::Sev;
        r.nmap_all();
        let req = r.req(GuestAddr::Virtual(Gva::new(GVA)), AccessKind::Read);
        let mut log = Log(Vec::new(), None);
        let mut work = CheckWork::default();
        let w = walk_2d_checked(&mut r.host, &mut r.guest, &r.ctx, &req, &mut log, &mut work);
        assert!(w.allow.is_some());
        assert_eq!(log.0.len(), 25);
        for (c, wr) in log.0.iter().zip(w.walk.refs.iter()) {
            assert_eq!((c.spa, c.stage), (wr.addr, wr.stage));
            assert_eq!(c.guest.unwrap().asid, 7);
        }
        let last = log.0[24];
        assert_eq!(
            last.target,
            CheckTarget::Data { access: AccessKind::Read, mapping: PageSize::K4 }
        );
        assert_eq!(last.guest.unwrap().gpa, Gpa::new(GPA));
        assert_eq!(last.stage, Stage::Guest);
        // Guest table references are private for SEV; nested ones carry no private flag.
        assert_eq!(log.0[4].guest.unwrap().private, Some(true));
        assert_eq!(log.0[0].guest.unwrap().private, None);
        // Fail the 5th check (the guest root entry): #NPF GUEST_PAGE | RMP | ENC at its GPA.
        let mut log = Log(Vec::new(), Some(5));
        let w = walk_2d_checked(&mut r.host, &mut r.guest, &r.ctx, &req, &mut log, &mut work);
        let GuestTranslation::Fault(GuestFault::Npf(n)) = w.walk.outcome else { panic!() };
        assert_eq!(
            n.info1,
            NpfExitInfo1::PRESENT
                | NpfExitInfo1::USER
                | NpfExitInfo1::RMP
                | NpfExitInfo1::GUEST_PAGE
                | NpfExitInfo1::ENC
        );
        assert_eq!(n.gpa, log.0[4].guest.unwrap().gpa);
        // Fail the data check: GUEST_FINAL.
        let mut log = Log(Vec::new(), Some(25));
        let w = walk_2d_checked(&mut r.host, &mut r.guest, &r.ctx, &req, &mut log, &mut work);
        let GuestTranslation::Fault(GuestFault::Npf(n)) = w.walk.outcome else { panic!() };
        assert!(n.info1.contains(NpfExitInfo1::GUEST_FINAL | NpfExitInfo1::RMP));
        assert_eq!(n.gpa, Gpa::new(GPA));
    }
}
