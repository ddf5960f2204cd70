//! The command line: every command, flag and environment variable.

use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};
use vault_client::Environment;

mod pki;
mod tenant;

pub(crate) use pki::{CrlArgs, PkiCommand, RevokeReason};
pub(crate) use tenant::TenantCommand;

/// vaultctl: operate vaultd — lifecycle, secrets, leases, transit, policy, audit, PKI.
///
/// Secret values, shares, passphrases and API keys are never taken from arguments:
/// they come from stdin, a file, or a prompt that does not echo.
#[derive(Parser, Debug)]
#[command(name = "vaultctl", version, about, long_about = None, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  an unexpected error
  2  bad usage
  3  cannot connect: vaultd unreachable, TLS failed, or certificate files unusable
  4  refused: permission denied, client certificate refused or expired, API key refused
  5  vaultd is sealed, uninitialised, or not in a state to do this
  6  not found
  7  invalid input: a bad value, name, share or file
  8  a check failed: audit verify, policy lint, or policy check denied
  9  limited: a rate limit or daily quota refused; retry after the time shown";

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub(crate) struct Global {
    /// vaultd's gRPC address, e.g. https://127.0.0.1:8200.
    #[arg(long, env = "VAULTD_ADDR", global = true, value_name = "URL")]
    pub(crate) addr: Option<String>,
    /// The CA certificate (PEM) vaultd's certificate chains to.
    #[arg(long, env = "VAULTD_CACERT", global = true, value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,
    /// Your client certificate (PEM).
    #[arg(long, env = "VAULTD_CLIENT_CERT", global = true, value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    /// Your client key (PEM).
    #[arg(long, env = "VAULTD_CLIENT_KEY", global = true, value_name = "FILE")]
    pub(crate) key: Option<PathBuf>,
    /// vaultd's local Unix socket; used for status, init, unseal and seal when no
    /// --addr is given.
    #[arg(long, env = "VAULTD_SOCKET", global = true, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Machine-readable JSON output (errors too, on stderr).
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Seal status in one line, then the security alerts this node raised since it
    /// started (counts by kind and the latest few), if any.
    Status,
    /// Initialises an empty vault and hands out the unseal shares, once.
    Init(InitArgs),
    /// Submits one unseal share (from a file, or typed at a hidden prompt).
    Unseal(UnsealArgs),
    /// Seals vaultd: every key, session and lease is wiped.
    Seal(SealArgs),
    /// Reloads vaultd as SIGHUP does (vaultd.toml, TLS files and CRLs, policies, log
    /// level, API-key limits; the audit log reopened) and says what each part did;
    /// exits 8 if a part failed or a changed setting waits for a restart.
    Reload,
    /// Makes a new share set, given a quorum of current shares. It is pending: the
    /// current shares keep working until `rekey-verify` is given a quorum of the new.
    Rekey(RekeyArgs),
    /// Puts the pending share set in force, given a quorum of its shares (one
    /// --share-file per share); the old shares stop working.
    #[command(name = "rekey-verify")]
    RekeyVerify(QuorumArgs),
    /// Root-key operations.
    #[command(subcommand, name = "root-key")]
    RootKey(RootKeyCommand),
    /// Custodian ceremonies: rekey, verify-rekey and root-key rotation with each
    /// custodian submitting their own share from their own machine.
    #[command(subcommand)]
    Ceremony(crate::commands::ceremony::CeremonyCommand),
    /// Secrets: write-only values, readable metadata.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Leases.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Platform API keys: issue, verify, rotate, revoke, list.
    #[command(subcommand, name = "apikey")]
    ApiKey(ApiKeyCommand),
    /// Transit encryption: data on stdin, result on stdout.
    Transit(TransitArgs),
    /// Policies: check and lint offline, or reload the daemon's.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Certificates for a real deployment.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Break-glass access: time-boxed extra permissions, approved by several people.
    #[command(subcommand, name = "breakglass")]
    BreakGlass(crate::commands::breakglass::BreakGlassCommand),
    /// Snapshots of the whole store, for backup (restore with `vaultd snapshot restore`).
    #[command(subcommand)]
    Snapshot(crate::commands::snapshot::SnapshotCommand),
    /// Prints a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Writes man pages (vaultctl.1 and one per command) into a directory.
    Man {
        /// Where to write them.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
}

/// Which audit records `audit search` and `audit tail` print.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct AuditFilters {
    /// The tenant the request concerned.
    #[arg(long)]
    pub(crate) tenant: Option<String>,
    /// The caller's identity (spiffe://…).
    #[arg(long)]
    pub(crate) identity: Option<String>,
    /// The operation (broker.lease), or a prefix ending in * (admin.*).
    #[arg(long)]
    pub(crate) operation: Option<String>,
    /// allow, deny or error.
    #[arg(long, value_parser = ["allow", "deny", "error"])]
    pub(crate) decision: Option<String>,
}

/// Where new shares go.
#[derive(Args, Debug)]
pub(crate) struct ShareOutput {
    /// Write one file per custodian (share-1.txt, …; mode 0600) here instead of
    /// printing the shares.
    #[arg(long, value_name = "DIR")]
    pub(crate) share_dir: Option<PathBuf>,
    /// Encrypt each share file under its own passphrase (Argon2id); asked for once
    /// per share. Needs --share-dir.
    #[arg(long, requires = "share_dir", conflicts_with_all = ["recipient", "recipients_file"])]
    pub(crate) passphrase_protect: bool,
    /// Encrypt share n to the n-th custodian's age public key (age1…), one flag per
    /// share, into share-n.age: only that custodian's identity file opens it. Needs
    /// --share-dir.
    #[arg(
        long,
        value_name = "AGE1…",
        requires = "share_dir",
        conflicts_with = "recipients_file"
    )]
    pub(crate) recipient: Vec<String>,
    /// As --recipient, from a file of `name age1…` lines (`share-<name>.age`).
    #[arg(long, value_name = "FILE", requires = "share_dir")]
    pub(crate) recipients_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// Shares to create.
    #[arg(long, default_value_t = 5)]
    pub(crate) shares: u32,
    /// Shares needed to unseal.
    #[arg(long, default_value_t = 3)]
    pub(crate) threshold: u32,
    #[command(flatten)]
    pub(crate) output: ShareOutput,
}

#[derive(Args, Debug)]
pub(crate) struct SealArgs {
    /// Seal every node sharing this node's PostgreSQL database, not just this one:
    /// each seals as it reads the cluster's change log, within its catch-up bound.
    #[arg(long)]
    pub(crate) cluster: bool,
}

#[derive(Args, Debug)]
pub(crate) struct UnsealArgs {
    /// A share file (plain `vs1-…`, passphrase-protected `vsf1-…`, or encrypted to
    /// a custodian's age key). Without it, the share is read at a hidden prompt (or
    /// from stdin when not a terminal).
    #[arg(long, value_name = "FILE")]
    pub(crate) share_file: Option<PathBuf>,
    /// The custodian's age identity file (AGE-SECRET-KEY-1…), for a share file
    /// encrypted to their key.
    #[arg(long, value_name = "FILE", requires = "share_file")]
    pub(crate) identity: Vec<PathBuf>,
    /// Discard the unseal attempt in progress instead.
    #[arg(long, conflicts_with = "share_file")]
    pub(crate) reset: bool,
}

#[derive(Args, Debug)]
pub(crate) struct QuorumArgs {
    /// Current share files, one per flag; missing ones are asked for at a prompt.
    #[arg(long = "share-file", value_name = "FILE")]
    pub(crate) share_files: Vec<PathBuf>,
    /// Age identity files for share files encrypted to custodians' keys.
    #[arg(long, value_name = "FILE")]
    pub(crate) identity: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub(crate) struct RekeyArgs {
    /// Shares in the new set.
    #[arg(long, default_value_t = 5)]
    pub(crate) shares: u32,
    /// Shares the new set needs to unseal.
    #[arg(long, default_value_t = 3)]
    pub(crate) threshold: u32,
    #[command(flatten)]
    pub(crate) quorum: QuorumArgs,
    #[command(flatten)]
    pub(crate) output: ShareOutput,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RootKeyCommand {
    /// Creates a new root-key version and rewraps every tenant and system key.
    Rotate(QuorumArgs),
}

/// An environment on the command line. Its names are vault-client's
/// [`Environment::as_str`], which are vault-proto's: the CLI does not spell them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Env(pub(crate) Environment);

impl Env {
    /// The default where an environment is optional.
    pub(crate) const LIVE: Env = Env(Environment::Live);
    const ALL: [Env; 2] = [Env(Environment::ALL[0]), Env(Environment::ALL[1])];
}

impl ValueEnum for Env {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self.0 {
            Environment::Live => "Production traffic",
            Environment::Test => "Test-mode traffic",
        };
        Some(PossibleValue::new(self.0.as_str()).help(help))
    }
}

impl From<Env> for Environment {
    fn from(env: Env) -> Self {
        env.0
    }
}

/// Whose key a secret is.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A customer's own provider key.
    Byok,
    /// A platform system key.
    System,
}

/// A secret: tenant, name and environment.
#[derive(Args, Debug, Clone)]
pub(crate) struct SecretArgs {
    /// The tenant.
    pub(crate) tenant: String,
    /// The secret's name, e.g. byok/openai.
    pub(crate) name: String,
    /// The environment.
    #[arg(long, value_enum)]
    pub(crate) env: Env,
}

/// How a value is read from stdin.
#[derive(Args, Debug, Clone)]
pub(crate) struct ValueInput {
    /// Keep a trailing newline of the value (by default one is dropped).
    #[arg(long)]
    pub(crate) keep_newline: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum SecretCommand {
    /// Stores a new secret; the value is read from stdin (or a hidden prompt).
    Put {
        #[command(flatten)]
        secret: SecretArgs,
        /// Whose key it is.
        #[arg(long, value_enum)]
        kind: Kind,
        #[command(flatten)]
        input: ValueInput,
    },
    /// Stores a new version; the previous one stays leasable for the grace window.
    Rotate {
        #[command(flatten)]
        secret: SecretArgs,
        /// How long the previous version stays leasable, e.g. 24h, 30m, 0s.
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
        #[command(flatten)]
        input: ValueInput,
    },
    /// Lists a tenant's secrets (metadata only).
    List {
        /// The tenant.
        tenant: String,
        /// Only this environment.
        #[arg(long, value_enum)]
        env: Option<Env>,
    },
    /// Shows a secret's versions, hints and fingerprints (never its value).
    Describe {
        #[command(flatten)]
        secret: SecretArgs,
    },
    /// Deletes a secret and every version; its leases are revoked.
    Delete {
        #[command(flatten)]
        secret: SecretArgs,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum LeaseCommand {
    /// Leases a secret and prints its value (for service identities).
    Get {
        #[command(flatten)]
        secret: SecretArgs,
        /// Lease lifetime, e.g. 60s (capped by the grant's max_ttl).
        #[arg(long, value_name = "DURATION", default_value = "60s")]
        ttl: String,
    },
    /// Lists active leases.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this identity's.
        #[arg(long)]
        identity: Option<String>,
    },
    /// Revokes leases: exactly one selector.
    Revoke(RevokeArgs),
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct RevokeArgs {
    /// One lease.
    #[arg(long, value_name = "LEASE_ID")]
    pub(crate) id: Option<String>,
    /// Every lease of a tenant.
    #[arg(long, value_name = "TENANT")]
    pub(crate) tenant: Option<String>,
    /// Every lease of one secret, as TENANT/NAME (with --secret-env, default live).
    #[arg(long, value_name = "TENANT/NAME")]
    pub(crate) secret: Option<String>,
    /// Every lease held by an identity.
    #[arg(long, value_name = "ID")]
    pub(crate) identity: Option<String>,
    /// Every lease.
    #[arg(long)]
    pub(crate) all: bool,
    /// The environment of --secret.
    #[arg(long, value_enum, default_value_t = Env::LIVE, requires = "secret")]
    pub(crate) secret_env: Env,
}

/// Where a new API key goes: stdout (alone) or a new file.
#[derive(Args, Debug)]
pub(crate) struct KeyOutput {
    /// Write the key to this new file (mode 0600; refused if it exists) instead of
    /// printing it.
    #[arg(long, value_name = "PATH")]
    pub(crate) out: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ApiKeyCommand {
    /// Issues a key. The key is shown once: alone on stdout, or in --out; what is
    /// kept of it (metadata, hint) goes to stderr, as JSON with --json.
    Issue(IssueKeyArgs),
    /// Verifies a key read from stdin, or typed at a hidden prompt: never from an
    /// argument, which other users could read in the process list.
    Verify {
        /// The environment the request is for (default: the key's own).
        #[arg(long, value_enum)]
        env: Option<Env>,
        /// A scope the request needs.
        #[arg(long)]
        scope: Option<String>,
        /// Quota units the request costs.
        #[arg(long, default_value_t = 1)]
        cost: u32,
    },
    /// Issues a successor with the same tenant, scopes, limits and quota; the old key
    /// keeps verifying for the grace window. The new key is shown as by `issue`.
    Rotate {
        /// The key id (as `apikey list` shows it).
        key_id: String,
        /// How long the old key keeps verifying, e.g. 24h (the default), 0s.
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
        #[command(flatten)]
        output: KeyOutput,
    },
    /// Revokes a key at once; verifiers are told.
    Revoke {
        /// The key id.
        key_id: String,
    },
    /// Lists a tenant's keys: metadata and hints, never a key.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Only this environment.
        #[arg(long, value_enum)]
        env: Option<Env>,
    },
}

#[derive(Args, Debug)]
pub(crate) struct IssueKeyArgs {
    /// The tenant the key belongs to.
    #[arg(long)]
    pub(crate) tenant: String,
    /// The one environment the key verifies in.
    #[arg(long, value_enum, default_value_t = Env::LIVE)]
    pub(crate) env: Env,
    /// A scope the key grants, e.g. usage:read (repeat for more).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub(crate) scopes: Vec<String>,
    /// A rate tier of vaultd's configuration (default: its default tier).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["burst", "per_minute", "per_day"])]
    pub(crate) tier: Option<String>,
    /// Explicit limits instead of a tier: requests in any 10 s (0: unlimited); needs
    /// --per-minute and --per-day.
    #[arg(long, value_name = "N", requires_all = ["per_minute", "per_day"])]
    pub(crate) burst: Option<u32>,
    /// Requests in any minute (0: unlimited).
    #[arg(long, value_name = "N", requires_all = ["burst", "per_day"])]
    pub(crate) per_minute: Option<u32>,
    /// Requests in any 24 hours (0: unlimited).
    #[arg(long, value_name = "N", requires_all = ["burst", "per_minute"])]
    pub(crate) per_day: Option<u32>,
    /// Quota units per UTC day (default: no quota).
    #[arg(long, value_name = "N")]
    pub(crate) daily_quota: Option<u64>,
    /// The key stops verifying after this long, e.g. 90d (default: never).
    #[arg(long, value_name = "DURATION")]
    pub(crate) expires_in: Option<String>,
    /// A label for people, at most 64 characters.
    #[arg(long, value_name = "TEXT")]
    pub(crate) label: Option<String>,
    #[command(flatten)]
    pub(crate) output: KeyOutput,
}

#[derive(Args, Debug)]
pub(crate) struct TransitArgs {
    /// What to do.
    #[arg(value_enum)]
    pub(crate) action: TransitAction,
    /// The tenant whose key is used.
    #[arg(long)]
    pub(crate) tenant: String,
    /// The environment.
    #[arg(long, value_enum)]
    pub(crate) env: Env,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransitAction {
    /// Plaintext on stdin, hex envelope on stdout.
    Encrypt,
    /// Hex envelope on stdin, plaintext on stdout.
    Decrypt,
    /// Hex envelope on stdin, the same data under the tenant's current key on stdout.
    Rewrap,
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCommand {
    /// Explains how the policies decide a request: offline with --dir, else the
    /// daemon's loaded set.
    Check {
        /// The identity to evaluate as.
        #[arg(long)]
        identity: String,
        /// An operation (lease, transit.encrypt, …) or a permission (seal, …).
        #[arg(long, value_name = "OP")]
        op: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The secret's name, for lease.
        #[arg(long, value_name = "NAME")]
        secret: Option<String>,
        /// The environment, for operations.
        #[arg(long, value_enum, default_value_t = Env::LIVE)]
        env: Env,
        /// Evaluate this policy directory offline instead of asking the daemon.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Validates a policy directory offline.
    Lint {
        /// The directory.
        #[arg(long, value_name = "DIR", default_value = "policies")]
        dir: PathBuf,
    },
    /// Tells the daemon to reload its policy directory.
    Reload,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AuditCommand {
    /// Prints vaultd's audit records that match every filter given, oldest first, one
    /// JSON line each, exactly as written (`audit verify` checks them against the
    /// chain). Needs `audit.read`.
    Search {
        #[command(flatten)]
        filters: AuditFilters,
        /// Records from this long ago on (e.g. 1h, 30m).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// The most records printed.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Keep printing matching records as they are written (Ctrl-C ends it).
        #[arg(long, short)]
        follow: bool,
    },
    /// Prints matching audit records as they are written, from now on.
    Tail {
        #[command(flatten)]
        filters: AuditFilters,
    },
    /// Verifies an audit log (a copy is fine) offline and names the first bad record.
    /// Several files are verified in order as one chain: the files log rotation left,
    /// oldest first (`audit.jsonl.1 audit.jsonl`).
    Verify {
        /// The log, or its files oldest first.
        #[arg(required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// The checkpoint public key (hex; `vaultctl status --json` shows it), so that
        /// signatures are checked too.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
}
