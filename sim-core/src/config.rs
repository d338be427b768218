//! The configuration framework (DESIGN "Layers"; STYLE rules 10 and 12).
//!
//! Each hardware or software block owns a config struct that implements [`ConfigBlock`]: serde
//! with `deny_unknown_fields`, defaults from named constants, a documentation table giving every
//! field's unit and source (or `Unsourced:` with the rationale), and a range check. The root crate
//! assembles the blocks into a machine configuration, loaded in layers:
//! preset → config file(s) (TOML) → `key.path=value` overrides (command line or scenario header).
//! Every layer is merged as TOML values first and deserialized once, so an override can set any
//! field, and an unknown key or a bad value is reported with its full path.

use serde::de::DeserializeOwned;
use std::fmt;

/// Where a configuration value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A citation: manual section, paper, Linux file, measurement.
    Cited(&'static str),
    /// No public source: the rationale for the default (listed by `ccsim presets`).
    Unsourced(&'static str),
    /// Not a hardware number (a policy switch, a workload size): no source needed.
    Choice,
}

/// Documentation of one configuration field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDoc {
    /// Key within the block's section (dotted for nested structs).
    pub key: &'static str,
    /// Unit ("cycles", "entries", "bytes", "ways", …; "" for switches).
    pub unit: &'static str,
    /// What the field means.
    pub doc: &'static str,
    /// Where the default comes from.
    pub source: Source,
}

/// A block's configuration struct.
pub trait ConfigBlock: serde::Serialize + DeserializeOwned + Default + Clone + fmt::Debug {
    /// Its section name in configuration files (`[mmu]`, `[rmp]`, …).
    const SECTION: &'static str;
    /// Every field, documented.
    fn field_docs() -> &'static [FieldDoc];
    /// Range checks beyond what the types enforce.
    ///
    /// # Errors
    /// [`ConfigError::OutOfRange`] naming the field.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// A configuration problem. Paths are dotted (`mmu.dtlb.ways_4k`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The text is not valid TOML.
    #[error("{origin}: {message}")]
    Syntax {
        /// Where the text came from (a file name, `--set`, a scenario line).
        origin: String,
        /// The parser's message.
        message: String,
    },
    /// A key no block knows, or a value of the wrong type.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where the text came from.
        origin: String,
        /// What was wrong, with the key's path.
        message: String,
    },
    /// A value outside the field's range.
    #[error("{key} = {value}: {why}")]
    OutOfRange {
        /// Dotted path.
        key: String,
        /// The value.
        value: String,
        /// The allowed range.
        why: String,
    },
    /// A preset name that is not registered.
    #[error("unknown preset {name:?} (known: {known})")]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: String,
    },
    /// An override without `=`.
    #[error("override {0:?} is not key=value")]
    BadOverride(String),
}

/// A field's dotted name for an error message: a `&str`, or a closure that builds it, so
/// that a check that passes formats nothing (configurations are validated per CPU and per
/// scenario line).
pub trait FieldKey {
    /// The name.
    fn name(self) -> String;
}

impl FieldKey for &str {
    fn name(self) -> String {
        self.to_owned()
    }
}

impl FieldKey for &String {
    fn name(self) -> String {
        self.clone()
    }
}

impl<F: FnOnce() -> String> FieldKey for F {
    fn name(self) -> String {
        self()
    }
}

/// Check `lo <= v <= hi`, naming the field on failure.
///
/// # Errors
/// [`ConfigError::OutOfRange`].
pub fn check_range<T: PartialOrd + fmt::Display>(
    key: impl FieldKey,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::OutOfRange {
            key: key.name(),
            value: v.to_string(),
            why: format!("must be in {lo}..={hi}"),
        });
    }
    Ok(())
}

/// Check that a count is a power of two (TLB sets, cache sets), naming the field on failure.
///
/// # Errors
/// [`ConfigError::OutOfRange`].
pub fn check_pow2(key: impl FieldKey, v: u64) -> Result<(), ConfigError> {
    if v == 0 || !v.is_power_of_two() {
        return Err(ConfigError::OutOfRange {
            key: key.name(),
            value: v.to_string(),
            why: "must be a power of two".into(),
        });
    }
    Ok(())
}

/// A size in bytes, written with an optional binary unit: `4096`, `"4K"`, `"8G"`, `"1T"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parse `N`, `NK`, `NM`, `NG`, `NT` (binary multiples; a trailing `iB`/`B` is accepted).
    ///
    /// # Errors
    /// A message naming the text.
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let t = t.strip_suffix("iB").or_else(|| t.strip_suffix('B')).unwrap_or(t);
        let (num, mul) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let m: u64 = match c.to_ascii_uppercase() {
                    'K' => 1 << 10,
                    'M' => 1 << 20,
                    'G' => 1 << 30,
                    'T' => 1 << 40,
                    _ => return Err(format!("bad size unit in {s:?} (use K, M, G, T)")),
                };
                (&t[..i], m)
            }
            _ => (t, 1),
        };
        let n = crate::codec::parse_u64(num).map_err(|_| format!("bad size {s:?}"))?;
        n.checked_mul(mul).map(ByteSize).ok_or_else(|| format!("size {s:?} overflows 64 bits"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        for (shift, u) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
            if v != 0 && v.is_multiple_of(1u64 << shift) {
                return write!(f, "{}{u}", v >> shift);
            }
        }
        write!(f, "{v}")
    }
}

impl serde::Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 4096, \"4K\", \"8G\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("negative size"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse one override value as TOML (number, boolean, string, array); a bare word that is not
/// TOML is taken as a string, so `policy=split-on-assign` and `memory=8G` need no quotes.
pub fn override_value(text: &str) -> toml::Value {
    let doc = format!("v = {text}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(text.to_owned())),
        Err(_) => toml::Value::String(text.to_owned()),
    }
}

/// Set `path` (dotted) in a TOML table to `value`, creating tables on the way.
///
/// # Errors
/// [`ConfigError::Invalid`] if a path component names a non-table value.
pub fn set_path(
    root: &mut toml::Table,
    path: &str,
    value: toml::Value,
    origin: &str,
) -> Result<(), ConfigError> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts
        .pop()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ConfigError::BadOverride(path.into()))?;
    let mut cur = root;
    for p in parts {
        let entry =
            cur.entry(p.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Invalid {
                    origin: origin.to_owned(),
                    message: format!("{path}: {p} is a value, not a section"),
                });
            }
        };
    }
    cur.insert(last.to_owned(), value);
    Ok(())
}

/// Merge `over` into `base`, table by table (later layers win).
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("4K").unwrap().0, 4096);
        assert_eq!(ByteSize::parse("8GiB").unwrap().0, 8 << 30);
        assert_eq!(ByteSize::parse("0x1000").unwrap().0, 4096);
        assert!(ByteSize::parse("8Q").is_err());
        assert!(ByteSize::parse("99999999T").is_err());
        assert_eq!(ByteSize(3 << 30).to_string(), "3G");
        assert_eq!(ByteSize(4097).to_string(), "4097");
    }

    #[test]
    fn overrides_build_tables() {
        let mut t = toml::Table::new();
        set_path(&mut t, "mmu.dtlb.ways", override_value("4"), "test").unwrap();
        set_path(&mut t, "host.policy", override_value("split-on-assign"), "test").unwrap();
        assert_eq!(t["mmu"]["dtlb"]["ways"].as_integer(), Some(4));
        assert_eq!(t["host"]["policy"].as_str(), Some("split-on-assign"));
        assert!(set_path(&mut t, "host.policy.x", override_value("1"), "test").is_err());
    }
}
