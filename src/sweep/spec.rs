//! The sweep specification (`SPEC.toml`) and its expansion into a plan: the ordered list of
//! runs, each a self-contained description that a shard, a resumed sweep or a merge can
//! compare and run without the spec file.
//!
//! The grid is inputs × machines × axis values × policies × seeds, in that nesting order (the
//! last varies fastest). Every run has an id made from its coordinates, which names its result
//! file, so a result can always be matched to the run that made it.

use crate::config::ConfigBuilder;
use crate::host::config::PhysmapPolicy;
use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The spec as written (unknown keys are errors).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    /// Title of the summary.
    name: Option<String>,
    /// Policies: names, or `["all"]` for every policy.
    #[serde(default)]
    policies: Vec<String>,
    /// The policy the ratios are against (default: the first policy).
    baseline: Option<String>,
    /// Seeds (default `[1]`).
    #[serde(default)]
    seeds: Vec<u64>,
    /// Inputs.
    #[serde(default)]
    input: Vec<InputFile>,
    /// Machine configurations (default: the default preset).
    #[serde(default)]
    machine: Vec<MachineFile>,
    /// Further axes: each a configuration key and its values.
    #[serde(default)]
    axis: Vec<AxisFile>,
    /// Published anchors the summary checks (see `summary::ANCHORS`).
    #[serde(default)]
    anchors: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputFile {
    label: Option<String>,
    workload: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
    trace: Option<String>,
    import: Option<ImportFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportFile {
    from: String,
    path: String,
    #[serde(rename = "as")]
    role: String,
    vapa: Option<String>,
    format: Option<String>,
    vendor: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineFile {
    label: Option<String>,
    preset: Option<String>,
    #[serde(default)]
    config: Vec<String>,
    #[serde(default)]
    set: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AxisFile {
    key: String,
    values: Vec<toml::Value>,
}

/// What a run replays.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputSpec {
    /// A built-in workload with parameters.
    Workload {
        /// Workload name.
        name: String,
        /// Parameters.
        params: BTreeMap<String, String>,
    },
    /// A `.cct` trace or `.ccs` scenario, as the spec names it (relative to the spec's folder).
    Trace {
        /// Path as written.
        path: String,
    },
    /// A capture imported once per sweep into `inputs/LABEL.cct` of the output folder.
    Import {
        /// Capture format.
        from: String,
        /// Capture path as written (relative to the spec's folder).
        path: String,
        /// Role in the simulated machine.
        role: String,
        /// lackey page map, as written.
        vapa: Option<String>,
        /// ChampSim layout.
        format: Option<String>,
        /// kvm-trace vendor.
        vendor: Option<String>,
    },
}

/// One run of the grid.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunSpec {
    /// Unique id, made of the coordinates; names `runs/ID.json`.
    pub id: String,
    /// Position in the grid.
    pub index: usize,
    /// Comparison group: the run's coordinates except policy and seed.
    pub group: String,
    /// Input label.
    pub input_label: String,
    /// The input.
    pub input: InputSpec,
    /// Machine label.
    pub machine: String,
    /// Preset.
    pub preset: String,
    /// Config files, as written (relative to the spec's folder).
    pub config: Vec<String>,
    /// Overrides in order: the machine's, then the axes'.
    pub sets: Vec<String>,
    /// Axis values (key → value).
    pub axes: BTreeMap<String, String>,
    /// Physmap policy.
    pub policy: String,
    /// Seed.
    pub seed: u64,
}

/// The expanded sweep.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Plan {
    /// Title.
    pub name: String,
    /// Baseline policy.
    pub baseline: String,
    /// Policies in order.
    pub policies: Vec<String>,
    /// Every run, in grid order.
    pub runs: Vec<RunSpec>,
    /// Published anchors the summary checks.
    #[serde(default)]
    pub anchors: Vec<String>,
}

/// A parsed spec: the plan and the folder its relative paths start from.
#[derive(Debug)]
pub struct Spec {
    /// The plan.
    pub plan: Plan,
    /// Folder of the spec file.
    pub base: PathBuf,
    /// The spec's bytes (copied into the output folder).
    pub text: String,
}

/// Largest spec or configuration file read (a spec is a few kB; this bounds a mistake such as
/// naming a device or a trace).
pub const MAX_TEXT_FILE: u64 = 16 << 20;

/// Read a regular text file of at most [`MAX_TEXT_FILE`] bytes.
///
/// # Errors
/// Missing, not a regular file (a FIFO or device would block or never end), too large, or not
/// UTF-8 — each naming the path.
pub fn read_text(p: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let at = || p.display().to_string();
    let meta = std::fs::metadata(p).with_context(at)?;
    if !meta.is_file() {
        bail!("{}: not a regular file", p.display());
    }
    if meta.len() > MAX_TEXT_FILE {
        bail!(
            "{}: {} bytes, more than the {} a spec or config file may have",
            p.display(),
            meta.len(),
            MAX_TEXT_FILE
        );
    }
    let mut text = String::new();
    std::fs::File::open(p)
        .with_context(at)?
        .take(MAX_TEXT_FILE)
        .read_to_string(&mut text)
        .with_context(at)?;
    Ok(text)
}

/// A TOML scalar as the string a `--set` or `--param` would carry.
fn scalar(v: &toml::Value, what: &str) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!("{what}: expected a string, number or boolean, found {}", other.type_str()),
    })
}

/// Characters kept in ids and file names; others become `_`.
pub fn slug(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_=.+".contains(c) { c } else { '_' })
        .collect()
}

impl Spec {
    /// Read and expand `path`.
    ///
    /// # Errors
    /// Unreadable file, TOML errors with line and column, unknown keys with their path,
    /// unknown policies, presets, workloads or configuration keys (naming the input or machine
    /// they appear in), duplicate labels.
    pub fn load(path: &Path) -> anyhow::Result<Spec> {
        let text = read_text(path)?;
        let base = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        let plan = Self::expand(&text, &base).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
        Ok(Spec { plan, base, text })
    }

    /// Expand spec text (relative paths from `base`).
    ///
    /// # Errors
    /// As [`Spec::load`], without the file name.
    pub fn expand(text: &str, base: &Path) -> anyhow::Result<Plan> {
        let de = toml::Deserializer::parse(text).map_err(|e| anyhow!("{e}"))?;
        let f: SpecFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            anyhow!("at `{path}`: {}", e.into_inner())
        })?;
        let policies: Vec<String> = match f.policies.as_slice() {
            [] => vec![PhysmapPolicy::None.name().to_owned()],
            [one] if one == "all" => PhysmapPolicy::ALL.iter().map(|p| p.name().into()).collect(),
            list => list.to_vec(),
        };
        for p in &policies {
            if !PhysmapPolicy::ALL.iter().any(|q| q.name() == p) {
                bail!(
                    "policies: unknown policy {p:?} (known: {}, or \"all\")",
                    PhysmapPolicy::ALL.map(|q| q.name()).join(", ")
                );
            }
        }
        if let Some(d) = dup(&policies) {
            bail!("policies: {d:?} twice");
        }
        let baseline = f.baseline.unwrap_or_else(|| policies[0].clone());
        if !policies.contains(&baseline) {
            bail!("baseline {baseline:?} is not among the policies");
        }
        let seeds = if f.seeds.is_empty() { vec![1] } else { f.seeds };
        if let Some(d) = dup(&seeds) {
            bail!("seeds: {d} twice");
        }
        if f.input.is_empty() {
            bail!("no [[input]]: give at least one workload, trace or import");
        }
        let inputs = f
            .input
            .iter()
            .enumerate()
            .map(|(i, x)| input(x, base).map_err(|e| anyhow!("input[{i}]: {e:#}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let machines = if f.machine.is_empty() {
            vec![machine(
                &MachineFile { label: None, preset: None, config: vec![], set: BTreeMap::new() },
                base,
            )?]
        } else {
            f.machine
                .iter()
                .enumerate()
                .map(|(i, m)| machine(m, base).map_err(|e| anyhow!("machine[{i}]: {e:#}")))
                .collect::<anyhow::Result<Vec<_>>>()?
        };
        if let Some(d) = dup(&inputs.iter().map(|i| i.0.clone()).collect::<Vec<_>>()) {
            bail!("two inputs are labelled {d:?}: give each a distinct `label`");
        }
        if let Some(d) = dup(&machines.iter().map(|m| m.label.clone()).collect::<Vec<_>>()) {
            bail!("two machines are labelled {d:?}: give each a distinct `label`");
        }
        let mut axes: Vec<(String, Vec<String>)> = Vec::new();
        for (i, a) in f.axis.iter().enumerate() {
            if a.key == "host.policy" {
                bail!("axis[{i}]: use `policies` for the physmap policy");
            }
            if a.values.is_empty() {
                bail!("axis[{i}] ({}): no values", a.key);
            }
            let vals = a
                .values
                .iter()
                .map(|v| scalar(v, &format!("axis[{i}].values")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if let Some(d) = dup(&vals) {
                bail!("axis[{i}] ({}): value {d:?} twice", a.key);
            }
            axes.push((a.key.clone(), vals));
        }
        let combos = product(&axes);
        let mut runs = Vec::new();
        for (label, inp) in &inputs {
            for m in &machines {
                for combo in &combos {
                    let mut group = format!("{label}.{}", m.label);
                    let mut sets = m.sets.clone();
                    let mut ax = BTreeMap::new();
                    for (k, v) in combo {
                        let short = k.rsplit('.').next().unwrap_or(k);
                        group.push_str(&format!(".{short}={v}"));
                        sets.push(format!("{k}={v}"));
                        ax.insert(k.clone(), v.clone());
                    }
                    for p in &policies {
                        // Validate the configuration once per (machine, axes, policy).
                        let mut b = ConfigBuilder::from_preset(&m.preset)?;
                        for (text, origin) in &m.config_texts {
                            b.add_toml(text, origin)?;
                        }
                        for s in sets.iter().chain(std::iter::once(&format!("host.policy={p}"))) {
                            b.set(s, "sweep spec").map_err(|e| {
                                anyhow!("machine {:?}, setting `{s}`: {e}", m.label)
                            })?;
                        }
                        b.build().map_err(|e| anyhow!("machine {:?}: {e}", m.label))?;
                        for &seed in &seeds {
                            let id = slug(&format!("{group}.{p}.s{seed}"));
                            runs.push(RunSpec {
                                id,
                                index: runs.len(),
                                group: slug(&group),
                                input_label: label.clone(),
                                input: inp.clone(),
                                machine: m.label.clone(),
                                preset: m.preset.clone(),
                                config: m.config.clone(),
                                sets: sets.clone(),
                                axes: ax.clone(),
                                policy: p.clone(),
                                seed,
                            });
                        }
                    }
                }
            }
        }
        if let Some(d) = dup(&runs.iter().map(|r| r.id.to_ascii_lowercase()).collect::<Vec<_>>()) {
            bail!(
                "two runs would share the id {d:?} (labels that differ only in characters \
                 outside [A-Za-z0-9._=+-] or in case): make the labels distinct"
            );
        }
        for a in &f.anchors {
            if !super::summary::ANCHORS.contains(&a.as_str()) {
                bail!(
                    "anchors: unknown anchor {a:?} (known: {})",
                    super::summary::ANCHORS.join(", ")
                );
            }
        }
        Ok(Plan {
            name: f.name.unwrap_or_else(|| "sweep".to_owned()),
            baseline,
            policies,
            runs,
            anchors: f.anchors,
        })
    }
}

/// The first value that occurs twice.
fn dup<T: Ord + Clone>(xs: &[T]) -> Option<T> {
    let mut seen = std::collections::BTreeSet::new();
    xs.iter().find(|x| !seen.insert((*x).clone())).cloned()
}

/// Cartesian product of axis values, first axis slowest.
fn product(axes: &[(String, Vec<String>)]) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for (k, vals) in axes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                vals.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push((k.clone(), v.clone()));
                    p
                })
            })
            .collect();
    }
    out
}

fn input(x: &InputFile, base: &Path) -> anyhow::Result<(String, InputSpec)> {
    let given = usize::from(x.workload.is_some())
        + usize::from(x.trace.is_some())
        + usize::from(x.import.is_some());
    if given != 1 {
        bail!("give exactly one of `workload`, `trace` or `import`");
    }
    if !x.params.is_empty() && x.workload.is_none() {
        bail!("`params` is for workloads");
    }
    let (default_label, spec) = if let Some(w) = &x.workload {
        let info = workloads::find(w).ok_or_else(|| {
            anyhow!(
                "unknown workload {w:?} (known: {})",
                workloads::registry().iter().map(|w| w.name).collect::<Vec<_>>().join(", ")
            )
        })?;
        let mut params = BTreeMap::new();
        for (k, v) in &x.params {
            params.insert(k.clone(), scalar(v, &format!("params.{k}"))?);
        }
        let kv: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let parsed = workloads::Params::parse(kv.iter().map(String::as_str))?;
        // Parameters are checked here, before any run starts.
        info.instantiate(&parsed, 1).map_err(|e| anyhow!("workload {w}: {e}"))?;
        (w.clone(), InputSpec::Workload { name: w.clone(), params })
    } else if let Some(t) = &x.trace {
        let p = base.join(t);
        if !p.is_file() {
            bail!("trace {}: no such file", p.display());
        }
        (stem(t), InputSpec::Trace { path: t.clone() })
    } else {
        let i = x.import.as_ref().ok_or_else(|| anyhow!("no input"))?;
        for f in std::iter::once(&i.path).chain(i.vapa.as_ref()) {
            let p = base.join(f);
            if !p.is_file() {
                bail!("import: {}: no such file", p.display());
            }
        }
        (
            stem(&i.path),
            InputSpec::Import {
                from: i.from.clone(),
                path: i.path.clone(),
                role: i.role.clone(),
                vapa: i.vapa.clone(),
                format: i.format.clone(),
                vendor: i.vendor.clone(),
            },
        )
    };
    let label = x.label.clone().unwrap_or(default_label);
    if label.is_empty() {
        bail!("empty label");
    }
    Ok((label, spec))
}

/// File name without folders and extensions (`a/b/trace.lackey.zst` → `trace`).
fn stem(p: &str) -> String {
    let name = p.rsplit('/').next().unwrap_or(p);
    name.split('.').next().unwrap_or(name).to_owned()
}

struct Machine {
    label: String,
    preset: String,
    config: Vec<String>,
    config_texts: Vec<(String, String)>,
    sets: Vec<String>,
}

fn machine(m: &MachineFile, base: &Path) -> anyhow::Result<Machine> {
    let preset = m.preset.clone().unwrap_or_else(|| crate::config::DEFAULT_PRESET.to_owned());
    crate::config::preset(&preset)?;
    let mut config_texts = Vec::new();
    for c in &m.config {
        let p = base.join(c);
        let t = read_text(&p)?;
        config_texts.push((t, c.clone()));
    }
    let mut sets = Vec::new();
    if m.set.contains_key("host.policy") {
        bail!("set: use `policies` for the physmap policy, not `host.policy`");
    }
    for (k, v) in &m.set {
        sets.push(format!("{k}={}", scalar(v, &format!("set.{k}"))?));
    }
    let label = m.label.clone().unwrap_or_else(|| preset.clone());
    Ok(Machine { label, preset, config: m.config.clone(), config_texts, sets })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(t: &str) -> anyhow::Result<Plan> {
        Spec::expand(t, Path::new("."))
    }

    const SMALL: &str = r#"
        policies = ["none", "split-on-assign"]
        seeds = [1, 2]
        [[input]]
        workload = "snp-launch"
        params = { guests = 1, guest_memory = "4M" }
        [[machine]]
        preset = "tiny"
        [[machine]]
        label = "tiny-small-tlb"
        preset = "tiny"
        set = { "mmu.page_walkers" = 1 }
        [[axis]]
        key = "host.gmem_folio_order"
        values = [0, 9]
    "#;

    /// The grid is the product of its axes, in nesting order, with unique ids.
    #[test]
    fn grid_size_and_order() {
        let p = expand(SMALL).unwrap();
        assert_eq!(p.runs.len(), 2 * 2 * 2 * 2);
        assert_eq!(p.runs[0].id, "snp-launch.tiny.gmem_folio_order=0.none.s1");
        assert_eq!(p.runs[1].id, "snp-launch.tiny.gmem_folio_order=0.none.s2");
        assert_eq!(p.runs[2].policy, "split-on-assign");
        assert_eq!(p.runs[4].axes["host.gmem_folio_order"], "9");
        assert_eq!(p.runs[8].machine, "tiny-small-tlb");
        assert_eq!(p.runs[8].sets[0], "mmu.page_walkers=1");
        assert!(p.runs.iter().enumerate().all(|(i, r)| r.index == i));
        assert_eq!(p.baseline, "none");
    }

    /// Mistakes are named with where they are.
    #[test]
    fn errors_name_the_place() {
        let e = |t: &str| format!("{:#}", expand(t).unwrap_err());
        let unknown = e("polices = [\"none\"]\n[[input]]\nworkload = \"snp-launch\"\n");
        assert!(unknown.contains("unknown field `polices`"), "{unknown}");
        let deep = e("[[input]]\nworkload = \"snp-launch\"\nparam = {}\n");
        assert!(deep.contains("input[0]") && deep.contains("param"), "{deep}");
        let pol = e("policies = [\"nope\"]\n[[input]]\nworkload = \"snp-launch\"\n");
        assert!(pol.contains("unknown policy \"nope\""), "{pol}");
        let key =
            e("[[input]]\nworkload = \"snp-launch\"\n[[machine]]\nset = { \"mmu.nope\" = 1 }\n");
        assert!(key.contains("mmu.nope"), "{key}");
        let w = e("[[input]]\nworkload = \"nope\"\n");
        assert!(w.contains("input[0]") && w.contains("unknown workload"), "{w}");
        let both = e("[[input]]\nworkload = \"snp-launch\"\ntrace = \"x.cct\"\n");
        assert!(both.contains("exactly one"), "{both}");
        let toml = e("[[input]\n");
        assert!(toml.contains("line 1"), "{toml}");
        let none = e("policies = [\"none\"]\n");
        assert!(none.contains("no [[input]]"), "{none}");
        let dup = e("[[input]]\nworkload = \"snp-launch\"\n[[input]]\nworkload = \"snp-launch\"\n");
        assert!(dup.contains("labelled \"snp-launch\""), "{dup}");
        let base = e(
            "policies = [\"none\"]\nbaseline = \"presplit-4k\"\n[[input]]\nworkload = \"snp-launch\"\n",
        );
        assert!(base.contains("baseline"), "{base}");
    }

    /// `all` expands to every policy, in the documented order.
    #[test]
    fn all_policies() {
        let p = expand("policies = [\"all\"]\n[[input]]\nworkload = \"snp-launch\"\n").unwrap();
        assert_eq!(p.policies.len(), PhysmapPolicy::ALL.len());
        assert_eq!(p.runs.len(), PhysmapPolicy::ALL.len());
    }
}
