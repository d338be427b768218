//! The RMP check stage for host accesses (spec/snp.md §2.1–§2.4), and the violation causes of
//! every RMP check (host and guest) so that statistics can key on them.

use crate::table::{PAGES_PER_2M, PageSlot, RMP_ENTRY_BYTES, Rmp, entry_spa};
use sim_core::{PageSize, Spa};

/// The named RMP checks that can fail (AMD APM Vol. 2 §15.36.10; spec/snp.md §2.1). Guest-side
/// checks (Table 15-39) arrive in a later issue; the causes are all here so that statistics
/// and reports key on one enum.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum RmpViolationCause {
    /// RMP-Covered: a guest private access to a page with no RMP entry.
    NotCovered,
    /// Hypervisor-Owned: the page (or, through a 2 MiB/1 GiB mapping, some page of its 2 MiB
    /// region) is assigned — to a guest or to the AMD-SP.
    NotHypervisorOwned,
    /// Guest-Owned: the entry's ASID is not the current guest's.
    NotGuestOwned,
    /// Reverse-Map: the entry's GPA is not the GPA the translation produced.
    ReverseMap,
    /// Mutable: the entry is immutable.
    Immutable,
    /// Page-Size: the nested mapping size and the RMP entry size disagree.
    PageSizeMismatch,
    /// Validated: the guest has not validated the page (#VC 0x404).
    NotValidated,
    /// VMPL: the current VMPL's permission mask forbids the access.
    Vmpl,
}

/// What kind of host access is being checked (AMD APM Table 15-39, host row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum HostAccess {
    /// A data read: never RMP-checked for the host (confidentiality comes from encryption).
    DataRead,
    /// A data write (also a write through a read-filled TLB entry being write-checked).
    DataWrite,
    /// A page-table access by the host's walker: a table-entry read, or an A/D-bit update.
    /// Checked Hypervisor-Owned at 4 KiB (A/D updates are always 4 KiB-sized, spec/snp.md §2.2).
    PageTable,
}

/// A failed RMP check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RmpViolation {
    /// The check that failed.
    pub cause: RmpViolationCause,
    /// The address that was being accessed.
    pub spa: Spa,
}

/// The check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RmpCheck {
    /// The access may proceed.
    Ok,
    /// The access violates the RMP; for the host this is #PF with error-code bit 31 (RMP).
    Violation(RmpViolation),
}

/// A check's verdict together with the RMP memory it read, so the caller can price the read
/// through its cache-latency model (DESIGN: "rmp-model reports which memory it read").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmpCheckOutcome {
    /// The verdict.
    pub check: RmpCheck,
    /// SPA of the one RMP entry read (RMP_BASE + 0x4000 + PFN × 16), or `None` when nothing was
    /// read (host reads; pages beyond RMP coverage).
    pub entry_read: Option<Spa>,
}

impl Rmp {
    /// The host RMP check (spec/snp.md §2.1–§2.2), recording statistics.
    /// See [`Rmp::peek_host_access`] for the rules.
    #[inline(always)] // one branch-light path per check after the constants fold
    pub fn check_host_access(
        &mut self,
        spa: Spa,
        mapping: PageSize,
        access: HostAccess,
    ) -> RmpCheckOutcome {
        let out = match access {
            HostAccess::DataWrite => self.check_host_write(spa, mapping),
            HostAccess::DataRead | HostAccess::PageTable => {
                self.peek_host_access(spa, mapping, access)
            }
        };
        let s = &mut self.stats;
        match access {
            HostAccess::DataRead => s.host_reads_unchecked += 1,
            HostAccess::DataWrite => s.host_write_checks += 1,
            HostAccess::PageTable => s.host_table_checks += 1,
        }
        if out.entry_read.is_some() {
            s.entry_reads += 1;
        }
        if let RmpCheck::Violation(v) = out.check {
            self.count_violation(v.cause);
        }
        out
    }

    /// The host checks of a walk's table reads: [`Rmp::check_host_access`] with
    /// [`HostAccess::PageTable`] for each of `tables` in order, stopping at the first violation,
    /// which it returns; each entry read is appended to `reads`. The same verdicts, reads and
    /// statistics as those calls one by one, in one pass: once a table's 2 MiB region is found
    /// wholly covered and without an assigned entry, a table in that region (the tables of a
    /// walk often share one, and the next walks' tables too) needs only its entry's address,
    /// until the next write to the table.
    #[inline] // the common case, every table in the remembered region, into the walk's check
    pub fn check_host_tables(
        &mut self,
        tables: &[Spa],
        reads: &mut Vec<Spa>,
    ) -> Option<RmpViolation> {
        let clean = self.clean_tables;
        for (i, &spa) in tables.iter().enumerate() {
            if spa.raw() >> PageSize::M2.shift() != clean.number {
                // The checks so far passed, each reading one entry: the rest one by one.
                self.stats.host_table_checks += i as u64;
                self.stats.entry_reads += i as u64;
                return self.check_host_tables_one_by_one(&tables[i..], reads);
            }
            reads.push(clean.entry(spa));
        }
        self.stats.host_table_checks += tables.len() as u64;
        self.stats.entry_reads += tables.len() as u64;
        None
    }

    /// [`Rmp::check_host_tables`] from the first table outside the remembered region: each
    /// through the 4 KiB check, remembering the last clean region met.
    #[inline(never)]
    fn check_host_tables_one_by_one(
        &mut self,
        tables: &[Spa],
        reads: &mut Vec<Spa>,
    ) -> Option<RmpViolation> {
        let before = reads.len();
        let mut clean = self.clean_tables;
        let (mut checks, mut failed) = (0u64, None);
        for &spa in tables {
            checks += 1;
            let pa = spa.raw();
            if pa >> PageSize::M2.shift() == clean.number {
                reads.push(clean.entry(spa));
                continue;
            }
            // `peek_host_4k`, remembering a clean region.
            let Some(p) = self.locate_page(spa) else { continue };
            reads.extend(entry_spa(p.entry));
            if let Some(c) = self.clean_region(&p, spa) {
                clean = c;
            } else if self.page_assigned(p.region, spa) {
                failed = Some(RmpViolation { cause: NOT_HV_OWNED, spa });
                break;
            }
        }
        self.clean_tables = clean;
        self.stats.host_table_checks += checks;
        self.stats.entry_reads += (reads.len() - before) as u64;
        if let Some(v) = failed {
            self.count_violation(v.cause);
        }
        failed
    }

    /// A host data write's check ([`Rmp::peek_host_access`]): in the region remembered clean
    /// for writes it passes, reading the page's entry (4 KiB mapping) or the region's aligned
    /// one; elsewhere the 4 KiB or 2 MiB rule, remembering the region if clean.
    #[inline(always)]
    fn check_host_write(&mut self, spa: Spa, mapping: PageSize) -> RmpCheckOutcome {
        let clean = self.clean_writes;
        if spa.raw() >> PageSize::M2.shift() == clean.number {
            let entry = if mapping == PageSize::K4 { clean.entry(spa) } else { clean.first() };
            return RmpCheckOutcome { check: RmpCheck::Ok, entry_read: Some(entry) };
        }
        let Some(p) = self.locate_page(spa) else { return UNREAD };
        if let Some(c) = self.clean_region(&p, spa) {
            self.clean_writes = c;
        }
        match mapping {
            PageSize::K4 => self.host_4k_at(&p, spa),
            PageSize::M2 | PageSize::G1 => self.host_2m_at(&p, spa),
        }
    }

    /// One more failed check of `cause` (kept out of line: the checks' common case passes).
    #[cold]
    #[inline(never)]
    fn count_violation(&mut self, cause: RmpViolationCause) {
        *self.stats.violations.entry(cause).or_default() += 1;
    }

    /// The host RMP check, functional (no statistics, no side effects).
    ///
    /// Rules:
    /// - Data reads are never checked: `Ok`, nothing read.
    /// - Writes and page-table accesses get the Hypervisor-Owned check. A page beyond RMP
    ///   coverage is hypervisor-owned: `Ok`, nothing read.
    /// - Through a 4 KiB mapping (and for every page-table access): the page's authoritative
    ///   entry must be unassigned; firmware pages (Assigned = 1, ASID = 0, Immutable = 1) fail
    ///   as well. One entry read: the page's own entry.
    /// - Through a 2 MiB mapping: all 512 entries of the 2 MiB region must be unassigned. A
    ///   1 GiB mapping is checked as the 2 MiB sub-region that contains `spa` (APM §15.36.10).
    ///   Modelled as **one** read of the region's 2 MiB-aligned entry, the model suggestion of
    ///   spec/snp.md §2.4 (hardware is said to verify a 2 MiB TLB fill from the aligned entry;
    ///   the summary mechanism is UNCONFIRMED). The decision itself is exact: any assigned
    ///   4 KiB entry in the region (or an assigned 2 MiB entry) fails.
    #[inline(always)]
    pub fn peek_host_access(
        &self,
        spa: Spa,
        mapping: PageSize,
        access: HostAccess,
    ) -> RmpCheckOutcome {
        match (access, mapping) {
            (HostAccess::DataRead, _) => UNREAD,
            (HostAccess::PageTable, _) | (HostAccess::DataWrite, PageSize::K4) => {
                self.peek_host_4k(spa)
            }
            (HostAccess::DataWrite, PageSize::M2 | PageSize::G1) => self.peek_host_2m(spa),
        }
    }

    /// The Hypervisor-Owned check at 4 KiB: the page's authoritative entry, read at the page's
    /// own entry. Small enough to inline into the walk's checks.
    #[inline(always)]
    fn peek_host_4k(&self, spa: Spa) -> RmpCheckOutcome {
        // One lookup serves the coverage test, the region and the entry's address.
        let Some(p) = self.locate_page(spa) else { return UNREAD };
        self.host_4k_at(&p, spa)
    }

    /// [`Rmp::peek_host_4k`] for a page located at `p`.
    #[inline(always)]
    fn host_4k_at(&self, p: &PageSlot, spa: Spa) -> RmpCheckOutcome {
        host_outcome(self.page_assigned(p.region, spa), spa, entry_spa(p.entry))
    }

    /// The Hypervisor-Owned check through a 2 MiB or 1 GiB mapping: the 2 MiB region holding
    /// `spa`, read at its aligned entry (a segment is at least 1 GiB, so the region lies in
    /// `spa`'s segment).
    fn peek_host_2m(&self, spa: Spa) -> RmpCheckOutcome {
        let Some(p) = self.locate_page(spa) else { return UNREAD };
        self.host_2m_at(&p, spa)
    }

    /// [`Rmp::peek_host_2m`] for a page located at `p`.
    #[inline]
    fn host_2m_at(&self, p: &PageSlot, spa: Spa) -> RmpCheckOutcome {
        let page = spa.raw() >> PageSize::K4.shift() & (PAGES_PER_2M - 1);
        let aligned = entry_spa(p.entry - page * RMP_ENTRY_BYTES);
        host_outcome(self.region_assigned(p.region), spa, aligned)
    }
}

/// A host check's outcome: `NotHypervisorOwned` if `assigned`, with the entry read.
#[inline]
fn host_outcome(assigned: bool, spa: Spa, entry_read: Option<Spa>) -> RmpCheckOutcome {
    let check = if assigned {
        RmpCheck::Violation(RmpViolation { cause: NOT_HV_OWNED, spa })
    } else {
        RmpCheck::Ok
    };
    RmpCheckOutcome { check, entry_read }
}

/// The one cause a host check can fail with.
const NOT_HV_OWNED: RmpViolationCause = RmpViolationCause::NotHypervisorOwned;

/// A host check that reads nothing and passes: data reads, pages beyond coverage.
const UNREAD: RmpCheckOutcome = RmpCheckOutcome { check: RmpCheck::Ok, entry_read: None };

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{RmpEntry, RmpPageSize};
    use crate::instr::{Executor, RmpUpdateInput};
    use crate::table::RmpLayout;
    use proptest::prelude::*;
    use sim_core::Gpa;

    const RMP_BASE: u64 = 0x10_0000;
    const R0: u64 = 0x1_0000_0000;

    /// spec/snp.md §6 initial state shared by S1, S2, S4: RMP[0x100010] assigned to ASID 5.
    fn s1_rmp() -> Rmp {
        let mut r = Rmp::new(RmpLayout::covering(Spa::new(RMP_BASE), 8 << 30).unwrap());
        let e = RmpEntry {
            assigned: true,
            asid: 5,
            gpa: Gpa::new(0x8000_0000),
            validated: true,
            ..RmpEntry::ZERO
        };
        r.set_entry(Spa::new(0x1_0001_0000), &e).unwrap();
        r
    }

    fn entry_addr(spa: u64) -> Option<Spa> {
        Some(Spa::new(RMP_BASE + 0x4000 + (spa >> 12) * 16))
    }

    #[test]
    fn s1_write_through_2m_with_assigned_neighbour() {
        let mut r = s1_rmp();
        let target = Spa::new(0x1_0000_5000);
        let out = r.check_host_access(target, PageSize::M2, HostAccess::DataWrite);
        assert_eq!(
            out.check,
            RmpCheck::Violation(RmpViolation {
                cause: RmpViolationCause::NotHypervisorOwned,
                spa: target
            })
        );
        // One read, of the 2M-aligned entry.
        assert_eq!(out.entry_read, entry_addr(R0));
        assert_eq!(r.stats().violations[&RmpViolationCause::NotHypervisorOwned], 1);
        assert_eq!(r.stats().entry_reads, 1);
        // A 1G mapping is checked as the 2M sub-region holding the target.
        let g = r.peek_host_access(target, PageSize::G1, HostAccess::DataWrite);
        assert!(matches!(g.check, RmpCheck::Violation(_)));
        assert_eq!(g.entry_read, entry_addr(R0));
        let other =
            r.peek_host_access(Spa::new(R0 + (2 << 20)), PageSize::G1, HostAccess::DataWrite);
        assert_eq!(other.check, RmpCheck::Ok);
    }

    #[test]
    fn s2_reads_are_never_checked() {
        let mut r = s1_rmp();
        for size in PageSize::ALL {
            for spa in [0x1_0000_5000, 0x1_0001_0000] {
                let out = r.check_host_access(Spa::new(spa), size, HostAccess::DataRead);
                assert_eq!(out, RmpCheckOutcome { check: RmpCheck::Ok, entry_read: None });
            }
        }
        assert!(r.stats().violations.is_empty());
        assert_eq!(r.stats().host_reads_unchecked, 6);
    }

    #[test]
    fn s4_4k_mapping() {
        let r = s1_rmp();
        let a = r.peek_host_access(Spa::new(0x1_0000_5000), PageSize::K4, HostAccess::DataWrite);
        assert_eq!(a.check, RmpCheck::Ok);
        assert_eq!(a.entry_read, entry_addr(0x1_0000_5000));
        let b = r.peek_host_access(Spa::new(0x1_0001_0008), PageSize::K4, HostAccess::DataWrite);
        assert!(
            matches!(b.check, RmpCheck::Violation(v) if v.cause == RmpViolationCause::NotHypervisorOwned)
        );
        assert_eq!(b.entry_read, entry_addr(0x1_0001_0000));
    }

    #[test]
    fn page_table_accesses_checked_at_4k() {
        let r = s1_rmp();
        let ok = r.peek_host_access(Spa::new(0x1_0000_5000), PageSize::G1, HostAccess::PageTable);
        assert_eq!(ok.check, RmpCheck::Ok);
        let bad = r.peek_host_access(Spa::new(0x1_0001_0ff8), PageSize::M2, HostAccess::PageTable);
        assert!(matches!(bad.check, RmpCheck::Violation(_)));
    }

    /// `check_host_tables` against `check_host_access` one table at a time: the same
    /// violation, entry reads and statistics, for tables in clean regions (remembered), in a
    /// region with an assigned page, on a firmware page (stopping there), in an assigned 2 MiB
    /// region, in a partly covered region and beyond coverage.
    #[test]
    fn table_checks_in_one_pass_match_one_by_one() {
        let mut full = s1_rmp();
        let fw = RmpUpdateInput::private(Gpa::ZERO, RmpPageSize::K4, 0, true);
        assert_eq!(full.rmpupdate(Executor::Hypervisor, Spa::new(0x2000), &fw).code(), 0);
        let big = RmpUpdateInput::private(Gpa::new(0x4000_0000), RmpPageSize::M2, 3, false);
        assert_eq!(full.rmpupdate(Executor::Hypervisor, Spa::new(0x40_0000), &big).code(), 0);
        // Coverage ends three pages into the second 2 MiB region.
        let partial =
            Rmp::new(RmpLayout::covering(Spa::new(RMP_BASE), (2 << 20) + 0x3000).unwrap());
        let lists: [(&Rmp, &[u64]); 8] = [
            (&full, &[0x1_0000_0000, 0x1_0000_1008, 0x1_0000_2ff8, 0x1_0000_f000]),
            (&full, &[0x1_0000_0000, 0x1_0001_0ff8, 0x1_0000_2000]),
            (&full, &[0x8000, 0x9ff8, 0xa000, 0x1ff000]),
            (&full, &[0x5000, 0x2008, 0x3000]),
            (&full, &[0x41_2000, 0x41_3000]),
            (&full, &[0x60_0000, 0x40_0000, 0x60_1000]),
            (&partial, &[0x20_1000, 0x20_2ff8, 0x20_3000, 0x20_4000, 0x1000]),
            (&full, &[9 << 30, (9 << 30) + 0x1000, 0x1000]),
        ];
        let mut violations = 0;
        for (rmp, list) in lists {
            let spas: Vec<Spa> = list.iter().map(|&a| Spa::new(a)).collect();
            let (mut one_pass, mut one_by_one) = (rmp.clone(), rmp.clone());
            let mut reads = Vec::new();
            let got = one_pass.check_host_tables(&spas, &mut reads);
            let (mut want_reads, mut want) = (Vec::new(), None);
            for &spa in &spas {
                let out = one_by_one.check_host_access(spa, PageSize::K4, HostAccess::PageTable);
                want_reads.extend(out.entry_read);
                if let RmpCheck::Violation(v) = out.check {
                    want = Some(v);
                    break;
                }
            }
            assert_eq!((got, &reads), (want, &want_reads), "{list:x?}");
            assert_eq!(one_pass.stats(), one_by_one.stats(), "{list:x?}");
            violations += usize::from(got.is_some());
        }
        assert_eq!(violations, 4);
    }

    /// One step of [`remembered_regions_change_no_answer`].
    #[derive(Clone, Debug)]
    enum Step {
        /// RMPUPDATE of one page: 4 KiB private to ASID 1 (`assign`) or shared.
        Update4k { page: u64, assign: bool },
        /// RMPUPDATE of a region's aligned page to a 2 MiB private entry.
        Update2m { region: u64 },
        /// A walk's table checks.
        Tables(Vec<u64>),
        /// A host data write through a mapping of the given size.
        Write { page: u64, size: PageSize },
    }

    /// Five regions, coverage ending three pages into the fifth; pages anywhere in them and one
    /// beyond coverage.
    fn page() -> impl Strategy<Value = u64> {
        prop_oneof![
            (0u64..5, prop_oneof![Just(0u64), Just(1), Just(511), 0u64..512])
                .prop_map(|(r, p)| (r << 21) + (p << 12)),
            Just(64 << 20),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        let size = prop_oneof![Just(PageSize::K4), Just(PageSize::M2), Just(PageSize::G1)];
        prop_oneof![
            2 => (page(), any::<bool>()).prop_map(|(page, assign)| Step::Update4k { page, assign }),
            1 => (0u64..5).prop_map(|region| Step::Update2m { region }),
            4 => proptest::collection::vec(page(), 1..6).prop_map(Step::Tables),
            4 => (page(), size).prop_map(|(page, size)| Step::Write { page, size }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The regions remembered clean across calls change no answer: host checks interleaved
        /// with RMP updates give the same verdicts, reads and statistics as on a copy that
        /// forgets them before every check.
        #[test]
        fn remembered_regions_change_no_answer(
            steps in proptest::collection::vec(step(), 1..120),
        ) {
            let layout = RmpLayout::covering(Spa::new(RMP_BASE), (8 << 20) + 0x3000).unwrap();
            let (mut rmp, mut fresh) = (Rmp::new(layout.clone()), Rmp::new(layout));
            let hv = Executor::Hypervisor;
            for step in steps {
                match step {
                    Step::Update4k { page, assign } => {
                        let input = if assign {
                            RmpUpdateInput::private(Gpa::new(page), RmpPageSize::K4, 1, false)
                        } else {
                            RmpUpdateInput::shared(RmpPageSize::K4)
                        };
                        let got = rmp.rmpupdate(hv, Spa::new(page), &input);
                        prop_assert_eq!(got, fresh.rmpupdate(hv, Spa::new(page), &input));
                    }
                    Step::Update2m { region } => {
                        let input =
                            RmpUpdateInput::private(Gpa::ZERO, RmpPageSize::M2, 2, false);
                        let spa = Spa::new(region << 21);
                        prop_assert_eq!(rmp.rmpupdate(hv, spa, &input), fresh.rmpupdate(hv, spa, &input));
                    }
                    Step::Tables(pages) => {
                        let spas: Vec<Spa> = pages.iter().map(|&p| Spa::new(p + 8)).collect();
                        let (mut got, mut want) = (Vec::new(), Vec::new());
                        fresh.forget_clean();
                        let v = rmp.check_host_tables(&spas, &mut got);
                        prop_assert_eq!(v, fresh.check_host_tables(&spas, &mut want));
                        prop_assert_eq!(got, want);
                    }
                    Step::Write { page, size } => {
                        let spa = Spa::new(page + 0x10);
                        fresh.forget_clean();
                        let got = rmp.check_host_access(spa, size, HostAccess::DataWrite);
                        let want = fresh.check_host_access(spa, size, HostAccess::DataWrite);
                        prop_assert_eq!(got, want);
                        prop_assert_eq!(got, rmp.peek_host_access(spa, size, HostAccess::DataWrite));
                    }
                }
                prop_assert_eq!(rmp.stats(), fresh.stats());
            }
        }
    }

    #[test]
    fn firmware_pages_and_2m_entries_and_coverage() {
        let mut r = s1_rmp();
        let fw = RmpUpdateInput::private(Gpa::ZERO, RmpPageSize::K4, 0, true);
        assert_eq!(r.rmpupdate(Executor::Hypervisor, Spa::new(0x2000), &fw).code(), 0);
        let out = r.peek_host_access(Spa::new(0x2010), PageSize::K4, HostAccess::DataWrite);
        assert!(matches!(out.check, RmpCheck::Violation(_)));
        // A 4K write to any page of an assigned 2M entry fails via the authoritative entry.
        let big = RmpUpdateInput::private(Gpa::new(0x4000_0000), RmpPageSize::M2, 3, false);
        assert_eq!(r.rmpupdate(Executor::Hypervisor, Spa::new(0x40_0000), &big).code(), 0);
        let w = r.peek_host_access(Spa::new(0x41_2000), PageSize::K4, HostAccess::DataWrite);
        assert!(matches!(w.check, RmpCheck::Violation(_)));
        assert_eq!(w.entry_read, entry_addr(0x41_2000));
        // Beyond coverage: hypervisor-owned, nothing read.
        let far = r.peek_host_access(Spa::new(9 << 30), PageSize::M2, HostAccess::DataWrite);
        assert_eq!(far, RmpCheckOutcome { check: RmpCheck::Ok, entry_read: None });
    }
}
