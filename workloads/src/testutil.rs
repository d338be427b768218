//! Test helpers shared by the generators' unit tests.

use crate::{Params, WorkloadInfo};
use sim_core::event::AllocKind;
use sim_core::{Agent, Event, Gpa, MemoryServices, Spa};

/// A bump allocator standing in for the host's.
#[derive(Debug, Default)]
pub(crate) struct Bump(u64);

impl MemoryServices for Bump {
    fn alloc_pages(&mut self, order: u8, _: AllocKind) -> Option<Spa> {
        let sz = 4096u64 << order;
        self.0 = self.0.next_multiple_of(sz);
        let a = Spa::new(self.0 + (1 << 24));
        self.0 += sz;
        Some(a)
    }
    fn free_pages(&mut self, _: Spa, _: u8) {}
    fn gmem_alloc(&mut self, _: u32, _: Gpa, order: u8) -> Option<Spa> {
        self.alloc_pages(order, AllocKind::Guest)
    }
    fn memory_bytes(&self) -> u64 {
        1 << 32
    }
    fn free_bytes(&self) -> u64 {
        1 << 31
    }
}

/// Every event of every stream as `(stream, agent, event)`, streams taken round-robin one
/// event at a time (an interleaving, not the engine's cycle order).
pub(crate) fn drain(info: &WorkloadInfo, p: &Params, seed: u64) -> Vec<(usize, Agent, Event)> {
    let mut w = info.instantiate(p, seed).unwrap();
    let mut mem = Bump::default();
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
