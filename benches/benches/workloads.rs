//! Workload generators alone, with no machine behind them: how fast a generator produces its
//! events, so that a slow run can be attributed to the engine or to the generator
//! (docs/performance.md "Generators"). The memory services are [`workloads::NullMemory`], which
//! never runs out.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sim_core::Event;
use std::hint::black_box;

/// Drain every stream round-robin; returns (events, accesses).
fn generate(name: &str, params: &workloads::Params) -> (u64, u64) {
    let mut w = workloads::find(name).expect("registered").instantiate(params, 1).expect("builds");
    let mut mem = workloads::NullMemory::new(256 << 30);
    let n = w.agents().len();
    let mut live = n;
    let mut done = vec![false; n];
    let (mut events, mut accesses) = (0u64, 0u64);
    while live > 0 {
        for (s, d) in done.iter_mut().enumerate() {
            if *d {
                continue;
            }
            match w.next(s, &mut mem) {
                Some(e) => {
                    events += 1;
                    accesses += u64::from(matches!(e, Event::Load { .. } | Event::Store { .. }));
                    black_box(w.agent_of_last(s));
                    black_box(&e);
                }
                None => {
                    *d = true;
                    live -= 1;
                }
            }
        }
    }
    (events, accesses)
}

fn generators(c: &mut Criterion) {
    let mut g = c.benchmark_group("generate");
    g.sample_size(10);
    // The performance target's shape (issue #4): 16 guests × 4 GiB, on the default 4 CPUs.
    let churn =
        workloads::Params::parse(["guests=16", "guest_memory=4G", "accesses=250000"]).unwrap();
    // host-kernel: its defaults (2 CPUs × 1 M direct-map accesses).
    let host_kernel = workloads::Params::default();
    for (name, params) in [
        ("snp-churn", churn),
        ("snp-launch", workloads::Params::default()),
        ("host-kernel", host_kernel),
        // qemu-process: its defaults (1 thread × 1 M accesses over 1 GiB of THP guest RAM).
        ("qemu-process", workloads::Params::default()),
        // multi-tenant: its defaults (8 guests of 64M/256M/128M, validated in full).
        ("multi-tenant", workloads::Params::default()),
        // dma-streams: 1 NIC × 200 k packets and 1 disk × 20 k I/Os beside 2 guests × 400 k
        // accesses, 5% misprogrammed (steady state dominates; the defaults finish in 0.2 M events).
        (
            "dma-streams",
            workloads::Params::parse([
                "packets=200000",
                "ios=20000",
                "accesses=400000",
                "misprogrammed=0.05",
            ])
            .unwrap(),
        ),
        // tdx-boot: its defaults (1 TD of 256M: the build with 4M of PAGE.ADD and MR.EXTEND,
        // 2 vCPUs × 100 k accesses, 30 lazily accepted and zeroed 2M units, the SWIOTLB).
        ("tdx-boot", workloads::Params::default()),
        // tdx-churn: its defaults (1 TD, 2 vCPUs × 200 k accesses, a conversion per 1,000).
        ("tdx-churn", workloads::Params::default()),
        // vsm-boot: its defaults (100 k protection changes, 4 VTL 0 accesses each, 2 vCPUs).
        ("vsm-boot", workloads::Params::default()),
    ] {
        let (events, accesses) = generate(name, &params);
        eprintln!("{name}: {events} events, {accesses} accesses per iteration");
        g.throughput(Throughput::Elements(events));
        g.bench_function(format!("{name}/events"), |b| b.iter(|| generate(name, &params)));
    }
    g.finish();
}

criterion_group!(benches, generators);
criterion_main!(benches);
