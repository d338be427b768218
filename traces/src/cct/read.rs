//! The `.cct` readers: [`Reader`] streams any `Read` a frame at a time; [`TraceSlice`] decodes
//! a trace held in memory, frames in parallel, through the index.

use super::error::{CctError, Corruption, FramePos, IndexProblem, io_at};
use super::format::{
    BLOCK_HEADER, BlockHeader, CODEC_ZSTD, Encoding, FILE_HEADER, FRAME_MAGIC, FileHeader,
    FrameEntry, INDEX_ENTRY, MAGIC, Metadata, TRAILER, parse_trailer,
};
use super::frame::{Frame, decode_payload};
use rayon::prelude::*;
use sim_core::Record;
use std::io::{self, Read};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// Scratch space for decoding frames: the decompression buffer and a zstd context. One per
/// thread; reuse it across frames.
pub struct FrameDecoder {
    raw: Vec<u8>,
    dctx: Option<zstd::bulk::Decompressor<'static>>,
}

impl std::fmt::Debug for FrameDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameDecoder").field("raw_capacity", &self.raw.capacity()).finish()
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder with empty buffers.
    pub fn new() -> FrameDecoder {
        FrameDecoder { raw: Vec::new(), dctx: zstd::bulk::Decompressor::new().ok() }
    }

    /// Check, decompress and decode one frame whose header is `h` and stored payload `stored`.
    fn open(
        &mut self,
        h: &BlockHeader,
        stored: &[u8],
        pos: FramePos,
        minor: u16,
        out: &mut Frame,
    ) -> Result<(), CctError> {
        let computed = h.compute(stored);
        if computed != h.checksum {
            return Err(CctError::Checksum {
                offset: pos.frame_offset,
                what: format!("frame {}", pos.frame),
                stored: h.checksum,
                computed,
            });
        }
        let payload: &[u8] = if h.codec == CODEC_ZSTD {
            let n = h.raw_len as usize;
            if self.raw.len() < n {
                self.raw.resize(n, 0);
            }
            let dst = &mut self.raw[..n];
            let got = match &mut self.dctx {
                Some(d) => d.decompress_to_buffer(stored, dst),
                None => zstd::bulk::decompress_to_buffer(stored, dst),
            };
            let got = got.map_err(|e| CctError::Decompress {
                offset: pos.frame_offset,
                frame: pos.frame,
                reason: e.to_string(),
            })?;
            if got != n {
                return Err(CctError::Decompress {
                    offset: pos.frame_offset,
                    frame: pos.frame,
                    reason: format!("{got} bytes decompressed, the header declares {n}"),
                });
            }
            &self.raw[..n]
        } else {
            stored
        };
        decode_payload(payload, h.records, pos, minor, out)
    }
}

/// Statistics a [`Reader`] gathers as it goes (for `ccsim trace info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadStats {
    /// Frames read.
    pub frames: u64,
    /// Frames stored zstd-compressed.
    pub zstd_frames: u64,
    /// Payload bytes as stored.
    pub stored_bytes: u64,
    /// Payload bytes after decompression.
    pub raw_bytes: u64,
    /// Bytes of the whole file read so far.
    pub file_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Frames,
    Done,
    Failed,
}

/// Reads a `.cct` stream record by record, holding one frame in memory.
///
/// Iterating yields every [`Record`] in file order; after the last frame the reader checks the
/// index and trailer against what it read. The first error ends the iteration. For bulk decode
/// without building a `Record` per access, use [`Reader::next_frame`].
pub struct Reader<R: Read> {
    r: R,
    offset: u64,
    meta: Metadata,
    header: FileHeader,
    stored: Vec<u8>,
    dec: FrameDecoder,
    frame: Frame,
    ai: usize,
    ci: usize,
    next_number: u32,
    records: u64,
    expected_index: Xxh3,
    stats: ReadStats,
    state: State,
}

impl<R: Read> std::fmt::Debug for Reader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("offset", &self.offset)
            .field("metadata", &self.meta)
            .field("frame", &self.frame.number)
            .finish_non_exhaustive()
    }
}

/// Read until `buf` is full or the input ends; the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8], offset: u64) -> Result<usize, CctError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CctError::Io { offset: offset + n as u64, source: e }),
        }
    }
    Ok(n)
}

/// Validate the first bytes of a file (any length up to [`FILE_HEADER`]).
fn check_prefix(b: &[u8]) -> Result<(), CctError> {
    if b.is_empty() {
        return Err(CctError::Empty);
    }
    let n = b.len().min(MAGIC.len());
    if b[..n] != MAGIC[..n] {
        return Err(CctError::BadMagic { offset: 0, found: b[..n].to_vec() });
    }
    if b.len() >= 12 {
        let major = u16::from_le_bytes([b[8], b[9]]);
        if major != sim_core::FORMAT_MAJOR {
            return Err(CctError::UnsupportedVersion {
                offset: 8,
                major,
                minor: u16::from_le_bytes([b[10], b[11]]),
            });
        }
    }
    if b.len() < FILE_HEADER {
        return Err(CctError::Truncated {
            offset: 0,
            what: "file header",
            needed: FILE_HEADER as u64,
            available: b.len() as u64,
        });
    }
    Ok(())
}

/// Read `n` bytes into `buf` (cleared), growing it only as data arrives, so a length field
/// that lies about a short file allocates nothing big.
fn read_exactly(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    n: u32,
    offset: u64,
    what: &'static str,
) -> Result<(), CctError> {
    buf.clear();
    let got = r.take(n.into()).read_to_end(buf).map_err(io_at(offset))?;
    if got < n as usize {
        return Err(CctError::Truncated { offset, what, needed: n.into(), available: got as u64 });
    }
    Ok(())
}

impl<R: Read> Reader<R> {
    /// Read and check the header (magic, version, checksum, metadata).
    ///
    /// # Errors
    /// [`CctError::Empty`], [`CctError::BadMagic`], [`CctError::UnsupportedVersion`],
    /// [`CctError::Truncated`], [`CctError::Checksum`], [`CctError::Metadata`] or
    /// [`CctError::Io`].
    pub fn new(mut r: R) -> Result<Self, CctError> {
        let mut fixed = [0u8; FILE_HEADER];
        let n = read_full(&mut r, &mut fixed, 0)?;
        check_prefix(&fixed[..n])?;
        let header = FileHeader::decode(&fixed)?;
        let mut meta = Vec::new();
        read_exactly(&mut r, &mut meta, header.meta_len, FILE_HEADER as u64, "metadata")?;
        let md = header.finish(&fixed, &meta)?;
        let offset = (FILE_HEADER + meta.len()) as u64;
        Ok(Reader {
            r,
            offset,
            meta: md,
            header,
            stored: Vec::new(),
            dec: FrameDecoder::new(),
            frame: Frame::default(),
            ai: 0,
            ci: 0,
            next_number: 0,
            records: 0,
            expected_index: Xxh3::new(),
            stats: ReadStats { file_bytes: offset, ..ReadStats::default() },
            state: State::Frames,
        })
    }

    /// The metadata from the header.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The encoding the header records.
    pub fn encoding(&self) -> Encoding {
        self.header.encoding
    }

    /// `(major, minor)` format version of the file.
    pub fn version(&self) -> (u16, u16) {
        (sim_core::FORMAT_MAJOR, self.header.minor)
    }

    /// What has been read so far.
    pub fn stats(&self) -> ReadStats {
        self.stats
    }

    /// Decode the next whole frame into columns, without building a [`Record`] per access.
    /// What the iterator had not yet yielded of the current frame is skipped, and the iterator
    /// goes on after the frame returned here. `Ok(None)` after the last frame, once the index
    /// and trailer have been checked.
    ///
    /// # Errors
    /// Any [`CctError`] about the frame, the index or the trailer.
    pub fn next_frame(&mut self) -> Result<Option<&Frame>, CctError> {
        if !self.advance()? {
            return Ok(None);
        }
        self.ai = self.frame.accesses.len();
        self.ci = self.frame.controls.len();
        Ok(Some(&self.frame))
    }

    /// Load the next frame with the record cursor at its start: `false` at the end.
    fn advance(&mut self) -> Result<bool, CctError> {
        self.frame.clear();
        self.ai = 0;
        self.ci = 0;
        match self.state {
            State::Done | State::Failed => return Ok(false),
            State::Frames => {}
        }
        match self.read_block() {
            Ok(true) => Ok(true),
            Ok(false) => {
                self.state = State::Done;
                Ok(false)
            }
            Err(e) => {
                // Nothing of a damaged frame is yielded.
                self.frame.clear();
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    /// Read the next block: `true` for a frame (now in `self.frame`), `false` after the index.
    fn read_block(&mut self) -> Result<bool, CctError> {
        let off = self.offset;
        let mut hb = [0u8; BLOCK_HEADER];
        let n = read_full(&mut self.r, &mut hb, off)?;
        if n < BLOCK_HEADER {
            return Err(CctError::Truncated {
                offset: off,
                what: if n == 0 { "trace: no index after the last frame" } else { "block header" },
                needed: BLOCK_HEADER as u64,
                available: n as u64,
            });
        }
        let h = BlockHeader::parse(&hb, off, self.header.minor)?;
        let payload_off = off + BLOCK_HEADER as u64;
        if h.is_index() {
            read_exactly(&mut self.r, &mut self.stored, h.stored_len, payload_off, "index")?;
            self.offset = payload_off + u64::from(h.stored_len);
            self.stats.file_bytes = self.offset;
            self.finish_index(&h, off)?;
            return Ok(false);
        }
        if h.number != self.next_number {
            return Err(CctError::Corrupt {
                offset: off + 8,
                context: String::new(),
                kind: Corruption::FrameNumber { expected: self.next_number, found: h.number },
            });
        }
        read_exactly(&mut self.r, &mut self.stored, h.stored_len, payload_off, "frame payload")?;
        self.offset = payload_off + u64::from(h.stored_len);
        let pos = FramePos { frame_offset: off, frame: h.number, raw: h.codec != CODEC_ZSTD };
        self.dec.open(&h, &self.stored, pos, self.header.minor, &mut self.frame)?;
        self.frame.first_record = self.records;
        let entry = FrameEntry {
            offset: off,
            first_record: self.records,
            records: h.records,
            stored_len: h.stored_len,
        };
        self.expected_index.update(&entry.to_bytes());
        self.records += u64::from(h.records);
        self.next_number += 1;
        self.stats.frames += 1;
        self.stats.zstd_frames += u64::from(h.codec == CODEC_ZSTD);
        self.stats.stored_bytes += u64::from(h.stored_len);
        self.stats.raw_bytes += u64::from(h.raw_len);
        self.stats.file_bytes = self.offset;
        Ok(true)
    }

    fn finish_index(&mut self, h: &BlockHeader, off: u64) -> Result<(), CctError> {
        let computed = h.compute(&self.stored);
        if computed != h.checksum {
            return Err(CctError::Checksum {
                offset: off,
                what: "index".into(),
                stored: h.checksum,
                computed,
            });
        }
        let expected_len = u64::from(self.next_number) * INDEX_ENTRY as u64;
        if h.number != self.next_number
            || self.stored.len() as u64 != expected_len
            || xxh3_64(&self.stored) != self.expected_index.digest()
        {
            return Err(CctError::BadIndex { offset: off, kind: IndexProblem::Mismatch });
        }
        let toff = self.offset;
        let mut tb = [0u8; TRAILER];
        let n = read_full(&mut self.r, &mut tb, toff)?;
        if n < TRAILER {
            return Err(CctError::Truncated {
                offset: toff,
                what: "trailer",
                needed: TRAILER as u64,
                available: n as u64,
            });
        }
        let (index_offset, total) = parse_trailer(&tb, toff)?;
        if index_offset != off {
            return Err(CctError::BadIndex {
                offset: toff,
                kind: IndexProblem::OutsideFile { index_offset, file_len: toff + TRAILER as u64 },
            });
        }
        if total != self.records {
            return Err(CctError::RecordCount {
                offset: toff,
                what: "trailer".into(),
                declared: total,
                found: self.records,
            });
        }
        self.offset += TRAILER as u64;
        self.stats.file_bytes = self.offset;
        let mut extra = [0u8; 1];
        if read_full(&mut self.r, &mut extra, self.offset)? != 0 {
            return Err(CctError::Corrupt {
                offset: self.offset,
                context: String::new(),
                kind: Corruption::TrailingData,
            });
        }
        Ok(())
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<Record, CctError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((pos, _)) = self.frame.controls.get(self.ci)
                && *pos as usize == self.ai
            {
                let r = std::mem::replace(&mut self.frame.controls[self.ci].1, Record::ProgramEnd);
                self.ci += 1;
                return Some(Ok(r));
            }
            if let Some(r) = self.frame.access_record(self.ai) {
                self.ai += 1;
                return Some(Ok(r));
            }
            match self.advance() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A whole `.cct` trace in memory (read or memory-mapped by the caller), opened through its
/// index: frames can be decoded in any order and in parallel.
#[derive(Debug)]
pub struct TraceSlice<'a> {
    bytes: &'a [u8],
    meta: Metadata,
    header: FileHeader,
    frames: Vec<FrameEntry>,
    total: u64,
}

impl<'a> TraceSlice<'a> {
    /// Check the header, trailer and index (not the frames: each is checked when decoded).
    ///
    /// # Errors
    /// As [`Reader::new`], plus [`CctError::BadIndex`], [`CctError::RecordCount`] and
    /// [`CctError::Truncated`] for a damaged index or trailer.
    pub fn new(bytes: &'a [u8]) -> Result<Self, CctError> {
        check_prefix(&bytes[..bytes.len().min(FILE_HEADER)])?;
        let mut fixed = [0u8; FILE_HEADER];
        fixed.copy_from_slice(&bytes[..FILE_HEADER]);
        let header = FileHeader::decode(&fixed)?;
        let meta_end = FILE_HEADER as u64 + u64::from(header.meta_len);
        let len = bytes.len() as u64;
        if len < meta_end {
            return Err(CctError::Truncated {
                offset: FILE_HEADER as u64,
                what: "metadata",
                needed: header.meta_len.into(),
                available: len - FILE_HEADER as u64,
            });
        }
        // meta_end <= len, a usize.
        let meta_end_u = usize::try_from(meta_end).unwrap_or(usize::MAX);
        let meta = header.finish(&fixed, &bytes[FILE_HEADER..meta_end_u])?;
        let min = meta_end + (BLOCK_HEADER + TRAILER) as u64;
        if len < min {
            return Err(CctError::Truncated {
                offset: meta_end,
                what: "index and trailer",
                needed: min - meta_end,
                available: len - meta_end,
            });
        }
        let toff = len - TRAILER as u64;
        let mut tb = [0u8; TRAILER];
        tb.copy_from_slice(&bytes[bytes.len() - TRAILER..]);
        let (index_offset, total) = parse_trailer(&tb, toff)?;
        if index_offset < meta_end || index_offset > toff - BLOCK_HEADER as u64 {
            return Err(CctError::BadIndex {
                offset: toff,
                kind: IndexProblem::OutsideFile { index_offset, file_len: len },
            });
        }
        let io = usize::try_from(index_offset).unwrap_or(usize::MAX);
        let mut hb = [0u8; BLOCK_HEADER];
        hb.copy_from_slice(&bytes[io..io + BLOCK_HEADER]);
        let h = BlockHeader::parse(&hb, index_offset, header.minor)?;
        let stored = &bytes[io + BLOCK_HEADER..bytes.len() - TRAILER];
        if !h.is_index() {
            return Err(CctError::Corrupt {
                offset: index_offset,
                context: "trailer's index offset: ".into(),
                kind: Corruption::BlockMagic { expected: "the index (CCTX)", found: FRAME_MAGIC },
            });
        }
        if stored.len() as u64 != u64::from(h.stored_len) {
            return Err(CctError::Truncated {
                offset: index_offset,
                what: "index",
                needed: (BLOCK_HEADER as u64) + u64::from(h.stored_len),
                available: (BLOCK_HEADER + stored.len()) as u64,
            });
        }
        let computed = h.compute(stored);
        if computed != h.checksum {
            return Err(CctError::Checksum {
                offset: index_offset,
                what: "index".into(),
                stored: h.checksum,
                computed,
            });
        }
        if !stored.len().is_multiple_of(INDEX_ENTRY)
            || (stored.len() / INDEX_ENTRY) as u64 != u64::from(h.number)
        {
            return Err(CctError::BadIndex {
                offset: index_offset,
                kind: IndexProblem::Ragged { len: stored.len() as u64, entry: INDEX_ENTRY as u64 },
            });
        }
        let mut frames = Vec::with_capacity(stored.len() / INDEX_ENTRY);
        let mut next = meta_end;
        let mut first = 0u64;
        for (i, chunk) in stored.chunks_exact(INDEX_ENTRY).enumerate() {
            let e = FrameEntry::from_bytes(chunk);
            let entry = i as u64;
            let end = e.offset.checked_add(e.len());
            if e.offset < meta_end || end.is_none_or(|end| end > index_offset) {
                return Err(CctError::BadIndex {
                    offset: index_offset,
                    kind: IndexProblem::EntryOutside {
                        entry,
                        offset: e.offset,
                        len: e.len(),
                        start: meta_end,
                        end: index_offset,
                    },
                });
            }
            if e.offset != next {
                return Err(CctError::BadIndex {
                    offset: index_offset,
                    kind: IndexProblem::Overlap { entry, offset: e.offset },
                });
            }
            if e.first_record != first {
                return Err(CctError::BadIndex {
                    offset: index_offset,
                    kind: IndexProblem::FirstRecord {
                        entry,
                        found: e.first_record,
                        expected: first,
                    },
                });
            }
            next = e.offset + e.len();
            first += u64::from(e.records);
            frames.push(e);
        }
        if next != index_offset {
            return Err(CctError::BadIndex { offset: index_offset, kind: IndexProblem::Mismatch });
        }
        if first != total {
            return Err(CctError::RecordCount {
                offset: toff,
                what: "trailer".into(),
                declared: total,
                found: first,
            });
        }
        Ok(TraceSlice { bytes, meta, header, frames, total })
    }

    /// The metadata from the header.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The encoding the header records.
    pub fn encoding(&self) -> Encoding {
        self.header.encoding
    }

    /// The frames, from the index.
    pub fn frames(&self) -> &[FrameEntry] {
        &self.frames
    }

    /// Records in the trace, from the trailer (checked against the index).
    pub fn records(&self) -> u64 {
        self.total
    }

    /// Decode frame `i` into `out`.
    ///
    /// # Errors
    /// Any [`CctError`] about the frame; [`CctError::BadIndex`] if the frame does not match its
    /// index entry. An `i` past the last frame gives [`IndexProblem::Mismatch`].
    pub fn decode_frame(
        &self,
        i: usize,
        dec: &mut FrameDecoder,
        out: &mut Frame,
    ) -> Result<(), CctError> {
        let Some(e) = self.frames.get(i) else {
            return Err(CctError::BadIndex { offset: 0, kind: IndexProblem::Mismatch });
        };
        // Entries were checked to lie inside the slice.
        let off = usize::try_from(e.offset).unwrap_or(usize::MAX);
        let mut hb = [0u8; BLOCK_HEADER];
        hb.copy_from_slice(&self.bytes[off..off + BLOCK_HEADER]);
        let h = BlockHeader::parse(&hb, e.offset, self.header.minor)?;
        let number = u32::try_from(i).unwrap_or(u32::MAX);
        if h.is_index()
            || h.number != number
            || h.records != e.records
            || h.stored_len != e.stored_len
        {
            return Err(CctError::BadIndex { offset: e.offset, kind: IndexProblem::Mismatch });
        }
        let start = off + BLOCK_HEADER;
        let stored = &self.bytes[start..start + h.stored_len as usize];
        let pos = FramePos { frame_offset: e.offset, frame: number, raw: h.codec != CODEC_ZSTD };
        dec.open(&h, stored, pos, self.header.minor, out)?;
        out.first_record = e.first_record;
        Ok(())
    }

    /// Decode every frame on the rayon pool and map each with `f`; results in frame order.
    /// Each thread reuses one decoder and one [`Frame`].
    ///
    /// # Errors
    /// The first (in frame order) [`CctError`] of any frame.
    pub fn par_map_frames<T, F>(&self, f: F) -> Result<Vec<T>, CctError>
    where
        T: Send,
        F: Fn(&Frame) -> T + Sync + Send,
    {
        (0..self.frames.len())
            .into_par_iter()
            .map_init(
                || (FrameDecoder::new(), Frame::default()),
                |(dec, frame), i| {
                    self.decode_frame(i, dec, frame)?;
                    Ok(f(frame))
                },
            )
            .collect()
    }

    /// Every record in order, decoding one frame at a time on the calling thread.
    pub fn records_iter(&self) -> impl Iterator<Item = Result<Record, CctError>> + '_ {
        let mut dec = FrameDecoder::new();
        let mut frame = Frame::default();
        let mut i = 0usize;
        let mut buf: std::vec::IntoIter<Record> = Vec::new().into_iter();
        let mut failed = false;
        std::iter::from_fn(move || {
            loop {
                if let Some(r) = buf.next() {
                    return Some(Ok(r));
                }
                if failed || i >= self.frames.len() {
                    return None;
                }
                if let Err(e) = self.decode_frame(i, &mut dec, &mut frame) {
                    failed = true;
                    return Some(Err(e));
                }
                i += 1;
                buf = frame.records().collect::<Vec<_>>().into_iter();
            }
        })
    }
}
