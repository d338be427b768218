//! The 1-D page walk (Intel SDM Vol. 3A §4.5–§4.8; AMD APM Vol. 2 §5.3–§5.6): the functional
//! answer (translation or #PF), the list of memory references the walk makes, and the A/D
//! updates. The walker core is shared with the nested walks (crate `nested` module): it reads
//! entries of any [`PagingEntry`] format from a start point (the root, or a table a
//! paging-structure cache supplied) down to a leaf, a not-present or a malformed entry.

use crate::addr::{PagedAddr, PhysAddr};
use crate::check::{
    CheckAllow, CheckRequest, CheckTarget, CheckVerdict, CheckWork, TranslationCheck,
};
use crate::entry::PagingEntry;
pub use crate::entry::Perms;
use crate::inline::InlineVec;
use crate::level::{Level, Paging};
use crate::pte::{LeafAttrs, PteFlags, PteFormat, X86Pte};
use crate::tables::{PhysMemTables, UpperMemo};
use sim_core::{Agent, PageSize, Spa};

/// The kind of access being translated.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum AccessKind {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Fetch,
}

/// The privilege of an access: supervisor (CPL < 3, or an implicit supervisor access) or user.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Privilege {
    /// CPL 0–2.
    Supervisor,
    /// CPL 3.
    User,
}

/// The control-register bits that change permission checks (SDM Vol. 3A §4.6). EFER.NXE is
/// taken as 1 and CR4.PGE as 1 (as Linux sets them); protection keys are not checked yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PagingControls {
    /// CR0.WP: supervisor writes honour R/W.
    pub cr0_wp: bool,
    /// CR4.SMEP: supervisor fetches from user pages fault.
    pub cr4_smep: bool,
    /// CR4.SMAP: supervisor data accesses to user pages fault unless RFLAGS.AC.
    pub cr4_smap: bool,
    /// RFLAGS.AC (with SMAP: permits supervisor data accesses to user pages).
    pub rflags_ac: bool,
}

impl Default for PagingControls {
    /// What a Linux x86-64 kernel runs with: WP, SMEP and SMAP on, AC clear.
    fn default() -> Self {
        PagingControls { cr0_wp: true, cr4_smep: true, cr4_smap: true, rflags_ac: false }
    }
}

bitflags::bitflags! {
    /// The #PF error code, bit-exact (Intel SDM Vol. 3A §4.7, Figure 4-12; AMD APM Vol. 2
    /// §8.4.2; bit 31 RMP: APM §15.36.10).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct PfErrorCode: u32 {
        /// Bit 0, P: 0 = not-present page; 1 = protection violation (or reserved bit).
        const PRESENT = 1 << 0;
        /// Bit 1, W/R: the access was a write.
        const WRITE = 1 << 1;
        /// Bit 2, U/S: the access was a user-mode access.
        const USER = 1 << 2;
        /// Bit 3, RSVD: a reserved bit was set in a paging-structure entry.
        const RESERVED = 1 << 3;
        /// Bit 4, I/D: the access was an instruction fetch.
        const FETCH = 1 << 4;
        /// Bit 5, PK: protection-key violation.
        const PROTECTION_KEY = 1 << 5;
        /// Bit 6, SS: shadow-stack access.
        const SHADOW_STACK = 1 << 6;
        /// Bit 31, RMP: an RMP check failed (AMD SEV-SNP; Linux `X86_PF_RMP`).
        const RMP = 1 << 31;
    }
}

/// A page fault: the error code and the faulting address (CR2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault<V> {
    /// The error code pushed with #PF.
    pub code: PfErrorCode,
    /// The faulting address (CR2).
    pub addr: V,
}

/// The functional result of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Translation<V, P> {
    /// The address translates.
    Translated {
        /// The output address (with the page offset).
        pa: P,
        /// The leaf's page size.
        size: PageSize,
        /// Permissions combined over all levels.
        perms: Perms,
        /// The leaf's attributes (A/D as they are after this walk's update).
        attrs: LeafAttrs,
    },
    /// #PF.
    Fault(PageFault<V>),
    /// The address is not canonical for the paging depth: #GP(0) (#SS for stack accesses), no
    /// walk is made.
    NonCanonical {
        /// The address.
        addr: V,
    },
}

/// What a walk reference did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum RefKind {
    /// Read a paging-structure entry.
    #[default]
    Read,
    /// Set A (and D) in an entry: a locked read-modify-write, a write for SNP.
    AdWrite,
}

/// Which translation stage a walk reference belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
pub enum Stage {
    /// A 1-D walk of the host's (or a guest's own, un-nested) tables.
    #[default]
    Native,
    /// A guest page-table entry read or updated during a 2-D walk (at the SPA the nested
    /// stage gave for it).
    Guest,
    /// A nested (NPT/EPT) entry read or updated during a 2-D walk or a guest-physical access.
    Nested,
}

/// One memory reference of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkRef<P> {
    /// Address of the entry.
    pub addr: P,
    /// The entry's level (in its own table: guest or nested).
    pub level: Level,
    /// Read or A/D write.
    pub kind: RefKind,
    /// The translation stage.
    pub stage: Stage,
}

impl<P: PhysAddr> Default for WalkRef<P> {
    /// All-zero bits (so that an empty reference list is a plain memset).
    fn default() -> Self {
        WalkRef {
            addr: P::from_raw(0),
            level: Level::Pml5,
            kind: RefKind::Read,
            stage: Stage::Native,
        }
    }
}

/// Most references of a 1-D walk: five reads (5-level) and five A/D writes (A/D of the leaf
/// are one write). The 2-D walker's list is [`crate::NestedRefs`].
pub const MAX_1D_REFS: usize = 10;

/// The references of a 1-D walk, in the order the walker makes them (each A/D write right
/// after the read of the same entry).
pub type WalkRefs<P> = InlineVec<WalkRef<P>, MAX_1D_REFS>;

/// A walk's result and its memory references.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk<V, P: PhysAddr> {
    /// The translation or fault.
    pub outcome: Translation<V, P>,
    /// The references made. A walk that faults made only reads (A/D bits are set only by a
    /// walk that completes: a model choice, see [`walk`]).
    pub refs: WalkRefs<P>,
}

/// What the walker needs besides the tables: CR3's root, the depth, the entry format and the
/// control bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkContext<P> {
    /// The root table (CR3).
    pub root: P,
    /// 4- or 5-level.
    pub paging: Paging,
    /// Entry format (MAXPHYADDR, C-bit).
    pub format: PteFormat,
    /// CR0/CR4/RFLAGS bits.
    pub controls: PagingControls,
}

/// Where a walk starts: at the root with full rights, or at a lower table whose address (and
/// the rights combined above it) a paging-structure cache supplied (SDM Vol. 3A §4.10.3.1:
/// a PDE-cache hit leaves only the PTE to read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkStart<P> {
    /// The level of the table to read first.
    pub level: Level,
    /// That table.
    pub table: P,
    /// Rights combined over the levels above.
    pub perms: Perms,
}

impl<P> WalkStart<P> {
    /// Start at `root` of a table of depth `paging`.
    pub const fn root(root: P, paging: Paging) -> WalkStart<P> {
        WalkStart { level: paging.top(), table: root, perms: Perms::ALL }
    }
}

/// One entry read by the walker core, and the A/D bits to set in it if the walk succeeds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CoreStep<P: PhysAddr> {
    /// Address of the entry.
    pub addr: P,
    /// Its level.
    pub level: Level,
    /// The raw entry as read.
    pub entry: u64,
    /// A/D bits to set on success.
    pub set: u64,
    /// Rights combined over this level and those above.
    pub perms: Perms,
}

impl<P: PhysAddr> Default for CoreStep<P> {
    fn default() -> Self {
        CoreStep {
            addr: P::from_raw(0),
            level: Level::Pml5,
            entry: 0,
            set: 0,
            perms: Perms { readable: false, writable: false, user: false, executable: false },
        }
    }
}

/// How the walker core ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum CoreEnd<P> {
    /// At a leaf.
    Leaf {
        /// Its size.
        size: PageSize,
        /// Its frame.
        frame: P,
    },
    /// At a not-present entry.
    NotPresent,
    /// At a malformed entry (reserved bits; EPT misconfiguration).
    Malformed,
}

/// The entries read from a start point to the end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Core<P: PhysAddr> {
    pub steps: InlineVec<CoreStep<P>, 5>,
    pub end: CoreEnd<P>,
    /// The AND of every entry read (all ones when none): whether every entry has A, without
    /// a pass over the steps.
    pub and_all: u64,
    /// `false` only when no step has a planned A/D write (`set == 0` everywhere): the common
    /// case of a walk over entries that already have their bits skips the commit and the
    /// per-step A/D tests. Conservative: `true` says nothing.
    pub ad: bool,
}

impl<P: PhysAddr> Core<P> {
    /// Rights combined over every entry read (the last step's).
    #[inline]
    pub fn perms(&self) -> Perms {
        self.steps.last().map_or(Perms::ALL, |s| s.perms)
    }

    /// Mark A on every entry read that lacks it and, if `dirty`, D on the leaf. `when` filters
    /// which formats track A/D at all (EPT without A/D enabled: none).
    #[inline]
    pub fn set_ad<E: PagingEntry>(&mut self, dirty: bool) {
        // Every entry already has A (and the leaf D, if wanted): nothing to plan. The walker
        // core wrote `set: 0` into every step.
        if self.and_all & E::ACCESSED != 0
            && (!dirty || self.steps.last().is_none_or(|l| l.entry & E::DIRTY != 0))
        {
            if self.ad {
                self.steps.iter_mut().for_each(|s| s.set = 0);
                self.ad = false;
            }
            return;
        }
        self.ad = true;
        let n = self.steps.len();
        for (i, s) in self.steps.iter_mut().enumerate() {
            let mut set = 0;
            if s.entry & E::ACCESSED == 0 {
                set |= E::ACCESSED;
            }
            if dirty && i + 1 == n && s.entry & E::DIRTY == 0 {
                set |= E::DIRTY;
            }
            s.set = set;
        }
    }

    /// Write the A/D bits planned by [`Core::set_ad`].
    #[inline]
    pub fn commit(&self, tables: &mut PhysMemTables<P>) {
        if !self.ad {
            return;
        }
        for s in &self.steps {
            if s.set != 0 {
                tables.write(s.addr, s.entry | s.set);
            }
        }
    }

    /// Append this walk's references to `out`: each read, then its A/D write if `with_ad`.
    #[inline]
    pub fn push_refs<const N: usize>(
        &self,
        out: &mut InlineVec<WalkRef<P>, N>,
        stage: Stage,
        with_ad: bool,
    ) {
        if !(with_ad && self.ad) {
            for s in &self.steps {
                out.push(WalkRef { addr: s.addr, level: s.level, kind: RefKind::Read, stage });
            }
            return;
        }
        for s in &self.steps {
            out.push(WalkRef { addr: s.addr, level: s.level, kind: RefKind::Read, stage });
            if with_ad && s.set != 0 {
                out.push(WalkRef { addr: s.addr, level: s.level, kind: RefKind::AdWrite, stage });
            }
        }
    }
}

/// The walker core: read entries of format `E` from `start` down to a leaf, a not-present or a
/// malformed entry, combining rights, into `core` (overwritten). No permission checks and no
/// A/D updates: the caller decides those by format.
#[inline]
pub(crate) fn core_walk_into<E: PagingEntry, V: PagedAddr, P: PhysAddr>(
    core: &mut Core<P>,
    tables: &PhysMemTables<P>,
    start: WalkStart<P>,
    fmt: PteFormat,
    va: V,
) {
    let steps = &mut core.steps;
    steps.clear();
    core.ad = false;
    let mut and_all = u64::MAX;
    let mut perms = start.perms;
    let mut table = start.table;
    let mut level = start.level;
    loop {
        let addr = P::from_raw(table.raw() + 8 * (level.index(va) as u64));
        let raw = tables.read(addr);
        and_all &= raw;
        core.and_all = and_all;
        let e = E::from_raw(raw);
        let present = e.present();
        if present {
            perms = perms.and(e.rights());
        }
        steps.push(CoreStep { addr, level, entry: raw, set: 0, perms });
        if !present {
            core.end = CoreEnd::NotPresent;
            return;
        }
        if e.malformed(level, fmt) {
            core.end = CoreEnd::Malformed;
            return;
        }
        if e.leaf_at(level) {
            let size = level.leaf_size().expect("leaf level");
            core.end = CoreEnd::Leaf { size, frame: e.leaf_frame(size, fmt) };
            return;
        }
        table = e.next_table(fmt);
        level = level.next_lower().expect("PT entries are always leaves");
    }
}

/// What [`fast_walk_x86`] read: the common walk, every entry present, well formed and already
/// carrying its A (and, for a write, the leaf's D) bit, and the access permitted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastWalk {
    /// The level of the first entry read; entry `i` is at level `first.idx() + i`.
    pub first: Level,
    /// Entries read, root side first.
    pub n: usize,
    /// Address of each entry read.
    pub addrs: [Spa; 5],
    /// Each entry as read.
    pub entries: [u64; 5],
    /// The translation.
    pub pa: Spa,
    /// The leaf's size.
    pub size: PageSize,
    /// Rights combined over the start and every entry read.
    pub perms: Perms,
    /// The rights the walk started with (below a paging-structure-cache hit: those above it).
    pub start_perms: Perms,
}

impl FastWalk {
    /// An empty buffer.
    pub const EMPTY: FastWalk = FastWalk {
        first: Level::Pml4,
        n: 0,
        addrs: [Spa::ZERO; 5],
        entries: [0; 5],
        pa: Spa::ZERO,
        size: PageSize::K4,
        perms: Perms::ALL,
        start_perms: Perms::ALL,
    };

    /// The level of entry `i`.
    #[inline]
    pub fn level(&self, i: usize) -> Level {
        Level::ALL[self.first.idx() + i]
    }

    /// The leaf entry.
    #[inline]
    pub fn leaf(&self) -> X86Pte {
        X86Pte::new(self.entries[self.n - 1])
    }
}

/// The masks [`fast_walk_x86`] tests entries with, computed once per [`PteFormat`]: the
/// address bits, and per level (root first) the reserved bits of an entry without and with PS.
#[derive(Clone, Copy, Debug)]
pub(crate) struct X86Masks {
    pub addr: u64,
    pub rsvd: [[u64; 2]; 5],
}

impl X86Masks {
    /// The masks of `fmt`, probed bit by bit from [`X86Pte::reserved_bits_set`] so that the two
    /// cannot disagree: bit `b` is in the mask of (`level`, PS) iff an entry with only `b` and
    /// that PS set is reserved at `level` (all bits when PS itself is reserved there).
    pub fn new(fmt: PteFormat) -> X86Masks {
        let huge = PteFlags::HUGE.bits();
        let mask = |level: Level, ps: u64| {
            (0..64)
                .filter(|b| X86Pte::new(1 << b | ps).reserved_bits_set(level, fmt))
                .fold(0, |m, b| m | 1 << b)
        };
        X86Masks { addr: fmt.addr_mask(), rsvd: Level::ALL.map(|l| [mask(l, 0), mask(l, huge)]) }
    }
}

/// The common x86 walk of `va` from `start`, without the general path's plan, into `w`
/// (overwritten; a reusable buffer): `false` when the walk needs the plan — an entry not
/// present or malformed, an access the rights refuse, or an A/D bit to set. On `true`, `w`
/// is what [`plan_into`] gives for the same walk (a translation with no A/D write planned),
/// so the caller may use it in place of a plan. Nothing is written to the tables. `masks` are
/// those of the tables' format; `write`: the access is a write; `allowed`: bit
/// [`perms_index`] of the combined rights set iff [`permits`] lets the access through them.
#[inline(always)]
pub(crate) fn fast_walk_x86(
    w: &mut FastWalk,
    tables: &mut PhysMemTables<Spa>,
    start: WalkStart<Spa>,
    masks: &X86Masks,
    va: u64,
    write: bool,
    allowed: u16,
) -> bool {
    const P: u64 = PteFlags::PRESENT.bits();
    const HUGE: u64 = PteFlags::HUGE.bits();
    let first = start.level.idx();
    let mut table = start.table.raw();
    // The AND of the entries (R/W, U/S and A over every level) and their OR (XD).
    let (mut and_all, mut or_all) = (u64::MAX, 0);
    let mut n = 0;
    // Level index (root first): shift 48 − 9 × idx.
    let mut idx = first;
    let mut from_memo = false;
    // The entries above the PT, from the storage's memo when the last walk that reached a PT
    // read them (same start, same 2 MiB region, same address mask, nothing written since):
    // the same values a read returns now. They are present and not leaves (the walk that
    // stored them went below them); their reserved bits are tested here as the loop would.
    let m = tables.upper();
    if m.n != 0
        && m.region == va >> 21
        && m.table == table
        && m.first == first
        && m.addr_mask == masks.addr
        && let (Some(ma), Some(me), Some(wa), Some(we), Some(rsvd)) = (
            m.addrs.get(..m.n),
            m.entries.get(..m.n),
            w.addrs.get_mut(..m.n),
            w.entries.get_mut(..m.n),
            masks.rsvd.get(first..first + m.n),
        )
    {
        let mut bad = 0;
        for i in 0..m.n {
            wa[i] = Spa::new_truncate(ma[i]);
            we[i] = me[i];
            bad |= me[i] & rsvd[i][0];
        }
        if bad != 0 {
            return false;
        }
        (and_all, or_all, n) = (m.and_all, m.or_all, m.n);
        from_memo = true;
        idx = first + n;
        table = me[n - 1] & masks.addr;
    }
    let leaf_idx = loop {
        let Some(rsvd) = masks.rsvd.get(idx) else { return false };
        let addr = Spa::new_truncate(table + 8 * ((va >> (48 - 9 * idx)) & 0x1ff));
        let raw = tables.read(addr);
        let huge = raw & HUGE != 0;
        if raw & P == 0 || raw & rsvd[usize::from(huge)] != 0 {
            return false;
        }
        let (Some(a), Some(e)) = (w.addrs.get_mut(n), w.entries.get_mut(n)) else { return false };
        (*a, *e) = (addr, raw);
        n += 1;
        // PS is reserved (malformed, returned above) at PML4 and PML5.
        if huge || idx == 4 {
            if idx == 4 && n > 1 && !from_memo {
                // Remember the entries above the PT for the next walk of this region.
                let mut memo = UpperMemo {
                    n: n - 1,
                    table: start.table.raw(),
                    first,
                    region: va >> 21,
                    addr_mask: masks.addr,
                    and_all,
                    or_all,
                    ..UpperMemo::default()
                };
                for i in 0..n - 1 {
                    memo.addrs[i] = w.addrs[i].raw();
                    memo.entries[i] = w.entries[i];
                }
                tables.set_upper(memo);
            }
            and_all &= raw;
            or_all |= raw;
            break idx;
        }
        and_all &= raw;
        or_all |= raw;
        table = raw & masks.addr;
        idx += 1;
    };
    let size = match leaf_idx {
        2 => PageSize::G1,
        3 => PageSize::M2,
        _ => PageSize::K4,
    };
    let perms = start.perms.and(Perms {
        readable: true,
        writable: and_all & PteFlags::WRITABLE.bits() != 0,
        user: and_all & PteFlags::USER.bits() != 0,
        executable: or_all & PteFlags::NO_EXECUTE.bits() == 0,
    });
    let leaf = w.entries[n - 1];
    let needs_ad =
        and_all & PteFlags::ACCESSED.bits() == 0 || (write && leaf & PteFlags::DIRTY.bits() == 0);
    if needs_ad || allowed >> perms_index(perms) & 1 == 0 {
        return false;
    }
    w.first = start.level;
    w.n = n;
    w.size = size;
    w.perms = perms;
    w.start_perms = start.perms;
    w.pa = Spa::new_truncate(leaf & masks.addr & !(size.bytes() - 1) | (va & (size.bytes() - 1)));
    true
}

/// The index of `p` in a table of [`permits`] answers (R, W, U, X: bits 0–3).
#[inline(always)]
pub(crate) fn perms_index(p: Perms) -> u32 {
    u32::from(p.readable)
        | u32::from(p.writable) << 1
        | u32::from(p.user) << 2
        | u32::from(p.executable) << 3
}

/// For an access of `kind` and `privilege` under `controls`: bit [`perms_index`] of each
/// rights combination set iff [`permits`] allows the access (the fast walk's test).
pub(crate) fn permits_table(
    kind: AccessKind,
    privilege: Privilege,
    controls: PagingControls,
) -> u16 {
    (0..16u32).fold(0, |t, s| {
        let bit = |b: u32| s >> b & 1 == 1;
        let perms = Perms { readable: bit(0), writable: bit(1), user: bit(2), executable: bit(3) };
        if permits(perms, kind, privilege, controls) { t | 1 << s } else { t }
    })
}

/// The x86 walk computed without side effects.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan<V, P: PhysAddr> {
    pub outcome: Translation<V, P>,
    pub core: Core<P>,
}

impl<V: Copy + Default, P: PhysAddr> Default for Plan<V, P> {
    fn default() -> Self {
        Plan::empty(V::default())
    }
}

impl<V: Copy, P: PhysAddr> Plan<V, P> {
    /// An empty plan (a reusable buffer).
    pub fn empty(addr: V) -> Self {
        Plan {
            outcome: Translation::NonCanonical { addr },
            core: Core {
                steps: InlineVec::new(),
                end: CoreEnd::NotPresent,
                and_all: u64::MAX,
                ad: false,
            },
        }
    }

    #[inline]
    fn ok(&self) -> bool {
        matches!(self.outcome, Translation::Translated { .. })
    }

    pub fn refs(&self) -> WalkRefs<P> {
        let mut refs = WalkRefs::new();
        self.push_refs(&mut refs);
        refs
    }

    #[inline]
    pub fn push_refs(&self, refs: &mut WalkRefs<P>) {
        self.core.push_refs(refs, Stage::Native, self.ok());
    }

    #[inline]
    pub fn commit(&self, tables: &mut PhysMemTables<P>) {
        if self.ok() {
            self.core.commit(tables);
        }
    }
}

#[inline]
pub(crate) fn base_code(access: AccessKind, privilege: Privilege) -> PfErrorCode {
    let mut c = PfErrorCode::empty();
    match access {
        AccessKind::Read => {}
        AccessKind::Write => c |= PfErrorCode::WRITE,
        AccessKind::Fetch => c |= PfErrorCode::FETCH,
    }
    match privilege {
        Privilege::Supervisor => {}
        Privilege::User => c |= PfErrorCode::USER,
    }
    c
}

/// Whether `perms` allow the access (SDM Vol. 3A §4.6.1). Protection keys are not checked.
#[inline]
pub fn permits(
    perms: Perms,
    access: AccessKind,
    privilege: Privilege,
    controls: PagingControls,
) -> bool {
    let base = match (privilege, access) {
        (Privilege::User, AccessKind::Read) => perms.user,
        (Privilege::User, AccessKind::Write) => perms.user && perms.writable,
        (Privilege::User, AccessKind::Fetch) => perms.user && perms.executable,
        (Privilege::Supervisor, AccessKind::Read) => {
            !(perms.user && controls.cr4_smap && !controls.rflags_ac)
        }
        (Privilege::Supervisor, AccessKind::Write) => {
            !(perms.user && controls.cr4_smap && !controls.rflags_ac)
                && (perms.writable || !controls.cr0_wp)
        }
        (Privilege::Supervisor, AccessKind::Fetch) => {
            perms.executable && !(perms.user && controls.cr4_smep)
        }
    };
    // A combined guest × nested translation may be unreadable (EPT execute-only).
    base && (perms.readable || access == AccessKind::Fetch)
}

/// Plan an x86-64 walk of `va` from `start` (the root if `None`).
pub(crate) fn plan<V: PagedAddr, P: PhysAddr>(
    tables: &PhysMemTables<P>,
    ctx: &WalkContext<P>,
    va: V,
    access: AccessKind,
    privilege: Privilege,
    start: Option<WalkStart<P>>,
) -> Plan<V, P> {
    let mut p = Plan {
        outcome: Translation::NonCanonical { addr: va },
        core: Core {
            steps: InlineVec::new(),
            end: CoreEnd::NotPresent,
            and_all: u64::MAX,
            ad: false,
        },
    };
    plan_into(&mut p, tables, ctx, va, access, privilege, start);
    p
}

/// [`plan`] into `p` (overwritten), so that the MMU reuses one buffer.
pub(crate) fn plan_into<V: PagedAddr, P: PhysAddr>(
    p: &mut Plan<V, P>,
    tables: &PhysMemTables<P>,
    ctx: &WalkContext<P>,
    va: V,
    access: AccessKind,
    privilege: Privilege,
    start: Option<WalkStart<P>>,
) {
    let core = &mut p.core;
    core.steps.clear();
    core.end = CoreEnd::NotPresent;
    if !va.in_range(ctx.paging) {
        p.outcome = Translation::NonCanonical { addr: va };
        return;
    }
    let start = start.unwrap_or(WalkStart::root(ctx.root, ctx.paging));
    core_walk_into::<X86Pte, V, P>(core, tables, start, ctx.format, va);
    let code = base_code(access, privilege);
    let fault = |extra: PfErrorCode| Translation::Fault(PageFault { code: code | extra, addr: va });
    let outcome = match core.end {
        CoreEnd::NotPresent => fault(PfErrorCode::empty()),
        CoreEnd::Malformed => fault(PfErrorCode::PRESENT | PfErrorCode::RESERVED),
        CoreEnd::Leaf { size, frame } => {
            let perms = core.perms();
            if permits(perms, access, privilege, ctx.controls) {
                core.set_ad::<X86Pte>(access == AccessKind::Write);
                let leaf = core.steps.last().expect("a leaf was read");
                Translation::Translated {
                    pa: P::from_raw(frame.raw() | (va.raw() & (size.bytes() - 1))),
                    size,
                    perms,
                    attrs: X86Pte::new(leaf.entry | leaf.set).leaf_attrs(size, ctx.format),
                }
            } else {
                fault(PfErrorCode::PRESENT)
            }
        }
    };
    p.outcome = outcome;
}

/// Walk `va` and set A/D bits in memory (A in every entry used, D in the leaf on a write), as
/// the hardware walker does. No check stage: see [`walk_checked`].
///
/// Model choices: A/D bits are set only when the walk completes with a translation (a faulting
/// walk leaves memory untouched and reports only its reads); the leaf's A and D are one write.
pub fn walk<V: PagedAddr, P: PhysAddr>(
    tables: &mut PhysMemTables<P>,
    ctx: &WalkContext<P>,
    va: V,
    access: AccessKind,
    privilege: Privilege,
) -> Walk<V, P> {
    let p = plan(tables, ctx, va, access, privilege, None);
    p.commit(tables);
    Walk { outcome: p.outcome, refs: p.refs() }
}

/// Walk `va` without side effects: the same outcome and references as [`walk`] (the A/D writes
/// that *would* be made are listed), memory untouched. For `ccsim check` and oracles.
pub fn walk_functional<V: PagedAddr, P: PhysAddr>(
    tables: &PhysMemTables<P>,
    ctx: &WalkContext<P>,
    va: V,
    access: AccessKind,
    privilege: Privilege,
) -> Walk<V, P> {
    let p = plan(tables, ctx, va, access, privilege, None);
    Walk { outcome: p.outcome, refs: p.refs() }
}

/// A walk through the check stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedWalk<V> {
    /// The walk (its outcome is a fault if a check failed).
    pub walk: Walk<V, Spa>,
    /// For a translation: what the checker allowed (TLB cache and fill size).
    pub allow: Option<CheckAllow>,
}

/// One access to walk through the check stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkRequest<V> {
    /// The address to translate.
    pub va: V,
    /// Read, write or fetch.
    pub access: AccessKind,
    /// Supervisor or user.
    pub privilege: Privilege,
    /// Who accesses (passed to the checker).
    pub who: Agent,
}

/// Walk `req.va` and run the check stage on the result (SPA-output tables only: the checks are
/// indexed by SPA), then set A/D bits if everything passed. Order: the ordinary walk and its
/// permission checks first (RMP checks rank below them, spec/snp.md §2.2); then, for a
/// translation, one check per table read, one per A/D write, and one for the data access. The
/// first failing check turns the outcome into #PF with the access's ordinary error bits,
/// P = 1, and the checker's extra bits; A/D bits are then not written. `work` collects what the
/// checker read.
pub fn walk_checked<V: PagedAddr, C: TranslationCheck + ?Sized>(
    tables: &mut PhysMemTables<Spa>,
    ctx: &WalkContext<Spa>,
    req: &WalkRequest<V>,
    checker: &mut C,
    work: &mut CheckWork,
) -> CheckedWalk<V> {
    let (p, allow) = plan_checked(tables, ctx, req, checker, work, None);
    p.commit(tables);
    CheckedWalk { walk: Walk { outcome: p.outcome, refs: p.refs() }, allow }
}

/// [`walk_checked`] without side effects on the tables (the A/D writes that would be made are
/// listed and checked, not written).
pub fn walk_checked_functional<V: PagedAddr, C: TranslationCheck + ?Sized>(
    tables: &PhysMemTables<Spa>,
    ctx: &WalkContext<Spa>,
    req: &WalkRequest<V>,
    checker: &mut C,
    work: &mut CheckWork,
) -> CheckedWalk<V> {
    let (p, allow) = plan_checked(tables, ctx, req, checker, work, None);
    CheckedWalk { walk: Walk { outcome: p.outcome, refs: p.refs() }, allow }
}

/// Plan a walk from `start` and run the check stage on it (nothing written).
pub(crate) fn plan_checked<V: PagedAddr, C: TranslationCheck + ?Sized>(
    tables: &PhysMemTables<Spa>,
    ctx: &WalkContext<Spa>,
    req: &WalkRequest<V>,
    checker: &mut C,
    work: &mut CheckWork,
    start: Option<WalkStart<Spa>>,
) -> (Plan<V, Spa>, Option<CheckAllow>) {
    let mut p = plan(tables, ctx, req.va, req.access, req.privilege, start);
    let allow = run_checks(&mut p, req, checker, work);
    (p, allow)
}

/// [`plan_checked`] into `p`.
pub(crate) fn plan_checked_into<V: PagedAddr, C: TranslationCheck + ?Sized>(
    p: &mut Plan<V, Spa>,
    tables: &PhysMemTables<Spa>,
    ctx: &WalkContext<Spa>,
    req: &WalkRequest<V>,
    checker: &mut C,
    work: &mut CheckWork,
    start: Option<WalkStart<Spa>>,
) -> Option<CheckAllow> {
    plan_into(p, tables, ctx, req.va, req.access, req.privilege, start);
    run_checks(p, req, checker, work)
}

fn run_checks<V: PagedAddr, C: TranslationCheck + ?Sized>(
    p: &mut Plan<V, Spa>,
    wreq: &WalkRequest<V>,
    checker: &mut C,
    work: &mut CheckWork,
) -> Option<CheckAllow> {
    let Translation::Translated { pa, size, .. } = p.outcome else { return None };
    if checker.allows_everything() {
        return Some(CheckAllow::WRITE_OK);
    }
    let WalkRequest { va, access, privilege, who } = *wreq;
    let deny = |extra: PfErrorCode| {
        let code = base_code(access, privilege) | PfErrorCode::PRESENT | extra;
        Translation::Fault(PageFault { code, addr: va })
    };
    for s in &p.core.steps {
        let read = CheckTarget::TableRead { level: s.level };
        let write = (s.set != 0).then_some(CheckTarget::TableWrite { level: s.level });
        for target in std::iter::once(read).chain(write) {
            if let Some(bits) =
                checker.check_native(s.addr, target, who, privilege, work).host_fault_bits()
            {
                p.outcome = deny(bits);
                return None;
            }
        }
    }
    let data = CheckTarget::Data { access, mapping: size };
    match data_verdict(checker.check_native(pa, data, who, privilege, work), size) {
        Ok(allow) => Some(allow),
        Err(bits) => {
            p.outcome = deny(bits);
            None
        }
    }
}

/// The data check's verdict on a translation of `size`: what the TLB entry keeps (a fill size
/// only when smaller than the translation), or the extra #PF error bits.
#[inline]
fn data_verdict(v: CheckVerdict, size: PageSize) -> Result<CheckAllow, PfErrorCode> {
    match v {
        CheckVerdict::Allow(a) => {
            Ok(CheckAllow { cache: a.cache, fill_size: a.fill_size.filter(|f| *f < size) })
        }
        v @ (CheckVerdict::Fault { .. }
        | CheckVerdict::NestedFault { .. }
        | CheckVerdict::GuestVc { .. }) => Err(v.host_fault_bits().unwrap_or_default()),
    }
}

/// The check stage on a walk [`fast_walk_x86`] made, in [`walk_checked`]'s order: one check
/// per entry read (the fast walk plans no A/D write, so there are no write checks), then the
/// data access at `w.pa`, through [`TranslationCheck::check_native_walk`]. The same checks,
/// verdict and `work` as the general path for that walk, without a plan. `Ok`: what the
/// checker allowed; `Err`: the first failing check's extra #PF error bits (the caller adds the
/// access's own bits and P).
#[inline]
pub(crate) fn check_fast_walk<C: TranslationCheck + ?Sized>(
    w: &FastWalk,
    access: AccessKind,
    privilege: Privilege,
    who: Agent,
    checker: &mut C,
    work: &mut CheckWork,
) -> Result<CheckAllow, PfErrorCode> {
    let data =
        CheckRequest::native(w.pa, CheckTarget::Data { access, mapping: w.size }, who, privilege);
    data_verdict(checker.check_native_walk(&w.addrs[..w.n], w.first, &data, work), w.size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_table::PageTable;
    use crate::pte::PteFlags;
    use crate::tables::LinearFrames;
    use sim_core::Hva;

    const DM: u64 = 0xffff_8880_0000_0000;

    fn setup() -> (PhysMemTables, PageTable, WalkContext<Spa>) {
        let mut tables = PhysMemTables::new();
        let mut frames: LinearFrames =
            LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
        let mut pt: PageTable = PageTable::new(
            &mut tables,
            &mut frames,
            Paging::FourLevel,
            PteFormat::default(),
            PteFlags::PRESENT | PteFlags::WRITABLE | PteFlags::USER,
        )
        .unwrap();
        let user_ro = LeafAttrs::new(PteFlags::USER);
        pt.map(
            &mut tables,
            &mut frames,
            Hva::new(DM),
            Spa::new(0),
            PageSize::M2,
            LeafAttrs::new(PteFlags::WRITABLE),
        )
        .unwrap()
        .ignore(); // fresh mapping
        pt.map(
            &mut tables,
            &mut frames,
            Hva::new(0x40_0000),
            Spa::new(0x9000),
            PageSize::K4,
            user_ro,
        )
        .unwrap()
        .ignore(); // fresh mapping
        let ctx = WalkContext {
            root: pt.root(),
            paging: Paging::FourLevel,
            format: PteFormat::default(),
            controls: PagingControls::default(),
        };
        (tables, pt, ctx)
    }

    #[test]
    fn first_touch_sets_a_then_d() {
        let (mut tables, _pt, ctx) = setup();
        let va = Hva::new(DM + 0x1234);
        let w = walk(&mut tables, &ctx, va, AccessKind::Read, Privilege::Supervisor);
        let Translation::Translated { pa, size, .. } = w.outcome else { panic!("{w:?}") };
        assert_eq!((pa, size), (Spa::new(0x1234), PageSize::M2));
        // 3 reads (PML4, PDPT, PD leaf), each followed by an A write (nothing had A set).
        let kinds: Vec<_> = w.refs.iter().map(|r| (r.level, r.kind)).collect();
        assert_eq!(
            kinds,
            [
                (Level::Pml4, RefKind::Read),
                (Level::Pml4, RefKind::AdWrite),
                (Level::Pdpt, RefKind::Read),
                (Level::Pdpt, RefKind::AdWrite),
                (Level::Pd, RefKind::Read),
                (Level::Pd, RefKind::AdWrite),
            ]
        );
        let again = walk(&mut tables, &ctx, va, AccessKind::Read, Privilege::Supervisor);
        assert_eq!(again.refs.len(), 3);
        assert!(again.refs.iter().all(|r| r.kind == RefKind::Read));
        let wr = walk(&mut tables, &ctx, va, AccessKind::Write, Privilege::Supervisor);
        assert_eq!(wr.refs.len(), 4, "D on the leaf");
        let Translation::Translated { attrs, .. } = wr.outcome else { panic!() };
        assert!(attrs.flags.contains(PteFlags::DIRTY | PteFlags::ACCESSED));
        assert_eq!(
            walk(&mut tables, &ctx, va, AccessKind::Write, Privilege::Supervisor).refs.len(),
            3
        );
    }

    #[test]
    fn functional_walk_has_no_side_effects() {
        let (mut tables, _pt, ctx) = setup();
        let va = Hva::new(DM + 0x10);
        let f1 = walk_functional(&tables, &ctx, va, AccessKind::Write, Privilege::Supervisor);
        let f2 = walk_functional(&tables, &ctx, va, AccessKind::Write, Privilege::Supervisor);
        assert_eq!(f1, f2);
        let real = walk(&mut tables, &ctx, va, AccessKind::Write, Privilege::Supervisor);
        assert_eq!(real.refs, f1.refs);
        assert_eq!(real.outcome, f1.outcome);
    }

    #[test]
    fn fault_codes() {
        let (mut tables, _pt, ctx) = setup();
        let code = |t: &mut PhysMemTables, va: u64, a, p| match walk(t, &ctx, Hva::new(va), a, p)
            .outcome
        {
            Translation::Fault(f) => Some(f.code.bits()),
            Translation::Translated { .. } => None,
            Translation::NonCanonical { .. } => Some(u32::MAX),
        };
        // Not present: P=0.
        assert_eq!(
            code(&mut tables, DM + (4 << 20), AccessKind::Read, Privilege::Supervisor),
            Some(0)
        );
        assert_eq!(code(&mut tables, DM + (4 << 20), AccessKind::Write, Privilege::User), Some(6));
        // User access to a supervisor page: P|U.
        assert_eq!(code(&mut tables, DM, AccessKind::Read, Privilege::User), Some(5));
        // User write to a read-only user page: P|W|U.
        assert_eq!(code(&mut tables, 0x40_0000, AccessKind::Write, Privilege::User), Some(7));
        // Supervisor access to a user page with SMAP: P; fetch with SMEP: P|I.
        assert_eq!(code(&mut tables, 0x40_0000, AccessKind::Read, Privilege::Supervisor), Some(1));
        assert_eq!(
            code(&mut tables, 0x40_0000, AccessKind::Fetch, Privilege::Supervisor),
            Some(0x11)
        );
        assert_eq!(code(&mut tables, 0x40_0000, AccessKind::Read, Privilege::User), None);
        // Non-canonical: no walk.
        let nc =
            walk(&mut tables, &ctx, Hva::new(0x8000_0000_0000), AccessKind::Read, Privilege::User);
        assert!(nc.refs.is_empty());
        assert_eq!(nc.outcome, Translation::NonCanonical { addr: Hva::new(0x8000_0000_0000) });
        // A faulting walk writes no A bits.
        let before =
            walk_functional(&tables, &ctx, Hva::new(DM), AccessKind::Read, Privilege::User);
        assert!(before.refs.iter().all(|r| r.kind == RefKind::Read));
    }

    #[test]
    fn reserved_bit_fault() {
        let (mut tables, pt, ctx) = setup();
        // Set bit 13 in the 2M leaf: reserved.
        let pml4 = tables.read(Spa::new(pt.root().raw() + 8 * 273));
        let pdpt = X86Pte::new(pml4).table_addr::<Spa>(PteFormat::default());
        let pd = X86Pte::new(tables.read(pdpt)).table_addr::<Spa>(PteFormat::default());
        let leaf = tables.read(pd);
        assert!(tables.write(pd, leaf | 0x2000));
        let w = walk(&mut tables, &ctx, Hva::new(DM), AccessKind::Read, Privilege::Supervisor);
        let Translation::Fault(f) = w.outcome else { panic!() };
        assert_eq!(f.code, PfErrorCode::PRESENT | PfErrorCode::RESERVED);
        assert_eq!(w.refs.len(), 3);
    }

    #[test]
    fn wp_off_lets_supervisor_write_read_only() {
        let (mut tables, _pt, mut ctx) = setup();
        ctx.controls.cr4_smap = false;
        let va = Hva::new(0x40_0000);
        let w = walk(&mut tables, &ctx, va, AccessKind::Write, Privilege::Supervisor);
        assert!(matches!(w.outcome, Translation::Fault(_)));
        ctx.controls.cr0_wp = false;
        let w = walk(&mut tables, &ctx, va, AccessKind::Write, Privilege::Supervisor);
        assert!(matches!(w.outcome, Translation::Translated { .. }));
    }
}
