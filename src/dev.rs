//! `vaultd dev`: a complete daemon in one command, for development only.
//!
//! It makes a fresh directory under the system temporary directory (or uses an empty
//! one it is given, refusing a non-temporary one unless told), generates a dev PKI
//! (CA, server certificate for localhost, an admin and a demo service certificate),
//! writes the repo's example policies plus a dev-only operator role, writes a real
//! `vaultd.toml`, initialises the vault with a single share, unseals it, stores a demo
//! BYOK secret, and serves until interrupted. Everything it does is audited.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use vault_audit::Event;
use vault_crypto::SecretValue;
use vault_pki::{Authority, write_private, write_public};
use vault_policy::Permission;

use crate::config::Config;
use crate::daemon::{Daemon, Running};
use crate::names::{SecretId, SecretKind};
use crate::vault::UnsealOutcome;

/// The repo's example policies, loaded by every dev daemon.
pub(crate) const EXAMPLE_POLICIES: [(&str, &str); 4] = [
    ("admins.toml", include_str!("../policies/admins.toml")),
    (
        "billing-gateway.toml",
        include_str!("../policies/billing-gateway.toml"),
    ),
    ("cluster.toml", include_str!("../policies/cluster.toml")),
    (
        "tenant-workers.toml",
        include_str!("../policies/tenant-workers.toml"),
    ),
];

/// The dev operator: every admin permission, through a role only dev writes.
pub const DEV_OPERATOR: &str = "spiffe://billing.example/human/dev/operator";
/// The demo service: the billing gateway of `policies/billing-gateway.toml`.
pub const DEMO_SERVICE: &str = "spiffe://billing.example/svc/gateway";
/// The demo tenant, which holds one BYOK secret.
pub const DEMO_TENANT: &str = "acme";
/// The demo secret's name (environment `live`).
pub const DEMO_SECRET: &str = "byok/openai";

/// How `vaultd dev` is asked to run.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Use this (empty or missing) directory instead of a fresh temporary one.
    pub dir: Option<PathBuf>,
    /// Allow `dir` outside the system temporary directory.
    pub allow_persistent: bool,
    /// gRPC listener.
    pub grpc: SocketAddr,
    /// Health and metrics listener.
    pub http: SocketAddr,
}

impl Default for DevOptions {
    fn default() -> Self {
        Self {
            dir: None,
            allow_persistent: false,
            grpc: SocketAddr::from((Ipv4Addr::LOCALHOST, 8200)),
            http: SocketAddr::from((Ipv4Addr::LOCALHOST, 8201)),
        }
    }
}

/// Why `vaultd dev` did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// The directory is not under the temporary directory and that was not allowed.
    #[error(
        "{} is not under {}: vaultd dev keeps throw-away data; pass --allow-persistent-dir to use it anyway",
        dir.display(), tmp.display()
    )]
    NotTemporary {
        /// The directory given.
        dir: PathBuf,
        /// The system temporary directory.
        tmp: PathBuf,
    },
    /// The directory is another user's, or others may write in it.
    #[error(
        "{} must be yours and private (mode 0700): others could swap the dev PKI in it",
        .0.display()
    )]
    NotPrivate(PathBuf),
    /// The directory already holds files.
    #[error("{} is not empty: give vaultd dev an empty or missing directory", .0.display())]
    NotEmpty(PathBuf),
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PKI could not be generated.
    #[error("generating the dev PKI: {0}")]
    Pki(#[from] vault_pki::PkiError),
    /// The generated configuration was refused (a bug).
    #[error("the generated configuration was refused: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The daemon did not start.
    #[error(transparent)]
    Start(#[from] crate::daemon::StartError),
    /// Initialising, unsealing or storing the demo secret failed.
    #[error("bootstrapping the dev vault: {0}")]
    Bootstrap(#[from] crate::Error),
    /// The bootstrap could not be audited.
    #[error("bootstrapping the dev vault: {0}")]
    Audit(#[from] vault_audit::AuditError),
}

/// A running dev daemon and where its files are.
pub struct DevDaemon {
    /// The daemon.
    pub running: Running,
    /// The dev directory.
    pub dir: PathBuf,
    /// Whether `dir` was made by this run (and is removed when it ends).
    pub temporary: bool,
    /// What a developer needs to know, for the terminal: addresses, files and the
    /// `export` lines for the admin and the demo service.
    pub banner: String,
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> DevError + '_ {
    move |source| DevError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn make_dir(options: &DevOptions) -> Result<(PathBuf, bool), DevError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let tmp = std::env::temp_dir();
    let tmp = tmp.canonicalize().unwrap_or(tmp);
    let (dir, temporary) = match &options.dir {
        Some(dir) => {
            let absolute = resolve(dir).map_err(write_error(dir))?;
            if !options.allow_persistent && !absolute.starts_with(&tmp) {
                return Err(DevError::NotTemporary { dir: absolute, tmp });
            }
            if std::fs::read_dir(&absolute).is_ok_and(|mut d| d.next().is_some()) {
                return Err(DevError::NotEmpty(absolute));
            }
            (absolute, false)
        }
        None => {
            let mut suffix = [0u8; 6];
            vault_crypto::aead::random_bytes(&mut suffix).map_err(crate::Error::from)?;
            let name = format!("vaultd-dev-{}", vault_crypto::hex::encode(&suffix).as_str());
            (tmp.join(name), true)
        }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(write_error(&dir))?;
    // An existing directory keeps its owner and mode: it must already be private.
    let meta = std::fs::symlink_metadata(&dir).map_err(write_error(&dir))?;
    let mine = meta.uid() == rustix::process::getuid().as_raw();
    if !meta.is_dir() || !mine || meta.mode() & 0o077 != 0 {
        return Err(DevError::NotPrivate(dir));
    }
    Ok((dir, temporary))
}

/// `dir` as an absolute path with symbolic links resolved as far as it exists, so
/// `/tmp/../var/x` or a link out of `/tmp` is not taken for a temporary directory.
fn resolve(dir: &Path) -> std::io::Result<PathBuf> {
    let absolute = std::path::absolute(dir)?;
    if absolute
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(std::io::Error::other("use a path without '..'"));
    }
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    while !existing.exists() {
        let (Some(name), Some(parent)) = (existing.file_name(), existing.parent()) else {
            break;
        };
        missing.push(name);
        existing = parent;
    }
    let mut resolved = existing.canonicalize()?;
    resolved.extend(missing.iter().rev());
    Ok(resolved)
}

/// The dev-only role: every admin permission for [`DEV_OPERATOR`].
fn dev_operator_policy() -> String {
    let mut text = String::from(
        "# Written by `vaultd dev` only: the dev operator holds every admin permission.\n\
         [[role]]\nid = \"dev-operator\"\n",
    );
    let _ = writeln!(text, "identities = [\"{DEV_OPERATOR}\"]");
    let names: Vec<String> = Permission::names().map(|n| format!("\"{n}\"")).collect();
    let _ = writeln!(text, "permissions = [{}]", names.join(", "));
    text
}

struct DevFiles {
    dir: PathBuf,
}

impl DevFiles {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn public(&self, name: &str, contents: &str) -> Result<PathBuf, DevError> {
        let path = self.path(name);
        write_public(&path, contents.as_bytes()).map_err(write_error(&path))?;
        Ok(path)
    }

    fn private(&self, name: &str, contents: &[u8]) -> Result<PathBuf, DevError> {
        let path = self.path(name);
        write_private(&path, contents).map_err(write_error(&path))?;
        Ok(path)
    }

    /// A directory only this user can enter (0700).
    fn mkdir(&self, name: &str) -> Result<(), DevError> {
        let path = self.path(name);
        crate::storage::files::create_private_dirs(&path).map_err(write_error(&path))
    }
}

/// Writes the PKI, policies and configuration into `files.dir`; returns the config.
fn write_files(files: &DevFiles, options: &DevOptions) -> Result<Config, DevError> {
    files.mkdir("pki")?;
    let ca = Authority::generate("vaultd dev CA", 30)?;
    files.public("pki/ca.pem", ca.cert_pem())?;
    files.private("pki/ca.key", ca.key_pem().expose_secret().as_bytes())?;
    let server = ca.issue_server(
        &["localhost".to_owned()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        30,
    )?;
    files.public("pki/server.pem", &server.cert_pem)?;
    files.private("pki/server.key", server.key.expose_secret().as_bytes())?;
    for (name, identity) in [("admin", DEV_OPERATOR), ("service", DEMO_SERVICE)] {
        let client = ca.issue_client(identity, 30)?;
        files.public(&format!("pki/{name}.pem"), &client.cert_pem)?;
        files.private(
            &format!("pki/{name}.key"),
            client.key.expose_secret().as_bytes(),
        )?;
    }

    files.mkdir("policies")?;
    for (name, text) in EXAMPLE_POLICIES {
        files.public(&format!("policies/{name}"), text)?;
    }
    files.public("policies/dev-operator.toml", &dev_operator_policy())?;
    files.mkdir("data")?;

    let config_text = format!(
        "# Written by `vaultd dev`. Restart with: vaultd serve --config {dir}/vaultd.toml\n\
         node = \"vaultd-dev\"\n\n\
         [listen]\ngrpc = \"{grpc}\"\nhttp = \"{http}\"\nsocket = \"vaultd.sock\"\n\n\
         [tls]\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\nclient_ca = \"pki/ca.pem\"\n\n\
         [storage]\npath = \"data/vault.redb\"\n\n\
         [policy]\ndir = \"policies\"\n\n\
         [audit]\npath = \"audit.jsonl\"\nfsync = \"always\"\n",
        dir = files.dir.display(),
        grpc = options.grpc,
        http = options.http,
    );
    let config_path = files.public("vaultd.toml", &config_text)?;
    Ok(Config::load(&config_path)?)
}

/// Initialises with one share, unseals, stores the demo secret; each step audited.
async fn bootstrap(daemon: &Daemon, files: &DevFiles) -> Result<(), DevError> {
    let vault = daemon.vault();
    let event = |reason: &str| Event {
        reason: reason.to_owned(),
        ..Event::default()
    };
    let mut shares = vault.init(1, 1)?;
    daemon
        .audit_system("dev.init", event("vaultd dev: one share, threshold 1"))
        .await?;
    let share = shares.pop().ok_or(crate::Error::WrongShares)?;
    files.private("unseal-share", share.encode().as_bytes())?;
    match vault.unseal(share, None)? {
        UnsealOutcome::Unsealed => {}
        UnsealOutcome::InProgress { .. } => return Err(crate::Error::WrongShares.into()),
    }
    daemon
        .audit_system(
            "dev.unseal",
            event("vaultd dev: unsealed with its one share"),
        )
        .await?;
    if let Some(key) = vault.audit_public_key() {
        files.public(
            "audit.pub",
            &format!("{}\n", vault_crypto::hex::encode(&key).as_str()),
        )?;
    }

    let id = SecretId::parse(DEMO_TENANT, "live", DEMO_SECRET).map_err(crate::Error::from)?;
    let mut demo = zeroize::Zeroizing::new([0u8; 12]);
    vault_crypto::aead::random_bytes(&mut demo[..]).map_err(crate::Error::from)?;
    // Built in a buffer of its final size, then owned by the zeroising value.
    let hex = vault_crypto::hex::encode(&demo[..]);
    let mut value = Vec::with_capacity(b"sk-demo-".len() + hex.len());
    value.extend_from_slice(b"sk-demo-");
    value.extend_from_slice(hex.as_bytes());
    let metadata = vault.put_secret(&id, SecretKind::Byok, &SecretValue::from_vec(value))?;
    daemon
        .audit_system(
            "dev.put_secret",
            Event {
                tenant: Some(id.tenant.to_string()),
                environment: Some(id.environment.to_string()),
                secret: Some(id.name.to_string()),
                version: Some(metadata.current_version),
                ..event("vaultd dev: demo BYOK secret")
            },
        )
        .await?;
    Ok(())
}

fn env_file(files: &DevFiles, name: &str, running: &Running) -> Result<String, DevError> {
    let line = format!(
        "export VAULTD_ADDR=https://{addr} VAULTD_CACERT={dir}/pki/ca.pem \
         VAULTD_CLIENT_CERT={dir}/pki/{name}.pem VAULTD_CLIENT_KEY={dir}/pki/{name}.key \
         VAULTD_SOCKET={dir}/vaultd.sock",
        addr = running.grpc_addr,
        dir = files.dir.display(),
    );
    files.public(&format!("{name}.env"), &format!("{line}\n"))?;
    Ok(line)
}

/// Sets up and starts a dev daemon.
pub async fn start(options: DevOptions) -> Result<DevDaemon, DevError> {
    let (dir, temporary) = make_dir(&options)?;
    let files = DevFiles { dir };
    let started = async {
        let config = write_files(&files, &options)?;
        let daemon = Daemon::open(config)?.reload_from(files.dir.join("vaultd.toml"));
        bootstrap(&daemon, &files).await?;
        let running = daemon.serve().await?;
        let admin = env_file(&files, "admin", &running)?;
        let service = env_file(&files, "service", &running)?;
        let banner = banner(&files.dir, temporary, &running, &admin, &service);
        Ok::<_, DevError>((running, banner))
    }
    .await;
    match started {
        Ok((running, banner)) => Ok(DevDaemon {
            running,
            dir: files.dir,
            temporary,
            banner,
        }),
        Err(e) => {
            if temporary {
                let _ = std::fs::remove_dir_all(&files.dir);
            }
            Err(e)
        }
    }
}

fn banner(dir: &Path, temporary: bool, running: &Running, admin: &str, service: &str) -> String {
    let http = running.http_addr;
    format!(
        "\
==> vaultd dev: DEVELOPMENT MODE. NOT FOR REAL SECRETS.
    Everything (data, PKI keys, the only unseal share) is in {dir}{gone}.

gRPC (mutual TLS):  {grpc}
Health:             http://{http}/v1/health
Metrics:            http://{http}/metrics
Unseal share:       {dir}/unseal-share   (threshold 1; `vaultctl unseal --share-file` it after a seal)
Audit log:          {dir}/audit.jsonl   (public key: {dir}/audit.pub)
Demo secret:        tenant {DEMO_TENANT}, environment live, {DEMO_SECRET}

Admin, every permission ({DEV_OPERATOR}):
{admin}

Demo service, grant gateway-byok ({DEMO_SERVICE}):
{service}

(the same lines are in {dir}/admin.env and {dir}/service.env)
",
        dir = dir.display(),
        gone = if temporary {
            ", which is deleted when vaultd dev exits"
        } else {
            ""
        },
        grpc = running.grpc_addr,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_policy_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = EXAMPLE_POLICIES.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn the_dev_operator_role_parses_and_covers_every_permission() {
        let set =
            vault_policy::PolicySet::parse(Path::new("dev.toml"), &dev_operator_policy()).unwrap();
        for name in Permission::names() {
            let decision = set.authorize(&vault_policy::PermissionRequest {
                identity: DEV_OPERATOR,
                permission: Permission::parse(name).unwrap(),
                tenant: Some("acme"),
                any_tenant: false,
            });
            assert!(decision.allowed, "{name}");
        }
    }

    #[test]
    fn a_non_temporary_or_non_empty_dir_is_refused() {
        let options = DevOptions {
            dir: Some(PathBuf::from("/var/lib/not-temporary")),
            ..DevOptions::default()
        };
        assert!(matches!(
            make_dir(&options),
            Err(DevError::NotTemporary { .. })
        ));
        let full = tempfile::tempdir().unwrap();
        std::fs::write(full.path().join("x"), b"").unwrap();
        let options = DevOptions {
            dir: Some(full.path().to_path_buf()),
            ..DevOptions::default()
        };
        assert!(matches!(make_dir(&options), Err(DevError::NotEmpty(_))));
        let open = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            open.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let options = DevOptions {
            dir: Some(open.path().to_path_buf()),
            ..DevOptions::default()
        };
        assert!(matches!(make_dir(&options), Err(DevError::NotPrivate(_))));
    }
}
