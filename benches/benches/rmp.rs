//! RMP storage at host scale (docs/performance.md "RMP"): the memory of issue #4's 4 TiB
//! scenario and the cost of `Rmp::entry` and `Rmp::region_has_assigned` lookups on it.
//!
//! The scenario: a contiguous RMP covering 4 TiB (2,097,152 regions of 2 MiB); 20 % of the
//! regions, chosen by a seeded shuffle, assigned as 2 MiB entries to ASIDs 1..=16 at
//! consecutive per-ASID GPAs (guest_memfd 2 MiB folios); 10 % of those PSMASHed and every
//! 4 KiB page re-assigned by RMPUPDATE at its own GPA (the region's 512 GPAs shuffled).
//! Memory is read from /proc/self/status (VmHWM, VmRSS) before and after the build, as
//! benches/benches/translate.rs does for its 1 TiB direct map, and must grow by less than
//! 512 MiB (the target).

// Criterion's setup functions are undocumented by nature.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput};
use rmp_model::{Executor, Rmp, RmpLayout, RmpPageSize, RmpReturn, RmpUpdateInput};
use sim_core::{Gpa, PageSize, Rng, Spa};
use std::hint::black_box;
use std::time::Instant;

const HOST_BYTES: u64 = 4 << 40;
const M2: u64 = 2 << 20;
const K4: u64 = 4 << 10;
/// Where the RMP would sit (no effect on the model's storage).
const RMP_BASE: u64 = 0x10_0000;
const SEED: u64 = 0x524d_5034_5449_4221;
/// Lookups per timed batch.
const PROBES: usize = 1 << 20;
const MIB: f64 = 1024.0 * 1024.0;

/// A field of /proc/self/status, in KiB.
fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Scenario {
    rmp: Rmp,
    /// Region indices of the split (PSMASHed, re-assigned at 4 KiB) regions.
    split: Vec<u64>,
}

/// `n` distinct indices below `total`, in random order (partial Fisher–Yates).
fn choose(rng: &mut Rng, total: u64, n: usize) -> Vec<u64> {
    let mut all: Vec<u32> = (0..u32::try_from(total).unwrap()).collect();
    for i in 0..n {
        let j = i + usize::try_from(rng.below((all.len() - i) as u64)).unwrap();
        all.swap(i, j);
    }
    all[..n].iter().map(|&r| u64::from(r)).collect()
}

fn build() -> Scenario {
    let hv = Executor::Hypervisor;
    let layout = RmpLayout::covering(Spa::new(RMP_BASE), HOST_BYTES).unwrap();
    let mut rmp = Rmp::new(layout);
    let regions = HOST_BYTES / M2;
    let n_assigned = usize::try_from(regions / 5).unwrap();
    let n_split = n_assigned / 10;
    let mut rng = Rng::new(SEED);
    let chosen = choose(&mut rng, regions, n_assigned);
    // guest_memfd 2 MiB folios: each ASID's GPAs run up from 4 GiB, 2 MiB at a time.
    let mut next_gpa = [4u64 << 30; 17];
    let mut region_gpa = Vec::with_capacity(n_split);
    for (k, &r) in chosen.iter().enumerate() {
        let asid = u16::try_from(k % 16).unwrap() + 1;
        let gpa = next_gpa[usize::from(asid)];
        next_gpa[usize::from(asid)] += M2;
        let input = RmpUpdateInput::private(Gpa::new(gpa), RmpPageSize::M2, asid, false);
        assert_eq!(rmp.rmpupdate(hv, Spa::new(r * M2), &input), RmpReturn::Success);
        if k < n_split {
            region_gpa.push((r, asid, gpa));
        }
    }
    let mut perm: Vec<u64> = (0..512).collect();
    for &(r, asid, gpa) in &region_gpa {
        let base = Spa::new(r * M2);
        assert_eq!(rmp.psmash(hv, base), RmpReturn::Success);
        for i in (1..perm.len()).rev() {
            let j = usize::try_from(rng.below(i as u64 + 1)).unwrap();
            perm.swap(i, j);
        }
        for (i, &p) in perm.iter().enumerate() {
            let page = Spa::new(base.raw() + i as u64 * K4);
            let input =
                RmpUpdateInput::private(Gpa::new(gpa + p * K4), RmpPageSize::K4, asid, false);
            assert_eq!(rmp.rmpupdate(hv, page, &input), RmpReturn::Success);
        }
    }
    let split = region_gpa.iter().map(|&(r, _, _)| r).collect();
    Scenario { rmp, split }
}

/// Build the scenario, print its memory, and assert the bound.
fn build_and_measure() -> Scenario {
    let (hwm0, rss0) = (status_kib("VmHWM:"), status_kib("VmRSS:"));
    let t0 = Instant::now();
    let s = build();
    let secs = t0.elapsed().as_secs_f64();
    let (hwm, rss) = (status_kib("VmHWM:"), status_kib("VmRSS:"));
    let regions = HOST_BYTES / M2;
    let assigned = regions / 5;
    let storage = s.rmp.storage_bytes();
    println!(
        "rmp_4tib: {regions} regions, {assigned} assigned at 2M, {} split to 4K; built in {secs:.2} s",
        s.split.len()
    );
    println!(
        "rmp_4tib: storage {:.1} MiB ({} tails); VmHWM {} -> {} MiB, VmRSS {} -> {} MiB; \
         one 8 KiB chunk per touched region would be {:.1} MiB",
        storage as f64 / MIB,
        s.rmp.split_regions(),
        hwm0.map_or(0, |k| k / 1024),
        hwm.map_or(0, |k| k / 1024),
        rss0.map_or(0, |k| k / 1024),
        rss.map_or(0, |k| k / 1024),
        (assigned * 8192) as f64 / MIB,
    );
    assert_eq!(s.rmp.split_regions(), s.split.len());
    assert!(storage < 512 << 20, "storage {storage} B over the 512 MiB target");
    if let (Some(a), Some(b)) = (hwm0, hwm) {
        assert!(b - a < 512 << 10, "VmHWM grew by {} MiB, over the 512 MiB target", (b - a) / 1024);
    }
    s
}

fn lookups(c: &mut Criterion, s: &Scenario) {
    let mut rng = Rng::new(SEED ^ 1);
    let anywhere: Vec<Spa> = (0..PROBES).map(|_| Spa::new(rng.below(HOST_BYTES) & !7)).collect();
    let in_split: Vec<Spa> = (0..PROBES)
        .map(|_| {
            let r = s.split[usize::try_from(rng.below(s.split.len() as u64)).unwrap()];
            Spa::new(r * M2 + (rng.below(M2) & !7))
        })
        .collect();
    // Sanity: the probes see the scenario's shape.
    let hits = anywhere.iter().filter(|&&a| s.rmp.entry(a).assigned).count();
    let frac = hits as f64 / PROBES as f64;
    assert!((0.19..0.21).contains(&frac), "{frac} of random pages assigned, expected 20 %");
    assert!(in_split.iter().all(|&a| s.rmp.entry(a).page_size == RmpPageSize::K4));

    let mut g = c.benchmark_group("rmp");
    g.throughput(Throughput::Elements(PROBES as u64));
    let sum_entries =
        |spas: &[Spa]| spas.iter().map(|&a| s.rmp.entry(a).gpa.raw()).fold(0u64, u64::wrapping_add);
    g.bench_function("entry/random_4tib", |b| b.iter(|| black_box(sum_entries(&anywhere))));
    g.bench_function("entry/split_regions", |b| b.iter(|| black_box(sum_entries(&in_split))));
    g.bench_function("region_has_assigned/random_4tib", |b| {
        b.iter(|| black_box(anywhere.iter().filter(|&&a| s.rmp.region_has_assigned(a)).count()))
    });
    // The alternative summary, measured for the choice in docs/performance.md: one bit per
    // region, built from the count.
    let regions = usize::try_from(HOST_BYTES / M2).unwrap();
    let mut bits = vec![0u64; regions.div_ceil(64)];
    for r in 0..regions {
        if s.rmp.region_has_assigned(Spa::new(r as u64 * M2)) {
            bits[r / 64] |= 1 << (r % 64);
        }
    }
    let probe = |a: Spa| {
        let r = usize::try_from(a.raw() >> PageSize::M2.shift()).unwrap();
        bits.get(r / 64).is_some_and(|w| w >> (r % 64) & 1 != 0)
    };
    assert!(anywhere.iter().all(|&a| probe(a) == s.rmp.region_has_assigned(a)));
    g.bench_function("region_bitmap_alternative/random_4tib", |b| {
        b.iter(|| black_box(anywhere.iter().filter(|&&a| probe(a)).count()))
    });
    g.finish();
}

fn main() {
    let s = build_and_measure();
    let mut c = Criterion::default().configure_from_args();
    lookups(&mut c, &s);
    c.final_summary();
}
