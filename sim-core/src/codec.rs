//! Field codecs shared by every format: each event field knows how to write and read itself as
//! text (`.ccs`) and as bytes (`.cct` control records). The event vocabulary is declared once
//! (see [`crate::event`]) and both formats are derived from that declaration, so they cannot
//! drift apart.
//!
//! Binary integers are unsigned LEB128 varints; signed values are zigzag-encoded first.

use crate::PageSize;
use crate::addr::{Gpa, Gva, Hva, Iova, Spa};
use std::fmt::Write as _;

/// Why a field could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// The text was not a valid value of the field's type.
    #[error("malformed {what}: {text:?}")]
    Malformed {
        /// What was expected (e.g. "integer", "page size").
        what: &'static str,
        /// The offending text.
        text: String,
    },
    /// The value is well formed but outside the type's range.
    #[error("{what} out of range: {text:?}")]
    OutOfRange {
        /// What was expected.
        what: &'static str,
        /// The offending text.
        text: String,
    },
    /// Binary input ended inside a field.
    #[error("record ends inside a field")]
    Truncated,
    /// A binary varint was longer than 10 bytes or overflowed 64 bits.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A binary enum discriminant was not known.
    #[error("unknown {what} code {code}")]
    UnknownCode {
        /// The enum being decoded.
        what: &'static str,
        /// The value found.
        code: u64,
    },
    /// A string in binary input was longer than the record or not UTF-8.
    #[error("bad string")]
    BadString,
}

/// How text without an explicit address-kind prefix is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextCtx {
    /// What a bare hexadecimal address in an access means for the issuing agent.
    pub bare_addr: BareAddr,
}

/// The address kind a bare `0x…` address denotes, given who issues the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareAddr {
    /// Host kernel or host process: a host virtual address.
    Hva,
    /// A guest vCPU: a guest virtual address.
    Gva,
    /// A device: an I/O virtual address.
    Iova,
    /// Firmware: system physical.
    Spa,
}

impl Default for TextCtx {
    fn default() -> Self {
        TextCtx { bare_addr: BareAddr::Hva }
    }
}

/// Append an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Truncation intended: the low 7 bits with the continuation bit.
        #[allow(clippy::cast_possible_truncation)]
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    #[allow(clippy::cast_possible_truncation)]
    out.push(v as u8);
}

/// Read an unsigned LEB128 varint, advancing the slice.
///
/// # Errors
/// [`FieldError::Truncated`] at end of input, [`FieldError::VarintOverflow`] past 64 bits.
#[inline]
pub fn get_varint(inp: &mut &[u8]) -> Result<u64, FieldError> {
    let mut v: u64 = 0;
    let mut shift = 0u32;
    loop {
        let (&b, rest) = inp.split_first().ok_or(FieldError::Truncated)?;
        *inp = rest;
        if shift == 63 && b > 1 {
            return Err(FieldError::VarintOverflow);
        }
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            return Err(FieldError::VarintOverflow);
        }
    }
}

/// Zigzag-encode a signed value so small magnitudes give small varints.
pub const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)).cast_unsigned()
}

/// Inverse of [`zigzag`].
pub const fn unzigzag(v: u64) -> i64 {
    (v >> 1).cast_signed() ^ (v & 1).cast_signed().wrapping_neg()
}

/// Parse an unsigned integer in decimal or `0x` hexadecimal, with optional `_` separators.
///
/// # Errors
/// [`FieldError::Malformed`] if it is not a number, [`FieldError::OutOfRange`] past `u64`.
pub fn parse_u64(s: &str) -> Result<u64, FieldError> {
    let clean: String = s.chars().filter(|&c| c != '_').collect();
    let (digits, radix) = match clean.strip_prefix("0x").or_else(|| clean.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (clean.as_str(), 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(FieldError::Malformed { what: "integer", text: s.to_owned() });
    }
    u64::from_str_radix(digits, radix)
        .map_err(|_| FieldError::OutOfRange { what: "integer", text: s.to_owned() })
}

/// A type that can be an event field in both formats.
pub trait Field: Sized {
    /// Write the value as text (no surrounding whitespace).
    fn write_text(&self, out: &mut String);
    /// Read the value from one text token.
    ///
    /// # Errors
    /// A [`FieldError`] describing what was wrong with the token.
    fn parse_text(s: &str, ctx: &TextCtx) -> Result<Self, FieldError>;
    /// Append the value's binary form.
    fn put(&self, out: &mut Vec<u8>);
    /// Read the value's binary form, advancing the slice.
    ///
    /// # Errors
    /// A [`FieldError`] if the bytes are truncated or invalid.
    fn get(inp: &mut &[u8]) -> Result<Self, FieldError>;
    /// Write `name=value`, or the type's shorter named form (a bare flag for `true`).
    fn write_named(&self, name: &str, out: &mut String) {
        out.push_str(name);
        out.push('=');
        self.write_text(out);
    }
    /// The value a bare `name` token (no `=`) stands for, if the type has one.
    fn bare_flag() -> Option<Self> {
        None
    }
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl Field for $t {
            fn write_text(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
            fn parse_text(s: &str, _: &TextCtx) -> Result<Self, FieldError> {
                let v = parse_u64(s)?;
                <$t>::try_from(v).map_err(|_| FieldError::OutOfRange {
                    what: stringify!($t), text: s.to_owned() })
            }
            fn put(&self, out: &mut Vec<u8>) {
                put_varint(out, u64::from(*self));
            }
            fn get(inp: &mut &[u8]) -> Result<Self, FieldError> {
                let v = get_varint(inp)?;
                <$t>::try_from(v).map_err(|_| FieldError::OutOfRange {
                    what: stringify!($t), text: v.to_string() })
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64);

/// A 64-bit value shown in hexadecimal: register operands, error codes, masks.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Debug,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Hex(pub u64);

impl Field for Hex {
    fn write_text(&self, out: &mut String) {
        let _ = write!(out, "{:#x}", self.0);
    }
    fn parse_text(s: &str, _: &TextCtx) -> Result<Self, FieldError> {
        parse_u64(s).map(Hex)
    }
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, self.0);
    }
    fn get(inp: &mut &[u8]) -> Result<Self, FieldError> {
        get_varint(inp).map(Hex)
    }
}

impl Field for bool {
    fn write_text(&self, out: &mut String) {
        out.push(if *self { '1' } else { '0' });
    }
    fn parse_text(s: &str, _: &TextCtx) -> Result<Self, FieldError> {
        match s {
            "1" | "true" | "yes" => Ok(true),
            "0" | "false" | "no" => Ok(false),
            _ => Err(FieldError::Malformed { what: "boolean (0/1)", text: s.to_owned() }),
        }
    }
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
    fn get(inp: &mut &[u8]) -> Result<Self, FieldError> {
        match u8::get(inp)? {
            0 => Ok(false),
            1 => Ok(true),
            c => Err(FieldError::UnknownCode { what: "boolean", code: u64::from(c) }),
        }
    }
    fn write_named(&self, name: &str, out: &mut String) {
        out.push_str(name);
        if !*self {
            out.push_str("=0");
        }
    }
    fn bare_flag() -> Option<Self> {
        Some(true)
    }
}

impl Field for String {
    fn write_text(&self, out: &mut String) {
        out.push_str(self);
    }
    fn parse_text(s: &str, _: &TextCtx) -> Result<Self, FieldError> {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || "._-:/+".contains(c)) {
            return Err(FieldError::Malformed { what: "name ([A-Za-z0-9._-:/+])", text: s.into() });
        }
        Ok(s.to_owned())
    }
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        out.extend_from_slice(self.as_bytes());
    }
    fn get(inp: &mut &[u8]) -> Result<Self, FieldError> {
        let n = usize::try_from(get_varint(inp)?).map_err(|_| FieldError::BadString)?;
        if n > inp.len() {
            return Err(FieldError::BadString);
        }
        let (s, rest) = inp.split_at(n);
        *inp = rest;
        let s = std::str::from_utf8(s).map_err(|_| FieldError::BadString)?;
        // The binary form must not carry what the text form cannot.
        String::parse_text(s, &TextCtx::default()).map_err(|_| FieldError::BadString)
    }
}

impl Field for PageSize {
    fn write_text(&self, out: &mut String) {
        out.push_str(self.name());
    }
    fn parse_text(s: &str, _: &TextCtx) -> Result<Self, FieldError> {
        s.parse()
            .map_err(|_| FieldError::Malformed { what: "page size (4K/2M/1G)", text: s.into() })
    }
    fn put(&self, out: &mut Vec<u8>) {
        // Index fits a byte.
        #[allow(clippy::cast_possible_truncation)]
        out.push(self.index() as u8);
    }
    fn get(inp: &mut &[u8]) -> Result<Self, FieldError> {
        let c = u8::get(inp)?;
        PageSize::ALL
            .get(usize::from(c))
            .copied()
            .ok_or(FieldError::UnknownCode { what: "page size", code: u64::from(c) })
    }
}

/// A comma-separated list (`0,1,3`), empty written as `-`.
impl<T: Field> Field for Vec<T> {
    fn write_text(&self, out: &mut String) {
        if self.is_empty() {
            out.push('-');
        }
        for (i, v) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            v.write_text(out);
        }
    }
    fn parse_text(s: &str, ctx: &TextCtx) -> Result<Self, FieldError> {
        if s == "-" {
            return Ok(Vec::new());
        }
        s.split(',').map(|p| T::parse_text(p, ctx)).collect()
    }
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(out, self.len() as u64);
        for v in self {
            v.put(out);
        }
    }
    fn get(inp: &mut &[u8]) -> Result<Self, FieldError> {
        let n = get_varint(inp)?;
        // Every element takes at least one byte: a count beyond the input is corrupt, and
        // rejecting it here bounds the allocation by the record size.
        if n > inp.len() as u64 {
            return Err(FieldError::Truncated);
        }
        (0..n).map(|_| T::get(inp)).collect()
    }
}

/// An optional field: omitted in text when `None`; a presence byte in binary.
impl<T: Field> Field for Option<T> {
    fn write_text(&self, out: &mut String) {
        if let Some(v) = self {
            v.write_text(out);
        }
    }
    fn parse_text(s: &str, ctx: &TextCtx) -> Result<Self, FieldError> {
        T::parse_text(s, ctx).map(Some)
    }
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.put(out);
            }
        }
    }
    fn get(inp: &mut &[u8]) -> Result<Self, FieldError> {
        match bool::get(inp)? {
            false => Ok(None),
            true => T::get(inp).map(Some),
        }
    }
    fn write_named(&self, name: &str, out: &mut String) {
        if let Some(v) = self {
            v.write_named(name, out);
        }
    }
    fn bare_flag() -> Option<Self> {
        T::bare_flag().map(Some)
    }
}

macro_rules! addr_field {
    ($($t:ident),*) => {$(
        impl Field for $t {
            fn write_text(&self, out: &mut String) {
                let _ = write!(out, "{:#x}", self.raw());
            }
            fn parse_text(s: &str, _: &TextCtx) -> Result<Self, FieldError> {
                let v = parse_u64(s)?;
                $t::try_new(v).map_err(|_| FieldError::OutOfRange {
                    what: concat!(stringify!($t), " (52-bit physical)"), text: s.to_owned() })
            }
            fn put(&self, out: &mut Vec<u8>) {
                put_varint(out, self.raw());
            }
            fn get(inp: &mut &[u8]) -> Result<Self, FieldError> {
                let v = get_varint(inp)?;
                $t::try_new(v).map_err(|_| FieldError::OutOfRange {
                    what: stringify!($t), text: format!("{v:#x}") })
            }
        }
    )*};
}
addr_field!(Spa, Gpa, Gva, Hva, Iova);

/// Declares a field enum with a text name and a stable binary code for each variant.
///
/// Codes are part of the `.cct` format: never renumber, only add (DESIGN "The event stream").
#[macro_export]
macro_rules! field_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $v:ident = $code:literal, $text:literal;)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $v,)*
        }

        impl $name {
            /// Every variant, in code order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// The text name.
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => $text,)* }
            }
            /// The stable binary code.
            pub const fn code(self) -> u8 {
                match self { $($name::$v => $code,)* }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        /// A named field of this type is required (no implied value).
        impl $crate::vocab::Absent for $name {
            fn absent() -> Option<Self> {
                None
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::codec::FieldError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$v),)*
                    _ => Err($crate::codec::FieldError::Malformed { what: $what, text: s.to_owned() }),
                }
            }
        }

        impl $crate::codec::Field for $name {
            fn write_text(&self, out: &mut String) {
                out.push_str(self.name());
            }
            fn parse_text(s: &str, _: &$crate::codec::TextCtx) -> Result<Self, $crate::codec::FieldError> {
                s.parse()
            }
            fn put(&self, out: &mut Vec<u8>) {
                out.push(self.code());
            }
            fn get(inp: &mut &[u8]) -> Result<Self, $crate::codec::FieldError> {
                let c = <u8 as $crate::codec::Field>::get(inp)?;
                match c {
                    $($code => Ok($name::$v),)*
                    _ => Err($crate::codec::FieldError::UnknownCode { what: $what, code: u64::from(c) }),
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(v in any::<u64>()) {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut s = b.as_slice();
            prop_assert_eq!(get_varint(&mut s).unwrap(), v);
            prop_assert!(s.is_empty());
        }

        #[test]
        fn zigzag_round_trips(v in any::<i64>()) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }

        #[test]
        fn varint_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut s = bytes.as_slice();
            let _ = get_varint(&mut s);
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_u64("0x1_000").unwrap(), 4096);
        assert_eq!(parse_u64("12").unwrap(), 12);
        assert!(matches!(parse_u64("12z"), Err(FieldError::Malformed { .. })));
        assert!(matches!(parse_u64("0x"), Err(FieldError::Malformed { .. })));
        assert!(matches!(parse_u64("0x1ffffffffffffffff"), Err(FieldError::OutOfRange { .. })));
        let mut s: &[u8] = &[0xff; 11];
        assert_eq!(get_varint(&mut s), Err(FieldError::VarintOverflow));
    }
}
