//! RMPUPDATE and PSMASH as values: inputs in, an architectural return code out
//! (spec/snp.md §3.1–§3.3).

use crate::entry::{GPA_LIMIT, MAX_ASID, RawRmpEntry, RmpEntry, RmpPageSize, VMPL_ON_UPDATE};
use crate::table::{PAGES_PER_2M, Rmp};
use sim_core::{Gpa, PageSize, Spa};
use std::fmt;

/// The return code an SNP instruction leaves in RAX (spec/snp.md §3.1; Microsoft intrinsic
/// pages; Linux `arch/x86/include/asm/sev.h`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum RmpReturn {
    /// 0: the instruction did what was asked.
    Success,
    /// 1: bad input (misaligned 2 MiB request, page not covered, field out of range).
    FailInput,
    /// 2: executed in a guest (ASID ≠ 0), or the entry is immutable.
    FailPermission,
    /// 3: the entry is in use (another CPU is modifying it, or VMRUN marked it).
    FailInuse,
    /// 4: overlapping 4 KiB and 2 MiB entries detected (RMPUPDATE only).
    FailOverlap,
    /// 6: requested 2 MiB where the RMP has 4 KiB entries (PVALIDATE, RMPADJUST).
    FailSizeMismatch,
    /// 7: the page cannot be expanded, e.g. it is already 4 KiB (PSMASH).
    FailBadAddr,
}

impl RmpReturn {
    /// The numeric code.
    pub const fn code(self) -> u32 {
        match self {
            RmpReturn::Success => 0,
            RmpReturn::FailInput => 1,
            RmpReturn::FailPermission => 2,
            RmpReturn::FailInuse => 3,
            RmpReturn::FailOverlap => 4,
            RmpReturn::FailSizeMismatch => 6,
            RmpReturn::FailBadAddr => 7,
        }
    }

    /// The code's name as the manuals spell it (`SUCCESS`, `FAIL_INPUT`, …).
    pub const fn name(self) -> &'static str {
        match self {
            RmpReturn::Success => "SUCCESS",
            RmpReturn::FailInput => "FAIL_INPUT",
            RmpReturn::FailPermission => "FAIL_PERMISSION",
            RmpReturn::FailInuse => "FAIL_INUSE",
            RmpReturn::FailOverlap => "FAIL_OVERLAP",
            RmpReturn::FailSizeMismatch => "FAIL_SIZEMISMATCH",
            RmpReturn::FailBadAddr => "FAIL_BADADDR",
        }
    }
}

impl fmt::Display for RmpReturn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

/// Who executes an RMP instruction: the hypervisor (ASID 0) or code in a guest (ASID ≠ 0),
/// which gets FAIL_PERMISSION from RMPUPDATE and PSMASH (spec/snp.md §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    /// The host (ASID 0).
    Hypervisor,
    /// A guest with this ASID.
    Guest {
        /// The current ASID.
        asid: u16,
    },
}

/// The new state RMPUPDATE writes (RCX points at it; spec/snp.md §3.2): the fields software may
/// set. Validated, VMSA and the VMPL masks are not inputs: RMPUPDATE derives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmpUpdateInput {
    /// The new Assigned bit.
    pub assigned: bool,
    /// The new page size; 2 MiB requires a 2 MiB-aligned SPA.
    pub page_size: RmpPageSize,
    /// The new Immutable bit.
    pub immutable: bool,
    /// The new ASID (0 when unassigned).
    pub asid: u16,
    /// The new GPA (aligned to `page_size`).
    pub gpa: Gpa,
}

impl RmpUpdateInput {
    /// What Linux `rmp_make_shared(pfn, level)` writes: all zero apart from the page size
    /// (spec/snp.md §3.2).
    pub const fn shared(page_size: RmpPageSize) -> RmpUpdateInput {
        RmpUpdateInput { assigned: false, page_size, immutable: false, asid: 0, gpa: Gpa::ZERO }
    }

    /// What Linux `rmp_make_private(pfn, gpa, level, asid, immutable)` writes.
    pub const fn private(
        gpa: Gpa,
        page_size: RmpPageSize,
        asid: u16,
        immutable: bool,
    ) -> RmpUpdateInput {
        RmpUpdateInput { assigned: true, page_size, immutable, asid, gpa }
    }
}

impl Rmp {
    /// RMPUPDATE: write one entry (spec/snp.md §3.1, §3.2).
    ///
    /// Checks, in this order (the order among failure codes is a model choice; the manuals
    /// give no priority):
    /// 1. `FAIL_PERMISSION` if executed in a guest.
    /// 2. `FAIL_INPUT` if `spa` is not 4 KiB-aligned, not covered; a 2 MiB request on a
    ///    non-2 MiB-aligned SPA or a region not fully covered; ASID above the 10-bit field;
    ///    ASID ≠ 0 with Assigned = 0; GPA not aligned to the page size or beyond the 51-bit GPA
    ///    field.
    /// 3. `FAIL_PERMISSION` if the page's stored or authoritative entry is immutable.
    /// 4. `FAIL_INUSE` if the target entry carries the hidden in-use flag.
    /// 5. `FAIL_OVERLAP` — **the exact trigger is UNCONFIRMED** (spec/snp.md §3.2, "4K/2M
    ///    overlap detected"); [`crate::OverlapRule`] chooses between the readings, by default
    ///    both of these:
    ///    - a 2 MiB update (either Assigned value) while any *other* page of the region has an
    ///      assigned stored entry; or
    ///    - a 4 KiB update of a non-aligned page inside a region whose aligned entry is an
    ///      *assigned* 2 MiB entry (KVM always PSMASHes first).
    ///
    ///    An unassigned 2 MiB entry (left by `rmp_make_shared(pfn, 2M)`) does not block 4 KiB
    ///    updates inside its region; an update of the aligned page itself may change its size.
    ///
    /// On success, if Assigned, Page_Size, ASID or GPA changes, Validated and VMSA are cleared
    /// and the VMPL masks reset to VMPL0 full, VMPL1–3 none (§3.2); otherwise they are kept.
    pub fn rmpupdate(&mut self, by: Executor, spa: Spa, input: &RmpUpdateInput) -> RmpReturn {
        let rc = self.rmpupdate_inner(by, spa, input);
        *self.stats.rmpupdate.entry(rc).or_default() += 1;
        rc
    }

    fn rmpupdate_inner(&mut self, by: Executor, spa: Spa, input: &RmpUpdateInput) -> RmpReturn {
        match by {
            Executor::Hypervisor => {}
            Executor::Guest { .. } => return RmpReturn::FailPermission,
        }
        let size = input.page_size.page_size();
        let input_ok = spa.is_aligned(PageSize::K4)
            && self.layout().is_covered(spa)
            && match input.page_size {
                RmpPageSize::K4 => true,
                RmpPageSize::M2 => spa.is_aligned(PageSize::M2) && self.region_covered(spa),
            }
            && input.asid <= MAX_ASID
            && (input.assigned || input.asid == 0)
            && input.gpa.is_aligned(size)
            && input.gpa.raw() < GPA_LIMIT;
        if !input_ok {
            return RmpReturn::FailInput;
        }
        let cur = self.stored_entry(spa);
        if cur.immutable || self.entry(spa).immutable {
            return RmpReturn::FailPermission;
        }
        if self.in_use(spa) {
            return RmpReturn::FailInuse;
        }
        let base = spa.align_down(PageSize::M2);
        let overlap = match input.page_size {
            RmpPageSize::M2 => self.assigned_in_region(spa) > u16::from(cur.assigned),
            RmpPageSize::K4 if self.overlap_rule == crate::OverlapRule::TwoMegOnly => false,
            RmpPageSize::K4 => {
                let b = self.stored_entry(base);
                spa != base && b.assigned && b.page_size == RmpPageSize::M2
            }
        };
        if overlap {
            return RmpReturn::FailOverlap;
        }
        let changed = cur.assigned != input.assigned
            || cur.page_size != input.page_size
            || cur.asid != input.asid
            || cur.gpa != input.gpa;
        let new = RmpEntry {
            assigned: input.assigned,
            page_size: input.page_size,
            immutable: input.immutable,
            gpa: input.gpa,
            asid: input.asid,
            vmsa: if changed { false } else { cur.vmsa },
            validated: if changed { false } else { cur.validated },
            vmpl: if changed { VMPL_ON_UPDATE } else { cur.vmpl },
        };
        self.store_raw(spa, RawRmpEntry::encode(&new, false));
        RmpReturn::Success
    }

    /// PSMASH: expand the 2 MiB entry at 2 MiB-aligned `spa` into 512 4 KiB entries
    /// (spec/snp.md §3.3). Entry *i* gets Page_Size = 0 and GPA = GPA_base + i × 4 KiB; every
    /// other field (Assigned, Immutable, ASID, Validated, VMSA, VMPL masks) is copied. The
    /// hidden in-use flags of the 512 pages are kept.
    ///
    /// Codes: `FAIL_PERMISSION` in a guest or on an immutable entry (spec/snp.md §2.6: Immutable
    /// blocks every x86 RMP instruction); `FAIL_INPUT` if `spa` is not 2 MiB-aligned or the
    /// region is not fully covered; `FAIL_INUSE` if the aligned entry is in use; `FAIL_BADADDR`
    /// if the aligned entry is a 4 KiB entry.
    pub fn psmash(&mut self, by: Executor, spa: Spa) -> RmpReturn {
        let rc = self.psmash_inner(by, spa);
        *self.stats.psmash.entry(rc).or_default() += 1;
        rc
    }

    fn psmash_inner(&mut self, by: Executor, spa: Spa) -> RmpReturn {
        match by {
            Executor::Hypervisor => {}
            Executor::Guest { .. } => return RmpReturn::FailPermission,
        }
        if !spa.is_aligned(PageSize::M2) || !self.region_covered(spa) {
            return RmpReturn::FailInput;
        }
        let big = self.stored_entry(spa);
        if big.immutable {
            return RmpReturn::FailPermission;
        }
        if self.in_use(spa) {
            return RmpReturn::FailInuse;
        }
        if big.page_size != RmpPageSize::M2 {
            return RmpReturn::FailBadAddr;
        }
        for i in 0..PAGES_PER_2M {
            let off = i << PageSize::K4.shift();
            let page = Spa::new_truncate(spa.raw() + off);
            let small = RmpEntry {
                page_size: RmpPageSize::K4,
                gpa: Gpa::new_truncate(big.gpa.raw() + off),
                ..big
            };
            let in_use = self.in_use(page);
            self.store_raw(page, RawRmpEntry::encode(&small, in_use));
        }
        RmpReturn::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::VmplPerms;
    use crate::table::RmpLayout;
    use proptest::prelude::*;

    const HV: Executor = Executor::Hypervisor;
    const R0: u64 = 0x1_0000_0000;

    fn rmp() -> Rmp {
        // Cover 8 GiB so that the §6 regions R0/R1 (at 4 GiB) are covered.
        Rmp::new(RmpLayout::covering(Spa::new(0x10_0000), 8 << 30).unwrap())
    }

    fn pfn(p: u64) -> Spa {
        Spa::new(p << 12)
    }

    #[test]
    fn s5_make_private_4k() {
        // spec/snp.md §6 S5 step 2–3.
        let mut r = rmp();
        let input = RmpUpdateInput::private(Gpa::new(0x8000_0000), RmpPageSize::K4, 5, false);
        assert_eq!(r.rmpupdate(HV, pfn(0x100010), &input), RmpReturn::Success);
        let e = r.entry(pfn(0x100010));
        assert_eq!(
            e,
            RmpEntry {
                assigned: true,
                page_size: RmpPageSize::K4,
                immutable: false,
                gpa: Gpa::new(0x8000_0000),
                asid: 5,
                vmsa: false,
                validated: false,
                vmpl: [
                    VmplPerms::VMPL0_ON_UPDATE,
                    VmplPerms::empty(),
                    VmplPerms::empty(),
                    VmplPerms::empty()
                ],
            }
        );
        assert!(r.region_has_assigned(Spa::new(R0)));
        assert_eq!(r.stats().rmpupdate[&RmpReturn::Success], 1);
    }

    #[test]
    fn side_effects_only_on_change() {
        let mut r = rmp();
        let p = pfn(0x100010);
        let input = RmpUpdateInput::private(Gpa::new(0x8000_0000), RmpPageSize::K4, 5, false);
        assert_eq!(r.rmpupdate(HV, p, &input), RmpReturn::Success);
        // The guest validates (PVALIDATE is a later issue: set the state directly).
        let mut e = r.entry(p);
        e.validated = true;
        e.vmsa = true;
        r.set_entry(p, &e).unwrap();
        // Same owner/GPA/size: Validated and VMSA survive.
        assert_eq!(r.rmpupdate(HV, p, &input), RmpReturn::Success);
        assert!(r.entry(p).validated && r.entry(p).vmsa);
        // Remap to another GPA: cleared.
        let moved = RmpUpdateInput { gpa: Gpa::new(0x9000_0000), ..input };
        assert_eq!(r.rmpupdate(HV, p, &moved), RmpReturn::Success);
        assert!(!r.entry(p).validated && !r.entry(p).vmsa);
        // Back to shared.
        assert_eq!(
            r.rmpupdate(HV, p, &RmpUpdateInput::shared(RmpPageSize::K4)),
            RmpReturn::Success
        );
        assert!(!r.entry(p).assigned);
        assert!(!r.region_has_assigned(p));
    }

    #[test]
    fn return_codes() {
        let mut r = rmp();
        let priv2m = RmpUpdateInput::private(Gpa::new(0x8000_0000), RmpPageSize::M2, 5, false);
        let priv4k = RmpUpdateInput::private(Gpa::new(0x8000_0000), RmpPageSize::K4, 5, false);
        // FAIL_PERMISSION: executed in a guest.
        assert_eq!(
            r.rmpupdate(Executor::Guest { asid: 5 }, pfn(0x100000), &priv4k),
            RmpReturn::FailPermission
        );
        assert_eq!(r.psmash(Executor::Guest { asid: 5 }, pfn(0x100000)), RmpReturn::FailPermission);
        // FAIL_INPUT: misaligned 2M, uncovered, bad ASID / GPA, unaligned SPA.
        assert_eq!(r.rmpupdate(HV, pfn(0x100001), &priv2m), RmpReturn::FailInput);
        assert_eq!(r.rmpupdate(HV, Spa::new(8 << 30), &priv4k), RmpReturn::FailInput);
        assert_eq!(r.rmpupdate(HV, Spa::new(R0 + 8), &priv4k), RmpReturn::FailInput);
        let big_asid = RmpUpdateInput { asid: MAX_ASID + 1, ..priv4k };
        assert_eq!(r.rmpupdate(HV, pfn(0x100000), &big_asid), RmpReturn::FailInput);
        let gpa_2m_unaligned = RmpUpdateInput { gpa: Gpa::new(0x8000_1000), ..priv2m };
        assert_eq!(r.rmpupdate(HV, pfn(0x100000), &gpa_2m_unaligned), RmpReturn::FailInput);
        let shared_asid = RmpUpdateInput { assigned: false, ..priv4k };
        assert_eq!(r.rmpupdate(HV, pfn(0x100000), &shared_asid), RmpReturn::FailInput);
        // FAIL_INUSE.
        r.set_in_use(pfn(0x100020), true).unwrap();
        assert_eq!(r.rmpupdate(HV, pfn(0x100020), &priv4k), RmpReturn::FailInuse);
        r.set_in_use(pfn(0x100020), false).unwrap();
        // FAIL_OVERLAP: 2M assign over an assigned 4K page.
        assert_eq!(r.rmpupdate(HV, pfn(0x100010), &priv4k), RmpReturn::Success);
        assert_eq!(r.rmpupdate(HV, pfn(0x100000), &priv2m), RmpReturn::FailOverlap);
        assert_eq!(
            r.rmpupdate(HV, pfn(0x100000), &RmpUpdateInput::shared(RmpPageSize::M2)),
            RmpReturn::FailOverlap
        );
        // FAIL_OVERLAP: 4K update inside an assigned 2M entry.
        assert_eq!(r.rmpupdate(HV, pfn(0x100200), &priv2m), RmpReturn::Success);
        assert_eq!(r.rmpupdate(HV, pfn(0x100205), &priv4k), RmpReturn::FailOverlap);
        // FAIL_PERMISSION: immutable (firmware) pages, also through a 2M immutable entry.
        let fw = RmpUpdateInput::private(Gpa::ZERO, RmpPageSize::K4, 0, true);
        assert_eq!(r.rmpupdate(HV, pfn(0x100400), &fw), RmpReturn::Success);
        assert_eq!(
            r.rmpupdate(HV, pfn(0x100400), &RmpUpdateInput::shared(RmpPageSize::K4)),
            RmpReturn::FailPermission
        );
        let fw2m = RmpUpdateInput::private(Gpa::ZERO, RmpPageSize::M2, 0, true);
        assert_eq!(r.rmpupdate(HV, pfn(0x100600), &fw2m), RmpReturn::Success);
        assert_eq!(r.rmpupdate(HV, pfn(0x100601), &priv4k), RmpReturn::FailPermission);
        assert_eq!(r.psmash(HV, pfn(0x100600)), RmpReturn::FailPermission);
        // PSMASH codes.
        assert_eq!(r.psmash(HV, pfn(0x100201)), RmpReturn::FailInput);
        assert_eq!(r.psmash(HV, Spa::new(8 << 30)), RmpReturn::FailInput);
        assert_eq!(r.psmash(HV, pfn(0x100000)), RmpReturn::FailBadAddr);
        r.set_in_use(pfn(0x100200), true).unwrap();
        assert_eq!(r.psmash(HV, pfn(0x100200)), RmpReturn::FailInuse);
        r.set_in_use(pfn(0x100200), false).unwrap();
        assert_eq!(r.psmash(HV, pfn(0x100200)), RmpReturn::Success);
        assert_eq!(r.stats().psmash[&RmpReturn::Success], 1);
        assert_eq!(RmpReturn::FailBadAddr.code(), 7);
        assert_eq!(RmpReturn::FailOverlap.to_string(), "FAIL_OVERLAP (4)");
    }

    #[test]
    fn unassigned_2m_entry_allows_4k_inside() {
        // KVM: make_shared at 2M leaves an unassigned 2M entry; a later 4K private page in the
        // region must succeed (spec/snp.md §4.5 steps 2–3).
        let mut r = rmp();
        let priv2m = RmpUpdateInput::private(Gpa::new(0x8000_0000), RmpPageSize::M2, 5, false);
        assert_eq!(r.rmpupdate(HV, pfn(0x100000), &priv2m), RmpReturn::Success);
        let sh = RmpUpdateInput::shared(RmpPageSize::M2);
        assert_eq!(r.rmpupdate(HV, pfn(0x100000), &sh), RmpReturn::Success);
        assert!(!r.region_has_assigned(pfn(0x100000)));
        let priv4k = RmpUpdateInput::private(Gpa::new(0x8000_5000), RmpPageSize::K4, 5, false);
        assert_eq!(r.rmpupdate(HV, pfn(0x100005), &priv4k), RmpReturn::Success);
        assert!(r.entry(pfn(0x100005)).assigned);
        assert!(!r.entry(pfn(0x100000)).assigned);
    }

    #[test]
    fn s9_psmash_copies_fields() {
        // spec/snp.md §6 S9 action B.
        let mut r = rmp();
        let big = RmpEntry {
            assigned: true,
            page_size: RmpPageSize::M2,
            asid: 5,
            gpa: Gpa::new(0x8000_0000),
            validated: true,
            vmpl: [VmplPerms::all(), VmplPerms::READ, VmplPerms::empty(), VmplPerms::WRITE],
            ..RmpEntry::ZERO
        };
        r.set_entry(Spa::new(R0), &big).unwrap();
        assert_eq!(r.assigned_in_region(Spa::new(R0)), 1);
        assert_eq!(r.psmash(HV, Spa::new(R0)), RmpReturn::Success);
        for i in 0..512u64 {
            let e = r.entry(pfn(0x100000 + i));
            assert_eq!(e.page_size, RmpPageSize::K4);
            assert_eq!(e.gpa.raw(), 0x8000_0000 + i * 4096);
            assert_eq!((e.asid, e.validated, e.assigned), (5, true, true));
            assert_eq!(e.vmpl, big.vmpl);
        }
        assert_eq!(r.assigned_in_region(Spa::new(R0)), 512);
        // Already 4K: FAIL_BADADDR (KVM's "psmash failed ... rc 7").
        assert_eq!(r.psmash(HV, Spa::new(R0)), RmpReturn::FailBadAddr);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Update { page: u64, input: RmpUpdateInput },
        Psmash { region: u64 },
        Set { page: u64, assigned: bool, big: bool },
    }

    fn op() -> impl Strategy<Value = Op> {
        // Three 2M regions; pages biased toward region-aligned ones.
        let page = prop_oneof![(0u64..3).prop_map(|r| r * 512), 0u64..1536];
        prop_oneof![
            (page.clone(), any::<bool>(), any::<bool>(), any::<bool>(), 0u16..3).prop_map(
                |(page, assigned, big, imm, asid)| Op::Update {
                    page,
                    input: RmpUpdateInput {
                        assigned,
                        page_size: if big { RmpPageSize::M2 } else { RmpPageSize::K4 },
                        immutable: imm && assigned,
                        asid: if assigned { asid } else { 0 },
                        gpa: Gpa::ZERO,
                    },
                }
            ),
            (0u64..3).prop_map(|region| Op::Psmash { region }),
            (page, any::<bool>(), any::<bool>()).prop_map(|(page, assigned, big)| Op::Set {
                page,
                assigned,
                big
            }),
        ]
    }

    proptest! {
        #[test]
        fn region_counts_stay_exact(ops in proptest::collection::vec(op(), 1..200)) {
            let mut r = Rmp::new(RmpLayout::covering(Spa::ZERO, 6 << 20).unwrap());
            for o in ops {
                match o {
                    Op::Update { page, input } => { let _ = r.rmpupdate(HV, pfn(page), &input); }
                    Op::Psmash { region } => { let _ = r.psmash(HV, pfn(region * 512)); }
                    Op::Set { page, assigned, big } => {
                        let e = RmpEntry {
                            assigned,
                            page_size: if big { RmpPageSize::M2 } else { RmpPageSize::K4 },
                            asid: u16::from(assigned),
                            ..RmpEntry::ZERO
                        };
                        r.set_entry(pfn(page), &e).unwrap();
                    }
                }
                for reg in 0..3u64 {
                    let s = pfn(reg * 512);
                    prop_assert_eq!(r.assigned_in_region(s), r.recount(s));
                }
            }
        }

        #[test]
        fn instructions_never_break_the_2m_invariant(ops in proptest::collection::vec(op(), 1..200)) {
            // Through RMPUPDATE/PSMASH alone, an assigned 2M entry never shares its region with
            // another assigned entry.
            let mut r = Rmp::new(RmpLayout::covering(Spa::ZERO, 6 << 20).unwrap());
            for o in ops {
                match o {
                    Op::Update { page, input } => { let _ = r.rmpupdate(HV, pfn(page), &input); }
                    Op::Psmash { region } => { let _ = r.psmash(HV, pfn(region * 512)); }
                    Op::Set { .. } => {}
                }
                for reg in 0..3u64 {
                    let b = r.stored_entry(pfn(reg * 512));
                    if b.assigned && b.page_size == RmpPageSize::M2 {
                        prop_assert_eq!(r.assigned_in_region(pfn(reg * 512)), 1);
                    }
                }
            }
        }
    }
    /// The two readings of FAIL_OVERLAP (spec/snp.md §7 item 4): a 2M assignment over an
    /// assigned 4K page fails under both; a 4K update inside an assigned 2M entry fails only
    /// under `BothWays`, and under `TwoMegOnly` writes a 4K entry the 2M entry shadows.
    #[test]
    fn overlap_rule_readings() {
        for rule in [crate::OverlapRule::BothWays, crate::OverlapRule::TwoMegOnly] {
            let mut r = Rmp::new(crate::RmpLayout::covering(Spa::new(0x10_0000), 1 << 30).unwrap());
            r.set_overlap_rule(rule);
            let four_k = RmpUpdateInput::private(Gpa::new(0x1000), RmpPageSize::K4, 5, false);
            assert_eq!(
                r.rmpupdate(Executor::Hypervisor, Spa::new(0x20_1000), &four_k),
                RmpReturn::Success
            );
            let big = RmpUpdateInput::private(Gpa::ZERO, RmpPageSize::M2, 5, false);
            assert_eq!(
                r.rmpupdate(Executor::Hypervisor, Spa::new(0x20_0000), &big),
                RmpReturn::FailOverlap
            );
            // A fresh region with a 2M entry, then a 4K update inside it.
            assert_eq!(
                r.rmpupdate(Executor::Hypervisor, Spa::new(0x40_0000), &big),
                RmpReturn::Success
            );
            let inside = RmpUpdateInput::private(Gpa::new(0x5000), RmpPageSize::K4, 6, false);
            let rc = r.rmpupdate(Executor::Hypervisor, Spa::new(0x40_5000), &inside);
            match rule {
                crate::OverlapRule::BothWays => assert_eq!(rc, RmpReturn::FailOverlap),
                crate::OverlapRule::TwoMegOnly => {
                    assert_eq!(rc, RmpReturn::Success);
                    // Shadowed: the 2M entry still governs the page.
                    assert_eq!(r.entry(Spa::new(0x40_5000)).asid, 5);
                    assert_eq!(r.stored_entry(Spa::new(0x40_5000)).asid, 6);
                }
            }
        }
    }
}
