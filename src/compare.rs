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
    Metric { name: "TLB shootdowns", get: |r| r.shootdowns.shootdowns as f64, integer: true },
    Metric { name: "cycles", get: |r| r.cycles.total as f64, integer: true },
    Metric { name: "cycles per access", get: |r| r.derived.cycles_per_access, integer: false },
    Metric { name: "makespan (cycles)", get: |r| r.cycles.makespan as f64, integer: true },
];

/// A Markdown table comparing `runs` (label, report); ratios are to the first run.
pub fn table(runs: &[(String, Report)]) -> String {
    let mut o = String::new();
    let Some((base_label, base)) = runs.first() else { return o };
    let _ = writeln!(
        o,
        "Comparison on {} {} (seed {}); ratios to `{base_label}`\n",
        base.input.kind, base.input.name, base.input.seed
    );
    let _ = write!(o, "| metric |");
    for (label, _) in runs {
        let _ = write!(o, " {label} |");
    }
    let _ = write!(o, "\n|---|");
    for _ in runs {
        let _ = write!(o, "---:|");
    }
    o.push('\n');
    for m in METRICS {
        let b = (m.get)(base);
        let _ = write!(o, "| {} |", m.name);
        for (i, (_, r)) in runs.iter().enumerate() {
            let v = (m.get)(r);
            let num = if m.integer { format!("{v:.0}") } else { format!("{v:.2}") };
            let ratio = if i == 0 || b == v {
                String::new()
            } else if b == 0.0 {
                " (new)".to_owned()
            } else {
                format!(" ({:.2}×)", v / b)
            };
            let _ = write!(o, " {num}{ratio} |");
        }
        o.push('\n');
    }
    o
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
