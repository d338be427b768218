//! What the RMP check stage adds to the walk path (issue #4: "the RMP check adds ≤ 15% to the
//! walk path"; docs/performance.md "RMP check").
//!
//! The same loop as `translate`'s `walk_4level/default` (4096 direct-mapped 4K pages swept
//! through the 72-entry DTLB, no L2 TLB, no PWC: every access a 4-reference walk), with stores
//! so that the host check applies to the data access as well as to the four table reads, run
//! once with `NoCheck` and once through the root crate's `RmpCheckStage` over an all-hypervisor
//! RMP covering the host (five RMP entry reads per walk, priced by the same `FlatLatency` as the
//! walk references). The TLB-hit loop (64 pages) shows that a hit pays nothing for the RMP.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use ccsim::machine::RmpCheckStage;
use criterion::{Criterion, Throughput, criterion_group};
use mmu_model::{
    AccessKind, AccessOutcome, AccessRequest, Cr3, FlatLatency, LeafAttrs, LinearFrames, Mmu,
    MmuConfig, NoCheck, PageTable, Paging, PhysMemTables, PteFlags, TlbTag,
};
use rmp_model::{Rmp, RmpLayout};
use sim_core::{Cycles, Hva, PageSize, Spa};
use std::hint::black_box;

/// Linux 4-level direct-map base (Documentation/arch/x86/x86_64/mm.rst).
const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;

const RW_AD: LeafAttrs = LeafAttrs::new(
    PteFlags::PRESENT
        .union(PteFlags::WRITABLE)
        .union(PteFlags::ACCESSED)
        .union(PteFlags::DIRTY)
        .union(PteFlags::NO_EXECUTE),
);

struct Host {
    tables: PhysMemTables,
    mmu: Mmu,
    lat: FlatLatency,
    reqs: Vec<AccessRequest>,
    out: AccessOutcome,
    rmp: Rmp,
}

/// `pages` direct-mapped 4K pages at PA 4 GiB, one store request per page.
fn host(pages: u64) -> Host {
    let cfg = MmuConfig::default();
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
        pt.map(&mut tables, &mut frames, va, Spa::new(pa), PageSize::K4, RW_AD).unwrap().ignore();
        reqs.push(AccessRequest::kernel(Hva::new(va.raw() + 8), AccessKind::Write));
    }
    let cr3 = Cr3 { root: pt.root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
    let mut mmu = Mmu::new(0, &cfg, cr3).unwrap();
    let mut lat = FlatLatency { per_ref: cfg.walk_ref_latency };
    let nc = AccessRequest::kernel(Hva::new(1 << 63), AccessKind::Read);
    let out = mmu.access(&mut tables, &mut NoCheck, &mut lat, &nc);
    // An RMP covering 8 GiB, every page hypervisor-owned, at the top of memory.
    let rmp = Rmp::new(RmpLayout::covering(Spa::new(0x1_f000_0000), 8 << 30).unwrap());
    Host { tables, mmu, lat, reqs, out, rmp }
}

fn sweep(h: &mut Host, checked: bool) -> u64 {
    let mut sum = 0;
    for r in &h.reqs {
        if checked {
            let mut chk = RmpCheckStage::new(&mut h.rmp, Cycles::ZERO);
            h.mmu.access_into(&mut h.tables, &mut chk, &mut h.lat, r, &mut h.out);
        } else {
            h.mmu.access_into(&mut h.tables, &mut NoCheck, &mut h.lat, r, &mut h.out);
        }
        sum += h.out.cost.get();
    }
    sum
}

/// Every access of a sweep walks (checked: and reads five RMP entries); a second sweep over
/// 64 pages hits.
fn assert_pattern(h: &mut Host, checked: bool, walks: bool) {
    let before = h.mmu.stats().walks.total();
    sweep(h, checked);
    let n = h.mmu.stats().walks.total() - before;
    assert_eq!(n, if walks { h.reqs.len() as u64 } else { 0 }, "checked={checked}");
    if checked && walks {
        assert_eq!(h.out.check_reads.len(), 5, "4 table reads + the store");
    }
}

fn rmp_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("rmp_check");
    for (name, pages, walks) in [("walk_4level", 4096u64, true), ("tlb_hit", 64, false)] {
        for checked in [false, true] {
            let mut h = host(pages);
            sweep(&mut h, checked); // warm: fills (hits for the 64-page set)
            assert_pattern(&mut h, checked, walks);
            g.throughput(Throughput::Elements(pages));
            let id = format!("{name}/{}", if checked { "rmp" } else { "nocheck" });
            g.bench_function(id, |b| b.iter(|| black_box(sweep(&mut h, checked))));
        }
    }
    g.finish();
}

criterion_group!(benches, rmp_check);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
