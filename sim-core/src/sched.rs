//! The deterministic multi-agent scheduler (DESIGN "The timing model"; STYLE rule 13).
//!
//! Producers that offer one stream per agent (generators, the race explorer) are merged into one
//! ordered stream by `(cycle, agent, stream index)`: the agent whose clock is lowest goes next,
//! ties broken by the agent order, then by stream index. The order is total (no two ready
//! entries compare equal) and depends only on the inputs, never on hashing or threads.

use crate::{Agent, Cycles};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The key a ready stream is ordered by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadyKey {
    /// The agent's clock when its next event is due.
    pub at: Cycles,
    /// The agent.
    pub agent: Agent,
    /// Index of the stream (unique per stream).
    pub stream: usize,
}

/// A min-heap of ready streams.
#[derive(Debug, Default, Clone)]
pub struct Scheduler {
    heap: BinaryHeap<Reverse<ReadyKey>>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    /// Mark stream `stream` of `agent` ready at cycle `at`.
    pub fn ready(&mut self, stream: usize, agent: Agent, at: Cycles) {
        self.heap.push(Reverse(ReadyKey { at, agent, stream }));
    }

    /// The next stream to run, removed from the ready set; the caller re-adds it with its new
    /// clock after executing one event.
    pub fn pop(&mut self) -> Option<ReadyKey> {
        self.heap.pop().map(|Reverse(k)| k)
    }

    /// Streams ready.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no stream is ready.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The pop order is the sorted order of the keys, whatever the insertion order: total
        /// and stable.
        #[test]
        fn order_is_total_and_stable(entries in proptest::collection::vec((0u64..50, 0u32..4), 1..60), rot in 0usize..60) {
            let keys: Vec<ReadyKey> = entries.iter().enumerate()
                .map(|(i, &(t, c))| ReadyKey { at: Cycles::new(t), agent: Agent::host(c), stream: i })
                .collect();
            let mut a = Scheduler::new();
            for k in &keys { a.ready(k.stream, k.agent, k.at); }
            let mut b = Scheduler::new();
            let n = keys.len();
            for i in 0..n { let k = keys[(i + rot) % n]; b.ready(k.stream, k.agent, k.at); }
            let oa: Vec<_> = std::iter::from_fn(|| a.pop()).collect();
            let ob: Vec<_> = std::iter::from_fn(|| b.pop()).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            prop_assert_eq!(&oa, &sorted);
            prop_assert_eq!(&oa, &ob);
        }
    }
}
