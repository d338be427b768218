//! `qemu-process`: a VMM's user process touching guest memory it maps with transparent huge
//! pages (issue #5).
//!
//! One process (`pid`) maps `guest_memory` bytes of guest RAM at `hva_base`, THP-backed: the
//! first touch of each 2M region allocates an order-9 block from the host allocator through
//! [`MemoryServices`] and maps it with one 2M entry (`page-alloc` then
//! `map hva:… phys:… 2M space=proc:PID`), as a THP fault does. Each of `threads` CPUs
//! (`cN proc:PID`) then makes `accesses` 8-byte loads and stores to it, `work` non-memory
//! instructions after each.
//!
//! **Locality** (per thread), an LRU-stack model whose parameters are fitted to the data
//! accesses of a real user process (docs/workloads.md "Fit"):
//!
//! - with probability `stay` the access is to the same 4K page as the previous one (reuse
//!   distance 0);
//! - else, with probability `new_page`, to a page drawn afresh: in the current 2M region with
//!   probability `region_stay` (a uniform page of it), else in a uniformly drawn region;
//! - else to the page at depth `d` of the thread's stack of its last `reuse_window` distinct
//!   pages, `d` in `1..=reuse_window` with `P(d) ∝ reuse_decay^(d-1)` (a new page while the
//!   stack is shallower than `d`).
//!
//! The offset inside the page is a uniform 8-byte-aligned one.
//!
//! **Not generated:** process exit (unmap and free), khugepaged collapses and THP splits,
//! 4K fallbacks when no order-9 block is free (the thread's stream ends instead).

use crate::params::{ParamDoc, ParamError, Params};
use crate::{Workload, WorkloadInfo};
use sim_core::event::{Address, AllocKind, MemType, Space};
use sim_core::{Agent, Context, Event, Hva, MemoryServices, PageSize, Rng, Spa};

const PAGE: u64 = 4096;
const REGION: u64 = 2 << 20;
const PAGES_PER_REGION: u64 = REGION / PAGE;

const PARAMS: &[ParamDoc] = &[
    ParamDoc { name: "pid", default: "1000", doc: "the process's PID (its address space)" },
    ParamDoc {
        name: "threads",
        default: "1",
        doc: "threads touching guest memory, one CPU each (CPUs 0..threads)",
    },
    ParamDoc {
        name: "guest_memory",
        default: "1G",
        doc: "guest RAM mapped by the process (bytes, a multiple of 2M)",
    },
    ParamDoc {
        name: "hva_base",
        default: "0x7f0000000000",
        doc: "host-virtual address of guest RAM (2M-aligned, below the canonical limit)",
    },
    ParamDoc { name: "accesses", default: "1000000", doc: "accesses per thread" },
    ParamDoc {
        name: "stay",
        default: "0.6048",
        doc: "probability an access is to the previous access's page (reuse distance 0). \
              Fitted: the lackey sort capture's share of distance-0 data accesses",
    },
    ParamDoc {
        name: "new_page",
        default: "0.000066",
        doc: "probability an access draws a page afresh. Fitted: the capture's first touches \
              (155 pages in 2,332,230 data accesses)",
    },
    ParamDoc {
        name: "reuse_window",
        default: "16",
        doc: "distinct recent pages a reuse picks among (1..=256). Fitted: 99.8% of the \
              capture's reuse distances are at most 16",
    },
    ParamDoc {
        name: "reuse_decay",
        default: "0.8",
        doc: "ratio of the probabilities of stack depths d+1 and d (0 < x <= 1). Fitted: \
              minimises the capture's KS distance over 0.70..0.80 (0.026 at 0.8)",
    },
    ParamDoc {
        name: "region_stay",
        default: "0.95",
        doc: "probability a fresh page is in the current 2M region. Unsourced: the capture's \
              regions are sort's VMAs, not guest RAM (it has 22 pages per region on average, \
              which 0.95 roughly gives)",
    },
    ParamDoc {
        name: "write_fraction",
        default: "0.39",
        doc: "stores among accesses. Fitted: the capture's S and M records over its data \
              records (911,500 / 2,332,230)",
    },
    ParamDoc {
        name: "work",
        default: "2",
        doc: "non-memory instructions after each access. Fitted: the capture has 4,647,171 \
              instructions for 2,332,230 data records (2.0 each)",
    },
];

/// Registry entry.
pub(crate) const INFO: WorkloadInfo = WorkloadInfo {
    name: "qemu-process",
    summary: "a VMM process touching THP-mapped guest memory (2M user mappings from order-9 \
              blocks)",
    description: "Guest RAM mapped in a host process with transparent huge pages: each 2M \
                  region's first touch allocates an order-9 block and maps it 2M in the \
                  process; threads then load and store it with an LRU-stack locality fitted \
                  to a real user-process capture (page reuse distance).",
    params: PARAMS,
    build,
    preset: None,
};

#[derive(Debug, Clone)]
struct Config {
    pid: u32,
    hva_base: u64,
    regions: u64,
    accesses: u64,
    stay_below: u64,
    /// `stay_below + new_page` of 2^64 (saturating).
    new_below: u64,
    region_stay_below: u64,
    /// A store when 20 random bits are below this (`write_fraction` of 2^20).
    write_below_20: u64,
    /// Cumulative depth thresholds for depths 1..=window, as fractions of 2^64.
    depth_cum: Vec<u64>,
    work: u64,
}

fn fraction(p: &Params, name: &str) -> Result<f64, ParamError> {
    let t = p.raw(PARAMS, name);
    let v: f64 = t.parse().map_err(|_| Params::bad(name, t, "not a number"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(Params::bad(name, t, "must be in 0..=1"));
    }
    Ok(v)
}

/// `x` (in 0..=1) of 2^64, saturating.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
fn of_2_64(x: f64) -> u64 {
    if x >= 1.0 { u64::MAX } else { (x * 18_446_744_073_709_551_616.0) as u64 }
}

fn build(p: &Params, seed: u64) -> Result<Box<dyn Workload>, ParamError> {
    let pid = u32::try_from(p.u64_in(PARAMS, "pid", 1, u64::from(u32::MAX))?).unwrap_or(1);
    let threads = p.u64_in(PARAMS, "threads", 1, 255)?;
    let guest_memory = p.size_in(PARAMS, "guest_memory", REGION, 1 << 46)?;
    if !guest_memory.is_multiple_of(REGION) {
        return Err(Params::bad(
            "guest_memory",
            p.raw(PARAMS, "guest_memory"),
            "must be a multiple of 2M",
        ));
    }
    let hva_base = p.u64_in(PARAMS, "hva_base", 0, 1 << 47)?;
    if !hva_base.is_multiple_of(REGION) || hva_base + guest_memory > 1 << 47 {
        return Err(Params::bad(
            "hva_base",
            p.raw(PARAMS, "hva_base"),
            "must be 2M-aligned with guest memory below 2^47",
        ));
    }
    let stay = fraction(p, "stay")?;
    let new_page = fraction(p, "new_page")?;
    if stay + new_page > 1.0 {
        return Err(Params::bad("new_page", p.raw(PARAMS, "new_page"), "stay + new_page > 1"));
    }
    let decay = fraction(p, "reuse_decay")?;
    if decay <= 0.0 {
        return Err(Params::bad("reuse_decay", p.raw(PARAMS, "reuse_decay"), "must be > 0"));
    }
    let window = p.u64_in(PARAMS, "reuse_window", 1, 256)?;
    let weights: Vec<f64> =
        (0..window).map(|d| decay.powi(i32::try_from(d).unwrap_or(0))).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let depth_cum = weights
        .iter()
        .map(|w| {
            acc += w / total;
            of_2_64(acc)
        })
        .collect::<Vec<_>>();
    let cfg = Config {
        pid,
        hva_base,
        regions: guest_memory / REGION,
        accesses: p.u64_in(PARAMS, "accesses", 0, 1 << 40)?,
        stay_below: of_2_64(stay),
        new_below: of_2_64(stay + new_page),
        region_stay_below: of_2_64(fraction(p, "region_stay")?),
        write_below_20: (p.fraction_ppm(PARAMS, "write_fraction")? << 20).div_ceil(1_000_000),
        depth_cum,
        work: p.u64_in(PARAMS, "work", 0, 1 << 20)?,
    };
    let rng = Rng::new(seed);
    let agents: Vec<Agent> = (0..threads)
        .map(|c| Agent::Cpu {
            cpu: u32::try_from(c).unwrap_or(u32::MAX),
            ctx: Context::HostProcess(pid),
        })
        .collect();
    let threads = (0..threads)
        .map(|t| Thread {
            rng: rng.fork(t),
            left: cfg.accesses,
            page: None,
            recent: Vec::with_capacity(usize::try_from(window).unwrap_or(1)),
            pending: None,
            pending_access: None,
            pending_work: false,
        })
        .collect();
    let regions = vec![None; usize::try_from(cfg.regions).unwrap_or(0)];
    Ok(Box::new(QemuProcess { agents, cfg, threads, regions }))
}

#[derive(Debug)]
struct Thread {
    rng: Rng,
    left: u64,
    /// The current page (index in guest memory), once there is one.
    page: Option<u64>,
    /// Distinct recent pages, most recent first (at most `reuse_window`).
    recent: Vec<u64>,
    /// The map of a freshly allocated region, to go out after its `page-alloc`.
    pending: Option<Event>,
    /// The access that touched an unmapped region, to go out after its map.
    pending_access: Option<Event>,
    pending_work: bool,
}

impl Thread {
    /// The page of the next access, updating the stack; `r` is a fresh draw (its high bits
    /// decide stay / fresh / reuse).
    #[inline]
    fn next_page(&mut self, cfg: &Config, r: u64) -> u64 {
        let cur = match self.page {
            Some(p) if r < cfg.stay_below => return p,
            Some(p) => p,
            None => {
                let p = self.rng.below(cfg.regions * PAGES_PER_REGION);
                self.touch(p, cfg);
                return p;
            }
        };
        if r >= cfg.new_below {
            // A reuse at depth d >= 1, from a fresh draw over the depth distribution.
            let u = self.rng.next_u64();
            let d = 1 + cfg.depth_cum.iter().position(|&c| u < c).unwrap_or(0);
            if d < self.recent.len() {
                let p = self.recent[d];
                self.recent[..=d].rotate_right(1);
                self.page = Some(p);
                return p;
            }
        }
        let p = if self.rng.next_u64() < cfg.region_stay_below {
            (cur / PAGES_PER_REGION) * PAGES_PER_REGION + self.rng.below(PAGES_PER_REGION)
        } else {
            self.rng.below(cfg.regions) * PAGES_PER_REGION + self.rng.below(PAGES_PER_REGION)
        };
        self.touch(p, cfg);
        p
    }

    /// The queued map, then the access that needed it.
    #[inline(never)]
    fn queued(&mut self, cfg: &Config) -> Option<Event> {
        if let Some(e) = self.pending.take() {
            return Some(e);
        }
        let e = self.pending_access.take();
        self.pending_work = cfg.work > 0;
        e
    }

    /// Make `p` the most recent page.
    fn touch(&mut self, p: u64, cfg: &Config) {
        self.page = Some(p);
        if let Some(i) = self.recent.iter().position(|&q| q == p) {
            self.recent[..=i].rotate_right(1);
        } else {
            if self.recent.len() < cfg.depth_cum.len() + 1 {
                self.recent.push(p);
            } else if let Some(last) = self.recent.last_mut() {
                *last = p;
            }
            let n = self.recent.len();
            self.recent[..n].rotate_right(1);
        }
    }
}

#[derive(Debug)]
struct QemuProcess {
    agents: Vec<Agent>,
    cfg: Config,
    threads: Vec<Thread>,
    /// The block backing each 2M region of guest memory, once touched.
    regions: Vec<Option<Spa>>,
}

impl Workload for QemuProcess {
    fn agents(&self) -> &[Agent] {
        &self.agents
    }

    fn next(&mut self, stream: usize, mem: &mut dyn MemoryServices) -> Option<Event> {
        let cfg = &self.cfg;
        let t = &mut self.threads[stream];
        // The `work` after an access comes first: it is half of the events, and nothing else
        // is queued while it is pending.
        if t.pending_work {
            t.pending_work = false;
            return Some(Event::Work { count: cfg.work });
        }
        if t.pending.is_some() || t.pending_access.is_some() {
            return t.queued(cfg);
        }
        if t.left == 0 {
            return None;
        }
        t.left -= 1;
        // One draw serves the common case: its high bits choose the page (stay, fresh, reuse),
        // its low 9 bits the offset and the next 20 the store decision (independent of the
        // page choice but for a 2^-35 bias).
        let r = t.rng.next_u64();
        let page = t.next_page(cfg, r);
        let va = cfg.hva_base + page * PAGE + ((r & 0x1ff) << 3);
        let addr = Address::Hva(Hva::new(va));
        let access = if ((r >> 9) & 0xf_ffff) < cfg.write_below_20 {
            Event::Store { addr, size: 8, mt: MemType::Wb }
        } else {
            Event::Load { addr, size: 8 }
        };
        let region_no = page / PAGES_PER_REGION;
        let region = usize::try_from(region_no).unwrap_or(0);
        if self.regions[region].is_some() {
            t.pending_work = cfg.work > 0;
            return Some(access);
        }
        // First touch of the region: a THP fault allocates an order-9 block and maps it.
        let Some(spa) = mem.alloc_pages(9, AllocKind::Guest) else {
            t.left = 0;
            return None;
        };
        self.regions[region] = Some(spa);
        t.pending = Some(Event::Map {
            va: Address::Hva(Hva::new(cfg.hva_base + region_no * REGION)),
            pa: Address::Spa(spa),
            size: PageSize::M2,
            space: Space::Process(cfg.pid),
            w: true,
            x: false,
            user: true,
            enc: false,
        });
        t.pending_access = Some(access);
        Some(Event::PageAlloc { spa, order: 9, kind: AllocKind::Guest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NullMemory;
    use crate::locality::{counts, ks, ks_sorted_weighted, pages_per_region, reuse_distances};
    use crate::testutil::{allocations, drain};
    use std::collections::BTreeMap;

    fn params(items: &[&str]) -> Params {
        Params::parse(items.iter().copied()).unwrap()
    }

    #[test]
    fn same_seed_same_stream_different_seed_different() {
        let p = params(&["accesses=5000", "threads=2", "guest_memory=64M"]);
        assert_eq!(drain(&INFO, &p, 1), drain(&INFO, &p, 1));
        assert_ne!(drain(&INFO, &p, 1), drain(&INFO, &p, 2));
    }

    /// Every access is inside guest memory, in a region mapped 2M before it from a distinct
    /// order-9 block; each region is mapped once.
    #[test]
    fn every_access_follows_its_regions_2m_map() {
        let p = params(&["accesses=20000", "threads=2", "guest_memory=32M", "new_page=0.01"]);
        let ev = drain(&INFO, &p, 5);
        let base = 0x7f00_0000_0000u64;
        let mut mapped = BTreeMap::new();
        let mut blocks = BTreeMap::new();
        let mut n = 0;
        for (s, a, e) in &ev {
            assert_eq!(
                *a,
                Agent::Cpu { cpu: u32::try_from(*s).unwrap(), ctx: Context::HostProcess(1000) }
            );
            match e {
                Event::PageAlloc { spa, order: 9, kind: AllocKind::Guest } => {
                    assert!(spa.raw().is_multiple_of(REGION));
                    assert!(blocks.insert(spa.raw(), false).is_none());
                }
                Event::Map { va, pa, size: PageSize::M2, space: Space::Process(1000), .. } => {
                    let (Address::Hva(v), Address::Spa(p)) = (va, pa) else { panic!("{e:?}") };
                    assert_eq!(blocks.insert(p.raw(), true), Some(false), "map before alloc");
                    assert!(mapped.insert(v.raw(), p.raw()).is_none(), "mapped twice");
                }
                Event::Load { addr: Address::Hva(v), size: 8 }
                | Event::Store { addr: Address::Hva(v), size: 8, .. } => {
                    let v = v.raw();
                    assert!((base..base + (32 << 20)).contains(&v), "{v:#x}");
                    assert!(mapped.contains_key(&(v & !(REGION - 1))), "{v:#x} unmapped");
                    n += 1;
                }
                Event::Work { count: 2 } => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(n, 40000);
        assert!(mapped.len() > 1);
    }

    #[test]
    fn bad_params_are_rejected() {
        for (bad, name) in [
            (&["guest_memory=3M"][..], "guest_memory"),
            (&["hva_base=0x1000"][..], "hva_base"),
            (&["stay=0.9", "new_page=0.2"][..], "new_page"),
            (&["reuse_decay=0"][..], "reuse_decay"),
        ] {
            match INFO.instantiate(&params(bad), 0) {
                Err(ParamError::Bad { name: n, .. }) => assert_eq!(n, name, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn steady_state_allocates_nothing() {
        let mut w = INFO.instantiate(&params(&["accesses=100000000"]), 1).unwrap();
        let mut mem = NullMemory::default();
        for _ in 0..100_000 {
            w.next(0, &mut mem);
        }
        let before = allocations();
        for _ in 0..1_000_000 {
            w.next(0, &mut mem);
        }
        assert_eq!(allocations(), before);
    }

    /// The capture's reuse-distance histogram and pages per 2M region
    /// (workloads/tests/data/lackey-sort-locality.txt).
    fn capture() -> (Vec<(u64, u64)>, Vec<u64>) {
        let text = include_str!("../tests/data/lackey-sort-locality.txt");
        let (mut reuse, mut regions) = (Vec::new(), Vec::new());
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                ["reuse", "cold", n] => reuse.push((u64::MAX, n.parse().unwrap())),
                ["reuse", d, n] => reuse.push((d.parse().unwrap(), n.parse().unwrap())),
                ["region", p] => regions.push(p.parse().unwrap()),
                _ => panic!("{l}"),
            }
        }
        (reuse, regions)
    }

    /// The fitted defaults reproduce the capture's page reuse distances within a
    /// Kolmogorov–Smirnov distance of 0.1 (pages per 2M region is printed, not asserted: the
    /// capture's regions are sort's VMAs, see docs/workloads.md "Fit"). See: #5
    #[test]
    fn reuse_distance_fits_the_capture() {
        let (cap_reuse, cap_regions) = capture();
        let mut w = INFO.instantiate(&Params::default(), 3).unwrap();
        let mut mem = NullMemory::default();
        let mut addrs = Vec::new();
        while let Some(e) = w.next(0, &mut mem) {
            if let Event::Load { addr, .. } | Event::Store { addr, .. } = e {
                addrs.push(addr.raw());
            }
        }
        let mut d = reuse_distances(&addrs);
        d.sort_unstable();
        let k_reuse = ks_sorted_weighted(&cap_reuse, &counts(&d));
        let k_region = ks(&cap_regions, &pages_per_region(&addrs));
        eprintln!(
            "qemu-process KS: reuse {k_reuse:.4}; pages per 2M region {k_region:.4} \
             (capture {cap_regions:?}, generated {:?})",
            pages_per_region(&addrs)
        );
        assert!(k_reuse <= 0.1, "{k_reuse}");
        // A model without reuse (every move a fresh page) is far from the capture.
        let mut w = INFO.instantiate(&params(&["new_page=0.3952", "accesses=200000"]), 3).unwrap();
        let mut addrs = Vec::new();
        while let Some(e) = w.next(0, &mut mem) {
            if let Event::Load { addr, .. } | Event::Store { addr, .. } = e {
                addrs.push(addr.raw());
            }
        }
        let mut d = reuse_distances(&addrs);
        d.sort_unstable();
        assert!(ks_sorted_weighted(&cap_reuse, &counts(&d)) > 0.3);
    }
}
