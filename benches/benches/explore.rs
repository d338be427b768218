//! Race explorer throughput: every schedule of the seed race
//! (`traces/scenarios/tdx/races/seed-2m-vs-4k.ccs`, two vCPUs, frozen protocol, preemption
//! bound 2: 84 schedules, each from a fresh machine). One element = one schedule. The issue's
//! target is ≥ 100 k schedules/s. `seed-2m-vs-4k/frozen` uses one worker thread per core (the
//! default of `ccsim explore`), `…/1-thread` the calling thread only.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use ccsim::engine::ConfigLayers;
use ccsim::explore::{ExploreOptions, explore};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::path::Path;

fn bench(c: &mut Criterion) {
    let f = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../traces/scenarios/tdx/races/seed-2m-vs-4k.ccs");
    let layers = ConfigLayers::default();
    let opts = ExploreOptions::default();
    let r = explore(&f, &layers, &opts).expect("explores");
    assert!(r.complete && r.failures.is_empty(), "{:?}", r.failures);
    let mut g = c.benchmark_group("explore");
    g.sample_size(10);
    g.throughput(Throughput::Elements(r.schedules));
    g.bench_function("seed-2m-vs-4k/frozen", |b| {
        b.iter(|| explore(&f, &layers, &opts).expect("explores").schedules);
    });
    // The same search on the calling thread only.
    let one = ExploreOptions { threads: 1, ..ExploreOptions::default() };
    g.bench_function("seed-2m-vs-4k/frozen/1-thread", |b| {
        b.iter(|| explore(&f, &layers, &one).expect("explores").schedules);
    });
    // Setup alone: parse, configure, build the start machine, one schedule (one element).
    let setup = ExploreOptions { threads: 1, max_schedules: 1, ..ExploreOptions::default() };
    g.throughput(Throughput::Elements(1));
    g.bench_function("seed-2m-vs-4k/setup-and-one-schedule", |b| {
        b.iter(|| explore(&f, &layers, &setup).expect("explores").schedules);
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
