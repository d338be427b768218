//! Host-kernel direct-map activity, shared by the workloads that run it beside guests.
//!
//! A kernel stream models ordinary kernel work on one CPU: it keeps a working set of slab pages
//! drawn from the host allocator through [`MemoryServices`] (so they land beside guest folios in
//! the same 2M regions), replaces the oldest page every `slab_churn` accesses, and loads or
//! stores 8 bytes of a random 64-byte object of a random page through the direct map (`phys:`
//! addresses), with `work` non-memory instructions between accesses.

use crate::params::{ParamDoc, ParamError, Params};
use sim_core::event::{Address, AllocKind, MemType};
use sim_core::{Event, MemoryServices, Rng, Spa};
use std::collections::VecDeque;

/// `slab_pages`, documented once for every workload with kernel streams.
pub(crate) const SLAB_PAGES: ParamDoc = ParamDoc {
    name: "slab_pages",
    default: "512",
    doc: "kernel working set per CPU (4K slab pages)",
};

/// `slab_churn`, documented once for every workload with kernel streams.
pub(crate) const SLAB_CHURN: ParamDoc = ParamDoc {
    name: "slab_churn",
    default: "64",
    doc: "kernel accesses between replacing the oldest slab page",
};

/// What every kernel stream of a workload does, read from the workload's parameters
/// `kernel_accesses`, `write_fraction`, `slab_pages`, `slab_churn` and `work`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KernelConfig {
    /// Direct-map accesses per stream.
    pub(crate) accesses: u64,
    /// Stores per million accesses.
    pub(crate) write_ppm: u64,
    /// Slab pages in the working set.
    pub(crate) slab_pages: u64,
    /// Accesses between replacing the oldest page.
    pub(crate) slab_churn: u64,
    /// Non-memory instructions after each access.
    pub(crate) work: u64,
}

impl KernelConfig {
    /// Read the kernel parameters from `p`, with the defaults of `docs`.
    ///
    /// # Errors
    /// [`ParamError::Bad`] for a value out of range.
    pub(crate) fn parse(p: &Params, docs: &[ParamDoc]) -> Result<KernelConfig, ParamError> {
        Ok(KernelConfig {
            accesses: p.u64_in(docs, "kernel_accesses", 0, 1 << 40)?,
            write_ppm: p.fraction_ppm(docs, "write_fraction")?,
            slab_pages: p.u64_in(docs, "slab_pages", 1, 1 << 20)?,
            slab_churn: p.u64_in(docs, "slab_churn", 1, 1 << 30)?,
            work: p.u64_in(docs, "work", 0, 1 << 20)?,
        })
    }
}

/// One CPU's kernel stream.
#[derive(Debug)]
pub(crate) struct KernelStream {
    rng: Rng,
    left: u64,
    pages: VecDeque<Spa>,
    since_churn: u64,
    pending_work: bool,
}

impl KernelStream {
    /// A stream that will make `cfg.accesses` accesses, drawing from `rng`.
    pub(crate) fn new(rng: Rng, cfg: &KernelConfig) -> KernelStream {
        KernelStream {
            rng,
            left: cfg.accesses,
            pages: VecDeque::new(),
            since_churn: 0,
            pending_work: false,
        }
    }

    /// [`crate::Workload::next_work`]: the `work` after an access, which `next` returns next
    /// unless the stream has ended.
    #[inline]
    pub(crate) fn next_work(&mut self, cfg: &KernelConfig) -> Option<u64> {
        if self.left == 0 || !self.pending_work {
            return None;
        }
        self.pending_work = false;
        Some(cfg.work)
    }

    /// The next event, or `None` when the stream has made its accesses (or memory ran out
    /// before it had a page).
    pub(crate) fn next(
        &mut self,
        cfg: &KernelConfig,
        mem: &mut dyn MemoryServices,
    ) -> Option<Event> {
        if self.left == 0 {
            return None;
        }
        if let Some(count) = self.next_work(cfg) {
            return Some(Event::Work { count });
        }
        // Replace the oldest slab page now and then; fill the working set first.
        if (self.pages.len() as u64) < cfg.slab_pages || self.since_churn >= cfg.slab_churn {
            self.since_churn = 0;
            if self.pages.len() as u64 >= cfg.slab_pages
                && let Some(old) = self.pages.pop_front()
            {
                mem.free_pages(old, 0);
                return Some(Event::PageFree { spa: old, order: 0 });
            }
            if let Some(spa) = mem.alloc_pages(0, AllocKind::Slab) {
                self.pages.push_back(spa);
                return Some(Event::PageAlloc { spa, order: 0, kind: AllocKind::Slab });
            }
        }
        if self.pages.is_empty() {
            self.left = 0;
            return None;
        }
        self.left -= 1;
        self.since_churn += 1;
        self.pending_work = cfg.work > 0;
        let n = self.pages.len() as u64;
        let page = self.pages[usize::try_from(self.rng.below(n)).unwrap_or(0)];
        let addr = Address::Spa(Spa::new(page.raw() + self.rng.below(64) * 64));
        Some(if self.rng.below(1_000_000) < cfg.write_ppm {
            Event::Store { addr, size: 8, mt: MemType::Wb }
        } else {
            Event::Load { addr, size: 8 }
        })
    }
}
