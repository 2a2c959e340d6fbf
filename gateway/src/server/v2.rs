//! `/v2/*` on the client port: etcd's v2 API (keys, members, stats, machines), forwarded as-is
//! to a member, for `ETCDCTL_API=2 etcdctl` and older clients. A member that does not serve v2
//! (etcd 3.5 without --enable-v2) answers with its own 404, which passes through; with
//! `server.v2_enabled = false` keygate answers that same 404 itself.

use super::upstream_http::upstream_send;
use crate::pipeline::Gateway;
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use std::sync::Arc;
use tonic::body::Body;

/// Whether a path belongs to the v2 API.
pub fn serves(path: &str) -> bool {
    path == "/v2" || path.starts_with("/v2/")
}

/// A v2 request as authorization will see it: what it does, to which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Request {
    /// get, watch, set, create, mkdir, create_in_order, update, delete, members, stats, ...
    pub operation: &'static str,
    /// The key (for /v2/keys), without the /v2/keys prefix; "/" for the root.
    pub key: Option<String>,
}

/// Describes a v2 request from its method, path and query.
pub fn describe(method: &Method, uri: &Uri) -> V2Request {
    let path = uri.path();
    let query = uri.query().unwrap_or("");
    let flag = |name: &str, value: &str| {
        query
            .split('&')
            .any(|kv| kv.split_once('=') == Some((name, value)))
    };
    if let Some(key) = path.strip_prefix("/v2/keys") {
        let key = if key.is_empty() { "/" } else { key };
        let operation = match *method {
            Method::GET | Method::HEAD if flag("wait", "true") => "watch",
            Method::GET | Method::HEAD => "get",
            Method::POST => "create_in_order",
            Method::DELETE => "delete",
            Method::PUT if flag("dir", "true") => "mkdir",
            Method::PUT if flag("prevExist", "false") => "create",
            Method::PUT if flag("prevExist", "true") || query.contains("prevValue=") => "update",
            Method::PUT => "set",
            _ => "other",
        };
        return V2Request {
            operation,
            key: Some(key.to_string()),
        };
    }
    let operation = match path.trim_start_matches("/v2/").split('/').next() {
        Some("members") if method == Method::GET => "members",
        Some("members") => "member_change",
        Some("stats") => "stats",
        Some("machines") => "machines",
        _ => "other",
    };
    V2Request {
        operation,
        key: None,
    }
}

#[derive(Clone)]
pub struct V2Proxy {
    gw: Arc<Gateway>,
    enabled: bool,
}

impl V2Proxy {
    pub fn new(gw: Arc<Gateway>, enabled: bool) -> V2Proxy {
        V2Proxy { gw, enabled }
    }

    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
        if !self.enabled {
            return not_found();
        }
        let described = describe(req.method(), req.uri());
        tracing::debug!(operation = described.operation, key = ?described.key, "v2 request");
        // Authorizers judge etcd v3 requests; v2 would go around them (and around namespaces),
        // so with authorizers configured it is refused as etcd refuses an unauthenticated one.
        if self.gw.policy.is_some() {
            return unauthorized();
        }
        let Ok(member) = self.gw.pool.pick() else {
            return unavailable();
        };
        let Ok(base) = member.url().parse::<Uri>() else {
            return unavailable();
        };
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut upstream = Request::new(body);
        *upstream.method_mut() = parts.method.clone();
        *upstream.uri_mut() = match path.parse() {
            Ok(uri) => uri,
            Err(_) => return not_found(),
        };
        *upstream.headers_mut() = end_to_end(&parts.headers);
        match upstream_send(&base, self.gw.pool.tls(), upstream).await {
            Some(resp) => {
                let (parts, body) = resp.into_parts();
                let mut out = Response::new(Body::new(body));
                *out.status_mut() = parts.status;
                *out.headers_mut() = end_to_end(&parts.headers);
                out
            }
            None => {
                self.gw.pool.report_failure(&member);
                unavailable()
            }
        }
    }
}

/// The headers of a message without the hop-by-hop ones.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for h in [
        header::CONNECTION,
        header::HOST,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        out.remove(h);
    }
    out.remove("keep-alive");
    out
}

/// What etcd 3.5 without --enable-v2 answers on /v2 (Go's http.NotFound).
fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "404 page not found\n")
}

/// etcd v2's answer to a request its auth does not allow (error 110).
fn unauthorized() -> Response<Body> {
    let body = r#"{"errorCode":110,"message":"The request requires user authentication","cause":"Insufficient credentials","index":0}"#;
    let mut resp = text(StatusCode::UNAUTHORIZED, "");
    *resp.body_mut() = Body::new(Full::new(Bytes::from_static(body.as_bytes())));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn unavailable() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "keygate: no etcd member reachable for /v2\n",
    )
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::new(Full::new(Bytes::from_static(body.as_bytes()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_v2_requests() {
        let d = |m: Method, u: &str| describe(&m, &u.parse().expect("uri"));
        assert_eq!(d(Method::GET, "/v2/keys/a/b").operation, "get");
        assert_eq!(d(Method::GET, "/v2/keys/a/b").key.as_deref(), Some("/a/b"));
        assert_eq!(d(Method::GET, "/v2/keys/a?wait=true").operation, "watch");
        assert_eq!(
            d(Method::PUT, "/v2/keys/a?prevExist=false").operation,
            "create"
        );
        assert_eq!(d(Method::PUT, "/v2/keys/d?dir=true").operation, "mkdir");
        assert_eq!(d(Method::PUT, "/v2/keys/a").operation, "set");
        assert_eq!(d(Method::DELETE, "/v2/keys/a").operation, "delete");
        assert_eq!(d(Method::GET, "/v2/keys").key.as_deref(), Some("/"));
        assert_eq!(d(Method::GET, "/v2/members").operation, "members");
        assert_eq!(d(Method::GET, "/v2/stats/self").key, None);
    }
}
