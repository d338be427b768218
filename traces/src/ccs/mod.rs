//! Text scenario format `.ccs` v1 (grammar and examples: `docs/scenario-format.md`).
//!
//! A scenario is a list of lines run in file order: an optional `version` line, header
//! settings (`machine`, `host`, `vm`) and initial `state`, then events issued by agents,
//! `expect` lines that assert the outcome of the event before them (or, with `final`, of the
//! whole run), and per-vCPU `program … end` blocks for the race explorer. Each line becomes at
//! most one [`sim_core::Record`], the same stream item the binary `.cct` format carries, so the
//! two convert losslessly.
//!
//! Reading checks everything a line can get wrong on its own (unknown keywords with the nearest
//! one suggested, malformed numbers, missing or unknown fields, addresses an operation needs
//! aligned, `expect` that checks nothing) and the ordering rules of the grammar; each error is
//! reported as `FILE:LINE:COL: message`. Configuration keys in settings are kept as written and
//! validated by the engine, which reports them with [`Located::line`].
//!
//! ```
//! use traces::ccs::{parse_str, write_records};
//!
//! let text = "\
//! machine cpus=2
//! state rmp spa=0x100010000 assigned asid=5 gpa=0x80000000 validated
//! c1 host store phys:0x100005000 8   # a kernel write through the direct map
//! expect fault pf code=0x80000003 disposition=fatal
//! ";
//! let located = parse_str(text, "s1.ccs").unwrap();
//! assert_eq!(located[2].line, 3);
//! let records: Vec<_> = located.into_iter().map(|l| l.record).collect();
//! let again: Vec<_> = parse_str(&write_records(&records), "printed")
//!     .unwrap()
//!     .into_iter()
//!     .map(|l| l.record)
//!     .collect();
//! assert_eq!(records, again);
//!
//! let e = parse_str("c0 host stroe phys:0x1000 8\n", "bad.ccs").unwrap_err();
//! assert_eq!(e.to_string(), "bad.ccs:1:9: unknown event `stroe`; did you mean `store`?");
//! ```

mod check;
mod error;
mod parse;
mod read;
mod write;

pub use check::check_record;
pub use error::{ErrorKind, Location, ScenarioError};
pub use read::Records;
pub use write::{write_record, write_records};

use sim_core::Record;
use std::io::BufRead;

/// The longest line a reader accepts, in bytes (without the newline). Longer lines are an
/// error rather than an unbounded allocation.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A record with the line it came from (1-based), so that later checks (configuration keys,
/// run-time expectations) can report `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// 1-based line number.
    pub line: u32,
    /// The record.
    pub record: Record,
}

/// Parse a whole scenario held in memory.
///
/// # Errors
/// The first [`ScenarioError`] in file order.
pub fn parse_str(text: &str, file: &str) -> Result<Vec<Located>, ScenarioError> {
    parse_reader(text.as_bytes(), file).collect()
}

/// Parse a scenario as a stream: one record per item, in constant memory (each line is bounded
/// by [`MAX_LINE_BYTES`]). The iterator ends after the first error; an unterminated program is
/// reported at its `program` line once the input ends.
pub fn parse_reader<R: BufRead>(reader: R, file: &str) -> Records<R> {
    Records::new(reader, file)
}
