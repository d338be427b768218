//! Tests of the whole module: the test vectors of spec/tdx.md §6, one positive and at least one
//! error case per leaf, the lock cases, the lifecycle from nothing to TEARDOWN, the guest side,
//! and property tests (no panic on any register values; CHLDCNT and PAMT ↔ S-EPT invariants
//! under random call sequences).

use crate::status::*;
use crate::*;
use mmu_model::{GpaWidth, LinearFrames, PhysMemTables};
use proptest::prelude::*;
use sim_core::{PageSize, Spa};
use std::collections::BTreeMap;

const TDR: u64 = 0x10_0000;
const ROOT: u64 = 0x10_1000;
const VCPU: u64 = 0x10_2000;
const HKID: u16 = 16;
/// A 2 MiB-aligned private GPA region (R in spec/tdx.md §6).
const R: u64 = 0x8000_0000;
/// A 4 KiB GPA inside R (g).
const G: u64 = R + 0x3000;
/// The 4 KiB S-EPT table under R's 2M entry.
const PT: u64 = 0x30_0000;
/// Data pages (h).
const H: u64 = 0x4000_0000;
/// A 2 MiB-aligned data range.
const H2M: u64 = 0x4020_0000;
/// Frames for intermediate tables made by the direct setters.
const FRAMES: u64 = 0x100_0000;

fn regs(rcx: u64, rdx: u64, r8: u64) -> Regs {
    Regs { rcx, rdx, r8, ..Regs::default() }
}

struct Env {
    m: TdxModule,
    t: PhysMemTables<Spa>,
    f: LinearFrames<Spa>,
}

impl Env {
    /// A TD in `op` with one READY vCPU, the S-EPT built down to R's 4K table (PT).
    fn new(op: OpState) -> Env {
        Env::with_config(op, TdxConfig::default())
    }

    fn with_config(op: OpState, cfg: TdxConfig) -> Env {
        let mut e = Env {
            m: TdxModule::new(cfg),
            t: PhysMemTables::new(),
            f: LinearFrames::new(Spa::new(FRAMES), Spa::new(FRAMES + 0x10_0000)),
        };
        e.m.create_td_direct(&mut e.t, TDR, HKID, op, ROOT, 48).unwrap();
        e.m.create_vcpu_direct(TDR, VCPU).unwrap();
        e.set(R, 1, SeptState::NlMapped, PT);
        e
    }

    fn set(&mut self, gpa: u64, level: u8, s: SeptState, hpa: u64) {
        self.m.set_sept_direct(&mut self.t, &mut self.f, TDR, gpa, level, s, hpa).unwrap();
    }

    fn call(&mut self, leaf: u16, r: Regs) -> Outcome {
        self.m.seamcall(&mut self.t, leaf, 0, r)
    }

    fn callv(&mut self, leaf: u16, version: u8, r: Regs) -> Outcome {
        self.m.seamcall(&mut self.t, leaf, version, r)
    }

    fn entry(&self, gpa: u64, level: u8) -> Option<(SeptState, u64)> {
        self.m.sept_entry(&self.t, TDR, gpa, level)
    }

    fn chldcnt(&self) -> u64 {
        self.m.td(TDR).unwrap().chldcnt
    }

    fn accept(&mut self, rcx: u64) -> GuestOutcome {
        self.m.accept(&mut self.t, TDR, VCPU, regs(rcx, 0, 0))
    }

    fn aug(&mut self, gpa_level: u64, page: u64) -> Outcome {
        self.call(leaf::MEM_PAGE_AUG, regs(gpa_level, TDR, page))
    }

    fn block(&mut self, gpa_level: u64) -> Outcome {
        self.call(leaf::MEM_RANGE_BLOCK, regs(gpa_level, TDR, 0))
    }

    fn track(&mut self) -> Outcome {
        self.call(leaf::MEM_TRACK, regs(TDR, 0, 0))
    }

    fn remove(&mut self, gpa_level: u64) -> Outcome {
        self.call(leaf::MEM_PAGE_REMOVE, regs(gpa_level, TDR, 0))
    }

    /// Put vCPU VCPU inside the TD (enter without exit).
    fn enter(&mut self) {
        let f = self.m.vp_enter_begin(&mut self.t, VCPU, false).unwrap();
        let _ = self.m.vp_enter_end(&mut self.t, f);
    }

    fn kick(&mut self) -> usize {
        self.m.kick_vcpus(&mut self.t, TDR)
    }
}

fn st(o: &Outcome) -> u64 {
    o.status()
}

// -------------------------------------------------------------------------------------------
// Test vectors (spec/tdx.md §6)
// -------------------------------------------------------------------------------------------

#[test]
fn v1_aug_4k_happy_path() {
    let mut e = Env::new(OpState::Runnable);
    assert_eq!(e.entry(G, 0), Some((SeptState::Free, 0)));
    assert_eq!(e.m.pamt(H).pt, PageType::Nda);
    let before = e.chldcnt();
    let o = e.aug(G, H);
    assert_eq!(st(&o), 0);
    assert_eq!((o.regs.rcx, o.regs.rdx), (0, 0));
    assert_eq!(e.entry(G, 0), Some((SeptState::Pending, H)));
    let p = e.m.pamt(H);
    assert_eq!((p.pt, p.owner, p.bepoch, p.size), (PageType::Reg, TDR, 0, PageSize::K4));
    assert_eq!(e.chldcnt(), before + 1);
    // A guest read of g TD-exits with EEQ PENDING_EPT_VIOLATION under SEPT_VE_DISABLE…
    assert_eq!(
        e.m.private_access(&e.t, TDR, G + 8, false),
        Err(PrivateFault::EptViolation {
            eeq_type: EEQ_PENDING_EPT_VIOLATION,
            level: 0,
            state: Some(SeptState::Pending)
        })
    );
    // …or raises #VE without it.
    let cfg = TdxConfig { sept_ve_disable: false, ..TdxConfig::default() };
    let mut e = Env::with_config(OpState::Runnable, cfg);
    assert_eq!(st(&e.aug(G, H)), 0);
    assert_eq!(e.m.private_access(&e.t, TDR, G, false), Err(PrivateFault::Ve { level: 0 }));
}

#[test]
fn v2_aug_without_page_table() {
    let mut e = Env::new(OpState::Runnable);
    let r2 = R + 0x20_0000; // its 2M entry is FREE (the PD exists)
    let g2 = r2 + 0x3000;
    let before = e.chldcnt();
    let o = e.aug(g2, H);
    assert_eq!(st(&o), 0xC000_0B00_0000_0001);
    assert_eq!(o.regs.rdx, 0x0001);
    assert_eq!(o.regs.rcx, 0x8000_0000_0000_0000);
    assert_eq!(e.entry(r2, 1), Some((SeptState::Free, 0)));
    assert_eq!(e.m.pamt(H).pt, PageType::Nda);
    assert_eq!(e.chldcnt(), before);
}

#[test]
fn v7_remove_without_block() {
    // Running TD: GPA_RANGE_NOT_BLOCKED | RCX, RDX = 0x0400.
    let mut e = Env::new(OpState::Runnable);
    e.set(G, 0, SeptState::Mapped, H);
    let o = e.remove(G);
    assert_eq!(st(&o), 0xC000_0B06_0000_0001);
    assert_eq!(o.regs.rdx, 0x0400);
    assert_eq!(o.regs.rcx, 0x8000_0000_0000_0000 | H | 0x4F7);
    assert_eq!(e.entry(G, 0), Some((SeptState::Mapped, H)));
    // Not finalised (INITIALIZED): removed at once, RCX = h.
    let mut e = Env::new(OpState::Initialized);
    e.set(G, 0, SeptState::Mapped, H);
    let before = e.chldcnt();
    let o = e.remove(G);
    assert_eq!(st(&o), 0);
    assert_eq!(o.regs.rcx, H);
    assert_eq!(e.entry(G, 0), Some((SeptState::Free, 0)));
    assert_eq!(e.m.pamt(H).pt, PageType::Nda);
    assert_eq!(e.chldcnt(), before - 1);
}

#[test]
fn v8_block_then_remove_without_track() {
    let mut e = Env::new(OpState::Runnable);
    let n = 7;
    e.m.set_epoch_direct(TDR, n, [0, 0]).unwrap();
    e.set(G, 0, SeptState::Mapped, H);
    assert_eq!(st(&e.block(G)), 0);
    assert_eq!(e.entry(G, 0), Some((SeptState::Blocked, H)));
    assert_eq!(e.m.pamt(H).bepoch, n);
    let o = e.remove(G);
    assert_eq!(st(&o), 0xC000_0B08_0000_0001);
    assert_eq!(e.entry(G, 0), Some((SeptState::Blocked, H)));
}

#[test]
fn v9_zap_sequence() {
    let mut e = Env::new(OpState::Runnable);
    let n = e.m.td(TDR).unwrap().epoch;
    e.set(G, 0, SeptState::Mapped, H);
    let before = e.chldcnt();
    assert_eq!(st(&e.block(G)), 0);
    assert_eq!(e.m.pamt(H).bepoch, n);
    assert_eq!(st(&e.track()), 0);
    assert_eq!(e.m.td(TDR).unwrap().epoch, n + 1);
    assert_eq!(e.kick(), 0);
    let o = e.remove(G);
    assert_eq!(st(&o), 0);
    assert_eq!(o.regs.rcx, H);
    assert_eq!(e.entry(G, 0), Some((SeptState::Free, 0)));
    assert_eq!(e.m.pamt(H).pt, PageType::Nda);
    assert_eq!(e.chldcnt(), before - 1);
    // WBINVD on the HKID-keyed address (pa | hkid << phys_bits).
    let keyed = H | (u64::from(HKID) << 46);
    assert_eq!(st(&e.call(leaf::PHYMEM_PAGE_WBINVD, regs(keyed, 0, 0))), 0);
}

#[test]
fn v9_variants_vcpu_still_in_guest() {
    let mut e = Env::new(OpState::Runnable);
    let n = e.m.td(TDR).unwrap().epoch;
    e.set(G, 0, SeptState::Mapped, H);
    e.enter(); // entered at epoch N, stays inside
    assert!(e.m.vcpu_in_guest(VCPU));
    assert_eq!(st(&e.block(G)), 0);
    assert_eq!(st(&e.track()), 0);
    // No kick: the vCPU still holds epoch N's refcount.
    assert_eq!(st(&e.remove(G)), 0xC000_0B08_0000_0001);
    // A second TRACK before it exits.
    assert_eq!(st(&e.track()), 0x8000_0201_0000_0000);
    assert_eq!(e.m.td(TDR).unwrap().epoch, n + 1);
    // After the kick both succeed.
    assert_eq!(e.kick(), 1);
    assert_eq!(st(&e.remove(G)), 0);
    assert_eq!(st(&e.track()), 0);
}

// -------------------------------------------------------------------------------------------
// Per leaf
// -------------------------------------------------------------------------------------------

#[test]
fn sept_add_cases() {
    let mut e = Env::new(OpState::Runnable);
    let r2 = R + 0x20_0000;
    let before = e.chldcnt();
    let o = e.call(leaf::MEM_SEPT_ADD, regs(r2 | 1, TDR, 0x31_0000));
    assert_eq!(st(&o), 0);
    assert_eq!(e.entry(r2, 1), Some((SeptState::NlMapped, 0x31_0000)));
    assert_eq!(e.entry(r2 + 0x5000, 0), Some((SeptState::Free, 0)));
    assert_eq!(
        e.m.pamt(0x31_0000),
        PamtEntry { pt: PageType::Ept, owner: TDR, bepoch: 0, size: PageSize::K4 }
    );
    assert_eq!(e.chldcnt(), before + 1);
    assert_eq!(o.refs.total(), 3 + 512 + 1); // walk to the PDE, table fill, entry write
    // Over an existing leaf: STATE_INCORRECT with the leaf's view.
    e.set(R + 0x40_0000, 1, SeptState::Pending, H2M);
    let o = e.call(leaf::MEM_SEPT_ADD, regs((R + 0x40_0000) | 1, TDR, 0x32_0000));
    assert_eq!(st(&o), 0xC000_0B0D_0000_0001);
    assert_eq!(o.regs.rdx, 0x0201);
    // Over NL_MAPPED without allow_existing: STATE_INCORRECT, RDX = 0x8401 (spec/tdx.md V17).
    let o = e.call(leaf::MEM_SEPT_ADD, regs(r2 | 1, TDR, 0x32_0000));
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B0D_0000_0001, 0x8401));
    // Version 1 with allow_existing: success, the unused page back in R8 with bit 63.
    let o = e.callv(
        leaf::MEM_SEPT_ADD,
        1,
        Regs {
            rcx: r2 | 1,
            rdx: TDR | 1,
            r8: 0x32_0000,
            r9: NULL_PA,
            r10: NULL_PA,
            r11: NULL_PA,
            ..Regs::default()
        },
    );
    assert_eq!(st(&o), 0);
    assert_eq!(o.regs.r8, 0x32_0000 | 1 << 63);
    // Version 1 adding a table returns R8 = NULL_PA.
    let r3 = R + 0x60_0000;
    let o = e.callv(
        leaf::MEM_SEPT_ADD,
        1,
        Regs {
            rcx: r3 | 1,
            rdx: TDR,
            r8: 0x32_0000,
            r9: NULL_PA,
            r10: NULL_PA,
            r11: NULL_PA,
            ..Regs::default()
        },
    );
    assert_eq!((st(&o), o.regs.r8), (0, NULL_PA));
    // A page that is not PT_NDA.
    let o = e.call(leaf::MEM_SEPT_ADD, regs((R + 0x80_0000) | 1, TDR, 0x31_0000));
    assert_eq!(st(&o), 0xC000_0300_0000_0008);
    // Version 2 does not exist.
    assert_eq!(
        st(&e.callv(leaf::MEM_SEPT_ADD, 2, regs(r2 | 1, TDR, 0x33_0000))),
        0xC000_0100_0000_0000
    );
    // Level 0 is not a SEPT.ADD level.
    assert_eq!(st(&e.call(leaf::MEM_SEPT_ADD, regs(r2, TDR, 0x33_0000))), 0xC000_0100_0000_0001);
}

#[test]
fn page_add_and_mr_extend() {
    let mut e = Env::new(OpState::Initialized);
    let src = 0x9000_0000;
    let o =
        e.call(leaf::MEM_PAGE_ADD, Regs { rcx: G, rdx: TDR, r8: H, r9: src, ..Regs::default() });
    assert_eq!(st(&o), 0);
    assert_eq!(e.entry(G, 0), Some((SeptState::Mapped, H)));
    assert_eq!(e.m.pamt(H).pt, PageType::Reg);
    let mrtd = e.m.td_state(TDR).unwrap().mrtd;
    for chunk in 0..16u64 {
        assert_eq!(st(&e.call(leaf::MR_EXTEND, regs(G + chunk * 256, TDR, 0))), 0);
    }
    assert_ne!(e.m.td_state(TDR).unwrap().mrtd, mrtd);
    assert_eq!(e.m.td_state(TDR).unwrap().measured_chunks, 17);
    // MR.EXTEND: misaligned, not present (PENDING leaf: the walk needs RWX).
    assert_eq!(st(&e.call(leaf::MR_EXTEND, regs(G + 8, TDR, 0))), 0xC000_0100_0000_0001);
    e.set(G + 0x1000, 0, SeptState::Pending, H + 0x1000);
    let o = e.call(leaf::MR_EXTEND, regs(G + 0x1000, TDR, 0));
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B03_0000_0001, 0x0200));
    // PAGE.ADD: a private KeyID in the source, an occupied entry.
    let keyed_src = src | (u64::from(HKID) << 46);
    let o = e.call(
        leaf::MEM_PAGE_ADD,
        Regs { rcx: G + 0x2000, rdx: TDR, r8: H + 0x2000, r9: keyed_src, ..Regs::default() },
    );
    assert_eq!(st(&o), 0xC000_0100_0000_0009);
    let o = e.call(
        leaf::MEM_PAGE_ADD,
        Regs { rcx: G, rdx: TDR, r8: H + 0x2000, r9: src, ..Regs::default() },
    );
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B0D_0000_0001, 0x0400));
    // After finalisation PAGE.ADD and MR.EXTEND are refused by OP_STATE.
    e.m.set_op_state_direct(TDR, OpState::Runnable).unwrap();
    let o = e.call(
        leaf::MEM_PAGE_ADD,
        Regs { rcx: G + 0x2000, rdx: TDR, r8: H + 0x2000, r9: src, ..Regs::default() },
    );
    assert_eq!(st(&o), TDX_OP_STATE_INCORRECT);
    assert_eq!(st(&e.call(leaf::MR_EXTEND, regs(G, TDR, 0))), TDX_OP_STATE_INCORRECT);
}

#[test]
fn aug_cases() {
    let mut e = Env::new(OpState::Runnable);
    // 2M AUG over a 2M HPA range that holds an assigned 4K page.
    e.set(G, 0, SeptState::Mapped, H2M + 0x5000);
    let r2 = R + 0x20_0000;
    let o = e.aug(r2 | 1, H2M);
    assert_eq!(st(&o), 0xC000_0300_0000_0008);
    assert_eq!(e.entry(r2, 1), Some((SeptState::Free, 0)));
    // A free 2M range succeeds and counts 512.
    let before = e.chldcnt();
    assert_eq!(st(&e.aug(r2 | 1, H2M + 0x20_0000)), 0);
    assert_eq!(e.entry(r2, 1), Some((SeptState::Pending, H2M + 0x20_0000)));
    assert_eq!(e.m.pamt(H2M + 0x20_0000 + 0x7000).size, PageSize::M2);
    assert_eq!(e.chldcnt(), before + 512);
    // AUG over a PENDING entry: STATE_INCORRECT, RDX = 0x0200.
    assert_eq!(st(&e.aug(G + 0x1000, H)), 0);
    let o = e.aug(G + 0x1000, H + 0x1000);
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B0D_0000_0001, 0x0200));
    // 4K AUG inside a 2M page: the walk stops at the 2M leaf.
    let o = e.aug(r2 + 0x1000, H + 0x2000);
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B00_0000_0001, 0x0201));
    // Misaligned 2M page, level 2, reserved bits.
    assert_eq!(st(&e.aug((R + 0x40_0000) | 1, H2M + 0x1000)), 0xC000_0100_0000_0008);
    assert_eq!(st(&e.aug(R | 2, H2M)), 0xC000_0100_0000_0001);
    assert_eq!(st(&e.aug(G | 0x8, H)), 0xC000_0100_0000_0001);
    // The walk reads one entry per level: PML4, PDPT, PD, PT.
    let o = e.aug(G + 0x9000, H + 0x9000);
    assert_eq!(st(&o), 0);
    // Four entry reads (PML4E, PDPTE, PDE, PTE), then the entry write.
    assert_eq!(o.refs.total(), 5);
    assert_eq!(o.refs.addrs()[3], o.refs.addrs()[4]);
}

#[test]
fn gpa_validity_and_tdr_operands() {
    let mut e = Env::new(OpState::Runnable);
    // Shared bit 47 set in a private operand.
    assert_eq!(st(&e.aug(G | 1 << 47, H)), 0xC000_0100_0000_0001);
    // Bits 51:48 with GPAW 48.
    assert_eq!(st(&e.aug(G | 1 << 48, H)), 0xC000_0100_0000_0001);
    // A TDR that is not a TDR page.
    assert_eq!(st(&e.aug(G, H)), 0);
    assert_eq!(
        st(&e.call(leaf::MEM_PAGE_AUG, regs(G + 0x1000, H, H + 0x1000))),
        0xC000_0300_0000_0002
    );
    assert_eq!(
        st(&e.call(leaf::MEM_PAGE_AUG, regs(G + 0x1000, TDR + 8, H + 0x1000))),
        0xC000_0100_0000_0002
    );
    // A narrower MAX_PA: bit 46 is above it.
    let cfg = TdxConfig { max_pa: 46, hkid_bits: 6, ..TdxConfig::default() };
    let mut e = Env::with_config(OpState::Runnable, cfg);
    assert_eq!(st(&e.aug(G | 1 << 46, H)), 0xC000_0100_0000_0001);
}

#[test]
fn block_cases() {
    let mut e = Env::new(OpState::Runnable);
    e.set(G, 0, SeptState::Pending, H);
    assert_eq!(st(&e.block(G)), 0);
    assert_eq!(e.entry(G, 0), Some((SeptState::PendingBlocked, H)));
    // Already blocked: informational status with the view.
    let o = e.block(G);
    assert_eq!(st(&o), 0x0000_0B07_0000_0001);
    assert_eq!(o.regs.rdx, 0x0300);
    // FREE: STATE_INCORRECT.
    let o = e.block(G + 0x1000);
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B0D_0000_0001, 0x0000));
    // A non-leaf: NL_MAPPED → NL_BLOCKED, BEPOCH on the table page.
    e.m.set_epoch_direct(TDR, 9, [0, 0]).unwrap();
    assert_eq!(st(&e.block(R | 1)), 0);
    assert_eq!(e.entry(R, 1), Some((SeptState::NlBlocked, PT)));
    assert_eq!(e.m.pamt(PT).bepoch, 9);
    // The walk below a blocked non-leaf fails.
    let o = e.block(G + 0x2000);
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B00_0000_0001, 0x8101));
}

#[test]
fn track_cases() {
    let mut e = Env::new(OpState::Runnable);
    assert_eq!(st(&e.track()), 0);
    assert_eq!(e.m.td(TDR).unwrap().epoch, 2);
    assert_eq!(st(&e.call(leaf::MEM_TRACK, regs(H, 0, 0))), 0xC000_0300_0000_0001);
    // Refused before the TD has its TDCS (no such TD: the page is not a TDR).
    let mut m = TdxModule::new(TdxConfig::default());
    let mut t = PhysMemTables::new();
    assert_eq!(
        m.seamcall(&mut t, leaf::MEM_TRACK, 0, regs(TDR, 0, 0)).status(),
        0xC000_0300_0000_0001
    );
}

#[test]
fn sept_remove_cases() {
    let mut e = Env::new(OpState::Runnable);
    e.set(G, 0, SeptState::Mapped, H);
    // A live child: EPT_PAGE_NOT_FREE (after BLOCK + TRACK of the non-leaf).
    assert_eq!(st(&e.block(R | 1)), 0);
    assert_eq!(st(&e.track()), 0);
    let o = e.call(leaf::MEM_SEPT_REMOVE, regs(R | 1, TDR, 0));
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B0E_0000_0001, 0x8101));
    // Not blocked in a running TD.
    let mut e = Env::new(OpState::Runnable);
    let o = e.call(leaf::MEM_SEPT_REMOVE, regs(R | 1, TDR, 0));
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B06_0000_0001, 0x8401));
    // Empty table, blocked and tracked: removed, RCX = the table.
    assert_eq!(st(&e.block(R | 1)), 0);
    assert_eq!(st(&e.track()), 0);
    let before = e.chldcnt();
    let o = e.call(leaf::MEM_SEPT_REMOVE, regs(R | 1, TDR, 0));
    assert_eq!((st(&o), o.regs.rcx), (0, PT));
    assert_eq!(e.entry(R, 1), Some((SeptState::Free, 0)));
    assert_eq!(e.m.pamt(PT).pt, PageType::Nda);
    assert_eq!(e.chldcnt(), before - 1);
    assert!(!e.t.is_table(Spa::new(PT)));
}

#[test]
fn unblock_cases() {
    let mut e = Env::new(OpState::Runnable);
    e.set(G, 0, SeptState::Mapped, H);
    assert_eq!(st(&e.block(G)), 0);
    // Without TRACK: TLB_TRACKING_NOT_DONE | 0x92.
    let o = e.call(leaf::MEM_RANGE_UNBLOCK, regs(G, TDR, 0));
    assert_eq!(st(&o), 0xC000_0B08_0000_0092);
    assert_eq!(st(&e.track()), 0);
    assert_eq!(st(&e.call(leaf::MEM_RANGE_UNBLOCK, regs(G, TDR, 0))), 0);
    assert_eq!(e.entry(G, 0), Some((SeptState::Mapped, H)));
    assert!(e.m.private_access(&e.t, TDR, G, true).is_ok());
    // Unblocking a MAPPED entry is STATE_INCORRECT.
    let o = e.call(leaf::MEM_RANGE_UNBLOCK, regs(G, TDR, 0));
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B0D_0000_0001, 0x0400));
}

#[test]
fn demote_and_promote() {
    let mut e = Env::new(OpState::Initialized);
    let r2 = R + 0x20_0000;
    e.set(r2, 1, SeptState::Mapped, H2M);
    let before = e.chldcnt();
    let o = e.call(leaf::MEM_PAGE_DEMOTE, regs(r2 | 1, TDR, 0x34_0000));
    assert_eq!(st(&o), 0);
    assert_eq!(e.entry(r2, 1), Some((SeptState::NlMapped, 0x34_0000)));
    assert_eq!(e.entry(r2 + 0x7000, 0), Some((SeptState::Mapped, H2M + 0x7000)));
    assert_eq!(e.m.pamt(H2M + 0x7000).size, PageSize::K4);
    assert_eq!(e.chldcnt(), before + 1);
    // Mixed children: INVALID_PROMOTE_CONDITIONS.
    let o = e.remove(r2 + 0x7000);
    assert_eq!(st(&o), 0);
    let o = e.call(leaf::MEM_PAGE_PROMOTE, regs(r2 | 1, TDR, 0));
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B09_0000_0001, 0x8401));
    // The children are unlocked again.
    assert_eq!(st(&e.aug(r2 + 0x7000, H2M + 0x7000)), 0);
    assert_eq!(e.accept(r2 + 0x7000).status(), 0);
    // Uniform children: PROMOTE back to a 2M leaf, RCX = the freed table.
    let o = e.call(leaf::MEM_PAGE_PROMOTE, regs(r2 | 1, TDR, 0));
    assert_eq!((st(&o), o.regs.rcx), (0, 0x34_0000));
    assert_eq!(e.entry(r2, 1), Some((SeptState::Mapped, H2M)));
    assert_eq!(e.m.pamt(H2M + 0x7000).size, PageSize::M2);
    assert_eq!(e.m.pamt(0x34_0000).pt, PageType::Nda);
    assert_eq!(e.chldcnt(), before);
    // In a running TD DEMOTE needs BLOCK first.
    e.m.set_op_state_direct(TDR, OpState::Runnable).unwrap();
    let o = e.call(leaf::MEM_PAGE_DEMOTE, regs(r2 | 1, TDR, 0x34_0000));
    assert_eq!((st(&o), o.regs.rdx), (0xC000_0B06_0000_0001, 0x0401));
}

#[test]
fn relocate_cases() {
    let mut e = Env::new(OpState::Initialized);
    e.set(G, 0, SeptState::Mapped, H);
    assert_eq!(st(&e.call(leaf::MEM_PAGE_RELOCATE, regs(G, TDR, H))), 0xC000_0100_0000_0008);
    let o = e.call(leaf::MEM_PAGE_RELOCATE, regs(G, TDR, H + 0x5000));
    assert_eq!((st(&o), o.regs.rcx), (0, H));
    assert_eq!(e.entry(G, 0), Some((SeptState::Mapped, H + 0x5000)));
    assert_eq!(e.m.pamt(H).pt, PageType::Nda);
    assert_eq!(e.m.pamt(H + 0x5000).pt, PageType::Reg);
}

#[test]
fn reclaim_and_wbinvd_cases() {
    let mut e = Env::new(OpState::Runnable);
    e.set(G, 0, SeptState::Mapped, H);
    // RECLAIM before teardown: LIFECYCLE_STATE_INCORRECT, with type/owner/level reported.
    let o = e.call(leaf::PHYMEM_PAGE_RECLAIM, regs(H, 0, 0));
    assert_eq!(st(&o), TDX_LIFECYCLE_STATE_INCORRECT);
    assert_eq!((o.regs.rcx, o.regs.rdx, o.regs.r8), (3, TDR, 0));
    assert_eq!(
        st(&e.call(leaf::PHYMEM_PAGE_RECLAIM, regs(H + 0x1000, 0, 0))),
        0xC000_0300_0000_0001
    );
    // WBINVD of an assigned page.
    assert_eq!(st(&e.call(leaf::PHYMEM_PAGE_WBINVD, regs(H, 0, 0))), 0xC000_0300_0000_0001);
    // After teardown the page comes back; the TDR only once CHLDCNT is 0.
    e.m.set_lifecycle_direct(TDR, Lifecycle::Teardown).unwrap();
    assert_eq!(
        st(&e.call(leaf::PHYMEM_PAGE_RECLAIM, regs(TDR, 0, 0))),
        TDX_TD_ASSOCIATED_PAGES_EXIST
    );
    let before = e.chldcnt();
    assert_eq!(st(&e.call(leaf::PHYMEM_PAGE_RECLAIM, regs(H, 0, 0))), 0);
    assert_eq!(e.chldcnt(), before - 1);
    // Memory leaves on a torn-down TD.
    assert_eq!(st(&e.aug(G + 0x1000, H + 0x1000)), TDX_TD_KEYS_NOT_CONFIGURED);
}

#[test]
fn leaf_numbers_round_trip() {
    for l in Leaf::ALL {
        assert_eq!(Leaf::from_number(l.number()), Some(l));
    }
    assert_eq!(Leaf::from_number(11), None);
    assert_eq!(Leaf::MemPageAug.name(), "TDH.MEM.PAGE.AUG");
}

#[test]
fn dispatcher_errors() {
    let mut e = Env::new(OpState::Runnable);
    assert_eq!(st(&e.call(11, regs(0, 0, 0))), 0xC000_0100_0000_0000); // MNG.RD: not modelled
    assert_eq!(st(&e.call(0xFFFF, regs(0, 0, 0))), 0xC000_0100_0000_0000);
    assert_eq!(st(&e.callv(leaf::MEM_PAGE_AUG, 1, regs(G, TDR, H))), 0xC000_0100_0000_0000);
    let s = e.m.stats();
    assert_eq!(s.seamcalls_by_leaf.get("UNKNOWN"), Some(&2));
    assert_eq!(s.seamcalls_by_status.get("TDX_OPERAND_INVALID"), Some(&3));
}

#[test]
fn five_level_sept_for_gpaw_52() {
    let mut m = TdxModule::new(TdxConfig { gpaw: 52, ..TdxConfig::default() });
    let mut t = PhysMemTables::new();
    let mut f = LinearFrames::new(Spa::new(FRAMES), Spa::new(FRAMES + 0x10_0000));
    m.create_td_direct(&mut t, TDR, HKID, OpState::Runnable, ROOT, 52).unwrap();
    assert_eq!(m.sept_root(TDR), Some((Spa::new(ROOT), 4)));
    let g = (1u64 << 50) | G; // legal below the shared bit 51
    m.set_sept_direct(&mut t, &mut f, TDR, g & !0x1F_FFFF, 1, SeptState::NlMapped, PT).unwrap();
    let o = m.seamcall(&mut t, leaf::MEM_PAGE_AUG, 0, regs(g, TDR, H));
    assert_eq!(o.status(), 0);
    assert_eq!(o.refs.total(), 6); // five entry reads and the write
    let shared = m.seamcall(&mut t, leaf::MEM_PAGE_AUG, 0, regs(g | 1 << 51, TDR, H + 0x1000));
    assert_eq!(shared.status(), 0xC000_0100_0000_0001);
}

// -------------------------------------------------------------------------------------------
// Locks
// -------------------------------------------------------------------------------------------

#[test]
fn block_while_aug_in_flight_is_busy() {
    let mut e = Env::new(OpState::Runnable);
    e.set(G + 0x1000, 0, SeptState::Mapped, H + 0x1000);
    let aug = e.m.begin(&mut e.t, leaf::MEM_PAGE_AUG, 0, regs(G, TDR, H)).unwrap();
    assert_eq!(st(&e.block(G + 0x1000)), 0x8000_0200_0000_0092);
    // Shared holders coexist: another AUG elsewhere proceeds.
    assert_eq!(st(&e.aug(G + 0x2000, H + 0x2000)), 0);
    // The same entry is locked (TDEL): BUSY | RCX with the view.
    let o = e.aug(G, H + 0x3000);
    assert_eq!((st(&o), o.regs.rdx), (0x8000_0200_0000_0001, 0x0000));
    // The page's PAMT entry is locked too.
    assert!(e.m.pamt_lock(H, PageSize::K4).is_exclusive());
    let o = e.m.finish(&mut e.t, aug);
    assert_eq!(st(&o), 0);
    assert_eq!(st(&e.block(G + 0x1000)), 0);
    assert!(e.m.pamt_lock(H, PageSize::K4).is_free());
}

#[test]
fn track_while_vp_enter_holds_the_epoch_lock() {
    let mut e = Env::new(OpState::Runnable);
    let f = e.m.vp_enter_begin(&mut e.t, VCPU, false).unwrap();
    assert_eq!(st(&e.track()), 0x8000_0200_0000_00A9);
    let cost = e.m.vp_enter_end(&mut e.t, f);
    assert!(cost > sim_core::Cycles::ZERO);
    assert_eq!(st(&e.track()), 0);
    // The zero-step filter takes the tree lock exclusive: SEPT.ADD (shared) is busy meanwhile,
    // and an entry while a BLOCK is in flight fails with BUSY | 0x92.
    e.kick();
    let f = e.m.vp_enter_begin(&mut e.t, VCPU, true).unwrap();
    let o = e.call(leaf::MEM_SEPT_ADD, regs((R + 0x20_0000) | 1, TDR, 0x31_0000));
    assert_eq!(st(&o), 0x8000_0200_0000_0092);
    let _ = e.m.vp_enter_end(&mut e.t, f);
    e.kick();
    e.set(G, 0, SeptState::Mapped, H);
    let blk = e.m.begin(&mut e.t, leaf::MEM_RANGE_BLOCK, 0, regs(G, TDR, 0)).unwrap();
    let o = e.m.vp_enter_begin(&mut e.t, VCPU, true).unwrap_err();
    assert_eq!(o.status(), 0x8000_0200_0000_0092);
    assert_eq!(e.m.td(TDR).unwrap().refcount, [0, 0]);
    assert_eq!(st(&e.m.finish(&mut e.t, blk)), 0);
    // An entering vCPU cannot enter twice.
    e.enter();
    let o = e.m.vp_enter_begin(&mut e.t, VCPU, false).unwrap_err();
    assert_eq!(o.status(), TDX_VCPU_ASSOCIATED);
    // VP.ENTER as one SEAMCALL enters and exits.
    e.kick();
    let o = e.call(leaf::VP_ENTER, regs(VCPU, 0, 0));
    assert_eq!(st(&o), VP_ENTER_IMMEDIATE_EXIT);
    assert!(!e.m.vcpu_in_guest(VCPU));
    assert_eq!(e.m.td(TDR).unwrap().refcount, [0, 0]);
}

#[test]
fn accept_against_host_locks() {
    let mut e = Env::new(OpState::Runnable);
    e.set(G, 0, SeptState::Pending, H);
    // A host leaf holds the entry: the guest gets BUSY.
    let blk = e.m.begin(&mut e.t, leaf::MEM_RANGE_BLOCK, 0, regs(G, TDR, 0)).unwrap();
    assert_eq!(e.accept(G).status(), 0x8000_0200_0000_0001);
    let _ = e.m.finish(&mut e.t, blk);
    // Host priority: while a SEPT.ADD (allow_existing) holds R's 2M entry, a host REMOVE on it
    // fails and flags HP; once released, the guest's 2M ACCEPT backs off with
    // BUSY_HOST_PRIORITY until a host acquires the entry.
    let add = e.m.begin(&mut e.t, leaf::MEM_SEPT_ADD, 0, regs(R | 1, TDR | 1, 0x31_0000)).unwrap();
    assert_eq!(e.accept(R | 1).status(), 0x8000_0200_0000_0001);
    assert_eq!(st(&e.remove(R | 1)), 0x8000_0200_0000_0001);
    assert_eq!(st(&e.m.finish(&mut e.t, add)), 0);
    assert_eq!(e.accept(R | 1).status(), 0x8000_0204_0000_0001);
    // A host acquisition clears HP; then the guest sees the real answer (a table is there).
    assert_eq!(st(&e.remove(R | 1)), 0xC000_0B0D_0000_0001);
    assert_eq!(e.accept(R | 1).status(), 0xC000_0B0B_0000_0001);
    // The guest holds the entry: a host leaf on it gets BUSY | RCX.
    let mut e = Env::new(OpState::Runnable);
    e.set(G, 0, SeptState::Pending, H);
    let acc = e.m.accept_begin(&mut e.t, TDR, VCPU, regs(G, 0, 0)).unwrap();
    assert_eq!(st(&e.block(G)), 0x8000_0200_0000_0001);
    assert_eq!(e.m.accept_finish(&mut e.t, acc).status(), 0);
    assert_eq!(e.entry(G, 0), Some((SeptState::Mapped, H)));
}

// -------------------------------------------------------------------------------------------
// Guest side
// -------------------------------------------------------------------------------------------

#[test]
fn accept_outcomes() {
    let mut e = Env::new(OpState::Runnable);
    let c = TdxConfig::default().costs;
    // 4K PENDING → MAPPED.
    e.set(G, 0, SeptState::Pending, H);
    let o = e.accept(G);
    assert_eq!((o.status(), o.exit), (0, None));
    assert_eq!(o.cost, c.tdcall_round_trip + c.accept_4k);
    assert_eq!(e.entry(G, 0), Some((SeptState::Mapped, H)));
    assert_eq!(e.m.private_access(&e.t, TDR, G + 0x10, true).unwrap().hpa, Spa::new(H + 0x10));
    // Again: ALREADY_ACCEPTED | level 0.
    assert_eq!(e.accept(G).status(), 0x0000_0B0A_0000_0000);
    // FREE entry: TD exit, EEQ ACCEPT with requested level 0, error level 0, FREE, not leaf.
    let o = e.accept(G + 0x1000);
    let x = o.exit.unwrap();
    assert_eq!(
        (x.eeq_type, x.req_level, x.err_level, x.err_state, x.err_is_leaf),
        (1, 0, 0, 0, false)
    );
    assert_eq!(x.eeq, 1);
    assert_eq!(x.gpa, G + 0x1000);
    // 2M request on R, which holds a 4K table: PAGE_SIZE_MISMATCH | 1.
    assert_eq!(e.accept(R | 1).status(), 0xC000_0B0B_0000_0001);
    // 2M PENDING → MAPPED, 512 × zeroing.
    let r2 = R + 0x20_0000;
    e.set(r2, 1, SeptState::Pending, H2M);
    // A 4K request inside the PENDING 2M leaf exits (the VMM must demote).
    let x = e.accept(r2 + 0x3000).exit.unwrap();
    assert_eq!((x.req_level, x.err_level, x.err_state, x.err_is_leaf), (0, 1, 2, true));
    assert_eq!(x.eeq, 1 | ((1u64 << 3 | 2 << 6 | 1 << 14) << 32));
    let o = e.accept(r2 | 1);
    assert_eq!(o.status(), 0);
    assert_eq!(o.cost, c.tdcall_round_trip + c.accept_4k.times(512));
    // A 4K request inside the now MAPPED 2M page: ALREADY_ACCEPTED | 1.
    assert_eq!(e.accept(r2 + 0x3000).status(), 0x0000_0B0A_0000_0001);
    // A BLOCKED leaf at the level exits with its state.
    e.set(G + 0x2000, 0, SeptState::Blocked, H + 0x2000);
    let x = e.accept(G + 0x2000).exit.unwrap();
    assert_eq!((x.err_state, x.err_is_leaf), (1, true));
    // Bad operands.
    assert_eq!(e.accept(G | 2).status(), 0xC000_0100_0000_0001);
    assert_eq!(e.accept(G | 1 << 47).status(), 0xC000_0100_0000_0001);
    let s = e.m.stats();
    assert_eq!(s.accepts_by_status.get("TD_EXIT"), Some(&3));
    assert_eq!(s.accepts_by_status.get("TDX_PAGE_ALREADY_ACCEPTED"), Some(&2));
}

#[test]
fn accept_exit_leaves_the_guest() {
    let mut e = Env::new(OpState::Runnable);
    e.enter();
    assert_eq!(e.m.td(TDR).unwrap().refcount, [0, 1]);
    assert!(e.accept(G).exit.is_some());
    assert!(!e.m.vcpu_in_guest(VCPU));
    assert_eq!(e.m.td(TDR).unwrap().refcount, [0, 0]);
}

#[test]
fn private_access_faults() {
    let e = Env::new(OpState::Runnable);
    assert_eq!(
        e.m.private_access(&e.t, TDR, G, false),
        Err(PrivateFault::EptViolation { eeq_type: 0, level: 0, state: Some(SeptState::Free) })
    );
    assert_eq!(e.m.private_access(&e.t, TDR, G | 1 << 47, false), Err(PrivateFault::Shared));
    assert_eq!(
        e.m.private_access(&e.t, TDR, G | 1 << 50, false),
        Err(PrivateFault::ReservedGpaBits)
    );
    assert_eq!(
        e.m.private_access(&e.t, TDR, R + 0x20_0000, false),
        Err(PrivateFault::EptViolation { eeq_type: 0, level: 1, state: Some(SeptState::Free) })
    );
}

#[test]
fn map_gpa_validity() {
    let w = GpaWidth::W48;
    let ok = TdxModule::map_gpa_check(w, 1 << 47, 0x20_0000);
    assert_eq!((ok.status, ok.to_private), (TDVMCALL_STATUS_SUCCESS, false));
    assert!(TdxModule::map_gpa_check(w, 0x1000, 0x1000).to_private);
    assert_eq!(TdxModule::map_gpa_check(w, 0x1000, 0x800).status, TDVMCALL_STATUS_ALIGN_ERROR);
    assert_eq!(TdxModule::map_gpa_check(w, 0x1000, 0).status, TDVMCALL_STATUS_INVALID_OPERAND);
    // Crossing the shared bit, beyond GPAW, wrapping.
    assert_eq!(
        TdxModule::map_gpa_check(w, (1 << 47) - 0x1000, 0x2000).status,
        TDVMCALL_STATUS_INVALID_OPERAND
    );
    assert_eq!(
        TdxModule::map_gpa_check(w, 1 << 48, 0x1000).status,
        TDVMCALL_STATUS_INVALID_OPERAND
    );
    assert_eq!(
        TdxModule::map_gpa_check(w, u64::MAX - 0xFFF, 0x2000).status,
        TDVMCALL_STATUS_INVALID_OPERAND
    );
}

// -------------------------------------------------------------------------------------------
// Lifecycle through SEAMCALLs
// -------------------------------------------------------------------------------------------

#[test]
fn lifecycle_from_nothing_to_teardown() {
    let mut m = TdxModule::new(TdxConfig::default());
    let mut t = PhysMemTables::new();
    let sc = |m: &mut TdxModule, t: &mut PhysMemTables<Spa>, l: u16, r: Regs| {
        m.seamcall(t, l, 0, r).status()
    };
    let tdr = 0x20_0000;
    let tdcx: Vec<u64> = (1..=6).map(|i| tdr + i * 0x1000).collect();
    let tdvpr = 0x21_0000;
    let tdvpx: Vec<u64> = (1..=5).map(|i| tdvpr + i * 0x1000).collect();
    let tables = [0x22_0000u64, 0x22_1000, 0x22_2000];
    let (gpa, page, src) = (0x1_0000_0000u64, 0x5000_0000u64, 0x9000_0000u64);
    assert_eq!(sc(&mut m, &mut t, leaf::MNG_CREATE, regs(tdr, 3, 0)), 0xC000_0100_0000_0002);
    assert_eq!(sc(&mut m, &mut t, leaf::MNG_CREATE, regs(tdr, 16, 0)), 0);
    assert_eq!(
        sc(&mut m, &mut t, leaf::MNG_CREATE, regs(tdr + 0x10_0000, 16, 0)),
        TDX_HKID_NOT_FREE
    );
    assert_eq!(m.td(tdr).unwrap().lifecycle, Lifecycle::HkidAssigned);
    assert_eq!(
        sc(&mut m, &mut t, leaf::MNG_ADDCX, regs(tdcx[0], tdr, 0)),
        TDX_TD_KEYS_NOT_CONFIGURED
    );
    assert_eq!(sc(&mut m, &mut t, leaf::MNG_KEY_CONFIG, regs(tdr, 0, 0)), 0);
    assert_eq!(
        sc(&mut m, &mut t, leaf::MNG_KEY_CONFIG, regs(tdr, 0, 0)),
        TDX_LIFECYCLE_STATE_INCORRECT
    );
    assert_eq!(sc(&mut m, &mut t, leaf::MNG_INIT, regs(tdr, src, 0)), TDX_TDCS_NOT_ALLOCATED);
    for &p in &tdcx {
        assert_eq!(sc(&mut m, &mut t, leaf::MNG_ADDCX, regs(p, tdr, 0)), 0);
    }
    assert_eq!(m.sept_root(tdr), Some((Spa::new(tdcx[3]), 3)));
    assert_eq!(sc(&mut m, &mut t, leaf::MNG_INIT, regs(tdr, src + 8, 0)), 0xC000_0100_0000_0002);
    assert_eq!(sc(&mut m, &mut t, leaf::MNG_INIT, regs(tdr, src, 0)), 0);
    assert_eq!(m.td(tdr).unwrap().op_state, OpState::Initialized);
    assert_eq!(m.td(tdr).unwrap().epoch, 1);
    assert_eq!(sc(&mut m, &mut t, leaf::MR_FINALIZE, regs(tdr, 0, 0)), TDX_NO_VCPUS);
    assert_eq!(sc(&mut m, &mut t, leaf::VP_CREATE, regs(tdvpr, tdr, 0)), 0);
    assert_eq!(sc(&mut m, &mut t, leaf::VP_INIT, regs(tdvpr, 0, 0)), TDX_TDCX_NUM_INCORRECT);
    for &p in &tdvpx {
        assert_eq!(sc(&mut m, &mut t, leaf::VP_ADDCX, regs(p, tdvpr, 0)), 0);
    }
    assert_eq!(sc(&mut m, &mut t, leaf::VP_INIT, regs(tdvpr, 0, 0)), 0);
    assert_eq!(sc(&mut m, &mut t, leaf::VP_INIT, regs(tdvpr, 0, 0)), 0xC000_0700_0000_0002);
    for (i, &tb) in tables.iter().enumerate() {
        let level = 3 - u8::try_from(i).unwrap();
        let at = gpa & !(level_bytes(level) - 1);
        assert_eq!(sc(&mut m, &mut t, leaf::MEM_SEPT_ADD, regs(at | u64::from(level), tdr, tb)), 0);
    }
    let add = Regs { rcx: gpa, rdx: tdr, r8: page, r9: src, ..Regs::default() };
    assert_eq!(sc(&mut m, &mut t, leaf::MEM_PAGE_ADD, add), 0);
    assert_eq!(sc(&mut m, &mut t, leaf::MR_EXTEND, regs(gpa, tdr, 0)), 0);
    assert_eq!(sc(&mut m, &mut t, leaf::VP_ENTER, regs(tdvpr, 0, 0)), TDX_OP_STATE_INCORRECT);
    assert_eq!(sc(&mut m, &mut t, leaf::MR_FINALIZE, regs(tdr, 0, 0)), 0);
    assert_eq!(m.td(tdr).unwrap().op_state, OpState::Runnable);
    assert_eq!(sc(&mut m, &mut t, leaf::VP_ENTER, regs(tdvpr, 0, 0)), VP_ENTER_IMMEDIATE_EXIT);
    // A runtime page.
    assert_eq!(sc(&mut m, &mut t, leaf::MEM_PAGE_AUG, regs(gpa + 0x1000, tdr, page + 0x1000)), 0);
    assert_eq!(m.accept(&mut t, tdr, tdvpr, regs(gpa + 0x1000, 0, 0)).status(), 0);
    // 6 TDCX + TDVPR + 5 TDVPX + 3 tables + 2 pages.
    assert_eq!(m.td(tdr).unwrap().chldcnt, 17);
    // Teardown.
    assert_eq!(sc(&mut m, &mut t, leaf::MNG_VPFLUSHDONE, regs(tdr, 0, 0)), TDX_FLUSHVP_NOT_DONE);
    assert_eq!(sc(&mut m, &mut t, leaf::VP_FLUSH, regs(tdvpr, 0, 0)), 0);
    assert_eq!(sc(&mut m, &mut t, leaf::VP_FLUSH, regs(tdvpr, 0, 0)), TDX_VCPU_NOT_ASSOCIATED);
    assert_eq!(sc(&mut m, &mut t, leaf::MNG_VPFLUSHDONE, regs(tdr, 0, 0)), 0);
    assert_eq!(m.td(tdr).unwrap().lifecycle, Lifecycle::Blocked);
    assert_eq!(
        sc(&mut m, &mut t, leaf::MEM_PAGE_AUG, regs(gpa + 0x2000, tdr, page + 0x2000)),
        TDX_TD_KEYS_NOT_CONFIGURED
    );
    assert_eq!(
        sc(&mut m, &mut t, leaf::PHYMEM_PAGE_RECLAIM, regs(page, 0, 0)),
        TDX_LIFECYCLE_STATE_INCORRECT
    );
    assert_eq!(sc(&mut m, &mut t, leaf::MNG_KEY_FREEID, regs(tdr, 0, 0)), TDX_WBCACHE_NOT_COMPLETE);
    assert_eq!(sc(&mut m, &mut t, leaf::PHYMEM_CACHE_WB, regs(1, 0, 0)), TDX_WBCACHE_RESUME_ERROR);
    assert_eq!(sc(&mut m, &mut t, leaf::PHYMEM_CACHE_WB, regs(0, 0, 0)), 0);
    assert_eq!(sc(&mut m, &mut t, leaf::MNG_KEY_FREEID, regs(tdr, 0, 0)), 0);
    assert_eq!(m.td(tdr).unwrap().lifecycle, Lifecycle::Teardown);
    assert_eq!(
        sc(&mut m, &mut t, leaf::PHYMEM_CACHE_WB, regs(0, 0, 0)),
        TDX_NO_HKID_READY_TO_WBCACHE
    );
    // Reclaim everything; the TDR last.
    assert_eq!(
        sc(&mut m, &mut t, leaf::PHYMEM_PAGE_RECLAIM, regs(tdr, 0, 0)),
        TDX_TD_ASSOCIATED_PAGES_EXIST
    );
    let pages: Vec<u64> = [page, page + 0x1000]
        .into_iter()
        .chain(tables)
        .chain(tdcx.iter().copied())
        .chain([tdvpr])
        .chain(tdvpx.iter().copied())
        .collect();
    for p in pages {
        let o = m.seamcall(&mut t, leaf::PHYMEM_PAGE_RECLAIM, 0, regs(p, 0, 0));
        assert_eq!((o.status(), o.regs.rdx), (0, tdr), "{p:#x}");
    }
    assert_eq!(m.td(tdr).unwrap().chldcnt, 0);
    let o = m.seamcall(&mut t, leaf::PHYMEM_PAGE_RECLAIM, 0, regs(tdr, 0, 0));
    assert_eq!((o.status(), o.regs.rcx, o.regs.rdx), (0, 4, 0));
    assert!(m.td(tdr).is_none());
    assert!(t.is_empty());
    assert_eq!(m.pamt(tdr).pt, PageType::Nda);
    // The HKID is free again.
    assert_eq!(sc(&mut m, &mut t, leaf::MNG_CREATE, regs(tdr, 16, 0)), 0);
    let s = m.stats();
    assert_eq!(s.seamcalls_by_leaf.get("TDH.MNG.ADDCX"), Some(&7));
}

// -------------------------------------------------------------------------------------------
// Properties
// -------------------------------------------------------------------------------------------

/// Count, by walking the whole S-EPT, the pages it references: leaves (HPA → 4K-equivalents)
/// and tables. Panics (test failure) if a page is referenced twice.
fn tree_pages(e: &Env) -> (BTreeMap<u64, u64>, BTreeMap<u64, ()>) {
    fn visit(
        t: &PhysMemTables<Spa>,
        table: u64,
        level: u8,
        leaves: &mut BTreeMap<u64, u64>,
        tables: &mut BTreeMap<u64, ()>,
    ) {
        for i in 0..512u64 {
            let raw = t.read(Spa::new(table + i * 8));
            let se = SeptEntry::from_raw(raw);
            let Some(s) = se.state() else { panic!("bad entry {raw:#x}") };
            if s.is_unmapped() {
                continue;
            }
            if s.is_non_leaf() {
                assert!(tables.insert(se.addr(), ()).is_none(), "table {:#x} twice", se.addr());
                visit(t, se.addr(), level - 1, leaves, tables);
            } else {
                let pages = level_bytes(level) >> 12;
                assert!(leaves.insert(se.leaf_hpa(level), pages).is_none(), "page twice");
            }
        }
    }
    let (root, rl) = e.m.sept_root(TDR).unwrap();
    let (mut leaves, mut tables) = (BTreeMap::new(), BTreeMap::new());
    visit(&e.t, root.raw(), rl, &mut leaves, &mut tables);
    (leaves, tables)
}

/// The invariants: CHLDCNT = 4K-equivalents of the TD's REG pages + its EPT pages + TDCX +
/// TDVPR pages; each REG/EPT page the PAMT gives the TD is referenced by exactly one S-EPT
/// entry, and every referenced page is so assigned; no lock is left held.
fn check_invariants(e: &Env, pool: &[u64], tables_pool: &[u64]) {
    let (leaves, tables) = tree_pages(e);
    let mut reg_4k = 0;
    let mut seen_reg = BTreeMap::new();
    for &p in pool {
        for size in [PageSize::K4, PageSize::M2] {
            if p & (size.bytes() - 1) != 0 {
                continue;
            }
            let pe = e.m.pamt_at(p, size);
            if pe.pt == PageType::Reg && pe.owner == TDR {
                reg_4k += size.pages_4k();
                seen_reg.insert(p, size.pages_4k());
            }
        }
    }
    let mut ept = 0;
    let mut seen_ept = BTreeMap::new();
    for &p in tables_pool {
        let pe = e.m.pamt_at(p, PageSize::K4);
        if pe.pt == PageType::Ept && pe.owner == TDR {
            ept += 1;
            seen_ept.insert(p, ());
        }
    }
    let td = e.m.td(TDR).unwrap();
    assert_eq!(td.chldcnt, reg_4k + ept + 2, "CHLDCNT"); // + root TDCX + TDVPR
    assert_eq!(seen_reg, leaves, "PAMT REG pages vs S-EPT leaves");
    assert_eq!(seen_ept, tables, "PAMT EPT pages vs S-EPT tables");
    let s = e.m.td_state(TDR).unwrap();
    assert!(s.tree_lock.is_free() && s.epoch_lock.is_free() && s.op_state_lock.is_free());
}

#[derive(Clone, Debug)]
enum Op {
    Aug {
        gpa: usize,
        big: bool,
        page: usize,
    },
    Accept {
        gpa: usize,
        big: bool,
    },
    Block {
        gpa: usize,
        level: u8,
    },
    Unblock {
        gpa: usize,
        level: u8,
    },
    Track,
    Kick,
    Enter,
    Remove {
        gpa: usize,
        big: bool,
    },
    SeptAdd {
        gpa: usize,
        level: u8,
        table: usize,
    },
    SeptRemove {
        gpa: usize,
        level: u8,
    },
    Demote {
        gpa: usize,
        table: usize,
    },
    Promote {
        gpa: usize,
    },
    Relocate {
        gpa: usize,
        page: usize,
    },
    /// An AUG in flight across another operation.
    Overlap {
        gpa: usize,
        page: usize,
        inner: Box<Op>,
    },
}

/// GPAs: two 1 GiB-apart regions so SEPT.ADD/REMOVE at levels 1–2 have room.
fn gpa_of(i: usize) -> u64 {
    let i = i as u64;
    R + (i % 3) * 0x20_0000 + (i / 3 % 2) * 0x4000_0000 + (i % 4) * 0x1000
}

fn page_of(i: usize, big: bool) -> u64 {
    let i = i as u64;
    if big { H2M + (i % 3) * 0x20_0000 } else { H2M + (i % 3) * 0x20_0000 + (i % 5) * 0x1000 }
}

fn table_of(i: usize) -> u64 {
    0x30_0000 + (i as u64 % 6) * 0x1000
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let leaf = prop_oneof![
        (0..12usize, any::<bool>(), 0..16usize).prop_map(|(gpa, big, page)| Op::Aug {
            gpa,
            big,
            page
        }),
        (0..12usize, any::<bool>()).prop_map(|(gpa, big)| Op::Accept { gpa, big }),
        (0..12usize, 0..3u8).prop_map(|(gpa, level)| Op::Block { gpa, level }),
        (0..12usize, 0..3u8).prop_map(|(gpa, level)| Op::Unblock { gpa, level }),
        Just(Op::Track),
        Just(Op::Kick),
        Just(Op::Enter),
        (0..12usize, any::<bool>()).prop_map(|(gpa, big)| Op::Remove { gpa, big }),
        (0..12usize, 1..3u8, 0..6usize).prop_map(|(gpa, level, table)| Op::SeptAdd {
            gpa,
            level,
            table
        }),
        (0..12usize, 1..3u8).prop_map(|(gpa, level)| Op::SeptRemove { gpa, level }),
        (0..12usize, 0..6usize).prop_map(|(gpa, table)| Op::Demote { gpa, table }),
        (0..12usize).prop_map(|gpa| Op::Promote { gpa }),
        (0..12usize, 0..16usize).prop_map(|(gpa, page)| Op::Relocate { gpa, page }),
    ];
    leaf.prop_recursive(1, 2, 1, |inner| {
        (0..12usize, 0..16usize, inner).prop_map(|(gpa, page, inner)| Op::Overlap {
            gpa,
            page,
            inner: Box::new(inner),
        })
    })
}

fn align_to(gpa: u64, level: u8) -> u64 {
    gpa & !(level_bytes(level) - 1)
}

fn run(e: &mut Env, op: &Op) {
    match *op {
        Op::Aug { gpa, big, page } => {
            let g = gpa_of(gpa);
            let r = if big { align_to(g, 1) | 1 } else { g };
            let _ = e.aug(r, page_of(page, big));
        }
        Op::Accept { gpa, big } => {
            let g = gpa_of(gpa);
            let r = if big { align_to(g, 1) | 1 } else { g };
            let _ = e.accept(r);
        }
        Op::Block { gpa, level } => {
            let _ = e.block(align_to(gpa_of(gpa), level) | u64::from(level));
        }
        Op::Unblock { gpa, level } => {
            let _ = e.call(
                leaf::MEM_RANGE_UNBLOCK,
                regs(align_to(gpa_of(gpa), level) | u64::from(level), TDR, 0),
            );
        }
        Op::Track => {
            let _ = e.track();
        }
        Op::Kick => {
            e.kick();
        }
        Op::Enter => {
            if let Ok(f) = e.m.vp_enter_begin(&mut e.t, VCPU, false) {
                let _ = e.m.vp_enter_end(&mut e.t, f);
            }
        }
        Op::Remove { gpa, big } => {
            let g = gpa_of(gpa);
            let _ = e.remove(if big { align_to(g, 1) | 1 } else { g });
        }
        Op::SeptAdd { gpa, level, table } => {
            let r = align_to(gpa_of(gpa), level) | u64::from(level);
            let _ = e.call(leaf::MEM_SEPT_ADD, regs(r, TDR, table_of(table)));
        }
        Op::SeptRemove { gpa, level } => {
            let r = align_to(gpa_of(gpa), level) | u64::from(level);
            let _ = e.call(leaf::MEM_SEPT_REMOVE, regs(r, TDR, 0));
        }
        Op::Demote { gpa, table } => {
            let _ = e.call(
                leaf::MEM_PAGE_DEMOTE,
                regs(align_to(gpa_of(gpa), 1) | 1, TDR, table_of(table)),
            );
        }
        Op::Promote { gpa } => {
            let _ = e.call(leaf::MEM_PAGE_PROMOTE, regs(align_to(gpa_of(gpa), 1) | 1, TDR, 0));
        }
        Op::Relocate { gpa, page } => {
            let _ = e.call(leaf::MEM_PAGE_RELOCATE, regs(gpa_of(gpa), TDR, page_of(page, false)));
        }
        Op::Overlap { gpa, page, ref inner } => {
            let f = e.m.begin(
                &mut e.t,
                leaf::MEM_PAGE_AUG,
                0,
                regs(gpa_of(gpa), TDR, page_of(page, false)),
            );
            run(e, inner);
            if let Ok(f) = f {
                let o = e.m.finish(&mut e.t, f);
                assert_eq!(o.status(), 0);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_invariants(
        runnable in any::<bool>(),
        ops in proptest::collection::vec(op_strategy(), 1..60),
    ) {
        let op = if runnable { OpState::Runnable } else { OpState::Initialized };
        let mut e = Env::new(op);
        // 4K tables under more 2M regions (region 2 of each 1G half stays FREE for 2M pages).
        for (i, g) in [R + 0x20_0000, R + 0x4000_0000, R + 0x4020_0000].into_iter().enumerate() {
            e.set(g, 1, SeptState::NlMapped, 0x37_0000 + i as u64 * 0x1000);
        }
        let pool: Vec<u64> = (0..3u64)
            .flat_map(|r| (0..512u64).map(move |i| H2M + r * 0x20_0000 + i * 0x1000))
            .collect();
        let tables_pool: Vec<u64> = (0..6u64)
            .map(|i| 0x30_0000 + i * 0x1000)
            .chain((0..3u64).map(|i| 0x37_0000 + i * 0x1000))
            .chain((0..32u64).map(|i| FRAMES + i * 0x1000))
            .collect();
        check_invariants(&e, &pool, &tables_pool);
        for op in &ops {
            run(&mut e, op);
            check_invariants(&e, &pool, &tables_pool);
        }
    }

    #[test]
    fn no_register_values_panic(
        leaf in prop_oneof![0u16..45, any::<u16>()],
        version in 0u8..3,
        rcx in any::<u64>(), rdx in any::<u64>(), r8 in any::<u64>(), r9 in any::<u64>(),
        pick in 0usize..6,
        state in 0u8..3,
    ) {
        let mut e = Env::new(if state == 0 { OpState::Initialized } else { OpState::Runnable });
        e.set(G, 0, SeptState::Mapped, H);
        if state == 2 {
            e.m.set_lifecycle_direct(TDR, Lifecycle::Teardown).unwrap();
        }
        // Mix random values with plausible ones so checks deep in the leaves run too.
        let plausible = [rcx, G, R | 1, TDR, VCPU, H];
        let r = Regs { rcx: plausible[pick], rdx: if pick % 2 == 0 { rdx } else { TDR }, r8, r9, r10: rcx, r11: rdx, rax: 0 };
        let _ = e.m.seamcall(&mut e.t, leaf, version, r);
        let _ = e.m.accept(&mut e.t, TDR, VCPU, Regs { rcx, ..Regs::default() });
        let _ = e.m.private_access(&e.t, TDR, rcx, pick % 2 == 0);
        let _ = TdxModule::map_gpa_check(GpaWidth::W52, rcx, rdx);
    }
}

/// `sept_entries` (the explorer's invariant scan) lists exactly the entries that are not FREE,
/// as `sept_entry` reads them one by one, over S-EPT states built by random `set`s at every
/// level (tables still all FREE, tables with a few entries, entries set back to FREE).
#[test]
fn sept_entries_lists_every_entry_that_is_not_free() {
    let mut rng = sim_core::Rng::new(12);
    let states = [SeptState::Mapped, SeptState::Pending, SeptState::Blocked, SeptState::Free];
    for round in 0..40 {
        let mut e = Env::new(OpState::Runnable);
        // 4K leaves and 2M leaves in R's 1 GiB region, some under new tables.
        let mut set = Vec::new();
        for _ in 0..1 + rng.below(12) {
            let level = u8::try_from(rng.below(2)).unwrap();
            let gpa = (R & !((1 << 30) - 1)) + (rng.below(8) << 21) + (rng.below(512) << 12);
            let gpa = gpa & !((4096u64 << (9 * u32::from(level))) - 1);
            let s = states[usize::try_from(rng.below(4)).unwrap()];
            if level == 0
                && e.entry(gpa & !((1 << 21) - 1), 1)
                    .is_some_and(|(st, _)| st != SeptState::NlMapped)
            {
                continue;
            }
            if e.m
                .set_sept_direct(&mut e.t, &mut e.f, TDR, gpa, level, s, 0x7000_0000 + (gpa >> 1))
                .is_ok()
            {
                set.push((gpa, level));
            }
        }
        let listed = e.m.sept_entries(&e.t, TDR);
        for (level, gpa, s) in &listed {
            assert_ne!(*s, SeptState::Free, "round {round}");
            assert_eq!(e.entry(*gpa, *level).map(|(st, _)| st), Some(*s), "round {round}");
        }
        for (gpa, level) in set {
            let want = e.entry(gpa, level).map(|(st, _)| st).filter(|&st| st != SeptState::Free);
            let got = listed.iter().find(|&&(l, g, _)| l == level && g == gpa).map(|&(_, _, s)| s);
            assert_eq!(got, want, "round {round}: gpa {gpa:#x} level {level}");
        }
    }
}
