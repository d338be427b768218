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

/// The first `turns` events of [`drain`]'s interleaving, with `take_work`: each `work` that
/// [`crate::Workload::next_work`] gives right after an event is returned at the stream's next
/// turn instead of calling `next` (what the engine does).
fn drain_turns(
    info: &WorkloadInfo,
    p: &Params,
    seed: u64,
    turns: usize,
    take_work: bool,
) -> Vec<(usize, Agent, Event)> {
    let mut w = info.instantiate(p, seed).unwrap();
    let mut mem = NullMemory::default();
    let n = w.agents().len();
    let mut out = Vec::new();
    let mut live = vec![true; n];
    let mut pending: Vec<Option<(Agent, u64)>> = vec![None; n];
    while live.iter().any(|&l| l) && out.len() < turns {
        for (s, l) in live.iter_mut().enumerate() {
            if !*l {
                continue;
            }
            if let Some((a, count)) = pending[s].take() {
                out.push((s, a, Event::Work { count }));
                continue;
            }
            match w.next(s, &mut mem) {
                Some(e) => {
                    let a = w.agent_of_last(s);
                    out.push((s, a, e));
                    if take_work {
                        pending[s] = w.next_work(s).map(|c| (a, c));
                    }
                }
                None => *l = false,
            }
        }
    }
    out
}

/// Every built-in workload gives the same events, in the same order and from the same agents,
/// whether its `work` events are taken with `next_work` or returned by `next`; and the ones
/// that implement `next_work` do give it.
#[test]
fn next_work_changes_no_stream() {
    let mut taken = 0;
    for info in crate::registry() {
        let p = Params::parse(std::iter::empty::<&str>()).unwrap();
        let plain = drain_turns(info, &p, 3, 150_000, false);
        let with = drain_turns(info, &p, 3, 150_000, true);
        assert_eq!(plain.len(), with.len(), "{}", info.name);
        for (i, (a, b)) in plain.iter().zip(&with).enumerate() {
            assert_eq!(a, b, "{} event {i}", info.name);
        }
        if ["snp-launch", "snp-churn"].contains(&info.name) {
            taken += 1;
            assert!(plain.iter().any(|(_, _, e)| matches!(e, Event::Work { .. })), "{}", info.name);
        }
    }
    assert_eq!(taken, 2);
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
