//! A bitmap of pages with a one-bit-per-word summary for each state, so that "the next page in
//! state X from here" skips 4,096 pages per summary bit instead of scanning word by word.
//!
//! A guest's shared/private map over a 4 GiB working set is 1 Mi bits (128 KiB) plus two
//! summaries of 2 KiB each; a search reads at most one summary pass, however the shared pages
//! are spread.

/// `n` bits, all clear at first, with summaries of which words hold a set bit and which hold a
/// clear one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageBits {
    n: usize,
    words: Vec<u64>,
    /// Bit `w` set: `words[w]` has a set bit (among its valid ones).
    any_set: Vec<u64>,
    /// Bit `w` set: `words[w]` has a clear bit (among its valid ones).
    any_clear: Vec<u64>,
    /// Valid bits of the last word (the bitmap's tail beyond `n` is never reported).
    last_mask: u64,
}

impl PageBits {
    /// `n` clear bits.
    pub(crate) fn new(n: usize) -> PageBits {
        let nw = n.div_ceil(64);
        let last_mask = match n % 64 {
            0 => !0,
            r => (1u64 << r) - 1,
        };
        let mut b = PageBits {
            n,
            words: vec![0; nw],
            any_set: vec![0; nw.div_ceil(64)],
            any_clear: vec![0; nw.div_ceil(64)],
            last_mask,
        };
        for w in 0..nw {
            b.summarize(w);
        }
        b
    }

    /// Bits.
    pub(crate) fn len(&self) -> usize {
        self.n
    }

    /// Heap bytes held.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        8 * (self.words.len() + self.any_set.len() + self.any_clear.len())
    }

    /// Bit `i`.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> bool {
        (self.words[i / 64] >> (i % 64)) & 1 != 0
    }

    /// Set bit `i` to `v`.
    pub(crate) fn set(&mut self, i: usize, v: bool) {
        let (w, m) = (i / 64, 1u64 << (i % 64));
        if v {
            self.words[w] |= m;
        } else {
            self.words[w] &= !m;
        }
        self.summarize(w);
    }

    fn valid(&self, w: usize) -> u64 {
        if w + 1 == self.words.len() { self.last_mask } else { !0 }
    }

    /// The valid bits of word `w` that are in state `v`, as set bits.
    #[inline]
    fn matching(&self, w: usize, v: bool) -> u64 {
        let x = if v { self.words[w] } else { !self.words[w] };
        x & self.valid(w)
    }

    fn summarize(&mut self, w: usize) {
        let valid = self.valid(w);
        let (s, m) = (w / 64, 1u64 << (w % 64));
        let put = |sum: &mut u64, has: bool| if has { *sum |= m } else { *sum &= !m };
        put(&mut self.any_set[s], self.words[w] & valid != 0);
        put(&mut self.any_clear[s], !self.words[w] & valid != 0);
    }

    /// The first word at or after `from` holding a bit in state `v`.
    fn next_word(&self, v: bool, from: usize) -> Option<usize> {
        let sum = if v { &self.any_set } else { &self.any_clear };
        let mut s = from / 64;
        let mut x = *sum.get(s)? & (!0u64 << (from % 64));
        loop {
            if x != 0 {
                return Some(s * 64 + x.trailing_zeros() as usize);
            }
            s += 1;
            x = *sum.get(s)?;
        }
    }

    /// The first bit in state `v` at or after `from`, wrapping around to 0; `None` if no bit is
    /// in state `v`.
    pub(crate) fn find(&self, v: bool, from: usize) -> Option<usize> {
        if self.n == 0 {
            return None;
        }
        let from = from % self.n;
        let w0 = from / 64;
        let x = self.matching(w0, v) & (!0u64 << (from % 64));
        if x != 0 {
            return Some(w0 * 64 + x.trailing_zeros() as usize);
        }
        let w = self.next_word(v, w0 + 1).or_else(|| self.next_word(v, 0))?;
        Some(w * 64 + self.matching(w, v).trailing_zeros() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// `find` agrees with a linear scan with wrap-around, for any contents and start.
        #[test]
        fn find_is_a_wrapping_scan(
            n in 1usize..9000,
            sets in proptest::collection::vec(0usize..9000, 0..200),
            fill in any::<bool>(),
            from in 0usize..20000,
        ) {
            let mut b = PageBits::new(n);
            let mut naive = vec![fill; n];
            for i in 0..n {
                b.set(i, fill);
            }
            for &s in &sets {
                let i = s % n;
                naive[i] = !naive[i];
                b.set(i, naive[i]);
            }
            for v in [false, true] {
                let f = from % n;
                let want = (f..n).chain(0..f).find(|&i| naive[i] == v);
                prop_assert_eq!(b.find(v, from), want);
            }
            for (i, &x) in naive.iter().enumerate() {
                prop_assert_eq!(b.get(i), x);
            }
        }
    }

    #[test]
    fn empty_and_full() {
        let mut b = PageBits::new(4097);
        assert_eq!(b.find(true, 5), None);
        assert_eq!(b.find(false, 4096), Some(4096));
        for i in 0..4097 {
            b.set(i, true);
        }
        assert_eq!(b.find(false, 0), None);
        assert_eq!(b.find(true, 4096), Some(4096));
        b.set(3, false);
        assert_eq!(b.find(false, 4000), Some(3));
        assert_eq!(PageBits::new(0).find(false, 0), None);
    }
}
