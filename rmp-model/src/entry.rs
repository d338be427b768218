//! One RMP entry: its architectural fields ([`RmpEntry`], AMD APM Vol. 2 Table 15-34) and the
//! raw 16-byte in-memory layout ([`RawRmpEntry`], spec/snp.md §1.2).

use sim_core::{Gpa, PageSize};
use std::fmt;

/// Highest ASID the raw entry can hold: the ASID field is 10 bits wide (bits 60:51 of the low
/// qword, spec/snp.md §1.2).
pub const MAX_ASID: u16 = (1 << 10) - 1;

/// Exclusive upper bound of a GPA the raw entry can hold: GPA bits 50:12 are stored in bits
/// 50:12 of the low qword (39 bits, spec/snp.md §1.2).
pub const GPA_LIMIT: u64 = 1 << 51;

/// The page size an RMP entry describes (APM Table 15-34 `Page_Size`). There is no 1 GiB RMP
/// entry (spec/snp.md §1.1).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum RmpPageSize {
    /// `Page_Size` = 0: the entry describes one 4 KiB page.
    #[default]
    #[serde(rename = "4K")]
    K4,
    /// `Page_Size` = 1: the entry at a 2 MiB-aligned PFN describes the whole 2 MiB region
    /// (spec/snp.md §1.4).
    #[serde(rename = "2M")]
    M2,
}

impl RmpPageSize {
    /// The translation page size of the same extent.
    pub const fn page_size(self) -> PageSize {
        match self {
            RmpPageSize::K4 => PageSize::K4,
            RmpPageSize::M2 => PageSize::M2,
        }
    }

    /// The RMP size for a translation size, or `None` for 1 GiB (no such RMP entry).
    pub const fn from_page_size(s: PageSize) -> Option<RmpPageSize> {
        match s {
            PageSize::K4 => Some(RmpPageSize::K4),
            PageSize::M2 => Some(RmpPageSize::M2),
            PageSize::G1 => None,
        }
    }
}

impl fmt::Display for RmpPageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.page_size().name())
    }
}

bitflags::bitflags! {
    /// One VMPL's permission mask (AMD APM Vol. 2 §15.36.7, Table 15-36). A clear bit makes that
    /// kind of guest access at that VMPL raise #VMEXIT(NPF) with the RMP and VMPL bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct VmplPerms: u8 {
        /// Bit 0: the VMPL may read the page.
        const READ = 1 << 0;
        /// Bit 1: the VMPL may write the page (write without read is illegal: data accesses to
        /// such a page fault, spec/snp.md §2.8).
        const WRITE = 1 << 1;
        /// Bit 2: the VMPL may execute from the page at CPL 3.
        const EXEC_USER = 1 << 2;
        /// Bit 3: the VMPL may execute from the page at CPL < 3.
        const EXEC_SUPER = 1 << 3;
        /// Bit 4: the page may be a supervisor shadow-stack page for the VMPL.
        const SUPER_SHADOW_STACK = 1 << 4;
    }
}

impl VmplPerms {
    /// The mask RMPUPDATE gives VMPL0 on any change of ownership ("VMPL0 full", spec/snp.md §3.2).
    ///
    /// Whether "full" includes bit 4 (supervisor shadow stack) is UNCONFIRMED; the model sets
    /// read, write and both execute bits.
    pub const VMPL0_ON_UPDATE: VmplPerms = VmplPerms::READ
        .union(VmplPerms::WRITE)
        .union(VmplPerms::EXEC_USER)
        .union(VmplPerms::EXEC_SUPER);
}

impl serde::Serialize for VmplPerms {
    /// As the raw mask byte.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.bits())
    }
}

/// The VMPL masks RMPUPDATE installs: VMPL0 full, VMPL1–3 none (spec/snp.md §3.2).
pub const VMPL_ON_UPDATE: [VmplPerms; 4] =
    [VmplPerms::VMPL0_ON_UPDATE, VmplPerms::empty(), VmplPerms::empty(), VmplPerms::empty()];

/// Who owns a page, as encoded by an entry (AMD APM Vol. 2 Table 15-35), refined by `Validated`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum RmpPageState {
    /// Assigned = 0: the hypervisor owns the page (ASID is 0 in every entry RMPUPDATE writes).
    Hypervisor,
    /// Assigned = 1, ASID = 0, Immutable = 1: the AMD secure processor (firmware) owns it.
    Firmware,
    /// Assigned = 1, ASID = 0, Immutable = 0: not an owner encoding of Table 15-35; the model
    /// keeps it distinct rather than guessing an owner.
    AssignedNoOwner,
    /// Assigned = 1, ASID ≠ 0, Validated = 0: a guest page the guest has not validated yet.
    GuestInvalid {
        /// The owning guest's ASID.
        asid: u16,
    },
    /// Assigned = 1, ASID ≠ 0, Validated = 1: a guest page ready for private access.
    GuestValid {
        /// The owning guest's ASID.
        asid: u16,
    },
}

/// The architectural fields of one RMP entry (AMD APM Vol. 2 Table 15-34; spec/snp.md §1.1).
///
/// The hidden in-use flag (§1.1) is not part of this struct: it is not an architectural field,
/// and it lives with the table ([`crate::Rmp::in_use`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub struct RmpEntry {
    /// 0: the hypervisor owns the page; 1: a guest or the AMD-SP owns it.
    pub assigned: bool,
    /// The size this entry describes.
    pub page_size: RmpPageSize,
    /// 1: no x86 instruction may change the entry; only the AMD-SP can.
    pub immutable: bool,
    /// The GPA the page must be mapped at (checked by the Reverse-Map check). For a 2 MiB entry,
    /// the GPA of the region's first page.
    pub gpa: Gpa,
    /// The owning guest's ASID (0 for hypervisor and firmware pages).
    pub asid: u16,
    /// 1: the page is a VM save area.
    pub vmsa: bool,
    /// 1: the guest has validated the page with PVALIDATE.
    pub validated: bool,
    /// Permission masks of VMPL0..VMPL3 (`CPUID 8000_001F EBX[15:12]` gives how many exist; the
    /// model keeps four).
    pub vmpl: [VmplPerms; 4],
}

impl RmpEntry {
    /// The all-zero entry every page starts with: hypervisor-owned, 4 KiB (spec/snp.md §1.3,
    /// "software zeroes RMP_BASE..RMP_END").
    pub const ZERO: RmpEntry = RmpEntry {
        assigned: false,
        page_size: RmpPageSize::K4,
        immutable: false,
        gpa: Gpa::ZERO,
        asid: 0,
        vmsa: false,
        validated: false,
        vmpl: [VmplPerms::empty(); 4],
    };

    /// The owner state this entry encodes.
    pub const fn state(&self) -> RmpPageState {
        match (self.assigned, self.asid, self.immutable) {
            (false, _, _) => RmpPageState::Hypervisor,
            (true, 0, true) => RmpPageState::Firmware,
            (true, 0, false) => RmpPageState::AssignedNoOwner,
            (true, asid, _) => {
                if self.validated {
                    RmpPageState::GuestValid { asid }
                } else {
                    RmpPageState::GuestInvalid { asid }
                }
            }
        }
    }

    /// The bit-exact raw form.
    ///
    /// # Panics
    /// If the ASID exceeds [`MAX_ASID`] or the GPA is not below [`GPA_LIMIT`] (the table only
    /// stores entries that passed those checks).
    pub fn to_raw(&self) -> RawRmpEntry {
        RawRmpEntry::encode(self, false)
    }
}

/// An RMP entry as it sits in memory: 16 bytes, two little-endian qwords (spec/snp.md §1.2, from
/// Linux `arch/x86/virt/svm/sev.c`, "PPR Family 19h Model 01h Rev B1"; the format Zen 3/Zen 4
/// expose; RMPREAD on later parts returns a different, architectural record).
///
/// Low qword (documented):
///
/// | Bits | Field |
/// |---|---|
/// | 0 | Assigned |
/// | 1 | Page_Size |
/// | 2 | Immutable |
/// | 11:3 | reserved |
/// | 50:12 | GPA >> 12 |
/// | 60:51 | ASID |
/// | 61 | VMSA |
/// | 62 | Validated |
/// | 63 | reserved |
///
/// High qword: **UNCONFIRMED** layout (spec/snp.md §1.2: undocumented, the VMPL masks must live
/// there). The model uses bits 7:0 / 15:8 / 23:16 / 31:24 for the VMPL0..3 masks and bit 63 for
/// the hidden in-use flag (a model-only bookkeeping choice, not a hardware claim).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(transparent)]
pub struct RawRmpEntry(pub [u64; 2]);

impl RawRmpEntry {
    /// The all-zero entry.
    pub const ZERO: RawRmpEntry = RawRmpEntry([0, 0]);

    const ASSIGNED: u64 = 1 << 0;
    const PAGE_SIZE: u64 = 1 << 1;
    const IMMUTABLE: u64 = 1 << 2;
    const GPA_MASK: u64 = (GPA_LIMIT - 1) & !0xfff;
    const ASID_SHIFT: u32 = 51;
    const ASID_MASK: u64 = (MAX_ASID as u64) << Self::ASID_SHIFT;
    const VMSA: u64 = 1 << 61;
    const VALIDATED: u64 = 1 << 62;
    /// High qword, bit 63: the model's hidden in-use flag.
    const IN_USE: u64 = 1 << 63;

    /// Encode an entry, with the model's in-use flag.
    ///
    /// # Panics
    /// If the ASID or GPA do not fit their fields (see [`RmpEntry::to_raw`]).
    pub fn encode(e: &RmpEntry, in_use: bool) -> RawRmpEntry {
        assert!(e.asid <= MAX_ASID, "ASID {} does not fit the 10-bit RMP field", e.asid);
        assert!(e.gpa.raw() < GPA_LIMIT, "GPA {} does not fit the RMP GPA field", e.gpa);
        let mut lo = e.gpa.raw() & Self::GPA_MASK;
        lo |= u64::from(e.asid) << Self::ASID_SHIFT;
        if e.assigned {
            lo |= Self::ASSIGNED;
        }
        if e.page_size == RmpPageSize::M2 {
            lo |= Self::PAGE_SIZE;
        }
        if e.immutable {
            lo |= Self::IMMUTABLE;
        }
        if e.vmsa {
            lo |= Self::VMSA;
        }
        if e.validated {
            lo |= Self::VALIDATED;
        }
        let mut hi = 0u64;
        for (i, p) in e.vmpl.iter().enumerate() {
            hi |= u64::from(p.bits()) << (8 * i);
        }
        if in_use {
            hi |= Self::IN_USE;
        }
        RawRmpEntry([lo, hi])
    }

    /// Decode the architectural fields (reserved bits are ignored).
    pub fn decode(self) -> RmpEntry {
        let [lo, hi] = self.0;
        let mut vmpl = [VmplPerms::empty(); 4];
        for (i, p) in vmpl.iter_mut().enumerate() {
            *p = VmplPerms::from_bits_truncate(hi.to_le_bytes()[i]);
        }
        RmpEntry {
            assigned: lo & Self::ASSIGNED != 0,
            page_size: if lo & Self::PAGE_SIZE != 0 { RmpPageSize::M2 } else { RmpPageSize::K4 },
            immutable: lo & Self::IMMUTABLE != 0,
            gpa: Gpa::new(lo & Self::GPA_MASK),
            asid: u16::try_from((lo & Self::ASID_MASK) >> Self::ASID_SHIFT)
                .expect("10-bit field fits u16"),
            vmsa: lo & Self::VMSA != 0,
            validated: lo & Self::VALIDATED != 0,
            vmpl,
        }
    }

    /// The model's hidden in-use flag.
    pub const fn in_use(self) -> bool {
        self.0[1] & Self::IN_USE != 0
    }

    /// The same entry with the in-use flag set or cleared.
    pub const fn with_in_use(self, in_use: bool) -> RawRmpEntry {
        let hi = if in_use { self.0[1] | Self::IN_USE } else { self.0[1] & !Self::IN_USE };
        RawRmpEntry([self.0[0], hi])
    }

    /// The Assigned bit, without decoding the rest.
    pub const fn assigned(self) -> bool {
        self.0[0] & Self::ASSIGNED != 0
    }

    /// Assigned with Page_Size = 2 MiB: the entry governs its whole region (spec/snp.md §1.4).
    pub const fn assigned_2m(self) -> bool {
        self.0[0] & (Self::ASSIGNED | Self::PAGE_SIZE) == Self::ASSIGNED | Self::PAGE_SIZE
    }
}

impl fmt::Debug for RawRmpEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawRmpEntry({:#018x}, {:#018x})", self.0[0], self.0[1])
    }
}

impl From<RmpEntry> for RawRmpEntry {
    fn from(e: RmpEntry) -> Self {
        e.to_raw()
    }
}

impl From<RawRmpEntry> for RmpEntry {
    fn from(r: RawRmpEntry) -> Self {
        r.decode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zero_is_hypervisor_4k() {
        assert_eq!(RawRmpEntry::ZERO.decode(), RmpEntry::ZERO);
        assert_eq!(RmpEntry::ZERO.state(), RmpPageState::Hypervisor);
        assert_eq!(RmpEntry::ZERO.to_raw(), RawRmpEntry::ZERO);
    }

    #[test]
    fn low_qword_is_bit_exact() {
        // S5's private page: Assigned, ASID 5, GPA 0x8000_0000, 4K.
        let e = RmpEntry {
            assigned: true,
            asid: 5,
            gpa: Gpa::new(0x8000_0000),
            vmpl: VMPL_ON_UPDATE,
            ..RmpEntry::ZERO
        };
        let raw = e.to_raw();
        assert_eq!(raw.0[0], 1 | 0x8000_0000 | (5 << 51));
        assert_eq!(raw.0[1] & 0xff, 0x0f);
        let v = RmpEntry { validated: true, vmsa: true, page_size: RmpPageSize::M2, ..e };
        assert_eq!(v.to_raw().0[0], raw.0[0] | (1 << 62) | (1 << 61) | 2);
    }

    #[test]
    fn states() {
        let fw = RmpEntry { assigned: true, immutable: true, ..RmpEntry::ZERO };
        assert_eq!(fw.state(), RmpPageState::Firmware);
        let g = RmpEntry { assigned: true, asid: 7, ..RmpEntry::ZERO };
        assert_eq!(g.state(), RmpPageState::GuestInvalid { asid: 7 });
        assert_eq!(RmpEntry { validated: true, ..g }.state(), RmpPageState::GuestValid { asid: 7 });
        let odd = RmpEntry { assigned: true, ..RmpEntry::ZERO };
        assert_eq!(odd.state(), RmpPageState::AssignedNoOwner);
    }

    proptest! {
        #[test]
        fn raw_round_trip(
            assigned: bool, big: bool, immutable: bool, vmsa: bool, validated: bool,
            in_use: bool, asid in 0..=MAX_ASID, gfn in 0u64..(GPA_LIMIT >> 12),
            m in any::<[u8; 4]>(),
        ) {
            let e = RmpEntry {
                assigned, immutable, vmsa, validated, asid,
                page_size: if big { RmpPageSize::M2 } else { RmpPageSize::K4 },
                gpa: Gpa::new(gfn << 12),
                vmpl: m.map(VmplPerms::from_bits_truncate),
            };
            let raw = RawRmpEntry::encode(&e, in_use);
            prop_assert_eq!(raw.decode(), e);
            prop_assert_eq!(raw.in_use(), in_use);
            prop_assert_eq!(raw.assigned(), assigned);
            prop_assert_eq!(raw.with_in_use(!in_use).decode(), e);
        }
    }
}
