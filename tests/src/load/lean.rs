//! The load generator's lean client: keygate's own HTTP/2 client (`keygate::h2::client`),
//! requests encoded once before the run, answers checked for their gRPC status and decoded
//! only where a mode needs what they say. tonic's client spends more CPU per request than
//! keygate spends serving one from its mirror; on a machine the load generator shares with the
//! servers, that would cap every ratio it measures (`--client tonic` keeps it for comparison).

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use keygate::h2::client::{Client, Settings, UnaryRequest};
use std::time::Duration;
use tokio::net::TcpStream;

/// One HTTP/2 connection to the target; cheap to clone (clones share it).
#[derive(Clone)]
pub struct Lean {
    client: Client,
    headers: HeaderMap,
}

impl Lean {
    /// Connects to `url` (`http://host:port`).
    pub async fn connect(url: &str) -> Result<Lean> {
        let authority = url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("the lean client speaks plain text only: {url}"))?
            .trim_end_matches('/');
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(authority))
            .await
            .with_context(|| format!("connecting to {url}"))??;
        tcp.set_nodelay(true)?;
        let settings = Settings {
            stream_window: 4 << 20,
            connection_window: 16 << 20,
            keep_alive_interval: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(30),
        };
        let (client, driver) = Client::new(tcp, settings, "http", authority);
        tokio::spawn(driver);
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        Ok(Lean { client, headers })
    }

    /// One unary call with `framed` (a framed message) as its body; the answer's message,
    /// framed, or the call's error.
    pub async fn call(&self, path: &'static str, framed: Bytes) -> Result<Bytes, String> {
        let request = UnaryRequest {
            path: Bytes::from_static(path.as_bytes()),
            headers: self.headers.clone(),
            body: framed,
        };
        let response = self.client.call(request).await.map_err(|e| e.to_string())?;
        let status = response
            .trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| response.headers.get("grpc-status"));
        match status.map(|s| s.as_bytes()) {
            Some(b"0") => Ok(response.body),
            Some(code) => {
                let message = response
                    .trailers
                    .as_ref()
                    .and_then(|t| t.get("grpc-message"))
                    .or_else(|| response.headers.get("grpc-message"))
                    .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                    .unwrap_or_default();
                Err(format!(
                    "grpc-status {}: {message}",
                    String::from_utf8_lossy(code)
                ))
            }
            None => Err(format!("no grpc-status (HTTP {})", response.status)),
        }
    }
}

/// `message` framed as gRPC sends it.
pub fn frame<M: prost::Message>(message: &M) -> Bytes {
    let body = message.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + body.len());
    framed.push(0);
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    framed.into()
}

/// The message of a framed answer.
pub fn unframe<M: prost::Message + Default>(framed: &Bytes) -> Result<M, String> {
    let body = framed.get(5..).ok_or("an answer without a message")?;
    M::decode(body).map_err(|e| e.to_string())
}
