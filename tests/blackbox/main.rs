//! Black-box tests of vaultd: real processes, real files.
// Helpers here are test code too: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

mod crash;
