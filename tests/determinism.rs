//! Determinism (issues #2, #10): the same inputs give byte-identical JSON reports, whatever the
//! thread count, locale and time zone; a recorded workload replays to the same counters. CI
//! runs this in release as well as debug.

use ccsim::engine::{ConfigLayers, Input, RunOptions, run};

fn small() -> workloads::Params {
    workloads::Params::parse(["guests=2", "guest_memory=8M", "kernel_accesses=5000"]).unwrap()
}

fn report_json(policy: &str, seed: u64, record: Option<std::path::PathBuf>) -> String {
    let layers = ConfigLayers { sets: vec![format!("host.policy={policy}")], ..Default::default() };
    let input = Input::Workload { name: "snp-launch".into(), params: small() };
    run(&layers, &input, &RunOptions { seed, record, ..RunOptions::default() })
        .unwrap()
        .report
        .to_json()
        .unwrap()
}

#[test]
fn same_inputs_same_bytes() {
    for policy in ["none", "split-on-assign"] {
        let a = report_json(policy, 7, None);
        let b = report_json(policy, 7, None);
        assert_eq!(a, b, "policy {policy}");
    }
    assert_ne!(report_json("none", 7, None), report_json("none", 8, None));
}

/// A live run gives the bytes of the same run recorded. A live run takes each `work` a
/// generator hands over with `Workload::next_work` and runs it at the stream's next turn; a
/// recording asks `next` for every event: the two must execute the same events in the same
/// order. Checked on the workloads that hand `work` over (`snp-launch`, `snp-churn`,
/// `multi-tenant`).
#[test]
fn live_run_equals_recorded_run() {
    let p = |items: &[&str]| workloads::Params::parse(items.iter().copied()).unwrap();
    let cases = [
        ("snp-launch", small()),
        (
            "snp-churn",
            p(&["guests=3", "guest_memory=2M", "working_set=256K", "image=64K", "accesses=3000"]),
        ),
        ("multi-tenant", workloads::Params::default()),
    ];
    for (name, params) in cases {
        let dir = std::env::temp_dir().join(format!("ccsim-live-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let layers = ConfigLayers::default();
        let input = Input::Workload { name: name.into(), params };
        let json = |record: Option<std::path::PathBuf>| {
            run(&layers, &input, &RunOptions { seed: 5, record, ..RunOptions::default() })
                .unwrap()
                .report
                .to_json()
                .unwrap()
        };
        let plain = json(None);
        let recorded = json(Some(dir.join("run.cct")));
        assert_eq!(plain, recorded, "{name}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Run workload `name` live under policy `none` with seed 3, recording it, replay the
/// recording, check that every counter agrees and return the live report.
fn record_and_replay(name: &str, params: workloads::Params) -> ccsim::report::Report {
    let dir = std::env::temp_dir().join(format!("ccsim-det-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("run.cct");
    let layers = ConfigLayers { sets: vec!["host.policy=none".into()], ..Default::default() };
    let input = Input::Workload { name: name.into(), params };
    let live = run(
        &layers,
        &input,
        &RunOptions { seed: 3, record: Some(trace.clone()), ..RunOptions::default() },
    )
    .unwrap()
    .report;
    let replay = run(&layers, &Input::File(trace), &RunOptions::default()).unwrap().report;
    assert_eq!(live.events, replay.events);
    assert_eq!(live.accesses, replay.accesses);
    assert_eq!(live.dtlb, replay.dtlb);
    assert_eq!(live.walks, replay.walks);
    assert_eq!(live.rmp, replay.rmp);
    assert_eq!(live.faults, replay.faults);
    assert_eq!(live.directmap, replay.directmap);
    assert_eq!(live.iommu, replay.iommu);
    assert_eq!(live.cycles, replay.cycles);
    let _ = std::fs::remove_dir_all(&dir);
    live
}

#[test]
fn recorded_workload_replays_identically() {
    let live = record_and_replay("snp-launch", small());
    assert!(
        live.rmp.violations.values().sum::<u64>() > 0,
        "the workload should produce violations under `none`"
    );
}

/// The same for `snp-churn`, whose guest-CPU streams switch between host and guest contexts:
/// the recording carries each event's own agent.
#[test]
fn recorded_snp_churn_replays_identically() {
    let params = workloads::Params::parse([
        "guests=3",
        "guest_memory=2M",
        "working_set=256K",
        "image=64K",
        "accesses=3000",
        "psc_interval=100",
        "slice=1000",
        "kernel_accesses=3000",
    ])
    .unwrap();
    let live = record_and_replay("snp-churn", params);
    assert_eq!(live.accesses.total(), 3 * 3000 + 2 * 3000);
}

/// The issue #5 generators record and replay to the same counters too. See: #5
#[test]
fn recorded_issue5_workloads_replay_identically() {
    let p = |items: &[&str]| workloads::Params::parse(items.iter().copied()).unwrap();
    let hk = record_and_replay(
        "host-kernel",
        p(&["accesses=20000", "cache_pages=128", "slab_pages=16", "w_zero=4", "zero_order=4"]),
    );
    assert_eq!(hk.accesses.total(), 2 * 20000);
    let qp = record_and_replay(
        "qemu-process",
        p(&["accesses=10000", "threads=2", "guest_memory=32M", "new_page=0.01"]),
    );
    assert_eq!(qp.accesses.total(), 2 * 10000);
    record_and_replay(
        "multi-tenant",
        p(&[
            "guests=4",
            "sizes=1M,2M",
            "image=64K",
            "arrival_mean=500",
            "lifetime=1500",
            "slice=600",
            "kernel_accesses=2000",
            "slab_pages=16",
        ]),
    );
}

/// `dma-streams` (devices on their own clocks, mis-programmed DMA refused) records and
/// replays to the same counters, IOMMU counters included. See: #7
#[test]
fn recorded_dma_streams_replays_identically() {
    let p = workloads::Params::parse([
        "packets=400",
        "rx_ring=64",
        "ios=60",
        "queue_depth=8",
        "guest_memory=2M",
        "working_set=256K",
        "image=16K",
        "accesses=2000",
        "psc_interval=100",
        "bounce_pages=16",
        "victim_pages=4",
        "misprogrammed=0.2",
    ])
    .unwrap();
    let live = record_and_replay("dma-streams", p);
    assert!(live.iommu.blocked > 0, "{:?}", live.iommu);
}

/// Run `ccsim run --quiet ARGS --json --record` three times, with RAYON_NUM_THREADS 1, 8 and 2
/// and different locales and time zones, and check that the JSON reports and the recorded
/// traces are byte-identical.
fn same_bytes_in_every_environment(what: &str, args: &[&str]) {
    let dir = std::env::temp_dir().join(format!("ccsim-env-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut outputs = Vec::new();
    for (i, (threads, lang, tz)) in [
        ("1", "C", "UTC"),
        ("8", "de_DE.UTF-8", "Asia/Kolkata"),
        ("2", "fr_FR.UTF-8", "America/New_York"),
    ]
    .into_iter()
    .enumerate()
    {
        let json = dir.join(format!("r{i}.json"));
        let cct = dir.join(format!("r{i}.cct"));
        let st = std::process::Command::new(env!("CARGO_BIN_EXE_ccsim"))
            .args(["run", "--quiet"])
            .args(args)
            .arg("--json")
            .arg(&json)
            .arg("--record")
            .arg(&cct)
            .env("RAYON_NUM_THREADS", threads)
            .env("LANG", lang)
            .env("LC_ALL", lang)
            .env("TZ", tz)
            .status()
            .unwrap();
        assert!(st.success(), "{what}");
        outputs.push((std::fs::read(&json).unwrap(), std::fs::read(&cct).unwrap()));
    }
    for o in &outputs[1..] {
        assert!(o.0 == outputs[0].0, "{what}: JSON differs between environments");
        assert!(o.1 == outputs[0].1, "{what}: recorded trace differs between environments");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Report and recorded-trace bytes do not depend on the thread count (the `.cct` writer
/// compresses frames in parallel) or on the locale and time zone.
#[test]
fn bytes_independent_of_threads_and_locale() {
    same_bytes_in_every_environment(
        "snp-launch",
        &["--param", "guests=1", "--param", "guest_memory=4M", "--param", "kernel_accesses=3000"],
    );
}

/// The same for the TDX workloads on `spr` (SEAMCALLs, KVM's TDX MMU, the S-EPT; `tdx-churn`
/// with a host-kernel CPU beside the TD) and for `vsm-boot` on an SNP guest (VTL protections,
/// RMPADJUST). See: #8, #9, #10
#[test]
fn tdx_and_vsm_bytes_independent_of_threads_and_locale() {
    let p = |items: &[&'static str]| -> Vec<&'static str> {
        items.iter().flat_map(|i| ["--param", *i]).collect()
    };
    let boot = p(&["guest_memory=32M", "swiotlb=4M", "accesses=2000", "touch=0.5"]);
    same_bytes_in_every_environment(
        "tdx-boot",
        &[&["--workload", "tdx-boot", "--preset", "spr"][..], &boot].concat(),
    );
    let churn = p(&[
        "guest_memory=32M",
        "working_set=4M",
        "pool=4M",
        "accesses=4000",
        "convert_interval=300",
        "kernel_cpus=1",
        "kernel_accesses=2000",
    ]);
    same_bytes_in_every_environment(
        "tdx-churn",
        &[&["--workload", "tdx-churn", "--preset", "spr"][..], &churn].concat(),
    );
    let vsm = p(&[
        "kind=snp",
        "guest_memory=256M",
        "image=4M",
        "vtl1_memory=4M",
        "working_set=32M",
        "changes=400",
    ]);
    same_bytes_in_every_environment(
        "vsm-boot",
        &[&["--workload", "vsm-boot", "--preset", "zen4"][..], &vsm].concat(),
    );
}

/// `tdx-boot` and `tdx-churn` (issue #8): the same seed gives byte-identical JSON reports, and
/// a recording (the build's `page-alloc`/`gmem-alloc` events included) replays to the same
/// counters, the TDX module's and KVM's included.
#[test]
fn tdx_workloads_repeat_and_replay_identically() {
    for (name, items) in [
        ("tdx-boot", &["guest_memory=32M", "swiotlb=4M", "accesses=2000", "touch=0.5"][..]),
        (
            "tdx-churn",
            &[
                "guest_memory=32M",
                "working_set=4M",
                "pool=4M",
                "accesses=4000",
                "convert_interval=300",
            ][..],
        ),
    ] {
        let params = workloads::Params::parse(items.iter().copied()).unwrap();
        let layers = ConfigLayers { preset: Some("spr".into()), ..Default::default() };
        let input = Input::Workload { name: name.into(), params };
        let json = |seed| {
            let o = RunOptions { seed, ..RunOptions::default() };
            run(&layers, &input, &o).unwrap().report.to_json().unwrap()
        };
        assert_eq!(json(5), json(5), "{name}");
        assert_ne!(json(5), json(6), "{name}");
        let dir = std::env::temp_dir().join(format!("ccsim-det-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let trace = dir.join("run.cct");
        let o = RunOptions { seed: 5, record: Some(trace.clone()), ..RunOptions::default() };
        let live = run(&layers, &input, &o).unwrap().report;
        let replay = run(&layers, &Input::File(trace), &RunOptions::default()).unwrap().report;
        assert_eq!(live.events, replay.events, "{name}");
        assert_eq!(live.faults, replay.faults, "{name}");
        assert_eq!(live.tdx, replay.tdx, "{name}");
        assert_eq!(live.kvm, replay.kvm, "{name}");
        assert_eq!(live.cycles, replay.cycles, "{name}");
        assert!(replay.not_modelled.is_empty(), "{name}: {:?}", replay.not_modelled);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
