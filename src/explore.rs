//! `ccsim explore`: run the step programs of a scenario under every interleaving up to a
//! preemption bound, and check the machine's invariants and the scenario's expectations in each.
//!
//! The method is stateless model checking with a preemption bound (Musuvathi and Qadeer,
//! "Iterative context bounding", PLDI 2007, the method loom and CHESS use): a schedule is the
//! sequence of programs that take each atomic step; each schedule runs from a fresh machine
//! (the scenario's header, `state` lines and the lines outside programs, in file order), and a
//! depth-first search over the choice points visits every schedule whose number of
//! *preemptions* — switching away from a program that could have gone on — is at most the
//! bound. Switching away from a program that finished or is blocked is free.
//!
//! The explorer knows nothing of any race: a program's event is a machine operation
//! ([`Machine::op_begin`]) of one or more atomic steps ([`Machine::op_step`]); a step that
//! reports [`Step::Blocked`] (a spin on a frozen SPTE, a lock held elsewhere) had no effect,
//! and its program is not scheduled again until another program takes a step. A schedule
//! fails when an expectation fails (in a program: after that program's previous event), when
//! an invariant of [`Machine::invariants`] is violated (checked whenever no operation is in
//! flight, and at the end), when every unfinished program is blocked (a deadlock), or when an
//! `expect final` line fails.

use crate::engine::ConfigLayers;
use crate::input;
use crate::machine::{Machine, Op, Outcome, Step};
use crate::report::InputInfo;
use anyhow::{anyhow, bail};
use sim_core::{Check, Record, Setting};
use std::collections::BTreeMap;
use std::path::Path;

/// How to explore.
#[derive(Clone, Debug)]
pub struct ExploreOptions {
    /// Most preemptions per schedule.
    pub bound: u32,
    /// Stop after this many schedules (the result then says the search was cut).
    pub max_schedules: u64,
    /// Stop at the first failing schedule.
    pub stop_at_first: bool,
    /// Worker threads: 0 one per core, 1 none (the search runs on the calling thread).
    /// The result does not depend on it.
    pub threads: usize,
}

impl Default for ExploreOptions {
    fn default() -> Self {
        ExploreOptions { bound: 2, max_schedules: 1_000_000, stop_at_first: true, threads: 0 }
    }
}

/// A schedule that failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Failure {
    /// The program index of every step, replayable with `--replay`.
    pub schedule: Vec<usize>,
    /// What went wrong.
    pub reason: String,
}

/// What an exploration found.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExploreResult {
    /// Program names, by index.
    pub programs: Vec<String>,
    /// Schedules run.
    pub schedules: u64,
    /// Whether every schedule within the bound was run.
    pub complete: bool,
    /// Steps taken in all schedules.
    pub steps: u64,
    /// Failing schedules (at most one with `stop_at_first`).
    pub failures: Vec<Failure>,
}

/// A scenario split for exploration.
#[derive(Debug)]
struct Scenario {
    name: String,
    settings: Vec<(String, Setting)>,
    /// Lines outside programs, in file order, with their line numbers.
    prelude: Vec<(u64, Record)>,
    programs: Vec<(String, Vec<(u64, Record)>)>,
    finals: Vec<(u64, Check)>,
    /// What `expect` lines are told of the input.
    info: InputInfo,
}

fn load(path: &Path) -> anyhow::Result<Scenario> {
    let name = path.display().to_string();
    let (_, stream) = input::open(path)?;
    let mut s = Scenario {
        name: name.clone(),
        settings: Vec::new(),
        prelude: Vec::new(),
        programs: Vec::new(),
        finals: Vec::new(),
        info: info(&name),
    };
    let mut open: Option<usize> = None;
    for rec in stream {
        let input::Sourced { line, record } = rec?;
        match record {
            Record::Setting(st) => s.settings.push((format!("{name}:{line}"), st)),
            Record::ProgramBegin(p) => {
                s.programs.push((p, Vec::new()));
                open = Some(s.programs.len() - 1);
            }
            Record::ProgramEnd => open = None,
            Record::Expect { at_end: true, check } => s.finals.push((line, check)),
            r => match open {
                Some(i) => s.programs[i].1.push((line, r)),
                None => s.prelude.push((line, r)),
            },
        }
    }
    if s.programs.is_empty() {
        bail!("{name}: no `program` blocks to explore");
    }
    if s.programs.len() > 255 {
        bail!("{name}: more than 255 programs");
    }
    Ok(s)
}

/// The scenario at `path` and its start machine ([`Scenario::start`]).
fn prepare(path: &Path, layers: &ConfigLayers) -> anyhow::Result<(Scenario, Machine)> {
    let s = load(path)?;
    let start = s.start(&layers.build(&s.settings)?)?;
    Ok((s, start))
}

impl ExploreResult {
    /// Nothing explored yet, for the programs of `s`.
    fn empty(s: &Scenario) -> Self {
        ExploreResult {
            programs: s.programs.iter().map(|(n, _)| n.clone()).collect(),
            schedules: 0,
            complete: false,
            steps: 0,
            failures: Vec::new(),
        }
    }
}

/// One program's progress in a schedule.
struct Prog {
    pc: usize,
    op: Option<(u64, Op)>,
    last: Option<(u64, Outcome)>,
    blocked: bool,
}

/// A set of program indices (a scenario has at most 255 programs).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct ProgSet([u64; 4]);

impl ProgSet {
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn contains(self, i: usize) -> bool {
        i < 256 && self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn is_empty(self) -> bool {
        self.0 == [0; 4]
    }

    /// The members, in increasing order.
    fn iter(self) -> impl Iterator<Item = usize> {
        (0..4).flat_map(move |w| {
            let mut bits = self.0[w];
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * 64 + b
                })
            })
        })
    }
}

impl std::fmt::Debug for ProgSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The steps of one schedule: which program could run and which did.
struct Point {
    enabled: ProgSet,
    chosen: usize,
    /// The program that took the previous step, if it could go on.
    prev_enabled: Option<usize>,
    preemptions_before: u32,
}

/// One run of a schedule.
struct Run {
    /// A forced step named a program that turned out blocked there: the schedule does not
    /// exist (another one covers it).
    infeasible: bool,
    points: Vec<Point>,
    failure: Option<String>,
    log: Vec<String>,
}

fn info(name: &str) -> InputInfo {
    InputInfo { kind: "file".into(), name: name.to_owned(), params: BTreeMap::new(), seed: 0 }
}

impl Scenario {
    fn machine(&self, cfg: &crate::config::MachineConfig) -> anyhow::Result<Machine> {
        Machine::new(cfg.clone(), &self.settings, false).map_err(|e| anyhow!("{}: {e}", self.name))
    }

    /// The machine every schedule starts from: built from the header, then the `state` lines
    /// and the lines outside programs run in file order. Deterministic, so it is built once
    /// and each schedule runs on a clone.
    fn start(&self, cfg: &crate::config::MachineConfig) -> anyhow::Result<Machine> {
        let info = &self.info;
        let mut m = self.machine(cfg)?;
        let mut last: Option<(u64, Outcome)> = None;
        for (line, r) in &self.prelude {
            match r {
                Record::State(s) => {
                    m.apply_state(s).map_err(|e| anyhow!("{}:{line}: {e}", self.name))?;
                }
                Record::Event(te) => {
                    last = Some((*line, m.exec(te)));
                    if let Some(e) = m.take_input_error() {
                        bail!("{}:{line}: {e}", self.name);
                    }
                }
                Record::Expect { check, .. } => {
                    let (ok, msg) = m.check(check, last.as_ref().map(|(_, o)| o), info);
                    if !ok {
                        bail!(
                            "{}:{line}: expectation outside the programs fails: {msg}",
                            self.name
                        );
                    }
                }
                _ => {}
            }
        }
        Ok(m)
    }

    /// Run one schedule on `m`, a copy of the start machine (see [`Scenario::start`]): the
    /// steps of `forced` first, then the default choice (the program that ran last if it can
    /// go on, else the lowest that can).
    fn run(&self, m: &mut Machine, forced: &[usize], log: bool) -> anyhow::Result<Run> {
        let info = &self.info;
        // Room for the steps of a typical schedule: no regrowth as it goes.
        let points = Vec::with_capacity(forced.len().max(32));
        let mut run = Run { infeasible: false, points, failure: None, log: Vec::new() };
        let mut progs: Vec<Prog> = self
            .programs
            .iter()
            .map(|_| Prog { pc: 0, op: None, last: None, blocked: false })
            .collect();
        let mut prev: Option<usize> = None;
        let mut preemptions = 0u32;
        loop {
            // Settle each program: start its next event, or check its expectations.
            for (i, p) in progs.iter_mut().enumerate() {
                while p.op.is_none() {
                    let Some((line, r)) = self.programs[i].1.get(p.pc) else { break };
                    p.pc += 1;
                    match r {
                        Record::Event(te) => p.op = Some((*line, m.op_begin(te))),
                        Record::Expect { check, .. } => {
                            let last = p.last.as_ref().map(|(_, o)| o);
                            if run.failure.is_none() && !m.check_passes(check, last, info) {
                                let (_, msg) = m.check(check, last, info);
                                run.failure = Some(format!(
                                    "{}:{line}: program `{}`: expect fails: {msg}",
                                    self.name, self.programs[i].0
                                ));
                            }
                        }
                        _ => {}
                    }
                }
            }
            if run.failure.is_some() {
                return Ok(run);
            }
            if progs.iter().all(|p| p.op.is_none()) {
                let bad = m.invariants();
                if let Some(b) = bad.first() {
                    run.failure = Some(format!("invariant: {b}"));
                    return Ok(run);
                }
            }
            let (mut live, mut enabled) = (ProgSet::default(), ProgSet::default());
            for (i, p) in progs.iter().enumerate() {
                if p.op.is_some() {
                    live.insert(i);
                    if !p.blocked {
                        enabled.insert(i);
                    }
                }
            }
            if live.is_empty() {
                break;
            }
            if enabled.is_empty() {
                run.failure = Some(format!(
                    "deadlock: every unfinished program is blocked ({})",
                    live.iter().map(|i| self.programs[i].0.as_str()).collect::<Vec<_>>().join(", ")
                ));
                return Ok(run);
            }
            let prev_enabled = prev.filter(|&p| enabled.contains(p));
            let step = run.points.len();
            let chosen = match forced.get(step) {
                Some(&c) if enabled.contains(c) => c,
                Some(&c) => bail!(
                    "schedule step {step}: program {c} cannot run there (runnable: {enabled:?})"
                ),
                None => prev_enabled.or_else(|| enabled.iter().next()).expect("not empty"),
            };
            if prev_enabled.is_some_and(|p| p != chosen) {
                preemptions += 1;
            }
            run.points.push(Point {
                enabled,
                chosen,
                prev_enabled,
                preemptions_before: preemptions
                    - u32::from(prev_enabled.is_some_and(|p| p != chosen)),
            });
            // Take steps of `chosen` until one has an effect (a blocked probe has none).
            let p = &mut progs[chosen];
            let (line, op) = p.op.as_mut().expect("live programs have an operation");
            let line = *line;
            let stepped = m.op_step(op);
            if let Some(e) = m.take_input_error() {
                bail!("{}:{line}: {e}", self.name);
            }
            match stepped {
                Step::Blocked => {
                    p.blocked = true;
                    if log {
                        run.log.push(format!(
                            "step {step}: {} line {line}: blocked",
                            self.programs[chosen].0
                        ));
                    }
                    // A blocked probe is not a step: undo the choice point.
                    run.points.pop();
                    if prev_enabled.is_some_and(|q| q != chosen) {
                        preemptions -= 1;
                    }
                    if forced.get(step).is_some() {
                        if log {
                            bail!("schedule step {step}: program {chosen} is blocked there");
                        }
                        run.infeasible = true;
                        return Ok(run);
                    }
                    continue;
                }
                Step::Yield => {
                    if log {
                        run.log.push(format!(
                            "step {step}: {} line {line}: step",
                            self.programs[chosen].0
                        ));
                    }
                }
                Step::Done(o) => {
                    if log {
                        run.log.push(format!(
                            "step {step}: {} line {line}: done{}",
                            self.programs[chosen].0,
                            o.fault.map_or(String::new(), |f| format!(
                                " (fault {} code={:#x} {})",
                                f.kind, f.code, f.disposition
                            ))
                        ));
                    }
                    p.op = None;
                    p.last = Some((line, o));
                }
            }
            for (j, q) in progs.iter_mut().enumerate() {
                if j != chosen {
                    q.blocked = false;
                }
            }
            // KVM_BUG_ON is checked after every step: the VM is dead from then on.
            if let Some(b) = m.kvm_bug() {
                run.failure = Some(format!("invariant: {b}"));
                return Ok(run);
            }
            prev = Some(chosen);
        }
        // The invariants held when the loop found every program finished (above), and
        // nothing but the direct-map sample changes after that.
        m.finish();
        for (line, check) in &self.finals {
            if !m.check_passes(check, None, info) {
                let (_, msg) = m.check(check, None, info);
                run.failure = Some(format!("{}:{line}: expect final fails: {msg}", self.name));
                return Ok(run);
            }
        }
        Ok(run)
    }
}

/// Explore every schedule of `path`'s programs within `opts.bound` preemptions.
///
/// The schedules form a tree: a run's choice points beyond its forced prefix each have
/// alternatives within the bound, and each alternative roots a subtree. The sequential search
/// visits it depth-first, deepest choice point first, alternatives in program order; every
/// count, failure and cut of the result is that visit's, whatever `opts.threads` is. With
/// more than one thread the subtrees run in parallel (each on a copy of the start machine
/// kept per thread), and the results are merged in the sequential order.
///
/// # Errors
/// Bad input (the scenario, its configuration, a program line the machine refuses).
pub fn explore(
    path: &Path,
    layers: &ConfigLayers,
    opts: &ExploreOptions,
) -> anyhow::Result<ExploreResult> {
    // The whole search, setup included, runs on the pool's threads: the calling thread
    // would otherwise build the start machine while idle workers spin beside it, a third
    // thread on two cores.
    match opts.threads {
        1 => explore_here(path, layers, opts),
        0 if rayon::current_num_threads() > 1 => rayon::scope(|_| explore_here(path, layers, opts)),
        0 => explore_here(path, layers, opts),
        n => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| anyhow!("--threads {n}: {e}"))?
            .install(|| explore_here(path, layers, opts)),
    }
}

/// [`explore`] on the current thread (and, for a parallel search, the current pool's).
fn explore_here(
    path: &Path,
    layers: &ConfigLayers,
    opts: &ExploreOptions,
) -> anyhow::Result<ExploreResult> {
    let (s, start) = prepare(path, layers)?;
    let mut res = ExploreResult::empty(&s);
    let search = Search::new(&s, start, opts);
    let tree = search.node(Vec::new(), &mut Vec::new());
    if merge(&search, tree, &mut res, false)?.is_continue() {
        res.complete = true;
    }
    Ok(res)
}

/// What one node of the schedule tree found: its own run, then its subtrees in visiting
/// order.
enum Tree {
    /// The run of the node's forced prefix.
    Ran { attempt: Attempt, children: Vec<Tree> },
    /// Not run: the node comes after a failure or error already found (with
    /// `stop_at_first`), or after `max_schedules` had been reached, so the merge will
    /// most likely not need it; if it does, it explores it then.
    Skipped(Vec<usize>),
    /// Bad input found on this node's run.
    Error(anyhow::Error),
}

/// One run, as the merge counts it.
enum Attempt {
    /// A forced step found its program blocked: no schedule.
    Infeasible,
    /// A schedule of `steps` steps.
    Schedule { steps: u64, failure: Option<Failure> },
}

/// A thread's start machine, and the machine its schedules run on: each schedule restores
/// it from `start` with `clone_from`, which copies into the storage the last schedule left
/// (see `sim_core::reuse`) instead of allocating a new machine and freeing the old one.
struct Machines {
    start: Machine,
    work: std::cell::RefCell<Option<Machine>>,
}

impl Machines {
    fn new(start: Machine) -> Self {
        Machines { start, work: std::cell::RefCell::new(None) }
    }

    fn run(&self, s: &Scenario, forced: &[usize]) -> anyhow::Result<Run> {
        // A run starts no other task on this thread, so the working machine is free here;
        // were it not, a fresh copy serves.
        match self.work.try_borrow_mut() {
            Ok(mut w) => {
                let m = match w.as_mut() {
                    Some(m) => {
                        m.clone_from(&self.start);
                        m
                    }
                    None => w.insert(self.start.clone()),
                };
                s.run(m, forced, false)
            }
            Err(_) => s.run(&mut self.start.clone(), forced, false),
        }
    }
}

/// The shared state of one exploration.
struct Search<'a> {
    s: &'a Scenario,
    opts: &'a ExploreOptions,
    /// The start machine per thread, and the machine its schedules run on: the calling
    /// thread's start is the original; a worker thread's is cloned from `spare` when it first
    /// needs one (a machine is `Send` but not `Sync`, so threads cannot share one).
    per_thread: thread_local::ThreadLocal<Machines>,
    /// A copy of the start machine to clone from (parallel searches only).
    spare: std::sync::Mutex<Option<Machine>>,
    /// Whether subtrees run on worker threads.
    parallel: bool,
    /// The earliest node (by its path of child indices, the visiting order) whose run failed
    /// or met bad input, when the search stops at the first failure.
    first_stop: std::sync::Mutex<Option<Vec<usize>>>,
    /// Schedules run so far, in any order.
    ran: std::sync::atomic::AtomicU64,
    /// The whole exploration's `max_schedules` (a re-run skipped subtree has a smaller
    /// budget of its own).
    limit: u64,
}

impl<'a> Search<'a> {
    fn new(s: &'a Scenario, start: Machine, opts: &'a ExploreOptions) -> Self {
        let parallel = match opts.threads {
            0 => rayon::current_num_threads() > 1,
            n => n > 1,
        };
        let spare = parallel.then(|| start.clone());
        let per_thread = thread_local::ThreadLocal::new();
        per_thread.get_or(|| Machines::new(start));
        Search {
            s,
            opts,
            per_thread,
            spare: std::sync::Mutex::new(spare),
            parallel,
            first_stop: std::sync::Mutex::new(None),
            ran: std::sync::atomic::AtomicU64::new(0),
            limit: opts.max_schedules,
        }
    }

    fn machines(&self) -> &Machines {
        self.per_thread.get_or(|| {
            let spare = self.spare.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Machines::new(spare.as_ref().expect("worker threads only in a parallel search").clone())
        })
    }

    fn start(&self) -> &Machine {
        &self.machines().start
    }

    /// Whether a node at `path` comes after the first stop found (the visiting order is the
    /// order of paths, a path before its extensions) or after the schedule budget is spent.
    fn skip(&self, path: &[usize]) -> bool {
        if self.ran.load(std::sync::atomic::Ordering::Relaxed) >= self.opts.max_schedules {
            return true;
        }
        let first = self.first_stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        first.as_ref().is_some_and(|f| f.as_slice() < path)
    }

    fn stopped_at(&self, path: &[usize]) {
        let mut first = self.first_stop.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if first.as_ref().is_none_or(|f| path < f.as_slice()) {
            *first = Some(path.to_vec());
        }
    }

    /// Run the node whose forced prefix is `forced`, then its subtrees.
    fn node(&self, forced: Vec<usize>, path: &mut Vec<usize>) -> Tree {
        if self.skip(path) {
            return Tree::Skipped(forced);
        }
        let run = match self.machines().run(self.s, &forced) {
            Ok(r) => r,
            Err(e) => {
                self.stopped_at(path);
                return Tree::Error(e);
            }
        };
        if run.infeasible {
            return Tree::Ran { attempt: Attempt::Infeasible, children: Vec::new() };
        }
        self.ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let schedule: Vec<usize> = run.points.iter().map(|p| p.chosen).collect();
        let stop = run.failure.is_some() && self.opts.stop_at_first;
        if stop {
            self.stopped_at(path);
        }
        // The new choice points beyond the forced prefix, deepest first, each alternative in
        // program order, within the bound.
        let mut kids: Vec<Vec<usize>> = Vec::new();
        if !stop {
            for d in (forced.len()..run.points.len()).rev() {
                let p = &run.points[d];
                for a in p.enabled.iter() {
                    let cost = u32::from(p.prev_enabled.is_some_and(|q| q != a));
                    if a != p.chosen && p.preemptions_before + cost <= self.opts.bound {
                        let mut f = schedule[..d].to_vec();
                        f.push(a);
                        kids.push(f);
                    }
                }
            }
        }
        let attempt = Attempt::Schedule {
            steps: run.points.len() as u64,
            failure: run.failure.map(|reason| Failure { schedule, reason }),
        };
        let children = if !self.parallel || kids.len() < 2 {
            kids.into_iter()
                .enumerate()
                .map(|(i, f)| {
                    path.push(i);
                    let t = self.node(f, path);
                    path.pop();
                    t
                })
                .collect()
        } else {
            use rayon::prelude::*;
            let base = path.clone();
            kids.into_par_iter()
                .enumerate()
                .map(|(i, f)| {
                    let mut p = base.clone();
                    p.push(i);
                    self.node(f, &mut p)
                })
                .collect()
        };
        Tree::Ran { attempt, children }
    }
}

/// Count `tree` into `res` in visiting order, as the sequential search would: stop at the
/// first failure (with `stop_at_first`) or when `max_schedules` is reached with more left
/// (`more_after`: something follows `tree` in the visiting order). A skipped node the count
/// reaches is explored then, with a fresh budget. `Break` when the search stopped.
fn merge(
    search: &Search<'_>,
    tree: Tree,
    res: &mut ExploreResult,
    more_after: bool,
) -> anyhow::Result<std::ops::ControlFlow<()>> {
    // A skipped node's search has a budget of what was left, but counts into `res`.
    let limit = search.limit;
    use std::ops::ControlFlow;
    match tree {
        Tree::Error(e) => Err(e),
        Tree::Skipped(forced) => {
            let opts = ExploreOptions {
                max_schedules: search.limit - res.schedules,
                ..search.opts.clone()
            };
            let mut again = Search::new(search.s, search.start().clone(), &opts);
            again.limit = search.limit;
            let t = again.node(forced, &mut Vec::new());
            merge(&again, t, res, more_after)
        }
        Tree::Ran { attempt, children } => {
            let more = more_after || !children.is_empty();
            if let Attempt::Schedule { steps, failure } = attempt {
                res.schedules += 1;
                res.steps += steps;
                if let Some(f) = failure {
                    res.failures.push(f);
                    if search.opts.stop_at_first {
                        return Ok(ControlFlow::Break(()));
                    }
                }
                if res.schedules >= limit && more {
                    return Ok(ControlFlow::Break(()));
                }
            }
            let n = children.len();
            for (i, c) in children.into_iter().enumerate() {
                if merge(search, c, res, more_after || i + 1 < n)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        }
    }
}

/// Run one schedule (`--replay`), with a line per step.
///
/// # Errors
/// Bad input, or a schedule that does not fit the scenario.
pub fn replay(
    path: &Path,
    layers: &ConfigLayers,
    schedule: &[usize],
) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let (s, mut start) = prepare(path, layers)?;
    let run = s.run(&mut start, schedule, true)?;
    Ok((run.log, run.failure))
}

/// Parse `--replay 0,0,1,…`.
///
/// # Errors
/// A malformed list.
pub fn parse_schedule(text: &str) -> anyhow::Result<Vec<usize>> {
    text.split(',')
        .filter(|t| !t.trim().is_empty())
        .enumerate()
        .map(|(i, t)| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| anyhow!("--replay: item {i} `{t}` is not a program index"))
        })
        .collect()
}

/// A schedule as `--replay` reads it.
pub fn format_schedule(s: &[usize]) -> String {
    s.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The search as it was written before it ran in parallel: one loop over a stack of
    /// choice points, each run from a copy of the start machine. The tree search must give
    /// exactly its result (counts, steps, failures in order, `complete`) whatever the
    /// threads.
    fn reference(
        path: &Path,
        layers: &ConfigLayers,
        opts: &ExploreOptions,
    ) -> anyhow::Result<ExploreResult> {
        let (s, start) = prepare(path, layers)?;
        let mut res = ExploreResult::empty(&s);
        // The choice stack: per step, the program chosen and the alternatives still to try.
        let mut stack: Vec<(usize, Vec<usize>)> = Vec::new();
        loop {
            let forced: Vec<usize> = stack.iter().map(|(c, _)| *c).collect();
            let run = s.run(&mut start.clone(), &forced, false)?;
            if run.infeasible {
                // Nothing new below this prefix: go to the next alternative.
                stack.truncate(run.points.len() + 1);
                stack.pop();
                if !next_alternative(&mut stack) {
                    res.complete = true;
                    return Ok(res);
                }
                continue;
            }
            res.schedules += 1;
            res.steps += run.points.len() as u64;
            let schedule: Vec<usize> = run.points.iter().map(|p| p.chosen).collect();
            // New choice points beyond the forced prefix, with their alternatives in the bound.
            for p in &run.points[forced.len().min(run.points.len())..] {
                let mut alts: Vec<usize> = p
                    .enabled
                    .iter()
                    .filter(|&a| a != p.chosen)
                    .filter(|&a| {
                        let cost = u32::from(p.prev_enabled.is_some_and(|q| q != a));
                        p.preemptions_before + cost <= opts.bound
                    })
                    .collect();
                alts.reverse();
                stack.push((p.chosen, alts));
            }
            if let Some(reason) = run.failure {
                res.failures.push(Failure { schedule, reason });
                if opts.stop_at_first {
                    return Ok(res);
                }
            }
            // A run can end earlier than its forced prefix only on a failure; drop what it did
            // not reach.
            stack.truncate(run.points.len());
            if !next_alternative(&mut stack) {
                res.complete = true;
                return Ok(res);
            }
            if res.schedules >= opts.max_schedules {
                return Ok(res);
            }
        }
    }

    /// Move the deepest choice point with an untried alternative to it, dropping exhausted ones;
    /// `false` when none is left.
    fn next_alternative(stack: &mut Vec<(usize, Vec<usize>)>) -> bool {
        while let Some((c, alts)) = stack.last_mut() {
            if let Some(a) = alts.pop() {
                *c = a;
                return true;
            }
            stack.pop();
        }
        false
    }

    fn races() -> Vec<(std::path::PathBuf, ConfigLayers)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/scenarios/tdx/races");
        let with = |s: &[&str]| ConfigLayers {
            sets: s.iter().map(|x| (*x).to_owned()).collect(),
            ..ConfigLayers::default()
        };
        let mut v = Vec::new();
        for (f, broken) in [
            ("seed-2m-vs-4k.ccs", "host.tdx_spte_protocol=naive"),
            ("sept-add-vs-aug-4k.ccs", "host.tdx_spte_protocol=naive"),
            ("zap-vs-zero-step.ccs", "host.tdx_busy_retry=false"),
        ] {
            v.push((dir.join(f), with(&[])));
            v.push((dir.join(f), with(&[broken])));
        }
        v
    }

    /// Every race, fixed and broken, under several bounds, budgets and thread counts, with
    /// and without stopping at the first failure: the tree search's result is the loop's.
    #[test]
    fn tree_search_gives_the_sequential_result() {
        let mut failing_seen = 0;
        for (file, layers) in races() {
            for bound in [0, 2, 3] {
                for stop_at_first in [true, false] {
                    for max_schedules in [1, 7, 1_000_000] {
                        let base =
                            ExploreOptions { bound, max_schedules, stop_at_first, threads: 1 };
                        let want = reference(&file, &layers, &base).unwrap();
                        failing_seen += usize::from(want.failures.len() > 1);
                        for threads in [1, 2, 3] {
                            let opts = ExploreOptions { threads, ..base.clone() };
                            let got = explore(&file, &layers, &opts).unwrap();
                            assert_eq!(got, want, "{} {opts:?}", file.display());
                        }
                    }
                }
            }
        }
        // The comparison covered searches that go on past several failures.
        assert!(failing_seen > 0);
    }

    /// A machine restored with `clone_from` after running one schedule runs the next exactly
    /// as a fresh copy of the start machine does: the same whole report (every counter, cycle
    /// and histogram), the same invariants verdict, for every ordered pair of a few schedules
    /// of each race.
    #[test]
    fn a_restored_machine_runs_as_a_fresh_copy() {
        for (file, layers) in races() {
            let (s, start) = prepare(&file, &layers).unwrap();
            let all = reference(
                &file,
                &layers,
                &ExploreOptions { stop_at_first: false, max_schedules: 6, ..Default::default() },
            )
            .unwrap();
            // Schedules the search ran, and the failing ones.
            let mut scheds: Vec<Vec<usize>> = vec![Vec::new(), vec![1]];
            scheds.extend(all.failures.iter().map(|f| f.schedule.clone()));
            let mut work = start.clone();
            for a in &scheds {
                for b in &scheds {
                    work.clone_from(&start);
                    let _ = s.run(&mut work, a, false).unwrap();
                    work.clone_from(&start);
                    let got = s.run(&mut work, b, false).unwrap();
                    let mut fresh = start.clone();
                    let want = s.run(&mut fresh, b, false).unwrap();
                    assert_eq!(got.failure, want.failure, "{} {a:?} then {b:?}", file.display());
                    let (g, w) = (work.report(&s.info), fresh.report(&s.info));
                    assert_eq!(
                        serde_json::to_value(&g).unwrap(),
                        serde_json::to_value(&w).unwrap(),
                        "{} {a:?} then {b:?}",
                        file.display()
                    );
                    assert_eq!(work.invariants(), fresh.invariants());
                }
            }
        }
    }
}
