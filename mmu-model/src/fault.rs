//! Faults of guest accesses, as architectural values (STYLE rule 8): the guest's own #PF, the
//! AMD #VMEXIT(NPF) with its EXITINFO1/EXITINFO2, and the Intel EPT violation with its exit
//! qualification and guest-physical address.

use crate::walk::PageFault;
use sim_core::{Gpa, Gva};

bitflags::bitflags! {
    /// #VMEXIT(NPF) EXITINFO1, bit-exact (AMD APM Vol. 2 §15.25.6 for bits 0–4, 32 and 33;
    /// §15.36.10 for the SEV-SNP bits 31 and 34–37; spec/snp.md §2.3). Linux names them
    /// `PFERR_*_MASK` (arch/x86/include/asm/kvm_host.h). EXITINFO2 is the faulting GPA
    /// ([`NpfExit::gpa`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct NpfExitInfo1: u64 {
        /// Bit 0, P: the nested entry was present (a protection or reserved-bit fault).
        const PRESENT = 1 << 0;
        /// Bit 1, R/W: the access was a write.
        const WRITE = 1 << 1;
        /// Bit 2, U/S: a user access. The model sets it on every nested access: nested-table
        /// checks treat accesses as user accesses (APM §15.25.5, as read here).
        const USER = 1 << 2;
        /// Bit 3, RSVD: a reserved bit was set in a nested entry.
        const RESERVED = 1 << 3;
        /// Bit 4, I/D: the access was an instruction fetch.
        const FETCH = 1 << 4;
        /// Bit 31, RMP: an RMP or VMPL check failed (SEV-SNP).
        const RMP = 1 << 31;
        /// Bit 32: the fault was on the final GPA→SPA translation of the access.
        const GUEST_FINAL = 1 << 32;
        /// Bit 33: the fault was on the translation of a guest page-table access.
        const GUEST_PAGE = 1 << 33;
        /// Bit 34, ENC: the effective C-bit of the access was 1 (SEV-SNP).
        const ENC = 1 << 34;
        /// Bit 35, SIZEM: page-size mismatch between PVALIDATE/RMPADJUST and the RMP.
        const SIZEM = 1 << 35;
        /// Bit 36, VMPL: the VMPL permission check failed.
        const VMPL = 1 << 36;
        /// Bit 37, SSS: mirrors the SSS bit of the VMPL permission mask.
        const SSS = 1 << 37;
    }
}

/// A #VMEXIT(NPF): EXITINFO1 and EXITINFO2 (the faulting guest-physical address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NpfExit {
    /// EXITINFO1.
    pub info1: NpfExitInfo1,
    /// EXITINFO2: the GPA whose translation faulted (the guest table entry's GPA for a
    /// GUEST_PAGE fault, the data GPA for a GUEST_FINAL fault).
    pub gpa: Gpa,
}

bitflags::bitflags! {
    /// The exit qualification of an EPT violation, bit-exact (Intel SDM Vol. 3C §28.2.1,
    /// "Exit Qualification for EPT Violations"; Linux `EPT_VIOLATION_*` in
    /// arch/x86/include/asm/vmx.h). Bits 3–5 are the AND, over every EPT entry used by the
    /// translation up to the one that faulted, of its R, W and X bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct EptQualification: u64 {
        /// Bit 0: the access was a data read.
        const READ = 1 << 0;
        /// Bit 1: the access was a data write (also guest paging-structure accesses when EPT
        /// A/D flags are enabled, which treats them as writes).
        const WRITE = 1 << 1;
        /// Bit 2: the access was an instruction fetch.
        const FETCH = 1 << 2;
        /// Bit 3: the guest-physical address was readable (AND of R).
        const READABLE = 1 << 3;
        /// Bit 4: writable (AND of W).
        const WRITABLE = 1 << 4;
        /// Bit 5: executable (AND of X).
        const EXECUTABLE = 1 << 5;
        /// Bit 7: the guest linear-address field is valid.
        const GLA_VALID = 1 << 7;
        /// Bit 8 (with bit 7): 1 if the access was to the translation of a linear address
        /// (the final access), 0 if it was to a guest paging-structure entry.
        const GLA_TRANSLATED = 1 << 8;
    }
}

/// An EPT-violation VM exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    /// The exit qualification.
    pub qual: EptQualification,
    /// The guest-physical address (VMCS field GUEST_PHYSICAL_ADDRESS).
    pub gpa: Gpa,
    /// The guest linear address (VMCS field GUEST_LINEAR_ADDRESS), when bit 7 is set.
    pub gla: Option<Gva>,
}

/// Why a guest access did not translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestFault {
    /// A #PF for the guest's own page tables, delivered to the guest (CR2 = the GVA).
    PageFault(PageFault<Gva>),
    /// AMD nested paging: #VMEXIT(NPF).
    Npf(NpfExit),
    /// Intel EPT: EPT violation.
    EptViolation(EptViolation),
    /// Intel EPT: EPT misconfiguration (SDM Vol. 3C §29.3.3.1) at the translation of `gpa`.
    EptMisconfig {
        /// The GPA being translated.
        gpa: Gpa,
    },
    /// SEV-SNP: a #VC exception delivered to the guest by the check stage (error code 0x404,
    /// PAGE_NOT_VALIDATED, when the Validated check fails; APM Vol. 2 §15.36.10). CR2 holds
    /// the guest linear address.
    Vc {
        /// The #VC error code.
        code: u64,
        /// CR2: the guest linear address of the access.
        gla: Gva,
        /// The GPA whose RMP entry failed the check.
        gpa: Gpa,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions() {
        assert_eq!(NpfExitInfo1::RMP.bits(), 0x8000_0000);
        assert_eq!(NpfExitInfo1::GUEST_FINAL.bits(), 1 << 32);
        assert_eq!(NpfExitInfo1::GUEST_PAGE.bits(), 1 << 33);
        assert_eq!(NpfExitInfo1::ENC.bits(), 1 << 34);
        assert_eq!(NpfExitInfo1::VMPL.bits(), 1 << 36);
        assert_eq!(EptQualification::GLA_VALID.bits(), 0x80);
        assert_eq!(EptQualification::GLA_TRANSLATED.bits(), 0x100);
        assert_eq!(EptQualification::EXECUTABLE.bits(), 0x20);
        // Linux: PFERR_NESTED_GUEST_PAGE = GUEST_PAGE | WRITE | PRESENT.
        let nested_guest_page =
            NpfExitInfo1::GUEST_PAGE | NpfExitInfo1::WRITE | NpfExitInfo1::PRESENT;
        assert_eq!(nested_guest_page.bits(), 0x2_0000_0003);
    }
}
