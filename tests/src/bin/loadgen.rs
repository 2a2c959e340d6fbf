//! keygate's load generator: etcd directly, `etcd grpc-proxy` and keygate measured in one run.
//! See `docs/benchmarks.md` and `keygate_tests::load`.

fn main() -> anyhow::Result<()> {
    keygate_tests::load::main()
}
