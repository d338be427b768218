//! Binary trace format `.cct` (see docs/trace-format.md).
