//! Streaming over the JSON gateway, as grpc-gateway v1 does it: a request body that is a
//! sequence of JSON objects becomes the client side of a gRPC stream (each object framed as a
//! gRPC message, so the services decode it exactly as they decode gRPC), and a stream of
//! responses goes out as one `{"result":...}` line per message, ending with an `{"error":...}`
//! line when the RPC fails.

use super::codec;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use http::{header, HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::convert::Infallible;
use tonic::body::Body;
use tonic::codec::{Codec, Streaming};
use tonic::Status;

/// Reads JSON values one at a time off a request body as they arrive.
pub struct JsonValues {
    body: Body,
    buf: BytesMut,
    done: bool,
    /// Most bytes one value may take before it is refused.
    limit: usize,
}

impl JsonValues {
    pub fn new(body: Body, limit: usize) -> JsonValues {
        JsonValues {
            body,
            buf: BytesMut::new(),
            done: false,
            limit,
        }
    }

    /// The next message; None at the end of the body.
    pub async fn next<T: DeserializeOwned + Default>(&mut self) -> Option<Result<T, Status>> {
        loop {
            let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match values.next() {
                Some(Ok(value)) => {
                    let used = values.byte_offset();
                    let _ = self.buf.split_to(used);
                    return Some(codec::from_value(value));
                }
                Some(Err(e)) if !e.is_eof() || self.done => {
                    return Some(Err(codec::syntax_error(&e, &self.buf)));
                }
                None if self.done => return None,
                _ => {}
            }
            if self.buf.len() > self.limit {
                return Some(Err(Status::resource_exhausted(format!(
                    "grpc: received message larger than max ({} vs. {})",
                    self.buf.len(),
                    self.limit
                ))));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => self.done = true,
            }
        }
    }
}

/// The rest of the body as the gRPC stream a service expects, `first` (already decoded, to
/// answer a bad first message with an error as etcd does) leading. A later message that does
/// not decode ends the client's side of the stream, as grpc-gateway's CloseSend does.
pub fn client_stream<Req>(
    first: Option<Req>,
    mut rest: JsonValues,
    max_recv: usize,
) -> Streaming<Req>
where
    Req: prost::Message + DeserializeOwned + Default + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    tokio::spawn(async move {
        let Some(first) = first else { return };
        if tx.send(Ok(Frame::data(grpc_frame(&first)))).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = rest.next::<Req>().await {
            if tx
                .send(Ok(Frame::data(grpc_frame(&message))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut codec = tonic_prost::ProstCodec::<Req, Req>::default();
    Streaming::new_request(codec.decoder(), body, None, Some(max_recv))
}

/// A message with gRPC's 5-byte length prefix (uncompressed).
fn grpc_frame<M: prost::Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(len + 5);
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    message.encode_raw(&mut out);
    out.freeze()
}

/// The response stream as grpc-gateway writes it: 200 at once, then one line per message.
pub fn response<Resp>(stream: BoxStream<'static, Result<Resp, Status>>) -> Response<Body>
where
    Resp: Serialize + Send + 'static,
{
    let lines = futures::stream::unfold(Some(stream), |state| async move {
        let mut stream = state?;
        match stream.next().await? {
            Ok(message) => Some((codec::stream_result(&message), Some(stream))),
            Err(status) => Some((codec::stream_error(&status), None)),
        }
    })
    .map(|line| Ok::<_, Infallible>(Frame::data(line)));
    let mut resp = Response::new(Body::new(StreamBody::new(lines)));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "grpc-metadata-content-type",
        HeaderValue::from_static("application/grpc"),
    );
    codec::cors(h);
    resp
}
