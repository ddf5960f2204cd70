//! `vaultctl tenant`: erasure, key rotation and retirement, export.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(crate) enum TenantCommand {
    /// Crypto-shreds a tenant: its keys and secrets are destroyed, its leases revoked.
    Erase {
        /// The tenant.
        tenant: String,
        /// Repeat the tenant id, as a guard against typos.
        #[arg(long, value_name = "TENANT")]
        confirm: String,
    },
    /// Rotates a tenant's key: new values go under a new version; older versions keep
    /// decrypting, and the tenant's secrets are rewrapped in the background.
    RotateKey {
        /// The tenant.
        tenant: String,
    },
    /// Writes a tenant's export (JSON: its secrets' and API keys' metadata and its
    /// audit records with their chain positions; never a value, key, hint or
    /// fingerprint). Needs `tenants.export`.
    Export {
        /// The tenant.
        tenant: String,
        /// Write to this new file (mode 0600) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Shows a tenant's key versions and how many secret versions each still seals.
    Keys {
        /// The tenant.
        tenant: String,
    },
    /// Destroys a tenant's key versions below a version, once no secret uses them;
    /// transit envelopes still under them become unreadable for good.
    RetireKeys {
        /// The tenant.
        tenant: String,
        /// Versions below this one are destroyed.
        #[arg(long, value_name = "VERSION")]
        below: u32,
    },
}
