//! Errors of the `.cct` reader and writer. Every message starts with the byte offset in the file
//! (the CLI prefixes the file name), so `trace.cct: byte offset 4242: …` points at the damage.

use sim_core::codec::FieldError;
use sim_core::vocab::DecodeError;
use sim_core::{FORMAT_MAJOR, FORMAT_MINOR};
use std::fmt;
use std::io;

/// Why a `.cct` file could not be read or written.
///
/// `offset` is always a byte offset in the `.cct` file. Inside a compressed frame the offset is
/// the frame's start, and the message adds the position in the decompressed payload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CctError {
    /// The underlying reader or writer failed.
    #[error("byte offset {offset}: I/O error: {source}")]
    Io {
        /// Where the failed read or write started.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is empty.
    #[error("byte offset 0: empty file (a .cct trace starts with an 8-byte magic)")]
    Empty,
    /// The file does not start with the `.cct` magic.
    #[error(
        "byte offset {offset}: not a .cct trace (found bytes {found:02x?}, expected {:02x?})",
        super::format::MAGIC
    )]
    BadMagic {
        /// Always 0.
        offset: u64,
        /// The first bytes found (at most 8).
        found: Vec<u8>,
    },
    /// The major version is not one this reader knows.
    #[error(
        "byte offset {offset}: unsupported .cct format version {major}.{minor} \
         (this reader reads {}.0 to {}.{})",
        FORMAT_MAJOR,
        FORMAT_MAJOR,
        FORMAT_MINOR
    )]
    UnsupportedVersion {
        /// Offset of the version field.
        offset: u64,
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The file ends inside a structure.
    #[error(
        "byte offset {offset}: file ends inside the {what} \
         ({needed} bytes needed from here, {available} present)"
    )]
    Truncated {
        /// Where the structure starts.
        offset: u64,
        /// Which structure (file header, frame header, frame payload, index, trailer).
        what: &'static str,
        /// Bytes the structure needs from `offset`.
        needed: u64,
        /// Bytes the file has from `offset`.
        available: u64,
    },
    /// A stored checksum does not match the bytes.
    #[error(
        "byte offset {offset}: {what} checksum mismatch \
         (stored {stored:#018x}, computed {computed:#018x})"
    )]
    Checksum {
        /// Start of the checksummed structure.
        offset: u64,
        /// Which structure (file header, frame N, index).
        what: String,
        /// The checksum in the file.
        stored: u64,
        /// The checksum of the bytes read.
        computed: u64,
    },
    /// A length field exceeds what the format allows; nothing was allocated for it.
    #[error("byte offset {offset}: {what} is {value}, above the limit of {limit}")]
    TooLarge {
        /// Offset of the length field's structure.
        offset: u64,
        /// Which length.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The format's limit.
        limit: u64,
    },
    /// A compressed frame did not decompress, or not to its declared length.
    #[error("byte offset {offset}: frame {frame}: decompression failed: {reason}")]
    Decompress {
        /// Start of the frame.
        offset: u64,
        /// Frame number.
        frame: u32,
        /// What the decompressor said.
        reason: String,
    },
    /// A frame's header declares a different number of records than its payload holds, or the
    /// index disagrees with the frames.
    #[error("byte offset {offset}: {what} declares {declared} records but {found} were found")]
    RecordCount {
        /// Start of the frame or index.
        offset: u64,
        /// Which structure.
        what: String,
        /// The count in the header or index.
        declared: u64,
        /// The count found.
        found: u64,
    },
    /// A record tag, codec or enum code that this reader's format version does not have.
    #[error(
        "byte offset {offset}: {what} {code} is not in .cct format {}.{}: {}",
        FORMAT_MAJOR,
        FORMAT_MINOR,
        needed_version(*file_minor)
    )]
    UnknownCode {
        /// Offset of the containing structure (see [`CctError`]).
        offset: u64,
        /// What kind of code (record tag, event tag, codec, …), with its location.
        what: String,
        /// The value found.
        code: u64,
        /// The minor version the file header declares.
        file_minor: u16,
    },
    /// The bytes are not a valid encoding (see the kind).
    #[error("byte offset {offset}: {context}{kind}")]
    Corrupt {
        /// Offset of the damage, or of its frame (see [`CctError`]).
        offset: u64,
        /// Frame and payload position, when inside a frame (e.g. `frame 3, payload byte 17: `).
        context: String,
        /// What is wrong.
        kind: Corruption,
    },
    /// The metadata is not the expected JSON object.
    #[error("byte offset {offset}: metadata is not valid JSON: {source}")]
    Metadata {
        /// Start of the metadata.
        offset: u64,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The index at the end of the file is inconsistent with the file.
    #[error("byte offset {offset}: index: {kind}")]
    BadIndex {
        /// Offset of the index block (or of the trailer).
        offset: u64,
        /// What is wrong.
        kind: IndexProblem,
    },
    /// The writer was given a record it cannot store.
    #[error("byte offset {offset}: cannot write record {record}: {why}")]
    Unwritable {
        /// Output offset where the frame would start.
        offset: u64,
        /// Number of the record in the stream (from 0).
        record: u64,
        /// Why.
        why: Unwritable,
    },
}

fn needed_version(file_minor: u16) -> String {
    if file_minor > FORMAT_MINOR {
        format!(
            "the file is format {FORMAT_MAJOR}.{file_minor}; \
             a reader of version {FORMAT_MAJOR}.{file_minor} or later is needed"
        )
    } else {
        format!("the file claims format {FORMAT_MAJOR}.{file_minor}, so it is corrupt")
    }
}

/// What is wrong with the bytes of a structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// A vocabulary record (event, state, check) failed to decode.
    #[error("{0}")]
    Record(DecodeError),
    /// A field failed to decode.
    #[error("{what}: {err}")]
    Field {
        /// Which field.
        what: &'static str,
        /// Why.
        err: FieldError,
    },
    /// A count or length runs past the end of its structure.
    #[error("{what} ({len}) runs past the end of the {within} ({left} bytes left)")]
    Overrun {
        /// Which count or length.
        what: &'static str,
        /// The value.
        len: u64,
        /// The enclosing structure.
        within: &'static str,
        /// Bytes left in it.
        left: u64,
    },
    /// A value outside the range the format allows.
    #[error("{what} is {value}, allowed {allowed}")]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
        /// The allowed range, in words.
        allowed: &'static str,
    },
    /// A column's bytes do not hold exactly its records.
    #[error("{what} column holds {found} bytes of values where {declared} were declared")]
    ColumnLength {
        /// Which column.
        what: &'static str,
        /// Bytes declared.
        declared: u64,
        /// Bytes the values used.
        found: u64,
    },
    /// A physical address above the 52-bit width.
    #[error("access {index}: physical address {addr:#x} exceeds 52 bits")]
    PhysAddr {
        /// Index of the access in its frame.
        index: u64,
        /// The address.
        addr: u64,
    },
    /// A string is not UTF-8.
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    /// Bytes that must be zero are not.
    #[error("reserved bytes are not zero")]
    Reserved,
    /// A block that is not where the format puts it.
    #[error("expected {expected}, found bytes {found:02x?}")]
    BlockMagic {
        /// What was expected.
        expected: &'static str,
        /// The bytes found.
        found: [u8; 4],
    },
    /// Frames out of sequence.
    #[error("frame number {found} where {expected} was expected")]
    FrameNumber {
        /// The next frame number.
        expected: u32,
        /// The number found.
        found: u32,
    },
    /// Bytes after the trailer.
    #[error("data after the end of the trace")]
    TrailingData,
}

/// What is wrong with the index or trailer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexProblem {
    /// The trailer's index offset is not inside the file.
    #[error("trailer points to byte {index_offset}, outside the file's frames (length {file_len})")]
    OutsideFile {
        /// The offset in the trailer.
        index_offset: u64,
        /// The file length.
        file_len: u64,
    },
    /// An entry points outside the frame area.
    #[error("entry {entry} points to byte {offset}+{len}, outside the frames ({start}..{end})")]
    EntryOutside {
        /// Entry number.
        entry: u64,
        /// The frame offset it gives.
        offset: u64,
        /// The frame length it implies (header and payload).
        len: u64,
        /// First byte frames may occupy.
        start: u64,
        /// First byte after the frames.
        end: u64,
    },
    /// Entries overlap or are out of order.
    #[error("entry {entry} (byte {offset}) overlaps or precedes the previous frame")]
    Overlap {
        /// Entry number.
        entry: u64,
        /// Its offset.
        offset: u64,
    },
    /// An entry's first-record number is not the sum of the previous counts.
    #[error("entry {entry} starts at record {found}, expected {expected}")]
    FirstRecord {
        /// Entry number.
        entry: u64,
        /// What the entry says.
        found: u64,
        /// The running total.
        expected: u64,
    },
    /// The index does not describe the frames that were read.
    #[error("index does not match the frames in the file")]
    Mismatch,
    /// The index payload is not a whole number of entries.
    #[error("index payload of {len} bytes is not a multiple of {entry} bytes")]
    Ragged {
        /// Payload length.
        len: u64,
        /// Entry size.
        entry: u64,
    },
}

/// Why the writer refused a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unwritable {
    /// One record's encoding exceeds the frame payload limit.
    #[error("its encoding ({size} bytes) exceeds the {limit}-byte frame limit")]
    TooLarge {
        /// Encoded size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// More than 65,536 agents in one frame cannot happen (frames are cut first); this guards
    /// against a bad option.
    #[error("frame option out of range: {0}")]
    BadOption(&'static str),
}

/// Where inside a frame an error was found, for [`CctError::Corrupt`] and friends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FramePos {
    /// File offset of the frame header.
    pub frame_offset: u64,
    /// Frame number.
    pub frame: u32,
    /// Whether the payload is stored uncompressed (so payload bytes map to file bytes).
    pub raw: bool,
}

/// Size of the frame header, to map payload positions to file offsets.
const HEADER: u64 = super::format::BLOCK_HEADER as u64;

impl FramePos {
    /// The file offset and context string for a payload position.
    pub fn locate(&self, at: usize) -> (u64, String) {
        let at = at as u64;
        if self.raw {
            (self.frame_offset + HEADER + at, format!("frame {}: ", self.frame))
        } else {
            (self.frame_offset, format!("frame {}, decompressed payload byte {at}: ", self.frame))
        }
    }

    /// A [`CctError::Corrupt`] at payload position `at`.
    pub fn corrupt(&self, at: usize, kind: Corruption) -> CctError {
        let (offset, context) = self.locate(at);
        CctError::Corrupt { offset, context, kind }
    }

    /// A [`CctError::UnknownCode`] at payload position `at`.
    pub fn unknown(&self, at: usize, what: &str, code: u64, file_minor: u16) -> CctError {
        let (offset, context) = self.locate(at);
        CctError::UnknownCode { offset, what: format!("{context}{what}"), code, file_minor }
    }

    /// Map a vocabulary decode error: unknown tags become [`CctError::UnknownCode`].
    pub fn vocab(&self, at: usize, err: DecodeError, file_minor: u16) -> CctError {
        match err {
            DecodeError::UnknownTag { what, tag } => {
                self.unknown(at, &format!("{what} tag"), tag, file_minor)
            }
            DecodeError::Field { err: FieldError::UnknownCode { what, code }, .. } => {
                self.unknown(at, what, code, file_minor)
            }
            other => self.corrupt(at, Corruption::Record(other)),
        }
    }

    /// Map a field decode error: unknown enum codes become [`CctError::UnknownCode`].
    pub fn field(
        &self,
        at: usize,
        what: &'static str,
        err: FieldError,
        file_minor: u16,
    ) -> CctError {
        match err {
            FieldError::UnknownCode { what: w, code } => self.unknown(at, w, code, file_minor),
            other => self.corrupt(at, Corruption::Field { what, err: other }),
        }
    }
}

impl fmt::Display for FramePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "frame {}", self.frame)
    }
}

/// Map an I/O error at `offset`.
pub(crate) fn io_at(offset: u64) -> impl FnOnce(io::Error) -> CctError {
    move |source| CctError::Io { offset, source }
}
