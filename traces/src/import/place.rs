//! Placing an imported stream in the simulated machine: its role (host process, host kernel or
//! a guest vCPU) and the VA→PA page map captured with it (`vapa.txt`, from `/proc/PID/pagemap`
//! and `/proc/kpageflags`).
//!
//! A [`Placer`] is asked, for each access piece (already split at 4 KiB), which address the
//! access uses and which records must come before it: the `map` of the page on its first touch
//! and, in an SEV-SNP guest, the PVALIDATE that the guest kernel did before handing the page
//! out. Field-by-field format and the reasons are in `docs/importers.md`.

use sim_core::event::{MemType, Space, VmKind};
use sim_core::{
    Address, Agent, Context, CpuId, Event, Gva, Hva, PageSize, PrivLevel, Record, Setting, Spa,
    TimedEvent, VmId,
};
use std::collections::BTreeSet;
use std::io::{self, BufRead};
use std::str::FromStr;

/// kpageflags bit 22: the page belongs to a transparent huge page.
const KPF_THP: u64 = 1 << 22;
/// Largest PFN whose page lies below 2^52, the x86-64 physical limit.
const MAX_PFN: u64 = (1 << 40) - 1;

/// What an imported stream is in the simulated machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// A host process: `cN proc:PID` at `hva:` addresses.
    HostProcess {
        /// Its PID.
        pid: u32,
    },
    /// The host kernel: `cN host` at the `phys:` address of the captured page (reached
    /// through the direct map).
    HostKernel,
    /// vCPU 0 of guest `vm`: `cN vmVM/v0` at `gva:` addresses.
    Guest {
        /// The VM number (also its ASID or HKID).
        vm: VmId,
        /// Its kind.
        kind: VmKind,
    },
}

/// A `--as` role could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "bad role {0:?}: expected host-process[:PID], host-kernel or guest:N[:KIND] (N >= 1, KIND plain, snp or tdx)"
)]
pub struct BadRole(pub String);

impl FromStr for Role {
    type Err = BadRole;

    fn from_str(s: &str) -> Result<Role, BadRole> {
        let bad = || BadRole(s.to_owned());
        let mut it = s.split(':');
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some("host-process"), None, None, None) => Ok(Role::HostProcess { pid: 1 }),
            (Some("host-process"), Some(p), None, None) => {
                Ok(Role::HostProcess { pid: p.parse().map_err(|_| bad())? })
            }
            (Some("host-kernel"), None, None, None) => Ok(Role::HostKernel),
            (Some("guest"), Some(n), k, None) => {
                let vm: VmId = n.parse().ok().filter(|&v| v >= 1).ok_or_else(bad)?;
                let kind = match k.unwrap_or("snp") {
                    "plain" => VmKind::Plain,
                    "snp" => VmKind::Snp,
                    "tdx" => VmKind::Tdx,
                    _ => return Err(bad()),
                };
                Ok(Role::Guest { vm, kind })
            }
            _ => Err(bad()),
        }
    }
}

impl Role {
    /// The agent that issues the stream's accesses on CPU `cpu`.
    pub fn agent(self, cpu: CpuId) -> Agent {
        let ctx = match self {
            Role::HostProcess { pid } => Context::HostProcess(pid),
            Role::HostKernel => Context::HostKernel,
            Role::Guest { vm, .. } => Context::Guest { vm, vcpu: 0, level: PrivLevel::Vmpl(0) },
        };
        Agent::Cpu { cpu, ctx }
    }

    /// The header settings the trace needs: `host captured_phys=true` when the stream names
    /// captured physical pages on the host side, `vm N KIND asid=N` for a guest.
    pub fn header(self, with_map: bool) -> Vec<Record> {
        let setting = |section: &str, args: Vec<String>, pairs: Vec<(String, String)>| {
            Record::Setting(Setting { section: section.to_owned(), args, pairs })
        };
        match self {
            Role::HostProcess { .. } if !with_map => Vec::new(),
            Role::HostProcess { .. } | Role::HostKernel => {
                vec![setting("host", Vec::new(), vec![("captured_phys".into(), "true".into())])]
            }
            Role::Guest { vm, kind } => vec![setting(
                "vm",
                vec![vm.to_string(), kind.to_string()],
                vec![("asid".into(), vm.to_string())],
            )],
        }
    }
}

/// A VA→PA map line could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VapaError {
    /// Reading failed.
    #[error("line {line}: I/O error: {source}")]
    Io {
        /// 1-based line number being read.
        line: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The line is not `<va> <pfn> <pm bits> <kpageflags> <first> <last>`.
    #[error("line {line}: {what}, found {found:?}")]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        what: &'static str,
        /// The line.
        found: String,
    },
}

/// One page of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PageEntry {
    /// Virtual page number (VA >> 12).
    vpn: u64,
    /// Page frame number of the captured physical page.
    pfn: u64,
    /// Part of a PMD-mapped THP: mapped with a 2 MiB leaf.
    pmd: bool,
    /// First snapshot it was seen in (to choose among PFNs of one page).
    first: u32,
}

/// The VA→PA map of a capture (`vapa.txt`): one captured frame per virtual page.
#[derive(Clone, Debug, Default)]
pub struct PageMap {
    /// Sorted by `vpn`, one entry per page.
    pages: Vec<PageEntry>,
    /// Lines of a page seen again with another PFN (COW, reuse): the earliest is kept.
    superseded: u64,
}

impl PageMap {
    /// Parse a `vapa.txt` map: `#` lines are comments; each other line is
    /// `<va_page hex> <pfn hex> <pagemap bits hex> <kpageflags hex> <first> <last>`.
    /// A page listed with several PFNs keeps the one of the earliest snapshot (the trace has
    /// no time to tell when the PFN changed).
    ///
    /// # Errors
    /// [`VapaError`] naming the 1-based line.
    pub fn parse(mut r: impl BufRead) -> Result<PageMap, VapaError> {
        let mut pages = Vec::new();
        let mut line = String::new();
        let mut n = 0u64;
        loop {
            line.clear();
            n += 1;
            match r.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(source) => return Err(VapaError::Io { line: n, source }),
            }
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let bad = |what| VapaError::Malformed { line: n, what, found: t.to_owned() };
            let f: Vec<&str> = t.split_ascii_whitespace().collect();
            let [va, pfn, _pm, kflags, first, _last] = f.as_slice() else {
                return Err(bad("expected 6 fields: va pfn pagemap-bits kpageflags first last"));
            };
            let hex = |s: &str, what| u64::from_str_radix(s, 16).map_err(|_| bad(what));
            let va = hex(va, "bad hexadecimal VA")?;
            let pfn = hex(pfn, "bad hexadecimal PFN")?;
            let kflags = hex(kflags, "bad hexadecimal kpageflags")?;
            hex(_pm, "bad hexadecimal pagemap bits")?;
            let first: u32 = first.parse().map_err(|_| bad("bad decimal snapshot index"))?;
            if va & 0xfff != 0 {
                return Err(bad("VA not 4 KiB-aligned"));
            }
            if pfn == 0 || pfn > MAX_PFN {
                return Err(bad("PFN 0 (pagemap read without CAP_SYS_ADMIN?) or beyond 2^52"));
            }
            let vpn = va >> 12;
            let pmd = kflags & KPF_THP != 0 && (vpn & 511) == (pfn & 511);
            pages.push(PageEntry { vpn, pfn, pmd, first });
        }
        pages.sort_by_key(|p| (p.vpn, p.first));
        let before = pages.len();
        pages.dedup_by_key(|p| p.vpn);
        let superseded = (before - pages.len()) as u64;
        Ok(PageMap { pages, superseded })
    }

    /// Pages in the map.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Map lines dropped because their page was listed earlier with another PFN.
    pub fn superseded(&self) -> u64 {
        self.superseded
    }

    fn find(&self, vpn: u64) -> Option<usize> {
        self.pages.binary_search_by_key(&vpn, |p| p.vpn).ok()
    }
}

/// What a [`Placer`] added to or left out of the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlaceStats {
    /// `map` events of 4 KiB pages emitted.
    pub maps_4k: u64,
    /// `map` events of 2 MiB pages (PMD-mapped THPs) emitted.
    pub maps_2m: u64,
    /// `pvalidate` events emitted (SNP guests).
    pub pvalidates: u64,
    /// Distinct 4 KiB pages with a captured frame that the stream touched.
    pub pages_touched: u64,
    /// Access pieces left out: their page has no captured frame and the role needs one
    /// (host kernel, guest). Reported, never silent.
    pub unmapped: u64,
}

/// Gives each access its address in the simulated machine and the records that must precede
/// it. Holds the page map and one flag per page: constant memory in the stream's length.
#[derive(Debug)]
pub struct Placer {
    role: Role,
    cpu: CpuId,
    map: Option<PageMap>,
    touched: Vec<bool>,
    mapped_2m: BTreeSet<u64>,
    /// The last page looked up and its entry: accesses come in runs on one page.
    last: Option<(u64, Option<usize>)>,
    stats: PlaceStats,
}

impl Placer {
    /// A placer for `role` on CPU `cpu`, with the capture's page map if there is one.
    pub fn new(role: Role, cpu: CpuId, map: Option<PageMap>) -> Placer {
        let n = map.as_ref().map_or(0, PageMap::len);
        Placer {
            role,
            cpu,
            map,
            touched: vec![false; n],
            mapped_2m: BTreeSet::new(),
            last: None,
            stats: PlaceStats::default(),
        }
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// What was added or left out so far.
    pub fn stats(&self) -> PlaceStats {
        self.stats
    }

    /// The address of an access piece at virtual address `va` (within one 4 KiB page), after
    /// pushing onto `pre` the records that must precede it; `None` if the piece is left out
    /// (counted in [`PlaceStats::unmapped`]).
    pub fn place(&mut self, va: u64, pre: &mut Vec<Record>) -> Option<Address> {
        let vpn = va >> 12;
        let idx = match self.last {
            Some((p, i)) if p == vpn => i,
            _ => {
                let i = self.map.as_ref().and_then(|m| m.find(vpn));
                self.last = Some((vpn, i));
                i
            }
        };
        let Some(i) = idx else {
            return match self.role {
                Role::HostProcess { .. } => Some(Address::Hva(Hva::new_truncate(va))),
                Role::HostKernel | Role::Guest { .. } => {
                    self.stats.unmapped += 1;
                    None
                }
            };
        };
        let e = self.map.as_ref().map(|m| m.pages[i])?;
        if !self.touched[i] {
            self.touched[i] = true;
            self.first_touch(e, pre);
        }
        Some(match self.role {
            Role::HostProcess { .. } => Address::Hva(Hva::new_truncate(va)),
            Role::HostKernel => Address::Spa(Spa::new_truncate((e.pfn << 12) | (va & 0xfff))),
            Role::Guest { .. } => Address::Gva(Gva::new_truncate(va)),
        })
    }

    fn first_touch(&mut self, e: PageEntry, pre: &mut Vec<Record>) {
        self.stats.pages_touched += 1;
        let (space, va, pa, user, enc): (Space, AddrOf, AddrOf, _, _) = match self.role {
            Role::HostKernel => return,
            Role::HostProcess { pid } => (
                Space::Process(pid),
                |a| Address::Hva(Hva::new_truncate(a)),
                |a| Address::Spa(Spa::new_truncate(a)),
                true,
                false,
            ),
            // The model runs guest accesses as the guest kernel's (CPL 0, SMAP on), so
            // the pages are supervisor pages; private (C-bit / shared bit clear) in SNP
            // and TDX guests.
            Role::Guest { vm, kind } => (
                Space::Guest(vm),
                |a| Address::Gva(Gva::new_truncate(a)),
                |a| Address::Gpa(sim_core::Gpa::new_truncate(a)),
                false,
                kind != VmKind::Plain,
            ),
        };
        let (vbase, pbase, size) = if e.pmd {
            let v = (e.vpn << 12) & !0x1f_ffff;
            if !self.mapped_2m.insert(v) {
                (0, 0, None)
            } else {
                (v, (e.pfn << 12) & !0x1f_ffff, Some(PageSize::M2))
            }
        } else {
            (e.vpn << 12, e.pfn << 12, Some(PageSize::K4))
        };
        let agent = self.role.agent(self.cpu);
        let ev = |event| Record::Event(TimedEvent { time: None, agent, event });
        if let Some(size) = size {
            match size {
                PageSize::M2 => self.stats.maps_2m += 1,
                PageSize::K4 | PageSize::G1 => self.stats.maps_4k += 1,
            }
            pre.push(ev(Event::Map {
                va: va(vbase),
                pa: pa(pbase),
                size,
                space,
                w: true,
                x: true,
                user,
                enc,
            }));
        }
        // The guest kernel validated the page before giving it to the program (SNP guests
        // validate at boot or on accept); one PVALIDATE per 4 KiB page, since KVM backs
        // private memory with 4 KiB guest_memfd folios by default.
        if let Role::Guest { kind: VmKind::Snp, .. } = self.role {
            self.stats.pvalidates += 1;
            pre.push(ev(Event::Pvalidate {
                addr: va(e.vpn << 12),
                size: PageSize::K4,
                validate: true,
            }));
        }
    }
}

/// Builds an address of one kind from its raw value.
type AddrOf = fn(u64) -> Address;

/// The access event for op code 0 fetch, 1 load, 2 store.
pub(crate) fn access_event(op: u8, addr: Address, size: u32) -> Event {
    match op {
        0 => Event::Fetch { addr, size },
        1 => Event::Load { addr, size },
        _ => Event::Store { addr, size, mt: MemType::Wb },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> PageMap {
        PageMap::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn roles_parse() {
        assert_eq!("host-process".parse::<Role>().unwrap(), Role::HostProcess { pid: 1 });
        assert_eq!("host-process:42".parse::<Role>().unwrap(), Role::HostProcess { pid: 42 });
        assert_eq!("host-kernel".parse::<Role>().unwrap(), Role::HostKernel);
        assert_eq!("guest:3".parse::<Role>().unwrap(), Role::Guest { vm: 3, kind: VmKind::Snp });
        assert_eq!(
            "guest:2:tdx".parse::<Role>().unwrap(),
            Role::Guest { vm: 2, kind: VmKind::Tdx }
        );
        for bad in ["guest", "guest:0", "guest:1:sev", "host-kernel:1", "proc:1", "host-process:x"]
        {
            assert!(bad.parse::<Role>().is_err(), "{bad}");
        }
    }

    #[test]
    fn vapa_keeps_earliest_pfn_and_detects_pmd_thp() {
        // 0x4c00000 is 2M-aligned; pfn 0x200200 agrees in its low 9 bits: PMD-mapped THP.
        // 0x4e01000 with pfn 0x300000 is a THP page mapped with PTEs (bits disagree).
        let m = map("# hdr\n108000 160f33 142 40000086c 3 10\n108000 150000 142 40000086c 1 2\n\
                     4c00000 200200 102 40240d828 1 10\n4c01000 200201 102 402415828 1 10\n\
                     4e01000 300000 102 402415828 1 10\n");
        assert_eq!((m.len(), m.superseded()), (4, 1));
        let mut p = Placer::new(Role::HostProcess { pid: 9 }, 0, Some(m));
        let mut pre = Vec::new();
        assert_eq!(p.place(0x108010, &mut pre), Some(Address::Hva(Hva::new(0x108010))));
        let Record::Event(TimedEvent { event: Event::Map { pa, size, .. }, .. }) = &pre[0] else {
            panic!("{pre:?}")
        };
        assert_eq!((*pa, *size), (Address::Spa(Spa::new(0x1_5000_0000)), PageSize::K4));
        pre.clear();
        p.place(0x4c01008, &mut pre);
        p.place(0x4c00000, &mut pre);
        p.place(0x4e01000, &mut pre);
        let sizes: Vec<_> = pre
            .iter()
            .map(|r| match r {
                Record::Event(TimedEvent { event: Event::Map { va, pa, size, .. }, .. }) => {
                    (va.raw(), pa.raw(), *size)
                }
                r => panic!("{r:?}"),
            })
            .collect();
        assert_eq!(
            sizes,
            [(0x4c0_0000, 0x2_0020_0000, PageSize::M2), (0x4e0_1000, 0x3_0000_0000, PageSize::K4)]
        );
        assert_eq!(p.stats().maps_2m, 1);
        assert_eq!(p.stats().pages_touched, 4);
    }

    #[test]
    fn guest_snp_maps_private_and_validates_kernel_drops_unmapped() {
        let m = "108000 160f33 142 40000086c 1 10\n";
        let mut g = Placer::new(Role::Guest { vm: 1, kind: VmKind::Snp }, 0, Some(map(m)));
        let mut pre = Vec::new();
        assert_eq!(g.place(0x108abc, &mut pre), Some(Address::Gva(Gva::new(0x108abc))));
        assert_eq!(g.place(0x108abd, &mut pre), Some(Address::Gva(Gva::new(0x108abd))));
        assert!(matches!(
            pre.as_slice(),
            [
                Record::Event(TimedEvent {
                    event: Event::Map { enc: true, user: false, space: Space::Guest(1), .. },
                    ..
                }),
                Record::Event(TimedEvent { event: Event::Pvalidate { validate: true, .. }, .. })
            ]
        ));
        assert_eq!(g.place(0x200000, &mut pre), None);
        assert_eq!(g.stats().unmapped, 1);
        let mut k = Placer::new(Role::HostKernel, 0, Some(map(m)));
        assert_eq!(k.place(0x108abc, &mut pre), Some(Address::Spa(Spa::new(0x1_60f3_3abc))));
    }

    #[test]
    fn malformed_vapa_names_the_line() {
        for (text, line, what) in [
            ("# h\n108000 160f33 142 40000086c 1\n", 2, "expected 6 fields"),
            ("108000 16zz33 142 40000086c 1 10\n", 1, "bad hexadecimal PFN"),
            ("\n108001 160f33 142 40000086c 1 10\n", 2, "not 4 KiB-aligned"),
            ("108000 0 142 40000086c 1 10\n", 1, "PFN 0"),
            ("108000 160f33 142 40000086c x 10\n", 1, "bad decimal snapshot"),
        ] {
            let e = PageMap::parse(text.as_bytes()).unwrap_err();
            let s = e.to_string();
            assert!(s.starts_with(&format!("line {line}: ")) && s.contains(what), "{text:?}: {s}");
        }
    }
}
