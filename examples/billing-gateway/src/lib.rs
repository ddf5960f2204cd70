//! The billing platform's API gateway, as a thin client of vaultd.
//!
//! `POST /v1/proxy/{provider}/{path…}` with `Authorization: Bearer <platform API key>`:
//!
//! 1. the API key is checked for form and checksum locally, then verified by vaultd
//!    (`VerifyApiKey`, through [`vault_client`]: revocation, expiry, environment, rate
//!    limits and daily quota), and its scope (`proxy:{provider}` or `proxy:*`) checked;
//! 2. the tenant's BYOK key `byok/{provider}` for the key's environment (the one its
//!    `vk_live_`/`vk_test_` prefix names) is leased from vaultd through
//!    [`vault_client`] (cached, coalesced, evicted on revocation);
//! 3. the request is forwarded to the provider's upstream with the BYOK key in its
//!    auth header, and the answer relayed;
//! 4. a usage event is recorded, once per `Idempotency-Key`.
//!
//! A bad, unknown, revoked or expired key is answered 401, a key without the scope
//! (or of the other environment) 403, a key or tenant over its limits or quota 429
//! with `Retry-After`. Nothing logs a key or a body, and no answer holds one. When
//! vaultd is sealed or unreachable the gateway answers 503 and sends nothing upstream.
#![forbid(unsafe_code)]

mod answer;
pub mod config;
mod keys;
mod proxy;
mod upstream;
pub mod usage;

pub use proxy::{Gateway, GatewayError};
