//! Secure-EPT entries: their bits, the module's state encoding, the per-leaf allowed states,
//! the architectural view returned in RCX/RDX, and the module's S-EPT walk.
//!
//! An S-EPT entry is an EPT entry (SDM Vol. 3C §29.3.2; [`mmu_model::EptEntry`]) whose ignored
//! and some architectural bits carry the module's state (spec/tdx.md §1.2–§1.3; TDX module
//! `sept_manager.h` `SEPT_STATE_ENCODING_MASK`, `SEPT_CONVERT_TO_ENCODING`): the 7-bit state
//! encoding is D (bit 9) in encoding bit 0, TDEX/TDBW/TDB/TDP (bits 53–56) in encoding bits
//! 4:1, and IPAT/PS (bits 6–7) in encoding bits 6:5. A 4 KiB leaf therefore has PS set (bit 7
//! is ignored by hardware in a PTE).
//!
//! Entries live in S-EPT table pages in simulated physical memory ([`PhysMemTables`]) so the
//! machine's hardware walker can walk them. One simplification: the module writes the TD's
//! HKID into the address bits of S-EPT entries (`set_hkid_to_pa`); the model stores plain HPAs,
//! because simulated memory is keyed by [`Spa`] alone.

use mmu_model::{EptEntry, InlineVec, PhysMemTables};
use sim_core::{PageSize, Spa};
use std::fmt;

/// Bit positions of S-EPT entries (spec/tdx.md §1.2; TDX module `x86_defs.h`,
/// `sept_manager.h`).
pub mod bits {
    /// Read permission (bit 0).
    pub const R: u64 = 1 << 0;
    /// Write permission (bit 1).
    pub const W: u64 = 1 << 1;
    /// Supervisor execute (bit 2).
    pub const XS: u64 = 1 << 2;
    /// EPT memory type, bits 5:3.
    pub const MT_MASK: u64 = 7 << 3;
    /// Write-back memory type (6), which the module writes in every leaf
    /// (`sept_set_leaf_no_lock_internal`: `mt = MT_WB`).
    pub const MT_WB: u64 = 6 << 3;
    /// Ignore PAT (bit 6); also encoding bit 5 ("IPAT_TDMEM").
    pub const IPAT: u64 = 1 << 6;
    /// Page size / leaf (bit 7); also encoding bit 6. Set in every S-EPT leaf, 4 KiB included
    /// (`is_secure_ept_leaf_entry` tests it).
    pub const PS: u64 = 1 << 7;
    /// Dirty (bit 9); encoding bit 0 (migration states only).
    pub const D: u64 = 1 << 9;
    /// User execute (bit 10), set with RWX by the module (`SEPT_PERMISSIONS_RWX`).
    pub const XU: u64 = 1 << 10;
    /// TDEL, the per-entry lock (bit 11).
    pub const TDEL: u64 = 1 << 11;
    /// HP, host priority (bit 52): set by a failed host lock attempt.
    pub const HP: u64 = 1 << 52;
    /// TDEX, exported (bit 53).
    pub const TDEX: u64 = 1 << 53;
    /// TDBW, blocked for writing (bit 54).
    pub const TDBW: u64 = 1 << 54;
    /// TDB, blocked (bit 55).
    pub const TDB: u64 = 1 << 55;
    /// TDP, pending (bit 56).
    pub const TDP: u64 = 1 << 56;
    /// Suppress #VE (bit 63).
    pub const SVE: u64 = 1 << 63;
    /// Physical address, bits 51:12 (`SEPT_HPA_MASK`).
    pub const HPA_MASK: u64 = 0x000F_FFFF_FFFF_F000;
    /// The present bits the walks test (bits 2:0, the module's `rwx` field).
    pub const RWX_PRESENT: u64 = R | W | XS;
    /// The permissions the module grants (`SEPT_PERMISSIONS_RWX`: R, W, Xs, Xu).
    pub const PERMS: u64 = R | W | XS | XU;
    /// The state encoding bits (`SEPT_STATE_ENCODING_MASK`).
    pub const STATE_MASK: u64 = D | PS | TDP | TDB | TDBW | TDEX | IPAT;
    /// Bits of a leaf's architectural view (`SEPT_ARCH_ENTRY_LEAF_MASK`).
    pub const ARCH_LEAF_MASK: u64 = PERMS | MT_MASK | HPA_MASK | IPAT | PS | SVE;
    /// Bits of a non-leaf's architectural view (`SEPT_ARCH_ENTRY_NON_LEAF_MASK`: the
    /// permissions and PS only, no address).
    pub const ARCH_NON_LEAF_MASK: u64 = PERMS | PS;
    /// ACCEPT progress counter of a PENDING 2 MiB leaf, bits 20:12 (spec/tdx.md §1.2).
    pub const ACCEPT_COUNTER: u64 = 0x1FF << 12;
}

/// The state of an S-EPT entry (spec/tdx.md §1.3; TDX module
/// `include/auto_gen/sept_state_lookup.c` `sept_special_flags_lookup`). The migration states
/// (BLOCKEDW, EXPORTED_*, PENDING_EXPORTED_*, PENDING_BLOCKEDW) are decoded and obey the
/// per-leaf tables, but no modelled leaf produces them (the migration ABI is not modelled);
/// REMOVED is only produced during an import, which is not modelled either. The TDX-IO MMIO
/// states of newer modules are not modelled.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum SeptState {
    /// Not mapped (encoding 0x0E, public 0).
    Free,
    /// Removed during an import (0x0C, public 5).
    Removed,
    /// Non-leaf, points at a table (0x00, public 0x84).
    NlMapped,
    /// Non-leaf, blocked (0x08, public 0x81).
    NlBlocked,
    /// Leaf mapped and accepted (0x60, public 4).
    Mapped,
    /// Leaf blocked (0x68, public 1).
    Blocked,
    /// Leaf blocked for writing (0x64, public 8).
    BlockedW,
    /// Exported, blocked for writing (0x66, public 9).
    ExportedBlockedW,
    /// Exported and dirty (0x63, public 11).
    ExportedDirty,
    /// Exported, dirty, blocked for writing (0x67, public 12).
    ExportedDirtyBlockedW,
    /// Leaf added by AUG, waiting for the guest's ACCEPT (0x70, public 2).
    Pending,
    /// Pending and blocked (0x78, public 3).
    PendingBlocked,
    /// Pending, blocked for writing (0x74, public 16).
    PendingBlockedW,
    /// Pending, exported, blocked for writing (0x76, public 17).
    PendingExportedBlockedW,
    /// Pending, exported, dirty (0x73, public 19).
    PendingExportedDirty,
    /// Pending, exported, dirty, blocked for writing (0x77, public 20).
    PendingExportedDirtyBlockedW,
}

/// Per-state flags, in the lookup table's index order (`sept_state_lookup.c`).
struct StateRow {
    state: SeptState,
    enc: u8,
    public: u8,
    tlb_tracking: bool,
    any_blocked: bool,
    any_pending: bool,
    pending_acceptable: bool,
    guest_accessible_leaf: bool,
    mapped_or_pending: bool,
}

macro_rules! row {
    ($s:ident, $enc:literal, $pub:literal, $ttr:literal, $blk:literal, $pend:literal, $acc:literal, $gal:literal, $mop:literal) => {
        StateRow {
            state: SeptState::$s,
            enc: $enc,
            public: $pub,
            tlb_tracking: $ttr != 0,
            any_blocked: $blk != 0,
            any_pending: $pend != 0,
            pending_acceptable: $acc != 0,
            guest_accessible_leaf: $gal != 0,
            mapped_or_pending: $mop != 0,
        }
    };
}

/// The state table: encoding, public value and flags (`sept_special_flags_lookup`:
/// `tlb_tracking_required`, `any_blocked`, `any_pending`, `any_pending_and_guest_acceptable`,
/// `guest_accessible_leaf`, `mapped_or_pending`). Index = the lookup's `index`.
const ROWS: [StateRow; 16] = [
    row!(Free, 0x0E, 0, 0, 0, 0, 0, 0, 0),
    row!(Removed, 0x0C, 5, 0, 0, 0, 0, 0, 0),
    row!(NlMapped, 0x00, 0x84, 1, 0, 0, 0, 0, 0),
    row!(NlBlocked, 0x08, 0x81, 1, 1, 0, 0, 0, 0),
    row!(Mapped, 0x60, 4, 1, 0, 0, 0, 1, 1),
    row!(Blocked, 0x68, 1, 1, 1, 0, 0, 0, 0),
    row!(BlockedW, 0x64, 8, 1, 0, 0, 0, 1, 0),
    row!(ExportedBlockedW, 0x66, 9, 0, 0, 0, 0, 1, 0),
    row!(ExportedDirty, 0x63, 11, 1, 0, 0, 0, 1, 0),
    row!(ExportedDirtyBlockedW, 0x67, 12, 1, 0, 0, 0, 1, 0),
    row!(Pending, 0x70, 2, 1, 0, 1, 1, 0, 1),
    row!(PendingBlocked, 0x78, 3, 1, 1, 1, 0, 0, 0),
    row!(PendingBlockedW, 0x74, 16, 1, 0, 1, 0, 0, 0),
    row!(PendingExportedBlockedW, 0x76, 17, 0, 0, 1, 0, 0, 0),
    row!(PendingExportedDirty, 0x73, 19, 1, 0, 1, 1, 0, 0),
    row!(PendingExportedDirtyBlockedW, 0x77, 20, 1, 0, 1, 0, 0, 0),
];

impl SeptState {
    /// Every state, in the lookup table's index order.
    pub const ALL: [SeptState; 16] = {
        let mut a = [SeptState::Free; 16];
        let mut i = 0;
        while i < 16 {
            a[i] = ROWS[i].state;
            i += 1;
        }
        a
    };

    const fn index(self) -> usize {
        match self {
            SeptState::Free => 0,
            SeptState::Removed => 1,
            SeptState::NlMapped => 2,
            SeptState::NlBlocked => 3,
            SeptState::Mapped => 4,
            SeptState::Blocked => 5,
            SeptState::BlockedW => 6,
            SeptState::ExportedBlockedW => 7,
            SeptState::ExportedDirty => 8,
            SeptState::ExportedDirtyBlockedW => 9,
            SeptState::Pending => 10,
            SeptState::PendingBlocked => 11,
            SeptState::PendingBlockedW => 12,
            SeptState::PendingExportedBlockedW => 13,
            SeptState::PendingExportedDirty => 14,
            SeptState::PendingExportedDirtyBlockedW => 15,
        }
    }

    const fn row(self) -> &'static StateRow {
        &ROWS[self.index()]
    }

    /// The public state value the module returns in RDX bits 15:8.
    pub const fn public(self) -> u8 {
        self.row().public
    }

    /// The module's internal 7-bit encoding.
    pub const fn encoding(self) -> u8 {
        self.row().enc
    }

    /// The state with internal encoding `enc`, or `None` if no state has it.
    pub const fn from_encoding(enc: u8) -> Option<SeptState> {
        Some(match enc {
            0x0E => SeptState::Free,
            0x0C => SeptState::Removed,
            0x00 => SeptState::NlMapped,
            0x08 => SeptState::NlBlocked,
            0x60 => SeptState::Mapped,
            0x68 => SeptState::Blocked,
            0x64 => SeptState::BlockedW,
            0x66 => SeptState::ExportedBlockedW,
            0x63 => SeptState::ExportedDirty,
            0x67 => SeptState::ExportedDirtyBlockedW,
            0x70 => SeptState::Pending,
            0x78 => SeptState::PendingBlocked,
            0x74 => SeptState::PendingBlockedW,
            0x76 => SeptState::PendingExportedBlockedW,
            0x73 => SeptState::PendingExportedDirty,
            0x77 => SeptState::PendingExportedDirtyBlockedW,
            _ => return None,
        })
    }

    /// The state of a raw entry, or `None` if its state bits are no module encoding.
    pub fn decode(raw: u64) -> Option<SeptState> {
        SeptState::from_encoding(encoding_of(raw))
    }

    /// The state's bits as they sit in an entry (`SEPT_STATE_ENC_TO_MASK`).
    pub const fn mask(self) -> u64 {
        mask_of(self.encoding())
    }

    /// "TLB tracking required": leaves removing this entry from a running TD need BLOCK+TRACK.
    pub const fn tlb_tracking_required(self) -> bool {
        self.row().tlb_tracking
    }

    /// Any *BLOCKED state (NL_BLOCKED, BLOCKED, PENDING_BLOCKED).
    pub const fn any_blocked(self) -> bool {
        self.row().any_blocked
    }

    /// Any PENDING* state.
    pub const fn any_pending(self) -> bool {
        self.row().any_pending
    }

    /// PENDING or PENDING_EXPORTED_DIRTY: the guest may ACCEPT it.
    pub const fn pending_acceptable(self) -> bool {
        self.row().pending_acceptable
    }

    /// A leaf the guest can access (MAPPED, BLOCKEDW, EXPORTED_*).
    pub const fn guest_accessible_leaf(self) -> bool {
        self.row().guest_accessible_leaf
    }

    /// MAPPED or PENDING (promotable children).
    pub const fn mapped_or_pending(self) -> bool {
        self.row().mapped_or_pending
    }

    /// NL_MAPPED or NL_BLOCKED.
    pub const fn is_non_leaf(self) -> bool {
        matches!(self, SeptState::NlMapped | SeptState::NlBlocked)
    }

    /// FREE or REMOVED: no page behind the entry.
    pub const fn is_unmapped(self) -> bool {
        matches!(self, SeptState::Free | SeptState::Removed)
    }

    /// The permission bits an entry in this state carries (`sept_set_leaf_*`,
    /// `sept_set_mapped_non_leaf`, `block_sept_entry`, `sept_unblock`): RWX for NL_MAPPED,
    /// MAPPED and EXPORTED_DIRTY; none for blocked, pending and free entries. Write-blocked
    /// migration states keep R and X (unsourced: the model's choice; no migration leaf is
    /// modelled).
    pub const fn perms(self) -> u64 {
        match self {
            SeptState::NlMapped | SeptState::Mapped | SeptState::ExportedDirty => bits::PERMS,
            SeptState::BlockedW
            | SeptState::ExportedBlockedW
            | SeptState::ExportedDirtyBlockedW => bits::R | bits::XS | bits::XU,
            SeptState::Free
            | SeptState::Removed
            | SeptState::NlBlocked
            | SeptState::Blocked
            | SeptState::Pending
            | SeptState::PendingBlocked
            | SeptState::PendingBlockedW
            | SeptState::PendingExportedBlockedW
            | SeptState::PendingExportedDirty
            | SeptState::PendingExportedDirtyBlockedW => 0,
        }
    }

    /// The upper-case name the module's documentation uses.
    pub const fn name(self) -> &'static str {
        match self {
            SeptState::Free => "FREE",
            SeptState::Removed => "REMOVED",
            SeptState::NlMapped => "NL_MAPPED",
            SeptState::NlBlocked => "NL_BLOCKED",
            SeptState::Mapped => "MAPPED",
            SeptState::Blocked => "BLOCKED",
            SeptState::BlockedW => "BLOCKEDW",
            SeptState::ExportedBlockedW => "EXPORTED_BLOCKEDW",
            SeptState::ExportedDirty => "EXPORTED_DIRTY",
            SeptState::ExportedDirtyBlockedW => "EXPORTED_DIRTY_BLOCKEDW",
            SeptState::Pending => "PENDING",
            SeptState::PendingBlocked => "PENDING_BLOCKED",
            SeptState::PendingBlockedW => "PENDING_BLOCKEDW",
            SeptState::PendingExportedBlockedW => "PENDING_EXPORTED_BLOCKEDW",
            SeptState::PendingExportedDirty => "PENDING_EXPORTED_DIRTY",
            SeptState::PendingExportedDirtyBlockedW => "PENDING_EXPORTED_DIRTY_BLOCKEDW",
        }
    }
}

impl fmt::Display for SeptState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The 7-bit state encoding of a raw entry (`SEPT_CONVERT_TO_ENCODING`).
pub fn encoding_of(raw: u64) -> u8 {
    let d = (raw >> 9) & 1;
    let td = (raw >> 53) & 0xF;
    let ps = (raw >> 6) & 3;
    // At most 7 bits: always fits.
    u8::try_from(d | (td << 1) | (ps << 5)).unwrap_or(u8::MAX)
}

/// The entry bits of a 7-bit encoding (`SEPT_STATE_ENC_TO_MASK`).
pub const fn mask_of(enc: u8) -> u64 {
    let e = enc as u64; // widening
    ((e & 1) << 9) | (((e >> 1) & 0xF) << 53) | (((e >> 5) & 3) << 6)
}

/// Bit `i` set for each table index (see [`SeptState::ALL`]) the leaf allows.
const fn allow(idx: &[usize]) -> u16 {
    let mut m = 0u16;
    let mut i = 0;
    while i < idx.len() {
        m |= 1 << idx[i];
        i += 1;
    }
    m
}

/// Which states a SEAMCALL leaf accepts (TDX module `seamcall_sept_state_lookup`, spec/tdx.md
/// §2.4). Leaves without a row accept none.
pub const fn seamcall_allows(leaf: u16, state: SeptState) -> bool {
    let m = match leaf {
        2 => allow(&[0]),                                        // PAGE.ADD: FREE
        3 => allow(&[0, 2]),                                     // SEPT.ADD: FREE, NL_MAPPED
        5 => allow(&[4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]), // RELOCATE: any leaf
        6 => allow(&[0, 1]),                                     // AUG: FREE, REMOVED
        7 => allow(&[2, 4, 6, 10, 12]),                          // BLOCK
        15 => allow(&[4, 5, 10, 11]),                            // DEMOTE
        16 => allow(&[4]),                                       // MR.EXTEND: MAPPED
        23 => allow(&[2, 3]),                                    // PROMOTE: NL_*
        29 => allow(&[4, 5, 6, 10, 11, 12]),                     // REMOVE
        30 => allow(&[2, 3]),                                    // SEPT.REMOVE: NL_*
        39 => allow(&[3, 5, 11]),                                // UNBLOCK: *BLOCKED
        _ => 0,
    };
    m & (1 << state.index()) != 0
}

/// Whether TDG.MEM.PAGE.ACCEPT accepts the state (`tdcall_sept_state_lookup[6]`: PENDING and
/// PENDING_EXPORTED_DIRTY).
pub const fn accept_allows(state: SeptState) -> bool {
    matches!(state, SeptState::Pending | SeptState::PendingExportedDirty)
}

/// An S-EPT entry: an EPT entry plus the module's state (STYLE rule 6).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct SeptEntry(EptEntry);

/// The value of a FREE entry: the FREE encoding plus suppress-#VE (`SEPTE_INIT_VALUE`).
pub const FREE_RAW: u64 = mask_of(0x0E) | bits::SVE;

impl SeptEntry {
    /// A FREE entry (`SEPTE_INIT_VALUE`).
    pub const FREE: SeptEntry = SeptEntry(EptEntry::new(FREE_RAW));

    /// Wrap a raw value.
    pub const fn from_raw(raw: u64) -> SeptEntry {
        SeptEntry(EptEntry::new(raw))
    }

    /// The raw value.
    pub const fn raw(self) -> u64 {
        self.0.raw()
    }

    /// The EPT view of the entry (what the hardware walker sees).
    pub const fn ept(self) -> EptEntry {
        self.0
    }

    /// The module state, or `None` if the state bits are no encoding.
    pub fn state(self) -> Option<SeptState> {
        SeptState::decode(self.raw())
    }

    /// PS set: a leaf (`is_secure_ept_leaf_entry`; meaningful for non-FREE entries).
    pub const fn is_leaf(self) -> bool {
        self.raw() & bits::PS != 0
    }

    /// Any of bits 2:0 set (what the walks test to continue).
    pub const fn present(self) -> bool {
        self.raw() & bits::RWX_PRESENT != 0
    }

    /// The address bits 51:12.
    pub const fn addr(self) -> u64 {
        self.raw() & bits::HPA_MASK
    }

    /// The page a leaf at `level` maps (address bits aligned to the level's size, so the
    /// ACCEPT counter of a 2 MiB PENDING leaf is dropped; `leaf_ept_entry_to_hpa`).
    pub const fn leaf_hpa(self, level: u8) -> u64 {
        self.addr() & !(level_bytes(level) - 1)
    }

    /// TDEL, the entry lock.
    pub const fn locked(self) -> bool {
        self.raw() & bits::TDEL != 0
    }

    /// HP, host priority.
    pub const fn host_priority(self) -> bool {
        self.raw() & bits::HP != 0
    }

    /// An NL_MAPPED entry pointing at `table` (`sept_set_mapped_non_leaf`: RWX, NL_MAPPED,
    /// suppress-#VE).
    pub const fn non_leaf(table: u64) -> SeptEntry {
        SeptEntry::from_raw(
            (table & bits::HPA_MASK) | bits::PERMS | SeptState::NlMapped.mask() | bits::SVE,
        )
    }

    /// A leaf mapping `hpa` in `state` with `perms` (`sept_set_leaf_no_lock_internal`: the
    /// state bits, MT = WB, IPAT, the address, suppress-#VE).
    pub const fn leaf(hpa: u64, state: SeptState, perms: u64) -> SeptEntry {
        SeptEntry::from_raw(
            (hpa & bits::HPA_MASK)
                | (perms & bits::PERMS)
                | state.mask()
                | bits::MT_WB
                | bits::IPAT
                | bits::SVE,
        )
    }

    /// The entry with its state bits replaced (`sept_update_state`: the encoding bits, then MT1
    /// and MT2 copied from IPAT, MT0 cleared, suppress-#VE set). Permissions are untouched.
    pub const fn with_state(self, state: SeptState) -> SeptEntry {
        let mut v = (self.raw() & !bits::STATE_MASK) | state.mask();
        v &= !bits::MT_MASK;
        if v & bits::IPAT != 0 {
            v |= bits::MT_WB;
        }
        SeptEntry::from_raw(v | bits::SVE)
    }

    /// The entry with the permission bits replaced.
    pub const fn with_perms(self, perms: u64) -> SeptEntry {
        SeptEntry::from_raw((self.raw() & !bits::PERMS) | (perms & bits::PERMS))
    }

    /// The entry with its address replaced.
    pub const fn with_addr(self, hpa: u64) -> SeptEntry {
        SeptEntry::from_raw((self.raw() & !bits::HPA_MASK) | (hpa & bits::HPA_MASK))
    }
}

impl fmt::Debug for SeptEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state() {
            Some(s) => write!(f, "SeptEntry({:#018x} {s})", self.raw()),
            None => write!(f, "SeptEntry({:#018x} ?)", self.raw()),
        }
    }
}

/// Public state value reported for an entry whose state bits are no module encoding (not a
/// module value: the module never writes such entries; the model must not panic on them).
pub const PUBLIC_UNKNOWN: u8 = 0xFF;

/// The architectural view of an entry the module returns on many errors
/// (`set_arch_septe_details_in_vmm_regs`; spec/tdx.md §1.2): RCX is the entry sanitized (a
/// FREE entry reads as suppress-#VE only; a leaf keeps permissions, memory type, address,
/// IPAT, PS and suppress-#VE; a non-leaf keeps permissions and PS), RDX is `level` in bits
/// 2:0, the public state in bits 15:8 and the L2 VM index (0) in bits 17:16.
pub fn arch_view(raw: u64, level: u8) -> (u64, u64) {
    let e = SeptEntry::from_raw(raw);
    let state = e.state();
    let rcx = match state {
        Some(SeptState::Free) => bits::SVE,
        _ if e.is_leaf() => raw & bits::ARCH_LEAF_MASK,
        _ => raw & bits::ARCH_NON_LEAF_MASK,
    };
    let public = match state {
        Some(s) => s.public(),
        None => PUBLIC_UNKNOWN,
    };
    let rdx = u64::from(level & 7) | (u64::from(public) << 8);
    (rcx, rdx)
}

/// Bytes one entry at module level `level` spans (0 = 4 KiB, 1 = 2 MiB, 2 = 1 GiB, 3 = 512 GiB,
/// 4 = 256 TiB).
pub const fn level_bytes(level: u8) -> u64 {
    1u64 << (12 + 9 * (if level > 4 { 4 } else { level }) as u32)
}

/// The page size of a leaf at `level` (0, 1, 2), or `None` above 1 GiB.
pub const fn level_size(level: u8) -> Option<PageSize> {
    match level {
        0 => Some(PageSize::K4),
        1 => Some(PageSize::M2),
        2 => Some(PageSize::G1),
        _ => None,
    }
}

/// The module level whose leaves have `size`.
pub const fn size_level(size: PageSize) -> u8 {
    match size {
        PageSize::K4 => 0,
        PageSize::M2 => 1,
        PageSize::G1 => 2,
    }
}

/// The 9-bit index of `gpa` into a table of module level `level`.
pub const fn index(gpa: u64, level: u8) -> u64 {
    (gpa >> (12 + 9 * (if level > 4 { 4 } else { level }) as u32)) & 0x1FF
}

/// An [`Spa`] from an address already limited to 52 bits (masked, never panics).
pub(crate) const fn spa(raw: u64) -> Spa {
    Spa::new_truncate(raw)
}

/// Entries a walk reads at most (5-level S-EPT).
pub const MAX_WALK_REFS: usize = 5;

/// The result of an S-EPT walk: where it stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeptWalk {
    /// The level of the last entry read (the requested level, or higher if the walk stopped
    /// early).
    pub level: u8,
    /// The address of that entry.
    pub entry_addr: Spa,
    /// Its value when read.
    pub entry: u64,
    /// Every entry address read, root first (one per level walked).
    pub refs: InlineVec<Spa, MAX_WALK_REFS>,
}

/// The module's S-EPT walk (`sept_manager.c: secure_ept_walk`): from the root table (whose
/// entries are at `root_level`: 3 for a 4-level S-EPT, 4 for 5-level) down to `target`,
/// stopping early at an entry with none of bits 2:0 set or with PS set (a leaf). Reads go
/// through simulated memory; a table address that holds no table reads as 0 and stops the
/// walk. Never panics.
pub fn walk(
    tables: &PhysMemTables<Spa>,
    root: Spa,
    root_level: u8,
    gpa: u64,
    target: u8,
) -> SeptWalk {
    let mut table = root.raw() & bits::HPA_MASK;
    let mut level = root_level.min(4);
    let mut refs = InlineVec::new();
    loop {
        let addr = spa(table + index(gpa, level) * 8);
        let entry = tables.read(addr);
        refs.push(addr);
        let e = SeptEntry::from_raw(entry);
        if level == target || level == 0 || !e.present() || e.is_leaf() {
            return SeptWalk { level, entry_addr: addr, entry, refs };
        }
        table = e.addr();
        level -= 1;
    }
}

/// Make `page` an S-EPT table of 512 FREE entries (the module fills new S-EPT pages with
/// `SEPTE_INIT_VALUE` using MOVDIR64B). A page that already holds a table (a host bug: the
/// module would overwrite it) is replaced.
pub(crate) fn install_free_table(tables: &mut PhysMemTables<Spa>, page: Spa) {
    if tables.install_filled(page, FREE_RAW).is_err() {
        tables.remove(page);
        // Cannot fail now: the page is 4 KiB aligned (callers check) and no longer a table.
        let _ = tables.install_filled(page, FREE_RAW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_digest() {
        // spec/tdx.md §1.3 internal encodings and public values.
        let expect = [
            (SeptState::Free, 0x0E, 0),
            (SeptState::Blocked, 0x68, 1),
            (SeptState::Pending, 0x70, 2),
            (SeptState::PendingBlocked, 0x78, 3),
            (SeptState::Mapped, 0x60, 4),
            (SeptState::Removed, 0x0C, 5),
            (SeptState::BlockedW, 0x64, 8),
            (SeptState::NlMapped, 0x00, 0x84),
            (SeptState::NlBlocked, 0x08, 0x81),
        ];
        for (s, enc, public) in expect {
            assert_eq!(s.encoding(), enc, "{s}");
            assert_eq!(s.public(), public, "{s}");
            assert_eq!(SeptState::from_encoding(enc), Some(s));
            assert_eq!(encoding_of(mask_of(enc)), enc);
        }
        for s in SeptState::ALL {
            assert_eq!(SeptState::decode(s.mask()), Some(s));
        }
        assert_eq!(SeptState::from_encoding(0x01), None);
        assert_eq!(FREE_RAW, 0x80E0_0000_0000_0000);
        assert_eq!(SeptState::Mapped.mask(), bits::IPAT | bits::PS);
        assert_eq!(SeptState::Pending.mask(), bits::IPAT | bits::PS | bits::TDP);
        assert_eq!(SeptState::NlBlocked.mask(), bits::TDB);
        // Tracking flags (spec/tdx.md §1.3 last column).
        assert!(SeptState::Mapped.tlb_tracking_required());
        assert!(!SeptState::ExportedBlockedW.tlb_tracking_required());
        assert!(!SeptState::Free.tlb_tracking_required());
    }

    #[test]
    fn entries_and_views() {
        let leaf = SeptEntry::leaf(0x1234_5000, SeptState::Mapped, bits::PERMS);
        assert_eq!(leaf.raw(), 0x8000_0000_1234_54F7);
        assert_eq!(leaf.state(), Some(SeptState::Mapped));
        assert!(leaf.is_leaf() && leaf.present());
        let pend = SeptEntry::leaf(0x20_0000, SeptState::Pending, 0);
        assert!(!pend.present());
        assert_eq!(arch_view(pend.raw(), 1), (0x8000_0000_0020_00F0, 0x0201));
        // V2: a FREE entry at level 1 reads back as suppress-#VE only, RDX = level 1, FREE.
        assert_eq!(arch_view(FREE_RAW, 1), (0x8000_0000_0000_0000, 0x0001));
        // Locks are not architectural.
        let locked = SeptEntry::from_raw(leaf.raw() | bits::TDEL | bits::HP);
        assert_eq!(arch_view(locked.raw(), 0), (leaf.raw(), 0x0400));
        let nl = SeptEntry::non_leaf(0x7000);
        assert_eq!(nl.state(), Some(SeptState::NlMapped));
        assert_eq!(arch_view(nl.raw(), 1), (bits::PERMS, 0x8401));
        let blocked = leaf.with_perms(0).with_state(SeptState::Blocked);
        assert_eq!(blocked.state(), Some(SeptState::Blocked));
        assert_eq!(blocked.raw() & bits::MT_MASK, bits::MT_WB);
        // TDP alone (encoding 0x10) is no state.
        assert_eq!(arch_view(bits::TDP, 0).1 >> 8, u64::from(PUBLIC_UNKNOWN));
    }

    #[test]
    fn allowed_states_per_leaf() {
        use SeptState as S;
        assert!(seamcall_allows(6, S::Free) && seamcall_allows(6, S::Removed));
        assert!(!seamcall_allows(6, S::Pending));
        assert!(seamcall_allows(7, S::NlMapped) && seamcall_allows(7, S::Pending));
        assert!(!seamcall_allows(7, S::Blocked));
        assert!(seamcall_allows(29, S::PendingBlocked) && !seamcall_allows(29, S::NlMapped));
        assert!(seamcall_allows(39, S::NlBlocked) && !seamcall_allows(39, S::Pending));
        assert!(seamcall_allows(5, S::PendingExportedDirtyBlockedW));
        assert!(!seamcall_allows(41, S::Free));
        assert!(accept_allows(S::Pending) && !accept_allows(S::PendingBlocked));
    }

    #[test]
    fn walk_counts_one_reference_per_level() {
        let mut t: PhysMemTables = PhysMemTables::new();
        let root = Spa::new(0x10_0000);
        install_free_table(&mut t, root);
        // FREE root entry: the walk stops at level 3 after one read.
        let w = walk(&t, root, 3, 0x4000_0000, 0);
        assert_eq!((w.level, w.refs.len()), (3, 1));
        // Chain PML4 → PDPT → PD.
        let (l2, l1) = (Spa::new(0x11_0000), Spa::new(0x12_0000));
        install_free_table(&mut t, l2);
        install_free_table(&mut t, l1);
        let gpa = 0x4020_3000;
        t.write(spa(root.raw() + index(gpa, 3) * 8), SeptEntry::non_leaf(l2.raw()).raw());
        t.write(spa(l2.raw() + index(gpa, 2) * 8), SeptEntry::non_leaf(l1.raw()).raw());
        let w = walk(&t, root, 3, gpa, 0);
        assert_eq!((w.level, w.refs.len(), w.entry), (1, 3, FREE_RAW));
        let w = walk(&t, root, 3, gpa, 2);
        assert_eq!((w.level, w.refs.len()), (2, 2));
        assert_eq!(w.refs[1], spa(l2.raw() + index(gpa, 2) * 8));
    }
}
