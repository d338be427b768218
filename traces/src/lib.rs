//! Trace formats: the binary `.cct` trace, the text `.ccs` scenario, and importers of what real
//! hosts capture. Every format reads into and writes from [`sim_core::Record`].
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod ccs;
pub mod cct;
pub mod import;
