//! The KV service's unary calls — Range, Put, DeleteRange, Txn: most of what etcd's clients
//! send — served from the request the connection collected: its one message decoded, the
//! service called as tonic calls it (the same metadata and extensions, so the pipeline cannot
//! tell), and the answer framed as one message. A call whose body is not exactly one
//! uncompressed message that decodes goes to tonic with the body as it came, so tonic's answers
//! stay the only ones for it.

use super::grpc::kv::KvService;
use crate::describe::Describe;
use crate::errors::GatewayError;
use crate::grpc_frame::{self, declared_len, one_message, PREFIX};
use crate::h2::server::{Call, Collected, Reply, RequestHead};
use crate::identity::ConnectionInfo;
use crate::method::{self, Method};
use crate::namespace::{Confine, Strip};
use crate::revision::Revisioned;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use http::{HeaderValue, Request};
use http_body_util::Full;
use keygate_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, TxnRequest,
    TxnResponse,
};
use std::future::Future;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::{Extensions, Status};

const RANGE: &str = "/etcdserverpb.KV/Range";
const PUT: &str = "/etcdserverpb.KV/Put";
const DELETE_RANGE: &str = "/etcdserverpb.KV/DeleteRange";
const TXN: &str = "/etcdserverpb.KV/Txn";

#[derive(Clone)]
pub struct DirectKv {
    kv: KvService,
    max_recv: usize,
}

/// A call this path does not serve: the request back, for tonic.
pub type NotServed = Box<Request<Body>>;

impl DirectKv {
    pub fn new(kv: KvService, max_recv: usize) -> Self {
        DirectKv { kv, max_recv }
    }

    /// Whether this path serves the request: a KV unary call, uncompressed.
    pub fn serves(head: &RequestHead) -> bool {
        super::dispatch::is_grpc(&head.headers)
            && !head.headers.contains_key(crate::headers::GRPC_ENCODING)
            && matches!(head.uri.path(), RANGE | PUT | DELETE_RANGE | TXN)
    }

    /// How much of a body is collected before the request is refused as too large.
    pub fn limit(&self) -> usize {
        self.max_recv.saturating_add(PREFIX)
    }

    /// The answer to a collected call, or the request back for tonic.
    pub fn call(
        &self,
        head: RequestHead,
        body: Collected,
        conn: &ConnectionInfo,
    ) -> Result<Call, NotServed> {
        let bytes = match body {
            Collected::Body(bytes) => bytes,
            Collected::TooLarge { first, received } => {
                let size = declared_len(&first).unwrap_or(received.saturating_sub(PREFIX));
                let status: Status = GatewayError::RequestTooLarge {
                    size,
                    limit: self.max_recv,
                }
                .into();
                return Ok(ready(Reply::Status(status)));
            }
        };
        let kv = self.kv.clone();
        match head.uri.path() {
            RANGE => decoded(head, bytes, conn, |r: &RangeRequest| r.range_end.is_empty())
                .map(|(r, inline)| call(async move { kv.range_answer(r).await }, inline)),
            PUT => decoded(head, bytes, conn, |_: &PutRequest| true).map(|(r, inline)| {
                call(
                    async move { forward::<_, PutResponse>(&kv, &method::PUT, r).await },
                    inline,
                )
            }),
            DELETE_RANGE => {
                decoded(head, bytes, conn, |_: &DeleteRangeRequest| true).map(|(r, inline)| {
                    let m = &method::DELETE_RANGE;
                    call(
                        async move { forward::<_, DeleteRangeResponse>(&kv, m, r).await },
                        inline,
                    )
                })
            }
            TXN => decoded(head, bytes, conn, |_: &TxnRequest| true).map(|(r, inline)| {
                call(
                    async move { forward::<_, TxnResponse>(&kv, &method::TXN, r).await },
                    inline,
                )
            }),
            _ => Err(not_served(head, bytes)),
        }
    }
}

/// A write forwarded through the request path, as the KV service forwards it (without the
/// service trait's boxing: the answer's future is boxed once, by `call`).
async fn forward<Req, Resp>(
    kv: &KvService,
    m: &'static Method,
    request: tonic::Request<Req>,
) -> Result<tonic::Response<Resp>, Status>
where
    Req: Clone + Describe + Confine + prost::Message,
    Resp: Revisioned + Strip + prost::Message + Default,
{
    let call = |conn, request| crate::upstream::unary(conn, m.path, request);
    kv.0.unary(m, request, call).await
}

/// The request as the service takes it, and whether it is cheap enough to answer on the
/// connection's own task (a range over many keys is not: it gets a task of its own).
fn decoded<T: prost::Message + Default>(
    head: RequestHead,
    bytes: Bytes,
    conn: &ConnectionInfo,
    cheap: impl Fn(&T) -> bool,
) -> Result<(tonic::Request<T>, bool), NotServed> {
    let Some(message) = one_message::<T>(&bytes) else {
        return Err(not_served(head, bytes));
    };
    let inline = cheap(&message);
    let mut extensions = Extensions::new();
    extensions.insert(conn.clone());
    let metadata = MetadataMap::from_headers(head.headers);
    Ok((
        tonic::Request::from_parts(metadata, extensions, message),
        inline,
    ))
}

fn call<M, F>(answer: F, inline: bool) -> Call
where
    M: prost::Message,
    F: Future<Output = Result<tonic::Response<M>, Status>> + Send + 'static,
{
    // Mapped rather than awaited in an async block, which would move the (large) answer
    // future once more on its first poll.
    let reply: BoxFuture<'static, Reply> = Box::pin(answer.map(|answer| match answer {
        Ok(response) => respond(response),
        Err(status) => Reply::Status(status),
    }));
    Call { reply, inline }
}

fn ready(reply: Reply) -> Call {
    Call {
        reply: Box::pin(std::future::ready(reply)),
        inline: true,
    }
}

fn not_served(head: RequestHead, bytes: Bytes) -> NotServed {
    let mut request = Request::new(Body::new(Full::new(bytes)));
    *request.method_mut() = head.method;
    *request.uri_mut() = head.uri;
    *request.headers_mut() = head.headers;
    *request.version_mut() = http::Version::HTTP_2;
    Box::new(request)
}

/// A successful answer: its metadata as headers, its message framed.
fn respond<M: prost::Message>(response: tonic::Response<M>) -> Reply {
    let (metadata, message, _) = response.into_parts();
    match grpc_frame::encode(&message) {
        Ok(framed) => {
            let mut headers = metadata.into_headers();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            Reply::Grpc { headers, framed }
        }
        Err(status) => Reply::Status(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
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
    fn the_answer_is_one_message_with_grpc_content_type() {
        let response = tonic::Response::new(RangeRequest {
            key: Bytes::from_static(b"answer"),
            ..Default::default()
        });
        let Reply::Grpc { headers, framed } = respond(response) else {
            panic!("not a gRPC answer");
        };
        assert_eq!(
            headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/grpc"[..])
        );
        assert_eq!(
            one_message::<RangeRequest>(&framed).map(|r| r.key),
            Some(Bytes::from_static(b"answer"))
        );
    }
}
