//! mmu-model's integration tests (one binary, STYLE rule 18d).
//!
//! (The RMP check stage through this crate's check hook is tested in the root crate, which owns
//! the adapter: `tests/tests.rs` module `rmp_stage`.)
//! - `analytic_tlb`: cyclic sweeps through fully associative and set-associative LRU TLBs miss
//!   exactly as computed by hand; tree-PLRU on a hand-computed sweep.
//! - `presets`: the same analysis on every CPU preset's geometry with replacement set to LRU.
//! - `walk_counts`: memory references of every walk kind, cold and with PWC / nested-TLB hits
//!   (24 for a 4×4 2-D walk, 35 for 5×5).
//! - `exact_cycles`: L1 hit, STLB hit, a walk with a PWC hit at each level, 2-D walks, and a
//!   burst of independent misses whose cost moves with `page_walkers` and `mlp_window`.
//! - `invalidation`: INVLPG, INVPCID, MOV CR3, TLB_CONTROL, INVEPT, INVVPID and tokens reach
//!   every TLB level, the nested TLB and the PWCs.
//! - `all_paths_agree`: TLB hits, walks with PWC starts, functional walks and lookups agree on
//!   random page tables under random mapping changes with the invalidations they require (an
//!   oracle checks every access, STYLE rule 18c); dropping one required invalidation is caught.

mod support;

mod analytic_tlb {
    use mmu_model::{
        CheckCache, Perms, Replacement, Tlb, TlbArrayConfig, TlbConfig, TlbFill, TlbTag,
    };
    use sim_core::{Hva, PageSize, Spa};

    fn fill(page: u64) -> TlbFill {
        TlbFill {
            frame: Spa::new(page << 12),
            size: PageSize::K4,
            perms: Perms::ALL,
            nested_perms: Perms::ALL,
            global: false,
            dirty: true,
            cache: CheckCache::default(),
        }
    }

    /// Sweep `pages` cyclically `rounds` times; misses per round.
    fn sweep(t: &mut Tlb, pages: &[u64], rounds: usize) -> Vec<usize> {
        (0..rounds)
            .map(|_| {
                pages
                    .iter()
                    .filter(|&&p| {
                        let va = Hva::new(p << 12);
                        let miss = t.lookup(va, TlbTag::HOST).is_none();
                        if miss {
                            t.fill(va, TlbTag::HOST, &fill(p));
                        }
                        miss
                    })
                    .count()
            })
            .collect()
    }

    fn tlb(sets: u32, ways: u32, r: Replacement) -> Tlb {
        let cfg = TlbConfig {
            replacement: r,
            ..TlbConfig::new(vec![TlbArrayConfig::set_assoc(&[PageSize::K4], sets, ways)], 0)
        };
        Tlb::new(&cfg).unwrap()
    }

    /// A cyclic sweep over N pages through a fully associative LRU TLB of K entries misses
    /// 100 % when N > K and 0 % after warm-up when N ≤ K.
    #[test]
    fn fully_associative_lru_sweep() {
        for k in [1u32, 4, 72, 96] {
            for n in [1, k.saturating_sub(1).max(1), k, k + 1, 2 * k, 3 * k + 5] {
                let mut t = tlb(1, k, Replacement::Lru);
                let pages: Vec<u64> = (0..u64::from(n)).collect();
                let m = sweep(&mut t, &pages, 4);
                let n = n as usize;
                assert_eq!(m[0], n, "cold round, K={k} N={n}");
                let steady = if n <= k as usize { 0 } else { n };
                assert_eq!(&m[1..], &[steady; 3], "K={k} N={n}");
            }
        }
    }

    /// Set conflicts by hand, 4 sets × 2 ways, page p in set p mod 4: three pages of set 0
    /// thrash (3 misses a round); two pages per set fit (0); three pages of set 0 plus one of
    /// set 1: set 0 thrashes, set 1 hits (3 of 4).
    #[test]
    fn set_conflicts_by_hand() {
        let cases: [(&[u64], usize); 4] = [
            (&[0, 4, 8], 3),
            (&[0, 4, 1, 5, 2, 6, 3, 7], 0),
            (&[0, 4, 8, 1], 3),
            (&[0, 1, 2, 3, 4, 5, 6, 7, 8], 3), // set 0 gets 0, 4, 8
        ];
        for (pages, steady) in cases {
            let mut t = tlb(4, 2, Replacement::Lru);
            let m = sweep(&mut t, pages, 4);
            assert_eq!(m[0], pages.len());
            assert_eq!(&m[1..], &[steady; 3], "{pages:?}");
        }
    }

    /// Tree-PLRU, one 4-way set, cyclic sweep of 5 pages, derived by hand (bits b0 root, b1
    /// over ways 0–1, b2 over ways 2–3; a use points its path away; victim follows the bits):
    /// round 0 fills w0..w3 with pages 0..3 (bits end 0,0,0). Round 1: 4 → victim w0 (page 0);
    /// 0 → w2 (page 2); 1 hits in w1; 2 → w3 (page 3); 3 → w0 (page 4): pattern M M H M M.
    /// Round 2 (w0=3, w1=1, w2=0, w3=2; b0=1, b1=1, b2=0): 4 → w2, 0 → w1, 1 → w3, 2 → w0,
    /// 3 → w2: every access misses. LRU would miss all five in both rounds.
    #[test]
    fn tree_plru_cyclic_sweep_by_hand() {
        let mut t = tlb(1, 4, Replacement::TreePlru);
        let pages = [0u64, 1, 2, 3, 4];
        assert_eq!(sweep(&mut t, &pages[..4], 1), [4]);
        let mut pattern = Vec::new();
        for round in 0..2 {
            for &p in &[4u64, 0, 1, 2, 3] {
                let va = Hva::new(p << 12);
                let hit = t.lookup(va, TlbTag::HOST).is_some();
                if !hit {
                    t.fill(va, TlbTag::HOST, &fill(p));
                }
                pattern.push((round, p, hit));
            }
        }
        let hits: Vec<_> = pattern.iter().filter(|x| x.2).map(|x| (x.0, x.1)).collect();
        assert_eq!(hits, [(0, 1)]);
        let mut lru = tlb(1, 4, Replacement::Lru);
        assert_eq!(sweep(&mut lru, &pages, 3), [5, 5, 5]);
    }
}

mod presets {
    //! Each preset's geometry with replacement set to LRU, swept with contiguous 4K pages: the
    //! L1 misses, L2 hits and walks per round follow from sets × ways by hand (a page p goes to
    //! set p mod S; a set holding more pages than ways thrashes under a cyclic sweep, one that
    //! holds at most its ways never misses after warm-up).
    use crate::support::Host;
    use mmu_model::{AccessKind, MMU_PRESET_NAMES, MmuConfig, Paging, TlbConfig};
    use sim_core::PageSize;

    /// (sets, ways) for 4K pages of a level (arrays holding 4K must agree on sets).
    fn geometry_4k(t: &TlbConfig) -> (u64, u64) {
        let arrays: Vec<_> = t.arrays.iter().filter(|a| a.sizes.contains(&PageSize::K4)).collect();
        let sets = u64::from(arrays[0].sets);
        assert!(arrays.iter().all(|a| u64::from(a.sets) == sets));
        (sets, arrays.iter().map(|a| u64::from(a.ways)).sum())
    }

    /// Pages of `0..n` in sets holding more than `ways` of them.
    fn thrashing(n: u64, sets: u64, ways: u64) -> u64 {
        (0..sets)
            .map(|s| if s < n { (n - s).div_ceil(sets) } else { 0 })
            .filter(|&c| c > ways)
            .sum()
    }

    /// (L1 hits, L2 hits, walks) in the third round of a cyclic sweep over `n` pages.
    fn measure(cfg: &MmuConfig, n: u64, kind: AccessKind) -> (u64, u64, u64) {
        let mut h = Host::new(cfg, Paging::FourLevel);
        let base = 1u64 << 32;
        h.map_4k(base, n);
        for _ in 0..2 {
            for i in 0..n {
                h.access(base + i * 4096, kind);
            }
        }
        let before = h.mmu.stats().clone();
        for i in 0..n {
            h.access(base + i * 4096, kind);
        }
        let d = &h.mmu.stats().clone() - &before;
        (d.tlb_hits - d.l2_tlb_hits, d.l2_tlb_hits, d.walks.total())
    }

    #[test]
    fn every_preset_sweeps_as_computed() {
        for name in MMU_PRESET_NAMES {
            let cfg = MmuConfig::preset(name).unwrap().with_lru();
            for kind in [AccessKind::Read, AccessKind::Fetch] {
                let (l1, l2) = match kind {
                    AccessKind::Fetch => (
                        cfg.itlb.as_ref().unwrap(),
                        cfg.l2_itlb.as_ref().or(cfg.stlb.as_ref()).unwrap(),
                    ),
                    AccessKind::Read | AccessKind::Write => (&cfg.dtlb, cfg.stlb.as_ref().unwrap()),
                };
                let (s1, w1) = geometry_4k(l1);
                let (s2, w2) = geometry_4k(l2);
                let (c1, c2) = (s1 * w1, s2 * w2);
                // Fits the L1 exactly: all L1 hits.
                assert_eq!(measure(&cfg, c1, kind), (c1, 0, 0), "{name} {kind:?} N={c1}");
                // One page more: the sets that overflow thrash, the L2 holds them.
                let n = c1 + 1;
                let t = thrashing(n, s1, w1);
                assert_eq!(measure(&cfg, n, kind), (n - t, t, 0), "{name} {kind:?} N={n}");
                // Twice the L1: every L1 set thrashes; the L2 holds everything.
                let n = 2 * c1;
                assert!(thrashing(n, s2, w2) == 0);
                assert_eq!(measure(&cfg, n, kind), (0, n, 0), "{name} {kind:?} N={n}");
                // Twice the L2: both levels thrash everywhere, every access walks.
                let n = 2 * c2;
                assert_eq!(thrashing(n, s1, w1), n);
                assert_eq!(measure(&cfg, n, kind), (0, 0, n), "{name} {kind:?} N={n}");
            }
        }
    }
}

mod walk_counts {
    //! References per walk kind, cold and with paging-structure-cache or nested-TLB hits.
    use crate::support::{Guest, Host, RWX_AD, exact_cfg};
    use mmu_model::{FlushScope, NestedKind, Paging, RefKind, Stage};
    use sim_core::PageSize;

    const A: u64 = 0x1_4000_0000; // 5 GiB: its own PML4E/PDPTE/PDE

    #[test]
    fn host_4_level_cold_and_each_pwc_level() {
        let cfg = exact_cfg(1, 8, 2, None, 20);
        let mut h = Host::new(&cfg, Paging::FourLevel);
        for pa in [A, A + 0x1000, A + (2 << 20), A + (1 << 30)] {
            h.map(pa, PageSize::K4, RWX_AD);
        }
        h.map(A + (4 << 20), PageSize::M2, RWX_AD);
        assert_eq!(h.read(A).refs.len(), 4, "cold");
        h.mmu.tlb_mut().flush(FlushScope::All);
        assert_eq!(h.read(A + 0x1000).refs.len(), 1, "PDE-cache hit: the PTE only");
        assert_eq!(h.read(A + (2 << 20)).refs.len(), 2, "PDPTE-cache hit: PDE and PTE");
        assert_eq!(h.read(A + (1 << 30)).refs.len(), 3, "PML4E-cache hit");
        assert_eq!(h.read(A + (4 << 20)).refs.len(), 1, "PDPTE-cache hit, 2M leaf in the PD");
        assert!(h.read(A).refs.iter().all(|r| r.stage == Stage::Native));
    }

    #[test]
    fn host_5_level_cold_and_pml5e_hit() {
        let cfg = exact_cfg(1, 8, 2, None, 20);
        let mut h = Host::new(&cfg, Paging::FiveLevel);
        h.map(A, PageSize::K4, RWX_AD);
        h.map(A + (1 << 39), PageSize::K4, RWX_AD);
        assert_eq!(h.read(A).refs.len(), 5);
        assert_eq!(h.read(A + (1 << 39)).refs.len(), 4, "PML5E-cache hit");
    }

    const GVA: u64 = 0x7f00_1234_5000;
    const GPA: u64 = 0x4000_0000;

    #[test]
    fn two_d_walks_cold_and_with_caches() {
        for kind in [NestedKind::Npt, NestedKind::Ept { accessed_dirty: true }] {
            // No nested TLB: nested walks start from the nested PWC.
            let mut g = Guest::new(
                &exact_cfg(1, 8, 2, None, 20),
                kind,
                Some(Paging::FourLevel),
                Paging::FourLevel,
            );
            g.map(GVA, GPA);
            g.map(GVA + 0x1000, GPA + 0x1000);
            let cold = g.read_gva(GVA);
            assert_eq!(cold.refs.len(), 24, "{kind:?}");
            assert!(cold.refs.iter().all(|r| r.kind == RefKind::Read));
            g.mmu.tlb_mut().flush(FlushScope::All);
            // Guest PDE hit (PTE read), nested PDE hits for the PT page and the data page.
            let w = g.read_gva(GVA + 0x1000);
            assert_eq!(w.refs.len(), 3, "{kind:?}: {:?}", w.refs);
            // With a nested TLB the PT page's translation is cached: 2 references.
            let mut g = Guest::new(
                &exact_cfg(1, 8, 2, Some(3), 20),
                kind,
                Some(Paging::FourLevel),
                Paging::FourLevel,
            );
            g.map(GVA, GPA);
            g.map(GVA + 0x1000, GPA + 0x1000);
            assert_eq!(g.read_gva(GVA).refs.len(), 24);
            g.mmu.tlb_mut().flush(FlushScope::All);
            let w = g.read_gva(GVA + 0x1000);
            assert_eq!(w.refs.len(), 2, "{kind:?}: {:?}", w.refs);
            assert_eq!(g.mmu.stats().nested_tlb_hits, 1);
        }
        let mut g = Guest::new(
            &exact_cfg(1, 8, 2, None, 20),
            NestedKind::Npt,
            Some(Paging::FiveLevel),
            Paging::FiveLevel,
        );
        g.map(GVA, GPA);
        assert_eq!(g.read_gva(GVA).refs.len(), 35);
    }

    #[test]
    fn guest_physical_walks() {
        for (np, m) in [(Paging::FourLevel, 4), (Paging::FiveLevel, 5)] {
            let mut g = Guest::new(&exact_cfg(1, 8, 2, Some(3), 20), NestedKind::Npt, None, np);
            g.nmap(GPA);
            g.nmap(GPA + 0x1000);
            assert_eq!(g.read_gpa(GPA).refs.len(), m);
            assert_eq!(g.read_gpa(GPA + 0x1000).refs.len(), 1, "nested PDE hit");
            g.mmu.tlb_mut().flush(FlushScope::All);
            let w = g.read_gpa(GPA + 8);
            assert_eq!(w.refs.len(), 0, "nested-TLB hit: no reference at all");
            assert!(w.refs.iter().all(|r| r.stage == Stage::Nested));
        }
    }
}

mod exact_cycles {
    //! Exact cycle counts (STYLE rule 18b): L1 = 1, STLB = 8, PWC probe = 2, nested TLB = 3,
    //! one reference = 20.
    use crate::support::{Guest, Host, RWX_AD, exact_cfg};
    use mmu_model::{
        AccessPath, FlushScope, MmuConfig, NestedKind, Paging, TimedAccess, TlbLevelId,
    };
    use sim_core::{Cycles, PageSize};

    const A: u64 = 0x1_4000_0000;

    fn c(n: u64) -> Cycles {
        Cycles::new(n)
    }

    #[test]
    fn host_hits_and_walks() {
        let cfg = exact_cfg(1, 8, 2, None, 20);
        let mut h = Host::new(&cfg, Paging::FourLevel);
        for i in 0..5 {
            h.map(A + i * 0x1000, PageSize::K4, RWX_AD);
        }
        h.map(A + (2 << 20), PageSize::K4, RWX_AD);
        h.map(A + (1 << 30), PageSize::K4, RWX_AD);
        // Cold walk: L1 + STLB + PWC probe + 4 references.
        assert_eq!(h.read(A).cost, c(1 + 8 + 2 + 4 * 20));
        // L1 hit.
        let o = h.read(A);
        assert_eq!(
            (o.path, o.cost, o.hit_level),
            (AccessPath::TlbHit, c(1), Some(TlbLevelId::Dtlb))
        );
        // Four more pages push A out of the 4-entry DTLB; it stays in the STLB.
        for i in 1..5 {
            assert_eq!(h.read(A + i * 0x1000).cost, c(1 + 8 + 2 + 20), "PDE-cache hit");
        }
        let o = h.read(A);
        assert_eq!((o.cost, o.hit_level), (c(1 + 8), Some(TlbLevelId::Stlb)));
        // Walks starting at each PWC level.
        h.mmu.tlb_mut().flush(FlushScope::All);
        assert_eq!(h.read(A + 0x1000).cost, c(1 + 8 + 2 + 20), "PDE hit");
        assert_eq!(h.read(A + (2 << 20)).cost, c(1 + 8 + 2 + 2 * 20), "PDPTE hit");
        assert_eq!(h.read(A + (1 << 30)).cost, c(1 + 8 + 2 + 3 * 20), "PML4E hit");
        let mut h5 = Host::new(&cfg, Paging::FiveLevel);
        h5.map(A, PageSize::K4, RWX_AD);
        h5.map(A + (1 << 39), PageSize::K4, RWX_AD);
        assert_eq!(h5.read(A).cost, c(1 + 8 + 2 + 5 * 20));
        assert_eq!(h5.read(A + (1 << 39)).cost, c(1 + 8 + 2 + 4 * 20), "PML5E hit");
    }

    #[test]
    fn two_d_walks() {
        let cfg = exact_cfg(1, 8, 2, Some(3), 20);
        let mut g = Guest::new(&cfg, NestedKind::Npt, Some(Paging::FourLevel), Paging::FourLevel);
        g.map(0x7f00_0000_0000, 0x4000_0000);
        g.map(0x7f00_0000_1000, 0x4000_1000);
        // Cold: TLBs, the guest-PWC probe, five nested-TLB lookups and five nested-PWC
        // probes (all miss), 24 references.
        let o = g.read_gva(0x7f00_0000_0000);
        assert_eq!(o.cost, c(1 + 8 + 2 + 5 * 3 + 5 * 2 + 24 * 20));
        assert_eq!(g.read_gva(0x7f00_0000_0000).cost, c(1));
        // Next page after a TLB flush: guest PDE hit → nested TLB hit for the PT page, one
        // guest read; the data GPA misses the nested TLB and walks from a nested PDE hit.
        g.mmu.tlb_mut().flush(FlushScope::All);
        let o = g.read_gva(0x7f00_0000_1000);
        assert_eq!(o.cost, c(1 + 8 + 2 + 2 * 3 + 2 + 2 * 20));
    }

    /// Eight independent cold walks of equal cost issued together: what the CPU waits for
    /// depends on both `page_walkers` and `mlp_window`.
    #[test]
    fn burst_of_misses_overlaps() {
        let cost_of = |walkers: u32, window: u32| {
            let cfg =
                MmuConfig { page_walkers: walkers, mlp_window: window, ..MmuConfig::default() };
            let mut h = Host::new(&cfg, Paging::FourLevel);
            for i in 0..8u64 {
                h.map(A + (i << 30), PageSize::M2, RWX_AD);
            }
            let mut total = Cycles::ZERO;
            let mut each = Vec::new();
            for i in 0..8u64 {
                let o = h.read(A + (i << 30));
                each.push(o.cost);
                let t = TimedAccess { start: Cycles::ZERO, latency: o.cost, walk: o.walked() };
                total += h.mmu.overlap_mut().charge(t);
            }
            (total, each)
        };
        let (serial, each) = cost_of(1, 1);
        // Each walk: PML4E, PDPTE, PDE at 20 cycles (no PWC, DTLB hit latency 0).
        assert!(each.iter().all(|&c| c == Cycles::new(60)));
        assert_eq!(serial, c(8 * 60));
        assert_eq!(cost_of(1, 8).0, c(8 * 60), "one walker: no overlap");
        assert_eq!(cost_of(8, 1).0, c(8 * 60), "window of one: no overlap");
        assert_eq!(cost_of(2, 8).0, c(4 * 60));
        assert_eq!(cost_of(4, 8).0, c(2 * 60));
        assert_eq!(cost_of(8, 8).0, c(60));
        assert_eq!(cost_of(8, 2).0, c(4 * 60), "window limits");
        assert_eq!(cost_of(8, 4).0, c(2 * 60));
    }
}

mod invalidation {
    use crate::support::{Guest, Host, RWX_AD, exact_cfg};
    use mmu_model::{
        AccessKind, Cr3, FlushScope, Invept, Invpcid, Invvpid, LeafAttrs, NestedKind, Paging,
        PteFlags, TlbControl, TlbTag,
    };
    use sim_core::{Gva, PageSize, Spa};

    const A: u64 = 0x1_4000_0000;

    fn pwc_total(h: &Host) -> u64 {
        h.mmu.pwc().occupancy().iter().sum()
    }

    fn host() -> Host {
        let mut h = Host::new(&exact_cfg(1, 8, 2, None, 20), Paging::FourLevel);
        h.map(A, PageSize::K4, RWX_AD);
        let g = LeafAttrs { flags: RWX_AD.flags | PteFlags::GLOBAL, ..RWX_AD };
        h.map(A + 0x1000, PageSize::K4, g);
        h
    }

    fn switch(h: &mut Host, pcid: u16, preserve: bool) {
        let cr3 = h.mmu.cr3();
        let _ = h.mmu.load_cr3(Cr3 { tag: TlbTag { asid: 0, pcid }, ..cr3 }, preserve);
    }

    /// INVLPG drops every PWC entry of the current PCID (SDM Vol. 3A §4.10.4.1), not those of
    /// other PCIDs.
    #[test]
    fn invlpg_reaches_every_level_and_the_pcid_pwc() {
        let mut h = host();
        h.read(A);
        switch(&mut h, 1, true);
        h.read(A);
        assert_eq!(pwc_total(&h), 6, "3 levels × 2 PCIDs");
        assert_eq!(h.mmu.tlb().occupancy().total(), 4, "DTLB and STLB, 2 PCIDs");
        let n = h.mmu.invlpg(h.va(A), TlbTag { asid: 0, pcid: 1 });
        assert_eq!((n.tlb, n.pwc), (2, 3));
        assert_eq!(h.read(A).refs.len(), 4, "PCID 1 walks from the root");
        switch(&mut h, 0, true);
        assert_eq!(h.read(A).refs.len(), 0, "PCID 0 still hits");
    }

    #[test]
    fn cr3_loads_with_and_without_no_flush() {
        let mut h = host();
        h.read(A);
        h.read(A + 0x1000);
        switch(&mut h, 1, true);
        switch(&mut h, 0, true);
        assert_eq!(h.read(A).refs.len(), 0, "bit 63 set: nothing flushed");
        let n = h.mmu.load_cr3(h.mmu.cr3(), false);
        assert_eq!((n.tlb, n.pwc), (2, 3), "non-global entries (DTLB + STLB) and the PWC");
        assert_eq!(h.read(A + 0x1000).refs.len(), 0, "the global entry survives");
        assert_eq!(h.read(A).refs.len(), 4);
    }

    #[test]
    fn invpcid_types() {
        let mut h = host();
        let fill = |h: &mut Host| {
            switch(h, 0, true);
            h.read(A);
            h.read(A + 0x1000);
            switch(h, 1, true);
            h.read(A);
            switch(h, 0, true);
        };
        fill(&mut h);
        // Type 0: non-global entries of (PCID 0, A); the global entry at A+4K stays.
        // The PWC entries of PCID 0 go whatever the address.
        let n = h.mmu.invpcid(0, Invpcid::Address { pcid: 0, addr: h.va(A + 0x1000).raw() });
        assert_eq!((n.tlb, n.pwc), (0, 3), "global translations are kept");
        let n = h.mmu.invpcid(0, Invpcid::Address { pcid: 0, addr: h.va(A).raw() });
        assert_eq!((n.tlb, n.pwc), (2, 0));
        // Type 1: PCID 1's non-global entries and PWC entries.
        fill(&mut h);
        let n = h.mmu.invpcid(0, Invpcid::SingleContext { pcid: 1 });
        assert_eq!((n.tlb, n.pwc), (2, 3));
        // Type 3: every PCID's non-global entries, all PWC entries; the global one stays.
        fill(&mut h);
        let n = h.mmu.invpcid(0, Invpcid::AllNonGlobal);
        assert_eq!((n.tlb, n.pwc), (4, 6));
        assert!(h.mmu.tlb().peek(h.va(A + 0x1000), TlbTag::HOST).is_some());
        // Type 2: everything, globals included.
        fill(&mut h);
        let n = h.mmu.invpcid(0, Invpcid::AllIncludingGlobal);
        assert_eq!(h.mmu.tlb().occupancy().total(), 0);
        assert_eq!(pwc_total(&h), 0);
        assert_eq!(n.tlb, 6);
    }

    const GVA: u64 = 0x7f00_0000_0000;
    const GPA: u64 = 0x4000_0000;

    fn guest(kind: NestedKind) -> Guest {
        let mut g = Guest::new(
            &exact_cfg(1, 8, 2, Some(3), 20),
            kind,
            Some(Paging::FourLevel),
            Paging::FourLevel,
        );
        g.map(GVA, GPA);
        g.read_gva(GVA);
        g
    }

    fn cached(g: &Guest) -> (u64, u64, u64, u64) {
        (
            g.mmu.tlb().occupancy().total(),
            g.mmu.nested_tlb().unwrap().occupancy().total(),
            g.mmu.guest_pwc().occupancy().iter().sum(),
            g.mmu.nested_pwc().occupancy().iter().sum(),
        )
    }

    #[test]
    fn svm_tlb_control() {
        let mut g = guest(NestedKind::Npt);
        // 2 TLB levels; 5 nested translations in the nested TLB; 3 guest PWC entries; nested
        // PWC: 3 levels for the table region and 2 more for the data region (its own PDPTE).
        assert_eq!(cached(&g), (2, 5, 3, 5));
        assert_eq!(g.mmu.svm_tlb_control(5, TlbControl::DoNothing).total(), 0);
        assert_eq!(g.mmu.svm_tlb_control(9, TlbControl::FlushAsid).total(), 0, "another ASID");
        let n = g.mmu.svm_tlb_control(5, TlbControl::FlushAsid);
        assert_eq!((n.tlb, n.pwc), (7, 8));
        assert_eq!(cached(&g), (0, 0, 0, 0));
        assert_eq!(g.read_gva(GVA).refs.len(), 24);
        // 07h keeps the guest's global entries.
        g.map(GVA + 0x1000, GPA + 0x1000);
        let a = g.gpt.protect(
            &mut g.guest,
            Gva::new(GVA + 0x1000),
            PageSize::K4,
            LeafAttrs {
                flags: crate::support::GUEST_LEAF.flags | PteFlags::GLOBAL,
                ..crate::support::GUEST_LEAF
            },
        );
        a.unwrap().ignore(); // not cached yet
        g.read_gva(GVA + 0x1000);
        g.mmu.svm_tlb_control(5, TlbControl::FlushAsidNonGlobal);
        assert_eq!(g.read_gva(GVA + 0x1000).refs.len(), 0, "global guest entry kept");
        assert_eq!(g.mmu.nested_tlb().unwrap().occupancy().total(), 0);
        g.mmu.svm_tlb_control(5, TlbControl::FlushAll);
        assert_eq!(cached(&g), (0, 0, 0, 0));
        assert_eq!(TlbControl::from_raw(3), Some(TlbControl::FlushAsid));
        assert_eq!(TlbControl::from_raw(2), None);
    }

    #[test]
    fn invept_and_invvpid() {
        let mut g = guest(NestedKind::Ept { accessed_dirty: true });
        let other = Spa::new(0x3f00_0000);
        assert_eq!(g.mmu.invept(Invept::SingleContext { root: other }).total(), 0);
        let n = g.mmu.invept(Invept::SingleContext { root: g.ctx.nested.root });
        assert_eq!((n.tlb, n.pwc), (7, 8));
        g.read_gva(GVA);
        assert_eq!(g.mmu.invept(Invept::Global).tlb, 7);
        // INVVPID leaves guest-physical (nested) mappings alone.
        g.read_gva(GVA);
        let n = g.mmu.invvpid(Invvpid::IndividualAddress { vpid: 5, addr: Gva::new(GVA) });
        assert_eq!((n.tlb, n.pwc), (2, 3));
        assert_eq!(cached(&g), (0, 5, 0, 5));
        let w = g.read_gva(GVA);
        assert_eq!(w.refs.len(), 4, "guest reads only: the nested TLB has every translation");
        assert_eq!(g.mmu.invvpid(Invvpid::SingleContext { vpid: 0 }).total(), 0, "VPID 0");
        assert_eq!(g.mmu.invvpid(Invvpid::AllContexts).tlb, 2);
        g.read_gva(GVA);
        assert_eq!(g.mmu.invvpid(Invvpid::SingleContextRetainingGlobals { vpid: 5 }).tlb, 2);
        g.read_gva(GVA);
        assert_eq!(g.mmu.invvpid(Invvpid::SingleContext { vpid: 5 }).tlb, 2);
    }

    /// A merge frees a page table: without the token's PWC drop, a PDE-cache hit walks into
    /// the freed page; the oracle sees the wrong answer. With `Mmu::invalidate` it is right.
    #[test]
    fn freed_tables_token_drops_pwc_entries() {
        for apply in [true, false] {
            let mut h = Host::new(&exact_cfg(1, 8, 2, None, 20), Paging::FourLevel);
            h.mmu.enable_oracle();
            let base = 0x1_0000_0000u64;
            h.map_4k(base, 512);
            h.read(base);
            let va = h.va(base);
            let tok = h.pt.merge(&mut h.tables, &mut h.frames, va, PageSize::M2).unwrap();
            assert!(tok.freed_tables());
            if apply {
                h.mmu.invalidate(&tok, TlbTag::HOST);
            } else {
                h.mmu.tlb_mut().invalidate(&tok, TlbTag::HOST); // TLBs only: a bug
            }
            let o = h.read(base + 0x5000);
            assert_eq!(h.mmu.oracle_mismatches().is_empty(), apply, "{o:?}");
        }
    }

    #[test]
    fn rmp_coherence_reaches_the_nested_tlb() {
        let mut g = guest(NestedKind::Npt);
        let n = g.mmu.invalidate_phys(Spa::new(GPA + crate::support::HOST_OFFSET), 4096);
        assert_eq!(n.tlb, 3, "DTLB, STLB and nested-TLB entries of the data page");
        let _ = AccessKind::Read;
        let _ = FlushScope::All;
    }
}

mod all_paths_agree {
    //! Random page tables, random accesses and mapping changes, each change's invalidation
    //! applied through `Mmu::invalidate`: the oracle checks every access against a fresh
    //! walk. The second property drops one required invalidation and expects the oracle to
    //! see the stale hit.
    use crate::support::{Host, RWX_AD, exact_cfg};
    use mmu_model::{
        AccessKind, AccessPath, AccessRequest, AccessResult, MmuConfig, NoCheck, Paging, Privilege,
        TlbTag, Translation, WalkContext, walk_functional,
    };
    use proptest::prelude::*;
    use sim_core::{PageSize, Spa};

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

    fn build(cfg: &MmuConfig, layout: &[Slot]) -> Host {
        let mut h = Host::new(cfg, Paging::FourLevel);
        for (i, s) in layout.iter().enumerate() {
            let base = (i as u64 + 1) << 30;
            match s {
                Slot::Giga => h.map(base, PageSize::G1, RWX_AD),
                Slot::Mega { split_mask } => {
                    for j in 0..8u64 {
                        h.map(base + (j << 21), PageSize::M2, RWX_AD);
                        if split_mask >> j & 1 == 1 {
                            let va = h.va(base + (j << 21));
                            let (_, inv) = h.pt.split(&mut h.tables, &mut h.frames, va).unwrap();
                            inv.ignore(); // nothing cached yet
                        }
                    }
                }
                Slot::Small { count } => {
                    for j in 0..u64::from(*count) {
                        h.map(base + j * 0x3000, PageSize::K4, RWX_AD);
                    }
                }
            }
        }
        h
    }

    /// What a test step does.
    #[derive(Debug, Clone)]
    enum Op {
        Access {
            slot: usize,
            off: u64,
            write: bool,
        },
        /// Unmap the leaf covering the address.
        Unmap {
            slot: usize,
            off: u64,
        },
        /// Remap the 4K page at the address (after unmapping its leaf's 4K piece) to another
        /// frame.
        Remap {
            slot: usize,
            off: u64,
        },
        Split {
            slot: usize,
            off: u64,
        },
        Merge {
            slot: usize,
            off: u64,
            giga: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let a = (0usize..4, 0u64..(1 << 30));
        prop_oneof![
            6 => (a.clone(), any::<bool>()).prop_map(|((slot, off), write)| Op::Access { slot, off, write }),
            1 => a.clone().prop_map(|(slot, off)| Op::Unmap { slot, off }),
            1 => a.clone().prop_map(|(slot, off)| Op::Remap { slot, off }),
            1 => a.clone().prop_map(|(slot, off)| Op::Split { slot, off }),
            1 => (a, any::<bool>()).prop_map(|((slot, off), giga)| Op::Merge { slot, off, giga }),
        ]
    }

    /// Apply a mapping change; returns whether one was made. `apply` decides whether its
    /// invalidation reaches the MMU.
    fn change(h: &mut Host, op: &Op, nslots: usize, apply: bool) -> bool {
        let at = |slot: usize, off: u64| ((slot % nslots) as u64 + 1) << 30 | off;
        let tok = match *op {
            Op::Access { .. } => return false,
            Op::Unmap { slot, off } => {
                let va = h.va(at(slot, off));
                let Some(leaf) = h.pt.lookup(&h.tables, va) else { return false };
                let base = h.va(at(slot, off) & !(leaf.size.bytes() - 1));
                h.pt.unmap(&mut h.tables, base, leaf.size).unwrap().1
            }
            Op::Remap { slot, off } => {
                let pa = at(slot, off) & !0xfff;
                let va = h.va(pa);
                let Some(leaf) = h.pt.lookup(&h.tables, va) else { return false };
                if leaf.size != PageSize::K4 {
                    return false;
                }
                let (_, mut t) = h.pt.unmap(&mut h.tables, va, PageSize::K4).unwrap();
                // Another frame: the page 3 GiB up (outside every slot's identity mapping).
                let fresh =
                    h.pt.map(
                        &mut h.tables,
                        &mut h.frames,
                        va,
                        Spa::new(pa + (3 << 30) + (8 << 30)),
                        PageSize::K4,
                        RWX_AD,
                    )
                    .unwrap();
                t.merge(fresh);
                t
            }
            Op::Split { slot, off } => {
                let va = h.va(at(slot, off));
                match h.pt.split(&mut h.tables, &mut h.frames, va) {
                    Ok((_, t)) => t,
                    Err(_) => return false,
                }
            }
            Op::Merge { slot, off, giga } => {
                let va = h.va(at(slot, off));
                let size = if giga { PageSize::G1 } else { PageSize::M2 };
                match h.pt.merge(&mut h.tables, &mut h.frames, va, size) {
                    Ok(t) => t,
                    Err(_) => return false,
                }
            }
        };
        if apply {
            h.mmu.invalidate(&tok, TlbTag::HOST);
        } else {
            tok.ignore(); // on purpose: the test wants a stale entry
        }
        true
    }

    fn access(h: &mut Host, pa: u64, write: bool) -> (AccessResult, AccessPath) {
        let kind = if write { AccessKind::Write } else { AccessKind::Read };
        let o = h.access(pa, kind);
        (o.result, o.path)
    }

    fn small_cfg(ways: u32) -> MmuConfig {
        let mut cfg = exact_cfg(1, 8, 2, None, 20);
        cfg.dtlb.arrays[0].ways = ways;
        cfg
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn tlb_pwc_walk_functional_lookup_agree(
            layout in proptest::collection::vec(slot(), 1..4),
            ops in proptest::collection::vec(op(), 1..60),
            ways in 1u32..8,
        ) {
            let cfg = small_cfg(ways);
            let mut h = build(&cfg, &layout);
            h.mmu.enable_oracle();
            let n = layout.len();
            for op in &ops {
                if let Op::Access { slot, off, write } = *op {
                    let pa = ((slot % n) as u64 + 1) << 30 | off;
                    let va = h.va(pa);
                    let oracle = h.pt.lookup(&h.tables, va).map(|l| l.pa(va));
                    let ctx = WalkContext {
                        root: h.pt.root(), paging: Paging::FourLevel,
                        format: cfg.pte_format(), controls: h.mmu.controls(),
                    };
                    let kind = if write { AccessKind::Write } else { AccessKind::Read };
                    let func = walk_functional(&h.tables, &ctx, va, kind, Privilege::Supervisor);
                    let func_pa = match func.outcome {
                        Translation::Translated { pa, .. } => Some(pa),
                        Translation::Fault(_) | Translation::NonCanonical { .. } => None,
                    };
                    let req = AccessRequest::kernel(va, kind);
                    let mf = h.mmu.translate_functional(&h.tables, &mut NoCheck, &req);
                    let (first, _) = access(&mut h, pa, write);
                    let (second, path) = access(&mut h, pa, write);
                    let spa = |r: AccessResult| match r {
                        AccessResult::Translated { spa, .. } => Some(spa),
                        AccessResult::Fault(_) | AccessResult::NonCanonical { .. } => None,
                    };
                    prop_assert_eq!(func_pa, oracle);
                    prop_assert_eq!(spa(mf.result), oracle);
                    prop_assert_eq!(spa(first), oracle);
                    prop_assert_eq!(spa(second), oracle);
                    if oracle.is_some() {
                        prop_assert_eq!(path, AccessPath::TlbHit);
                    }
                } else {
                    change(&mut h, op, n, true);
                }
            }
            prop_assert_eq!(h.mmu.oracle_mismatches(), &[]);
        }

        /// The same, but the last change's invalidation is dropped after the changed address
        /// was accessed: the next access hits a stale entry and the oracle catches it.
        #[test]
        fn a_dropped_invalidation_is_caught(
            layout in proptest::collection::vec(slot(), 1..4),
            ops in proptest::collection::vec(op(), 0..30),
            target in (0usize..4, 0u64..(1 << 30)),
            remap: bool,
        ) {
            let mut h = build(&small_cfg(4), &layout);
            h.mmu.enable_oracle();
            let n = layout.len();
            for op in &ops {
                if let Op::Access { slot, off, write } = *op {
                    access(&mut h, ((slot % n) as u64 + 1) << 30 | off, write);
                } else {
                    change(&mut h, op, n, true);
                }
            }
            prop_assert_eq!(h.mmu.oracle_mismatches(), &[]);
            let (slot, off) = target;
            let pa = ((slot % n) as u64 + 1) << 30 | off;
            let (before, _) = access(&mut h, pa, false);
            prop_assume!(matches!(before, AccessResult::Translated { .. }));
            // Remap needs a 4K leaf: split the target down first (invalidations applied).
            if remap {
                while h.pt.lookup(&h.tables, h.va(pa)).unwrap().size != PageSize::K4 {
                    change(&mut h, &Op::Split { slot, off }, n, true);
                }
                access(&mut h, pa, false);
            }
            let op = if remap { Op::Remap { slot, off } } else { Op::Unmap { slot, off } };
            prop_assert!(change(&mut h, &op, n, false));
            let (after, path) = access(&mut h, pa, false);
            prop_assert_eq!(path, AccessPath::TlbHit, "{:?}", after);
            prop_assert!(!h.mmu.oracle_mismatches().is_empty());
        }
    }

    /// Guest side: 2-D walks through the guest PWC, nested PWC and nested TLB agree with a
    /// cold functional 2-D walk under guest remaps (INVLPG with the guest's tag) and nested
    /// remaps (INVEPT single-context / TLB_CONTROL), on NPT and EPT.
    mod guest {
        use crate::support::{GUEST_LEAF, Guest, HOST_OFFSET, exact_cfg};
        use mmu_model::{
            AccessKind, EptFlags, EptLeafAttrs, GuestAccessResult, GuestAddr, LeafAttrs,
            NestedKind, Paging, PteFlags, TlbControl,
        };
        use proptest::prelude::*;
        use sim_core::{Gpa, Gva, PageSize, Spa};

        const GVA: u64 = 0x7f00_0000_0000;
        const GPA: u64 = 0x4000_0000;

        #[derive(Debug, Clone)]
        enum Op {
            Access {
                page: u64,
                write: bool,
            },
            /// Point the guest page at another guest-physical page.
            GuestRemap {
                page: u64,
                to: u64,
            },
            /// Point a guest-physical page at another host page.
            NestedRemap {
                page: u64,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0u64..24, any::<bool>()).prop_map(|(page, write)| Op::Access { page, write }),
                1 => (0u64..24, 0u64..48).prop_map(|(page, to)| Op::GuestRemap { page, to }),
                1 => (0u64..48).prop_map(|page| Op::NestedRemap { page }),
            ]
        }

        fn rig(ept: bool) -> Guest {
            let kind = if ept { NestedKind::Ept { accessed_dirty: true } } else { NestedKind::Npt };
            let mut cfg = exact_cfg(1, 8, 2, Some(3), 20);
            cfg.dtlb.arrays[0].ways = 2; // evictions and STLB refills
            let mut g = Guest::new(&cfg, kind, Some(Paging::FourLevel), Paging::FourLevel);
            for i in 0..24 {
                // Spread pages over two guest PTs and two nested 2M regions.
                g.map(GVA + (i % 12) * 0x1000 + (i / 12) * (2 << 20), GPA + i * 0x1000);
            }
            for i in 24..48 {
                g.nmap(GPA + i * 0x1000);
            }
            g.mmu.enable_oracle();
            g
        }

        fn gva(page: u64) -> u64 {
            GVA + (page % 12) * 0x1000 + (page / 12) * (2 << 20)
        }

        /// Apply a change; `apply` decides whether the required invalidation reaches the MMU.
        fn change(g: &mut Guest, op: &Op, apply: bool, ept: bool, round: u64) {
            match *op {
                Op::Access { .. } => {}
                Op::GuestRemap { page, to } => {
                    let va = Gva::new(gva(page));
                    let (_, mut tok) = g.gpt.unmap(&mut g.guest, va, PageSize::K4).unwrap();
                    let t2 = g
                        .gpt
                        .map(
                            &mut g.guest,
                            &mut g.gframes,
                            va,
                            Gpa::new(GPA + to * 0x1000),
                            PageSize::K4,
                            GUEST_LEAF,
                        )
                        .unwrap();
                    tok.merge(t2);
                    if apply {
                        g.mmu.invalidate(&tok, g.ctx.tag);
                    } else {
                        tok.ignore(); // on purpose
                    }
                }
                Op::NestedRemap { page } => {
                    let gpa = Gpa::new(GPA + page * 0x1000);
                    let spa = Spa::new(GPA + page * 0x1000 + HOST_OFFSET + (round << 36));
                    let mut tok = if let Some(t) = g.npt.as_mut() {
                        let (_, mut tok) = t.unmap(&mut g.host, gpa, PageSize::K4).unwrap();
                        let a = LeafAttrs::new(
                            PteFlags::PRESENT
                                | PteFlags::WRITABLE
                                | PteFlags::USER
                                | PteFlags::ACCESSED,
                        );
                        tok.merge(
                            t.map(&mut g.host, &mut g.hframes, gpa, spa, PageSize::K4, a).unwrap(),
                        );
                        tok
                    } else {
                        let t = g.ept.as_mut().unwrap();
                        let (_, mut tok) = t.unmap(&mut g.host, gpa, PageSize::K4).unwrap();
                        let mut a = EptLeafAttrs::RWX_WB;
                        a.flags |= EptFlags::ACCESSED;
                        tok.merge(
                            t.map(&mut g.host, &mut g.hframes, gpa, spa, PageSize::K4, a).unwrap(),
                        );
                        tok
                    };
                    if apply {
                        if ept {
                            let root = g.ctx.nested.root;
                            g.mmu.invalidate_nested(&tok, g.ctx.tag.asid, root);
                        } else {
                            g.mmu.svm_tlb_control(g.ctx.tag.asid, TlbControl::FlushAsid);
                        }
                        tok = mmu_model::PendingInvalidation::none();
                    }
                    tok.ignore(); // applied above, or dropped on purpose
                }
            }
        }

        fn access(g: &mut Guest, page: u64, write: bool) -> GuestAccessResult {
            let kind = if write { AccessKind::Write } else { AccessKind::Read };
            g.access(GuestAddr::Virtual(Gva::new(gva(page))), kind).result
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(32))]
            #[test]
            fn two_d_caches_agree_with_cold_walks(ops in proptest::collection::vec(op(), 1..80), ept: bool) {
                let mut g = rig(ept);
                for (round, op) in ops.iter().enumerate() {
                    if let Op::Access { page, write } = *op {
                        let r = access(&mut g, page, write);
                        prop_assert!(matches!(r, GuestAccessResult::Translated { .. }), "{:?}", r);
                    } else {
                        change(&mut g, op, true, ept, round as u64 + 1);
                    }
                }
                prop_assert_eq!(g.mmu.oracle_mismatches(), &[]);
            }

            #[test]
            fn a_dropped_nested_flush_is_caught(page in 0u64..24, ept: bool, guest_side: bool, to in 24u64..48) {
                let mut g = rig(ept);
                access(&mut g, page, false);
                let op = if guest_side {
                    Op::GuestRemap { page, to }
                } else {
                    Op::NestedRemap { page }
                };
                // The guest page `page` maps GPA page `page`; a nested remap of it must flush.
                change(&mut g, &op, false, ept, 1);
                access(&mut g, page, false);
                prop_assert!(!g.mmu.oracle_mismatches().is_empty());
            }
        }
    }
}
