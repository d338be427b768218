//! Comparing runs that differ in one setting (the physmap policy, for `ccsim run --policy
//! a,b,…`): the metrics the study reads, one column per run, each with its ratio to the first
//! run (the baseline).

use crate::report::Report;
use std::fmt::Write;

/// One row of the comparison: a name and how to read it from a report.
struct Metric {
    name: &'static str,
    get: fn(&Report) -> f64,
    /// Print as an integer.
    integer: bool,
}

#[allow(clippy::cast_precision_loss)] // counters far below 2^53
const METRICS: &[Metric] = &[
    Metric {
        name: "RMP violations",
        get: |r| r.rmp.violations.values().sum::<u64>() as f64,
        integer: true,
    },
    Metric {
        name: "faults fatal (host would crash)",
        get: |r| r.faults.fatal as f64,
        integer: true,
    },
    Metric { name: "faults handled", get: |r| r.faults.handled as f64, integer: true },
    Metric { name: "faults raised", get: |r| r.faults.raised as f64, integer: true },
    Metric {
        name: "direct_map_level2_splits",
        get: |r| r.directmap.level2_splits as f64,
        integer: true,
    },
    Metric {
        name: "direct_map_level3_splits",
        get: |r| r.directmap.level3_splits as f64,
        integer: true,
    },
    Metric {
        name: "collapses (2M+1G)",
        get: |r| (r.directmap.level2_collapses + r.directmap.level3_collapses) as f64,
        integer: true,
    },
    Metric {
        name: "DirectMap4k (kB)",
        get: |r| r.directmap.kb[sim_core::PageSize::K4] as f64,
        integer: true,
    },
    Metric {
        name: "DirectMap2M (kB)",
        get: |r| r.directmap.kb[sim_core::PageSize::M2] as f64,
        integer: true,
    },
    Metric {
        name: "DirectMap1G (kB)",
        get: |r| r.directmap.kb[sim_core::PageSize::G1] as f64,
        integer: true,
    },
    Metric {
        name: "direct-map page tables (kB)",
        get: |r| r.directmap.table_kb as f64,
        integer: true,
    },
    Metric {
        name: "kernel dTLB misses / 1k kernel accesses",
        get: |r| r.derived.kernel_dtlb_mpka,
        integer: false,
    },
    Metric { name: "dTLB misses / 1k accesses", get: |r| r.derived.dtlb_mpka, integer: false },
    Metric { name: "walk cycles", get: |r| r.cycles.walk as f64, integer: true },
    Metric { name: "walk references", get: |r| r.walks.refs as f64, integer: true },
    Metric { name: "TLB shootdowns", get: |r| r.shootdowns.shootdowns as f64, integer: true },
    Metric { name: "DMA blocked by the IOMMU", get: |r| r.iommu.blocked as f64, integer: true },
    Metric { name: "IOTLB misses", get: |r| r.iommu.iotlb_misses as f64, integer: true },
    Metric { name: "cycles", get: |r| r.cycles.total as f64, integer: true },
    Metric { name: "cycles per access", get: |r| r.derived.cycles_per_access, integer: false },
    Metric { name: "makespan (cycles)", get: |r| r.cycles.makespan as f64, integer: true },
];

/// Reads one counter of a report.
pub type Counter = fn(&Report) -> u64;

/// Cycle components in report order, for breakdowns: (name, reader).
pub const CYCLE_PARTS: &[(&str, Counter)] = &[
    ("base", |r| r.cycles.base),
    ("data", |r| r.cycles.data),
    ("tlb", |r| r.cycles.tlb),
    ("walk", |r| r.cycles.walk),
    ("rmp_check", |r| r.cycles.rmp_check),
    ("rmp_instr", |r| r.cycles.rmp_instr),
    ("fault", |r| r.cycles.fault),
    ("invalidation", |r| r.cycles.invalidation),
    ("policy", |r| r.cycles.policy),
    ("kvm", |r| r.cycles.kvm),
    ("iommu", |r| r.cycles.iommu),
    ("tdx", |r| r.cycles.tdx),
];

/// dTLB misses of `size` per 1000 accesses.
#[allow(clippy::cast_precision_loss)]
pub fn dtlb_mpka(r: &Report, size: sim_core::PageSize) -> f64 {
    let n = r.accesses.total();
    if n == 0 { 0.0 } else { r.dtlb.misses[size] as f64 * 1000.0 / n as f64 }
}

/// One column of a comparison: a label and the reports averaged in it (seeds).
#[derive(Debug)]
pub struct Column<'a> {
    /// Header.
    pub label: String,
    /// Reports; each metric is their mean.
    pub reports: Vec<&'a Report>,
}

/// A row: its name, whether it prints as an integer, one mean per column.
#[derive(Debug)]
pub struct Row {
    /// Metric name.
    pub name: String,
    /// Print without decimals.
    pub integer: bool,
    /// Mean per column.
    pub values: Vec<f64>,
}

/// The mean of `get` over `reports` (NaN for none).
#[allow(clippy::cast_precision_loss)]
pub fn mean(reports: &[&Report], get: &dyn Fn(&Report) -> f64) -> f64 {
    if reports.is_empty() {
        return f64::NAN;
    }
    reports.iter().map(|r| get(r)).sum::<f64>() / reports.len() as f64
}

/// The rows of a comparison: the fixed metrics, violations by cause (every cause any column
/// has), dTLB misses per 1k accesses by page size, and cycles by component per access.
#[allow(clippy::cast_precision_loss)]
pub fn rows(cols: &[Column]) -> Vec<Row> {
    let row = |name: String, integer: bool, get: &dyn Fn(&Report) -> f64| Row {
        name,
        integer,
        values: cols.iter().map(|c| mean(&c.reports, get)).collect(),
    };
    let mut out = Vec::new();
    for m in METRICS {
        out.push(row(m.name.to_owned(), m.integer, &m.get));
        if m.name == "RMP violations" {
            let causes: std::collections::BTreeSet<&String> = cols
                .iter()
                .flat_map(|c| c.reports.iter().flat_map(|r| r.rmp.violations.keys()))
                .collect();
            for cause in causes {
                out.push(row(format!("  violations: {cause}"), true, &|r: &Report| {
                    r.rmp.violations.get(cause).copied().unwrap_or(0) as f64
                }));
            }
        }
        if m.name == "DMA blocked by the IOMMU" {
            let events: std::collections::BTreeSet<&String> = cols
                .iter()
                .flat_map(|c| c.reports.iter().flat_map(|r| r.iommu.events.keys()))
                .collect();
            for ev in events {
                out.push(row(format!("  IOMMU events: {ev}"), true, &|r: &Report| {
                    r.iommu.events.get(ev).copied().unwrap_or(0) as f64
                }));
            }
        }
        if m.name == "dTLB misses / 1k accesses" {
            for size in sim_core::PageSize::ALL {
                out.push(row(
                    format!("  dTLB misses / 1k accesses, {size} pages"),
                    false,
                    &|r: &Report| dtlb_mpka(r, size),
                ));
            }
        }
        if m.name == "cycles per access" {
            for (part, get) in CYCLE_PARTS {
                out.push(row(format!("  {part} cycles per access"), false, &|r: &Report| {
                    let n = r.accesses.total();
                    if n == 0 { 0.0 } else { get(r) as f64 / n as f64 }
                }));
            }
        }
    }
    out
}

/// A value as a table shows it.
pub fn number(v: f64, integer: bool) -> String {
    if integer { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// ` (1.23×)` against the baseline `b`; nothing for the baseline itself, an equal value or no
/// baseline, ` (new)` where the baseline is zero.
pub fn ratio(v: f64, b: f64, is_baseline: bool) -> String {
    if is_baseline || b == v || b.is_nan() {
        String::new()
    } else if b == 0.0 {
        " (new)".to_owned()
    } else {
        format!(" ({:.2}×)", v / b)
    }
}

/// A Markdown table of `cols`; ratios are to column `baseline`.
pub fn markdown(cols: &[Column], baseline: usize) -> String {
    let mut o = String::new();
    let _ = write!(o, "| metric |");
    for c in cols {
        let _ = write!(o, " {} |", c.label);
    }
    let _ = write!(o, "\n|---|");
    for _ in cols {
        let _ = write!(o, "---:|");
    }
    o.push('\n');
    for r in rows(cols) {
        let b = r.values.get(baseline).copied().unwrap_or(f64::NAN);
        let _ = write!(o, "| {} |", r.name);
        for (i, &v) in r.values.iter().enumerate() {
            if v.is_nan() {
                let _ = write!(o, " – |");
                continue;
            }
            let _ = write!(o, " {}{} |", number(v, r.integer), ratio(v, b, i == baseline));
        }
        o.push('\n');
    }
    o
}

/// A Markdown table comparing `runs` (label, report); ratios are to the first run.
pub fn table(runs: &[(String, Report)]) -> String {
    let Some((base_label, base)) = runs.first() else { return String::new() };
    let cols: Vec<Column> =
        runs.iter().map(|(l, r)| Column { label: l.clone(), reports: vec![r] }).collect();
    format!(
        "Comparison on {} {} (seed {}); ratios to `{base_label}`\n\n{}",
        base.input.kind,
        base.input.name,
        base.input.seed,
        markdown(&cols, 0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ConfigLayers, Input, RunOptions};

    /// The table has one column per run and ratios against the first; a metric equal to the
    /// baseline shows no ratio.
    #[test]
    fn columns_and_ratios() {
        let input = Input::Workload {
            name: "snp-launch".into(),
            params: workloads::Params::parse([
                "guests=1",
                "guest_memory=4M",
                "image=64K",
                "kernel_accesses=2000",
                "kernel_cpus=1",
            ])
            .unwrap(),
        };
        let mut runs = Vec::new();
        for p in ["none", "split-on-assign"] {
            let layers = ConfigLayers {
                preset: Some("tiny".into()),
                sets: vec![format!("host.policy={p}")],
                ..Default::default()
            };
            let out = crate::engine::run(&layers, &input, &RunOptions::default()).unwrap();
            runs.push((p.to_owned(), out.report));
        }
        let t = table(&runs);
        assert!(t.contains("| metric | none | split-on-assign |"), "{t}");
        let splits = t.lines().find(|l| l.starts_with("| direct_map_level2_splits")).unwrap();
        // none splits nothing; split-on-assign splits.
        assert!(splits.contains("| 0 |") && splits.contains("(new)"), "{splits}");
    }
}
