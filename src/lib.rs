//! ccsim root crate.
