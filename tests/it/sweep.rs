//! `ccsim sweep`: thread-count independence, crash safety (kill -9 and --resume), shards and
//! merge, bad specs, failing runs, and `ccsim report` (issue #6).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn ccsim(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ccsim")).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn small_spec() -> String {
    format!("{}/tests/data/sweep-small.toml", env!("CARGO_MANIFEST_DIR"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ccsim-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every file under `dir` (relative path → bytes), leaving out `skip` folders.
fn files(dir: &Path, skip: &[&str]) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, skip: &[&str], out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if skip.iter().any(|s| rel == *s) {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, skip, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, skip, &mut out);
    out
}

fn assert_same(a: &Path, b: &Path, skip: &[&str]) {
    let (fa, fb) = (files(a, skip), files(b, skip));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        fb.keys().collect::<Vec<_>>(),
        "{} and {} hold different files",
        a.display(),
        b.display()
    );
    for (k, v) in &fa {
        assert!(v == &fb[k], "{k} differs between {} and {}", a.display(), b.display());
    }
}

fn sweep(spec: &str, out: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["sweep", spec, "--out", out.to_str().unwrap(), "--no-progress"];
    args.extend_from_slice(extra);
    let (code, _, err) = ccsim(&args);
    (code, err)
}

/// Outputs are byte-identical whatever the thread count, and the grid is complete.
#[test]
fn thread_count_does_not_change_outputs() {
    let d = tmp("threads");
    let spec = small_spec();
    for j in ["1", "2", "8"] {
        let (code, err) = sweep(&spec, &d.join(j), &["-j", j]);
        assert_eq!(code, 0, "{err}");
    }
    assert_same(&d.join("1"), &d.join("2"), &[]);
    assert_same(&d.join("1"), &d.join("8"), &[]);
    let runs = std::fs::read_dir(d.join("1/runs")).unwrap().count();
    assert_eq!(runs, 24);
    let csv = std::fs::read_to_string(d.join("1/results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 25, "a header and one row per run");
    let summary = std::fs::read_to_string(d.join("1/summary.md")).unwrap();
    // The SNP rule the study is about: a 2M direct map with guest pages in it faults on a
    // kernel write; splitting on assignment removes those violations.
    let line =
        summary.lines().find(|l| l.starts_with("| launch.tiny.gmem_folio_order=0 |")).unwrap();
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    assert!(cells[2].parse::<u64>().unwrap() > 0, "{line}");
    assert!(cells[3].starts_with("0 "), "{line}");
    // H19 holds run by run; H11 needs presplit-4k, which this sweep lacks, and says so.
    assert!(summary.contains("the identity holds in 24 of 24 runs"), "{summary}");
    assert!(summary.contains("Not checked: needs both policies."), "{summary}");
    for kind in ["violations", "dtlb", "cycles", "directmap"] {
        let p = d.join(format!("1/plots/launch.tiny.gmem_folio_order=9.{kind}.svg"));
        assert!(p.is_file(), "{}", p.display());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A sweep killed with SIGKILL mid-way keeps its finished runs; `--resume` runs the rest and
/// the outputs equal those of a sweep that was never interrupted.
#[test]
fn kill_and_resume_gives_identical_outputs() {
    let d = tmp("kill");
    // Runs long enough (in a debug build) to be killed in the middle.
    let spec = d.join("spec.toml");
    std::fs::write(
        &spec,
        "name = \"kill\"\npolicies = [\"none\", \"split-on-assign\"]\nseeds = [1, 2, 3, 4]\n\
         [[input]]\nworkload = \"snp-launch\"\n\
         params = { guests = 2, guest_memory = \"4M\", image = \"64K\", kernel_accesses = 150000, kernel_cpus = 1 }\n\
         [[machine]]\npreset = \"tiny\"\n",
    )
    .unwrap();
    let spec = spec.to_str().unwrap();
    let (code, err) = sweep(spec, &d.join("whole"), &["-j", "2"]);
    assert_eq!(code, 0, "{err}");
    let out = d.join("killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ccsim"))
        .args(["sweep", spec, "--out", out.to_str().unwrap(), "--no-progress", "-j", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let done = |o: &Path| std::fs::read_dir(o.join("runs")).map_or(0, |r| r.count());
    while done(&out) < 2 && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let finished = done(&out);
    assert!((2..8).contains(&finished), "killed after {finished} of 8 runs");
    assert!(!out.join("summary.md").exists(), "the sweep was killed before its summary");
    // A temporary file a kill can leave behind is cleaned up by --resume.
    std::fs::write(out.join("runs/.x.json.tmp999"), "{").unwrap();
    // Without --resume the folder is refused.
    let (code, err) = sweep(spec, &out, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--resume"), "{err}");
    let (code, err) = sweep(spec, &out, &["--resume", "-j", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("{} finished before", finished)), "{err}");
    assert_same(&d.join("whole"), &out, &[]);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Shards are a partition of the grid, and merging them gives the unsharded outputs.
#[test]
fn shards_merge_into_the_unsharded_outputs() {
    let d = tmp("shards");
    let spec = small_spec();
    let (code, err) = sweep(&spec, &d.join("whole"), &[]);
    assert_eq!(code, 0, "{err}");
    let mut counts = 0;
    for i in 0..3 {
        let s = format!("{i}/3");
        let (code, err) = sweep(&spec, &d.join(format!("s{i}")), &["--shard", &s]);
        assert_eq!(code, 0, "{err}");
        counts += std::fs::read_dir(d.join(format!("s{i}/runs"))).unwrap().count();
    }
    assert_eq!(counts, 24, "every run in exactly one shard");
    let dirs: Vec<String> = (0..3).map(|i| d.join(format!("s{i}")).display().to_string()).collect();
    let merged = d.join("merged");
    let mut args = vec!["sweep", "merge"];
    args.extend(dirs.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().unwrap()]);
    let (code, _, err) = ccsim(&args);
    assert_eq!(code, 0, "{err}");
    assert_same(&d.join("whole"), &merged, &[]);
    // Merging two shards of three is an error that names the missing runs.
    let out2 = d.join("partial");
    let (code, _, err) =
        ccsim(&["sweep", "merge", &dirs[0], &dirs[1], "--out", out2.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("8 of 24 runs are in none of the folders"), "{err}");
    let (code, _, err) = ccsim(&["sweep", "merge", &dirs[0], "--shard"]);
    assert_eq!(code, 2, "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Bad specs are refused before anything runs, naming the file and the place.
#[test]
fn bad_specs_name_the_place() {
    let d = tmp("bad");
    let cases = [
        ("polices = [\"none\"]\n[[input]]\nworkload = \"snp-launch\"\n", "unknown field `polices`"),
        (
            "[[input]]\nworkload = \"snp-launch\"\n[[machine]]\nset = { \"mmu.nope\" = 1 }\n",
            "mmu.nope",
        ),
        ("[[input]]\ntrace = \"missing.cct\"\n", "no such file"),
        ("[[input]]\nworkload = \"snp-launch\"\nparams = { nope = 1 }\n", "input[0]"),
        ("[[input]\n", "line 1"),
        ("[[input]]\nworkload = \"snp-launch\"\n[[machine]]\npreset = \"zen9\"\n", "zen9"),
        // A device would never end: refused before reading.
        (
            "[[input]]\nworkload = \"snp-launch\"\n[[machine]]\nconfig = [\"/dev/zero\"]\n",
            "not a regular file",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = d.join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let (code, err) = sweep(p.to_str().unwrap(), &d.join(format!("o{i}")), &[]);
        assert_eq!(code, 2, "{text}");
        assert!(err.contains(&format!("bad{i}.toml")) && err.contains(want), "{text}\n{err}");
        assert!(!d.join(format!("o{i}/plan.json")).exists(), "nothing is written for a bad spec");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A run that fails (a corrupt trace) does not stop the others; the sweep exits 2, names it,
/// and the summary lists it as missing.
#[test]
fn a_failing_run_is_reported_and_the_rest_finish() {
    let d = tmp("fail");
    std::fs::write(d.join("bad.ccs"), "c0 host store phys:0x1000 8\nc0 host frobnicate\n").unwrap();
    std::fs::write(
        d.join("spec.toml"),
        "policies = [\"none\", \"split-on-assign\"]\n[[input]]\ntrace = \"bad.ccs\"\n\
         [[input]]\nworkload = \"snp-launch\"\nparams = { guests = 1, guest_memory = \"4M\", image = \"64K\", kernel_accesses = 100, kernel_cpus = 1 }\n\
         [[machine]]\npreset = \"tiny\"\n",
    )
    .unwrap();
    let (code, err) = sweep(d.join("spec.toml").to_str().unwrap(), &d.join("o"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("run bad.tiny.none.s1") && err.contains("bad.ccs:2"), "{err}");
    let summary = std::fs::read_to_string(d.join("o/summary.md")).unwrap();
    assert!(summary.contains("2 runs have no result"), "{summary}");
    assert_eq!(std::fs::read_dir(d.join("o/runs")).unwrap().count(), 2);
    std::fs::remove_dir_all(&d).unwrap();
}

/// `ccsim report` renders a sweep's run file and a `ccsim run --json` report.
#[test]
fn report_renders_one_run() {
    let d = tmp("report");
    let (code, err) = sweep(&small_spec(), &d.join("o"), &["--shard", "0/12"]);
    assert_eq!(code, 0, "{err}");
    let run = d.join("o/runs/launch.tiny.gmem_folio_order=0.none.s1.json");
    let (code, md, err) =
        ccsim(&["report", run.to_str().unwrap(), "--out", d.join("r").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(md.contains("| RMP violations |") && md.contains("policy `none`"), "{md}");
    assert!(d.join("r/plots").read_dir().unwrap().count() == 4);
    let j = d.join("run.json");
    let (code, _, err) = ccsim(&[
        "run",
        "--preset",
        "tiny",
        "--param",
        "kernel_cpus=1",
        "--quiet",
        "--json",
        j.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, md, err) = ccsim(&["report", j.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(md.contains("| cycles per access |"), "{md}");
    std::fs::write(d.join("junk.json"), "{\"x\": 1}").unwrap();
    let (code, _, err) = ccsim(&["report", d.join("junk.json").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("junk.json: not a ccsim report"), "{err}");
    std::fs::remove_dir_all(&d).unwrap();
}
