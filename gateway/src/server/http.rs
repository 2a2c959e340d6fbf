//! The HTTP endpoints of the client port: /health and /version as etcd answers them (asked of a
//! healthy member), /livez and /readyz for keygate itself, and /metrics.

use crate::pipeline::Gateway;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;
use tonic::body::Body;

/// How long a member may take to answer /health or /version.
const UPSTREAM_HTTP_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct HttpEndpoints {
    gw: Arc<Gateway>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpEndpoints {
    pub fn new(gw: Arc<Gateway>) -> HttpEndpoints {
        let client = Client::builder(TokioExecutor::new()).build_http();
        HttpEndpoints { gw, client }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
        }
        match req.uri().path() {
            "/health" => self.health().await,
            "/version" => self.version().await,
            "/livez" => text(StatusCode::OK, "ok"),
            "/readyz" => self.readyz(),
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

    /// etcd's health answer from a healthy member; false when none is healthy.
    async fn health(&self) -> Response<Body> {
        if let Some(resp) = self.ask_member("/health").await {
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

    async fn ask_member(&self, path: &str) -> Option<Response<Body>> {
        let member = self.gw.pool.pick().ok()?;
        let uri: http::Uri = format!("{}{path}", member.url().trim_end_matches('/'))
            .parse()
            .ok()?;
        let fetch = async {
            let resp = self.client.get(uri).await.ok()?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.ok()?.to_bytes();
            Some((parts, body))
        };
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
