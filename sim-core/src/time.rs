//! Simulated time. Every latency is a `Cycles` (STYLE rule 12); arithmetic only with `Cycles`.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A number of core clock cycles of the simulated machine.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Cycles(u64);

impl Cycles {
    /// Zero cycles.
    pub const ZERO: Cycles = Cycles(0);

    /// `n` cycles.
    pub const fn new(n: u64) -> Self {
        Cycles(n)
    }

    /// The count.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// `self × n`, saturating.
    pub const fn times(self, n: u64) -> Self {
        Cycles(self.0.saturating_mul(n))
    }

    /// `self − other`, or zero if `other` is larger.
    pub const fn saturating_sub(self, other: Cycles) -> Self {
        Cycles(self.0.saturating_sub(other.0))
    }
}

impl Add for Cycles {
    type Output = Cycles;
    fn add(self, o: Cycles) -> Cycles {
        Cycles(self.0.saturating_add(o.0))
    }
}

impl AddAssign for Cycles {
    fn add_assign(&mut self, o: Cycles) {
        self.0 = self.0.saturating_add(o.0);
    }
}

impl Sub for Cycles {
    type Output = Cycles;
    /// Saturating: a duration is never negative.
    fn sub(self, o: Cycles) -> Cycles {
        Cycles(self.0.saturating_sub(o.0))
    }
}

impl std::iter::Sum for Cycles {
    fn sum<I: Iterator<Item = Cycles>>(iter: I) -> Cycles {
        iter.fold(Cycles::ZERO, Add::add)
    }
}

impl fmt::Debug for Cycles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}cy", self.0)
    }
}

impl fmt::Display for Cycles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
