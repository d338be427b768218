//! The payload of one frame: the agent table, then items: columnar access blocks and tagged
//! control records (docs/trace-format.md "Frame payload").

use super::error::{CctError, Corruption, FramePos};
use super::format::MAX_FRAME_RECORDS;
use sim_core::codec::{Field, get_varint, put_varint, unzigzag, zigzag};
use sim_core::event::MemType;
use sim_core::{
    Address, Agent, Check, Cycles, Event, Gpa, Gva, Hva, Iova, Record, Setting, Spa, StateItem,
    TimedEvent,
};
use std::collections::BTreeMap;

/// Item tags inside a frame payload. Adding one raises the format's minor version.
pub(crate) const ITEM_ACCESSES: u64 = 1;
pub(crate) const ITEM_EVENT: u64 = 2;
pub(crate) const ITEM_SETTING: u64 = 3;
pub(crate) const ITEM_STATE: u64 = 4;
pub(crate) const ITEM_EXPECT: u64 = 5;
pub(crate) const ITEM_PROGRAM_BEGIN: u64 = 6;
pub(crate) const ITEM_PROGRAM_END: u64 = 7;

/// Largest symbol table of an access block: the symbol column is one byte per access.
const MAX_SYMBOLS: usize = 256;
/// Largest agent table of a frame: symbol entries name agents by a u16.
const MAX_AGENTS: usize = 1 << 16;
/// Access-block flag: the block has a time column.
const FLAG_TIMED: u8 = 1;
/// Bits 52 and up of a physical address (SDM Vol. 3A §4.1.4: MAXPHYADDR ≤ 52).
const PHYS_HIGH: u64 = !((1 << sim_core::addr::MAX_PHYS_BITS) - 1);

const OP_LOAD: u8 = 0;
const OP_STORE: u8 = 1;
const OP_FETCH: u8 = 2;
const OP_DMA_READ: u8 = 3;
const OP_DMA_WRITE: u8 = 4;

/// What an [`Access`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessOp {
    /// A data load.
    Load,
    /// A data store with its memory type.
    Store(MemType),
    /// An instruction fetch.
    Fetch,
    /// A device DMA read.
    DmaRead,
    /// A device DMA write.
    DmaWrite,
}

/// One memory access as the bulk decoder produces it: 16 bytes, no allocation.
///
/// The agent is an index into [`Frame::agents`]; the time, if any, is in [`Frame::time`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    addr: u64,
    size: u32,
    /// bits 0–2 op, 3–5 address kind ([`Address::kind_code`]), 6–7 store memory type.
    code: u8,
    timed: bool,
    agent: u16,
}

impl Access {
    /// The raw address value.
    #[inline]
    pub const fn raw_addr(&self) -> u64 {
        self.addr
    }

    /// Bytes accessed.
    #[inline]
    pub const fn size(&self) -> u32 {
        self.size
    }

    /// The address kind code ([`Address::kind_code`]).
    #[inline]
    pub const fn addr_kind(&self) -> u8 {
        (self.code >> 3) & 7
    }

    /// The address with its kind.
    pub fn address(&self) -> Address {
        // The decoder checked the kind code and the 52-bit limit of physical kinds, so the
        // truncating constructors are exact here.
        match self.addr_kind() {
            0 => Address::Hva(Hva::new_truncate(self.addr)),
            1 => Address::Gva(Gva::new_truncate(self.addr)),
            2 => Address::Gpa(Gpa::new_truncate(self.addr)),
            3 => Address::Spa(Spa::new_truncate(self.addr)),
            _ => Address::Iova(Iova::new_truncate(self.addr)),
        }
    }

    /// What the access does.
    pub fn op(&self) -> AccessOp {
        match self.code & 7 {
            OP_LOAD => AccessOp::Load,
            OP_STORE => AccessOp::Store(mem_type(self.code >> 6)),
            OP_FETCH => AccessOp::Fetch,
            OP_DMA_READ => AccessOp::DmaRead,
            _ => AccessOp::DmaWrite,
        }
    }

    /// Index of the issuing agent in [`Frame::agents`].
    #[inline]
    pub const fn agent_index(&self) -> u16 {
        self.agent
    }

    /// Whether the access carries a time (see [`Frame::time`]).
    #[inline]
    pub const fn is_timed(&self) -> bool {
        self.timed
    }

    /// The access as an [`Event`].
    pub fn event(&self) -> Event {
        let (addr, size) = (self.address(), self.size);
        match self.op() {
            AccessOp::Load => Event::Load { addr, size },
            AccessOp::Store(mt) => Event::Store { addr, size, mt },
            AccessOp::Fetch => Event::Fetch { addr, size },
            AccessOp::DmaRead => Event::DmaRead { addr, size },
            AccessOp::DmaWrite => Event::DmaWrite { addr, size },
        }
    }
}

fn mem_type(code: u8) -> MemType {
    MemType::ALL.get(usize::from(code)).copied().unwrap_or(MemType::Wb)
}

/// The access code of an event, or `None` if the event is not an access.
fn access_code(ev: &Event) -> Option<(u8, Address, u32)> {
    let (op, addr, size, mt) = match *ev {
        Event::Load { addr, size } => (OP_LOAD, addr, size, 0),
        Event::Store { addr, size, mt } => (OP_STORE, addr, size, mt.code()),
        Event::Fetch { addr, size } => (OP_FETCH, addr, size, 0),
        Event::DmaRead { addr, size } => (OP_DMA_READ, addr, size, 0),
        Event::DmaWrite { addr, size } => (OP_DMA_WRITE, addr, size, 0),
        _ => return None,
    };
    Some((op | (addr.kind_code() << 3) | (mt << 6), addr, size))
}

/// Address-delta stream of an op: fetches, data, DMA each keep their own previous address,
/// because interleaving them would turn every delta into a jump between code and data.
const fn stream(op: u8) -> usize {
    match op {
        OP_FETCH => 0,
        OP_LOAD | OP_STORE => 1,
        _ => 2,
    }
}

/// One decoded frame: its agents, its accesses (columnar, 16 bytes each) and its other records
/// with their positions. Reuse one `Frame` across calls to avoid allocation.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    pub(crate) number: u32,
    pub(crate) first_record: u64,
    pub(crate) agents: Vec<Agent>,
    pub(crate) accesses: Vec<Access>,
    pub(crate) times: Vec<u64>,
    pub(crate) controls: Vec<(u32, Record)>,
}

impl Frame {
    /// The frame's number in the file (from 0).
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Stream number of the frame's first record.
    pub fn first_record(&self) -> u64 {
        self.first_record
    }

    /// The agents that [`Access::agent_index`] refers to.
    pub fn agents(&self) -> &[Agent] {
        &self.agents
    }

    /// The memory accesses, in stream order.
    pub fn accesses(&self) -> &[Access] {
        &self.accesses
    }

    /// The time of access `i`, if it has one.
    pub fn time(&self, i: usize) -> Option<Cycles> {
        let a = self.accesses.get(i)?;
        a.timed.then(|| Cycles::new(self.times.get(i).copied().unwrap_or(0)))
    }

    /// The agent of an access.
    pub fn agent(&self, a: &Access) -> Agent {
        // The decoder checked every index against the table.
        self.agents.get(usize::from(a.agent)).copied().unwrap_or(Agent::host(0))
    }

    /// Records that are not accesses, each with the number of accesses before it in the frame.
    pub fn controls(&self) -> &[(u32, Record)] {
        &self.controls
    }

    /// Number of records (accesses and others).
    pub fn len(&self) -> usize {
        self.accesses.len() + self.controls.len()
    }

    /// Whether the frame has no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Access `i` as a full [`Record`].
    pub fn access_record(&self, i: usize) -> Option<Record> {
        let a = self.accesses.get(i)?;
        Some(Record::Event(TimedEvent {
            time: self.time(i),
            agent: self.agent(a),
            event: a.event(),
        }))
    }

    /// Every record of the frame in stream order.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let mut ai = 0usize;
        let mut ci = 0usize;
        std::iter::from_fn(move || {
            if let Some((pos, r)) = self.controls.get(ci)
                && *pos as usize == ai
            {
                ci += 1;
                return Some(r.clone());
            }
            let r = self.access_record(ai)?;
            ai += 1;
            Some(r)
        })
    }

    pub(crate) fn clear(&mut self) {
        self.agents.clear();
        self.accesses.clear();
        self.times.clear();
        self.controls.clear();
    }
}

/// Read a varint at `i` of `col`: branch-free for up to 8 bytes (56 bits), which covers every
/// delta but a jump of more than 2^55.
#[inline(always)]
fn varint_at(col: &[u8], i: usize) -> Option<(u64, usize)> {
    let rest = col.get(i..)?;
    if let Some(w) = rest.first_chunk::<8>() {
        let w = u64::from_le_bytes(*w);
        let stops = !w & 0x8080_8080_8080_8080;
        if stops != 0 {
            let tz = stops.trailing_zeros();
            let mut x = w & (u64::MAX >> (63 - tz)) & 0x7f7f_7f7f_7f7f_7f7f;
            x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
            x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
            x = (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4);
            return Some((x, (tz as usize >> 3) + 1));
        }
    }
    let mut s = rest;
    let v = get_varint(&mut s).ok()?;
    Some((v, rest.len() - s.len()))
}

/// A cursor over a payload that turns every failure into an error with its position.
struct Cur<'a> {
    buf: &'a [u8],
    at: usize,
    pos: FramePos,
    minor: u16,
}

impl<'a> Cur<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.at
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, CctError> {
        let mut s = &self.buf[self.at..];
        let v = get_varint(&mut s).map_err(|e| self.pos.field(self.at, what, e, self.minor))?;
        self.at = self.buf.len() - s.len();
        Ok(v)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, CctError> {
        let b = *self.buf.get(self.at).ok_or_else(|| {
            self.pos.field(self.at, what, sim_core::codec::FieldError::Truncated, self.minor)
        })?;
        self.at += 1;
        Ok(b)
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, CctError> {
        let at = self.at;
        match self.byte(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self
                .pos
                .corrupt(at, Corruption::OutOfRange { what, value: v.into(), allowed: "0 or 1" })),
        }
    }

    /// A count of items that each take at least `min_bytes`: checked against the bytes left
    /// before anything is allocated for it.
    fn count(&mut self, what: &'static str, min_bytes: usize) -> Result<usize, CctError> {
        let at = self.at;
        let n = self.varint(what)?;
        let left = self.left() as u64;
        if n.saturating_mul(min_bytes as u64) > left {
            return Err(self
                .pos
                .corrupt(at, Corruption::Overrun { what, len: n, within: "frame payload", left }));
        }
        // Bounded by the payload length just above.
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], CctError> {
        let left = self.left() as u64;
        if n > left {
            return Err(self.pos.corrupt(
                self.at,
                Corruption::Overrun { what, len: n, within: "frame payload", left },
            ));
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn string(&mut self, what: &'static str) -> Result<String, CctError> {
        let n = self.varint(what)?;
        let at = self.at;
        let b = self.take(n, what)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| self.pos.corrupt(at, Corruption::Utf8(what)))
    }

    /// Run a vocabulary or field decoder on the rest of the payload.
    fn with<T, E>(
        &mut self,
        f: impl FnOnce(&mut &'a [u8]) -> Result<T, E>,
    ) -> Result<T, (usize, E)> {
        let mut s = &self.buf[self.at..];
        let start = self.at;
        let r = f(&mut s);
        self.at = self.buf.len() - s.len();
        r.map_err(|e| (start, e))
    }
}

/// One entry of a block's symbol table, expanded for the decode loop.
#[derive(Clone, Copy)]
struct Sym {
    tmpl: Access,
    stream: usize,
    phys: u64,
    /// Bytes of the address delta (1, 2, 4 or 8) and the mask that keeps them.
    width: usize,
    mask: u64,
}

const NO_SYM: Sym = Sym {
    tmpl: Access { addr: 0, size: 0, code: 0, timed: false, agent: 0 },
    stream: 0,
    phys: 0,
    width: 0,
    mask: 0,
};

/// Address-delta width classes: a symbol's delta takes `1 << class` bytes.
const WIDTH_CLASSES: u8 = 4;

/// The width class of a zigzagged delta.
#[inline]
fn width_class(d: u64) -> u8 {
    match d {
        0..=0xff => 0,
        0x100..=0xffff => 1,
        0x1_0000..=0xffff_ffff => 2,
        _ => 3,
    }
}

/// The 8 little-endian bytes at `pos`, zero-padded past the end of `col`.
#[inline(always)]
fn read8(col: &[u8], pos: usize) -> u64 {
    match col.get(pos..).and_then(<[u8]>::first_chunk::<8>) {
        Some(b) => u64::from_le_bytes(*b),
        None => {
            let mut b = [0u8; 8];
            let rest = col.get(pos..).unwrap_or(&[]);
            b[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(b)
        }
    }
}

/// Decode a frame payload into `out` (cleared first). `declared` is the header's record count.
pub(crate) fn decode_payload(
    payload: &[u8],
    declared: u32,
    pos: FramePos,
    minor: u16,
    out: &mut Frame,
) -> Result<(), CctError> {
    out.clear();
    out.number = pos.frame;
    let mut c = Cur { buf: payload, at: 0, pos, minor };
    let n_agents = c.count("agent count", 1)?;
    if n_agents > MAX_AGENTS {
        return Err(pos.corrupt(
            0,
            Corruption::OutOfRange {
                what: "agent count",
                value: n_agents as u64,
                allowed: "at most 65536",
            },
        ));
    }
    out.agents.reserve(n_agents);
    for _ in 0..n_agents {
        let a = c.with(Agent::get).map_err(|(at, e)| pos.field(at, "agent", e, minor))?;
        out.agents.push(a);
    }
    let declared_n = u64::from(declared);
    let mut found: u64 = 0;
    let mut table = [NO_SYM; MAX_SYMBOLS];
    while c.left() > 0 {
        let tag_at = c.at;
        let tag = c.varint("record tag")?;
        if tag == ITEM_ACCESSES {
            let n = c.varint("access count")?;
            if n == 0 || found + n > declared_n {
                return Err(CctError::RecordCount {
                    offset: pos.frame_offset,
                    what: format!("frame {}", pos.frame),
                    declared: declared_n,
                    found: found.saturating_add(n),
                });
            }
            found += n;
            // Bounded by the declared count, itself at most MAX_FRAME_RECORDS.
            let n = usize::try_from(n).unwrap_or(0);
            decode_block(&mut c, n, &mut table, out)?;
        } else {
            let rec = decode_control(&mut c, tag, tag_at, out)?;
            found += 1;
            if found > declared_n {
                return Err(CctError::RecordCount {
                    offset: pos.frame_offset,
                    what: format!("frame {}", pos.frame),
                    declared: declared_n,
                    found,
                });
            }
            // At most MAX_FRAME_RECORDS accesses, so the position fits.
            let at = u32::try_from(out.accesses.len()).unwrap_or(u32::MAX);
            out.controls.push((at, rec));
        }
    }
    if found != declared_n {
        return Err(CctError::RecordCount {
            offset: pos.frame_offset,
            what: format!("frame {}", pos.frame),
            declared: declared_n,
            found,
        });
    }
    if !out.times.is_empty() {
        out.times.resize(out.accesses.len(), 0);
    }
    Ok(())
}

fn decode_block(
    c: &mut Cur<'_>,
    n: usize,
    table: &mut [Sym; MAX_SYMBOLS],
    out: &mut Frame,
) -> Result<(), CctError> {
    let (pos, minor) = (c.pos, c.minor);
    let flags_at = c.at;
    let flags = c.byte("access block flags")?;
    if flags & !FLAG_TIMED != 0 {
        return Err(pos.unknown(flags_at, "access block flags", flags.into(), minor));
    }
    let timed = flags & FLAG_TIMED != 0;
    let nsym_at = c.at;
    let nsym = c.count("symbol count", 3)?;
    if nsym == 0 || nsym > MAX_SYMBOLS {
        return Err(pos.corrupt(
            nsym_at,
            Corruption::OutOfRange {
                what: "symbol count",
                value: nsym as u64,
                allowed: "1 to 256",
            },
        ));
    }
    for slot in table.iter_mut().take(nsym) {
        let code_at = c.at;
        let code = c.byte("access code")?;
        let (op, kind, mt) = (code & 7, (code >> 3) & 7, code >> 6);
        if op > OP_DMA_WRITE {
            return Err(pos.unknown(code_at, "access op", op.into(), minor));
        }
        if kind > 4 {
            return Err(pos.unknown(code_at, "address kind", kind.into(), minor));
        }
        if mt != 0 && op != OP_STORE {
            return Err(pos.corrupt(code_at, Corruption::Reserved));
        }
        let size_at = c.at;
        let size = c.varint("access size")?;
        let size = u32::try_from(size).map_err(|_| {
            pos.corrupt(
                size_at,
                Corruption::OutOfRange { what: "access size", value: size, allowed: "a u32" },
            )
        })?;
        let agent_at = c.at;
        let agent_v = c.varint("agent index")?;
        let agent = u16::try_from(agent_v).ok().filter(|&a| usize::from(a) < out.agents.len());
        let Some(agent) = agent else {
            return Err(pos.corrupt(
                agent_at,
                Corruption::OutOfRange {
                    what: "agent index",
                    value: agent_v,
                    allowed: "below the frame's agent count",
                },
            ));
        };
        let class_at = c.at;
        let class = c.byte("delta width class")?;
        if class >= WIDTH_CLASSES {
            return Err(pos.unknown(class_at, "delta width class", class.into(), minor));
        }
        let width = 1usize << class;
        *slot = Sym {
            tmpl: Access { addr: 0, size, code, timed, agent },
            stream: stream(op),
            phys: if kind == 2 || kind == 3 { PHYS_HIGH } else { 0 },
            width,
            mask: u64::MAX >> (64 - 8 * width),
        };
    }
    let syms_at = c.at;
    let syms: &[u8] = if nsym > 1 { c.take(n as u64, "symbol column")? } else { &[] };
    if nsym > 1
        && nsym < MAX_SYMBOLS
        && let Some(i) = syms.iter().position(|&s| usize::from(s) >= nsym)
    {
        return Err(pos.corrupt(
            syms_at + i,
            Corruption::OutOfRange {
                what: "symbol",
                value: syms[i].into(),
                allowed: "below the block's symbol count",
            },
        ));
    }
    // The symbols give every delta's width: the column length is checked before decoding, so
    // the loop below needs no per-access checks and no position depends on a decoded byte.
    let width_sum: usize = if nsym == 1 {
        n * table[0].width
    } else {
        syms.iter().map(|&s| table[usize::from(s)].width).sum()
    };
    let len = c.varint("address column length")?;
    let col_at = c.at;
    if len != width_sum as u64 {
        return Err(pos.corrupt(
            col_at,
            Corruption::ColumnLength { what: "address", declared: len, found: width_sum as u64 },
        ));
    }
    let col = c.take(len, "address column")?;
    let start = out.accesses.len();
    let mut prev = [0u64; 3];
    let mut p = 0usize;
    let mut viol = 0u64;
    let mut step = |e: &Sym| {
        let d = read8(col, p) & e.mask;
        p += e.width;
        let a = prev[e.stream].wrapping_add(unzigzag(d).cast_unsigned());
        prev[e.stream] = a;
        viol |= a & e.phys;
        Access { addr: a, ..e.tmpl }
    };
    if nsym == 1 {
        let e = table[0];
        out.accesses.extend((0..n).map(|_| step(&e)));
    } else {
        out.accesses.extend(syms.iter().map(|&s| step(&table[usize::from(s)])));
    }
    if viol != 0 {
        let k = out.accesses[start..]
            .iter()
            .position(|a| matches!(a.addr_kind(), 2 | 3) && a.addr & PHYS_HIGH != 0)
            .unwrap_or(0);
        return Err(pos.corrupt(
            col_at,
            Corruption::PhysAddr { index: (start + k) as u64, addr: out.accesses[start + k].addr },
        ));
    }
    if timed {
        let len = c.varint("time column length")?;
        let tcol_at = c.at;
        let tcol = c.take(len, "time column")?;
        out.times.resize(start, 0);
        out.times.reserve(n);
        let mut t = 0u64;
        let mut i = 0usize;
        for _ in 0..n {
            let (d, l) = varint_at(tcol, i).ok_or_else(|| {
                pos.corrupt(
                    tcol_at + i,
                    Corruption::ColumnLength { what: "time", declared: len, found: i as u64 },
                )
            })?;
            i += l;
            t = t.wrapping_add(unzigzag(d).cast_unsigned());
            out.times.push(t);
        }
        if i != tcol.len() {
            return Err(pos.corrupt(
                tcol_at + i,
                Corruption::ColumnLength { what: "time", declared: len, found: i as u64 },
            ));
        }
    }
    Ok(())
}

fn decode_control(
    c: &mut Cur<'_>,
    tag: u64,
    tag_at: usize,
    out: &Frame,
) -> Result<Record, CctError> {
    let (pos, minor) = (c.pos, c.minor);
    Ok(match tag {
        ITEM_EVENT => {
            let time =
                if c.bool("time presence")? { Some(Cycles::new(c.varint("time")?)) } else { None };
            let agent_at = c.at;
            let idx = c.varint("agent index")?;
            let agent = usize::try_from(idx).ok().and_then(|i| out.agents.get(i)).copied();
            let agent = agent.ok_or_else(|| {
                pos.corrupt(
                    agent_at,
                    Corruption::OutOfRange {
                        what: "agent index",
                        value: idx,
                        allowed: "below the frame's agent count",
                    },
                )
            })?;
            let event = c.with(Event::decode).map_err(|(at, e)| pos.vocab(at, e, minor))?;
            Record::Event(TimedEvent { time, agent, event })
        }
        ITEM_SETTING => {
            let section = c.string("setting section")?;
            let n = c.count("setting argument count", 1)?;
            let mut args = Vec::with_capacity(n);
            for _ in 0..n {
                args.push(c.string("setting argument")?);
            }
            let n = c.count("setting pair count", 2)?;
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let k = c.string("setting key")?;
                let v = c.string("setting value")?;
                pairs.push((k, v));
            }
            Record::Setting(Setting { section, args, pairs })
        }
        ITEM_STATE => {
            Record::State(c.with(StateItem::decode).map_err(|(at, e)| pos.vocab(at, e, minor))?)
        }
        ITEM_EXPECT => {
            let at_end = c.bool("expect at-end flag")?;
            let check = c.with(Check::decode).map_err(|(at, e)| pos.vocab(at, e, minor))?;
            Record::Expect { at_end, check }
        }
        ITEM_PROGRAM_BEGIN => Record::ProgramBegin(c.string("program name")?),
        ITEM_PROGRAM_END => Record::ProgramEnd,
        _ => return Err(pos.unknown(tag_at, "record tag", tag, minor)),
    })
}

/// Encoded size of the largest single control record the writer accepts.
pub(crate) const MAX_RECORD_BYTES: usize = 16 << 20;
/// A frame is cut before its payload passes this (half the reader's limit, so the agent table
/// and one more record always fit).
const SOFT_FRAME_BYTES: usize = 32 << 20;

/// Builds one frame payload from records.
#[derive(Debug)]
pub(crate) struct FrameBuilder {
    agents: Vec<Agent>,
    agent_map: BTreeMap<Agent, u16>,
    last_agent: Option<(Agent, u16)>,
    body: Vec<u8>,
    records: u32,
    blk: Block,
    scratch: Vec<u8>,
}

/// The access block being built.
#[derive(Debug)]
struct Block {
    n: u32,
    timed: bool,
    syms: Vec<(u8, u32, u16, u8)>,
    /// Direct-mapped cache from packed symbol key to index (+1; 0 = empty).
    cache: Box<[(u64, u16)]>,
    sym_col: Vec<u8>,
    addr_col: Vec<u8>,
    time_col: Vec<u8>,
    prev: [u64; 3],
    prev_time: u64,
}

const CACHE: usize = 1024;

impl Block {
    fn new() -> Block {
        Block {
            n: 0,
            timed: false,
            syms: Vec::new(),
            cache: vec![(0, 0); CACHE].into_boxed_slice(),
            sym_col: Vec::new(),
            addr_col: Vec::new(),
            time_col: Vec::new(),
            prev: [0; 3],
            prev_time: 0,
        }
    }

    fn reset(&mut self) {
        self.n = 0;
        self.syms.clear();
        self.cache.fill((0, 0));
        self.sym_col.clear();
        self.addr_col.clear();
        self.time_col.clear();
        self.prev = [0; 3];
        self.prev_time = 0;
    }

    fn bytes(&self) -> usize {
        self.sym_col.len() + self.addr_col.len() + self.time_col.len() + self.syms.len() * 9 + 32
    }

    /// The symbol of a key, adding it; `None` if the table is full.
    #[inline]
    fn symbol(&mut self, code: u8, size: u32, agent: u16, class: u8) -> Option<u8> {
        let key = u64::from(code)
            | (u64::from(size) << 8)
            | (u64::from(agent) << 40)
            | (u64::from(class) << 56);
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54;
        // 10 bits of hash index a 1024-entry table.
        #[allow(clippy::cast_possible_truncation)]
        let slot = h as usize;
        let (k, v) = self.cache[slot];
        if v != 0 && k == key {
            return u8::try_from(v - 1).ok();
        }
        let idx = match self.syms.iter().position(|&s| s == (code, size, agent, class)) {
            Some(i) => i,
            None => {
                if self.syms.len() == MAX_SYMBOLS {
                    return None;
                }
                self.syms.push((code, size, agent, class));
                self.syms.len() - 1
            }
        };
        // idx < 256.
        #[allow(clippy::cast_possible_truncation)]
        {
            self.cache[slot] = (key, idx as u16 + 1);
            Some(idx as u8)
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        put_varint(out, ITEM_ACCESSES);
        put_varint(out, self.n.into());
        out.push(if self.timed { FLAG_TIMED } else { 0 });
        put_varint(out, self.syms.len() as u64);
        for &(code, size, agent, class) in &self.syms {
            out.push(code);
            put_varint(out, size.into());
            put_varint(out, agent.into());
            out.push(class);
        }
        if self.syms.len() > 1 {
            out.extend_from_slice(&self.sym_col);
        }
        put_varint(out, self.addr_col.len() as u64);
        out.extend_from_slice(&self.addr_col);
        if self.timed {
            put_varint(out, self.time_col.len() as u64);
            out.extend_from_slice(&self.time_col);
        }
    }
}

/// What pushing a record needs from the writer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    /// Stored.
    Done,
    /// The frame is full: flush it and push the record again.
    Full,
}

impl FrameBuilder {
    pub fn new() -> FrameBuilder {
        FrameBuilder {
            agents: Vec::new(),
            agent_map: BTreeMap::new(),
            last_agent: None,
            body: Vec::new(),
            records: 0,
            blk: Block::new(),
            scratch: Vec::new(),
        }
    }

    pub fn records(&self) -> u32 {
        self.records
    }

    /// Agent index, or `None` if the table is full.
    fn agent(&mut self, a: Agent) -> Option<u16> {
        if let Some((la, i)) = self.last_agent
            && la == a
        {
            return Some(i);
        }
        let i = match self.agent_map.get(&a) {
            Some(&i) => i,
            None => {
                if self.agents.len() == MAX_AGENTS {
                    return None;
                }
                let i = u16::try_from(self.agents.len()).ok()?;
                self.agents.push(a);
                self.agent_map.insert(a, i);
                i
            }
        };
        self.last_agent = Some((a, i));
        Some(i)
    }

    fn close_block(&mut self) {
        if self.blk.n > 0 {
            self.blk.write(&mut self.body);
            self.blk.reset();
        }
    }

    fn size(&self) -> usize {
        self.body.len() + self.blk.bytes()
    }

    /// Add a record. `Err(size)` if one record alone is larger than [`MAX_RECORD_BYTES`].
    pub fn push(&mut self, r: &Record, frame_records: u32) -> Result<Push, u64> {
        if self.records >= frame_records || self.size() > SOFT_FRAME_BYTES {
            return Ok(Push::Full);
        }
        if let Record::Event(te) = r
            && let Some((code, addr, size)) = access_code(&te.event)
        {
            let Some(agent) = self.agent(te.agent) else { return Ok(Push::Full) };
            if self.blk.n > 0 && self.blk.timed != te.time.is_some() {
                self.close_block();
            }
            let s = stream(code & 7);
            let a = addr.raw();
            let mut d = zigzag(a.wrapping_sub(self.blk.prev[s]).cast_signed());
            let mut class = width_class(d);
            let sym = match self.blk.symbol(code, size, agent, class) {
                Some(x) => x,
                None => {
                    // A new block starts from zero.
                    self.close_block();
                    d = zigzag(a.cast_signed());
                    class = width_class(d);
                    self.blk.symbol(code, size, agent, class).unwrap_or(0)
                }
            };
            let b = &mut self.blk;
            b.timed = te.time.is_some();
            b.n += 1;
            b.sym_col.push(sym);
            b.addr_col.extend_from_slice(&d.to_le_bytes()[..1 << class]);
            b.prev[s] = a;
            if let Some(t) = te.time {
                let t = t.get();
                put_varint(&mut b.time_col, zigzag(t.wrapping_sub(b.prev_time).cast_signed()));
                b.prev_time = t;
            }
            self.records += 1;
            return Ok(Push::Done);
        }
        self.scratch.clear();
        let mut scratch = std::mem::take(&mut self.scratch);
        let ok = self.encode_control(r, &mut scratch);
        let res = if !ok {
            Ok(Push::Full)
        } else if scratch.len() > MAX_RECORD_BYTES {
            Err(scratch.len() as u64)
        } else if self.records > 0 && self.size() + scratch.len() > SOFT_FRAME_BYTES {
            Ok(Push::Full)
        } else {
            self.close_block();
            self.body.extend_from_slice(&scratch);
            self.records += 1;
            Ok(Push::Done)
        };
        self.scratch = scratch;
        res
    }

    /// Encode a non-access record; `false` if the agent table is full.
    fn encode_control(&mut self, r: &Record, out: &mut Vec<u8>) -> bool {
        match r {
            Record::Event(te) => {
                let Some(agent) = self.agent(te.agent) else { return false };
                put_varint(out, ITEM_EVENT);
                match te.time {
                    None => out.push(0),
                    Some(t) => {
                        out.push(1);
                        put_varint(out, t.get());
                    }
                }
                put_varint(out, agent.into());
                te.event.encode(out);
            }
            Record::Setting(s) => {
                put_varint(out, ITEM_SETTING);
                put_str(out, &s.section);
                put_varint(out, s.args.len() as u64);
                for a in &s.args {
                    put_str(out, a);
                }
                put_varint(out, s.pairs.len() as u64);
                for (k, v) in &s.pairs {
                    put_str(out, k);
                    put_str(out, v);
                }
            }
            Record::State(st) => {
                put_varint(out, ITEM_STATE);
                st.encode(out);
            }
            Record::Expect { at_end, check } => {
                put_varint(out, ITEM_EXPECT);
                out.push(u8::from(*at_end));
                check.encode(out);
            }
            Record::ProgramBegin(name) => {
                put_varint(out, ITEM_PROGRAM_BEGIN);
                put_str(out, name);
            }
            Record::ProgramEnd => put_varint(out, ITEM_PROGRAM_END),
        }
        true
    }

    /// Finish the frame: the payload and its record count; the builder is ready for the next.
    pub fn finish(&mut self, payload: &mut Vec<u8>) -> u32 {
        self.close_block();
        payload.clear();
        put_varint(payload, self.agents.len() as u64);
        for a in &self.agents {
            a.put(payload);
        }
        payload.extend_from_slice(&self.body);
        let n = self.records;
        self.body.clear();
        self.agents.clear();
        self.agent_map.clear();
        self.last_agent = None;
        self.records = 0;
        debug_assert!(n <= MAX_FRAME_RECORDS);
        n
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn fast_varint_matches(v in any::<u64>(), pad in 0usize..12) {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            b.extend(std::iter::repeat_n(0xffu8, pad));
            let (x, l) = varint_at(&b, 0).unwrap();
            prop_assert_eq!(x, v);
            let mut s = b.as_slice();
            get_varint(&mut s).unwrap();
            prop_assert_eq!(l, b.len() - s.len());
        }
    }
}
