//! `vsm-boot`: a Hyper-V VSM guest booting under KVM, its secure kernel (VTL 1) changing VTL 0's
//! memory protections with HvCallModifyVtlProtectionMask rep calls while VTL 0 runs over its
//! working set (issue #9 item 4; docs/vsm.md).
//!
//! **What it is based on.** The hypercall is the TLFS's HvCallModifyVtlProtectionMask (call
//! code 0x000C, a rep hypercall over a list of GPA pages, "a VTL can only place protections on a
//! lower VTL"); the rep call's input page holds a 16-byte header (target partition 8, map flags
//! 4, target VTL 1, reserved 3) and then 8-byte GPA page numbers, so one call names at most
//! (4096 − 16) / 8 = 510 pages ([`TLFS_REP_MAX`]). The count, "around 100000+ times during
//! boot", is Nicolas Saenz Julienne's (the VSM-in-KVM author, May 2023; spec/tdx.md §4.3,
//! spec/physmap.md H16). **Every shape below is Unsourced**: no public trace of a Windows VSM
//! boot's protection calls exists that we know of, so the layout, sizes, masks and mix are
//! plausible choices, parameterised, and named as such. `vsm-protect` names a contiguous GPA
//! range (`gpa`, `pages`), where the hypercall takes a list of pages: a rep call here is a run of
//! consecutive pages.
//!
//! **One VM** (VM 1, ASID 1), `kind` plain or SNP, of `guest_memory` bytes, vCPU `k` on CPU `k`
//! (stream `k`), issuing as the host (`ck host`), as VTL 1 (`ck vm1/vk/vtl1`) and as VTL 0
//! (`ck vm1/vk/vtl0`). Guest-physical layout (GFNs): the first 2 MiB are left alone (firmware,
//! real-mode memory); the VTL 0 kernel image (`image` bytes) from 2 MiB; VTL 1's own memory
//! (`vtl1_memory`) after it, 2M-aligned; the pool VTL 0 loads drivers into and allocates from
//! (`working_set` bytes) after that, 2M-aligned.
//!
//! 1. **Setup** (vCPU 0, as the host): `vm-create KIND vm=1 asid=1 memory=guest_memory`;
//!    on SNP `snp-fw launch-start` and `launch-finish`; `vmrun vm=1 vcpu=0`. On SNP the
//!    paravisor (VMPL 0, `c0 vm1/v0`) then, for every page of the image, VTL 1's memory and
//!    the pool, `pvalidate`s it (KVM faults it in from guest_memfd and assigns it) and grants
//!    VMPL 1 and VMPL 2 (VTL 1 and VTL 0 under OpenHCL's map, `vsm.vtl_vmpl`) every permission
//!    with `rmpadjust … perms=0xf` — what traces/scenarios/attrs/snp-vmpl.ccs does with `state`
//!    lines and host `vsm-protect`s, here as events. The other vCPUs wait as their host kernel
//!    (`work` of `poll` instructions) until the initial pass is done, then `vmrun`.
//! 2. **Initial pass** (vCPU 0, as VTL 1): VTL 1's memory made inaccessible to VTL 0 (mask 0)
//!    in calls of 510 pages; then the kernel image section by section, each section one call of
//!    the run phase's size distribution and mask mix (code read + kernel-execute, read-only
//!    data read, data read + write, non-executable).
//! 3. **Run** (every vCPU): until `changes` calls have been issued in all (the initial pass's
//!    included), a vCPU issues one call as VTL 1, then `accesses` accesses as VTL 0 (each
//!    followed by `work` instructions when `work` > 0). A call is, with probability `revert`, the
//!    undoing of an earlier call still remembered (a driver unloaded, a page freed: its range
//!    back to every permission, 0xf), else a new protection: `pages` drawn from the size
//!    distribution at the pool's allocation cursor (probability `contiguous`: the next section
//!    of the driver being loaded) or at a uniformly drawn pool page (a new allocation
//!    elsewhere), clipped to the pool's end, with a mask drawn from the section mix.
//!
//! **Distributions (Unsourced)**:
//! - Call size: 1 page with probability `single`; else a power-of-two class `e` uniform in
//!   `1..=ceil(log2 rep_max)` and a size uniform in `2^(e−1)+1 ..= 2^e`, capped at `rep_max`
//!   (log-uniform: many small calls for pool pages, a tail of multi-page driver sections). Mean
//!   with the defaults (`single=0.5`, `rep_max=64`): 8.6 pages.
//! - Section mix: code (R+XK, 0x5) 30 %, read-only data (R, 0x1) 20 %, data (R+W, 0x3) 50 %.
//!   HVCI's rule is that kernel code is executable and not writable and data is not
//!   executable; the weights are a guess.
//! - Reverts remember the last [`REMEMBERED`] calls; a revert picks one uniformly.
//! - VTL 0 accesses: with probability `near` a page of the vCPU's last call's range (the kernel
//!   touching what it just loaded), else a page uniform over the image and the pool; an 8-byte
//!   aligned offset in it. The kind follows the page's protections so that VTL 0 never breaks
//!   them: a fetch (4 bytes) with probability 1/4 where kernel-executable, else a store (8 bytes)
//!   with probability `write_fraction` where writable, else a load (8 bytes). On SNP the access
//!   carries the C-bit (private memory). Guest-physical accesses, as in `snp-churn`: no guest
//!   page table is modelled.
//!
//! **Cost.** Steady-state generation allocates nothing: the protections the generator keeps
//! (one byte per page of the image and the pool) and the remembered calls are sized at build.
//! The streams share that state; the engine executes each event as it is generated, so what the
//! generator believes of a page is what the machine has.

use crate::params::{ParamDoc, ParamError, Params};
use crate::snp_churn::write_threshold;
use crate::{Workload, WorkloadInfo};
use sim_core::codec::Hex;
use sim_core::event::{Address, MemType, SnpFwCmd, VmKind};
use sim_core::{Agent, Context, Event, Gpa, MemoryServices, PageSize, PrivLevel, Rng};

const PAGE: u64 = 4096;
/// Pages per 2M region.
const REGION: u64 = 512;
/// Pages left alone at the bottom of guest memory (the first 2 MiB).
const LOW_PAGES: u64 = 512;
/// Most pages one HvCallModifyVtlProtectionMask rep call names: (4096 − 16) / 8.
pub(crate) const TLFS_REP_MAX: u64 = 510;
/// Calls a revert can pick from (the most recent; older ones are forgotten).
pub(crate) const REMEMBERED: usize = 4096;
/// The VM.
const VM: u32 = 1;
/// Its ASID.
const ASID: u32 = 1;

/// VTL protection bits (TLFS `HV_MAP_GPA_FLAGS`, as `vsm-protect mask=`).
const R: u8 = 1;
const W: u8 = 2;
const XK: u8 = 4;
const ALL: u8 = 0xf;
/// Section masks and their weights in per-mille (Unsourced, module docs).
const SECTIONS: [(u8, u64); 3] = [(R | XK, 300), (R, 200), (R | W, 500)];

const PARAMS: &[ParamDoc] = &[
    ParamDoc {
        name: "kind",
        default: "plain",
        doc: "VM kind: plain (protections in stage 2) or snp (private memory; protections also \
              become RMPADJUSTs of the VTL's VMPL)",
    },
    ParamDoc { name: "vcpus", default: "2", doc: "vCPUs, vCPU k on CPU k (1..=64)" },
    ParamDoc {
        name: "changes",
        default: "100000",
        doc: "HvCallModifyVtlProtectionMask rep calls in all, the initial pass's included. \
              Default: \"100000+ times during boot\" (N. Saenz Julienne, May 2023; spec/tdx.md \
              §4.3)",
    },
    ParamDoc {
        name: "guest_memory",
        default: "4G",
        doc: "guest memory (bytes, a multiple of 2M), given to vm-create. Unsourced: a common \
              Windows VM size",
    },
    ParamDoc {
        name: "image",
        default: "32M",
        doc: "VTL 0 kernel image from GPA 2M (bytes, rounded up to 4K), protected section by \
              section in the initial pass. Unsourced: kernel, HAL and boot drivers",
    },
    ParamDoc {
        name: "vtl1_memory",
        default: "64M",
        doc: "VTL 1's own memory after the image (bytes, rounded up to 4K), made inaccessible \
              to VTL 0 in the initial pass. Unsourced",
    },
    ParamDoc {
        name: "working_set",
        default: "1G",
        doc: "the pool VTL 0 loads drivers into and allocates from, after VTL 1's memory \
              (bytes, rounded up to 4K); accesses cover it and the image. Unsourced",
    },
    ParamDoc {
        name: "rep_max",
        default: "64",
        doc: "largest run-phase call, in pages (1..=510, the TLFS rep-call limit). Unsourced",
    },
    ParamDoc {
        name: "single",
        default: "0.5",
        doc: "fraction of run-phase calls naming one page (the rest log-uniform in \
              2..=rep_max). Unsourced",
    },
    ParamDoc {
        name: "revert",
        default: "0.2",
        doc: "fraction of run-phase calls that undo an earlier call (its range back to 0xf), so \
              that regions become uniform again (vsm.repromote). Unsourced",
    },
    ParamDoc {
        name: "contiguous",
        default: "0.75",
        doc: "fraction of new protections placed right after the previous one (the next \
              section of a driver), the rest at a uniform pool page. Unsourced",
    },
    ParamDoc {
        name: "accesses",
        default: "4",
        doc: "VTL 0 accesses a vCPU makes after each of its calls. Unsourced",
    },
    ParamDoc {
        name: "near",
        default: "0.5",
        doc: "fraction of accesses to the vCPU's last call's range, the rest uniform over the \
              image and the pool. Unsourced",
    },
    ParamDoc {
        name: "write_fraction",
        default: "0.3",
        doc: "fraction of data accesses to writable pages that are stores. Unsourced",
    },
    ParamDoc {
        name: "work",
        default: "0",
        doc: "non-memory instructions after each access (0: none, accesses back to back)",
    },
    ParamDoc {
        name: "poll",
        default: "100000",
        doc: "instructions of one `work` event while a vCPU waits for the initial pass (about \
              30 µs: the initial pass under address-space-per-vtl takes ~0.3 s of guest time, so a \
              shorter wait would make most of a run's events waits)",
    },
    ParamDoc {
        name: "cbit_pos",
        default: "51",
        doc: "C-bit position of a private access (SNP); must equal the machine's mmu.cbit_pos",
    },
];

/// Registry entry.
pub(crate) const INFO: WorkloadInfo = WorkloadInfo {
    name: "vsm-boot",
    summary: "a Hyper-V VSM boot: VTL 1 issuing 100,000+ HvCallModifyVtlProtectionMask rep calls \
              against VTL 0 while VTL 0 runs",
    description: "One VM (plain or SNP): VTL 1 makes its own memory inaccessible and the kernel \
                  image's sections read-only or non-executable for VTL 0, then every vCPU \
                  alternates a protection change (a driver section, a pool allocation, or the \
                  undoing of an earlier change) with VTL 0 accesses that respect the \
                  protections, so stage 2 maps at 2M where a region is uniform and at 4K where \
                  it is mixed. Run it under each vsm.design to compare their costs.",
    params: PARAMS,
    build,
    preset: None,
};

/// The run's shape, validated.
#[derive(Debug, Clone, Copy)]
struct Cfg {
    kind: VmKind,
    memory: u64,
    /// First GFN and pages of the image, VTL 1's memory and the pool.
    image: (u64, u64),
    vtl1: (u64, u64),
    pool: (u64, u64),
    changes: u64,
    rep_max: u64,
    /// Power-of-two classes of the size distribution: `ceil(log2 rep_max)`.
    classes: u64,
    single_ppm: u64,
    revert_ppm: u64,
    contiguous_ppm: u64,
    near_ppm: u64,
    accesses: u64,
    write_below: u64,
    work: u64,
    poll: u64,
    /// The C-bit as a mask (0 for a plain VM).
    cbit: u64,
}

impl Cfg {
    /// Pages VTL 0 accesses: the image and the pool, indexed image first.
    fn access_pages(&self) -> u64 {
        self.image.1 + self.pool.1
    }

    /// Access-page index of `gfn` (in the image or the pool).
    fn index_of(&self, gfn: u64) -> usize {
        let i =
            if gfn < self.pool.0 { gfn - self.image.0 } else { gfn - self.pool.0 + self.image.1 };
        usize::try_from(i).unwrap_or(usize::MAX)
    }

    /// GFNs the SNP setup validates and grants: from the image to the pool's end.
    fn validated(&self) -> (u64, u64) {
        (self.image.0, self.pool.0 + self.pool.1)
    }
}

fn build(p: &Params, seed: u64) -> Result<Box<dyn Workload>, ParamError> {
    let kind = match p.raw(PARAMS, "kind") {
        "plain" => VmKind::Plain,
        "snp" => VmKind::Snp,
        other => return Err(Params::bad("kind", other, "plain or snp")),
    };
    let vcpus = p.u64_in(PARAMS, "vcpus", 1, 64)?;
    let memory = p.size_in(PARAMS, "guest_memory", 4 << 20, 1 << 40)?;
    if !memory.is_multiple_of(REGION * PAGE) {
        return Err(Params::bad("guest_memory", p.raw(PARAMS, "guest_memory"), "a multiple of 2M"));
    }
    let image_pages = p.size_in(PARAMS, "image", PAGE, 1 << 40)?.div_ceil(PAGE);
    let vtl1_pages = p.size_in(PARAMS, "vtl1_memory", PAGE, 1 << 40)?.div_ceil(PAGE);
    let pool_pages = p.size_in(PARAMS, "working_set", PAGE, 1 << 40)?.div_ceil(PAGE);
    let image = (LOW_PAGES, image_pages);
    let vtl1 = ((LOW_PAGES + image_pages).next_multiple_of(REGION), vtl1_pages);
    let pool = ((vtl1.0 + vtl1_pages).next_multiple_of(REGION), pool_pages);
    if (pool.0 + pool.1) * PAGE > memory {
        return Err(Params::bad(
            "working_set",
            p.raw(PARAMS, "working_set"),
            format!(
                "2M + image + vtl1_memory + working_set (each 2M-aligned) = {} bytes do not fit \
                 in guest_memory ({memory} bytes)",
                (pool.0 + pool.1) * PAGE
            ),
        ));
    }
    let rep_max = p.u64_in(PARAMS, "rep_max", 1, TLFS_REP_MAX)?;
    let cbit_pos = p.u64_in(PARAMS, "cbit_pos", 12, 51)?;
    if memory > 1 << cbit_pos {
        return Err(Params::bad(
            "cbit_pos",
            p.raw(PARAMS, "cbit_pos"),
            "the C-bit must lie above every guest-physical address",
        ));
    }
    let cfg = Cfg {
        kind,
        memory,
        image,
        vtl1,
        pool,
        changes: p.u64_in(PARAMS, "changes", 1, 1 << 40)?,
        rep_max,
        classes: u64::from(64 - (rep_max - 1).leading_zeros()).max(1),
        single_ppm: p.fraction_ppm(PARAMS, "single")?,
        revert_ppm: p.fraction_ppm(PARAMS, "revert")?,
        contiguous_ppm: p.fraction_ppm(PARAMS, "contiguous")?,
        near_ppm: p.fraction_ppm(PARAMS, "near")?,
        accesses: p.u64_in(PARAMS, "accesses", 0, 1 << 20)?,
        write_below: write_threshold(p.fraction_ppm(PARAMS, "write_fraction")?),
        work: p.u64_in(PARAMS, "work", 0, 1 << 32)?,
        poll: p.u64_in(PARAMS, "poll", 1, 1 << 32)?,
        cbit: if kind == VmKind::Snp { 1 << cbit_pos } else { 0 },
    };
    let rng = Rng::new(seed);
    let cpu = |k: u64| u32::try_from(k).unwrap_or(u32::MAX);
    // vCPU k's part of the pool: an equal share, 2M-aligned when a share holds 2M.
    let share = pool.1 / vcpus;
    let share = if share >= REGION { share - share % REGION } else { share };
    let vcpu_list: Vec<Vcpu> = (0..vcpus)
        .map(|k| {
            let part = if k + 1 == vcpus {
                (pool.0 + k * share, pool.1 - k * share)
            } else {
                (pool.0 + k * share, share)
            };
            Vcpu::new(cpu(k), part, rng.fork(k))
        })
        .collect();
    let agents: Vec<Agent> = vcpu_list.iter().map(|v| v.host).collect();
    let pages = usize::try_from(cfg.access_pages()).unwrap_or(usize::MAX);
    Ok(Box::new(VsmBoot {
        last: agents.clone(),
        agents,
        shared: Shared { prot: vec![ALL; pages], issued: 0, pass_done: false },
        cfg,
        vcpus: vcpu_list,
    }))
}

/// What every stream sees.
#[derive(Debug)]
struct Shared {
    /// VTL 0's protections of each access page (image, then pool), as the calls left them.
    prot: Vec<u8>,
    /// Calls of the initial pass issued so far.
    issued: u64,
    /// The initial pass is done: the other vCPUs may start.
    pass_done: bool,
}

/// Where a vCPU is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// vCPU 0: host setup, step `.0`.
    Create(u8),
    /// vCPU 0 on SNP: validating and granting GFN `.0` (step `.1`: 0 PVALIDATE, 1 and 2
    /// RMPADJUST of VMPL 1 and 2).
    Validate(u64, u8),
    /// vCPU 0: VTL 1's memory made inaccessible, from GFN `.0`.
    Vtl1Pass(u64),
    /// vCPU 0: the image's sections, from GFN `.0`.
    ImagePass(u64),
    /// vCPU ≥ 1: waiting for the initial pass.
    Wait,
    /// A call, then `budget` accesses.
    Run,
    Done,
}

#[derive(Debug)]
struct Vcpu {
    host: Agent,
    vtl0: Agent,
    vtl1: Agent,
    /// VMPL 0: the paravisor (SNP setup).
    vmpl0: Agent,
    phase: Phase,
    /// Accesses left before the next call.
    budget: u64,
    pending_work: bool,
    /// The last call's range `(first GFN, pages)`.
    last_call: (u64, u64),
    /// Its part of the pool `(first GFN, pages)`: where its calls and accesses go, so that
    /// what it generates does not depend on how the engine interleaves the vCPUs (every
    /// design sees the same calls).
    part: (u64, u64),
    /// Its allocation cursor (a GFN of its part).
    cursor: u64,
    /// Its recent new protections `(first GFN, pages)`, for reverts.
    remembered: Vec<(u64, u64)>,
    /// Run-phase calls left.
    left: u64,
    rng: Rng,
}

impl Vcpu {
    fn new(cpu: u32, part: (u64, u64), rng: Rng) -> Vcpu {
        let at = |level| Agent::Cpu { cpu, ctx: Context::Guest { vm: VM, vcpu: cpu, level } };
        Vcpu {
            host: Agent::host(cpu),
            vtl0: at(PrivLevel::Vtl(0)),
            vtl1: at(PrivLevel::Vtl(1)),
            vmpl0: at(PrivLevel::Vmpl(0)),
            phase: if cpu == 0 { Phase::Create(0) } else { Phase::Wait },
            budget: 0,
            pending_work: false,
            last_call: (0, 0),
            part,
            cursor: part.0,
            remembered: Vec::with_capacity(REMEMBERED),
            left: 0,
            rng,
        }
    }

    /// A run-phase call size.
    fn call_size(&mut self, cfg: &Cfg) -> u64 {
        if cfg.rep_max == 1 || self.rng.below(1_000_000) < cfg.single_ppm {
            return 1;
        }
        let e = 1 + self.rng.below(cfg.classes);
        let lo = (1u64 << (e - 1)) + 1;
        let hi = (1u64 << e).min(cfg.rep_max);
        lo.min(hi) + self.rng.below(hi.saturating_sub(lo) + 1)
    }

    /// A section mask.
    fn section_mask(&mut self) -> u8 {
        let mut r = self.rng.below(1000);
        for (m, w) in SECTIONS {
            if r < w {
                return m;
            }
            r -= w;
        }
        R | W
    }
}

/// The generator.
#[derive(Debug)]
struct VsmBoot {
    agents: Vec<Agent>,
    /// The agent of each stream's last event.
    last: Vec<Agent>,
    cfg: Cfg,
    shared: Shared,
    vcpus: Vec<Vcpu>,
}

fn protect(gfn: u64, pages: u64, mask: u8) -> Event {
    Event::VsmProtect {
        gpa: Gpa::new(gfn * PAGE),
        vm: VM,
        vtl: 0,
        pages,
        mask: Hex(u64::from(mask)),
    }
}

/// Run-phase calls of vCPU `v` of `n`: the calls the initial pass left, shared out evenly.
fn run_share(cfg: &Cfg, sh: &Shared, v: usize, n: usize) -> u64 {
    let rest = cfg.changes.saturating_sub(sh.issued);
    let (v, n) = (v as u64, n as u64);
    rest / n + u64::from(v < rest % n)
}

impl Shared {
    /// Record VTL 0's protections `mask` on `gfn..gfn+pages` (image or pool pages only).
    fn set(&mut self, cfg: &Cfg, gfn: u64, pages: u64, mask: u8) {
        let i = cfg.index_of(gfn);
        let n = usize::try_from(pages).unwrap_or(0);
        self.prot[i..i + n].fill(mask);
    }
}

impl VsmBoot {
    /// The next run-phase call of vCPU `v`.
    fn call(&mut self, v: usize) -> Event {
        let cfg = &self.cfg;
        let sh = &mut self.shared;
        let vc = &mut self.vcpus[v];
        vc.left -= 1;
        if !vc.remembered.is_empty() && vc.rng.below(1_000_000) < cfg.revert_ppm {
            let i = usize::try_from(vc.rng.below(vc.remembered.len() as u64)).unwrap_or(0);
            let (gfn, pages) = vc.remembered.swap_remove(i);
            sh.set(cfg, gfn, pages, ALL);
            vc.last_call = (gfn, pages);
            return protect(gfn, pages, ALL);
        }
        let (first, len) = vc.part;
        let end = first + len;
        let mut gfn = if vc.rng.below(1_000_000) < cfg.contiguous_ppm {
            vc.cursor
        } else {
            first + vc.rng.below(len)
        };
        if gfn >= end {
            gfn = first;
        }
        let pages = vc.call_size(cfg).min(end - gfn);
        let mask = vc.section_mask();
        vc.cursor = gfn + pages;
        sh.set(cfg, gfn, pages, mask);
        if vc.remembered.len() < REMEMBERED {
            vc.remembered.push((gfn, pages));
        } else {
            let i = usize::try_from(vc.rng.below(REMEMBERED as u64)).unwrap_or(0);
            vc.remembered[i] = (gfn, pages);
        }
        vc.last_call = (gfn, pages);
        protect(gfn, pages, mask)
    }

    /// A VTL 0 access of vCPU `v` that its protections allow.
    #[inline]
    fn access(&mut self, v: usize) -> Event {
        let cfg = &self.cfg;
        let vc = &mut self.vcpus[v];
        let gfn = if vc.last_call.1 > 0 && vc.rng.below(1_000_000) < cfg.near_ppm {
            vc.last_call.0 + vc.rng.below(vc.last_call.1)
        } else {
            let i = vc.rng.below(cfg.image.1 + vc.part.1);
            if i < cfg.image.1 { cfg.image.0 + i } else { vc.part.0 + (i - cfg.image.1) }
        };
        let p = self.shared.prot[cfg.index_of(gfn)];
        let r = vc.rng.next_u64();
        let off = (r >> 52) & !7;
        let addr = Address::Gpa(Gpa::new((gfn * PAGE + off) | cfg.cbit));
        if p & XK != 0 && r & 3 == 0 {
            Event::Fetch { addr, size: 4 }
        } else if p & W != 0 && vc.rng.next_u64() < cfg.write_below {
            Event::Store { addr, size: 8, mt: MemType::Wb }
        } else {
            Event::Load { addr, size: 8 }
        }
    }

    fn next_event(&mut self, v: usize) -> Option<(Agent, Event)> {
        let cfg = self.cfg;
        let vc = &mut self.vcpus[v];
        // The fast path: the accesses after a call.
        if vc.pending_work {
            vc.pending_work = false;
            return Some((vc.vtl0, Event::Work { count: cfg.work }));
        }
        if vc.phase == Phase::Run && vc.budget > 0 {
            vc.budget -= 1;
            vc.pending_work = cfg.work > 0;
            let a = vc.vtl0;
            return Some((a, self.access(v)));
        }
        self.control(v)
    }

    /// Everything but the accesses.
    #[inline(never)]
    fn control(&mut self, v: usize) -> Option<(Agent, Event)> {
        let cfg = self.cfg;
        let n = self.vcpus.len();
        loop {
            let vc = &mut self.vcpus[v];
            match vc.phase {
                Phase::Done => return None,
                Phase::Create(step) => {
                    vc.phase = Phase::Create(step + 1);
                    let fw = |cmd| Event::SnpFw { cmd, vm: VM, spa: None, gpa: None, pages: 1 };
                    let snp = cfg.kind == VmKind::Snp;
                    let e = match step {
                        0 => Event::VmCreate {
                            kind: cfg.kind,
                            vm: VM,
                            asid: ASID,
                            memory: cfg.memory,
                        },
                        1 if snp => fw(SnpFwCmd::LaunchStart),
                        2 if snp => fw(SnpFwCmd::LaunchFinish),
                        1..=3 => {
                            vc.phase = if snp {
                                Phase::Validate(cfg.validated().0, 0)
                            } else {
                                Phase::Vtl1Pass(cfg.vtl1.0)
                            };
                            Event::VmRun { vm: VM, vcpu: 0 }
                        }
                        _ => unreachable!("setup has four steps"),
                    };
                    return Some((vc.host, e));
                }
                Phase::Validate(gfn, step) => {
                    let (_, end) = cfg.validated();
                    if gfn >= end {
                        vc.phase = Phase::Vtl1Pass(cfg.vtl1.0);
                        continue;
                    }
                    let addr = Address::Gpa(Gpa::new(gfn * PAGE));
                    vc.phase = if step == 2 {
                        Phase::Validate(gfn + 1, 0)
                    } else {
                        Phase::Validate(gfn, step + 1)
                    };
                    let e = match step {
                        0 => Event::Pvalidate { addr, size: PageSize::K4, validate: true },
                        _ => Event::RmpAdjust {
                            addr,
                            size: PageSize::K4,
                            vmpl: step,
                            perms: Hex(0xf),
                            vmsa: false,
                        },
                    };
                    return Some((vc.vmpl0, e));
                }
                Phase::Vtl1Pass(gfn) => {
                    let end = cfg.vtl1.0 + cfg.vtl1.1;
                    if gfn >= end || self.shared.issued >= cfg.changes {
                        vc.phase = Phase::ImagePass(cfg.image.0);
                        continue;
                    }
                    let pages = TLFS_REP_MAX.min(end - gfn);
                    vc.phase = Phase::Vtl1Pass(gfn + pages);
                    self.shared.issued += 1;
                    return Some((vc.vtl1, protect(gfn, pages, 0)));
                }
                Phase::ImagePass(gfn) => {
                    let end = cfg.image.0 + cfg.image.1;
                    if gfn >= end || self.shared.issued >= cfg.changes {
                        self.shared.pass_done = true;
                        vc.phase = Phase::Run;
                        vc.left = run_share(&cfg, &self.shared, 0, n);
                        continue;
                    }
                    let pages = vc.call_size(&cfg).min(end - gfn);
                    let mask = vc.section_mask();
                    vc.phase = Phase::ImagePass(gfn + pages);
                    vc.last_call = (gfn, pages);
                    let a = vc.vtl1;
                    self.shared.issued += 1;
                    self.shared.set(&cfg, gfn, pages, mask);
                    return Some((a, protect(gfn, pages, mask)));
                }
                Phase::Wait => {
                    if !self.shared.pass_done {
                        return Some((vc.host, Event::Work { count: cfg.poll }));
                    }
                    vc.phase = Phase::Run;
                    vc.left = run_share(&cfg, &self.shared, v, n);
                    let vcpu = u32::try_from(v).unwrap_or(u32::MAX);
                    return Some((vc.host, Event::VmRun { vm: VM, vcpu }));
                }
                Phase::Run => {
                    if vc.left == 0 {
                        vc.phase = Phase::Done;
                        return None;
                    }
                    vc.budget = cfg.accesses;
                    let a = vc.vtl1;
                    return Some((a, self.call(v)));
                }
            }
        }
    }
}

impl Workload for VsmBoot {
    fn agents(&self) -> &[Agent] {
        &self.agents
    }

    fn next(&mut self, stream: usize, _: &mut dyn MemoryServices) -> Option<Event> {
        let (a, e) = self.next_event(stream)?;
        self.last[stream] = a;
        Some(e)
    }

    fn agent_of_last(&self, stream: usize) -> Agent {
        self.last[stream]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{allocations, drain};
    use crate::{NullMemory, Params};

    fn params(items: &[&str]) -> Params {
        Params::parse(items.iter().copied()).unwrap()
    }

    /// A small boot: 256M guest, 4M image, 4M of VTL 1, 32M pool.
    const SMALL: &[&str] =
        &["guest_memory=256M", "image=4M", "vtl1_memory=4M", "working_set=32M", "changes=3000"];

    fn small(extra: &[&str]) -> Params {
        let mut v = SMALL.to_vec();
        v.extend_from_slice(extra);
        params(&v)
    }

    #[test]
    fn issues_exactly_the_changes_asked_with_accesses_between() {
        let ev = drain(&INFO, &small(&[]), 1);
        let calls: Vec<_> =
            ev.iter().filter(|(_, _, e)| matches!(e, Event::VsmProtect { .. })).collect();
        assert_eq!(calls.len(), 3000);
        // VTL 1 issues them all, against VTL 0 of VM 1, within the rep-call limit.
        for (s, a, e) in &calls {
            let Event::VsmProtect { vm, vtl, pages, .. } = e else { unreachable!() };
            assert_eq!((*vm, *vtl), (VM, 0));
            assert!((1..=TLFS_REP_MAX).contains(pages));
            let cpu = u32::try_from(*s).unwrap();
            assert_eq!(
                *a,
                Agent::Cpu {
                    cpu,
                    ctx: Context::Guest { vm: VM, vcpu: cpu, level: PrivLevel::Vtl(1) }
                }
            );
        }
        // The initial pass: VTL 1's 1,024 pages in calls of 510 (mask 0), first.
        let Event::VsmProtect { gpa, pages, mask, .. } = calls[0].2 else { unreachable!() };
        assert_eq!((gpa.raw(), pages, mask.0), (((4 + 2) << 20), 510, 0));
        assert!(matches!(ev[0].2, Event::VmCreate { kind: VmKind::Plain, vm: VM, .. }));
        // Every run-phase call is followed by 4 VTL 0 accesses; the initial pass (vCPU 0's
        // calls before its first access, less the first run-phase call) by none.
        let is_access =
            |e: &Event| matches!(e, Event::Load { .. } | Event::Store { .. } | Event::Fetch { .. });
        let accesses = ev.iter().filter(|(_, _, e)| is_access(e)).count();
        let first = ev.iter().position(|(s, _, e)| *s == 0 && is_access(e)).unwrap();
        let initial =
            ev[..first].iter().filter(|(_, _, e)| matches!(e, Event::VsmProtect { .. })).count()
                - 1;
        // 2 VTL 1 calls, then the image's 1,024 pages in calls of 8.6 pages on average.
        assert!((60..400).contains(&initial), "{initial}");
        assert_eq!(accesses, 4 * (3000 - initial));
    }

    #[test]
    fn accesses_respect_the_protections() {
        for kind in ["plain", "snp"] {
            let ev = drain(&INFO, &small(&[&format!("kind={kind}"), "changes=2000", "vcpus=3"]), 7);
            let mut prot = vec![ALL; 1 << 16];
            let (mut fetches, mut stores) = (0, 0);
            for (_, a, e) in &ev {
                let vtl0 = matches!(
                    a,
                    Agent::Cpu { ctx: Context::Guest { level: PrivLevel::Vtl(0), .. }, .. }
                );
                let (addr, need) = match e {
                    Event::VsmProtect { gpa, pages, mask, .. } => {
                        let g = usize::try_from(gpa.raw() / PAGE).unwrap();
                        let n = usize::try_from(*pages).unwrap();
                        prot[g..g + n].fill(u8::try_from(mask.0).unwrap());
                        continue;
                    }
                    Event::Load { addr, .. } => (addr, R),
                    Event::Store { addr, .. } => {
                        stores += 1;
                        (addr, W)
                    }
                    Event::Fetch { addr, .. } => {
                        fetches += 1;
                        (addr, XK)
                    }
                    _ => continue,
                };
                assert!(vtl0, "{a} {e:?}");
                let raw = addr.raw();
                assert_eq!(raw & (1 << 51) != 0, kind == "snp", "C-bit of {addr:?}");
                let g = usize::try_from((raw & !(1 << 51)) / PAGE).unwrap();
                assert!(prot[g] & need != 0, "{kind}: {e:?} on a page with {:#x}", prot[g]);
                assert!(g >= 512, "never below 2M");
            }
            assert!(fetches > 0 && stores > 0);
        }
    }

    #[test]
    fn snp_setup_validates_and_grants_every_page() {
        let ev = drain(&INFO, &small(&["kind=snp", "changes=10"]), 1);
        let pages = (32 + 4 + 4) << 8; // image, VTL 1, pool: 4K pages
        let pv = ev
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::Pvalidate { validate: true, .. }))
            .count();
        let adj = ev
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::RmpAdjust { perms: Hex(0xf), .. }))
            .count();
        assert_eq!((pv, adj), (pages, 2 * pages));
        let vcpu0: Vec<_> = ev.iter().filter(|(s, _, _)| *s == 0).map(|(_, _, e)| e).collect();
        assert!(matches!(vcpu0[1], Event::SnpFw { cmd: SnpFwCmd::LaunchStart, .. }));
    }

    #[test]
    fn deterministic_per_seed() {
        let p = small(&["changes=500"]);
        assert_eq!(drain(&INFO, &p, 3), drain(&INFO, &p, 3));
        assert_ne!(drain(&INFO, &p, 3), drain(&INFO, &p, 4));
    }

    #[test]
    fn bad_parameters_are_refused() {
        for bad in [
            &["kind=tdx"][..],
            &["guest_memory=3M"],
            &["working_set=300M"],
            &["rep_max=511"],
            &["revert=1.5"],
            &["vcpus=0"],
            &["changes=0"],
        ] {
            let e = INFO.instantiate(&small(bad), 1).unwrap_err();
            assert!(matches!(e, ParamError::Bad { .. }), "{bad:?}: {e}");
        }
        assert!(INFO.instantiate(&small(&["nope=1"]), 1).is_err());
    }

    #[test]
    fn steady_state_generates_without_allocating() {
        let mut w = INFO.instantiate(&small(&["changes=1000000"]), 1).unwrap();
        let mut mem = NullMemory::default();
        for _ in 0..20_000 {
            for s in 0..2 {
                w.next(s, &mut mem);
            }
        }
        let before = allocations();
        let mut calls = 0;
        for _ in 0..200_000 {
            for s in 0..2 {
                calls += u64::from(matches!(w.next(s, &mut mem), Some(Event::VsmProtect { .. })));
            }
        }
        assert_eq!(allocations() - before, 0);
        assert!(calls > 50_000, "{calls}");
    }
}
