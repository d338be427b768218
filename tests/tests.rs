//! Integration tests of the `ccsim` crate (STYLE rule 18d: one binary, modules by topic).

/// Scenario files under traces/scenarios run through `ccsim check` semantics.
mod scenarios {
    use ccsim::engine::check_file;
    use std::path::{Path, PathBuf};

    fn files(dir: &str) -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/scenarios").join(dir);
        ccsim::input::scenario_files(&[root]).unwrap()
    }

    /// Every expectation of the foundation, SNP and physmap scenarios holds (issue #2 "Tests":
    /// host write through 2M with an assigned neighbour → fatal #PF 0x80000003 under `none`,
    /// no violation under `split-on-assign`; host reads never fault; issue #3: spec/physmap.md
    /// §6 checks 1 and 3, rox collapse, early-boot splits; guest translation: 24 references
    /// for a cold 4×4 2-D walk, #PF / #NPF / EPT-violation codes). See: #2, #3
    #[test]
    fn foundation_snp_and_physmap_scenarios_pass() {
        let n = all_pass(&["foundation", "snp", "physmap", "mmu"]);
        assert!(n >= 140, "only {n} expectations ran");
    }

    /// Run every scenario under `dirs`, asserting that each has expectations and that every
    /// one passes; returns how many ran.
    fn all_pass(dirs: &[&str]) -> usize {
        let mut n = 0;
        for f in dirs.iter().flat_map(|d| files(d)) {
            let r = check_file(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(!r.is_empty(), "{} has no expectations", f.display());
            for e in r {
                assert!(e.passed, "{}:{}: {}", f.display(), e.line, e.message);
                n += 1;
            }
        }
        n
    }

    /// Every expectation of the memory-attribute and VSM scenarios holds: a 2M stage-2 mapping
    /// becomes 4K when one page's VTL protections change, re-promotion on and off, a VTL0 write
    /// to a page VTL1 made read-only exits with the NPF code, the designs' zaps and memslot
    /// updates, SNP VMPL masks set by RMPADJUST and RMPADJUST's VMPL rule. See: #9
    #[test]
    fn attrs_scenarios_pass() {
        let n = all_pass(&["attrs"]);
        assert!(n >= 80, "only {n} expectations ran");
    }

    /// Bad VSM input is an error naming the line, never a panic: a `vsm-protect` on a VM that
    /// does not exist, a VTL of 16, an unknown design. See: #9
    #[test]
    fn vsm_bad_input_is_an_error() {
        let head = "version 1\nmachine cpus=2 memory=8G\nvm 1 plain asid=1 memory=1G\n";
        for (name, body, want) in [
            ("vm.ccs", "c0 host vsm-protect 0x1000 vm=2 vtl=0 mask=0x1\n", "does not exist"),
            ("vtl.ccs", "c0 host vsm-protect 0x1000 vm=1 vtl=16 mask=0x1\n", "VTLs are 0 to 15"),
            (
                "design.ccs",
                "machine vsm.design=bogus\nc0 host vsm-protect 0x1000 vm=1 vtl=0 mask=0x1\n",
                "vsm.design",
            ),
        ] {
            let f = write_tmp(name, &format!("{head}{body}expect rc 0\n"));
            let e = check_file(&f).expect_err(name).to_string();
            assert!(e.contains(want), "{name}: {e}");
        }
    }

    /// Every expectation of the IOMMU and TDX scenarios holds: IOTLB hit/miss and I/O walk
    /// references, invalidation effects, AMD-Vi events and VT-d fault reasons
    /// (docs/conformance-iommu.md); spec/tdx.md §6 V1, V2, V7, V8, V9 and their variants with the
    /// module's exact RAX/RCX/RDX, every §2.3 status code the model can return and every S-EPT
    /// transition of §2.4-§2.5 next to a neighbouring state without it (`tdx/status/`), host and
    /// DMA writes to private memory (poison, integrity) (docs/conformance-tdx.md). See: #7, #8
    #[test]
    fn iommu_and_tdx_scenarios_pass() {
        for (dir, at_least) in [("iommu", 56), ("tdx", 371)] {
            let n = all_pass(&[dir]);
            assert!(n >= at_least, "{dir}: only {n} expectations ran");
        }
    }

    fn write_tmp(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ccsim-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const BASE: &str = "machine cpus=2 memory=8G\nhost physmap=2M policy=POLICY\nstate directmap spa=0x100000000 size=2M\nc0 host rmpupdate spa=0x100010000 assigned asid=5 gpa=0x80000000\nc1 host store phys:0x100005000 8\n";

    /// The checks can fail: the opposite expectation of each policy fails.
    #[test]
    fn wrong_expectations_fail() {
        let p = write_tmp(
            "none-nofault.ccs",
            &format!("{}expect no-fault\n", BASE.replace("POLICY", "none")),
        );
        let r = check_file(&p).unwrap();
        assert_eq!(r.len(), 1);
        assert!(!r[0].passed);
        assert!(r[0].message.contains("0x80000003"), "{}", r[0].message);
        let p = write_tmp(
            "split-fault.ccs",
            &format!("{}expect fault pf\n", BASE.replace("POLICY", "split-on-assign")),
        );
        assert!(!check_file(&p).unwrap()[0].passed);
        // A wrong error code fails even when the kind matches.
        let p = write_tmp(
            "code.ccs",
            &format!("{}expect fault pf code=0x3\n", BASE.replace("POLICY", "none")),
        );
        assert!(!check_file(&p).unwrap()[0].passed);
        // A 1G direct map is checked as 2M: same fault (APM §15.36.10).
        let p = write_tmp(
            "g1.ccs",
            &format!(
                "{}expect fault pf code=0x80000003 disposition=fatal\n",
                BASE.replace("POLICY", "none")
                    .replace("physmap=2M", "physmap=1G")
                    .replace("size=2M", "size=1G")
            ),
        );
        assert!(check_file(&p).unwrap()[0].passed);
        // Through a 4K mapping of the neighbour: no fault even under `none`.
        let p = write_tmp(
            "k4.ccs",
            &format!(
                "{}expect no-fault\n",
                BASE.replace("POLICY", "none")
                    .replace("spa=0x100000000 size=2M", "spa=0x100000000 size=4K len=0x200000")
            ),
        );
        assert!(check_file(&p).unwrap()[0].passed);
        // The write to the assigned page itself faults even through 4K.
        let p = write_tmp(
            "own.ccs",
            &format!(
                "{}expect fault pf code=0x80000003\n",
                BASE.replace("POLICY", "split-on-assign")
                    .replace("store phys:0x100005000", "store phys:0x100010000")
            ),
        );
        assert!(check_file(&p).unwrap()[0].passed);
    }
}

/// The command line: exit codes and one-line errors for bad input (issue #2 "Bad input").
mod cli {
    use std::path::PathBuf;
    use std::process::Command;

    fn ccsim(args: &[&str]) -> (i32, String, String) {
        let o = Command::new(env!("CARGO_BIN_EXE_ccsim")).args(args).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into(),
            String::from_utf8_lossy(&o.stderr).into(),
        )
    }

    fn tmp(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ccsim-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// SEV guests and RMP instructions need an AMD host (with a C-bit), TDs and SEAMCALLs an
    /// Intel one: the other vendor's guest is bad input (exit 2, naming the line and the fix).
    /// See: #8
    #[test]
    fn guests_of_the_other_vendor_are_refused() {
        expect_error(
            &["run", "--preset", "spr", "-q"],
            &["snp guest", "machine.vendor = amd", "spr"],
        );
        let td = tmp("td-on-amd.ccs", b"machine preset=zen4\nstate td tdr=0x80000000 root=0x80001000 hkid=16 state=runnable vm=1\n");
        expect_error(
            &["run", td.to_str().unwrap(), "-q"],
            &["td-on-amd.ccs:2", "machine.vendor = intel"],
        );
        let snp = tmp(
            "snp-on-intel.ccs",
            b"machine preset=gnr\nc0 host rmpupdate spa=0x100000000 assigned asid=1 gpa=0\n",
        );
        expect_error(&["run", snp.to_str().unwrap(), "-q"], &["snp-on-intel.ccs:2", "`rmpupdate`"]);
        let sc =
            tmp("seamcall-on-amd.ccs", b"machine preset=zen5\nc0 host seamcall 6 rcx=0x1000\n");
        expect_error(
            &["run", sc.to_str().unwrap(), "-q"],
            &["seamcall-on-amd.ccs:2", "`seamcall`"],
        );
        // An AMD host without a C-bit (memory encryption off; the ChampSim preset) runs no
        // SEV guest: refused, not run with private GPAs beyond the guest's memory.
        expect_error(
            &["run", "--workload", "snp-churn", "--preset", "champsim", "-q"],
            &["snp guest", "mmu.cbit_pos = none", "champsim"],
        );
        expect_error(
            &["run", "--set", "mmu.cbit_pos=none", "-q"],
            &["snp guest", "mmu.cbit_pos = none"],
        );
        // A workload whose private GPAs use another C-bit than the host's.
        expect_error(
            &["run", "--workload", "snp-churn", "--set", "mmu.cbit_pos=47", "-q"],
            &["cbit_pos = 51", "mmu.cbit_pos = 47", "--param cbit_pos=47"],
        );
        let args = "run --workload snp-churn --set mmu.cbit_pos=47 --param cbit_pos=47 --param accesses=2000 -q";
        let (code, _, err) = ccsim(&args.split(' ').collect::<Vec<_>>());
        assert_eq!(code, 0, "{err}");
    }

    /// Hostile sizes under a 1 GiB address-space limit (`ulimit -v`): a `.cct` whose frame or
    /// metadata claims 4 GiB, a 10 MB scenario line, a TOML spec nested 200,000 deep. Each is
    /// refused with exit 2 and a short message; none is killed for memory or stack. See: #10
    #[test]
    fn hostile_sizes_are_refused_under_a_memory_limit() {
        let dir = std::env::temp_dir().join(format!("ccsim-ulimit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ccs = dir.join("small.ccs");
        std::fs::write(&ccs, "c0 host load phys:0x100000000 8\nc0 host store phys:0x100001000 8\n")
            .unwrap();
        let cct = dir.join("small.cct");
        let (code, _, err) =
            ccsim(&["trace", "convert", ccs.to_str().unwrap(), cct.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let good = std::fs::read(&cct).unwrap();
        let meta = u32::from_le_bytes(good[16..20].try_into().unwrap()) as usize;
        let frame = 28 + meta;
        let patched = |name: &str, at: usize| {
            let mut b = good.clone();
            b[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            let p = dir.join(name);
            std::fs::write(&p, b).unwrap();
            p
        };
        let line = dir.join("line.ccs");
        std::fs::write(&line, format!("c0 host load phys:0x{} 8\n", "1".repeat(10 << 20))).unwrap();
        let nested = dir.join("nested.toml");
        std::fs::write(&nested, format!("a = {}{}\n", "[".repeat(200_000), "]".repeat(200_000)))
            .unwrap();
        let bin = env!("CARGO_BIN_EXE_ccsim");
        let cases: Vec<(Vec<String>, &str)> = vec![
            (
                vec![
                    "trace".into(),
                    "info".into(),
                    patched("payload.cct", frame + 20).display().to_string(),
                ],
                "above the limit",
            ),
            (
                vec![
                    "trace".into(),
                    "info".into(),
                    patched("raw.cct", frame + 16).display().to_string(),
                ],
                "above the limit",
            ),
            (
                vec!["trace".into(), "info".into(), patched("meta.cct", 16).display().to_string()],
                "above the limit",
            ),
            (vec!["check".into(), line.display().to_string()], "longer than 65536 bytes"),
            (
                vec!["run".into(), "--config".into(), nested.display().to_string()],
                "TOML parse error at line 1",
            ),
        ];
        for (args, needle) in cases {
            let o = Command::new("sh")
                .arg("-c")
                .arg("ulimit -v 1048576 && exec \"$0\" \"$@\"")
                .arg(bin)
                .args(&args)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(needle), "{args:?}: {err}");
            assert!(err.len() < 4096, "{args:?}: a {}-byte message", err.len());
        }
    }

    /// A reader closing the pipe early (`| head`) ends ccsim quietly, not with a panic.
    #[test]
    fn a_closed_stdout_is_not_a_panic() {
        let o = Command::new("sh")
            .arg("-c")
            .arg("\"$0\" presets --unsourced | head -c 1 >/dev/null; \"$0\" workloads | head -c 1 >/dev/null")
            .arg(env!("CARGO_BIN_EXE_ccsim"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{err}");
    }

    fn expect_error(args: &[&str], needles: &[&str]) {
        let (code, _, err) = ccsim(args);
        assert_eq!(code, 2, "{args:?}: stderr {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
        }
    }

    #[test]
    fn missing_file() {
        expect_error(&["run", "/nonexistent/x.ccs"], &["/nonexistent/x.ccs"]);
        expect_error(&["check", "/nonexistent/dir"], &["/nonexistent/dir"]);
    }

    #[test]
    fn scenario_errors_name_line_and_column() {
        let p = tmp("unknown.ccs", b"machine cpus=2\nc0 host frobnicate 0x1000\n");
        expect_error(&["check", p.to_str().unwrap()], &["unknown.ccs:2:", "frobnicate"]);
        let p = tmp("number.ccs", b"c0 host load 0x1g 8\n");
        expect_error(&["check", p.to_str().unwrap()], &["number.ccs:1:", "0x1g"]);
        let p = tmp("align.ccs", b"c0 host rmpupdate spa=0x100010000 size=2M assigned asid=1\n");
        expect_error(&["check", p.to_str().unwrap()], &["align.ccs:1:", "aligned"]);
        let p = tmp("empty-expect.ccs", b"c0 host load phys:0x1000 8\nexpect counter x\n");
        expect_error(&["check", p.to_str().unwrap()], &["empty-expect.ccs:2:"]);
    }

    #[test]
    fn config_errors() {
        expect_error(&["run", "--set", "host.polcy=none", "--param", "guests=0"], &["polcy"]);
        expect_error(&["run", "--set", "machine.cpus=0", "--param", "guests=0"], &["machine.cpus"]);
        expect_error(&["run", "--preset", "zen9"], &["zen9"]);
        let p = tmp("badkey.ccs", b"machine cpus=2 colour=blue\nc0 host load phys:0x1000 8\n");
        expect_error(&["run", p.to_str().unwrap()], &["badkey.ccs:1", "colour"]);
        expect_error(&["run", "--param", "gusts=1"], &["gusts"]);
        // Settings that leave the page allocator no memory are named, not reported as a
        // page-table allocation failure.
        expect_error(
            &["run", "--set", "host.reserved_low=8G", "-q"],
            &["host.reserved_low = 8G", "no memory for the page allocator", "machine.memory = 4G"],
        );
        expect_error(
            &["run", "--set", "host.early_boot=true", "--set", "host.boot_pool=100G", "-q"],
            &["host.boot_pool = 100G", "no memory for the page allocator"],
        );
        // An event on a CPU the machine does not have.
        let p = tmp(
            "cpu5.ccs",
            b"machine cpus=2\nc0 host load phys:0x1000 8\nc5 host load phys:0x1000 8\n",
        );
        expect_error(&["run", p.to_str().unwrap()], &["cpu5.ccs:3", "CPU 5", "machine.cpus = 2"]);
    }

    #[test]
    fn binary_trace_errors_name_offsets() {
        let p = tmp("magic.cct", b"NOTACCT\0garbage-garbage-garbage");
        // Not a .cct by magic: read as text, and garbage is not a scenario.
        let (code, _, err) = ccsim(&["trace", "info", p.to_str().unwrap()]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("magic.cct"), "{err}");
        // A real trace, truncated.
        let s = tmp(
            "s.ccs",
            b"machine cpus=2\nc0 host load phys:0x1000 8\nc0 host store phys:0x2000 8\n",
        );
        let t = s.with_extension("cct");
        let (code, _, err) = ccsim(&["trace", "convert", s.to_str().unwrap(), t.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let bytes = std::fs::read(&t).unwrap();
        let cut = tmp("cut.cct", &bytes[..bytes.len() - 5]);
        expect_error(&["run", cut.to_str().unwrap()], &["cut.cct", "offset"]);
    }

    #[test]
    fn check_exit_status_reflects_failures() {
        let p = tmp("fail.ccs", b"machine cpus=2 memory=8G\nhost physmap=2M\nstate directmap spa=0x100000000 size=2M\nstate rmp spa=0x100010000 assigned asid=5\nc0 host store phys:0x100005000 8\nexpect no-fault\n");
        let (code, out, _) = ccsim(&["check", p.to_str().unwrap()]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("FAIL") && out.contains("fail.ccs:6"), "{out}");
        assert!(out.contains("0 passed, 1 failed"), "{out}");
    }

    #[test]
    fn listings() {
        let (code, out, _) = ccsim(&["workloads"]);
        assert_eq!(code, 0);
        assert!(out.contains("snp-launch (default)"));
        assert!(out.contains("snp-churn") && out.contains("psc_interval"), "{out}");
        // The issue #5 generators, each with a fitted parameter. See: #5
        for w in ["host-kernel", "qemu-process", "multi-tenant", "zero_order", "reuse_decay"] {
            assert!(out.contains(w), "{w} missing: {out}");
        }
        let (code, out, _) = ccsim(&["presets"]);
        assert_eq!(code, 0);
        assert!(out.contains("UNSOURCED") && out.contains("zen4"), "{out}");
    }

    /// `trace convert --from lackey` then `run`: every access replays in the host-process role,
    /// each distinct page is demand-paged once, and a page-crossing access is split in two.
    #[test]
    fn lackey_import_and_replay() {
        let log = "==1== Lackey\nI  04000000,4\n L 1ffefffe10,8\n S 1ffefffe10,8\nI  04000004,3\n M 04032ffc,8\nI  04000007,2\n";
        let src = tmp("cap.lackey", log.as_bytes());
        let out = tmp("cap.cct", b"");
        let (code, _, err) = ccsim(&[
            "trace",
            "convert",
            "--from",
            "lackey",
            "--pid",
            "7",
            src.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        // 3 fetches, 1 load, 1 store, and the M line (load + store) crosses a page: 4 records.
        assert!(err.contains("wrote 9 records"), "{err}");
        let json = tmp("cap.json", b"");
        let (code, _, err) =
            ccsim(&["run", "--quiet", out.to_str().unwrap(), "--json", json.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(r["accesses"]["fetches"], 3);
        assert_eq!(r["accesses"]["loads"], 3);
        assert_eq!(r["accesses"]["stores"], 3);
        // Pages touched: 0x4000000, 0x1ffefff000, 0x4032000, 0x4033000 → 4 demand faults.
        assert_eq!(r["faults"]["handled"], 4);
        assert_eq!(r["faults"]["fatal"], 0);
        let bad = tmp("bad.lackey", b"I  04000000,4\n Q 1234,8\n");
        expect_error(
            &["trace", "convert", "--from", "lackey", bad.to_str().unwrap(), out.to_str().unwrap()],
            &["bad.lackey", "line 2"],
        );
    }

    /// Text → binary → text is lossless through the CLI, expectations included.
    #[test]
    fn convert_round_trip() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("traces/scenarios/snp/s5-make-private-splits-2m.ccs");
        let b = tmp("s5.cct", b"");
        let back = tmp("s5-back.ccs", b"");
        assert_eq!(ccsim(&["trace", "convert", dir.to_str().unwrap(), b.to_str().unwrap()]).0, 0);
        assert_eq!(ccsim(&["trace", "convert", b.to_str().unwrap(), back.to_str().unwrap()]).0, 0);
        let orig = traces::ccs::parse_str(&std::fs::read_to_string(&dir).unwrap(), "a").unwrap();
        let again = traces::ccs::parse_str(&std::fs::read_to_string(&back).unwrap(), "b").unwrap();
        let strip =
            |v: Vec<traces::ccs::Located>| v.into_iter().map(|l| l.record).collect::<Vec<_>>();
        assert_eq!(strip(orig), strip(again));
        // And the binary form checks identically.
        let (code, out, _) = ccsim(&["check", b.to_str().unwrap()]);
        assert_eq!(code, 0, "{out}");
    }
}

mod rmp_stage {
    //! The RMP check stage (the root crate's adapter) behind mmu-model's check hook, through
    //! the spec/snp.md §6 cases S1, S2, S4, the 1 GiB → 2 MiB TLB rule and page tables in
    //! assigned memory: what the hook carries is what the RMP needs.
    use mmu_model::{
        AccessKind, AccessPath, AccessRequest, AccessResult, Cr3, FlatLatency, LeafAttrs,
        LinearFrames, Mmu, MmuConfig, PageTable, Paging, PfErrorCode, PhysMemTables, PteFlags,
        TlbTag,
    };
    use sim_core::{Cycles, Hva, PageSize, Spa};

    /// Linux x86-64 4-level direct-map base (Documentation/arch/x86/x86_64/mm.rst).
    const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;

    fn dm(pa: u64) -> Hva {
        Hva::new(PAGE_OFFSET + pa)
    }

    struct Machine {
        tables: PhysMemTables,
        frames: LinearFrames,
        dmap: PageTable,
        mmu: Mmu,
        lat: FlatLatency,
    }

    fn machine(cfg: &MmuConfig) -> Machine {
        let mut tables = PhysMemTables::new();
        // Page-table pages come from 16 MiB..32 MiB.
        let mut frames = LinearFrames::new(Spa::new(0x100_0000), Spa::new(0x200_0000));
        let dmap = PageTable::new(
            &mut tables,
            &mut frames,
            Paging::FourLevel,
            cfg.pte_format(),
            PteFlags::KERNEL_TABLE,
        )
        .unwrap();
        let cr3 = Cr3 { root: dmap.root(), paging: Paging::FourLevel, tag: TlbTag::HOST };
        let mmu = Mmu::new(0, cfg, cr3).unwrap();
        Machine { tables, frames, dmap, mmu, lat: FlatLatency { per_ref: cfg.walk_ref_latency } }
    }

    impl Machine {
        fn map(&mut self, pa: u64, size: PageSize) {
            self.dmap
                .map(
                    &mut self.tables,
                    &mut self.frames,
                    dm(pa),
                    Spa::new(pa),
                    size,
                    LeafAttrs::KERNEL_RW,
                )
                .unwrap()
                .ignore(); // fresh mapping: nothing cached
        }
    }

    use rmp_model::{Rmp, RmpEntry, RmpLayout};
    use sim_core::Gpa;

    const RMP_BASE: u64 = 0x10_0000;
    const R0: u64 = 0x1_0000_0000;

    /// spec/snp.md §6 initial state: RMP[0x100010] assigned to ASID 5; R0 direct-mapped by a
    /// 2 MiB leaf; the page tables (at 16 MiB) are hypervisor-owned.
    fn s1(cfg: &MmuConfig) -> (Machine, Rmp) {
        let mut m = machine(cfg);
        m.map(R0, PageSize::M2);
        let mut rmp = Rmp::new(RmpLayout::covering(Spa::new(RMP_BASE), 8 << 30).unwrap());
        let e = RmpEntry {
            assigned: true,
            asid: 5,
            gpa: Gpa::new(0x8000_0000),
            validated: true,
            ..RmpEntry::ZERO
        };
        rmp.set_entry(Spa::new(0x1_0001_0000), &e).unwrap();
        (m, rmp)
    }

    fn run(m: &mut Machine, rmp: &mut Rmp, pa: u64, kind: AccessKind) -> mmu_model::AccessOutcome {
        let mut chk = ccsim::machine::RmpCheckStage::new(rmp, Cycles::ZERO);
        m.mmu.access(&mut m.tables, &mut chk, &mut m.lat, &AccessRequest::kernel(dm(pa), kind))
    }

    fn entry_addr(pa: u64) -> Spa {
        Spa::new(RMP_BASE + 0x4000 + (pa >> 12) * 16)
    }

    #[test]
    fn s1_write_through_2m_with_assigned_neighbour_faults() {
        let (mut m, mut rmp) = s1(&MmuConfig::default());
        let o = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Write);
        let AccessResult::Fault(f) = o.result else { panic!("{o:?}") };
        assert_eq!(f.code.bits(), 0x8000_0003);
        assert_eq!(f.addr, dm(0x1_0000_5000));
        assert!(m.mmu.tlb().peek(dm(0x1_0000_5000), TlbTag::HOST).is_none(), "no TLB entry");
        // Table reads checked at 4K (3 RMP reads, all fine), then one read of R0's aligned
        // entry for the 2M write check.
        assert_eq!(o.check_reads.len(), 4);
        assert_eq!(*o.check_reads.last().unwrap(), entry_addr(R0));
    }

    #[test]
    fn s2_read_is_fine_and_installs_2m() {
        let (mut m, mut rmp) = s1(&MmuConfig::default());
        let o = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Read);
        assert_eq!(
            o.result,
            AccessResult::Translated { spa: Spa::new(0x1_0000_5000), size: PageSize::M2 }
        );
        assert!(rmp.stats().violations.is_empty());
        // The write that follows through the read-filled 2M entry is write-checked (§2.4).
        let w = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Write);
        assert_eq!(w.path, AccessPath::TlbHitWriteCheck);
        assert!(matches!(w.result, AccessResult::Fault(f) if f.code.bits() == 0x8000_0003));
    }

    #[test]
    fn s4_after_split_neighbour_ok_target_faults() {
        let (mut m, mut rmp) = s1(&MmuConfig::default());
        let (small, inv) = m.dmap.split(&mut m.tables, &mut m.frames, dm(R0)).unwrap();
        assert_eq!(small, PageSize::K4);
        m.mmu.tlb_mut().invalidate(&inv, TlbTag::HOST);
        let a = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Write);
        assert_eq!(
            a.result,
            AccessResult::Translated { spa: Spa::new(0x1_0000_5000), size: PageSize::K4 }
        );
        let b = run(&mut m, &mut rmp, 0x1_0001_0000, AccessKind::Write);
        assert!(matches!(b.result, AccessResult::Fault(f) if f.code.bits() == 0x8000_0003));
        assert_eq!(*b.check_reads.last().unwrap(), entry_addr(0x1_0001_0000));
    }

    #[test]
    fn host_1g_mapping_installs_2m_entries_and_checks_the_2m_subregion() {
        let mut m = machine(&MmuConfig::default());
        m.map(1 << 32, PageSize::G1);
        let mut rmp = Rmp::new(RmpLayout::covering(Spa::new(RMP_BASE), 8 << 30).unwrap());
        let e = RmpEntry { assigned: true, asid: 5, ..RmpEntry::ZERO };
        rmp.set_entry(Spa::new(0x1_0001_0000), &e).unwrap();
        let r = run(&mut m, &mut rmp, 0x1_0060_0000, AccessKind::Read);
        assert_eq!(
            r.result,
            AccessResult::Translated { spa: Spa::new(0x1_0060_0000), size: PageSize::M2 }
        );
        // A write in another 2M sub-region of the same 1G page is fine…
        let w = run(&mut m, &mut rmp, 0x1_0060_0000, AccessKind::Write);
        assert!(matches!(w.result, AccessResult::Translated { .. }));
        // …one in R0 (holding the assigned page) is not.
        let w = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Write);
        assert!(matches!(w.result, AccessResult::Fault(_)));
        assert_eq!(m.mmu.tlb().occupancy()[PageSize::G1], 0);
    }

    #[test]
    fn page_tables_in_assigned_memory_fault_every_walk() {
        // A host page-table page that became guest-owned: the walk's table read fails the
        // Hypervisor-Owned check.
        let (mut m, mut rmp) = s1(&MmuConfig::default());
        let root = m.dmap.root();
        let e = RmpEntry { assigned: true, asid: 5, ..RmpEntry::ZERO };
        rmp.set_entry(root, &e).unwrap();
        let o = run(&mut m, &mut rmp, 0x1_0000_5000, AccessKind::Read);
        assert!(matches!(o.result, AccessResult::Fault(f) if f.code.contains(PfErrorCode::RMP)));
        assert_eq!(o.check_reads.len(), 1);
    }
}

/// Guest translation at machine level (the 2-D walk wired into the engine): what scenarios
/// cannot express — the timing class of a guest access, TLB tags across VMs and between GVA
/// and GPA accesses, invalidation on every CPU after stage-2 and guest unmaps, table memory
/// going back on VM teardown, guest accesses skipping the host RMP check, and event-path
/// refusals. Counts of references are asserted by the scenarios under traces/scenarios/mmu.
mod guest {
    use ccsim::config::ConfigBuilder;
    use ccsim::machine::{Machine, Outcome, Timing};
    use ccsim::report::{InputInfo, Report};
    use sim_core::event::FaultKind;
    use sim_core::{Cycles, Record, Setting};
    use std::collections::BTreeMap;

    /// A machine from scenario header lines (settings, `vm` lines and `state` lines).
    fn machine(header: &str) -> Machine {
        let mut b = ConfigBuilder::from_preset("zen4").unwrap();
        b.set("machine.memory=8G", "test").unwrap();
        b.set("machine.cpus=2", "test").unwrap();
        let cfg = b.build().unwrap();
        let recs = traces::ccs::parse_str(header, "header.ccs").unwrap();
        let vms: Vec<(String, Setting)> = recs
            .iter()
            .filter_map(|l| match &l.record {
                Record::Setting(s) if s.section == "vm" => Some(("test".to_owned(), s.clone())),
                _ => None,
            })
            .collect();
        let mut m = Machine::new(cfg, &vms, false).unwrap();
        for l in recs {
            if let Record::State(s) = l.record {
                m.apply_state(&s).unwrap();
            }
        }
        m
    }

    /// Run event lines; the outcome of each.
    fn run(m: &mut Machine, text: &str) -> Vec<Outcome> {
        traces::ccs::parse_str(text, "test.ccs")
            .unwrap()
            .into_iter()
            .filter_map(|l| match l.record {
                Record::Event(te) => Some(m.exec(&te)),
                _ => None,
            })
            .collect()
    }

    fn one(m: &mut Machine, line: &str) -> Outcome {
        run(m, line).pop().unwrap()
    }

    fn report(m: &Machine) -> Report {
        let info = InputInfo {
            kind: "test".into(),
            name: "guest".into(),
            params: BTreeMap::new(),
            seed: 0,
        };
        m.report(&info)
    }

    fn fault_kind(o: &Outcome) -> Option<FaultKind> {
        o.fault.map(|f| f.kind)
    }

    /// An SNP guest with one private page, its own and validated in the RMP (so that its
    /// accesses pass the guest checks of APM Table 15-39).
    const SNP: &str = "vm 1 snp asid=5\n\
        state map gpa:0x80000000 phys:0x100010000 4K space=stage2:1 w x user\n\
        state map gva:0x7f0000000000 gpa:0x80000000 4K space=guest:1 w enc\n\
        state rmp spa=0x100010000 assigned asid=5 gpa=0x80000000 validated\n";

    /// A walk is an access whose miss chain overlaps (the TLB lookups are paid in order); a TLB
    /// hit has no chain. The walk's references are priced through the caches into
    /// `cycles.walk`, the TLB lookups into `cycles.tlb`; a hit adds no walk cycles.
    #[test]
    fn guest_accesses_use_the_access_timing_class() {
        let mut m = machine(SNP);
        let walk = one(&mut m, "c1 vm1/v0 load 0x7f0000000000 8\n");
        let Timing::Access { chain } = walk.timing else { panic!("{walk:?}") };
        assert!(chain > Cycles::ZERO && chain < walk.cost, "{walk:?}");
        let r = report(&m);
        assert!(r.cycles.walk > 0 && r.cycles.tlb > 0);
        // The guest checks read RMP entries (4 guest-table pages and the data page).
        assert!(r.cycles.rmp_check > 0);
        assert_eq!(r.rmp.guest_checks, 5);
        assert_eq!(r.accesses.loads, 1);
        let hit = one(&mut m, "c1 vm1/v0 load 0x7f0000000000 8\n");
        assert_eq!(hit.timing, Timing::Access { chain: Cycles::ZERO });
        assert!(hit.cost < walk.cost);
        assert_eq!(report(&m).cycles.walk, r.cycles.walk);
        // A hit pays nothing for the RMP: its result is in the TLB entry.
        assert_eq!(report(&m).cycles.rmp_check, r.cycles.rmp_check);
        assert_eq!(report(&m).rmp.guest_checks, 5);
        // Charged to CPU 1's clock, not CPU 0's.
        assert_eq!(m.clock(sim_core::Agent::host(0)), Cycles::ZERO);
        assert!(m.clock(sim_core::Agent::host(1)) > Cycles::ZERO);
    }

    /// An access straddling two pages is two translations, its chains summed.
    #[test]
    fn a_straddling_access_translates_both_pages() {
        let mut m = machine(&format!(
            "{SNP}state map gpa:0x80001000 phys:0x100011000 4K space=stage2:1 w x user\n\
             state map gva:0x7f0000001000 gpa:0x80001000 4K space=guest:1 w enc\n\
             state rmp spa=0x100011000 assigned asid=5 gpa=0x80001000 validated\n"
        ));
        let o = one(&mut m, "c1 vm1/v0 load 0x7f0000000ffc 8\n");
        assert_eq!(o.fault, None);
        let r = report(&m);
        assert_eq!((r.guest.accesses, r.guest.walks_2d), (2, 2));
        // The second page's walk finds the guest and nested walks partly cached.
        assert!(r.guest.refs < 48, "{:?}", r.guest);
    }

    /// TLB entries are tagged by the VM's ASID: another VM mapping the same GVA to another SPA
    /// walks its own tables, and a `flush-asid` of one VM leaves the other's entries.
    #[test]
    fn tlb_entries_are_tagged_by_asid() {
        let mut m = machine(&format!(
            "{SNP}vm 2 snp asid=6\n\
             state map gpa:0x80000000 phys:0x100020000 4K space=stage2:2 w x user\n\
             state map gva:0x7f0000000000 gpa:0x80000000 4K space=guest:2 w enc\n\
             state rmp spa=0x100020000 assigned asid=6 gpa=0x80000000 validated\n"
        ));
        run(&mut m, "c0 vm1/v0 load 0x7f0000000000 8\nc0 vm2/v0 load 0x7f0000000000 8\n");
        assert_eq!(report(&m).guest.walks_2d, 2, "no sharing across ASIDs");
        run(&mut m, "c0 vm1/v0 load 0x7f0000000000 8\nc0 vm2/v0 load 0x7f0000000000 8\n");
        assert_eq!(report(&m).guest.tlb_hits, 2);
        run(&mut m, "c0 host flush-asid 5\n");
        run(&mut m, "c0 vm1/v0 load 0x7f0000000000 8\nc0 vm2/v0 load 0x7f0000000000 8\n");
        let r = report(&m);
        assert_eq!((r.guest.walks_2d, r.guest.tlb_hits), (3, 3), "{:?}", r.guest);
    }

    /// A GPA access and a GVA access of the same number in the same VM are different
    /// translations: their TLB entries never alias.
    #[test]
    fn gpa_and_gva_entries_do_not_alias() {
        let mut m = machine(
            "vm 1 plain asid=1\n\
             state map gpa:0x80000000 phys:0x100010000 4K space=stage2:1 w user\n\
             state map gpa:0x90000000 phys:0x100020000 4K space=stage2:1 w user\n\
             state map gva:0x80000000 gpa:0x90000000 4K space=guest:1 w\n",
        );
        run(&mut m, "c0 vm1/v0 load gpa:0x80000000 8\n");
        // The same number as a GVA: not the GPA's entry (it walks, to another page).
        run(&mut m, "c0 vm1/v0 load 0x80000000 8\n");
        let r = report(&m);
        assert_eq!((r.guest.gpa_walks, r.guest.walks_2d, r.guest.tlb_hits), (1, 1, 0));
        run(&mut m, "c0 vm1/v0 load gpa:0x80000000 8\nc0 vm1/v0 load 0x80000000 8\n");
        assert_eq!(report(&m).guest.tlb_hits, 2);
    }

    /// Unmapping a page from stage 2 drops the translations built on it on every CPU (KVM's
    /// remote TLB flush), so no CPU keeps using the stale entry; the initiator pays one full
    /// flush.
    #[test]
    fn stage2_unmap_reaches_every_cpu() {
        let mut m = machine(SNP);
        run(&mut m, "c0 vm1/v0 load 0x7f0000000000 8\nc1 vm1/v1 load 0x7f0000000000 8\n");
        let o = one(&mut m, "c0 host unmap gpa:0x80000000 4K space=stage2:1\n");
        assert!(o.cost > Cycles::ZERO);
        assert!(report(&m).dtlb.invalidated >= 2);
        // CPU 0 exits (#NPF): KVM maps the page back (the memory the scenario mapped is the
        // guest's) and the access retries; CPU 1 then walks too. No CPU completes the access
        // through its stale entry: no TLB hit, two more walks at least.
        let before = report(&m).guest;
        let o = one(&mut m, "c0 vm1/v0 load 0x7f0000000000 8\n");
        assert_eq!(
            o.fault.map(|f| (f.kind, f.disposition)),
            Some((FaultKind::Npf, sim_core::event::Disposition::Handled))
        );
        let o = one(&mut m, "c1 vm1/v1 load 0x7f0000000000 8\n");
        assert_eq!(o.fault, None);
        let after = report(&m).guest;
        assert_eq!(after.tlb_hits, before.tlb_hits);
        assert!(after.walks_2d >= before.walks_2d + 2, "{after:?}");
    }

    /// Unmapping a guest page drops its TLB entries on every CPU: the next access is a guest
    /// #PF, not a stale hit.
    #[test]
    fn guest_unmap_reaches_every_cpu() {
        let mut m = machine(&format!(
            "{SNP}state rmp spa=0x100015000 assigned asid=5 gpa=0x80005000 validated\n"
        ));
        run(&mut m, "c0 vm1/v0 load 0x7f0000000000 8\nc1 vm1/v1 load 0x7f0000000000 8\n");
        run(&mut m, "c1 vm1/v1 unmap gva:0x7f0000000000 4K space=guest:1\n");
        for c in ["c0 vm1/v0", "c1 vm1/v1"] {
            let o = one(&mut m, &format!("{c} load 0x7f0000000000 8\n"));
            assert_eq!(o.fault.map(|f| (f.kind, f.code)), Some((FaultKind::Pf, 0)), "{c}");
        }
        // A `map` event puts it back (at another GPA).
        run(
            &mut m,
            "c0 host map gpa:0x80005000 phys:0x100015000 4K space=stage2:1 w user\n\
             c1 vm1/v1 map gva:0x7f0000000000 gpa:0x80005000 4K space=guest:1 w enc\n",
        );
        assert_eq!(one(&mut m, "c0 vm1/v0 load 0x7f0000000000 8\n").fault, None);
        assert!(report(&m).not_modelled.is_empty(), "{:?}", report(&m).not_modelled);
    }

    /// A VM's stage-2 tables and the host pages behind its guest tables go back to the host
    /// allocator when it is destroyed; a new VM with the same ASID does not hit its entries.
    #[test]
    fn vm_teardown_frees_table_memory_and_flushes_its_asid() {
        let mut m = machine("vm 1 snp asid=5\n");
        let free0 = report(&m).memory.free_kb;
        run(
            &mut m,
            "c0 host map gpa:0x80000000 phys:0x100010000 4K space=stage2:1 w user\n\
             c0 vm1/v0 map gva:0x7f0000000000 gpa:0x80000000 4K space=guest:1 w enc\n\
             c0 vm1/v0 load 0x7f0000000000 8\n",
        );
        let r = report(&m);
        // NPT: root, PDPT, PD and PT for 0x8000_0000; the guest-table range (GPA
        // 0x40_0000_0000) shares its PML4E and adds a PD and a PT. Guest: root, PDPT, PD, PT,
        // each backed by a host page.
        assert_eq!((r.guest.stage2_table_pages, r.guest.guest_table_pages), (6, 4));
        assert_eq!(free0 - r.memory.free_kb, 4 * (6 + 4));
        run(&mut m, "c0 host vm-destroy vm=1\n");
        let r = report(&m);
        assert_eq!(r.memory.free_kb, free0);
        assert_eq!((r.guest.stage2_table_pages, r.guest.guest_table_pages), (0, 0));
        // Same ASID, nothing mapped: a guest #PF, not the old VM's translation.
        run(&mut m, "c0 host vm-create snp vm=1 asid=5\n");
        let o = one(&mut m, "c0 vm1/v0 load 0x7f0000000000 8\n");
        assert_eq!(o.fault.map(|f| (f.kind, f.code)), Some((FaultKind::Pf, 0)));
    }

    /// Guest accesses meet the guest rows of APM Table 15-39, not the host's: a guest's store
    /// to its own validated private page passes (one guest check per reference and the data),
    /// while the host writing that page through the direct map faults (the host rule).
    #[test]
    fn guest_accesses_get_the_guest_rmp_rules() {
        let mut m = machine(SNP);
        let o =
            run(&mut m, "c1 vm1/v0 store 0x7f0000000000 8\nc1 vm1/v0 load gpa:0x8000080000000 8\n");
        assert!(o.iter().all(|o| o.fault.is_none()), "{o:?}");
        let r = report(&m);
        assert_eq!(r.rmp.checks, 0, "no host checks");
        assert!(r.rmp.guest_checks >= 5 && r.rmp.entry_reads == r.rmp.guest_checks, "{:?}", r.rmp);
        let o = one(&mut m, "c0 host store phys:0x100010000 8\n");
        assert_eq!(fault_kind(&o), Some(FaultKind::Pf));
    }

    /// Event-path refusals are listed in the report's not-modelled table, never dropped.
    #[test]
    fn refused_events_are_listed() {
        let mut m = machine("vm 1 snp asid=5\nvm 2 plain\n");
        run(
            &mut m,
            "c0 host map gva:0x1000 phys:0x1000 4K space=stage2:1\n\
             c0 host map gva:0x1000 gpa:0x4000000000 4K space=guest:1\n\
             c0 host map gpa:0x1000 phys:0x1000 4K space=stage2:9\n\
             c0 vm2/v0 load 0x1000 8\n\
             c0 vm1/v0 load phys:0x1000 8\n\
             c0 host unmap gpa:0x1000 4K space=stage2:1\n",
        );
        let nm = report(&m).not_modelled;
        for k in [
            "map: space=stage2:N maps a gpa: address to a phys: one",
            "map: GPA in the guest page-table range",
            "map: VM not declared",
            "guest access: VM without a nonzero 16-bit ASID",
            "guest access to a host address (phys:, hva:, iova:)",
        ] {
            assert_eq!(nm.get(k), Some(&1), "{k}: {nm:?}");
        }
        assert_eq!(nm.len(), 6, "{nm:?}");
    }

    /// `state map` in the host kernel's table: a host access through it translates.
    #[test]
    fn state_map_in_the_kernel_table() {
        let mut m = machine("state map hva:0xffffc90000000000 phys:0x100010000 4K w\n");
        let o = one(&mut m, "c0 host store hva:0xffffc90000000008 8\n");
        assert_eq!(o.fault, None);
        let o = one(&mut m, "c0 host store hva:0xffffc90000001000 8\n");
        assert_eq!(o.fault.map(|f| f.code), Some(0x2));
    }
}

/// The host software around the direct map at machine level: shootdown pricing and targeting,
/// the early-boot allocator, CPA table memory (issue #3 items 6 and 7). Events are written as
/// scenario lines and executed one by one, so each test reads like the trace it runs.
mod host_software {
    use ccsim::config::ConfigBuilder;
    use ccsim::machine::{Machine, Outcome};
    use ccsim::report::{InputInfo, Report};
    use sim_core::{Agent, Context, Cycles, Record};
    use std::collections::BTreeMap;

    // Defaults of HostConfig, restated: the tests check the formula, not the numbers.
    const SEND: u64 = 300;
    const RECEIVE: u64 = 2_400;
    const ACK: u64 = 300;
    const INVLPG: u64 = 300;
    const FLUSH_ALL: u64 = 500;

    fn machine(sets: &[&str]) -> Machine {
        let mut b = ConfigBuilder::from_preset("tiny").unwrap();
        for s in sets {
            b.set(s, "test").unwrap();
        }
        let cfg = b.build().unwrap();
        assert_eq!(
            (
                cfg.host.ipi_send_cost,
                cfg.host.ipi_receive_cost,
                cfg.host.ipi_ack_cost,
                cfg.host.invlpg_cost,
                cfg.host.flush_all_cost
            ),
            (
                Cycles::new(SEND),
                Cycles::new(RECEIVE),
                Cycles::new(ACK),
                Cycles::new(INVLPG),
                Cycles::new(FLUSH_ALL)
            )
        );
        Machine::new(cfg, &[], false).unwrap()
    }

    /// Run scenario lines; return the last event's outcome.
    fn run(m: &mut Machine, text: &str) -> Outcome {
        let mut last = Outcome::default();
        for l in traces::ccs::parse_str(text, "test.ccs").unwrap() {
            if let Record::Event(te) = l.record {
                last = m.exec(&te);
            }
        }
        last
    }

    fn clock(m: &Machine, cpu: u32) -> u64 {
        m.clock(Agent::Cpu { cpu, ctx: Context::HostKernel }).get()
    }

    fn report(m: &Machine) -> Report {
        let info = InputInfo {
            kind: "test".into(),
            name: "host_software".into(),
            params: BTreeMap::new(),
            seed: 0,
        };
        m.report(&info)
    }

    /// A kernel range shootdown from CPU 0 to all four CPUs, exact to the cycle: the initiator
    /// sends three IPIs, flushes its two pages, and waits for the slowest acknowledgement;
    /// each target stalls for the IPI and its two INVLPGs.
    #[test]
    fn shootdown_costs_are_exact() {
        let mut m = machine(&["machine.cpus=4"]);
        let o = run(&mut m, "c0 host shootdown - addr=phys:0x200000 pages=2\n");
        let local = 2 * INVLPG;
        let stall = RECEIVE + 2 * INVLPG;
        let initiator = 3 * SEND + local.max(stall + ACK);
        assert_eq!(o.cost.get(), initiator);
        assert_eq!(clock(&m, 0), initiator);
        for c in 1..4 {
            assert_eq!(clock(&m, c), stall, "target {c} stalls for receive + work");
        }
        let r = report(&m);
        assert_eq!(
            (r.shootdowns.shootdowns, r.shootdowns.ipis_sent, r.shootdowns.target_stall_cycles),
            (1, 3, 3 * stall)
        );
        assert_eq!(r.shootdowns.initiator_cycles, initiator);
        assert_eq!(r.cycles.invalidation, initiator + 3 * stall);
        // A listed target that excludes the initiator: no local work, one IPI, a full flush.
        let o = run(&mut m, "c1 host shootdown 2\n");
        let stall_all = RECEIVE + FLUSH_ALL;
        assert_eq!(o.cost.get(), SEND + stall_all + ACK);
        assert_eq!(clock(&m, 2), stall + stall_all);
        assert_eq!(clock(&m, 3), stall, "CPU 3 was not listed");
        // Above tlb_single_page_flush_ceiling (33) a range becomes a full flush.
        let before = clock(&m, 3);
        run(&mut m, "c0 host shootdown - addr=phys:0x200000 pages=34\n");
        assert_eq!(clock(&m, 3) - before, RECEIVE + FLUSH_ALL);
        // A lone CPU flushes locally: no IPI.
        let mut one = machine(&["machine.cpus=1"]);
        let o = run(&mut one, "c0 host shootdown - addr=phys:0x200000 pages=2\n");
        assert_eq!(o.cost.get(), 2 * INVLPG);
        assert_eq!(report(&one).shootdowns.ipis_sent, 0);
    }

    /// A process's flush goes only to the CPUs that may cache it: those that loaded it since
    /// their last full flush (Linux mm_cpumask). CPU 3 ran the process, then the kernel, then
    /// flushed everything: it is not targeted; CPU 0, which never ran it, is not either.
    #[test]
    fn only_cpus_that_may_cache_the_mapping_are_targeted() {
        let mut m = machine(&["machine.cpus=4"]);
        run(
            &mut m,
            "c1 proc:7 load hva:0x400000 8\n\
             c2 proc:7 load hva:0x400000 8\n\
             c3 proc:7 load hva:0x400000 8\n\
             c3 host load phys:0x200000 8\n\
             c3 host flush-all\n",
        );
        let before: Vec<u64> = (0..4).map(|c| clock(&m, c)).collect();
        let o = run(&mut m, "c0 host unmap hva:0x400000 4K space=proc:7\n");
        // One INVLPG per leaf (flush_tlb_mm_range), on CPUs 1 and 2 only, by IPI.
        let stall = RECEIVE + INVLPG;
        assert_eq!(o.cost.get(), 2 * SEND + stall + ACK);
        assert_eq!(clock(&m, 1) - before[1], stall);
        assert_eq!(clock(&m, 2) - before[2], stall);
        assert_eq!(clock(&m, 3), before[3], "CPU 3 flushed everything since");
        let r = report(&m);
        assert_eq!((r.shootdowns.shootdowns, r.shootdowns.ipis_sent), (1, 2));
        // The stale entries are gone: CPU 1 touching the page again demand-faults.
        let handled = r.faults.handled;
        run(&mut m, "c1 proc:7 load hva:0x400000 8\n");
        assert_eq!(report(&m).faults.handled, handled + 1);
        // A kernel flush still goes everywhere (on_each_cpu).
        let o = run(&mut m, "c3 host unmap hva:0xffffc90000000000 4K\n");
        assert_eq!(o.cost.get(), 0, "nothing mapped there: nothing to flush");
        run(&mut m, "c3 host map hva:0xffffc90000000000 phys:0x300000 4K w\n");
        run(&mut m, "c3 host unmap hva:0xffffc90000000000 4K\n");
        assert_eq!(report(&m).shootdowns.ipis_sent, 2 + 3);
    }

    /// CR3 loads and INVPCID keep the targeting exact: a process loaded under a PCID and left
    /// with a flushing CR3 load of the same PCID by another process is no longer cached.
    #[test]
    fn pcid_flushes_update_what_a_cpu_may_cache() {
        let mut m = machine(&["machine.cpus=2"]);
        run(
            &mut m,
            "c1 proc:5 cr3 phys:0x0 pcid=9 noflush\n\
             c1 proc:5 load hva:0x400000 8\n\
             c1 proc:6 cr3 phys:0x0 pcid=9\n",
        );
        let before = clock(&m, 1);
        let o = run(&mut m, "c0 host unmap hva:0x400000 4K space=proc:5\n");
        assert_eq!(o.cost.get(), 0, "CPU 1 flushed PCID 9 when it loaded proc 6 under it");
        assert_eq!(clock(&m, 1), before);
        // INVPCID single-context of another PCID does not remove proc 6 (PCID 9).
        run(&mut m, "c1 proc:6 load hva:0x400000 8\nc1 host invpcid single pcid=3\n");
        let o = run(&mut m, "c0 host unmap hva:0x400000 4K space=proc:6\n");
        assert_eq!(o.cost.get(), SEND + RECEIVE + INVLPG + ACK);
        // INVPCID all (type 3) drops every non-global entry: proc 6 is no longer cached once
        // CPU 1 runs the kernel.
        run(&mut m, "c1 proc:6 load hva:0x500000 8\nc1 host invpcid all\n");
        let o = run(&mut m, "c0 host unmap hva:0x500000 4K space=proc:6\n");
        assert_eq!(o.cost.get(), 0);
    }

    /// Early boot: split tables come from the boot pool at the bottom of allocatable memory,
    /// the buddy allocator is untouched, flushes are local, and the vmstat counters wait for
    /// SYSTEM_RUNNING. The next event ends boot and the unused pool joins the allocator.
    #[test]
    fn early_boot_splits_draw_from_the_boot_allocator() {
        let mut m = machine(&["machine.cpus=2", "host.early_boot=true", "host.boot_pool=64K"]);
        let free0 = report(&m).memory.free_kb;
        let o = run(&mut m, "c0 host cpa encrypted phys:0x1000\n");
        let r = report(&m);
        // tiny: 64 MiB with 2M leaves; one 2M → 4K split.
        assert_eq!((r.directmap.boot_splits, r.directmap.level2_splits), (1, 0));
        assert_eq!(r.directmap.boot_table_pages, 1);
        assert_eq!(r.memory.free_kb, free0, "the buddy allocator gave nothing");
        assert_eq!(r.shootdowns.ipis_sent, 0, "one CPU online");
        assert_eq!(clock(&m, 1), 0);
        // Cost: split work, the split's flush_tlb_all and the cpa_flush, all local.
        assert_eq!(o.cost.get(), 2_000 + FLUSH_ALL + INVLPG);
        run(&mut m, "c1 host work 1\n");
        let r = report(&m);
        assert_eq!(r.memory.free_kb, free0 + 64 - 4, "the pool's 15 unused pages joined");
        run(&mut m, "c0 host cpa encrypted phys:0x401000\n");
        let r = report(&m);
        assert_eq!((r.directmap.boot_splits, r.directmap.level2_splits), (1, 1));
        assert_eq!(r.directmap.boot_table_pages, 1);
        assert_eq!(r.memory.free_kb, free0 + 60 - 4, "a running split draws from the buddy");
    }

    /// A collapse gives its table pages back to the allocator they came from.
    #[test]
    fn collapse_frees_table_pages_to_the_allocator() {
        let mut m = machine(&["machine.cpus=2"]);
        let free0 = report(&m).memory.free_kb;
        run(&mut m, "c0 host cpa ro phys:0x605000\n");
        assert_eq!(report(&m).memory.free_kb, free0 - 4);
        run(&mut m, "c0 host cpa rox phys:0x600000 pages=512\n");
        let r = report(&m);
        assert_eq!(r.memory.free_kb, free0);
        assert_eq!(r.directmap.level2_collapses, 1);
        assert_eq!(r.directmap.table_kb, r.memory.page_tables_kb);
    }

    /// The seeded allocator changes where things land, deterministically per seed, and a
    /// recorded run replays under any allocator order (reserve takes exactly what it names).
    #[test]
    fn seeded_allocator_at_machine_level() {
        let split = "c0 host cpa ro phys:0x605000\n";
        let at = |sets: &[&str]| {
            let mut m = machine(sets);
            run(&mut m, split);
            // Where the PTE page went: the first page the allocator gave.
            let r = report(&m);
            (r.memory.free_kb, serde_json::to_string(&r.directmap).unwrap(), m)
        };
        let (f1, d1, _) = at(&["host.alloc_order=seeded", "host.alloc_seed=1"]);
        let (f2, d2, _) = at(&["host.alloc_order=seeded", "host.alloc_seed=1"]);
        assert_eq!((f1, d1), (f2, d2));
        // Replay: a page-alloc of a specific block succeeds whatever the order.
        let mut m = machine(&["host.alloc_order=seeded", "host.alloc_seed=5"]);
        run(&mut m, "c0 host page-alloc 0x2000000 order=9\n");
        assert!(report(&m).not_modelled.is_empty());
        run(&mut m, "c0 host page-alloc 0x2000000 order=9\n");
        assert_eq!(report(&m).not_modelled.get("page-alloc of pages not free"), Some(&1));
    }
}

/// The overlap rule of DESIGN.md "The timing model" at the engine level: independent TLB misses
/// overlap up to `mmu.page_walkers` within `mmu.mlp_window` accesses.
mod overlap {
    use ccsim::engine::{ConfigLayers, Input, RunOptions, run};

    /// 64 loads to distinct 4K pages of a 4K-mapped region: every one misses and walks.
    fn makespan_and_total(walkers: u32, window: u32) -> (u64, u64) {
        let dir = std::env::temp_dir().join(format!("ccsim-overlap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("burst-{walkers}-{window}.ccs"));
        let mut text = format!(
            "machine cpus=1 memory=8G mmu.page_walkers={walkers} mmu.mlp_window={window}\n\
             host physmap=2M\nstate directmap spa=0x100000000 size=4K len=0x400000\n"
        );
        for i in 0..64u64 {
            text.push_str(&format!("c0 host load phys:{:#x} 8\n", 0x1_0000_0000u64 + i * 0x10000));
        }
        std::fs::write(&p, text).unwrap();
        let r =
            run(&ConfigLayers::default(), &Input::File(p), &RunOptions::default()).unwrap().report;
        assert_eq!(r.walks.walks, 64, "every load walks");
        (r.cycles.makespan, r.cycles.total)
    }

    #[test]
    fn serial_walker_pays_the_sum_and_more_walkers_overlap() {
        let (serial, total) = makespan_and_total(1, 1);
        assert_eq!(serial, total, "one walker, window 1: nothing overlaps");
        let (two, total2) = makespan_and_total(2, 16);
        assert_eq!(total, total2, "the work is the same; only the overlap differs");
        assert!(two < serial, "2 walkers: {two} !< {serial}");
        let (four, _) = makespan_and_total(4, 16);
        assert!(four < two, "4 walkers: {four} !< {two}");
        // A window of 1 serializes even with many walkers.
        let (w1, _) = makespan_and_total(4, 1);
        assert_eq!(w1, serial);
        // Misses all walk the same way, so with w walkers and a deep window the makespan is
        // bounded below by total / w.
        assert!(four * 4 >= total, "{four} * 4 < {total}");
    }
}

/// Invariants of issue #4 as properties: whatever the physmap policy and the TLB reading of
/// RMP updates (`rmp.tlb_on_update`), no host write ever completes to an assigned page
/// (AMD APM Vol. 2 Table 15-39, host row: a write to a page that is not hypervisor-owned is
/// an RMP #PF; stale TLB entries must not let one through).
mod invariants {
    use ccsim::config::ConfigBuilder;
    use ccsim::host::config::PhysmapPolicy;
    use ccsim::machine::Machine;
    use proptest::prelude::*;
    use sim_core::Record;

    /// Host pages the ops touch: 8 pages in each of two 2M regions well above the kernel's
    /// reserved low memory of the `tiny` preset (64 MiB).
    fn page(i: u8) -> u64 {
        let region = 0x200_0000 + u64::from(i / 8) * 0x20_0000;
        region + u64::from(i % 8) * 0x1000 * 61
    }

    #[derive(Clone, Debug)]
    enum Op {
        Assign(u8, bool),
        Unassign(u8, bool),
        Psmash(u8),
        Load(u8, u8),
        Store(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..16, any::<bool>()).prop_map(|(p, big)| Op::Assign(p, big)),
            (0u8..16, any::<bool>()).prop_map(|(p, big)| Op::Unassign(p, big)),
            (0u8..16).prop_map(Op::Psmash),
            (0u8..16, 0u8..2).prop_map(|(p, c)| Op::Load(p, c)),
            (0u8..16, 0u8..2).prop_map(|(p, c)| Op::Store(p, c)),
        ]
    }

    fn line(o: &Op) -> String {
        let base = |p: u8, big: bool| if big { page(p) & !0x1f_ffff } else { page(p) };
        match *o {
            Op::Assign(p, big) => format!(
                "c0 host rmpupdate spa={:#x} size={} assigned asid=5 gpa={:#x}",
                base(p, big),
                if big { "2M" } else { "4K" },
                base(p, big)
            ),
            Op::Unassign(p, big) => format!(
                "c0 host rmpupdate spa={:#x} size={}",
                base(p, big),
                if big { "2M" } else { "4K" }
            ),
            Op::Psmash(p) => format!("c0 host psmash spa={:#x}", page(p) & !0x1f_ffff),
            Op::Load(p, c) => format!("c{c} host load phys:{:#x} 8", page(p)),
            Op::Store(p, c) => format!("c{c} host store phys:{:#x} 8", page(p)),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn no_host_write_completes_to_an_assigned_page(
            ops in proptest::collection::vec(op(), 1..60),
            policy in 0usize..PhysmapPolicy::ALL.len(),
            coherent in any::<bool>(),
        ) {
            let policy = PhysmapPolicy::ALL[policy];
            let mut b = ConfigBuilder::from_preset("tiny").unwrap();
            b.set(&format!("host.policy={}", policy.name()), "test").unwrap();
            let tlb = if coherent { "coherent" } else { "global-flush" };
            b.set(&format!("rmp.tlb_on_update={tlb}"), "test").unwrap();
            let mut m = Machine::new(b.build().unwrap(), &[], false).unwrap();
            let text: String = ops.iter().map(|o| line(o) + "\n").collect();
            for l in traces::ccs::parse_str(&text, "ops.ccs").unwrap() {
                let Record::Event(te) = l.record else { continue };
                let store = matches!(te.event, sim_core::Event::Store { .. });
                let out = m.exec(&te);
                if let (true, None, sim_core::Event::Store { addr, .. }) = (store, out.fault, &te.event) {
                    let sim_core::Address::Spa(spa) = *addr else { unreachable!() };
                    let e = m.rmp().entry(spa);
                    prop_assert!(!e.assigned, "{policy:?} {tlb}: store to {spa} completed on an assigned page\n{text}");
                }
                // Issue #10: the policies that split the direct map ahead of RMP changes leave no
                // window where a kernel store to a page the RMP does not assign faults (a large
                // direct-map leaf over an assigned 4K page would: the 2M-region rule).
                if store
                    && matches!(
                        policy,
                        PhysmapPolicy::SplitOnAssign | PhysmapPolicy::AdjustDirectMap | PhysmapPolicy::Presplit4k
                    )
                    && let sim_core::Event::Store { addr: sim_core::Address::Spa(spa), .. } = te.event
                    && !m.rmp().entry(spa).assigned
                {
                    prop_assert!(
                        out.fault.is_none(),
                        "{policy:?} {tlb}: kernel store to unassigned {spa} faulted: {:?}\n{text}",
                        out.fault
                    );
                }
            }
        }
    }
}

/// TLB contents stay within what the page tables permit after the invalidations Linux and the
/// hardware make, at machine level: with every CPU's TLB oracle on (`Mmu::enable_oracle`),
/// each access's translation is compared with a fresh functional walk, whatever mix of host
/// kernel accesses through the direct map and kernel mappings, user accesses (demand-paged and
/// through 4K and 2M user mappings), CPA requests, RMPUPDATE/PSMASH under each physmap policy
/// (which split, unmap, restore and collapse the direct map), and SNP guest accesses, page-state
/// changes and PVALIDATEs (KVM faulting guest_memfd pages in, zapping and freeing them) runs on
/// two CPUs; and no host write completes to an RMP-assigned page. See: #10
mod tlb_oracle {
    use ccsim::config::ConfigBuilder;
    use ccsim::host::config::PhysmapPolicy;
    use ccsim::host::directmap::dm_va;
    use ccsim::machine::Machine;
    use proptest::prelude::*;
    use sim_core::event::Disposition;
    use sim_core::{Hva, Record, Spa};

    /// Host pages: 0..8 are 4 pages in each of two 2M regions at 32 MiB, the only pages the
    /// ops RMPUPDATE, map and CPA (few, so that ops meet on them); 8..40 are the first 128 KiB
    /// the allocator hands out (the direct map's and KVM's table pages, demand-paged user
    /// pages and the guest's guest_memfd folios land there, lowest first), touched by kernel
    /// accesses only.
    fn page(i: u8) -> u64 {
        if i < 8 {
            0x200_0000 + u64::from(i / 4) * 0x20_0000 + u64::from(i % 4) * 0x1000 * 61
        } else {
            0x10_0000 + u64::from(i - 8) * 0x1000
        }
    }

    /// User addresses: 0..4 demand-paged (in processes 1 and 2), 4..12 four pages in each of
    /// two 2M slots that `UMap` maps onto the pages above (in process 1).
    fn uva(i: u8) -> u64 {
        if i < 4 {
            0x7f00_0000_0000 + u64::from(i) * 0x1000
        } else {
            let j = i - 4;
            uslot(j / 4) + u64::from(j % 4) * 0x1000 * 61
        }
    }

    fn uslot(j: u8) -> u64 {
        0x7f10_0000_0000 + u64::from(j % 2) * 0x20_0000
    }

    /// A kernel mapping outside the direct map (vmalloc space).
    fn kva(slot: u8) -> u64 {
        0xffff_c900_0000_0000 + u64::from(slot % 4) * 0x1000
    }

    /// Guest-physical pages of VM 1: two in each of two 2M regions.
    fn gpa(i: u8) -> u64 {
        0x10_0000 + u64::from(i / 2 % 2) * 0x20_0000 + u64::from(i % 2) * 0x3000
    }

    const CPA: [&str; 13] = [
        "4k",
        "ro",
        "rw",
        "rox",
        "x",
        "nx",
        "np",
        "p",
        "encrypted",
        "decrypted",
        "dm-invalid",
        "dm-default",
        "dm-valid",
    ];

    /// A CPA op, mostly one that changes what a translation allows (`ro`, `np`,
    /// `dm-invalid`) or undoes it.
    fn cpa_op() -> impl Strategy<Value = u8> {
        prop_oneof![2 => Just(1u8), 2 => Just(6), 2 => Just(10), 3 => 0u8..13]
    }

    #[derive(Clone, Debug)]
    enum Op {
        /// A kernel load or store through the direct map: page, CPU, write.
        Kernel(u8, u8, bool),
        Assign(u8, bool),
        Unassign(u8, bool),
        Psmash(u8),
        /// A CPA request: op, first page, page count.
        Cpa(u8, u8, u64),
        /// A user load or store: PID, address, CPU, write.
        User(u8, u8, u8, bool),
        /// Map user slot `j` of process 1 onto a region (2M) or its first page (4K).
        UMap(u8, u8, bool),
        UUnmap(u8, bool),
        /// Map kernel slot onto a page; unmap it; access it (CPU, write).
        KMap(u8, u8),
        KUnmap(u8),
        KAccess(u8, u8, bool),
        /// A guest access: CPU, page, private, write.
        Guest(u8, u8, bool, bool),
        /// A page-state change by the guest: CPU, page, to private.
        Psc(u8, u8, bool),
        Pvalidate(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let cpu = 0u8..2;
        prop_oneof![
            8 => (prop_oneof![3 => 0u8..8, 1 => 8u8..40], cpu.clone(), any::<bool>())
                .prop_map(|(p, c, w)| Op::Kernel(p, c, w)),
            3 => (0u8..8, any::<bool>()).prop_map(|(p, big)| Op::Assign(p, big)),
            2 => (0u8..8, any::<bool>()).prop_map(|(p, big)| Op::Unassign(p, big)),
            1 => (0u8..8).prop_map(Op::Psmash),
            3 => (cpa_op(), 0u8..8, prop_oneof![Just(1u64), Just(3), Just(600)])
                .prop_map(|(o, p, n)| Op::Cpa(o, p, n)),
            3 => (1u8..3, 0u8..12, cpu.clone(), any::<bool>())
                .prop_map(|(pid, v, c, w)| Op::User(if v < 4 { pid } else { 1 }, v, c, w)),
            2 => (0u8..2, 0u8..2, any::<bool>()).prop_map(|(j, r, big)| Op::UMap(j, r, big)),
            1 => (0u8..2, any::<bool>()).prop_map(|(j, big)| Op::UUnmap(j, big)),
            1 => (0u8..4, 0u8..8).prop_map(|(s, p)| Op::KMap(s, p)),
            1 => (0u8..4).prop_map(Op::KUnmap),
            2 => (0u8..4, cpu.clone(), any::<bool>()).prop_map(|(s, c, w)| Op::KAccess(s, c, w)),
            5 => (cpu.clone(), 0u8..4, any::<bool>(), any::<bool>())
                .prop_map(|(c, g, p, w)| Op::Guest(c, g, p, w)),
            3 => (cpu.clone(), 0u8..4, any::<bool>()).prop_map(|(c, g, p)| Op::Psc(c, g, p)),
            1 => (cpu, 0u8..4).prop_map(|(c, g)| Op::Pvalidate(c, g)),
        ]
    }

    fn line(o: &Op) -> String {
        let rmp_base = |p: u8, big: bool| if big { page(p) & !0x1f_ffff } else { page(p) };
        let size = |big: bool| if big { "2M" } else { "4K" };
        let ld = |w: bool| if w { "store" } else { "load" };
        match *o {
            Op::Kernel(p, c, w) => format!("c{c} host {} phys:{:#x} 8", ld(w), page(p)),
            Op::Assign(p, big) => format!(
                "c0 host rmpupdate spa={:#x} size={} assigned asid=9 gpa={:#x}",
                rmp_base(p, big),
                size(big),
                rmp_base(p, big)
            ),
            Op::Unassign(p, big) => {
                format!("c0 host rmpupdate spa={:#x} size={}", rmp_base(p, big), size(big))
            }
            Op::Psmash(p) => format!("c0 host psmash spa={:#x}", page(p) & !0x1f_ffff),
            Op::Cpa(o, p, n) => {
                let op = CPA[usize::from(o)];
                let cpa = format!("c1 host cpa {op} phys:{:#x} pages={n}", page(p));
                // set_direct_map_invalid_noflush leaves the flush to its caller (secretmem,
                // guest_memfd), which makes it at once with flush_tlb_kernel_range.
                if op == "dm-invalid" {
                    format!("{cpa}\nc1 host shootdown - addr=phys:{:#x} pages={n}", page(p))
                } else {
                    cpa
                }
            }
            Op::User(pid, v, c, w) => format!("c{c} proc:{pid} {} hva:{:#x} 8", ld(w), uva(v)),
            Op::UMap(j, r, big) => {
                let pa = if big { page(r * 4) & !0x1f_ffff } else { page(r * 4) };
                format!(
                    "c0 host map hva:{:#x} phys:{pa:#x} {} space=proc:1 w user",
                    uslot(j),
                    size(big)
                )
            }
            Op::UUnmap(j, big) => {
                format!("c0 host unmap hva:{:#x} {} space=proc:1", uslot(j), size(big))
            }
            Op::KMap(s, p) => {
                format!("c0 host map hva:{:#x} phys:{:#x} 4K space=kernel w", kva(s), page(p))
            }
            Op::KUnmap(s) => format!("c1 host unmap hva:{:#x} 4K space=kernel", kva(s)),
            Op::KAccess(s, c, w) => format!("c{c} host {} hva:{:#x} 8", ld(w), kva(s)),
            Op::Guest(c, g, private, w) => {
                let cbit = if private { 1u64 << 51 } else { 0 };
                format!("c{c} vm1/v{c} {} gpa:{:#x} 8", ld(w), cbit | gpa(g))
            }
            Op::Psc(c, g, private) => {
                let to = if private { "private" } else { "shared" };
                format!("c{c} vm1/v{c} psc {to} {:#x}", gpa(g))
            }
            Op::Pvalidate(c, g) => format!("c{c} vm1/v{c} pvalidate gpa:{:#x} validate", gpa(g)),
        }
    }

    /// The host address a store op writes through, with its process (`None`: the kernel).
    fn host_store(o: &Op) -> Option<(Option<u32>, Hva)> {
        match *o {
            Op::Kernel(p, _, true) => Some((None, dm_va(Spa::new(page(p))))),
            Op::User(pid, v, _, true) => Some((Some(u32::from(pid)), Hva::new(uva(v)))),
            Op::KAccess(s, _, true) => Some((None, Hva::new(kva(s)))),
            _ => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]
        #[test]
        fn tlbs_never_disagree_with_the_page_tables(
            ops in proptest::collection::vec(op(), 1..80),
            policy in 0usize..PhysmapPolicy::ALL.len(),
            // Mostly the coherent reading: a global flush on every RMPUPDATE hides what other
            // invalidations miss.
            coherent in proptest::bool::weighted(0.75),
            recheck in any::<bool>(),
            gbpages in any::<bool>(),
            gmem_2m in any::<bool>(),
        ) {
            let policy = PhysmapPolicy::ALL[policy];
            let mut b = ConfigBuilder::from_preset("tiny").unwrap();
            b.set(&format!("host.policy={}", policy.name()), "test").unwrap();
            let tlb = if coherent { "coherent" } else { "global-flush" };
            b.set(&format!("rmp.tlb_on_update={tlb}"), "test").unwrap();
            b.set(&format!("mmu.recheck_write_on_read_fill={recheck}"), "test").unwrap();
            if gmem_2m {
                // 2M guest_memfd folios: 2M RMP entries and NPT leaves, PSMASH on SIZEM.
                b.set("host.gmem_folio_order=9", "test").unwrap();
            }
            if gbpages {
                // 1G direct-map leaves, which SNP hosts cache as 2M TLB entries.
                b.set("machine.memory=2G", "test").unwrap();
                b.set("host.physmap=1G", "test").unwrap();
            }
            let settings: Vec<_> = traces::ccs::parse_str("vm 1 snp asid=5 memory=16M\n", "vm")
                .unwrap()
                .into_iter()
                .filter_map(|l| match l.record {
                    Record::Setting(s) => Some(("vm".to_owned(), s)),
                    _ => None,
                })
                .collect();
            let mut m = Machine::new(b.build().unwrap(), &settings, false).unwrap();
            m.enable_tlb_oracle();
            let how =
                format!("{policy:?} {tlb} recheck={recheck} gbpages={gbpages} gmem_2m={gmem_2m}");
            let all: String = ops.iter().map(|o| line(o) + "\n").collect();
            for (i, o) in ops.iter().enumerate() {
                let mut last = None;
                for l in traces::ccs::parse_str(&line(o), "op").unwrap() {
                    let Record::Event(te) = l.record else { continue };
                    last = Some(m.exec(&te));
                    prop_assert!(m.take_input_error().is_none());
                    let bad = m.tlb_oracle_mismatches();
                    prop_assert!(bad.is_empty(), "{how}: op {i} {o:?}: {bad:x?}\n{all}");
                }
                let completed = last.is_some_and(|out| {
                    out.fault.is_none_or(|f| f.disposition == Disposition::Handled)
                });
                if let (true, Some((pid, va))) = (completed, host_store(o))
                    && let Some(spa) = m.host_translation(pid, va)
                {
                    let e = m.rmp().entry(spa);
                    prop_assert!(
                        !e.assigned,
                        "{how}: op {i} {o:?}: a host store to {spa} completed on an assigned \
                         page\n{all}"
                    );
                }
            }
        }
    }
}

/// The report's `DirectMap4k/2M/1G` equal a recount of the direct map's page table
/// (`Machine::directmap_recount_kb`) at the end of the workloads that change it or run beside
/// it: `snp-churn` under every physmap policy (splits, unmaps and restores, collapses),
/// `vsm-boot` on a plain and an SNP guest, and `tdx-boot` and `tdx-churn` on `spr` (with host
/// kernel direct-map traffic; the TDX host never changes the direct map — private memory stays
/// mapped, as in Linux — so these check the map as built and kept). See: #10
mod directmap_counters {
    use ccsim::engine::{ConfigLayers, Input, RunOptions, run};
    use ccsim::host::config::PhysmapPolicy;
    use ccsim::report::Report;

    /// Run workload `name` with `items` on `preset` under the `sets` overrides and check its
    /// DirectMap counters against a recount of the machine's tables.
    fn run_and_recount(
        name: &str,
        preset: Option<&str>,
        sets: &[String],
        items: &[&str],
    ) -> Report {
        let layers = ConfigLayers {
            preset: preset.map(str::to_owned),
            sets: sets.to_vec(),
            ..Default::default()
        };
        let params = workloads::Params::parse(items.iter().copied()).unwrap();
        let input = Input::Workload { name: name.into(), params };
        let out = run(&layers, &input, &RunOptions { seed: 4, ..RunOptions::default() })
            .unwrap_or_else(|e| panic!("{name} {sets:?}: {e}"));
        assert_eq!(
            out.report.directmap.kb,
            out.machine.directmap_recount_kb(),
            "{name} {sets:?}: DirectMap kB in the report vs a recount of the page table"
        );
        assert!(out.report.not_modelled.is_empty(), "{name}: {:?}", out.report.not_modelled);
        // Each section built alone (what `expect … counter` reads) is the section of the whole
        // report.
        let info = &out.report.input;
        let whole = out.machine.report(info);
        for section in [
            "ccsim",
            "input",
            "machine",
            "records",
            "events",
            "accesses",
            "dtlb",
            "walks",
            "guest",
            "rmp",
            "faults",
            "kvm",
            "vsm",
            "policy",
            "iommu",
            "tdx",
            "directmap",
            "shootdowns",
            "memory",
            "cycles",
            "derived",
            "not_modelled",
        ] {
            assert_eq!(
                out.machine.report_section(section, info),
                whole.section(section),
                "{name} {sets:?}: section {section}"
            );
        }
        assert!(out.machine.report_section("nonsense", info).is_none());
        out.report
    }

    #[test]
    fn directmap_counters_equal_a_recount_after_workloads() {
        let churn = [
            "guests=3",
            "guest_memory=2M",
            "working_set=256K",
            "image=64K",
            "accesses=3000",
            "psc_interval=100",
            "slice=1000",
            "kernel_accesses=3000",
        ];
        let (mut splits, mut unmapped, mut coalesced) = (0, 0, 0);
        for policy in PhysmapPolicy::ALL {
            let sets = [format!("host.policy={}", policy.name())];
            let r = run_and_recount("snp-churn", None, &sets, &churn);
            splits += r.directmap.level2_splits + r.directmap.level3_splits;
            unmapped += r.policy.dm_unmapped_pages;
            coalesced += r.policy.coalesced_2m;
        }
        // The runs did change the direct map every way a policy can.
        assert!(splits > 0 && unmapped > 0 && coalesced > 0, "{splits} {unmapped} {coalesced}");
        let tdx = ["guest_memory=32M", "swiotlb=4M", "accesses=2000", "touch=0.5"];
        run_and_recount("tdx-boot", Some("spr"), &[], &tdx);
        let tdx_churn = [
            "guest_memory=32M",
            "working_set=4M",
            "pool=4M",
            "accesses=4000",
            "convert_interval=300",
            "kernel_cpus=1",
            "kernel_accesses=3000",
        ];
        run_and_recount("tdx-churn", Some("spr"), &[], &tdx_churn);
        let vsm =
            ["guest_memory=256M", "image=4M", "vtl1_memory=4M", "working_set=32M", "changes=400"];
        run_and_recount("vsm-boot", None, &[], &vsm);
        let vsm_snp = [&vsm[..], &["kind=snp"]].concat();
        let r =
            run_and_recount("vsm-boot", None, &["host.policy=split-on-assign".into()], &vsm_snp);
        assert!(r.directmap.level2_splits > 0, "the SNP guest's pages split the direct map");
    }
}

/// KVM's TDX MMU keeps its mirror and the S-EPT in agreement (spec/tdx.md §6 V17 invariant),
/// whatever the guest accepts and touches and whatever the VMM converts, under both protocols
/// with 4K and 2M private mappings (run one after another: with no concurrency the naive
/// protocol is as safe as the frozen one). See: #8, #10
mod tdx_mirror {
    use ccsim::config::ConfigBuilder;
    use ccsim::machine::Machine;
    use proptest::prelude::*;
    use sim_core::Record;

    #[derive(Clone, Debug)]
    enum Op {
        Accept(u8, u8, bool),
        Touch(u8, u8, bool),
        ToShared(u8, u8, bool),
        ToPrivate(u8, u8),
        Enter(u8),
    }

    /// A GPA in one of four 2M regions of one 1G region (so tables are shared and raced for).
    fn gpa(region: u8, page: u8) -> u64 {
        0x4000_0000 + u64::from(region % 4) * 0x20_0000 + u64::from(page % 8) * 0x1000
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4, 0u8..8, any::<bool>()).prop_map(|(r, p, big)| Op::Accept(r, p, big)),
            3 => (0u8..4, 0u8..8, any::<bool>()).prop_map(|(r, p, w)| Op::Touch(r, p, w)),
            2 => (0u8..4, 0u8..8, any::<bool>()).prop_map(|(r, p, big)| Op::ToShared(r, p, big)),
            1 => (0u8..4, 0u8..8).prop_map(|(r, p)| Op::ToPrivate(r, p)),
            1 => (0u8..2).prop_map(Op::Enter),
        ]
    }

    fn line(o: &Op) -> String {
        match *o {
            Op::Accept(r, p, big) => {
                let g = if big { gpa(r, 0) | 1 } else { gpa(r, p) };
                format!("c{} vm1/v{} tdcall 6 rcx={g:#x}", p % 2 + 1, p % 2)
            }
            Op::Touch(r, p, w) => format!(
                "c{} vm1/v{} {} gpa:{:#x} 8",
                p % 2 + 1,
                p % 2,
                if w { "store" } else { "load" },
                gpa(r, p)
            ),
            Op::ToShared(r, p, big) => {
                let (g, n) = if big { (gpa(r, 0), 0x20_0000) } else { (gpa(r, p), 0x1000) };
                format!("c0 host mem-attrs {g:#x} {n:#x} vm=1 attrs=0")
            }
            Op::ToPrivate(r, p) => {
                format!("c0 host mem-attrs {:#x} 0x1000 vm=1 attrs=0x8", gpa(r, p))
            }
            Op::Enter(v) => format!("c0 host td-enter vm=1 vcpu={v}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn mirror_and_sept_agree_after_every_operation(
            ops in proptest::collection::vec(op(), 1..40),
            naive in any::<bool>(),
            huge in any::<bool>(),
        ) {
            let mut b = ConfigBuilder::from_preset("spr").unwrap();
            b.set("machine.cpus=3", "test").unwrap();
            let proto = if naive { "naive" } else { "frozen" };
            b.set(&format!("host.tdx_spte_protocol={proto}"), "test").unwrap();
            b.set(&format!("host.tdx_private_2m={huge}"), "test").unwrap();
            b.set(&format!("host.gmem_folio_order={}", if huge { 9 } else { 0 }), "test").unwrap();
            let mut m = Machine::new(b.build().unwrap(), &[], false).unwrap();
            let head = "state td tdr=0x80000000 root=0x80001000 hkid=16 state=runnable vm=1\n";
            let text: String = ops.iter().map(|o| line(o) + "\n").collect();
            let all = format!("{head}{text}");
            for l in traces::ccs::parse_str(&all, "ops.ccs").unwrap() {
                match l.record {
                    Record::State(s) => m.apply_state(&s).unwrap(),
                    Record::Event(te) => {
                        let _ = m.exec(&te);
                        let bad = m.invariants();
                        prop_assert!(bad.is_empty(), "after line {}: {bad:?}\n{all}", l.line);
                    }
                    _ => {}
                }
            }
            // The run did go through KVM: a first accept always faults its page in.
            if matches!(ops[0], Op::Accept(..)) {
                let info = ccsim::report::InputInfo {
                    kind: "test".into(),
                    name: "ops".into(),
                    params: Default::default(),
                    seed: 0,
                };
                let k = m.report(&info).tdx.kvm;
                prop_assert!(k.faults > 0 && k.sept_adds >= 2, "{k:?}\n{all}");
            }
        }
    }
}

/// A MapGPA to shared of a range holding thousands of private pages zaps every one of them in
/// an ordinary run (the operation's step bound grows with its leaves; it stopped after ~2,000
/// leaves and left `mmu_lock` held). See: #8
mod tdx_large_zap {
    use ccsim::config::ConfigBuilder;
    use ccsim::machine::Machine;
    use sim_core::Record;

    #[test]
    fn map_gpa_of_2560_private_pages_zaps_them_all() {
        let b = ConfigBuilder::from_preset("spr").unwrap();
        let mut m = Machine::new(b.build().unwrap(), &[], false).unwrap();
        let mut text = String::from(
            "state td tdr=0x80000000 root=0x80001000 hkid=16 state=runnable vm=1\n\
             c1 host td-enter vm=1 vcpu=0\n",
        );
        for p in 0..2560u64 {
            text += &format!("c1 vm1/v0 tdcall 6 rcx={:#x}\n", 0x4000_0000 + p * 4096);
        }
        text += "c1 vm1/v0 map-gpa 0x40000000 0xa00000 shared\n";
        for l in traces::ccs::parse_str(&text, "zap.ccs").unwrap() {
            match l.record {
                Record::State(s) => m.apply_state(&s).unwrap(),
                Record::Event(te) => {
                    let _ = m.exec(&te);
                }
                _ => {}
            }
        }
        let info = ccsim::report::InputInfo {
            kind: "test".into(),
            name: "zap".into(),
            params: Default::default(),
            seed: 0,
        };
        let r = m.report(&info);
        assert_eq!((r.tdx.kvm.augs_4k, r.tdx.kvm.zaps, r.tdx.kvm.bugs), (2560, 2560, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
        assert!(m.invariants().is_empty());
    }
}

/// Built-in workloads run end to end through the engine.
mod workloads_run {
    use ccsim::engine::{ConfigLayers, Input, RunOptions, run};

    fn tiny_churn() -> workloads::Params {
        workloads::Params::parse([
            "guests=3",
            "guest_memory=2M",
            "working_set=256K",
            "image=64K",
            "accesses=4000",
            "psc_interval=200",
            "slice=1500",
            "kernel_accesses=2000",
            "slab_pages=64",
        ])
        .unwrap()
    }

    /// `ccsim run --workload snp-churn --policy P` completes and counts every access it
    /// generated: 3 guests × 4000 plus 2 kernel CPUs × 2000. Guest PSC, PVALIDATE and the GPA
    /// form of SNP_LAUNCH_UPDATE may be counted as not modelled; that is not checked here.
    /// The same kernel traffic beside converting guests: on SNP, `none` meets RMP violations
    /// and the split policies remove them by splitting the direct map; on TDX no policy has
    /// anything to act on (no violation, no split, the same report under `none`,
    /// `split-on-assign` and `adjust-direct-map`), and only a 4K direct map changes the
    /// kernel's TLB misses (docs/snp-vs-tdx.md). See: #8
    #[test]
    fn snp_and_tdx_contrast() {
        let go = |preset: &str, name: &str, params: &[&str], policy: &str| {
            let layers = ConfigLayers {
                preset: Some(preset.to_owned()),
                sets: vec![format!("host.policy={policy}"), "machine.cpus=5".to_owned()],
                ..Default::default()
            };
            let mut all = vec!["kernel_cpus=2", "kernel_accesses=8000", "accesses=8000"];
            all.extend_from_slice(params);
            let params = workloads::Params::parse(all).unwrap();
            let input = Input::Workload { name: name.to_owned(), params };
            run(&layers, &input, &RunOptions::default()).unwrap().report
        };
        let snp = |policy| go("zen4", "snp-churn", &["guests=2", "guest_cpus=2"], policy);
        let tdx = |policy| go("spr", "tdx-churn", &["tds=1", "vcpus=2"], policy);
        let violations = |r: &ccsim::report::Report| r.rmp.violations.values().sum::<u64>();
        let splits =
            |r: &ccsim::report::Report| r.directmap.level2_splits + r.directmap.level3_splits;
        let none = snp("none");
        assert!(violations(&none) > 0 && none.faults.fatal > 0);
        let adj = snp("adjust-direct-map");
        assert_eq!((violations(&adj), adj.faults.fatal), (0, 0));
        assert!(splits(&adj) > 0);
        let t_none = tdx("none");
        assert_eq!((violations(&t_none), t_none.faults.fatal, splits(&t_none)), (0, 0, 0));
        assert!(t_none.tdx.private_accesses > 0 && t_none.accesses.kernel > 0);
        for p in ["split-on-assign", "adjust-direct-map"] {
            let r = tdx(p);
            assert_eq!((violations(&r), splits(&r)), (0, 0), "{p}");
            assert_eq!(r.dtlb, t_none.dtlb, "{p}: the policy changed the TLB on a TDX host");
        }
        let pre = tdx("presplit-4k");
        assert!(pre.derived.kernel_dtlb_mpka > t_none.derived.kernel_dtlb_mpka);
    }

    #[test]
    fn snp_churn_runs_and_counts_its_accesses() {
        for policy in ["none", "split-on-assign"] {
            let layers =
                ConfigLayers { sets: vec![format!("host.policy={policy}")], ..Default::default() };
            let input = Input::Workload { name: "snp-churn".into(), params: tiny_churn() };
            let out =
                run(&layers, &input, &RunOptions { seed: 5, ..RunOptions::default() }).unwrap();
            assert_eq!(out.report.accesses.total(), 3 * 4000 + 2 * 2000, "policy {policy}");
        }
    }

    /// `ccsim run --workload host-kernel` with small parameters completes under both physmap
    /// policies, counts every access, faults nowhere and leaves nothing not modelled. See: #5
    #[test]
    fn host_kernel_runs_clean() {
        let params = workloads::Params::parse([
            "accesses=30000",
            "cache_pages=256",
            "slab_pages=32",
            "w_zero=2",
        ])
        .unwrap();
        for policy in ["none", "split-on-assign"] {
            let layers =
                ConfigLayers { sets: vec![format!("host.policy={policy}")], ..Default::default() };
            let input = Input::Workload { name: "host-kernel".into(), params: params.clone() };
            let r = run(&layers, &input, &RunOptions { seed: 3, ..RunOptions::default() })
                .unwrap()
                .report;
            assert_eq!(r.accesses.total(), 2 * 30000, "policy {policy}");
            assert_eq!(r.accesses.kernel, 2 * 30000);
            assert_eq!((r.faults.raised, r.faults.fatal), (0, 0), "policy {policy}");
            assert!(r.not_modelled.is_empty(), "{policy}: {:?}", r.not_modelled);
        }
    }

    fn tiny_vsm(extra: &[&str]) -> workloads::Params {
        let mut v = vec![
            "guest_memory=256M",
            "image=4M",
            "vtl1_memory=4M",
            "working_set=32M",
            "changes=1500",
        ];
        v.extend_from_slice(extra);
        workloads::Params::parse(v).unwrap()
    }

    fn run_vsm(design: &str, params: &workloads::Params, seed: u64) -> ccsim::report::Report {
        let sets = vec![format!("vsm.design={design}"), "vsm.series_every=100".into()];
        let layers = ConfigLayers { sets, ..Default::default() };
        let input = Input::Workload { name: "vsm-boot".into(), params: params.clone() };
        run(&layers, &input, &RunOptions { seed, ..RunOptions::default() }).unwrap().report
    }

    /// `ccsim run --workload vsm-boot` under each VSM design: every call the generator issues
    /// is counted as a change, none is refused, VTL 0 is never denied (its accesses respect the
    /// protections) and nothing faults fatally or is left not modelled; only the memslot design
    /// updates memslots, only the attribute designs recompute 2M regions; stage 2 maps 2M where
    /// regions are uniform and 4K where they are mixed. Each design sees the same calls. See: #9
    #[test]
    fn vsm_boot_runs_under_each_design() {
        let p = tiny_vsm(&[]);
        let mut pages = Vec::new();
        for design in ["address-space-per-vtl", "attr-arrays", "vm-per-vtl"] {
            let r = run_vsm(design, &p, 1);
            let v = &r.vsm;
            assert_eq!(v.design, design);
            assert_eq!(v.changes, 1500, "{design}");
            assert!(v.refused.is_empty(), "{design}: {:?}", v.refused);
            assert_eq!(v.by_vtl[&0].denied, 0, "{design}");
            assert!(v.by_vtl[&0].accesses > 4000 && v.by_vtl[&0].tlb_misses > 0, "{design}");
            assert_eq!((r.faults.raised, r.faults.fatal), (0, 0), "{design}");
            assert!(r.not_modelled.is_empty(), "{design}: {:?}", r.not_modelled);
            let memslots = design == "address-space-per-vtl";
            assert_eq!(v.memslot_ops > 0, memslots, "{design}");
            assert_eq!(v.lpage_updates > 0, !memslots, "{design}");
            assert!(v.faultins_2m > 0 && v.faultins_4k > 0 && v.mixed_regions > 0, "{design}");
            assert!(v.stage2[sim_core::PageSize::K4] > 0, "{design}: {:?}", v.stage2);
            assert!(v.zaps > 0 && v.flushes > 0 && v.cycles_per_change > 0.0, "{design}");
            assert!(v.series.samples.len() > 1, "{design}");
            pages.push((v.pages, v.pages_changed));
        }
        assert!(pages.windows(2).all(|w| w[0] == w[1]), "same calls: {pages:?}");
    }

    /// `vsm-boot` on an SNP guest: the protections also go through RMPADJUST, every one of
    /// which succeeds; VTL 0's accesses to its private memory pass the VMPL check. See: #9
    #[test]
    fn vsm_boot_snp_adjusts_vmpl_masks() {
        let r = run_vsm("vm-per-vtl", &tiny_vsm(&["kind=snp", "changes=400"]), 2);
        let v = &r.vsm;
        assert_eq!(v.changes, 400);
        assert_eq!(v.rmpadjusts, v.pages);
        assert_eq!(v.rmpadjust_failed, 0);
        assert_eq!(v.by_vtl[&0].denied, 0);
        assert_eq!((r.faults.raised, r.faults.fatal), (0, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
    }

    /// The same seed gives the same report, byte for byte; another seed another. See: #9
    #[test]
    fn vsm_boot_is_deterministic() {
        let p = tiny_vsm(&["changes=800", "vcpus=3"]);
        let a = run_vsm("address-space-per-vtl", &p, 9).to_json().unwrap();
        assert_eq!(a, run_vsm("address-space-per-vtl", &p, 9).to_json().unwrap());
        assert_ne!(a, run_vsm("address-space-per-vtl", &p, 10).to_json().unwrap());
    }

    /// `ccsim run --workload qemu-process`: every access goes through a 2M user mapping of
    /// an order-9 block, with no fault and nothing not modelled. See: #5
    #[test]
    fn qemu_process_runs_clean() {
        let params = workloads::Params::parse([
            "accesses=20000",
            "threads=2",
            "guest_memory=64M",
            "new_page=0.01",
        ])
        .unwrap();
        let input = Input::Workload { name: "qemu-process".into(), params };
        let r =
            run(&ConfigLayers::default(), &input, &RunOptions { seed: 2, ..RunOptions::default() })
                .unwrap()
                .report;
        assert_eq!(r.accesses.total(), 2 * 20000);
        assert_eq!((r.faults.raised, r.faults.fatal), (0, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
    }

    /// `ccsim run --workload multi-tenant`: guests arrive, run and leave; the run completes
    /// with nothing not modelled, and once every guest is destroyed the host has as much
    /// memory free as a run of the kernel streams alone. See: #5
    #[test]
    fn multi_tenant_runs_and_returns_guest_memory() {
        let items = |guests: &str| {
            workloads::Params::parse([
                guests,
                "sizes=2M,1M,4M",
                "image=64K",
                "arrival_mean=500",
                "lifetime=2000",
                "slice=700",
                "psc_interval=200",
                "kernel_accesses=3000",
                "slab_pages=16",
            ])
            .unwrap()
        };
        // Under split-on-assign the kernel streams' stores never meet a private page through a
        // large mapping (under `none` they do, and fault: the physmap problem itself).
        let layers =
            ConfigLayers { sets: vec!["host.policy=split-on-assign".into()], ..Default::default() };
        let go = |guests: &str| {
            let input = Input::Workload { name: "multi-tenant".into(), params: items(guests) };
            run(&layers, &input, &RunOptions { seed: 8, ..RunOptions::default() }).unwrap().report
        };
        let r = go("guests=6");
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
        assert_eq!(r.faults.fatal, 0);
        assert!(r.accesses.total() >= 6 * 1000 + 3000);
        let alone = go("guests=0");
        assert_eq!(alone.accesses.total(), 3000);
        // Guest memory (6 guests of 1-4 MiB, validated in full), their VMSA and guest context
        // pages are all back after vm-destroy; what remains is the direct map's split page
        // tables (the policy keeps them).
        let held = |m: &ccsim::report::MemoryCounts| m.free_kb + m.page_tables_kb;
        let lost = held(&alone.memory).abs_diff(held(&r.memory));
        assert_eq!(lost, 0, "{lost} KiB not returned: {:?} vs {:?}", r.memory, alone.memory);
    }

    fn small_dma(misprogrammed: &str) -> workloads::Params {
        workloads::Params::parse([
            "nics=1",
            "disks=1",
            "packets=500",
            "rx_ring=64",
            "ios=80",
            "queue_depth=8",
            "guests=2",
            "guest_memory=2M",
            "working_set=256K",
            "image=16K",
            "accesses=2000",
            "psc_interval=100",
            "bounce_pages=16",
            "victim_pages=4",
            misprogrammed,
        ])
        .unwrap()
    }

    /// From a recording: the DMAs that reach a page assigned in the RMP (by the `rmpupdate`
    /// events before them) through the I/O mappings of their device's domain, as
    /// (writes, reads). Each DMA counts once (the IOMMU stops at its first refused page).
    fn dma_to_assigned(trace: &std::path::Path) -> (u64, u64) {
        use sim_core::event::{Address, IommuCmd, Record, Space};
        use sim_core::{Agent, Event};
        use std::collections::{BTreeMap, BTreeSet};
        let bytes = std::fs::read(trace).unwrap();
        let slice = traces::cct::TraceSlice::new(&bytes).unwrap();
        let (mut domain, mut maps, mut assigned) =
            (BTreeMap::new(), BTreeMap::new(), BTreeSet::new());
        let (mut writes, mut reads) = (0, 0);
        for r in slice.records_iter() {
            let Record::Event(te) = r.unwrap() else { continue };
            match (te.agent, te.event) {
                (_, Event::Iommu { cmd: IommuCmd::Attach, device, domain: d, .. }) => {
                    domain.insert(device, d);
                }
                (
                    _,
                    Event::Map {
                        va: Address::Iova(i),
                        pa: Address::Spa(p),
                        space: Space::IoDomain(d),
                        ..
                    },
                ) => {
                    maps.insert((d, i.raw() >> 12), p.raw() >> 12);
                }
                (_, Event::RmpUpdate { spa, assigned: a, .. }) => {
                    if a {
                        assigned.insert(spa.raw() >> 12);
                    } else {
                        assigned.remove(&(spa.raw() >> 12));
                    }
                }
                (
                    Agent::Device(dev),
                    e @ (Event::DmaRead { addr: Address::Iova(i), size }
                    | Event::DmaWrite { addr: Address::Iova(i), size }),
                ) => {
                    let d = domain[&dev];
                    let last = (i.raw() + u64::from(size) - 1) >> 12;
                    let hits = ((i.raw() >> 12)..=last)
                        .any(|pg| maps.get(&(d, pg)).is_some_and(|f| assigned.contains(f)));
                    if hits {
                        if matches!(e, Event::DmaWrite { .. }) {
                            writes += 1;
                        } else {
                            reads += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        (writes, reads)
    }

    /// `ccsim run --workload dma-streams`: without mis-programming no DMA is refused; with it,
    /// exactly the DMAs that reach a page assigned in the RMP are refused with RMP_PAGE_FAULT
    /// (event 0xD; the RW flag 0x020 on writes; spec/snp.md §2.7), counted as raised faults;
    /// with `iommu.rmp_dma_read=unchecked` only the writes. The run ends (devices waiting on
    /// their driver advance their own clocks). See: #7
    #[test]
    fn dma_streams_refuses_exactly_the_dma_to_assigned_pages() {
        let dir = std::env::temp_dir().join(format!("ccsim-dma-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let go = |mis: &str, reads: &str| {
            let layers = ConfigLayers {
                sets: vec![
                    "host.policy=split-on-assign".into(),
                    format!("iommu.rmp_dma_read={reads}"),
                ],
                ..Default::default()
            };
            let trace = dir.join(format!("{mis}-{reads}.cct"));
            let input = Input::Workload { name: "dma-streams".into(), params: small_dma(mis) };
            let opts = RunOptions { seed: 4, record: Some(trace.clone()), ..RunOptions::default() };
            let r = run(&layers, &input, &opts).unwrap().report;
            (r, dma_to_assigned(&trace))
        };
        let code = |r: &ccsim::report::Report, c: &str| {
            r.faults.by_code.get(&format!("iommu-event {c}")).copied().unwrap_or(0)
        };
        let (clean, (w0, r0)) = go("misprogrammed=0", "checked");
        assert_eq!((w0, r0), (0, 0));
        assert!(clean.accesses.dma_writes > 500 && clean.accesses.dma_reads > 500);
        assert_eq!(clean.iommu.blocked, 0);
        assert!(clean.iommu.events.is_empty(), "{:?}", clean.iommu.events);
        assert_eq!((clean.faults.raised, clean.faults.fatal), (0, 0));
        assert!(clean.not_modelled.is_empty(), "{:?}", clean.not_modelled);

        let (bad, (w, rd)) = go("misprogrammed=0.2", "checked");
        assert!(w > 0 && rd > 0, "{w} {rd}");
        assert_eq!(bad.iommu.events.get("RMP_PAGE_FAULT").copied(), Some(w + rd));
        assert_eq!((code(&bad, "0xd020"), code(&bad, "0xd000")), (w, rd));
        assert_eq!((bad.iommu.blocked, bad.faults.raised), (w + rd, w + rd));

        let (unchecked, (w, _)) = go("misprogrammed=0.2", "unchecked");
        assert_eq!(unchecked.iommu.events.get("RMP_PAGE_FAULT").copied(), Some(w));
        assert_eq!((code(&unchecked, "0xd020"), code(&unchecked, "0xd000")), (w, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Guests beyond `machine.cpus` are an error naming the agent, not a panic.
    /// An Intel host (the TDX workloads run on any preset; `spr` is the one with TDX).
    fn spr(sets: &[&str]) -> ConfigLayers {
        ConfigLayers {
            preset: Some("spr".into()),
            sets: sets.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn tdx_boot_small(extra: &[&str]) -> workloads::Params {
        let mut p = vec!["guest_memory=32M", "swiotlb=4M", "accesses=3000", "touch=0.5"];
        p.extend_from_slice(extra);
        workloads::Params::parse(p).unwrap()
    }

    /// `ccsim run --workload tdx-boot`: 32M touched half = 8 units of 2M, 2 of them the
    /// firmware region (TDH.MEM.PAGE.ADD), 2 the SWIOTLB, 4 accepted lazily. Under mainline's
    /// 4K-only KVM every accepted unit costs one failed 2M ACCEPT (it exits, KVM maps the first
    /// 4K page, the retry gets TDX_PAGE_SIZE_MISMATCH) and 512 4K ACCEPTs, each of the other
    /// 511 exiting once for its AUG; converting the SWIOTLB zaps its 1024 private pages. With
    /// 2M private mappings each unit is one exit, one 2M AUG and one ACCEPT. No KVM_BUG_ON, no
    /// fault left unhandled, nothing not modelled, every SEAMCALL successful. See: #8
    #[test]
    fn tdx_boot_accepts_lazily_in_2m_units() {
        let units = 6u64;
        let input = Input::Workload { name: "tdx-boot".into(), params: tdx_boot_small(&[]) };
        let r = run(&spr(&[]), &input, &RunOptions { seed: 4, ..RunOptions::default() })
            .unwrap()
            .report;
        let (t, k) = (&r.tdx, &r.tdx.kvm);
        let acc = |s: &str| t.accepts.get(s).copied().unwrap_or(0);
        assert_eq!(acc("TDX_PAGE_SIZE_MISMATCH"), units, "{:?}", t.accepts);
        assert_eq!((acc("TDX_SUCCESS"), acc("TD_EXIT")), (512 * units, 512 * units));
        assert_eq!((k.augs_4k, k.augs_2m, k.zaps), (512 * units, 0, 2 * 512));
        assert_eq!(t.seamcalls.get("TDH.MEM.PAGE.ADD"), Some(&1024));
        assert_eq!(t.status.keys().collect::<Vec<_>>(), ["TDX_SUCCESS"]);
        assert_eq!((k.bugs, r.faults.raised, r.faults.fatal), (0, 0, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
        assert!(r.kvm.shared_faultins > 0, "SWIOTLB bounce copies fault shared pages in");

        let input =
            Input::Workload { name: "tdx-boot".into(), params: tdx_boot_small(&["host_2m=true"]) };
        let layers = spr(&["host.tdx_private_2m=true", "host.gmem_folio_order=9"]);
        let r =
            run(&layers, &input, &RunOptions { seed: 4, ..RunOptions::default() }).unwrap().report;
        let (t, k) = (&r.tdx, &r.tdx.kvm);
        let acc = |s: &str| t.accepts.get(s).copied().unwrap_or(0);
        assert_eq!((acc("TDX_SUCCESS"), acc("TD_EXIT")), (units, units), "{:?}", t.accepts);
        assert_eq!(acc("TDX_PAGE_SIZE_MISMATCH"), 0);
        assert_eq!((k.augs_4k, k.augs_2m, k.zaps), (0, units, 2));
        assert_eq!((k.bugs, r.faults.raised, r.faults.fatal), (0, 0, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
    }

    /// `tdx-churn` driven on a machine directly: after every conversion, and at the end, KVM's
    /// mirror and the S-EPT agree and no KVM_BUG_ON fired; KVM zapped exactly the private pages
    /// converted to shared, and AUGed them again when the guest re-accepted them. See: #8
    #[test]
    fn tdx_churn_zaps_what_it_converts_and_keeps_the_invariants() {
        use ccsim::config::ConfigBuilder;
        use ccsim::machine::Machine;
        use sim_core::{Event, TimedEvent};
        let params = workloads::Params::parse([
            "guest_memory=32M",
            "working_set=8M",
            "pool=4M",
            "accesses=10000",
            "convert_interval=400",
            "tds=2",
            "vcpus=2",
        ])
        .unwrap();
        let mut b = ConfigBuilder::from_preset("spr").unwrap();
        b.set("machine.cpus=5", "test").unwrap();
        let mut m = Machine::new(b.build().unwrap(), &[], true).unwrap();
        let mut w = workloads::find("tdx-churn").unwrap().instantiate(&params, 6).unwrap();
        let n = w.agents().len();
        let (mut converted, mut conversions) = (0u64, 0u64);
        let mut live = vec![true; n];
        while live.iter().any(|&l| l) {
            for (s, alive) in live.iter_mut().enumerate() {
                if !*alive {
                    continue;
                }
                let Some(event) = w.next(s, &mut m) else {
                    *alive = false;
                    continue;
                };
                let agent = w.agent_of_last(s);
                let map = matches!(event, Event::MapGpa { .. });
                if let Event::MapGpa { bytes, shared: true, .. } = event {
                    converted += bytes / 4096;
                    conversions += 1;
                }
                let _ = m.exec(&TimedEvent { time: Some(m.clock(agent)), agent, event });
                if map {
                    let bad = m.invariants();
                    assert!(bad.is_empty(), "{bad:?}");
                }
            }
        }
        assert!(m.invariants().is_empty());
        let info = ccsim::report::InputInfo {
            kind: "test".into(),
            name: "tdx-churn".into(),
            params: Default::default(),
            seed: 6,
        };
        let r = m.report(&info);
        let k = &r.tdx.kvm;
        // 2 TDs × 2 vCPUs × (10000 / 400 - 1) conversions.
        assert_eq!(conversions, 2 * 2 * 24);
        assert_eq!(k.zaps, converted);
        // Working sets and pools (8M + 2 × 4M per TD) accepted, then every converted page.
        assert_eq!(k.augs_4k, 2 * (8 + 2 * 4) * 256 + converted);
        assert_eq!((k.bugs, r.faults.raised, r.faults.fatal), (0, 0, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
    }

    #[test]
    fn snp_churn_needs_its_cpus() {
        let layers = ConfigLayers { sets: vec!["machine.cpus=3".into()], ..Default::default() };
        let input = Input::Workload { name: "snp-churn".into(), params: tiny_churn() };
        let e = run(&layers, &input, &RunOptions::default()).unwrap_err().to_string();
        assert!(e.contains("c3 host") && e.contains("machine.cpus = 3"), "{e}");
    }
}

/// `ccsim trace import --from lackey` on the real sample in each role, replayed. See: #5
mod import {
    use ccsim::engine::{ConfigLayers, Input, RunOptions, run};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn sample(f: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("traces/samples/lackey-sort")
            .join(f)
            .display()
            .to_string()
    }

    fn out(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ccsim-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn ccsim(args: &[&str]) -> (i32, String) {
        let o = Command::new(env!("CARGO_BIN_EXE_ccsim")).args(args).output().unwrap();
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into())
    }

    /// Import the sample as `role`; the stderr summary.
    fn import(role: &str, file: &str) -> (PathBuf, String) {
        let p = out(file);
        let (trace, vapa) = (sample("trace.lackey.zst"), sample("vapa.txt"));
        let args =
            ["trace", "import", "--from", "lackey", &trace, "--vapa", &vapa, "--as", role, "-o"];
        let (code, err) = ccsim(&[&args[..], &[p.to_str().unwrap()]].concat());
        assert_eq!(code, 0, "{err}");
        (p, err)
    }

    fn replay(p: &Path) -> ccsim::report::Report {
        run(&ConfigLayers::default(), &Input::File(p.to_owned()), &RunOptions::default())
            .unwrap()
            .report
    }

    // What the sample holds: 100,000 lines, 5 Valgrind lines, 27 accesses split at 4 KiB,
    // 101,345 access pieces (79,026 fetches, 16,010 loads, 6,309 stores), 97 pages touched
    // (65 by data), 9 map lines superseded.
    const PIECES: u64 = 101_345;

    #[test]
    fn host_process_backs_each_captured_page_once() {
        let (p, err) = import("host-process:7", "p.cct");
        assert!(err.contains("5 skipped") && err.contains("97 maps 4K"), "{err}");
        let r = replay(&p);
        assert_eq!(r.accesses.total(), PIECES);
        assert_eq!(
            (r.accesses.fetches, r.accesses.loads, r.accesses.stores),
            (79_026, 16_010, 6_309)
        );
        assert_eq!(r.memory.captured_4k, 97, "pages backed = distinct pages touched");
        assert_eq!((r.faults.raised, r.faults.handled, r.faults.fatal), (0, 0, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
        // Deterministic: a second replay gives the same report.
        assert_eq!(r.to_json().unwrap(), replay(&p).to_json().unwrap());
    }

    #[test]
    fn host_kernel_reaches_backed_pages_through_the_direct_map() {
        let (p, err) = import("host-kernel", "k.cct");
        assert!(err.contains("79001 host-kernel fetches as `work`"), "{err}");
        let r = replay(&p);
        assert_eq!((r.accesses.loads, r.accesses.stores, r.accesses.fetches), (16_010, 6_309, 0));
        assert_eq!(r.accesses.kernel, 16_010 + 6_309);
        assert_eq!(r.memory.captured_4k, 65, "pages backed = distinct data pages");
        assert_eq!((r.faults.raised, r.faults.handled, r.faults.fatal), (0, 0, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
    }

    #[test]
    fn snp_guest_pages_are_faulted_in_validated_and_pass_the_rmp_check() {
        let (p, err) = import("guest:1:snp", "g.cct");
        assert!(err.contains("97 pvalidates"), "{err}");
        let r = replay(&p);
        assert_eq!(r.accesses.total(), PIECES);
        assert_eq!(r.rmp.pvalidate.get("success"), Some(&97));
        assert_eq!(r.rmp.violations.values().sum::<u64>(), 0, "{:?}", r.rmp.violations);
        assert_eq!((r.faults.raised, r.faults.fatal), (0, 0));
        assert_eq!(r.faults.handled, 97, "one #NPF fault-in per page, at its PVALIDATE");
        assert!(r.rmp.guest_checks > 0);
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
    }

    /// The real capture path on this machine: `scripts/capture-lackey.sh` records `/bin/ls` under
    /// Valgrind with its pagemap/kpageflags snapshots, the capture imports with its `vapa.txt`
    /// and replays with every captured page backed once. Needs root (pagemap PFNs) and valgrind;
    /// `.ci/run` installs valgrind. Without root the script must refuse rather than write zeros.
    #[test]
    fn capture_script_records_a_command_that_imports_and_replays() {
        let have = |t: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !(have("valgrind") && have("zstd") && have("python3")) {
            eprintln!("skipped: valgrind, zstd or python3 missing (.ci/run installs them)");
            return;
        }
        let dir = out("live");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/capture-lackey.sh");
        let o = Command::new("sh")
            .arg(&script)
            .arg(&dir)
            .args(["0.05", "--", "/bin/ls", "/"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        if !root {
            assert!(!o.status.success() && err.contains("run as root"), "{err}");
            return;
        }
        assert!(o.status.success(), "{err}");
        let (trace, vapa) = (dir.join("trace.lackey.zst"), dir.join("vapa.txt"));
        let cct = out("live.cct");
        let (code, err) = ccsim(&[
            "trace",
            "import",
            "--from",
            "lackey",
            trace.to_str().unwrap(),
            "--vapa",
            vapa.to_str().unwrap(),
            "--as",
            "host-process:7",
            "-o",
            cct.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        let r = replay(&cct);
        assert!(r.accesses.fetches > 10_000 && r.accesses.loads > 1_000, "{:?}", r.accesses);
        assert!(r.memory.captured_4k > 10, "pages backed: {}", r.memory.captured_4k);
        assert_eq!((r.faults.raised, r.faults.fatal), (0, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
    }

    #[test]
    fn malformed_input_names_file_and_line() {
        let bad = |name: &str, text: &str| {
            let p = out(name);
            std::fs::write(&p, text).unwrap();
            p.display().to_string()
        };
        let vapa = bad("v.txt", "108000 160f33 142 40000086c 1 10\n");
        let o = out("bad.cct").display().to_string();
        // A truncated line, bad hex, a bad size: each names the file and line 2.
        for text in [
            "I  00108000,4\n L 0010",
            "I  00108000,4\n L 00108zz0,4\n",
            "I  00108000,4\n L 00108000,x\n",
        ] {
            let t = bad("t.lackey", text);
            let (code, err) = ccsim(&[
                "trace",
                "import",
                "--from",
                "lackey",
                &t,
                "--as",
                "host-process",
                "-o",
                &o,
            ]);
            assert_eq!(code, 2, "{err}");
            assert!(
                err.contains(&t) && err.contains("line 2") && !err.contains("panicked"),
                "{err}"
            );
        }
        let t = bad("ok.lackey", "I  00108000,4\n");
        let v2 = bad("v2.txt", "# h\n108000 160f33 14x 40000086c 1 10\n");
        let (code, err) = ccsim(&[
            "trace", "import", "--from", "lackey", &t, "--vapa", &v2, "--as", "guest:1", "-o", &o,
        ]);
        assert_eq!(code, 2);
        assert!(err.contains(&v2) && err.contains("line 2: bad hexadecimal pagemap bits"), "{err}");
        let (code, err) =
            ccsim(&["trace", "import", "--from", "lackey", &t, "--as", "host-kernel", "-o", &o]);
        assert_eq!(code, 2);
        assert!(err.contains("needs --vapa"), "{err}");
        let (code, _) = ccsim(&[
            "trace",
            "import",
            "--from",
            "lackey",
            &t,
            "--vapa",
            &vapa,
            "--as",
            "host-kernel",
            "-o",
            &o,
        ]);
        assert_eq!(code, 0);
        assert!(!Path::new(&format!("{o}.tmp")).exists());
    }
}

/// `ccsim trace import --from qemu-memtrace|perf-script` on the real samples in each role,
/// replayed. See: #5
mod import_pairs {
    use ccsim::engine::{ConfigLayers, Input, RunOptions, run};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn sample(f: &str) -> String {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/samples").join(f).display().to_string()
    }

    fn out(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ccsim-import-pairs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn ccsim(args: &[&str]) -> (i32, String) {
        let o = Command::new(env!("CARGO_BIN_EXE_ccsim")).args(args).output().unwrap();
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into())
    }

    fn import(from: &str, file: &str, role: &str, name: &str) -> (PathBuf, String) {
        let p = out(name);
        let (code, err) = ccsim(&[
            "trace",
            "import",
            "--from",
            from,
            &sample(file),
            "--as",
            role,
            "-o",
            p.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        (p, err)
    }

    fn replay(p: &Path) -> ccsim::report::Report {
        run(&ConfigLayers::default(), &Input::File(p.to_owned()), &RunOptions::default())
            .unwrap()
            .report
    }

    // The memtrace sample: 40,003 lines (3 `#`), 27,733 instructions, 1,233 loads and 11,034
    // stores: 9,839 through the direct map, 2,352 user, 76 other kernel; 557 user pages, 577
    // distinct guest frames.
    const MT: &str = "qemu/memtrace.txt.zst";

    #[test]
    fn memtrace_guest_maps_pairs_validates_frames_and_passes_the_rmp() {
        let (p, err) = import("qemu-memtrace", MT, "guest:1:snp", "g.cct");
        assert!(err.contains("maps_4k 579") && err.contains("pvalidates 577"), "{err}");
        assert!(err.contains("work 27733") && err.contains("skipped_no_pa 0"), "{err}");
        let r = replay(&p);
        assert_eq!((r.accesses.loads, r.accesses.stores), (1_233, 11_034));
        assert_eq!(r.rmp.pvalidate.get("success"), Some(&577));
        assert_eq!(r.rmp.violations.values().sum::<u64>(), 0, "{:?}", r.rmp.violations);
        assert_eq!((r.faults.raised, r.faults.handled, r.faults.fatal), (0, 577, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
        let info = ccsim::input::trace_info(&p).unwrap();
        let meta = serde_json::to_string(&info).unwrap();
        assert!(meta.contains("import.skipped_io") && meta.contains("qemu-memtrace"), "{meta}");
    }

    /// A text capture reads the same plain, `.zst`, `.xz` or `.gz` (by extension, as the
    /// ChampSim importer reads binary ones): the shared excerpts come as `.xz`.
    #[test]
    fn text_captures_read_compressed_by_extension() {
        use std::io::{Read as _, Write as _};
        let mut text = Vec::new();
        zstd::Decoder::new(std::fs::File::open(sample(MT)).unwrap())
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
        let plain = out("m.txt");
        std::fs::write(&plain, &text).unwrap();
        let xz = out("m.txt.xz");
        let mut e = liblzma::write::XzEncoder::new(std::fs::File::create(&xz).unwrap(), 6);
        e.write_all(&text).unwrap();
        e.finish().unwrap();
        let gz = out("m.txt.gz");
        let mut e = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        e.write_all(&text).unwrap();
        e.finish().unwrap();
        let summary = |input: &Path, name: &str| {
            let o = out(name);
            let args = ["trace", "import", "--from", "qemu-memtrace", input.to_str().unwrap()];
            let (code, err) =
                ccsim(&[&args[..], &["--as", "guest:1:snp", "-o", o.to_str().unwrap()]].concat());
            assert_eq!(code, 0, "{err}");
            let r = replay(&o);
            (
                err.split_once(": ").map(|(_, s)| s.to_owned()).unwrap(),
                r.accesses.loads,
                r.accesses.stores,
            )
        };
        let want = summary(Path::new(&sample(MT)), "z.cct");
        assert_eq!(want.1 + want.2, 12_267, "{want:?}");
        for (input, name) in [(&plain, "p.cct"), (&xz, "x.cct"), (&gz, "g2.cct")] {
            assert_eq!(summary(input, name), want, "{}", input.display());
        }
    }

    #[test]
    fn memtrace_host_kernel_direct_map_accesses_back_captured_pages() {
        let (p, err) = import("qemu-memtrace", MT, "host-kernel", "k.cct");
        assert!(err.contains("accesses_direct_map 9839") && err.contains("maps_4k 557"), "{err}");
        assert!(err.contains("direct_map_pa_mismatch 0"), "{err}");
        let r = replay(&p);
        assert_eq!((r.accesses.loads, r.accesses.stores), (1_233, 11_034));
        assert_eq!(r.accesses.kernel, 9_839 + 76);
        assert_eq!(r.memory.captured_4k, 577, "pages backed = distinct captured frames");
        assert_eq!((r.faults.raised, r.faults.handled, r.faults.fatal), (0, 0, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
        assert_eq!(r.to_json().unwrap(), replay(&p).to_json().unwrap(), "deterministic");
    }

    #[test]
    fn memtrace_host_process_keeps_user_accesses_and_counts_kernel_lines() {
        let (p, err) = import("qemu-memtrace", MT, "host-process:7", "p.cct");
        assert!(err.contains("skipped_kernel 20000") && err.contains("accesses 2352"), "{err}");
        let r = replay(&p);
        assert_eq!(r.accesses.total(), 2_352);
        assert_eq!(r.memory.captured_4k, 557);
        assert_eq!((r.faults.raised, r.faults.fatal), (0, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
    }

    #[test]
    fn perf_samples_replay_in_host_and_guest_roles() {
        let f = "perf/pagefaults_phys.txt";
        let (p, err) = import("perf-script", f, "host-kernel", "pk.cct");
        assert!(err.contains("accesses 89") && err.contains("demand_paged 66"), "{err}");
        let r = replay(&p);
        assert_eq!(r.accesses.loads, 89);
        assert_eq!(r.memory.captured_4k, 6, "the 6 samples with a phys_addr");
        assert_eq!((r.faults.handled, r.faults.fatal), (66, 0), "one fault-in per page without PA");
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
        let (p, err) = import("perf-script", f, "guest:1:snp", "pg.cct");
        assert!(err.contains("accesses 6") && err.contains("skipped_no_pa 83"), "{err}");
        let r = replay(&p);
        assert_eq!(r.rmp.pvalidate.get("success"), Some(&6));
        assert_eq!((r.accesses.loads, r.faults.fatal), (6, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
    }

    #[test]
    fn execlog_physical_accesses_replay_on_the_host_and_in_a_plain_guest() {
        // 2,000 SeaBIOS instructions, 621 loads and 142 stores, all RAM, on 4 frames.
        let f = "qemu/execlog_head2000.txt";
        let (p, err) = import("qemu-execlog", f, "host-kernel", "ek.cct");
        assert!(err.contains("work 2000") && err.contains("accesses_physical 763"), "{err}");
        let r = replay(&p);
        assert_eq!((r.accesses.loads, r.accesses.stores, r.accesses.kernel), (621, 142, 763));
        assert_eq!(r.memory.captured_4k, 4);
        assert_eq!((r.faults.raised, r.faults.handled, r.faults.fatal), (0, 0, 0));
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
        let (p, _) = import("qemu-execlog", f, "guest:1:plain", "eg.cct");
        let r = replay(&p);
        assert_eq!((r.accesses.loads, r.accesses.stores), (621, 142));
        assert_eq!((r.faults.raised, r.faults.handled, r.faults.fatal), (0, 4, 0), "4 fault-ins");
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
        let (_, err) = import("qemu-execlog", f, "host-process:3", "ep.cct");
        assert!(err.contains("skipped_physical 763"), "{err}");
    }

    #[test]
    fn malformed_input_names_file_and_line_of_the_decompressed_text() {
        let o = out("bad.cct").display().to_string();
        for (from, name, text, line) in [
            ("qemu-memtrace", "m.txt", "# h\n0 L 8 1 1000 1000\n0 L 8 1 1000 zz\n", "line 3,"),
            (
                "perf-script",
                "p.txt",
                "a 1 1.5: e: 1000 s 2000 s 0\na 1 1.5: e: 1000 s 2000\n",
                "line 2,",
            ),
        ] {
            let t = out(name).display().to_string();
            std::fs::write(&t, text).unwrap();
            let z = format!("{t}.zst");
            std::fs::write(&z, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
            for input in [&t, &z] {
                let (code, err) = ccsim(&[
                    "trace",
                    "import",
                    "--from",
                    from,
                    input,
                    "--as",
                    "host-kernel",
                    "-o",
                    &o,
                ]);
                assert_eq!(code, 2, "{err}");
                assert!(err.contains(input.as_str()) && err.contains(line), "{err}");
                assert!(!err.contains("panicked"), "{err}");
            }
        }
        let (code, err) = ccsim(&[
            "trace",
            "import",
            "--from",
            "qemu-memtrace",
            &sample(MT),
            "--vapa",
            "v",
            "--as",
            "guest:1",
            "-o",
            &o,
        ]);
        assert_eq!(code, 2);
        assert!(err.contains("--vapa is for lackey"), "{err}");
    }
}

/// `ccsim trace export --to champsim` and `trace import --from champsim`: the round trip of
/// the real lackey sample, the committed ChampSim sample, and malformed files. See: #5
mod champsim {
    use ccsim::input::open;
    use sim_core::{Event, Record};
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    fn out(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ccsim-champsim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn ccsim(args: &[&str]) -> (i32, String) {
        let o = Command::new(env!("CARGO_BIN_EXE_ccsim")).args(args).output().unwrap();
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into())
    }

    fn ok(args: &[&str]) -> String {
        let (code, err) = ccsim(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        err
    }

    /// (kind, address) of every fetch, load and store of a trace, in order.
    fn accesses(p: &Path) -> Vec<(char, u64)> {
        let (_, it) = open(p).unwrap();
        it.filter_map(|r| match r.unwrap().record {
            Record::Event(te) => match te.event {
                Event::Fetch { addr, .. } => Some(('I', addr.raw())),
                Event::Load { addr, .. } => Some(('L', addr.raw())),
                Event::Store { addr, .. } => Some(('S', addr.raw())),
                _ => None,
            },
            _ => None,
        })
        .collect()
    }

    /// The lackey sample imported as host-process:7.
    fn lackey_cct(name: &str) -> PathBuf {
        let p = out(name);
        let t = root().join("traces/samples/lackey-sort/trace.lackey.zst");
        let args = ["trace", "import", "--from", "lackey", t.to_str().unwrap(), "--as"];
        ok(&[&args[..], &["host-process:7", "-o", p.to_str().unwrap()]].concat());
        p
    }

    fn export(input: &Path, name: &str) -> (PathBuf, String) {
        let o = out(name);
        let err = ok(&[
            "trace",
            "export",
            "--to",
            "champsim",
            input.to_str().unwrap(),
            "-o",
            o.to_str().unwrap(),
        ]);
        (o, err)
    }

    fn import(input: &Path, extra: &[&str], name: &str) -> (i32, String, PathBuf) {
        let o = out(name);
        let args = ["trace", "import", "--from", "champsim", input.to_str().unwrap()];
        let rest = ["--as", "host-process:7", "-o", o.to_str().unwrap()];
        let (code, err) = ccsim(&[&args[..], extra, &rest[..]].concat());
        (code, err, o)
    }

    #[test]
    fn import_of_export_preserves_the_lackey_access_stream() {
        let src = lackey_cct("rt-src.cct");
        let before = accesses(&src);
        for ext in ["champsimtrace", "champsimtrace.xz", "champsimtrace.gz"] {
            let (c, err) = export(&src, &format!("rt.{ext}"));
            assert!(err.contains("2 spill records"), "{err}");
            let (code, err, back) = import(&c, &[], &format!("rt-{ext}.cct"));
            assert_eq!(code, 0, "{err}");
            let after = accesses(&back);
            // Loads and stores: the same addresses in the same order.
            let data =
                |v: &[(char, u64)]| v.iter().filter(|a| a.0 != 'I').copied().collect::<Vec<_>>();
            assert_eq!(data(&before), data(&after), "{ext}");
            // Fetches: the same, plus one repeat of the ip per spill record.
            let fetches = |v: &[(char, u64)]| v.iter().filter(|a| a.0 == 'I').count();
            assert_eq!(fetches(&after), fetches(&before) + 2);
            let n = before.len();
            // Dropping the two spill fetches (each follows a load or store and repeats the
            // previous fetch's ip) gives the original stream back exactly.
            let mut merged = Vec::with_capacity(n);
            let mut last_ip = None;
            let mut prev_data = false;
            for a in &after {
                if a.0 == 'I' && prev_data && Some(a.1) == last_ip && merged.len() < n {
                    // Candidate spill: keep it only if the original has a fetch here.
                    if before[merged.len()] != *a {
                        continue;
                    }
                }
                if a.0 == 'I' {
                    last_ip = Some(a.1);
                }
                prev_data = a.0 != 'I';
                merged.push(*a);
            }
            assert_eq!(merged, before, "{ext}");
        }
    }

    #[test]
    fn champsim_sample_is_what_the_exporter_writes() {
        let (c, _) = export(&lackey_cct("s-src.cct"), "s.champsimtrace");
        let sample = root().join("traces/samples/champsim/lackey-sort.champsimtrace.xz");
        let mut committed = Vec::new();
        liblzma::read::XzDecoder::new(std::fs::File::open(&sample).unwrap())
            .read_to_end(&mut committed)
            .unwrap();
        assert_eq!(committed.len(), 79_028 * 64);
        assert_eq!(std::fs::read(&c).unwrap(), committed);
        // The sample runs: 79,028 fetches, 16,010 loads, 6,309 stores, no fault.
        let (code, err, p) = import(&sample, &[], "sample.cct");
        assert_eq!(code, 0, "{err}");
        let r = ccsim::engine::run(
            &ccsim::engine::ConfigLayers::default(),
            &ccsim::engine::Input::File(p),
            &ccsim::engine::RunOptions::default(),
        )
        .unwrap()
        .report;
        assert_eq!(
            (r.accesses.fetches, r.accesses.loads, r.accesses.stores),
            (79_028, 16_010, 6_309)
        );
        assert_eq!(r.faults.fatal, 0);
    }

    fn write(name: &str, bytes: &[u8]) -> PathBuf {
        let p = out(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn expect_error(input: &Path, extra: &[&str], needles: &[&str]) {
        let (code, err, o) = import(input, extra, "bad.cct");
        assert_eq!(code, 2, "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains(input.to_str().unwrap()), "{err} lacks the file name");
        for n in needles {
            assert!(err.contains(n), "{err:?} lacks {n:?}");
        }
        assert!(!o.exists(), "no output on error");
    }

    #[test]
    fn malformed_files_name_the_file_and_byte_offset() {
        // Three whole records and 10 bytes: truncated at byte 192.
        let mut rec = [0u8; 64];
        rec[0] = 0x10;
        rec[32] = 0x20;
        let raw: Vec<u8> = rec.iter().copied().cycle().take(3 * 64 + 10).collect();
        expect_error(&write("t.champsim", &raw), &[], &["byte 192: truncated record"]);
        // 3 * 64 = 192 bytes read as 96-byte cloudsuite records: 2 whole ones, no tail.
        let whole = write("w.champsim", &raw[..192]);
        let (code, err, _) = import(&whole, &["--format", "cloudsuite"], "w.cct");
        assert_eq!(code, 0, "{err}");
        expect_error(
            &write("c.champsim", &raw[..128]),
            &["--format", "cloudsuite"],
            &["byte 96: truncated record", "96-byte"],
        );
        // A branch flag of 2 (a text file, say).
        expect_error(&write("text.champsim", &[b'x'; 64]), &[], &["byte 8: is_branch is 120"]);
        // Compressed: cut short, corrupted, and not compressed at all.
        let mut xz = Vec::new();
        {
            let mut e = liblzma::write::XzEncoder::new(&mut xz, 6);
            for _ in 0..2000 {
                e.write_all(&rec).unwrap();
            }
            e.finish().unwrap();
        }
        expect_error(&write("cut.xz", &xz[..xz.len() / 2]), &[], &["I/O error", "decompressed"]);
        let mut bad = xz.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0xff;
        expect_error(&write("flip.xz", &bad), &[], &["byte ", "I/O error"]);
        expect_error(&write("plain.xz", &raw[..192]), &[], &["byte 0: I/O error"]);
        let mut gz = Vec::new();
        {
            let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::new(6));
            for _ in 0..2000 {
                e.write_all(&rec).unwrap();
            }
            e.finish().unwrap();
        }
        expect_error(&write("cut.gz", &gz[..gz.len() / 2]), &[], &["I/O error", "decompressed"]);
        expect_error(&write("plain.gz", &raw[..192]), &[], &["byte 0: I/O error"]);
        // Option errors.
        let (code, err, _) = import(&whole, &["--format", "sparc"], "o.cct");
        assert_eq!(code, 2);
        assert!(err.contains("--format") && err.contains("cloudsuite"), "{err}");
    }
}

/// `ccsim trace import --from kvm-trace`: KVM tracepoint text replayed as one VM (the NPF, the
/// SPTE KVM installed for it on a captured host frame, the next access through it), and the
/// role and vendor errors. See: #5
mod kvm_trace {
    use ccsim::engine::{ConfigLayers, Input, RunOptions, run};
    use std::process::Command;

    const TRACE: &str = "cpus=2
 qemu-system-x86-3426  [000]  1697.576000: kvm_exit: vcpu 0 reason npf rip 0x1 info1 0x0000000100000004 info2 0x0000000080001000 intr_info 0x00000000 error_code 0x00000000 requests 0x0
 qemu-system-x86-3426  [000]  1697.576001: kvm_page_fault: vcpu 0 rip 0xffffffff81000000 address 0x0000000080001000 error_code 0x100000006
 qemu-system-x86-3426  [000]  1697.576002: kvm_mmu_spte_requested: gfn 80001 pfn 7654321 level 1
 qemu-system-x86-3426  [000]  1697.576003: kvm_page_fault: vcpu 0 rip 0xffffffff81000004 address 0x0000000080001008 error_code 0x100000004
CPU:1 [12 EVENTS DROPPED]
";

    fn ccsim(args: &[&str]) -> (i32, String) {
        let o = Command::new(env!("CARGO_BIN_EXE_ccsim")).args(args).output().unwrap();
        (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stderr).into())
    }

    #[test]
    fn import_and_replay() {
        let dir = std::env::temp_dir().join(format!("ccsim-kvm-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("kvm.txt");
        std::fs::write(&input, TRACE).unwrap();
        let out = dir.join("kvm.cct");
        let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
        let (code, err) =
            ccsim(&["trace", "import", "--from", "kvm-trace", i, "--as", "guest:1:plain", "-o", o]);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("2 accesses, 1 stage-2 maps") && err.contains("12 events lost"),
            "{err}"
        );
        let r = run(&ConfigLayers::default(), &Input::File(out.clone()), &RunOptions::default())
            .unwrap()
            .report;
        // The first access faults (no SPTE yet: the exit the trace recorded); KVM's SPTE maps
        // the GFN to a captured host frame, backed on first use; the second access goes through.
        assert_eq!((r.faults.raised, r.accesses.loads, r.accesses.stores), (1, 1, 1));
        assert_eq!(r.memory.captured_4k, 1);
        assert!(r.not_modelled.is_empty(), "{:?}", r.not_modelled);
        // A host role, an unknown vendor, and a fault with no vendor known: exit 2, named.
        let (code, err) =
            ccsim(&["trace", "import", "--from", "kvm-trace", i, "--as", "host-kernel", "-o", o]);
        assert_eq!(code, 2);
        assert!(err.contains("--as guest:N"), "{err}");
        let (code, err) = ccsim(&[
            "trace",
            "import",
            "--from",
            "kvm-trace",
            i,
            "--as",
            "guest:1",
            "--vendor",
            "arm",
            "-o",
            o,
        ]);
        assert_eq!(code, 2);
        assert!(err.contains("amd or intel"), "{err}");
        let bare = dir.join("bare.txt");
        std::fs::write(&bare, TRACE.lines().skip(2).collect::<Vec<_>>().join("\n")).unwrap();
        let b = bare.to_str().unwrap();
        let (code, err) =
            ccsim(&["trace", "import", "--from", "kvm-trace", b, "--as", "guest:1", "-o", o]);
        assert_eq!(code, 2);
        assert!(err.contains("line 1: kvm_page_fault before the vendor is known"), "{err}");
    }
}

#[path = "it/sweep.rs"]
mod sweep;

/// `ccsim explore`: the races of spec/tdx.md §3 fail without their fix and pass with it; a
/// failing schedule replays; the schedule count follows the preemption bound. See: #8
mod explore {
    use ccsim::engine::ConfigLayers;
    use ccsim::explore::{ExploreOptions, explore, replay};
    use std::path::{Path, PathBuf};
    use std::process::Command;

    fn race(f: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/scenarios/tdx/races").join(f)
    }

    fn with(sets: &[&str]) -> ConfigLayers {
        ConfigLayers { sets: sets.iter().map(|s| (*s).to_owned()).collect(), ..Default::default() }
    }

    /// Each race: without its fix some schedule hits KVM_BUG_ON; with it every schedule within
    /// the bound passes (and there are several).
    #[test]
    fn races_fail_without_their_fix_and_pass_with_it() {
        let opts = ExploreOptions::default();
        for (file, broken) in [
            ("seed-2m-vs-4k.ccs", "host.tdx_spte_protocol=naive"),
            ("sept-add-vs-aug-4k.ccs", "host.tdx_spte_protocol=naive"),
            ("zap-vs-zero-step.ccs", "host.tdx_busy_retry=false"),
        ] {
            let bad = explore(&race(file), &with(&[broken]), &opts).unwrap();
            let f = bad.failures.first().unwrap_or_else(|| panic!("{file}: no failing schedule"));
            assert!(f.reason.contains("KVM_BUG_ON"), "{file}: {}", f.reason);
            let good = explore(&race(file), &with(&[]), &opts).unwrap();
            assert!(good.failures.is_empty(), "{file}: {:?}", good.failures);
            assert!(good.complete && good.schedules > 10, "{file}: {} schedules", good.schedules);
        }
    }

    /// The naive seed race fails exactly as spec/tdx.md §6 V17 (a) says: an AUG under a parent
    /// the S-EPT does not have yet returns EPT_WALK_FAILED (0xC0000B0000000001), and replaying
    /// the schedule reproduces it.
    #[test]
    fn a_failing_schedule_replays_to_the_same_failure() {
        let layers = with(&["host.tdx_spte_protocol=naive"]);
        let r = explore(&race("seed-2m-vs-4k.ccs"), &layers, &ExploreOptions::default()).unwrap();
        let f = &r.failures[0];
        assert!(f.reason.contains("0xc0000b0000000001"), "{}", f.reason);
        let (log, again) = replay(&race("seed-2m-vs-4k.ccs"), &layers, &f.schedule).unwrap();
        assert_eq!(again.as_deref(), Some(f.reason.as_str()));
        assert_eq!(log.iter().filter(|l| !l.ends_with("blocked")).count(), f.schedule.len());
        // The fixed protocol passes the same schedule's prefix without a bug.
        let (_, fixed) = replay(&race("seed-2m-vs-4k.ccs"), &with(&[]), &[]).unwrap();
        assert_eq!(fixed, None);
    }

    /// Two programs of two atomic steps each: 2 schedules without preemption (who goes first),
    /// 4 with one preemption, all 6 interleavings with two (iterative context bounding).
    #[test]
    fn schedule_count_follows_the_preemption_bound() {
        let dir = std::env::temp_dir().join(format!("ccsim-explore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("two.ccs");
        std::fs::write(
            &p,
            "machine preset=tiny\nprogram a\n  c0 host work 1\n  c0 host work 1\nend\nprogram b\n  c1 host work 1\n  c1 host work 1\nend\n",
        )
        .unwrap();
        for (bound, want) in [(0, 2), (1, 4), (2, 6), (3, 6)] {
            let opts = ExploreOptions { bound, ..ExploreOptions::default() };
            let r = explore(&p, &ConfigLayers::default(), &opts).unwrap();
            assert_eq!((r.schedules, r.complete), (want, true), "bound {bound}");
        }
    }

    /// Exit status: 1 for a failing schedule, 0 when all pass, 2 for a file without programs.
    #[test]
    fn cli_exit_status() {
        let run = |args: &[&str]| {
            let o = Command::new(env!("CARGO_BIN_EXE_ccsim")).args(args).output().unwrap();
            (o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned())
        };
        let seed = race("seed-2m-vs-4k.ccs").display().to_string();
        let (code, out) = run(&["explore", &seed, "--protocol", "naive"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("FAIL schedule") && out.contains("--replay"), "{out}");
        let (code, out) = run(&["explore", &seed]);
        assert_eq!(code, 0, "{out}");
        let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces/scenarios/tdx/v1-aug-4k.ccs");
        let (code, _) = run(&["explore", &v1.display().to_string()]);
        assert_eq!(code, 2);
    }
}

/// An Intel host has no RMP (spec/tdx.md: TDX protects private memory with the PAMT and
/// key IDs, not with a reverse map checked on host accesses): the same host stores that an
/// AMD host checks against the RMP, reading an entry for each, meet no check stage on `spr`,
/// and no RMP cycles are charged. (Until this stop an Intel host still read RMP entries.)
mod intel_host {
    use ccsim::engine::{ConfigLayers, Input, RunOptions, run};

    fn rmp_of(preset: &str) -> (u64, u64, u64) {
        let dir = std::env::temp_dir().join(format!("ccsim-intel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("stores-{preset}.ccs"));
        let mut text = format!("machine preset={preset} cpus=1 memory=8G\n");
        for i in 0..64u64 {
            text.push_str(&format!("c0 host store phys:{:#x} 8\n", 0x1_0000_0000u64 + i * 0x10000));
        }
        std::fs::write(&p, text).unwrap();
        let r =
            run(&ConfigLayers::default(), &Input::File(p), &RunOptions::default()).unwrap().report;
        assert_eq!(r.accesses.stores, 64, "{preset}");
        (r.rmp.checks, r.rmp.entry_reads, r.cycles.rmp_check)
    }

    #[test]
    fn host_stores_meet_the_rmp_on_amd_only() {
        let (checks, reads, cycles) = rmp_of("zen4");
        // One check per TLB fill (the entry keeps the result), so fewer than the stores.
        assert!(checks > 0 && reads > 0 && cycles > 0, "zen4: {checks} {reads} {cycles}");
        for intel in ["spr", "emr", "gnr", "skylake-sp"] {
            assert_eq!(rmp_of(intel), (0, 0, 0), "{intel}");
        }
    }
}
