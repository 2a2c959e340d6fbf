//! A one-shot HTTP/1.1 GET to an etcd member's HTTP endpoints (/health, /version), over TLS
//! for https:// members with the same certificates keygate's gRPC connections use.

use crate::tls::UpstreamTls;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

/// GETs `url`; None when the member cannot be reached or answers garbage.
pub async fn upstream_get(
    url: &str,
    tls: Option<&UpstreamTls>,
) -> Option<(http::response::Parts, Bytes)> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16()?;
    let tcp = TcpStream::connect((host, port)).await.ok()?;
    let _ = tcp.set_nodelay(true);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = Request::get(path)
        .header(header::HOST, format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())
        .ok()?;
    if uri.scheme_str() == Some("https") {
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

async fn send<I>(io: I, request: Request<Empty<Bytes>>) -> Option<(http::response::Parts, Bytes)>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(request).await.ok()?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some((parts, body))
}
