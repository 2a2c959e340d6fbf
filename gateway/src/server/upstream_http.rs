//! HTTP/1.1 to an etcd member's HTTP side: a one-shot GET of /health or /version, and the
//! forwarding of /v2 requests, over TLS for https:// members with the same certificates
//! keygate's gRPC connections use.

use crate::tls::UpstreamTls;
use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

/// GETs `url`; None when the member cannot be reached or answers garbage.
pub async fn upstream_get(
    url: &str,
    tls: Option<&UpstreamTls>,
) -> Option<(http::response::Parts, Bytes)> {
    let uri: http::Uri = url.parse().ok()?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path).body(Empty::<Bytes>::new()).ok()?;
    let resp = upstream_send(&uri, tls, request).await?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some((parts, body))
}

/// Sends `request` (whose URI is only a path) to the member at `base`; the response body
/// streams. Sets Host to the member's address. None when the member cannot be reached.
pub async fn upstream_send<B>(
    base: &http::Uri,
    tls: Option<&UpstreamTls>,
    mut request: Request<B>,
) -> Option<Response<Incoming>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let host = base.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = base.port_u16()?;
    let tcp = TcpStream::connect((host, port)).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let authority = header::HeaderValue::from_str(&format!("{host}:{port}")).ok()?;
    request.headers_mut().insert(header::HOST, authority);
    if base.scheme_str() == Some("https") {
        let tls = tls?;
        let name = tls.server_name.clone().unwrap_or_else(|| host.to_string());
        let name = ServerName::try_from(name).ok()?;
        let connector = tokio_rustls::TlsConnector::from(tls.rustls.clone());
        let stream = connector.connect(name, tcp).await.ok()?;
        send(TokioIo::new(stream), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
}

async fn send<I, B>(io: I, request: Request<B>) -> Option<Response<Incoming>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(request).await.ok()
}
