//! A host direct map of 4K pages and one access request per page, shared by the translation
//! benchmarks (`translate`, `rmp_check`). Included with `#[path]`: benches are separate
//! crates.

use mmu_model::{
    AccessKind, AccessOutcome, AccessRequest, Cr3, FlatLatency, LeafAttrs, LinearFrames, Mmu,
    MmuConfig, NoCheck, PageTable, Paging, PhysMemTables, PteFlags, TlbTag,
};
use sim_core::{Hva, PageSize, Spa};

/// Linux 4-level direct-map base (Documentation/arch/x86/x86_64/mm.rst).
pub const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;

/// Present, writable, accessed, dirty, no-execute: a direct-map leaf as Linux makes it.
pub const RW_AD: LeafAttrs = LeafAttrs::new(
    PteFlags::PRESENT
        .union(PteFlags::WRITABLE)
        .union(PteFlags::ACCESSED)
        .union(PteFlags::DIRTY)
        .union(PteFlags::NO_EXECUTE),
);

pub struct Host {
    pub tables: PhysMemTables,
    pub mmu: Mmu,
    pub lat: FlatLatency,
    pub reqs: Vec<AccessRequest>,
    /// Reused by every access.
    pub out: AccessOutcome,
}

/// A direct map of `pages` 4K pages at PA 4 GiB, and one `kind` request per page.
pub fn host(cfg: &MmuConfig, pages: u64, kind: AccessKind) -> Host {
    let mut tables = PhysMemTables::new();
    let mut frames = LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x1_0000_0000));
    let mut pt: PageTable = PageTable::new(
        &mut tables,
        &mut frames,
        Paging::FourLevel,
        cfg.pte_format(),
        PteFlags::KERNEL_TABLE,
    )
    .unwrap();
    let base = 1u64 << 32;
    let mut reqs = Vec::new();
    for i in 0..pages {
        let pa = base + i * 4096;
        let va = Hva::new(PAGE_OFFSET + pa);
        pt.map(&mut tables, &mut frames, va, Spa::new(pa), PageSize::K4, RW_AD).unwrap().ignore(); // fresh
        reqs.push(AccessRequest::kernel(Hva::new(va.raw() + 8), kind));
    }
    let cr3 = Cr3 { root: pt.root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
    let mut mmu = Mmu::new(0, cfg, cr3).unwrap();
    let mut lat = FlatLatency { per_ref: cfg.walk_ref_latency };
    // Any outcome will do as the reused buffer: a non-canonical access makes one.
    let nc = AccessRequest::kernel(Hva::new(1 << 63), AccessKind::Read);
    let out = mmu.access(&mut tables, &mut NoCheck, &mut lat, &nc);
    Host { tables, mmu, lat, reqs, out }
}
