//! Valgrind lackey (`--tool=lackey --trace-mem=yes`) memory traces.
//!
//! Line forms, from Valgrind's `lackey/lk_main.c`:
//!
//! ```text
//! I  04014090,8      instruction fetch
//!  L 04032e40,8      data load
//!  S 1ffefffe10,4    data store
//!  M 04033e06,1      modify: a load then a store to the same address
//! ==31139== ...      Valgrind banner and summary lines (skipped, like blank lines)
//! ```
//!
//! Each access becomes a [`Record::Event`] issued by `Agent::Cpu { cpu, ctx: HostProcess(pid) }`
//! at an [`Address::Hva`], with no time. An access that crosses a 4 KiB page boundary is split
//! into one access per page, since the simulator translates page by page. The reader streams:
//! it holds one line.
//!
//! [`LackeyReader::with_placer`] gives the stream another role (host kernel, guest vCPU) and the
//! captured VA→PA map through a [`Placer`], which adds `map` (and `pvalidate`) records before
//! the first access to each page; see `docs/importers.md`.

use crate::import::place::{Placer, Role, access_event};
use sim_core::{Address, Agent, Context, CpuId, Event, Hva, Record, TimedEvent};
use std::collections::VecDeque;
use std::io::BufRead;

/// The page size at which accesses are split (x86 base page).
const PAGE: u64 = 4096;

/// How lackey lines become records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LackeyOptions {
    /// PID of the traced process (the agent's `HostProcess` context).
    pub pid: u32,
    /// CPU the process ran on.
    pub cpu: CpuId,
    /// Split accesses that cross a 4 KiB boundary (default `true`).
    pub split_pages: bool,
}

impl Default for LackeyOptions {
    fn default() -> Self {
        LackeyOptions { pid: 0, cpu: 0, split_pages: true }
    }
}

impl LackeyOptions {
    /// Options for process `pid` on CPU 0, splitting at page boundaries.
    pub fn new(pid: u32) -> Self {
        LackeyOptions { pid, ..LackeyOptions::default() }
    }
}

/// A lackey line could not be read: the error every line-oriented importer reports (I/O, or a
/// malformed line with its line and column).
pub type LackeyError = crate::import::pairs::TextError;

/// Counts of what a [`LackeyReader`] has read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LackeyStats {
    /// Lines read.
    pub lines: u64,
    /// Lines skipped (`=` banner lines, blank lines).
    pub skipped: u64,
    /// Records produced.
    pub records: u64,
    /// Accesses that crossed a page boundary and were split.
    pub split: u64,
    /// Access pieces the placer left out (no captured frame for their page in a role that
    /// needs one); not in `records`.
    pub unmapped: u64,
    /// Instruction fetches of a host-kernel stream emitted as `work 1` (the kernel's code is
    /// not in the direct map, where the captured frames are placed, and the direct map is NX);
    /// in `records`.
    pub fetches_as_work: u64,
}

/// The access being emitted, possibly in page-sized pieces.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Ops to emit in order: 0 fetch, 1 load, 2 store.
    ops: [u8; 2],
    nops: usize,
    op: usize,
    addr: u64,
    size: u64,
    done: u64,
}

/// Streams records from a lackey trace.
#[derive(Debug)]
pub struct LackeyReader<R: BufRead> {
    r: R,
    opts: LackeyOptions,
    line: Vec<u8>,
    line_no: u64,
    cur: Option<Pending>,
    stats: LackeyStats,
    failed: bool,
    agent: Agent,
    placer: Option<Placer>,
    /// Instruction fetches become non-memory work (host-kernel role): a run of them is one
    /// `work N` record, written before the next access or at the end.
    fetch_as_work: bool,
    /// Fetches counted and not yet written as `work`.
    pending_work: u64,
    /// Records a placer put before the current access, then the access.
    queue: VecDeque<Record>,
    pre: Vec<Record>,
}

impl<R: BufRead> LackeyReader<R> {
    /// A reader of `r` with `opts`.
    pub fn new(r: R, opts: LackeyOptions) -> Self {
        LackeyReader {
            r,
            opts,
            line: Vec::with_capacity(64),
            line_no: 0,
            cur: None,
            stats: LackeyStats::default(),
            failed: false,
            agent: Agent::Cpu { cpu: opts.cpu, ctx: Context::HostProcess(opts.pid) },
            placer: None,
            fetch_as_work: false,
            pending_work: 0,
            queue: VecDeque::new(),
            pre: Vec::new(),
        }
    }

    /// A reader whose accesses `placer` places (its role's agent on `opts.cpu`; `opts.pid` is
    /// not used). `opts.split_pages` must be `true` for the placer to see one page per piece.
    pub fn with_placer(r: R, opts: LackeyOptions, placer: Placer) -> Self {
        let agent = placer.role().agent(opts.cpu);
        let opts = LackeyOptions { split_pages: true, ..opts };
        let fetch_as_work = placer.role() == Role::HostKernel;
        LackeyReader { agent, placer: Some(placer), fetch_as_work, ..LackeyReader::new(r, opts) }
    }

    /// What has been read so far.
    pub fn stats(&self) -> LackeyStats {
        self.stats
    }

    /// The placer, if any (for its statistics).
    pub fn placer(&self) -> Option<&Placer> {
        self.placer.as_ref()
    }

    /// The fetches counted since the last access, as one `work N` record.
    fn take_work(&mut self) -> Option<Record> {
        let count = std::mem::take(&mut self.pending_work);
        (count > 0).then(|| {
            self.stats.records += 1;
            Record::Event(TimedEvent {
                time: None,
                agent: self.agent,
                event: Event::Work { count },
            })
        })
    }

    /// The next piece of `p`; `None` if the placer left it out.
    fn emit(&mut self, p: &mut Pending) -> Option<Record> {
        let addr = p.addr + p.done;
        let left = p.size - p.done;
        let chunk = if self.opts.split_pages { left.min(PAGE - (addr % PAGE)) } else { left };
        p.done += chunk;
        let op = p.ops[p.op];
        if p.done == p.size {
            p.op += 1;
            p.done = 0;
        }
        if op == 0 && self.fetch_as_work {
            // One instruction: its base CPI, once per record (not per split piece); a run of
            // them is written as one `work N` before the next access.
            if addr == p.addr {
                self.stats.fetches_as_work += 1;
                self.pending_work += 1;
            }
            return None;
        }
        let a = match &mut self.placer {
            None => Address::Hva(Hva::new_truncate(addr)),
            Some(pl) => match pl.place(addr, &mut self.pre) {
                Some(a) => a,
                None => {
                    self.stats.unmapped += 1;
                    return None;
                }
            },
        };
        // chunk <= size, which came from a u32.
        let size = u32::try_from(chunk).unwrap_or(u32::MAX);
        let event = access_event(op, a, size);
        self.stats.records += 1;
        Some(Record::Event(TimedEvent { time: None, agent: self.agent, event }))
    }

    /// Parse the line in `self.line`: `Ok(None)` for a skipped line.
    fn parse(&self) -> Result<Option<Pending>, LackeyError> {
        let mut l: &[u8] = &self.line;
        while let [rest @ .., b'\n' | b'\r'] = l {
            l = rest;
        }
        if l.is_empty() || l[0] == b'=' {
            return Ok(None);
        }
        let bad = |col: usize, expected: &'static str| LackeyError::Malformed {
            line: self.line_no,
            col: col + 1,
            expected,
            found: String::from_utf8_lossy(&l[col.min(l.len())..]).into_owned(),
        };
        let (ops, nops): ([u8; 2], usize) = match l.get(..3) {
            Some(b"I  ") => ([0, 0], 1),
            Some(b" L ") => ([1, 0], 1),
            Some(b" S ") => ([2, 0], 1),
            Some(b" M ") => ([1, 2], 2),
            _ => return Err(bad(0, "`I  `, ` L `, ` S `, ` M ` or a `==` line")),
        };
        let mut i = 3;
        let mut addr: u64 = 0;
        let start = i;
        while let Some(&c) = l.get(i) {
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => break,
            };
            if i - start == 16 {
                return Err(bad(start, "a hexadecimal address of at most 16 digits"));
            }
            addr = (addr << 4) | u64::from(d);
            i += 1;
        }
        if i == start {
            return Err(bad(start, "a hexadecimal address"));
        }
        if l.get(i) != Some(&b',') {
            return Err(bad(i, "`,` after the address"));
        }
        i += 1;
        let size_at = i;
        let mut size: u64 = 0;
        while let Some(&c) = l.get(i).filter(|c| c.is_ascii_digit()) {
            size = size * 10 + u64::from(c - b'0');
            if size > u64::from(u32::MAX) {
                return Err(bad(size_at, "a size below 2^32"));
            }
            i += 1;
        }
        if i == size_at || size == 0 {
            return Err(bad(size_at, "a decimal size of at least 1"));
        }
        if l[i..].iter().any(|c| !c.is_ascii_whitespace()) {
            return Err(bad(i, "end of line after the size"));
        }
        if addr.checked_add(size - 1).is_none() {
            return Err(bad(start, "an access that does not wrap past 2^64"));
        }
        Ok(Some(Pending { ops, nops, op: 0, addr, size, done: 0 }))
    }
}

impl<R: BufRead> Iterator for LackeyReader<R> {
    type Item = Result<Record, LackeyError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(Ok(r));
            }
            if let Some(mut p) = self.cur.take()
                && p.op < p.nops
            {
                let r = self.emit(&mut p);
                self.cur = Some(p);
                let Some(r) = r else { continue };
                if self.pre.is_empty() && self.pending_work == 0 {
                    return Some(Ok(r));
                }
                if let Some(w) = self.take_work() {
                    self.queue.push_back(w);
                }
                self.queue.extend(self.pre.drain(..));
                self.queue.push_back(r);
                continue;
            }
            self.line.clear();
            self.line_no += 1;
            match self.r.read_until(b'\n', &mut self.line) {
                Ok(0) => return self.take_work().map(Ok),
                Ok(_) => {}
                Err(source) => {
                    self.failed = true;
                    return Some(Err(LackeyError::Io { line: self.line_no, source }));
                }
            }
            self.stats.lines += 1;
            match self.parse() {
                Ok(Some(p)) => {
                    if self.opts.split_pages && (p.addr % PAGE) + p.size > PAGE {
                        self.stats.split += p.nops as u64;
                    }
                    self.cur = Some(p);
                }
                Ok(None) => self.stats.skipped += 1,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::event::MemType;

    fn read(text: &str) -> Vec<Result<Record, LackeyError>> {
        LackeyReader::new(text.as_bytes(), LackeyOptions::new(77)).collect()
    }

    fn ev(r: &Record) -> (&'static str, u64, u32) {
        let Record::Event(te) = r else { panic!("not an event") };
        assert_eq!(te.agent, Agent::Cpu { cpu: 0, ctx: Context::HostProcess(77) });
        assert_eq!(te.time, None);
        match te.event {
            Event::Fetch { addr, size } => ("I", addr.raw(), size),
            Event::Load { addr, size } => ("L", addr.raw(), size),
            Event::Store { addr, size, mt: MemType::Wb } => ("S", addr.raw(), size),
            ref e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn parses_every_form_and_skips_banners() {
        let t = "==1== Lackey\nI  0401ab70,3\n L 04032e40,8\n S 1fff000718,8\n M 04033e06,1\n\n";
        let rs: Vec<_> = read(t).into_iter().map(Result::unwrap).collect();
        let got: Vec<_> = rs.iter().map(ev).collect();
        assert_eq!(
            got,
            [
                ("I", 0x0401_ab70, 3),
                ("L", 0x0403_2e40, 8),
                ("S", 0x1f_ff00_0718, 8),
                ("L", 0x0403_3e06, 1),
                ("S", 0x0403_3e06, 1)
            ]
        );
    }

    #[test]
    fn splits_at_page_boundaries() {
        let rs: Vec<_> = read(" M 0fff,4\nI  1ffe,4\n").into_iter().map(Result::unwrap).collect();
        let got: Vec<_> = rs.iter().map(ev).collect();
        assert_eq!(
            got,
            [
                ("L", 0xfff, 1),
                ("L", 0x1000, 3),
                ("S", 0xfff, 1),
                ("S", 0x1000, 3),
                ("I", 0x1ffe, 2),
                ("I", 0x2000, 2)
            ]
        );
        let mut r = LackeyReader::new(" L 0ff0,8192\n".as_bytes(), LackeyOptions::new(77));
        let sizes: Vec<u32> = r.by_ref().map(|x| ev(&x.unwrap()).2).collect();
        assert_eq!(sizes, [16, 4096, 4080]);
        let opts = LackeyOptions { split_pages: false, ..LackeyOptions::new(77) };
        let n = LackeyReader::new(" L 0fff,4\n".as_bytes(), opts).count();
        assert_eq!(n, 1);
    }

    #[test]
    fn malformed_lines_name_line_and_column() {
        for (text, line, col) in [
            ("I  0401ab70,3\nX  12,3\n", 2, 1),
            (" L ,8\n", 1, 4),
            (" L 12x4,8\n", 1, 6),
            (" L 1234\n", 1, 8),
            (" L 1234,\n", 1, 9),
            (" L 1234,0\n", 1, 9),
            (" L 1234,8 junk\n", 1, 10),
            (" L 12345678901234567,8\n", 1, 4),
            (" L ffffffffffffffff,2\n", 1, 4),
            (" L 10,99999999999\n", 1, 7),
        ] {
            let rs = read(text);
            let Some(Err(LackeyError::Malformed { line: l, col: c, .. })) = rs.last() else {
                panic!("{text:?}: {:?}", rs.last())
            };
            assert_eq!((*l, *c), (line, col), "{text:?}");
        }
        let e = read(" L 12x4,8\n").pop().unwrap().unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 1, column 6: expected `,` after the address, found \"x4,8\""
        );
    }
}
