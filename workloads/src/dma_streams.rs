//! `dma-streams`: devices doing DMA into host buffers and into buffers shared with SNP guests
//! while the guests convert pages, every buffer drawn from the host allocator; optionally a
//! mis-programmed driver that maps guest-private pages for its device (issue #7 item 4).
//!
//! **Streams.** Streams `0..io_cpus` are the *I/O CPUs* (`cN host`, CPUs `0..io_cpus`): the host
//! kernel's drivers, which program the IOMMU and handle the devices' completions. Device `k`
//! (the NICs first, then the disks) is driven by I/O CPU `k % io_cpus`. The next `guest_cpus`
//! streams are `snp-churn`'s guest CPUs ([`crate::snp_churn::GuestCpu`], CPUs after the I/O
//! CPUs): SNP guests launched by GPA that validate their working set and convert pages between
//! private and shared every `psc_interval` accesses. The last streams are the devices, one each,
//! issuing as `dev:ID` (a PCI requester id: NIC `i` is `0x100 + 8i`, bus 1 device `i`; disk `i`
//! is `0x200 + 8i`). Device `k` translates through I/O page table (domain) `k + 1`.
//!
//! **What the I/O CPUs issue** (strict-mode DMA API with an IOMMU in translated mode, as on an
//! SNP host, where pass-through domains are not supported):
//! - *attach*, once per device before anything else of it: `iommu attach device=ID domain=D`,
//!   `iommu inv-devtab device=ID`, `iommu completion-wait`;
//! - *coherent rings* (`dma_alloc_coherent`): a contiguous block from the allocator
//!   (`page-alloc kind=kernel`), mapped writable page by page for the device's life
//!   (`map iova:… phys:… 4K space=iodom:D w`): a NIC's receive-descriptor ring (16 bytes per
//!   buffer), a disk's submission queue (64-byte entries) and completion queue (16-byte
//!   entries);
//! - *streaming mappings*: `map` of each 4K page of a buffer before the device may touch it, and
//!   on release `unmap` of each page, then one `iommu inv-pages domain=D addr=IOVA pages=N`
//!   covering them and `iommu completion-wait` (Linux's amd_iommu unmap path:
//!   INVALIDATE_IOMMU_PAGES, then COMPLETION_WAIT);
//! - *driver work*: descriptor stores and loads through the direct map (`phys:`), a 64-byte load
//!   of each received packet's headers, and the buffers' `page-alloc`/`page-free`;
//! - *detach* when a device is done: every mapping released, `iommu detach`, `inv-devtab`,
//!   `completion-wait`;
//! - I/O CPU 0 also stands for KVM and the VMM of each guest once its `vm-create` has been
//!   issued: `bounce_pages` pages of VMM memory (`page-alloc kind=guest`), the guest's shared
//!   bounce buffers, and `victim_pages` private pages (`gmem-alloc` + `rmpupdate … assigned
//!   asid=A gpa=G`) at the GPAs just above its working set, which the guest never touches;
//! - `work poll_work` while it waits on its devices.
//!
//! **NIC** (page_pool-style receive ring): `rx_ring` buffers of `rx_buf` bytes, `4096/rx_buf` to
//! a 4K page, each page mapped once and reused. Per packet the device reads the slot's
//! descriptor (`dma-read`, 16 bytes), writes the frame (`dma-write`, its size rounded up to 64
//! bytes) at the start of the buffer and writes the descriptor back (16 bytes). The driver
//! handles received packets in NAPI polls of up to `napi_budget` (when that many are waiting,
//! when the ring is empty, or when the device is done): it loads the descriptor and the
//! headers; once every buffer of a page is handled the page is refilled: recycled as it is with
//! probability `recycle` (page_pool's cache: no IOMMU work), else released (unmap, invalidate,
//! `page-free`) and replaced by a newly drawn page, mapped at a new IOVA. Refilled buffers are
//! posted with descriptor stores.
//!
//! **Disk** (NVMe-style queue pair): the driver keeps up to `queue_depth` I/Os outstanding.
//! Each I/O has a size drawn from `io_sizes` and reads from the disk (the device writes memory)
//! with probability `read_fraction`; its pages are mapped at one contiguous IOVA range (as
//! `dma_map_sg` does), the command is stored into the submission queue. The device fetches the
//! command (`dma-read`, 64 bytes), moves each page (`dma-write` or `dma-read` of 4096 bytes) and
//! posts a completion (`dma-write`, 16 bytes); the driver loads it, unmaps the I/O's pages and
//! invalidates them, and frees its pages.
//!
//! **Buffers.** Every new NIC page and every I/O draws where its pages come from: with
//! probability `misprogrammed` a guest-private page (the driver maps a page of a guest's
//! guest_memfd folio, assigned in the RMP, for its device: each DMA there is an RMP violation,
//! IOMMU event RMP_PAGE_FAULT on an SNP host); else with probability `shared_dma` a guest's
//! bounce pages (VMM memory shared with the guest); else host pages from the allocator (a NIC's
//! `kind=kernel`, an I/O's `kind=user`, for the page cache). A draw that finds no guest ready
//! yet takes host pages. The generator cannot know which host page backs a guest's shared GPA
//! (the machine backs it when the guest first touches it), so a guest's shared buffers are
//! modelled as VMM pages it would use as bounce buffers.
//!
//! **Ordering across streams.** The engine merges streams by `(cycle, agent)`; nothing orders
//! a device after its driver's CPU. So the generator orders them itself: a device DMAs only to
//! buffers whose mappings its I/O CPU has already *returned* (a buffer is published to the
//! device when the I/O CPU's stream moves past its last event, and the engine executes every
//! event before asking any stream for the next), and the driver releases a buffer only after
//! the device has returned its last DMA to it. A stream that must wait issues `work
//! poll_work`: the I/O CPU as its host kernel (polling), the device as itself (idle time).
//!
//! **Cost.** After the rings are set up, generation allocates nothing: queues keep their
//! capacity, an I/O's pages live in a per-slot array.

use crate::kernel::KernelConfig;
use crate::params::{ParamDoc, ParamError, Params};
use crate::snp_churn::{
    GuestConfig, GuestsWithKernel, PSC_MAX_PAGES, Sizes, round_robin_guests, write_threshold,
};
use crate::{Workload, WorkloadInfo};
use sim_core::config::ByteSize;
use sim_core::event::{Address, AllocKind, IommuCmd, MemType, Space};
use sim_core::{Agent, Event, Gpa, Iova, MemoryServices, PageSize, Rng, Spa};
use std::collections::VecDeque;

const PAGE: u64 = 4096;
/// A receive descriptor (the Intel 82599 "advanced" receive descriptor is 16 bytes).
const RX_DESC: u64 = 16;
/// A submission-queue entry (NVMe: 64 bytes).
const SQE: u64 = 64;
/// A completion-queue entry (NVMe: 16 bytes).
const CQE: u64 = 16;
/// The headers the stack reads of a received packet: one cache line.
const HEADER: u32 = 64;
/// Most pages of one I/O: 128 KiB, the largest size the IOVA cache serves (Linux
/// `IOVA_RANGE_CACHE_MAX_SIZE` 6: orders 0..=5).
const MAX_IO: usize = 32;
/// [`MAX_IO`] as a page count.
const MAX_IO_PAGES: u64 = MAX_IO as u64;
/// IOVA orders kept on free lists (0..=5 pages orders: 4K..128K).
const IOVA_ORDERS: usize = 6;
/// Where a domain's IOVAs are handed out from, downwards: 4 GiB (iommu-dma gives PCI devices
/// 32-bit IOVAs first).
const IOVA_TOP: u64 = 1 << 32;
/// The x86 MSI window, reserved in every DMA domain.
const MSI_WINDOW: (u64, u64) = (0xfee0_0000, 0xfef0_0000);
/// Parts per million.
const PPM: u64 = 1_000_000;

const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "nics",
        default: "1",
        doc: "NIC-like devices (0..=32); NIC i is dev:0x100+8i (bus 1, device i)",
    },
    ParamDoc {
        name: "disks",
        default: "1",
        doc: "storage-like devices (0..=32); disk i is dev:0x200+8i (bus 2, device i)",
    },
    ParamDoc {
        name: "io_cpus",
        default: "1",
        doc: "host CPUs running the drivers (CPUs 0..io_cpus, at most one per device); device k \
              (NICs first, then disks) is driven by CPU k % io_cpus",
    },
    ParamDoc { name: "packets", default: "4000", doc: "packets each NIC receives" },
    ParamDoc {
        name: "rx_ring",
        default: "256",
        doc: "receive buffers per NIC (a multiple of 4096/rx_buf, at most 4096). Default: \
              QEMU's virtio-net receive queue size (Intel ixgbe and i40e default to 512)",
    },
    ParamDoc {
        name: "rx_buf",
        default: "2K",
        doc: "bytes per receive buffer: 2K (two to a 4K page) or 4K (one). Default: the 2K \
              buffers of Intel's ixgbe/i40e drivers, two to a page",
    },
    ParamDoc {
        name: "packet_mix",
        default: "64:7,594:4,1518:1",
        doc: "frame sizes received and their weights (size:weight, comma-separated; sizes \
              1..=rx_buf; a DMA write is the size rounded up to 64 bytes). Default: the \
              'simple IMIX' 7:4:1 of 64-, 594- and 1518-byte frames",
    },
    ParamDoc {
        name: "napi_budget",
        default: "64",
        doc: "most packets the driver handles per poll. Default: Linux NAPI_POLL_WEIGHT",
    },
    ParamDoc {
        name: "recycle",
        default: "0.9",
        doc: "fraction of handled receive pages that page_pool recycles as they are (still \
              mapped); the others are unmapped, freed and replaced by a new mapped page. \
              Unsourced: most pages come back while the stack consumes packets promptly",
    },
    ParamDoc { name: "ios", default: "500", doc: "block I/Os each disk performs" },
    ParamDoc {
        name: "io_sizes",
        default: "4K:4,16K:2,64K:1,128K:1",
        doc: "I/O sizes and their weights (size:weight, comma-separated; sizes multiples of 4K \
              in 4K..=128K). Unsourced: small random I/O with some large sequential transfers",
    },
    ParamDoc {
        name: "read_fraction",
        default: "0.7",
        doc: "fraction of I/Os that read from the disk (the device writes memory). Unsourced: \
              the 70/30 read/write mix common in storage benchmarks",
    },
    ParamDoc {
        name: "queue_depth",
        default: "32",
        doc: "most outstanding I/Os per disk (1..=1024). Unsourced: a common benchmark depth",
    },
    ParamDoc {
        name: "shared_dma",
        default: "0.25",
        doc: "fraction of NIC pages and I/Os that use a guest's shared bounce pages instead of \
              host pages (host pages while no guest is ready, or with guests=0). Unsourced",
    },
    ParamDoc {
        name: "bounce_pages",
        default: "64",
        doc: "VMM pages per guest standing for its shared bounce buffers (the generator cannot \
              know the host page behind a guest's shared GPA). Unsourced",
    },
    ParamDoc {
        name: "misprogrammed",
        default: "0",
        doc: "fraction of NIC pages and I/Os the driver maps to guest-private pages (each DMA \
              there is an RMP violation); needs guests and victim_pages",
    },
    ParamDoc {
        name: "victim_pages",
        default: "8",
        doc: "private pages KVM populates per guest just above its working set (gmem-alloc + \
              rmpupdate), the targets of misprogrammed DMA; populated whatever misprogrammed \
              is, so that runs differing only in it keep the same private pages. Unsourced",
    },
    ParamDoc {
        name: "poll_work",
        default: "50",
        doc: "non-memory instructions (an I/O CPU) or idle work (a device) a stream spends \
              each time it must wait for the other side. Unsourced",
    },
    ParamDoc {
        name: "guests",
        default: "2",
        doc: "SNP guests, as in snp-churn; guest g is VM g+1 with ASID first_asid+g",
    },
    ParamDoc { name: "guest_memory", default: "64M", doc: "memory per guest (a multiple of 4K)" },
    ParamDoc {
        name: "working_set",
        default: "4M",
        doc: "guest-physical bytes each guest accesses, from GPA 0 (a multiple of 4K; with \
              victim_pages, at most guest_memory)",
    },
    ParamDoc {
        name: "image",
        default: "256K",
        doc: "initial image at GPA 0 (rounded up to 4K pages; smaller than working_set)",
    },
    ParamDoc {
        name: "guest_cpus",
        default: "2",
        doc: "CPUs running guests, after the I/O CPUs (at most guests are used)",
    },
    ParamDoc { name: "accesses", default: "20000", doc: "guest accesses per guest after boot" },
    ParamDoc {
        name: "psc_interval",
        default: "500",
        doc: "guest accesses between two page-state changes of a guest (0: none after boot)",
    },
    ParamDoc { name: "psc_batch", default: "1", doc: "most pages per conversion (1..=253)" },
    ParamDoc {
        name: "shared_fraction",
        default: "0.1",
        doc: "fraction of a working set kept shared. Unsourced, as in snp-churn",
    },
    ParamDoc {
        name: "write_fraction",
        default: "0.3",
        doc: "fraction of guest accesses that are stores. Unsourced, as in snp-churn",
    },
    ParamDoc {
        name: "seq_lines",
        default: "16",
        doc: "mean sequential run of a guest's accesses, in 64-byte lines. Unsourced",
    },
    ParamDoc {
        name: "slice",
        default: "10000",
        doc: "guest accesses a CPU runs one guest before turning to its next",
    },
    ParamDoc { name: "work", default: "20", doc: "non-memory instructions after each access" },
    ParamDoc { name: "first_asid", default: "1", doc: "ASID of the first guest" },
    ParamDoc {
        name: "cbit_pos",
        default: "51",
        doc: "C-bit position in a private access's GPA; must equal the machine's mmu.cbit_pos",
    },
];

/// Registry entry.
pub(crate) const INFO: WorkloadInfo = WorkloadInfo {
    name: "dma-streams",
    summary: "NIC- and disk-like devices doing DMA through the IOMMU into host and guest-shared \
              buffers while SNP guests convert pages; optionally into guest-private pages",
    description: "Drivers on the I/O CPUs attach each device to its own I/O page table, map \
                  receive rings (page_pool-style, mapped once, recycled or replaced) and \
                  per-I/O block buffers (mapped, DMAed, unmapped with INVALIDATE_IOMMU_PAGES \
                  and COMPLETION_WAIT), with pages drawn from the host allocator beside the \
                  guests' own; snp-churn guests convert pages meanwhile. misprogrammed > 0 \
                  maps guest-private pages for the devices, so their DMA meets RMP violations.",
    params: PARAMS,
    build,
    preset: None,
};

/// Everything the devices and drivers do, read from the parameters.
#[derive(Debug, Clone)]
struct Config {
    packets: u64,
    rx_ring: u64,
    rx_buf: u64,
    /// Receive buffers per 4K page.
    per_page: u64,
    /// `(bytes, cumulative weight)`.
    packet_mix: Vec<(u64, u64)>,
    napi_budget: u64,
    recycle_ppm: u64,
    ios: u64,
    /// `(pages, cumulative weight)`.
    io_sizes: Vec<(u64, u64)>,
    read_ppm: u64,
    queue_depth: u64,
    shared_ppm: u64,
    misprogrammed_ppm: u64,
    bounce_pages: u64,
    victim_pages: u64,
    poll_work: u64,
    /// Guest working set (bytes): the victims' GPAs start there.
    working_set: u64,
    first_asid: u64,
}

/// `size:weight` pairs as `(size, cumulative weight)`, each size in `lo..=hi` and a multiple of
/// `unit`, returned in units of `unit`.
fn weighted(
    p: &Params,
    name: &str,
    lo: u64,
    hi: u64,
    unit: u64,
) -> Result<Vec<(u64, u64)>, ParamError> {
    let text = p.raw(PARAMS, name);
    let bad = |why: String| Params::bad(name, text, why);
    let mut out = Vec::new();
    let mut total = 0u64;
    for item in text.split(',') {
        let (s, w) =
            item.split_once(':').ok_or_else(|| bad(format!("{item:?} is not size:weight")))?;
        let size = ByteSize::parse(s.trim()).map_err(bad)?.0;
        let weight =
            sim_core::codec::parse_u64(w.trim()).map_err(|_| bad(format!("bad weight {w:?}")))?;
        if size < lo || size > hi || !size.is_multiple_of(unit) {
            return Err(bad(format!(
                "size {s} must be in {}..={}{}",
                ByteSize(lo),
                ByteSize(hi),
                if unit > 1 {
                    format!(" and a multiple of {}", ByteSize(unit))
                } else {
                    String::new()
                }
            )));
        }
        total = total
            .checked_add(weight)
            .filter(|&t| t <= 1 << 40)
            .ok_or_else(|| bad("weights add up to more than 2^40".into()))?;
        out.push((size / unit, total));
    }
    if total == 0 {
        return Err(bad("every weight is 0".into()));
    }
    Ok(out)
}

fn build(p: &Params, seed: u64) -> Result<Box<dyn Workload>, ParamError> {
    let ensure = |ok: bool, name: &str, why: String| {
        if ok { Ok(()) } else { Err(Params::bad(name, p.raw(PARAMS, name), why)) }
    };
    let nics = p.u64_in(PARAMS, "nics", 0, 32)?;
    let disks = p.u64_in(PARAMS, "disks", 0, 32)?;
    let io_cpus = p.u64_in(PARAMS, "io_cpus", 1, 64)?.min((nics + disks).max(1));
    let rx_buf = p.size_in(PARAMS, "rx_buf", 2048, PAGE)?;
    ensure(rx_buf.is_power_of_two(), "rx_buf", "must be 2K or 4K".into())?;
    let per_page = PAGE / rx_buf;
    let rx_ring = p.u64_in(PARAMS, "rx_ring", 1, 4096)?;
    ensure(
        rx_ring.is_multiple_of(per_page),
        "rx_ring",
        format!("must be a multiple of the {per_page} buffers of a page"),
    )?;
    let packet_mix = weighted(p, "packet_mix", 1, rx_buf, 1)?;
    let io_sizes = weighted(p, "io_sizes", PAGE, MAX_IO_PAGES * PAGE, PAGE)?;
    let misprogrammed_ppm = p.fraction_ppm(PARAMS, "misprogrammed")?;
    let victim_pages = p.u64_in(PARAMS, "victim_pages", 0, 1 << 20)?;

    // The guests, as snp-churn reads them.
    let guests = p.u64_in(PARAMS, "guests", 0, 1024)?;
    let guest_memory = p.size_in(PARAMS, "guest_memory", PAGE, 1 << 40)?;
    ensure(guest_memory.is_multiple_of(PAGE), "guest_memory", "must be a multiple of 4K".into())?;
    let working_set = p.size_in(PARAMS, "working_set", PAGE, guest_memory)?;
    ensure(working_set.is_multiple_of(PAGE), "working_set", "must be a multiple of 4K".into())?;
    let ws_pages = working_set / PAGE;
    ensure(
        victim_pages <= (guest_memory - working_set) / PAGE,
        "victim_pages",
        format!(
            "the victim pages lie above the working set and must fit in guest_memory \
             ({guest_memory} bytes)"
        ),
    )?;
    ensure(
        misprogrammed_ppm == 0 || (guests > 0 && victim_pages > 0),
        "misprogrammed",
        "needs guests > 0 and victim_pages > 0: the private pages it maps are theirs".into(),
    )?;
    let image_pages = p.size_in(PARAMS, "image", 0, 1 << 40)?.div_ceil(PAGE);
    ensure(image_pages < ws_pages, "image", "must be smaller than working_set".into())?;
    let shared_ppm_guest = p.fraction_ppm(PARAMS, "shared_fraction")?;
    let target_shared = (ws_pages * shared_ppm_guest + 500_000) / PPM;
    ensure(
        target_shared <= ws_pages - image_pages,
        "shared_fraction",
        format!("{target_shared} shared pages do not fit above the image"),
    )?;
    let cbit_pos = p.u64_in(PARAMS, "cbit_pos", 12, 51)?;
    ensure(
        guest_memory <= 1 << cbit_pos,
        "cbit_pos",
        "the C-bit must lie above every guest-physical address".into(),
    )?;
    let guest_cpus = p.u64_in(PARAMS, "guest_cpus", 1, 255)?.min(guests);
    let write_ppm = p.fraction_ppm(PARAMS, "write_fraction")?;
    let work = p.u64_in(PARAMS, "work", 0, 1 << 20)?;
    let gcfg = GuestConfig {
        image_pages,
        accesses: p.u64_in(PARAMS, "accesses", 0, 1 << 40)?,
        psc_interval: p.u64_in(PARAMS, "psc_interval", 0, 1 << 40)?,
        psc_batch: p.u64_in(PARAMS, "psc_batch", 1, PSC_MAX_PAGES)?,
        seq_lines: p.u64_in(PARAMS, "seq_lines", 1, 1 << 20)?,
        slice: p.u64_in(PARAMS, "slice", 1, 1 << 40)?,
        write_below: write_threshold(write_ppm),
        work,
        cbit: 1 << cbit_pos,
        destroy: false,
    };
    let first_asid = p.u64_in(PARAMS, "first_asid", 1, 1 << 20)?;
    let cfg = Config {
        packets: p.u64_in(PARAMS, "packets", 0, 1 << 40)?,
        rx_ring,
        rx_buf,
        per_page,
        packet_mix,
        napi_budget: p.u64_in(PARAMS, "napi_budget", 1, 1 << 16)?,
        recycle_ppm: p.fraction_ppm(PARAMS, "recycle")?,
        ios: p.u64_in(PARAMS, "ios", 0, 1 << 40)?,
        io_sizes,
        read_ppm: p.fraction_ppm(PARAMS, "read_fraction")?,
        queue_depth: p.u64_in(PARAMS, "queue_depth", 1, 1024)?,
        shared_ppm: p.fraction_ppm(PARAMS, "shared_dma")?,
        misprogrammed_ppm,
        bounce_pages: p.u64_in(PARAMS, "bounce_pages", 0, 1 << 20)?,
        victim_pages,
        poll_work: p.u64_in(PARAMS, "poll_work", 1, 1 << 20)?,
        working_set,
        first_asid,
    };

    let cpu_of = |i: u64| u32::try_from(i).unwrap_or(u32::MAX);
    let rng = Rng::new(seed);
    let mut agents: Vec<Agent> = (0..io_cpus).map(|c| Agent::host(cpu_of(c))).collect();
    let mut io: Vec<IoCpu> = (0..io_cpus).map(|_| IoCpu::default()).collect();
    // The guests: snp-churn's guest CPUs and guests, with the same RNG forks.
    let sizes = Sizes { memory: guest_memory, ws_bytes: working_set, target_shared };
    let cpus = round_robin_guests(io_cpus, guest_cpus, guests, first_asid, sizes, &gcfg, &rng);
    let guest_agents: Vec<Agent> =
        (0..guest_cpus).map(|i| Agent::host(cpu_of(io_cpus + i))).collect();
    agents.extend(&guest_agents);
    // No kernel streams: the drivers are the host's kernel activity here.
    let kcfg = KernelConfig { accesses: 0, write_ppm, slab_pages: 1, slab_churn: 1, work };
    let guest_streams = GuestsWithKernel {
        last: guest_agents.clone(),
        agents: guest_agents,
        cfg: gcfg,
        kcfg,
        kernel: Vec::new(),
        cpus,
    };
    let mut devices = Vec::new();
    for k in 0..nics + disks {
        let (id, kind) = if k < nics {
            (0x100 | (k << 3), Kind::Nic(Nic::default()))
        } else {
            (0x200 | ((k - nics) << 3), Kind::Disk(Disk::new(cfg.queue_depth)))
        };
        let id = cpu_of(id);
        agents.push(Agent::Device(id));
        io[usize::try_from(k % io_cpus).unwrap_or(0)].devices.push(devices.len());
        devices.push(Device {
            id,
            domain: cpu_of(k + 1),
            kind,
            phase: Phase::Setup,
            ready: false,
            abandoned: false,
            iova: IovaSpace::new(),
            pending: VecDeque::new(),
            rng: rng.fork((2 << 32) | k),
            host_rng: rng.fork((3 << 32) | k),
        });
    }
    let g = usize::try_from(guests).unwrap_or(0);
    let pools = Pools {
        created: VecDeque::new(),
        bounce: vec![Vec::new(); g],
        cursor: vec![0; g],
        private_of: vec![Vec::new(); g],
        ready: Vec::new(),
        victims: Vec::new(),
        victim_cursor: 0,
    };
    Ok(Box::new(DmaStreams {
        agents,
        io,
        guests: guest_streams,
        devices,
        pools,
        notes: Vec::new(),
        cfg,
    }))
}

/// Where a buffer's pages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Buf {
    /// Host pages from the allocator, freed when released.
    Host,
    /// A guest's bounce pages (VMM memory, shared with the guest); not freed.
    Bounce,
    /// Guest-private pages (mis-programmed); not freed.
    Private,
}

/// One receive page: `per_page` buffers.
#[derive(Debug, Clone, Copy)]
struct RxPage {
    spa: Spa,
    iova: u64,
    buf: Buf,
}

/// A coherent ring: contiguous pages mapped at contiguous IOVAs for the device's life.
#[derive(Debug, Clone, Copy)]
struct Ring {
    spa: Spa,
    order: u8,
    iova: u64,
    pages: u64,
}

/// A NIC's receive side.
#[derive(Debug, Default)]
struct Nic {
    desc: Option<Ring>,
    /// Page `i` holds the buffers of slots `i*per_page ..`.
    pages: Vec<RxPage>,
    /// Buffers posted and not yet filled (the device's view; the driver adds, the device takes).
    posted: u64,
    /// Packets the device has decided (slot `head % rx_ring` is next).
    head: u64,
    /// Packets whose last DMA the device has returned (published to the driver).
    consumed: u64,
    /// Packets the driver has handled.
    handled: u64,
}

/// One block I/O.
#[derive(Debug, Clone, Copy)]
struct Io {
    /// Its queue slot: its command, completion and pages (`Disk::spas`).
    slot: u64,
    iova: u64,
    pages: u64,
    /// A read from the disk: the device writes memory.
    to_memory: bool,
    buf: Buf,
}

/// A disk's queue pair.
#[derive(Debug)]
struct Disk {
    sq: Option<Ring>,
    cq: Option<Ring>,
    /// I/Os submitted.
    submitted: u64,
    /// Submitted (published), not yet fetched by the device.
    queued: VecDeque<Io>,
    /// Completed by the device (published), not yet handled by the driver.
    completed: VecDeque<Io>,
    /// Submitted and not yet handled.
    outstanding: u64,
    /// The driver submits nothing more (published to the device).
    closed: bool,
    /// The driver's side of `closed`.
    closing: bool,
    /// Per slot, the pages of its I/O.
    spas: Vec<[Spa; MAX_IO]>,
}

impl Disk {
    fn new(queue_depth: u64) -> Disk {
        let qd = usize::try_from(queue_depth).unwrap_or(1);
        Disk {
            sq: None,
            cq: None,
            submitted: 0,
            queued: VecDeque::with_capacity(qd),
            completed: VecDeque::with_capacity(qd),
            outstanding: 0,
            closed: false,
            closing: false,
            spas: vec![[Spa::ZERO; MAX_IO]; qd],
        }
    }
}

#[derive(Debug)]
enum Kind {
    Nic(Nic),
    Disk(Disk),
}

/// The driver's view of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Running,
    Done,
}

/// One domain's IOVA allocator: naturally aligned power-of-two ranges handed out downwards from
/// [`IOVA_TOP`], skipping the MSI window, freed ranges reused last-in first-out per size (Linux's
/// `alloc_iova_fast` rounds a request below 32 pages up to a power of two and serves it from
/// the per-CPU range cache of recently freed IOVAs first).
///
/// It cannot run out: with at most 4096 receive pages or 1024 outstanding I/Os of at most 32
/// pages per domain, at most 6 × 128 MiB + 16 MiB are ever handed out.
#[derive(Debug)]
struct IovaSpace {
    top: u64,
    free: [Vec<u64>; IOVA_ORDERS],
}

impl IovaSpace {
    fn new() -> IovaSpace {
        IovaSpace { top: IOVA_TOP, free: Default::default() }
    }

    fn order(pages: u64) -> usize {
        pages.next_power_of_two().trailing_zeros() as usize
    }

    fn alloc(&mut self, pages: u64) -> u64 {
        let order = Self::order(pages);
        if let Some(a) = self.free[order].pop() {
            return a;
        }
        let size = PAGE << order;
        let mut a = self.top.saturating_sub(size) & !(size - 1);
        if a < MSI_WINDOW.1 && a + size > MSI_WINDOW.0 {
            a = (MSI_WINDOW.0 - size) & !(size - 1);
        }
        debug_assert!(a > 0, "IOVA space exhausted");
        self.top = a;
        a
    }

    fn free(&mut self, iova: u64, pages: u64) {
        self.free[Self::order(pages)].push(iova);
    }
}

#[derive(Debug)]
struct Device {
    id: u32,
    domain: u32,
    kind: Kind,
    phase: Phase,
    /// Attached and set up (published to the device).
    ready: bool,
    /// Set-up failed for want of memory (published): the device does nothing.
    abandoned: bool,
    iova: IovaSpace,
    /// The device stream's events decided ahead.
    pending: VecDeque<Step>,
    /// The device's draws (frame sizes).
    rng: Rng,
    /// The driver's draws for this device (buffers, I/O sizes and directions, recycling).
    host_rng: Rng,
}

/// A guest's shared and private pages that the drivers may map.
#[derive(Debug)]
struct Pools {
    /// Guests whose `vm-create` has been issued and whose pages are not populated yet.
    created: VecDeque<usize>,
    /// Per guest, its bounce pages.
    bounce: Vec<Vec<Spa>>,
    /// Per guest, the next bounce page to use.
    cursor: Vec<u64>,
    /// Per guest, its victim pages (private).
    private_of: Vec<Vec<Spa>>,
    /// Guests whose pages are populated (published), in that order.
    ready: Vec<usize>,
    /// Every published victim page.
    victims: Vec<Spa>,
    victim_cursor: u64,
}

/// Where a buffer's pages come from, as drawn.
#[derive(Debug, Clone, Copy)]
enum Choice {
    Host,
    Bounce(usize),
    Private,
}

/// `x` scaled to `0..n` (Lemire's multiply-shift on a drawn value).
fn scale(x: u64, n: u64) -> u64 {
    u64::try_from((u128::from(x) * u128::from(n)) >> 64).unwrap_or(0)
}

impl Pools {
    /// Draw where a buffer comes from. Always three draws, whatever the outcome, so that the
    /// other draws of the stream do not depend on `misprogrammed` or on which guests are ready.
    fn choose(&self, rng: &mut Rng, cfg: &Config) -> Choice {
        let private = rng.below(PPM) < cfg.misprogrammed_ppm;
        let shared = rng.below(PPM) < cfg.shared_ppm;
        let pick = rng.next_u64();
        if private && !self.victims.is_empty() {
            Choice::Private
        } else if shared && !self.ready.is_empty() && cfg.bounce_pages > 0 {
            Choice::Bounce(
                self.ready[usize::try_from(scale(pick, self.ready.len() as u64)).unwrap_or(0)],
            )
        } else {
            Choice::Host
        }
    }

    /// The next bounce page of guest `g` (round-robin over its pool).
    fn bounce_page(&mut self, g: usize) -> Spa {
        let pool = &self.bounce[g];
        let c = &mut self.cursor[g];
        let spa = pool[usize::try_from(*c % pool.len() as u64).unwrap_or(0)];
        *c += 1;
        spa
    }

    /// The next victim page (round-robin over every published one).
    fn victim_page(&mut self) -> Spa {
        let n = self.victims.len() as u64;
        let spa = self.victims[usize::try_from(self.victim_cursor % n).unwrap_or(0)];
        self.victim_cursor += 1;
        spa
    }
}

/// A decided step of a stream: an event to return, or a note to publish once the event before
/// it has been returned.
#[derive(Debug, Clone)]
enum Step {
    Ev(Event),
    Note(Note),
}

/// State that one stream publishes to another.
#[derive(Debug, Clone, Copy)]
enum Note {
    /// Driver → device: attached and its rings are set up (a NIC's every buffer posted).
    Ready { dev: usize },
    /// Driver → device: set-up failed for want of memory.
    Abandoned { dev: usize },
    /// Driver → NIC: `slots` more buffers posted.
    Posted { dev: usize, slots: u64 },
    /// Driver → disk: an I/O submitted.
    Submitted { dev: usize, io: Io },
    /// Driver → disk: nothing more will be submitted.
    Closed { dev: usize },
    /// NIC → driver: a packet's last DMA returned.
    Consumed { dev: usize },
    /// Disk → driver: an I/O's completion posted.
    Completed { dev: usize, io: Io },
    /// I/O CPU 0 → every driver: guest `guest`'s bounce and victim pages are populated.
    Pools { guest: usize },
}

/// The next event of `q`, with the notes just before and just after it moved to `notes`.
///
/// A note after an event may be published as that event is returned: the engine executes it
/// before it asks any stream for another.
fn take(q: &mut VecDeque<Step>, notes: &mut Vec<Note>) -> Option<Event> {
    let mut ev = None;
    loop {
        match q.front() {
            Some(Step::Note(_)) => {
                if let Some(Step::Note(n)) = q.pop_front() {
                    notes.push(n);
                }
            }
            Some(Step::Ev(_)) if ev.is_none() => {
                if let Some(Step::Ev(e)) = q.pop_front() {
                    ev = Some(e);
                }
            }
            Some(Step::Ev(_)) | None => return ev,
        }
    }
}

/// One I/O CPU: its devices and the events it decided ahead.
#[derive(Debug, Default)]
struct IoCpu {
    /// Indices into `DmaStreams::devices`.
    devices: Vec<usize>,
    /// Round-robin position in `devices`.
    turn: usize,
    pending: VecDeque<Step>,
    finished: bool,
}

/// The driver's emitters: host-kernel events of an I/O CPU.
struct Driver<'a> {
    out: &'a mut VecDeque<Step>,
}

impl Driver<'_> {
    fn ev(&mut self, e: Event) {
        self.out.push_back(Step::Ev(e));
    }

    fn note(&mut self, n: Note) {
        self.out.push_back(Step::Note(n));
    }

    fn iommu(&mut self, cmd: IommuCmd, device: u32, domain: u32, addr: Option<u64>, pages: u64) {
        self.ev(Event::Iommu { cmd, device, domain, addr: addr.map(Iova::new), pages });
    }

    /// Point the device at its domain's table, then flush its cached device-table entry.
    fn attach(&mut self, id: u32, domain: u32, cmd: IommuCmd) {
        self.iommu(cmd, id, domain, None, 0);
        self.iommu(IommuCmd::InvalidateDevtabEntry, id, 0, None, 0);
        self.iommu(IommuCmd::CompletionWait, 0, 0, None, 0);
    }

    fn map(&mut self, domain: u32, iova: u64, spa: Spa, w: bool) {
        self.ev(Event::Map {
            va: Address::Iova(Iova::new(iova)),
            pa: Address::Spa(spa),
            size: PageSize::K4,
            space: Space::IoDomain(domain),
            w,
            x: false,
            user: false,
            enc: false,
        });
    }

    /// Unmap `pages` pages from `iova`, then invalidate them and wait (strict mode).
    fn unmap(&mut self, domain: u32, iova: u64, pages: u64) {
        for i in 0..pages {
            self.ev(Event::Unmap {
                va: Address::Iova(Iova::new(iova + i * PAGE)),
                size: PageSize::K4,
                space: Space::IoDomain(domain),
            });
        }
        self.iommu(IommuCmd::InvalidateIommuPages, 0, domain, Some(iova), pages);
        self.iommu(IommuCmd::CompletionWait, 0, 0, None, 0);
    }

    fn load(&mut self, spa: u64, size: u32) {
        self.ev(Event::Load { addr: Address::Spa(Spa::new(spa)), size });
    }

    fn store(&mut self, spa: u64, size: u32) {
        self.ev(Event::Store { addr: Address::Spa(Spa::new(spa)), size, mt: MemType::Wb });
    }

    /// A coherent ring of `bytes`, mapped writable; `None` when memory ran out.
    fn coherent(
        &mut self,
        dev: &mut Device,
        bytes: u64,
        mem: &mut dyn MemoryServices,
    ) -> Option<Ring> {
        let pages = bytes.div_ceil(PAGE);
        let order = u8::try_from(pages.next_power_of_two().trailing_zeros()).unwrap_or(0);
        let spa = mem.alloc_pages(order, AllocKind::Kernel)?;
        self.ev(Event::PageAlloc { spa, order, kind: AllocKind::Kernel });
        let iova = dev.iova.alloc(pages);
        for i in 0..pages {
            self.map(dev.domain, iova + i * PAGE, Spa::new(spa.raw() + i * PAGE), true);
        }
        Some(Ring { spa, order, iova, pages })
    }

    fn release_ring(&mut self, dev: &mut Device, ring: Option<Ring>, mem: &mut dyn MemoryServices) {
        if let Some(r) = ring {
            self.unmap(dev.domain, r.iova, r.pages);
            dev.iova.free(r.iova, r.pages);
            mem.free_pages(r.spa, r.order);
            self.ev(Event::PageFree { spa: r.spa, order: r.order });
        }
    }

    /// A new receive page as drawn, allocated if it is a host page and mapped; `None` when
    /// memory ran out.
    fn rx_page(
        &mut self,
        dev: &mut Device,
        pools: &mut Pools,
        cfg: &Config,
        mem: &mut dyn MemoryServices,
    ) -> Option<RxPage> {
        let (spa, buf) = match pools.choose(&mut dev.host_rng, cfg) {
            Choice::Host => {
                let spa = mem.alloc_pages(0, AllocKind::Kernel)?;
                self.ev(Event::PageAlloc { spa, order: 0, kind: AllocKind::Kernel });
                (spa, Buf::Host)
            }
            Choice::Bounce(g) => (pools.bounce_page(g), Buf::Bounce),
            Choice::Private => (pools.victim_page(), Buf::Private),
        };
        let iova = dev.iova.alloc(1);
        self.map(dev.domain, iova, spa, true);
        Some(RxPage { spa, iova, buf })
    }

    /// Release a receive page: unmap and invalidate it, free a host page.
    fn release_rx(&mut self, dev: &mut Device, page: RxPage, mem: &mut dyn MemoryServices) {
        self.unmap(dev.domain, page.iova, 1);
        dev.iova.free(page.iova, 1);
        if page.buf == Buf::Host {
            mem.free_pages(page.spa, 0);
            self.ev(Event::PageFree { spa: page.spa, order: 0 });
        }
    }

    /// Post the buffers of receive page `i`: a descriptor store per buffer.
    fn post(&mut self, desc: Ring, cfg: &Config, i: u64) {
        for slot in i * cfg.per_page..(i + 1) * cfg.per_page {
            self.store(desc.spa.raw() + slot * RX_DESC, 16);
        }
    }

    /// Set a device up: attach it, map its rings (a NIC's receive pages too), publish it ready.
    fn setup(
        &mut self,
        d: usize,
        dev: &mut Device,
        pools: &mut Pools,
        cfg: &Config,
        mem: &mut dyn MemoryServices,
    ) {
        self.attach(dev.id, dev.domain, IommuCmd::Attach);
        let ok = if matches!(dev.kind, Kind::Nic(_)) {
            let desc = self.coherent(dev, cfg.rx_ring * RX_DESC, mem);
            let mut ok = desc.is_some();
            let mut pages =
                Vec::with_capacity(usize::try_from(cfg.rx_ring / cfg.per_page).unwrap_or(0));
            if let Some(desc) = desc {
                for i in 0..cfg.rx_ring / cfg.per_page {
                    match self.rx_page(dev, pools, cfg, mem) {
                        Some(pg) => pages.push(pg),
                        None => {
                            ok = false;
                            break;
                        }
                    }
                    self.post(desc, cfg, i);
                }
            }
            if let Kind::Nic(nic) = &mut dev.kind {
                nic.desc = desc;
                nic.pages = pages;
                nic.posted = cfg.rx_ring;
            }
            ok
        } else {
            let sq = self.coherent(dev, cfg.queue_depth * SQE, mem);
            let cq = sq.and_then(|_| self.coherent(dev, cfg.queue_depth * CQE, mem));
            if let Kind::Disk(disk) = &mut dev.kind {
                disk.sq = sq;
                disk.cq = cq;
            }
            cq.is_some()
        };
        if ok {
            dev.phase = Phase::Running;
            self.note(Note::Ready { dev: d });
        } else {
            self.note(Note::Abandoned { dev: d });
            self.teardown(dev, mem);
        }
    }

    /// Release everything the device has mapped and detach it.
    fn teardown(&mut self, dev: &mut Device, mem: &mut dyn MemoryServices) {
        match &mut dev.kind {
            Kind::Nic(nic) => {
                let pages = std::mem::take(&mut nic.pages);
                let desc = nic.desc.take();
                for pg in pages {
                    self.release_rx(dev, pg, mem);
                }
                self.release_ring(dev, desc, mem);
            }
            Kind::Disk(disk) => {
                let (sq, cq) = (disk.sq.take(), disk.cq.take());
                self.release_ring(dev, sq, mem);
                self.release_ring(dev, cq, mem);
            }
        }
        self.attach(dev.id, dev.domain, IommuCmd::Detach);
        dev.phase = Phase::Done;
    }

    /// One driver action for a running NIC, if it has one.
    fn nic_step(
        &mut self,
        d: usize,
        dev: &mut Device,
        pools: &mut Pools,
        cfg: &Config,
        mem: &mut dyn MemoryServices,
    ) -> bool {
        let Kind::Nic(nic) = &mut dev.kind else { return false };
        let waiting = nic.consumed - nic.handled;
        let device_done = nic.consumed == cfg.packets;
        if waiting > 0 && (waiting >= cfg.napi_budget || nic.posted == 0 || device_done) {
            self.napi_poll(d, dev, pools, cfg, mem, waiting.min(cfg.napi_budget));
            return true;
        }
        if device_done && waiting == 0 {
            self.teardown(dev, mem);
            return true;
        }
        false
    }

    /// Handle `n` received packets; refill each page whose buffers are all handled.
    fn napi_poll(
        &mut self,
        d: usize,
        dev: &mut Device,
        pools: &mut Pools,
        cfg: &Config,
        mem: &mut dyn MemoryServices,
        n: u64,
    ) {
        let mut posted = 0;
        for _ in 0..n {
            let Kind::Nic(nic) = &mut dev.kind else { return };
            let Some(desc) = nic.desc else { return };
            let slot = nic.handled % cfg.rx_ring;
            nic.handled += 1;
            let i = slot / cfg.per_page;
            let pg = nic.pages[usize::try_from(i).unwrap_or(0)];
            self.load(desc.spa.raw() + slot * RX_DESC, 16);
            // The driver does not read a page it mapped by mistake (a host read of a private
            // page would be a host RMP fault, not what this workload shows).
            if pg.buf != Buf::Private {
                self.load(pg.spa.raw() + (slot % cfg.per_page) * cfg.rx_buf, HEADER);
            }
            if slot % cfg.per_page == cfg.per_page - 1 {
                self.refill(dev, pools, cfg, mem, i, desc);
                posted += cfg.per_page;
            }
        }
        if posted > 0 {
            self.note(Note::Posted { dev: d, slots: posted });
        }
    }

    /// Refill receive page `i`: recycle it, or replace it by a new page (allocated and mapped
    /// before the old one is released; kept when memory ran out); then post its buffers.
    fn refill(
        &mut self,
        dev: &mut Device,
        pools: &mut Pools,
        cfg: &Config,
        mem: &mut dyn MemoryServices,
        i: u64,
        desc: Ring,
    ) {
        let recycle = dev.host_rng.below(PPM) < cfg.recycle_ppm;
        if !recycle {
            let fresh = self.rx_page(dev, pools, cfg, mem);
            if let (Some(new), Kind::Nic(nic)) = (fresh, &mut dev.kind) {
                let old = std::mem::replace(&mut nic.pages[usize::try_from(i).unwrap_or(0)], new);
                self.release_rx(dev, old, mem);
            }
        }
        self.post(desc, cfg, i);
    }

    /// One driver action for a running disk, if it has one: handle a completion, submit an
    /// I/O, or tear down when everything is done.
    fn disk_step(
        &mut self,
        d: usize,
        dev: &mut Device,
        pools: &mut Pools,
        cfg: &Config,
        mem: &mut dyn MemoryServices,
    ) -> bool {
        let Kind::Disk(disk) = &mut dev.kind else { return false };
        if let Some(io) = disk.completed.pop_front() {
            let (Some(cq), spas) = (disk.cq, disk.spas[usize::try_from(io.slot).unwrap_or(0)])
            else {
                return false;
            };
            disk.outstanding -= 1;
            self.load(cq.spa.raw() + io.slot * CQE, 16);
            self.unmap(dev.domain, io.iova, io.pages);
            dev.iova.free(io.iova, io.pages);
            if io.buf == Buf::Host {
                for &spa in &spas[..usize::try_from(io.pages).unwrap_or(0)] {
                    mem.free_pages(spa, 0);
                    self.ev(Event::PageFree { spa, order: 0 });
                }
            }
            return true;
        }
        if !disk.closing && disk.submitted == cfg.ios {
            disk.closing = true;
            self.note(Note::Closed { dev: d });
            return true;
        }
        if !disk.closing && disk.outstanding < cfg.queue_depth {
            self.submit(d, dev, pools, cfg, mem);
            return true;
        }
        if disk.closing && disk.outstanding == 0 {
            self.teardown(dev, mem);
            return true;
        }
        false
    }

    /// Submit one I/O: draw it, get its pages, map them at one IOVA range, store the command.
    fn submit(
        &mut self,
        d: usize,
        dev: &mut Device,
        pools: &mut Pools,
        cfg: &Config,
        mem: &mut dyn MemoryServices,
    ) {
        let rng = &mut dev.host_rng;
        let w = rng.below(cfg.io_sizes.last().map_or(1, |x| x.1));
        let pages = cfg.io_sizes.iter().find(|x| w < x.1).map_or(1, |x| x.0);
        let to_memory = rng.below(PPM) < cfg.read_ppm;
        let choice = pools.choose(rng, cfg);
        let Kind::Disk(disk) = &mut dev.kind else { return };
        let Some(sq) = disk.sq else { return };
        let slot = disk.submitted % cfg.queue_depth;
        let spas = &mut disk.spas[usize::try_from(slot).unwrap_or(0)];
        let n = usize::try_from(pages).unwrap_or(0);
        let buf = match choice {
            Choice::Host => {
                for k in 0..n {
                    let Some(spa) = mem.alloc_pages(0, AllocKind::User) else {
                        // Out of memory: give back this I/O's pages and submit nothing more.
                        for &spa in &spas[..k] {
                            mem.free_pages(spa, 0);
                            self.ev(Event::PageFree { spa, order: 0 });
                        }
                        disk.closing = true;
                        self.note(Note::Closed { dev: d });
                        return;
                    };
                    spas[k] = spa;
                    self.ev(Event::PageAlloc { spa, order: 0, kind: AllocKind::User });
                }
                Buf::Host
            }
            Choice::Bounce(g) => {
                for s in spas.iter_mut().take(n) {
                    *s = pools.bounce_page(g);
                }
                Buf::Bounce
            }
            Choice::Private => {
                for s in spas.iter_mut().take(n) {
                    *s = pools.victim_page();
                }
                Buf::Private
            }
        };
        let iova = dev.iova.alloc(pages);
        for (k, &spa) in spas.iter().take(n).enumerate() {
            self.map(dev.domain, iova + k as u64 * PAGE, spa, to_memory);
        }
        self.store(sq.spa.raw() + slot * SQE, 64);
        disk.submitted += 1;
        disk.outstanding += 1;
        self.note(Note::Submitted { dev: d, io: Io { slot, iova, pages, to_memory, buf } });
    }

    /// KVM and the VMM of guest `g`: its bounce pages, and its victim pages made private.
    fn populate(
        &mut self,
        g: usize,
        pools: &mut Pools,
        cfg: &Config,
        mem: &mut dyn MemoryServices,
    ) {
        let vm = u32::try_from(g + 1).unwrap_or(u32::MAX);
        let asid = u32::try_from(cfg.first_asid + g as u64).unwrap_or(u32::MAX);
        for _ in 0..cfg.bounce_pages {
            let Some(spa) = mem.alloc_pages(0, AllocKind::Guest) else { break };
            self.ev(Event::PageAlloc { spa, order: 0, kind: AllocKind::Guest });
            pools.bounce[g].push(spa);
        }
        for i in 0..cfg.victim_pages {
            let gpa = Gpa::new(cfg.working_set + i * PAGE);
            let Some(spa) = mem.gmem_alloc(vm, gpa, 0) else { break };
            self.ev(Event::GmemAlloc { gpa, spa, vm, order: 0 });
            self.ev(Event::RmpUpdate {
                spa,
                size: PageSize::K4,
                assigned: true,
                asid,
                gpa,
                immutable: false,
            });
            pools.private_of[g].push(spa);
        }
        self.note(Note::Pools { guest: g });
    }
}

/// The generator: I/O CPUs, guest CPUs, devices.
#[derive(Debug)]
struct DmaStreams {
    agents: Vec<Agent>,
    /// Streams `0..io.len()`.
    io: Vec<IoCpu>,
    /// The next `guests.agents.len()` streams.
    guests: GuestsWithKernel,
    /// The last streams, one per device.
    devices: Vec<Device>,
    pools: Pools,
    /// Notes taken from a queue, to publish (kept to reuse its capacity).
    notes: Vec<Note>,
    cfg: Config,
}

impl DmaStreams {
    fn publish(&mut self) {
        for i in 0..self.notes.len() {
            match self.notes[i] {
                Note::Ready { dev } => self.devices[dev].ready = true,
                Note::Abandoned { dev } => self.devices[dev].abandoned = true,
                Note::Posted { dev, slots } => {
                    if let Kind::Nic(n) = &mut self.devices[dev].kind {
                        n.posted += slots;
                    }
                }
                Note::Submitted { dev, io } => {
                    if let Kind::Disk(k) = &mut self.devices[dev].kind {
                        k.queued.push_back(io);
                    }
                }
                Note::Closed { dev } => {
                    if let Kind::Disk(k) = &mut self.devices[dev].kind {
                        k.closed = true;
                    }
                }
                Note::Consumed { dev } => {
                    if let Kind::Nic(n) = &mut self.devices[dev].kind {
                        n.consumed += 1;
                    }
                }
                Note::Completed { dev, io } => {
                    if let Kind::Disk(k) = &mut self.devices[dev].kind {
                        k.completed.push_back(io);
                    }
                }
                Note::Pools { guest } => {
                    let p = &mut self.pools;
                    if !p.bounce[guest].is_empty() {
                        p.ready.push(guest);
                    }
                    p.victims.extend_from_slice(&p.private_of[guest]);
                }
            }
        }
        self.notes.clear();
    }

    /// The next event of I/O CPU `c`.
    fn io_next(&mut self, c: usize, mem: &mut dyn MemoryServices) -> Option<Event> {
        loop {
            let e = take(&mut self.io[c].pending, &mut self.notes);
            self.publish();
            if e.is_some() {
                return e;
            }
            if self.io[c].finished {
                return None;
            }
            if !self.io_decide(c, mem) {
                // CPU 0 also populates the guests' pages that every driver may map: it stays
                // until every device is done.
                let done = |d: &Device| d.phase == Phase::Done;
                let cpu = &mut self.io[c];
                let all_done = if c == 0 {
                    self.devices.iter().all(done)
                } else {
                    cpu.devices.iter().all(|&d| done(&self.devices[d]))
                };
                if all_done {
                    cpu.finished = true;
                    return None;
                }
                return Some(Event::Work { count: self.cfg.poll_work });
            }
        }
    }

    /// Queue I/O CPU `c`'s next action; false if it has none now.
    fn io_decide(&mut self, c: usize, mem: &mut dyn MemoryServices) -> bool {
        let cpu = &mut self.io[c];
        let mut drv = Driver { out: &mut cpu.pending };
        if c == 0
            && let Some(g) = self.pools.created.pop_front()
        {
            drv.populate(g, &mut self.pools, &self.cfg, mem);
            return true;
        }
        let n = cpu.devices.len();
        for k in 0..n {
            let at = (cpu.turn + k) % n;
            let d = cpu.devices[at];
            let dev = &mut self.devices[d];
            let (pools, cfg) = (&mut self.pools, &self.cfg);
            let acted = match (dev.phase, &dev.kind) {
                (Phase::Setup, _) => {
                    drv.setup(d, dev, pools, cfg, mem);
                    true
                }
                (Phase::Running, Kind::Nic(_)) => drv.nic_step(d, dev, pools, cfg, mem),
                (Phase::Running, Kind::Disk(_)) => drv.disk_step(d, dev, pools, cfg, mem),
                (Phase::Done, _) => false,
            };
            if acted {
                cpu.turn = (at + 1) % n;
                return true;
            }
        }
        false
    }

    /// The next event of device `d`.
    fn dev_next(&mut self, d: usize) -> Option<Event> {
        loop {
            let e = take(&mut self.devices[d].pending, &mut self.notes);
            self.publish();
            if e.is_some() {
                return e;
            }
            let dev = &mut self.devices[d];
            if dev.abandoned {
                return None;
            }
            if !dev.ready {
                return Some(Event::Work { count: self.cfg.poll_work });
            }
            let cfg = &self.cfg;
            let out = &mut dev.pending;
            let iova = |a: u64| Address::Iova(Iova::new(a));
            match &mut dev.kind {
                Kind::Nic(nic) => {
                    if nic.head == cfg.packets {
                        return None;
                    }
                    if nic.posted == 0 {
                        return Some(Event::Work { count: cfg.poll_work });
                    }
                    let (Some(desc), slot) = (nic.desc, nic.head % cfg.rx_ring) else {
                        return None;
                    };
                    let pg = nic.pages[usize::try_from(slot / cfg.per_page).unwrap_or(0)];
                    let w = dev.rng.below(cfg.packet_mix.last().map_or(1, |x| x.1));
                    let frame = cfg.packet_mix.iter().find(|x| w < x.1).map_or(64, |x| x.0);
                    let bytes = frame.next_multiple_of(64).min(cfg.rx_buf);
                    let at = desc.iova + slot * RX_DESC;
                    let size = u32::try_from(bytes).unwrap_or(u32::MAX);
                    out.push_back(Step::Ev(Event::DmaRead { addr: iova(at), size: 16 }));
                    let buf = pg.iova + (slot % cfg.per_page) * cfg.rx_buf;
                    out.push_back(Step::Ev(Event::DmaWrite { addr: iova(buf), size }));
                    out.push_back(Step::Ev(Event::DmaWrite { addr: iova(at), size: 16 }));
                    out.push_back(Step::Note(Note::Consumed { dev: d }));
                    nic.posted -= 1;
                    nic.head += 1;
                }
                Kind::Disk(disk) => {
                    let Some(io) = disk.queued.pop_front() else {
                        if disk.closed {
                            return None;
                        }
                        return Some(Event::Work { count: cfg.poll_work });
                    };
                    let (Some(sq), Some(cq)) = (disk.sq, disk.cq) else { return None };
                    out.push_back(Step::Ev(Event::DmaRead {
                        addr: iova(sq.iova + io.slot * SQE),
                        size: 64,
                    }));
                    for k in 0..io.pages {
                        let addr = iova(io.iova + k * PAGE);
                        out.push_back(Step::Ev(if io.to_memory {
                            Event::DmaWrite { addr, size: 4096 }
                        } else {
                            Event::DmaRead { addr, size: 4096 }
                        }));
                    }
                    out.push_back(Step::Ev(Event::DmaWrite {
                        addr: iova(cq.iova + io.slot * CQE),
                        size: 16,
                    }));
                    out.push_back(Step::Note(Note::Completed { dev: d, io }));
                }
            }
        }
    }
}

impl Workload for DmaStreams {
    fn agents(&self) -> &[Agent] {
        &self.agents
    }

    fn next(&mut self, stream: usize, mem: &mut dyn MemoryServices) -> Option<Event> {
        let io = self.io.len();
        let guests = self.guests.agents.len();
        if stream < io {
            return self.io_next(stream, mem);
        }
        if stream < io + guests {
            let e = self.guests.next(stream - io, mem);
            if let Some(Event::VmCreate { vm, .. }) = &e
                && let Some(g) = vm.checked_sub(1).and_then(|g| usize::try_from(g).ok())
                && g < self.pools.bounce.len()
            {
                self.pools.created.push_back(g);
            }
            return e;
        }
        let d = stream - io - guests;
        if d >= self.devices.len() {
            return None;
        }
        self.dev_next(d)
    }

    fn agent_of_last(&self, stream: usize) -> Agent {
        let io = self.io.len();
        match stream.checked_sub(io) {
            Some(g) if g < self.guests.agents.len() => self.guests.agent_of_last(g),
            _ => self.agents[stream],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NullMemory;
    use crate::testutil::{allocations, drain};
    use proptest::prelude::*;
    use sim_core::{Context, Rng};
    use std::collections::{BTreeMap, BTreeSet};

    fn params(items: &[&str]) -> Params {
        Params::parse(items.iter().copied()).unwrap()
    }

    /// Small enough to drain in a few milliseconds, with both kinds of device on two CPUs.
    fn small() -> Vec<&'static str> {
        vec![
            "nics=2",
            "disks=2",
            "io_cpus=2",
            "packets=600",
            "rx_ring=64",
            "ios=120",
            "queue_depth=8",
            "guests=2",
            "guest_memory=2M",
            "working_set=256K",
            "image=16K",
            "accesses=2000",
            "psc_interval=50",
            "bounce_pages=16",
            "victim_pages=4",
        ]
    }

    /// Every event of every stream, a stream picked by `pick` among the live ones each time.
    fn drain_by(
        p: &Params,
        seed: u64,
        mut pick: impl FnMut(&[usize]) -> usize,
    ) -> Vec<(usize, Agent, Event)> {
        let mut w = INFO.instantiate(p, seed).unwrap();
        let mut mem = NullMemory::default();
        let mut live: Vec<usize> = (0..w.agents().len()).collect();
        let mut out = Vec::new();
        while !live.is_empty() {
            assert!(out.len() < 5_000_000, "no end: {w:?}");
            let i = pick(&live);
            let s = live[i];
            match w.next(s, &mut mem) {
                Some(e) => out.push((s, w.agent_of_last(s), e)),
                None => {
                    live.remove(i);
                }
            }
        }
        out
    }

    /// What the checker counts.
    #[derive(Debug, Default)]
    struct Seen {
        /// Per device: DMA events (idle `work` excluded).
        dma: BTreeMap<u32, u64>,
        /// Per device: NIC frames (writes of 64 bytes or more), disk commands (64-byte reads).
        units: BTreeMap<u32, u64>,
        /// Maps of an `rmpupdate`-assigned page into an I/O domain, and DMAs reaching one.
        private_maps: u64,
        private_dma: u64,
        /// Maps of a VMM (`kind=guest`) page, and DMAs reaching one.
        bounce_maps: u64,
        bounce_dma: u64,
        /// Pages assigned by `rmpupdate`.
        assigned: u64,
    }

    /// Follow the IOMMU programming of a drained stream and check every DMA against it: the
    /// device is attached, every page it touches is mapped in its domain by an earlier event
    /// (writable for a write), an unmapped IOVA is invalidated and waited for before it is
    /// mapped again or the device detached, and at the end nothing is mapped or attached and
    /// every host page the drivers allocated is freed.
    fn check(ev: &[(usize, Agent, Event)]) -> Result<Seen, String> {
        let mut seen = Seen::default();
        let mut domain_of: BTreeMap<u32, u32> = BTreeMap::new();
        let mut ever_attached = BTreeSet::new();
        // (domain, IOVA page) → (SPA, writable).
        let mut maps: BTreeMap<(u32, u64), (u64, bool)> = BTreeMap::new();
        // (domain, IOVA page) unmapped → invalidated yet.
        let mut stale: BTreeMap<(u32, u64), bool> = BTreeMap::new();
        let mut private = BTreeSet::new();
        let mut bounce = BTreeSet::new();
        let mut host_pages: BTreeMap<u64, u8> = BTreeMap::new();
        for (n, (_, a, e)) in ev.iter().enumerate() {
            let at = || format!("event {n} ({a} {e:?})");
            match (a, e) {
                (
                    Agent::Device(id),
                    Event::DmaRead { addr, size } | Event::DmaWrite { addr, size },
                ) => {
                    let write = matches!(e, Event::DmaWrite { .. });
                    let Address::Iova(iova) = addr else {
                        return Err(format!("{}: not an IOVA", at()));
                    };
                    let dom =
                        *domain_of.get(id).ok_or_else(|| format!("{}: not attached", at()))?;
                    let (first, last) =
                        (iova.raw() / PAGE, (iova.raw() + u64::from(*size) - 1) / PAGE);
                    for pg in first..=last {
                        let &(spa, w) = maps
                            .get(&(dom, pg))
                            .ok_or_else(|| format!("{}: IOVA page {pg:#x} not mapped", at()))?;
                        if write && !w {
                            return Err(format!("{}: write through a read-only mapping", at()));
                        }
                        if private.contains(&spa) {
                            seen.private_dma += 1;
                        }
                        if bounce.contains(&spa) {
                            seen.bounce_dma += 1;
                        }
                    }
                    *seen.dma.entry(*id).or_insert(0) += 1;
                    let disk = *id >= 0x200;
                    if (disk && !write && *size == 64) || (!disk && write && *size >= 64) {
                        *seen.units.entry(*id).or_insert(0) += 1;
                    }
                }
                (Agent::Device(_), Event::Work { .. }) => {}
                (Agent::Device(_), _) => return Err(format!("{}: a device issued this", at())),
                (_, Event::Iommu { cmd, device, domain, addr, pages }) => match cmd {
                    IommuCmd::Attach => {
                        if domain_of.insert(*device, *domain).is_some()
                            || !ever_attached.insert(*device)
                        {
                            return Err(format!("{}: attached twice", at()));
                        }
                    }
                    IommuCmd::Detach => {
                        let d = domain_of
                            .remove(device)
                            .ok_or_else(|| format!("{}: not attached", at()))?;
                        if maps.keys().any(|k| k.0 == d) || stale.keys().any(|k| k.0 == d) {
                            return Err(format!(
                                "{}: detached with pages mapped or not flushed",
                                at()
                            ));
                        }
                    }
                    IommuCmd::InvalidateIommuPages => {
                        let a = addr.ok_or_else(|| format!("{}: no address", at()))?.raw() / PAGE;
                        for pg in a..a + pages {
                            if let Some(inv) = stale.get_mut(&(*domain, pg)) {
                                *inv = true;
                            }
                        }
                    }
                    IommuCmd::CompletionWait => stale.retain(|_, inv| !*inv),
                    IommuCmd::InvalidateDevtabEntry => {}
                    _ => return Err(format!("{}: unexpected command", at())),
                },
                (_, Event::Map { va, pa, size, space: Space::IoDomain(d), w, x, user, enc }) => {
                    let (Address::Iova(iova), Address::Spa(spa)) = (va, pa) else {
                        return Err(format!("{}: not iova -> phys", at()));
                    };
                    if *size != PageSize::K4 || *x || *user || *enc {
                        return Err(format!("{}: unexpected mapping", at()));
                    }
                    let key = (*d, iova.raw() / PAGE);
                    if stale.contains_key(&key) {
                        return Err(format!("{}: IOVA reused before its invalidation", at()));
                    }
                    if maps.insert(key, (spa.raw(), *w)).is_some() {
                        return Err(format!("{}: IOVA mapped twice", at()));
                    }
                    if private.contains(&spa.raw()) {
                        seen.private_maps += 1;
                    }
                    if bounce.contains(&spa.raw()) {
                        seen.bounce_maps += 1;
                    }
                }
                (
                    _,
                    Event::Unmap {
                        va: Address::Iova(iova),
                        size: PageSize::K4,
                        space: Space::IoDomain(d),
                    },
                ) => {
                    let key = (*d, iova.raw() / PAGE);
                    if maps.remove(&key).is_none() {
                        return Err(format!("{}: unmap of an IOVA not mapped", at()));
                    }
                    stale.insert(key, false);
                }
                (_, Event::RmpUpdate { spa, assigned: true, .. }) => {
                    private.insert(spa.raw());
                    seen.assigned += 1;
                }
                (_, Event::PageAlloc { spa, order, kind }) => {
                    if *kind == AllocKind::Guest {
                        bounce.insert(spa.raw());
                    } else if host_pages.insert(spa.raw(), *order).is_some() {
                        return Err(format!("{}: page allocated twice", at()));
                    }
                }
                (_, Event::PageFree { spa, order })
                    if host_pages.remove(&spa.raw()) != Some(*order) =>
                {
                    return Err(format!("{}: free of a page not allocated", at()));
                }
                _ => {}
            }
        }
        if !maps.is_empty() || !stale.is_empty() || !domain_of.is_empty() {
            return Err(format!(
                "at the end: {} mapped, {} not flushed, {} attached",
                maps.len(),
                stale.len(),
                domain_of.len()
            ));
        }
        if !host_pages.is_empty() {
            return Err(format!("{} host pages never freed", host_pages.len()));
        }
        Ok(seen)
    }

    fn ids(nics: u32, disks: u32) -> (Vec<u32>, Vec<u32>) {
        (
            (0..nics).map(|i| 0x100 | (i << 3)).collect(),
            (0..disks).map(|i| 0x200 | (i << 3)).collect(),
        )
    }

    /// Every DMA reaches a live mapping of its device's domain, under three interleavings: the
    /// engine-like round-robin, devices first whenever they have anything, and a random pick.
    #[test]
    fn every_dma_reaches_a_mapping_programmed_before_it() {
        let p = params(&small());
        let mut order = Rng::new(7);
        let mut eager = Rng::new(8);
        for ev in [
            drain(&INFO, &p, 1),
            // The devices are the last streams: nine times in ten the last live one (a scheduler
            // that never runs the driver while a device idles would never end).
            drain_by(&p, 1, |live| {
                let n = live.len() as u64;
                let i = if eager.chance(9, 10) { n - 1 } else { eager.below(n) };
                usize::try_from(i).unwrap()
            }),
            drain_by(&p, 1, |live| usize::try_from(order.below(live.len() as u64)).unwrap()),
        ] {
            let seen = check(&ev).unwrap();
            let (nics, disks) = ids(2, 2);
            for id in nics {
                assert_eq!(seen.units[&id], 600, "NIC {id:#x} frames");
            }
            for id in disks {
                assert_eq!(seen.units[&id], 120, "disk {id:#x} commands");
            }
            assert!(seen.bounce_maps > 0 && seen.bounce_dma > 0, "{seen:?}");
            assert_eq!((seen.private_maps, seen.private_dma), (0, 0));
        }
    }

    /// With misprogrammed=0 no guest-private page is ever mapped for a device, though the
    /// private pages exist; with misprogrammed>0 some are, and DMA reaches them.
    #[test]
    fn only_misprogrammed_maps_private_pages() {
        let p = params(&small());
        let seen = check(&drain(&INFO, &p, 3)).unwrap();
        assert_eq!(seen.assigned, 2 * 4);
        assert_eq!((seen.private_maps, seen.private_dma), (0, 0));
        let mut items = small();
        items.push("misprogrammed=0.2");
        let seen = check(&drain(&INFO, &params(&items), 3)).unwrap();
        assert!(seen.private_maps > 0 && seen.private_dma > 0, "{seen:?}");
        // About a fifth of the DMA units go to private pages: between 5% and 40% of the DMAs.
        let dma: u64 = seen.dma.values().sum();
        assert!(seen.private_dma * 20 > dma && seen.private_dma * 5 < dma * 2, "{seen:?} {dma}");
    }

    /// I/O CPUs issue as their host kernel only, devices as themselves only (DMA and idle
    /// `work`), guest CPUs on their own CPU only; the declared agents are as documented.
    #[test]
    fn streams_issue_only_as_their_agents() {
        let p = params(&small());
        let w = INFO.instantiate(&p, 0).unwrap();
        let (nics, disks) = ids(2, 2);
        let mut want: Vec<Agent> = [0, 1, 2, 3].map(Agent::host).to_vec();
        want.extend(nics.iter().chain(&disks).map(|&d| Agent::Device(d)));
        assert_eq!(w.agents(), &want[..]);
        for (s, a, e) in drain(&INFO, &p, 5) {
            match s {
                0 | 1 => {
                    assert_eq!(a, Agent::host(u32::try_from(s).unwrap()), "{e:?}");
                    assert!(
                        matches!(
                            e,
                            Event::Iommu { .. }
                                | Event::Map { .. }
                                | Event::Unmap { .. }
                                | Event::PageAlloc { .. }
                                | Event::PageFree { .. }
                                | Event::Load { addr: Address::Spa(_), .. }
                                | Event::Store { addr: Address::Spa(_), .. }
                                | Event::Work { .. }
                        ) || (s == 0
                            && matches!(e, Event::GmemAlloc { .. } | Event::RmpUpdate { .. })),
                        "stream {s}: {e:?}"
                    );
                }
                2 | 3 => {
                    let cpu = u32::try_from(s).unwrap();
                    assert_eq!(a.cpu(), Some(cpu), "{e:?}");
                    if let Agent::Cpu { ctx: Context::Guest { vm, .. }, .. } = a {
                        assert!(vm == 1 || vm == 2);
                    }
                }
                _ => {
                    assert_eq!(a, want[s]);
                    assert!(matches!(
                        e,
                        Event::DmaRead { .. } | Event::DmaWrite { .. } | Event::Work { .. }
                    ));
                }
            }
        }
    }

    /// The guests keep converting pages while the devices run: their page-state changes are
    /// interleaved with DMA.
    #[test]
    fn guests_convert_pages_while_devices_run() {
        let ev = drain(&INFO, &params(&small()), 2);
        let pos = |f: &dyn Fn(&Event) -> bool| -> Vec<usize> {
            ev.iter().enumerate().filter(|(_, (_, _, e))| f(e)).map(|(i, _)| i).collect()
        };
        let pscs = pos(&|e| matches!(e, Event::Psc { .. }));
        let dmas = pos(&|e| matches!(e, Event::DmaWrite { .. } | Event::DmaRead { .. }));
        assert!(pscs.len() > 20, "{}", pscs.len());
        let between = pscs.iter().filter(|&&i| i > dmas[0] && i < *dmas.last().unwrap()).count();
        assert!(between > pscs.len() / 2, "{between} of {}", pscs.len());
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
            (&["rx_buf=3K"][..], "rx_buf"),
            (&["rx_buf=8K"][..], "rx_buf"),
            (&["rx_buf=1K"][..], "rx_buf"),
            (&["rx_ring=255"][..], "rx_ring"),
            (&["rx_ring=0"][..], "rx_ring"),
            (&["packet_mix=64:1,3000:1"][..], "packet_mix"),
            (&["packet_mix=64"][..], "packet_mix"),
            (&["packet_mix=64:0"][..], "packet_mix"),
            (&["io_sizes=6K:1"][..], "io_sizes"),
            (&["io_sizes=256K:1"][..], "io_sizes"),
            (&["queue_depth=0"][..], "queue_depth"),
            (&["misprogrammed=1.5"][..], "misprogrammed"),
            (&["misprogrammed=0.1", "guests=0"][..], "misprogrammed"),
            (&["misprogrammed=0.1", "victim_pages=0"][..], "misprogrammed"),
            (&["victim_pages=2000", "guest_memory=8M"][..], "victim_pages"),
            (&["nics=33"][..], "nics"),
            (&["poll_work=0"][..], "poll_work"),
            (&["read_fraction=-0.1"][..], "read_fraction"),
            (&["working_set=128M"][..], "working_set"),
            (&["psc_batch=254"][..], "psc_batch"),
        ] {
            match INFO.instantiate(&params(bad), 0) {
                Err(ParamError::Bad { name: n, .. }) => assert_eq!(n, name, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(matches!(
            INFO.instantiate(&params(&["devices=2"]), 0),
            Err(ParamError::Unknown { .. })
        ));
    }

    /// The defaults fit the default machine (4 CPUs) and stay small: well under a million
    /// events.
    #[test]
    fn defaults_fit_four_cpus_and_stay_small() {
        let w = INFO.instantiate(&Params::default(), 0).unwrap();
        assert!(w.agents().iter().filter_map(|a| a.cpu()).all(|c| c < 4));
        let ev = drain(&INFO, &Params::default(), 0);
        check(&ev).unwrap();
        assert!(ev.len() < 400_000, "{}", ev.len());
    }

    /// Host memory that runs out after `left` allocations.
    struct Scarce {
        inner: NullMemory,
        left: u64,
    }

    impl MemoryServices for Scarce {
        fn alloc_pages(&mut self, order: u8, kind: AllocKind) -> Option<Spa> {
            self.left = self.left.checked_sub(1)?;
            self.inner.alloc_pages(order, kind)
        }
        fn free_pages(&mut self, spa: Spa, order: u8) {
            self.inner.free_pages(spa, order);
        }
        fn gmem_alloc(&mut self, vm: u32, gpa: Gpa, order: u8) -> Option<Spa> {
            self.left = self.left.checked_sub(1)?;
            self.inner.gmem_alloc(vm, gpa, order)
        }
        fn memory_bytes(&self) -> u64 {
            self.inner.memory_bytes()
        }
        fn free_bytes(&self) -> u64 {
            0
        }
    }

    /// Running out of memory at any point ends every stream, and what was mapped is still
    /// unmapped and freed (no page is freed that was not allocated).
    #[test]
    fn running_out_of_memory_ends_cleanly() {
        let p = params(&small());
        for left in [0, 1, 3, 20, 40, 70, 150, 400] {
            let mut w = INFO.instantiate(&p, 1).unwrap();
            let mut mem = Scarce { inner: NullMemory::default(), left };
            let n = w.agents().len();
            let mut live = vec![true; n];
            let mut ev = Vec::new();
            let mut steps = 0;
            while live.iter().any(|&l| l) {
                for (s, l) in live.iter_mut().enumerate() {
                    if *l {
                        match w.next(s, &mut mem) {
                            Some(e) => ev.push((s, w.agent_of_last(s), e)),
                            None => *l = false,
                        }
                    }
                }
                steps += 1;
                assert!(steps < 1_000_000, "left={left}: no end");
            }
            // Frees of pages allocated before memory ran out are all there; pages a stopped
            // disk never submitted are simply not allocated.
            check(&ev).map_err(|e| format!("left={left}: {e}")).unwrap();
        }
    }

    /// After the rings are set up, generation allocates nothing.
    #[test]
    fn steady_state_allocates_nothing() {
        let p = params(&["packets=200000", "ios=20000", "accesses=400000", "misprogrammed=0.1"]);
        let mut w = INFO.instantiate(&p, 1).unwrap();
        let mut mem = NullMemory::default();
        let n = w.agents().len();
        for _ in 0..50_000 {
            for s in 0..n {
                w.next(s, &mut mem);
            }
        }
        let before = allocations();
        let mut dma = 0u64;
        for _ in 0..200_000 {
            for s in 0..n {
                if let Some(Event::DmaRead { .. } | Event::DmaWrite { .. }) = w.next(s, &mut mem) {
                    dma += 1;
                }
            }
        }
        assert!(dma > 100_000, "{dma}");
        assert_eq!(allocations() - before, 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The IOMMU contract holds over small parameter sets and random interleavings.
        #[test]
        fn contract_holds(
            nics in 0u64..3,
            disks in 0u64..3,
            io_cpus in 1u64..4,
            packets in 0u64..300,
            rx_buf in prop::sample::select(vec!["2K", "4K"]),
            ring_pages in 1u64..20,
            budget in 1u64..100,
            recycle in 0u64..=100,
            ios in 0u64..60,
            qd in 1u64..12,
            shared in 0u64..=100,
            mis in 0u64..=100,
            guests in 1u64..3,
            seed in any::<u64>(),
        ) {
            let per_page = 4096 / ByteSize::parse(rx_buf).unwrap().0;
            let items = [
                format!("nics={nics}"),
                format!("disks={disks}"),
                format!("io_cpus={io_cpus}"),
                format!("packets={packets}"),
                format!("rx_buf={rx_buf}"),
                format!("rx_ring={}", ring_pages * per_page),
                format!("napi_budget={budget}"),
                format!("recycle={}", recycle as f64 / 100.0),
                format!("ios={ios}"),
                format!("queue_depth={qd}"),
                format!("shared_dma={}", shared as f64 / 100.0),
                format!("misprogrammed={}", mis as f64 / 100.0),
                format!("guests={guests}"),
                "guest_memory=1M".to_owned(),
                "working_set=128K".to_owned(),
                "image=8K".to_owned(),
                "accesses=300".to_owned(),
                "psc_interval=30".to_owned(),
                "bounce_pages=3".to_owned(),
                "victim_pages=2".to_owned(),
            ];
            let p = Params::parse(items.iter().map(String::as_str)).unwrap();
            let mut order = Rng::new(seed);
            let ev = drain_by(&p, seed, |live| usize::try_from(order.below(live.len() as u64)).unwrap());
            match check(&ev) {
                Ok(seen) => {
                    for i in 0..nics {
                        let id = u32::try_from(0x100 | (i << 3)).unwrap();
                        prop_assert_eq!(seen.units.get(&id).copied().unwrap_or(0), packets);
                    }
                    for i in 0..disks {
                        let id = u32::try_from(0x200 | (i << 3)).unwrap();
                        prop_assert_eq!(seen.units.get(&id).copied().unwrap_or(0), ios);
                    }
                    if mis == 0 {
                        prop_assert_eq!(seen.private_maps, 0);
                    }
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }
}
