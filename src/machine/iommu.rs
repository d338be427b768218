//! Devices on the machine: DMA through the IOMMU ([`mmu_model::Iommu`]), the host's IOMMU
//! programming (device entries, I/O page tables, invalidation commands), and the RMP check of
//! DMA on SNP hosts (spec/snp.md §2.7).
//!
//! Devices keep their own clocks: a DMA costs its device the IOMMU's translation (IOTLB lookup,
//! entry fetch and table reads), the RMP entry reads of its checks and one memory access per
//! 4 KiB page touched, all at `iommu.mem_latency`; CPUs are not charged. Host-side programming
//! (`map`/`unmap` in `space=iodom:N`, `iommu` commands) runs on the issuing CPU, commands at
//! `iommu.command_latency` each.

use super::{Machine, Outcome, Refusal, TableFrames, Timing};
use mmu_model::{DmaCheck, Iommu, IommuEvent, IommuKind, NoDmaCheck};
use rmp_model::Rmp;
use sim_core::event::{Disposition, FaultKind, IommuCmd};
use sim_core::{Address, Cycles, Iova, PageSize, Spa};

/// The RMP as the IOMMU's check: DMA (and, with `iommu.rmp_check_tables`, the IOMMU's table
/// reads) must target hypervisor-owned memory (spec/snp.md §2.7: "DMA must target shared
/// (hypervisor-owned) memory" [AMDSEV109]); the authoritative entry is read as for CPU checks
/// (the 2 MiB entry of an assigned 2 MiB page, spec/snp.md §1.4). Counts the entry reads.
struct RmpDmaCheck<'a> {
    rmp: &'a Rmp,
    reads: u64,
}

impl DmaCheck for RmpDmaCheck<'_> {
    fn allowed(&mut self, _device: u32, spa: Spa, _write: bool, _table: bool) -> bool {
        self.reads += 1;
        !self.rmp.entry(spa).assigned
    }
}

impl Machine {
    /// The IOMMU of the configuration.
    ///
    /// # Errors
    /// An invalid `[iommu]` section.
    pub(super) fn new_iommu(cfg: &crate::config::MachineConfig) -> Result<Iommu, String> {
        Iommu::new(&cfg.iommu, cfg.mmu.pte_format()).map_err(|e| e.to_string())
    }

    /// The clock of device `d` (devices start at 0 and advance by their own DMA).
    pub(super) fn device_clock(&self, d: u32) -> Cycles {
        self.device_clocks.get(&d).copied().unwrap_or(Cycles::ZERO)
    }

    /// Run one device event: idle until its timestamp, then the event, on the device's clock.
    pub(super) fn exec_device(
        &mut self,
        d: u32,
        time: Option<Cycles>,
        ev: &sim_core::Event,
    ) -> Outcome {
        let mut clock = self.device_clock(d);
        if let Some(t) = time {
            clock = clock.max(t);
        }
        let out = match ev {
            sim_core::Event::DmaRead { addr, size } => self.dma(d, *addr, *size, false),
            sim_core::Event::DmaWrite { addr, size } => self.dma(d, *addr, *size, true),
            // A device retires no instructions: its `work N` is N cycles of its own time without
            // a DMA (idle, or busy inside the device), so a device waiting on its driver moves
            // its clock on. Charged to no CPU cycle category.
            sim_core::Event::Work { count } => {
                Outcome { cost: Cycles::new(*count), timing: Timing::Issue, ..Outcome::default() }
            }
            other => {
                self.not_modelled(&format!("{} by a device", other.keyword()));
                Outcome::default()
            }
        };
        self.device_clocks.insert(d, clock + out.cost);
        out
    }

    /// One DMA of `size` bytes at `addr` (an `iova:`), page by page; stops at the first page
    /// the IOMMU refuses, which is reported as the event's fault.
    fn dma(&mut self, device: u32, addr: Address, size: u32, write: bool) -> Outcome {
        if write {
            self.accesses.dma_writes += 1;
        } else {
            self.accesses.dma_reads += 1;
        }
        let Address::Iova(start) = addr else {
            self.not_modelled("DMA to an address that is not iova:");
            return Outcome::default();
        };
        let first = start.raw() >> 12;
        let last = start.raw().saturating_add(u64::from(size.max(1)) - 1) >> 12;
        let mem = self.cfg.iommu.mem_latency;
        let mut cost = Cycles::ZERO;
        for page in first..=last {
            let iova = if page == first { start } else { Iova::new_truncate(page << 12) };
            let (d, reads) = if self.cfg.iommu.kind == IommuKind::AmdVi {
                let mut check = RmpDmaCheck { rmp: &self.rmp, reads: 0 };
                let d = self.iommu.translate(&self.tables, device, iova, write, &mut check);
                (d, check.reads)
            } else {
                (self.iommu.translate(&self.tables, device, iova, write, &mut NoDmaCheck), 0)
            };
            cost += d.cost + mem.times(reads);
            if let Some(ev) = d.event {
                self.cycles.iommu += cost;
                let (kind, code) = match ev {
                    IommuEvent::Amd(e) => (FaultKind::IommuEvent, e.code_and_flags()),
                    IommuEvent::Vtd(f) => (FaultKind::DmarFault, f.record_dword3()),
                };
                // Counted with the CPUs' raised faults (by kind and code) but costing no CPU
                // fault handling: the IOMMU logs the event and the device's request fails.
                return self.fault_uncharged(kind, code, Disposition::Raised, cost);
            }
            // The data access itself; on a TDX host, what it does to TD-private memory.
            cost += mem;
            if self.tdx.active
                && let Some(spa) = d.spa
            {
                let page_end = (spa.raw() | 0xfff) + 1;
                let end = start.raw().saturating_add(u64::from(size.max(1)));
                let here = (end.min((page << 12) + 4096) - iova.raw()).min(page_end - spa.raw());
                if write {
                    self.tdx_outside_write(spa.raw(), here, super::tdx::OutsideWrite::Dma);
                } else {
                    let _ = self.tdx_outside_read(spa.raw(), here, true);
                }
            }
        }
        self.cycles.iommu += cost;
        Outcome { cost, timing: Timing::Serial, ..Outcome::default() }
    }

    /// An `iommu` event by the host kernel: attach/detach a device (the entry written in
    /// memory), or an invalidation command.
    pub(super) fn iommu_cmd(
        &mut self,
        cmd: IommuCmd,
        device: u32,
        domain: u32,
        addr: Option<Iova>,
        pages: u64,
    ) -> Outcome {
        let cost = match cmd {
            IommuCmd::Attach => {
                let mut frames =
                    TableFrames { buddy: &mut self.alloc, boot: &mut self.boot, in_boot: false };
                if let Err(e) = self.iommu.attach(&mut self.tables, &mut frames, device, domain) {
                    self.not_modelled(&format!("iommu attach: {e}"));
                }
                Cycles::ZERO
            }
            IommuCmd::Detach => {
                self.iommu.detach(device);
                Cycles::ZERO
            }
            _ => self.iommu.command(cmd, device, domain, addr, pages),
        };
        self.cycles.invalidation += cost;
        Outcome { cost, timing: Timing::Serial, ..Outcome::default() }
    }

    /// `map` in `space=iodom:N`: an `iova:` page to a `phys:` one; writable if `w`.
    pub(super) fn iommu_map(
        &mut self,
        domain: u32,
        va: Address,
        pa: Address,
        size: PageSize,
        write: bool,
    ) -> Result<(), Refusal> {
        let (Address::Iova(v), Address::Spa(p)) = (va, pa) else {
            return Err(Refusal::fixed("map (space=iodom:N maps an iova: address to a phys: one)"));
        };
        let mut frames =
            TableFrames { buddy: &mut self.alloc, boot: &mut self.boot, in_boot: false };
        self.iommu
            .map(&mut self.tables, &mut frames, domain, v, p, size, write)
            .map_err(|e| Refusal { key: "map (IOMMU)".into(), detail: e.to_string() })
    }

    /// `unmap` in `space=iodom:N` (the IOTLB keeps its copy until the host invalidates it).
    pub(super) fn iommu_unmap(&mut self, domain: u32, va: Address, size: PageSize) {
        let Address::Iova(v) = va else {
            self.not_modelled("unmap (space=iodom:N unmaps an iova: address)");
            return;
        };
        if let Err(e) = self.iommu.unmap(&mut self.tables, domain, v, size) {
            self.not_modelled(&format!("unmap (IOMMU): {e}"));
        }
    }
}
