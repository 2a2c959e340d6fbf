//! keygate's integration and end-to-end tests, one module a subject, built as one test binary:
//! a binary per file linked keygate's harness 36 times over — a gigabyte of disk and minutes of
//! linking on a 2-core CI machine. Run one subject with a filter, e.g.
//! `cargo nextest run -p keygate-tests -E 'test(/^mirror_auth::/)'`.

// Helpers shared by the modules of one subject.
mod etcdctl_common;
mod mirror_common;
mod plugins_common;
mod tenant_world;
mod watch_faults_common;

mod bad_input;
mod discovery;
mod etcdctl_e2e_cluster;
mod etcdctl_e2e_kv;
mod failover;
mod grpc_differential;
mod grpc_differential_random;
mod grpc_differential_txn;
mod grpc_health;
mod harness;
mod http2;
mod identity;
mod json_clients;
mod json_gateway;
mod keygate_process;
mod lease_coalescing;
mod mirror_auth;
mod mirror_consistency;
mod mirror_differential;
mod mirror_faults;
mod mirror_list_cache;
mod mirror_rewind;
mod node_client;
mod plugin_reload;
mod plugins;
mod prefix_metrics;
mod tenant_differential;
mod tenant_isolation;
mod tenant_isolation_leases;
mod tenant_quotas;
mod tenant_streams;
mod tls;
mod tls_etcdctl;
mod watch_conformance;
mod watch_failover;
mod watch_faults;
mod watch_faults_leader;
mod watch_mirror_loading;
mod watch_no_leader;
