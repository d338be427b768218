//! Test rigs shared by the integration-test modules: a host with a direct map, and a guest
//! under NPT or EPT.

#![allow(dead_code)] // not every module uses every helper

use mmu_model::{
    AccessKind, AccessOutcome, AccessRequest, Cr3, EptFlags, EptLeafAttrs, EptTable, FlatLatency,
    GuestAccessOutcome, GuestAccessRequest, GuestAddr, GuestContext, GuestMemory, GuestPageTable,
    GuestPaging, LeafAttrs, LinearFrames, Mmu, MmuConfig, NestedContext, NestedKind, NoCheck,
    NptTable, PageTable, Paging, PagingControls, PhysMemTables, Privilege, PteFlags, PteFormat,
    TlbTag,
};
use sim_core::{Context, Cycles, Gpa, Gva, Hva, PageSize, PrivLevel, Spa};

/// Linux x86-64 4-level direct-map base (Documentation/arch/x86/x86_64/mm.rst).
pub const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
/// Linux 5-level direct-map base (mm.rst).
pub const PAGE_OFFSET_5: u64 = 0xff11_0000_0000_0000;

/// The direct-map address of `pa` (4-level).
pub fn dm(pa: u64) -> Hva {
    Hva::new(PAGE_OFFSET + pa)
}

/// A host: page-table pages at 16 MiB..1 GiB, a direct map, one MMU.
pub struct Host {
    pub tables: PhysMemTables,
    pub frames: LinearFrames,
    pub pt: PageTable,
    pub mmu: Mmu,
    pub lat: FlatLatency,
    pub base: u64,
}

/// Leaf attributes with A and D set (no A/D writes in reference counts): P | RW | A | D | NX.
pub const RW_AD: LeafAttrs = LeafAttrs::new(
    PteFlags::PRESENT
        .union(PteFlags::WRITABLE)
        .union(PteFlags::ACCESSED)
        .union(PteFlags::DIRTY)
        .union(PteFlags::NO_EXECUTE),
);

/// Leaf attributes with A and D set, executable.
pub const RWX_AD: LeafAttrs = LeafAttrs::new(
    PteFlags::PRESENT.union(PteFlags::WRITABLE).union(PteFlags::ACCESSED).union(PteFlags::DIRTY),
);

impl Host {
    pub fn new(cfg: &MmuConfig, paging: Paging) -> Host {
        let mut tables = PhysMemTables::new();
        let mut frames = LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x4000_0000));
        let pt = PageTable::new(
            &mut tables,
            &mut frames,
            paging,
            cfg.pte_format(),
            PteFlags::KERNEL_TABLE,
        )
        .unwrap();
        let cr3 = Cr3 { root: pt.root(), paging, tag: TlbTag::HOST };
        let mmu = Mmu::new(0, cfg, cr3).unwrap();
        let base = match paging {
            Paging::FourLevel => PAGE_OFFSET,
            Paging::FiveLevel => PAGE_OFFSET_5,
        };
        Host { tables, frames, pt, mmu, lat: FlatLatency { per_ref: cfg.walk_ref_latency }, base }
    }

    pub fn va(&self, pa: u64) -> Hva {
        Hva::new(self.base + pa)
    }

    pub fn map(&mut self, pa: u64, size: PageSize, attrs: LeafAttrs) {
        let va = self.va(pa);
        self.pt
            .map(&mut self.tables, &mut self.frames, va, Spa::new(pa), size, attrs)
            .unwrap()
            .ignore(); // fresh mapping: nothing cached
    }

    /// Map `n` 4K pages from `pa` with A/D set.
    pub fn map_4k(&mut self, pa: u64, n: u64) {
        for i in 0..n {
            self.map(pa + i * 4096, PageSize::K4, RWX_AD);
        }
    }

    pub fn access(&mut self, pa: u64, kind: AccessKind) -> AccessOutcome {
        let req = AccessRequest::kernel(self.va(pa), kind);
        self.mmu.access(&mut self.tables, &mut NoCheck, &mut self.lat, &req)
    }

    pub fn read(&mut self, pa: u64) -> AccessOutcome {
        self.access(pa, AccessKind::Read)
    }
}

/// GPA g of guest RAM is backed by SPA g + `HOST_OFFSET`.
pub const HOST_OFFSET: u64 = 0x1_0000_0000;
/// Guest page-table pages are allocated from this GPA range.
pub const GUEST_TABLES: (u64, u64) = (0x10_0000, 0x40_0000);

/// A guest under NPT or EPT, with its own page tables (or none), on one host CPU.
pub struct Guest {
    pub host: PhysMemTables,
    pub hframes: LinearFrames,
    pub npt: Option<NptTable>,
    pub ept: Option<EptTable>,
    pub guest: PhysMemTables<Gpa>,
    pub gframes: LinearFrames<Gpa>,
    pub gpt: GuestPageTable,
    pub ctx: GuestContext,
    pub mmu: Mmu,
    pub lat: FlatLatency,
    /// Guest-physical pages already mapped in the nested table.
    mapped: std::collections::BTreeSet<u64>,
}

pub const GUEST_LEAF: LeafAttrs = LeafAttrs::new(
    PteFlags::PRESENT.union(PteFlags::WRITABLE).union(PteFlags::ACCESSED).union(PteFlags::DIRTY),
);

pub fn guest_ctx() -> Context {
    Context::Guest { vm: 1, vcpu: 0, level: PrivLevel::Vmpl(0) }
}

impl Guest {
    pub fn new(
        cfg: &MmuConfig,
        kind: NestedKind,
        gpaging: Option<Paging>,
        npaging: Paging,
    ) -> Guest {
        let fmt = PteFormat { phys_bits: 52, cbit: mmu_model::CbitPos(None) };
        let mut host = PhysMemTables::new();
        let mut hframes = LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x4000_0000));
        let (npt, ept, root) = match kind {
            NestedKind::Npt => {
                let flags =
                    PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER | PteFlags::ACCESSED;
                let t = NptTable::new(&mut host, &mut hframes, npaging, fmt, flags).unwrap();
                let r = t.root();
                (Some(t), None, r)
            }
            NestedKind::Ept { .. } => {
                let t = EptTable::new(
                    &mut host,
                    &mut hframes,
                    npaging,
                    fmt,
                    EptFlags::RWX | EptFlags::ACCESSED,
                )
                .unwrap();
                let r = t.root();
                (None, Some(t), r)
            }
        };
        let mut guest = PhysMemTables::new();
        let mut gframes = LinearFrames::new(Gpa::new(GUEST_TABLES.0), Gpa::new(GUEST_TABLES.1));
        let gpt = GuestPageTable::new(
            &mut guest,
            &mut gframes,
            gpaging.unwrap_or(Paging::FourLevel),
            fmt,
            PteFlags::KERNEL_TABLE | PteFlags::USER,
        )
        .unwrap();
        let ctx = GuestContext {
            tag: TlbTag { asid: 5, pcid: 0 },
            paging: gpaging.map(|p| GuestPaging {
                root: gpt.root(),
                paging: p,
                format: fmt,
                controls: PagingControls::default(),
            }),
            nested: NestedContext { kind, root, paging: npaging, format: fmt },
            memory: GuestMemory::Plain,
        };
        let cr3 = Cr3 { root: Spa::new(0x100_0000), paging: Paging::FourLevel, tag: TlbTag::HOST };
        let mmu = Mmu::new(0, cfg, cr3).unwrap();
        let mut g = Guest {
            host,
            hframes,
            npt,
            ept,
            guest,
            gframes,
            gpt,
            ctx,
            mmu,
            lat: FlatLatency { per_ref: cfg.walk_ref_latency },
            mapped: Default::default(),
        };
        g.sync_tables();
        g
    }

    /// Map guest-physical page `gpa` (4K) in the nested table, if not yet.
    pub fn nmap(&mut self, gpa: u64) {
        let page = gpa & !0xfff;
        if !self.mapped.insert(page) {
            return;
        }
        let (g, s) = (Gpa::new(page), Spa::new(page + HOST_OFFSET));
        let tok = if let Some(t) = self.npt.as_mut() {
            let a = LeafAttrs::new(
                PteFlags::PRESENT
                    | PteFlags::WRITABLE
                    | PteFlags::USER
                    | PteFlags::ACCESSED
                    | PteFlags::DIRTY,
            );
            t.map(&mut self.host, &mut self.hframes, g, s, PageSize::K4, a)
        } else {
            let mut a = EptLeafAttrs::RWX_WB;
            a.flags |= EptFlags::ACCESSED | EptFlags::DIRTY;
            self.ept.as_mut().unwrap().map(&mut self.host, &mut self.hframes, g, s, PageSize::K4, a)
        };
        tok.unwrap().ignore(); // fresh mapping
    }

    /// Map every guest page-table page allocated so far in the nested table.
    pub fn sync_tables(&mut self) {
        for i in 0..self.gframes.allocated() {
            self.nmap(GUEST_TABLES.0 + i * 4096);
        }
    }

    /// Map `gva` → `gpa` (4K) in the guest and `gpa` in the nested table.
    pub fn map(&mut self, gva: u64, gpa: u64) {
        self.gpt
            .map(
                &mut self.guest,
                &mut self.gframes,
                Gva::new(gva),
                Gpa::new(gpa),
                PageSize::K4,
                GUEST_LEAF,
            )
            .unwrap()
            .ignore(); // fresh mapping
        self.sync_tables();
        self.nmap(gpa);
    }

    pub fn access(&mut self, addr: GuestAddr, kind: AccessKind) -> GuestAccessOutcome {
        let req =
            GuestAccessRequest { addr, kind, privilege: Privilege::Supervisor, ctx: guest_ctx() };
        self.mmu.guest_access(
            &mut self.host,
            &mut self.guest,
            &self.ctx,
            &mut NoCheck,
            &mut self.lat,
            &req,
        )
    }

    pub fn read_gva(&mut self, gva: u64) -> GuestAccessOutcome {
        self.access(GuestAddr::Virtual(Gva::new(gva)), AccessKind::Read)
    }

    pub fn read_gpa(&mut self, gpa: u64) -> GuestAccessOutcome {
        self.access(GuestAddr::Physical(Gpa::new(gpa)), AccessKind::Read)
    }
}

/// A config with the given levels' latencies, for exact-cycle tests: DTLB (4 entries, FA),
/// STLB (16 entries, FA), every PWC level 4 entries FA, nested TLB 8 entries FA.
pub fn exact_cfg(l1: u64, l2: u64, pwc: u64, ntlb: Option<u64>, per_ref: u64) -> MmuConfig {
    use mmu_model::{PwcConfig, PwcLevelConfig, TlbArrayConfig, TlbConfig};
    let p = PwcConfig {
        pml5: PwcLevelConfig::new(1, 4),
        pml4: PwcLevelConfig::new(1, 4),
        pdpt: PwcLevelConfig::new(1, 4),
        pd: PwcLevelConfig::new(1, 4),
        hit_latency: Cycles::new(pwc),
        replacement: mmu_model::Replacement::Lru,
    };
    MmuConfig {
        walk_ref_latency: Cycles::new(per_ref),
        dtlb: TlbConfig::new(vec![TlbArrayConfig::fully_assoc(&PageSize::ALL, 4)], l1),
        stlb: Some(TlbConfig::new(vec![TlbArrayConfig::fully_assoc(&PageSize::ALL, 16)], l2)),
        nested_tlb: ntlb
            .map(|l| TlbConfig::new(vec![TlbArrayConfig::fully_assoc(&PageSize::ALL, 8)], l)),
        pwc: p,
        guest_pwc: p,
        nested_pwc: p,
        ..MmuConfig::default()
    }
}
