//! Tests of the `.ccs` text scenario format: round trips, example scenarios, every error with
//! its `FILE:LINE:COL`, bounded streaming, and the reference doc kept in step with the
//! vocabulary.

use crate::common::{arb_record, arb_records};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use sim_core::{Check, Event, Record, StateItem};
use std::collections::BTreeSet;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use traces::ccs::{self, ErrorKind, parse_reader, parse_str, write_record, write_records};

fn records(text: &str) -> Vec<Record> {
    match parse_str(text, "t.ccs") {
        Ok(v) => v.into_iter().map(|l| l.record).collect(),
        Err(e) => panic!("{e}\n--- text ---\n{text}"),
    }
}

/// The error of parsing `text` as `t.ccs`, as its display string.
fn error(text: &str) -> String {
    match parse_str(text, "t.ccs") {
        Ok(r) => panic!("expected an error, parsed {r:?}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Issue #2 "Tests": any event sequence (and any record stream the grammar accepts)
    /// round-trips binary → text → binary unchanged, byte for byte. See: #2
    #[test]
    fn binary_text_binary(rs in arb_records(), enc in prop_oneof![
        Just(traces::cct::Encoding::Default),
        Just(traces::cct::Encoding::Small),
        Just(traces::cct::Encoding::Uncompressed),
    ]) {
        use traces::cct::{Metadata, Reader, Writer};
        let meta = Metadata { machine: "zen4".into(), ..Metadata::default() };
        let mut w = Writer::new(Vec::new(), &meta, enc).unwrap();
        for r in &rs {
            w.write(r).unwrap();
        }
        let bin = w.finish().unwrap();
        let decoded: Vec<Record> = Reader::new(bin.as_slice()).unwrap().map(Result::unwrap).collect();
        prop_assert_eq!(&decoded, &rs);
        let text = write_records(&decoded);
        let back: Vec<Record> = parse_str(&text, "rt.ccs")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?
            .into_iter()
            .map(|l| l.record)
            .collect();
        let mut w2 = Writer::new(Vec::new(), &meta, enc).unwrap();
        for r in &back {
            w2.write(r).unwrap();
        }
        prop_assert_eq!(w2.finish().unwrap(), bin);
    }

    #[test]
    fn records_text_records(rs in arb_records()) {
        let text = write_records(&rs);
        let back = parse_str(&text, "rt.ccs").map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let back: Vec<Record> = back.into_iter().map(|l| l.record).collect();
        prop_assert_eq!(&back, &rs);
        // The printed form is canonical: printing again gives the same text.
        prop_assert_eq!(write_records(&back), text);
    }

    #[test]
    fn every_record_passes_its_own_checks(r in arb_record()) {
        prop_assert!(ccs::check_record(&r).is_ok(), "{r:?}");
    }

    #[test]
    fn single_records_round_trip(r in arb_record()) {
        // Put each record where the grammar allows it.
        let mut rs = Vec::new();
        match &r {
            Record::Expect { at_end: false, .. } => rs.push(Record::Event(sim_core::TimedEvent {
                time: None,
                agent: sim_core::Agent::host(0),
                event: Event::FlushAll {},
            })),
            Record::ProgramEnd => rs.push(Record::ProgramBegin("p".into())),
            _ => {}
        }
        rs.push(r.clone());
        if matches!(r, Record::ProgramBegin(_)) {
            rs.push(Record::ProgramEnd);
        }
        prop_assert_eq!(records(&write_records(&rs)), rs);
    }

    /// Lines made of grammar words in any order never panic the parser.
    #[test]
    fn word_salad_never_panics(lines in proptest::collection::vec(
        proptest::collection::vec(proptest::sample::select(vec![
            "c0", "host", "vm1/v0", "dev:0x10", "fw:asp", "@5", "load", "store", "map", "rmpupdate",
            "psmash", "expect", "final", "state", "rmp", "directmap", "program", "end", "version",
            "1", "2.0", "machine", "vm", "snp", "k=v", "spa=0x1000", "size=2M", "0x200000",
            "phys:0x1000", "gpa:", "=", "#", "é", "fault", "pf", "assigned", "counter", "eq=1",
        ]), 0..8), 0..8)) {
        let text: String = lines.iter().map(|l| l.join(" ") + "\n").collect();
        let _ = parse_str(&text, "salad.ccs");
    }
}

/// Sample a strategy deterministically.
fn sample<S: Strategy>(s: &S, n: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::deterministic();
    (0..n).map(|_| s.new_tree(&mut runner).expect("strategy").current()).collect()
}

#[test]
fn strategies_cover_every_keyword() {
    let mut ev = BTreeSet::new();
    let mut st = BTreeSet::new();
    let mut ch = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    let mut all: Vec<Record> = sample(&arb_record(), 6000);
    all.extend(sample(&arb_records(), 300).into_iter().flatten());
    for r in &all {
        match r {
            Record::Event(e) => {
                ev.insert(e.event.keyword());
                kinds.insert(if e.time.is_some() { "timed" } else { "untimed" });
            }
            Record::State(s) => {
                st.insert(s.keyword());
            }
            Record::Expect { check, at_end } => {
                ch.insert(check.keyword());
                kinds.insert(if *at_end { "final" } else { "expect" });
            }
            Record::Setting(s) => {
                kinds.insert(if s.section == "vm" { "vm" } else { "setting" });
            }
            Record::ProgramBegin(_) => {
                kinds.insert("program");
            }
            Record::ProgramEnd => {
                kinds.insert("end");
            }
        }
    }
    let want = |kws: &[(&'static str, u16)]| kws.iter().map(|(k, _)| *k).collect::<BTreeSet<_>>();
    assert_eq!(ev, want(Event::KEYWORDS));
    assert_eq!(st, want(StateItem::KEYWORDS));
    assert_eq!(ch, want(Check::KEYWORDS));
    assert_eq!(kinds.len(), 8, "{kinds:?}");
}

// ---------------------------------------------------------------------------------------------
// The grammar

#[test]
fn a_full_scenario_reads_into_records() {
    let text = "\
# comment line
version 1.0

machine preset=zen4 cpus=2 memory=8G   # trailing comment
host physmap=2M policy=split-on-assign
vm 1 snp asid=1 memory=1G
state rmp spa=0x40200000 assigned asid=1 gpa=0x200000
c0 host rmpupdate spa=0x40200000 assigned asid=1 gpa=0x200000 size=4K
expect rc 0
@1200 c1 host store phys:0x40201000 8          # kernel write through the direct map
expect no-fault
c1 vm1/v0 load 0x7000 8
dev:0x100 dma-read 0x1000 64
fw:asp rmpread spa=0x1000
program vcpu0
  c0 vm1/v0 store 0x7000 8
  expect no-fault
end
expect final counter rmp.violations eq=0
";
    let located = parse_str(text, "full.ccs").unwrap();
    let lines: Vec<u32> = located.iter().map(|l| l.line).collect();
    assert_eq!(lines, [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    let printed: String = located
        .iter()
        .map(|l| {
            let mut s = String::new();
            write_record(&l.record, &mut s);
            s
        })
        .collect();
    assert_eq!(
        printed,
        "\
machine preset=zen4 cpus=2 memory=8G
host physmap=2M policy=split-on-assign
vm 1 snp asid=1 memory=1G
state rmp spa=0x40200000 assigned asid=1 gpa=0x200000
c0 host rmpupdate spa=0x40200000 assigned asid=1 gpa=0x200000
expect rc 0
@1200 c1 host store phys:0x40201000 8
expect no-fault
c1 vm1/v0 load gva:0x7000 8
dev:0x100 dma-read iova:0x1000 64
fw:asp rmpread spa=0x1000
program vcpu0
c0 vm1/v0 store gva:0x7000 8
expect no-fault
end
expect final counter rmp.violations eq=0
"
    );
}

#[test]
fn bare_addresses_take_the_agents_kind() {
    let rs = records(
        "c0 host load 0x10 1\nc0 proc:7 load 0x10 1\nc0 vm1/v0 load 0x10 1\n\
         dev:0x1 dma-write 0x10 1\nfw:tdx load 0x10 1\nc0 vm1/v0 load gpa:0x10 1\n",
    );
    let kinds: Vec<String> = rs
        .iter()
        .map(|r| {
            let mut s = String::new();
            write_record(r, &mut s);
            s.split_whitespace().rev().nth(1).unwrap().split(':').next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kinds, ["hva", "hva", "gva", "iova", "phys", "gpa"]);
}

#[test]
fn crlf_line_endings_and_no_final_newline() {
    let rs = records("c0 host flush-all\r\nexpect no-fault");
    assert_eq!(rs.len(), 2);
}

#[test]
fn version_lines() {
    assert!(records("version 1\n").is_empty());
    assert!(records("# header\n\nversion 1.0\n").is_empty());
    assert_eq!(
        error("version 2\n"),
        "t.ccs:1:9: scenario format version 2 is not supported: this ccsim reads version 1"
    );
    assert_eq!(
        error("version 1.7\n"),
        format!(
            "t.ccs:1:9: scenario needs format version 1.7; this ccsim reads up to 1.{} \
             (upgrade ccsim)",
            sim_core::FORMAT_MINOR
        )
    );
    assert_eq!(
        error("version one\n"),
        "t.ccs:1:9: malformed version `one` (expected `version 1` or `version 1.MINOR`)"
    );
    assert_eq!(
        error("machine cpus=2\nversion 1\n"),
        "t.ccs:2:1: `version` must be the first line of the scenario"
    );
}

// ---------------------------------------------------------------------------------------------
// Every error, with its line and column

#[test]
fn unknown_keywords_suggest_the_nearest() {
    assert_eq!(
        error("c0 host rmpupdat spa=0x1000\n"),
        "t.ccs:1:9: unknown event `rmpupdat`; did you mean `rmpupdate`?"
    );
    assert_eq!(error("c0 host frobnicate\n"), "t.ccs:1:9: unknown event `frobnicate`");
    assert_eq!(
        error("c0 host flush-all\nexpect no-falt\n"),
        "t.ccs:2:8: unknown check `no-falt`; did you mean `no-fault`?"
    );
    assert_eq!(
        error("state rmpp spa=0x1000\n"),
        "t.ccs:1:7: unknown state item `rmpp`; did you mean `rmp`?"
    );
    assert_eq!(
        error("\n  expcet no-fault\n"),
        "t.ccs:2:3: expected an agent (cN host, cN proc:PID, cN vmV/vK, dev:ID, fw:asp, fw:tdx) \
         or a line keyword (version, machine, host, vm, state, expect, program, end), found \
         `expcet`; did you mean `expect`?"
    );
    assert_eq!(
        error("store phys:0x1000 8\n"),
        "t.ccs:1:1: event `store` needs an agent before it, e.g. `c0 host store …`"
    );
}

#[test]
fn agent_errors() {
    assert_eq!(
        error("c0 vm1/v0/vmpl4 load 0x10 8\n"),
        "t.ccs:1:4: bad agent: expected context (host, proc:PID, vmN/vK[/vmplL|/vtlL]), found \
         \"vm1/v0/vmpl4\""
    );
    assert_eq!(
        error("dev:zz load 0x10 8\n"),
        "t.ccs:1:1: bad agent: expected device id, found \"dev:zz\""
    );
    assert_eq!(error("c0 host\n"), "t.ccs:1:9: agent `c0 host` needs an event after it");
    assert_eq!(
        error("@12\n"),
        "t.ccs:1:5: bad agent: expected agent after the cycle stamp, found \"\""
    );
}

#[test]
fn malformed_numbers_and_fields() {
    assert_eq!(
        error("c0 host load phys:0x1g 8\n"),
        "t.ccs:1:14: field `addr`: malformed integer: \"0x1g\""
    );
    assert_eq!(
        error("c0 host load phys:0x10000000000000 8\n"),
        "t.ccs:1:14: field `addr`: physical address out of range: \"0x10000000000000\""
    );
    assert_eq!(
        error("@1x c0 host flush-all\n"),
        "t.ccs:1:1: bad cycle stamp: malformed integer: \"1x\""
    );
    assert_eq!(
        error("c0 host rmpupdate spa=0x1000 asid=zz\n"),
        "t.ccs:1:35: field `asid`: malformed integer: \"zz\""
    );
    assert_eq!(
        error("c0 host load 0x10 8 bogus=1\n"),
        "t.ccs:1:21: `load` has no field `bogus` (usage: load <addr> <size>)"
    );
    assert_eq!(
        error("c0 host rmpupdate spa=0x1000 asid=1 asid=2\n"),
        "t.ccs:1:37: field `asid` given twice"
    );
    assert_eq!(
        error("c0 host rmpupdate spa=0x1000 size=3M\n"),
        "t.ccs:1:35: field `size`: malformed page size (4K/2M/1G): \"3M\""
    );
    assert_eq!(
        error("c0 vm1/v0 rmpadjust 0x1000 vmpl perms=7\n"),
        "t.ccs:1:28: field `vmpl` needs a value (`vmpl=…`)"
    );
}

#[test]
fn missing_fields() {
    let usage = Event::usage("store").unwrap();
    assert_eq!(
        error("c0 host store 0x10\n"),
        format!("t.ccs:1:9: `store` needs size (usage: {usage})")
    );
    let usage = Event::usage("psmash").unwrap();
    assert_eq!(
        error("c0 host psmash\n"),
        format!("t.ccs:1:9: `psmash` needs spa=… (usage: {usage})")
    );
    assert_eq!(
        error("state\n"),
        "t.ccs:1:7: `state` needs an item: one of rmp, td, sept, pamt, directmap, map"
    );
}

#[test]
fn alignment_errors() {
    assert_eq!(
        error("c0 host rmpupdate spa=0x40200800 assigned\n"),
        "t.ccs:1:23: `rmpupdate` spa=0x40200800 is not 4K-aligned"
    );
    assert_eq!(
        error("c0 host rmpupdate spa=0x40201000 size=2M\n"),
        "t.ccs:1:23: `rmpupdate` spa=0x40201000 is not 2M-aligned"
    );
    assert_eq!(
        error("c0 host rmpupdate spa=0x40000000 size=1G\n"),
        "t.ccs:1:39: `rmpupdate` size=1G: RMP entries are 4K or 2M"
    );
    assert_eq!(
        error("c0 host psmash spa=0x40201000\n"),
        "t.ccs:1:20: `psmash` spa=0x40201000 is not 2M-aligned"
    );
    assert_eq!(error("state rmp spa=0x1001\n"), "t.ccs:1:15: `rmp` spa=0x1001 is not 4K-aligned");
    assert_eq!(
        error("state rmp spa=0x1000 size=2M\n"),
        "t.ccs:1:15: `rmp` spa=0x1000 is not 2M-aligned"
    );
    assert_eq!(
        error("state directmap spa=0x1000 size=2M\n"),
        "t.ccs:1:21: `directmap` spa=0x1000 is not 2M-aligned"
    );
    assert_eq!(
        error("state directmap spa=0x0 size=2M len=0x1000\n"),
        "t.ccs:1:37: `directmap` len=0x1000 must be a non-zero multiple of 2M"
    );
    assert_eq!(
        error("state directmap spa=0xfffffffe00000 size=2M len=0x400000\n"),
        "t.ccs:1:49: `directmap` range 0xfffffffe00000+0x400000 passes the 52-bit \
         physical-address limit"
    );
    assert_eq!(
        error("c0 host map hva:0x200000 phys:0x1000 2M\n"),
        "t.ccs:1:26: `map` pa=0x1000 is not 2M-aligned"
    );
    assert_eq!(
        error("state map hva:0x1000 phys:0x200000 2M\n"),
        "t.ccs:1:11: `map` va=0x1000 is not 2M-aligned"
    );
    assert_eq!(
        error("c0 host thp-split hva:0x1000\n"),
        "t.ccs:1:19: `thp-split` va=0x1000 is not 2M-aligned"
    );
    assert_eq!(
        error("state map 0x1000 phys:0x1000 4K\n"),
        "t.ccs:1:11: `map` va needs an address prefix here (phys:, gpa:, gva:, hva:, iova:), \
         found `0x1000`"
    );
}

#[test]
fn expect_errors() {
    assert_eq!(
        error("machine cpus=1\nexpect no-fault\n"),
        "t.ccs:2:1: `expect` has no event before it to check (write `expect final …` to check \
         the end state)"
    );
    assert!(parse_str("expect final no-fault\n", "t.ccs").is_ok());
    assert_eq!(
        error("c0 host flush-all\nexpect\n"),
        "t.ccs:2:8: `expect` needs a check: one of no-fault, fault, rc, rmp, counter, directmap, regs, sept, pamt, td"
    );
    assert_eq!(
        error("expect final\n"),
        "t.ccs:1:14: `expect` needs a check: one of no-fault, fault, rc, rmp, counter, directmap, regs, sept, pamt, td"
    );
    let usage = Check::usage("rmp").unwrap();
    assert_eq!(
        error("c0 host flush-all\nexpect rmp spa=0x1000\n"),
        format!(
            "t.ccs:2:8: `expect rmp` checks nothing: give at least one field to compare \
             (usage: {usage})"
        )
    );
    let usage = Check::usage("counter").unwrap();
    assert_eq!(
        error("expect final counter rmp.violations\n"),
        format!(
            "t.ccs:1:14: `expect counter` checks nothing: give at least one field to compare \
             (usage: {usage})"
        )
    );
}

#[test]
fn header_and_setting_errors() {
    assert_eq!(
        error("c0 host flush-all\nstate rmp spa=0x1000 assigned\n"),
        "t.ccs:2:1: `state` belongs in the header, before the first event, expect or program \
         (line 1)"
    );
    assert_eq!(
        error("c0 host flush-all\nmachine cpus=2\n"),
        "t.ccs:2:1: `machine` belongs in the header, before the first event, expect or program \
         (line 1)"
    );
    assert_eq!(error("machine\n"), "t.ccs:1:9: `machine` needs at least one key=value setting");
    assert_eq!(
        error("host physmap\n"),
        "t.ccs:1:6: `host` expects key=value settings, found `physmap`"
    );
    assert_eq!(
        error("host physmap=\n"),
        "t.ccs:1:6: `physmap=`: a setting needs a non-empty key and value"
    );
    assert_eq!(
        error("machine cpus=1 cpus=2\n"),
        "t.ccs:1:16: setting `cpus` given twice on this line"
    );
    assert_eq!(
        error("vm 1\n"),
        "t.ccs:1:6: `vm` needs a VM number and a kind: `vm N KIND key=value…` (KIND: plain, sev, \
         sev-es, snp, tdx)"
    );
    assert_eq!(error("vm x snp\n"), "t.ccs:1:4: `vm` number: malformed integer: \"x\"");
    assert_eq!(
        error("vm 1 snpp\n"),
        "t.ccs:1:6: `vm` kind: malformed VM kind (plain, sev, sev-es, snp, tdx): \"snpp\""
    );
}

#[test]
fn program_errors() {
    assert_eq!(
        error("program a\nprogram b\nend\n"),
        "t.ccs:2:1: program `b` starts inside program `a` (line 1); close that one with `end` \
         first"
    );
    assert_eq!(error("program a\n  c0 host flush-all\n"), "t.ccs:1:1: program `a` has no `end`");
    assert_eq!(error("end\n"), "t.ccs:1:1: `end` without a `program` to close");
    assert_eq!(
        error("program a\nend\nprogram a\nend\n"),
        "t.ccs:3:9: program `a` is already defined at line 1"
    );
    assert_eq!(
        error("program\n"),
        "t.ccs:1:9: `program` needs a name of characters [A-Za-z0-9._-:/+], found ``"
    );
    assert_eq!(
        error("program a=b\n"),
        "t.ccs:1:9: `program` needs a name of characters [A-Za-z0-9._-:/+], found `a=b`"
    );
    assert_eq!(error("program a b\n"), "t.ccs:1:11: unexpected `b` after `program`");
    assert_eq!(
        error("program a\nstate rmp spa=0 assigned\nend\n"),
        "t.ccs:2:1: `state` is not allowed inside program `a` (only events and `expect`)"
    );
    assert_eq!(
        error("program a\nc0 host flush-all\nexpect final no-fault\nend\n"),
        "t.ccs:3:1: `expect final` is not allowed inside program `a` (only events and `expect`)"
    );
    assert_eq!(
        error("program a\nexpect no-fault\nend\n"),
        "t.ccs:2:1: `expect` has no event before it in this program to check (write `expect \
         final …` to check the end state)"
    );
    assert_eq!(
        error("c0 host flush-all\nprogram a\nend\nexpect no-fault\n"),
        "t.ccs:4:1: `expect` has no event before it to check (write `expect final …` to check \
         the end state)"
    );
}

#[test]
fn columns_count_characters() {
    // Two-byte characters before the error move the byte column, not the character column.
    assert_eq!(
        error("c0 host load phys:0x1 8 é=1 # é\n").split(": ").next().unwrap(),
        "t.ccs:1:25"
    );
}

#[test]
fn non_utf8_input() {
    let bad: &[u8] = b"c0 host flush-all\nc0 host load 0x10 8 # caf\xc3\xa9 \xff\n";
    let e = parse_reader(bad, "bin.ccs").find_map(Result::err).unwrap();
    assert_eq!(e.to_string(), "bin.ccs:2:28: line is not valid UTF-8");
    assert_eq!((e.file(), e.line(), e.col()), ("bin.ccs", 2, 28));
}

#[test]
fn long_lines_are_refused_without_buffering_them() {
    let limit = ccs::MAX_LINE_BYTES;
    // Exactly at the limit: fine (a comment).
    let ok = format!("#{}\nc0 host flush-all\n", "x".repeat(limit - 1));
    assert_eq!(records(&ok).len(), 1);
    let long = format!("c0 host flush-all\n#{}\n", "x".repeat(limit));
    assert_eq!(error(&long), format!("t.ccs:2:1: line is longer than {limit} bytes"));
    // An endless line ends in an error, not in memory exhaustion.
    let endless = BufReader::new(std::io::repeat(b'a'));
    let e = parse_reader(endless, "endless").next().unwrap().unwrap_err();
    assert!(matches!(e.kind(), Some(ErrorKind::LineTooLong { .. })));
}

#[test]
fn streaming_yields_records_then_stops_at_the_first_error() {
    let text = "c0 host flush-all\nc0 host flush-all\nbogus\nc0 host flush-all\n";
    let items: Vec<_> = parse_reader(text.as_bytes(), "s.ccs").collect();
    assert_eq!(items.len(), 3);
    assert!(items[..2].iter().all(Result::is_ok));
    assert_eq!(items[2].as_ref().unwrap_err().line(), 3);
    // A reader that fails reports an I/O error at the line it was reading.
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk on fire"))
        }
    }
    let e = parse_reader(BufReader::new(Failing), "io.ccs").next().unwrap().unwrap_err();
    assert_eq!(e.to_string(), "io.ccs:1:1: read error: disk on fire");
}

// ---------------------------------------------------------------------------------------------
// Example scenarios and the reference doc

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scenario_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            scenario_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "ccs") {
            out.push(p);
        }
    }
}

#[test]
fn example_scenarios_parse_and_round_trip() {
    let mut files = Vec::new();
    scenario_files(&crate_dir().join("scenarios"), &mut files);
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let located = parse_str(&text, &f.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
        let rs: Vec<Record> = located.into_iter().map(|l| l.record).collect();
        assert!(rs.iter().any(|r| matches!(r, Record::Expect { .. })), "{}", f.display());
        assert_eq!(records(&write_records(&rs)), rs, "{}", f.display());
    }
}

/// The generated part of docs/scenario-format.md: every keyword with its usage line.
fn keyword_reference() -> String {
    fn table(
        out: &mut String,
        title: &str,
        prefix: &str,
        kws: &[(&str, u16)],
        usage: fn(&str) -> Option<String>,
    ) {
        out.push_str(&format!("### {title}\n\n| keyword | line |\n|---|---|\n"));
        for (kw, _) in kws {
            let u = usage(kw).unwrap();
            out.push_str(&format!("| `{kw}` | `{prefix}{u}` |\n"));
        }
        out.push('\n');
    }
    fn values<T: std::fmt::Display>(out: &mut String, name: &str, all: &[T]) {
        let v: Vec<String> = all.iter().map(|v| format!("`{v}`")).collect();
        out.push_str(&format!("| `{name}` | {} |\n", v.join(" ")));
    }
    use sim_core::event::{
        AllocKind, CpaOp, Disposition, FaultKind, InvpcidKind, IommuCmd, MemType, MemslotOp, PscOp,
        SnpFwCmd, VmKind,
    };
    let mut out = String::new();
    table(&mut out, "Events", "AGENT ", Event::KEYWORDS, Event::usage);
    table(&mut out, "State items", "state ", StateItem::KEYWORDS, StateItem::usage);
    table(&mut out, "Checks", "expect [final] ", Check::KEYWORDS, Check::usage);
    out.push_str("### Value sets\n\n| type | values |\n|---|---|\n");
    values(&mut out, "PageSize", &sim_core::PageSize::ALL);
    values(&mut out, "MemType", MemType::ALL);
    values(&mut out, "CpaOp", CpaOp::ALL);
    values(&mut out, "AllocKind", AllocKind::ALL);
    values(&mut out, "InvpcidKind", InvpcidKind::ALL);
    values(&mut out, "IommuCmd", IommuCmd::ALL);
    values(&mut out, "PscOp", PscOp::ALL);
    values(&mut out, "SnpFwCmd", SnpFwCmd::ALL);
    values(&mut out, "MemslotOp", MemslotOp::ALL);
    values(&mut out, "VmKind", VmKind::ALL);
    values(&mut out, "FaultKind", FaultKind::ALL);
    values(&mut out, "Disposition", Disposition::ALL);
    out.push('\n');
    out
}

#[test]
fn the_reference_doc_lists_every_keyword() {
    let path = crate_dir().join("../docs/scenario-format.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (begin, end) = ("<!-- BEGIN GENERATED: keywords -->\n", "<!-- END GENERATED: keywords -->");
    let start = doc.find(begin).expect("begin marker") + begin.len();
    let stop = doc.find(end).expect("end marker");
    let want = keyword_reference();
    if doc[start..stop] != want {
        if std::env::var_os("CCSIM_BLESS").is_some() {
            let new = format!("{}{want}{}", &doc[..start], &doc[stop..]);
            std::fs::write(&path, new).unwrap();
        } else {
            panic!(
                "docs/scenario-format.md's keyword reference is out of date; rerun this test with \
                 CCSIM_BLESS=1 to regenerate it, then describe any new keyword in its section"
            );
        }
    }
    // Every keyword is also explained in the prose, outside the generated tables: each prose
    // entry starts with the keyword in code, as in "| `load <addr> <size>` | …".
    let prose = format!("{}{}", &doc[..start], &doc[stop..]);
    for (kw, _) in Event::KEYWORDS.iter().chain(StateItem::KEYWORDS).chain(Check::KEYWORDS) {
        assert!(
            prose.contains(&format!("`{kw} ")) || prose.contains(&format!("`{kw}`")),
            "keyword `{kw}` is not explained in docs/scenario-format.md"
        );
    }
}

#[test]
fn the_docs_examples_parse() {
    let doc = std::fs::read_to_string(crate_dir().join("../docs/scenario-format.md")).unwrap();
    let blocks: Vec<&str> = doc.split("```\n").skip(1).step_by(2).collect();
    assert!(blocks.len() >= 3);
    for b in blocks {
        parse_str(b, "doc").unwrap_or_else(|e| panic!("{e}\n{b}"));
    }
}
