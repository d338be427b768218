//! Workload generators: seeded, deterministic producers of per-agent event streams.
//!
//! A generator offers one stream per agent (DESIGN "The timing model"; a CPU's stream may change
//! context from event to event, see [`Workload::agent_of_last`]); the engine merges them
//! with [`sim_core::sched::Scheduler`] by `(cycle, agent)` and hands each generator a
//! [`MemoryServices`] so that where a kernel object or a guest folio lands follows from the
//! host allocator's history. Every parameter is documented in [`WorkloadInfo::params`] and listed
//! by `ccsim workloads`.
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

mod dma_streams;
mod host_kernel;
mod kernel;
#[cfg(test)]
mod locality;
mod multi_tenant;
mod pagebits;
mod params;
mod qemu_process;
mod snp_churn;
mod snp_launch;
mod tdx;
#[cfg(test)]
mod testutil;
mod vsm_boot;

pub use params::{ParamDoc, ParamError, Params};

use sim_core::event::AllocKind;
use sim_core::{Agent, Event, Gpa, MemoryServices, Spa};

/// A running generator.
pub trait Workload: std::fmt::Debug {
    /// The agents this workload drives, one stream each, in stream order.
    fn agents(&self) -> &[Agent];
    /// The next event of stream `stream`, or `None` when that stream has ended.
    fn next(&mut self, stream: usize, mem: &mut dyn MemoryServices) -> Option<Event>;
    /// The agent that issues the event [`Workload::next`] last returned for `stream`.
    ///
    /// A stream belongs to one CPU but may change context on it: a CPU that time-slices guests
    /// issues `vmrun` as its host kernel and the guest's accesses as that guest's vCPU. The
    /// engine asks after every event and rejects an agent on another CPU than
    /// `agents()[stream]`'s. The default, `agents()[stream]`, is right for a stream that never
    /// changes context.
    fn agent_of_last(&self, stream: usize) -> Agent {
        self.agents()[stream]
    }
    /// If the next event [`Workload::next`] would return for `stream` is a `work` already
    /// decided by the event it last returned (issued by the same agent, and depending on
    /// nothing another stream or the machine could change meanwhile), consume it and return its
    /// count: `next` then continues after it. `None` (the default) changes nothing.
    ///
    /// Why: a CPU's access and its `work` are two events; the engine asks for the `work` right
    /// after the access and runs it when the stream's turn comes, without a call to `next` or
    /// the general event path. The order of events and their effects are unchanged.
    fn next_work(&mut self, stream: usize) -> Option<u64> {
        let _ = stream;
        None
    }
}

/// Builds a generator from parameters and a seed.
pub type BuildFn = fn(&Params, u64) -> Result<Box<dyn Workload>, ParamError>;

/// A registered workload.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadInfo {
    /// Name used by `--workload`.
    pub name: &'static str,
    /// One-line description.
    pub summary: &'static str,
    /// What it models and what its shape is based on.
    pub description: &'static str,
    /// Every parameter with its default.
    pub params: &'static [ParamDoc],
    /// Build a generator from parameters and a seed.
    pub build: BuildFn,
    /// The preset a run uses when it names none: a TDX workload needs an Intel host (`spr`),
    /// the SEV-SNP ones run on the default AMD preset.
    pub preset: Option<&'static str>,
}

impl WorkloadInfo {
    /// Build, checking parameter names against [`WorkloadInfo::params`] first.
    ///
    /// # Errors
    /// [`ParamError`] for an unknown parameter or a bad value.
    pub fn instantiate(&self, params: &Params, seed: u64) -> Result<Box<dyn Workload>, ParamError> {
        params.check_known(self.params)?;
        (self.build)(params, seed)
    }
}

/// Host memory for running a generator alone (benchmarks, tests): pages come from a bump pointer
/// over `bytes` bytes from 16 MiB up, naturally aligned, wrapping at the end; frees are ignored.
/// It never runs out, and after a wrap it hands out pages again.
#[derive(Debug, Clone)]
pub struct NullMemory {
    bytes: u64,
    next: u64,
}

impl NullMemory {
    /// Where the pages start: above the low memory a host keeps for itself.
    const BASE: u64 = 16 << 20;

    /// Memory of `bytes` bytes (at least 1 GiB is useful: the largest block is 2^order pages).
    pub fn new(bytes: u64) -> NullMemory {
        NullMemory { bytes, next: 0 }
    }
}

impl Default for NullMemory {
    /// 4 GiB.
    fn default() -> NullMemory {
        NullMemory::new(4 << 30)
    }
}

impl MemoryServices for NullMemory {
    fn alloc_pages(&mut self, order: u8, _: AllocKind) -> Option<Spa> {
        let size = 4096u64 << order;
        let mut at = self.next.next_multiple_of(size);
        if at + size > self.bytes {
            at = 0;
        }
        self.next = at + size;
        Some(Spa::new(Self::BASE + at))
    }
    fn free_pages(&mut self, _: Spa, _: u8) {}
    fn gmem_alloc(&mut self, _: u32, _: Gpa, order: u8) -> Option<Spa> {
        self.alloc_pages(order, AllocKind::Guest)
    }
    fn memory_bytes(&self) -> u64 {
        self.bytes
    }
    fn free_bytes(&self) -> u64 {
        self.bytes.saturating_sub(self.next)
    }
}

/// The default workload, run by `ccsim run` with no arguments.
pub const DEFAULT_WORKLOAD: &str = "snp-launch";

/// Every built-in workload.
pub fn registry() -> &'static [WorkloadInfo] {
    &[
        snp_launch::INFO,
        snp_churn::INFO,
        host_kernel::INFO,
        qemu_process::INFO,
        multi_tenant::INFO,
        dma_streams::INFO,
        tdx::BOOT_INFO,
        tdx::CHURN_INFO,
        vsm_boot::INFO,
    ]
}

/// Find a workload by name.
pub fn find(name: &str) -> Option<&'static WorkloadInfo> {
    registry().iter().find(|w| w.name == name)
}
