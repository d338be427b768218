//! Guest-physical address attributes that select a translation: the TDX shared bit
//! (spec/tdx.md §1.1) and the SEV C-bit of a guest-physical access (AMD APM Vol. 2 §15.34).

use serde::{Deserialize, Serialize};
use sim_core::Gpa;

/// A TD's guest-physical address width (GPAW), which fixes the shared bit: bit 47 for GPAW 48,
/// bit 51 for GPAW 52 (TDX module `get_gpa_shared_bit`; KVM `TDX_SHARED_BIT_PWL_4/5`;
/// spec/tdx.md §1.1). KVM supports GPAW 48 with a 4-level EPT and GPAW 52 with a 5-level EPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GpaWidth {
    /// GPAW = 48: shared bit 47.
    W48,
    /// GPAW = 52: shared bit 51.
    W52,
}

impl GpaWidth {
    /// The position of the shared bit.
    pub const fn shared_bit(self) -> u32 {
        match self {
            GpaWidth::W48 => 47,
            GpaWidth::W52 => 51,
        }
    }

    /// The mask of the shared bit.
    pub const fn shared_mask(self) -> u64 {
        1 << self.shared_bit()
    }

    /// Whether `gpa` is shared (S = 1: translated by the shared EPT) rather than private
    /// (S = 0: translated by the Secure EPT).
    pub const fn is_shared(self, gpa: Gpa) -> bool {
        gpa.raw() & self.shared_mask() != 0
    }

    /// The address bits above the width that must be zero (bits 51:48 for GPAW 48).
    pub const fn invalid_bits(self) -> u64 {
        match self {
            GpaWidth::W48 => ((1 << 52) - 1) & !((1 << 48) - 1),
            GpaWidth::W52 => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bits() {
        assert_eq!(GpaWidth::W48.shared_bit(), 47);
        assert_eq!(GpaWidth::W52.shared_bit(), 51);
        assert!(GpaWidth::W48.is_shared(Gpa::new(0x8000_0000_0000)));
        assert!(!GpaWidth::W48.is_shared(Gpa::new(0x7fff_ffff_f000)));
        assert!(GpaWidth::W52.is_shared(Gpa::new(1 << 51)));
        assert!(!GpaWidth::W52.is_shared(Gpa::new(1 << 47)));
        assert_eq!(GpaWidth::W48.invalid_bits(), 0xf_0000_0000_0000);
    }
}
