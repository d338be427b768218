//! `multi-tenant`: SNP guests of different sizes arriving on a host and leaving it over time, so
//! that their memory, drawn from and returned to the one host allocator, fragments physical
//! memory (issue #5).
//!
//! Guest `g` (VM `g+1`, ASID `first_asid+g`) has the memory `sizes[g % len]` and runs on guest
//! CPU `g % guest_cpus` (CPUs `kernel_cpus..`), whose stream is `snp-churn`'s guest-CPU stream
//! ([`crate::snp_churn::GuestCpu`]): launch by GPA (`vm-create`, `snp-fw launch-start`,
//! `snp-fw launch-update vm=V gpa=0x0 pages=IMAGE`, `snp-fw launch-finish`, `vmrun`), boot
//! (PVALIDATE of its working set, the initial shared pool), then loads and stores with
//! page-state changes every `psc_interval` accesses, time-sliced with the CPU's other live
//! guests. Unlike `snp-churn`, a guest that has made its accesses is destroyed:
//! `vm-destroy vm=V` as its CPU's host kernel, which returns its memory to the allocator.
//!
//! **Arrivals and departures** (Unsourced: a generic open-system model, not fitted to a
//! measured cloud host). Guest `g` arrives at `A_g = A_{g-1} + U(0, 2·arrival_mean)` (integer
//! uniform; `A_0 = 0`), a time counted in accesses made by its CPU (a CPU with no guest
//! arrived idles until the next arrival). It makes `U(lifetime/2, 3·lifetime/2)` accesses and
//! leaves. A guest's working set is `ws_fraction` of its memory; a booting guest validates
//! all of it, so its pages are faulted in from guest_memfd while other guests' are freed.
//! Streams `0..kernel_cpus` are kernel streams as in `snp-churn` (slab pages beside the
//! guests').
//!
//! Not generated: ASID reuse (each guest has its own), more than one vCPU, guest_memfd hugepage
//! folios, migration.

use crate::kernel::{self, KernelConfig, KernelStream};
use crate::params::{ParamDoc, ParamError, Params};
use crate::snp_churn::{
    Guest, GuestConfig, GuestCpu, GuestsWithKernel, PSC_MAX_PAGES, Sizes, write_threshold,
};
use crate::{Workload, WorkloadInfo};
use sim_core::config::ByteSize;
use sim_core::{Agent, Rng};

const PAGE: u64 = 4096;

const PARAMS: &[ParamDoc] = &[
    ParamDoc { name: "guests", default: "8", doc: "SNP guests arriving over the run" },
    ParamDoc {
        name: "sizes",
        default: "64M,256M,128M",
        doc: "guest memory sizes (comma-separated bytes, multiples of 4K), guest g taking \
              sizes[g % len]. Unsourced: a mix of small guests",
    },
    ParamDoc {
        name: "ws_fraction",
        default: "1",
        doc: "fraction of its memory a guest validates and accesses, from GPA 0 (rounded down \
              to 4K). Default 1: a Linux SNP guest without lazy acceptance validates all of \
              its memory at boot",
    },
    ParamDoc {
        name: "arrival_mean",
        default: "40000",
        doc: "mean accesses (of a CPU) between two arrivals (uniform in 0..=2x). Unsourced",
    },
    ParamDoc {
        name: "lifetime",
        default: "100000",
        doc: "mean accesses a guest makes before it leaves (uniform in x/2..=3x/2, at least \
              1). Unsourced: with the defaults, a CPU's guests overlap",
    },
    ParamDoc {
        name: "guest_cpus",
        default: "2",
        doc: "CPUs running guests, numbered after the kernel CPUs (at most guests are used)",
    },
    ParamDoc {
        name: "kernel_cpus",
        default: "1",
        doc: "CPUs running kernel direct-map activity (CPUs 0..kernel_cpus)",
    },
    ParamDoc {
        name: "image",
        default: "1M",
        doc: "initial image at GPA 0 measured by SNP_LAUNCH_UPDATE (bytes, rounded up to 4K; \
              below every working set)",
    },
    ParamDoc {
        name: "psc_interval",
        default: "1000",
        doc: "guest accesses between two page-state changes of a guest (0: none after boot)",
    },
    ParamDoc { name: "psc_batch", default: "1", doc: "most pages per conversion (1..=253)" },
    ParamDoc {
        name: "shared_fraction",
        default: "0.1",
        doc: "fraction of a working set kept shared. Unsourced, as in snp-churn",
    },
    ParamDoc {
        name: "seq_lines",
        default: "16",
        doc: "mean sequential run of a guest's accesses, in 64-byte lines. Unsourced, as in \
              snp-churn",
    },
    ParamDoc {
        name: "slice",
        default: "10000",
        doc: "guest accesses a CPU runs one guest before turning to its next live guest",
    },
    ParamDoc {
        name: "write_fraction",
        default: "0.3",
        doc: "fraction of guest and kernel accesses that are stores. Unsourced",
    },
    ParamDoc {
        name: "work",
        default: "20",
        doc: "non-memory instructions after each guest and kernel access",
    },
    ParamDoc { name: "first_asid", default: "1", doc: "ASID of the first guest" },
    ParamDoc {
        name: "cbit_pos",
        default: "51",
        doc: "C-bit position in a private access's GPA; must equal the machine's mmu.cbit_pos",
    },
    ParamDoc {
        name: "kernel_accesses",
        default: "200000",
        doc: "direct-map accesses per kernel CPU",
    },
    kernel::SLAB_PAGES,
    kernel::SLAB_CHURN,
];

/// Registry entry.
pub(crate) const INFO: WorkloadInfo = WorkloadInfo {
    name: "multi-tenant",
    summary: "SNP guests of given sizes arriving and leaving over time, fragmenting host \
              memory",
    description: "Guests of the listed sizes arrive at random intervals, are launched by GPA, \
                  validate their memory, run snp-churn's guest access and page-state-change \
                  stream time-sliced on the guest CPUs, and are destroyed after a random \
                  lifetime, so guest memory is allocated and freed in interleaved, \
                  overlapping lifetimes beside kernel slab pages.",
    params: PARAMS,
    build,
    preset: None,
};

fn build(p: &Params, seed: u64) -> Result<Box<dyn Workload>, ParamError> {
    let ensure = |ok: bool, name: &str, why: String| {
        if ok { Ok(()) } else { Err(Params::bad(name, p.raw(PARAMS, name), why)) }
    };
    let guests = p.u64_in(PARAMS, "guests", 0, 1024)?;
    let sizes_text = p.raw(PARAMS, "sizes");
    let sizes = sizes_text
        .split(',')
        .map(|t| ByteSize::parse(t.trim()).map(|b| b.0))
        .collect::<Result<Vec<u64>, String>>()
        .map_err(|e| Params::bad("sizes", sizes_text, e))?;
    ensure(
        sizes.iter().all(|&s| s >= PAGE && s.is_multiple_of(PAGE) && s <= 1 << 40),
        "sizes",
        "every size must be a multiple of 4K in 4K..=1T".into(),
    )?;
    let ws_ppm = p.fraction_ppm(PARAMS, "ws_fraction")?;
    let image_pages = p.size_in(PARAMS, "image", 0, 1 << 40)?.div_ceil(PAGE);
    let shared_ppm = p.fraction_ppm(PARAMS, "shared_fraction")?;
    let mut guest_sizes = Vec::new();
    for &memory in &sizes {
        let ws_pages =
            u64::try_from(u128::from(memory / PAGE) * u128::from(ws_ppm) / 1_000_000).unwrap_or(0);
        ensure(
            image_pages < ws_pages,
            "ws_fraction",
            format!("the working set of a {memory}-byte guest must exceed the image"),
        )?;
        let target_shared = (ws_pages * shared_ppm + 500_000) / 1_000_000;
        ensure(
            target_shared <= ws_pages - image_pages,
            "shared_fraction",
            format!("{target_shared} shared pages do not fit above the image"),
        )?;
        guest_sizes.push(Sizes { memory, ws_bytes: ws_pages * PAGE, target_shared });
    }
    let cbit_pos = p.u64_in(PARAMS, "cbit_pos", 12, 51)?;
    ensure(
        sizes.iter().all(|&s| s <= 1 << cbit_pos),
        "cbit_pos",
        "the C-bit must lie above every guest-physical address".into(),
    )?;
    let kernel_cpus = p.u64_in(PARAMS, "kernel_cpus", 0, 255)?;
    let guest_cpus = p.u64_in(PARAMS, "guest_cpus", 1, 255)?.min(guests.max(1));
    let kcfg = KernelConfig::parse(p, PARAMS)?;
    let cfg = GuestConfig {
        image_pages,
        accesses: 0,
        psc_interval: p.u64_in(PARAMS, "psc_interval", 0, 1 << 40)?,
        psc_batch: p.u64_in(PARAMS, "psc_batch", 1, PSC_MAX_PAGES)?,
        seq_lines: p.u64_in(PARAMS, "seq_lines", 1, 1 << 20)?,
        slice: p.u64_in(PARAMS, "slice", 1, 1 << 40)?,
        write_below: write_threshold(kcfg.write_ppm),
        work: kcfg.work,
        cbit: 1 << cbit_pos,
        destroy: true,
    };
    let arrival_mean = p.u64_in(PARAMS, "arrival_mean", 0, 1 << 40)?;
    let lifetime = p.u64_in(PARAMS, "lifetime", 1, 1 << 40)?;
    let first_asid = p.u64_in(PARAMS, "first_asid", 1, 1 << 20)?;
    let cpu_of = |i: u64| u32::try_from(i).unwrap_or(u32::MAX);
    let rng = Rng::new(seed);
    // Arrivals and lifetimes from their own stream, so that they do not depend on the guests'
    // access draws.
    let mut life = rng.fork(1 << 40);
    let mut agents: Vec<Agent> = (0..kernel_cpus).map(|c| Agent::host(cpu_of(c))).collect();
    let kernel = (0..kernel_cpus).map(|c| KernelStream::new(rng.fork(c), &kcfg)).collect();
    let mut per_cpu: Vec<Vec<Guest>> = (0..guest_cpus).map(|_| Vec::new()).collect();
    let mut arrive = 0u64;
    for g in 0..guests {
        if g > 0 {
            arrive += life.below(2 * arrival_mean + 1);
        }
        let accesses = (lifetime / 2 + life.below(lifetime + 1)).max(1);
        let cpu = g % guest_cpus;
        let vm = cpu_of(g + 1);
        let mut guest = Guest::new(
            vm,
            cpu_of(first_asid + g),
            Agent::guest(cpu_of(kernel_cpus + cpu), vm, 0),
            guest_sizes[usize::try_from(g).unwrap_or(0) % guest_sizes.len()],
            arrive,
            &cfg,
            rng.fork((1 << 32) | g),
        );
        guest.set_accesses(accesses);
        per_cpu[usize::try_from(cpu).unwrap_or(0)].push(guest);
    }
    let mut cpus = Vec::new();
    for (i, guests) in per_cpu.into_iter().enumerate() {
        let host = Agent::host(cpu_of(kernel_cpus + i as u64));
        agents.push(host);
        cpus.push(GuestCpu::new(host, guests, &cfg));
    }
    Ok(Box::new(GuestsWithKernel { last: agents.clone(), agents, cfg, kcfg, kernel, cpus }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::drain;
    use sim_core::Event;
    use std::collections::BTreeMap;

    fn params(items: &[&str]) -> Params {
        Params::parse(items.iter().copied()).unwrap()
    }

    fn small() -> Params {
        params(&[
            "guests=7",
            "sizes=256K,512K,128K",
            "image=16K",
            "arrival_mean=300",
            "lifetime=1000",
            "slice=200",
            "psc_interval=100",
            "kernel_accesses=500",
            "slab_pages=8",
            "work=1",
        ])
    }

    #[test]
    fn same_seed_same_stream_different_seed_different() {
        let p = small();
        assert_eq!(drain(&INFO, &p, 4), drain(&INFO, &p, 4));
        assert_ne!(drain(&INFO, &p, 4), drain(&INFO, &p, 5));
    }

    /// Per guest: created once with its listed size, every guest event between its
    /// `vm-create` and its `vm-destroy`, destroyed once, on one CPU; lifetimes overlap.
    #[test]
    fn every_guest_lives_once_between_create_and_destroy() {
        let ev = drain(&INFO, &small(), 9);
        let mut life: BTreeMap<u32, (usize, Option<usize>, u64)> = BTreeMap::new();
        let sizes = [256u64 << 10, 512 << 10, 128 << 10];
        let mut accesses = BTreeMap::<u32, u64>::new();
        for (i, (s, a, e)) in ev.iter().enumerate() {
            match e {
                Event::VmCreate { vm, memory, asid, .. } => {
                    assert_eq!(*memory, sizes[(*vm as usize - 1) % 3]);
                    assert_eq!(*asid, *vm);
                    assert!(life.insert(*vm, (i, None, 0)).is_none(), "vm {vm} created twice");
                    assert_eq!(*s, 1 + (*vm as usize - 1) % 2);
                }
                Event::VmDestroy { vm } => {
                    let l = life.get_mut(vm).expect("created");
                    assert!(l.1.replace(i).is_none(), "vm {vm} destroyed twice");
                }
                _ => {
                    if let Agent::Cpu { ctx: sim_core::Context::Guest { vm, .. }, .. } = a {
                        let l = life[vm];
                        assert!(l.1.is_none(), "event of vm {vm} after its destroy: {e:?}");
                        if e.is_access() {
                            *accesses.entry(*vm).or_insert(0) += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(life.len(), 7);
        assert!(life.values().all(|l| l.1.is_some()), "{life:?}");
        // Lifetimes of 500..=1500 accesses.
        assert!(accesses.values().all(|&n| (500..=1500).contains(&n)), "{accesses:?}");
        // Some guest is created while another is alive and destroyed before it ends.
        let overlap = life.iter().any(|(v, l)| {
            life.iter().any(|(w, m)| v != w && m.0 > l.0 && m.0 < l.1.unwrap() && m.1 > l.1)
        });
        assert!(overlap, "{life:?}");
    }

    #[test]
    fn bad_params_are_rejected() {
        for (bad, name) in [
            (&["sizes=64M,5000"][..], "sizes"),
            (&["sizes=64M,x"][..], "sizes"),
            (&["sizes=1M", "image=1M"][..], "ws_fraction"),
            (&["lifetime=0"][..], "lifetime"),
        ] {
            match INFO.instantiate(&params(bad), 0) {
                Err(ParamError::Bad { name: n, .. }) => assert_eq!(n, name, "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
