//! `ccsim trace info`: what a `.cct` file holds, found by decoding all of it.

use super::error::CctError;
use super::format::{Encoding, Metadata};
use super::frame::AccessOp;
use super::read::Reader;
use sim_core::{Event, Record};
use std::io::Read;

/// Records of a trace by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordCounts {
    /// Data loads.
    pub load: u64,
    /// Data stores.
    pub store: u64,
    /// Instruction fetches.
    pub fetch: u64,
    /// DMA reads.
    pub dma_read: u64,
    /// DMA writes.
    pub dma_write: u64,
    /// Events that are not accesses (map, invlpg, rmpupdate, …).
    pub other_events: u64,
    /// Header settings.
    pub settings: u64,
    /// Initial-state items.
    pub states: u64,
    /// Expectations.
    pub expects: u64,
    /// Program begin and end markers.
    pub programs: u64,
}

/// What `ccsim trace info` prints.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TraceInfo {
    /// Format version, `major.minor`.
    pub version: String,
    /// The encoding the header records.
    pub encoding: Encoding,
    /// The header's metadata.
    pub metadata: Metadata,
    /// Frames.
    pub frames: u64,
    /// Frames stored zstd-compressed (the others are stored raw).
    pub compressed_frames: u64,
    /// Records.
    pub records: u64,
    /// Records by kind.
    pub counts: RecordCounts,
    /// Distinct agents summed over frames (an agent seen in two frames counts twice).
    pub frame_agents: u64,
    /// File size in bytes.
    pub file_bytes: u64,
    /// Frame payload bytes after decompression.
    pub payload_bytes: u64,
    /// File bytes per record (0 for an empty trace).
    pub bytes_per_record: f64,
}

/// Decode a whole trace (checking every checksum, the index and the trailer) and summarise it.
///
/// # Errors
/// The first [`CctError`] met.
pub fn info<R: Read>(r: R) -> Result<TraceInfo, CctError> {
    let mut rd = Reader::new(r)?;
    let (major, minor) = rd.version();
    let encoding = rd.encoding();
    let metadata = rd.metadata().clone();
    let mut c = RecordCounts::default();
    let mut records = 0u64;
    let mut frame_agents = 0u64;
    while let Some(f) = rd.next_frame()? {
        records += f.len() as u64;
        frame_agents += f.agents().len() as u64;
        for a in f.accesses() {
            match a.op() {
                AccessOp::Load => c.load += 1,
                AccessOp::Store(_) => c.store += 1,
                AccessOp::Fetch => c.fetch += 1,
                AccessOp::DmaRead => c.dma_read += 1,
                AccessOp::DmaWrite => c.dma_write += 1,
            }
        }
        for (_, r) in f.controls() {
            match r {
                Record::Event(te) => match te.event {
                    Event::Load { .. } => c.load += 1,
                    Event::Store { .. } => c.store += 1,
                    Event::Fetch { .. } => c.fetch += 1,
                    Event::DmaRead { .. } => c.dma_read += 1,
                    Event::DmaWrite { .. } => c.dma_write += 1,
                    _ => c.other_events += 1,
                },
                Record::Setting(_) => c.settings += 1,
                Record::State(_) => c.states += 1,
                Record::Expect { .. } => c.expects += 1,
                Record::ProgramBegin(_) | Record::ProgramEnd => c.programs += 1,
            }
        }
    }
    let st = rd.stats();
    // Precision loss is irrelevant for a ratio that is printed.
    #[allow(clippy::cast_precision_loss)]
    let bytes_per_record = if records == 0 { 0.0 } else { st.file_bytes as f64 / records as f64 };
    Ok(TraceInfo {
        version: format!("{major}.{minor}"),
        encoding,
        metadata,
        frames: st.frames,
        compressed_frames: st.zstd_frames,
        records,
        counts: c,
        frame_agents,
        file_bytes: st.file_bytes,
        payload_bytes: st.raw_bytes,
        bytes_per_record,
    })
}
