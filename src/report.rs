//! Reports: one run's results as plain data, printed as a human table, JSON or CSV
//! (STYLE rule 17: blocks own their counters; printers live here).
//!
//! JSON is produced from the `Report` struct with ordered maps only, so the same inputs give
//! byte-identical JSON. CSV is the JSON flattened to dotted column names, one header row and one
//! value row, so every JSON field has a CSV column and the two cannot drift.

use serde::{Deserialize, Serialize};
use sim_core::PageSize;
use sim_core::stats::{PerSize, Series};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Where the run's events came from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputInfo {
    /// `workload`, `trace` or `scenario`.
    pub kind: String,
    /// Workload name or file name.
    pub name: String,
    /// Workload parameters as given (empty for files).
    pub params: BTreeMap<String, String>,
    /// Seed.
    pub seed: u64,
}

/// Memory accesses by kind.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessCounts {
    /// Loads.
    pub loads: u64,
    /// Stores.
    pub stores: u64,
    /// Instruction fetches.
    pub fetches: u64,
    /// DMA reads.
    pub dma_reads: u64,
    /// DMA writes.
    pub dma_writes: u64,
    /// Host-kernel accesses (of the loads, stores and fetches above).
    pub kernel: u64,
    /// Host-kernel page translations that missed every TLB level (walks).
    pub kernel_dtlb_misses: u64,
}

impl AccessCounts {
    /// All accesses.
    pub fn total(&self) -> u64 {
        self.loads + self.stores + self.fetches + self.dma_reads + self.dma_writes
    }

    /// Host-kernel TLB misses per 1000 host-kernel accesses.
    #[allow(clippy::cast_precision_loss)]
    pub fn kernel_mpka(&self) -> f64 {
        if self.kernel == 0 {
            0.0
        } else {
            self.kernel_dtlb_misses as f64 * 1000.0 / self.kernel as f64
        }
    }
}

/// Data-TLB counters summed over CPUs, by page size of the entry (hits, fills) or of the
/// translation found by the walk (misses).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TlbCounts {
    /// Hits.
    pub hits: PerSize<u64>,
    /// Misses, by the page size the walk found.
    pub misses: PerSize<u64>,
    /// Entries evicted.
    pub evictions: PerSize<u64>,
    /// Full flushes (all CPUs counted).
    pub flushes: u64,
    /// Entries dropped by invalidations and flushes.
    pub invalidated: u64,
}

/// Page walks.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalkCounts {
    /// Walks started.
    pub walks: u64,
    /// Memory references of walks (reads and A/D writes).
    pub refs: u64,
    /// A/D-bit writes among them.
    pub ad_writes: u64,
}

/// Guest translation: vCPU accesses through the guest's page tables and stage 2 (NPT/EPT).
/// They are also counted in `accesses`, `dtlb` and `walks`, which sum host and guest.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestCounts {
    /// vCPU accesses (per 4 KiB page touched).
    pub accesses: u64,
    /// Of those, resolved by a TLB hit.
    pub tlb_hits: u64,
    /// 2-D walks: guest page tables × stage 2 (GVA accesses that missed the TLB).
    pub walks_2d: u64,
    /// Stage-2 walks alone: guest-physical accesses (a vCPU without paging) that missed.
    pub gpa_walks: u64,
    /// Memory references of those walks (reads and A/D writes): `guest_refs + nested_refs`.
    pub refs: u64,
    /// References to guest page-table entries (at the SPA stage 2 gave for them).
    pub guest_refs: u64,
    /// References to stage-2 (NPT/EPT) entries.
    pub nested_refs: u64,
    /// A/D-bit writes among the references.
    pub ad_writes: u64,
    /// Stage-2 table pages of every VM (host memory), at the end of the run.
    pub stage2_table_pages: u64,
    /// Guest page-table pages of every VM (guest memory backed by host pages).
    pub guest_table_pages: u64,
    /// Guest page-table splits made by the guest kernel's `set_memory_{en,de}crypted`.
    pub cpa_splits: u64,
    /// Pages whose C-bit the guest kernel changed.
    pub cpa_pages: u64,
}

/// RMP activity.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RmpCounts {
    /// Host RMP checks performed at walk end / TLB fill.
    pub checks: u64,
    /// Guest RMP checks (Table 15-39 guest rows; each reads an RMP entry).
    pub guest_checks: u64,
    /// RMP entries read by checks.
    pub entry_reads: u64,
    /// Violations by architectural cause.
    pub violations: BTreeMap<String, u64>,
    /// RMPUPDATE executions by return code name.
    pub updates: BTreeMap<String, u64>,
    /// PSMASH executions by return code name.
    pub psmash: BTreeMap<String, u64>,
    /// PVALIDATE executions that completed, by return code name (faults are violations).
    pub pvalidate: BTreeMap<String, u64>,
    /// RMPADJUST executions that completed, by return code name.
    pub rmpadjust: BTreeMap<String, u64>,
    /// TLB flushes caused by RMP updates (the `rmp.tlb_on_update` knob).
    pub update_flushes: u64,
}

/// Faults by disposition and by kind.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FaultCounts {
    /// Raised to the faulting context.
    pub raised: u64,
    /// Handled by host software and retried.
    pub handled: u64,
    /// Would crash the host (counted; the run continues).
    pub fatal: u64,
    /// By fault kind and error code, e.g. `pf 0x80000003`.
    pub by_code: BTreeMap<String, u64>,
}

/// The direct map as `/proc/meminfo` and `/proc/vmstat` show it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DirectMapCounts {
    /// `DirectMap4k`, `DirectMap2M`, `DirectMap1G` in kB, at the end of the run.
    pub kb: PerSize<u64>,
    /// `direct_map_level2_splits` (2M → 4K).
    pub level2_splits: u64,
    /// `direct_map_level3_splits` (1G → 2M).
    pub level3_splits: u64,
    /// `direct_map_level2_collapses`.
    pub level2_collapses: u64,
    /// `direct_map_level3_collapses`.
    pub level3_collapses: u64,
    /// Page-table pages of the kernel page table (the direct map's, plus any kernel `map`).
    pub table_pages: u64,
    /// The same in kB: page-table memory the kernel mapping uses (4 KiB per page, H19).
    pub table_kb: u64,
    /// Splits made before `SYSTEM_RUNNING` (early boot; not in the vmstat counters).
    pub boot_splits: u64,
    /// Collapses made before `SYSTEM_RUNNING`.
    pub boot_collapses: u64,
    /// Page-table pages taken from the boot pool (memblock) during early boot.
    pub boot_table_pages: u64,
    /// Direct-map leaves currently not present (`set_memory_np`, `set_direct_map_invalid`).
    pub not_present: u64,
    /// What CPA requests did.
    pub cpa: crate::host::cpa::CpaStats,
    /// DirectMap kB over time, sampled at event indices when it changes.
    pub series: Series,
}

/// TLB shootdowns: flushes that reached other CPUs by IPI.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShootdownCounts {
    /// Flush operations that sent at least one IPI.
    pub shootdowns: u64,
    /// IPIs sent.
    pub ipis_sent: u64,
    /// Cycles target CPUs stalled taking them (receive plus flush work), summed.
    pub target_stall_cycles: u64,
    /// Cycles initiators spent on flushes: sending, flushing locally and waiting for
    /// acknowledgements (local-only flushes included).
    pub initiator_cycles: u64,
}

/// Host physical memory.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemoryCounts {
    /// Free in the page allocator, kB.
    pub free_kb: u64,
    /// Page tables of every host address space (kernel and processes), kB.
    pub page_tables_kb: u64,
    /// Captured 4 KiB pages backed by host pages (`host.captured_phys`).
    pub captured_4k: u64,
    /// Captured 2 MiB pages backed by host 2 MiB blocks (`host.captured_phys`).
    pub captured_2m: u64,
}

/// Where the cycles went, summed over agents.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CycleCounts {
    /// Non-memory work (base CPI).
    pub base: u64,
    /// The accesses' own loads and stores through the data caches (`[cache]`).
    pub data: u64,
    /// TLB lookups.
    pub tlb: u64,
    /// Page-walk memory references.
    pub walk: u64,
    /// RMP entry reads by checks.
    pub rmp_check: u64,
    /// RMP instructions (RMPUPDATE, PSMASH, …).
    pub rmp_instr: u64,
    /// Faults.
    pub fault: u64,
    /// Invalidations, flushes and shootdowns.
    pub invalidation: u64,
    /// Host policy work (CPA splits).
    pub policy: u64,
    /// KVM and VMM work: guest exits, fault-in, page-state changes.
    pub kvm: u64,
    /// Devices' DMA: IOMMU translation, RMP checks of DMA, the data accesses (on the devices'
    /// own clocks).
    #[serde(default)]
    pub iommu: u64,
    /// The TDX module: SEAMCALLs, TDCALLs, TD entries and exits, S-EPT references.
    #[serde(default)]
    pub tdx: u64,
    /// The sum.
    pub total: u64,
    /// Highest agent clock at the end: the run's makespan.
    pub makespan: u64,
}

/// Ratios derived from the counters, for comparing runs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Derived {
    /// DTLB misses per 1000 accesses.
    pub dtlb_mpka: f64,
    /// Host-kernel TLB misses per 1000 host-kernel accesses.
    pub kernel_dtlb_mpka: f64,
    /// Cycles per access (total cycles / accesses).
    pub cycles_per_access: f64,
}

/// One run's report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// ccsim version that produced it.
    pub ccsim: String,
    /// Input.
    pub input: InputInfo,
    /// Preset and the settings that matter most for comparison.
    pub machine: BTreeMap<String, String>,
    /// Records processed (events, settings, state, expectations).
    pub records: u64,
    /// Events executed.
    pub events: u64,
    /// Accesses.
    pub accesses: AccessCounts,
    /// DTLB.
    pub dtlb: TlbCounts,
    /// Walks.
    pub walks: WalkCounts,
    /// Guest translation.
    pub guest: GuestCounts,
    /// RMP.
    pub rmp: RmpCounts,
    /// Faults.
    pub faults: FaultCounts,
    /// KVM and the VMM.
    pub kvm: crate::machine::KvmCounts,
    /// VSM protection changes, per-VTL stage 2 and accesses (issue #9).
    #[serde(default)]
    pub vsm: crate::machine::VsmCounts,
    /// What the physmap policy's hooks did.
    pub policy: crate::machine::PolicyCounts,
    /// The IOMMU: translations, IOTLB hits by size and misses, entry fetches, references, RMP
    /// checks, blocked DMAs, events by name, commands by name.
    #[serde(default)]
    pub iommu: mmu_model::IommuStats,
    /// The TDX module: SEAMCALLs by leaf and status, ACCEPTs by status, private accesses.
    #[serde(default)]
    pub tdx: crate::machine::TdxCounts,
    /// Direct map.
    pub directmap: DirectMapCounts,
    /// Shootdowns.
    pub shootdowns: ShootdownCounts,
    /// Host memory.
    pub memory: MemoryCounts,
    /// Cycles.
    pub cycles: CycleCounts,
    /// Derived ratios.
    pub derived: Derived,
    /// Events present in the input whose semantics the model does not implement yet, by keyword
    /// (executed as no-ops, never silently: they are listed here).
    pub not_modelled: BTreeMap<String, u64>,
}

impl Report {
    /// The JSON value of one top-level section (`faults`, `directmap`, …) as it appears in
    /// [`Report::to_json`], without serializing the others (an `expect … counter` names one
    /// counter; the race explorer checks one per schedule).
    pub fn section(&self, name: &str) -> Option<serde_json::Value> {
        use serde_json::to_value as v;
        match name {
            "ccsim" => v(&self.ccsim),
            "input" => v(&self.input),
            "machine" => v(&self.machine),
            "records" => v(self.records),
            "events" => v(self.events),
            "accesses" => v(self.accesses),
            "dtlb" => v(self.dtlb),
            "walks" => v(self.walks),
            "guest" => v(self.guest),
            "rmp" => v(&self.rmp),
            "faults" => v(&self.faults),
            "kvm" => v(&self.kvm),
            "vsm" => v(&self.vsm),
            "policy" => v(&self.policy),
            "iommu" => v(&self.iommu),
            "tdx" => v(&self.tdx),
            "directmap" => v(&self.directmap),
            "shootdowns" => v(self.shootdowns),
            "memory" => v(self.memory),
            "cycles" => v(self.cycles),
            "derived" => v(self.derived),
            "not_modelled" => v(&self.not_modelled),
            _ => return None,
        }
        .ok()
    }

    /// Pretty JSON with a trailing newline.
    ///
    /// # Errors
    /// Serialization failure (not expected for this type).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    /// CSV: a header row of dotted names and one row of values. The DirectMap series is left
    /// out (it is a list); everything else is a column.
    ///
    /// # Errors
    /// Serialization failure.
    pub fn to_csv(&self) -> Result<String, serde_json::Error> {
        let v = serde_json::to_value(self)?;
        let mut cols = Vec::new();
        flatten("", &v, &mut cols);
        let mut out = String::new();
        out.push_str(&cols.iter().map(|(k, _)| csv_field(k)).collect::<Vec<_>>().join(","));
        out.push('\n');
        out.push_str(&cols.iter().map(|(_, v)| csv_field(v)).collect::<Vec<_>>().join(","));
        out.push('\n');
        Ok(out)
    }

    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let mut o = String::new();
        let i = &self.input;
        let _ = writeln!(o, "ccsim {} — {} {} (seed {})", self.ccsim, i.kind, i.name, i.seed);
        for (k, v) in &self.machine {
            let _ = writeln!(o, "  {k:<24} {v}");
        }
        let a = &self.accesses;
        let _ = writeln!(o, "\nEvents {:>14}   accesses {:>14}", self.events, a.total());
        let _ = writeln!(
            o,
            "  loads {:>12}  stores {:>12}  fetches {:>12}  dma {:>10}",
            a.loads,
            a.stores,
            a.fetches,
            a.dma_reads + a.dma_writes
        );
        let _ = writeln!(o, "\nDTLB            {:>12} {:>12} {:>12}", "4K", "2M", "1G");
        row(&mut o, "  hits", &self.dtlb.hits);
        row(&mut o, "  misses", &self.dtlb.misses);
        row(&mut o, "  evictions", &self.dtlb.evictions);
        let _ = writeln!(
            o,
            "  misses/1k accesses {:.3}   flushes {}   entries invalidated {}",
            self.derived.dtlb_mpka, self.dtlb.flushes, self.dtlb.invalidated
        );
        let w = &self.walks;
        let _ = writeln!(
            o,
            "\nWalks {:>12}   references {:>12}   A/D writes {:>10}",
            w.walks, w.refs, w.ad_writes
        );
        let g = &self.guest;
        if g.accesses > 0 {
            let _ = writeln!(
                o,
                "\nGuest accesses {}   TLB hits {}   2-D walks {}   GPA walks {}   references {} (guest {}, nested {}, A/D writes {})",
                g.accesses,
                g.tlb_hits,
                g.walks_2d,
                g.gpa_walks,
                g.refs,
                g.guest_refs,
                g.nested_refs,
                g.ad_writes
            );
        }
        let r = &self.rmp;
        let _ = writeln!(
            o,
            "\nRMP checks {:>12}   guest checks {:>12}   entry reads {:>12}   update flushes {}",
            r.checks, r.guest_checks, r.entry_reads, r.update_flushes
        );
        map_line(&mut o, "  violations", &r.violations);
        map_line(&mut o, "  rmpupdate", &r.updates);
        map_line(&mut o, "  psmash", &r.psmash);
        map_line(&mut o, "  pvalidate", &r.pvalidate);
        map_line(&mut o, "  rmpadjust", &r.rmpadjust);
        let io = &self.iommu;
        if io.translations > 0 || !io.commands.is_empty() {
            let _ = writeln!(
                o,
                "\nIOMMU translations {}   IOTLB hits 4K {} 2M {} 1G {}   misses {}   entry fetches {}   references {}   RMP checks {}   blocked {}   I/O table pages {}",
                io.translations,
                io.iotlb_hits[PageSize::K4],
                io.iotlb_hits[PageSize::M2],
                io.iotlb_hits[PageSize::G1],
                io.iotlb_misses,
                io.entry_fetches,
                io.refs,
                io.checks,
                io.blocked,
                io.table_pages
            );
            map_line(&mut o, "  events", &io.events);
            map_line(&mut o, "  commands", &io.commands);
        }
        let t = &self.tdx;
        if t != &crate::machine::TdxCounts::default() {
            let _ = writeln!(
                o,
                "\nTDX SEAMCALLs {}   private accesses {}   faulted {}",
                t.seamcalls.values().sum::<u64>(),
                t.private_accesses,
                t.private_faults
            );
            map_line(&mut o, "  by leaf", &t.seamcalls);
            map_line(&mut o, "  by status", &t.status);
            map_line(&mut o, "  accept", &t.accepts);
            let h = &t.host_side;
            let _ = writeln!(
                o,
                "  host side: CPU writes {} reads {}   DMA writes {} reads {}   poisoned lines {}   machine checks {}",
                h.cpu_writes,
                h.cpu_reads,
                h.dma_writes,
                h.dma_reads,
                h.poisoned_lines,
                h.machine_checks
            );
            let k = &t.kvm;
            if k != &crate::machine::KvmTdxCounts::default() {
                let _ = writeln!(
                    o,
                    "  KVM: faults {} (retries {})   frozen SPTEs {}   SEPT.ADD {}   AUG 4K {} 2M {}   zaps {}   BUSY {} (no-vCPU retries {})   MapGPA {} ({} chunks)   KVM_BUG_ON {}",
                    k.faults,
                    k.fault_retries,
                    k.frozen,
                    k.sept_adds,
                    k.augs_4k,
                    k.augs_2m,
                    k.zaps,
                    k.busy,
                    k.no_vcpu_retries,
                    k.map_gpa,
                    k.map_gpa_chunks,
                    k.bugs
                );
            }
        }
        let k = &self.kvm;
        if k != &crate::machine::KvmCounts::default() {
            let _ = writeln!(
                o,
                "\nKVM exits handled {}   fault-ins private {} shared {}   PSC requests {} pages {}   implicit conversions {}",
                k.exits_handled,
                k.private_faultins,
                k.shared_faultins,
                k.psc_requests,
                k.psc_pages,
                k.implicit_conversions
            );
            let _ = writeln!(
                o,
                "  prepare 4K {} 2M {}   invalidate {}   psmash {}   zaps {}   stage-2 2M maps {}   gmem folios allocated {} freed {}",
                k.prepare_4k,
                k.prepare_2m,
                k.invalidate,
                k.psmash,
                k.zaps,
                k.stage2_2m_maps,
                k.gmem_allocs,
                k.gmem_frees
            );
        }
        let v = &self.vsm;
        if v.changes > 0 || !v.by_vtl.is_empty() {
            let _ = writeln!(
                o,
                "\nVSM ({}) changes {}   pages {} (changed {})   cycles per change {:.0}   zaps {}   flushes {}",
                v.design,
                v.changes,
                v.pages,
                v.pages_changed,
                v.cycles_per_change,
                v.zaps,
                v.flushes
            );
            let _ = writeln!(
                o,
                "  memslot ops {} (most slots {})   lpage updates {}   rmpadjust {} (failed {})   fault-ins 4K {} 2M {}   re-promotions {}   mixed 2M regions {}",
                v.memslot_ops,
                v.memslots_max,
                v.lpage_updates,
                v.rmpadjusts,
                v.rmpadjust_failed,
                v.faultins_4k,
                v.faultins_2m,
                v.repromotions,
                v.mixed_regions
            );
            let _ = writeln!(
                o,
                "  stage-2 leaves 4K {} 2M {}",
                v.stage2[PageSize::K4],
                v.stage2[PageSize::M2]
            );
            for (l, c) in &v.by_vtl {
                let _ = writeln!(
                    o,
                    "  VTL{l}: accesses {}   TLB misses {}   denied {}",
                    c.accesses, c.tlb_misses, c.denied
                );
            }
            map_line(&mut o, "  refused", &v.refused);
        }
        let f = &self.faults;
        let _ =
            writeln!(o, "\nFaults raised {}   handled {}   fatal {}", f.raised, f.handled, f.fatal);
        map_line(&mut o, "  by code", &f.by_code);
        let d = &self.directmap;
        let _ = writeln!(o, "\nDirectMap4k: {:>12} kB", d.kb[PageSize::K4]);
        let _ = writeln!(o, "DirectMap2M: {:>12} kB", d.kb[PageSize::M2]);
        let _ = writeln!(o, "DirectMap1G: {:>12} kB", d.kb[PageSize::G1]);
        let _ = writeln!(
            o,
            "  direct_map_level2_splits {}   direct_map_level3_splits {}   direct_map_level2_collapses {}   direct_map_level3_collapses {}",
            d.level2_splits, d.level3_splits, d.level2_collapses, d.level3_collapses
        );
        let _ = writeln!(
            o,
            "  page tables {} kB ({} pages)   not present {}   boot splits {}   boot pool pages {}",
            d.table_kb, d.table_pages, d.not_present, d.boot_splits, d.boot_table_pages
        );
        let p = &d.cpa;
        let _ = writeln!(
            o,
            "  cpa calls {}   2M/1G checked {}/{}  sameprot {}/{}  preserved {}/{}   4K set {}   collapse attempts {}",
            p.calls,
            p.lp_checked[PageSize::M2],
            p.lp_checked[PageSize::G1],
            p.lp_sameprot[PageSize::M2],
            p.lp_sameprot[PageSize::G1],
            p.lp_preserved[PageSize::M2],
            p.lp_preserved[PageSize::G1],
            p.pte_set_checked,
            p.collapse_attempts
        );
        let sd = &self.shootdowns;
        let _ = writeln!(
            o,
            "\nShootdowns {}   IPIs sent {}   target stall cycles {}   initiator cycles {}",
            sd.shootdowns, sd.ipis_sent, sd.target_stall_cycles, sd.initiator_cycles
        );
        let _ = writeln!(
            o,
            "Memory free {} kB   page tables {} kB   captured pages backed 4K {} 2M {}",
            self.memory.free_kb,
            self.memory.page_tables_kb,
            self.memory.captured_4k,
            self.memory.captured_2m
        );
        let c = &self.cycles;
        let _ = writeln!(
            o,
            "\nCycles {:>14}   makespan {:>14}   per access {:.2}",
            c.total, c.makespan, self.derived.cycles_per_access
        );
        let _ = writeln!(
            o,
            "  base {}  data {}  tlb {}  walk {}  rmp-check {}  rmp-instr {}  fault {}  invalidation {}  policy {}  kvm {}  iommu {}  tdx {}",
            c.base,
            c.data,
            c.tlb,
            c.walk,
            c.rmp_check,
            c.rmp_instr,
            c.fault,
            c.invalidation,
            c.policy,
            c.kvm,
            c.iommu,
            c.tdx
        );
        if !self.not_modelled.is_empty() {
            map_line(&mut o, "\nNot modelled yet (executed as no-ops)", &self.not_modelled);
        }
        o
    }
}

fn row(o: &mut String, name: &str, v: &PerSize<u64>) {
    let _ = writeln!(
        o,
        "{name:<16}{:>12} {:>12} {:>12}",
        v[PageSize::K4],
        v[PageSize::M2],
        v[PageSize::G1]
    );
}

fn map_line(o: &mut String, name: &str, m: &BTreeMap<String, u64>) {
    let body = if m.is_empty() {
        "none".to_owned()
    } else {
        m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(o, "{name}: {body}");
}

/// Flatten a JSON value into `(dotted.name, text)` pairs; arrays are skipped.
pub fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Array(_) => {}
        serde_json::Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

/// The leaf [`flatten`] would name `path` (the first in the same order), without building
/// the flattened list: its text as `flatten` writes it.
pub fn leaf<'v>(v: &'v serde_json::Value, path: &str) -> Option<std::borrow::Cow<'v, str>> {
    let serde_json::Value::Object(m) = v else { return None };
    for (k, child) in m {
        let Some(rest) = path.strip_prefix(k.as_str()) else { continue };
        let found = if rest.is_empty() {
            leaf_text(child)
        } else {
            rest.strip_prefix('.').and_then(|rest| leaf(child, rest))
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The text [`flatten`] writes for `v` if it is a leaf (`None` for an object or array).
pub fn leaf_text(v: &serde_json::Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        serde_json::Value::Object(_) | serde_json::Value::Array(_) => None,
        serde_json::Value::String(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        other => Some(std::borrow::Cow::Owned(other.to_string())),
    }
}

/// A CSV field, quoted when it holds a comma, quote or newline.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Report::section` covers every top-level field of the serialized report, with the
    /// same value (a new field without a `section` arm fails here).
    #[test]
    fn sections_cover_the_report() {
        let cfg = crate::engine::ConfigLayers::default().build(&[]).unwrap();
        let m = crate::machine::Machine::new(cfg, &[], false).unwrap();
        let info =
            InputInfo { kind: "file".into(), name: "t".into(), params: BTreeMap::new(), seed: 0 };
        // `Machine::counter` reads every flattened name as the flattened list has it.
        let mut cols = Vec::new();
        flatten("", &serde_json::to_value(m.report(&info)).unwrap(), &mut cols);
        assert!(cols.len() > 50);
        for (k, text) in &cols {
            assert_eq!(m.counter(k, &info), text.parse::<u64>().ok(), "counter {k}");
        }
        let mut r = m.report(&info);
        r.events = 5;
        r.faults.fatal = 2;
        r.not_modelled.insert("x".into(), 1);
        let full = serde_json::to_value(&r).unwrap();
        let serde_json::Value::Object(m) = &full else { panic!("a report is an object") };
        assert!(m.len() > 20);
        for (k, want) in m {
            assert_eq!(r.section(k).as_ref(), Some(want), "section {k}");
        }
        assert_eq!(r.section("nope"), None);
    }

    /// `leaf` finds exactly what `flatten` lists, under the same names, and nothing else.
    #[test]
    fn leaf_agrees_with_flatten() {
        let v = serde_json::json!({
            "a": {"b": 1, "c": "x,y", "d.e": {"f": true}},
            "a.b": 7,
            "s": [1, 2],
            "n": null,
        });
        let mut cols = Vec::new();
        flatten("", &v, &mut cols);
        for (k, text) in &cols {
            let first = cols.iter().find(|(k2, _)| k2 == k).map(|(_, t)| t.as_str());
            assert_eq!(leaf(&v, k).as_deref(), first, "{k} ({text})");
        }
        for absent in ["a", "s", "a.", "a.x", "", "a.d", "a.d.e", "zz"] {
            assert_eq!(leaf(&v, absent), None, "{absent}");
        }
    }

    #[test]
    fn csv_quotes_and_flattens() {
        let v = serde_json::json!({"a": {"b": 1, "c": "x,y"}, "s": [1, 2]});
        let mut cols = Vec::new();
        flatten("", &v, &mut cols);
        assert_eq!(cols, vec![("a.b".into(), "1".into()), ("a.c".into(), "x,y".into())]);
        assert_eq!(csv_field("x,y"), "\"x,y\"");
    }
}
