//! ChampSim binary traces: import (`input_instr`, `cloudsuite_instr`) and export
//! (`input_instr`).
//!
//! A ChampSim trace is a headerless stream of fixed-size little-endian C structs, one per
//! executed instruction, defined in ChampSim's `inc/trace_instruction.h` (ChampSim/ChampSim
//! `b92dc114`):
//!
//! ```text
//! input_instr (64 bytes)             cloudsuite_instr (96 bytes)
//!  0 ip                      u64      0 ip                      u64
//!  8 is_branch               u8       8 is_branch               u8
//!  9 branch_taken            u8       9 branch_taken            u8
//! 10 destination_registers   u8 x 2  10 destination_registers   u8 x 4
//! 12 source_registers        u8 x 4  14 source_registers        u8 x 4
//! 16 destination_memory      u64 x 2 18 (padding)               6 bytes
//! 32 source_memory           u64 x 4 24 destination_memory      u64 x 4
//!                                    56 source_memory           u64 x 4
//!                                    88 asid                    u8 x 2
//!                                    90 (padding)               6 bytes
//! ```
//!
//! A zero register or memory entry means "no operand". Nothing in the file says which of the
//! two layouts it holds (there is no header or magic, and any 64 bytes are a plausible
//! record), so the layout is an option ([`ChampSimFormat`]), `input` by default.
//!
//! Each record becomes an instruction fetch of `ip`, then one load per nonzero
//! `source_memory` entry, then one store per nonzero `destination_memory` entry, in array
//! order, all 1 byte long (the format has no access size; 1 byte never crosses a page). The
//! addresses are virtual; a [`Placer`] gives them the role's address kind and adds the
//! role's `map`/`pvalidate` records. A host-kernel stream turns the fetch into `work 1`, for
//! the reason given in [`crate::import::lackey`]. Branch and register fields and the
//! CloudSuite ASID are read and not used (ccsim does not model the core; the role chooses
//! the address space). The reader streams with a fixed buffer: constant memory.
//!
//! [`ChampSimWriter`] writes the other way, `input_instr` records from an access stream; see
//! its documentation and `docs/importers.md` for the grouping rules.

use crate::import::place::{Placer, Role, access_event};
use sim_core::{Agent, CpuId, Event, Record, TimedEvent};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::str::FromStr;

/// Size of an `input_instr` record in bytes.
pub const INPUT_INSTR_SIZE: usize = 64;
/// Size of a `cloudsuite_instr` record in bytes.
pub const CLOUDSUITE_INSTR_SIZE: usize = 96;
/// The instruction pointer the exporter gives a data access that no fetch precedes. The usual
/// x86-64 ELF text base: any nonzero constant would do, and a constant keeps ChampSim's
/// instruction footprint at one cache line.
pub const SYNTHETIC_IP: u64 = 0x40_0000;

/// Records read per `read` call: 64 KiB of `input_instr`, 96 KiB of `cloudsuite_instr`.
const BUF_RECORDS: usize = 1024;

/// Which ChampSim record layout a trace holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChampSimFormat {
    /// `input_instr`, 64 bytes: the format of the DPC-3, CRC-2 and IPC-1 traces.
    #[default]
    Input,
    /// `cloudsuite_instr`, 96 bytes (ChampSim's `-c` option).
    Cloudsuite,
}

impl ChampSimFormat {
    /// Bytes per record.
    pub const fn record_size(self) -> usize {
        match self {
            ChampSimFormat::Input => INPUT_INSTR_SIZE,
            ChampSimFormat::Cloudsuite => CLOUDSUITE_INSTR_SIZE,
        }
    }
}

/// A `--format` name that is neither `input` nor `cloudsuite`.
#[derive(Debug, thiserror::Error)]
#[error(
    "bad ChampSim format {0:?}: expected input (64-byte input_instr) or cloudsuite (96-byte cloudsuite_instr)"
)]
pub struct BadFormat(pub String);

impl FromStr for ChampSimFormat {
    type Err = BadFormat;

    fn from_str(s: &str) -> Result<Self, BadFormat> {
        match s {
            "input" => Ok(ChampSimFormat::Input),
            "cloudsuite" => Ok(ChampSimFormat::Cloudsuite),
            _ => Err(BadFormat(s.to_owned())),
        }
    }
}

/// One decoded ChampSim record; unused entries are zero. `input_instr` fills the first two
/// destination entries and leaves `asid` zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChampSimRecord {
    /// Instruction pointer.
    pub ip: u64,
    /// 1 if the instruction is a branch.
    pub is_branch: u8,
    /// 1 if the branch was taken.
    pub branch_taken: u8,
    /// Written registers (0 = none).
    pub destination_registers: [u8; 4],
    /// Read registers (0 = none).
    pub source_registers: [u8; 4],
    /// Virtual addresses stored to (0 = none).
    pub destination_memory: [u64; 4],
    /// Virtual addresses loaded from (0 = none).
    pub source_memory: [u64; 4],
    /// CloudSuite address-space id.
    pub asid: [u8; 2],
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl ChampSimRecord {
    /// Decode one record of `format` from `b` (exactly `format.record_size()` bytes).
    ///
    /// # Panics
    /// If `b` is shorter than the record.
    pub fn decode(format: ChampSimFormat, b: &[u8]) -> ChampSimRecord {
        let mut r = ChampSimRecord {
            ip: le64(b, 0),
            is_branch: b[8],
            branch_taken: b[9],
            ..ChampSimRecord::default()
        };
        match format {
            ChampSimFormat::Input => {
                r.destination_registers[..2].copy_from_slice(&b[10..12]);
                r.source_registers.copy_from_slice(&b[12..16]);
                for i in 0..2 {
                    r.destination_memory[i] = le64(b, 16 + 8 * i);
                }
                for i in 0..4 {
                    r.source_memory[i] = le64(b, 32 + 8 * i);
                }
            }
            ChampSimFormat::Cloudsuite => {
                r.destination_registers.copy_from_slice(&b[10..14]);
                r.source_registers.copy_from_slice(&b[14..18]);
                for i in 0..4 {
                    r.destination_memory[i] = le64(b, 24 + 8 * i);
                    r.source_memory[i] = le64(b, 56 + 8 * i);
                }
                r.asid.copy_from_slice(&b[88..90]);
            }
        }
        r
    }

    /// Encode as a 64-byte `input_instr`. Destination entries 2 and 3 and the ASID, which that
    /// layout has no room for, are dropped.
    pub fn encode_input(&self) -> [u8; INPUT_INSTR_SIZE] {
        let mut b = [0u8; INPUT_INSTR_SIZE];
        b[0..8].copy_from_slice(&self.ip.to_le_bytes());
        b[8] = self.is_branch;
        b[9] = self.branch_taken;
        b[10..12].copy_from_slice(&self.destination_registers[..2]);
        b[12..16].copy_from_slice(&self.source_registers);
        for i in 0..2 {
            b[16 + 8 * i..24 + 8 * i].copy_from_slice(&self.destination_memory[i].to_le_bytes());
        }
        for i in 0..4 {
            b[32 + 8 * i..40 + 8 * i].copy_from_slice(&self.source_memory[i].to_le_bytes());
        }
        b
    }

    /// Encode as a 96-byte `cloudsuite_instr` (padding zero).
    pub fn encode_cloudsuite(&self) -> [u8; CLOUDSUITE_INSTR_SIZE] {
        let mut b = [0u8; CLOUDSUITE_INSTR_SIZE];
        b[0..8].copy_from_slice(&self.ip.to_le_bytes());
        b[8] = self.is_branch;
        b[9] = self.branch_taken;
        b[10..14].copy_from_slice(&self.destination_registers);
        b[14..18].copy_from_slice(&self.source_registers);
        for i in 0..4 {
            b[24 + 8 * i..32 + 8 * i].copy_from_slice(&self.destination_memory[i].to_le_bytes());
            b[56 + 8 * i..64 + 8 * i].copy_from_slice(&self.source_memory[i].to_le_bytes());
        }
        b[88..90].copy_from_slice(&self.asid);
        b
    }
}

/// A ChampSim trace could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChampSimError {
    /// Reading failed (for a compressed file: the decompressor found a bad stream).
    #[error("byte {offset}: I/O error: {source}")]
    Io {
        /// Offset in the (decompressed) trace of the record being read.
        offset: u64,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The trace ends inside a record.
    #[error(
        "byte {offset}: truncated record: the trace ends {len} bytes into a {size}-byte record (its size is not a multiple of {size}: wrong --format, or a cut file?)"
    )]
    Truncated {
        /// Offset of the incomplete record.
        offset: u64,
        /// Bytes of it present.
        len: usize,
        /// The record size.
        size: usize,
    },
    /// A branch flag is neither 0 nor 1: not a ChampSim trace of this format.
    #[error(
        "byte {offset}: {field} is {value}, expected 0 or 1 (not a ChampSim {format:?} trace?)"
    )]
    Malformed {
        /// Offset of the field.
        offset: u64,
        /// Its name.
        field: &'static str,
        /// Its value.
        value: u8,
        /// The format the trace was read as.
        format: ChampSimFormat,
    },
}

/// Counts of what a [`ChampSimReader`] has read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ChampSimStats {
    /// ChampSim records read.
    pub instrs: u64,
    /// ccsim records produced (placement records not included).
    pub records: u64,
    /// Loads (nonzero `source_memory` entries).
    pub loads: u64,
    /// Stores (nonzero `destination_memory` entries).
    pub stores: u64,
    /// Accesses the placer left out (no captured frame for their page in a role that needs
    /// one); not in `records`.
    pub unmapped: u64,
    /// Fetches of a host-kernel stream emitted as `work 1`; in `records`.
    pub fetches_as_work: u64,
}

/// Streams records from a ChampSim trace through a [`Placer`].
#[derive(Debug)]
pub struct ChampSimReader<R: Read> {
    r: R,
    format: ChampSimFormat,
    buf: Vec<u8>,
    /// Next unread byte of `buf`, and the end of the valid bytes.
    pos: usize,
    end: usize,
    /// Trace offset of `buf[0]`.
    base: u64,
    eof: bool,
    failed: bool,
    agent: Agent,
    placer: Placer,
    fetch_as_work: bool,
    /// Placement records, then the access they precede.
    queue: VecDeque<Record>,
    pre: Vec<Record>,
    /// The record being emitted.
    cur: Ops,
    stats: ChampSimStats,
}

impl<R: Read> ChampSimReader<R> {
    /// A reader of `r` in `format`, whose accesses `placer` places (its role's agent on CPU
    /// `cpu`).
    pub fn new(r: R, format: ChampSimFormat, cpu: CpuId, placer: Placer) -> Self {
        let agent = placer.role().agent(cpu);
        let fetch_as_work = placer.role() == Role::HostKernel;
        ChampSimReader {
            r,
            format,
            buf: vec![0; BUF_RECORDS * format.record_size()],
            pos: 0,
            end: 0,
            base: 0,
            eof: false,
            failed: false,
            agent,
            placer,
            fetch_as_work,
            queue: VecDeque::with_capacity(16),
            pre: Vec::new(),
            cur: Ops { addr: [0; 9], op: [0; 9], n: 0, next: 0 },
            stats: ChampSimStats::default(),
        }
    }

    /// What has been read so far.
    pub fn stats(&self) -> ChampSimStats {
        self.stats
    }

    /// The placer (for its statistics).
    pub fn placer(&self) -> &Placer {
        &self.placer
    }

    /// Make at least one whole record available at `pos`; `Ok(false)` at a clean end.
    fn fill(&mut self) -> Result<bool, ChampSimError> {
        let size = self.format.record_size();
        if self.end - self.pos >= size {
            return Ok(true);
        }
        // Move the partial record, if any, to the front.
        self.buf.copy_within(self.pos..self.end, 0);
        self.base += self.pos as u64;
        self.end -= self.pos;
        self.pos = 0;
        while !self.eof && self.end < size {
            match self.r.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(ChampSimError::Io { offset: self.base, source }),
            }
        }
        match self.end {
            0 => Ok(false),
            n if n < size => Err(ChampSimError::Truncated { offset: self.base, len: n, size }),
            _ => Ok(true),
        }
    }

    /// Decode the next record into `self.cur`; `Ok(false)` at a clean end.
    fn decode_next(&mut self) -> Result<bool, ChampSimError> {
        if !self.fill()? {
            return Ok(false);
        }
        let size = self.format.record_size();
        let at = self.base + self.pos as u64;
        let b = &self.buf[self.pos..self.pos + size];
        for (field, off) in [("is_branch", 8), ("branch_taken", 9)] {
            if b[off] > 1 {
                let (value, format) = (b[off], self.format);
                return Err(ChampSimError::Malformed {
                    offset: at + off as u64,
                    field,
                    value,
                    format,
                });
            }
        }
        let rec = ChampSimRecord::decode(self.format, b);
        self.pos += size;
        self.stats.instrs += 1;
        // Operations in order: the fetch, then the nonzero loads, then the nonzero stores.
        // Written in place: building them on the stack and copying the struct in costs a
        // store-forwarding stall per record (seen in `perf annotate`).
        let ops = &mut self.cur;
        ops.addr[0] = rec.ip;
        ops.op[0] = 0;
        let mut n = 1;
        for &a in &rec.source_memory {
            ops.addr[n] = a;
            ops.op[n] = 1;
            n += usize::from(a != 0);
        }
        let loads = n - 1;
        for &a in &rec.destination_memory {
            ops.addr[n] = a;
            ops.op[n] = 2;
            n += usize::from(a != 0);
        }
        ops.n = n;
        ops.next = 0;
        self.stats.loads += loads as u64;
        self.stats.stores += (n - 1 - loads) as u64;
        Ok(true)
    }

    /// The event of operation `i` of the current ChampSim record; `None` if the placer left
    /// it out. Placement records go to `self.pre`.
    ///
    /// It returns the event, not the record: the caller builds the record in its return
    /// value. Built here and returned, the record was copied in 16-byte pieces that straddle
    /// its fields, a store-forwarding stall that cost a fifth of the import time
    /// (`perf annotate` of `benches/benches/import_champsim.rs`).
    fn emit(&mut self, i: usize) -> Option<Event> {
        let (op, va) = (self.cur.op[i], self.cur.addr[i]);
        let event = if op == 0 && self.fetch_as_work {
            self.stats.fetches_as_work += 1;
            Event::Work { count: 1 }
        } else {
            match self.placer.place(va, &mut self.pre) {
                Some(a) => access_event(op, a, 1),
                None => {
                    self.stats.unmapped += 1;
                    return None;
                }
            }
        };
        self.stats.records += 1;
        Some(event)
    }
}

/// The operations of one ChampSim record still to be emitted.
#[derive(Clone, Copy, Debug)]
struct Ops {
    /// Virtual addresses.
    addr: [u64; 9],
    /// 0 fetch, 1 load, 2 store.
    op: [u8; 9],
    n: usize,
    next: usize,
}

impl<R: Read> Iterator for ChampSimReader<R> {
    type Item = Result<Record, ChampSimError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(Ok(r));
            }
            if self.cur.next < self.cur.n {
                let i = self.cur.next;
                self.cur.next += 1;
                let Some(event) = self.emit(i) else { continue };
                let r = Record::Event(TimedEvent { time: None, agent: self.agent, event });
                if self.pre.is_empty() {
                    return Some(Ok(r));
                }
                self.queue.extend(self.pre.drain(..));
                self.queue.push_back(r);
                continue;
            }
            if self.failed {
                return None;
            }
            match self.decode_next() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// What a [`ChampSimWriter`] wrote and left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ExportStats {
    /// `input_instr` records written.
    pub instrs: u64,
    /// Fetch events read (each starts a record).
    pub fetches: u64,
    /// Loads written.
    pub loads: u64,
    /// Stores written.
    pub stores: u64,
    /// Extra records with the ip of the previous one: a 5th load, a 3rd store, or a load
    /// after a store of one instruction (kept in order by starting a new record).
    pub spills: u64,
    /// Records with [`SYNTHETIC_IP`]: one per data access that no fetch precedes.
    pub synthetic: u64,
    /// Accesses at address 0, which the format cannot express (0 means "no operand").
    pub zero_dropped: u64,
    /// Trace records that are not fetches, loads or stores (settings, maps, `work`, …).
    pub skipped: u64,
    /// Accesses issued by an agent other than the trace's first accessing agent; written
    /// too, interleaved (ChampSim traces are one instruction stream).
    pub other_agents: u64,
}

/// The instruction being gathered.
#[derive(Clone, Copy, Debug)]
struct Group {
    rec: ChampSimRecord,
    loads: usize,
    stores: usize,
}

/// Writes `input_instr` records from an access stream.
///
/// Each fetch starts a record with `ip` = its address; the loads and stores that follow it
/// until the next fetch fill `source_memory` (up to 4) and `destination_memory` (up to 2).
/// A record holds its loads before its stores, as the importer reads them back, so a load
/// after a store, a 5th load or a 3rd store starts another record with the same `ip` (a
/// *spill*: re-imported, it reads as one more fetch of that `ip`). A data access that no
/// fetch precedes gets its own record with [`SYNTHETIC_IP`]. Sizes, agents, address kinds
/// and non-access records are not in the format and are dropped; access at address 0
/// cannot be expressed and is dropped and counted. Branch and register fields are zero.
#[derive(Debug)]
pub struct ChampSimWriter<W: Write> {
    w: W,
    cur: Option<Group>,
    agent: Option<Agent>,
    stats: ExportStats,
}

impl<W: Write> ChampSimWriter<W> {
    /// A writer to `w` (buffer it).
    pub fn new(w: W) -> Self {
        ChampSimWriter { w, cur: None, agent: None, stats: ExportStats::default() }
    }

    /// What has been written so far.
    pub fn stats(&self) -> ExportStats {
        self.stats
    }

    fn flush_group(&mut self) -> io::Result<()> {
        if let Some(g) = self.cur.take() {
            self.w.write_all(&g.rec.encode_input())?;
            self.stats.instrs += 1;
        }
        Ok(())
    }

    fn start(&mut self, ip: u64) {
        self.cur = Some(Group {
            rec: ChampSimRecord { ip, ..ChampSimRecord::default() },
            loads: 0,
            stores: 0,
        });
    }

    /// Add one trace record.
    ///
    /// # Errors
    /// Writing failed.
    pub fn push(&mut self, r: &Record) -> io::Result<()> {
        let Record::Event(te) = r else {
            self.stats.skipped += 1;
            return Ok(());
        };
        let (op, addr) = match te.event {
            Event::Fetch { addr, .. } => (0, addr.raw()),
            Event::Load { addr, .. } => (1, addr.raw()),
            Event::Store { addr, .. } => (2, addr.raw()),
            _ => {
                self.stats.skipped += 1;
                return Ok(());
            }
        };
        match self.agent {
            None => self.agent = Some(te.agent),
            Some(a) if a != te.agent => self.stats.other_agents += 1,
            Some(_) => {}
        }
        if op == 0 {
            self.flush_group()?;
            self.start(addr);
            self.stats.fetches += 1;
            return Ok(());
        }
        if addr == 0 {
            self.stats.zero_dropped += 1;
            return Ok(());
        }
        let ip = match &self.cur {
            None => {
                self.stats.synthetic += 1;
                let mut rec = ChampSimRecord { ip: SYNTHETIC_IP, ..ChampSimRecord::default() };
                if op == 1 {
                    rec.source_memory[0] = addr;
                    self.stats.loads += 1;
                } else {
                    rec.destination_memory[0] = addr;
                    self.stats.stores += 1;
                }
                self.w.write_all(&rec.encode_input())?;
                self.stats.instrs += 1;
                return Ok(());
            }
            Some(g) => {
                let full = if op == 1 { g.loads == 4 || g.stores > 0 } else { g.stores == 2 };
                full.then_some(g.rec.ip)
            }
        };
        if let Some(ip) = ip {
            self.flush_group()?;
            self.start(ip);
            self.stats.spills += 1;
        }
        if let Some(g) = &mut self.cur {
            if op == 1 {
                g.rec.source_memory[g.loads] = addr;
                g.loads += 1;
                self.stats.loads += 1;
            } else {
                g.rec.destination_memory[g.stores] = addr;
                g.stores += 1;
                self.stats.stores += 1;
            }
        }
        Ok(())
    }

    /// Write the last record and flush; returns the writer and the counts.
    ///
    /// # Errors
    /// Writing failed.
    pub fn finish(mut self) -> io::Result<(W, ExportStats)> {
        self.flush_group()?;
        self.w.flush()?;
        Ok((self.w, self.stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::event::MemType;
    use sim_core::{Address, Context, Hva};

    fn process() -> Placer {
        Placer::new(Role::HostProcess { pid: 7 }, 0, None)
    }

    fn read(format: ChampSimFormat, bytes: &[u8]) -> Vec<Result<Record, ChampSimError>> {
        ChampSimReader::new(bytes, format, 0, process()).collect()
    }

    fn ev(r: &Record) -> (char, u64) {
        let Record::Event(te) = r else { panic!("not an event") };
        assert_eq!(te.agent, Agent::Cpu { cpu: 0, ctx: Context::HostProcess(7) });
        match te.event {
            Event::Fetch { addr: Address::Hva(a), size: 1 } => ('I', a.raw()),
            Event::Load { addr: Address::Hva(a), size: 1 } => ('L', a.raw()),
            Event::Store { addr: Address::Hva(a), size: 1, mt: MemType::Wb } => ('S', a.raw()),
            ref e => panic!("unexpected {e:?}"),
        }
    }

    fn sample() -> ChampSimRecord {
        ChampSimRecord {
            ip: 0x401000,
            is_branch: 1,
            branch_taken: 1,
            destination_registers: [26, 0, 0, 0],
            source_registers: [6, 25, 0, 0],
            destination_memory: [0x7ff0, 0, 0, 0],
            source_memory: [0x1000, 0, 0x2008, 0],
            asid: [0, 0],
        }
    }

    #[test]
    fn input_layout_matches_the_header_offsets() {
        let b = sample().encode_input();
        assert_eq!(&b[0..8], &0x401000u64.to_le_bytes());
        assert_eq!((b[8], b[9], b[10], b[12], b[13]), (1, 1, 26, 6, 25));
        assert_eq!(&b[16..24], &0x7ff0u64.to_le_bytes());
        assert_eq!(&b[32..40], &0x1000u64.to_le_bytes());
        assert_eq!(&b[48..56], &0x2008u64.to_le_bytes());
        assert_eq!(ChampSimRecord::decode(ChampSimFormat::Input, &b), sample());
    }

    #[test]
    fn cloudsuite_layout_matches_the_header_offsets() {
        let mut r = sample();
        r.destination_memory[3] = 0x9000;
        r.asid = [3, 4];
        let b = r.encode_cloudsuite();
        assert_eq!(&b[24..32], &0x7ff0u64.to_le_bytes());
        assert_eq!(&b[48..56], &0x9000u64.to_le_bytes());
        assert_eq!(&b[56..64], &0x1000u64.to_le_bytes());
        assert_eq!((b[88], b[89]), (3, 4));
        assert_eq!(ChampSimRecord::decode(ChampSimFormat::Cloudsuite, &b), r);
        let got: Vec<_> =
            read(ChampSimFormat::Cloudsuite, &b).iter().map(|r| ev(r.as_ref().unwrap())).collect();
        assert_eq!(
            got,
            [('I', 0x401000), ('L', 0x1000), ('L', 0x2008), ('S', 0x7ff0), ('S', 0x9000)]
        );
    }

    #[test]
    fn a_record_is_a_fetch_then_loads_then_stores() {
        let mut bytes = sample().encode_input().to_vec();
        bytes.extend(ChampSimRecord { ip: 0x401004, ..Default::default() }.encode_input());
        let got: Vec<_> =
            read(ChampSimFormat::Input, &bytes).iter().map(|r| ev(r.as_ref().unwrap())).collect();
        assert_eq!(
            got,
            [('I', 0x401000), ('L', 0x1000), ('L', 0x2008), ('S', 0x7ff0), ('I', 0x401004)]
        );
    }

    #[test]
    fn host_kernel_fetches_are_work() {
        let b = sample().encode_input();
        let placer = Placer::new(Role::HostKernel, 0, None);
        let mut r = ChampSimReader::new(&b[..], ChampSimFormat::Input, 0, placer);
        let first = r.next().unwrap().unwrap();
        let Record::Event(te) = first else { panic!() };
        assert_eq!(te.event, Event::Work { count: 1 });
        // No map: the data accesses have no frame and are left out, counted.
        assert!(r.next().is_none());
        assert_eq!(r.stats().unmapped, 3);
        assert_eq!(r.stats().fetches_as_work, 1);
    }

    #[test]
    fn truncated_and_malformed_name_the_byte_offset() {
        let mut bytes = sample().encode_input().to_vec();
        bytes.extend([0u8; 10]);
        let rs = read(ChampSimFormat::Input, &bytes);
        let Some(Err(e @ ChampSimError::Truncated { offset: 64, len: 10, size: 64 })) = rs.last()
        else {
            panic!("{:?}", rs.last())
        };
        assert!(e.to_string().starts_with("byte 64: truncated record"), "{e}");
        // A 64-byte trace read as cloudsuite is one truncated record at 0.
        let rs = read(ChampSimFormat::Cloudsuite, &sample().encode_input());
        assert!(matches!(rs[..], [Err(ChampSimError::Truncated { offset: 0, len: 64, size: 96 })]));
        let mut bad = sample().encode_input().to_vec();
        bad.extend(sample().encode_input());
        bad[64 + 9] = 7;
        let rs = read(ChampSimFormat::Input, &bad);
        let Some(Err(e)) = rs.last() else { panic!() };
        assert_eq!(
            e.to_string(),
            "byte 73: branch_taken is 7, expected 0 or 1 (not a ChampSim Input trace?)"
        );
        assert!(read(ChampSimFormat::Input, &[]).is_empty());
    }

    #[test]
    fn reads_across_short_reads() {
        // A reader that returns 5 bytes at a time still yields whole records.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(5).min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut bytes = Vec::new();
        for i in 0..3000u64 {
            bytes.extend(ChampSimRecord { ip: 0x1000 + i, ..Default::default() }.encode_input());
        }
        let r = ChampSimReader::new(Trickle(&bytes), ChampSimFormat::Input, 0, process());
        let ips: Vec<u64> = r.map(|r| ev(&r.unwrap()).1).collect();
        assert_eq!(ips, (0..3000).map(|i| 0x1000 + i).collect::<Vec<_>>());
    }

    fn access(op: u8, a: u64) -> Record {
        let agent = Agent::Cpu { cpu: 0, ctx: Context::HostProcess(7) };
        let event = access_event(op, Address::Hva(Hva::new(a)), 8);
        Record::Event(TimedEvent { time: None, agent, event })
    }

    fn export(rs: &[Record]) -> (Vec<u8>, ExportStats) {
        let mut w = ChampSimWriter::new(Vec::new());
        for r in rs {
            w.push(r).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn export_groups_spills_and_synthesizes() {
        let rs = [
            access(1, 0x10), // no fetch yet: synthetic ip
            access(0, 0x400),
            access(1, 0x20),
            access(2, 0x30),
            access(1, 0x40), // load after store: spill
            access(1, 0),    // address 0: dropped
            access(0, 0x404),
            access(2, 0x50),
            access(2, 0x60),
            access(2, 0x70), // third store: spill
        ];
        let (bytes, st) = export(&rs);
        assert_eq!(bytes.len(), 5 * 64);
        assert_eq!((st.instrs, st.spills, st.synthetic, st.zero_dropped), (5, 2, 1, 1));
        let recs: Vec<_> =
            bytes.chunks(64).map(|b| ChampSimRecord::decode(ChampSimFormat::Input, b)).collect();
        assert_eq!(recs[0].ip, SYNTHETIC_IP);
        assert_eq!(recs[0].source_memory[0], 0x10);
        assert_eq!(
            (recs[1].ip, recs[1].source_memory[0], recs[1].destination_memory[0]),
            (0x400, 0x20, 0x30)
        );
        assert_eq!((recs[2].ip, recs[2].source_memory[0]), (0x400, 0x40));
        assert_eq!(recs[3].destination_memory[..2], [0x50, 0x60]);
        assert_eq!((recs[4].ip, recs[4].destination_memory[0]), (0x404, 0x70));
        // Re-imported: the data accesses in order, one extra fetch per spill and synthetic.
        let back: Vec<_> =
            read(ChampSimFormat::Input, &bytes).iter().map(|r| ev(r.as_ref().unwrap())).collect();
        assert_eq!(
            back,
            [
                ('I', SYNTHETIC_IP),
                ('L', 0x10),
                ('I', 0x400),
                ('L', 0x20),
                ('S', 0x30),
                ('I', 0x400),
                ('L', 0x40),
                ('I', 0x404),
                ('S', 0x50),
                ('S', 0x60),
                ('I', 0x404),
                ('S', 0x70)
            ]
        );
    }
}
