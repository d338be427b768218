//! The memory services through which generators obtain host memory at run time (DESIGN
//! "Layers"): where a kernel object or a guest folio lands follows from allocation history in the
//! root crate's physical allocator, not from the generator.

use crate::event::AllocKind;
use crate::{Gpa, Spa, VmId};

/// Host memory, as the engine offers it to a running generator.
pub trait MemoryServices {
    /// Allocate 2^`order` contiguous, naturally aligned 4 KiB pages; `None` when memory is
    /// exhausted.
    fn alloc_pages(&mut self, order: u8, kind: AllocKind) -> Option<Spa>;
    /// Return pages obtained from [`MemoryServices::alloc_pages`].
    fn free_pages(&mut self, spa: Spa, order: u8);
    /// Allocate a guest_memfd folio of 2^`order` pages for `gpa` of VM `vm`.
    fn gmem_alloc(&mut self, vm: VmId, gpa: Gpa, order: u8) -> Option<Spa>;
    /// Bytes of host memory.
    fn memory_bytes(&self) -> u64;
    /// Bytes currently free.
    fn free_bytes(&self) -> u64;
}
