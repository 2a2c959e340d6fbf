//! The KV service's unary calls — Range, Put, DeleteRange, Txn: most of what etcd's clients
//! send — straight to the service, without tonic's router and codec: the request's one message
//! is decoded from the collected body, the service is called as tonic calls it (the same
//! metadata and extensions, so the pipeline cannot tell), and the answer leaves as one DATA
//! frame and the trailers. Anything unusual (compression, several frames, a message that does
//! not decode) goes to tonic with the body as it came, so tonic's answers stay the only ones
//! for it.

use super::grpc::kv::KvService;
use crate::errors::GatewayError;
use crate::grpc_frame::{self, declared_len, one_message, PREFIX};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use keygate_proto::etcdserverpb::kv_server::Kv;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::Status;

pub struct DirectKv {
    kv: KvService,
    max_recv: usize,
}

/// A call this path does not serve: the request back, for tonic.
pub type NotServed = Request<Body>;

impl DirectKv {
    pub fn new(kv: KvService, max_recv: usize) -> Self {
        DirectKv { kv, max_recv }
    }

    /// The answer to `req`, or `req` back when it is not a call this path serves.
    pub async fn handle(&self, req: Request<Incoming>) -> Result<Response<Body>, NotServed> {
        let kv = &self.kv;
        match req.uri().path() {
            "/etcdserverpb.KV/Range" => self.call(req, |r| kv.range_answer(r)).await,
            "/etcdserverpb.KV/Put" => self.call(req, |r| kv.put(r)).await,
            "/etcdserverpb.KV/DeleteRange" => self.call(req, |r| kv.delete_range(r)).await,
            "/etcdserverpb.KV/Txn" => self.call(req, |r| kv.txn(r)).await,
            _ => Err(req.map(Body::new)),
        }
    }

    async fn call<Req, Resp, F, Fut>(
        &self,
        req: Request<Incoming>,
        service: F,
    ) -> Result<Response<Body>, NotServed>
    where
        Req: prost::Message + Default,
        Resp: prost::Message,
        F: FnOnce(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        if req.headers().contains_key("grpc-encoding") {
            return Err(req.map(Body::new));
        }
        let (parts, body) = req.into_parts();
        let bytes = match collect(body, self.max_recv).await {
            Ok(bytes) => bytes,
            Err(status) => return Ok(status.into_http()),
        };
        let Some(message) = one_message::<Req>(&bytes) else {
            return Err(Request::from_parts(parts, Body::new(Full::new(bytes))));
        };
        let metadata = MetadataMap::from_headers(parts.headers);
        let request = tonic::Request::from_parts(metadata, parts.extensions, message);
        Ok(match service(request).await {
            Ok(response) => respond(response),
            Err(status) => status.into_http(),
        })
    }
}

/// The whole body, refused as etcd refuses it once its message is over `max_recv`.
async fn collect(mut body: Incoming, max_recv: usize) -> Result<Bytes, Status> {
    // Most requests arrive in one DATA frame, kept as it is, without a copy.
    let mut chunks: Vec<Bytes> = Vec::with_capacity(1);
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::cancelled(format!("reading the request: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len();
        chunks.push(data);
        if received > max_recv.saturating_add(PREFIX) {
            let head: Vec<u8> = chunks.iter().flatten().take(PREFIX).copied().collect();
            let size = declared_len(&head).unwrap_or(received - PREFIX);
            return Err(GatewayError::RequestTooLarge {
                size,
                limit: max_recv,
            }
            .into());
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => chunks.concat().into(),
    })
}

/// A successful answer: its metadata as headers, its message as one DATA frame, then
/// `grpc-status: 0`.
fn respond<M: prost::Message>(response: tonic::Response<M>) -> Response<Body> {
    let (metadata, message, _) = response.into_parts();
    let data = match grpc_frame::encode(&message) {
        Ok(data) => data,
        Err(status) => return status.into_http(),
    };
    let mut headers = metadata.into_headers();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let mut response = Response::new(Body::new(OneMessage {
        data: Some(data),
        trailers: Some(trailers),
    }));
    *response.headers_mut() = headers;
    response
}

/// A response body of one DATA frame and the trailers.
struct OneMessage {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for OneMessage {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use http_body::Body as _;
    use keygate_proto::etcdserverpb::RangeRequest;
    use prost::Message;

    fn framed(flag: u8, message: &[u8], declared: usize) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(flag);
        b.put_u32(declared as u32);
        b.put_slice(message);
        b.freeze()
    }

    #[test]
    fn exactly_one_uncompressed_message_is_taken() {
        let range = RangeRequest {
            key: Bytes::from_static(b"k"),
            limit: 3,
            ..Default::default()
        };
        let body = range.encode_to_vec();
        let one = framed(0, &body, body.len());
        assert_eq!(one_message::<RangeRequest>(&one), Some(range));
        // Everything else goes to tonic: compressed, short, long, two messages, no message.
        assert_eq!(
            one_message::<RangeRequest>(&framed(1, &body, body.len())),
            None
        );
        assert_eq!(
            one_message::<RangeRequest>(&framed(0, &body, body.len() + 1)),
            None
        );
        assert_eq!(
            one_message::<RangeRequest>(&framed(0, &body, body.len() - 1)),
            None
        );
        let mut two = one.to_vec();
        two.extend_from_slice(&one);
        assert_eq!(one_message::<RangeRequest>(&Bytes::from(two)), None);
        assert_eq!(one_message::<RangeRequest>(&Bytes::new()), None);
        assert_eq!(
            one_message::<RangeRequest>(&Bytes::from_static(&[0, 0])),
            None
        );
        // Bytes that are not a RangeRequest.
        let garbage = [0xff_u8; 7];
        assert_eq!(one_message::<RangeRequest>(&framed(0, &garbage, 7)), None);
    }

    #[test]
    fn the_answer_is_one_message_and_grpc_status_zero() {
        let response = tonic::Response::new(RangeRequest {
            key: Bytes::from_static(b"answer"),
            ..Default::default()
        });
        let http = respond(response);
        assert_eq!(
            http.headers()
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/grpc"[..])
        );
        let mut body = http.into_body();
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut frames = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            frames.push(frame);
        }
        assert_eq!(frames.len(), 2);
        let data = frames[0].data_ref().cloned().unwrap_or_default();
        assert_eq!(
            one_message::<RangeRequest>(&data).map(|r| r.key),
            Some(Bytes::from_static(b"answer"))
        );
        let trailers = frames[1].trailers_ref().cloned().unwrap_or_default();
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
    }
}
