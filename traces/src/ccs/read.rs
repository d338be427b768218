//! Streaming reader: bounded lines from any `BufRead`, parsed one at a time.

use super::error::{ErrorKind, Location, ScenarioError};
use super::parse::Parser;
use super::{Located, MAX_LINE_BYTES};
use std::io::{self, BufRead};

/// The records of a scenario, read line by line in constant memory (see [`super::parse_reader`]).
///
/// Yields each record with its line, then stops after the first error.
#[derive(Debug)]
pub struct Records<R> {
    reader: R,
    file: String,
    parser: Parser,
    /// The line last read (1-based; 0 before the first).
    line: u32,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> Records<R> {
    pub(crate) fn new(reader: R, file: &str) -> Self {
        Records {
            reader,
            file: file.to_owned(),
            parser: Parser::default(),
            line: 0,
            buf: Vec::new(),
            done: false,
        }
    }

    fn at(&self, line: u32, col: u32) -> Location {
        Location { file: self.file.clone(), line, col }
    }

    fn syntax(&self, line: u32, col: u32, kind: ErrorKind) -> ScenarioError {
        ScenarioError::Syntax { at: self.at(line, col), kind }
    }

    /// Read the next line into `buf` (without its `\n` or `\r\n`). `Ok(false)` at end of input.
    fn read_line(&mut self) -> Result<bool, ScenarioError> {
        self.buf.clear();
        let next = self.line.checked_add(1);
        let mut started = false;
        loop {
            let avail = match self.reader.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    let at = self.at(next.unwrap_or(u32::MAX), 1);
                    return Err(ScenarioError::Io { at, source });
                }
            };
            if avail.is_empty() {
                if !started {
                    return Ok(false);
                }
                break;
            }
            if !started {
                started = true;
                let Some(n) = next else {
                    let at = Location { file: self.file.clone(), line: u32::MAX, col: 1 };
                    return Err(ScenarioError::Syntax { at, kind: ErrorKind::TooManyLines });
                };
                self.line = n;
            }
            let newline = avail.iter().position(|&b| b == b'\n');
            let take = newline.unwrap_or(avail.len());
            if self.buf.len() + take > MAX_LINE_BYTES {
                // Stop here: the rest of the line is never buffered.
                let kind = ErrorKind::LineTooLong { limit: MAX_LINE_BYTES };
                return Err(self.syntax(self.line, 1, kind));
            }
            self.buf.extend_from_slice(&avail[..take]);
            self.reader.consume(take + usize::from(newline.is_some()));
            if newline.is_some() {
                break;
            }
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(true)
    }

    fn step(&mut self) -> Option<Result<Located, ScenarioError>> {
        loop {
            match self.read_line() {
                Err(e) => return Some(Err(e)),
                Ok(false) => {
                    let (line, kind) = self.parser.finish().err()?;
                    return Some(Err(self.syntax(line, 1, kind)));
                }
                Ok(true) => {}
            }
            let line = self.line;
            let text = match std::str::from_utf8(&self.buf) {
                Ok(t) => t,
                Err(e) => {
                    let good = std::str::from_utf8(&self.buf[..e.valid_up_to()]).unwrap_or("");
                    return Some(Err(self.syntax(
                        line,
                        char_col(good, good.len() + 1),
                        ErrorKind::NotUtf8,
                    )));
                }
            };
            match self.parser.line(line, text) {
                Ok(Some(record)) => return Some(Ok(Located { line, record })),
                Ok(None) => {}
                Err(e) => {
                    let col = char_col(text, e.col);
                    let at = Location { file: self.file.clone(), line, col };
                    return Some(Err(ScenarioError::Syntax { at, kind: e.kind }));
                }
            }
        }
    }
}

/// Convert a 1-based byte column of `text` to a 1-based character column.
fn char_col(text: &str, byte_col: usize) -> u32 {
    let b = byte_col.saturating_sub(1);
    let chars = text.get(..b).map_or(b, |s| s.chars().count());
    u32::try_from(chars + 1).unwrap_or(u32::MAX)
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<Located, ScenarioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

impl<R: BufRead> std::iter::FusedIterator for Records<R> {}
