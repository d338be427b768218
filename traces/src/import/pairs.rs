//! Placing accesses that carry their own VA→PA pair (QEMU memtrace, `perf script` with
//! `phys_addr`), and the line-by-line driver those text importers share.
//!
//! Unlike lackey, whose frames come from a separate `vapa.txt` map, these formats give the
//! physical address on the access line itself. A [`PairPlacer`] keeps the pairs seen so far
//! (one entry per distinct virtual page: memory in the footprint, not in the stream's length),
//! emits a `map` on the first touch of a page and an `unmap` + `map` when the page's frame
//! changes, and turns each access into the record of the chosen [`Role`]. The rules, field by
//! field, are in `docs/importers.md`.

use crate::import::place::{Role, access_event};
use sim_core::event::{Space, VmKind};
use sim_core::{
    Address, Agent, Context, CpuId, Event, Gpa, Gva, Hva, PageSize, PrivLevel, Record, Spa,
    TimedEvent,
};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead};

/// The C-bit of a private GPA of an SNP guest without paging (bit 51, `mmu.cbit_pos`'s default).
const SNP_CBIT: u64 = 1 << 51;

/// Base of the x86-64 Linux direct map with 4-level paging (`page_offset_base` without KASLR,
/// `Documentation/arch/x86/x86_64/mm.rst`): `__va(pa) = pa + DIRECT_MAP_BASE`.
pub const DIRECT_MAP_BASE: u64 = 0xffff_8880_0000_0000;
/// End of the 64 TiB direct-map region (exclusive).
pub const DIRECT_MAP_END: u64 = 0xffff_c880_0000_0000;
/// Start of the canonical upper (kernel) half with 4-level paging.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;
/// End of the canonical lower (user) half (exclusive).
const USER_END: u64 = 0x0000_8000_0000_0000;
/// Frame of a host user page left to the model's demand paging (not a real PFN: PFNs are
/// below 2^40).
const DEMAND_PAGED: u64 = u64::MAX;
/// The page size at which accesses are split.
const PAGE: u64 = 4096;

/// Where a virtual address lies in the capture kernel's layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Lower half: user space.
    User,
    /// The kernel's direct map of physical memory.
    DirectMap,
    /// Any other kernel address (text, modules, vmalloc, vmemmap, fixmap…).
    KernelOther,
}

/// The class of `va`, or `None` if it is not canonical (4-level).
pub(crate) fn classify(va: u64) -> Option<Class> {
    if va < USER_END {
        Some(Class::User)
    } else if (DIRECT_MAP_BASE..DIRECT_MAP_END).contains(&va) {
        Some(Class::DirectMap)
    } else if va >= KERNEL_HALF {
        Some(Class::KernelOther)
    } else {
        None
    }
}

/// A data access: load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Load.
    Load,
    /// Store.
    Store,
}

/// What a [`PairPlacer`] and its line reader did. Every line and every access is counted in
/// exactly one outcome: nothing is dropped without a count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PairStats {
    /// Lines read.
    pub lines: u64,
    /// Comment and blank lines (`#` header, trigger and trailer lines; blank lines).
    pub comments: u64,
    /// Records produced (maps, pvalidates, accesses, `work`).
    pub records: u64,
    /// Access records emitted (after splitting).
    pub accesses: u64,
    /// …of them by a user (lower-half) address.
    pub user: u64,
    /// …of them by a kernel direct-map address.
    pub direct_map: u64,
    /// …of them by another kernel address with a physical address (placed at that address).
    pub kernel_other: u64,
    /// Instructions emitted as `work 1`.
    pub work: u64,
    /// `map` events emitted (4 KiB).
    pub maps: u64,
    /// Pages whose frame changed: an `unmap` then a `map` were emitted.
    pub remaps: u64,
    /// `pvalidate` events emitted (SNP guests, one per guest-physical frame).
    pub pvalidates: u64,
    /// Accesses that crossed a 4 KiB boundary and were split in two.
    pub split: u64,
    /// Direct-map accesses whose line PA differs from `va - DIRECT_MAP_BASE` (the line's PA
    /// is used).
    pub direct_map_pa_mismatch: u64,
    /// Host user pages first touched with no physical address: their accesses are emitted
    /// without a `map`, so the model demand-pages them (a later PA for the page remaps it).
    pub demand_paged: u64,
    /// Skipped: accesses to device memory (QEMU `io` flag, execlog region other than RAM).
    pub skipped_io: u64,
    /// Skipped: accesses that need a physical address (guest role, non-direct-map kernel
    /// address) and have none, nor a known frame for their page.
    pub skipped_no_pa: u64,
    /// Skipped: kernel accesses and instructions in the `host-process` role.
    pub skipped_kernel: u64,
    /// Accesses given by physical address only (execlog in system mode): `gpa:` in a guest,
    /// `phys:` on the host.
    pub physical: u64,
    /// Skipped: accesses by physical address only in the `host-process` role (no VA to put
    /// them at).
    pub skipped_physical: u64,
}

impl PairStats {
    /// Lines or access pieces that produced nothing (the sum of the `skipped_*` counts).
    pub fn skipped(&self) -> u64 {
        self.skipped_io + self.skipped_no_pa + self.skipped_kernel + self.skipped_physical
    }

    /// The counts as `key=value` pairs for trace metadata, in a fixed order.
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("lines", self.lines),
            ("comment_lines", self.comments),
            ("records", self.records),
            ("accesses", self.accesses),
            ("accesses_user", self.user),
            ("accesses_direct_map", self.direct_map),
            ("accesses_kernel_other", self.kernel_other),
            ("work", self.work),
            ("maps_4k", self.maps),
            ("remaps", self.remaps),
            ("pvalidates", self.pvalidates),
            ("split", self.split),
            ("direct_map_pa_mismatch", self.direct_map_pa_mismatch),
            ("demand_paged", self.demand_paged),
            ("skipped_io", self.skipped_io),
            ("skipped_no_pa", self.skipped_no_pa),
            ("skipped_kernel", self.skipped_kernel),
            ("accesses_physical", self.physical),
            ("skipped_physical", self.skipped_physical),
        ]
    }
}

impl std::fmt::Display for PairStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (k, v) in self.pairs() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{k} {v}")?;
        }
        Ok(())
    }
}

/// Places accesses that carry their own PA in a role; see the module docs.
#[derive(Debug)]
pub struct PairPlacer {
    role: Role,
    /// Virtual page → frame of the role's mapped space (the guest's tables, or the host
    /// process's).
    frames: BTreeMap<u64, u64>,
    /// SNP: guest frames already validated.
    validated: BTreeSet<u64>,
    /// The last page looked up and its frame.
    last: Option<(u64, u64)>,
    stats: PairStats,
}

impl PairPlacer {
    /// A placer for `role`.
    pub fn new(role: Role) -> PairPlacer {
        PairPlacer {
            role,
            frames: BTreeMap::new(),
            validated: BTreeSet::new(),
            last: None,
            stats: PairStats::default(),
        }
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// What was done so far.
    pub fn stats(&self) -> PairStats {
        self.stats
    }

    fn pid(&self) -> u32 {
        match self.role {
            Role::HostProcess { pid } => pid,
            Role::HostKernel | Role::Guest { .. } => 1,
        }
    }

    /// The agent issuing an access of class `class` on (v)CPU `cpu`.
    fn agent(&self, cpu: CpuId, class: Class) -> Agent {
        let ctx = match (self.role, class) {
            (Role::Guest { vm, .. }, _) => {
                Context::Guest { vm, vcpu: cpu, level: PrivLevel::Vmpl(0) }
            }
            (Role::HostProcess { .. } | Role::HostKernel, Class::User) => {
                Context::HostProcess(self.pid())
            }
            (
                Role::HostProcess { .. } | Role::HostKernel,
                Class::DirectMap | Class::KernelOther,
            ) => Context::HostKernel,
        };
        Agent::Cpu { cpu, ctx }
    }

    fn push(&mut self, out: &mut Vec<Record>, agent: Agent, event: Event) {
        self.stats.records += 1;
        out.push(Record::Event(TimedEvent { time: None, agent, event }));
    }

    /// An access to device memory, left out (counted).
    pub(crate) fn skip_io(&mut self) {
        self.stats.skipped_io += 1;
    }

    /// One instruction at `pc` on `cpu`: `work 1` by the agent of `pc`'s class (left out in the
    /// `host-process` role when `pc` is a kernel address).
    pub(crate) fn instruction(&mut self, cpu: CpuId, pc: u64, out: &mut Vec<Record>) {
        let class = classify(pc).unwrap_or(Class::KernelOther);
        if matches!(self.role, Role::HostProcess { .. }) && class != Class::User {
            self.stats.skipped_kernel += 1;
            return;
        }
        self.stats.work += 1;
        let agent = self.agent(cpu, class);
        self.push(out, agent, Event::Work { count: 1 });
    }

    /// A data access of `size` bytes (≥ 1, within one 4 KiB page) known only by its
    /// physical address `pa` (< 2^52): `gpa:` in a guest role (SNP: PVALIDATE of the frame on
    /// its first touch), `phys:` by the host kernel, skipped in the `host-process` role.
    pub(crate) fn physical(
        &mut self,
        cpu: CpuId,
        op: Op,
        pa: u64,
        size: u32,
        out: &mut Vec<Record>,
    ) {
        let code = match op {
            Op::Load => 1,
            Op::Store => 2,
        };
        let agent = self.agent(cpu, Class::KernelOther);
        let addr = match self.role {
            Role::HostProcess { .. } => {
                self.stats.skipped_physical += 1;
                return;
            }
            Role::HostKernel => Address::Spa(Spa::new_truncate(pa)),
            Role::Guest { kind, .. } => {
                let page = pa & !(PAGE - 1);
                if kind == VmKind::Snp && self.validated.insert(pa >> 12) {
                    self.stats.pvalidates += 1;
                    let addr = Address::Gpa(Gpa::new_truncate(page));
                    self.push(
                        out,
                        agent,
                        Event::Pvalidate { addr, size: PageSize::K4, validate: true },
                    );
                }
                // An SNP guest's memory is private: its accesses carry the C-bit (bit 51, the
                // machine's default `mmu.cbit_pos`), as the guest's own page tables would give
                // them; without it they would be shared accesses to validated private pages.
                let cbit = if kind == VmKind::Snp { SNP_CBIT } else { 0 };
                Address::Gpa(Gpa::new_truncate(pa | cbit))
            }
        };
        self.stats.physical += 1;
        self.stats.accesses += 1;
        self.push(out, agent, access_event(code, addr, size));
    }

    /// A data access of `size` bytes (≥ 1) at canonical `va`, with the physical address of its
    /// first byte if the line has one; split at 4 KiB. The caller has checked that `va` is
    /// canonical and that the access does not wrap.
    pub(crate) fn access(
        &mut self,
        cpu: CpuId,
        op: Op,
        va: u64,
        pa: Option<u64>,
        size: u32,
        out: &mut Vec<Record>,
    ) {
        let first = (PAGE - (va % PAGE)).min(u64::from(size));
        if first == u64::from(size) {
            self.piece(cpu, op, va, pa, size, out);
            return;
        }
        self.stats.split += 1;
        // `first` < size, a u32.
        let first32 = u32::try_from(first).unwrap_or(size);
        self.piece(cpu, op, va, pa, first32, out);
        // The next page's frame is not on the line: the direct map derives it, other pages
        // use their known frame.
        self.piece(cpu, op, va + first, None, size - first32, out);
    }

    fn piece(
        &mut self,
        cpu: CpuId,
        op: Op,
        va: u64,
        pa: Option<u64>,
        size: u32,
        out: &mut Vec<Record>,
    ) {
        let class = classify(va).unwrap_or(Class::KernelOther);
        let code = match op {
            Op::Load => 1,
            Op::Store => 2,
        };
        let agent = self.agent(cpu, class);
        let addr = match (self.role, class) {
            (Role::HostProcess { .. }, Class::DirectMap | Class::KernelOther) => {
                self.stats.skipped_kernel += 1;
                return;
            }
            (Role::HostKernel, Class::DirectMap) => {
                let derived = va - DIRECT_MAP_BASE;
                let p = match pa {
                    Some(p) => {
                        if p != derived {
                            self.stats.direct_map_pa_mismatch += 1;
                        }
                        p
                    }
                    None => derived,
                };
                self.stats.direct_map += 1;
                Address::Spa(Spa::new_truncate(p))
            }
            (Role::HostKernel, Class::KernelOther) => match pa {
                Some(p) => {
                    self.stats.kernel_other += 1;
                    Address::Spa(Spa::new_truncate(p))
                }
                None => {
                    self.stats.skipped_no_pa += 1;
                    return;
                }
            },
            (Role::HostProcess { .. } | Role::HostKernel, Class::User) => {
                let vpn = va >> 12;
                match pa.map(|p| p >> 12).or_else(|| self.known(vpn)) {
                    Some(DEMAND_PAGED) => {}
                    Some(pfn) => self.ensure_map(cpu, vpn, pfn, out),
                    None => {
                        // The model demand-pages it; a later PA for the page replaces that
                        // page (`unmap` + `map`, counted in `remaps`).
                        self.stats.demand_paged += 1;
                        self.frames.insert(vpn, DEMAND_PAGED);
                        self.last = Some((vpn, DEMAND_PAGED));
                    }
                }
                self.stats.user += 1;
                Address::Hva(Hva::new_truncate(va))
            }
            (Role::Guest { .. }, _) => {
                let vpn = va >> 12;
                let pa = match (pa, class) {
                    (Some(p), _) => Some(p),
                    (None, Class::DirectMap) => Some(va - DIRECT_MAP_BASE),
                    (None, Class::User | Class::KernelOther) => None,
                };
                let Some(pfn) = pa.map(|p| p >> 12).or_else(|| self.known(vpn)) else {
                    self.stats.skipped_no_pa += 1;
                    return;
                };
                self.ensure_map(cpu, vpn, pfn, out);
                match class {
                    Class::User => self.stats.user += 1,
                    Class::DirectMap => self.stats.direct_map += 1,
                    Class::KernelOther => self.stats.kernel_other += 1,
                }
                Address::Gva(Gva::new_truncate(va))
            }
        };
        self.stats.accesses += 1;
        self.push(out, agent, access_event(code, addr, size));
    }

    fn known(&mut self, vpn: u64) -> Option<u64> {
        match self.last {
            Some((v, f)) if v == vpn => Some(f),
            _ => self.frames.get(&vpn).copied(),
        }
    }

    /// Make `vpn` map to `pfn` in the role's mapped space, emitting `map` (and `unmap` if it
    /// mapped elsewhere; `pvalidate` for a new SNP guest frame).
    fn ensure_map(&mut self, cpu: CpuId, vpn: u64, pfn: u64, out: &mut Vec<Record>) {
        if self.last == Some((vpn, pfn)) {
            return;
        }
        let old = self.frames.insert(vpn, pfn);
        self.last = Some((vpn, pfn));
        if old == Some(pfn) {
            return;
        }
        let (space, va, pa, user, enc, agent) = match self.role {
            Role::Guest { vm, kind } => (
                Space::Guest(vm),
                Address::Gva(Gva::new_truncate(vpn << 12)),
                Address::Gpa(Gpa::new_truncate(pfn << 12)),
                // Guest accesses run as the guest kernel's (CPL 0, SMAP): supervisor pages.
                false,
                kind != VmKind::Plain,
                self.agent(cpu, Class::KernelOther),
            ),
            Role::HostProcess { .. } | Role::HostKernel => (
                Space::Process(self.pid()),
                Address::Hva(Hva::new_truncate(vpn << 12)),
                Address::Spa(Spa::new_truncate(pfn << 12)),
                true,
                false,
                self.agent(cpu, Class::User),
            ),
        };
        if old.is_some() {
            self.stats.remaps += 1;
            self.push(out, agent, Event::Unmap { va, size: PageSize::K4, space });
        }
        self.stats.maps += 1;
        self.push(
            out,
            agent,
            Event::Map { va, pa, size: PageSize::K4, space, w: true, x: true, user, enc },
        );
        if let Role::Guest { kind: VmKind::Snp, .. } = self.role
            && self.validated.insert(pfn)
        {
            self.stats.pvalidates += 1;
            self.push(
                out,
                agent,
                Event::Pvalidate { addr: va, size: PageSize::K4, validate: true },
            );
        }
    }
}

/// A text capture line could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// Reading failed.
    #[error("line {line}: I/O error: {source}")]
    Io {
        /// 1-based line number being read.
        line: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The line is not a record of the format.
    #[error("line {line}, column {col}: expected {expected}, found {found:?}")]
    Malformed {
        /// 1-based line number (of the decompressed text).
        line: u64,
        /// 1-based column (byte) of the problem.
        col: usize,
        /// What was expected there.
        expected: &'static str,
        /// The text from that column on.
        found: String,
    },
}

/// A line-oriented capture format: turns one line into records through a [`PairPlacer`].
pub trait LineFormat {
    /// Parse `line` (without its end of line), pushing records onto `out`; return
    /// `Ok(false)` for a comment or blank line. Errors carry the column; the driver adds the
    /// line number.
    ///
    /// # Errors
    /// `(column, expected)` for a malformed line.
    fn parse(
        &mut self,
        line: &[u8],
        pl: &mut PairPlacer,
        out: &mut Vec<Record>,
    ) -> Result<bool, (usize, &'static str)>;
}

/// Streams records from a line-oriented capture: holds one line and the records it made.
#[derive(Debug)]
pub struct TextImporter<R: BufRead, F: LineFormat> {
    r: R,
    format: F,
    line: Vec<u8>,
    line_no: u64,
    out: Vec<Record>,
    placer: PairPlacer,
    failed: bool,
}

impl<R: BufRead, F: LineFormat> TextImporter<R, F> {
    /// An importer of `r` in `format`, placing accesses with `placer`.
    pub fn new(r: R, format: F, placer: PairPlacer) -> Self {
        TextImporter {
            r,
            format,
            line: Vec::with_capacity(128),
            line_no: 0,
            out: Vec::with_capacity(8),
            placer,
            failed: false,
        }
    }

    /// What has been read and emitted so far.
    pub fn stats(&self) -> PairStats {
        self.placer.stats()
    }
}

impl<R: BufRead, F: LineFormat> Iterator for TextImporter<R, F> {
    type Item = Result<Record, TextError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // `out` holds the line's records in reverse order.
            if let Some(r) = self.out.pop() {
                return Some(Ok(r));
            }
            if self.failed {
                return None;
            }
            self.line.clear();
            self.line_no += 1;
            match self.r.read_until(b'\n', &mut self.line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    self.failed = true;
                    return Some(Err(TextError::Io { line: self.line_no, source }));
                }
            }
            self.placer.stats.lines += 1;
            let mut l: &[u8] = &self.line;
            while let [rest @ .., b'\n' | b'\r'] = l {
                l = rest;
            }
            match self.format.parse(l, &mut self.placer, &mut self.out) {
                Ok(true) => self.out.reverse(),
                Ok(false) => self.placer.stats.comments += 1,
                Err((col, expected)) => {
                    self.failed = true;
                    self.out.clear();
                    let from = col.min(l.len());
                    return Some(Err(TextError::Malformed {
                        line: self.line_no,
                        col: col + 1,
                        expected,
                        found: String::from_utf8_lossy(&l[from..]).into_owned(),
                    }));
                }
            }
        }
    }
}

/// Parse `s` as hexadecimal (1–16 digits, an optional `0x`).
pub(crate) fn hex(s: &[u8]) -> Option<u64> {
    let s = s.strip_prefix(b"0x").unwrap_or(s);
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u64::from(d);
    }
    Some(v)
}

/// Parse `s` as a decimal `u32`.
pub(crate) fn dec(s: &[u8]) -> Option<u32> {
    if s.is_empty() || s.len() > 10 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    u32::try_from(v).ok()
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Index of the first byte of `l` at or after `i` that is a separator (≤ 0x20: space, tab,
/// control) when `sep`, or that is not one when `!sep`; `l.len()` if none. Eight bytes at a
/// time (the lowest flagged byte of each word is exact for both tests).
fn scan(l: &[u8], mut i: usize, sep: bool) -> usize {
    while let Some(w) = l.get(i..i + 8) {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        let x = u64::from_le_bytes(b);
        let hit = if sep {
            // A byte below 0x21.
            x.wrapping_sub(ONES * 0x21) & !x & HIGHS
        } else {
            // A byte above 0x20.
            (x.wrapping_add(ONES * (127 - 0x20)) | x) & HIGHS
        };
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < l.len() && (l[i] <= b' ') != sep {
        i += 1;
    }
    i
}

/// Fields of `l` separated by whitespace (bytes ≤ 0x20) with their 0-based start columns.
pub(crate) fn fields(l: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut i = 0;
    std::iter::from_fn(move || {
        i = scan(l, i, false);
        if i >= l.len() {
            return None;
        }
        let s = i;
        i = scan(l, i, true);
        Some((s, &l[s..i]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_on_runs_of_whitespace_at_any_alignment() {
        for pad in 0..20 {
            let sp = " ".repeat(pad);
            let l = format!("{sp}abc{sp}\tdefghijklmnop {sp}q\u{e9}r{sp}");
            let got: Vec<(usize, String)> = fields(l.as_bytes())
                .map(|(c, f)| (c, String::from_utf8(f.to_vec()).unwrap()))
                .collect();
            let want: Vec<(usize, String)> = l
                .split([' ', '\t'])
                .filter(|f| !f.is_empty())
                .map(|f| (f.as_ptr() as usize - l.as_ptr() as usize, f.to_owned()))
                .collect();
            assert_eq!(got, want, "{l:?}");
        }
    }
}
