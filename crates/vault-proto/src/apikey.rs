//! The platform API key format, for vaultd, its clients and the gateway alike:
//! `vk_<environment>_<key id>_<secret><checksum>`, for example
//! `vk_live_4f9XbQ2mT0aZ_hV3...`.
//!
//! - `vk_` and the environment (`live` or `test`) let secret scanners find keys and
//!   tell at a glance which environment one belongs to.
//! - The key id, 12 base62 characters, is public: it names the key in lists, audit
//!   records and revocations.
//! - The secret, 24 base62 characters (about 142 bits), is the only part that must be
//!   guessed; vaultd keeps an HMAC of the whole key, never the key.
//! - The checksum, 6 base62 characters of the CRC-32 of everything before it, lets a
//!   scanner or the gateway drop a typo or a random string without asking vaultd
//!   (the design of GitHub's token formats).
//!
//! [`parse`] borrows from its input and copies nothing; [`compose`] writes into a
//! buffer the caller owns (and zeroises).

use crate::v1::Environment;

/// What every key starts with.
pub const PREFIX: &str = "vk_";
/// Characters of the public key id.
pub const ID_LEN: usize = 12;
/// Characters of the secret part.
pub const SECRET_LEN: usize = 24;
/// Characters of the checksum.
pub const CHECK_LEN: usize = 6;
/// The longest key: `vk_live_`, the id, `_`, the secret and the checksum.
pub const MAX_LEN: usize = PREFIX.len() + 5 + ID_LEN + 1 + SECRET_LEN + CHECK_LEN;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A key taken apart. Borrows the text it came from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedKey<'a> {
    /// The environment the key says it belongs to.
    pub environment: Environment,
    /// The public key id.
    pub id: &'a str,
}

impl std::fmt::Debug for ParsedKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The text this borrows is the whole key: only its public parts are shown.
        f.debug_struct("ParsedKey")
            .field("environment", &self.environment)
            .field("id", &self.id)
            .finish()
    }
}

/// Why a string is not an API key. Says nothing about whether a key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatError {
    /// It does not start with `vk_live_` or `vk_test_`.
    Prefix,
    /// Its length or layout is wrong.
    Layout,
    /// A character outside the base62 alphabet.
    Characters,
    /// The checksum does not match: a typo, a truncated copy or a random string.
    Checksum,
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FormatError::Prefix => "an API key starts with vk_live_ or vk_test_",
            FormatError::Layout => {
                "an API key has the form vk_<env>_<12-character id>_<30 characters>"
            }
            FormatError::Characters => "an API key holds only letters and digits after its prefix",
            FormatError::Checksum => {
                "the API key's checksum does not match: a typo or a truncated copy"
            }
        })
    }
}

impl std::error::Error for FormatError {}

/// Takes a key apart and checks its checksum. Never panics, whatever the input.
pub fn parse(text: &str) -> Result<ParsedKey<'_>, FormatError> {
    let rest = text.strip_prefix(PREFIX).ok_or(FormatError::Prefix)?;
    let (environment, rest) = if let Some(rest) = rest.strip_prefix("live_") {
        (Environment::Live, rest)
    } else if let Some(rest) = rest.strip_prefix("test_") {
        (Environment::Test, rest)
    } else {
        return Err(FormatError::Prefix);
    };
    if rest.len() != ID_LEN + 1 + SECRET_LEN + CHECK_LEN {
        return Err(FormatError::Layout);
    }
    let (id, rest) = rest.split_at_checked(ID_LEN).ok_or(FormatError::Layout)?;
    let tail = rest.strip_prefix('_').ok_or(FormatError::Layout)?;
    if !id.bytes().chain(tail.bytes()).all(is_base62) {
        return Err(FormatError::Characters);
    }
    let (body, check) = text
        .split_at_checked(text.len() - CHECK_LEN)
        .ok_or(FormatError::Layout)?;
    if checksum(body) != check.as_bytes() {
        return Err(FormatError::Checksum);
    }
    Ok(ParsedKey { environment, id })
}

/// Writes the key for `environment`, `id` and `secret` (base62, of [`ID_LEN`] and
/// [`SECRET_LEN`] characters) into `out`, checksum included. `out` should have
/// [`MAX_LEN`] of capacity, so the key is never moved while written.
pub fn compose(environment: &str, id: &str, secret: &str, out: &mut String) {
    out.push_str(PREFIX);
    out.push_str(environment);
    out.push('_');
    out.push_str(id);
    out.push('_');
    out.push_str(secret);
    let check = checksum(out);
    out.extend(check.iter().map(|&b| char::from(b)));
}

/// A label for people: `vk_live_<id>_…`. Nothing of the secret.
pub fn hint(environment: &str, id: &str) -> String {
    format!("{PREFIX}{environment}_{id}_…")
}

/// Whether `text` has the form of a key id.
pub fn is_key_id(text: &str) -> bool {
    text.len() == ID_LEN && text.bytes().all(is_base62)
}

/// The base62 digit for `value` (taken modulo 62).
pub fn base62_digit(value: u8) -> char {
    char::from(digit(u64::from(value)))
}

/// The base62 digit for `value % 62`.
fn digit(value: u64) -> u8 {
    // value % 62 < 62 = ALPHABET.len(): the fallback is unreachable.
    ALPHABET
        .get(usize::try_from(value % 62).unwrap_or(0))
        .copied()
        .unwrap_or(b'0')
}

fn is_base62(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// CRC-32 (IEEE 802.3) of `text`, as 6 base62 digits, most significant first.
fn checksum(text: &str) -> [u8; CHECK_LEN] {
    let mut value = u64::from(crc32(text.as_bytes()));
    let mut out = [b'0'; CHECK_LEN];
    for digit in out.iter_mut().rev() {
        *digit = self::digit(value);
        value /= 62;
    }
    out
}

/// CRC-32 with the IEEE polynomial (reflected 0xEDB88320), bit by bit: keys are short.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(env: &str) -> String {
        let mut out = String::with_capacity(MAX_LEN);
        compose(env, "4f9XbQ2mT0aZ", "hV3kP9sQ2wE5rT7yU1iO3pAs", &mut out);
        out
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_composed_key_parses_back_to_its_parts() {
        let live = key("live");
        assert_eq!(live.len(), MAX_LEN);
        assert!(live.starts_with("vk_live_4f9XbQ2mT0aZ_hV3k"));
        let parsed = parse(&live).unwrap();
        assert_eq!(parsed.environment, Environment::Live);
        assert_eq!(parsed.id, "4f9XbQ2mT0aZ");
        assert!(
            !format!("{parsed:?}").contains("hV3k"),
            "Debug shows no secret"
        );
        assert_eq!(parse(&key("test")).unwrap().environment, Environment::Test);
        assert!(is_key_id(parsed.id));
        assert_eq!(hint("live", parsed.id), "vk_live_4f9XbQ2mT0aZ_…");
    }

    #[test]
    fn every_single_character_change_is_caught() {
        let live = key("live");
        for i in PREFIX.len() + 5..live.len() {
            for replacement in ['0', 'z', 'Q'] {
                let mut bytes = live.clone().into_bytes();
                if bytes[i] == replacement as u8 || bytes[i] == b'_' {
                    continue;
                }
                bytes[i] = replacement as u8;
                let changed = String::from_utf8(bytes).unwrap();
                assert_eq!(parse(&changed), Err(FormatError::Checksum), "{i}");
            }
        }
        // The environment is covered by the checksum too: a live key relabelled as
        // test is no key at all.
        let relabelled = live.replacen("vk_live_", "vk_test_", 1);
        assert_eq!(parse(&relabelled), Err(FormatError::Checksum));
    }

    #[test]
    fn malformed_input_is_refused_by_kind() {
        let live = key("live");
        assert_eq!(parse(""), Err(FormatError::Prefix));
        assert_eq!(parse("sk_live_abc"), Err(FormatError::Prefix));
        assert_eq!(parse("vk_prod_abc"), Err(FormatError::Prefix));
        assert_eq!(parse(&live[..live.len() - 1]), Err(FormatError::Layout));
        assert_eq!(parse(&format!("{live}0")), Err(FormatError::Layout));
        let dashed = live.replacen('_', "-", 3);
        assert_eq!(parse(&dashed), Err(FormatError::Prefix));
        let mut accent = live.clone();
        accent.replace_range(10..11, "é");
        assert!(parse(&accent).is_err());
        let underscore = live.replacen("_hV3k", "hV3k_", 1);
        assert!(parse(&underscore).is_err());
    }
}
