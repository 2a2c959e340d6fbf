//! Splits each request on the client port: gRPC goes to the etcd services, /v3 JSON to the
//! gateway (which calls the same services), /v2 to the members, everything else to the HTTP
//! endpoints. Also puts tonic's own errors into the words etcd's clients expect.

use super::grpc::kv::KvService;
use super::http::HttpEndpoints;
use super::json::{self, JsonGateway};
use super::unary::DirectKv;
use super::v2::{self, V2Proxy};
use crate::config::ServerConfig;
use crate::errors;
use crate::h2::server::{Call, Collected, Handler, Reply, RequestHead, Route};
use crate::identity::ConnectionInfo;
use crate::pipeline::Gateway;
use futures::future::BoxFuture;
use http::{HeaderMap, Request, Response};
use std::sync::Arc;
use tonic::body::Body;
use tonic::service::Routes;
use tower::ServiceExt;

#[derive(Clone)]
pub struct Dispatch {
    grpc: Option<Routes>,
    /// KV's unary calls, served from the body the connection collects.
    direct: Option<DirectKv>,
    /// The JSON gateway and v2 forwarding; not on the metrics port.
    json: Option<Arc<JsonGateway>>,
    v2: Option<V2Proxy>,
    http: HttpEndpoints,
}

impl Dispatch {
    pub fn new(gw: Arc<Gateway>, routes: Routes, config: &ServerConfig) -> Dispatch {
        Dispatch {
            grpc: Some(routes),
            direct: Some(DirectKv::new(
                KvService(gw.clone()),
                config.max_recv_message_bytes(),
            )),
            json: Some(Arc::new(JsonGateway::new(
                &gw,
                config.max_recv_message_bytes(),
            ))),
            v2: Some(V2Proxy::new(gw.clone(), config.v2_enabled)),
            http: HttpEndpoints::new(gw, config.debug_endpoints),
        }
    }

    /// The same HTTP endpoints without gRPC, for the metrics port.
    pub fn http_only(&self) -> Dispatch {
        Dispatch {
            grpc: None,
            direct: None,
            json: None,
            v2: None,
            http: self.http.clone(),
        }
    }

    /// What serves one connection's requests; every request carries what the connection
    /// proved.
    pub fn for_connection(&self, info: ConnectionInfo) -> Arc<ForConnection> {
        Arc::new(ForConnection {
            dispatch: self.clone(),
            info,
        })
    }

    /// The rarer routes are boxed, so the future of every request stays small.
    pub async fn handle(self, req: Request<Body>) -> Response<Body> {
        match &self.grpc {
            Some(routes) if is_grpc(req.headers()) => {
                let path = req.uri().path().to_string();
                match Box::pin(routes.clone().oneshot(req)).await {
                    Ok(resp) => etcd_wording(resp, &path),
                    Err(never) => match never {},
                }
            }
            _ => {
                let path = req.uri().path();
                if let (Some(gateway), true) = (&self.json, json::serves(path)) {
                    return Box::pin(gateway.handle(req)).await;
                }
                if let (Some(proxy), true) = (&self.v2, v2::serves(path)) {
                    return Box::pin(proxy.handle(req)).await;
                }
                Box::pin(self.http.handle(req)).await
            }
        }
    }
}

/// One connection's requests, as its HTTP/2 layer hands them over.
pub struct ForConnection {
    dispatch: Dispatch,
    info: ConnectionInfo,
}

impl ForConnection {
    /// A request from the HTTP/1 side, with what the connection proved.
    pub fn handle(&self, mut req: Request<Body>) -> BoxFuture<'static, Response<Body>> {
        req.extensions_mut().insert(self.info.clone());
        Box::pin(self.dispatch.clone().handle(req))
    }
}

impl Handler for ForConnection {
    fn route(&self, head: &RequestHead) -> Route {
        match &self.dispatch.direct {
            Some(direct) if DirectKv::serves(head) => Route::Collect {
                limit: direct.limit(),
            },
            _ => Route::Bridge,
        }
    }

    fn collected(&self, head: RequestHead, body: Collected) -> Call {
        let Some(direct) = &self.dispatch.direct else {
            return Call {
                reply: Box::pin(std::future::ready(Reply::Status(
                    tonic::Status::unimplemented(""),
                ))),
                inline: true,
            };
        };
        match direct.call(head, body, &self.info) {
            Ok(call) => call,
            Err(not_served) => {
                let response = self.handle(*not_served);
                Call {
                    reply: Box::pin(async move { Reply::Http(response.await) }),
                    inline: false,
                }
            }
        }
    }

    fn bridge(&self, req: Request<Body>) -> BoxFuture<'static, Response<Body>> {
        self.handle(req)
    }
}

pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Rewrites the trailers-only errors tonic produces before a handler runs (an oversized
/// request, an unknown method) into etcd's (grpc-go's) codes and messages.
fn etcd_wording(resp: Response<Body>, path: &str) -> Response<Body> {
    let Some(code) = resp.headers().get("grpc-status") else {
        return resp;
    };
    let replacement = match code.as_bytes() {
        b"11" => tonic::Status::from_header_map(resp.headers())
            .and_then(|s| errors::etcd_decode_error(&s)),
        b"12" => crate::method::unknown(path).map(tonic::Status::from),
        _ => None,
    };
    match replacement {
        Some(status) => status.into_http(),
        None => resp,
    }
}
