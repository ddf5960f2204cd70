//! Reading a secret (a token PIN, a database password) from a file: a regular file that
//! only its owner may read or write, of bounded size, read once into a zeroising buffer
//! sized up front, surrounding whitespace removed.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use zeroize::Zeroizing;

/// The text of the secret file `path`, at most `max` bytes of `what` (named in the
/// refusal). The refusal says why, never what the file holds.
pub(crate) fn read_owner_only(
    path: &Path,
    max: u64,
    what: &str,
) -> Result<Zeroizing<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    // The checks are on the open file, so they hold for the bytes read.
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "mode {:o} lets others read it; chmod 600",
            meta.mode() & 0o777
        ));
    }
    let capacity = usize::try_from(max).unwrap_or(usize::MAX).saturating_add(1);
    let mut bytes = Zeroizing::new(Vec::with_capacity(capacity));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("longer than {max} bytes: not {what}"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| format!("not text: not {what}"))?;
    let text = text.trim();
    if text.is_empty() {
        return Err("empty".to_owned());
    }
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn only_an_owner_only_bounded_non_empty_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8], mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let good = write("good", b"  hunter2-secret\n", 0o600);
        assert_eq!(
            read_owner_only(&good, 64, "a password").unwrap().as_str(),
            "hunter2-secret"
        );
        let shared = write("shared", b"hunter2-secret", 0o640);
        let refused = read_owner_only(&shared, 64, "a password").unwrap_err();
        assert!(refused.contains("chmod 600"), "{refused}");
        let long = write("long", &[b'x'; 65], 0o600);
        let refused = read_owner_only(&long, 64, "a password").unwrap_err();
        assert!(refused.contains("longer than 64 bytes"), "{refused}");
        let empty = write("empty", b" \n", 0o600);
        assert_eq!(
            read_owner_only(&empty, 64, "a password").unwrap_err(),
            "empty"
        );
        assert_eq!(
            read_owner_only(dir.path(), 64, "a password").unwrap_err(),
            "not a regular file"
        );
        for path in [good, shared, long] {
            let refusal = read_owner_only(&path, 8, "a password")
                .err()
                .unwrap_or_default();
            assert!(!refusal.contains("hunter2"), "{refusal}");
        }
    }
}
