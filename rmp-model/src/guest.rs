//! The guest side of the RMP: the checks of AMD APM Vol. 2 Table 15-39 for guest accesses, and
//! the guest instructions PVALIDATE, RMPADJUST and RMPQUERY (spec/snp.md §2.1–§2.3, §2.8,
//! §3.4, §3.5).
//!
//! Everything here is functional: the caller (the root crate's check stage) has already
//! translated the access (GVA → GPA → SPA) and passes the SPA, the GPA the translation produced,
//! the effective C-bit and the size of the nested (NPT) leaf; it turns a verdict into the
//! architectural fault (#VMEXIT(NPF) with EXITINFO1 bits 31/34/35/36, or #VC 0x404).

use crate::check::RmpViolationCause;
use crate::entry::{RmpEntry, RmpPageSize, VmplPerms};
use crate::instr::RmpReturn;
use crate::table::Rmp;
use sim_core::{Gpa, PageSize, Spa};

/// Who executes a guest access or instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestRmpContext {
    /// The guest's ASID.
    pub asid: u16,
    /// Whether the guest is SNP-active (SEV_FEATURES.SNPActive). Legacy, SEV and SEV-ES guests
    /// only get the Hypervisor-Owned check on writes and page-table accesses (Table 15-39).
    pub snp_active: bool,
    /// The VMPL the vCPU runs at (0–3).
    pub vmpl: u8,
}

/// What a guest access is, as Table 15-39 distinguishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum GuestAccessKind {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch; `user` when at CPL 3 (the VMPL mask has separate execute bits for
    /// CPL 3 and CPL < 3, APM Table 15-36).
    Fetch {
        /// CPL 3.
        user: bool,
    },
    /// The guest's walker reading one of the guest's own page-table entries.
    TableRead,
    /// The guest's walker setting A/D bits in a guest page-table entry: a data write for SNP,
    /// always 4 KiB-sized (APM §15.36.10, spec/snp.md §2.2).
    TableWrite,
}

impl GuestAccessKind {
    /// Writes: data writes and A/D updates.
    pub const fn is_write(self) -> bool {
        matches!(self, GuestAccessKind::Write | GuestAccessKind::TableWrite)
    }

    /// Instruction fetches and guest page-table accesses always use an effective C-bit of 1
    /// (APM §15.34.5, §15.36.10; spec/snp.md §2.2).
    pub const fn forces_private(self) -> bool {
        matches!(
            self,
            GuestAccessKind::Fetch { .. }
                | GuestAccessKind::TableRead
                | GuestAccessKind::TableWrite
        )
    }

    /// The VMPL permission the access needs (APM Table 15-36). Guest page-table reads need
    /// Read and A/D updates Write — the model's reading: the APM lists no separate permission
    /// for the walker's own accesses.
    pub const fn needs(self) -> VmplPerms {
        match self {
            GuestAccessKind::Read | GuestAccessKind::TableRead => VmplPerms::READ,
            GuestAccessKind::Write | GuestAccessKind::TableWrite => VmplPerms::WRITE,
            GuestAccessKind::Fetch { user: true } => VmplPerms::EXEC_USER,
            GuestAccessKind::Fetch { user: false } => VmplPerms::EXEC_SUPER,
        }
    }
}

/// One guest access presented to the RMP check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestAccess {
    /// The system-physical address the translation produced.
    pub spa: Spa,
    /// The guest-physical address the translation produced (C-bit removed): what the
    /// Reverse-Map check compares with the entry's GPA.
    pub gpa: Gpa,
    /// The access.
    pub kind: GuestAccessKind,
    /// The effective C-bit of a data access (ignored for fetches and page-table accesses, which
    /// are always private).
    pub c_bit: bool,
    /// The size of the nested (NPT) leaf that produced `spa`: the Page-Size check compares it
    /// with the RMP entry (spec/snp.md §2.1), and a ≥ 2 MiB translation makes the
    /// Hypervisor-Owned check cover the whole 2 MiB region (1 GiB is checked as 2 MiB).
    pub nested_size: PageSize,
}

impl GuestAccess {
    /// The effective C-bit: forced to 1 for fetches and guest page-table accesses.
    pub const fn private(&self) -> bool {
        self.c_bit || self.kind.forces_private()
    }
}

/// How a failed guest check is reported (APM §15.36.10; spec/snp.md §2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum GuestFaultClass {
    /// #VMEXIT(NPF) with EXITINFO1 bit 31 (RMP); bit 34 (ENC) when `enc`; bit 36 (VMPL) when
    /// the cause is [`RmpViolationCause::Vmpl`]; bit 35 (SIZEM) when `sizem` (PVALIDATE or
    /// RMPADJUST at 4 KiB on a 2 MiB entry).
    Npf {
        /// The effective C-bit was 1.
        enc: bool,
        /// Size mismatch between PVALIDATE/RMPADJUST and the RMP.
        sizem: bool,
    },
    /// #VC with error code 0x404 (PAGE_NOT_VALIDATED), delivered to the guest.
    Vc,
}

/// #VC error code of a failed Validated check: PAGE_NOT_VALIDATED (APM §15.36.10).
pub const VC_PAGE_NOT_VALIDATED: u64 = 0x404;

/// A failed guest check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GuestViolation {
    /// The check that failed.
    pub cause: RmpViolationCause,
    /// How it is reported.
    pub class: GuestFaultClass,
}

/// The verdict of a guest check and the RMP entry it read (priced by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestCheckOutcome {
    /// `None`: the access may proceed.
    pub violation: Option<GuestViolation>,
    /// The RMP entry read, if any (nothing for unchecked reads and uncovered pages).
    pub entry_read: Option<Spa>,
}

/// What the Table 15-39 guest row asks of one access.
enum Row {
    /// No check (reads with C=0, and reads and fetches of a non-SNP guest).
    None,
    /// Hypervisor-Owned at the given size → NPF.
    HypervisorOwned(PageSize),
    /// The SNP private list: RMP-Covered, Guest-Owned, Reverse-Map, Mutable, Page-Size → NPF;
    /// Validated → #VC; VMPL → NPF.
    Private,
}

/// Result of a guest instruction (PVALIDATE, RMPADJUST).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum GuestInstrOutcome {
    /// The instruction completed with a return code in RAX; `cf` is the carry flag
    /// (PVALIDATE sets it when nothing changed; Linux reports that as its software code 255,
    /// `PVALIDATE_FAIL_NOUPDATE`).
    Done {
        /// The return code.
        rc: RmpReturn,
        /// The carry flag.
        cf: bool,
    },
    /// The instruction faulted: #VMEXIT(NPF) or #VC.
    Fault(GuestViolation),
}

/// RMPQUERY's output (spec/snp.md §3.5; Microsoft `__rmpquery`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RmpQueryResult {
    /// The target VMPL's permission mask.
    pub perms: VmplPerms,
    /// The VMSA bit.
    pub vmsa: bool,
    /// The entry's page size.
    pub page_size: RmpPageSize,
}

impl Rmp {
    /// The RMP check of a guest access (APM Vol. 2 §15.36.10, Table 15-39), recording
    /// statistics. See [`Rmp::peek_guest_access`] for the rules.
    pub fn check_guest_access(
        &mut self,
        who: GuestRmpContext,
        access: &GuestAccess,
    ) -> GuestCheckOutcome {
        let out = self.peek_guest_access(who, access);
        let s = &mut self.stats;
        if out.entry_read.is_some() {
            s.guest_checks += 1;
            s.entry_reads += 1;
        } else {
            s.guest_unchecked += 1;
        }
        if let Some(v) = out.violation {
            *s.violations.entry(v.cause).or_default() += 1;
        }
        out
    }

    /// The guest check, functional. Rules (Table 15-39, spec/snp.md §2.2):
    ///
    /// - Non-SNP-active guest (legacy, SEV, SEV-ES): data writes and page-table accesses get
    ///   Hypervisor-Owned → NPF; reads and fetches are not checked.
    /// - SNP-active guest, data write with C=0: Hypervisor-Owned → NPF. Data read with C=0:
    ///   not checked.
    /// - SNP-active guest, fetch, guest page-table access, or data access with C=1, in priority
    ///   order: RMP-Covered, Guest-Owned, Reverse-Map, Mutable, Page-Size → NPF (ENC set);
    ///   then Validated → #VC 0x404; then VMPL → NPF (ENC and VMPL set). A violation of two
    ///   checks reports the first.
    ///
    /// Hypervisor-Owned through a ≥ 2 MiB nested translation requires every page of the 2 MiB
    /// region to be unassigned (1 GiB checked as the 2 MiB sub-region, as for the host);
    /// page-table accesses are checked at 4 KiB. A page beyond RMP coverage is hypervisor-owned.
    /// One RMP entry is read per check: the page's authoritative entry (the 2 MiB-aligned one
    /// for a 2 MiB entry or a region check).
    pub fn peek_guest_access(&self, who: GuestRmpContext, a: &GuestAccess) -> GuestCheckOutcome {
        let row = match (who.snp_active, a.kind) {
            (false, GuestAccessKind::Read | GuestAccessKind::Fetch { .. }) => Row::None,
            (false, GuestAccessKind::Write) => Row::HypervisorOwned(a.nested_size),
            (false, GuestAccessKind::TableRead | GuestAccessKind::TableWrite) => {
                Row::HypervisorOwned(PageSize::K4)
            }
            (true, _) if a.private() => Row::Private,
            (true, GuestAccessKind::Write) => Row::HypervisorOwned(a.nested_size),
            (true, _) => Row::None,
        };
        let npf = |cause, enc| GuestViolation {
            cause,
            class: GuestFaultClass::Npf { enc, sizem: false },
        };
        match row {
            Row::None => GuestCheckOutcome { violation: None, entry_read: None },
            Row::HypervisorOwned(size) => {
                let (read, hv) = self.hypervisor_owned(a.spa, size);
                let violation =
                    (!hv).then(|| npf(RmpViolationCause::NotHypervisorOwned, a.private()));
                GuestCheckOutcome { violation, entry_read: read }
            }
            Row::Private => {
                if !self.layout().is_covered(a.spa) {
                    return GuestCheckOutcome {
                        violation: Some(npf(RmpViolationCause::NotCovered, true)),
                        entry_read: None,
                    };
                }
                let (e, at) = self.authoritative(a.spa);
                let mut violation = guest_owned_checks(&e, at, who, a.spa, a.gpa)
                    .or_else(|| page_size_check(&e, a.nested_size))
                    .map(|cause| npf(cause, true));
                if violation.is_none() && !e.validated {
                    violation = Some(GuestViolation {
                        cause: RmpViolationCause::NotValidated,
                        class: GuestFaultClass::Vc,
                    });
                }
                if violation.is_none() && !vmpl_allows(&e, who.vmpl, a.kind) {
                    violation = Some(npf(RmpViolationCause::Vmpl, true));
                }
                GuestCheckOutcome { violation, entry_read: self.layout().entry_addr(at) }
            }
        }
    }

    /// PVALIDATE (guest, VMPL0 only; APM §15.36.6, spec/snp.md §3.4): set or clear Validated
    /// of the page at `spa` — the page the instruction's linear address translated to, at
    /// guest-physical `gpa` — for `size` (4 KiB or 2 MiB).
    ///
    /// Order of checks (APM §15.36.6 and Table 15-40 as digested; the order among them as
    /// Microsoft's VeriSMo model has it, `arch/rmp/access_s.rs`):
    /// 1. not at VMPL0 → FAIL_PERMISSION (2). The value is **UNCONFIRMED** (Microsoft's
    ///    intrinsic page lists only 0/1/6; VeriSMo models it as a permission failure).
    /// 2. a 2 MiB request whose GPA is not 2 MiB-aligned → FAIL_INPUT (1).
    /// 3. RMP-Covered, Guest-Owned, Reverse-Map, Mutable → NPF (RMP, ENC).
    /// 4. 4 KiB request on a 2 MiB RMP entry → NPF with SIZEM (bit 35) — the hypervisor
    ///    PSMASHes and the guest retries; 2 MiB request where the RMP has 4 KiB entries →
    ///    FAIL_SIZEMISMATCH (6), nothing changed.
    /// 5. already in the requested state → 0 with CF = 1; otherwise the bit changes, CF = 0.
    pub fn pvalidate(
        &mut self,
        who: GuestRmpContext,
        spa: Spa,
        gpa: Gpa,
        size: RmpPageSize,
        validate: bool,
    ) -> GuestInstrOutcome {
        let out = self.peek_pvalidate(who, spa, gpa, size, validate);
        if let GuestInstrOutcome::Done { rc: RmpReturn::Success, cf: false } = out {
            let (mut e, at) = self.authoritative(spa);
            e.validated = validate;
            self.set_entry(at, &e).expect("a covered page");
        }
        self.count_instr(Instr::Pvalidate, out);
        out
    }

    /// [`Rmp::pvalidate`] without effects.
    pub fn peek_pvalidate(
        &self,
        who: GuestRmpContext,
        spa: Spa,
        gpa: Gpa,
        size: RmpPageSize,
        validate: bool,
    ) -> GuestInstrOutcome {
        if who.vmpl != 0 {
            return done(RmpReturn::FailPermission);
        }
        if size == RmpPageSize::M2 && !gpa.is_aligned(PageSize::M2) {
            return done(RmpReturn::FailInput);
        }
        let e = match self.instr_entry(who, spa, gpa, size) {
            Ok(e) => e,
            Err(out) => return out,
        };
        if e.validated == validate {
            GuestInstrOutcome::Done { rc: RmpReturn::Success, cf: true }
        } else {
            GuestInstrOutcome::Done { rc: RmpReturn::Success, cf: false }
        }
    }

    /// RMPADJUST (guest; APM §15.36.7, spec/snp.md §2.8, §3.5): set the permission mask of
    /// `target_vmpl` (and, from VMPL0, the VMSA bit) of the page at `spa`.
    ///
    /// Order of checks (VeriSMo's model, `arch/rmp/access_s.rs`, which the APM text agrees with
    /// where it speaks):
    /// 1. `target_vmpl` above 3 or reserved mask bits 7:5 set → FAIL_INPUT (1);
    ///    `target_vmpl` not numerically greater than the caller's → FAIL_PERMISSION (2).
    /// 2. a 2 MiB request whose GPA is not 2 MiB-aligned → FAIL_INPUT.
    /// 3. RMP-Covered, Guest-Owned, Reverse-Map, Mutable → NPF; 4 KiB request on a 2 MiB entry
    ///    → NPF with SIZEM.
    /// 4. Validated clear → #VC 0x404 (VeriSMo: the page must be validated).
    /// 5. 2 MiB request on 4 KiB entries → FAIL_SIZEMISMATCH (6).
    /// 6. a mask that is not a subset of the caller's own mask for the page → FAIL_PERMISSION.
    ///
    /// The VMSA bit is honoured only at VMPL0 (spec/snp.md §3.5); from another VMPL the
    /// request's VMSA bit is ignored and the entry's is kept — the model's reading of
    /// "honoured only", **UNCONFIRMED**.
    #[allow(clippy::too_many_arguments)] // the instruction's operands, one each
    pub fn rmpadjust(
        &mut self,
        who: GuestRmpContext,
        spa: Spa,
        gpa: Gpa,
        size: RmpPageSize,
        target_vmpl: u8,
        perms: u8,
        vmsa: bool,
    ) -> GuestInstrOutcome {
        let out = self.peek_rmpadjust(who, spa, gpa, size, target_vmpl, perms);
        if let GuestInstrOutcome::Done { rc: RmpReturn::Success, .. } = out {
            let (mut e, at) = self.authoritative(spa);
            e.vmpl[usize::from(target_vmpl)] = VmplPerms::from_bits_truncate(perms);
            if who.vmpl == 0 {
                e.vmsa = vmsa;
            }
            self.set_entry(at, &e).expect("a covered page");
        }
        self.count_instr(Instr::Rmpadjust, out);
        out
    }

    /// [`Rmp::rmpadjust`] without effects (the VMSA bit does not affect the verdict).
    pub fn peek_rmpadjust(
        &self,
        who: GuestRmpContext,
        spa: Spa,
        gpa: Gpa,
        size: RmpPageSize,
        target_vmpl: u8,
        perms: u8,
    ) -> GuestInstrOutcome {
        if target_vmpl > 3 || VmplPerms::from_bits(perms).is_none() {
            return done(RmpReturn::FailInput);
        }
        if target_vmpl <= who.vmpl {
            return done(RmpReturn::FailPermission);
        }
        if size == RmpPageSize::M2 && !gpa.is_aligned(PageSize::M2) {
            return done(RmpReturn::FailInput);
        }
        let e = match self.instr_entry(who, spa, gpa, size) {
            Ok(e) => e,
            Err(out) => return out,
        };
        if !e.validated {
            return GuestInstrOutcome::Fault(GuestViolation {
                cause: RmpViolationCause::NotValidated,
                class: GuestFaultClass::Vc,
            });
        }
        let mine = e.vmpl[usize::from(who.vmpl.min(3))];
        if !mine.contains(VmplPerms::from_bits_truncate(perms)) {
            return done(RmpReturn::FailPermission);
        }
        done(RmpReturn::Success)
    }

    /// RMPQUERY (guest; spec/snp.md §3.5, Microsoft `__rmpquery`): the mask of `target_vmpl`,
    /// the VMSA bit and the page size of the page at `spa`. FAIL_PERMISSION (2) on an immutable
    /// entry; the Guest-Owned and Reverse-Map checks fault as for any private access (the
    /// model's reading: the instruction names a page of the guest's own memory).
    pub fn rmpquery(
        &self,
        who: GuestRmpContext,
        spa: Spa,
        gpa: Gpa,
        target_vmpl: u8,
    ) -> (GuestInstrOutcome, Option<RmpQueryResult>) {
        if target_vmpl > 3 {
            return (done(RmpReturn::FailInput), None);
        }
        if !self.layout().is_covered(spa) {
            return (npf_out(RmpViolationCause::NotCovered, false), None);
        }
        let (e, at) = self.authoritative(spa);
        if e.immutable {
            return (done(RmpReturn::FailPermission), None);
        }
        if let Some(cause) = guest_owned_checks(&e, at, who, spa, gpa) {
            return (npf_out(cause, false), None);
        }
        let q = RmpQueryResult {
            perms: e.vmpl[usize::from(target_vmpl)],
            vmsa: e.vmsa,
            page_size: e.page_size,
        };
        (done(RmpReturn::Success), Some(q))
    }

    /// The entry that governs `spa` and where it sits: the 2 MiB-aligned entry of an assigned
    /// 2 MiB entry, else the page's own (spec/snp.md §1.4; [`Rmp::entry`]).
    fn authoritative(&self, spa: Spa) -> (RmpEntry, Spa) {
        let e = self.entry(spa);
        if e.assigned && e.page_size == RmpPageSize::M2 {
            (e, spa.align_down(PageSize::M2))
        } else {
            (e, spa.align_down(PageSize::K4))
        }
    }

    /// Hypervisor-Owned at `size`: (entry read, passed).
    fn hypervisor_owned(&self, spa: Spa, size: PageSize) -> (Option<Spa>, bool) {
        if !self.layout().is_covered(spa) {
            return (None, true);
        }
        match size {
            PageSize::K4 => {
                let (e, at) = self.authoritative(spa);
                (self.layout().entry_addr(at), !e.assigned)
            }
            PageSize::M2 | PageSize::G1 => {
                let base = spa.align_down(PageSize::M2);
                (self.layout().entry_addr(base), !self.region_has_assigned(base))
            }
        }
    }

    /// The checks PVALIDATE and RMPADJUST share: coverage, ownership, reverse map, mutability
    /// (→ NPF), then the size rules (4K on 2M → NPF with SIZEM; 2M on 4K → code 6).
    fn instr_entry(
        &self,
        who: GuestRmpContext,
        spa: Spa,
        gpa: Gpa,
        size: RmpPageSize,
    ) -> Result<RmpEntry, GuestInstrOutcome> {
        if !self.layout().is_covered(spa) {
            return Err(npf_out(RmpViolationCause::NotCovered, false));
        }
        let (e, at) = self.authoritative(spa);
        if let Some(cause) = guest_owned_checks(&e, at, who, spa, gpa) {
            return Err(npf_out(cause, false));
        }
        match (size, e.page_size) {
            (RmpPageSize::K4, RmpPageSize::M2) => {
                Err(npf_out(RmpViolationCause::PageSizeMismatch, true))
            }
            (RmpPageSize::M2, RmpPageSize::K4) => Err(done(RmpReturn::FailSizeMismatch)),
            _ => Ok(e),
        }
    }

    fn count_instr(&mut self, which: Instr, out: GuestInstrOutcome) {
        let key = match out {
            GuestInstrOutcome::Done { rc, .. } => rc,
            // Faults are counted under the violation cause instead.
            GuestInstrOutcome::Fault(v) => {
                *self.stats.violations.entry(v.cause).or_default() += 1;
                return;
            }
        };
        let map = match which {
            Instr::Pvalidate => &mut self.stats.pvalidate,
            Instr::Rmpadjust => &mut self.stats.rmpadjust,
        };
        *map.entry(key).or_default() += 1;
    }
}

#[derive(Clone, Copy)]
enum Instr {
    Pvalidate,
    Rmpadjust,
}

const fn done(rc: RmpReturn) -> GuestInstrOutcome {
    GuestInstrOutcome::Done { rc, cf: false }
}

const fn npf_out(cause: RmpViolationCause, sizem: bool) -> GuestInstrOutcome {
    GuestInstrOutcome::Fault(GuestViolation {
        cause,
        class: GuestFaultClass::Npf { enc: true, sizem },
    })
}

/// Guest-Owned, Reverse-Map, Mutable, in that order (Table 15-39). `at` is where `e` sits;
/// for a 2 MiB entry the expected GPA of `spa` is the entry's GPA plus the page's offset in the
/// region.
fn guest_owned_checks(
    e: &RmpEntry,
    at: Spa,
    who: GuestRmpContext,
    spa: Spa,
    gpa: Gpa,
) -> Option<RmpViolationCause> {
    if !e.assigned || e.asid == 0 || e.asid != who.asid {
        return Some(RmpViolationCause::NotGuestOwned);
    }
    let offset = spa.align_down(PageSize::K4).raw() - at.raw();
    if e.gpa.raw() + offset != gpa.align_down(PageSize::K4).raw() {
        return Some(RmpViolationCause::ReverseMap);
    }
    if e.immutable {
        return Some(RmpViolationCause::Immutable);
    }
    None
}

/// Page-Size: a ≥ 2 MiB nested leaf needs a 2 MiB RMP entry, a 4 KiB leaf a 4 KiB one
/// (spec/snp.md §2.1).
fn page_size_check(e: &RmpEntry, nested: PageSize) -> Option<RmpViolationCause> {
    let want = if nested == PageSize::K4 { RmpPageSize::K4 } else { RmpPageSize::M2 };
    (e.page_size != want).then_some(RmpViolationCause::PageSizeMismatch)
}

/// The VMPL check (APM §15.36.7, Table 15-36): the VMPL's mask must grant the access, and a
/// mask with Write but not Read fails every data access ("write-without-read is illegal").
fn vmpl_allows(e: &RmpEntry, vmpl: u8, kind: GuestAccessKind) -> bool {
    let mask = e.vmpl[usize::from(vmpl.min(3))];
    let data = !matches!(kind, GuestAccessKind::Fetch { .. });
    if data && mask.contains(VmplPerms::WRITE) && !mask.contains(VmplPerms::READ) {
        return false;
    }
    mask.contains(kind.needs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instr::{Executor, RmpUpdateInput};
    use crate::table::RmpLayout;

    const RMP_BASE: u64 = 0x10_0000;
    const ME: GuestRmpContext = GuestRmpContext { asid: 5, snp_active: true, vmpl: 0 };

    fn rmp() -> Rmp {
        Rmp::new(RmpLayout::covering(Spa::new(RMP_BASE), 8 << 30).unwrap())
    }

    fn private(spa: u64, gpa: u64, kind: GuestAccessKind, nested: PageSize) -> GuestAccess {
        GuestAccess {
            spa: Spa::new(spa),
            gpa: Gpa::new(gpa),
            kind,
            c_bit: true,
            nested_size: nested,
        }
    }

    fn assign(r: &mut Rmp, spa: u64, gpa: u64, size: RmpPageSize, asid: u16) {
        let i = RmpUpdateInput::private(Gpa::new(gpa), size, asid, false);
        assert_eq!(r.rmpupdate(Executor::Hypervisor, Spa::new(spa), &i), RmpReturn::Success);
    }

    fn cause(o: GuestCheckOutcome) -> Option<(RmpViolationCause, GuestFaultClass)> {
        o.violation.map(|v| (v.cause, v.class))
    }

    const NPF_ENC: GuestFaultClass = GuestFaultClass::Npf { enc: true, sizem: false };

    /// spec/snp.md §6 S7: a private load of an unvalidated page is #VC 0x404; PVALIDATE
    /// validates it (CF = 0); the load then passes; a second PVALIDATE reports CF = 1.
    #[test]
    fn s7_unvalidated_then_pvalidate() {
        let mut r = rmp();
        assign(&mut r, 0x1_0001_0000, 0x8000_0000, RmpPageSize::K4, 5);
        let load = private(0x1_0001_0008, 0x8000_0008, GuestAccessKind::Read, PageSize::K4);
        let o = r.check_guest_access(ME, &load);
        assert_eq!(cause(o), Some((RmpViolationCause::NotValidated, GuestFaultClass::Vc)));
        assert_eq!(o.entry_read, Some(Spa::new(RMP_BASE + 0x4000 + 0x10_0010 * 16)));
        let pv = |r: &mut Rmp| {
            r.pvalidate(ME, Spa::new(0x1_0001_0000), Gpa::new(0x8000_0000), RmpPageSize::K4, true)
        };
        assert_eq!(pv(&mut r), GuestInstrOutcome::Done { rc: RmpReturn::Success, cf: false });
        assert!(r.entry(Spa::new(0x1_0001_0000)).validated);
        assert_eq!(cause(r.check_guest_access(ME, &load)), None);
        assert_eq!(pv(&mut r), GuestInstrOutcome::Done { rc: RmpReturn::Success, cf: true });
        assert_eq!(r.stats().pvalidate[&RmpReturn::Success], 2);
    }

    /// spec/snp.md §6 S9: a private store through a 4 KiB NPT leaf over a 2 MiB RMP entry is
    /// an NPF (Page-Size; RMP and ENC, not SIZEM); after PSMASH it passes.
    #[test]
    fn s9_page_size_then_psmash() {
        let mut r = rmp();
        assign(&mut r, 0x1_0000_0000, 0x8000_0000, RmpPageSize::M2, 5);
        let (mut e, _) = r.authoritative(Spa::new(0x1_0000_0000));
        e.validated = true;
        r.set_entry(Spa::new(0x1_0000_0000), &e).unwrap();
        let st = private(0x1_0000_5000, 0x8000_5000, GuestAccessKind::Write, PageSize::K4);
        let o = r.peek_guest_access(ME, &st);
        assert_eq!(cause(o), Some((RmpViolationCause::PageSizeMismatch, NPF_ENC)));
        // Through a 2M NPT leaf the same store passes.
        let big = GuestAccess { nested_size: PageSize::M2, ..st };
        assert_eq!(cause(r.peek_guest_access(ME, &big)), None);
        assert_eq!(r.psmash(Executor::Hypervisor, Spa::new(0x1_0000_0000)), RmpReturn::Success);
        assert_eq!(cause(r.peek_guest_access(ME, &st)), None);
    }

    /// Priority: an access failing Page-Size and Validated gets the NPF, not #VC
    /// (spec/snp.md §2.3 "Priority"); one failing Guest-Owned and Reverse-Map reports
    /// Guest-Owned.
    #[test]
    fn priority_order() {
        let mut r = rmp();
        assign(&mut r, 0x20_0000, 0x40_0000, RmpPageSize::M2, 5); // unvalidated 2M entry
        let a = private(0x20_1000, 0x40_1000, GuestAccessKind::Read, PageSize::K4);
        assert_eq!(
            cause(r.peek_guest_access(ME, &a)).unwrap().0,
            RmpViolationCause::PageSizeMismatch
        );
        let other = GuestRmpContext { asid: 6, ..ME };
        let b = private(0x20_1000, 0x99_1000, GuestAccessKind::Read, PageSize::M2);
        assert_eq!(
            cause(r.peek_guest_access(other, &b)).unwrap().0,
            RmpViolationCause::NotGuestOwned
        );
        assert_eq!(cause(r.peek_guest_access(ME, &b)).unwrap().0, RmpViolationCause::ReverseMap);
        // Right GPA within the 2M entry (base + offset), 2M leaf: only Validated fails.
        let c = private(0x20_1000, 0x40_1000, GuestAccessKind::Read, PageSize::M2);
        assert_eq!(cause(r.peek_guest_access(ME, &c)).unwrap().0, RmpViolationCause::NotValidated);
    }

    #[test]
    fn shared_accesses_and_non_snp_guests() {
        let mut r = rmp();
        assign(&mut r, 0x1_0001_0000, 0x8000_0000, RmpPageSize::K4, 5);
        let shared = |kind, spa, nested| GuestAccess {
            spa: Spa::new(spa),
            gpa: Gpa::new(0x9000_0000),
            kind,
            c_bit: false,
            nested_size: nested,
        };
        // C=0 reads are never checked, even of a private page.
        let o =
            r.peek_guest_access(ME, &shared(GuestAccessKind::Read, 0x1_0001_0000, PageSize::K4));
        assert_eq!(o, GuestCheckOutcome { violation: None, entry_read: None });
        // C=0 write to the private page: Hypervisor-Owned, NPF without ENC.
        let w =
            r.peek_guest_access(ME, &shared(GuestAccessKind::Write, 0x1_0001_0000, PageSize::K4));
        assert_eq!(
            cause(w),
            Some((
                RmpViolationCause::NotHypervisorOwned,
                GuestFaultClass::Npf { enc: false, sizem: false }
            ))
        );
        // C=0 write to a neighbour through a 2M nested leaf: the whole region is checked.
        let n =
            r.peek_guest_access(ME, &shared(GuestAccessKind::Write, 0x1_0000_5000, PageSize::M2));
        assert_eq!(cause(n).unwrap().0, RmpViolationCause::NotHypervisorOwned);
        let n4 =
            r.peek_guest_access(ME, &shared(GuestAccessKind::Write, 0x1_0000_5000, PageSize::K4));
        assert_eq!(cause(n4), None);
        // A fetch is private even with C=0 in the request.
        let f = r.peek_guest_access(
            ME,
            &shared(GuestAccessKind::Fetch { user: false }, 0x1_0000_5000, PageSize::K4),
        );
        assert_eq!(cause(f).unwrap().0, RmpViolationCause::NotGuestOwned);
        // A non-SNP guest: reads unchecked, writes Hypervisor-Owned.
        let sev = GuestRmpContext { snp_active: false, ..ME };
        let p = private(0x1_0001_0000, 0x8000_0000, GuestAccessKind::Read, PageSize::K4);
        assert_eq!(r.peek_guest_access(sev, &p).entry_read, None);
        let pw = GuestAccess { kind: GuestAccessKind::Write, ..p };
        assert_eq!(
            cause(r.peek_guest_access(sev, &pw)).unwrap().0,
            RmpViolationCause::NotHypervisorOwned
        );
    }

    #[test]
    fn not_covered_is_npf_for_private_and_fine_for_shared() {
        let r = rmp();
        let far = private(9 << 30, 0x1000, GuestAccessKind::Read, PageSize::K4);
        assert_eq!(cause(r.peek_guest_access(ME, &far)).unwrap().0, RmpViolationCause::NotCovered);
        let w = GuestAccess { c_bit: false, kind: GuestAccessKind::Write, ..far };
        assert_eq!(
            r.peek_guest_access(ME, &w),
            GuestCheckOutcome { violation: None, entry_read: None }
        );
    }

    #[test]
    fn vmpl_masks() {
        let mut r = rmp();
        assign(&mut r, 0x1_0001_0000, 0x8000_0000, RmpPageSize::K4, 5);
        let pa = Spa::new(0x1_0001_0000);
        let ga = Gpa::new(0x8000_0000);
        assert_eq!(
            r.pvalidate(ME, pa, ga, RmpPageSize::K4, true),
            GuestInstrOutcome::Done { rc: RmpReturn::Success, cf: false }
        );
        let vmpl1 = GuestRmpContext { vmpl: 1, ..ME };
        let rd = private(0x1_0001_0000, 0x8000_0000, GuestAccessKind::Read, PageSize::K4);
        // RMPUPDATE left VMPL1 with no permissions.
        let o = r.peek_guest_access(vmpl1, &rd);
        assert_eq!(cause(o), Some((RmpViolationCause::Vmpl, NPF_ENC)));
        // VMPL0 grants VMPL1 read only.
        let ok = r.rmpadjust(ME, pa, ga, RmpPageSize::K4, 1, VmplPerms::READ.bits(), false);
        assert_eq!(ok, GuestInstrOutcome::Done { rc: RmpReturn::Success, cf: false });
        assert_eq!(cause(r.peek_guest_access(vmpl1, &rd)), None);
        let wr = GuestAccess { kind: GuestAccessKind::Write, ..rd };
        assert_eq!(cause(r.peek_guest_access(vmpl1, &wr)).unwrap().0, RmpViolationCause::Vmpl);
        // VMPL1 cannot grant VMPL2 more than it has, nor adjust itself or VMPL0.
        let more = (VmplPerms::READ | VmplPerms::WRITE).bits();
        let rc = |o| match o {
            GuestInstrOutcome::Done { rc, .. } => rc,
            GuestInstrOutcome::Fault(_) => panic!("{o:?}"),
        };
        assert_eq!(
            rc(r.rmpadjust(vmpl1, pa, ga, RmpPageSize::K4, 2, more, false)),
            RmpReturn::FailPermission
        );
        assert_eq!(
            rc(r.rmpadjust(vmpl1, pa, ga, RmpPageSize::K4, 1, 1, false)),
            RmpReturn::FailPermission
        );
        assert_eq!(
            rc(r.rmpadjust(vmpl1, pa, ga, RmpPageSize::K4, 2, VmplPerms::READ.bits(), false)),
            RmpReturn::Success
        );
        // Write-without-read fails data accesses even when Write is granted.
        assert_eq!(
            rc(r.rmpadjust(ME, pa, ga, RmpPageSize::K4, 3, VmplPerms::WRITE.bits(), false)),
            RmpReturn::Success
        );
        let vmpl3 = GuestRmpContext { vmpl: 3, ..ME };
        assert_eq!(cause(r.peek_guest_access(vmpl3, &wr)).unwrap().0, RmpViolationCause::Vmpl);
        // Reserved mask bits, VMPL 4: FAIL_INPUT. PVALIDATE above VMPL0: FAIL_PERMISSION.
        assert_eq!(
            rc(r.rmpadjust(ME, pa, ga, RmpPageSize::K4, 1, 0x20, false)),
            RmpReturn::FailInput
        );
        assert_eq!(rc(r.rmpadjust(ME, pa, ga, RmpPageSize::K4, 4, 1, false)), RmpReturn::FailInput);
        assert_eq!(
            rc(r.pvalidate(vmpl1, pa, ga, RmpPageSize::K4, false)),
            RmpReturn::FailPermission
        );
        // RMPQUERY sees VMPL1's mask.
        let (q, res) = r.rmpquery(ME, pa, ga, 1);
        assert_eq!(rc(q), RmpReturn::Success);
        assert_eq!(res.unwrap().perms, VmplPerms::READ);
    }

    #[test]
    fn pvalidate_and_rmpadjust_sizes() {
        let mut r = rmp();
        assign(&mut r, 0x40_0000, 0x20_0000, RmpPageSize::M2, 5);
        let base = Spa::new(0x40_0000);
        // 4K on a 2M entry: NPF with SIZEM.
        assert_eq!(
            r.pvalidate(ME, base, Gpa::new(0x20_0000), RmpPageSize::K4, true),
            npf_out(RmpViolationCause::PageSizeMismatch, true)
        );
        // 2M, unaligned GPA: FAIL_INPUT; aligned: validates the whole 2M entry.
        assert_eq!(
            r.pvalidate(ME, base, Gpa::new(0x20_1000), RmpPageSize::M2, true),
            done(RmpReturn::FailInput)
        );
        assert_eq!(
            r.pvalidate(ME, base, Gpa::new(0x20_0000), RmpPageSize::M2, true),
            done(RmpReturn::Success)
        );
        assert!(r.entry(Spa::new(0x41_2000)).validated);
        // RMPADJUST at 4K on the 2M entry: SIZEM too.
        assert_eq!(
            r.rmpadjust(ME, base, Gpa::new(0x20_0000), RmpPageSize::K4, 1, 1, false),
            npf_out(RmpViolationCause::PageSizeMismatch, true)
        );
        // After PSMASH, a 2M PVALIDATE gets FAIL_SIZEMISMATCH and changes nothing.
        assert_eq!(r.psmash(Executor::Hypervisor, base), RmpReturn::Success);
        assert_eq!(
            r.pvalidate(ME, base, Gpa::new(0x20_0000), RmpPageSize::M2, false),
            done(RmpReturn::FailSizeMismatch)
        );
        assert!(r.entry(base).validated);
        // PVALIDATE of a page at the wrong GPA, or another guest's page: NPF.
        assert_eq!(
            r.pvalidate(ME, base, Gpa::new(0x30_0000), RmpPageSize::K4, false),
            npf_out(RmpViolationCause::ReverseMap, false)
        );
        let other = GuestRmpContext { asid: 7, ..ME };
        assert_eq!(
            r.pvalidate(other, base, Gpa::new(0x20_0000), RmpPageSize::K4, false),
            npf_out(RmpViolationCause::NotGuestOwned, false)
        );
        // RMPADJUST on an unvalidated page: #VC.
        assign(&mut r, 0x80_0000, 0x50_0000, RmpPageSize::K4, 5);
        assert_eq!(
            r.rmpadjust(ME, Spa::new(0x80_0000), Gpa::new(0x50_0000), RmpPageSize::K4, 1, 1, false),
            GuestInstrOutcome::Fault(GuestViolation {
                cause: RmpViolationCause::NotValidated,
                class: GuestFaultClass::Vc
            })
        );
    }

    #[test]
    fn immutable_pages_fault_and_query_fails() {
        let mut r = rmp();
        let i = RmpUpdateInput::private(Gpa::new(0x1000), RmpPageSize::K4, 5, true);
        assert_eq!(r.rmpupdate(Executor::Hypervisor, Spa::new(0x1000), &i), RmpReturn::Success);
        let a = private(0x1000, 0x1000, GuestAccessKind::Read, PageSize::K4);
        assert_eq!(cause(r.peek_guest_access(ME, &a)).unwrap().0, RmpViolationCause::Immutable);
        assert_eq!(
            r.rmpquery(ME, Spa::new(0x1000), Gpa::new(0x1000), 0).0,
            done(RmpReturn::FailPermission)
        );
        assert_eq!(
            r.pvalidate(ME, Spa::new(0x1000), Gpa::new(0x1000), RmpPageSize::K4, true),
            npf_out(RmpViolationCause::Immutable, false)
        );
    }
}
