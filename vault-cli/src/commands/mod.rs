//! One file per command group.

pub(crate) mod apikey;
pub(crate) mod audit;
pub(crate) mod breakglass;
pub(crate) mod ceremony;
pub(crate) mod lease;
pub(crate) mod operator;
pub(crate) mod pki;
pub(crate) mod policy;
pub(crate) mod secret;
pub(crate) mod snapshot;
pub(crate) mod transit;
