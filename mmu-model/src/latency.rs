//! The cache-latency model that prices memory references made by the translation hardware:
//! walk references and the check stage's reads (RMP entries). Thin for now — one latency per
//! reference — behind a trait so that a cache hierarchy can replace it.

use crate::level::Level;
use sim_core::{Cycles, Spa};

/// What kind of reference is being priced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemRefKind {
    /// A page walk read a paging-structure entry.
    TableRead(Level),
    /// A page walk set A/D bits in an entry.
    TableAdWrite(Level),
    /// The check stage read a piece of memory (an RMP entry).
    CheckRead,
}

/// Prices one memory reference. Implementations may keep state (a cache hierarchy); `&mut`
/// lets them update it. Must be deterministic.
pub trait CacheLatency {
    /// Cycles the reference to `spa` costs.
    fn latency(&mut self, spa: Spa, kind: MemRefKind) -> Cycles;

    /// The summed cycles of a walk's reads, in order: `addrs[i]` is an entry of level
    /// `levels[i]` ([`MemRefKind::TableRead`]; as many levels as addresses). The same as
    /// asking [`latency`](Self::latency) for each, which is what this default does; an
    /// implementation may price them together.
    #[inline]
    fn table_reads(&mut self, addrs: &[Spa], levels: &[Level]) -> Cycles {
        debug_assert_eq!(addrs.len(), levels.len(), "one level per address");
        addrs.iter().zip(levels).map(|(&a, &l)| self.latency(a, MemRefKind::TableRead(l))).sum()
    }
}

/// Every reference costs the same: `MmuConfig::walk_ref_latency`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlatLatency {
    /// Cycles per reference.
    pub per_ref: Cycles,
}

impl CacheLatency for FlatLatency {
    fn latency(&mut self, _spa: Spa, _kind: MemRefKind) -> Cycles {
        self.per_ref
    }

    #[inline]
    fn table_reads(&mut self, addrs: &[Spa], _levels: &[Level]) -> Cycles {
        // The sum of `addrs.len()` equal saturating additions.
        Cycles::new(self.per_ref.get().saturating_mul(addrs.len() as u64))
    }
}

impl<L: CacheLatency + ?Sized> CacheLatency for &mut L {
    fn latency(&mut self, spa: Spa, kind: MemRefKind) -> Cycles {
        (**self).latency(spa, kind)
    }

    #[inline]
    fn table_reads(&mut self, addrs: &[Spa], levels: &[Level]) -> Cycles {
        (**self).table_reads(addrs, levels)
    }
}
