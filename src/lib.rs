//! ccsim: a deterministic, cycle-level model of the x86 memory-protection path of SEV-SNP and
//! TDX hosts. This root crate wires the hardware blocks into a machine, holds the host software
//! models (allocator, direct map, physmap policies), the engine, the CLI and reports
//! (DESIGN.md "Layers").
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
#![deny(clippy::iter_over_hash_type)]

pub mod cli;
pub mod compare;
pub mod config;
pub mod engine;
pub mod explore;
pub mod host;
pub mod input;
pub mod machine;
pub mod plot;
pub mod report;
pub mod sweep;
mod vm;
pub mod vsm;
