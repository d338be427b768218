//! The engine: turns an input (scenario, trace or workload) into a run of the machine and a
//! report (DESIGN "The timing model", "Order of execution").
//!
//! Files execute in record order. Workloads offer one stream per agent; the scheduler merges
//! them by `(cycle, agent)`, and the merged order is what `--record` stores, so a recorded
//! trace replays to the same report.

use crate::config::ConfigBuilder;
use crate::input::{self, Sourced};
use crate::machine::{Machine, Outcome};
use crate::report::{InputInfo, Report};
use anyhow::{anyhow, bail};
use rustc_hash::FxHashMap;
use sim_core::sched::Scheduler;
use sim_core::{Check, Cycles, Record, Setting, TimedEvent};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub enum Input {
    /// A `.cct` trace or `.ccs` scenario.
    File(PathBuf),
    /// A built-in workload.
    Workload {
        /// Its name.
        name: String,
        /// Its parameters.
        params: workloads::Params,
    },
}

/// Run options that are not machine configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Seed for workloads.
    pub seed: u64,
    /// Record the executed event stream to this `.cct` file (workloads).
    pub record: Option<PathBuf>,
    /// Events executed so far are added here every [`PROGRESS_EVERY`] events and at the end
    /// (sweep progress; it never changes what the run computes).
    pub progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Time the control events apart ([`HostTime::control`]; `ccsim run --timing`). Off, they
    /// are only counted: two clock reads per control event cost about 0.6 % of the
    /// instructions of a run with many of them (issue #4's `snp-churn` case).
    pub timing: bool,
}

/// How many events a run executes between updates of [`RunOptions::progress`].
pub const PROGRESS_EVERY: u64 = 1 << 16;

/// Adds `n` to the progress counter, if there is one.
fn tick(progress: Option<&std::sync::atomic::AtomicU64>, n: u64) {
    if let Some(p) = progress {
        p.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The configuration layers of a run, applied in order: preset, files, the input's own
/// settings (scenario header lines), then command-line `--set` overrides.
#[derive(Debug, Clone, Default)]
pub struct ConfigLayers {
    /// Preset named on the command line.
    pub preset: Option<String>,
    /// Config files: (text, origin).
    pub files: Vec<(String, String)>,
    /// `key=value` overrides from the command line.
    pub sets: Vec<String>,
}

impl ConfigLayers {
    /// Build with the input's settings in between files and `--set`.
    ///
    /// # Errors
    /// Configuration errors naming their origin.
    pub(crate) fn build(
        &self,
        settings: &[(String, Setting)],
    ) -> anyhow::Result<crate::config::MachineConfig> {
        let mut preset = self.preset.clone();
        for (origin, s) in settings {
            if s.section == "machine"
                && let Some((_, v)) = s.pairs.iter().find(|(k, _)| k == "preset")
            {
                if self.preset.is_none() {
                    preset = Some(v.clone());
                }
                let _ = origin;
            }
        }
        // The preset and the config files: the layers below the input's settings.
        let base = || -> anyhow::Result<ConfigBuilder> {
            let mut b = ConfigBuilder::from_preset(
                preset.as_deref().unwrap_or(crate::config::DEFAULT_PRESET),
            )?;
            for (text, origin) in &self.files {
                b.add_toml(text, origin)?;
            }
            Ok(b)
        };
        let mut b = base()?;
        // Everything applied and validated once, on the builder itself; only if that fails,
        // again from the start line by line, so that a bad key or value is reported at its
        // line (building a configuration is most of the cost of setting up a scenario).
        let fast = settings.iter().all(|(_, s)| apply_setting(&mut b, s).is_ok())
            && self.sets.iter().all(|s| b.set(s, "--set").is_ok());
        if fast && let Ok(cfg) = b.into_config() {
            return Ok(cfg);
        }
        let mut b = base()?;
        for (origin, s) in settings {
            apply_setting(&mut b, s).map_err(|e| anyhow!("{origin}: {e}"))?;
            b.build().map_err(|e| anyhow!("{origin}: {e}"))?;
        }
        for s in &self.sets {
            b.set(s, "--set")?;
        }
        b.build().map_err(|e| anyhow!("{e}"))
    }
}

/// Map a header setting onto configuration overrides. `vm` lines are handled by the machine.
fn apply_setting(b: &mut ConfigBuilder, s: &Setting) -> anyhow::Result<()> {
    match s.section.as_str() {
        "machine" | "host" | "mmu" | "rmp" | "cache" | "iommu" | "tdx" => {
            if !s.args.is_empty() {
                bail!("`{}` takes only key=value settings, found {:?}", s.section, s.args[0]);
            }
            for (k, v) in &s.pairs {
                if s.section == "machine" && k == "preset" {
                    continue;
                }
                // `machine mmu.dtlb.arrays=…`: a dotted key is a full configuration path.
                let path = if s.section == "machine" && k.contains('.') {
                    k.clone()
                } else {
                    format!("{}.{k}", s.section)
                };
                b.set(&format!("{path}={v}"), &s.section)?;
            }
            Ok(())
        }
        "vm" => Ok(()),
        other => {
            bail!(
                "unknown setting section `{other}` (known: machine, host, mmu, rmp, cache, iommu, tdx, vm)"
            )
        }
    }
}

/// Host (wall-clock) time a run took, with its control events timed on their own: issue #4
/// states a workload's replay rate in accesses per second "with its control events counted
/// separately". Never part of the report, which is deterministic; `ccsim run --timing`
/// prints it (docs/performance.md "Host time of a run").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostTime {
    /// Before the first event: the configuration, the machine and the generator built (a
    /// file: its header read, up to the machine's construction).
    pub setup: Duration,
    /// From then to the end of the last event: generation or decoding included.
    pub replay: Duration,
    /// Of `replay`, the machine's execution of the control events: every event that is
    /// neither a memory access nor `work` (launches, page-state changes, RMP instructions,
    /// SEAMCALLs, CR3 loads, …). What an access causes (its walk, its faults and their
    /// handling) stays with the access.
    pub control: Duration,
    /// How many control events ran.
    pub control_events: u64,
    /// Whether `control` was measured ([`RunOptions::timing`]); if not, it is zero.
    pub control_timed: bool,
}

/// Whether `e` is a control event for [`HostTime`]: neither a memory access nor `work`.
#[inline(always)]
fn is_control(e: &sim_core::Event) -> bool {
    !e.is_access() && !matches!(e, sim_core::Event::Work { .. })
}

impl HostTime {
    /// Execute `te` on `m`, counting it if it is a control event, and timing it into `control`
    /// as well if `control_timed`.
    #[inline(always)]
    fn exec(&mut self, m: &mut Machine, te: &TimedEvent) -> Outcome {
        if !is_control(&te.event) {
            return m.exec(te);
        }
        self.control_events += 1;
        if !self.control_timed {
            return m.exec(te);
        }
        let start = Instant::now();
        let out = m.exec(te);
        self.control += start.elapsed();
        out
    }
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutput {
    /// The report.
    pub report: Report,
    /// The host time it took (not deterministic, so not in the report).
    pub host: HostTime,
    /// Expectation results (scenarios).
    pub expectations: Vec<ExpectResult>,
    /// The machine as the run left it, for checks of its state that the report does not
    /// carry (tests: the direct map's counters against a recount of its page table).
    pub machine: Machine,
}

/// One expectation's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectResult {
    /// Line (or record index) of the `expect`.
    pub line: u64,
    /// Whether it held.
    pub passed: bool,
    /// What was checked and what was found.
    pub message: String,
}

/// Run an input.
///
/// # Errors
/// Bad input or configuration, with the file and position.
pub fn run(layers: &ConfigLayers, input: &Input, opts: &RunOptions) -> anyhow::Result<RunOutput> {
    match input {
        Input::File(path) => run_file(layers, path, opts),
        Input::Workload { name, params } => run_workload(layers, name, params, opts),
    }
}

/// Run a scenario file for `ccsim check`.
///
/// # Errors
/// Bad input, with the file and position.
pub fn check_file(path: &Path) -> anyhow::Result<Vec<ExpectResult>> {
    let out = run_file(&ConfigLayers::default(), path, &RunOptions::default())?;
    Ok(out.expectations)
}

fn run_file(layers: &ConfigLayers, path: &Path, opts: &RunOptions) -> anyhow::Result<RunOutput> {
    let start = Instant::now();
    let mut host = HostTime { control_timed: opts.timing, ..HostTime::default() };
    let name = path.display().to_string();
    let (_, stream) = input::open(path)?;
    let mut settings: Vec<(String, Setting)> = Vec::new();
    let mut machine: Option<Machine> = None;
    let mut last: Option<(u64, Outcome)> = None;
    let mut results = Vec::new();
    let mut finals: Vec<(u64, Check)> = Vec::new();
    let mut program: Option<(u64, String)> = None;
    let mut deferred: Vec<(u64, Record)> = Vec::new();
    let mut records = 0u64;
    let progress = opts.progress.as_deref();
    for rec in stream {
        let Sourced { line, record } = rec?;
        records += 1;
        if records.is_multiple_of(PROGRESS_EVERY) {
            tick(progress, PROGRESS_EVERY);
        }
        let at = |l: u64| format!("{name}:{l}");
        if let Record::Setting(s) = record {
            if machine.is_some() {
                bail!(
                    "{}: setting `{}` after the first event or state line; settings go first",
                    at(line),
                    s.section
                );
            }
            settings.push((at(line), s));
            continue;
        }
        let m = match &mut machine {
            Some(m) => m,
            None => machine.insert(file_machine(layers, &settings, &name, start, &mut host)?),
        };
        match record {
            Record::Setting(_) => unreachable!("handled above"),
            Record::ProgramBegin(p) => {
                if let Some((l, q)) = &program {
                    bail!("{}: program `{p}` inside program `{q}` (opened at line {l})", at(line));
                }
                program = Some((line, p));
            }
            Record::ProgramEnd => {
                if program.take().is_none() {
                    bail!("{}: `end` without `program`", at(line));
                }
            }
            // Program lines run after everything else, one program after another (the first
            // schedule `ccsim explore` runs).
            r if program.is_some() => deferred.push((line, r)),
            Record::State(s) => m.apply_state(&s).map_err(|e| anyhow!("{}: {e}", at(line)))?,
            Record::Event(te) => {
                let o = host.exec(m, &te);
                if let Some(e) = m.take_input_error() {
                    bail!("{}: {e}", at(line));
                }
                last = Some((line, o));
            }
            Record::Expect { at_end: true, check } => finals.push((line, check)),
            Record::Expect { at_end: false, check } => {
                let Some((eline, o)) = &last else {
                    bail!(
                        "{}: `expect` before any event (use `expect final` for the end state)",
                        at(line)
                    );
                };
                results.push(expect_after(m, &check, line, Some((*eline, o)), &name));
            }
        }
    }
    let mut m = match machine {
        Some(m) => m,
        None => file_machine(layers, &settings, &name, start, &mut host)?,
    };
    for (line, r) in deferred {
        match r {
            Record::Event(te) => {
                last = Some((line, host.exec(&mut m, &te)));
                if let Some(e) = m.take_input_error() {
                    bail!("{name}:{line}: {e}");
                }
            }
            Record::Expect { check, .. } => {
                let after = last.as_ref().map(|(l, o)| (*l, o));
                results.push(expect_after(&m, &check, line, after, &name));
            }
            _ => {}
        }
    }
    tick(progress, records % PROGRESS_EVERY);
    m.finish();
    host.replay = start.elapsed().saturating_sub(host.setup);
    let info = input_info_file(&name);
    for (line, check) in finals {
        let (passed, message) = m.check(&check, None, &info);
        results.push(ExpectResult { line, passed, message: format!("final: {message}") });
    }
    let mut report = m.report(&info);
    report.records = records;
    Ok(RunOutput { report, expectations: results, machine: m, host })
}

/// The machine of file `name`, built from its settings so far; the run's setup ends here.
fn file_machine(
    layers: &ConfigLayers,
    settings: &[(String, Setting)],
    name: &str,
    start: Instant,
    host: &mut HostTime,
) -> anyhow::Result<Machine> {
    let m = Machine::new(layers.build(settings)?, settings, false)
        .map_err(|e| anyhow!("{name}: {e}"))?;
    host.setup = start.elapsed();
    Ok(m)
}

/// The `expect` line `line` checked after the event of line `after.0`, whose outcome is
/// `after.1` (none: checked against the machine state alone).
fn expect_after(
    m: &Machine,
    check: &Check,
    line: u64,
    after: Option<(u64, &Outcome)>,
    name: &str,
) -> ExpectResult {
    let (passed, message) = m.check(check, after.map(|(_, o)| o), &input_info_file(name));
    let eline = after.map_or(0, |(l, _)| l);
    ExpectResult { line, passed, message: format!("{message} (after line {eline})") }
}

fn input_info_file(name: &str) -> InputInfo {
    InputInfo { kind: "file".into(), name: name.to_owned(), params: BTreeMap::new(), seed: 0 }
}

fn run_workload(
    layers: &ConfigLayers,
    name: &str,
    params: &workloads::Params,
    opts: &RunOptions,
) -> anyhow::Result<RunOutput> {
    let info = workloads::find(name).ok_or_else(|| {
        anyhow!(
            "unknown workload {name:?} (known: {})",
            workloads::registry().iter().map(|w| w.name).collect::<Vec<_>>().join(", ")
        )
    })?;
    let defaulted;
    let layers = match (info.preset, &layers.preset) {
        (Some(p), None) => {
            defaulted = ConfigLayers { preset: Some(p.to_owned()), ..layers.clone() };
            &defaulted
        }
        _ => layers,
    };
    let start = Instant::now();
    let mut host = HostTime { control_timed: opts.timing, ..HostTime::default() };
    let cfg = layers.build(&[])?;
    let mut w = info.instantiate(params, opts.seed).map_err(|e| anyhow!("workload {name}: {e}"))?;
    // A guest's C-bit is the host's (CPUID 8000_001F EBX[5:0], AMD APM Vol. 2 §15.34.1, as
    // `VmPaging` gives it): private GPAs built with another bit lie outside the guest's memory
    // and every access to them faults.
    if info.params.iter().any(|d| d.name == "cbit_pos")
        && let Some(have) = cfg.mmu.cbit_pos.0
    {
        let want = params
            .u64_in(info.params, "cbit_pos", 12, 51)
            .map_err(|e| anyhow!("workload {name}: {e}"))?;
        if want != u64::from(have) {
            bail!(
                "workload {name}: cbit_pos = {want}, but the machine's mmu.cbit_pos = {have}; \
                 pass --param cbit_pos={have} or --set mmu.cbit_pos={want}"
            );
        }
    }
    let mut m = Machine::new(cfg, &[], true)?;
    let mut rec = match &opts.record {
        Some(p) => Some(Recorder::new(p, name, params, opts.seed)?),
        None => None,
    };
    host.setup = start.elapsed();
    let records = match drive(w.as_mut(), &mut m, rec.as_mut(), opts.progress.as_deref(), &mut host)
    {
        Ok(n) => n,
        Err(e) => {
            if let Some(r) = rec {
                r.discard();
            }
            bail!("workload {name}: {e}");
        }
    };
    m.finish();
    host.replay = start.elapsed().saturating_sub(host.setup);
    if let Some(r) = rec {
        r.finish()?;
    }
    let mut report = m.report(&InputInfo {
        kind: "workload".into(),
        name: name.to_owned(),
        params: params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        seed: opts.seed,
    });
    report.records = records;
    Ok(RunOutput { report, expectations: Vec::new(), machine: m, host })
}

/// Run every stream of `w` on `m` to its end, merged by `(cycle, agent)`, recording each event
/// as it executes; returns the number of events.
///
/// A stream is scheduled under its declared agent (`agents()[i]`): the clock is per CPU, so
/// the CPU's clock orders the stream whatever context its next event runs in, and a workload
/// whose streams never change context merges exactly as before. Each event is executed and
/// recorded as issued by [`workloads::Workload::agent_of_last`].
///
/// # Errors
/// An agent on a CPU the machine lacks, an event issued on another CPU than its stream's, or a
/// recording error.
fn drive(
    w: &mut dyn workloads::Workload,
    m: &mut Machine,
    mut rec: Option<&mut Recorder>,
    progress: Option<&std::sync::atomic::AtomicU64>,
    host: &mut HostTime,
) -> anyhow::Result<u64> {
    let mut sched = Scheduler::new();
    let agents: Vec<_> = w.agents().to_vec();
    for (i, a) in agents.iter().enumerate() {
        if a.cpu().is_some_and(|c| c >= m.cpus()) {
            bail!("agent {a} needs more CPUs than machine.cpus = {}", m.cpus());
        }
        sched.ready(i, *a, Cycles::ZERO);
    }
    let mut records = 0u64;
    // Allocator calls a generator made while recording, written when they happened (see
    // [`LoggedServices`]), and how many of each the generator has yet to issue as its event.
    let mut calls: Vec<sim_core::Event> = Vec::new();
    let mut early: FxHashMap<(u8, u64), u32> = FxHashMap::default();
    // A stream runs its events back to back while it stays the one the scheduler would pop
    // next ([`Scheduler::pop_bounded`]): the same order, without the round trip.
    // Per stream, the `work` its generator gave with `next_work` after its last event, run at
    // the stream's next turn instead of asking `next` (not while recording, which writes every
    // event as `next` gives it).
    let mut pending_work: Vec<Option<(u32, u64)>> = vec![None; agents.len()];
    while let Some((k, bound)) = sched.pop_bounded() {
        loop {
            if let Some((cpu, count)) = pending_work[k.stream].take() {
                m.exec_work(cpu, count);
                let at = m.clock(sim_core::Agent::host(cpu));
                if !ran_one(&mut records, progress, &mut sched, (k.stream, at, bound)) {
                    break;
                }
                continue;
            }
            let next = match rec.as_deref_mut() {
                None => w.next(k.stream, m),
                Some(r) => {
                    let e = w.next(k.stream, &mut LoggedServices { m: &mut *m, calls: &mut calls });
                    let by = k.agent.cpu().map_or(k.agent, sim_core::Agent::host);
                    for event in calls.drain(..) {
                        if let Some(key) = alloc_key(&event) {
                            *early.entry(key).or_insert(0) += 1;
                        }
                        r.write(&TimedEvent { time: Some(m.clock(by)), agent: by, event })?;
                    }
                    e
                }
            };
            // A stream with nothing more is done.
            let Some(event) = next else { break };
            let agent = w.agent_of_last(k.stream);
            if agent.cpu() != k.agent.cpu() {
                bail!(
                    "stream {} (agent {}) issued `{}` as {agent}, on another CPU; a stream stays \
                     on its CPU",
                    k.stream,
                    k.agent,
                    event.keyword()
                );
            }
            // The event's time is its CPU's clock, which is what the machine would wait for
            // anyway: only a recording needs it written out (a live run passes none, sparing a
            // clock lookup per event).
            let time = if rec.is_some() { Some(m.clock(agent)) } else { None };
            let te = TimedEvent { time, agent, event };
            if let Some(r) = rec.as_deref_mut() {
                let logged =
                    alloc_key(&te.event).and_then(|key| early.get_mut(&key)).filter(|n| **n > 0);
                match logged {
                    // Already written when the allocator call happened.
                    Some(n) => *n -= 1,
                    None => r.write(&te)?,
                }
            }
            let _ = host.exec(m, &te);
            if let Some(e) = m.take_input_error() {
                bail!("stream {} ({agent}), event {records}: {e}", k.stream);
            }
            if rec.is_none()
                && let Some(cpu) = agent.cpu()
            {
                pending_work[k.stream] = w.next_work(k.stream).map(|count| (cpu, count));
            }
            let at = m.clock(agent);
            if !ran_one(&mut records, progress, &mut sched, (k.stream, at, bound)) {
                break;
            }
        }
    }
    tick(progress, records % PROGRESS_EVERY);
    Ok(records)
}

/// After an event of `stream` ran, its CPU's clock now `at`: count it, and say whether the
/// stream is still the one the scheduler would pop next (`bound`, [`Scheduler::pop_bounded`]);
/// if not, it is requeued.
#[inline(always)]
fn ran_one(
    records: &mut u64,
    progress: Option<&std::sync::atomic::AtomicU64>,
    sched: &mut Scheduler,
    (stream, at, bound): (usize, Cycles, sim_core::sched::Bound),
) -> bool {
    *records += 1;
    if records.is_multiple_of(PROGRESS_EVERY) {
        tick(progress, PROGRESS_EVERY);
    }
    if sched.first_again(stream, at, bound) {
        return true;
    }
    sched.requeue(stream, at);
    false
}

/// Writes the executed stream of a workload to `.cct`, atomically (temp file + rename).
/// The machine's allocator as a recorded generator sees it: each call is also logged as the
/// event that replays it (`page-alloc`, `page-free`, `gmem-alloc`), so that a recording
/// changes the allocator exactly when the live run did. A generator may allocate pages now and
/// issue their events later (queued behind other events of its stream); meanwhile other
/// streams run, and the machine's own allocations (page tables, KVM's guest pages) see the
/// allocator as the live call left it. Writing the event at the call keeps a replay's
/// allocations identical; the generator's own event is then not written again.
struct LoggedServices<'a> {
    m: &'a mut Machine,
    calls: &'a mut Vec<sim_core::Event>,
}

impl sim_core::MemoryServices for LoggedServices<'_> {
    fn alloc_pages(
        &mut self,
        order: u8,
        kind: sim_core::event::AllocKind,
    ) -> Option<sim_core::Spa> {
        let spa = self.m.alloc_pages(order, kind)?;
        self.calls.push(sim_core::Event::PageAlloc { spa, order, kind });
        Some(spa)
    }
    fn free_pages(&mut self, spa: sim_core::Spa, order: u8) {
        self.m.free_pages(spa, order);
        self.calls.push(sim_core::Event::PageFree { spa, order });
    }
    fn gmem_alloc(&mut self, vm: u32, gpa: sim_core::Gpa, order: u8) -> Option<sim_core::Spa> {
        let spa = self.m.gmem_alloc(vm, gpa, order)?;
        self.calls.push(sim_core::Event::GmemAlloc { gpa, spa, vm, order });
        Some(spa)
    }
    fn memory_bytes(&self) -> u64 {
        self.m.memory_bytes()
    }
    fn free_bytes(&self) -> u64 {
        self.m.free_bytes()
    }
}

/// Which allocator call an event replays: (kind, first page).
fn alloc_key(e: &sim_core::Event) -> Option<(u8, u64)> {
    match e {
        sim_core::Event::PageAlloc { spa, .. } => Some((0, spa.raw())),
        sim_core::Event::PageFree { spa, .. } => Some((1, spa.raw())),
        sim_core::Event::GmemAlloc { spa, .. } => Some((2, spa.raw())),
        _ => None,
    }
}

struct Recorder {
    w: traces::cct::Writer<std::io::BufWriter<std::fs::File>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl Recorder {
    fn new(
        path: &Path,
        name: &str,
        params: &workloads::Params,
        seed: u64,
    ) -> anyhow::Result<Recorder> {
        let tmp = path.with_extension(format!("cct.tmp{}", std::process::id()));
        let f = std::fs::File::create(&tmp).map_err(|e| anyhow!("{}: {e}", tmp.display()))?;
        let mut extra = BTreeMap::new();
        extra.insert("workload".to_owned(), name.to_owned());
        extra.insert("seed".to_owned(), seed.to_string());
        for (k, v) in params.iter() {
            extra.insert(format!("param.{k}"), v.to_owned());
        }
        let meta = traces::cct::Metadata {
            captured_by: format!("ccsim {} workload generator", env!("CARGO_PKG_VERSION")),
            extra,
            ..Default::default()
        };
        let w = traces::cct::Writer::new(
            std::io::BufWriter::new(f),
            &meta,
            traces::cct::Encoding::Default,
        )?;
        Ok(Recorder { w, tmp, path: path.to_owned() })
    }

    fn write(&mut self, te: &TimedEvent) -> anyhow::Result<()> {
        self.w.write(&Record::Event(te.clone()))?;
        Ok(())
    }

    /// Give up: remove the temporary file (a failed run leaves no trace behind).
    fn discard(self) {
        drop(self.w);
        let _ = std::fs::remove_file(&self.tmp);
    }

    fn finish(self) -> anyhow::Result<()> {
        self.w.finish()?;
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| anyhow!("{}: {e}", self.path.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::{Agent, Event, MemoryServices};

    /// Two streams on CPUs 0 and 1; stream 1 issues its second event as `issuer`.
    #[derive(Debug)]
    struct Hopper {
        agents: [Agent; 2],
        issuer: Agent,
        sent: [u32; 2],
    }

    impl workloads::Workload for Hopper {
        fn agents(&self) -> &[Agent] {
            &self.agents
        }
        fn next(&mut self, stream: usize, _: &mut dyn MemoryServices) -> Option<Event> {
            self.sent[stream] += 1;
            (self.sent[stream] <= 2).then_some(Event::Work { count: 1 })
        }
        fn agent_of_last(&self, stream: usize) -> Agent {
            if stream == 1 && self.sent[1] == 2 { self.issuer } else { self.agents[stream] }
        }
    }

    fn machine() -> Machine {
        let cfg = ConfigLayers { sets: vec!["machine.cpus=2".into()], ..Default::default() }
            .build(&[])
            .unwrap();
        Machine::new(cfg, &[], true).unwrap()
    }

    fn hopper(issuer: Agent) -> Hopper {
        Hopper { agents: [Agent::host(0), Agent::host(1)], issuer, sent: [0; 2] }
    }

    #[test]
    fn a_stream_may_change_context_on_its_cpu() {
        let mut w = hopper(Agent::guest(1, 1, 0));
        let mut host = HostTime::default();
        assert_eq!(drive(&mut w, &mut machine(), None, None, &mut host).unwrap(), 4);
        // `work` is not a control event.
        assert_eq!(host.control_events, 0);
    }

    /// Only the events that are neither accesses nor `work` are timed as control events.
    #[test]
    fn host_time_counts_control_events_apart() {
        let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("traces/scenarios/foundation/read-2m-neighbour-none.ccs");
        let out =
            run(&ConfigLayers::default(), &Input::File(scenario), &RunOptions::default()).unwrap();
        // One `rmpupdate`; the two loads are accesses.
        assert_eq!(out.host.control_events, 1);
        assert_eq!(out.report.accesses.total(), 2);
        // Not asked to time them: counted only.
        assert_eq!(out.host.control, Duration::ZERO);
        // A workload: `work` between accesses is not control; launches and PVALIDATEs are.
        let params = workloads::Params::parse(["guests=2", "accesses=300"]).unwrap();
        let inner = workloads::find("snp-churn").unwrap().instantiate(&params, 1).unwrap();
        let mut w = CountControl { inner, control: 0 };
        let mut m = Machine::new(ConfigLayers::default().build(&[]).unwrap(), &[], true).unwrap();
        let mut host = HostTime::default();
        let records = drive(&mut w, &mut m, None, None, &mut host).unwrap();
        assert!(host.control_events > 0 && host.control_events < records);
        assert_eq!(host.control_events, w.control);
    }

    /// A workload that counts the control events it hands out.
    #[derive(Debug)]
    struct CountControl {
        inner: Box<dyn workloads::Workload>,
        control: u64,
    }

    impl workloads::Workload for CountControl {
        fn agents(&self) -> &[Agent] {
            self.inner.agents()
        }
        fn next(&mut self, stream: usize, mem: &mut dyn MemoryServices) -> Option<Event> {
            let e = self.inner.next(stream, mem)?;
            self.control += u64::from(is_control(&e));
            Some(e)
        }
        fn agent_of_last(&self, stream: usize) -> Agent {
            self.inner.agent_of_last(stream)
        }
        fn next_work(&mut self, stream: usize) -> Option<u64> {
            self.inner.next_work(stream)
        }
    }

    #[test]
    fn an_event_on_another_cpu_is_an_error_not_a_panic() {
        let mut w = hopper(Agent::guest(0, 1, 0));
        let e = drive(&mut w, &mut machine(), None, None, &mut HostTime::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("stream 1 (agent c1 host) issued `work` as c0 vm1/v0"), "{e}");
    }
}
