//! The macro that declares a vocabulary enum once and derives its text and binary forms.
//!
//! A declaration lists, per variant, a stable binary tag, a text keyword, positional fields and
//! named fields (with optional defaults). From it the macro generates the enum, the keyword and
//! tag tables, `write_text`/`parse_text` for `.ccs` and `encode`/`decode` for `.cct`.
//!
//! Text rules: `keyword POS1 POS2 name=value flag …`. A named field may be omitted when it has a
//! default (declared with `= expr`, or `false` for flags and absent for `Option`s); the printer
//! omits a field whose value equals its default, so a printed line is the shortest exact form.

use crate::codec::FieldError;

/// How a field type is named in usage lines: `Option<T>` shows as `T` (the brackets already
/// say the field is optional).
pub fn type_label(t: &str) -> &str {
    let t = t.trim();
    t.strip_prefix("Option<").and_then(|r| r.strip_suffix('>')).map_or(t, str::trim)
}

/// One whitespace-separated token of a text line, with its 1-based column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// 1-based column of the token's first character.
    pub col: usize,
    /// The token text.
    pub text: &'a str,
}

/// Split a line into tokens, stopping at a `#` comment.
pub fn tokenize(line: &str) -> Vec<Token<'_>> {
    let code = line.find('#').map_or(line, |i| &line[..i]);
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in code.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push(Token { col: s + 1, text: &code[s..i] });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(Token { col: s + 1, text: &code[s..] });
    }
    out
}

/// What was wrong with the fields of a text line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextErrorKind {
    /// A positional field was missing.
    #[error("`{keyword}` needs {field} (usage: {usage})")]
    MissingPositional {
        /// The keyword.
        keyword: &'static str,
        /// The missing field.
        field: &'static str,
        /// The usage line.
        usage: String,
    },
    /// A required named field was missing.
    #[error("`{keyword}` needs {field}=… (usage: {usage})")]
    MissingNamed {
        /// The keyword.
        keyword: &'static str,
        /// The missing field.
        field: &'static str,
        /// The usage line.
        usage: String,
    },
    /// A named field the keyword does not have.
    #[error("`{keyword}` has no field `{field}` (usage: {usage})")]
    UnknownField {
        /// The keyword.
        keyword: &'static str,
        /// The unknown name.
        field: String,
        /// The usage line.
        usage: String,
    },
    /// A field given twice.
    #[error("field `{0}` given twice")]
    Duplicate(String),
    /// A field value that does not parse.
    #[error("field `{field}`: {err}")]
    Value {
        /// The field.
        field: &'static str,
        /// Why.
        err: FieldError,
    },
    /// A bare word where the field needs `name=value`.
    #[error("field `{0}` needs a value (`{0}=…`)")]
    NeedsValue(String),
}

/// A text field error with the column it was found at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {col}: {kind}")]
pub struct TextError {
    /// 1-based column.
    pub col: usize,
    /// What was wrong.
    pub kind: TextErrorKind,
}

/// Why a binary record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The tag is not in this version's vocabulary.
    #[error("unknown {what} tag {tag}")]
    UnknownTag {
        /// Which vocabulary.
        what: &'static str,
        /// The tag found.
        tag: u64,
    },
    /// A field failed to decode.
    #[error("{keyword}.{field}: {err}")]
    Field {
        /// The variant.
        keyword: &'static str,
        /// The field.
        field: &'static str,
        /// Why.
        err: FieldError,
    },
}

#[doc(hidden)]
#[macro_export]
macro_rules! __vocab_default {
    ($t:ty;) => {
        <$t as $crate::vocab::Absent>::absent()
    };
    ($t:ty; $def:expr) => {
        Some::<$t>($def)
    };
}

/// The value a named field takes when a line omits it: `false` for flags, `None` for options,
/// nothing (required) otherwise.
pub trait Absent: Sized {
    /// The implied value, if any.
    fn absent() -> Option<Self>;
}

macro_rules! absent_none {
    ($($t:ty),*) => {$( impl Absent for $t { fn absent() -> Option<Self> { None } } )*};
}
absent_none!(
    u8,
    u16,
    u32,
    u64,
    String,
    crate::PageSize,
    crate::codec::Hex,
    crate::addr::Spa,
    crate::addr::Gpa,
    crate::addr::Gva,
    crate::addr::Hva,
    crate::addr::Iova
);
impl Absent for bool {
    fn absent() -> Option<Self> {
        Some(false)
    }
}
impl<T> Absent for Option<T> {
    fn absent() -> Option<Self> {
        Some(None)
    }
}
impl<T> Absent for Vec<T> {
    fn absent() -> Option<Self> {
        None
    }
}

/// Declare a vocabulary enum (see the module docs).
#[macro_export]
macro_rules! vocabulary {
    (
        $(#[$edoc:meta])*
        pub enum $Enum:ident : $what:literal {
            $(
                $(#[$vdoc:meta])*
                $V:ident = $tag:literal, $kw:literal
                ( $( $(#[$pdoc:meta])* $pf:ident : $pt:ty ),* )
                { $( $(#[$ndoc:meta])* $nf:ident : $nt:ty $(= $def:expr)? ),* }
            );* $(;)?
        }
    ) => {
        $(#[$edoc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $Enum {
            $(
                $(#[$vdoc])*
                $V {
                    $( $(#[$pdoc])* $pf: $pt, )*
                    $( $(#[$ndoc])* $nf: $nt, )*
                },
            )*
        }

        impl $Enum {
            /// `(keyword, tag)` of every variant, in declaration order.
            pub const KEYWORDS: &'static [(&'static str, u16)] = &[$(($kw, $tag),)*];

            /// The stable binary tag of this variant.
            pub const fn tag(&self) -> u16 {
                match self { $($Enum::$V { .. } => $tag,)* }
            }

            /// The text keyword of this variant.
            pub const fn keyword(&self) -> &'static str {
                match self { $($Enum::$V { .. } => $kw,)* }
            }

            /// The usage line of a keyword, for error messages and docs.
            pub fn usage(keyword: &str) -> Option<String> {
                match keyword {
                    $($kw => {
                        #[allow(unused_mut)]
                        let mut u = String::from($kw);
                        $( u.push_str(concat!(" <", stringify!($pf), ">")); )*
                        $(
                            let opt = $crate::__vocab_default!($nt; $($def)?).is_some();
                            u.push_str(if opt { " [" } else { " " });
                            u.push_str(&format!("{}=<{}>", stringify!($nf), $crate::vocab::type_label(stringify!($nt))));
                            if opt { u.push(']'); }
                        )*
                        Some(u)
                    })*
                    _ => None,
                }
            }

            /// Append the text form (keyword and fields) to `out`.
            pub fn write_text(&self, out: &mut String) {
                #[allow(unused_imports)]
                use $crate::codec::Field as _;
                match self {
                    $($Enum::$V { $($pf,)* $($nf,)* } => {
                        out.push_str($kw);
                        $( out.push(' '); $pf.write_text(out); )*
                        $(
                            let def: Option<$nt> = $crate::__vocab_default!($nt; $($def)?);
                            if def.as_ref() != Some($nf) {
                                let mut s = String::new();
                                $nf.write_named(stringify!($nf), &mut s);
                                if !s.is_empty() { out.push(' '); out.push_str(&s); }
                            }
                        )*
                    })*
                }
            }

            /// Parse `keyword` and its field tokens. `Ok(None)` if the keyword is not in this
            /// vocabulary (so a caller can try another).
            ///
            /// # Errors
            /// A [`TextError`]($crate::vocab::TextError) naming the column of the bad field.
            #[allow(unused_variables, unused_mut)]
            pub fn parse_text(
                keyword: $crate::vocab::Token<'_>,
                fields: &[$crate::vocab::Token<'_>],
                ctx: &$crate::codec::TextCtx,
            ) -> Result<Option<Self>, $crate::vocab::TextError> {
                use $crate::vocab::{TextError, TextErrorKind};
                #[allow(unused_imports)]
                use $crate::codec::Field as _;
                match keyword.text {
                    $($kw => {
                        let usage = || Self::usage($kw).unwrap_or_default();
                        let mut it = fields.iter();
                        $(
                            let tok = it.next().ok_or_else(|| TextError {
                                col: keyword.col,
                                kind: TextErrorKind::MissingPositional { keyword: $kw, field: stringify!($pf), usage: usage() },
                            })?;
                            let $pf = <$pt>::parse_text(tok.text, ctx).map_err(|err| TextError {
                                col: tok.col, kind: TextErrorKind::Value { field: stringify!($pf), err } })?;
                        )*
                        // Remaining tokens are named: name=value, or a bare flag.
                        let mut named: Vec<(&$crate::vocab::Token<'_>, &str, Option<&str>)> = Vec::new();
                        for tok in it {
                            let (n, v) = match tok.text.split_once('=') {
                                Some((n, v)) => (n, Some(v)),
                                None => (tok.text, None),
                            };
                            if named.iter().any(|(_, m, _)| *m == n) {
                                return Err(TextError { col: tok.col, kind: TextErrorKind::Duplicate(n.to_owned()) });
                            }
                            named.push((tok, n, v));
                        }
                        $(
                            let $nf: $nt = match named.iter().position(|(_, n, _)| *n == stringify!($nf)) {
                                Some(i) => {
                                    let (tok, _, v) = named.swap_remove(i);
                                    match v {
                                        Some(v) => <$nt>::parse_text(v, ctx).map_err(|err| TextError {
                                            col: tok.col + stringify!($nf).len() + 1,
                                            kind: TextErrorKind::Value { field: stringify!($nf), err } })?,
                                        None => <$nt>::bare_flag().ok_or_else(|| TextError {
                                            col: tok.col, kind: TextErrorKind::NeedsValue(stringify!($nf).to_owned()) })?,
                                    }
                                }
                                None => $crate::__vocab_default!($nt; $($def)?).ok_or_else(|| TextError {
                                    col: keyword.col,
                                    kind: TextErrorKind::MissingNamed { keyword: $kw, field: stringify!($nf), usage: usage() },
                                })?,
                            };
                        )*
                        if let Some((tok, n, _)) = named.first() {
                            return Err(TextError { col: tok.col, kind: TextErrorKind::UnknownField {
                                keyword: $kw, field: (*n).to_owned(), usage: usage() } });
                        }
                        Ok(Some($Enum::$V { $($pf,)* $($nf,)* }))
                    })*
                    _ => Ok(None),
                }
            }

            /// Append the binary form: the tag as a varint, then each field in order.
            pub fn encode(&self, out: &mut Vec<u8>) {
                #[allow(unused_imports)]
                use $crate::codec::Field as _;
                match self {
                    $($Enum::$V { $($pf,)* $($nf,)* } => {
                        $crate::codec::put_varint(out, $tag);
                        $( $pf.put(out); )*
                        $( $nf.put(out); )*
                    })*
                }
            }

            /// Read the binary form, advancing the slice.
            ///
            /// # Errors
            /// [`DecodeError`]($crate::vocab::DecodeError) for an unknown tag or a bad field.
            pub fn decode(inp: &mut &[u8]) -> Result<Self, $crate::vocab::DecodeError> {
                use $crate::vocab::DecodeError;
                #[allow(unused_imports)]
                use $crate::codec::Field as _;
                let tag = $crate::codec::get_varint(inp).map_err(|err| DecodeError::Field {
                    keyword: $what, field: "tag", err })?;
                match tag {
                    $($tag => {
                        $( let $pf = <$pt>::get(inp).map_err(|err| DecodeError::Field {
                            keyword: $kw, field: stringify!($pf), err })?; )*
                        $( let $nf = <$nt>::get(inp).map_err(|err| DecodeError::Field {
                            keyword: $kw, field: stringify!($nf), err })?; )*
                        Ok($Enum::$V { $($pf,)* $($nf,)* })
                    })*
                    _ => Err(DecodeError::UnknownTag { what: $what, tag }),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_columns_and_stop_at_comments() {
        let t = tokenize("  load  0x10 8 # note");
        assert_eq!(
            t.iter().map(|t| (t.col, t.text)).collect::<Vec<_>>(),
            [(3, "load"), (9, "0x10"), (14, "8")]
        );
        assert!(tokenize("# only").is_empty());
    }
}
