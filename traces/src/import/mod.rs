//! Importers of capture formats.
//!
//! * [`lackey`]: Valgrind lackey memory traces (streaming, one line at a time).
//! * [`place`]: the role an imported stream plays in the simulated machine and its captured
//!   VA→PA page map (`vapa.txt`), shared by importers.

pub mod kvmtrace;
pub mod lackey;
pub mod place;
