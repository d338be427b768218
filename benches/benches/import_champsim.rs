//! ChampSim import throughput (issue #5 target: ≥ 20 M records/s from an uncompressed file).
//!
//! Inputs:
//! * `generated`: N = 4,000,000 `input_instr` records (256 MB) built in memory at run time
//!   (`CHAMPSIM_RECORDS=N` changes N): sequential 4-byte ips with a taken branch every 8
//!   records, a load in 3 records of 8, a store in 1 of 8, an occasional second load (1 of 16),
//!   data addresses walking 8-byte strides with 1/64 random jumps. It is imported from memory
//!   (`memory`) and from a temporary uncompressed file (`file`, page cache warm).
//! * `sample`: the committed real sample `traces/samples/champsim/lackey-sort.champsimtrace.xz`
//!   (79,028 records exported from the lackey-sort capture), imported from its decompressed
//!   bytes in memory (`sample/raw`) and through the xz decoder (`sample/xz`).
//!
//! Each iteration reads every record as the host-process role (`ChampSimReader` with a
//! `Placer` and no page map, as `ccsim trace import --as host-process` does) and consumes every
//! produced `Record`. Throughput is in ChampSim records (criterion's `elem/s`), not in the
//! ccsim records they expand to (1 + loads + stores each).

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::io::Read;
use std::path::Path;
use std::time::Duration;
use traces::import::champsim::{ChampSimFormat, ChampSimReader, ChampSimRecord};
use traces::import::place::{Placer, Role};

const SAMPLE: &str = "../traces/samples/champsim/lackey-sort.champsimtrace.xz";

fn n_records() -> u64 {
    std::env::var("CHAMPSIM_RECORDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4_000_000)
}

/// SplitMix64: a tiny deterministic generator.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn generated(n: u64) -> Vec<u8> {
    let mut rng = Mix(7);
    let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0) * 64);
    let (mut ip, mut data) = (0x40_0000u64, 0x7f00_0000_0000u64);
    for i in 0..n {
        let mut r = ChampSimRecord { ip, ..ChampSimRecord::default() };
        if i % 8 == 7 {
            r.is_branch = 1;
            r.branch_taken = 1;
            ip = 0x40_0000 + (rng.next() & 0xf_fffc);
        } else {
            ip += 4;
        }
        if rng.next().is_multiple_of(64) {
            data = 0x7f00_0000_0000 + (rng.next() & 0x3fff_fff8);
        }
        data += 8;
        match i % 8 {
            0 | 3 | 5 => r.source_memory[0] = data,
            6 => r.destination_memory[0] = data,
            _ => {}
        }
        if i % 16 == 1 {
            r.source_memory[1] = data + 64;
        }
        out.extend_from_slice(&r.encode_input());
    }
    out
}

fn import(r: impl Read) -> u64 {
    let placer = Placer::new(Role::HostProcess { pid: 1 }, 0, None);
    let mut n = 0u64;
    for rec in ChampSimReader::new(r, ChampSimFormat::Input, 0, placer) {
        black_box(rec.unwrap());
        n += 1;
    }
    n
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat` (Linux; `None` elsewhere).
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Records per second of this thread's CPU time and of wall time over `reps` imports: the
/// shared 2-core machine is often oversubscribed, which criterion's wall-clock numbers show
/// as a slowdown that is not the importer's.
fn per_cpu_second(what: &str, records: u64, reps: u64, mut f: impl FnMut()) {
    let (c0, t0) = (cpu_ns(), std::time::Instant::now());
    for _ in 0..reps {
        f();
    }
    let wall = t0.elapsed().as_secs_f64();
    let total = (records * reps) as f64;
    if let (Some(c0), Some(c1)) = (c0, cpu_ns()) {
        let cpu = (c1 - c0) as f64 / 1e9;
        eprintln!(
            "{what}: {:.1} M records/s of CPU time ({:.1} M/s wall)",
            total / cpu / 1e6,
            total / wall / 1e6
        );
    }
}

fn bench(c: &mut Criterion) {
    let n = n_records();
    let bytes = generated(n);
    let path = std::env::temp_dir().join(format!("ccsim-champsim-bench-{}", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    per_cpu_second("generated/memory", n, 3, || {
        black_box(import(&bytes[..]));
    });
    per_cpu_second("generated/file", n, 3, || {
        black_box(import(std::fs::File::open(&path).unwrap()));
    });
    let mut g = c.benchmark_group("import_champsim");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(n));
    g.bench_function("generated/memory", |b| b.iter(|| import(&bytes[..])));
    g.bench_function("generated/file", |b| {
        // The reader has its own buffer: no BufReader.
        b.iter(|| import(std::fs::File::open(&path).unwrap()))
    });
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
    let xz = std::fs::read(&sample).unwrap();
    let mut raw = Vec::new();
    liblzma::read::XzDecoder::new(&xz[..]).read_to_end(&mut raw).unwrap();
    g.throughput(Throughput::Elements((raw.len() / 64) as u64));
    g.bench_function("sample/raw", |b| b.iter(|| import(&raw[..])));
    g.bench_function("sample/xz", |b| b.iter(|| import(liblzma::read::XzDecoder::new(&xz[..]))));
    g.finish();
    let _ = std::fs::remove_file(&path);
}

criterion_group!(benches, bench);
criterion_main!(benches);
