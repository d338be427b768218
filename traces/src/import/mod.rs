//! Importers of capture formats.
//!
//! * [`champsim`]: ChampSim binary traces (`input_instr`, `cloudsuite_instr`; streaming, one
//!   fixed-size record at a time), and the exporter back to `input_instr`.
//! * [`lackey`]: Valgrind lackey memory traces (streaming, one line at a time).
//! * [`place`]: the role an imported stream plays in the simulated machine and its captured
//!   VA→PA page map (`vapa.txt`), shared by importers.

pub mod champsim;
pub mod lackey;
pub mod place;
