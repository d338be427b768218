//! Rules a record must follow beyond the syntax of its fields: alignment that an operation
//! requires, RMP page sizes, non-empty checks, setting words the text form can carry.
//!
//! They are separate from the line parser so that a converter (`.cct` → `.ccs`) can ask whether
//! the text form will accept a record before writing it.

use super::error::ErrorKind;
use sim_core::addr::MAX_PHYS_BITS;
use sim_core::codec::{Field, TextCtx};
use sim_core::event::VmKind;
use sim_core::{Check, Event, PageSize, Record, Setting, StateItem};

/// Which field of a line an error is about, to find its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldRef {
    /// A `name=value` field (or the keyword, when the field was left at its default).
    Named(&'static str),
    /// The n-th positional field (0-based).
    Positional(usize),
}

type Checked = Result<(), (FieldRef, ErrorKind)>;

fn aligned(
    keyword: &'static str,
    field: FieldRef,
    name: &'static str,
    value: u64,
    align: PageSize,
) -> Checked {
    if value & (align.bytes() - 1) == 0 {
        Ok(())
    } else {
        Err((field, ErrorKind::Misaligned { keyword, field: name, value, align }))
    }
}

/// An RMP entry's page size must be 4K or 2M, and its address aligned to it.
fn rmp_page(keyword: &'static str, spa: u64, size: PageSize) -> Checked {
    if size == PageSize::G1 {
        return Err((FieldRef::Named("size"), ErrorKind::RmpSize { keyword, size }));
    }
    aligned(keyword, FieldRef::Named("spa"), "spa", spa, size)
}

pub(crate) fn event(e: &Event) -> Checked {
    let kw = e.keyword();
    match e {
        Event::RmpUpdate { spa, size, .. } => rmp_page(kw, spa.raw(), *size),
        Event::Psmash { spa } => {
            aligned(kw, FieldRef::Named("spa"), "spa", spa.raw(), PageSize::M2)
        }
        Event::Map { va, pa, size, .. } => {
            aligned(kw, FieldRef::Positional(0), "va", va.raw(), *size)?;
            aligned(kw, FieldRef::Positional(1), "pa", pa.raw(), *size)
        }
        Event::Unmap { va, size, .. } | Event::Protect { va, size, .. } => {
            aligned(kw, FieldRef::Positional(0), "va", va.raw(), *size)
        }
        Event::ThpCollapse { va, .. } | Event::ThpSplit { va, .. } => {
            aligned(kw, FieldRef::Positional(0), "va", va.raw(), PageSize::M2)
        }
        _ => Ok(()),
    }
}

pub(crate) fn state(s: &StateItem) -> Checked {
    let kw = s.keyword();
    match s {
        StateItem::Rmp { spa, size, .. } => rmp_page(kw, spa.raw(), *size),
        StateItem::DirectMap { spa, size, len } => {
            aligned(kw, FieldRef::Named("spa"), "spa", spa.raw(), *size)?;
            if let Some(len) = *len {
                if len == 0 || len & (size.bytes() - 1) != 0 {
                    return Err((
                        FieldRef::Named("len"),
                        ErrorKind::BadLength { keyword: kw, len, size: *size },
                    ));
                }
                let end = spa.raw().checked_add(len);
                if end.is_none_or(|e| e > 1u64 << MAX_PHYS_BITS) {
                    return Err((
                        FieldRef::Named("len"),
                        ErrorKind::BeyondPhysLimit { keyword: kw, start: spa.raw(), len },
                    ));
                }
            }
            Ok(())
        }
        StateItem::Map { va, pa, size, .. } => {
            aligned(kw, FieldRef::Positional(0), "va", va.raw(), *size)?;
            aligned(kw, FieldRef::Positional(1), "pa", pa.raw(), *size)
        }
        _ => Ok(()),
    }
}

pub(crate) fn expect(c: &Check) -> Result<(), ErrorKind> {
    if c.checks_something() {
        Ok(())
    } else {
        let keyword = c.keyword();
        Err(ErrorKind::ChecksNothing { keyword, usage: Check::usage(keyword).unwrap_or_default() })
    }
}

/// A word the text form can carry as one token: non-empty, no whitespace, no `#`.
fn is_word(s: &str) -> bool {
    !s.is_empty() && !s.contains('#') && !s.chars().any(char::is_whitespace)
}

/// The section keywords of header settings: the configuration sections a scenario may set
/// (`machine`, `host`, `mmu`, `rmp`, `cache`, as `ccsim presets` lists their fields) and `vm`.
pub(crate) const SECTIONS: [&str; 6] = ["machine", "host", "mmu", "rmp", "cache", "vm"];

pub(crate) fn setting(s: &Setting) -> Result<(), ErrorKind> {
    let Some(section) = SECTIONS.iter().copied().find(|&k| k == s.section) else {
        return Err(ErrorKind::UnknownLine {
            found: s.section.clone(),
            suggestion: super::error::nearest(&s.section, SECTIONS),
        });
    };
    if section == "vm" {
        let [n, kind] = s.args.as_slice() else { return Err(ErrorKind::VmHeader) };
        if !is_word(n) || !is_word(kind) || n.contains('=') || kind.contains('=') {
            return Err(ErrorKind::VmHeader);
        }
        u32::parse_text(n, &TextCtx::default()).map_err(ErrorKind::VmNumber)?;
        kind.parse::<VmKind>().map_err(ErrorKind::VmKind)?;
    } else if let Some(a) = s.args.first() {
        return Err(ErrorKind::SettingNotPair { section, found: a.clone() });
    } else if s.pairs.is_empty() {
        return Err(ErrorKind::EmptySetting { section });
    }
    for (i, (k, v)) in s.pairs.iter().enumerate() {
        if !is_word(k) || !is_word(v) || k.contains('=') {
            return Err(ErrorKind::EmptyKeyOrValue { found: format!("{k}={v}") });
        }
        if s.pairs[..i].iter().any(|(p, _)| p == k) {
            return Err(ErrorKind::DuplicateKey { key: k.clone() });
        }
    }
    Ok(())
}

/// Whether `name` is a valid program name (the characters of a counter name).
pub(crate) fn program_name(name: &str) -> Result<(), ErrorKind> {
    String::parse_text(name, &TextCtx::default())
        .map(drop)
        .map_err(|_| ErrorKind::ProgramName { found: name.to_owned() })
}

/// Whether the text form accepts `record` on its own: every rule of a line except those about
/// its place in the file (header before body, `expect` after an event, program nesting).
///
/// Records decoded from the binary form pass this when they came from a scenario; a
/// converter calls it to report a record the text form cannot carry before writing it.
///
/// # Errors
/// The [`ErrorKind`] the parser would report for the line.
pub fn check_record(record: &Record) -> Result<(), ErrorKind> {
    match record {
        Record::Event(te) => event(&te.event).map_err(|(_, k)| k),
        Record::Setting(s) => setting(s),
        Record::State(s) => state(s).map_err(|(_, k)| k),
        Record::Expect { check, .. } => expect(check),
        Record::ProgramBegin(name) => program_name(name),
        Record::ProgramEnd => Ok(()),
    }
}
