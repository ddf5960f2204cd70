use super::*;

const MINIMAL: &str = r#"
    [tls]
    cert = "server.pem"
    key = "server.key"
    client_ca = "/etc/ca.pem"
    [storage]
    path = "vault.redb"
    [policy]
    dir = "policies"
    [audit]
    path = "audit.jsonl"
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("vaultd.toml"), text, Path::new("/etc/vaultd"))
}

#[test]
fn minimal_file_gets_safe_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listen.http.ip().to_string(), "127.0.0.1");
    assert_eq!(c.tls.cert, Path::new("/etc/vaultd/server.pem"));
    assert_eq!(c.tls.client_ca.as_deref(), Some(Path::new("/etc/ca.pem")));
    assert_eq!(c.audit.fsync, vault_audit::FsyncPolicy::Always);
    assert_eq!(c.identities, IdentitySource::SpiffeOnly);
    assert_eq!(c.leases.default_ttl, Duration::from_secs(60));
    assert_eq!(c.seal.max_grace, 30 * DAY);
    assert_eq!(c.seal.default_grace, DAY);
    assert_eq!(c.tls.crl_expiry, CrlExpiry::Enforce);
    assert_eq!(c.leases.sessions_per_identity, 64);
    assert_eq!(c.keys.tenant_key_cache, 1024);
}

#[test]
fn missing_client_ca_names_the_key() {
    let err = parse(&MINIMAL.replace("client_ca = \"/etc/ca.pem\"", "")).unwrap_err();
    assert!(
        err.to_string().starts_with("tls.client_ca is required"),
        "{err}"
    );
}

#[test]
fn bad_values_name_their_key() {
    for (from, to, key) in [
        ("[storage]", "[storage]\nbogus = 1", "bogus"),
        ("[audit]", "[audit]\nfsync = \"never\"", "audit.fsync"),
        (
            "[audit]",
            "[audit]\nwrite_deadline = \"2 seconds-ish\"",
            "audit.write_deadline",
        ),
        (
            "[audit]",
            "[audit]\nwrite_deadline = \"0ms\"",
            "audit.write_deadline",
        ),
        (
            "[tls]",
            "[listen]\ngrpc = \"localhost\"\n[tls]",
            "listen.grpc",
        ),
        (
            "[tls]",
            "[leases]\nmax_total = 0\n[tls]",
            "leases.max_total",
        ),
        ("[tls]", "node = \"a b\"\n[tls]", "node"),
        (
            "[audit]",
            "[audit]\nmin_free = \"5 parsecs\"",
            "audit.min_free",
        ),
        (
            "[audit]",
            "[audit]\nmin_free = \"99999999999GiB\"",
            "audit.min_free",
        ),
        (
            "[audit]",
            "[audit]\nrefusals_per_second = 0",
            "audit.refusals_per_second",
        ),
        (
            "[tls]",
            "[seal]\nmax_grace = \"1h\"\ndefault_grace = \"2h\"\n[tls]",
            "seal.default_grace",
        ),
        (
            "[tls]",
            "[seal]\nmax_grace = \"400d\"\n[tls]",
            "seal.max_grace",
        ),
        (
            "[tls]",
            "[keys]\ntenant_rotate_after = 0\n[tls]",
            "keys.tenant_rotate_after",
        ),
        (
            "[tls]",
            "[keys]\ntenant_key_cache = 0\n[tls]",
            "keys.tenant_key_cache",
        ),
        (
            "client_ca = \"/etc/ca.pem\"",
            "client_ca = \"/etc/ca.pem\"\ncrl_expiry = \"sometimes\"",
            "tls.crl_expiry",
        ),
        (
            "[tls]",
            "[limits]\nrequest_timeout = \"1h\"\n[tls]",
            "limits.request_timeout",
        ),
    ] {
        let err = parse(&MINIMAL.replace(from, to)).unwrap_err().to_string();
        assert!(err.contains(key), "{err} should name {key}");
    }
}

#[test]
fn sizes_parse() {
    for (text, bytes) in [
        ("0", 0),
        ("4096", 4096),
        ("64MiB", 64 << 20),
        ("1 GiB", 1 << 30),
        ("10MB", 10_000_000),
    ] {
        assert_eq!(size("k", Some(text), 1).unwrap(), bytes, "{text}");
    }
    assert_eq!(size("k", None, 7).unwrap(), 7);
    for bad in ["", "MiB", "-1", "1.5GiB", "1 TiB", "1e9"] {
        assert!(size("k", Some(bad), 1).is_err(), "{bad}");
    }
}

#[test]
fn durations_parse_or_name_their_key() {
    let limits = (Duration::ZERO, DAY);
    let d = |text| duration("k", Some(text), SECOND, limits);
    assert_eq!(d("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(d("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(duration("k", None, SECOND, limits).unwrap(), SECOND);
    for bad in ["", "5", "m", "-1s", "99999999999999999999d", "2d"] {
        assert!(d(bad).unwrap_err().to_string().starts_with("k: "), "{bad}");
    }
}

#[test]
fn the_postgres_engine_takes_its_settings_from_storage_postgres() {
    let postgres = r#"[storage]
    engine = "postgres"
    [storage.postgres]
    connect = "host=db.internal user=vaultd dbname=vaultd"
    ca = "pg-ca.pem"
    client_cert = "pg.pem"
    client_key = "pg.key"
    timeout = "2s""#;
    let c = parse(&MINIMAL.replace("[storage]\n    path = \"vault.redb\"", postgres)).unwrap();
    let StorageConfig::Postgres(settings) = &c.storage else {
        panic!("{:?}", c.storage);
    };
    assert_eq!(
        settings.connect,
        "host=db.internal user=vaultd dbname=vaultd"
    );
    assert_eq!(settings.ca, Path::new("/etc/vaultd/pg-ca.pem"));
    assert_eq!(
        settings.client_cert,
        Some((
            PathBuf::from("/etc/vaultd/pg.pem"),
            PathBuf::from("/etc/vaultd/pg.key")
        ))
    );
    assert_eq!(settings.pool_size, 8);
    assert_eq!(settings.timeout, Duration::from_secs(2));
    assert_eq!(c.storage.redb_path(), None);
    assert_eq!(
        parse(MINIMAL).unwrap().storage,
        StorageConfig::Redb(PathBuf::from("/etc/vaultd/vault.redb"))
    );

    for (storage, key) in [
        ("[storage]\n    engine = \"etcd\"", "storage.engine"),
        ("[storage]\n    engine = \"postgres\"", "storage.postgres"),
        (
            "[storage]\n    path = \"v.redb\"\n    [storage.postgres]\n    ca = \"c\"",
            "storage.postgres",
        ),
        (
            "[storage]\n    engine = \"postgres\"\n    path = \"v.redb\"",
            "storage.path",
        ),
        (
            "[storage]\n    engine = \"postgres\"\n    [storage.postgres]\n    ca = \"c\"",
            "storage.postgres.connect",
        ),
        (
            "[storage]\n    engine = \"postgres\"\n    [storage.postgres]\n    connect = \"host=db\"",
            "storage.postgres.ca",
        ),
        (
            "[storage]\n    engine = \"postgres\"\n    [storage.postgres]\n    connect = \"host=db\"\n    ca = \"c\"\n    client_cert = \"x\"",
            "storage.postgres.client_cert",
        ),
        (
            "[storage]\n    engine = \"postgres\"\n    [storage.postgres]\n    connect = \"host=db\"\n    ca = \"c\"\n    pool_size = 0",
            "storage.postgres.pool_size",
        ),
    ] {
        let err =
            parse(&MINIMAL.replace("[storage]\n    path = \"vault.redb\"", storage)).unwrap_err();
        assert!(err.to_string().starts_with(key), "{storage}: {err}");
    }
}

#[test]
fn a_password_in_the_postgres_connect_string_is_refused_and_never_repeated() {
    for connect in [
        "host=db user=vaultd password=hunter2-secret dbname=vaultd",
        "postgresql://vaultd:hunter2-secret@db/vaultd",
    ] {
        let storage = format!(
            "[storage]\n    engine = \"postgres\"\n    [storage.postgres]\n    connect = \"{connect}\"\n    ca = \"c\""
        );
        let err = parse(&MINIMAL.replace("[storage]\n    path = \"vault.redb\"", &storage))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("storage.postgres.connect"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    let settings = crate::storage::postgres::PostgresSettings {
        connect: "host=db password=hunter2-secret dbname=vaultd".into(),
        ca: "c".into(),
        client_cert: None,
        password_file: None,
        pool_size: 1,
        connect_timeout: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        catch_up: Duration::from_secs(1),
    };
    let shown = format!("{settings:?} {}", settings.describe());
    assert!(
        !shown.contains("hunter2") && shown.contains("vaultd on db"),
        "{shown}"
    );
}

#[test]
fn cluster_lists_exact_node_identities_and_where_to_join() {
    let postgres = "[storage]\n    engine = \"postgres\"\n    [storage.postgres]\n    \
                    connect = \"host=db\"\n    ca = \"pg-ca.pem\"";
    let with = |cluster: &str| {
        parse(&format!(
            "{}\n[cluster]\n{cluster}",
            MINIMAL.replace("[storage]\n    path = \"vault.redb\"", postgres)
        ))
    };
    let c = with(
        "nodes = [\"spiffe://b.example/vaultd/n2\"]\n[cluster.join]\n\
         endpoints = [\"https://n2:8200\"]\nca = \"ca.pem\"\ncert = \"n1.pem\"\nkey = \"n1.key\"",
    )
    .unwrap();
    assert_eq!(c.cluster.nodes.len(), 1);
    assert_eq!(c.cluster.nodes[0].as_str(), "spiffe://b.example/vaultd/n2");
    let join = c.cluster.join.unwrap();
    assert_eq!(join.cert, Path::new("/etc/vaultd/n1.pem"));
    assert_eq!(join.retry, Duration::from_secs(1));
    assert_eq!(parse(MINIMAL).unwrap().cluster, ClusterConfig::default());

    for (cluster, key) in [
        ("nodes = [\"spiffe://b.example/vaultd/*\"]", "cluster.nodes"),
        ("nodes = [\"node-2\"]", "cluster.nodes"),
        ("[cluster.join]\nendpoints = []", "cluster.join.endpoints"),
        (
            "[cluster.join]\nendpoints = [\"http://n2:8200\"]",
            "cluster.join.endpoints",
        ),
        (
            "[cluster.join]\nendpoints = [\"https://n2:8200\"]\ncert = \"a\"\nkey = \"b\"",
            "cluster.join.ca",
        ),
        ("bogus = 1", "unknown field"),
    ] {
        let err = with(cluster).unwrap_err();
        assert!(err.to_string().contains(key), "{cluster}: {err}");
    }
    // One node alone on a redb file has no cluster to join.
    let err = parse(&format!("{MINIMAL}\n[cluster]\nnodes = []")).unwrap_err();
    assert!(err.to_string().starts_with("cluster:"), "{err}");
}
