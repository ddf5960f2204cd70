//! vaultd's gRPC API, generated from `proto/vault/v1/*.proto`: the services
//! `vault.v1.Broker` (sessions, leases, transit, API-key verification) and
//! `vault.v1.Admin` (lifecycle, secrets, tenants, leases, policy). Every field is
//! documented in the proto files.
#![forbid(unsafe_code)]

/// `vault.v1`: messages, clients and servers.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)] // generated code; its documentation is the proto files' comments
pub mod v1 {
    tonic::include_proto!("vault.v1");
}

/// The `vault-error` trailing metadata: where the gRPC code alone does not tell a client
/// what to do, this key names the reason in one word. The daemon sets it; clients act
/// on it (reopen a session, fail over, give up).
pub mod reason {
    /// The metadata key.
    pub const KEY: &str = "vault-error";
    /// The session is unknown or expired: open a new one and retry.
    pub const UNKNOWN_SESSION: &str = "unknown-session";
    /// vaultd is sealed: custodians must unseal it; another node may serve.
    pub const SEALED: &str = "sealed";
    /// This node has fallen behind the other nodes sharing its database (it cannot
    /// read their revocations): another node may serve.
    pub const OUT_OF_STEP: &str = "out-of-step";
    /// vaultd is not initialised yet.
    pub const UNINITIALISED: &str = "uninitialised";
    /// The audit log cannot be written, so nothing is answered.
    pub const AUDIT: &str = "audit";
    /// The API key is malformed, unknown or wrong (`UNAUTHENTICATED`).
    pub const API_KEY_INVALID: &str = "api-key-invalid";
    /// The API key was revoked (`UNAUTHENTICATED`).
    pub const API_KEY_REVOKED: &str = "api-key-revoked";
    /// The API key expired, or its grace window after a rotation ended
    /// (`UNAUTHENTICATED`).
    pub const API_KEY_EXPIRED: &str = "api-key-expired";
    /// The API key belongs to the other environment (`PERMISSION_DENIED`).
    pub const API_KEY_ENVIRONMENT: &str = "api-key-environment";
    /// The API key lacks the scope the request needs (`PERMISSION_DENIED`).
    pub const API_KEY_SCOPE: &str = "api-key-scope";
    /// A rate limit was reached (`RESOURCE_EXHAUSTED`); see [`RETRY_AFTER`],
    /// [`LIMIT_SCOPE`] and [`LIMIT_WINDOW`].
    pub const RATE_LIMITED: &str = "rate-limited";
    /// The API key's daily quota is spent (`RESOURCE_EXHAUSTED`); see [`RETRY_AFTER`].
    pub const QUOTA_EXCEEDED: &str = "quota-exceeded";
    /// Metadata: whole seconds after which the request may pass.
    pub const RETRY_AFTER: &str = "retry-after";
    /// Metadata: which limit refused: `api_key`, `tenant` or `identity`.
    pub const LIMIT_SCOPE: &str = "vault-limit-scope";
    /// Metadata: which window refused: `burst` (10 s), `minute`, `day` or `quota`.
    pub const LIMIT_WINDOW: &str = "vault-limit-window";
}

impl v1::Environment {
    /// The environment's name as it appears in associated data, audit records and
    /// text: `live` or `test`; `None` for the unspecified value.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::Live => Some(LIVE),
            Self::Test => Some(TEST),
            Self::Unspecified => None,
        }
    }

    /// The environment named `live` or `test`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            LIVE => Some(Self::Live),
            TEST => Some(Self::Test),
            _ => None,
        }
    }
}

/// The live environment's name.
pub const LIVE: &str = "live";
/// The test environment's name.
pub const TEST: &str = "test";

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vault_descriptor.bin"));

pub mod apikey;
pub mod identity;
pub mod spiffe;

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    /// What a field's trailing comment says it is.
    fn marker(file: &prost_types::FileDescriptorProto, path: &[i32]) -> Option<String> {
        file.source_code_info
            .as_ref()?
            .location
            .iter()
            .find(|l| l.path == path)
            .and_then(|l| l.trailing_comments.as_deref())
            .map(|c| c.trim().to_owned())
    }

    /// Every field of `message` (at `path`, and its nested messages): a SealedPayload
    /// must be marked `secret`, a string or bytes field `public`, and nothing else
    /// `secret`. Returns the fields checked.
    fn check(
        file: &prost_types::FileDescriptorProto,
        message: &prost_types::DescriptorProto,
        path: &[i32],
        failures: &mut Vec<String>,
    ) -> usize {
        use prost_types::field_descriptor_proto::Type;
        let mut checked = 0;
        for (i, field) in message.field.iter().enumerate() {
            let mut field_path = path.to_vec();
            field_path.extend([2, i as i32]);
            let marker = marker(file, &field_path);
            let sealed = field.type_name() == ".vault.v1.SealedPayload";
            let text = matches!(field.r#type(), Type::String | Type::Bytes);
            let name = format!("{}.{}", message.name(), field.name());
            match (sealed, text, marker.as_deref()) {
                (true, _, Some("secret")) | (false, true, Some("public")) => checked += 1,
                (false, false, None) => {}
                (true, _, other) => {
                    failures.push(format!("{name}: a SealedPayload must be marked `// secret`, not {other:?}"))
                }
                (false, true, other) => failures.push(format!(
                    "{name}: a string or bytes field must be marked `// public` (a secret must be a SealedPayload marked `// secret`), not {other:?}"
                )),
                (false, false, Some(other)) => failures.push(format!(
                    "{name}: only SealedPayload, string and bytes fields are marked, not {other:?}"
                )),
            }
        }
        for (i, nested) in message.nested_type.iter().enumerate() {
            let mut nested_path = path.to_vec();
            nested_path.extend([3, i as i32]);
            checked += check(file, nested, &nested_path, failures);
        }
        checked
    }

    #[test]
    fn every_field_says_whether_it_is_secret_and_secrets_are_sealed() {
        let set = FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let mut failures = Vec::new();
        let mut checked = 0;
        for file in set.file.iter().filter(|f| f.package() == "vault.v1") {
            assert!(
                file.source_code_info.is_some(),
                "{}: the descriptor set has no comments to read",
                file.name()
            );
            for (i, message) in file.message_type.iter().enumerate() {
                checked += check(file, message, &[4, i as i32], &mut failures);
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(checked >= 80, "only {checked} fields checked");
    }

    #[test]
    fn an_unmarked_field_fails_the_check() {
        let set = FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let mut file = set
            .file
            .into_iter()
            .find(|f| f.name() == "vault/v1/broker.proto")
            .unwrap();
        // A new secret field named `token`, as a plain string: it must not pass.
        let index = file
            .message_type
            .iter()
            .position(|m| m.name() == "LeaseRequest")
            .unwrap();
        let message = &mut file.message_type[index];
        message.field.push(prost_types::FieldDescriptorProto {
            name: Some("token".into()),
            number: Some(99),
            r#type: Some(prost_types::field_descriptor_proto::Type::String as i32),
            ..Default::default()
        });
        let message = file.message_type[index].clone();
        let mut failures = Vec::new();
        check(&file, &message, &[4, index as i32], &mut failures);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].starts_with("LeaseRequest.token"),
            "{failures:?}"
        );
    }

    #[test]
    fn services_have_their_wire_names() {
        assert_eq!(super::v1::broker_server::SERVICE_NAME, "vault.v1.Broker");
        assert_eq!(super::v1::admin_server::SERVICE_NAME, "vault.v1.Admin");
        let lease = super::v1::LeaseRequest {
            session_id: "s".into(),
            ttl_seconds: 60,
            ..Default::default()
        };
        let back = super::v1::LeaseRequest::decode(&lease.encode_to_vec()[..]).unwrap();
        assert_eq!(back, lease);
    }
}
