//! rmp-model (to be filled).
#![deny(missing_docs)]
#![deny(missing_debug_implementations)]
