//! Building the client from the global options.

use vault_client::Client;

use crate::cli::Global;
use crate::error::{CliError, Exit};

/// Which listeners a command may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// Status, init, unseal, seal and a custodian's ceremony commands (status,
    /// submit, cancel): the local socket when no --addr is given.
    SocketOrTls,
    /// Everything else: mutual TLS only.
    Tls,
}

/// Connects as the options say, asking for leases of `lease_ttl` if given. Fails with
/// what to set when something is missing.
pub(crate) fn client(
    global: &Global,
    via: Via,
    lease_ttl: Option<std::time::Duration>,
) -> Result<Client, CliError> {
    // One request per run: no revocation stream, so no cache (and no extra audit record).
    let builder = Client::builder().revocation_watch(false);
    let builder = match lease_ttl {
        Some(ttl) => builder.lease_ttl(ttl),
        None => builder,
    };
    let builder = match (&global.addr, &global.socket, via) {
        (None, Some(socket), Via::SocketOrTls) => {
            return Ok(builder
                .endpoint(format!("unix:{}", socket.display()))
                .build()?);
        }
        (Some(addr), ..) => builder.endpoint(addr.clone()),
        (None, Some(_), Via::Tls) => {
            return Err(CliError::new(
                Exit::Connect,
                "this command needs mutual TLS; the local socket serves only status, init, unseal, seal and ceremony status, submit and cancel",
            )
            .hint("set VAULTD_ADDR (or --addr) and VAULTD_CACERT, VAULTD_CLIENT_CERT, VAULTD_CLIENT_KEY"));
        }
        (None, None, _) => {
            return Err(CliError::new(Exit::Connect, "no vaultd address: VAULTD_ADDR is not set").hint(
                "set VAULTD_ADDR=https://HOST:PORT (or --addr), or VAULTD_SOCKET for status, init, unseal and seal; `vaultd dev` prints the lines to paste",
            ));
        }
    };
    let ca = global.cacert.clone().ok_or_else(|| {
        CliError::new(Exit::Connect, "no CA certificate: VAULTD_CACERT is not set")
            .hint("set VAULTD_CACERT (or --cacert) to the CA that signed vaultd's certificate")
    })?;
    let (cert, key) = match (&global.cert, &global.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        (None, _) => {
            return Err(CliError::new(Exit::Connect, "no client certificate: VAULTD_CLIENT_CERT is not set")
                .hint("set VAULTD_CLIENT_CERT and VAULTD_CLIENT_KEY (or --cert and --key); vaultd accepts only mutual TLS"));
        }
        (Some(_), None) => {
            return Err(CliError::new(
                Exit::Connect,
                "no client key: VAULTD_CLIENT_KEY is not set",
            )
            .hint("set VAULTD_CLIENT_KEY (or --key) to the key of VAULTD_CLIENT_CERT"));
        }
    };
    Ok(builder
        .ca_cert(ca)
        .client_cert(cert, key)
        .max_attempts(2)
        .build()?)
}
