//! vault-client against the real `vaultd` binary, over real mutual TLS.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod apikeys;
mod cluster;
mod crash;
mod leases;
mod memory;
mod resilience;

use std::time::Duration;

use vault_client::{Client, Environment, SecretPath, SecretValue};
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vault_testkit::process::VaultProcess;

pub(crate) const GATEWAY: &str = "spiffe://billing.example/svc/gateway";
pub(crate) const OUTSIDER: &str = "spiffe://billing.example/svc/outsider";
pub(crate) const ACME_WORKER: &str = "spiffe://billing.example/tenant/acme/svc/worker";

/// A daemon process and what it runs from.
pub(crate) struct Vault {
    pub(crate) fixture: Fixture,
    pub(crate) process: Option<VaultProcess>,
}

impl Vault {
    pub(crate) fn start(options: &FixtureOptions) -> Self {
        let fixture = Fixture::new(options);
        let process = VaultProcess::start(&fixture);
        Self {
            fixture,
            process: Some(process),
        }
    }

    pub(crate) fn process(&self) -> &VaultProcess {
        self.process.as_ref().unwrap()
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.process().grpc.port())
    }

    /// A client for `identity`, with `extra` applied to its builder.
    pub(crate) fn client_with(
        &mut self,
        identity: &str,
        extra: impl FnOnce(vault_client::ClientBuilder) -> vault_client::ClientBuilder,
    ) -> Client {
        let files = self.fixture.client_files(identity);
        extra(
            Client::builder()
                .endpoint(self.endpoint())
                .ca_cert(files.ca)
                .client_cert(files.cert, files.key),
        )
        .build()
        .unwrap()
    }

    pub(crate) fn client(&mut self, identity: &str) -> Client {
        self.client_with(identity, |b| b)
    }

    /// Stops the daemon and starts it again on the same files (sealed).
    pub(crate) fn restart(&mut self) {
        assert!(self.process.take().unwrap().stop().success());
        self.process = Some(VaultProcess::start(&self.fixture));
    }
}

pub(crate) fn secret(tenant: &str, name: &str) -> SecretPath {
    SecretPath {
        tenant: tenant.into(),
        environment: Environment::Live,
        name: name.into(),
    }
}

/// A daemon initialised with one share, unsealed, holding `secrets`; and its share.
pub(crate) async fn unsealed(
    options: &FixtureOptions,
    secrets: &[(&str, &str, &[u8])],
) -> (Vault, vault_client::Share) {
    let mut vault = Vault::start(options);
    let operator = vault.client(OPERATOR);
    let mut shares = operator.init(1, 1).await.unwrap();
    let share = shares.pop().unwrap();
    operator.unseal(&share, None).await.unwrap();
    for (tenant, name, value) in secrets {
        operator
            .put_secret(
                &secret(tenant, name),
                vault_client::proto::SecretKind::Byok,
                &SecretValue::from_vec(value.to_vec()),
            )
            .await
            .unwrap();
    }
    (vault, share)
}

/// Waits until the client's revocation watch is connected: until then it caches
/// nothing, so two leases of one secret differ.
pub(crate) async fn wait_for_watch(client: &Client) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let a = client
            .lease("acme", Environment::Live, "byok/openai")
            .await
            .unwrap();
        let b = client
            .lease("acme", Environment::Live, "byok/openai")
            .await
            .unwrap();
        if a.lease_id() == b.lease_id() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revocation watch never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `check` holds, for at most `within`.
pub(crate) async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    check()
}
