//! `snp-launch`: SNP guests being launched on a host while the kernel touches memory through the
//! direct map. The default workload.
//!
//! Stream 0 (CPU 0, host kernel) launches `guests` SNP guests one after another, as KVM and the
//! VMM do on a Linux host (spec/snp.md §4.5): create the VM, `SNP_LAUNCH_START`, then for each
//! guest_memfd folio: allocate it (`gmem-alloc`, through the host allocator), copy the initial
//! image into the first `image` bytes through the direct map while the page is still shared,
//! `RMPUPDATE` it to private at the folio's RMP level (2M when the folio order is ≥ 9 and
//! aligned, as `sev_gmem_prepare` does; else 4K), and `SNP_LAUNCH_UPDATE` the image pages; then
//! `SNP_LAUNCH_FINISH` and `VMRUN`.
//!
//! Streams 1..=`kernel_cpus` (host kernel) model ordinary kernel activity: each keeps a working
//! set of slab pages drawn from the same allocator (so they land beside guest folios in the
//! same 2M regions), replacing the oldest page every `slab_churn` accesses, and loads or stores
//! 64-byte objects in it through the direct map, with `work` non-memory instructions between
//! accesses.

use crate::kernel::{self, KernelConfig, KernelStream};
use crate::params::{ParamDoc, ParamError, Params};
use crate::{Workload, WorkloadInfo};
use sim_core::event::{Address, MemType, SnpFwCmd, VmKind};
use sim_core::{Agent, Event, Gpa, MemoryServices, PageSize, Rng, Spa};
use std::collections::VecDeque;

const PARAMS: &[ParamDoc] = &[
    ParamDoc { name: "guests", default: "4", doc: "SNP guests launched, one after another" },
    ParamDoc { name: "guest_memory", default: "64M", doc: "private memory per guest (bytes)" },
    ParamDoc {
        name: "folio_order",
        default: "0",
        doc: "guest_memfd folio order (0 = 4K, 9 = 2M). Default 0: hugepage guest_memfd was \
              unmerged as of May 2026 (spec/snp.md §4.5 item 6), so folios are 4K",
    },
    ParamDoc {
        name: "image",
        default: "1M",
        doc: "initial image bytes per guest written by the VMM and measured by SNP_LAUNCH_UPDATE",
    },
    ParamDoc {
        name: "kernel_cpus",
        default: "2",
        doc: "CPUs running kernel direct-map activity (streams 1..)",
    },
    ParamDoc {
        name: "kernel_accesses",
        default: "100000",
        doc: "direct-map accesses per kernel CPU",
    },
    ParamDoc {
        name: "write_fraction",
        default: "0.3",
        doc: "fraction of kernel accesses that are stores. Unsourced: a plausible kernel load/store mix",
    },
    kernel::SLAB_PAGES,
    kernel::SLAB_CHURN,
    ParamDoc {
        name: "work",
        default: "20",
        doc: "non-memory instructions between kernel accesses",
    },
    ParamDoc {
        name: "first_asid",
        default: "1",
        doc: "ASID of the first guest (SNP ASIDs start at 1)",
    },
];

/// Registry entry.
pub(crate) const INFO: WorkloadInfo = WorkloadInfo {
    name: "snp-launch",
    summary: "SNP guests launched while kernel CPUs write slab memory through the direct map",
    description: "Guest folios and kernel slab pages come from one host allocator, so private \
                  pages and kernel-written pages share 2M direct-map regions: under physmap \
                  policy `none` kernel writes through large mappings hit RMP #PFs; under \
                  `split-on-assign` the direct map splits to 4K around every private page.",
    params: PARAMS,
    build,
    preset: None,
};

fn build(p: &Params, seed: u64) -> Result<Box<dyn Workload>, ParamError> {
    let guests = p.u64_in(PARAMS, "guests", 0, 1024)?;
    let guest_memory = p.size_in(PARAMS, "guest_memory", 4096, 1 << 40)?;
    let folio_order = p.u64_in(PARAMS, "folio_order", 0, 9)?;
    let folio_bytes = 4096u64 << folio_order;
    if guest_memory % folio_bytes != 0 {
        return Err(ParamError::Bad {
            name: "guest_memory".into(),
            value: guest_memory.to_string(),
            why: format!("must be a multiple of the folio size ({folio_bytes} bytes)"),
        });
    }
    let kernel_cpus = p.u64_in(PARAMS, "kernel_cpus", 0, 255)?;
    let mut agents = vec![Agent::host(0)];
    for c in 1..=kernel_cpus {
        agents.push(Agent::host(u32::try_from(c).unwrap_or(u32::MAX)));
    }
    let kcfg = KernelConfig::parse(p, PARAMS)?;
    let rng = Rng::new(seed);
    let kernel = (1..=kernel_cpus).map(|c| KernelStream::new(rng.fork(c), &kcfg)).collect();
    let w = SnpLaunch {
        agents,
        guests,
        guest_pages: guest_memory / 4096,
        folio_order: u8::try_from(folio_order).unwrap_or(0),
        image_pages: p.size_in(PARAMS, "image", 0, 1 << 40)?.div_ceil(4096),
        first_asid: u32::try_from(p.u64_in(PARAMS, "first_asid", 1, 1 << 20)?).unwrap_or(1),
        launch: LaunchState::default(),
        pending: VecDeque::new(),
        kcfg,
        kernel,
    };
    Ok(Box::new(w))
}

#[derive(Debug, Default)]
struct LaunchState {
    guest: u64,
    /// Next 4K page index inside the current guest; `None` before VM creation.
    page: Option<u64>,
    done: bool,
}

#[derive(Debug)]
struct SnpLaunch {
    agents: Vec<Agent>,
    guests: u64,
    guest_pages: u64,
    folio_order: u8,
    image_pages: u64,
    first_asid: u32,
    launch: LaunchState,
    /// Events of the launch stream already decided, in order.
    pending: VecDeque<Event>,
    kcfg: KernelConfig,
    kernel: Vec<KernelStream>,
}

impl SnpLaunch {
    fn vm(&self) -> u32 {
        u32::try_from(self.launch.guest + 1).unwrap_or(u32::MAX)
    }

    fn asid(&self) -> u32 {
        self.first_asid.saturating_add(u32::try_from(self.launch.guest).unwrap_or(u32::MAX))
    }

    /// Decide the next batch of launch events into `pending`.
    fn step_launch(&mut self, mem: &mut dyn MemoryServices) {
        if self.launch.done {
            return;
        }
        if self.launch.guest >= self.guests {
            self.launch.done = true;
            return;
        }
        let vm = self.vm();
        let Some(page) = self.launch.page else {
            self.pending.push_back(Event::VmCreate {
                kind: VmKind::Snp,
                vm,
                asid: self.asid(),
                memory: self.guest_pages * 4096,
            });
            self.pending.push_back(Event::SnpFw {
                cmd: SnpFwCmd::LaunchStart,
                vm,
                spa: None,
                gpa: None,
                pages: 1,
            });
            self.launch.page = Some(0);
            return;
        };
        if page >= self.guest_pages {
            self.pending.push_back(Event::SnpFw {
                cmd: SnpFwCmd::LaunchFinish,
                vm,
                spa: None,
                gpa: None,
                pages: 1,
            });
            self.pending.push_back(Event::VmRun { vm, vcpu: 0 });
            self.launch.guest += 1;
            self.launch.page = None;
            return;
        }
        let order = self.folio_order;
        let gpa = Gpa::new(page * 4096);
        let Some(spa) = mem.gmem_alloc(vm, gpa, order) else {
            // Host memory exhausted: the launch stops here (reported by the engine's counters).
            self.launch.done = true;
            return;
        };
        self.pending.push_back(Event::GmemAlloc { gpa, spa, vm, order });
        let pages = 1u64 << order;
        let image = self.image_pages.saturating_sub(page).min(pages);
        for i in 0..image {
            // The VMM copies the image while the page is still shared: 64-byte stores.
            let base = spa.raw() + i * 4096;
            for off in (0..4096).step_by(512) {
                self.pending.push_back(Event::Store {
                    addr: Address::Spa(Spa::new(base + off)),
                    size: 64,
                    mt: MemType::Wb,
                });
            }
        }
        // sev_gmem_prepare: 2M RMP entry only for an aligned order-9 folio (spec/snp.md §4.5).
        // Image pages are populated for SNP_LAUNCH_UPDATE instead (`sev_gmem_post_populate`):
        // private at 4K and immutable (Pre-Guest), which the firmware requires; a folio holding
        // image pages is therefore made private 4K by 4K.
        let rmp_2m = image == 0
            && order >= 9
            && spa.is_aligned(PageSize::M2)
            && gpa.is_aligned(PageSize::M2);
        let (step, size) = if rmp_2m { (512, PageSize::M2) } else { (1, PageSize::K4) };
        for i in (0..pages).step_by(step) {
            self.pending.push_back(Event::RmpUpdate {
                spa: Spa::new(spa.raw() + i * 4096),
                size,
                assigned: true,
                asid: self.asid(),
                gpa: Gpa::new(gpa.raw() + i * 4096),
                immutable: i < image,
            });
        }
        if image > 0 {
            self.pending.push_back(Event::SnpFw {
                cmd: SnpFwCmd::LaunchUpdate,
                vm,
                spa: Some(spa),
                gpa: Some(gpa),
                pages: image,
            });
        }
        self.launch.page = Some(page + pages);
    }
}

impl Workload for SnpLaunch {
    fn agents(&self) -> &[Agent] {
        &self.agents
    }

    fn next(&mut self, stream: usize, mem: &mut dyn MemoryServices) -> Option<Event> {
        if stream == 0 {
            while self.pending.is_empty() && !self.launch.done {
                self.step_launch(mem);
            }
            return self.pending.pop_front();
        }
        let kcfg = &self.kcfg;
        self.kernel.get_mut(stream - 1)?.next(kcfg, mem)
    }

    fn next_work(&mut self, stream: usize) -> Option<u64> {
        let kcfg = &self.kcfg;
        self.kernel.get_mut(stream.checked_sub(1)?)?.next_work(kcfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(p: &Params, seed: u64) -> Vec<(usize, Event)> {
        crate::testutil::drain(&INFO, p, seed).into_iter().map(|(s, _, e)| (s, e)).collect()
    }

    #[test]
    fn launch_assigns_every_guest_page_once() {
        let p = Params::parse(["guests=2", "guest_memory=1M", "kernel_accesses=100", "image=8K"])
            .unwrap();
        let ev = drain(&p, 1);
        let updates: Vec<_> =
            ev.iter().filter(|(_, e)| matches!(e, Event::RmpUpdate { .. })).collect();
        assert_eq!(updates.len(), 2 * 256);
        let finishes = ev
            .iter()
            .filter(|(_, e)| matches!(e, Event::SnpFw { cmd: SnpFwCmd::LaunchFinish, .. }))
            .count();
        assert_eq!(finishes, 2);
        let kernel_acc = ev.iter().filter(|(s, e)| *s > 0 && e.is_access()).count();
        assert_eq!(kernel_acc, 200);
        // Image stores come before the page's RMPUPDATE (the page is still shared).
        let first_store =
            ev.iter().position(|(s, e)| *s == 0 && matches!(e, Event::Store { .. })).unwrap();
        let first_update =
            ev.iter().position(|(_, e)| matches!(e, Event::RmpUpdate { .. })).unwrap();
        assert!(first_store < first_update);
    }

    /// A 2M folio without image pages becomes one 2M RMP entry; one holding image pages is
    /// populated 4K by 4K, the image pages immutable (Pre-Guest, as `sev_gmem_post_populate`
    /// leaves them for SNP_LAUNCH_UPDATE).
    #[test]
    fn order_9_folios_use_2m_rmp_entries() {
        let p = Params::parse(["guests=1", "guest_memory=4M", "folio_order=9", "kernel_cpus=0"])
            .unwrap();
        let ev = drain(&p, 1);
        let updates: Vec<_> = ev
            .iter()
            .filter_map(|(_, e)| match e {
                Event::RmpUpdate { size, immutable, .. } => Some((*size, *immutable)),
                _ => None,
            })
            .collect();
        // The default 1M image: 256 immutable 4K pages, then the rest of that folio 4K, then
        // one 2M entry for the second folio.
        assert_eq!(updates.len(), 512 + 1);
        assert!(updates[..256].iter().all(|u| *u == (PageSize::K4, true)));
        assert!(updates[256..512].iter().all(|u| *u == (PageSize::K4, false)));
        assert_eq!(updates[512], (PageSize::M2, false));
        let p = Params::parse([
            "guests=1",
            "guest_memory=4M",
            "folio_order=9",
            "kernel_cpus=0",
            "image=0",
        ])
        .unwrap();
        let ev = drain(&p, 1);
        let sizes: Vec<_> = ev
            .iter()
            .filter_map(|(_, e)| match e {
                Event::RmpUpdate { size, .. } => Some(*size),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, vec![PageSize::M2, PageSize::M2]);
    }

    #[test]
    fn same_seed_same_stream_and_bad_params_rejected() {
        let p = Params::parse(["guests=1", "guest_memory=256K", "kernel_accesses=500"]).unwrap();
        assert_eq!(drain(&p, 9), drain(&p, 9));
        assert_ne!(drain(&p, 9), drain(&p, 10));
        let bad = Params::parse(["gusts=1"]).unwrap();
        assert!(matches!(INFO.instantiate(&bad, 0), Err(ParamError::Unknown { .. })));
        let bad = Params::parse(["folio_order=9", "guest_memory=1M"]).unwrap();
        assert!(INFO.instantiate(&bad, 0).is_err());
        let bad = Params::parse(["write_fraction=1.5"]).unwrap();
        assert!(INFO.instantiate(&bad, 0).is_err());
    }
}
