//! `snp-churn`: SNP guests converting pages between private and shared while host kernel CPUs
//! work through the direct map, all memory coming from the one host allocator (issue #4
//! item 7).
//!
//! Streams 0..`kernel_cpus` (CPUs 0.., host kernel) are the kernel streams of `snp-launch`
//! (slab pages from the allocator, 8-byte loads and stores through the direct map, churned).
//!
//! Streams `kernel_cpus`.. are the guest CPUs, one stream each, numbered after the kernel CPUs.
//! Guest `g` (VM `g+1`, ASID `first_asid+g`) runs on guest CPU `g % guest_cpus`. A guest CPU's
//! stream changes context ([`Workload::agent_of_last`]) between its host kernel (`cN host`) and
//! the guest it runs (`cN vmV/v0`):
//!
//! 1. **Launch**, as the host kernel (KVM and the VMM; spec/snp.md §4.5), when the CPU first
//!    turns to the guest: `vm-create snp vm=V asid=A memory=guest_memory`,
//!    `snp-fw launch-start vm=V`, `snp-fw launch-update vm=V gpa=0x0 pages=IMAGE` (the GPA
//!    form: KVM populates the range from guest_memfd, makes it private and the firmware
//!    validates and measures it; omitted when `image` is 0), `snp-fw launch-finish vm=V`,
//!    `vmrun vm=V vcpu=0`.
//! 2. **Boot**, as the guest: `pvalidate gpa:ADDR validate` for every 4K page of the working
//!    set above the image (the image is already validated by the firmware), then the initial
//!    shared pool (the top `shared_fraction` of the working set, one contiguous range like a
//!    SWIOTLB pool) is made shared in GHCB requests of at most 253 pages, each page rescinded
//!    first: `pvalidate gpa:ADDR` (validate=0) per page, then `psc shared GPA pages=N`.
//! 3. **Run**, as the guest: `accesses` 8-byte loads and stores over the working set, each
//!    followed by `work` non-memory instructions. Every `psc_interval` accesses one conversion
//!    of a run of up to `psc_batch` contiguous pages, in the Linux guest's order (spec/snp.md
//!    §4.5): private→shared `pvalidate gpa:ADDR` (rescind) per page, then `psc shared`;
//!    shared→private `psc private`, then `pvalidate gpa:ADDR validate` per page. The direction
//!    keeps the shared pages near their target: to shared while at or below it, to private
//!    while above (so with `psc_batch=1` the directions alternate). The run starts at the first
//!    page in the right state at or after a uniformly drawn page of the convertible range;
//!    image pages are never converted.
//!
//! With more guests than guest CPUs, a CPU runs one guest for `slice` accesses, then turns to
//! its next unfinished guest: it launches it if this is its first turn, else issues `vmrun
//! vm=V vcpu=0` as its host kernel, and continues as that guest.
//!
//! **Guest-physical accesses.** The guest runs without paging: its accesses, PVALIDATE operands
//! and PSC requests name guest-physical addresses (`gpa:`), so the nested walk alone translates
//! them and no guest page table is modelled. A private access carries the C-bit (bit
//! `cbit_pos` of the GPA, which must equal the machine's `mmu.cbit_pos`); a shared access has
//! it clear. PVALIDATE's operand is written without the C-bit: the instruction ignores it, and
//! a PSC request names a GFN, which has none.
//!
//! **Access pattern** (Unsourced: a generic locality model, not fitted to a measured guest):
//! sequential runs over 64-byte lines (each access 64 bytes after the previous one, wrapping at
//! the end of the working set) whose lengths are uniform in 1..=2·`seq_lines`−1 (mean
//! `seq_lines`), each starting at a uniformly drawn 8-byte-aligned address of the working set.
//!
//! **Cost.** Steady-state generation allocates nothing. An access costs a constant (one bitmap
//! test); a conversion finds its page through the shared-page bitmap's summaries
//! ([`crate::pagebits`]), at most one pass over one word per 4,096 pages. Per guest the state is
//! that bitmap: one bit per 4K page of the working set above the image.

use crate::kernel::{self, KernelConfig, KernelStream};
use crate::pagebits::PageBits;
use crate::params::{ParamDoc, ParamError, Params};
use crate::{Workload, WorkloadInfo};
use sim_core::event::{Address, MemType, PscOp, SnpFwCmd, VmKind};
use sim_core::{Agent, Event, Gpa, MemoryServices, PageSize, Rng};
use std::collections::VecDeque;

const PAGE: u64 = 4096;

/// Most entries of one GHCB NAE page-state-change request (spec/snp.md §4.5).
pub(crate) const PSC_MAX_PAGES: u64 = 253;

const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "guests",
        default: "4",
        doc: "SNP guests; guest g is VM g+1 with ASID first_asid+g, on guest CPU g % guest_cpus",
    },
    ParamDoc {
        name: "guest_memory",
        default: "256M",
        doc: "memory per guest (bytes, a multiple of 4K), given to vm-create",
    },
    ParamDoc {
        name: "working_set",
        default: "16M",
        doc: "guest-physical bytes each guest accesses, from GPA 0 (a multiple of 4K, at most \
              guest_memory). Unsourced: a modest working set (4,096 pages) that keeps the \
              per-guest bitmap and boot short",
    },
    ParamDoc {
        name: "image",
        default: "1M",
        doc: "initial image at GPA 0 (bytes, rounded up to 4K pages) measured by \
              SNP_LAUNCH_UPDATE and validated by firmware; smaller than working_set; never \
              converted",
    },
    ParamDoc {
        name: "guest_cpus",
        default: "2",
        doc: "CPUs running guests, numbered after the kernel CPUs (at most guests are used); \
              guests beyond them are time-sliced",
    },
    ParamDoc {
        name: "kernel_cpus",
        default: "2",
        doc: "CPUs running kernel direct-map activity (CPUs 0..kernel_cpus)",
    },
    ParamDoc {
        name: "accesses",
        default: "100000",
        doc: "guest accesses per guest, after its boot",
    },
    ParamDoc {
        name: "psc_interval",
        default: "1000",
        doc: "guest accesses between two page-state changes of a guest (0: none after boot). \
              Default: issue #4's \"at least one page-state change per 1,000 accesses\"",
    },
    ParamDoc {
        name: "psc_batch",
        default: "1",
        doc: "most pages per conversion: a run of contiguous pages in the same state, one GHCB \
              PSC request (1..=253, the GHCB limit)",
    },
    ParamDoc {
        name: "shared_fraction",
        default: "0.1",
        doc: "fraction of the working set kept shared (rounded to pages, at most the pages \
              above the image). Unsourced: stands for SWIOTLB bounce buffers and virtio rings",
    },
    ParamDoc {
        name: "write_fraction",
        default: "0.3",
        doc: "fraction of guest and kernel accesses that are stores. Unsourced: a plausible \
              load/store mix",
    },
    ParamDoc {
        name: "seq_lines",
        default: "16",
        doc: "mean length of a guest's sequential run, in 64-byte lines (uniform in \
              1..=2*seq_lines-1). Unsourced: a generic locality model",
    },
    ParamDoc {
        name: "slice",
        default: "10000",
        doc: "guest accesses a CPU runs one guest before turning to its next guest. \
              Unsourced: short enough that each guest runs in several slices with the default \
              accesses",
    },
    ParamDoc {
        name: "work",
        default: "20",
        doc: "non-memory instructions after each guest and kernel access",
    },
    ParamDoc {
        name: "first_asid",
        default: "1",
        doc: "ASID of the first guest (SNP ASIDs start at 1)",
    },
    ParamDoc {
        name: "cbit_pos",
        default: "51",
        doc: "C-bit position in a private access's GPA; must equal the machine's mmu.cbit_pos",
    },
    ParamDoc {
        name: "kernel_accesses",
        default: "200000",
        doc: "direct-map accesses per kernel CPU (default: as many as a guest CPU makes with \
              the other defaults)",
    },
    kernel::SLAB_PAGES,
    kernel::SLAB_CHURN,
];

/// Registry entry.
pub(crate) const INFO: WorkloadInfo = WorkloadInfo {
    name: "snp-churn",
    summary: "SNP guests converting pages private<->shared while kernel CPUs work through the \
              direct map",
    description: "Each guest is launched (guest_memfd-backed), validates its working set and \
                  then, every psc_interval accesses, converts pages between private and shared \
                  in the Linux guest's order (PVALIDATE rescind before PSC shared; PSC private \
                  before PVALIDATE), so the host keeps making pages private and shared beside \
                  the kernel's slab pages. Guests beyond the guest CPUs are time-sliced.",
    params: PARAMS,
    build,
    preset: None,
};

fn build(p: &Params, seed: u64) -> Result<Box<dyn Workload>, ParamError> {
    let guests = p.u64_in(PARAMS, "guests", 0, 1024)?;
    // A value that parsed but does not fit the others: name it, quote it as given, say why.
    let ensure = |ok: bool, name: &str, why: String| {
        if ok { Ok(()) } else { Err(Params::bad(name, p.raw(PARAMS, name), why)) }
    };
    let guest_memory = p.size_in(PARAMS, "guest_memory", PAGE, 1 << 40)?;
    ensure(guest_memory.is_multiple_of(PAGE), "guest_memory", "must be a multiple of 4K".into())?;
    let working_set = p.size_in(PARAMS, "working_set", PAGE, guest_memory)?;
    ensure(working_set.is_multiple_of(PAGE), "working_set", "must be a multiple of 4K".into())?;
    let ws_pages = working_set / PAGE;
    let image_pages = p.size_in(PARAMS, "image", 0, 1 << 40)?.div_ceil(PAGE);
    ensure(
        image_pages < ws_pages,
        "image",
        format!(
            "must be smaller than working_set ({working_set} bytes): the pages above the image \
             are the ones converted"
        ),
    )?;
    let convertible = ws_pages - image_pages;
    let shared_ppm = p.fraction_ppm(PARAMS, "shared_fraction")?;
    let target_shared = (ws_pages * shared_ppm + 500_000) / 1_000_000;
    ensure(
        target_shared <= convertible,
        "shared_fraction",
        format!(
            "{target_shared} shared pages do not fit in the {convertible} pages above the image"
        ),
    )?;
    let cbit_pos = p.u64_in(PARAMS, "cbit_pos", 12, 51)?;
    ensure(
        guest_memory <= 1 << cbit_pos,
        "cbit_pos",
        format!(
            "the C-bit must lie above every guest-physical address (guest_memory {guest_memory} bytes)"
        ),
    )?;
    let kernel_cpus = p.u64_in(PARAMS, "kernel_cpus", 0, 255)?;
    let guest_cpus = p.u64_in(PARAMS, "guest_cpus", 1, 255)?.min(guests);
    let kcfg = KernelConfig::parse(p, PARAMS)?;
    let cfg = GuestConfig {
        image_pages,
        accesses: p.u64_in(PARAMS, "accesses", 0, 1 << 40)?,
        psc_interval: p.u64_in(PARAMS, "psc_interval", 0, 1 << 40)?,
        psc_batch: p.u64_in(PARAMS, "psc_batch", 1, PSC_MAX_PAGES)?,
        seq_lines: p.u64_in(PARAMS, "seq_lines", 1, 1 << 20)?,
        slice: p.u64_in(PARAMS, "slice", 1, 1 << 40)?,
        write_below: write_threshold(kcfg.write_ppm),
        work: kcfg.work,
        cbit: 1 << cbit_pos,
        destroy: false,
    };
    let first_asid = p.u64_in(PARAMS, "first_asid", 1, 1 << 20)?;
    let cpu_of = |i: u64| u32::try_from(i).unwrap_or(u32::MAX);
    let rng = Rng::new(seed);
    let mut agents: Vec<Agent> = (0..kernel_cpus).map(|c| Agent::host(cpu_of(c))).collect();
    let kernel = (0..kernel_cpus).map(|c| KernelStream::new(rng.fork(c), &kcfg)).collect();
    let sizes = Sizes { memory: guest_memory, ws_bytes: working_set, target_shared };
    let cpus = round_robin_guests(kernel_cpus, guest_cpus, guests, first_asid, sizes, &cfg, &rng);
    agents.extend(cpus.iter().map(|c| c.host));
    Ok(Box::new(GuestsWithKernel { last: agents.clone(), agents, cfg, kcfg, kernel, cpus }))
}

/// Guest CPUs `first_cpu..first_cpu + guest_cpus`, with guest `g` (VM `g + 1`, ASID
/// `first_asid + g`, the RNG fork `1 << 32 | g`) on CPU `first_cpu + g % guest_cpus`, every
/// guest of `sizes`, all present from the start.
pub(crate) fn round_robin_guests(
    first_cpu: u64,
    guest_cpus: u64,
    guests: u64,
    first_asid: u64,
    sizes: Sizes,
    cfg: &GuestConfig,
    rng: &Rng,
) -> Vec<GuestCpu> {
    let cpu_of = |i: u64| u32::try_from(i).unwrap_or(u32::MAX);
    (0..guest_cpus)
        .map(|i| {
            let list = (i..guests)
                .step_by(usize::try_from(guest_cpus).unwrap_or(1))
                .map(|g| {
                    let vm = cpu_of(g + 1);
                    Guest::new(
                        vm,
                        cpu_of(first_asid + g),
                        Agent::guest(cpu_of(first_cpu + i), vm, 0),
                        sizes,
                        0,
                        cfg,
                        rng.fork((1 << 32) | g),
                    )
                })
                .collect();
            GuestCpu::new(Agent::host(cpu_of(first_cpu + i)), list, cfg)
        })
        .collect()
}

/// `ppm` millionths of 2^64, saturating at `u64::MAX` (a store always, bar one value in 2^64).
pub(crate) fn write_threshold(ppm: u64) -> u64 {
    u64::try_from((u128::from(ppm) << 64) / 1_000_000).unwrap_or(u64::MAX)
}

/// What every guest does (shared with `multi-tenant`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestConfig {
    pub(crate) image_pages: u64,
    /// Accesses of a guest (`multi-tenant` draws each guest's own).
    pub(crate) accesses: u64,
    pub(crate) psc_interval: u64,
    pub(crate) psc_batch: u64,
    pub(crate) seq_lines: u64,
    pub(crate) slice: u64,
    /// A store when a random `u64` is below this (`write_fraction` of 2^64).
    pub(crate) write_below: u64,
    pub(crate) work: u64,
    /// The C-bit, as a mask.
    pub(crate) cbit: u64,
    /// Destroy a guest (`vm-destroy`) when it has made its accesses.
    pub(crate) destroy: bool,
}

/// The sizes of one guest.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Guest memory (bytes), given to `vm-create`.
    pub(crate) memory: u64,
    /// Bytes accessed from GPA 0 (a multiple of 4K, above the image).
    pub(crate) ws_bytes: u64,
    /// Shared pages kept (the target of the conversions' direction).
    pub(crate) target_shared: u64,
}

/// Where a guest is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not created yet.
    Unlaunched,
    /// Booting: validating page `.0` (a page index in the working set) and those above it.
    Validating(u64),
    /// Booting: making the initial shared pool shared from convertible page `.0` on.
    Sharing(u64),
    /// Making its accesses (done when none are left).
    Running,
    /// Destroyed after its accesses (`GuestConfig::destroy`).
    Gone,
}

#[derive(Debug)]
pub(crate) struct Guest {
    vm: u32,
    sizes: Sizes,
    /// When it arrives, in accesses made by its CPU (0: at once).
    arrive: u64,
    asid: u32,
    agent: Agent,
    phase: Phase,
    /// Accesses left.
    left: u64,
    since_psc: u64,
    /// Bit `i`: page `image_pages + i` of the working set is shared (else private).
    shared: PageBits,
    shared_count: u64,
    /// Next access (guest-physical, without the C-bit).
    addr: u64,
    /// Accesses left in the current sequential run.
    run_left: u64,
    rng: Rng,
}

impl Guest {
    /// Guest VM `vm` with `asid`, issuing as `agent`, arriving when its CPU has made `arrive`
    /// accesses, making `accesses` accesses.
    pub(crate) fn new(
        vm: u32,
        asid: u32,
        agent: Agent,
        sizes: Sizes,
        arrive: u64,
        cfg: &GuestConfig,
        rng: Rng,
    ) -> Guest {
        let convertible = sizes.ws_bytes / PAGE - cfg.image_pages;
        Guest {
            vm,
            sizes,
            arrive,
            asid,
            agent,
            phase: Phase::Unlaunched,
            left: cfg.accesses,
            since_psc: 0,
            shared: PageBits::new(usize::try_from(convertible).unwrap_or(0)),
            shared_count: 0,
            addr: 0,
            run_left: 0,
            rng,
        }
    }

    /// Set the accesses it makes (before it starts).
    pub(crate) fn set_accesses(&mut self, n: u64) {
        self.left = n;
    }

    fn done(&self) -> bool {
        self.phase == Phase::Gone || (self.phase == Phase::Running && self.left == 0)
    }

    /// The GPA of convertible page `i`.
    fn gpa(cfg: &GuestConfig, i: u64) -> Gpa {
        Gpa::new((cfg.image_pages + i) * PAGE)
    }

    fn pvalidate(&self, gpa: Gpa, validate: bool) -> (Agent, Event) {
        (self.agent, Event::Pvalidate { addr: Address::Gpa(gpa), size: PageSize::K4, validate })
    }

    fn psc(&self, op: PscOp, gpa: Gpa, pages: u64) -> (Agent, Event) {
        (self.agent, Event::Psc { op, gpa, size: PageSize::K4, pages })
    }

    /// Convertible pages `i..i+n` (private) to shared: rescind each, then one PSC request.
    fn make_shared(
        &mut self,
        cfg: &GuestConfig,
        i: u64,
        n: u64,
        out: &mut VecDeque<(Agent, Event)>,
    ) {
        for j in i..i + n {
            out.push_back(self.pvalidate(Self::gpa(cfg, j), false));
            self.shared.set(usize::try_from(j).unwrap_or(usize::MAX), true);
        }
        out.push_back(self.psc(PscOp::Shared, Self::gpa(cfg, i), n));
        self.shared_count += n;
    }

    /// Convertible pages `i..i+n` (shared) to private: one PSC request, then validate each.
    fn make_private(
        &mut self,
        cfg: &GuestConfig,
        i: u64,
        n: u64,
        out: &mut VecDeque<(Agent, Event)>,
    ) {
        out.push_back(self.psc(PscOp::Private, Self::gpa(cfg, i), n));
        for j in i..i + n {
            out.push_back(self.pvalidate(Self::gpa(cfg, j), true));
            self.shared.set(usize::try_from(j).unwrap_or(usize::MAX), false);
        }
        self.shared_count -= n;
    }

    /// One conversion of up to `psc_batch` contiguous pages, towards the shared target.
    fn convert(&mut self, cfg: &GuestConfig, out: &mut VecDeque<(Agent, Event)>) {
        let conv = self.shared.len();
        let to_shared =
            self.shared_count <= self.sizes.target_shared && self.shared_count < conv as u64;
        // Pages in the state being left: private (clear) to go shared, shared (set) to go private.
        let from_state = !to_shared;
        let start = usize::try_from(self.rng.below(conv as u64)).unwrap_or(0);
        let Some(i) = self.shared.find(from_state, start) else { return };
        let mut n = 1;
        while (n as u64) < cfg.psc_batch && i + n < conv && self.shared.get(i + n) == from_state {
            n += 1;
        }
        let (i, n) = (i as u64, n as u64);
        if to_shared { self.make_shared(cfg, i, n, out) } else { self.make_private(cfg, i, n, out) }
    }

    /// The next access: a load or store of 8 bytes, C-bit set unless the page is shared. The
    /// caller accounts for it in `left` and `since_psc`.
    #[inline(always)]
    fn access(&mut self, cfg: &GuestConfig) -> Event {
        if self.run_left == 0 {
            self.addr = self.rng.below(self.sizes.ws_bytes / 8) * 8;
            self.run_left = 1 + self.rng.below(2 * cfg.seq_lines - 1);
        }
        let a = self.addr;
        self.run_left -= 1;
        self.addr = a + 64;
        if self.addr >= self.sizes.ws_bytes {
            self.addr -= self.sizes.ws_bytes;
        }
        let page = a / PAGE;
        let shared = page >= cfg.image_pages
            && self.shared.get(usize::try_from(page - cfg.image_pages).unwrap_or(0));
        let addr = Address::Gpa(Gpa::new(if shared { a } else { a | cfg.cbit }));
        if self.rng.next_u64() < cfg.write_below {
            Event::Store { addr, size: 8, mt: MemType::Wb }
        } else {
            Event::Load { addr, size: 8 }
        }
    }
}

/// One guest CPU: its guests, time-sliced, and the events decided ahead.
#[derive(Debug)]
pub(crate) struct GuestCpu {
    host: Agent,
    guests: Vec<Guest>,
    /// The guest running (or being launched).
    cur: usize,
    /// Accesses left in the current guest's slice.
    slice_left: u64,
    /// Accesses the current guest makes before the next control decision (a conversion, a
    /// switch, its end); already counted in its `left` and `since_psc` and in `slice_left`.
    budget: u64,
    /// Control events decided ahead, with their issuers, in order.
    pending: VecDeque<(Agent, Event)>,
    /// A `work` event follows the access just returned.
    pending_work: bool,
    /// Accesses made on this CPU, plus the time it idled waiting for an arrival.
    clock: u64,
}

impl GuestCpu {
    /// A CPU running `guests` (in arrival order) as `host`; it starts when the first arrives.
    pub(crate) fn new(host: Agent, guests: Vec<Guest>, cfg: &GuestConfig) -> GuestCpu {
        GuestCpu {
            host,
            clock: guests.first().map_or(0, |g| g.arrive),
            guests,
            cur: 0,
            slice_left: cfg.slice,
            budget: 0,
            // A conversion or a launch queues at most PSC_MAX_PAGES + 1 events.
            pending: VecDeque::with_capacity(usize::try_from(PSC_MAX_PAGES).unwrap_or(0) + 8),
            pending_work: false,
        }
    }

    /// Queue the launch of the current guest, ending with its first `vmrun`.
    fn launch(&mut self, cfg: &GuestConfig) {
        let g = &mut self.guests[self.cur];
        let (vm, h) = (g.vm, self.host);
        let fw = |cmd, gpa, pages| (h, Event::SnpFw { cmd, vm, spa: None, gpa, pages });
        self.pending.push_back((
            h,
            Event::VmCreate { kind: VmKind::Snp, vm, asid: g.asid, memory: g.sizes.memory },
        ));
        self.pending.push_back(fw(SnpFwCmd::LaunchStart, None, 1));
        if cfg.image_pages > 0 {
            self.pending.push_back(fw(SnpFwCmd::LaunchUpdate, Some(Gpa::ZERO), cfg.image_pages));
        }
        self.pending.push_back(fw(SnpFwCmd::LaunchFinish, None, 1));
        self.pending.push_back((h, Event::VmRun { vm, vcpu: 0 }));
        g.phase = Phase::Validating(cfg.image_pages);
    }

    /// Turn to the next unfinished guest that has arrived (round-robin, the current one last),
    /// with a fresh slice; queue its `vmrun` if it is launched and not the current one. With
    /// none arrived, idle until the earliest arrival. False when every guest is done.
    fn switch(&mut self, cfg: &GuestConfig) -> bool {
        let n = self.guests.len();
        let ready = |g: &Guest| !g.done() && g.arrive <= self.clock;
        let next = match (1..=n).map(|k| (self.cur + k) % n).find(|&j| ready(&self.guests[j])) {
            Some(j) => j,
            None => {
                let Some(j) = (0..n)
                    .filter(|&j| !self.guests[j].done())
                    .min_by_key(|&j| (self.guests[j].arrive, j))
                else {
                    return false;
                };
                self.clock = self.guests[j].arrive;
                j
            }
        };
        self.slice_left = cfg.slice;
        if next != self.cur {
            self.cur = next;
            let g = &self.guests[next];
            if g.phase != Phase::Unlaunched {
                self.pending.push_back((self.host, Event::VmRun { vm: g.vm, vcpu: 0 }));
            }
        }
        true
    }

    /// [`crate::Workload::next_work`]: the `work` after an access, which `next` returns next.
    #[inline]
    pub(crate) fn next_work(&mut self, cfg: &GuestConfig) -> Option<u64> {
        if !self.pending_work {
            return None;
        }
        self.pending_work = false;
        Some(cfg.work)
    }

    /// The next event, setting `last` to its issuer when that changes. The fast path (an access of the current budget, or the `work` after
    /// one) is kept small; everything else is [`GuestCpu::control`].
    #[inline]
    pub(crate) fn next(&mut self, cfg: &GuestConfig, last: &mut Agent) -> Option<Event> {
        // After an access nothing is pending, and the issuer is still the guest.
        if let Some(count) = self.next_work(cfg) {
            return Some(Event::Work { count });
        }
        if self.budget > 0 {
            // A budget is only granted with nothing queued, and nothing queues during it.
            debug_assert!(self.pending.is_empty());
            self.budget -= 1;
            self.pending_work = cfg.work > 0;
            return Some(self.guests[self.cur].access(cfg));
        }
        self.control(cfg, last)
    }

    /// Everything but the fast path: queued control events, launches, boot, conversions,
    /// switches, and the start of the next access budget.
    #[inline(never)]
    fn control(&mut self, cfg: &GuestConfig, last: &mut Agent) -> Option<Event> {
        if let Some((a, e)) = self.pending.pop_front() {
            *last = a;
            return Some(e);
        }
        loop {
            let g = self.guests.get_mut(self.cur)?;
            match g.phase {
                Phase::Unlaunched => self.launch(cfg),
                Phase::Validating(p) if p < g.sizes.ws_bytes / PAGE => {
                    g.phase = Phase::Validating(p + 1);
                    *last = g.agent;
                    return Some(g.pvalidate(Gpa::new(p * PAGE), true).1);
                }
                Phase::Validating(_) => {
                    g.phase = Phase::Sharing(g.shared.len() as u64 - g.sizes.target_shared);
                }
                Phase::Sharing(i) if i < g.shared.len() as u64 => {
                    let n = PSC_MAX_PAGES.min(g.shared.len() as u64 - i);
                    g.make_shared(cfg, i, n, &mut self.pending);
                    g.phase = Phase::Sharing(i + n);
                }
                Phase::Sharing(_) => g.phase = Phase::Running,
                Phase::Running if g.left == 0 && cfg.destroy => {
                    g.phase = Phase::Gone;
                    self.pending.push_back((self.host, Event::VmDestroy { vm: g.vm }));
                }
                Phase::Gone => {
                    if !self.switch(cfg) {
                        // Its `vm-destroy` may still be queued.
                        let (a, e) = self.pending.pop_front()?;
                        *last = a;
                        return Some(e);
                    }
                }
                Phase::Running if g.left == 0 || self.slice_left == 0 => {
                    if !self.switch(cfg) {
                        return None;
                    }
                }
                Phase::Running if cfg.psc_interval > 0 && g.since_psc >= cfg.psc_interval => {
                    g.since_psc = 0;
                    g.convert(cfg, &mut self.pending);
                }
                Phase::Running => {
                    // Accesses until the next decision, counted now so that the fast path only
                    // counts down.
                    let mut k = g.left.min(self.slice_left);
                    if cfg.psc_interval > 0 {
                        k = k.min(cfg.psc_interval - g.since_psc);
                    }
                    g.left -= k;
                    g.since_psc += k;
                    self.slice_left -= k;
                    self.clock += k;
                    self.budget = k - 1;
                    self.pending_work = cfg.work > 0;
                    *last = g.agent;
                    return Some(g.access(cfg));
                }
            }
            if let Some((a, e)) = self.pending.pop_front() {
                *last = a;
                return Some(e);
            }
        }
    }
}

/// Kernel streams beside guest CPUs running SNP guests: the generator of `snp-churn`, and of
/// `multi-tenant` (whose guests also arrive and leave).
#[derive(Debug)]
pub(crate) struct GuestsWithKernel {
    pub(crate) agents: Vec<Agent>,
    /// Per stream, the issuer of the event last returned.
    pub(crate) last: Vec<Agent>,
    pub(crate) cfg: GuestConfig,
    pub(crate) kcfg: KernelConfig,
    pub(crate) kernel: Vec<KernelStream>,
    pub(crate) cpus: Vec<GuestCpu>,
}

impl Workload for GuestsWithKernel {
    fn agents(&self) -> &[Agent] {
        &self.agents
    }

    fn next(&mut self, stream: usize, mem: &mut dyn MemoryServices) -> Option<Event> {
        match stream.checked_sub(self.kernel.len()) {
            None => self.kernel[stream].next(&self.kcfg, mem),
            Some(i) => self.cpus.get_mut(i)?.next(&self.cfg, &mut self.last[stream]),
        }
    }

    fn agent_of_last(&self, stream: usize) -> Agent {
        self.last[stream]
    }

    fn next_work(&mut self, stream: usize) -> Option<u64> {
        match stream.checked_sub(self.kernel.len()) {
            None => self.kernel[stream].next_work(&self.kcfg),
            Some(i) => self.cpus.get_mut(i)?.next_work(&self.cfg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NullMemory;
    use crate::testutil::{allocations, drain};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// What the contract checker needs to know of the parameters.
    #[derive(Debug, Clone, Copy)]
    struct Expect {
        ws_pages: u64,
        image_pages: u64,
        cbit_pos: u32,
        interval: u64,
        batch: u64,
        target: u64,
        accesses: u64,
        guests: u64,
    }

    /// A guest as the checker follows it.
    #[derive(Debug, Default)]
    struct Vm {
        cpu: Option<u32>,
        launched: bool,
        /// Pages (GPA >> 12) validated.
        validated: BTreeSet<u64>,
        shared: BTreeSet<u64>,
        accesses: u64,
        since_psc: u64,
        pscs: u64,
    }

    fn params(items: &[&str]) -> Params {
        Params::parse(items.iter().copied()).unwrap()
    }

    /// Check a drained stream against the event contract of the module docs; returns the
    /// guests as followed.
    fn check(ev: &[(usize, Agent, Event)], x: &Expect) -> Result<BTreeMap<u32, Vm>, String> {
        let cbit = 1u64 << x.cbit_pos;
        let mut vms: BTreeMap<u32, Vm> = BTreeMap::new();
        let mut running: BTreeMap<u32, u32> = BTreeMap::new();
        let mut stream_cpu: BTreeMap<usize, Option<u32>> = BTreeMap::new();
        for (n, (s, a, e)) in ev.iter().enumerate() {
            let at = format!("event {n} ({a} {e:?})");
            if *stream_cpu.entry(*s).or_insert(a.cpu()) != a.cpu() {
                return Err(format!("{at}: stream {s} changed CPU"));
            }
            let Agent::Cpu { cpu, ctx } = *a else { return Err(format!("{at}: not a CPU")) };
            match ctx {
                sim_core::Context::HostKernel => match e {
                    Event::VmCreate { kind: VmKind::Snp, vm, asid, .. } => {
                        if vms.contains_key(vm) || asid != vm {
                            return Err(format!("{at}: VM created twice or wrong ASID"));
                        }
                        vms.insert(*vm, Vm { cpu: Some(cpu), ..Vm::default() });
                    }
                    Event::SnpFw { cmd, vm, spa: None, gpa, pages } => {
                        let v = vms.get_mut(vm).ok_or(format!("{at}: unknown VM"))?;
                        match cmd {
                            SnpFwCmd::LaunchStart | SnpFwCmd::LaunchFinish if v.launched => {
                                return Err(format!("{at}: after launch-finish"));
                            }
                            SnpFwCmd::LaunchStart => {}
                            SnpFwCmd::LaunchUpdate => {
                                if *gpa != Some(Gpa::ZERO) || *pages != x.image_pages {
                                    return Err(format!("{at}: launch-update of the wrong range"));
                                }
                                v.validated.extend(0..*pages);
                            }
                            SnpFwCmd::LaunchFinish => v.launched = true,
                            _ => return Err(format!("{at}: unexpected firmware command")),
                        }
                    }
                    Event::VmRun { vm, vcpu: 0 } => {
                        let v = vms.get(vm).ok_or(format!("{at}: vmrun of an unknown VM"))?;
                        if !v.launched || v.cpu != Some(cpu) {
                            return Err(format!(
                                "{at}: vmrun before launch-finish or on another CPU"
                            ));
                        }
                        running.insert(cpu, *vm);
                    }
                    Event::PageAlloc { .. } | Event::PageFree { .. } | Event::Work { .. } => {}
                    Event::Load { addr: Address::Spa(_), .. }
                    | Event::Store { addr: Address::Spa(_), .. } => {}
                    _ => return Err(format!("{at}: unexpected host event")),
                },
                sim_core::Context::Guest { vm, vcpu: 0, .. } => {
                    if running.get(&cpu) != Some(&vm) {
                        return Err(format!("{at}: guest event while its VM is not running here"));
                    }
                    let v = vms.get_mut(&vm).ok_or(format!("{at}: unknown VM"))?;
                    let page_of = |g: u64| -> Result<u64, String> {
                        let p = g >> 12;
                        if p >= x.ws_pages {
                            return Err(format!("{at}: outside the working set"));
                        }
                        Ok(p)
                    };
                    match e {
                        Event::Pvalidate {
                            addr: Address::Gpa(g),
                            size: PageSize::K4,
                            validate,
                        } => {
                            if g.raw() & cbit != 0 || g.raw() % 4096 != 0 {
                                return Err(format!(
                                    "{at}: PVALIDATE operand with C-bit or unaligned"
                                ));
                            }
                            let p = page_of(g.raw())?;
                            if v.shared.contains(&p) {
                                return Err(format!("{at}: PVALIDATE of a shared page"));
                            }
                            let changed = if *validate {
                                v.validated.insert(p)
                            } else {
                                v.validated.remove(&p)
                            };
                            if !changed {
                                return Err(format!("{at}: PVALIDATE changes nothing"));
                            }
                        }
                        Event::Psc { op, gpa, size: PageSize::K4, pages } => {
                            if *pages == 0 || *pages > PSC_MAX_PAGES.max(x.batch) {
                                return Err(format!("{at}: PSC of {pages} pages"));
                            }
                            let p0 = page_of(gpa.raw())?;
                            page_of(gpa.raw() + (pages - 1) * 4096)?;
                            for p in p0..p0 + pages {
                                if p < x.image_pages {
                                    return Err(format!("{at}: converts an image page"));
                                }
                                let ok = match op {
                                    // Linux order: rescinded before PSC shared.
                                    PscOp::Shared => {
                                        !v.validated.contains(&p) && v.shared.insert(p)
                                    }
                                    PscOp::Private => v.shared.remove(&p),
                                    _ => false,
                                };
                                if !ok {
                                    return Err(format!(
                                        "{at}: page {p:#x} not in the state {op:?} leaves"
                                    ));
                                }
                            }
                            v.since_psc = 0;
                            v.pscs += 1;
                        }
                        Event::Load { addr: Address::Gpa(g), size: 8 }
                        | Event::Store { addr: Address::Gpa(g), size: 8, .. } => {
                            let private = g.raw() & cbit != 0;
                            let p = page_of(g.raw() & !cbit)?;
                            if private && !v.validated.contains(&p) {
                                return Err(format!(
                                    "{at}: private access to a page not validated"
                                ));
                            }
                            if !private && !v.shared.contains(&p) {
                                return Err(format!("{at}: shared access to a private page"));
                            }
                            v.accesses += 1;
                            v.since_psc += 1;
                            if x.interval > 0 && v.since_psc > x.interval {
                                return Err(format!(
                                    "{at}: more than {} accesses without a PSC",
                                    x.interval
                                ));
                            }
                            let shared = v.shared.len() as u64;
                            if shared.abs_diff(x.target) > x.batch {
                                return Err(format!(
                                    "{at}: {shared} shared pages, target {}",
                                    x.target
                                ));
                            }
                        }
                        Event::Work { .. } => {}
                        _ => return Err(format!("{at}: unexpected guest event")),
                    }
                }
                _ => return Err(format!("{at}: unexpected context")),
            }
        }
        if vms.len() as u64 != x.guests {
            return Err(format!("{} guests created, {} expected", vms.len(), x.guests));
        }
        for (vm, v) in &vms {
            if v.accesses != x.accesses {
                return Err(format!("vm {vm}: {} accesses, {} expected", v.accesses, x.accesses));
            }
            // Pages pending a conversion's second half would be a truncated conversion.
            for p in x.image_pages..x.ws_pages {
                if v.validated.contains(&p) == v.shared.contains(&p) {
                    return Err(format!("vm {vm}: page {p:#x} left half-converted"));
                }
            }
        }
        Ok(vms)
    }

    fn small() -> Vec<&'static str> {
        vec![
            "guests=3",
            "guest_cpus=2",
            "guest_memory=1M",
            "working_set=256K",
            "image=16K",
            "accesses=5000",
            "psc_interval=100",
            "slice=700",
            "kernel_accesses=300",
            "shared_fraction=0.25",
        ]
    }

    fn expect_small() -> Expect {
        Expect {
            ws_pages: 64,
            image_pages: 4,
            cbit_pos: 51,
            interval: 100,
            batch: 1,
            target: 16,
            accesses: 5000,
            guests: 3,
        }
    }

    #[test]
    fn small_config_obeys_the_contract() {
        let ev = drain(&INFO, &params(&small()), 1);
        let vms = check(&ev, &expect_small()).unwrap();
        for v in vms.values() {
            // The boot's one PSC for the initial pool, then one per 100 accesses.
            assert!(v.pscs >= 1 + 5000 / 100 - 1, "{}", v.pscs);
        }
        // Three guests on two CPUs: guest 0 and 2 share CPU 2 and are time-sliced.
        let vmruns: Vec<_> = ev
            .iter()
            .filter_map(|(_, a, e)| matches!(e, Event::VmRun { .. }).then_some((a.cpu(), e)))
            .collect();
        assert!(vmruns.len() > 3 + 10, "{vmruns:?}");
        assert!(vmruns.iter().all(|(c, _)| *c == Some(2) || *c == Some(3)));
        let kernel = ev.iter().filter(|(s, _, e)| *s < 2 && e.is_access()).count();
        assert_eq!(kernel, 2 * 300);
        // Both directions happen.
        let ops: BTreeSet<_> = ev
            .iter()
            .filter_map(|(_, _, e)| match e {
                Event::Psc { op, .. } => Some(*op),
                _ => None,
            })
            .collect();
        assert_eq!(ops.len(), 2);
    }

    #[test]
    fn batched_conversions_stay_near_the_target() {
        let mut p = small();
        p.extend(["psc_batch=8", "shared_fraction=0.5", "psc_interval=50"]);
        let ev = drain(&INFO, &params(&p), 4);
        let x = Expect { batch: 8, target: 32, interval: 50, ..expect_small() };
        check(&ev, &x).unwrap();
        let most = ev
            .iter()
            .filter_map(|(_, _, e)| match e {
                Event::Psc { pages, .. } => Some(*pages),
                _ => None,
            })
            .max();
        assert!(most.unwrap() > 1);
    }

    #[test]
    fn same_seed_same_stream_different_seed_different() {
        let p = params(&small());
        assert_eq!(drain(&INFO, &p, 9), drain(&INFO, &p, 9));
        assert_ne!(drain(&INFO, &p, 9), drain(&INFO, &p, 10));
    }

    #[test]
    fn bad_params_are_rejected_with_their_name() {
        for (bad, name) in [
            (&["working_set=2M", "guest_memory=1M"][..], "working_set"),
            (&["image=16M"][..], "image"),
            (&["psc_batch=254"][..], "psc_batch"),
            (&["psc_batch=0"][..], "psc_batch"),
            (&["working_set=64K", "image=60K", "shared_fraction=0.5"][..], "shared_fraction"),
            (&["cbit_pos=20"][..], "cbit_pos"),
            (&["guest_memory=5000"][..], "guest_memory"),
            (&["slice=0"][..], "slice"),
        ] {
            match INFO.instantiate(&params(bad), 0) {
                Err(ParamError::Bad { name: n, .. }) => assert_eq!(n, name, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(
            INFO.instantiate(&params(&["folio_order=9"]), 0),
            Err(ParamError::Unknown { .. })
        ));
    }

    #[test]
    fn defaults_build_and_fit_four_cpus() {
        let w = INFO.instantiate(&Params::default(), 0).unwrap();
        assert_eq!(w.agents(), &[0, 1, 2, 3].map(Agent::host));
    }

    /// Sixteen 4 GiB guests on two CPUs generate without allocating once warmed up: through
    /// accesses, conversions, time-slice switches and the launches of later guests.
    #[test]
    fn sixteen_4g_guests_generate_without_allocating() {
        let p = params(&["guests=16", "guest_memory=4G", "accesses=30000", "slice=5000"]);
        let mut w = INFO.instantiate(&p, 1).unwrap();
        let mut mem = NullMemory::default();
        let n = w.agents().len();
        // Warm up: the kernel streams fill their slab sets, each guest CPU launches and boots
        // its first guest.
        for _ in 0..20_000 {
            for s in 0..n {
                w.next(s, &mut mem);
            }
        }
        let before = allocations();
        let mut seen = [0u64; 4];
        for _ in 0..400_000 {
            for s in 0..n {
                match w.next(s, &mut mem) {
                    Some(Event::Load { .. } | Event::Store { .. }) => seen[0] += 1,
                    Some(Event::Psc { .. }) => seen[1] += 1,
                    Some(Event::VmRun { .. }) => seen[2] += 1,
                    Some(Event::VmCreate { .. }) => seen[3] += 1,
                    _ => {}
                }
            }
        }
        let allocated = allocations() - before;
        assert!(seen.iter().all(|&k| k > 0), "{seen:?}");
        assert_eq!(allocated, 0, "allocations while generating {seen:?}");
    }

    /// The per-guest state of a 4 GiB working set is its bitmap: 1 Mi bits.
    #[test]
    fn a_4g_working_set_is_a_bitmap() {
        let b = PageBits::new(1 << 20);
        assert_eq!(b.heap_bytes(), (1 << 20) / 8 + 2 * (1 << 14) / 8);
        let p = params(&["guests=16", "guest_memory=4G", "working_set=4G"]);
        let before = allocations();
        INFO.instantiate(&p, 1).unwrap();
        // 16 bitmaps of three vectors each, plus a handful of vectors and queues.
        let n = allocations() - before;
        assert!((16 * 3..16 * 4 + 40).contains(&n), "{n}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The contract holds over small parameter sets.
        #[test]
        fn contract_holds(
            guests in 1u64..5,
            guest_cpus in 1u64..4,
            kernel_cpus in 0u64..3,
            ws_pages in 2u64..48,
            image_frac in 0u64..100,
            shared_frac in 0u64..=100,
            accesses in 0u64..1500,
            interval in 0u64..200,
            batch in 1u64..12,
            slice in 1u64..400,
            seq_lines in 1u64..6,
            work in 0u64..2,
            seed in any::<u64>(),
        ) {
            let image_pages = image_frac * (ws_pages - 1) / 100;
            let conv = ws_pages - image_pages;
            let target = shared_frac * conv / 100;
            let items = [
                format!("guests={guests}"),
                format!("guest_cpus={guest_cpus}"),
                format!("kernel_cpus={kernel_cpus}"),
                "guest_memory=256K".to_owned(),
                format!("working_set={}", ws_pages * 4096),
                format!("image={}", image_pages * 4096),
                format!("shared_fraction={:.9}", target as f64 / ws_pages as f64),
                format!("accesses={accesses}"),
                format!("psc_interval={interval}"),
                format!("psc_batch={batch}"),
                format!("slice={slice}"),
                format!("seq_lines={seq_lines}"),
                format!("work={work}"),
                "kernel_accesses=50".to_owned(),
                "cbit_pos=40".to_owned(),
            ];
            let p = Params::parse(items.iter().map(String::as_str)).unwrap();
            let ev = drain(&INFO, &p, seed);
            let x = Expect {
                ws_pages, image_pages, cbit_pos: 40, interval, batch, target, accesses, guests,
            };
            if let Err(e) = check(&ev, &x) {
                prop_assert!(false, "{}", e);
            }
        }
    }
}
