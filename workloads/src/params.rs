//! Workload parameters: `k=v` strings checked against each workload's documented list.

use sim_core::config::ByteSize;
use std::collections::BTreeMap;

/// Documentation of one parameter.
#[derive(Debug, Clone, Copy)]
pub struct ParamDoc {
    /// Name.
    pub name: &'static str,
    /// Default, as text.
    pub default: &'static str,
    /// Meaning, unit, and what the default is based on.
    pub doc: &'static str,
}

/// A parameter problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// A parameter the workload does not have.
    #[error("unknown parameter {name:?} (known: {known})")]
    Unknown {
        /// The name.
        name: String,
        /// The workload's parameters.
        known: String,
    },
    /// A value that does not parse or is out of range.
    #[error("parameter {name}={value}: {why}")]
    Bad {
        /// The name.
        name: String,
        /// The value.
        value: String,
        /// Why.
        why: String,
    },
    /// `--param` without `=`.
    #[error("parameter {0:?} is not k=v")]
    NotKeyValue(String),
}

/// Parameter values as given (`--param k=v`), ordered by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// Parse `k=v` strings.
    ///
    /// # Errors
    /// [`ParamError::NotKeyValue`].
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Params, ParamError> {
        let mut m = BTreeMap::new();
        for it in items {
            let (k, v) = it.split_once('=').ok_or_else(|| ParamError::NotKeyValue(it.into()))?;
            m.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        Ok(Params(m))
    }

    /// Set one value.
    pub fn set(&mut self, k: &str, v: &str) {
        self.0.insert(k.to_owned(), v.to_owned());
    }

    /// The values given, ordered by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub(crate) fn check_known(&self, docs: &[ParamDoc]) -> Result<(), ParamError> {
        for k in self.0.keys() {
            if !docs.iter().any(|d| d.name == k) {
                return Err(ParamError::Unknown {
                    name: k.clone(),
                    known: docs.iter().map(|d| d.name).collect::<Vec<_>>().join(", "),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn raw<'a>(&'a self, docs: &'a [ParamDoc], name: &str) -> &'a str {
        self.0
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| docs.iter().find(|d| d.name == name).map_or("", |d| d.default))
    }

    pub(crate) fn bad(name: &str, value: &str, why: impl Into<String>) -> ParamError {
        ParamError::Bad { name: name.into(), value: value.into(), why: why.into() }
    }

    /// An integer in `lo..=hi` (decimal or 0x).
    ///
    /// # Errors
    /// [`ParamError::Bad`].
    pub fn u64_in(
        &self,
        docs: &[ParamDoc],
        name: &str,
        lo: u64,
        hi: u64,
    ) -> Result<u64, ParamError> {
        let t = self.raw(docs, name);
        let v = sim_core::codec::parse_u64(t).map_err(|e| Self::bad(name, t, e.to_string()))?;
        if v < lo || v > hi {
            return Err(Self::bad(name, t, format!("must be in {lo}..={hi}")));
        }
        Ok(v)
    }

    /// A byte size (`64M`, `1G`) in `lo..=hi`.
    ///
    /// # Errors
    /// [`ParamError::Bad`].
    pub fn size_in(
        &self,
        docs: &[ParamDoc],
        name: &str,
        lo: u64,
        hi: u64,
    ) -> Result<u64, ParamError> {
        let t = self.raw(docs, name);
        let v = ByteSize::parse(t).map_err(|e| Self::bad(name, t, e))?.0;
        if v < lo || v > hi {
            return Err(Self::bad(
                name,
                t,
                format!("must be in {}..={}", ByteSize(lo), ByteSize(hi)),
            ));
        }
        Ok(v)
    }

    /// A fraction in [0, 1], returned as parts per million.
    ///
    /// # Errors
    /// [`ParamError::Bad`].
    pub fn fraction_ppm(&self, docs: &[ParamDoc], name: &str) -> Result<u64, ParamError> {
        let t = self.raw(docs, name);
        let v: f64 = t.parse().map_err(|_| Self::bad(name, t, "not a number"))?;
        if !(0.0..=1.0).contains(&v) {
            return Err(Self::bad(name, t, "must be in 0..=1"));
        }
        // In range 0..=1e6 after the check above.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok((v * 1e6).round() as u64)
    }
}
