//! Command-line interface (clap). Raw arguments are parsed here and turned into validated
//! configuration before anything runs (STYLE rule 10).

use crate::config::{ConfigBuilder, DEFAULT_PRESET, PRESETS, all_field_docs, value_of};
use crate::engine::{self, ConfigLayers, Input, RunOptions};
use crate::host::config::PhysmapPolicy;
use crate::input;
use clap::{Parser, Subcommand};
use sim_core::config::Source;
use std::path::PathBuf;
use std::process::ExitCode;

/// Deterministic cycle-level model of the SEV-SNP / TDX memory-protection path.
#[derive(Debug, Parser)]
#[command(name = "ccsim", version, about, long_about = None)]
#[command(
    after_help = "Examples:\n  ccsim run                                   # default workload, human report\n  ccsim run --policy split-on-assign --json r.json\n  ccsim check traces/scenarios/\n  ccsim trace info run.cct\n  ccsim presets"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log what happens on stderr (`-v` info, `-vv` debug, `-vvv` trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a trace, a scenario or a workload and print a report.
    #[command(
        after_help = "Examples:\n  ccsim run\n  ccsim run --workload snp-launch --param guests=8 --policy split-on-assign\n  ccsim run trace.cct --preset zen4-nogbpages --json out.json --csv out.csv\n  ccsim run scenario.ccs --set mmu.page_walkers=1"
    )]
    Run(RunArgs),
    /// Run scenario files and report each expectation as pass/fail with file:line.
    #[command(
        after_help = "Examples:\n  ccsim check traces/scenarios/snp/s1-host-write-2m-neighbour.ccs\n  ccsim check traces/scenarios/"
    )]
    Check {
        /// Scenario files (`.ccs`, or `.cct` converted from one) or directories searched for them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print only failures and the summary.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a scenario's `program` blocks under every interleaving of their atomic steps up to a
    /// preemption bound, checking invariants and expectations in each (docs/explore.md).
    #[command(
        after_help = "Examples:\n  ccsim explore traces/scenarios/tdx/races/seed-2m-vs-4k.ccs --protocol naive\n  ccsim explore traces/scenarios/tdx/races/zap-vs-zero-step.ccs --no-retry\n  ccsim explore FILE --replay 0,0,1,1,0\n\nExit status: 0 every schedule passes, 1 a schedule fails, 2 bad input."
    )]
    Explore(ExploreArgs),
    /// Inspect and convert traces.
    #[command(subcommand)]
    Trace(TraceCmd),
    /// Run a grid of inputs × machines × policies × seeds in parallel; resumable, shardable.
    #[command(
        after_help = "Examples:\n  ccsim sweep examples/physmap-policies.toml --out docs/results/physmap-policies\n  ccsim sweep spec.toml --out out --resume          # continue an interrupted sweep\n  ccsim sweep spec.toml --out s0 --shard 0/4         # one deterministic quarter\n  ccsim sweep merge s0 s1 s2 s3 --out out\n  ccsim sweep slurm spec.toml --shards 16 --out out && bash out/slurm/submit.sh\n\nSpec format: docs/sweeps.md.",
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true
    )]
    Sweep(SweepArgs),
    /// Render one run's JSON (a sweep's runs/ID.json or `ccsim run --json`) as the sweep
    /// summary does: a Markdown table on stdout, and with --out the same with its plots.
    #[command(
        after_help = "Examples:\n  ccsim report out/runs/snp-launch.zen4.none.s1.json\n  ccsim report r.json --out r-report"
    )]
    Report {
        /// The run's JSON.
        json: PathBuf,
        /// Write summary.md and plots/ here.
        #[arg(short, long)]
        out: Option<PathBuf>,
    },
    /// List the built-in workloads and their parameters.
    #[command(after_help = "Example:\n  ccsim workloads")]
    Workloads,
    /// List the presets and every configuration field with its value and source; unsourced
    /// values are marked.
    #[command(after_help = "Examples:\n  ccsim presets\n  ccsim presets --unsourced")]
    Presets {
        /// Show only fields whose default has no public source.
        #[arg(long)]
        unsourced: bool,
        /// Show this preset's values (default: zen4).
        #[arg(long)]
        preset: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A trace (`.cct`) or scenario (`.ccs`); omit to run a workload.
    file: Option<PathBuf>,
    /// Workload to run when no file is given (default: snp-launch).
    #[arg(long)]
    workload: Option<String>,
    /// Workload parameter k=v (repeatable).
    #[arg(long = "param", value_name = "K=V")]
    params: Vec<String>,
    /// Configuration file (TOML), applied after the preset (repeatable).
    #[arg(long = "config", value_name = "FILE")]
    configs: Vec<PathBuf>,
    /// Preset (see `ccsim presets`).
    #[arg(long)]
    preset: Option<String>,
    /// Physmap policy (shorthand for --set host.policy=P): none, split-on-assign,
    /// split-on-fault, split-on-fault-kernel, adjust-direct-map, presplit-4k, unmap-private,
    /// gmem-no-direct-map, coalesce-on-shared. Several (comma-separated) or `all` run the
    /// input once per policy and print a comparison table (ratios to the first).
    #[arg(long)]
    policy: Option<String>,
    /// Override any configuration field: section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Seed for workloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the CSV report here.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Do not print the human report.
    #[arg(short, long)]
    quiet: bool,
    /// Record the executed event stream to this `.cct` trace (workloads only).
    #[arg(long, value_name = "OUT.cct")]
    record: Option<PathBuf>,
    /// Print the host time the run took on stderr: setup, replay, and the control events
    /// (neither accesses nor `work`) timed apart, with accesses per second.
    #[arg(long)]
    timing: bool,
}

#[derive(Debug, clap::Args)]
struct SweepArgs {
    #[command(subcommand)]
    cmd: Option<SweepCmd>,
    /// The sweep specification (TOML; docs/sweeps.md).
    #[arg(required = true)]
    spec: Option<PathBuf>,
    /// Output folder (default: sweep-STEM next to where you run it).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Worker threads (default: one per core). Results do not depend on it.
    #[arg(short = 'j', long, default_value_t = 0)]
    threads: usize,
    /// Continue the sweep in --out, skipping finished runs.
    #[arg(long)]
    resume: bool,
    /// Run only the runs whose grid index is I modulo N.
    #[arg(long, value_name = "I/N")]
    shard: Option<String>,
    /// Seconds between progress lines when stderr is not a terminal.
    #[arg(long, default_value_t = 10)]
    progress_interval: u64,
    /// No progress display.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Subcommand)]
enum SweepCmd {
    /// Join shard folders of one sweep into one folder and render its outputs.
    Merge {
        /// Shard folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Output folder.
        #[arg(short, long)]
        out: PathBuf,
    },
    /// Write a Slurm job array (one task per shard) and a merge job depending on it.
    Slurm {
        /// The sweep specification.
        spec: PathBuf,
        /// Number of shards (array tasks).
        #[arg(long)]
        shards: usize,
        /// Output folder of the merged sweep.
        #[arg(short, long)]
        out: PathBuf,
        /// ccsim binary the jobs run (default: this one).
        #[arg(long)]
        ccsim: Option<PathBuf>,
        /// Slurm partition.
        #[arg(long)]
        partition: Option<String>,
        /// Time limit per task (Slurm format, e.g. 1:00:00).
        #[arg(long)]
        time: Option<String>,
        /// CPUs per task (the task's --threads).
        #[arg(long, default_value_t = 1)]
        cpus_per_task: usize,
        /// Memory per task (Slurm format, e.g. 4G).
        #[arg(long)]
        mem: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TraceCmd {
    /// Header, metadata, frames and record counts of a trace.
    #[command(after_help = "Example:\n  ccsim trace info run.cct")]
    Info {
        /// The trace.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print every record as scenario text.
    #[command(after_help = "Example:\n  ccsim trace cat run.cct | less")]
    Cat {
        /// Trace or scenario.
        file: PathBuf,
    },
    /// Print the first N records as scenario text.
    #[command(after_help = "Example:\n  ccsim trace head -n 20 run.cct")]
    Head {
        /// Trace or scenario.
        file: PathBuf,
        /// Records.
        #[arg(short = 'n', default_value_t = 10)]
        n: u64,
    },
    /// Convert between `.cct` and `.ccs` (by output extension), or import a lackey log.
    #[command(
        after_help = "Examples:\n  ccsim trace convert s1.ccs s1.cct\n  ccsim trace convert s1.cct s1.ccs\n  ccsim trace convert --encoding small run.cct run-small.cct\n  ccsim trace convert --from lackey --pid 42 trace.lackey run.cct"
    )]
    Convert {
        /// Input file.
        input: PathBuf,
        /// Output file (`.cct` or `.ccs`).
        output: PathBuf,
        /// Binary encoding: default, small, none.
        #[arg(long, default_value = "default")]
        encoding: String,
        /// Input format when it is not .cct/.ccs: lackey.
        #[arg(long)]
        from: Option<String>,
        /// PID for imported host-process streams.
        #[arg(long, default_value_t = 1)]
        pid: u32,
    },
    /// Import a capture as a role of the simulated machine, streaming. Every format: plain, or
    /// compressed as its name says (`.xz`, `.gz`, `.zst`).
    #[command(
        after_help = "Roles: host-process[:PID] (default PID 1), host-kernel, guest:N[:KIND] (KIND plain, snp (default) or tdx).\nlackey: host-kernel and guest need --vapa. qemu-memtrace, qemu-execlog and perf-script carry their own addresses (no --vapa). ChampSim files have no header: give --format cloudsuite for 96-byte records. See docs/importers.md.\n\nExamples:\n  ccsim trace import --from lackey trace.lackey.zst --vapa vapa.txt.zst --as host-process:42 -o p.cct\n  ccsim trace import --from lackey trace.lackey.zst --vapa vapa.txt.zst --as guest:1:snp -o g.cct\n  ccsim trace import --from qemu-memtrace memtrace.txt.zst --as guest:1:snp -o g.cct\n  ccsim trace import --from perf-script pf.txt --as host-kernel -o pf.cct\n  ccsim trace import --from champsim 600.perlbench_s-210B.champsimtrace.xz --as host-process -o perl.cct"
    )]
    Import {
        /// The capture.
        trace: PathBuf,
        /// Capture format: lackey, champsim, qemu-memtrace, qemu-execlog, perf-script, kvm-trace.
        #[arg(long)]
        from: String,
        /// ChampSim record layout: input (64-byte input_instr, default) or cloudsuite (96 bytes).
        #[arg(long)]
        format: Option<String>,
        /// kvm-trace: whose page-fault error codes the trace carries, amd or intel (default:
        /// from the first kvm_exit reason).
        #[arg(long)]
        vendor: Option<String>,
        /// The VA→PA page map captured with it (`vapa.txt`, plain or `.zst`).
        #[arg(long)]
        vapa: Option<PathBuf>,
        /// What the stream is in the simulated machine.
        #[arg(long = "as", value_name = "ROLE")]
        role: String,
        /// Output trace (`.cct`, or `.ccs` text).
        #[arg(short = 'o', long = "output", value_name = "OUT.cct")]
        output: PathBuf,
    },
    /// Export a trace's fetches, loads and stores to another simulator's format.
    #[command(
        after_help = "ChampSim: 64-byte input_instr records, raw or compressed by the output's extension (.xz, .gz). See docs/importers.md.\n\nExample:\n  ccsim trace export --to champsim p.cct -o p.champsimtrace.xz"
    )]
    Export {
        /// Output format: champsim.
        #[arg(long)]
        to: String,
        /// Input trace (`.cct` or `.ccs`).
        input: PathBuf,
        /// Output file.
        #[arg(short = 'o', long = "output", value_name = "OUT.champsimtrace.xz")]
        output: PathBuf,
    },
}

/// Entry point: parse, run, map errors to exit status 2 with one line on stderr.
pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            // Parsers quote the offending line, which in hostile input can be megabytes long.
            eprintln!("ccsim: error: {}", crate::config::clip_lines(&format!("{e:#}"), 300, "\n"));
            ExitCode::from(2)
        }
    }
}

/// A reader that closes our stdout early (`ccsim presets | head`) makes `println!` panic with
/// EPIPE (Rust ignores SIGPIPE); end quietly with the shell's status for SIGPIPE instead.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging(cli.verbose);
    match cli.cmd {
        Cmd::Sweep(a) => sweep(a),
        Cmd::Report { json, out } => report(&json, out.as_deref()),
        Cmd::Run(a) => run(a),
        Cmd::Check { paths, quiet } => check(&paths, quiet),
        Cmd::Explore(a) => explore(a),
        Cmd::Trace(t) => trace(t),
        Cmd::Workloads => {
            print!("{}", workloads_text());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Presets { unsourced, preset } => {
            print!("{}", presets_text(preset.as_deref().unwrap_or(DEFAULT_PRESET), unsourced)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    let mut layers = ConfigLayers { preset: a.preset.clone(), ..Default::default() };
    for f in &a.configs {
        let text = crate::sweep::spec::read_text(f)?;
        layers.files.push((text, f.display().to_string()));
    }
    let policies: Vec<String> = match a.policy.as_deref() {
        None => Vec::new(),
        Some("all") => PhysmapPolicy::ALL.iter().map(|p| p.name().to_owned()).collect(),
        Some(list) => list.split(',').map(|p| p.trim().to_owned()).collect(),
    };
    if policies.len() == 1 {
        layers.sets.push(format!("host.policy={}", policies[0]));
    }
    layers.sets.extend(a.sets.iter().cloned());
    // Fail fast on a bad preset, file or override, before reading any input.
    let _ = ConfigBuilder::from_preset(a.preset.as_deref().unwrap_or(DEFAULT_PRESET))?;
    let input = match (&a.file, &a.workload) {
        (Some(_), Some(_)) => anyhow::bail!("give a FILE or --workload, not both"),
        (Some(f), None) => {
            if !a.params.is_empty() {
                anyhow::bail!("--param applies to workloads, not to {}", f.display());
            }
            Input::File(f.clone())
        }
        (None, w) => Input::Workload {
            name: w.clone().unwrap_or_else(|| workloads::DEFAULT_WORKLOAD.to_owned()),
            params: workloads::Params::parse(a.params.iter().map(String::as_str))?,
        },
    };
    let opts =
        RunOptions { seed: a.seed, record: a.record.clone(), progress: None, timing: a.timing };
    if policies.len() > 1 {
        return run_policies(&a, &layers, &input, &opts, &policies);
    }
    let out = engine::run(&layers, &input, &opts)?;
    let failed = out.expectations.iter().filter(|e| !e.passed).count();
    if !out.expectations.is_empty() && !a.quiet {
        println!(
            "expectations: {} passed, {failed} failed (see `ccsim check`)",
            out.expectations.len() - failed
        );
    }
    if let Some(p) = &a.json {
        write_atomic(p, out.report.to_json()?.as_bytes())?;
    }
    if let Some(p) = &a.csv {
        write_atomic(p, out.report.to_csv()?.as_bytes())?;
    }
    if !a.quiet {
        print!("{}", out.report.to_table());
    }
    if a.timing {
        eprint!("{}", host_time_text(&out.host, out.report.accesses.total()));
    }
    Ok(ExitCode::SUCCESS)
}

/// `run --timing`: the host time of a run, with the replay rate over the whole replay and over
/// the replay without its control events.
fn host_time_text(h: &engine::HostTime, accesses: u64) -> String {
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let rate = |d: std::time::Duration| {
        if d.is_zero() { 0.0 } else { accesses as f64 / secs(d) / 1e6 }
    };
    let rest = h.replay.saturating_sub(h.control);
    format!(
        "host time {:.3} s: setup {:.3} s, replay {:.3} s ({accesses} accesses, {:.2} M/s)\n  \
         control events {} in {:.3} s; accesses and work {:.3} s ({:.2} M accesses/s)\n",
        secs(h.setup + h.replay),
        secs(h.setup),
        secs(h.replay),
        rate(h.replay),
        h.control_events,
        secs(h.control),
        secs(rest),
        rate(rest),
    )
}

/// `run --policy a,b,…`: the same input once per policy; a comparison table on stdout, and
/// with `--json` an object of the reports keyed by policy.
fn run_policies(
    a: &RunArgs,
    layers: &ConfigLayers,
    input: &Input,
    opts: &RunOptions,
    policies: &[String],
) -> anyhow::Result<ExitCode> {
    if a.record.is_some() || a.csv.is_some() {
        anyhow::bail!("--record and --csv take one run: give one --policy (or use --json)");
    }
    let mut runs = Vec::new();
    for p in policies {
        let mut l = layers.clone();
        l.sets.insert(0, format!("host.policy={p}"));
        let out = engine::run(&l, input, opts).map_err(|e| anyhow::anyhow!("policy {p}: {e:#}"))?;
        if a.timing {
            eprint!("{p}: {}", host_time_text(&out.host, out.report.accesses.total()));
        }
        runs.push((p.clone(), out.report));
    }
    if let Some(p) = &a.json {
        let map: serde_json::Map<String, serde_json::Value> = runs
            .iter()
            .map(|(k, r)| Ok((k.clone(), serde_json::to_value(r)?)))
            .collect::<Result<_, serde_json::Error>>()?;
        let mut text = serde_json::to_string_pretty(&serde_json::Value::Object(map))?;
        text.push('\n');
        write_atomic(p, text.as_bytes())?;
    }
    if !a.quiet {
        print!("{}", crate::compare::table(&runs));
    }
    Ok(ExitCode::SUCCESS)
}

/// `tracing` to stderr at the level `-v` asks for (warnings by default).
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

fn sweep(a: SweepArgs) -> anyhow::Result<ExitCode> {
    use crate::sweep;
    match a.cmd {
        Some(SweepCmd::Merge { dirs, out }) => {
            let n = sweep::merge(&dirs, &out)?;
            eprintln!("merged {n} runs into {}", out.display());
            return Ok(ExitCode::SUCCESS);
        }
        Some(SweepCmd::Slurm { spec, shards, out, ccsim, partition, time, cpus_per_task, mem }) => {
            let o = sweep::slurm::SlurmOptions {
                shards,
                out,
                ccsim,
                partition,
                time,
                cpus_per_task: cpus_per_task.max(1),
                mem,
            };
            let submit = sweep::slurm::write(&spec, &o)?;
            println!("wrote {}; submit with: bash {}", submit.display(), submit.display());
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let spec = a.spec.ok_or_else(|| anyhow::anyhow!("give a sweep specification"))?;
    let out = a.out.unwrap_or_else(|| {
        let stem =
            spec.file_stem().map_or_else(|| "sweep".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from(format!("sweep-{stem}"))
    });
    let shard = a.shard.as_deref().map(str::parse).transpose()?;
    let progress = if a.no_progress {
        sweep::ProgressMode::Off
    } else {
        sweep::ProgressMode::Auto {
            interval: std::time::Duration::from_secs(a.progress_interval.max(1)),
        }
    };
    let o = sweep::SweepOptions {
        out: out.clone(),
        threads: a.threads,
        resume: a.resume,
        shard,
        progress,
    };
    let r = sweep::run(&spec, &o)?;
    eprintln!(
        "{}: {} runs ({} now, {} finished before, {} failed); summary in {}",
        spec.display(),
        r.selected,
        r.ran,
        r.skipped,
        r.failed.len(),
        out.join("summary.md").display()
    );
    if r.failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for (id, e) in &r.failed {
        eprintln!("ccsim: error: run {id}: {e}");
    }
    Ok(ExitCode::from(2))
}

fn report(json: &std::path::Path, out: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let (md, svgs) = crate::sweep::summary::report_file(json)?;
    print!("{md}");
    if let Some(dir) = out {
        std::fs::create_dir_all(dir.join("plots"))
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        for (name, svg) in &svgs {
            write_atomic(&dir.join("plots").join(name), svg.as_bytes())?;
        }
        write_atomic(&dir.join("summary.md"), md.as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `ccsim explore`.
#[derive(Debug, clap::Args)]
struct ExploreArgs {
    /// Scenario file with `program` blocks.
    scenario: PathBuf,
    /// Most preemptions per schedule (switches away from a program that could go on).
    #[arg(long, default_value_t = 2)]
    bound: u32,
    /// KVM's mirror-SPTE protocol for TDs (shorthand for --set host.tdx_spte_protocol=P).
    #[arg(long, value_name = "naive|frozen")]
    protocol: Option<String>,
    /// KVM treats OPERAND_BUSY from BLOCK/TRACK/REMOVE as a bug instead of kicking every vCPU
    /// and retrying (shorthand for --set host.tdx_busy_retry=false).
    #[arg(long)]
    no_retry: bool,
    /// Run one schedule (as printed for a failure) and print each step.
    #[arg(long, value_name = "SCHEDULE")]
    replay: Option<String>,
    /// Stop after this many schedules.
    #[arg(long, default_value_t = 1_000_000)]
    max_schedules: u64,
    /// Go on after a failing schedule and report every one.
    #[arg(long)]
    all: bool,
    /// Worker threads (default: one per core; 1: none). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Preset (see `ccsim presets`).
    #[arg(long)]
    preset: Option<String>,
    /// Override any configuration field: section.key=value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Write the result as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn explore(a: ExploreArgs) -> anyhow::Result<ExitCode> {
    use crate::explore as ex;
    let mut sets = a.sets.clone();
    if let Some(p) = &a.protocol {
        sets.push(format!("host.tdx_spte_protocol={p}"));
    }
    if a.no_retry {
        sets.push("host.tdx_busy_retry=false".to_owned());
    }
    let layers = engine::ConfigLayers { preset: a.preset.clone(), files: Vec::new(), sets };
    if let Some(r) = &a.replay {
        let schedule = ex::parse_schedule(r)?;
        let (log, failure) = ex::replay(&a.scenario, &layers, &schedule)?;
        for l in &log {
            println!("{l}");
        }
        return Ok(match failure {
            Some(f) => {
                println!("FAIL {f}");
                ExitCode::from(1)
            }
            None => {
                println!("PASS");
                ExitCode::SUCCESS
            }
        });
    }
    let opts = ex::ExploreOptions {
        bound: a.bound,
        max_schedules: a.max_schedules,
        stop_at_first: !a.all,
        threads: a.threads,
    };
    let t0 = std::time::Instant::now();
    let res = ex::explore(&a.scenario, &layers, &opts)?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{}: programs {}; {} schedules ({}), {} steps, preemption bound {}, {:.3} s ({:.0} schedules/s)",
        a.scenario.display(),
        res.programs.join(", "),
        res.schedules,
        if res.complete {
            "all within the bound"
        } else {
            "cut at --max-schedules or the first failure"
        },
        res.steps,
        a.bound,
        secs,
        res.schedules as f64 / secs.max(1e-9)
    );
    for f in &res.failures {
        println!("FAIL schedule {}: {}", ex::format_schedule(&f.schedule), f.reason);
        println!(
            "  replay: ccsim explore {} --replay {}",
            a.scenario.display(),
            ex::format_schedule(&f.schedule)
        );
    }
    if let Some(j) = &a.json {
        std::fs::write(j, serde_json::to_string_pretty(&res)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", j.display()))?;
    }
    if res.failures.is_empty() {
        println!("PASS");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

fn check(paths: &[PathBuf], quiet: bool) -> anyhow::Result<ExitCode> {
    let files = input::scenario_files(paths)?;
    let (mut pass, mut fail, mut broken) = (0u64, 0u64, 0u64);
    for f in &files {
        // A file that cannot run (bad input, a state the model cannot apply) is reported and
        // the others still run; the exit status is then 2.
        let results = match engine::check_file(f) {
            Ok(r) => r,
            Err(e) => {
                broken += 1;
                eprintln!("ccsim: error: {e:#}");
                continue;
            }
        };
        for r in &results {
            if r.passed {
                pass += 1;
            } else {
                fail += 1;
            }
            if !quiet || !r.passed {
                println!(
                    "{} {}:{}: {}",
                    if r.passed { "PASS" } else { "FAIL" },
                    f.display(),
                    r.line,
                    r.message
                );
            }
        }
        if results.is_empty() {
            println!("NOTE {}: no expectations", f.display());
        }
    }
    println!("{pass} passed, {fail} failed");
    if broken > 0 {
        println!("{broken} of {} files could not run (errors above)", files.len());
        return Ok(ExitCode::from(2));
    }
    Ok(if fail > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn trace(t: TraceCmd) -> anyhow::Result<ExitCode> {
    match t {
        TraceCmd::Info { file, json } => {
            let info = input::trace_info(&file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", input::info_text(&info));
            }
        }
        TraceCmd::Cat { file } => input::print_records(&file, u64::MAX)?,
        TraceCmd::Head { file, n } => input::print_records(&file, n)?,
        TraceCmd::Convert { input: i, output, encoding, from, pid } => {
            let n = input::convert(&i, &output, &encoding, from.as_deref(), pid)?;
            eprintln!("wrote {n} records to {}", output.display());
        }
        TraceCmd::Import { trace, from, format, vendor, vapa, role, output } => {
            let req = input::ImportRequest {
                from: &from,
                trace: &trace,
                vapa: vapa.as_deref(),
                role: &role,
                format: format.as_deref(),
                vendor: vendor.as_deref(),
                output: &output,
            };
            eprintln!("{}", input::import_any(&req)?);
        }
        TraceCmd::Export { to, input: i, output } => {
            let s = input::export(&to, &i, &output)?;
            eprintln!(
                "wrote {}: {} ChampSim records from {} fetches, {} loads, {} stores ({} spill records with a repeated ip, {} with the synthetic ip {:#x}); left out: {} accesses at address 0, {} other records; {} accesses by other agents, interleaved",
                output.display(),
                s.instrs,
                s.fetches,
                s.loads,
                s.stores,
                s.spills,
                s.synthetic,
                traces::import::champsim::SYNTHETIC_IP,
                s.zero_dropped,
                s.skipped,
                s.other_agents
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Write a file atomically: a temporary file in the same directory, then rename.
///
/// # Errors
/// I/O errors naming the path.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir =
        path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name =
        path.file_name().ok_or_else(|| anyhow::anyhow!("{}: not a file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

/// The text of `ccsim workloads`.
pub fn workloads_text() -> String {
    let mut o = String::new();
    for w in workloads::registry() {
        let default = if w.name == workloads::DEFAULT_WORKLOAD { " (default)" } else { "" };
        o.push_str(&format!("{}{default}: {}\n  {}\n", w.name, w.summary, w.description));
        for p in w.params {
            o.push_str(&format!("    {:<18} = {:<8} {}\n", p.name, p.default, p.doc));
        }
    }
    o
}

/// The text of `ccsim presets`.
///
/// # Errors
/// Unknown preset.
pub fn presets_text(name: &str, only_unsourced: bool) -> anyhow::Result<String> {
    let mut o = String::from("Presets:\n");
    for p in PRESETS {
        o.push_str(&format!("  {:<16} {}\n", p.name, p.summary));
    }
    let cfg = ConfigBuilder::from_preset(name)?.build()?;
    o.push_str(&format!(
        "\nFields of preset {name} (UNSOURCED marks a default with no public source):\n"
    ));
    let mut unsourced = 0;
    for (sec, d) in all_field_docs() {
        let v = value_of(&cfg, sec, d.key).unwrap_or_default();
        let (tag, src) = match d.source {
            Source::Cited(s) => ("", s.to_owned()),
            Source::Unsourced(why) => {
                unsourced += 1;
                ("UNSOURCED ", why.to_owned())
            }
            Source::Choice => ("", "choice".to_owned()),
        };
        if only_unsourced && tag.is_empty() {
            continue;
        }
        o.push_str(&format!(
            "  {sec}.{} = {v} [{}]  {tag}{}\n      source: {src}\n",
            d.key, d.unit, d.doc
        ));
    }
    o.push_str(&format!("\n{unsourced} unsourced values.\n"));
    Ok(o)
}
