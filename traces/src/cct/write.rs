//! The `.cct` writer.

use super::error::{CctError, Unwritable, io_at};
use super::format::{
    BLOCK_HEADER, BlockHeader, CODEC_NONE, CODEC_ZSTD, Encoding, FRAME_MAGIC, FileHeader,
    FrameEntry, INDEX_MAGIC, MAX_FRAME_RECORDS, MAX_PAYLOAD, Metadata, WRITE_MINOR, trailer,
};
use super::frame::{FrameBuilder, MAX_RECORD_BYTES, Push};
use rayon::prelude::*;
use sim_core::Record;
use std::io::Write;

/// Records per frame of the default encoding: 256 Ki records compress 5–10 % smaller than
/// 64 Ki at the same decode speed, and still give a 10 M-record trace 38 frames to share
/// between cores (docs/performance.md "Trace decode").
pub const DEFAULT_FRAME_RECORDS: u32 = 1 << 18;
/// Records per frame of the uncompressed encoding: 64 Ki keeps a frame's decoded accesses
/// (1 MiB) in L2.
pub const RAW_FRAME_RECORDS: u32 = 1 << 16;
/// Records per frame of the small encoding: zstd finds more repeats in longer frames.
pub const SMALL_FRAME_RECORDS: u32 = 1 << 20;
/// zstd level of [`Encoding::Default`] (chosen on measurement: docs/performance.md).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// zstd level of [`Encoding::Small`] (chosen on measurement: docs/performance.md).
pub const SMALL_ZSTD_LEVEL: i32 = 19;

/// How a [`Writer`] stores frames. [`WriterOptions::for_encoding`] gives the presets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterOptions {
    /// Recorded in the file header (informational: each frame names its own codec).
    pub encoding: Encoding,
    /// zstd level for frame payloads; `None` stores them uncompressed.
    pub zstd_level: Option<i32>,
    /// Records per frame (1 to 1,048,576).
    pub frame_records: u32,
    /// Frames compressed in parallel per batch (rayon); 1 compresses on the calling thread.
    /// The output is identical whatever the value.
    pub parallel_frames: usize,
}

impl WriterOptions {
    /// The preset of an encoding.
    pub fn for_encoding(encoding: Encoding) -> WriterOptions {
        let threads = rayon::current_num_threads().max(1);
        match encoding {
            Encoding::Default => WriterOptions {
                encoding,
                zstd_level: Some(DEFAULT_ZSTD_LEVEL),
                frame_records: DEFAULT_FRAME_RECORDS,
                parallel_frames: 2 * threads,
            },
            Encoding::Small => WriterOptions {
                encoding,
                zstd_level: Some(SMALL_ZSTD_LEVEL),
                frame_records: SMALL_FRAME_RECORDS,
                parallel_frames: threads,
            },
            Encoding::Uncompressed => WriterOptions {
                encoding,
                zstd_level: None,
                frame_records: RAW_FRAME_RECORDS,
                parallel_frames: 1,
            },
        }
    }
}

/// A frame payload waiting to be compressed and written.
#[derive(Debug)]
struct Pending {
    raw: Vec<u8>,
    records: u32,
}

/// Writes records to a `.cct` stream: header at [`Writer::new`], frames as they fill, the index
/// and trailer at [`Writer::finish`]. Memory is a few frames, whatever the trace length.
///
/// Call [`Writer::finish`]: a writer dropped without it leaves a file with no index, which
/// readers reject as truncated (after yielding the complete frames).
///
/// ```
/// use traces::cct::{Encoding, Metadata, Reader, Writer};
/// use sim_core::{Address, Agent, Event, Hva, Record, TimedEvent};
///
/// let rec = Record::Event(TimedEvent {
///     time: None,
///     agent: Agent::host(0),
///     event: Event::Load { addr: Address::Hva(Hva::new(0x1000)), size: 8 },
/// });
/// let mut w = Writer::new(Vec::new(), &Metadata::default(), Encoding::Default)?;
/// w.write(&rec)?;
/// let bytes = w.finish()?;
/// let back: Vec<Record> = Reader::new(bytes.as_slice())?.collect::<Result<_, _>>()?;
/// assert_eq!(back, [rec]);
/// # Ok::<(), traces::cct::CctError>(())
/// ```
#[derive(Debug)]
pub struct Writer<W: Write> {
    w: W,
    offset: u64,
    opts: WriterOptions,
    builder: FrameBuilder,
    pending: Vec<Pending>,
    spare: Vec<Vec<u8>>,
    index: Vec<FrameEntry>,
    total: u64,
}

impl<W: Write> Writer<W> {
    /// Start a trace with the preset of `encoding`, writing the header now.
    ///
    /// # Errors
    /// [`CctError::Io`] if the header cannot be written; [`CctError::TooLarge`] if the
    /// metadata's JSON exceeds 1 MiB.
    pub fn new(w: W, meta: &Metadata, encoding: Encoding) -> Result<Self, CctError> {
        Self::with_options(w, meta, WriterOptions::for_encoding(encoding))
    }

    /// Start a trace with explicit options.
    ///
    /// # Errors
    /// As [`Writer::new`], plus [`CctError::Unwritable`] for options out of range.
    pub fn with_options(mut w: W, meta: &Metadata, opts: WriterOptions) -> Result<Self, CctError> {
        if opts.frame_records == 0 || opts.frame_records > MAX_FRAME_RECORDS {
            return Err(CctError::Unwritable {
                offset: 0,
                record: 0,
                why: Unwritable::BadOption("frame_records must be 1 to 1048576"),
            });
        }
        if let Some(l) = opts.zstd_level
            && !zstd::compression_level_range().contains(&l)
        {
            return Err(CctError::Unwritable {
                offset: 0,
                record: 0,
                why: Unwritable::BadOption("zstd level outside the library's range"),
            });
        }
        // Serialising a struct of strings and a string map cannot fail.
        let json = serde_json::to_vec(meta).unwrap_or_default();
        let header = FileHeader::encode(WRITE_MINOR, opts.encoding, &json)?;
        w.write_all(&header).map_err(io_at(0))?;
        Ok(Writer {
            w,
            offset: header.len() as u64,
            opts,
            builder: FrameBuilder::new(),
            pending: Vec::new(),
            spare: Vec::new(),
            index: Vec::new(),
            total: 0,
        })
    }

    /// Append one record.
    ///
    /// # Errors
    /// [`CctError::Io`] when a full frame cannot be written; [`CctError::Unwritable`] for a
    /// record whose encoding exceeds 16 MiB.
    pub fn write(&mut self, r: &Record) -> Result<(), CctError> {
        loop {
            match self.builder.push(r, self.opts.frame_records) {
                Ok(Push::Done) => {
                    self.total += 1;
                    return Ok(());
                }
                Ok(Push::Full) => self.cut_frame()?,
                Err(size) => {
                    return Err(CctError::Unwritable {
                        offset: self.offset,
                        record: self.total,
                        why: Unwritable::TooLarge { size, limit: MAX_RECORD_BYTES as u64 },
                    });
                }
            }
        }
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.total
    }

    fn cut_frame(&mut self) -> Result<(), CctError> {
        if self.builder.records() == 0 {
            return Ok(());
        }
        let mut raw = self.spare.pop().unwrap_or_default();
        let records = self.builder.finish(&mut raw);
        self.pending.push(Pending { raw, records });
        if self.pending.len() >= self.opts.parallel_frames.max(1) {
            self.flush_pending()?;
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<(), CctError> {
        let level = self.opts.zstd_level;
        let compress = |p: &Pending| -> Option<Vec<u8>> {
            let l = level?;
            zstd::bulk::compress(&p.raw, l).ok().filter(|c| c.len() < p.raw.len())
        };
        let packed: Vec<Option<Vec<u8>>> = if self.pending.len() > 1 && level.is_some() {
            self.pending.par_iter().map(compress).collect()
        } else {
            self.pending.iter().map(compress).collect()
        };
        let pending = std::mem::take(&mut self.pending);
        for (p, c) in pending.into_iter().zip(packed) {
            let (codec, stored) = match &c {
                Some(c) => (CODEC_ZSTD, c.as_slice()),
                None => (CODEC_NONE, p.raw.as_slice()),
            };
            self.write_block(FRAME_MAGIC, codec, p.records, p.raw.len(), stored)?;
            self.spare.push(p.raw);
        }
        Ok(())
    }

    fn write_block(
        &mut self,
        magic: [u8; 4],
        codec: u8,
        records: u32,
        raw_len: usize,
        stored: &[u8],
    ) -> Result<(), CctError> {
        let too_large = |what, v: usize| CctError::TooLarge {
            offset: self.offset,
            what,
            value: v as u64,
            limit: MAX_PAYLOAD.into(),
        };
        let raw_len = u32::try_from(raw_len)
            .ok()
            .filter(|&l| l <= MAX_PAYLOAD)
            .ok_or_else(|| too_large("payload length", raw_len))?;
        let stored_len = u32::try_from(stored.len())
            .ok()
            .filter(|&l| l <= MAX_PAYLOAD)
            .ok_or_else(|| too_large("stored payload length", stored.len()))?;
        let number = if magic == INDEX_MAGIC {
            self.index.len()
        } else {
            let first_record =
                self.index.last().map_or(0, |e| e.first_record + u64::from(e.records));
            self.index.push(FrameEntry { offset: self.offset, first_record, records, stored_len });
            self.index.len() - 1
        };
        let number = u32::try_from(number).map_err(|_| CctError::TooLarge {
            offset: self.offset,
            what: "frame count",
            value: number as u64,
            limit: u32::MAX.into(),
        })?;
        let mut h = BlockHeader { magic, codec, number, records, raw_len, stored_len, checksum: 0 };
        h.checksum = h.compute(stored);
        let off = self.offset;
        self.w.write_all(&h.to_bytes()).map_err(io_at(off))?;
        self.w.write_all(stored).map_err(io_at(off))?;
        self.offset += (BLOCK_HEADER + stored.len()) as u64;
        Ok(())
    }

    /// Write the last frame, the index and the trailer; return the inner writer (flushed).
    ///
    /// # Errors
    /// [`CctError::Io`] on a write failure.
    pub fn finish(mut self) -> Result<W, CctError> {
        self.cut_frame()?;
        self.flush_pending()?;
        let index_offset = self.offset;
        let mut payload = Vec::with_capacity(self.index.len() * super::format::INDEX_ENTRY);
        for e in &self.index {
            payload.extend_from_slice(&e.to_bytes());
        }
        self.write_block(INDEX_MAGIC, CODEC_NONE, 0, payload.len(), &payload)?;
        let off = self.offset;
        self.w.write_all(&trailer(index_offset, self.total)).map_err(io_at(off))?;
        self.w.flush().map_err(io_at(off))?;
        Ok(self.w)
    }
}
