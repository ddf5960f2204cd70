//! Reading secrets: from stdin, a file, or a terminal prompt that does not echo.
//! Never from arguments. Everything read is held in zeroising buffers.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;

use vault_crypto::shamir::Share;
use vault_crypto::{CryptoError, Passphrase, SecretValue};
use zeroize::Zeroizing;

use crate::error::{CliError, Exit};

/// Capacity of a secret line read from the terminal or stdin.
const LINE_CAPACITY: usize = 8 * 1024;

/// Reads one line from the terminal with echo off (or from stdin when it is not a
/// terminal); the trailing newline is dropped.
pub(crate) fn hidden_line(prompt: &str) -> Result<Zeroizing<String>, CliError> {
    let stdin = std::io::stdin();
    // One lock for the whole read: std's stdin lock is not reentrant.
    let mut input = stdin.lock();
    // Sized up front, so reading a line (a share, a passphrase) does not reallocate
    // and leave copies behind.
    let mut line = Zeroizing::new(String::with_capacity(LINE_CAPACITY));
    if input.is_terminal() {
        let saved = rustix::termios::tcgetattr(&input).map_err(std::io::Error::from)?;
        let mut quiet = saved.clone();
        quiet.local_modes.remove(rustix::termios::LocalModes::ECHO);
        rustix::termios::tcsetattr(&input, rustix::termios::OptionalActions::Now, &quiet)
            .map_err(std::io::Error::from)?;
        // Echo is off before the prompt invites typing.
        eprint!("{prompt}");
        std::io::stderr().flush()?;
        let read = input.read_line(&mut line);
        // Echo back on, whatever happened.
        let _ = rustix::termios::tcsetattr(&input, rustix::termios::OptionalActions::Now, &saved);
        eprintln!();
        read?;
    } else {
        input.read_line(&mut line)?;
    }
    while line.ends_with('\n') || line.ends_with('\r') {
        line.pop();
    }
    Ok(line)
}

/// Reads a secret value: all of stdin when piped, or a hidden prompt on a terminal.
/// One trailing newline is dropped unless `keep_newline`.
pub(crate) fn value(keep_newline: bool) -> Result<SecretValue, CliError> {
    if std::io::stdin().is_terminal() {
        let mut line = hidden_line("value (input hidden): ")?;
        // Moved, not copied: the one buffer ends in the zeroising value.
        return Ok(SecretValue::from_vec(
            std::mem::take(&mut *line).into_bytes(),
        ));
    }
    let mut bytes = read_stdin()?;
    if !keep_newline {
        let newline = match () {
            () if bytes.ends_with(b"\r\n") => 2,
            () if bytes.ends_with(b"\n") => 1,
            () => 0,
        };
        let len = bytes.len() - newline;
        // The dropped bytes stay in the capacity, which Zeroizing wipes too.
        bytes.truncate(len);
    }
    if bytes.is_empty() {
        return Err(CliError::invalid(
            "the value is empty: pipe it on stdin, e.g. `vaultctl secret put … < key.txt`",
        ));
    }
    Ok(SecretValue::from_vec(std::mem::take(&mut *bytes)))
}

/// The most a secret read from stdin may hold (vaultd takes messages up to 1 MiB).
pub(crate) const MAX_STDIN: usize = 1 << 20;

/// All of stdin, into one zeroising buffer allocated up front: growing a buffer
/// would leave copies of the secret in the memory it frees.
pub(crate) fn read_stdin() -> Result<Zeroizing<Vec<u8>>, CliError> {
    let mut buffer = Zeroizing::new(vec![0u8; MAX_STDIN + 1]);
    let mut stdin = std::io::stdin().lock();
    let mut filled = 0;
    while let Some(free) = buffer.get_mut(filled..).filter(|free| !free.is_empty()) {
        match stdin.read(free)? {
            0 => break,
            n => filled += n,
        }
    }
    if filled > MAX_STDIN {
        return Err(CliError::invalid("the input on stdin is larger than 1 MiB"));
    }
    buffer.truncate(filled);
    Ok(buffer)
}

/// A passphrase, asked for (hidden) with `prompt`.
pub(crate) fn passphrase(prompt: &str) -> Result<Passphrase, CliError> {
    let line = hidden_line(prompt)?;
    if line.is_empty() {
        return Err(CliError::invalid("the passphrase is empty"));
    }
    let mut line = line;
    Ok(Passphrase::new(std::mem::take(&mut *line)))
}

pub(crate) fn parse_share(text: &str, origin: &str) -> Result<Share, CliError> {
    Share::parse(text).map_err(|e| match e {
        CryptoError::Shares(e) => CliError::invalid(format!("{origin} is not a valid share: {e}"))
            .hint("a share looks like vs1-… (or vsf1-… for a passphrase-protected file)"),
        // Not the share's fault: this host could not hold it in locked memory.
        other => CliError::new(
            Exit::Failure,
            format!("vaultctl could not hold the share from {origin}: {other}"),
        ),
    })
}

/// A new passphrase: asked twice (hidden), since a typo would make a share file
/// unopenable, and the share exists nowhere else.
pub(crate) fn new_passphrase(what: &str) -> Result<Passphrase, CliError> {
    let first = passphrase(&format!("passphrase for {what} (input hidden): "))?;
    let again = passphrase(&format!("passphrase for {what} again: "))?;
    if first.expose_secret() != again.expose_secret() {
        return Err(
            CliError::invalid(format!("the two passphrases for {what} differ"))
                .hint("nothing was changed; run the command again"),
        );
    }
    Ok(first)
}

/// A share from a file: plain (`vs1-`), or protected (`vsf1-`), then asking for its
/// passphrase.
pub(crate) fn share_file(
    path: &Path,
    identities: &[std::path::PathBuf],
) -> Result<Share, CliError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| {
        CliError::invalid(format!("cannot read share file {}: {e}", path.display()))
    })?);
    let origin = format!("share file {}", path.display());
    if crate::custodians::is_age(&bytes) {
        return crate::custodians::open(&bytes, &origin, identities);
    }
    let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
    if text.trim_start().starts_with("vsf1-") {
        let passphrase = passphrase(&format!("passphrase for {}: ", path.display()))?;
        return vault_crypto::sharefile::open(&text, &passphrase).map_err(|_| {
            CliError::invalid(format!(
                "{origin} did not open: wrong passphrase, or the file was altered"
            ))
        });
    }
    parse_share(&text, &origin)
}

/// A share typed (hidden) at a prompt, or read from stdin.
pub(crate) fn share_prompt(prompt: &str) -> Result<Share, CliError> {
    let text = hidden_line(prompt)?;
    parse_share(&text, "the share entered")
}

/// `count` shares: from `files` first, then from prompts.
pub(crate) fn quorum(
    files: &[std::path::PathBuf],
    identities: &[std::path::PathBuf],
    count: usize,
) -> Result<Vec<Share>, CliError> {
    let mut shares = files
        .iter()
        .map(|f| share_file(f, identities))
        .collect::<Result<Vec<_>, _>>()?;
    while shares.len() < count {
        let prompt = format!("share {} of {count} (input hidden): ", shares.len() + 1);
        shares.push(share_prompt(&prompt)?);
    }
    Ok(shares)
}

/// Parses `90s`, `5m`, `24h`, `7d` (and `0s`).
/// Creates `path` to write, mode 0600 in the same open (`O_CREAT | O_EXCL`): never an
/// existing file or a symlink, and never readable by others, not even for a moment
/// before a chmod. `what` names the file in the hint, e.g. "a key file".
pub(crate) fn create_private(
    path: &std::path::Path,
    what: &str,
) -> Result<std::fs::File, CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                CliError::invalid(format!("{} already exists", path.display())).hint(format!(
                    "{what} is never overwritten: choose a new --out path"
                ))
            }
            _ => CliError::invalid(format!("cannot create {}: {e}", path.display())),
        })
}

pub(crate) fn duration(text: &str) -> Result<std::time::Duration, CliError> {
    humantime::parse_duration(text).map_err(|_| {
        CliError::invalid(format!(
            "{text:?} is not a duration: use a number and s, m, h or d, e.g. 30s or 24h"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("90s").unwrap().as_secs(), 90);
        assert_eq!(duration("24h").unwrap().as_secs(), 86_400);
        assert_eq!(duration("0s").unwrap().as_secs(), 0);
        assert_eq!(duration("1.5h").unwrap().as_secs(), 5400);
        for bad in ["", "5", "h", "-1s", "99999999999999999999d"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }
}
