//! `.cct` round trips and every bad-input case of the format (docs/trace-format.md).
// Offsets into the small test files fit any usize.

use proptest::prelude::*;
use sim_core::codec::TextCtx;
use sim_core::event::MemType;
use sim_core::vocab::tokenize;
use sim_core::{
    Address, Agent, Check, Context, Cycles, Event, Gpa, Gva, Hva, Iova, PrivLevel, Record, Setting,
    Spa, StateItem, TimedEvent,
};
use std::collections::BTreeMap;
use traces::cct::{
    CctError, Encoding, Frame, FrameDecoder, Metadata, Reader, TraceSlice, Writer, WriterOptions,
    info, is_cct,
};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

fn ev(line: &str) -> Event {
    let t = tokenize(line);
    Event::parse_text(t[0], &t[1..], &TextCtx::default()).unwrap().unwrap()
}

fn access(time: Option<u64>, agent: Agent, event: Event) -> Record {
    Record::Event(TimedEvent { time: time.map(Cycles::new), agent, event })
}

fn meta() -> Metadata {
    let mut extra = BTreeMap::new();
    extra.insert("workload".to_owned(), "sort -k2".to_owned());
    extra.insert("ünïcode".to_owned(), "✓".to_owned());
    Metadata {
        machine: "EPYC 9354, 2 vCPU".into(),
        captured_by: "valgrind-3.19 lackey".into(),
        captured_on: "builder-1".into(),
        captured_at: "2026-11-21T06:18:00Z".into(),
        extra,
    }
}

/// One record of every kind, with every address kind, op, memory type and time form.
fn every_kind() -> Vec<Record> {
    let host = Agent::host(0);
    let proc_ = Agent::Cpu { cpu: 3, ctx: Context::HostProcess(4242) };
    let guest =
        Agent::Cpu { cpu: 1, ctx: Context::Guest { vm: 2, vcpu: 5, level: PrivLevel::Vtl(1) } };
    let dev = Agent::Device(0x100);
    let fw = Agent::Firmware(sim_core::Firmware::TdxModule);
    let st = |line: &str| {
        let t = tokenize(line);
        StateItem::parse_text(t[0], &t[1..], &TextCtx::default()).unwrap().unwrap()
    };
    let ck = |line: &str| {
        let t = tokenize(line);
        Check::parse_text(t[0], &t[1..], &TextCtx::default()).unwrap().unwrap()
    };
    vec![
        Record::Setting(Setting {
            section: "machine".into(),
            args: vec![],
            pairs: vec![("cpus".into(), "2".into()), ("tlb.l1d.ways".into(), "4".into())],
        }),
        Record::Setting(Setting {
            section: "vm".into(),
            args: vec!["1".into(), "snp".into(), String::new(), "spaces in it ✓".into()],
            pairs: vec![("".into(), "=".into())],
        }),
        Record::State(st("rmp spa=0x40200000 assigned asid=1 gpa=0x200000 validated")),
        Record::State(st("directmap spa=0x40000000 size=2M len=0x400000")),
        access(
            None,
            host,
            Event::Load { addr: Address::Hva(Hva::new(0xffff_8880_0000_1000)), size: 8 },
        ),
        access(Some(0), host, Event::Load { addr: Address::Hva(Hva::new(0x1000)), size: 8 }),
        access(
            Some(u64::MAX),
            proc_,
            Event::Fetch { addr: Address::Hva(Hva::new(u64::MAX)), size: 15 },
        ),
        access(
            Some(17),
            guest,
            Event::Store { addr: Address::Gva(Gva::new(0x7fff_0000)), size: 4, mt: MemType::Nt },
        ),
        access(
            None,
            guest,
            Event::Store { addr: Address::Gpa(Gpa::new((1 << 52) - 8)), size: 8, mt: MemType::Uc },
        ),
        access(
            None,
            host,
            Event::Store { addr: Address::Spa(Spa::new(0x4020_1000)), size: 64, mt: MemType::Wc },
        ),
        access(
            None,
            dev,
            Event::DmaRead { addr: Address::Iova(Iova::new(0xdead_b000)), size: 4096 },
        ),
        access(None, dev, Event::DmaWrite { addr: Address::Iova(Iova::new(0)), size: u32::MAX }),
        access(Some(5), fw, Event::DmaWrite { addr: Address::Spa(Spa::new(0x9000)), size: 0 }),
        access(None, host, ev("rmpupdate spa=0x40200000 assigned asid=1 gpa=0x200000")),
        Record::Expect { at_end: false, check: ck("no-fault") },
        access(Some(99), proc_, ev("shootdown 0,1,3 addr=hva:0x1000 pages=4")),
        access(None, guest, ev("seamcall 9 rcx=0x10 r8=0xff")),
        Record::ProgramBegin("vcpu0 — ✓".into()),
        access(None, guest, Event::Load { addr: Address::Gva(Gva::new(0x1000)), size: 8 }),
        Record::ProgramEnd,
        access(None, host, ev("flush-all")),
        Record::Expect { at_end: true, check: ck("counter rmp.violations eq=3") },
    ]
}

fn write(records: &[Record], opts: WriterOptions) -> Vec<u8> {
    let mut w = Writer::with_options(Vec::new(), &meta(), opts).unwrap();
    for r in records {
        w.write(r).unwrap();
    }
    w.finish().unwrap()
}

fn opts(enc: Encoding, frame_records: u32) -> WriterOptions {
    let mut o = WriterOptions::for_encoding(enc);
    o.frame_records = frame_records;
    o
}

fn read_all(bytes: &[u8]) -> Result<Vec<Record>, CctError> {
    Reader::new(bytes)?.collect()
}

fn slice_all(bytes: &[u8]) -> Result<Vec<Record>, CctError> {
    let t = TraceSlice::new(bytes)?;
    let frames: Vec<Vec<Record>> = t.par_map_frames(|f| f.records().collect())?;
    Ok(frames.into_iter().flatten().collect())
}

#[test]
fn every_record_kind_round_trips_in_every_encoding() {
    let recs = every_kind();
    for enc in Encoding::ALL {
        for frame_records in [1, 3, 1 << 16] {
            let bytes = write(&recs, opts(enc, frame_records));
            assert!(is_cct(&bytes));
            let rd = Reader::new(bytes.as_slice()).unwrap();
            assert_eq!(rd.metadata(), &meta());
            assert_eq!(rd.encoding(), enc);
            assert_eq!(read_all(&bytes).unwrap(), recs, "{enc} / {frame_records}");
            assert_eq!(slice_all(&bytes).unwrap(), recs, "{enc} / {frame_records}");
            let s = TraceSlice::new(&bytes).unwrap();
            assert_eq!(s.records(), recs.len() as u64);
            assert_eq!(s.records_iter().collect::<Result<Vec<_>, _>>().unwrap(), recs);
        }
    }
}

#[test]
fn empty_trace_round_trips() {
    let bytes = write(&[], opts(Encoding::Default, 10));
    assert_eq!(read_all(&bytes).unwrap(), []);
    assert_eq!(slice_all(&bytes).unwrap(), []);
    let i = info(bytes.as_slice()).unwrap();
    assert_eq!((i.frames, i.records), (0, 0));
}

#[test]
fn info_counts_by_kind() {
    let recs = every_kind();
    let bytes = write(&recs, opts(Encoding::Small, 4));
    let i = info(bytes.as_slice()).unwrap();
    assert_eq!(i.records, recs.len() as u64);
    assert_eq!(i.frames, recs.len().div_ceil(4) as u64);
    assert_eq!(i.version, format!("1.{}", sim_core::FORMAT_MINOR));
    assert_eq!(i.encoding, Encoding::Small);
    let c = i.counts;
    assert_eq!((c.load, c.store, c.fetch, c.dma_read, c.dma_write), (3, 3, 1, 1, 2));
    assert_eq!((c.other_events, c.settings, c.states, c.expects, c.programs), (4, 2, 2, 2, 2));
    assert_eq!(i.file_bytes, bytes.len() as u64);
    assert!(serde_json::to_string(&i).unwrap().contains("\"small\""));
}

#[test]
fn bulk_frames_match_records() {
    let recs = every_kind();
    let bytes = write(&recs, opts(Encoding::Uncompressed, 1 << 16));
    let mut rd = Reader::new(bytes.as_slice()).unwrap();
    let f: &Frame = rd.next_frame().unwrap().unwrap();
    assert_eq!(f.len(), recs.len());
    assert_eq!(f.accesses().len(), 10);
    assert_eq!(f.time(1), Some(Cycles::new(0)));
    assert_eq!(f.time(0), None);
    assert!(rd.next_frame().unwrap().is_none());
}

#[test]
fn encoding_names() {
    for e in Encoding::ALL {
        assert_eq!(e.to_string().parse::<Encoding>().unwrap(), e);
    }
    assert_eq!("uncompressed".parse::<Encoding>().unwrap(), Encoding::Uncompressed);
    assert!("zip".parse::<Encoding>().is_err());
}

fn arb_agent() -> impl Strategy<Value = Agent> {
    prop_oneof![
        (0u32..4).prop_map(Agent::host),
        (0u32..4, 0u32..1000)
            .prop_map(|(c, p)| Agent::Cpu { cpu: c, ctx: Context::HostProcess(p) }),
        (0u32..4, 0u32..3).prop_map(|(c, v)| Agent::guest(c, 1, v)),
        (0u32..3).prop_map(Agent::Device),
    ]
}

fn arb_access() -> impl Strategy<Value = Record> {
    let addr = prop_oneof![
        any::<u64>().prop_map(|a| Address::Hva(Hva::new(a))),
        (0u64..1 << 20).prop_map(|a| Address::Hva(Hva::new(0x7fff_0000_0000 + a * 8))),
        any::<u64>().prop_map(|a| Address::Gva(Gva::new(a))),
        (0u64..1 << 52).prop_map(|a| Address::Gpa(Gpa::new(a))),
        (0u64..1 << 52).prop_map(|a| Address::Spa(Spa::new(a))),
        any::<u64>().prop_map(|a| Address::Iova(Iova::new(a))),
    ];
    let size = prop_oneof![Just(8u32), Just(4u32), 0u32..300, any::<u32>()];
    (0u8..7, addr, size, arb_agent(), proptest::option::of(any::<u64>())).prop_map(
        |(op, addr, size, agent, time)| {
            let event = match op {
                0 => Event::Load { addr, size },
                1 => Event::Store { addr, size, mt: MemType::ALL[usize::from(op) % 4] },
                2 => Event::Store { addr, size, mt: MemType::Nt },
                3 => Event::Fetch { addr, size },
                4 => Event::DmaRead { addr, size },
                5 => Event::DmaWrite { addr, size },
                _ => ev("flush-all"),
            };
            Record::Event(TimedEvent { time: time.map(Cycles::new), agent, event })
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_streams_round_trip(
        recs in proptest::collection::vec(arb_access(), 0..600),
        frame_records in 1u32..200,
        enc in prop_oneof![Just(Encoding::Default), Just(Encoding::Uncompressed)],
    ) {
        let bytes = write(&recs, opts(enc, frame_records));
        prop_assert_eq!(&read_all(&bytes).unwrap(), &recs);
        prop_assert_eq!(&slice_all(&bytes).unwrap(), &recs);
    }

    /// Damage anywhere: an error or (for bytes no check covers) the same records; never a panic.
    #[test]
    fn damaged_files_never_panic(
        recs in proptest::collection::vec(arb_access(), 1..200),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        enc in prop_oneof![Just(Encoding::Default), Just(Encoding::Uncompressed)],
    ) {
        let mut bytes = write(&recs, opts(enc, 50));
        for (i, x) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        if let Some(c) = cut {
            bytes.truncate(c.index(bytes.len()));
        }
        let _ = read_all(&bytes);
        let _ = slice_all(&bytes);
        let _ = info(bytes.as_slice());
    }
}

#[test]
fn many_symbols_and_agents_split_blocks() {
    let mut recs = Vec::new();
    for i in 0..3000u32 {
        let agent = Agent::Cpu { cpu: i % 7, ctx: Context::HostProcess(i % 301) };
        let addr = Address::Hva(Hva::new(u64::from(i) * 4096 + u64::from(i % 13)));
        recs.push(access(None, agent, Event::Load { addr, size: i % 700 }));
    }
    for enc in Encoding::ALL {
        let bytes = write(&recs, WriterOptions::for_encoding(enc));
        assert_eq!(read_all(&bytes).unwrap(), recs);
        assert_eq!(slice_all(&bytes).unwrap(), recs);
    }
}

#[test]
fn lackey_import_to_cct() {
    use traces::import::lackey::{LackeyOptions, LackeyReader};
    let text = "==1== x\nI  0401ab70,3\n L 04032e40,8\n S 1fff000718,8\n M 04033ffe,4\n";
    let recs: Vec<Record> = LackeyReader::new(text.as_bytes(), LackeyOptions::new(9))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(recs.len(), 7);
    let bytes = write(&recs, WriterOptions::for_encoding(Encoding::Default));
    assert_eq!(read_all(&bytes).unwrap(), recs);
}

// ---- Bad input: each case gives an error naming the byte offset, never a panic. ----

/// A one-frame uncompressed trace and the offset of its frame.
fn one_frame(enc: Encoding) -> (Vec<u8>, usize) {
    let recs = every_kind();
    let bytes = write(&recs, opts(enc, 1 << 16));
    let meta_len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
    (bytes, 28 + meta_len)
}

/// Recompute the checksum of the block at `off` after a deliberate edit.
fn reseal(bytes: &mut [u8], off: usize) {
    let stored = u32::from_le_bytes(bytes[off + 20..off + 24].try_into().unwrap()) as usize;
    let seed = xxh3_64(&bytes[off..off + 24]);
    let sum = xxh3_64_with_seed(&bytes[off + 32..off + 32 + stored], seed);
    bytes[off + 24..off + 32].copy_from_slice(&sum.to_le_bytes());
}

/// Recompute the file header checksum.
fn reseal_header(bytes: &mut [u8]) {
    let meta_len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let sum = xxh3_64_with_seed(&bytes[28..28 + meta_len], xxh3_64(&bytes[..20]));
    bytes[20..28].copy_from_slice(&sum.to_le_bytes());
}

fn err(bytes: &[u8]) -> String {
    let e = read_all(bytes).unwrap_err().to_string();
    assert!(e.starts_with("byte offset "), "{e}");
    e
}

fn slice_err(bytes: &[u8]) -> String {
    let e = slice_all(bytes).unwrap_err().to_string();
    assert!(e.starts_with("byte offset "), "{e}");
    e
}

#[test]
fn empty_file() {
    assert_eq!(err(&[]), "byte offset 0: empty file (a .cct trace starts with an 8-byte magic)");
    assert!(slice_err(&[]).contains("empty file"));
    assert!(!is_cct(&[]));
}

#[test]
fn wrong_magic() {
    let e = err(b"# ccsim scenario\nload 0x10 8\n");
    assert!(e.starts_with("byte offset 0: not a .cct trace (found bytes [23, 20, 63"), "{e}");
    assert!(!is_cct(b"# ccsim"));
    assert!(is_cct(b"\x89CC"));
}

#[test]
fn unknown_major_version() {
    let (mut bytes, _) = one_frame(Encoding::Default);
    bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
    bytes[10..12].copy_from_slice(&7u16.to_le_bytes());
    assert_eq!(
        err(&bytes),
        format!(
            "byte offset 8: unsupported .cct format version 2.7 (this reader reads 1.0 to 1.{})",
            sim_core::FORMAT_MINOR
        )
    );
    assert!(slice_err(&bytes).contains("version 2.7"));
}

#[test]
fn truncated_header() {
    let (bytes, frame) = one_frame(Encoding::Default);
    assert_eq!(
        err(&bytes[..20]),
        "byte offset 0: file ends inside the file header (28 bytes needed from here, 20 present)"
    );
    let e = err(&bytes[..frame - 3]);
    assert!(e.starts_with("byte offset 28: file ends inside the metadata"), "{e}");
}

#[test]
fn truncated_frame() {
    let (bytes, frame) = one_frame(Encoding::Uncompressed);
    let e = err(&bytes[..frame + 10]);
    assert!(
        e.starts_with(&format!("byte offset {frame}: file ends inside the block header")),
        "{e}"
    );
    let e = err(&bytes[..frame + 40]);
    assert!(
        e.starts_with(&format!("byte offset {}: file ends inside the frame payload", frame + 32)),
        "{e}"
    );
    // Cut at the end of the frame: the index is missing.
    let stored = u32::from_le_bytes(bytes[frame + 20..frame + 24].try_into().unwrap()) as usize;
    let end = frame + 32 + stored;
    let e = err(&bytes[..end]);
    assert!(e.contains("no index after the last frame"), "{e}");
    // A slice needs the trailer.
    let e = slice_err(&bytes[..end + 5]);
    assert!(e.contains("trailer") || e.contains("index"), "{e}");
}

#[test]
fn checksum_mismatch() {
    let (mut bytes, frame) = one_frame(Encoding::Default);
    bytes[frame + 40] ^= 0x55;
    let e = err(&bytes);
    assert!(e.starts_with(&format!("byte offset {frame}: frame 0 checksum mismatch")), "{e}");
    assert!(slice_err(&bytes).contains("frame 0 checksum mismatch"));
    // Header checksum.
    let (mut bytes, _) = one_frame(Encoding::Default);
    bytes[30] ^= 1;
    assert!(err(&bytes).starts_with("byte offset 0: file header checksum mismatch"));
}

#[test]
fn unknown_record_tag() {
    let (mut bytes, frame) = one_frame(Encoding::Uncompressed);
    let p = frame + 32;
    // Payload: agent count, agents…; find the first item tag: the Setting (tag 3) after the
    // agent table. The first record is a Setting, so after the agent table comes tag 3.
    let agents = bytes[p] as usize;
    let mut at = p + 1;
    for _ in 0..agents {
        // Agent kinds here: 0 host (kind, cpu), 1 proc (kind, cpu, pid varint 2 bytes),
        // 3 guest vtl (kind, cpu, vm, vcpu, level), 4 device (kind, varint 2 bytes),
        // 6 firmware (kind).
        at += match bytes[at] {
            0 => 2,
            1 => 4,
            2 | 3 => 5,
            4 => 3,
            _ => 1,
        };
    }
    assert_eq!(bytes[at], 3, "first item is the Setting");
    bytes[at] = 42;
    reseal(&mut bytes, frame);
    let e = err(&bytes);
    assert_eq!(
        e,
        format!(
            "byte offset {at}: frame 0: record tag 42 is not in .cct format 1.{m}: \
             the file claims format 1.{m}, so it is corrupt",
            m = sim_core::FORMAT_MINOR
        )
    );
    // The same file claiming a newer minor version names the version it needs.
    bytes[10..12].copy_from_slice(&3u16.to_le_bytes());
    reseal_header(&mut bytes);
    let e = err(&bytes);
    assert!(
        e.ends_with(&format!(
            "record tag 42 is not in .cct format 1.{}: the file is format 1.3; a reader of \
             version 1.3 or later is needed",
            sim_core::FORMAT_MINOR
        )),
        "{e}"
    );
}

#[test]
fn record_count_disagrees_with_content() {
    let (mut bytes, frame) = one_frame(Encoding::Default);
    let n = u32::from_le_bytes(bytes[frame + 12..frame + 16].try_into().unwrap());
    bytes[frame + 12..frame + 16].copy_from_slice(&(n + 1).to_le_bytes());
    reseal(&mut bytes, frame);
    let e = err(&bytes);
    assert_eq!(
        e,
        format!("byte offset {frame}: frame 0 declares {} records but {n} were found", n + 1)
    );
    // A frame header claiming 2^32-1 records is refused before anything is allocated.
    bytes[frame + 12..frame + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    reseal(&mut bytes, frame);
    let e = err(&bytes);
    assert!(e.contains("frame record count is 4294967295, above the limit of 1048576"), "{e}");
    // A trailer claiming 2^60 records.
    let (mut bytes, _) = one_frame(Encoding::Default);
    let l = bytes.len();
    bytes[l - 16..l - 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = err(&bytes);
    assert!(e.contains("trailer declares 1152921504606846976 records but 22 were found"), "{e}");
    assert!(slice_err(&bytes).contains("trailer declares 1152921504606846976 records"));
}

#[test]
fn huge_counts_inside_a_frame_do_not_allocate() {
    let (mut bytes, frame) = one_frame(Encoding::Uncompressed);
    let p = frame + 32;
    // Agent count varint 2^60 (9 bytes) replacing the first 9 payload bytes.
    let mut v = Vec::new();
    sim_core::codec::put_varint(&mut v, 1 << 60);
    bytes[p..p + v.len()].copy_from_slice(&v);
    reseal(&mut bytes, frame);
    let e = err(&bytes);
    assert!(e.contains("agent count (1152921504606846976) runs past the end"), "{e}");
}

#[test]
fn decompression_failure() {
    let (mut bytes, frame) = one_frame(Encoding::Default);
    assert_eq!(bytes[frame + 4], 1, "zstd frame");
    // Break the zstd frame magic.
    bytes[frame + 32] ^= 0xff;
    reseal(&mut bytes, frame);
    let e = err(&bytes);
    assert!(e.starts_with(&format!("byte offset {frame}: frame 0: decompression failed: ")), "{e}");
    // A wrong declared length.
    let (mut bytes, frame) = one_frame(Encoding::Default);
    let raw = u32::from_le_bytes(bytes[frame + 16..frame + 20].try_into().unwrap());
    bytes[frame + 16..frame + 20].copy_from_slice(&(raw + 1).to_le_bytes());
    reseal(&mut bytes, frame);
    let e = err(&bytes);
    assert!(
        e.contains(&format!("{raw} bytes decompressed, the header declares {}", raw + 1)),
        "{e}"
    );
}

#[test]
fn index_pointing_outside_the_file() {
    let (mut bytes, _) = one_frame(Encoding::Default);
    let l = bytes.len();
    bytes[l - 24..l - 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let e = slice_err(&bytes);
    assert_eq!(
        e,
        format!(
            "byte offset {}: index: trailer points to byte 1099511627776, outside the file's frames (length {l})",
            l - 24
        )
    );
    let e = err(&bytes);
    assert!(e.contains("index: trailer points to byte 1099511627776"), "{e}");
    // An index entry pointing past the frames.
    let (mut bytes, _) = one_frame(Encoding::Default);
    let l = bytes.len();
    let index = u64::from_le_bytes(bytes[l - 24..l - 16].try_into().unwrap()) as usize;
    bytes[index + 32..index + 40].copy_from_slice(&(1u64 << 50).to_le_bytes());
    reseal(&mut bytes, index);
    let e = slice_err(&bytes);
    assert!(e.contains("index: entry 0 points to byte 1125899906842624+"), "{e}");
    let e = err(&bytes);
    assert!(e.contains("index does not match the frames"), "{e}");
}

#[test]
fn trailing_garbage_and_bad_block_magic() {
    let (mut bytes, frame) = one_frame(Encoding::Default);
    bytes.push(0);
    assert!(err(&bytes).ends_with("data after the end of the trace"));
    let (mut bytes, _) = one_frame(Encoding::Default);
    bytes[frame] = b'X';
    assert!(err(&bytes).contains("expected a frame (CCTF) or the index (CCTX)"));
}

#[test]
fn phys_address_above_52_bits_is_rejected() {
    let rec =
        access(None, Agent::host(0), Event::Load { addr: Address::Spa(Spa::new(0x1000)), size: 8 });
    let bytes = write(&[rec], opts(Encoding::Uncompressed, 10));
    let meta_len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let frame = 28 + meta_len;
    let mut bytes = bytes;
    // The address column ends the payload: its length 2, then zigzag(0x1000) = 0x2000 in 2
    // little-endian bytes.
    let stored = u32::from_le_bytes(bytes[frame + 20..frame + 24].try_into().unwrap()) as usize;
    let end = frame + 32 + stored;
    assert_eq!(&bytes[end - 3..end], &[2, 0x00, 0x20]);
    // zigzag 0x3fff = -8192: the address wraps to 2^64 - 8192.
    bytes[end - 2] = 0xff;
    bytes[end - 1] = 0x3f;
    reseal(&mut bytes, frame);
    let e = err(&bytes);
    assert!(e.contains("access 0: physical address 0xffffffffffffe000 exceeds 52 bits"), "{e}");
}

#[test]
fn frame_decoder_is_reusable_across_slices() {
    let a = write(&every_kind(), opts(Encoding::Default, 5));
    let b = write(&every_kind(), opts(Encoding::Uncompressed, 7));
    let mut dec = FrameDecoder::new();
    let mut f = Frame::default();
    for bytes in [&a, &b] {
        let t = TraceSlice::new(bytes).unwrap();
        let mut all = Vec::new();
        for i in 0..t.frames().len() {
            t.decode_frame(i, &mut dec, &mut f).unwrap();
            all.extend(f.records());
        }
        assert_eq!(all, every_kind());
    }
}

#[test]
fn iterator_and_frames_mix() {
    let recs = every_kind();
    let bytes = write(&recs, opts(Encoding::Default, 5));
    let mut rd = Reader::new(bytes.as_slice()).unwrap();
    let first: Vec<Record> = rd.by_ref().take(2).map(Result::unwrap).collect();
    assert_eq!(first, recs[..2]);
    // The rest of frame 0 is skipped; frame 1 is returned and the iterator goes on after it.
    let f = rd.next_frame().unwrap().unwrap();
    assert_eq!((f.number(), f.first_record(), f.len()), (1, 5, 5));
    let rest: Vec<Record> = rd.map(Result::unwrap).collect();
    assert_eq!(rest, recs[10..]);
}

#[test]
fn nothing_is_yielded_after_an_error() {
    let recs = every_kind();
    let mut bytes = write(&recs, opts(Encoding::Uncompressed, 5));
    let meta_len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
    let f0 = 28 + meta_len;
    let stored = u32::from_le_bytes(bytes[f0 + 20..f0 + 24].try_into().unwrap()) as usize;
    let f1 = f0 + 32 + stored;
    // Frame 1 declares one record too many.
    bytes[f1 + 12..f1 + 16].copy_from_slice(&6u32.to_le_bytes());
    reseal(&mut bytes, f1);
    let items: Vec<Result<Record, CctError>> = Reader::new(bytes.as_slice()).unwrap().collect();
    assert_eq!(items.len(), 6);
    assert!(items[..5].iter().all(Result::is_ok));
    let e = items[5].as_ref().unwrap_err().to_string();
    assert_eq!(e, format!("byte offset {f1}: frame 1 declares 6 records but 5 were found"));
}

/// The real capture of shared/traces/lackey-sort: the counts its README gives, split at pages,
/// survive a `.cct` round trip in every encoding.
#[test]
#[ignore = "reads the 98 MB shared lackey sample; run with --ignored (release recommended)"]
fn real_lackey_sample() {
    use traces::import::lackey::{LackeyOptions, LackeyReader};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/traces/lackey-sort/trace.lackey.zst");
    let Ok(f) = std::fs::File::open(&path) else {
        eprintln!("{} absent: skipped", path.display());
        return;
    };
    let dec = zstd::stream::read::Decoder::new(f).unwrap();
    let mut rd = LackeyReader::new(std::io::BufReader::new(dec), LackeyOptions::new(31139));
    let mut w = Writer::new(Vec::new(), &meta(), Encoding::Small).unwrap();
    for r in rd.by_ref() {
        w.write(&r.unwrap()).unwrap();
    }
    let st = rd.stats();
    // 6,979,401 records + 8,116 `M` (load and store) + one more piece per page crossing.
    assert_eq!(st.lines - st.skipped, 6_979_401);
    assert_eq!(st.records, 6_979_401 + 8_116 + st.split);
    eprintln!("lackey sample: {st:?}");
    let bytes = w.finish().unwrap();
    let i = info(bytes.as_slice()).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&i).unwrap());
    assert_eq!(i.records, st.records);
    assert!(i.bytes_per_record <= 4.0);
    assert_eq!(i.counts.fetch + i.counts.load + i.counts.store, st.records);
}
