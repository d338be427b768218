//! Text importer throughput: the real `lackey` (with its `vapa.txt` page map), `qemu-memtrace`,
//! `qemu-execlog`, `perf-script` and `kvm-trace` samples (`traces/samples/`), replicated in
//! memory to about 4 M lines, parsed and placed into records (no output encoding). Criterion
//! prints lines/s (`elem/s`). The target is ≥ 5 M lines/s.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use traces::import::kvmtrace::KvmTraceReader;
use traces::import::lackey::{LackeyOptions, LackeyReader};
use traces::import::pairs::PairPlacer;
use traces::import::perf::PerfScript;
use traces::import::place::{PageMap, Placer, Role};
use traces::import::qemu::{Execlog, Memtrace};

const TARGET_LINES: usize = 4_000_000;

/// The sample replicated to about `TARGET_LINES` lines; its line count.
fn replicate(text: &str) -> (Vec<u8>, u64) {
    let lines = text.lines().count();
    let copies = TARGET_LINES.div_ceil(lines);
    (text.repeat(copies).into_bytes(), (lines * copies) as u64)
}

fn bench(c: &mut Criterion) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../traces/samples");
    let mt = std::fs::read(format!("{root}/qemu/memtrace.txt.zst")).expect("memtrace sample");
    let mt = String::from_utf8(zstd::decode_all(&mt[..]).expect("zstd")).expect("utf-8");
    let pf = std::fs::read_to_string(format!("{root}/perf/pagefaults_phys.txt")).expect("perf");
    let el = std::fs::read_to_string(format!("{root}/qemu/execlog_head2000.txt")).expect("execlog");
    let lk = std::fs::read(format!("{root}/lackey-sort/trace.lackey.zst")).expect("lackey");
    let lk = String::from_utf8(zstd::decode_all(&lk[..]).expect("zstd")).expect("utf-8");
    let vapa = std::fs::read(format!("{root}/lackey-sort/vapa.txt")).expect("vapa");
    let map = PageMap::parse(&vapa[..]).expect("vapa parses");
    let kt =
        std::fs::read_to_string(format!("{root}/kvm/kvm_trace_pipe_head400.txt")).expect("kvm");
    let mut g = c.benchmark_group("import_text");
    g.sample_size(10);
    for role in ["host-process:7", "guest:1:snp", "host-kernel"] {
        let r: Role = role.parse().expect("role");
        let (buf, n) = replicate(&lk);
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("lackey/{role}"), |b| {
            b.iter(|| {
                let placer = Placer::new(r, 0, Some(map.clone()));
                let it = LackeyReader::with_placer(&buf[..], LackeyOptions::new(0), placer);
                black_box(it.fold(0u64, |n, x| {
                    black_box(x.expect("sample parses"));
                    n + 1
                }))
            });
        });
    }
    {
        let r: Role = "guest:1".parse().expect("role");
        let (buf, n) = replicate(&kt);
        g.throughput(Throughput::Elements(n));
        g.bench_function("kvm-trace/guest:1", |b| {
            b.iter(|| {
                let it = KvmTraceReader::new(&buf[..], r, None);
                black_box(it.fold(0u64, |n, x| {
                    black_box(x.expect("sample parses"));
                    n + 1
                }))
            });
        });
    }
    for role in ["guest:1:snp", "host-kernel"] {
        let r: Role = role.parse().expect("role");
        let (buf, n) = replicate(&mt);
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("qemu-memtrace/{role}"), |b| {
            b.iter(|| {
                let it = Memtrace::reader(&buf[..], PairPlacer::new(r));
                black_box(it.fold(0u64, |n, x| {
                    black_box(x.expect("sample parses"));
                    n + 1
                }))
            });
        });
        let (buf, n) = replicate(&el);
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("qemu-execlog/{role}"), |b| {
            b.iter(|| {
                let it = Execlog::reader(&buf[..], PairPlacer::new(r));
                black_box(it.fold(0u64, |n, x| {
                    black_box(x.expect("sample parses"));
                    n + 1
                }))
            });
        });
        let (buf, n) = replicate(&pf);
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("perf-script/{role}"), |b| {
            b.iter(|| {
                let it = PerfScript::reader(&buf[..], PairPlacer::new(r));
                black_box(it.fold(0u64, |n, x| {
                    black_box(x.expect("sample parses"));
                    n + 1
                }))
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
