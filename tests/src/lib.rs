//! Cross-crate integration, simulation and interop tests for mesh (see `tests/`), and the
//! helpers they share.

pub mod crash;
