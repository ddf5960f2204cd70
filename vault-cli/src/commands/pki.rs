//! Certificates for a real deployment: a CA, vaultd's server certificate, clients'
//! SPIFFE certificates. Keys are written 0600 and never overwritten.

use std::path::{Path, PathBuf};

use serde_json::json;
use vault_pki::{Authority, Issued, write_private, write_public};

use crate::cli::PkiCommand;
use crate::error::CliError;
use crate::output::Output;

fn write(path: &Path, contents: &[u8], private: bool) -> Result<(), CliError> {
    let result = if private {
        write_private(path, contents)
    } else {
        write_public(path, contents)
    };
    result.map_err(|e| {
        CliError::invalid(format!("cannot write {}: {e}", path.display()))
            .hint("existing files are never overwritten")
    })
}

fn load_ca(dir: &Path) -> Result<Authority, CliError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| {
                CliError::invalid(format!("cannot read {}: {e}", path.display()))
                    .hint("--ca-dir is the directory `vaultctl pki init-ca` wrote")
            })
    };
    let (cert, key) = (read("ca.pem")?, read("ca.key")?);
    Authority::load(&cert, &key)
        .map_err(|e| CliError::invalid(format!("the CA in {} cannot be used: {e}", dir.display())))
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn write_issued(
    issued: &Issued,
    out_prefix: &Path,
    out: Output,
    what: &str,
) -> Result<(), CliError> {
    let (cert, key) = (
        with_suffix(out_prefix, ".pem"),
        with_suffix(out_prefix, ".key"),
    );
    write(&key, issued.key.expose_secret().as_bytes(), true)?;
    write(&cert, issued.cert_pem.as_bytes(), false)?;
    out.emit(
        || {
            format!(
                "wrote {what}: {} and {} (mode 0600)",
                cert.display(),
                key.display()
            )
        },
        || json!({ "cert": cert, "key": key }),
    );
    Ok(())
}

pub(crate) fn run(command: &PkiCommand, out: Output) -> Result<(), CliError> {
    let pki = |e: vault_pki::PkiError| CliError::invalid(e.to_string());
    match command {
        PkiCommand::InitCa {
            dir,
            name,
            validity,
        } => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::invalid(format!("cannot create {}: {e}", dir.display())))?;
            let ca = Authority::generate(name, validity.days).map_err(pki)?;
            let (cert, key) = (dir.join("ca.pem"), dir.join("ca.key"));
            write(&key, ca.key_pem().expose_secret().as_bytes(), true)?;
            write(&cert, ca.cert_pem().as_bytes(), false)?;
            out.emit(
                || format!(
                    "wrote CA {name:?}: {} (give to vaultd as tls.client_ca, and to clients as VAULTD_CACERT) and {} (mode 0600; keep it offline)",
                    cert.display(),
                    key.display()
                ),
                || json!({ "cert": cert, "key": key }),
            );
            Ok(())
        }
        PkiCommand::IssueServer {
            ca_dir,
            dns,
            ips,
            out: prefix,
            validity,
        } => {
            if dns.is_empty() && ips.is_empty() {
                return Err(CliError::invalid(
                    "name at least one --dns or --ip that clients connect to",
                ));
            }
            let issued = load_ca(ca_dir)?
                .issue_server(dns, ips, validity.days)
                .map_err(pki)?;
            write_issued(&issued, prefix, out, "a server certificate")
        }
        PkiCommand::IssueClient {
            ca_dir,
            spiffe_id,
            out: prefix,
            validity,
        } => {
            let issued = load_ca(ca_dir)?
                .issue_client(spiffe_id, validity.days)
                .map_err(pki)?;
            write_issued(
                &issued,
                prefix,
                out,
                &format!("a client certificate for {spiffe_id}"),
            )
        }
    }
}
