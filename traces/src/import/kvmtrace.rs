//! KVM tracepoint text (tracefs `trace`/`trace_pipe`, `trace-cmd report` with or without `-R`,
//! `perf script`) → the control events and guest accesses of one VM (issue #5, importer 4;
//! formats in `shared/spec/trace-formats.md` §1.5, from the 6.18 kernel's `format` files).
//!
//! What becomes what (docs/importers.md "KVM tracepoints" has the table):
//! - `kvm_page_fault`: the guest access that faulted, as a vCPU access to its GPA. The error
//!   code is decoded per vendor: AMD (`npf_interception`) EXITINFO1 — W bit 1, fetch bit 4,
//!   ENC bit 34 (private: the GPA's C-bit is set in the replayed address); Intel
//!   (`handle_ept_violation`) the EPT-violation qualification — read bit 0, write bit 1,
//!   fetch bit 2. The vendor comes from `--vendor` or the first `kvm_exit` reason (`npf` or
//!   `EPT_VIOLATION`); a page fault before it is known is an error.
//! - `kvm_mmu_spte_requested` (GFN → host PFN at a level) and `kvm_tdp_mmu_spte_changed`
//!   (a new present SPTE): a stage-2 `map` of the GFN to the host frame; a changed SPTE that
//!   becomes not present: an `unmap`. The host frames are the capture host's, so the header
//!   asks for captured-physical backing (`host captured_phys=true`). `kvm_mmu_set_spte` is
//!   counted (its SPTE repeats what the request said).
//! - `kvm_hypercall` with nr 0xc (KVM_HC_MAP_GPA_RANGE; a0 GPA, a1 pages, a2 attributes with
//!   bit 4 = encrypted): the VMM's answer, `mem-attrs` from the host (private or shared).
//! - Every other event (exits, PIO, MMIO, shadow-paging walks, zaps, `kvm_rmp_fault`, …) is
//!   counted by name and not replayed; nothing is dropped silently.
//!
//! The header runs KVM's model with `host kvm_faults=raise`: the trace's own KVM events drive
//! stage 2.

use crate::import::place::Role;
use sim_core::codec::Hex;
use sim_core::event::{Space, VmKind};
use sim_core::{
    Address, Agent, Context, Event, Gpa, PageSize, PrivLevel, Record, Setting, Spa, TimedEvent,
    VmId,
};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, BufRead};

/// `KVM_HC_MAP_GPA_RANGE` (include/uapi/linux/kvm_para.h).
const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// `KVM_MAP_GPA_RANGE_ENCRYPTED` (include/uapi/linux/kvm_para.h): bit 4 of the attributes.
const MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
/// `KVM_MEMORY_ATTRIBUTE_PRIVATE` (include/uapi/linux/kvm.h).
const ATTR_PRIVATE: u64 = 1 << 3;
/// The GPA's C-bit in a replayed private access (the machine's default `mmu.cbit_pos`).
const CBIT: u64 = 1 << 51;
/// The host frame bits of an SPTE (51:12).
const SPTE_PFN: u64 = 0x000f_ffff_ffff_f000;

/// Whose page-fault error codes the trace carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// AMD SVM (NPF EXITINFO1).
    Amd,
    /// Intel VMX/TDX (EPT-violation exit qualification).
    Intel,
}

/// A line could not be read or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvmTraceError {
    /// Reading failed.
    #[error("line {line}: {source}")]
    Io {
        /// 1-based line.
        line: u64,
        /// The error.
        source: io::Error,
    },
    /// A line of a known event lacks a field or has a bad value.
    #[error("line {line}: {event}: {what}")]
    Malformed {
        /// 1-based line.
        line: u64,
        /// The event.
        event: String,
        /// What is wrong.
        what: String,
    },
    /// A page fault whose error code cannot be decoded yet.
    #[error(
        "line {line}: kvm_page_fault before the vendor is known (no kvm_exit yet): pass --vendor amd|intel"
    )]
    NoVendor {
        /// 1-based line.
        line: u64,
    },
}

/// What the importer read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvmTraceStats {
    /// Lines read.
    pub lines: u64,
    /// Blank, header (`cpus=N`) and lost-event lines.
    pub skipped: u64,
    /// Events lost by the tracer (`CPU:N [M EVENTS DROPPED]`), summed.
    pub dropped: u64,
    /// Events by name (system prefix removed).
    pub events: BTreeMap<String, u64>,
    /// Records written: accesses, maps, unmaps, attribute changes.
    pub accesses: u64,
    /// See [`KvmTraceStats::accesses`].
    pub maps: u64,
    /// See [`KvmTraceStats::accesses`].
    pub unmaps: u64,
    /// See [`KvmTraceStats::accesses`].
    pub attrs: u64,
}

/// Streams a KVM tracepoint text into records for VM `vm` of `kind`.
#[derive(Debug)]
pub struct KvmTraceReader<R: BufRead> {
    r: R,
    vm: VmId,
    kind: VmKind,
    vendor: Option<Vendor>,
    buf: String,
    line: u64,
    out: VecDeque<Record>,
    stats: KvmTraceStats,
    header_done: bool,
    failed: bool,
}

impl<R: BufRead> KvmTraceReader<R> {
    /// A reader for the guest `role` (a `guest:N[:KIND]` role; others are refused by the
    /// caller), with the vendor if known.
    ///
    /// # Panics
    /// If `role` is not a guest role.
    pub fn new(r: R, role: Role, vendor: Option<Vendor>) -> Self {
        let Role::Guest { vm, kind } = role else { panic!("KVM traces replay as a guest") };
        KvmTraceReader {
            r,
            vm,
            kind,
            vendor,
            buf: String::new(),
            line: 0,
            out: VecDeque::new(),
            stats: KvmTraceStats::default(),
            header_done: false,
            failed: false,
        }
    }

    /// What was read so far.
    pub fn stats(&self) -> &KvmTraceStats {
        &self.stats
    }

    fn header(&mut self) {
        let set = |section: &str, args: Vec<String>, pairs: Vec<(&str, &str)>| {
            Record::Setting(Setting {
                section: section.to_owned(),
                args,
                pairs: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            })
        };
        self.out.push_back(set(
            "host",
            Vec::new(),
            vec![("captured_phys", "true"), ("kvm_faults", "raise")],
        ));
        let asid = self.vm.to_string();
        self.out.push_back(set(
            "vm",
            vec![self.vm.to_string(), self.kind.to_string()],
            vec![("asid", asid.as_str())],
        ));
    }

    fn emit(&mut self, agent: Agent, event: Event) {
        self.out.push_back(Record::Event(TimedEvent { time: None, agent, event }));
    }

    fn host(&self) -> Agent {
        Agent::host(0)
    }

    fn vcpu(&self, vcpu: u32) -> Agent {
        Agent::Cpu { cpu: 0, ctx: Context::Guest { vm: self.vm, vcpu, level: PrivLevel::Vmpl(0) } }
    }

    /// Decode one line into zero or more records.
    fn line(&mut self, text: &str) -> Result<(), KvmTraceError> {
        let text = text.trim_end();
        let line = self.line;
        if text.trim().is_empty() || text.starts_with("cpus=") {
            self.stats.skipped += 1;
            return Ok(());
        }
        if let Some(n) = dropped(text) {
            self.stats.skipped += 1;
            self.stats.dropped += n;
            return Ok(());
        }
        let Some((event, payload)) = split_event(text) else {
            return Err(KvmTraceError::Malformed {
                line,
                event: "?".into(),
                what: "no `<timestamp>: <event>:` in the line".into(),
            });
        };
        match self.stats.events.get_mut(event) {
            Some(n) => *n += 1,
            None => {
                self.stats.events.insert(event.to_owned(), 1);
            }
        }
        let bad = |what: &str| KvmTraceError::Malformed {
            line,
            event: event.to_owned(),
            what: what.to_owned(),
        };
        let num = |names: &[&str], hex: bool| -> Result<u64, KvmTraceError> {
            field(payload, names, hex).ok_or_else(|| bad(&format!("no {} field", names[0])))
        };
        match event {
            "kvm_exit" if self.vendor.is_none() => {
                let reason = payload.split_whitespace().skip_while(|w| *w != "reason").nth(1);
                self.vendor = match reason {
                    Some("npf") => Some(Vendor::Amd),
                    Some("EPT_VIOLATION") => Some(Vendor::Intel),
                    _ => None,
                };
            }
            "kvm_page_fault" => {
                let vendor = self.vendor.ok_or(KvmTraceError::NoVendor { line })?;
                let gpa = num(&["address", "fault_address"], true)?;
                let code = num(&["error_code"], true)?;
                let vcpu = field(payload, &["vcpu", "vcpu_id"], false).unwrap_or(0);
                let vcpu = u32::try_from(vcpu).map_err(|_| bad("vcpu out of range"))?;
                let (write, fetch, private) = match vendor {
                    Vendor::Amd => {
                        (code & (1 << 1) != 0, code & (1 << 4) != 0, code & (1 << 34) != 0)
                    }
                    Vendor::Intel => (code & (1 << 1) != 0, code & (1 << 2) != 0, false),
                };
                let page = gpa & !0xfff & !CBIT;
                let addr =
                    Address::Gpa(Gpa::new_truncate(if private { page | CBIT } else { page }));
                let ev = if fetch {
                    Event::Fetch { addr, size: 1 }
                } else if write {
                    Event::Store { addr, size: 8, mt: sim_core::event::MemType::Wb }
                } else {
                    Event::Load { addr, size: 8 }
                };
                self.emit(self.vcpu(vcpu), ev);
                self.stats.accesses += 1;
            }
            "kvm_mmu_spte_requested" => {
                let gfn = num(&["gfn"], true)?;
                let pfn = num(&["pfn"], true)?;
                let level = num(&["level"], false)?;
                self.map(gfn, pfn, level).map_err(&bad)?;
            }
            "kvm_tdp_mmu_spte_changed" => {
                let gfn = num(&["gfn"], true)?;
                let level = num(&["level"], false)?;
                let old = num(&["old_spte"], true)?;
                let new = num(&["new_spte"], true)?;
                // Present: any of the low three bits (NPT P/RW/US, EPT R/W/X).
                match (old & 7 != 0, new & 7 != 0) {
                    (_, true) => self.map(gfn, (new & SPTE_PFN) >> 12, level).map_err(&bad)?,
                    (true, false) => {
                        let size = level_size(level).ok_or_else(|| bad("level not 1, 2 or 3"))?;
                        let va = Address::Gpa(Gpa::new_truncate(gfn << 12));
                        let host = self.host();
                        self.emit(host, Event::Unmap { va, size, space: Space::Stage2(self.vm) });
                        self.stats.unmaps += 1;
                    }
                    (false, false) => {}
                }
            }
            "kvm_hypercall" => {
                let nr = num(&["nr"], true)?;
                if nr == KVM_HC_MAP_GPA_RANGE {
                    let gpa = num(&["a0"], true)?;
                    let pages = num(&["a1"], true)?;
                    let attrs = num(&["a2"], true)?;
                    let private = attrs & MAP_GPA_RANGE_ENCRYPTED != 0;
                    let host = self.host();
                    self.emit(
                        host,
                        Event::MemAttrs {
                            gpa: Gpa::new_truncate(gpa & !0xfff),
                            bytes: pages.saturating_mul(4096),
                            vm: self.vm,
                            attrs: Hex(if private { ATTR_PRIVATE } else { 0 }),
                            vtl: 0,
                        },
                    );
                    self.stats.attrs += 1;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn map(&mut self, gfn: u64, pfn: u64, level: u64) -> Result<(), &'static str> {
        let size = level_size(level).ok_or("level not 1, 2 or 3")?;
        let gpa = Gpa::new_truncate((gfn << 12) & !(size.bytes() - 1));
        let spa = Spa::new_truncate((pfn << 12) & !(size.bytes() - 1));
        let host = self.host();
        self.emit(
            host,
            Event::Map {
                va: Address::Gpa(gpa),
                pa: Address::Spa(spa),
                size,
                space: Space::Stage2(self.vm),
                w: true,
                x: true,
                user: true,
                enc: false,
            },
        );
        self.stats.maps += 1;
        Ok(())
    }
}

impl<R: BufRead> Iterator for KvmTraceReader<R> {
    type Item = Result<Record, KvmTraceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.header_done {
            self.header_done = true;
            self.header();
        }
        loop {
            if let Some(r) = self.out.pop_front() {
                return Some(Ok(r));
            }
            if self.failed {
                return None;
            }
            self.buf.clear();
            match self.r.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(source) => {
                    self.failed = true;
                    return Some(Err(KvmTraceError::Io { line: self.line + 1, source }));
                }
            }
            self.line += 1;
            self.stats.lines += 1;
            let buf = std::mem::take(&mut self.buf);
            let res = self.line(&buf);
            self.buf = buf;
            if let Err(e) = res {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}

/// The page size of an SPTE level (1 = 4K, 2 = 2M, 3 = 1G).
fn level_size(level: u64) -> Option<PageSize> {
    match level {
        1 => Some(PageSize::K4),
        2 => Some(PageSize::M2),
        3 => Some(PageSize::G1),
        _ => None,
    }
}

/// `CPU:N [M EVENTS DROPPED]` (trace-cmd's lost-events line): M.
fn dropped(text: &str) -> Option<u64> {
    let rest = text.trim_start().strip_prefix("CPU:")?;
    let (_, rest) = rest.split_once('[')?;
    let (n, tail) = rest.split_once(' ')?;
    tail.contains("EVENTS DROPPED").then(|| n.parse().ok()).flatten()
}

/// The event name (system prefix removed) and its payload: the token after the first
/// `<seconds>.<fraction>:` token, which itself ends in `:`. Tokens are split at ASCII
/// whitespace on bytes (a UTF-8 continuation byte is never ASCII, so every split lands on a
/// character boundary); this is the importer's hottest loop.
fn split_event(text: &str) -> Option<(&str, &str)> {
    let b = text.as_bytes();
    let is_stamp = |tok: &[u8]| {
        let Some((b':', n)) = tok.split_last() else { return false };
        let Some(dot) = n.iter().position(|&c| c == b'.') else { return false };
        let (a, f) = (&n[..dot], &n[dot + 1..]);
        !a.is_empty()
            && !f.is_empty()
            && a.iter().all(u8::is_ascii_digit)
            && f.iter().all(u8::is_ascii_digit)
    };
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == b.len() {
            return None;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        if is_stamp(&b[start..i]) {
            let rest = text[i..].trim_start();
            let (ev, payload) =
                rest.split_once(|c: char| c.is_ascii_whitespace()).unwrap_or((rest, ""));
            let ev = ev.strip_suffix(':')?;
            let ev = ev.rsplit(':').next().unwrap_or(ev);
            return Some((ev, payload.trim()));
        }
    }
}

/// A numeric field of a payload, in either form: `name=value` (`trace-cmd report -R`, values
/// decimal unless `0x`) or `name value` (the formatted print; `hex` says whether the print
/// format writes it in hex without `0x`, as `%llx` does).
fn field(payload: &str, names: &[&str], hex: bool) -> Option<u64> {
    let parse = |v: &str, hex: bool| -> Option<u64> {
        let v = v.trim_end_matches(',');
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None if hex => u64::from_str_radix(v, 16).ok(),
            None => v.parse().ok(),
        }
    };
    for name in names {
        let mut words = payload.split_whitespace();
        while let Some(w) = words.next() {
            if let Some(v) = w.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                return parse(v, false);
            }
            if w == *name {
                // `as id 0 gfn …`: the value is the next word.
                return words.next().and_then(|v| parse(v, hex));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(
        text: &str,
        vendor: Option<Vendor>,
    ) -> (Vec<Result<Record, KvmTraceError>>, KvmTraceStats) {
        let role = Role::Guest { vm: 1, kind: VmKind::Snp };
        let mut r = KvmTraceReader::new(text.as_bytes(), role, vendor);
        let v: Vec<_> = r.by_ref().collect();
        let s = r.stats().clone();
        (v, s)
    }

    fn events(v: &[Result<Record, KvmTraceError>]) -> Vec<Event> {
        v.iter()
            .filter_map(|r| match r {
                Ok(Record::Event(te)) => Some(te.event.clone()),
                _ => None,
            })
            .collect()
    }

    /// The three front-ends and both payload forms of spec/trace-formats.md §1.5.
    #[test]
    fn front_ends_and_payload_forms() {
        let text = "\
cpus=2
 qemu-system-x86-24315   [000] .....   403.110768: kvm_exit: vcpu 0 reason npf rip 0x1 info1 0x0000000500000006 info2 0x0000000080001000 intr_info 0x00000000 error_code 0x00000000 requests 0x0
 qemu-system-x86-24315   [000] .....   403.110769: kvm_page_fault: vcpu 0 rip 0xffffffff81000000 address 0x0000000080001000 error_code 0x500000006
 qemu-system-x86-3426  [001]  1697.576024: kvm_mmu_spte_requested: gfn 80001 pfn 123456 level 1
 qemu-system-x86 32644 [001]  1364.785940:     kvmmmu:kvm_tdp_mmu_spte_changed: as id 0 gfn 80200 level 2 old_spte 0 new_spte 7890000007
 qemu-system-x86-3426  [001]  1697.576030: kvm_tdp_mmu_spte_changed: as_id=0 gfn=524801 level=1 old_spte=0x123456007 new_spte=0x0
 qemu-system-x86-3426  [001]  1697.576031: kvm_hypercall: nr 0xc a0 0x80001000 a1 0x2 a2 0x10 a3 0x0
CPU:1 [31 EVENTS DROPPED]
 qemu-system-x86-3426  [001]  1697.576040: kvm_pio: pio_write at 0x70 size 1 count 1 val 0x8f
";
        let (v, s) = read(text, None);
        assert!(v.iter().all(Result::is_ok), "{v:?}");
        let ev = events(&v);
        // A private write to 0x8000_1000 (ENC, W): the C-bit set in the replayed GPA.
        assert_eq!(
            ev[0],
            Event::Store {
                addr: Address::Gpa(Gpa::new(0x8000_1000 | CBIT)),
                size: 8,
                mt: sim_core::event::MemType::Wb
            }
        );
        assert!(
            matches!(ev[1], Event::Map { pa: Address::Spa(p), size: PageSize::K4, .. } if p.raw() == 0x0001_2345_6000)
        );
        assert!(
            matches!(ev[2], Event::Map { va: Address::Gpa(g), pa: Address::Spa(p), size: PageSize::M2, .. }
            if g.raw() == 0x8020_0000 && p.raw() == 0x78_9000_0000 & !0x1f_ffff)
        );
        assert!(
            matches!(ev[3], Event::Unmap { va: Address::Gpa(g), size: PageSize::K4, .. } if g.raw() == 524_801 << 12)
        );
        assert!(matches!(ev[4], Event::MemAttrs { bytes: 8192, attrs: Hex(ATTR_PRIVATE), .. }));
        assert_eq!((s.accesses, s.maps, s.unmaps, s.attrs), (1, 2, 1, 1));
        assert_eq!((s.skipped, s.dropped), (2, 31));
        assert_eq!(s.events["kvm_pio"], 1);
    }

    #[test]
    fn errors_name_the_line() {
        let (v, _) =
            read(" a-1 [000] 1.5: kvm_page_fault: vcpu 0 address 0x1000 error_code 0x2\n", None);
        assert!(matches!(v.last(), Some(Err(KvmTraceError::NoVendor { line: 1 }))), "{v:?}");
        let (v, _) =
            read(" a-1 [000] 1.5: kvm_mmu_spte_requested: gfn 10 level 1\n", Some(Vendor::Amd));
        let e = v.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(e.starts_with("line 1: kvm_mmu_spte_requested: no pfn"), "{e}");
        let (v, _) = read("garbage line\n", Some(Vendor::Intel));
        let e = v.last().unwrap().as_ref().unwrap_err().to_string();
        assert!(e.starts_with("line 1:"), "{e}");
        // Intel: the qualification's write bit, no C-bit.
        let (v, _) = read(
            " a-1 [000] 1.5: kvm_page_fault: vcpu 2 address 0x5000 error_code 0x182\n",
            Some(Vendor::Intel),
        );
        assert!(
            matches!(events(&v)[0], Event::Store { addr: Address::Gpa(g), .. } if g.raw() == 0x5000)
        );
    }

    /// The real excerpt (a shadow-paging host: walks, PIO, exits, zaps) reads without error;
    /// every event is counted and none replayed.
    #[test]
    fn real_excerpt_counts_events() {
        let text = include_str!("../../../traces/samples/kvm/kvm_trace_pipe_head400.txt");
        let (v, s) = read(text, None);
        assert!(v.iter().all(Result::is_ok));
        assert_eq!(s.lines, 400);
        assert_eq!(s.events.values().sum::<u64>() + s.skipped, 400);
        assert_eq!((s.accesses, s.maps), (0, 0));
    }
}
