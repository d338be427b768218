//! Address newtypes: one type per address space, so that passing the wrong kind does not compile
//! (STYLE rules 3 and 4).
//!
//! Physical kinds (`Spa`, `Gpa`) are limited to the 52-bit physical-address width of x86-64
//! (Intel SDM Vol. 3A §4.1.4, "MAXPHYADDR is at most 52"; AMD APM Vol. 2 §5.3.3, "52-bit
//! physical addresses"). Virtual kinds (`Gva`, `Hva`) and `Iova` hold any 64-bit value; whether a
//! virtual address is canonical depends on the paging depth, so it is a query
//! ([`Gva::is_canonical`]) rather than a construction rule.
//!
//! No conversion turns one kind into another: only translation (a page walk, the IOMMU) produces
//! an `Spa` from a `Gpa` or `Iova`.

use crate::PageSize;
use std::fmt;

/// Highest number of physical-address bits on x86-64 (Intel SDM Vol. 3A §4.1.4; AMD APM Vol. 2
/// §5.3.3).
pub const MAX_PHYS_BITS: u32 = 52;

/// An address was outside the range its kind allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {value:#x} exceeds the {bits}-bit address width")]
pub struct AddrRangeError {
    /// Which address kind was being built (`"Spa"`, `"Gpa"`, ...).
    pub kind: &'static str,
    /// The rejected value.
    pub value: u64,
    /// The width the kind allows.
    pub bits: u32,
}

macro_rules! address_kind {
    ($(#[$doc:meta])* $name:ident, $label:literal, phys = $phys:tt) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "u64", into = "u64")]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Short name of this address kind, as used in messages and text formats.
            pub const KIND: &'static str = $label;
            /// The zero address.
            pub const ZERO: Self = Self(0);

            /// Builds an address, rejecting values beyond the kind's width.
            ///
            /// # Errors
            /// [`AddrRangeError`] if a physical address has bits above [`MAX_PHYS_BITS`].
            pub const fn try_new(value: u64) -> Result<Self, AddrRangeError> {
                if $phys && (value >> MAX_PHYS_BITS) != 0 {
                    return Err(AddrRangeError { kind: $label, value, bits: MAX_PHYS_BITS });
                }
                Ok(Self(value))
            }

            /// Builds an address from a value known to be in range.
            ///
            /// # Panics
            /// If the value is out of range (use [`Self::try_new`] for values from input).
            #[track_caller]
            pub const fn new(value: u64) -> Self {
                match Self::try_new(value) {
                    Ok(a) => a,
                    Err(_) => panic!(concat!($label, " out of range")),
                }
            }

            /// Builds an address, dropping bits beyond the kind's width.
            pub const fn new_truncate(value: u64) -> Self {
                if $phys { Self(value & ((1u64 << MAX_PHYS_BITS) - 1)) } else { Self(value) }
            }

            /// The raw value.
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// Rounds down to a page boundary.
            pub const fn align_down(self, size: PageSize) -> Self {
                Self(self.0 & !(size.bytes() - 1))
            }

            /// Whether the address is aligned to `size`.
            pub const fn is_aligned(self, size: PageSize) -> bool {
                self.0 & (size.bytes() - 1) == 0
            }

            /// Offset of the address within its page of `size`.
            pub const fn page_offset(self, size: PageSize) -> u64 {
                self.0 & (size.bytes() - 1)
            }

            /// Page frame / page number at 4 KiB granularity.
            pub const fn page_number(self) -> u64 {
                self.0 >> PageSize::K4.shift()
            }

            /// Adds a byte offset, or `None` on overflow or when leaving the kind's range.
            pub const fn checked_add(self, bytes: u64) -> Option<Self> {
                match self.0.checked_add(bytes) {
                    Some(v) => match Self::try_new(v) {
                        Ok(a) => Some(a),
                        Err(_) => None,
                    },
                    None => None,
                }
            }

            /// Byte distance from `base` up to `self`, or `None` if `self` is below `base`.
            pub const fn checked_offset_from(self, base: Self) -> Option<u64> {
                self.0.checked_sub(base.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "({:#x})"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }

        impl TryFrom<u64> for $name {
            type Error = AddrRangeError;
            fn try_from(v: u64) -> Result<Self, AddrRangeError> {
                Self::try_new(v)
            }
        }

        impl From<$name> for u64 {
            fn from(a: $name) -> u64 {
                a.0
            }
        }
    };
}

address_kind!(
    /// System physical address: what the memory controller and the RMP see (AMD APM Vol. 2
    /// §15.36.1; the RMP is indexed by SPA).
    Spa, "Spa", phys = true
);
address_kind!(
    /// Guest physical address: the output of a guest's own paging, the input of the nested
    /// (NPT/EPT) walk.
    Gpa, "Gpa", phys = true
);
address_kind!(
    /// Guest virtual address: the input of a guest's own page walk.
    Gva, "Gva", phys = false
);
address_kind!(
    /// Host virtual address: a host kernel or host process virtual address.
    Hva, "Hva", phys = false
);
address_kind!(
    /// I/O virtual address: what a device puts on the bus, translated by the IOMMU.
    Iova, "Iova", phys = false
);

macro_rules! canonical {
    ($name:ident) => {
        impl $name {
            /// Whether the address is canonical for a paging depth with `va_bits` virtual bits
            /// (48 for 4-level, 57 for 5-level paging; Intel SDM Vol. 3A §4.5, AMD APM Vol. 2
            /// §5.3.1): bits 63..va_bits-1 all equal.
            pub const fn is_canonical(self, va_bits: u32) -> bool {
                let shift = 64 - va_bits;
                ((self.0 << shift).cast_signed() >> shift).cast_unsigned() == self.0
            }
        }
    };
}
canonical!(Gva);
canonical!(Hva);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn physical_width_is_enforced() {
        assert!(Spa::try_new((1 << 52) - 1).is_ok());
        let e = Spa::try_new(1 << 52).unwrap_err();
        assert_eq!(e.kind, "Spa");
        assert!(e.to_string().contains("0x10000000000000"));
        assert!(Gva::try_new(u64::MAX).is_ok());
    }

    #[test]
    fn canonical_addresses() {
        assert!(Hva::new(0xffff_8880_0000_0000).is_canonical(48));
        assert!(!Hva::new(0xff00_8880_0000_0000).is_canonical(48));
        assert!(Hva::new(0xff00_8880_0000_0000).is_canonical(57));
        assert!(Hva::new(0x0000_7fff_ffff_f000).is_canonical(48));
        assert!(!Hva::new(0x0000_8000_0000_0000).is_canonical(48));
    }

    proptest! {
        #[test]
        fn align_down_is_aligned_and_below(v in 0u64..(1 << 52), s in 0usize..3) {
            let size = PageSize::ALL[s];
            let a = Spa::new(v);
            let d = a.align_down(size);
            prop_assert!(d.is_aligned(size));
            prop_assert!(d <= a);
            prop_assert_eq!(d.raw() + a.page_offset(size), a.raw());
            prop_assert!(a.page_offset(size) < size.bytes());
        }

        #[test]
        fn checked_add_never_leaves_range(v in any::<u64>(), off in any::<u64>()) {
            if let Ok(a) = Gpa::try_new(v) {
                match a.checked_add(off) {
                    Some(b) => prop_assert_eq!(b.raw(), v + off),
                    None => prop_assert!(v.checked_add(off).is_none_or(|s| s >> 52 != 0)),
                }
            }
        }

        #[test]
        fn truncate_agrees_with_try_new(v in any::<u64>()) {
            let t = Spa::new_truncate(v);
            prop_assert!(Spa::try_new(t.raw()).is_ok());
            if let Ok(a) = Spa::try_new(v) { prop_assert_eq!(a, t); }
        }
    }
}
