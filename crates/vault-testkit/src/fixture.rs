//! The files a test daemon runs from, in a temporary directory: a generated PKI, the
//! repo's example policies plus a test operator role, and a `vaultd.toml` listening on
//! free loopback ports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::{Issued, Pki};

/// Holds every admin permission, through a role only test fixtures write.
pub const OPERATOR: &str = "spiffe://billing.example/human/test/operator";

/// What to change in the generated configuration.
#[derive(Default, Clone, Debug)]
pub struct FixtureOptions {
    /// Extra TOML lines for `[audit]`.
    pub audit: String,
    /// Use this path for the audit log instead of `audit.jsonl` in the directory.
    pub audit_path: Option<PathBuf>,
    /// Extra TOML lines for `[leases]`.
    pub leases: String,
    /// Extra TOML lines for `[limits]`.
    pub limits: String,
    /// Extra TOML lines for `[tls]`.
    pub tls: String,
    /// List `clients.crl` (initially revoking nothing) in `tls.crls`.
    pub crl: bool,
    /// More policy files: (file name, TOML).
    pub policies: Vec<(String, String)>,
    /// Listen for gRPC here instead of on a free port (so restarts keep the address).
    pub grpc: Option<std::net::SocketAddr>,
    /// More TOML appended to the configuration: whole tables, such as `[apikeys]`.
    pub extra: String,
    /// The `[storage]` table's body (and any subtable) instead of `path = "vault.redb"`.
    pub storage: Option<String>,
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

/// Paths of a client's certificate files.
#[derive(Clone, Debug)]
pub struct ClientFiles {
    /// The CA that signed the daemon's certificate.
    pub ca: PathBuf,
    /// The client certificate, PEM.
    pub cert: PathBuf,
    /// The client key, PEM, mode 0600.
    pub key: PathBuf,
}

/// A daemon's files.
pub struct Fixture {
    /// The directory holding everything.
    pub dir: TempDir,
    /// The CA every certificate here chains to.
    pub pki: Pki,
    /// The configuration file.
    pub config: PathBuf,
    /// Environment variables a started vaultd gets (e.g. `SOFTHSM2_CONF`).
    pub env: Vec<(String, PathBuf)>,
    certs: HashMap<String, Issued>,
}

fn operator_policy() -> String {
    const PERMISSIONS: [&str; 19] = [
        "status",
        "unseal",
        "seal",
        "rekey",
        "keys.rotate",
        "secrets.write",
        "secrets.read-metadata",
        "secrets.delete",
        "tenants.erase",
        "tenants.export",
        "leases.read",
        "leases.revoke",
        "apikeys.issue",
        "apikeys.revoke",
        "policy.reload",
        "audit.read",
        "snapshot.save",
        "node.join",
        "breakglass.approve",
    ];
    let permissions: Vec<String> = PERMISSIONS.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[[role]]\nid = \"test-operator\"\nidentities = [\"{OPERATOR}\"]\npermissions = [{}]\n",
        permissions.join(", ")
    )
}

/// The repo's `policies/` directory.
pub fn example_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

impl Fixture {
    /// Writes a fresh PKI, policies and configuration.
    pub fn new(options: &FixtureOptions) -> Self {
        let dir = TempDir::new().expect("temporary directory");
        let root = dir.path();
        let mut pki = Pki::generate("vaultd test CA");
        let server = pki.server(&["localhost"]);
        std::fs::write(root.join("ca.pem"), &pki.ca_pem).expect("write");
        std::fs::write(root.join("server.pem"), &server.cert_pem).expect("write");
        std::fs::write(root.join("server.key"), &server.key_pem).expect("write");
        let policies = root.join("policies");
        std::fs::create_dir(&policies).expect("mkdir");
        for entry in std::fs::read_dir(example_policies()).expect("policies/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                std::fs::copy(&path, policies.join(path.file_name().expect("name"))).expect("copy");
            }
        }
        std::fs::write(policies.join("test-operator.toml"), operator_policy()).expect("write");
        for (name, text) in &options.policies {
            std::fs::write(policies.join(name), text).expect("write");
        }
        let crls = if options.crl {
            std::fs::write(root.join("clients.crl"), pki.crl(&[])).expect("write");
            "crls = [\"clients.crl\"]"
        } else {
            ""
        };
        let audit_path = options
            .audit_path
            .clone()
            .unwrap_or_else(|| root.join("audit.jsonl"));
        let config = root.join("vaultd.toml");
        std::fs::write(
            &config,
            format!(
                "node = \"test-node\"\n\
                 [listen]\ngrpc = \"{grpc}\"\nhttp = \"127.0.0.1:0\"\nsocket = \"vaultd.sock\"\n\
                 [tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n{crls}\n{tls}\n\
                 [policy]\ndir = \"policies\"\n\
                 [audit]\npath = \"{}\"\n{}\n\
                 [leases]\n{}\n\
                 [limits]\n{}\n{}\n\
                 [storage]\n{storage}\n",
                audit_path.display(),
                options.audit,
                options.leases,
                options.limits,
                options.extra,
                tls = options.tls,
                storage = options.storage.as_deref().unwrap_or("path = \"vault.redb\""),
                grpc = options.grpc.map_or("127.0.0.1:0".to_owned(), |a| a.to_string()),
            ),
        )
        .expect("write");
        Self {
            dir,
            pki,
            config,
            env: Vec::new(),
            certs: HashMap::new(),
        }
    }

    /// Writes the configuration of another node on the same files (PKI, policies,
    /// storage): `vaultd-NODE.toml`, naming the node `node-NODE`, with its own socket
    /// and audit log (`audit-NODE.jsonl`) and free ports, each `(from, to)` of
    /// `replace` applied to it too. Returns its path.
    pub fn node_config(&self, node: &str, replace: &[(&str, &str)]) -> PathBuf {
        let base = std::fs::read_to_string(&self.config).expect("read the configuration");
        let mut text = base
            .replace("node = \"test-node\"", &format!("node = \"node-{node}\""))
            .replace("vaultd.sock", &format!("vaultd-{node}.sock"))
            .replace("audit.jsonl", &format!("audit-{node}.jsonl"));
        for (from, to) in replace {
            text = text.replace(from, to);
        }
        let path = self.path(&format!("vaultd-{node}.toml"));
        std::fs::write(&path, text).expect("write");
        path
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The local socket's path.
    pub fn socket(&self) -> PathBuf {
        self.path("vaultd.sock")
    }

    /// The audit log's lines (when it is the default file).
    pub fn audit_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("audit.jsonl"))
            .expect("read the audit log")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A certificate for `identity` (one SPIFFE URI SAN), issued once per fixture.
    pub fn cert(&mut self, identity: &str) -> Issued {
        let pki = &mut self.pki;
        self.certs
            .entry(identity.to_owned())
            .or_insert_with(|| pki.spiffe_client(identity))
            .clone()
    }

    /// Writes `identity`'s certificate and key (0600) as files, for clients that read
    /// them from disk.
    pub fn client_files(&mut self, identity: &str) -> ClientFiles {
        use std::os::unix::fs::PermissionsExt;
        let issued = self.cert(identity);
        let name: String = identity
            .trim_start_matches("spiffe://")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let cert = self.path(&format!("{name}.pem"));
        let key = self.path(&format!("{name}.key"));
        std::fs::write(&cert, &issued.cert_pem).expect("write");
        std::fs::write(&key, &issued.key_pem).expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        ClientFiles {
            ca: self.path("ca.pem"),
            cert,
            key,
        }
    }
}
