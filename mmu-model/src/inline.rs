//! A fixed-capacity, inline vector for per-access reference lists (no heap allocation on the
//! hot path).

use std::fmt;
use std::ops::{Deref, DerefMut};

/// Up to `N` values of `T`, stored inline. Pushing beyond `N` is a model bug (the capacity is
/// chosen from the architecture: see each alias), so it panics.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineVec<T: Copy + Default, const N: usize> {
    len: usize,
    items: [T; N],
}

impl<T: Copy + Default, const N: usize> InlineVec<T, N> {
    /// Empty.
    #[inline]
    pub fn new() -> Self {
        InlineVec { len: 0, items: [T::default(); N] }
    }

    /// The capacity.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Append.
    ///
    /// # Panics
    /// If the vector is full.
    #[inline(always)]
    #[track_caller]
    pub fn push(&mut self, v: T) {
        assert!(self.len < N, "InlineVec capacity {N} exceeded");
        self.items[self.len] = v;
        self.len += 1;
    }

    /// Append a slot and return it, keeping whatever value it last held (no copy of a
    /// default): the caller must overwrite every field. For the walkers' reusable buffers.
    ///
    /// # Panics
    /// If the vector is full.
    #[inline]
    #[track_caller]
    pub(crate) fn push_reuse(&mut self) -> &mut T {
        assert!(self.len < N, "InlineVec capacity {N} exceeded");
        self.len += 1;
        &mut self.items[self.len - 1]
    }

    /// Append `n` slots and return them, keeping whatever values they last held: the caller
    /// must overwrite every one. One capacity check for the lot (a walk's reference list is
    /// written this way).
    ///
    /// # Panics
    /// If fewer than `n` slots are free.
    #[inline(always)]
    #[track_caller]
    pub(crate) fn push_reuse_n(&mut self, n: usize) -> &mut [T] {
        let start = self.len;
        assert!(n <= N - start, "InlineVec capacity {N} exceeded");
        self.len = start + n;
        &mut self.items[start..start + n]
    }

    /// Remove everything.
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The values.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }
}

impl<T: Copy + Default, const N: usize> Default for InlineVec<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default, const N: usize> Deref for InlineVec<T, N> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy + Default, const N: usize> DerefMut for InlineVec<T, N> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items[..self.len]
    }
}

impl<T: Copy + Default + fmt::Debug, const N: usize> fmt::Debug for InlineVec<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<'a, T: Copy + Default, const N: usize> IntoIterator for &'a InlineVec<T, N> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_read() {
        let mut v: InlineVec<u8, 3> = InlineVec::new();
        v.push(1);
        v.push(2);
        assert_eq!(&*v, &[1, 2]);
        assert_eq!(format!("{v:?}"), "[1, 2]");
        v.clear();
        assert!(v.is_empty());
    }

    #[test]
    #[should_panic(expected = "capacity 1 exceeded")]
    fn overflow_panics() {
        let mut v: InlineVec<u8, 1> = InlineVec::new();
        v.push(1);
        v.push(2);
    }
}

/// Working space reused from one call to the next, whose contents carry nothing between
/// calls (each use overwrites what it reads): a walk's plan, which is too large to build on
/// the stack for every walk. It is allocated on first use, and a copy of its owner starts
/// without it, so copying a machine (the race explorer copies one per schedule) neither
/// allocates nor copies working space.
#[derive(Debug)]
pub struct Scratch<T>(Option<Box<T>>);

impl<T> Default for Scratch<T> {
    fn default() -> Self {
        Scratch(None)
    }
}

impl<T: Default> Scratch<T> {
    /// The space, allocated now if this is its first use.
    #[inline]
    pub fn get(&mut self) -> &mut T {
        self.0.get_or_insert_with(Box::default)
    }
}

impl<T> Scratch<T> {
    /// Take the space out (`None` before its first use), to [`put`](Scratch::put) it back.
    #[inline]
    pub fn take(&mut self) -> Option<Box<T>> {
        self.0.take()
    }

    /// Give the space back for the next call.
    #[inline]
    pub fn put(&mut self, space: Box<T>) {
        self.0 = Some(space);
    }
}

impl<T> Clone for Scratch<T> {
    /// Empty: the contents are working space, not state.
    fn clone(&self) -> Self {
        Scratch(None)
    }
}
