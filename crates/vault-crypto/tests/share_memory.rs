//! A share that cannot get locked memory is this host's failure, not the share's: the
//! custodian is not told to check for a typo. Alone in its test binary, because it
//! exhausts the process's vault pool.
#![allow(clippy::unwrap_used, clippy::panic)]

use vault_crypto::arena::{Pool, set_budget};
use vault_crypto::shamir::{Share, split};
use vault_crypto::{CryptoError, UnsealKey};

#[test]
fn a_share_without_locked_memory_is_not_called_malformed() {
    let key = UnsealKey::generate(1).unwrap();
    let text = split(&key, 2, 3).unwrap()[0].encode();
    set_budget(Pool::Vault, 1);
    let mut held = Vec::new();
    let refused = loop {
        match Share::parse(&text) {
            Ok(share) => held.push(share),
            Err(e) => break e,
        }
        assert!(held.len() < 100_000, "the budget never ran out");
    };
    assert!(
        matches!(
            refused,
            CryptoError::PoolExhausted {
                pool: Pool::Vault,
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(!refused.to_string().contains("typo"), "{refused}");
}
