//! What a policy can allow: broker operations for services, permissions for admins.

use std::fmt;

/// A broker operation, granted to service identities by `[[grant]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// Lease a secret's value.
    Lease,
    /// Encrypt with a tenant's transit key.
    TransitEncrypt,
    /// Decrypt a transit envelope.
    TransitDecrypt,
    /// Reseal a transit envelope under the tenant's current key (no plaintext leaves).
    TransitRewrap,
    /// Verify a platform API key.
    ApiKeysVerify,
}

/// An admin permission, given to identities by `[[role]]`. None returns plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)] // each variant is named exactly as its permission string
pub enum Permission {
    Status,
    Unseal,
    Seal,
    Rekey,
    KeysRotate,
    SecretsWrite,
    SecretsReadMetadata,
    SecretsDelete,
    TenantsErase,
    TenantsExport,
    LeasesRead,
    LeasesRevoke,
    ApiKeysIssue,
    ApiKeysRevoke,
    PolicyReload,
    AuditRead,
    BreakglassApprove,
    SnapshotSave,
    NodeJoin,
}

const OPERATIONS: [(Operation, &str); 5] = [
    (Operation::Lease, "lease"),
    (Operation::TransitEncrypt, "transit.encrypt"),
    (Operation::TransitDecrypt, "transit.decrypt"),
    (Operation::TransitRewrap, "transit.rewrap"),
    (Operation::ApiKeysVerify, "apikeys.verify"),
];

const PERMISSIONS: [(Permission, &str); 19] = [
    (Permission::Status, "status"),
    (Permission::Unseal, "unseal"),
    (Permission::Seal, "seal"),
    (Permission::Rekey, "rekey"),
    (Permission::KeysRotate, "keys.rotate"),
    (Permission::SecretsWrite, "secrets.write"),
    (Permission::SecretsReadMetadata, "secrets.read-metadata"),
    (Permission::SecretsDelete, "secrets.delete"),
    (Permission::TenantsErase, "tenants.erase"),
    (Permission::TenantsExport, "tenants.export"),
    (Permission::LeasesRead, "leases.read"),
    (Permission::LeasesRevoke, "leases.revoke"),
    (Permission::ApiKeysIssue, "apikeys.issue"),
    (Permission::ApiKeysRevoke, "apikeys.revoke"),
    (Permission::PolicyReload, "policy.reload"),
    (Permission::AuditRead, "audit.read"),
    (Permission::BreakglassApprove, "breakglass.approve"),
    (Permission::SnapshotSave, "snapshot.save"),
    (Permission::NodeJoin, "node.join"),
];

/// An operation or a permission: what a `[[deny]]` can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// A broker operation.
    Operation(Operation),
    /// An admin permission.
    Permission(Permission),
}

impl Operation {
    /// Parses an operation name such as `transit.decrypt`.
    pub fn parse(text: &str) -> Option<Self> {
        OPERATIONS.iter().find(|(_, n)| *n == text).map(|(o, _)| *o)
    }

    /// The operation's name.
    pub fn as_str(self) -> &'static str {
        OPERATIONS
            .iter()
            .find(|(o, _)| *o == self)
            .map_or("", |(_, n)| n)
    }
}

impl Permission {
    /// Parses a permission name such as `tenants.erase`.
    pub fn parse(text: &str) -> Option<Self> {
        PERMISSIONS
            .iter()
            .find(|(_, n)| *n == text)
            .map(|(p, _)| *p)
    }

    /// The permission's name.
    pub fn as_str(self) -> &'static str {
        PERMISSIONS
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("", |(_, n)| n)
    }

    /// Every permission name, for error messages.
    pub fn names() -> impl Iterator<Item = &'static str> {
        PERMISSIONS.iter().map(|(_, n)| *n)
    }

    /// The permissions that act on one tenant: what a role limited to tenants, or a
    /// break-glass grant, can give. `keys.rotate` is among them for tenant keys only;
    /// rotating the root key concerns no tenant, so no tenant-limited role covers it.
    pub const PER_TENANT: [Permission; 8] = [
        Permission::SecretsReadMetadata,
        Permission::SecretsWrite,
        Permission::SecretsDelete,
        Permission::KeysRotate,
        Permission::TenantsErase,
        Permission::TenantsExport,
        Permission::ApiKeysIssue,
        Permission::ApiKeysRevoke,
    ];

    /// Whether the permission acts on one tenant (see [`Permission::PER_TENANT`]).
    pub fn per_tenant(self) -> bool {
        Self::PER_TENANT.contains(&self)
    }
}

impl Action {
    /// Parses an operation or permission name.
    pub fn parse(text: &str) -> Option<Self> {
        Operation::parse(text)
            .map(Self::Operation)
            .or_else(|| Permission::parse(text).map(Self::Permission))
    }
}

/// Every operation name, for error messages.
pub(crate) fn operation_names() -> impl Iterator<Item = &'static str> {
    OPERATIONS.iter().map(|(_, n)| *n)
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Operation(o) => o.fmt(f),
            Self::Permission(p) => p.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (op, name) in OPERATIONS {
            assert_eq!(Operation::parse(name), Some(op));
            assert_eq!(op.as_str(), name);
        }
        for (p, name) in PERMISSIONS {
            assert_eq!(Permission::parse(name), Some(p));
            assert_eq!(p.as_str(), name);
        }
        assert_eq!(
            Action::parse("lease"),
            Some(Action::Operation(Operation::Lease))
        );
        assert_eq!(
            Action::parse("seal"),
            Some(Action::Permission(Permission::Seal))
        );
        assert_eq!(Action::parse("decrypt"), None);
    }
}
