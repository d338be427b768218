//! Each VM's translation state: its stage-2 table (KVM's NPT or EPT, in host memory) and its
//! guest page table (in guest-physical memory), both built on first use, and the
//! [`GuestContext`] its vCPUs run in (DESIGN "Layers": the tables are host and guest software
//! state; mmu-model walks them).
//!
//! Choices, each documented where it is made:
//! - **Stage 2 by VM kind.** `plain`, `sev`, `sev-es` and `snp` VMs get an AMD NPT (SEV is AMD
//!   only; a plain VM is taken to run on the same AMD host); `tdx` VMs get Intel EPTs: the
//!   Secure EPT for private GPAs and the shared EPT for GPAs with the shared bit set (GPAW 48:
//!   bit 47, spec/tdx.md §1.1). The S-EPT is a plain EPT here: the TDX module's S-EPT states
//!   are tdx-model's business. Both stages are 4-level. Stage-2 table pages come from the host
//!   allocator (the machine's frame source).
//! - **Guest page-table pages** are guest-physical: a bump allocator per VM hands them out
//!   from [`GUEST_TABLE_BASE`]..[`GUEST_TABLE_END`] (the 1 GiB at 256 GiB: far above the guest
//!   RAM scenarios map, below the TDX shared bit, within a 4-level stage 2's reach), never
//!   reused.
//!   The machine backs each with a host page and maps it in stage 2 (4K, writable, accessed
//!   and dirty; private for a TD), as KVM backs guest memory the guest kernel's tables live
//!   in. Guest mappings to that range, and stage-2 mappings into it, are refused; a stage-2
//!   *unmap* of a table page is allowed (that is how a scenario makes a guest page-table access
//!   fault with #NPF GUEST_PAGE).
//! - **Entries the model writes** are used mappings: leaves have A and D set, non-leaf entries
//!   A, so that walks make no A/D writes (KVM creates SPTEs accessed; a guest page that has been
//!   touched has A/D). NPT non-leaf entries are P|W|U|A, NPT leaves need `user` to be usable
//!   (nested accesses are user accesses, AMD APM Vol. 2 §15.25.5); EPT non-leaf entries are
//!   RWX|A, EPT leaves R plus W and X as asked, write-back. EPT A/D flags are on (EPTP bit 6,
//!   KVM's `enable_ept_ad_bits` default), so guest page-table accesses are writes for EPT.
//! - **TLB tags.** A vCPU's translations are tagged with the VM's ASID (VPID for a TD) and PCID
//!   0 (guest CR3 loads are not modelled); guest-physical accesses (a vCPU without paging) use
//!   [`PAGING_OFF_PCID`] so that their GPA-keyed entries never alias GVA-keyed ones.

use mmu_model::{
    EptFlags, EptLeafAttrs, EptTable, FrameSource, GpaWidth, GuestContext, GuestMemory,
    GuestPageTable, GuestPaging, LeafAttrs, MapError, NestedContext, NestedKind, NptTable, Paging,
    PagingControls, PendingInvalidation, PhysMemTables, PteFlags, PteFormat, TlbTag, UnmapError,
};
use sim_core::event::VmKind;
use sim_core::{Gpa, Gva, PageSize, Spa, VmId};

/// First GPA of the range guest page-table pages are allocated from.
pub(crate) const GUEST_TABLE_BASE: u64 = 0x40_0000_0000;
/// End (exclusive) of that range: 1 GiB, 262 144 table pages.
pub(crate) const GUEST_TABLE_END: u64 = 0x40_4000_0000;
/// The PCID under which guest-physical accesses are tagged. A guest without paging has no
/// PCIDs; this value (the top of CR3 bits 11:0) only keeps GPA-keyed TLB entries apart from the
/// GVA-keyed ones of the same ASID.
pub(crate) const PAGING_OFF_PCID: u16 = 0xfff;
/// A TD's guest-physical address width with a 4-level EPT (spec/tdx.md §1.1).
const TD_GPAW: GpaWidth = GpaWidth::W48;

/// The permission flags of a `map` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MapFlags {
    /// Writable.
    pub w: bool,
    /// Executable.
    pub x: bool,
    /// User-accessible (NPT: required for any nested access; EPT: no such bit, ignored).
    pub user: bool,
    /// Guest tables: the C-bit (SEV) or a private GPA (TD). NPT: the host C-bit.
    pub enc: bool,
}

impl MapFlags {
    /// The x86-format (host, NPT or guest) leaf flags: `base` plus P, RW if writable, US if
    /// user, NX unless executable.
    pub(crate) fn x86_flags(self, base: PteFlags) -> PteFlags {
        let mut flags = base | PteFlags::PRESENT;
        flags.set(PteFlags::WRITABLE, self.w);
        flags.set(PteFlags::USER, self.user);
        flags.set(PteFlags::NO_EXECUTE, !self.x);
        flags
    }
}

/// A `map`/`unmap` in a VM's tables that cannot be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum VmMapError {
    /// No `vm N` setting or `vm-create` declared it.
    #[error("VM {vm} is not declared (`vm {vm} KIND asid=N` or a `vm-create` event)")]
    UnknownVm {
        /// The VM.
        vm: VmId,
    },
    /// The addresses are not of the kinds the space maps.
    #[error("{0}")]
    Addresses(&'static str),
    /// The VM has no usable TLB tag.
    #[error(
        "VM {vm} has no ASID (asid={asid}): guest translation needs a nonzero 16-bit ASID/VPID for its TLB tag"
    )]
    NoAsid {
        /// The VM.
        vm: VmId,
        /// What it was declared with.
        asid: u32,
    },
    /// No page for a table.
    #[error("out of host memory for VM {vm}'s page tables")]
    OutOfMemory {
        /// The VM.
        vm: VmId,
    },
    /// The guest-physical range of the guest's own tables.
    #[error(
        "GPA {gpa:#x} is in {GUEST_TABLE_BASE:#x}..{GUEST_TABLE_END:#x}, where the machine puts guest page-table pages"
    )]
    TableRange {
        /// The GPA.
        gpa: u64,
    },
    /// `enc` where it means nothing.
    #[error("{0}")]
    Enc(&'static str),
    /// The page-table primitive refused.
    #[error("{0}")]
    Table(String),
}

impl VmMapError {
    /// A fixed description of the refusal (for the report's not-modelled table, whose keys
    /// must not grow with every address).
    pub fn category(&self) -> &'static str {
        match self {
            VmMapError::UnknownVm { .. } => "VM not declared",
            VmMapError::Addresses(a) => a,
            VmMapError::NoAsid { .. } => "VM without a nonzero 16-bit ASID",
            VmMapError::OutOfMemory { .. } => "out of memory for VM page tables",
            VmMapError::TableRange { .. } => "GPA in the guest page-table range",
            VmMapError::Enc(e) => e,
            VmMapError::Table(_) => {
                "refused by the page table (mapped, not mapped, misaligned or out of reach)"
            }
        }
    }
}

/// The stage-2 (nested) translation of a VM.
#[derive(Clone, Debug)]
pub(crate) enum Stage2 {
    /// AMD NPT (nCR3).
    Npt(NptTable),
    /// Intel EPT for a TD: the Secure EPT (private GPAs) and the shared EPT (shared bit set).
    Ept {
        /// Private GPAs.
        secure: EptTable,
        /// Shared GPAs.
        shared: EptTable,
    },
}

/// A guest's own page table and where its pages come from.
#[derive(Clone, Debug)]
pub(crate) struct GuestTables {
    /// Table pages, keyed by GPA.
    pub tables: PhysMemTables<Gpa>,
    /// The table (gCR3 = its root).
    pub pt: GuestPageTable,
    /// Host pages backing the table pages (freed with the VM).
    backing: Vec<Spa>,
}

/// Guest-physical table pages from a bump pointer, remembering which it handed out so that
/// the machine can back them in stage 2.
struct GuestFrames<'a> {
    next: &'a mut u64,
    fresh: Vec<Gpa>,
}

impl FrameSource<Gpa> for GuestFrames<'_> {
    fn alloc_table(&mut self) -> Option<Gpa> {
        if *self.next >= GUEST_TABLE_END {
            return None;
        }
        let g = Gpa::new(*self.next);
        *self.next += 4096;
        self.fresh.push(g);
        Some(g)
    }
    fn free_table(&mut self, _page: Gpa) {
        // A bump allocator: guest table pages are never reused (the model never frees one
        // before the VM goes; unmap keeps empty tables, as Linux does).
    }
}

/// One VM's translation state.
#[derive(Clone, Debug)]
pub(crate) struct VmPaging {
    kind: VmKind,
    asid: u16,
    stage2: Stage2,
    /// Stage-2 entry format: MAXPHYADDR, and the host C-bit for NPT.
    nested_fmt: PteFormat,
    /// Guest entry format: MAXPHYADDR, and the C-bit for SEV guests.
    guest_fmt: PteFormat,
    guest: Option<GuestTables>,
    /// What a GPA access of a guest without page tables is given as its tables (none).
    no_tables: PhysMemTables<Gpa>,
    /// Next GPA of the guest-table bump allocator.
    next_table: u64,
    /// Guest table pages backed since the last [`VmPaging::take_fresh_backing`].
    fresh_backing: Vec<(Gpa, Spa)>,
}

impl VmPaging {
    /// Build the (empty) stage-2 table of a VM of `kind` with `asid`; `host_fmt` is the host's
    /// entry format (`mmu.phys_addr_bits`, `mmu.cbit_pos`).
    pub fn new(
        vm: VmId,
        kind: VmKind,
        asid: u32,
        host_fmt: PteFormat,
        host: &mut PhysMemTables,
        frames: &mut impl FrameSource,
    ) -> Result<VmPaging, VmMapError> {
        let asid =
            u16::try_from(asid).ok().filter(|&a| a != 0).ok_or(VmMapError::NoAsid { vm, asid })?;
        let oom = |_| VmMapError::OutOfMemory { vm };
        let no_cbit = PteFormat { cbit: mmu_model::CbitPos(None), ..host_fmt };
        let (stage2, nested_fmt, guest_fmt) = match kind {
            VmKind::Plain | VmKind::Sev | VmKind::SevEs | VmKind::Snp => {
                let t = NptTable::new(host, frames, Paging::FourLevel, host_fmt, npt_table_flags())
                    .map_err(oom)?;
                // The guest sees the same C-bit position as the host (CPUID 8000_001F).
                let gfmt = if kind == VmKind::Plain { no_cbit } else { host_fmt };
                (Stage2::Npt(t), host_fmt, gfmt)
            }
            VmKind::Tdx => {
                let flags = EptFlags::RWX | EptFlags::ACCESSED;
                let secure =
                    EptTable::new(host, frames, Paging::FourLevel, no_cbit, flags).map_err(oom)?;
                let shared =
                    EptTable::new(host, frames, Paging::FourLevel, no_cbit, flags).map_err(oom)?;
                (Stage2::Ept { secure, shared }, no_cbit, no_cbit)
            }
        };
        Ok(VmPaging {
            kind,
            asid,
            stage2,
            nested_fmt,
            guest_fmt,
            guest: None,
            no_tables: PhysMemTables::new(),
            next_table: GUEST_TABLE_BASE,
            fresh_backing: Vec::new(),
        })
    }

    /// The ASID (VPID for a TD) that tags this VM's TLB entries.
    pub const fn asid(&self) -> u16 {
        self.asid
    }

    /// Table pages: (stage 2, guest).
    pub fn table_pages(&self) -> (u64, u64) {
        let s2 = match &self.stage2 {
            Stage2::Npt(t) => t.table_pages(),
            Stage2::Ept { secure, shared } => secure.table_pages() + shared.table_pages(),
        };
        (s2, self.guest.as_ref().map_or(0, |g| g.pt.table_pages()))
    }

    /// The stage-2 root translating `gpa` (the shared EPT for a TD's shared GPA).
    pub fn nested_root(&self, gpa: Gpa) -> Spa {
        match &self.stage2 {
            Stage2::Npt(t) => t.root(),
            Stage2::Ept { shared, .. } if TD_GPAW.is_shared(gpa) => shared.root(),
            Stage2::Ept { secure, .. } => secure.root(),
        }
    }

    /// Install `gpa` → `spa` in stage 2.
    pub fn stage2_map(
        &mut self,
        host: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        gpa: Gpa,
        spa: Spa,
        size: PageSize,
        f: MapFlags,
    ) -> Result<(), VmMapError> {
        if overlaps_tables(gpa.raw(), size) {
            return Err(VmMapError::TableRange { gpa: gpa.raw() });
        }
        self.stage2_map_raw(host, frames, gpa, spa, size, f)
    }

    fn stage2_map_raw(
        &mut self,
        host: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        gpa: Gpa,
        spa: Spa,
        size: PageSize,
        f: MapFlags,
    ) -> Result<(), VmMapError> {
        let fmt = self.nested_fmt;
        let tok = match &mut self.stage2 {
            Stage2::Npt(t) => {
                if f.enc && fmt.cbit.0.is_none() {
                    return Err(VmMapError::Enc(
                        "`enc` on an NPT mapping sets the host C-bit, and this host has none (mmu.cbit_pos=none)",
                    ));
                }
                let flags = f.x86_flags(PteFlags::ACCESSED | PteFlags::DIRTY);
                // The host C-bit of an NPT leaf: host-key encryption of what the guest accesses
                // as shared (AMD APM Vol. 2 §15.34.5). The walk strips it from the frame;
                // nothing else in the model reads it yet.
                let attrs = LeafAttrs { encrypted: f.enc, ..LeafAttrs::new(flags) };
                t.map(host, frames, gpa, spa, size, attrs).map_err(map_err)
            }
            Stage2::Ept { secure, shared } => {
                if f.enc {
                    return Err(VmMapError::Enc(
                        "`enc` means nothing in an EPT entry: a TD's GPA shared bit (bit 47, GPAW 48) picks the Secure or the shared EPT",
                    ));
                }
                let mut flags = EptFlags::READ | EptFlags::ACCESSED | EptFlags::DIRTY;
                if f.w {
                    flags |= EptFlags::WRITE;
                }
                if f.x {
                    flags |= EptFlags::EXECUTE;
                }
                let attrs = EptLeafAttrs { flags, ..EptLeafAttrs::RWX_WB };
                let t = if TD_GPAW.is_shared(gpa) { shared } else { secure };
                t.map(host, frames, gpa, spa, size, attrs).map_err(map_err)
            }
        };
        // A map over a not-present entry replaces nothing: the token is empty.
        tok.map(PendingInvalidation::ignore)
    }

    /// The SPA and leaf size that stage 2 translates `gpa` to, if a leaf is present
    /// (functional lookup: no A/D updates).
    pub fn stage2_lookup(&self, host: &PhysMemTables, gpa: Gpa) -> Option<(Spa, PageSize)> {
        match &self.stage2 {
            Stage2::Npt(t) => t.lookup(host, gpa).map(|l| (l.pa(gpa), l.size)),
            Stage2::Ept { secure, shared } => {
                let t = if TD_GPAW.is_shared(gpa) { shared } else { secure };
                t.lookup(host, gpa).map(|l| (l.pa(gpa), l.size))
            }
        }
    }

    /// [`VmPaging::stage2_lookup`], or how many bytes from `gpa` on have no leaf
    /// ([`mmu_model::PageTable::lookup_or_gap`]).
    pub fn stage2_lookup_or_gap(
        &self,
        host: &PhysMemTables,
        gpa: Gpa,
    ) -> Result<(Spa, PageSize), u64> {
        match &self.stage2 {
            Stage2::Npt(t) => t.lookup_or_gap(host, gpa).map(|l| (l.pa(gpa), l.size)),
            Stage2::Ept { secure, shared } => {
                let t = if TD_GPAW.is_shared(gpa) { shared } else { secure };
                t.lookup_or_gap(host, gpa).map(|l| (l.pa(gpa), l.size))
            }
        }
    }

    /// Remove the stage-2 leaf of `size` at `gpa`: the token and the root it was under.
    pub fn stage2_unmap(
        &mut self,
        host: &mut PhysMemTables,
        gpa: Gpa,
        size: PageSize,
    ) -> Result<(PendingInvalidation<Gpa>, Spa), VmMapError> {
        let root = self.nested_root(gpa);
        let tok = match &mut self.stage2 {
            Stage2::Npt(t) => t.unmap(host, gpa, size).map(|(_, t)| t),
            Stage2::Ept { secure, shared } => {
                let t = if TD_GPAW.is_shared(gpa) { shared } else { secure };
                t.unmap(host, gpa, size).map(|(_, t)| t)
            }
        };
        Ok((tok.map_err(unmap_err)?, root))
    }

    /// Stage-2 leaves per size (every stage-2 table of the VM).
    pub fn stage2_leaves(&self) -> sim_core::stats::PerSize<u64> {
        match &self.stage2 {
            Stage2::Npt(t) => t.leaf_counts(),
            Stage2::Ept { secure, shared } => {
                let (a, b) = (secure.leaf_counts(), shared.leaf_counts());
                let mut s = a;
                for z in PageSize::ALL {
                    s[z] += b[z];
                }
                s
            }
        }
    }

    /// The stage-2 root for GPAs without the shared bit (the NPT, or a TD's Secure EPT).
    pub fn private_root(&self) -> Spa {
        self.nested_root(Gpa::ZERO)
    }

    /// Remove the stage-2 table of 4K leaves under the 2M entry covering `gpa`, leaves included
    /// (KVM zapping a non-leaf SPTE), so that a 2M leaf can be mapped there again. Returns the
    /// leaves removed; `None` if there is no such table (nothing mapped, or a 2M leaf).
    pub fn stage2_zap_table(
        &mut self,
        host: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        gpa: Gpa,
    ) -> Option<u64> {
        let at = gpa.align_down(PageSize::M2);
        let res = match &mut self.stage2 {
            Stage2::Npt(t) => t.zap_table(host, frames, at, PageSize::M2),
            Stage2::Ept { secure, shared } => {
                let t = if TD_GPAW.is_shared(gpa) { shared } else { secure };
                t.zap_table(host, frames, at, PageSize::M2)
            }
        };
        // The caller flushes the VM's translations after every zap.
        res.ok().map(|(n, tok)| {
            tok.ignore();
            n
        })
    }

    /// Create the guest's page table if it does not exist yet (an empty one: every GVA faults
    /// not-present), backing its root in stage 2.
    pub fn ensure_guest(
        &mut self,
        vm: VmId,
        host: &mut PhysMemTables,
        frames: &mut impl FrameSource,
    ) -> Result<(), VmMapError> {
        if self.guest.is_some() {
            return Ok(());
        }
        let mut tables = PhysMemTables::new();
        let mut gf = GuestFrames { next: &mut self.next_table, fresh: Vec::new() };
        let pt = GuestPageTable::new(
            &mut tables,
            &mut gf,
            Paging::FourLevel,
            self.guest_fmt,
            PteFlags::USER_TABLE,
        )
        .map_err(|_| VmMapError::OutOfMemory { vm })?;
        let fresh = gf.fresh;
        self.guest = Some(GuestTables { tables, pt, backing: Vec::new() });
        self.back_tables(vm, host, frames, &fresh)
    }

    /// Back fresh guest table pages with host pages, mapped in stage 2.
    fn back_tables(
        &mut self,
        vm: VmId,
        host: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        fresh: &[Gpa],
    ) -> Result<(), VmMapError> {
        for &g in fresh {
            let spa = frames.alloc_table().ok_or(VmMapError::OutOfMemory { vm })?;
            if let Some(gt) = self.guest.as_mut() {
                gt.backing.push(spa);
            }
            self.fresh_backing.push((g, spa));
            let f = MapFlags { w: true, x: false, user: true, enc: false };
            self.stage2_map_raw(host, frames, g, spa, PageSize::K4, f)?;
        }
        Ok(())
    }

    /// The guest table pages (GPA, backing SPA) created since the last call: the machine makes
    /// them the guest's private, validated memory when the VM is SNP-active (an SNP guest's page
    /// tables must pass the RMP's guest checks, APM Vol. 2 Table 15-39).
    pub fn take_fresh_backing(&mut self) -> Vec<(Gpa, Spa)> {
        std::mem::take(&mut self.fresh_backing)
    }

    /// Install `gva` → `gpa` in the guest's page table (created if needed).
    #[allow(clippy::too_many_arguments)] // the map line's fields, spelled out
    pub fn guest_map(
        &mut self,
        vm: VmId,
        host: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        gva: Gva,
        gpa: Gpa,
        size: PageSize,
        f: MapFlags,
    ) -> Result<(), VmMapError> {
        if overlaps_tables(gpa.raw(), size) {
            return Err(VmMapError::TableRange { gpa: gpa.raw() });
        }
        match self.kind {
            VmKind::Plain if f.enc => {
                return Err(VmMapError::Enc("`enc` in a plain VM: it has no private memory"));
            }
            VmKind::Tdx if f.enc == TD_GPAW.is_shared(gpa) => {
                return Err(VmMapError::Enc(
                    "in a TD, `enc` (private) must match the GPA's shared bit (bit 47, GPAW 48): clear for private, set for shared",
                ));
            }
            VmKind::Plain | VmKind::Sev | VmKind::SevEs | VmKind::Snp | VmKind::Tdx => {}
        }
        self.ensure_guest(vm, host, frames)?;
        let flags = f.x86_flags(PteFlags::ACCESSED | PteFlags::DIRTY);
        // The C-bit of a guest entry exists only for SEV guests (a TD's privacy is the GPA's
        // shared bit, checked above).
        let encrypted = f.enc && matches!(self.kind, VmKind::Sev | VmKind::SevEs | VmKind::Snp);
        let attrs = LeafAttrs { encrypted, ..LeafAttrs::new(flags) };
        let gt = self.guest.as_mut().expect("created above");
        let mut gf = GuestFrames { next: &mut self.next_table, fresh: Vec::new() };
        let res = gt.pt.map(&mut gt.tables, &mut gf, gva, gpa, size, attrs);
        let fresh = gf.fresh;
        // Tables created before a failure stay (empty): back them all the same.
        self.back_tables(vm, host, frames, &fresh)?;
        // Over a not-present entry: nothing to invalidate.
        res.map(PendingInvalidation::ignore).map_err(map_err)
    }

    /// The GPA the guest's page table maps `gva` to, if mapped (functional lookup).
    pub fn guest_gpa(&self, gva: Gva) -> Option<Gpa> {
        let gt = self.guest.as_ref()?;
        gt.pt.lookup(&gt.tables, gva).map(|l| l.pa(gva))
    }

    /// Set or clear the C-bit of the guest's 4K mapping of `gva`, first splitting a larger
    /// leaf one level at a time, as the guest kernel's CPA does (`__set_memory_enc_pgtable`;
    /// split tables come from the guest's table pages, backed in stage 2 like the others).
    /// Returns the splits made and what must be invalidated.
    pub fn guest_set_encrypted(
        &mut self,
        vm: VmId,
        host: &mut PhysMemTables,
        frames: &mut impl FrameSource,
        gva: Gva,
        enc: bool,
    ) -> Result<(u32, PendingInvalidation<Gva>), VmMapError> {
        let mut splits = 0;
        let mut inv = PendingInvalidation::none();
        loop {
            let gt = self.guest.as_mut().ok_or_else(|| {
                VmMapError::Table(format!("{gva:?} is not mapped (no guest page table)"))
            })?;
            let leaf = gt
                .pt
                .lookup(&gt.tables, gva)
                .ok_or_else(|| VmMapError::Table(format!("{gva:?} is not mapped")))?;
            if leaf.size == PageSize::K4 {
                let attrs = LeafAttrs { encrypted: enc, ..leaf.attrs };
                let tok = gt
                    .pt
                    .protect(&mut gt.tables, gva.align_down(PageSize::K4), PageSize::K4, attrs)
                    .map_err(|e| VmMapError::Table(e.to_string()))?;
                inv.merge(tok);
                return Ok((splits, inv));
            }
            let mut gf = GuestFrames { next: &mut self.next_table, fresh: Vec::new() };
            let res = gt.pt.split(&mut gt.tables, &mut gf, gva);
            let fresh = gf.fresh;
            self.back_tables(vm, host, frames, &fresh)?;
            let (_, tok) = res.map_err(|e| VmMapError::Table(e.to_string()))?;
            inv.merge(tok);
            splits += 1;
        }
    }

    /// Remove the guest leaf of `size` at `gva`.
    pub fn guest_unmap(
        &mut self,
        gva: Gva,
        size: PageSize,
    ) -> Result<PendingInvalidation<Gva>, VmMapError> {
        let Some(gt) = self.guest.as_mut() else {
            return Err(VmMapError::Table(format!("{gva:?} is not mapped (no guest page table)")));
        };
        gt.pt.unmap(&mut gt.tables, gva, size).map(|(_, t)| t).map_err(unmap_err)
    }

    /// The guest tables and the context a vCPU of this VM translates `physical` (GPA) or
    /// virtual (GVA) addresses in. `None` for a GVA access before the guest tables exist.
    pub fn context(&mut self, physical: bool) -> Option<(GuestContext, &mut PhysMemTables<Gpa>)> {
        let (kind, root, memory) = match &self.stage2 {
            Stage2::Npt(t) => {
                let memory = match self.kind {
                    VmKind::Plain => GuestMemory::Plain,
                    VmKind::Sev | VmKind::SevEs | VmKind::Snp | VmKind::Tdx => GuestMemory::Sev,
                };
                (NestedKind::Npt, t.root(), memory)
            }
            Stage2::Ept { secure, shared } => (
                NestedKind::Ept { accessed_dirty: true },
                secure.root(),
                GuestMemory::Tdx { gpaw: TD_GPAW, shared_root: shared.root() },
            ),
        };
        let nested =
            NestedContext { kind, root, paging: Paging::FourLevel, format: self.nested_fmt };
        let tag = TlbTag { asid: self.asid, pcid: if physical { PAGING_OFF_PCID } else { 0 } };
        let paging = if physical {
            // A GPA access walks no guest table. The guest format is passed only because
            // mmu-model reads the C-bit position of an SEV guest's GPA from it; the controls
            // are those of paging off (no SMAP on the Perms::ALL a GPA translation carries).
            Some(GuestPaging {
                root: Gpa::ZERO,
                paging: Paging::FourLevel,
                format: self.guest_fmt,
                controls: PagingControls {
                    cr0_wp: false,
                    cr4_smep: false,
                    cr4_smap: false,
                    rflags_ac: false,
                },
            })
        } else {
            // A Linux guest kernel's CR0.WP, SMEP and SMAP.
            Some(GuestPaging {
                root: self.guest.as_ref()?.pt.root(),
                paging: Paging::FourLevel,
                format: self.guest_fmt,
                controls: PagingControls::default(),
            })
        };
        let ctx = GuestContext { tag, paging, nested, memory };
        let tables = match self.guest.as_mut() {
            Some(g) => &mut g.tables,
            None => &mut self.no_tables,
        };
        Some((ctx, tables))
    }

    /// Free every table page (stage 2 through `frames`) and the host pages backing the guest's
    /// tables.
    pub fn destroy(self, host: &mut PhysMemTables, frames: &mut impl FrameSource) {
        match self.stage2 {
            Stage2::Npt(t) => t.destroy(host, frames),
            Stage2::Ept { secure, shared } => {
                secure.destroy(host, frames);
                shared.destroy(host, frames);
            }
        }
        if let Some(g) = self.guest {
            for p in g.backing {
                frames.free_table(p);
            }
        }
    }
}

/// NPT non-leaf entries: present, writable, user, accessed (KVM's `PT_PRESENT_MASK |
/// PT_WRITABLE_MASK | PT_USER_MASK | shadow_accessed_mask`).
const fn npt_table_flags() -> PteFlags {
    PteFlags::PRESENT.union(PteFlags::WRITABLE).union(PteFlags::USER).union(PteFlags::ACCESSED)
}

fn overlaps_tables(gpa: u64, size: PageSize) -> bool {
    gpa < GUEST_TABLE_END && gpa.saturating_add(size.bytes()) > GUEST_TABLE_BASE
}

fn map_err<V: mmu_model::PagedAddr, P: mmu_model::PhysAddr>(e: MapError<V, P>) -> VmMapError {
    VmMapError::Table(e.to_string())
}

fn unmap_err<V: mmu_model::PagedAddr>(e: UnmapError<V>) -> VmMapError {
    VmMapError::Table(e.to_string())
}
