//! The traces crate's integration tests, one binary (STYLE rule 18d):
//!
//! - `ccs`: the `.ccs` scenario format: round trips (text, and binary → text → binary),
//!   example scenarios, every error with its `FILE:LINE:COL`, bounded streaming, the reference
//!   doc kept in step with the vocabulary;
//! - `cct`: the `.cct` binary format: round trips in every encoding, every bad-input case with
//!   its byte offset, damaged files never panic, the real lackey sample (ignored by default);
//! - `common`: proptest strategies covering every record kind.

// Test data builds narrow integers from wider ones on purpose.
#![allow(clippy::cast_possible_truncation)]

mod ccs;
mod cct;
mod common;
