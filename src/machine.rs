//! The machine: the hardware blocks composed with the host software model, executing one
//! event at a time (DESIGN "Layers": the root crate implements mmu-model's check and
//! frame-source traits with rmp-model and the host allocator).
//!
//! What the foundation gives semantics to: host-kernel and host-process accesses (direct map
//! through `phys:` addresses, demand paging for processes), `work`, RMPUPDATE and PSMASH with
//! the physmap policy and the `rmp.tlb_on_update` knob, SNP_LAUNCH_UPDATE validation, CPA
//! `set_memory_4k`, kernel/process map and unmap, INVLPG, full flushes and shootdowns, VM
//! creation, and recorded allocations. Every other event is executed as a no-op and listed in
//! the report's `not_modelled` table, never dropped silently.

use crate::config::MachineConfig;
use crate::host::alloc::BuddyAllocator;
use crate::host::config::PhysmapPolicy;
use crate::host::directmap::{DirectMap, dm_va};
use crate::report::{self, InputInfo, Report};
use mmu_model::{
    AccessKind, AccessRequest, AccessResult, CheckAllow, CheckCache, CheckRequest, CheckTarget,
    CheckVerdict, CheckWork, Cr3, FlatLatency, FlushScope, FrameSource, LeafAttrs, Mmu, PageTable,
    Paging, PendingInvalidation, PfErrorCode, PhysMemTables, Privilege, PteFlags, TlbTag,
    TranslationCheck, WriteCheck,
};
use rmp_model::{
    Executor, HostAccess, Rmp, RmpCheck, RmpEntry, RmpLayout, RmpPageSize, RmpReturn,
    RmpUpdateInput, TlbOnRmpUpdate,
};
use sim_core::event::{AllocKind, CpaOp, Disposition, FaultKind, SnpFwCmd, Space, VmKind};
use sim_core::{
    Address, Agent, Check, Context, Cycles, Event, Gpa, Hva, MemoryServices, PageSize, Setting,
    Spa, StateItem, TimedEvent, VmId,
};
use std::collections::BTreeMap;

/// What an event did, for `expect` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The fault it raised, if any.
    pub fault: Option<FaultInfo>,
    /// An instruction's return code and carry flag.
    pub rc: Option<(u64, Option<bool>)>,
    /// Cycles charged.
    pub cost: Cycles,
}

/// A fault as scenarios check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultInfo {
    /// Kind.
    pub kind: FaultKind,
    /// Architectural error code.
    pub code: u64,
    /// What became of it.
    pub disposition: Disposition,
}

/// A machine-construction or state error (bad scenario input, not an architectural outcome).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MachineError {
    /// Memory too small for the kernel's structures.
    #[error("machine setup: {0}")]
    Setup(String),
    /// A `state` line that cannot be applied.
    #[error("state: {0}")]
    State(String),
    /// A `vm` setting that is malformed.
    #[error("vm setting: {0}")]
    Vm(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VmInfo {
    kind: VmKind,
    asid: u32,
}

/// Page-table pages come from the buddy allocator, like every other host page.
struct TableFrames<'a>(&'a mut BuddyAllocator);

impl FrameSource for TableFrames<'_> {
    fn alloc_table(&mut self) -> Option<Spa> {
        self.0.alloc(0)
    }
    fn free_table(&mut self, page: Spa) {
        // A table page we handed out always frees cleanly; a failure would be a model bug.
        let r = self.0.free(page, 0);
        debug_assert!(r.is_ok(), "table page {page:?} freed twice");
    }
}

/// The RMP check stage behind mmu-model's hook (spec/snp.md §2.1–2.4): host data writes and
/// page-table accesses get the Hypervisor-Owned check at the mapping's size; reads are not
/// checked; a 1G mapping is checked and cached as 2M (APM §15.36.10). The RMP entries it reads
/// are reported in the check work, so the MMU prices them through its latency model.
#[derive(Debug)]
pub struct RmpCheckStage<'a> {
    rmp: &'a mut Rmp,
    lookup: Cycles,
}

impl<'a> RmpCheckStage<'a> {
    /// The stage for an SNP-enabled host; `lookup` is the fixed cost per check on top of the
    /// entry read (`rmp.rmp_lookup_latency`).
    pub fn new(rmp: &'a mut Rmp, lookup: Cycles) -> RmpCheckStage<'a> {
        RmpCheckStage { rmp, lookup }
    }
}

impl TranslationCheck for RmpCheckStage<'_> {
    fn check(&mut self, req: &CheckRequest, work: &mut CheckWork) -> CheckVerdict {
        let (access, mapping) = match req.target {
            CheckTarget::Data { access: AccessKind::Write, mapping } => {
                (HostAccess::DataWrite, mapping)
            }
            CheckTarget::Data { access: AccessKind::Read | AccessKind::Fetch, mapping } => {
                (HostAccess::DataRead, mapping)
            }
            CheckTarget::TableRead { .. } | CheckTarget::TableWrite { .. } => {
                (HostAccess::PageTable, PageSize::K4)
            }
        };
        let out = self.rmp.check_host_access(req.spa, mapping, access);
        if let Some(a) = out.entry_read {
            work.reads.push(a);
            work.fixed += self.lookup;
        }
        match out.check {
            RmpCheck::Ok => CheckVerdict::Allow(CheckAllow {
                cache: CheckCache {
                    write: if access == HostAccess::DataWrite {
                        WriteCheck::Allowed
                    } else {
                        WriteCheck::Unchecked
                    },
                },
                fill_size: (mapping == PageSize::G1).then_some(PageSize::M2),
            }),
            // Violations are counted by rmp-model's own statistics (RmpStats::violations).
            RmpCheck::Violation(_) => CheckVerdict::Fault { error_bits: PfErrorCode::RMP },
        }
    }
}

#[derive(Debug)]
struct Cpu {
    mmu: Mmu,
    clock: Cycles,
    /// PID whose page table is loaded, or `None` for the kernel's.
    loaded: Option<u32>,
}

/// Cycle totals by component.
#[derive(Debug, Default, Clone, Copy)]
struct CycleSums {
    base: Cycles,
    tlb: Cycles,
    walk: Cycles,
    rmp_check: Cycles,
    rmp_instr: Cycles,
    fault: Cycles,
    invalidation: Cycles,
    policy: Cycles,
}

/// The simulated host.
#[derive(Debug)]
pub struct Machine {
    cfg: MachineConfig,
    tables: PhysMemTables,
    alloc: BuddyAllocator,
    dm: DirectMap,
    procs: BTreeMap<u32, PageTable>,
    cpus: Vec<Cpu>,
    rmp: Rmp,
    lat: FlatLatency,
    vms: BTreeMap<VmId, VmInfo>,
    /// Allocation events come from a live generator (already applied through
    /// [`MemoryServices`]) rather than from a recorded trace (to be replayed).
    live: bool,
    events: u64,
    accesses: report::AccessCounts,
    faults: report::FaultCounts,
    cycles: CycleSums,
    update_flushes: u64,
    tlb_flushes: u64,
    tlb_invalidated: u64,
    dm_series: sim_core::stats::Series,
    not_modelled: BTreeMap<String, u64>,
    program_steps: u64,
}

impl Machine {
    /// Build the machine: allocator, direct map, RMP (placed at the top of memory, where
    /// firmware reserves it), CPUs, and the VMs declared by `vm` settings.
    ///
    /// # Errors
    /// [`MachineError`] if memory is too small or a `vm` line is malformed.
    pub fn new(
        cfg: MachineConfig,
        settings: &[(String, Setting)],
        live: bool,
    ) -> Result<Machine, MachineError> {
        let mem = cfg.machine.memory.0;
        // RMP: 16 KiB bookkeeping + 16 B per 4 KiB page (spec/snp.md §1.3), 1 MiB-aligned as
        // SEV firmware requires, at the top of memory.
        let rmp_bytes = (0x4000 + (mem >> 12) * 16).next_multiple_of(1 << 20);
        let rmp_base = (mem - rmp_bytes) & !((1 << 20) - 1);
        let layout = RmpLayout::covering(Spa::new(rmp_base), mem)
            .map_err(|e| MachineError::Setup(e.to_string()))?;
        let mut alloc = BuddyAllocator::new(cfg.host.reserved_low.0, rmp_base);
        let mut tables = PhysMemTables::new();
        let fmt = cfg.mmu.pte_format();
        let dm =
            DirectMap::build(&mut tables, &mut TableFrames(&mut alloc), fmt, mem, cfg.host.physmap)
                .map_err(|e| MachineError::Setup(e.to_string()))?;
        let cr3 = Cr3 { root: dm.table().root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
        let mut cpus = Vec::new();
        for c in 0..cfg.machine.cpus {
            let mmu = Mmu::new(c, &cfg.mmu, cr3).map_err(|e| MachineError::Setup(e.to_string()))?;
            cpus.push(Cpu { mmu, clock: Cycles::ZERO, loaded: None });
        }
        let lat = FlatLatency { per_ref: cfg.mmu.walk_ref_latency };
        let mut m = Machine {
            tables,
            alloc,
            dm,
            procs: BTreeMap::new(),
            cpus,
            rmp: Rmp::new(layout),
            lat,
            vms: BTreeMap::new(),
            live,
            events: 0,
            accesses: report::AccessCounts::default(),
            faults: report::FaultCounts::default(),
            cycles: CycleSums::default(),
            update_flushes: 0,
            tlb_flushes: 0,
            tlb_invalidated: 0,
            dm_series: sim_core::stats::Series::default(),
            not_modelled: BTreeMap::new(),
            program_steps: 0,
            cfg,
        };
        for (origin, s) in settings.iter().filter(|(_, s)| s.section == "vm") {
            m.declare_vm(s).map_err(|e| MachineError::Vm(format!("{origin}: {e}")))?;
        }
        m.sample_dm();
        Ok(m)
    }

    fn declare_vm(&mut self, s: &Setting) -> Result<(), String> {
        let [id, kind] = s.args.as_slice() else {
            return Err("expected `vm N KIND [asid=N] [memory=SIZE]`".into());
        };
        let vm: u32 = id.parse().map_err(|_| format!("bad VM number {id:?}"))?;
        let kind: VmKind = kind.parse().map_err(|e| format!("{e}"))?;
        let mut asid = 0u32;
        for (k, v) in &s.pairs {
            match k.as_str() {
                "asid" => {
                    asid = sim_core::codec::parse_u64(v)
                        .ok()
                        .and_then(|a| u32::try_from(a).ok())
                        .ok_or(format!("bad asid {v:?}"))?
                }
                "memory" => {
                    sim_core::config::ByteSize::parse(v)?;
                }
                other => return Err(format!("unknown vm key `{other}` (known: asid, memory)")),
            }
        }
        self.vms.insert(vm, VmInfo { kind, asid });
        Ok(())
    }

    /// Logical CPUs.
    pub fn cpus(&self) -> u32 {
        self.cfg.machine.cpus
    }

    /// The clock of an agent (its CPU's clock; devices and firmware share CPU 0's).
    pub fn clock(&self, a: Agent) -> Cycles {
        let c = a.cpu().unwrap_or(0);
        self.cpus.get(c as usize).map_or(Cycles::ZERO, |c| c.clock)
    }

    /// A record inside a `program` block (run by `ccsim explore`, not here).
    pub fn count_program_step(&mut self) {
        self.program_steps += 1;
    }

    fn not_modelled(&mut self, what: &str) {
        *self.not_modelled.entry(what.to_owned()).or_insert(0) += 1;
    }

    fn sample_dm(&mut self) {
        self.dm_series.sample(self.events, self.dm.meminfo_kb());
    }

    /// Apply a `state` line.
    ///
    /// # Errors
    /// [`MachineError::State`] naming what is wrong.
    pub fn apply_state(&mut self, s: &StateItem) -> Result<(), MachineError> {
        match s {
            StateItem::Rmp { spa, size, assigned, asid, gpa, validated, immutable, vmsa } => {
                let page_size = match size {
                    PageSize::K4 => RmpPageSize::K4,
                    PageSize::M2 => RmpPageSize::M2,
                    PageSize::G1 => {
                        return Err(MachineError::State("RMP entries are 4K or 2M".into()));
                    }
                };
                let asid = u16::try_from(*asid)
                    .map_err(|_| MachineError::State(format!("asid {asid} too large")))?;
                let mut e = RmpEntry {
                    assigned: *assigned,
                    page_size,
                    immutable: *immutable,
                    gpa: *gpa,
                    asid,
                    vmsa: *vmsa,
                    validated: *validated,
                    ..RmpEntry::default()
                };
                if *assigned {
                    e.vmpl = rmp_model::VMPL_ON_UPDATE;
                }
                self.rmp.set_entry(*spa, &e).map_err(|e| MachineError::State(e.to_string()))?;
            }
            StateItem::DirectMap { spa, size, len } => {
                let len = len.unwrap_or(size.bytes());
                self.dm
                    .set_leaves(
                        &mut self.tables,
                        &mut TableFrames(&mut self.alloc),
                        *spa,
                        *size,
                        len,
                    )
                    .map_err(|e| MachineError::State(e.to_string()))?;
                self.sample_dm();
            }
            StateItem::Map { .. } => {
                return Err(MachineError::State(
                    "`state map` is not modelled yet (direct map only: use `state directmap`)"
                        .into(),
                ));
            }
            _ => {
                return Err(MachineError::State(format!(
                    "`state {}` is not modelled yet",
                    s.keyword()
                )));
            }
        }
        Ok(())
    }

    /// Execute one event; the agent's clock advances by its cost.
    pub fn exec(&mut self, te: &TimedEvent) -> Outcome {
        self.events += 1;
        let cpu = te.agent.cpu().unwrap_or(0) as usize;
        if cpu >= self.cpus.len() {
            self.not_modelled("event on a CPU beyond machine.cpus");
            return Outcome::default();
        }
        if let Some(t) = te.time
            && t > self.cpus[cpu].clock
        {
            self.cpus[cpu].clock = t;
        }
        let out = self.dispatch(cpu, te.agent, &te.event);
        self.cpus[cpu].clock += out.cost;
        out
    }

    fn dispatch(&mut self, cpu: usize, agent: Agent, ev: &Event) -> Outcome {
        let ctx = match agent {
            Agent::Cpu { ctx, .. } => Some(ctx),
            Agent::Device(_) | Agent::Firmware(_) => None,
        };
        match (ev, ctx) {
            (Event::Load { addr, size }, Some(c)) => {
                self.access(cpu, c, *addr, *size, AccessKind::Read)
            }
            (Event::Store { addr, size, .. }, Some(c)) => {
                self.access(cpu, c, *addr, *size, AccessKind::Write)
            }
            (Event::Fetch { addr, size }, Some(c)) => {
                // An instruction fetch stands for one instruction: it also pays the base CPI.
                let base = self.cfg.machine.base_cpi;
                self.cycles.base += base;
                self.access(cpu, c, *addr, *size, AccessKind::Fetch).with_cost(base)
            }
            (Event::Work { count }, _) => {
                let cost = self.cfg.machine.base_cpi.times(*count);
                self.cycles.base += cost;
                Outcome { cost, ..Outcome::default() }
            }
            (
                Event::RmpUpdate { spa, size, assigned, asid, gpa, immutable },
                Some(Context::HostKernel),
            ) => self.rmpupdate(*spa, *size, *assigned, *asid, *gpa, *immutable),
            (Event::Psmash { spa }, Some(Context::HostKernel)) => {
                let rc = self.rmp.psmash(Executor::Hypervisor, *spa);
                self.after_rmp_change(rc, self.cfg.rmp.psmash_latency, (*spa, PageSize::M2.bytes()))
            }
            (Event::SnpFw { cmd: SnpFwCmd::LaunchUpdate, vm, spa: Some(spa), pages, .. }, _) => {
                self.launch_update(*vm, *spa, *pages)
            }
            (
                Event::Cpa { op: CpaOp::Set4k, addr: Address::Spa(spa), pages },
                Some(Context::HostKernel),
            ) => Outcome { cost: self.set_memory_4k(*spa, *pages), ..Outcome::default() },
            (Event::Invlpg { addr }, Some(_)) => match self.host_va(*addr) {
                Some(va) => {
                    let tag = self.tag_of(cpu);
                    self.tlb_invalidated += self.cpus[cpu].mmu.tlb_mut().invalidate_page(va, tag);
                    Outcome::default()
                }
                None => {
                    self.not_modelled("invlpg (non-host address)");
                    Outcome::default()
                }
            },
            (Event::FlushAll {}, Some(_)) => {
                self.tlb_flushes += 1;
                self.tlb_invalidated += self.cpus[cpu].mmu.tlb_mut().flush(FlushScope::All);
                Outcome::default()
            }
            (Event::Shootdown { targets, addr, pages }, Some(_)) => {
                let range =
                    addr.and_then(|a| self.host_va(a)).map(|va| (va, pages.saturating_mul(4096)));
                let mut remote = 0u64;
                for &t in targets {
                    let Some(c) = self.cpus.get_mut(t as usize) else { continue };
                    if t as usize != cpu {
                        remote += 1;
                    }
                    self.tlb_invalidated += match range {
                        Some((va, bytes)) => {
                            c.mmu.tlb_mut().invalidate_range(va, bytes, TlbTag::HOST)
                        }
                        None => {
                            self.tlb_flushes += 1;
                            c.mmu.tlb_mut().flush(FlushScope::All)
                        }
                    };
                }
                let cost = self.cfg.host.shootdown_ipi_cost.times(remote);
                self.cycles.invalidation += cost;
                Outcome { cost, ..Outcome::default() }
            }
            (Event::Map { va, pa, size, space, w, x, user, enc }, Some(_)) => {
                self.map_event(*space, *va, *pa, *size, *w, *x, *user, *enc)
            }
            (Event::Unmap { va, size, space }, Some(_)) => self.unmap_event(*space, *va, *size),
            (Event::PageAlloc { spa, order, .. }, _) => {
                if !self.live && self.alloc.reserve(*spa, *order).is_err() {
                    self.not_modelled("page-alloc of pages not free");
                }
                Outcome::default()
            }
            (Event::PageFree { spa, order }, _) => {
                if !self.live && self.alloc.free(*spa, *order).is_err() {
                    self.not_modelled("page-free of pages not allocated");
                }
                Outcome::default()
            }
            (Event::GmemAlloc { spa, order, .. }, _) => {
                if !self.live && self.alloc.reserve(*spa, *order).is_err() {
                    self.not_modelled("gmem-alloc of pages not free");
                }
                Outcome::default()
            }
            (Event::VmCreate { kind, vm, asid, .. }, _) => {
                self.vms.insert(*vm, VmInfo { kind: *kind, asid: *asid });
                Outcome::default()
            }
            (Event::VmDestroy { vm }, _) => {
                self.vms.remove(vm);
                Outcome::default()
            }
            (e, _) => {
                let what = match ctx {
                    Some(Context::Guest { .. }) => format!("{} (guest)", e.keyword()),
                    _ => e.keyword().to_owned(),
                };
                self.not_modelled(&what);
                Outcome::default()
            }
        }
    }

    fn tag_of(&self, cpu: usize) -> TlbTag {
        match self.cpus[cpu].loaded {
            None => TlbTag::HOST,
            Some(pid) => proc_tag(pid),
        }
    }

    fn host_va(&self, a: Address) -> Option<Hva> {
        match a {
            Address::Hva(v) => Some(v),
            Address::Spa(s) if s.raw() < self.dm.end() => Some(dm_va(s)),
            Address::Spa(_) | Address::Gva(_) | Address::Gpa(_) | Address::Iova(_) => None,
        }
    }

    /// Switch CPU `cpu` to the page table of `pid` (or the kernel's). PCIDs keep entries.
    fn load_context(&mut self, cpu: usize, pid: Option<u32>) {
        if self.cpus[cpu].loaded == pid {
            return;
        }
        let root = match pid {
            None => self.dm.table().root(),
            Some(p) => match self.procs.get(&p) {
                Some(pt) => pt.root(),
                None => return,
            },
        };
        let tag = pid.map_or(TlbTag::HOST, proc_tag);
        self.cpus[cpu].mmu.load_cr3(Cr3 { root, paging: Paging::FourLevel, tag }, true);
        self.cpus[cpu].loaded = pid;
    }

    fn ensure_proc(&mut self, pid: u32) -> bool {
        if self.procs.contains_key(&pid) {
            return true;
        }
        let fmt = self.cfg.mmu.pte_format();
        match PageTable::new(
            &mut self.tables,
            &mut TableFrames(&mut self.alloc),
            Paging::FourLevel,
            fmt,
            PteFlags::USER_TABLE,
        ) {
            Ok(pt) => {
                self.procs.insert(pid, pt);
                true
            }
            Err(_) => false,
        }
    }

    /// A CPU access of `size` bytes, split at 4 KiB boundaries.
    fn access(
        &mut self,
        cpu: usize,
        ctx: Context,
        addr: Address,
        size: u32,
        kind: AccessKind,
    ) -> Outcome {
        match kind {
            AccessKind::Read => self.accesses.loads += 1,
            AccessKind::Write => self.accesses.stores += 1,
            AccessKind::Fetch => self.accesses.fetches += 1,
        }
        let (va, pid, privilege) = match (ctx, addr) {
            (Context::HostKernel, Address::Spa(s)) if s.raw() < self.dm.end() => {
                (dm_va(s), None, Privilege::Supervisor)
            }
            (Context::HostKernel, Address::Hva(v)) => (v, None, Privilege::Supervisor),
            (Context::HostProcess(p), Address::Hva(v)) => (v, Some(p), Privilege::User),
            (Context::HostProcess(_), Address::Spa(s)) if s.raw() < self.dm.end() => {
                (dm_va(s), None, Privilege::Supervisor)
            }
            (Context::Guest { .. }, _) => {
                self.not_modelled("guest access");
                return Outcome::default();
            }
            _ => {
                self.not_modelled("access to an address outside the host's memory or kind");
                return Outcome::default();
            }
        };
        if let Some(p) = pid
            && !self.ensure_proc(p)
        {
            self.not_modelled("process page table (out of memory)");
            return Outcome::default();
        }
        self.load_context(cpu, pid);
        let first = va.raw();
        let last = first.saturating_add(u64::from(size.max(1)) - 1);
        let mut total = Outcome::default();
        let mut page = first & !0xfff;
        loop {
            let at = Hva::new_truncate(page.max(first));
            let o = self.access_page(cpu, pid, at, kind, privilege, ctx);
            total.cost += o.cost;
            if o.fault.is_some() {
                total.fault = o.fault;
                break;
            }
            if last >> 12 == page >> 12 {
                break;
            }
            page += 4096;
        }
        total
    }

    fn access_page(
        &mut self,
        cpu: usize,
        pid: Option<u32>,
        va: Hva,
        kind: AccessKind,
        privilege: Privilege,
        ctx: Context,
    ) -> Outcome {
        let req = AccessRequest { va, kind, privilege, ctx };
        let mut demand_paged = false;
        let mut cost = Cycles::ZERO;
        loop {
            let lookup = self.cfg.rmp.rmp_lookup_latency;
            let o = {
                let mut chk = RmpCheckStage::new(&mut self.rmp, lookup);
                self.cpus[cpu].mmu.access(&mut self.tables, &mut chk, &mut self.lat, &req)
            };
            cost += o.cost;
            let per = self.cfg.mmu.walk_ref_latency;
            let walk = per.times(o.refs.len() as u64);
            let rmp = (per + lookup).times(o.check_reads.len() as u64);
            self.cycles.walk += walk;
            self.cycles.rmp_check += rmp;
            self.cycles.tlb += o.cost - walk - rmp;
            match o.result {
                AccessResult::Translated { .. } => return Outcome { cost, ..Outcome::default() },
                AccessResult::NonCanonical { addr } => {
                    return self.fault(FaultKind::Gp, 0, Disposition::Fatal, cost, addr);
                }
                AccessResult::Fault(f) => {
                    let code = u64::from(f.code.bits());
                    // A user access to an unmapped page: Linux's anonymous fault handler maps a
                    // fresh 4K page and the access retries (mm/memory.c do_anonymous_page).
                    if let Some(p) = pid
                        && !f.code.contains(PfErrorCode::PRESENT)
                        && !demand_paged
                    {
                        demand_paged = true;
                        let handled =
                            self.fault(FaultKind::Pf, code, Disposition::Handled, Cycles::ZERO, va);
                        cost += handled.cost;
                        if self.demand_map(p, va) {
                            continue;
                        }
                    }
                    let disp = if matches!(ctx, Context::HostKernel) || pid.is_none() {
                        Disposition::Fatal
                    } else {
                        Disposition::Raised
                    };
                    return self.fault(FaultKind::Pf, code, disp, cost, va);
                }
            }
        }
    }

    fn demand_map(&mut self, pid: u32, va: Hva) -> bool {
        let Some(page) = self.alloc.alloc(0) else { return false };
        let Some(pt) = self.procs.get_mut(&pid) else { return false };
        // The capture carries no VMA permissions (the pagemap importer adds them later), so a
        // demand-paged page is user, writable and executable: no access of the trace fails on
        // a permission the real process had. A and D are left for the walker to set, as on x86
        // (pte_sw_mkyoung() is a no-op there).
        let attrs = LeafAttrs {
            flags: (LeafAttrs::KERNEL_RW.flags | PteFlags::USER)
                - PteFlags::NO_EXECUTE
                - PteFlags::ACCESSED
                - PteFlags::DIRTY,
            ..LeafAttrs::KERNEL_RW
        };
        match pt.map(
            &mut self.tables,
            &mut TableFrames(&mut self.alloc),
            va.align_down(PageSize::K4),
            page,
            PageSize::K4,
            attrs,
        ) {
            // A not-present entry is never cached by the TLB: nothing to flush.
            Ok(t) => {
                t.ignore();
                true
            }
            Err(_) => false,
        }
    }

    fn fault(
        &mut self,
        kind: FaultKind,
        code: u64,
        disposition: Disposition,
        cost: Cycles,
        _addr: Hva,
    ) -> Outcome {
        match disposition {
            Disposition::Raised => self.faults.raised += 1,
            Disposition::Handled => self.faults.handled += 1,
            Disposition::Fatal => self.faults.fatal += 1,
        }
        *self.faults.by_code.entry(format!("{} {code:#x}", kind.name())).or_insert(0) += 1;
        let extra = match disposition {
            Disposition::Fatal => self.cfg.host.fatal_fault_cost,
            Disposition::Raised | Disposition::Handled => self.cfg.host.fatal_fault_cost,
        };
        self.cycles.fault += extra;
        Outcome { fault: Some(FaultInfo { kind, code, disposition }), rc: None, cost: cost + extra }
    }

    #[allow(clippy::too_many_arguments)]
    fn rmpupdate(
        &mut self,
        spa: Spa,
        size: PageSize,
        assigned: bool,
        asid: u32,
        gpa: Gpa,
        immutable: bool,
    ) -> Outcome {
        let mut cost = Cycles::ZERO;
        // Host policy runs before the instruction, as in the kernel's rmpupdate() wrapper.
        if assigned
            && self.cfg.host.policy == PhysmapPolicy::SplitOnAssign
            && spa.raw() < self.dm.end()
        {
            // The RFC splits the page's direct-map mapping whatever the RMP level.
            cost += self.set_memory_4k(spa, size.pages_4k().min(512));
        }
        // No 1G RMP entries (spec/snp.md §1.1) and a 10-bit ASID field: FAIL_INPUT.
        let page_size = match size {
            PageSize::K4 => Some(RmpPageSize::K4),
            PageSize::M2 => Some(RmpPageSize::M2),
            PageSize::G1 => None,
        };
        let input = match (page_size, assigned, u16::try_from(asid)) {
            (Some(ps), true, Ok(a)) => Some(RmpUpdateInput::private(gpa, ps, a, immutable)),
            (Some(ps), false, _) => Some(RmpUpdateInput::shared(ps)),
            (None, _, _) | (Some(_), true, Err(_)) => None,
        };
        let Some(input) = input else {
            let lat = self.cfg.rmp.rmpupdate_latency;
            return self.after_rmp_change(RmpReturn::FailInput, lat, (spa, 0)).with_cost(cost);
        };
        let rc = self.rmp.rmpupdate(Executor::Hypervisor, spa, &input);
        self.after_rmp_change(rc, self.cfg.rmp.rmpupdate_latency, (spa, size.bytes()))
            .with_cost(cost)
    }

    /// `set_memory_4k()` on `pages` pages from `spa`: split each page's direct-map leaf to 4K
    /// (CPA splits one level at a time), flush the result on every CPU, and return the cost
    /// (split work plus the shootdown).
    fn set_memory_4k(&mut self, spa: Spa, pages: u64) -> Cycles {
        let mut inv = PendingInvalidation::none();
        let mut cost = Cycles::ZERO;
        for i in 0..pages {
            let Some(a) = spa.checked_add(i * 4096) else { break };
            match self.dm.split_to_4k(&mut self.tables, &mut TableFrames(&mut self.alloc), a) {
                Ok((t, n)) => {
                    inv.merge(t);
                    cost += self.cfg.host.split_cost.times(u64::from(n));
                }
                Err(_) => self.not_modelled("set_memory_4k outside memory"),
            }
        }
        self.cycles.policy += cost;
        cost += self.shootdown_inv(&inv);
        self.sample_dm();
        cost
    }

    /// Price an RMP instruction and apply what the hardware does to TLBs (`rmp.tlb_on_update`).
    fn after_rmp_change(&mut self, rc: RmpReturn, latency: Cycles, pages: (Spa, u64)) -> Outcome {
        let mut cost = latency;
        if rc == RmpReturn::Success {
            match self.cfg.rmp.tlb_on_update {
                TlbOnRmpUpdate::GlobalFlush => {
                    self.update_flushes += 1;
                    for c in &mut self.cpus {
                        self.tlb_flushes += 1;
                        self.tlb_invalidated += c.mmu.tlb_mut().flush(FlushScope::All);
                    }
                    cost += self.cfg.rmp.global_flush_latency;
                    self.cycles.invalidation += self.cfg.rmp.global_flush_latency;
                }
                // Hardware drops exactly the entries that translate to the updated pages (a
                // 2M entry whose region holds one of them included), at no charged cost.
                TlbOnRmpUpdate::Coherent => {
                    for c in &mut self.cpus {
                        self.tlb_invalidated += c.mmu.tlb_mut().invalidate_phys(pages.0, pages.1);
                    }
                }
            }
        }
        self.cycles.rmp_instr += latency;
        Outcome { fault: None, rc: Some((u64::from(rc.code()), None)), cost }
    }

    fn launch_update(&mut self, vm: u32, spa: Spa, pages: u64) -> Outcome {
        let Some(info) = self.vms.get(&vm).copied() else {
            self.not_modelled("snp-fw launch-update for an unknown VM");
            return Outcome::default();
        };
        for i in 0..pages {
            let Some(p) = spa.checked_add(i * 4096) else { break };
            let mut e = self.rmp.entry(p);
            // The firmware validates guest-owned pages it measures (SNP ABI SNP_LAUNCH_UPDATE).
            if e.assigned && u32::from(e.asid) == info.asid && e.page_size == RmpPageSize::K4 {
                e.validated = true;
                let _ = self.rmp.set_entry(p, &e);
            }
        }
        Outcome::default()
    }

    /// Flush `inv` on every CPU (Linux CPA flushes on all CPUs: cpa_flush → on_each_cpu);
    /// the issuing CPU pays one IPI per remote CPU.
    fn shootdown_inv(&mut self, inv: &PendingInvalidation<Hva>) -> Cycles {
        if inv.is_empty() {
            return Cycles::ZERO;
        }
        for c in &mut self.cpus {
            self.tlb_invalidated += c.mmu.tlb_mut().invalidate(inv, TlbTag::HOST);
        }
        let cost = self.cfg.host.shootdown_ipi_cost.times(self.cpus.len() as u64 - 1);
        self.cycles.invalidation += cost;
        cost
    }

    #[allow(clippy::too_many_arguments)]
    fn map_event(
        &mut self,
        space: Space,
        va: Address,
        pa: Address,
        size: PageSize,
        w: bool,
        x: bool,
        user: bool,
        enc: bool,
    ) -> Outcome {
        let (Address::Hva(v), Address::Spa(p)) = (va, pa) else {
            self.not_modelled("map (non-host addresses)");
            return Outcome::default();
        };
        let mut flags = PteFlags::PRESENT;
        if w {
            flags |= PteFlags::WRITABLE;
        }
        if user {
            flags |= PteFlags::USER;
        }
        if !x {
            flags |= PteFlags::NO_EXECUTE;
        }
        let attrs = LeafAttrs { flags, encrypted: enc, ..LeafAttrs::KERNEL_RW };
        let pt = match space {
            Space::Kernel => self.dm.table_mut(),
            Space::Process(pid) => {
                if !self.ensure_proc(pid) {
                    return Outcome::default();
                }
                match self.procs.get_mut(&pid) {
                    Some(pt) => pt,
                    None => return Outcome::default(),
                }
            }
            Space::Guest(_) | Space::Stage2(_) | Space::IoDomain(_) => {
                self.not_modelled("map (guest/stage-2/IOMMU space)");
                return Outcome::default();
            }
        };
        match pt.map(&mut self.tables, &mut TableFrames(&mut self.alloc), v, p, size, attrs) {
            Ok(t) => {
                let c = self.shootdown_inv(&t);
                Outcome { cost: c, ..Outcome::default() }
            }
            Err(_) => {
                self.not_modelled("map over an existing mapping");
                Outcome::default()
            }
        }
    }

    fn unmap_event(&mut self, space: Space, va: Address, size: PageSize) -> Outcome {
        let Address::Hva(v) = va else {
            self.not_modelled("unmap (non-host address)");
            return Outcome::default();
        };
        let pt = match space {
            Space::Kernel => self.dm.table_mut(),
            Space::Process(pid) => match self.procs.get_mut(&pid) {
                Some(pt) => pt,
                None => {
                    self.not_modelled("unmap in an unknown process");
                    return Outcome::default();
                }
            },
            Space::Guest(_) | Space::Stage2(_) | Space::IoDomain(_) => {
                self.not_modelled("unmap (guest/stage-2/IOMMU space)");
                return Outcome::default();
            }
        };
        let tag = match space {
            Space::Process(pid) => proc_tag(pid),
            _ => TlbTag::HOST,
        };
        match pt.unmap(&mut self.tables, v, size) {
            Ok((_, t)) => {
                for c in &mut self.cpus {
                    self.tlb_invalidated += c.mmu.tlb_mut().invalidate(&t, tag);
                }
                let cost = self.cfg.host.shootdown_ipi_cost.times(self.cpus.len() as u64 - 1);
                self.cycles.invalidation += cost;
                Outcome { cost, ..Outcome::default() }
            }
            Err(_) => {
                self.not_modelled("unmap of an unmapped address");
                Outcome::default()
            }
        }
    }

    /// End of input: take the last DirectMap sample.
    pub fn finish(&mut self) {
        self.sample_dm();
    }

    /// Evaluate an `expect` against the last event's outcome (`None` for `expect final`).
    pub fn check(&self, c: &Check, last: Option<&Outcome>, info: &InputInfo) -> (bool, String) {
        let mut text = String::new();
        c.write_text(&mut text);
        let (ok, found) = match c {
            Check::NoFault {} => match last.and_then(|o| o.fault) {
                None => (true, "no fault".to_owned()),
                Some(f) => (false, describe_fault(&f)),
            },
            Check::Fault { kind, code, bits, disposition } => match last.and_then(|o| o.fault) {
                None => (false, "no fault".to_owned()),
                Some(f) => {
                    let ok = f.kind == *kind
                        && code.is_none_or(|c| c.0 == f.code)
                        && bits.is_none_or(|b| f.code & b.0 == b.0)
                        && disposition.is_none_or(|d| d == f.disposition);
                    (ok, describe_fault(&f))
                }
            },
            Check::Rc { code, cf } => match last.and_then(|o| o.rc) {
                None => (false, "no return code (the event is not an instruction)".to_owned()),
                Some((rc, rcf)) => {
                    (rc == *code && (cf.is_none() || *cf == rcf), format!("rc {rc}"))
                }
            },
            Check::Rmp { spa, size, assigned, asid, gpa, validated, immutable, vmsa } => {
                let e = self.rmp.entry(*spa);
                let esize = match e.page_size {
                    RmpPageSize::K4 => PageSize::K4,
                    RmpPageSize::M2 => PageSize::M2,
                };
                let ok = size.is_none_or(|s| s == esize)
                    && assigned.is_none_or(|a| a == e.assigned)
                    && asid.is_none_or(|a| a == u32::from(e.asid))
                    && gpa.is_none_or(|g| g == e.gpa)
                    && validated.is_none_or(|v| v == e.validated)
                    && immutable.is_none_or(|v| v == e.immutable)
                    && vmsa.is_none_or(|v| v == e.vmsa);
                (
                    ok,
                    format!(
                        "rmp {spa} size={esize} assigned={} asid={} gpa={} validated={} immutable={} vmsa={}",
                        u8::from(e.assigned),
                        e.asid,
                        e.gpa,
                        u8::from(e.validated),
                        u8::from(e.immutable),
                        u8::from(e.vmsa)
                    ),
                )
            }
            Check::DirectMap { spa, size } => match self.dm.leaf_size(&self.tables, *spa) {
                Some(s) => (s == *size, format!("directmap leaf {s}")),
                None => (false, "not mapped".to_owned()),
            },
            Check::Counter { name, eq, min, max } => match self.counter(name, info) {
                Some(v) => (
                    eq.is_none_or(|e| v == e)
                        && min.is_none_or(|m| v >= m)
                        && max.is_none_or(|m| v <= m),
                    format!("{name} = {v}"),
                ),
                None => (
                    false,
                    format!("no counter named {name:?} (see docs/scenario-format.md \"Counters\")"),
                ),
            },
            _ => (false, format!("check `{}` is not supported yet", c.keyword())),
        };
        (ok, format!("expect {text}: {}", if ok { found } else { format!("found {found}") }))
    }

    /// A counter by name: any flattened report field (`faults.fatal`,
    /// `directmap.level2_splits`, `rmp.violations.not-hypervisor-owned`), plus the totals
    /// `rmp.violations` and `rmp.updates`, and the Linux names `direct_map_level2_splits`,
    /// `direct_map_level3_splits`, `DirectMap4k`, `DirectMap2M`, `DirectMap1G`.
    pub fn counter(&self, name: &str, info: &InputInfo) -> Option<u64> {
        let r = self.report(info);
        let alias = match name {
            "rmp.violations" => return Some(r.rmp.violations.values().sum()),
            "rmp.updates" => return Some(r.rmp.updates.values().sum()),
            "direct_map_level2_splits" => "directmap.level2_splits",
            "direct_map_level3_splits" => "directmap.level3_splits",
            "direct_map_level2_collapses" => "directmap.level2_collapses",
            "direct_map_level3_collapses" => "directmap.level3_collapses",
            "DirectMap4k" => "directmap.kb.4K",
            "DirectMap2M" => "directmap.kb.2M",
            "DirectMap1G" => "directmap.kb.1G",
            n => n,
        };
        let v = serde_json::to_value(&r).ok()?;
        let mut cols = Vec::new();
        report::flatten("", &v, &mut cols);
        cols.into_iter().find(|(k, _)| k == alias).and_then(|(_, v)| v.parse().ok())
    }

    /// The report of the run so far.
    pub fn report(&self, info: &InputInfo) -> Report {
        let mut dtlb = report::TlbCounts {
            flushes: self.tlb_flushes,
            invalidated: self.tlb_invalidated,
            ..Default::default()
        };
        let mut walks = report::WalkCounts::default();
        for c in &self.cpus {
            let ts = c.mmu.tlb().stats();
            for s in PageSize::ALL {
                dtlb.hits[s] += ts.by_size[s].hits;
                dtlb.evictions[s] += ts.by_size[s].evictions;
            }
            let ms = c.mmu.stats();
            dtlb.misses += ms.walks;
            walks.walks += ms.walks.total() + ms.walks_faulted;
            walks.refs += ms.walk_reads + ms.walk_ad_writes;
            walks.ad_writes += ms.walk_ad_writes;
        }
        let rs = self.rmp.stats();
        let rmp = report::RmpCounts {
            checks: rs.host_write_checks + rs.host_table_checks,
            entry_reads: rs.entry_reads,
            violations: rs
                .violations
                .iter()
                .map(|(k, v)| (cause_name(*k).to_owned(), *v))
                .collect(),
            updates: rs.rmpupdate.iter().map(|(k, v)| (rc_name(*k).to_owned(), *v)).collect(),
            psmash: rs.psmash.iter().map(|(k, v)| (rc_name(*k).to_owned(), *v)).collect(),
            update_flushes: self.update_flushes,
        };
        let c = &self.cycles;
        let total = c.base
            + c.tlb
            + c.walk
            + c.rmp_check
            + c.rmp_instr
            + c.fault
            + c.invalidation
            + c.policy;
        let cycles = report::CycleCounts {
            base: c.base.get(),
            tlb: c.tlb.get(),
            walk: c.walk.get(),
            rmp_check: c.rmp_check.get(),
            rmp_instr: c.rmp_instr.get(),
            fault: c.fault.get(),
            invalidation: c.invalidation.get(),
            policy: c.policy.get(),
            total: total.get(),
            makespan: self.cpus.iter().map(|c| c.clock).max().unwrap_or_default().get(),
        };
        let acc = self.accesses.total();
        #[allow(clippy::cast_precision_loss)]
        let derived = report::Derived {
            dtlb_mpka: if acc == 0 {
                0.0
            } else {
                dtlb.misses.total() as f64 * 1000.0 / acc as f64
            },
            cycles_per_access: if acc == 0 { 0.0 } else { total.get() as f64 / acc as f64 },
        };
        let mut machine = BTreeMap::new();
        machine.insert("preset".to_owned(), self.cfg.machine.preset.clone());
        machine.insert("cpus".to_owned(), self.cfg.machine.cpus.to_string());
        machine.insert("memory".to_owned(), self.cfg.machine.memory.to_string());
        machine.insert("physmap".to_owned(), self.cfg.host.physmap.to_string());
        machine.insert("policy".to_owned(), self.cfg.host.policy.name().to_owned());
        machine.insert(
            "rmp.tlb_on_update".to_owned(),
            crate::config::value_of(&self.cfg, "rmp", "tlb_on_update")
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned(),
        );
        let mut not_modelled = self.not_modelled.clone();
        if self.program_steps > 0 {
            not_modelled
                .insert("program steps (run by `ccsim explore`)".to_owned(), self.program_steps);
        }
        Report {
            ccsim: env!("CARGO_PKG_VERSION").to_owned(),
            input: info.clone(),
            machine,
            records: 0,
            events: self.events,
            accesses: self.accesses,
            dtlb,
            walks,
            rmp,
            faults: self.faults.clone(),
            directmap: report::DirectMapCounts {
                kb: self.dm.meminfo_kb(),
                level2_splits: self.dm.level2_splits,
                level3_splits: self.dm.level3_splits,
                level2_collapses: self.dm.level2_collapses,
                level3_collapses: self.dm.level3_collapses,
                table_pages: self.dm.table_pages(),
                series: self.dm_series.clone(),
            },
            cycles,
            derived,
            not_modelled,
        }
    }
}

fn proc_tag(pid: u32) -> TlbTag {
    // PCID 0 is the kernel's; processes get 1..4095 (CR3[11:0], Intel SDM Vol. 3A §4.10.1).
    let pcid = u16::try_from(1 + pid % 4095).unwrap_or(1);
    TlbTag { asid: 0, pcid }
}

fn describe_fault(f: &FaultInfo) -> String {
    format!("fault {} code={:#x} disposition={}", f.kind.name(), f.code, f.disposition.name())
}

fn cause_name(c: rmp_model::RmpViolationCause) -> &'static str {
    use rmp_model::RmpViolationCause as C;
    match c {
        C::NotCovered => "not-covered",
        C::NotHypervisorOwned => "not-hypervisor-owned",
        C::NotGuestOwned => "not-guest-owned",
        C::ReverseMap => "reverse-map",
        C::Immutable => "immutable",
        C::PageSizeMismatch => "page-size-mismatch",
        C::NotValidated => "not-validated",
        C::Vmpl => "vmpl",
    }
}

fn rc_name(r: RmpReturn) -> &'static str {
    match r {
        RmpReturn::Success => "success",
        RmpReturn::FailInput => "fail-input",
        RmpReturn::FailPermission => "fail-permission",
        RmpReturn::FailInuse => "fail-inuse",
        RmpReturn::FailOverlap => "fail-overlap",
        RmpReturn::FailSizeMismatch => "fail-sizemismatch",
        RmpReturn::FailBadAddr => "fail-badaddr",
    }
}

impl Outcome {
    fn with_cost(mut self, extra: Cycles) -> Outcome {
        self.cost += extra;
        self
    }
}

/// The machine hands host memory to generators.
impl MemoryServices for Machine {
    fn alloc_pages(&mut self, order: u8, _kind: AllocKind) -> Option<Spa> {
        self.alloc.alloc(order)
    }
    fn free_pages(&mut self, spa: Spa, order: u8) {
        if self.alloc.free(spa, order).is_err() {
            self.not_modelled("generator freed pages it did not allocate");
        }
    }
    fn gmem_alloc(&mut self, _vm: VmId, _gpa: Gpa, order: u8) -> Option<Spa> {
        self.alloc.alloc(order)
    }
    fn memory_bytes(&self) -> u64 {
        self.cfg.machine.memory.0
    }
    fn free_bytes(&self) -> u64 {
        self.alloc.free_pages() * 4096
    }
}
