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
#[macro_export]
macro_rules! clone_by_fields {
    (impl[$($g:tt)*] $t:ty { $($f:ident),* $(,)? }) => {
        impl<$($g)*> ::core::clone::Clone for $t {
            #[inline]
            fn clone(&self) -> Self {
                Self { $($f: ::core::clone::Clone::clone(&self.$f)),* }
            }

            #[inline]
            fn clone_from(&mut self, source: &Self) {
                $(::core::clone::Clone::clone_from(&mut self.$f, &source.$f);)*
            }
        }
    };
    ($t:ty { $($f:ident),* $(,)? }) => {
        $crate::clone_by_fields!(impl[] $t { $($f),* });
    };
}
