//! Throughput of the cache-latency model (docs/performance.md "Cache model"): references per
//! second through `CacheHierarchy::access`, for a working set that stays in the L1D and for one
//! that misses every level (DRAM-bound), on the ChampSim and Zen 4 presets; and through
//! `CacheHierarchy::data_access` for the data stream of issue #4's `snp-churn` case (what its
//! data references alone cost).

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

/// The data references of `snp-churn` (workloads/src/snp_churn.rs, "Access pattern") on the
/// `zen4` caches of its 4 CPUs: sequential runs of 64-byte lines, each run's length uniform in
/// 1..=31 (the default `seq_lines` 16) from a uniformly drawn line of 64 GiB (16 guests ×
/// 4 GiB), 30 % stores (the default `write_fraction`); the CPUs take turns run by run, as the
/// time-sliced guests of the case mostly do. Nearly every reference is a first touch, so it
/// misses every level; a store also probes the other CPUs' L1D and L2. The throughput bounds
/// the case's accesses per second with every other part of the simulator free
/// (docs/performance.md "Issue #4, sixth pass").
fn churn_data(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache");
    g.sample_size(20);
    g.throughput(Throughput::Elements(REFS));
    let mut h = CacheHierarchy::new(&CacheConfig::zen4(), 4).expect("preset is valid");
    let mut rng = Rng::new(7);
    let (mut cpu, mut line, mut left) = (0usize, 0u64, 0u64);
    let write_below = u64::MAX / 10 * 3;
    g.bench_function("zen4/snp-churn-data", |b| {
        b.iter(|| {
            let mut total = 0u64;
            for _ in 0..REFS {
                if left == 0 {
                    cpu = (cpu + 1) % 4;
                    line = rng.below(1 << 30);
                    left = 1 + rng.below(31);
                }
                let write = rng.next_u64() < write_below;
                total += h.data_access(cpu, Spa::new(line * 64), write).get();
                line = (line + 1) % (1 << 30);
                left -= 1;
            }
            total
        })
    });
    let s = h.stats().data;
    eprintln!(
        "zen4/snp-churn-data: served L1D {} L2 {} LLC {} DRAM {}; remote invalidations {}",
        s.l1d,
        s.l2,
        s.llc,
        s.dram,
        h.stats().remote_invalidations
    );
    g.finish();
}

criterion_group!(benches, access, churn_data);
criterion_main!(benches);
