//! Text scenario format `.ccs` (see docs/scenario-format.md).
