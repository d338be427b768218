//! mmu-model's integration tests (one binary, STYLE rule 18d).
//!
//! (The RMP check stage through this crate's check hook is tested in the root crate, which owns
//! the adapter: `tests/tests.rs` module `rmp_stage`.)
//! - `all_paths_agree`: TLB hit, full walk, functional walk and functional lookup give the same
//!   SPA on random page-table layouts (STYLE rule 18c).

use mmu_model::{
    AccessKind, AccessPath, AccessRequest, AccessResult, Cr3, FlatLatency, LeafAttrs, LinearFrames,
    Mmu, MmuConfig, PageTable, Paging, PhysMemTables, PteFlags, TlbTag,
};
use sim_core::{Hva, PageSize, Spa};

/// Linux x86-64 4-level direct-map base (Documentation/arch/x86/x86_64/mm.rst).
const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;

fn dm(pa: u64) -> Hva {
    Hva::new(PAGE_OFFSET + pa)
}

struct Machine {
    tables: PhysMemTables,
    frames: LinearFrames,
    dmap: PageTable,
    mmu: Mmu,
    lat: FlatLatency,
}

fn machine(cfg: &MmuConfig) -> Machine {
    let mut tables = PhysMemTables::new();
    // Page-table pages come from 16 MiB..32 MiB.
    let mut frames = LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
    let dmap = PageTable::new(
        &mut tables,
        &mut frames,
        Paging::FourLevel,
        cfg.pte_format(),
        PteFlags::KERNEL_TABLE,
    )
    .unwrap();
    let cr3 = Cr3 { root: dmap.root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
    let mmu = Mmu::new(0, cfg, cr3).unwrap();
    Machine { tables, frames, dmap, mmu, lat: FlatLatency { per_ref: cfg.walk_ref_latency } }
}

impl Machine {
    fn map(&mut self, pa: u64, size: PageSize) {
        self.dmap
            .map(
                &mut self.tables,
                &mut self.frames,
                dm(pa),
                Spa::new(pa),
                size,
                LeafAttrs::KERNEL_RW,
            )
            .unwrap()
            .ignore(); // fresh mapping: nothing cached
    }
}

mod all_paths_agree {
    use super::*;
    use mmu_model::{NoCheck, Privilege, Translation, WalkContext, walk_functional};
    use proptest::prelude::*;

    /// One 1 GiB slot of physical memory per layout element: mapped as 1G, as 2M leaves (some
    /// split to 4K), or as scattered 4K leaves.
    #[derive(Debug, Clone)]
    enum Slot {
        Giga,
        Mega { split_mask: u8 },
        Small { count: u16 },
    }

    fn slot() -> impl Strategy<Value = Slot> {
        prop_oneof![
            Just(Slot::Giga),
            any::<u8>().prop_map(|split_mask| Slot::Mega { split_mask }),
            (1u16..64).prop_map(|count| Slot::Small { count }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn tlb_walk_functional_lookup_agree(
            layout in proptest::collection::vec(slot(), 1..4),
            probes in proptest::collection::vec((0usize..4, 0u64..(1 << 30), any::<bool>()), 1..40),
            ways in 1u32..8,
        ) {
            let mut cfg = MmuConfig::default();
            cfg.dtlb.arrays[0].ways = ways;
            let mut m = machine(&cfg);
            for (i, s) in layout.iter().enumerate() {
                let base = (i as u64 + 1) << 30;
                match s {
                    Slot::Giga => m.map(base, PageSize::G1),
                    Slot::Mega { split_mask } => {
                        for j in 0..8u64 {
                            m.map(base + (j << 21), PageSize::M2);
                            if split_mask >> j & 1 == 1 {
                                let (_, inv) = m.dmap.split(&mut m.tables, &mut m.frames, dm(base + (j << 21))).unwrap();
                                inv.ignore(); // nothing cached yet
                            }
                        }
                    }
                    Slot::Small { count } => {
                        for j in 0..u64::from(*count) {
                            m.map(base + j * 0x3000, PageSize::K4);
                        }
                    }
                }
            }
            let ctx = WalkContext {
                root: m.dmap.root(),
                paging: Paging::FourLevel,
                format: cfg.pte_format(),
                controls: m.mmu.controls(),
            };
            for (slot, off, write) in probes {
                let base = (slot as u64 % layout.len() as u64 + 1) << 30;
                let va = dm(base + off);
                let kind = if write { AccessKind::Write } else { AccessKind::Read };
                let oracle = m.dmap.lookup(&m.tables, va).map(|l| l.pa(va));
                let func = walk_functional(&m.tables, &ctx, va, kind, Privilege::Supervisor);
                let func_pa = match func.outcome {
                    Translation::Translated { pa, .. } => Some(pa),
                    Translation::Fault(_) | Translation::NonCanonical { .. } => None,
                };
                let req = AccessRequest::kernel(va, kind);
                let mf = m.mmu.translate_functional(&m.tables, &mut NoCheck, &req);
                let first = m.mmu.access(&mut m.tables, &mut NoCheck, &mut m.lat, &req);
                let second = m.mmu.access(&mut m.tables, &mut NoCheck, &mut m.lat, &req);
                let spa = |r: AccessResult| match r {
                    AccessResult::Translated { spa, .. } => Some(spa),
                    AccessResult::Fault(_) | AccessResult::NonCanonical { .. } => None,
                };
                prop_assert_eq!(func_pa, oracle);
                prop_assert_eq!(spa(mf.result), oracle);
                prop_assert_eq!(spa(first.result), oracle);
                prop_assert_eq!(spa(second.result), oracle);
                if oracle.is_some() {
                    prop_assert_eq!(second.path, AccessPath::TlbHit);
                    prop_assert_eq!(second.cost, cfg.tlb_hit_latency);
                }
            }
        }
    }
}
