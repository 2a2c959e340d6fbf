//! etcd's grpc-gateway on the client port: `/v3/*` (and `/v3beta/*`, which etcd 3.5 still
//! answers) as JSON over HTTP/1.1 or HTTP/2. Each request is decoded into the prost message of
//! its RPC and handed to the same gRPC service method a gRPC client reaches, so identity,
//! the mirror, the watch hub, forwarding, errors and metrics are the gRPC ones: there is one
//! request path. Only the encoding differs.

mod codec;
mod routes;
mod stream;

use crate::identity::ConnectionInfo;
use crate::pipeline::Gateway;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::{Extensions, Status, Streaming};

use super::grpc::{auth, cluster, concurrency, kv, lease, maintenance, watch};

/// The path prefixes etcd 3.5's gateway answers (`/v3alpha` is gone since 3.5).
const PREFIXES: [&str; 2] = ["/v3/", "/v3beta/"];

/// The gRPC services, called directly with decoded requests.
pub struct JsonGateway {
    kv: kv::KvService,
    watch: watch::WatchService,
    lease: lease::LeaseService,
    cluster: cluster::ClusterService,
    maintenance: maintenance::MaintenanceService,
    auth: auth::AuthService,
    lock: concurrency::LockService,
    election: concurrency::ElectionService,
    /// etcd's gRPC receive limit, which its gateway's requests are held to as well.
    max_recv: usize,
}

/// Whether a path belongs to the JSON gateway.
pub fn serves(path: &str) -> bool {
    PREFIXES.iter().any(|p| path.starts_with(p))
}

impl JsonGateway {
    pub fn new(gw: &Arc<Gateway>, max_recv: usize) -> JsonGateway {
        JsonGateway {
            kv: kv::KvService(gw.clone()),
            watch: watch::WatchService(gw.clone()),
            lease: lease::LeaseService(gw.clone()),
            cluster: cluster::ClusterService(gw.clone()),
            maintenance: maintenance::MaintenanceService(gw.clone()),
            auth: auth::AuthService(gw.clone()),
            lock: concurrency::LockService(gw.clone()),
            election: concurrency::ElectionService(gw.clone()),
            max_recv,
        }
    }

    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let path = req.uri().path();
        let Some(rpc) = PREFIXES.iter().find_map(|p| path.strip_prefix(p)) else {
            return codec::plain_error(StatusCode::NOT_FOUND);
        };
        if !routes::exists(rpc) {
            return codec::plain_error(StatusCode::NOT_FOUND);
        }
        if req.method() == Method::OPTIONS {
            // etcd answers CORS preflights for every gateway path.
            return codec::json_response(StatusCode::OK, bytes::Bytes::new());
        }
        if req.method() != Method::POST {
            return codec::plain_error(StatusCode::METHOD_NOT_ALLOWED);
        }
        let rpc = rpc.to_string();
        let call = Call::new(req, self.max_recv);
        self.route(&rpc, call).await
    }
}

/// One JSON request on its way to a service: what becomes the gRPC request's metadata and
/// extensions, and the body still to be read.
pub struct Call {
    metadata: MetadataMap,
    extensions: Extensions,
    body: Body,
    max_recv: usize,
}

impl Call {
    fn new(req: Request<Body>, max_recv: usize) -> Call {
        let (parts, body) = req.into_parts();
        let mut extensions = Extensions::default();
        if let Some(conn) = parts.extensions.get::<ConnectionInfo>() {
            extensions.insert(conn.clone());
        }
        Call {
            metadata: MetadataMap::from_headers(metadata_from(&parts.headers)),
            extensions,
            body,
            max_recv,
        }
    }

    /// A unary request: the body's first JSON value, held to etcd's size limit.
    async fn decode<T>(self) -> Result<tonic::Request<T>, Response<Body>>
    where
        T: prost::Message + DeserializeOwned + Default,
    {
        // JSON and base64 take more room than protobuf; anything past this could not fit.
        let cap = self.max_recv.saturating_mul(4).saturating_add(64 * 1024);
        let body = match Limited::new(self.body, cap).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return Err(codec::error_response(&too_large(cap + 1, self.max_recv)));
            }
        };
        let message: T = codec::decode(&body).map_err(|s| codec::error_response(&s))?;
        let size = message.encoded_len();
        if size > self.max_recv {
            return Err(codec::error_response(&too_large(size, self.max_recv)));
        }
        Ok(tonic::Request::from_parts(
            self.metadata,
            self.extensions,
            message,
        ))
    }

    /// A client stream: the first message decoded now, so that a bad one is answered with
    /// an error as etcd's gateway does; the rest as they arrive.
    async fn open_stream<T>(self) -> Result<tonic::Request<Streaming<T>>, Response<Body>>
    where
        T: prost::Message + DeserializeOwned + Default + Send + 'static,
    {
        let mut values = stream::JsonValues::new(self.body, self.max_recv.saturating_mul(4));
        let first = match values.next::<T>().await {
            Some(Ok(first)) => Some(first),
            // grpc-gateway returns a stream's decoding error unwrapped: gRPC's UNKNOWN.
            Some(Err(status)) => {
                let status = Status::unknown(status.message());
                return Err(codec::error_response(&status));
            }
            None => None,
        };
        let messages = stream::client_stream(first, values, self.max_recv);
        Ok(tonic::Request::from_parts(
            self.metadata,
            self.extensions,
            messages,
        ))
    }
}

fn too_large(size: usize, limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "grpc: received message larger than max ({size} vs. {limit})"
    ))
}

/// What grpc-gateway v1 passes on as gRPC metadata: `Authorization` (which etcd reads as its
/// token when `token` is absent) and `Grpc-Metadata-*` headers without their prefix.
fn metadata_from(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        if name == http::header::AUTHORIZATION {
            out.append(name.clone(), value.clone());
        } else if let Some(rest) = name.as_str().strip_prefix("grpc-metadata-") {
            if let Ok(name) = http::HeaderName::from_bytes(rest.as_bytes()) {
                out.append(name, value.clone());
            }
        }
    }
    out
}
