//! Host software: the physical allocator, the kernel direct map and its policies.

pub mod alloc;
pub mod config;
pub mod directmap;
