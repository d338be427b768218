//! Importers of capture formats.
//!
//! * [`champsim`]: ChampSim binary traces (`input_instr`, `cloudsuite_instr`; streaming, one
//!   fixed-size record at a time), and the exporter back to `input_instr`.
//! * [`lackey`]: Valgrind lackey memory traces (streaming, one line at a time).
//! * [`place`]: the role an imported stream plays in the simulated machine and its captured
//!   VA→PA page map (`vapa.txt`), shared by importers.
//! * [`qemu`]: QEMU TCG plugin traces: `memtrace` (a VA→PA pair on every access) and upstream
//!   `execlog` (instructions with physical data addresses).
//! * [`perf`]: `perf script` samples with `addr` and `phys_addr` (validation, not replay).
//! * [`pairs`]: placing accesses that carry their own VA→PA pair, and the line driver of the
//!   text importers.

pub mod champsim;
pub mod kvmtrace;
pub mod lackey;
pub mod pairs;
pub mod perf;
pub mod place;
pub mod qemu;
