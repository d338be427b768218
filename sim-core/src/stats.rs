//! Statistics building blocks (STYLE rule 17): plain data keyed by enums, with `Sub` for
//! phase deltas; printing lives in the root crate.

use crate::PageSize;
use std::ops::{AddAssign, Index, IndexMut, Sub};

/// One value per page size (4K, 2M, 1G). Serializes as `{"4K": …, "2M": …, "1G": …}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerSize<T>(pub [T; 3]);

impl<T> Index<PageSize> for PerSize<T> {
    type Output = T;
    fn index(&self, s: PageSize) -> &T {
        &self.0[s.index()]
    }
}

impl<T> IndexMut<PageSize> for PerSize<T> {
    fn index_mut(&mut self, s: PageSize) -> &mut T {
        &mut self.0[s.index()]
    }
}

impl<T: Copy + std::iter::Sum<T>> PerSize<T> {
    /// Sum over sizes.
    pub fn total(&self) -> T {
        self.0.iter().copied().sum()
    }
}

impl<T: Copy + Sub<Output = T>> Sub for PerSize<T> {
    type Output = PerSize<T>;
    fn sub(self, o: Self) -> Self {
        PerSize([self.0[0] - o.0[0], self.0[1] - o.0[1], self.0[2] - o.0[2]])
    }
}

impl<T: Copy + AddAssign> AddAssign for PerSize<T> {
    fn add_assign(&mut self, o: Self) {
        for i in 0..3 {
            self.0[i] += o.0[i];
        }
    }
}

impl<T: serde::Serialize> serde::Serialize for PerSize<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        for size in PageSize::ALL {
            m.serialize_entry(size.name(), &self.0[size.index()])?;
        }
        m.end()
    }
}

/// Reads back what `Serialize` writes: a map with exactly the keys `4K`, `2M` and `1G`.
impl<'de, T: serde::Deserialize<'de> + Default + Copy> serde::Deserialize<'de> for PerSize<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de> + Default + Copy> serde::de::Visitor<'de> for V<T> {
            type Value = PerSize<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map with keys 4K, 2M and 1G")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = [T::default(); 3];
                let mut seen = [false; 3];
                while let Some(k) = m.next_key::<String>()? {
                    let size = PageSize::ALL
                        .into_iter()
                        .find(|s| s.name() == k)
                        .ok_or_else(|| serde::de::Error::unknown_field(&k, &["4K", "2M", "1G"]))?;
                    if seen[size.index()] {
                        return Err(serde::de::Error::duplicate_field("page size"));
                    }
                    seen[size.index()] = true;
                    out[size.index()] = m.next_value()?;
                }
                if let Some(i) = seen.iter().position(|s| !s) {
                    return Err(serde::de::Error::missing_field(PageSize::ALL[i].name()));
                }
                Ok(PerSize(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// A sampled time series of a per-size quantity (e.g. DirectMap4k/2M/1G), sampled at event
/// indices so that it is independent of the machine the simulator runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Series {
    /// `(event index, value per size)` samples, in order.
    pub samples: Vec<(u64, PerSize<u64>)>,
}

impl Series {
    /// Append a sample unless it equals the previous one.
    pub fn sample(&mut self, at: u64, v: PerSize<u64>) {
        if self.samples.last().is_none_or(|(_, last)| *last != v) {
            self.samples.push((at, v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_size_arithmetic() {
        let mut a = PerSize([1u64, 2, 3]);
        a[PageSize::M2] += 5;
        assert_eq!(a[PageSize::M2], 7);
        assert_eq!(a.total(), 11);
        assert_eq!(a - PerSize([1, 1, 1]), PerSize([0, 6, 2]));
        let j = serde_json_like(&a);
        assert_eq!(j, "4K=1,2M=7,1G=3");
    }

    fn serde_json_like(p: &PerSize<u64>) -> String {
        PageSize::ALL.iter().map(|s| format!("{}={}", s, p[*s])).collect::<Vec<_>>().join(",")
    }
}
