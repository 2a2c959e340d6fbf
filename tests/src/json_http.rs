//! A minimal JSON-over-HTTP client for etcd's grpc-gateway API (no client crate): unary POSTs,
//! and streaming POSTs read line by line (HTTP/1.0, so the body is not chunked), plus the
//! masking that makes two clusters' answers comparable.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Status and body of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonAnswer {
    pub status: u16,
    pub body: String,
}

fn request(addr: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> String {
    let mut extra = String::new();
    for (n, v) in headers {
        extra.push_str(&format!("{n}: {v}\r\n"));
    }
    format!(
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// POSTs `body` to `path` and reads the whole answer.
pub async fn post(addr: &str, path: &str, body: &str) -> Result<JsonAnswer> {
    post_with(addr, path, body, &[]).await
}

/// `post` with extra request headers.
pub async fn post_with(
    addr: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Result<JsonAnswer> {
    let addr = addr.trim_start_matches("http://");
    let fut = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(request(addr, path, body, headers).as_bytes())
            .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        parse(&raw)
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .map_err(|_| anyhow!("POST {addr}{path} timed out"))?
        .with_context(|| format!("POST http://{addr}{path}"))
}

fn parse(raw: &[u8]) -> Result<JsonAnswer> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line in {head:?}"))?;
    Ok(JsonAnswer {
        status,
        body: String::from_utf8_lossy(&raw[split + 4..]).into_owned(),
    })
}

/// A streaming POST (watch, keepalive, observe): the status, then lines as they arrive.
pub struct JsonStream {
    pub status: u16,
    reader: BufReader<TcpStream>,
}

impl JsonStream {
    pub async fn open(addr: &str, path: &str, body: &str) -> Result<JsonStream> {
        let addr = addr.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(request(addr, path, body, &[]).as_bytes())
            .await?;
        let mut reader = BufReader::new(s);
        let mut status = 0;
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
                .await
                .map_err(|_| anyhow!("no response headers from {addr}{path}"))??;
            if n == 0 {
                bail!("connection closed before the headers ended");
            }
            if status == 0 {
                status = line.split_whitespace().nth(1).unwrap_or("0").parse()?;
            }
            if line == "\r\n" {
                return Ok(JsonStream { status, reader });
            }
        }
    }

    /// The next line of the body, without its newline; None at the end of the body.
    pub async fn next_line(&mut self, timeout: Duration) -> Result<Option<String>> {
        let mut line = String::new();
        let n = tokio::time::timeout(timeout, self.reader.read_line(&mut line))
            .await
            .map_err(|_| anyhow!("no line within {timeout:?}"))??;
        Ok((n > 0).then(|| line.trim_end_matches('\n').to_string()))
    }
}

/// Masks what names the member and cluster, which differ between clusters.
pub fn mask(body: &str) -> String {
    let re = regex::Regex::new(r#""(cluster_id|member_id|raft_term)":"\d+""#);
    match re {
        Ok(re) => re.replace_all(body, r#""$1":"X""#).into_owned(),
        Err(_) => body.to_string(),
    }
}
