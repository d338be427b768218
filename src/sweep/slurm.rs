//! `ccsim sweep slurm SPEC --shards N --out DIR`: a Slurm job array with one task per shard
//! and a merge job that depends on the whole array (`--dependency=afterok:ARRAY`), so a sweep
//! runs on an existing cluster scheduler without anything of ours on the cluster but the
//! binary. Each task resumes its shard (`--resume`), so a requeued or resubmitted task skips
//! the runs it had finished.
//!
//! Files written under `DIR/slurm/`: `array.sbatch`, `merge.sbatch`, `submit.sh` (submits both
//! and prints `array=ID merge=ID`), and `logs/` for the jobs' output.

use crate::cli::write_atomic;
use anyhow::{Context, anyhow, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the job scripts run and ask for.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// Shards (array tasks).
    pub shards: usize,
    /// Output folder of the merged sweep (shards go in `DIR/shards/I`).
    pub out: PathBuf,
    /// The ccsim binary the jobs run (default: this one).
    pub ccsim: Option<PathBuf>,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` per task.
    pub time: Option<String>,
    /// `--cpus-per-task` (also the task's `--threads`).
    pub cpus_per_task: usize,
    /// `--mem` per task.
    pub mem: Option<String>,
}

/// A path as a single-quoted shell word.
fn sh(p: &Path) -> anyhow::Result<String> {
    let s = p.to_str().ok_or_else(|| anyhow!("{}: not UTF-8", p.display()))?;
    Ok(format!("'{}'", s.replace('\'', "'\\''")))
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| p.display().to_string())
}

fn header(o: &mut String, name: &str, opts: &SlurmOptions, logs: &Path) -> anyhow::Result<()> {
    let _ = writeln!(o, "#!/bin/bash");
    let _ = writeln!(o, "#SBATCH --job-name={name}");
    let _ = writeln!(o, "#SBATCH --ntasks=1");
    if let Some(p) = &opts.partition {
        let _ = writeln!(o, "#SBATCH --partition={p}");
    }
    if let Some(t) = &opts.time {
        let _ = writeln!(o, "#SBATCH --time={t}");
    }
    if let Some(m) = &opts.mem {
        let _ = writeln!(o, "#SBATCH --mem={m}");
    }
    let logs = logs.to_str().ok_or_else(|| anyhow!("{}: not UTF-8", logs.display()))?;
    if logs.contains(char::is_whitespace) {
        bail!("{logs}: Slurm's --output cannot hold whitespace; choose another --out");
    }
    Ok(())
}

/// Write the job scripts; returns the path of `submit.sh`.
///
/// # Errors
/// A spec that does not load (checked now, not on the cluster), paths that are not UTF-8,
/// write errors.
pub fn write(spec: &Path, o: &SlurmOptions) -> anyhow::Result<PathBuf> {
    if o.shards == 0 {
        bail!("--shards must be at least 1");
    }
    // Fail here, not in N array tasks.
    let loaded = super::spec::Spec::load(spec)?;
    let runs = loaded.plan.runs.len();
    let spec = absolute(spec)?;
    let out = absolute(&o.out)?;
    let ccsim = match &o.ccsim {
        Some(p) => absolute(p)?,
        None => std::env::current_exe().context("the path of this ccsim binary")?,
    };
    let dir = out.join("slurm");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| logs.display().to_string())?;
    let n = o.shards;
    let mut a = String::new();
    header(&mut a, "ccsim-sweep", o, &logs)?;
    let _ = writeln!(a, "#SBATCH --array=0-{}", n - 1);
    let _ = writeln!(a, "#SBATCH --cpus-per-task={}", o.cpus_per_task);
    let _ = writeln!(a, "#SBATCH --output={}/shard-%a.out", logs.display());
    let _ = writeln!(
        a,
        "# ccsim sweep, {runs} runs in {n} shards (written by `ccsim sweep slurm`).\nset -euo pipefail"
    );
    let _ = writeln!(
        a,
        "exec {} sweep {} --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\" --out {}/shards/\"${{SLURM_ARRAY_TASK_ID}}\" --resume --threads \"${{SLURM_CPUS_PER_TASK:-{}}}\"",
        sh(&ccsim)?,
        sh(&spec)?,
        sh(&out)?,
        o.cpus_per_task
    );
    let mut m = String::new();
    header(&mut m, "ccsim-merge", o, &logs)?;
    let _ = writeln!(m, "#SBATCH --output={}/merge.out", logs.display());
    let _ = writeln!(m, "set -euo pipefail");
    let shards: Vec<String> =
        (0..n).map(|i| sh(&out.join("shards").join(i.to_string()))).collect::<Result<_, _>>()?;
    let _ =
        writeln!(m, "exec {} sweep merge {} --out {}", sh(&ccsim)?, shards.join(" "), sh(&out)?);
    let mut s = String::new();
    let _ = writeln!(s, "#!/bin/bash\n# Submit the shard array, then the merge after it succeeds.");
    let _ = writeln!(s, "set -euo pipefail");
    let _ = writeln!(s, "array=$(sbatch --parsable {})", sh(&dir.join("array.sbatch"))?);
    let _ = writeln!(s, "array=${{array%%;*}}");
    let _ = writeln!(
        s,
        "merge=$(sbatch --parsable --dependency=afterok:\"$array\" {})",
        sh(&dir.join("merge.sbatch"))?
    );
    let _ = writeln!(s, "merge=${{merge%%;*}}");
    let _ = writeln!(s, "echo \"array=$array merge=$merge\"");
    write_atomic(&dir.join("array.sbatch"), a.as_bytes())?;
    write_atomic(&dir.join("merge.sbatch"), m.as_bytes())?;
    let submit = dir.join("submit.sh");
    write_atomic(&submit, s.as_bytes())?;
    Ok(submit)
}
