//! The billing platform's API gateway, as a thin client of vaultd.
//!
//! `POST /v1/proxy/{provider}/{path…}` with `Authorization: Bearer <platform API key>`:
//!
//! 1. the API key is verified ([`keys`]; temporary until vaultd's `VerifyApiKey`) and
//!    its scope (`proxy:{provider}` or `proxy:*`) checked;
//! 2. the tenant's BYOK key `byok/{provider}` for the key's environment is leased
//!    from vaultd through [`vault_client`] (cached, coalesced, evicted on revocation);
//! 3. the request is forwarded to the provider's upstream with the BYOK key in its
//!    auth header, and the answer relayed;
//! 4. a usage event is recorded, once per `Idempotency-Key`.
//!
//! Nothing logs a key or a body. When vaultd is sealed or unreachable the gateway
//! answers 503 and sends nothing upstream.
#![forbid(unsafe_code)]

pub mod config;
pub mod keys;
mod proxy;
mod upstream;
pub mod usage;

pub use proxy::{Gateway, GatewayError};
