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
}

impl Default for ExploreOptions {
    fn default() -> Self {
        ExploreOptions { bound: 2, max_schedules: 1_000_000, stop_at_first: true }
    }
}

/// A schedule that failed, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Failure {
    /// The program index of every step, replayable with `--replay`.
    pub schedule: Vec<usize>,
    /// What went wrong.
    pub reason: String,
}

/// What an exploration found.
#[derive(Clone, Debug, serde::Serialize)]
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

/// One program's progress in a schedule.
struct Prog {
    pc: usize,
    op: Option<(u64, Op)>,
    last: Option<(u64, Outcome)>,
    blocked: bool,
}

/// The steps of one schedule: which program could run and which did.
struct Point {
    enabled: Vec<usize>,
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
        let info = info(&self.name);
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
                    let (ok, msg) = m.check(check, last.as_ref().map(|(_, o)| o), &info);
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

    /// Run one schedule on a copy of `start` (see [`Scenario::start`]): the steps of `forced`
    /// first, then the default choice (the program that ran last if it can go on, else the
    /// lowest that can).
    fn run(&self, start: &Machine, forced: &[usize], log: bool) -> anyhow::Result<Run> {
        let info = info(&self.name);
        let mut m = start.clone();
        let mut run = Run { infeasible: false, points: Vec::new(), failure: None, log: Vec::new() };
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
                            let (ok, msg) = m.check(check, p.last.as_ref().map(|(_, o)| o), &info);
                            if !ok && run.failure.is_none() {
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
            let live: Vec<usize> = (0..progs.len()).filter(|&i| progs[i].op.is_some()).collect();
            if live.is_empty() {
                break;
            }
            let enabled: Vec<usize> = live.iter().copied().filter(|&i| !progs[i].blocked).collect();
            if enabled.is_empty() {
                run.failure = Some(format!(
                    "deadlock: every unfinished program is blocked ({})",
                    live.iter()
                        .map(|&i| self.programs[i].0.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                return Ok(run);
            }
            let prev_enabled = prev.filter(|p| enabled.contains(p));
            let step = run.points.len();
            let chosen = match forced.get(step) {
                Some(&c) if enabled.contains(&c) => c,
                Some(&c) => bail!(
                    "schedule step {step}: program {c} cannot run there (runnable: {enabled:?})"
                ),
                None => prev_enabled.unwrap_or(enabled[0]),
            };
            if prev_enabled.is_some_and(|p| p != chosen) {
                preemptions += 1;
            }
            run.points.push(Point {
                enabled: enabled.clone(),
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
            let (ok, msg) = m.check(check, None, &info);
            if !ok {
                run.failure = Some(format!("{}:{line}: expect final fails: {msg}", self.name));
                return Ok(run);
            }
        }
        Ok(run)
    }
}

/// Explore every schedule of `path`'s programs within `opts.bound` preemptions.
///
/// # Errors
/// Bad input (the scenario, its configuration, a program line the machine refuses).
pub fn explore(
    path: &Path,
    layers: &ConfigLayers,
    opts: &ExploreOptions,
) -> anyhow::Result<ExploreResult> {
    let s = load(path)?;
    let start = s.start(&layers.build(&s.settings)?)?;
    let mut res = ExploreResult {
        programs: s.programs.iter().map(|(n, _)| n.clone()).collect(),
        schedules: 0,
        complete: false,
        steps: 0,
        failures: Vec::new(),
    };
    // The choice stack: per step, the program chosen and the alternatives still to try.
    let mut stack: Vec<(usize, Vec<usize>)> = Vec::new();
    loop {
        let forced: Vec<usize> = stack.iter().map(|(c, _)| *c).collect();
        let run = s.run(&start, &forced, false)?;
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
            let alts = p
                .enabled
                .iter()
                .copied()
                .filter(|&a| a != p.chosen)
                .filter(|&a| {
                    let cost = u32::from(p.prev_enabled.is_some_and(|q| q != a));
                    p.preemptions_before + cost <= opts.bound
                })
                .rev()
                .collect();
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

/// Run one schedule (`--replay`), with a line per step.
///
/// # Errors
/// Bad input, or a schedule that does not fit the scenario.
pub fn replay(
    path: &Path,
    layers: &ConfigLayers,
    schedule: &[usize],
) -> anyhow::Result<(Vec<String>, Option<String>)> {
    let s = load(path)?;
    let start = s.start(&layers.build(&s.settings)?)?;
    let run = s.run(&start, schedule, true)?;
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
