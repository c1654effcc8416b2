//! Compiles every `.proto` file under `proto/` with `protox` (pure Rust, no system `protoc`)
//! and generates the prost messages and tonic client/server code, plus the encoded file
//! descriptor set that gRPC server reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/tandem/admin/v1/admin.proto",
    "proto/tandem/sync/v1/sync.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor = out.join("tandem_descriptor.bin");
    std::fs::write(&descriptor, prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
