//! `vaultctl pki`: the certificate commands and their flags.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// Where `pki revoke` and `pki crl` write the CRL, and for how long it is valid.
#[derive(Args, Debug)]
pub(crate) struct CrlArgs {
    /// Write the CRL here instead of crl.pem in --ca-dir (replaced whole, atomically).
    #[arg(long, value_name = "FILE")]
    pub(crate) crl_out: Option<PathBuf>,
    /// How long the CRL is valid, e.g. 7d, 36h (1h to 366d). Publish again before
    /// then (`vaultctl pki crl`, from cron say): vaultd refuses every certificate of
    /// this CA once the CRL in its tls.crls has passed its next update.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub(crate) next_update: String,
}

/// Why a certificate is revoked, as its CRL entry says.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RevokeReason {
    /// No reason given.
    Unspecified,
    /// Its private key was, or may have been, exposed.
    KeyCompromise,
    /// The CA's key was exposed.
    CaCompromise,
    /// The subject's name or role changed.
    AffiliationChanged,
    /// Replaced by a newer certificate.
    Superseded,
    /// No longer needed: the service or person is gone.
    CessationOfOperation,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PkiCommand {
    /// Creates a CA: ca.pem and ca.key (0600) in --dir.
    InitCa {
        /// Where to write it.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "vaultd CA")]
        name: String,
        /// Days the CA is valid [default: 1825, at most 3650]. It lives long because
        /// replacing it means reissuing every certificate; keep ca.key offline.
        #[arg(long, value_name = "N")]
        days: Option<u32>,
    },
    /// Issues vaultd's server certificate: PREFIX.pem and PREFIX.key.
    IssueServer {
        /// The CA directory (ca.pem, ca.key).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// DNS names clients connect to.
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// IP addresses clients connect to.
        #[arg(long = "ip", value_name = "ADDR")]
        ips: Vec<IpAddr>,
        /// Output path prefix.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Days the certificate is valid [default: 90, at most 397]. vaultd re-reads
        /// its certificate on SIGHUP, so renewing costs no downtime.
        #[arg(long, value_name = "N")]
        days: Option<u32>,
    },
    /// Issues a client certificate for one SPIFFE ID: PREFIX.pem and PREFIX.key.
    IssueClient {
        /// The CA directory (ca.pem, ca.key).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The identity, e.g. spiffe://billing.example/svc/gateway.
        #[arg(long, value_name = "ID")]
        spiffe_id: String,
        /// Output path prefix.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Days the certificate is valid [default: 30, at most 365]. A short life
        /// bounds what a stolen key is worth; vault-client re-reads renewed files
        /// without a restart (`vaultctl pki renew`).
        #[arg(long, value_name = "N")]
        days: Option<u32>,
    },
    /// Issues a fresh certificate, with a new key, for what CERT names (the same
    /// SPIFFE ID, or the same DNS and IP names): PREFIX.pem and PREFIX.key. CERT must
    /// have been issued by this CA and not revoked (revoked.toml in --ca-dir); a
    /// revoked identity needs `pki issue-client` or `pki issue-server` again. CERT
    /// stays valid until it expires; revoke it if it must stop sooner.
    Renew {
        /// The CA directory (ca.pem, ca.key) of the CA to issue from.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The certificate to renew (PEM).
        cert: PathBuf,
        /// Renew CERT even if another CA issued it (or it is self-signed): how
        /// certificates move to a new CA when the old one is replaced. Nothing about
        /// CERT is then verified, so pass only certificates you know came from the old
        /// CA.
        #[arg(long)]
        allow_foreign: bool,
        /// Output path prefix.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Days the new certificate is valid [default: 30 for a client, 90 for a
        /// server].
        #[arg(long, value_name = "N")]
        days: Option<u32>,
    },
    /// Revokes a certificate this CA issued: records its serial in revoked.toml in
    /// --ca-dir (0600, entries never removed) and writes a new CRL. Give the CRL to
    /// vaultd (tls.crls) and reload it (SIGHUP).
    Revoke {
        /// The CA directory (ca.pem, ca.key).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The certificate to revoke (PEM).
        cert: PathBuf,
        /// Why.
        #[arg(long, value_enum, default_value_t = RevokeReason::Unspecified)]
        reason: RevokeReason,
        #[command(flatten)]
        crl: CrlArgs,
    },
    /// Publishes the CRL again, with a fresh next update, revoking nothing new.
    Crl {
        /// The CA directory (ca.pem, ca.key).
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        #[command(flatten)]
        crl: CrlArgs,
    },
}
