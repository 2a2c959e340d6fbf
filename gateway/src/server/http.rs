//! The HTTP endpoints of the client port: /health and /version as etcd answers them (asked of a
//! healthy member), /livez and /readyz for keygate itself, /metrics, and (when configured)
//! /debug/identity.

use super::upstream_http::upstream_get;
use crate::identity::ConnectionInfo;
use crate::pipeline::Gateway;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use std::sync::Arc;
use std::time::Duration;
use tonic::body::Body;

/// How long a member may take to answer /health or /version.
const UPSTREAM_HTTP_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct HttpEndpoints {
    gw: Arc<Gateway>,
    debug: bool,
}

impl HttpEndpoints {
    pub fn new(gw: Arc<Gateway>, debug: bool) -> HttpEndpoints {
        HttpEndpoints { gw, debug }
    }

    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
        let known = matches!(
            req.uri().path(),
            "/health" | "/version" | "/livez" | "/readyz" | "/metrics" | "/debug/identity"
        );
        // Like Go's mux: an unknown path is 404 whatever the method.
        if !known {
            return text(StatusCode::NOT_FOUND, "404 page not found\n");
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        }
        match req.uri().path() {
            "/health" => self.health(req.uri().query()).await,
            "/version" => self.version().await,
            "/livez" => text(StatusCode::OK, "ok"),
            "/readyz" => self.readyz(),
            "/debug/identity" if self.debug => self.debug_identity(&req),
            "/metrics" => Response::builder()
                .header(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .body(Body::new(Full::new(Bytes::from(self.gw.metrics.render()))))
                .unwrap_or_default(),
            _ => text(StatusCode::NOT_FOUND, "404 page not found\n"),
        }
    }

    /// etcd's health answer from a healthy member; false when none is healthy. The query goes
    /// along: etcd reads `exclude=<alarm>` (e.g. a cluster out of space may still be called
    /// healthy) and `serializable=true` from it.
    async fn health(&self, query: Option<&str>) -> Response<Body> {
        let path = match query {
            Some(query) => format!("/health?{query}"),
            None => "/health".to_string(),
        };
        if let Some(resp) = self.ask_member(&path).await {
            return resp;
        }
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"health":"false","reason":"keygate: no healthy etcd member"}"#,
        )
    }

    async fn version(&self) -> Response<Body> {
        match self.ask_member("/version").await {
            Some(resp) => resp,
            None => json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"etcdserver":"","etcdcluster":""}"#,
            ),
        }
    }

    /// Ready when keygate can reach a healthy member.
    fn readyz(&self) -> Response<Body> {
        if self.gw.pool.any_healthy() {
            text(StatusCode::OK, "ok")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "keygate: no healthy etcd member",
            )
        }
    }

    /// The caller's identity as keygate works it out for gRPC requests (debug_endpoints only).
    fn debug_identity(&self, req: &Request<Body>) -> Response<Body> {
        let conn = req.extensions().get::<ConnectionInfo>();
        let mut headers = req.headers().clone();
        let (status, body) = match self.gw.identity.identify(&mut headers, conn, false) {
            Ok(identity) => (StatusCode::OK, identity.to_json()),
            Err(e) => (
                StatusCode::UNAUTHORIZED,
                serde_json::json!({ "error": e.message() }),
            ),
        };
        let mut resp = Response::new(Body::new(Full::new(Bytes::from(body.to_string()))));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        resp
    }

    async fn ask_member(&self, path: &str) -> Option<Response<Body>> {
        let member = self.gw.pool.pick().ok()?;
        let url = format!("{}{path}", member.url().trim_end_matches('/'));
        let fetch = upstream_get(&url, self.gw.pool.tls());
        let (parts, body) = tokio::time::timeout(UPSTREAM_HTTP_TIMEOUT, fetch)
            .await
            .ok()??;
        let mut builder = Response::builder().status(parts.status);
        if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder.body(Body::new(Full::new(body))).ok()
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::new(Full::new(Bytes::from_static(body.as_bytes()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = text(status, body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}
