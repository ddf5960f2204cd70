//! Identifiers vaultd hands out: a prefix and 128 random bits in lower-case hex.
//! Not secrets (they name things; sessions and leases are bound to their identity).
//! A value from a request becomes one only through `parse`, which accepts exactly the
//! form vaultd generates, so nothing else ever reaches an index or an audit record.

use std::fmt;

use vault_crypto::CryptoError;

/// Hex digits after the prefix.
const HEX_DIGITS: usize = 32;

macro_rules! random_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub(crate) struct $name(String);

        impl $name {
            /// A new random id.
            pub(crate) fn generate() -> Result<Self, CryptoError> {
                let mut bytes = [0u8; HEX_DIGITS / 2];
                vault_crypto::aead::public_random_bytes(&mut bytes)?;
                Ok(Self(format!(
                    "{}{}",
                    $prefix,
                    vault_crypto::hex::encode(&bytes).as_str()
                )))
            }

            /// `text` if it has exactly the form vaultd generates.
            pub(crate) fn parse(text: &str) -> Option<Self> {
                let hex = text.strip_prefix($prefix)?;
                (hex.len() == HEX_DIGITS
                    && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
                .then(|| Self(text.to_owned()))
            }

            pub(crate) fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

random_id!(
    /// A lease: `l-` and 32 hex digits.
    LeaseId,
    "l-"
);

impl LeaseId {
    /// The id's 128 random bits, which key the lease index.
    pub(crate) fn bits(&self) -> u128 {
        // Every LeaseId has the form `parse` accepts, so this always parses.
        self.0
            .strip_prefix("l-")
            .and_then(|hex| u128::from_str_radix(hex, 16).ok())
            .unwrap_or(0)
    }

    /// The id whose bits are `bits`.
    pub(crate) fn from_bits(bits: u128) -> Self {
        Self(format!("l-{bits:032x}"))
    }

    /// What a caller is told when a lease id is not of this form.
    pub(crate) const FORM: &'static str =
        "lease_id must be 'l-' followed by 32 lower-case hex digits";
}
random_id!(
    /// A break-glass grant: `bg-` and 32 hex digits.
    BreakGlassId,
    "bg-"
);

random_id!(
    /// A lease session: `s-` and 32 hex digits.
    SessionId,
    "s-"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_generated_form_parses() {
        let id = LeaseId::generate().unwrap();
        assert_eq!(LeaseId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(LeaseId::from_bits(id.bits()), id);
        assert_eq!(
            LeaseId::from_bits(1).as_str(),
            format!("l-{}1", "0".repeat(31))
        );
        assert_ne!(LeaseId::generate().unwrap(), id);
        let hex = "0123456789abcdef0123456789abcdef";
        assert!(LeaseId::parse(&format!("l-{hex}")).is_some());
        for bad in [
            String::new(),
            "l-".to_owned(),
            format!("s-{hex}"),
            format!("l-{}", hex.to_uppercase()),
            format!("l-{hex}0"),
            format!("l-{}", &hex[1..]),
            format!("l-{}g", &hex[1..]),
            format!("L-{hex}"),
            format!("l-{hex}\n"),
            "l-".repeat(1 << 16),
        ] {
            assert!(LeaseId::parse(&bad).is_none(), "{bad:?}");
        }
        assert!(SessionId::parse(SessionId::generate().unwrap().as_str()).is_some());
        assert!(SessionId::parse(LeaseId::generate().unwrap().as_str()).is_none());
        assert!(LeaseId::FORM.contains("lease_id must be 'l-'"));
    }
}
