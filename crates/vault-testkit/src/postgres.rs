//! A throw-away PostgreSQL server owned by one test: its own data directory in a
//! temporary directory, a private loopback port and socket directory, TLS 1.3 with a
//! generated CA, and client certificates required on TCP.
//!
//! The server binaries come from `$VAULTD_PG_BIN`, else `pg_config --bindir`, else the
//! newest `/usr/lib/postgresql/*/bin`. Without them the test fails and says what to
//! install; it is never skipped. Run as root, the server runs as the `postgres` user
//! (PostgreSQL refuses to run as root).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{ClientSpec, Issued, Pki};

/// A running PostgreSQL server; stopped (immediately) and deleted when dropped.
pub struct PostgresServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    /// The loopback port it listens on.
    pub port: u16,
    /// The CA that signed the server's certificate and the client's, PEM file.
    pub ca: PathBuf,
    /// A client certificate the server accepts, PEM file.
    pub client_cert: PathBuf,
    /// That certificate's key, PEM file.
    pub client_key: PathBuf,
    /// The CA, to issue more certificates.
    pub pki: Pki,
}

/// The user the tests connect as (the server's superuser).
pub const USER: &str = "vaultd";

impl PostgresServer {
    /// Creates a cluster and starts it.
    pub fn start() -> Self {
        let bin = binaries();
        let dir = tempfile::Builder::new()
            .prefix("vaultd-pg")
            .tempdir()
            .expect("temporary directory");
        let owner = owner();
        let mut pki = Pki::generate("vaultd test PostgreSQL CA");
        let server = pki.server(&["localhost"]);
        let client = pki.client(&ClientSpec {
            dns: vec![USER.to_owned()],
            ..ClientSpec::default()
        });
        let files = dir.path().join("client");
        std::fs::create_dir(&files).unwrap();
        let write = |name: &str, text: &str| {
            let path = files.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca = write("ca.pem", &pki.ca_pem);
        let client_cert = write("client.pem", &client.cert_pem);
        let client_key = write("client.key", &client.key_pem);
        let port = crate::fixture::free_addr().port();
        let this = Self {
            dir,
            bin,
            owner,
            port,
            ca,
            client_cert,
            client_key,
            pki,
        };
        this.init(&server);
        this.start_again();
        this
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn init(&self, server: &Issued) {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(self.dir.path(), Some(uid), Some(gid)).unwrap();
        }
        self.run(
            "initdb",
            &[
                "--no-sync",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--username",
                USER,
                "-D",
            ],
            Some(&self.data()),
        );
        let data = self.data();
        let private = |name: &str, text: &str| {
            let path = data.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if let Some((uid, gid)) = self.owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            }
        };
        private("server.pem", &server.cert_pem);
        private("server.key", &server.key_pem);
        private("ca.pem", &self.pki.ca_pem);
        let socket_dir = self.dir.path().display().to_string();
        let settings = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'ca.pem'\nssl_min_protocol_version = 'TLSv1.3'\n\
             shared_buffers = '16MB'\nmax_connections = 60\n\
             logging_collector = off\nlog_min_messages = warning\n",
            port = self.port
        );
        append(&data.join("postgresql.conf"), &settings);
        // The socket (for the harness's own psql) trusts its local users; TCP needs
        // TLS and a client certificate from the test CA.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust clientcert=verify-ca\n",
        )
        .unwrap();
    }

    /// Starts the server (again, after [`PostgresServer::stop`] or
    /// [`PostgresServer::kill`]) and waits until it accepts connections.
    pub fn start_again(&self) {
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-w",
                "-t",
                "60",
                "-l",
                &log.display().to_string(),
                "start",
                "-D",
            ],
            Some(&self.data()),
        );
    }

    /// Stops the server cleanly, disconnecting every client.
    pub fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-w", "-m", "fast", "stop", "-D"],
            Some(&self.data()),
        );
    }

    /// Stops the server as a crash would (`immediate`: no checkpoint, recovery on start).
    pub fn kill(&self) {
        self.run(
            "pg_ctl",
            &["-w", "-m", "immediate", "stop", "-D"],
            Some(&self.data()),
        );
    }

    /// A libpq connection string for database `dbname`, without TLS settings (vaultd
    /// takes those from its own configuration).
    pub fn connect_string(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname={dbname}",
            self.port
        )
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
    }

    /// Runs `sql` in database `dbname` as the superuser, over the socket, and returns
    /// what psql printed (unaligned, tuples only).
    pub fn psql(&self, dbname: &str, sql: &str) -> String {
        let socket_dir = self.dir.path().display().to_string();
        let output = self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &socket_dir,
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            None,
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn run(&self, program: &str, args: &[&str], last: Option<&Path>) -> Output {
        let mut command = Command::new(self.bin.join(program));
        command.args(args);
        if let Some(last) = last {
            command.arg(last);
        }
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        command.current_dir(self.dir.path());
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        output
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let mut command = Command::new(self.bin.join("pg_ctl"));
        command
            .args(["-w", "-m", "immediate", "stop", "-D"])
            .arg(self.data());
        if let Some((uid, gid)) = self.owner {
            command.uid(uid).gid(gid);
        }
        // Already stopped is fine; a destructor cannot report anything else.
        let _ = command.output();
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// Where `initdb`, `pg_ctl` and `psql` are.
fn binaries() -> PathBuf {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("VAULTD_PG_BIN") {
        let dir = PathBuf::from(dir);
        assert!(
            has_server(&dir),
            "VAULTD_PG_BIN={} holds no initdb and pg_ctl",
            dir.display()
        );
        return dir;
    }
    if let Ok(output) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && has_server(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "the PostgreSQL tests need a PostgreSQL server (initdb, pg_ctl): install the \
             `postgresql` package (apt-get install postgresql), or set VAULTD_PG_BIN to the \
             directory holding its binaries"
        ),
    }
}

/// The user and group the server runs as when the tests run as root: `postgres`.
fn owner() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let entry = passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .expect(
            "running as root, the PostgreSQL tests need the `postgres` user to run the server \
             as; install the `postgresql` package, which creates it",
        );
    let fields: Vec<&str> = entry.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}
