//! Translation throughput of mmu-model (docs/performance.md "Translation"): the TLB-hit path,
//! full 4-level walks, 2-D walks, and building a 1 TiB direct map split to 4K.
//!
//! Every access goes through `Mmu::access_into` / `Mmu::guest_access_into` (the outcome reused
//! across accesses, as a simulation loop would) with the check stage off (`NoCheck`) and walk
//! references priced by `FlatLatency` (no data-cache model on the path), except
//! `walk_4level/cache`, which prices them through the cache model (`CacheHierarchy`, default
//! preset) as the engine does.
//!
//! `TRANSLATE_DIRECTMAP=0` skips the 1 TiB build (it takes seconds and over a GiB of RSS
//! without the compact table-page storage).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use mmu_model::{
    AccessKind, CacheConfig, CacheHierarchy, Cr3, FlatLatency, GuestAccessOutcome,
    GuestAccessRequest, GuestAddr, GuestContext, GuestMemory, GuestPageTable, GuestPaging,
    LeafAttrs, LinearFrames, Mmu, MmuConfig, NestedContext, NestedKind, NoCheck, NptTable,
    PageTable, Paging, PagingControls, PhysMemTables, Privilege, PteFlags, PteFormat, TlbTag,
};
use sim_core::{Context, Gpa, Gva, Hva, PageSize, PrivLevel, Spa};
use std::hint::black_box;
use std::time::Instant;

#[path = "support/host.rs"]
mod support;
use support::{Host, PAGE_OFFSET, RW_AD, host};

fn run_host(h: &mut Host) -> u64 {
    let mut sum = 0;
    for r in &h.reqs {
        h.mmu.access_into(&mut h.tables, &mut NoCheck, &mut h.lat, r, &mut h.out);
        sum += h.out.cost.get();
    }
    sum
}

fn tlb_hits(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate/tlb_hit");
    // 64 4K pages: fits the 72-entry L1 DTLB of the default (and zen4) configuration.
    for (name, cfg) in [("default", MmuConfig::default()), ("zen4", MmuConfig::zen4())] {
        let mut h = host(&cfg, 64, AccessKind::Read);
        run_host(&mut h);
        let before = h.mmu.stats().tlb_hits;
        run_host(&mut h);
        assert_eq!(h.mmu.stats().tlb_hits - before, 64, "all hits");
        g.throughput(Throughput::Elements(h.reqs.len() as u64));
        g.bench_function(BenchmarkId::new(name, "64x4K"), |b| {
            b.iter(|| black_box(run_host(&mut h)))
        });
    }
    g.finish();
}

/// The TLB level alone (no MMU around it): a lower bound for the hit path.
fn tlb_level(c: &mut Criterion) {
    use mmu_model::{CheckCache, Perms, Tlb, TlbFill};
    let mut g = c.benchmark_group("translate/tlb_level");
    let mut t = Tlb::new(&MmuConfig::default().dtlb).unwrap();
    let vas: Vec<Hva> = (0..64u64).map(|i| Hva::new(PAGE_OFFSET + (i << 12))).collect();
    for (i, va) in vas.iter().enumerate() {
        let fill = TlbFill {
            frame: Spa::new((i as u64) << 12),
            size: PageSize::K4,
            perms: Perms::ALL,
            nested_perms: Perms::ALL,
            global: false,
            dirty: true,
            cache: CheckCache::default(),
        };
        t.fill(*va, TlbTag::HOST, &fill);
    }
    g.throughput(Throughput::Elements(vas.len() as u64));
    g.bench_function("lookup_64x4K", |b| {
        b.iter(|| {
            vas.iter().map(|&va| t.lookup(va, TlbTag::HOST).map_or(0, |h| h.pa.raw())).sum::<u64>()
        })
    });
    let mut h = host(&MmuConfig::default(), 64, AccessKind::Read);
    run_host(&mut h);
    let raws: Vec<u64> = h.reqs.iter().map(|r| r.va.raw()).collect();
    g.bench_function("hierarchy_64x4K", |b| {
        b.iter(|| {
            raws.iter()
                .map(|&va| {
                    let l = h.mmu.tlb_mut().lookup(va, TlbTag::HOST, None, AccessKind::Read);
                    l.hit.map_or(0, |h| h.pa.raw())
                })
                .sum::<u64>()
        })
    });
    g.finish();
}

fn walks_4level(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate/walk_4level");
    // 4096 4K pages swept cyclically through the 72-entry LRU DTLB of the default
    // configuration (no L2 TLB, no PWC): every access is a 4-reference walk and a fill.
    let cfg = MmuConfig::default();
    let mut h = host(&cfg, 4096, AccessKind::Read);
    run_host(&mut h);
    let (w0, r0) = (h.mmu.stats().walks.total(), h.mmu.stats().walk_reads);
    run_host(&mut h);
    assert_eq!(h.mmu.stats().walks.total() - w0, 4096, "every access walks");
    assert_eq!(h.mmu.stats().walk_reads - r0, 4 * 4096, "4 references each");
    g.throughput(Throughput::Elements(h.reqs.len() as u64));
    g.bench_function(BenchmarkId::new("default", "4096x4K"), |b| {
        b.iter(|| black_box(run_host(&mut h)))
    });
    // The same walks with every reference priced through the cache model (default preset,
    // one CPU), as the engine prices them: the "through the cache model".
    let mut caches = CacheHierarchy::new(&CacheConfig::default(), 1).expect("preset is valid");
    run_cached(&mut h, &mut caches);
    let (w0, r0) = (h.mmu.stats().walks.total(), h.mmu.stats().walk_reads);
    run_cached(&mut h, &mut caches);
    assert_eq!(h.mmu.stats().walks.total() - w0, 4096, "every access walks");
    assert_eq!(h.mmu.stats().walk_reads - r0, 4 * 4096, "4 references each");
    g.bench_function(BenchmarkId::new("cache", "4096x4K"), |b| {
        b.iter(|| black_box(run_cached(&mut h, &mut caches)))
    });
    g.finish();
}

/// [`run_host`] with walk references priced by CPU 0 of `caches`.
fn run_cached(h: &mut Host, caches: &mut CacheHierarchy) -> u64 {
    let mut sum = 0;
    let mut lat = caches.cpu(0);
    for r in &h.reqs {
        h.mmu.access_into(&mut h.tables, &mut NoCheck, &mut lat, r, &mut h.out);
        sum += h.out.cost.get();
    }
    sum
}

struct Guest {
    host: PhysMemTables,
    guest: PhysMemTables<Gpa>,
    ctx: GuestContext,
    mmu: Mmu,
    lat: FlatLatency,
    reqs: Vec<GuestAccessRequest>,
    /// Reused by every access.
    out: GuestAccessOutcome,
}

/// A 4-level guest under a 4-level NPT, `pages` 4K guest pages at GVA 0x7f00_0000_0000 →
/// GPA 1 GiB → SPA 5 GiB, every guest table page mapped by 4K NPT leaves.
fn guest(cfg: &MmuConfig, pages: u64) -> Guest {
    let fmt = PteFormat { phys_bits: 52, cbit: mmu_model::CbitPos(None) };
    let mut host = PhysMemTables::new();
    let mut hframes = LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x1_0000_0000));
    let nflags = PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER | PteFlags::ACCESSED;
    let mut npt = NptTable::new(&mut host, &mut hframes, Paging::FourLevel, fmt, nflags).unwrap();
    let mut gt = PhysMemTables::new();
    let mut gframes = LinearFrames::new(Gpa::new(0x10_0000), Gpa::new(0x4000_0000));
    let mut gpt =
        GuestPageTable::new(&mut gt, &mut gframes, Paging::FourLevel, fmt, PteFlags::KERNEL_TABLE)
            .unwrap();
    let gleaf = LeafAttrs::new(
        PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::ACCESSED | PteFlags::DIRTY,
    );
    let nleaf = LeafAttrs::new(gleaf.flags | PteFlags::USER);
    let mut reqs = Vec::new();
    let ctx_v = Context::Guest { vm: 1, vcpu: 0, level: PrivLevel::Vmpl(0) };
    let mut nmap = |host: &mut PhysMemTables, gpa: u64| {
        npt.map(host, &mut hframes, Gpa::new(gpa), Spa::new(gpa + (4 << 30)), PageSize::K4, nleaf)
            .unwrap()
            .ignore(); // fresh
    };
    for i in 0..pages {
        let (gva, gpa) = (0x7f00_0000_0000 + i * 4096, (1 << 30) + i * 4096);
        gpt.map(&mut gt, &mut gframes, Gva::new(gva), Gpa::new(gpa), PageSize::K4, gleaf)
            .unwrap()
            .ignore(); // fresh
        nmap(&mut host, gpa);
        reqs.push(GuestAccessRequest {
            addr: GuestAddr::Virtual(Gva::new(gva + 8)),
            kind: AccessKind::Read,
            privilege: Privilege::Supervisor,
            ctx: ctx_v,
        });
    }
    for i in 0..gframes.allocated() {
        nmap(&mut host, 0x10_0000 + i * 4096);
    }
    let ctx = GuestContext {
        tag: TlbTag { asid: 1, pcid: 0 },
        paging: Some(GuestPaging {
            root: gpt.root(),
            paging: Paging::FourLevel,
            format: fmt,
            controls: PagingControls::default(),
        }),
        nested: NestedContext {
            kind: NestedKind::Npt,
            root: npt.root(),
            paging: Paging::FourLevel,
            format: fmt,
        },
        memory: GuestMemory::Plain,
    };
    let cr3 = Cr3 { root: npt.root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
    let mut mmu = Mmu::new(0, cfg, cr3).unwrap();
    let mut lat = FlatLatency { per_ref: cfg.walk_ref_latency };
    // Any outcome will do as the reused buffer: a non-canonical access makes one.
    let nc = GuestAccessRequest { addr: GuestAddr::Virtual(Gva::new(1 << 63)), ..reqs[0] };
    let out = mmu.guest_access(&mut host, &mut gt, &ctx, &mut NoCheck, &mut lat, &nc);
    Guest { host, guest: gt, ctx, mmu, lat, reqs, out }
}

fn run_guest(g: &mut Guest) -> u64 {
    let mut sum = 0;
    for r in &g.reqs {
        g.mmu.guest_access_into(
            &mut g.host,
            &mut g.guest,
            &g.ctx,
            &mut NoCheck,
            &mut g.lat,
            r,
            &mut g.out,
        );
        sum += g.out.cost.get();
    }
    sum
}

fn walks_2d(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate/walk_2d");
    // 4096 guest pages swept through the default configuration: every access is a cold 4×4
    // 2-D walk (24 references, no nested TLB or PWC).
    let cfg = MmuConfig::default();
    let mut gs = guest(&cfg, 4096);
    run_guest(&mut gs);
    let r0 = gs.mmu.stats().walk_reads;
    run_guest(&mut gs);
    assert_eq!(gs.mmu.stats().walk_reads - r0, 24 * 4096, "24 references each");
    g.throughput(Throughput::Elements(gs.reqs.len() as u64));
    g.bench_function(BenchmarkId::new("default", "4x4_4096x4K"), |b| {
        b.iter(|| black_box(run_guest(&mut gs)))
    });
    // The zen4 preset (guest PWC, nested PWC): the walks start below PWC hits.
    let mut gs = guest(&MmuConfig::zen4(), 4096);
    run_guest(&mut gs);
    g.throughput(Throughput::Elements(gs.reqs.len() as u64));
    g.bench_function(BenchmarkId::new("zen4", "4x4_4096x4K"), |b| {
        b.iter(|| black_box(run_guest(&mut gs)))
    });
    g.finish();
}

fn vm_hwm_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Map 1 TiB at PAGE_OFFSET with 1G leaves, split each to 2M, then each 2M to 4K (as CPA
/// does, one level per split); print the time, the table pages and the peak RSS.
fn directmap_1tib() {
    let hwm0 = vm_hwm_kib();
    let t0 = Instant::now();
    let mut tables = PhysMemTables::new();
    // Table pages from a high physical range (the direct map covers 0..1 TiB).
    let mut frames = LinearFrames::new(Spa::new(1 << 41), Spa::new(1 << 42));
    let fmt = MmuConfig::default().pte_format();
    let mut pt: PageTable =
        PageTable::new(&mut tables, &mut frames, Paging::FourLevel, fmt, PteFlags::KERNEL_TABLE)
            .unwrap();
    let gig = 1u64 << 30;
    let leaf = LeafAttrs { flags: RW_AD.flags | PteFlags::GLOBAL, ..RW_AD };
    for i in 0..1024u64 {
        let va = Hva::new(PAGE_OFFSET + i * gig);
        pt.map(&mut tables, &mut frames, va, Spa::new(i * gig), PageSize::G1, leaf)
            .unwrap()
            .ignore(); // fresh
    }
    for i in 0..1024u64 {
        let va = Hva::new(PAGE_OFFSET + i * gig);
        pt.split(&mut tables, &mut frames, va).unwrap().1.ignore(); // no TLB here
        for j in 0..512u64 {
            let va = Hva::new(va.raw() + j * (2 << 20));
            pt.split(&mut tables, &mut frames, va).unwrap().1.ignore(); // no TLB here
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let counts = pt.leaf_counts();
    assert_eq!(counts[PageSize::K4], 1 << 28);
    let pages = tables.len() as u64;
    let hwm = vm_hwm_kib();
    // Spot check a translation.
    let probe = Hva::new(PAGE_OFFSET + 0x3_1234_5678);
    assert_eq!(pt.lookup(&tables, probe).unwrap().pa(probe), Spa::new(0x3_1234_5678));
    println!(
        "directmap_1tib: 1 TiB split to 4K: {secs:.2} s; {pages} table pages ({:.2} GiB of simulated tables); \
         storage {:.1} MiB ({} compact, {} full pages); VmHWM {} MiB (before: {} MiB)",
        pages as f64 * 4096.0 / f64::from(1u32 << 30),
        tables.storage_bytes() as f64 / f64::from(1u32 << 20),
        tables.compact_pages(),
        pages - tables.compact_pages(),
        hwm.map_or(0, |k| k / 1024),
        hwm0.map_or(0, |k| k / 1024),
    );
    black_box(&tables);
}

criterion_group!(benches, tlb_level, tlb_hits, walks_4level, walks_2d);

fn main() {
    if std::env::var("TRANSLATE_DIRECTMAP").as_deref() != Ok("0") {
        directmap_1tib();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
