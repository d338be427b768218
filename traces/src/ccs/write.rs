//! The printer: the shortest exact text of each record, context-free (addresses always carry
//! their kind prefix, so a printed line means the same whoever issues it).

use sim_core::Record;
use std::fmt::Write as _;

/// Append one record as one line, ending in `\n`, without indentation.
///
/// The line parses back to `r` when `r` passes [`super::check_record`] and stands where the
/// grammar allows it (see [`write_records`]).
pub fn write_record(r: &Record, out: &mut String) {
    match r {
        Record::Event(te) => {
            if let Some(t) = te.time {
                let _ = write!(out, "@{t} ");
            }
            let _ = write!(out, "{} ", te.agent);
            te.event.write_text(out);
        }
        Record::Setting(s) => {
            out.push_str(&s.section);
            for a in &s.args {
                out.push(' ');
                out.push_str(a);
            }
            for (k, v) in &s.pairs {
                let _ = write!(out, " {k}={v}");
            }
        }
        Record::State(s) => {
            out.push_str("state ");
            s.write_text(out);
        }
        Record::Expect { at_end, check } => {
            out.push_str(if *at_end { "expect final " } else { "expect " });
            check.write_text(out);
        }
        Record::ProgramBegin(name) => {
            out.push_str("program ");
            out.push_str(name);
        }
        Record::ProgramEnd => out.push_str("end"),
    }
    out.push('\n');
}

/// Print a whole stream: a `version` line, then one line per record, program bodies indented
/// by two spaces.
///
/// [`super::parse_str`] of the result gives back `records` exactly, provided the stream is one
/// the grammar accepts: each record passes [`super::check_record`], settings and state come
/// before the first event, expect or program, every non-final `expect` follows an event of its
/// scope, programs are closed, not nested and uniquely named.
pub fn write_records(records: &[Record]) -> String {
    let mut out = String::with_capacity(32 * records.len() + 16);
    let _ = writeln!(out, "version {}.{}", sim_core::FORMAT_MAJOR, sim_core::FORMAT_MINOR);
    let mut in_program = false;
    for r in records {
        if matches!(r, Record::ProgramEnd) {
            in_program = false;
        }
        if in_program {
            out.push_str("  ");
        }
        write_record(r, &mut out);
        if matches!(r, Record::ProgramBegin(_)) {
            in_program = true;
        }
    }
    out
}
