//! Where the RMP sits in memory and which pages it covers: the contiguous RMP (RMP_BASE /
//! RMP_END, spec/snp.md §1.3) and the segmented RMP (RMP_CFG plus an RMP Segment Table,
//! spec/snp.md §1.5).
//!
//! Both forms are one lookup rule, as Linux treats them (`arch/x86/virt/svm/sev.c`, segmented
//! version: "For a non-segmented RMP table, use the maximum physical addressing as the segment
//! size in order to always arrive at index 0 in the table"): the page at `pa` has segment
//! `pa >> shift`, and its entry lies at `segment_base + ((pa & (2^shift − 1)) >> 12) × 16`. A
//! contiguous RMP is one segment with shift 52 whose entries start 16 KiB after RMP_BASE.

use sim_core::addr::MAX_PHYS_BITS;
use sim_core::{PageSize, Spa};

/// Size of the processor bookkeeping area at RMP_BASE, before the first entry (contiguous RMP)
/// or before the RMP Segment Table (segmented RMP) (spec/snp.md §1.3, §1.5).
pub const RMP_BOOKKEEPING_BYTES: u64 = 0x4000;
/// Bytes per RMP entry (spec/snp.md §1.2).
pub const RMP_ENTRY_BYTES: u64 = 16;
/// Alignment hardware requires of RMP_BASE and RMP_END + 1 (spec/snp.md §1.3, 8 KiB).
pub const RMP_ALIGN: u64 = 8 << 10;

/// MSR number of RMP_CFG (spec/snp.md §1.5; Linux `arch/x86/include/asm/msr-index.h`
/// `MSR_AMD64_RMP_CFG`).
pub const MSR_RMP_CFG: u32 = 0xC001_0136;
/// RMP_CFG bit 0: the segmented RMP is enabled (spec/snp.md §1.5; Linux
/// `MSR_AMD64_SEG_RMP_ENABLED_BIT` = 0).
pub const RMP_CFG_SEGMENTED: u64 = 1 << 0;
/// RMP_CFG bits 13:8: log2 of the memory one segment covers (spec/snp.md §1.5; Linux
/// `MSR_AMD64_RMP_SEGMENT_SHIFT(x)` = `(x & GENMASK_ULL(13, 8)) >> 8`).
const RMP_CFG_SHIFT_MASK: u64 = 0x3f << 8;
/// Size of the RMP Segment Table that follows the bookkeeping area (spec/snp.md §1.5: "a 4 KiB
/// RMP Segment Table"; Linux `RMP_SEGMENT_TABLE_SIZE` = `SZ_4K`).
pub const RST_BYTES: u64 = 0x1000;
/// Entries the RST can hold: 512 of 8 bytes (spec/snp.md §1.5).
pub const RST_MAX_ENTRIES: usize = 512;
/// The segment shift of a contiguous RMP (Linux `RMPTABLE_NON_SEGMENTED_SHIFT` = 52).
pub const CONTIGUOUS_SEGMENT_SHIFT: u32 = 52;
/// Smallest segment shift the model accepts. Unsourced: the real bounds are machine-specific
/// (CPUID 8000_0025 EAX bits 5:0 and 11:6, spec/snp.md §1.5, not in our sources for any part);
/// 30 is derived from the RST's mapped size being counted in GiB, so a segment of less than
/// 1 GiB could not be mapped in full.
pub const MIN_SEGMENT_SHIFT: u32 = 30;

/// RST entry bits 19:0: mapped size in GiB (spec/snp.md §1.5; Linux `RST_ENTRY_MAPPED_SIZE`).
const RST_MAPPED_GIB_MASK: u64 = (1 << 20) - 1;
/// RST entry bits 51:20: the segment's 1 MiB-aligned base (spec/snp.md §1.5; Linux
/// `RST_ENTRY_SEGMENT_BASE`). Bits 63:52 are ignored, as Linux ignores them.
const RST_BASE_MASK: u64 = ((1 << 52) - 1) & !((1 << 20) - 1);
const GIB: u64 = 1 << 30;
/// Alignment of an RMP segment's base: the base field starts at bit 20 (spec/snp.md §1.5).
const SEGMENT_ALIGN: u64 = 1 << 20;

/// One segment: where its entries start and how much of its address range they cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    /// SPA of the entry for the segment's first page.
    pub(crate) entries: u64,
    /// Bytes from the segment's first address that have entries (0: the segment maps nothing).
    pub(crate) covered: u64,
}

/// Where the RMP sits and which memory it covers (spec/snp.md §1.3 contiguous, §1.5
/// segmented).
///
/// Pages without an entry — beyond RMP_END, or in a segment that maps nothing or maps less
/// than its whole range — are not RMP-covered and always count as hypervisor-owned for RMP
/// checks (APM §15.36.5, §15.36.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RmpLayout {
    base: Spa,
    /// RMP_CFG (0 for a contiguous RMP).
    cfg: u64,
    /// log2 of the memory per segment (52 for a contiguous RMP).
    shift: u32,
    /// Indexed by segment number (`pa >> shift`); one entry for a contiguous RMP.
    segs: Box<[Segment]>,
    /// One past the highest covered address.
    covered_end: Spa,
}

/// The MSR values and RST contents cannot describe an RMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RmpLayoutError {
    /// RMP_BASE or RMP_END + 1 is not 8 KiB-aligned.
    #[error("RMP_BASE {base:#x} / RMP_END {end:#x}: base and end+1 must be 8 KiB-aligned")]
    Misaligned {
        /// RMP_BASE.
        base: u64,
        /// RMP_END (address of the last byte).
        end: u64,
    },
    /// The range is smaller than the bookkeeping area, or ends below its start.
    #[error("RMP_BASE {base:#x} / RMP_END {end:#x}: range holds no entries")]
    Empty {
        /// RMP_BASE.
        base: u64,
        /// RMP_END.
        end: u64,
    },
    /// The covered memory size is not a multiple of 4 KiB.
    #[error("covered size {bytes:#x} is not a multiple of 4 KiB")]
    CoverageNotPageAligned {
        /// The size asked for.
        bytes: u64,
    },
    /// RMP_CFG bit 0 (segmented RMP enabled) is clear.
    #[error("RMP_CFG {rmp_cfg:#x}: segmented RMP not enabled (bit 0 clear)")]
    NotSegmented {
        /// RMP_CFG.
        rmp_cfg: u64,
    },
    /// The segment shift in RMP_CFG bits 13:8 is outside what the model accepts.
    #[error("segment shift {shift} outside {min}..={max}")]
    SegmentShiftOutOfRange {
        /// The shift asked for.
        shift: u32,
        /// [`MIN_SEGMENT_SHIFT`].
        min: u32,
        /// [`CONTIGUOUS_SEGMENT_SHIFT`].
        max: u32,
    },
    /// RMP_BASE of a segmented RMP is not 8 KiB-aligned.
    #[error("RMP_BASE {base:#x} is not 8 KiB-aligned")]
    SegmentedBaseMisaligned {
        /// RMP_BASE.
        base: u64,
    },
    /// RMP_END is not 0 for a segmented RMP.
    #[error("segmented RMP with RMP_END {end:#x}; expected 0")]
    RmpEndNotZero {
        /// RMP_END.
        end: u64,
    },
    /// More RST entries than the 4 KiB table holds.
    #[error("{count} RST entries; the RST holds {max}")]
    TooManyRstEntries {
        /// Entries given.
        count: usize,
        /// [`RST_MAX_ENTRIES`].
        max: usize,
    },
    /// A segment that maps memory would start beyond the 52-bit physical address space.
    #[error("RST entry {index} maps memory at or beyond 2^52 with shift {shift}")]
    SegmentBeyondAddressSpace {
        /// RST index.
        index: usize,
        /// The segment shift.
        shift: u32,
    },
    /// Two segments' entries overlap each other, or a segment overlaps the bookkeeping area
    /// and RST.
    #[error("RMP segment {index} overlaps {other:?} (None: the bookkeeping area and RST)")]
    SegmentOverlap {
        /// RST index of one segment.
        index: usize,
        /// RST index of the other, or `None` for the bookkeeping area and RST.
        other: Option<usize>,
    },
    /// Every RST entry maps nothing.
    #[error("no RST entry maps any memory")]
    NoSegments,
    /// A segmented RMP can only cover whole GiB (the RST counts mapped size in GiB).
    #[error("covered size {bytes:#x} is not a non-zero multiple of 1 GiB")]
    CoverageNotGibAligned {
        /// The size asked for.
        bytes: u64,
    },
    /// A segment's mapped size does not fit the 20-bit field.
    #[error("segment mapped size {gib} GiB does not fit the 20-bit RST field")]
    MappedSizeTooLarge {
        /// The size asked for, in GiB.
        gib: u64,
    },
}

impl RmpLayout {
    /// Layout from the RMP_BASE and RMP_END MSR values (RMP_END is the address of the last
    /// byte). Coverage is `((RMP_END + 1 − RMP_BASE − 16 KiB) / 16) × 4 KiB` (spec/snp.md §1.3).
    ///
    /// # Errors
    /// [`RmpLayoutError::Misaligned`] or [`RmpLayoutError::Empty`].
    pub fn from_msrs(rmp_base: Spa, rmp_end: Spa) -> Result<RmpLayout, RmpLayoutError> {
        let (base, end) = (rmp_base.raw(), rmp_end.raw());
        let Some(end1) = end.checked_add(1) else {
            return Err(RmpLayoutError::Misaligned { base, end });
        };
        if !base.is_multiple_of(RMP_ALIGN) || !end1.is_multiple_of(RMP_ALIGN) {
            return Err(RmpLayoutError::Misaligned { base, end });
        }
        let bytes = end1
            .checked_sub(base)
            .and_then(|b| b.checked_sub(RMP_BOOKKEEPING_BYTES))
            .filter(|b| *b >= RMP_ENTRY_BYTES)
            .ok_or(RmpLayoutError::Empty { base, end })?;
        let covered = (bytes / RMP_ENTRY_BYTES) << PageSize::K4.shift();
        Ok(RmpLayout::contiguous(rmp_base, covered))
    }

    /// Contiguous layout covering `[0, covered_bytes)` with the table at `rmp_base`.
    ///
    /// # Errors
    /// [`RmpLayoutError::CoverageNotPageAligned`] if `covered_bytes` is not 4 KiB-aligned.
    pub fn covering(rmp_base: Spa, covered_bytes: u64) -> Result<RmpLayout, RmpLayoutError> {
        if !covered_bytes.is_multiple_of(PageSize::K4.bytes()) {
            return Err(RmpLayoutError::CoverageNotPageAligned { bytes: covered_bytes });
        }
        Ok(RmpLayout::contiguous(rmp_base, covered_bytes))
    }

    fn contiguous(base: Spa, covered: u64) -> RmpLayout {
        // Covered bytes beyond the 52-bit space cannot be named by an Spa; truncate as the
        // original layout did.
        let covered_end = Spa::new_truncate(covered);
        let seg = Segment {
            entries: base.raw().saturating_add(RMP_BOOKKEEPING_BYTES),
            covered: covered_end.raw(),
        };
        RmpLayout {
            base,
            cfg: 0,
            shift: CONTIGUOUS_SEGMENT_SHIFT,
            segs: Box::new([seg]),
            covered_end,
        }
    }

    /// Segmented layout from the MSR values and the RST contents (spec/snp.md §1.5): RMP_BASE
    /// (bookkeeping area, then the RST), RMP_END (expected 0), RMP_CFG (bit 0 enable, bits 13:8
    /// segment shift) and the RST's entries in index order (trailing zero entries may be
    /// omitted).
    ///
    /// Segment *i* covers `[i << shift, (i << shift) + min(mapped GiB, 2^shift))`; a mapped size
    /// larger than the segment is capped to the segment, as Linux does (`segmented_rmptable_setup`:
    /// "if (mapped_size > rmp_segment_coverage_size) mapped_size = rmp_segment_coverage_size").
    /// Its entries start at the segment base from RST bits 51:20.
    ///
    /// Checks beyond Linux's (model choices, for configurations that are surely mistakes): a
    /// non-zero RMP_END is an error (Linux only warns), and so are segments whose entries overlap
    /// each other or the bookkeeping area and RST. The CPUID 8000_0025 bounds on the shift are
    /// machine-specific; the model accepts [`MIN_SEGMENT_SHIFT`]..=[`CONTIGUOUS_SEGMENT_SHIFT`].
    ///
    /// # Errors
    /// [`RmpLayoutError::NotSegmented`], [`RmpLayoutError::SegmentShiftOutOfRange`],
    /// [`RmpLayoutError::SegmentedBaseMisaligned`], [`RmpLayoutError::RmpEndNotZero`],
    /// [`RmpLayoutError::TooManyRstEntries`], [`RmpLayoutError::SegmentBeyondAddressSpace`],
    /// [`RmpLayoutError::SegmentOverlap`], [`RmpLayoutError::NoSegments`].
    pub fn from_segmented_msrs(
        rmp_base: Spa,
        rmp_end: u64,
        rmp_cfg: u64,
        rst: &[u64],
    ) -> Result<RmpLayout, RmpLayoutError> {
        if rmp_cfg & RMP_CFG_SEGMENTED == 0 {
            return Err(RmpLayoutError::NotSegmented { rmp_cfg });
        }
        let shift = u32::try_from((rmp_cfg & RMP_CFG_SHIFT_MASK) >> 8).expect("6-bit field");
        if !(MIN_SEGMENT_SHIFT..=CONTIGUOUS_SEGMENT_SHIFT).contains(&shift) {
            return Err(RmpLayoutError::SegmentShiftOutOfRange {
                shift,
                min: MIN_SEGMENT_SHIFT,
                max: CONTIGUOUS_SEGMENT_SHIFT,
            });
        }
        let base = rmp_base.raw();
        if !base.is_multiple_of(RMP_ALIGN) {
            return Err(RmpLayoutError::SegmentedBaseMisaligned { base });
        }
        if rmp_end != 0 {
            return Err(RmpLayoutError::RmpEndNotZero { end: rmp_end });
        }
        if rst.len() > RST_MAX_ENTRIES {
            return Err(RmpLayoutError::TooManyRstEntries {
                count: rst.len(),
                max: RST_MAX_ENTRIES,
            });
        }
        let seg_bytes = 1u64 << shift;
        let mut segs = Vec::with_capacity(rst.len());
        for (index, &raw) in rst.iter().enumerate() {
            let gib = raw & RST_MAPPED_GIB_MASK;
            if gib == 0 {
                segs.push(Segment { entries: 0, covered: 0 });
                continue;
            }
            // index < 512 and shift <= 52: the product fits a u64.
            let start = (index as u64) << shift;
            if start >> MAX_PHYS_BITS != 0 {
                return Err(RmpLayoutError::SegmentBeyondAddressSpace { index, shift });
            }
            let covered = (gib * GIB).min(seg_bytes);
            segs.push(Segment { entries: raw & RST_BASE_MASK, covered });
        }
        // Trailing segments that map nothing carry no information; keep lookups short.
        while segs.last().is_some_and(|s| s.covered == 0) {
            segs.pop();
        }
        if segs.is_empty() {
            return Err(RmpLayoutError::NoSegments);
        }
        check_no_overlap(base, &segs)?;
        let covered_end = segs
            .iter()
            .enumerate()
            .filter(|(_, s)| s.covered != 0)
            .map(|(i, s)| ((i as u64) << shift) + s.covered)
            .max()
            .expect("at least one segment maps memory");
        Ok(RmpLayout {
            base: rmp_base,
            cfg: rmp_cfg,
            shift,
            segs: segs.into_boxed_slice(),
            covered_end: Spa::new_truncate(covered_end),
        })
    }

    /// A segmented layout covering `[0, covered_bytes)` with segments of `2^shift` bytes whose
    /// entries are laid out one after another: the first segment's entries start at the first
    /// 1 MiB boundary after the bookkeeping area and RST, each next one at the first 1 MiB
    /// boundary after the previous one's last entry.
    ///
    /// # Errors
    /// [`RmpLayoutError::CoverageNotGibAligned`] (the RST counts mapped size in GiB),
    /// [`RmpLayoutError::MappedSizeTooLarge`], [`RmpLayoutError::TooManyRstEntries`], and the
    /// errors of [`RmpLayout::from_segmented_msrs`].
    pub fn segmented_covering(
        rmp_base: Spa,
        covered_bytes: u64,
        shift: u32,
    ) -> Result<RmpLayout, RmpLayoutError> {
        if covered_bytes == 0 || !covered_bytes.is_multiple_of(GIB) {
            return Err(RmpLayoutError::CoverageNotGibAligned { bytes: covered_bytes });
        }
        if !(MIN_SEGMENT_SHIFT..=CONTIGUOUS_SEGMENT_SHIFT).contains(&shift) {
            return Err(RmpLayoutError::SegmentShiftOutOfRange {
                shift,
                min: MIN_SEGMENT_SHIFT,
                max: CONTIGUOUS_SEGMENT_SHIFT,
            });
        }
        let seg_bytes = 1u64 << shift;
        let count = covered_bytes.div_ceil(seg_bytes);
        if count > RST_MAX_ENTRIES as u64 {
            return Err(RmpLayoutError::TooManyRstEntries {
                count: usize::try_from(count).unwrap_or(usize::MAX),
                max: RST_MAX_ENTRIES,
            });
        }
        let mut next = align_up(rmp_base.raw() + RMP_BOOKKEEPING_BYTES + RST_BYTES, SEGMENT_ALIGN);
        let mut rst = Vec::new();
        let mut left = covered_bytes;
        while left != 0 {
            let mapped = left.min(seg_bytes);
            let gib = mapped / GIB;
            if gib > RST_MAPPED_GIB_MASK {
                return Err(RmpLayoutError::MappedSizeTooLarge { gib });
            }
            rst.push((next & RST_BASE_MASK) | gib);
            next =
                align_up(next + (mapped >> PageSize::K4.shift()) * RMP_ENTRY_BYTES, SEGMENT_ALIGN);
            left -= mapped;
        }
        let cfg = (u64::from(shift) << 8) | RMP_CFG_SEGMENTED;
        RmpLayout::from_segmented_msrs(rmp_base, 0, cfg, &rst)
    }

    /// RMP_BASE.
    pub const fn base(&self) -> Spa {
        self.base
    }

    /// One past the highest covered address. For a segmented RMP, pages below it may still be
    /// uncovered (holes); see [`RmpLayout::is_covered`].
    pub const fn covered_end(&self) -> Spa {
        self.covered_end
    }

    /// Whether the layout is segmented (RMP_CFG bit 0).
    pub const fn is_segmented(&self) -> bool {
        self.cfg & RMP_CFG_SEGMENTED != 0
    }

    /// RMP_CFG for this layout (0 for a contiguous RMP).
    pub const fn rmp_cfg(&self) -> u64 {
        self.cfg
    }

    /// log2 of the memory one segment covers: RMP_CFG bits 13:8, or 52 for a contiguous RMP
    /// (Linux `RMPTABLE_NON_SEGMENTED_SHIFT`).
    pub const fn segment_shift(&self) -> u32 {
        self.shift
    }

    /// The RST entries this layout implies, in index order up to the last segment that maps
    /// memory (empty for a contiguous RMP). Each is bits 19:0 mapped GiB, bits 51:20 base.
    pub fn rst(&self) -> Vec<u64> {
        if !self.is_segmented() {
            return Vec::new();
        }
        self.segs
            .iter()
            .map(|s| if s.covered == 0 { 0 } else { s.entries | s.covered.div_ceil(GIB) })
            .collect()
    }

    /// The segment and offset inside it of `spa`, if its page is covered.
    #[inline]
    pub(crate) fn locate(&self, spa: Spa) -> Option<(usize, u64)> {
        let pa = spa.raw();
        let idx = usize::try_from(pa >> self.shift).ok()?;
        let off = pa & ((1u64 << self.shift) - 1);
        let seg = self.segs.get(idx)?;
        (off < seg.covered).then_some((idx, off))
    }

    /// The segments, indexed by segment number.
    pub(crate) fn segments(&self) -> &[Segment] {
        &self.segs
    }

    /// Whether the page holding `spa` has an RMP entry.
    #[inline]
    pub fn is_covered(&self, spa: Spa) -> bool {
        self.locate(spa).is_some()
    }

    /// SPA of the entry for the page holding `spa`, or `None` if the page is not covered.
    /// Contiguous: RMP_BASE + 0x4000 + PFN × 16 (spec/snp.md §1.3). Segmented: segment base +
    /// ((PA & (2^shift − 1)) >> 12) × 16 with the segment `PA >> shift` (§1.5). The caller prices
    /// the read through its cache model.
    #[inline]
    pub fn entry_addr(&self, spa: Spa) -> Option<Spa> {
        let (idx, off) = self.locate(spa)?;
        let entries = self.segs[idx].entries;
        let addr = entries.checked_add((off >> PageSize::K4.shift()) * RMP_ENTRY_BYTES)?;
        Spa::try_new(addr).ok()
    }

    /// RMP_END for this layout (address of the last byte); 0 for a segmented RMP, the value
    /// that layout expects in the MSR.
    pub fn rmp_end(&self) -> Spa {
        if self.is_segmented() {
            return Spa::ZERO;
        }
        Spa::new_truncate(
            self.base.raw()
                + RMP_BOOKKEEPING_BYTES
                + (self.covered_end.raw() >> PageSize::K4.shift()) * RMP_ENTRY_BYTES
                - 1,
        )
    }

    /// The memory the RMP itself occupies, as half-open SPA ranges: the contiguous table
    /// (RMP_BASE..=RMP_END), or for a segmented RMP the bookkeeping area with the RST, then each
    /// segment's entries.
    pub fn table_ranges(&self) -> Vec<(Spa, Spa)> {
        let base = self.base.raw();
        if !self.is_segmented() {
            return vec![(self.base, Spa::new_truncate(self.rmp_end().raw() + 1))];
        }
        let mut v = vec![(self.base, Spa::new_truncate(base + RMP_BOOKKEEPING_BYTES + RST_BYTES))];
        for s in self.segs.iter().filter(|s| s.covered != 0) {
            let len = (s.covered >> PageSize::K4.shift()) * RMP_ENTRY_BYTES;
            v.push((Spa::new_truncate(s.entries), Spa::new_truncate(s.entries + len)));
        }
        v
    }
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Reject segments whose entries overlap each other or the bookkeeping area and RST.
fn check_no_overlap(base: u64, segs: &[Segment]) -> Result<(), RmpLayoutError> {
    // (start, end, index); None = bookkeeping + RST.
    let mut spans: Vec<(u64, u64, Option<usize>)> =
        vec![(base, base + RMP_BOOKKEEPING_BYTES + RST_BYTES, None)];
    for (i, s) in segs.iter().enumerate().filter(|(_, s)| s.covered != 0) {
        let len = (s.covered >> PageSize::K4.shift()) * RMP_ENTRY_BYTES;
        spans.push((s.entries, s.entries.saturating_add(len), Some(i)));
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        let ((_, a_end, a), (b_start, _, b)) = (w[0], w[1]);
        if b_start < a_end {
            let (index, other) = match (a, b) {
                (Some(a), b) => (a, b),
                (None, Some(b)) => (b, None),
                (None, None) => unreachable!("one bookkeeping span"),
            };
            return Err(RmpLayoutError::SegmentOverlap { index, other });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;

    /// The example of spec/snp.md §1.5: RMP_CFG 0x2401 → shift 36, 64 GiB per segment.
    fn doc_example() -> RmpLayout {
        let base = 0x10_0000;
        // Segment 0 maps 64 GiB, entries at 16 MiB; segment 1 maps 8 GiB, entries at 2 GiB;
        // segment 2 maps nothing (a hole); segment 3 maps 1 GiB, entries at 3 GiB.
        let rst = [0x100_0000 | 64, 0x8000_0000 | 8, 0, 0xC000_0000 | 1];
        RmpLayout::from_segmented_msrs(Spa::new(base), 0, 0x2401, &rst).unwrap()
    }

    #[test]
    fn segmented_address_formula() {
        let l = doc_example();
        assert!(l.is_segmented());
        assert_eq!(l.segment_shift(), 36);
        assert_eq!(l.rmp_cfg(), 0x2401);
        assert_eq!(l.rmp_end(), Spa::ZERO);
        // PA 0x1234_5000 is in segment 0, page 0x12345: 0x100_0000 + 0x12345 × 16.
        assert_eq!(l.entry_addr(Spa::new(0x1234_5678)), Some(Spa::new(0x100_0000 + 0x12345 * 16)));
        // Last page of segment 0.
        let last = (64 * GIB) - 4096;
        assert_eq!(l.entry_addr(Spa::new(last)), Some(Spa::new(0x100_0000 + (last >> 12) * 16)));
        // Segment 1 starts at 64 GiB = 0x10_0000_0000; PA 0x10_0000_3000 → page 3 of segment 1.
        assert_eq!(l.entry_addr(Spa::new(0x10_0000_3000)), Some(Spa::new(0x8000_0000 + 3 * 16)));
        // Segment 3 starts at 192 GiB = 0x30_0000_0000.
        assert_eq!(
            l.entry_addr(Spa::new(0x30_0010_0000)),
            Some(Spa::new(0xC000_0000 + 0x100 * 16))
        );
        assert_eq!(l.covered_end(), Spa::new(0x30_0000_0000 + GIB));
        assert_eq!(l.rst(), vec![0x100_0000 | 64, 0x8000_0000 | 8, 0, 0xC000_0000 | 1]);
    }

    #[test]
    fn segmented_coverage_holes() {
        let l = doc_example();
        // Segment 1 maps only its first 8 GiB: the rest of its 64 GiB is a hole.
        assert!(l.is_covered(Spa::new(0x10_0000_0000 + 8 * GIB - 4096)));
        assert!(!l.is_covered(Spa::new(0x10_0000_0000 + 8 * GIB)));
        assert_eq!(l.entry_addr(Spa::new(0x10_0000_0000 + 8 * GIB)), None);
        // Segment 2 maps nothing.
        assert!(!l.is_covered(Spa::new(0x20_0000_0000)));
        // Segment 3 maps 1 GiB; beyond it and beyond the RST nothing is covered.
        assert!(l.is_covered(Spa::new(0x30_0000_0000)));
        assert!(!l.is_covered(Spa::new(0x30_0000_0000 + GIB)));
        assert!(!l.is_covered(Spa::new(0x40_0000_0000)));
        assert!(!l.is_covered(Spa::new((1 << 52) - 1)));
    }

    #[test]
    fn mapped_size_capped_to_segment() {
        // shift 30: 1 GiB segments; an entry claiming 5 GiB maps only its own 1 GiB (Linux caps).
        let l = RmpLayout::from_segmented_msrs(Spa::new(0), 0, (30 << 8) | 1, &[0x10_0000 | 5])
            .unwrap();
        assert!(l.is_covered(Spa::new(GIB - 4096)));
        assert!(!l.is_covered(Spa::new(GIB)));
    }

    #[test]
    fn segmented_errors() {
        use RmpLayoutError as E;
        let b = Spa::new(0x10_0000);
        let ok = [0x100_0000 | 1];
        assert!(matches!(
            RmpLayout::from_segmented_msrs(b, 0, 0x2400, &ok),
            Err(E::NotSegmented { rmp_cfg: 0x2400 })
        ));
        assert!(matches!(
            RmpLayout::from_segmented_msrs(b, 0, (29 << 8) | 1, &ok),
            Err(E::SegmentShiftOutOfRange { shift: 29, .. })
        ));
        assert!(matches!(
            RmpLayout::from_segmented_msrs(b, 0, (53 << 8) | 1, &ok),
            Err(E::SegmentShiftOutOfRange { shift: 53, .. })
        ));
        assert!(matches!(
            RmpLayout::from_segmented_msrs(Spa::new(0x10_1000), 0, 0x2401, &ok),
            Err(E::SegmentedBaseMisaligned { base: 0x10_1000 })
        ));
        assert!(matches!(
            RmpLayout::from_segmented_msrs(b, 0x1fff, 0x2401, &ok),
            Err(E::RmpEndNotZero { end: 0x1fff })
        ));
        assert!(matches!(
            RmpLayout::from_segmented_msrs(b, 0, 0x2401, &[0; 513]),
            Err(E::TooManyRstEntries { count: 513, .. })
        ));
        assert!(matches!(
            RmpLayout::from_segmented_msrs(b, 0, 0x2401, &[0, 0]),
            Err(E::NoSegments)
        ));
        // shift 51: index 2 would start at 2^52.
        assert!(matches!(
            RmpLayout::from_segmented_msrs(
                b,
                0,
                (51 << 8) | 1,
                &[0x100_0000 | 1, 0, 0x200_0000 | 1]
            ),
            Err(E::SegmentBeyondAddressSpace { index: 2, shift: 51 })
        ));
        // 1 GiB of coverage needs 4 MiB of entries: a second segment 1 MiB later overlaps.
        assert!(matches!(
            RmpLayout::from_segmented_msrs(b, 0, (30 << 8) | 1, &[0x100_0000 | 1, 0x110_0000 | 1]),
            Err(E::SegmentOverlap { index: 0, other: Some(1) })
        ));
        // Entries on top of the bookkeeping area and RST.
        assert!(matches!(
            RmpLayout::from_segmented_msrs(b, 0, 0x2401, &[0x10_0000 | 1]),
            Err(E::SegmentOverlap { index: 0, other: None })
        ));
        assert!(matches!(
            RmpLayout::segmented_covering(b, GIB + 4096, 36),
            Err(E::CoverageNotGibAligned { .. })
        ));
        assert!(matches!(
            RmpLayout::segmented_covering(b, 513 * GIB, 30),
            Err(E::TooManyRstEntries { count: 513, .. })
        ));
        assert!(matches!(
            RmpLayout::segmented_covering(b, 1 << 51, 52),
            Err(E::MappedSizeTooLarge { .. })
        ));
    }

    #[test]
    fn segmented_covering_lays_segments_out_in_order() {
        // 200 GiB with 64 GiB segments: 64 + 64 + 64 + 8.
        let base = 0x10_0000;
        let l = RmpLayout::segmented_covering(Spa::new(base), 200 * GIB, 36).unwrap();
        let rst = l.rst();
        assert_eq!(rst.len(), 4);
        // First segment at the first 1 MiB boundary after bookkeeping + RST (0x10_5000 → 0x20_0000).
        assert_eq!(rst[0], 0x20_0000 | 64);
        // 64 GiB need 256 MiB of entries.
        assert_eq!(rst[1], (0x20_0000 + (256 << 20)) | 64);
        assert_eq!(rst[3] & 0xfffff, 8);
        assert_eq!(l.covered_end().raw(), 200 * GIB);
        assert!(l.is_covered(Spa::new(200 * GIB - 4096)));
        assert!(!l.is_covered(Spa::new(200 * GIB)));
        assert_eq!(l.entry_addr(Spa::new(0x10_0000_0000)), Some(Spa::new(0x20_0000 + (256 << 20))));
        // The table occupies bookkeeping + RST, then four runs of entries.
        let t = l.table_ranges();
        assert_eq!(t.len(), 5);
        assert_eq!(t[0], (Spa::new(base), Spa::new(base + 0x5000)));
        assert_eq!(t[1], (Spa::new(0x20_0000), Spa::new(0x20_0000 + (256 << 20))));
    }

    #[test]
    fn contiguous_is_one_segment_with_shift_52() {
        let l = RmpLayout::from_msrs(Spa::new(0x10_0000), Spa::new(0x110_3fff)).unwrap();
        assert!(!l.is_segmented());
        assert_eq!(l.segment_shift(), CONTIGUOUS_SEGMENT_SHIFT);
        assert_eq!(l.segments().len(), 1);
        assert_eq!(l.segments()[0].entries, 0x10_0000 + RMP_BOOKKEEPING_BYTES);
        assert!(l.rst().is_empty());
        assert_eq!(l.table_ranges(), vec![(Spa::new(0x10_0000), Spa::new(0x110_4000))]);
    }

    proptest! {
        /// Linux's rule: a contiguous RMP is the segment formula with shift 52 and the segment's
        /// entries at RMP_BASE + 16 KiB. A segmented layout with shift 52 and one segment at the
        /// same place agrees with it on every covered page.
        #[test]
        fn contiguous_agrees_with_segment_formula(
            base_mib in 1u64..1024, gib in 1u64..64, pa in 0u64..(64 * GIB),
        ) {
            let base = base_mib << 20;
            let contiguous = RmpLayout::covering(Spa::new(base), gib * GIB).unwrap();
            let shift = CONTIGUOUS_SEGMENT_SHIFT;
            let seg_base = base + RMP_BOOKKEEPING_BYTES;
            let formula = seg_base + ((pa & ((1u64 << shift) - 1)) >> 12) * 16;
            let spa = Spa::new(pa);
            if pa < gib * GIB {
                prop_assert_eq!(contiguous.entry_addr(spa), Some(Spa::new(formula)));
            } else {
                prop_assert_eq!(contiguous.entry_addr(spa), None);
            }
            // One segment, shift 52, entries 1 MiB-aligned somewhere after the RST.
            let seg_entries = align_up(base + RMP_BOOKKEEPING_BYTES + RST_BYTES, 1 << 20);
            let seg = RmpLayout::from_segmented_msrs(
                Spa::new(base), 0, (52 << 8) | 1, &[seg_entries | gib],
            ).unwrap();
            let expect = (pa < gib * GIB).then(|| Spa::new(seg_entries + (pa >> 12) * 16));
            prop_assert_eq!(seg.entry_addr(spa), expect);
            prop_assert_eq!(seg.is_covered(spa), contiguous.is_covered(spa));
        }

        /// The segmented formula against a direct computation for random layouts.
        #[test]
        fn segmented_formula(shift in 30u32..40, n in 1usize..8, pa in 0u64..(1 << 43)) {
            let l = RmpLayout::segmented_covering(Spa::new(0), (n as u64) << shift, shift).unwrap();
            let idx = usize::try_from(pa >> shift).unwrap();
            let expect = l.rst().get(idx).filter(|e| **e & 0xfffff != 0).map(|e| {
                Spa::new((e & RST_BASE_MASK) + ((pa & ((1 << shift) - 1)) >> 12) * 16)
            });
            prop_assert_eq!(l.entry_addr(Spa::new(pa)), expect);
        }
    }
}
