//! Scenario errors: every one names `FILE:LINE:COL`, so an editor can jump to it.

use sim_core::PageSize;
use sim_core::agent::AgentParseError;
use sim_core::codec::FieldError;
use sim_core::vocab::TextErrorKind;
use std::fmt;

/// Where in a scenario file an error is. Columns count characters from 1; column 1 stands for
/// the whole line when no better column exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name as given to the parser.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (characters).
    pub col: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A scenario could not be read. `Display` is `FILE:LINE:COL: message`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// A line that does not follow the grammar (docs/scenario-format.md).
    #[error("{at}: {kind}")]
    Syntax {
        /// Where.
        at: Location,
        /// What was wrong.
        kind: ErrorKind,
    },
    /// The underlying reader failed.
    #[error("{at}: read error: {source}")]
    Io {
        /// The line being read when it failed.
        at: Location,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ScenarioError {
    /// Where the error is.
    pub fn location(&self) -> &Location {
        match self {
            ScenarioError::Syntax { at, .. } | ScenarioError::Io { at, .. } => at,
        }
    }

    /// The file name as given to the parser.
    pub fn file(&self) -> &str {
        &self.location().file
    }

    /// 1-based line.
    pub fn line(&self) -> u32 {
        self.location().line
    }

    /// 1-based column (characters).
    pub fn col(&self) -> u32 {
        self.location().col
    }

    /// What was wrong, for a syntax error.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            ScenarioError::Syntax { kind, .. } => Some(kind),
            ScenarioError::Io { .. } => None,
        }
    }
}

/// What was wrong with a scenario line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The line is longer than [`super::MAX_LINE_BYTES`].
    #[error("line is longer than {limit} bytes")]
    LineTooLong {
        /// The bound in bytes.
        limit: usize,
    },
    /// The line is not UTF-8 (the column is the first bad byte).
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// The file has more lines than a `u32` counts.
    #[error("scenario has more than {} lines", u32::MAX)]
    TooManyLines,
    /// The first word is neither an agent nor a line keyword.
    #[error(
        "expected an agent (cN host, cN proc:PID, cN vmV/vK, dev:ID, fw:asp, fw:tdx) or a line \
         keyword (version, machine, host, vm, state, expect, program, end), found `{found}`{}",
        Suggest(*suggestion)
    )]
    UnknownLine {
        /// The first word.
        found: String,
        /// The nearest line keyword, if one is close.
        suggestion: Option<&'static str>,
    },
    /// An event keyword at the start of a line, without the agent that issues it.
    #[error("event `{keyword}` needs an agent before it, e.g. `c0 host {keyword} …`")]
    EventNeedsAgent {
        /// The event keyword.
        keyword: &'static str,
    },
    /// The agent's text is wrong.
    #[error("bad agent: {0}")]
    Agent(AgentParseError),
    /// An agent with no event after it.
    #[error("agent `{agent}` needs an event after it")]
    MissingEvent {
        /// The agent as written.
        agent: String,
    },
    /// A keyword that is not in the vocabulary (`what`: event, check, state item).
    #[error("unknown {what} `{found}`{}", Suggest(*suggestion))]
    UnknownKeyword {
        /// Which vocabulary: "event", "check" or "state item".
        what: &'static str,
        /// The word found.
        found: String,
        /// The nearest keyword, if one is close.
        suggestion: Option<&'static str>,
    },
    /// A field of an event, state item or check is missing, unknown, repeated or malformed.
    #[error("{0}")]
    Field(TextErrorKind),
    /// The `@CYCLE` stamp is not a number.
    #[error("bad cycle stamp: {0}")]
    BadTime(FieldError),
    /// An address the operation requires to be aligned is not.
    #[error("`{keyword}` {field}={value:#x} is not {align}-aligned")]
    Misaligned {
        /// The keyword of the line.
        keyword: &'static str,
        /// The field.
        field: &'static str,
        /// The address.
        value: u64,
        /// The alignment required.
        align: PageSize,
    },
    /// An RMP entry of a size the RMP does not have.
    #[error("`{keyword}` size={size}: RMP entries are 4K or 2M")]
    RmpSize {
        /// The keyword of the line.
        keyword: &'static str,
        /// The size found.
        size: PageSize,
    },
    /// A length that must be a non-zero multiple of a page size is not.
    #[error("`{keyword}` len={len:#x} must be a non-zero multiple of {size}")]
    BadLength {
        /// The keyword of the line.
        keyword: &'static str,
        /// The length.
        len: u64,
        /// The page size.
        size: PageSize,
    },
    /// A physical range that passes the 52-bit physical-address limit.
    #[error("`{keyword}` range {start:#x}+{len:#x} passes the 52-bit physical-address limit")]
    BeyondPhysLimit {
        /// The keyword of the line.
        keyword: &'static str,
        /// First byte.
        start: u64,
        /// Bytes.
        len: u64,
    },
    /// A bare `0x…` address where no agent says what kind it is.
    #[error(
        "`{keyword}` {field} needs an address prefix here (phys:, gpa:, gva:, hva:, iova:), \
         found `{found}`"
    )]
    NeedsPrefix {
        /// The keyword of the line.
        keyword: &'static str,
        /// The field.
        field: &'static str,
        /// The token found.
        found: String,
    },
    /// `expect` (not `final`) with no event before it in its scope.
    #[error(
        "`expect` has no event before it{} to check (write `expect final …` to check the end \
         state)",
        if *in_program { " in this program" } else { "" }
    )]
    ExpectWithoutEvent {
        /// Inside a program.
        in_program: bool,
    },
    /// `expect` with no check keyword.
    #[error("`expect` needs a check: one of {}", keyword_list(sim_core::Check::KEYWORDS))]
    MissingCheck,
    /// `expect` whose check asserts nothing.
    #[error(
        "`expect {keyword}` checks nothing: give at least one field to compare (usage: {usage})"
    )]
    ChecksNothing {
        /// The check keyword.
        keyword: &'static str,
        /// Its usage line.
        usage: String,
    },
    /// `state` with no item keyword.
    #[error("`state` needs an item: one of {}", keyword_list(sim_core::StateItem::KEYWORDS))]
    MissingStateItem,
    /// The `version` line is malformed.
    #[error("malformed version `{found}` (expected `version 1` or `version 1.MINOR`)")]
    MalformedVersion {
        /// What follows `version`.
        found: String,
    },
    /// A major format version this build does not read.
    #[error(
        "scenario format version {major} is not supported: this ccsim reads version {}",
        sim_core::FORMAT_MAJOR
    )]
    UnsupportedMajor {
        /// The major version found.
        major: u64,
    },
    /// A minor format version newer than this build.
    #[error(
        "scenario needs format version {}.{minor}; this ccsim reads up to {}.{} (upgrade ccsim)",
        sim_core::FORMAT_MAJOR,
        sim_core::FORMAT_MAJOR,
        sim_core::FORMAT_MINOR
    )]
    NeedsNewerMinor {
        /// The minor version found.
        minor: u64,
    },
    /// `version` after another line.
    #[error("`version` must be the first line of the scenario")]
    VersionNotFirst,
    /// A setting line without `key=value` where one is needed, or a bare word among the pairs.
    #[error("`{section}` expects key=value settings, found `{found}`")]
    SettingNotPair {
        /// The section.
        section: &'static str,
        /// The token found.
        found: String,
    },
    /// `machine`/`host` with no settings.
    #[error("`{section}` needs at least one key=value setting")]
    EmptySetting {
        /// The section.
        section: &'static str,
    },
    /// A `key=value` with an empty key or value.
    #[error("`{found}`: a setting needs a non-empty key and value")]
    EmptyKeyOrValue {
        /// The token found.
        found: String,
    },
    /// The same key twice on one setting line.
    #[error("setting `{key}` given twice on this line")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// `vm` without its number and kind.
    #[error("`vm` needs a VM number and a kind: `vm N KIND key=value…` (KIND: {})", vm_kinds())]
    VmHeader,
    /// The VM number of a `vm` line is not a number.
    #[error("`vm` number: {0}")]
    VmNumber(FieldError),
    /// The VM kind of a `vm` line is unknown.
    #[error("`vm` kind: {0}")]
    VmKind(FieldError),
    /// A header line (`machine`, `host`, `vm`, `state`) after the first event.
    #[error(
        "`{what}` belongs in the header, before the first event, expect or program (line {first_line})"
    )]
    HeaderAfterBody {
        /// The line keyword.
        what: &'static str,
        /// The line of the first body line.
        first_line: u32,
    },
    /// `program` inside a program.
    #[error(
        "program `{name}` starts inside program `{outer}` (line {outer_line}); close that one with `end` first"
    )]
    NestedProgram {
        /// The new program.
        name: String,
        /// The open program.
        outer: String,
        /// Its line.
        outer_line: u32,
    },
    /// A program without `end` at end of file (reported at its `program` line).
    #[error("program `{name}` has no `end`")]
    UnterminatedProgram {
        /// The program.
        name: String,
    },
    /// `end` with no open program.
    #[error("`end` without a `program` to close")]
    EndWithoutProgram,
    /// Two programs with one name.
    #[error("program `{name}` is already defined at line {first_line}")]
    DuplicateProgram {
        /// The name.
        name: String,
        /// Where it was first defined.
        first_line: u32,
    },
    /// `program` without a name, or a name with characters outside `[A-Za-z0-9._-:/+]`.
    #[error("`program` needs a name of characters [A-Za-z0-9._-:/+], found `{found}`")]
    ProgramName {
        /// The name found (empty if none).
        found: String,
    },
    /// A line kind that a program cannot contain.
    #[error("`{what}` is not allowed inside program `{program}` (only events and `expect`)")]
    NotInProgram {
        /// The line keyword.
        what: &'static str,
        /// The open program.
        program: String,
    },
    /// A word after a line that is complete.
    #[error("unexpected `{found}` after `{after}`")]
    Trailing {
        /// The extra word.
        found: String,
        /// The line keyword.
        after: &'static str,
    },
}

/// `; did you mean `x`?` or nothing.
struct Suggest(Option<&'static str>);

impl fmt::Display for Suggest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => write!(f, "; did you mean `{s}`?"),
            None => Ok(()),
        }
    }
}

fn keyword_list(kws: &[(&str, u16)]) -> String {
    kws.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
}

fn vm_kinds() -> String {
    sim_core::event::VmKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
}

/// The keyword of `candidates` nearest to `word` (optimal-string-alignment distance), if it is
/// close enough to be a likely typo: at most one edit per three characters, and at least one.
pub(crate) fn nearest<'k>(
    word: &str,
    candidates: impl IntoIterator<Item = &'k str>,
) -> Option<&'k str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (osa_distance(word, c), c))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Edit distance counting insertions, deletions, substitutions and adjacent transpositions.
fn osa_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rolling rows: i-2, i-1, i.
    let mut prev2 = vec![0usize; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_suggestions() {
        assert_eq!(osa_distance("expcet", "expect"), 1);
        assert_eq!(osa_distance("", "ab"), 2);
        assert_eq!(osa_distance("rmpupdat", "rmpupdate"), 1);
        assert_eq!(nearest("stroe", ["store", "load"]), Some("store"));
        assert_eq!(nearest("xyz", ["vm", "end"]), None);
    }
}
