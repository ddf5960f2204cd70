//! What counts as a valid SPIFFE ID in vaultd: one definition shared by the daemon, the
//! client library and the CLI / policy tools.
//!
//! The rules are those of the [SPIFFE ID specification][spec], made stricter where an
//! identity that reaches policy and the audit log should leave no room for interpretation:
//!
//! * the scheme is exactly `spiffe://`, in lower case;
//! * the trust domain is one or more of `a-z 0-9 . - _`: no upper case (the spec lets
//!   readers normalise it; vaultd rejects it so two spellings cannot name one domain), no
//!   port, no user info, no percent-encoding;
//! * the path is required (the spec allows an empty path for a trust-domain ID, which names
//!   no workload) and is one or more `/segment`, each segment one or more of
//!   `A-Z a-z 0-9 . - _`, none of them `.` or `..`, with no empty segment and no trailing
//!   `/`; so no `%`, `?`, `#`, whitespace or control character can appear anywhere;
//! * the whole ID is at most [`MAX_LEN`] bytes (the spec allows 2048), so it always fits in
//!   one audit field.
//!
//! A parsed [`SpiffeId`] is therefore printable ASCII without spaces, and safe to log as is.
//! Errors never echo the rejected input, which may hold control characters.
//!
//! [spec]: https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md

use std::fmt;
use std::str::FromStr;

/// The longest SPIFFE ID vaultd accepts, in bytes, scheme included.
pub const MAX_LEN: usize = 255;

const SCHEME: &str = "spiffe://";

/// A SPIFFE ID with a workload path, such as `spiffe://billing.example/svc/gateway`, that
/// passed every rule of this module. Equality is byte equality: path segments are
/// case-sensitive and the trust domain has a single (lower-case) spelling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId(String);

impl SpiffeId {
    /// Parses `input` as a SPIFFE ID with a non-empty path, under the rules of this module.
    pub fn parse(input: &str) -> Result<Self, SpiffeError> {
        // Checked first so that no further work is done on oversized input.
        if input.len() > MAX_LEN {
            return Err(SpiffeError::TooLong { len: input.len() });
        }
        let rest = input.strip_prefix(SCHEME).ok_or(SpiffeError::Scheme)?;
        let (trust_domain, path) = split_trust_domain(rest);
        check_trust_domain(trust_domain)?;
        check_path(path)?;
        Ok(Self(input.to_owned()))
    }

    /// The whole ID, as in `spiffe://billing.example/svc/gateway`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The trust domain, as in `billing.example`.
    pub fn trust_domain(&self) -> &str {
        self.parts().0
    }

    /// The path, with its leading `/`, as in `/svc/gateway`. Never empty.
    pub fn path(&self) -> &str {
        self.parts().1
    }

    fn parts(&self) -> (&str, &str) {
        // `parse` established that the scheme is present; the fallback is never taken.
        let rest = self.0.strip_prefix(SCHEME).unwrap_or_default();
        split_trust_domain(rest)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Self::parse(input)
    }
}

/// Why a string is not a SPIFFE ID that vaultd accepts. Each message says what would be
/// accepted; none repeats the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiffeError {
    /// Longer than [`MAX_LEN`] bytes.
    TooLong {
        /// The length of the input, in bytes.
        len: usize,
    },
    /// Does not begin with `spiffe://` in lower case.
    Scheme,
    /// Nothing between `spiffe://` and the path.
    EmptyTrustDomain,
    /// The trust domain holds a character other than `a-z 0-9 . - _` (an upper-case letter,
    /// a port's `:`, user info's `@`, a `%`, …).
    TrustDomainChar,
    /// A bare trust domain, which names no workload.
    NoPath,
    /// Two consecutive `/` in the path.
    EmptySegment,
    /// A path segment that is `.` or `..`.
    DotSegment,
    /// A path segment holds a character other than `A-Z a-z 0-9 . - _` (a `%`, `?`, `#`,
    /// whitespace, a control or non-ASCII character, …).
    SegmentChar,
    /// The path ends with `/`.
    TrailingSlash,
}

impl fmt::Display for SpiffeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len } => write!(
                f,
                "SPIFFE ID is {len} bytes long; at most {MAX_LEN} bytes are accepted"
            ),
            Self::Scheme => f.write_str("SPIFFE ID must begin with `spiffe://` (in lower case)"),
            Self::EmptyTrustDomain => f.write_str(
                "SPIFFE ID has no trust domain; expected `spiffe://<trust-domain>/<path>`",
            ),
            Self::TrustDomainChar => f.write_str(
                "SPIFFE ID trust domain may contain only lower-case letters a-z, digits 0-9, \
                 `.`, `-` and `_` (no upper case, port, user info or percent-encoding)",
            ),
            Self::NoPath => f.write_str(
                "SPIFFE ID has no path; a vaultd identity must name a workload, as in \
                 `spiffe://<trust-domain>/<segment>[/<segment>…]`",
            ),
            Self::EmptySegment => f.write_str(
                "SPIFFE ID path has an empty segment (`//`); each segment needs at least one \
                 character",
            ),
            Self::DotSegment => f.write_str("SPIFFE ID path must not have a `.` or `..` segment"),
            Self::SegmentChar => f.write_str(
                "SPIFFE ID path segments may contain only letters A-Z and a-z, digits 0-9, \
                 `.`, `-` and `_` (no `%`, `?`, `#`, whitespace or control characters)",
            ),
            Self::TrailingSlash => f.write_str("SPIFFE ID path must not end with `/`"),
        }
    }
}

impl std::error::Error for SpiffeError {}

/// Splits what follows the scheme into the trust domain and the path (empty, or starting
/// with `/`).
fn split_trust_domain(rest: &str) -> (&str, &str) {
    rest.find('/')
        .and_then(|at| rest.split_at_checked(at))
        .unwrap_or((rest, ""))
}

fn check_trust_domain(trust_domain: &str) -> Result<(), SpiffeError> {
    if trust_domain.is_empty() {
        return Err(SpiffeError::EmptyTrustDomain);
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || is_punctuation(b);
    if !trust_domain.bytes().all(allowed) {
        return Err(SpiffeError::TrustDomainChar);
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), SpiffeError> {
    let segments = path.strip_prefix('/').ok_or(SpiffeError::NoPath)?;
    let mut segments = segments.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            return Err(if segments.peek().is_none() {
                SpiffeError::TrailingSlash
            } else {
                SpiffeError::EmptySegment
            });
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || is_punctuation(b);
        if !segment.bytes().all(allowed) {
            return Err(SpiffeError::SegmentChar);
        }
        if segment == "." || segment == ".." {
            return Err(SpiffeError::DotSegment);
        }
    }
    Ok(())
}

/// The punctuation allowed in both the trust domain and path segments.
fn is_punctuation(b: u8) -> bool {
    matches!(b, b'.' | b'-' | b'_')
}

#[cfg(test)]
mod tests {
    use super::{MAX_LEN, SpiffeError, SpiffeId};

    fn rejects(input: &str) -> SpiffeError {
        let err = SpiffeId::parse(input).expect_err(input);
        let message = err.to_string();
        assert!(
            !message.chars().any(char::is_control),
            "{err:?}: message has a control character"
        );
        assert!(
            // Short inputs such as `spiffe://` may well appear in a message's example.
            input.len() <= "spiffe://x".len() || !message.contains(input),
            "{err:?}: message echoes the input"
        );
        err
    }

    #[test]
    fn accepts_workload_ids() {
        for (input, trust_domain, path) in [
            (
                "spiffe://billing.example/svc/gateway",
                "billing.example",
                "/svc/gateway",
            ),
            (
                "spiffe://billing.example/tenant/acme/svc/worker-test",
                "billing.example",
                "/tenant/acme/svc/worker-test",
            ),
            ("spiffe://a/b", "a", "/b"),
            (
                "spiffe://td-1_x.y/Upper/CASE_ok",
                "td-1_x.y",
                "/Upper/CASE_ok",
            ),
            // Only `.` and `..` are dot segments; other runs of dots are names.
            ("spiffe://td/.../.x/x./..y", "td", "/.../.x/x./..y"),
        ] {
            let id = SpiffeId::parse(input).unwrap();
            assert_eq!(id.as_str(), input);
            assert_eq!(id.trust_domain(), trust_domain);
            assert_eq!(id.path(), path);
            assert_eq!(id.to_string(), input);
            assert_eq!(input.parse::<SpiffeId>(), Ok(id.clone()));
            assert_eq!(format!("{id:?}"), format!("SpiffeId({input:?})"));
        }
    }

    #[test]
    fn rejects_what_the_review_found() {
        let long_path = format!("spiffe://billing.example/{}", "a".repeat(4096));
        for (input, expected) in [
            (
                "spiffe://billing.example/human/admin/..",
                SpiffeError::DotSegment,
            ),
            (
                "spiffe://billing.example/human/admin/",
                SpiffeError::TrailingSlash,
            ),
            (
                "spiffe://billing.example/human/admin/x?role=root",
                SpiffeError::SegmentChar,
            ),
            (
                "spiffe://billing.example/human/admin#frag",
                SpiffeError::SegmentChar,
            ),
            (
                "spiffe://billing.example/human/admin/%2F..",
                SpiffeError::SegmentChar,
            ),
            (
                "spiffe://billing.example/human/admin\n/svc/gateway",
                SpiffeError::SegmentChar,
            ),
            (
                long_path.as_str(),
                SpiffeError::TooLong {
                    len: long_path.len(),
                },
            ),
            ("spiffe://td:443/x", SpiffeError::TrustDomainChar),
            ("spiffe://user@td/x", SpiffeError::TrustDomainChar),
        ] {
            assert_eq!(rejects(input), expected, "{input:?}");
        }
    }

    #[test]
    fn rejects_each_rule() {
        for (input, expected) in [
            ("", SpiffeError::Scheme),
            ("billing.example/svc/gateway", SpiffeError::Scheme),
            ("SPIFFE://billing.example/svc/gateway", SpiffeError::Scheme),
            ("Spiffe://billing.example/svc/gateway", SpiffeError::Scheme),
            ("spiffe:/billing.example/svc/gateway", SpiffeError::Scheme),
            ("https://billing.example/svc/gateway", SpiffeError::Scheme),
            (" spiffe://billing.example/svc/gateway", SpiffeError::Scheme),
            ("spiffe://", SpiffeError::EmptyTrustDomain),
            ("spiffe:///svc/gateway", SpiffeError::EmptyTrustDomain),
            ("spiffe://Billing.example/svc", SpiffeError::TrustDomainChar),
            ("spiffe://BILLING.EXAMPLE/svc", SpiffeError::TrustDomainChar),
            (
                "spiffe://billing%2eexample/svc",
                SpiffeError::TrustDomainChar,
            ),
            ("spiffe://billing.example:443", SpiffeError::TrustDomainChar),
            ("spiffe://td?x=1", SpiffeError::TrustDomainChar),
            ("spiffe://td#frag", SpiffeError::TrustDomainChar),
            ("spiffe://bíllíng.example/svc", SpiffeError::TrustDomainChar),
            ("spiffe://billing.example", SpiffeError::NoPath),
            ("spiffe://billing.example/", SpiffeError::TrailingSlash),
            ("spiffe://td/svc//gateway", SpiffeError::EmptySegment),
            ("spiffe://td//svc", SpiffeError::EmptySegment),
            ("spiffe://td/svc//", SpiffeError::EmptySegment),
            ("spiffe://td/./svc", SpiffeError::DotSegment),
            ("spiffe://td/svc/.", SpiffeError::DotSegment),
            ("spiffe://td/../svc", SpiffeError::DotSegment),
            ("spiffe://td/svc gateway", SpiffeError::SegmentChar),
            ("spiffe://td/svc\tgateway", SpiffeError::SegmentChar),
            ("spiffe://td/svc\0", SpiffeError::SegmentChar),
            ("spiffe://td/svc\u{7f}", SpiffeError::SegmentChar),
            ("spiffe://td/svc\r", SpiffeError::SegmentChar),
            ("spiffe://td/caf\u{e9}", SpiffeError::SegmentChar),
            ("spiffe://td/svc\u{2215}..", SpiffeError::SegmentChar),
            ("spiffe://td/svc\\..", SpiffeError::SegmentChar),
            ("spiffe://td/svc;x", SpiffeError::SegmentChar),
            ("spiffe://td/%2e%2e", SpiffeError::SegmentChar),
        ] {
            assert_eq!(rejects(input), expected, "{input:?}");
        }
    }

    #[test]
    fn length_limit_is_inclusive() {
        let prefix = "spiffe://a/";
        let at_limit = format!("{prefix}{}", "x".repeat(MAX_LEN - prefix.len()));
        assert_eq!(at_limit.len(), MAX_LEN);
        assert_eq!(SpiffeId::parse(&at_limit).unwrap().as_str(), at_limit);

        let over = format!("{at_limit}x");
        assert_eq!(rejects(&over), SpiffeError::TooLong { len: MAX_LEN + 1 });

        // The limit counts bytes, not characters.
        let multibyte = format!("{prefix}{}\u{e9}", "x".repeat(MAX_LEN - prefix.len() - 1));
        assert_eq!(
            rejects(&multibyte),
            SpiffeError::TooLong { len: MAX_LEN + 1 }
        );
    }

    /// Inserts each byte value into the middle of a path segment and of the trust domain: the
    /// result is accepted exactly when the byte is in the allowed set (or is a `/`, which
    /// splits one valid segment or trust domain into two valid parts).
    #[test]
    fn single_byte_insertions_follow_the_charset() {
        let segment_ok = |b: u8| b.is_ascii_alphanumeric() || b"._-/".contains(&b);
        let domain_ok =
            |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b);
        for b in 0..=u8::MAX {
            let Ok(text) = String::from_utf8(vec![b]) else {
                // A lone byte of 0x80 and above is not UTF-8, so no `&str` can hold it alone;
                // the same code point, encoded, must still be refused.
                let c = char::from(b).to_string();
                let in_path = format!("spiffe://billing.example/svc/gate{c}way");
                assert_eq!(rejects(&in_path), SpiffeError::SegmentChar, "{b:#04x}");
                let in_domain = format!("spiffe://billing.ex{c}ample/svc/gateway");
                assert_eq!(
                    rejects(&in_domain),
                    SpiffeError::TrustDomainChar,
                    "{b:#04x}"
                );
                continue;
            };

            let in_path = format!("spiffe://billing.example/svc/gate{text}way");
            match SpiffeId::parse(&in_path) {
                Ok(_) => assert!(segment_ok(b), "{b:#04x} accepted in a path segment"),
                Err(err) => {
                    assert!(
                        !segment_ok(b),
                        "{b:#04x} refused in a path segment: {err:?}"
                    );
                    assert_eq!(err, SpiffeError::SegmentChar, "{b:#04x}");
                }
            }

            let in_domain = format!("spiffe://billing.ex{text}ample/svc/gateway");
            match SpiffeId::parse(&in_domain) {
                Ok(_) => assert!(domain_ok(b), "{b:#04x} accepted in the trust domain"),
                Err(err) => {
                    assert!(
                        !domain_ok(b),
                        "{b:#04x} refused in the trust domain: {err:?}"
                    );
                    assert_eq!(err, SpiffeError::TrustDomainChar, "{b:#04x}");
                }
            }
        }
    }

    #[test]
    fn messages_say_what_is_accepted_without_control_characters() {
        for err in [
            SpiffeError::TooLong { len: 4096 },
            SpiffeError::Scheme,
            SpiffeError::EmptyTrustDomain,
            SpiffeError::TrustDomainChar,
            SpiffeError::NoPath,
            SpiffeError::EmptySegment,
            SpiffeError::DotSegment,
            SpiffeError::SegmentChar,
            SpiffeError::TrailingSlash,
        ] {
            let message = err.to_string();
            assert!(message.starts_with("SPIFFE ID "), "{message}");
            assert!(!message.chars().any(char::is_control), "{message}");
        }
        assert!(
            SpiffeError::NoPath
                .to_string()
                .contains("must name a workload")
        );
        assert!(
            SpiffeError::TooLong { len: 300 }
                .to_string()
                .contains("at most 255 bytes")
        );
    }
}
