//! The event vocabulary: every family of DESIGN.md "The event stream", declared once.
//!
//! Each variant has a stable binary tag (never renumbered) and a text keyword. Tags are grouped
//! by family: accesses 1–9, address-space changes 10–39, invalidation 40–49, virtualization
//! 50–59, SNP 60–79, TDX 80–89, KVM 90–109.
//!
//! # Versioning rule
//! The vocabulary grows only by additions. A new tag (in any of [`Event`], [`StateItem`],
//! [`Check`]) or a new enum value raises the `.cct` minor version and the `.ccs` `version` line's
//! minor number; a reader that meets a tag it does not know stops with an error naming the
//! version it would need ([`crate::FORMAT_MINOR`] is what this build knows). A change that
//! alters the meaning or layout of an existing tag raises the major version.
//!
//! Many events are vocabulary only in the foundation: the engine gives each family its
//! semantics as the model deepens, without changing these formats.

use crate::addr::{Gpa, Gva, Hva, Iova, Spa};
use crate::agent::{Agent, VmId};
use crate::codec::{BareAddr, Field, FieldError, Hex, TextCtx, get_varint, parse_u64, put_varint};
use crate::time::Cycles;
use crate::{PageSize, field_enum, vocabulary};

/// An address with its kind: what an access or operation names.
///
/// A CPU access to an [`Address::Spa`] goes through the host direct map (the kernel's
/// `__va(pa)`), so it is translated and checked like any other kernel access. Text prefixes:
/// `phys:`, `gpa:`, `gva:`, `hva:`, `iova:`; a bare `0x…` is the issuing agent's natural kind
/// (host: `hva`, guest: `gva`, device: `iova`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Address {
    /// Host virtual.
    Hva(Hva),
    /// Guest virtual.
    Gva(Gva),
    /// Guest physical (guests without paging, GPA traces).
    Gpa(Gpa),
    /// System physical (host: through the direct map).
    Spa(Spa),
    /// I/O virtual (devices).
    Iova(Iova),
}

impl Address {
    /// The raw value, whatever the kind.
    pub const fn raw(self) -> u64 {
        match self {
            Address::Hva(a) => a.raw(),
            Address::Gva(a) => a.raw(),
            Address::Gpa(a) => a.raw(),
            Address::Spa(a) => a.raw(),
            Address::Iova(a) => a.raw(),
        }
    }

    /// The binary kind code (0–4), also used by the columnar access blocks of `.cct`.
    pub const fn kind_code(self) -> u8 {
        match self {
            Address::Hva(_) => 0,
            Address::Gva(_) => 1,
            Address::Gpa(_) => 2,
            Address::Spa(_) => 3,
            Address::Iova(_) => 4,
        }
    }

    /// Rebuild from a kind code and raw value.
    ///
    /// # Errors
    /// [`FieldError`] for an unknown code or a physical value beyond 52 bits.
    pub fn from_kind_code(code: u8, raw: u64) -> Result<Address, FieldError> {
        let range =
            |_| FieldError::OutOfRange { what: "physical address", text: format!("{raw:#x}") };
        Ok(match code {
            0 => Address::Hva(Hva::new_truncate(raw)),
            1 => Address::Gva(Gva::new_truncate(raw)),
            2 => Address::Gpa(Gpa::try_new(raw).map_err(range)?),
            3 => Address::Spa(Spa::try_new(raw).map_err(range)?),
            4 => Address::Iova(Iova::new_truncate(raw)),
            c => return Err(FieldError::UnknownCode { what: "address kind", code: c.into() }),
        })
    }

    /// The bare-address kind code for an agent's text context.
    pub const fn bare_code(b: BareAddr) -> u8 {
        match b {
            BareAddr::Hva => 0,
            BareAddr::Gva => 1,
            BareAddr::Iova => 4,
            BareAddr::Spa => 3,
        }
    }
}

impl Field for Address {
    fn write_text(&self, out: &mut String) {
        let p = match self {
            Address::Hva(_) => "hva:",
            Address::Gva(_) => "gva:",
            Address::Gpa(_) => "gpa:",
            Address::Spa(_) => "phys:",
            Address::Iova(_) => "iova:",
        };
        out.push_str(p);
        out.push_str(&format!("{:#x}", self.raw()));
    }
    fn parse_text(s: &str, ctx: &TextCtx) -> Result<Self, FieldError> {
        let (code, num) = match s.split_once(':') {
            Some(("hva", n)) => (0, n),
            Some(("gva", n)) => (1, n),
            Some(("gpa", n)) => (2, n),
            Some(("phys" | "spa", n)) => (3, n),
            Some(("iova", n)) => (4, n),
            Some(_) => {
                return Err(FieldError::Malformed {
                    what: "address (phys:, gpa:, gva:, hva:, iova: or bare 0x…)",
                    text: s.into(),
                });
            }
            None => (Address::bare_code(ctx.bare_addr), s),
        };
        Address::from_kind_code(code, parse_u64(num)?)
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.push(self.kind_code());
        put_varint(out, self.raw());
    }
    fn get(inp: &mut &[u8]) -> Result<Self, FieldError> {
        let k = u8::get(inp)?;
        let v = get_varint(inp)?;
        Address::from_kind_code(k, v)
    }
}

impl crate::vocab::Absent for Address {
    fn absent() -> Option<Self> {
        None
    }
}

/// Which page table an address-space event changes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Space {
    /// The host kernel's page tables (init_mm), including the direct map.
    Kernel,
    /// A host process, by PID.
    Process(u32),
    /// A guest's own page tables (guest CR3 of VM n).
    Guest(VmId),
    /// The stage-2 table (NPT or EPT; S-EPT for a TD) of VM n.
    Stage2(VmId),
    /// An IOMMU domain's I/O page table.
    IoDomain(u32),
}

impl Field for Space {
    fn write_text(&self, out: &mut String) {
        let s = match self {
            Space::Kernel => "kernel".to_owned(),
            Space::Process(p) => format!("proc:{p}"),
            Space::Guest(v) => format!("guest:{v}"),
            Space::Stage2(v) => format!("stage2:{v}"),
            Space::IoDomain(d) => format!("iodom:{d}"),
        };
        out.push_str(&s);
    }
    fn parse_text(s: &str, ctx: &TextCtx) -> Result<Self, FieldError> {
        let bad = || FieldError::Malformed {
            what: "page-table space (kernel, proc:N, guest:N, stage2:N, iodom:N)",
            text: s.into(),
        };
        if s == "kernel" {
            return Ok(Space::Kernel);
        }
        let (k, n) = s.split_once(':').ok_or_else(bad)?;
        let n = u32::parse_text(n, ctx)?;
        match k {
            "proc" => Ok(Space::Process(n)),
            "guest" => Ok(Space::Guest(n)),
            "stage2" => Ok(Space::Stage2(n)),
            "iodom" => Ok(Space::IoDomain(n)),
            _ => Err(bad()),
        }
    }
    fn put(&self, out: &mut Vec<u8>) {
        let (k, n) = match *self {
            Space::Kernel => (0, 0),
            Space::Process(n) => (1, n),
            Space::Guest(n) => (2, n),
            Space::Stage2(n) => (3, n),
            Space::IoDomain(n) => (4, n),
        };
        out.push(k);
        put_varint(out, n.into());
    }
    fn get(inp: &mut &[u8]) -> Result<Self, FieldError> {
        let k = u8::get(inp)?;
        let n = u32::get(inp)?;
        Ok(match k {
            0 => Space::Kernel,
            1 => Space::Process(n),
            2 => Space::Guest(n),
            3 => Space::Stage2(n),
            4 => Space::IoDomain(n),
            c => return Err(FieldError::UnknownCode { what: "space", code: c.into() }),
        })
    }
}

impl crate::vocab::Absent for Space {
    fn absent() -> Option<Self> {
        Some(Space::Kernel)
    }
}

field_enum!(
    /// Memory type of a store (Intel SDM Vol. 3A §12.3; AMD APM Vol. 2 §7.4). Partial writes
    /// with UC/WC/NT matter for the TDX partial-write erratum (spec/physmap.md H14).
    MemType, "memory type (wb, uc, wc, nt)" {
        /// Write-back.
        Wb = 0, "wb";
        /// Uncacheable.
        Uc = 1, "uc";
        /// Write-combining.
        Wc = 2, "wc";
        /// Non-temporal store (MOVNTI and friends).
        Nt = 3, "nt";
    }
);

field_enum!(
    /// A `set_memory_*` / `set_direct_map_*` request of Linux CPA (arch/x86/mm/pat/set_memory.c).
    CpaOp, "CPA operation" {
        /// `set_memory_4k`: force 4 KiB mappings (tags `_PAGE_KERNEL_4K` since v6.15).
        Set4k = 0, "4k";
        /// `set_memory_ro`.
        Ro = 1, "ro";
        /// `set_memory_rw`.
        Rw = 2, "rw";
        /// `set_memory_rox`: the only caller passing `CPA_COLLAPSE` (v6.15).
        Rox = 3, "rox";
        /// `set_memory_x`.
        X = 4, "x";
        /// `set_memory_nx`.
        Nx = 5, "nx";
        /// `set_memory_np`.
        Np = 6, "np";
        /// `set_memory_p`.
        P = 7, "p";
        /// `set_memory_encrypted`.
        Encrypted = 8, "encrypted";
        /// `set_memory_decrypted`.
        Decrypted = 9, "decrypted";
        /// `set_direct_map_invalid_noflush`.
        DirectMapInvalid = 10, "dm-invalid";
        /// `set_direct_map_default_noflush`.
        DirectMapDefault = 11, "dm-default";
        /// `set_direct_map_valid_noflush`.
        DirectMapValid = 12, "dm-valid";
    }
);

field_enum!(
    /// What a physical-page allocation is for.
    AllocKind, "allocation kind (kernel, user, pagetable, slab, guest)" {
        /// Kernel data.
        Kernel = 0, "kernel";
        /// User memory.
        User = 1, "user";
        /// A page-table page.
        PageTable = 2, "pagetable";
        /// Slab backing.
        Slab = 3, "slab";
        /// Guest memory (VMM, shared).
        Guest = 4, "guest";
    }
);

field_enum!(
    /// INVPCID type (Intel SDM Vol. 2A, INVPCID: types 0–3).
    InvpcidKind, "INVPCID type (addr, single, all-global, all)" {
        /// Type 0: one address in one PCID.
        Addr = 0, "addr";
        /// Type 1: one PCID.
        Single = 1, "single";
        /// Type 2: all PCIDs, including globals.
        AllGlobal = 2, "all-global";
        /// Type 3: all PCIDs, except globals.
        All = 3, "all";
    }
);

field_enum!(
    /// IOMMU invalidation commands (AMD IOMMU spec §2.4 command buffer; Intel VT-d §6.5).
    IommuCmd, "IOMMU command" {
        /// AMD INVALIDATE_DEVTAB_ENTRY.
        InvalidateDevtabEntry = 0, "inv-devtab";
        /// AMD INVALIDATE_IOMMU_PAGES.
        InvalidateIommuPages = 1, "inv-pages";
        /// AMD INVALIDATE_IOTLB_PAGES (device-side ATS caches).
        InvalidateIotlbPages = 2, "inv-iotlb";
        /// AMD INVALIDATE_INTERRUPT_TABLE.
        InvalidateInterruptTable = 3, "inv-irt";
        /// AMD INVALIDATE_IOMMU_ALL.
        InvalidateIommuAll = 4, "inv-all";
        /// AMD COMPLETION_WAIT.
        CompletionWait = 5, "completion-wait";
        /// VT-d context-cache invalidation.
        VtdContextInv = 6, "vtd-cc-inv";
        /// VT-d IOTLB invalidation.
        VtdIotlbInv = 7, "vtd-iotlb-inv";
        /// VT-d invalidation wait descriptor.
        VtdWait = 8, "vtd-wait";
        /// The host programs the device's entry (AMD device table entry, VT-d context entry)
        /// to translate through I/O page table `domain` (not a command-buffer command: the
        /// entry is written in memory; an AMD host then issues INVALIDATE_DEVTAB_ENTRY, a VT-d
        /// host a context-cache invalidation).
        Attach = 9, "attach";
        /// The host clears the device's entry (DMA from it is then blocked and reported).
        Detach = 10, "detach";
    }
);

field_enum!(
    /// Guest page-state-change operation (GHCB spec; Linux `sev-common.h` SNP_PAGE_STATE_*).
    PscOp, "page-state operation (private, shared, psmash, unsmash)" {
        /// Make private.
        Private = 1, "private";
        /// Make shared.
        Shared = 2, "shared";
        /// PSMASH request.
        Psmash = 3, "psmash";
        /// UNSMASH request.
        Unsmash = 4, "unsmash";
    }
);

field_enum!(
    /// SNP firmware (AMD-SP) commands that change memory state (SEV-SNP firmware ABI spec).
    SnpFwCmd, "SNP firmware command" {
        /// SNP_INIT(_EX).
        Init = 0, "init";
        /// SNP_SHUTDOWN(_EX).
        Shutdown = 1, "shutdown";
        /// SNP_LAUNCH_START.
        LaunchStart = 2, "launch-start";
        /// SNP_LAUNCH_UPDATE: pages become guest-owned and validated.
        LaunchUpdate = 3, "launch-update";
        /// SNP_LAUNCH_FINISH.
        LaunchFinish = 4, "launch-finish";
        /// SNP_DECOMMISSION.
        Decommission = 5, "decommission";
        /// SNP_PAGE_RECLAIM: a firmware page back to the hypervisor.
        PageReclaim = 6, "page-reclaim";
        /// SNP_PAGE_UNSMASH: 512 4K entries back into one 2M entry.
        PageUnsmash = 7, "page-unsmash";
        /// SNP_ACTIVATE.
        Activate = 8, "activate";
    }
);

field_enum!(
    /// A KVM memslot operation (KVM_SET_USER_MEMORY_REGION(2)).
    MemslotOp, "memslot operation (create, delete, move, flags)" {
        /// Create a slot.
        Create = 0, "create";
        /// Delete a slot.
        Delete = 1, "delete";
        /// Move a slot's GPA.
        Move = 2, "move";
        /// Change flags (dirty logging, read-only).
        Flags = 3, "flags";
    }
);

field_enum!(
    /// The kind of a VM.
    VmKind, "VM kind (plain, sev, sev-es, snp, tdx)" {
        /// No memory encryption.
        Plain = 0, "plain";
        /// SEV.
        Sev = 1, "sev";
        /// SEV-ES.
        SevEs = 2, "sev-es";
        /// SEV-SNP.
        Snp = 3, "snp";
        /// A TDX trust domain.
        Tdx = 4, "tdx";
    }
);

vocabulary! {
    /// One event of the stream (DESIGN "The event stream").
    pub enum Event: "event" {
        /// A data load of `size` bytes.
        Load = 1, "load" (
            /// Address.
            addr: Address,
            /// Bytes.
            size: u32
        ) {};
        /// A data store of `size` bytes with a memory type.
        Store = 2, "store" (
            /// Address.
            addr: Address,
            /// Bytes.
            size: u32
        ) {
            /// Memory type.
            mt: MemType = MemType::Wb
        };
        /// An instruction fetch.
        Fetch = 3, "fetch" (
            /// Address.
            addr: Address,
            /// Bytes.
            size: u32
        ) {};
        /// A device DMA read.
        DmaRead = 4, "dma-read" (
            /// Address (normally `iova:`).
            addr: Address,
            /// Bytes.
            size: u32
        ) {};
        /// A device DMA write.
        DmaWrite = 5, "dma-write" (
            /// Address.
            addr: Address,
            /// Bytes.
            size: u32
        ) {};
        /// `count` instructions retired without a modelled memory access (priced by base CPI);
        /// issued by a device (`dev:ID`), `count` cycles of device time without a DMA.
        Work = 6, "work" (
            /// Instructions.
            count: u64
        ) {};

        /// A CR3 load (MOV CR3): a new root for the agent's context.
        Cr3Load = 10, "cr3" (
            /// Root table address (`phys:` on the host, `gpa:` in a guest).
            root: Address
        ) {
            /// PCID (CR3 bits 11:0 with CR4.PCIDE).
            pcid: u16 = 0,
            /// CR3 bit 63: do not flush the PCID's entries.
            noflush: bool
        };
        /// Install a translation in a page table.
        Map = 11, "map" (
            /// Virtual (or guest-physical, for stage 2) page.
            va: Address,
            /// Target physical page.
            pa: Address,
            /// Leaf size.
            size: PageSize
        ) {
            /// Which page table.
            space: Space,
            /// Writable.
            w: bool,
            /// Executable.
            x: bool,
            /// User-accessible.
            user: bool,
            /// Encrypted/private (C-bit set; TDX: shared bit clear).
            enc: bool
        };
        /// Remove a translation.
        Unmap = 12, "unmap" (
            /// Page.
            va: Address,
            /// Leaf size.
            size: PageSize
        ) {
            /// Which page table.
            space: Space
        };
        /// Change a translation's permissions.
        Protect = 13, "protect" (
            /// Page.
            va: Address,
            /// Leaf size.
            size: PageSize
        ) {
            /// Which page table.
            space: Space,
            /// Writable.
            w: bool,
            /// Executable.
            x: bool,
            /// User-accessible.
            user: bool
        };
        /// khugepaged collapses a 2M range of a process into a THP.
        ThpCollapse = 14, "thp-collapse" (
            /// 2M-aligned address.
            va: Address
        ) {
            /// Which page table.
            space: Space
        };
        /// A THP is split into 4K mappings.
        ThpSplit = 15, "thp-split" (
            /// 2M-aligned address.
            va: Address
        ) {
            /// Which page table.
            space: Space
        };
        /// A Linux CPA request (`set_memory_*`, `set_direct_map_*`).
        Cpa = 16, "cpa" (
            /// Operation.
            op: CpaOp,
            /// First page (`phys:` for the direct map, or a kernel `hva:`).
            addr: Address
        ) {
            /// Number of 4K pages.
            pages: u64 = 1
        };
        /// The host allocates 2^order physical pages.
        PageAlloc = 17, "page-alloc" (
            /// First page.
            spa: Spa
        ) {
            /// Buddy order.
            order: u8 = 0,
            /// Purpose.
            kind: AllocKind = AllocKind::Kernel
        };
        /// The host frees 2^order physical pages.
        PageFree = 18, "page-free" (
            /// First page.
            spa: Spa
        ) {
            /// Buddy order.
            order: u8 = 0
        };
        /// A kernel object allocation (slab).
        ObjAlloc = 19, "obj-alloc" (
            /// Object address.
            spa: Spa,
            /// Bytes.
            size: u32
        ) {};
        /// A kernel object free.
        ObjFree = 20, "obj-free" (
            /// Object address.
            spa: Spa
        ) {};
        /// guest_memfd allocates a folio for a GPA range.
        GmemAlloc = 21, "gmem-alloc" (
            /// Guest-physical start.
            gpa: Gpa,
            /// Host folio start.
            spa: Spa
        ) {
            /// VM.
            vm: u32,
            /// Folio order.
            order: u8 = 0
        };
        /// guest_memfd frees a folio (hole punch, teardown).
        GmemFree = 22, "gmem-free" (
            /// Guest-physical start.
            gpa: Gpa
        ) {
            /// VM.
            vm: u32,
            /// Folio order.
            order: u8 = 0
        };

        /// INVLPG of one address in the current context.
        Invlpg = 40, "invlpg" (
            /// Address.
            addr: Address
        ) {};
        /// INVPCID.
        Invpcid = 41, "invpcid" (
            /// Type.
            kind: InvpcidKind
        ) {
            /// PCID.
            pcid: u16 = 0,
            /// Address for type 0.
            addr: Option<Address>
        };
        /// Flush an ASID (VMCB TLB_CONTROL).
        FlushAsid = 42, "flush-asid" (
            /// ASID.
            asid: u32
        ) {};
        /// INVVPID of a VPID.
        FlushVpid = 43, "flush-vpid" (
            /// VPID.
            vpid: u16
        ) {};
        /// Flush this CPU's whole TLB, globals included.
        FlushAll = 44, "flush-all" () {};
        /// A TLB shootdown from this CPU to `targets`.
        Shootdown = 45, "shootdown" (
            /// Target CPUs.
            targets: Vec<u32>
        ) {
            /// First address; absent for a full flush.
            addr: Option<Address>,
            /// 4K pages from `addr`.
            pages: u64 = 1
        };
        /// An IOMMU command.
        Iommu = 46, "iommu" (
            /// Command.
            cmd: IommuCmd
        ) {
            /// Device id.
            device: u32 = 0,
            /// Domain id.
            domain: u32 = 0,
            /// First address.
            addr: Option<Iova>,
            /// 4K pages.
            pages: u64 = 0
        };
        /// INVEPT (single context for a VM, or global).
        Invept = 47, "invept" () {
            /// VM whose EPT context is invalidated.
            vm: Option<u32>
        };

        /// VMRUN of a vCPU (AMD).
        VmRun = 50, "vmrun" () {
            /// VM.
            vm: u32,
            /// vCPU.
            vcpu: u32
        };
        /// #VMEXIT of a vCPU.
        VmExit = 51, "vmexit" () {
            /// VM.
            vm: u32,
            /// vCPU.
            vcpu: u32,
            /// Exit code.
            code: Hex,
            /// EXITINFO1.
            info1: Hex = Hex(0),
            /// EXITINFO2.
            info2: Hex = Hex(0)
        };
        /// TD entry (TDH.VP.ENTER).
        TdEnter = 52, "td-enter" () {
            /// VM.
            vm: u32,
            /// vCPU.
            vcpu: u32
        };
        /// TD exit.
        TdExit = 53, "td-exit" () {
            /// VM.
            vm: u32,
            /// vCPU.
            vcpu: u32,
            /// Exit reason.
            reason: Hex
        };
        /// KVM kicks a vCPU out of guest mode (IPI).
        VcpuKick = 54, "kick" () {
            /// VM.
            vm: u32,
            /// vCPU.
            vcpu: u32
        };

        /// RMPUPDATE (AMD APM Vol. 2 §15.36.5): writes Assigned, Page_Size, Immutable, ASID, GPA.
        RmpUpdate = 60, "rmpupdate" () {
            /// Page (2M-aligned for a 2M entry).
            spa: Spa,
            /// RMP page size.
            size: PageSize = PageSize::K4,
            /// Assigned.
            assigned: bool,
            /// Owner ASID.
            asid: u32 = 0,
            /// Guest-physical address.
            gpa: Gpa = Gpa::ZERO,
            /// Immutable.
            immutable: bool
        };
        /// PSMASH (AMD APM Vol. 2 §15.36.11).
        Psmash = 61, "psmash" () {
            /// 2M-aligned page.
            spa: Spa
        };
        /// PVALIDATE (guest, VMPL0).
        Pvalidate = 62, "pvalidate" (
            /// Guest virtual address.
            addr: Address
        ) {
            /// Size.
            size: PageSize = PageSize::K4,
            /// New Validated value.
            validate: bool
        };
        /// RMPADJUST (guest).
        RmpAdjust = 63, "rmpadjust" (
            /// Guest virtual address.
            addr: Address
        ) {
            /// Size.
            size: PageSize = PageSize::K4,
            /// Target VMPL.
            vmpl: u8,
            /// Permission mask (APM Table 15-36).
            perms: Hex,
            /// VMSA bit.
            vmsa: bool
        };
        /// A guest page-state-change request (GHCB).
        Psc = 64, "psc" (
            /// Operation.
            op: PscOp,
            /// First GPA.
            gpa: Gpa
        ) {
            /// Page size.
            size: PageSize = PageSize::K4,
            /// Pages.
            pages: u64 = 1
        };
        /// An SNP firmware command.
        SnpFw = 65, "snp-fw" (
            /// Command.
            cmd: SnpFwCmd
        ) {
            /// VM.
            vm: u32 = 0,
            /// Page operand.
            spa: Option<Spa>,
            /// Guest-physical operand.
            gpa: Option<Gpa>,
            /// Pages.
            pages: u64 = 1
        };
        /// RMPREAD (hypervisor).
        RmpRead = 66, "rmpread" () {
            /// Page.
            spa: Spa
        };

        /// A SEAMCALL with its leaf and register operands (TDX module ABI).
        Seamcall = 80, "seamcall" (
            /// Leaf number (RAX bits 15:0).
            leaf: u16
        ) {
            /// Leaf version (RAX bits 23:16).
            version: u8 = 0,
            /// RCX.
            rcx: Hex = Hex(0),
            /// RDX.
            rdx: Hex = Hex(0),
            /// R8.
            r8: Hex = Hex(0),
            /// R9.
            r9: Hex = Hex(0),
            /// R10.
            r10: Hex = Hex(0)
        };
        /// A TDCALL from a TD.
        Tdcall = 81, "tdcall" (
            /// Leaf.
            leaf: u16
        ) {
            /// RCX.
            rcx: Hex = Hex(0),
            /// RDX.
            rdx: Hex = Hex(0),
            /// R8.
            r8: Hex = Hex(0),
            /// R9.
            r9: Hex = Hex(0)
        };
        /// `TDG.VP.VMCALL<MapGPA>`: convert a GPA range between private and shared.
        MapGpa = 82, "map-gpa" (
            /// First GPA.
            gpa: Gpa,
            /// Bytes.
            bytes: u64
        ) {
            /// To shared (else private).
            shared: bool
        };

        /// KVM_SET_MEMORY_ATTRIBUTES.
        MemAttrs = 90, "mem-attrs" (
            /// First GPA.
            gpa: Gpa,
            /// Bytes.
            bytes: u64
        ) {
            /// VM.
            vm: u32,
            /// Attributes (bit 3 = KVM_MEMORY_ATTRIBUTE_PRIVATE).
            attrs: Hex,
            /// VTL the attributes apply to.
            vtl: u8 = 0
        };
        /// KVM_SET_USER_MEMORY_REGION2.
        Memslot = 91, "memslot" (
            /// Operation.
            op: MemslotOp
        ) {
            /// VM.
            vm: u32,
            /// Slot id.
            slot: u32,
            /// Address-space id.
            as_id: u16 = 0,
            /// Guest-physical base.
            gpa: Gpa = Gpa::ZERO,
            /// Bytes.
            bytes: u64 = 0,
            /// Userspace address.
            hva: Hva = Hva::ZERO,
            /// Flags.
            flags: Hex = Hex(0)
        };
        /// A VM is created.
        VmCreate = 92, "vm-create" (
            /// Kind.
            kind: VmKind
        ) {
            /// VM.
            vm: u32,
            /// ASID (SEV) or HKID (TDX).
            asid: u32 = 0,
            /// Guest memory in bytes.
            memory: u64 = 0
        };
        /// A VM is destroyed.
        VmDestroy = 93, "vm-destroy" () {
            /// VM.
            vm: u32
        };
        /// A vCPU is created.
        VcpuCreate = 94, "vcpu-create" () {
            /// VM.
            vm: u32,
            /// vCPU.
            vcpu: u32
        };
        /// A vCPU is destroyed.
        VcpuDestroy = 95, "vcpu-destroy" () {
            /// VM.
            vm: u32,
            /// vCPU.
            vcpu: u32
        };
        /// HvCallModifyVtlProtectionMask over a GPA range.
        VsmProtect = 96, "vsm-protect" (
            /// First GPA.
            gpa: Gpa
        ) {
            /// VM.
            vm: u32,
            /// Target VTL.
            vtl: u8,
            /// 4K pages.
            pages: u64 = 1,
            /// Protection mask (bit 0 R, 1 W, 2 X kernel, 3 X user).
            mask: Hex
        };
    }
}

impl Event {
    /// Whether this is a memory access (carried in the columnar blocks of `.cct`).
    pub const fn is_access(&self) -> bool {
        matches!(
            self,
            Event::Load { .. }
                | Event::Store { .. }
                | Event::Fetch { .. }
                | Event::DmaRead { .. }
                | Event::DmaWrite { .. }
        )
    }
}

field_enum!(
    /// An architectural fault kind, as scenarios name it.
    FaultKind, "fault kind (pf, npf, vc, gp, ept-violation, mc, iommu-event, dmar-fault)" {
        /// #PF (host or guest page fault; bit 31 = RMP).
        Pf = 0, "pf";
        /// #VMEXIT(NPF) (AMD nested page fault).
        Npf = 1, "npf";
        /// #VC (e.g. 0x404 PAGE_NOT_VALIDATED).
        Vc = 2, "vc";
        /// #GP.
        Gp = 3, "gp";
        /// EPT violation exit.
        EptViolation = 4, "ept-violation";
        /// #MC.
        Mc = 5, "mc";
        /// An AMD-Vi event-log entry caused by a DMA; code = event dword 1 bits 31:16 (event
        /// code << 12 | flags), e.g. 0xd020 for RMP_PAGE_FAULT on a write.
        IommuEvent = 6, "iommu-event";
        /// A VT-d fault record caused by a DMA; code = the record's top dword (fault reason in
        /// bits 7:0, T = read in bit 30).
        DmarFault = 7, "dmar-fault";
        /// #VE (Intel virtualization exception), e.g. a TD's access to a PENDING private page
        /// when the TD has not set SEPT_VE_DISABLE (spec/tdx.md §2.5).
        Ve = 8, "ve";
    }
);

field_enum!(
    /// A Secure-EPT entry state of the TDX module (spec/tdx.md §1.3; the migration-only states
    /// are not in the vocabulary).
    SeptStateName, "S-EPT state (free, blocked, pending, pending-blocked, mapped, removed, nl-mapped, nl-blocked)" {
        /// FREE.
        Free = 0, "free";
        /// BLOCKED.
        Blocked = 1, "blocked";
        /// PENDING (AUGed, not yet accepted).
        Pending = 2, "pending";
        /// PENDING_BLOCKED.
        PendingBlocked = 3, "pending-blocked";
        /// MAPPED.
        Mapped = 4, "mapped";
        /// REMOVED (migration).
        Removed = 5, "removed";
        /// NL_MAPPED (non-leaf).
        NlMapped = 6, "nl-mapped";
        /// NL_BLOCKED (non-leaf).
        NlBlocked = 7, "nl-blocked";
    }
);

field_enum!(
    /// A PAMT page type (spec/tdx.md §1.5).
    PamtType, "PAMT page type (nda, rsvd, reg, tdr, tdcx, tdvpr, ept)" {
        /// PT_NDA: not assigned.
        Nda = 0, "nda";
        /// PT_RSVD: reserved.
        Rsvd = 1, "rsvd";
        /// PT_REG: a TD private page.
        Reg = 3, "reg";
        /// PT_TDR.
        Tdr = 4, "tdr";
        /// PT_TDCX.
        Tdcx = 5, "tdcx";
        /// PT_TDVPR.
        Tdvpr = 6, "tdvpr";
        /// PT_EPT: an S-EPT page.
        Ept = 8, "ept";
    }
);

field_enum!(
    /// A TD's lifecycle / OP_STATE as scenarios name it.
    TdState, "TD state (uninitialized, initialized, runnable, teardown)" {
        /// Created (TDR), keys being configured, TDCS not yet initialised.
        Uninitialized = 0, "uninitialized";
        /// TDH.MNG.INIT done; build time (PAGE.ADD, MR.EXTEND) before MR.FINALIZE.
        Initialized = 1, "initialized";
        /// After TDH.MR.FINALIZE: the blocked + tracked rule applies.
        Runnable = 2, "runnable";
        /// HKID freed; pages can be reclaimed.
        Teardown = 3, "teardown";
    }
);

field_enum!(
    /// What happened to a fault after it was raised.
    Disposition, "disposition (raised, handled, fatal)" {
        /// Raised and left to the faulting context (e.g. a guest #VC).
        Raised = 0, "raised";
        /// Handled by host software (e.g. KVM PSMASH on #NPF) and retried.
        Handled = 1, "handled";
        /// Would crash the host (kernel RMP #PF): counted, run continues.
        Fatal = 2, "fatal";
    }
);

vocabulary! {
    /// Initial architectural state set directly by a scenario's `state` line.
    pub enum StateItem: "state" {
        /// An RMP entry (AMD APM Vol. 2 Table 15-34).
        Rmp = 1, "rmp" () {
            /// Page (2M-aligned for a 2M entry).
            spa: Spa,
            /// Page_Size.
            size: PageSize = PageSize::K4,
            /// Assigned.
            assigned: bool,
            /// ASID.
            asid: u32 = 0,
            /// Guest_Physical_Address.
            gpa: Gpa = Gpa::ZERO,
            /// Validated.
            validated: bool,
            /// Immutable.
            immutable: bool,
            /// VMSA.
            vmsa: bool
        };
        /// A TDX trust domain, made directly (TDR page `tdr`, S-EPT root page `root`), bound
        /// to VM `vm` for guest events.
        Td = 4, "td" () {
            /// TDR page.
            tdr: Spa,
            /// VM of the guest events.
            vm: u32 = 1,
            /// HKID.
            hkid: u32 = 16,
            /// OP_STATE.
            state: TdState = TdState::Runnable,
            /// S-EPT root page.
            root: Spa,
            /// Guest physical-address width (48: 4-level, shared bit 47; 52: 5-level, bit 51).
            gpaw: u32 = 48,
            /// TD_EPOCH.
            epoch: u64 = 1
        };
        /// An S-EPT entry of TD `tdr` (missing tables are made from free host pages).
        Sept = 5, "sept" () {
            /// TD.
            tdr: Spa,
            /// Guest-physical address (private, aligned to the level).
            gpa: Gpa,
            /// Level: 0 = 4K, 1 = 2M, 2 = 1G.
            level: u8 = 0,
            /// State.
            state: SeptStateName,
            /// Page (leaf states).
            hpa: Option<Spa>
        };
        /// A PAMT entry.
        Pamt = 6, "pamt" () {
            /// Page.
            hpa: Spa,
            /// Page type.
            pt: PamtType,
            /// Owner TDR.
            owner: Option<Spa>,
            /// Entry size.
            size: PageSize = PageSize::K4,
            /// BEPOCH.
            bepoch: u64 = 0
        };
        /// Direct-map mappings of `[spa, spa+len)` with leaves of `size`.
        DirectMap = 2, "directmap" () {
            /// First byte (aligned to `size`).
            spa: Spa,
            /// Leaf size.
            size: PageSize,
            /// Bytes (default: one page of `size`).
            len: Option<u64>
        };
        /// A translation in any page table.
        Map = 3, "map" (
            /// Virtual page.
            va: Address,
            /// Physical page.
            pa: Address,
            /// Leaf size.
            size: PageSize
        ) {
            /// Which page table.
            space: Space,
            /// Writable.
            w: bool,
            /// Executable.
            x: bool,
            /// User-accessible.
            user: bool,
            /// Encrypted/private.
            enc: bool
        };
    }
}

vocabulary! {
    /// What an `expect` line checks.
    pub enum Check: "check" {
        /// The event completed with no fault.
        NoFault = 1, "no-fault" () {};
        /// The event faulted.
        Fault = 2, "fault" (
            /// Fault kind.
            kind: FaultKind
        ) {
            /// Architectural error code (#PF error code, EXITINFO1, #VC code, …).
            code: Option<Hex>,
            /// Bits that must be set in the code (others unchecked).
            bits: Option<Hex>,
            /// Raised, handled or fatal.
            disposition: Option<Disposition>
        };
        /// An instruction's return code.
        Rc = 3, "rc" (
            /// Return code (RAX).
            code: u64
        ) {
            /// Carry flag (PVALIDATE "no update").
            cf: Option<bool>
        };
        /// Fields of an RMP entry (only those given are checked).
        Rmp = 4, "rmp" () {
            /// Page.
            spa: Spa,
            /// Page_Size.
            size: Option<PageSize>,
            /// Assigned.
            assigned: Option<bool>,
            /// ASID.
            asid: Option<u32>,
            /// GPA.
            gpa: Option<Gpa>,
            /// Validated.
            validated: Option<bool>,
            /// Immutable.
            immutable: Option<bool>,
            /// VMSA.
            vmsa: Option<bool>
        };
        /// A report counter (by its report name, e.g. `rmp.violations`).
        Counter = 5, "counter" (
            /// Counter name.
            name: String
        ) {
            /// Exact value.
            eq: Option<u64>,
            /// Lower bound.
            min: Option<u64>,
            /// Upper bound.
            max: Option<u64>
        };
        /// The direct-map leaf size covering a physical address.
        DirectMap = 6, "directmap" () {
            /// Physical address.
            spa: Spa,
            /// Expected leaf size.
            size: PageSize
        };
        /// Output registers of the previous SEAMCALL/TDCALL (only those given are checked).
        Regs = 7, "regs" () {
            /// RAX (status).
            rax: Option<Hex>,
            /// RCX.
            rcx: Option<Hex>,
            /// RDX.
            rdx: Option<Hex>,
            /// R8.
            r8: Option<Hex>,
            /// R11.
            r11: Option<Hex>
        };
        /// An S-EPT entry of TD `tdr` (only the fields given are checked).
        Sept = 8, "sept" () {
            /// TD.
            tdr: Spa,
            /// Guest-physical address.
            gpa: Gpa,
            /// Level.
            level: u8 = 0,
            /// State.
            state: Option<SeptStateName>,
            /// Page the entry maps.
            hpa: Option<Spa>
        };
        /// A PAMT entry (only the fields given are checked).
        Pamt = 9, "pamt" () {
            /// Page.
            hpa: Spa,
            /// Page type.
            pt: Option<PamtType>,
            /// Owner TDR.
            owner: Option<Spa>,
            /// BEPOCH.
            bepoch: Option<u64>
        };
        /// TD state (only the fields given are checked).
        Td = 10, "td" () {
            /// TD.
            tdr: Spa,
            /// OP_STATE.
            state: Option<TdState>,
            /// TD_EPOCH.
            epoch: Option<u64>,
            /// CHLDCNT.
            chldcnt: Option<u64>
        };
    }
}

impl Check {
    /// Whether the check asserts anything. `expect rmp spa=…` with no field, or `expect counter`
    /// with no bound, checks nothing and is rejected by every reader.
    pub fn checks_something(&self) -> bool {
        match self {
            Check::NoFault {}
            | Check::Fault { .. }
            | Check::Rc { .. }
            | Check::DirectMap { .. } => true,
            Check::Rmp { size, assigned, asid, gpa, validated, immutable, vmsa, .. } => {
                size.is_some()
                    || assigned.is_some()
                    || asid.is_some()
                    || gpa.is_some()
                    || validated.is_some()
                    || immutable.is_some()
                    || vmsa.is_some()
            }
            Check::Counter { eq, min, max, .. } => eq.is_some() || min.is_some() || max.is_some(),
            Check::Regs { rax, rcx, rdx, r8, r11 } => {
                rax.is_some() || rcx.is_some() || rdx.is_some() || r8.is_some() || r11.is_some()
            }
            Check::Sept { state, hpa, .. } => state.is_some() || hpa.is_some(),
            Check::Pamt { pt, owner, bepoch, .. } => {
                pt.is_some() || owner.is_some() || bepoch.is_some()
            }
            Check::Td { state, epoch, chldcnt, .. } => {
                state.is_some() || epoch.is_some() || chldcnt.is_some()
            }
        }
    }
}

/// An event with its issuer and, where the source has one, its time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedEvent {
    /// Cycle timestamp (traces that carry time; scenarios may write `@N`).
    pub time: Option<Cycles>,
    /// Who issued it.
    pub agent: Agent,
    /// What happened.
    pub event: Event,
}

/// A header setting line of a scenario: `machine k=v…`, `host k=v…`, `vm N kind k=v…`.
///
/// Kept as words so that it converts losslessly; the engine maps it onto configuration
/// overrides (any field of the machine configuration can be set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The section keyword (`machine`, `host`, `vm`).
    pub section: String,
    /// Positional words after the section (`vm 1 snp` → `["1", "snp"]`).
    pub args: Vec<String>,
    /// `key=value` pairs, in order.
    pub pairs: Vec<(String, String)>,
}

/// One item of a stream, in file order: what `.ccs` lines and `.cct` records both carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// An event.
    Event(TimedEvent),
    /// A header setting.
    Setting(Setting),
    /// Initial state.
    State(StateItem),
    /// An expectation on the preceding event (`final`: on the end state).
    Expect {
        /// Checked at the end of the run rather than after the previous event.
        at_end: bool,
        /// What is checked.
        check: Check,
    },
    /// Start of a per-vCPU step program for the race explorer; records until
    /// [`Record::ProgramEnd`] belong to it and are not run in file order.
    ProgramBegin(String),
    /// End of a step program.
    ProgramEnd,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::tokenize;

    fn parse(line: &str) -> Event {
        let t = tokenize(line);
        Event::parse_text(t[0], &t[1..], &TextCtx::default()).unwrap().unwrap()
    }

    #[test]
    fn text_and_binary_round_trip() {
        for line in [
            "store phys:0x40201000 8",
            "store hva:0xffff888000001000 4 mt=uc",
            "rmpupdate spa=0x40200000 assigned asid=1 gpa=0x200000",
            "rmpupdate spa=0x40200000 size=2M",
            "shootdown 0,1,3 addr=hva:0x1000 pages=4",
            "seamcall 9 rcx=0x10 r8=0xff",
            "cpa 4k phys:0x100000 pages=512",
            "flush-all",
        ] {
            let e = parse(line);
            let mut s = String::new();
            e.write_text(&mut s);
            assert_eq!(s, line);
            let mut b = Vec::new();
            e.encode(&mut b);
            let mut sl = b.as_slice();
            assert_eq!(Event::decode(&mut sl).unwrap(), e);
            assert!(sl.is_empty());
        }
    }

    #[test]
    fn field_errors_name_their_column() {
        let t = tokenize("rmpupdate spa=0x1000 asid=zz");
        let e = Event::parse_text(t[0], &t[1..], &TextCtx::default()).unwrap_err();
        assert_eq!(e.col, 27);
        let t = tokenize("store 0x10");
        assert!(Event::parse_text(t[0], &t[1..], &TextCtx::default()).is_err());
        let t = tokenize("load 0x10 8 bogus=1");
        let e = Event::parse_text(t[0], &t[1..], &TextCtx::default()).unwrap_err();
        assert!(matches!(e.kind, crate::vocab::TextErrorKind::UnknownField { .. }));
        let t = tokenize("frobnicate 1");
        assert_eq!(Event::parse_text(t[0], &t[1..], &TextCtx::default()).unwrap(), None);
        let mut b = Vec::new();
        put_varint(&mut b, 999);
        assert!(matches!(
            Event::decode(&mut b.as_slice()),
            Err(crate::vocab::DecodeError::UnknownTag { tag: 999, .. })
        ));
    }

    #[test]
    fn empty_checks_are_detectable() {
        let t = tokenize("rmp spa=0x1000");
        let c = Check::parse_text(t[0], &t[1..], &TextCtx::default()).unwrap().unwrap();
        assert!(!c.checks_something());
    }
}
