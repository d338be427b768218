//! The `#[must_use]` token a page-table change returns (STYLE rule 16).

use crate::addr::PagedAddr;
use sim_core::PageSize;

/// A range of input addresses whose cached translations are stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidationRange<V> {
    /// First address (aligned to `stale_size`).
    pub start: V,
    /// Length in bytes.
    pub bytes: u64,
    /// The size of the translations that became stale (what a TLB may hold for the range).
    pub stale_size: PageSize,
}

/// What a page-table change requires of every TLB (and, later, paging-structure cache) that
/// may hold the old translations. It must be handed to the invalidation path
/// ([`crate::Tlb::invalidate`], or a shootdown built on it) or dropped explicitly with
/// [`PendingInvalidation::ignore`] and a comment saying why that is safe. Tokens of several
/// changes can be merged into one flush.
#[must_use = "page-table changes must reach the TLBs: pass to Tlb::invalidate or call .ignore()"]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingInvalidation<V> {
    ranges: Vec<InvalidationRange<V>>,
    freed_tables: bool,
}

impl<V: PagedAddr> PendingInvalidation<V> {
    /// Nothing to invalidate (e.g. a new mapping where nothing was present: not-present entries
    /// are never cached).
    pub const fn none() -> Self {
        PendingInvalidation { ranges: Vec::new(), freed_tables: false }
    }

    pub(crate) fn range(start: V, size: PageSize, stale_size: PageSize) -> Self {
        PendingInvalidation {
            ranges: vec![InvalidationRange { start, bytes: size.bytes(), stale_size }],
            freed_tables: false,
        }
    }

    pub(crate) fn with_freed_tables(mut self) -> Self {
        self.freed_tables = true;
        self
    }

    /// Whether nothing needs invalidating.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && !self.freed_tables
    }

    /// The stale ranges.
    pub fn ranges(&self) -> &[InvalidationRange<V>] {
        &self.ranges
    }

    /// Whether a table page was freed: paging-structure caches must drop it too (Linux does a
    /// full flush after a collapse, spec/physmap.md §2.2).
    pub const fn freed_tables(&self) -> bool {
        self.freed_tables
    }

    /// Total bytes covered by the ranges.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.bytes).sum()
    }

    /// Fold another change's token into this one.
    pub fn merge(&mut self, other: PendingInvalidation<V>) {
        self.ranges.extend(other.ranges);
        self.freed_tables |= other.freed_tables;
    }

    /// Drop the token on purpose. Say why at the call site.
    pub fn ignore(self) {}
}
