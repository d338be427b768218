//! Any bytes into every capture importer (issue #5 formats): the first byte picks the format
//! and the role, the rest is the capture. Each must yield records or a clean error naming the
//! line or byte offset, never panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sim_core::event::VmKind;
use traces::import::champsim::{ChampSimFormat, ChampSimReader};
use traces::import::kvmtrace::{KvmTraceReader, Vendor};
use traces::import::lackey::{LackeyOptions, LackeyReader};
use traces::import::pairs::PairPlacer;
use traces::import::perf::PerfScript;
use traces::import::place::{Placer, Role};
use traces::import::qemu::{Execlog, Memtrace};

/// Drain an importer, stopping at its first error (as the CLI does).
fn drain<T, E: std::fmt::Display>(it: impl Iterator<Item = Result<T, E>>) {
    for item in it {
        if let Err(e) = item {
            let _ = e.to_string();
            break;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let role = match sel >> 4 & 3 {
        0 => Role::HostProcess { pid: 7 },
        1 => Role::HostKernel,
        2 => Role::Guest { vm: 1, kind: VmKind::Snp },
        _ => Role::Guest { vm: 1, kind: VmKind::Plain },
    };
    match sel & 7 {
        0 => drain(LackeyReader::new(body, LackeyOptions::new(7))),
        1 => drain(LackeyReader::with_placer(body, LackeyOptions::new(0), Placer::new(role, 0, None))),
        2 => drain(Memtrace::reader(body, PairPlacer::new(role))),
        3 => drain(Execlog::reader(body, PairPlacer::new(role))),
        4 => drain(PerfScript::reader(body, PairPlacer::new(role))),
        5 => {
            let vendor = if sel & 0x40 != 0 { Some(Vendor::Amd) } else { None };
            let guest = Role::Guest { vm: 1, kind: VmKind::Plain };
            drain(KvmTraceReader::new(body, guest, vendor));
        }
        6 => drain(ChampSimReader::new(body, ChampSimFormat::Input, 0, Placer::new(role, 0, None))),
        _ => drain(ChampSimReader::new(body, ChampSimFormat::Cloudsuite, 0, Placer::new(role, 0, None))),
    }
});
