//! KVM's TDX MMU (spec/tdx.md §3): the mirror root for private GPAs with its external (S-EPT)
//! pages, the frozen-SPTE protocol, OPERAND_BUSY handling, the private zap path, and the
//! conversions MapGPA asks for in 2 MiB chunks.
//!
//! Each KVM operation is a resumable [`Op`] of atomic steps, so that `ccsim explore` can run
//! the operations of several vCPUs in any interleaving; an ordinary run drives an operation
//! to its end at once ([`Machine::run_op`]), so both run the same code.
//!
//! * **Mirror.** One SPTE per (level, GPA) of the private (mirror) root, never loaded into
//!   hardware; a present non-leaf owns a mirror page and the `external_spt` page that SEPT.ADD
//!   gave the module (spec/tdx.md §3.1). Non-present SPTEs are `SHADOW_NONPRESENT_VALUE`
//!   (bit 63); the frozen value is `SHADOW_NONPRESENT_VALUE | 0x5a0` (§3.2, the value Linux
//!   uses; the 2024 proposal `| 0x498` is UNCONFIRMED as merged).
//! * **Fault path** (§3.5) under `mmu_lock` held for read: walk the mirror; for each missing
//!   level allocate a child, `try_cmpxchg` the parent (to `FROZEN_SPTE` under the frozen
//!   protocol, to the final value under the naive one, `host.tdx_spte_protocol`), SEPT.ADD,
//!   then write the final value; at the goal level the same with PAGE.AUG of a guest_memfd
//!   page. A failed cmpxchg or a frozen SPTE retries the fault (RET_PF_RETRY, retried locally,
//!   §3.3); a BUSY SEAMCALL restores the old SPTE and retries; any other failure is
//!   KVM_BUG_ON (the VM is dead).
//! * **Zap path** (§3.4) under `mmu_lock` held for write: the mirror leaf is set non-present
//!   (`tdp_mmu_set_spte` writes first, then calls `remove_external_spte`), then RANGE.BLOCK,
//!   MEM.TRACK, a kick of every vCPU, PAGE.REMOVE, PHYMEM.PAGE.WBINVD and the MOVDIR64B clear.
//!   A BUSY from BLOCK, TRACK or REMOVE sets `wait_for_sept_zap`, kicks every vCPU out (the
//!   kick waits for entries in flight) and retries once (`tdh_do_no_vcpus`, §3.3), unless
//!   `host.tdx_busy_retry = false`, where it is KVM_BUG_ON (the mainline code before the
//!   retry patches).
//! * **2M private mappings** (§3.6): off by default (`host.tdx_private_2m`), as in mainline;
//!   on, a fault maps at 2M when the guest accepts at 2M, the 2M range is private and its
//!   guest_memfd folio is 2M (the hugepage series honours the guest's accept level).
//!
//! Not modelled: DEMOTE of a 2M private leaf partly converted (the whole leaf is zapped),
//! PAGE.ADD through KVM_TDX_INIT_MEM_REGION (scenarios issue it as SEAMCALLs), the
//! zero-step filter's emulated EPT-violation exit (its lock is modelled, §3.7).

use super::{Disposition, Machine, Outcome, Timing};
use crate::host::config::{KvmFaults, SpteProtocol};
use sim_core::event::FaultKind;
use sim_core::{Cycles, Spa, VmId};
use std::collections::BTreeMap;
use tdx_model::{Regs, SeptState, leaf, status};

/// KVM's non-present SPTE value on x86-64 (`SHADOW_NONPRESENT_VALUE`, bit 63: suppress-#VE
/// set, spec/tdx.md §3.1).
pub const SHADOW_NONPRESENT_VALUE: u64 = 1 << 63;
/// `FROZEN_SPTE` (spec/tdx.md §3.2: `SHADOW_NONPRESENT_VALUE | 0x5a0`): no RWX bits, no PFN.
pub const FROZEN_SPTE: u64 = SHADOW_NONPRESENT_VALUE | 0x5a0;
/// EPT R/W/X (bits 2:0).
const SPTE_RWX: u64 = 7;
/// EPT "page size" (bit 7) of a leaf above 4K.
const SPTE_LARGE: u64 = 1 << 7;
/// Most local retries of one fault before the model stops (KVM stops on a pending signal; a
/// retry loop that never ends is a livelock the explorer reports as a blocked step instead).
const MAX_FAULT_RETRIES: u32 = 64;

fn is_shadow_present(spte: u64) -> bool {
    spte & SPTE_RWX != 0
}

/// The GPA range one SPTE at `level` covers starts here.
fn align(gpa: u64, level: u8) -> u64 {
    gpa & !((4096u64 << (9 * u32::from(level))) - 1)
}

/// A mirror child page table: KVM's own page and the external S-EPT page SEPT.ADD gave the
/// module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Child {
    mirror: Spa,
    external: Spa,
}

/// KVM's state of one TD.
#[derive(Debug, Default)]
pub(super) struct KvmTd {
    /// Mirror SPTEs by (level, first GPA); absent = non-present.
    mirror: BTreeMap<(u8, u64), u64>,
    /// The child table of each present non-leaf mirror SPTE.
    children: BTreeMap<(u8, u64), Child>,
    /// `mmu_lock` readers, and whether a writer holds it.
    readers: u32,
    writer: bool,
    /// vCPUs between the two halves of TDH.VP.ENTER.
    entering: u32,
    /// `wait_for_sept_zap`: no vCPU may enter while set.
    wait_for_sept_zap: bool,
    /// KVM_BUG_ON fired: the VM is dead; what happened.
    pub(super) bug: Option<String>,
    /// Consecutive private EPT-violation exits of each vCPU at one GPA (the zero-step
    /// counter): (GPA, count).
    epf: BTreeMap<u32, (u64, u32)>,
}

sim_core::clone_by_fields!(KvmTd {
    readers,
    writer,
    entering,
    wait_for_sept_zap,
    bug
} changed {
    mirror,
    children,
    epf
});

impl KvmTd {
    fn spte(&self, level: u8, gpa: u64) -> u64 {
        self.mirror.get(&(level, align(gpa, level))).copied().unwrap_or(SHADOW_NONPRESENT_VALUE)
    }

    fn set(&mut self, level: u8, gpa: u64, v: u64) {
        let k = (level, align(gpa, level));
        if v == SHADOW_NONPRESENT_VALUE {
            self.mirror.remove(&k);
        } else {
            self.mirror.insert(k, v);
        }
    }
}

/// What KVM's TDX MMU did, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KvmTdxCounts {
    /// EPT-violation exits KVM handled for private GPAs.
    pub faults: u64,
    /// Local retries of those faults (RET_PF_RETRY: a failed cmpxchg, a frozen SPTE, BUSY).
    pub fault_retries: u64,
    /// Mirror SPTEs frozen.
    pub frozen: u64,
    /// S-EPT tables linked (SEPT.ADD) and private pages mapped (PAGE.AUG), by size.
    pub sept_adds: u64,
    /// See [`KvmTdxCounts::sept_adds`].
    pub augs_4k: u64,
    /// See [`KvmTdxCounts::sept_adds`].
    pub augs_2m: u64,
    /// Private leaves zapped (BLOCK, TRACK, kick, REMOVE, WBINVD).
    pub zaps: u64,
    /// SEAMCALLs that returned OPERAND_BUSY to KVM.
    pub busy: u64,
    /// `tdh_do_no_vcpus` retries (kick every vCPU out, retry once).
    pub no_vcpu_retries: u64,
    /// MapGPA requests and the 2 MiB chunks KVM exited to the VMM with.
    pub map_gpa: u64,
    /// See [`KvmTdxCounts::map_gpa`].
    pub map_gpa_chunks: u64,
    /// KVM_BUG_ONs (the VM was killed).
    pub bugs: u64,
}

/// One step of an [`Op`].
#[derive(Debug)]
pub enum Step {
    /// A step was taken; more follow.
    Yield,
    /// Nothing can happen until another operation moves (a spin on a frozen SPTE, a lock
    /// held, a kick waiting for an entry in flight). The step had no effect.
    Blocked,
    /// The operation finished with this outcome.
    Done(Outcome),
}

/// A resumable machine operation: one event, possibly of many atomic steps.
#[derive(Debug)]
pub enum Op {
    /// An event that runs in one step.
    Atomic(sim_core::TimedEvent),
    /// A KVM operation of a TD.
    Kvm(Box<KvmOp>),
}

/// The KVM operations that take several steps.
#[derive(Debug)]
pub struct KvmOp {
    cpu: usize,
    vm: VmId,
    tdr: u64,
    /// KVM's own cycles (exits, exits to the VMM, kicks): the `kvm` component.
    cost: Cycles,
    /// The machine's TDX-module cycles when the operation began: what the module spent for it
    /// is the difference (the `tdx` component).
    tdx0: Cycles,
    kind: KvmOpKind,
}

#[derive(Debug)]
enum KvmOpKind {
    /// TDH.VP.ENTER of a vCPU.
    Enter {
        vcpu: u32,
        inflight: Option<Box<tdx_model::VpEnterInFlight>>,
        zero_step: bool,
        /// The vCPU's epoch was older than the TD's when the entry began (it flushes).
        stale_at_entry: bool,
    },
    /// A vCPU's TDCALL ACCEPT or private access, with KVM handling its EPT-violation exits.
    Guest {
        vcpu: u32,
        what: GuestWhat,
        fault: Option<Box<Fault>>,
        tries: u32,
        first: Option<Outcome>,
    },
    /// A zap of the private leaves of a GPA range (an attribute change to shared).
    Zap(Box<Zap>),
}

#[derive(Clone, Copy, Debug)]
enum GuestWhat {
    Accept { rcx: u64 },
    Access { gpa: u64, write: bool },
}

/// KVM's fault path for one private GPA.
#[derive(Debug)]
struct Fault {
    gpa: u64,
    goal: u8,
    phase: FaultPhase,
    retries: u32,
}

#[derive(Debug)]
enum FaultPhase {
    Lock,
    Walk {
        level: u8,
    },
    /// `try_cmpxchg` of `old` at `level`, to install `new` (a child when `child` is set).
    Cmpxchg {
        level: u8,
        old: u64,
        new: u64,
        child: Option<Child>,
    },
    /// The SEAMCALL (SEPT.ADD or AUG).
    Call {
        level: u8,
        old: u64,
        new: u64,
        child: Option<Child>,
    },
    /// Its second half (the module's locks are held until it runs).
    Finish {
        level: u8,
        new: u64,
        child: Option<Child>,
        f: Box<tdx_model::InFlight>,
        regs: Regs,
    },
}

/// KVM's private zap of a range.
#[derive(Debug)]
struct Zap {
    /// Leaves still to zap: (level, GPA).
    todo: Vec<(u8, u64)>,
    /// KVM's own cycles so far (kicks).
    own: Cycles,
    phase: ZapPhase,
}

#[derive(Clone, Copy, Debug)]
enum ZapPhase {
    Lock,
    /// Write the mirror leaf non-present.
    Clear,
    /// A SEAMCALL of the removal sequence (`kicked`: after a BUSY and the kick).
    Call {
        which: ZapCall,
        kicked: bool,
    },
    /// Kick every vCPU out before retrying `which` (or, after TRACK, before REMOVE).
    Kick {
        then: ZapCall,
        retry: bool,
    },
    Unlock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ZapCall {
    Block,
    Track,
    Remove,
}

impl Machine {
    /// KVM's TDX state of VM `vm`, if it is a TD KVM manages (a TD exists for it).
    fn kvm_td(&mut self, vm: VmId) -> Option<&mut KvmTd> {
        self.tdx.tdr_of(vm)?;
        Some(self.tdx.kvm.entry(vm).or_default())
    }

    /// The operation an event starts: a KVM operation for TD entries, ACCEPTs and private
    /// accesses whose exits KVM handles, and conversions of a TD's memory; otherwise the
    /// event itself, in one step.
    pub fn op_begin(&mut self, te: &sim_core::TimedEvent) -> Op {
        self.kvm_op(te).unwrap_or_else(|| Op::Atomic(te.clone()))
    }

    /// The KVM operation `te` starts, if it is one (see [`Machine::op_begin`]).
    pub(super) fn kvm_op(&mut self, te: &sim_core::TimedEvent) -> Option<Op> {
        use sim_core::event::Event;
        use sim_core::{Address, Agent, Context};
        let cpu = te.agent.cpu().unwrap_or(0) as usize;
        let kvm = |m: &Machine, vm: VmId, kind: KvmOpKind| {
            m.tdx.tdr_of(vm).map(|tdr| {
                Op::Kvm(Box::new(KvmOp {
                    cpu,
                    vm,
                    tdr,
                    cost: Cycles::ZERO,
                    tdx0: m.tdx.cycles,
                    kind,
                }))
            })
        };
        let handle = self.cfg.host.kvm_faults == KvmFaults::Handle;
        let guest =
            |vcpu, what| KvmOpKind::Guest { vcpu, what, fault: None, tries: 0, first: None };
        match (te.agent, &te.event) {
            (Agent::Cpu { ctx: Context::HostKernel, .. }, Event::TdEnter { vm, vcpu }) => kvm(
                self,
                *vm,
                KvmOpKind::Enter {
                    vcpu: *vcpu,
                    inflight: None,
                    zero_step: false,
                    stale_at_entry: false,
                },
            ),
            (
                Agent::Cpu { ctx: Context::Guest { vm, vcpu, .. }, .. },
                Event::Tdcall { leaf: 6, rcx, .. },
            ) if handle => kvm(self, vm, guest(vcpu, GuestWhat::Accept { rcx: rcx.0 })),
            (
                Agent::Cpu { ctx: Context::Guest { vm, vcpu, .. }, .. },
                Event::Load { addr: Address::Gpa(g), size }
                | Event::Store { addr: Address::Gpa(g), size, .. },
            ) if handle
                && (g.raw() & 0xfff) + u64::from(*size).max(1) <= 4096
                && self.tdx.tdr_of(vm).is_some_and(|t| g.raw() & self.tdx.shared_bit(t) == 0) =>
            {
                let write = matches!(te.event, Event::Store { .. });
                kvm(self, vm, guest(vcpu, GuestWhat::Access { gpa: g.raw(), write }))
            }
            (
                Agent::Cpu { ctx: Context::HostKernel | Context::HostProcess(_), .. },
                Event::MemAttrs { gpa, bytes, vm, attrs, vtl: 0 },
            ) if attrs.0 & super::kvm::KVM_MEMORY_ATTRIBUTE_PRIVATE == 0 => {
                let todo = self.tdx_attrs_shared(cpu, *vm, gpa.raw(), *bytes);
                todo.and_then(|t| {
                    kvm(
                        self,
                        *vm,
                        KvmOpKind::Zap(Box::new(Zap {
                            todo: t,
                            own: Cycles::ZERO,
                            phase: ZapPhase::Lock,
                        })),
                    )
                })
            }
            (
                Agent::Cpu { ctx: Context::Guest { vm, .. }, .. },
                Event::MapGpa { gpa, bytes, shared: true },
            ) => {
                let chunks = self.tdx_map_gpa_exits(vm, *bytes);
                let todo = chunks.and_then(|c| {
                    let t = self.tdx_attrs_shared(cpu, vm, gpa.raw(), *bytes)?;
                    Some((c, t))
                });
                todo.and_then(|(c, t)| {
                    let op = kvm(
                        self,
                        vm,
                        KvmOpKind::Zap(Box::new(Zap {
                            todo: t,
                            own: Cycles::ZERO,
                            phase: ZapPhase::Lock,
                        })),
                    );
                    op.map(|o| match o {
                        Op::Kvm(mut k) => {
                            k.cost = c;
                            Op::Kvm(k)
                        }
                        a @ Op::Atomic(_) => a,
                    })
                })
            }
            (
                Agent::Cpu { ctx: Context::Guest { vm, .. }, .. },
                Event::MapGpa { gpa, bytes, shared: false },
            ) => {
                let c = self.tdx_map_gpa_exits(vm, *bytes)?;
                let c = c + self.tdx_attrs_private(vm, gpa.raw(), *bytes);
                Some(Op::Kvm(Box::new(KvmOp {
                    cpu,
                    vm,
                    tdr: self.tdx.tdr_of(vm)?,
                    cost: c,
                    tdx0: self.tdx.cycles,
                    kind: KvmOpKind::Zap(Box::new(Zap {
                        todo: Vec::new(),
                        own: Cycles::ZERO,
                        phase: ZapPhase::Lock,
                    })),
                })))
            }
            _ => None,
        }
    }

    /// Attribute change to private of a TD's range: the shared EPT's leaves there are zapped
    /// and the VMM's shared pages discarded. Returns the cost.
    fn tdx_attrs_private(&mut self, vm: VmId, gpa: u64, bytes: u64) -> Cycles {
        let Some(tdr) = self.tdx.tdr_of(vm) else { return Cycles::ZERO };
        let bit = self.tdx.shared_bit(tdr) >> 12;
        let (first, last) = (gpa >> 12, (gpa + bytes.max(1) - 1) >> 12);
        let mut zapped = false;
        for g in first..=last {
            if self.kvm.entry(vm).or_default().shared_remove(g) {
                self.kvm_counts.attribute_changes += 1;
            }
            zapped |= self.zap_stage2_gfn(vm, g | bit);
            self.vmm_discard_gfn(vm, g | bit);
        }
        if zapped { self.cfg.host.flush_all_cost } else { Cycles::ZERO }
    }

    /// Run `op` to its end (an ordinary run: nothing else runs meanwhile, so a blocked step
    /// can never unblock; it is reported as not modelled). The step bound grows with a zap's
    /// leaves (at most 8 steps each: clear, BLOCK, TRACK, kick, REMOVE, and a BUSY's kick and
    /// retry), so that a MapGPA of a large range (a 64 MiB SWIOTLB: 16,384 leaves) completes.
    pub(super) fn run_op(&mut self, mut op: Op) -> Outcome {
        let leaves = match &op {
            Op::Kvm(k) => match &k.kind {
                KvmOpKind::Zap(z) => z.todo.len(),
                KvmOpKind::Enter { .. } | KvmOpKind::Guest { .. } => 0,
            },
            Op::Atomic(_) => 0,
        };
        for _ in 0..10_000 + 8 * leaves {
            match self.op_step(&mut op) {
                Step::Yield => {}
                Step::Done(o) => return o,
                Step::Blocked => break,
            }
        }
        self.not_modelled("a KVM operation that waits for another vCPU, run alone");
        Outcome::default()
    }

    /// Take one atomic step of `op`.
    pub fn op_step(&mut self, op: &mut Op) -> Step {
        match op {
            Op::Atomic(te) => {
                let te = te.clone();
                Step::Done(self.exec(&te))
            }
            Op::Kvm(k) => {
                let s = self.kvm_step(k);
                if let Step::Done(o) = &s {
                    self.cpus[k.cpu].charge(o.cost, o.timing);
                }
                s
            }
        }
    }

    fn kvm_step(&mut self, k: &mut KvmOp) -> Step {
        let (vm, tdr, cpu) = (k.vm, k.tdr, k.cpu);
        if self.tdx.kvm.get(&vm).is_some_and(|t| t.bug.is_some()) {
            // A dead VM runs nothing more (KVM_BUG_ON marks it dead); an entry in flight
            // completes so that the module's locks are released.
            if let KvmOpKind::Enter { inflight, .. } = &mut k.kind
                && let Some(f) = inflight.take()
            {
                let _ = self.tdx.module.vp_enter_end(&mut self.tables, *f);
                if let Some(t) = self.tdx.kvm.get_mut(&vm) {
                    t.entering = t.entering.saturating_sub(1);
                }
            }
            return Step::Done(Outcome { cost: k.cost, ..Outcome::default() });
        }
        match &mut k.kind {
            KvmOpKind::Enter { vcpu, inflight, zero_step, stale_at_entry } => {
                let vcpu = *vcpu;
                match inflight.take() {
                    None => {
                        if self.kvm_td(vm).is_some_and(|t| t.wait_for_sept_zap) {
                            return Step::Blocked;
                        }
                        let Some(tdvpr) = self.tdvpr_of(vm, vcpu) else {
                            return Step::Done(Outcome::default());
                        };
                        let threshold = self.tdx.module.config().zero_step_threshold;
                        *zero_step = threshold > 0
                            && self
                                .tdx
                                .kvm
                                .get(&vm)
                                .and_then(|t| t.epf.get(&vcpu))
                                .is_some_and(|&(_, n)| n >= threshold);
                        let stale = self.td_epoch_stale(tdvpr);
                        match self.tdx.module.vp_enter_begin(&mut self.tables, tdvpr, *zero_step) {
                            Ok(f) => {
                                *stale_at_entry = stale;
                                *inflight = Some(Box::new(f));
                                if let Some(t) = self.kvm_td(vm) {
                                    t.entering += 1;
                                }
                                Step::Yield
                            }
                            Err(o) => Step::Done(self.tdx_returned(o.regs, o.cost)),
                        }
                    }
                    Some(f) => {
                        let tdvpr = f.tdvpr();
                        let cost = self.tdx.module.vp_enter_end(&mut self.tables, *f);
                        self.td_entered(cpu, tdr, tdvpr, *stale_at_entry);
                        if let Some(t) = self.kvm_td(vm) {
                            t.entering = t.entering.saturating_sub(1);
                        }
                        let regs = Regs { rax: status::TDX_SUCCESS, ..Regs::default() };
                        Step::Done(self.tdx_returned(regs, cost))
                    }
                }
            }
            KvmOpKind::Guest { vcpu, what, fault, tries, first } => {
                let (vcpu, what) = (*vcpu, *what);
                if let Some(f) = fault {
                    return match self.fault_step(cpu, vm, tdr, f) {
                        FaultStep::Yield => Step::Yield,
                        FaultStep::Blocked => Step::Blocked,
                        FaultStep::Done(_) => {
                            *fault = None;
                            // KVM re-enters the vCPU (the entry is part of the retry).
                            if let Some(tdvpr) = self.tdvpr_of(vm, vcpu) {
                                let stale = self.td_epoch_stale(tdvpr);
                                let c = match self.tdx.module.vp_enter_begin(
                                    &mut self.tables,
                                    tdvpr,
                                    false,
                                ) {
                                    Ok(f) => {
                                        let c = self.tdx.module.vp_enter_end(&mut self.tables, f);
                                        self.td_entered(cpu, tdr, tdvpr, stale);
                                        c
                                    }
                                    Err(o) => o.cost,
                                };
                                self.tdx.cycles += c;
                            }
                            Step::Yield
                        }
                        FaultStep::Bug(_) => {
                            self.cycles.kvm += k.cost;
                            let cost = k.cost + (self.tdx.cycles - k.tdx0);
                            Step::Done(Outcome { cost, ..first.take().unwrap_or_default() })
                        }
                    };
                }
                let before = self.tdx.cycles;
                let o = match what {
                    GuestWhat::Accept { rcx } => self.tdcall(cpu, vm, vcpu, 6, rcx),
                    GuestWhat::Access { gpa, write } => self
                        .td_access(cpu, vm, sim_core::Gpa::new_truncate(gpa), write)
                        .unwrap_or_default(),
                };
                let exit = o.fault.filter(|f| f.kind == FaultKind::EptViolation);
                let gpa = match what {
                    GuestWhat::Accept { rcx } => rcx & !0xfff,
                    GuestWhat::Access { gpa, .. } => gpa & !0xfff,
                };
                self.note_epf(vm, vcpu, gpa, exit.is_some());
                let fixable = exit.is_some_and(|f| {
                    let eeq = f.code >> 60;
                    // PENDING_EPT_VIOLATION (6): the mirror has the page; only the guest can
                    // accept it. Anything else is a missing mapping KVM can install.
                    eeq != 6
                });
                if !fixable || *tries >= super::kvm::MAX_RETRIES {
                    let mut out = o;
                    if let Some(f) = first.take() {
                        out.fault = out.fault.or(f.fault);
                        out.timing = Timing::Serial;
                    }
                    // The attempt's own cost is in `out`; the module's work for KVM before it
                    // and KVM's own work are added.
                    self.cycles.kvm += k.cost;
                    out.cost += k.cost + (before - k.tdx0);
                    return Step::Done(out);
                }
                *tries += 1;
                self.tdx.kvm_counts.faults += 1;
                // The exit was raised by td_access/tdcall: KVM handles it.
                self.faults.raised = self.faults.raised.saturating_sub(1);
                // (Its count by code stays: codes are counted whatever the disposition.)
                self.faults.handled += 1;
                let mut o = o;
                if let Some(fi) = &mut o.fault {
                    fi.disposition = Disposition::Handled;
                }
                k.cost += self.cfg.host.vmexit_cost;
                first.get_or_insert(o);
                // A private access to a GFN whose attribute is shared exits to the VMM
                // (KVM_EXIT_MEMORY_FAULT), which converts it (an implicit conversion, as QEMU
                // does; spec/tdx.md §4.1).
                if self.kvm.get(&vm).is_some_and(|kv| kv.is_shared(gpa >> 12)) {
                    self.kvm.entry(vm).or_default().shared_remove(gpa >> 12);
                    self.kvm_counts.implicit_conversions += 1;
                    self.kvm_counts.attribute_changes += 1;
                    k.cost += self.cfg.host.user_exit_cost;
                }
                let accept_2m = matches!(what, GuestWhat::Accept { rcx } if rcx & 7 == 1);
                let goal = u8::from(accept_2m && self.cfg.host.tdx_private_2m);
                *fault = Some(Box::new(Fault { gpa, goal, phase: FaultPhase::Lock, retries: 0 }));
                Step::Yield
            }
            KvmOpKind::Zap(z) => match self.zap_step(cpu, vm, tdr, z) {
                FaultStep::Yield => Step::Yield,
                FaultStep::Blocked => Step::Blocked,
                FaultStep::Done(c) | FaultStep::Bug(c) => {
                    k.cost += c;
                    self.cycles.kvm += k.cost;
                    Step::Done(Outcome {
                        cost: k.cost,
                        timing: Timing::Serial,
                        ..Outcome::default()
                    })
                }
            },
        }
    }

    /// The zero-step counter (spec/tdx.md §3.7): consecutive EPT-violation exits of a vCPU at
    /// one private GPA; any other outcome resets it.
    fn note_epf(&mut self, vm: VmId, vcpu: u32, gpa: u64, exited: bool) {
        let Some(t) = self.kvm_td(vm) else { return };
        if !exited {
            t.epf.remove(&vcpu);
            return;
        }
        let e = t.epf.entry(vcpu).or_insert((gpa, 0));
        if e.0 != gpa {
            *e = (gpa, 0);
        }
        e.1 += 1;
    }

    fn kvm_bug_on(&mut self, vm: VmId, what: String) {
        self.tdx.kvm_counts.bugs += 1;
        if let Some(t) = self.tdx.kvm.get_mut(&vm)
            && t.bug.is_none()
        {
            t.bug = Some(what);
        }
    }

    fn fault_step(&mut self, cpu: usize, vm: VmId, tdr: u64, f: &mut Fault) -> FaultStep {
        let naive = self.cfg.host.tdx_spte_protocol == SpteProtocol::Naive;
        let Some(root_level) = self.tdx.module.sept_root(tdr).map(|(_, l)| l) else {
            return FaultStep::Done(Cycles::ZERO);
        };
        let gpa = f.gpa;
        match std::mem::replace(&mut f.phase, FaultPhase::Lock) {
            FaultPhase::Lock => {
                let t = self.kvm_td(vm).expect("a TD");
                if t.writer {
                    return FaultStep::Blocked;
                }
                t.readers += 1;
                f.phase = FaultPhase::Walk { level: root_level };
                FaultStep::Yield
            }
            FaultPhase::Walk { mut level } => {
                let t = self.tdx.kvm.get(&vm).expect("a TD");
                loop {
                    let spte = t.spte(level, gpa);
                    if spte == FROZEN_SPTE {
                        // Another vCPU is installing it: back off and retry (no SEAMCALL).
                        f.phase = FaultPhase::Walk { level };
                        return FaultStep::Blocked;
                    }
                    if is_shadow_present(spte) {
                        if level == 0 || spte & SPTE_LARGE != 0 {
                            // Already mapped (by another vCPU): the fault is fixed.
                            self.kvm_td(vm).expect("a TD").readers -= 1;
                            return FaultStep::Done(Cycles::ZERO);
                        }
                        if level == f.goal {
                            // A table where a 2M leaf was wanted: map at 4K under it.
                            f.goal = 0;
                        }
                        level -= 1;
                        continue;
                    }
                    break;
                }
                // Non-present: install a child table above the goal, the leaf at it.
                let (new, child) = if level > f.goal {
                    let (Some(mirror), Some(external)) = (self.alloc.alloc(0), self.alloc.alloc(0))
                    else {
                        self.not_modelled("KVM page-table allocation with host memory exhausted");
                        self.kvm_td(vm).expect("a TD").readers -= 1;
                        return FaultStep::Done(Cycles::ZERO);
                    };
                    (external.raw() | SPTE_RWX, Some(Child { mirror, external }))
                } else {
                    let Some(hpa) = self.tdx_gmem_page(cpu, vm, gpa, level) else {
                        self.kvm_td(vm).expect("a TD").readers -= 1;
                        return FaultStep::Done(Cycles::ZERO);
                    };
                    let large = if level > 0 { SPTE_LARGE } else { 0 };
                    (hpa | SPTE_RWX | large, None)
                };
                f.phase = FaultPhase::Cmpxchg { level, old: SHADOW_NONPRESENT_VALUE, new, child };
                FaultStep::Yield
            }
            FaultPhase::Cmpxchg { level, old, new, child } => {
                let t = self.kvm_td(vm).expect("a TD");
                if t.spte(level, gpa) != old {
                    // try_cmpxchg64 failed: RET_PF_RETRY.
                    if let Some(c) = child {
                        self.free_child(c);
                    }
                    return self.fault_retry(vm, f);
                }
                t.set(level, gpa, if naive { new } else { FROZEN_SPTE });
                if !naive {
                    self.tdx.kvm_counts.frozen += 1;
                }
                f.phase = FaultPhase::Call { level, old, new, child };
                FaultStep::Yield
            }
            FaultPhase::Call { level, old, new, child } => {
                let ga = align(gpa, level);
                let (lf, regs) = match child {
                    // link_external_spt: SEPT.ADD of the child at the parent's level.
                    Some(c) => (
                        leaf::MEM_SEPT_ADD,
                        Regs {
                            rcx: ga | u64::from(level),
                            rdx: tdr,
                            r8: c.external.raw(),
                            ..Regs::default()
                        },
                    ),
                    // set_external_spte: PAGE.AUG.
                    None => (
                        leaf::MEM_PAGE_AUG,
                        Regs {
                            rcx: ga | u64::from(level),
                            rdx: tdr,
                            r8: new & 0x000f_ffff_ffff_f000 & !(SPTE_LARGE),
                            ..Regs::default()
                        },
                    ),
                };
                match self.tdx.module.begin(&mut self.tables, lf, 0, regs) {
                    Ok(inflight) => {
                        f.phase =
                            FaultPhase::Finish { level, new, child, f: Box::new(inflight), regs };
                        FaultStep::Yield
                    }
                    Err(o) => {
                        let cost = o.cost + self.tdx_refs(cpu, &o.refs);
                        self.tdx_charge(o.regs, cost);
                        if o.regs.rax & 0xFFFF_FFFF_0000_0000 == status::TDX_OPERAND_BUSY {
                            // Restore the SPTE and retry (spec/tdx.md §3.3 group 2).
                            self.tdx.kvm_counts.busy += 1;
                            self.kvm_td(vm).expect("a TD").set(level, gpa, old);
                            if let Some(c) = child {
                                self.free_child(c);
                            }
                            return self.fault_retry(vm, f);
                        }
                        let name = if child.is_some() { "SEPT.ADD" } else { "PAGE.AUG" };
                        self.kvm_bug_on(
                            vm,
                            format!(
                                "KVM_BUG_ON: {name}(gpa {ga:#x} level {level}) returned {:#x} (rdx {:#x})",
                                o.regs.rax, o.regs.rdx
                            ),
                        );
                        let t = self.kvm_td(vm).expect("a TD");
                        t.readers -= 1;
                        FaultStep::Bug(cost)
                    }
                }
            }
            FaultPhase::Finish { level, new, child, f: inflight, regs: regs_in } => {
                let lf = inflight.leaf().number();
                let out = self.tdx.module.finish(&mut self.tables, *inflight);
                self.tdx_claim_operands(lf, &regs_in);
                let cost = out.cost + self.tdx_refs(cpu, &out.refs);
                self.tdx_charge(out.regs, cost);
                let t = self.kvm_td(vm).expect("a TD");
                t.set(level, gpa, new);
                match child {
                    Some(c) => {
                        t.children.insert((level, align(gpa, level)), c);
                        self.tdx.kvm_counts.sept_adds += 1;
                        f.phase = FaultPhase::Walk { level: level - 1 };
                        // Continue the walk under the same lock.
                        FaultStep::Yield
                    }
                    None => {
                        t.readers -= 1;
                        if level == 0 {
                            self.tdx.kvm_counts.augs_4k += 1;
                        } else {
                            self.tdx.kvm_counts.augs_2m += 1;
                        }
                        FaultStep::Done(cost)
                    }
                }
            }
        }
    }

    fn fault_retry(&mut self, vm: VmId, f: &mut Fault) -> FaultStep {
        self.tdx.kvm_counts.fault_retries += 1;
        let t = self.kvm_td(vm).expect("a TD");
        t.readers -= 1;
        f.retries += 1;
        if f.retries > MAX_FAULT_RETRIES {
            return FaultStep::Done(Cycles::ZERO);
        }
        f.phase = FaultPhase::Lock;
        FaultStep::Yield
    }

    fn free_child(&mut self, c: Child) {
        let _ = self.alloc.free(c.mirror, 0);
        let _ = self.alloc.free(c.external, 0);
    }

    /// The guest_memfd page (2M range at level 1) for private `gpa`.
    fn tdx_gmem_page(&mut self, cpu: usize, vm: VmId, gpa: u64, level: u8) -> Option<u64> {
        let gfn = gpa >> 12;
        let (base, folio, _) = self.gmem_folio(cpu, vm, gfn)?;
        let page = folio.spa.raw() + ((gfn - base) << 12);
        Some(if level == 1 { page & !((2 << 20) - 1) } else { page })
    }

    /// Attribute change to shared of `bytes` from `gpa` of a TD: the attribute is set and the
    /// private leaves to zap are returned (`None` if `vm` is not a TD).
    fn tdx_attrs_shared(
        &mut self,
        cpu: usize,
        vm: VmId,
        gpa: u64,
        bytes: u64,
    ) -> Option<Vec<(u8, u64)>> {
        let _ = cpu;
        self.tdx.tdr_of(vm)?;
        let (first, last) = (gpa & !0xfff, (gpa + bytes.max(1) - 1) & !0xfff);
        let t = self.tdx.kvm.entry(vm).or_default();
        let mut todo = Vec::new();
        for (&(level, g), &spte) in &t.mirror {
            let size = 4096u64 << (9 * u32::from(level));
            let leaf = level == 0 || spte & SPTE_LARGE != 0;
            if leaf && is_shadow_present(spte) && g <= last && g + size > first {
                todo.push((level, g));
            }
        }
        let k = self.kvm.entry(vm).or_default();
        for g in (first >> 12)..=(last >> 12) {
            k.shared_insert(g);
        }
        self.kvm_counts.attribute_changes += (last - first) / 4096 + 1;
        todo.reverse();
        Some(todo)
    }

    /// MapGPA's exits to the VMM, one per 2 MiB chunk (`TDX_MAP_GPA_MAX_LEN`, spec/tdx.md
    /// §4.2); `None` if `vm` is not a TD.
    fn tdx_map_gpa_exits(&mut self, vm: VmId, bytes: u64) -> Option<Cycles> {
        self.tdx.tdr_of(vm)?;
        let chunks = bytes.div_ceil(2 << 20).max(1);
        self.tdx.kvm_counts.map_gpa += 1;
        self.tdx.kvm_counts.map_gpa_chunks += chunks;
        Some((self.cfg.host.vmexit_cost + self.cfg.host.user_exit_cost).times(chunks))
    }

    fn zap_step(&mut self, cpu: usize, vm: VmId, tdr: u64, z: &mut Zap) -> FaultStep {
        let retry = self.cfg.host.tdx_busy_retry;
        let Some(&(level, gpa)) = z.todo.last() else {
            if matches!(z.phase, ZapPhase::Lock) {
                return FaultStep::Done(z.own);
            }
            let t = self.kvm_td(vm).expect("a TD");
            t.writer = false;
            return FaultStep::Done(z.own);
        };
        match z.phase {
            ZapPhase::Lock => {
                let t = self.kvm_td(vm).expect("a TD");
                if t.writer || t.readers > 0 {
                    return FaultStep::Blocked;
                }
                t.writer = true;
                z.phase = ZapPhase::Clear;
                FaultStep::Yield
            }
            ZapPhase::Clear => {
                let t = self.kvm_td(vm).expect("a TD");
                t.set(level, gpa, SHADOW_NONPRESENT_VALUE);
                z.phase = ZapPhase::Call { which: ZapCall::Block, kicked: false };
                FaultStep::Yield
            }
            ZapPhase::Call { which, kicked } => {
                let regs = match which {
                    ZapCall::Block | ZapCall::Remove => {
                        Regs { rcx: gpa | u64::from(level), rdx: tdr, ..Regs::default() }
                    }
                    ZapCall::Track => Regs { rcx: tdr, ..Regs::default() },
                };
                let lf = match which {
                    ZapCall::Block => leaf::MEM_RANGE_BLOCK,
                    ZapCall::Track => leaf::MEM_TRACK,
                    ZapCall::Remove => leaf::MEM_PAGE_REMOVE,
                };
                let (out, _) = self.tdx_host_call(cpu, lf, 0, regs);
                if out.rax & 0xFFFF_FFFF_0000_0000 == status::TDX_OPERAND_BUSY {
                    self.tdx.kvm_counts.busy += 1;
                    if retry && !kicked {
                        // tdh_do_no_vcpus: no vCPU may enter; kick them all out; retry once.
                        self.tdx.kvm_counts.no_vcpu_retries += 1;
                        self.kvm_td(vm).expect("a TD").wait_for_sept_zap = true;
                        z.phase = ZapPhase::Kick { then: which, retry: true };
                        return FaultStep::Yield;
                    }
                }
                if out.rax != status::TDX_SUCCESS {
                    let name = match which {
                        ZapCall::Block => "RANGE.BLOCK",
                        ZapCall::Track => "MEM.TRACK",
                        ZapCall::Remove => "PAGE.REMOVE",
                    };
                    self.kvm_bug_on(
                        vm,
                        format!(
                            "KVM_BUG_ON: {name}(gpa {gpa:#x} level {level}) returned {:#x}",
                            out.rax
                        ),
                    );
                    self.kvm_td(vm).expect("a TD").writer = false;
                    return FaultStep::Bug(z.own);
                }
                if kicked {
                    self.kvm_td(vm).expect("a TD").wait_for_sept_zap = false;
                }
                z.phase = match which {
                    ZapCall::Block => ZapPhase::Call { which: ZapCall::Track, kicked: false },
                    // After TRACK every vCPU is kicked so none runs at the old epoch.
                    ZapCall::Track => ZapPhase::Kick { then: ZapCall::Remove, retry: false },
                    ZapCall::Remove => {
                        // WBINVD of the page with the TD's key, then the MOVDIR64B clear.
                        let hpa = out.rcx;
                        let hkid = self.tdx.module.td(tdr).map_or(0, |v| u64::from(v.hkid));
                        let cfg = self.tdx.module.config();
                        let keyed = hpa | (hkid << (cfg.max_pa - cfg.hkid_bits));
                        let _ = self.tdx_host_call(
                            cpu,
                            leaf::PHYMEM_PAGE_WBINVD,
                            0,
                            Regs { rcx: keyed, ..Regs::default() },
                        );
                        let bytes = 4096u64 << (9 * u32::from(level));
                        self.tdx_clear_lines(hpa, bytes);
                        self.tdx.kvm_counts.zaps += 1;
                        self.tdx_gmem_punch(cpu, vm, gpa, level);
                        z.todo.pop();
                        if z.todo.is_empty() { ZapPhase::Unlock } else { ZapPhase::Clear }
                    }
                };
                FaultStep::Yield
            }
            ZapPhase::Kick { then, retry: again } => {
                if self.tdx.kvm.get(&vm).is_some_and(|t| t.entering > 0) {
                    // The IPI is taken once the entry in flight completes.
                    return FaultStep::Blocked;
                }
                let n = self.tdx.module.kick_vcpus(&mut self.tables, tdr);
                let h = &self.cfg.host;
                z.own += (h.ipi_send_cost + h.ipi_ack_cost).times(n as u64);
                z.phase = ZapPhase::Call { which: then, kicked: again };
                FaultStep::Yield
            }
            ZapPhase::Unlock => {
                self.kvm_td(vm).expect("a TD").writer = false;
                z.todo.clear();
                FaultStep::Done(z.own)
            }
        }
    }

    /// guest_memfd hole punch of a zapped private leaf: its pages leave the folio.
    fn tdx_gmem_punch(&mut self, cpu: usize, vm: VmId, gpa: u64, level: u8) {
        let pages = 1u64 << (9 * u32::from(level));
        for i in 0..pages {
            let _ = self.gmem_punch_page(cpu, vm, (gpa >> 12) + i);
        }
    }

    /// The first KVM_BUG_ON of any TD, if one fired.
    pub fn kvm_bug(&self) -> Option<String> {
        self.tdx.kvm.iter().find_map(|(vm, t)| t.bug.as_ref().map(|b| format!("vm {vm}: {b}")))
    }

    /// The invariants of KVM's TDX MMU, for every TD (spec/tdx.md §6 V17): no KVM_BUG_ON, and
    /// the mirror and the S-EPT agree on present versus non-present for every entry that is
    /// not frozen. Empty when they hold.
    pub fn invariants(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for (&vm, t) in &self.tdx.kvm {
            if let Some(b) = &t.bug {
                bad.push(format!("vm {vm}: {b}"));
            }
            let Some(tdr) = self.tdx.tdr_of(vm) else { continue };
            // Sorted by (level, GPA) as the mirror is, searched in place (each entry once).
            let mut sept = self.tdx.module.sept_entries(&self.tables, tdr);
            sept.sort_unstable_by_key(|&(l, g, _)| (l, g));
            let state = |level: u8, gpa: u64| {
                sept.binary_search_by_key(&(level, gpa), |&(l, g, _)| (l, g))
                    .ok()
                    .map(|i| &sept[i].2)
            };
            let present = |s: Option<&SeptState>| {
                s.is_some_and(|s| {
                    matches!(s, SeptState::Mapped | SeptState::Pending | SeptState::NlMapped)
                })
            };
            for (&(level, gpa), &spte) in &t.mirror {
                let s = state(level, gpa);
                if spte != FROZEN_SPTE && is_shadow_present(spte) != present(s) {
                    bad.push(disagree(vm, spte, s, gpa, level));
                }
            }
            for (level, gpa, s) in &sept {
                if present(Some(s)) && !t.mirror.contains_key(&(*level, *gpa)) {
                    bad.push(disagree(vm, SHADOW_NONPRESENT_VALUE, Some(s), *gpa, *level));
                }
            }
        }
        bad
    }

    /// Bring KVM's mirror in step with a host SEAMCALL of the event stream that changed the
    /// S-EPT entry of `gpa` at `level` (SEPT.ADD, PAGE.ADD, AUG, BLOCK, UNBLOCK, REMOVE, DEMOTE,
    /// PROMOTE, RELOCATE, SEPT.REMOVE): host SEAMCALLs for a TD are KVM's, so its mirror
    /// follows them (a BLOCKed entry is non-present in the mirror, as KVM zaps it first).
    pub(super) fn mirror_follow(&mut self, tdr: u64, gpa: u64, level: u8) {
        let Some(vm) = self.tdx.vm_of_tdr(tdr) else { return };
        let size = 4096u64 << (9 * u32::from(level));
        let base = gpa & !(size - 1);
        let t = self.tdx.kvm.entry(vm).or_default();
        t.mirror.retain(|&(l, g), _| !(l <= level && g >= base && g < base + size));
        t.children.retain(|&(l, g), _| !(l <= level && g >= base && g < base + size));
        for (l, g, s, hpa) in self.tdx.module.sept_subtree(&self.tables, tdr, gpa, level) {
            self.mirror_state_sept(vm, g, l, s, hpa);
        }
    }

    /// Mirror what a `state sept` line made: KVM's view of the same entry.
    pub(super) fn mirror_state_sept(
        &mut self,
        vm: VmId,
        gpa: u64,
        level: u8,
        s: SeptState,
        hpa: u64,
    ) {
        let t = self.tdx.kvm.entry(vm).or_default();
        let v = match s {
            SeptState::NlMapped => hpa | SPTE_RWX,
            SeptState::Mapped | SeptState::Pending => {
                hpa | SPTE_RWX | if level > 0 { SPTE_LARGE } else { 0 }
            }
            _ => SHADOW_NONPRESENT_VALUE,
        };
        t.set(level, gpa, v);
    }
}

fn disagree(vm: VmId, spte: u64, s: Option<&SeptState>, gpa: u64, level: u8) -> String {
    format!(
        "vm {vm}: mirror SPTE {spte:#x} and S-EPT {} disagree at gpa {gpa:#x} level {level}",
        s.map_or("FREE".to_owned(), |s| format!("{s:?}"))
    )
}

/// One step of a fault or zap.
enum FaultStep {
    Yield,
    Blocked,
    /// Finished; its cost.
    Done(Cycles),
    /// KVM_BUG_ON; the cost so far.
    Bug(Cycles),
}
