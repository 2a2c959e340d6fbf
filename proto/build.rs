//! Compiles the etcd .proto files with protox (no system protoc) into tonic code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "etcd/rpc.proto",
        "etcd/v3lock.proto",
        "etcd/v3election.proto",
    ];
    for f in [
        "etcd/rpc.proto",
        "etcd/kv.proto",
        "etcd/auth.proto",
        "etcd/v3lock.proto",
        "etcd/v3election.proto",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["etcd"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
