//! Compiles rbuild's own `.proto` descriptions of BuildKit's control and session APIs with
//! protox (no protoc binary) and tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/control.proto",
        "proto/fsutil.proto",
        "proto/session.proto",
        "proto/secrets.proto",
        "proto/health.proto",
        "proto/gateway.proto",
        "proto/ssh.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_transport(false)
        .include_file("protos.rs")
        .bytes(".moby.buildkit.v1.SolveRequest.Definition")
        .bytes(".moby.buildkit.v1.frontend.SolveRequest.Definition")
        .bytes(".fsutil.types.Packet.data")
        .bytes(".moby.filesync.v1.BytesMessage.data")
        .compile_fds(descriptors)?;
    Ok(())
}
