//! mmu-model's integration tests (one binary, STYLE rule 18d).
//!
//! - `rmp_host`: the host RMP check of rmp-model plugged into the check hook, run through the
//!   spec/snp.md §6 scenarios S1, S2, S4 and the 1 GiB → 2 MiB TLB rule. (The root crate owns
//!   the real adapter; this one only shows the hook carries what the RMP needs.)
//! - `all_paths_agree`: TLB hit, full walk, functional walk and functional lookup give the same
//!   SPA on random page-table layouts (STYLE rule 18c).

use mmu_model::{
    AccessKind, AccessPath, AccessRequest, AccessResult, CheckAllow, CheckCache, CheckRequest,
    CheckTarget, CheckVerdict, CheckWork, Cr3, FlatLatency, LeafAttrs, LinearFrames, Mmu,
    MmuConfig, PageTable, Paging, PfErrorCode, PhysMemTables, PteFlags, TlbTag, TranslationCheck,
    WriteCheck,
};
use sim_core::{Cycles, Hva, PageSize, Spa};

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

mod rmp_host {
    use super::*;
    use rmp_model::{HostAccess, Rmp, RmpCheck, RmpEntry, RmpLayout};
    use sim_core::Gpa;

    const RMP_BASE: u64 = 0x10_0000;
    const R0: u64 = 0x1_0000_0000;

    /// The host check stage: rmp-model's host check behind the hook, with SNP's 1 GiB → 2 MiB
    /// TLB-fill rule.
    struct HostRmpCheck<'a> {
        rmp: &'a mut Rmp,
        lookup: Cycles,
    }

    impl TranslationCheck for HostRmpCheck<'_> {
        fn check(&mut self, req: &CheckRequest, work: &mut CheckWork) -> CheckVerdict {
            let (access, mapping) = match req.target {
                CheckTarget::Data { access: AccessKind::Write, mapping } => {
                    (HostAccess::DataWrite, mapping)
                }
                CheckTarget::Data { access: AccessKind::Read | AccessKind::Fetch, mapping } => {
                    (HostAccess::DataRead, mapping)
                }
                CheckTarget::TableRead { .. } | CheckTarget::TableWrite { .. } => {
                    (HostAccess::PageTable, PageSize::K4)
                }
            };
            let out = self.rmp.check_host_access(req.spa, mapping, access);
            if let Some(a) = out.entry_read {
                work.reads.push(a);
                work.fixed += self.lookup;
            }
            match out.check {
                RmpCheck::Ok => CheckVerdict::Allow(CheckAllow {
                    cache: CheckCache {
                        write: if access == HostAccess::DataWrite {
                            WriteCheck::Allowed
                        } else {
                            WriteCheck::Unchecked
                        },
                    },
                    fill_size: (mapping == PageSize::G1).then_some(PageSize::M2),
                }),
                RmpCheck::Violation(_) => CheckVerdict::Fault { error_bits: PfErrorCode::RMP },
            }
        }
    }

    /// spec/snp.md §6 initial state: RMP[0x100010] assigned to ASID 5; R0 direct-mapped by a
    /// 2 MiB leaf; the page tables (at 16 MiB) are hypervisor-owned.
    fn s1(cfg: &MmuConfig) -> (Machine, Rmp) {
        let mut m = machine(cfg);
        m.map(R0, PageSize::M2);
        let mut rmp = Rmp::new(RmpLayout::covering(Spa::new(RMP_BASE), 8 << 30).unwrap());
        let e = RmpEntry {
            assigned: true,
            asid: 5,
            gpa: Gpa::new(0x8000_0000),
            validated: true,
            ..RmpEntry::ZERO
        };
        rmp.set_entry(Spa::new(0x1_0001_0000), &e).unwrap();
        (m, rmp)
    }

    fn run(m: &mut Machine, rmp: &mut Rmp, pa: u64, kind: AccessKind) -> mmu_model::AccessOutcome {
        let mut chk = HostRmpCheck { rmp, lookup: Cycles::ZERO };
        m.mmu.access(&mut m.tables, &mut chk, &mut m.lat, &AccessRequest::kernel(dm(pa), kind))
    }

    fn entry_addr(pa: u64) -> Spa {
        Spa::new(RMP_BASE + 0x4000 + (pa >> 12) * 16)
    }

    #[test]
    fn s1_write_through_2m_with_assigned_neighbour_faults() {
        let (mut m, mut rmp) = s1(&MmuConfig::default());
        let o = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Write);
        let AccessResult::Fault(f) = o.result else { panic!("{o:?}") };
        assert_eq!(f.code.bits(), 0x8000_0003);
        assert_eq!(f.addr, dm(0x1_0000_5000));
        assert!(m.mmu.tlb().peek(dm(0x1_0000_5000), TlbTag::HOST).is_none(), "no TLB entry");
        // Table reads checked at 4K (3 RMP reads, all fine), then one read of R0's aligned
        // entry for the 2M write check.
        assert_eq!(o.check_reads.len(), 4);
        assert_eq!(*o.check_reads.last().unwrap(), entry_addr(R0));
    }

    #[test]
    fn s2_read_is_fine_and_installs_2m() {
        let (mut m, mut rmp) = s1(&MmuConfig::default());
        let o = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Read);
        assert_eq!(
            o.result,
            AccessResult::Translated { spa: Spa::new(0x1_0000_5000), size: PageSize::M2 }
        );
        assert!(rmp.stats().violations.is_empty());
        // The write that follows through the read-filled 2M entry is write-checked (§2.4).
        let w = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Write);
        assert_eq!(w.path, AccessPath::TlbHitWriteCheck);
        assert!(matches!(w.result, AccessResult::Fault(f) if f.code.bits() == 0x8000_0003));
    }

    #[test]
    fn s4_after_split_neighbour_ok_target_faults() {
        let (mut m, mut rmp) = s1(&MmuConfig::default());
        let (small, inv) = m.dmap.split(&mut m.tables, &mut m.frames, dm(R0)).unwrap();
        assert_eq!(small, PageSize::K4);
        m.mmu.tlb_mut().invalidate(&inv, TlbTag::HOST);
        let a = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Write);
        assert_eq!(
            a.result,
            AccessResult::Translated { spa: Spa::new(0x1_0000_5000), size: PageSize::K4 }
        );
        let b = run(&mut m, &mut rmp, 0x1_0001_0000, AccessKind::Write);
        assert!(matches!(b.result, AccessResult::Fault(f) if f.code.bits() == 0x8000_0003));
        assert_eq!(*b.check_reads.last().unwrap(), entry_addr(0x1_0001_0000));
    }

    #[test]
    fn host_1g_mapping_installs_2m_entries_and_checks_the_2m_subregion() {
        let mut m = machine(&MmuConfig::default());
        m.map(1 << 32, PageSize::G1);
        let mut rmp = Rmp::new(RmpLayout::covering(Spa::new(RMP_BASE), 8 << 30).unwrap());
        let e = RmpEntry { assigned: true, asid: 5, ..RmpEntry::ZERO };
        rmp.set_entry(Spa::new(0x1_0001_0000), &e).unwrap();
        let r = run(&mut m, &mut rmp, 0x1_0060_0000, AccessKind::Read);
        assert_eq!(
            r.result,
            AccessResult::Translated { spa: Spa::new(0x1_0060_0000), size: PageSize::M2 }
        );
        // A write in another 2M sub-region of the same 1G page is fine…
        let w = run(&mut m, &mut rmp, 0x1_0060_0000, AccessKind::Write);
        assert!(matches!(w.result, AccessResult::Translated { .. }));
        // …one in R0 (holding the assigned page) is not.
        let w = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Write);
        assert!(matches!(w.result, AccessResult::Fault(_)));
        assert_eq!(m.mmu.tlb().occupancy()[PageSize::G1], 0);
    }

    #[test]
    fn page_tables_in_assigned_memory_fault_every_walk() {
        // A host page-table page that became guest-owned: the walk's table read fails the
        // Hypervisor-Owned check.
        let (mut m, mut rmp) = s1(&MmuConfig::default());
        let root = m.dmap.root();
        let e = RmpEntry { assigned: true, asid: 5, ..RmpEntry::ZERO };
        rmp.set_entry(root, &e).unwrap();
        let o = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Read);
        assert!(matches!(o.result, AccessResult::Fault(f) if f.code.contains(PfErrorCode::RMP)));
        assert_eq!(o.check_reads.len(), 1);
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
