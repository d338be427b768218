//! Importers of capture formats.
//!
//! * [`lackey`]: Valgrind lackey memory traces (streaming, one line at a time).
//! * [`place`]: the role an imported stream plays in the simulated machine and its captured
//!   VA→PA page map (`vapa.txt`), shared by importers.
//! * [`qemu`]: QEMU TCG plugin traces (`memtrace`), with a VA→PA pair on every access.
//! * [`pairs`]: placing accesses that carry their own VA→PA pair, and the line driver of the
//!   text importers.

pub mod lackey;
pub mod pairs;
pub mod place;
pub mod qemu;
