//! The `ccsim` command line.
//!
//! Exit status: 0 success; 1 a `check` expectation failed; 2 bad input (file, trace, scenario,
//! configuration, parameter) with a one-line error naming where.

use std::process::ExitCode;

fn main() -> ExitCode {
    ccsim::cli::main()
}
