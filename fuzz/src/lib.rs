//! What the fuzz targets share: the `grpc` target's daemon, built once per process.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::OnceLock;

use tempfile::TempDir;
use vault_testkit::fixture::{Fixture, FixtureOptions, OPERATOR};
use vaultd::config::Config;
use vaultd::fuzzing::GrpcHarness;

/// The daemon every `grpc` input is served by, with its files: built on first use
/// from a test fixture (generated PKI, the repo's policies and a test operator role),
/// unsealed, holding the canary secret (plus [`vaultd::fuzzing::GRPC_POLICY`]).
///
/// Its audit records go to `/dev/null` (a character device: written, never kept or
/// synced), and its store to a memory filesystem when there is one, so inputs that
/// write secrets cost no disk sync. The files are left behind when libFuzzer exits.
pub fn grpc_harness() -> &'static GrpcHarness {
    static HARNESS: OnceLock<(TempDir, TempDir, GrpcHarness)> = OnceLock::new();
    let (_, _, harness) = HARNESS.get_or_init(|| {
        let (name, text) = vaultd::fuzzing::GRPC_POLICY;
        let fixture = Fixture::new(&FixtureOptions {
            policies: vec![(name.to_owned(), text.to_owned())],
            ..FixtureOptions::default()
        });
        let mut config = Config::load(&fixture.config).expect("the fixture's configuration loads");
        config.audit.path = "/dev/null".into();
        let shm = Path::new("/dev/shm");
        let state = if shm.is_dir() {
            TempDir::new_in(shm)
        } else {
            TempDir::new()
        }
        .expect("a temporary directory for the store");
        config.storage = vaultd::config::StorageConfig::Redb(state.path().join("vault.redb"));
        let harness = GrpcHarness::new(config, OPERATOR).expect("the fuzzing daemon starts");
        let Fixture { dir, .. } = fixture;
        (dir, state, harness)
    });
    harness
}
