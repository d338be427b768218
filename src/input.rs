//! Opening inputs: `.cct` traces and `.ccs` scenarios behind one record stream, directory
//! expansion for `ccsim check`, and the `ccsim trace` subcommands.
//!
//! Errors name the file and, from the format readers, the byte offset (binary) or
//! line:column (text).

use anyhow::{Context as _, anyhow, bail};
use sim_core::Record;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use traces::{ccs, cct};

/// One record with where it came from: a scenario line, or a record index in a binary trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced {
    /// Line (text) or 1-based record index (binary).
    pub line: u64,
    /// The record.
    pub record: Record,
}

/// A stream of records from a file, whatever its format.
pub type RecordStream = Box<dyn Iterator<Item = anyhow::Result<Sourced>>>;

/// The kind of file, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Binary `.cct`.
    Cct,
    /// Text `.ccs`.
    Ccs,
}

/// Open a file, sniffing binary vs text by magic.
///
/// # Errors
/// The file does not exist or cannot be read (naming it).
pub fn open(path: &Path) -> anyhow::Result<(FileKind, RecordStream)> {
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    // A 1 MiB buffer for traces; a small regular file (a scenario) needs no more than its
    // size (a 1 MiB buffer is a fresh mapping each time, which a race explorer that loads its
    // scenario per call paid for on every call).
    let cap = match f.metadata() {
        Ok(m) if m.is_file() => m.len().clamp(8 << 10, 1 << 20),
        _ => 1 << 20,
    };
    let mut r = BufReader::with_capacity(usize::try_from(cap).unwrap_or(1 << 20), f);
    let head = r.fill_buf().with_context(|| format!("{}", path.display()))?;
    let name = path.display().to_string();
    let named_cct = path.extension().is_some_and(|x| x == "cct");
    if cct::is_cct(head) || named_cct {
        // A `.cct` name with a wrong magic gets the binary reader's own error (byte offset 0),
        // not a text parser's complaint about the bytes.
        let reader = cct::Reader::new(r).map_err(|e| anyhow!("{name}: {e}"))?;
        let mut idx = 0u64;
        let it = reader.map(move |rec| {
            idx += 1;
            rec.map(|record| Sourced { line: idx, record }).map_err(|e| anyhow!("{name}: {e}"))
        });
        Ok((FileKind::Cct, Box::new(it)))
    } else {
        let it = ccs::parse_reader(r, &name).map(|rec| {
            rec.map(|l| Sourced { line: u64::from(l.line), record: l.record })
                .map_err(|e| anyhow!("{e}"))
        });
        Ok((FileKind::Ccs, Box::new(it)))
    }
}

/// Expand directories into the `.ccs`/`.cct` files below them, sorted by path.
///
/// # Errors
/// A path that does not exist.
pub fn scenario_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            if found.is_empty() {
                bail!("{}: no .ccs or .cct files", p.display());
            }
            out.extend(found);
        } else if p.exists() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "ccs" || x == "cct") {
            out.push(p);
        }
    }
    Ok(())
}

/// `ccsim trace info`.
///
/// # Errors
/// Unreadable or corrupt trace.
pub fn trace_info(path: &Path) -> anyhow::Result<cct::TraceInfo> {
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    cct::info(BufReader::new(f)).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Human text for `ccsim trace info`.
pub fn info_text(info: &cct::TraceInfo) -> String {
    let v = serde_json::to_value(info).unwrap_or_default();
    let mut cols = Vec::new();
    crate::report::flatten("", &v, &mut cols);
    cols.iter().map(|(k, v)| format!("{k:<28} {v}\n")).collect()
}

/// `ccsim trace cat|head`: records as scenario text.
///
/// # Errors
/// Unreadable or corrupt input.
pub fn print_records(path: &Path, limit: u64) -> anyhow::Result<()> {
    use std::io::Write as _;
    let (_, it) = open(path)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = String::new();
    for rec in it.take(usize::try_from(limit).unwrap_or(usize::MAX)) {
        let rec = rec?;
        line.clear();
        ccs::write_record(&rec.record, &mut line);
        if write!(out, "{line}").is_err() {
            return Ok(()); // Broken pipe (e.g. `| head`): stop quietly.
        }
    }
    let _ = out.flush();
    Ok(())
}

/// `ccsim trace convert`. Returns the number of records written.
///
/// # Errors
/// Bad input, unknown encoding or format, or an output extension that is neither.
pub fn convert(
    input: &Path,
    output: &Path,
    encoding: &str,
    from: Option<&str>,
    pid: u32,
) -> anyhow::Result<u64> {
    let records: RecordStream = match from {
        None => open(input)?.1,
        Some("lackey") => {
            let name = input.display().to_string();
            let opts = traces::import::lackey::LackeyOptions::new(pid);
            let it = traces::import::lackey::LackeyReader::new(open_text(input)?, opts);
            let mut idx = 0u64;
            Box::new(it.map(move |r| {
                idx += 1;
                r.map(|record| Sourced { line: idx, record }).map_err(|e| anyhow!("{name}: {e}"))
            }))
        }
        Some(other) => bail!("unknown input format {other:?} (known: lackey)"),
    };
    let ext = output.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tmp = output.with_extension(format!("{ext}.tmp{}", std::process::id()));
    let mut n = 0u64;
    match ext {
        "cct" => {
            let enc: cct::Encoding = encoding.parse().map_err(|e| anyhow!("--encoding: {e}"))?;
            let f = std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
            let meta = cct::Metadata {
                captured_by: format!("ccsim trace convert from {}", input.display()),
                ..Default::default()
            };
            let mut w = cct::Writer::new(std::io::BufWriter::new(f), &meta, enc)?;
            for r in records {
                w.write(&r?.record)?;
                n += 1;
            }
            w.finish()?;
        }
        "ccs" => {
            use std::io::Write as _;
            let f = std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
            let mut out = std::io::BufWriter::new(f);
            writeln!(out, "version {}.{}", sim_core::FORMAT_MAJOR, sim_core::FORMAT_MINOR)?;
            let mut line = String::new();
            for r in records {
                line.clear();
                ccs::write_record(&r?.record, &mut line);
                write!(out, "{line}")?;
                n += 1;
            }
            out.flush()?;
        }
        _ => bail!("{}: output must end in .cct or .ccs", output.display()),
    }
    std::fs::rename(&tmp, output).with_context(|| format!("{}", output.display()))?;
    Ok(n)
}

fn zstd_reader(f: std::fs::File) -> anyhow::Result<impl Read> {
    let mut d = zstd::Decoder::new(f)?;
    // The real lackey sample uses a 128 MiB window (shared/traces/README.md).
    d.window_log_max(27)?;
    Ok(d)
}

/// What `ccsim trace import` did, for its stderr summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSummary {
    /// Records written (header settings, placement events and accesses).
    pub records: u64,
    /// What the format's reader read.
    pub source: SourceStats,
    /// What the placer added or left out.
    pub placed: traces::import::place::PlaceStats,
    /// Pages in the VA→PA map and lines superseded by an earlier PFN of the same page.
    pub map_pages: (u64, u64),
}

/// The counts of the reader of one capture format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStats {
    /// Valgrind lackey.
    Lackey(traces::import::lackey::LackeyStats),
    /// ChampSim binary trace.
    ChampSim(traces::import::champsim::ChampSimStats),
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.placed;
        match &self.source {
            SourceStats::Lackey(l) => write!(
                f,
                "{} records: {} accesses from {} lines ({} skipped: Valgrind `=` and blank lines; {} split at 4 KiB; {} host-kernel fetches as `work`)",
                self.records, l.records, l.lines, l.skipped, l.split, l.fetches_as_work,
            )?,
            SourceStats::ChampSim(c) => write!(
                f,
                "{} records: {} accesses from {} ChampSim records ({} loads, {} stores; {} host-kernel fetches as `work 1`)",
                self.records, c.records, c.instrs, c.loads, c.stores, c.fetches_as_work,
            )?,
        }
        let unmapped = match &self.source {
            SourceStats::Lackey(l) => l.unmapped,
            SourceStats::ChampSim(c) => c.unmapped,
        };
        write!(
            f,
            ", {} maps 4K, {} maps 2M, {} pvalidates, {} pages touched, {} access pieces left out (page not in the map); map: {} pages, {} superseded lines",
            p.maps_4k,
            p.maps_2m,
            p.pvalidates,
            p.pages_touched,
            unmapped,
            self.map_pages.0,
            self.map_pages.1
        )
    }
}

/// A text input, plain or compressed as [`open_binary`] reads it (`.xz`, `.gz`, `.zst`),
/// buffered.
fn open_text(path: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    Ok(Box::new(BufReader::with_capacity(1 << 16, open_binary(path)?)))
}

/// The formats `ccsim trace import --from` knows.
pub const KNOWN_FORMATS: &str =
    "lackey, champsim, qemu-memtrace, qemu-execlog, perf-script, kvm-trace";

/// A text importer that carries its VA→PA pairs on each line, by `--from` name.
fn pair_reader(
    from: &str,
    r: Box<dyn BufRead>,
    role: traces::import::place::Role,
) -> anyhow::Result<Box<dyn PairIter>> {
    use traces::import::{
        pairs::PairPlacer,
        perf::PerfScript,
        qemu::{Execlog, Memtrace},
    };
    let pl = PairPlacer::new(role);
    Ok(match from {
        "qemu-memtrace" => Box::new(Memtrace::reader(r, pl)),
        "qemu-execlog" => Box::new(Execlog::reader(r, pl)),
        "perf-script" => Box::new(PerfScript::reader(r, pl)),
        _ => bail!("unknown input format {from:?} (known: {KNOWN_FORMATS})"),
    })
}

/// A streaming text importer with its counts.
trait PairIter: Iterator<Item = Result<sim_core::Record, traces::import::pairs::TextError>> {
    fn stats(&self) -> traces::import::pairs::PairStats;
}

impl<R: BufRead, F: traces::import::pairs::LineFormat> PairIter
    for traces::import::pairs::TextImporter<R, F>
{
    fn stats(&self) -> traces::import::pairs::PairStats {
        traces::import::pairs::TextImporter::stats(self)
    }
}

/// Whether `--from` names a format whose lines carry their own VA→PA pairs.
pub fn is_pair_format(from: &str) -> bool {
    matches!(from, "qemu-memtrace" | "qemu-execlog" | "perf-script")
}

/// `ccsim trace import --from qemu-memtrace|qemu-execlog|perf-script TRACE --as ROLE -o OUT.cct`: read the
/// capture once to count (so every count, skips included, is in the trace's metadata), then
/// stream it into the output with the role's header.
///
/// # Errors
/// Unknown format or role, unreadable or malformed input (naming the file and the line of the
/// decompressed text), or an unwritable output.
pub fn import_pairs(
    from: &str,
    trace: &Path,
    role: &str,
    output: &Path,
) -> anyhow::Result<traces::import::pairs::PairStats> {
    let role: traces::import::place::Role = role.parse().map_err(|e| anyhow!("--as: {e}"))?;
    let name = trace.display().to_string();
    let mut counter = pair_reader(from, open_text(trace)?, role)?;
    for r in counter.by_ref() {
        r.map_err(|e| anyhow!("{name}: {e}"))?;
    }
    let counts = counter.stats();
    let header = role.header(true);
    let mut reader = pair_reader(from, open_text(trace)?, role)?;
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("source".to_owned(), name.clone());
    extra.insert("format".to_owned(), from.to_owned());
    extra.insert("role".to_owned(), format!("{role:?}"));
    for (k, v) in counts.pairs() {
        extra.insert(format!("import.{k}"), v.to_string());
    }
    let captured_by = format!("{from}, imported by ccsim trace import");
    let records = reader.by_ref().map(|r| r.map_err(|e| anyhow!("{name}: {e}")));
    write_imported(records, &header, output, &captured_by, extra)?;
    Ok(reader.stats())
}

/// A binary input, decompressed by extension: `.xz` (liblzma), `.gz` (flate2), `.zst`
/// (zstd), anything else raw. Concatenated streams are read on, as the `xz` and `gzip` tools do.
fn open_binary(path: &Path) -> anyhow::Result<Box<dyn Read>> {
    let f = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let buffered = |f| BufReader::with_capacity(1 << 16, f);
    Ok(match path.extension().and_then(|x| x.to_str()) {
        Some("xz") => Box::new(liblzma::read::XzDecoder::new_multi_decoder(buffered(f))),
        Some("gz") => Box::new(flate2::bufread::MultiGzDecoder::new(buffered(f))),
        Some("zst") => Box::new(zstd_reader(f)?),
        // The ChampSim reader reads whole buffers of records itself.
        _ => Box::new(f),
    })
}

fn is_compressed(path: &Path) -> bool {
    path.extension().is_some_and(|x| x == "xz" || x == "gz" || x == "zst")
}

/// `ccsim trace import --from FORMAT TRACE [--vapa VAPA] --as ROLE -o OUT.cct`: stream the
/// capture into a `.cct` (or `.ccs`) trace with the role's header and placement records.
/// `format` is the ChampSim record layout (`input` by default, `cloudsuite`).
///
/// # Errors
/// Unknown format or role, a role that needs `--vapa` without one, unreadable or malformed
/// input (naming the file and line, or byte offset), or an unwritable output.
pub fn import(
    from: &str,
    trace: &Path,
    vapa: Option<&Path>,
    role: &str,
    output: &Path,
    format: Option<&str>,
) -> anyhow::Result<ImportSummary> {
    use traces::import::{champsim, lackey, place};
    if from != "lackey" && from != "champsim" {
        bail!("unknown input format {from:?} (known: {KNOWN_FORMATS})");
    }
    if from != "champsim" && format.is_some() {
        bail!("--format is for --from champsim");
    }
    let role: place::Role = role.parse().map_err(|e| anyhow!("--as: {e}"))?;
    if vapa.is_none() && !matches!(role, place::Role::HostProcess { .. }) {
        bail!("--as {role:?} needs --vapa: without captured frames its accesses have no address");
    }
    let map = match vapa {
        None => None,
        Some(p) => Some(
            place::PageMap::parse(open_text(p)?).map_err(|e| anyhow!("{}: {e}", p.display()))?,
        ),
    };
    let map_pages = map.as_ref().map_or((0, 0), |m| (m.len() as u64, m.superseded()));
    let header = role.header(map.is_some());
    let placer = place::Placer::new(role, 0, map);
    let name = trace.display().to_string();
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("source".to_owned(), name.clone());
    extra.insert("role".to_owned(), format!("{role:?}"));
    if let Some(p) = vapa {
        extra.insert("vapa".to_owned(), p.display().to_string());
        extra.insert("vapa_pages".to_owned(), map_pages.0.to_string());
        extra.insert("vapa_superseded".to_owned(), map_pages.1.to_string());
    }
    if from == "lackey" {
        let mut reader = lackey::LackeyReader::with_placer(
            open_text(trace)?,
            lackey::LackeyOptions::new(0),
            placer,
        );
        let it = reader.by_ref().map(|r| r.map_err(|e| anyhow!("{name}: {e}")));
        let by = "valgrind lackey, imported by ccsim trace import";
        let records = write_imported(it, &header, output, by, extra)?;
        return Ok(ImportSummary {
            records,
            source: SourceStats::Lackey(reader.stats()),
            placed: reader.placer().map(|p| p.stats()).unwrap_or_default(),
            map_pages,
        });
    }
    let format: champsim::ChampSimFormat =
        format.unwrap_or("input").parse().map_err(|e| anyhow!("--format: {e}"))?;
    extra.insert("champsim_format".to_owned(), format!("{format:?}"));
    let note = if is_compressed(trace) { " (of the decompressed stream)" } else { "" };
    let mut reader = champsim::ChampSimReader::new(open_binary(trace)?, format, 0, placer);
    let it = reader.by_ref().map(|r| r.map_err(|e| anyhow!("{name}: {e}{note}")));
    let by = "ChampSim trace, imported by ccsim trace import";
    let records = write_imported(it, &header, output, by, extra)?;
    Ok(ImportSummary {
        records,
        source: SourceStats::ChampSim(reader.stats()),
        placed: reader.placer().stats(),
        map_pages,
    })
}

/// `ccsim trace import --from kvm-trace TRACE --as guest:N[:KIND] [--vendor amd|intel] -o OUT`:
/// KVM tracepoint text (tracefs, `trace-cmd report`, `perf script`) replayed as one VM
/// ([`traces::import::kvmtrace`]). Returns the records written and what was read.
///
/// # Errors
/// A role other than a guest, an unknown vendor, unreadable or malformed input (naming the
/// file and line), or an unwritable output.
pub fn import_kvm_trace(
    trace: &Path,
    role: &str,
    vendor: Option<&str>,
    output: &Path,
) -> anyhow::Result<(u64, traces::import::kvmtrace::KvmTraceStats)> {
    use traces::import::kvmtrace::{KvmTraceReader, Vendor};
    let role: traces::import::place::Role = role.parse().map_err(|e| anyhow!("--as: {e}"))?;
    if !matches!(role, traces::import::place::Role::Guest { .. }) {
        bail!("--from kvm-trace replays one VM: give --as guest:N[:KIND]");
    }
    let vendor = match vendor {
        None => None,
        Some("amd") => Some(Vendor::Amd),
        Some("intel") => Some(Vendor::Intel),
        Some(v) => bail!("--vendor {v:?}: amd or intel"),
    };
    let name = trace.display().to_string();
    let mut reader = KvmTraceReader::new(open_text(trace)?, role, vendor);
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("source".to_owned(), name.clone());
    extra.insert("format".to_owned(), "kvm-trace".to_owned());
    extra.insert("role".to_owned(), format!("{role:?}"));
    let records = reader.by_ref().map(|r| r.map_err(|e| anyhow!("{name}: {e}")));
    let n = write_imported(
        records,
        &[],
        output,
        "KVM tracepoints, imported by ccsim trace import",
        extra,
    )?;
    Ok((n, reader.stats().clone()))
}

/// Write `header` then `records` to `output` (`.cct` or `.ccs`) through a temporary file that
/// is renamed at the end (removed on error). Returns the number of records written.
fn write_imported(
    records: impl Iterator<Item = anyhow::Result<Record>>,
    header: &[Record],
    output: &Path,
    captured_by: &str,
    extra: std::collections::BTreeMap<String, String>,
) -> anyhow::Result<u64> {
    let ext = output.extension().and_then(|e| e.to_str()).unwrap_or("");
    let tmp = output.with_extension(format!("{ext}.tmp{}", std::process::id()));
    let mut n = 0u64;
    let result = (|| -> anyhow::Result<()> {
        match ext {
            "cct" => {
                let f =
                    std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
                let meta = cct::Metadata {
                    captured_by: captured_by.to_owned(),
                    extra,
                    ..Default::default()
                };
                let mut w =
                    cct::Writer::new(std::io::BufWriter::new(f), &meta, cct::Encoding::default())?;
                for r in header {
                    w.write(r)?;
                    n += 1;
                }
                for r in records {
                    w.write(&r?)?;
                    n += 1;
                }
                w.finish()?;
            }
            "ccs" => {
                use std::io::Write as _;
                let f =
                    std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
                let mut out = std::io::BufWriter::new(f);
                writeln!(out, "version {}.{}", sim_core::FORMAT_MAJOR, sim_core::FORMAT_MINOR)?;
                let mut line = String::new();
                for r in header.iter().cloned().map(Ok).chain(records) {
                    line.clear();
                    ccs::write_record(&r?, &mut line);
                    out.write_all(line.as_bytes())?;
                    n += 1;
                }
                out.flush()?;
            }
            _ => bail!("{}: output must end in .cct or .ccs", output.display()),
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, output).with_context(|| format!("{}", output.display()))?;
    Ok(n)
}

/// A ChampSim output, compressed by extension.
enum ChampSimOut {
    Raw(std::io::BufWriter<std::fs::File>),
    Xz(liblzma::write::XzEncoder<std::io::BufWriter<std::fs::File>>),
    Gz(flate2::write::GzEncoder<std::io::BufWriter<std::fs::File>>),
}

impl std::io::Write for ChampSimOut {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            ChampSimOut::Raw(w) => w.write(b),
            ChampSimOut::Xz(w) => w.write(b),
            ChampSimOut::Gz(w) => w.write(b),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            ChampSimOut::Raw(w) => w.flush(),
            ChampSimOut::Xz(w) => w.flush(),
            ChampSimOut::Gz(w) => w.flush(),
        }
    }
}

impl ChampSimOut {
    /// End the compressed stream and flush the file.
    fn finish(self) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = match self {
            ChampSimOut::Raw(w) => w,
            ChampSimOut::Xz(w) => w.finish()?,
            ChampSimOut::Gz(w) => w.finish()?,
        };
        f.flush()
    }
}

/// `ccsim trace export --to champsim IN -o OUT[.xz|.gz]`: the fetches, loads and stores of a
/// `.cct`/`.ccs` trace as ChampSim `input_instr` records (grouping rules in
/// [`traces::import::champsim::ChampSimWriter`]), compressed by the output's extension
/// (`.xz`: xz preset 6; `.gz`: gzip level 6; otherwise raw).
///
/// # Errors
/// Unknown target format, unreadable or corrupt input, unwritable output.
pub fn export(
    to: &str,
    input: &Path,
    output: &Path,
) -> anyhow::Result<traces::import::champsim::ExportStats> {
    use traces::import::champsim::ChampSimWriter;
    if to != "champsim" {
        bail!("unknown output format {to:?} (known: champsim)");
    }
    let (_, records) = open(input)?;
    let name = output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| -> anyhow::Result<traces::import::champsim::ExportStats> {
        let f = std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
        let f = std::io::BufWriter::with_capacity(1 << 16, f);
        let out = match output.extension().and_then(|x| x.to_str()) {
            Some("xz") => ChampSimOut::Xz(liblzma::write::XzEncoder::new(f, 6)),
            Some("gz") => {
                ChampSimOut::Gz(flate2::write::GzEncoder::new(f, flate2::Compression::new(6)))
            }
            _ => ChampSimOut::Raw(f),
        };
        let mut w = ChampSimWriter::new(out);
        for r in records {
            w.push(&r?.record).with_context(|| format!("{}", output.display()))?;
        }
        let (out, stats) = w.finish().with_context(|| format!("{}", output.display()))?;
        out.finish().with_context(|| format!("{}", output.display()))?;
        Ok(stats)
    })();
    match result {
        Ok(stats) => {
            std::fs::rename(&tmp, output).with_context(|| format!("{}", output.display()))?;
            Ok(stats)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// One `trace import`: the capture, its format and role, and where the trace goes.
#[derive(Debug, Clone, Copy)]
pub struct ImportRequest<'a> {
    /// Capture format (see [`KNOWN_FORMATS`] and `kvm-trace`).
    pub from: &'a str,
    /// The capture.
    pub trace: &'a Path,
    /// lackey's VA→PA page map.
    pub vapa: Option<&'a Path>,
    /// What the stream is in the simulated machine (`host-process[:PID]`, `host-kernel`,
    /// `guest:N[:KIND]`).
    pub role: &'a str,
    /// ChampSim record layout.
    pub format: Option<&'a str>,
    /// kvm-trace vendor.
    pub vendor: Option<&'a str>,
    /// Output trace.
    pub output: &'a Path,
}

/// Import a capture of any supported format (the one path behind `ccsim trace import` and
/// sweep `import` inputs); returns a one-line summary of what was written.
///
/// # Errors
/// Options that do not fit the format, and the errors of the format's importer.
pub fn import_any(r: &ImportRequest) -> anyhow::Result<String> {
    let (from, out) = (r.from, r.output.display());
    if r.vendor.is_some() && from != "kvm-trace" {
        bail!("--vendor is for --from kvm-trace");
    }
    if from == "kvm-trace" {
        if r.vapa.is_some() || r.format.is_some() {
            bail!("--vapa and --format are not for kvm-trace");
        }
        let (n, s) = import_kvm_trace(r.trace, r.role, r.vendor, r.output)?;
        Ok(format!(
            "wrote {out}: {n} records from {} lines ({} skipped, {} events lost by the tracer): {} accesses, {} stage-2 maps, {} unmaps, {} attribute changes; events by name: {:?}",
            s.lines, s.skipped, s.dropped, s.accesses, s.maps, s.unmaps, s.attrs, s.events
        ))
    } else if is_pair_format(from) {
        if r.vapa.is_some() {
            bail!("--vapa is for lackey: {from} lines carry their own physical addresses");
        }
        let s = import_pairs(from, r.trace, r.role, r.output)?;
        Ok(format!("wrote {out}: {} records; {s}", s.records))
    } else {
        let s = import(from, r.trace, r.vapa, r.role, r.output, r.format)?;
        Ok(format!("wrote {out}: {s}"))
    }
}
