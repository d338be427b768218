//! Host software: the physical allocator (buddy and boot-time), the kernel direct map, Linux CPA
//! on it, and the physmap policies.

pub mod alloc;
pub mod config;
pub mod cpa;
pub mod directmap;
