//! Shares encrypted to each custodian's own key: an [age](https://age-encryption.org)
//! X25519 recipient (`age1…`). At `init` and `rekey`, vaultctl encrypts share *n* to
//! custodian *n*'s public key before anything is written, so no share is ever on disk
//! in the clear, the person running the ceremony learns no passphrase, and each file
//! (`share-<name>.age`) opens only with its custodian's identity file
//! (`AGE-SECRET-KEY-1…`, as `age-keygen` or `rage-keygen` write it). Decrypted shares
//! and identity files live in zeroising buffers only.

use std::path::Path;
use std::str::FromStr;

use vault_crypto::shamir::Share;
use zeroize::Zeroizing;

use crate::error::CliError;
use crate::input;

/// What every age file begins with.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
/// The most custodians a ceremony names (the most shares vaultd makes).
const MAX_CUSTODIANS: usize = 255;
/// The largest identity file read.
const MAX_IDENTITY_FILE: u64 = 64 * 1024;

/// A custodian: a name for their file, and their public key.
pub(crate) struct Custodian {
    /// 1-32 characters a-z, 0-9, `-`, `_`: the `<name>` of `share-<name>.age`.
    pub(crate) name: String,
    recipient: age::x25519::Recipient,
}

/// The custodians of `--recipient` flags (named 1, 2, … in order) or of a recipients
/// file: one custodian per line, `name age1…` or just `age1…`; `#` starts a comment.
pub(crate) fn custodians(
    flags: &[String],
    file: Option<&Path>,
) -> Result<Option<Vec<Custodian>>, CliError> {
    let listed: Vec<(Option<String>, String)> = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::invalid(format!("cannot read {}: {e}", path.display())))?;
            text.lines()
                .map(|l| l.split('#').next().unwrap_or_default().trim())
                .filter(|l| !l.is_empty())
                .map(|l| match l.split_once(char::is_whitespace) {
                    Some((name, key)) => (Some(name.to_owned()), key.trim().to_owned()),
                    None => (None, l.to_owned()),
                })
                .collect()
        }
        None => flags.iter().map(|k| (None, k.clone())).collect(),
    };
    if listed.is_empty() {
        return match file {
            Some(path) => Err(CliError::invalid(format!(
                "{} names no custodian: one `name age1…` per line",
                path.display()
            ))),
            None => Ok(None),
        };
    }
    if listed.len() > MAX_CUSTODIANS {
        return Err(CliError::invalid(format!(
            "at most {MAX_CUSTODIANS} custodians"
        )));
    }
    let mut custodians: Vec<Custodian> = Vec::with_capacity(listed.len());
    for (i, (name, key)) in listed.into_iter().enumerate() {
        let name = name.unwrap_or_else(|| (i + 1).to_string());
        if !valid_name(&name) {
            return Err(CliError::invalid(format!(
                "custodian name {name:?}: use 1-32 characters a-z, 0-9, '-' and '_'"
            )));
        }
        let recipient = age::x25519::Recipient::from_str(&key).map_err(|_| {
            CliError::invalid(format!(
                "custodian {name}: {key:?} is not an age X25519 recipient (age1…)"
            ))
            .hint("each custodian runs `age-keygen -o key.txt` and sends the public key it prints")
        })?;
        if let Some(twin) = custodians
            .iter()
            .find(|c| c.name == name || c.recipient.to_string() == recipient.to_string())
        {
            return Err(CliError::invalid(format!(
                "custodians {} and {name} share a name or a key: each share must go to a \
                 different custodian",
                twin.name
            )));
        }
        custodians.push(Custodian { name, recipient });
    }
    Ok(Some(custodians))
}

/// Whether `name` may name a custodian and their file `share-<name>.age`: 1-32
/// characters a-z, 0-9, `-`, `_` (vaultd checks the same).
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Custodian {
    /// The custodian's public key, `age1…`.
    pub(crate) fn recipient(&self) -> String {
        self.recipient.to_string()
    }

    /// `share` encrypted to this custodian: an age file only their identity opens.
    pub(crate) fn seal(&self, share: &Share) -> Result<Vec<u8>, std::io::Error> {
        let text = share.encode();
        age::encrypt(&self.recipient, text.as_str().as_bytes()).map_err(std::io::Error::other)
    }
}

/// Whether `bytes` are an age file.
pub(crate) fn is_age(bytes: &[u8]) -> bool {
    bytes.starts_with(AGE_MAGIC)
}

/// The share in the age file `ciphertext` (read from `origin`), opened with one of
/// the identities in `identity_files`.
pub(crate) fn open(
    ciphertext: &[u8],
    origin: &str,
    identity_files: &[std::path::PathBuf],
) -> Result<Share, CliError> {
    if identity_files.is_empty() {
        return Err(
            CliError::invalid(format!("{origin} is encrypted to a custodian's age key"))
                .hint("pass --identity with the custodian's identity file (AGE-SECRET-KEY-1…)"),
        );
    }
    let mut identities = Vec::new();
    for path in identity_files {
        identities.extend(identities_in(path)?);
    }
    for identity in &identities {
        if let Ok(plain) = age::decrypt(identity, ciphertext) {
            let plain = Zeroizing::new(plain);
            let text = Zeroizing::new(String::from_utf8_lossy(&plain).into_owned());
            return input::parse_share(&text, origin);
        }
    }
    Err(CliError::invalid(format!(
        "{origin} does not open with the given identity: it was encrypted to another \
         custodian, or it was altered"
    ))
    .hint("each custodian opens only their own share file, with their own identity file"))
}

/// The X25519 identities in an identity file.
fn identities_in(path: &Path) -> Result<Vec<age::x25519::Identity>, CliError> {
    let unreadable = |e: std::io::Error| {
        CliError::invalid(format!("cannot read identity file {}: {e}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut text = Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_IDENTITY_FILE), &mut text)
        .map_err(unreadable)?;
    let identities: Vec<_> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .filter_map(|l| age::x25519::Identity::from_str(l).ok())
        .collect();
    if identities.is_empty() {
        return Err(CliError::invalid(format!(
            "{} holds no age identity (a line AGE-SECRET-KEY-1…)",
            path.display()
        )));
    }
    Ok(identities)
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn share() -> Share {
        let key = vault_crypto::UnsealKey::generate(1).unwrap();
        vault_crypto::shamir::split(&key, 2, 3).unwrap().remove(0)
    }

    #[test]
    fn a_share_opens_only_with_its_custodians_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (carol, dave) = (
            age::x25519::Identity::generate(),
            age::x25519::Identity::generate(),
        );
        let write = |name: &str, id: &age::x25519::Identity| {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                format!("# key\n{}\n", id.to_string().expose_secret()),
            )
            .unwrap();
            path
        };
        let (carol_file, dave_file) = (write("carol.txt", &carol), write("dave.txt", &dave));
        let listed = custodians(
            &[carol.to_public().to_string(), dave.to_public().to_string()],
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(listed[0].name, "1");
        let share = share();
        let sealed = listed[0].seal(&share).unwrap();
        assert!(is_age(&sealed));
        let text = share.encode();
        assert!(
            !sealed
                .windows(text.as_str().len())
                .any(|w| w == text.as_str().as_bytes())
        );
        let opened = open(&sealed, "share-1.age", &[carol_file]).unwrap();
        assert_eq!(opened.encode().as_str(), text.as_str());
        assert!(open(&sealed, "share-1.age", std::slice::from_ref(&dave_file)).is_err());
        assert!(open(&sealed, "share-1.age", &[]).is_err());
    }

    #[test]
    fn recipients_files_name_custodians_and_refuse_doubles() {
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate().to_public().to_string();
        let other = age::x25519::Identity::generate().to_public().to_string();
        let file = dir.path().join("custodians.txt");
        std::fs::write(
            &file,
            format!("# custodians\ncarol {key}\n\ndave {other} # spare\n"),
        )
        .unwrap();
        let listed = custodians(&[], Some(&file)).unwrap().unwrap();
        let names: Vec<_> = listed.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["carol", "dave"]);
        for bad in [
            format!("carol {key}\ndave {key}\n"),
            format!("carol {key}\ncarol {other}\n"),
            format!("Carol {key}\n"),
            "carol age1notakey\n".to_owned(),
            "# nobody\n".to_owned(),
        ] {
            std::fs::write(&file, &bad).unwrap();
            assert!(custodians(&[], Some(&file)).is_err(), "{bad}");
        }
        assert!(custodians(&[], None).unwrap().is_none());
    }
}
