//! The task of a bridged stream: it awaits the handler's response and feeds its head, body
//! and trailers to the stream's outbox, no further ahead of the connection than the outbox
//! allows.

use super::shared::{Out, Outbox};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use std::sync::Arc;
use tonic::body::Body;

pub async fn drive(response: BoxFuture<'static, http::Response<Body>>, outbox: Arc<Outbox>) {
    let (parts, mut body) = response.await.into_parts();
    let end = http_body::Body::is_end_stream(&body);
    let head = Out::Head {
        status: parts.status,
        headers: parts.headers,
        end,
    };
    if !outbox.push(head) || end {
        return;
    }
    loop {
        if !std::future::poll_fn(|cx| outbox.poll_room(cx)).await {
            return;
        }
        let out = match body.frame().await {
            None => Out::Data {
                data: Bytes::new(),
                end: true,
            },
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if data.is_empty() && !http_body::Body::is_end_stream(&body) => continue,
                Ok(data) => Out::Data {
                    end: http_body::Body::is_end_stream(&body),
                    data,
                },
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => Out::Trailers(trailers),
                    Err(_) => continue,
                },
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body failed; stream reset");
                Out::Reset
            }
        };
        let last = matches!(
            out,
            Out::Data { end: true, .. } | Out::Trailers(_) | Out::Reset
        );
        if !outbox.push(out) || last {
            return;
        }
    }
}
