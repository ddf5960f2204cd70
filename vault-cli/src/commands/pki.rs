//! Certificates for a real deployment: a CA, vaultd's server certificate, clients'
//! SPIFFE certificates; their renewal, revocation and CRLs. Keys are written 0600 and
//! never overwritten; the CRL is replaced whole.

use std::path::{Path, PathBuf};

use serde_json::json;
use vault_pki::{
    Authority, CRL_FILE, Certificate, Issued, Kind, PkiError, Published, Reason, Revocation,
    Revocations, Subject, rfc3339, write_private, write_public,
};

use crate::cli::{CrlArgs, PkiCommand, RevokeReason};
use crate::error::CliError;
use crate::input;
use crate::output::Output;

/// A vault-pki failure, with what to do about it.
fn pki_error(error: PkiError) -> CliError {
    let hint = match &error {
        PkiError::Validity { kind, .. } => Some(format!(
            "pass --days from 1 to {} (default {})",
            kind.max_days(),
            kind.default_days()
        )),
        PkiError::NextUpdate(_) => Some("pass --next-update from 1h to 366d (default 7d)".into()),
        PkiError::OtherIssuer { issuer, .. } => Some(format!(
            "a CRL revokes only its own CA's certificates: use the --ca-dir of {issuer:?}"
        )),
        PkiError::NothingToRenew => Some(
            "issue a new one instead: `vaultctl pki issue-client` or `vaultctl pki issue-server`"
                .into(),
        ),
        PkiError::NotAnAuthority | PkiError::KeyMismatch => Some(
            "--ca-dir is the directory `vaultctl pki init-ca` wrote (ca.pem and ca.key)".into(),
        ),
        PkiError::RevocationFile { .. } | PkiError::RevocationEntry { .. } => Some(
            "restore it from a backup of the CA directory; vaultctl only ever adds entries".into(),
        ),
        _ => None,
    };
    let error = CliError::invalid(error.to_string());
    match hint {
        Some(hint) => error.hint(hint),
        None => error,
    }
}

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
    Authority::load(&cert, &key).map_err(|e| {
        let message = format!("the CA in {} cannot be used: {e}", dir.display());
        pki_error(e).with_message(message)
    })
}

fn read_cert(path: &Path) -> Result<Certificate, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::invalid(format!("cannot read {}: {e}", path.display())))?;
    Certificate::from_pem(&text).map_err(|e| {
        let message = format!("{}: {e}", path.display());
        pki_error(e).with_message(message)
    })
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes PREFIX.key (0600) and PREFIX.pem, neither overwriting anything; returns
/// their paths.
fn write_issued(issued: &Issued, out_prefix: &Path) -> Result<(PathBuf, PathBuf), CliError> {
    let (cert, key) = (
        with_suffix(out_prefix, ".pem"),
        with_suffix(out_prefix, ".key"),
    );
    write(&key, issued.key.expose_secret().as_bytes(), true)?;
    write(&cert, issued.cert_pem.as_bytes(), false)?;
    Ok((cert, key))
}

fn report_issued(
    issued: &Issued,
    out_prefix: &Path,
    out: Output,
    what: &str,
) -> Result<(), CliError> {
    let (cert, key) = write_issued(issued, out_prefix)?;
    out.emit(
        || {
            format!(
                "wrote {what}: {} and {} (mode 0600)",
                cert.display(),
                key.display()
            )
        },
        || json!({ "cert": cert, "key": key, "not_after": rfc3339(issued.not_after) }),
    );
    Ok(())
}

pub(crate) fn run(command: &PkiCommand, out: Output) -> Result<(), CliError> {
    match command {
        PkiCommand::InitCa { dir, name, days } => {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::invalid(format!("cannot create {}: {e}", dir.display())))?;
            let days = days.unwrap_or(Kind::Authority.default_days());
            let ca = Authority::generate(name, days).map_err(pki_error)?;
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
            days,
        } => {
            if dns.is_empty() && ips.is_empty() {
                return Err(CliError::invalid(
                    "name at least one --dns or --ip that clients connect to",
                ));
            }
            let days = days.unwrap_or(Kind::Server.default_days());
            let issued = load_ca(ca_dir)?
                .issue_server(dns, ips, days)
                .map_err(pki_error)?;
            report_issued(&issued, prefix, out, "a server certificate")
        }
        PkiCommand::IssueClient {
            ca_dir,
            spiffe_id,
            out: prefix,
            days,
        } => {
            let days = days.unwrap_or(Kind::Client.default_days());
            let issued = load_ca(ca_dir)?
                .issue_client(spiffe_id, days)
                .map_err(pki_error)?;
            report_issued(
                &issued,
                prefix,
                out,
                &format!("a client certificate for {spiffe_id}"),
            )
        }
        PkiCommand::Renew {
            ca_dir,
            cert,
            allow_foreign,
            out: prefix,
            days,
        } => renew(ca_dir, cert, *allow_foreign, prefix, *days, out),
        PkiCommand::Revoke {
            ca_dir,
            cert,
            reason,
            crl,
        } => revoke(ca_dir, cert, reason_of(*reason), crl, out),
        PkiCommand::Crl { ca_dir, crl } => {
            let next_update = input::duration(&crl.next_update)?;
            let ca = load_ca(ca_dir)?;
            let mut list = Revocations::open(ca_dir).map_err(pki_error)?;
            let published = list
                .publish(&ca, next_update, &crl_path(ca_dir, crl))
                .map_err(pki_error)?;
            out.emit(
                || published_lines(&published),
                || published_json(&published),
            );
            Ok(())
        }
    }
}

fn reason_of(reason: RevokeReason) -> Reason {
    match reason {
        RevokeReason::Unspecified => Reason::Unspecified,
        RevokeReason::KeyCompromise => Reason::KeyCompromise,
        RevokeReason::CaCompromise => Reason::CaCompromise,
        RevokeReason::AffiliationChanged => Reason::AffiliationChanged,
        RevokeReason::Superseded => Reason::Superseded,
        RevokeReason::CessationOfOperation => Reason::CessationOfOperation,
    }
}

fn crl_path(ca_dir: &Path, crl: &CrlArgs) -> PathBuf {
    crl.crl_out.clone().unwrap_or_else(|| ca_dir.join(CRL_FILE))
}

fn renew(
    ca_dir: &Path,
    cert_path: &Path,
    allow_foreign: bool,
    prefix: &Path,
    days: Option<u32>,
    out: Output,
) -> Result<(), CliError> {
    let old = read_cert(cert_path)?;
    let ca = load_ca(ca_dir)?;
    // Held until the new files are written, so a revocation of CERT waits for them.
    let revoked = Revocations::open(ca_dir).map_err(pki_error)?;
    let renewal = match allow_foreign {
        false => ca.renew(&old, &revoked, days),
        true => ca.renew_foreign(&old, &revoked, days),
    };
    let issued = renewal.map_err(|e| {
        let message = format!("{}: {e}", cert_path.display());
        let hint = match &e {
            PkiError::OtherIssuer { .. } => Some(
                "renew it with the --ca-dir of the CA that issued it; to move it to this CA because the old CA is being replaced, pass --allow-foreign",
            ),
            PkiError::Revoked { .. } => Some(
                "a revoked certificate is never renewed: if this identity keeps its access, issue it a fresh one (`vaultctl pki issue-client` or `vaultctl pki issue-server`)",
            ),
            _ => None,
        };
        let error = pki_error(e).with_message(message);
        match hint {
            Some(hint) => error.hint(hint),
            None => error,
        }
    })?;
    let (cert, key) = write_issued(&issued, prefix)?;
    let kind = match old.subject() {
        Subject::Client { .. } => "client",
        _ => "server",
    };
    let moved = !ca.issued(&old);
    out.emit(
        || {
            let mut lines = vec![format!(
                "wrote a renewed {kind} certificate for {}: {} and {} (mode 0600), valid until {}",
                old.subject(),
                cert.display(),
                key.display(),
                rfc3339(issued.not_after)
            )];
            if moved {
                lines.push(format!(
                    "  reissued under {} (the old one was issued by {:?}): vaultd and clients must trust this CA",
                    ca.name(),
                    old.issuer()
                ));
            }
            lines.push(format!(
                "  the old certificate (serial {}) stays valid until {}; move the new files into place, and revoke the old one (`vaultctl pki revoke`) if it must stop sooner",
                old.serial(),
                rfc3339(old.not_after())
            ));
            lines.join("\n")
        },
        || {
            json!({
                "cert": cert,
                "key": key,
                "subject": old.subject().to_string(),
                "not_after": rfc3339(issued.not_after),
                "previous": {
                    "serial": old.serial().to_string(),
                    "issuer": old.issuer(),
                    "not_after": rfc3339(old.not_after()),
                },
            })
        },
    );
    Ok(())
}

fn revoke(
    ca_dir: &Path,
    cert_path: &Path,
    reason: Reason,
    crl: &CrlArgs,
    out: Output,
) -> Result<(), CliError> {
    // Checked first, so a bad value changes nothing.
    let next_update = input::duration(&crl.next_update)?;
    vault_pki::check_next_update(next_update).map_err(pki_error)?;
    let cert = read_cert(cert_path)?;
    let ca = load_ca(ca_dir)?;
    let mut list = Revocations::open(ca_dir).map_err(pki_error)?;
    let revocation = list.revoke(&ca, &cert, reason).map_err(|e| {
        let message = format!("{}: {e}", cert_path.display());
        pki_error(e).with_message(message)
    })?;
    let (entry, already) = match &revocation {
        Revocation::Added(entry) => (entry, false),
        Revocation::AlreadyRevoked(entry) => (entry, true),
        // Outcomes added to vault-pki later: nothing new to say about them.
        _ => return Err(CliError::invalid("unexpected outcome of the revocation")),
    };
    let published = list
        .publish(&ca, next_update, &crl_path(ca_dir, crl))
        .map_err(|e| {
            pki_error(e).hint(format!(
                "{} is recorded in {}; publish the CRL with `vaultctl pki crl --ca-dir {}`",
                entry.serial,
                vault_pki::REVOKED_FILE,
                ca_dir.display()
            ))
        })?;
    out.emit(
        || {
            let first = match already {
                false => format!(
                    "revoked certificate {} ({}; reason {})",
                    entry.serial, entry.subject, entry.reason
                ),
                true => format!(
                    "certificate {} ({}) was already revoked on {} (reason {})",
                    entry.serial,
                    entry.subject,
                    rfc3339(entry.revoked_at),
                    entry.reason
                ),
            };
            format!("{first}\n{}", published_lines(&published))
        },
        || {
            json!({
                "serial": entry.serial.to_string(),
                "subject": entry.subject,
                "reason": entry.reason.as_str(),
                "revoked_at": rfc3339(entry.revoked_at),
                "already_revoked": already,
                "crl": published_json(&published),
            })
        },
    );
    Ok(())
}

fn published_lines(published: &Published) -> String {
    format!(
        "wrote CRL #{} to {}: {} revoked, valid until {}\n  \
         vaultd reads it from tls.crls on start and on reload (SIGHUP); publish again before then (`vaultctl pki crl`), or vaultd refuses every certificate of this CA",
        published.crl_number,
        published.path.display(),
        published.revoked,
        rfc3339(published.next_update)
    )
}

fn published_json(published: &Published) -> serde_json::Value {
    json!({
        "path": published.path,
        "crl_number": published.crl_number,
        "revoked": published.revoked,
        "this_update": rfc3339(published.this_update),
        "next_update": rfc3339(published.next_update),
    })
}
