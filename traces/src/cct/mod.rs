//! Binary trace format `.cct` v1 (byte-level spec: docs/trace-format.md).
//!
//! A `.cct` file is a header (magic, version, encoding, JSON [`Metadata`], checksum), a
//! sequence of independently decodable frames, an index of the frames and a fixed trailer
//! pointing at the index. Each frame has an xxh3 checksum and is stored raw or zstd-compressed.
//! Inside a frame, memory accesses are stored in columns (a per-block symbol table of
//! (op, address kind, size, agent), one symbol byte per access, zigzag-varint address deltas
//! per stream); every other [`Record`](sim_core::Record) is a tagged record encoded with the
//! vocabulary's own binary codec. Conversion `.ccs` ↔ `.cct` is lossless.
//!
//! * [`Writer`] / [`Reader`]: streaming, one frame in memory. [`Reader`] is an iterator of
//!   records; [`Reader::next_frame`] gives the decoded columns without building records.
//! * [`TraceSlice`]: a trace in memory, opened through its index, decoded in parallel with
//!   [`TraceSlice::par_map_frames`].
//! * [`info`]: what `ccsim trace info` prints.
//! * [`is_cct`]: sniff the magic.
//!
//! Every error is a [`CctError`] whose message starts with the byte offset of the damage. The
//! reader never panics on bad input and never allocates more than the format's limits (64 MiB
//! per frame payload, 1 Mi records per frame, 1 MiB of metadata), whatever the lengths claim.

mod error;
mod format;
mod frame;
mod info;
mod read;
mod write;

pub use error::{CctError, Corruption, IndexProblem, Unwritable};
pub use format::{Encoding, FrameEntry, Metadata, UnknownEncoding, is_cct};
pub use frame::{Access, AccessOp, Frame};
pub use info::{RecordCounts, TraceInfo, info};
pub use read::{FrameDecoder, ReadStats, Reader, TraceSlice};
pub use write::{
    DEFAULT_FRAME_RECORDS, DEFAULT_ZSTD_LEVEL, RAW_FRAME_RECORDS, SMALL_FRAME_RECORDS,
    SMALL_ZSTD_LEVEL, Writer, WriterOptions,
};
