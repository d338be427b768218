//! Locality statistics of an access stream, as the fit tests compare a generator with a real
//! capture (docs/workloads.md "Fit"): page reuse distance, 2M-region fill, and the
//! two-sample Kolmogorov–Smirnov distance between two samples.

const PAGE_SHIFT: u32 = 12;
const REGION_SHIFT: u32 = 21;

/// Per access, its page's reuse distance: the number of distinct other 4K pages touched since
/// the previous access to the same page (LRU stack distance; 0 for a page touched again at
/// once). A first touch is `u64::MAX` (infinite).
pub(crate) fn reuse_distances(addrs: &[u64]) -> Vec<u64> {
    // Fenwick tree over access times marking each page's latest access: the distance is the
    // number of marks after the page's previous access.
    let n = addrs.len();
    let mut tree = vec![0i64; n + 1];
    let add = |tree: &mut Vec<i64>, mut i: usize, v: i64| {
        i += 1;
        while i <= n {
            tree[i] += v;
            i += i & i.wrapping_neg();
        }
    };
    let prefix = |tree: &Vec<i64>, mut i: usize| {
        // Sum of marks at times < i.
        let mut s = 0;
        while i > 0 {
            s += tree[i];
            i &= i - 1;
        }
        s
    };
    let mut last = std::collections::BTreeMap::new();
    let mut out = Vec::with_capacity(n);
    for (t, &a) in addrs.iter().enumerate() {
        match last.insert(a >> PAGE_SHIFT, t) {
            Some(prev) => {
                let after = prefix(&tree, t) - prefix(&tree, prev + 1);
                out.push(u64::try_from(after).unwrap_or(0));
                add(&mut tree, prev, -1);
            }
            None => out.push(u64::MAX),
        }
        add(&mut tree, t, 1);
    }
    out
}

/// Per access, how many distinct 4K pages of its 2M region have been touched so far,
/// itself included.
pub(crate) fn region_fill(addrs: &[u64]) -> Vec<u64> {
    let mut pages = std::collections::BTreeSet::new();
    let mut per_region = std::collections::BTreeMap::<u64, u64>::new();
    addrs
        .iter()
        .map(|&a| {
            let c = per_region.entry(a >> REGION_SHIFT).or_insert(0);
            if pages.insert(a >> PAGE_SHIFT) {
                *c += 1;
            }
            *c
        })
        .collect()
}

/// Per 2M region touched, the distinct 4K pages of it touched.
pub(crate) fn pages_per_region(addrs: &[u64]) -> Vec<u64> {
    let pages: std::collections::BTreeSet<u64> = addrs.iter().map(|a| a >> PAGE_SHIFT).collect();
    let mut per = std::collections::BTreeMap::<u64, u64>::new();
    for p in pages {
        *per.entry(p >> (REGION_SHIFT - PAGE_SHIFT)).or_insert(0) += 1;
    }
    per.into_values().collect()
}

/// Two-sample Kolmogorov–Smirnov distance: the largest gap between the two empirical CDFs.
pub(crate) fn ks(a: &[u64], b: &[u64]) -> f64 {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    ks_sorted_weighted(&counts(&a), &counts(&b))
}

/// `(value, count)` of a sorted sample.
pub(crate) fn counts(sorted: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &x in sorted {
        match out.last_mut() {
            Some((v, c)) if *v == x => *c += 1,
            _ => out.push((x, 1)),
        }
    }
    out
}

/// The KS distance between two histograms given as `(value, count)` in increasing value.
#[allow(clippy::cast_precision_loss)]
pub(crate) fn ks_sorted_weighted(a: &[(u64, u64)], b: &[(u64, u64)]) -> f64 {
    let na: u64 = a.iter().map(|x| x.1).sum();
    let nb: u64 = b.iter().map(|x| x.1).sum();
    let (mut i, mut j, mut ca, mut cb, mut d) = (0, 0, 0u64, 0u64, 0f64);
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.0.min(y.0),
            (Some(x), None) => x.0,
            (None, Some(y)) => y.0,
            (None, None) => break,
        };
        while i < a.len() && a[i].0 == v {
            ca += a[i].1;
            i += 1;
        }
        while j < b.len() && b[j].0 == v {
            cb += b[j].1;
            j += 1;
        }
        d = d.max((ca as f64 / na as f64 - cb as f64 / nb as f64).abs());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuse_distance_counts_distinct_pages_between() {
        let p = |n: u64| n << 12;
        let d = reuse_distances(&[p(1), p(1) + 8, p(2), p(3), p(2), p(1)]);
        assert_eq!(d, [u64::MAX, 0, u64::MAX, u64::MAX, 1, 2]);
    }

    #[test]
    fn region_fill_and_pages_per_region() {
        let a = [0, 4096, 8, 2 << 20, 8192];
        assert_eq!(region_fill(&a), [1, 2, 2, 1, 3]);
        assert_eq!(pages_per_region(&a), [3, 1]);
    }

    #[test]
    fn ks_of_equal_and_disjoint_samples() {
        assert_eq!(ks(&[1, 2, 3], &[3, 2, 1]), 0.0);
        assert_eq!(ks(&[1, 1], &[5, 6]), 1.0);
        assert!((ks(&[1, 2], &[2, 3]) - 0.5).abs() < 1e-12);
    }
}
