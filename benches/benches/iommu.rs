//! DMA translation through the IOMMU (issue #7, docs/performance.md "IOMMU"): an AMD-Vi IOMMU
//! with one device attached to a domain mapping 32 4K pages, translations cycling over them
//! after a warm-up, so every one hits the (64-entry) IOTLB and the cached device table entry.
//! Target: ≥ 50 M translations/s on IOTLB hits. Also the miss path (a 4-level walk each).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmu_model::{Iommu, IommuConfig, LinearFrames, MmuConfig, NoDmaCheck, PhysMemTables};
use sim_core::{Iova, PageSize, Spa};

const PAGES: u64 = 32;

fn setup(iotlb_entries: u32) -> (PhysMemTables<Spa>, Iommu) {
    let mut tables = PhysMemTables::new();
    let mut frames = LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
    let mut cfg = IommuConfig::default();
    cfg.iotlb.arrays[0].sets = 1;
    cfg.iotlb.arrays[0].ways = iotlb_entries;
    let mut iommu = Iommu::new(&cfg, MmuConfig::zen4().pte_format()).expect("config");
    iommu.attach(&mut tables, &mut frames, 0x100, 1).expect("attach");
    for p in 0..PAGES {
        let (iova, spa) = (Iova::new(p << 12), Spa::new(0x4000_0000 + (p << 12)));
        iommu.map(&mut tables, &mut frames, 1, iova, spa, PageSize::K4, true).expect("map");
    }
    (tables, iommu)
}

fn hits(c: &mut Criterion) {
    let (tables, mut iommu) = setup(64);
    for p in 0..PAGES {
        iommu.translate(&tables, 0x100, Iova::new(p << 12), true, &mut NoDmaCheck);
    }
    let mut g = c.benchmark_group("iommu");
    g.throughput(Throughput::Elements(1024));
    g.bench_function("translate/iotlb-hit", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for i in 0..1024u64 {
                let iova = Iova::new(((i % PAGES) << 12) | (i & 0xff8));
                let d = iommu.translate(&tables, 0x100, iova, i & 1 == 0, &mut NoDmaCheck);
                sum = sum.wrapping_add(d.spa.map_or(0, Spa::raw));
            }
            sum
        });
    });
    // Misses: an IOTLB too small to hold the pages (LRU over a cyclic sweep misses always).
    let (tables, mut iommu) = setup(8);
    g.bench_function("translate/iotlb-miss-walk", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for i in 0..1024u64 {
                let d = iommu.translate(
                    &tables,
                    0x100,
                    Iova::new((i % PAGES) << 12),
                    false,
                    &mut NoDmaCheck,
                );
                sum = sum.wrapping_add(d.spa.map_or(0, Spa::raw));
            }
            sum
        });
    });
    g.finish();
}

criterion_group!(benches, hits);
criterion_main!(benches);
