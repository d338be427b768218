//! `tdx-boot` and `tdx-churn`: TDX trust domains built by KVM through SEAMCALLs, booted by a
//! Linux guest that accepts its memory lazily, and converting memory between private and shared
//! (issue #8 item 7; spec/tdx.md §2 SEAMCALL ABI, §3 KVM, §4.2 conversion).
//!
//! **Stream 0** (CPU 0, host kernel) builds the TDs one after another as KVM does for QEMU
//! (`KVM_TDX_INIT_VM`, `KVM_TDX_INIT_VCPU`, `KVM_TDX_INIT_MEM_REGION`, `KVM_TDX_FINALIZE_VM`;
//! the SEAMCALL order of tdx-model's `lifecycle_from_nothing_to_teardown` test): TD `t` is VM
//! `t+1` with HKID `first_hkid+t`.
//!
//! 1. `page-alloc` of the TDR, `seamcall 9` (TDH.MNG.CREATE, RCX = TDR, RDX = HKID), then
//!    `vm-create tdx vm=V asid=HKID` (the machine binds VM `V` to the TD built with that HKID, so
//!    the event follows TDH.MNG.CREATE; KVM itself creates the VM first), `seamcall 8`
//!    (TDH.MNG.KEY.CONFIG), six `page-alloc` + `seamcall 1` (TDH.MNG.ADDCX: the module's TDCS
//!    pages), a TD_PARAMS page with `seamcall 21` (TDH.MNG.INIT, RCX = TDR, RDX = TD_PARAMS),
//!    freed afterwards as KVM frees its buffer;
//! 2. per vCPU: `page-alloc` + `seamcall 10` (TDH.VP.CREATE, RCX = TDVPR, RDX = TDR), five
//!    `page-alloc` + `seamcall 4` (TDH.VP.ADDCX), `seamcall 22` (TDH.VP.INIT);
//! 3. `KVM_TDX_INIT_MEM_REGION` of the first `firmware_accepted` bytes (the TDVF image and its
//!    pre-accepted memory, modelled as one region at GPA 0), page by page (spec/tdx.md §3.5):
//!    `seamcall 3` (TDH.MEM.SEPT.ADD) at each S-EPT level whose table is still missing (levels
//!    3, 2, 1 at the first page of each 512 GiB, 1 GiB, 2 MiB), on a `page-alloc kind=pagetable`
//!    page; the destination from guest_memfd (`gmem-alloc`); `seamcall 2` (TDH.MEM.PAGE.ADD,
//!    R9 = the source page in QEMU's buffer, 2 MiB `page-alloc kind=user` blocks); sixteen
//!    `seamcall 16` (TDH.MR.EXTEND, one per 256-byte chunk; every page is measured);
//! 4. `seamcall 17` (TDH.MR.FINALIZE).
//!
//! **Streams 1..** are the vCPUs, TD by TD (`cN` = CPU `1 + t*vcpus + v` runs vCPU `v` of TD
//! `t`). A vCPU stream waits as its host kernel (`work poll`) until its TD is finalized, enters
//! it (`td-enter vm=V vcpu=v`) and continues as the guest (`cN vmV/vv`). When a conversion to
//! shared of the TD's private memory has kicked every vCPU out (KVM's zap path kicks them after
//! TDH.MEM.TRACK), the stream's next event re-enters (`td-enter`) as KVM's run loop does.
//!
//! **Accepting memory** follows Linux's `tdx_accept_memory` (arch/x86/coco/tdx/tdx-shared.c):
//! at each address it tries a 1 GiB ACCEPT (`tdcall 6 rcx=GPA|2`) when the address is 1 GiB
//! aligned and a gigabyte is left, then a 2 MiB one (`|1`) when 2 MiB aligned with 2 MiB left,
//! else a 4 KiB one; a failed try falls through to the next size (`try_accept_one` returns 0).
//! The TDX module never accepts 1 GiB (spec/tdx.md §2.5: levels 0 and 1 only). Under
//! mainline's 4K-only KVM a 2 MiB ACCEPT of a never-mapped range exits, KVM maps the first 4K
//! page, and the retried ACCEPT fails with TDX_PAGE_SIZE_MISMATCH, so 512 4K ACCEPTs follow;
//! with `host.tdx_private_2m` (and 2M guest_memfd folios) KVM maps 2 MiB and the ACCEPT succeeds.
//! A generator cannot see a TDCALL's result: `host_2m` tells it which of the two the machine
//! will do, and must match the machine's `host.tdx_private_2m`.
//!
//! **Guest-physical accesses**, as in `snp-churn`: the guest's accesses name GPAs (`gpa:`), so
//! no guest page table is modelled; a shared access sets the shared bit (47, GPAW 48).
//!
//! **Cost.** Steady-state generation allocates nothing: the published working set of each TD is
//! a vector sized for all its units up front, the build queue holds at most one page's events.

use crate::kernel::{self, KernelConfig, KernelStream};
use crate::params::{ParamDoc, ParamError, Params};
use crate::snp_churn::write_threshold;
use crate::{Workload, WorkloadInfo};
use sim_core::codec::Hex;
use sim_core::event::{Address, AllocKind, MemType, VmKind};
use sim_core::{Agent, Event, Gpa, MemoryServices, Rng, Spa};
use std::collections::VecDeque;
use tdx_model::leaf;

const PAGE: u64 = 4096;
/// The unit of lazy acceptance: `EFI_UNACCEPTED_UNIT_SIZE` = `PMD_SIZE` (arch/x86/include/asm/
/// efi.h), the granule of the unaccepted-memory bitmap `accept_memory` walks
/// (drivers/firmware/efi/unaccepted_memory.c).
const UNIT: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
/// The shared bit of a GPAW-48 TD (spec/tdx.md §1.1; KVM's `TDX_SHARED_BIT_PWL_4`).
const SHARED_BIT: u64 = 1 << 47;
const LINE: u64 = 64;
/// TDH.MR.EXTEND measures 256 bytes (`TDX_EXTENDMR_CHUNKSIZE`; 16 calls per 4K page).
const MR_CHUNK: u64 = 256;
/// The root level of a 4-level S-EPT: SEPT.ADD levels 3, 2, 1 link the tables below it.
const ROOT_LEVEL: u64 = 3;
/// `IO_TLB_DEFAULT_SIZE` (include/linux/swiotlb.h) and `SZ_1G`: the clamp of the SWIOTLB size
/// `mem_encrypt_setup_arch` computes for SEV and TDX guests.
const SWIOTLB_MIN: u64 = 64 << 20;
const SWIOTLB_MAX: u64 = 1 << 30;
/// Most guest memory: well below the shared bit.
const MAX_GUEST_MEMORY: u64 = 1 << 40;

/// Parameters both workloads have, documented once.
const TDS: ParamDoc =
    ParamDoc { name: "tds", default: "1", doc: "TDs, built one after another on CPU 0" };
const VCPUS: ParamDoc = ParamDoc {
    name: "vcpus",
    default: "2",
    doc: "vCPUs per TD, each on its own CPU (CPU 1 + t*vcpus + v); needs machine.cpus >= \
          1 + tds*vcpus",
};
const HOST_2M: ParamDoc = ParamDoc {
    name: "host_2m",
    default: "false",
    doc: "whether the machine maps private memory at 2M (host.tdx_private_2m=true with \
          host.gmem_folio_order=9): the guest's 2M ACCEPTs then succeed and no 4K fallback \
          follows. Must match the machine; default false, mainline KVM (4K only)",
};
const FIRST_HKID: ParamDoc = ParamDoc {
    name: "first_hkid",
    default: "16",
    doc: "HKID of the first TD (the [tdx] private HKID range starts at 16 by default)",
};
const WRITE_FRACTION: ParamDoc = ParamDoc {
    name: "write_fraction",
    default: "0.3",
    doc: "fraction of guest accesses that are stores. Unsourced: a plausible load/store mix",
};
const SEQ_LINES: ParamDoc = ParamDoc {
    name: "seq_lines",
    default: "16",
    doc: "mean length of a sequential run, in 64-byte lines (uniform in 1..=2*seq_lines-1). \
          Unsourced: a generic locality model, as snp-churn's",
};
const WORK: ParamDoc = ParamDoc {
    name: "work",
    default: "20",
    doc: "non-memory instructions after each guest working-set access",
};
const POLL: ParamDoc = ParamDoc {
    name: "poll",
    default: "10000",
    doc: "instructions of one `work` event while a vCPU waits for its TD to be finalized (as \
          its host kernel) or for the boot CPU (as the guest). Unsourced: only bounds how late \
          a waiting vCPU starts",
};

const BOOT_PARAMS: &[ParamDoc] = &[
    TDS,
    VCPUS,
    ParamDoc {
        name: "guest_memory",
        default: "256M",
        doc: "memory per TD (bytes, a multiple of 2M), one range from GPA 0 (no PCI hole)",
    },
    ParamDoc {
        name: "firmware_accepted",
        default: "4M",
        doc: "bytes from GPA 0 that KVM_TDX_INIT_MEM_REGION adds (TDH.MEM.PAGE.ADD) and \
              measures before finalize: the TDVF image and its pre-accepted memory (a multiple \
              of 2M, at least 2M). Unsourced: a TDVF image is a few MiB",
    },
    ParamDoc {
        name: "touch",
        default: "0.5",
        doc: "fraction of guest memory the boot accepts and uses, the firmware region and the \
              SWIOTLB included (rounded to 2M units). Unsourced",
    },
    ParamDoc {
        name: "accesses",
        default: "100000",
        doc: "working-set accesses per vCPU; the lazy accepts are spread evenly among them",
    },
    ParamDoc {
        name: "swiotlb",
        default: "auto",
        doc: "bytes the boot CPU accepts (memblock) and converts to shared with MapGPA for the \
              SWIOTLB, rounded up to 2M; `auto` = 6% of guest memory clamped to 64M..1G, as \
              mem_encrypt_setup_arch (arch/x86/mm/mem_encrypt.c) sizes it for SEV and TDX \
              guests (64M for the default 256M)",
    },
    ParamDoc {
        name: "io_fraction",
        default: "0.05",
        doc: "fraction of working-set runs that are bounce-buffer copies in the SWIOTLB \
              (shared accesses). Unsourced",
    },
    WRITE_FRACTION,
    SEQ_LINES,
    WORK,
    POLL,
    FIRST_HKID,
    HOST_2M,
];

const CHURN_PARAMS: &[ParamDoc] = &[
    TDS,
    VCPUS,
    ParamDoc {
        name: "guest_memory",
        default: "256M",
        doc: "memory per TD (bytes, a multiple of 2M), one range from GPA 0",
    },
    ParamDoc {
        name: "firmware_accepted",
        default: "2M",
        doc: "bytes from GPA 0 added and measured by KVM_TDX_INIT_MEM_REGION (a multiple of \
              2M, at least 2M)",
    },
    ParamDoc {
        name: "working_set",
        default: "32M",
        doc: "private working set above the firmware region (a multiple of 2M), accepted at \
              boot by the TD's vCPUs, never converted. Unsourced",
    },
    ParamDoc {
        name: "pool",
        default: "8M",
        doc: "per vCPU, the range its conversions come from (a multiple of 2M, above the \
              working set), accepted at boot. Unsourced: stands for DMA buffers",
    },
    ParamDoc {
        name: "accesses",
        default: "200000",
        doc: "private working-set accesses per vCPU after its boot",
    },
    ParamDoc {
        name: "convert_interval",
        default: "1000",
        doc: "private accesses between two conversions of a vCPU (0: none). Default: issue \
              #4's \"at least one page-state change per 1,000 accesses\", as snp-churn",
    },
    ParamDoc {
        name: "convert_sizes",
        default: "4K:8,64K:4,2M:1",
        doc: "bytes of one conversion as SIZE:WEIGHT,... (multiples of 4K, at most pool; \
              multiples of 2M when host_2m). Unsourced: mostly small DMA buffers, now and then \
              a 2M pool",
    },
    ParamDoc {
        name: "shared_accesses",
        default: "64",
        doc: "accesses of a converted range while it is shared (64-byte lines in order, from \
              its start, wrapping). Unsourced: a few bounce copies",
    },
    WRITE_FRACTION,
    SEQ_LINES,
    WORK,
    POLL,
    FIRST_HKID,
    HOST_2M,
    ParamDoc {
        name: "kernel_cpus",
        default: "0",
        doc: "CPUs running host-kernel direct-map activity (snp-launch's kernel streams: slab \
              pages from the same allocator as the TDs' pages), numbered after the vCPU CPUs; \
              with it, tdx-churn and snp-churn put the same kernel traffic beside converting \
              guests (docs/snp-vs-tdx.md)",
    },
    ParamDoc {
        name: "kernel_accesses",
        default: "100000",
        doc: "direct-map accesses per kernel CPU",
    },
    kernel::SLAB_PAGES,
    kernel::SLAB_CHURN,
];

/// Registry entry of `tdx-boot`.
pub(crate) const BOOT_INFO: WorkloadInfo = WorkloadInfo {
    name: "tdx-boot",
    summary: "TDs built by KVM (SEAMCALLs, INIT_MEM_REGION, finalize) and booting with lazy \
              accept in 2M units, SWIOTLB converted to shared",
    description: "CPU 0 builds each TD as KVM and QEMU do; each vCPU enters its TD once it is \
                  finalized. The boot CPU accepts the SWIOTLB and converts it to shared \
                  (MapGPA); every vCPU then accepts 2M units as it first needs them (2M \
                  ACCEPT, 4K fallback, as Linux's tdx_accept_memory), zeroes them and runs a \
                  working set over the accepted memory and the SWIOTLB.",
    params: BOOT_PARAMS,
    build: build_boot,
    preset: Some("spr"),
};

/// Registry entry of `tdx-churn`.
pub(crate) const CHURN_INFO: WorkloadInfo = WorkloadInfo {
    name: "tdx-churn",
    summary: "long-running TDs converting ranges private -> shared -> private (MapGPA, KVM \
              zaps, re-accept) while accessing a private working set",
    description: "Each TD is built and boots (accepting its working set and each vCPU's \
                  pool); every convert_interval accesses a vCPU converts a range of its pool \
                  to shared (KVM zaps the private pages), uses it with shared accesses, \
                  converts it back to private and accepts it again, as Linux's \
                  set_memory_decrypted/encrypted do for DMA buffers.",
    params: CHURN_PARAMS,
    build: build_churn,
    preset: Some("spr"),
};

/// What every TD and vCPU share.
#[derive(Debug, Clone, Copy)]
struct TdConfig {
    vcpus: u32,
    guest_memory: u64,
    /// Bytes added by KVM_TDX_INIT_MEM_REGION from GPA 0 (a multiple of 2M).
    firmware: u64,
    first_hkid: u32,
    host_2m: bool,
    poll: u64,
    work: u64,
    write_below: u64,
    seq_lines: u64,
}

/// What a vCPU does after entering its TD.
#[derive(Debug, Clone)]
enum Program {
    Boot {
        accesses: u64,
        /// SWIOTLB range.
        swiotlb: (u64, u64),
        /// Units accepted lazily, and where the first one is.
        lazy_units: u64,
        /// Accesses of one vCPU between two unit takes (`u64::MAX`: none to take).
        gap: u64,
        io_ppm: u64,
    },
    Churn {
        accesses: u64,
        ws_units: u64,
        /// First GPA of vCPU 0's pool; vCPU `v`'s is `pool_base + v*pool`.
        pool_base: u64,
        pool: u64,
        interval: u64,
        /// Conversion sizes with cumulative weights.
        sizes: Vec<(u64, u64)>,
        shared_accesses: u64,
    },
}

#[derive(Debug, Clone)]
struct Cfg {
    td: TdConfig,
    prog: Program,
}

/// Per-TD state the streams share. The engine executes each event before it asks any stream
/// for the next, so a flag set when a stream returns an event is seen by the others only after
/// that event ran.
#[derive(Debug)]
struct TdShared {
    finalized: bool,
    /// The build stopped (host memory exhausted): its vCPUs end.
    dead: bool,
    /// `tdx-boot`: the boot CPU has converted the SWIOTLB.
    boot_done: bool,
    /// Conversions to shared of accepted memory: each kicked every vCPU out of the TD.
    kicks: u64,
    /// Next unit to accept (lazy units for `tdx-boot`, working-set units for `tdx-churn`).
    next_unit: u64,
    /// 2M units of private memory accepted and ready, by first GPA (the firmware region's
    /// first): the private working set.
    ws: Vec<u64>,
}

fn hex(v: u64) -> Hex {
    Hex(v)
}

fn seamcall(lf: u16, rcx: u64, rdx: u64, r8: u64, r9: u64) -> Event {
    Event::Seamcall {
        leaf: lf,
        version: 0,
        rcx: hex(rcx),
        rdx: hex(rdx),
        r8: hex(r8),
        r9: hex(r9),
        r10: hex(0),
    }
}

fn accept(rcx: u64) -> Event {
    Event::Tdcall {
        leaf: leaf::TDG_MEM_PAGE_ACCEPT,
        rcx: hex(rcx),
        rdx: hex(0),
        r8: hex(0),
        r9: hex(0),
    }
}

fn gpa_access(gpa: u64, store: bool, size: u32) -> Event {
    let addr = Address::Gpa(Gpa::new(gpa));
    if store { Event::Store { addr, size, mt: MemType::Wb } } else { Event::Load { addr, size } }
}

fn level_bytes(level: u64) -> u64 {
    PAGE << (9 * level)
}

/// Stream 0: builds the TDs.
#[derive(Debug)]
struct Builder {
    td: usize,
    phase: BuildPhase,
    tdr: u64,
    /// QEMU's buffer of the current 2 MiB of the image.
    src: u64,
    pending: VecDeque<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BuildPhase {
    Create,
    /// Adding the page at this GPA.
    Region(u64),
    Finalize,
    Done,
}

impl Builder {
    fn alloc(&mut self, mem: &mut dyn MemoryServices, order: u8, kind: AllocKind) -> Option<u64> {
        let spa = mem.alloc_pages(order, kind)?;
        self.pending.push_back(Event::PageAlloc { spa, order, kind });
        Some(spa.raw())
    }

    /// Queue KVM_TDX_INIT_VM and KVM_TDX_INIT_VCPU of TD `self.td`.
    fn create(&mut self, cfg: &TdConfig, mem: &mut dyn MemoryServices) -> Option<()> {
        let t = u32::try_from(self.td).unwrap_or(u32::MAX);
        let (vm, hkid) = (t + 1, cfg.first_hkid + t);
        let tdr = self.alloc(mem, 0, AllocKind::Kernel)?;
        self.tdr = tdr;
        self.pending.push_back(seamcall(leaf::MNG_CREATE, tdr, u64::from(hkid), 0, 0));
        self.pending.push_back(Event::VmCreate {
            kind: VmKind::Tdx,
            vm,
            asid: hkid,
            memory: cfg.guest_memory,
        });
        self.pending.push_back(seamcall(leaf::MNG_KEY_CONFIG, tdr, 0, 0, 0));
        for _ in 0..tdx_model::MIN_TDCS_PAGES {
            let p = self.alloc(mem, 0, AllocKind::Kernel)?;
            self.pending.push_back(seamcall(leaf::MNG_ADDCX, p, tdr, 0, 0));
        }
        let params = self.alloc(mem, 0, AllocKind::Kernel)?;
        self.pending.push_back(seamcall(leaf::MNG_INIT, tdr, params, 0, 0));
        mem.free_pages(Spa::new(params), 0);
        self.pending.push_back(Event::PageFree { spa: Spa::new(params), order: 0 });
        for _ in 0..cfg.vcpus {
            let tdvpr = self.alloc(mem, 0, AllocKind::Kernel)?;
            self.pending.push_back(seamcall(leaf::VP_CREATE, tdvpr, tdr, 0, 0));
            for _ in 1..tdx_model::MIN_TDVPS_PAGES {
                let p = self.alloc(mem, 0, AllocKind::Kernel)?;
                self.pending.push_back(seamcall(leaf::VP_ADDCX, p, tdvpr, 0, 0));
            }
            self.pending.push_back(seamcall(leaf::VP_INIT, tdvpr, 0, 0, 0));
        }
        Some(())
    }

    /// Queue KVM_TDX_INIT_MEM_REGION of the page at `gpa`.
    fn add_page(&mut self, gpa: u64, mem: &mut dyn MemoryServices) -> Option<()> {
        let tdr = self.tdr;
        for level in (1..=ROOT_LEVEL).rev() {
            if gpa.is_multiple_of(level_bytes(level)) {
                let table = self.alloc(mem, 0, AllocKind::PageTable)?;
                self.pending.push_back(seamcall(leaf::MEM_SEPT_ADD, gpa | level, tdr, table, 0));
            }
        }
        if gpa.is_multiple_of(UNIT) {
            self.src = self.alloc(mem, 9, AllocKind::User)?;
        }
        let vm = u32::try_from(self.td + 1).unwrap_or(u32::MAX);
        let spa = mem.gmem_alloc(vm, Gpa::new(gpa), 0)?;
        self.pending.push_back(Event::GmemAlloc { gpa: Gpa::new(gpa), spa, vm, order: 0 });
        let src = self.src + gpa % UNIT;
        self.pending.push_back(seamcall(leaf::MEM_PAGE_ADD, gpa, tdr, spa.raw(), src));
        for c in 0..PAGE / MR_CHUNK {
            self.pending.push_back(seamcall(leaf::MR_EXTEND, gpa + c * MR_CHUNK, tdr, 0, 0));
        }
        Some(())
    }

    fn next(
        &mut self,
        cfg: &TdConfig,
        tds: &mut [TdShared],
        mem: &mut dyn MemoryServices,
    ) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let ok = match self.phase {
                BuildPhase::Done => return None,
                BuildPhase::Create => {
                    self.phase = BuildPhase::Region(0);
                    self.create(cfg, mem)
                }
                BuildPhase::Region(gpa) if gpa < cfg.firmware => {
                    self.phase = BuildPhase::Region(gpa + PAGE);
                    self.add_page(gpa, mem)
                }
                BuildPhase::Region(_) => {
                    self.phase = BuildPhase::Finalize;
                    Some(())
                }
                BuildPhase::Finalize => {
                    // KVM_TDX_FINALIZE_VM: the vCPUs may enter once this has run.
                    tds[self.td].finalized = true;
                    self.td += 1;
                    self.phase =
                        if self.td < tds.len() { BuildPhase::Create } else { BuildPhase::Done };
                    return Some(seamcall(leaf::MR_FINALIZE, self.tdr, 0, 0, 0));
                }
            };
            if ok.is_none() {
                // Host memory exhausted: this TD and the ones after it are never finalized
                // (the engine's counters show it); their vCPUs end.
                for t in &mut tds[self.td..] {
                    t.dead = true;
                }
                self.phase = BuildPhase::Done;
            }
        }
    }
}

/// Linux's `tdx_accept_memory(start, end)` as a sequence of ACCEPT operands (module docs).
#[derive(Debug, Clone, Copy, Default)]
struct AcceptRange {
    cur: u64,
    end: u64,
    /// After a failed 2M try, 4K ACCEPTs up to here.
    small_until: u64,
    tried_1g: bool,
}

impl AcceptRange {
    fn new(start: u64, end: u64) -> AcceptRange {
        AcceptRange { cur: start, end, small_until: start, tried_1g: false }
    }

    /// The next ACCEPT's RCX (GPA | level), or `None` when the range is accepted.
    fn next(&mut self, host_2m: bool) -> Option<u64> {
        if self.cur >= self.end {
            return None;
        }
        let left = self.end - self.cur;
        if self.cur >= self.small_until {
            if !self.tried_1g && self.cur.is_multiple_of(GIB) && left >= GIB {
                // Fails (the module accepts 4K and 2M only); 2M is tried next.
                self.tried_1g = true;
                return Some(self.cur | 2);
            }
            self.tried_1g = false;
            if self.cur.is_multiple_of(UNIT) && left >= UNIT {
                let rcx = self.cur | 1;
                if host_2m {
                    self.cur += UNIT;
                } else {
                    // TDX_PAGE_SIZE_MISMATCH under 4K-only KVM: 512 4K ACCEPTs follow.
                    self.small_until = self.cur + UNIT;
                }
                return Some(rcx);
            }
        }
        let rcx = self.cur;
        self.cur += PAGE;
        Some(rcx)
    }
}

/// Where a vCPU is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Host kernel: waiting for the TD's finalize.
    WaitFinalize,
    /// Host kernel: TD entry due.
    Enter,
    /// `tdx-boot` application processor: waiting in the TD for the boot CPU.
    WaitBoot,
    /// `tdx-boot` boot CPU: accepting the SWIOTLB, then converting it.
    Swiotlb,
    /// `tdx-churn`: accepting working-set units and the pool.
    Setup,
    /// Making accesses, taking units (`tdx-boot`) or converting (`tdx-churn`).
    Run,
    Done,
}

/// A multi-event task in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    None,
    /// Accepting `AcceptRange`, then what follows.
    Accept(After),
    /// Zeroing the unit at `base` (page zeroing on first use), line `line` next; then it joins
    /// the working set.
    Zero {
        base: u64,
        line: u64,
    },
    /// A converted range is shared: `left` of `total` shared accesses to make, then back to
    /// private.
    Shared {
        start: u64,
        bytes: u64,
        left: u64,
        total: u64,
    },
}

/// What follows an accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Zero the unit at this GPA, then publish it.
    Zero(u64),
    /// Publish the unit at this GPA in the working set.
    Publish(u64),
    Nothing,
}

/// The next step of a running vCPU.
#[derive(Debug)]
enum Decision {
    /// A task was started.
    Task,
    /// This event (it also starts a task).
    Event(Event),
    /// This many accesses before the next decision.
    Access(u64),
    Done,
}

#[derive(Debug)]
struct Vcpu {
    host: Agent,
    guest: Agent,
    td: usize,
    vm: u32,
    vcpu: u32,
    phase: Phase,
    task: Task,
    acc: AcceptRange,
    seen_kicks: u64,
    /// `tdx-churn`: whether its pool was accepted.
    pool_accepted: bool,
    /// Working-set accesses left.
    left: u64,
    /// Accesses since the last unit take (`tdx-boot`) or conversion (`tdx-churn`).
    since: u64,
    /// Accesses granted before the next control decision (already counted in `left` and
    /// `since`).
    budget: u64,
    pending_work: bool,
    /// Current sequential run: first GPA of its span (shared bit included), span bytes,
    /// offset of the next access, accesses left.
    run_base: u64,
    run_span: u64,
    run_off: u64,
    run_left: u64,
    rng: Rng,
}

impl Vcpu {
    fn new(cpu: u32, td: usize, vcpu: u32, accesses: u64, rng: Rng) -> Vcpu {
        let vm = u32::try_from(td + 1).unwrap_or(u32::MAX);
        Vcpu {
            host: Agent::host(cpu),
            guest: Agent::guest(cpu, vm, vcpu),
            td,
            vm,
            vcpu,
            phase: Phase::WaitFinalize,
            task: Task::None,
            acc: AcceptRange::default(),
            seen_kicks: 0,
            pool_accepted: false,
            left: accesses,
            since: 0,
            budget: 0,
            pending_work: false,
            run_base: 0,
            run_span: 0,
            run_off: 0,
            run_left: 0,
            rng,
        }
    }

    /// Start a sequential run: in the SWIOTLB (shared) with probability `io_ppm` per million
    /// once it is shared, else in a uniformly drawn published 2M unit.
    fn new_run(&mut self, cfg: &Cfg, td: &TdShared) {
        self.run_left = 1 + self.rng.below(2 * cfg.td.seq_lines - 1);
        let io = match &cfg.prog {
            Program::Boot { swiotlb, io_ppm, .. } => {
                (td.boot_done && swiotlb.1 > swiotlb.0 && self.rng.below(1_000_000) < *io_ppm)
                    .then_some(*swiotlb)
            }
            Program::Churn { .. } => None,
        };
        (self.run_base, self.run_span) = match io {
            Some((a, b)) => (a | SHARED_BIT, b - a),
            None => {
                let n = td.ws.len() as u64;
                (td.ws[usize::try_from(self.rng.below(n)).unwrap_or(0)], UNIT)
            }
        };
        self.run_off = self.rng.below(self.run_span / 8) * 8;
    }

    /// The next working-set access (8 bytes).
    #[inline(always)]
    fn access(&mut self, cfg: &Cfg, td: &TdShared) -> Event {
        if self.run_left == 0 {
            self.new_run(cfg, td);
        }
        self.run_left -= 1;
        let a = self.run_base + self.run_off;
        self.run_off += LINE;
        if self.run_off >= self.run_span {
            self.run_off -= self.run_span;
        }
        gpa_access(a, self.rng.next_u64() < cfg.td.write_below, 8)
    }

    fn guest_ev(&self, last: &mut Agent, e: Event) -> Option<Event> {
        *last = self.guest;
        Some(e)
    }

    #[inline]
    fn next(&mut self, cfg: &Cfg, td: &mut TdShared, last: &mut Agent) -> Option<Event> {
        // The fast path: the `work` after an access, and the accesses of a budget, all the
        // guest's (a re-entry may have been issued in between, as the host).
        if self.pending_work {
            self.pending_work = false;
            *last = self.guest;
            return Some(Event::Work { count: cfg.td.work });
        }
        if td.kicks == self.seen_kicks {
            if self.budget > 0 {
                self.budget -= 1;
                self.pending_work = cfg.td.work > 0;
                *last = self.guest;
                return Some(self.access(cfg, td));
            }
            // Zeroing a unit: most of a boot's events.
            if let Task::Zero { base, line } = self.task
                && line < UNIT / LINE
            {
                self.task = Task::Zero { base, line: line + 1 };
                *last = self.guest;
                return Some(gpa_access(base + line * LINE, true, 64));
            }
        }
        self.control(cfg, td, last)
    }

    /// Everything but the fast path.
    #[inline(never)]
    fn control(&mut self, cfg: &Cfg, td: &mut TdShared, last: &mut Agent) -> Option<Event> {
        let entered = !matches!(self.phase, Phase::WaitFinalize | Phase::Enter | Phase::Done);
        if entered && td.kicks != self.seen_kicks {
            // KVM's run loop re-enters a vCPU its zap path kicked out.
            self.seen_kicks = td.kicks;
            *last = self.host;
            return Some(Event::TdEnter { vm: self.vm, vcpu: self.vcpu });
        }
        loop {
            match self.phase {
                Phase::Done => return None,
                Phase::WaitFinalize => {
                    if td.dead {
                        self.phase = Phase::Done;
                        return None;
                    }
                    if !td.finalized {
                        *last = self.host;
                        return Some(Event::Work { count: cfg.td.poll });
                    }
                    self.phase = Phase::Enter;
                }
                Phase::Enter => {
                    self.seen_kicks = td.kicks;
                    self.phase = match &cfg.prog {
                        Program::Boot { swiotlb, .. } if self.vcpu == 0 => {
                            self.acc = AcceptRange::new(swiotlb.0, swiotlb.1);
                            Phase::Swiotlb
                        }
                        Program::Boot { .. } => Phase::WaitBoot,
                        Program::Churn { .. } => Phase::Setup,
                    };
                    *last = self.host;
                    return Some(Event::TdEnter { vm: self.vm, vcpu: self.vcpu });
                }
                Phase::WaitBoot => {
                    if !td.boot_done {
                        return self.guest_ev(last, Event::Work { count: cfg.td.poll });
                    }
                    self.phase = Phase::Run;
                }
                Phase::Swiotlb => {
                    if let Some(rcx) = self.acc.next(cfg.td.host_2m) {
                        return self.guest_ev(last, accept(rcx));
                    }
                    self.phase = Phase::Run;
                    td.boot_done = true;
                    let Program::Boot { swiotlb: (a, b), .. } = cfg.prog else { continue };
                    if b > a {
                        // memblock accepted it: the conversion zaps private pages and kicks.
                        td.kicks += 1;
                        let e = Event::MapGpa { gpa: Gpa::new(a), bytes: b - a, shared: true };
                        return self.guest_ev(last, e);
                    }
                }
                Phase::Setup => {
                    if let Some(e) = self.step_task(cfg, td) {
                        return self.guest_ev(last, e);
                    }
                    let Program::Churn { ws_units, pool_base, pool, .. } = cfg.prog else {
                        unreachable!("setup is tdx-churn's")
                    };
                    if td.next_unit < ws_units {
                        let base = cfg.td.firmware + td.next_unit * UNIT;
                        td.next_unit += 1;
                        self.acc = AcceptRange::new(base, base + UNIT);
                        // The unit joins the working set once accepted.
                        self.task = Task::Accept(After::Publish(base));
                        continue;
                    }
                    if self.pool_accepted {
                        self.phase = Phase::Run;
                        continue;
                    }
                    self.pool_accepted = true;
                    let start = pool_base + u64::from(self.vcpu) * pool;
                    self.acc = AcceptRange::new(start, start + pool);
                    self.task = Task::Accept(After::Nothing);
                }
                Phase::Run => {
                    if let Some(e) = self.step_task(cfg, td) {
                        return self.guest_ev(last, e);
                    }
                    match self.decide(cfg, td) {
                        Decision::Task => {}
                        Decision::Event(e) => return self.guest_ev(last, e),
                        Decision::Access(k) => {
                            self.left -= k;
                            self.since += k;
                            self.budget = k - 1;
                            self.pending_work = cfg.td.work > 0;
                            let e = self.access(cfg, td);
                            return self.guest_ev(last, e);
                        }
                        Decision::Done => {
                            self.phase = Phase::Done;
                            return None;
                        }
                    }
                }
            }
        }
    }
}

impl Vcpu {
    /// The next event of the task in progress, if any (finishing tasks on the way).
    fn step_task(&mut self, cfg: &Cfg, td: &mut TdShared) -> Option<Event> {
        loop {
            match self.task {
                Task::None => return None,
                Task::Accept(after) => {
                    if let Some(rcx) = self.acc.next(cfg.td.host_2m) {
                        return Some(accept(rcx));
                    }
                    self.task = match after {
                        After::Zero(base) => Task::Zero { base, line: 0 },
                        After::Publish(base) => {
                            td.ws.push(base);
                            Task::None
                        }
                        After::Nothing => Task::None,
                    };
                }
                Task::Zero { base, line } => {
                    if line < UNIT / LINE {
                        self.task = Task::Zero { base, line: line + 1 };
                        return Some(gpa_access(base + line * LINE, true, 64));
                    }
                    td.ws.push(base);
                    self.task = Task::None;
                }
                Task::Shared { start, bytes, left, total } => {
                    if left > 0 {
                        self.task = Task::Shared { start, bytes, left: left - 1, total };
                        let off = ((total - left) * LINE) % bytes;
                        let store = self.rng.next_u64() < cfg.td.write_below;
                        return Some(gpa_access((start + off) | SHARED_BIT, store, 8));
                    }
                    // Back to private (no zap: nothing private is mapped there), then accepted
                    // again, as tdx_enc_status_changed does (arch/x86/coco/tdx/tdx.c).
                    self.acc = AcceptRange::new(start, start + bytes);
                    self.task = Task::Accept(After::Nothing);
                    return Some(Event::MapGpa { gpa: Gpa::new(start), bytes, shared: false });
                }
            }
        }
    }

    /// What a running vCPU does next, its task being done.
    fn decide(&mut self, cfg: &Cfg, td: &mut TdShared) -> Decision {
        match &cfg.prog {
            Program::Boot { lazy_units, gap, swiotlb, .. } => {
                let units_left = td.next_unit < *lazy_units;
                if units_left && (self.since >= *gap || self.left == 0) {
                    let mut base = cfg.td.firmware + td.next_unit * UNIT;
                    if base >= swiotlb.0 {
                        base += swiotlb.1 - swiotlb.0;
                    }
                    td.next_unit += 1;
                    self.since = 0;
                    self.acc = AcceptRange::new(base, base + UNIT);
                    self.task = Task::Accept(After::Zero(base));
                    return Decision::Task;
                }
                if self.left == 0 {
                    return Decision::Done;
                }
                let k = if units_left { self.left.min(gap - self.since) } else { self.left };
                Decision::Access(k)
            }
            Program::Churn { pool_base, pool, interval, sizes, shared_accesses, .. } => {
                if self.left == 0 {
                    return Decision::Done;
                }
                if *interval > 0 && self.since >= *interval {
                    self.since = 0;
                    let total = sizes.last().map_or(1, |s| s.1);
                    let r = self.rng.below(total);
                    let bytes = sizes.iter().find(|s| s.1 > r).map_or(PAGE, |s| s.0);
                    let align = bytes.next_power_of_two().min(UNIT);
                    let slots = (pool - bytes) / align + 1;
                    let first = pool_base + u64::from(self.vcpu) * pool;
                    let start = first + self.rng.below(slots) * align;
                    self.task = Task::Shared {
                        start,
                        bytes,
                        left: *shared_accesses,
                        total: *shared_accesses,
                    };
                    // Accepted memory: KVM zaps it and kicks every vCPU of the TD.
                    td.kicks += 1;
                    return Decision::Event(Event::MapGpa {
                        gpa: Gpa::new(start),
                        bytes,
                        shared: true,
                    });
                }
                let k =
                    if *interval > 0 { self.left.min(interval - self.since) } else { self.left };
                Decision::Access(k)
            }
        }
    }
}

/// The TD builder beside the vCPU streams: the generator of both workloads.
#[derive(Debug)]
struct TdxWorkload {
    agents: Vec<Agent>,
    /// Host-kernel direct-map streams after the vCPU streams (tdx-churn's `kernel_cpus`).
    kernel: Vec<KernelStream>,
    kcfg: Option<KernelConfig>,
    /// Per stream, the issuer of the event last returned.
    last: Vec<Agent>,
    cfg: Cfg,
    builder: Builder,
    tds: Vec<TdShared>,
    vcpus: Vec<Vcpu>,
}

impl Workload for TdxWorkload {
    fn agents(&self) -> &[Agent] {
        &self.agents
    }

    fn next(&mut self, stream: usize, mem: &mut dyn MemoryServices) -> Option<Event> {
        match stream.checked_sub(1) {
            None => self.builder.next(&self.cfg.td, &mut self.tds, mem),
            Some(i) if i >= self.vcpus.len() => {
                let k = self.kernel.get_mut(i - self.vcpus.len())?;
                k.next(self.kcfg.as_ref()?, mem)
            }
            Some(i) => {
                let v = self.vcpus.get_mut(i)?;
                v.next(&self.cfg, &mut self.tds[v.td], &mut self.last[stream])
            }
        }
    }

    fn agent_of_last(&self, stream: usize) -> Agent {
        self.last[stream]
    }
}

/// The parameters both workloads read.
fn td_config(p: &Params, docs: &[ParamDoc]) -> Result<(u64, TdConfig), ParamError> {
    let ensure = |ok: bool, name: &str, why: &str| {
        if ok { Ok(()) } else { Err(Params::bad(name, p.raw(docs, name), why)) }
    };
    let tds = p.u64_in(docs, "tds", 1, 64)?;
    let vcpus = p.u64_in(docs, "vcpus", 1, 255)?;
    let guest_memory = p.size_in(docs, "guest_memory", UNIT, MAX_GUEST_MEMORY)?;
    ensure(guest_memory.is_multiple_of(UNIT), "guest_memory", "must be a multiple of 2M")?;
    let firmware = p.size_in(docs, "firmware_accepted", UNIT, guest_memory)?;
    ensure(firmware.is_multiple_of(UNIT), "firmware_accepted", "must be a multiple of 2M")?;
    let first_hkid = p.u64_in(docs, "first_hkid", 1, 1 << 15)?;
    let host_2m = match p.raw(docs, "host_2m") {
        "true" => true,
        "false" => false,
        other => return Err(Params::bad("host_2m", other, "must be true or false")),
    };
    let to32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    Ok((
        tds,
        TdConfig {
            vcpus: to32(vcpus),
            guest_memory,
            firmware,
            first_hkid: to32(first_hkid),
            host_2m,
            poll: p.u64_in(docs, "poll", 1, 1 << 30)?,
            work: p.u64_in(docs, "work", 0, 1 << 20)?,
            write_below: write_threshold(p.fraction_ppm(docs, "write_fraction")?),
            seq_lines: p.u64_in(docs, "seq_lines", 1, 1 << 20)?,
        },
    ))
}

fn assemble(
    tds: u64,
    cfg: Cfg,
    seed: u64,
    kernel: Option<(u64, KernelConfig)>,
) -> Box<dyn Workload> {
    let rng = Rng::new(seed);
    let accesses = match &cfg.prog {
        Program::Boot { accesses, .. } | Program::Churn { accesses, .. } => *accesses,
    };
    let units = match &cfg.prog {
        Program::Boot { lazy_units, .. } => *lazy_units,
        Program::Churn { ws_units, .. } => *ws_units,
    };
    let fw_units = cfg.td.firmware / UNIT;
    let tds_state = (0..tds)
        .map(|_| {
            let mut ws =
                Vec::with_capacity(usize::try_from(fw_units + units).unwrap_or(usize::MAX));
            ws.extend((0..fw_units).map(|u| u * UNIT));
            TdShared { finalized: false, dead: false, boot_done: false, kicks: 0, next_unit: 0, ws }
        })
        .collect();
    let mut agents = vec![Agent::host(0)];
    let mut vcpus = Vec::new();
    for t in 0..tds {
        for v in 0..cfg.td.vcpus {
            let cpu = u32::try_from(agents.len()).unwrap_or(u32::MAX);
            let stream = (t << 32) | u64::from(v);
            let td = usize::try_from(t).unwrap_or(usize::MAX);
            vcpus.push(Vcpu::new(cpu, td, v, accesses, rng.fork(stream)));
            agents.push(Agent::host(cpu));
        }
    }
    let (kernel_cpus, kcfg) = match kernel {
        Some((n, k)) => (n, Some(k)),
        None => (0, None),
    };
    let mut kernel = Vec::new();
    for c in 0..kernel_cpus {
        let cpu = u32::try_from(agents.len()).unwrap_or(u32::MAX);
        agents.push(Agent::host(cpu));
        if let Some(k) = &kcfg {
            kernel.push(KernelStream::new(rng.fork(0xC0DE_0000 + c), k));
        }
    }
    Box::new(TdxWorkload {
        last: agents.clone(),
        agents,
        kernel,
        kcfg,
        cfg,
        builder: Builder {
            td: 0,
            phase: BuildPhase::Create,
            tdr: 0,
            src: 0,
            pending: VecDeque::with_capacity(64),
        },
        tds: tds_state,
        vcpus,
    })
}

/// `swiotlb=auto`: `mem_encrypt_setup_arch`'s 6% of guest memory clamped to 64M..1G, rounded
/// up to whole 2M units.
fn swiotlb_auto(guest_memory: u64) -> u64 {
    (guest_memory * 6 / 100).clamp(SWIOTLB_MIN, SWIOTLB_MAX).next_multiple_of(UNIT)
}

fn build_boot(p: &Params, seed: u64) -> Result<Box<dyn Workload>, ParamError> {
    let docs = BOOT_PARAMS;
    let (tds, td) = td_config(p, docs)?;
    let mem = td.guest_memory;
    let swiotlb = match p.raw(docs, "swiotlb") {
        "auto" => swiotlb_auto(mem),
        _ => p.size_in(docs, "swiotlb", 0, mem)?.next_multiple_of(UNIT),
    };
    // memblock allocates top-down below 4 GiB (ARCH_LOW_ADDRESS_LIMIT).
    let top = mem.min(4 * GIB);
    if swiotlb + td.firmware > top {
        return Err(Params::bad(
            "swiotlb",
            p.raw(docs, "swiotlb"),
            format!(
                "{swiotlb} bytes do not fit below {top:#x} above the firmware region (guest_memory                  {mem})"
            ),
        ));
    }
    let sw = (top - swiotlb, top);
    let touch_units = (mem / UNIT * p.fraction_ppm(docs, "touch")? + 500_000) / 1_000_000;
    let fixed = (td.firmware + swiotlb) / UNIT;
    if touch_units < fixed {
        return Err(Params::bad(
            "touch",
            p.raw(docs, "touch"),
            format!(
                "{touch_units} units of 2M do not cover the firmware region and the SWIOTLB                  ({fixed} units)"
            ),
        ));
    }
    let lazy_units = touch_units - fixed;
    let accesses = p.u64_in(docs, "accesses", 0, 1 << 40)?;
    // Accesses of one vCPU between two unit takes; none to take without lazy units.
    let gap =
        (accesses * u64::from(td.vcpus)).checked_div(lazy_units).map_or(u64::MAX, |g| g.max(1));
    let prog = Program::Boot {
        accesses,
        swiotlb: sw,
        lazy_units,
        gap,
        io_ppm: p.fraction_ppm(docs, "io_fraction")?,
    };
    Ok(assemble(tds, Cfg { td, prog }, seed, None))
}

/// `SIZE:WEIGHT,...` with cumulative weights.
fn parse_sizes(p: &Params, docs: &[ParamDoc], name: &str) -> Result<Vec<(u64, u64)>, ParamError> {
    let raw = p.raw(docs, name);
    let bad = |why: String| Params::bad(name, raw, why);
    let mut out = Vec::new();
    let mut cum = 0u64;
    for item in raw.split(',') {
        let (s, w) = item.split_once(':').unwrap_or((item, "1"));
        let size = sim_core::config::ByteSize::parse(s.trim()).map_err(|e| bad(e.to_string()))?.0;
        let w: u64 = w.trim().parse().map_err(|_| bad(format!("weight {w:?} is not a count")))?;
        if size == 0 || !size.is_multiple_of(PAGE) {
            return Err(bad(format!("{size} bytes is not a positive multiple of 4K")));
        }
        cum = cum.saturating_add(w);
        if w > 0 {
            out.push((size, cum));
        }
    }
    if out.is_empty() {
        return Err(bad("no size with a positive weight".into()));
    }
    Ok(out)
}

fn build_churn(p: &Params, seed: u64) -> Result<Box<dyn Workload>, ParamError> {
    let docs = CHURN_PARAMS;
    let (tds, td) = td_config(p, docs)?;
    let ensure = |ok: bool, name: &str, why: String| {
        if ok { Ok(()) } else { Err(Params::bad(name, p.raw(docs, name), why)) }
    };
    let ws = p.size_in(docs, "working_set", 0, td.guest_memory)?;
    ensure(ws.is_multiple_of(UNIT), "working_set", "must be a multiple of 2M".into())?;
    let pool = p.size_in(docs, "pool", UNIT, td.guest_memory)?;
    ensure(pool.is_multiple_of(UNIT), "pool", "must be a multiple of 2M".into())?;
    let end = td.firmware + ws + pool * u64::from(td.vcpus);
    ensure(
        end <= td.guest_memory,
        "pool",
        format!(
            "firmware, working set and {} pools need {end} bytes, more than guest_memory",
            td.vcpus
        ),
    )?;
    let sizes = parse_sizes(p, docs, "convert_sizes")?;
    for &(s, _) in &sizes {
        ensure(s <= pool, "convert_sizes", format!("{s} bytes do not fit in the pool"))?;
        ensure(
            !td.host_2m || s.is_multiple_of(UNIT),
            "convert_sizes",
            format!(
                "{s} bytes: with host_2m a conversion must be whole 2M pages (the machine does                  not model DEMOTE of a partly converted 2M leaf)"
            ),
        )?;
    }
    let prog = Program::Churn {
        accesses: p.u64_in(docs, "accesses", 0, 1 << 40)?,
        ws_units: ws / UNIT,
        pool_base: td.firmware + ws,
        pool,
        interval: p.u64_in(docs, "convert_interval", 0, 1 << 40)?,
        sizes,
        shared_accesses: p.u64_in(docs, "shared_accesses", 0, 1 << 30)?,
    };
    let kernel_cpus = p.u64_in(docs, "kernel_cpus", 0, 255)?;
    let kernel = (kernel_cpus > 0).then(|| KernelConfig::parse(p, docs)).transpose()?;
    Ok(assemble(tds, Cfg { td, prog }, seed, kernel.map(|k| (kernel_cpus, k))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NullMemory;
    use crate::testutil::{allocations, drain};
    use sim_core::Context;
    use std::collections::BTreeSet;

    fn params(items: &[&str]) -> Params {
        Params::parse(items.iter().copied()).unwrap()
    }

    fn small_boot() -> Vec<&'static str> {
        vec!["guest_memory=32M", "swiotlb=4M", "accesses=3000", "touch=0.5", "work=0"]
    }

    /// What a TD's guest did, as followed along a drained stream.
    #[derive(Debug, Default)]
    struct Seen {
        /// 4K pages accepted (or added by PAGE.ADD).
        private: BTreeSet<u64>,
        /// 4K pages converted to shared.
        shared: BTreeSet<u64>,
        tries_2m: u64,
        accepts_4k: u64,
        map_gpa_shared_pages: u64,
        private_accesses: u64,
        shared_accesses: u64,
        enters: u64,
        finalized: bool,
    }

    /// Follow one TD (VM 1) through a drained stream, checking the contract: guest events only
    /// after the TD is finalized and entered, on the vCPU's own CPU; private accesses only to
    /// pages already accepted or added; shared accesses only to pages converted to shared.
    /// `host_2m`: a 2M try accepts the whole unit; else it fails and 4K accepts follow.
    fn follow(ev: &[(usize, Agent, Event)], host_2m: bool) -> Result<Seen, String> {
        let mut s = Seen::default();
        for (n, (stream, a, e)) in ev.iter().enumerate() {
            let at = format!("event {n} ({a} {e:?})");
            let Agent::Cpu { cpu, ctx } = *a else { return Err(format!("{at}: not a CPU")) };
            if *stream > 0 && cpu as usize != *stream {
                return Err(format!("{at}: on another CPU than its stream"));
            }
            match (ctx, e) {
                (Context::HostKernel, Event::Seamcall { leaf: l, rcx, .. }) => {
                    if *stream != 0 {
                        return Err(format!("{at}: SEAMCALL off the build CPU"));
                    }
                    if *l == leaf::MEM_PAGE_ADD {
                        s.private.insert(rcx.0 >> 12);
                    }
                    if *l == leaf::MR_FINALIZE {
                        s.finalized = true;
                    }
                }
                (Context::HostKernel, Event::TdEnter { vm: 1, .. }) => {
                    if !s.finalized {
                        return Err(format!("{at}: entry before finalize"));
                    }
                    s.enters += 1;
                }
                (Context::Guest { vm: 1, vcpu, .. }, e) => {
                    if !s.finalized || *stream != 1 + vcpu as usize {
                        return Err(format!("{at}: guest event before finalize or misplaced"));
                    }
                    match e {
                        Event::Tdcall { leaf: 6, rcx, .. } => {
                            let (gpa, level) = (rcx.0 & !0xfff, rcx.0 & 7);
                            match level {
                                0 => {
                                    s.accepts_4k += 1;
                                    if !s.private.insert(gpa >> 12) {
                                        return Err(format!("{at}: accepted twice"));
                                    }
                                }
                                1 => {
                                    s.tries_2m += 1;
                                    if host_2m {
                                        s.private.extend((gpa >> 12)..(gpa >> 12) + 512);
                                    }
                                }
                                _ => {}
                            }
                        }
                        Event::MapGpa { gpa, bytes, shared } => {
                            let pages = (gpa.raw() >> 12)..(gpa.raw() + bytes) >> 12;
                            for p in pages {
                                if *shared {
                                    if !s.private.remove(&p) {
                                        return Err(format!("{at}: converts an unaccepted page"));
                                    }
                                    s.shared.insert(p);
                                    s.map_gpa_shared_pages += 1;
                                } else if !s.shared.remove(&p) {
                                    return Err(format!("{at}: converts a private page back"));
                                }
                            }
                        }
                        Event::Load { addr: Address::Gpa(g), .. }
                        | Event::Store { addr: Address::Gpa(g), .. } => {
                            let page = (g.raw() & !SHARED_BIT) >> 12;
                            if g.raw() & SHARED_BIT != 0 {
                                s.shared_accesses += 1;
                                if !s.shared.contains(&page) {
                                    return Err(format!("{at}: shared access to a private page"));
                                }
                            } else {
                                s.private_accesses += 1;
                                if !s.private.contains(&page) {
                                    return Err(format!("{at}: access to an unaccepted page"));
                                }
                            }
                        }
                        Event::Work { .. } => {}
                        _ => return Err(format!("{at}: unexpected guest event")),
                    }
                }
                (Context::HostKernel, _) => {}
                _ => return Err(format!("{at}: unexpected context")),
            }
        }
        Ok(s)
    }

    /// 32M guest, 0.5 touched = 8 units: 2 of firmware, 2 of SWIOTLB, 4 lazy; under 4K-only
    /// KVM each of the 6 accepted units is a 2M try and 512 4K ACCEPTs.
    #[test]
    fn boot_accepts_in_2m_units_with_4k_fallback() {
        let ev = drain(&BOOT_INFO, &params(&small_boot()), 1);
        let s = follow(&ev, false).unwrap();
        assert_eq!((s.tries_2m, s.accepts_4k), (6, 6 * 512));
        assert_eq!(s.map_gpa_shared_pages, 1024);
        // The working set (some of it SWIOTLB bounce copies, shared) and the zeroing.
        assert_eq!(s.private_accesses + s.shared_accesses, 2 * 3000 + 4 * 512 * 64);
        assert!(s.shared_accesses > 0);
        // One entry per vCPU, then one re-entry each after the SWIOTLB's zap kicked them.
        assert_eq!(s.enters, 4);
        let count = |l: u16| {
            ev.iter()
                .filter(move |(_, _, e)| matches!(e, Event::Seamcall { leaf, .. } if *leaf == l))
        };
        assert_eq!(count(leaf::MEM_PAGE_ADD).count(), 1024);
        assert_eq!(count(leaf::MR_EXTEND).count(), 16 * 1024);
        assert_eq!(count(leaf::MEM_SEPT_ADD).count(), 3 + 1);
        assert_eq!(count(leaf::VP_ADDCX).count(), 2 * 5);
    }

    #[test]
    fn boot_with_2m_host_accepts_each_unit_once() {
        let mut p = small_boot();
        p.push("host_2m=true");
        let s = follow(&drain(&BOOT_INFO, &params(&p), 1), true).unwrap();
        assert_eq!((s.tries_2m, s.accepts_4k), (6, 0));
    }

    #[test]
    fn swiotlb_auto_follows_mem_encrypt_setup_arch() {
        let sw = |m: u64| swiotlb_auto(m);
        assert_eq!(sw(256 << 20), 64 << 20);
        assert_eq!(sw(4 << 30), 246 << 20);
        assert_eq!(sw(64 << 30), 1 << 30);
        // With the default guest_memory the SWIOTLB is 64M: 32 units converted.
        let ev = drain(&BOOT_INFO, &params(&["accesses=10", "touch=0.3", "work=0"]), 2);
        let s = follow(&ev, false).unwrap();
        assert_eq!(s.map_gpa_shared_pages, (64 << 20) / PAGE);
    }

    fn small_churn() -> Vec<&'static str> {
        vec![
            "guest_memory=32M",
            "working_set=8M",
            "pool=4M",
            "accesses=20000",
            "convert_interval=500",
            "convert_sizes=4K:4,64K:2,2M:1",
        ]
    }

    #[test]
    fn churn_converts_accepted_ranges_and_accepts_them_again() {
        let ev = drain(&CHURN_INFO, &params(&small_churn()), 3);
        let s = follow(&ev, false).unwrap();
        // Two vCPUs × 20000 / 500 conversions, each to shared and back.
        let maps = ev.iter().filter(|(_, _, e)| matches!(e, Event::MapGpa { .. })).count();
        assert_eq!(maps, 2 * 2 * (20000 / 500 - 1));
        assert!(s.shared.is_empty(), "every conversion ends private");
        // Working set and pools accepted, then every converted page again.
        assert_eq!(s.accepts_4k, (8 + 2 * 4) * 256 + s.map_gpa_shared_pages);
        assert!(s.shared_accesses > 0 && s.private_accesses == 2 * 20000);
    }

    #[test]
    fn same_seed_same_stream() {
        for (info, p) in [(&BOOT_INFO, small_boot()), (&CHURN_INFO, small_churn())] {
            assert_eq!(drain(info, &params(&p), 9), drain(info, &params(&p), 9));
            assert_ne!(drain(info, &params(&p), 9), drain(info, &params(&p), 10));
        }
    }

    #[test]
    fn bad_params_are_rejected_with_their_name() {
        for (info, bad, name) in [
            (&BOOT_INFO, &["guest_memory=3M"][..], "guest_memory"),
            (&BOOT_INFO, &["firmware_accepted=3M"][..], "firmware_accepted"),
            (&BOOT_INFO, &["guest_memory=32M"][..], "swiotlb"),
            (&BOOT_INFO, &["guest_memory=32M", "swiotlb=4M", "touch=0.1"][..], "touch"),
            (&BOOT_INFO, &["host_2m=yes"][..], "host_2m"),
            (&CHURN_INFO, &["pool=128M"][..], "pool"),
            (&CHURN_INFO, &["convert_sizes=16M"][..], "convert_sizes"),
            (&CHURN_INFO, &["convert_sizes=5000"][..], "convert_sizes"),
            (&CHURN_INFO, &["convert_sizes=4K:0"][..], "convert_sizes"),
            (&CHURN_INFO, &["host_2m=true"][..], "convert_sizes"),
        ] {
            match info.instantiate(&params(bad), 0) {
                Err(ParamError::Bad { name: n, .. }) => assert_eq!(n, name, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn defaults_build_and_fit_four_cpus() {
        for info in [&BOOT_INFO, &CHURN_INFO] {
            let w = info.instantiate(&Params::default(), 0).unwrap();
            assert_eq!(w.agents(), &[0, 1, 2].map(Agent::host));
        }
    }

    /// Once the TDs are built, generation allocates nothing: accesses, lazy accepts, zeroing,
    /// conversions and re-entries (`tdx-churn`).
    #[test]
    fn steady_state_generates_without_allocating() {
        for (info, p) in [
            (&BOOT_INFO, &["accesses=2000000", "tds=2"][..]),
            (&CHURN_INFO, &["accesses=2000000", "tds=2"][..]),
        ] {
            let mut w = info.instantiate(&params(p), 1).unwrap();
            let mut mem = NullMemory::default();
            let n = w.agents().len();
            // Warm up: both TDs built (their firmware regions added) and booted.
            for _ in 0..400_000 {
                for s in 0..n {
                    w.next(s, &mut mem);
                }
            }
            let before = allocations();
            let mut seen = [0u64; 3];
            for _ in 0..300_000 {
                for s in 1..n {
                    match w.next(s, &mut mem) {
                        Some(Event::Load { .. } | Event::Store { .. }) => seen[0] += 1,
                        Some(Event::Tdcall { .. }) => seen[1] += 1,
                        Some(Event::MapGpa { .. } | Event::TdEnter { .. }) => seen[2] += 1,
                        _ => {}
                    }
                }
            }
            assert_eq!(allocations() - before, 0, "{}: {seen:?}", info.name);
            // Conversions (and the re-entries they cause) are tdx-churn's.
            let conversions = info.name == "tdx-churn";
            assert!(seen[0] > 0 && seen[1] > 0 && (seen[2] > 0) == conversions, "{seen:?}");
        }
    }
}
