//! Benchmarks live in `benches/` (criterion, `harness = false`).
