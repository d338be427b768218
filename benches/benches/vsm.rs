//! Issue #9's performance target: 100,000 HvCallModifyVtlProtectionMask rep calls (the
//! `vsm-boot` workload's defaults: a 4 GiB plain guest, 2 vCPUs, 4 VTL 0 accesses per call)
//! simulate end to end in under a second, for each `vsm.design` (docs/performance.md "VSM").
//! Elements are protection changes.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use ccsim::engine::{ConfigLayers, Input, RunOptions, run};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn vsm_boot(c: &mut Criterion) {
    let mut g = c.benchmark_group("vsm");
    g.sample_size(10);
    for design in ["address-space-per-vtl", "attr-arrays", "vm-per-vtl"] {
        let layers =
            ConfigLayers { sets: vec![format!("vsm.design={design}")], ..Default::default() };
        let input =
            Input::Workload { name: "vsm-boot".into(), params: workloads::Params::default() };
        let opts = RunOptions { seed: 1, ..RunOptions::default() };
        let probe = run(&layers, &input, &opts).expect("vsm-boot runs").report;
        let v = &probe.vsm;
        let vtl0 = v.by_vtl.get(&0).copied().unwrap_or_default();
        eprintln!(
            "{design}: {} changes ({} pages), {} events, {:.0} cycles per change, {} zaps, \
             {} memslot ops (most {}), fault-ins 4K {} 2M {}, stage 2 at the end 4K {} 2M {}, \
             mixed regions {}, VTL 0 accesses {} TLB misses {} denied {}, raised {} fatal {}",
            v.changes,
            v.pages,
            probe.events,
            v.cycles_per_change,
            v.zaps,
            v.memslot_ops,
            v.memslots_max,
            v.faultins_4k,
            v.faultins_2m,
            v.stage2[sim_core::PageSize::K4],
            v.stage2[sim_core::PageSize::M2],
            v.mixed_regions,
            vtl0.accesses,
            vtl0.tlb_misses,
            vtl0.denied,
            probe.faults.raised,
            probe.faults.fatal,
        );
        g.throughput(Throughput::Elements(probe.vsm.changes));
        g.bench_function(format!("vsm-boot/{design}/changes"), |b| {
            b.iter(|| run(&layers, &input, &opts).expect("runs").report.events)
        });
    }
    g.finish();
}

criterion_group!(benches, vsm_boot);
criterion_main!(benches);
