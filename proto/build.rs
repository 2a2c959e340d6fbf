//! Compiles the etcd .proto files, and gRPC's health service that etcd serves beside them, with
//! protox (no system protoc) into tonic code, and the etcd ones into proto3-JSON serde impls
//! (pbjson) for the HTTP/JSON gateway. The JSON keeps the original proto field names
//! ("create_revision", "ID", "TTL"), as etcd's grpc-gateway emits them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "etcd/rpc.proto",
        "etcd/v3lock.proto",
        "etcd/v3election.proto",
        "grpc/health.proto",
    ];
    for f in [
        "etcd/rpc.proto",
        "etcd/kv.proto",
        "etcd/auth.proto",
        "etcd/v3lock.proto",
        "etcd/v3election.proto",
        "grpc/health.proto",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["etcd", "grpc"])?;
    let descriptors = prost::Message::encode_to_vec(&fds);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        // etcd's gateway ignores fields it does not know.
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}
