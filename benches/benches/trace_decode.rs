//! `.cct` decode throughput (docs/performance.md "Trace decode").
//!
//! Two 10 M-record traces are built at run time (nothing is committed):
//! * `generated`: mostly sequential accesses with random jumps (fetch stream with 1–15-byte
//!   instructions and taken branches, data stream with 8-byte strides, 1/64 random jumps);
//! * `lackey`: the real capture `../shared/traces/lackey-sort/trace.lackey.zst` (6.98 M
//!   records), imported and looped to 10 M records. Skipped if the file is absent.
//!
//! Each is encoded with the three encodings and decoded three ways: `par_bulk` (every frame on
//! the rayon pool into columns, `TraceSlice::par_map_frames`), `bulk` (one thread, columns) and
//! `records` (the `Reader` iterator, one `Record` per access). Criterion prints records/s
//! (`elem/s`); the setup prints bytes/record and encode time.
//!
//! `CCT_SWEEP=1 cargo bench -p ccsim-benches --bench trace_decode` instead prints the table
//! that chose the encodings: zstd level × frame size → bytes/record, encode and decode speed.
//! `CCT_RECORDS=N` changes the trace length.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sim_core::event::MemType;
use sim_core::{Address, Agent, Context, Event, Hva, Record, TimedEvent};
use std::hint::black_box;
use std::io::BufReader;
use std::path::Path;
use std::time::{Duration, Instant};
use traces::cct::{
    Encoding, Frame, FrameDecoder, Metadata, Reader, TraceSlice, Writer, WriterOptions,
};
use traces::import::lackey::{LackeyOptions, LackeyReader};

const LACKEY: &str = "../../shared/traces/lackey-sort/trace.lackey.zst";

fn n_records() -> u64 {
    std::env::var("CCT_RECORDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10_000_000)
}

/// SplitMix64: a tiny deterministic generator (the bench must not depend on `rand`).
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

/// Mostly sequential accesses with random jumps, one process on CPU 0.
fn generated(n: u64) -> impl Iterator<Item = Record> {
    let agent = Agent::Cpu { cpu: 0, ctx: Context::HostProcess(1000) };
    let mut rng = Mix(42);
    let mut pc: u64 = 0x40_0000;
    let mut data: u64 = 0x7f00_0000_0000;
    let mut i = 0u64;
    std::iter::from_fn(move || {
        if i == n {
            return None;
        }
        i += 1;
        let r = rng.next();
        let event = if r.is_multiple_of(3) {
            // A fetch: instructions of 1-15 bytes, a taken branch 1 time in 16.
            if (r >> 8).is_multiple_of(16) {
                pc = 0x40_0000 + ((r >> 16) % (16 << 20));
            }
            let size = 1 + u32::try_from((r >> 40) % 15).unwrap_or(0);
            let e = Event::Fetch { addr: Address::Hva(Hva::new(pc)), size };
            pc += u64::from(size);
            e
        } else {
            // Data: 8-byte strides, a jump anywhere in 1 GiB 1 time in 64.
            if (r >> 8).is_multiple_of(64) {
                data = 0x7f00_0000_0000 + (((r >> 16) % (1 << 30)) & !7);
            }
            let addr = Address::Hva(Hva::new(data));
            data += 8;
            if r % 3 == 1 {
                Event::Load { addr, size: 8 }
            } else {
                Event::Store { addr, size: 8, mt: MemType::Wb }
            }
        };
        Some(Record::Event(TimedEvent { time: None, agent, event }))
    })
}

/// The lackey capture, looped to `n` records; `None` if the file is absent.
fn lackey(n: u64) -> Option<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(LACKEY);
    if !path.exists() {
        eprintln!("trace_decode: {} absent, lackey benchmarks skipped", path.display());
        return None;
    }
    let meta = Metadata {
        machine: "Firecracker microVM, kernel 6.18.44, 2 vCPUs".into(),
        captured_by: "valgrind-3.19.0 lackey".into(),
        captured_on: "shared/traces/lackey-sort".into(),
        captured_at: "2026-11-21".into(),
        ..Metadata::default()
    };
    let mut w = Writer::new(Vec::new(), &meta, Encoding::Uncompressed).ok()?;
    let t = Instant::now();
    'outer: loop {
        let f = std::fs::File::open(&path).ok()?;
        let dec = zstd::stream::read::Decoder::new(f).ok()?;
        for r in LackeyReader::new(BufReader::new(dec), LackeyOptions::new(31139)) {
            w.write(&r.ok()?).ok()?;
            if w.records() == n {
                break 'outer;
            }
        }
    }
    eprintln!("trace_decode: lackey imported ({n} records) in {:.2?}", t.elapsed());
    w.finish().ok()
}

fn encode(records: impl Iterator<Item = Record>, opts: WriterOptions) -> (Vec<u8>, Duration) {
    let t = Instant::now();
    let mut w = Writer::with_options(Vec::new(), &Metadata::default(), opts).expect("writer");
    for r in records {
        w.write(&r).expect("write");
    }
    let b = w.finish().expect("finish");
    (b, t.elapsed())
}

/// Re-encode a trace held as bytes.
fn reencode(src: &[u8], opts: WriterOptions) -> (Vec<u8>, Duration) {
    let rd = Reader::new(src).expect("reader");
    encode(rd.map(|r| r.expect("record")), opts)
}

fn sum_frame(f: &Frame) -> u64 {
    f.accesses()
        .iter()
        .fold(0u64, |s, a| s.wrapping_add(a.raw_addr()).wrapping_add(a.size().into()))
}

fn par_bulk(bytes: &[u8]) -> u64 {
    let t = TraceSlice::new(bytes).expect("trace");
    t.par_map_frames(sum_frame).expect("decode").into_iter().fold(0, u64::wrapping_add)
}

fn bulk(bytes: &[u8]) -> u64 {
    let mut rd = Reader::new(bytes).expect("trace");
    let mut s = 0u64;
    while let Some(f) = rd.next_frame().expect("decode") {
        s = s.wrapping_add(sum_frame(f));
    }
    s
}

fn records(bytes: &[u8]) -> u64 {
    let mut n = 0u64;
    for r in Reader::new(bytes).expect("trace") {
        black_box(r.expect("record"));
        n += 1;
    }
    n
}

fn best_of(k: usize, mut f: impl FnMut() -> u64) -> Duration {
    (0..k)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Raw speed of the two libraries on this trace's bytes, one thread: xxh3 over the file and
/// zstd-3 decompression of 256 KiB chunks.
fn library_speeds(src: &[u8]) {
    let t = best_of(5, || xxhash_rust::xxh3::xxh3_64(src));
    #[allow(clippy::cast_precision_loss)]
    let xxh = src.len() as f64 / t.as_secs_f64() / 1e9;
    let chunks: Vec<Vec<u8>> =
        src.chunks(256 << 10).map(|c| zstd::bulk::compress(c, 3).expect("zstd")).collect();
    let mut out = vec![0u8; 256 << 10];
    let t = best_of(5, || {
        chunks
            .iter()
            .map(|c| zstd::bulk::decompress_to_buffer(c, &mut out).expect("zstd"))
            .sum::<usize>() as u64
    });
    #[allow(clippy::cast_precision_loss)]
    let zs = src.len() as f64 / t.as_secs_f64() / 1e6;
    println!("xxh3-64: {xxh:.1} GB/s; zstd-3 decompression of the raw payload: {zs:.0} MB/s");
}

/// The measurement that chose the encodings (printed, not a criterion bench).
fn sweep(name: &str, src: &[u8], n: u64) {
    println!("\n{name}: {n} records, {} threads", rayon::current_num_threads());
    library_speeds(src);
    println!("codec     frame  B/rec  encode(s)  par M rec/s  1-thread M rec/s");
    for level in [None, Some(1), Some(3), Some(9), Some(19)] {
        for frame in [1u32 << 16, 1 << 18, 1 << 20] {
            if level.is_none() && frame != 1 << 16 {
                continue;
            }
            let mut o = WriterOptions::for_encoding(Encoding::Default);
            o.zstd_level = level;
            o.frame_records = frame;
            let (b, te) = reencode(src, o);
            let tp = best_of(3, || par_bulk(&b));
            let ts = best_of(3, || bulk(&b));
            #[allow(clippy::cast_precision_loss)]
            let (bpr, mp, ms) = (
                b.len() as f64 / n as f64,
                n as f64 / tp.as_secs_f64() / 1e6,
                n as f64 / ts.as_secs_f64() / 1e6,
            );
            let codec = level.map_or("none".to_owned(), |l| format!("zstd-{l}"));
            println!(
                "{codec:8} {:5}Ki {bpr:6.3} {:9.2} {mp:12.0} {ms:17.0}",
                frame >> 10,
                te.as_secs_f64()
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    let n = n_records();
    let (gen_none, t) = encode(generated(n), WriterOptions::for_encoding(Encoding::Uncompressed));
    eprintln!("trace_decode: generated {n} records in {t:.2?}");
    let mut sources: Vec<(&str, Vec<u8>)> = vec![("generated", gen_none)];
    if let Some(l) = lackey(n) {
        sources.push(("lackey", l));
    }
    if std::env::var_os("CCT_SWEEP").is_some() {
        for (name, src) in &sources {
            sweep(name, src, n);
        }
        return;
    }
    let mut g = c.benchmark_group("trace_decode");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(n));
    for (name, src) in &sources {
        for enc in Encoding::ALL {
            let (b, te) = reencode(src, WriterOptions::for_encoding(enc));
            #[allow(clippy::cast_precision_loss)]
            let bpr = b.len() as f64 / n as f64;
            eprintln!(
                "trace_decode: {name}/{enc}: {} bytes, {bpr:.3} bytes/record, encoded in {te:.2?} \
                 ({} rayon threads)",
                b.len(),
                rayon::current_num_threads()
            );
            g.bench_function(format!("{name}/{enc}/par_bulk"), |bn| bn.iter(|| par_bulk(&b)));
            g.bench_function(format!("{name}/{enc}/bulk"), |bn| bn.iter(|| bulk(&b)));
            g.bench_function(format!("{name}/{enc}/records"), |bn| bn.iter(|| records(&b)));
        }
    }
    g.finish();
    // Keep FrameDecoder in the public surface the bench exercises.
    black_box(FrameDecoder::new());
}

criterion_group!(benches, bench);
criterion_main!(benches);
