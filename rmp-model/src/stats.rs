//! RMP counters (STYLE rule 17): plain data keyed by enums; printing lives in the root crate.

use crate::check::RmpViolationCause;
use crate::instr::RmpReturn;
use std::collections::BTreeMap;
use std::ops::Sub;

/// Counters of one RMP since construction. Subtract two snapshots for a phase delta.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RmpStats {
    /// RMPUPDATE executions by return code.
    pub rmpupdate: BTreeMap<RmpReturn, u64>,
    /// PSMASH executions by return code.
    pub psmash: BTreeMap<RmpReturn, u64>,
    /// Host data reads presented to the check stage (never checked, counted for reports).
    pub host_reads_unchecked: u64,
    /// Host data writes checked (Hypervisor-Owned).
    pub host_write_checks: u64,
    /// Host page-table accesses checked (Hypervisor-Owned at 4 KiB).
    pub host_table_checks: u64,
    /// Guest accesses checked (an RMP entry read; APM Table 15-39 guest rows).
    pub guest_checks: u64,
    /// Guest accesses presented to the check stage that no check applies to (reads with C=0,
    /// reads and fetches of non-SNP guests, uncovered pages).
    pub guest_unchecked: u64,
    /// PVALIDATE executions that completed, by return code (faults are counted as violations).
    pub pvalidate: BTreeMap<RmpReturn, u64>,
    /// RMPADJUST executions that completed, by return code.
    pub rmpadjust: BTreeMap<RmpReturn, u64>,
    /// RMP entries read by checks (each priced by the caller's cache-latency model).
    pub entry_reads: u64,
    /// Failed checks by cause.
    pub violations: BTreeMap<RmpViolationCause, u64>,
}

fn sub_map<K: Ord + Copy>(a: &BTreeMap<K, u64>, b: &BTreeMap<K, u64>) -> BTreeMap<K, u64> {
    a.iter()
        .map(|(k, v)| (*k, v.saturating_sub(b.get(k).copied().unwrap_or(0))))
        .filter(|(_, v)| *v != 0)
        .collect()
}

impl Sub for &RmpStats {
    type Output = RmpStats;
    /// `self − earlier`: the counts of the phase in between.
    fn sub(self, earlier: &RmpStats) -> RmpStats {
        RmpStats {
            rmpupdate: sub_map(&self.rmpupdate, &earlier.rmpupdate),
            psmash: sub_map(&self.psmash, &earlier.psmash),
            guest_checks: self.guest_checks.saturating_sub(earlier.guest_checks),
            guest_unchecked: self.guest_unchecked.saturating_sub(earlier.guest_unchecked),
            pvalidate: sub_map(&self.pvalidate, &earlier.pvalidate),
            rmpadjust: sub_map(&self.rmpadjust, &earlier.rmpadjust),
            host_reads_unchecked: self.host_reads_unchecked - earlier.host_reads_unchecked,
            host_write_checks: self.host_write_checks - earlier.host_write_checks,
            host_table_checks: self.host_table_checks - earlier.host_table_checks,
            entry_reads: self.entry_reads - earlier.entry_reads,
            violations: sub_map(&self.violations, &earlier.violations),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_delta() {
        let mut a = RmpStats::default();
        *a.rmpupdate.entry(RmpReturn::Success).or_default() += 2;
        a.entry_reads = 3;
        let mut b = a.clone();
        *b.rmpupdate.entry(RmpReturn::Success).or_default() += 1;
        *b.violations.entry(RmpViolationCause::NotHypervisorOwned).or_default() += 1;
        b.entry_reads = 10;
        let d = &b - &a;
        assert_eq!(d.rmpupdate[&RmpReturn::Success], 1);
        assert_eq!(d.entry_reads, 7);
        assert_eq!(d.violations[&RmpViolationCause::NotHypervisorOwned], 1);
        assert!((&b - &b).violations.is_empty());
    }
}
