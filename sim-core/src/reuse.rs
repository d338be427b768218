//! Copying into an existing value without reallocating (`Clone::clone_from` field by field).
//!
//! `#[derive(Clone)]` writes `clone_from` as `*self = source.clone()`: a fresh allocation for
//! every vector and box inside, and the old ones freed. A model that restores a saved machine
//! many times (the race explorer restores one per schedule) pays that in the allocator.
//! [`clone_by_fields!`](crate::clone_by_fields) writes `Clone` so that `clone_from` calls
//! `clone_from` on each field: `Vec`, `Box`, `Option` and hash maps then copy into the
//! storage they already have.

/// `Clone` for a struct, with `clone_from` field by field.
///
/// List every field: `clone` builds the struct with a literal of the listed fields, so a
/// field left out (or added to the struct later and not here) is a compile error, never a
/// field silently not copied.
///
/// ```
/// #[derive(Debug, PartialEq)]
/// struct Buf {
///     data: Vec<u64>,
///     len: usize,
/// }
/// sim_core::clone_by_fields!(Buf { data, len });
///
/// let src = Buf { data: vec![1, 2, 3], len: 3 };
/// let mut dst = Buf { data: Vec::with_capacity(8), len: 0 };
/// let before = dst.data.as_ptr();
/// dst.clone_from(&src);
/// assert_eq!(dst, src);
/// assert_eq!(dst.data.as_ptr(), before); // the old storage, reused
/// ```
///
/// For a generic struct, name its parameters in brackets:
/// `clone_by_fields!(impl[P: Copy] Table<P> { rows, _p });`.
///
/// Fields listed after `changed` are restored with [`CloneChanged`]: for ordered maps and
/// sets, which `clone_from` cannot copy into their own nodes, and which a restore mostly finds
/// with the same keys.
#[macro_export]
macro_rules! clone_by_fields {
    (impl[$($g:tt)*] $t:ty { $($f:ident),* $(,)? } $(changed { $($c:ident),* $(,)? })?) => {
        impl<$($g)*> ::core::clone::Clone for $t {
            #[inline]
            fn clone(&self) -> Self {
                Self {
                    $($f: ::core::clone::Clone::clone(&self.$f),)*
                    $($($c: ::core::clone::Clone::clone(&self.$c),)*)?
                }
            }

            #[inline]
            fn clone_from(&mut self, source: &Self) {
                $(::core::clone::Clone::clone_from(&mut self.$f, &source.$f);)*
                $($($crate::reuse::CloneChanged::clone_changed(&mut self.$c, &source.$c);)*)?
            }
        }
    };
    ($t:ty { $($f:ident),* $(,)? } $(changed { $($c:ident),* $(,)? })?) => {
        $crate::clone_by_fields!(impl[] $t { $($f),* } $(changed { $($c),* })?);
    };
}

/// Become equal to a source, reusing what already matches: for ordered maps and sets, whose
/// `clone_from` cannot reuse their nodes, and which a restore mostly finds with the same keys.
pub trait CloneChanged: Clone {
    /// Make `self` equal to `source`.
    fn clone_changed(&mut self, source: &Self);
}

impl<K: Clone + Ord, V: Clone> CloneChanged for std::collections::BTreeMap<K, V> {
    /// With the same keys, each value `clone_from` its source's (no node is allocated, and
    /// the values reuse their own storage); otherwise a new copy.
    fn clone_changed(&mut self, source: &Self) {
        if self.len() == source.len() && self.keys().eq(source.keys()) {
            for (d, s) in self.values_mut().zip(source.values()) {
                d.clone_from(s);
            }
        } else {
            self.clone_from(source);
        }
    }
}

impl<T: Clone + Ord> CloneChanged for std::collections::BTreeSet<T> {
    fn clone_changed(&mut self, source: &Self) {
        if self != source {
            self.clone_from(source);
        }
    }
}

impl<T: CloneChanged> CloneChanged for Vec<T> {
    /// Element by element: only the elements that differ are copied.
    fn clone_changed(&mut self, source: &Self) {
        self.truncate(source.len());
        let n = self.len();
        for (d, s) in self.iter_mut().zip(source) {
            d.clone_changed(s);
        }
        self.extend_from_slice(&source[n..]);
    }
}

#[cfg(test)]
mod tests {
    use super::CloneChanged;
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug, PartialEq)]
    struct Holder {
        v: Vec<u32>,
        m: BTreeMap<u32, u32>,
        s: Vec<BTreeSet<u32>>,
    }
    crate::clone_by_fields!(Holder { v } changed { m, s });

    /// `clone_from` makes the value equal to the source whatever both held before: equal
    /// maps, different maps, shorter and longer vectors of sets.
    #[test]
    fn clone_from_makes_equal() {
        let set = |xs: &[u32]| xs.iter().copied().collect::<BTreeSet<u32>>();
        let a = Holder {
            v: vec![1, 2],
            m: [(1, 2), (3, 4)].into_iter().collect(),
            s: vec![set(&[1]), set(&[2, 3])],
        };
        let b = Holder { v: vec![], m: BTreeMap::new(), s: vec![set(&[1]), set(&[4]), set(&[])] };
        let c = Holder { v: vec![9; 5], m: a.m.clone(), s: vec![] };
        for src in [&a, &b, &c] {
            for dst in [&a, &b, &c] {
                let mut d = dst.clone();
                d.clone_from(src);
                assert_eq!(&d, src);
                let mut s2 = dst.s.clone();
                s2.clone_changed(&src.s);
                assert_eq!(s2, src.s);
            }
        }
    }
}
