//! The deterministic multi-agent scheduler (DESIGN "The timing model"; STYLE rule 13).
//!
//! Producers that offer one stream per agent (generators, the race explorer) are merged into one
//! ordered stream by `(cycle, agent, stream index)`: the agent whose clock is lowest goes next,
//! ties broken by the agent order, then by stream index. The order is total (no two ready
//! entries compare equal) and depends only on the inputs, never on hashing or threads.

use crate::agent::{Context, Firmware, PrivLevel};
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

/// The ready streams, each as one `u128` key: its clock in the high 64 bits, and in the low
/// bits its stream's position in the order of `(agent rank, stream index)` over every stream
/// seen so far (`ord`). Comparing keys then compares `(at, agent, stream)` exactly, in one
/// integer comparison (comparing [`Agent`]s through their derived `Ord` on every comparison was
/// a tenth of a workload run's time; tuples of packed ranks still cost a few branches each).
/// The positions are recomputed, and the waiting keys rewritten, only when a stream changes
/// agent (in a workload run: once per stream, at the start).
///
/// Why two shapes: a run has a handful of streams (one per CPU), where one linear scan of an
/// unordered vector finds the minimum in a few comparisons, cheaper than a heap's sift down and
/// up; past [`Scheduler::LINEAR_MAX`] ready streams the keys move to a binary heap. Both give
/// the same order: keys are unique (the positions are), so the minimum is unique.
#[derive(Debug, Default, Clone)]
pub struct Scheduler {
    /// Ready keys, unordered (while the heap is empty and there are few).
    small: Vec<u128>,
    /// Ready keys once there have been more than [`Scheduler::LINEAR_MAX`] at once.
    heap: BinaryHeap<Reverse<u128>>,
    /// Per stream: its agent, the agent's rank ([`agent_rank`]) and its position `ord`.
    agents: Vec<Agent>,
    ranks: Vec<u128>,
    ord: Vec<u64>,
    /// The stream at each position.
    by_ord: Vec<usize>,
}

/// `agent` as an integer that orders exactly as `Agent`'s derived `Ord` does: variant indices
/// and fields packed most significant first (the variant of [`Agent`], the CPU, the variant of
/// [`Context`], its first and second fields, the variant and value of [`PrivLevel`]).
fn agent_rank(agent: Agent) -> u128 {
    let pack =
        |parts: [(u128, u32); 7]| parts.iter().fold(0u128, |acc, &(v, bits)| (acc << bits) | v);
    match agent {
        Agent::Cpu { cpu, ctx } => {
            let (cv, a, b, lv, l) = match ctx {
                Context::HostKernel => (0, 0, 0, 0, 0),
                Context::HostProcess(p) => (1, p, 0, 0, 0),
                Context::Guest { vm, vcpu, level } => {
                    let (lv, l) = match level {
                        PrivLevel::Vmpl(n) => (0, n),
                        PrivLevel::Vtl(n) => (1, n),
                    };
                    (2, vm, vcpu, lv, l)
                }
            };
            pack([
                (0, 2),
                (u128::from(cpu), 32),
                (cv, 2),
                (u128::from(a), 32),
                (u128::from(b), 32),
                (lv, 1),
                (u128::from(l), 8),
            ])
        }
        Agent::Device(d) => {
            pack([(1, 2), (u128::from(d), 32), (0, 2), (0, 32), (0, 32), (0, 1), (0, 8)])
        }
        Agent::Firmware(f) => {
            let v = match f {
                Firmware::AmdSp => 0,
                Firmware::TdxModule => 1,
            };
            pack([(2, 2), (v, 32), (0, 2), (0, 32), (0, 32), (0, 1), (0, 8)])
        }
    }
}

/// The smallest key among the streams waiting when one was popped by
/// [`Scheduler::pop_bounded`] (no stream waiting: above every key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound(u128);

impl Scheduler {
    /// Most ready streams kept in the unordered vector; more go to the heap.
    pub const LINEAR_MAX: usize = 16;

    /// An empty scheduler.
    pub fn new() -> Scheduler {
        Scheduler::default()
    }

    /// Mark stream `stream` of `agent` ready at cycle `at`. A stream is in the scheduler at
    /// most once (the caller re-adds it after running its event).
    #[inline]
    pub fn ready(&mut self, stream: usize, agent: Agent, at: Cycles) {
        if self.agents.get(stream) != Some(&agent) {
            self.remember(stream, agent);
        }
        self.requeue(stream, at);
    }

    /// Mark stream `stream` ready again at cycle `at`, under the agent it was last made ready
    /// with (what the engine does after running one of its events).
    ///
    /// # Panics
    /// If `stream` was never made ready with [`Scheduler::ready`].
    #[inline]
    pub fn requeue(&mut self, stream: usize, at: Cycles) {
        let key = self.key(stream, at);
        if self.heap.is_empty() && self.small.len() < Self::LINEAR_MAX {
            self.small.push(key);
        } else {
            self.push_heap(key);
        }
    }

    /// Add `key` to the heap, moving the vector's keys there first.
    #[cold]
    #[inline(never)]
    fn push_heap(&mut self, key: u128) {
        self.heap.extend(self.small.drain(..).map(Reverse));
        self.heap.push(Reverse(key));
    }

    /// Record `agent` as stream `stream`'s: recompute every stream's position and rewrite the
    /// waiting keys with the new positions.
    #[cold]
    fn remember(&mut self, stream: usize, agent: Agent) {
        let rank = agent_rank(agent);
        if self.agents.len() <= stream {
            // Every slot holds an agent with its own rank, so a slot filled here in passing
            // is consistent when its stream comes.
            self.agents.resize(stream + 1, agent);
            self.ranks.resize(stream + 1, rank);
        }
        self.agents[stream] = agent;
        self.ranks[stream] = rank;
        let old = std::mem::take(&mut self.by_ord);
        let mut by_ord: Vec<usize> = (0..self.agents.len()).collect();
        by_ord.sort_unstable_by_key(|&s| (self.ranks[s], s));
        self.ord = vec![0; by_ord.len()];
        for (i, &s) in by_ord.iter().enumerate() {
            self.ord[s] = i as u64;
        }
        self.by_ord = by_ord;
        let ord = &self.ord;
        let rewrite = |k: u128| {
            let s = old[usize::try_from(k & u128::from(u64::MAX)).expect("a position")];
            (k >> 64) << 64 | u128::from(ord[s])
        };
        for k in &mut self.small {
            *k = rewrite(*k);
        }
        if !self.heap.is_empty() {
            let keys: Vec<_> = std::mem::take(&mut self.heap)
                .into_iter()
                .map(|Reverse(k)| Reverse(rewrite(k)))
                .collect();
            self.heap = BinaryHeap::from(keys);
        }
    }

    /// The next stream to run, removed from the ready set; the caller re-adds it with its new
    /// clock after executing one event.
    #[inline]
    pub fn pop(&mut self) -> Option<ReadyKey> {
        self.pop_bounded().map(|(k, _)| k)
    }

    /// [`Scheduler::pop`], also returning the smallest key among the streams still waiting.
    /// While nothing else is made ready, the stream popped, once ready again at `at`, is the
    /// one the next [`Scheduler::pop`] would return exactly when
    /// [`Scheduler::first_again`]`(stream, at, bound)`: the caller may then run its next event
    /// at once, without the round trip (a workload's CPU often runs several events in a row).
    #[inline]
    pub fn pop_bounded(&mut self) -> Option<(ReadyKey, Bound)> {
        let (key, bound) = if self.heap.is_empty() {
            let (first, rest) = self.small.split_first()?;
            // The smallest key and the second smallest, in one pass.
            let (mut best, mut second) = ((0, *first), u128::MAX);
            for (i, &k) in rest.iter().enumerate() {
                if k < best.1 {
                    second = best.1;
                    best = (i + 1, k);
                } else if k < second {
                    second = k;
                }
            }
            (self.small.swap_remove(best.0), second)
        } else {
            let key = self.heap.pop()?.0;
            (key, self.heap.peek().map_or(u128::MAX, |r| r.0))
        };
        #[allow(clippy::cast_possible_truncation)] // the halves of the key
        let (at, ord) = ((key >> 64) as u64, key as u64);
        let stream = self.by_ord[usize::try_from(ord).expect("a position")];
        let k = ReadyKey { at: Cycles::new(at), agent: self.agents[stream], stream };
        Some((k, Bound(bound)))
    }

    /// Whether stream `stream`, ready again at `at` (under the agent it was popped with), would
    /// be popped before every stream waiting when `bound` was taken ([`Scheduler::pop_bounded`]).
    #[inline]
    pub fn first_again(&self, stream: usize, at: Cycles, bound: Bound) -> bool {
        self.key(stream, at) < bound.0
    }

    /// Stream `stream`'s key when ready at `at`: the clock, then its position.
    #[inline]
    fn key(&self, stream: usize, at: Cycles) -> u128 {
        u128::from(at.get()) << 64 | u128::from(self.ord[stream])
    }

    /// Streams ready.
    pub fn len(&self) -> usize {
        self.small.len() + self.heap.len()
    }

    /// Whether no stream is ready.
    pub fn is_empty(&self) -> bool {
        self.small.is_empty() && self.heap.is_empty()
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

        /// Interleaved re-adds and pops (the engine's loop, streams changing agent, the ready
        /// set growing past the linear bound and shrinking) pop what a sorted set would.
        #[test]
        fn interleaved_matches_sorted_set(ops in proptest::collection::vec((0usize..40, 0u64..30, 0u32..3, any::<bool>()), 1..300)) {
            let mut s = Scheduler::new();
            let mut reference = std::collections::BTreeSet::new();
            let mut last = std::collections::BTreeMap::new();
            for (stream, t, cpu, pop) in ops {
                if pop {
                    let want = reference.pop_first();
                    prop_assert_eq!(s.pop(), want);
                } else if !reference.iter().any(|k: &ReadyKey| k.stream == stream) {
                    let k = ReadyKey { at: Cycles::new(t), agent: Agent::host(cpu), stream };
                    if last.insert(stream, k.agent) == Some(k.agent) {
                        s.requeue(stream, k.at);
                    } else {
                        s.ready(stream, k.agent, k.at);
                    }
                    reference.insert(k);
                }
                prop_assert_eq!(s.len(), reference.len());
            }
            let rest: Vec<_> = std::iter::from_fn(|| s.pop()).collect();
            prop_assert_eq!(rest, reference.into_iter().collect::<Vec<_>>());
        }

        /// The engine's run-ahead: after `pop_bounded`, a stream ready again at a time for which
        /// `first_again` holds is exactly the stream the next pop would return; otherwise it is
        /// requeued. Either way the order of events is the plain requeue-and-pop order (with the
        /// ready set in both shapes: a few streams, and more than the linear bound).
        #[test]
        fn run_ahead_is_the_pop_order(starts in proptest::collection::vec((0u64..40, 0u32..3), 1..24), steps in proptest::collection::vec(0u64..25, 1..400)) {
            let mut plain = Scheduler::new();
            let mut ahead = Scheduler::new();
            for (i, &(t, cpu)) in starts.iter().enumerate() {
                plain.ready(i, Agent::host(cpu), Cycles::new(t));
                ahead.ready(i, Agent::host(cpu), Cycles::new(t));
            }
            let mut order_plain = Vec::new();
            for (n, &d) in steps.iter().enumerate() {
                let Some(k) = plain.pop() else { break };
                order_plain.push((k.stream, k.at));
                // Every seventh step a stream ends (is not requeued).
                if n % 7 != 6 {
                    plain.requeue(k.stream, k.at + Cycles::new(d));
                }
            }
            let mut order_ahead = Vec::new();
            let mut n = 0;
            'outer: while let Some((k, bound)) = ahead.pop_bounded() {
                let mut at = k.at;
                loop {
                    if n == steps.len() { break 'outer; }
                    order_ahead.push((k.stream, at));
                    let d = steps[n];
                    n += 1;
                    if n % 7 == 0 { break; }
                    at += Cycles::new(d);
                    if !ahead.first_again(k.stream, at, bound) {
                        ahead.requeue(k.stream, at);
                        break;
                    }
                }
            }
            prop_assert_eq!(order_ahead, order_plain);
        }

        /// The packed rank orders agents exactly as their derived `Ord`.
        #[test]
        fn rank_agrees_with_ord(a in agent(), b in agent()) {
            prop_assert_eq!(agent_rank(a).cmp(&agent_rank(b)), a.cmp(&b));
        }
    }

    fn agent() -> impl Strategy<Value = Agent> {
        let edge = prop_oneof![Just(0u32), Just(1), Just(u32::MAX), any::<u32>()];
        let level = prop_oneof![
            (0u8..4).prop_map(PrivLevel::Vmpl),
            prop_oneof![Just(0u8), Just(u8::MAX), any::<u8>()].prop_map(PrivLevel::Vtl),
        ];
        let ctx = prop_oneof![
            Just(Context::HostKernel),
            edge.clone().prop_map(Context::HostProcess),
            (edge.clone(), edge.clone(), level).prop_map(|(vm, vcpu, level)| Context::Guest {
                vm,
                vcpu,
                level
            }),
        ];
        prop_oneof![
            (edge.clone(), ctx).prop_map(|(cpu, ctx)| Agent::Cpu { cpu, ctx }),
            edge.prop_map(Agent::Device),
            prop_oneof![Just(Firmware::AmdSp), Just(Firmware::TdxModule)].prop_map(Agent::Firmware),
        ]
    }
}
