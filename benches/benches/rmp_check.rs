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
use mmu_model::{AccessKind, MmuConfig, NoCheck};
use rmp_model::{Rmp, RmpLayout};
use sim_core::{Cycles, Spa};
use std::hint::black_box;

#[path = "support/host.rs"]
mod support;

/// The shared direct-map host with stores, and an RMP covering 8 GiB at the top of memory,
/// every page hypervisor-owned.
struct Host {
    h: support::Host,
    rmp: Rmp,
}

fn host(pages: u64) -> Host {
    let h = support::host(&MmuConfig::default(), pages, AccessKind::Write);
    let rmp = Rmp::new(RmpLayout::covering(Spa::new(0x1_f000_0000), 8 << 30).unwrap());
    Host { h, rmp }
}

fn sweep(h: &mut Host, checked: bool) -> u64 {
    let mut sum = 0;
    let Host { h, rmp } = h;
    for r in &h.reqs {
        if checked {
            let mut chk = RmpCheckStage::new(rmp, Cycles::ZERO);
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
    let before = h.h.mmu.stats().walks.total();
    sweep(h, checked);
    let n = h.h.mmu.stats().walks.total() - before;
    assert_eq!(n, if walks { h.h.reqs.len() as u64 } else { 0 }, "checked={checked}");
    if checked && walks {
        assert_eq!(h.h.out.check_reads.len(), 5, "4 table reads + the store");
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
