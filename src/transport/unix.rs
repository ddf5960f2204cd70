//! The local Unix socket: bound so that only the daemon's user can ever connect,
//! serving status, unseal and seal to callers named by uid.

use std::path::Path;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::{
    Close, ConnectionTask, Router, accept_loop, authority, backoff, serve_connection, stopping,
};
use crate::authz::{Caller, Peer};
use crate::identity::Identity;

/// Binds the local socket, replacing a stale one, readable and writable by the
/// daemon's user only. It is bound inside a fresh 0700 directory, made 0600, and only
/// then moved into place, so no other user can connect while its mode is wider.
pub(crate) fn bind_socket(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::other(
                "the path exists and is not a socket; vaultd will not replace it",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another process is serving this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut suffix = [0u8; 8];
    vault_crypto::aead::random_bytes(&mut suffix).map_err(std::io::Error::other)?;
    let private = parent.join(format!(
        ".vaultd-socket-{}",
        vault_crypto::hex::encode(&suffix).as_str()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("s");
    let bound = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// Serves gRPC on the local Unix socket until the daemon stops. Callers are named by
/// uid and get only the status, unseal and seal permissions. What they send reaches
/// the HTTP/2 server through [`authority::rewrite`], so standard gRPC clients' socket
/// paths as `:authority` are accepted.
pub(crate) async fn serve_unix(
    listener: UnixListener,
    router: Router,
    stopped: watch::Receiver<bool>,
) {
    let accept = |stopped| async {
        let Ok((stream, _)) = listener.accept().await else {
            return backoff().await;
        };
        let cred = stream.peer_cred().ok()?;
        let peer = Peer(Ok(Caller::Local(Identity::local(cred.uid()))));
        let router = router.clone();
        let close = async move {
            stopping(stopped).await;
            Close::Drain
        };
        let task: ConnectionTask = Box::pin(serve_rewritten(stream, router, peer, close));
        Some(task)
    };
    accept_loop(accept, 64, stopped).await;
}

/// Serves one local connection: the client's bytes go to the server through
/// [`authority::rewrite`], the server's back unchanged. Ends when the server's side
/// does (the client closed, sent something malformed, or the daemon stopped).
async fn serve_rewritten(
    stream: UnixStream,
    router: Router,
    peer: Peer,
    close: impl Future<Output = Close>,
) {
    let (client_read, mut client_write) = stream.into_split();
    let (server, rewritten) = tokio::io::duplex(64 * 1024);
    let (mut from_server, to_server) = tokio::io::split(rewritten);
    let (served, mut done) = tokio::sync::watch::channel(false);
    let serve = async move {
        serve_connection(server, router, peer, close).await;
        served.send_replace(true);
    };
    let upstream = async move {
        tokio::select! {
            result = authority::rewrite(client_read, to_server) => if let Err(e) = result {
                tracing::debug!("local socket connection ended: {e}");
            },
            _ = done.wait_for(|done| *done) => {}
        }
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut from_server, &mut client_write).await;
    };
    tokio::join!(serve, upstream, downstream);
}
