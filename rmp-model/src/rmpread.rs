//! RMPREAD: the hypervisor reads one RMP entry in the architectural 16-byte format
//! (spec/snp.md §3.6).

use crate::entry::RmpPageSize;
use crate::instr::{Executor, RmpReturn};
use crate::table::Rmp;
use sim_core::{Gpa, PageSize, Spa};

/// The 16-byte record RMPREAD writes to the buffer at RCX (spec/snp.md §3.6; Linux
/// `arch/x86/virt/svm/sev.c` `struct rmpentry`, "the RMP entry information as returned by the
/// RMPREAD instruction"; Microsoft `__rmpread` `rmp_entry`).
///
/// | Bytes | Content |
/// |---|---|
/// | 0–7 | GPA |
/// | 8 | bit 0: Assigned |
/// | 9 | bit 0: Page_Size; bit 1: 2 MiB-region status |
/// | 10 | bit 0: Immutable |
/// | 11 | reserved (0) |
/// | 12–15 | ASID |
///
/// Unlike the raw in-memory entry ([`crate::RawRmpEntry`]) it has no Validated, VMSA or VMPL
/// fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RmpReadRecord {
    /// The entry's GPA (for a 2 MiB entry, the region's first GPA).
    pub gpa: Gpa,
    /// Assigned.
    pub assigned: bool,
    /// Page_Size.
    pub page_size: RmpPageSize,
    /// The 2 MiB-region status: set when the input SPA is 2 MiB-aligned and some *other* page
    /// of its 2 MiB region is assigned (spec/snp.md §3.6, from Tom Lendacky's commit 3e43c60e).
    pub region_status: bool,
    /// Immutable.
    pub immutable: bool,
    /// The owning ASID.
    pub asid: u32,
}

impl RmpReadRecord {
    /// The record as RMPREAD stores it (little-endian, reserved bits zero).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.gpa.raw().to_le_bytes());
        b[8] = u8::from(self.assigned);
        b[9] = u8::from(self.page_size == RmpPageSize::M2) | (u8::from(self.region_status) << 1);
        b[10] = u8::from(self.immutable);
        b[12..16].copy_from_slice(&self.asid.to_le_bytes());
        b
    }

    /// Decode a record (reserved bits ignored; GPA bits beyond the 52-bit width dropped).
    pub fn from_bytes(b: &[u8; 16]) -> RmpReadRecord {
        let gpa = u64::from_le_bytes(b[0..8].try_into().expect("8 bytes"));
        RmpReadRecord {
            gpa: Gpa::new_truncate(gpa),
            assigned: b[8] & 1 != 0,
            page_size: if b[9] & 1 != 0 { RmpPageSize::M2 } else { RmpPageSize::K4 },
            region_status: b[9] & 2 != 0,
            immutable: b[10] & 1 != 0,
            asid: u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")),
        }
    }
}

impl Rmp {
    /// RMPREAD (spec/snp.md §3.6): the entry stored at the PFN of `spa` — the page's own entry,
    /// not the authoritative one; Linux reads the 2 MiB-aligned entry separately to learn a
    /// page's level (`__snp_lookup_rmpentry`) — as an [`RmpReadRecord`]. The caller prices the
    /// read of [`crate::RmpLayout::entry_addr`] through its cache model.
    ///
    /// Codes (spec/snp.md §3.1; Microsoft `__rmpread`: 0 success, 1 "an input parameter is
    /// invalid", 2 "the current ASID isn't zero"):
    /// - `FAIL_PERMISSION` when executed in a guest;
    /// - `FAIL_INPUT` when `spa` is not 4 KiB-aligned or its page has no entry. Which inputs are
    ///   invalid is **UNCONFIRMED** (no source lists them); the model uses the rule its RMPUPDATE
    ///   applies to the SPA. Linux only ever passes `pfn << PAGE_SHIFT`.
    ///
    /// Functional: no statistics.
    pub fn rmpread(&self, by: Executor, spa: Spa) -> (RmpReturn, Option<RmpReadRecord>) {
        match by {
            Executor::Hypervisor => {}
            Executor::Guest { .. } => return (RmpReturn::FailPermission, None),
        }
        if !spa.is_aligned(PageSize::K4) || !self.layout().is_covered(spa) {
            return (RmpReturn::FailInput, None);
        }
        let e = self.stored_entry(spa);
        let region_status =
            spa.is_aligned(PageSize::M2) && self.assigned_in_region(spa) > u16::from(e.assigned);
        let record = RmpReadRecord {
            gpa: e.gpa,
            assigned: e.assigned,
            page_size: e.page_size,
            region_status,
            immutable: e.immutable,
            asid: u32::from(e.asid),
        };
        (RmpReturn::Success, Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{MAX_ASID, RmpEntry};
    use crate::instr::RmpUpdateInput;
    use crate::layout::RmpLayout;
    use proptest::prelude::*;

    const HV: Executor = Executor::Hypervisor;

    fn rmp() -> Rmp {
        Rmp::new(RmpLayout::covering(Spa::new(0x10_0000), 8 << 30).unwrap())
    }

    fn pfn(p: u64) -> Spa {
        Spa::new(p << 12)
    }

    #[test]
    fn s5_page_record_bytes() {
        // spec/snp.md §6 S5: PFN 0x100010 private to ASID 5 at GPA 0x8000_0000, 4K.
        let mut r = rmp();
        let input = RmpUpdateInput::private(Gpa::new(0x8000_0000), RmpPageSize::K4, 5, false);
        assert_eq!(r.rmpupdate(HV, pfn(0x100010), &input), RmpReturn::Success);
        let (rc, rec) = r.rmpread(HV, pfn(0x100010));
        assert_eq!(rc, RmpReturn::Success);
        let b = rec.unwrap().to_bytes();
        assert_eq!(b, [0, 0, 0, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0]);
        // A hypervisor page reads as all zeros.
        assert_eq!(r.rmpread(HV, pfn(0x100011)).1.unwrap().to_bytes(), [0; 16]);
    }

    #[test]
    fn page_size_immutable_and_asid_bytes() {
        let mut r = rmp();
        let big = RmpUpdateInput::private(Gpa::new(0x4000_0000), RmpPageSize::M2, MAX_ASID, false);
        assert_eq!(r.rmpupdate(HV, pfn(0x100200), &big), RmpReturn::Success);
        let b = r.rmpread(HV, pfn(0x100200)).1.unwrap().to_bytes();
        assert_eq!(&b[0..8], &0x4000_0000u64.to_le_bytes());
        assert_eq!((b[8], b[9], b[10], b[11]), (1, 1, 0, 0));
        assert_eq!(&b[12..16], &1023u32.to_le_bytes());
        // A firmware page (Assigned, ASID 0, Immutable).
        let fw = RmpUpdateInput::private(Gpa::ZERO, RmpPageSize::K4, 0, true);
        assert_eq!(r.rmpupdate(HV, pfn(0x100400), &fw), RmpReturn::Success);
        let b = r.rmpread(HV, pfn(0x100400)).1.unwrap().to_bytes();
        assert_eq!((b[8], b[9], b[10]), (1, 0, 1));
    }

    #[test]
    fn reads_the_stored_entry_not_the_authoritative_one() {
        let mut r = rmp();
        let big = RmpUpdateInput::private(Gpa::new(0x4000_0000), RmpPageSize::M2, 3, false);
        assert_eq!(r.rmpupdate(HV, pfn(0x100200), &big), RmpReturn::Success);
        // Inside the 2 MiB entry, the page's own entry is zero; the authoritative one is not.
        assert!(r.entry(pfn(0x100205)).assigned);
        let rec = r.rmpread(HV, pfn(0x100205)).1.unwrap();
        assert_eq!(rec.to_bytes(), [0; 16]);
    }

    #[test]
    fn region_status_bit() {
        let mut r = rmp();
        // An assigned 2 MiB entry alone: the aligned page is the only assigned one → 0.
        let big = RmpUpdateInput::private(Gpa::new(0x4000_0000), RmpPageSize::M2, 3, false);
        assert_eq!(r.rmpupdate(HV, pfn(0x100200), &big), RmpReturn::Success);
        assert!(!r.rmpread(HV, pfn(0x100200)).1.unwrap().region_status);
        // After PSMASH the other 511 pages are assigned → 1 at the aligned page (byte 9 =
        // 0b10: 4K entry, status set), 0 at a non-aligned one.
        assert_eq!(r.psmash(HV, pfn(0x100200)), RmpReturn::Success);
        let b = r.rmpread(HV, pfn(0x100200)).1.unwrap().to_bytes();
        assert_eq!(b[9], 0b10);
        assert!(!r.rmpread(HV, pfn(0x100201)).1.unwrap().region_status);
        // An unassigned aligned page with one assigned neighbour → 1.
        let small = RmpUpdateInput::private(Gpa::new(0x8000_0000), RmpPageSize::K4, 5, false);
        assert_eq!(r.rmpupdate(HV, pfn(0x100010), &small), RmpReturn::Success);
        let rec = r.rmpread(HV, pfn(0x100000)).1.unwrap();
        assert!(rec.region_status && !rec.assigned);
        // No assigned page at all → 0.
        assert!(!r.rmpread(HV, pfn(0x100600)).1.unwrap().region_status);
    }

    #[test]
    fn return_codes() {
        let r = rmp();
        assert_eq!(
            r.rmpread(Executor::Guest { asid: 1 }, pfn(0x100000)),
            (RmpReturn::FailPermission, None)
        );
        assert_eq!(r.rmpread(HV, Spa::new(0x1_0000_0008)), (RmpReturn::FailInput, None));
        assert_eq!(r.rmpread(HV, Spa::new(8 << 30)), (RmpReturn::FailInput, None));
        assert_eq!(r.rmpread(HV, Spa::new((8 << 30) - 4096)).0, RmpReturn::Success);
    }

    #[test]
    fn segmented_coverage() {
        let l = RmpLayout::from_segmented_msrs(
            Spa::new(0),
            0,
            (30 << 8) | 1,
            &[0x1000_0000 | 1, 0, 0x2000_0000 | 1],
        )
        .unwrap();
        let mut r = Rmp::new(l);
        // Segment 1 is a hole: FAIL_INPUT.
        assert_eq!(r.rmpread(HV, Spa::new(1 << 30)).0, RmpReturn::FailInput);
        let e = RmpEntry { assigned: true, asid: 9, gpa: Gpa::new(0x5000), ..RmpEntry::ZERO };
        r.set_entry(Spa::new(2 << 30), &e).unwrap();
        let rec = r.rmpread(HV, Spa::new(2 << 30)).1.unwrap();
        assert_eq!((rec.asid, rec.gpa.raw(), rec.assigned), (9, 0x5000, true));
    }

    proptest! {
        #[test]
        fn bytes_round_trip(
            gfn in 0u64..(1 << 40), assigned: bool, big: bool, status: bool, imm: bool, asid: u32,
        ) {
            let rec = RmpReadRecord {
                gpa: Gpa::new(gfn << 12),
                assigned,
                page_size: if big { RmpPageSize::M2 } else { RmpPageSize::K4 },
                region_status: status,
                immutable: imm,
                asid,
            };
            let b = rec.to_bytes();
            prop_assert_eq!(RmpReadRecord::from_bytes(&b), rec);
            // Reserved bits are zero.
            prop_assert_eq!(b[8] & !1, 0);
            prop_assert_eq!(b[9] & !3, 0);
            prop_assert_eq!(b[10] & !1, 0);
            prop_assert_eq!(b[11], 0);
        }
    }
}
