//! Platform API keys through custody: issue, rotate, revoke and list with their
//! admin proofs; verification with the caller's `apikeys.verify` grant for the key's
//! tenant and environment, then the key's MAC, its state, and every rate limit and
//! quota it counts against.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::broadcast;
use vault_audit::Event;
use vault_crypto::clock::unix_ms;

use super::{Custody, Upkeep};
use crate::authz::{
    Authorized, IssueApiKeys, ReadMetadata, RevokeApiKeys, VerifierOp, VerifyApiKeyOp,
};
use crate::error::{Error, Result};
use crate::limits::quota::{QuotaExceeded, Quotas};
use crate::limits::rate::{Exceeded, Rates, Scope};
use crate::limits::refusals::LimitRefusals;
use crate::names::Environment;
use crate::records::{ApiKeyRecord, RateWindows};
use crate::vault::apikeys::{ApiKeySpec, IssuedKey, KeyRefusal};

/// How API keys are limited and kept: from the `[apikeys]` configuration.
#[derive(PartialEq)]
pub(crate) struct ApiKeySettings {
    pub(crate) tiers: BTreeMap<String, RateWindows>,
    pub(crate) default_tier: String,
    pub(crate) tenant: RateWindows,
    pub(crate) max_per_tenant: usize,
    pub(crate) default_grace: Duration,
    pub(crate) cache: Duration,
    pub(crate) limiter_entries: usize,
}

/// Limits, quotas and revocation notices of API keys (and the rates of grants).
pub(super) struct KeyLimits {
    /// Replaced whole when the daemon reloads its configuration.
    settings: RwLock<Arc<ApiKeySettings>>,
    rates: Rates,
    quotas: Quotas,
    refusals: LimitRefusals,
    revoked: broadcast::Sender<String>,
}

impl KeyLimits {
    pub(super) fn new(settings: ApiKeySettings, clock: &vault_crypto::clock::SharedClock) -> Self {
        Self {
            rates: Rates::new(settings.limiter_entries, clock.clone()),
            quotas: Quotas::new(settings.limiter_entries, clock.clone()),
            refusals: LimitRefusals::default(),
            revoked: broadcast::channel(1024).0,
            settings: RwLock::new(Arc::new(settings)),
        }
    }

    /// The settings in force.
    fn settings(&self) -> Arc<ApiKeySettings> {
        Arc::clone(&self.settings.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Puts `settings` in force for the requests that follow. The limiter's size
    /// (`limiter_entries`) stays as it was made: it takes a restart.
    pub(super) fn replace_settings(&self, settings: ApiKeySettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(settings);
    }

    /// Tells every verifier's revocation watch that key `id` was revoked.
    pub(super) fn notify_revoked(&self, id: &str) {
        // No watcher is not an error: the key is refused either way.
        let _ = self.revoked.send(id.to_owned());
    }

    /// Notices of revoked API keys, by key id.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.revoked.subscribe()
    }
}

/// What an issue request asks for, validated by the handler.
pub(crate) struct KeyRequest {
    pub(crate) environment: Environment,
    pub(crate) scopes: Vec<String>,
    /// A tier by name, or explicit limits, or neither (the default tier).
    pub(crate) tier: Option<String>,
    pub(crate) limits: Option<RateWindows>,
    pub(crate) daily_quota: u64,
    pub(crate) expires_unix: Option<u64>,
    pub(crate) label: String,
}

/// A key that verified.
pub(crate) struct Verified {
    /// Quota units left today, if the key has a quota.
    pub(crate) quota_remaining: Option<u64>,
    /// Until when a client may reuse the answer (Unix milliseconds).
    pub(crate) cache_until_unix_ms: i64,
}

/// Why a key did not verify.
#[derive(Debug)]
pub(crate) enum VerifyError {
    /// The vault failed (sealed, storage).
    Vault(Error),
    /// Unknown, or not the key its id names.
    Invalid,
    /// The key's own state, environment or scopes refuse.
    Refused(KeyRefusal),
    /// A rate limit.
    Rate(Exceeded),
    /// The daily quota.
    Quota(QuotaExceeded),
}

impl From<Error> for VerifyError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound => VerifyError::Invalid,
            other => VerifyError::Vault(other),
        }
    }
}

/// A key found by id, with a proof that lets the caller look.
pub(crate) trait KeyLookup {}
impl KeyLookup for IssueApiKeys {}
impl KeyLookup for RevokeApiKeys {}
impl KeyLookup for VerifierOp {}

impl Custody {
    fn limits(&self) -> &KeyLimits {
        &self.held.apikeys
    }

    /// Issues a key of the granted tenant.
    pub(crate) fn issue_api_key(
        &self,
        grant: &Authorized<IssueApiKeys>,
        request: KeyRequest,
    ) -> Result<IssuedKey> {
        let tenant = grant.op().0.clone().ok_or(Error::NotFound)?;
        let settings = self.limits().settings();
        let (tier, limits) = match (request.tier, request.limits) {
            (_, Some(limits)) => (String::new(), limits),
            (tier, None) => {
                let name = tier.unwrap_or_else(|| settings.default_tier.clone());
                let limits = *settings
                    .tiers
                    .get(&name)
                    .ok_or_else(|| Error::UnknownTier(name.clone()))?;
                (name, limits)
            }
        };
        self.held.vault.issue_api_key(
            &ApiKeySpec {
                tenant,
                environment: request.environment,
                scopes: request.scopes,
                tier,
                limits,
                daily_quota: request.daily_quota,
                expires_unix: request.expires_unix,
                label: request.label,
            },
            settings.max_per_tenant,
        )
    }

    /// Key `id`'s record, for a caller that may look keys up.
    pub(crate) fn find_api_key<O: KeyLookup>(
        &self,
        _: &Authorized<O>,
        id: &str,
    ) -> Result<ApiKeyRecord> {
        self.held.vault.api_key(id)
    }

    /// Replaces key `id` of the granted tenant; the old key verifies for `grace`
    /// (default `apikeys.default_grace`).
    pub(crate) fn rotate_api_key(
        &self,
        grant: &Authorized<IssueApiKeys>,
        id: &str,
        grace: Option<Duration>,
    ) -> Result<(IssuedKey, ApiKeyRecord)> {
        let settings = self.limits().settings();
        self.check_tenant(grant.op().0.as_ref(), id)?;
        self.held.vault.rotate_api_key(
            id,
            grace.unwrap_or(settings.default_grace),
            settings.max_per_tenant,
        )
    }

    /// Revokes key `id` of the granted tenant at once and tells every verifier's
    /// revocation watch.
    pub(crate) fn revoke_api_key(
        &self,
        grant: &Authorized<RevokeApiKeys>,
        id: &str,
    ) -> Result<ApiKeyRecord> {
        self.check_tenant(grant.op().0.as_ref(), id)?;
        let record = self.held.vault.revoke_api_key(id)?;
        self.limits().notify_revoked(id);
        Ok(record)
    }

    fn check_tenant(&self, granted: Option<&crate::names::TenantId>, id: &str) -> Result<()> {
        let record = self.held.vault.api_key(id)?;
        if granted != Some(&record.tenant) {
            return Err(Error::NotFound);
        }
        Ok(())
    }

    /// The granted tenant's keys, with the quota units each used today.
    pub(crate) fn list_api_keys(
        &self,
        grant: &Authorized<ReadMetadata>,
        environment: Option<Environment>,
    ) -> Result<Vec<(String, ApiKeyRecord, u64)>> {
        let keys = self.held.vault.list_api_keys(&grant.op().0, environment)?;
        keys.into_iter()
            .map(|(id, record)| {
                let used = self
                    .limits()
                    .quotas
                    .used_today(&id, || self.held.vault.read_quota(&id))?;
                Ok((id, record, used))
            })
            .collect()
    }

    /// Verifies `key` (whose id is `id` and record `record`, found for this caller) for
    /// the granted tenant and environment: its MAC, its own verdict, then every limit
    /// it counts against, charging `cost` units of its quota.
    pub(crate) fn verify_api_key(
        &self,
        grant: &Authorized<VerifyApiKeyOp>,
        id: &str,
        record: &ApiKeyRecord,
        key: &[u8],
        scope: Option<&str>,
        cost: u32,
    ) -> std::result::Result<Verified, VerifyError> {
        let VerifyApiKeyOp(tenant, environment) = grant.op();
        if record.tenant != *tenant || record.environment != *environment {
            return Err(VerifyError::Refused(KeyRefusal::Environment));
        }
        if !self.held.vault.api_key_matches(key, record)? {
            return Err(VerifyError::Invalid);
        }
        let now = self.held.clock.now();
        let now_unix = vault_crypto::clock::unix_seconds(now);
        record
            .judge(now_unix, *environment, scope)
            .map_err(VerifyError::Refused)?;
        let limits = self.limits();
        let settings = limits.settings();
        let cost = cost.max(1);
        let quota_remaining = if record.daily_quota > 0 {
            let charged = limits
                .quotas
                .charge(id, record.daily_quota, u64::from(cost), || {
                    self.held.vault.read_quota(id)
                })?;
            match charged {
                Ok(left) => Some(left),
                Err(exceeded) => {
                    limits.refusals.count("api_key", id, "quota");
                    return Err(VerifyError::Quota(exceeded));
                }
            }
        } else {
            None
        };
        let mut scopes = vec![
            (Scope::ApiKey(id.to_owned()), record.limits),
            (Scope::Tenant(tenant.to_string()), settings.tenant),
        ];
        scopes.extend(grant_scope(grant));
        if let Err(exceeded) = limits.rates.admit(&scopes, cost) {
            if quota_remaining.is_some() {
                limits.quotas.refund(id, u64::from(cost));
            }
            limits.refusals.count(
                exceeded.scope.kind(),
                exceeded.scope.name(),
                exceeded.window,
            );
            return Err(VerifyError::Rate(exceeded));
        }
        let mut cache_until = now + settings.cache;
        if let Some(until) = record.valid_until() {
            cache_until = cache_until.min(std::time::UNIX_EPOCH + Duration::from_secs(until));
        }
        Ok(Verified {
            quota_remaining,
            cache_until_unix_ms: unix_ms(cache_until),
        })
    }

    /// Counts a request against its grant's rates for its identity, if the grant sets
    /// any; refused (and counted nowhere) past them.
    pub(crate) fn admit_grant<O>(
        &self,
        grant: &Authorized<O>,
    ) -> std::result::Result<(), Exceeded> {
        let Some(scope) = grant_scope(grant) else {
            return Ok(());
        };
        let limits = self.limits();
        limits.rates.admit(&[scope], 1).inspect_err(|exceeded| {
            limits.refusals.count(
                exceeded.scope.kind(),
                exceeded.scope.name(),
                exceeded.window,
            );
        })
    }
}

/// The identity-and-grant scope of a grant that sets rates.
fn grant_scope<O>(grant: &Authorized<O>) -> Option<(Scope, RateWindows)> {
    let rate = grant.rate?;
    Some((
        Scope::Identity {
            identity: grant.identity().to_string(),
            grant: grant.rule.clone().unwrap_or_default(),
        },
        RateWindows {
            burst: rate.burst,
            per_minute: rate.per_minute,
            per_day: rate.per_day,
        },
    ))
}

impl Upkeep {
    /// Writes the quota usage changed since the last call, in one durable commit; on
    /// failure it stays to be written next time.
    pub(crate) fn flush_quotas(&self) -> Result<usize> {
        let quotas = &self.held.apikeys.quotas;
        let changed = quotas.take_changed();
        match self.held.vault.add_quota_usage(&changed) {
            Ok(totals) => {
                quotas.written(&changed, &totals);
                Ok(changed.len())
            }
            Err(e) => {
                quotas.unwritten(&changed);
                Err(e)
            }
        }
    }

    /// Forgets idle limiter state; returns the scopes still held.
    pub(crate) fn sweep_limiters(&self) -> usize {
        self.held.apikeys.rates.sweep()
    }

    /// Summary records of the requests limits refused since the last call.
    pub(crate) fn limit_summaries(&self) -> Vec<Event> {
        self.held.apikeys.refusals.drain()
    }
}
