//! Throughput of the cache-latency model (docs/performance.md "Cache model"): references per
//! second through `CacheHierarchy::access`, for a working set that stays in the L1D and for one
//! that misses every level (DRAM-bound), on the ChampSim and Zen 4 presets.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmu_model::{CacheConfig, CacheHierarchy, Level, MemRefKind};
use sim_core::{Rng, Spa};
use std::hint::black_box;

/// References per measured iteration.
const REFS: u64 = 1 << 16;

/// 16 KiB of consecutive 64-byte lines (256 lines, cycled).
fn l1_resident() -> Vec<Spa> {
    (0..REFS).map(|i| Spa::new(0x10_0000 + (i % 256) * 64)).collect()
}

/// Address stream of one benchmark.
#[derive(Clone, Copy)]
enum Stream {
    /// 16 KiB of consecutive 64-byte lines, cycled: fits every preset's L1D.
    L1Resident,
    /// Uniformly random lines in 64 GiB, never repeating in practice: every reference misses
    /// every level and is served by DRAM. The addresses are drawn inside the timed loop
    /// (xoshiro256**, about 1 ns each), so the working set has no bound.
    DramBound,
}

fn access(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache");
    g.sample_size(20);
    g.throughput(Throughput::Elements(REFS));
    let kind = MemRefKind::TableRead(Level::Pt);
    for (preset, cfg) in [("champsim", CacheConfig::champsim()), ("zen4", CacheConfig::zen4())] {
        for (name, stream) in
            [("l1-resident", Stream::L1Resident), ("dram-bound", Stream::DramBound)]
        {
            let mut h = CacheHierarchy::new(&cfg, 1).expect("preset is valid");
            let hot = l1_resident();
            // Warm up so the L1-resident case measures hits only.
            for &a in &hot {
                h.access(0, a, kind, false);
            }
            let mut rng = Rng::new(42);
            g.bench_function(format!("{preset}/{name}"), |b| {
                b.iter(|| {
                    let mut total = 0u64;
                    match stream {
                        Stream::L1Resident => {
                            for &a in &hot {
                                total += h.access(0, black_box(a), kind, false).get();
                            }
                        }
                        Stream::DramBound => {
                            for _ in 0..REFS {
                                let a = Spa::new(rng.below(1 << 30) * 64);
                                total += h.access(0, a, kind, false).get();
                            }
                        }
                    }
                    total
                })
            });
            let s = h.stats().table_read;
            eprintln!(
                "{preset}/{name}: served L1D {} L2 {} LLC {} DRAM {}",
                s.l1d, s.l2, s.llc, s.dram
            );
        }
    }
    g.finish();
}

criterion_group!(benches, access);
criterion_main!(benches);
