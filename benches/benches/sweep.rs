//! Sweep machinery (issue #6, docs/performance.md "Sweeps"):
//! - `sweep/overhead/64-empty-runs`: 64 runs of a one-event scenario on the default preset,
//!   so the time is what a run costs beyond its simulation (plan, configuration, machine
//!   construction, result file, summary and plots). Target: < 5 ms per run.
//! - `sweep/grid64/threads=N`: a 64-run grid of equal runs (about 20 ms each) with 1 and 2
//!   worker threads. 2-thread efficiency = t(1) / (2 · t(2)); target ≥ 90%.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use ccsim::sweep::{ProgressMode, SweepOptions, run};
use criterion::{Criterion, criterion_group, criterion_main};
use std::path::{Path, PathBuf};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ccsim-bench-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn sweep_once(spec: &Path, out: &Path, threads: usize) {
    let _ = std::fs::remove_dir_all(out);
    let o = SweepOptions {
        out: out.to_owned(),
        threads,
        resume: false,
        shard: None,
        progress: ProgressMode::Off,
    };
    let r = run(spec, &o).expect("sweep runs");
    assert!(r.failed.is_empty(), "{:?}", r.failed);
}

fn overhead(c: &mut Criterion) {
    let d = dir("overhead");
    std::fs::write(d.join("one.ccs"), "c0 host store phys:0x1000 8\n").expect("write");
    let seeds: Vec<String> = (1..=64).map(|s| s.to_string()).collect();
    std::fs::write(
        d.join("spec.toml"),
        format!("seeds = [{}]\n[[input]]\ntrace = \"one.ccs\"\n", seeds.join(", ")),
    )
    .expect("write");
    let mut g = c.benchmark_group("sweep/overhead");
    g.sample_size(10);
    g.bench_function("64-empty-runs", |b| {
        b.iter(|| sweep_once(&d.join("spec.toml"), &d.join("out"), 1));
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&d);
}

fn grid64(c: &mut Criterion) {
    let d = dir("grid64");
    let seeds: Vec<String> = (1..=8).map(|s| s.to_string()).collect();
    std::fs::write(
        d.join("spec.toml"),
        format!(
            "policies = [\"none\", \"split-on-assign\", \"adjust-direct-map\", \"presplit-4k\"]\n\
             seeds = [{}]\n[[input]]\nworkload = \"snp-launch\"\n\
             params = {{ guests = 2, guest_memory = \"8M\", kernel_accesses = 20000, kernel_cpus = 1 }}\n\
             [[machine]]\npreset = \"tiny\"\n[[axis]]\nkey = \"host.gmem_folio_order\"\nvalues = [0, 9]\n",
            seeds.join(", ")
        ),
    )
    .expect("write");
    let mut g = c.benchmark_group("sweep/grid64");
    g.sample_size(10);
    for threads in [1, 2] {
        g.bench_function(format!("threads={threads}"), |b| {
            b.iter(|| sweep_once(&d.join("spec.toml"), &d.join(format!("out{threads}")), threads));
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&d);
}

criterion_group!(benches, overhead, grid64);
criterion_main!(benches);
