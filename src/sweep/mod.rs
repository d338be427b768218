//! Batch sweeps (DESIGN.md "Reports"): a grid of inputs × machines × axes × policies × seeds,
//! run in parallel, each run independent and deterministic, results written one file per run
//! as soon as it finishes (atomically), so that an interrupted sweep resumes where it stopped
//! and a sharded sweep merges into exactly the outputs of an unsharded one.
//!
//! Output folder:
//! - `spec.toml` (the spec's bytes) and `plan.json` (the expanded grid and the shard);
//! - `inputs/LABEL.cct` for `import` inputs;
//! - `runs/ID.json`: `{ "run": …, "report": … }` per finished run;
//! - `results.csv`, `summary.md`, `plots/*.svg`: rendered from the run files on disk (never
//!   from memory), after every run of the sweep or shard, so they depend only on the run files.

mod progress;
pub mod slurm;
pub mod spec;
pub mod summary;

use crate::cli::write_atomic;
use crate::engine::{self, ConfigLayers, Input, RunOptions};
use crate::report::Report;
use anyhow::{Context, anyhow, bail};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use spec::{InputSpec, Plan, RunSpec, Spec};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

pub use progress::ProgressMode;

/// A deterministic slice of the grid: the runs whose index is `index` modulo `count`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Shard> {
        let (i, n) = s.split_once('/').ok_or_else(|| anyhow!("--shard {s:?}: expected I/N"))?;
        let index: usize = i.parse().map_err(|_| anyhow!("--shard {s:?}: I is not a number"))?;
        let count: usize = n.parse().map_err(|_| anyhow!("--shard {s:?}: N is not a number"))?;
        if count == 0 || index >= count {
            bail!("--shard {s:?}: need 0 <= I < N");
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// Whether run `index` belongs to this shard.
    pub fn has(&self, index: usize) -> bool {
        index % self.count == self.index
    }
}

/// `plan.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlanFile {
    /// ccsim version that made it.
    pub ccsim: String,
    /// The shard this folder holds (none: the whole grid).
    pub shard: Option<Shard>,
    /// The grid.
    pub plan: Plan,
}

/// `runs/ID.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// The run.
    pub run: RunSpec,
    /// Its report.
    pub report: Report,
}

/// How to run a sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Output folder.
    pub out: PathBuf,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Continue a sweep in `out`, skipping its finished runs.
    pub resume: bool,
    /// Run only this slice.
    pub shard: Option<Shard>,
    /// Progress display.
    pub progress: ProgressMode,
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepOutcome {
    /// Runs in the grid (or shard).
    pub selected: usize,
    /// Runs executed now.
    pub ran: usize,
    /// Runs already finished (resumed).
    pub skipped: usize,
    /// Runs that failed: id and error.
    pub failed: Vec<(String, String)>,
}

fn runs_dir(out: &Path) -> PathBuf {
    out.join("runs")
}

fn run_path(out: &Path, id: &str) -> PathBuf {
    runs_dir(out).join(format!("{id}.json"))
}

fn read_plan(dir: &Path) -> anyhow::Result<Option<PlanFile>> {
    let p = dir.join("plan.json");
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b)
                .map_err(|e| anyhow!("{}: not a sweep plan: {e}", p.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("{}: {e}", p.display())),
    }
}

fn to_json<T: Serialize>(v: &T) -> anyhow::Result<String> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    Ok(s)
}

/// A finished run's result file, if it is there, whole, and of this run.
///
/// # Errors
/// A result file that exists but is unreadable or of another run.
pub fn read_result(out: &Path, run: &RunSpec) -> anyhow::Result<Option<RunResult>> {
    let p = run_path(out, &run.id);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("{}: {e}", p.display())),
    };
    let r: RunResult = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("{}: corrupt result: {e}", p.display()))?;
    if r.run != *run {
        bail!("{}: the result of another run (the spec changed?)", p.display());
    }
    Ok(Some(r))
}

/// Run (or resume) a sweep.
///
/// # Errors
/// A bad spec, an output folder holding another sweep, I/O errors. A run that fails does not
/// stop the others: it is listed in [`SweepOutcome::failed`].
pub fn run(spec_path: &Path, o: &SweepOptions) -> anyhow::Result<SweepOutcome> {
    let spec = Spec::load(spec_path)?;
    let plan_file =
        PlanFile { ccsim: env!("CARGO_PKG_VERSION").to_owned(), shard: o.shard, plan: spec.plan };
    let out = &o.out;
    match read_plan(out)? {
        Some(old) if !o.resume => bail!(
            "{} already holds a sweep ({} runs planned); --resume continues it, or choose another --out",
            out.display(),
            old.plan.runs.len()
        ),
        Some(old) if old != plan_file => bail!(
            "{}: the spec, the shard or the ccsim version differs from the sweep started there; \
             resume with the same ones, or choose another --out",
            out.display()
        ),
        _ => {}
    }
    std::fs::create_dir_all(runs_dir(out)).with_context(|| out.display().to_string())?;
    remove_temporaries(out)?;
    write_atomic(&out.join("spec.toml"), spec.text.as_bytes())?;
    write_atomic(&out.join("plan.json"), to_json(&plan_file)?.as_bytes())?;
    let plan = &plan_file.plan;
    let selected: Vec<&RunSpec> =
        plan.runs.iter().filter(|r| o.shard.is_none_or(|s| s.has(r.index))).collect();
    import_inputs(&spec.base, out, &selected)?;
    let mut outcome = SweepOutcome { selected: selected.len(), ..Default::default() };
    let mut todo = Vec::new();
    for r in &selected {
        match read_result(out, r) {
            Ok(Some(_)) => outcome.skipped += 1,
            Ok(None) => todo.push(*r),
            Err(e) => {
                tracing::warn!("{e:#}; running it again");
                todo.push(*r);
            }
        }
    }
    tracing::info!(
        "sweep {}: {} runs selected, {} finished before, {} to run",
        plan.name,
        selected.len(),
        outcome.skipped,
        todo.len()
    );
    let events = Arc::new(AtomicU64::new(0));
    let bar =
        progress::Progress::start(o.progress, selected.len(), outcome.skipped, events.clone());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(o.threads)
        .build()
        .map_err(|e| anyhow!("thread pool: {e}"))?;
    let results: Vec<(String, anyhow::Result<()>)> = pool.install(|| {
        todo.par_iter()
            .map(|r| {
                let res = run_one(&spec.base, out, r, &events);
                match &res {
                    Ok(()) => tracing::debug!("run {} finished", r.id),
                    Err(e) => tracing::info!("run {} failed: {e:#}", r.id),
                }
                bar.run_done(res.is_ok());
                (r.id.clone(), res)
            })
            .collect()
    });
    bar.finish();
    for (id, res) in results {
        match res {
            Ok(()) => outcome.ran += 1,
            Err(e) => outcome.failed.push((id, format!("{e:#}"))),
        }
    }
    summary::write_outputs(out, &plan_file)?;
    Ok(outcome)
}

/// Remove the temporary files an interrupted sweep left (`.NAME.tmpPID` from
/// [`write_atomic`], `LABEL.tmpPID.cct` from imports); finished files are never temporaries.
fn remove_temporaries(out: &Path) -> anyhow::Result<()> {
    for dir in [out.to_path_buf(), runs_dir(out), out.join("plots"), out.join("inputs")] {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let write_tmp = name.starts_with('.') && name.contains(".tmp");
            let import_tmp = dir.ends_with("inputs") && name.contains(".tmp");
            if (write_tmp || import_tmp) && e.path().is_file() {
                std::fs::remove_file(e.path()).with_context(|| e.path().display().to_string())?;
            }
        }
    }
    Ok(())
}

/// Import every `import` input the selected runs need into `out/inputs/`, once, in plan order.
fn import_inputs(base: &Path, out: &Path, runs: &[&RunSpec]) -> anyhow::Result<()> {
    let mut done = std::collections::BTreeSet::new();
    for r in runs {
        let InputSpec::Import { from, path, role, vapa, format, vendor } = &r.input else {
            continue;
        };
        if !done.insert(r.input_label.clone()) {
            continue;
        }
        let dest = imported_path(out, &r.input_label);
        if dest.is_file() {
            continue;
        }
        std::fs::create_dir_all(out.join("inputs"))?;
        let tmp = dest.with_extension(format!("tmp{}.cct", std::process::id()));
        let trace = base.join(path);
        let vapa = vapa.as_ref().map(|v| base.join(v));
        let req = crate::input::ImportRequest {
            from,
            trace: &trace,
            vapa: vapa.as_deref(),
            role,
            format: format.as_deref(),
            vendor: vendor.as_deref(),
            output: &tmp,
        };
        let msg = crate::input::import_any(&req)
            .map_err(|e| anyhow!("input {:?}: {e:#}", r.input_label))?;
        std::fs::rename(&tmp, &dest).with_context(|| dest.display().to_string())?;
        tracing::info!("input {}: {msg}", r.input_label);
    }
    Ok(())
}

fn imported_path(out: &Path, label: &str) -> PathBuf {
    out.join("inputs").join(format!("{}.cct", spec::slug(label)))
}

/// The configuration layers of a run (preset, config files, `host.policy`, then the sets).
///
/// # Errors
/// An unreadable config file.
pub fn layers(base: &Path, r: &RunSpec) -> anyhow::Result<ConfigLayers> {
    let mut files = Vec::new();
    for c in &r.config {
        let p = base.join(c);
        files.push((
            std::fs::read_to_string(&p).with_context(|| p.display().to_string())?,
            c.clone(),
        ));
    }
    let mut sets = vec![format!("host.policy={}", r.policy)];
    sets.extend(r.sets.iter().cloned());
    Ok(ConfigLayers { preset: Some(r.preset.clone()), files, sets })
}

/// Execute one run and write its result file.
fn run_one(base: &Path, out: &Path, r: &RunSpec, events: &Arc<AtomicU64>) -> anyhow::Result<()> {
    let layers = layers(base, r)?;
    let (input, shown) = match &r.input {
        InputSpec::Workload { name, params } => {
            let kv: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let params = workloads::Params::parse(kv.iter().map(String::as_str))?;
            (Input::Workload { name: name.clone(), params }, None)
        }
        InputSpec::Trace { path } => (Input::File(base.join(path)), Some(path.clone())),
        InputSpec::Import { path, .. } => {
            (Input::File(imported_path(out, &r.input_label)), Some(path.clone()))
        }
    };
    let opts = RunOptions { seed: r.seed, progress: Some(events.clone()), ..RunOptions::default() };
    // A model panic is a bug, but it must not take the other runs down with it.
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine::run(&layers, &input, &opts)
    }))
    .map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        anyhow!("the model panicked (a ccsim bug; please report it): {msg}")
    })??;
    let mut report = res.report;
    if let Some(name) = shown {
        // The path as the spec wrote it, so that reports do not depend on where the sweep ran.
        report.input.name = name;
    }
    let result = RunResult { run: r.clone(), report };
    write_atomic(&run_path(out, &r.id), to_json(&result)?.as_bytes())
}

/// `ccsim sweep merge DIR... --out OUT`: join shard folders of one plan into `out` and render
/// its outputs; `out` then equals the folder of an unsharded sweep.
///
/// # Errors
/// Folders of different plans, a planned run missing from every folder, corrupt result files.
pub fn merge(dirs: &[PathBuf], out: &Path) -> anyhow::Result<usize> {
    let mut plan: Option<(PathBuf, PlanFile)> = None;
    for d in dirs {
        let p = read_plan(d)?
            .ok_or_else(|| anyhow!("{}: no plan.json (not a sweep folder)", d.display()))?;
        match &plan {
            None => plan = Some((d.clone(), p)),
            Some((d0, p0)) => {
                if p0.plan != p.plan || p0.ccsim != p.ccsim {
                    bail!("{} and {} hold different sweeps", d0.display(), d.display());
                }
            }
        }
    }
    let (first, mut pf) = plan.ok_or_else(|| anyhow!("no folders to merge"))?;
    pf.shard = None;
    std::fs::create_dir_all(runs_dir(out)).with_context(|| out.display().to_string())?;
    let mut missing = Vec::new();
    for r in &pf.plan.runs {
        let mut found = None;
        for d in dirs {
            if read_result(d, r)?.is_some() {
                found = Some(run_path(d, &r.id));
                break;
            }
        }
        match found {
            Some(src) => {
                // The bytes as the run wrote them (a parse and print could change a float's
                // last digit).
                let dest = run_path(out, &r.id);
                if src != dest {
                    let bytes = std::fs::read(&src).with_context(|| src.display().to_string())?;
                    write_atomic(&dest, &bytes)?;
                }
            }
            None => missing.push(r.id.clone()),
        }
    }
    // Imported inputs, so that the merged folder is whole.
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d.join("inputs")) else { continue };
        let mut names: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for p in names {
            let Some(name) = p.file_name() else { continue };
            let dest = out.join("inputs").join(name);
            let is_tmp = name.to_string_lossy().contains(".tmp");
            if !is_tmp && !dest.exists() {
                std::fs::create_dir_all(out.join("inputs"))?;
                let bytes = std::fs::read(&p).with_context(|| p.display().to_string())?;
                write_atomic(&dest, &bytes)?;
            }
        }
    }
    let spec = std::fs::read(first.join("spec.toml"))
        .with_context(|| first.join("spec.toml").display().to_string())?;
    write_atomic(&out.join("spec.toml"), &spec)?;
    write_atomic(&out.join("plan.json"), to_json(&pf)?.as_bytes())?;
    summary::write_outputs(out, &pf)?;
    if !missing.is_empty() {
        bail!(
            "{} of {} runs are in none of the folders (outputs written without them): {}",
            missing.len(),
            pf.plan.runs.len(),
            missing.join(", ")
        );
    }
    Ok(pf.plan.runs.len())
}
