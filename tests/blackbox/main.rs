//! Black-box tests of vaultd: real processes, real files, real mutual TLS with a
//! generated PKI.
// Helpers here are test code too: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

mod admin;
mod anomalies;
mod apikeys;
mod audit;
mod breakglass;
mod broker;
mod corpora;
mod crash;
mod deny;
mod export;
mod handshakes;
mod harness;
mod observability;
mod postgres;
mod process;
mod reload;
mod roles;
mod snapshot;
mod tls;
mod wire;
