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

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vault_descriptor.bin"));

pub mod spiffe;

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    /// Fields that carry secrets in either direction.
    const SECRET_FIELDS: [&str; 7] = [
        "value",
        "share",
        "shares",
        "current_shares",
        "plaintext",
        "plaintexts",
        "api_key",
    ];

    #[test]
    fn every_secret_field_is_sealed_to_a_session() {
        let set = FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let mut checked = 0;
        for file in &set.file {
            for message in &file.message_type {
                for field in &message.field {
                    if SECRET_FIELDS.contains(&field.name()) {
                        assert_eq!(
                            field.type_name(),
                            ".vault.v1.SealedPayload",
                            "{}.{} must be a SealedPayload",
                            message.name(),
                            field.name()
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(
            checked >= 10,
            "only {checked} secret fields found: the list is stale"
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
