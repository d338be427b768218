//! Importers of capture formats.
//!
//! * [`lackey`]: Valgrind lackey memory traces (streaming, one line at a time).

pub mod lackey;
