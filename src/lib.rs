//! vaultd: a hardened secrets vault and credential-broker daemon.

pub mod storage;
