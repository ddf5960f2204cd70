//! The platform API key a request presents: `Authorization: Bearer vk_<env>_…`.
//!
//! The key is taken from its header and checked for form and checksum here
//! (`vault_proto::apikey::parse`, through [`ApiKeyText::environment`]), so a typo, a
//! truncated copy or a random string is refused without a call to vaultd; vaultd
//! judges the rest (`VerifyApiKey`: the key's MAC, state, expiry, limits and quota),
//! and the gateway the key's scopes ([`may_proxy`]). The key's own prefix names the
//! environment the request is for: a `vk_test_` key spends the tenant's test BYOK
//! keys, a `vk_live_` key its live ones, and vaultd refuses a key asked for in the
//! other environment.

use http::{HeaderMap, header};
use vault_client::{ApiKeyText, Environment};

/// A well-formed key, on its way to vaultd.
pub(crate) struct PresentedKey {
    /// The whole key, zeroised when dropped.
    pub(crate) text: ApiKeyText,
    /// The environment the key says it belongs to.
    pub(crate) environment: Environment,
}

/// Why a request presents no key worth asking vaultd about. Holds nothing of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyProblem {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// Not a platform API key, or one with a typo: its checksum does not match.
    Malformed,
}

impl KeyProblem {
    /// What the customer is told: what to send, never what they sent.
    pub(crate) fn message(self) -> &'static str {
        match self {
            KeyProblem::Missing => {
                "a platform API key is required: Authorization: Bearer vk_live_… or vk_test_…"
            }
            KeyProblem::Malformed => {
                "the API key is not valid: it is not a vk_live_… or vk_test_… key, or it was \
                 not copied whole (its checksum does not match)"
            }
        }
    }
}

/// The key in `headers`' `Authorization: Bearer` header, checked for form.
pub(crate) fn presented(headers: &HeaderMap) -> Result<PresentedKey, KeyProblem> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(KeyProblem::Missing)?;
    // A header that is not visible ASCII holds no key (keys are base62 and `_`).
    let text = value.to_str().map_err(|_| KeyProblem::Malformed)?;
    let text = text
        .strip_prefix("Bearer ")
        .ok_or(KeyProblem::Missing)?
        .trim();
    let text = ApiKeyText::from(text.to_owned());
    let environment = text.environment().ok_or(KeyProblem::Malformed)?;
    Ok(PresentedKey { text, environment })
}

/// Whether `scopes` let a key call `provider` through the proxy: `proxy:{provider}`
/// or `proxy:*`. (`*` is the gateway's wildcard: to vaultd it is only a character.)
pub(crate) fn may_proxy(scopes: &[String], provider: &str) -> bool {
    scopes
        .iter()
        .any(|s| s == "proxy:*" || s.strip_prefix("proxy:") == Some(provider))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    // Well-formed keys (`vault_proto::apikey::compose`), CRC-32 checksum included.
    const LIVE: &str = "vk_live_4f9XbQ2mT0aZ_hV3kP9sQ2wE5rT7yU1iO3pAs1cljRS";
    const TEST: &str = "vk_test_4f9XbQ2mT0aZ_hV3kP9sQ2wE5rT7yU1iO3pAs2G1c2A";

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_well_formed_key_names_its_environment() {
        for (key, expected) in [(LIVE, Environment::Live), (TEST, Environment::Test)] {
            let presented = presented(&with_auth(&format!("Bearer {key} "))).unwrap();
            assert_eq!(presented.environment, expected);
            assert_eq!(presented.text.key_id(), Some("4f9XbQ2mT0aZ"));
        }
    }

    #[test]
    fn typos_and_strangers_are_refused_without_asking_vaultd() {
        assert_eq!(
            presented(&HeaderMap::new()).err(),
            Some(KeyProblem::Missing)
        );
        assert_eq!(
            presented(&with_auth(&format!("Basic {LIVE}"))).err(),
            Some(KeyProblem::Missing)
        );
        let typo = LIVE.replace("hV3k", "hV3K");
        let relabelled = LIVE.replacen("vk_live_", "vk_test_", 1);
        for bad in [
            typo.as_str(),
            relabelled.as_str(),
            &LIVE[..LIVE.len() - 1],
            "vk_live_acme1_4f9c2a7e1b3d5f6081a2c3d4e5f60718",
            "sk-anything",
            "",
        ] {
            let problem = presented(&with_auth(&format!("Bearer {bad}"))).err();
            assert_eq!(problem, Some(KeyProblem::Malformed), "{bad}");
        }
        let mut latin1 = HeaderMap::new();
        latin1.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer vk_live_\xe9").unwrap(),
        );
        assert_eq!(presented(&latin1).err(), Some(KeyProblem::Malformed));
    }

    #[test]
    fn scopes_name_a_provider_or_all_of_them() {
        let scopes = |s: &[&str]| s.iter().map(|&s| s.to_owned()).collect::<Vec<_>>();
        assert!(may_proxy(&scopes(&["proxy:openai"]), "openai"));
        assert!(!may_proxy(&scopes(&["proxy:openai"]), "anthropic"));
        assert!(may_proxy(&scopes(&["usage:read", "proxy:*"]), "anthropic"));
        for none in [
            &[][..],
            &["proxy:"],
            &["openai"],
            &["proxy:openai-2"],
            &["usage:read"],
        ] {
            assert!(!may_proxy(&scopes(none), "openai"), "{none:?}");
        }
    }
}
