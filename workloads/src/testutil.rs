//! Test helpers shared by the generators' unit tests.

use crate::{NullMemory, Params, WorkloadInfo};
use sim_core::{Agent, Event};

/// Every event of every stream as `(stream, agent, event)`, streams taken round-robin one
/// event at a time (an interleaving, not the engine's cycle order).
pub(crate) fn drain(info: &WorkloadInfo, p: &Params, seed: u64) -> Vec<(usize, Agent, Event)> {
    let mut w = info.instantiate(p, seed).unwrap();
    let mut mem = NullMemory::default();
    let n = w.agents().len();
    let mut out = Vec::new();
    let mut live = vec![true; n];
    while live.iter().any(|&l| l) {
        for (s, l) in live.iter_mut().enumerate() {
            if *l {
                match w.next(s, &mut mem) {
                    Some(e) => out.push((s, w.agent_of_last(s), e)),
                    None => *l = false,
                }
            }
        }
    }
    out
}

/// Counts this thread's heap allocations, so that a test can check that a generator's steady
/// state allocates nothing (tests run on threads of their own).
struct CountingAlloc;

std::thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// Test-only: the one way to observe allocations. It only counts, then defers to the system
// allocator.
#[allow(unsafe_code)]
// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are ours; the counter is a const-initialised thread-local `Cell`,
// which never allocates.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `alloc`/`realloc` above, which are `System`'s.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged; `ptr` came from `System`.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Heap allocations (and reallocations) made by this thread so far.
pub(crate) fn allocations() -> u64 {
    ALLOCATIONS.with(std::cell::Cell::get)
}
