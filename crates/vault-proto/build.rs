//! Compiles proto/vault/v1/*.proto with protox (no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/vault/v1/common.proto",
        "proto/vault/v1/apikeys.proto",
        "proto/vault/v1/broker.proto",
        "proto/vault/v1/admin.proto",
    ];
    let descriptors = protox::compile(protos, ["proto"])?;
    // Kept for server reflection and for tests that inspect the API's shape.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("vault_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Connections are built by the daemon and client with their own mTLS config.
        .build_transport(false)
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
