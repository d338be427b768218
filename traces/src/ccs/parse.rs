//! The line parser: one line in, at most one record out, with the state that the grammar's
//! ordering rules need (header before body, `expect` after an event, program blocks).

use super::check::{self, FieldRef, SECTIONS};
use super::error::{ErrorKind, nearest};
use sim_core::agent::{AgentParseError, Context};
use sim_core::codec::{BareAddr, FieldError, TextCtx, parse_u64};
use sim_core::event::VmKind;
use sim_core::vocab::{TextError, Token, tokenize};
use sim_core::{Agent, Check, Cycles, Event, Record, Setting, StateItem, TimedEvent};
use std::collections::BTreeMap;

/// Every word that can start a line other than an agent or a cycle stamp.
pub(crate) const LINE_KEYWORDS: [&str; 11] = [
    "version", "machine", "host", "mmu", "rmp", "cache", "vm", "state", "expect", "program", "end",
];

/// A line error with its byte column (1-based) in the line.
#[derive(Debug)]
pub(crate) struct LineError {
    pub(crate) col: usize,
    pub(crate) kind: ErrorKind,
}

type LineResult<T> = Result<T, LineError>;

fn err<T>(col: usize, kind: ErrorKind) -> LineResult<T> {
    Err(LineError { col, kind })
}

fn text_err(e: TextError) -> LineError {
    LineError { col: e.col, kind: ErrorKind::Field(e.kind) }
}

/// The column just past the last token: where a missing word would go.
fn end_col(toks: &[Token<'_>]) -> usize {
    toks.last().map_or(1, |t| t.col + t.text.len() + 1)
}

/// The column of a field for an error found after parsing.
fn field_col(keyword: Token<'_>, fields: &[Token<'_>], f: FieldRef) -> usize {
    match f {
        FieldRef::Positional(i) => fields.get(i).map_or(keyword.col, |t| t.col),
        FieldRef::Named(name) => fields
            .iter()
            .find_map(|t| match t.text.split_once('=') {
                Some((n, _)) if n == name => Some(t.col + n.len() + 1),
                None if t.text == name => Some(t.col),
                _ => None,
            })
            .unwrap_or(keyword.col),
    }
}

/// How a bare `0x…` address reads for an agent (module docs of `sim_core::codec`).
fn ctx_for(agent: Agent) -> TextCtx {
    let bare_addr = match agent {
        Agent::Cpu { ctx: Context::HostKernel | Context::HostProcess(_), .. } => BareAddr::Hva,
        Agent::Cpu { ctx: Context::Guest { .. }, .. } => BareAddr::Gva,
        Agent::Device(_) => BareAddr::Iova,
        Agent::Firmware(_) => BareAddr::Spa,
    };
    TextCtx { bare_addr }
}

/// Whether a first word is meant as an agent: `cN…`, `dev:…`, `fw:…`.
fn looks_like_agent(t: &str) -> bool {
    t.strip_prefix('c').is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        || t.starts_with("dev:")
        || t.starts_with("fw:")
}

/// Parser state carried from line to line.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    /// A line with content has been seen (so `version` may no longer appear).
    seen_content: bool,
    /// The line of the first event, expect or program: the header ends there.
    first_body_line: Option<u32>,
    /// An event has been seen in the current scope (top level, or the open program), since
    /// the last program boundary.
    has_event: bool,
    /// The open program and its line.
    program: Option<(String, u32)>,
    /// Every program name and its line.
    programs: BTreeMap<String, u32>,
}

impl Parser {
    /// Parse one line (no newline). `Ok(None)` for blank, comment and `version` lines.
    pub(crate) fn line(&mut self, line: u32, text: &str) -> LineResult<Option<Record>> {
        let toks = tokenize(text);
        let Some(&first) = toks.first() else { return Ok(None) };
        if first.text == "version" {
            if self.seen_content {
                return err(first.col, ErrorKind::VersionNotFirst);
            }
            self.seen_content = true;
            version(&toks)?;
            return Ok(None);
        }
        self.seen_content = true;
        let rec = match first.text {
            kw @ ("machine" | "host" | "mmu" | "rmp" | "cache" | "vm" | "state") => {
                // The keyword as a `'static` word for messages.
                let what = LINE_KEYWORDS.iter().copied().find(|&k| k == kw).unwrap_or("state");
                self.header(first.col, what)?;
                if what == "state" {
                    Record::State(state(&toks)?)
                } else {
                    Record::Setting(setting(&toks)?)
                }
            }
            "expect" => self.expect(line, &toks)?,
            "program" => self.program(line, &toks)?,
            "end" => {
                if let Some(extra) = toks.get(1) {
                    return err(
                        extra.col,
                        ErrorKind::Trailing { found: extra.text.into(), after: "end" },
                    );
                }
                if self.program.take().is_none() {
                    return err(first.col, ErrorKind::EndWithoutProgram);
                }
                self.has_event = false;
                Record::ProgramEnd
            }
            t if t.starts_with('@') || looks_like_agent(t) => {
                let ev = event(&toks)?;
                self.body(line);
                self.has_event = true;
                Record::Event(ev)
            }
            t => {
                if let Some(&(keyword, _)) = Event::KEYWORDS.iter().find(|(k, _)| *k == t) {
                    return err(first.col, ErrorKind::EventNeedsAgent { keyword });
                }
                let suggestion = nearest(t, LINE_KEYWORDS);
                return err(first.col, ErrorKind::UnknownLine { found: t.into(), suggestion });
            }
        };
        Ok(Some(rec))
    }

    /// At end of input: an open program is an error at its `program` line.
    pub(crate) fn finish(&self) -> Result<(), (u32, ErrorKind)> {
        match &self.program {
            Some((name, line)) => {
                Err((*line, ErrorKind::UnterminatedProgram { name: name.clone() }))
            }
            None => Ok(()),
        }
    }

    /// Checks for a header line: not in a program, not after the body has begun.
    fn header(&self, col: usize, what: &'static str) -> LineResult<()> {
        if let Some((program, _)) = &self.program {
            return err(col, ErrorKind::NotInProgram { what, program: program.clone() });
        }
        if let Some(first_line) = self.first_body_line {
            return err(col, ErrorKind::HeaderAfterBody { what, first_line });
        }
        Ok(())
    }

    fn body(&mut self, line: u32) {
        self.first_body_line.get_or_insert(line);
    }

    fn expect(&mut self, line: u32, toks: &[Token<'_>]) -> LineResult<Record> {
        let at_end = toks.get(1).is_some_and(|t| t.text == "final");
        let k = if at_end { 2 } else { 1 };
        let Some(&kw) = toks.get(k) else { return err(end_col(toks), ErrorKind::MissingCheck) };
        let check = match Check::parse_text(kw, &toks[k + 1..], &TextCtx::default()) {
            Ok(Some(c)) => c,
            Ok(None) => {
                let suggestion = nearest(kw.text, Check::KEYWORDS.iter().map(|(k, _)| *k));
                return err(
                    kw.col,
                    ErrorKind::UnknownKeyword { what: "check", found: kw.text.into(), suggestion },
                );
            }
            Err(e) => return Err(text_err(e)),
        };
        check::expect(&check).map_err(|kind| LineError { col: kw.col, kind })?;
        if at_end {
            if let Some((program, _)) = &self.program {
                let program = program.clone();
                return err(toks[0].col, ErrorKind::NotInProgram { what: "expect final", program });
            }
        } else if !self.has_event {
            let in_program = self.program.is_some();
            return err(toks[0].col, ErrorKind::ExpectWithoutEvent { in_program });
        }
        self.body(line);
        Ok(Record::Expect { at_end, check })
    }

    fn program(&mut self, line: u32, toks: &[Token<'_>]) -> LineResult<Record> {
        let Some(name) = toks.get(1) else {
            return err(end_col(toks), ErrorKind::ProgramName { found: String::new() });
        };
        check::program_name(name.text).map_err(|kind| LineError { col: name.col, kind })?;
        if let Some(extra) = toks.get(2) {
            return err(
                extra.col,
                ErrorKind::Trailing { found: extra.text.into(), after: "program" },
            );
        }
        if let Some((outer, outer_line)) = &self.program {
            let kind = ErrorKind::NestedProgram {
                name: name.text.into(),
                outer: outer.clone(),
                outer_line: *outer_line,
            };
            return err(toks[0].col, kind);
        }
        if let Some(&first_line) = self.programs.get(name.text) {
            return err(
                name.col,
                ErrorKind::DuplicateProgram { name: name.text.into(), first_line },
            );
        }
        self.programs.insert(name.text.into(), line);
        self.program = Some((name.text.into(), line));
        self.has_event = false;
        self.body(line);
        Ok(Record::ProgramBegin(name.text.into()))
    }
}

fn version(toks: &[Token<'_>]) -> LineResult<()> {
    let Some(v) = toks.get(1) else {
        return err(end_col(toks), ErrorKind::MalformedVersion { found: String::new() });
    };
    if let Some(extra) = toks.get(2) {
        return err(extra.col, ErrorKind::Trailing { found: extra.text.into(), after: "version" });
    }
    let number = |s: &str| {
        (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (major, minor) = match v.text.split_once('.') {
        Some((a, b)) => (number(a), number(b)),
        None => (number(v.text), Some(0)),
    };
    let (Some(major), Some(minor)) = (major, minor) else {
        return err(v.col, ErrorKind::MalformedVersion { found: v.text.into() });
    };
    if major != u64::from(sim_core::FORMAT_MAJOR) {
        return err(v.col, ErrorKind::UnsupportedMajor { major });
    }
    if minor > u64::from(sim_core::FORMAT_MINOR) {
        return err(v.col, ErrorKind::NeedsNewerMinor { minor });
    }
    Ok(())
}

fn setting(toks: &[Token<'_>]) -> LineResult<Setting> {
    let first = toks[0];
    let section = SECTIONS.iter().copied().find(|&s| s == first.text).unwrap_or("vm");
    let mut rest = &toks[1..];
    let mut args = Vec::new();
    if section == "vm" {
        let (Some(n), Some(kind)) = (rest.first(), rest.get(1)) else {
            return err(end_col(toks), ErrorKind::VmHeader);
        };
        for t in [n, kind] {
            if t.text.contains('=') {
                return err(t.col, ErrorKind::VmHeader);
            }
        }
        u32::try_from(
            parse_u64(n.text)
                .map_err(|e| LineError { col: n.col, kind: ErrorKind::VmNumber(e) })?,
        )
        .map_err(|_| LineError {
            col: n.col,
            kind: ErrorKind::VmNumber(FieldError::OutOfRange { what: "u32", text: n.text.into() }),
        })?;
        kind.text
            .parse::<VmKind>()
            .map_err(|e| LineError { col: kind.col, kind: ErrorKind::VmKind(e) })?;
        args = vec![n.text.to_owned(), kind.text.to_owned()];
        rest = &rest[2..];
    } else if rest.is_empty() {
        return err(end_col(toks), ErrorKind::EmptySetting { section });
    }
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(rest.len());
    for t in rest {
        let Some((k, v)) = t.text.split_once('=') else {
            return err(t.col, ErrorKind::SettingNotPair { section, found: t.text.into() });
        };
        if k.is_empty() || v.is_empty() {
            return err(t.col, ErrorKind::EmptyKeyOrValue { found: t.text.into() });
        }
        if pairs.iter().any(|(p, _)| p == k) {
            return err(t.col, ErrorKind::DuplicateKey { key: k.into() });
        }
        pairs.push((k.into(), v.into()));
    }
    Ok(Setting { section: section.into(), args, pairs })
}

fn state(toks: &[Token<'_>]) -> LineResult<StateItem> {
    let Some(&kw) = toks.get(1) else { return err(end_col(toks), ErrorKind::MissingStateItem) };
    let fields = &toks[2..];
    if kw.text == "map" {
        // No agent says what a bare address means here, so both must carry their kind.
        for (t, field) in fields.iter().zip(["va", "pa"]) {
            if !t.text.contains(':') {
                return err(
                    t.col,
                    ErrorKind::NeedsPrefix { keyword: "map", field, found: t.text.into() },
                );
            }
        }
    }
    let item = match StateItem::parse_text(kw, fields, &TextCtx::default()) {
        Ok(Some(s)) => s,
        Ok(None) => {
            let suggestion = nearest(kw.text, StateItem::KEYWORDS.iter().map(|(k, _)| *k));
            return err(
                kw.col,
                ErrorKind::UnknownKeyword { what: "state item", found: kw.text.into(), suggestion },
            );
        }
        Err(e) => return Err(text_err(e)),
    };
    check::state(&item).map_err(|(f, kind)| LineError { col: field_col(kw, fields, f), kind })?;
    Ok(item)
}

fn event(toks: &[Token<'_>]) -> LineResult<TimedEvent> {
    let mut i = 0;
    let mut time = None;
    if let Some(stamp) = toks[0].text.strip_prefix('@') {
        let n = parse_u64(stamp)
            .map_err(|e| LineError { col: toks[0].col, kind: ErrorKind::BadTime(e) })?;
        time = Some(Cycles::new(n));
        i = 1;
    }
    let Some(a0) = toks.get(i) else {
        let e =
            AgentParseError { token: 0, what: "agent after the cycle stamp", text: String::new() };
        return err(end_col(toks), ErrorKind::Agent(e));
    };
    let a1 = toks.get(i + 1);
    let (agent, used) = Agent::parse(a0.text, a1.map(|t| t.text)).map_err(|e| {
        let col = match (e.token, a1) {
            (0, _) => a0.col,
            (_, Some(t)) => t.col,
            (_, None) => a0.col + a0.text.len() + 1,
        };
        LineError { col, kind: ErrorKind::Agent(e) }
    })?;
    let Some(&kw) = toks.get(i + used) else {
        return err(end_col(toks), ErrorKind::MissingEvent { agent: agent.to_string() });
    };
    let fields = &toks[i + used + 1..];
    let event = match Event::parse_text(kw, fields, &ctx_for(agent)) {
        Ok(Some(e)) => e,
        Ok(None) => {
            let suggestion = nearest(kw.text, Event::KEYWORDS.iter().map(|(k, _)| *k));
            return err(
                kw.col,
                ErrorKind::UnknownKeyword { what: "event", found: kw.text.into(), suggestion },
            );
        }
        Err(e) => return Err(text_err(e)),
    };
    check::event(&event).map_err(|(f, kind)| LineError { col: field_col(kw, fields, f), kind })?;
    Ok(TimedEvent { time, agent, event })
}
