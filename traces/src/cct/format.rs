//! Byte-level constants and the fixed-size structures of `.cct` (docs/trace-format.md).

use super::error::{CctError, Corruption};
use sim_core::{FORMAT_MAJOR, FORMAT_MINOR};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// File magic. PNG-style: a non-ASCII first byte and a CR-LF / ^Z / LF tail catch text-mode
/// transfers and `type`/`cat` mistakes.
pub(crate) const MAGIC: [u8; 8] = *b"\x89CCT\r\n\x1a\n";
/// Fixed part of the file header, before the metadata.
pub(crate) const FILE_HEADER: usize = 28;
/// Frame and index block header.
pub(crate) const BLOCK_HEADER: usize = 32;
/// Trailer at the very end.
pub(crate) const TRAILER: usize = 24;
/// One index entry.
pub(crate) const INDEX_ENTRY: usize = 24;
pub(crate) const FRAME_MAGIC: [u8; 4] = *b"CCTF";
pub(crate) const INDEX_MAGIC: [u8; 4] = *b"CCTX";
pub(crate) const TRAILER_MAGIC: [u8; 8] = *b"CCT-END\n";
/// Largest payload (stored or decompressed) of one frame or of the index. Bounds every
/// allocation the reader makes for a frame.
pub(crate) const MAX_PAYLOAD: u32 = 64 << 20;
/// Largest number of records in one frame: bounds the decoded frame to 16 MiB of accesses.
pub(crate) const MAX_FRAME_RECORDS: u32 = 1 << 20;
/// Largest metadata JSON.
pub(crate) const MAX_METADATA: u32 = 1 << 20;

/// Payload codec of a frame.
pub(crate) const CODEC_NONE: u8 = 0;
pub(crate) const CODEC_ZSTD: u8 = 1;

/// Who captured a trace, where and when, plus free key/values. Stored as JSON in the header.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Metadata {
    /// The machine the trace describes or was captured on (CPU model, kernel, VM shape).
    pub machine: String,
    /// The tool that produced it (e.g. `valgrind-3.19 lackey`, `ccsim import lackey`).
    pub captured_by: String,
    /// The host it was captured on.
    pub captured_on: String,
    /// When it was captured (free text; RFC 3339 recommended).
    pub captured_at: String,
    /// Any other key/values (workload, command line, source file, …), in key order.
    pub extra: BTreeMap<String, String>,
}

/// How frames are stored: a trade between size, write speed and read speed
/// (measurements in docs/performance.md "Trace decode").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// zstd level 3 in 256 Ki-record frames: as fast to write as uncompressed, about 1 byte
    /// per record or less.
    #[default]
    Default,
    /// zstd level 19 in 1 Mi-record frames: smallest (0.14 bytes/record on the lackey
    /// sample), about 10 times slower to write.
    Small,
    /// No compression, 64 Ki-record frames: fastest to decode, largest (2–3 bytes/record).
    Uncompressed,
}

impl Encoding {
    /// Every encoding.
    pub const ALL: [Encoding; 3] = [Encoding::Default, Encoding::Small, Encoding::Uncompressed];

    /// The name accepted by [`FromStr`] and printed by [`fmt::Display`].
    pub const fn name(self) -> &'static str {
        match self {
            Encoding::Default => "default",
            Encoding::Small => "small",
            Encoding::Uncompressed => "none",
        }
    }

    pub(crate) const fn code(self) -> u8 {
        match self {
            Encoding::Default => 0,
            Encoding::Small => 1,
            Encoding::Uncompressed => 2,
        }
    }

    pub(crate) const fn from_code(c: u8) -> Option<Encoding> {
        match c {
            0 => Some(Encoding::Default),
            1 => Some(Encoding::Small),
            2 => Some(Encoding::Uncompressed),
            _ => None,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An encoding name that is not `default`, `small` or `none`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encoding {0:?} (expected default, small or none)")]
pub struct UnknownEncoding(pub String);

impl FromStr for Encoding {
    type Err = UnknownEncoding;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Encoding::Default),
            "small" => Ok(Encoding::Small),
            "none" | "uncompressed" => Ok(Encoding::Uncompressed),
            _ => Err(UnknownEncoding(s.to_owned())),
        }
    }
}

/// Whether `first_bytes` (the start of a file, any length) begin like a `.cct` trace.
///
/// With fewer than 8 bytes, answers whether they are a prefix of the magic.
pub fn is_cct(first_bytes: &[u8]) -> bool {
    let n = first_bytes.len().min(MAGIC.len());
    n > 0 && first_bytes[..n] == MAGIC[..n]
}

/// The fixed file header, after validation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileHeader {
    pub minor: u16,
    pub encoding: Encoding,
    pub meta_len: u32,
    pub checksum: u64,
}

impl FileHeader {
    pub fn encode(minor: u16, encoding: Encoding, meta: &[u8]) -> Result<Vec<u8>, CctError> {
        let meta_len = u32::try_from(meta.len()).ok().filter(|&l| l <= MAX_METADATA).ok_or(
            CctError::TooLarge {
                offset: 0,
                what: "metadata length",
                value: meta.len() as u64,
                limit: MAX_METADATA.into(),
            },
        )?;
        let mut h = Vec::with_capacity(FILE_HEADER + meta.len());
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&FORMAT_MAJOR.to_le_bytes());
        h.extend_from_slice(&minor.to_le_bytes());
        h.push(encoding.code());
        h.extend_from_slice(&[0; 3]);
        h.extend_from_slice(&meta_len.to_le_bytes());
        let sum = header_checksum(&h, meta);
        h.extend_from_slice(&sum.to_le_bytes());
        h.extend_from_slice(meta);
        Ok(h)
    }

    /// Check the magic, then the version, then the rest (so an old reader names the version
    /// even when the rest of a newer header means something else).
    pub fn decode(b: &[u8; FILE_HEADER]) -> Result<FileHeader, CctError> {
        if b[..8] != MAGIC {
            return Err(CctError::BadMagic { offset: 0, found: b[..8].to_vec() });
        }
        let major = u16::from_le_bytes([b[8], b[9]]);
        let minor = u16::from_le_bytes([b[10], b[11]]);
        if major != FORMAT_MAJOR {
            return Err(CctError::UnsupportedVersion { offset: 8, major, minor });
        }
        let encoding = Encoding::from_code(b[12]).ok_or(CctError::UnknownCode {
            offset: 12,
            what: "encoding".into(),
            code: b[12].into(),
            file_minor: minor,
        })?;
        if b[13..16] != [0; 3] {
            return Err(CctError::Corrupt {
                offset: 13,
                context: "file header: ".into(),
                kind: Corruption::Reserved,
            });
        }
        let meta_len = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
        if meta_len > MAX_METADATA {
            return Err(CctError::TooLarge {
                offset: 16,
                what: "metadata length",
                value: meta_len.into(),
                limit: MAX_METADATA.into(),
            });
        }
        let checksum = u64::from_le_bytes(le8(&b[20..28]));
        Ok(FileHeader { minor, encoding, meta_len, checksum })
    }

    /// Verify the checksum over the fixed part and `meta`, then parse the metadata.
    pub fn finish(&self, fixed: &[u8; FILE_HEADER], meta: &[u8]) -> Result<Metadata, CctError> {
        let computed = header_checksum(&fixed[..20], meta);
        if computed != self.checksum {
            return Err(CctError::Checksum {
                offset: 0,
                what: "file header".into(),
                stored: self.checksum,
                computed,
            });
        }
        serde_json::from_slice(meta)
            .map_err(|source| CctError::Metadata { offset: FILE_HEADER as u64, source })
    }
}

fn header_checksum(fixed20: &[u8], meta: &[u8]) -> u64 {
    xxh3_64_with_seed(meta, xxh3_64(&fixed20[..20]))
}

pub(crate) fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    a
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0; 4];
    a.copy_from_slice(&b[..4]);
    a
}

/// The header of a frame (`CCTF`) or of the index (`CCTX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockHeader {
    pub magic: [u8; 4],
    pub codec: u8,
    /// Frame number; for the index, the number of frames.
    pub number: u32,
    /// Records in the frame; 0 for the index.
    pub records: u32,
    pub raw_len: u32,
    pub stored_len: u32,
    pub checksum: u64,
}

impl BlockHeader {
    pub fn to_bytes(self) -> [u8; BLOCK_HEADER] {
        let mut b = [0; BLOCK_HEADER];
        b[..4].copy_from_slice(&self.magic);
        b[4] = self.codec;
        b[8..12].copy_from_slice(&self.number.to_le_bytes());
        b[12..16].copy_from_slice(&self.records.to_le_bytes());
        b[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
        b[20..24].copy_from_slice(&self.stored_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    /// Parse and check the limits (before anything is allocated for the payload).
    pub fn parse(b: &[u8; BLOCK_HEADER], offset: u64, file_minor: u16) -> Result<Self, CctError> {
        let magic = le4(&b[..4]);
        if magic != FRAME_MAGIC && magic != INDEX_MAGIC {
            return Err(CctError::Corrupt {
                offset,
                context: String::new(),
                kind: Corruption::BlockMagic {
                    expected: "a frame (CCTF) or the index (CCTX)",
                    found: magic,
                },
            });
        }
        let h = BlockHeader {
            magic,
            codec: b[4],
            number: u32::from_le_bytes(le4(&b[8..12])),
            records: u32::from_le_bytes(le4(&b[12..16])),
            raw_len: u32::from_le_bytes(le4(&b[16..20])),
            stored_len: u32::from_le_bytes(le4(&b[20..24])),
            checksum: u64::from_le_bytes(le8(&b[24..32])),
        };
        if b[5..8] != [0; 3] {
            return Err(CctError::Corrupt {
                offset: offset + 5,
                context: String::new(),
                kind: Corruption::Reserved,
            });
        }
        if h.codec > CODEC_ZSTD || (magic == INDEX_MAGIC && h.codec != CODEC_NONE) {
            return Err(CctError::UnknownCode {
                offset: offset + 4,
                what: "frame codec".into(),
                code: h.codec.into(),
                file_minor,
            });
        }
        for (what, v) in [("payload length", h.raw_len), ("stored payload length", h.stored_len)] {
            if v > MAX_PAYLOAD {
                return Err(CctError::TooLarge {
                    offset,
                    what,
                    value: v.into(),
                    limit: MAX_PAYLOAD.into(),
                });
            }
        }
        if h.records > MAX_FRAME_RECORDS {
            return Err(CctError::TooLarge {
                offset: offset + 12,
                what: "frame record count",
                value: h.records.into(),
                limit: MAX_FRAME_RECORDS.into(),
            });
        }
        if h.codec == CODEC_NONE && h.raw_len != h.stored_len {
            return Err(CctError::Corrupt {
                offset: offset + 16,
                context: String::new(),
                kind: Corruption::OutOfRange {
                    what: "uncompressed frame's stored length",
                    value: h.stored_len.into(),
                    allowed: "equal to its payload length",
                },
            });
        }
        Ok(h)
    }

    pub fn is_index(&self) -> bool {
        self.magic == INDEX_MAGIC
    }

    /// The seed that ties the payload checksum to the header fields.
    pub fn seed(&self) -> u64 {
        xxh3_64(&self.to_bytes()[..24])
    }

    /// Checksum of `stored` under this header.
    pub fn compute(&self, stored: &[u8]) -> u64 {
        xxh3_64_with_seed(stored, self.seed())
    }
}

/// One index entry: where a frame is and which records it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FrameEntry {
    /// File offset of the frame header.
    pub offset: u64,
    /// Number of the frame's first record in the stream.
    pub first_record: u64,
    /// Records in the frame.
    pub records: u32,
    /// Stored (possibly compressed) payload bytes.
    pub stored_len: u32,
}

impl FrameEntry {
    pub(crate) fn to_bytes(self) -> [u8; INDEX_ENTRY] {
        let mut b = [0; INDEX_ENTRY];
        b[..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.first_record.to_le_bytes());
        b[16..20].copy_from_slice(&self.records.to_le_bytes());
        b[20..24].copy_from_slice(&self.stored_len.to_le_bytes());
        b
    }

    pub(crate) fn from_bytes(b: &[u8]) -> FrameEntry {
        FrameEntry {
            offset: u64::from_le_bytes(le8(&b[..8])),
            first_record: u64::from_le_bytes(le8(&b[8..16])),
            records: u32::from_le_bytes(le4(&b[16..20])),
            stored_len: u32::from_le_bytes(le4(&b[20..24])),
        }
    }

    /// Bytes the frame occupies in the file.
    pub fn len(&self) -> u64 {
        BLOCK_HEADER as u64 + u64::from(self.stored_len)
    }

    /// Whether the frame has no records.
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }
}

/// The trailer: `index_offset u64, total_records u64, "CCT-END\n"`.
pub(crate) fn trailer(index_offset: u64, total: u64) -> [u8; TRAILER] {
    let mut b = [0; TRAILER];
    b[..8].copy_from_slice(&index_offset.to_le_bytes());
    b[8..16].copy_from_slice(&total.to_le_bytes());
    b[16..].copy_from_slice(&TRAILER_MAGIC);
    b
}

/// Parse a trailer at `offset`: `(index_offset, total_records)`.
pub(crate) fn parse_trailer(b: &[u8; TRAILER], offset: u64) -> Result<(u64, u64), CctError> {
    if b[16..] != TRAILER_MAGIC {
        return Err(CctError::Corrupt {
            offset: offset + 16,
            context: "trailer: ".into(),
            kind: Corruption::BlockMagic {
                expected: "the trailer magic CCT-END",
                found: le4(&b[16..20]),
            },
        });
    }
    Ok((u64::from_le_bytes(le8(&b[..8])), u64::from_le_bytes(le8(&b[8..16]))))
}

/// The current minor version, written by this build.
pub(crate) const WRITE_MINOR: u16 = FORMAT_MINOR;
