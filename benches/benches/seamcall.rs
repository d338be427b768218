//! SEAMCALL throughput of the TDX module model (tdx-model): KVM's private-page life cycle on one
//! running TD, page after page — TDH.MEM.PAGE.AUG, the guest's TDG.MEM.PAGE.ACCEPT,
//! TDH.MEM.RANGE.BLOCK, TDH.MEM.TRACK, the vCPU kick, TDH.MEM.PAGE.REMOVE (spec/tdx.md §3.4,
//! §3.5) — over the 512 4K pages of one 2M GPA region. The TD is built through the lifecycle
//! SEAMCALLs (MNG.CREATE … MR.FINALIZE). Throughput counts the five calls per page.
//! Target: ≥ 5 M calls/s.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mmu_model::PhysMemTables;
use sim_core::Spa;
use std::hint::black_box;
use tdx_model::{Regs, TdxConfig, TdxModule, leaf, level_bytes};

const TDR: u64 = 0x20_0000;
const TDVPR: u64 = 0x21_0000;
const GPA: u64 = 0x1_0000_0000;
const DATA: u64 = 0x4000_0000;
const PAGES: u64 = 512;

fn regs(rcx: u64, rdx: u64, r8: u64) -> Regs {
    Regs { rcx, rdx, r8, ..Regs::default() }
}

fn ok(m: &mut TdxModule, t: &mut PhysMemTables<Spa>, l: u16, r: Regs) {
    let o = m.seamcall(t, l, 0, r);
    assert_eq!(o.status(), 0, "leaf {l}");
}

/// A runnable TD with one vCPU and S-EPT tables down to the 4K table of GPA's 2M region.
fn setup() -> (TdxModule, PhysMemTables<Spa>) {
    let mut m = TdxModule::new(TdxConfig::default());
    let mut t = PhysMemTables::new();
    ok(&mut m, &mut t, leaf::MNG_CREATE, regs(TDR, 16, 0));
    ok(&mut m, &mut t, leaf::MNG_KEY_CONFIG, regs(TDR, 0, 0));
    for i in 1..=6 {
        ok(&mut m, &mut t, leaf::MNG_ADDCX, regs(TDR + i * 0x1000, TDR, 0));
    }
    ok(&mut m, &mut t, leaf::MNG_INIT, regs(TDR, 0x9000_0000, 0));
    ok(&mut m, &mut t, leaf::VP_CREATE, regs(TDVPR, TDR, 0));
    for i in 1..=5 {
        ok(&mut m, &mut t, leaf::VP_ADDCX, regs(TDVPR + i * 0x1000, TDVPR, 0));
    }
    ok(&mut m, &mut t, leaf::VP_INIT, regs(TDVPR, 0, 0));
    for (i, level) in [3u8, 2, 1].into_iter().enumerate() {
        let at = GPA & !(level_bytes(level) - 1);
        let table = 0x22_0000 + i as u64 * 0x1000;
        ok(&mut m, &mut t, leaf::MEM_SEPT_ADD, regs(at | u64::from(level), TDR, table));
    }
    ok(&mut m, &mut t, leaf::MR_FINALIZE, regs(TDR, 0, 0));
    (m, t)
}

fn life_cycle(c: &mut Criterion) {
    let (mut m, mut t) = setup();
    let mut g = c.benchmark_group("seamcall");
    g.throughput(Throughput::Elements(PAGES * 5));
    g.bench_function("aug-accept-block-track-remove/4K", |b| {
        b.iter(|| {
            let (mut bad, mut sum) = (0u64, 0u64);
            for p in 0..PAGES {
                let gpa = GPA + p * 0x1000;
                let hpa = DATA + p * 0x1000;
                bad |= m.seamcall(&mut t, leaf::MEM_PAGE_AUG, 0, regs(gpa, TDR, hpa)).status();
                bad |= m.accept(&mut t, TDR, TDVPR, regs(gpa, 0, 0)).status();
                bad |= m.seamcall(&mut t, leaf::MEM_RANGE_BLOCK, 0, regs(gpa, TDR, 0)).status();
                bad |= m.seamcall(&mut t, leaf::MEM_TRACK, 0, regs(TDR, 0, 0)).status();
                m.kick_vcpus(&mut t, TDR);
                let o = m.seamcall(&mut t, leaf::MEM_PAGE_REMOVE, 0, regs(gpa, TDR, 0));
                bad |= o.status();
                sum = sum.wrapping_add(o.regs.rcx + o.cost.get());
            }
            assert_eq!(bad, 0, "a call failed");
            black_box(sum)
        });
    });
    g.finish();
}

criterion_group!(benches, life_cycle);
criterion_main!(benches);
